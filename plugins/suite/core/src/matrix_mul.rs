//! `matrix-mul`: tiled shared-memory SGEMM (cuda-samples `matrixMul`): C = A x B, A of wA x hA,
//! B of wB x hB (hB = wA; parameters `wa`, `ha`, `wb`, `hb`), tiles of 16 x 16 or 32 x 32; the sample's defaults (A 320 x 320,
//! B 640 x 320, block 32, 300 multiplications per timing). With larger sizes it is also the
//! study's "sizeable" matrix multiply. Reports GFlop/s, msec, ops and threads per block, and checks
//! C against the CPU with the sample's relative tolerance (1e-6).

use crate::params::timing;
use crate::{
    Arg, Benchmark, Gpu, Launch, ParamDecl, Params, Res, Timer, Verification, bytes_f32, f32_bytes,
    report_summary, report_verification, summarize,
};

/// CUDA C of the kernels (`matrix_mul_16`, `matrix_mul_32`).
pub const SOURCE: &str = include_str!("../../kernels/matrix_mul.cu");

/// The benchmark.
#[derive(Debug)]
pub struct MatrixMul;

impl Benchmark for MatrixMul {
    const NAME: &'static str = "matrix-mul";
    const SUMMARY: &'static str = "Tiled shared-memory matrix multiply (CUDA sample matrixMul): C = A x B with the \
         sample's default sizes (A 320x320, B 640x320) or any wA/hA/wB/hB; with large sizes this \
         is also the study's sizeable matrixMul (matrix-mul-sizeable). Reports GFlop/s, msec per \
         multiply, ops and threads per block; checks C against the CPU (relative error 1e-6).";

    fn params() -> Vec<ParamDecl> {
        let mut p = vec![
            ParamDecl::integer(
                "wa",
                "wA: width of A (= height of B)",
                320,
                16,
                16_384,
                "floats",
            ),
            ParamDecl::integer(
                "ha",
                "hA: height of A (= height of C)",
                320,
                16,
                16_384,
                "floats",
            ),
            ParamDecl::integer(
                "wb",
                "wB: width of B (= width of C)",
                640,
                16,
                16_384,
                "floats",
            ),
            ParamDecl::integer(
                "hb",
                "hB: height of B (must equal wA)",
                320,
                16,
                16_384,
                "floats",
            ),
            ParamDecl::integer("block", "Tile size: 16 or 32", 32, 16, 32, "threads"),
            ParamDecl::integer(
                "iterations",
                "Multiplications between the two events of one sample",
                300,
                1,
                10_000,
                "launches",
            ),
        ];
        p.extend(timing(1, 5));
        p
    }

    fn run<G: Gpu>(gpu: &G, params: &Params) -> Res<()> {
        let (w_a, h_a) = (params.count("wa")?, params.count("ha")?);
        let (w_b, h_b) = (params.count("wb")?, params.count("hb")?);
        let block = params.count("block")?;
        let iterations = params.count("iterations")?;
        let warmup = params.integer("warmup")?;
        let repetitions = params.count("repetitions")?;
        if block != 16 && block != 32 {
            return Err(format!("block must be 16 or 32, got {block}"));
        }
        if w_a != h_b {
            return Err(format!(
                "the inner dimensions differ: wa = {w_a}, hb = {h_b}"
            ));
        }
        if [w_a, h_a, w_b].iter().any(|d| d % block != 0) {
            return Err(format!(
                "wa, ha and wb must be multiples of the block size {block}"
            ));
        }
        gpu.log(&format!(
            "[Matrix Multiply Using CUDA] MatrixA({w_a},{h_a}), MatrixB({w_b},{h_b}) on {}",
            gpu.device().name
        ));
        let val_b = 0.01f32;
        let a = vec![1.0f32; w_a * h_a];
        let b = vec![val_b; w_b * h_b];
        let c_len = (w_b * h_a * 4) as u64;
        let d_a = gpu.alloc((a.len() * 4) as u64)?;
        let d_b = gpu.alloc((b.len() * 4) as u64)?;
        let d_c = gpu.alloc(c_len)?;
        gpu.write(&d_a, 0, &f32_bytes(&a))?;
        gpu.write(&d_b, 0, &f32_bytes(&b))?;
        let module = gpu.compile("matrix_mul.cu", SOURCE)?;
        let kernel = gpu.kernel(&module, &format!("matrix_mul_{block}"))?;
        let stream = gpu.stream()?;
        let timer = Timer::new(gpu)?;
        let b32 = block as u32;
        let config = Launch {
            grid: ((w_b / block) as u32, (h_a / block) as u32, 1),
            block: (b32, b32, 1),
            shared_mem_bytes: 0,
        };
        let args = [
            Arg::Buffer(&d_c),
            Arg::Buffer(&d_a),
            Arg::Buffer(&d_b),
            Arg::I32(w_a as i32),
            Arg::I32(w_b as i32),
        ];
        let launch = || gpu.launch(&kernel, config, &args, &stream);
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
        let flops = 2.0 * w_a as f64 * h_a as f64 * w_b as f64;
        report_summary(
            gpu,
            "performance",
            "GFlop/s",
            time.rate(|ms| flops * 1e-9 / (ms / 1000.0)),
        );
        report_summary(gpu, "time", "msec", time);
        gpu.metric("size", flops, "Ops");
        gpu.metric("workgroup size", (block * block) as f64, "threads/block");

        let verdict = Verification::of(gpu, || {
            let c = bytes_f32(&gpu.read(&d_c, 0, c_len)?);
            let reference = w_a as f64 * f64::from(val_b);
            let wrong = c
                .iter()
                .filter(|&&v| {
                    let abs_err = (f64::from(v) - reference).abs();
                    let rel_err = abs_err / f64::from(v).abs() / w_a as f64;
                    rel_err.is_nan() || rel_err > 1e-6
                })
                .count();
            if wrong > 0 {
                gpu.log(&format!("{wrong} elements of C exceed the error term 1e-6"));
            }
            Ok(wrong == 0)
        })?;
        report_verification(gpu, verdict)
    }
}
