//! A hostile plugin against the real job process: `passage-agent run --events`, as `serve` starts
//! it, on the simulated GPU. Each attack must end in a clear error, within bounded time and
//! memory (the child's peak RSS, measured by the kernel), and the process must be confined while
//! the plugin runs. The CUDA-only attacks (a kernel that never ends) run on the GPU machine
//! (`benches/gpu.sh`).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn misbehave() -> PathBuf {
    let dir = match std::env::var_os("PASSAGE_PLUGIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
            .join("plugins"),
    };
    let path = dir.join("test/misbehave.wasm");
    assert!(
        path.is_file(),
        "{}: build the plugins first with ./x build",
        path.display()
    );
    path
}

/// What a finished job process left.
struct Ended {
    result: Value,
    events: Vec<Value>,
    peak_rss_mib: u64,
    elapsed: Duration,
    status: String,
}

/// Starts `run --events` on mode `mode` with `extra` arguments; `watch` sees the child's pid
/// while it runs.
fn run_job(mode: &str, extra: &[&str], watch: impl FnOnce(u32)) -> Ended {
    let cache = tempfile::tempdir().unwrap();
    let started = Instant::now();
    // Waited for by `wait_with_peak_rss`, which reads the peak RSS that `Child::wait` drops.
    #[allow(clippy::zombie_processes)]
    let mut child = Command::new(env!("CARGO_BIN_EXE_passage-agent"))
        .arg("run")
        .arg(misbehave())
        .args(["--events", "--backend", "fake", "--param"])
        .arg(format!("mode={mode}"))
        .arg("--cache-dir")
        .arg(cache.path())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });
    watch(pid);
    let (status, peak_rss_mib) = wait_with_peak_rss(pid);
    let elapsed = started.elapsed();
    let text = reader.join().unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:.200}")))
        .collect();
    let result = events
        .iter()
        .rev()
        .find(|e| e["event"] == "result")
        .cloned()
        .unwrap_or_else(|| panic!("no result from {mode}: {status}"));
    Ended {
        result,
        events,
        peak_rss_mib,
        elapsed,
        status,
    }
}

/// Waits for `pid` and returns how it ended and its peak resident memory in MiB.
#[allow(unsafe_code)]
fn wait_with_peak_rss(pid: u32) -> (String, u64) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for the kernel to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for; both out-pointers are valid.
    let waited = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid as i32, "wait4");
    let how = if libc::WIFEXITED(status) {
        format!("exit code {}", libc::WEXITSTATUS(status))
    } else {
        format!("signal {}", libc::WTERMSIG(status))
    };
    (how, usage.ru_maxrss as u64 / 1024)
}

fn error_of(ended: &Ended) -> String {
    assert_eq!(ended.result["ok"], false, "{}", ended.result);
    ended.result["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn the_job_process_is_confined_while_the_plugin_runs() {
    let mut seen = String::new();
    let ended = run_job("spin", &["--timeout", "4"], |pid| {
        // Wait until the process has confined itself (the seccomp filter is its last step before
        // it loads the plugin), then read what the kernel says; the assertions below say what
        // was last seen if that never happens.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut status = String::new();
        while std::time::Instant::now() < deadline {
            match std::fs::read_to_string(format!("/proc/{pid}/status")) {
                Ok(now) if now.contains("Seccomp:\t2") => {
                    status = now;
                    break;
                }
                Ok(now) => status = now,
                Err(e) => {
                    status = format!("the job process is gone: {e}");
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
        seen = format!("{status}\n{limits}");
    });
    assert!(seen.contains("NoNewPrivs:\t1"), "{seen}");
    assert!(seen.contains("Seccomp:\t2"), "seccomp filter mode: {seen}");
    let core = seen
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");
    assert!(
        seen.lines()
            .any(|l| l.starts_with("Max file size") && l.contains("268435456")),
        "{seen}"
    );
    let error = error_of(&ended);
    assert!(
        error.contains("time limit of 4 s") && error.contains("jobs.time_limit_secs"),
        "{error}"
    );
    assert!(
        ended.elapsed < Duration::from_secs(15),
        "{:?}",
        ended.elapsed
    );
    // A kernel with Landlock says nothing; one without says so in the job's log.
    let warnings: Vec<&Value> = ended
        .events
        .iter()
        .filter(|e| e["event"] == "log" && e["level"] == "warn")
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn an_escape_from_inside_the_sandbox_finds_nothing() {
    let ended = run_job("escape", &[], |_| {});
    assert_eq!(ended.result["ok"], true, "{}", ended.result);
}

#[test]
fn floods_end_in_limit_errors_in_bounded_memory_and_time() {
    for (mode, says) in [
        ("metric-flood", "metrics (report.metric calls)"),
        ("metric-bytes-flood", "bytes of reported text"),
        ("log-flood", "log lines (report.log calls)"),
        ("huge-log", "bytes of reported text"),
    ] {
        let ended = run_job(mode, &["--timeout", "60"], |_| {});
        let error = error_of(&ended);
        assert!(
            error.contains("limit exceeded") && error.contains(says),
            "{mode}: {error}"
        );
        assert!(
            ended.peak_rss_mib < 512,
            "{mode}: peak RSS {} MiB",
            ended.peak_rss_mib
        );
        assert!(
            ended.elapsed < Duration::from_secs(30),
            "{mode}: {:?}",
            ended.elapsed
        );
        eprintln!(
            "{mode}: {} in {:?}, peak RSS {} MiB",
            ended.status, ended.elapsed, ended.peak_rss_mib
        );
    }
}

#[test]
fn host_files_stay_out_of_compiler_messages() {
    for mode in ["include-file", "include-macro", "include-disguised"] {
        let ended = run_job(mode, &[], |_| {});
        let error = error_of(&ended);
        assert!(
            error.contains("is refused") || error.contains("literally"),
            "{mode}: {error}"
        );
        assert!(!error.contains("root:"), "{mode}: {error}");
    }
}

#[test]
fn host_memory_is_limited_apart_from_gpu_memory() {
    let ended = run_job(
        "host-hog",
        &["--host-memory-mib", "2048", "--gpu-memory-mib", "65536"],
        |_| {},
    );
    let error = error_of(&ended);
    assert!(
        error.contains("host memory limit of 2147483648 bytes") && error.contains("after 2 GiB"),
        "{error}"
    );
}
