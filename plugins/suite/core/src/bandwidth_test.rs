//! `bandwidth-test`: copy bandwidth host to device, device to host and device to device
//! (cuda-samples `bandwidthTest`): page-locked (default) or pageable host memory; quick mode (one
//! 32,000,000-byte transfer size), range mode (start, end, increment) and shmoo mode (1 kB to
//! 68 MB in the sample's steps); 100 copies between two events per sample; GB/s in decimal units,
//! device to device counting each byte read and written, as the sample does.

use crate::params::timing;
use crate::{
    Benchmark, Gpu, ParamDecl, Params, Res, Summary, Timer, Verification, report_summary,
    report_verification, summarize,
};

/// The benchmark.
#[derive(Debug)]
pub struct BandwidthTest;

/// A copy direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    HostToDevice,
    DeviceToHost,
    DeviceToDevice,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::HostToDevice => "H2D",
            Direction::DeviceToHost => "D2H",
            Direction::DeviceToDevice => "D2D",
        }
    }
}

/// The sample's shmoo sizes: 1 kB steps to 20 kB, 2 kB to 50 kB, 10 kB to 100 kB, 100 kB to
/// 1 MB, 1 MB to 16 MB, 2 MB to 32 MB, then 4 MB steps while the size is at most 64 MB (so the
/// last is 68 MB, as in the sample's loop): 81 sizes.
pub fn shmoo_sizes() -> Vec<u64> {
    let mut sizes = Vec::new();
    let mut size = 0u64;
    while size <= 64_000_000 {
        size += match size {
            s if s < 20_000 => 1_000,
            s if s < 50_000 => 2_000,
            s if s < 100_000 => 10_000,
            s if s < 1_000_000 => 100_000,
            s if s < 16_000_000 => 1_000_000,
            s if s < 32_000_000 => 2_000_000,
            _ => 4_000_000,
        };
        sizes.push(size);
    }
    sizes
}

/// The transfer sizes of a mode.
fn sizes(mode: &str, start: u64, end: u64, increment: u64) -> Res<Vec<u64>> {
    match mode {
        "quick" => Ok(vec![32_000_000]),
        "range" => {
            if start > end {
                return Err(format!("start {start} is past end {end}"));
            }
            Ok((start..=end).step_by(increment as usize).collect())
        }
        "shmoo" => Ok(shmoo_sizes()),
        other => Err(format!("mode must be quick, range or shmoo, got {other:?}")),
    }
}

impl Benchmark for BandwidthTest {
    const NAME: &'static str = "bandwidth-test";
    const SUMMARY: &'static str = "Copy bandwidth host to device, device to host and device to device (CUDA sample \
         bandwidthTest): pinned or pageable host memory, quick mode (32,000,000 bytes), range \
         mode or shmoo mode; 100 copies between two events per sample; GB/s in decimal units, \
         device to device counting read and write. Checks the copied bytes.";

    fn params() -> Vec<ParamDecl> {
        let mut p = vec![
            ParamDecl::text("mode", "quick, range or shmoo", "quick"),
            ParamDecl::text(
                "memory",
                "Host memory: pinned (page-locked) or pageable",
                "pinned",
            ),
            ParamDecl::text(
                "directions",
                "Comma-separated: htod, dtoh, dtod, or all",
                "all",
            ),
            ParamDecl::integer(
                "start",
                "Range mode: first size",
                4_000_000,
                1,
                1 << 30,
                "bytes",
            ),
            ParamDecl::integer(
                "end",
                "Range mode: last size",
                32_000_000,
                1,
                1 << 30,
                "bytes",
            ),
            ParamDecl::integer(
                "increment",
                "Range mode: step between sizes",
                4_000_000,
                1,
                1 << 30,
                "bytes",
            ),
            ParamDecl::integer(
                "copies",
                "Copies between the two events of one sample",
                100,
                1,
                100_000,
                "copies",
            ),
        ];
        p.extend(timing(1, 5));
        p
    }

