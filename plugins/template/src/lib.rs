//! A Passage plugin to start from: multiplies a vector by a factor on the GPU, times the kernel
//! with CUDA events, and checks the result on the CPU.

use passage_plugin_sdk::{
    Buffer, Guest, Module, Param, Params, PluginInfo, Stream, Value, Verification, bytes_f32,
    context, export, f32_bytes, gpu, launch_1d, param, report, report_summary, report_verification,
    summarize, time_ms,
};

/// The kernel, in CUDA C. `extern "C"` keeps its name findable.
const KERNEL: &str = r#"
extern "C" __global__ void scale(float *x, float factor, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        x[i] = x[i] * factor;
    }
}
"#;

struct Scale;

impl Guest for Scale {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "scale".into(),
            version: "0.1.0".into(),
            summary: "Multiplies a vector by a factor on the GPU.".into(),
            params: vec![
                param(
                    "elements",
                    "Vector length",
                    Value::Integer(1 << 20),
                    Some(1.0),
                    // 16 Mi floats: the input and its bytes (128 MiB) fit the plugin's default
                    // memory of 256 MiB; larger vectors are written in pieces (see the suite's
                    // vector-add).
                    Some(16_777_216.0),
                    "floats",
                ),
                param("factor", "Multiplier", Value::Float(2.0), None, None, ""),
            ],
        }
    }

    fn run(params: Vec<Param>) -> Result<(), String> {
        let params = Params::new(params);
        let n = params.count("elements")?;
        let factor = params.float("factor")? as f32;

        let input: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let x = Buffer::alloc((n * 4) as u64).map_err(context("allocate"))?;
        x.write(0, &f32_bytes(&input)).map_err(context("upload"))?;

        let module = Module::compile("scale.cu", KERNEL).map_err(context("compile"))?;
        let kernel = module.kernel("scale").map_err(context("find the kernel"))?;
        let stream = Stream::create().map_err(context("create a stream"))?;
        let args = [
            gpu::KernelArg::Buffer(&x),
            gpu::KernelArg::F32(factor),
            gpu::KernelArg::S32(n as i32),
        ];
        let ms = time_ms(&stream, || {
            kernel
                .launch(launch_1d(n, 256), &args, &stream)
                .map_err(context("launch"))
        })?;
        report_summary("kernel time", "ms", summarize(&[ms]));

        let verdict = if gpu::device().simulated {
            Verification::Skipped
        } else {
            let output = bytes_f32(&x.read(0, (n * 4) as u64).map_err(context("download"))?);
            let ok = output
                .iter()
                .zip(&input)
                .all(|(out, inp)| (out - inp * factor).abs() <= 1e-5 * inp.abs().max(1.0));
            if ok {
                Verification::Passed
            } else {
                Verification::Failed
            }
        };
        report_verification(verdict);
        report::log(
            report::Level::Info,
            &format!("scaled {n} floats by {factor}"),
        );
        Ok(())
    }
}

export!(Scale);
