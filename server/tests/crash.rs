//! A server killed with SIGKILL while it provisions VMs: after a restart, reconciliation leaves
//! every request and VM in a consistent state (running with its GPUs, or failed and freed with
//! the reason), and no GPU is held twice or held for nothing.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

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
        .env("PASSAGE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
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
    // Repair takes a few passes (a provisioning VM is judged interrupted only after its timeout,
    // leftovers are removed on the next pass): wait until the portal is at rest and consistent.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, vms) = common::get(&http, format!("{base}/api/v1/vms")).await;
        let (_, shown) = common::get(&http, format!("{base}/api/v1/requests")).await;
        let (_, gpus) = common::get(&http, format!("{base}/api/v1/gpus?model=H100%20PCIe")).await;
        match consistency(&requests, &vms, &shown, &gpus) {
            Ok(()) => break,
            Err(problem) if Instant::now() >= deadline => {
                let (_, audit) = common::get(&http, format!("{base}/api/v1/audit")).await;
                panic!(
                    "{problem}\nVMs: {vms}\nrequests: {shown}\nGPUs: {gpus}\naudit: {audit}\n\
                     log of the second server:\n{}",
                    std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
                );
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    server.kill().unwrap();
    server.wait().unwrap();
}

/// Whether the portal is consistent after the restart, or what is not (yet). The first server's
/// VMs died with the simulated host (their requests are closed with the reason); requests it had
/// not provisioned yet are provisioned by the second. Every VM is running or failed; each request
/// is placed with a running VM or closed with the reason; no GPU is held twice, a failed VM holds
/// none, and every claimed GPU belongs to a running VM.
fn consistency(requests: &[i64], vms: &Value, shown: &Value, gpus: &Value) -> Result<(), String> {
    let list = |value: &Value, what: &str| {
        value
            .as_array()
            .cloned()
            .ok_or_else(|| format!("the {what} are not a list: {value}"))
    };
    let (vms, shown, gpus) = (
        list(vms, "VMs")?,
        list(shown, "requests")?,
        list(gpus, "GPUs")?,
    );
    if let Some(vm) = vms
        .iter()
        .find(|v| v["state"] != "running" && v["state"] != "failed")
    {
        return Err(format!("a VM is not settled: {vm}"));
    }
    for r in requests {
        let request = shown
            .iter()
            .find(|q| q["id"] == *r)
            .ok_or_else(|| format!("request {r} is not listed"))?;
        let running = vms
            .iter()
            .any(|v| v["request_id"] == *r && v["state"] == "running");
        let placed = request["state"] == "placed" && running;
        let closed = request["state"] == "released" && request["state_reason"].is_string();
        if !(placed || closed) {
            return Err(format!(
                "request {r} is neither running nor closed: {request}"
            ));
        }
    }
    let mut held = HashSet::new();
    for vm in vms.iter().filter(|v| v["state"] == "running") {
        for gpu in vm["gpus"].as_array().into_iter().flatten() {
            if !held.insert(gpu.as_str().unwrap_or_default().to_string()) {
                return Err(format!("{gpu} is held twice"));
            }
        }
    }
    if let Some(vm) = vms.iter().find(|v| {
        v["state"] == "failed"
            && (v["gpus"].as_array().is_none_or(|g| !g.is_empty())
                || !v["state_reason"].is_string())
    }) {
        return Err(format!("a failed VM holds GPUs or gives no reason: {vm}"));
    }
    let claimed: HashSet<String> = gpus
        .iter()
        .filter(|g| g["state"] == "claimed")
        .filter_map(|g| g["address"].as_str().map(str::to_string))
        .collect();
    if claimed != held {
        return Err(format!(
            "claimed GPUs {claimed:?} are not those of running VMs {held:?}"
        ));
    }
    Ok(())
}
