//! `aligned-types`: a grid-stride copy of arrays of small structs, misaligned and aligned
//! (cuda-samples `alignedTypes`): the sample's twelve types, 49,999,872 bytes (50,000,000 rounded
//! down to 256 on a GPU of at least 192 cores), 64 blocks of 256 threads, 32 copies per sample.
//! Reports time per copy and copy throughput per type, in the sample's GB/s of 2^30 bytes; checks
//! each copied element byte for byte.

use crate::params::timing;
use crate::{
    Arg, Benchmark, Gpu, Launch, ParamDecl, Params, Res, Timer, Verification, report_summary,
    report_verification, summarize,
};

/// CUDA C of the kernels (`copy_<type>`).
pub const SOURCE: &str = include_str!("../../kernels/aligned_types.cu");

/// The sample's types: name, size in bytes (with padding) and packed size (the bytes checked).
pub const TYPES: [(&str, usize, usize); 12] = [
    ("uint8", 1, 1),
    ("uint16", 2, 2),
    ("RGBA8_misaligned", 4, 4),
    ("LA32_misaligned", 8, 8),
    ("RGB32_misaligned", 12, 12),
    ("RGBA32_misaligned", 16, 16),
    ("RGBA8", 4, 4),
    ("I32", 4, 4),
    ("LA32", 8, 8),
    ("RGB32", 16, 12),
    ("RGBA32", 16, 16),
    ("RGBA32_2", 32, 32),
];

/// The benchmark.
#[derive(Debug)]
pub struct AlignedTypes;

impl Benchmark for AlignedTypes {
    const NAME: &'static str = "aligned-types";
    const SUMMARY: &'static str = "Copies arrays of small structs with and without __align__ (CUDA sample \
         alignedTypes): twelve types from uint8 to RGBA32_2, 49,999,872 bytes, 64 x 256 threads, \
         32 copies per sample. Reports time and copy throughput per type (GB/s of 2^30 bytes, as \
         the sample); checks every element.";

    fn params() -> Vec<ParamDecl> {
        let mut p = vec![
            ParamDecl::integer(
                "bytes",
                "Array size (rounded down to a multiple of 256)",
                49_999_872,
                256,
                1 << 31,
                "bytes",
            ),
            ParamDecl::integer(
                "iterations",
                "Copies between the two events of one sample",
                32,
                1,
                10_000,
                "launches",
            ),
        ];
        p.extend(timing(1, 5));
        p
    }

    fn run<G: Gpu>(gpu: &G, params: &Params) -> Res<()> {
        let memory_size = params.count("bytes")? & !0xff;
        let iterations = params.count("iterations")?;
        let warmup = params.integer("warmup")?;
        let repetitions = params.count("repetitions")?;
        gpu.log(&format!(
            "[alignedTypes] Memory Size = {memory_size}, on {}",
            gpu.device().name
        ));
        let input: Vec<u8> = (0..memory_size)
            .map(|i| ((i & 0xff) as u8).wrapping_add(1))
            .collect();
        let size = memory_size as u64;
        let d_idata = gpu.alloc(size)?;
        let d_odata = gpu.alloc(size)?;
        gpu.write(&d_idata, 0, &input)?;
        let module = gpu.compile("aligned_types.cu", SOURCE)?;
        let stream = gpu.stream()?;
        let timer = Timer::new(gpu)?;
        let mut failures = Vec::new();
        for (name, type_size, packed) in TYPES {
            let kernel = gpu.kernel(&module, &format!("copy_{name}"))?;
            let elements = memory_size / type_size;
            let aligned_bytes = elements * type_size;
            let args = [
                Arg::Buffer(&d_odata),
                Arg::Buffer(&d_idata),
                Arg::I32(elements as i32),
            ];
            let launch = || gpu.launch(&kernel, Launch::linear(64, 256), &args, &stream);
            gpu.fill(&d_odata, 0, &stream)?;
            for _ in 0..warmup {
                launch()?;
            }
            gpu.synchronize(&stream)?;
            let mut times = Vec::with_capacity(repetitions);
            for _ in 0..repetitions {
                let total = timer.time(gpu, &stream, || {
                    for _ in 0..iterations {
                        launch()?;
                    }
                    Ok(())
                })?;
                times.push(total / iterations as f64);
            }
            let time = summarize(&times);
            report_summary(gpu, &format!("{name} time"), "ms", time);
            report_summary(
                gpu,
                &format!("{name} copy throughput"),
                "GB/s (2^30 B)",
                time.rate(|ms| aligned_bytes as f64 / (ms * 0.001 * 1_073_741_824.0)),
            );
            if !gpu.device().simulated {
                let out = gpu.read(&d_odata, 0, aligned_bytes as u64)?;
                let ok = (0..elements).all(|e| {
                    let at = e * type_size;
                    out[at..at + packed] == input[at..at + packed]
                });
                if !ok {
                    gpu.log(&format!("{name}: TEST FAILURE"));
                    failures.push(name);
                }
            }
        }
        gpu.metric("memory size", memory_size as f64, "bytes");
        let verdict = Verification::of(gpu, || Ok(failures.is_empty()))?;
        report_verification(gpu, verdict)
    }
}
