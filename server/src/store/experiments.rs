//! Queries for experiments: their matrix (benchmarks × targets), the repetitions queued so far,
//! and the jobs that carry them out.
//!
//! Every step is a conditional update on the state it leaves, so that a server killed at any
//! point, or two servers driving the same experiment, neither lose a repetition nor queue one
//! twice: a repetition's jobs are inserted in the transaction that moves `queued_repetitions`
//! from `r` to `r + 1`, and a unique index allows one job per cell.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Scope, Store, StoreError, flag, now_ms};

/// A new experiment, its benchmarks resolved and its targets chosen.
#[derive(Debug, Clone)]
pub struct NewExperiment {
    /// For people.
    pub name: String,
    /// Who made it.
    pub owner_id: i64,
    /// `study` for the study's suite.
    pub preset: Option<String>,
    /// Repetitions asked for.
    pub repetitions: i64,
    /// The benchmarks, in order.
    pub benchmarks: Vec<NewBenchmark>,
    /// The targets, in order.
    pub targets: Vec<NewTarget>,
}

/// One benchmark of a new experiment.
#[derive(Debug, Clone)]
pub struct NewBenchmark {
    /// For the charts.
    pub label: String,
    /// The plugin version.
    pub plugin_id: i64,
    /// The resolved parameters, as jobs store them.
    pub params_json: String,
    /// The plugin runs on every GPU of the agent at once.
    pub all_devices: bool,
}

/// One target of a new experiment.
#[derive(Debug, Clone)]
pub struct NewTarget {
    /// For the charts.
    pub label: String,
    /// `native`, `vm` or `variant`.
    pub kind: String,
    /// The agent (a variant gets it later).
    pub agent_id: Option<i64>,
    /// A variant's request.
    pub request_id: Option<i64>,
    /// The GPU model.
    pub gpu_model: Option<String>,
    /// A VM's vCPUs.
    pub vcpus: Option<i64>,
    /// A VM's hypervisor.
    pub hypervisor: Option<String>,
}

/// An experiment's row, with its progress.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentRecord {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Who made it.
    pub owner_id: i64,
    /// Their name.
    pub owner: String,
    /// `preparing`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// `study` for the study's suite.
    pub preset: Option<String>,
    /// Repetitions asked for.
    pub repetitions: i64,
    /// Repetitions queued so far.
    pub queued_repetitions: i64,
    /// What it waits for, or why it ended.
    pub note: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub finished_at: Option<i64>,
    /// Its benchmarks.
    pub benchmarks: i64,
    /// Its targets.
    pub targets: i64,
    /// Jobs ended.
    pub jobs_done: i64,
    /// Jobs failed or cancelled.
    pub jobs_failed: i64,
}

/// A benchmark as stored, with its plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchmarkRecord {
    /// Its place.
    pub position: i64,
    /// For the charts.
    pub label: String,
    /// The plugin version.
    pub plugin_id: i64,
    /// The plugin's name.
    pub plugin: String,
    /// Its version.
    pub plugin_version: String,
    /// The resolved parameters.
    pub params_json: String,
    /// Every GPU of the agent at once.
    pub all_devices: bool,
}

/// A target as stored, with its agent's and VM's state.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetRecord {
    /// Its place.
    pub position: i64,
    /// For the charts.
    pub label: String,
    /// `native`, `vm` or `variant`.
    pub kind: String,
    /// The agent that runs its jobs.
    pub agent_id: Option<i64>,
    /// A variant's request.
    pub request_id: Option<i64>,
    /// The GPU model.
    pub gpu_model: Option<String>,
    /// A VM's vCPUs.
    pub vcpus: Option<i64>,
    /// A VM's hypervisor.
    pub hypervisor: Option<String>,
    /// When a variant's VM was released.
    pub released_at: Option<i64>,
    /// The request's state.
    pub request_state: Option<String>,
    /// Why the request waits or was denied.
    pub request_reason: Option<String>,
    /// The VM (the agent's, or the variant request's).
    pub vm_id: Option<i64>,
    /// Its state.
    pub vm_state: Option<String>,
    /// Why it failed.
    pub vm_reason: Option<String>,
    /// The agent of the VM, once it exists.
    pub vm_agent: Option<i64>,
    /// When the agent last registered.
    pub agent_registered_at: Option<i64>,
    /// When it was revoked.
    pub agent_revoked_at: Option<i64>,
    /// The GPUs it reported, as JSON.
    pub agent_devices_json: Option<String>,
    /// `fake` or `cuda`.
    pub agent_backend: Option<String>,
}

