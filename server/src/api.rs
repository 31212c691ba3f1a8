//! The JSON API under `/api/v1` and the health check.
//!
//! Errors are JSON objects `{"error": "..."}` with a fitting status; a database failure is a 503
//! (the portal is up but cannot answer), never a panic.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use passage_app::inventory::{
    GpuState, GpuView, HostState, HostView, IommuGroupView, IommuMemberView, LinkView,
};
use serde::Deserialize;
use serde_json::json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use crate::AppState;
use crate::auth::{self, Admin, AuthError, CurrentUser};
use crate::store::StoreError;

/// The API's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/hosts", get(list_hosts))
        .route("/api/v1/gpus", get(list_gpus))
        .route("/api/v1/inventory/refresh", post(refresh))
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/me", get(me))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route("/api/v1/images", get(list_images))
        .route("/api/v1/openapi.json", get(openapi))
        .merge(crate::requests::routes())
        .merge(crate::vms::api::routes())
        .merge(crate::experiments::api::routes())
        .route("/api/v1/{*rest}", axum::routing::any(not_found))
}

/// The API, described for clients and tools: `GET /api/v1/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Passage API",
        description = "Hosts, GPUs, accounts and API tokens of a Passage portal. Send \
                       `Authorization: Bearer <token>` (tokens from `POST /api/v1/tokens` or \
                       `passage token create`) or the session cookie set by `POST /api/v1/login`."
    ),
    paths(
        healthz, list_hosts, list_gpus, refresh, list_images, login, logout, me, list_tokens,
        create_token, revoke_token, crate::accounts::change_password,
        crate::accounts::list_users, crate::accounts::disable, crate::accounts::enable,
        crate::accounts::promote, crate::accounts::demote, crate::accounts::end_sessions,
        crate::accounts::delete_user, crate::requests::create, crate::requests::list,
        crate::requests::show, crate::requests::approve, crate::requests::deny,
        crate::vms::api::list, crate::vms::api::show, crate::vms::api::release,
        crate::vms::api::start, crate::vms::api::stop, crate::vms::api::reboot,
        crate::vms::api::extend, crate::vms::api::attach_gpu, crate::vms::api::detach_gpu,
        crate::vms::api::console, crate::vms::api::domain_xml, crate::vms::api::unknown_domains,
        crate::vms::api::decide_unknown_domain, crate::vms::api::audit, crate::vms::api::register_image,
        crate::vms::api::show_quota, crate::vms::api::set_quota, crate::vms::api::set_ssh_key,
        crate::jobs::api::list_plugins, crate::jobs::api::upload_plugin,
        crate::jobs::api::show_plugin, crate::jobs::api::plugin_component,
        crate::jobs::api::list_agents, crate::jobs::api::add_agent, crate::jobs::api::revoke_agent,
        crate::jobs::api::queue_suite, crate::jobs::api::list_jobs, crate::jobs::api::queue_job,
        crate::jobs::api::show_job, crate::jobs::api::cancel_job,
        crate::jobs::agent_api::register, crate::jobs::agent_api::poll,
        crate::jobs::agent_api::component, crate::jobs::agent_api::progress,
        crate::jobs::agent_api::result, crate::experiments::api::create,
        crate::experiments::api::list, crate::experiments::api::show,
        crate::experiments::api::cancel, crate::experiments::api::approve,
        crate::experiments::api::results_csv, crate::experiments::api::results_json,
        crate::experiments::api::chart, crate::experiments::api::compare
    ),
    components(schemas(
        HostView, HostState, GpuView, GpuState, LinkView, IommuGroupView, IommuMemberView,
        auth::User, crate::store::ApiTokenRecord, Credentials, NewToken, CreatedToken, ErrorBody,
        passage_app::account::AccountView, crate::accounts::PasswordChange,
        crate::store::Image, passage_app::requests::RequestView, passage_app::requests::RequestForm,
        crate::requests::Denial, crate::scheduler::Choice, passage_app::vms::VmView,
        passage_app::vms::AuditEntry, crate::vms::api::Extension, crate::vms::api::GpuChoice,
        crate::vms::api::HotplugOutcome, crate::vms::api::NewImage, crate::store::QuotaOverride,
        crate::vms::api::SshKey, crate::store::UnknownDomain, crate::vms::api::DomainDecision,
        passage_app::plugins::PluginView, passage_app::plugins::ParamView,
        passage_app::plugins::AgentView, passage_app::plugins::DeviceView,
        passage_app::plugins::JobView, passage_app::plugins::JobResult,
        passage_app::plugins::MetricView, passage_app::plugins::MetricSummary,
        passage_app::plugins::LogLine, passage_app::plugins::JobOrder,
        crate::jobs::api::Uploaded, crate::jobs::api::NewNativeHost,
        crate::jobs::api::NativeHostToken, crate::jobs::api::Queued, crate::jobs::api::QueuedBatch,
        crate::jobs::agent_api::Registration, crate::jobs::agent_api::Registered,
        crate::jobs::agent_api::Poll, crate::jobs::agent_api::PollAnswer,
        crate::jobs::agent_api::JobOrderForAgent, crate::jobs::agent_api::Progress,
        crate::jobs::agent_api::JobState, crate::jobs::agent_api::Outcome,
        passage_app::experiments::ExperimentForm, passage_app::experiments::BenchmarkChoice,
        passage_app::experiments::TargetChoice, passage_app::experiments::VariantChoice,
        passage_app::experiments::ExperimentSummary, passage_app::experiments::BenchmarkView,
        passage_app::experiments::TargetView, passage_app::experiments::Sample,
        passage_app::experiments::Cell, passage_app::experiments::Figure,
        passage_app::experiments::Overhead, passage_app::experiments::ChartLink,
        passage_app::experiments::ExperimentView, passage_app::experiments::ComparisonRow,
        passage_app::experiments::Comparison, crate::experiments::api::Created,
        crate::experiments::api::Approved
    )),
    modifiers(&SecuritySchemes, &CommonResponses),
    security(("bearer" = []), ("session" = []))
)]
pub struct ApiDoc;

