//! Agents against a real portal: the `passage-agent serve` binary on the simulated GPU backend,
//! running the shipped plugins (real components in the real sandbox) as jobs queued over the
//! API. Native hosts and VM agents, who may use which, plugins that misbehave, an agent that is
//! killed, a portal that goes away and comes back.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use passage_server::Portal;
use passage_server::config::Config;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use common::{Agent, agent_binary, get, plugin_dir, post, seed_token};

struct Setup {
    _dir: tempfile::TempDir,
    config: Config,
    admin: Client,
    ada: Client,
    bob: Client,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("test://{}", common::simulated_host_file().display());
    let mut config = common::config(dir.path(), &[("gpu-01", &uri)]);
    config.plugins.dir = Some(plugin_dir());
    config.jobs.time_limit_secs = 5;
    // A fixed port, so that a restarted portal is found where the agent left it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let admin = common::client(&common::token_for(&config, "ops", true).await);
    let ada = common::client(&common::token_for(&config, "ada", false).await);
    let bob = common::client(&common::token_for(&config, "bob", false).await);
    Setup {
        _dir: dir,
        config,
        admin,
        ada,
        bob,
    }
}

async fn start(setup: &Setup) -> (Portal, String) {
    let portal = Portal::start(setup.config.clone()).await.unwrap();
    let base = format!("http://{}", portal.address);
    (portal, base)
}

/// The id of the newest registered version of `name`.
async fn plugin_id(client: &Client, base: &str, name: &str) -> i64 {
    let (status, plugins) = get(client, format!("{base}/api/v1/plugins")).await;
    assert_eq!(status, StatusCode::OK);
    plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not registered: {plugins}"))["id"]
        .as_i64()
        .unwrap()
}

