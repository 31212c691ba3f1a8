//! The experiments API: make, list, read, cancel, approve, export, chart and compare.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use passage_app::experiments::{Comparison, ExperimentForm, ExperimentSummary, ExperimentView};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ExperimentError;
use crate::AppState;
use crate::api::ApiError;
use crate::auth::{Admin, CurrentUser};

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/experiments", get(list).post(create))
        .route("/api/v1/experiments/compare", get(compare))
        .route("/api/v1/experiments/{id}", get(show))
        .route("/api/v1/experiments/{id}/cancel", post(cancel))
        .route("/api/v1/experiments/{id}/approve", post(approve))
        .route("/api/v1/experiments/{id}/results.csv", get(results_csv))
        .route("/api/v1/experiments/{id}/results.json", get(results_json))
        .route("/api/v1/experiments/{id}/charts/{file}", get(chart))
}

impl From<ExperimentError> for ApiError {
    fn from(e: ExperimentError) -> Self {
        let status = match &e {
            ExperimentError::Store(_) => {
                let ExperimentError::Store(e) = e else {
                    unreachable!()
                };
                return e.into();
            }
            ExperimentError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ExperimentError::NotFound(_) => StatusCode::NOT_FOUND,
            ExperimentError::Forbidden(_) => StatusCode::FORBIDDEN,
            ExperimentError::Conflict(_) => StatusCode::CONFLICT,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The answer to `POST /api/v1/experiments`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    /// The experiment's id.
    pub id: i64,
    /// `preparing` until every target's agent is ready.
    pub state: String,
}

/// Makes an experiment: benchmarks (`plugins` or `"preset": "study"`), targets (agents you may
/// use, and variants: VMs requested for the experiment through the normal request path, one per
/// vCPU count and hypervisor, released when it ends) and repetitions.
#[utoipa::path(post, path = "/api/v1/experiments", tag = "experiments", request_body = ExperimentForm,
    responses((status = 201, body = Created), (status = 409, description = "a variant's VM cannot be requested (e.g. a quota)"),
        (status = 422, description = "a benchmark or target is not valid"), (status = 401)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Json(form): Json<ExperimentForm>,
) -> Result<Response, ApiError> {
    let id = super::create(&state, &user, form).await?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            id,
            state: "preparing".into(),
        }),
    )
        .into_response())
}

/// Your experiments, newest first; admins see everyone's.
#[utoipa::path(get, path = "/api/v1/experiments", tag = "experiments",
    responses((status = 200, body = [ExperimentSummary]), (status = 401)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<ExperimentSummary>>, ApiError> {
    Ok(Json(super::list(&state, &user).await?))
}

/// One experiment: where it stands, its benchmarks and targets, every figure per target with
/// its samples, the overheads against the native baseline and the links to its charts.
#[utoipa::path(get, path = "/api/v1/experiments/{id}", tag = "experiments",
    params(("id" = i64, Path, description = "experiment id")),
    responses((status = 200, body = ExperimentView), (status = 404), (status = 401)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<Json<ExperimentView>, ApiError> {
    Ok(Json(super::show(&state, &user, id).await?))
}

/// Cancels an experiment: its unfinished jobs are cancelled and its VMs released.
#[utoipa::path(post, path = "/api/v1/experiments/{id}/cancel", tag = "experiments",
    params(("id" = i64, Path, description = "experiment id")),
    responses((status = 200, body = ExperimentSummary), (status = 404), (status = 409, description = "it has ended")))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<Json<ExperimentSummary>, ApiError> {
    super::cancel(&state, &user, id).await?;
    Ok(Json(super::show(&state, &user, id).await?.summary))
}

/// How many requests an approval approved.
#[derive(Debug, Serialize, ToSchema)]
pub struct Approved {
    /// Requests approved (placed or waiting for GPUs).
    pub approved: usize,
}

/// Approves every pending request of an experiment's VMs at once (admins).
#[utoipa::path(post, path = "/api/v1/experiments/{id}/approve", tag = "experiments",
    params(("id" = i64, Path, description = "experiment id")),
    responses((status = 200, body = Approved), (status = 404), (status = 409), (status = 403)))]
