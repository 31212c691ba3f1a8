//! Queries for VMs, their leases, per-user quota overrides, SSH keys and the audit log.

use std::collections::HashMap;

use passage_app::inventory::{Spread, StartupTimes};
use passage_app::vms::{AuditEntry, AuditFilter, VmView};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::claims::{ClaimOutcome, FreeGpu, Image};
use super::{Store, StoreError, Window, now_ms, rfc3339};

/// Everything provisioning needs to know about a placed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionPlan {
    /// The request.
    pub request_id: i64,
    /// Its state (`placed` when it may be provisioned).
    pub state: String,
    /// The owner.
    pub user_id: i64,
    /// The owner's name.
    pub owner: String,
    /// The owner's SSH public key, if they gave one.
    pub ssh_public_key: Option<String>,
    /// Virtual CPUs.
    pub vcpus: i64,
    /// Memory in MiB.
    pub memory_mib: i64,
    /// Disk in GiB.
    pub disk_gib: i64,
    /// `kvm` or `xen`.
    pub hypervisor: String,
    /// Lease in hours.
    pub lease_hours: i64,
    /// The host the GPUs are on.
    pub host: Option<String>,
    /// Their NUMA node, when they share one.
    pub numa_node: Option<i64>,
    /// The base image, when it is still registered.
    pub image: Option<Image>,
    /// Every claimed PCI function (GPUs and their group members).
    pub functions: Vec<String>,
}

/// A VM's stored record, for the server's own use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRecord {
    /// Its id.
    pub id: i64,
    /// The request it was made for.
    pub request_id: i64,
    /// The owner.
    pub user_id: i64,
    /// The host.
    pub host: String,
    /// The domain's name, once defined.
    pub domain: Option<String>,
    /// The VM's state.
    pub state: String,
    /// Storage pool of its volume.
    pub pool: Option<String>,
    /// Its volume, once created.
    pub volume: Option<String>,
    /// SHA-256 of the cloud-init seed key.
    pub seed_key_hash: Option<String>,
    /// End of the lease, Unix ms.
    pub lease_expires_at: i64,
    /// Last change, Unix ms.
    pub updated_at: i64,
    /// The libvirt UUID Passage gave its domain (older VMs have none).
    pub domain_uuid: Option<String>,
}

/// What provisioning made so far, recorded step by step so that a crash can be undone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmParts {
    /// The domain's name.
    pub domain: Option<String>,
    /// libvirt's domain type.
    pub domain_type: Option<String>,
    /// The storage pool.
    pub pool: Option<String>,
    /// The volume.
    pub volume: Option<String>,
    /// SHA-256 of the seed key.
    pub seed_key_hash: Option<String>,
    /// The libvirt UUID given to the domain.
    pub domain_uuid: Option<String>,
}

/// A user's own limits, overriding the configured quotas where set.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct QuotaOverride {
    /// GPUs held at once.
    pub gpus: Option<i64>,
    /// Open requests at once.
    pub requests: Option<i64>,
    /// The longest lease.
    pub lease_hours: Option<i64>,
}

/// One audit record to write.
#[derive(Debug, Clone, Default)]
pub struct AuditRecord<'a> {
    /// A user name, or `system`.
    pub actor: &'a str,
    /// e.g. `vm.release`.
    pub action: &'a str,
    /// e.g. `vm 3`.
    pub subject: String,
    /// State before.
    pub before: Option<String>,
    /// State after.
    pub after: Option<String>,
    /// Anything else.
    pub detail: Option<String>,
}

const VM_COLUMNS: &str =
    "v.id, v.request_id, v.user_id, v.host, v.domain, v.state, v.pool, v.volume,
     v.seed_key_hash, v.lease_expires_at, v.updated_at, v.domain_uuid";

fn vm_record(r: &AnyRow) -> Result<VmRecord, StoreError> {
    Ok(VmRecord {
        id: r.try_get("id")?,
        request_id: r.try_get("request_id")?,
        user_id: r.try_get("user_id")?,
        host: r.try_get("host")?,
        domain: r.try_get("domain")?,
        state: r.try_get("state")?,
        pool: r.try_get("pool")?,
        volume: r.try_get("volume")?,
        seed_key_hash: r.try_get("seed_key_hash")?,
        lease_expires_at: r.try_get("lease_expires_at")?,
        updated_at: r.try_get("updated_at")?,
        domain_uuid: r.try_get("domain_uuid")?,
    })
}

