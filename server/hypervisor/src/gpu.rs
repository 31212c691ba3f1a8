//! Which PCI functions are passthrough GPUs, and what must travel with each of them.
//!
//! VFIO hands a device to a guest only together with its whole IOMMU group: every endpoint in the
//! group is detached from the host at once. A GPU's audio function, for example, goes along with it.
//! Bridges in a group stay with the host (VFIO allows that), so they are never assigned.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::pci::{PciAddress, PciDevice, PcieLink, class_label};

/// PCI vendor id of NVIDIA.
pub const NVIDIA_VENDOR_ID: u16 = 0x10de;

/// The PCI vendors whose display-class functions count as GPUs on every host.
///
/// NVIDIA alone by default; admins add AMD (0x1002), Intel (0x8086) or, for a test lab, QEMU's
/// emulated display (0x1234). Other functions of these vendors (audio, bridges, switches) are
/// never GPUs, nor are display controllers of vendors not listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuVendors(BTreeSet<u16>);

impl GpuVendors {
    /// The given vendor ids; `None` when the list is empty (a portal that counts no GPU is a
    /// configuration mistake, not a choice).
    pub fn new(ids: impl IntoIterator<Item = u16>) -> Option<GpuVendors> {
        let set: BTreeSet<u16> = ids.into_iter().collect();
        (!set.is_empty()).then_some(GpuVendors(set))
    }

    /// True when functions of `vendor_id` can be GPUs.
    pub fn contains(&self, vendor_id: u16) -> bool {
        self.0.contains(&vendor_id)
    }

    /// The vendor ids, in ascending order.
    pub fn ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().copied()
    }
}

impl Default for GpuVendors {
    fn default() -> Self {
        GpuVendors(BTreeSet::from([NVIDIA_VENDOR_ID]))
    }
}

impl fmt::Display for GpuVendors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "0x{id:04x}")?;
        }
        Ok(())
    }
}

/// True when a PCI function is a GPU: a display-class function (base class 0x03) of one of
/// `vendors`.
pub fn is_gpu(device: &PciDevice, vendors: &GpuVendors) -> bool {
    vendors.contains(device.vendor_id) && device.base_class() == Some(0x03)
}

/// A short name for a vendor whose PCI database entry is missing on the host.
fn vendor_short_name(vendor_id: u16) -> Option<&'static str> {
    match vendor_id {
        NVIDIA_VENDOR_ID => Some("NVIDIA"),
        0x1002 => Some("AMD"),
        0x8086 => Some("Intel"),
        0x1234 => Some("QEMU"),
        _ => None,
    }
}

/// One member of an IOMMU group, described for people.
#[derive(Debug, Clone, PartialEq)]
pub struct IommuMember {
    /// The function's address.
    pub address: PciAddress,
    /// A short description (product name or class).
    pub description: String,
    /// The function's class label ("3D controller", "Audio device", ...).
    pub class_label: String,
    /// True for bridges, which stay with the host when the group is assigned.
    pub is_bridge: bool,
    /// True when it is a function of the GPU's own physical device (same bus and slot).
    pub same_device: bool,
    /// True for display functions (class 03): GPUs, which go to the VM like the GPU itself.
    pub is_display: bool,
}

/// An IOMMU group: the smallest set of functions the host can isolate from each other.
#[derive(Debug, Clone, PartialEq)]
pub struct IommuGroup {
    /// The group number on its host.
    pub number: u32,
    /// Every function in the group, the GPU included, ordered by address.
    pub members: Vec<IommuMember>,
}

impl IommuGroup {
    /// The functions a VM receives when it is given this group: every member that is not a bridge.
    pub fn passthrough_functions(&self) -> Vec<PciAddress> {
        self.members
            .iter()
            .filter(|m| !m.is_bridge)
            .map(|m| m.address)
            .collect()
    }

    /// Endpoints in the group that belong to some other physical device. Assigning the GPU takes
    /// them away from the host too, which an admin should know about.
    pub fn foreign_endpoints(&self) -> Vec<&IommuMember> {
        self.members
            .iter()
            .filter(|m| !m.is_bridge && !m.same_device)
            .collect()
    }

    /// Endpoints of the host that passing the GPU through would take away: members that are not
    /// bridges, not functions of the GPU's own device and not display functions (a NIC, an
    /// NVMe drive, a USB controller, or a device the host does not describe).
    pub fn host_devices(&self) -> Vec<&IommuMember> {
        self.foreign_endpoints()
            .into_iter()
            .filter(|m| !m.is_display)
            .collect()
    }
}

