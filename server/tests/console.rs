//! The console proxy against a real QEMU VM (needs `PASSAGE_TEST_LIBVIRT_URI`, e.g.
//! `qemu:///system`): the websocket carries the VM's VNC stream, for its owner only, and outlives
//! the request time limit.

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use passage_hypervisor::LibvirtHost;
use passage_hypervisor::domain::{DomainKind, DomainSpec, Network};
use passage_server::Portal;
use passage_server::store::{Store, VmParts};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn the_console_websocket_carries_a_real_vms_vnc_stream_to_its_owner_only() {
    let Some(uri) = passage_test_support::service(
        "PASSAGE_TEST_LIBVIRT_URI",
        "tests/services/libvirtd.sh start prints it; .ci/run sets it",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), &[("real", &uri)]);
    config.hosts[0].tcg = true;
    // A console is watched for longer than any request may take.
    config.http.request_timeout = Duration::from_secs(2);
    let ada = common::token_for(&config, "ada", false).await;
    let bob = common::token_for(&config, "bob", false).await;

    // A VM record and its domain, as provisioning leaves them (a real guest without GPUs: this
    // host has none, and no IOMMU).
    let store = Store::open(&config.database_url).await.unwrap();
    store
        .sync_hosts(&[("real".into(), uri.clone())])
        .await
        .unwrap();
    let ada_id = store.user_by_name("ada").await.unwrap().unwrap().id;
    let request = store
        .create_request(
            ada_id,
            &serde_json::from_value(serde_json::json!({
                "gpu_model": "none", "gpu_count": 1, "vcpus": 1, "memory_mib": 256,
                "disk_gib": 1, "image": "none", "hypervisor": "kvm", "lease_hours": 1,
                "reason": "console test"
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let vm = store
        .create_vm(
            request,
            ada_id,
            "real",
            passage_server::store::now_ms() + 3_600_000,
        )
        .await
        .unwrap()
        .unwrap();
    let spec = DomainSpec {
        kind: DomainKind::Qemu,
        vm_id: vm,
        request_id: request,
        owner: "ada".into(),
        vcpus: 1,
        memory_mib: 256,
        disk_path: "/dev/null".into(),
        network: Network::User,
        numa: None,
        hostdevs: vec![],
        seed_url: None,
        kernel_boot: None,
        identity: None,
    };
    let host = LibvirtHost::new(&uri, Duration::from_secs(60)).unwrap();
    let _ = host.remove_domain(&spec.name()).await;
    // No disk at all: the guest's firmware just waits, which is all VNC needs.
    let full = spec.to_xml();
    let (start, end) = (
        full.find("<disk").unwrap(),
        full.find("</disk>").unwrap() + "</disk>".len(),
    );
    let xml = format!("{}{}", &full[..start], &full[end..]);
    host.define_and_start(&xml).await.unwrap();
    store
        .record_vm_parts(
            vm,
            &VmParts {
                domain: Some(spec.name()),
                domain_type: Some("qemu".into()),
                ..VmParts::default()
            },
        )
        .await
        .unwrap();
    store
        .set_vm_state(vm, &["provisioning"], "running", None)
        .await
        .unwrap();
    store.close().await;

    let portal = Portal::start(config).await.unwrap();
    let ws = |token: &str| {
        let mut request = format!("ws://{}/api/v1/vms/{vm}/console", portal.address)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    assert!(
        tokio_tungstenite::connect_async(ws(&bob)).await.is_err(),
        "bob may not open ada's console"
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(ws(&ada)).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(20), socket.next())
        .await
        .expect("VNC speaks first")
        .unwrap()
        .unwrap();
    let Message::Binary(banner) = first else {
        panic!("{first:?}")
    };
    assert!(banner.starts_with(b"RFB 003."), "{banner:?}");
    // Past the request time limit the console still carries both ways: the client's version
    // goes in, the server's security types come back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    socket
        .send(Message::Binary(b"RFB 003.008\n".to_vec().into()))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("VNC answers the client's version")
        .unwrap()
        .unwrap();
    let Message::Binary(security) = answer else {
        panic!("{answer:?}")
    };
    assert!(!security.is_empty() && security[0] > 0, "{security:?}");
    drop(socket);

    portal.shutdown(Duration::from_secs(10)).await.unwrap();
    assert!(host.remove_domain(&spec.name()).await.unwrap());
    host.disconnect().await;
}
