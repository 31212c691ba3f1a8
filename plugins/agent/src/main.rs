//! `passage-agent`: runs Passage plugins on the GPUs of this machine.
//!
//! `passage-agent run plugin.wasm --param size=64Mi` runs one plugin and prints its metrics, for
//! plugin authors and for tests; `describe` prints what a plugin takes; `devices` lists the GPUs;
//! `serve` works for a portal: it registers, polls for jobs and runs each in a process of its own.
//! For plugin authors, `new` starts a project in Rust, Python or JavaScript and `check` tells
//! whether a built plugin fits the contract.

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
use passage_plugin_host::{PluginEngine, Verdict};
use passage_plugin_kit::{Language, Starter};

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
    /// Start a plugin project: a directory with the contract, the helpers of its language and a
    /// plugin that builds with one command.
    New {
        /// The plugin's name: lower-case letters, digits and dashes; also the directory's.
        name: String,
        /// The language to write it in.
        #[arg(long, value_enum, default_value_t = Lang::Rust)]
        lang: Lang,
        /// Start from a shipped example instead of the template: `vector-add` (python, js).
        #[arg(long)]
        example: Option<String>,
        /// The directory to create (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Check a plugin against the contract as the portal and the agent will: the file, its
    /// imports and exports, what `describe` says and whether its parameters' defaults are valid.
    Check {
        /// The plugin component (`.wasm`).
        plugin: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Languages of new plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Lang {
    /// Rust, with Passage's SDK.
    Rust,
    /// Python, through componentize-py.
    Python,
    /// JavaScript, through componentize-js.
    Js,
}

impl From<Lang> for Language {
    fn from(lang: Lang) -> Language {
        match lang {
            Lang::Rust => Language::Rust,
            Lang::Python => Language::Python,
            Lang::Js => Language::Js,
        }
    }
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
        Command::New {
            name,
            lang,
            example,
            dir,
        } => {
            let starter = Starter::parse(example.as_deref().unwrap_or("template"))?;
            let project = passage_plugin_kit::project(&name, lang.into(), starter)?;
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            project.write(&dir)?;
            println!(
                "created {} ({} plugin {name}); next:\n\n{}",
                dir.display(),
                project.language,
                project.next_steps(&dir)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { plugin, json } => check(&plugin, json),
    }
}

/// `check`: the findings, one line each, and failure when any failed.
fn check(plugin: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let bytes =
        std::fs::read(plugin).with_context(|| format!("cannot read {}", plugin.display()))?;
    let report = PluginEngine::new(default_cache_dir().as_deref())?.check(&bytes);
    if json {
        let findings: Vec<serde_json::Value> = report
            .findings
            .iter()
            .map(|f| serde_json::json!({ "verdict": format!("{:?}", f.verdict).to_lowercase(), "message": f.message }))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "plugin": plugin.display().to_string(),
                "passed": report.passed(),
                "findings": findings,
                "describe": report.info.as_ref().map(|i| serde_json::json!({ "name": i.name, "version": i.version })),
            }))?
        );
    } else {
        for finding in &report.findings {
            let mark = match finding.verdict {
                Verdict::Pass => "ok  ",
                Verdict::Warn => "warn",
                Verdict::Fail => "FAIL",
            };
            println!("{mark} {}", finding.message);
        }
        if let Some(info) = &report.info {
            println!();
            run::print_description(info);
        }
        println!(
            "\n{}: {}",
            plugin.display(),
            if report.passed() {
                "fits the plugin contract"
            } else {
                "does NOT fit the plugin contract"
            }
        );
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The cache for compiled plugins and PTX: `$XDG_CACHE_HOME/passage/compiled` or
/// `~/.cache/passage/compiled`. A folder of its own: wasmtime trims the oldest files of its cache
/// directory when it grows, and would trim the plugin tools' virtualenvs beside it.
fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("passage").join("compiled"))
}