/// Adds to every operation the answers that any route can give besides its own: 401 without
/// valid credentials, 403 for a state change refused (a request with the session cookie from
/// another site, or one only admins may make), 400 for a path or query that does not parse, and
/// 400, 415 and 422 for a JSON body that is not JSON, not labelled JSON, or not what the
/// operation takes. All of them are `{"error": ...}` ([`json_errors`] sees to axum's own).
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                (false, &mut item.get),
                (true, &mut item.put),
                (true, &mut item.post),
                (true, &mut item.delete),
                (true, &mut item.patch),
            ];
            for (changes_state, operation) in operations {
                if let Some(operation) = operation {
                    add_common_responses(operation, changes_state);
                }
            }
        }
    }
}

fn add_common_responses(operation: &mut utoipa::openapi::path::Operation, changes_state: bool) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let public = operation.security.as_ref().is_some_and(|requirements| {
        requirements
            .iter()
            .all(|r| serde_json::to_value(r).is_ok_and(|v| v == json!({})))
    });
    let has_parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let json_body = operation
        .request_body
        .as_ref()
        .is_some_and(|b| b.content.contains_key("application/json"));
    let mut wanted = Vec::new();
    if !public {
        wanted.push(("401", "no valid credentials: sign in first"));
    }
    if changes_state {
        wanted.push((
            "403",
            "refused: the session cookie sent from another site, or only admins may do this",
        ));
    }
    if has_parameters {
        wanted.push(("400", "a path or query parameter that does not parse"));
    }
    if json_body {
        wanted.push(("400", "a body that is not valid JSON"));
        wanted.push(("415", "a body without Content-Type: application/json"));
        wanted.push(("422", "a JSON body that is not what this operation takes"));
    }
    for (status, description) in wanted {
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| {
                RefOr::T(
                    ResponseBuilder::new()
                        .description(description)
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("ErrorBody")))
                                .build(),
                        )
                        .build(),
                )
            });
    }
}

/// Axum answers a path, query or body that does not parse in plain text; under `/api/v1` every
/// error is a JSON object `{"error": ...}` as the API's document says, so such answers are
/// rewritten with the same status and message.
pub async fn json_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let api = request.uri().path().starts_with("/api/v1/");
    let response = next.run(request).await;
    let failed = response.status().is_client_error() || response.status().is_server_error();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/plain"));
    if !(api && failed && plain) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|_| parts.status.to_string());
    let mut rewritten = (parts.status, Json(json!({ "error": text }))).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rewritten
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "agent",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("an agent token, psa_…: one per VM or native host"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(auth::SESSION_COOKIE))),
        );
    }
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Every error response: `{"error": "..."}`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub(crate) struct ErrorBody {
    /// What went wrong, for people.
    error: String,
}

