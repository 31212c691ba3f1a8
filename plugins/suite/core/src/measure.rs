//! Timing, statistics, verification and the bytes of numbers: what every benchmark shares.

use crate::{Arg, Gpu, Launch, Res};

/// How long the gate kernel holds the stream before each timed sample, in microseconds.
const GATE_US: u64 = 200;

/// Times work on a stream with a pair of events.
///
/// Before each sample a gate kernel holds the stream for 200 µs, so that the start event, the
/// work and the end event are all queued before the device reaches them: the events then time
/// the device's work, not how fast the host submits it. Work longer than the gate is unaffected.
pub struct Timer<G: Gpu> {
    start: G::Event,
    end: G::Event,
    gate: G::Kernel,
    gate_cycles: i64,
    _module: G::Module,
}

impl<G: Gpu> Timer<G> {
    /// Compiles the gate and creates the events.
    pub fn new(gpu: &G) -> Res<Timer<G>> {
        let module = gpu.compile("gate.cu", crate::GATE_CU)?;
        let gate = gpu.kernel(&module, "passage_gate")?;
        let gate_cycles = (u64::from(gpu.device().clock_khz) * GATE_US / 1000) as i64;
        Ok(Timer {
            start: gpu.event()?,
            end: gpu.event()?,
            gate,
            gate_cycles,
            _module: module,
        })
    }

    /// Milliseconds of device time that `work` queues on `stream`.
    pub fn time(&self, gpu: &G, stream: &G::Stream, work: impl FnOnce() -> Res<()>) -> Res<f64> {
        self.hold(gpu, stream)?;
        gpu.record(&self.start, stream)?;
        work()?;
        gpu.record(&self.end, stream)?;
        gpu.wait(&self.end)?;
        gpu.elapsed_ms(&self.start, &self.end)
    }

    /// Queues the gate on `stream`.
    pub fn hold(&self, gpu: &G, stream: &G::Stream) -> Res<()> {
        gpu.launch(
            &self.gate,
            Launch::linear(1, 1),
            &[Arg::I64(self.gate_cycles)],
            stream,
        )
    }
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

impl Summary {
    /// The summary of `f(sample)` for a decreasing `f` (a rate from a time): the median maps to
    /// the median, the minimum to the maximum.
    pub fn rate(&self, f: impl Fn(f64) -> f64) -> Summary {
        Summary {
            median: f(self.median),
            min: f(self.max),
            max: f(self.min),
        }
    }
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

/// Reports `<name>` (the median), `<name> min` and `<name> max`.
pub fn report_summary<G: Gpu>(gpu: &G, name: &str, unit: &str, summary: Summary) {
    gpu.metric(name, summary.median, unit);
    gpu.metric(&format!("{name} min"), summary.min, unit);
    gpu.metric(&format!("{name} max"), summary.max, unit);
}

/// The outcome of checking GPU output against a CPU reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The output matched within the sample's tolerance.
    Passed,
    /// It did not.
    Failed,
    /// Not checked: the device is simulated and computes nothing.
    Skipped,
}

impl Verification {
    /// `Skipped` on a simulated device, else the verdict of `check` (true: passed).
    pub fn of<G: Gpu>(gpu: &G, check: impl FnOnce() -> Res<bool>) -> Res<Verification> {
        if gpu.device().simulated {
            return Ok(Verification::Skipped);
        }
        Ok(if check()? {
            Verification::Passed
        } else {
            Verification::Failed
        })
    }
}

/// Reports the verdict as the metric `verification` (1 PASS, 0 FAIL, -1 skipped) and a log line
/// in the samples' words; a failure is also the run's error.
pub fn report_verification<G: Gpu>(gpu: &G, verdict: Verification) -> Res<()> {
    let (value, word) = match verdict {
        Verification::Passed => (1.0, "PASS"),
        Verification::Failed => (0.0, "FAIL"),
        Verification::Skipped => (-1.0, "SKIPPED (simulated device)"),
    };
    gpu.metric("verification", value, "1=pass 0=fail -1=skipped");
    gpu.log(&format!("Result = {word}"));
    if verdict == Verification::Failed {
        return Err("the GPU result does not match the CPU reference".into());
    }
    Ok(())
}

/// A small deterministic generator (xorshift64*), standing in for the samples' `rand()`.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded with `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[low, high)`, as the samples' `RandFloat`.
    pub fn range(&mut self, low: f32, high: f32) -> f32 {
        let t = self.unit();
        (1.0 - t) * low + t * high
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % u64::from(n)) as u32
    }
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

/// `i32`s as little-endian bytes.
pub fn i32_bytes(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian bytes as `i32`s.
pub fn bytes_i32(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(summarize(&[3.0, 1.0, 2.0]).median, 2.0);
        assert_eq!(summarize(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        let s = summarize(&[4.0, 1.0, 2.0]);
        assert_eq!((s.min, s.max), (1.0, 4.0));
    }

    #[test]
    fn a_rate_swaps_the_extremes() {
        let s = summarize(&[1.0, 2.0, 4.0]).rate(|t| 8.0 / t);
        assert_eq!((s.median, s.min, s.max), (4.0, 2.0, 8.0));
    }

    #[test]
    fn random_ranges_stay_inside() {
        let mut rng = Rng::new(5347);
        for _ in 0..10_000 {
            let v = rng.range(5.0, 30.0);
            assert!((5.0..30.0).contains(&v));
            assert!(rng.below(16) < 16);
        }
    }
}
