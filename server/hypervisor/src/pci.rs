//! PCI devices as libvirt describes them in node-device XML.
//!
//! libvirt reports every PCI function of a host as a node device. This module turns that XML into
//! typed values and nothing more: deciding which devices are GPUs lives in [`crate::gpu`].

use std::fmt;
use std::str::FromStr;

use crate::HypervisorError;

/// A PCI function address: domain, bus, slot (device) and function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// PCI segment (domain), usually 0.
    pub domain: u16,
    /// Bus number.
    pub bus: u8,
    /// Slot (device) number, 0..32.
    pub slot: u8,
    /// Function number, 0..8.
    pub function: u8,
}

impl PciAddress {
    /// True when `other` is another function of the same physical device (same domain, bus, slot).
    pub fn same_device(&self, other: &PciAddress) -> bool {
        self.domain == other.domain && self.bus == other.bus && self.slot == other.slot
    }

    /// The libvirt node-device name of this function, e.g. `pci_0000_17_00_0`.
    pub fn node_device_name(&self) -> String {
        format!(
            "pci_{:04x}_{:02x}_{:02x}_{:x}",
            self.domain, self.bus, self.slot, self.function
        )
    }
}

impl fmt::Display for PciAddress {
    /// The canonical `dddd:bb:ss.f` form used by Linux and `nvidia-smi`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.slot, self.function
        )
    }
}

impl FromStr for PciAddress {
    type Err = HypervisorError;

    /// Parses `dddd:bb:ss.f` or the short `bb:ss.f` (domain 0), in hexadecimal.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || HypervisorError::InvalidPciAddress(s.to_string());
        let (rest, function) = s.rsplit_once('.').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (domain, bus, slot) = match parts.as_slice() {
            [d, b, s] => (*d, *b, *s),
            [b, s] => ("0", *b, *s),
            _ => return Err(bad()),
        };
        let address = PciAddress {
            domain: u16::from_str_radix(domain, 16).map_err(|_| bad())?,
            bus: u8::from_str_radix(bus, 16).map_err(|_| bad())?,
            slot: u8::from_str_radix(slot, 16).map_err(|_| bad())?,
            function: u8::from_str_radix(function, 16).map_err(|_| bad())?,
        };
        if address.slot > 31 || address.function > 7 {
            return Err(bad());
        }
        Ok(address)
    }
}

/// One PCIe link reading: speed in GT/s and lane count.
#[derive(Debug, Clone, PartialEq)]
pub struct PcieLink {
    /// Transfer rate per lane in GT/s (2.5, 5, 8, 16, 32, 64).
    pub speed_gts: f64,
    /// Number of lanes.
    pub width: u32,
}

impl PcieLink {
    /// The PCIe generation that runs at this speed, if it is a standard one.
    pub fn generation(&self) -> Option<u8> {
        const GENERATIONS: [(f64, u8); 6] = [
            (2.5, 1),
            (5.0, 2),
            (8.0, 3),
            (16.0, 4),
            (32.0, 5),
            (64.0, 6),
        ];
        GENERATIONS
            .iter()
            .find(|(speed, _)| (self.speed_gts - speed).abs() < 0.01)
            .map(|(_, generation)| *generation)
    }
}

impl fmt::Display for PcieLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.generation() {
            Some(generation) => write!(f, "PCIe Gen{generation} x{}", self.width),
            None => write!(f, "{} GT/s x{}", self.speed_gts, self.width),
        }
    }
}

/// A PCI function on a host, as reported by libvirt.
#[derive(Debug, Clone, PartialEq)]
pub struct PciDevice {
    /// libvirt's node-device name, e.g. `pci_0000_17_00_0`.
    pub name: String,
    /// Where the function sits on the bus.
    pub address: PciAddress,
    /// The 24-bit class code (base class, subclass, programming interface), when libvirt reports it.
    pub class: Option<u32>,
    /// PCI vendor id, e.g. 0x10de for NVIDIA.
    pub vendor_id: u16,
    /// The vendor's name from the host's PCI id database, if known.
    pub vendor_name: Option<String>,
    /// PCI device (product) id.
    pub product_id: u16,
    /// The product's name from the host's PCI id database, if known.
    pub product_name: Option<String>,
    /// The IOMMU group number and the addresses of every function in it (this one included).
    pub iommu_group: Option<(u32, Vec<PciAddress>)>,
    /// The NUMA node the device is attached to, when the host reports one.
    pub numa_node: Option<u32>,
    /// Link capability (the most the device supports).
    pub link_max: Option<PcieLink>,
    /// Link status (what was negotiated).
    pub link_current: Option<PcieLink>,
    /// The host driver bound to it now (`nvidia`, `vfio-pci`, ...), when known.
    pub driver: Option<String>,
    /// The node device this one hangs off (a bridge, or `computer` at the top).
    pub parent: Option<String>,
}

