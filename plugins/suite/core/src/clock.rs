//! `clock`: timing inside a kernel with the clock counter (cuda-samples `clock`): 64 blocks of
//! 256 threads each reduce 512 floats to their minimum in shared memory and record `clock()`
//! at start and end. Reports the average clocks per block (median over repetitions), and checks
//! each block's minimum.

use crate::params::timing;
use crate::{
    Arg, Benchmark, Gpu, Launch, ParamDecl, Params, Res, Verification, bytes_f32, f32_bytes,
    report_summary, report_verification, summarize,
};

/// CUDA C of the kernel.
pub const SOURCE: &str = include_str!("../../kernels/clock.cu");

/// The benchmark.
#[derive(Debug)]
pub struct Clock;

impl Benchmark for Clock {
    const NAME: &'static str = "clock";
    const SUMMARY: &'static str = "Timing inside a kernel with the clock counter (CUDA sample clock): 64 blocks of 256 \
         threads reduce 512 floats in shared memory and read clock() at start and end. Reports \
         the average clocks per block; checks each block's result.";

    fn params() -> Vec<ParamDecl> {
        let mut p = vec![
            ParamDecl::integer("blocks", "Blocks (NUM_BLOCKS)", 64, 1, 65_535, "blocks"),
            ParamDecl::integer(
                "threads",
                "Threads per block (NUM_THREADS, a power of two)",
                256,
                32,
                1024,
                "threads",
            ),
        ];
        p.extend(timing(1, 20));
        p
    }

    fn run<G: Gpu>(gpu: &G, params: &Params) -> Res<()> {
        let blocks = params.count("blocks")?;
        let threads = params.count("threads")?;
        let warmup = params.integer("warmup")?;
        let repetitions = params.count("repetitions")?;
        if !threads.is_power_of_two() {
            return Err(format!("threads must be a power of two, got {threads}"));
        }
        gpu.log(&format!("[CUDA Clock sample] on {}", gpu.device().name));
        let input: Vec<f32> = (0..threads * 2).map(|i| i as f32).collect();
        let d_input = gpu.alloc((input.len() * 4) as u64)?;
        let d_output = gpu.alloc((blocks * 4) as u64)?;
        let d_timer = gpu.alloc((blocks * 2 * 8) as u64)?;
        gpu.write(&d_input, 0, &f32_bytes(&input))?;
        let module = gpu.compile("clock.cu", SOURCE)?;
        let kernel = gpu.kernel(&module, "timed_reduction")?;
        let stream = gpu.stream()?;
        let config =
            Launch::linear(blocks as u32, threads as u32).with_shared((4 * 2 * threads) as u32);
        let args = [
            Arg::Buffer(&d_input),
            Arg::Buffer(&d_output),
            Arg::Buffer(&d_timer),
        ];
        let mut averages = Vec::with_capacity(repetitions);
        for round in 0..warmup + repetitions as i64 {
            gpu.fill(&d_timer, 0, &stream)?;
            gpu.launch(&kernel, config, &args, &stream)?;
            gpu.synchronize(&stream)?;
            let timer: Vec<i64> = gpu
                .read(&d_timer, 0, (blocks * 2 * 8) as u64)?
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect();
            let total: f64 = (0..blocks)
                .map(|i| (timer[i + blocks] - timer[i]) as f64)
                .sum();
            if round >= warmup {
                averages.push(total / blocks as f64);
            }
        }
        report_summary(gpu, "average clocks/block", "clocks", summarize(&averages));

        let verdict = Verification::of(gpu, || {
            let out = bytes_f32(&gpu.read(&d_output, 0, (blocks * 4) as u64)?);
            Ok(out.iter().all(|&v| v == 0.0))
        })?;
        report_verification(gpu, verdict)
    }
}
