//! Helpers shared by the server's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use passage_server::config::{AgentSettings, Config, HostConfig, VmSettings};

/// The bundled simulated host file, by absolute path.
pub fn simulated_host_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("hosts/simulated-host.xml")
        .canonicalize()
        .unwrap()
}

/// A configuration for an in-process portal in `dir`: port 0, SQLite in `dir`, given hosts.
pub fn config(dir: &Path, hosts: &[(&str, &str)]) -> Config {
    // What guests would download: the seeds carry its hash.
    let agent_binary = dir.join("passage-agent");
    std::fs::write(
        &agent_binary,
        b"#!/bin/sh\necho a stand-in for passage-agent\n",
    )
    .unwrap();
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}", dir.join("passage.db").display()),
        data_dir: dir.to_path_buf(),
        site_dir: dir.join("site"),
        log: "warn".into(),
        inventory_refresh: Duration::from_secs(3600),
        libvirt_call_timeout: Duration::from_secs(10),
        gpu_vendors: Default::default(),
        quotas: Default::default(),
        auto_approve: Default::default(),
        hosts: hosts
            .iter()
            .map(|(name, uri)| HostConfig::new(*name, *uri))
            .collect(),
        vms: VmSettings {
            shutdown_grace_secs: 1,
            lease_check_secs: 1,
            agent_binary: Some(agent_binary),
            ..VmSettings::default()
        },
        plugins: Default::default(),
        agents: AgentSettings {
            heartbeat_secs: 1,
            offline_after_secs: 3,
        },
        jobs: Default::default(),
        http: Default::default(),
        login: Default::default(),
    }
}

/// Creates a user in the configured database and returns an API token for it.
pub async fn token_for(config: &Config, name: &str, admin: bool) -> String {
    let store = passage_server::store::Store::open(&config.database_url)
        .await
        .unwrap();
    let auth = passage_server::auth::Auth::new(store.clone());
    let user = auth
        .add_user(name, "a long enough password", admin)
        .await
        .unwrap();
    let (_, token) = auth.create_token(&user, "tests", None).await.unwrap();
    store.close().await;
    token
}

/// An HTTP client that sends `token` on every request.
pub fn client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Runs `scenario` against a fresh SQLite file and, when configured, a fresh PostgreSQL database.
pub async fn on_every_backend<F, Fut>(scenario: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    scenario(format!(
        "sqlite://{}",
        dir.path().join("store.db").display()
    ))
    .await;

    let Ok(admin_url) = std::env::var("PASSAGE_TEST_POSTGRES_URL") else {
        println!("PostgreSQL part skipped: PASSAGE_TEST_POSTGRES_URL is not set");
        return;
    };
    sqlx::any::install_default_drivers();
    let name = format!(
        "passage_test_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    scenario(format!("{base}/{name}")).await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// The simulated host's inventory, read through the test driver.
pub async fn simulated_inventory() -> (
    passage_hypervisor::HostInventory,
    Vec<passage_hypervisor::Gpu>,
) {
    let uri = format!("test://{}", simulated_host_file().display());
    let host = passage_hypervisor::LibvirtHost::new(uri, Duration::from_secs(10)).unwrap();
    let inventory = host.inventory().await.unwrap();
    host.disconnect().await;
    let gpus = passage_hypervisor::classify(
        &inventory.devices,
        &passage_hypervisor::GpuVendors::default(),
    );
    (inventory, gpus)
}
