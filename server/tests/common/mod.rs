//! Helpers shared by the server's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
        log_format: passage_server::config::LogFormat::Text,
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

/// The password of every user [`token_for`] makes.
pub const PASSWORD: &str = "a long enough password";

/// Creates a user in the configured database and returns an API token for it.
pub async fn token_for(config: &Config, name: &str, admin: bool) -> String {
    let store = passage_server::store::Store::open(&config.database_url)
        .await
        .unwrap();
    let auth = passage_server::auth::Auth::new(store.clone());
    let user = auth.add_user(name, PASSWORD, admin).await.unwrap();
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

    let Some(admin_url) = passage_test_support::service(
        "PASSAGE_TEST_POSTGRES_URL",
        "tests/services/postgres.sh start prints it, .ci/run sets it; the SQLite half ran",
    ) else {
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

/// Registers a plugin record `name` with one integer parameter `size` in the configured
/// database, as the registry would after reading its `describe`; returns its id. The component
/// bytes are a stand-in: nothing here runs it.
pub async fn stand_in_plugin(config: &Config, name: &str) -> i64 {
    use passage_plugin_host::{ParamKind, ParamSpec, ParamValue};
    use passage_server::store::{NewPlugin, Registered};
    let store = passage_server::store::Store::open(&config.database_url)
        .await
        .unwrap();
    let params = [ParamSpec {
        name: "size".into(),
        summary: "elements".into(),
        kind: ParamKind::Integer,
        default: ParamValue::Integer(1024),
        min: Some(1.0),
        max: None,
        unit: String::new(),
    }];
    let component = format!("\0asm a stand-in for {name}").into_bytes();
    let sha256 = passage_server::auth::secret_hash(name);
    let registered = store
        .register_plugin(&NewPlugin {
            name,
            version: "1.0.0",
            summary: "a stand-in",
            params: &params,
            sha256: &sha256,
            component: &component,
            shipped: false,
            all_gpus: false,
            uploaded_by: "tests",
        })
        .await
        .unwrap();
    store.close().await;
    match registered {
        Registered::New(id) | Registered::Known(id) => id,
    }
}

/// Polls `check` every 50 ms until it gives a value or `within` has passed; then fails with
/// `what` (what was waited for) and the last state `check` described.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(state) if std::time::Instant::now() >= deadline => {
                panic!("waited {within:?} for {what}; last seen: {state}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

pub fn plugin_dir() -> PathBuf {
    std::env::var_os("PASSAGE_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("plugins"))
}

pub fn agent_binary() -> PathBuf {
    let path = target_dir().join("debug/passage-agent");
    assert!(
        path.is_file(),
        "{} is missing: build it first (./x build)",
        path.display()
    );
    path
}

/// A `passage-agent serve` process, killed when dropped; what it said is shown if the test
/// fails.
pub struct Agent {
    child: Child,
    cache: tempfile::TempDir,
}

impl Agent {
    pub fn start(base: &str, token: &str, devices: usize) -> Agent {
        Agent::spawn(
            base,
            token,
            &["--backend", "fake", "--fake-devices", &devices.to_string()],
        )
    }

    /// An agent on the CUDA backend: on a machine without NVIDIA's driver it has no GPUs.
    pub fn start_cuda(base: &str, token: &str) -> Agent {
        Agent::spawn(base, token, &["--backend", "cuda"])
    }

    pub fn spawn(base: &str, token: &str, backend: &[&str]) -> Agent {
        let cache = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(cache.path().join("agent.log")).unwrap();
        let child = Command::new(agent_binary())
            .args(["serve", "--server", base])
            .args(backend)
            .arg("--cache-dir")
            .arg(cache.path())
            .env("PASSAGE_AGENT_TOKEN", token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Agent { child, cache }
    }

    /// Whether the agent has written `text` to its log.
    pub fn said(&self, text: &str) -> bool {
        std::fs::read_to_string(self.cache.path().join("agent.log"))
            .is_ok_and(|log| log.contains(text))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.cache.path().join("agent.log"));
            eprintln!("the agent said:\n{}", log.unwrap_or_default());
        }
    }
}

/// The agent token a VM's cloud-init seed carries, read the way the guest does: from the seed
/// URL in the domain's SMBIOS serial.
pub async fn seed_token(admin: &reqwest::Client, base: &str, vm: i64) -> String {
    let xml = admin
        .get(format!("{base}/api/v1/vms/{vm}/domain"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = "ds=nocloud-net;s=";
    let start = xml.find(marker).expect("a seed URL in the domain") + marker.len();
    let url = &xml[start..];
    let url = &url[..url.find('<').unwrap()];
    let url = url.replace("&amp;", "&");
    let user_data = reqwest::get(format!("{url}user-data"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = user_data
        .split_whitespace()
        .find(|w| w.starts_with("psa_"))
        .expect("the agent token in the seed");
    token
        .trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .to_string()
}

/// GETs `url` as `client`: the status and the JSON answer (`null` when it is not JSON).
pub async fn get(
    client: &reqwest::Client,
    url: String,
) -> (reqwest::StatusCode, serde_json::Value) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// POSTs `body` as JSON to `url` as `client`: the status and the JSON answer.
pub async fn post(
    client: &reqwest::Client,
    url: String,
    body: serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    let response = client.post(url).json(&body).send().await.unwrap();
    let status = response.status();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// Asks the portal at `base` for a fresh inventory of its hosts and registers the simulated
/// host's base image as `debian-12` on `host`, as an admin would.
pub async fn inventory_and_image(admin: &reqwest::Client, base: &str, host: &str) {
    let (status, body) = post(
        admin,
        format!("{base}/api/v1/inventory/refresh"),
        serde_json::json!({}),
    )
    .await;
    assert!(status.is_success(), "{status}: {body}");
    let (status, body) = post(
        admin,
        format!("{base}/api/v1/images"),
        serde_json::json!({"name": "debian-12", "host": host, "pool": "images",
                           "volume": "debian-12-generic-amd64.qcow2"}),
    )
    .await;
    assert!(status.is_success(), "{status}: {body}");
}

/// Files a request for `count` H100 PCIe GPUs on `debian-12` as `client`; returns its id.
pub async fn file_h100_request(client: &reqwest::Client, base: &str, count: i64) -> i64 {
    let (status, filed) = post(
        client,
        format!("{base}/api/v1/requests"),
        serde_json::json!({
            "gpu_model": "H100 PCIe", "gpu_count": count, "vcpus": 2, "memory_mib": 2048,
            "disk_gib": 10, "image": "debian-12", "hypervisor": "kvm", "lease_hours": 1,
            "reason": "a test"
        }),
    )
    .await;
    assert_eq!(status, 201, "{filed}");
    filed["id"].as_i64().unwrap()
}

/// The simulated host's base image as a copy on `host`, for tests that record it directly.
pub fn debian_image_on(host: &str) -> passage_server::store::Image {
    passage_server::store::Image {
        name: "debian-12".into(),
        host: host.into(),
        pool: "images".into(),
        volume: "debian-12-generic-amd64.qcow2".into(),
        path: "/var/lib/passage/images/debian-12-generic-amd64.qcow2".into(),
        capacity_bytes: 3 << 30,
        kernel: None,
        initrd: None,
        cmdline: None,
        gpu_driver_included: false,
    }
}

/// A request for `count` H100 PCIe GPUs on `debian-12`, for tests that file it directly.
pub fn h100_form(count: i64) -> passage_app::requests::RequestForm {
    passage_app::requests::RequestForm {
        gpu_model: "H100 PCIe".into(),
        gpu_count: count,
        vcpus: 4,
        memory_mib: 8192,
        disk_gib: 20,
        image: "debian-12".into(),
        hypervisor: "kvm".into(),
        lease_hours: 1,
        reason: "a test".into(),
    }
}
