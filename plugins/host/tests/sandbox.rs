//! Real plugin components in the real host, on the simulated GPU: the example plugin, and every
//! way a plugin can misbehave. Each bad plugin must end in a clear error, leave the GPU clean,
//! and leave the host able to run the next plugin.
//!
//! The components are built by `./x build` (or `./x test`) into `target/plugins`.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use passage_gpu::{FakeGpu, GpuBackend, GpuError};
use passage_plugin_host::{
    LoadedPlugin, ParamValue, PluginEngine, PluginError, RunLimits, RunResult, resolve_params,
};

fn plugin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PASSAGE_PLUGIN_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("plugins")
}

fn component(name: &str) -> Vec<u8> {
    let path = plugin_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the plugins first with ./x build",
            path.display()
        )
    })
}

fn engine() -> &'static PluginEngine {
    static ENGINE: OnceLock<PluginEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let cache = std::env::temp_dir().join(format!("passage-host-tests-{}", std::process::id()));
        PluginEngine::new(Some(&cache)).unwrap()
    })
}

fn misbehave() -> LoadedPlugin {
    engine().load(&component("test/misbehave.wasm")).unwrap()
}

fn run_mode(
    plugin: &LoadedPlugin,
    mode: &str,
    extra: &[(&str, &str)],
    gpu: Box<dyn GpuBackend>,
    limits: &RunLimits,
) -> RunResult {
    let mut given = vec![("mode".to_string(), mode.to_string())];
    given.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let params = resolve_params(&plugin.info, &given).unwrap();
    engine().run(plugin, &params, gpu, limits, Box::new(|_| {}))
}

/// After a failure, the same backend must serve a healthy run.
fn assert_healthy(plugin: &LoadedPlugin, gpu: Box<dyn GpuBackend>) {
    let result = run_mode(plugin, "ok", &[], gpu, &RunLimits::default());
    let report = result.outcome.expect("the next run succeeds");
    assert_eq!(report.metrics[0].value, 42.0);
    assert!(report.leftovers.is_empty());
}

#[test]
fn the_example_plugin_runs_on_the_simulated_gpu() {
    let plugin = engine().load(&component("vector-add.wasm")).unwrap();
    assert_eq!(plugin.info.name, "vector-add");
    assert_eq!(plugin.sha256.len(), 64);
    let gpu = FakeGpu::default();
    let launches = gpu.launches();
    let params = resolve_params(
        &plugin.info,
        &[
            ("elements".into(), "4096".into()),
            ("repetitions".into(), "5".into()),
        ],
    )
    .unwrap();
    let result = engine().run(
        &plugin,
        &params,
        Box::new(gpu),
        &RunLimits::default(),
        Box::new(|_| {}),
    );
    let report = result.outcome.unwrap();
    assert!(report.simulated);
    assert!(
        report.leftovers.is_empty(),
        "the plugin frees what it allocates"
    );
    let metric = |name: &str| {
        report
            .metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    };
    assert_eq!(
        metric("verification"),
        Some(-1.0),
        "never PASS on a simulated device"
    );
    assert_eq!(metric("elements"), Some(4096.0));
    assert!(metric("kernel time").unwrap() >= 0.0);
    let launches = launches.lock().unwrap();
    assert_eq!(
        launches.len(),
        3 + 2 * 5,
        "warm-up launches, then each timed launch behind the timing gate"
    );
    assert_eq!(launches[0].kernel, "vector_add");
    assert_eq!(launches[3].kernel, "passage_gate");
    assert_eq!(launches[0].config.grid, (16, 1, 1));
}

#[test]
fn garbage_bytes_are_not_a_component() {
    let err = engine().load(b"definitely not wasm").unwrap_err();
    assert!(matches!(err, PluginError::NotAComponent(_)), "{err}");
    let err = engine()
        .load(b"\0asm\x0d\0\x01\0garbage after the header")
        .unwrap_err();
    assert!(matches!(err, PluginError::NotAComponent(_)), "{err}");
}

#[test]
fn a_core_module_is_not_a_component() {
    let err = engine().load(b"\0asm\x01\0\0\0").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PluginError::NotAComponent(_)), "{text}");
    assert!(text.contains("component"), "{text}");
}

#[test]
fn a_component_of_another_world_is_refused() {
    let err = engine()
        .load(&component("test/other-world.wasm"))
        .unwrap_err();
    assert!(matches!(err, PluginError::WrongWorld(_)), "{err}");
}

