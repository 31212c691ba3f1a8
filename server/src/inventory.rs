//! Keeps the stored inventory in step with the hosts.
//!
//! Each configured host gets one [`LibvirtHost`] (one long-lived connection) and a background task
//! that refreshes its inventory periodically. A host that fails is marked unreachable with
//! libvirt's message and retried sooner, with backoff, without disturbing the other hosts.
//! A refresh can also be asked for on demand; it runs the same code under the same per-host lock.

use std::sync::Arc;
use std::time::Duration;

use passage_app::inventory::{HostView, InventoryView, Viewer};
use passage_hypervisor::{GpuVendors, LibvirtHost, PciAddress, classify};
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::SharedGroup;
use crate::store::{Store, StoreError};

/// The first retry of a failing host comes after this long, doubling up to the refresh period.
const FIRST_RETRY: Duration = Duration::from_secs(5);

/// One configured host and its connection.
#[derive(Debug)]
struct HostEntry {
    name: String,
    host: LibvirtHost,
    /// Host devices an admin allows to go with a GPU (by GPU address).
    shared_groups: Vec<(PciAddress, Vec<PciAddress>)>,
    /// Serialises inventory passes of this host (periodic and on demand).
    pass: Mutex<()>,
}

/// The inventory of every configured host.
#[derive(Debug, Clone)]
pub struct Inventory {
    store: Store,
    hosts: Arc<Vec<HostEntry>>,
    gpu_vendors: GpuVendors,
}

/// How one host's inventory pass went.
#[derive(Debug)]
pub enum PassOutcome {
    /// The host answered with this many GPUs.
    Reachable {
        /// GPUs found.
        gpus: usize,
    },
    /// The host did not answer; the message is stored for admins.
    Unreachable {
        /// libvirt's message.
        error: String,
    },
}

impl Inventory {
    /// An inventory over `hosts` (name and libvirt host), recording into `store` the display
    /// functions of `gpu_vendors` as GPUs.
    pub fn new(
        store: Store,
        hosts: Vec<(String, LibvirtHost)>,
        gpu_vendors: GpuVendors,
    ) -> Inventory {
        Inventory::with_shared_groups(
            store,
            hosts.into_iter().map(|(n, h)| (n, h, Vec::new())).collect(),
            gpu_vendors,
        )
    }

    /// Like [`new`](Self::new), with each host's [`SharedGroup`]s (validated addresses).
    pub fn with_shared_groups(
        store: Store,
        hosts: Vec<(String, LibvirtHost, Vec<SharedGroup>)>,
        gpu_vendors: GpuVendors,
    ) -> Inventory {
        let parse = |a: &String| a.parse::<PciAddress>().ok();
        Inventory {
            store,
            gpu_vendors,
            hosts: Arc::new(
                hosts
                    .into_iter()
                    .map(|(name, host, shared)| HostEntry {
                        name,
                        host,
                        shared_groups: shared
                            .iter()
                            .filter_map(|g| {
                                Some((parse(&g.gpu)?, g.members.iter().filter_map(parse).collect()))
                            })
                            .collect(),
                        pass: Mutex::new(()),
                    })
                    .collect(),
            ),
        }
    }

    /// The connection of host `name`, if it is configured.
    pub fn host(&self, name: &str) -> Option<LibvirtHost> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.host.clone())
    }

    /// Refreshes one host now. A host that does not answer is recorded as unreachable; only a
    /// database failure is an error.
    pub async fn refresh_host(&self, index: usize) -> Result<PassOutcome, StoreError> {
        let entry = &self.hosts[index];
        let _pass = entry.pass.lock().await;
        match entry.host.inventory().await {
            Ok(inventory) => {
                let gpus = classify(&inventory.devices, &self.gpu_vendors);
                self.store
                    .record_inventory(&entry.name, &inventory, &gpus, &entry.shared_groups)
                    .await?;
                tracing::info!(
                    host = %entry.name,
                    devices = inventory.devices.len(),
                    gpus = gpus.len(),
                    "inventory refreshed"
                );
                Ok(PassOutcome::Reachable { gpus: gpus.len() })
            }
            Err(e) => {
                let error = e.to_string();
                tracing::warn!(host = %entry.name, error = %error, "host unreachable");
                self.store.record_failure(&entry.name, &error).await?;
                Ok(PassOutcome::Unreachable { error })
            }
        }
    }

    /// Refreshes every host at once and waits for all of them.
    pub async fn refresh_all(&self) -> Result<(), StoreError> {
        let mut passes = JoinSet::new();
        for index in 0..self.hosts.len() {
            let inventory = self.clone();
            passes.spawn(async move { inventory.refresh_host(index).await });
        }
        let mut result = Ok(());
        while let Some(joined) = passes.join_next().await {
            match joined {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => result = Err(e),
                Err(e) => tracing::error!(error = %e, "an inventory pass panicked"),
            }
        }
        result
    }

    /// Starts one background task per host that refreshes it every `period` (sooner, with
    /// backoff, while it fails) until `shutdown` is cancelled.
    pub fn spawn_refresh_loops(
        &self,
        period: Duration,
        shutdown: CancellationToken,
    ) -> JoinSet<()> {
        let mut tasks = JoinSet::new();
        for index in 0..self.hosts.len() {
            let inventory = self.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                let mut retry = FIRST_RETRY;
                loop {
                    let wait = match inventory.refresh_host(index).await {
                        Ok(PassOutcome::Reachable { .. }) => {
                            retry = FIRST_RETRY;
                            period
                        }
                        Ok(PassOutcome::Unreachable { .. }) => {
                            let wait = retry.min(period);
                            retry = (retry * 2).min(period);
                            wait
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot record the inventory");
                            period
                        }
                    };
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            });
        }
        tasks
    }

    /// Closes every host's connection.
    pub async fn disconnect(&self) {
        for entry in self.hosts.iter() {
            entry.host.disconnect().await;
        }
    }

    /// The stored inventory, as `viewer` sees it (see [`hosts_for`]).
    pub async fn view(&self, viewer: Viewer) -> Result<InventoryView, StoreError> {
        Ok(InventoryView {
            hosts: hosts_for(&self.store, viewer.is_admin).await?,
            gpus: Arc::unwrap_or_clone(self.store.gpus().await?),
            viewer,
        })
    }
}

/// How far back the start-up figures on the hosts look.
const STARTUP_WINDOW_MS: i64 = 30 * 24 * 3_600_000;

/// The hosts as someone sees them: admins everything, with how long VMs took to come up there
/// over the last 30 days; others no libvirt URI, no libvirt message and no host software (those
/// name internal machines and accounts).
pub async fn hosts_for(store: &Store, is_admin: bool) -> Result<Vec<HostView>, StoreError> {
    let hosts = store.hosts().await?;
    if !is_admin {
        return Ok(hosts
            .iter()
            .cloned()
            .map(HostView::without_internals)
            .collect());
    }
    let mut startup = store
        .startup_times(crate::store::now_ms() - STARTUP_WINDOW_MS)
        .await?;
    Ok(hosts
        .iter()
        .cloned()
        .map(|mut host| {
            host.startup = startup.remove(&host.name);
            host
        })
        .collect())
}
