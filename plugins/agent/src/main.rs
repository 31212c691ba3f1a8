//! `passage-agent`: runs Passage plugins on the GPUs of this machine.
//!
//! `passage-agent run plugin.wasm --param size=64Mi` runs one plugin and prints its metrics, for
//! plugin authors and for tests; `describe` prints what a plugin takes.

mod backend;
mod usage;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use passage_plugin_host::{
    LogLevel, ParamValue, PluginEngine, RunEvent, RunLimits, resolve_params,
};
use serde_json::json;

/// Runs Passage plugins (WebAssembly components) on this machine's GPU.
#[derive(Debug, Parser)]
#[command(name = "passage-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a plugin once and print its metrics.
    Run {
        /// The plugin component (`.wasm`).
        plugin: PathBuf,
        /// A parameter as name=value; repeat for several.
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Which GPU backend to use.
        #[arg(long, value_enum, default_value_t = BackendKind::Cuda)]
        backend: BackendKind,
        /// CUDA device ordinal.
        #[arg(long, default_value_t = 0)]
        device: usize,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// Wall-time limit of the run, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// GPU memory limit of the run, in MiB.
        #[arg(long, default_value_t = 8192)]
        gpu_memory_mib: u64,
        /// Memory limit of the plugin itself (its WebAssembly linear memory), in MiB.
        #[arg(long, default_value_t = 256)]
        wasm_memory_mib: usize,
        /// Where compiled plugins are cached (default: $XDG_CACHE_HOME/passage or ~/.cache/passage).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Print a plugin's name, version and parameters.
    Describe {
        /// The plugin component (`.wasm`).
        plugin: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// GPU backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    /// The machine's NVIDIA GPU, through the CUDA driver.
    Cuda,
    /// A simulated GPU: memory semantics only, kernels are not executed.
    Fake,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("passage-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Describe { plugin, json } => {
            let engine = PluginEngine::new(None)?;
            let bytes = std::fs::read(&plugin)
                .with_context(|| format!("cannot read {}", plugin.display()))?;
            let loaded = engine
                .load(&bytes)
                .with_context(|| format!("{}", plugin.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&describe_json(&loaded))?);
            } else {
                print_description(&loaded.info);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            plugin,
            params,
            backend,
            device,
            json,
            timeout,
            gpu_memory_mib,
            wasm_memory_mib,
            cache_dir,
        } => {
            let given = params
                .iter()
                .map(|p| match p.split_once('=') {
                    Some((k, v)) if !k.trim().is_empty() => {
                        Ok((k.trim().to_string(), v.to_string()))
                    }
                    _ => bail!("--param {p:?}: expected NAME=VALUE"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let cache = cache_dir.or_else(default_cache_dir);
            let engine = PluginEngine::new(cache.as_deref())?;
            let bytes = std::fs::read(&plugin)
                .with_context(|| format!("cannot read {}", plugin.display()))?;
            let loaded = engine
                .load(&bytes)
                .with_context(|| format!("{}", plugin.display()))?;
            let resolved = resolve_params(&loaded.info, &given)?;
            let gpu = backend::open(backend, device, cache.as_deref())?;
            let device_info = gpu.info().clone();
            let limits = RunLimits {
                wall_time: Duration::from_secs(timeout),
                gpu_memory: gpu_memory_mib << 20,
                wasm_memory: wasm_memory_mib << 20,
                ..RunLimits::default()
            };
            let quiet = json;
            let usage_before = usage::Usage::now();
            let result = engine.run(
                &loaded,
                &resolved,
                gpu,
                &limits,
                Box::new(move |event| {
                    if quiet {
                        return;
                    }
                    match event {
                        RunEvent::Log(level, message) => {
                            eprintln!("[{}] {message}", level.as_str())
                        }
                        RunEvent::Progress(..) | RunEvent::Metric(_) => {}
                    }
                }),
            );
            let usage = usage::Usage::now().since(&usage_before);
            let report = match result.outcome {
                Ok(report) => report,
                Err(e) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&json!({
                                "plugin": loaded.info.name,
                                "version": loaded.info.version,
                                "ok": false,
                                "error": e.to_string(),
                            }))?
                        );
                    }
                    bail!("{}: {e}", loaded.info.name);
                }
            };
            if json {
                let metrics: Vec<_> = report
                    .metrics
                    .iter()
                    .map(|m| json!({ "name": m.name, "value": m.value, "unit": m.unit }))
                    .collect();
                let logs: Vec<_> = report
                    .logs
                    .iter()
                    .map(|(level, message)| json!({ "level": level.as_str(), "message": message }))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "plugin": loaded.info.name,
                        "version": loaded.info.version,
                        "sha256": loaded.sha256,
                        "ok": true,
                        "simulated": report.simulated,
                        "device": {
                            "name": device_info.name,
                            "pci_bus_id": device_info.pci_bus_id,
                            "total_memory": device_info.total_memory,
                            "compute_capability": format!("{}.{}", device_info.capability.0, device_info.capability.1),
                        },
                        "params": resolved.iter().map(|(k, v)| (k.clone(), param_json(v))).collect::<serde_json::Map<_, _>>(),
                        "metrics": metrics,
                        "logs": logs,
                        "time": { "wall_s": report.wall.as_secs_f64(), "user_s": usage.user_s, "system_s": usage.system_s },
                        "leftovers": report.leftovers.to_string(),
                    }))?
                );
            } else {
                println!(
                    "{} {} on {}{}",
                    loaded.info.name,
                    loaded.info.version,
                    device_info.name,
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
    }
}

fn print_description(info: &passage_plugin_host::PluginInfo) {
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

fn describe_json(loaded: &passage_plugin_host::LoadedPlugin) -> serde_json::Value {
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

fn param_json(value: &ParamValue) -> serde_json::Value {
    match value {
        ParamValue::Integer(v) => json!(v),
        ParamValue::Float(v) => json!(v),
        ParamValue::Boolean(v) => json!(v),
        ParamValue::Text(v) => json!(v),
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("passage"))
}
