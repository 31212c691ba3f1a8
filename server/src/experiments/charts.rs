//! The charts of an experiment, drawn on the server as SVG (by `passage-study`, on plotters'
//! SVG backend) so that pages, downloads and printed reports show the same picture without
//! JavaScript. Each chart has a stable name under `/api/v1/experiments/{id}/charts/`.
//!
//! The study's figures: the real, user and system time of every benchmark on every target
//! (its Figures 4-1 to 4-15), the bandwidth of host-to-device, device-to-host and
//! device-to-device copies (4-16 to 4-18), a benchmark across sizes (4-19 to 4-24), and the
//! overhead of each VM against native, also by vCPU count.

use std::collections::BTreeMap;

use passage_app::experiments::{ChartLink, ExperimentView, Figure};
use passage_study::charts::{self as draw, GroupedBars, Line, Lines, Point, Series};
use passage_study::stats;

use super::results::{TIMES, chart_link};

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
    // The study's times: every benchmark, every target.
    for time in TIMES {
        let figures: Vec<&Figure> = view.figures.iter().filter(|f| f.metric == time).collect();
        let categories = figures.iter().map(|f| f.benchmark_label.clone()).collect();
        let title = format!("{}: {time} per benchmark{mark}", view.summary.name);
        if let Some(bars) = bars_of(view, title.clone(), &figures, categories) {
            let link = chart_link(
                id,
                &slug(time),
                &title,
                "times",
                keys(figures.iter().copied()),
            );
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
    // Every other figure on its own.
    for f in view
        .figures
        .iter()
        .filter(|f| !TIMES.contains(&f.metric.as_str()))
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

    #[test]
    fn slugs_are_url_safe() {
        assert_eq!(slug("H2D bandwidth"), "h2d-bandwidth");
        assert_eq!(slug("real time"), "real-time");
        assert_eq!(slug("  Gflop/s (x) "), "gflop-s-x");
    }
}
