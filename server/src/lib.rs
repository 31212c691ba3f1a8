//! The Passage portal server: configuration, storage, inventory, the JSON API and the web UI.
//!
//! `main.rs` only parses the command line; everything a test needs to start a real server in
//! process is here ([`Portal`]).

pub mod accounts;
pub mod api;
pub mod auth;
pub mod config;
pub mod experiments;
pub mod guard;
pub mod inventory;
pub mod jobs;
pub mod metrics;
pub mod paging;
pub mod requests;
pub mod scheduler;
pub mod sign_in_limit;
pub mod store;
pub mod vms;
pub mod web;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use leptos::config::LeptosOptions;
use passage_hypervisor::LibvirtHost;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::inventory::Inventory;
use crate::store::Store;

/// The simulated host description shipped with the server.
pub const SIMULATED_HOST_XML: &str = include_str!("../hosts/simulated-host.xml");

/// What every request handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Leptos' settings (where the browser assets are), shared: every request clones the state.
    pub leptos_options: Arc<LeptosOptions>,
    /// The database.
    pub store: Store,
    /// The hosts' inventory.
    pub inventory: Inventory,
    /// Accounts and sign-in.
    pub auth: auth::Auth,
    /// Quotas and the auto-approval policy.
    pub policy: requests::Policy,
    /// VMs: provisioning, lifecycle, console.
    pub vms: vms::VmService,
    /// Plugins, agents and jobs.
    pub jobs: jobs::JobService,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<Vec<config::IpRange>>,
}

impl AppState {
    /// The client behind a request from `peer` (see [`guard::client_address`]).
    pub fn client_address(&self, peer: SocketAddr, headers: &axum::http::HeaderMap) -> IpAddr {
        guard::client_address(peer, headers, &self.trusted_proxies)
    }
}

impl axum::extract::FromRef<AppState> for auth::Auth {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

impl axum::extract::FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        LeptosOptions::clone(&state.leptos_options)
    }
}

/// The base image the simulated host carries, registered as `debian-12` on first start.
const SIMULATED_IMAGE: (&str, &str, &str) =
    ("debian-12", "images", "debian-12-generic-amd64.qcow2");

async fn register_simulated_image(
    config: &Config,
    store: &Store,
    hosts: &[(String, LibvirtHost)],
) -> anyhow::Result<()> {
    let Some(simulated) = config
        .hosts
        .iter()
        .find(|h| h.uri == config::SIMULATED_HOST_URI)
    else {
        return Ok(());
    };
    let (name, pool, volume) = SIMULATED_IMAGE;
    if store.images().await?.iter().any(|i| i.name == name) {
        return Ok(());
    }
    let Some((_, host)) = hosts.iter().find(|(n, _)| *n == simulated.name) else {
        return Ok(());
    };
    match host.volume(pool, volume).await? {
        Some(found) => {
            store
                .register_image(&store::Image {
                    name: name.into(),
                    host: simulated.name.clone(),
                    pool: pool.into(),
                    volume: volume.into(),
                    path: found.path,
                    capacity_bytes: i64::try_from(found.capacity_bytes).unwrap_or(i64::MAX),
                    kernel: None,
                    initrd: None,
                    cmdline: None,
                    gpu_driver_included: false,
                })
                .await?;
            tracing::info!(image = name, host = %simulated.name, "registered the simulated host's base image");
        }
        None => tracing::warn!(pool, volume, "the simulated host has no base image volume"),
    }
    Ok(())
}

