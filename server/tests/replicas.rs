//! Two portal servers on one database and one real libvirtd (QEMU/TCG, `PASSAGE_TEST_LIBVIRT_URI`),
//! on SQLite and PostgreSQL: they provision, stop and release the same VMs at the same time, both
//! running their background loops. Each VM is acted on once per action, none is rolled back by
//! the other server's reconciliation, and nothing is left on the host. The order in which the
//! two servers are asked comes from a seed (`PASSAGE_TEST_SEED`, printed), so that a failing
//! interleaving can be replayed.

mod common;

use std::time::{Duration, Instant};

use passage_app::requests::RequestForm;
use passage_hypervisor::LibvirtHost;
use passage_server::Portal;
use passage_server::config::HostConfig;
use passage_server::store::{FreeGpu, Store};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const VMS: usize = 3;
const ROUNDS: usize = 2;

/// A small deterministic generator (SplitMix64): the same seed, the same interleavings.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

async fn get(client: &Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// Waits until every VM of `requests` satisfies `done`.
async fn vms_of(client: &Client, base: &str, requests: &[i64], done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let vms = get(client, format!("{base}/api/v1/vms")).await;
        let all = requests.iter().all(|r| {
            vms.as_array()
                .unwrap()
                .iter()
                .any(|v| v["request_id"] == *r && done(v))
        });
        if all {
            return;
        }
        assert!(Instant::now() < deadline, "VMs of {requests:?}: {vms}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn audit_count(client: &Client, base: &str, action: &str) -> usize {
    get(client, format!("{base}/api/v1/audit?action={action}"))
        .await
        .as_array()
        .unwrap()
        .len()
}

/// Sends `method` on `path` to both servers at once until one of them does it: a background
/// repair may hold the VM for a moment, and then both are refused.
async fn one_of_both(
    seed: &mut Seeded,
    client: &Client,
    bases: [&str; 2],
    method: reqwest::Method,
    path: &str,
) -> [StatusCode; 2] {
    for _ in 0..20 {
        let answers = both(seed, client, bases, method.clone(), path).await;
        if answers != [StatusCode::CONFLICT; 2] {
            return answers;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("{method} {path}: refused by both servers for 6 s");
}

/// Sends `method` on `path` to both servers at once, the one asked first chosen by `seed`.
async fn both(
    seed: &mut Seeded,
    client: &Client,
    bases: [&str; 2],
    method: reqwest::Method,
    path: &str,
) -> [StatusCode; 2] {
    let (first, second) = if seed.coin() {
        (bases[0], bases[1])
    } else {
        (bases[1], bases[0])
    };
    let send = |base: &str| {
        client
            .request(method.clone(), format!("{base}{path}"))
            .json(&json!({}))
            .send()
    };
    let (a, b) = tokio::join!(send(first), send(second));
    let (a, b) = (a.unwrap(), b.unwrap());
    let statuses = [a.status(), b.status()];
    let bodies = [a.text().await.unwrap(), b.text().await.unwrap()];
    if statuses.iter().any(|s| s.is_server_error()) {
        panic!("{method} {path}: {statuses:?} {bodies:?}");
    }
    statuses
}

/// Removes this test's domains from the shared libvirtd whatever happens, so that a failure
/// leaves nothing that later runs would collide with; only domains of this installation.
struct Cleanup {
    uri: String,
    installation: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(mut conn) = virt::connect::Connect::open(Some(&self.uri)) else {
            return;
        };
        for domain in conn.list_all_domains(0).unwrap_or_default() {
            let ours = domain
                .get_xml_desc(0)
                .ok()
                .and_then(|xml| passage_hypervisor::domain::installation_of(&xml))
                .is_some_and(|i| i == self.installation);
            if ours {
                let _ = domain.destroy();
                let _ = domain.undefine();
            }
        }
        let _ = conn.close();
    }
}

#[tokio::test]
async fn two_servers_on_one_database_act_on_each_vm_once() {
    let Some(uri) = passage_test_support::service(
        "PASSAGE_TEST_LIBVIRT_URI",
        "tests/services/libvirtd.sh start prints it; .ci/run sets it",
    ) else {
        return;
    };
    let seed: u64 = std::env::var("PASSAGE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2012);
    println!("seed {seed} (PASSAGE_TEST_SEED replays it)");
    common::on_every_backend(|url| {
        let uri = uri.clone();
        async move { replicas(&uri, url, seed).await }
    })
    .await;
}

async fn replicas(uri: &str, url: String, seed: u64) {
    let mut seed = Seeded(seed);
    let pool_dir = tempfile::tempdir().unwrap();
    let pool = format!("passage-test-replicas-{}", std::process::id());
    let mut conn = virt::connect::Connect::open(Some(uri)).unwrap();
    let scratch = virt::storage_pool::StoragePool::create_xml(
        &conn,
        &format!(
            "<pool type='dir'><name>{pool}</name><target><path>{}</path></target></pool>",
            pool_dir.path().display()
        ),
        0,
    )
    .unwrap();
    virt::storage_vol::StorageVol::create_xml(
        &scratch,
        "<volume><name>base.qcow2</name><capacity unit='MiB'>64</capacity>\
         <target><format type='qcow2'/></target></volume>",
        0,
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), &[]);
    config.database_url = url;
    config.hosts = vec![HostConfig {
        tcg: true,
        ..HostConfig::new("lab", uri)
    }];
    config.vms.reconcile_secs = 1;
    let admin = common::client(&common::token_for(&config, "ops", true).await);
    let ada = common::client(&common::token_for(&config, "ada", false).await);
    let one = Portal::start(config.clone()).await.unwrap();
    let two = Portal::start(config.clone()).await.unwrap();
    let (a, b) = (
        format!("http://{}", one.address),
        format!("http://{}", two.address),
    );
    let registered = admin
        .post(format!("{a}/api/v1/images"))
        .json(&json!({"name": "tiny", "host": "lab", "pool": pool, "volume": "base.qcow2"}))
        .send()
        .await
        .unwrap();
    assert!(registered.status().is_success());
    let store = Store::open(&config.database_url).await.unwrap();
    let _cleanup = Cleanup {
        uri: uri.to_string(),
        installation: store.installation_id().await.unwrap(),
    };
    let ada_id = store.user_by_name("ada").await.unwrap().unwrap().id;

    for round in 0..ROUNDS {
        // Placed requests without passthrough functions (this host has no IOMMU): both
        // servers' reconciliation would provision them; exactly one VM each is made.
        let mut requests = Vec::new();
        for _ in 0..VMS {
            let id = store
                .create_request(
                    ada_id,
                    &RequestForm {
                        gpu_model: "none".into(),
                        gpu_count: 1,
                        vcpus: 1,
                        memory_mib: 256,
                        disk_gib: 1,
                        image: "tiny".into(),
                        hypervisor: "kvm".into(),
                        lease_hours: 1,
                        reason: "two servers".into(),
                    },
                )
                .await
                .unwrap();
            store
                .claim(
                    id,
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
            requests.push(id);
        }
        vms_of(&ada, &b, &requests, |v| v["state"] == "running").await;
        let vms: Vec<i64> = get(&ada, format!("{a}/api/v1/vms"))
            .await
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| requests.iter().any(|r| v["request_id"] == *r))
            .map(|v| v["id"].as_i64().unwrap())
            .collect();
        assert_eq!(vms.len(), VMS, "round {round}: one VM per request");

        // Both servers are asked to stop each VM at once: one stops it, the other is told
        // another action runs or that it is stopped already.
        for vm in &vms {
            let answers = one_of_both(
                &mut seed,
                &ada,
                [&a, &b],
                reqwest::Method::POST,
                &format!("/api/v1/vms/{vm}/stop"),
            )
            .await;
            if answers.iter().filter(|s| s.is_success()).count() != 1 {
                let log = get(&admin, format!("{a}/api/v1/audit?subject=vm%20{vm}")).await;
                panic!("round {round}, VM {vm}: {answers:?}\n{log:#}");
            }
            assert!(answers.contains(&StatusCode::CONFLICT), "{answers:?}");
        }
        vms_of(&ada, &a, &requests, |v| v["state"] == "stopped").await;
        // And to release each at once: released once, its domain and volume gone.
        for vm in &vms {
            let answers = one_of_both(
                &mut seed,
                &ada,
                [&a, &b],
                reqwest::Method::DELETE,
                &format!("/api/v1/vms/{vm}"),
            )
            .await;
            if answers.iter().filter(|s| s.is_success()).count() != 1 {
                let log = get(&admin, format!("{a}/api/v1/audit?subject=vm%20{vm}")).await;
                panic!("round {round}, VM {vm}: {answers:?}\n{log:#}");
            }
        }
        vms_of(&ada, &b, &requests, |v| v["state"] == "released").await;
    }

    let total = VMS * ROUNDS;
    assert_eq!(audit_count(&admin, &a, "vm.provision").await, total);
    assert_eq!(audit_count(&admin, &a, "vm.stop").await, total);
    assert_eq!(audit_count(&admin, &a, "vm.release").await, total);
    assert_eq!(
        audit_count(&admin, &a, "vm.fail").await,
        0,
        "no server rolled back the other's VM"
    );
    assert!(store.claims().await.unwrap().is_empty());
    let host = LibvirtHost::new(uri, Duration::from_secs(60)).unwrap();
    let left: Vec<String> = host
        .passage_domains()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert!(left.is_empty(), "domains left on the host: {left:?}");
    host.disconnect().await;
    store.close().await;
    one.shutdown(Duration::from_secs(10)).await.unwrap();
    two.shutdown(Duration::from_secs(10)).await.unwrap();
    let _ = scratch.destroy();
    conn.close().unwrap();
}
