//! A plugin that misbehaves on purpose. Each `mode` is one way a plugin can go wrong; the host's
//! tests run every mode and expect a clear error and a clean GPU afterwards.

use passage_plugin_sdk::{
    Buffer, Event, Guest, HostMemory, Module, Param, Params, PluginInfo, Stream, Value, export,
    gpu, launch_1d, param, peers, report,
};

struct Misbehave;

/// A kernel that never ends.
const ENDLESS_KERNEL: &str = r#"
extern "C" __global__ void forever(int *flag) {
    while (*flag == 0) { }
}
"#;

/// Device variables of 64 GiB, declared in the module rather than allocated.
const GLOBAL_HOG: &str = r#"
__device__ unsigned long long hoard[1ull << 33];
extern "C" __global__ void touch(int n) { hoard[n] = n; }
"#;

const GLOBAL_HOG_PTX: &str = ".version 7.0\n.target sm_52\n.address_size 64\n\
.visible .global .align 8 .b8 hoard[68719476736];\n\
.visible .entry touch()\n{\n\tret;\n}\n";

/// Compiles `source` and returns the compiler's answer, whatever it is, as the run's error, so
/// that a test can see whether anything of a host file came back.
fn compile_and_tell(name: &str, source: &str) -> Result<(), String> {
    match Module::compile(name, source) {
        Ok(_) => Err("compiled".into()),
        Err(e) => Err(format!("{e:?}")),
    }
}

const FAULTING_KERNEL: &str = r#"
extern "C" __global__ void write_null(int *unused) {
    int *nowhere = (int *)0;
    *nowhere = 42;
}
"#;

