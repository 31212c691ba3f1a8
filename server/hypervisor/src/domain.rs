//! The libvirt domain of a GPU VM, described by a typed spec and written out as domain XML.
//!
//! Every value that reaches the XML goes through quick-xml's writer, which escapes text and
//! attributes; nothing is pasted into a template. The spec covers what Passage needs: a
//! copy-on-write disk, PCI functions passed through with `managed='yes'`, vCPUs and memory kept
//! on the GPUs' NUMA node, a VNC console, a cloud-init NoCloud seed given through SMBIOS, and the
//! VM's identity in the domain's metadata.

use std::fmt;
use std::io::Cursor;

use quick_xml::Writer;
use quick_xml::events::{BytesText, Event};

use crate::pci::PciAddress;

/// The namespace of Passage's element in a domain's `<metadata>`.
pub const METADATA_NAMESPACE: &str = "https://passage-gpu.org/xmlns/vm/1";

/// Prefix of every domain Passage defines; the rest is the VM id.
pub const DOMAIN_PREFIX: &str = "passage-vm-";

/// Which libvirt domain type runs the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainKind {
    /// QEMU with KVM acceleration.
    Kvm,
    /// QEMU without acceleration (TCG), where KVM is unusable.
    Qemu,
    /// A Xen HVM guest.
    Xen,
    /// libvirt's test driver (the simulated host).
    Test,
}

impl DomainKind {
    /// The value of `<domain type=...>`.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainKind::Kvm => "kvm",
            DomainKind::Qemu => "qemu",
            DomainKind::Xen => "xen",
            DomainKind::Test => "test",
        }
    }
}

impl fmt::Display for DomainKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the VM reaches the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// QEMU's user-mode networking: no host setup; the host is 10.0.2.2 from the guest.
    User,
    /// A libvirt network, e.g. `default`.
    Named(String),
    /// A host bridge, e.g. `br0` (the usual choice under Xen).
    Bridge(String),
}

/// Where the VM's vCPUs and memory live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaPlacement {
    /// The NUMA node of the VM's GPUs.
    pub node: u32,
    /// The host CPUs of that node, when the host reports them.
    pub cpus: Vec<u32>,
}

/// Direct kernel boot: the host's kernel, initramfs and command line start the guest instead of
/// a boot loader on its disk (appliance images, or guests whose disk carries no boot loader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelBoot {
    /// Path of the kernel image on the host.
    pub kernel: String,
    /// Path of the initramfs on the host.
    pub initrd: Option<String>,
    /// The kernel's command line.
    pub cmdline: Option<String>,
}

/// Everything a GPU VM's domain is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    /// The domain type.
    pub kind: DomainKind,
    /// The Passage VM id; the domain is named `passage-vm-<id>`.
    pub vm_id: i64,
    /// The request the VM was made for.
    pub request_id: i64,
    /// The owner's user name.
    pub owner: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Path of the VM's disk volume on the host (a qcow2 over the base image).
    pub disk_path: String,
    /// The network.
    pub network: Network,
    /// The NUMA placement, when the GPUs share a node.
    pub numa: Option<NumaPlacement>,
    /// Every PCI function passed through (each GPU with its IOMMU group's functions).
    pub hostdevs: Vec<PciAddress>,
    /// The cloud-init NoCloud seed URL, given to the guest as its SMBIOS serial.
    pub seed_url: Option<String>,
    /// Boot this kernel directly instead of the disk's boot loader.
    pub kernel_boot: Option<KernelBoot>,
    /// Who made the domain: written as its UUID and into its metadata.
    pub identity: Option<DomainIdentity>,
}

/// What proves that a domain is one installation's own: the UUID it was given and the
/// installation's id in its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainIdentity {
    /// The libvirt UUID the domain is defined with.
    pub uuid: String,
    /// The id of the installation that made it.
    pub installation: String,
}

impl DomainSpec {
    /// The domain's name.
    pub fn name(&self) -> String {
        domain_name(self.vm_id)
    }

    /// The domain XML.
    pub fn to_xml(&self) -> String {
        let mut w = Writer::new_with_indent(Cursor::new(Vec::new()), b' ', 2);
        self.write(&mut w).expect("writing to memory cannot fail");
        let mut xml = String::from_utf8(w.into_inner().into_inner()).expect("UTF-8 in, UTF-8 out");
        xml.push('\n');
        xml
    }

