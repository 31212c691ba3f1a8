//! The API people and scripts use for plugins, agents and jobs, and the plugin page's upload
//! form.

use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use passage_app::plugins::{AgentView, JobFilter, JobOrder, JobView, PluginView};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::JobError;
use crate::AppState;
use crate::api::ApiError;
use crate::auth::{Admin, CurrentUser};
use crate::paging::Page;

/// The routes of this module but the uploads.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/plugins", get(list_plugins))
        .route("/api/v1/plugins/{id}", get(show_plugin))
        .route("/api/v1/plugins/{id}/component", get(plugin_component))
        .route("/downloads/plugin-kit/{language}", get(plugin_kit))
        .route("/api/v1/agents", get(list_agents).post(add_agent))
        .route("/api/v1/agents/{id}", delete(revoke_agent))
        .route("/api/v1/agents/{id}/suite", post(queue_suite))
        .route("/api/v1/jobs", get(list_jobs).post(queue_job))
        .route("/api/v1/jobs/{id}", get(show_job))
        .route("/api/v1/jobs/{id}/cancel", post(cancel_job))
}

/// The plugin uploads (API and form): a large component over a slow link takes as long as it
/// takes, so they are routed outside the request time limit (an idle body is still cut).
pub fn upload_routes(max_upload_bytes: u64) -> Router<AppState> {
    // Room for the multipart framing around the largest component taken.
    let body_limit = usize::try_from(max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(64 << 10);
    Router::new()
        .route(
            "/api/v1/plugins",
            post(upload_plugin).layer(DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/plugins/upload",
            post(upload_form).layer(DefaultBodyLimit::max(body_limit)),
        )
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Store(e) => e.into(),
            other => {
                let status = match &other {
                    JobError::NotFound(_) => StatusCode::NOT_FOUND,
                    JobError::Forbidden(_) => StatusCode::FORBIDDEN,
                    JobError::Conflict(_) => StatusCode::CONFLICT,
                    JobError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
                    _ => StatusCode::UNPROCESSABLE_ENTITY,
                };
                ApiError::new(status, other.to_string())
            }
        }
    }
}

/// Every registered plugin version: by name, newest first.
#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins",
    responses((status = 200, body = [PluginView]), (status = 401)))]
pub(crate) async fn list_plugins(
    State(state): State<AppState>,
    _: CurrentUser,
) -> Result<Json<Vec<PluginView>>, ApiError> {
    Ok(Json(state.jobs.plugins().await?))
}

/// A registered component.
#[derive(Debug, Serialize, ToSchema)]
pub struct Uploaded {
    /// The plugin version.
    pub plugin: PluginView,
    /// False when these bytes were registered before.
    pub new: bool,
}

/// Registers a plugin component (admins). The body is the `.wasm` file itself; the portal
/// reads the plugin's `describe` in the sandbox and refuses anything that is not a plugin.
#[utoipa::path(post, path = "/api/v1/plugins", tag = "plugins",
    request_body(description = "the component's bytes (any content type; `application/wasm` is usual)",
        content((Vec<u8> = "application/wasm"), (Vec<u8> = "application/octet-stream"))),
    responses((status = 201, body = Uploaded), (status = 200, body = Uploaded, description = "registered before"),
        (status = 403), (status = 409, description = "name and version taken by other contents"),
        (status = 413), (status = 422, description = "not a plugin")))]
pub(crate) async fn upload_plugin(
    State(state): State<AppState>,
    Admin(admin): Admin,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let registration = state.jobs.upload(&admin, body.to_vec()).await?;
    let status = if registration.new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Uploaded {
            plugin: registration.plugin,
            new: registration.new,
        }),
    )
        .into_response())
}

/// One plugin version.
#[utoipa::path(get, path = "/api/v1/plugins/{id}", tag = "plugins",
    params(("id" = i64, Path, description = "plugin id")),
    responses((status = 200, body = PluginView), (status = 401), (status = 404)))]
pub(crate) async fn show_plugin(
    State(state): State<AppState>,
    _: CurrentUser,
    Path(id): Path<i64>,
) -> Result<Json<PluginView>, ApiError> {
    Ok(Json(state.jobs.plugin(id).await?))
}

/// A plugin's component, to run it with `passage-agent run` elsewhere.
#[utoipa::path(get, path = "/api/v1/plugins/{id}/component", tag = "plugins",
    params(("id" = i64, Path, description = "plugin id")),
    responses((status = 200, content_type = "application/wasm"), (status = 401), (status = 404)))]
