//! Domain and volume operations on a host: what provisioning, the VM lifecycle, hot-plug,
//! reconciliation and the console need. Each call is idempotent where the caller may repeat it
//! after a crash (removing what is already gone is not an error).

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::{Error as VirtError, ErrorNumber};
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::sys;

use crate::domain::{
    DOMAIN_PREFIX, DomainKind, DomainState, DomainStatus, cow_volume_xml, hostdev_xml,
    installation_of, numa_cpus, parse_domain_xml, replace_hostdevs,
};
use crate::host::call_error;
use crate::{HypervisorError, LibvirtHost, PciAddress, Volume};

/// What a host offers to the domains Passage defines on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// The driver behind the URI: `QEMU`, `Xen` or `TEST`.
    pub driver: String,
    /// True when the host offers KVM-accelerated x86_64 guests.
    pub kvm: bool,
    /// The CPUs of each NUMA node (empty when the host does not say).
    pub numa: Vec<(u32, Vec<u32>)>,
}

impl HostFacts {
    /// The domain type for a request's hypervisor (`kvm` or `xen`) on this host, or why the
    /// host cannot run it. The test driver simulates either.
    pub fn domain_kind(&self, hypervisor: &str, allow_tcg: bool) -> Result<DomainKind, String> {
        match (self.driver.as_str(), hypervisor) {
            ("TEST", _) => Ok(DomainKind::Test),
            ("Xen", "xen") => Ok(DomainKind::Xen),
            ("QEMU", "kvm") if self.kvm && !allow_tcg => Ok(DomainKind::Kvm),
            ("QEMU", "kvm") if allow_tcg => Ok(DomainKind::Qemu),
            ("QEMU", "kvm") => Err("the host offers no KVM acceleration".into()),
            (driver, wanted) => Err(format!("a {driver} host cannot run a {wanted} guest")),
        }
    }

    /// The CPUs of NUMA node `node`, empty when unknown.
    pub fn cpus_of(&self, node: u32) -> Vec<u32> {
        self.numa
            .iter()
            .find(|(id, _)| *id == node)
            .map(|(_, cpus)| cpus.clone())
            .unwrap_or_default()
    }
}

fn is_missing(e: &VirtError) -> bool {
    matches!(
        e.code(),
        ErrorNumber::NoDomain | ErrorNumber::NoStorageVolume | ErrorNumber::NoStoragePool
    )
}

fn lookup(uri: &str, conn: &Connect, name: &str) -> Result<Option<Domain>, HypervisorError> {
    match Domain::lookup_by_name(conn, name) {
        Ok(domain) => Ok(Some(domain)),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(call_error(uri, "virDomainLookupByName", e)),
    }
}

fn state_of(uri: &str, domain: &Domain) -> Result<DomainState, HypervisorError> {
    let info = domain
        .get_info()
        .map_err(|e| call_error(uri, "virDomainGetInfo", e))?;
    Ok(match info.state {
        sys::VIR_DOMAIN_RUNNING | sys::VIR_DOMAIN_BLOCKED => DomainState::Running,
        sys::VIR_DOMAIN_PAUSED | sys::VIR_DOMAIN_PMSUSPENDED => DomainState::Paused,
        sys::VIR_DOMAIN_SHUTDOWN => DomainState::ShuttingDown,
        _ => DomainState::Off,
    })
}

fn status_of(uri: &str, domain: &Domain) -> Result<DomainStatus, HypervisorError> {
    let name = domain
        .get_name()
        .map_err(|e| call_error(uri, "virDomainGetName", e))?;
    let state = state_of(uri, domain)?;
    let xml = domain
        .get_xml_desc(0)
        .map_err(|e| call_error(uri, "virDomainGetXMLDesc", e))?;
    let (hostdevs, vnc_port) = parse_domain_xml(&xml);
    let uuid = domain
        .get_uuid_string()
        .map_err(|e| call_error(uri, "virDomainGetUUIDString", e))?;
    Ok(DomainStatus {
        name,
        state,
        hostdevs,
        uuid,
        installation: installation_of(&xml),
        vnc_port: if state == DomainState::Off {
            None
        } else {
            vnc_port
        },
    })
}

fn pool(uri: &str, conn: &Connect, name: &str) -> Result<StoragePool, HypervisorError> {
    StoragePool::lookup_by_name(conn, name)
        .map_err(|e| call_error(uri, "virStoragePoolLookupByName", e))
}