    fn write(&self, w: &mut Writer<Cursor<Vec<u8>>>) -> std::io::Result<()> {
        let kind = self.kind;
        w.create_element("domain")
            .with_attribute(("type", kind.as_str()))
            .write_inner_content(|w| {
                text(w, "name", &self.name())?;
                if let Some(identity) = &self.identity {
                    text(w, "uuid", &identity.uuid)?;
                }
                text(
                    w,
                    "title",
                    &format!(
                        "Passage VM {} for {} (request {})",
                        self.vm_id, self.owner, self.request_id
                    ),
                )?;
                w.create_element("metadata").write_inner_content(|w| {
                    let mut element = w.create_element("passage:vm").with_attributes([
                        ("xmlns:passage", METADATA_NAMESPACE),
                        ("id", &self.vm_id.to_string()),
                        ("request", &self.request_id.to_string()),
                        ("owner", &self.owner),
                    ]);
                    if let Some(identity) = &self.identity {
                        element = element
                            .with_attribute(("installation", identity.installation.as_str()));
                    }
                    element.write_empty()?;
                    Ok(())
                })?;
                w.create_element("memory")
                    .with_attribute(("unit", "MiB"))
                    .write_text_content(BytesText::new(&self.memory_mib.to_string()))?;
                let mut vcpu = w
                    .create_element("vcpu")
                    .with_attribute(("placement", "static"));
                let cpuset = self
                    .numa
                    .as_ref()
                    .filter(|n| !n.cpus.is_empty())
                    .map(|n| cpu_list(&n.cpus));
                if let Some(cpuset) = &cpuset {
                    vcpu = vcpu.with_attribute(("cpuset", cpuset.as_str()));
                }
                vcpu.write_text_content(BytesText::new(&self.vcpus.to_string()))?;
                if let Some(numa) = &self.numa
                    && kind != DomainKind::Xen
                {
                    w.create_element("numatune").write_inner_content(|w| {
                        w.create_element("memory")
                            .with_attributes([
                                ("mode", "strict"),
                                ("nodeset", numa.node.to_string().as_str()),
                            ])
                            .write_empty()?;
                        Ok(())
                    })?;
                }
                // `nocloud-net`, not `nocloud`: cloud-init 22.4 (Debian 12) takes `ds=nocloud`
                // to mean a local seed and drops what it fetched over HTTP (DataSourceNone);
                // `nocloud-net` is the network seed for old and new versions alike.
                if let Some(seed) = &self.seed_url {
                    w.create_element("sysinfo")
                        .with_attribute(("type", "smbios"))
                        .write_inner_content(|w| {
                            w.create_element("system").write_inner_content(|w| {
                                w.create_element("entry")
                                    .with_attribute(("name", "serial"))
                                    .write_text_content(BytesText::new(&format!(
                                        "ds=nocloud-net;s={seed}"
                                    )))?;
                                Ok(())
                            })?;
                            Ok(())
                        })?;
                }
                w.create_element("os").write_inner_content(|w| {
                    let machine = match kind {
                        DomainKind::Xen => "xenfv",
                        DomainKind::Kvm | DomainKind::Qemu => "q35",
                        DomainKind::Test => "pc",
                    };
                    w.create_element("type")
                        .with_attributes([("arch", "x86_64"), ("machine", machine)])
                        .write_text_content(BytesText::new("hvm"))?;
                    match &self.kernel_boot {
                        Some(boot) => {
                            text(w, "kernel", &boot.kernel)?;
                            if let Some(initrd) = &boot.initrd {
                                text(w, "initrd", initrd)?;
                            }
                            if let Some(cmdline) = &boot.cmdline {
                                text(w, "cmdline", cmdline)?;
                            }
                        }
                        None => {
                            w.create_element("boot")
                                .with_attribute(("dev", "hd"))
                                .write_empty()?;
                        }
                    }
                    if self.seed_url.is_some() {
                        w.create_element("smbios")
                            .with_attribute(("mode", "sysinfo"))
                            .write_empty()?;
                    }
                    Ok(())
                })?;
                w.create_element("features").write_inner_content(|w| {
                    w.create_element("acpi").write_empty()?;
                    w.create_element("apic").write_empty()?;
                    Ok(())
                })?;
                if kind == DomainKind::Kvm {
                    w.create_element("cpu")
                        .with_attribute(("mode", "host-passthrough"))
                        .write_empty()?;
                }
                w.create_element("clock")
                    .with_attribute(("offset", "utc"))
                    .write_empty()?;
                text(w, "on_poweroff", "destroy")?;
                text(w, "on_reboot", "restart")?;
                text(w, "on_crash", "destroy")?;
                w.create_element("devices")
                    .write_inner_content(|w| self.write_devices(w))?;
                Ok(())
            })?;
        Ok(())
    }

