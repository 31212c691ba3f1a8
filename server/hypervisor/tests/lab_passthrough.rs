//! Real PCI passthrough on the lab host (tests/services/iommu-host.sh: an emulated Intel IOMMU,
//! its own libvirtd and QEMU), through this crate's own calls: the inventory and its readiness,
//! a domain started with `managed='yes'` hostdevs (libvirt detaches the devices to vfio-pci),
//! hot-plug of a second GPU, a device already in use refused with nothing left behind, and every
//! device back on its host driver at the end. Needs `PASSAGE_TEST_LAB_URI` (what `start` prints);
//! without it the test says that it is skipped.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use passage_hypervisor::domain::{DomainKind, DomainSpec, DomainState, Network};
use passage_hypervisor::{Assignability, GpuVendors, Hotplug, LibvirtHost, PciAddress, classify};

const POOL: &str = "passage-lab-test";

fn lab_uri() -> Option<String> {
    passage_test_support::service(
        "PASSAGE_TEST_LAB_URI",
        "as root, tests/services/iommu-host.sh start prints it; .ci/run sets it",
    )
}

/// Runs `command` inside the lab host and returns its output.
fn lab_exec(command: &str) -> String {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/services/iommu-host.sh");
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
fn driver_of(address: &PciAddress) -> String {
    lab_exec(&format!(
        "d=/sys/bus/pci/devices/{address}/driver; [ -e $d ] && basename $(readlink $d) || echo none"
    ))
}

fn scratch_pool(uri: &str) {
    let conn = virt::connect::Connect::open(Some(uri)).unwrap();
    if let Ok(old) = virt::storage_pool::StoragePool::lookup_by_name(&conn, POOL) {
        let _ = old.destroy();
    }
    let xml = format!(
        "<pool type='dir'><name>{POOL}</name><target><path>/var/lib/libvirt/images/{POOL}</path></target></pool>"
    );
    // Build: the directory is made on the lab host.
    virt::storage_pool::StoragePool::create_xml(&conn, &xml, 1).unwrap();
    let pool = virt::storage_pool::StoragePool::lookup_by_name(&conn, POOL).unwrap();
    // What an interrupted run left in the directory goes first.
    for volume in pool.list_all_volumes(0).unwrap() {
        volume.delete(0).unwrap();
    }
    let base = "<volume><name>base.qcow2</name><capacity unit='MiB'>16</capacity>\
                <target><format type='qcow2'/></target></volume>";
    virt::storage_vol::StorageVol::create_xml(&pool, base, 0).unwrap();
    let mut conn = conn;
    conn.close().unwrap();
}

fn spec(vm_id: i64, disk_path: String, hostdevs: Vec<PciAddress>) -> DomainSpec {
    DomainSpec {
        kind: DomainKind::Qemu,
        vm_id,
        request_id: vm_id,
        owner: "lab".into(),
        vcpus: 1,
        memory_mib: 128,
        disk_path,
        network: Network::User,
        numa: None,
        hostdevs,
        seed_url: None,
        kernel_boot: None,
        identity: None,
    }
}

#[tokio::test]
async fn gpus_pass_through_on_the_lab_host_and_return_to_their_driver() {
    let Some(uri) = lab_uri() else { return };
    let began = Instant::now();
    let host = LibvirtHost::new(&uri, Duration::from_secs(180)).unwrap();

    // Inventory and readiness, as the portal reads them.
    let inventory = host.inventory().await.unwrap();
    assert_eq!(inventory.driver, "QEMU");
    assert_eq!(
        inventory.passthrough_problem(),
        None,
        "{:?}",
        inventory.passthrough
    );
    let gpus = classify(&inventory.devices, &GpuVendors::new([0x1234]).unwrap());
    let addresses: Vec<String> = gpus.iter().map(|g| g.address.to_string()).collect();
    assert_eq!(
        addresses,
        vec!["0000:01:00.0", "0000:02:00.0", "0000:03:00.0"]
    );
    for gpu in &gpus {
        assert!(matches!(
            gpu.assignability(),
            Assignability::Assignable { .. }
        ));
    }
    let (first, second) = (gpus[0].address, gpus[1].address);
    let host_driver = driver_of(&first);
    assert_eq!(host_driver, "bochs-drm");
    assert_eq!(driver_of(&second), "bochs-drm");

    scratch_pool(&uri);
    let base = format!("/var/lib/libvirt/images/{POOL}/base.qcow2");
    let disk = host
        .create_cow_volume(POOL, "passage-vm-801.qcow2", 16 << 20, &base)
        .await
        .unwrap();
    let vm = spec(801, disk.path.clone(), vec![first]);
    let _ = host.remove_domain(&vm.name()).await;
    let xml = vm.to_xml();
    assert!(
        xml.contains("managed=\"yes\"") || xml.contains("managed='yes'"),
        "{xml}"
    );

    // Start: libvirt detaches the GPU from its host driver to vfio-pci.
    let started = host.define_and_start(&xml).await.unwrap();
    assert_eq!(started.state, DomainState::Running);
    assert_eq!(driver_of(&first), "vfio-pci");
    let group = lab_exec(&format!(
        "basename $(readlink /sys/bus/pci/devices/{first}/iommu_group)"
    ));
    assert_eq!(
        lab_exec(&format!("ls /dev/vfio/{group} >/dev/null && echo open")),
        "open"
    );
    eprintln!("lab: started with {first} after {:?}", began.elapsed());

    // A second domain asking for the same GPU is refused by libvirt, and leaves nothing.
    let disk2 = host
        .create_cow_volume(POOL, "passage-vm-802.qcow2", 16 << 20, &base)
        .await
        .unwrap();
    let rival = spec(802, disk2.path.clone(), vec![first]);
    let err = host.define_and_start(&rival.to_xml()).await.unwrap_err();
    eprintln!("lab: a GPU in use is refused: {err}");
    assert!(
        err.to_string().contains(&first.to_string()) || err.to_string().contains("in use"),
        "{err}"
    );
    assert!(host.domain(&rival.name()).await.unwrap().is_none());
    assert_eq!(
        driver_of(&first),
        "vfio-pci",
        "the running VM keeps its GPU"
    );

    // Hot-plug a second GPU into the running VM, then take it out again.
    let attached = host.attach_hostdev(&vm.name(), &second).await.unwrap();
    assert_eq!(attached, Hotplug::Live);
    assert_eq!(driver_of(&second), "vfio-pci");
    let detached = host.detach_hostdev(&vm.name(), &second).await.unwrap();
    assert_eq!(detached, Hotplug::Live);
    // PCIe hot-unplug needs the guest's acknowledgement; this guest runs no OS, so the device
    // may stay with the VM until it is released.
    let deadline = Instant::now() + Duration::from_secs(20);
    while driver_of(&second) != host_driver && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    eprintln!(
        "lab: after the unplug request {second} is bound to {}",
        driver_of(&second)
    );

    // Release: the domain goes, and the GPU returns to its host driver.
    assert!(host.remove_domain(&vm.name()).await.unwrap());
    assert_eq!(driver_of(&first), host_driver);
    assert_eq!(driver_of(&second), host_driver);
    for name in ["passage-vm-801.qcow2", "passage-vm-802.qcow2"] {
        assert!(host.delete_volume(POOL, name).await.unwrap());
    }
    host.disconnect().await;
    eprintln!("lab: whole passthrough life in {:?}", began.elapsed());
}
