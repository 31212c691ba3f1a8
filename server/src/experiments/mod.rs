//! Experiments: the same benchmarks on several targets, repeated, and compared.
//!
//! A user names benchmarks (plugins with parameters, or the study's suite), targets (agents they
//! may use, and *variants*: VMs the portal requests for the experiment through the normal
//! request path, one per vCPU count and hypervisor) and a number of repetitions. The experiment
//! is `preparing` until every target's agent reports its GPUs, then `running`: one repetition is
//! queued at a time, every target in it, with the order of benchmarks and targets rotated from
//! one repetition to the next so that drift on a machine spreads over all of them. When the last
//! repetition has ended, the variants are released.
//!
//! A background loop ([`spawn_driver`]) moves experiments on; it keeps nothing in memory, so a
//! server that is killed and started again (or a second server on the same database) goes on
//! where the database says, and the store's conditional updates keep each step single.

pub mod api;
mod charts;
mod results;

use std::collections::BTreeSet;
use std::time::Duration;

use passage_app::experiments::{
    BenchmarkChoice, Comparison, ExperimentForm, ExperimentSummary, ExperimentView,
    MAX_REPETITIONS, TargetChoice, TargetView, VariantChoice,
};
use passage_app::requests::RequestForm;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::auth::User;
use crate::jobs::JobError;
use crate::requests::RequestError;
use crate::store::{
    AuditRecord, ExperimentRecord, NewBenchmark, NewExperiment, NewJob, NewTarget, Scope,
    StoreError, TargetRecord, rfc3339,
};
use crate::vms::{VmAction, VmError};

pub use charts::chart;
pub use results::{compare, csv, results};

/// The most benchmarks in one experiment.
const MAX_BENCHMARKS: usize = 64;
/// The most targets in one experiment, variants counted one by one.
const MAX_TARGETS: usize = 16;
/// How often the driver looks at unfinished experiments.
const DRIVE_EVERY: Duration = Duration::from_secs(1);

/// Why an experiment action failed.
#[derive(Debug, Error)]
pub enum ExperimentError {
    /// What was asked for is not valid.
    #[error("{0}")]
    Invalid(String),
    /// No such experiment (or not the caller's to see).
    #[error("no experiment {0}")]
    NotFound(i64),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The state does not allow it.
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<JobError> for ExperimentError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Store(e) => ExperimentError::Store(e),
            JobError::Forbidden(m) => ExperimentError::Forbidden(m),
            JobError::Conflict(m) | JobError::TooMany(m) => ExperimentError::Conflict(m),
            JobError::NotFound(m) | JobError::Invalid(m) | JobError::BadPlugin(m) => {
                ExperimentError::Invalid(m)
            }
        }
    }
}

/// A variant's VM, before its request is filed.
struct PlannedVariant {
    label: String,
    form: RequestForm,
}

/// The experiment `id` if `user` may see it: its owner and admins.
pub(crate) async fn visible(
    state: &AppState,
    user: &User,
    id: i64,
) -> Result<ExperimentRecord, ExperimentError> {
    match state.store.experiment(id).await? {
        Some(e) if user.is_admin || e.owner_id == user.id => Ok(e),
        _ => Err(ExperimentError::NotFound(id)),
    }
}

/// Where an experiment stands, for lists.
pub(crate) fn summary(record: &ExperimentRecord, simulated: bool) -> ExperimentSummary {
    ExperimentSummary {
        id: record.id,
        name: record.name.clone(),
        owner: record.owner.clone(),
        state: record.state.clone(),
        preset: record.preset.clone(),
        repetitions: record.repetitions,
        repetition: record.queued_repetitions,
        jobs_total: record.repetitions * record.benchmarks * record.targets,
        jobs_done: record.jobs_done,
        jobs_failed: record.jobs_failed,
        note: record.note.clone(),
        created_at: rfc3339(record.created_at),
        finished_at: record.finished_at.map(rfc3339),
        simulated,
    }
}

