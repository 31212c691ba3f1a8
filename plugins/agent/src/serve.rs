//! `passage-agent serve`: works for a portal.
//!
//! It registers (what it is, every GPU it sees), then polls: each poll is a heartbeat that says
//! which jobs run and which GPUs are idle, and may bring a job, which runs on a thread of its
//! own in a child process. A GPU runs one job at a time. When the portal cannot be reached the
//! agent waits and tries again, longer each time, and keeps every result until it is delivered.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use crate::backend::{self, Device};
use crate::job::Runner;
use crate::portal::{Job, Machine, Portal, PortalError};
use crate::{BackendKind, default_cache_dir};

/// The longest wait between attempts to reach the portal.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How often an agent without a usable CUDA driver looks for one again.
const DRIVER_RECHECK: Duration = Duration::from_secs(60);

/// What `serve` takes.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The portal, e.g. `http://10.0.2.2:8080`.
    #[arg(long)]
    pub server: String,
    /// The agent token (`psa_…`). Prefer --token-file or the environment.
    #[arg(long, env = "PASSAGE_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the agent token.
    #[arg(long, conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Which GPU backend runs the jobs.
    #[arg(long, value_enum, default_value_t = BackendKind::Cuda)]
    pub backend: BackendKind,
    /// How many simulated GPUs the fake backend has.
    #[arg(long, default_value_t = 1)]
    pub fake_devices: usize,
    /// Where compiled plugins and fetched components are kept.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// A PEM file of CA certificates to trust for an `https://` portal, besides the usual roots.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

/// A job being run, and how to stop it.
struct Running {
    devices: Vec<i64>,
    stop: Arc<AtomicBool>,
}

