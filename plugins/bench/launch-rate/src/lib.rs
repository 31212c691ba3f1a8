//! `launch-rate`: the cost of the plugin boundary. Launches an empty kernel `launches` times per
//! repetition and waits for the stream (launches per second), and times a trivial `gpu` host call.
//! `passage-bench` runs the same loop natively with cudarc for comparison.

use std::time::Instant;

use passage_plugin_sdk::{
    Guest, Module, Param, Params, PluginInfo, Stream, Value, context, export, launch_1d, param,
    report, report_summary, summarize,
};

struct LaunchRate;

impl Guest for LaunchRate {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "launch-rate".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            summary: "Launches an empty kernel in a tight loop and reports launches per second \
                      (median of repetitions), and the cost of one trivial gpu host call."
                .into(),
            params: vec![
                param(
                    "launches",
                    "Launches per repetition",
                    Value::Integer(100_000),
                    Some(1.0),
                    Some(1e8),
                    "launches",
                ),
                param(
                    "repetitions",
                    "Timed repetitions",
                    Value::Integer(7),
                    Some(1.0),
                    Some(1000.0),
                    "",
                ),
                param(
                    "host-calls",
                    "Trivial host calls to time",
                    Value::Integer(1_000_000),
                    Some(1.0),
                    Some(1e9),
                    "calls",
                ),
            ],
        }
    }

    fn run(params: Vec<Param>) -> Result<(), String> {
        let params = Params::new(params);
        let launches = params.count("launches")?;
        let repetitions = params.count("repetitions")?;
        let host_calls = params.count("host-calls")?;
        let module = Module::compile("empty.cu", "extern \"C\" __global__ void empty() {}")
            .map_err(context("compile the kernel"))?;
        let kernel = module.kernel("empty").map_err(context("find the kernel"))?;
        let stream = Stream::create().map_err(context("create a stream"))?;
        let config = launch_1d(1, 32);
        let batch = || -> Result<f64, String> {
            let started = Instant::now();
            for _ in 0..launches {
                kernel
                    .launch(config, &[], &stream)
                    .map_err(context("launch"))?;
            }
            stream.synchronize().map_err(context("synchronize"))?;
            Ok(launches as f64 / started.elapsed().as_secs_f64())
        };
        batch()?;
        let mut rates = Vec::with_capacity(repetitions);
        for i in 0..repetitions {
            rates.push(batch()?);
            report::progress((i + 1) as f32 / repetitions as f32, "launch batches");
        }
        report_summary("launch rate", "launches/s", summarize(&rates));

        let mut costs = Vec::with_capacity(repetitions);
        for _ in 0..repetitions {
            let started = Instant::now();
            let mut total = 0usize;
            for _ in 0..host_calls {
                total += kernel.params().len();
            }
            std::hint::black_box(total);
            costs.push(started.elapsed().as_secs_f64() * 1e9 / host_calls as f64);
        }
        report_summary("host call", "ns", summarize(&costs));
        Ok(())
    }
}

export!(LaunchRate);
