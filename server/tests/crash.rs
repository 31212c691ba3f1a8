//! A server killed with SIGKILL while it provisions VMs: after a restart, reconciliation leaves
//! every request and VM in a consistent state (running with its GPUs, or failed and freed with
//! the reason), and no GPU is held twice or held for nothing.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn passage(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_passage"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PASSAGE_")) {
        command.env_remove(key);
    }
    command
        .env("PASSAGE_LOG", "warn")
        .env("PASSAGE_CONFIG", dir.join("passage.toml"))
        .env("PASSAGE_DATA_DIR", dir);
    command
}

/// Starts `passage serve` and returns it with its base URL.
fn serve(dir: &Path) -> (Child, String) {
    let mut child = passage(dir)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("Passage is running at ")
        .unwrap_or_else(|| panic!("{line}"))
        .trim_end_matches('/')
        .to_string();
    (child, url)
}

fn admin_token(dir: &Path) -> String {
    let mut add = passage(dir)
        .args(["user", "add", "ops", "--admin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(b"operator password\n")
        .unwrap();
    assert!(add.wait().unwrap().success());
    let token = passage(dir)
        .args(["token", "create", "crash", "--user", "ops"])
        .output()
        .unwrap();
    assert!(token.status.success());
    String::from_utf8(token.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn a_server_killed_while_provisioning_is_repaired_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("passage.toml"),
        "listen = \"127.0.0.1:0\"\n[quotas]\ngpus = 16\nrequests = 16\n\
         [vms]\nprovisioning_timeout_secs = 1\nreconcile_secs = 1\n",
    )
    .unwrap();
    let token = admin_token(dir.path());
    let http = reqwest::Client::builder()
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .unwrap();

    let (mut server, base) = serve(dir.path());
    http.post(format!("{base}/api/v1/inventory/refresh"))
        .send()
        .await
        .unwrap();
    let mut requests = Vec::new();
    for _ in 0..4 {
        let filed: Value = http
            .post(format!("{base}/api/v1/requests"))
            .json(&json!({
                "gpu_model": "H100 PCIe", "gpu_count": 1, "vcpus": 4, "memory_mib": 8192,
                "disk_gib": 20, "image": "debian-12", "hypervisor": "kvm", "lease_hours": 4,
                "reason": "crash test"
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        requests.push(filed["id"].as_i64().unwrap());
    }
    // Approve all four, and kill the server the moment the last approval is answered: its
    // provisioning runs in the background and is cut off wherever it is.
    for id in &requests {
        let approved = http
            .post(format!("{base}/api/v1/requests/{id}/approve"))
            .send()
            .await
            .unwrap();
        assert_eq!(approved.status(), 200);
    }
    server.kill().unwrap();
    server.wait().unwrap();

    let (mut server, base) = serve(dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    let (vms, gpus) = loop {
        let vms: Value = http
            .get(format!("{base}/api/v1/vms"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let settled = vms
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["state"] == "running" || v["state"] == "failed");
        let shown: Value = http
            .get(format!("{base}/api/v1/requests"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // Each request is either running in a VM, or closed with the reason.
        let consistent = requests.iter().all(|r| {
            let request = shown
                .as_array()
                .unwrap()
                .iter()
                .find(|q| q["id"] == *r)
                .unwrap();
            let running = vms
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["request_id"] == *r && v["state"] == "running");
            (request["state"] == "placed" && running)
                || (request["state"] == "released" && request["state_reason"].is_string())
        });
        if settled && consistent {
            let gpus: Value = http
                .get(format!("{base}/api/v1/gpus?model=H100%20PCIe"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            break (vms, gpus);
        }
        assert!(Instant::now() < deadline, "not settled: {vms}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    server.kill().unwrap();
    server.wait().unwrap();

    // The first server's VMs died with the simulated host (their requests are closed with the
    // reason); requests it had not provisioned yet were provisioned by the second.
    let vms = vms.as_array().unwrap();
    let mut held = HashSet::new();
    for vm in vms.iter().filter(|v| v["state"] == "running") {
        for gpu in vm["gpus"].as_array().unwrap() {
            assert!(
                held.insert(gpu.as_str().unwrap().to_string()),
                "{gpu} held twice: {vms:?}"
            );
        }
    }
    for vm in vms.iter().filter(|v| v["state"] == "failed") {
        assert!(vm["gpus"].as_array().unwrap().is_empty(), "{vm}");
        assert!(vm["state_reason"].is_string(), "{vm}");
    }
    let claimed: HashSet<String> = gpus
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["state"] == "claimed")
        .map(|g| g["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(claimed, held, "every claimed GPU belongs to a running VM");
}