/// True when a target's agent runs on a simulated GPU.
fn simulated_target(t: &TargetRecord) -> bool {
    t.agent_backend.as_deref() == Some("fake")
}

/// The experiments `user` may see (admins: all), newest first.
pub async fn list(
    state: &AppState,
    user: &User,
) -> Result<Vec<ExperimentSummary>, ExperimentError> {
    let scope = if user.is_admin {
        Scope::All
    } else {
        Scope::User(user.id)
    };
    let mut out = Vec::new();
    for record in state.store.experiments(scope).await? {
        let targets = state.store.experiment_targets(record.id).await?;
        out.push(summary(&record, targets.iter().any(simulated_target)));
    }
    Ok(out)
}

/// One experiment with its results.
pub async fn show(
    state: &AppState,
    user: &User,
    id: i64,
) -> Result<ExperimentView, ExperimentError> {
    let record = visible(state, user, id).await?;
    results(state, &record).await
}

/// Where a target stands, in words.
fn target_status(t: &TargetRecord, finished: bool) -> String {
    if t.released_at.is_some() {
        return "released".into();
    }
    if let (Some(request), Some(state)) = (t.request_id, t.request_state.as_deref()) {
        match state {
            "pending" => return format!("waiting for approval of request {request}"),
            "waiting" => {
                return format!(
                    "request {request} approved, waiting: {}",
                    t.request_reason.as_deref().unwrap_or("no GPUs free")
                );
            }
            "denied" => {
                return format!(
                    "request {request} denied: {}",
                    t.request_reason.as_deref().unwrap_or("no reason given")
                );
            }
            _ => {}
        }
    }
    if let Some(vm) = t.vm_id {
        match t.vm_state.as_deref() {
            Some("running") => {}
            Some(other) => {
                return format!(
                    "VM {vm} is {other}{}",
                    t.vm_reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
            }
            None => {}
        }
    } else if t.request_id.is_some() {
        return "its VM is being made".into();
    }
    if t.agent_revoked_at.is_some() {
        return "its agent is revoked".into();
    }
    if t.agent_registered_at.is_none() {
        return match t.vm_id {
            Some(vm) => format!("waiting for the agent of VM {vm} to start"),
            None => "waiting for its agent to start".into(),
        };
    }
    if devices(t).is_empty() {
        return "its agent reports no GPU".into();
    }
    if finished { "done" } else { "ready" }.into()
}

fn devices(t: &TargetRecord) -> Vec<passage_app::plugins::DeviceView> {
    t.agent_devices_json
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_default()
}

/// A target as pages and the API show it.
pub(crate) fn target_view(t: &TargetRecord, finished: bool) -> TargetView {
    TargetView {
        position: t.position,
        label: t.label.clone(),
        kind: t.kind.clone(),
        agent_id: t.agent_id.or(t.vm_agent),
        request_id: t.request_id,
        vm_id: t.vm_id,
        gpu_model: t
            .gpu_model
            .clone()
            .or_else(|| devices(t).first().map(|d| d.name.clone())),
        vcpus: t.vcpus,
        hypervisor: t.hypervisor.clone(),
        status: target_status(t, finished),
    }
}

/// The label of a VM target: `KVM 2 vCPU`.
fn vm_label(hypervisor: &str, vcpus: i64) -> String {
    format!("{} {vcpus} vCPU", hypervisor.to_ascii_uppercase())
}

/// The benchmarks of a form, resolved.
async fn benchmarks(
    state: &AppState,
    form: &ExperimentForm,
) -> Result<Vec<NewBenchmark>, ExperimentError> {
    let choices: Vec<BenchmarkChoice> = match (form.preset.as_deref(), form.plugins.is_empty()) {
        (Some(_), false) => {
            return Err(ExperimentError::Invalid(
                "give plugins or a preset, not both".into(),
            ));
        }
        (Some("study"), true) => passage_suite::study::STUDY
            .iter()
            .map(|run| BenchmarkChoice {
                plugin: run.plugin.to_string(),
                params: run
                    .params
                    .iter()
                    .filter_map(|p| p.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                label: Some(run.label.to_string()),
            })
            .collect(),
        (Some(other), true) => {
            return Err(ExperimentError::Invalid(format!(
                "preset: {other:?} is not a preset; the one preset is \"study\""
            )));
        }
        (None, true) => {
            return Err(ExperimentError::Invalid(
                "plugins: name at least one plugin, or the preset \"study\"".into(),
            ));
        }
        (None, false) => form.plugins.clone(),
    };
    if choices.len() > MAX_BENCHMARKS {
        return Err(ExperimentError::Invalid(format!(
            "plugins: at most {MAX_BENCHMARKS} benchmarks, got {}",
            choices.len()
        )));
    }
    let mut out = Vec::new();
    let mut labels = BTreeSet::new();
    for (i, choice) in choices.iter().enumerate() {
        let given: Vec<(String, String)> = choice
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (plugin, params_json) = state
            .jobs
            .resolve(choice.plugin.trim(), &given)
            .await
            .map_err(|e| {
                ExperimentError::Invalid(format!("plugins[{i}]: {}", ExperimentError::from(e)))
            })?;
        let label = match choice.label.as_deref().map(str::trim) {
            Some(label) if !label.is_empty() => label.to_string(),
            _ if given.is_empty() => plugin.view.name.clone(),
            _ => format!(
                "{} {}",
                plugin.view.name,
                given
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        };
        if label.chars().count() > 100 {
            return Err(ExperimentError::Invalid(format!(
                "plugins[{i}]: the label has more than 100 characters"
            )));
        }
        if !labels.insert(label.clone()) {
            return Err(ExperimentError::Invalid(format!(
                "plugins[{i}]: {label:?} is there twice; give the runs different labels or \
                 parameters"
            )));
        }
        out.push(NewBenchmark {
            label,
            plugin_id: plugin.view.id,
            params_json,
            all_devices: plugin.view.all_gpus,
        });
    }
    Ok(out)
}

/// The VMs a variant asks for.
async fn plan_variant(
    state: &AppState,
    user: &User,
    index: usize,
    variant: &VariantChoice,
    experiment: &str,
) -> Result<Vec<PlannedVariant>, ExperimentError> {
    let bad = |m: String| ExperimentError::Invalid(format!("targets[{index}].variant: {m}"));
    let base = match variant.request {
        Some(id) => {
            let scope = (!user.is_admin).then_some(user.id);
            let request = state
                .store
                .request(scope, id)
                .await?
                .ok_or_else(|| bad(format!("no request {id} of yours")))?;
            Some(request)
        }
        None => None,
    };
    let model = match (&base, &variant.gpu_model) {
        (_, Some(model)) => model.trim().to_string(),
        (Some(request), None) => request.gpu_model.clone(),
        (None, None) => return Err(bad("name a gpu_model or a request to copy".into())),
    };
    let choices = crate::requests::choices(&state.store).await?;
    if !choices.models.contains(&model) {
        return Err(bad(format!(
            "no host has {model:?} GPUs; the models are {}",
            choices.models.join(", ")
        )));
    }
    let image = match (&variant.image, &base) {
        (Some(image), _) => image.clone(),
        (None, Some(request)) => request.image.clone(),
        (None, None) => choices
            .images_with_driver
            .first()
            .or(choices.images.first())
            .cloned()
            .ok_or_else(|| bad("no image is registered to make VMs from".into()))?,
    };
    let mut vcpus = variant.vcpus.clone();
    if vcpus.is_empty() {
        vcpus = vec![1, 2, 4];
    }
    let mut hypervisors: Vec<String> = variant
        .hypervisors
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    if hypervisors.is_empty() {
        let drivers: std::collections::BTreeMap<String, Option<String>> = state
            .store
            .hosts()
            .await?
            .iter()
            .map(|h| (h.name.clone(), h.driver.clone()))
            .collect();
        let offered: BTreeSet<&str> = state
            .store
            .gpus()
            .await?
            .iter()
            .filter(|g| g.model == model)
            .flat_map(|g| {
                crate::scheduler::hypervisors(drivers.get(&g.host).and_then(|d| d.as_deref()))
            })
            .collect();
        hypervisors = offered.into_iter().map(str::to_string).collect();
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for hypervisor in &hypervisors {
        if !matches!(hypervisor.as_str(), "kvm" | "xen") {
            return Err(bad(format!(
                "hypervisors: {hypervisor:?} is not kvm or xen"
            )));
        }
        for &n in &vcpus {
            if !seen.insert((hypervisor.clone(), n)) {
                return Err(bad(format!("{hypervisor} with {n} vCPUs is there twice")));
            }
            out.push(PlannedVariant {
                label: vm_label(hypervisor, n),
                form: RequestForm {
                    gpu_model: model.clone(),
                    gpu_count: variant
                        .gpu_count
                        .or(base.as_ref().map(|r| r.gpu_count))
                        .unwrap_or(1),
                    vcpus: n,
                    memory_mib: variant
                        .memory_mib
                        .or(base.as_ref().map(|r| r.memory_mib))
                        .unwrap_or(8192),
                    disk_gib: variant
                        .disk_gib
                        .or(base.as_ref().map(|r| r.disk_gib))
                        .unwrap_or(20),
                    image: image.clone(),
                    hypervisor: hypervisor.clone(),
                    lease_hours: base.as_ref().map(|r| r.lease_hours).unwrap_or(24).min(24),
                    reason: format!("experiment {experiment:?}: {}", vm_label(hypervisor, n)),
                },
            });
        }
    }
    Ok(out)
}

/// Makes an experiment for `user`: checks every benchmark and target, files the requests of its
/// variants (rolled back if anything fails), and records it as `preparing`. Returns its id.
pub async fn create(
    state: &AppState,
    user: &User,
    form: ExperimentForm,
) -> Result<i64, ExperimentError> {
    let name = form.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ExperimentError::Invalid("name: 1 to 200 characters".into()));
    }
    if !(1..=MAX_REPETITIONS).contains(&form.repetitions) {
        return Err(ExperimentError::Invalid(format!(
            "repetitions: must be from 1 to {MAX_REPETITIONS}, got {}",
            form.repetitions
        )));
    }
    let benchmarks = benchmarks(state, &form).await?;
    if form.targets.is_empty() {
        return Err(ExperimentError::Invalid(
            "targets: name at least one agent or variant".into(),
        ));
    }
    let mut targets = Vec::new();
    let mut variants = Vec::new();
    let mut agents = BTreeSet::new();
    for (i, target) in form.targets.iter().enumerate() {
        match target {
            TargetChoice::Agent { agent } => {
                let record = state.jobs.usable_agent(user, *agent).await.map_err(|e| {
                    ExperimentError::Invalid(format!("targets[{i}]: {}", ExperimentError::from(e)))
                })?;
                if !agents.insert(record.id) {
                    return Err(ExperimentError::Invalid(format!(
                        "targets[{i}]: agent {} is there twice",
                        record.id
                    )));
                }
                let devices = state.store.agent_devices(record.id).await?;
                let model = devices.first().map(|d| d.name.clone());
                targets.push(match record.vm_id {
                    Some(vm) => {
                        let view = state.store.vm(None, vm).await?;
                        let (hypervisor, vcpus) = view
                            .as_ref()
                            .map(|v| (v.hypervisor.clone(), v.vcpus))
                            .unwrap_or_else(|| ("kvm".into(), 0));
                        NewTarget {
                            label: format!("VM {vm}: {}", vm_label(&hypervisor, vcpus)),
                            kind: "vm".into(),
                            agent_id: Some(record.id),
                            request_id: None,
                            gpu_model: view.map(|v| v.gpu_model).or(model),
                            vcpus: Some(vcpus),
                            hypervisor: Some(hypervisor),
                        }
                    }
                    None => NewTarget {
                        label: format!("native {}", record.name),
                        kind: "native".into(),
                        agent_id: Some(record.id),
                        request_id: None,
                        gpu_model: model,
                        vcpus: None,
                        hypervisor: None,
                    },
                });
            }
            TargetChoice::Variant { variant } => {
                for planned in plan_variant(state, user, i, variant, &name).await? {
                    variants.push(planned);
                }
            }
        }
    }
    // Variants of several GPU models are told apart by their model.
    let models: BTreeSet<&str> = variants.iter().map(|v| v.form.gpu_model.as_str()).collect();
    if models.len() > 1 {
        for v in &mut variants {
            v.label = format!("{} {}", v.label, v.form.gpu_model);
        }
    }
    if targets.len() + variants.len() > MAX_TARGETS {
        return Err(ExperimentError::Invalid(format!(
            "targets: at most {MAX_TARGETS} (variants count one per VM), got {}",
            targets.len() + variants.len()
        )));
    }
    // The variants' requests, through the normal path: the user's quotas hold.
    let mut filed: Vec<i64> = Vec::new();
    for planned in &variants {
        match crate::requests::file_request(state, user, planned.form.clone()).await {
            Ok(id) => {
                filed.push(id);
                targets.push(NewTarget {
                    label: planned.label.clone(),
                    kind: "variant".into(),
                    agent_id: None,
                    request_id: Some(id),
                    gpu_model: Some(planned.form.gpu_model.clone()),
                    vcpus: Some(planned.form.vcpus),
                    hypervisor: Some(planned.form.hypervisor.clone()),
                });
            }
            Err(e) => {
                withdraw(state, user, &filed, "the experiment could not be made").await;
                let why = match e {
                    RequestError::Invalid(fields) => fields
                        .into_iter()
                        .map(|(k, v)| format!("{k}: {v}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                    other => other.to_string(),
                };
                return Err(ExperimentError::Conflict(format!(
                    "the VM {} (one of {} the experiment needs) cannot be requested: {why}",
                    planned.label,
                    variants.len()
                )));
            }
        }
    }
    let new = NewExperiment {
        name,
        owner_id: user.id,
        preset: form.preset.clone(),
        repetitions: form.repetitions,
        benchmarks,
        targets,
    };
    let id = match state.store.create_experiment(&new).await {
        Ok(id) => id,
        Err(e) => {
            withdraw(state, user, &filed, "the experiment could not be recorded").await;
            return Err(e.into());
        }
    };
    let _ = state
        .store
        .audit(AuditRecord {
            actor: &user.name,
            action: "experiment.create",
            subject: format!("experiment {id}"),
            before: None,
            after: Some("preparing".into()),
            detail: Some(format!(
                "{}: {} benchmark(s) x {} target(s) x {} repetition(s); requests {filed:?}",
                new.name,
                new.benchmarks.len(),
                new.targets.len(),
                new.repetitions
            )),
        })
        .await;
    tracing::info!(experiment = id, user = %user.name, "experiment created");
    Ok(id)
}

/// Takes back requests filed for an experiment that was not made.
async fn withdraw(state: &AppState, user: &User, requests: &[i64], why: &str) {
    for &request in requests {
        if let Err(e) = release_request(state, user, request, why).await {
            tracing::warn!(request, error = %e, "withdrawing an experiment's request failed; the driver cannot retry it, release it by hand");
        }
    }
}

/// Closes a variant's request: denies it while open, releases its VM once there is one.
/// True when nothing of it is held any more; false when its VM is still being made.
async fn release_request(
    state: &AppState,
    owner: &User,
    request: i64,
    why: &str,
) -> Result<bool, ExperimentError> {
    let Some(needs) = state.store.request_needs(request).await? else {
        return Ok(true);
    };
    if needs.is_open() {
        if state.store.deny(request, why).await? {
            return Ok(true);
        }
        // Placed meanwhile: its VM is on the way.
        return Ok(false);
    }
    let vm = state
        .store
        .vms(Some(owner.id), crate::store::Window::ALL)
        .await?
        .into_iter()
        .find(|v| v.request_id == request);
    match vm {
        None if needs.state == "placed" => Ok(false),
        None => Ok(true),
        Some(vm) => match vm.state.as_str() {
            "released" | "failed" => Ok(true),
            "provisioning" => Ok(false),
            _ => match state.vms.act(owner, vm.id, VmAction::Release).await {
                Ok(_) => Ok(true),
                Err(VmError::Conflict(_)) => Ok(false),
                Err(VmError::Store(e)) => Err(e.into()),
                Err(e) => Err(ExperimentError::Conflict(e.to_string())),
            },
        },
    }
}

/// Cancels an experiment (its owner or an admin): its unfinished jobs are cancelled and its
/// variants released.
pub async fn cancel(state: &AppState, user: &User, id: i64) -> Result<(), ExperimentError> {
    let record = visible(state, user, id).await?;
    if !state
        .store
        .cancel_experiment(id, &format!("cancelled by {}", user.name))
        .await?
    {
        return Err(ExperimentError::Conflict(format!(
            "experiment {id} is {} already",
            record.state
        )));
    }
    let _ = state
        .store
        .audit(AuditRecord {
            actor: &user.name,
            action: "experiment.cancel",
            subject: format!("experiment {id}"),
            before: Some(record.state.clone()),
            after: Some("cancelled".into()),
            detail: None,
        })
        .await;
    if let Err(e) = release_variants(state, id).await {
        tracing::warn!(experiment = id, error = %e, "releasing the variants failed; the driver retries");
    }
    Ok(())
}

/// Approves every open request of an experiment's variants (admins); returns how many.
pub async fn approve(state: &AppState, admin: &User, id: i64) -> Result<usize, ExperimentError> {
    if !admin.is_admin {
        return Err(ExperimentError::Forbidden(
            "only admins approve an experiment's VMs".into(),
        ));
    }
    let record = visible(state, admin, id).await?;
    if record.state != "preparing" {
        return Err(ExperimentError::Conflict(format!(
            "experiment {id} is {}: its VMs are approved only while it is preparing",
            record.state
        )));
    }
    let mut approved = 0;
    for target in state.store.experiment_targets(id).await? {
        if let (Some(request), Some("pending")) =
            (target.request_id, target.request_state.as_deref())
        {
            match crate::requests::approve_request(
                state,
                &admin.name,
                request,
                &crate::scheduler::Choice::default(),
            )
            .await
            {
                Ok(()) => approved += 1,
                Err(RequestError::Store(e)) => return Err(e.into()),
                Err(e) => {
                    return Err(ExperimentError::Conflict(format!(
                        "{} (request {request}): {e}; {approved} approved before it",
                        target.label
                    )));
                }
            }
        }
    }
    Ok(approved)
}

/// Compares two experiments the user may see.
pub async fn compare_two(
    state: &AppState,
    user: &User,
    a: i64,
    b: i64,
) -> Result<Comparison, ExperimentError> {
    let first = visible(state, user, a).await?;
    let second = visible(state, user, b).await?;
    let first = results(state, &first).await?;
    let second = results(state, &second).await?;
    Ok(compare(&first, &second))
}

/// Starts the loop that moves experiments on, every second until `stop`.
pub fn spawn_driver(state: AppState, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(DRIVE_EVERY) => {}
            }
            if let Err(e) = drive_all(&state).await {
                tracing::warn!(error = %e, "driving experiments failed");
            }
        }
    })
}

