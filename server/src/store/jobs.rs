//! Queries for agents and their jobs.
//!
//! An agent is a credential and what its process last said: one per VM (its token comes with
//! the VM's cloud-init seed) or one per bare-metal host an admin registered as a native
//! baseline. Jobs are queued for one agent and taken by it first in, first out; the update that
//! takes a job only succeeds while it is still queued, so a job runs once however many
//! processes ask.

use passage_app::plugins::{
    AgentView, DeviceView, JobFilter, JobResult, JobView, summarise, target_label,
};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, Window, flag, now_ms, rfc3339};

/// An agent as the server's rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// Its id.
    pub id: i64,
    /// `vm` or `host`.
    pub kind: String,
    /// `vm-<id>` or the native host's name.
    pub name: String,
    /// The VM it belongs to.
    pub vm_id: Option<i64>,
    /// The VM's owner.
    pub vm_owner: Option<i64>,
    /// The VM's state.
    pub vm_state: Option<String>,
    /// When its token was revoked.
    pub revoked_at: Option<i64>,
    /// When its process last registered; until then its GPUs are unknown.
    pub registered_at: Option<i64>,
}

/// A new job.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    /// The agent that runs it.
    pub agent_id: i64,
    /// The plugin version.
    pub plugin_id: i64,
    /// The resolved parameters: a JSON array of `[name, value]` pairs, in declaration order.
    pub params_json: &'a str,
    /// A device index, or any free one.
    pub device_wanted: Option<i64>,
    /// Every device of the agent at once.
    pub all_devices: bool,
    /// A label, e.g. the study's name for the run.
    pub label: Option<&'a str>,
    /// The batch it belongs to.
    pub batch: Option<&'a str>,
    /// Who queues it.
    pub requested_by: i64,
}

/// How queuing a set of jobs went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queuing {
    /// Every job is queued: their ids, in order.
    Queued(Vec<i64>),
    /// None is queued: the user has `unfinished` jobs on the native hosts already, and these
    /// would take them past the limit.
    OverLimit {
        /// The user's queued and running jobs on native hosts.
        unfinished: i64,
    },
}

/// A job taken by an agent, with what the agent needs to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenJob {
    /// The job.
    pub id: i64,
    /// The plugin's name, version and hash (the agent fetches the bytes by hash).
    pub plugin: (String, String, String),
    /// The resolved parameters, as stored.
    pub params_json: String,
    /// The device indexes it runs on.
    pub devices: Vec<i64>,
}

/// How a job ended, as the agent said.
#[derive(Debug, Clone)]
pub struct JobEnd<'a> {
    /// `succeeded` or `failed`.
    pub state: &'a str,
    /// Why it failed.
    pub error: Option<&'a str>,
    /// What it produced.
    pub result: Option<&'a JobResult>,
}

const AGENT_COLUMNS: &str = "a.id, a.kind, a.name, a.vm_id, v.user_id AS vm_owner, \
    v.state AS vm_state, a.revoked_at, a.registered_at";

fn agent_record(row: &AnyRow) -> Result<AgentRecord, StoreError> {
    Ok(AgentRecord {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        name: row.try_get("name")?,
        vm_id: row.try_get("vm_id")?,
        vm_owner: row.try_get("vm_owner")?,
        vm_state: row.try_get("vm_state")?,
        revoked_at: row.try_get("revoked_at")?,
        registered_at: row.try_get("registered_at")?,
    })
}

fn decode_error(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Query(sqlx::Error::Decode(format!("{what}: {e}").into()))
}

