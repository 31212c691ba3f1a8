//! The portal's own provisioning and lifecycle code against a real libvirtd under QEMU/TCG
//! (`PASSAGE_TEST_LIBVIRT_URI`, e.g. `qemu:///system`; `.ci/run` starts one). This machine has
//! no IOMMU and no GPU, so: a VM placed without passthrough functions is made, run, shut down,
//! started and released for real; a GPU recorded as if the host had one is unassignable with the
//! host's reason (libvirt's domain capabilities offer no VFIO), and a request for it waits. The
//! failure of a passthrough VM on a host that can pass through is tested on the IOMMU lab host.

mod common;

use std::time::{Duration, Instant};

use passage_app::requests::RequestForm;
use passage_hypervisor::LibvirtHost;
use passage_server::Portal;
use passage_server::config::HostConfig;
use passage_server::store::{FreeGpu, Store};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// A transient directory pool with a small base image, removed with its volumes when dropped.
struct ScratchPool {
    name: String,
    _dir: tempfile::TempDir,
    uri: String,
}

impl ScratchPool {
    fn new(uri: &str, name: &str) -> ScratchPool {
        let dir = tempfile::tempdir().unwrap();
        let xml = format!(
            "<pool type='dir'><name>{name}</name><target><path>{}</path></target></pool>",
            dir.path().display()
        );
        let mut conn = virt::connect::Connect::open(Some(uri)).unwrap();
        if let Ok(old) = virt::storage_pool::StoragePool::lookup_by_name(&conn, name) {
            let _ = old.destroy();
        }
        let pool = virt::storage_pool::StoragePool::create_xml(&conn, &xml, 0).unwrap();
        let base = "<volume><name>base.qcow2</name><capacity unit='MiB'>64</capacity>\
                    <target><format type='qcow2'/></target></volume>";
        virt::storage_vol::StorageVol::create_xml(&pool, base, 0).unwrap();
        conn.close().unwrap();
        ScratchPool {
            name: name.into(),
            _dir: dir,
            uri: uri.into(),
        }
    }
}

impl Drop for ScratchPool {
    fn drop(&mut self) {
        if let Ok(mut conn) = virt::connect::Connect::open(Some(&self.uri)) {
            if let Ok(pool) = virt::storage_pool::StoragePool::lookup_by_name(&conn, &self.name) {
                let _ = pool.destroy();
            }
            let _ = conn.close();
        }
    }
}

