//! The portal's own code against the IOMMU lab host (tests/services/iommu-host.sh: an emulated
//! Intel IOMMU, its own libvirtd), through its HTTP API as users and admins use it: the lab host
//! configured as a `[[hosts]]` entry with its display devices as GPUs, an image registered on it,
//! a request approved, provisioned and running with `managed='yes'` hostdevs (the GPU on vfio-pci
//! inside the lab host), the guest (a kernel and busybox initramfs booted directly, see
//! tests/guests/pci-listing.sh) listing the passed-through GPU on its serial console, a second GPU
//! attached and detached while it runs, the VM released (every device back on its driver, nothing
//! left). Then a GPU whose IOMMU group is held by a domain the portal did not
//! make: the request fails with libvirt's reason and leaves nothing behind. Needs
//! `PASSAGE_TEST_LAB_URI` (what `start` prints); without it the test says that it is skipped.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use passage_hypervisor::{GpuVendors, LibvirtHost};
use passage_server::Portal;
use passage_server::config::HostConfig;
use passage_server::store::Store;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const POOL: &str = "passage-lab-portal";
const RIVAL: &str = "lab-rival";
/// Where the guest's kernel and initramfs are made on the lab host.
const BOOT_DIR: &str = "/var/lib/libvirt/images/passage-lab-boot";

fn lab_uri() -> Option<String> {
    passage_test_support::service(
        "PASSAGE_TEST_LAB_URI",
        "as root, tests/services/iommu-host.sh start prints it; .ci/run sets it",
    )
}

/// Runs `command` inside the lab host and returns its output.
fn lab_exec(command: &str) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/services/iommu-host.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg("exec")
        .arg(command)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{command}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The driver bound to `address` inside the lab host, as sysfs says.
fn driver_of(address: &str) -> String {
    lab_exec(&format!(
        "d=/sys/bus/pci/devices/{address}/driver; [ -e $d ] && basename $(readlink $d) || echo none"
    ))
}

