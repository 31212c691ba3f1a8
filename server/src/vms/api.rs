//! The VM API, the admin API for images, quotas and the audit log, the SSH key of the signed-in
//! user, and the guest-facing cloud-init seed.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use passage_app::vms::{AuditEntry, AuditFilter, VmView};
use passage_hypervisor::Hotplug;

use super::VmError;
use super::agent_binary::AgentBinaryError;
use super::lifecycle::VmAction;
use super::seed::{SeedContent, SeedKey};
use crate::AppState;
use crate::api::ApiError;
use crate::auth::{Admin, CurrentUser};
use crate::paging::Page;
use crate::store::{AuditRecord, Image, QuotaOverride, UnknownDomain, is_unique_violation};

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/vms", get(list))
        .route("/api/v1/vms/{id}", get(show).delete(release))
        .route("/api/v1/vms/{id}/start", post(start))
        .route("/api/v1/vms/{id}/stop", post(stop))
        .route("/api/v1/vms/{id}/reboot", post(reboot))
        .route("/api/v1/vms/{id}/extend", post(extend))
        .route("/api/v1/vms/{id}/gpus", post(attach_gpu))
        .route("/api/v1/vms/{id}/gpus/{address}", delete(detach_gpu))
        .route("/api/v1/vms/{id}/domain", get(domain_xml))
        .route("/api/v1/unknown-domains", get(unknown_domains))
        .route(
            "/api/v1/unknown-domains/{host}/{uuid}",
            post(decide_unknown_domain),
        )
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/images", post(register_image))
        .route("/api/v1/users/{name}/quota", get(show_quota).put(set_quota))
        .route("/api/v1/me/ssh-key", put(set_ssh_key))
        .route("/cloud-init/{id}/{key}/{document}", get(seed_document))
        .route("/downloads/passage-agent", get(agent_binary))
}

/// The console websocket: it lives as long as someone watches, so it is routed outside the
/// request time limit.
pub fn console_routes() -> Router<AppState> {
    Router::new().route("/api/v1/vms/{id}/console", get(console))
}

impl From<VmError> for ApiError {
    fn from(e: VmError) -> Self {
        match e {
            VmError::Store(e) => e.into(),
            VmError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            VmError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            VmError::Forbidden(_) => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
            VmError::Invalid(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
            VmError::Host(_) => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()),
        }
    }
}

/// Your VMs; admins see everyone's.
#[utoipa::path(get, path = "/api/v1/vms", tag = "vms", params(Page),
    responses((status = 200, body = [VmView], headers(("link" = String, description = "the next page: `<...?cursor=...>; rel=\"next\"`, when there is one"))), (status = 400), (status = 401)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    uri: Uri,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Response, ApiError> {
    let page = crate::paging::query(page)?;
    let vms = state.vms.list(&user, page.window()?).await?;
    crate::paging::by_id(&uri, &page, vms, |v| v.id)
}

/// One VM: state, host, GPUs (PCI addresses) and domain.
#[utoipa::path(get, path = "/api/v1/vms/{id}", tag = "vms",
    params(("id" = i64, Path, description = "VM id")),
    responses((status = 200, body = VmView), (status = 404), (status = 401)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<Json<VmView>, ApiError> {
    Ok(Json(state.vms.show(&user, id).await?))
}

async fn act(
    state: &AppState,
    user: &crate::auth::User,
    id: i64,
    action: VmAction,
) -> Result<Json<VmView>, ApiError> {
    Ok(Json(state.vms.act(user, id, action).await?))
}

/// Releases a VM: shuts it down, removes its domain and disk, frees its GPUs.
#[utoipa::path(delete, path = "/api/v1/vms/{id}", tag = "vms",
    params(("id" = i64, Path, description = "VM id")),
    responses((status = 200, body = VmView), (status = 404), (status = 409), (status = 502)))]
pub(crate) async fn release(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<Json<VmView>, ApiError> {
    act(&state, &user, id, VmAction::Release).await
}

/// Starts a stopped VM.
#[utoipa::path(post, path = "/api/v1/vms/{id}/start", tag = "vms",
    params(("id" = i64, Path, description = "VM id")),
    responses((status = 200, body = VmView), (status = 404), (status = 409), (status = 502)))]