#[test]
fn a_trap_fails_the_run_and_the_host_carries_on() {
    let plugin = misbehave();
    let result = run_mode(
        &plugin,
        "trap",
        &[],
        Box::new(FakeGpu::default()),
        &RunLimits::default(),
    );
    let err = result.outcome.unwrap_err();
    assert!(matches!(err, PluginError::Trap(_)), "{err}");
    assert_healthy(&plugin, result.gpu);
}

#[test]
fn an_infinite_loop_is_stopped_at_the_time_limit() {
    let plugin = misbehave();
    let limits = RunLimits {
        wall_time: Duration::from_millis(300),
        ..RunLimits::default()
    };
    let started = Instant::now();
    let result = run_mode(&plugin, "spin", &[], Box::new(FakeGpu::default()), &limits);
    let err = result.outcome.unwrap_err();
    assert!(matches!(err, PluginError::TimedOut { .. }), "{err}");
    assert!(err.to_string().contains("--timeout"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped promptly"
    );
    assert_healthy(&plugin, result.gpu);
}

#[test]
fn unbounded_memory_growth_hits_the_wasm_memory_limit() {
    let plugin = misbehave();
    let limits = RunLimits {
        wasm_memory: 64 << 20,
        ..RunLimits::default()
    };
    let result = run_mode(&plugin, "grow", &[], Box::new(FakeGpu::default()), &limits);
    let err = result.outcome.unwrap_err();
    // The author learns which limit, its value and how to raise it, not wasmtime's words.
    let PluginError::LimitExceeded(message) = &err else {
        panic!("{err}")
    };
    assert!(
        message.contains("WebAssembly memory")
            && message.contains("limit of 64 MiB")
            && message.contains("--wasm-memory-mib"),
        "{message}"
    );
    assert!(!message.contains("forcing trap"), "{message}");
    assert_healthy(&plugin, result.gpu);
}

#[test]
fn one_write_may_move_as_much_as_the_plugin_can_hold() {
    // wasmtime caps the data of one host call at 128 MiB by default; the run's memory limit is
    // the real bound, so a 200 MiB write goes through under a 512 MiB limit.
    let plugin = misbehave();
    let limits = RunLimits {
        wasm_memory: 512 << 20,
        ..RunLimits::default()
    };
    let result = run_mode(
        &plugin,
        "big-write",
        &[("bytes", "200Mi")],
        Box::new(FakeGpu::default()),
        &limits,
    );
    let report = result
        .outcome
        .expect("a 200 MiB write under a 512 MiB limit");
    assert_eq!(report.metrics[0].value, (200u64 << 20) as f64);
    // Past the plugin's own memory, the message names that limit.
    let limits = RunLimits {
        wasm_memory: 128 << 20,
        ..RunLimits::default()
    };
    let result = run_mode(
        &plugin,
        "big-write",
        &[("bytes", "200Mi")],
        Box::new(FakeGpu::default()),
        &limits,
    );
    let err = result.outcome.unwrap_err().to_string();
    assert!(
        err.contains("limit of 128 MiB") && err.contains("--wasm-memory-mib"),
        "{err}"
    );
    assert!(!err.contains("fuel"), "{err}");
}

#[test]
fn a_pass_claimed_on_the_simulated_device_is_recorded_as_skipped() {
    let plugin = misbehave();
    let result = run_mode(
        &plugin,
        "claim-pass",
        &[],
        Box::new(FakeGpu::default()),
        &RunLimits::default(),
    );
    let report = result.outcome.unwrap();
    assert!(report.simulated);
    let verification: Vec<f64> = report
        .metrics
        .iter()
        .filter(|m| m.name == "verification")
        .map(|m| m.value)
        .collect();
    assert_eq!(verification, [-1.0]);
    assert!(
        report
            .logs
            .iter()
            .any(|(_, line)| line.contains("simulated device") && line.contains("skipped")),
        "{:?}",
        report.logs
    );
}

#[test]
fn gpu_allocation_over_the_limit_is_refused() {
    let plugin = misbehave();
    let limits = RunLimits {
        gpu_memory: 1 << 20,
        ..RunLimits::default()
    };
    let result = run_mode(
        &plugin,
        "gpu-hog",
        &[("bytes", "2Mi")],
        Box::new(FakeGpu::default()),
        &limits,
    );
    let err = result.outcome.unwrap_err().to_string();
    assert!(
        err.contains("LimitExceeded") && err.contains("GPU memory limit"),
        "{err}"
    );
    // The device itself running out is reported as such.
    let result = run_mode(
        &plugin,
        "gpu-hog",
        &[("bytes", "64Mi")],
        Box::new(FakeGpu::new(32 << 20)),
        &RunLimits::default(),
    );
    let err = result.outcome.unwrap_err().to_string();
    assert!(err.contains("OutOfMemory"), "{err}");
    assert_healthy(&plugin, result.gpu);
}

#[test]
fn a_kernel_that_does_not_compile_is_a_clear_error() {
    let plugin = misbehave();
    let result = run_mode(
        &plugin,
        "bad-kernel",
        &[],
        Box::new(FakeGpu::default()),
        &RunLimits::default(),
    );
    let err = result.outcome.unwrap_err().to_string();
    assert!(
        err.contains("CompileFailed") && err.contains("broken.cu"),
        "{err}"
    );
}

#[test]
fn wrong_kernel_arguments_never_reach_the_device() {
    let plugin = misbehave();
    let gpu = FakeGpu::default();
    let launches = gpu.launches();
    let result = run_mode(
        &plugin,
        "wrong-args",
        &[],
        Box::new(gpu),
        &RunLimits::default(),
    );
    let err = result.outcome.unwrap_err().to_string();
    assert!(err.contains("takes 2 arguments, 1 were given"), "{err}");
    assert!(launches.lock().unwrap().is_empty());
}

#[test]
fn a_kernel_fault_fails_the_run_even_if_the_plugin_ignores_it() {
    let plugin = misbehave();
    for mode in ["fault", "ignore-fault"] {
        let mut gpu = FakeGpu::default();
        gpu.fail_next_launch(GpuError::KernelFault(
            "an illegal memory access was encountered".into(),
        ));
        let result = run_mode(&plugin, mode, &[], Box::new(gpu), &RunLimits::default());
        let err = result.outcome.unwrap_err().to_string();
        assert!(err.contains("illegal memory access"), "{mode}: {err}");
        assert_healthy(&plugin, result.gpu);
    }
}

#[test]
fn what_a_plugin_leaks_is_freed_after_the_run() {
    let plugin = misbehave();
    // 8 MiB leaked on a 16 MiB device: the next run can take the whole device only if the leak
    // was freed.
    let result = run_mode(
        &plugin,
        "leak",
        &[],
        Box::new(FakeGpu::new(16 << 20)),
        &RunLimits::default(),
    );
    let report = result.outcome.unwrap();
    assert_eq!(report.leftovers.buffers, 8);
    assert_eq!(report.leftovers.host_buffers, 8);
    assert_eq!(report.leftovers.modules, 1);
    assert_eq!(report.leftovers.streams_and_events, 16);
    let result = run_mode(
        &plugin,
        "gpu-hog",
        &[("bytes", "16Mi")],
        result.gpu,
        &RunLimits::default(),
    );
    assert!(result.outcome.is_ok(), "all device memory is free again");
}

#[test]
fn too_many_live_resources_are_refused() {
    let plugin = misbehave();
    let limits = RunLimits {
        resources: 10,
        ..RunLimits::default()
    };
    let result = run_mode(&plugin, "leak", &[], Box::new(FakeGpu::default()), &limits);
    let err = result.outcome.unwrap_err().to_string();
    assert!(err.contains("LimitExceeded"), "{err}");
}

#[test]
fn the_sandbox_has_no_files_sockets_or_environment() {
    let plugin = misbehave();
    let result = run_mode(
        &plugin,
        "escape",
        &[],
        Box::new(FakeGpu::default()),
        &RunLimits::default(),
    );
    let report = result.outcome.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report
            .logs
            .iter()
            .any(|(_, line)| line.starts_with("file: Err"))
    );
    assert!(
        report
            .logs
            .iter()
            .any(|(_, line)| line.starts_with("socket: Err"))
    );
}

