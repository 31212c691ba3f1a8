//! A real guest, end to end, on a real libvirtd under QEMU/TCG: the portal provisions a VM from
//! a Debian 12 image with cloud-init (`tests/services/guest-image.sh`), the guest fetches its
//! seed from the portal, installs `passage-agent` from `/downloads/passage-agent` after checking
//! its SHA-256, starts it as its own unprivileged account, and the agent registers with its
//! one-VM token; the portal then runs a shipped plugin on the agent's simulated GPU and shows the
//! result, and the VM shows the address the guest really got.
//!
//! Needs `PASSAGE_TEST_LIBVIRT_URI` (`tests/services/libvirtd.sh start`) and
//! `PASSAGE_TEST_GUEST_IMAGE` (`tests/services/guest-image.sh`); `.ci/run` sets both. Without
//! them it says so and is skipped. Slow: the guest boots under TCG (minutes on two cores).

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use passage_app::requests::RequestForm;
use passage_hypervisor::LibvirtHost;
use passage_server::Portal;
use passage_server::config::{AgentBackend, AgentSettings, HostConfig};
use passage_server::store::{FreeGpu, Store};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// A transient directory pool holding the guest image (a hard link, or a copy across file
/// systems), destroyed with its volumes when dropped.
struct GuestPool {
    name: String,
    dir: tempfile::TempDir,
    uri: String,
}

impl GuestPool {
    fn new(uri: &str, name: &str, image: &Path) -> GuestPool {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("debian-12-cloud-init.qcow2");
        if std::fs::hard_link(image, &base).is_err() {
            std::fs::copy(image, &base).unwrap();
        }
        let xml = format!(
            "<pool type='dir'><name>{name}</name><target><path>{}</path></target></pool>",
            dir.path().display()
        );
        let mut conn = virt::connect::Connect::open(Some(uri)).unwrap();
        if let Ok(old) = virt::storage_pool::StoragePool::lookup_by_name(&conn, name) {
            let _ = old.destroy();
        }
        virt::storage_pool::StoragePool::create_xml(&conn, &xml, 0).unwrap();
        conn.close().unwrap();
        GuestPool {
            name: name.into(),
            dir,
            uri: uri.into(),
        }
    }
}

impl Drop for GuestPool {
    fn drop(&mut self) {
        if let Ok(mut conn) = virt::connect::Connect::open(Some(&self.uri)) {
            if let Ok(pool) = virt::storage_pool::StoragePool::lookup_by_name(&conn, &self.name) {
                let _ = pool.destroy();
            }
            let _ = conn.close();
        }
        let _ = std::fs::remove_dir_all(self.dir.path());
    }
}

async fn get(client: &Client, url: String) -> Value {
    let response = client.get(url).send().await.unwrap();
    response.json().await.unwrap_or(Value::Null)
}

