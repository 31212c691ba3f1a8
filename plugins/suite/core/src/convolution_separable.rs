//! `convolution-separable`: a separable 2D convolution, rows then columns (cuda-samples
//! `convolutionSeparable`): a 3072 x 3072 image, kernel radius 8, 16 iterations per sample.
//! Reports MPixels/s and the time per iteration; checks the image against the CPU (L2 norm 1e-6).

use crate::params::timing;
use crate::{
    Arg, Benchmark, Gpu, Launch, ParamDecl, Params, Res, Rng, Timer, Verification, bytes_f32,
    f32_bytes, report_summary, report_verification, summarize,
};

/// CUDA C of the kernels; `KERNEL_RADIUS` is defined in front of it.
pub const SOURCE: &str = include_str!("../../kernels/convolution_separable.cu");

/// The benchmark.
#[derive(Debug)]
pub struct ConvolutionSeparable;

/// The sample's `convolutionRowCPU` (`rows`) or `convolutionColumnCPU`, zero outside the image.
fn convolve_cpu(
    src: &[f32],
    taps: &[f32],
    w: usize,
    h: usize,
    radius: usize,
    rows: bool,
) -> Vec<f32> {
    let mut dst = vec![0.0f32; w * h];
    let r = radius as isize;
    for y in 0..h {
        for x in 0..w {
            let mut sum = 0.0f32;
            for k in -r..=r {
                let (sx, sy) = if rows {
                    (x as isize + k, y as isize)
                } else {
                    (x as isize, y as isize + k)
                };
                if sx >= 0 && sx < w as isize && sy >= 0 && sy < h as isize {
                    sum += src[sy as usize * w + sx as usize] * taps[(r - k) as usize];
                }
            }
            dst[y * w + x] = sum;
        }
    }
    dst
}

impl Benchmark for ConvolutionSeparable {
    const NAME: &'static str = "convolution-separable";
    const SUMMARY: &'static str = "Separable 2D convolution, a row pass then a column pass with tiles in shared \
         memory (CUDA sample convolutionSeparable): a 3072x3072 image, kernel radius 8, 16 \
         iterations per sample. Reports MPixels/s; checks the image against the CPU (L2 norm \
         below 1e-6).";

    fn params() -> Vec<ParamDecl> {
        let mut p = vec![
            ParamDecl::integer(
                "width",
                "Image width (a multiple of 128)",
                3072,
                128,
                16_384,
                "pixels",
            ),
            ParamDecl::integer(
                "height",
                "Image height (a multiple of 64)",
                3072,
                64,
                16_384,
                "pixels",
            ),
            ParamDecl::integer(
                "radius",
                "Kernel radius (taps = 2 x radius + 1)",
                8,
                1,
                8,
                "pixels",
            ),
            ParamDecl::integer(
                "iterations",
                "Row and column passes between the two events of one sample",
                16,
                1,
                10_000,
                "iterations",
            ),
        ];
        p.extend(timing(1, 5));
        p
    }

    fn run<G: Gpu>(gpu: &G, params: &Params) -> Res<()> {
        let (w, h) = (params.count("width")?, params.count("height")?);
        let radius = params.count("radius")?;
        let iterations = params.count("iterations")?;
        let warmup = params.integer("warmup")?;
        let repetitions = params.count("repetitions")?;
        if w % 128 != 0 || h % 64 != 0 {
            return Err(format!(
                "the image must be a multiple of 128 wide and 64 high, got {w} x {h}"
            ));
        }
        gpu.log(&format!(
            "[convolutionSeparable] Image Width x Height = {w} x {h}, radius {radius}, on {}",
            gpu.device().name
        ));
        let mut rng = Rng::new(200);
        let taps: Vec<f32> = (0..2 * radius + 1).map(|_| rng.below(16) as f32).collect();
        let input: Vec<f32> = (0..w * h).map(|_| rng.below(16) as f32).collect();
        let bytes = (w * h * 4) as u64;
        let d_input = gpu.alloc(bytes)?;
        let d_buffer = gpu.alloc(bytes)?;
        let d_output = gpu.alloc(bytes)?;
        let d_taps = gpu.alloc((taps.len() * 4) as u64)?;
        gpu.write(&d_input, 0, &f32_bytes(&input))?;
        gpu.write(&d_taps, 0, &f32_bytes(&taps))?;
        let source = format!("#define KERNEL_RADIUS {radius}\n{SOURCE}");
        let module = gpu.compile("convolution_separable.cu", &source)?;
        let rows = gpu.kernel(&module, "convolution_rows")?;
        let columns = gpu.kernel(&module, "convolution_columns")?;
        let stream = gpu.stream()?;
        let timer = Timer::new(gpu)?;
        let rows_config = Launch {
            grid: ((w / (8 * 16)) as u32, (h / 4) as u32, 1),
            block: (16, 4, 1),
            shared_mem_bytes: 0,
        };
        let columns_config = Launch {
            grid: ((w / 16) as u32, (h / (8 * 8)) as u32, 1),
            block: (16, 8, 1),
            shared_mem_bytes: 0,
        };
        let (wi, hi) = (w as i32, h as i32);
        let rows_args = [
            Arg::Buffer(&d_buffer),
            Arg::Buffer(&d_input),
            Arg::Buffer(&d_taps),
            Arg::I32(wi),
            Arg::I32(hi),
            Arg::I32(wi),
        ];
        let columns_args = [
            Arg::Buffer(&d_output),
            Arg::Buffer(&d_buffer),
            Arg::Buffer(&d_taps),
            Arg::I32(wi),
            Arg::I32(hi),
            Arg::I32(wi),
        ];
        let pass = || -> Res<()> {
            gpu.launch(&rows, rows_config, &rows_args, &stream)?;
            gpu.launch(&columns, columns_config, &columns_args, &stream)
        };
        for _ in 0..warmup {
            pass()?;
        }
        gpu.synchronize(&stream)?;
        let mut times = Vec::with_capacity(repetitions);
        for _ in 0..repetitions {
            let total = timer.time(gpu, &stream, || {
                for _ in 0..iterations {
                    pass()?;
                }
                Ok(())
            })?;
            times.push(total / iterations as f64);
        }
        let time = summarize(&times);
        report_summary(
            gpu,
            "throughput",
            "MPixels/s",
            time.rate(|ms| 1e-6 * (w * h) as f64 / (ms * 1e-3)),
        );
        report_summary(gpu, "time", "msec", time);
        gpu.metric("size", (w * h) as f64, "pixels");

        let verdict = Verification::of(gpu, || {
            let got = bytes_f32(&gpu.read(&d_output, 0, bytes)?);
            let buffer = convolve_cpu(&input, &taps, w, h, radius, true);
            let expected = convolve_cpu(&buffer, &taps, w, h, radius, false);
            let (mut delta, mut sum) = (0.0f64, 0.0f64);
            for (g, e) in got.iter().zip(&expected) {
                let d = f64::from(*g) - f64::from(*e);
                delta += d * d;
                sum += f64::from(*e) * f64::from(*e);
            }
            let l2 = (delta / sum).sqrt();
            gpu.log(&format!("Relative L2 norm: {l2:e}"));
            Ok(l2 < 1e-6)
        })?;
        report_verification(gpu, verdict)
    }
}
