//! GPU VMs: made for placed requests, run, changed and taken back through libvirt.
//!
//! [`VmService`] owns the rules: provisioning with rollback ([`provisioning`]), the lifecycle,
//! hot-plug and leases ([`lifecycle`]), reconciliation of records and domains ([`reconcile`]), the
//! browser console ([`console`]), and the VM API ([`api`]). Every change of state is written to the
//! audit log.

pub mod agent_binary;
pub mod api;
mod console;
mod lifecycle;
mod provisioning;
mod reconcile;
pub mod seed;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use passage_hypervisor::{HypervisorError, LibvirtHost};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::config::{HostConfig, VmSettings};
use crate::scheduler::{self, PlaceError};
use crate::store::{AuditRecord, Store, StoreError};
use agent_binary::AgentBinary;

pub use lifecycle::VmAction;
pub use reconcile::Repairs;

/// Why a VM action failed.
#[derive(Debug, Error)]
pub enum VmError {
    /// No such VM (or not yours).
    #[error("no VM {0}")]
    NotFound(i64),
    /// The VM is not in a state that allows this, or another action is running on it.
    #[error("{0}")]
    Conflict(String),
    /// Only admins may do this.
    #[error("{0}")]
    Forbidden(String),
    /// The request to act is not valid.
    #[error("{0}")]
    Invalid(String),
    /// The hypervisor host failed; libvirt's message is kept.
    #[error(transparent)]
    Host(#[from] HypervisorError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A name for this process's leases, unique among the servers sharing a database.
fn lease_holder() -> String {
    format!(
        "{}-{}-{}",
        gethostname(),
        std::process::id(),
        lease_holder_suffix()
    )
}

fn lease_holder_suffix() -> String {
    use rand_core::RngCore;
    let mut bytes = [0u8; 8];
    rand_core::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn gethostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "server".into())
}

/// One configured host: its connection and its settings.
#[derive(Debug, Clone)]
struct HostHandle {
    host: LibvirtHost,
    config: HostConfig,
}

/// VMs on every configured host.
#[derive(Debug, Clone)]
pub struct VmService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    hosts: HashMap<String, HostHandle>,
    settings: VmSettings,
    public_url: String,
    /// The agent binary guests install.
    agent_binary: AgentBinary,
    /// This installation's id, written into every domain it defines.
    installation: String,
    /// This process among the servers sharing the database: the holder of its leases.
    holder: String,
}

/// How long a VM lease lasts without renewal: a server that dies holding a VM lets go of it
/// this long after its last renewal.
const VM_LEASE: Duration = Duration::from_secs(10);

/// One process's right to act on a VM, held in the database so that every server sharing it
/// sees it ([`VmService::lock_vm`]). It is renewed in the background while held. Give it back
/// with [`VmLock::unlock`]; dropped without that (a panic, a cancelled request), it is given
/// back in the background.
#[must_use]
pub(crate) struct VmLock {
    store: Store,
    name: String,
    holder: String,
    renewal: CancellationToken,
    held: bool,
}

impl VmLock {
    fn new(store: Store, name: String, holder: String) -> VmLock {
        let renewal = CancellationToken::new();
        let (s, n, h, stop) = (store.clone(), name.clone(), holder.clone(), renewal.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(VM_LEASE / 3) => {}
                }
                match s.renew_lease(&n, &h, VM_LEASE).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(lease = %n, "a VM lease was lost while held");
                        return;
                    }
                    Err(e) => tracing::warn!(lease = %n, error = %e, "renewing a VM lease failed"),
                }
            }
        });
        VmLock {
            store,
            name,
            holder,
            renewal,
            held: true,
        }
    }

    /// Gives the VM back.
    pub(crate) async fn unlock(mut self) {
        self.held = false;
        self.renewal.cancel();
        if let Err(e) = self.store.drop_lease(&self.name, &self.holder).await {
            tracing::warn!(lease = %self.name, error = %e, "giving a VM lease back failed; it ends by itself");
        }
    }
}

impl Drop for VmLock {
    fn drop(&mut self) {
        self.renewal.cancel();
        if !self.held {
            return;
        }
        let (store, name, holder) = (self.store.clone(), self.name.clone(), self.holder.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = store.drop_lease(&name, &holder).await;
            });
        }
    }
}

impl VmService {
    /// VMs over `hosts` (each with its configuration), recorded in `store`.
    pub fn new(
        store: Store,
        hosts: Vec<(HostConfig, LibvirtHost)>,
        settings: VmSettings,
        public_url: String,
        installation: String,
    ) -> VmService {
        VmService {
            inner: Arc::new(Inner {
                store,
                hosts: hosts
                    .into_iter()
                    .map(|(config, host)| (config.name.clone(), HostHandle { host, config }))
                    .collect(),
                agent_binary: AgentBinary::new(settings.agent_binary.clone()),
                settings,
                public_url,
                installation,
                holder: lease_holder(),
            }),
        }
    }

    /// The portal's URL as guests reach it.
    pub fn public_url(&self) -> &str {
        &self.inner.public_url
    }

