//! What the portal shows of its hypervisor hosts and their GPUs.
//!
//! These types are the JSON of `/api/v1/hosts` and `/api/v1/gpus` and what the hosts page renders,
//! so the browser, scripts and the server agree on one shape. The server functions at the bottom
//! let the hydrated page read and refresh the inventory.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// A configured hypervisor host and how its last inventory pass went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct HostView {
    /// The name given in the configuration.
    pub name: String,
    /// The libvirt URI (admins only: `null` for everyone else).
    pub uri: Option<String>,
    /// `reachable`, `unreachable`, or `pending` before the first attempt.
    pub state: HostState,
    /// The host's own name, as libvirt last reported it (admins only).
    pub hostname: Option<String>,
    /// The hypervisor driver (`QEMU`, `Xen`, `TEST`) (admins only).
    pub driver: Option<String>,
    /// libvirt's version on the host (admins only).
    pub libvirt_version: Option<String>,
    /// When the inventory last succeeded (UTC, RFC 3339).
    pub last_refresh: Option<String>,
    /// When the inventory was last attempted (UTC, RFC 3339).
    pub last_attempt: Option<String>,
    /// libvirt's message from the last failed attempt, while the host is unreachable (admins
    /// only: others see the state alone).
    pub error: Option<String>,
    /// How many GPUs the host had at its last successful inventory.
    pub gpu_count: usize,
    /// Why no GPU of this host can be passed through (no IOMMU, no VFIO in libvirt), as its
    /// last inventory found; `None` when nothing on the host level stands in the way.
    pub passthrough_problem: Option<String>,
    /// How long this host's VMs of the last 30 days took to come up (admins only; `null` for
    /// everyone else, and while no VM has run there).
    #[serde(default)]
    pub startup: Option<StartupTimes>,
}

/// How long VMs took to come up on one host, over the VMs that reached `running`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct StartupTimes {
    /// How many VMs the figures cover.
    pub vms: usize,
    /// From the request being filed to its VM running: what the requester waits, approval
    /// and waiting for GPUs included.
    pub request_to_running: Spread,
    /// From the request getting its GPUs to its VM running: what provisioning costs (`null`
    /// while no request's placement time is known).
    pub placed_to_running: Option<Spread>,
}

/// The median and 90th percentile of a set of durations, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Spread {
    /// Half took at most this long.
    pub median_s: f64,
    /// Nine in ten took at most this long.
    pub p90_s: f64,
}

impl Spread {
    /// The spread of `seconds` (empty: `None`). Percentiles are the nearest rank.
    pub fn of(mut seconds: Vec<f64>) -> Option<Spread> {
        if seconds.is_empty() {
            return None;
        }
        seconds.sort_by(f64::total_cmp);
        let rank = |q: f64| seconds[((q * seconds.len() as f64).ceil() as usize).max(1) - 1];
        Some(Spread {
            median_s: rank(0.5),
            p90_s: rank(0.9),
        })
    }

    /// As shown on a page: `median 12 s, p90 40 s`.
    pub fn describe(&self) -> String {
        format!(
            "median {}, p90 {}",
            duration_text(self.median_s),
            duration_text(self.p90_s)
        )
    }
}

/// Seconds as a person reads them: `0.4 s`, `12 s`, `3 min 5 s`, `2 h 10 min`.
fn duration_text(seconds: f64) -> String {
    if seconds < 10.0 {
        return format!("{seconds:.1} s");
    }
    let whole = seconds.round() as u64;
    match whole {
        0..60 => format!("{whole} s"),
        60..3600 => format!("{} min {} s", whole / 60, whole % 60),
        _ => format!("{} h {} min", whole / 3600, (whole % 3600) / 60),
    }
}

/// Whether a host answered its last inventory pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum HostState {
    /// Not attempted yet.
    Pending,
    /// The last attempt succeeded.
    Reachable,
    /// The last attempt failed; `error` says why. GPUs keep their last known state.
    Unreachable,
}

impl HostView {
    /// What people who are not admins see of a host: its name, state, GPU count, times and why
    /// it cannot pass GPUs through; not its URI, libvirt's words or its software.
    pub fn without_internals(self) -> HostView {
        HostView {
            uri: None,
            hostname: None,
            driver: None,
            libvirt_version: None,
            error: None,
            startup: None,
            ..self
        }
    }
}

impl HostState {
    /// The word shown to people and used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Pending => "pending",
            HostState::Reachable => "reachable",
            HostState::Unreachable => "unreachable",
        }
    }
}

/// A passthrough GPU on one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct GpuView {
    /// The host's configured name.
    pub host: String,
    /// PCI address, `dddd:bb:ss.f`.
    pub address: String,
    /// libvirt's node-device name.
    pub node_device: String,
    /// PCI vendor id, `0x10de`.
    pub vendor_id: String,
    /// Vendor name.
    pub vendor_name: String,
    /// PCI device id, e.g. `0x2331`.
    pub product_id: String,
    /// Full product name from the PCI database.
    pub product_name: String,
    /// Short model name used in requests, e.g. `H100 PCIe`.
    pub model: String,
    /// PCI class code, e.g. `0x030200`.
    pub class_code: String,
    /// NUMA node, when the host reports one.
    pub numa_node: Option<i64>,
    /// PCIe link, when the host reports it.
    pub link: Option<LinkView>,
    /// Host driver bound at the last inventory, when known.
    pub driver: Option<String>,
    /// The IOMMU group and all of its members.
    pub iommu_group: Option<IommuGroupView>,
    /// The root port above it: GPUs that share one are behind the same PCIe switch.
    pub pcie_root: Option<String>,
    /// Every function a VM receives with this GPU (the GPU first).
    pub passthrough_functions: Vec<String>,
    /// Whether it can be given to a VM now.
    pub state: GpuState,
    /// Why it is not available, when it is not.
    pub state_reason: Option<String>,
    /// When the GPU was last seen in an inventory (UTC, RFC 3339).
    pub last_seen: String,
}