    fn run<G: Gpu>(gpu: &G, params: &Params) -> Res<()> {
        let mode = params.text("mode")?;
        let pinned = match params.text("memory")?.as_str() {
            "pinned" => true,
            "pageable" => false,
            other => return Err(format!("memory must be pinned or pageable, got {other:?}")),
        };
        let directions = match params.text("directions")?.as_str() {
            "all" => vec![
                Direction::HostToDevice,
                Direction::DeviceToHost,
                Direction::DeviceToDevice,
            ],
            list => list
                .split(',')
                .map(|d| match d.trim() {
                    "htod" => Ok(Direction::HostToDevice),
                    "dtoh" => Ok(Direction::DeviceToHost),
                    "dtod" => Ok(Direction::DeviceToDevice),
                    other => Err(format!("unknown direction {other:?}")),
                })
                .collect::<Res<Vec<_>>>()?,
        };
        let sizes = sizes(
            &mode,
            params.count("start")? as u64,
            params.count("end")? as u64,
            params.count("increment")? as u64,
        )?;
        let copies = params.count("copies")?;
        let warmup = params.integer("warmup")?;
        let repetitions = params.count("repetitions")?;
        let largest = *sizes.iter().max().ok_or("no transfer size")?;
        gpu.log(&format!(
            "[CUDA Bandwidth Test] {} mode, {} memory, {} sizes up to {largest} bytes, on {}",
            mode,
            if pinned { "PINNED" } else { "PAGEABLE" },
            sizes.len(),
            gpu.device().name
        ));

        let pattern: Vec<u8> = (0..largest)
            .map(|i| ((i & 0xff) as u8).wrapping_add(1))
            .collect();
        let h_in = gpu.host_alloc(largest, pinned)?;
        let h_out = gpu.host_alloc(largest, pinned)?;
        gpu.host_write(&h_in, 0, &pattern)?;
        let d_a = gpu.alloc(largest)?;
        let d_b = gpu.alloc(largest)?;
        let stream = gpu.stream()?;
        gpu.upload(&d_a, &h_in, largest, &stream)?;
        gpu.synchronize(&stream)?;
        let timer = Timer::new(gpu)?;

        let mut failed = Vec::new();
        for &direction in &directions {
            for &size in &sizes {
                let copy = || match direction {
                    Direction::HostToDevice => gpu.upload(&d_b, &h_in, size, &stream),
                    Direction::DeviceToHost => gpu.download(&h_out, &d_a, size, &stream),
                    Direction::DeviceToDevice => gpu.copy(&d_b, &d_a, size, &stream),
                };
                for _ in 0..warmup {
                    copy()?;
                }
                gpu.synchronize(&stream)?;
                let mut times = Vec::with_capacity(repetitions);
                for _ in 0..repetitions {
                    times.push(timer.time(gpu, &stream, || {
                        for _ in 0..copies {
                            copy()?;
                        }
                        Ok(())
                    })?);
                }
                let factor = if direction == Direction::DeviceToDevice {
                    2.0
                } else {
                    1.0
                };
                let bytes = factor * size as f64 * copies as f64;
                let bandwidth: Summary = summarize(&times).rate(|ms| bytes / 1e9 / (ms / 1e3));
                let name = if sizes.len() == 1 {
                    format!("{} bandwidth", direction.label())
                } else {
                    format!("{} bandwidth {size} B", direction.label())
                };
                report_summary(gpu, &name, "GB/s", bandwidth);
            }
            // What the last copies of this direction left, checked against what was sent.
            if !gpu.device().simulated {
                let size = *sizes.last().ok_or("no transfer size")?;
                let got = match direction {
                    Direction::HostToDevice | Direction::DeviceToDevice => {
                        gpu.read(&d_b, 0, size)?
                    }
                    Direction::DeviceToHost => gpu.host_read(&h_out, 0, size)?,
                };
                if got[..] != pattern[..size as usize] {
                    gpu.log(&format!(
                        "{}: the copied bytes differ from the source",
                        direction.label()
                    ));
                    failed.push(direction);
                }
            }
            // Host-to-device and device-to-device copies both land in d_b: clear it.
            if direction != Direction::DeviceToHost {
                gpu.fill(&d_b, 0, &stream)?;
                gpu.synchronize(&stream)?;
            }
        }
        gpu.metric("transfer size", largest as f64, "bytes");
        gpu.metric("copies per sample", copies as f64, "copies");
        gpu.metric(
            "pinned memory",
            if pinned { 1.0 } else { 0.0 },
            "1=pinned 0=pageable",
        );

        let verdict = Verification::of(gpu, || Ok(failed.is_empty()))?;
        report_verification(gpu, verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shmoo_follows_the_sample() {
        let s = shmoo_sizes();
        assert_eq!(s[0], 1_000);
        assert_eq!(s[1], 2_000);
        assert_eq!(*s.last().unwrap(), 68_000_000);
        assert!(
            s.contains(&20_000)
                && s.contains(&22_000)
                && s.contains(&900_000)
                && s.contains(&2_000_000)
        );
        assert_eq!(s.len(), 81);
    }

    #[test]
    fn range_includes_both_ends() {
        assert_eq!(
            sizes("range", 4, 12, 4).unwrap(),
            vec![4, 8, 12],
            "start, end and increment"
        );
        assert!(sizes("sideways", 1, 2, 1).is_err());
    }
}
