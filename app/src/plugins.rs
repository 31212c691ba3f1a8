//! Plugins, the agents that run them and the jobs they run, as the UI and the API see them, and
//! the server functions of the plugin and job pages.

use leptos::prelude::*;
use leptos::server_fn::codec::Json;
use serde::{Deserialize, Serialize};

/// One parameter of a plugin, from its own `describe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ParamView {
    /// Name used in forms and on the agent's command line.
    pub name: String,
    /// What it means.
    pub summary: String,
    /// `integer`, `float`, `boolean` or `text`.
    pub kind: String,
    /// The value used when none is given.
    pub default: String,
    /// Smallest accepted value.
    pub min: Option<f64>,
    /// Largest accepted value.
    pub max: Option<f64>,
    /// Unit of the value; empty when none.
    pub unit: String,
}

/// A registered plugin version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct PluginView {
    /// Its id.
    pub id: i64,
    /// Its name, from `describe`.
    pub name: String,
    /// Its version, from `describe`.
    pub version: String,
    /// What it does, from `describe`.
    pub summary: String,
    /// SHA-256 of the component, hex.
    pub sha256: String,
    /// Size of the component in bytes.
    pub size_bytes: i64,
    /// True for the plugins that come with Passage.
    pub shipped: bool,
    /// True when a job of it runs on every GPU of its machine at once (it imports `peers`).
    pub all_gpus: bool,
    /// Who registered it (`system` for the shipped ones).
    pub uploaded_by: String,
    /// When (RFC 3339, UTC).
    pub created_at: String,
    /// Its parameters.
    pub params: Vec<ParamView>,
}

/// A GPU as an agent's CUDA (or simulated) backend sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct DeviceView {
    /// The agent's device index (CUDA ordinal).
    pub index: i64,
    /// Marketing name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// PCI bus id as the machine running the agent sees it.
    pub pci_bus_id: String,
    /// Device memory in bytes.
    pub total_memory: u64,
    /// Compute capability, e.g. `9.0`.
    pub compute_capability: String,
    /// True on the simulated backend.
    pub simulated: bool,
}

/// An agent: the one in a VM, or one on a bare-metal host registered as a native baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct AgentView {
    /// Its id.
    pub id: i64,
    /// `vm` or `host`.
    pub kind: String,
    /// `vm-<id>`, or the name an admin gave the host.
    pub name: String,
    /// The VM it runs in.
    pub vm_id: Option<i64>,
    /// The VM's owner.
    pub owner: Option<String>,
    /// `waiting` (never connected), `online`, `offline` or `revoked`.
    pub status: String,
    /// When it last called the portal (RFC 3339, UTC).
    pub last_seen_at: Option<String>,
    /// The machine's host name, as the agent reported it.
    pub hostname: Option<String>,
    /// The agent's version.
    pub agent_version: Option<String>,
    /// `cuda` or `fake`.
    pub backend: Option<String>,
    /// The GPUs it reported.
    pub devices: Vec<DeviceView>,
    /// For VM agents: whether the guest sees the GPUs that were passed through, in words.
    pub verification: Option<String>,
    /// The machine's IP addresses, as the agent reported them (first: the one it reaches the
    /// portal from).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The account the agent runs as, e.g. `passage-agent (uid 998)`.
    #[serde(default)]
    pub run_as: Option<String>,
    /// Why the agent could not use the CUDA driver (none installed, none loaded), when it could not.
    #[serde(default)]
    pub cuda_problem: Option<String>,
}

impl AgentView {
    /// A label for lists, e.g. `VM 3 (alice)` or `native host gpu-01`.
    pub fn label(&self) -> String {
        target_label(self.vm_id, self.owner.as_deref(), &self.name)
    }
}

/// Where an agent runs, for people: `VM 3 (alice)` for a VM's agent, `native host gpu-01` for a
/// bare-metal host's.
pub fn target_label(vm_id: Option<i64>, owner: Option<&str>, name: &str) -> String {
    match (vm_id, owner) {
        (Some(vm), Some(owner)) => format!("VM {vm} ({owner})"),
        (Some(vm), None) => format!("VM {vm}"),
        _ => format!("native host {name}"),
    }
}