async fn post(client: &Client, url: String, body: Value) -> (StatusCode, Value) {
    let response = client.post(url).json(&body).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls `probe` every second until it gives a value, or fails after `limit` with `what`.
async fn wait_for<F, Fut>(what: &str, limit: Duration, mut probe: F) -> Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Value, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(state) if Instant::now() >= deadline => {
                panic!(
                    "{what}: not after {} s; last seen: {state}",
                    limit.as_secs()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// A port on the loopback interface that nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_real_guest_fetches_its_seed_installs_the_agent_and_runs_a_job() {
    let Some([uri, image]) = passage_test_support::services(
        &["PASSAGE_TEST_LIBVIRT_URI", "PASSAGE_TEST_GUEST_IMAGE"],
        "tests/services/libvirtd.sh start and tests/services/guest-image.sh print them; \
         .ci/run sets both",
    )
    .map(|v| <[String; 2]>::try_from(v).expect("two values")) else {
        return;
    };
    let started = Instant::now();
    let step = |what: &str| eprintln!("real guest: {what} at {} s", started.elapsed().as_secs());
    let agent_binary = target_dir().join("debug/passage-agent");
    assert!(
        agent_binary.is_file(),
        "{} is missing: build it first (./x build)",
        agent_binary.display()
    );
    let pool = GuestPool::new(&uri, "passage-test-guest", Path::new(&image));
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), &[]);
    // QEMU's user networking: the guest reaches the host's loopback as 10.0.2.2.
    let port = free_port();
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    config.vms.public_url = Some(format!("http://10.0.2.2:{port}"));
    config.vms.agent_binary = Some(agent_binary.clone());
    config.vms.reconcile_secs = 1;
    config.vms.provisioning_timeout_secs = 600;
    config.hosts = vec![HostConfig {
        tcg: true,
        agent_backend: AgentBackend::Fake,
        ..HostConfig::new("lab", &uri)
    }];
    // An emulated guest answers slowly: give its agent time before it counts as offline.
    config.agents = AgentSettings {
        heartbeat_secs: 2,
        offline_after_secs: 120,
    };
    config.plugins.dir = Some(
        std::env::var_os("PASSAGE_PLUGIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| target_dir().join("plugins")),
    );
    let admin = common::client(&common::token_for(&config, "ops", true).await);
    let ada = common::client(&common::token_for(&config, "ada", false).await);
    let portal = Portal::start(config.clone()).await.unwrap();
    let base = format!("http://{}", portal.address);
    let (status, body) = post(
        &admin,
        format!("{base}/api/v1/images"),
        json!({"name": "debian-12-ci", "host": "lab", "pool": pool.name,
               "volume": "debian-12-cloud-init.qcow2"}),
    )
    .await;
    assert!(status.is_success(), "{body}");
    let store = Store::open(&config.database_url).await.unwrap();
    let ada_id = store.user_by_name("ada").await.unwrap().unwrap().id;

    // A VM placed on the host without passthrough functions (this host has no IOMMU): the
    // portal's own provisioning, seed and agent download.
    let request = store
        .create_request(
            ada_id,
            &RequestForm {
                gpu_model: "simulated".into(),
                gpu_count: 1,
                vcpus: 2,
                memory_mib: 1024,
                disk_gib: 4,
                image: "debian-12-ci".into(),
                hypervisor: "kvm".into(),
                lease_hours: 1,
                reason: "a real guest with cloud-init".into(),
            },
        )
        .await
        .unwrap();
    store
        .claim(
            request,
            &[FreeGpu {
                gpu_id: 0,
                host: "lab".into(),
                address: "none".into(),
                numa_node: None,
                pcie_root: None,
                functions: Vec::new(),
            }],
        )
        .await
        .unwrap();
    let vm = wait_for("the VM runs", Duration::from_secs(90), || async {
        let vms = get(&ada, format!("{base}/api/v1/vms")).await;
        let vm = vms
            .as_array()
            .and_then(|v| v.iter().find(|v| v["request_id"] == request).cloned())
            .unwrap_or(Value::Null);
        match vm["state"].as_str() {
            Some("running") => Ok(vm),
            Some("failed") => panic!("provisioning failed: {vm}"),
            _ => Err(vm.to_string()),
        }
    })
    .await;
    step("the domain runs");
    let id = vm["id"].as_i64().unwrap();
    assert_eq!(vm["domain_type"], "qemu", "{vm}");
    assert!(vm["ssh_address"].is_null(), "no address before the agent");

    // The guest boots, runs cloud-init, installs and starts the agent.
    let agent = wait_for(
        "the guest's agent registers",
        Duration::from_secs(900),
        || async {
            let agents = get(&ada, format!("{base}/api/v1/agents")).await;
            let agent = agents
                .as_array()
                .and_then(|a| a.iter().find(|a| a["vm_id"] == id).cloned())
                .unwrap_or(Value::Null);
            if agent["status"] == "online" && !agent["devices"].as_array().unwrap().is_empty() {
                Ok(agent)
            } else {
                Err(agent.to_string())
            }
        },
    )
    .await;
    step("the agent registered");
    assert_eq!(agent["backend"], "fake", "{agent}");
    assert_eq!(agent["devices"][0]["simulated"], true, "{agent}");
    assert!(agent["cuda_problem"].is_null(), "{agent}");
    let account = agent["run_as"].as_str().unwrap();
    assert!(
        account.starts_with("passage-agent (uid ") && !account.contains("uid 0)"),
        "the agent runs as its own unprivileged account: {account}"
    );
    assert!(
        agent["verification"]
            .as_str()
            .unwrap()
            .starts_with("unverified: the agent runs on a simulated GPU"),
        "{agent}"
    );
    // The address the guest got (QEMU's user networking hands out 10.0.2.15), on the VM.
    let address: IpAddr = agent["addresses"][0].as_str().unwrap().parse().unwrap();
    assert!(!address.is_loopback(), "{address}");
    let shown = get(&ada, format!("{base}/api/v1/vms/{id}")).await;
    assert_eq!(shown["ssh_address"], address.to_string(), "{shown}");
    assert_eq!(shown["ssh_user"], "ada");

    // A shipped plugin on the guest's simulated GPU, its result through the API.
    let plugins = get(&ada, format!("{base}/api/v1/plugins")).await;
    let vector_add = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "vector-add")
        .unwrap_or_else(|| panic!("vector-add is not registered: {plugins}"))["id"]
        .as_i64()
        .unwrap();
    let (status, queued) = post(
        &ada,
        format!("{base}/api/v1/jobs"),
        json!({"plugin": vector_add, "agent": agent["id"], "params": {"elements": "4096"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{queued}");
    let job_id = queued["jobs"][0].as_i64().unwrap();
    let job = wait_for("the job ends", Duration::from_secs(600), || async {
        let job = get(&ada, format!("{base}/api/v1/jobs/{job_id}")).await;
        match job["state"].as_str() {
            Some("succeeded" | "failed" | "cancelled") => Ok(job),
            _ => Err(job.to_string()),
        }
    })
    .await;
    step("the job ended");
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["result"]["simulated"], true,
        "labelled simulated: {job}"
    );
    assert_eq!(job["target"], format!("VM {id} (ada)"));
    assert!(
        job["result"]["metrics"]
            .as_array()
            .is_some_and(|m| !m.is_empty()),
        "{job}"
    );

    // Released: the domain and its disk are gone, the token with them.
    let released = ada
        .delete(format!("{base}/api/v1/vms/{id}"))
        .send()
        .await
        .unwrap();
    assert!(released.status().is_success());
    wait_for("the VM is released", Duration::from_secs(90), || async {
        let vm = get(&ada, format!("{base}/api/v1/vms/{id}")).await;
        if vm["state"] == "released" {
            Ok(vm)
        } else {
            Err(vm.to_string())
        }
    })
    .await;
    let host = LibvirtHost::new(&uri, Duration::from_secs(60)).unwrap();
    let domain = vm["domain"].as_str().unwrap();
    assert!(host.domain(domain).await.unwrap().is_none());
    assert!(
        host.volume(&pool.name, &format!("{domain}.qcow2"))
            .await
            .unwrap()
            .is_none()
    );
    step("released");
    eprintln!(
        "real guest: provisioning to a job's result in {} s",
        started.elapsed().as_secs()
    );
    host.disconnect().await;
    store.close().await;
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}
