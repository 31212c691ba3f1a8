//! `p2p-bandwidth`: copies between every pair of the machine's GPUs, with peer access off (the
//! driver stages copies through host memory) and on (directly over NVLink or PCIe), as NVIDIA's
//! p2pBandwidthLatencyTest does: unidirectional and bidirectional bandwidth and the latency of a
//! small copy, each as a matrix. A cell `[i→j]` is a copy from device `i` to device `j`; the
//! diagonal is a copy within one device.
//!
//! It imports the `peers` interface, so a job of it gets every GPU of the machine.

use std::time::Instant;

use passage_plugin_sdk::{
    Buffer, Guest, Param, Params, PluginInfo, Stream, Value, Verification, context, export, param,
    peers, report, report_verification,
};

/// Bytes read back from each end of a copy to check it.
const CHECK_BYTES: u64 = 4096;
/// The small copy whose time is the latency, as in the sample (one `int`).
const LATENCY_BYTES: u64 = 4;

struct P2pBandwidth;

/// Each device's two buffers: the source of its copies, and the destination of copies to it.
struct DeviceBuffers {
    source: Buffer,
    target: Buffer,
    stream: Stream,
}

/// How a matrix cell is measured.
#[derive(Clone, Copy)]
enum Figure {
    Unidirectional,
    Bidirectional,
    Latency,
}

impl Figure {
    fn name(self, p2p: bool, from: usize, to: usize) -> String {
        let what = match self {
            Figure::Unidirectional => "unidirectional bandwidth",
            Figure::Bidirectional => "bidirectional bandwidth",
            Figure::Latency => "latency",
        };
        format!(
            "{what}, P2P {} [{from}→{to}]",
            if p2p { "on" } else { "off" }
        )
    }

    fn unit(self) -> &'static str {
        match self {
            Figure::Latency => "us",
            _ => "GB/s",
        }
    }
}

struct Run {
    bytes: u64,
    repetitions: usize,
    latency_repetitions: usize,
    devices: Vec<DeviceBuffers>,
}

impl Run {
    /// Milliseconds of `count` copies from `from` to `to` of `len` bytes, between events on the
    /// source's stream, after one copy to warm up.
    fn timed_copies(&self, from: usize, to: usize, len: u64, count: usize) -> Result<f64, String> {
        let src = &self.devices[from];
        let dst = &self.devices[to];
        let copy = || {
            peers::copy_peer(&dst.target, 0, &src.source, 0, len, &src.stream)
                .map_err(context("copy between devices"))
        };
        copy()?;
        let start = peers::create_event(from as u32).map_err(context("create an event"))?;
        let end = peers::create_event(from as u32).map_err(context("create an event"))?;
        start
            .record(&src.stream)
            .map_err(context("record an event"))?;
        for _ in 0..count {
            copy()?;
        }
        end.record(&src.stream)
            .map_err(context("record an event"))?;
        end.synchronize().map_err(context("wait for the copies"))?;
        Ok(f64::from(
            end.elapsed_ms(&start).map_err(context("read an event"))?,
        ))
    }

    /// Seconds for copies both ways at once: `from` to `to` on `from`'s stream and back on
    /// `to`'s. Events of two devices cannot be compared, so the host's clock times both.
    fn timed_both_ways(&self, from: usize, to: usize) -> Result<f64, String> {
        let (a, b) = (&self.devices[from], &self.devices[to]);
        // Copies within one device go both ways on two streams of it.
        let back_stream;
        let back = if from == to {
            back_stream = peers::create_stream(to as u32).map_err(context("create a stream"))?;
            &back_stream
        } else {
            &b.stream
        };
        let started = Instant::now();
        for _ in 0..self.repetitions {
            peers::copy_peer(&b.target, 0, &a.source, 0, self.bytes, &a.stream)
                .map_err(context("copy between devices"))?;
            peers::copy_peer(&a.target, 0, &b.source, 0, self.bytes, back)
                .map_err(context("copy between devices"))?;
        }
        a.stream
            .synchronize()
            .map_err(context("wait for the copies"))?;
        back.synchronize().map_err(context("wait for the copies"))?;
        Ok(started.elapsed().as_secs_f64())
    }

    fn measure(&self, figure: Figure, from: usize, to: usize) -> Result<f64, String> {
        let gb = |bytes: f64, seconds: f64| bytes / seconds / 1e9;
        Ok(match figure {
            Figure::Unidirectional => {
                let ms = self.timed_copies(from, to, self.bytes, self.repetitions)?;
                gb((self.bytes * self.repetitions as u64) as f64, ms / 1e3)
            }
            Figure::Bidirectional => {
                let seconds = self.timed_both_ways(from, to)?;
                gb((2 * self.bytes * self.repetitions as u64) as f64, seconds)
            }
            Figure::Latency => {
                let ms = self.timed_copies(from, to, LATENCY_BYTES, self.latency_repetitions)?;
                ms * 1e3 / self.latency_repetitions as f64
            }
        })
    }