impl Guest for Misbehave {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "misbehave".into(),
            version: "0.1.0".into(),
            summary: "Misbehaves on purpose, for tests.".into(),
            params: vec![
                param(
                    "mode",
                    "trap, spin, grow, big-write, claim-pass, gpu-hog, bad-kernel, undeclared, wrong-args, fault, ignore-fault, leak, escape, ok, peer-out-of-range, peer-wrong-stream, peer-mixed, peer-leak, include-file, include-macro, include-disguised, metric-flood, metric-bytes-flood, long-metric-name, log-flood, huge-log, progress-flood, host-hog, global-hog, global-hog-ptx, hang",
                    Value::Text("ok".into()),
                    None,
                    None,
                    "",
                ),
                param(
                    "bytes",
                    "GPU bytes for gpu-hog",
                    Value::Integer(1 << 30),
                    Some(1.0),
                    None,
                    "bytes",
                ),
            ],
        }
    }

    fn run(params: Vec<Param>) -> Result<(), String> {
        let params = Params::new(params);
        match params.text("mode")?.as_str() {
            "ok" => {
                report::metric("answer", 42.0, "");
                Ok(())
            }
            "trap" => panic!("deliberate panic"),
            "spin" => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 16 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "big-write" => {
                let bytes = params.integer("bytes")? as u64;
                let buffer = Buffer::alloc(bytes).map_err(|e| format!("{e:?}"))?;
                let data = vec![7u8; bytes as usize];
                buffer.write(0, &data).map_err(|e| format!("{e:?}"))?;
                report::metric("written", bytes as f64, "bytes");
                Ok(())
            }
            "claim-pass" => {
                report::metric("verification", 1.0, "1=pass 0=fail -1=skipped");
                Ok(())
            }
            "gpu-hog" => {
                let bytes = params.integer("bytes")? as u64;
                let buffer = Buffer::alloc(bytes).map_err(|e| format!("{e:?}"))?;
                report::metric("allocated", buffer.size() as f64, "bytes");
                Ok(())
            }
            "undeclared" => Module::compile(
                "undeclared.cu",
                "extern \"C\" __global__ void k(float *x) { x[0] = y; }",
            )
            .map(drop)
            .map_err(|e| format!("{e:?}")),
            "bad-kernel" => Module::compile(
                "broken.cu",
                "extern \"C\" __global__ void k(int n) { if (n) { ",
            )
            .map(drop)
            .map_err(|e| format!("{e:?}")),
            "wrong-args" => {
                let module =
                    Module::compile("k.cu", "extern \"C\" __global__ void k(float *x, int n) {}")
                        .map_err(|e| format!("{e:?}"))?;
                let kernel = module.kernel("k").map_err(|e| format!("{e:?}"))?;
                let stream = Stream::create().map_err(|e| format!("{e:?}"))?;
                kernel
                    .launch(launch_1d(32, 32), &[gpu::KernelArg::S32(1)], &stream)
                    .map_err(|e| format!("{e:?}"))
            }
            mode @ ("fault" | "ignore-fault") => {
                let module =
                    Module::compile("fault.cu", FAULTING_KERNEL).map_err(|e| format!("{e:?}"))?;
                let kernel = module.kernel("write_null").map_err(|e| format!("{e:?}"))?;
                let stream = Stream::create().map_err(|e| format!("{e:?}"))?;
                let unused = Buffer::alloc(4).map_err(|e| format!("{e:?}"))?;
                let launched = kernel
                    .launch(
                        launch_1d(1, 32),
                        &[gpu::KernelArg::Buffer(&unused)],
                        &stream,
                    )
                    .and_then(|()| stream.synchronize());
                match (mode, launched) {
                    ("fault", Err(e)) => Err(format!("{e:?}")),
                    ("fault", Ok(())) => Err("the faulting kernel did not fault".into()),
                    // Carries on as if nothing happened: the host must still fail the run.
                    _ => Ok(()),
                }
            }
            "leak" => {
                for _ in 0..8 {
                    std::mem::forget(Buffer::alloc(1 << 20).map_err(|e| format!("{e:?}"))?);
                    std::mem::forget(HostMemory::alloc(4096, true).map_err(|e| format!("{e:?}"))?);
                    std::mem::forget(Stream::create().map_err(|e| format!("{e:?}"))?);
                    std::mem::forget(Event::create().map_err(|e| format!("{e:?}"))?);
                }
                std::mem::forget(
                    Module::compile("k.cu", "extern \"C\" __global__ void k() {}")
                        .map_err(|e| format!("{e:?}"))?,
                );
                Ok(())
            }
            "escape" => {
                let file = std::fs::read("/etc/passwd").map(|b| b.len());
                let dir = std::fs::read_dir("/").map(|d| d.count());
                let socket = std::net::TcpStream::connect("127.0.0.1:22").map(drop);
                let env = std::env::vars().count();
                report::log(report::Level::Info, &format!("file: {file:?}"));
                report::log(report::Level::Info, &format!("dir: {dir:?}"));
                report::log(report::Level::Info, &format!("socket: {socket:?}"));
                report::log(
                    report::Level::Info,
                    &format!("environment variables: {env}"),
                );
                if file.is_ok() || dir.is_ok() || socket.is_ok() || env > 0 {
                    return Err("the sandbox let something through".into());
                }
                Ok(())
            }
            "peer-out-of-range" => {
                let devices = peers::devices().len() as u32;
                peers::alloc(devices + 5, 16)
                    .map(drop)
                    .map_err(|e| format!("{e:?}"))
            }
            "peer-wrong-stream" => {
                let src = peers::alloc(0, 16).map_err(|e| format!("{e:?}"))?;
                let dst = peers::alloc(1, 16).map_err(|e| format!("{e:?}"))?;
                let theirs = peers::create_stream(1).map_err(|e| format!("{e:?}"))?;
                peers::copy_peer(&dst, 0, &src, 0, 16, &theirs).map_err(|e| format!("{e:?}"))
            }
            "peer-mixed" => {
                let mine = Buffer::alloc(16).map_err(|e| format!("{e:?}"))?;
                let theirs = peers::alloc(1, 16).map_err(|e| format!("{e:?}"))?;
                let stream = Stream::create().map_err(|e| format!("{e:?}"))?;
                mine.copy_from(0, &theirs, 0, 16, &stream)
                    .map_err(|e| format!("{e:?}"))
            }
            "peer-leak" => {
                for device in 0..peers::devices().len() as u32 {
                    std::mem::forget(peers::alloc(device, 1 << 20).map_err(|e| format!("{e:?}"))?);
                    std::mem::forget(peers::create_stream(device).map_err(|e| format!("{e:?}"))?);
                    std::mem::forget(peers::create_event(device).map_err(|e| format!("{e:?}"))?);
                }
                Ok(())
            }
            "include-file" => compile_and_tell(
                "steal.cu",
                "#include \"/etc/passwd\"\nextern \"C\" __global__ void k() {}\n",
            ),
            "include-macro" => compile_and_tell(
                "steal.cu",
                "#define P \"/etc/hostname\"\n#include P\nextern \"C\" __global__ void k() {}\n",
            ),
            "include-disguised" => compile_and_tell(
                "steal.cu",
                "/* x */ %: /* y */ inc\\\nlude \"/etc/passwd\"\nextern \"C\" __global__ void k() {}\n",
            ),
            "metric-flood" => {
                for i in 0..5_000_000u32 {
                    report::metric("m", f64::from(i), "");
                }
                Ok(())
            }
            "metric-bytes-flood" => {
                let name = "m".repeat(250);
                for i in 0..5_000_000u32 {
                    report::metric(&name, f64::from(i), "x");
                }
                Ok(())
            }
            "long-metric-name" => {
                report::metric(&"n".repeat(1 << 20), 1.0, "");
                Ok(())
            }
            "log-flood" => {
                for i in 0..20_000_000u32 {
                    report::log(report::Level::Info, &format!("line {i}"));
                }
                Ok(())
            }
            "huge-log" => {
                let line = "x".repeat(100_000);
                for _ in 0..20_000 {
                    report::log(report::Level::Info, &line);
                }
                Ok(())
            }
            "progress-flood" => {
                for i in 0..2_000_000u32 {
                    report::progress(i as f32 / 2e6, "flooding");
                }
                report::metric("calls", 2e6, "");
                Ok(())
            }
            "host-hog" => {
                let mut held = Vec::new();
                loop {
                    match HostMemory::alloc(1 << 30, true) {
                        Ok(memory) => held.push(memory),
                        Err(e) => return Err(format!("{e:?} after {} GiB", held.len())),
                    }
                }
            }
            "global-hog" => Module::compile("hog.cu", GLOBAL_HOG)
                .map(drop)
                .map_err(|e| format!("{e:?}")),
            "global-hog-ptx" => Module::load_ptx(GLOBAL_HOG_PTX)
                .map(drop)
                .map_err(|e| format!("{e:?}")),
            "hang" => {
                let module =
                    Module::compile("forever.cu", ENDLESS_KERNEL).map_err(|e| format!("{e:?}"))?;
                let kernel = module.kernel("forever").map_err(|e| format!("{e:?}"))?;
                let stream = Stream::create().map_err(|e| format!("{e:?}"))?;
                let flag = Buffer::alloc(4).map_err(|e| format!("{e:?}"))?;
                flag.fill(0, &stream).map_err(|e| format!("{e:?}"))?;
                kernel
                    .launch(launch_1d(1, 1), &[gpu::KernelArg::Buffer(&flag)], &stream)
                    .map_err(|e| format!("{e:?}"))?;
                stream.synchronize().map_err(|e| format!("{e:?}"))?;
                Err("the endless kernel ended".into())
            }
            other => Err(format!("unknown mode {other:?}")),
        }
    }
}

export!(Misbehave);
