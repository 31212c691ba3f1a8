//! Queries for GPU requests and the claims that hold GPUs for them.

use passage_app::requests::{RequestForm, RequestView};
use std::sync::Arc;

use sqlx::Row;

use super::{Store, StoreError, Window, now_ms};

/// Who filed a request, what it asks for, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestNeeds {
    /// The requester.
    pub user_id: i64,
    /// GPU model.
    pub gpu_model: String,
    /// GPUs asked for.
    pub gpu_count: i64,
    /// `pending`, `waiting`, `placed`, `denied` or `released`.
    pub state: String,
    /// `kvm` or `xen`.
    pub hypervisor: String,
    /// The hosts holding a copy of the request's base image, by name (none: not registered).
    pub image_hosts: Vec<String>,
}

impl RequestNeeds {
    /// True while the request may still be approved, placed or denied.
    pub fn is_open(&self) -> bool {
        matches!(self.state.as_str(), "pending" | "waiting")
    }
}

/// A free GPU that a request could be given, with every function that goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeGpu {
    /// Database id of the GPU.
    pub gpu_id: i64,
    /// Host name.
    pub host: String,
    /// The GPU's PCI address.
    pub address: String,
    /// Its NUMA node, when known.
    pub numa_node: Option<i64>,
    /// Its root port: GPUs that share one are behind the same PCIe switch.
    pub pcie_root: Option<String>,
    /// Every function the VM receives with it (its IOMMU group without bridges).
    pub functions: Vec<String>,
}

/// The outcome of trying to write a set of claims.
#[derive(Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The claims are held.
    Claimed,
    /// Someone claimed one of the functions first; read again and retry.
    Lost,
    /// The request was no longer pending or waiting when the claim was written (placed by
    /// another caller, denied or released meanwhile): nothing was claimed.
    NotOpen,
    /// The owner's GPUs would pass the quota: nothing was claimed.
    OverQuota {
        /// GPUs the owner holds already.
        held: i64,
    },
}

impl Store {
    /// Files a request (already validated) for `user_id`, with no quota; returns its id.
    pub async fn create_request(
        &self,
        user_id: i64,
        request: &RequestForm,
    ) -> Result<i64, StoreError> {
        Ok(self
            .create_request_within(user_id, request, i64::MAX)
            .await?
            .expect("no quota to pass"))
    }

