//! `async-api`: an upload, a kernel and a download queued asynchronously while the CPU counts
//! (cuda-samples `asyncAPI`): 16 Mi ints, 512 threads per block, pinned host memory. Reports GPU
//! time, the CPU time spent in the CUDA calls that queue the work, and the CPU's iterations
//! while it waits (each iteration one non-blocking event query); checks every element.

use std::time::Instant;

use crate::params::timing;
use crate::{
    Arg, Benchmark, Gpu, Launch, ParamDecl, Params, Res, Verification, report_summary,
    report_verification, summarize,
};

/// CUDA C of the kernel.
pub const SOURCE: &str = include_str!("../../kernels/async_api.cu");

/// The benchmark.
#[derive(Debug)]
pub struct AsyncApi;

impl Benchmark for AsyncApi {
    const NAME: &'static str = "async-api";
    const SUMMARY: &'static str = "Overlap of GPU work with the CPU (CUDA sample asyncAPI): an upload, an increment \
         kernel and a download of 16 Mi ints queued asynchronously from pinned memory while the \
         CPU polls an event. Reports GPU time, CPU time spent in CUDA calls and CPU iterations \
         while waiting; checks every element.";

    fn params() -> Vec<ParamDecl> {
        let mut p = vec![
            ParamDecl::integer(
                "elements",
                "Ints (a multiple of 512)",
                16 * 1024 * 1024,
                512,
                1 << 28,
                "ints",
            ),
            ParamDecl::integer("value", "Increment", 26, -1_000_000, 1_000_000, ""),
        ];
        p.extend(timing(1, 10));
        p
    }

    fn run<G: Gpu>(gpu: &G, params: &Params) -> Res<()> {
        let n = params.count("elements")?;
        let value = params.integer("value")? as i32;
        let warmup = params.integer("warmup")?;
        let repetitions = params.count("repetitions")?;
        if n % 512 != 0 {
            return Err(format!("elements must be a multiple of 512, got {n}"));
        }
        gpu.log(&format!("[asyncAPI] {n} ints on {}", gpu.device().name));
        let nbytes = (n * 4) as u64;
        let zeros = vec![0u8; n * 4];
        let a = gpu.host_alloc(nbytes, true)?;
        let d_a = gpu.alloc(nbytes)?;
        let module = gpu.compile("async_api.cu", SOURCE)?;
        let kernel = gpu.kernel(&module, "increment_kernel")?;
        let stream = gpu.stream()?;
        let (start, stop) = (gpu.event()?, gpu.event()?);
        let config = Launch::linear((n / 512) as u32, 512);
        let args = [Arg::Buffer(&d_a), Arg::I32(value)];

        let mut gpu_times = Vec::with_capacity(repetitions);
        let mut cpu_times = Vec::with_capacity(repetitions);
        let mut counters = Vec::with_capacity(repetitions);
        let mut call_us: [Vec<f64>; 5] = Default::default();
        for round in 0..warmup + repetitions as i64 {
            gpu.host_write(&a, 0, &zeros)?;
            gpu.fill(&d_a, 255, &stream)?;
            gpu.synchronize(&stream)?;
            let cpu_start = Instant::now();
            let mut marks = [cpu_start; 5];
            gpu.record(&start, &stream)?;
            marks[0] = Instant::now();
            gpu.upload(&d_a, &a, nbytes, &stream)?;
            marks[1] = Instant::now();
            gpu.launch(&kernel, config, &args, &stream)?;
            marks[2] = Instant::now();
            gpu.download(&a, &d_a, nbytes, &stream)?;
            marks[3] = Instant::now();
            gpu.record(&stop, &stream)?;
            marks[4] = Instant::now();
            let cpu_ms = (marks[4] - cpu_start).as_secs_f64() * 1e3;
            if round >= warmup {
                let mut last = cpu_start;
                for (call, mark) in call_us.iter_mut().zip(marks) {
                    call.push((mark - last).as_secs_f64() * 1e6);
                    last = mark;
                }
            }
            let mut counter = 0u64;
            while !gpu.query(&stop)? {
                counter += 1;
            }
            let gpu_ms = gpu.elapsed_ms(&start, &stop)?;
            if round >= warmup {
                gpu_times.push(gpu_ms);
                cpu_times.push(cpu_ms);
                counters.push(counter as f64);
            }
        }
        report_summary(
            gpu,
            "time spent executing by the GPU",
            "ms",
            summarize(&gpu_times),
        );
        report_summary(
            gpu,
            "time spent by CPU in CUDA calls",
            "ms",
            summarize(&cpu_times),
        );
        let calls = ["record", "upload", "launch", "download", "record"]
            .iter()
            .zip(&call_us)
            .map(|(name, us)| format!("{name} {:.1}", summarize(us).median))
            .collect::<Vec<_>>();
        gpu.log(&format!(
            "CPU time per call, median, in microseconds: {}",
            calls.join(", ")
        ));
        report_summary(
            gpu,
            "CPU iterations while waiting for GPU",
            "iterations",
            summarize(&counters),
        );

        let verdict = Verification::of(gpu, || {
            let out = gpu.host_read(&a, 0, nbytes)?;
            let wrong = out
                .chunks_exact(4)
                .filter(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) != value)
                .count();
            if wrong > 0 {
                gpu.log(&format!("{wrong} of {n} elements differ from {value}"));
            }
            Ok(wrong == 0)
        })?;
        report_verification(gpu, verdict)
    }
}