fn agent_view(row: &AnyRow, online_after: i64) -> Result<AgentView, StoreError> {
    let last_seen: Option<i64> = row.try_get("last_seen_at")?;
    let revoked: Option<i64> = row.try_get("revoked_at")?;
    let status = match (revoked, last_seen) {
        (Some(_), _) => "revoked",
        (None, None) => "waiting",
        (None, Some(seen)) if seen >= online_after => "online",
        (None, Some(_)) => "offline",
    };
    let devices: Option<String> = row.try_get("devices_json")?;
    let devices: Vec<DeviceView> = match devices {
        Some(text) => {
            serde_json::from_str(&text).map_err(|e| decode_error("an agent's devices", e))?
        }
        None => Vec::new(),
    };
    Ok(AgentView {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        name: row.try_get("name")?,
        vm_id: row.try_get("vm_id")?,
        owner: row.try_get("owner")?,
        status: status.into(),
        last_seen_at: last_seen.map(rfc3339),
        hostname: row.try_get("hostname")?,
        agent_version: row.try_get("agent_version")?,
        backend: row.try_get("backend")?,
        devices,
        verification: row.try_get("verification")?,
        addresses: addresses(row.try_get("addresses_json")?)?,
        run_as: row.try_get("run_as")?,
        cuda_problem: row.try_get("cuda_problem")?,
    })
}

/// An agent's reported addresses, stored as a JSON array.
pub(crate) fn addresses(json: Option<String>) -> Result<Vec<String>, StoreError> {
    match json {
        Some(text) => {
            serde_json::from_str(&text).map_err(|e| decode_error("an agent's addresses", e))
        }
        None => Ok(Vec::new()),
    }
}

/// What an agent says about itself and its machine when it starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentReport {
    /// The machine's host name.
    pub hostname: String,
    /// The agent's version.
    pub agent_version: String,
    /// `cuda` or `fake`.
    pub backend: String,
    /// Every GPU it sees.
    pub devices: Vec<DeviceView>,
    /// The machine's IP addresses, the one facing the portal first.
    pub addresses: Vec<String>,
    /// The account it runs as.
    pub run_as: Option<String>,
    /// Why the CUDA driver could not be used.
    pub cuda_problem: Option<String>,
}

/// What a registration ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistrationOutcome {
    /// Jobs that were running when the agent restarted.
    pub running_failed: u64,
    /// Queued jobs for GPUs the agent does not report.
    pub unrunnable_failed: u64,
}

/// GPUs as people name them: `0 (0000:10:00.0), 1 (0000:11:00.0)`, or `no GPU`.
pub fn device_list(devices: &[DeviceView]) -> String {
    if devices.is_empty() {
        return "no GPU".into();
    }
    devices
        .iter()
        .map(|d| format!("{} ({})", d.index, d.pci_bus_id))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A job's stored parameters (`[name, value]` pairs) as `name`, text: what people read and
/// what the agent passes on as `--param name=text`.
pub fn param_texts(params_json: &str) -> Result<Vec<(String, String)>, StoreError> {
    let params: Vec<(String, serde_json::Value)> =
        serde_json::from_str(params_json).map_err(|e| decode_error("a job's parameters", e))?;
    Ok(params
        .into_iter()
        .map(|(name, value)| {
            let text = match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (name, text)
        })
        .collect())
}

fn job_view(row: &AnyRow) -> Result<JobView, StoreError> {
    let params_json: String = row.try_get("params_json")?;
    let result: Option<String> = row.try_get("result_json")?;
    let result: Option<JobResult> = result
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|e| decode_error("a job's result", e))?;
    let vm_id: Option<i64> = row.try_get("vm_id")?;
    let owner: Option<String> = row.try_get("owner")?;
    let agent_name: String = row.try_get("agent_name")?;
    let target = target_label(vm_id, owner.as_deref(), &agent_name);
    let optional_time = |column: &str| -> Result<Option<String>, StoreError> {
        Ok(row.try_get::<Option<i64>, _>(column)?.map(rfc3339))
    };
    Ok(JobView {
        id: row.try_get("id")?,
        plugin_id: row.try_get("plugin_id")?,
        plugin: row.try_get("plugin")?,
        plugin_version: row.try_get("plugin_version")?,
        agent_id: row.try_get("agent_id")?,
        target,
        target_kind: row.try_get("agent_kind")?,
        label: row.try_get("label")?,
        batch: row.try_get("batch")?,
        state: row.try_get("state")?,
        progress: row.try_get("progress")?,
        progress_note: row.try_get("progress_note")?,
        error: row.try_get("error")?,
        requested_by: row.try_get("requested_by")?,
        params: param_texts(&params_json)?,
        device_wanted: row.try_get("device_wanted")?,
        devices: row.try_get("devices")?,
        created_at: rfc3339(row.try_get("created_at")?),
        started_at: optional_time("started_at")?,
        finished_at: optional_time("finished_at")?,
        summary: result
            .as_ref()
            .map(|r| summarise(&r.metrics))
            .unwrap_or_default(),
        result,
    })
}