impl LibvirtHost {
    /// The host's driver, KVM support and NUMA layout.
    pub async fn facts(&self) -> Result<HostFacts, HypervisorError> {
        self.with_connection("facts", |uri, conn| {
            let driver = conn
                .get_type()
                .map_err(|e| call_error(uri, "virConnectGetType", e))?;
            let capabilities = conn
                .get_capabilities()
                .map_err(|e| call_error(uri, "virConnectGetCapabilities", e))?;
            Ok(HostFacts {
                driver,
                kvm: capabilities.contains("<domain type='kvm'")
                    || capabilities.contains("<domain type=\"kvm\""),
                numa: numa_cpus(&capabilities),
            })
        })
        .await
    }

    /// Creates volume `name` in `pool_name` as a copy-on-write layer over `backing_path`.
    pub async fn create_cow_volume(
        &self,
        pool_name: &str,
        name: &str,
        capacity_bytes: u64,
        backing_path: &str,
    ) -> Result<Volume, HypervisorError> {
        let xml = cow_volume_xml(name, capacity_bytes, backing_path);
        let pool_name = pool_name.to_string();
        self.with_connection("create_cow_volume", move |uri, conn| {
            let pool = pool(uri, conn, &pool_name)?;
            let volume = StorageVol::create_xml(&pool, &xml, 0)
                .map_err(|e| call_error(uri, "virStorageVolCreateXML", e))?;
            let path = volume
                .get_path()
                .map_err(|e| call_error(uri, "virStorageVolGetPath", e))?;
            Ok(Volume {
                path,
                capacity_bytes,
            })
        })
        .await
    }

    /// Deletes volume `name` in `pool_name`; true when it existed.
    pub async fn delete_volume(
        &self,
        pool_name: &str,
        name: &str,
    ) -> Result<bool, HypervisorError> {
        let (pool_name, name) = (pool_name.to_string(), name.to_string());
        self.with_connection("delete_volume", move |uri, conn| {
            let pool = match StoragePool::lookup_by_name(conn, &pool_name) {
                Ok(pool) => pool,
                Err(e) if is_missing(&e) => return Ok(false),
                Err(e) => return Err(call_error(uri, "virStoragePoolLookupByName", e)),
            };
            let volume = match StorageVol::lookup_by_name(&pool, &name) {
                Ok(volume) => volume,
                Err(e) if is_missing(&e) => return Ok(false),
                Err(e) => return Err(call_error(uri, "virStorageVolLookupByName", e)),
            };
            volume
                .delete(0)
                .map_err(|e| call_error(uri, "virStorageVolDelete", e))?;
            Ok(true)
        })
        .await
    }

    /// Defines a domain from `xml` and starts it. If starting fails the definition is removed
    /// again, so that a failure leaves no domain behind.
    pub async fn define_and_start(&self, xml: &str) -> Result<DomainStatus, HypervisorError> {
        let xml = xml.to_string();
        self.with_connection("define_and_start", move |uri, conn| {
            let domain = Domain::define_xml(conn, &xml)
                .map_err(|e| call_error(uri, "virDomainDefineXML", e))?;
            if let Err(e) = domain.create() {
                let error = call_error(uri, "virDomainCreate", e);
                if let Err(undo) = domain.undefine() {
                    tracing::warn!(error = %undo.message(), "undefining a domain that did not start failed");
                }
                return Err(error);
            }
            status_of(uri, &domain)
        })
        .await
    }

    /// The domain `name` as it is now, or `None` when it is not defined.
    pub async fn domain(&self, name: &str) -> Result<Option<DomainStatus>, HypervisorError> {
        let name = name.to_string();
        self.with_connection("domain", move |uri, conn| match lookup(uri, conn, &name)? {
            Some(domain) => status_of(uri, &domain).map(Some),
            None => Ok(None),
        })
        .await
    }

    /// The XML of domain `name` as libvirt has it now.
    pub async fn domain_xml(&self, name: &str) -> Result<String, HypervisorError> {
        self.on_domain("domain_xml", name, |uri, _, domain| {
            domain
                .get_xml_desc(0)
                .map_err(|e| call_error(uri, "virDomainGetXMLDesc", e))
        })
        .await
    }

