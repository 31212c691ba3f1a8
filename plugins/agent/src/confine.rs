//! The job process's outer wall.
//!
//! The WebAssembly sandbox is the inner boundary: a plugin reaches nothing but the host functions.
//! This module is the outer one, so that a bug in a host function (or in NVRTC, or the driver) is
//! not a way out. Before a `run` process loads a plugin it confines itself, in this order:
//!
//! 1. an unprivileged user, when started as root ([`drop_to_user`]);
//! 2. resource limits: no core dumps, bounded file size, data and locked memory ([`Limits`]);
//! 3. `no_new_privs`;
//! 4. Landlock: read-only access to the libraries, the CUDA installation and `/sys`, read-write
//!    access to its own `/proc` entry, the GPU device nodes and the compile cache, nothing else;
//!    no TCP, no signals or abstract sockets outside the process ([`restrict_files`]);
//! 5. seccomp: no network sockets (UNIX sockets only, which the CUDA driver uses), no exec, no
//!    ptrace, no new processes, no signals to others, no namespaces, mounts, BPF, io_uring or
//!    kernel keyrings ([`restrict_syscalls`]).
//!
//! Landlock and seccomp apply to the calling thread and the threads it starts afterwards, so this
//! runs first thing, on the main thread, before any other thread exists.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, RestrictionStatus, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, path_beneath_rules,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use thiserror::Error;

/// Why the process could not confine itself. A job never runs unconfined because of one.
#[derive(Debug, Error)]
pub enum ConfineError {
    /// The user to run as does not exist, or switching to it failed.
    #[error("cannot switch to user {user:?}: {reason}")]
    User {
        /// The user.
        user: String,
        /// What went wrong.
        reason: String,
    },
    /// A resource limit could not be set.
    #[error("cannot set {0}")]
    Limit(String),
    /// The Landlock ruleset could not be built or applied.
    #[error("Landlock: {0}")]
    Landlock(String),
    /// The seccomp filter could not be built or applied.
    #[error("seccomp: {0}")]
    Seccomp(String),
}

/// The resource limits of a job process.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Private writable memory (`RLIMIT_DATA`): the plugin's memory, host memory and the
    /// runtime's own. Address space (`RLIMIT_AS`) is not usable: wasmtime and CUDA reserve far
    /// more address space than they ever back with memory.
    pub data_bytes: u64,
    /// Page-locked memory (`RLIMIT_MEMLOCK`).
    pub locked_bytes: u64,
    /// The largest file the process may write (`RLIMIT_FSIZE`): compiled code in the cache.
    pub file_bytes: u64,
}

/// Directories the job process may read: the system's libraries and the CUDA installation.
const READ_ONLY: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/opt",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/sys",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/sys/vm",
    "/proc/driver/nvidia",
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
];

/// What confinement achieved; anything short of full is said in the job's log.
#[derive(Debug, Clone)]
pub struct Confined {
    /// Lines for the job's log about protection that this kernel could not give.
    pub warnings: Vec<String>,
}

/// The unprivileged account a job started as root runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUser {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
}

/// The account for a job: `requested`, or `passage-job` where that exists, otherwise `nobody`.
/// Root is refused.
pub fn job_user(requested: Option<&str>) -> Result<JobUser, ConfineError> {
    let name = match requested {
        Some(name) => name,
        None if ids_of("passage-job").is_some() => "passage-job",
        None => "nobody",
    };
    let failed = |reason: &str| ConfineError::User {
        user: name.to_string(),
        reason: reason.to_string(),
    };
    let (uid, gid) = ids_of(name).ok_or_else(|| failed("no such user"))?;
    if uid == 0 {
        return Err(failed("it is root"));
    }
    Ok(JobUser {
        name: name.to_string(),
        uid,
        gid,
    })
}

/// The uid and gid of the account `name`, if it exists.
#[allow(unsafe_code)]
fn ids_of(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    // SAFETY: getpwnam reads a NUL-terminated name; the result points into static storage that
    // is read at once, before any other call could replace it (this runs on the only thread).
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    // SAFETY: checked for null; the record is read at once.
    (!entry.is_null()).then(|| unsafe { ((*entry).pw_uid, (*entry).pw_gid) })
}