/// One figure a plugin reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct MetricView {
    /// e.g. `H2D bandwidth`.
    pub name: String,
    /// The value.
    pub value: f64,
    /// e.g. `GB/s`.
    pub unit: String,
}

/// The figures of one name: every sample reported under it, summarised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct MetricSummary {
    /// The metric's name.
    pub name: String,
    /// Its unit.
    pub unit: String,
    /// How many samples.
    pub samples: usize,
    /// Median of the samples.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

/// Summarises metrics by name and unit, in the order they were first reported.
pub fn summarise(metrics: &[MetricView]) -> Vec<MetricSummary> {
    let mut groups: Vec<(String, String, Vec<f64>)> = Vec::new();
    for m in metrics {
        match groups
            .iter_mut()
            .find(|(name, unit, _)| *name == m.name && *unit == m.unit)
        {
            Some((_, _, values)) => values.push(m.value),
            None => groups.push((m.name.clone(), m.unit.clone(), vec![m.value])),
        }
    }
    groups
        .into_iter()
        .map(|(name, unit, mut values)| {
            values.sort_by(f64::total_cmp);
            let n = values.len();
            let median = if n % 2 == 1 {
                values[n / 2]
            } else {
                (values[n / 2 - 1] + values[n / 2]) / 2.0
            };
            MetricSummary {
                name,
                unit,
                samples: n,
                median,
                min: values[0],
                max: values[n - 1],
            }
        })
        .collect()
}

/// A line of a run's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct LogLine {
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// The line.
    pub message: String,
}

/// What a finished run produced, as the agent posted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct JobResult {
    /// True when the GPU was simulated: the figures are not measurements.
    pub simulated: bool,
    /// The GPUs it ran on.
    pub devices: Vec<DeviceView>,
    /// Every figure, in the order reported.
    pub metrics: Vec<MetricView>,
    /// The run's log.
    pub logs: Vec<LogLine>,
    /// Wall-clock seconds of the run's process.
    pub wall_s: f64,
    /// CPU seconds in user mode.
    pub user_s: f64,
    /// CPU seconds in the kernel.
    pub system_s: f64,
    /// GPU objects the plugin did not free (the host freed them).
    pub leftovers: String,
}

/// A job: one plugin run on one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct JobView {
    /// Its id.
    pub id: i64,
    /// The plugin's id.
    pub plugin_id: i64,
    /// The plugin's name.
    pub plugin: String,
    /// The plugin's version.
    pub plugin_version: String,
    /// The agent's id.
    pub agent_id: i64,
    /// Where it runs, e.g. `VM 3 (alice)` or `native host gpu-01`.
    pub target: String,
    /// `vm` or `host`.
    pub target_kind: String,
    /// A label, e.g. the study's name for the run (`VecAdd 1024`).
    pub label: Option<String>,
    /// The batch it was queued with (the study's suite).
    pub batch: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// From 0 to 1.
    pub progress: f64,
    /// The plugin's last progress note.
    pub progress_note: Option<String>,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// Who queued it.
    pub requested_by: String,
    /// Every parameter, defaults filled in, in the plugin's order.
    pub params: Vec<(String, String)>,
    /// The GPU index asked for; none for any free one.
    pub device_wanted: Option<i64>,
    /// The device indexes it ran on.
    pub devices: Option<String>,
    /// When it was queued (RFC 3339, UTC).
    pub created_at: String,
    /// When an agent took it.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// What it produced, once it succeeded (or failed with figures).
    pub result: Option<JobResult>,
    /// The result's metrics summarised by name.
    pub summary: Vec<MetricSummary>,
}

