//! One job from the portal, run in a `passage-agent run --events` process of its own.
//!
//! A process per job is what makes runs independent: a CUDA kernel fault poisons the process
//! that saw it, and a hung driver call is not interrupted by the sandbox's clock, but a process
//! can always be killed. The child dies with this agent, too.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::BackendKind;
use crate::portal::{Job, Outcome, Portal, PortalError};

/// Extra time a child gets past the job's limit (which the sandbox enforces itself) before it
/// is killed.
const KILL_GRACE: Duration = Duration::from_secs(30);
/// The longest line of a child's event stream: the final result, whose metrics and logs the
/// run's limits keep well below this.
const MAX_EVENT_LINE: usize = 8 << 20;
/// How much of a child's standard error is kept, from its end, to explain a failure.
const STDERR_TAIL: usize = 4000;
/// Progress is sent at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What every job of this agent shares.
#[derive(Debug, Clone)]
pub struct Runner {
    /// This program, to start children with.
    pub exe: PathBuf,
    /// The GPU backend.
    pub backend: BackendKind,
    /// Compiled plugins, PTX, and fetched components live here.
    pub cache_dir: PathBuf,
}

impl Runner {
    /// Runs `job` to its end (or until `stop` is set) and says how it went.
    pub fn run(&self, portal: &Portal, job: &Job, stop: &Arc<AtomicBool>) -> Outcome {
        let failed = |error: String| Outcome {
            ok: false,
            error: Some(error),
            result: None,
        };
        let plugin = match self.component(portal, job) {
            Ok(path) => path,
            Err(e) => return failed(format!("cannot fetch the plugin: {e}")),
        };
        if job.devices.is_empty() {
            return failed("the portal gave the job no device".into());
        }
        let mut command = Command::new(&self.exe);
        command
            .arg("run")
            .arg(&plugin)
            .arg("--events")
            .args(["--backend", self.backend.as_str()])
            .args(["--timeout", &job.time_limit_secs.to_string()])
            .args(["--gpu-memory-mib", &job.gpu_memory_mib.to_string()])
            .args(["--wasm-memory-mib", &job.wasm_memory_mib.to_string()])
            .arg("--cache-dir")
            .arg(&self.cache_dir);
        for device in &job.devices {
            command.arg("--device").arg(device.to_string());
        }
        for (name, value) in &job.params {
            command.arg("--param").arg(format!("{name}={value}"));
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut command);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => return failed(format!("cannot start {}: {e}", self.exe.display())),
        };
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let errors = std::thread::spawn(move || tail(stderr, STDERR_TAIL));
        let child = Arc::new(Mutex::new(child));
        let deadline = Instant::now() + Duration::from_secs(job.time_limit_secs) + KILL_GRACE;
        let done = Arc::new(AtomicBool::new(false));
        let timed_out = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let (child, done, stop, timed_out) =
                (child.clone(), done.clone(), stop.clone(), timed_out.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let late = Instant::now() >= deadline;
                    if late || stop.load(Ordering::Relaxed) {
                        timed_out.store(late, Ordering::Relaxed);
                        let _ = child.lock().expect("child lock").kill();
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };

        let mut result = None;
        let mut last_progress: Option<Instant> = None;
        let mut overflow = None;
        let mut lines = BoundedLines::new(stdout, MAX_EVENT_LINE);
        while let Some(line) = lines.next_line() {
            let line = match line {
                Ok(line) => line,
                Err(too_long) => {
                    // The child is not behaving as `run` does: stop it and say why.
                    overflow = Some(too_long);
                    let _ = child.lock().expect("child lock").kill();
                    break;
                }
            };
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            match event["event"].as_str() {
                Some("progress") => {
                    if last_progress.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
                        continue;
                    }
                    last_progress = Some(Instant::now());
                    let fraction = event["fraction"].as_f64().unwrap_or(0.0) as f32;
                    let note = event["note"].as_str().unwrap_or_default();
                    match portal.progress(job.id, fraction, note) {
                        Ok(true) | Err(PortalError::Unavailable(_)) => {}
                        Ok(false) | Err(_) => stop.store(true, Ordering::Relaxed),
                    }
                }
                Some("result") => result = Some(event),
                _ => {}
            }
        }
        let status = loop {
            if let Ok(Some(status)) = child.lock().expect("child lock").try_wait() {
                break status;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        done.store(true, Ordering::Relaxed);
        let _ = watchdog.join();
        let stderr_tail = errors.join().unwrap_or_default();

        if let Some(too_long) = overflow {
            return failed(too_long);
        }
        match result {
            Some(event) => Outcome {
                ok: event["ok"].as_bool().unwrap_or(false),
                error: event["error"].as_str().map(String::from),
                result: event.get("result").cloned(),
            },
            None if timed_out.load(Ordering::Relaxed) => failed(format!(
                "the run was still going {} s past its time limit of {} s and was killed",
                KILL_GRACE.as_secs(),
                job.time_limit_secs
            )),
            None if stop.load(Ordering::Relaxed) => failed("stopped: the job was cancelled".into()),
            None => failed(format!(
                "the run's process ended ({}) without a result{}",
                describe_status(&status),
                if stderr_tail.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", stderr_tail.trim())
                }
            )),
        }
    }