pub(crate) async fn start(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<Json<VmView>, ApiError> {
    act(&state, &user, id, VmAction::Start).await
}

/// Shuts a running VM down: ACPI first, power off after the grace period.
#[utoipa::path(post, path = "/api/v1/vms/{id}/stop", tag = "vms",
    params(("id" = i64, Path, description = "VM id")),
    responses((status = 200, body = VmView), (status = 404), (status = 409), (status = 502)))]
pub(crate) async fn stop(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<Json<VmView>, ApiError> {
    act(&state, &user, id, VmAction::Stop).await
}

/// Reboots a running VM.
#[utoipa::path(post, path = "/api/v1/vms/{id}/reboot", tag = "vms",
    params(("id" = i64, Path, description = "VM id")),
    responses((status = 200, body = VmView), (status = 404), (status = 409), (status = 502)))]
pub(crate) async fn reboot(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<Json<VmView>, ApiError> {
    act(&state, &user, id, VmAction::Reboot).await
}

/// Body of `POST /api/v1/vms/{id}/extend`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// Hours to add to the lease, 1 to 8,760.
    pub hours: i64,
}

/// Extends a VM's lease (admins).
#[utoipa::path(post, path = "/api/v1/vms/{id}/extend", tag = "vms", request_body = Extension,
    params(("id" = i64, Path, description = "VM id")),
    responses((status = 200, body = VmView), (status = 403), (status = 404), (status = 409), (status = 422)))]
pub(crate) async fn extend(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<i64>,
    Json(body): Json<Extension>,
) -> Result<Json<VmView>, ApiError> {
    Ok(Json(state.vms.extend(&admin, id, body.hours).await?))
}

/// Body of `POST /api/v1/vms/{id}/gpus`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuChoice {
    /// A free GPU's PCI address on the VM's host, e.g. `0000:ca:00.0`.
    pub address: String,
}

/// The VM after a hot-plug, and how it took effect.
#[derive(Debug, Serialize, ToSchema)]
pub struct HotplugOutcome {
    /// The VM now.
    pub vm: VmView,
    /// `live` (the running guest has it now) or `next-start` (its definition changed; the
    /// guest sees it from its next start, e.g. on hosts without device hot-plug).
    pub applied: String,
}

fn outcome((vm, how): (VmView, Hotplug)) -> Json<HotplugOutcome> {
    Json(HotplugOutcome {
        vm,
        applied: match how {
            Hotplug::Live => "live",
            Hotplug::NextStart => "next-start",
        }
        .into(),
    })
}

/// Attaches one more free GPU (with its IOMMU group's functions) to a VM (admins).
#[utoipa::path(post, path = "/api/v1/vms/{id}/gpus", tag = "vms", request_body = GpuChoice,
    params(("id" = i64, Path, description = "VM id")),
    responses((status = 200, body = HotplugOutcome), (status = 403), (status = 404), (status = 409), (status = 422), (status = 502)))]
pub(crate) async fn attach_gpu(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<i64>,
    Json(body): Json<GpuChoice>,
) -> Result<Json<HotplugOutcome>, ApiError> {
    Ok(outcome(
        state.vms.attach_gpu(&admin, id, &body.address).await?,
    ))
}

/// Detaches one GPU from a VM and frees it (admins).
#[utoipa::path(delete, path = "/api/v1/vms/{id}/gpus/{address}", tag = "vms",
    params(("id" = i64, Path, description = "VM id"), ("address" = String, Path, description = "GPU PCI address")),
    responses((status = 200, body = HotplugOutcome), (status = 403), (status = 404), (status = 409), (status = 422), (status = 502)))]
pub(crate) async fn detach_gpu(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path((id, address)): Path<(i64, String)>,
) -> Result<Json<HotplugOutcome>, ApiError> {
    Ok(outcome(state.vms.detach_gpu(&admin, id, &address).await?))
}

/// The VM's console as a websocket carrying VNC (subprotocol `binary`, as noVNC speaks).
#[utoipa::path(get, path = "/api/v1/vms/{id}/console", tag = "vms",
    params(("id" = i64, Path, description = "VM id")),
    responses((status = 101, description = "websocket"), (status = 404), (status = 409), (status = 502)))]
pub(crate) async fn console(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // Browsers send Origin on websockets; one from another site is refused outright.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let origin_host = origin.split_once("://").map(|(_, rest)| rest);
        if origin_host.is_none() || origin_host != host {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the console opens only from the portal's own pages".into(),
            ));
        }
    }
    let stream = state.vms.open_console(&user, id).await?;
    Ok(upgrade
        .protocols(["binary"])
        .on_upgrade(move |socket| stream.join(socket)))
}