    fn write_devices(&self, w: &mut Writer<Cursor<Vec<u8>>>) -> std::io::Result<()> {
        let (disk_bus, disk_dev) = match self.kind {
            DomainKind::Xen => ("xen", "xvda"),
            _ => ("virtio", "vda"),
        };
        w.create_element("disk")
            .with_attributes([("type", "file"), ("device", "disk")])
            .write_inner_content(|w| {
                w.create_element("driver")
                    .with_attributes([("name", "qemu"), ("type", "qcow2")])
                    .write_empty()?;
                w.create_element("source")
                    .with_attribute(("file", self.disk_path.as_str()))
                    .write_empty()?;
                w.create_element("target")
                    .with_attributes([("dev", disk_dev), ("bus", disk_bus)])
                    .write_empty()?;
                Ok(())
            })?;
        let (interface, source) = match &self.network {
            Network::User => ("user", None),
            Network::Named(name) => ("network", Some(("network", name.as_str()))),
            Network::Bridge(name) => ("bridge", Some(("bridge", name.as_str()))),
        };
        w.create_element("interface")
            .with_attribute(("type", interface))
            .write_inner_content(|w| {
                if let Some(attribute) = source {
                    w.create_element("source")
                        .with_attribute(attribute)
                        .write_empty()?;
                }
                if self.kind != DomainKind::Xen {
                    w.create_element("model")
                        .with_attribute(("type", "virtio"))
                        .write_empty()?;
                }
                Ok(())
            })?;
        let serial = w.create_element("serial").with_attribute(("type", "pty"));
        match self.kind {
            // QEMU's serial output is also kept on the host (through virtlogd), for admins
            // looking into a guest that does not boot.
            DomainKind::Kvm | DomainKind::Qemu => {
                serial.write_inner_content(|w| {
                    w.create_element("log")
                        .with_attributes([
                            ("file", serial_log_path(&self.name()).as_str()),
                            ("append", "off"),
                        ])
                        .write_empty()?;
                    Ok(())
                })?;
            }
            DomainKind::Xen | DomainKind::Test => {
                serial.write_empty()?;
            }
        }
        w.create_element("graphics")
            .with_attributes([
                ("type", "vnc"),
                ("port", "-1"),
                ("autoport", "yes"),
                ("listen", "127.0.0.1"),
            ])
            .write_empty()?;
        for address in &self.hostdevs {
            write_hostdev(w, address)?;
        }
        Ok(())
    }
}

/// Where a QEMU host keeps the serial console output of domain `name` (rewritten at each start).
pub fn serial_log_path(name: &str) -> String {
    format!("/var/log/libvirt/qemu/{name}-serial0.log")
}

/// The `<hostdev>` element that passes one PCI function through, alone (for hot-plug).
pub fn hostdev_xml(address: &PciAddress) -> String {
    let mut w = Writer::new_with_indent(Cursor::new(Vec::new()), b' ', 2);
    write_hostdev(&mut w, address).expect("writing to memory cannot fail");
    String::from_utf8(w.into_inner().into_inner()).expect("UTF-8 in, UTF-8 out")
}

fn write_hostdev(w: &mut Writer<Cursor<Vec<u8>>>, address: &PciAddress) -> std::io::Result<()> {
    w.create_element("hostdev")
        .with_attributes([("mode", "subsystem"), ("type", "pci"), ("managed", "yes")])
        .write_inner_content(|w| {
            w.create_element("source").write_inner_content(|w| {
                w.create_element("address")
                    .with_attributes([
                        ("domain", format!("0x{:04x}", address.domain).as_str()),
                        ("bus", format!("0x{:02x}", address.bus).as_str()),
                        ("slot", format!("0x{:02x}", address.slot).as_str()),
                        ("function", format!("0x{:x}", address.function).as_str()),
                    ])
                    .write_empty()?;
                Ok(())
            })?;
            Ok(())
        })?;
    Ok(())
}

