//! `vector-add`: C = A + B over `elements` floats, as NVIDIA's vectorAdd sample, timed with
//! CUDA events after warm-up and checked against the CPU (tolerance 1e-5, as the sample).

use passage_plugin_sdk::{
    Buffer, Guest, Module, Param, Params, PluginInfo, Stream, Value, Verification, bytes_f32,
    context, export, f32_bytes, gpu, launch_1d, param, report, report_summary, report_verification,
    summarize, time_ms,
};

const KERNEL: &str = r#"
extern "C" __global__ void vector_add(const float *a, const float *b, float *c, int n) {
    int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i < n) {
        c[i] = a[i] + b[i];
    }
}
"#;

struct VectorAdd;

impl Guest for VectorAdd {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "vector-add".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            summary:
                "Adds two float vectors on the GPU (CUDA sample vectorAdd). Reports kernel time \
                      and effective bandwidth (3 x 4 bytes per element), and checks every element."
                    .into(),
            params: vec![
                param(
                    "elements",
                    "Vector length",
                    Value::Integer(50_000),
                    Some(1.0),
                    Some(268_435_456.0),
                    "floats",
                ),
                param(
                    "block",
                    "Threads per block",
                    Value::Integer(256),
                    Some(32.0),
                    Some(1024.0),
                    "threads",
                ),
                param(
                    "warmup",
                    "Untimed launches first",
                    Value::Integer(3),
                    Some(0.0),
                    Some(1000.0),
                    "launches",
                ),
                param(
                    "repetitions",
                    "Timed launches",
                    Value::Integer(20),
                    Some(1.0),
                    Some(100_000.0),
                    "launches",
                ),
            ],
        }
    }

    fn run(params: Vec<Param>) -> Result<(), String> {
        let params = Params::new(params);
        let n = params.count("elements")?;
        let block = params.count("block")? as u32;
        let warmup = params.integer("warmup")?;
        let repetitions = params.count("repetitions")?;
        let device = gpu::device();
        report::log(
            report::Level::Info,
            &format!("[Vector addition of {n} elements] on {}", device.name),
        );

        // Inputs as the sample makes them: uniform in [0, 1).
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32
        };
        let a: Vec<f32> = (0..n).map(|_| next()).collect();
        let b: Vec<f32> = (0..n).map(|_| next()).collect();

        let bytes = (n * 4) as u64;
        let d_a = Buffer::alloc(bytes).map_err(context("allocate A"))?;
        let d_b = Buffer::alloc(bytes).map_err(context("allocate B"))?;
        let d_c = Buffer::alloc(bytes).map_err(context("allocate C"))?;
        d_a.write(0, &f32_bytes(&a))
            .map_err(context("copy A to the device"))?;
        d_b.write(0, &f32_bytes(&b))
            .map_err(context("copy B to the device"))?;

        let module =
            Module::compile("vector_add.cu", KERNEL).map_err(context("compile the kernel"))?;
        let kernel = module
            .kernel("vector_add")
            .map_err(context("find the kernel"))?;
        let stream = Stream::create().map_err(context("create a stream"))?;
        let config = launch_1d(n, block);
        let launch = || {
            kernel
                .launch(
                    config,
                    &[
                        gpu::KernelArg::Buffer(&d_a),
                        gpu::KernelArg::Buffer(&d_b),
                        gpu::KernelArg::Buffer(&d_c),
                        gpu::KernelArg::S32(n as i32),
                    ],
                    &stream,
                )
                .map_err(context("launch the kernel"))
        };
        for _ in 0..warmup {
            launch()?;
        }
        stream
            .synchronize()
            .map_err(context("wait for the warm-up"))?;
        let mut times = Vec::with_capacity(repetitions);
        for i in 0..repetitions {
            times.push(time_ms(&stream, launch)?);
            report::progress((i + 1) as f32 / repetitions as f32, "timed launches");
        }
        let time = summarize(&times);
        report_summary("kernel time", "ms", time);
        let moved = 3.0 * bytes as f64;
        report::metric(
            "effective bandwidth",
            moved / (time.median * 1e-3) / 1e9,
            "GB/s",
        );
        report::metric("elements", n as f64, "floats");
        report::metric("threads per block", f64::from(block), "threads");

        let verdict = if device.simulated {
            Verification::Skipped
        } else {
            let c = bytes_f32(&d_c.read(0, bytes).map_err(context("copy C back"))?);
            let wrong = (0..n)
                .filter(|&i| (a[i] + b[i] - c[i]).abs() > 1e-5)
                .count();
            if wrong > 0 {
                report::log(
                    report::Level::Error,
                    &format!("{wrong} of {n} elements differ from the CPU result"),
                );
                Verification::Failed
            } else {
                Verification::Passed
            }
        };
        report_verification(verdict);
        if verdict == Verification::Failed {
            return Err("the GPU result does not match the CPU reference".into());
        }
        Ok(())
    }
}

export!(VectorAdd);
