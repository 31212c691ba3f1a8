//! The charts of an experiment, drawn on the server as SVG (by `passage-study`, on plotters'
//! SVG backend) so that pages, downloads and printed reports show the same picture without
//! JavaScript. Each chart has a stable name under `/api/v1/experiments/{id}/charts/`.
//!
//! The study's figures: the real, user and system time of each benchmark on every target, one
//! chart per benchmark as the study drew them (its Figures 4-1 to 4-15), the bandwidth of host-to-device, device-to-host and
//! device-to-device copies (4-16 to 4-18), a benchmark across sizes (4-19 to 4-24), and the
//! overhead of each VM against native, also by vCPU count.

use std::collections::BTreeMap;

use passage_app::experiments::{ChartLink, ExperimentView, Figure};
use passage_study::charts::{self as draw, GroupedBars, Line, Lines, Point, Series};
use passage_study::stats;

use super::results::{TIMES, chart_link, is_setting};

/// A chart before it is drawn.
enum Spec {
    Bars(GroupedBars),
    Lines(Lines),
}

/// A name usable in a URL.
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// The figures a chart draws, as its link names them.
fn keys<'a>(figures: impl IntoIterator<Item = &'a Figure>) -> Vec<(i64, String)> {
    figures
        .into_iter()
        .map(|f| (f.benchmark, f.metric.clone()))
        .collect()
}

fn point(median: f64, low: f64, high: f64) -> Point {
    Point {
        value: median,
        low,
        high,
    }
}

/// Bars of one metric per benchmark (categories), one series per target.
fn bars_of(
    view: &ExperimentView,
    title: String,
    figures: &[&Figure],
    categories: Vec<String>,
) -> Option<GroupedBars> {
    let unit = figures.first()?.unit.clone();
    let series: Vec<Series> = view
        .targets
        .iter()
        .map(|t| Series {
            name: t.label.clone(),
            values: figures
                .iter()
                .map(|f| {
                    f.cells
                        .iter()
                        .find(|c| c.target == t.position)
                        .map(|c| point(c.median, c.min, c.max))
                })
                .collect(),
        })
        .filter(|s| s.values.iter().any(Option::is_some))
        .collect();
    if series.is_empty() {
        return None;
    }
    Some(GroupedBars {
        title,
        y_label: unit_label(&figures[0].metric, &unit),
        categories,
        series,
    })
}

fn unit_label(metric: &str, unit: &str) -> String {
    if unit.is_empty() {
        metric.to_string()
    } else {
        format!("{metric} ({unit})")
    }
}

