//! The JSON API under `/api/v1` and the health check.
//!
//! Errors are JSON objects `{"error": "..."}` with a fitting status; a database failure is a 503
//! (the portal is up but cannot answer), never a panic.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use passage_app::inventory::{GpuView, HostView};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::store::StoreError;

/// The API's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/hosts", get(list_hosts))
        .route("/api/v1/gpus", get(list_gpus))
        .route("/api/v1/inventory/refresh", post(refresh))
        .route("/api/v1/{*rest}", axum::routing::any(not_found))
}

/// An API error: a status and a message for the caller.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "database request failed");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("the database is not available: {e}"),
        }
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({ "status": "ok", "database": "ok" })).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "database": e.to_string() })),
        )
            .into_response(),
    }
}

async fn list_hosts(State(state): State<AppState>) -> Result<Json<Vec<HostView>>, ApiError> {
    Ok(Json(state.store.hosts().await?))
}

/// Optional filters of `GET /api/v1/gpus`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuFilter {
    host: Option<String>,
    model: Option<String>,
    state: Option<String>,
}

async fn list_gpus(
    State(state): State<AppState>,
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

async fn refresh(State(state): State<AppState>) -> Result<Json<Vec<HostView>>, ApiError> {
    state.inventory.refresh_all().await?;
    Ok(Json(state.store.hosts().await?))
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no such API endpoint; see /api/v1/hosts and /api/v1/gpus".into(),
    }
}
