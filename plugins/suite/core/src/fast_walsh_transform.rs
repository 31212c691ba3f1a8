//! `fast-walsh-transform`: dyadic convolution through the Fast Walsh-Hadamard Transform
//! (cuda-samples `fastWalshTransform`): 2^23 data, a kernel of 2^7; three transforms and a
//! modulation per sample. Reports ms and GOP/s (3 x N x log2 N / 2 operations, as the sample);
//! checks against a direct CPU dyadic convolution (L2 norm 1e-6).

use crate::params::timing;
use crate::{
    Arg, Benchmark, Gpu, Launch, ParamDecl, Params, Res, Rng, Timer, Verification, bytes_f32,
    f32_bytes, report_summary, report_verification, summarize,
};

/// CUDA C of the kernels.
pub const SOURCE: &str = include_str!("../../kernels/fast_walsh_transform.cu");

/// Blocks up to 2^11 floats are transformed in shared memory.
const ELEMENTARY_LOG2SIZE: u32 = 11;

/// The benchmark.
#[derive(Debug)]
pub struct FastWalshTransform;

impl Benchmark for FastWalshTransform {
    const NAME: &'static str = "fast-walsh-transform";
    const SUMMARY: &'static str = "Dyadic convolution by the Fast Walsh-Hadamard Transform (CUDA sample \
         fastWalshTransform): 2^23 data, a kernel of 2^7, three transforms and a modulation. \
         Reports GPU time in ms and GOP/s; checks against a direct CPU convolution (L2 norm \
         below 1e-6).";

    fn params() -> Vec<ParamDecl> {
        let mut p = vec![
            ParamDecl::integer("log2-data", "log2 of the data length", 23, 12, 26, ""),
            ParamDecl::integer("log2-kernel", "log2 of the kernel length", 7, 1, 12, ""),
        ];
        p.extend(timing(1, 10));
        p
    }

    fn run<G: Gpu>(gpu: &G, params: &Params) -> Res<()> {
        let log2_data = params.count("log2-data")? as u32;
        let log2_kernel = params.count("log2-kernel")? as u32;
        let warmup = params.integer("warmup")?;
        let repetitions = params.count("repetitions")?;
        if log2_kernel > log2_data {
            return Err("the kernel is longer than the data".into());
        }
        let data_n = 1usize << log2_data;
        let kernel_n = 1usize << log2_kernel;
        gpu.log(&format!(
            "[fastWalshTransform] Data length: {data_n}; kernel length: {kernel_n}; on {}",
            gpu.device().name
        ));
        let mut rng = Rng::new(2007);
        let h_kernel: Vec<f32> = (0..kernel_n).map(|_| rng.unit()).collect();
        let h_data: Vec<f32> = (0..data_n).map(|_| rng.unit()).collect();
        let bytes = (data_n * 4) as u64;
        // Pristine copies; each sample transforms fresh copies in place.
        let d_data_in = gpu.alloc(bytes)?;
        let d_kernel_in = gpu.alloc(bytes)?;
        let d_data = gpu.alloc(bytes)?;
        let d_kernel = gpu.alloc(bytes)?;
        let mut padded = h_kernel.clone();
        padded.resize(data_n, 0.0);
        gpu.write(&d_kernel_in, 0, &f32_bytes(&padded))?;
        gpu.write(&d_data_in, 0, &f32_bytes(&h_data))?;
        let module = gpu.compile("fast_walsh_transform.cu", SOURCE)?;
        let batch1 = gpu.kernel(&module, "fwt_batch1")?;
        let batch2 = gpu.kernel(&module, "fwt_batch2")?;
        let modulate = gpu.kernel(&module, "modulate")?;
        let stream = gpu.stream()?;
        let timer = Timer::new(gpu)?;

        // The sample's fwtBatchGPU for one array of 2^log2N.
        let fwt = |data: &G::Buffer| -> Res<()> {
            const THREAD_N: u32 = 256;
            let mut log2n = log2_data;
            let mut n = 1u32 << log2n;
            let mut m = 1u32;
            // As in the sample, every radix-4 pass covers the whole array with one grid row.
            let blocks = (1u32 << log2_data) / (4 * THREAD_N);
            while log2n > ELEMENTARY_LOG2SIZE {
                gpu.launch(
                    &batch2,
                    Launch::linear(blocks, THREAD_N),
                    &[
                        Arg::Buffer(data),
                        Arg::Buffer(data),
                        Arg::I32((n / 4) as i32),
                    ],
                    &stream,
                )?;
                log2n -= 2;
                n >>= 2;
                m <<= 2;
            }
            gpu.launch(
                &batch1,
                Launch::linear(m, n / 4).with_shared(n * 4),
                &[Arg::Buffer(data), Arg::Buffer(data), Arg::I32(log2n as i32)],
                &stream,
            )
        };
        let convolve = || -> Res<()> {
            fwt(&d_data)?;
            fwt(&d_kernel)?;
            gpu.launch(
                &modulate,
                Launch::linear(128, 256),
                &[
                    Arg::Buffer(&d_data),
                    Arg::Buffer(&d_kernel),
                    Arg::I32(data_n as i32),
                ],
                &stream,
            )?;
            fwt(&d_data)
        };
        let fresh = || -> Res<()> {
            gpu.copy(&d_data, &d_data_in, bytes, &stream)?;
            gpu.copy(&d_kernel, &d_kernel_in, bytes, &stream)
        };
        for _ in 0..warmup {
            fresh()?;
            convolve()?;
        }
        gpu.synchronize(&stream)?;
        let mut times = Vec::with_capacity(repetitions);
        for _ in 0..repetitions {
            fresh()?;
            times.push(timer.time(gpu, &stream, convolve)?);
        }
        let time = summarize(&times);
        let nops = 3.0 * data_n as f64 * f64::from(log2_data) / 2.0;
        report_summary(gpu, "GPU time", "ms", time);
        report_summary(
            gpu,
            "GOP/s",
            "GOP/s",
            time.rate(|ms| nops / (ms * 0.001 * 1e9)),
        );
        gpu.metric("data length", data_n as f64, "floats");
        gpu.metric("kernel length", kernel_n as f64, "floats");

        let verdict = Verification::of(gpu, || {
            let got = bytes_f32(&gpu.read(&d_data, 0, bytes)?);
            let (mut delta2, mut ref2) = (0.0f64, 0.0f64);
            for (i, g) in got.iter().enumerate() {
                let mut sum = 0.0f64;
                for (j, k) in h_kernel.iter().enumerate() {
                    sum += f64::from(h_data[i ^ j]) * f64::from(*k);
                }
                let reference = sum as f32;
                let d = f64::from(reference) - f64::from(*g);
                delta2 += d * d;
                ref2 += f64::from(reference) * f64::from(reference);
            }
            let l2 = (delta2 / ref2).sqrt();
            gpu.log(&format!("L2 norm: {l2:e}"));
            Ok(l2 < 1e-6)
        })?;
        report_verification(gpu, verdict)
    }
}