/// Domain XML with its `<hostdev type='pci'>` elements replaced by one per address in `hostdevs`.
/// Everything else is copied event by event, so the rest of the definition is kept as it was.
pub fn replace_hostdevs(xml: &str, hostdevs: &[PciAddress]) -> String {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut w = Writer::new(Cursor::new(Vec::new()));
    let mut skipping = 0usize;
    loop {
        let event = match reader.read_event() {
            Ok(Event::Eof) | Err(_) => break,
            Ok(event) => event,
        };
        if skipping > 0 {
            match event {
                Event::Start(_) => skipping += 1,
                Event::End(_) => skipping -= 1,
                _ => {}
            }
            continue;
        }
        match &event {
            Event::Start(e) if e.name().as_ref() == b"hostdev" => {
                let pci = e
                    .attributes()
                    .flatten()
                    .any(|a| a.key.as_ref() == b"type" && a.value.as_ref() == b"pci");
                if pci {
                    skipping = 1;
                    continue;
                }
            }
            Event::End(e) if e.name().as_ref() == b"devices" => {
                for address in hostdevs {
                    write_hostdev(&mut w, address).expect("writing to memory cannot fail");
                }
            }
            _ => {}
        }
        w.write_event(event).expect("writing to memory cannot fail");
    }
    String::from_utf8(w.into_inner().into_inner()).expect("UTF-8 in, UTF-8 out")
}

/// The domain name of VM `vm_id`.
pub fn domain_name(vm_id: i64) -> String {
    format!("{DOMAIN_PREFIX}{vm_id}")
}

/// The VM id in a Passage domain's name, or `None` for any other domain.
pub fn vm_id_of(domain: &str) -> Option<i64> {
    domain
        .strip_prefix(DOMAIN_PREFIX)?
        .parse()
        .ok()
        .filter(|id| *id > 0)
}

/// A storage volume over `backing` (copy on write), as libvirt's volume XML.
pub fn cow_volume_xml(name: &str, capacity_bytes: u64, backing_path: &str) -> String {
    let mut w = Writer::new_with_indent(Cursor::new(Vec::new()), b' ', 2);
    let result: std::io::Result<()> = (|| {
        w.create_element("volume").write_inner_content(|w| {
            text(w, "name", name)?;
            w.create_element("capacity")
                .with_attribute(("unit", "bytes"))
                .write_text_content(BytesText::new(&capacity_bytes.to_string()))?;
            // Thin: the overlay grows as the guest writes.
            w.create_element("allocation")
                .with_attribute(("unit", "bytes"))
                .write_text_content(BytesText::new("0"))?;
            w.create_element("target").write_inner_content(|w| {
                w.create_element("format")
                    .with_attribute(("type", "qcow2"))
                    .write_empty()?;
                Ok(())
            })?;
            w.create_element("backingStore").write_inner_content(|w| {
                text(w, "path", backing_path)?;
                w.create_element("format")
                    .with_attribute(("type", "qcow2"))
                    .write_empty()?;
                Ok(())
            })?;
            Ok(())
        })?;
        Ok(())
    })();
    result.expect("writing to memory cannot fail");
    String::from_utf8(w.into_inner().into_inner()).expect("UTF-8 in, UTF-8 out")
}

fn text(w: &mut Writer<Cursor<Vec<u8>>>, name: &str, value: &str) -> std::io::Result<()> {
    w.create_element(name)
        .write_text_content(BytesText::new(value))?;
    Ok(())
}

/// `0-3,8,10-11` from a list of CPU numbers.
fn cpu_list(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// The CPUs of each NUMA node, from a host's capabilities XML (`virConnectGetCapabilities`).
/// Hosts that report no topology (the test driver with a custom file) give an empty list.
pub fn numa_cpus(capabilities: &str) -> Vec<(u32, Vec<u32>)> {
    let mut reader = quick_xml::Reader::from_str(capabilities);
    let mut cells: Vec<(u32, Vec<u32>)> = Vec::new();
    let mut in_cells = false;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                let attr = |name: &[u8]| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == name)
                        .and_then(|a| String::from_utf8(a.value.to_vec()).ok())
                        .and_then(|v| v.parse::<u32>().ok())
                };
                match e.name().as_ref() {
                    b"cells" => in_cells = true,
                    b"cell" if in_cells => {
                        if let Some(id) = attr(b"id") {
                            cells.push((id, Vec::new()));
                        }
                    }
                    b"cpu" if in_cells => {
                        if let (Some(id), Some(cell)) = (attr(b"id"), cells.last_mut()) {
                            cell.1.push(id);
                        }
                    }
                    _ => {}
                }
            }
            Ok(Event::End(e)) if e.name().as_ref() == b"cells" => in_cells = false,
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    cells
}

