//! Experiments against a real portal: shipped plugins run by `passage-agent serve` processes on
//! the simulated GPU backend. The matrix runs every cell once per repetition in rotating order
//! and reads back as figures, overheads, CSV and SVG charts; variants are requested, approved
//! together and released when the experiment ends; a server killed with SIGKILL mid-experiment
//! goes on after a restart without running anything twice.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use passage_server::Portal;
use passage_server::config::Config;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use common::{Agent, get, plugin_dir, post, seed_token, wait_for};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Setup {
    _dir: tempfile::TempDir,
    config: Config,
    admin: Client,
    ada: Client,
    bob: Client,
}

async fn setup(database_url: Option<String>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("test://{}", common::simulated_host_file().display());
    let mut config = common::config(dir.path(), &[("gpu-01", &uri)]);
    if let Some(url) = database_url {
        config.database_url = url;
    }
    config.plugins.dir = Some(plugin_dir());
    config.jobs.time_limit_secs = 30;
    // A fixed port, so that the seeds' URLs lead back here.
    config.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
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

/// Registers a native host and starts its agent with one simulated GPU.
async fn native_host(admin: &Client, base: &str, name: &str) -> (i64, Agent) {
    let (status, body) = post(
        admin,
        format!("{base}/api/v1/agents"),
        json!({ "name": name }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let agent = Agent::start(base, body["token"].as_str().unwrap(), 1);
    (body["id"].as_i64().unwrap(), agent)
}

/// Waits until experiment `id` is in one of `states` and returns it.
async fn experiment_in(client: &Client, base: &str, id: i64, states: &[&str]) -> Value {
    wait_for(
        &format!("experiment {id} to be {states:?}"),
        Duration::from_secs(180),
        || async {
            let (status, e) = get(client, format!("{base}/api/v1/experiments/{id}")).await;
            if status == StatusCode::OK
                && states.contains(&e["summary"]["state"].as_str().unwrap_or_default())
            {
                Ok(e)
            } else {
                Err(format!("{status} {}", e["summary"]))
            }
        },
    )
    .await
}

/// Every job of experiment `id`, oldest first.
async fn jobs_of(client: &Client, base: &str, id: i64) -> Vec<Value> {
    let (status, jobs) = get(client, format!("{base}/api/v1/jobs?batch=experiment-{id}")).await;
    assert_eq!(status, StatusCode::OK, "{jobs}");
    let mut jobs = jobs.as_array().unwrap().clone();
    jobs.sort_by_key(|j| j["id"].as_i64());
    jobs
}

#[tokio::test]
async fn an_experiment_runs_every_cell_once_in_rotating_order_and_reads_back_the_same_everywhere() {
    common::on_every_backend(|url| async move { matrix_scenario(url).await }).await;
}

async fn matrix_scenario(url: String) {
    let setup = setup(Some(url)).await;
    let portal = Portal::start(setup.config.clone()).await.unwrap();
    let base = format!("http://{}", portal.address);
    let (first, _a) = native_host(&setup.admin, &base, "bench-01").await;
    let (second, _b) = native_host(&setup.admin, &base, "bench-02").await;

    // What is refused, each with its reason.
    let refused = [
        (
            json!({ "name": "x", "preset": "thesis", "targets": [{ "agent": first }] }),
            "preset",
        ),
        (
            json!({ "name": "x", "plugins": [{ "plugin": "no-such" }], "targets": [{ "agent": first }] }),
            "no-such",
        ),
        (
            json!({ "name": "x", "plugins": [{ "plugin": "vector-add", "params": { "elements": -3 } }],
                 "targets": [{ "agent": first }] }),
            "elements",
        ),
        (
            json!({ "name": "x", "plugins": [{ "plugin": "clock" }],
                 "targets": [{ "agent": first }, { "agent": first }] }),
            "twice",
        ),
        (
            json!({ "name": "x", "plugins": [{ "plugin": "clock" }], "targets": [{ "agent": first }],
                 "repetitions": 0 }),
            "repetitions",
        ),
        (
            json!({ "name": "", "plugins": [{ "plugin": "clock" }], "targets": [{ "agent": first }] }),
            "name",
        ),
        (
            json!({ "name": "x", "plugins": [{ "plugin": "clock" }], "targets": [] }),
            "targets",
        ),
    ];
    for (body, word) in refused {
        let (status, answer) = post(
            &setup.ada,
            format!("{base}/api/v1/experiments"),
            body.clone(),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} -> {answer}"
        );
        assert!(answer["error"].as_str().unwrap().contains(word), "{answer}");
    }

    let (status, created) = post(
        &setup.ada,
        format!("{base}/api/v1/experiments"),
        json!({
            "name": "two hosts",
            "plugins": [
                { "plugin": "vector-add", "params": { "elements": 1024 } },
                { "plugin": "vector-add", "params": { "elements": "4096" } },
                { "plugin": "bandwidth-test", "label": "bandwidth" }
            ],
            "targets": [{ "agent": first }, { "agent": second }],
            "repetitions": 3
        }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["state"], "preparing");
    let id = created["id"].as_i64().unwrap();
    let (status, _) = get(&setup.bob, format!("{base}/api/v1/experiments/{id}")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "bob does not see ada's experiment"
    );

    let done = experiment_in(&setup.ada, &base, id, &["succeeded", "failed"]).await;
    let summary = &done["summary"];
    assert_eq!(summary["state"], "succeeded", "{summary}");
    assert_eq!(summary["jobs_total"], 18);
    assert_eq!(summary["jobs_done"], 18);
    assert_eq!(summary["jobs_failed"], 0);
    assert_eq!(summary["simulated"], true);

    // Every cell once per repetition; the first job of each repetition moves on.
    let jobs = jobs_of(&setup.ada, &base, id).await;
    assert_eq!(jobs.len(), 18);
    let labels: Vec<String> = [
        "vector-add elements=1024",
        "vector-add elements=4096",
        "bandwidth",
    ]
    .map(String::from)
    .to_vec();
    let mut cells = BTreeSet::new();
    let mut firsts = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        assert_eq!(job["state"], "succeeded", "{job}");
        let label = job["label"].as_str().unwrap().to_string();
        assert!(labels.contains(&label), "{label}");
        assert!(
            cells.insert((i / 6, label.clone(), job["agent_id"].as_i64().unwrap())),
            "{job}"
        );
        if i % 6 == 0 {
            firsts.push((label, job["agent_id"].as_i64().unwrap()));
        }
    }
    assert_eq!(
        firsts,
        vec![
            (labels[0].clone(), first),
            (labels[1].clone(), second),
            (labels[2].clone(), first)
        ],
        "benchmarks and targets rotate by one per repetition"
    );

    // The figures: three samples per target, the times among them, the bandwidths.
    let figures = done["figures"].as_array().unwrap();
    let figure = |benchmark: i64, metric: &str| {
        figures
            .iter()
            .find(|f| f["benchmark"] == benchmark && f["metric"] == metric)
            .unwrap_or_else(|| panic!("no {metric} of benchmark {benchmark}: {figures:?}"))
    };
    for b in 0..3 {
        for metric in ["real time", "user time", "system time"] {
            let f = figure(b, metric);
            assert_eq!(f["unit"], "s");
            let cells = f["cells"].as_array().unwrap();
            assert_eq!(cells.len(), 2, "{f}");
            for cell in cells {
                assert_eq!(cell["n"], 3);
                let mut values: Vec<f64> = cell["samples"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["value"].as_f64().unwrap())
                    .collect();
                values.sort_by(f64::total_cmp);
                assert_eq!(cell["median"].as_f64().unwrap(), values[1]);
                assert_eq!(cell["min"].as_f64().unwrap(), values[0]);
            }
        }
    }
    for direction in ["H2D", "D2H", "D2D"] {
        figure(2, &format!("{direction} bandwidth"));
    }
    assert!(
        !figures
            .iter()
            .any(|f| f["metric"].as_str().unwrap().ends_with(" min")),
        "per-run spreads are not figures of their own"
    );
    // No native baseline among two native hosts? The first native target is the baseline.
    let overheads = done["overheads"].as_array().unwrap();
    assert!(!overheads.is_empty());
    for o in overheads {
        assert_eq!(o["baseline"], 0);
        assert_eq!(o["target"], 1);
        let (low, high) = (o["low"].as_f64().unwrap(), o["high"].as_f64().unwrap());
        assert!(low <= high, "{o}");
        assert_eq!(o["significant"], !(low <= 0.0 && 0.0 <= high), "{o}");
    }

    // The CSV holds every sample the API shows, value for value.
    let response = setup
        .ada
        .get(format!("{base}/api/v1/experiments/{id}/results.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let mut from_csv = BTreeMap::new();
    for record in reader.records() {
        let record = record.unwrap();
        from_csv.insert(
            (
                record[column("job")].to_string(),
                record[column("metric")].to_string(),
            ),
            record[column("value")].parse::<f64>().unwrap(),
        );
        assert_eq!(&record[column("simulated")], "true");
    }
    let mut from_api = BTreeMap::new();
    for f in figures {
        for cell in f["cells"].as_array().unwrap() {
            for s in cell["samples"].as_array().unwrap() {
                from_api.insert(
                    (
                        s["job"].to_string(),
                        f["metric"].as_str().unwrap().to_string(),
                    ),
                    s["value"].as_f64().unwrap(),
                );
            }
        }
    }
    assert_eq!(from_csv, from_api);

    // Every chart is an SVG with its title; the times, bandwidth and sizes are among them.
    let charts = done["charts"].as_array().unwrap();
    let names: BTreeSet<&str> = charts.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for wanted in [
        "times-0",
        "times-1",
        "times-2",
        "bandwidth-2",
        "sizes-vector-add",
        "overhead-real-time",
    ] {
        assert!(names.contains(wanted), "{wanted} in {names:?}");
    }
    for chart in charts {
        let response = setup
            .ada
            .get(format!("{base}{}", chart["url"].as_str().unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{chart}");
        assert_eq!(response.headers()["content-type"], "image/svg+xml");
        let svg = response.text().await.unwrap();
        assert!(
            svg.starts_with("<svg") || svg.starts_with("<?xml"),
            "{chart}"
        );
        assert!(
            svg.contains("simulated GPU"),
            "{chart}: the chart says it is simulated"
        );
    }
    let (status, _) = get(
        &setup.bob,
        format!("{base}/api/v1/experiments/{id}/charts/times-0.svg"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Compared with itself: every figure, no difference.
    let (status, same) = get(
        &setup.ada,
        format!("{base}/api/v1/experiments/compare?a={id}&b={id}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{same}");
    let rows = same["rows"].as_array().unwrap();
    assert!(rows.len() >= figures.len(), "{} rows", rows.len());
    assert!(
        rows.iter()
            .all(|r| r["difference"]["significant"] == false && r["difference"]["absolute"] == 0.0)
    );

    let (status, _) = post(
        &setup.ada,
        format!("{base}/api/v1/experiments/{id}/cancel"),
        json!({}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "an ended experiment is not cancelled"
    );
    let (status, list) = get(&setup.admin, format!("{base}/api/v1/experiments")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        list.as_array().unwrap().iter().any(|e| e["id"] == id),
        "admins see everyone's"
    );
    let (_, bobs) = get(&setup.bob, format!("{base}/api/v1/experiments")).await;
    assert!(bobs.as_array().unwrap().is_empty());
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn variants_are_requested_approved_at_once_and_released_when_the_experiment_ends() {
    let mut setup = setup(None).await;
    setup.config.quotas.requests = 4;
    let portal = Portal::start(setup.config.clone()).await.unwrap();
    let base = format!("http://{}", portal.address);
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
    let (native, _native_agent) = native_host(&setup.admin, &base, "bench-01").await;

    // Six VMs (1, 2, 4 vCPUs under KVM and Xen) pass a quota of four open requests: refused,
    // and nothing is left behind.
    let (status, answer) = post(
        &setup.ada,
        format!("{base}/api/v1/experiments"),
        json!({ "name": "too many", "plugins": [{ "plugin": "clock" }],
                "targets": [{ "agent": native }, { "variant": { "gpu_model": "H100 PCIe" } }] }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("quota"),
        "{answer}"
    );
    let (_, requests) = get(&setup.ada, format!("{base}/api/v1/requests")).await;
    assert!(
        requests
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "denied"),
        "the requests filed before the refusal are withdrawn: {requests}"
    );

    let (status, created) = post(
        &setup.ada,
        format!("{base}/api/v1/experiments"),
        json!({ "name": "vCPUs", "plugins": [{ "plugin": "clock" }],
                "targets": [{ "agent": native },
                            { "variant": { "gpu_model": "H100 PCIe", "vcpus": [1, 2], "hypervisors": ["kvm"],
                                           "memory_mib": 2048, "disk_gib": 10 } }],
                "repetitions": 2 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    let (_, shown) = get(&setup.ada, format!("{base}/api/v1/experiments/{id}")).await;
    let targets = shown["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 3);
    assert_eq!(targets[1]["label"], "KVM 1 vCPU");
    assert_eq!(targets[2]["label"], "KVM 2 vCPU");
    assert!(
        targets[1]["status"]
            .as_str()
            .unwrap()
            .starts_with("waiting for approval of request"),
        "{shown}"
    );
    for who in [&setup.ada, &setup.bob] {
        let (status, _) = post(
            who,
            format!("{base}/api/v1/experiments/{id}/approve"),
            json!({}),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, approved) = post(
        &setup.admin,
        format!("{base}/api/v1/experiments/{id}/approve"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["approved"], 2);

    // The VMs run; their agents start with the tokens their seeds carry.
    let vms: Vec<i64> = wait_for("both VMs running", Duration::from_secs(60), || async {
        let (_, e) = get(&setup.ada, format!("{base}/api/v1/experiments/{id}")).await;
        let targets = e["targets"].as_array().cloned().unwrap_or_default();
        let vms: Vec<i64> = targets.iter().filter_map(|t| t["vm_id"].as_i64()).collect();
        let running = targets.iter().skip(1).all(|t| {
            let status = t["status"].as_str().unwrap_or_default();
            status.starts_with("waiting for the agent")
        });
        if vms.len() == 2 && running {
            Ok(vms)
        } else {
            Err(e["targets"].to_string())
        }
    })
    .await;
    let mut agents = Vec::new();
    for vm in &vms {
        let token = seed_token(&setup.admin, &base, *vm).await;
        agents.push(Agent::start(&base, &token, 1));
    }
    let done = experiment_in(&setup.ada, &base, id, &["succeeded", "failed"]).await;
    assert_eq!(done["summary"]["state"], "succeeded", "{}", done["summary"]);
    assert_eq!(done["summary"]["jobs_done"], 6);
    let overheads = done["overheads"].as_array().unwrap();
    assert!(overheads.iter().any(|o| o["target"] == 2));
    let names: Vec<&str> = done["charts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"vcpus"), "{names:?}");

    // Ended: both VMs are released, and the targets say so.
    wait_for("the variants released", Duration::from_secs(30), || async {
        let mut states = Vec::new();
        for vm in &vms {
            let (_, v) = get(&setup.ada, format!("{base}/api/v1/vms/{vm}")).await;
            states.push(v["state"].as_str().unwrap_or_default().to_string());
        }
        let (_, e) = get(&setup.ada, format!("{base}/api/v1/experiments/{id}")).await;
        let released = e["targets"]
            .as_array()
            .unwrap()
            .iter()
            .skip(1)
            .all(|t| t["status"] == "released");
        if released && states.iter().all(|s| s == "released") {
            Ok(())
        } else {
            Err(format!("{states:?} {}", e["targets"]))
        }
    })
    .await;

    // VMs of two GPU models are told apart by their model.
    let (status, created) = post(
        &setup.ada,
        format!("{base}/api/v1/experiments"),
        json!({ "name": "models", "plugins": [{ "plugin": "clock" }],
                "targets": [{ "variant": { "gpu_model": "H100 PCIe", "vcpus": [2], "hypervisors": ["kvm"],
                                           "memory_mib": 2048, "disk_gib": 10 } },
                            { "variant": { "gpu_model": "A100 PCIe 80GB", "vcpus": [2], "hypervisors": ["kvm"],
                                           "memory_mib": 2048, "disk_gib": 10 } }] }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let models = created["id"].as_i64().unwrap();
    let (_, shown) = get(&setup.ada, format!("{base}/api/v1/experiments/{models}")).await;
    let labels: Vec<&str> = shown["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        ["KVM 2 vCPU H100 PCIe", "KVM 2 vCPU A100 PCIe 80GB"]
    );
    let (status, _) = post(
        &setup.ada,
        format!("{base}/api/v1/experiments/{models}/cancel"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Cancelled while its VMs wait for approval: the requests are withdrawn.
    let (status, created) = post(
        &setup.ada,
        format!("{base}/api/v1/experiments"),
        json!({ "name": "cancelled", "plugins": [{ "plugin": "clock" }],
                "targets": [{ "variant": { "gpu_model": "H100 PCIe", "vcpus": [4], "hypervisors": ["xen"],
                                           "memory_mib": 2048, "disk_gib": 10 } }] }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let cancelled = created["id"].as_i64().unwrap();
    let (status, summary) = post(
        &setup.ada,
        format!("{base}/api/v1/experiments/{cancelled}/cancel"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    assert_eq!(summary["state"], "cancelled");
    let (_, shown) = get(&setup.ada, format!("{base}/api/v1/experiments/{cancelled}")).await;
    let request = shown["targets"][0]["request_id"].as_i64().unwrap();
    let (_, request) = get(&setup.ada, format!("{base}/api/v1/requests/{request}")).await;
    assert_eq!(request["state"], "denied", "{request}");
    drop(agents);
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

fn passage(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_passage"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PASSAGE_")) {
        command.env_remove(key);
    }
    command
        .env("PASSAGE_LOG", "warn")
        .env("PASSAGE_CONFIG", dir.join("passage.toml"))
        .env("PASSAGE_DATA_DIR", dir)
        .env("PASSAGE_PLUGIN_DIR", plugin_dir());
    command
}

fn output(command: &mut Command, stdin: &str) -> String {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `passage serve`, up and answering.
fn serve(dir: &Path) -> Child {
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
    assert!(line.starts_with("Passage is running at "), "{line}");
    child
}

#[tokio::test]
async fn a_server_killed_mid_experiment_resumes_and_runs_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("passage.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\n[agents]\nheartbeat_secs = 1\noffline_after_secs = 30\n"
        ),
    )
    .unwrap();
    output(
        passage(dir.path()).args(["user", "add", "ops", "--admin"]),
        "operator password\n",
    );
    let token = output(
        passage(dir.path()).args(["token", "create", "t", "--user", "ops"]),
        "",
    );
    let agent_token = output(
        passage(dir.path()).args(["agent", "add", "bench-01", "--by", "ops"]),
        "",
    );
    let http = common::client(&token);
    let base = format!("http://127.0.0.1:{port}");

    let mut server = serve(dir.path());
    let _agent = Agent::start(&base, &agent_token, 1);
    let (_, agents) = get(&http, format!("{base}/api/v1/agents")).await;
    let agent = agents[0]["id"].as_i64().unwrap();
    let (status, created) = post(
        &http,
        format!("{base}/api/v1/experiments"),
        json!({ "name": "killed", "plugins": [{ "plugin": "clock" }, { "plugin": "vector-add" }],
                "targets": [{ "agent": agent }], "repetitions": 6 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    // Killed once some jobs have ended and more are to come.
    wait_for(
        "the experiment to be under way",
        Duration::from_secs(120),
        || async {
            let (_, e) = get(&http, format!("{base}/api/v1/experiments/{id}")).await;
            let done = e["summary"]["jobs_done"].as_i64().unwrap_or(0);
            if (3..10).contains(&done) {
                Ok(())
            } else {
                Err(e["summary"].to_string())
            }
        },
    )
    .await;
    server.kill().unwrap();
    server.wait().unwrap();
    let mut server = serve(dir.path());
    // A new client: the old one's pooled connections died with the server.
    let http = common::client(&token);

    let done = experiment_in(&http, &base, id, &["succeeded", "failed"]).await;
    assert_eq!(done["summary"]["state"], "succeeded", "{}", done["summary"]);
    let jobs = jobs_of(&http, &base, id).await;
    assert_eq!(
        jobs.len(),
        12,
        "six repetitions of two benchmarks, each once"
    );
    let mut per_benchmark: BTreeMap<String, usize> = BTreeMap::new();
    for job in &jobs {
        *per_benchmark.entry(job["label"].to_string()).or_default() += 1;
    }
    assert_eq!(
        per_benchmark.values().copied().collect::<Vec<_>>(),
        [6, 6],
        "{per_benchmark:?}"
    );
    for job in &jobs {
        assert_eq!(job["state"], "succeeded", "nothing lost: {job}");
    }
    let figure = done["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["metric"] == "real time" && f["benchmark"] == 0)
        .unwrap()
        .clone();
    assert_eq!(figure["cells"][0]["n"], 6, "{figure}");
    server.kill().unwrap();
    server.wait().unwrap();
}
