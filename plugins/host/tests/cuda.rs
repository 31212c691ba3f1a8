//! Plugins on a real GPU through CUDA. Skipped, with the reason printed, where no CUDA driver is
//! installed; `benches/gpu.sh` runs this on the GPU machine, where it sets [`CUDA_REQUIRED`] and
//! a missing GPU fails the tests instead.

use std::path::PathBuf;

use passage_gpu::GpuBackend;
use passage_gpu::cuda::CudaGpu;
use passage_plugin_host::{
    LoadedPlugin, PluginEngine, PluginError, RunLimits, RunResult, resolve_params,
};

/// Set where a GPU is expected: without one the tests fail rather than skip.
const CUDA_REQUIRED: &str = "PASSAGE_TEST_CUDA";

fn plugin(name: &str, engine: &PluginEngine) -> LoadedPlugin {
    let dir = std::env::var_os("PASSAGE_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins"));
    let bytes = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    engine.load(&bytes).unwrap()
}

fn run(
    engine: &PluginEngine,
    plugin: &LoadedPlugin,
    given: &[(&str, &str)],
    gpu: Box<dyn GpuBackend>,
) -> RunResult {
    let given: Vec<(String, String)> = given
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let params = resolve_params(&plugin.info, &given).unwrap();
    engine.run(
        plugin,
        &params,
        gpu,
        &RunLimits::default(),
        Box::new(|_| {}),
    )
}

fn verification(result: &RunResult, step: &str) -> f64 {
    let report = result
        .outcome
        .as_ref()
        .unwrap_or_else(|e| panic!("{step}: {e}"));
    report
        .metrics
        .iter()
        .find(|m| m.name == "verification")
        .unwrap()
        .value
}

#[test]
fn plugins_on_a_real_gpu_verify_fail_cleanly_and_recover() {
    let engine = PluginEngine::new(None).unwrap();
    let vector_add = plugin("vector-add.wasm", &engine);
    let misbehave = plugin("test/misbehave.wasm", &engine);
    let gpu = match CudaGpu::open(0, None) {
        Ok(gpu) => gpu,
        Err(e) => {
            passage_test_support::device_missing(CUDA_REQUIRED, &format!("no CUDA GPU: {e}"));
            return;
        }
    };
    assert!(!gpu.info().simulated);
    println!("device: {} at {}", gpu.info().name, gpu.info().pci_bus_id);

    let result = run(&engine, &vector_add, &[("elements", "4Mi")], Box::new(gpu));
    assert_eq!(
        verification(&result, "first run"),
        1.0,
        "PASS against the CPU reference"
    );
    let mut gpu = result.gpu;

    // NVRTC's own diagnostics come back.
    let result = run(&engine, &misbehave, &[("mode", "bad-kernel")], gpu);
    let err = result.outcome.unwrap_err().to_string();
    assert!(
        err.contains("CompileFailed") && err.contains("error"),
        "{err}"
    );
    gpu = result.gpu;

    let result = run(&engine, &misbehave, &[("mode", "wrong-args")], gpu);
    let err = result.outcome.unwrap_err().to_string();
    assert!(
        err.contains("takes 1 arguments") || err.contains("takes 2 arguments"),
        "{err}"
    );
    gpu = result.gpu;

    let result = run(&engine, &misbehave, &[("mode", "leak")], gpu);
    let report = result.outcome.unwrap();
    assert_eq!(report.leftovers.buffers, 8);
    let result = run(&engine, &vector_add, &[], result.gpu);
    assert_eq!(verification(&result, "after leak"), 1.0);

    // Engines and plugins made while the device is open work as well (an agent loads new
    // plugins for as long as it runs).
    let later = PluginEngine::new(None).unwrap();
    let again = plugin("vector-add.wasm", &later);
    let result = run(&later, &again, &[("elements", "1Mi")], result.gpu);
    assert_eq!(
        verification(&result, "new engine"),
        1.0,
        "a plugin loaded after the device opened"
    );
    let gpu = result.gpu;

    // A real fault fails the run, also when the plugin ignores the error. CUDA stays unusable in
    // this process afterwards, and says so; the agent runs each job in a new process.
    let result = run(&engine, &misbehave, &[("mode", "ignore-fault")], gpu);
    match &result.outcome {
        Err(PluginError::Failed(message)) => assert!(
            message.contains("unspecified launch failure") || message.contains("illegal"),
            "{message}"
        ),
        other => panic!("expected a failed run, got {other:?}"),
    }
    let result = run(&engine, &vector_add, &[], result.gpu);
    let err = result.outcome.unwrap_err().to_string();
    assert!(err.contains("new process"), "{err}");
}

#[test]
fn an_event_query_does_not_wait_for_the_device() {
    let mut gpu = match CudaGpu::open(0, None) {
        Ok(gpu) => gpu,
        Err(e) => {
            passage_test_support::device_missing(CUDA_REQUIRED, &format!("no CUDA GPU: {e}"));
            return;
        }
    };
    let stream = gpu.stream_create().unwrap();
    let module = gpu
        .compile(
            "spin.cu",
            "extern \"C\" __global__ void spin(long long cycles) {\n\
             long long start = clock64(); while (clock64() - start < cycles) {} }",
        )
        .unwrap();
    let (spin, _) = gpu.kernel(module, "spin").unwrap();
    let event = gpu.event_create().unwrap();
    let config = passage_gpu::LaunchConfig {
        grid: (1, 1, 1),
        block: (1, 1, 1),
        shared_mem_bytes: 0,
    };
    // About 0.2 s at the H100's clock: long enough that the query comes first.
    let cycles = i64::from(gpu.info().clock_khz) * 200;
    gpu.launch(
        spin,
        &config,
        &[passage_gpu::KernelArg::I64(cycles)],
        stream,
    )
    .unwrap();
    gpu.event_record(event, stream).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(gpu.event_query(event), Ok(false), "the kernel still spins");
    assert!(started.elapsed() < std::time::Duration::from_millis(50));
    gpu.event_sync(event).unwrap();
    assert_eq!(gpu.event_query(event), Ok(true));
    assert!(gpu.event_query(stream).is_err(), "a stream is not an event");
    gpu.end_run();
}
