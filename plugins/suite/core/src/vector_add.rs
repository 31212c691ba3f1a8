//! `vector-add`: C = A + B (cuda-samples `vectorAdd`: 50,000 floats by default, 256 threads per
//! block, tolerance 1e-5), with the study's sizes (128 to 1024 elements, and large ones) as
//! parameters. Reports kernel time and effective bandwidth (3 x 4 bytes per element).

use crate::params::timing;
use crate::{
    Arg, Benchmark, Gpu, Launch, ParamDecl, Params, Res, Rng, Timer, Verification, bytes_f32,
    f32_bytes, report_summary, report_verification, summarize,
};

/// Elements made, copied and checked at a time.
const CHUNK: usize = 1 << 20;

/// CUDA C of the kernel.
pub const SOURCE: &str = include_str!("../../kernels/vector_add.cu");

/// The benchmark.
#[derive(Debug)]
pub struct VectorAdd;

impl Benchmark for VectorAdd {
    const NAME: &'static str = "vector-add";
    const SUMMARY: &'static str = "Adds two float vectors on the GPU (CUDA sample vectorAdd; the study's VecAdd at \
         128, 256, 512 and 1024 elements and larger). Reports kernel time (CUDA events, median of \
         repetitions) and effective bandwidth (3 x 4 bytes per element), and checks every element \
         against the CPU (tolerance 1e-5, as the sample).";

    fn params() -> Vec<ParamDecl> {
        let mut p = vec![
            ParamDecl::integer(
                "elements",
                "Vector length",
                50_000,
                1,
                268_435_456,
                "floats",
            ),
            ParamDecl::integer("block", "Threads per block", 256, 32, 1024, "threads"),
        ];
        p.extend(timing(3, 100));
        p
    }

    fn run<G: Gpu>(gpu: &G, params: &Params) -> Res<()> {
        let n = params.count("elements")?;
        let block = params.count("block")? as u32;
        let warmup = params.integer("warmup")?;
        let repetitions = params.count("repetitions")?;
        gpu.log(&format!(
            "[Vector addition of {n} elements] on {}",
            gpu.device().name
        ));
        // Inputs uniform in [0, 1) as the sample's, made and checked a chunk at a time so that
        // large vectors fit in a plugin's memory: each chunk is regenerated for the check.
        let inputs = || (Rng::new(0x5eed), Rng::new(0xb0b));
        let bytes = (n * 4) as u64;
        let d_a = gpu.alloc(bytes)?;
        let d_b = gpu.alloc(bytes)?;
        let d_c = gpu.alloc(bytes)?;
        let (mut rng_a, mut rng_b) = inputs();
        for start in (0..n).step_by(CHUNK) {
            let len = CHUNK.min(n - start);
            let a: Vec<f32> = (0..len).map(|_| rng_a.unit()).collect();
            let b: Vec<f32> = (0..len).map(|_| rng_b.unit()).collect();
            gpu.write(&d_a, (start * 4) as u64, &f32_bytes(&a))?;
            gpu.write(&d_b, (start * 4) as u64, &f32_bytes(&b))?;
        }
        let module = gpu.compile("vector_add.cu", SOURCE)?;
        let kernel = gpu.kernel(&module, "vector_add")?;
        let stream = gpu.stream()?;
        let timer = Timer::new(gpu)?;
        let config = Launch::linear(n.div_ceil(block as usize) as u32, block);
        let args = [
            Arg::Buffer(&d_a),
            Arg::Buffer(&d_b),
            Arg::Buffer(&d_c),
            Arg::I32(n as i32),
        ];
        let launch = || gpu.launch(&kernel, config, &args, &stream);
        for _ in 0..warmup {
            launch()?;
        }
        gpu.synchronize(&stream)?;
        let mut times = Vec::with_capacity(repetitions);
        for _ in 0..repetitions {
            times.push(timer.time(gpu, &stream, launch)?);
        }
        let time = summarize(&times);
        report_summary(gpu, "kernel time", "ms", time);
        let moved = 3.0 * bytes as f64;
        report_summary(
            gpu,
            "effective bandwidth",
            "GB/s",
            time.rate(|ms| moved / (ms * 1e-3) / 1e9),
        );
        gpu.metric("elements", n as f64, "floats");
        gpu.metric("threads per block", f64::from(block), "threads");

        let verdict = Verification::of(gpu, || {
            let (mut rng_a, mut rng_b) = inputs();
            let mut wrong = 0;
            for start in (0..n).step_by(CHUNK) {
                let len = CHUNK.min(n - start);
                let c = bytes_f32(&gpu.read(&d_c, (start * 4) as u64, (len * 4) as u64)?);
                wrong += c
                    .iter()
                    .filter(|&&c| {
                        let (a, b) = (rng_a.unit(), rng_b.unit());
                        let error = (a + b - c).abs();
                        error.is_nan() || error > 1e-5
                    })
                    .count();
            }
            if wrong > 0 {
                gpu.log(&format!(
                    "{wrong} of {n} elements differ from the CPU result"
                ));
            }
            Ok(wrong == 0)
        })?;
        report_verification(gpu, verdict)
    }
}
