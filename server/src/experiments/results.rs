//! An experiment's numbers: every sample of every figure, summarised per target, the overhead
//! of each VM against the native baseline with a bootstrap interval, the CSV export, and the
//! comparison of two experiments.
//!
//! A job gives one sample per figure: each metric it reported (the median when it reported the
//! same name several times; the per-run `min`/`max` companions and the verification flag are
//! not figures), and the real, user and system time of its run, as the study compared them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use passage_app::experiments::{
    BenchmarkView, Cell, ChartLink, Comparison, ComparisonRow, ExperimentView, Figure, Overhead,
    Sample,
};
use passage_app::plugins::JobResult;
use passage_study::stats;

use super::{ExperimentError, charts, summary, target_view};
use crate::AppState;
use crate::store::{ExperimentRecord, param_texts};

/// The time figures every job has, with the study's names.
pub const TIMES: [&str; 3] = ["real time", "user time", "system time"];

/// Results computed lately, by experiment and how far it had got: bootstrapping every figure
/// takes a while, and pages poll.
type Cache = Mutex<Vec<((i64, i64, String), Arc<ExperimentView>)>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(Vec::new()))
}

/// True for a figure that is the same in every sample of every target: a run's setting (its
/// element count, its transfer size) reported beside its measurements, not a measurement.
pub fn is_setting(f: &Figure) -> bool {
    let first = f.cells.first().map(|c| c.median);
    f.cells
        .iter()
        .all(|c| c.min == c.max && Some(c.median) == first)
}

/// True for a metric that is a figure of its own.
fn is_figure(name: &str) -> bool {
    name != "verification" && !name.ends_with(" min") && !name.ends_with(" max")
}

/// A stable seed for one comparison, so that a page shows the same interval every time.
fn seed(parts: &[&str]) -> u64 {
    // FNV-1a: stable across builds and platforms, unlike the standard hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// One job's figures: `(metric, unit, value)`.
fn job_figures(result: &JobResult) -> Vec<(String, String, f64)> {
    let mut by_name: BTreeMap<&str, (usize, &str, Vec<f64>)> = BTreeMap::new();
    for (i, m) in result.metrics.iter().enumerate() {
        if is_figure(&m.name) && m.value.is_finite() {
            by_name
                .entry(&m.name)
                .or_insert((i, &m.unit, Vec::new()))
                .2
                .push(m.value);
        }
    }
    let mut figures: Vec<(usize, String, String, f64)> = by_name
        .into_iter()
        .filter_map(|(name, (first, unit, values))| {
            Some((
                first,
                name.to_string(),
                unit.to_string(),
                stats::quantile(&values, 0.5)?,
            ))
        })
        .collect();
    figures.sort_by_key(|f| f.0);
    let mut out: Vec<(String, String, f64)> =
        figures.into_iter().map(|(_, n, u, v)| (n, u, v)).collect();
    for (name, value) in TIMES
        .iter()
        .zip([result.wall_s, result.user_s, result.system_s])
    {
        out.push((name.to_string(), "s".into(), value));
    }
    out
}

/// The view of an experiment with every figure summarised.
pub async fn results(
    state: &AppState,
    record: &ExperimentRecord,
) -> Result<ExperimentView, ExperimentError> {
    let store = &state.store;
    let finished = matches!(record.state.as_str(), "succeeded" | "failed" | "cancelled");
    let targets: Vec<_> = store
        .experiment_targets(record.id)
        .await?
        .iter()
        .map(|t| {
            (
                t.kind == "native",
                super::simulated_target(t),
                target_view(t, finished),
            )
        })
        .collect();
    let benchmarks: Vec<BenchmarkView> = store
        .experiment_benchmarks(record.id)
        .await?
        .into_iter()
        .map(|b| BenchmarkView {
            position: b.position,
            label: b.label,
            plugin: b.plugin,
            plugin_version: b.plugin_version,
            params: param_texts(&b.params_json).unwrap_or_default(),
        })
        .collect();
    let key = (record.id, record.jobs_done, record.state.clone());
    let hit = cache()
        .lock()
        .expect("the results cache is not poisoned")
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, view)| Arc::clone(view));
    if let Some(view) = hit {
        // The figures are those of the same jobs; the rest may have moved on.
        let mut view = view.as_ref().clone();
        view.summary = summary(
            record,
            view.summary.simulated || targets.iter().any(|t| t.1),
        );
        view.targets = targets.into_iter().map(|t| t.2).collect();
        return Ok(view);
    }
    // (benchmark, metric) -> (unit, first seen, target -> samples)
    type Samples = BTreeMap<i64, Vec<Sample>>;
    let mut gathered: BTreeMap<(i64, String), (String, usize, Samples)> = BTreeMap::new();
    let mut simulated = targets.iter().any(|t| t.1);
    let mut seen = 0usize;
    for job in store.experiment_jobs(record.id).await? {
        if job.state != "succeeded" {
            continue;
        }
        let Some(result) = job
            .result_json
            .as_deref()
            .and_then(|r| serde_json::from_str::<JobResult>(r).ok())
        else {
            continue;
        };
        simulated |= result.simulated;
        for (metric, unit, value) in job_figures(&result) {
            seen += 1;
            gathered
                .entry((job.benchmark, metric))
                .or_insert_with(|| (unit, seen, BTreeMap::new()))
                .2
                .entry(job.target)
                .or_default()
                .push(Sample {
                    job: job.id,
                    repetition: job.repetition,
                    value,
                });
        }
    }
    let label_of = |b: i64| {
        benchmarks
            .iter()
            .find(|x| x.position == b)
            .map(|x| x.label.clone())
            .unwrap_or_default()
    };
    let mut figures: Vec<(usize, Figure)> = gathered
        .into_iter()
        .map(|((benchmark, metric), (unit, first, by_target))| {
            let cells = by_target
                .into_iter()
                .filter_map(|(target, mut samples)| {
                    samples.sort_by_key(|s| s.repetition);
                    let values: Vec<f64> = samples.iter().map(|s| s.value).collect();
                    let s = stats::summarize(&values)?;
                    Some(Cell {
                        target,
                        n: s.n as i64,
                        median: s.median,
                        min: s.min,
                        max: s.max,
                        q1: s.q1,
                        q3: s.q3,
                        samples,
                    })
                })
                .collect();
            let figure = Figure {
                benchmark,
                benchmark_label: label_of(benchmark),
                metric,
                unit,
                cells,
            };
            (first, figure)
        })
        .collect();
    // Benchmarks in order; within one, metrics as the plugin reported them, then the times.
    figures.sort_by_key(|(first, f)| {
        let time = TIMES.iter().position(|t| *t == f.metric);
        (f.benchmark, time.is_some(), time, *first)
    });
    let figures: Vec<Figure> = figures.into_iter().map(|(_, f)| f).collect();
    let baseline = targets.iter().find(|t| t.0).map(|t| t.2.position);
    let overheads = match baseline {
        Some(baseline) => figures
            .iter()
            .filter(|f| !is_setting(f))
            .flat_map(|f| overheads_of(record.id, f, baseline))
            .collect(),
        None => Vec::new(),
    };
    let mut view = ExperimentView {
        summary: summary(record, simulated),
        benchmarks,
        targets: targets.into_iter().map(|t| t.2).collect(),
        figures,
        overheads,
        charts: Vec::new(),
    };
    view.charts = charts::links(&view);
    let mut cached = cache().lock().expect("the results cache is not poisoned");
    cached.retain(|(k, _)| k.0 != record.id);
    if cached.len() >= 64 {
        cached.remove(0);
    }
    cached.push((key, Arc::new(view.clone())));
    Ok(view)
}