/// One pass over every experiment that is not done.
pub async fn drive_all(state: &AppState) -> Result<(), ExperimentError> {
    for id in state.store.experiments_to_drive().await? {
        if let Err(e) = drive(state, id).await {
            tracing::warn!(experiment = id, error = %e, "driving an experiment failed");
        }
    }
    Ok(())
}

/// Moves one experiment on as far as it can go now.
async fn drive(state: &AppState, id: i64) -> Result<(), ExperimentError> {
    let Some(record) = state.store.experiment(id).await? else {
        return Ok(());
    };
    match record.state.as_str() {
        "preparing" => prepare(state, &record).await,
        "running" => run(state, &record).await,
        _ => release_variants(state, id).await,
    }
}

/// Gives variants their agents; starts the experiment once every target can run jobs.
async fn prepare(state: &AppState, record: &ExperimentRecord) -> Result<(), ExperimentError> {
    let id = record.id;
    let targets = state.store.experiment_targets(id).await?;
    let mut waiting = None;
    for t in &targets {
        let gone = matches!(t.request_state.as_deref(), Some("denied" | "released"))
            || (t.kind == "variant"
                && matches!(t.vm_state.as_deref(), Some("failed" | "released")))
            || t.agent_revoked_at.is_some();
        if gone {
            let why = format!("{}: {}", t.label, target_status(t, false));
            if state
                .store
                .move_experiment(id, "preparing", "failed", Some(&why))
                .await?
            {
                tracing::warn!(experiment = id, %why, "the experiment cannot run");
                release_variants(state, id).await?;
            }
            return Ok(());
        }
        if t.agent_id.is_none()
            && let Some(agent) = t.vm_agent
        {
            state.store.set_target_agent(id, t.position, agent).await?;
        }
        let status = target_status(t, false);
        if status != "ready" && waiting.is_none() {
            waiting = Some(format!("{}: {status}", t.label));
        }
    }
    match waiting {
        Some(note) => state.store.note_experiment(id, Some(&note)).await?,
        None => {
            // Read again: a variant's agent may have been set in this pass.
            let targets = state.store.experiment_targets(id).await?;
            if targets.iter().all(|t| t.agent_id.is_some())
                && state
                    .store
                    .move_experiment(id, "preparing", "running", None)
                    .await?
            {
                tracing::info!(
                    experiment = id,
                    "every target is ready: the experiment runs"
                );
            }
        }
    }
    Ok(())
}

