//! A plugin author's path through the agent: `new` in each language, the project's own build,
//! `check`, and `run` on the simulated GPU, where CUDA C is compiled by NVRTC for real; and the
//! messages of a run that reaches one of its limits.
//!
//! The Python and JavaScript examples are built by `./x test` (as `./x examples` does, from
//! `passage-agent new --example vector-add`) into `target/plugins/examples/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_passage-agent"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

fn plugin_dir() -> PathBuf {
    std::env::var_os("PASSAGE_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("plugins"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `run --json --backend fake` of `plugin` with `args`: the parsed result on success, the
/// error text otherwise.
fn run_fake(plugin: &Path, args: &[&str], cache: &Path) -> Result<Value, String> {
    let output = agent()
        .arg("run")
        .arg(plugin)
        .args(["--backend", "fake", "--json", "--cache-dir"])
        .arg(cache)
        .args(args)
        .output()
        .unwrap();
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).expect("JSON"))
    } else {
        Err(text(&output))
    }
}

fn metric(result: &Value, name: &str) -> Option<f64> {
    result["metrics"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)?["value"]
        .as_f64()
}

/// The examples built by `./x test`, or `None` (skipped, or failed in CI) without them.
fn example(name: &str) -> Option<PathBuf> {
    let path = plugin_dir().join("examples").join(name);
    if path.is_file() {
        return Some(path);
    }
    let reason = format!("{} is missing (./x examples builds it)", path.display());
    assert!(!passage_test_support::in_ci(), "CI=true, but {reason}");
    passage_test_support::skip(&reason);
    None
}

#[test]
fn new_makes_a_project_in_each_language_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    for (lang, files) in [
        (
            "rust",
            &[
                "Cargo.toml",
                "src/lib.rs",
                "sdk/src/lib.rs",
                "wit/plugin.wit",
            ][..],
        ),
        (
            "python",
            &["app.py", "passage_plugin.py", "build.sh", "wit/plugin.wit"],
        ),
        (
            "js",
            &["plugin.js", "passage.js", "package.json", "wit/plugin.wit"],
        ),
    ] {
        let project = dir.path().join(lang);
        let output = agent()
            .args(["new", "saxpy", "--lang", lang, "--dir"])
            .arg(&project)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output));
        assert!(
            text(&output).contains("passage-agent check"),
            "{}",
            text(&output)
        );
        for file in files {
            assert!(project.join(file).is_file(), "{lang}: {file}");
        }
        let again = agent()
            .args(["new", "saxpy", "--lang", lang, "--dir"])
            .arg(&project)
            .output()
            .unwrap();
        assert!(!again.status.success());
        assert!(text(&again).contains("exists already"), "{}", text(&again));
    }
    let bad = agent().args(["new", "My Plugin"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("is not a plugin name"),
        "{}",
        text(&bad)
    );
}

/// The Rust project builds on its own, outside this workspace, checks and runs: what a newcomer
/// does after `new`.
#[test]
fn a_new_rust_plugin_builds_checks_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("saxpy");
    let made = agent()
        .args(["new", "saxpy", "--lang", "rust", "--dir"])
        .arg(&project)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
    // Its own target directory, kept between runs so that only the first build is slow; its
    // crates come from the cache cargo already holds for this workspace.
    let build = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--offline",
        ])
        .env("CARGO_TARGET_DIR", target_dir().join("kit-rust"))
        .current_dir(&project)
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build));
    let wasm = target_dir().join("kit-rust/wasm32-wasip2/release/saxpy.wasm");
    let check = agent().arg("check").arg(&wasm).output().unwrap();
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        text(&check).contains("describe: saxpy 0.1.0"),
        "{}",
        text(&check)
    );
    let result = run_fake(&wasm, &["-p", "elements=4096"], dir.path()).unwrap();
    assert_eq!(result["plugin"], "saxpy");
    assert_eq!(result["simulated"], true);
    assert_eq!(metric(&result, "verification"), Some(-1.0));
}

#[test]
fn the_python_and_javascript_vector_add_check_and_run_on_the_simulated_gpu() {
    let cache = tempfile::tempdir().unwrap();
    for name in ["vector-add-python.wasm", "vector-add-js.wasm"] {
        let Some(plugin) = example(name) else {
            return;
        };
        let check = agent()
            .args(["check", "--json"])
            .arg(&plugin)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&check.stdout).expect("JSON");
        assert_eq!(report["passed"], true, "{name}: {report:#}");
        // Built from a one-GPU contract: it does not ask for every GPU of the machine.
        assert!(
            !report.to_string().contains("imports peers"),
            "{name}: {report:#}"
        );
        let result = run_fake(&plugin, &["-p", "repetitions=5"], cache.path())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for figure in ["kernel time", "effective bandwidth", "elements"] {
            assert!(metric(&result, figure).is_some(), "{name}: {figure}");
        }
        assert_eq!(metric(&result, "elements"), Some(50_000.0), "{name}");
        assert_eq!(metric(&result, "verification"), Some(-1.0), "{name}");
        // A bad parameter is refused before the plugin runs, naming it.
        let refused = run_fake(&plugin, &["-p", "block=7"], cache.path()).unwrap_err();
        assert!(refused.contains("block"), "{name}: {refused}");
    }
}

