//! One long-lived libvirt connection per hypervisor host.
//!
//! libvirt calls block, so each runs on tokio's blocking pool, never on the async runtime. A host
//! holds at most one call in flight; a call that hangs (a dead remote host) is abandoned after a
//! timeout and later calls report that instead of piling up threads. A lost connection is closed
//! and reopened on the next call, so a host that comes back is picked up by the next refresh.
//! The test driver keeps its state per connection, which is another reason to hold one open.

use std::sync::{Arc, Once};
use std::time::Duration;

use tokio::sync::Mutex;
use virt::connect::Connect;
use virt::error::{Error as VirtError, ErrorDomain, ErrorNumber};

use crate::HypervisorError;
use crate::pci::PciDevice;
use crate::readiness::{PassthroughSupport, host_passthrough_problem};

/// What a host reported in one inventory pass.
#[derive(Debug, Clone)]
pub struct HostInventory {
    /// The host's name as libvirt reports it.
    pub hostname: String,
    /// The hypervisor driver behind the URI (`QEMU`, `Xen`, `TEST`, ...).
    pub driver: String,
    /// The libvirt library version on the host, as `major.minor.micro`.
    pub libvirt_version: String,
    /// Every PCI function on the host.
    pub devices: Vec<PciDevice>,
    /// What libvirt's domain capabilities say about PCI passthrough; `None` where the driver
    /// does not report them (the test driver).
    pub passthrough: Option<PassthroughSupport>,
}

impl HostInventory {
    /// Why no GPU of this host can be passed through, or `None` when the host is ready.
    pub fn passthrough_problem(&self) -> Option<String> {
        host_passthrough_problem(self.passthrough.as_ref(), &self.devices)
    }
}

/// A storage volume, e.g. a base image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The volume's path (or key) on the host.
    pub path: String,
    /// Its virtual size in bytes.
    pub capacity_bytes: u64,
}

/// A hypervisor host reached through one libvirt URI.
#[derive(Clone)]
pub struct LibvirtHost {
    uri: String,
    call_timeout: Duration,
    connection: Arc<Mutex<Option<Connection>>>,
    observer: Option<CallObserver>,
}

impl std::fmt::Debug for LibvirtHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibvirtHost")
            .field("uri", &self.uri)
            .field("call_timeout", &self.call_timeout)
            .field("observed", &self.observer.is_some())
            .finish()
    }
}

/// One finished operation on a host, for whoever keeps figures (see [`LibvirtHost::observed`]).
#[derive(Debug, Clone, Copy)]
pub struct CallReport<'a> {
    /// The host's URI.
    pub uri: &'a str,
    /// The operation: the method of [`LibvirtHost`] that was called, e.g. `define_and_start`.
    pub operation: &'static str,
    /// From asking to the answer (or the timeout), connecting included.
    pub elapsed: Duration,
    /// Whether it ended in an error.
    pub failed: bool,
}