/// Uploads a component as `client`: the status and the answer.
async fn upload(client: &Client, base: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
    let response = client
        .post(format!("{base}/api/v1/plugins"))
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Registers a native host and returns its agent id and token.
async fn native_host(setup: &Setup, base: &str, name: &str) -> (i64, String) {
    let (status, body) = post(
        &setup.admin,
        format!("{base}/api/v1/agents"),
        json!({ "name": name }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        body["id"].as_i64().unwrap(),
        body["token"].as_str().unwrap().to_string(),
    )
}

async fn queue(client: &Client, base: &str, order: Value) -> Vec<i64> {
    let (status, body) = post(client, format!("{base}/api/v1/jobs"), order).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_i64().unwrap())
        .collect()
}

/// Waits until job `id` has ended and returns it.
async fn ended(client: &Client, base: &str, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, job) = get(client, format!("{base}/api/v1/jobs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        if matches!(
            job["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} did not end: {job}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `agent` is online with `devices` GPUs.
async fn online(client: &Client, base: &str, agent: i64, devices: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, agents) = get(client, format!("{base}/api/v1/agents")).await;
        if let Some(a) = agents
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == agent && a["status"] == "online")
            && a["devices"].as_array().unwrap().len() == devices
        {
            return a.clone();
        }
        assert!(
            Instant::now() < deadline,
            "agent {agent} did not come online: {agents}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn metric<'a>(job: &'a Value, name: &str) -> Option<&'a Value> {
    job["result"]["metrics"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
}

#[tokio::test]
async fn a_native_host_runs_shipped_plugins_for_every_user() {
    let setup = setup().await;
    let (portal, base) = start(&setup).await;
    let vector_add = plugin_id(&setup.ada, &base, "vector-add").await;
    let (status, plugin) = get(&setup.ada, format!("{base}/api/v1/plugins/{vector_add}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(plugin["shipped"].as_bool().unwrap());
    assert!(
        plugin["params"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "elements" && p["kind"] == "integer"),
        "{plugin}"
    );

    // Only admins register native hosts.
    let (status, _) = post(
        &setup.ada,
        format!("{base}/api/v1/agents"),
        json!({"name": "mine"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (agent, token) = native_host(&setup, &base, "bench-01").await;
    let (status, body) = post(
        &setup.admin,
        format!("{base}/api/v1/agents"),
        json!({"name": "bench-01"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // An agent token reaches the agent API and nothing else; a user token, the reverse.
    let as_agent = common::client(&token);
    let (status, _) = get(&as_agent, format!("{base}/api/v1/jobs")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post(
        &setup.admin,
        format!("{base}/api/v1/agent/poll"),
        json!({"running": [], "free_devices": [0]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let _agent_process = Agent::start(&base, &token, 2);
    let seen = online(&setup.ada, &base, agent, 2).await;
    assert_eq!(seen["backend"], "fake");
    assert_eq!(seen["devices"][0]["simulated"], true);

    // A bad parameter is refused, naming it, before anything is queued.
    let (status, body) = post(
        &setup.ada,
        format!("{base}/api/v1/jobs"),
        json!({"plugin": vector_add, "agent": agent, "params": {"elements": "lots"}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"].as_str().unwrap().contains("elements"),
        "{body}"
    );

    let ids = queue(
        &setup.ada,
        &base,
        json!({"plugin": vector_add, "agent": agent, "params": {"elements": "1024"}}),
    )
    .await;
    let job = ended(&setup.ada, &base, ids[0]).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["simulated"], true);
    assert_eq!(job["target"], "native host bench-01");
    assert!(
        job["params"]
            .as_array()
            .unwrap()
            .contains(&json!(["elements", "1024"]))
    );
    assert_eq!(
        metric(&job, "verification").unwrap()["value"],
        -1.0,
        "verification is skipped on the simulated GPU, never passed"
    );
    let time = &job["result"];
    assert!(time["wall_s"].as_f64().unwrap() > 0.0);
    assert!(time["user_s"].as_f64().unwrap() >= 0.0);

    // One job per GPU, at once: both devices are used.
    let ids = queue(
        &setup.bob,
        &base,
        json!({"plugin": vector_add, "agent": agent, "gpu": "each"}),
    )
    .await;
    assert_eq!(ids.len(), 2);
    let mut devices = Vec::new();
    for id in ids {
        let job = ended(&setup.bob, &base, id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        devices.push(job["devices"].as_str().unwrap().to_string());
    }
    devices.sort();
    assert_eq!(devices, ["0", "1"]);

    // Native results are everyone's baseline; cancelling stays with whoever queued.
    let (_, bobs) = get(
        &setup.bob,
        format!("{base}/api/v1/jobs?plugin=vector-add&agent={agent}"),
    )
    .await;
    assert_eq!(bobs.as_array().unwrap().len(), 3);

    // Revoking the host cancels its queue and locks the agent out.
    let (status, _) = setup
        .admin
        .delete(format!("{base}/api/v1/agents/{agent}"))
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = post(
        &setup.ada,
        format!("{base}/api/v1/jobs"),
        json!({"plugin": vector_add, "agent": agent}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = post(
        &as_agent,
        format!("{base}/api/v1/agent/poll"),
        json!({"running": [], "free_devices": [0]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn misbehaving_plugins_fail_their_jobs_and_the_agent_keeps_serving() {
    let setup = setup().await;
    let (portal, base) = start(&setup).await;
    let test_plugins = plugin_dir().join("test");
    // What is not a plugin is refused with the reason, and nothing is registered.
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    for (bytes, reason) in [
        (b"garbage".to_vec(), "not a WebAssembly component"),
        (core_module, "not a WebAssembly component"),
        (
            std::fs::read(test_plugins.join("other-world.wasm")).unwrap(),
            "not a Passage plugin",
        ),
    ] {
        let (status, body) = upload(&setup.admin, &base, bytes).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body["error"].as_str().unwrap().contains(reason), "{body}");
    }
    let misbehave = std::fs::read(test_plugins.join("misbehave.wasm")).unwrap();
    let (status, body) = upload(&setup.ada, &base, misbehave.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = upload(&setup.admin, &base, misbehave.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let plugin = body["plugin"]["id"].as_i64().unwrap();
    let (status, again) = upload(&setup.admin, &base, misbehave).await;
    assert_eq!(
        (status, again["new"].clone()),
        (StatusCode::OK, json!(false))
    );

    let (agent, token) = native_host(&setup, &base, "bench-01").await;
    let _agent_process = Agent::start(&base, &token, 1);
    online(&setup.ada, &base, agent, 1).await;
    let run = |mode: &'static str, extra: Value| {
        let ada = setup.ada.clone();
        let base = base.clone();
        async move {
            let mut params = json!({ "mode": mode });
            if let Value::Object(more) = extra {
                params.as_object_mut().unwrap().extend(more);
            }
            let ids = queue(
                &ada,
                &base,
                json!({"plugin": plugin, "agent": agent, "params": params}),
            )
            .await;
            ended(&ada, &base, ids[0]).await
        }
    };
    for (mode, extra, expected) in [
        ("trap", json!({}), "the plugin crashed"),
        ("spin", json!({}), "time limit"),
        ("grow", json!({}), "the portal's `jobs.wasm_memory_mib`"),
        ("gpu-hog", json!({"bytes": "100Gi"}), "limit"),
        ("bad-kernel", json!({}), "CompileFailed"),
        ("wrong-args", json!({}), "takes 2 arguments"),
        ("metric-flood", json!({}), "more than 10000 metrics"),
        ("huge-log", json!({}), "bytes of reported text"),
        ("include-file", json!({}), "is refused"),
        ("host-hog", json!({}), "host memory limit"),
    ] {
        let job = run(mode, extra).await;
        assert_eq!(job["state"], "failed", "{mode}: {job}");
        let error = job["error"].as_str().unwrap();
        assert!(error.contains(expected), "{mode}: {error}");
    }
    let leak = run("leak", json!({})).await;
    assert_eq!(leak["state"], "succeeded", "{leak}");
    assert!(
        leak["result"]["leftovers"]
            .as_str()
            .unwrap()
            .contains("8 device buffers"),
        "the host freed and reported what the plugin left: {leak}"
    );
    let escape = run("escape", json!({})).await;
    assert_eq!(escape["state"], "succeeded", "{escape}");
    // After all that, the same agent still runs a well-behaved plugin.
    let fine = run("ok", json!({})).await;
    assert_eq!(fine["state"], "succeeded", "{fine}");
    assert_eq!(metric(&fine, "answer").unwrap()["value"], 42.0);
    // A result past what the portal keeps is refused with the reason, before any job is read.
    let oversized = json!({"ok": true, "result": {"padding": "x".repeat(3 << 20)}});
    let response = Client::new()
        .post(format!("{base}/api/v1/agent/jobs/1/result"))
        .bearer_auth(&token)
        .json(&oversized)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("larger than 2097152 bytes"),
        "{body}"
    );
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn a_killed_agent_fails_its_job_and_a_portal_that_comes_back_is_served_again() {
    let setup = setup().await;
    let (portal, base) = start(&setup).await;
    let misbehave = std::fs::read(plugin_dir().join("test/misbehave.wasm")).unwrap();
    let (status, body) = upload(&setup.admin, &base, misbehave).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let plugin = body["plugin"]["id"].as_i64().unwrap();
    let (agent, token) = native_host(&setup, &base, "bench-01").await;
    let mut process = Agent::start(&base, &token, 1);
    online(&setup.ada, &base, agent, 1).await;
    let ids = queue(
        &setup.ada,
        &base,
        json!({"plugin": plugin, "agent": agent, "params": {"mode": "spin"}}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&setup.ada, format!("{base}/api/v1/jobs/{}", ids[0]))
        .await
        .1["state"]
        != "running"
    {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    process.kill();
    let job = ended(&setup.ada, &base, ids[0]).await;
    assert_eq!(job["state"], "failed");
    assert!(
        job["error"].as_str().unwrap().contains("stopped answering"),
        "{job}"
    );

    // The portal goes away while a job runs; the agent keeps trying, and when the portal is
    // back the job's own end is taken, not blamed on the agent.
    let process = Agent::start(&base, &token, 1);
    online(&setup.ada, &base, agent, 1).await;
    let ids = queue(
        &setup.ada,
        &base,
        json!({"plugin": plugin, "agent": agent, "params": {"mode": "spin"}}),
    )
    .await;
    common::wait_for("the job to start", Duration::from_secs(30), || async {
        let (_, job) = get(&setup.ada, format!("{base}/api/v1/jobs/{}", ids[0])).await;
        if job["state"] == "running" {
            Ok(())
        } else {
            Err(job.to_string())
        }
    })
    .await;
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
    common::wait_for(
        "the agent to find the portal gone and keep trying",
        Duration::from_secs(30),
        || async {
            if process.said("trying again in") {
                Ok(())
            } else {
                Err("the agent's log says no retry yet".to_string())
            }
        },
    )
    .await;
    let (portal, base) = start(&setup).await;
    let job = ended(&setup.ada, &base, ids[0]).await;
    assert_eq!(job["state"], "failed");
    assert!(
        job["error"].as_str().unwrap().contains("time limit"),
        "the run's own end: {job}"
    );
    let vector_add = plugin_id(&setup.ada, &base, "vector-add").await;
    let ids = queue(
        &setup.ada,
        &base,
        json!({"plugin": vector_add, "agent": agent}),
    )
    .await;
    let job = ended(&setup.ada, &base, ids[0]).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn a_vm_agent_registers_with_its_seed_token_and_serves_only_its_owner() {
    let setup = setup().await;
    let (portal, base) = start(&setup).await;
    let refreshed = setup
        .admin
        .post(format!("{base}/api/v1/inventory/refresh"))
        .send()
        .await
        .unwrap();
    assert!(refreshed.status().is_success());
    let (status, body) = post(
        &setup.admin,
        format!("{base}/api/v1/images"),
        json!({"name": "debian-12", "host": "gpu-01", "pool": "images",
               "volume": "debian-12-generic-amd64.qcow2"}),
    )
    .await;
    assert!(status.is_success(), "{body}");
    let (status, request) = post(
        &setup.ada,
        format!("{base}/api/v1/requests"),
        json!({"gpu_model": "A100 PCIe 80GB", "gpu_count": 1, "vcpus": 4, "memory_mib": 8192,
               "disk_gib": 20, "image": "debian-12", "hypervisor": "kvm", "lease_hours": 4,
               "reason": "the study again"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{request}");
    let request = request["id"].as_i64().unwrap();
    let (status, body) = post(
        &setup.admin,
        format!("{base}/api/v1/requests/{request}/approve"),
        json!({}),
    )
    .await;
    assert!(status.is_success(), "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let vm = loop {
        let (_, vms) = get(&setup.ada, format!("{base}/api/v1/vms")).await;
        if let Some(vm) = vms.as_array().unwrap().first()
            && vm["state"] == "running"
        {
            break vm["id"].as_i64().unwrap();
        }
        assert!(Instant::now() < deadline, "no VM: {vms}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let token = seed_token(&setup.admin, &base, vm).await;
    let mut process = Agent::start(&base, &token, 1);
    let (_, agents) = get(&setup.ada, format!("{base}/api/v1/agents")).await;
    let agent = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["vm_id"] == vm)
        .expect("the VM's agent is listed to its owner")["id"]
        .as_i64()
        .unwrap();
    let seen = online(&setup.ada, &base, agent, 1).await;
    assert!(
        seen["verification"]
            .as_str()
            .unwrap()
            .starts_with("unverified: the agent runs on a simulated GPU"),
        "{seen}"
    );
    let (_, bobs_agents) = get(&setup.bob, format!("{base}/api/v1/agents")).await;
    assert!(
        !bobs_agents
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == agent),
        "another user does not see ada's VM's agent"
    );

    let clock = plugin_id(&setup.ada, &base, "clock").await;
    let (status, _) = post(
        &setup.bob,
        format!("{base}/api/v1/jobs"),
        json!({"plugin": clock, "agent": agent}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "bob cannot run on ada's VM");
    let ids = queue(&setup.ada, &base, json!({"plugin": clock, "agent": agent})).await;
    let job = ended(&setup.ada, &base, ids[0]).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["target"], format!("VM {vm} (ada)"));
    let (status, _) = get(&setup.bob, format!("{base}/api/v1/jobs/{}", ids[0])).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "bob cannot read it either");

    // The same VM's agent where no CUDA driver answers: it registers without GPUs, and the VM
    // says why; its SSH address is the one the agent reaches the portal from.
    let cuda_here = Command::new(agent_binary())
        .args(["devices", "--backend", "cuda", "--json"])
        .output()
        .unwrap()
        .status
        .success();
    if cuda_here {
        passage_test_support::skip(
            "this machine has a CUDA driver: the part on an agent without one does not run",
        );
    } else {
        process.kill();
        let cuda = Agent::start_cuda(&base, &token);
        let deadline = Instant::now() + Duration::from_secs(30);
        let seen = loop {
            let (_, agents) = get(&setup.ada, format!("{base}/api/v1/agents")).await;
            if let Some(a) = agents
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["id"] == agent && a["cuda_problem"].is_string())
            {
                break a.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no CUDA problem reported: {agents}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(seen["status"], "online", "{seen}");
        assert_eq!(seen["backend"], "cuda", "{seen}");
        assert!(seen["devices"].as_array().unwrap().is_empty(), "{seen}");
        assert!(
            seen["verification"]
                .as_str()
                .unwrap()
                .starts_with("unverified: the agent found no CUDA driver in the guest"),
            "{seen}"
        );
        assert!(seen["run_as"].as_str().unwrap().contains("uid "), "{seen}");
        let (_, shown) = get(&setup.ada, format!("{base}/api/v1/vms/{vm}")).await;
        assert_eq!(shown["ssh_address"], "127.0.0.1", "{shown}");
        // The VM's page says what the verdict rests on: the guest's own report.
        let page = setup
            .ada
            .get(format!("{base}/vms/{vm}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("This verdict rests on the guest"), "{page}");
        // An agent that reports no GPU takes no job: one queued there would never start.
        let (status, body) = post(
            &setup.ada,
            format!("{base}/api/v1/agents/{agent}/suite"),
            json!({}),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        drop(cuda);
        process = Agent::start(&base, &token, 1);
        online(&setup.ada, &base, agent, 1).await;
    }
    let _process = process;

    // The suite goes in one batch; releasing the VM cancels what is left and locks its agent out.
    let (status, batch) = post(
        &setup.ada,
        format!("{base}/api/v1/agents/{agent}/suite"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    let batch = batch["batch"].as_str().unwrap().to_string();
    let (_, jobs) = get(&setup.ada, format!("{base}/api/v1/jobs?batch={batch}")).await;
    let labels: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels.len(), passage_suite::study::STUDY.len());
    assert!(labels.contains(&"VecAdd 1024") && labels.contains(&"matrixMul sizeable"));
    let released = setup
        .ada
        .delete(format!("{base}/api/v1/vms/{vm}"))
        .send()
        .await
        .unwrap();
    assert!(released.status().is_success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, jobs) = get(&setup.ada, format!("{base}/api/v1/jobs?batch={batch}")).await;
        let open = jobs
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| matches!(j["state"].as_str(), Some("queued" | "running")))
            .count();
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jobs of a released VM stay open: {jobs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = post(
        &common::client(&token),
        format!("{base}/api/v1/agent/poll"),
        json!({"running": [], "free_devices": [0]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn a_plugin_across_gpus_runs_on_every_gpu_of_its_agent_at_once() {
    let setup = setup().await;
    let (portal, base) = start(&setup).await;
    let p2p = plugin_id(&setup.ada, &base, "p2p-bandwidth").await;
    let (_, plugin) = get(&setup.ada, format!("{base}/api/v1/plugins/{p2p}")).await;
    assert_eq!(plugin["all_gpus"], true, "{plugin}");
    let vector_add = plugin_id(&setup.ada, &base, "vector-add").await;
    let (_, single) = get(&setup.ada, format!("{base}/api/v1/plugins/{vector_add}")).await;
    assert_eq!(single["all_gpus"], false);

    let (agent, token) = native_host(&setup, &base, "dgx-01").await;
    let _process = Agent::start(&base, &token, 2);
    online(&setup.ada, &base, agent, 2).await;
    let (status, body) = post(
        &setup.ada,
        format!("{base}/api/v1/jobs"),
        json!({"plugin": p2p, "agent": agent, "gpu": "each"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // A single-GPU job holds device 0 while the all-GPU job waits behind it, then takes both.
    let first = queue(
        &setup.ada,
        &base,
        json!({"plugin": vector_add, "agent": agent, "gpu": "0"}),
    )
    .await;
    let ids = queue(
        &setup.ada,
        &base,
        json!({"plugin": p2p, "agent": agent,
               "params": {"bytes": "1Mi", "repetitions": "2", "latency-repetitions": "10"}}),
    )
    .await;
    assert_eq!(
        ended(&setup.ada, &base, first[0]).await["state"],
        "succeeded"
    );
    let job = ended(&setup.ada, &base, ids[0]).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["devices"], "0,1");
    assert_eq!(job["result"]["devices"].as_array().unwrap().len(), 2);
    for name in [
        "unidirectional bandwidth, P2P on [0→1]",
        "bidirectional bandwidth, P2P off [1→0]",
        "latency, P2P on [1→1]",
    ] {
        assert!(metric(&job, name).is_some(), "{name} in {job}");
    }
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}