/// Every other target's figure against the baseline's.
fn overheads_of(experiment: i64, figure: &Figure, baseline: i64) -> Vec<Overhead> {
    let Some(base) = figure.cells.iter().find(|c| c.target == baseline) else {
        return Vec::new();
    };
    figure
        .cells
        .iter()
        .filter(|c| c.target != baseline)
        .filter_map(|cell| {
            let seed = seed(&[
                &experiment.to_string(),
                &figure.benchmark.to_string(),
                &figure.metric,
                &cell.target.to_string(),
            ]);
            overhead(figure, base, cell, seed)
        })
        .collect()
}

fn values(cell: &Cell) -> Vec<f64> {
    cell.samples.iter().map(|s| s.value).collect()
}

/// `cell` against `base`: other − baseline with its interval.
fn overhead(figure: &Figure, base: &Cell, cell: &Cell, seed: u64) -> Option<Overhead> {
    let d = stats::difference(&values(base), &values(cell), seed)?;
    Some(Overhead {
        benchmark: figure.benchmark,
        benchmark_label: figure.benchmark_label.clone(),
        metric: figure.metric.clone(),
        unit: figure.unit.clone(),
        target: cell.target,
        baseline: base.target,
        absolute: d.absolute,
        relative: d.relative,
        low: d.interval.map(|i| i.low),
        high: d.interval.map(|i| i.high),
        relative_low: d.relative_interval.map(|i| i.low),
        relative_high: d.relative_interval.map(|i| i.high),
        significant: d.significant,
    })
}

/// The role a target plays, to match targets of two experiments: `native`, `KVM 2 vCPU`.
fn role(view: &ExperimentView, target: i64) -> Option<String> {
    let t = view.target(target)?;
    Some(match (&t.hypervisor, t.vcpus) {
        (Some(hypervisor), Some(vcpus)) if t.is_vm() => super::vm_label(hypervisor, vcpus),
        _ => "native".into(),
    })
}