/// What Passage reads back from a defined domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainStatus {
    /// The domain's name.
    pub name: String,
    /// libvirt's state.
    pub state: DomainState,
    /// PCI functions passed through, from the live (or, when off, the persistent) XML.
    pub hostdevs: Vec<PciAddress>,
    /// The VNC port while running, when one is allocated.
    pub vnc_port: Option<u16>,
    /// Its libvirt UUID.
    pub uuid: String,
    /// The installation named in Passage's metadata, when the domain carries it.
    pub installation: Option<String>,
}

/// A domain's run state, reduced to what the portal shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    /// Running (or blocked, paused by the hypervisor for I/O).
    Running,
    /// Paused by an admin or libvirt.
    Paused,
    /// Shutting down.
    ShuttingDown,
    /// Off (defined but not running, or crashed).
    Off,
}

/// The installation id in Passage's metadata element of domain XML, if there is one.
pub fn installation_of(xml: &str) -> Option<String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut in_metadata = false;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) if e.name().as_ref() == b"metadata" => in_metadata = true,
            Ok(Event::End(e)) if e.name().as_ref() == b"metadata" => in_metadata = false,
            Ok(Event::Start(e)) | Ok(Event::Empty(e))
                if in_metadata && e.local_name().as_ref() == b"vm" =>
            {
                let passage = e.attributes().flatten().any(|a| {
                    a.key.as_ref().starts_with(b"xmlns")
                        && a.value.as_ref() == METADATA_NAMESPACE.as_bytes()
                });
                if !passage {
                    continue;
                }
                return e
                    .attributes()
                    .flatten()
                    .find(|a| a.key.as_ref() == b"installation")
                    .and_then(|a| String::from_utf8(a.value.to_vec()).ok());
            }
            Ok(Event::Eof) | Err(_) => return None,
            _ => {}
        }
    }
}

