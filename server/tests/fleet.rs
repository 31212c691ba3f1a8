//! A fleet of 100 simulated hosts (test-driver files generated here), an image with copies on
//! 20 of them, and hosts that become unreachable: their VMs are kept with their GPUs, and new
//! requests are placed on reachable hosts that hold a copy of the image, never elsewhere.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use passage_server::Portal;
use passage_server::config::Config;
use serde_json::{Value, json};

const HOSTS: usize = 100;
const WITH_IMAGE: usize = 20;

fn fleet_config(dir: &Path) -> Config {
    let names: Vec<(String, String)> = (0..HOSTS)
        .map(|i| {
            let file = dir.join(format!("host-{i:03}.xml"));
            (format!("host-{i:03}"), format!("test://{}", file.display()))
        })
        .collect();
    let hosts: Vec<(&str, &str)> = names
        .iter()
        .map(|(n, u)| (n.as_str(), u.as_str()))
        .collect();
    let mut config = common::config(dir, &hosts);
    config.quotas.gpus = 64;
    config.quotas.requests = 64;
    config.vms.reconcile_secs = 1;
    config
}

/// Files and approves a request for 4 H100s as `admin`; the request as it stands then.
async fn four_gpus(admin: &reqwest::Client, base: &str) -> Value {
    let id = common::file_h100_request(admin, base, 4).await;
    let (status, body) = common::post(
        admin,
        format!("{base}/api/v1/requests/{id}/approve"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    common::get(admin, format!("{base}/api/v1/requests/{id}"))
        .await
        .1
}

async fn running_vms(admin: &reqwest::Client, base: &str, count: usize) -> Vec<Value> {
    common::wait_for(
        &format!("{count} VMs running"),
        Duration::from_secs(60),
        || async {
            let (_, vms) = common::get(admin, format!("{base}/api/v1/vms")).await;
            let running: Vec<Value> = vms
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| v["state"] == "running")
                .cloned()
                .collect();
            if running.len() >= count {
                Ok(running)
            } else {
                Err(vms.to_string())
            }
        },
    )
    .await
}

#[tokio::test]
async fn a_fleet_keeps_what_unreachable_hosts_hold_and_places_new_requests_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..HOSTS {
        std::fs::copy(
            common::simulated_host_file(),
            dir.path().join(format!("host-{i:03}.xml")),
        )
        .unwrap();
    }
    let config = fleet_config(dir.path());
    let admin = common::client(&common::token_for(&config, "root", true).await);
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);
    common::inventory_and_image(&admin, &base, "host-000").await;
    for i in 1..WITH_IMAGE {
        let (status, body) = common::post(
            &admin,
            format!("{base}/api/v1/images"),
            json!({"name": "debian-12", "host": format!("host-{i:03}"), "pool": "images",
                   "volume": "debian-12-generic-amd64.qcow2"}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let copies: HashSet<String> = (0..WITH_IMAGE).map(|i| format!("host-{i:03}")).collect();
    let (_, hosts) = common::get(&admin, format!("{base}/api/v1/hosts")).await;
    let hosts = hosts.as_array().unwrap();
    assert_eq!(hosts.len(), HOSTS);
    assert!(hosts.iter().all(|h| h["state"] == "reachable"), "{hosts:?}");
    let (_, gpus) = common::get(&admin, format!("{base}/api/v1/gpus?limit=1000")).await;
    assert_eq!(gpus.as_array().unwrap().len(), HOSTS * 8);

    // Six requests of 4 H100s: each fills a host that holds the image.
    let mut used = HashSet::new();
    for _ in 0..6 {
        let request = four_gpus(&admin, &base).await;
        assert_eq!(request["state"], "placed", "{request}");
        let host = request["host"].as_str().unwrap().to_string();
        assert!(
            copies.contains(&host),
            "placed on {host}, which has no copy"
        );
        assert!(used.insert(host), "one host each: {request}");
    }
    let before = running_vms(&admin, &base, 6).await;
    portal.shutdown(Duration::from_secs(10)).await.unwrap();

    // Three of the hosts with VMs and seven other holders of the image go away.
    let mut gone: Vec<String> = before
        .iter()
        .take(3)
        .map(|v| v["host"].as_str().unwrap().to_string())
        .collect();
    gone.extend(
        copies
            .iter()
            .filter(|h| !used.contains(*h))
            .take(7)
            .cloned(),
    );
    for host in &gone {
        std::fs::remove_file(dir.path().join(format!("{host}.xml"))).unwrap();
    }
    let portal = Portal::start(fleet_config(dir.path())).await.unwrap();
    let base = format!("http://{}", portal.address);
    let (status, body) = common::post(
        &admin,
        format!("{base}/api/v1/inventory/refresh"),
        json!({}),
    )
    .await;
    assert!(status.is_success(), "{status}: {body}");
    let (_, hosts) = common::get(&admin, format!("{base}/api/v1/hosts")).await;
    let unreachable: HashSet<String> = hosts
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["state"] == "unreachable")
        .map(|h| h["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(unreachable, gone.iter().cloned().collect::<HashSet<_>>());

    // Reconciliation passes by: the VMs on unreachable hosts are kept, GPUs and all.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, vms) = common::get(&admin, format!("{base}/api/v1/vms")).await;
    let (_, gpus) = common::get(&admin, format!("{base}/api/v1/gpus?limit=1000")).await;
    for vm in before.iter().take(3) {
        let now = vms
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["id"] == vm["id"])
            .unwrap();
        assert_eq!(
            now["state"], "running",
            "kept while its host is away: {now}"
        );
        assert_eq!(now["gpus"], vm["gpus"], "{now}");
        for address in vm["gpus"].as_array().unwrap() {
            let gpu = gpus
                .as_array()
                .unwrap()
                .iter()
                .find(|g| g["host"] == vm["host"] && g["address"] == *address)
                .unwrap();
            assert_eq!(gpu["state"], "claimed", "{gpu}");
        }
    }

    // New requests go to reachable hosts with a copy of the image.
    for _ in 0..5 {
        let request = four_gpus(&admin, &base).await;
        assert_eq!(request["state"], "placed", "{request}");
        let host = request["host"].as_str().unwrap();
        assert!(
            copies.contains(host) && !unreachable.contains(host),
            "placed on {host}: {request}"
        );
    }
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}
