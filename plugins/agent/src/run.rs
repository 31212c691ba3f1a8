//! `passage-agent run`: one plugin, once, on one GPU; printed for people, as JSON, or as a
//! stream of JSON lines (`--events`) for the `serve` loop that started this process.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use passage_plugin_host::{
    LimitSettings, LoadedPlugin, LogLevel, ParamValue, PluginEngine, PluginInfo, RunEvent,
    RunLimits, resolve_params,
};
use serde_json::{Value, json};

use crate::backend::{self, Device};
use crate::{BackendKind, confine, default_cache_dir, usage};

/// What `run` takes.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The plugin component (`.wasm`).
    pub plugin: PathBuf,
    /// A parameter as name=value; repeat for several.
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Which GPU backend to use.
    #[arg(long, value_enum, default_value_t = BackendKind::Cuda)]
    pub backend: BackendKind,
    /// CUDA device ordinal; repeat for a plugin that works across several GPUs (it imports
    /// `peers`), which gets these devices in this order.
    #[arg(long = "device", default_values_t = [0])]
    pub devices: Vec<usize>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print progress, log lines and the result as JSON lines as they happen (for `serve`).
    #[arg(long, conflicts_with = "json")]
    pub events: bool,
    /// Wall-time limit of the run, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// GPU memory limit of the run, in MiB.
    #[arg(long, default_value_t = 8192)]
    pub gpu_memory_mib: u64,
    /// Memory limit of the plugin itself (its WebAssembly linear memory), in MiB.
    #[arg(long, default_value_t = 256)]
    pub wasm_memory_mib: usize,
    /// Host memory the plugin may hold through `host-memory` (pinned and pageable), in MiB.
    #[arg(long, default_value_t = 4096)]
    pub host_memory_mib: u64,
    /// Where compiled plugins are cached (default: $XDG_CACHE_HOME/passage/compiled or
    /// ~/.cache/passage/compiled).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// When started as root, the user the run switches to before it loads the plugin (default:
    /// `passage-job` where that user exists, otherwise `nobody`); its compile cache is then
    /// /var/cache/passage-agent/user-UID.
    #[arg(long)]
    pub user: Option<String>,
}

/// How long past its time limit a run may go before the watchdog ends the process: a GPU call
/// that never returns (a kernel that loops forever) cannot be interrupted by the sandbox's clock.
const WATCHDOG_GRACE: Duration = Duration::from_secs(5);
/// Where a job started as root keeps the cache of the user it switches to.
const JOB_CACHE_ROOT: &str = "/var/cache/passage-agent";
/// The largest file a run may write (compiled code in the cache).
const MAX_FILE_BYTES: u64 = 256 << 20;
/// Memory the runtime itself needs besides the plugin's: compiler, driver, buffers.
const RUNTIME_BYTES: u64 = 4 << 30;

/// Ends the process once the run is `grace` past `limit`, saying why on the way out.
fn arm_watchdog(limit: Duration, events: bool) {
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            std::thread::sleep(limit + WATCHDOG_GRACE);
            let error = format!(
                "limit exceeded: the run passed its time limit of {} s and did not stop (a GPU \
                 call never returned); its process was ended",
                limit.as_secs()
            );
            if events {
                emit(&json!({ "event": "result", "ok": false, "error": error }));
            } else {
                eprintln!("passage-agent: {error}");
            }
            end_process(124);
        });
    if let Err(e) = spawned {
        eprintln!("passage-agent: cannot start the watchdog: {e}");
        end_process(1);
    }
}

/// Ends the process at once, without running exit handlers: the GPU driver's own may wait for
/// the very kernel that never ends.
#[allow(unsafe_code)]
fn end_process(code: i32) -> ! {
    // SAFETY: _exit takes an integer and does not return; output was flushed by `emit`.
    unsafe { libc::_exit(code) }
}