/// Who may see which jobs and agents: everything (admins), or one user's share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Admins.
    All,
    /// A user: their VMs' agents, the native hosts, and jobs they queued or that ran on their
    /// VMs or on a native host (native results are everyone's baseline).
    User(i64),
}

impl Scope {
    pub(super) fn user(self) -> i64 {
        match self {
            Scope::All => 0,
            Scope::User(id) => id,
        }
    }
}

const JOB_QUERY: &str = "SELECT j.id, j.plugin_id, p.name AS plugin, p.version AS plugin_version,
        j.agent_id, a.name AS agent_name, a.kind AS agent_kind, a.vm_id, vu.name AS owner,
        j.label, j.batch, j.state, j.progress, j.progress_note, j.error, u.name AS requested_by,
        j.params_json, j.device_wanted, j.devices, j.created_at, j.started_at, j.finished_at,
        j.result_json
    FROM jobs j JOIN plugins p ON p.id = j.plugin_id JOIN agents a ON a.id = j.agent_id
    JOIN users u ON u.id = j.requested_by
    LEFT JOIN vms v ON v.id = a.vm_id LEFT JOIN users vu ON vu.id = v.user_id";

impl Store {
    /// Adds an agent credential; a taken name or VM is a unique violation.
    pub async fn create_agent(
        &self,
        kind: &str,
        name: &str,
        vm_id: Option<i64>,
        token_hash: &str,
        created_by: &str,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO agents (kind, name, vm_id, token_hash, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(kind)
        .bind(name)
        .bind(vm_id)
        .bind(token_hash)
        .bind(created_by)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// The agent a token belongs to, unless revoked. Marks it seen.
    pub async fn agent_by_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents a LEFT JOIN vms v ON v.id = a.vm_id
             WHERE a.token_hash = $1 AND a.revoked_at IS NULL"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(agent) = row.as_ref().map(agent_record).transpose()? else {
            return Ok(None);
        };
        sqlx::query("UPDATE agents SET last_seen_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(agent.id)
            .execute(&self.pool)
            .await?;
        Ok(Some(agent))
    }

    /// One agent, revoked or not.
    pub async fn agent(&self, id: i64) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents a LEFT JOIN vms v ON v.id = a.vm_id WHERE a.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(agent_record).transpose()
    }

