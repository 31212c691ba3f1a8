//! A real portal in process: database, inventory over the test driver, HTTP API and SSR page.

mod common;

use std::time::Duration;

use passage_app::inventory::{GpuState, GpuView, HostState, HostView};
use passage_server::Portal;
use serde_json::Value;

async fn refresh(base: &str) -> Vec<HostView> {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/inventory/refresh"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_api_lists_hosts_and_gpus_and_an_offline_host_does_not_disturb_them() {
    let dir = tempfile::tempdir().unwrap();
    let offline = "test:///nonexistent/passage/offline.xml";
    let portal = Portal::start(common::config(
        dir.path(),
        &[("simulated", "simulated"), ("offline", offline)],
    ))
    .await
    .unwrap();
    let base = format!("http://{}", portal.address);

    let health: Value = reqwest::get(format!("{base}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");

    let hosts = refresh(&base).await;
    let names: Vec<(&str, HostState)> = hosts.iter().map(|h| (h.name.as_str(), h.state)).collect();
    assert_eq!(
        names,
        vec![
            ("offline", HostState::Unreachable),
            ("simulated", HostState::Reachable)
        ]
    );
    let error = hosts[0].error.as_deref().unwrap();
    assert!(
        error.contains("/nonexistent/passage/offline.xml"),
        "{error}"
    );
    assert_eq!(hosts[1].gpu_count, 8);
    assert_eq!(hosts[1].driver.as_deref(), Some("TEST"));

    let gpus: Vec<GpuView> = reqwest::get(format!("{base}/api/v1/gpus"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(gpus.len(), 8);
    assert!(
        gpus.iter()
            .all(|g| g.state == GpuState::Available && g.vendor_id == "0x10de")
    );
    let ada = gpus.iter().find(|g| g.address == "0000:e3:00.0").unwrap();
    assert_eq!(
        ada.passthrough_functions,
        vec!["0000:e3:00.0", "0000:e3:00.1"]
    );
    assert_eq!(ada.iommu_group.as_ref().unwrap().members.len(), 2);
    assert_eq!(ada.numa_node, Some(1));
    let degraded = gpus.iter().find(|g| g.address == "0000:4e:00.0").unwrap();
    assert!(degraded.link.as_ref().unwrap().degraded);

    let h100: Vec<GpuView> = reqwest::get(format!(
        "{base}/api/v1/gpus?model=H100%20PCIe&state=available"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(h100.len(), 4);
    assert!(h100.iter().all(|g| g.numa_node == Some(0)));

    let bad = reqwest::get(format!("{base}/api/v1/gpus?colour=green"))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("colour"), "{body}");

    let missing = reqwest::get(format!("{base}/api/v1/nothing"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert!(body["error"].is_string());

    let page = reqwest::get(&base).await.unwrap().text().await.unwrap();
    assert!(
        page.contains("0000:b1:00.0"),
        "the page is rendered on the server"
    );
    assert!(page.contains("unreachable"));

    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn the_inventory_survives_a_restart_and_tracks_a_host_that_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let host_file = dir.path().join("lab.xml");
    std::fs::copy(common::simulated_host_file(), &host_file).unwrap();
    let uri = format!("test://{}", host_file.display());

    let portal = Portal::start(common::config(dir.path(), &[("lab", &uri)]))
        .await
        .unwrap();
    let base = format!("http://{}", portal.address);
    assert_eq!(refresh(&base).await[0].gpu_count, 8);
    portal.shutdown(Duration::from_secs(10)).await.unwrap();

    // The host's file disappears while the portal is down: after a restart, the GPUs are still
    // known from the database, but marked as on an unreachable host.
    std::fs::remove_file(&host_file).unwrap();
    let portal = Portal::start(common::config(dir.path(), &[("lab", &uri)]))
        .await
        .unwrap();
    let base = format!("http://{}", portal.address);
    let hosts = refresh(&base).await;
    assert_eq!(hosts[0].state, HostState::Unreachable);
    assert!(
        hosts[0].last_refresh.is_some(),
        "the last good inventory is kept"
    );
    let gpus: Vec<GpuView> = reqwest::get(format!("{base}/api/v1/gpus"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(gpus.len(), 8);
    assert!(gpus.iter().all(|g| g.state == GpuState::HostUnreachable));

    // It comes back with one GPU fewer: that GPU is kept and marked missing.
    let text = std::fs::read_to_string(common::simulated_host_file()).unwrap();
    let start = text.find("<name>pci_0000_ca_00_0</name>").unwrap();
    let device_start = text[..start].rfind("<device>").unwrap();
    let device_end = start + text[start..].find("</device>").unwrap() + "</device>".len();
    std::fs::write(
        &host_file,
        format!("{}{}", &text[..device_start], &text[device_end..]),
    )
    .unwrap();
    let hosts = refresh(&base).await;
    assert_eq!(hosts[0].state, HostState::Reachable);
    assert_eq!(hosts[0].gpu_count, 7);
    let gpus: Vec<GpuView> = reqwest::get(format!("{base}/api/v1/gpus"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let l40s = gpus.iter().find(|g| g.address == "0000:ca:00.0").unwrap();
    assert_eq!(l40s.state, GpuState::Missing);
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}
