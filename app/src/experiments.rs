//! Experiments as the UI and the API see them: what a user asks for (benchmarks, targets,
//! repetitions), how far it got, and its results summarised per benchmark, figure and target,
//! with the overhead of each VM against the native baseline. The server functions of the
//! experiment pages are here too.

use std::collections::BTreeMap;

use leptos::prelude::*;
use leptos::server_fn::codec::Json;
use serde::{Deserialize, Deserializer, Serialize};

/// The repetitions an experiment gets when none are given.
pub const DEFAULT_REPETITIONS: i64 = 5;
/// The most repetitions one experiment may ask for.
pub const MAX_REPETITIONS: i64 = 100;

/// What a user asks for: `POST /api/v1/experiments`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ExperimentForm {
    /// For people: 1 to 200 characters.
    pub name: String,
    /// The benchmarks: plugins with parameters. Either these or `preset`.
    #[serde(default)]
    pub plugins: Vec<BenchmarkChoice>,
    /// `study`: the 2012 study's ten programs at its sizes.
    #[serde(default)]
    pub preset: Option<String>,
    /// Where they run.
    pub targets: Vec<TargetChoice>,
    /// How often every benchmark runs on every target: 1 to 100 (default 5).
    #[serde(default = "default_repetitions")]
    pub repetitions: i64,
}

fn default_repetitions() -> i64 {
    DEFAULT_REPETITIONS
}

/// One benchmark of an experiment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct BenchmarkChoice {
    /// The plugin's name (its newest version runs).
    pub plugin: String,
    /// Parameters by name (`"elements": "64Mi"` or `"elements": 1024`); the rest take defaults.
    #[serde(default, deserialize_with = "text_values")]
    #[cfg_attr(feature = "ssr", schema(value_type = BTreeMap<String, String>))]
    pub params: BTreeMap<String, String>,
    /// A label for the charts; the plugin's name with its parameters when absent.
    #[serde(default)]
    pub label: Option<String>,
}

/// Parameter values may be given as text, numbers or booleans; all are kept as text.
fn text_values<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            serde_json::Value::Number(n) => Ok((k, n.to_string())),
            serde_json::Value::Bool(b) => Ok((k, b.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "parameter {k}: expected text, a number or a boolean, got {other}"
            ))),
        })
        .collect()
}

/// A target: an agent the user may use (`{"agent": 3}`: a VM's or a native host's), or VMs the
/// portal makes for the experiment (`{"variant": {...}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum TargetChoice {
    /// An existing agent, by id.
    Agent {
        /// The agent's id.
        agent: i64,
    },
    /// VMs made through the request path, one per vCPU count and hypervisor.
    Variant {
        /// Their shape.
        variant: VariantChoice,
    },
}

/// VMs the portal requests for an experiment and releases when it ends: one per vCPU count and
/// hypervisor, each through the normal request path (quotas apply; admins approve).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct VariantChoice {
    /// One of the user's requests whose GPU model and count, memory, disk and image they copy.
    #[serde(default)]
    pub request: Option<i64>,
    /// The GPU model (without `request`).
    #[serde(default)]
    pub gpu_model: Option<String>,
    /// GPUs per VM (default 1).
    #[serde(default)]
    pub gpu_count: Option<i64>,
    /// The image (default: the first that has the GPU driver).
    #[serde(default)]
    pub image: Option<String>,
    /// Memory per VM in MiB (default 8192).
    #[serde(default)]
    pub memory_mib: Option<i64>,
    /// Disk per VM in GiB (default 20).
    #[serde(default)]
    pub disk_gib: Option<i64>,
    /// vCPU counts, one VM each (default 1, 2 and 4, as in the study).
    #[serde(default)]
    pub vcpus: Vec<i64>,
    /// `kvm`, `xen` (default: each that a host with the model offers).
    #[serde(default)]
    pub hypervisors: Vec<String>,
}

