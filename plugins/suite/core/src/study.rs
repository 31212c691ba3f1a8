//! The study's suite: the ten CUDA programs of the 2012 passthrough study, as plugin runs with
//! the study's sizes. A portal queues one job per [`StudyRun`]; `benches/suite.sh` runs the same
//! list on a GPU machine.

/// One run of the suite: a shipped plugin and the parameters that differ from its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StudyRun {
    /// Label in the study's words, e.g. "VecAdd 128".
    pub label: &'static str,
    /// The plugin (`target/plugins/<plugin>.wasm`).
    pub plugin: &'static str,
    /// `name=value` parameters, as `passage-agent run --param` takes them.
    pub params: &'static [&'static str],
}

/// The ten programs of the study, in its order, with VecAdd at each of its sizes and one large
/// size. The sizeable matrixMul is `matrix-mul` with larger matrices (2048 x 2048 each).
pub const STUDY: &[StudyRun] = &[
    StudyRun {
        label: "alignedTypes",
        plugin: "aligned-types",
        params: &[],
    },
    StudyRun {
        label: "asyncAPI",
        plugin: "async-api",
        params: &[],
    },
    StudyRun {
        label: "BlackScholes",
        plugin: "black-scholes",
        params: &[],
    },
    StudyRun {
        label: "clock",
        plugin: "clock",
        params: &[],
    },
    StudyRun {
        label: "convolutionSeparable",
        plugin: "convolution-separable",
        params: &[],
    },
    StudyRun {
        label: "fastWalshTransform",
        plugin: "fast-walsh-transform",
        params: &[],
    },
    StudyRun {
        label: "matrixMul",
        plugin: "matrix-mul",
        params: &[],
    },
    StudyRun {
        label: "bandwidthTest (pinned)",
        plugin: "bandwidth-test",
        params: &[],
    },
    StudyRun {
        label: "bandwidthTest (pageable)",
        plugin: "bandwidth-test",
        params: &["memory=pageable"],
    },
    StudyRun {
        label: "matrixMul sizeable",
        plugin: "matrix-mul",
        params: &["wa=2048", "ha=2048", "wb=2048", "hb=2048", "iterations=30"],
    },
    StudyRun {
        label: "VecAdd 128",
        plugin: "vector-add",
        params: &["elements=128"],
    },
    StudyRun {
        label: "VecAdd 256",
        plugin: "vector-add",
        params: &["elements=256"],
    },
    StudyRun {
        label: "VecAdd 512",
        plugin: "vector-add",
        params: &["elements=512"],
    },
    StudyRun {
        label: "VecAdd 1024",
        plugin: "vector-add",
        params: &["elements=1024"],
    },
    StudyRun {
        label: "VecAdd 16 Mi",
        plugin: "vector-add",
        params: &["elements=16777216"],
    },
];

/// The shipped plugins of the suite, each once.
pub const PLUGINS: [&str; 9] = [
    "bandwidth-test",
    "matrix-mul",
    "vector-add",
    "black-scholes",
    "convolution-separable",
    "fast-walsh-transform",
    "aligned-types",
    "async-api",
    "clock",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Benchmark, ParamDecl};

    fn declared(plugin: &str) -> Vec<ParamDecl> {
        crate::with_benchmark!(plugin, B => B::params(), _ => panic!("{plugin} is not in the suite"))
    }

    #[test]
    fn every_study_run_names_a_plugin_and_its_parameters() {
        for run in STUDY {
            assert!(PLUGINS.contains(&run.plugin), "{}", run.plugin);
            let params = declared(run.plugin);
            for given in run.params {
                let (name, _) = given.split_once('=').expect("name=value");
                assert!(
                    params.iter().any(|p| p.name == name),
                    "{}: no parameter {name}",
                    run.label
                );
            }
        }
        for plugin in PLUGINS {
            for p in declared(plugin) {
                assert!(
                    p.name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                    "{plugin}: {} is not a valid parameter name",
                    p.name
                );
            }
        }
        assert_eq!(
            STUDY
                .iter()
                .map(|r| r.plugin)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            PLUGINS.len(),
            "every plugin is in the study"
        );
    }
}
