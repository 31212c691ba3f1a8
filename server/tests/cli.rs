//! The `passage` binary: help, configuration errors, start-up errors and graceful shutdown.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn passage() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_passage"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PASSAGE_")) {
        command.env_remove(key);
    }
    command.env("PASSAGE_LOG", "warn");
    command
}

#[test]
fn help_names_the_commands() {
    let output = passage().arg("--help").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("serve") && text.contains("--config"),
        "{text}"
    );
}

#[test]
fn an_unknown_key_stops_the_server_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passage.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:0\"\ndatabse_url = \"sqlite://x.db\"\n",
    )
    .unwrap();
    let output = passage()
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8(output.stderr).unwrap();
    assert!(text.contains(&format!("{}:2:1", file.display())), "{text}");
    assert!(text.contains("databse_url"), "{text}");
}

#[test]
fn a_missing_config_file_is_named() {
    let output = passage()
        .args(["serve", "--config", "/nonexistent/passage.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8(output.stderr).unwrap();
    assert!(text.contains("/nonexistent/passage.toml"), "{text}");
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let output = passage()
        .arg("serve")
        .env("PASSAGE_LISTEN", "everywhere")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("PASSAGE_LISTEN")
    );
}

#[test]
fn an_unwritable_database_location_is_reported_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, "").unwrap();
    let output = passage()
        .arg("serve")
        .env("PASSAGE_DATA_DIR", dir.path())
        .env("PASSAGE_LISTEN", "127.0.0.1:0")
        .env(
            "PASSAGE_DATABASE_URL",
            format!("sqlite://{}/passage.db", blocker.display()),
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8(output.stderr).unwrap();
    assert!(
        text.contains("cannot create the database directory"),
        "{text}"
    );
    assert!(text.contains(&blocker.display().to_string()), "{text}");
}

#[test]
fn sigterm_shuts_the_server_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = passage()
        .arg("serve")
        .env("PASSAGE_DATA_DIR", dir.path())
        .env("PASSAGE_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("Passage is running at http://127.0.0.1:"),
        "{line}"
    );
    assert!(dir.path().join("passage.db").exists());
    assert!(dir.path().join("simulated-host.xml").exists());

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn with_input(mut command: Command, input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn accounts_and_tokens_are_made_from_the_command_line_and_stored_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let mut command = passage();
        command.args(args).env("PASSAGE_DATA_DIR", dir.path());
        command
    };
    let password = "a password nobody guesses";
    let added = with_input(
        cli(&["user", "add", "ops", "--admin"]),
        &format!("{password}\n"),
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&added.stdout).trim(),
        "added ops (admin)"
    );

    let again = with_input(cli(&["user", "add", "ops"]), &format!("{password}\n"));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already taken"));
    let weak = with_input(cli(&["user", "add", "ada"]), "short\n");
    assert!(String::from_utf8_lossy(&weak.stderr).contains("at least 10 characters"));

    let token = cli(&["token", "create", "nightly", "--user", "ops"])
        .output()
        .unwrap();
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("psg_") && token.len() == 68, "{token}");
    let missing = cli(&["token", "create", "x", "--user", "nobody"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no user \"nobody\""));

    // Neither secret is anywhere in the database files.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("passage.db")
        {
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(password),
                "{} holds the password",
                path.display()
            );
            assert!(
                !text.contains(&token[4..]),
                "{} holds the token",
                path.display()
            );
        }
    }
}

#[test]
fn agent_add_prints_a_token_once_for_admins_only() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], input: &str| {
        let mut command = passage();
        command.args(args).env("PASSAGE_DATA_DIR", dir.path());
        with_input(command, input)
    };
    assert!(
        run(
            &["user", "add", "ops", "--admin"],
            "a long enough password\n"
        )
        .status
        .success()
    );
    assert!(
        run(&["user", "add", "ada"], "a long enough password\n")
            .status
            .success()
    );
    let added = run(&["agent", "add", "bench-01", "--by", "ops"], "");
    assert!(added.status.success(), "{added:?}");
    let token = String::from_utf8(added.stdout).unwrap();
    assert!(
        token.trim().starts_with("psa_") && token.trim().len() == 68,
        "{token}"
    );
    let again = run(&["agent", "add", "bench-01", "--by", "ops"], "");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let user = run(&["agent", "add", "bench-02", "--by", "ada"], "");
    assert!(!user.status.success());
    assert!(String::from_utf8_lossy(&user.stderr).contains("only admins"));
    // The database and its write-ahead log hold the hash only.
    for file in std::fs::read_dir(dir.path()).unwrap() {
        let path = file.unwrap().path();
        if path.to_string_lossy().contains("passage.db") {
            let stored = std::fs::read(&path).unwrap();
            assert!(
                !stored
                    .windows(token.trim().len())
                    .any(|w| w == token.trim().as_bytes()),
                "{} holds the token",
                path.display()
            );
        }
    }
}

#[test]
fn json_logs_carry_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = passage()
        .arg("serve")
        .env("PASSAGE_DATA_DIR", dir.path())
        .env("PASSAGE_LISTEN", "127.0.0.1:0")
        .env("PASSAGE_LOG_FORMAT", "json")
        .env("PASSAGE_LOG", "info,tower_http=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .strip_prefix("Passage is running at http://")
        .unwrap_or_else(|| panic!("{line}"))
        .trim_end_matches('/')
        .to_string();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream
        .write_all(
            b"GET /healthz HTTP/1.1\r\nHost: portal\r\nX-Request-Id: probe-7\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-request-id: probe-7"),
        "{answer}"
    );

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let logs = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["span"]["id"] == "probe-7" && l["span"]["route"] == "/healthz"),
        "{logs}"
    );
}

#[test]
fn an_unknown_log_format_is_refused() {
    let output = passage()
        .arg("serve")
        .env("PASSAGE_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8(output.stderr).unwrap();
    assert!(
        text.contains("log_format") && text.contains("\"xml\""),
        "{text}"
    );
}
