//! Does a component fit the plugin contract? [`PluginEngine::check`] answers with findings an
//! author can act on: what the file is, what it imports and exports, what `describe` says, and
//! which of its parameters would refuse every run.

use std::time::Instant;

use crate::params::{ParamSpec, ParamValue};
use crate::{PluginEngine, PluginInfo};

/// The contract's package and version, as imports name them.
const CONTRACT: &str = "passage:plugin";
const CONTRACT_VERSION: &str = "0.1.0";
/// The contract's interfaces.
const INTERFACES: &[&str] = &["types", "gpu", "peers", "report"];
/// WASI packages the sandbox links; all but clocks and random see nothing (no files, sockets,
/// environment or arguments).
const WASI_PACKAGES: &[&str] = &[
    "wasi:cli",
    "wasi:clocks",
    "wasi:random",
    "wasi:io",
    "wasi:filesystem",
    "wasi:sockets",
];
/// A component's preamble: magic, then the component layer's version.
const COMPONENT_PREAMBLE: [u8; 8] = *b"\0asm\x0d\x00\x01\x00";
const CORE_PREAMBLE: [u8; 8] = *b"\0asm\x01\x00\x00\x00";

/// How a finding reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// As it should be.
    Pass,
    /// Works, but probably not as meant.
    Warn,
    /// The portal and the agent refuse it, or every run fails.
    Fail,
}

/// One thing `check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Good, doubtful or wrong.
    pub verdict: Verdict,
    /// What, in the author's terms, with what to do about it.
    pub message: String,
}

/// Everything `check` found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The findings, in the order checked.
    pub findings: Vec<Finding>,
    /// What `describe` said, when it got that far.
    pub info: Option<PluginInfo>,
}

impl CheckReport {
    /// True when nothing failed.
    pub fn passed(&self) -> bool {
        self.findings.iter().all(|f| f.verdict != Verdict::Fail)
    }

    fn add(&mut self, verdict: Verdict, message: impl Into<String>) {
        self.findings.push(Finding {
            verdict,
            message: message.into(),
        });
    }
}

impl PluginEngine {
    /// Checks `bytes` against the plugin contract, as the portal and the agent will when they
    /// load it, and says what would go wrong with its runs' parameters.
    pub fn check(&self, bytes: &[u8]) -> CheckReport {
        let mut report = CheckReport {
            findings: Vec::new(),
            info: None,
        };
        let preamble: [u8; 8] = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 8]);
        if preamble == CORE_PREAMBLE {
            report.add(
                Verdict::Fail,
                "a core WebAssembly module, not a component: build Rust plugins with `--target \
                 wasm32-wasip2` (wasm32-wasip1 and wasm32-unknown-unknown make modules), or wrap a \
                 module with `wasm-tools component new`",
            );
            return report;
        }
        if preamble != COMPONENT_PREAMBLE {
            report.add(
                Verdict::Fail,
                "not a WebAssembly component (it does not start with a component's preamble): give \
                 the .wasm file your build made",
            );
            return report;
        }
        let began = Instant::now();
        let component = match wasmtime::component::Component::from_binary(&self.engine, bytes) {
            Ok(component) => component,
            Err(e) => {
                report.add(Verdict::Fail, format!("the component is invalid: {e:#}"));
                return report;
            }
        };
        report.add(
            Verdict::Pass,
            format!(
                "a WebAssembly component of {:.1} MiB, compiled (or taken from the cache) in {} ms",
                bytes.len() as f64 / f64::from(1 << 20),
                began.elapsed().as_millis()
            ),
        );
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        check_imports(&mut report, &imports);
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let mut missing = false;
        for name in ["describe", "run"] {
            if !exports.iter().any(|e| e == name) {
                missing = true;
                report.add(
                    Verdict::Fail,
                    format!(
                        "it does not export `{name}`: a plugin exports `describe` and `run` of the \
                         world `plugin` in {CONTRACT}@{CONTRACT_VERSION} (it exports: {})",
                        if exports.is_empty() {
                            "nothing".to_string()
                        } else {
                            exports.join(", ")
                        }
                    ),
                );
            }
        }
        if missing || !report.passed() {
            return report;
        }
        match self.load(bytes) {
            Ok(loaded) => {
                report.add(
                    Verdict::Pass,
                    format!(
                        "describe: {} {}, {} parameter(s)",
                        loaded.info.name,
                        loaded.info.version,
                        loaded.info.params.len()
                    ),
                );
                check_description(&mut report, &loaded.info);
                report.info = Some(loaded.info);
            }
            Err(e) => report.add(Verdict::Fail, e.to_string()),
        }
        report
    }
}