    /// The job's component on disk, fetched from the portal once and kept by its hash.
    fn component(&self, portal: &Portal, job: &Job) -> anyhow::Result<PathBuf> {
        let valid_hash =
            job.sha256.len() == 64 && job.sha256.chars().all(|c| c.is_ascii_hexdigit());
        anyhow::ensure!(valid_hash, "{:?} is not a SHA-256", job.sha256);
        let dir = self.cache_dir.join("plugins");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.wasm", job.sha256));
        if path.is_file() {
            return Ok(path);
        }
        let mut delay = Duration::from_secs(1);
        let bytes = loop {
            match portal.component(&job.sha256) {
                Ok(bytes) => break bytes,
                Err(PortalError::Unavailable(e)) if delay <= Duration::from_secs(16) => {
                    eprintln!(
                        "passage-agent: fetching {} failed ({e}); retrying",
                        job.plugin
                    );
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(e) => return Err(e.into()),
            }
        };
        write_atomically(&path, &bytes)?;
        Ok(path)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)
}

/// The last `limit` bytes of what a child wrote, read to its end in pieces, never all at once.
fn tail(mut from: impl Read, limit: usize) -> String {
    let mut kept: std::collections::VecDeque<u8> = std::collections::VecDeque::with_capacity(limit);
    let mut chunk = [0u8; 8192];
    loop {
        match from.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend(&chunk[..n]);
                let excess = kept.len().saturating_sub(limit);
                kept.drain(..excess);
            }
        }
    }
    String::from_utf8_lossy(kept.make_contiguous()).into_owned()
}

/// Lines of a child's event stream, each at most `max` bytes: a longer one is an error, read
/// no further than its limit.
struct BoundedLines<R> {
    reader: BufReader<R>,
    max: usize,
}

impl<R: Read> BoundedLines<R> {
    fn new(from: R, max: usize) -> BoundedLines<R> {
        BoundedLines {
            reader: BufReader::new(from),
            max,
        }
    }

    /// The next line without its end, None at the end of the stream.
    fn next_line(&mut self) -> Option<Result<String, String>> {
        let mut line = Vec::new();
        let read = (&mut self.reader)
            .take(self.max as u64 + 1)
            .read_until(b'\n', &mut line)
            .ok()?;
        if read == 0 {
            return None;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() > self.max {
            return Some(Err(format!(
                "the run's process wrote a line of more than {} bytes and was stopped",
                self.max
            )));
        }
        Some(Ok(String::from_utf8_lossy(&line).into_owned()))
    }
}

fn describe_status(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// Makes the child receive SIGKILL when this process dies, so that no run outlives its agent.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_are_read_within_their_bound() {
        let stream = format!("{{\"a\":1}}\n{}\nshort\n", "x".repeat(100));
        let mut lines = BoundedLines::new(stream.as_bytes(), 32);
        assert_eq!(lines.next_line(), Some(Ok("{\"a\":1}".to_string())));
        let too_long = lines.next_line().unwrap().unwrap_err();
        assert!(too_long.contains("more than 32 bytes"), "{too_long}");
        // A line of exactly the bound, and a last line without its end, are fine.
        let mut lines = BoundedLines::new("0123456789\nend".as_bytes(), 10);
        assert_eq!(lines.next_line(), Some(Ok("0123456789".to_string())));
        assert_eq!(lines.next_line(), Some(Ok("end".to_string())));
        assert_eq!(lines.next_line(), None);
    }

    #[test]
    fn only_the_tail_of_standard_error_is_kept() {
        let flood = "a".repeat(1 << 20) + "the last words";
        let kept = tail(flood.as_bytes(), 20);
        assert_eq!(kept.len(), 20);
        assert!(kept.ends_with("the last words"), "{kept}");
        assert_eq!(tail("short".as_bytes(), 20), "short");
    }
}
