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
use passage_app::inventory::{GpuView, HostView};
use serde::Deserialize;
use serde_json::json;

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

async fn list_hosts(
    State(state): State<AppState>,
    _: CurrentUser,
) -> Result<Json<Vec<HostView>>, ApiError> {
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

async fn refresh(State(state): State<AppState>, _: Admin) -> Result<Json<Vec<HostView>>, ApiError> {
    state.inventory.refresh_all().await?;
    Ok(Json(state.store.hosts().await?))
}

/// Body of `POST /api/v1/login`.
#[derive(Debug, Deserialize)]
struct Credentials {
    name: String,
    password: String,
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(credentials): Json<Credentials>,
) -> Result<Response, AuthError> {
    let (user, secret) = state
        .auth
        .login(&credentials.name, &credentials.password, client.ip())
        .await?;
    let cookie = auth::session_cookie(&secret, auth::over_tls(&headers));
    Ok(([(header::SET_COOKIE, cookie)], Json(user)).into_response())
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    state.auth.logout(&headers).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, auth::cleared_cookie())],
    )
        .into_response())
}

async fn me(CurrentUser(user): CurrentUser) -> Json<auth::User> {
    Json(user)
}

async fn list_tokens(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<crate::store::ApiTokenRecord>>, ApiError> {
    Ok(Json(state.auth.store().tokens(user.id).await?))
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize)]
struct NewToken {
    name: String,
}

async fn create_token(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Json(body): Json<NewToken>,
) -> Result<Response, AuthError> {
    let (record, secret) = state.auth.create_token(&user, &body.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": record.id, "name": record.name, "token": secret })),
    )
        .into_response())
}

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
