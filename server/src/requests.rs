//! GPU VM requests over the API: filing one (every field checked, each with its own message),
//! reading them (owners see theirs, admins all), and the admin's approve and deny.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::AppState;
use crate::api::ApiError;
use crate::auth::{Admin, CurrentUser};
use crate::scheduler::{self, PlaceError};
use crate::store::{NewRequest, RequestView};

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/requests", get(list).post(create))
        .route("/api/v1/requests/{id}", get(show))
        .route("/api/v1/requests/{id}/approve", post(approve))
        .route("/api/v1/requests/{id}/deny", post(deny))
}

/// Body of `POST /api/v1/requests`. Every field is required.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestForm {
    /// A `model` from `GET /api/v1/gpus`.
    pub gpu_model: String,
    /// 1 to 16.
    pub gpu_count: i64,
    /// 1 to 256.
    pub vcpus: i64,
    /// 512 to 4,194,304 (4 TiB).
    pub memory_mib: i64,
    /// 1 to 65,536.
    pub disk_gib: i64,
    /// A `name` from `GET /api/v1/images`.
    pub image: String,
    /// `kvm` or `xen`.
    pub hypervisor: String,
    /// 1 to 720 (30 days).
    pub lease_hours: i64,
    /// Why, for the admin: 1 to 1,000 characters.
    pub reason: String,
}

/// Checks every field; the errors name each bad field.
pub fn validate(
    form: &RequestForm,
    models: &[String],
    images: &[String],
) -> Result<(), BTreeMap<&'static str, String>> {
    let mut errors = BTreeMap::new();
    let mut range = |field: &'static str, value: i64, min: i64, max: i64| {
        if !(min..=max).contains(&value) {
            errors.insert(field, format!("must be from {min} to {max}, got {value}"));
        }
    };
    range("gpu_count", form.gpu_count, 1, 16);
    range("vcpus", form.vcpus, 1, 256);
    range("memory_mib", form.memory_mib, 512, 4 << 20);
    range("disk_gib", form.disk_gib, 1, 65_536);
    range("lease_hours", form.lease_hours, 1, 720);
    if !models.contains(&form.gpu_model) {
        errors.insert(
            "gpu_model",
            format!(
                "{:?} is not a GPU model here; choose one of: {}",
                form.gpu_model,
                models.join(", ")
            ),
        );
    }
    if !images.contains(&form.image) {
        errors.insert(
            "image",
            format!(
                "{:?} is not an image here; choose one of: {}",
                form.image,
                images.join(", ")
            ),
        );
    }
    if !matches!(form.hypervisor.as_str(), "kvm" | "xen") {
        errors.insert("hypervisor", "must be \"kvm\" or \"xen\"".into());
    }
    let reason = form.reason.trim();
    if reason.is_empty() || reason.chars().count() > 1000 {
        errors.insert("reason", "say why in 1 to 1000 characters".into());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Files a request; answers 201 with its id and `pending`, or 422 naming every bad field.
#[utoipa::path(post, path = "/api/v1/requests", tag = "requests", request_body = RequestForm,
    responses((status = 201, description = "filed: {id, state}"), (status = 422, description = "{error, fields}"), (status = 401)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Json(form): Json<RequestForm>,
) -> Result<Response, ApiError> {
    let mut models: Vec<String> = state
        .store
        .gpus()
        .await?
        .into_iter()
        .map(|g| g.model)
        .collect();
    models.sort();
    models.dedup();
    let images: Vec<String> = state
        .store
        .images()
        .await?
        .into_iter()
        .map(|i| i.name)
        .collect();
    if let Err(fields) = validate(&form, &models, &images) {
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": "some fields are not valid", "fields": fields })),
        )
            .into_response());
    }
    let id = state
        .store
        .create_request(&NewRequest {
            user_id: user.id,
            gpu_model: form.gpu_model,
            gpu_count: form.gpu_count,
            vcpus: form.vcpus,
            memory_mib: form.memory_mib,
            disk_gib: form.disk_gib,
            image: form.image,
            hypervisor: form.hypervisor,
            lease_hours: form.lease_hours,
            reason: form.reason.trim().to_string(),
        })
        .await?;
    tracing::info!(request = id, user = %user.name, "request filed");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "state": "pending" })),
    )
        .into_response())
}