impl Store {
    /// A request with its owner, image and claimed functions, for provisioning.
    pub async fn provision_plan(
        &self,
        request_id: i64,
    ) -> Result<Option<ProvisionPlan>, StoreError> {
        let Some(r) = sqlx::query(
            "SELECT r.id, r.state, r.user_id, u.name, u.ssh_public_key, r.vcpus, r.memory_mib,
                 r.disk_gib, r.hypervisor, r.lease_hours, r.host, r.numa_node, r.image
             FROM gpu_requests r JOIN users u ON u.id = r.user_id WHERE r.id = $1",
        )
        .bind(request_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let image_name: String = r.try_get("image")?;
        let host: Option<String> = r.try_get("host")?;
        // The copy on the request's host; else any copy, which provisioning refuses by name.
        let copies: Vec<Image> = self
            .images()
            .await?
            .into_iter()
            .filter(|i| i.name == image_name)
            .collect();
        let image = copies
            .iter()
            .find(|i| Some(&i.host) == host.as_ref())
            .or(copies.first())
            .cloned();
        let functions =
            sqlx::query("SELECT address FROM gpu_claims WHERE request_id = $1 ORDER BY address")
                .bind(request_id)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|row| row.try_get("address"))
                .collect::<Result<Vec<String>, _>>()?;
        Ok(Some(ProvisionPlan {
            request_id,
            state: r.try_get("state")?,
            user_id: r.try_get("user_id")?,
            owner: r.try_get("name")?,
            ssh_public_key: r.try_get("ssh_public_key")?,
            vcpus: r.try_get("vcpus")?,
            memory_mib: r.try_get("memory_mib")?,
            disk_gib: r.try_get("disk_gib")?,
            hypervisor: r.try_get("hypervisor")?,
            lease_hours: r.try_get("lease_hours")?,
            host,
            numa_node: r.try_get("numa_node")?,
            image,
            functions,
        }))
    }