/// Runs until the token is refused.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => token.trim().to_string(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the token file {}", file.display()))?
            .trim()
            .to_string(),
        (None, None) => {
            bail!("give the agent token with --token-file, --token or PASSAGE_AGENT_TOKEN")
        }
    };
    let cache_dir = args
        .cache_dir
        .clone()
        .or_else(default_cache_dir)
        .context("no cache directory: give --cache-dir")?;
    let portal = Portal::new(&args.server, &token, args.ca_file.as_deref())?;
    let (mut devices, cuda_problem) = list_devices(args.backend, args.fake_devices)?;
    if let Some(problem) = &cuda_problem {
        eprintln!(
            "passage-agent: no usable CUDA driver ({problem}); registering without GPUs and looking again every {} s",
            DRIVER_RECHECK.as_secs()
        );
    }
    let mut machine = Machine {
        addresses: Vec::new(),
        run_as: run_as(),
        cuda_problem,
    };
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let runner = Runner {
        exe: std::env::current_exe().context("cannot find this program's path")?,
        backend: args.backend,
        cache_dir,
    };

    // The address is looked up at each registration: the guest's network may come up late.
    let register = |devices: &[Device], machine: &Machine| {
        with_backoff("registering", || {
            let machine = Machine {
                addresses: portal
                    .local_address()
                    .map(|a| a.to_string())
                    .into_iter()
                    .collect(),
                ..machine.clone()
            };
            portal.register(&hostname, args.backend.as_str(), devices, &machine)
        })
    };
    let registered = register(&devices, &machine)?;
    eprintln!(
        "passage-agent: registered with {} as {}: {} GPU(s){}",
        args.server,
        registered.agent,
        devices.len(),
        registered
            .verification
            .as_ref()
            .map(|v| format!("; {v}"))
            .unwrap_or_default()
    );

    let running: Arc<Mutex<HashMap<i64, Running>>> = Arc::default();
    let (finished_tx, finished_rx) = mpsc::channel::<i64>();
    let mut backoff = Duration::from_secs(1);
    let mut driver_checked = Instant::now();
    loop {
        // A driver installed after the agent started (the first boot's install, then a reboot
        // or a module load) is noticed without a restart.
        if machine.cuda_problem.is_some() && driver_checked.elapsed() >= DRIVER_RECHECK {
            driver_checked = Instant::now();
            let (found, problem) = list_devices(args.backend, args.fake_devices)?;
            if problem.is_none() {
                eprintln!(
                    "passage-agent: the CUDA driver answers now: {} GPU(s)",
                    found.len()
                );
                devices = found;
                machine.cuda_problem = None;
                register(&devices, &machine)?;
            }
        }
        let (ids, free) = {
            let running = running.lock().expect("running jobs lock");
            let busy: Vec<i64> = running.values().flat_map(|r| r.devices.clone()).collect();
            let free: Vec<i64> = devices
                .iter()
                .map(|d| d.index)
                .filter(|i| !busy.contains(i))
                .collect();
            (running.keys().copied().collect::<Vec<_>>(), free)
        };
        let poll_every = match portal.poll(&ids, &free) {
            Ok(answer) => {
                backoff = Duration::from_secs(1);
                for id in &answer.stop {
                    if let Some(job) = running.lock().expect("running jobs lock").get(id) {
                        eprintln!("passage-agent: stopping job {id}");
                        job.stop.store(true, Ordering::Relaxed);
                    }
                }
                if let Some(job) = answer.job {
                    if job.devices.iter().all(|d| free.contains(d)) {
                        start(&portal, &runner, job, &running, finished_tx.clone());
                        // More idle GPUs may take more work at once.
                        continue;
                    }
                    eprintln!(
                        "passage-agent: job {} names busy or unknown devices {:?}; refusing it",
                        job.id, job.devices
                    );
                    deliver(
                        &portal,
                        job.id,
                        &crate::portal::Outcome {
                            ok: false,
                            error: Some(format!("the agent has no idle device {:?}", job.devices)),
                            result: None,
                        },
                    );
                }
                Duration::from_secs(answer.poll_secs.max(1))
            }
            Err(PortalError::Unauthorized(e)) => bail!("the portal refused this agent: {e}"),
            Err(e) => {
                eprintln!(
                    "passage-agent: {e}; trying again in {} s",
                    backoff.as_secs()
                );
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        // Idle until the next heartbeat, or until a job ends and frees its GPU.
        if let Ok(id) = finished_rx.recv_timeout(poll_every) {
            running.lock().expect("running jobs lock").remove(&id);
            while let Ok(id) = finished_rx.try_recv() {
                running.lock().expect("running jobs lock").remove(&id);
            }
        }
    }
}

/// Starts `job` on a thread of its own.
fn start(
    portal: &Portal,
    runner: &Runner,
    job: Job,
    running: &Arc<Mutex<HashMap<i64, Running>>>,
    finished: mpsc::Sender<i64>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    running.lock().expect("running jobs lock").insert(
        job.id,
        Running {
            devices: job.devices.clone(),
            stop: stop.clone(),
        },
    );
    eprintln!(
        "passage-agent: job {}: {} {} on device(s) {:?}",
        job.id, job.plugin, job.version, job.devices
    );
    let (portal, runner) = (portal.clone(), runner.clone());
    std::thread::spawn(move || {
        let outcome = runner.run(&portal, &job, &stop);
        eprintln!(
            "passage-agent: job {} {}",
            job.id,
            match &outcome.error {
                None => "succeeded".to_string(),
                Some(e) => format!("failed: {e}"),
            }
        );
        // A job stopped by the portal has its end recorded there already.
        if !stop.load(Ordering::Relaxed) {
            deliver(&portal, job.id, &outcome);
        }
        let _ = finished.send(job.id);
    });
}

/// Posts a job's end, trying until the portal takes it or refuses it for good.
fn deliver(portal: &Portal, id: i64, outcome: &crate::portal::Outcome) {
    let mut delay = Duration::from_secs(1);
    loop {
        match portal.finish(id, outcome) {
            Ok(()) => return,
            Err(PortalError::Unavailable(e)) => {
                eprintln!(
                    "passage-agent: job {id}: the result could not be delivered ({e}); trying again in {} s",
                    delay.as_secs()
                );
                std::thread::sleep(delay);
                delay = (delay * 2).min(MAX_BACKOFF);
            }
            Err(PortalError::Refused(e)) if outcome.result.is_some() => {
                // Too large or malformed: say so instead, so that the job does not stay open.
                eprintln!("passage-agent: job {id}: the portal did not take the result: {e}");
                let failure = crate::portal::Outcome {
                    ok: false,
                    error: Some(format!("the portal refused the run's result: {e}")),
                    result: None,
                };
                return deliver(portal, id, &failure);
            }
            Err(e) => {
                eprintln!("passage-agent: job {id}: the portal did not take the result: {e}");
                return;
            }
        }
    }
}

/// Repeats `call` while the portal is unavailable.
fn with_backoff<T>(what: &str, call: impl Fn() -> Result<T, PortalError>) -> anyhow::Result<T> {
    let mut delay = Duration::from_secs(1);
    loop {
        match call() {
            Ok(value) => return Ok(value),
            Err(PortalError::Unavailable(e)) => {
                eprintln!(
                    "passage-agent: {what}: {e}; trying again in {} s",
                    delay.as_secs()
                );
                std::thread::sleep(delay);
                delay = (delay * 2).min(MAX_BACKOFF);
            }
            Err(e) => bail!("{what}: {e}"),
        }
    }
}

/// The GPUs to offer, or none and why the CUDA driver cannot be used. CUDA devices are listed
/// by a child process, so that this long-lived process never holds a CUDA context of its own.
fn list_devices(
    backend: BackendKind,
    fake_devices: usize,
) -> anyhow::Result<(Vec<Device>, Option<String>)> {
    if backend == BackendKind::Fake {
        return Ok((backend::devices(backend, fake_devices)?, None));
    }
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let output = std::process::Command::new(exe)
        .args(["devices", "--backend", "cuda", "--json"])
        .output()
        .context("cannot list the GPUs")?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr);
        let problem = said
            .trim()
            .trim_start_matches("passage-agent: ")
            .chars()
            .take(500)
            .collect();
        return Ok((Vec::new(), Some(problem)));
    }
    let devices = serde_json::from_slice(&output.stdout).context("the GPU list does not parse")?;
    Ok((devices, None))
}

/// The account this process runs as, e.g. `passage-agent (uid 998)`.
fn run_as() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
            })
        });
    Some(match name {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    })
}