    /// Copies once from `from` to `to` and reads both ends of the copy back.
    fn copy_arrives(&self, from: usize, to: usize) -> Result<bool, String> {
        let (src, dst) = (&self.devices[from], &self.devices[to]);
        dst.target.fill(0, &dst.stream).map_err(context("clear"))?;
        dst.stream.synchronize().map_err(context("clear"))?;
        peers::copy_peer(&dst.target, 0, &src.source, 0, self.bytes, &src.stream)
            .map_err(context("copy between devices"))?;
        src.stream
            .synchronize()
            .map_err(context("wait for the copy"))?;
        let check = CHECK_BYTES.min(self.bytes);
        let head = dst.target.read(0, check).map_err(context("read back"))?;
        let tail = dst
            .target
            .read(self.bytes - check, check)
            .map_err(context("read back"))?;
        let expected = pattern(from);
        Ok(head.iter().chain(&tail).all(|b| *b == expected))
    }
}

/// The byte device `i`'s source buffer holds.
fn pattern(device: usize) -> u8 {
    0xA0 | (device as u8 & 0x0F)
}

/// Turns direct access on or off for every pair of different devices that can have it.
fn set_access(enabled: bool, access: &[(usize, usize)]) -> Result<(), String> {
    for &(from, to) in access.iter().filter(|(from, to)| from != to) {
        peers::set_peer_access(from as u32, to as u32, enabled)
            .map_err(context("set peer access"))?;
    }
    Ok(())
}

impl Guest for P2pBandwidth {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "p2p-bandwidth".into(),
            version: "0.1.0".into(),
            summary: "Bandwidth and latency between every pair of the machine's GPUs, with peer \
                      access off and on, unidirectional and bidirectional, as matrices (NVIDIA's \
                      p2pBandwidthLatencyTest). Runs on every GPU of the machine at once."
                .into(),
            params: vec![
                param(
                    "bytes",
                    "Size of each bandwidth copy (the sample copies 40,000,000 ints)",
                    Value::Integer(160_000_000),
                    Some(4096.0),
                    Some(4e9),
                    "bytes",
                ),
                param(
                    "repetitions",
                    "Copies per bandwidth figure",
                    Value::Integer(5),
                    Some(1.0),
                    Some(1000.0),
                    "",
                ),
                param(
                    "latency-repetitions",
                    "Small copies per latency figure",
                    Value::Integer(100),
                    Some(1.0),
                    Some(100_000.0),
                    "",
                ),
                param(
                    "p2p",
                    "Which modes to measure: off, on, or both",
                    Value::Text("both".into()),
                    None,
                    None,
                    "",
                ),
            ],
        }
    }

    fn run(params: Vec<Param>) -> Result<(), String> {
        let params = Params::new(params);
        let modes: &[bool] = match params.text("p2p")?.as_str() {
            "both" => &[false, true],
            "off" => &[false],
            "on" => &[true],
            other => return Err(format!("p2p: {other:?} is not off, on or both")),
        };
        let infos = peers::devices();
        let count = infos.len();
        if count < 2 {
            return Err(format!(
                "p2p-bandwidth needs at least two GPUs; this run has {count}"
            ));
        }
        let simulated = infos.iter().any(|d| d.simulated);
        for (i, d) in infos.iter().enumerate() {
            report::log(
                report::Level::Info,
                &format!("Device: {i}, {}, pciBusID: {}", d.name, d.pci_bus_id),
            );
        }
        let bytes = params.integer("bytes")? as u64;
        let mut devices = Vec::with_capacity(count);
        for i in 0..count {
            let device = i as u32;
            let source = peers::alloc(device, bytes).map_err(context("allocate"))?;
            let target = peers::alloc(device, bytes).map_err(context("allocate"))?;
            let stream = peers::create_stream(device).map_err(context("create a stream"))?;
            source.fill(pattern(i), &stream).map_err(context("fill"))?;
            stream.synchronize().map_err(context("fill"))?;
            devices.push(DeviceBuffers {
                source,
                target,
                stream,
            });
        }
        let run = Run {
            bytes,
            repetitions: params.count("repetitions")?,
            latency_repetitions: params.count("latency-repetitions")?,
            devices,
        };

        // The pairs that can copy directly (a device always can within itself).
        let mut access = Vec::new();
        for from in 0..count {
            for to in 0..count {
                let can = from == to
                    || peers::can_access_peer(from as u32, to as u32)
                        .map_err(context("ask for peer access"))?;
                if can {
                    access.push((from, to));
                }
                report::metric(
                    &format!("peer access [{from}→{to}]"),
                    f64::from(u8::from(can)),
                    "1=yes 0=no",
                );
            }
        }

        let figures = [
            Figure::Unidirectional,
            Figure::Bidirectional,
            Figure::Latency,
        ];
        let steps = (modes.len() * figures.len() * count * count) as f32;
        let mut done = 0.0f32;
        let mut verified = true;
        for &p2p in modes {
            set_access(p2p, &access)?;
            for figure in figures {
                for from in 0..count {
                    for to in 0..count {
                        done += 1.0;
                        // With peer access on, only pairs that have it are measured.
                        if p2p && !access.contains(&(from, to)) {
                            continue;
                        }
                        let value = run.measure(figure, from, to)?;
                        report::metric(&figure.name(p2p, from, to), value, figure.unit());
                        report::progress(done / steps, &figure.name(p2p, from, to));
                    }
                }
            }
            for from in 0..count {
                for to in 0..count {
                    if !p2p || access.contains(&(from, to)) {
                        verified &= run.copy_arrives(from, to)?;
                    }
                }
            }
        }
        set_access(false, &access)?;
        report_verification(match (simulated, verified) {
            (true, _) => Verification::Skipped,
            (false, true) => Verification::Passed,
            (false, false) => Verification::Failed,
        });
        Ok(())
    }
}

export!(P2pBandwidth);
