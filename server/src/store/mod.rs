//! The database: the one module that holds SQL.
//!
//! The same queries run on SQLite (the default, a local file) and PostgreSQL (for several server
//! replicas) through sqlx's `Any` driver: placeholders are `$n`, upserts are `ON CONFLICT`, times
//! are Unix milliseconds. Only the migrations differ per dialect (`migrations/sqlite`,
//! `migrations/postgres`): in column types, and SQLite's triggers that count changes, so that a
//! server answers the inventory and who a token is from memory until something changed ([`cache`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use passage_app::inventory::{
    GpuState, GpuView, HostState, HostView, IommuGroupView, IommuMemberView, LinkView,
};
use passage_hypervisor::{Assignability, Gpu, HostInventory, PciAddress, PcieLink};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row};
use thiserror::Error;

mod accounts;
mod cache;
mod claims;
mod domains;
mod experiments;
mod jobs;
mod leases;
mod plugins;
mod tallies;
mod vms;

pub use accounts::{AccountChange, AccountRecord, ApiTokenRecord, UserRecord, is_unique_violation};
pub use claims::{ClaimOutcome, FreeGpu, Image, RequestNeeds};
pub use domains::{SeenDomain, UnknownDomain};
pub use experiments::{
    BenchmarkRecord, ExperimentJob, ExperimentRecord, NewBenchmark, NewExperiment, NewTarget,
    TargetRecord,
};
pub use jobs::{
    AgentRecord, AgentReport, JobEnd, NewJob, Queuing, RegistrationOutcome, Scope, TakenJob,
    device_list, param_texts,
};
pub use plugins::{NewPlugin, PluginRecord, Registered, param_view};
pub use tallies::Tallies;
pub use vms::{AuditRecord, ProvisionPlan, QuotaOverride, VmParts, VmRecord};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// Database errors, phrased for the operator who has to fix them.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The SQLite file's directory cannot be created.
    #[error("cannot create the database directory {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The SQLite file cannot be opened for writing.
    #[error("the database file {path} is not writable: {source}")]
    NotWritable {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The database cannot be reached or opened.
    #[error("cannot open the database {url}: {source}")]
    Open {
        /// The URL, password removed.
        url: String,
        /// What sqlx said.
        source: sqlx::Error,
    },
    /// Applying the schema failed.
    #[error("applying database migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
}

/// A slice of a list that is newest first by id: the ids below `before`, at most `limit` of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Only ids below this one (the last id of the previous page).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: Option<i64>,
}

impl Window {
    /// The whole list.
    pub const ALL: Window = Window {
        before: None,
        limit: None,
    };

    /// `before` as a query binds it: 0 for no bound.
    fn before_id(&self) -> i64 {
        self.before.unwrap_or(0)
    }

    /// `limit` as a query binds it.
    fn max_rows(&self) -> i64 {
        self.limit.unwrap_or(i64::MAX)
    }
}

/// Which SQL dialect the database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// The portal's database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    memory: Arc<Memory>,
}

/// What a server keeps in memory between requests (see [`cache`]); on SQLite only, where triggers
/// keep the change counters. PostgreSQL, with several servers writing at once, is always asked.
#[derive(Debug, Default)]
struct Memory {
    counters: cache::CounterReads,
    hosts: cache::Snapshot<Vec<HostView>>,
    gpus: cache::Snapshot<Vec<GpuView>>,
    /// Free GPUs by model, as placement reads them.
    free: cache::Snapshot<Vec<claims::FreeGpu>, String>,
    credentials: cache::Credentials,
    /// Held by the placement under way (see [`Store::placement_turn`]).
    placing: tokio::sync::Mutex<()>,
}

