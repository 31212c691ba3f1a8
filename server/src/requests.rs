//! GPU VM requests over the API: filing one (every field checked, each with its own message),
//! reading them (owners see theirs, admins all), and the admin's approve and deny.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use passage_app::requests::{Choices, RequestForm, RequestView};

use crate::AppState;
use crate::api::ApiError;
use crate::auth::{Admin, CurrentUser, User};
use crate::config::{AutoApprove, Quotas};
use crate::paging::Page;
use crate::scheduler::{self, Choice, PlaceError};
use crate::store::{AuditRecord, Store, StoreError};

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/requests", get(list).post(create))
        .route("/api/v1/requests/{id}", get(show))
        .route("/api/v1/requests/{id}/approve", post(approve))
        .route("/api/v1/requests/{id}/deny", post(deny))
}

/// Quotas and the auto-approval policy, from the configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Per-user limits.
    pub quotas: Quotas,
    /// Requests approved without an admin.
    pub auto_approve: AutoApprove,
}

/// Why a request action failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Fields that are not valid, each with its message.
    #[error("some fields are not valid")]
    Invalid(BTreeMap<String, String>),
    /// No such request (or not yours).
    #[error("no request {0}")]
    NotFound(i64),
    /// The request is not in a state that allows this.
    #[error("request {0} is not pending or waiting")]
    Conflict(i64),
    /// Every placement attempt lost a race.
    #[error("the GPUs are too contended right now; approve again")]
    Contended,
    /// The admin's choice of host or GPUs cannot be honoured.
    #[error("{0}")]
    BadChoice(String),
    /// Approving would take the owner past a quota.
    #[error("{0}")]
    OverQuota(String),
    /// A denial needs a reason.
    #[error("say why the request is denied")]
    NoReason,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        if let RequestError::Store(e) = e {
            return e.into();
        }
        let status = match &e {
            RequestError::Invalid(_) | RequestError::NoReason | RequestError::BadChoice(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            RequestError::NotFound(_) => StatusCode::NOT_FOUND,
            RequestError::Conflict(_) | RequestError::OverQuota(_) => StatusCode::CONFLICT,
            RequestError::Contended | RequestError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The GPU models and images a request can name now.
pub async fn choices(store: &Store) -> Result<Choices, StoreError> {
    let mut models: Vec<String> = store
        .gpus()
        .await?
        .iter()
        .map(|g| g.model.clone())
        .collect();
    models.sort();
    models.dedup();
    let all = store.images().await?;
    let mut images_with_driver = all
        .iter()
        .filter(|i| i.gpu_driver_included)
        .map(|i| i.name.clone())
        .collect::<Vec<String>>();
    // An image with copies on several hosts is one choice (copies come by name, then host).
    images_with_driver.dedup();
    let mut images: Vec<String> = all.into_iter().map(|i| i.name).collect();
    images.dedup();
    Ok(Choices {
        models,
        images,
        images_with_driver,
    })
}

/// The quotas that hold for a user: the configured ones, with an admin's per-user override.
pub async fn quotas_for(
    store: &Store,
    policy: &Policy,
    user_id: i64,
) -> Result<Quotas, StoreError> {
    let own = store.user_quota(user_id).await?;
    let base = policy.quotas;
    Ok(Quotas {
        gpus: own.gpus.unwrap_or(base.gpus),
        requests: own.requests.unwrap_or(base.requests),
        lease_hours: own.lease_hours.unwrap_or(base.lease_hours),
    })
}

/// Files a request for `user` after checking every field.
pub async fn file_request(
    state: &AppState,
    user: &User,
    form: RequestForm,
) -> Result<i64, RequestError> {
    let (store, policy) = (&state.store, &state.policy);
    let Choices { models, images, .. } = choices(store).await?;
    form.validate(&models, &images)
        .map_err(RequestError::Invalid)?;
    let quotas = quotas_for(store, policy, user.id).await?;
    let (held, open) = store.usage(user.id).await?;
    let mut over = BTreeMap::new();
    if form.lease_hours > quotas.lease_hours {
        over.insert(
            "lease_hours".to_string(),
            format!(
                "your quota allows leases of at most {} hours",
                quotas.lease_hours
            ),
        );
    }
    if held + form.gpu_count > quotas.gpus {
        over.insert(
            "gpu_count".to_string(),
            format!("you hold {held} GPU(s); your quota is {}", quotas.gpus),
        );
    }
    if open >= quotas.requests {
        over.insert(
            "reason".to_string(),
            format!(
                "you have {open} open request(s); your quota is {}",
                quotas.requests
            ),
        );
    }
    if !over.is_empty() {
        return Err(RequestError::Invalid(over));
    }
    let automatic = form.gpu_count <= policy.auto_approve.gpus
        && form.lease_hours <= policy.auto_approve.lease_hours;
    // The count of open requests is checked again in the insert's own transaction: concurrent
    // filings cannot all pass the quota.
    let Some(id) = store
        .create_request_within(user.id, &form, quotas.requests)
        .await?
    else {
        let (_, open) = store.usage(user.id).await?;
        return Err(RequestError::Invalid(BTreeMap::from([(
            "reason".to_string(),
            format!(
                "you have {open} open request(s); your quota is {}",
                quotas.requests
            ),
        )])));
    };
    tracing::info!(request = id, user = %user.name, automatic, "request filed");
    store
        .audit(AuditRecord {
            actor: &user.name,
            action: "request.file",
            subject: format!("request {id}"),
            before: None,
            after: Some("pending".into()),
            detail: Some(format!(
                "{} x {}, {} h: {}",
                form.gpu_count,
                form.gpu_model,
                form.lease_hours,
                form.reason.trim()
            )),
        })
        .await?;
    if automatic {
        match approve_request(state, "system", id, &Choice::default()).await {
            // Another of the user's requests took the GPUs meanwhile: this one stays pending,
            // for an admin.
            Err(RequestError::OverQuota(reason)) => {
                tracing::info!(request = id, %reason, "automatic approval refused by the quota")
            }
            other => other?,
        }
    }
    Ok(id)
}

/// Approves a request: its GPUs are claimed now and its VM provisioned, or it waits with the
/// reason. `actor` is the admin (or `system` for automatic approval); `choice` narrows where.
pub async fn approve_request(
    state: &AppState,
    actor: &str,
    id: i64,
    choice: &Choice,
) -> Result<(), RequestError> {
    let (store, policy) = (&state.store, &state.policy);
    let needs = store
        .request_needs(id)
        .await?
        .ok_or(RequestError::NotFound(id))?;
    // A request already placed or closed is a conflict, not a quota question.
    if !needs.is_open() {
        return Err(RequestError::Conflict(id));
    }
    let (held, _) = store.usage(needs.user_id).await?;
    let count = needs.gpu_count;
    let quotas = quotas_for(store, policy, needs.user_id).await?;
    if held + count > quotas.gpus {
        return Err(RequestError::OverQuota(format!(
            "the requester holds {held} GPU(s); {count} more would pass the quota of {}",
            quotas.gpus
        )));
    }
    let audit = |after: &str, detail: String| AuditRecord {
        actor,
        action: "request.approve",
        subject: format!("request {id}"),
        before: Some(needs.state.clone()),
        after: Some(after.to_string()),
        detail: Some(detail),
    };
    match scheduler::place_with(store, id, choice, Some(quotas.gpus)).await {
        Ok(placement) => {
            tracing::info!(request = id, host = %placement.host, gpus = ?placement.gpus, "request approved and placed");
            store
                .audit(audit(
                    "placed",
                    format!("{} on {}", placement.gpus.join(", "), placement.host),
                ))
                .await?;
            state.vms.provision_in_background(id);
            Ok(())
        }
        Err(PlaceError::NoFit(reason)) => {
            tracing::info!(request = id, %reason, "request approved, waiting for GPUs");
            store.audit(audit("waiting", reason)).await?;
            Ok(())
        }
        Err(PlaceError::BadChoice(reason)) => Err(RequestError::BadChoice(reason)),
        Err(PlaceError::NotPlaceable(_)) => Err(RequestError::Conflict(id)),
        Err(PlaceError::OverQuota(reason)) => Err(RequestError::OverQuota(reason)),
        Err(PlaceError::Contended) => Err(RequestError::Contended),
        Err(PlaceError::Store(e)) => Err(e.into()),
    }
}

/// Denies a pending or waiting request.
pub async fn deny_request(
    store: &Store,
    actor: &str,
    id: i64,
    reason: &str,
) -> Result<(), RequestError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(RequestError::NoReason);
    }
    let before = store.request_needs(id).await?.map(|n| n.state);
    if !store.deny(id, reason).await? {
        return Err(RequestError::Conflict(id));
    }
    tracing::info!(request = id, reason, "request denied");
    store
        .audit(AuditRecord {
            actor,
            action: "request.deny",
            subject: format!("request {id}"),
            before,
            after: Some("denied".into()),
            detail: Some(reason.to_string()),
        })
        .await?;
    Ok(())
}