    /// Every domain Passage defined on this host (by name), running or not.
    pub async fn passage_domains(&self) -> Result<Vec<DomainStatus>, HypervisorError> {
        self.with_connection("passage_domains", |uri, conn| {
            let domains = conn
                .list_all_domains(0)
                .map_err(|e| call_error(uri, "virConnectListAllDomains", e))?;
            let mut ours = Vec::new();
            for domain in domains {
                let name = domain
                    .get_name()
                    .map_err(|e| call_error(uri, "virDomainGetName", e))?;
                if name.starts_with(DOMAIN_PREFIX) {
                    ours.push(status_of(uri, &domain)?);
                }
            }
            Ok(ours)
        })
        .await
    }

    /// Starts a defined domain that is off.
    pub async fn start(&self, name: &str) -> Result<(), HypervisorError> {
        self.on_domain("start", name, |uri, _, domain| {
            if state_of(uri, domain)? == DomainState::Off {
                domain
                    .create()
                    .map_err(|e| call_error(uri, "virDomainCreate", e))?;
            }
            Ok(())
        })
        .await
    }

    /// Reboots a running domain.
    pub async fn reboot(&self, name: &str) -> Result<(), HypervisorError> {
        self.on_domain("reboot", name, |uri, _, domain| {
            domain
                .reboot(0)
                .map_err(|e| call_error(uri, "virDomainReboot", e))
        })
        .await
    }

    /// Asks the guest to shut down (ACPI) and waits up to `grace`; a guest that is still running
    /// then is powered off. Returns true when the guest shut down by itself.
    pub async fn shut_down(&self, name: &str, grace: Duration) -> Result<bool, HypervisorError> {
        let asked = self
            .on_domain("shut_down", name, |uri, _, domain| {
                if state_of(uri, domain)? == DomainState::Off {
                    return Ok(false);
                }
                domain
                    .shutdown()
                    .map_err(|e| call_error(uri, "virDomainShutdown", e))?;
                Ok(true)
            })
            .await?;
        if !asked {
            return Ok(true);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            match self.domain(name).await? {
                None => return Ok(true),
                Some(status) if status.state == DomainState::Off => return Ok(true),
                Some(_) => {}
            }
        }
        self.power_off(name).await?;
        Ok(false)
    }

    /// Powers a domain off at once (`virDomainDestroy`); nothing happens when it is off.
    pub async fn power_off(&self, name: &str) -> Result<(), HypervisorError> {
        self.on_domain("power_off", name, |uri, _, domain| {
            if state_of(uri, domain)? != DomainState::Off {
                domain
                    .destroy()
                    .map_err(|e| call_error(uri, "virDomainDestroy", e))?;
            }
            Ok(())
        })
        .await
    }

    /// Powers off and undefines domain `name`; true when it existed.
    pub async fn remove_domain(&self, name: &str) -> Result<bool, HypervisorError> {
        self.remove_domain_if(name, None).await
    }

    /// Powers off and undefines domain `name` only when its UUID is `uuid` (when given): a
    /// domain of that name with another UUID is someone else's and is left alone
    /// ([`HypervisorError::NotOurs`]). False when there is no such domain.
    pub async fn remove_domain_if(
        &self,
        name: &str,
        uuid: Option<&str>,
    ) -> Result<bool, HypervisorError> {
        let name = name.to_string();
        let uuid = uuid.map(str::to_string);
        self.with_connection("remove_domain_if", move |uri, conn| {
            let Some(domain) = lookup(uri, conn, &name)? else {
                return Ok(false);
            };
            if let Some(wanted) = &uuid {
                let found = domain
                    .get_uuid_string()
                    .map_err(|e| call_error(uri, "virDomainGetUUIDString", e))?;
                if !found.eq_ignore_ascii_case(wanted) {
                    return Err(HypervisorError::NotOurs {
                        domain: name.clone(),
                        uuid: found,
                    });
                }
            }
            if state_of(uri, &domain)? != DomainState::Off
                && let Err(e) = domain.destroy()
                && !is_missing(&e)
            {
                return Err(call_error(uri, "virDomainDestroy", e));
            }
            match domain.undefine() {
                Ok(()) => Ok(true),
                Err(e) if is_missing(&e) => Ok(true),
                Err(e) => Err(call_error(uri, "virDomainUndefine", e)),
            }
        })
        .await
    }