/// Reads hostdev PCI addresses and the VNC port out of domain XML.
pub fn parse_domain_xml(xml: &str) -> (Vec<PciAddress>, Option<u16>) {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut hostdevs = Vec::new();
    let mut vnc_port = None;
    let mut in_hostdev_source = false;
    let mut depth_hostdev = false;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                let attr = |name: &[u8]| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == name)
                        .and_then(|a| String::from_utf8(a.value.to_vec()).ok())
                };
                match e.name().as_ref() {
                    b"hostdev" => depth_hostdev = attr(b"type").as_deref() == Some("pci"),
                    b"source" if depth_hostdev => in_hostdev_source = true,
                    b"address" if in_hostdev_source => {
                        let hex = |name: &[u8]| {
                            attr(name).and_then(|v| {
                                u32::from_str_radix(v.trim_start_matches("0x"), 16).ok()
                            })
                        };
                        if let (Some(domain), Some(bus), Some(slot), Some(function)) =
                            (hex(b"domain"), hex(b"bus"), hex(b"slot"), hex(b"function"))
                        {
                            hostdevs.push(PciAddress {
                                domain: domain as u16,
                                bus: bus as u8,
                                slot: slot as u8,
                                function: function as u8,
                            });
                        }
                    }
                    b"graphics" if attr(b"type").as_deref() == Some("vnc") => {
                        vnc_port = attr(b"port")
                            .and_then(|p| p.parse::<i32>().ok())
                            .filter(|p| *p > 0)
                            .and_then(|p| u16::try_from(p).ok());
                    }
                    _ => {}
                }
            }
            Ok(Event::End(e)) => match e.name().as_ref() {
                b"hostdev" => depth_hostdev = false,
                b"source" => in_hostdev_source = false,
                _ => {}
            },
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    (hostdevs, vnc_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_compressed_into_ranges() {
        assert_eq!(cpu_list(&[3, 0, 1, 2, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(cpu_list(&[5]), "5");
    }

    #[test]
    fn domain_names_round_trip_and_others_are_not_ours() {
        assert_eq!(vm_id_of(&domain_name(42)), Some(42));
        assert_eq!(vm_id_of("passage-vm-x"), None);
        assert_eq!(vm_id_of("passage-vm-0"), None);
        assert_eq!(vm_id_of("web-01"), None);
    }

    #[test]
    fn the_installation_is_read_from_passages_metadata_only() {
        let mut spec = spec_for_tests();
        assert_eq!(installation_of(&spec.to_xml()), None);
        spec.identity = Some(DomainIdentity {
            uuid: "0b6a3b7e-5f0c-4c43-9d55-6a1f0e2e2c11".into(),
            installation: "abc123".into(),
        });
        let xml = spec.to_xml();
        assert!(
            xml.contains("<uuid>0b6a3b7e-5f0c-4c43-9d55-6a1f0e2e2c11</uuid>"),
            "{xml}"
        );
        assert_eq!(installation_of(&xml).as_deref(), Some("abc123"));
        // libvirt hands metadata back with its own prefix; another namespace is not ours.
        let relabelled = "<domain><metadata><p:vm xmlns:p='https://passage-gpu.org/xmlns/vm/1' \
            id='1' installation='x1'/></metadata></domain>";
        assert_eq!(installation_of(relabelled).as_deref(), Some("x1"));
        let imposter = "<domain><metadata><q:vm xmlns:q='https://example.org/vm' \
            installation='x1'/></metadata></domain>";
        assert_eq!(installation_of(imposter), None);
    }

    fn spec_for_tests() -> DomainSpec {
        DomainSpec {
            kind: DomainKind::Test,
            vm_id: 1,
            request_id: 1,
            owner: "ada".into(),
            vcpus: 1,
            memory_mib: 512,
            disk_path: "/x/a.qcow2".into(),
            network: Network::User,
            numa: None,
            hostdevs: vec![],
            seed_url: None,
            kernel_boot: None,
            identity: None,
        }
    }

    #[test]
    fn numa_cells_are_read_from_capabilities() {
        let caps = r#"<capabilities><host><topology><cells num='2'>
            <cell id='0'><memory unit='KiB'>1</memory><cpus num='2'><cpu id='0' socket_id='0'/><cpu id='1'/></cpus></cell>
            <cell id='1'><cpus num='1'><cpu id='2'/></cpus></cell>
            </cells></topology></host><guest><arch name='x86_64'/></guest></capabilities>"#;
        assert_eq!(numa_cpus(caps), vec![(0, vec![0, 1]), (1, vec![2])]);
        assert!(numa_cpus("<capabilities/>").is_empty());
    }

    #[test]
    fn hostdevs_and_the_vnc_port_are_read_back() {
        let xml = r#"<domain><devices>
            <graphics type='vnc' port='5901' autoport='yes'/>
            <hostdev mode='subsystem' type='pci' managed='yes'><source>
              <address domain='0x0000' bus='0x17' slot='0x00' function='0x1'/></source>
              <address type='pci' domain='0x0000' bus='0x06' slot='0x00' function='0x0'/></hostdev>
            </devices></domain>"#;
        let (hostdevs, port) = parse_domain_xml(xml);
        assert_eq!(hostdevs.len(), 1);
        assert_eq!(hostdevs[0].to_string(), "0000:17:00.1");
        assert_eq!(port, Some(5901));
    }

    #[test]
    fn hostdevs_are_replaced_and_the_rest_kept() {
        let xml = "<domain type='test'><name>x</name><devices><disk type='file'/>\
            <hostdev mode='subsystem' type='pci' managed='yes'><source>\
            <address domain='0x0000' bus='0x17' slot='0x00' function='0x0'/></source></hostdev>\
            </devices></domain>";
        let wanted: PciAddress = "0000:ca:00.0".parse().unwrap();
        let updated = replace_hostdevs(xml, &[wanted]);
        assert!(updated.contains("<disk type='file'/>"), "{updated}");
        assert_eq!(parse_domain_xml(&updated).0, vec![wanted]);
        assert_eq!(parse_domain_xml(&replace_hostdevs(xml, &[])).0, vec![]);
    }

    #[test]
    fn hostile_text_is_escaped() {
        let spec = DomainSpec {
            kind: DomainKind::Test,
            vm_id: 1,
            request_id: 1,
            owner: "eve'\"/><script>&".into(),
            vcpus: 1,
            memory_mib: 512,
            disk_path: "/x/a'b\".qcow2".into(),
            network: Network::Named("n</source>".into()),
            numa: None,
            hostdevs: vec![],
            seed_url: Some("http://h/seed/a&b/".into()),
            kernel_boot: None,
            identity: None,
        };
        let xml = spec.to_xml();
        assert!(!xml.contains("<script>"), "{xml}");
        assert!(xml.contains("a&amp;b"), "{xml}");
        let mut reader = quick_xml::Reader::from_str(&xml);
        loop {
            match reader.read_event() {
                Ok(Event::Eof) => break,
                Ok(_) => {}
                Err(e) => panic!("not well-formed: {e}\n{xml}"),
            }
        }
    }
}