pub(crate) async fn plugin_component(
    State(state): State<AppState>,
    _: CurrentUser,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let (plugin, bytes) = state.jobs.component(id).await?;
    let disposition = format!(
        "attachment; filename=\"{}-{}.wasm\"",
        plugin.name, plugin.version
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/wasm".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

/// Which project a kit download holds.
#[derive(Debug, Deserialize)]
pub(crate) struct KitQuery {
    /// The plugin's name (default `my-plugin`).
    name: Option<String>,
    /// `template` (default) or a shipped example such as `vector-add`.
    example: Option<String>,
}

/// A new plugin project as a `.tar.gz`: what `passage-agent new` writes, for people without the
/// agent at hand.
pub(crate) async fn plugin_kit(
    _: CurrentUser,
    Path(language): Path<String>,
    Query(query): Query<KitQuery>,
) -> Result<Response, ApiError> {
    use passage_plugin_kit::{Language, Starter, project};
    let bad = |e: passage_plugin_kit::KitError| ApiError::new(StatusCode::NOT_FOUND, e.to_string());
    let language = Language::parse(language.trim_end_matches(".tar.gz")).map_err(bad)?;
    let starter = Starter::parse(query.example.as_deref().unwrap_or("template")).map_err(bad)?;
    let name = query.name.as_deref().unwrap_or("my-plugin");
    let project = project(name, language, starter)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let disposition = format!("attachment; filename=\"{name}-{language}.tar.gz\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        project.archive(),
    )
        .into_response())
}

/// The plugin page's upload form: goes to the new plugin's page, or back with an error code
/// the page knows (`/plugins?error=not-a-plugin`); the details go to the log. Only codes travel
/// in the address, so a crafted link cannot put words on the page.
async fn upload_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let back = |code: UploadError| {
        Redirect::to(&format!("/plugins?error={}", code.as_str())).into_response()
    };
    let user = match state.auth.authenticate(&headers).await {
        Ok(Some(user)) => user,
        Ok(None) => return Redirect::to("/login").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "plugin upload: authentication failed on the database");
            return back(UploadError::Unavailable);
        }
    };
    let mut multipart = match multipart {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e.body_text(), "plugin upload: not a multipart form");
            return back(UploadError::BrokenUpload);
        }
    };
    let broken = |e: axum::extract::multipart::MultipartError| {
        tracing::warn!(error = %e, "plugin upload broke off");
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            UploadError::TooLarge
        } else {
            UploadError::BrokenUpload
        }
    };
    let mut bytes = None;
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) if field.name() == Some("component") => match field.bytes().await {
                Ok(b) => bytes = Some(b.to_vec()),
                Err(e) => return back(broken(e)),
            },
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => return back(broken(e)),
        }
    }
    let Some(bytes) = bytes.filter(|b| !b.is_empty()) else {
        return back(UploadError::NoFile);
    };
    match state.jobs.upload(&user, bytes).await {
        Ok(r) => Redirect::to(&format!("/plugins/{}", r.plugin.id)).into_response(),
        Err(e) => {
            tracing::warn!(admin = %user.name, error = %e, "plugin upload refused");
            back(match e {
                JobError::Forbidden(_) => UploadError::Forbidden,
                JobError::BadPlugin(_) => UploadError::NotAPlugin,
                JobError::Conflict(_) => UploadError::VersionTaken,
                JobError::Invalid(_) => UploadError::TooLarge,
                JobError::NotFound(_) | JobError::TooMany(_) | JobError::Store(_) => {
                    UploadError::Unavailable
                }
            })
        }
    }
}

/// Why an upload from the plugin page failed, as the page names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UploadError {
    NotAPlugin,
    TooLarge,
    VersionTaken,
    NoFile,
    BrokenUpload,
    Forbidden,
    Unavailable,
}

impl UploadError {
    fn as_str(self) -> &'static str {
        match self {
            UploadError::NotAPlugin => "not-a-plugin",
            UploadError::TooLarge => "too-large",
            UploadError::VersionTaken => "version-taken",
            UploadError::NoFile => "no-file",
            UploadError::BrokenUpload => "broken-upload",
            UploadError::Forbidden => "forbidden",
            UploadError::Unavailable => "unavailable",
        }
    }
}

/// The agents you may run plugins on: your VMs' and the native hosts (admins: all).
#[utoipa::path(get, path = "/api/v1/agents", tag = "jobs",
    responses((status = 200, body = [AgentView]), (status = 401)))]
