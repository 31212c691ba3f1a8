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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
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
    /// VMs with an action in progress in this process; a second action is refused.
    busy: Mutex<HashSet<i64>>,
}

/// Marks a VM busy until dropped.
struct BusyGuard {
    inner: Arc<Inner>,
    vm_id: i64,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.inner
            .busy
            .lock()
            .expect("busy set poisoned")
            .remove(&self.vm_id);
    }
}

impl VmService {
    /// VMs over `hosts` (each with its configuration), recorded in `store`.
    pub fn new(
        store: Store,
        hosts: Vec<(HostConfig, LibvirtHost)>,
        settings: VmSettings,
        public_url: String,
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
                busy: Mutex::new(HashSet::new()),
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

    fn claim_busy(&self, vm_id: i64) -> Result<BusyGuard, VmError> {
        if !self
            .inner
            .busy
            .lock()
            .expect("busy set poisoned")
            .insert(vm_id)
        {
            return Err(VmError::Conflict(format!(
                "another action on VM {vm_id} is still running"
            )));
        }
        Ok(BusyGuard {
            inner: self.inner.clone(),
            vm_id,
        })
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
                    PlaceError::NoFit(_) | PlaceError::NotPlaceable(_) | PlaceError::BadChoice(_),
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
                    _ = until.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
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
                match this.reconcile().await {
                    Ok(repairs) if !repairs.is_empty() => {
                        tracing::info!(?repairs, "reconciliation repaired records and domains")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "reconciliation failed"),
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
        tasks
    }
}