/// One job of an experiment, with what it produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentJob {
    /// The job.
    pub id: i64,
    /// Its repetition (1-based).
    pub repetition: i64,
    /// Its target's position.
    pub target: i64,
    /// Its benchmark's position.
    pub benchmark: i64,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// Its result, as JSON.
    pub result_json: Option<String>,
}

const EXPERIMENT_QUERY: &str = "SELECT e.id, e.name, e.owner_id, u.name AS owner, e.state,
        e.preset, e.repetitions, e.queued_repetitions, e.note, e.created_at, e.finished_at,
        (SELECT COUNT(*) FROM experiment_benchmarks b WHERE b.experiment_id = e.id) AS benchmarks,
        (SELECT COUNT(*) FROM experiment_targets t WHERE t.experiment_id = e.id) AS targets,
        (SELECT COUNT(*) FROM jobs j WHERE j.experiment_id = e.id
            AND j.state IN ('succeeded', 'failed', 'cancelled')) AS jobs_done,
        (SELECT COUNT(*) FROM jobs j WHERE j.experiment_id = e.id
            AND j.state IN ('failed', 'cancelled')) AS jobs_failed
    FROM experiments e JOIN users u ON u.id = e.owner_id";

fn experiment_record(row: &AnyRow) -> Result<ExperimentRecord, StoreError> {
    Ok(ExperimentRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        owner_id: row.try_get("owner_id")?,
        owner: row.try_get("owner")?,
        state: row.try_get("state")?,
        preset: row.try_get("preset")?,
        repetitions: row.try_get("repetitions")?,
        queued_repetitions: row.try_get("queued_repetitions")?,
        note: row.try_get("note")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
        benchmarks: row.try_get("benchmarks")?,
        targets: row.try_get("targets")?,
        jobs_done: row.try_get("jobs_done")?,
        jobs_failed: row.try_get("jobs_failed")?,
    })
}