impl PciDevice {
    /// Base class of the class code (0x03 display, 0x04 multimedia, 0x06 bridge, ...).
    pub fn base_class(&self) -> Option<u8> {
        self.class.map(|c| (c >> 16) as u8)
    }

    /// True for PCI-to-PCI bridges and other bridge functions, which stay with the host.
    pub fn is_bridge(&self) -> bool {
        self.base_class() == Some(0x06)
    }

    /// A short human description: the product name, else the class, else the ids.
    pub fn description(&self) -> String {
        if let Some(product) = &self.product_name {
            return product.clone();
        }
        match self.class {
            Some(class) => format!(
                "{} [{:04x}:{:04x}]",
                class_label(class),
                self.vendor_id,
                self.product_id
            ),
            None => format!(
                "PCI device [{:04x}:{:04x}]",
                self.vendor_id, self.product_id
            ),
        }
    }

    /// Parses one node device's XML (`virNodeDeviceGetXMLDesc`). Returns `Ok(None)` for node
    /// devices that are not PCI functions.
    pub fn from_node_device_xml(xml: &str) -> Result<Option<Self>, HypervisorError> {
        let device: xml::Device =
            quick_xml::de::from_str(xml).map_err(|e| HypervisorError::InvalidNodeDeviceXml {
                reason: e.to_string(),
            })?;
        let Some(pci) = device.capability.into_iter().find(|c| c.kind == "pci") else {
            return Ok(None);
        };
        let invalid = |reason: String| HypervisorError::InvalidNodeDeviceXml {
            reason: format!("{}: {reason}", device.name),
        };
        let number = |field: &str, value: Option<&str>| -> Result<u32, HypervisorError> {
            let value = value.ok_or_else(|| invalid(format!("missing <{field}>")))?;
            parse_number(value).ok_or_else(|| invalid(format!("bad <{field}> {value:?}")))
        };
        let narrow = |field: &str, value: u32, max: u32| {
            if value > max {
                Err(invalid(format!("<{field}> {value} is out of range")))
            } else {
                Ok(value)
            }
        };
        let address = PciAddress {
            domain: narrow("domain", number("domain", pci.domain.as_deref())?, 0xffff)? as u16,
            bus: narrow("bus", number("bus", pci.bus.as_deref())?, 0xff)? as u8,
            slot: narrow("slot", number("slot", pci.slot.as_deref())?, 31)? as u8,
            function: narrow("function", number("function", pci.function.as_deref())?, 7)? as u8,
        };
        let id = |field: &str, tag: Option<&xml::Named>| -> Result<u16, HypervisorError> {
            let tag = tag.ok_or_else(|| invalid(format!("missing <{field}>")))?;
            let value = number(field, Some(&tag.id))?;
            Ok(narrow(field, value, 0xffff)? as u16)
        };
        let iommu_group = match &pci.iommu_group {
            Some(group) => {
                let members = group
                    .address
                    .iter()
                    .map(|a| {
                        Ok(PciAddress {
                            domain: narrow(
                                "iommuGroup domain",
                                number("domain", Some(&a.domain))?,
                                0xffff,
                            )? as u16,
                            bus: narrow("iommuGroup bus", number("bus", Some(&a.bus))?, 0xff)?
                                as u8,
                            slot: narrow("iommuGroup slot", number("slot", Some(&a.slot))?, 31)?
                                as u8,
                            function: narrow(
                                "iommuGroup function",
                                number("function", Some(&a.function))?,
                                7,
                            )? as u8,
                        })
                    })
                    .collect::<Result<Vec<_>, HypervisorError>>()?;
                Some((number("iommuGroup number", Some(&group.number))?, members))
            }
            None => None,
        };
        let link = |validity: &str| {
            pci.pci_express.as_ref().and_then(|express| {
                express
                    .link
                    .iter()
                    .find(|l| l.validity.as_deref() == Some(validity))
                    .and_then(|l| {
                        Some(PcieLink {
                            speed_gts: l.speed.as_deref()?.parse().ok()?,
                            width: l.width.as_deref()?.parse().ok()?,
                        })
                    })
            })
        };
        let named = |tag: &Option<xml::Named>| {
            tag.as_ref()
                .and_then(|t| t.name.clone())
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
        };
        Ok(Some(PciDevice {
            address,
            class: match pci.class.as_deref() {
                Some(class) => Some(number("class", Some(class))?),
                None => None,
            },
            vendor_id: id("vendor", pci.vendor.as_ref())?,
            vendor_name: named(&pci.vendor),
            product_id: id("product", pci.product.as_ref())?,
            product_name: named(&pci.product),
            iommu_group,
            numa_node: match &pci.numa {
                Some(numa) => Some(number("numa node", Some(&numa.node))?),
                None => None,
            },
            link_max: link("cap"),
            link_current: link("sta"),
            driver: device.driver.and_then(|d| d.name).filter(|n| !n.is_empty()),
            parent: device.parent.filter(|p| !p.is_empty()),
            name: device.name,
        }))
    }
}

