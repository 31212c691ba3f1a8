//! Domains and volumes: the XML Passage writes (golden files for KVM, Xen and the test driver),
//! the whole lifecycle on the simulated host, and, with a real libvirtd
//! (`PASSAGE_TEST_LIBVIRT_URI=qemu:///system`), a VM that really boots under QEMU/TCG and a
//! passthrough VM that cannot start on a host without an IOMMU and leaves nothing behind.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use passage_hypervisor::domain::{
    DomainKind, DomainSpec, DomainState, KernelBoot, Network, NumaPlacement,
};
use passage_hypervisor::{Hotplug, HypervisorError, LibvirtHost, PciAddress};

fn simulated_host_uri() -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hosts/simulated-host.xml");
    format!("test://{}", file.canonicalize().unwrap().display())
}

fn address(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn spec(kind: DomainKind) -> DomainSpec {
    DomainSpec {
        kind,
        vm_id: 7,
        request_id: 12,
        owner: "alice".into(),
        vcpus: 8,
        memory_mib: 32768,
        disk_path: "/var/lib/libvirt/images/passage-vm-7.qcow2".into(),
        network: match kind {
            DomainKind::Xen => Network::Bridge("xenbr0".into()),
            _ => Network::Named("default".into()),
        },
        numa: Some(NumaPlacement {
            node: 1,
            cpus: vec![16, 17, 18, 19, 20, 21, 22, 23, 48, 49],
        }),
        hostdevs: vec![address("0000:e3:00.0"), address("0000:e3:00.1")],
        seed_url: Some("http://10.0.2.2:8080/cloud-init/7/k3y/".into()),
        kernel_boot: None,
        identity: None,
    }
}

/// Compares with `tests/golden/<name>.xml`; `PASSAGE_BLESS=1` rewrites the file instead.
fn golden(name: &str, xml: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.xml"));
    if std::env::var_os("PASSAGE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, xml).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with PASSAGE_BLESS=1)", path.display()));
    assert_eq!(xml, expected, "{} differs", path.display());
}

#[test]
fn kvm_domain_xml_matches_its_golden_file() {
    golden("kvm", &spec(DomainKind::Kvm).to_xml());
}

#[test]
fn a_kernel_booted_domain_names_its_kernel_initrd_and_cmdline() {
    let spec = DomainSpec {
        kernel_boot: Some(KernelBoot {
            kernel: "/srv/boot/vmlinuz".into(),
            initrd: Some("/srv/boot/initrd.img".into()),
            cmdline: Some("console=ttyS0 quiet root=LABEL=<x>&y".into()),
        }),
        identity: None,
        ..spec(DomainKind::Qemu)
    };
    let xml = spec.to_xml();
    assert!(xml.contains("<kernel>/srv/boot/vmlinuz</kernel>"), "{xml}");
    assert!(
        xml.contains("<initrd>/srv/boot/initrd.img</initrd>"),
        "{xml}"
    );
    assert!(
        xml.contains("<cmdline>console=ttyS0 quiet root=LABEL=&lt;x&gt;&amp;y</cmdline>"),
        "{xml}"
    );
    assert!(
        !xml.contains("<boot dev="),
        "the kernel boots, not the disk: {xml}"
    );
    assert!(
        xml.contains(
            "<log file=\"/var/log/libvirt/qemu/passage-vm-7-serial0.log\" append=\"off\"/>"
        ),
        "{xml}"
    );
}

#[test]
fn xen_domain_xml_matches_its_golden_file() {
    golden("xen", &spec(DomainKind::Xen).to_xml());
}

#[test]
fn test_driver_domain_xml_matches_its_golden_file() {
    golden("test", &spec(DomainKind::Test).to_xml());
}

