//! NVRTC, NVIDIA's runtime compiler for CUDA C, found at run time like the driver.
//!
//! It needs neither a GPU nor a driver, so both backends compile with it: the CUDA backend to
//! load the result, the simulated one so that a syntax error, a missing `extern "C"` or a wrong
//! parameter list fails on every machine as it would on a GPU. It is looked for on the system's
//! library path first, then at [`ENV`], then where Passage's setup installs NVIDIA's
//! `nvidia-cuda-nvrtc` package from PyPI ([`INSTALLED`]).
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::GpuError;

/// The longest one compilation may take.
pub const MAX_COMPILE_TIME: Duration = Duration::from_secs(60);
/// The environment variable naming a `libnvrtc.so` to use (a file, or a directory holding one).
pub const ENV: &str = "PASSAGE_NVRTC";
/// Where `pip install --target` puts NVIDIA's NVRTC package for Passage.
pub const INSTALLED: &str = "/usr/local/lib/passage/nvrtc";
/// How to install it, for messages.
pub const INSTALL_HINT: &str =
    "pip install --target /usr/local/lib/passage/nvrtc nvidia-cuda-nvrtc (or set PASSAGE_NVRTC)";

/// NVRTC as found: where it came from and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nvrtc {
    /// The library loaded: a path, or the name the system's search path resolved.
    pub library: String,
    /// `major.minor`.
    pub version: String,
}

/// NVRTC, loaded once per process, or `None` when it is nowhere to be found.
pub fn find() -> Option<&'static Nvrtc> {
    static FOUND: OnceLock<Option<Nvrtc>> = OnceLock::new();
    FOUND.get_or_init(load).as_ref()
}

fn load() -> Option<Nvrtc> {
    // SAFETY: only tries to open the shared library by its usual names.
    let library = if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        "libnvrtc.so (system library path)".to_string()
    } else {
        let path = candidates().into_iter().find(|p| p.is_file())?;
        // Opening it by its full path makes it known to the dynamic loader under its soname
        // (`libnvrtc.so.13`), so cudarc's own lookup by name finds this copy. It stays loaded
        // for the life of the process.
        // SAFETY: NVRTC's initialisers only set up the library itself.
        let opened = unsafe { libloading::Library::new(&path) }.ok()?;
        std::mem::forget(opened);
        // SAFETY: as above.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return None;
        }
        path.display().to_string()
    };
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is loaded; both out-pointers are valid.
    let result = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    (result == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS).then(|| Nvrtc {
        library,
        version: format!("{major}.{minor}"),
    })
}

/// Library files to try, in order: [`ENV`] (a file or a directory), then [`INSTALLED`].
fn candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(given) = std::env::var_os(ENV).map(PathBuf::from) {
        if given.is_file() {
            return vec![given];
        }
        dirs.push(given);
    }
    dirs.push(PathBuf::from(INSTALLED));
    dirs.iter().flat_map(|dir| libraries_under(dir)).collect()
}

/// `libnvrtc.so*` in `dir` or in the `nvidia/cu*/lib` folders of a pip target there.
fn libraries_under(dir: &Path) -> Vec<PathBuf> {
    let mut folders = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir.join("nvidia")) {
        let mut versions: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("lib")).collect();
        // The newest CUDA first: `cu13` before `cu12`.
        versions.sort();
        versions.reverse();
        folders.extend(versions);
    }
    let mut found = Vec::new();
    for folder in folders {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        let mut names: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libnvrtc.so"))
            })
            .collect();
        names.sort();
        found.extend(names);
    }
    found
}

/// Compiles `source` (labelled `name` in the log) to PTX for `arch` (`sm_90`), on a thread of
/// its own: NVRTC cannot be interrupted, so a compilation that outlasts [`MAX_COMPILE_TIME`] is
/// abandoned with an error.
pub fn compile(name: &str, source: &str, arch: &'static str) -> Result<String, GpuError> {
    if find().is_none() {
        return Err(GpuError::CompileFailed(format!(
            "NVRTC (libnvrtc.so) is not installed: CUDA C cannot be compiled here; install it with \
             `{INSTALL_HINT}`, or load PTX instead"
        )));
    }
    let options = cudarc::nvrtc::CompileOptions {
        arch: Some(arch),
        name: Some(name.to_string()),
        ..Default::default()
    };
    let (done, outcome) = std::sync::mpsc::channel();
    let (owned_name, owned_source) = (name.to_string(), source.to_string());
    std::thread::Builder::new()
        .name("nvrtc".into())
        .spawn(move || {
            let result = cudarc::nvrtc::compile_ptx_with_opts(&owned_source, options)
                .map(|ptx| ptx.to_src())
                .map_err(|e| match e {
                    cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                        GpuError::CompileFailed(format!(
                            "{owned_name}:\n{}",
                            log.to_string_lossy().trim()
                        ))
                    }
                    other => GpuError::CompileFailed(format!("{owned_name}: {other:?}")),
                });
            let _ = done.send(result);
        })
        .map_err(|e| GpuError::Driver(format!("cannot start the compiler thread: {e}")))?;
    match outcome.recv_timeout(MAX_COMPILE_TIME) {
        Ok(result) => result,
        Err(_) => Err(GpuError::LimitExceeded(format!(
            "{name}: compiling took longer than {} s, the limit of one compilation",
            MAX_COMPILE_TIME.as_secs()
        ))),
    }
}

/// NVRTC's architecture option for a device of compute capability `(major, minor)`; one
/// string per capability for the life of the process, as NVRTC's options take a static one.
pub fn arch(capability: (u32, u32)) -> &'static str {
    type Arches = std::collections::BTreeMap<(u32, u32), &'static str>;
    static ARCHES: OnceLock<std::sync::Mutex<Arches>> = OnceLock::new();
    let mut known = ARCHES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    known.entry(capability).or_insert_with(|| {
        Box::leak(format!("sm_{}{}", capability.0, capability.1).into_boxed_str())
    })
}
