//! The study's suite (`plugins/suite`) in the real host, on the simulated GPU: every plugin
//! loads, runs with small sizes, reports its figures, is labelled simulated, reports
//! verification as skipped (never PASS: the simulated device computes nothing), and frees what it
//! allocated. Real verification runs on a GPU machine: `benches/suite.sh`.
//!
//! The components are built by `./x build` (or `./x test`) into `target/plugins`.

use std::path::PathBuf;
use std::sync::OnceLock;

use passage_gpu::FakeGpu;
use passage_plugin_host::{PluginEngine, RunLimits, RunReport, resolve_params};

fn plugin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PASSAGE_PLUGIN_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("plugins")
}

fn engine() -> &'static PluginEngine {
    static ENGINE: OnceLock<PluginEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let cache =
            std::env::temp_dir().join(format!("passage-suite-tests-{}", std::process::id()));
        PluginEngine::new(Some(&cache)).unwrap()
    })
}

/// Runs `name` on a fresh simulated GPU and returns its report, checked for what every suite
/// plugin must do there.
fn run_simulated(name: &str, given: &[(&str, &str)]) -> RunReport {
    let path = plugin_dir().join(format!("{name}.wasm"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the plugins first with ./x build",
            path.display()
        )
    });
    let plugin = engine().load(&bytes).unwrap();
    assert_eq!(plugin.info.name, name);
    assert!(!plugin.info.summary.is_empty());
    let given: Vec<(String, String)> = given
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let params = resolve_params(&plugin.info, &given).unwrap();
    let result = engine().run(
        &plugin,
        &params,
        Box::new(FakeGpu::default()),
        &RunLimits::default(),
        Box::new(|_| {}),
    );
    let report = result.outcome.unwrap_or_else(|e| panic!("{name}: {e:#}"));
    assert!(
        report.simulated,
        "{name}: the outcome is labelled simulated"
    );
    assert!(
        report.leftovers.is_empty(),
        "{name} frees what it allocates: {}",
        report.leftovers
    );
    assert_eq!(
        metric(&report, "verification"),
        Some(-1.0),
        "{name}: verification is skipped on a simulated device, never passed"
    );
    assert!(
        report.logs.iter().any(|(_, line)| line.contains("SKIPPED")),
        "{name}: says it skipped verification"
    );
    report
}

fn metric(report: &RunReport, name: &str) -> Option<f64> {
    report
        .metrics
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.value)
}

/// Every name is reported, each with its unit.
fn assert_figures(report: &RunReport, figures: &[(&str, &str)]) {
    for (name, unit) in figures {
        let found = report.metrics.iter().find(|m| m.name == *name);
        match found {
            Some(m) => assert_eq!(m.unit, *unit, "{name}"),
            None => panic!(
                "no figure {name:?}; reported: {:?}",
                report.metrics.iter().map(|m| &m.name).collect::<Vec<_>>()
            ),
        }
    }
}

#[test]
fn bandwidth_test_reports_three_directions_in_gb_per_s() {
    let report = run_simulated("bandwidth-test", &[("copies", "2"), ("repetitions", "2")]);
    assert_figures(
        &report,
        &[
            ("H2D bandwidth", "GB/s"),
            ("H2D bandwidth min", "GB/s"),
            ("H2D bandwidth max", "GB/s"),
            ("D2H bandwidth", "GB/s"),
            ("D2D bandwidth", "GB/s"),
            ("transfer size", "bytes"),
        ],
    );
    assert_eq!(metric(&report, "transfer size"), Some(32_000_000.0));
    assert_eq!(metric(&report, "pinned memory"), Some(1.0));

    let report = run_simulated(
        "bandwidth-test",
        &[
            ("mode", "range"),
            ("start", "1000"),
            ("end", "3000"),
            ("increment", "1000"),
            ("memory", "pageable"),
            ("directions", "htod,dtod"),
            ("copies", "1"),
            ("repetitions", "1"),
        ],
    );
    assert_figures(
        &report,
        &[
            ("H2D bandwidth 1000 B", "GB/s"),
            ("H2D bandwidth 3000 B", "GB/s"),
            ("D2D bandwidth 2000 B", "GB/s"),
        ],
    );
    assert_eq!(metric(&report, "D2H bandwidth 1000 B"), None);
    assert_eq!(metric(&report, "pinned memory"), Some(0.0));
}