/// Whether a GPU can be handed to a VM.
#[derive(Debug, Clone, PartialEq)]
pub enum Assignability {
    /// It can: these functions go to the VM together.
    Assignable {
        /// Every function that the VM receives (the GPU first).
        functions: Vec<PciAddress>,
    },
    /// It cannot, for this reason.
    Unassignable {
        /// Why, in words an admin can act on.
        reason: String,
    },
}

/// A GPU found on a host.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    /// libvirt's node-device name.
    pub node_device: String,
    /// The GPU function's address.
    pub address: PciAddress,
    /// PCI vendor id (one of the configured GPU vendors).
    pub vendor_id: u16,
    /// Vendor name from the host's PCI database.
    pub vendor_name: String,
    /// PCI device id.
    pub product_id: u16,
    /// Product name from the host's PCI database, or the ids when unknown.
    pub product_name: String,
    /// A short model name users pick in requests, e.g. `H100 PCIe`.
    pub model: String,
    /// Full class code.
    pub class: u32,
    /// NUMA node the GPU is attached to.
    pub numa_node: Option<u32>,
    /// Link capability.
    pub link_max: Option<PcieLink>,
    /// Negotiated link.
    pub link_current: Option<PcieLink>,
    /// Host driver bound now, when known.
    pub driver: Option<String>,
    /// Its IOMMU group with every member, when the host has an IOMMU enabled.
    pub iommu_group: Option<IommuGroup>,
    /// The top-most PCI bridge above the GPU (its root port). GPUs that share one sit behind
    /// the same PCIe switch, the closest a pair can be short of NVLink.
    pub pcie_root: Option<PciAddress>,
}

impl Gpu {
    /// Whether the GPU can be passed through, and with which functions.
    pub fn assignability(&self) -> Assignability {
        self.assignability_allowing(&[])
    }

    /// Like [`assignability`](Self::assignability), where an admin has allowed the host devices
    /// `allowed` to go to a VM with this GPU. A GPU whose group holds any other host device
    /// (see [`IommuGroup::host_devices`]) is unassignable: managed passthrough would unbind it
    /// from its host driver.
    pub fn assignability_allowing(&self, allowed: &[PciAddress]) -> Assignability {
        let Some(group) = &self.iommu_group else {
            return Assignability::Unassignable {
                reason:
                    "no IOMMU group: enable the IOMMU (intel_iommu=on or amd_iommu=on) on the host"
                        .into(),
            };
        };
        let mut functions = group.passthrough_functions();
        if !functions.contains(&self.address) {
            return Assignability::Unassignable {
                reason: format!(
                    "IOMMU group {} does not list the GPU itself; the host reports an inconsistent group",
                    group.number
                ),
            };
        }
        let taken: Vec<&IommuMember> = group
            .host_devices()
            .into_iter()
            .filter(|m| !allowed.contains(&m.address))
            .collect();
        if !taken.is_empty() {
            let named = taken
                .iter()
                .map(|m| format!("{} ({})", m.address, m.description))
                .collect::<Vec<_>>()
                .join(", ");
            let addresses = taken
                .iter()
                .map(|m| format!("\"{}\"", m.address))
                .collect::<Vec<_>>()
                .join(", ");
            return Assignability::Unassignable {
                reason: format!(
                    "IOMMU group {} also holds {named}: passing the GPU through would take \
                     it from the host. Put the device in its own group (another slot, ACS), or \
                     allow it in the host's configuration: \
                     shared_groups = [{{ gpu = \"{}\", members = [{addresses}] }}]",
                    group.number, self.address
                ),
            };
        }
        functions.sort_by_key(|a| (*a != self.address, *a));
        Assignability::Assignable { functions }
    }
}