/// Your requests; admins see everyone's.
#[utoipa::path(get, path = "/api/v1/requests", tag = "requests",
    responses((status = 200, body = [RequestView]), (status = 401)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<RequestView>>, ApiError> {
    let scope = if user.is_admin { None } else { Some(user.id) };
    Ok(Json(state.store.requests(scope).await?))
}

async fn visible(
    state: &AppState,
    user: &crate::auth::User,
    id: i64,
) -> Result<RequestView, ApiError> {
    let scope = if user.is_admin { None } else { Some(user.id) };
    state
        .store
        .requests(scope)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        // Someone else's request is as invisible as a missing one.
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no request {id}")))
}

/// One request, if it is yours (or you are an admin).
#[utoipa::path(get, path = "/api/v1/requests/{id}", tag = "requests",
    params(("id" = i64, Path, description = "request id")),
    responses((status = 200, body = RequestView), (status = 404), (status = 401)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<Json<RequestView>, ApiError> {
    Ok(Json(visible(&state, &user, id).await?))
}

/// Approves a request: claims its GPUs now, or leaves it waiting with the reason (admins).
#[utoipa::path(post, path = "/api/v1/requests/{id}/approve", tag = "requests",
    params(("id" = i64, Path, description = "request id")),
    responses((status = 200, body = RequestView), (status = 404), (status = 409), (status = 403)))]
pub(crate) async fn approve(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<i64>,
) -> Result<Json<RequestView>, ApiError> {
    visible(&state, &admin, id).await?;
    match scheduler::place(&state.store, id).await {
        Ok(placement) => {
            tracing::info!(request = id, admin = %admin.name, host = %placement.host, gpus = ?placement.gpus, "request approved and placed");
        }
        Err(PlaceError::NoFit(reason)) => {
            tracing::info!(request = id, admin = %admin.name, %reason, "request approved, waiting for GPUs");
        }
        Err(PlaceError::NotPlaceable(_)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("request {id} is not pending or waiting"),
            ));
        }
        Err(PlaceError::Contended) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the GPUs are too contended right now; approve again".into(),
            ));
        }
        Err(PlaceError::Store(e)) => return Err(e.into()),
    }
    Ok(Json(visible(&state, &admin, id).await?))
}

/// Body of `POST /api/v1/requests/{id}/deny`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Denial {
    /// Why, shown to the requester.
    pub reason: String,
}

/// Denies a pending or waiting request (admins).
#[utoipa::path(post, path = "/api/v1/requests/{id}/deny", tag = "requests", request_body = Denial,
    params(("id" = i64, Path, description = "request id")),
    responses((status = 200, body = RequestView), (status = 404), (status = 409), (status = 403)))]
pub(crate) async fn deny(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<i64>,
    Json(denial): Json<Denial>,
) -> Result<Json<RequestView>, ApiError> {
    visible(&state, &admin, id).await?;
    let reason = denial.reason.trim();
    if reason.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "say why the request is denied".into(),
        ));
    }
    if !state.store.deny(id, reason).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("request {id} is not pending or waiting"),
        ));
    }
    tracing::info!(request = id, admin = %admin.name, reason, "request denied");
    Ok(Json(visible(&state, &admin, id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form() -> RequestForm {
        RequestForm {
            gpu_model: "H100 PCIe".into(),
            gpu_count: 1,
            vcpus: 8,
            memory_mib: 32768,
            disk_gib: 100,
            image: "debian-12".into(),
            hypervisor: "kvm".into(),
            lease_hours: 24,
            reason: "benchmarks".into(),
        }
    }

    #[test]
    fn every_bad_field_gets_its_own_message() {
        let models = vec!["H100 PCIe".to_string()];
        let images = vec!["debian-12".to_string()];
        assert!(validate(&form(), &models, &images).is_ok());
        let bad = RequestForm {
            gpu_model: "K80".into(),
            gpu_count: 0,
            vcpus: 1000,
            memory_mib: 1,
            disk_gib: 0,
            image: "windows".into(),
            hypervisor: "vmware".into(),
            lease_hours: 10_000,
            reason: " ".into(),
        };
        let errors = validate(&bad, &models, &images).unwrap_err();
        let fields: Vec<&str> = errors.keys().copied().collect();
        assert_eq!(
            fields,
            vec![
                "disk_gib",
                "gpu_count",
                "gpu_model",
                "hypervisor",
                "image",
                "lease_hours",
                "memory_mib",
                "reason",
                "vcpus"
            ]
        );
        assert!(errors["gpu_model"].contains("H100 PCIe"));
    }
}
