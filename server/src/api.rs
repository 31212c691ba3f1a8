//! The JSON API under `/api/v1` and the health check.
//!
//! Errors are JSON objects `{"error": "..."}` with a fitting status; a database failure is a 503
//! (the portal is up but cannot answer), never a panic.

use std::net::SocketAddr;

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
        crate::vms::api::console, crate::vms::api::domain_xml, crate::vms::api::audit, crate::vms::api::register_image,
        crate::vms::api::show_quota, crate::vms::api::set_quota, crate::vms::api::set_ssh_key,
        crate::jobs::api::list_plugins, crate::jobs::api::upload_plugin,
        crate::jobs::api::show_plugin, crate::jobs::api::plugin_component,
        crate::jobs::api::list_agents, crate::jobs::api::add_agent, crate::jobs::api::revoke_agent,
        crate::jobs::api::queue_suite, crate::jobs::api::list_jobs, crate::jobs::api::queue_job,
        crate::jobs::api::show_job, crate::jobs::api::cancel_job,
        crate::jobs::agent_api::register, crate::jobs::agent_api::poll,
        crate::jobs::agent_api::component, crate::jobs::agent_api::progress,
        crate::jobs::agent_api::result
    ),
    components(schemas(
        HostView, HostState, GpuView, GpuState, LinkView, IommuGroupView, IommuMemberView,
        auth::User, crate::store::ApiTokenRecord, Credentials, NewToken, CreatedToken, ErrorBody,
        passage_app::account::AccountView, crate::accounts::PasswordChange,
        crate::store::Image, passage_app::requests::RequestView, passage_app::requests::RequestForm,
        crate::requests::Denial, crate::scheduler::Choice, passage_app::vms::VmView,
        passage_app::vms::AuditEntry, crate::vms::api::Extension, crate::vms::api::GpuChoice,
        crate::vms::api::HotplugOutcome, crate::vms::api::NewImage, crate::store::QuotaOverride,
        crate::vms::api::SshKey, passage_app::plugins::PluginView, passage_app::plugins::ParamView,
        passage_app::plugins::AgentView, passage_app::plugins::DeviceView,
        passage_app::plugins::JobView, passage_app::plugins::JobResult,
        passage_app::plugins::MetricView, passage_app::plugins::MetricSummary,
        passage_app::plugins::LogLine, passage_app::plugins::JobOrder,
        crate::jobs::api::Uploaded, crate::jobs::api::NewNativeHost,
        crate::jobs::api::NativeHostToken, crate::jobs::api::Queued, crate::jobs::api::QueuedBatch,
        crate::jobs::agent_api::Registration, crate::jobs::agent_api::Registered,
        crate::jobs::agent_api::Poll, crate::jobs::agent_api::PollAnswer,
        crate::jobs::agent_api::JobOrderForAgent, crate::jobs::agent_api::Progress,
        crate::jobs::agent_api::JobState, crate::jobs::agent_api::Outcome
    )),
    modifiers(&SecuritySchemes),
    security(("bearer" = []), ("session" = []))
)]
pub struct ApiDoc;

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
/// host's libvirt URI, libvirt's message when it fails, and its software.
#[utoipa::path(get, path = "/api/v1/hosts", tag = "inventory",
    responses((status = 200, body = [HostView]), (status = 401, body = ErrorBody)))]
async fn list_hosts(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<HostView>>, ApiError> {
    Ok(Json(crate::inventory::hosts_for(
        user.is_admin,
        state.store.hosts().await?,
    )))
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
    /// Only GPUs in this state: `available`, `unassignable`, `host-unreachable`, `missing`.
    state: Option<String>,
}

/// Every GPU on the configured hosts with its IOMMU group, NUMA node, link and state.
#[utoipa::path(get, path = "/api/v1/gpus", tag = "inventory", params(GpuFilter),
    responses((status = 200, body = [GpuView]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_gpus(
    State(state): State<AppState>,
    _: CurrentUser,
    filter: Result<Query<GpuFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<GpuView>>, ApiError> {
    let Query(filter) = filter.map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        message: format!("{}; the filters are host, model and state", e.body_text()),
    })?;
    let gpus = state
        .store
        .gpus()
        .await?
        .into_iter()
        .filter(|g| filter.host.as_ref().is_none_or(|h| &g.host == h))
        .filter(|g| filter.model.as_ref().is_none_or(|m| &g.model == m))
        .filter(|g| filter.state.as_ref().is_none_or(|s| g.state.as_str() == s))
        .collect();
    Ok(Json(gpus))
}

/// Asks every host for a fresh inventory now (admins).
#[utoipa::path(post, path = "/api/v1/inventory/refresh", tag = "inventory",
    responses((status = 200, body = [HostView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn refresh(State(state): State<AppState>, _: Admin) -> Result<Json<Vec<HostView>>, ApiError> {
    state.inventory.refresh_all().await?;
    Ok(Json(state.store.hosts().await?))
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