/// Switches to `user` (its uid, gid and no supplementary groups). Only for a root process.
#[allow(unsafe_code)]
pub fn drop_to_user(user: &JobUser) -> Result<(), ConfineError> {
    // SAFETY: plain system calls on integers; a null list with length 0 clears the groups.
    let results = unsafe {
        [
            libc::setgroups(0, std::ptr::null()),
            libc::setresgid(user.gid, user.gid, user.gid),
            libc::setresuid(user.uid, user.uid, user.uid),
        ]
    };
    if results.iter().any(|r| *r != 0) {
        return Err(ConfineError::User {
            user: user.name.clone(),
            reason: std::io::Error::last_os_error().to_string(),
        });
    }
    Ok(())
}

/// True when this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid() == 0
    }
}

/// Sets the process's resource limits (lowering only: a limit already lower stays).
#[allow(unsafe_code)]
pub fn set_limits(limits: &Limits) -> Result<(), ConfineError> {
    let wanted = [
        (libc::RLIMIT_CORE, 0, "RLIMIT_CORE"),
        (libc::RLIMIT_FSIZE, limits.file_bytes, "RLIMIT_FSIZE"),
        (libc::RLIMIT_DATA, limits.data_bytes, "RLIMIT_DATA"),
        (libc::RLIMIT_MEMLOCK, limits.locked_bytes, "RLIMIT_MEMLOCK"),
    ];
    for (resource, value, name) in wanted {
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `current` is a valid rlimit for the kernel to fill.
        if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
            return Err(ConfineError::Limit(format!(
                "{name}: {}",
                std::io::Error::last_os_error()
            )));
        }
        let value = value.min(current.rlim_max);
        let new = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: `new` is a valid rlimit; lowering a limit needs no privilege.
        if unsafe { libc::setrlimit(resource, &new) } != 0 {
            return Err(ConfineError::Limit(format!(
                "{name} to {value}: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

/// Landlock: what [`READ_ONLY`] and `read_only` name may be read, the GPU device nodes and
/// `writable` may be read and written, and nothing else on the file system; no TCP; no signals
/// or abstract UNIX sockets outside this process. Returns a warning when the kernel enforces
/// less than that.
pub fn restrict_files(
    read_only: &[PathBuf],
    writable: &[PathBuf],
) -> Result<Option<String>, ConfineError> {
    let abi = ABI::V6;
    let error = |e: landlock::RulesetError| ConfineError::Landlock(e.to_string());
    let devices = gpu_device_nodes();
    let status: RestrictionStatus = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(error)?
        .handle_access(AccessNet::from_all(abi))
        .map_err(error)?
        .scope(Scope::from_all(abi))
        .map_err(error)?
        .create()
        .map_err(error)?
        .add_rules(path_beneath_rules(READ_ONLY, AccessFs::from_read(abi)))
        .map_err(error)?
        .add_rules(path_beneath_rules(read_only, AccessFs::from_read(abi)))
        .map_err(error)?
        // Its own entries only (the link resolves to this process's directory): the CUDA
        // driver writes there and will not start otherwise.
        .add_rules(path_beneath_rules(
            ["/proc/self"],
            AccessFs::from_read(abi) | AccessFs::WriteFile | AccessFs::Truncate,
        ))
        .map_err(error)?
        .add_rules(path_beneath_rules(
            &devices,
            AccessFs::from_read(abi) | AccessFs::WriteFile | AccessFs::IoctlDev,
        ))
        .map_err(error)?
        .add_rules(path_beneath_rules(
            writable,
            AccessFs::from_all(abi) & !AccessFs::Execute,
        ))
        .map_err(error)?
        .restrict_self()
        .map_err(error)?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => None,
        RulesetStatus::PartiallyEnforced => Some(
            "this kernel's Landlock is older than the agent's: file access is restricted, \
             but not every kind of it (network or signal scoping may be missing)"
                .into(),
        ),
        RulesetStatus::NotEnforced => Some(
            "this kernel has no Landlock: the job's file access is NOT restricted beyond its \
             user; the WebAssembly sandbox and seccomp still apply"
                .into(),
        ),
    })
}

/// `/dev/nvidia*` (the GPU, its control and UVM nodes) and `/dev/dri` where present.
fn gpu_device_nodes() -> Vec<PathBuf> {
    let mut nodes: Vec<PathBuf> = std::fs::read_dir("/dev")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("nvidia"))
        })
        .collect();
    nodes.sort();
    nodes
}

