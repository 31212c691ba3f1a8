//! GPU VMs and the audit log as the UI and the API see them, and the server functions of the
//! VM pages.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// A VM as its owner and the admins see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct VmView {
    /// Its id.
    pub id: i64,
    /// The request it was made for.
    pub request_id: i64,
    /// The owner's user name.
    pub owner: String,
    /// `provisioning`, `running`, `stopped`, `failed` or `released`.
    pub state: String,
    /// Why it failed or what it is waiting for.
    pub state_reason: Option<String>,
    /// The hypervisor host.
    pub host: String,
    /// The libvirt domain's name, once defined.
    pub domain: Option<String>,
    /// libvirt's domain type: `kvm`, `qemu`, `xen` or `test` (the simulated host).
    pub domain_type: Option<String>,
    /// GPU model.
    pub gpu_model: String,
    /// The PCI addresses of its GPUs.
    pub gpus: Vec<String>,
    /// Virtual CPUs.
    pub vcpus: i64,
    /// Memory in MiB.
    pub memory_mib: i64,
    /// Disk in GiB.
    pub disk_gib: i64,
    /// Base image.
    pub image: String,
    /// `kvm` or `xen`, as requested.
    pub hypervisor: String,
    /// When the lease ends (RFC 3339, UTC).
    pub lease_expires_at: String,
    /// The account to sign in with over SSH, with the owner's key.
    pub ssh_user: String,
    /// The address the guest got, as its agent reported it (none before the agent starts).
    #[serde(default)]
    pub ssh_address: Option<String>,
}

impl VmView {
    /// True while the VM holds its GPUs.
    pub fn is_live(&self) -> bool {
        matches!(self.state.as_str(), "provisioning" | "running" | "stopped")
    }
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Its id (increasing).
    pub id: i64,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Who: a user name, or `system` for the server's own tasks.
    pub actor: String,
    /// What, e.g. `request.approve`, `vm.release`, `vm.lease_expired`.
    pub action: String,
    /// On what, e.g. `request 3`, `vm 2`, `user alice`.
    pub subject: String,
    /// The state before, when it changed.
    pub before: Option<String>,
    /// The state after.
    pub after: Option<String>,
    /// Anything else worth keeping (a reason, the GPUs, a domain's XML).
    pub detail: Option<String>,
}

/// Filters of the audit log; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::IntoParams))]
pub struct AuditFilter {
    /// Only this actor.
    #[serde(default)]
    pub actor: Option<String>,
    /// Only actions starting with this, e.g. `vm.`.
    #[serde(default)]
    pub action: Option<String>,
    /// Only this subject, e.g. `vm 2`.
    #[serde(default)]
    pub subject: Option<String>,
}

/// The viewer's VMs (admins: everyone's), newest first.
#[server(endpoint = "vms/list")]
pub async fn load_vms() -> Result<Vec<VmView>, ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal.0.vms(viewer).await.map_err(crate::service::refused)
}

/// One VM, if the viewer may see it.
#[server(endpoint = "vms/show")]
pub async fn load_vm(id: i64) -> Result<Option<VmView>, ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .vm(viewer, id)
        .await
        .map_err(crate::service::refused)
}

/// Starts, stops, reboots or releases a VM (its owner or an admin); admins also `extend` the
/// lease by `hours`, and `attach` or `detach` the GPU at PCI address `gpu`.
#[server(endpoint = "vms/act")]
pub async fn act_on_vm(
    id: i64,
    action: String,
    hours: Option<i64>,
    gpu: Option<String>,
) -> Result<(), ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .vm_action(viewer, id, action, hours, gpu)
        .await
        .map_err(crate::service::refused)
}

/// Stores the viewer's SSH public key (empty removes it).
#[server(endpoint = "me/ssh-key")]
pub async fn save_ssh_key(key: String) -> Result<(), ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .set_ssh_key(viewer, key)
        .await
        .map_err(crate::service::refused)
}

/// The audit log, newest first (admins).
#[server(endpoint = "audit/list")]
pub async fn load_audit(filter: AuditFilter) -> Result<Vec<AuditEntry>, ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    if !viewer.is_admin {
        return Err(crate::service::refused(
            crate::service::Refusal::admins_only("only admins read the audit log"),
        ));
    }
    portal
        .0
        .audit(filter)
        .await
        .map_err(crate::service::refused)
}