/// `b` against `a`: every figure both have, for every target role both have (the first target
/// of each role).
pub fn compare(a: &ExperimentView, b: &ExperimentView) -> Comparison {
    let mut rows = Vec::new();
    for fa in &a.figures {
        let Some(fb) = b
            .figures
            .iter()
            .find(|f| f.benchmark_label == fa.benchmark_label && f.metric == fa.metric)
        else {
            continue;
        };
        let mut roles_done = Vec::new();
        for ca in &fa.cells {
            let Some(r) = role(a, ca.target) else {
                continue;
            };
            if roles_done.contains(&r) {
                continue;
            }
            let Some(cb) = fb
                .cells
                .iter()
                .find(|c| role(b, c.target).as_ref() == Some(&r))
            else {
                continue;
            };
            roles_done.push(r.clone());
            let seed = seed(&[
                &a.summary.id.to_string(),
                &b.summary.id.to_string(),
                &fa.benchmark_label,
                &fa.metric,
                &r,
            ]);
            if let Some(difference) = overhead(fa, ca, cb, seed) {
                rows.push(ComparisonRow {
                    benchmark_label: fa.benchmark_label.clone(),
                    metric: fa.metric.clone(),
                    unit: fa.unit.clone(),
                    role: r,
                    a: ca.median,
                    b: cb.median,
                    difference,
                });
            }
        }
    }
    Comparison {
        a: a.summary.clone(),
        b: b.summary.clone(),
        rows,
    }
}

/// Every sample as CSV: one row per job and figure.
pub fn csv(view: &ExperimentView) -> Result<String, ExperimentError> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let write_error = |e: csv::Error| ExperimentError::Conflict(format!("writing CSV failed: {e}"));
    out.write_record([
        "experiment",
        "benchmark",
        "plugin",
        "params",
        "target",
        "kind",
        "gpu_model",
        "hypervisor",
        "vcpus",
        "repetition",
        "job",
        "metric",
        "unit",
        "value",
        "simulated",
    ])
    .map_err(write_error)?;
    for figure in &view.figures {
        let benchmark = view
            .benchmarks
            .iter()
            .find(|b| b.position == figure.benchmark);
        for cell in &figure.cells {
            let Some(target) = view.target(cell.target) else {
                continue;
            };
            for sample in &cell.samples {
                out.write_record([
                    view.summary.id.to_string(),
                    figure.benchmark_label.clone(),
                    benchmark.map(|b| b.plugin.clone()).unwrap_or_default(),
                    benchmark
                        .map(|b| {
                            b.params
                                .iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .unwrap_or_default(),
                    target.label.clone(),
                    target.kind.clone(),
                    target.gpu_model.clone().unwrap_or_default(),
                    target.hypervisor.clone().unwrap_or_default(),
                    target.vcpus.map(|v| v.to_string()).unwrap_or_default(),
                    sample.repetition.to_string(),
                    sample.job.to_string(),
                    figure.metric.clone(),
                    figure.unit.clone(),
                    sample.value.to_string(),
                    view.summary.simulated.to_string(),
                ])
                .map_err(write_error)?;
            }
        }
    }
    let bytes = out
        .into_inner()
        .map_err(|e| ExperimentError::Conflict(format!("writing CSV failed: {e}")))?;
    Ok(String::from_utf8(bytes).expect("CSV of UTF-8 text is UTF-8"))
}

/// The link to chart `name` of experiment `id`, drawing `figures`.
pub(super) fn chart_link(
    id: i64,
    name: &str,
    title: &str,
    section: &str,
    figures: Vec<(i64, String)>,
) -> ChartLink {
    ChartLink {
        name: name.to_string(),
        title: title.to_string(),
        section: section.to_string(),
        url: format!("/api/v1/experiments/{id}/charts/{name}.svg"),
        figures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use passage_app::plugins::MetricView;

    fn result(metrics: &[(&str, f64)]) -> JobResult {
        JobResult {
            simulated: true,
            devices: Vec::new(),
            metrics: metrics
                .iter()
                .map(|(n, v)| MetricView {
                    name: n.to_string(),
                    value: *v,
                    unit: "GB/s".into(),
                })
                .collect(),
            logs: Vec::new(),
            wall_s: 2.0,
            user_s: 1.5,
            system_s: 0.25,
            leftovers: String::new(),
        }
    }

    #[test]
    fn a_job_gives_one_sample_per_figure_and_its_three_times() {
        let figures = job_figures(&result(&[
            ("H2D bandwidth", 10.0),
            ("H2D bandwidth min", 9.0),
            ("H2D bandwidth max", 11.0),
            ("D2H bandwidth", 3.0),
            ("D2H bandwidth", 5.0),
            ("D2H bandwidth", 4.0),
            ("verification", 1.0),
        ]));
        let names: Vec<(&str, f64)> = figures.iter().map(|f| (f.0.as_str(), f.2)).collect();
        assert_eq!(
            names,
            [
                ("H2D bandwidth", 10.0),
                ("D2H bandwidth", 4.0),
                ("real time", 2.0),
                ("user time", 1.5),
                ("system time", 0.25)
            ]
        );
    }

    #[test]
    fn seeds_are_stable_and_differ_by_part() {
        assert_eq!(seed(&["1", "a"]), seed(&["1", "a"]));
        assert_ne!(seed(&["1", "a"]), seed(&["1a", ""]));
    }
}