fn misbehave() -> PathBuf {
    let path = plugin_dir().join("test/misbehave.wasm");
    assert!(
        path.is_file(),
        "{}: build the plugins first with ./x build",
        path.display()
    );
    path
}

/// With NVRTC installed (`./x setup --tests` installs it; CI must have it), the simulated GPU
/// compiles CUDA C for real: an undeclared identifier fails as it would on a GPU.
#[test]
fn the_simulated_gpu_compiles_cuda_c_with_nvrtc() {
    let cache = tempfile::tempdir().unwrap();
    let ok = run_fake(&misbehave(), &["-p", "mode=ok"], cache.path()).unwrap();
    let Some(compiler) = ok["compiler"].as_str() else {
        let reason = "NVRTC is not installed (./x setup --tests installs it)";
        assert!(!passage_test_support::in_ci(), "CI=true, but {reason}");
        passage_test_support::skip(reason);
        return;
    };
    assert!(compiler.starts_with("NVRTC "), "{compiler}");
    let err = run_fake(&misbehave(), &["-p", "mode=undeclared"], cache.path()).unwrap_err();
    assert!(
        err.contains("CompileFailed")
            && err.contains("error: identifier")
            && err.contains("is undefined"),
        "{err}"
    );
}

#[test]
fn a_core_module_or_another_world_fails_check_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    // The smallest core module: magic and version 1.
    let module = dir.path().join("module.wasm");
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    let output = agent().arg("check").arg(&module).output().unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output).contains("core WebAssembly module")
            && text(&output).contains("wasm32-wasip2"),
        "{}",
        text(&output)
    );
    let other = plugin_dir().join("test/other-world.wasm");
    let output = agent().arg("check").arg(&other).output().unwrap();
    assert!(!output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("FAIL"), "{}", text(&output));
    let output = agent().arg("check").arg(misbehave()).output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
}

/// A limit's message names the limit, its value and what changes it: the flag by hand, the
/// portal's setting for a portal's job (`--events`).
#[test]
fn limits_are_named_with_the_flag_or_setting_that_raises_them() {
    let cache = tempfile::tempdir().unwrap();
    let err = run_fake(
        &misbehave(),
        &["-p", "mode=grow", "--wasm-memory-mib", "64"],
        cache.path(),
    )
    .unwrap_err();
    assert!(
        err.contains("limit of 64 MiB") && err.contains("--wasm-memory-mib"),
        "{err}"
    );
    let err = run_fake(
        &misbehave(),
        &[
            "-p",
            "mode=gpu-hog",
            "-p",
            "bytes=2Mi",
            "--gpu-memory-mib",
            "1",
        ],
        cache.path(),
    )
    .unwrap_err();
    assert!(
        err.contains("GPU memory limit of 1048576 bytes (1 MiB)")
            && err.contains("--gpu-memory-mib"),
        "{err}"
    );
    let output = agent()
        .arg("run")
        .arg(misbehave())
        .args([
            "--events",
            "--backend",
            "fake",
            "-p",
            "mode=grow",
            "--wasm-memory-mib",
            "64",
        ])
        .arg("--cache-dir")
        .arg(cache.path())
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&output.stdout);
    assert!(events.contains("jobs.wasm_memory_mib"), "{events}");
}

/// The compiled copy of the plugin whose bytes hash to `sha256` in `cache`, or in the job user's
/// own cache (where a job started as root keeps it), and its inode.
fn compiled_entry(cache: &Path, sha256: &str) -> Option<(PathBuf, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut dirs = vec![cache.to_path_buf()];
    if let Ok(users) = std::fs::read_dir("/var/cache/passage-agent") {
        dirs.extend(users.filter_map(Result::ok).map(|e| e.path()));
    }
    dirs.iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flat_map(|listing| listing.filter_map(Result::ok))
        .find(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&format!("{sha256}-")) && name.ends_with(".cwasm")
        })
        .map(|e| (e.path(), e.metadata().unwrap().ino()))
}

#[test]
fn a_confined_job_keeps_its_compiled_plugin_and_the_next_job_maps_it() {
    use sha2::Digest;
    let cache = tempfile::tempdir().unwrap();
    let plugin = plugin_dir().join("launch-rate.wasm");
    let sha256 = hex::encode(sha2::Sha256::digest(std::fs::read(&plugin).unwrap()));
    if let Some((path, _)) = compiled_entry(cache.path(), &sha256) {
        std::fs::remove_file(path).unwrap();
    }
    let params = ["-p", "launches=1", "-p", "repetitions=1"];
    run_fake(&plugin, &params, cache.path()).unwrap();
    let first = compiled_entry(cache.path(), &sha256).expect("the compiled plugin is kept");
    let dir = first.0.parent().unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir).unwrap().permissions());
    assert_eq!(
        mode & 0o077,
        0,
        "{} is open to others: {mode:o}",
        dir.display()
    );
    let result = run_fake(&plugin, &params, cache.path()).unwrap();
    assert_eq!(result["plugin"], "launch-rate");
    assert_eq!(
        compiled_entry(cache.path(), &sha256),
        Some(first),
        "the second job used the kept code and wrote no new copy"
    );
}