/// Waits until `address` is bound to `driver` inside the lab host.
async fn wait_for_driver(address: &str, driver: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = driver_of(address);
        if now == driver {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{address} is on {now}, not {driver}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Makes the guest's kernel and initramfs on the lab host (the small kernel that
/// `iommu-host.sh guest-kernel` keeps for it).
fn make_guest() {
    let services = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests");
    let output = Command::new("bash")
        .arg(services.join("services/iommu-host.sh"))
        .arg("guest-kernel")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let kernel = String::from_utf8(output.stdout).unwrap();
    // The lab host sees this machine's file system, but not its /tmp or /root (its own tmpfs),
    // where a checkout may live: the script travels with the command, as a here-document.
    let script = std::fs::read_to_string(services.join("guests/pci-listing.sh")).unwrap();
    assert!(!script.contains("PASSAGE_SCRIPT_END"));
    lab_exec(&format!(
        "cat > /run/pci-listing.sh <<'PASSAGE_SCRIPT_END'\n{script}\nPASSAGE_SCRIPT_END\n\
         sh /run/pci-listing.sh {BOOT_DIR} {}",
        kernel.trim()
    ));
}

/// The display devices (vendor 0x1234, class 0x030000) behind a PCIe port (not on the root bus,
/// where QEMU's own emulated VGA sits) in the guest's latest PCI listing on its serial console.
fn guest_gpus(domain: &str) -> Option<Vec<String>> {
    let log = lab_exec(&format!(
        "cat /var/log/libvirt/qemu/{domain}-serial0.log 2>/dev/null || true"
    ));
    let listing = log
        .rsplit_once("PASSAGE-PCI-END")?
        .0
        .rsplit_once("PASSAGE-PCI-BEGIN")?
        .1;
    Some(
        listing
            .lines()
            .filter_map(|line| line.trim().strip_prefix("PASSAGE-PCI "))
            .filter(|line| line.ends_with(" 0x1234:0x1111 0x030000"))
            .filter(|line| !line.starts_with("0000:00:"))
            .map(str::to_string)
            .collect(),
    )
}

/// Waits until the guest of `domain` lists `count` passed-through display devices.
async fn wait_for_guest_gpus(domain: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(420);
    loop {
        let seen = guest_gpus(domain);
        if let Some(gpus) = &seen
            && gpus.len() == count
        {
            return gpus.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the guest of {domain} lists {seen:?}, not {count} GPU(s)"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// A transient directory pool on the lab host with a small base image; gone with its volumes
/// when dropped.
struct LabPool {
    uri: String,
}

impl LabPool {
    fn new(uri: &str) -> LabPool {
        let mut conn = virt::connect::Connect::open(Some(uri)).unwrap();
        if let Ok(old) = virt::storage_pool::StoragePool::lookup_by_name(&conn, POOL) {
            let _ = old.destroy();
        }
        let xml = format!(
            "<pool type='dir'><name>{POOL}</name>\
             <target><path>/var/lib/libvirt/images/{POOL}</path></target></pool>"
        );
        // Build: the directory is made on the lab host.
        let pool = virt::storage_pool::StoragePool::create_xml(&conn, &xml, 1).unwrap();
        // What an interrupted run left in the directory goes first.
        for volume in pool.list_all_volumes(0).unwrap() {
            volume.delete(0).unwrap();
        }
        let base = "<volume><name>base.qcow2</name><capacity unit='MiB'>16</capacity>\
                    <target><format type='qcow2'/></target></volume>";
        virt::storage_vol::StorageVol::create_xml(&pool, base, 0).unwrap();
        conn.close().unwrap();
        LabPool { uri: uri.into() }
    }
}

impl Drop for LabPool {
    fn drop(&mut self) {
        if let Ok(mut conn) = virt::connect::Connect::open(Some(&self.uri)) {
            if let Ok(pool) = virt::storage_pool::StoragePool::lookup_by_name(&conn, POOL) {
                if let Ok(volumes) = pool.list_all_volumes(0) {
                    for volume in volumes {
                        let _ = volume.delete(0);
                    }
                }
                let _ = pool.destroy();
            }
            let _ = conn.close();
        }
    }
}

/// A domain the portal did not make, holding the lab's third GPU and its audio function (their
/// whole IOMMU group), as another tool on the host might; destroyed when dropped.
struct Rival {
    uri: String,
}

impl Rival {
    fn start(uri: &str, functions: &[&str]) -> Rival {
        let mut conn = virt::connect::Connect::open(Some(uri)).unwrap();
        if let Ok(old) = virt::domain::Domain::lookup_by_name(&conn, RIVAL) {
            let _ = old.destroy();
        }
        let hostdevs: String = functions
            .iter()
            .map(|f| {
                let (domain, rest) = f.split_at(4);
                let (bus, rest) = rest[1..].split_at(2);
                let (slot, function) = rest[1..].split_at(2);
                format!(
                    "<hostdev mode='subsystem' type='pci' managed='yes'><source>\
                     <address domain='0x{domain}' bus='0x{bus}' slot='0x{slot}' function='0x{}'/>\
                     </source></hostdev>",
                    &function[1..]
                )
            })
            .collect();
        let xml = format!(
            "<domain type='qemu'><name>{RIVAL}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='q35'>hvm</type></os>\
             <devices>{hostdevs}</devices></domain>"
        );
        virt::domain::Domain::create_xml(&conn, &xml, 0).unwrap();
        conn.close().unwrap();
        Rival { uri: uri.into() }
    }
}

impl Drop for Rival {
    fn drop(&mut self) {
        if let Ok(mut conn) = virt::connect::Connect::open(Some(&self.uri)) {
            if let Ok(domain) = virt::domain::Domain::lookup_by_name(&conn, RIVAL) {
                let _ = domain.destroy();
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

async fn delete(client: &Client, url: String) -> (StatusCode, Value) {
    let response = client.delete(url).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until the VM of `request` satisfies `done`.
async fn vm_of(client: &Client, base: &str, request: i64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(240);
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
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Files a request for one GPU of `model` as `user` and has `admin` approve it on `gpu`.
async fn request_and_approve(
    user: &Client,
    admin: &Client,
    base: &str,
    model: &str,
    gpu: &str,
) -> i64 {
    let (status, request) = post(
        user,
        format!("{base}/api/v1/requests"),
        json!({"gpu_model": model, "gpu_count": 1, "vcpus": 1, "memory_mib": 512,
               "disk_gib": 1, "image": "lab-tiny", "hypervisor": "kvm", "lease_hours": 1,
               "reason": "passthrough on the IOMMU lab host"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{request}");
    let request = request["id"].as_i64().unwrap();
    let (status, body) = post(
        admin,
        format!("{base}/api/v1/requests/{request}/approve"),
        json!({"gpus": [gpu]}),
    )
    .await;
    assert!(status.is_success(), "{body}");
    request
}

#[tokio::test]
async fn the_portal_passes_gpus_through_on_the_lab_host() {
    let Some(uri) = lab_uri() else { return };
    let began = Instant::now();
    let pool = LabPool::new(&uri);
    make_guest();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), &[]);
    config.hosts = vec![HostConfig {
        tcg: true,
        ..HostConfig::new("lab", &uri)
    }];
    config.gpu_vendors = GpuVendors::new([0x1234]).unwrap();
    // QEMU under TCG inside the lab host (itself under TCG) takes seconds to start.
    config.libvirt_call_timeout = Duration::from_secs(180);
    config.vms.reconcile_secs = 1;
    let admin = common::client(&common::token_for(&config, "ops", true).await);
    let ada = common::client(&common::token_for(&config, "ada", false).await);
    let portal = Portal::start(config.clone()).await.unwrap();
    let base = format!("http://{}", portal.address);
    let host = LibvirtHost::new(&uri, Duration::from_secs(180)).unwrap();
    let store = Store::open(&config.database_url).await.unwrap();

    // The lab host is inventoried, ready for passthrough, its display devices are GPUs.
    let deadline = Instant::now() + Duration::from_secs(120);
    let hosts = loop {
        let hosts = get(&admin, format!("{base}/api/v1/hosts")).await;
        if hosts[0]["state"] == "reachable" {
            break hosts;
        }
        assert!(
            Instant::now() < deadline,
            "the lab host is not inventoried: {hosts}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(hosts[0]["passthrough_problem"], Value::Null, "{hosts}");
    let gpus = get(&admin, format!("{base}/api/v1/gpus")).await;
    let addresses: Vec<&str> = gpus
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        addresses,
        ["0000:01:00.0", "0000:02:00.0", "0000:03:00.0"],
        "{gpus}"
    );
    let model = gpus[0]["model"].as_str().unwrap().to_string();
    let (first, second) = ("0000:01:00.0", "0000:02:00.0");
    let host_driver = driver_of(first);
    assert_eq!(host_driver, "bochs-drm");
    assert_eq!(driver_of(second), host_driver);

    let (status, body) = post(
        &admin,
        format!("{base}/api/v1/images"),
        json!({"name": "lab-tiny", "host": "lab", "pool": POOL, "volume": "base.qcow2",
               "kernel": format!("{BOOT_DIR}/vmlinuz"),
               "initrd": format!("{BOOT_DIR}/initrd.img"),
               "cmdline": "console=ttyS0 quiet panic=-1"}),
    )
    .await;
    assert!(status.is_success(), "{body}");

    // Request → approval → provisioning: the domain runs with the GPU on vfio-pci.
    let request = request_and_approve(&ada, &admin, &base, &model, first).await;
    let vm = vm_of(&ada, &base, request, |v| {
        matches!(v["state"].as_str(), Some("running" | "failed"))
    })
    .await;
    assert_eq!(vm["state"], "running", "{vm}");
    assert_eq!(vm["domain_type"], "qemu", "{vm}");
    assert_eq!(vm["gpus"], json!([first]), "{vm}");
    let id = vm["id"].as_i64().unwrap();
    let domain = vm["domain"].as_str().unwrap().to_string();
    let xml = admin
        .get(format!("{base}/api/v1/vms/{id}/domain"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        xml.contains("managed=\"yes\"") || xml.contains("managed='yes'"),
        "{xml}"
    );
    assert_eq!(driver_of(first), "vfio-pci");
    eprintln!(
        "lab portal: VM {id} running with {first} after {:?}",
        began.elapsed()
    );
    // The guest sees the device: 1234:1111, display class, behind a PCI port.
    let seen = wait_for_guest_gpus(&domain, 1).await;
    eprintln!(
        "lab portal: the guest lists {seen:?} after {:?}",
        began.elapsed()
    );

    // Hot-plug of a second GPU by an admin while the guest runs, and its removal.
    let (status, body) = post(
        &admin,
        format!("{base}/api/v1/vms/{id}/gpus"),
        json!({"address": second}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["vm"]["gpus"], json!([first, second]), "{body}");
    assert_eq!(driver_of(second), "vfio-pci");
    let seen = wait_for_guest_gpus(&domain, 2).await;
    eprintln!(
        "lab portal: after the attach the guest lists {seen:?} after {:?}",
        began.elapsed()
    );
    let (status, body) = delete(&admin, format!("{base}/api/v1/vms/{id}/gpus/{second}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["vm"]["gpus"], json!([first]), "{body}");
    assert_eq!(body["applied"], "live", "{body}");
    // The guest acknowledges the unplug: the GPU leaves it and returns to its host driver.
    wait_for_guest_gpus(&domain, 1).await;
    wait_for_driver(second, &host_driver).await;
    eprintln!("lab portal: detached after {:?}", began.elapsed());

    // Release: the domain and its volume go, every device returns to its driver.
    let (status, body) = delete(&ada, format!("{base}/api/v1/vms/{id}")).await;
    assert!(status.is_success(), "{body}");
    vm_of(&ada, &base, request, |v| v["state"] == "released").await;
    assert!(host.domain(&domain).await.unwrap().is_none());
    assert!(
        host.volume(POOL, &format!("{domain}.qcow2"))
            .await
            .unwrap()
            .is_none()
    );
    wait_for_driver(first, &host_driver).await;
    wait_for_driver(second, &host_driver).await;
    let shown = get(&admin, format!("{base}/api/v1/requests/{request}")).await;
    assert_eq!(shown["state"], "released", "{shown}");
    assert!(store.claims().await.unwrap().is_empty(), "no claim is left");
    eprintln!("lab portal: released after {:?}", began.elapsed());

    // A GPU whose IOMMU group another domain holds: libvirt's reason, nothing left behind.
    let (third, audio) = ("0000:03:00.0", "0000:03:00.1");
    let rival = Rival::start(&uri, &[third, audio]);
    assert_eq!(driver_of(third), "vfio-pci");
    let request = request_and_approve(&ada, &admin, &base, &model, third).await;
    let failed = vm_of(&ada, &base, request, |v| v["state"] == "failed").await;
    let reason = failed["state_reason"].as_str().unwrap();
    eprintln!("lab portal: a GPU in use elsewhere: {reason}");
    assert!(reason.contains("provisioning failed"), "{reason}");
    assert!(
        reason.contains("in use") && reason.contains(RIVAL),
        "libvirt's reason is kept: {reason}"
    );
    let domain = failed["domain"].as_str().unwrap();
    assert!(
        host.domain(domain).await.unwrap().is_none(),
        "no domain is left"
    );
    assert!(
        host.volume(POOL, &format!("{domain}.qcow2"))
            .await
            .unwrap()
            .is_none(),
        "no volume is left"
    );
    let shown = get(&ada, format!("{base}/api/v1/requests/{request}")).await;
    assert_eq!(shown["state"], "released", "{shown}");
    assert!(store.claims().await.unwrap().is_empty(), "no claim is left");
    assert_eq!(
        driver_of(third),
        "vfio-pci",
        "the other domain keeps its devices"
    );
    drop(rival);
    wait_for_driver(third, &host_driver).await;
    eprintln!("lab portal: whole life in {:?}", began.elapsed());

    host.disconnect().await;
    store.close().await;
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
    drop(pool);
}