#[test]
fn parameters_are_checked_before_the_run() {
    let plugin = misbehave();
    let err = resolve_params(&plugin.info, &[("bytes".into(), "0".into())]).unwrap_err();
    assert!(matches!(err, PluginError::BadParam { .. }), "{err}");
    let params = resolve_params(&plugin.info, &[]).unwrap();
    assert_eq!(params[0], ("mode".into(), ParamValue::Text("ok".into())));
}

#[test]
fn the_template_plugin_runs_as_shipped() {
    let plugin = engine()
        .load(&component("test/plugin-template.wasm"))
        .unwrap();
    assert_eq!(plugin.info.name, "scale");
    let params = resolve_params(&plugin.info, &[("factor".into(), "0.5".into())]).unwrap();
    let result = engine().run(
        &plugin,
        &params,
        Box::new(FakeGpu::default()),
        &RunLimits::default(),
        Box::new(|_| {}),
    );
    let report = result.outcome.unwrap();
    assert!(
        report
            .metrics
            .iter()
            .any(|m| m.name == "verification" && m.value == -1.0)
    );
}

// Attacks on the host through the plugin contract: each ends in a clear error, within bounded
// time, and leaves the host able to run the next plugin.

/// Runs `mode` with default limits and returns its error as text, checking that it failed
/// within `seconds` and that the same GPU then serves a healthy run.
fn attack(mode: &str, limits: &RunLimits, seconds: u64) -> PluginError {
    let plugin = misbehave();
    let started = Instant::now();
    let result = run_mode(&plugin, mode, &[], Box::new(FakeGpu::default()), limits);
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(seconds),
        "{mode} took {elapsed:?}"
    );
    let err = result.outcome.expect_err(mode);
    assert_healthy(&plugin, result.gpu);
    err
}