impl Store {
    /// Records a new experiment with its benchmarks and targets, all or nothing; returns its id.
    pub async fn create_experiment(&self, new: &NewExperiment) -> Result<i64, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO experiments (name, owner_id, preset, repetitions, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
        )
        .bind(&new.name)
        .bind(new.owner_id)
        .bind(&new.preset)
        .bind(new.repetitions)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.try_get("id")?;
        for (position, b) in new.benchmarks.iter().enumerate() {
            sqlx::query(
                "INSERT INTO experiment_benchmarks
                     (experiment_id, position, label, plugin_id, params_json, all_devices)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(position as i64)
            .bind(&b.label)
            .bind(b.plugin_id)
            .bind(&b.params_json)
            .bind(b.all_devices)
            .execute(&mut *tx)
            .await?;
        }
        for (position, t) in new.targets.iter().enumerate() {
            sqlx::query(
                "INSERT INTO experiment_targets (experiment_id, position, label, kind, agent_id,
                     request_id, gpu_model, vcpus, hypervisor)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(id)
            .bind(position as i64)
            .bind(&t.label)
            .bind(&t.kind)
            .bind(t.agent_id)
            .bind(t.request_id)
            .bind(&t.gpu_model)
            .bind(t.vcpus)
            .bind(&t.hypervisor)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// The experiments in `scope`, newest first.
    pub async fn experiments(&self, scope: Scope) -> Result<Vec<ExperimentRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "{EXPERIMENT_QUERY} WHERE ($1 = 0 OR e.owner_id = $1) ORDER BY e.id DESC LIMIT 500"
        ))
        .bind(scope.user())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(experiment_record).collect()
    }

    /// One experiment, whoever owns it.
    pub async fn experiment(&self, id: i64) -> Result<Option<ExperimentRecord>, StoreError> {
        let row = sqlx::query(&format!("{EXPERIMENT_QUERY} WHERE e.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(experiment_record).transpose()
    }

    /// The experiments that are not finished, and finished ones whose variants are still held.
    pub async fn experiments_to_drive(&self) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.id FROM experiments e WHERE e.state IN ('preparing', 'running')
                OR EXISTS (SELECT 1 FROM experiment_targets t WHERE t.experiment_id = e.id
                           AND t.kind = 'variant' AND t.released_at IS NULL)
             ORDER BY e.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// An experiment's benchmarks, in order.
    pub async fn experiment_benchmarks(&self, id: i64) -> Result<Vec<BenchmarkRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT b.position, b.label, b.plugin_id, p.name, p.version, b.params_json,
                 b.all_devices
             FROM experiment_benchmarks b JOIN plugins p ON p.id = b.plugin_id
             WHERE b.experiment_id = $1 ORDER BY b.position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(BenchmarkRecord {
                    position: r.try_get("position")?,
                    label: r.try_get("label")?,
                    plugin_id: r.try_get("plugin_id")?,
                    plugin: r.try_get("name")?,
                    plugin_version: r.try_get("version")?,
                    params_json: r.try_get("params_json")?,
                    all_devices: flag(r, "all_devices")?,
                })
            })
            .collect()
    }

    /// An experiment's targets, in order, with the state of their requests, VMs and agents.
    pub async fn experiment_targets(&self, id: i64) -> Result<Vec<TargetRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.position, t.label, t.kind, t.agent_id, t.request_id, t.gpu_model, t.vcpus,
                 t.hypervisor, t.released_at, r.state AS request_state,
                 r.state_reason AS request_reason, COALESCE(a.vm_id, rv.id) AS vm_id,
                 COALESCE(av.state, rv.state) AS vm_state,
                 COALESCE(av.state_reason, rv.state_reason) AS vm_reason, ra.id AS vm_agent,
                 COALESCE(a.registered_at, ra.registered_at) AS agent_registered_at,
                 COALESCE(a.revoked_at, ra.revoked_at) AS agent_revoked_at,
                 COALESCE(a.devices_json, ra.devices_json) AS agent_devices_json,
                 COALESCE(a.backend, ra.backend) AS agent_backend
             FROM experiment_targets t
             LEFT JOIN agents a ON a.id = t.agent_id
             LEFT JOIN vms av ON av.id = a.vm_id
             LEFT JOIN gpu_requests r ON r.id = t.request_id
             LEFT JOIN vms rv ON rv.request_id = t.request_id
             LEFT JOIN agents ra ON ra.vm_id = rv.id
             WHERE t.experiment_id = $1 ORDER BY t.position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TargetRecord {
                    position: r.try_get("position")?,
                    label: r.try_get("label")?,
                    kind: r.try_get("kind")?,
                    agent_id: r.try_get("agent_id")?,
                    request_id: r.try_get("request_id")?,
                    gpu_model: r.try_get("gpu_model")?,
                    vcpus: r.try_get("vcpus")?,
                    hypervisor: r.try_get("hypervisor")?,
                    released_at: r.try_get("released_at")?,
                    request_state: r.try_get("request_state")?,
                    request_reason: r.try_get("request_reason")?,
                    vm_id: r.try_get("vm_id")?,
                    vm_state: r.try_get("vm_state")?,
                    vm_reason: r.try_get("vm_reason")?,
                    vm_agent: r.try_get("vm_agent")?,
                    agent_registered_at: r.try_get("agent_registered_at")?,
                    agent_revoked_at: r.try_get("agent_revoked_at")?,
                    agent_devices_json: r.try_get("agent_devices_json")?,
                    agent_backend: r.try_get("agent_backend")?,
                })
            })
            .collect()
    }

    /// Gives a variant target the agent of its VM, once.
    pub async fn set_target_agent(
        &self,
        id: i64,
        position: i64,
        agent_id: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE experiment_targets SET agent_id = $1
             WHERE experiment_id = $2 AND position = $3 AND agent_id IS NULL",
        )
        .bind(agent_id)
        .bind(id)
        .bind(position)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves an experiment from `from` to `to` (with a note); false when it was not in `from`.
    pub async fn move_experiment(
        &self,
        id: i64,
        from: &str,
        to: &str,
        note: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let finished = matches!(to, "succeeded" | "failed" | "cancelled");
        let done = sqlx::query(
            "UPDATE experiments SET state = $1, note = $2, updated_at = $3,
                 started_at = CASE WHEN $1 = 'running' THEN $3 ELSE started_at END,
                 finished_at = CASE WHEN $4 THEN $3 ELSE finished_at END
             WHERE id = $5 AND state = $6",
        )
        .bind(to)
        .bind(note)
        .bind(now)
        .bind(finished)
        .bind(id)
        .bind(from)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets what an unfinished experiment waits for.
    pub async fn note_experiment(&self, id: i64, note: Option<&str>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE experiments SET note = $1
             WHERE id = $2 AND state IN ('preparing', 'running')
               AND (note IS NULL OR $1 IS NULL OR note <> $1)",
        )
        .bind(note)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Cancels an unfinished experiment and its unfinished jobs, in one transaction; false when
    /// it had ended already.
    pub async fn cancel_experiment(&self, id: i64, reason: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE experiments SET state = 'cancelled', note = $1, finished_at = $2,
                 updated_at = $2
             WHERE id = $3 AND state IN ('preparing', 'running')",
        )
        .bind(reason)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 1 {
            sqlx::query(
                "UPDATE jobs SET state = 'cancelled', error = $1, finished_at = $2, updated_at = $2
                 WHERE experiment_id = $3 AND state IN ('queued', 'running')",
            )
            .bind(reason)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(done == 1)
    }

    /// Queues repetition `repetition` (1-based) of a running experiment that has queued the one
    /// before: `jobs` are `(target, benchmark, job)` in the order they should run. False when
    /// another pass (or another server) did it first, or the experiment is no longer running.
    pub async fn queue_repetition(
        &self,
        id: i64,
        repetition: i64,
        jobs: &[(i64, i64, super::NewJob<'_>)],
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE experiments SET queued_repetitions = $1, updated_at = $2
             WHERE id = $3 AND state = 'running' AND queued_repetitions = $4",
        )
        .bind(repetition)
        .bind(now)
        .bind(id)
        .bind(repetition - 1)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        for (target, benchmark, job) in jobs {
            sqlx::query(
                "INSERT INTO jobs (agent_id, plugin_id, params_json, device_wanted, all_devices,
                     label, batch, requested_by, created_at, updated_at, experiment_id,
                     repetition, target_position, benchmark_position)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11, $12, $13)",
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
            .bind(id)
            .bind(repetition)
            .bind(target)
            .bind(benchmark)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Every job of an experiment, in the order they were queued.
    pub async fn experiment_jobs(&self, id: i64) -> Result<Vec<ExperimentJob>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, repetition, target_position, benchmark_position, state, result_json
             FROM jobs WHERE experiment_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ExperimentJob {
                    id: r.try_get("id")?,
                    repetition: r.try_get("repetition")?,
                    target: r.try_get("target_position")?,
                    benchmark: r.try_get("benchmark_position")?,
                    state: r.try_get("state")?,
                    result_json: r.try_get("result_json")?,
                })
            })
            .collect()
    }

    /// Marks a variant target's VM as released.
    pub async fn mark_target_released(&self, id: i64, position: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE experiment_targets SET released_at = $1
             WHERE experiment_id = $2 AND position = $3 AND released_at IS NULL",
        )
        .bind(now_ms())
        .bind(id)
        .bind(position)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