/// Queues the next repetition once the current one has ended; ends the experiment after the
/// last.
async fn run(state: &AppState, record: &ExperimentRecord) -> Result<(), ExperimentError> {
    let id = record.id;
    let jobs = state.store.experiment_jobs(id).await?;
    let current = record.queued_repetitions;
    let open = jobs
        .iter()
        .filter(|j| j.repetition == current && matches!(j.state.as_str(), "queued" | "running"))
        .count();
    if open > 0 {
        let note = format!(
            "repetition {current} of {}: {open} job(s) to go",
            record.repetitions
        );
        state.store.note_experiment(id, Some(&note)).await?;
        return Ok(());
    }
    if current < record.repetitions {
        let targets = state.store.experiment_targets(id).await?;
        if let Some(t) = targets.iter().find(|t| t.agent_revoked_at.is_some()) {
            let why = format!("{}: its agent was revoked", t.label);
            if state
                .store
                .move_experiment(id, "running", "failed", Some(&why))
                .await?
            {
                release_variants(state, id).await?;
            }
            return Ok(());
        }
        let benchmarks = state.store.experiment_benchmarks(id).await?;
        let next = current + 1;
        let batch = format!("experiment-{id}");
        let order = matrix_order(benchmarks.len(), targets.len(), next);
        let mut planned = Vec::with_capacity(order.len());
        for (b, t) in order {
            let (benchmark, target) = (&benchmarks[b], &targets[t]);
            let Some(agent_id) = target.agent_id else {
                return Err(ExperimentError::Conflict(format!(
                    "experiment {id}: {} has no agent",
                    target.label
                )));
            };
            planned.push((
                target.position,
                benchmark.position,
                NewJob {
                    agent_id,
                    plugin_id: benchmark.plugin_id,
                    params_json: &benchmark.params_json,
                    device_wanted: None,
                    all_devices: benchmark.all_devices,
                    label: Some(&benchmark.label),
                    batch: Some(&batch),
                    requested_by: record.owner_id,
                },
            ));
        }
        if state.store.queue_repetition(id, next, &planned).await? {
            let note = format!("repetition {next} of {}", record.repetitions);
            state.store.note_experiment(id, Some(&note)).await?;
            tracing::info!(
                experiment = id,
                repetition = next,
                jobs = planned.len(),
                "repetition queued"
            );
        }
        return Ok(());
    }
    let failed = jobs.iter().filter(|j| j.state != "succeeded").count();
    let (to, note) = if failed == jobs.len() {
        ("failed", Some("every job failed".to_string()))
    } else if failed > 0 {
        (
            "succeeded",
            Some(format!(
                "{failed} of {} job(s) failed or were cancelled",
                jobs.len()
            )),
        )
    } else {
        ("succeeded", None)
    };
    if state
        .store
        .move_experiment(id, "running", to, note.as_deref())
        .await?
    {
        tracing::info!(experiment = id, state = to, "the experiment ended");
        release_variants(state, id).await?;
    }
    Ok(())
}

