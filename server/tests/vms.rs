//! GPU VMs end to end through the API on the simulated host: provisioning with the claimed
//! functions passed through and a cloud-init seed, the lifecycle, hot-plug, leases, waiting
//! requests placed first come first served, rollback of a failed provisioning, reconciliation
//! after a restart, and who may do what.

mod common;

use std::time::{Duration, Instant};

use passage_server::Portal;
use passage_server::config::Config;
use passage_server::store::{FreeGpu, Store, VmParts};
use reqwest::Client;
use serde_json::{Value, json};

struct Setup {
    _dir: tempfile::TempDir,
    config: Config,
    admin: Client,
    ada: Client,
    bob: Client,
}

/// A portal configuration over a copy of the simulated host file with `extra` inserted before
/// its closing tag (e.g. a stray domain or volume), and three accounts.
async fn setup(extra_in_pool: &str, extra_domain: &str) -> Setup {
    setup_on(None, extra_in_pool, extra_domain).await
}

/// As [`setup`], on the database at `url` (SQLite in the test's directory when `None`).
async fn setup_on(url: Option<String>, extra_in_pool: &str, extra_domain: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let host = std::fs::read_to_string(common::simulated_host_file()).unwrap();
    let host = host.replace(
        "  </pool>\n</node>",
        &format!("{extra_in_pool}  </pool>\n{extra_domain}</node>"),
    );
    let file = dir.path().join("host.xml");
    std::fs::write(&file, host).unwrap();
    let uri = format!("test://{}", file.display());
    let mut config = common::config(dir.path(), &[("gpu-01", &uri)]);
    config.quotas.gpus = 4;
    if let Some(url) = url {
        config.database_url = url;
    }
    let admin = common::client(&common::token_for(&config, "ops", true).await);
    let ada = common::client(&common::token_for(&config, "ada", false).await);
    let bob = common::client(&common::token_for(&config, "bob", false).await);
    // The image of the simulated host, registered the way an admin would.
    Setup {
        _dir: dir,
        config,
        admin,
        ada,
        bob,
    }
}

async fn start(setup: &Setup) -> (Portal, String) {
    let portal = Portal::start(setup.config.clone()).await.unwrap();
    let base = format!("http://{}", portal.address);
    let refreshed = setup
        .admin
        .post(format!("{base}/api/v1/inventory/refresh"))
        .send()
        .await
        .unwrap();
    assert!(refreshed.status().is_success());
    (portal, base)
}