    /// What an agent said about itself when it (re)started, and the verdict on its GPUs.
    /// Jobs it was running are failed: the process that ran them is gone. So are queued jobs
    /// that cannot start on the GPUs it reports, so that they never block its queue.
    pub async fn record_registration(
        &self,
        id: i64,
        report: &AgentReport,
        verification: Option<&str>,
    ) -> Result<RegistrationOutcome, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE agents SET registered_at = $1, last_seen_at = $1, hostname = $2,
                 agent_version = $3, backend = $4, devices_json = $5, verification = $6,
                 addresses_json = $7, run_as = $8, cuda_problem = $9
             WHERE id = $10",
        )
        .bind(now)
        .bind(&report.hostname)
        .bind(&report.agent_version)
        .bind(&report.backend)
        .bind(serde_json::to_string(&report.devices).expect("devices serialise"))
        .bind(verification)
        .bind(serde_json::to_string(&report.addresses).expect("addresses serialise"))
        .bind(report.run_as.as_deref())
        .bind(report.cuda_problem.as_deref())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let failed = sqlx::query(
            "UPDATE jobs SET state = 'failed', finished_at = $1, updated_at = $1,
                 error = 'the agent restarted while the job ran'
             WHERE agent_id = $2 AND state = 'running'",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Queued jobs that can never start here would hold the queue's head for ever: a job for a
        // GPU the agent no longer reports, or any job on an agent that reports none.
        let indexes: Vec<i64> = report.devices.iter().map(|d| d.index).collect();
        let queued = sqlx::query(
            "SELECT id, device_wanted FROM jobs WHERE agent_id = $1 AND state = 'queued'",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let mut unrunnable = 0;
        for row in queued {
            let wanted: Option<i64> = row.try_get("device_wanted")?;
            let why = match wanted {
                _ if indexes.is_empty() => format!(
                    "the agent reports no GPU{}",
                    report
                        .cuda_problem
                        .as_deref()
                        .map(|p| format!(": {p}"))
                        .unwrap_or_default()
                ),
                Some(index) if !indexes.contains(&index) => format!(
                    "the agent reports no GPU {index} (it has {})",
                    device_list(&report.devices)
                ),
                _ => continue,
            };
            unrunnable += sqlx::query(
                "UPDATE jobs SET state = 'failed', finished_at = $1, updated_at = $1, error = $2
                 WHERE id = $3 AND state = 'queued'",
            )
            .bind(now)
            .bind(why)
            .bind(row.try_get::<i64, _>("id")?)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(RegistrationOutcome {
            running_failed: failed,
            unrunnable_failed: unrunnable,
        })
    }

    /// Agents in `scope`; those not seen since `online_after` (Unix ms) are offline.
    pub async fn agents(
        &self,
        scope: Scope,
        online_after: i64,
    ) -> Result<Vec<AgentView>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.id, a.kind, a.name, a.vm_id, u.name AS owner, a.last_seen_at, a.revoked_at,
                 a.hostname, a.agent_version, a.backend, a.devices_json, a.verification,
                 a.addresses_json, a.run_as, a.cuda_problem
             FROM agents a LEFT JOIN vms v ON v.id = a.vm_id LEFT JOIN users u ON u.id = v.user_id
             WHERE $1 = 0 OR a.kind = 'host' OR v.user_id = $1
             ORDER BY a.kind, a.id DESC",
        )
        .bind(scope.user())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| agent_view(r, online_after)).collect()
    }

    /// Revokes an agent's token and cancels its unfinished jobs with `reason`.
    pub async fn revoke_agent(&self, id: i64, reason: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let revoked =
            sqlx::query("UPDATE agents SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        sqlx::query(
            "UPDATE jobs SET state = 'cancelled', error = $1, finished_at = $2, updated_at = $2
             WHERE agent_id = $3 AND state IN ('queued', 'running')",
        )
        .bind(reason)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(revoked > 0)
    }

    /// The GPUs an agent last reported.
    pub async fn agent_devices(&self, id: i64) -> Result<Vec<DeviceView>, StoreError> {
        let row = sqlx::query("SELECT devices_json FROM agents WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row.map(|r| r.try_get::<Option<String>, _>("devices_json")) {
            Some(Ok(Some(text))) => {
                serde_json::from_str(&text).map_err(|e| decode_error("an agent's devices", e))
            }
            Some(Err(e)) => Err(e.into()),
            _ => Ok(Vec::new()),
        }
    }

    /// Unrevoked agents whose VM is released or failed: `(agent, vm)`.
    pub async fn agents_of_gone_vms(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.id, a.vm_id FROM agents a JOIN vms v ON v.id = a.vm_id
             WHERE a.revoked_at IS NULL AND v.state IN ('released', 'failed')",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("vm_id")?)))
            .collect()
    }

    /// Queues a job; returns its id.
    pub async fn create_job(&self, job: &NewJob<'_>) -> Result<i64, StoreError> {
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO jobs (agent_id, plugin_id, params_json, device_wanted, all_devices, label,
                 batch, requested_by, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING id",
        )
        .bind(job.agent_id)
        .bind(job.plugin_id)
        .bind(job.params_json)
        .bind(job.device_wanted)
        .bind(job.all_devices)
        .bind(job.label)
        .bind(job.batch)
        .bind(job.requested_by)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Queues `jobs`, all of one user for one agent, all or none. On a native host the user's
    /// unfinished (queued or running) jobs there, these included, may not pass `native_limit`.
    ///
    /// The limit holds however many submissions arrive at once: the transaction first writes
    /// the user's row ([`super::hold_user`]), which serialises one user's queuing on both databases
    /// (PostgreSQL's row lock, SQLite's single writer), and each insert is conditional on the
    /// count in the same statement. A job the condition refuses rolls every one back.
    pub async fn queue_jobs(
        &self,
        jobs: &[NewJob<'_>],
        native_limit: i64,
    ) -> Result<Queuing, StoreError> {
        let Some(first) = jobs.first() else {
            return Ok(Queuing::Queued(Vec::new()));
        };
        debug_assert!(
            jobs.iter()
                .all(|j| j.requested_by == first.requested_by && j.agent_id == first.agent_id),
            "one user's jobs for one agent"
        );
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        super::hold_user(&mut tx, first.requested_by).await?;
        let mut ids = Vec::with_capacity(jobs.len());
        for job in jobs {
            let row = sqlx::query(
                "INSERT INTO jobs (agent_id, plugin_id, params_json, device_wanted, all_devices,
                     label, batch, requested_by, created_at, updated_at)
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $9
                 WHERE NOT EXISTS (SELECT 1 FROM agents WHERE id = $1 AND kind = 'host')
                    OR (SELECT COUNT(*) FROM jobs j JOIN agents a ON a.id = j.agent_id
                        WHERE j.requested_by = $8 AND a.kind = 'host'
                          AND j.state IN ('queued', 'running')) < $10
                 RETURNING id",
            )
            .bind(job.agent_id)
            .bind(job.plugin_id)
            .bind(job.params_json)
            .bind(job.device_wanted)
            .bind(job.all_devices)
            .bind(job.label)
            .bind(job.batch)
            .bind(job.requested_by)
            .bind(now)
            .bind(native_limit)
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                Some(row) => ids.push(row.try_get("id")?),
                None => {
                    tx.rollback().await?;
                    return Ok(Queuing::OverLimit {
                        unfinished: self.unfinished_native_jobs(first.requested_by).await?,
                    });
                }
            }
        }
        tx.commit().await?;
        Ok(Queuing::Queued(ids))
    }

    /// The user's queued and running jobs on native hosts.
    pub async fn unfinished_native_jobs(&self, user_id: i64) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS unfinished FROM jobs j JOIN agents a ON a.id = j.agent_id
             WHERE j.requested_by = $1 AND a.kind = 'host' AND j.state IN ('queued', 'running')",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("unfinished")?)
    }

    /// Gives the agent its oldest queued job if the GPUs it needs are free: `free` are the
    /// devices the agent has idle. The oldest job waits for its GPUs rather than being
    /// overtaken; a job on every GPU waits until all that the agent reported are idle.
    pub async fn take_job(
        &self,
        agent_id: i64,
        free: &[i64],
    ) -> Result<Option<TakenJob>, StoreError> {
        // Devices the database thinks are busy are not free, whatever the agent says.
        let running =
            sqlx::query("SELECT devices FROM jobs WHERE agent_id = $1 AND state = 'running'")
                .bind(agent_id)
                .fetch_all(&self.pool)
                .await?;
        let busy: Vec<i64> = running
            .iter()
            .filter_map(|r| r.try_get::<Option<String>, _>("devices").ok().flatten())
            .flat_map(|d| {
                d.split(',')
                    .filter_map(|i| i.trim().parse().ok())
                    .collect::<Vec<i64>>()
            })
            .collect();
        let free: Vec<i64> = free.iter().copied().filter(|d| !busy.contains(d)).collect();
        for _attempt in 0..3 {
            let Some(head) = sqlx::query(
                "SELECT j.id, j.device_wanted, j.all_devices, j.params_json, p.name, p.version,
                     p.sha256
                 FROM jobs j JOIN plugins p ON p.id = j.plugin_id
                 WHERE j.agent_id = $1 AND j.state = 'queued' ORDER BY j.id LIMIT 1",
            )
            .bind(agent_id)
            .fetch_optional(&self.pool)
            .await?
            else {
                return Ok(None);
            };
            let wanted: Option<i64> = head.try_get("device_wanted")?;
            let devices: Vec<i64> = if flag(&head, "all_devices")? {
                let mut all: Vec<i64> = self
                    .agent_devices(agent_id)
                    .await?
                    .iter()
                    .map(|d| d.index)
                    .collect();
                all.sort_unstable();
                if all.is_empty() || !all.iter().all(|d| free.contains(d)) {
                    return Ok(None);
                }
                all
            } else {
                match wanted {
                    Some(d) if free.contains(&d) => vec![d],
                    Some(_) => return Ok(None),
                    None => match free.iter().min() {
                        Some(d) => vec![*d],
                        None => return Ok(None),
                    },
                }
            };
            let listed = devices
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let id: i64 = head.try_get("id")?;
            let now = now_ms();
            let taken = sqlx::query(
                "UPDATE jobs SET state = 'running', devices = $1, started_at = $2, updated_at = $2
                 WHERE id = $3 AND state = 'queued'",
            )
            .bind(&listed)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if taken == 1 {
                return Ok(Some(TakenJob {
                    id,
                    plugin: (
                        head.try_get("name")?,
                        head.try_get("version")?,
                        head.try_get("sha256")?,
                    ),
                    params_json: head.try_get("params_json")?,
                    devices,
                }));
            }
            // Cancelled or taken in between: look at the next one.
        }
        Ok(None)
    }

    /// Records a running job's progress; returns its state (`cancelled` tells the agent to stop),
    /// or `None` when the job is not this agent's.
    pub async fn job_progress(
        &self,
        agent_id: i64,
        id: i64,
        fraction: f64,
        note: &str,
    ) -> Result<Option<String>, StoreError> {
        sqlx::query(
            "UPDATE jobs SET progress = $1, progress_note = $2, updated_at = $3
             WHERE id = $4 AND agent_id = $5 AND state = 'running'",
        )
        .bind(fraction.clamp(0.0, 1.0))
        .bind(note)
        .bind(now_ms())
        .bind(id)
        .bind(agent_id)
        .execute(&self.pool)
        .await?;
        self.job_state(agent_id, id).await
    }

    /// The state of one of this agent's jobs; `None` when it is not the agent's.
    pub async fn job_state(&self, agent_id: i64, id: i64) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT state FROM jobs WHERE id = $1 AND agent_id = $2")
            .bind(id)
            .bind(agent_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("state")).transpose()?)
    }

    /// Ends a running job of this agent; false when it is not running (cancelled, ended, or
    /// not this agent's), and nothing changes.
    pub async fn finish_job(
        &self,
        agent_id: i64,
        id: i64,
        end: &JobEnd<'_>,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let result = end
            .result
            .map(|r| serde_json::to_string(r).expect("results serialise"));
        let done = sqlx::query(
            "UPDATE jobs SET state = $1, error = $2, result_json = $3, finished_at = $4,
                 updated_at = $4, progress = CASE WHEN $1 = 'succeeded' THEN 1.0 ELSE progress END
             WHERE id = $5 AND agent_id = $6 AND state = 'running'",
        )
        .bind(end.state)
        .bind(end.error)
        .bind(result)
        .bind(now)
        .bind(id)
        .bind(agent_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// The ids among `ids` that are no longer running on this agent (cancelled or ended).
    pub async fn stopped_jobs(&self, agent_id: i64, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        let mut stopped = Vec::new();
        for id in ids {
            if self.job_state(agent_id, *id).await?.as_deref() != Some("running") {
                stopped.push(*id);
            }
        }
        Ok(stopped)
    }

    /// Cancels a queued or running job; false when it had ended already.
    pub async fn cancel_job(&self, id: i64, reason: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE jobs SET state = 'cancelled', error = $1, finished_at = $2, updated_at = $2
             WHERE id = $3 AND state IN ('queued', 'running')",
        )
        .bind(reason)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// Fails the running jobs of agents not seen since `seen_before` (Unix ms); returns them.
    pub async fn fail_jobs_of_silent_agents(
        &self,
        seen_before: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT j.id FROM jobs j JOIN agents a ON a.id = j.agent_id
             WHERE j.state = 'running' AND (a.last_seen_at IS NULL OR a.last_seen_at < $1)",
        )
        .bind(seen_before)
        .fetch_all(&self.pool)
        .await?;
        let mut failed = Vec::new();
        for row in rows {
            let id: i64 = row.try_get("id")?;
            let now = now_ms();
            let done = sqlx::query(
                "UPDATE jobs SET state = 'failed', finished_at = $1, updated_at = $1,
                     error = 'the agent stopped answering while the job ran'
                 WHERE id = $2 AND state = 'running'",
            )
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if done == 1 {
                failed.push(id);
            }
        }
        Ok(failed)
    }

    /// Jobs in `scope` matching `filter`, newest first, at most `limit`.
    pub async fn jobs(
        &self,
        scope: Scope,
        filter: &JobFilter,
        window: Window,
    ) -> Result<Vec<JobView>, StoreError> {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let rows = sqlx::query(&format!(
            "{JOB_QUERY}
             WHERE ($1 = 0 OR j.requested_by = $1 OR v.user_id = $1 OR a.kind = 'host')
               AND ($2 = 0 OR j.agent_id = $2) AND ($3 = '' OR p.name = $3)
               AND ($4 = '' OR j.batch = $4) AND ($5 = '' OR j.state = $5)
               AND ($6 = 0 OR j.id < $6)
             ORDER BY j.id DESC LIMIT $7"
        ))
        .bind(scope.user())
        .bind(filter.agent.unwrap_or(0))
        .bind(text(&filter.plugin))
        .bind(text(&filter.batch))
        .bind(text(&filter.state))
        .bind(window.before_id())
        .bind(window.max_rows())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_view).collect()
    }

    /// One job, if it is in `scope`.
    pub async fn job(&self, scope: Scope, id: i64) -> Result<Option<JobView>, StoreError> {
        let row = sqlx::query(&format!(
            "{JOB_QUERY}
             WHERE j.id = $1 AND ($2 = 0 OR j.requested_by = $2 OR v.user_id = $2 OR a.kind = 'host')"
        ))
        .bind(id)
        .bind(scope.user())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job_view).transpose()
    }

    /// Who queued a job, and on which agent.
    pub async fn job_owner(&self, id: i64) -> Result<Option<(i64, i64)>, StoreError> {
        let row = sqlx::query("SELECT requested_by, agent_id FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("requested_by")?, r.try_get("agent_id")?)))
            .transpose()
    }

    /// Whether the agent has (or had) a job of the plugin with this hash.
    pub async fn agent_has_plugin(&self, agent_id: i64, sha256: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 AS found FROM jobs j JOIN plugins p ON p.id = j.plugin_id
             WHERE j.agent_id = $1 AND p.sha256 = $2 LIMIT 1",
        )
        .bind(agent_id)
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }
}
