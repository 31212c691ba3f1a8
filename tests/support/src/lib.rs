//! Tests that need something a machine may not have (a real libvirtd, PostgreSQL, the IOMMU lab
//! host, a booted guest, NVIDIA's driver) say that they are skipped where a person sees it, and
//! fail instead where the thing is expected: in CI (`CI=true`, where `.ci/run` starts every
//! service and exports its `PASSAGE_TEST_*` variable) or where a variable says it is required.
//!
//! The test harness captures what `println!` and `eprintln!` write and shows it only for failing
//! tests, so a skip written that way reads as a silent `ok`. These functions write to the
//! process's standard error directly, which the harness does not capture.

use std::io::Write;

/// True in CI, where every service the tests need is started and expected.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The running test's name (the harness names each test's thread after it).
fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string()
}

/// Writes `skipped: <test>: <reason>` to the terminal, past the harness's capture.
pub fn skip(reason: &str) {
    let line = format!("skipped: {}: {reason}\n", test_name());
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(line.as_bytes());
    let _ = stderr.flush();
}

/// The value of `variable`, which points a test at a service (`starts_it` says how to get one).
/// Without it the test is skipped with a visible reason, or, in CI, fails.
pub fn service(variable: &str, starts_it: &str) -> Option<String> {
    services(&[variable], starts_it).map(|mut values| values.remove(0))
}

/// The values of `variables`, all of which a test needs; see [`service`].
pub fn services(variables: &[&str], starts_them: &str) -> Option<Vec<String>> {
    let missing: Vec<&str> = variables
        .iter()
        .copied()
        .filter(|v| std::env::var(v).map_or(true, |value| value.is_empty()))
        .collect();
    if missing.is_empty() {
        return Some(
            variables
                .iter()
                .map(|v| std::env::var(v).expect("checked above"))
                .collect(),
        );
    }
    let reason = format!("{} not set ({starts_them})", missing.join(" and "));
    if in_ci() {
        panic!("CI=true, where .ci/run provides it, but {reason}");
    }
    skip(&reason);
    None
}

/// For a test that needs a device this machine may lack (NVIDIA's driver): skipped with `why`,
/// unless `required_by` is set (the GPU machine's script sets it), where the test fails.
pub fn device_missing(required_by: &str, why: &str) {
    if std::env::var(required_by).is_ok_and(|v| !v.is_empty() && v != "0") {
        panic!("{required_by} is set, so the device is expected, but {why}");
    }
    skip(why);
}