fn check_imports(report: &mut CheckReport, imports: &[String]) {
    let mut contract = Vec::new();
    let mut wasi = Vec::new();
    for import in imports {
        let (path, version) = import.split_once('@').unwrap_or((import, ""));
        if let Some(interface) = path.strip_prefix(&format!("{CONTRACT}/")) {
            if version != CONTRACT_VERSION {
                report.add(
                    Verdict::Fail,
                    format!(
                        "it imports {import}, built against version {version:?} of the contract; \
                         this agent has {CONTRACT_VERSION}: rebuild with this agent's plugin.wit \
                         (`passage-agent new` or the portal's /downloads/)"
                    ),
                );
            } else if !INTERFACES.contains(&interface) {
                report.add(
                    Verdict::Fail,
                    format!(
                        "it imports {import}, which the contract does not have (it has {})",
                        INTERFACES.join(", ")
                    ),
                );
            } else {
                contract.push(interface);
            }
        } else if WASI_PACKAGES
            .iter()
            .any(|p| path.starts_with(&format!("{p}/")))
        {
            wasi.push(path);
        } else {
            report.add(
                Verdict::Fail,
                format!(
                    "it imports {import}, which the sandbox does not provide: a plugin reaches the \
                     GPU through {CONTRACT}/gpu and reports through {CONTRACT}/report; of WASI it \
                     gets clocks and random, and files, sockets and environment that are empty"
                ),
            );
        }
    }
    if !contract.is_empty() {
        let peers = if contract.contains(&"peers") {
            "; it imports peers, so it runs on every GPU of its machine at once"
        } else {
            ""
        };
        report.add(
            Verdict::Pass,
            format!("imports of the contract: {}{peers}", contract.join(", ")),
        );
    }
    let empty: Vec<&&str> = wasi
        .iter()
        .filter(|p| {
            ["wasi:filesystem", "wasi:sockets", "wasi:cli/environment"]
                .iter()
                .any(|denied| p.starts_with(denied))
        })
        .collect();
    if !empty.is_empty() {
        report.add(
            Verdict::Pass,
            format!(
                "it imports {} WASI interface(s); those for files, sockets and the environment \
                 are linked but empty in the sandbox (no directories, no network, no variables)",
                wasi.len()
            ),
        );
    }
}

fn check_description(report: &mut CheckReport, info: &PluginInfo) {
    if info.summary.trim().is_empty() {
        report.add(
            Verdict::Warn,
            "describe gives no summary: the portal shows it on the plugin's page",
        );
    }
    for spec in &info.params {
        check_param(report, spec);
    }
}

fn check_param(report: &mut CheckReport, spec: &ParamSpec) {
    let name = &spec.name;
    if let (Some(min), Some(max)) = (spec.min, spec.max)
        && min > max
    {
        report.add(
            Verdict::Fail,
            format!("parameter {name}: its minimum {min} is above its maximum {max}, so no value is accepted"),
        );
        return;
    }
    let number = match spec.default {
        ParamValue::Integer(v) => Some(v as f64),
        ParamValue::Float(v) => Some(v),
        _ => None,
    };
    if let Some(value) = number {
        if let Some(min) = spec.min.filter(|min| value < *min) {
            report.add(
                Verdict::Fail,
                format!(
                    "parameter {name}: the default {value} is below its minimum {min}, so every \
                     run that does not set it is refused"
                ),
            );
        }
        if let Some(max) = spec.max.filter(|max| value > *max) {
            report.add(
                Verdict::Fail,
                format!(
                    "parameter {name}: the default {value} is above its maximum {max}, so every \
                     run that does not set it is refused"
                ),
            );
        }
    } else if spec.min.is_some() || spec.max.is_some() {
        report.add(
            Verdict::Warn,
            format!(
                "parameter {name}: a range is given for a {} parameter, where it means nothing",
                spec.kind.as_str()
            ),
        );
    }
    if spec.summary.trim().is_empty() {
        report.add(
            Verdict::Warn,
            format!("parameter {name} has no summary: forms show it beside the field"),
        );
    }
}