/// A short label for a PCI class code.
pub fn class_label(class: u32) -> &'static str {
    match class >> 8 {
        0x0300 => "VGA controller",
        0x0302 => "3D controller",
        0x0380 => "Display controller",
        0x0403 => "Audio device",
        0x0200 => "Ethernet controller",
        0x0207 => "InfiniBand controller",
        0x0108 => "NVMe controller",
        0x0106 => "SATA controller",
        0x0600 => "Host bridge",
        0x0604 => "PCI bridge",
        0x0680 => "Bridge",
        0x0c03 => "USB controller",
        _ => match class >> 16 {
            0x01 => "Storage controller",
            0x02 => "Network controller",
            0x03 => "Display controller",
            0x04 => "Multimedia controller",
            0x06 => "Bridge",
            _ => "PCI device",
        },
    }
}

/// Parses a number written in decimal or with a `0x` prefix in hexadecimal, as libvirt mixes both.
fn parse_number(text: &str) -> Option<u32> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The subset of libvirt's node-device schema that the inventory reads.
mod xml {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Device {
        pub name: String,
        pub parent: Option<String>,
        pub driver: Option<Driver>,
        #[serde(default)]
        pub capability: Vec<Capability>,
    }

    #[derive(Deserialize)]
    pub struct Driver {
        pub name: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct Capability {
        #[serde(rename = "@type")]
        pub kind: String,
        pub class: Option<String>,
        pub domain: Option<String>,
        pub bus: Option<String>,
        pub slot: Option<String>,
        pub function: Option<String>,
        pub product: Option<Named>,
        pub vendor: Option<Named>,
        #[serde(rename = "iommuGroup")]
        pub iommu_group: Option<IommuGroup>,
        pub numa: Option<Numa>,
        #[serde(rename = "pci-express")]
        pub pci_express: Option<PciExpress>,
    }

    #[derive(Deserialize)]
    pub struct Named {
        #[serde(rename = "@id")]
        pub id: String,
        #[serde(rename = "$text")]
        pub name: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct IommuGroup {
        #[serde(rename = "@number")]
        pub number: String,
        #[serde(default)]
        pub address: Vec<Address>,
    }

    #[derive(Deserialize)]
    pub struct Address {
        #[serde(rename = "@domain")]
        pub domain: String,
        #[serde(rename = "@bus")]
        pub bus: String,
        #[serde(rename = "@slot")]
        pub slot: String,
        #[serde(rename = "@function")]
        pub function: String,
    }

    #[derive(Deserialize)]
    pub struct Numa {
        #[serde(rename = "@node")]
        pub node: String,
    }

    #[derive(Deserialize)]
    pub struct PciExpress {
        #[serde(default)]
        pub link: Vec<Link>,
    }