/// Calls the job process never needs, each answered `EPERM`: sockets other than UNIX ones (the
/// CUDA driver will not start without a UNIX socket; Landlock keeps abstract ones inside the
/// process, and the job's user bounds named ones), running programs,
/// reading or writing other processes, new processes (threads stay allowed), signals to other
/// processes, namespaces and mounts, kernel modules, BPF, perf, io_uring (which would bypass
/// this filter) and keyrings.
pub fn restrict_syscalls() -> Result<(), ConfineError> {
    let error = |e: seccompiler::Error| ConfineError::Seccomp(e.to_string());
    let arch: TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| ConfineError::Seccomp(e.to_string()))?;
    let backend = |e: seccompiler::BackendError| ConfineError::Seccomp(e.to_string());
    let pid = u64::from(std::process::id());
    let other_process = || -> Result<Vec<SeccompRule>, ConfineError> {
        Ok(vec![
            SeccompRule::new(vec![
                SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, pid)
                    .map_err(backend)?,
            ])
            .map_err(backend)?,
        ])
    };
    // clone without CLONE_THREAD makes a process; with it, a thread.
    let new_process = vec![
        SeccompRule::new(vec![
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
                0,
            )
            .map_err(backend)?,
        ])
        .map_err(backend)?,
    ];
    let not_unix = || -> Result<Vec<SeccompRule>, ConfineError> {
        Ok(vec![
            SeccompRule::new(vec![
                SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Ne,
                    libc::AF_UNIX as u64,
                )
                .map_err(backend)?,
            ])
            .map_err(backend)?,
        ])
    };
    let always = [
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_fork,
        libc::SYS_vfork,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_pidfd_open,
        libc::SYS_pidfd_getfd,
        libc::SYS_tkill,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_reboot,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_personality,
    ];
    let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> =
        always.iter().map(|call| (*call, Vec::new())).collect();
    rules.insert(libc::SYS_clone, new_process);
    rules.insert(libc::SYS_socket, not_unix()?);
    rules.insert(libc::SYS_socketpair, not_unix()?);
    rules.insert(libc::SYS_kill, other_process()?);
    rules.insert(libc::SYS_tgkill, other_process()?);
    let denied: BpfProgram = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(backend)?
    .try_into()
    .map_err(backend)?;
    // clone3 passes its flags in memory, where a filter cannot look: answering "not
    // implemented" makes the C library fall back to clone, which the filter above checks.
    let clone3: BpfProgram = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(backend)?
    .try_into()
    .map_err(backend)?;
    seccompiler::apply_filter(&clone3).map_err(error)?;
    seccompiler::apply_filter(&denied).map_err(error)
}

/// Confines the calling process for a job: all of the above but the user switch. `cache` is
/// the only place it may write.
pub fn confine(cache: &Path, limits: &Limits) -> Result<Confined, ConfineError> {
    set_limits(limits)?;
    let mut warnings = Vec::new();
    // Where the dynamic loader looks besides the system's directories.
    let library_path: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|paths| std::env::split_paths(&paths).collect())
        .unwrap_or_default();
    if let Some(warning) = restrict_files(&library_path, &[cache.to_path_buf()])? {
        warnings.push(warning);
    }
    restrict_syscalls()?;
    Ok(Confined { warnings })
}

#[cfg(test)]
mod tests {
    //! Each test confines a thread of its own (Landlock and seccomp hold per thread) and then
    //! tries what an attacker who took over the job process would try.

    use super::*;
    use std::io::ErrorKind;