    /// Records a new VM in `provisioning` for a request; `None` when the request has one already
    /// (another server or task got there first).
    pub async fn create_vm(
        &self,
        request_id: i64,
        user_id: i64,
        host: &str,
        lease_expires_at: i64,
    ) -> Result<Option<i64>, StoreError> {
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO vms (request_id, user_id, host, state, lease_expires_at, created_at, updated_at)
             VALUES ($1, $2, $3, 'provisioning', $4, $5, $5)
             ON CONFLICT (request_id) DO NOTHING RETURNING id",
        )
        .bind(request_id)
        .bind(user_id)
        .bind(host)
        .bind(lease_expires_at)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get("id").map_err(StoreError::from))
            .transpose()
    }

    /// Records what provisioning has made so far (only the given parts change).
    pub async fn record_vm_parts(&self, id: i64, parts: &VmParts) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE vms SET domain = COALESCE($1, domain), domain_type = COALESCE($2, domain_type),
                 pool = COALESCE($3, pool), volume = COALESCE($4, volume),
                 seed_key_hash = COALESCE($5, seed_key_hash), updated_at = $6,
                 domain_uuid = COALESCE($8, domain_uuid)
             WHERE id = $7",
        )
        .bind(&parts.domain)
        .bind(&parts.domain_type)
        .bind(&parts.pool)
        .bind(&parts.volume)
        .bind(&parts.seed_key_hash)
        .bind(now_ms())
        .bind(id)
        .bind(&parts.domain_uuid)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Moves a VM from one of `from` to `to`; false when it was in another state (someone else
    /// acted first).
    pub async fn set_vm_state(
        &self,
        id: i64,
        from: &[&str],
        to: &str,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        // At most five states: bind them as separate parameters, unused ones as ''.
        let mut states = from.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        states.resize(5, String::new());
        let done = sqlx::query(
            "UPDATE vms SET state = $1, state_reason = $2, updated_at = $3,
                 running_at = CASE WHEN $1 = 'running' THEN COALESCE(running_at, $3)
                                   ELSE running_at END
             WHERE id = $4 AND state IN ($5, $6, $7, $8, $9)",
        )
        .bind(to)
        .bind(reason)
        .bind(now_ms())
        .bind(id)
        .bind(&states[0])
        .bind(&states[1])
        .bind(&states[2])
        .bind(&states[3])
        .bind(&states[4])
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// How long VMs took to come up, per host, over the VMs that first ran since `since`
    /// (Unix ms). Requests placed before `placed_at` was recorded count only toward
    /// request-to-running.
    pub async fn startup_times(
        &self,
        since: i64,
    ) -> Result<HashMap<String, StartupTimes>, StoreError> {
        let rows = sqlx::query(
            "SELECT v.host, r.created_at, r.placed_at, v.running_at
             FROM vms v JOIN gpu_requests r ON r.id = v.request_id
             WHERE v.running_at IS NOT NULL AND v.running_at >= $1",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let mut by_host: HashMap<String, (Vec<f64>, Vec<f64>)> = HashMap::new();
        for row in &rows {
            let running: i64 = row.try_get("running_at")?;
            let filed: i64 = row.try_get("created_at")?;
            let placed: Option<i64> = row.try_get("placed_at")?;
            let seconds = |from: i64| (running - from).max(0) as f64 / 1000.0;
            let (requested, provisioned) = by_host.entry(row.try_get("host")?).or_default();
            requested.push(seconds(filed));
            provisioned.extend(placed.map(seconds));
        }
        Ok(by_host
            .into_iter()
            .filter_map(|(host, (requested, provisioned))| {
                let vms = requested.len();
                let request_to_running = Spread::of(requested)?;
                Some((
                    host,
                    StartupTimes {
                        vms,
                        request_to_running,
                        placed_to_running: Spread::of(provisioned),
                    },
                ))
            })
            .collect())
    }

    /// One VM's record.
    pub async fn vm_record(&self, id: i64) -> Result<Option<VmRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {VM_COLUMNS} FROM vms v WHERE v.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(vm_record).transpose()
    }

    /// The VMs in `provisioning`, `running` or `stopped`: those that hold GPUs and a domain.
    pub async fn live_vms(&self) -> Result<Vec<VmRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {VM_COLUMNS} FROM vms v
             WHERE v.state IN ('provisioning', 'running', 'stopped') ORDER BY v.id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(vm_record).collect()
    }

    /// Every VM ever made on `host` whose domain may still exist (all but released ones).
    pub async fn known_domains(&self, host: &str) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, state FROM vms WHERE host = $1 AND state <> 'released' ORDER BY id",
        )
        .bind(host)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("state")?)))
            .collect()
    }

    /// VMs as people see them: all, or one user's; newest first.
    pub async fn vms(
        &self,
        user_id: Option<i64>,
        window: Window,
    ) -> Result<Vec<VmView>, StoreError> {
        self.vms_matching(user_id, None, window).await
    }

    /// One VM, if it exists and (with `user_id`) belongs to that user.
    pub async fn vm(&self, user_id: Option<i64>, id: i64) -> Result<Option<VmView>, StoreError> {
        Ok(self
            .vms_matching(user_id, Some(id), Window::ALL)
            .await?
            .pop())
    }

    async fn vms_matching(
        &self,
        user_id: Option<i64>,
        id: Option<i64>,
        window: Window,
    ) -> Result<Vec<VmView>, StoreError> {
        let rows = sqlx::query(
            "SELECT v.id, v.request_id, u.name AS owner, v.state, v.state_reason, v.host, v.domain,
                 v.domain_type, r.gpu_model, r.vcpus, r.memory_mib, r.disk_gib, r.image,
                 r.hypervisor, v.lease_expires_at, a.addresses_json
             FROM vms v JOIN gpu_requests r ON r.id = v.request_id JOIN users u ON u.id = v.user_id
                 LEFT JOIN agents a ON a.vm_id = v.id
             WHERE ($1 = 0 OR v.user_id = $1) AND ($2 = 0 OR v.id = $2)
                 AND ($3 = 0 OR v.id < $3)
             ORDER BY v.id DESC LIMIT $4",
        )
        .bind(user_id.unwrap_or(0))
        .bind(id.unwrap_or(0))
        .bind(window.before_id())
        .bind(window.max_rows())
        .fetch_all(&self.pool)
        .await?;
        let claims = self.claimed_gpus().await?;
        rows.iter()
            .map(|r| {
                let request_id: i64 = r.try_get("request_id")?;
                let owner: String = r.try_get("owner")?;
                Ok(VmView {
                    id: r.try_get("id")?,
                    request_id,
                    ssh_user: owner.clone(),
                    ssh_address: super::jobs::addresses(r.try_get("addresses_json")?)?
                        .into_iter()
                        .next(),
                    owner,
                    state: r.try_get("state")?,
                    state_reason: r.try_get("state_reason")?,
                    host: r.try_get("host")?,
                    domain: r.try_get("domain")?,
                    domain_type: r.try_get("domain_type")?,
                    gpu_model: r.try_get("gpu_model")?,
                    gpus: claims
                        .iter()
                        .filter(|(request, _)| *request == request_id)
                        .map(|(_, address)| address.clone())
                        .collect(),
                    vcpus: r.try_get("vcpus")?,
                    memory_mib: r.try_get("memory_mib")?,
                    disk_gib: r.try_get("disk_gib")?,
                    image: r.try_get("image")?,
                    hypervisor: r.try_get("hypervisor")?,
                    lease_expires_at: rfc3339(r.try_get("lease_expires_at")?),
                })
            })
            .collect()
    }

    /// Frees every claim of a request and closes it, with the reason shown to its owner.
    pub async fn close_request(&self, request_id: i64, reason: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM gpu_claims WHERE request_id = $1")
            .bind(request_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE gpu_requests SET state = 'released', state_reason = $1, updated_at = $2
             WHERE id = $3",
        )
        .bind(reason)
        .bind(now_ms())
        .bind(request_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Closes a request with `reason` but keeps its claims: its VM left something on the host
    /// that may still hold the GPUs.
    pub async fn end_request_keeping_claims(
        &self,
        request_id: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE gpu_requests SET state = 'released', state_reason = $1, updated_at = $2
             WHERE id = $3",
        )
        .bind(reason)
        .bind(now_ms())
        .bind(request_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every VM on `host` that has a domain name, in any state.
    pub async fn vms_with_domains_on(&self, host: &str) -> Result<Vec<VmRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {VM_COLUMNS} FROM vms v WHERE v.host = $1 AND v.domain IS NOT NULL ORDER BY v.id"
        ))
        .bind(host)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(vm_record).collect()
    }

    /// Drops every claim of a request, leaving its state alone.
    pub async fn drop_claims(&self, request_id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM gpu_claims WHERE request_id = $1")
            .bind(request_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Moves a live VM's lease end by `hours`; returns the new end (Unix ms).
    pub async fn extend_lease(&self, id: i64, hours: i64) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "UPDATE vms SET lease_expires_at = lease_expires_at + $1, updated_at = $2
             WHERE id = $3 AND state IN ('provisioning', 'running', 'stopped')
             RETURNING lease_expires_at",
        )
        .bind(hours * 3_600_000)
        .bind(now_ms())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get("lease_expires_at").map_err(StoreError::from))
            .transpose()
    }

    /// Live VMs whose lease ended before `now`.
    pub async fn expired_vms(&self, now: i64) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM vms WHERE lease_expires_at < $1
               AND state IN ('running', 'stopped') ORDER BY lease_expires_at",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(StoreError::from))
            .collect()
    }

    /// Requests approved but waiting for GPUs, first come first.
    pub async fn waiting_requests(&self) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query("SELECT id FROM gpu_requests WHERE state = 'waiting' ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(StoreError::from))
            .collect()
    }

    /// Placed requests that have no VM yet (their provisioning never started or was lost).
    pub async fn placed_without_vm(&self) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.id FROM gpu_requests r WHERE r.state = 'placed'
               AND NOT EXISTS (SELECT 1 FROM vms v WHERE v.request_id = r.id) ORDER BY r.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(StoreError::from))
            .collect()
    }

    /// Claims held for requests that are no longer placed: (request id, its state).
    pub async fn stray_claims(&self) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT r.id, r.state FROM gpu_claims c JOIN gpu_requests r ON r.id = c.request_id
             WHERE r.state <> 'placed'
               AND NOT EXISTS (SELECT 1 FROM vms v
                               WHERE v.request_id = r.id AND v.leftover IS NOT NULL)
             ORDER BY r.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("state")?)))
            .collect()
    }

    /// Adds one GPU (every function of it) to a placed request's claims, for hot-plug.
    pub async fn add_claim(
        &self,
        request_id: i64,
        gpu: &FreeGpu,
    ) -> Result<ClaimOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        for function in &gpu.functions {
            let inserted = sqlx::query(
                "INSERT INTO gpu_claims (host, address, gpu_id, request_id, claimed_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&gpu.host)
            .bind(function)
            .bind(gpu.gpu_id)
            .bind(request_id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {}
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                    tx.rollback().await?;
                    return Ok(ClaimOutcome::Lost);
                }
                Err(e) => return Err(e.into()),
            }
        }
        sqlx::query(
            "UPDATE gpu_requests SET gpu_count = gpu_count + 1, updated_at = $1 WHERE id = $2",
        )
        .bind(now_ms())
        .bind(request_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ClaimOutcome::Claimed)
    }

    /// The functions claimed with GPU `gpu_address` of a request (the GPU first).
    pub async fn claimed_functions(
        &self,
        request_id: i64,
        gpu_address: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.address FROM gpu_claims c JOIN gpus g ON g.id = c.gpu_id
             WHERE c.request_id = $1 AND g.address = $2
             ORDER BY CASE WHEN c.address = g.address THEN 0 ELSE 1 END, c.address",
        )
        .bind(request_id)
        .bind(gpu_address)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get("address").map_err(StoreError::from))
            .collect()
    }

    /// Removes one GPU (every function of it) from a request's claims, after a detach.
    pub async fn remove_claim(&self, request_id: i64, gpu_address: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM gpu_claims WHERE request_id = $1
               AND gpu_id IN (SELECT id FROM gpus WHERE address = $2 AND host = gpu_claims.host)",
        )
        .bind(request_id)
        .bind(gpu_address)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE gpu_requests SET gpu_count = gpu_count - 1, updated_at = $1
             WHERE id = $2 AND gpu_count > 1",
        )
        .bind(now_ms())
        .bind(request_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes one audit record.
    pub async fn audit(&self, record: AuditRecord<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, subject, before, after, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(now_ms())
        .bind(record.actor)
        .bind(record.action)
        .bind(&record.subject)
        .bind(&record.before)
        .bind(&record.after)
        .bind(&record.detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Audit records matching `filter`, newest first, at most `limit`.
    pub async fn audit_entries(
        &self,
        filter: &AuditFilter,
        window: Window,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let rows = sqlx::query(
            "SELECT id, at, actor, action, subject, before, after, detail FROM audit_log
             WHERE ($1 = '' OR actor = $1) AND ($2 = '' OR action LIKE $2 || '%')
               AND ($3 = '' OR subject = $3) AND ($4 = 0 OR id < $4)
             ORDER BY id DESC LIMIT $5",
        )
        .bind(text(&filter.actor))
        .bind(text(&filter.action))
        .bind(text(&filter.subject))
        .bind(window.before_id())
        .bind(window.max_rows())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: rfc3339(r.try_get("at")?),
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    subject: r.try_get("subject")?,
                    before: r.try_get("before")?,
                    after: r.try_get("after")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    /// Sets (or, with every field `None`, clears) a user's own quota.
    pub async fn set_user_quota(
        &self,
        user_id: i64,
        quota: &QuotaOverride,
    ) -> Result<(), StoreError> {
        if quota == &QuotaOverride::default() {
            sqlx::query("DELETE FROM user_quotas WHERE user_id = $1")
                .bind(user_id)
                .execute(&self.pool)
                .await?;
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO user_quotas (user_id, gpus, requests, lease_hours, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id) DO UPDATE SET gpus = excluded.gpus,
                 requests = excluded.requests, lease_hours = excluded.lease_hours,
                 updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(quota.gpus)
        .bind(quota.requests)
        .bind(quota.lease_hours)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A user's own quota, where an admin set one.
    pub async fn user_quota(&self, user_id: i64) -> Result<QuotaOverride, StoreError> {
        let row =
            sqlx::query("SELECT gpus, requests, lease_hours FROM user_quotas WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            Some(r) => QuotaOverride {
                gpus: r.try_get("gpus")?,
                requests: r.try_get("requests")?,
                lease_hours: r.try_get("lease_hours")?,
            },
            None => QuotaOverride::default(),
        })
    }

    /// Stores (or with `None` removes) a user's SSH public key.
    pub async fn set_ssh_key(&self, user_id: i64, key: Option<&str>) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET ssh_public_key = $1 WHERE id = $2")
            .bind(key)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A user's SSH public key.
    pub async fn ssh_key(&self, user_id: i64) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT ssh_public_key FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get("ssh_public_key")?,
            None => None,
        })
    }

    /// True when VM `id`'s image brings NVIDIA's driver (false for an image no longer registered).
    pub async fn vm_gpu_driver_included(&self, id: i64) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT i.gpu_driver_included FROM vms v JOIN gpu_requests r ON r.id = v.request_id
                 JOIN images i ON i.name = r.image AND i.host = v.host
             WHERE v.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| super::flag(&r, "gpu_driver_included"))
            .transpose()
            .map(|flag| flag.unwrap_or(false))
    }

    /// The VM whose cloud-init seed key hashes to `key_hash`.
    pub async fn vm_by_seed(
        &self,
        id: i64,
        key_hash: &str,
    ) -> Result<Option<VmRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {VM_COLUMNS} FROM vms v WHERE v.id = $1 AND v.seed_key_hash = $2
               AND v.state IN ('provisioning', 'running', 'stopped')"
        ))
        .bind(id)
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(vm_record).transpose()
    }
}