/// The order in which repetition `repetition` (1-based) runs the matrix: `(benchmark, target)`
/// index pairs. Benchmarks and targets are both rotated by one place per repetition, so that
/// none is always first (on a cold machine) or always right after the same neighbour.
pub fn matrix_order(benchmarks: usize, targets: usize, repetition: i64) -> Vec<(usize, usize)> {
    if benchmarks == 0 || targets == 0 {
        return Vec::new();
    }
    let shift = usize::try_from(repetition.max(1) - 1).unwrap_or(0);
    let mut order = Vec::with_capacity(benchmarks * targets);
    for b in 0..benchmarks {
        let b = (b + shift) % benchmarks;
        for t in 0..targets {
            order.push((b, (t + shift) % targets));
        }
    }
    order
}

/// Releases the VMs made for an ended experiment (each once; one still being made is released
/// on a later pass).
async fn release_variants(state: &AppState, id: i64) -> Result<(), ExperimentError> {
    let Some(record) = state.store.experiment(id).await? else {
        return Ok(());
    };
    if !matches!(record.state.as_str(), "succeeded" | "failed" | "cancelled") {
        return Ok(());
    }
    let Some(owner) = state.store.user_by_id(record.owner_id).await? else {
        return Ok(());
    };
    let owner = User::from(owner);
    for t in state.store.experiment_targets(id).await? {
        let (Some(request), None) = (t.request_id, t.released_at) else {
            continue;
        };
        let why = format!("experiment {id} ended");
        if release_request(state, &owner, request, &why).await? {
            state.store.mark_target_released(id, t.position).await?;
            tracing::info!(experiment = id, request, "an experiment's VM is released");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cell_runs_once_per_repetition_and_no_one_is_always_first() {
        for repetition in 1..=6 {
            let order = matrix_order(3, 2, repetition);
            let mut cells = order.clone();
            cells.sort_unstable();
            cells.dedup();
            assert_eq!(cells.len(), 6, "{order:?}");
        }
        let firsts: BTreeSet<(usize, usize)> = (1..=6).map(|r| matrix_order(3, 2, r)[0]).collect();
        assert!(firsts.len() >= 3, "the first run moves: {firsts:?}");
        assert_eq!(matrix_order(3, 2, 1)[..2], [(0, 0), (0, 1)]);
        assert_eq!(matrix_order(3, 2, 2)[..2], [(1, 1), (1, 0)]);
        assert!(matrix_order(0, 2, 1).is_empty());
    }
}