/// Where an experiment stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ExperimentSummary {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Who made it.
    pub owner: String,
    /// `preparing` (its VMs are being made), `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// `study` when it is the study's suite.
    pub preset: Option<String>,
    /// Repetitions asked for.
    pub repetitions: i64,
    /// Repetitions queued so far (the current one included).
    pub repetition: i64,
    /// Jobs of the whole matrix.
    pub jobs_total: i64,
    /// Jobs ended (succeeded, failed or cancelled).
    pub jobs_done: i64,
    /// Jobs that failed or were cancelled.
    pub jobs_failed: i64,
    /// What it waits for, or why it ended.
    pub note: Option<String>,
    /// When it was made (RFC 3339, UTC).
    pub created_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// True when a target runs on a simulated GPU: its figures are not measurements.
    pub simulated: bool,
}

impl ExperimentSummary {
    /// True once it can no longer change.
    pub fn is_finished(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }

    /// Ended jobs as a fraction of the matrix.
    pub fn fraction(&self) -> f64 {
        if self.jobs_total == 0 {
            0.0
        } else {
            self.jobs_done as f64 / self.jobs_total as f64
        }
    }
}

/// One benchmark of an experiment, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct BenchmarkView {
    /// Its place in the experiment.
    pub position: i64,
    /// e.g. `VecAdd 1024`.
    pub label: String,
    /// The plugin.
    pub plugin: String,
    /// The plugin's version.
    pub plugin_version: String,
    /// Every parameter, resolved.
    pub params: Vec<(String, String)>,
}

/// One target of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct TargetView {
    /// Its place in the experiment (the charts' order).
    pub position: i64,
    /// e.g. `native host gpu-01`, `KVM 2 vCPU`.
    pub label: String,
    /// `native`, `vm` (a VM the user had) or `variant` (a VM made for the experiment).
    pub kind: String,
    /// The agent that runs its jobs, once there is one.
    pub agent_id: Option<i64>,
    /// A variant's request.
    pub request_id: Option<i64>,
    /// Its VM, if it is one.
    pub vm_id: Option<i64>,
    /// The GPU model.
    pub gpu_model: Option<String>,
    /// A VM's vCPUs.
    pub vcpus: Option<i64>,
    /// A VM's hypervisor (`kvm`, `xen`).
    pub hypervisor: Option<String>,
    /// Where it stands: `ready`, `waiting for approval of request 7`, `released`, ...
    pub status: String,
}

impl TargetView {
    /// True for a VM (the user's or a variant).
    pub fn is_vm(&self) -> bool {
        self.kind != "native"
    }
}

/// One sample: a figure of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Sample {
    /// The job.
    pub job: i64,
    /// Its repetition (1-based).
    pub repetition: i64,
    /// The value (the job's median when it reported the figure several times).
    pub value: f64,
}

/// One target's samples of one figure, summarised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Cell {
    /// The target's position.
    pub target: i64,
    /// Samples.
    pub n: i64,
    /// Median.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// First quartile.
    pub q1: f64,
    /// Third quartile.
    pub q3: f64,
    /// Every sample.
    pub samples: Vec<Sample>,
}

/// One figure (a metric of a benchmark, or its real, user or system time) across the targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Figure {
    /// The benchmark's position.
    pub benchmark: i64,
    /// The benchmark's label.
    pub benchmark_label: String,
    /// e.g. `H2D bandwidth`, `real time`.
    pub metric: String,
    /// e.g. `GB/s`, `s`.
    pub unit: String,
    /// One per target that has samples.
    pub cells: Vec<Cell>,
}

/// A VM target's figure against the native baseline's: VM − native, with a 95% interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Overhead {
    /// The benchmark's position.
    pub benchmark: i64,
    /// The benchmark's label.
    pub benchmark_label: String,
    /// The figure.
    pub metric: String,
    /// Its unit.
    pub unit: String,
    /// The VM target's position.
    pub target: i64,
    /// The native target's position.
    pub baseline: i64,
    /// VM median − native median, in `unit`.
    pub absolute: f64,
    /// `absolute` over the native median.
    pub relative: Option<f64>,
    /// The 95% interval of `absolute` (bootstrap), when both sides have 2 samples or more.
    pub low: Option<f64>,
    /// Its upper end.
    pub high: Option<f64>,
    /// The 95% interval of `relative`.
    pub relative_low: Option<f64>,
    /// Its upper end.
    pub relative_high: Option<f64>,
    /// True only when the interval excludes zero: a difference, not noise.
    pub significant: bool,
}