pub(crate) async fn list_agents(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<AgentView>>, ApiError> {
    Ok(Json(state.jobs.agents(&user).await?))
}

/// A bare-metal host to register as a native baseline.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNativeHost {
    /// Its name, e.g. `gpu-01-native`.
    pub name: String,
}

/// A registered native host: its token is in this response and nowhere else.
#[derive(Debug, Serialize, ToSchema)]
pub struct NativeHostToken {
    /// The agent's id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// `psa_` and 64 hex digits: `passage-agent serve --server URL --token TOKEN`.
    pub token: String,
}

/// Registers a bare-metal host as a native baseline (admins); returns its agent token once.
#[utoipa::path(post, path = "/api/v1/agents", tag = "jobs", request_body = NewNativeHost,
    responses((status = 201, body = NativeHostToken), (status = 403), (status = 409), (status = 422)))]
pub(crate) async fn add_agent(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(host): Json<NewNativeHost>,
) -> Result<Response, ApiError> {
    let (id, token) = state.jobs.add_native_host(&admin, &host.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(NativeHostToken {
            id,
            name: host.name.trim().to_string(),
            token,
        }),
    )
        .into_response())
}

/// Revokes an agent's token (admins); its unfinished jobs are cancelled.
#[utoipa::path(delete, path = "/api/v1/agents/{id}", tag = "jobs",
    params(("id" = i64, Path, description = "agent id")),
    responses((status = 204), (status = 403), (status = 404)))]
pub(crate) async fn revoke_agent(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    state.jobs.revoke_agent(&admin, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queued jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct Queued {
    /// The new jobs' ids.
    pub jobs: Vec<i64>,
}

/// Queues a plugin run on an agent you may use. Parameters are checked against the plugin's
/// description (422 naming the parameter); `gpu: "each"` queues one job per GPU.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = JobOrder,
    responses((status = 201, body = Queued), (status = 401), (status = 404),
        (status = 409, description = "the agent is revoked, its VM is not running, or it reports no GPU"),
        (status = 422, description = "a parameter, or a GPU the agent does not report"),
        (status = 429, description = "the per-user limit of unfinished jobs on native hosts")))]
pub(crate) async fn queue_job(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    order: Result<Json<JobOrder>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(order) =
        order.map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()))?;
    let jobs = state.jobs.queue(&user, &order).await?;
    Ok((StatusCode::CREATED, Json(Queued { jobs })).into_response())
}

/// A queued batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedBatch {
    /// The batch's name: `GET /api/v1/jobs?batch=…` lists its jobs.
    pub batch: String,
}

/// Queues the study's whole suite (its ten programs, with its sizes) on an agent.
#[utoipa::path(post, path = "/api/v1/agents/{id}/suite", tag = "jobs",
    params(("id" = i64, Path, description = "agent id")),
    responses((status = 201, body = QueuedBatch), (status = 401), (status = 404), (status = 409),
        (status = 429, description = "the per-user limit of unfinished jobs on native hosts")))]
pub(crate) async fn queue_suite(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let batch = state.jobs.queue_suite(&user, id).await?;
    Ok((StatusCode::CREATED, Json(QueuedBatch { batch })).into_response())
}

/// The jobs you may see (yours, your VMs', the native hosts'; admins: all), newest first.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(JobFilter, Page),
    responses((status = 200, body = [JobView], headers(("link" = String, description = "the next page: `<...?cursor=...>; rel=\"next\"`, when there is one"))), (status = 400), (status = 401)))]
pub(crate) async fn list_jobs(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    filter: Result<Query<JobFilter>, axum::extract::rejection::QueryRejection>,
    uri: axum::http::Uri,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    let Query(filter) = filter.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{}; the filters are agent, plugin, batch and state",
                e.body_text()
            ),
        )
    })?;
    let page = crate::paging::query(page)?;
    let jobs = state.jobs.jobs(&user, &filter, page.window()?).await?;
    crate::paging::by_id(&uri, &page, jobs, |j| j.id)
}

/// One job with its progress and, once ended, its result.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = i64, Path, description = "job id")),
    responses((status = 200, body = JobView), (status = 401), (status = 404)))]
pub(crate) async fn show_job(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(state.jobs.job(&user, id).await?))
}

/// Cancels a queued or running job (whoever queued it, the VM's owner, or an admin).
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = i64, Path, description = "job id")),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub(crate) async fn cancel_job(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    state.jobs.cancel(&user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