/// Every chart of the experiment, named.
fn specs(view: &ExperimentView) -> Vec<(ChartLink, Spec)> {
    let id = view.summary.id;
    let mark = if view.summary.simulated {
        " (simulated GPU)"
    } else {
        ""
    };
    let mut out = Vec::new();
    // The study's times: one chart per benchmark, real, user and system time on every target.
    for b in &view.benchmarks {
        let figures: Vec<&Figure> = TIMES
            .iter()
            .filter_map(|t| {
                view.figures
                    .iter()
                    .find(|f| f.benchmark == b.position && f.metric == *t)
            })
            .collect();
        let categories = figures
            .iter()
            .map(|f| f.metric.trim_end_matches(" time").to_string())
            .collect();
        let title = format!("{}: real, user and system time{mark}", b.label);
        if let Some(mut bars) = bars_of(view, title.clone(), &figures, categories) {
            bars.y_label = "time (s)".into();
            let name = format!("times-{}", b.position);
            let link = chart_link(id, &name, &title, "times", keys(figures.iter().copied()));
            out.push((link, Spec::Bars(bars)));
        }
    }
    // Bandwidth by direction, per benchmark that measures it.
    for b in &view.benchmarks {
        let figures: Vec<&Figure> = ["H2D", "D2H", "D2D"]
            .iter()
            .filter_map(|d| {
                view.figures
                    .iter()
                    .find(|f| f.benchmark == b.position && f.metric == format!("{d} bandwidth"))
            })
            .collect();
        if figures.is_empty() {
            continue;
        }
        let categories = figures
            .iter()
            .map(|f| f.metric.trim_end_matches(" bandwidth").to_string())
            .collect();
        let title = format!("{}: bandwidth{mark}", b.label);
        if let Some(bars) = bars_of(view, title.clone(), &figures, categories) {
            let name = format!("bandwidth-{}", b.position);
            let link = chart_link(
                id,
                &name,
                &title,
                "bandwidth",
                keys(figures.iter().copied()),
            );
            out.push((link, Spec::Bars(bars)));
        }
    }
    // One plugin across sizes: benchmarks of the same plugin whose parameters differ in one
    // numeric value, drawn as real time over that value.
    let mut by_plugin: BTreeMap<&str, Vec<&passage_app::experiments::BenchmarkView>> =
        BTreeMap::new();
    for b in &view.benchmarks {
        by_plugin.entry(&b.plugin).or_default().push(b);
    }
    for (plugin, runs) in by_plugin {
        if runs.len() < 2 {
            continue;
        }
        let Some(param) = runs[0].params.iter().map(|(k, _)| k.clone()).find(|k| {
            let values: Vec<Option<f64>> = runs
                .iter()
                .map(|r| {
                    r.params
                        .iter()
                        .find(|(n, _)| n == k)
                        .and_then(|(_, v)| v.parse().ok())
                })
                .collect();
            values.iter().all(|v| v.is_some_and(|v| v > 0.0))
                && values.windows(2).any(|w| w[0] != w[1])
        }) else {
            continue;
        };
        let x_of = |b: i64| {
            runs.iter()
                .find(|r| r.position == b)
                .and_then(|r| r.params.iter().find(|(n, _)| *n == param))
                .and_then(|(_, v)| v.parse::<f64>().ok())
        };
        let lines: Vec<Line> = view
            .targets
            .iter()
            .map(|t| Line {
                name: t.label.clone(),
                points: view
                    .figures
                    .iter()
                    .filter(|f| f.metric == "real time")
                    .filter_map(|f| {
                        let x = x_of(f.benchmark)?;
                        let c = f.cells.iter().find(|c| c.target == t.position)?;
                        Some((x, point(c.median, c.min, c.max)))
                    })
                    .collect(),
            })
            .filter(|l| l.points.len() >= 2)
            .collect();
        if lines.is_empty() {
            continue;
        }
        let title = format!("{plugin}: real time by {param}{mark}");
        let drawn = keys(
            view.figures
                .iter()
                .filter(|f| f.metric == "real time" && x_of(f.benchmark).is_some()),
        );
        out.push((
            chart_link(
                id,
                &format!("sizes-{}", slug(plugin)),
                &title,
                "sizes",
                drawn,
            ),
            Spec::Lines(Lines {
                title,
                x_label: param.clone(),
                y_label: "real time (s)".into(),
                log_x: true,
                lines,
            }),
        ));
    }
    // The overhead of each VM against native, relative, with its interval.
    let vm_targets: Vec<_> = view
        .targets
        .iter()
        .filter(|t| view.overheads.iter().any(|o| o.target == t.position))
        .collect();
    for time in ["real time"] {
        let benchmarks: Vec<(i64, String)> = view
            .figures
            .iter()
            .filter(|f| f.metric == time)
            .map(|f| (f.benchmark, f.benchmark_label.clone()))
            .collect();
        let series: Vec<Series> = vm_targets
            .iter()
            .map(|t| Series {
                name: t.label.clone(),
                values: benchmarks
                    .iter()
                    .map(|(b, _)| {
                        let o = view.overheads.iter().find(|o| {
                            o.benchmark == *b && o.metric == time && o.target == t.position
                        })?;
                        let r = o.relative? * 100.0;
                        Some(point(
                            r,
                            o.relative_low.map_or(r, |l| l * 100.0),
                            o.relative_high.map_or(r, |h| h * 100.0),
                        ))
                    })
                    .collect(),
            })
            .filter(|s| s.values.iter().any(Option::is_some))
            .collect();
        if series.is_empty() {
            continue;
        }
        let title = format!(
            "{}: {time} overhead against native{mark}",
            view.summary.name
        );
        let drawn = benchmarks
            .iter()
            .map(|(b, _)| (*b, time.to_string()))
            .collect();
        out.push((
            chart_link(
                id,
                &format!("overhead-{}", slug(time)),
                &title,
                "overhead",
                drawn,
            ),
            Spec::Bars(GroupedBars {
                title,
                y_label: "overhead (% of native, 95% interval)".into(),
                categories: benchmarks.into_iter().map(|(_, l)| l).collect(),
                series,
            }),
        ));
    }
    // By vCPU count: per hypervisor, the median over benchmarks of the real-time overhead,
    // with the range over benchmarks.
    let mut by_hypervisor: BTreeMap<String, BTreeMap<i64, Vec<f64>>> = BTreeMap::new();
    for o in view.overheads.iter().filter(|o| o.metric == "real time") {
        let Some(t) = view.target(o.target) else {
            continue;
        };
        if let (Some(h), Some(v), Some(r)) = (&t.hypervisor, t.vcpus, o.relative) {
            by_hypervisor
                .entry(h.to_ascii_uppercase())
                .or_default()
                .entry(v)
                .or_default()
                .push(r * 100.0);
        }
    }
    let lines: Vec<Line> = by_hypervisor
        .into_iter()
        .map(|(h, by_vcpus)| Line {
            name: h,
            points: by_vcpus
                .into_iter()
                .filter_map(|(v, rs)| {
                    let s = stats::summarize(&rs)?;
                    Some((v as f64, point(s.median, s.min, s.max)))
                })
                .collect(),
        })
        .filter(|l| l.points.len() >= 2)
        .collect();
    if !lines.is_empty() {
        let title = format!(
            "{}: real-time overhead by vCPU count{mark}",
            view.summary.name
        );
        out.push((
            chart_link(
                id,
                "vcpus",
                &title,
                "overhead",
                keys(view.figures.iter().filter(|f| f.metric == "real time")),
            ),
            Spec::Lines(Lines {
                title,
                x_label: "vCPUs".into(),
                y_label: "overhead (% of native; median and range over benchmarks)".into(),
                log_x: true,
                lines,
            }),
        ));
    }
    // Every other figure on its own, but a run's settings.
    for f in view
        .figures
        .iter()
        .filter(|f| !TIMES.contains(&f.metric.as_str()) && !is_setting(f))
    {
        let title = format!("{}: {}{mark}", f.benchmark_label, f.metric);
        if let Some(bars) = bars_of(view, title.clone(), &[f], vec![f.metric.clone()]) {
            let name = format!("figure-{}-{}", f.benchmark, slug(&f.metric));
            let link = chart_link(id, &name, &title, "figures", keys([f]));
            out.push((link, Spec::Bars(bars)));
        }
    }
    out
}