/// Files a request; answers 201 with its id and `pending`, or 422 naming every bad field.
#[utoipa::path(post, path = "/api/v1/requests", tag = "requests", request_body = RequestForm,
    responses((status = 201, description = "filed: {id, state}"), (status = 422, description = "{error, fields}"), (status = 401)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Json(form): Json<RequestForm>,
) -> Result<Response, ApiError> {
    match file_request(&state, &user, form).await {
        Ok(id) => {
            // "pending", or already "placed"/"waiting" when the request was approved automatically.
            let filed = state.store.request_needs(id).await?.map(|n| n.state);
            Ok((
                StatusCode::CREATED,
                Json(json!({ "id": id, "state": filed })),
            )
                .into_response())
        }
        Err(RequestError::Invalid(fields)) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": "some fields are not valid", "fields": fields })),
        )
            .into_response()),
        Err(e) => Err(e.into()),
    }
}

/// Your requests; admins see everyone's.
#[utoipa::path(get, path = "/api/v1/requests", tag = "requests", params(Page),
    responses((status = 200, body = [RequestView], headers(("link" = String, description = "the next page: `<...?cursor=...>; rel=\"next\"`, when there is one"))), (status = 400), (status = 401)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    uri: Uri,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Response, ApiError> {
    let page = crate::paging::query(page)?;
    let scope = if user.is_admin { None } else { Some(user.id) };
    let requests = state.store.requests(scope, page.window()?).await?;
    crate::paging::by_id(&uri, &page, requests, |r| r.id)
}

async fn visible(
    state: &AppState,
    user: &crate::auth::User,
    id: i64,
) -> Result<RequestView, ApiError> {
    let scope = if user.is_admin { None } else { Some(user.id) };
    state
        .store
        .request(scope, id)
        .await?
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

/// Approves a request: claims its GPUs now and provisions its VM, or leaves it waiting with the
/// reason (admins). An optional body chooses the host or the exact GPUs.
#[utoipa::path(post, path = "/api/v1/requests/{id}/approve", tag = "requests", request_body(content = Option<Choice>),
    params(("id" = i64, Path, description = "request id")),
    responses((status = 200, body = RequestView), (status = 404), (status = 409), (status = 422), (status = 403)))]
pub(crate) async fn approve(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<i64>,
    body: Option<Json<Choice>>,
) -> Result<Json<RequestView>, ApiError> {
    visible(&state, &admin, id).await?;
    let choice = body.map(|Json(c)| c).unwrap_or_default();
    approve_request(&state, &admin.name, id, &choice).await?;
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
    deny_request(&state.store, &admin.name, id, &denial.reason).await?;
    Ok(Json(visible(&state, &admin, id).await?))
}