impl JobView {
    /// True once it can no longer change.
    pub fn is_finished(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

/// What a person asks for when they run a plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct JobOrder {
    /// The plugin's id.
    pub plugin: i64,
    /// The agent's id.
    pub agent: i64,
    /// `any` (one free GPU), `each` (one job per GPU), or one GPU the agent reports: its index or
    /// its PCI address.
    #[serde(default)]
    pub gpu: Option<String>,
    /// Parameters by name, as text (`64Mi`, `true`, `0.5`); the rest take their defaults.
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
}

/// Filters of the job list; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::IntoParams))]
pub struct JobFilter {
    /// Only jobs on this agent.
    #[serde(default)]
    pub agent: Option<i64>,
    /// Only jobs of this plugin name.
    #[serde(default)]
    pub plugin: Option<String>,
    /// Only jobs of this batch.
    #[serde(default)]
    pub batch: Option<String>,
    /// Only jobs in this state.
    #[serde(default)]
    pub state: Option<String>,
    /// With each job's result (its figures and log); without, the list stays small.
    #[serde(default)]
    pub results: bool,
}

/// Every registered plugin version, by name then newest first.
#[server(endpoint = "plugins/list")]
pub async fn load_plugins() -> Result<Vec<PluginView>, ServerFnError> {
    let (portal, _) = crate::inventory::signed_in_viewer().await?;
    portal.0.plugins().await.map_err(crate::service::refused)
}

/// One plugin version.
#[server(endpoint = "plugins/show")]
pub async fn load_plugin(id: i64) -> Result<Option<PluginView>, ServerFnError> {
    let (portal, _) = crate::inventory::signed_in_viewer().await?;
    portal.0.plugin(id).await.map_err(crate::service::refused)
}

/// The agents the viewer may run plugins on: their own VMs' and the native hosts (admins: all).
#[server(endpoint = "agents/list")]
pub async fn load_agents() -> Result<Vec<AgentView>, ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .agents(viewer)
        .await
        .map_err(crate::service::refused)
}

/// Registers a bare-metal host as a native baseline (admins); returns the agent's token, shown
/// this once.
#[server(endpoint = "agents/add")]
pub async fn add_native_host(name: String) -> Result<String, ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .add_native_host(viewer, name)
        .await
        .map_err(crate::service::refused)
}

/// Revokes a native host's agent token (admins).
#[server(endpoint = "agents/revoke")]
pub async fn revoke_agent(id: i64) -> Result<(), ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .revoke_agent(viewer, id)
        .await
        .map_err(crate::service::refused)
}

/// Queues a plugin run; returns the new jobs' ids (several when `gpu` is `each`).
#[server(endpoint = "jobs/queue", input = Json)]
pub async fn queue_job(order: JobOrder) -> Result<Vec<i64>, ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .queue_job(viewer, order)
        .await
        .map_err(crate::service::refused)
}

/// Queues the study's whole suite on an agent; returns the batch's name.
#[server(endpoint = "jobs/suite")]
pub async fn queue_suite(agent: i64) -> Result<String, ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .queue_suite(viewer, agent)
        .await
        .map_err(crate::service::refused)
}

/// The jobs the viewer may see, newest first.
#[server(endpoint = "jobs/list", input = Json)]
pub async fn load_jobs(filter: JobFilter) -> Result<Vec<JobView>, ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .jobs(viewer, filter)
        .await
        .map_err(crate::service::refused)
}

/// One job, if the viewer may see it.
#[server(endpoint = "jobs/show")]
pub async fn load_job(id: i64) -> Result<Option<JobView>, ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .job(viewer, id)
        .await
        .map_err(crate::service::refused)
}

/// Cancels a queued or running job (whoever queued it, or an admin).
#[server(endpoint = "jobs/cancel")]
pub async fn cancel_job(id: i64) -> Result<(), ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .cancel_job(viewer, id)
        .await
        .map_err(crate::service::refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(name: &str, value: f64) -> MetricView {
        MetricView {
            name: name.into(),
            value,
            unit: "GB/s".into(),
        }
    }

    #[test]
    fn repeated_metrics_are_summarised_by_median_and_range() {
        let summary = summarise(&[
            metric("h2d", 3.0),
            metric("d2h", 7.0),
            metric("h2d", 1.0),
            metric("h2d", 2.0),
            metric("h2d", 10.0),
        ]);
        assert_eq!(summary.len(), 2);
        assert_eq!(summary[0].name, "h2d");
        assert_eq!(
            (
                summary[0].samples,
                summary[0].median,
                summary[0].min,
                summary[0].max
            ),
            (4, 2.5, 1.0, 10.0)
        );
        assert_eq!((summary[1].samples, summary[1].median), (1, 7.0));
    }
}
