//! Whether a host can pass PCI devices through at all, as its libvirt says.
//!
//! A GPU can be listed with a perfect IOMMU group and still never reach a VM: the IOMMU off in
//! firmware, `vfio-pci` missing, a libvirt without host-device support. libvirt's domain
//! capabilities say whether it can assign PCI devices and with which backend (`vfio` only when
//! the host has IOMMU groups and `/dev/vfio/vfio`); the node devices say whether any IOMMU group
//! exists. This module turns both into one reason an admin can act on, or none.

use serde::Deserialize;

use crate::HypervisorError;
use crate::pci::PciDevice;

/// What libvirt's domain capabilities say about PCI host-device assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassthroughSupport {
    /// libvirt supports `<hostdev>` for this hypervisor at all.
    pub hostdev: bool,
    /// The PCI assignment backends it offers (`default`, `vfio`, `kvm`, `xen`).
    pub pci_backends: Vec<String>,
}

impl PassthroughSupport {
    /// Reads libvirt's domain capabilities document (`virConnectGetDomainCapabilities`).
    pub fn from_domain_capabilities_xml(xml: &str) -> Result<PassthroughSupport, HypervisorError> {
        let caps: xml::DomainCapabilities = quick_xml::de::from_str(xml).map_err(|e| {
            HypervisorError::InvalidDomainCapabilities {
                reason: e.to_string(),
            }
        })?;
        let hostdev = caps.devices.and_then(|d| d.hostdev);
        Ok(PassthroughSupport {
            hostdev: hostdev.as_ref().is_some_and(|h| h.supported == "yes"),
            pci_backends: hostdev
                .into_iter()
                .flat_map(|h| h.enums)
                .filter(|e| e.name == "pciBackend")
                .flat_map(|e| e.values)
                .map(|v| v.trim().to_string())
                .collect(),
        })
    }

    /// True when PCI devices can be assigned through VFIO, as Passage's domains do (Xen's own
    /// `xen` backend counts for Xen hosts).
    pub fn can_assign_pci(&self) -> bool {
        self.hostdev && self.pci_backends.iter().any(|b| b == "vfio" || b == "xen")
    }
}

/// Why no GPU of this host can be passed through, in words an admin can act on; `None` when
/// nothing on the host level stands in the way. `support` is `None` where the driver does not
/// report domain capabilities (libvirt's test driver): then only the IOMMU groups are judged.
pub fn host_passthrough_problem(
    support: Option<&PassthroughSupport>,
    devices: &[PciDevice],
) -> Option<String> {
    const ENABLE_IOMMU: &str = "enable the IOMMU (VT-d or AMD-Vi in the firmware, intel_iommu=on \
        or amd_iommu=on on the kernel command line), reboot, and make sure the vfio-pci module \
        loads";
    if let Some(support) = support {
        if !support.hostdev {
            return Some(
                "libvirt on this host does not support host devices (<hostdev>) for its \
                 hypervisor: install a libvirt and QEMU with PCI passthrough support"
                    .into(),
            );
        }
        if !support.can_assign_pci() {
            return Some(format!(
                "libvirt on this host cannot assign PCI devices with VFIO (its domain \
                 capabilities list no vfio PCI backend, so the host has no IOMMU groups or no \
                 /dev/vfio/vfio): {ENABLE_IOMMU}"
            ));
        }
    }
    if !devices.is_empty() && devices.iter().all(|d| d.iommu_group.is_none()) {
        return Some(format!(
            "the host reports no IOMMU groups for any PCI device: {ENABLE_IOMMU}"
        ));
    }
    None
}

/// The subset of libvirt's domain capabilities schema read here.
mod xml {
    use super::Deserialize;

    #[derive(Deserialize)]
    pub struct DomainCapabilities {
        pub devices: Option<Devices>,
    }

    #[derive(Deserialize)]
    pub struct Devices {
        pub hostdev: Option<Hostdev>,
    }

    #[derive(Deserialize)]
    pub struct Hostdev {
        #[serde(rename = "@supported")]
        pub supported: String,
        #[serde(default, rename = "enum")]
        pub enums: Vec<Enum>,
    }

    #[derive(Deserialize)]
    pub struct Enum {
        #[serde(rename = "@name")]
        pub name: String,
        #[serde(default, rename = "value")]
        pub values: Vec<String>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = include_str!("../tests/fixtures/lab-host/domcapabilities.xml");
    const NO_IOMMU: &str = include_str!("../tests/fixtures/no-iommu-host/domcapabilities.xml");

    #[test]
    fn a_host_with_an_iommu_offers_vfio() {
        let support = PassthroughSupport::from_domain_capabilities_xml(LAB).unwrap();
        assert!(support.hostdev);
        assert_eq!(support.pci_backends, vec!["default", "vfio"]);
        assert!(support.can_assign_pci());
        assert_eq!(host_passthrough_problem(Some(&support), &[]), None);
    }

    #[test]
    fn a_host_without_an_iommu_says_what_to_do() {
        let support = PassthroughSupport::from_domain_capabilities_xml(NO_IOMMU).unwrap();
        assert!(support.hostdev);
        assert!(support.pci_backends.is_empty());
        let problem = host_passthrough_problem(Some(&support), &[]).unwrap();
        assert!(problem.contains("no vfio PCI backend"), "{problem}");
        assert!(problem.contains("intel_iommu=on"), "{problem}");
    }

    #[test]
    fn hostdev_unsupported_and_bad_xml_are_told_apart() {
        let caps =
            "<domainCapabilities><devices><hostdev supported='no'/></devices></domainCapabilities>";
        let support = PassthroughSupport::from_domain_capabilities_xml(caps).unwrap();
        assert!(!support.hostdev);
        assert!(
            host_passthrough_problem(Some(&support), &[])
                .unwrap()
                .contains("does not support host devices")
        );
        assert!(matches!(
            PassthroughSupport::from_domain_capabilities_xml("<domainCapabilities>"),
            Err(HypervisorError::InvalidDomainCapabilities { .. })
        ));
    }

    #[test]
    fn without_domain_capabilities_the_groups_decide() {
        let xml = "<device><name>pci_0000_01_00_0</name><parent>computer</parent><capability type='pci'><class>0x030000</class><domain>0</domain><bus>1</bus><slot>0</slot><function>0</function><product id='0x1111'/><vendor id='0x1234'/></capability></device>";
        let ungrouped = PciDevice::from_node_device_xml(xml).unwrap().unwrap();
        let problem = host_passthrough_problem(None, std::slice::from_ref(&ungrouped)).unwrap();
        assert!(
            problem.starts_with("the host reports no IOMMU groups"),
            "{problem}"
        );
        let mut grouped = ungrouped;
        grouped.iommu_group = Some((8, vec![grouped.address]));
        assert_eq!(host_passthrough_problem(None, &[grouped]), None);
    }
}