/// The links to every chart of the experiment.
pub fn links(view: &ExperimentView) -> Vec<ChartLink> {
    specs(view).into_iter().map(|(link, _)| link).collect()
}

/// The chart `name` (without `.svg`) as an SVG document; None when the experiment has no such
/// chart (yet).
pub fn chart(view: &ExperimentView, name: &str) -> Option<Result<String, draw::ChartError>> {
    let (_, spec) = specs(view)
        .into_iter()
        .find(|(link, _)| link.name == name)?;
    Some(match spec {
        Spec::Bars(bars) => draw::grouped_bars(&bars),
        Spec::Lines(lines) => draw::lines(&lines),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use passage_app::experiments::{BenchmarkView, Cell, ExperimentSummary, Sample, TargetView};

    fn cell(target: i64, values: &[f64]) -> Cell {
        let s = stats::summarize(values).unwrap();
        Cell {
            target,
            n: s.n as i64,
            median: s.median,
            min: s.min,
            max: s.max,
            q1: s.q1,
            q3: s.q3,
            samples: values
                .iter()
                .enumerate()
                .map(|(i, v)| Sample {
                    job: i as i64,
                    repetition: i as i64 + 1,
                    value: *v,
                })
                .collect(),
        }
    }

    fn target(position: i64, label: &str) -> TargetView {
        TargetView {
            position,
            label: label.into(),
            kind: if position == 0 { "native" } else { "variant" }.into(),
            agent_id: None,
            request_id: None,
            vm_id: None,
            gpu_model: None,
            vcpus: (position > 0).then_some(position),
            hypervisor: (position > 0).then(|| "kvm".into()),
            status: "done".into(),
        }
    }

    fn view() -> ExperimentView {
        let benchmark = |position: i64, elements: &str| BenchmarkView {
            position,
            label: format!("VecAdd {elements}"),
            plugin: "vector-add".into(),
            plugin_version: "1.0.0".into(),
            params: vec![("elements".into(), elements.into())],
        };
        let figure = |b: i64, scale: f64| Figure {
            benchmark: b,
            benchmark_label: format!("b{b}"),
            metric: "real time".into(),
            unit: "s".into(),
            cells: vec![
                cell(0, &[1.0 * scale, 1.1 * scale, 0.9 * scale]),
                cell(1, &[1.5 * scale, 1.6 * scale, 1.4 * scale]),
            ],
        };
        ExperimentView {
            summary: ExperimentSummary {
                id: 7,
                name: "drawn".into(),
                owner: "ada".into(),
                state: "succeeded".into(),
                preset: None,
                repetitions: 3,
                repetition: 3,
                jobs_total: 12,
                jobs_done: 12,
                jobs_failed: 0,
                note: None,
                created_at: String::new(),
                finished_at: None,
                simulated: false,
            },
            benchmarks: vec![benchmark(0, "1024"), benchmark(1, "4096")],
            targets: vec![target(0, "native gpu-01"), target(1, "KVM 1 vCPU")],
            figures: vec![figure(0, 1.0), figure(1, 4.0)],
            overheads: Vec::new(),
            charts: Vec::new(),
        }
    }

    #[test]
    fn a_time_chart_has_a_bar_per_target_and_the_sizes_a_line_per_target() {
        let view = view();
        let names: Vec<String> = links(&view).into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["times-0", "times-1", "sizes-vector-add"]);
        for name in &names {
            let svg = chart(&view, name).unwrap().unwrap();
            assert!(svg.contains("native gpu-01"), "{name}: {svg}");
            assert!(svg.contains("KVM 1 vCPU"), "{name}");
        }
        assert!(chart(&view, "nothing").is_none());
    }

    #[test]
    fn slugs_are_url_safe() {
        assert_eq!(slug("H2D bandwidth"), "h2d-bandwidth");
        assert_eq!(slug("real time"), "real-time");
        assert_eq!(slug("  Gflop/s (x) "), "gflop-s-x");
    }
}
