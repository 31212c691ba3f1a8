//! Inventory against libvirt itself: the bundled simulated host through the test driver, and a
//! real libvirtd when one is available (`PASSAGE_TEST_LIBVIRT_URI`, e.g. `qemu:///system`).

use std::path::PathBuf;
use std::time::Duration;

use passage_hypervisor::{Assignability, GpuVendors, HypervisorError, LibvirtHost, classify};

fn simulated_host_uri() -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hosts/simulated-host.xml");
    format!("test://{}", file.canonicalize().unwrap().display())
}

#[tokio::test]
async fn the_simulated_host_has_eight_gpus_on_two_numa_nodes() {
    let host = LibvirtHost::new(simulated_host_uri(), Duration::from_secs(10)).unwrap();
    let inventory = host.inventory().await.unwrap();
    assert_eq!(inventory.driver, "TEST");
    let gpus = classify(&inventory.devices, &GpuVendors::default());
    let summary: Vec<(String, String, Option<u32>)> = gpus
        .iter()
        .map(|g| (g.address.to_string(), g.model.clone(), g.numa_node))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("0000:17:00.0".into(), "H100 PCIe".into(), Some(0)),
            ("0000:2a:00.0".into(), "H100 PCIe".into(), Some(0)),
            ("0000:3d:00.0".into(), "H100 PCIe".into(), Some(0)),
            ("0000:4e:00.0".into(), "H100 PCIe".into(), Some(0)),
            ("0000:98:00.0".into(), "A100 PCIe 80GB".into(), Some(1)),
            ("0000:b1:00.0".into(), "A100 PCIe 80GB".into(), Some(1)),
            ("0000:ca:00.0".into(), "L40S".into(), Some(1)),
            (
                "0000:e3:00.0".into(),
                "RTX 6000 Ada Generation".into(),
                Some(1)
            ),
        ]
    );
    // Non-GPU functions are on the host but are not GPUs: the BMC's VGA, NICs, NVMe, bridges, audio.
    assert!(inventory.devices.len() > gpus.len() + 5);
    let groups: std::collections::HashSet<u32> = gpus
        .iter()
        .map(|g| g.iommu_group.as_ref().unwrap().number)
        .collect();
    assert_eq!(groups.len(), gpus.len(), "every GPU has a group of its own");

    let ada = gpus
        .iter()
        .find(|g| g.model.starts_with("RTX 6000"))
        .unwrap();
    let Assignability::Assignable { functions } = ada.assignability() else {
        panic!("the RTX 6000 Ada must be assignable");
    };
    let functions: Vec<String> = functions.iter().map(|a| a.to_string()).collect();
    assert_eq!(functions, vec!["0000:e3:00.0", "0000:e3:00.1"]);
    let audio = &ada.iommu_group.as_ref().unwrap().members[1];
    assert_eq!(audio.class_label, "Audio device");

    let degraded = gpus
        .iter()
        .find(|g| g.address.to_string() == "0000:4e:00.0")
        .unwrap();
    assert_eq!(
        degraded.link_current.as_ref().unwrap().to_string(),
        "PCIe Gen4 x16"
    );
    assert_eq!(
        degraded.link_max.as_ref().unwrap().to_string(),
        "PCIe Gen5 x16"
    );
    host.disconnect().await;
}

#[tokio::test]
async fn the_simulated_host_has_a_base_image_volume() {
    let host = LibvirtHost::new(simulated_host_uri(), Duration::from_secs(10)).unwrap();
    let volume = host
        .volume("images", "debian-12-generic-amd64.qcow2")
        .await
        .unwrap()
        .expect("the bundled base image");
    assert_eq!(volume.capacity_bytes, 3 << 30);
    assert!(volume.path.ends_with("debian-12-generic-amd64.qcow2"));
    assert_eq!(host.volume("images", "nope.qcow2").await.unwrap(), None);
    assert_eq!(host.volume("nope", "x").await.unwrap(), None);
    host.disconnect().await;
}

#[tokio::test]
async fn an_unreachable_host_fails_clearly_and_recovers_when_it_comes_back() {
    let dir = tempfile_dir();
    let file = dir.join("host.xml");
    let host = LibvirtHost::new(
        format!("test://{}", file.display()),
        Duration::from_secs(10),
    )
    .unwrap();
    let err = host.inventory().await.unwrap_err();
    assert!(matches!(err, HypervisorError::Connect { .. }), "{err:?}");
    assert!(err.is_transient());

    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hosts/simulated-host.xml"),
        &file,
    )
    .unwrap();
    let inventory = host.inventory().await.expect("the next call reconnects");
    assert_eq!(
        classify(&inventory.devices, &GpuVendors::default()).len(),
        8
    );
    host.disconnect().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_remote_host_that_refuses_connections_is_reported_not_hung() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let host = LibvirtHost::new("qemu+tcp://127.0.0.1:1/system", Duration::from_secs(20)).unwrap();
    let err = host.inventory().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
}

#[tokio::test]
async fn a_real_libvirtd_is_inventoried_without_gpus_or_crashes() {
    let Some(uri) = passage_test_support::service(
        "PASSAGE_TEST_LIBVIRT_URI",
        "tests/services/libvirtd.sh start prints it; .ci/run sets it",
    ) else {
        return;
    };
    let host = LibvirtHost::new(uri.clone(), Duration::from_secs(60)).unwrap();
    let inventory = host
        .inventory()
        .await
        .unwrap_or_else(|e| panic!("{uri}: {e}"));
    assert_eq!(inventory.driver, "QEMU");
    assert!(
        !inventory.devices.is_empty(),
        "a real host has PCI functions"
    );
    for gpu in classify(&inventory.devices, &GpuVendors::default()) {
        assert_eq!(gpu.vendor_id, 0x10de);
    }
    // A second pass reuses the same connection.
    let again = host.inventory().await.unwrap();
    assert_eq!(again.devices.len(), inventory.devices.len());
    host.disconnect().await;
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "passage-hv-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