#[tokio::test]
async fn a_vm_lives_and_dies_on_the_simulated_host() {
    let host = LibvirtHost::new(simulated_host_uri(), Duration::from_secs(10)).unwrap();
    let facts = host.facts().await.unwrap();
    assert_eq!(facts.domain_kind("kvm", false), Ok(DomainKind::Test));
    assert_eq!(facts.domain_kind("xen", false), Ok(DomainKind::Test));

    let base = host
        .volume("images", "debian-12-generic-amd64.qcow2")
        .await
        .unwrap()
        .unwrap();
    let disk = host
        .create_cow_volume("images", "passage-vm-7.qcow2", 40 << 30, &base.path)
        .await
        .unwrap();
    assert!(disk.path.ends_with("passage-vm-7.qcow2"), "{}", disk.path);

    let mut spec = spec(DomainKind::Test);
    spec.disk_path = disk.path.clone();
    spec.numa = Some(NumaPlacement {
        node: 1,
        cpus: vec![],
    });
    let started = host.define_and_start(&spec.to_xml()).await.unwrap();
    assert_eq!(started.name, "passage-vm-7");
    assert_eq!(started.state, DomainState::Running);
    assert_eq!(started.hostdevs, spec.hostdevs);

    let ours = host.passage_domains().await.unwrap();
    assert_eq!(ours.len(), 1);

    // Hot-plug: the test driver has none, so the definition changes for the next start.
    let added = host
        .attach_hostdev("passage-vm-7", &address("0000:ca:00.0"))
        .await
        .unwrap();
    assert_eq!(added, Hotplug::NextStart);
    host.power_off("passage-vm-7").await.unwrap();
    host.start("passage-vm-7").await.unwrap();
    let now = host.domain("passage-vm-7").await.unwrap().unwrap();
    assert!(now.hostdevs.contains(&address("0000:ca:00.0")), "{now:?}");
    host.detach_hostdev("passage-vm-7", &address("0000:ca:00.0"))
        .await
        .unwrap();
    host.power_off("passage-vm-7").await.unwrap();
    host.start("passage-vm-7").await.unwrap();
    let now = host.domain("passage-vm-7").await.unwrap().unwrap();
    assert_eq!(now.hostdevs, spec.hostdevs);

    host.reboot("passage-vm-7").await.unwrap();
    assert!(
        host.shut_down("passage-vm-7", Duration::from_secs(5))
            .await
            .unwrap()
    );
    let off = host.domain("passage-vm-7").await.unwrap().unwrap();
    assert_eq!(off.state, DomainState::Off);
    host.start("passage-vm-7").await.unwrap();
    host.power_off("passage-vm-7").await.unwrap();

    // The console needs a real VNC server.
    assert!(host.open_vnc("passage-vm-7").await.is_err());

    assert!(host.remove_domain("passage-vm-7").await.unwrap());
    assert!(!host.remove_domain("passage-vm-7").await.unwrap());
    assert!(host.domain("passage-vm-7").await.unwrap().is_none());
    assert!(matches!(
        host.start("passage-vm-7").await,
        Err(HypervisorError::NoDomain { .. })
    ));
    assert!(
        host.delete_volume("images", "passage-vm-7.qcow2")
            .await
            .unwrap()
    );
    assert!(
        !host
            .delete_volume("images", "passage-vm-7.qcow2")
            .await
            .unwrap()
    );
    host.disconnect().await;
}

/// A transient directory pool for one test, removed (with its volumes) when dropped.
struct ScratchPool {
    name: String,
    dir: tempfile::TempDir,
    uri: String,
}

impl ScratchPool {
    fn new(uri: &str, name: &str) -> ScratchPool {
        let dir = tempfile::tempdir().unwrap();
        let xml = format!(
            "<pool type='dir'><name>{name}</name><target><path>{}</path></target></pool>",
            dir.path().display()
        );
        let conn = virt::connect::Connect::open(Some(uri)).unwrap();
        if let Ok(old) = virt::storage_pool::StoragePool::lookup_by_name(&conn, name) {
            let _ = old.destroy();
        }
        virt::storage_pool::StoragePool::create_xml(&conn, &xml, 0).unwrap();
        let base = "<volume><name>base.qcow2</name><capacity unit='MiB'>64</capacity>\
                    <target><format type='qcow2'/></target></volume>";
        let pool = virt::storage_pool::StoragePool::lookup_by_name(&conn, name).unwrap();
        virt::storage_vol::StorageVol::create_xml(&pool, base, 0).unwrap();
        let mut conn = conn;
        conn.close().unwrap();
        ScratchPool {
            name: name.into(),
            dir,
            uri: uri.into(),
        }
    }

