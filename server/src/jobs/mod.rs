//! Plugins run by agents: the plugin registry, the agents, and the job queue between them.
//!
//! [`JobService`] owns the rules: who may run what where ([`JobService::queue`]), what agents
//! may do ([`agent_api`]), and what happens to jobs whose agent goes silent or whose VM goes
//! away (a background sweep). The registry ([`registry`]) reads each component's own
//! `describe` in the same sandbox agents use, so that a plugin's parameters are known and
//! checked before a job is queued.

pub mod agent_api;
pub mod api;
mod registry;
mod verification;

use std::time::Duration;

use passage_app::plugins::{AgentView, JobFilter, JobOrder, JobResult, JobView, PluginView};
use passage_plugin_host::{ParamValue, PluginInfo, resolve_params};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::auth::{User, new_secret, secret_hash};
use crate::config::{AgentSettings, JobLimits, PluginSettings};
use crate::store::{
    AgentRecord, AgentReport, AuditRecord, JobEnd, NewJob, PluginRecord, Queuing, Scope, Store,
    StoreError, TakenJob, Window, device_list, is_unique_violation, now_ms,
};

pub use registry::Registration;

/// Why a plugin, agent or job action failed.
#[derive(Debug, Error)]
pub enum JobError {
    /// No such thing (or not the caller's to see).
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// What was asked for is not valid.
    #[error("{0}")]
    Invalid(String),
    /// The state does not allow it.
    #[error("{0}")]
    Conflict(String),
    /// The caller has as many unfinished jobs as a limit allows.
    #[error("{0}")]
    TooMany(String),
    /// An uploaded component is not a usable plugin.
    #[error("{0}")]
    BadPlugin(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Plugins, agents and jobs.
#[derive(Debug, Clone)]
pub struct JobService {
    store: Store,
    agents: AgentSettings,
    limits: JobLimits,
    plugins: PluginSettings,
    /// When this process started: agents get a full offline period to come back to a portal
    /// that was down before their jobs are given up.
    started: std::time::Instant,
}

/// A label for a job's batch of the study's suite.
/// The result as stored: on a simulated device nothing was computed, so a `verification` PASS
/// that the plugin reported is kept as skipped (-1), whatever the plugin or its agent claims.
fn honest_result(result: &JobResult) -> JobResult {
    let simulated = result.simulated || result.devices.iter().any(|d| d.simulated);
    let mut result = result.clone();
    result.simulated = simulated;
    if simulated {
        for metric in &mut result.metrics {
            if metric.name == "verification" && metric.value > 0.0 {
                metric.value = -1.0;
            }
        }
    }
    result
}

fn batch_name(agent: i64) -> String {
    format!("study-{agent}-{}", now_ms())
}

fn scope(user: &User) -> Scope {
    if user.is_admin {
        Scope::All
    } else {
        Scope::User(user.id)
    }
}

/// True when two PCI addresses name the same function, whatever the case and however many
/// digits the domain has (CUDA writes `00000000:10:00.0`, the kernel `0000:10:00.0`).
fn same_pci_address(a: &str, b: &str) -> bool {
    let normal = |text: &str| {
        let text = text.trim().to_ascii_lowercase();
        match text.split_once(':') {
            Some((domain, rest)) if rest.contains(':') => {
                format!("{:0>4}:{rest}", domain.trim_start_matches('0'))
            }
            _ => format!("0000:{text}"),
        }
    };
    normal(a) == normal(b)
}

/// The resolved parameters as stored: `[name, value]` pairs in the plugin's order.
fn params_json(resolved: &[(String, ParamValue)]) -> String {
    serde_json::to_string(resolved).expect("parameter values serialise")
}

fn info(record: &PluginRecord) -> PluginInfo {
    PluginInfo {
        name: record.view.name.clone(),
        version: record.view.version.clone(),
        summary: record.view.summary.clone(),
        params: record.params.clone(),
    }
}

impl JobService {
    /// Plugins, agents and jobs kept in `store`.
    pub fn new(
        store: Store,
        agents: AgentSettings,
        limits: JobLimits,
        plugins: PluginSettings,
    ) -> JobService {
        JobService {
            store,
            agents,
            limits,
            plugins,
            started: std::time::Instant::now(),
        }
    }

    /// How agents keep in touch.
    pub fn agent_settings(&self) -> AgentSettings {
        self.agents
    }

    /// What one job may use.
    pub fn limits(&self) -> JobLimits {
        self.limits
    }

    /// The largest component an admin may upload, in bytes.
    pub fn max_upload_bytes(&self) -> u64 {
        self.plugins.max_upload_bytes
    }

    async fn audit(&self, record: AuditRecord<'_>) {
        if let Err(e) = self.store.audit(record).await {
            tracing::error!(error = %e, "writing the audit log failed");
        }
    }

    /// Every registered plugin version.
    pub async fn plugins(&self) -> Result<Vec<PluginView>, JobError> {
        Ok(self
            .store
            .plugins()
            .await?
            .into_iter()
            .map(|p| p.view)
            .collect())
    }

    /// One plugin version.
    pub async fn plugin(&self, id: i64) -> Result<PluginView, JobError> {
        self.store
            .plugin(id)
            .await?
            .map(|p| p.view)
            .ok_or_else(|| JobError::NotFound(format!("no plugin {id}")))
    }

    /// Agents not seen since this moment (Unix ms) are offline.
    pub fn online_after(&self) -> i64 {
        now_ms() - (self.agents.offline_after_secs as i64) * 1000
    }

    /// The agents `user` may run plugins on (admins: every agent).
    pub async fn agents(&self, user: &User) -> Result<Vec<AgentView>, JobError> {
        Ok(self.store.agents(scope(user), self.online_after()).await?)
    }

    /// Registers a bare-metal host as a native baseline; returns the agent's id and its token,
    /// which is shown this once (only its hash is kept).
    pub async fn add_native_host(
        &self,
        admin: &User,
        name: &str,
    ) -> Result<(i64, String), JobError> {
        if !admin.is_admin {
            return Err(JobError::Forbidden(
                "only admins register native hosts".into(),
            ));
        }
        let name = name.trim();
        let valid = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with("vm-")
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(JobError::Invalid(
                "name: 1 to 64 letters, digits, '-', '_' or '.', not starting with \"vm-\"".into(),
            ));
        }
        let token = new_secret("psa_");
        let id = match self
            .store
            .create_agent("host", name, None, &secret_hash(&token), &admin.name)
            .await
        {
            Ok(id) => id,
            Err(e) if is_unique_violation(&e) => {
                return Err(JobError::Conflict(format!(
                    "an agent named {name:?} exists already"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        self.audit(AuditRecord {
            actor: &admin.name,
            action: "agent.add",
            subject: format!("agent {id}"),
            before: None,
            after: Some("waiting".into()),
            detail: Some(format!("native host {name}")),
        })
        .await;
        Ok((id, token))
    }

    /// Revokes an agent's token; its unfinished jobs are cancelled.
    pub async fn revoke_agent(&self, admin: &User, id: i64) -> Result<(), JobError> {
        if !admin.is_admin {
            return Err(JobError::Forbidden("only admins revoke agents".into()));
        }
        let reason = format!("the agent was revoked by {}", admin.name);
        if !self.store.revoke_agent(id, &reason).await? {
            return Err(JobError::NotFound(format!(
                "no agent {id}, or it is revoked already"
            )));
        }
        self.audit(AuditRecord {
            actor: &admin.name,
            action: "agent.revoke",
            subject: format!("agent {id}"),
            before: None,
            after: Some("revoked".into()),
            detail: None,
        })
        .await;
        Ok(())
    }

    /// The agent `user` wants to run on, if they may.
    pub(crate) async fn usable_agent(&self, user: &User, id: i64) -> Result<AgentRecord, JobError> {
        let not_found = || JobError::NotFound(format!("no agent {id}"));
        let agent = self.store.agent(id).await?.ok_or_else(not_found)?;
        if agent.kind == "vm" && !user.is_admin && agent.vm_owner != Some(user.id) {
            return Err(not_found());
        }
        if agent.revoked_at.is_some() {
            return Err(JobError::Conflict(format!(
                "agent {} is revoked",
                agent.name
            )));
        }
        if let Some(vm) = agent.vm_id
            && agent.vm_state.as_deref() != Some("running")
        {
            return Err(JobError::Conflict(format!(
                "VM {vm} is {}: jobs run on running VMs",
                agent.vm_state.as_deref().unwrap_or("gone")
            )));
        }
        if agent.registered_at.is_some() && self.store.agent_devices(agent.id).await?.is_empty() {
            return Err(JobError::Conflict(format!(
                "{} reports no GPU, so a job there would never start; run it where the agent \
                 reports GPUs",
                agent.name
            )));
        }
        Ok(agent)
    }

    /// The newest version of plugin `name` with `given` parameters resolved against its
    /// declarations: the plugin and the parameters as jobs store them.
    pub(crate) async fn resolve(
        &self,
        name: &str,
        given: &[(String, String)],
    ) -> Result<(PluginRecord, String), JobError> {
        let plugin =
            self.store.newest_plugin(name).await?.ok_or_else(|| {
                JobError::NotFound(format!("no plugin named {name:?} is registered"))
            })?;
        let resolved = resolve_params(&info(&plugin), given)
            .map_err(|e| JobError::Invalid(format!("{name}: {e}")))?;
        Ok((plugin, params_json(&resolved)))
    }

    /// Queues a run of a plugin on an agent; `each` queues one per GPU the agent reported.
    pub async fn queue(&self, user: &User, order: &JobOrder) -> Result<Vec<i64>, JobError> {
        let plugin = self
            .store
            .plugin(order.plugin)
            .await?
            .ok_or_else(|| JobError::NotFound(format!("no plugin {}", order.plugin)))?;
        let agent = self.usable_agent(user, order.agent).await?;
        let given: Vec<(String, String)> = order
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let resolved =
            resolve_params(&info(&plugin), &given).map_err(|e| JobError::Invalid(e.to_string()))?;
        let gpu = order.gpu.as_deref().map(str::trim).unwrap_or("any");
        let devices = self.store.agent_devices(agent.id).await?;
        let all = plugin.view.all_gpus;
        if all && !matches!(gpu, "" | "any" | "all") {
            return Err(JobError::Invalid(format!(
                "gpu: {} runs on every GPU of the machine at once; leave gpu at any",
                plugin.view.name
            )));
        }
        let registered = agent.registered_at.is_some();
        let wanted: Vec<Option<i64>> = match gpu {
            _ if all => vec![None],
            "" | "any" => vec![None],
            "each" if devices.is_empty() => {
                return Err(JobError::Invalid(format!(
                    "gpu: {} has not reported its GPUs yet; choose any",
                    agent.name
                )));
            }
            "each" => devices.iter().map(|d| Some(d.index)).collect(),
            named => {
                let index = named.parse::<i64>().ok();
                let address = named.contains(':').then_some(named);
                if index.is_none() && address.is_none() {
                    return Err(JobError::Invalid(format!(
                        "gpu: {named:?} is not any, each, a GPU index or a PCI address"
                    )));
                }
                if !registered {
                    return Err(JobError::Invalid(format!(
                        "gpu: {} has not reported its GPUs yet, so GPU {named} may not exist \
                         there; choose any, or wait until its agent has started",
                        agent.name
                    )));
                }
                let found = devices.iter().find(|d| {
                    Some(d.index) == index
                        || address.is_some_and(|a| same_pci_address(a, &d.pci_bus_id))
                });
                match found {
                    Some(device) => vec![Some(device.index)],
                    None => {
                        return Err(JobError::Invalid(format!(
                            "gpu: {} has no GPU {named}; it reports {}",
                            agent.name,
                            device_list(&devices)
                        )));
                    }
                }
            }
        };
        let params = params_json(&resolved);
        let jobs: Vec<NewJob> = wanted
            .into_iter()
            .map(|device| NewJob {
                agent_id: agent.id,
                plugin_id: plugin.view.id,
                params_json: &params,
                device_wanted: device,
                all_devices: all,
                label: None,
                batch: None,
                requested_by: user.id,
            })
            .collect();
        let ids = self.queue_all(&agent, &jobs).await?;
        tracing::info!(plugin = %plugin.view.name, agent = %agent.name, jobs = ?ids, user = %user.name, "jobs queued");
        Ok(ids)
    }

    /// Queues `jobs` (one user's) on `agent`, all or none, within the per-user limit on the
    /// native hosts.
    async fn queue_all(
        &self,
        agent: &AgentRecord,
        jobs: &[NewJob<'_>],
    ) -> Result<Vec<i64>, JobError> {
        let limit = self.limits.native_jobs_per_user;
        match self
            .store
            .queue_jobs(jobs, i64::try_from(limit).unwrap_or(i64::MAX))
            .await?
        {
            Queuing::Queued(ids) => Ok(ids),
            Queuing::OverLimit { unfinished } => Err(JobError::TooMany(format!(
                "you have {unfinished} unfinished job(s) on the native hosts and {} more on {} \
                 would pass the limit of {limit} per user (jobs.native_jobs_per_user); wait for \
                 some to end or cancel them",
                jobs.len(),
                agent.name
            ))),
        }
    }

    /// Queues every run of the study's suite, with the study's sizes, on one agent; returns the
    /// batch's name. Nothing is queued unless every run's plugin is registered.
    pub async fn queue_suite(&self, user: &User, agent_id: i64) -> Result<String, JobError> {
        let agent = self.usable_agent(user, agent_id).await?;
        let mut planned = Vec::new();
        for run in passage_suite::study::STUDY {
            let plugin = self.store.newest_plugin(run.plugin).await?.ok_or_else(|| {
                JobError::Conflict(format!(
                    "the study needs the plugin {}, which is not registered",
                    run.plugin
                ))
            })?;
            let given: Vec<(String, String)> = run
                .params
                .iter()
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let resolved = resolve_params(&info(&plugin), &given)
                .map_err(|e| JobError::Invalid(format!("{}: {e}", run.label)))?;
            planned.push((
                run.label,
                plugin.view.id,
                params_json(&resolved),
                plugin.view.all_gpus,
            ));
        }
        let batch = batch_name(agent.id);
        let jobs: Vec<NewJob> = planned
            .iter()
            .map(|(label, plugin_id, params, all_devices)| NewJob {
                agent_id: agent.id,
                plugin_id: *plugin_id,
                params_json: params,
                device_wanted: None,
                all_devices: *all_devices,
                label: Some(label),
                batch: Some(&batch),
                requested_by: user.id,
            })
            .collect();
        self.queue_all(&agent, &jobs).await?;
        tracing::info!(agent = %agent.name, %batch, jobs = planned.len(), "the study's suite is queued");
        Ok(batch)
    }

    /// The jobs `user` may see in `window`, newest first.
    pub async fn jobs(
        &self,
        user: &User,
        filter: &JobFilter,
        window: Window,
    ) -> Result<Vec<JobView>, JobError> {
        let mut jobs = self.store.jobs(scope(user), filter, window).await?;
        if !filter.results {
            for job in &mut jobs {
                job.result = None;
                job.summary.clear();
            }
        }
        Ok(jobs)
    }

    /// One job, if `user` may see it.
    pub async fn job(&self, user: &User, id: i64) -> Result<JobView, JobError> {
        self.store
            .job(scope(user), id)
            .await?
            .ok_or_else(|| JobError::NotFound(format!("no job {id}")))
    }

    /// Cancels a queued or running job: whoever queued it, the VM's owner, or an admin.
    pub async fn cancel(&self, user: &User, id: i64) -> Result<(), JobError> {
        let not_found = || JobError::NotFound(format!("no job {id}"));
        let (requested_by, agent_id) = self.store.job_owner(id).await?.ok_or_else(not_found)?;
        let agent = self.store.agent(agent_id).await?.ok_or_else(not_found)?;
        let allowed = user.is_admin || requested_by == user.id || agent.vm_owner == Some(user.id);
        if !allowed {
            // Others' native-host jobs are visible but not theirs to stop.
            return Err(match self.store.job(scope(user), id).await? {
                Some(_) => JobError::Forbidden("only whoever queued a job can cancel it".into()),
                None => not_found(),
            });
        }
        if !self
            .store
            .cancel_job(id, &format!("cancelled by {}", user.name))
            .await?
        {
            return Err(JobError::Conflict(format!("job {id} has ended already")));
        }
        if user.is_admin && requested_by != user.id {
            self.audit(AuditRecord {
                actor: &user.name,
                action: "job.cancel",
                subject: format!("job {id}"),
                before: None,
                after: Some("cancelled".into()),
                detail: None,
            })
            .await;
        }
        Ok(())
    }

    /// Records what an agent says about itself at start-up; returns the verdict on its GPUs.
    pub async fn register_agent(
        &self,
        agent: &AgentRecord,
        report: &AgentReport,
    ) -> Result<Option<String>, JobError> {
        let devices = &report.devices;
        let verdict = match agent.vm_id {
            Some(vm) => {
                let vm = self
                    .store
                    .vm(None, vm)
                    .await?
                    .ok_or_else(|| JobError::NotFound(format!("no VM {vm}")))?;
                Some(match &report.cuda_problem {
                    Some(problem) => verification::no_driver(&vm.gpu_model, vm.gpus.len(), problem),
                    None => verification::verdict(&vm.gpu_model, vm.gpus.len(), devices),
                })
            }
            None => None,
        };
        let ended = self
            .store
            .record_registration(agent.id, report, verdict.as_deref())
            .await?;
        if ended.running_failed > 0 {
            tracing::warn!(agent = %agent.name, jobs = ended.running_failed, "the agent restarted: its running jobs failed");
        }
        if ended.unrunnable_failed > 0 {
            tracing::warn!(agent = %agent.name, jobs = ended.unrunnable_failed, "queued jobs for GPUs the agent does not report failed");
        }
        if let Some(vm) = agent.vm_id {
            self.audit(AuditRecord {
                actor: "system",
                action: "vm.agent",
                subject: format!("vm {vm}"),
                before: None,
                after: verdict.clone(),
                detail: Some(format!(
                    "agent {} on {}, {} GPU(s)",
                    report.agent_version,
                    report.hostname,
                    devices.len()
                )),
            })
            .await;
        }
        tracing::info!(agent = %agent.name, hostname = %report.hostname, backend = %report.backend, gpus = devices.len(), verdict = ?verdict, "agent registered");
        Ok(verdict)
    }

    /// Gives an agent its next job, if one fits its idle GPUs.
    pub async fn take(
        &self,
        agent: &AgentRecord,
        free: &[i64],
    ) -> Result<Option<TakenJob>, JobError> {
        Ok(self.store.take_job(agent.id, free).await?)
    }

    /// The running jobs among `ids` that the agent should stop (cancelled, or ended).
    pub async fn stopped(&self, agent: &AgentRecord, ids: &[i64]) -> Result<Vec<i64>, JobError> {
        Ok(self.store.stopped_jobs(agent.id, ids).await?)
    }

    /// Records progress; returns the job's state, which says whether it should go on.
    pub async fn progress(
        &self,
        agent: &AgentRecord,
        id: i64,
        fraction: f64,
        note: &str,
    ) -> Result<String, JobError> {
        self.store
            .job_progress(agent.id, id, fraction, note)
            .await?
            .ok_or_else(|| JobError::NotFound(format!("job {id} is not this agent's")))
    }

    /// Records how a job ended. A run whose plugin reported `verification` 0 (its GPU output
    /// did not match the CPU reference) failed, whatever else it measured; a run on a
    /// simulated device is never stored as verified (see [`honest_result`]).
    pub async fn finish(
        &self,
        agent: &AgentRecord,
        id: i64,
        end: &JobEnd<'_>,
    ) -> Result<(), JobError> {
        let honest = end.result.map(honest_result);
        let end = &JobEnd {
            result: honest.as_ref(),
            ..*end
        };
        let verification_failed = end.state == "succeeded"
            && end.result.is_some_and(|r| {
                r.metrics
                    .iter()
                    .any(|m| m.name == "verification" && m.value == 0.0)
            });
        let end = &JobEnd {
            state: if verification_failed {
                "failed"
            } else {
                end.state
            },
            error: if verification_failed {
                Some("verification FAILED: the GPU's output does not match the CPU reference")
            } else {
                end.error
            },
            result: end.result,
        };
        if self.store.finish_job(agent.id, id, end).await? {
            tracing::info!(agent = %agent.name, job = id, state = end.state, "job ended");
            return Ok(());
        }
        match self.store.job_state(agent.id, id).await? {
            None => Err(JobError::NotFound(format!("job {id} is not this agent's"))),
            Some(state) => Err(JobError::Conflict(format!(
                "job {id} is {state}: its result is not taken"
            ))),
        }
    }

    /// Fails the jobs of agents that stopped answering and cancels those of VMs that are gone;
    /// every `heartbeat_secs` until `stop`.
    pub fn spawn_sweep(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let every = Duration::from_secs(self.agents.heartbeat_secs);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                if let Err(e) = this.sweep().await {
                    tracing::warn!(error = %e, "sweeping jobs failed");
                }
            }
        })
    }

    /// One pass of the sweep.
    pub async fn sweep(&self) -> Result<(), StoreError> {
        // Right after a start every agent looks silent: the portal was away, not they.
        let settled = self.started.elapsed().as_secs() >= self.agents.offline_after_secs;
        if settled {
            let failed = self
                .store
                .fail_jobs_of_silent_agents(self.online_after())
                .await?;
            if !failed.is_empty() {
                tracing::warn!(jobs = ?failed, "agents stopped answering: their running jobs failed");
            }
        }
        for (agent, vm) in self.store.agents_of_gone_vms().await? {
            self.store
                .revoke_agent(agent, &format!("VM {vm} is gone"))
                .await?;
            tracing::info!(vm, agent, "the VM is gone: its agent is revoked");
        }
        Ok(())
    }

    /// Registers the shipped plugins found in the configured directory.
    pub async fn register_shipped(&self) -> Result<(), JobError> {
        let Some(dir) = self.plugins.dir.clone() else {
            tracing::info!("no plugin directory: no shipped plugins registered");
            return Ok(());
        };
        registry::register_directory(&self.store, &dir).await
    }

    /// Registers an uploaded component (admins).
    pub async fn upload(&self, admin: &User, bytes: Vec<u8>) -> Result<Registration, JobError> {
        if !admin.is_admin {
            return Err(JobError::Forbidden("only admins upload plugins".into()));
        }
        if bytes.len() as u64 > self.plugins.max_upload_bytes {
            return Err(JobError::Invalid(format!(
                "the component has {} bytes; at most {} are taken (plugins.max_upload_mib)",
                bytes.len(),
                self.plugins.max_upload_bytes
            )));
        }
        let registration = registry::register(&self.store, bytes, &admin.name, false).await?;
        if registration.new {
            self.audit(AuditRecord {
                actor: &admin.name,
                action: "plugin.register",
                subject: format!("plugin {}", registration.plugin.id),
                before: None,
                after: Some(format!(
                    "{} {}",
                    registration.plugin.name, registration.plugin.version
                )),
                detail: Some(format!("sha256 {}", registration.plugin.sha256)),
            })
            .await;
        }
        Ok(registration)
    }

    /// The component bytes of a plugin an agent has a job for.
    pub async fn component_for(
        &self,
        agent: &AgentRecord,
        sha256: &str,
    ) -> Result<Vec<u8>, JobError> {
        let not_found = || JobError::NotFound(format!("no plugin {sha256} for this agent"));
        if !self.store.agent_has_plugin(agent.id, sha256).await? {
            return Err(not_found());
        }
        self.store
            .plugin_component(sha256)
            .await?
            .ok_or_else(not_found)
    }

    /// The component bytes of a plugin, for people.
    pub async fn component(&self, id: i64) -> Result<(PluginView, Vec<u8>), JobError> {
        let plugin = self.plugin(id).await?;
        let bytes = self
            .store
            .plugin_component(&plugin.sha256)
            .await?
            .ok_or_else(|| JobError::NotFound(format!("no plugin {id}")))?;
        Ok((plugin, bytes))
    }
}

#[cfg(test)]
mod tests {
    use passage_app::plugins::{DeviceView, JobResult, MetricView};

    use super::honest_result;

    fn result(simulated_device: bool, verification: f64) -> JobResult {
        JobResult {
            // What an agent claims; the devices it lists decide.
            simulated: false,
            devices: vec![DeviceView {
                index: 0,
                name: "NVIDIA H200".into(),
                pci_bus_id: "0000:17:00.0".into(),
                total_memory: 141 << 30,
                compute_capability: "9.0".into(),
                simulated: simulated_device,
            }],
            metrics: vec![MetricView {
                name: "verification".into(),
                value: verification,
                unit: "1=pass 0=fail -1=skipped".into(),
            }],
            logs: Vec::new(),
            wall_s: 1.0,
            user_s: 0.5,
            system_s: 0.1,
            leftovers: String::new(),
        }
    }

    #[test]
    fn a_pass_on_a_simulated_device_is_stored_as_skipped() {
        let stored = honest_result(&result(true, 1.0));
        assert!(stored.simulated);
        assert_eq!(stored.metrics[0].value, -1.0);
        // A failure stays a failure; a real device's pass stays a pass.
        assert_eq!(honest_result(&result(true, 0.0)).metrics[0].value, 0.0);
        let real = honest_result(&result(false, 1.0));
        assert!(!real.simulated);
        assert_eq!(real.metrics[0].value, 1.0);
    }
}