/// Confines this process before it loads a plugin (see `confine`), after switching to an
/// unprivileged user when it runs as root. Returns the cache directory to use and the log lines
/// to show about protection the kernel could not give.
fn confine_job(
    args: &RunArgs,
    cache: Option<PathBuf>,
) -> anyhow::Result<(Option<PathBuf>, Vec<String>)> {
    let mut cache = cache;
    if confine::is_root() {
        let user = confine::job_user(args.user.as_deref())?;
        // The user gets a cache of its own, where it can reach it (root's home is closed to
        // others), so that it never writes where root reads.
        let own = PathBuf::from(JOB_CACHE_ROOT).join(format!("user-{}", user.uid));
        std::fs::create_dir_all(&own)
            .with_context(|| format!("cannot create {}", own.display()))?;
        std::os::unix::fs::chown(&own, Some(user.uid), Some(user.gid))
            .with_context(|| format!("cannot hand {} to {}", own.display(), user.name))?;
        // Its compiled plugins are code later jobs run: nobody else looks in.
        std::fs::set_permissions(&own, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .with_context(|| format!("cannot close {} to others", own.display()))?;
        cache = Some(own);
        confine::drop_to_user(&user)?;
    }
    let writable = match &cache {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir.clone()
        }
        None => std::env::temp_dir().join(format!("passage-job-{}", std::process::id())),
    };
    if std::env::var_os("CUDA_CACHE_PATH").is_none() {
        // SAFETY: no other thread exists yet in this process (see `confine`), so nothing reads
        // the environment while it changes.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("CUDA_CACHE_PATH", writable.join("nv"));
        }
    }
    let mut plugin_bytes = (args.wasm_memory_mib as u64 + args.host_memory_mib) << 20;
    if args.backend == BackendKind::Fake {
        // A simulated device keeps its memory in this process.
        plugin_bytes = plugin_bytes.saturating_add(args.gpu_memory_mib << 20);
    }
    let limits = confine::Limits {
        data_bytes: plugin_bytes.saturating_add(RUNTIME_BYTES),
        locked_bytes: args.host_memory_mib << 20,
        file_bytes: MAX_FILE_BYTES,
    };
    let confined = confine::confine(&writable, &limits)?;
    Ok((cache, confined.warnings))
}

/// Writes one JSON line to standard output at once (the reader is waiting for it).
fn emit(line: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn fail(args: &RunArgs, plugin: Option<&LoadedPlugin>, error: String) -> anyhow::Result<ExitCode> {
    if args.events {
        emit(&json!({ "event": "result", "ok": false, "error": error }));
        return Ok(ExitCode::FAILURE);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "plugin": plugin.map(|p| p.info.name.clone()),
                "version": plugin.map(|p| p.info.version.clone()),
                "ok": false,
                "error": error,
            }))?
        );
    }
    bail!("{error}")
}