    /// Files a request (already validated) for `user_id`, unless the user has `max_open` open
    /// requests already: `None` then. The count and the insert are one transaction that holds
    /// the user's row, so that concurrent filings cannot all pass the quota.
    pub async fn create_request_within(
        &self,
        user_id: i64,
        request: &RequestForm,
        max_open: i64,
    ) -> Result<Option<i64>, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        super::hold_user(&mut tx, user_id).await?;
        let open: i64 = sqlx::query(
            "SELECT COUNT(*) AS open FROM gpu_requests
             WHERE user_id = $1 AND state IN ('pending', 'waiting', 'placed')",
        )
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("open")?;
        if open >= max_open {
            tx.rollback().await?;
            return Ok(None);
        }
        let row = sqlx::query(
            "INSERT INTO gpu_requests (user_id, gpu_model, gpu_count, vcpus, memory_mib, disk_gib,
                 image, hypervisor, lease_hours, reason, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) RETURNING id",
        )
        .bind(user_id)
        .bind(&request.gpu_model)
        .bind(request.gpu_count)
        .bind(request.vcpus)
        .bind(request.memory_mib)
        .bind(request.disk_gib)
        .bind(&request.image)
        .bind(&request.hypervisor)
        .bind(request.lease_hours)
        .bind(request.reason.trim())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let id = row.try_get("id")?;
        tx.commit().await?;
        Ok(Some(id))
    }

    /// Who filed a request, what it asks for, and its state.
    pub async fn request_needs(&self, request_id: i64) -> Result<Option<RequestNeeds>, StoreError> {
        let Some(r) = sqlx::query(
            "SELECT r.user_id, r.gpu_model, r.gpu_count, r.state, r.hypervisor, r.image
             FROM gpu_requests r WHERE r.id = $1",
        )
        .bind(request_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let image: String = r.try_get("image")?;
        let image_hosts = sqlx::query("SELECT host FROM images WHERE name = $1 ORDER BY host")
            .bind(&image)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| row.try_get("host"))
            .collect::<Result<Vec<String>, _>>()?;
        Ok(Some(RequestNeeds {
            user_id: r.try_get("user_id")?,
            gpu_model: r.try_get("gpu_model")?,
            gpu_count: r.try_get("gpu_count")?,
            state: r.try_get("state")?,
            hypervisor: r.try_get("hypervisor")?,
            image_hosts,
        }))
    }

    /// GPUs of `model` that are present on a reachable host, assignable, and not held in any of
    /// their functions (nor by a domain this installation did not make). Kept in memory until
    /// the inventory changes, as the GPU list is.
    pub async fn free_gpus(&self, model: &str) -> Result<Arc<Vec<FreeGpu>>, StoreError> {
        self.inventory_read(&self.memory.free, model.to_string(), || {
            self.read_free_gpus(model)
        })
        .await
    }

    async fn read_free_gpus(&self, model: &str) -> Result<Vec<FreeGpu>, StoreError> {
        let rows = sqlx::query(
            "SELECT g.id, g.host, g.address, g.numa_node, g.pcie_root FROM gpus g
             JOIN hosts h ON h.name = g.host
             WHERE g.model = $1 AND g.present = $2 AND g.unassignable_reason IS NULL
               AND h.configured = $2 AND h.state = 'reachable'
               AND NOT EXISTS (SELECT 1 FROM gpu_claims c WHERE c.host = g.host AND c.address = g.address)
               AND NOT EXISTS (
                   SELECT 1 FROM iommu_members m JOIN gpu_claims c
                       ON c.host = g.host AND c.address = m.address
                   WHERE m.gpu_id = g.id AND m.is_bridge = $3)
             ORDER BY g.host, g.address",
        )
        .bind(model)
        .bind(true)
        .bind(false)
        .fetch_all(&self.pool)
        .await?;
        // Every candidate's group members in one read, rather than one query per GPU.
        let member_rows = sqlx::query(
            "SELECT m.gpu_id, m.address FROM iommu_members m JOIN gpus g ON g.id = m.gpu_id
             WHERE g.model = $1 AND m.is_bridge = $2 ORDER BY m.gpu_id, m.address",
        )
        .bind(model)
        .bind(false)
        .fetch_all(&self.pool)
        .await?;
        let mut members: std::collections::HashMap<i64, Vec<String>> = Default::default();
        for row in &member_rows {
            members
                .entry(row.try_get("gpu_id")?)
                .or_default()
                .push(row.try_get("address")?);
        }
        // Functions a domain this installation did not make holds are not free either.
        let foreign: std::collections::HashSet<(String, String)> = self
            .unknown_domains()
            .await?
            .into_iter()
            .flat_map(|d| {
                d.devices
                    .split(", ")
                    .filter(|a| !a.is_empty())
                    .map(|a| (d.host.clone(), a.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut gpus = Vec::with_capacity(rows.len());
        for row in &rows {
            let gpu_id: i64 = row.try_get("id")?;
            let address: String = row.try_get("address")?;
            let host: String = row.try_get("host")?;
            let mut functions = members.remove(&gpu_id).unwrap_or_default();
            if !functions.contains(&address) {
                functions.push(address.clone());
            }
            if functions
                .iter()
                .any(|f| foreign.contains(&(host.clone(), f.clone())))
            {
                continue;
            }
            functions.sort_by_key(|f| *f != address);
            gpus.push(FreeGpu {
                gpu_id,
                host,
                address,
                numa_node: row.try_get("numa_node")?,
                pcie_root: row.try_get("pcie_root")?,
                functions,
            });
        }
        Ok(gpus)
    }

    /// Claims every function of `gpus` for a request and marks it placed, in one transaction,
    /// with no quota.
    pub async fn claim(
        &self,
        request_id: i64,
        gpus: &[FreeGpu],
    ) -> Result<ClaimOutcome, StoreError> {
        self.claim_within(request_id, gpus, None).await
    }

    /// Claims every function of `gpus` for a request and marks it placed, in one transaction.
    /// Losing a race to another claim rolls everything back and says so. With `max_gpus`, the
    /// owner's GPUs (placed requests) plus these must stay within it; the count is taken in the
    /// same transaction, holding the owner's row, so concurrent approvals cannot pass it.
    pub async fn claim_within(
        &self,
        request_id: i64,
        gpus: &[FreeGpu],
        max_gpus: Option<i64>,
    ) -> Result<ClaimOutcome, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        if let Some(max) = max_gpus {
            // A write first: SQLite then takes its write lock at once, instead of a read
            // snapshot that could not be upgraded once another writer committed.
            sqlx::query(
                "UPDATE users SET id = id WHERE id = (SELECT user_id FROM gpu_requests WHERE id = $1)",
            )
            .bind(request_id)
            .execute(&mut *tx)
            .await?;
            let Some(owner) = sqlx::query("SELECT user_id FROM gpu_requests WHERE id = $1")
                .bind(request_id)
                .fetch_optional(&mut *tx)
                .await?
            else {
                tx.rollback().await?;
                return Ok(ClaimOutcome::NotOpen);
            };
            let owner: i64 = owner.try_get("user_id")?;
            let held: i64 = sqlx::query(
                "SELECT CAST(COALESCE(SUM(gpu_count), 0) AS BIGINT) AS held FROM gpu_requests
                 WHERE user_id = $1 AND state = 'placed' AND id <> $2",
            )
            .bind(owner)
            .bind(request_id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("held")?;
            let asked = i64::try_from(gpus.len()).unwrap_or(i64::MAX);
            if held + asked > max {
                tx.rollback().await?;
                return Ok(ClaimOutcome::OverQuota { held });
            }
        }
        for gpu in gpus {
            for function in &gpu.functions {
                let inserted = sqlx::query(
                    "INSERT INTO gpu_claims (host, address, gpu_id, request_id, claimed_at)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&gpu.host)
                .bind(function)
                .bind(gpu.gpu_id)
                .bind(request_id)
                .bind(now)
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
        }
        let first = &gpus[0];
        let same_numa = gpus.iter().all(|g| g.numa_node == first.numa_node);
        // Conditional on the state it leaves: a request placed, denied or released since it was
        // read keeps that state, and the claims above are rolled back.
        let placed = sqlx::query(
            "UPDATE gpu_requests SET state = 'placed', state_reason = NULL, host = $1, numa_node = $2,
                 updated_at = $3, placed_at = $3
             WHERE id = $4 AND state IN ('pending', 'waiting')",
        )
        .bind(&first.host)
        .bind(if same_numa { first.numa_node } else { None })
        .bind(now)
        .bind(request_id)
        .execute(&mut *tx)
        .await?;
        if placed.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(ClaimOutcome::NotOpen);
        }
        tx.commit().await?;
        Ok(ClaimOutcome::Claimed)
    }

    /// Marks a pending or waiting request as waiting for GPUs, with the reason shown to its
    /// owner. Returns false, changing nothing, when the request has left those states.
    pub async fn mark_waiting(&self, request_id: i64, reason: &str) -> Result<bool, StoreError> {
        let marked = sqlx::query(
            "UPDATE gpu_requests SET state = 'waiting', state_reason = $1, updated_at = $2
             WHERE id = $3 AND state IN ('pending', 'waiting')",
        )
        .bind(reason)
        .bind(now_ms())
        .bind(request_id)
        .execute(&self.pool)
        .await?;
        Ok(marked.rows_affected() == 1)
    }

    /// Frees every claim of a request and marks it released.
    pub async fn release(&self, request_id: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM gpu_claims WHERE request_id = $1")
            .bind(request_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE gpu_requests SET state = 'released', updated_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(request_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every claim: (host, function address, request id), for checks and the GPU list.
    pub async fn claims(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows =
            sqlx::query("SELECT host, address, request_id FROM gpu_claims ORDER BY host, address")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("host")?,
                    r.try_get("address")?,
                    r.try_get("request_id")?,
                ))
            })
            .collect()
    }
}

/// A registered base image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Image {
    /// The name users pick, e.g. `debian-12`.
    pub name: String,
    /// The host whose storage holds it.
    pub host: String,
    /// The libvirt storage pool.
    pub pool: String,
    /// The volume in that pool.
    pub volume: String,
    /// The volume's path on the host.
    pub path: String,
    /// Its virtual size in bytes.
    pub capacity_bytes: i64,
    /// Direct kernel boot: the kernel's path on the host; without it the disk boots.
    pub kernel: Option<String>,
    /// The initramfs's path on the host (with `kernel`).
    pub initrd: Option<String>,
    /// The kernel's command line (with `kernel`).
    pub cmdline: Option<String>,
    /// True when the image brings NVIDIA's driver; VMs of other images install it on first boot.
    #[serde(default)]
    pub gpu_driver_included: bool,
}

impl Store {
    /// Registers an image's copy on its host; a name with a copy on that host already is a
    /// unique violation.
    pub async fn register_image(&self, image: &Image) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO images (name, host, pool, volume, path, capacity_bytes, kernel, initrd,
                                 cmdline, created_at, gpu_driver_included)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&image.name)
        .bind(&image.host)
        .bind(&image.pool)
        .bind(&image.volume)
        .bind(&image.path)
        .bind(image.capacity_bytes)
        .bind(&image.kernel)
        .bind(&image.initrd)
        .bind(&image.cmdline)
        .bind(now_ms())
        .bind(image.gpu_driver_included)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every image's copies, by name and host.
    pub async fn images(&self) -> Result<Vec<Image>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, host, pool, volume, path, capacity_bytes, kernel, initrd, cmdline,
                    gpu_driver_included
             FROM images ORDER BY name, host",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Image {
                    name: r.try_get("name")?,
                    host: r.try_get("host")?,
                    pool: r.try_get("pool")?,
                    volume: r.try_get("volume")?,
                    path: r.try_get("path")?,
                    capacity_bytes: r.try_get("capacity_bytes")?,
                    kernel: r.try_get("kernel")?,
                    initrd: r.try_get("initrd")?,
                    cmdline: r.try_get("cmdline")?,
                    gpu_driver_included: super::flag(r, "gpu_driver_included")?,
                })
            })
            .collect()
    }
}