/// Told of every operation a host finishes.
pub type CallObserver = Arc<dyn Fn(&CallReport<'_>) + Send + Sync>;

/// An open connection. libvirt's `Connect` does not close itself when dropped.
#[derive(Debug)]
struct Connection(Connect);

impl Drop for Connection {
    fn drop(&mut self) {
        if let Err(e) = self.0.close() {
            tracing::debug!(error = %e.message(), "closing a libvirt connection failed");
        }
    }
}

impl LibvirtHost {
    /// A host at `uri`. Nothing is opened until the first call; `call_timeout` bounds each call,
    /// including opening the connection.
    pub fn new(uri: impl Into<String>, call_timeout: Duration) -> Result<Self, HypervisorError> {
        let uri = uri.into();
        validate_uri(&uri)?;
        Ok(LibvirtHost {
            uri,
            call_timeout,
            connection: Arc::new(Mutex::new(None)),
            observer: None,
        })
    }

    /// The same host, telling `observer` of every operation it finishes.
    pub fn observed(mut self, observer: CallObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The URI this host was configured with.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Reads the host's identity and all of its PCI functions.
    pub async fn inventory(&self) -> Result<HostInventory, HypervisorError> {
        self.with_connection("inventory", |uri, conn| {
            let hostname = conn
                .get_hostname()
                .map_err(|e| call_error(uri, "virConnectGetHostname", e))?;
            let driver = conn
                .get_type()
                .map_err(|e| call_error(uri, "virConnectGetType", e))?;
            let version = conn
                .get_lib_version()
                .map_err(|e| call_error(uri, "virConnectGetLibVersion", e))?;
            let nodes = conn
                .list_all_node_devices(virt::sys::VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV)
                .map_err(|e| call_error(uri, "virConnectListAllNodeDevices", e))?;
            let mut devices = Vec::with_capacity(nodes.len());
            for node in nodes {
                let xml = node
                    .get_xml_desc(0)
                    .map_err(|e| call_error(uri, "virNodeDeviceGetXMLDesc", e))?;
                if let Some(device) = PciDevice::from_node_device_xml(&xml)? {
                    devices.push(device);
                }
            }
            devices.sort_by_key(|d| d.address);
            // libvirt picks the best hypervisor type itself; VFIO support is the host's, not
            // the hypervisor type's.
            let passthrough = match conn.get_domain_capabilities(None, None, None, None, 0) {
                Ok(xml) => Some(PassthroughSupport::from_domain_capabilities_xml(&xml)?),
                Err(e) if e.code() == ErrorNumber::NoSupport => None,
                Err(e) => return Err(call_error(uri, "virConnectGetDomainCapabilities", e)),
            };
            Ok(HostInventory {
                hostname,
                driver,
                libvirt_version: format!(
                    "{}.{}.{}",
                    version / 1_000_000,
                    version / 1_000 % 1_000,
                    version % 1_000
                ),
                devices,
                passthrough,
            })
        })
        .await
    }

    /// The volume `name` in storage pool `pool`, or `None` when either does not exist.
    pub async fn volume(&self, pool: &str, name: &str) -> Result<Option<Volume>, HypervisorError> {
        if pool.contains('\0') || name.contains('\0') {
            return Ok(None);
        }
        let (pool, name) = (pool.to_string(), name.to_string());
        self.with_connection("volume", move |uri, conn| {
            let missing = |e: &VirtError| {
                matches!(
                    e.code(),
                    ErrorNumber::NoStoragePool | ErrorNumber::NoStorageVolume
                )
            };
            let pool = match virt::storage_pool::StoragePool::lookup_by_name(conn, &pool) {
                Ok(pool) => pool,
                Err(e) if missing(&e) => return Ok(None),
                Err(e) => return Err(call_error(uri, "virStoragePoolLookupByName", e)),
            };
            let volume = match virt::storage_vol::StorageVol::lookup_by_name(&pool, &name) {
                Ok(volume) => volume,
                Err(e) if missing(&e) => return Ok(None),
                Err(e) => return Err(call_error(uri, "virStorageVolLookupByName", e)),
            };
            let path = volume
                .get_path()
                .map_err(|e| call_error(uri, "virStorageVolGetPath", e))?;
            let info = volume
                .get_info()
                .map_err(|e| call_error(uri, "virStorageVolGetInfo", e))?;
            Ok(Some(Volume {
                path,
                capacity_bytes: info.capacity,
            }))
        })
        .await
    }

    /// Closes the connection now (it is reopened by the next call).
    pub async fn disconnect(&self) {
        let mut guard = self.connection.lock().await;
        if let Some(connection) = guard.take() {
            // Closing talks to the daemon: keep it off the async runtime as well.
            let _ = tokio::task::spawn_blocking(move || drop(connection)).await;
        }
    }

    /// Runs `call` on the blocking pool with an open connection, opening one first when needed.
    pub(crate) async fn with_connection<T, F>(
        &self,
        operation: &'static str,
        call: F,
    ) -> Result<T, HypervisorError>
    where
        T: Send + 'static,
        F: FnOnce(&str, &Connect) -> Result<T, HypervisorError> + Send + 'static,
    {
        let began = std::time::Instant::now();
        let result = self.call(call).await;
        if let Some(observer) = &self.observer {
            observer(&CallReport {
                uri: &self.uri,
                operation,
                elapsed: began.elapsed(),
                failed: result.is_err(),
            });
        }
        result
    }

    async fn call<T, F>(&self, call: F) -> Result<T, HypervisorError>
    where
        T: Send + 'static,
        F: FnOnce(&str, &Connect) -> Result<T, HypervisorError> + Send + 'static,
    {
        let timeout = || HypervisorError::Timeout {
            uri: self.uri.clone(),
            seconds: self.call_timeout.as_secs().max(1),
        };
        let mut guard =
            tokio::time::timeout(self.call_timeout, self.connection.clone().lock_owned())
                .await
                .map_err(|_| timeout())?;
        let uri = self.uri.clone();
        let task = tokio::task::spawn_blocking(move || {
            silence_libvirt_stderr();
            if guard
                .as_ref()
                .is_some_and(|c| !c.0.is_alive().unwrap_or(false))
            {
                *guard = None;
            }
            if guard.is_none() {
                let conn = Connect::open(Some(&uri)).map_err(|e| HypervisorError::Connect {
                    uri: uri.clone(),
                    message: e.message().to_string(),
                })?;
                *guard = Some(Connection(conn));
            }
            let connection = guard.as_ref().map(|c| &c.0).expect("opened above");
            let result = call(&uri, connection);
            if let Err(e) = &result
                && e.is_transient()
            {
                *guard = None;
            }
            result
        });
        match tokio::time::timeout(self.call_timeout, task).await {
            Err(_) => Err(timeout()),
            Ok(Err(join)) => Err(HypervisorError::Worker {
                uri: self.uri.clone(),
                reason: join.to_string(),
            }),
            Ok(Ok(result)) => result,
        }
    }
}

pub(crate) fn call_error(uri: &str, call: &'static str, e: VirtError) -> HypervisorError {
    let connection_lost = matches!(
        e.code(),
        ErrorNumber::NoConnect | ErrorNumber::InvalidConn | ErrorNumber::SystemError
    ) || matches!(e.domain(), ErrorDomain::Rpc);
    HypervisorError::Call {
        uri: uri.to_string(),
        call,
        message: e.message().to_string(),
        connection_lost,
    }
}

/// Refuses URIs that libvirt cannot be handed at all; everything else is libvirt's to judge.
fn validate_uri(uri: &str) -> Result<(), HypervisorError> {
    let invalid = |reason: &str| HypervisorError::InvalidUri {
        uri: uri.to_string(),
        reason: reason.to_string(),
    };
    if uri.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(invalid(
            "expected driver[+transport]://[host]/path, e.g. qemu:///system",
        ));
    };
    if scheme.is_empty() || !rest.starts_with("//") {
        return Err(invalid(
            "expected driver[+transport]://[host]/path, e.g. qemu:///system",
        ));
    }
    if scheme == "test" && !rest.starts_with("///") {
        return Err(invalid(
            "the test driver takes no host: test:///default or test:///abs/path/host.xml",
        ));
    }
    Ok(())
}

/// libvirt prints every error on stderr unless told not to; the portal reports them itself.
fn silence_libvirt_stderr() {
    static ONCE: Once = Once::new();
    ONCE.call_once(virt::error::clear_error_callback);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_libvirt_cannot_take_are_refused_up_front() {
        for bad in [
            "",
            "qemu",
            "qemu:/system",
            "test://relative/host.xml",
            "qemu:///sys\0tem",
        ] {
            assert!(
                matches!(
                    LibvirtHost::new(bad, Duration::from_secs(1)),
                    Err(HypervisorError::InvalidUri { .. })
                ),
                "{bad:?}"
            );
        }
        for good in [
            "qemu:///system",
            "xen:///system",
            "qemu+ssh://root@gpu-01/system",
            "test:///default",
            "test:///srv/passage/host.xml",
        ] {
            assert!(
                LibvirtHost::new(good, Duration::from_secs(1)).is_ok(),
                "{good}"
            );
        }
    }

    #[tokio::test]
    async fn the_default_test_host_is_inventoried() {
        let host = LibvirtHost::new("test:///default", Duration::from_secs(10)).unwrap();
        let inventory = host.inventory().await.unwrap();
        assert_eq!(inventory.driver, "TEST");
        assert!(!inventory.libvirt_version.is_empty());
        host.disconnect().await;
    }

    #[tokio::test]
    async fn a_missing_host_file_is_a_connect_error_with_libvirts_message() {
        let host = LibvirtHost::new(
            "test:///nonexistent/passage/host.xml",
            Duration::from_secs(10),
        )
        .unwrap();
        let err = host.inventory().await.unwrap_err();
        assert!(matches!(err, HypervisorError::Connect { .. }), "{err:?}");
        assert!(err.is_transient());
        assert!(
            err.to_string().contains("/nonexistent/passage/host.xml"),
            "{err}"
        );
    }
}