/// The VM's libvirt domain XML as the host has it now (admins).
#[utoipa::path(get, path = "/api/v1/vms/{id}/domain", tag = "vms",
    params(("id" = i64, Path, description = "VM id")),
    responses((status = 200, description = "domain XML", content_type = "application/xml"), (status = 403), (status = 404), (status = 502)))]
pub(crate) async fn domain_xml(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let xml = state.vms.domain_xml(&admin, id).await?;
    Ok(([(header::CONTENT_TYPE, "application/xml")], xml).into_response())
}

/// Domains with Passage's name on the hosts that this installation did not make (another
/// installation's, or made before the database was restored): left alone until an admin decides
/// (admins).
#[utoipa::path(get, path = "/api/v1/unknown-domains", tag = "admin",
    responses((status = 200, body = [UnknownDomain]), (status = 401), (status = 403)))]
pub(crate) async fn unknown_domains(
    State(state): State<AppState>,
    Admin(_admin): Admin,
) -> Result<Json<Vec<UnknownDomain>>, ApiError> {
    Ok(Json(state.store.unknown_domains().await?))
}

/// An admin's decision on an unknown domain.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainDecision {
    /// `keep`: leave it, its GPUs stay out of placement; `remove`: power it off and undefine it.
    pub decision: String,
}

/// Keeps or removes an unknown domain (admins). Removal touches only the domain with that UUID.
#[utoipa::path(post, path = "/api/v1/unknown-domains/{host}/{uuid}", tag = "admin",
    request_body = DomainDecision,
    params(("host" = String, Path, description = "host name"),
           ("uuid" = String, Path, description = "the domain's libvirt UUID")),
    responses((status = 200, body = [UnknownDomain]), (status = 401), (status = 403),
              (status = 404), (status = 422), (status = 502)))]
pub(crate) async fn decide_unknown_domain(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path((host, uuid)): Path<(String, String)>,
    Json(body): Json<DomainDecision>,
) -> Result<Json<Vec<UnknownDomain>>, ApiError> {
    state
        .vms
        .decide_unknown_domain(&admin.name, &host, &uuid, &body.decision)
        .await?;
    Ok(Json(state.store.unknown_domains().await?))
}

/// The audit log, newest first, filtered (admins).
#[utoipa::path(get, path = "/api/v1/audit", tag = "admin", params(AuditFilter, Page),
    responses((status = 200, body = [AuditEntry], headers(("link" = String, description = "the next page: `<...?cursor=...>; rel=\"next\"`, when there is one"))), (status = 400), (status = 403)))]
pub(crate) async fn audit(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    Query(filter): Query<AuditFilter>,
    uri: Uri,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Response, ApiError> {
    let page = crate::paging::query(page)?;
    let entries = state.store.audit_entries(&filter, page.window()?).await?;
    crate::paging::by_id(&uri, &page, entries, |e| e.id)
}

/// Body of `POST /api/v1/images`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewImage {
    /// The name users pick, e.g. `ubuntu-24.04-cuda`.
    pub name: String,
    /// A configured host.
    pub host: String,
    /// A libvirt storage pool on it.
    pub pool: String,
    /// A qcow2 volume in that pool.
    pub volume: String,
    /// Boot this kernel (an absolute path on the host) directly instead of the disk's boot
    /// loader, e.g. `/srv/passage/appliance/vmlinuz`.
    #[serde(default)]
    pub kernel: Option<String>,
    /// The initramfs to boot with `kernel` (an absolute path on the host).
    #[serde(default)]
    pub initrd: Option<String>,
    /// The kernel's command line, e.g. `console=ttyS0 root=/dev/vda`.
    #[serde(default)]
    pub cmdline: Option<String>,
    /// True when the image brings NVIDIA's driver. Without it (the default) a VM's first boot
    /// installs it from the distribution (Debian's non-free `nvidia-driver`, Ubuntu's
    /// `nvidia-driver-*-server`) and reboots: several minutes more.
    #[serde(default)]
    pub gpu_driver_included: bool,
}