/// Runs the command.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let given = match args
        .params
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
            _ => Err(format!("--param {p:?}: expected NAME=VALUE")),
        })
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(given) => given,
        Err(e) => return fail(&args, None, e),
    };
    let bytes = match std::fs::read(&args.plugin) {
        Ok(bytes) => bytes,
        Err(e) => {
            return fail(
                &args,
                None,
                format!("cannot read {}: {e}", args.plugin.display()),
            );
        }
    };
    // NVRTC is found (and loaded) before confinement closes the files it may live in.
    let compiler = passage_gpu::nvrtc::find();
    let (cache, mut warnings) =
        match confine_job(&args, args.cache_dir.clone().or_else(default_cache_dir)) {
            Ok(confined) => confined,
            Err(e) => return fail(&args, None, format!("the job could not be confined: {e:#}")),
        };
    if compiler.is_none() && args.backend == BackendKind::Fake {
        warnings.push(format!(
            "NVRTC was not found, so CUDA C is not compiled on the simulated GPU: only the \
             kernels' names and parameters are read, and a syntax error goes unnoticed until a \
             GPU machine compiles it; install NVRTC with `{}`",
            passage_gpu::nvrtc::INSTALL_HINT
        ));
    }
    for warning in &warnings {
        if args.events {
            emit(&json!({ "event": "log", "level": "warn", "message": warning }));
        } else {
            eprintln!("[warn] {warning}");
        }
    }
    let engine = PluginEngine::new(cache.as_deref())?;
    let loaded = match engine.load(&bytes) {
        Ok(loaded) => loaded,
        Err(e) => return fail(&args, None, format!("{}: {e}", args.plugin.display())),
    };
    let resolved = match resolve_params(&loaded.info, &given) {
        Ok(resolved) => resolved,
        Err(e) => return fail(&args, Some(&loaded), e.to_string()),
    };
    if args.devices.len() > 1 && !loaded.wants_peers {
        let message = format!(
            "{} runs on one GPU (it does not import peers): give one --device",
            loaded.info.name
        );
        return fail(&args, Some(&loaded), message);
    }
    let mut gpus = Vec::with_capacity(args.devices.len());
    for &ordinal in &args.devices {
        match backend::open(args.backend, ordinal, cache.as_deref()) {
            Ok(gpu) => gpus.push(gpu),
            Err(e) => return fail(&args, Some(&loaded), format!("{e:#}")),
        }
    }
    let devices: Vec<Device> = args
        .devices
        .iter()
        .zip(&gpus)
        .map(|(ordinal, gpu)| Device::new(*ordinal, gpu.info()))
        .collect();
    let device = devices[0].clone();
    let gpu = gpus.remove(0);
    let limits = RunLimits {
        wall_time: Duration::from_secs(args.timeout),
        gpu_memory: args.gpu_memory_mib << 20,
        host_memory: args.host_memory_mib << 20,
        wasm_memory: args.wasm_memory_mib << 20,
        // `--events` is how `serve` runs a portal's job, whose limits the portal sets.
        settings: if args.events {
            LimitSettings::PORTAL
        } else {
            LimitSettings::COMMAND_LINE
        },
        ..RunLimits::default()
    };
    arm_watchdog(limits.wall_time, args.events);
    let (quiet, events) = (args.json, args.events);
    let usage_before = usage::Usage::now();
    let result = engine.run_on(
        &loaded,
        &resolved,
        gpu,
        gpus,
        &limits,
        Box::new(move |event| match event {
            RunEvent::Progress(fraction, note) if events => {
                emit(&json!({ "event": "progress", "fraction": fraction, "note": note }))
            }
            RunEvent::Log(level, message) if events => {
                emit(&json!({ "event": "log", "level": level.as_str(), "message": message }))
            }
            RunEvent::Log(level, message) if !quiet => {
                eprintln!("[{}] {message}", level.as_str())
            }
            _ => {}
        }),
    );
    let usage = usage::Usage::now().since(&usage_before);
    let report = match result.outcome {
        Ok(report) => report,
        Err(e) => return fail(&args, Some(&loaded), format!("{}: {e}", loaded.info.name)),
    };
    let result = json!({
        "simulated": report.simulated,
        "devices": devices,
        "metrics": report.metrics.iter()
            .map(|m| json!({ "name": m.name, "value": m.value, "unit": m.unit }))
            .collect::<Vec<_>>(),
        "logs": report.logs.iter()
            .map(|(level, message)| json!({ "level": level.as_str(), "message": message }))
            .collect::<Vec<_>>(),
        "wall_s": report.wall.as_secs_f64(),
        "user_s": usage.user_s,
        "system_s": usage.system_s,
        "leftovers": report.leftovers.to_string(),
    });
    if events {
        emit(&json!({ "event": "result", "ok": true, "result": result }));
    } else if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "plugin": loaded.info.name,
                "version": loaded.info.version,
                "sha256": loaded.sha256,
                "ok": true,
                "simulated": report.simulated,
                "compiler": compiler.map(|c| format!("NVRTC {}", c.version)),
                "device": {
                    "name": device.name,
                    "pci_bus_id": device.pci_bus_id,
                    "total_memory": device.total_memory,
                    "compute_capability": device.compute_capability,
                },
                "params": resolved.iter().map(|(k, v)| (k.clone(), param_json(v))).collect::<serde_json::Map<_, _>>(),
                "metrics": result["metrics"],
                "logs": result["logs"],
                "time": { "wall_s": report.wall.as_secs_f64(), "user_s": usage.user_s, "system_s": usage.system_s },
                "leftovers": report.leftovers.to_string(),
            }))?
        );
    } else {
        println!(
            "{} {} on {}{}",
            loaded.info.name,
            loaded.info.version,
            device.name,
            if report.simulated {
                " (SIMULATED: figures are not measurements)"
            } else {
                ""
            }
        );
        for m in &report.metrics {
            println!("  {:<32} {:>16.6} {}", m.name, m.value, m.unit);
        }
        println!(
            "  time: real {:.3} s, user {:.3} s, sys {:.3} s",
            report.wall.as_secs_f64(),
            usage.user_s,
            usage.system_s
        );
        if !report.leftovers.is_empty() {
            println!("  freed after the run: {}", report.leftovers);
        }
    }
    let failed = report.logs.iter().any(|(l, _)| *l == LogLevel::Error)
        && report
            .metrics
            .iter()
            .any(|m| m.name == "verification" && m.value == 0.0);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints a plugin's description for people.
pub fn print_description(info: &PluginInfo) {
    println!("{} {}\n{}\n", info.name, info.version, info.summary);
    for p in &info.params {
        let unit = if p.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", p.unit)
        };
        let range = match (p.min, p.max) {
            (Some(min), Some(max)) => format!(", from {min} to {max}"),
            (Some(min), None) => format!(", at least {min}"),
            (None, Some(max)) => format!(", at most {max}"),
            (None, None) => String::new(),
        };
        println!(
            "  {} ({}, default {}{unit}{range})",
            p.name,
            p.kind.as_str(),
            p.default
        );
        println!("      {}", p.summary);
    }
}

/// A plugin's description as JSON.
pub fn describe_json(loaded: &LoadedPlugin) -> Value {
    let info = &loaded.info;
    json!({
        "name": info.name,
        "version": info.version,
        "summary": info.summary,
        "sha256": loaded.sha256,
        "params": info.params.iter().map(|p| json!({
            "name": p.name,
            "summary": p.summary,
            "kind": p.kind.as_str(),
            "default": param_json(&p.default),
            "min": p.min,
            "max": p.max,
            "unit": p.unit,
        })).collect::<Vec<_>>(),
    })
}

fn param_json(value: &ParamValue) -> Value {
    match value {
        ParamValue::Integer(v) => json!(v),
        ParamValue::Float(v) => json!(v),
        ParamValue::Boolean(v) => json!(v),
        ParamValue::Text(v) => json!(v),
    }
}