async fn register_image(setup: &Setup, base: &str) {
    let registered = setup
        .admin
        .post(format!("{base}/api/v1/images"))
        .json(
            &json!({"name": "debian-12", "host": "gpu-01", "pool": "images",
                      "volume": "debian-12-generic-amd64.qcow2"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        registered.status(),
        201,
        "{}",
        registered.text().await.unwrap()
    );
}

fn asking(model: &str, count: i64) -> Value {
    json!({
        "gpu_model": model, "gpu_count": count, "vcpus": 8, "memory_mib": 32768,
        "disk_gib": 100, "image": "debian-12", "hypervisor": "kvm", "lease_hours": 24,
        "reason": "rerun the passthrough study"
    })
}

async fn file(client: &Client, base: &str, body: Value) -> i64 {
    let filed = client
        .post(format!("{base}/api/v1/requests"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(filed.status(), 201, "{}", filed.text().await.unwrap());
    filed.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
}

async fn get(client: &Client, url: String) -> Value {
    let response = client.get(&url).send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// Waits until the VM of `request` satisfies `done`, and returns it.
async fn vm_of(client: &Client, base: &str, request: i64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
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
        assert!(Instant::now() < deadline, "VM of request {request}: {vms}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the audit log has `count` entries matching `query`.
async fn audit_has(client: &Client, base: &str, query: &str, count: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let entries = get(client, format!("{base}/api/v1/audit?{query}")).await;
        if entries.as_array().unwrap().len() == count {
            return entries;
        }
        assert!(Instant::now() < deadline, "audit {query}: {entries}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(client: &Client, url: String, body: Option<Value>) -> reqwest::Response {
    let request = client.post(url);
    match body {
        Some(body) => request.json(&body),
        None => request,
    }
    .send()
    .await
    .unwrap()
}

#[tokio::test]
async fn a_gpu_vm_is_provisioned_run_changed_and_released() {
    common::on_every_backend(lifecycle).await;
}

async fn lifecycle(url: String) {
    let setup = setup_on(Some(url), "", "").await;
    let (portal, base) = start(&setup).await;
    register_image(&setup, &base).await;
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKq ada@laptop";
    let stored = setup
        .ada
        .put(format!("{base}/api/v1/me/ssh-key"))
        .json(&json!({"key": key}))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 204);
    let bad_key = setup
        .ada
        .put(format!("{base}/api/v1/me/ssh-key"))
        .json(&json!({"key": "not a key\nruncmd: x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_key.status(), 422);

    let request = file(&setup.ada, &base, asking("H100 PCIe", 2)).await;
    // Users cannot approve; admins approve onto GPUs they choose.
    assert_eq!(
        post(
            &setup.ada,
            format!("{base}/api/v1/requests/{request}/approve"),
            None
        )
        .await
        .status(),
        403
    );
    let wrong = post(
        &setup.admin,
        format!("{base}/api/v1/requests/{request}/approve"),
        Some(json!({"gpus": ["0000:17:00.0"]})),
    )
    .await;
    assert_eq!(wrong.status(), 422, "one GPU chosen for a request of two");
    let approved = post(
        &setup.admin,
        format!("{base}/api/v1/requests/{request}/approve"),
        Some(json!({"gpus": ["0000:2a:00.0", "0000:3d:00.0"]})),
    )
    .await;
    assert_eq!(approved.status(), 200, "{}", approved.text().await.unwrap());

    let vm = vm_of(&setup.ada, &base, request, |v| v["state"] == "running").await;
    let id = vm["id"].as_i64().unwrap();
    assert_eq!(vm["host"], "gpu-01");
    assert_eq!(vm["domain"], format!("passage-vm-{id}"));
    assert_eq!(vm["domain_type"], "test");
    assert_eq!(vm["gpus"], json!(["0000:2a:00.0", "0000:3d:00.0"]));
    assert_eq!(vm["ssh_user"], "ada");

    // The GPU list shows who holds them; nobody else sees the VM.
    let gpus = get(&setup.bob, format!("{base}/api/v1/gpus")).await;
    let claimed: Vec<&str> = gpus
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["state"] == "claimed")
        .map(|g| g["address"].as_str().unwrap())
        .collect();
    assert_eq!(claimed, vec!["0000:2a:00.0", "0000:3d:00.0"]);
    let vm_url = format!("{base}/api/v1/vms/{id}");
    assert_eq!(setup.bob.get(&vm_url).send().await.unwrap().status(), 404);
    assert_eq!(
        setup.bob.delete(&vm_url).send().await.unwrap().status(),
        404
    );
    assert!(
        get(&setup.bob, format!("{base}/api/v1/vms"))
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The domain: both GPUs passed through, pinned to their NUMA node, the seed in SMBIOS.
    assert_eq!(
        setup
            .ada
            .get(format!("{vm_url}/domain"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let xml = setup
        .admin
        .get(format!("{vm_url}/domain"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for wanted in [
        "bus='0x2a'",
        "bus='0x3d'",
        "managed='yes'",
        "nodeset='0'",
        "ds=nocloud-net;s=http://",
    ] {
        assert!(xml.contains(wanted), "{wanted} missing from\n{xml}");
    }
    let seed = xml
        .split("ds=nocloud-net;s=")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .replace(&setup.config.public_url(), &base);
    let user_data = reqwest::get(format!("{seed}user-data")).await.unwrap();
    assert_eq!(user_data.status(), 200);
    let user_data = user_data.text().await.unwrap();
    assert!(user_data.starts_with("#cloud-config\n"), "{user_data}");
    let parsed: serde_yaml::Value = serde_yaml::from_str(&user_data).unwrap();
    assert_eq!(
        parsed["users"][0]["ssh_authorized_keys"][0].as_str(),
        Some(key)
    );
    assert!(
        parsed["write_files"][0]["content"]
            .as_str()
            .unwrap()
            .starts_with("psa_")
    );
    let meta = reqwest::get(format!("{seed}meta-data"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(meta.contains(&format!("passage-vm-{id}")), "{meta}");
    let forged = seed.replace(&format!("/{id}/"), &format!("/{id}/0000/"));
    assert_eq!(
        reqwest::get(format!("{forged}user-data"))
            .await
            .unwrap()
            .status(),
        404
    );

    // Stop, start, reboot.
    let stopped: Value = post(&setup.ada, format!("{vm_url}/stop"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(
        post(&setup.ada, format!("{vm_url}/stop"), None)
            .await
            .status(),
        409
    );
    assert_eq!(
        post(&setup.ada, format!("{vm_url}/reboot"), None)
            .await
            .status(),
        409
    );
    let started: Value = post(&setup.ada, format!("{vm_url}/start"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(started["state"], "running");
    assert_eq!(
        post(&setup.ada, format!("{vm_url}/reboot"), None)
            .await
            .status(),
        200
    );
    assert_eq!(
        post(&setup.bob, format!("{vm_url}/stop"), None)
            .await
            .status(),
        404
    );

    // Leases: only admins extend.
    let before = vm["lease_expires_at"].as_str().unwrap().to_string();
    assert_eq!(
        post(
            &setup.ada,
            format!("{vm_url}/extend"),
            Some(json!({"hours": 24}))
        )
        .await
        .status(),
        403
    );
    let extended: Value = post(
        &setup.admin,
        format!("{vm_url}/extend"),
        Some(json!({"hours": 24})),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(extended["lease_expires_at"].as_str().unwrap() > before.as_str());

    // Hot-plug: the test driver changes the definition for the next start.
    assert_eq!(
        post(
            &setup.ada,
            format!("{vm_url}/gpus"),
            Some(json!({"address": "0000:4e:00.0"}))
        )
        .await
        .status(),
        403
    );
    let taken = post(
        &setup.admin,
        format!("{vm_url}/gpus"),
        Some(json!({"address": "0000:2a:00.0"})),
    )
    .await;
    assert_eq!(taken.status(), 409, "a GPU the VM holds is not free");
    let attached: Value = post(
        &setup.admin,
        format!("{vm_url}/gpus"),
        Some(json!({"address": "0000:4e:00.0"})),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(attached["applied"], "next-start");
    assert_eq!(
        attached["vm"]["gpus"],
        json!(["0000:2a:00.0", "0000:3d:00.0", "0000:4e:00.0"])
    );
    let detached = setup
        .admin
        .delete(format!("{vm_url}/gpus/0000:2a:00.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(detached.status(), 200);
    let detached: Value = detached.json().await.unwrap();
    assert_eq!(
        detached["vm"]["gpus"],
        json!(["0000:3d:00.0", "0000:4e:00.0"])
    );

    // Release: the domain and disk go, the GPUs are free again.
    let released = setup.ada.delete(&vm_url).send().await.unwrap();
    assert_eq!(released.status(), 200);
    let released: Value = released.json().await.unwrap();
    assert_eq!(released["state"], "released");
    assert!(released["gpus"].as_array().unwrap().is_empty());
    let gpus = get(&setup.bob, format!("{base}/api/v1/gpus")).await;
    assert!(
        gpus.as_array()
            .unwrap()
            .iter()
            .all(|g| g["state"] != "claimed")
    );
    assert_eq!(
        setup.ada.delete(&vm_url).send().await.unwrap().status(),
        409
    );

    // Everything is in the audit log, which only admins read.
    assert_eq!(
        setup
            .ada
            .get(format!("{base}/api/v1/audit"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let audit = get(
        &setup.admin,
        format!("{base}/api/v1/audit?subject=vm%20{id}"),
    )
    .await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "vm.provision",
        "vm.start",
        "vm.stop",
        "vm.reboot",
        "vm.extend",
        "vm.attach_gpu",
        "vm.detach_gpu",
        "vm.release",
    ] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
    let by_ops = get(
        &setup.admin,
        format!("{base}/api/v1/audit?actor=ops&action=vm."),
    )
    .await;
    assert!(
        by_ops
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"] == "ops")
    );
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn waiting_requests_get_freed_gpus_first_come_first_served_and_leases_expire() {
    let setup = setup("", "").await;
    let (portal, base) = start(&setup).await;
    register_image(&setup, &base).await;
    // ada may hold all four H100s only with a quota of her own.
    let over = post(
        &setup.admin,
        format!("{base}/api/v1/requests/0/approve"),
        None,
    )
    .await;
    assert_eq!(over.status(), 404);
    let quota = setup
        .admin
        .put(format!("{base}/api/v1/users/ada/quota"))
        .json(&json!({"gpus": 8, "requests": 8}))
        .send()
        .await
        .unwrap();
    assert_eq!(quota.status(), 200);
    let mut short = asking("H100 PCIe", 4);
    short["lease_hours"] = json!(1);
    let first = file(&setup.ada, &base, short).await;
    post(
        &setup.admin,
        format!("{base}/api/v1/requests/{first}/approve"),
        None,
    )
    .await;
    let vm = vm_of(&setup.ada, &base, first, |v| v["state"] == "running").await;

    let second = file(&setup.bob, &base, asking("H100 PCIe", 1)).await;
    let third = file(&setup.ada, &base, asking("H100 PCIe", 2)).await;
    for id in [second, third] {
        let approved: Value = post(
            &setup.admin,
            format!("{base}/api/v1/requests/{id}/approve"),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(approved["state"], "waiting", "{approved}");
        assert!(
            approved["state_reason"]
                .as_str()
                .unwrap()
                .contains("waiting for")
        );
    }

    // The lease runs out: the store's clock is moved by shortening the lease to the past.
    let store = Store::open(&setup.config.database_url).await.unwrap();
    let expired = post(
        &setup.admin,
        format!("{base}/api/v1/vms/{}/extend", vm["id"]),
        Some(json!({"hours": -5})),
    )
    .await;
    assert_eq!(expired.status(), 422, "negative extensions are refused");
    store.close().await;
    let mut db = <sqlx::AnyConnection as sqlx::Connection>::connect(&setup.config.database_url)
        .await
        .unwrap();
    sqlx::query("UPDATE vms SET lease_expires_at = 0 WHERE id = $1")
        .bind(vm["id"].as_i64().unwrap())
        .execute(&mut db)
        .await
        .unwrap();

    // The expiry task (every lease_check_secs) reclaims it; the waiting requests are placed in
    // the order they were filed.
    vm_of(&setup.ada, &base, first, |v| v["state"] == "released").await;
    let second_vm = vm_of(&setup.bob, &base, second, |v| v["state"] == "running").await;
    let third_vm = vm_of(&setup.ada, &base, third, |v| v["state"] == "running").await;
    assert_eq!(second_vm["gpus"].as_array().unwrap().len(), 1);
    assert_eq!(third_vm["gpus"].as_array().unwrap().len(), 2);
    let audit = get(
        &setup.admin,
        format!("{base}/api/v1/audit?actor=system&action=vm.release"),
    )
    .await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["detail"] == "the lease expired"),
        "{audit}"
    );
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn a_provisioning_failure_rolls_everything_back_and_says_why() {
    // A volume named like the first VM's disk is already in the pool: not ours to overwrite.
    let squatter = "    <volume type='file'>\n      <name>passage-vm-1.qcow2</name>\n      \
                    <capacity unit='GiB'>1</capacity>\n    </volume>\n";
    let setup = setup(squatter, "").await;
    let (portal, base) = start(&setup).await;
    register_image(&setup, &base).await;
    let request = file(&setup.ada, &base, asking("L40S", 1)).await;
    post(
        &setup.admin,
        format!("{base}/api/v1/requests/{request}/approve"),
        None,
    )
    .await;
    let vm = vm_of(&setup.ada, &base, request, |v| v["state"] == "failed").await;
    let reason = vm["state_reason"].as_str().unwrap();
    assert!(
        reason.contains("passage-vm-1.qcow2 already exists"),
        "{reason}"
    );
    let shown = get(&setup.ada, format!("{base}/api/v1/requests/{request}")).await;
    assert_eq!(shown["state"], "released");
    assert!(
        shown["state_reason"]
            .as_str()
            .unwrap()
            .contains("provisioning failed")
    );
    assert!(shown["gpus"].as_array().unwrap().is_empty());
    // The GPU is free for the next request, whose VM gets its own names.
    let next = file(&setup.ada, &base, asking("L40S", 1)).await;
    post(
        &setup.admin,
        format!("{base}/api/v1/requests/{next}/approve"),
        None,
    )
    .await;
    let ok = vm_of(&setup.ada, &base, next, |v| v["state"] == "running").await;
    assert_eq!(ok["gpus"], json!(["0000:ca:00.0"]));
    let audit = get(&setup.admin, format!("{base}/api/v1/audit?action=vm.fail")).await;
    assert_eq!(audit.as_array().unwrap().len(), 1, "{audit}");
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn reconciliation_repairs_what_a_dead_server_and_a_reset_host_leave_behind() {
    common::on_every_backend(reconciliation).await;
}

async fn reconciliation(url: String) {
    // A Passage domain that no VM owns sits on the host.
    let stray = "  <domain type='test'>\n    <name>passage-vm-999</name>\n    \
                 <memory>1048576</memory>\n    <os><type>hvm</type></os>\n  </domain>\n";
    let setup = setup_on(Some(url), "", stray).await;
    let (portal, base) = start(&setup).await;
    register_image(&setup, &base).await;
    let running = file(&setup.ada, &base, asking("A100 PCIe 80GB", 1)).await;
    post(
        &setup.admin,
        format!("{base}/api/v1/requests/{running}/approve"),
        None,
    )
    .await;
    vm_of(&setup.ada, &base, running, |v| v["state"] == "running").await;
    // Not made by this installation: reported, never removed by reconciliation.
    audit_has(&setup.admin, &base, "action=domain.unknown", 1).await;
    audit_has(&setup.admin, &base, "action=domain.remove_unknown", 0).await;
    portal.shutdown(Duration::from_secs(10)).await.unwrap();

    // While the server is down: a request placed without a VM (the server died after the
    // claim), and a VM that died half-way through provisioning.
    let store = Store::open(&setup.config.database_url).await.unwrap();
    let ada_id = store.user_by_name("ada").await.unwrap().unwrap().id;
    let orphan = store
        .create_request(
            ada_id,
            &serde_json::from_value(asking("RTX 6000 Ada Generation", 1)).unwrap(),
        )
        .await
        .unwrap();
    let rtx = store.free_gpus("RTX 6000 Ada Generation").await.unwrap();
    assert_eq!(rtx[0].functions.len(), 2, "the GPU and its audio function");
    store.claim(orphan, &rtx).await.unwrap();
    let half = store
        .create_request(
            ada_id,
            &serde_json::from_value(asking("A100 PCIe 80GB", 1)).unwrap(),
        )
        .await
        .unwrap();
    let a100 = store.free_gpus("A100 PCIe 80GB").await.unwrap();
    store.claim(half, &a100[..1]).await.unwrap();
    let vm = store
        .create_vm(
            half,
            ada_id,
            "gpu-01",
            passage_server::store::now_ms() + 86_400_000,
        )
        .await
        .unwrap()
        .unwrap();
    store
        .record_vm_parts(
            vm,
            &VmParts {
                domain: Some(format!("passage-vm-{vm}")),
                pool: Some("images".into()),
                volume: Some(format!("passage-vm-{vm}.qcow2")),
                ..VmParts::default()
            },
        )
        .await
        .unwrap();
    store.close().await;

    // The host was reset too (the simulated host starts empty): the running VM's domain is gone.
    let mut config = setup.config.clone();
    config.vms.provisioning_timeout_secs = 1;
    // The interrupted provisioning must be older than that timeout when the portal looks.
    let interrupted_at = passage_server::store::now_ms();
    common::wait_for(
        "the interrupted provisioning to pass its timeout",
        Duration::from_secs(5),
        || async {
            let age = passage_server::store::now_ms() - interrupted_at;
            if age > 1000 {
                Ok(())
            } else {
                Err(format!("{age} ms old"))
            }
        },
    )
    .await;
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);
    let vanished = vm_of(&setup.ada, &base, running, |v| v["state"] == "failed").await;
    assert!(
        vanished["state_reason"]
            .as_str()
            .unwrap()
            .contains("vanished"),
        "{vanished}"
    );
    let interrupted = vm_of(&setup.ada, &base, half, |v| v["state"] == "failed").await;
    assert!(
        interrupted["state_reason"]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{interrupted}"
    );
    let provisioned = vm_of(&setup.ada, &base, orphan, |v| v["state"] == "running").await;
    assert_eq!(provisioned["gpus"], json!(["0000:e3:00.0"]));
    let xml = setup
        .admin
        .get(format!("{base}/api/v1/vms/{}/domain", provisioned["id"]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        xml.contains("function='0x1'"),
        "the audio function goes with the GPU:\n{xml}"
    );
    // No A100 is held any more; the records are all still there.
    let gpus = get(
        &setup.admin,
        format!("{base}/api/v1/gpus?model=A100%20PCIe%2080GB"),
    )
    .await;
    assert!(
        gpus.as_array()
            .unwrap()
            .iter()
            .all(|g| g["state"] != "claimed"),
        "{gpus}"
    );
    assert_eq!(
        get(&setup.admin, format!("{base}/api/v1/vms"))
            .await
            .as_array()
            .unwrap()
            .len(),
        3
    );
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn an_image_may_boot_a_kernel_directly() {
    let setup = setup("", "").await;
    let (portal, base) = start(&setup).await;
    let image = |extra: Value| {
        let mut body = json!({"name": "appliance", "host": "gpu-01", "pool": "images",
                              "volume": "debian-12-generic-amd64.qcow2"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    for (wrong, why) in [
        (json!({"initrd": "/srv/initrd.img"}), "kernel"),
        (json!({"kernel": "vmlinuz"}), "absolute"),
        (
            json!({"kernel": "/srv/vmlinuz", "initrd": "initrd.img"}),
            "initrd",
        ),
    ] {
        let refused = post(
            &setup.admin,
            format!("{base}/api/v1/images"),
            Some(image(wrong.clone())),
        )
        .await;
        assert_eq!(refused.status(), 422, "{wrong}");
        assert!(refused.text().await.unwrap().contains(why), "{wrong}");
    }
    let registered = post(
        &setup.admin,
        format!("{base}/api/v1/images"),
        Some(image(
            json!({"kernel": "/srv/vmlinuz", "initrd": "/srv/initrd.img",
                          "cmdline": "console=ttyS0 root=/dev/vda"}),
        )),
    )
    .await;
    assert_eq!(registered.status(), 201);
    let images = get(&setup.ada, format!("{base}/api/v1/images")).await;
    let shown = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "appliance")
        .unwrap();
    assert_eq!(shown["kernel"], "/srv/vmlinuz");
    assert_eq!(shown["cmdline"], "console=ttyS0 root=/dev/vda");

    let mut asked = asking("H100 PCIe", 1);
    asked["image"] = json!("appliance");
    let request = file(&setup.ada, &base, asked).await;
    let approved = post(
        &setup.admin,
        format!("{base}/api/v1/requests/{request}/approve"),
        None,
    )
    .await;
    assert_eq!(approved.status(), 200);
    let vm = vm_of(&setup.ada, &base, request, |v| v["state"] == "running").await;
    let xml = setup
        .admin
        .get(format!("{base}/api/v1/vms/{}/domain", vm["id"]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(xml.contains("<kernel>/srv/vmlinuz</kernel>"), "{xml}");
    assert!(xml.contains("<initrd>/srv/initrd.img</initrd>"), "{xml}");
    assert!(
        xml.contains("<cmdline>console=ttyS0 root=/dev/vda</cmdline>"),
        "{xml}"
    );
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

/// A test-driver domain named like Passage's, holding `hostdev`, with `metadata` (may be empty).
fn stray_domain(name: &str, uuid: &str, metadata: &str, hostdev: &str) -> String {
    let [bus, slot_function] = [&hostdev[5..7], &hostdev[8..]];
    let (slot, function) = slot_function.split_once('.').unwrap();
    format!(
        "  <domain type='test'>\n    <name>{name}</name>\n    <uuid>{uuid}</uuid>\n    \
         <metadata>{metadata}</metadata>\n    <memory>1048576</memory>\n    \
         <os><type>hvm</type></os>\n    <devices><hostdev mode='subsystem' type='pci' \
         managed='yes'><source><address domain='0x0000' bus='0x{bus}' slot='0x{slot}' \
         function='0x{function}'/></source></hostdev></devices>\n  </domain>\n"
    )
}

#[tokio::test]
async fn domains_of_another_installation_are_left_alone_until_an_admin_decides() {
    common::on_every_backend(unknown_domains).await;
}

async fn unknown_domains(url: String) {
    // Another installation's VM 1 (staging, sharing the host) holds the only L40S; a domain
    // without any metadata holds an A100.
    let staging = stray_domain(
        "passage-vm-1",
        "6f0e4a52-8d0e-4e43-a3a7-0d6f6c1b9a01",
        "<passage:vm xmlns:passage='https://passage-gpu.org/xmlns/vm/1' id='1' request='1' \
         owner='eve' installation='0123456789abcdef0123456789abcdef'/>",
        "0000:ca:00.0",
    );
    let bare = stray_domain(
        "passage-vm-77",
        "6f0e4a52-8d0e-4e43-a3a7-0d6f6c1b9a02",
        "",
        "0000:b1:00.0",
    );
    let setup = setup_on(Some(url), "", &format!("{staging}{bare}")).await;
    let (portal, base) = start(&setup).await;
    register_image(&setup, &base).await;
    audit_has(&setup.admin, &base, "action=domain.unknown", 2).await;
    let listed = get(&setup.admin, format!("{base}/api/v1/unknown-domains")).await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let staging_entry = listed.iter().find(|d| d["name"] == "passage-vm-1").unwrap();
    assert_eq!(
        staging_entry["installation"],
        "0123456789abcdef0123456789abcdef"
    );
    assert_eq!(staging_entry["devices"], "0000:ca:00.0");
    let forbidden = setup
        .ada
        .get(format!("{base}/api/v1/unknown-domains"))
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);

    // The L40S the other installation's domain holds is not given to this one.
    let l40s = file(&setup.ada, &base, asking("L40S", 1)).await;
    let approved: Value = post(
        &setup.admin,
        format!("{base}/api/v1/requests/{l40s}/approve"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(approved["state"], "waiting", "{approved}");
    // Several reconciliation passes later, both domains are still there, untouched.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        get(&setup.admin, format!("{base}/api/v1/unknown-domains"))
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let refused = post(
        &setup.ada,
        format!(
            "{base}/api/v1/unknown-domains/gpu-01/{}",
            staging_entry["uuid"].as_str().unwrap()
        ),
        Some(json!({"decision": "remove"})),
    )
    .await;
    assert_eq!(refused.status(), 403);
    let bad = post(
        &setup.admin,
        format!("{base}/api/v1/unknown-domains/gpu-01/not-a-uuid"),
        Some(json!({"decision": "remove"})),
    )
    .await;
    assert_eq!(bad.status(), 422);

    // An admin keeps the bare one and removes staging's: the L40S request is placed then.
    let kept = post(
        &setup.admin,
        format!("{base}/api/v1/unknown-domains/gpu-01/6f0e4a52-8d0e-4e43-a3a7-0d6f6c1b9a02"),
        Some(json!({"decision": "keep"})),
    )
    .await;
    assert_eq!(kept.status(), 200, "{}", kept.text().await.unwrap());
    let removed = post(
        &setup.admin,
        format!("{base}/api/v1/unknown-domains/gpu-01/6f0e4a52-8d0e-4e43-a3a7-0d6f6c1b9a01"),
        Some(json!({"decision": "remove"})),
    )
    .await;
    assert_eq!(removed.status(), 200, "{}", removed.text().await.unwrap());
    let left: Value = removed.json().await.unwrap();
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
    assert_eq!(left[0]["decision"], "keep");
    assert_eq!(left[0]["decided_by"], "ops");
    audit_has(&setup.admin, &base, "action=domain.remove_unknown", 1).await;
    let vm = vm_of(&setup.ada, &base, l40s, |v| v["state"] == "running").await;
    assert_eq!(vm["gpus"], json!(["0000:ca:00.0"]));
    // The kept domain's A100 is still out of reach.
    let gpus = get(
        &setup.admin,
        format!("{base}/api/v1/gpus?model=A100%20PCIe%2080GB"),
    )
    .await;
    assert_eq!(gpus.as_array().unwrap().len(), 2);
    let a100 = file(&setup.ada, &base, asking("A100 PCIe 80GB", 2)).await;
    let waiting: Value = post(
        &setup.admin,
        format!("{base}/api/v1/requests/{a100}/approve"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(waiting["state"], "waiting", "{waiting}");
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn an_expired_lease_extended_meanwhile_keeps_its_vm() {
    common::on_every_backend(expiry_racing_extension).await;
}

async fn expiry_racing_extension(url: String) {
    let setup = setup_on(Some(url), "", "").await;
    let (portal, base) = start(&setup).await;
    register_image(&setup, &base).await;
    let request = file(&setup.ada, &base, asking("H100 PCIe", 1)).await;
    post(
        &setup.admin,
        format!("{base}/api/v1/requests/{request}/approve"),
        None,
    )
    .await;
    let vm = vm_of(&setup.ada, &base, request, |v| v["state"] == "running").await;
    let id = vm["id"].as_i64().unwrap();

    // Another server is extending the lease: it holds the VM while its lease reads as ended.
    let other = Store::open(&setup.config.database_url).await.unwrap();
    let name = format!("vm:{id}");
    assert!(
        other
            .take_lease(&name, "another-server", Duration::from_secs(60))
            .await
            .unwrap()
    );
    other.extend_lease(id, -48).await.unwrap();
    // Expiry runs every second here; the VM is held, so it is left for later.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        get(&setup.ada, format!("{base}/api/v1/vms/{id}")).await["state"],
        "running"
    );
    // A user's action meanwhile is told that another one runs.
    let busy = post(&setup.ada, format!("{base}/api/v1/vms/{id}/stop"), None).await;
    assert_eq!(busy.status(), 409);
    // The extension lands and the other server lets go: the lease is read again, the VM stays.
    other.extend_lease(id, 96).await.unwrap();
    other.drop_lease(&name, "another-server").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        get(&setup.ada, format!("{base}/api/v1/vms/{id}")).await["state"],
        "running"
    );
    // Without the extension, it is reclaimed on the next pass.
    other.extend_lease(id, -96).await.unwrap();
    vm_of(&setup.ada, &base, request, |v| v["state"] == "released").await;
    other.close().await;
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn a_domain_that_could_not_be_removed_keeps_its_gpus_until_it_is() {
    let setup = setup("", "").await;
    let host_file = setup._dir.path().join("host.xml");
    let gpu_02 = setup._dir.path().join("gpu-02.xml");
    std::fs::copy(&host_file, &gpu_02).unwrap();
    let mut config = setup.config.clone();
    config.hosts.push(passage_server::config::HostConfig::new(
        "gpu-02",
        format!("test://{}", gpu_02.display()),
    ));
    let portal = Portal::start(config.clone()).await.unwrap();
    let base = format!("http://{}", portal.address);
    let refreshed = post(
        &setup.admin,
        format!("{base}/api/v1/inventory/refresh"),
        None,
    )
    .await;
    assert!(refreshed.status().is_success());
    portal.shutdown(Duration::from_secs(10)).await.unwrap();

    // A VM on gpu-02 whose server died while provisioning it.
    let store = Store::open(&config.database_url).await.unwrap();
    let ada = store.user_by_name("ada").await.unwrap().unwrap().id;
    let request = store
        .create_request(ada, &serde_json::from_value(asking("L40S", 1)).unwrap())
        .await
        .unwrap();
    let l40s: Vec<FreeGpu> = store
        .free_gpus("L40S")
        .await
        .unwrap()
        .iter()
        .filter(|g| g.host == "gpu-02")
        .cloned()
        .collect();
    store.claim(request, &l40s).await.unwrap();
    let vm = store
        .create_vm(
            request,
            ada,
            "gpu-02",
            passage_server::store::now_ms() + 86_400_000,
        )
        .await
        .unwrap()
        .unwrap();
    store
        .record_vm_parts(
            vm,
            &VmParts {
                domain: Some(format!("passage-vm-{vm}")),
                domain_uuid: Some("6f0e4a52-8d0e-4e43-a3a7-0d6f6c1b9a10".into()),
                ..VmParts::default()
            },
        )
        .await
        .unwrap();
    store.close().await;

    // gpu-02 cannot be reached when the stale provisioning is rolled back.
    let mut unreachable = config.clone();
    unreachable.hosts[1].uri = format!("test://{}", setup._dir.path().join("gone.xml").display());
    unreachable.vms.provisioning_timeout_secs = 1;
    unreachable.vms.reconcile_secs = 1;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let portal = Portal::start(unreachable).await.unwrap();
    let base = format!("http://{}", portal.address);
    let failed = vm_of(&setup.ada, &base, request, |v| v["state"] == "failed").await;
    let reason = failed["state_reason"].as_str().unwrap();
    assert!(reason.contains("GPUs stay claimed"), "{reason}");
    assert_eq!(failed["gpus"], json!([l40s[0].address]), "still held");
    let held = Store::open(&config.database_url).await.unwrap();
    assert_eq!(held.claims().await.unwrap().len(), 1);
    // Reconciliation does not drop the claim as a stray one either.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(held.claims().await.unwrap().len(), 1);
    portal.shutdown(Duration::from_secs(10)).await.unwrap();

    // gpu-02 is back: what was left is removed and the GPU is free.
    let mut back = config.clone();
    back.vms.provisioning_timeout_secs = 1;
    let portal = Portal::start(back).await.unwrap();
    let base = format!("http://{}", portal.address);
    audit_has(&setup.admin, &base, "action=vm.cleanup", 1).await;
    assert!(held.claims().await.unwrap().is_empty());
    let vm = get(&setup.ada, format!("{base}/api/v1/vms/{vm}")).await;
    assert_eq!(vm["gpus"], json!([]));
    held.close().await;
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}
