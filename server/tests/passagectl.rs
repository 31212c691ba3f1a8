//! The `passagectl` binary against a real portal on the simulated host: tables and JSON, a
//! request filed, approved and its VM, and each kind of failure with its message and exit
//! status.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use passage_server::Portal;
use serde_json::Value;

/// What a run of `passagectl` gave.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `passagectl args` against `url`, with `token` in `PASSAGE_TOKEN` when given, away from
/// the user's own token file and variables.
async fn passagectl(url: &str, token: Option<&str>, args: &[&str]) -> Run {
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_passagectl"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PASSAGE_")) {
        command.env_remove(key);
    }
    command
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("PASSAGE_URL", url)
        .args(args);
    if let Some(token) = token {
        command.env("PASSAGE_TOKEN", token);
    }
    // The portal runs on this test's runtime: the child is waited for on another thread.
    let output: Output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// Runs `passagectl args` and fails unless it succeeds; returns what it printed.
async fn ok(url: &str, token: &str, args: &[&str]) -> String {
    let run = passagectl(url, Some(token), args).await;
    assert_eq!(
        run.code,
        Some(0),
        "passagectl {args:?}: {}{}",
        run.stdout,
        run.stderr
    );
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    run.stdout
}

/// The value after `key:` in `key: value` lines.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key:?} in:\n{text}"))
        .trim()
}

