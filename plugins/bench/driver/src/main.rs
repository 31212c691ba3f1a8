//! `passage-bench`: measures what the plugin boundary costs, against native CUDA in the same run.
//!
//! - `launch-native`: the `launch-rate` plugin's loop written directly against cudarc.
//! - `instantiate`: loading a compiled plugin from the on-disk cache, and a whole trivial run
//!   (new store, instantiation, call, cleanup) on the simulated GPU.
//! - `suite-native`: one of the study's benchmarks (`plugins/suite`) as native Rust, the baseline
//!   of the plugin of the same name.
//! - `study`: the study's runs (`passage_suite::study::STUDY`), one per line, for scripts.
//!
//! Every command prints one JSON object; `benches/gpu.sh` runs them all on a GPU machine.

mod suite;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use passage_gpu::FakeGpu;
use passage_plugin_host::{PluginEngine, RunLimits, resolve_params};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(name = "passage-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Empty-kernel launches per second from native Rust (cudarc).
    LaunchNative {
        /// Launches per repetition.
        #[arg(long, default_value_t = 100_000)]
        launches: usize,
        /// Timed repetitions (after one untimed).
        #[arg(long, default_value_t = 7)]
        repetitions: usize,
    },
    /// Plugin load time from a warm cache, and the cost of a whole trivial run.
    Instantiate {
        /// A plugin component (the `launch-rate` plugin).
        plugin: PathBuf,
        /// Samples.
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// One of the study's benchmarks as native Rust on cudarc (the plugins' baseline).
    SuiteNative {
        /// The plugin's name, e.g. `matrix-mul`.
        name: String,
        /// A parameter, NAME=VALUE, as `passage-agent run --param` takes it.
        #[arg(short, long = "param")]
        params: Vec<String>,
    },
    /// The study's runs, one per line: label, plugin and parameters, separated by tabs.
    Study,
}

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::LaunchNative {
            launches,
            repetitions,
        } => launch_native(launches, repetitions)?,
        Command::Instantiate { plugin, samples } => instantiate(&plugin, samples)?,
        Command::Study => {
            for run in passage_suite::study::STUDY {
                println!("{}\t{}\t{}", run.label, run.plugin, run.params.join(" "));
            }
        }
        Command::SuiteNative { name, params } => {
            if !suite::suite_native(&name, &params)? {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(samples: &mut [f64]) -> serde_json::Value {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let median = if n.is_multiple_of(2) {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    } else {
        samples[n / 2]
    };
    json!({ "median": median, "min": samples[0], "max": samples[n - 1], "samples": n })
}

#[allow(unsafe_code)]
fn launch_native(launches: usize, repetitions: usize) -> anyhow::Result<()> {
    use cudarc::driver::{CudaContext, LaunchConfig};
    let ctx = CudaContext::new(0).context("CUDA device 0")?;
    let stream = ctx.new_stream()?;
    let ptx = cudarc::nvrtc::compile_ptx("extern \"C\" __global__ void empty() {}")?;
    let module = ctx.load_module(ptx)?;
    let empty = module.load_function("empty")?;
    let config = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (32, 1, 1),
        shared_mem_bytes: 0,
    };
    let batch = || -> anyhow::Result<f64> {
        let started = Instant::now();
        for _ in 0..launches {
            // SAFETY: `empty` takes no parameters and touches no memory; the launch matches its
            // declaration exactly.
            unsafe { stream.launch_builder(&empty).launch(config) }?;
        }
        stream.synchronize()?;
        Ok(launches as f64 / started.elapsed().as_secs_f64())
    };
    batch()?;
    let mut rates = (0..repetitions)
        .map(|_| batch())
        .collect::<anyhow::Result<Vec<f64>>>()?;
    println!(
        "{}",
        json!({ "bench": "launch-native", "device": ctx.name()?, "launches": launches, "launch_rate": summary(&mut rates) })
    );
    Ok(())
}

fn instantiate(plugin: &PathBuf, samples: usize) -> anyhow::Result<()> {
    let bytes = std::fs::read(plugin).with_context(|| plugin.display().to_string())?;
    let cache = std::env::temp_dir().join(format!("passage-bench-cache-{}", std::process::id()));
    let started = Instant::now();
    let cold = PluginEngine::new(Some(&cache))?.load(&bytes)?;
    let compile = started.elapsed();

    // A new engine on the same cache: every load now hits it.
    let engine = PluginEngine::new(Some(&cache))?;
    let mut loads = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        engine.load(&bytes)?;
        loads.push(ms(started.elapsed()));
    }
    let loaded = engine.load(&bytes)?;
    let params = resolve_params(
        &loaded.info,
        &[
            ("launches".into(), "1".into()),
            ("repetitions".into(), "1".into()),
            ("host-calls".into(), "1".into()),
        ],
    )?;
    let mut gpu: Box<dyn passage_gpu::GpuBackend> = Box::new(FakeGpu::default());
    let mut runs = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let result = engine.run(
            &loaded,
            &params,
            gpu,
            &RunLimits::default(),
            Box::new(|_| {}),
        );
        runs.push(ms(started.elapsed()));
        result.outcome?;
        gpu = result.gpu;
    }
    let _ = std::fs::remove_dir_all(&cache);
    println!(
        "{}",
        json!({
            "bench": "instantiate",
            "plugin": cold.info.name,
            "component_bytes": bytes.len(),
            "first_compile_ms": ms(compile),
            "load_from_cache_ms": summary(&mut loads),
            "trivial_run_ms": summary(&mut runs),
        })
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