/// A new API token: its secret is in this response and nowhere else.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct CreatedToken {
    /// Database id, for revoking it.
    id: i64,
    /// The name given.
    name: String,
    /// The secret, `psg_` and 64 hex digits.
    token: String,
    /// When it stops working (Unix ms); `null` for never.
    expires_at: Option<i64>,
}

/// An API error: a status and a message for the caller.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: String) -> ApiError {
        ApiError { status, message }
    }

    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What it tells the caller.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::new(e.status(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// What callers are told when the database fails: its own message (which can name hosts,
/// tables and users) goes to the log only.
pub const DATABASE_UNAVAILABLE: &str = "the database is not available; the portal's log says why";

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "database request failed");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: DATABASE_UNAVAILABLE.into(),
        }
    }
}

/// Liveness and database health.
#[utoipa::path(get, path = "/healthz", tag = "portal", security(()),
    responses((status = 200, description = "up, database answers"), (status = 503, description = "database unavailable")))]
async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({ "status": "ok", "database": "ok" })).into_response(),
        // The reason goes to the log, not to whoever asks: it can name hosts and users.
        Err(e) => {
            tracing::warn!(error = %e, "health check: the database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "database": "unavailable" })),
            )
                .into_response()
        }
    }
}

/// Every configured hypervisor host and how its last inventory went. Admins also see each
/// host's libvirt URI, libvirt's message when it fails, its software, and how long its VMs took
/// to come up (request to running, placement to running; median and p90 over 30 days).
#[utoipa::path(get, path = "/api/v1/hosts", tag = "inventory",
    responses((status = 200, body = [HostView]), (status = 401, body = ErrorBody)))]
async fn list_hosts(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<HostView>>, ApiError> {
    Ok(Json(
        crate::inventory::hosts_for(&state.store, user.is_admin).await?,
    ))
}

/// Optional filters of `GET /api/v1/gpus`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct GpuFilter {
    /// Only GPUs of this host.
    host: Option<String>,
    /// Only GPUs of this model, e.g. `H100 PCIe`.
    model: Option<String>,
    /// Only GPUs in this state: `available`, `claimed`, `unassignable`, `host-unreachable`,
    /// `missing`.
    state: Option<String>,
    /// GPUs per page: 1 to 1000 (default 500).
    limit: Option<u32>,
    /// Where the page starts: the `cursor` of the previous page's `Link: <...>; rel="next"`.
    cursor: Option<String>,
}

/// Every GPU on the configured hosts with its IOMMU group, NUMA node, link and state.
#[utoipa::path(get, path = "/api/v1/gpus", tag = "inventory", params(GpuFilter),
    responses((status = 200, body = [GpuView], headers(("link" = String, description = "the next page: `<...?cursor=...>; rel=\"next\"`, when there is one"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_gpus(
    State(state): State<AppState>,
    _: CurrentUser,
    uri: axum::http::Uri,
    filter: Result<Query<GpuFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(filter) = filter.map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        message: format!(
            "{}; the filters are host, model and state, and paging takes limit and cursor",
            e.body_text()
        ),
    })?;
    let page = crate::paging::Page {
        limit: filter.limit,
        cursor: None,
    };
    let limit = page.limit()? as usize;
    // GPUs are listed by host, then PCI address; a cursor is the last one shown, `host/address`.
    let after = match filter.cursor.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            text.rsplit_once('/')
                .ok_or_else(|| crate::paging::bad_cursor(text))?,
        ),
    };
    let gpus = state.store.gpus().await?;
    let whole_list = filter.host.is_none()
        && filter.model.is_none()
        && filter.state.is_none()
        && after.is_none()
        && gpus.len() <= limit;
    if whole_list {
        return Ok(WHOLE_LIST.json(&gpus));
    }
    let mut chosen = gpus
        .iter()
        .filter(|g| {
            after.is_none_or(|(host, address)| {
                (g.host.as_str(), g.address.as_str()) > (host, address)
            })
        })
        .filter(|g| filter.host.as_ref().is_none_or(|h| &g.host == h))
        .filter(|g| filter.model.as_ref().is_none_or(|m| &g.model == m))
        .filter(|g| filter.state.as_ref().is_none_or(|s| g.state.as_str() == s))
        .take(limit + 1)
        .collect::<Vec<&GpuView>>();
    let next = (chosen.len() > limit).then(|| {
        chosen.truncate(limit);
        chosen.last().map(|g| format!("{}/{}", g.host, g.address))
    });
    Ok(crate::paging::answer(&uri, &chosen, next.flatten()))
}