/// Writes `token` to a file of mode `mode` in `dir`.
fn token_file(dir: &Path, name: &str, token: &str, mode: u32) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passagectl_lists_files_approves_and_says_why_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(dir.path(), &[("simulated", "simulated")]);
    let admin = common::token_for(&config, "ops", true).await;
    let ada = common::token_for(&config, "ada", false).await;
    let plugin = common::stand_in_plugin(&config, "stand-in").await;
    let portal = Portal::start(config).await.unwrap();
    let url = format!("http://{}", portal.address);
    let refreshed = common::client(&admin)
        .post(format!("{url}/api/v1/inventory/refresh"))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 200);

    // The hosts and GPUs as tables: a header, then one line each.
    let hosts = ok(&url, &admin, &["hosts"]).await;
    let lines: Vec<&str> = hosts.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("STATE"),
        "{hosts}"
    );
    assert!(
        lines[1].starts_with("simulated")
            && lines[1].contains("reachable")
            && lines[1].contains(" 8 "),
        "{hosts}"
    );
    let gpus = ok(&url, &ada, &["gpus"]).await;
    let lines: Vec<&str> = gpus.lines().collect();
    assert_eq!(lines.len(), 9, "{gpus}");
    assert!(
        lines[0].starts_with("HOST") && lines[0].contains("MODEL"),
        "{gpus}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains("H100 PCIe")).count(),
        4,
        "{gpus}"
    );
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.starts_with("simulated") && l.contains("available")),
        "{gpus}"
    );
    // The columns line up: every row's model starts where the title does.
    let model_at = lines[0].find("MODEL").unwrap();
    for line in &lines[1..] {
        assert!(
            line[..model_at].ends_with("  ") && !line[model_at..].starts_with(' '),
            "{gpus}"
        );
    }

    // --json is the API's answer, filters included.
    let all: Vec<Value> = serde_json::from_str(&ok(&url, &ada, &["--json", "gpus"]).await).unwrap();
    assert_eq!(all.len(), 8);
    assert!(all.iter().all(|g| g["state"] == "available"));
    let h100s: Vec<Value> =
        serde_json::from_str(&ok(&url, &ada, &["gpus", "--model", "H100 PCIe", "--json"]).await)
            .unwrap();
    assert_eq!(h100s.len(), 4);

    // Who the token is; a token file readable by its owner alone works too.
    let me = ok(&url, &admin, &["me"]).await;
    assert_eq!((field(&me, "name"), field(&me, "admin")), ("ops", "yes"));
    let private = token_file(dir.path(), "ada-token", &ada, 0o600);
    let me = passagectl(&url, None, &["--token-file", &private, "me"]).await;
    assert_eq!(me.code, Some(0), "{}", me.stderr);
    assert_eq!(
        (field(&me.stdout, "name"), field(&me.stdout, "admin")),
        ("ada", "no")
    );

    // A request with a bad field is refused with the field named.
    let bad = passagectl(
        &url,
        Some(&ada),
        &[
            "requests",
            "file",
            "--model",
            "Voodoo 2",
            "--hours",
            "24",
            "--image",
            "debian-12",
            "--reason",
            "x",
        ],
    )
    .await;
    assert_eq!(bad.code, Some(1), "{}", bad.stderr);
    assert!(
        bad.stderr.contains("HTTP 422")
            && bad
                .stderr
                .contains("gpu_model: \"Voodoo 2\" is not a GPU model here"),
        "{}",
        bad.stderr
    );
    assert!(bad.stdout.is_empty());

    // Ada files a request; she cannot approve it herself.
    let filed = ok(
        &url,
        &ada,
        &[
            "requests",
            "file",
            "--model",
            "H100 PCIe",
            "--count",
            "1",
            "--hours",
            "24",
            "--image",
            "debian-12",
            "--purpose",
            "try passagectl",
        ],
    )
    .await;
    assert_eq!(field(&filed, "state"), "pending");
    let id = field(&filed, "id").to_string();
    let refused = passagectl(&url, Some(&ada), &["requests", "approve", &id]).await;
    assert_eq!(refused.code, Some(1));
    assert_eq!(
        refused.stderr.trim(),
        "passagectl: only admins may do this (HTTP 403 Forbidden)"
    );
    let listed = ok(&url, &ada, &["requests", "list"]).await;
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("ada") && l.contains("pending")),
        "{listed}"
    );

    // The admin approves it: its GPU is claimed and its VM made.
    let approved = ok(&url, &admin, &["requests", "approve", &id]).await;
    assert_eq!(field(&approved, "state"), "placed", "{approved}");
    assert_eq!(field(&approved, "host"), "simulated");
    let shown = ok(&url, &ada, &["requests", "show", &id]).await;
    assert_eq!(field(&shown, "reason"), "try passagectl");
    let vms = common::wait_for("the VM to run", Duration::from_secs(30), || {
        let (url, admin) = (url.clone(), admin.clone());
        async move {
            let vms = ok(&url, &admin, &["vms", "list"]).await;
            let row = vms
                .lines()
                .skip(1)
                .find(|l| l.contains(" ada "))
                .map(str::to_string);
            match row {
                Some(row) if row.contains("running") => Ok((vms, row)),
                _ => Err(vms),
            }
        }
    })
    .await;
    let (table, row) = vms;
    assert!(
        table.starts_with("ID") && table.contains("LEASE ENDS"),
        "{table}"
    );
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[1..6],
        [id.as_str(), "ada", "running", "simulated", "H100"],
        "{row}"
    );
    let vm = ok(&url, &ada, &["vms", "show", cells[0]]).await;
    assert_eq!(field(&vm, "state"), "running");
    assert_eq!(field(&vm, "request"), id);
    let vm_json: Value =
        serde_json::from_str(&ok(&url, &ada, &["vms", "show", cells[0], "--json"]).await).unwrap();
    assert_eq!(vm_json["gpus"].as_array().unwrap().len(), 1);

    // A second request, denied with the reason.
    let second = ok(
        &url,
        &ada,
        &[
            "requests",
            "file",
            "--model",
            "L40S",
            "--hours",
            "2",
            "--image",
            "debian-12",
            "--reason",
            "more",
        ],
    )
    .await;
    let second = field(&second, "id").to_string();
    let denied = ok(
        &url,
        &admin,
        &["requests", "deny", &second, "--reason", "not today"],
    )
    .await;
    assert_eq!(
        (field(&denied, "state"), field(&denied, "why")),
        ("denied", "not today")
    );

    // No experiments yet: the table is its header.
    let experiments = ok(&url, &ada, &["experiments", "list"]).await;
    assert_eq!(experiments, "ID  NAME  OWNER  STATE  JOBS  CREATED\n");
    assert_eq!(
        ok(&url, &ada, &["--json", "jobs", "list"]).await.trim(),
        "[]"
    );

    // A job queued on a native host's agent, listed, shown and cancelled.
    let (status, agent) = common::post(
        &common::client(&admin),
        format!("{url}/api/v1/agents"),
        serde_json::json!({ "name": "gpu-01-native" }),
    )
    .await;
    assert_eq!(status, 201, "{agent}");
    let (status, queued) = common::post(
        &common::client(&admin),
        format!("{url}/api/v1/jobs"),
        serde_json::json!({ "plugin": plugin, "agent": agent["id"] }),
    )
    .await;
    assert_eq!(status, 201, "{queued}");
    let job = queued["jobs"][0].to_string();
    let jobs = ok(&url, &admin, &["jobs", "list", "--state", "queued"]).await;
    let row = jobs.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with(&job) && row.contains("stand-in") && row.contains("queued"),
        "{jobs}"
    );
    let shown = ok(&url, &admin, &["jobs", "show", &job]).await;
    assert_eq!(field(&shown, "params"), "size=1024");
    let cancelled = ok(&url, &admin, &["jobs", "cancel", &job]).await;
    assert_eq!(field(&cancelled, "state"), "cancelled");
    let again = passagectl(&url, Some(&admin), &["jobs", "cancel", &job]).await;
    assert_eq!(again.code, Some(1));
    assert!(again.stderr.contains("HTTP 409"), "{}", again.stderr);

    // A token the portal does not know: exit 1, told to sign in.
    let wrong = passagectl(&url, Some("psg_0000"), &["me"]).await;
    assert_eq!(wrong.code, Some(1));
    assert!(
        wrong.stderr.contains("sign in first") && wrong.stderr.contains("HTTP 401"),
        "{}",
        wrong.stderr
    );
    assert!(!wrong.stderr.contains("psg_0000"), "{}", wrong.stderr);

    // No such VM: the API's 404.
    let missing = passagectl(&url, Some(&ada), &["vms", "show", "999"]).await;
    assert_eq!(missing.code, Some(1));
    assert!(missing.stderr.contains("HTTP 404"), "{}", missing.stderr);

    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_that_does_not_answer_is_named_with_exit_3() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let run = passagectl(&url, Some("psg_any"), &["gpus"]).await;
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with(&format!("passagectl: cannot reach the portal at {url}: ")),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_others_can_read_is_refused_and_no_token_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let open = token_file(dir.path(), "token", "psg_secret", 0o644);
    let run = passagectl("http://127.0.0.1:9", None, &["--token-file", &open, "me"]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "permissions 0644 for the token file {open} are too open"
        )) && run.stderr.contains(&format!("chmod 600 {open}")),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("psg_secret"));

    let none = passagectl("http://127.0.0.1:9", None, &["me"]).await;
    assert_eq!(none.code, Some(2), "{}", none.stderr);
    assert!(
        none.stderr.contains("no API token found")
            && none.stderr.contains("PASSAGE_TOKEN")
            && none.stderr.contains("config/passage/token"),
        "{}",
        none.stderr
    );

    // Bad arguments are clap's: exit 2 with the usage.
    let bad = passagectl(
        "http://127.0.0.1:9",
        Some("psg_any"),
        &["vms", "extend", "1"],
    )
    .await;
    assert_eq!(bad.code, Some(2));
    assert!(bad.stderr.contains("--hours"), "{}", bad.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_in_pages_is_read_to_its_end() {
    use axum::extract::Query;
    use axum::http::header;
    use axum::response::IntoResponse;

    // A portal stand-in that answers `/api/v1/jobs` in three pages, as the portal's paging
    // does: a `Link` header names the next one, the filters kept.
    async fn jobs(Query(query): Query<Vec<(String, String)>>) -> axum::response::Response {
        let cursor = query
            .iter()
            .find(|(k, _)| k == "cursor")
            .map(|(_, v)| v.as_str());
        assert!(
            query.contains(&("state".into(), "failed".into())),
            "{query:?}"
        );
        let (body, next) = match cursor {
            None => ("[{\"id\": 3}, {\"id\": 2}]", Some("2")),
            Some("2") => ("[ ]", Some("x")),
            _ => ("[{\"id\":1}]", None),
        };
        let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
        if let Some(cursor) = next {
            let link = format!("</api/v1/jobs?state=failed&cursor={cursor}>; rel=\"next\"");
            response
                .headers_mut()
                .insert(header::LINK, link.parse().unwrap());
        }
        response
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/api/v1/jobs", axum::routing::get(jobs));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let run = passagectl(
        &url,
        Some("psg_any"),
        &["jobs", "list", "--state", "failed", "--json"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "[{\"id\": 3}, {\"id\": 2},{\"id\":1}]");
}
