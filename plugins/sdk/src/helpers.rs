//! Helpers every benchmark needs: typed parameters, bytes from and to numbers, event timing,
//! statistics and the verification verdict.

use crate::bindings::passage::plugin::gpu::{Event, LaunchConfig, Stream};
use crate::bindings::passage::plugin::report;
use crate::bindings::passage::plugin::types::{GpuError, Value, ValueKind};
use crate::bindings::{Param, ParamSpec};

/// A parameter declaration, for `describe`.
pub fn param(
    name: &str,
    summary: &str,
    default: Value,
    min: Option<f64>,
    max: Option<f64>,
    unit: &str,
) -> ParamSpec {
    let kind = match default {
        Value::Integer(_) => ValueKind::Integer,
        Value::Float(_) => ValueKind::Float,
        Value::Boolean(_) => ValueKind::Boolean,
        Value::Text(_) => ValueKind::Text,
    };
    ParamSpec {
        name: name.into(),
        summary: summary.into(),
        kind,
        default,
        min,
        max,
        unit: unit.into(),
    }
}

/// The parameters of a run, by name. The host has filled in defaults and checked ranges.
#[derive(Debug, Clone)]
pub struct Params(Vec<Param>);

impl Params {
    /// Wraps what `run` received.
    pub fn new(params: Vec<Param>) -> Params {
        Params(params)
    }

    fn get(&self, name: &str) -> Result<&Value, String> {
        self.0
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.value)
            .ok_or_else(|| format!("parameter {name} is missing"))
    }

    /// An integer parameter.
    pub fn integer(&self, name: &str) -> Result<i64, String> {
        match self.get(name)? {
            Value::Integer(v) => Ok(*v),
            other => Err(format!("parameter {name} is {other:?}, not an integer")),
        }
    }

    /// An integer parameter that must be positive, as a size or count.
    pub fn count(&self, name: &str) -> Result<usize, String> {
        let v = self.integer(name)?;
        usize::try_from(v)
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| format!("parameter {name} must be positive, got {v}"))
    }

    /// A float parameter.
    pub fn float(&self, name: &str) -> Result<f64, String> {
        match self.get(name)? {
            Value::Float(v) => Ok(*v),
            Value::Integer(v) => Ok(*v as f64),
            other => Err(format!("parameter {name} is {other:?}, not a number")),
        }
    }

    /// A boolean parameter.
    pub fn boolean(&self, name: &str) -> Result<bool, String> {
        match self.get(name)? {
            Value::Boolean(v) => Ok(*v),
            other => Err(format!("parameter {name} is {other:?}, not a boolean")),
        }
    }

    /// A text parameter.
    pub fn text(&self, name: &str) -> Result<String, String> {
        match self.get(name)? {
            Value::Text(v) => Ok(v.clone()),
            other => Err(format!("parameter {name} is {other:?}, not text")),
        }
    }
}

/// Turns a GPU error into the message `run` returns, saying what was being done.
pub fn context(what: &str) -> impl FnOnce(GpuError) -> String + '_ {
    move |e| format!("{what}: {e:?}")
}

/// `f32`s as little-endian bytes, as the device stores them.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian bytes as `f32`s.
pub fn bytes_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A one-dimensional launch over `n` items with `block` threads per block.
pub fn launch_1d(n: usize, block: u32) -> LaunchConfig {
    let blocks = n.div_ceil(block as usize).max(1) as u32;
    LaunchConfig {
        grid_x: blocks,
        grid_y: 1,
        grid_z: 1,
        block_x: block,
        block_y: 1,
        block_z: 1,
        shared_mem_bytes: 0,
    }
}

/// Times `work` on `stream` with a pair of events, in milliseconds of device time.
pub fn time_ms(stream: &Stream, work: impl FnOnce() -> Result<(), String>) -> Result<f64, String> {
    let start = Event::create().map_err(context("create an event"))?;
    let end = Event::create().map_err(context("create an event"))?;
    start.record(stream).map_err(context("record an event"))?;
    work()?;
    end.record(stream).map_err(context("record an event"))?;
    end.synchronize().map_err(context("wait for the device"))?;
    Ok(f64::from(
        end.elapsed_ms(&start).map_err(context("read an event"))?,
    ))
}

/// Median, minimum and maximum of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The median.
    pub median: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
}

/// Summarises samples (none: all zero).
pub fn summarize(samples: &[f64]) -> Summary {
    if samples.is_empty() {
        return Summary {
            median: 0.0,
            min: 0.0,
            max: 0.0,
        };
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    };
    Summary {
        median,
        min: sorted[0],
        max: sorted[sorted.len() - 1],
    }
}

/// Reports a timing as three metrics: `<name>` (median), `<name> min` and `<name> max`.
pub fn report_summary(name: &str, unit: &str, summary: Summary) {
    report::metric(name, summary.median, unit);
    report::metric(&format!("{name} min"), summary.min, unit);
    report::metric(&format!("{name} max"), summary.max, unit);
}

/// The outcome of checking GPU output against a CPU reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The output matched.
    Passed,
    /// The output did not match.
    Failed,
    /// Not checked: the device is simulated and computes nothing.
    Skipped,
}

/// Reports the verdict as the metric `verification` (1 PASS, 0 FAIL, -1 SKIPPED) and a log line
/// in the CUDA samples' words.
pub fn report_verification(verdict: Verification) {
    let (value, word) = match verdict {
        Verification::Passed => (1.0, "PASS"),
        Verification::Failed => (0.0, "FAIL"),
        Verification::Skipped => (-1.0, "SKIPPED (simulated device)"),
    };
    report::metric("verification", value, "1=pass 0=fail -1=skipped");
    report::log(report::Level::Info, &format!("Result = {word}"));
}