/// A started portal: listening, migrated, refreshing its hosts.
#[derive(Debug)]
pub struct Portal {
    /// The address it listens on (the real port when the configuration asked for port 0).
    pub address: SocketAddr,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Portal {
    /// Opens the database, connects the hosts, binds the listener and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Portal> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                config.data_dir.display()
            )
        })?;
        if config
            .hosts
            .iter()
            .any(|h| h.uri == config::SIMULATED_HOST_URI)
        {
            let file = config.simulated_host_file();
            std::fs::write(&file, SIMULATED_HOST_XML)
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
        let store = Store::open(&config.database_url).await?;
        tracing::info!(database = %store::redact(&config.database_url), "database ready");

        let hosts = config
            .hosts
            .iter()
            .map(|h| {
                let uri = config.libvirt_uri(h);
                LibvirtHost::new(uri, config.libvirt_call_timeout)
                    .map(|host| {
                        let host = host.observed(metrics::libvirt_observer(&h.name));
                        (h.name.clone(), host)
                    })
                    .with_context(|| format!("host {:?}", h.name))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        store
            .sync_hosts(
                &config
                    .hosts
                    .iter()
                    .map(|h| (h.name.clone(), h.uri.clone()))
                    .collect::<Vec<_>>(),
            )
            .await?;
        register_simulated_image(&config, &store, &hosts).await?;
        let auth = auth::Auth::with_settings(store.clone(), config.login);
        let vms = vms::VmService::new(
            store.clone(),
            config
                .hosts
                .iter()
                .cloned()
                .zip(hosts.iter().map(|(_, host)| host.clone()))
                .collect(),
            config.vms.clone(),
            config.public_url(),
            store.installation_id().await?,
        );
        let inventory = Inventory::with_shared_groups(
            store.clone(),
            hosts
                .iter()
                .zip(&config.hosts)
                .map(|((name, host), c)| (name.clone(), host.clone(), c.shared_groups.clone()))
                .collect(),
            config.gpu_vendors.clone(),
        );
        let jobs = jobs::JobService::new(
            store.clone(),
            config.agents,
            config.jobs,
            config.plugins.clone(),
        );
        jobs.register_shipped().await?;
        if store.count_users().await? == 0 {
            tracing::warn!(
                "no accounts yet: create the first admin with `passage user add NAME --admin` \
                 (it reads the password from standard input)"
            );
        }

        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let address = listener.local_addr()?;

        let site = web::site_options(&config);
        let state = AppState {
            leptos_options: Arc::new(site),
            store: store.clone(),
            inventory: inventory.clone(),
            auth,
            policy: requests::Policy {
                quotas: config.quotas,
                auto_approve: config.auto_approve,
            },
            vms: vms.clone(),
            jobs: jobs.clone(),
            trusted_proxies: Arc::new(config.http.trusted_proxies.clone()),
        };
        let state_for_driver = state.clone();
        let router = web::router(state, &config.http, config.served_over_tls());

        let shutdown = CancellationToken::new();
        // The first inventory runs in the background so that the portal answers at once.
        let refreshers = inventory.spawn_refresh_loops(config.inventory_refresh, shutdown.clone());
        let vm_tasks = vms.spawn_tasks(shutdown.clone());
        let job_sweep = jobs.spawn_sweep(shutdown.clone());
        let experiment_driver = experiments::spawn_driver(state_for_driver, shutdown.clone());
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .context("the HTTP server failed")?;
            refreshers.join_all().await;
            vm_tasks.join_all().await;
            let _ = job_sweep.await;
            let _ = experiment_driver.await;
            inventory.disconnect().await;
            store.close().await;
            Ok(())
        });
        tracing::info!(url = %format!("http://{address}/"), "Passage is serving");
        Ok(Portal {
            address,
            shutdown,
            server,
        })
    }

    /// Stops accepting requests, lets running ones finish, stops the inventory and closes the
    /// database, waiting at most `grace`.
    pub async fn shutdown(self, grace: Duration) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match tokio::time::timeout(grace, self.server).await {
            Ok(joined) => joined.context("the server task failed")?,
            Err(_) => anyhow::bail!("requests still running after {} s", grace.as_secs()),
        }
    }

    /// Waits until the server stops by itself (it only does on an error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.server).await.context("the server task failed")?
    }
}