    /// Passes PCI function `address` through to domain `name`: into the running guest (when it
    /// runs) and into its persistent definition. A driver without device hot-plug (the test
    /// driver) gets the definition changed for the next start.
    pub async fn attach_hostdev(
        &self,
        name: &str,
        address: &PciAddress,
    ) -> Result<Hotplug, HypervisorError> {
        self.change_hostdev(name, *address, true).await
    }

    /// Takes PCI function `address` away from domain `name`, live and persistent (or, without
    /// hot-plug support, from the definition for the next start).
    pub async fn detach_hostdev(
        &self,
        name: &str,
        address: &PciAddress,
    ) -> Result<Hotplug, HypervisorError> {
        self.change_hostdev(name, *address, false).await
    }

    async fn change_hostdev(
        &self,
        name: &str,
        address: PciAddress,
        attach: bool,
    ) -> Result<Hotplug, HypervisorError> {
        let xml = hostdev_xml(&address);
        self.on_domain("change_hostdev", name, move |uri, conn, domain| {
            let flags = affect_flags(uri, domain)?;
            let (call, result) = if attach {
                (
                    "virDomainAttachDeviceFlags",
                    domain.attach_device_flags(&xml, flags),
                )
            } else {
                (
                    "virDomainDetachDeviceFlags",
                    domain.detach_device_flags(&xml, flags),
                )
            };
            match result {
                Ok(_) if flags & sys::VIR_DOMAIN_AFFECT_LIVE != 0 => Ok(Hotplug::Live),
                Ok(_) => Ok(Hotplug::NextStart),
                Err(e) if e.code() == ErrorNumber::NoSupport => {
                    redefine_hostdevs(uri, conn, domain, address, attach)?;
                    Ok(Hotplug::NextStart)
                }
                Err(e) => Err(call_error(uri, call, e)),
            }
        })
        .await
    }

    /// A socket connected to the domain's VNC server, handed over by libvirt (local hosts only:
    /// the descriptor travels over libvirt's UNIX socket).
    #[allow(unsafe_code)]
    pub async fn open_vnc(&self, name: &str) -> Result<OwnedFd, HypervisorError> {
        self.on_domain("open_vnc", name, |uri, _, domain| {
            let fd = domain
                .open_graphics_fd(0, sys::VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH)
                .map_err(|e| call_error(uri, "virDomainOpenGraphicsFD", e))?;
            // SAFETY: libvirt returned a new descriptor that nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
        })
        .await
    }

    async fn on_domain<T, F>(
        &self,
        operation: &'static str,
        name: &str,
        call: F,
    ) -> Result<T, HypervisorError>
    where
        T: Send + 'static,
        F: FnOnce(&str, &Connect, &Domain) -> Result<T, HypervisorError> + Send + 'static,
    {
        let name = name.to_string();
        self.with_connection(operation, move |uri, conn| {
            match lookup(uri, conn, &name)? {
                Some(domain) => call(uri, conn, &domain),
                None => Err(HypervisorError::NoDomain {
                    uri: uri.to_string(),
                    name,
                }),
            }
        })
        .await
    }
}

/// How a hot-plug took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hotplug {
    /// In the running guest now, and in its definition.
    Live,
    /// In the definition only: the guest sees it from its next start.
    NextStart,
}

/// Adds or removes one `<hostdev>` in the persistent definition and defines it again.
fn redefine_hostdevs(
    uri: &str,
    conn: &Connect,
    domain: &Domain,
    address: PciAddress,
    attach: bool,
) -> Result<(), HypervisorError> {
    let xml = domain
        .get_xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
        .map_err(|e| call_error(uri, "virDomainGetXMLDesc", e))?;
    let (mut hostdevs, _) = parse_domain_xml(&xml);
    let present = hostdevs.contains(&address);
    if attach == present {
        return Ok(());
    }
    hostdevs.retain(|a| *a != address);
    if attach {
        hostdevs.push(address);
    }
    let updated = replace_hostdevs(&xml, &hostdevs);
    Domain::define_xml(conn, &updated).map_err(|e| call_error(uri, "virDomainDefineXML", e))?;
    Ok(())
}

fn affect_flags(uri: &str, domain: &Domain) -> Result<u32, HypervisorError> {
    Ok(if state_of(uri, domain)? == DomainState::Off {
        sys::VIR_DOMAIN_AFFECT_CONFIG
    } else {
        sys::VIR_DOMAIN_AFFECT_LIVE | sys::VIR_DOMAIN_AFFECT_CONFIG
    })
}