/// The JSON of the whole GPU list, made once per snapshot of the list: most requests ask for
/// all of it, and the list changes far less often than it is read.
static WHOLE_LIST: JsonOfSnapshot = JsonOfSnapshot(std::sync::Mutex::new(None));

/// A list's JSON, kept with the list it was made from (compared by identity, not by value).
struct JsonOfSnapshot(std::sync::Mutex<Option<(Arc<Vec<GpuView>>, axum::body::Bytes)>>);

impl JsonOfSnapshot {
    fn json(&self, list: &Arc<Vec<GpuView>>) -> Response {
        let mut kept = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bytes = match &*kept {
            Some((made_from, bytes)) if Arc::ptr_eq(made_from, list) => bytes.clone(),
            _ => match serde_json::to_vec(list.as_slice()) {
                Ok(bytes) => {
                    let bytes = axum::body::Bytes::from(bytes);
                    *kept = Some((Arc::clone(list), bytes.clone()));
                    bytes
                }
                Err(e) => {
                    return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                        .into_response();
                }
            },
        };
        ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
    }
}

/// Asks every host for a fresh inventory now (admins).
#[utoipa::path(post, path = "/api/v1/inventory/refresh", tag = "inventory",
    responses((status = 200, body = [HostView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn refresh(State(state): State<AppState>, _: Admin) -> Result<Json<Vec<HostView>>, ApiError> {
    state.inventory.refresh_all().await?;
    Ok(Json(state.store.hosts().await?.to_vec()))
}

/// The base images requests can name.
#[utoipa::path(get, path = "/api/v1/images", tag = "requests",
    responses((status = 200, body = [crate::store::Image]), (status = 401, body = ErrorBody)))]
async fn list_images(
    State(state): State<AppState>,
    _: CurrentUser,
) -> Result<Json<Vec<crate::store::Image>>, ApiError> {
    Ok(Json(state.store.images().await?))
}

/// Body of `POST /api/v1/login`.
#[derive(Debug, Deserialize, ToSchema)]
struct Credentials {
    /// Login name.
    name: String,
    /// Password.
    password: String,
}

/// Signs in and sets the session cookie.
#[utoipa::path(post, path = "/api/v1/login", tag = "accounts", security(()), request_body = Credentials,
    responses((status = 200, body = auth::User), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "the account is disabled"), (status = 429, body = ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(credentials): Json<Credentials>,
) -> Result<Response, AuthError> {
    let (user, secret) = state
        .auth
        .login(
            &credentials.name,
            &credentials.password,
            state.client_address(client, &headers),
        )
        .await?;
    let cookie = auth::session_cookie(&secret, auth::over_tls(&headers));
    Ok(([(header::SET_COOKIE, cookie)], Json(user)).into_response())
}

/// Ends the session of the request.
#[utoipa::path(post, path = "/api/v1/logout", tag = "accounts", responses((status = 204)))]
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    state.auth.logout(&headers).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, auth::cleared_cookie())],
    )
        .into_response())
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/v1/me", tag = "accounts",
    responses((status = 200, body = auth::User), (status = 401, body = ErrorBody)))]
async fn me(CurrentUser(user): CurrentUser) -> Json<auth::User> {
    Json(user)
}

/// Your API tokens (never their secrets), with when each expires.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "accounts",
    responses((status = 200, body = [crate::store::ApiTokenRecord]), (status = 401, body = ErrorBody)))]
async fn list_tokens(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<crate::store::ApiTokenRecord>>, ApiError> {
    Ok(Json(state.auth.store().tokens(user.id).await?))
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// A name for the token, unique among yours.
    name: String,
    /// Days until it stops working (1 to 3650); without it, it works until revoked.
    #[serde(default)]
    expires_in_days: Option<u32>,
}

/// Makes an API token, optionally expiring; the secret is returned once.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "accounts", request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_token(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Json(body): Json<NewToken>,
) -> Result<Response, AuthError> {
    let (record, secret) = state
        .auth
        .create_token(&user, &body.name, body.expires_in_days)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": record.id, "name": record.name, "token": secret, "expires_at": record.expires_at
        })),
    )
        .into_response())
}

/// Revokes one of your tokens.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "accounts",
    params(("id" = i64, Path, description = "the token's id")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn revoke_token(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    if state.auth.store().revoke_token(user.id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("you have no live token {id}"),
        })
    }
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no such API endpoint; see /api/v1/hosts and /api/v1/gpus".into(),
    }
}