/// Finds the GPUs (display functions of `vendors`) among a host's PCI functions and resolves each
/// one's IOMMU group against the other functions, so that every member carries a description.
pub fn classify(devices: &[PciDevice], vendors: &GpuVendors) -> Vec<Gpu> {
    let by_address: HashMap<PciAddress, &PciDevice> =
        devices.iter().map(|d| (d.address, d)).collect();
    let by_name: HashMap<&str, &PciDevice> = devices.iter().map(|d| (d.name.as_str(), d)).collect();
    // Walks up the parents while they are PCI bridges; the last one is the root port.
    let pcie_root = |device: &PciDevice| {
        let mut root = None;
        let mut next = device.parent.as_deref();
        for _ in 0..32 {
            match next.and_then(|name| by_name.get(name)) {
                Some(bridge) if bridge.is_bridge() => {
                    root = Some(bridge.address);
                    next = bridge.parent.as_deref();
                }
                _ => break,
            }
        }
        root
    };
    let mut gpus: Vec<Gpu> = devices
        .iter()
        .filter(|d| is_gpu(d, vendors))
        .map(|device| Gpu {
            node_device: device.name.clone(),
            address: device.address,
            vendor_id: device.vendor_id,
            vendor_name: device.vendor_name.clone().unwrap_or_else(|| {
                vendor_short_name(device.vendor_id)
                    .map(String::from)
                    .unwrap_or_else(|| format!("vendor {:04x}", device.vendor_id))
            }),
            product_id: device.product_id,
            product_name: device.description(),
            model: model_name(device),
            class: device.class.unwrap_or_default(),
            numa_node: device.numa_node,
            link_max: device.link_max.clone(),
            link_current: device.link_current.clone(),
            driver: device.driver.clone(),
            pcie_root: pcie_root(device),
            iommu_group: device.iommu_group.as_ref().map(|(number, addresses)| {
                let mut members: Vec<IommuMember> = addresses
                    .iter()
                    .map(|address| describe_member(device, *address, by_address.get(address)))
                    .collect();
                if !members.iter().any(|m| m.address == device.address) {
                    // libvirt lists the device itself in its group; keep that invariant even when a
                    // host file or an old libvirt leaves it out.
                    members.push(describe_member(device, device.address, Some(&device)));
                }
                members.sort_by_key(|m| m.address);
                IommuGroup {
                    number: *number,
                    members,
                }
            }),
        })
        .collect();
    gpus.sort_by_key(|g| g.address);
    gpus
}

fn describe_member(
    gpu: &PciDevice,
    address: PciAddress,
    found: Option<&&PciDevice>,
) -> IommuMember {
    match found {
        Some(member) => IommuMember {
            address,
            description: member.description(),
            class_label: member.class.map(class_label).unwrap_or("PCI device").into(),
            is_bridge: member.is_bridge(),
            same_device: gpu.address.same_device(&address),
            is_display: member.base_class() == Some(0x03),
        },
        None => IommuMember {
            address,
            description: "unknown device (not listed by the host)".into(),
            class_label: "PCI device".into(),
            is_bridge: false,
            same_device: gpu.address.same_device(&address),
            is_display: false,
        },
    }
}