impl NewImage {
    /// Why the direct kernel boot fields do not fit together, if they do not.
    fn kernel_boot_problem(&self) -> Option<String> {
        let absolute = |field: &str, path: &Option<String>| match path {
            Some(p) if !p.starts_with('/') || p.contains('\0') => Some(format!(
                "{field}: give an absolute path on the host, got {p:?}"
            )),
            _ => None,
        };
        if self.kernel.is_none() && (self.initrd.is_some() || self.cmdline.is_some()) {
            return Some("kernel: initrd and cmdline need a kernel to boot".into());
        }
        if self.cmdline.as_deref().is_some_and(|c| c.len() > 4096) {
            return Some("cmdline: at most 4096 characters".into());
        }
        absolute("kernel", &self.kernel).or_else(|| absolute("initrd", &self.initrd))
    }
}

/// Registers a base image's copy on a host: a volume that exists in a storage pool of that host
/// (admins). The same name may have a copy on each host; requests for it are placed on hosts
/// that hold one.
#[utoipa::path(post, path = "/api/v1/images", tag = "admin", request_body = NewImage,
    responses((status = 201, body = Image), (status = 403), (status = 409), (status = 422), (status = 502)))]
pub(crate) async fn register_image(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(body): Json<NewImage>,
) -> Result<Response, ApiError> {
    let name_ok = !body.name.is_empty()
        && body.name.len() <= 64
        && body
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !name_ok {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "name: use 1 to 64 letters, digits, '.', '-' or '_'".into(),
        ));
    }
    if let Some(problem) = body.kernel_boot_problem() {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, problem));
    }
    let volume = state
        .inventory
        .host(&body.host)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("host: {:?} is not configured", body.host),
            )
        })?
        .volume(&body.pool, &body.volume)
        .await
        .map_err(VmError::from)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "volume: no volume {:?} in pool {:?} on {}",
                    body.volume, body.pool, body.host
                ),
            )
        })?;
    let image = Image {
        name: body.name.clone(),
        host: body.host.clone(),
        pool: body.pool.clone(),
        volume: body.volume.clone(),
        path: volume.path,
        capacity_bytes: i64::try_from(volume.capacity_bytes).unwrap_or(i64::MAX),
        kernel: body.kernel.clone(),
        initrd: body.initrd.clone(),
        cmdline: body.cmdline.clone(),
        gpu_driver_included: body.gpu_driver_included,
    };
    match state.store.register_image(&image).await {
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "image {:?} has a copy on host {} already",
                    image.name, image.host
                ),
            ));
        }
        other => other?,
    }
    state
        .store
        .audit(AuditRecord {
            actor: &admin.name,
            action: "image.register",
            subject: format!("image {}", image.name),
            before: None,
            after: Some(format!("{}:{}/{}", image.host, image.pool, image.volume)),
            detail: image
                .kernel
                .as_ref()
                .map(|kernel| format!("boots kernel {kernel}")),
        })
        .await?;
    // A new copy may be what a waiting request needs.
    if let Err(e) = state.vms.place_waiting().await {
        tracing::warn!(error = %e, "placing waiting requests failed");
    }
    Ok((StatusCode::CREATED, Json(image)).into_response())
}

async fn user_id(state: &AppState, name: &str) -> Result<i64, ApiError> {
    state
        .store
        .user_by_name(name)
        .await?
        .map(|u| u.id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no user {name:?}")))
}

/// A user's own quota (unset fields fall back to the configured quotas) (admins).
#[utoipa::path(get, path = "/api/v1/users/{name}/quota", tag = "admin",
    params(("name" = String, Path, description = "user name")),
    responses((status = 200, body = QuotaOverride), (status = 403), (status = 404)))]
pub(crate) async fn show_quota(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    Path(name): Path<String>,
) -> Result<Json<QuotaOverride>, ApiError> {
    let id = user_id(&state, &name).await?;
    Ok(Json(state.store.user_quota(id).await?))
}

/// Sets a user's own quota; all fields null removes it (admins).
#[utoipa::path(put, path = "/api/v1/users/{name}/quota", tag = "admin", request_body = QuotaOverride,
    params(("name" = String, Path, description = "user name")),
    responses((status = 200, body = QuotaOverride), (status = 403), (status = 404), (status = 422)))]
