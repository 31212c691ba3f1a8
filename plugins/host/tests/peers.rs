//! Plugins across several GPUs, on simulated devices: the `peers` interface with the same
//! sandbox as `gpu` (limits across every device, resources counted and freed on each), the
//! checks on every cross-device call, and the p2p-bandwidth plugin's matrices.

use std::path::PathBuf;

use passage_gpu::{FakeGpu, GpuBackend};
use passage_plugin_host::{LoadedPlugin, PluginEngine, RunLimits, RunResult, resolve_params};

fn plugin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PASSAGE_PLUGIN_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("plugins")
}

fn load(engine: &PluginEngine, name: &str) -> LoadedPlugin {
    let path = plugin_dir().join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the plugins first with ./x build",
            path.display()
        )
    });
    engine.load(&bytes).unwrap()
}

fn devices(count: usize) -> (Box<dyn GpuBackend>, Vec<Box<dyn GpuBackend>>) {
    let first: Box<dyn GpuBackend> = Box::new(FakeGpu::numbered(0, 1 << 30));
    let rest = (1..count)
        .map(|i| Box::new(FakeGpu::numbered(i, 1 << 30)) as Box<dyn GpuBackend>)
        .collect();
    (first, rest)
}

fn run(
    engine: &PluginEngine,
    plugin: &LoadedPlugin,
    params: &[(&str, &str)],
    count: usize,
    limits: &RunLimits,
) -> RunResult {
    let given: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let params = resolve_params(&plugin.info, &given).unwrap();
    let (gpu, peers) = devices(count);
    engine.run_on(plugin, &params, gpu, peers, limits, Box::new(|_| {}))
}

#[test]
fn plugins_that_import_peers_are_known_as_such() {
    let engine = PluginEngine::new(None).unwrap();
    assert!(load(&engine, "p2p-bandwidth.wasm").wants_peers);
    assert!(!load(&engine, "vector-add.wasm").wants_peers);
    assert!(!load(&engine, "bandwidth-test.wasm").wants_peers);
}

#[test]
fn p2p_bandwidth_measures_every_pair_in_both_modes() {
    let engine = PluginEngine::new(None).unwrap();
    let plugin = load(&engine, "p2p-bandwidth.wasm");
    let result = run(
        &engine,
        &plugin,
        &[
            ("bytes", "1Mi"),
            ("repetitions", "2"),
            ("latency-repetitions", "10"),
        ],
        3,
        &RunLimits::default(),
    );
    let report = result.outcome.unwrap();
    assert!(report.simulated);
    assert!(report.leftovers.is_empty(), "{}", report.leftovers);
    let names: Vec<&str> = report.metrics.iter().map(|m| m.name.as_str()).collect();
    for mode in ["off", "on"] {
        for figure in [
            "unidirectional bandwidth",
            "bidirectional bandwidth",
            "latency",
        ] {
            for from in 0..3 {
                for to in 0..3 {
                    let name = format!("{figure}, P2P {mode} [{from}→{to}]");
                    assert!(
                        names.contains(&name.as_str()),
                        "{name} missing from {names:?}"
                    );
                }
            }
        }
    }
    let verification = report
        .metrics
        .iter()
        .find(|m| m.name == "verification")
        .unwrap();
    assert_eq!(
        verification.value, -1.0,
        "skipped on simulated devices, never passed"
    );
    assert_eq!(result.peers.len(), 2, "every device comes back");

    // One device is not enough, and the plugin says so.
    let result = run(
        &engine,
        &plugin,
        &[("bytes", "1Mi")],
        1,
        &RunLimits::default(),
    );
    let err = result.outcome.unwrap_err().to_string();
    assert!(err.contains("needs at least two GPUs"), "{err}");
}

#[test]
fn the_gpu_memory_limit_holds_across_devices() {
    let engine = PluginEngine::new(None).unwrap();
    let plugin = load(&engine, "p2p-bandwidth.wasm");
    // Two buffers per device of 64 MiB: 256 MiB on two devices, over a 200 MiB limit.
    let limits = RunLimits {
        gpu_memory: 200 << 20,
        ..RunLimits::default()
    };
    let result = run(&engine, &plugin, &[("bytes", "64Mi")], 2, &limits);
    let err = result.outcome.unwrap_err().to_string();
    assert!(err.contains("LimitExceeded"), "{err}");
}

#[test]
fn cross_device_mistakes_are_refused_and_leftovers_freed_on_every_device() {
    let engine = PluginEngine::new(None).unwrap();
    let plugin = load(&engine, "test/misbehave.wasm");
    for (mode, expected) in [
        ("peer-out-of-range", "does not exist: this run has 2"),
        ("peer-wrong-stream", "stream of the source's device 0"),
        ("peer-mixed", "mixes devices"),
    ] {
        let result = run(
            &engine,
            &plugin,
            &[("mode", mode)],
            2,
            &RunLimits::default(),
        );
        let err = result.outcome.unwrap_err().to_string();
        assert!(err.contains(expected), "{mode}: {err}");
    }
    let result = run(
        &engine,
        &plugin,
        &[("mode", "peer-leak")],
        2,
        &RunLimits::default(),
    );
    let report = result.outcome.unwrap();
    assert_eq!(report.leftovers.buffers, 2, "{}", report.leftovers);
    assert_eq!(report.leftovers.streams_and_events, 4);
    // Both devices are clean for the next run.
    let mut gpus = vec![result.gpu];
    gpus.extend(result.peers);
    for gpu in &mut gpus {
        assert!(gpu.end_run().is_empty());
    }
}