async fn get(client: &Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn post(client: &Client, url: String, body: Value) -> (StatusCode, Value) {
    let response = client.post(url).json(&body).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until the VM of `request` satisfies `done`.
async fn vm_of(client: &Client, base: &str, request: i64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let vms = get(client, format!("{base}/api/v1/vms")).await;
        if let Some(vm) = vms
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["request_id"] == request)
            && done(vm)
        {
            return vm.clone();
        }
        assert!(Instant::now() < deadline, "request {request}: {vms}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn form(model: &str) -> RequestForm {
    RequestForm {
        gpu_model: model.into(),
        gpu_count: 1,
        vcpus: 1,
        memory_mib: 512,
        disk_gib: 1,
        image: "tiny".into(),
        hypervisor: "kvm".into(),
        lease_hours: 1,
        reason: "the lifecycle on a real libvirtd".into(),
    }
}

#[tokio::test]
async fn the_portal_runs_vms_on_a_real_libvirtd_and_refuses_passthrough_without_an_iommu() {
    let Some(uri) = passage_test_support::service(
        "PASSAGE_TEST_LIBVIRT_URI",
        "tests/services/libvirtd.sh start prints it; .ci/run sets it",
    ) else {
        return;
    };
    let pool = ScratchPool::new(&uri, "passage-test-portal");
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), &[]);
    config.hosts = vec![HostConfig {
        tcg: true,
        ..HostConfig::new("lab", &uri)
    }];
    // Placed requests without a VM are provisioned by reconciliation: every second here.
    config.vms.reconcile_secs = 1;
    let admin = common::client(&common::token_for(&config, "ops", true).await);
    let ada = common::client(&common::token_for(&config, "ada", false).await);
    let portal = Portal::start(config.clone()).await.unwrap();
    let base = format!("http://{}", portal.address);
    let (status, body) = post(
        &admin,
        format!("{base}/api/v1/images"),
        json!({"name": "tiny", "host": "lab", "pool": pool.name, "volume": "base.qcow2"}),
    )
    .await;
    assert!(status.is_success(), "{body}");
    let store = Store::open(&config.database_url).await.unwrap();
    let ada_id = store.user_by_name("ada").await.unwrap().unwrap().id;
    let host = LibvirtHost::new(&uri, Duration::from_secs(60)).unwrap();

    // 1. A VM placed on the host without passthrough functions: the same provisioning code.
    let plain = store.create_request(ada_id, &form("none")).await.unwrap();
    store
        .claim(
            plain,
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
    let vm = vm_of(&ada, &base, plain, |v| v["state"] == "running").await;
    assert_eq!(vm["domain_type"], "qemu", "TCG on this host: {vm}");
    let id = vm["id"].as_i64().unwrap();
    let domain = vm["domain"].as_str().unwrap().to_string();
    assert!(host.domain(&domain).await.unwrap().is_some());
    assert!(
        host.volume(&pool.name, &format!("{domain}.qcow2"))
            .await
            .unwrap()
            .is_some()
    );
    // No operating system answers ACPI: after the grace period it is powered off.
    let (status, body) = post(&ada, format!("{base}/api/v1/vms/{id}/stop"), json!({})).await;
    assert!(status.is_success(), "{body}");
    vm_of(&ada, &base, plain, |v| v["state"] == "stopped").await;
    let (status, body) = post(&ada, format!("{base}/api/v1/vms/{id}/start"), json!({})).await;
    assert!(status.is_success(), "{body}");
    vm_of(&ada, &base, plain, |v| v["state"] == "running").await;
    let released = ada
        .delete(format!("{base}/api/v1/vms/{id}"))
        .send()
        .await
        .unwrap();
    assert!(released.status().is_success());
    vm_of(&ada, &base, plain, |v| v["state"] == "released").await;
    assert!(host.domain(&domain).await.unwrap().is_none());
    assert!(
        host.volume(&pool.name, &format!("{domain}.qcow2"))
            .await
            .unwrap()
            .is_none()
    );

    // 2. A GPU, recorded as if this host had the simulated host's first H100.
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&admin, format!("{base}/api/v1/hosts")).await[0]["state"] != "reachable" {
        assert!(
            Instant::now() < deadline,
            "the real host is not inventoried"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let inventory = host.inventory().await.unwrap();
    let (_, simulated) = common::simulated_inventory().await;
    let h100 = simulated
        .into_iter()
        .find(|g| g.address.to_string() == "0000:17:00.0")
        .unwrap();
    store
        .record_inventory("lab", &inventory, &[h100], &[])
        .await
        .unwrap();
    let (status, request) = post(
        &ada,
        format!("{base}/api/v1/requests"),
        json!({"gpu_model": "H100 PCIe", "gpu_count": 1, "vcpus": 1, "memory_mib": 512,
               "disk_gib": 1, "image": "tiny", "hypervisor": "kvm", "lease_hours": 1,
               "reason": "passthrough without an IOMMU"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{request}");
    let request = request["id"].as_i64().unwrap();
    // This host has no IOMMU, which libvirt's domain capabilities say: its GPU is unassignable
    // with that reason, and an approved request waits instead of failing on the host.
    let gpus = get(&admin, format!("{base}/api/v1/gpus?host=lab")).await;
    let gpu = gpus
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["address"] == "0000:17:00.0")
        .unwrap_or_else(|| panic!("{gpus}"));
    assert_eq!(gpu["state"], "unassignable", "{gpu}");
    assert!(
        gpu.to_string()
            .contains("the host cannot pass GPUs through"),
        "the reason names the host's problem: {gpu}"
    );
    let (status, body) = post(
        &admin,
        format!("{base}/api/v1/requests/{request}/approve"),
        json!({}),
    )
    .await;
    assert!(status.is_success(), "{body}");
    let shown = get(&ada, format!("{base}/api/v1/requests/{request}")).await;
    assert_eq!(shown["state"], "waiting", "{shown}");
    let vms = get(&ada, format!("{base}/api/v1/vms")).await;
    assert!(
        !vms.as_array()
            .unwrap()
            .iter()
            .any(|v| v["request_id"] == request),
        "no VM is made: {vms}"
    );
    assert!(store.claims().await.unwrap().is_empty(), "no claim is held");
    host.disconnect().await;
    store.close().await;
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}