    /// The agent binary guests install, and its hash.
    pub fn agent_binary(&self) -> &AgentBinary {
        &self.inner.agent_binary
    }

    /// The configuration of host `name`, when it is configured.
    pub fn host_config(&self, name: &str) -> Option<&HostConfig> {
        self.inner.hosts.get(name).map(|h| &h.config)
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    fn host(&self, name: &str) -> Result<&HostHandle, VmError> {
        self.inner
            .hosts
            .get(name)
            .ok_or_else(|| VmError::Invalid(format!("host {name:?} is not configured")))
    }

    /// This installation's id.
    pub fn installation(&self) -> &str {
        &self.inner.installation
    }

    /// Takes the right to act on VM `vm_id`, for this process among all servers on the database;
    /// a conflict when another action (here or in another server) holds it.
    pub(crate) async fn lock_vm(&self, vm_id: i64) -> Result<VmLock, VmError> {
        self.try_lock_vm(vm_id).await?.ok_or_else(|| {
            VmError::Conflict(format!("another action on VM {vm_id} is still running"))
        })
    }

    /// Like [`lock_vm`](Self::lock_vm), `None` when someone else holds the VM.
    pub(crate) async fn try_lock_vm(&self, vm_id: i64) -> Result<Option<VmLock>, VmError> {
        let name = format!("vm:{vm_id}");
        // Each lock its own holder: two actions of this process on one VM exclude each other
        // as those of two servers do.
        let holder = format!("{}/{}", self.inner.holder, lease_holder_suffix());
        if !self.store().take_lease(&name, &holder, VM_LEASE).await? {
            return Ok(None);
        }
        Ok(Some(VmLock::new(self.store().clone(), name, holder)))
    }

    /// True when this process runs background loop `name` now: one server among those sharing
    /// the database leads each loop; another takes over when the leader stops renewing.
    async fn leads(&self, name: &str, every: Duration) -> bool {
        let ttl = every * 2 + Duration::from_secs(5);
        match self
            .store()
            .take_lease(&format!("loop:{name}"), &self.inner.holder, ttl)
            .await
        {
            Ok(leads) => leads,
            Err(e) => {
                tracing::warn!(loop_name = name, error = %e, "cannot take the loop's lease");
                false
            }
        }
    }

    async fn audit(&self, record: AuditRecord<'_>) {
        if let Err(e) = self.store().audit(record).await {
            tracing::error!(error = %e, "writing the audit log failed");
        }
    }

    /// Places approved requests that wait for GPUs, first come first served, and provisions
    /// those that now fit. Called whenever GPUs are freed.
    pub async fn place_waiting(&self) -> Result<(), StoreError> {
        for id in self.store().waiting_requests().await? {
            match scheduler::place(self.store(), id).await {
                Ok(placement) => {
                    self.audit(AuditRecord {
                        actor: "system",
                        action: "request.place",
                        subject: format!("request {id}"),
                        before: Some("waiting".into()),
                        after: Some("placed".into()),
                        detail: Some(format!(
                            "{} on {}",
                            placement.gpus.join(", "),
                            placement.host
                        )),
                    })
                    .await;
                    self.provision_in_background(id);
                }
                Err(
                    PlaceError::NoFit(_)
                    | PlaceError::NotPlaceable(_)
                    | PlaceError::BadChoice(_)
                    | PlaceError::OverQuota(_),
                ) => {}
                Err(PlaceError::Contended) => {
                    tracing::warn!(request = id, "placement lost every race; next pass retries")
                }
                Err(PlaceError::Store(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// Starts the background tasks: lease expiry and periodic reconciliation (the first pass
    /// runs at once).
    pub fn spawn_tasks(&self, stop: CancellationToken) -> tokio::task::JoinSet<()> {
        let mut tasks = tokio::task::JoinSet::new();
        let this = self.clone();
        let every = Duration::from_secs(self.inner.settings.lease_check_secs);
        let until = stop.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = until.cancelled() => return this.step_down("leases").await,
                    _ = tokio::time::sleep(every) => {}
                }
                if !this.leads("leases", every).await {
                    continue;
                }
                if let Err(e) = this.reclaim_expired().await {
                    tracing::warn!(error = %e, "reclaiming expired leases failed");
                }
            }
        });
        let this = self.clone();
        let every = Duration::from_secs(self.inner.settings.reconcile_secs);
        tasks.spawn(async move {
            loop {
                if this.leads("reconcile", every).await {
                    match this.reconcile().await {
                        Ok(repairs) if !repairs.is_empty() => {
                            tracing::info!(?repairs, "reconciliation repaired records and domains")
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "reconciliation failed"),
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return this.step_down("reconcile").await,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
        tasks
    }

    /// Gives loop `name` up at shutdown, so that another server (or this one restarted) takes
    /// it over at once rather than when the lease ends.
    async fn step_down(&self, name: &str) {
        if let Err(e) = self
            .store()
            .drop_lease(&format!("loop:{name}"), &self.inner.holder)
            .await
        {
            tracing::debug!(loop_name = name, error = %e, "giving a loop's lease back failed");
        }
    }
}