    #[derive(Deserialize)]
    pub struct Link {
        #[serde(rename = "@validity")]
        pub validity: Option<String>,
        #[serde(rename = "@speed")]
        pub speed: Option<String>,
        #[serde(rename = "@width")]
        pub width: Option<String>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H100_XML: &str = r#"
<device>
  <name>pci_0000_17_00_0</name>
  <path>/sys/devices/pci0000:16/0000:16:02.0/0000:17:00.0</path>
  <parent>pci_0000_16_02_0</parent>
  <driver>
    <name>nvidia</name>
  </driver>
  <capability type='pci'>
    <class>0x030200</class>
    <domain>0</domain>
    <bus>23</bus>
    <slot>0</slot>
    <function>0</function>
    <product id='0x2331'>GH100 [H100 PCIe]</product>
    <vendor id='0x10de'>NVIDIA Corporation</vendor>
    <iommuGroup number='40'>
      <address domain='0x0000' bus='0x17' slot='0x00' function='0x0'/>
    </iommuGroup>
    <numa node='1'/>
    <pci-express>
      <link validity='cap' port='0' speed='32' width='16'/>
      <link validity='sta' speed='16' width='8'/>
    </pci-express>
  </capability>
</device>"#;

    #[test]
    fn parses_a_gpu_node_device() {
        let device = PciDevice::from_node_device_xml(H100_XML).unwrap().unwrap();
        assert_eq!(device.name, "pci_0000_17_00_0");
        assert_eq!(device.address.to_string(), "0000:17:00.0");
        assert_eq!(device.class, Some(0x030200));
        assert_eq!(device.vendor_id, 0x10de);
        assert_eq!(device.product_id, 0x2331);
        assert_eq!(device.product_name.as_deref(), Some("GH100 [H100 PCIe]"));
        assert_eq!(device.vendor_name.as_deref(), Some("NVIDIA Corporation"));
        assert_eq!(device.numa_node, Some(1));
        assert_eq!(device.driver.as_deref(), Some("nvidia"));
        let (group, members) = device.iommu_group.unwrap();
        assert_eq!(group, 40);
        assert_eq!(members, vec!["0000:17:00.0".parse().unwrap()]);
        assert_eq!(device.link_max.unwrap().to_string(), "PCIe Gen5 x16");
        assert_eq!(device.link_current.unwrap().to_string(), "PCIe Gen4 x8");
    }

    #[test]
    fn non_pci_node_devices_are_skipped() {
        let xml = "<device><name>computer</name><capability type='system'><hardware/></capability></device>";
        assert_eq!(PciDevice::from_node_device_xml(xml).unwrap(), None);
    }

    #[test]
    fn malformed_xml_is_an_error_not_a_panic() {
        for xml in [
            "<device><name>x</name>",
            "not xml",
            "<device><name>pci_x</name><capability type='pci'><domain>0</domain></capability></device>",
            "<device><name>pci_x</name><capability type='pci'><domain>0</domain><bus>999</bus><slot>0</slot><function>0</function><vendor id='0x10de'/><product id='0x1'/></capability></device>",
        ] {
            assert!(
                matches!(
                    PciDevice::from_node_device_xml(xml),
                    Err(HypervisorError::InvalidNodeDeviceXml { .. })
                ),
                "{xml}"
            );
        }
    }

    #[test]
    fn optional_fields_may_be_absent() {
        let xml = "<device><name>pci_0000_00_01_0</name><capability type='pci'><domain>0</domain><bus>0</bus><slot>1</slot><function>0</function><product id='0x1111'/><vendor id='0x1234'/></capability></device>";
        let device = PciDevice::from_node_device_xml(xml).unwrap().unwrap();
        assert_eq!(device.class, None);
        assert_eq!(device.iommu_group, None);
        assert_eq!(device.numa_node, None);
        assert_eq!(device.product_name, None);
        assert_eq!(device.description(), "PCI device [1234:1111]");
    }

    #[test]
    fn pci_addresses_round_trip() {
        let address: PciAddress = "0000:af:1f.7".parse().unwrap();
        assert_eq!(address.to_string(), "0000:af:1f.7");
        assert_eq!(address.node_device_name(), "pci_0000_af_1f_7");
        assert_eq!(
            "17:00.1".parse::<PciAddress>().unwrap().to_string(),
            "0000:17:00.1"
        );
        for bad in [
            "",
            "17:00",
            "0000:17:00.8",
            "0000:17:20.0",
            "zz:00.0",
            "1:2:3:4.0",
        ] {
            assert!(bad.parse::<PciAddress>().is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_link_speeds_are_shown_raw() {
        let link = PcieLink {
            speed_gts: 12.0,
            width: 4,
        };
        assert_eq!(link.generation(), None);
        assert_eq!(link.to_string(), "12 GT/s x4");
    }
}