/// A chart of the results, at a stable URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ChartLink {
    /// Its name in the URL.
    pub name: String,
    /// Its title.
    pub title: String,
    /// Which section of the report it belongs to: `times`, `bandwidth`, `sizes`, `figures`,
    /// `overhead`.
    pub section: String,
    /// `/api/v1/experiments/{id}/charts/{name}.svg`.
    pub url: String,
    /// The figures it draws: `(benchmark position, metric)`.
    pub figures: Vec<(i64, String)>,
}

/// An experiment with its matrix and results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ExperimentView {
    /// Where it stands.
    pub summary: ExperimentSummary,
    /// The benchmarks.
    pub benchmarks: Vec<BenchmarkView>,
    /// The targets.
    pub targets: Vec<TargetView>,
    /// Every figure, per benchmark.
    pub figures: Vec<Figure>,
    /// The VMs against the native baseline (the first native target).
    pub overheads: Vec<Overhead>,
    /// The charts.
    pub charts: Vec<ChartLink>,
}

impl ExperimentView {
    /// The target at `position`.
    pub fn target(&self, position: i64) -> Option<&TargetView> {
        self.targets.iter().find(|t| t.position == position)
    }
}

/// One figure of two experiments side by side, for targets of the same role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ComparisonRow {
    /// The benchmark's label.
    pub benchmark_label: String,
    /// The figure.
    pub metric: String,
    /// Its unit.
    pub unit: String,
    /// The role both targets have (e.g. `native`, `KVM 2 vCPU`).
    pub role: String,
    /// The first experiment's median.
    pub a: f64,
    /// The second's.
    pub b: f64,
    /// b − a with its interval, as an overhead of b against a.
    pub difference: Overhead,
}

/// Two experiments compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Comparison {
    /// The first.
    pub a: ExperimentSummary,
    /// The second.
    pub b: ExperimentSummary,
    /// Every figure both have, for every role both have.
    pub rows: Vec<ComparisonRow>,
}

/// The viewer's experiments (admins: everyone's), newest first.
#[server(endpoint = "experiments/list")]
pub async fn load_experiments() -> Result<Vec<ExperimentSummary>, ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .experiments(viewer)
        .await
        .map_err(crate::service::refused)
}

/// One experiment with its results, if the viewer may see it.
#[server(endpoint = "experiments/show")]
pub async fn load_experiment(id: i64) -> Result<Option<ExperimentView>, ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .experiment(viewer, id)
        .await
        .map_err(crate::service::refused)
}

/// Makes an experiment; returns its id.
#[server(endpoint = "experiments/create", input = Json)]
pub async fn create_experiment(form: ExperimentForm) -> Result<i64, ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .create_experiment(viewer, form)
        .await
        .map_err(crate::service::refused)
}

/// Cancels an experiment: its queued and running jobs stop, its VMs are released.
#[server(endpoint = "experiments/cancel")]
pub async fn cancel_experiment(id: i64) -> Result<(), ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .cancel_experiment(viewer, id)
        .await
        .map_err(crate::service::refused)
}

/// Approves every pending request of an experiment's VMs at once (admins).
#[server(endpoint = "experiments/approve")]
pub async fn approve_experiment(id: i64) -> Result<(), ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .approve_experiment(viewer, id)
        .await
        .map_err(crate::service::refused)
}

/// Two experiments compared, figure by figure.
#[server(endpoint = "experiments/compare")]
pub async fn compare_experiments(a: i64, b: i64) -> Result<Comparison, ServerFnError> {
    let (portal, viewer) = crate::inventory::signed_in_viewer().await?;
    portal
        .0
        .compare_experiments(viewer, a, b)
        .await
        .map_err(crate::service::refused)
}