    fn confined<T: Send + 'static>(attack: impl FnOnce(&Path) -> T + Send + 'static) -> T {
        let cache = tempfile::tempdir().unwrap();
        let path = cache.path().to_path_buf();
        std::thread::spawn(move || {
            let warning = restrict_files(&[], std::slice::from_ref(&path)).unwrap();
            assert_eq!(warning, None, "this kernel must enforce Landlock fully");
            restrict_syscalls().unwrap();
            attack(&path)
        })
        .join()
        .unwrap()
    }

    #[test]
    fn files_outside_the_libraries_and_cache_cannot_be_read_or_written() {
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "psa_secret").unwrap();
        let secret_path = secret.path().to_path_buf();
        let results = confined(move |cache| {
            (
                std::fs::read("/etc/passwd").map_err(|e| e.kind()),
                std::fs::read(&secret_path).map_err(|e| e.kind()),
                std::fs::write("/tmp/passage-escape", "x").map_err(|e| e.kind()),
                std::fs::read_dir("/root").map(|_| ()).map_err(|e| e.kind()),
                std::fs::read("/proc/1/environ").map_err(|e| e.kind()),
                std::fs::write(cache.join("ptx"), "ok").map_err(|e| e.kind()),
                std::fs::read("/usr/lib/os-release").map(|_| ()),
                std::fs::read("/proc/self/status").map(|_| ()),
                std::fs::write("/proc/self/comm", "renamed").map_err(|e| e.kind()),
            )
        });
        assert_eq!(results.0, Err(ErrorKind::PermissionDenied), "/etc/passwd");
        assert_eq!(results.1, Err(ErrorKind::PermissionDenied), "a token file");
        assert_eq!(results.2, Err(ErrorKind::PermissionDenied), "writing /tmp");
        assert_eq!(results.3, Err(ErrorKind::PermissionDenied), "listing /root");
        assert_eq!(
            results.4,
            Err(ErrorKind::PermissionDenied),
            "another process"
        );
        assert_eq!(results.5, Ok(()), "the cache stays writable");
        assert!(results.6.is_ok(), "the libraries stay readable");
        assert!(results.7.is_ok(), "its own /proc entry stays readable");
        assert_eq!(results.8, Ok(()), "and writable");
    }

    #[test]
    fn no_network_no_programs_no_processes() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let name = format!("passage-confine-test-{}", std::process::id());
        let outside = UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap());
        let outside = outside.unwrap();
        #[allow(unsafe_code)]
        let results = confined(move |_| {
            (
                std::net::TcpStream::connect(address)
                    .map(drop)
                    .map_err(|e| e.raw_os_error()),
                std::net::UdpSocket::bind("0.0.0.0:0")
                    .map(drop)
                    .map_err(|e| e.raw_os_error()),
                // SAFETY: socket takes integers; a returned descriptor is closed at once.
                unsafe {
                    let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 0);
                    if fd >= 0 {
                        libc::close(fd);
                    }
                    fd
                },
                UnixStream::connect_addr(&SocketAddr::from_abstract_name(&name).unwrap())
                    .map(drop)
                    .map_err(|e| e.raw_os_error()),
                std::process::Command::new("/bin/true")
                    .status()
                    .map(drop)
                    .map_err(|e| e.raw_os_error()),
                std::thread::spawn(|| 7).join().unwrap(),
            )
        });
        drop(outside);
        assert_eq!(results.0, Err(Some(libc::EPERM)), "TCP");
        assert_eq!(results.1, Err(Some(libc::EPERM)), "UDP");
        assert_eq!(results.2, -1, "netlink");
        assert_eq!(
            results.3,
            Err(Some(libc::EPERM)),
            "an abstract UNIX socket outside the process"
        );
        assert!(results.4.is_err(), "exec: {:?}", results.4);
        assert_eq!(results.5, 7, "threads still work");
    }

    #[test]
    #[allow(unsafe_code)]
    fn other_processes_cannot_be_signalled_or_traced() {
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let target = sleeper.id() as i32;
        let results = confined(move |_| {
            // SAFETY: plain system calls on integers; the target is a child of this test.
            unsafe {
                (
                    libc::kill(target, libc::SIGKILL),
                    libc::ptrace(libc::PTRACE_ATTACH, target, 0, 0),
                    libc::kill(std::process::id() as i32, 0),
                )
            }
        });
        assert_eq!(results.0, -1, "kill of another process");
        assert_eq!(results.1, -1, "ptrace");
        assert_eq!(results.2, 0, "signalling itself stays allowed");
        assert!(sleeper.try_wait().unwrap().is_none(), "the target lives");
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
    }
}