    fn base_path(&self) -> String {
        self.dir.path().join("base.qcow2").display().to_string()
    }
}

impl Drop for ScratchPool {
    fn drop(&mut self) {
        if let Ok(mut conn) = virt::connect::Connect::open(Some(&self.uri)) {
            if let Ok(pool) = virt::storage_pool::StoragePool::lookup_by_name(&conn, &self.name) {
                let _ = pool.destroy();
            }
            let _ = conn.close();
        }
    }
}

fn real_libvirt() -> Option<String> {
    passage_test_support::service(
        "PASSAGE_TEST_LIBVIRT_URI",
        "tests/services/libvirtd.sh start prints it; .ci/run sets it",
    )
}

#[tokio::test]
async fn a_real_vm_boots_under_qemu_serves_vnc_and_is_removed() {
    let Some(uri) = real_libvirt() else { return };
    let pool = ScratchPool::new(&uri, "passage-test-lifecycle");
    let host = LibvirtHost::new(&uri, Duration::from_secs(60)).unwrap();
    let facts = host.facts().await.unwrap();
    assert_eq!(facts.driver, "QEMU");
    // No usable KVM here: TCG.
    let kind = facts.domain_kind("kvm", true).unwrap();
    assert_eq!(kind, DomainKind::Qemu);
    assert!(facts.domain_kind("xen", true).is_err());

    let disk = host
        .create_cow_volume(
            &pool.name,
            "passage-vm-9001.qcow2",
            64 << 20,
            &pool.base_path(),
        )
        .await
        .unwrap();
    let spec = DomainSpec {
        kind,
        vm_id: 9001,
        request_id: 1,
        owner: "alice".into(),
        vcpus: 1,
        memory_mib: 256,
        disk_path: disk.path.clone(),
        network: Network::User,
        numa: None,
        hostdevs: vec![],
        seed_url: Some("http://10.0.2.2:1/cloud-init/9001/x/".into()),
        kernel_boot: None,
        identity: None,
    };
    let _ = host.remove_domain(&spec.name()).await;
    let started = host.define_and_start(&spec.to_xml()).await.unwrap();
    assert_eq!(started.state, DomainState::Running);
    assert!(started.vnc_port.is_some(), "{started:?}");

    // The console: libvirt hands over a socket to QEMU's VNC server, which speaks RFB first.
    let fd = host.open_vnc(&spec.name()).await.unwrap();
    let mut socket = UnixStream::from(fd);
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut banner = [0u8; 12];
    socket.read_exact(&mut banner).unwrap();
    assert_eq!(&banner[..4], b"RFB ", "{banner:?}");

    // No operating system answers ACPI: the grace period ends and the VM is powered off.
    let clean = host
        .shut_down(&spec.name(), Duration::from_secs(2))
        .await
        .unwrap();
    assert!(!clean);
    let off = host.domain(&spec.name()).await.unwrap().unwrap();
    assert_eq!(off.state, DomainState::Off);
    assert!(host.remove_domain(&spec.name()).await.unwrap());
    assert!(
        host.delete_volume(&pool.name, "passage-vm-9001.qcow2")
            .await
            .unwrap()
    );
    host.disconnect().await;
}

#[tokio::test]
async fn a_passthrough_vm_that_cannot_start_leaves_no_domain() {
    let Some(uri) = real_libvirt() else { return };
    let host = LibvirtHost::new(&uri, Duration::from_secs(60)).unwrap();
    let spec = DomainSpec {
        kind: DomainKind::Qemu,
        vm_id: 9002,
        request_id: 1,
        owner: "alice".into(),
        vcpus: 1,
        memory_mib: 256,
        disk_path: "/nonexistent/passage-vm-9002.qcow2".into(),
        network: Network::User,
        numa: None,
        hostdevs: vec![address("0000:17:00.0")],
        seed_url: None,
        kernel_boot: None,
        identity: None,
    };
    let _ = host.remove_domain(&spec.name()).await;
    let err = host.define_and_start(&spec.to_xml()).await.unwrap_err();
    assert!(matches!(err, HypervisorError::Call { .. }), "{err:?}");
    assert!(host.domain(&spec.name()).await.unwrap().is_none());
    host.disconnect().await;
}