impl Store {
    /// What a user holds now: GPUs of placed requests, and requests still open.
    pub async fn usage(&self, user_id: i64) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT
                 CAST(COALESCE(SUM(CASE WHEN state = 'placed' THEN gpu_count ELSE 0 END), 0) AS BIGINT) AS gpus,
                 COUNT(*) AS open
             FROM gpu_requests WHERE user_id = $1 AND state IN ('pending', 'waiting', 'placed')",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("gpus")?, row.try_get("open")?))
    }

    /// Requests, newest first: all of them, or one user's.
    pub async fn requests(
        &self,
        user_id: Option<i64>,
        window: Window,
    ) -> Result<Vec<RequestView>, StoreError> {
        self.requests_matching(user_id, None, window).await
    }

    /// One request, if it exists and (with `user_id`) belongs to that user.
    pub async fn request(
        &self,
        user_id: Option<i64>,
        request_id: i64,
    ) -> Result<Option<RequestView>, StoreError> {
        Ok(self
            .requests_matching(user_id, Some(request_id), Window::ALL)
            .await?
            .pop())
    }

    async fn requests_matching(
        &self,
        user_id: Option<i64>,
        request_id: Option<i64>,
        window: Window,
    ) -> Result<Vec<RequestView>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.id, u.name AS user_name, r.gpu_model, r.gpu_count, r.vcpus, r.memory_mib,
                 r.disk_gib, r.image, r.hypervisor, r.lease_hours, r.reason, r.state,
                 r.state_reason, r.host, r.numa_node
             FROM gpu_requests r JOIN users u ON u.id = r.user_id
             WHERE ($1 = 0 OR r.user_id = $1) AND ($2 = 0 OR r.id = $2)
                 AND ($3 = 0 OR r.id < $3)
             ORDER BY r.id DESC LIMIT $4",
        )
        .bind(user_id.unwrap_or(0))
        .bind(request_id.unwrap_or(0))
        .bind(window.before_id())
        .bind(window.max_rows())
        .fetch_all(&self.pool)
        .await?;
        let claims = self.claimed_gpus().await?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                Ok(RequestView {
                    id,
                    user: r.try_get("user_name")?,
                    gpu_model: r.try_get("gpu_model")?,
                    gpu_count: r.try_get("gpu_count")?,
                    vcpus: r.try_get("vcpus")?,
                    memory_mib: r.try_get("memory_mib")?,
                    disk_gib: r.try_get("disk_gib")?,
                    image: r.try_get("image")?,
                    hypervisor: r.try_get("hypervisor")?,
                    lease_hours: r.try_get("lease_hours")?,
                    reason: r.try_get("reason")?,
                    state: r.try_get("state")?,
                    state_reason: r.try_get("state_reason")?,
                    host: r.try_get("host")?,
                    numa_node: r.try_get("numa_node")?,
                    gpus: claims
                        .iter()
                        .filter(|(request, _)| *request == id)
                        .map(|(_, address)| address.clone())
                        .collect(),
                })
            })
            .collect()
    }

    /// The GPU (not every function) each request holds: (request id, GPU address).
    pub(super) async fn claimed_gpus(&self) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.request_id, c.address FROM gpu_claims c JOIN gpus g ON g.id = c.gpu_id
             WHERE g.address = c.address ORDER BY c.request_id, c.address",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("request_id")?, r.try_get("address")?)))
            .collect()
    }

    /// Denies a pending or waiting request; false when it is in another state.
    pub async fn deny(&self, request_id: i64, reason: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE gpu_requests SET state = 'denied', state_reason = $1, updated_at = $2
             WHERE id = $3 AND state IN ('pending', 'waiting')",
        )
        .bind(reason)
        .bind(now_ms())
        .bind(request_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
