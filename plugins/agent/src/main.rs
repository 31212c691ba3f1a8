//! `passage-agent`: runs Passage plugins on the GPUs of this machine.
//!
//! `passage-agent run plugin.wasm --param size=64Mi` runs one plugin and prints its metrics, for
//! plugin authors and for tests; `describe` prints what a plugin takes; `devices` lists the GPUs;
//! `serve` works for a portal: it registers, polls for jobs and runs each in a process of its own.

mod backend;
mod confine;
mod job;
mod portal;
mod run;
mod serve;
mod usage;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use passage_plugin_host::PluginEngine;

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
    Run(run::RunArgs),
    /// Print a plugin's name, version and parameters.
    Describe {
        /// The plugin component (`.wasm`).
        plugin: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the GPUs a backend sees.
    Devices {
        /// Which GPU backend to ask.
        #[arg(long, value_enum, default_value_t = BackendKind::Cuda)]
        backend: BackendKind,
        /// How many simulated GPUs the fake backend has.
        #[arg(long, default_value_t = 1)]
        fake_devices: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Work for a portal: register, report the GPUs, run the jobs it hands out.
    Serve(serve::ServeArgs),
}

/// GPU backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    /// The machine's NVIDIA GPUs, through the CUDA driver.
    Cuda,
    /// Simulated GPUs: memory semantics only, kernels are not executed.
    Fake,
}

impl BackendKind {
    fn as_str(self) -> &'static str {
        match self {
            BackendKind::Cuda => "cuda",
            BackendKind::Fake => "fake",
        }
    }
}

fn main() -> ExitCode {
    match dispatch(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("passage-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Describe { plugin, json } => {
            let engine = PluginEngine::new(None)?;
            let bytes = std::fs::read(&plugin)
                .with_context(|| format!("cannot read {}", plugin.display()))?;
            let loaded = engine
                .load(&bytes)
                .with_context(|| format!("{}", plugin.display()))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&run::describe_json(&loaded))?
                );
            } else {
                run::print_description(&loaded.info);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Devices {
            backend,
            fake_devices,
            json,
        } => {
            let devices = backend::devices(backend, fake_devices)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&devices)?);
            } else if devices.is_empty() {
                println!("no GPUs");
            } else {
                for d in &devices {
                    println!(
                        "{}: {} ({} MiB, compute {}, PCI {}){}",
                        d.index,
                        d.name,
                        d.total_memory >> 20,
                        d.compute_capability,
                        d.pci_bus_id,
                        if d.simulated { ", SIMULATED" } else { "" }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => serve::serve(args).map(|()| ExitCode::SUCCESS),
    }
}

/// The cache for compiled plugins and PTX: `$XDG_CACHE_HOME/passage` or `~/.cache/passage`.
fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("passage"))
}