/// A PCIe link: negotiated and maximum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct LinkView {
    /// The negotiated link, e.g. `PCIe Gen5 x16`.
    pub current: Option<String>,
    /// The most the device supports.
    pub max: Option<String>,
    /// Negotiated speed per lane in GT/s.
    pub speed_gts: Option<f64>,
    /// Negotiated lane count.
    pub width: Option<i64>,
    /// True when the negotiated link is slower or narrower than the device supports.
    pub degraded: bool,
}

/// An IOMMU group: the GPU and everything that must go to a VM with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct IommuGroupView {
    /// The group number on its host.
    pub number: i64,
    /// Every function of the group.
    pub members: Vec<IommuMemberView>,
}

/// One function of an IOMMU group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct IommuMemberView {
    /// PCI address.
    pub address: String,
    /// Product name or class.
    pub description: String,
    /// Class label, e.g. `Audio device`.
    pub class: String,
    /// Bridges stay with the host.
    pub is_bridge: bool,
    /// A function of the GPU's own device (e.g. its audio function).
    pub same_device: bool,
}

/// Whether a GPU can be given to a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum GpuState {
    /// Free and assignable.
    Available,
    /// Held by a request (with its whole IOMMU group).
    Claimed,
    /// Present but cannot be passed through (e.g. no IOMMU group).
    Unassignable,
    /// Its host did not answer the last inventory; this is the last known state.
    HostUnreachable,
    /// Not seen in the host's last inventory (removed, or fell off the bus).
    Missing,
}

impl GpuState {
    /// The word shown to people and used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            GpuState::Available => "available",
            GpuState::Claimed => "claimed",
            GpuState::Unassignable => "unassignable",
            GpuState::HostUnreachable => "host-unreachable",
            GpuState::Missing => "missing",
        }
    }
}

/// Who is looking at a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Viewer {
    /// Database id.
    pub id: i64,
    /// Login name.
    pub name: String,
    /// Admins may refresh the inventory (and, later, approve requests).
    pub is_admin: bool,
}

/// Hosts and GPUs in one read, as the hosts page needs them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct InventoryView {
    /// Who asked.
    pub viewer: Viewer,
    /// Every configured host, by name.
    pub hosts: Vec<HostView>,
    /// Every GPU known on those hosts, by host and address.
    pub gpus: Vec<GpuView>,
}

/// Server-side access to the inventory, provided to server functions through context.
/// The service and the signed-in user of the current request.
#[cfg(feature = "ssr")]
pub(crate) async fn signed_in() -> Result<(crate::service::Portal, Option<Viewer>), ServerFnError> {
    let service = use_context::<crate::service::Portal>()
        .ok_or_else(|| ServerFnError::new("portal service missing from context"))?;
    let headers: axum::http::HeaderMap = leptos_axum::extract().await?;
    let viewer = service
        .0
        .viewer(&headers)
        .await
        .map_err(crate::service::refused)?;
    Ok((service, viewer))
}

/// The service and the signed-in user, or an error for nobody signed in.
#[cfg(feature = "ssr")]
pub(crate) async fn signed_in_viewer() -> Result<(crate::service::Portal, Viewer), ServerFnError> {
    match signed_in().await? {
        (portal, Some(viewer)) => Ok((portal, viewer)),
        (_, None) => Err(crate::service::refused(crate::service::Refusal::sign_in())),
    }
}

/// Who is signed in, if anyone.
#[server]
pub async fn current_viewer() -> Result<Option<Viewer>, ServerFnError> {
    Ok(signed_in().await?.1)
}

/// Reads the inventory of every host; `None` when nobody is signed in.
#[server]
pub async fn load_inventory() -> Result<Option<InventoryView>, ServerFnError> {
    let (service, viewer) = signed_in().await?;
    match viewer {
        Some(viewer) => Ok(Some(
            service
                .0
                .snapshot(viewer)
                .await
                .map_err(crate::service::refused)?,
        )),
        None => Ok(None),
    }
}

/// Refreshes every host's inventory now (admins only).
#[server]
pub async fn refresh_inventory() -> Result<(), ServerFnError> {
    let (service, viewer) = signed_in().await?;
    match viewer {
        Some(viewer) if viewer.is_admin => {
            service.0.refresh().await.map_err(crate::service::refused)
        }
        Some(_) => Err(crate::service::refused(
            crate::service::Refusal::admins_only("only admins can refresh the inventory"),
        )),
        None => Err(crate::service::refused(crate::service::Refusal::sign_in())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_is_the_nearest_rank_median_and_p90() {
        assert_eq!(Spread::of(vec![]), None);
        let one = Spread::of(vec![4.0]).unwrap();
        assert_eq!((one.median_s, one.p90_s), (4.0, 4.0));
        let ten = Spread::of((1..=10).rev().map(f64::from).collect()).unwrap();
        assert_eq!((ten.median_s, ten.p90_s), (5.0, 9.0));
        assert_eq!(ten.describe(), "median 5.0 s, p90 9.0 s");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration_text(0.42), "0.4 s");
        assert_eq!(duration_text(12.4), "12 s");
        assert_eq!(duration_text(185.0), "3 min 5 s");
        assert_eq!(duration_text(7_800.0), "2 h 10 min");
    }
}