#[test]
fn matrix_mul_reports_the_samples_figures() {
    let report = run_simulated("matrix-mul", &[("iterations", "2"), ("repetitions", "2")]);
    assert_figures(
        &report,
        &[
            ("performance", "GFlop/s"),
            ("time", "msec"),
            ("size", "Ops"),
            ("workgroup size", "threads/block"),
        ],
    );
    assert_eq!(metric(&report, "size"), Some(2.0 * 320.0 * 320.0 * 640.0));
    assert_eq!(metric(&report, "workgroup size"), Some(1024.0));
    let report = run_simulated(
        "matrix-mul",
        &[
            ("wa", "64"),
            ("ha", "32"),
            ("wb", "48"),
            ("hb", "64"),
            ("block", "16"),
            ("iterations", "1"),
            ("repetitions", "1"),
        ],
    );
    assert_eq!(metric(&report, "size"), Some(2.0 * 64.0 * 32.0 * 48.0));
}

#[test]
fn vector_add_takes_the_studys_sizes() {
    for n in ["128", "256", "512", "1024"] {
        let report = run_simulated("vector-add", &[("elements", n), ("repetitions", "3")]);
        assert_figures(
            &report,
            &[
                ("kernel time", "ms"),
                ("kernel time min", "ms"),
                ("kernel time max", "ms"),
                ("effective bandwidth", "GB/s"),
            ],
        );
        assert_eq!(metric(&report, "elements"), n.parse().ok());
    }
}

#[test]
fn black_scholes_reports_time_bandwidth_and_options() {
    let report = run_simulated(
        "black-scholes",
        &[
            ("options", "20000"),
            ("iterations", "2"),
            ("repetitions", "2"),
        ],
    );
    assert_figures(
        &report,
        &[
            ("BlackScholesGPU() time", "msec"),
            ("effective memory bandwidth", "GB/s"),
            ("gigaoptions per second", "Gigaoptions/s"),
            ("options count", "options"),
        ],
    );
    assert_eq!(metric(&report, "options count"), Some(40_000.0));
}

#[test]
fn convolution_separable_reports_mpixels_per_s() {
    let report = run_simulated(
        "convolution-separable",
        &[
            ("width", "256"),
            ("height", "128"),
            ("iterations", "2"),
            ("repetitions", "2"),
        ],
    );
    assert_figures(
        &report,
        &[
            ("throughput", "MPixels/s"),
            ("time", "msec"),
            ("size", "pixels"),
        ],
    );
}

#[test]
fn fast_walsh_transform_reports_ms_and_gops() {
    let report = run_simulated(
        "fast-walsh-transform",
        &[("log2-data", "14"), ("repetitions", "2")],
    );
    assert_figures(
        &report,
        &[
            ("GPU time", "ms"),
            ("GOP/s", "GOP/s"),
            ("data length", "floats"),
            ("kernel length", "floats"),
        ],
    );
}

#[test]
fn aligned_types_reports_every_type() {
    let report = run_simulated(
        "aligned-types",
        &[
            ("bytes", "65536"),
            ("iterations", "2"),
            ("repetitions", "2"),
        ],
    );
    for ty in [
        "uint8",
        "uint16",
        "RGBA8_misaligned",
        "LA32_misaligned",
        "RGB32_misaligned",
        "RGBA32_misaligned",
        "RGBA8",
        "I32",
        "LA32",
        "RGB32",
        "RGBA32",
        "RGBA32_2",
    ] {
        assert_figures(
            &report,
            &[
                (&format!("{ty} time"), "ms"),
                (&format!("{ty} copy throughput"), "GB/s (2^30 B)"),
            ],
        );
    }
}

#[test]
fn async_api_reports_gpu_time_cpu_time_and_iterations() {
    let report = run_simulated("async-api", &[("elements", "65536"), ("repetitions", "2")]);
    assert_figures(
        &report,
        &[
            ("time spent executing by the GPU", "ms"),
            ("time spent by CPU in CUDA calls", "ms"),
            ("CPU iterations while waiting for GPU", "iterations"),
        ],
    );
}

#[test]
fn clock_reports_clocks_per_block() {
    let report = run_simulated("clock", &[("repetitions", "2")]);
    assert_figures(&report, &[("average clocks/block", "clocks")]);
}