pub(crate) async fn set_quota(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
    Json(quota): Json<QuotaOverride>,
) -> Result<Json<QuotaOverride>, ApiError> {
    for (field, value, least) in [
        ("gpus", quota.gpus, 0),
        ("requests", quota.requests, 0),
        ("lease_hours", quota.lease_hours, 1),
    ] {
        if value.is_some_and(|v| v < least || v > 100_000) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{field}: must be between {least} and 100000"),
            ));
        }
    }
    let id = user_id(&state, &name).await?;
    let before = state.store.user_quota(id).await?;
    state.store.set_user_quota(id, &quota).await?;
    state
        .store
        .audit(AuditRecord {
            actor: &admin.name,
            action: "user.quota",
            subject: format!("user {name}"),
            before: Some(serde_json::to_string(&before).unwrap_or_default()),
            after: Some(serde_json::to_string(&quota).unwrap_or_default()),
            detail: None,
        })
        .await?;
    Ok(Json(quota))
}

/// Body of `PUT /api/v1/me/ssh-key`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SshKey {
    /// An OpenSSH public key line (`ssh-ed25519 AAAA... comment`), or null to remove it.
    pub key: Option<String>,
}

/// Sets the SSH public key put into your new VMs.
#[utoipa::path(put, path = "/api/v1/me/ssh-key", tag = "accounts", request_body = SshKey,
    responses((status = 204), (status = 401), (status = 422)))]
pub(crate) async fn set_ssh_key(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Json(body): Json<SshKey>,
) -> Result<StatusCode, ApiError> {
    let key = body.key.as_deref().map(str::trim);
    if let Some(key) = key {
        check_ssh_key(key).map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    }
    state.store.set_ssh_key(user.id, key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Accepts one OpenSSH public key line and nothing else.
pub(crate) fn check_ssh_key(key: &str) -> Result<(), String> {
    let mut parts = key.split_whitespace();
    let kind = parts.next().unwrap_or_default();
    let blob = parts.next().unwrap_or_default();
    let known =
        kind.starts_with("ssh-") || kind.starts_with("ecdsa-sha2-") || kind.starts_with("sk-");
    let base64 = blob
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
    if !known || !base64 || blob.len() < 16 || key.len() > 8192 || key.contains(['\n', '\r']) {
        return Err(
            "key: expected one OpenSSH public key line, e.g. ssh-ed25519 AAAA... you@laptop".into(),
        );
    }
    Ok(())
}

/// cloud-init's NoCloud documents for a VM, for the guest itself (the key is the credential).
async fn seed_document(
    State(state): State<AppState>,
    Path((id, key, document)): Path<(i64, String, String)>,
) -> Result<Response, ApiError> {
    let key = SeedKey::from_url(&key);
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "no such seed".into());
    let record = state
        .store
        .vm_by_seed(id, &key.hash())
        .await?
        .ok_or_else(not_found)?;
    let owner = state
        .store
        .vm(None, id)
        .await?
        .map(|v| v.owner)
        .ok_or_else(not_found)?;
    let host = state.vms.host_config(&record.host);
    // Without an agent binary the guest still gets its account; the agent is left out.
    let agent_sha256 = match state.vms.agent_binary().release().await {
        Ok(release) => Some(release.sha256),
        Err(e) => {
            tracing::warn!(vm = id, error = %e, "the VM's seed brings no agent");
            None
        }
    };
    let content = SeedContent {
        vm_id: id,
        user: owner,
        ssh_public_key: state.store.ssh_key(record.user_id).await?,
        server_url: state.vms.public_url().to_string(),
        agent_token: key.agent_token(),
        agent_sha256,
        agent_backend: host.map(|h| h.agent_backend).unwrap_or_default(),
        gpu_driver_included: state.store.vm_gpu_driver_included(id).await?,
    };
    let body = match document.as_str() {
        "meta-data" => content.meta_data(),
        "user-data" => content.user_data(),
        "vendor-data" | "network-config" => String::new(),
        _ => return Err(not_found()),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/yaml; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

/// The agent binary for guests: the file whose SHA-256 their seeds carry.
async fn agent_binary(State(state): State<AppState>) -> Result<Response, ApiError> {
    let release = state.vms.agent_binary().release().await.map_err(|e| {
        let status = match e {
            AgentBinaryError::Missing(_) => StatusCode::NOT_FOUND,
            AgentBinaryError::Read { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::HeaderName::from_static("x-checksum-sha256"),
                release.sha256,
            ),
        ],
        axum::body::Bytes::from_owner(release.bytes),
    )
        .into_response())
}
