//! `black-scholes`: European option pricing (cuda-samples `BlackScholes`): 4,000,000 options of
//! calls and puts (reported as 8,000,000 options, as the sample), 128 threads per block, 512
//! launches per sample. Reports msec per launch, effective bandwidth (5 floats per option pair)
//! and Gigaoptions/s; checks the calls against a double-precision CPU reference (L1 norm 1e-6).

use crate::params::timing;
use crate::{
    Arg, Benchmark, Gpu, Launch, ParamDecl, Params, Res, Rng, Timer, Verification, bytes_f32,
    f32_bytes, report_summary, report_verification, summarize,
};

/// CUDA C of the kernel.
pub const SOURCE: &str = include_str!("../../kernels/black_scholes.cu");

const RISKFREE: f32 = 0.02;
const VOLATILITY: f32 = 0.30;

/// The benchmark.
#[derive(Debug)]
pub struct BlackScholes;

/// The cumulative normal distribution, polynomial approximation (the sample's `CND`).
fn cnd(d: f64) -> f64 {
    const A1: f64 = 0.31938153;
    const A2: f64 = -0.356563782;
    const A3: f64 = 1.781477937;
    const A4: f64 = -1.821255978;
    const A5: f64 = 1.330274429;
    const RSQRT2PI: f64 = 0.398_942_280_401_432_7;
    let k = 1.0 / (1.0 + 0.2316419 * d.abs());
    let c = RSQRT2PI * (-0.5 * d * d).exp() * (k * (A1 + k * (A2 + k * (A3 + k * (A4 + k * A5)))));
    if d > 0.0 { 1.0 - c } else { c }
}

/// One option's call price, in double precision (the sample's `BlackScholesBodyCPU`).
fn call_price(s: f64, x: f64, t: f64, r: f64, v: f64) -> f64 {
    let sqrt_t = t.sqrt();
    let d1 = ((s / x).ln() + (r + 0.5 * v * v) * t) / (v * sqrt_t);
    let d2 = d1 - v * sqrt_t;
    let exp_rt = (-r * t).exp();
    s * cnd(d1) - x * exp_rt * cnd(d2)
}

impl Benchmark for BlackScholes {
    const NAME: &'static str = "black-scholes";
    const SUMMARY: &'static str = "European option pricing (CUDA sample BlackScholes): 4,000,000 call/put pairs, 128 \
         threads per block, 512 launches per sample. Reports msec per launch, effective memory \
         bandwidth GB/s, Gigaoptions/s and the options count; checks the calls against the CPU \
         (L1 norm below 1e-6).";

    fn params() -> Vec<ParamDecl> {
        let mut p = vec![
            ParamDecl::integer(
                "options",
                "Option pairs (OPT_N; an even number)",
                4_000_000,
                2,
                64_000_000,
                "options",
            ),
            ParamDecl::integer(
                "iterations",
                "Launches between the two events of one sample",
                512,
                1,
                100_000,
                "launches",
            ),
        ];
        p.extend(timing(1, 5));
        p
    }

    fn run<G: Gpu>(gpu: &G, params: &Params) -> Res<()> {
        let opt_n = params.count("options")?;
        let iterations = params.count("iterations")?;
        let warmup = params.integer("warmup")?;
        let repetitions = params.count("repetitions")?;
        if opt_n % 2 != 0 {
            return Err(format!("options must be even, got {opt_n}"));
        }
        gpu.log(&format!(
            "[BlackScholes] {opt_n} options, {iterations} iterations, on {}",
            gpu.device().name
        ));
        let mut rng = Rng::new(5347);
        let mut stock = Vec::with_capacity(opt_n);
        let mut strike = Vec::with_capacity(opt_n);
        let mut years = Vec::with_capacity(opt_n);
        for _ in 0..opt_n {
            stock.push(rng.range(5.0, 30.0));
            strike.push(rng.range(1.0, 100.0));
            years.push(rng.range(0.25, 10.0));
        }
        let bytes = (opt_n * 4) as u64;
        let d_call = gpu.alloc(bytes)?;
        let d_put = gpu.alloc(bytes)?;
        let d_stock = gpu.alloc(bytes)?;
        let d_strike = gpu.alloc(bytes)?;
        let d_years = gpu.alloc(bytes)?;
        gpu.write(&d_stock, 0, &f32_bytes(&stock))?;
        gpu.write(&d_strike, 0, &f32_bytes(&strike))?;
        gpu.write(&d_years, 0, &f32_bytes(&years))?;
        let module = gpu.compile("black_scholes.cu", SOURCE)?;
        let kernel = gpu.kernel(&module, "black_scholes")?;
        let stream = gpu.stream()?;
        let timer = Timer::new(gpu)?;
        let config = Launch::linear((opt_n / 2).div_ceil(128) as u32, 128);
        let args = [
            Arg::Buffer(&d_call),
            Arg::Buffer(&d_put),
            Arg::Buffer(&d_stock),
            Arg::Buffer(&d_strike),
            Arg::Buffer(&d_years),
            Arg::F32(RISKFREE),
            Arg::F32(VOLATILITY),
            Arg::I32(opt_n as i32),
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
        report_summary(gpu, "BlackScholesGPU() time", "msec", time);
        report_summary(
            gpu,
            "effective memory bandwidth",
            "GB/s",
            time.rate(|ms| (5 * opt_n * 4) as f64 * 1e-9 / (ms * 1e-3)),
        );
        report_summary(
            gpu,
            "gigaoptions per second",
            "Gigaoptions/s",
            time.rate(|ms| (2 * opt_n) as f64 * 1e-9 / (ms * 1e-3)),
        );
        gpu.metric("options count", (2 * opt_n) as f64, "options");

        let verdict = Verification::of(gpu, || {
            let calls = bytes_f32(&gpu.read(&d_call, 0, bytes)?);
            let (mut sum_delta, mut sum_ref, mut max_delta) = (0.0f64, 0.0f64, 0.0f64);
            for i in 0..opt_n {
                let reference = call_price(
                    f64::from(stock[i]),
                    f64::from(strike[i]),
                    f64::from(years[i]),
                    f64::from(RISKFREE),
                    f64::from(VOLATILITY),
                );
                let delta = (reference - f64::from(calls[i])).abs();
                max_delta = max_delta.max(delta);
                sum_delta += delta;
                sum_ref += reference.abs();
            }
            let l1 = sum_delta / sum_ref;
            gpu.log(&format!(
                "L1 norm: {l1:e}; max absolute error: {max_delta:e}"
            ));
            gpu.metric("L1 norm", l1, "");
            Ok(l1 <= 1e-6)
        })?;
        report_verification(gpu, verdict)
    }
}