#[test]
fn host_files_cannot_be_included_into_cuda_source() {
    for mode in ["include-file", "include-macro", "include-disguised"] {
        let err = attack(mode, &RunLimits::default(), 10).to_string();
        assert!(err.contains("CompileFailed"), "{mode}: {err}");
        assert!(
            err.contains("only cuda_fp16.h"),
            "{mode}: the refusal names what may be included: {err}"
        );
        for leak in ["root:", "/bin/bash", "localhost"] {
            assert!(!err.contains(leak), "{mode} leaked {leak:?}: {err}");
        }
    }
}

#[test]
fn a_metric_flood_is_stopped_at_the_metric_limit() {
    let limits = RunLimits::default();
    let err = attack("metric-flood", &limits, 20);
    let PluginError::LimitExceeded(message) = &err else {
        panic!("{err}")
    };
    assert!(
        message.contains(&format!("more than {} metrics", limits.metrics)),
        "{message}"
    );
    let err = attack("long-metric-name", &limits, 10).to_string();
    assert!(err.contains("at most 256 bytes"), "{err}");
}

#[test]
fn log_floods_are_stopped_by_lines_and_by_bytes() {
    let limits = RunLimits::default();
    let err = attack("log-flood", &limits, 20);
    assert!(
        matches!(&err, PluginError::LimitExceeded(m) if m.contains("log lines")),
        "{err}"
    );
    let err = attack("huge-log", &limits, 20);
    assert!(
        matches!(&err, PluginError::LimitExceeded(m) if m.contains("bytes of reported text")),
        "{err}"
    );
}

#[test]
fn a_progress_flood_is_thinned_out_not_passed_on() {
    let plugin = misbehave();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    let params = resolve_params(
        &plugin.info,
        &[("mode".to_string(), "progress-flood".to_string())],
    )
    .unwrap();
    let started = Instant::now();
    let result = engine().run(
        &plugin,
        &params,
        Box::new(FakeGpu::default()),
        &RunLimits::default(),
        Box::new(move |event| {
            if matches!(event, passage_plugin_host::RunEvent::Progress(..)) {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }),
    );
    let elapsed = started.elapsed();
    result.outcome.expect("progress is never an error");
    let passed_on = seen.load(std::sync::atomic::Ordering::Relaxed);
    // At most one every 50 ms, plus the first.
    let most = (elapsed.as_millis() / 50) as usize + 1;
    assert!(
        passed_on <= most,
        "{passed_on} of 2,000,000 progress calls passed on in {elapsed:?}"
    );
}

#[test]
fn host_memory_has_its_own_limit() {
    let limits = RunLimits {
        host_memory: 3 << 30,
        gpu_memory: 64 << 30,
        ..RunLimits::default()
    };
    let err = attack("host-hog", &limits, 20).to_string();
    assert!(
        err.contains("LimitExceeded") && err.contains("host memory limit of 3221225472 bytes"),
        "{err}"
    );
    assert!(err.contains("after 3 GiB"), "{err}");
}

#[test]
fn module_variables_count_against_gpu_memory() {
    let limits = RunLimits::default();
    for mode in ["global-hog", "global-hog-ptx"] {
        let err = attack(mode, &limits, 10).to_string();
        assert!(
            err.contains("LimitExceeded")
                && err.contains("__device__ variables: ")
                && err.contains("GPU memory limit"),
            "{mode}: {err}"
        );
    }
}
