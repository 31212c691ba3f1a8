//! Node-device XML as real libvirt reports it, saved from hosts as fixtures: the lab host with an
//! emulated Intel IOMMU (tests/services/iommu-host.sh) and a host without an IOMMU. The parser
//! and classification must read them as they are, and the bundled simulated host must look like
//! them wherever the test driver allows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use passage_hypervisor::{Assignability, GpuVendors, PciAddress, PciDevice, classify};

fn fixtures(host: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(host)
}

/// Every `pci_*.xml` of a fixture host: the raw XML by node-device name.
fn node_device_xml(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("pci_") && n.ends_with(".xml"))
        })
        .map(|path| {
            let name = path.file_stem().unwrap().to_str().unwrap().to_string();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect()
}

fn parsed(host: &str) -> Vec<PciDevice> {
    let mut devices: Vec<PciDevice> = node_device_xml(&fixtures(host))
        .values()
        .map(|xml| PciDevice::from_node_device_xml(xml).unwrap().unwrap())
        .collect();
    devices.sort_by_key(|d| d.address);
    devices
}

fn address(text: &str) -> PciAddress {
    text.parse().unwrap()
}

fn lab_vendors() -> GpuVendors {
    GpuVendors::new([0x1234]).unwrap()
}

#[test]
fn the_lab_hosts_display_devices_are_its_gpus_with_their_groups() {
    let devices = parsed("lab-host");
    assert_eq!(devices.len(), 15);
    // NVIDIA alone (the default) finds none of QEMU's display devices.
    assert!(classify(&devices, &GpuVendors::default()).is_empty());

    let gpus = classify(&devices, &lab_vendors());
    let summary: Vec<(String, u32, Option<String>, String)> = gpus
        .iter()
        .map(|g| {
            (
                g.address.to_string(),
                g.iommu_group.as_ref().unwrap().number,
                g.pcie_root.map(|a| a.to_string()),
                g.driver.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "0000:01:00.0".into(),
                8,
                Some("0000:00:02.0".into()),
                "bochs-drm".into()
            ),
            (
                "0000:02:00.0".into(),
                9,
                Some("0000:00:03.0".into()),
                "bochs-drm".into()
            ),
            (
                "0000:03:00.0".into(),
                10,
                Some("0000:00:04.0".into()),
                "bochs-drm".into()
            ),
        ]
    );
    for gpu in &gpus {
        // Without a PCI id database entry libvirt reports the ids only.
        assert_eq!(gpu.model, "QEMU 1111");
        assert_eq!(gpu.vendor_id, 0x1234);
        // A single-node machine: libvirt leaves <numa> out. QEMU's VGA is conventional PCI.
        assert_eq!(gpu.numa_node, None);
        assert_eq!(gpu.link_current, None);
    }
    assert_eq!(gpus[0].class, 0x030000);
    assert_eq!(gpus[2].class, 0x038000);

    // The secondary VGA shares its group with its HD audio function: both go to the VM.
    let Assignability::Assignable { functions } = gpus[2].assignability() else {
        panic!("03:00.0 must be assignable");
    };
    assert_eq!(
        functions,
        vec![address("0000:03:00.0"), address("0000:03:00.1")]
    );
    let audio = &gpus[2].iommu_group.as_ref().unwrap().members[1];
    assert_eq!(audio.class_label, "Audio device");
    assert!(audio.same_device && !audio.is_bridge);
    // This host had no PCI id database: libvirt gave ids only, and the class describes it.
    assert_eq!(audio.description, "Audio device [8086:293e]");
}

#[test]
fn the_lab_hosts_other_devices_are_parsed_as_libvirt_reports_them() {
    let devices = parsed("lab-host");
    let by_address = |a: &str| devices.iter().find(|d| d.address == address(a)).unwrap();

    // A PCIe root port: its own group, a link, the driver bound now.
    let port = by_address("0000:00:04.0");
    assert!(port.is_bridge());
    assert_eq!(port.driver.as_deref(), Some("pcieport"));
    assert_eq!(port.parent.as_deref(), Some("computer"));
    assert_eq!(port.iommu_group, Some((3, vec![address("0000:00:04.0")])));
    assert_eq!(port.link_max.as_ref().unwrap().to_string(), "PCIe Gen4 x32");

    // The ICH9 functions share one group, listed in libvirt's own order (not sorted).
    let sata = by_address("0000:00:1f.2");
    assert_eq!(sata.driver.as_deref(), Some("ahci"));
    assert_eq!(
        sata.iommu_group,
        Some((
            7,
            vec![
                address("0000:00:1f.2"),
                address("0000:00:1f.0"),
                address("0000:00:1f.3")
            ]
        ))
    );

    // An ordinary NIC behind its own root port, not a GPU under any vendor list.
    let nic = by_address("0000:04:00.0");
    assert_eq!(nic.driver.as_deref(), Some("e1000e"));
    assert_eq!(nic.parent.as_deref(), Some("pci_0000_00_05_0"));
    assert_eq!(
        nic.link_current.as_ref().unwrap().to_string(),
        "PCIe Gen1 x1"
    );
    let everyone = GpuVendors::new([0x1234, 0x8086, 0x1af4, 0x1b36]).unwrap();
    assert_eq!(classify(&devices, &everyone).len(), 3);
}

#[test]
fn a_host_without_an_iommu_reports_no_groups() {
    let devices = parsed("no-iommu-host");
    assert!(!devices.is_empty());
    for device in &devices {
        assert_eq!(device.iommu_group, None, "{}", device.name);
    }
    let balloon = devices
        .iter()
        .find(|d| d.address == address("0000:00:01.0"))
        .unwrap();
    assert_eq!(balloon.driver.as_deref(), Some("virtio-pci"));
    assert_eq!(
        balloon.product_name.as_deref(),
        Some("Virtio 1.0 memory balloon")
    );
}

/// Facts about node-device XML that hold on every real host, checked against one set of XML.
fn check_shaped_like_real_libvirt(host: &str, xml: &BTreeMap<String, String>) {
    let devices: BTreeMap<String, PciDevice> = xml
        .iter()
        .map(|(name, text)| {
            let device = PciDevice::from_node_device_xml(text).unwrap().unwrap();
            assert_eq!(&device.name, name, "{host}");
            (name.clone(), device)
        })
        .collect();
    for (name, device) in &devices {
        let text = &xml[name];
        // libvirt marks every PCI-to-PCI bridge with a pci-bridge sub-capability.
        assert_eq!(
            device.class.map(|c| c >> 8) == Some(0x0604),
            text.contains("<capability type='pci-bridge'/>"),
            "{host}: {name}: a bridge and its pci-bridge capability go together"
        );
        // The parent is `computer` or the bridge whose secondary bus the function is on.
        let parent = device.parent.as_deref().unwrap();
        if parent != "computer" {
            let bridge = &devices[parent];
            assert!(
                bridge.is_bridge(),
                "{host}: {name}'s parent {parent} is no bridge"
            );
            assert_ne!(bridge.address.bus, device.address.bus, "{host}: {name}");
        }
        // Every member of a group lists the same members, itself included.
        if let Some((number, members)) = &device.iommu_group {
            assert!(members.contains(&device.address), "{host}: {name}");
            for member in members {
                let other = devices
                    .values()
                    .find(|d| d.address == *member)
                    .unwrap_or_else(|| panic!("{host}: {name}: member {member} is not listed"));
                let (other_number, other_members) = other.iommu_group.as_ref().unwrap();
                assert_eq!(other_number, number, "{host}: {name}");
                let mut a = members.clone();
                let mut b = other_members.clone();
                a.sort();
                b.sort();
                assert_eq!(
                    a, b,
                    "{host}: {name} and {member} disagree on group {number}"
                );
            }
        }
    }
}

#[test]
fn the_lab_hosts_xml_has_the_shape_of_real_libvirt() {
    check_shaped_like_real_libvirt("lab-host", &node_device_xml(&fixtures("lab-host")));
}

#[tokio::test]
async fn the_simulated_host_has_the_same_shape_as_a_real_one() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hosts/simulated-host.xml");
    let uri = format!("test://{}", file.canonicalize().unwrap().display());
    let xml = tokio::task::spawn_blocking(move || {
        virt::error::clear_error_callback();
        let mut conn = virt::connect::Connect::open(Some(&uri)).unwrap();
        let xml: BTreeMap<String, String> = conn
            .list_all_node_devices(virt::sys::VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV)
            .unwrap()
            .into_iter()
            .map(|node| (node.get_name().unwrap(), node.get_xml_desc(0).unwrap()))
            .collect();
        conn.close().unwrap();
        xml
    })
    .await
    .unwrap();
    assert!(xml.len() > 20);
    check_shaped_like_real_libvirt("simulated", &xml);
    // Every GPU now has the root port a real server would show above it.
    let devices: Vec<PciDevice> = xml
        .values()
        .map(|text| PciDevice::from_node_device_xml(text).unwrap().unwrap())
        .collect();
    for gpu in classify(&devices, &GpuVendors::default()) {
        assert!(gpu.pcie_root.is_some(), "{}", gpu.address);
    }
}