/// Takes the user's row for the rest of the transaction (PostgreSQL locks it; SQLite takes its
/// write lock), so that checks of what the user holds and the change they guard are atomic.
async fn hold_user(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user_id: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET id = id WHERE id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the database at `url` and applies pending migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if url.starts_with("sqlite:") {
            (Backend::Sqlite, prepare_sqlite(url)?)
        } else {
            (Backend::Postgres, url.to_string())
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 10 })
            .acquire_timeout(Duration::from_secs(15))
            .connect(&url)
            .await
            .map_err(|source| StoreError::Open {
                url: redact(&url),
                source,
            })?;
        if backend == Backend::Sqlite {
            // Readers do not block the writer; the setting is stored in the file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(|source| StoreError::Open {
                    url: redact(&url),
                    source,
                })?;
        }
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(Store {
            pool,
            backend,
            memory: Arc::default(),
        })
    }

    /// The dialect in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection (at shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A cheap query that proves the database answers and holds the portal's tables.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT id FROM users LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(())
    }

    /// Makes the stored host list match the configuration. Hosts that left the configuration
    /// are kept (with their GPUs' history) but no longer listed.
    pub async fn sync_hosts(&self, hosts: &[(String, String)]) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE hosts SET configured = $1")
            .bind(false)
            .execute(&mut *tx)
            .await?;
        for (name, uri) in hosts {
            sqlx::query(
                "INSERT INTO hosts (name, uri, configured, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET
                     configured = excluded.configured,
                     state = CASE WHEN hosts.uri = excluded.uri THEN hosts.state ELSE 'pending' END,
                     uri = excluded.uri",
            )
            .bind(name)
            .bind(uri)
            .bind(true)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records a successful inventory of `host`: its identity, whether it can pass GPUs through,
    /// and its GPUs (all unassignable, with the host's reason, when it cannot). GPUs that were
    /// known but are no longer reported are kept and marked missing.
    pub async fn record_inventory(
        &self,
        host: &str,
        inventory: &HostInventory,
        gpus: &[Gpu],
        shared_groups: &[(PciAddress, Vec<PciAddress>)],
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let host_problem = inventory.passthrough_problem();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE hosts SET state = 'reachable', hostname = $1, driver = $2, libvirt_version = $3,
                 last_refresh_at = $4, last_attempt_at = $4, last_error = NULL,
                 passthrough_problem = $5
             WHERE name = $6",
        )
        .bind(&inventory.hostname)
        .bind(&inventory.driver)
        .bind(&inventory.libvirt_version)
        .bind(now)
        .bind(&host_problem)
        .bind(host)
        .execute(&mut *tx)
        .await?;
        for gpu in gpus {
            let allowed = shared_groups
                .iter()
                .find(|(address, _)| *address == gpu.address)
                .map(|(_, members)| members.as_slice())
                .unwrap_or_default();
            let unassignable = match (&host_problem, gpu.assignability_allowing(allowed)) {
                (Some(problem), _) => Some(format!("the host cannot pass GPUs through: {problem}")),
                (None, Assignability::Assignable { .. }) => None,
                (None, Assignability::Unassignable { reason }) => Some(reason),
            };
            let (speed, width) = link_columns(gpu.link_current.as_ref());
            let (max_speed, max_width) = link_columns(gpu.link_max.as_ref());
            let row = sqlx::query(
                "INSERT INTO gpus (host, address, node_device, vendor_id, vendor_name, product_id,
                     product_name, model, class_code, numa_node, link_speed_gts, link_width,
                     link_max_speed_gts, link_max_width, driver, iommu_group, present,
                     unassignable_reason, first_seen_at, last_seen_at, pcie_root)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                     $18, $19, $19, $20)
                 ON CONFLICT (host, address) DO UPDATE SET
                     node_device = excluded.node_device, vendor_id = excluded.vendor_id,
                     vendor_name = excluded.vendor_name, product_id = excluded.product_id,
                     product_name = excluded.product_name, model = excluded.model,
                     class_code = excluded.class_code, numa_node = excluded.numa_node,
                     link_speed_gts = excluded.link_speed_gts, link_width = excluded.link_width,
                     link_max_speed_gts = excluded.link_max_speed_gts,
                     link_max_width = excluded.link_max_width, driver = excluded.driver,
                     iommu_group = excluded.iommu_group, present = excluded.present,
                     unassignable_reason = excluded.unassignable_reason,
                     last_seen_at = excluded.last_seen_at, pcie_root = excluded.pcie_root
                 RETURNING id",
            )
            .bind(host)
            .bind(gpu.address.to_string())
            .bind(&gpu.node_device)
            .bind(i64::from(gpu.vendor_id))
            .bind(&gpu.vendor_name)
            .bind(i64::from(gpu.product_id))
            .bind(&gpu.product_name)
            .bind(&gpu.model)
            .bind(i64::from(gpu.class))
            .bind(gpu.numa_node.map(i64::from))
            .bind(speed)
            .bind(width)
            .bind(max_speed)
            .bind(max_width)
            .bind(&gpu.driver)
            .bind(gpu.iommu_group.as_ref().map(|g| i64::from(g.number)))
            .bind(true)
            .bind(unassignable)
            .bind(now)
            .bind(gpu.pcie_root.map(|a| a.to_string()))
            .fetch_one(&mut *tx)
            .await?;
            let gpu_id: i64 = row.try_get("id")?;
            sqlx::query("DELETE FROM iommu_members WHERE gpu_id = $1")
                .bind(gpu_id)
                .execute(&mut *tx)
                .await?;
            for member in gpu.iommu_group.iter().flat_map(|g| &g.members) {
                sqlx::query(
                    "INSERT INTO iommu_members (gpu_id, address, description, class_label,
                         is_bridge, same_device)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(gpu_id)
                .bind(member.address.to_string())
                .bind(&member.description)
                .bind(&member.class_label)
                .bind(member.is_bridge)
                .bind(member.same_device)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query("UPDATE gpus SET present = $1 WHERE host = $2 AND last_seen_at <> $3")
            .bind(false)
            .bind(host)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a failed inventory attempt: the host is unreachable for this reason.
    pub async fn record_failure(&self, host: &str, error: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE hosts SET state = 'unreachable', last_attempt_at = $1, last_error = $2
             WHERE name = $3",
        )
        .bind(now_ms())
        .bind(error)
        .bind(host)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The change counters, read after this call began; `None` on PostgreSQL, which keeps none.
    async fn versions(&self) -> Result<Option<cache::Versions>, StoreError> {
        if self.backend != Backend::Sqlite {
            return Ok(None);
        }
        let versions = self
            .memory
            .counters
            .fresh(|| async {
                let rows = sqlx::query("SELECT name, version FROM change_counters")
                    .fetch_all(&self.pool)
                    .await?;
                let mut versions = cache::Versions {
                    inventory: 0,
                    accounts: 0,
                };
                for row in &rows {
                    let version: i64 = row.try_get("version")?;
                    match row.try_get::<String, _>("name")?.as_str() {
                        "inventory" => versions.inventory = version,
                        "accounts" => versions.accounts = version,
                        _ => {}
                    }
                }
                Ok(versions)
            })
            .await?;
        Ok(Some(versions))
    }

    /// Waits for this server's turn to place a request. Placements read the same free list
    /// and choose alike, so side by side they would pick the same GPUs and all but one would
    /// lose its claim and start again; one at a time, each claims at the first attempt. Claims
    /// stay guarded by the database against other servers.
    pub async fn placement_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.memory.placing.lock().await
    }

    /// Every configured host, by name.
    pub async fn hosts(&self) -> Result<Arc<Vec<HostView>>, StoreError> {
        self.inventory_read(&self.memory.hosts, (), || self.read_hosts())
            .await
    }

    /// Every GPU on a configured host, by host and PCI address, with its IOMMU group.
    pub async fn gpus(&self) -> Result<Arc<Vec<GpuView>>, StoreError> {
        self.inventory_read(&self.memory.gpus, (), || self.read_gpus())
            .await
    }

    /// What `read` returns, from memory while the inventory counter has not moved since it
    /// was read (SQLite), else read now (and kept).
    async fn inventory_read<T, K, F, Fut>(
        &self,
        snapshot: &cache::Snapshot<T, K>,
        key: K,
        read: F,
    ) -> Result<Arc<T>, StoreError>
    where
        K: Eq + std::hash::Hash,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let Some(versions) = self.versions().await? else {
            return Ok(Arc::new(read().await?));
        };
        match snapshot.get(&key, versions.inventory) {
            Some(kept) => Ok(kept),
            None => Ok(snapshot.put(key, versions.inventory, read().await?)),
        }
    }

    async fn read_hosts(&self) -> Result<Vec<HostView>, StoreError> {
        let rows = sqlx::query(
            "SELECT h.name, h.uri, h.state, h.hostname, h.driver, h.libvirt_version,
                 h.last_refresh_at, h.last_attempt_at, h.last_error, h.passthrough_problem,
                 (SELECT COUNT(*) FROM gpus g WHERE g.host = h.name AND g.present = $1) AS gpu_count
             FROM hosts h WHERE h.configured = $1 ORDER BY h.name",
        )
        .bind(true)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(host_view).collect()
    }

    async fn read_gpus(&self) -> Result<Vec<GpuView>, StoreError> {
        let rows = sqlx::query(
            "SELECT g.id, g.host, g.address, g.node_device, g.vendor_id, g.vendor_name,
                 g.product_id, g.product_name, g.model, g.class_code, g.numa_node,
                 g.link_speed_gts, g.link_width, g.link_max_speed_gts, g.link_max_width,
                 g.driver, g.iommu_group, g.present, g.unassignable_reason, g.last_seen_at,
                 g.pcie_root, h.state AS host_state, c.request_id AS claimed_by
             FROM gpus g JOIN hosts h ON h.name = g.host
             LEFT JOIN gpu_claims c ON c.host = g.host AND c.address = g.address
             WHERE h.configured = $1
             ORDER BY g.host, g.address",
        )
        .bind(true)
        .fetch_all(&self.pool)
        .await?;
        let member_rows = sqlx::query(
            "SELECT gpu_id, address, description, class_label, is_bridge, same_device
             FROM iommu_members ORDER BY gpu_id, address",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut members: HashMap<i64, Vec<IommuMemberView>> = HashMap::new();
        for row in &member_rows {
            members
                .entry(row.try_get("gpu_id")?)
                .or_default()
                .push(IommuMemberView {
                    address: row.try_get("address")?,
                    description: row.try_get("description")?,
                    class: row.try_get("class_label")?,
                    is_bridge: flag(row, "is_bridge")?,
                    same_device: flag(row, "same_device")?,
                });
        }
        let mut gpus = rows
            .iter()
            .map(|row| {
                let id: i64 = row.try_get("id")?;
                gpu_view(row, members.remove(&id).unwrap_or_default())
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // By host and address as Rust compares them (a database's collation may differ), so
        // that a page cursor `host/address` finds its place.
        gpus.sort_by(|a, b| (&a.host, &a.address).cmp(&(&b.host, &b.address)));
        Ok(gpus)
    }
}

fn host_view(row: &AnyRow) -> Result<HostView, StoreError> {
    let state: String = row.try_get("state")?;
    let state = match state.as_str() {
        "reachable" => HostState::Reachable,
        "unreachable" => HostState::Unreachable,
        _ => HostState::Pending,
    };
    let gpu_count: i64 = row.try_get("gpu_count")?;
    Ok(HostView {
        name: row.try_get("name")?,
        uri: Some(row.try_get("uri")?),
        state,
        hostname: row.try_get("hostname")?,
        driver: row.try_get("driver")?,
        libvirt_version: row.try_get("libvirt_version")?,
        last_refresh: row
            .try_get::<Option<i64>, _>("last_refresh_at")?
            .map(rfc3339),
        last_attempt: row
            .try_get::<Option<i64>, _>("last_attempt_at")?
            .map(rfc3339),
        error: if state == HostState::Unreachable {
            row.try_get("last_error")?
        } else {
            None
        },
        gpu_count: usize::try_from(gpu_count).unwrap_or(0),
        passthrough_problem: if state == HostState::Reachable {
            row.try_get("passthrough_problem")?
        } else {
            None
        },
        startup: None,
    })
}

fn gpu_view(row: &AnyRow, members: Vec<IommuMemberView>) -> Result<GpuView, StoreError> {
    let address: String = row.try_get("address")?;
    let present = flag(row, "present")?;
    let host_state: String = row.try_get("host_state")?;
    let unassignable: Option<String> = row.try_get("unassignable_reason")?;
    let claimed_by: Option<i64> = row.try_get("claimed_by")?;
    let (state, state_reason) = if let Some(request) = claimed_by {
        (
            GpuState::Claimed,
            Some(format!("held by request {request}")),
        )
    } else if !present {
        (
            GpuState::Missing,
            Some("not reported by the host's last inventory".to_string()),
        )
    } else if host_state == "unreachable" {
        (
            GpuState::HostUnreachable,
            Some("the host did not answer its last inventory".to_string()),
        )
    } else if let Some(reason) = unassignable {
        (GpuState::Unassignable, Some(reason))
    } else {
        (GpuState::Available, None)
    };
    let link = |speed: &str, width: &str| -> Result<Option<PcieLink>, StoreError> {
        let speed: Option<f64> = row.try_get(speed)?;
        let width: Option<i64> = row.try_get(width)?;
        Ok(speed.zip(width).map(|(speed_gts, width)| PcieLink {
            speed_gts,
            width: u32::try_from(width).unwrap_or(0),
        }))
    };
    let current = link("link_speed_gts", "link_width")?;
    let max = link("link_max_speed_gts", "link_max_width")?;
    let link = (current.is_some() || max.is_some()).then(|| LinkView {
        degraded: match (&current, &max) {
            (Some(c), Some(m)) => c.speed_gts < m.speed_gts || c.width < m.width,
            _ => false,
        },
        speed_gts: current.as_ref().map(|l| l.speed_gts),
        width: current.as_ref().map(|l| i64::from(l.width)),
        current: current.as_ref().map(ToString::to_string),
        max: max.as_ref().map(ToString::to_string),
    });
    let iommu_group: Option<i64> = row.try_get("iommu_group")?;
    let mut passthrough_functions: Vec<String> = members
        .iter()
        .filter(|m| !m.is_bridge)
        .map(|m| m.address.clone())
        .collect();
    passthrough_functions.sort_by_key(|a| *a != address);
    let hex = |column: &str, digits: usize| -> Result<String, StoreError> {
        let value: i64 = row.try_get(column)?;
        Ok(format!("0x{value:0digits$x}"))
    };
    Ok(GpuView {
        host: row.try_get("host")?,
        node_device: row.try_get("node_device")?,
        vendor_id: hex("vendor_id", 4)?,
        vendor_name: row.try_get("vendor_name")?,
        product_id: hex("product_id", 4)?,
        product_name: row.try_get("product_name")?,
        model: row.try_get("model")?,
        class_code: hex("class_code", 6)?,
        numa_node: row.try_get("numa_node")?,
        link,
        driver: row.try_get("driver")?,
        iommu_group: iommu_group.map(|number| IommuGroupView { number, members }),
        pcie_root: row.try_get("pcie_root")?,
        passthrough_functions,
        state,
        state_reason,
        last_seen: rfc3339(row.try_get("last_seen_at")?),
        address,
    })
}

fn link_columns(link: Option<&PcieLink>) -> (Option<f64>, Option<i64>) {
    (link.map(|l| l.speed_gts), link.map(|l| i64::from(l.width)))
}

/// Reads a flag column: PostgreSQL stores BOOLEAN, SQLite 0/1 integers.
pub(crate) fn flag(row: &AnyRow, column: &str) -> Result<bool, StoreError> {
    match row.try_get::<bool, _>(column) {
        Ok(value) => Ok(value),
        Err(_) => Ok(row.try_get::<i64, _>(column)? != 0),
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Unix milliseconds as an RFC 3339 UTC timestamp, to the second.
pub fn rfc3339(ms: i64) -> String {
    // RFC 3339 has four-digit years: clamp to the last second of 9999.
    let ms = ms.clamp(0, 253_402_300_799_000);
    let time = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Creates the SQLite file's directory, proves the file is writable, and asks sqlx to create the
/// file when missing.
fn prepare_sqlite(url: &str) -> Result<String, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    if path.is_empty() || path == ":memory:" {
        return Ok(url.to_string());
    }
    let file = Path::new(path);
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|source| StoreError::NotWritable {
            path: file.to_path_buf(),
            source,
        })?;
    Ok(match query {
        Some(query) if query.contains("mode=") => url.to_string(),
        Some(query) => format!("sqlite://{path}?{query}&mode=rwc"),
        None => format!("sqlite://{path}?mode=rwc"),
    })
}

/// The URL with any password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://passage:s3cret@db:5432/passage"),
            "postgres://passage:***@db:5432/passage"
        );
        assert_eq!(
            redact("postgres://passage@db/passage"),
            "postgres://passage@db/passage"
        );
        assert_eq!(
            redact("sqlite://data/passage.db"),
            "sqlite://data/passage.db"
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn sqlite_urls_get_create_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/passage.db");
        let url = prepare_sqlite(&format!("sqlite://{}", path.display())).unwrap();
        assert!(url.ends_with("passage.db?mode=rwc"), "{url}");
        assert!(path.exists());
        assert_eq!(
            prepare_sqlite("sqlite::memory:").unwrap(),
            "sqlite::memory:"
        );
    }

    #[test]
    fn an_unwritable_database_path_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "not a directory").unwrap();
        let err =
            prepare_sqlite(&format!("sqlite://{}/passage.db", blocker.display())).unwrap_err();
        assert!(matches!(err, StoreError::Directory { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&blocker.display().to_string()),
            "{err}"
        );
    }
}