pub(crate) async fn approve(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<i64>,
) -> Result<Json<Approved>, ApiError> {
    let approved = super::approve(&state, &admin, id).await?;
    Ok(Json(Approved { approved }))
}

fn attachment(name: String) -> String {
    format!("attachment; filename=\"{name}\"")
}

/// Every sample as CSV: one row per job and figure, with its target's GPU model, hypervisor and
/// vCPUs.
#[utoipa::path(get, path = "/api/v1/experiments/{id}/results.csv", tag = "experiments",
    params(("id" = i64, Path, description = "experiment id")),
    responses((status = 200, content_type = "text/csv"), (status = 404), (status = 401)))]
pub(crate) async fn results_csv(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let view = super::show(&state, &user, id).await?;
    let text = super::csv(&view)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                attachment(format!("experiment-{id}.csv")),
            ),
        ],
        text,
    )
        .into_response())
}

/// Every number of the experiment as JSON (the same as `GET /api/v1/experiments/{id}`, as a
/// download).
#[utoipa::path(get, path = "/api/v1/experiments/{id}/results.json", tag = "experiments",
    params(("id" = i64, Path, description = "experiment id")),
    responses((status = 200, body = ExperimentView), (status = 404), (status = 401)))]
pub(crate) async fn results_json(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let view = super::show(&state, &user, id).await?;
    Ok((
        [(
            header::CONTENT_DISPOSITION,
            attachment(format!("experiment-{id}.json")),
        )],
        Json(view),
    )
        .into_response())
}

/// A chart of the experiment as SVG; the names are in the experiment's `charts`
/// (`real-time.svg`, `bandwidth-7.svg`, `overhead-real-time.svg`, ...). `?download` asks for it
/// as a file.
#[utoipa::path(get, path = "/api/v1/experiments/{id}/charts/{file}", tag = "experiments",
    params(("id" = i64, Path, description = "experiment id"), ("file" = String, Path, description = "e.g. real-time.svg"),
        ("download" = Option<String>, Query, description = "present: sent as an attachment")),
    responses((status = 200, content_type = "image/svg+xml"), (status = 404), (status = 401)))]
pub(crate) async fn chart(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path((id, file)): Path<(i64, String)>,
    Query(query): Query<ChartQuery>,
) -> Result<Response, ApiError> {
    let view = super::show(&state, &user, id).await?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "experiment {id} has no chart {file:?} (yet); its charts are listed in GET /api/v1/experiments/{id}"
            ),
        )
    };
    let name = file.strip_suffix(".svg").ok_or_else(not_found)?;
    let svg = super::chart(&view, name)
        .ok_or_else(not_found)?
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the chart cannot be drawn: {e}"),
            )
        })?;
    let mut headers = vec![
        (header::CONTENT_TYPE, "image/svg+xml".to_string()),
        // The chart changes while the experiment runs.
        (header::CACHE_CONTROL, "no-cache".to_string()),
        // Scripts in an SVG opened on its own are not run; it holds none anyway.
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'".to_string(),
        ),
    ];
    if query.download.is_some() {
        headers.push((
            header::CONTENT_DISPOSITION,
            attachment(format!("experiment-{id}-{file}")),
        ));
    }
    let mut response = svg.into_response();
    for (name, value) in headers {
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

/// Query of a chart.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ChartQuery {
    /// Present: the chart is sent as a file.
    pub download: Option<String>,
}

/// Query of a comparison.
#[derive(Debug, Deserialize, IntoParams)]
pub struct CompareQuery {
    /// The first experiment (the baseline).
    pub a: i64,
    /// The second.
    pub b: i64,
}

/// Two experiments compared figure by figure, for targets of the same role (native, KVM 2
/// vCPU, ...): b − a with a 95% bootstrap interval.
#[utoipa::path(get, path = "/api/v1/experiments/compare", tag = "experiments",
    params(CompareQuery),
    responses((status = 200, body = Comparison), (status = 404), (status = 401)))]
pub(crate) async fn compare(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Query(query): Query<CompareQuery>,
) -> Result<Json<Comparison>, ApiError> {
    Ok(Json(
        super::compare_two(&state, &user, query.a, query.b).await?,
    ))
}