/// The short model name users choose from: the bracketed marketing name of the PCI database entry
/// (`GH100 [H100 PCIe]` becomes `H100 PCIe`), else the whole product name, else the vendor and
/// device ids (`NVIDIA 20b5`, `1234:1111` for a vendor without a short name).
pub fn model_name(device: &PciDevice) -> String {
    match &device.product_name {
        Some(name) => match (name.rfind('['), name.rfind(']')) {
            (Some(open), Some(close)) if open < close && close - open > 1 => {
                name[open + 1..close].trim().to_string()
            }
            _ => name.trim().to_string(),
        },
        None => match vendor_short_name(device.vendor_id) {
            Some(vendor) => format!("{vendor} {:04x}", device.product_id),
            None => format!("{:04x}:{:04x}", device.vendor_id, device.product_id),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(address: &str, class: u32, vendor: u16, product: u16, name: &str) -> PciDevice {
        let address: PciAddress = address.parse().unwrap();
        PciDevice {
            name: address.node_device_name(),
            address,
            class: Some(class),
            vendor_id: vendor,
            vendor_name: None,
            product_id: product,
            product_name: Some(name.to_string()),
            iommu_group: None,
            numa_node: Some(0),
            link_max: None,
            link_current: None,
            driver: None,
            parent: Some("computer".into()),
        }
    }

    fn grouped(mut device: PciDevice, number: u32, members: &[&str]) -> PciDevice {
        device.iommu_group = Some((number, members.iter().map(|m| m.parse().unwrap()).collect()));
        device
    }

    #[test]
    fn only_nvidia_display_functions_are_gpus() {
        let devices = vec![
            device(
                "0000:17:00.0",
                0x030200,
                0x10de,
                0x2331,
                "GH100 [H100 PCIe]",
            ),
            device(
                "0000:65:00.0",
                0x030000,
                0x10de,
                0x26b1,
                "AD102GL [RTX 6000 Ada Generation]",
            ),
            device(
                "0000:65:00.1",
                0x040300,
                0x10de,
                0x22ba,
                "AD102 High Definition Audio Controller",
            ),
            device(
                "0000:03:00.0",
                0x030000,
                0x1a03,
                0x2000,
                "ASPEED Graphics Family",
            ),
            device(
                "0000:c1:00.0",
                0x068000,
                0x10de,
                0x22a3,
                "GH100 [H100 NVSwitch]",
            ),
            device(
                "0000:31:00.0",
                0x020000,
                0x15b3,
                0x101b,
                "MT28908 Family [ConnectX-6]",
            ),
        ];
        let gpus = classify(&devices, &GpuVendors::default());
        let found: Vec<String> = gpus.iter().map(|g| g.address.to_string()).collect();
        assert_eq!(found, vec!["0000:17:00.0", "0000:65:00.0"]);
        assert_eq!(gpus[0].model, "H100 PCIe");
        assert_eq!(gpus[1].model, "RTX 6000 Ada Generation");
    }

    #[test]
    fn audio_function_travels_with_its_gpu() {
        let group = ["0000:65:00.0", "0000:65:00.1"];
        let devices = vec![
            grouped(
                device(
                    "0000:65:00.0",
                    0x030000,
                    0x10de,
                    0x26b1,
                    "AD102GL [RTX 6000 Ada Generation]",
                ),
                12,
                &group,
            ),
            grouped(
                device(
                    "0000:65:00.1",
                    0x040300,
                    0x10de,
                    0x22ba,
                    "AD102 High Definition Audio Controller",
                ),
                12,
                &group,
            ),
        ];
        let gpu = &classify(&devices, &GpuVendors::default())[0];
        let iommu = gpu.iommu_group.as_ref().unwrap();
        assert_eq!(iommu.number, 12);
        assert_eq!(iommu.members[1].class_label, "Audio device");
        assert!(iommu.members[1].same_device);
        assert!(iommu.foreign_endpoints().is_empty());
        assert_eq!(
            gpu.assignability(),
            Assignability::Assignable {
                functions: vec![
                    "0000:65:00.0".parse().unwrap(),
                    "0000:65:00.1".parse().unwrap()
                ]
            }
        );
    }

    #[test]
    fn bridges_stay_with_the_host_and_foreign_endpoints_are_flagged() {
        let group = ["0000:16:02.0", "0000:17:00.0", "0000:18:00.0"];
        let devices = vec![
            grouped(
                device("0000:16:02.0", 0x060400, 0x8086, 0x347a, "PCIe Root Port"),
                7,
                &group,
            ),
            grouped(
                device(
                    "0000:17:00.0",
                    0x030200,
                    0x10de,
                    0x2331,
                    "GH100 [H100 PCIe]",
                ),
                7,
                &group,
            ),
            grouped(
                device("0000:18:00.0", 0x010802, 0x144d, 0xa80a, "NVMe SSD"),
                7,
                &group,
            ),
        ];
        let gpu = &classify(&devices, &GpuVendors::default())[0];
        let iommu = gpu.iommu_group.as_ref().unwrap();
        assert_eq!(
            iommu.passthrough_functions(),
            vec![
                "0000:17:00.0".parse().unwrap(),
                "0000:18:00.0".parse().unwrap()
            ]
        );
        let foreign: Vec<String> = iommu
            .foreign_endpoints()
            .iter()
            .map(|m| m.description.clone())
            .collect();
        assert_eq!(foreign, vec!["NVMe SSD"]);
        // The NVMe drive is the host's: the GPU is unassignable until an admin names it.
        match gpu.assignability() {
            Assignability::Unassignable { reason } => {
                assert!(reason.contains("0000:18:00.0 (NVMe SSD)"), "{reason}");
                assert!(reason.contains("shared_groups"), "{reason}");
            }
            other => panic!("expected unassignable, got {other:?}"),
        }
        let nvme: PciAddress = "0000:18:00.0".parse().unwrap();
        let other: PciAddress = "0000:19:00.0".parse().unwrap();
        assert!(matches!(
            gpu.assignability_allowing(&[other]),
            Assignability::Unassignable { .. }
        ));
        assert_eq!(
            gpu.assignability_allowing(&[nvme]),
            Assignability::Assignable {
                functions: vec!["0000:17:00.0".parse().unwrap(), nvme]
            }
        );
    }

    #[test]
    fn a_second_gpu_in_the_group_is_not_a_host_device() {
        let group = ["0000:17:00.0", "0000:18:00.0"];
        let devices: Vec<PciDevice> = group
            .iter()
            .map(|a| {
                grouped(
                    device(a, 0x030200, 0x10de, 0x2331, "GH100 [H100 PCIe]"),
                    7,
                    &group,
                )
            })
            .collect();
        let gpu = &classify(&devices, &GpuVendors::default())[0];
        assert!(gpu.iommu_group.as_ref().unwrap().host_devices().is_empty());
        assert!(matches!(
            gpu.assignability(),
            Assignability::Assignable { .. }
        ));
    }

    #[test]
    fn a_gpu_without_iommu_group_is_not_assignable() {
        let devices = vec![device(
            "0000:17:00.0",
            0x030200,
            0x10de,
            0x2331,
            "GH100 [H100 PCIe]",
        )];
        let gpu = &classify(&devices, &GpuVendors::default())[0];
        match gpu.assignability() {
            Assignability::Unassignable { reason } => assert!(reason.contains("IOMMU")),
            other => panic!("expected unassignable, got {other:?}"),
        }
    }

    #[test]
    fn group_members_missing_from_the_host_are_still_listed() {
        let devices = vec![grouped(
            device(
                "0000:17:00.0",
                0x030200,
                0x10de,
                0x2331,
                "GH100 [H100 PCIe]",
            ),
            3,
            &["0000:17:00.0", "0000:17:00.1"],
        )];
        let iommu = classify(&devices, &GpuVendors::default())[0]
            .iommu_group
            .clone()
            .unwrap();
        assert_eq!(iommu.members.len(), 2);
        assert!(iommu.members[1].description.contains("unknown"));
        assert_eq!(iommu.passthrough_functions().len(), 2);
    }

    #[test]
    fn a_group_that_omits_the_gpu_gets_it_added() {
        let devices = vec![grouped(
            device(
                "0000:17:00.0",
                0x030200,
                0x10de,
                0x2331,
                "GH100 [H100 PCIe]",
            ),
            3,
            &["0000:17:00.1"],
        )];
        let gpu = &classify(&devices, &GpuVendors::default())[0];
        let members: Vec<String> = gpu
            .iommu_group
            .as_ref()
            .unwrap()
            .members
            .iter()
            .map(|m| m.address.to_string())
            .collect();
        assert_eq!(members, vec!["0000:17:00.0", "0000:17:00.1"]);
        assert!(matches!(
            gpu.assignability(),
            Assignability::Assignable { .. }
        ));
    }

    #[test]
    fn model_names_come_from_the_bracketed_marketing_name() {
        let mut d = device(
            "0000:17:00.0",
            0x030200,
            0x10de,
            0x20b5,
            "GA100 [A100 PCIe 80GB]",
        );
        assert_eq!(model_name(&d), "A100 PCIe 80GB");
        d.product_name = Some("Tesla C2050".into());
        assert_eq!(model_name(&d), "Tesla C2050");
        d.product_name = None;
        assert_eq!(model_name(&d), "NVIDIA 20b5");
        d.vendor_id = 0x1af4;
        assert_eq!(model_name(&d), "1af4:20b5");
    }

    #[test]
    fn configured_vendors_decide_which_display_functions_are_gpus() {
        let devices = vec![
            device("0000:01:00.0", 0x030000, 0x1234, 0x1111, "QEMU VGA"),
            device("0000:03:00.0", 0x038000, 0x1234, 0x1111, "QEMU VGA"),
            device("0000:03:00.1", 0x040300, 0x8086, 0x293e, "HD Audio"),
            device("0000:04:00.0", 0x020000, 0x8086, 0x10d3, "82574L"),
            device("0000:65:00.0", 0x030000, 0x1002, 0x740f, "Instinct MI210"),
            device(
                "0000:17:00.0",
                0x030200,
                0x10de,
                0x2331,
                "GH100 [H100 PCIe]",
            ),
        ];
        let addresses = |vendors: &GpuVendors| -> Vec<String> {
            classify(&devices, vendors)
                .iter()
                .map(|g| g.address.to_string())
                .collect()
        };
        assert_eq!(addresses(&GpuVendors::default()), vec!["0000:17:00.0"]);
        let lab = GpuVendors::new([0x1234, 0x8086]).unwrap();
        assert_eq!(addresses(&lab), vec!["0000:01:00.0", "0000:03:00.0"]);
        let amd = GpuVendors::new([0x1002, NVIDIA_VENDOR_ID]).unwrap();
        assert_eq!(addresses(&amd), vec!["0000:17:00.0", "0000:65:00.0"]);
        assert_eq!(amd.to_string(), "0x1002, 0x10de");
        assert_eq!(GpuVendors::new([]), None);
    }
}
