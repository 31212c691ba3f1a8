//! SVG charts of experiment results.
//!
//! The portal's experiment pages are rendered on the server without JavaScript, offered for
//! download and printed, so each chart is one standalone SVG document: a `viewBox` so it scales,
//! a `<title>`, `role="img"` and an `aria-label` for screen readers, text as SVG `<text>` (no
//! fonts are needed to make it), and the Okabe–Ito palette, which people with the common forms
//! of colour blindness can tell apart. Two shapes cover what an experiment shows: grouped bars
//! (benchmarks × targets, e.g. medians with min–max whiskers, or overheads with their intervals)
//! and lines over a numeric x (e.g. bandwidth against transfer size, on a log2 axis).

use std::ops::Range;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// A value with its spread (e.g. median with min–max, or a difference with its interval).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The value itself: a bar's height or a line's point.
    pub value: f64,
    /// The whisker's low end.
    pub low: f64,
    /// The whisker's high end.
    pub high: f64,
}

/// One series (a target, e.g. "KVM 2 vCPU") of a grouped bar chart: one value per category,
/// None where it has none.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The name shown in the legend.
    pub name: String,
    /// One entry per category of the chart, in the same order.
    pub values: Vec<Option<Point>>,
}

/// Categories (e.g. benchmarks) on the x axis, one bar per series in each, with whiskers
/// low..high.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupedBars {
    /// The chart's title, drawn above it and kept as the SVG's `<title>`.
    pub title: String,
    /// The y axis' label, with unit, e.g. "time (s)".
    pub y_label: String,
    /// The categories, left to right.
    pub categories: Vec<String>,
    /// The series, in legend and bar order.
    pub series: Vec<Series>,
}

/// One line of a line chart: (x, point) pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// The name shown in the legend.
    pub name: String,
    /// The points, in any order (they are joined in order of x).
    pub points: Vec<(f64, Point)>,
}

/// Lines over a numeric x (e.g. vector size, vCPU count), optionally log2 x axis, whiskers at
/// each point.
#[derive(Debug, Clone, PartialEq)]
pub struct Lines {
    /// The chart's title, drawn above it and kept as the SVG's `<title>`.
    pub title: String,
    /// The x axis' label, with unit.
    pub x_label: String,
    /// The y axis' label, with unit.
    pub y_label: String,
    /// Whether the x axis is logarithmic (base 2); every x must then be greater than 0.
    pub log_x: bool,
    /// The lines, in legend order.
    pub lines: Vec<Line>,
}

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// There is nothing to draw.
    #[error("nothing to draw: {0}")]
    Empty(&'static str),
    /// A value, whisker end or x is NaN or infinite.
    #[error("series \"{series}\", {at}: {what} is {value}, not a finite number")]
    NonFinite {
        /// The series or line's name.
        series: String,
        /// Where in it: the category (`category "matrixMul"`) or the point (`point 3`).
        at: String,
        /// Which number: "the value", "the whisker's low end", "the whisker's high end" or "x".
        what: &'static str,
        /// The number itself.
        value: f64,
    },
    /// A series has not exactly one value per category.
    #[error("series \"{series}\" has {values} values for {categories} categories")]
    LengthMismatch {
        /// The series' name.
        series: String,
        /// How many values it has.
        values: usize,
        /// How many categories the chart has.
        categories: usize,
    },
    /// A logarithmic x axis cannot show an x of zero or below.
    #[error("line \"{line}\" has x = {x}, but a logarithmic x axis needs every x above 0")]
    NonPositiveX {
        /// The line's name.
        line: String,
        /// The offending x.
        x: f64,
    },
    /// The values are finite but too far apart to place on one axis.
    #[error("the values span too wide a range to draw")]
    Range,
    /// The drawing library failed.
    #[error("drawing the chart failed: {0}")]
    Drawing(String),
}

/// The colours of the series or lines, in order (Okabe–Ito; repeated after the eighth), as
/// CSS hex colours so that a page can match them (e.g. in a table beside the chart).
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000000",
];

const PALETTE_RGB: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xB2), // blue
    RGBColor(0xE6, 0x9F, 0x00), // orange
    RGBColor(0x00, 0x9E, 0x73), // bluish green
    RGBColor(0xD5, 0x5E, 0x00), // vermillion
    RGBColor(0x56, 0xB4, 0xE9), // sky blue
    RGBColor(0xCC, 0x79, 0xA7), // reddish purple
    RGBColor(0xF0, 0xE4, 0x42), // yellow
    RGBColor(0x00, 0x00, 0x00), // black
];

/// The colour of the `index`th series or line.
fn colour(index: usize) -> RGBColor {
    PALETTE_RGB[index % PALETTE_RGB.len()]
}

/// The line at zero (its colour is used for nothing else that is horizontal).
pub(crate) const ZERO_LINE: RGBColor = RGBColor(0x00, 0x00, 0x00);
const TEXT: RGBColor = RGBColor(0x1A, 0x1A, 0x1A);
const AXIS: RGBColor = RGBColor(0x40, 0x40, 0x40);
const GRID: RGBColor = RGBColor(0xDD, 0xDD, 0xDD);
const WHISKER: RGBColor = RGBColor(0x26, 0x26, 0x26);

const WIDTH: u32 = 960;
const BASE_HEIGHT: u32 = 480;
const MARGIN: i32 = 16;
const TITLE_PX: f64 = 18.0;
const TITLE_HEIGHT: i32 = 40;
const LABEL_PX: f64 = 12.5;
const AXIS_PX: f64 = 14.0;
const LEGEND_ROW: i32 = 22;
const SWATCH: i32 = 24;
/// Plot area height that bars keep however tall their category labels make the chart.
const PLOT_HEIGHT: i32 = 330;
/// Category labels longer than this are cut short (with "…") so that the chart stays readable.
const MAX_LABEL_CHARS: usize = 40;
/// Legend names longer than this are cut short too.
const MAX_LEGEND_CHARS: usize = 60;
/// Tick labels aimed at on each axis.
const TICKS: usize = 8;

/// The chart as a standalone SVG document (UTF-8 text).
pub fn grouped_bars(chart: &GroupedBars) -> Result<String, ChartError> {
    if chart.categories.is_empty() {
        return Err(ChartError::Empty("the chart has no categories"));
    }
    if chart.series.is_empty() {
        return Err(ChartError::Empty("the chart has no series"));
    }
    for series in &chart.series {
        if series.values.len() != chart.categories.len() {
            return Err(ChartError::LengthMismatch {
                series: series.name.clone(),
                values: series.values.len(),
                categories: chart.categories.len(),
            });
        }
        for (category, point) in chart.categories.iter().zip(&series.values) {
            if let Some(point) = point {
                check_point(point, &series.name, || format!("category \"{category}\""))?;
            }
        }
    }
    let points = || chart.series.iter().flat_map(|s| s.values.iter().flatten());
    if points().next().is_none() {
        return Err(ChartError::Empty("no series has a value"));
    }
    let (y_lo, y_hi) = value_range(points())?;
    let y_axis = Axis::linear(y_lo, y_hi);

    let names: Vec<&str> = chart.series.iter().map(|s| s.name.as_str()).collect();
    let legend = Legend::new(&names);
    let labels: Vec<String> = chart
        .categories
        .iter()
        .map(|c| shorten(c, MAX_LABEL_CHARS))
        .collect();
    let y_area = y_axis.label_area();
    let slot = (WIDTH as i32 - 2 * MARGIN - y_area) / labels.len() as i32;
    let widest = labels
        .iter()
        .map(|l| text_width(l, LABEL_PX))
        .max()
        .unwrap_or(0);
    let rotate = widest + 8 > slot;
    let x_area = if rotate {
        widest + 20
    } else {
        (LABEL_PX * 2.0) as i32 + 8
    };
    let top = TITLE_HEIGHT + legend.height();
    let height = (top + 8 + PLOT_HEIGHT + x_area + MARGIN).max(BASE_HEIGHT as i32) as u32;

    let n = labels.len();
    let description = format!(
        "Grouped bar chart of {} for {}: {}. Series: {}. Whiskers show each value's spread.",
        chart.y_label,
        plural(n, "category", "categories"),
        chart.categories.join(", "),
        names.join(", "),
    );
    render(&chart.title, &description, height, |root| {
        draw_title(root, &chart.title)?;
        legend.draw(root, TITLE_HEIGHT, false)?;
        let (_, area) = root.split_vertically(top);
        let x_coord = Axis::new(0.0, n as f64, Vec::new(), Labels::Decimals(0));
        let mut plot = ChartBuilder::on(&area)
            .margin_top(8)
            .margin_bottom(MARGIN)
            .margin_left(MARGIN)
            .margin_right(MARGIN)
            .x_label_area_size(x_area)
            .y_label_area_size(y_area)
            .build_cartesian_2d(x_coord, y_axis.clone())
            .map_err(drawing)?;
        plot.configure_mesh()
            .disable_x_mesh()
            .max_light_lines(0)
            .bold_line_style(GRID.stroke_width(1))
            .axis_style(AXIS.stroke_width(1))
            .label_style(font(LABEL_PX))
            .axis_desc_style(font(AXIS_PX))
            .y_desc(chart.y_label.as_str())
            .draw()
            .map_err(drawing)?;

        let group = 0.8;
        let slot = group / chart.series.len() as f64;
        let bar = slot * 0.9;
        for (s, series) in chart.series.iter().enumerate() {
            let fill = colour(s).filled();
            let bars = series.values.iter().enumerate().filter_map(|(c, p)| {
                let x0 = c as f64 + (1.0 - group) / 2.0 + s as f64 * slot + (slot - bar) / 2.0;
                p.map(|p| Rectangle::new([(x0, 0.0), (x0 + bar, p.value)], fill))
            });
            plot.draw_series(bars).map_err(drawing)?;
        }
        if y_lo < 0.0 {
            plot.draw_series(std::iter::once(PathElement::new(
                vec![(0.0, 0.0), (n as f64, 0.0)],
                ZERO_LINE.stroke_width(1),
            )))
            .map_err(drawing)?;
        }
        let whisker = WHISKER.stroke_width(1);
        let halo = WHITE.stroke_width(3);
        for (s, series) in chart.series.iter().enumerate() {
            for (c, point) in series.values.iter().enumerate() {
                let Some(point) = point else { continue };
                if point.low == point.high {
                    continue;
                }
                let centre = c as f64 + (1.0 - group) / 2.0 + s as f64 * slot + slot / 2.0;
                let cap = bar * 0.25;
                let whiskers = [
                    vec![(centre, point.low), (centre, point.high)],
                    vec![(centre - cap, point.low), (centre + cap, point.low)],
                    vec![(centre - cap, point.high), (centre + cap, point.high)],
                ];
                // A white halo keeps the whisker visible on a bar of any colour.
                plot.draw_series(whiskers.iter().map(|p| PathElement::new(p.clone(), halo)))
                    .map_err(drawing)?;
                plot.draw_series(whiskers.into_iter().map(|p| PathElement::new(p, whisker)))
                    .map_err(drawing)?;
            }
        }

        let label_style = font(LABEL_PX);
        let label_style = if rotate {
            label_style
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Right, VPos::Center))
        } else {
            label_style.pos(Pos::new(HPos::Center, VPos::Top))
        };
        for (c, label) in labels.iter().enumerate() {
            let (x, y) = plot.backend_coord(&(c as f64 + 0.5, y_lo));
            root.draw(&PathElement::new(
                vec![(x, y), (x, y + 5)],
                AXIS.stroke_width(1),
            ))
            .map_err(drawing)?;
            root.draw_text(label, &label_style, (x, y + 8))
                .map_err(drawing)?;
        }
        Ok(())
    })
}

/// The chart as a standalone SVG document (UTF-8 text).
pub fn lines(chart: &Lines) -> Result<String, ChartError> {
    if chart.lines.is_empty() {
        return Err(ChartError::Empty("the chart has no lines"));
    }
    if chart.lines.iter().all(|l| l.points.is_empty()) {
        return Err(ChartError::Empty("no line has a point"));
    }
    for line in &chart.lines {
        for (i, (x, point)) in line.points.iter().enumerate() {
            if !x.is_finite() {
                return Err(ChartError::NonFinite {
                    series: line.name.clone(),
                    at: format!("point {}", i + 1),
                    what: "x",
                    value: *x,
                });
            }
            if chart.log_x && *x <= 0.0 {
                return Err(ChartError::NonPositiveX {
                    line: line.name.clone(),
                    x: *x,
                });
            }
            check_point(point, &line.name, || format!("point {} (x = {x})", i + 1))?;
        }
    }
    let points = || {
        chart
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|(_, p)| p))
    };
    let (y_lo, y_hi) = value_range(points())?;
    let y_axis = Axis::linear(y_lo, y_hi);

    // On a log axis the chart is drawn in log2 space, and the ticks are labelled with 2^v.
    let to_x = |x: f64| if chart.log_x { x.log2() } else { x };
    let xs: Vec<f64> = chart
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|(x, _)| to_x(*x)))
        .collect();
    let x_min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let x_max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let x_axis = if chart.log_x {
        Axis::log2(x_min, x_max, &xs)
    } else {
        let pad = if x_min == x_max {
            (x_min.abs() * 0.5).max(1.0)
        } else {
            (x_max - x_min) * 0.05
        };
        if !(x_max - x_min + 2.0 * pad).is_finite() {
            return Err(ChartError::Range);
        }
        Axis::linear(x_min - pad, x_max + pad)
    };

    let names: Vec<&str> = chart.lines.iter().map(|l| l.name.as_str()).collect();
    let legend = Legend::new(&names);
    let top = TITLE_HEIGHT + legend.height();
    let height = BASE_HEIGHT + (legend.height() - Legend::new(&[]).height()).max(0) as u32;
    let y_area = y_axis.label_area();
    let description = format!(
        "Line chart of {} against {}{}. Lines: {}. Whiskers show each point's spread.",
        chart.y_label,
        chart.x_label,
        if chart.log_x {
            " (logarithmic x axis)"
        } else {
            ""
        },
        names.join(", "),
    );
    render(&chart.title, &description, height, |root| {
        draw_title(root, &chart.title)?;
        legend.draw(root, TITLE_HEIGHT, true)?;
        let (_, area) = root.split_vertically(top);
        let mut plot = ChartBuilder::on(&area)
            .margin_top(8)
            .margin_bottom(MARGIN)
            .margin_left(MARGIN)
            .margin_right(MARGIN * 2)
            .x_label_area_size((LABEL_PX + AXIS_PX) as i32 + 24)
            .y_label_area_size(y_area)
            .build_cartesian_2d(x_axis.clone(), y_axis.clone())
            .map_err(drawing)?;
        plot.configure_mesh()
            .max_light_lines(0)
            .bold_line_style(GRID.stroke_width(1))
            .axis_style(AXIS.stroke_width(1))
            .label_style(font(LABEL_PX))
            .axis_desc_style(font(AXIS_PX))
            .x_desc(chart.x_label.as_str())
            .y_desc(chart.y_label.as_str())
            .draw()
            .map_err(drawing)?;
        if y_lo < 0.0 {
            plot.draw_series(std::iter::once(PathElement::new(
                vec![(x_axis.lo, 0.0), (x_axis.hi, 0.0)],
                ZERO_LINE.stroke_width(1),
            )))
            .map_err(drawing)?;
        }
        for (l, line) in chart.lines.iter().enumerate() {
            let colour = colour(l);
            let mut points: Vec<(f64, Point)> =
                line.points.iter().map(|(x, p)| (to_x(*x), *p)).collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            if points.len() > 1 {
                let path: Vec<_> = points.iter().map(|(x, p)| (*x, p.value)).collect();
                plot.draw_series(std::iter::once(PathElement::new(
                    path,
                    colour.stroke_width(2),
                )))
                .map_err(drawing)?;
            }
            let whisker = colour.stroke_width(1);
            for (x, p) in &points {
                if p.low != p.high {
                    let caps = [p.low, p.high].map(|y| {
                        EmptyElement::at((*x, y)) + PathElement::new(vec![(-4, 0), (4, 0)], whisker)
                    });
                    plot.draw_series(caps).map_err(drawing)?;
                    plot.draw_series(std::iter::once(PathElement::new(
                        vec![(*x, p.low), (*x, p.high)],
                        whisker,
                    )))
                    .map_err(drawing)?;
                }
            }
            for (x, p) in &points {
                draw_marker(plot.plotting_area(), (*x, p.value), l, colour)?;
            }
        }
        Ok(())
    })
}

/// Fails on a non-finite value or whisker end of `point`, naming `series` and `at()`.
fn check_point(point: &Point, series: &str, at: impl Fn() -> String) -> Result<(), ChartError> {
    for (what, value) in [
        ("the value", point.value),
        ("the whisker's low end", point.low),
        ("the whisker's high end", point.high),
    ] {
        if !value.is_finite() {
            return Err(ChartError::NonFinite {
                series: series.to_owned(),
                at: at(),
                what,
                value,
            });
        }
    }
    Ok(())
}

/// The y range: from min(0, every low and value) to max(0, every high and value), widened by a
/// margin on each side that is not zero.
fn value_range<'a>(points: impl Iterator<Item = &'a Point>) -> Result<(f64, f64), ChartError> {
    let (mut lo, mut hi) = (0.0_f64, 0.0_f64);
    for p in points {
        lo = lo.min(p.value).min(p.low).min(p.high);
        hi = hi.max(p.value).max(p.low).max(p.high);
    }
    if lo == hi {
        hi = 1.0;
    }
    let margin = (hi - lo) * 0.05;
    if lo < 0.0 {
        lo -= margin;
    }
    if hi > 0.0 {
        hi += margin;
    }
    if (hi - lo).is_finite() {
        Ok((lo, hi))
    } else {
        Err(ChartError::Range)
    }
}

/// How an axis labels its ticks.
#[derive(Clone, Copy)]
enum Labels {
    /// With this many decimals.
    Decimals(usize),
    /// In scientific notation with this many decimals (for very small or large values).
    Scientific(usize),
    /// The axis is in log2 space: label v with 2^v, the real value.
    Exp2,
}

/// A numeric axis with its ticks chosen and labelled here rather than by plotters.
#[derive(Clone)]
struct Axis {
    inner: RangedCoordf64,
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    labels: Labels,
}

impl Axis {
    fn new(lo: f64, hi: f64, ticks: Vec<f64>, labels: Labels) -> Self {
        Axis {
            inner: (lo..hi).into(),
            lo,
            hi,
            ticks,
            labels,
        }
    }

    /// A linear axis from `lo` to `hi` with "nice" ticks, 1, 2 or 5 × 10^k apart.
    fn linear(lo: f64, hi: f64) -> Self {
        let raw = (hi - lo) / TICKS as f64;
        let magnitude = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * magnitude)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * magnitude);
        let first = (lo / step).ceil();
        let ticks = (0..=4 * TICKS)
            .map(|k| (first + k as f64) * step)
            .take_while(|t| *t <= hi)
            .collect();
        let step_exponent = step.log10().floor();
        let largest = lo.abs().max(hi.abs());
        let labels = if step_exponent < -9.0 || largest >= 1e15 {
            let digits = largest.log10().floor() - step_exponent;
            Labels::Scientific(digits.clamp(0.0, 15.0) as usize)
        } else {
            Labels::Decimals((-step_exponent).max(0.0) as usize)
        };
        Axis::new(lo, hi, ticks, labels)
    }

    /// A log2 axis; `min`, `max` and `xs` are log2 of the real values. Ticks are at powers of
    /// two (every one, or every few when there are many), or at the values themselves when no
    /// power of two is in range.
    fn log2(min: f64, max: f64, xs: &[f64]) -> Self {
        let pad = if min == max { 0.5 } else { (max - min) * 0.05 };
        let (lo, hi) = (min - pad, max + pad);
        // Powers of two among the values' range, else within the padded range.
        let (mut first, mut last) = (min.ceil() as i64, max.floor() as i64);
        if first > last {
            (first, last) = (lo.ceil() as i64, hi.floor() as i64);
        }
        let ticks: Vec<f64> = if first <= last {
            // Every power, or every few: multiples of `every`, so that 1 = 2^0 is one.
            let every = (last - first) / (TICKS as i64 + 2) + 1;
            (first..=last)
                .filter(|e| e.rem_euclid(every) == 0)
                .map(|e| e as f64)
                .collect()
        } else {
            let mut values = xs.to_vec();
            values.sort_by(f64::total_cmp);
            values.dedup();
            let every = values.len().div_ceil(TICKS + 2).max(1);
            values.into_iter().step_by(every).collect()
        };
        Axis::new(lo, hi, ticks, Labels::Exp2)
    }

    fn label(&self, v: f64) -> String {
        match self.labels {
            Labels::Decimals(decimals) => {
                let text = format!("{v:.decimals$}");
                match text.strip_prefix('-') {
                    Some(digits) if digits.chars().all(|c| c == '0' || c == '.') => {
                        digits.to_owned()
                    }
                    _ => text,
                }
            }
            Labels::Scientific(_) if v == 0.0 => "0".to_owned(),
            Labels::Scientific(decimals) => format!("{v:.decimals$e}"),
            Labels::Exp2 if v == v.round() && v.abs() < 1000.0 => {
                format!("{}", 2f64.powi(v as i32))
            }
            Labels::Exp2 => significant(v.exp2()),
        }
    }

    /// The width of a y label area: the widest tick label, the axis label beside it and the
    /// gaps between them.
    fn label_area(&self) -> i32 {
        let widest = self
            .ticks
            .iter()
            .map(|t| text_width(&self.label(*t), LABEL_PX))
            .max()
            .unwrap_or(0);
        widest + (AXIS_PX * 1.6) as i32 + 20
    }
}

impl Ranged for Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for Axis {
    fn format_ext(&self, value: &f64) -> String {
        self.label(*value)
    }
}

/// `x` rounded to six significant digits, written without an exponent.
fn significant(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return "0".to_owned();
    }
    let digits = (5 - x.abs().log10().floor() as i32).clamp(0, 15) as usize;
    let text = format!("{x:.digits$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// The legend: a swatch and the name of every series, in rows across the chart's width.
struct Legend {
    /// Per row: (name, series index, x offset of the entry).
    rows: Vec<Vec<(String, usize, i32)>>,
}

impl Legend {
    fn new(names: &[&str]) -> Self {
        let available = WIDTH as i32 - 2 * MARGIN;
        let mut rows: Vec<Vec<(String, usize, i32)>> = vec![Vec::new()];
        let mut x = 0;
        for (index, name) in names.iter().enumerate() {
            let name = shorten(name, MAX_LEGEND_CHARS);
            let width = SWATCH + 6 + text_width(&name, LABEL_PX) + 20;
            if x > 0 && x + width > available {
                rows.push(Vec::new());
                x = 0;
            }
            if let Some(row) = rows.last_mut() {
                row.push((name, index, x));
            }
            x += width;
        }
        Legend { rows }
    }

    fn height(&self) -> i32 {
        self.rows.len() as i32 * LEGEND_ROW + 4
    }

    /// Draws the legend with its top at `top`: filled squares for bars, a line with the
    /// marker for lines.
    fn draw(&self, root: &Area<'_>, top: i32, lines: bool) -> Result<(), ChartError> {
        let style = font(LABEL_PX).pos(Pos::new(HPos::Left, VPos::Center));
        for (r, row) in self.rows.iter().enumerate() {
            let y = top + r as i32 * LEGEND_ROW + LEGEND_ROW / 2;
            for (name, index, offset) in row {
                let x = MARGIN + offset;
                let colour = colour(*index);
                if lines {
                    root.draw(&PathElement::new(
                        vec![(x, y), (x + SWATCH, y)],
                        colour.stroke_width(2),
                    ))
                    .map_err(drawing)?;
                    draw_marker(root, (x + SWATCH / 2, y), *index, colour)?;
                } else {
                    root.draw(&Rectangle::new(
                        [(x + 5, y - 7), (x + SWATCH - 5, y + 7)],
                        colour.filled(),
                    ))
                    .map_err(drawing)?;
                }
                root.draw_text(name, &style, (x + SWATCH + 6, y))
                    .map_err(drawing)?;
            }
        }
        Ok(())
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Draws the `index`th line's marker at `at`: a circle, a square or a triangle in turn, so
/// that lines differ by more than colour.
fn draw_marker<DB: DrawingBackend, CT: CoordTranslate>(
    area: &DrawingArea<DB, CT>,
    at: CT::From,
    index: usize,
    colour: RGBColor,
) -> Result<(), ChartError>
where
    CT::From: Clone,
{
    let style = colour.filled();
    match index % 3 {
        0 => area.draw(&(EmptyElement::at(at) + Circle::new((0, 0), 4, style))),
        1 => area.draw(&(EmptyElement::at(at) + Rectangle::new([(-4, -4), (4, 4)], style))),
        _ => area.draw(&(EmptyElement::at(at) + TriangleMarker::new((0, 0), 5, style))),
    }
    .map_err(drawing)
}

/// Draws onto a white canvas of WIDTH × `height` and returns the finished SVG document.
fn render(
    title: &str,
    description: &str,
    height: u32,
    draw: impl FnOnce(&Area<'_>) -> Result<(), ChartError>,
) -> Result<String, ChartError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        draw(&root)?;
        root.present().map_err(drawing)?;
    }
    finish(svg, title, description)
}

/// Adds what plotters leaves out: `role="img"`, an `aria-label`, `<title>` and `<desc>`.
fn finish(svg: String, title: &str, description: &str) -> Result<String, ChartError> {
    let end = svg
        .find("<svg")
        .and_then(|start| svg[start..].find('>').map(|end| start + end))
        .ok_or_else(|| ChartError::Drawing("the SVG has no root element".to_owned()))?;
    let (open, rest) = svg.split_at(end);
    let open = open.trim_end_matches('/');
    Ok(format!(
        "{open} role=\"img\" aria-label=\"{label}\">\n<title>{title}</title>\n<desc>{desc}</desc>{rest}",
        label = escape(title),
        title = escape(title),
        desc = escape(description),
        rest = &rest[1..],
    ))
}

/// `text` with XML's special characters escaped, for attributes and element content alike.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            other => out.push(other),
        }
    }
    out
}

/// Draws the chart's title, bold and centred, at the top.
fn draw_title(root: &Area<'_>, title: &str) -> Result<(), ChartError> {
    let style = TextStyle::from(("sans-serif", TITLE_PX * 1.24, FontStyle::Bold).into_font())
        .color(&TEXT)
        .pos(Pos::new(HPos::Center, VPos::Center));
    root.draw_text(title, &style, (WIDTH as i32 / 2, TITLE_HEIGHT / 2 + 2))
        .map_err(drawing)
}

/// Text of `px` pixels (plotters' SVG backend writes sizes divided by 1.24).
fn font(px: f64) -> TextStyle<'static> {
    TextStyle::from(("sans-serif", px * 1.24).into_font()).color(&TEXT)
}

/// An estimate of how wide `text` is at `px` pixels (an average sans-serif character).
fn text_width(text: &str, px: f64) -> i32 {
    (text.chars().count() as f64 * px * 0.56).ceil() as i32
}

/// `text` cut to at most `max` characters, the last of them "…".
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(max - 1).collect();
        short.push('…');
        short
    }
}

/// `n` with the word for one or for many.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A plotters failure as a [`ChartError`].
fn drawing(error: impl std::fmt::Display) -> ChartError {
    ChartError::Drawing(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(value: f64, low: f64, high: f64) -> Option<Point> {
        Some(Point { value, low, high })
    }

    fn series(name: &str, values: Vec<Option<Point>>) -> Series {
        Series {
            name: name.to_owned(),
            values,
        }
    }

    fn bars(categories: &[&str], series: Vec<Series>) -> GroupedBars {
        GroupedBars {
            title: "Benchmark times".to_owned(),
            y_label: "time (s)".to_owned(),
            categories: categories.iter().map(|c| (*c).to_owned()).collect(),
            series,
        }
    }

    fn timings() -> GroupedBars {
        bars(
            &[
                "matrixMul",
                "convolutionSeparable",
                "bandwidthTest (pageable)",
            ],
            vec![
                series("native", vec![p(1.2, 1.1, 1.3), p(2.5, 2.4, 2.7), None]),
                series(
                    "KVM 2 vCPU",
                    vec![p(1.3, 1.2, 1.5), p(2.6, 2.5, 2.8), p(3.5, 3.2, 3.9)],
                ),
            ],
        )
    }

    fn line(name: &str, points: &[(f64, f64)]) -> Line {
        Line {
            name: name.to_owned(),
            points: points
                .iter()
                .map(|&(x, y)| {
                    (
                        x,
                        Point {
                            value: y,
                            low: y * 0.9,
                            high: y * 1.1,
                        },
                    )
                })
                .collect(),
        }
    }

    fn bandwidth(log_x: bool, lines: Vec<Line>) -> Lines {
        Lines {
            title: "Bandwidth by size".to_owned(),
            x_label: "vector size (elements)".to_owned(),
            y_label: "bandwidth (GB/s)".to_owned(),
            log_x,
            lines,
        }
    }

    /// Parses `svg` and checks what every chart must have: a standalone SVG root with a
    /// viewBox, `role="img"`, an `aria-label` and a `<title>` of `title`, and no number that is
    /// not finite.
    fn check_document<'a>(svg: &'a str, title: &str) -> roxmltree::Document<'a> {
        let doc = roxmltree::Document::parse(svg).expect("the chart is well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        let view_box: Vec<f64> = root
            .attribute("viewBox")
            .expect("a viewBox")
            .split(' ')
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(view_box[..3], [0.0, 0.0, f64::from(WIDTH)]);
        assert!((f64::from(BASE_HEIGHT)..=800.0).contains(&view_box[3]));
        assert_eq!(root.attribute("role"), Some("img"));
        assert_eq!(root.attribute("aria-label"), Some(title));
        let first = root.first_element_child().unwrap();
        assert_eq!(first.tag_name().name(), "title");
        assert_eq!(first.text(), Some(title));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        doc
    }

    /// The text of every `<text>` element, whitespace trimmed.
    fn texts(doc: &roxmltree::Document<'_>) -> Vec<String> {
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .map(|n| n.text().unwrap_or("").trim().to_owned())
            .collect()
    }

    /// How many `<rect>`s are filled with the `index`th palette colour.
    fn rects_of(doc: &roxmltree::Document<'_>, index: usize) -> usize {
        doc.descendants()
            .filter(|n| n.has_tag_name("rect"))
            .filter(|n| {
                n.attribute("fill")
                    .is_some_and(|f| f.eq_ignore_ascii_case(PALETTE[index]))
            })
            .count()
    }

    /// Whether a horizontal polyline in the zero line's colour is drawn.
    fn has_zero_line(doc: &roxmltree::Document<'_>) -> bool {
        let colour = format!("#{:02X}{:02X}{:02X}", ZERO_LINE.0, ZERO_LINE.1, ZERO_LINE.2);
        doc.descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .filter(|n| n.attribute("stroke") == Some(colour.as_str()))
            .any(|n| {
                let points: Vec<(f64, f64)> = n
                    .attribute("points")
                    .unwrap()
                    .split_whitespace()
                    .map(|p| {
                        let (x, y) = p.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect();
                points.len() == 2
                    && points[0].1 == points[1].1
                    && (points[1].0 - points[0].0).abs() > f64::from(WIDTH) / 2.0
            })
    }

    #[test]
    fn the_palette_is_okabe_ito_in_a_fixed_order() {
        for (hex, rgb) in PALETTE.iter().zip(PALETTE_RGB) {
            assert_eq!(*hex, format!("#{:02X}{:02X}{:02X}", rgb.0, rgb.1, rgb.2));
        }
        assert_eq!(colour(8), colour(0));
    }

    #[test]
    fn grouped_bars_name_everything_and_draw_a_bar_per_value() {
        let chart = timings();
        let svg = grouped_bars(&chart).unwrap();
        let doc = check_document(&svg, "Benchmark times");
        let texts = texts(&doc);
        for expected in [
            "Benchmark times",
            "time (s)",
            "native",
            "KVM 2 vCPU",
            "matrixMul",
            "convolutionSeparable",
            "bandwidthTest (pageable)",
        ] {
            assert!(
                texts.iter().any(|t| t == expected),
                "{expected} in {texts:?}"
            );
        }
        // Y tick labels: 0 and some more.
        assert!(texts.iter().any(|t| t == "0"), "{texts:?}");
        assert!(texts.iter().any(|t| t == "3"), "{texts:?}");
        // One rect per value plus the legend's swatch; none for the missing value.
        assert_eq!(rects_of(&doc, 0), 2 + 1);
        assert_eq!(rects_of(&doc, 1), 3 + 1);
        let bars: usize = (0..2).map(|i| rects_of(&doc, i)).sum();
        assert!(bars >= 5);
        // Whiskers: a stem and two caps per value.
        let whiskers = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .filter(|n| n.attribute("stroke") == Some("#262626"))
            .count();
        assert_eq!(whiskers, 5 * 3);
        assert!(!has_zero_line(&doc));
    }

    #[test]
    fn long_category_names_are_turned_to_fit() {
        let names = [
            "matrixMul",
            "vectorAdd",
            "convolutionSeparable",
            "bandwidthTest (pageable)",
            "bandwidthTest (pinned)",
            "BlackScholes",
            "fastWalshTransform",
            "asyncAPI",
        ];
        let many = bars(
            &names,
            vec![series("native", vec![p(1.0, 0.9, 1.1); names.len()])],
        );
        let svg = grouped_bars(&many).unwrap();
        let doc = check_document(&svg, "Benchmark times");
        for name in names {
            let label = doc
                .descendants()
                .find(|n| n.has_tag_name("text") && n.text().unwrap().trim() == name)
                .unwrap();
            assert!(
                label
                    .attribute("transform")
                    .unwrap()
                    .starts_with("rotate(270")
            );
        }
        // Taller than the default, but not by much.
        let height: u32 = doc
            .root_element()
            .attribute("height")
            .unwrap()
            .parse()
            .unwrap();
        assert!((BASE_HEIGHT..=640).contains(&height), "{height}");

        let short = bars(
            &["a", "b"],
            vec![series("native", vec![p(1.0, 1.0, 1.0), None])],
        );
        let svg = grouped_bars(&short).unwrap();
        let doc = check_document(&svg, "Benchmark times");
        assert_eq!(doc.root_element().attribute("height"), Some("480"));
        assert!(
            doc.descendants()
                .filter(|n| n.has_tag_name("text"))
                .all(|n| n
                    .attribute("transform")
                    .is_none_or(|t| !t.starts_with("rotate(270"))
                    || n.text().unwrap().trim() == "time (s)")
        );

        let name = "x".repeat(200);
        let long = bars(&[&name], vec![series("native", vec![p(1.0, 0.5, 1.5)])]);
        let svg = grouped_bars(&long).unwrap();
        check_document(&svg, "Benchmark times");
        assert!(svg.contains(&format!("{}…", "x".repeat(MAX_LABEL_CHARS - 1))));
    }

    #[test]
    fn negative_values_get_a_line_at_zero() {
        let chart = GroupedBars {
            title: "Overhead".to_owned(),
            y_label: "difference (%)".to_owned(),
            categories: vec!["matrixMul".to_owned(), "vectorAdd".to_owned()],
            series: vec![series("KVM", vec![p(3.0, -1.0, 6.0), p(-4.0, -7.0, -1.5)])],
        };
        let svg = grouped_bars(&chart).unwrap();
        let doc = check_document(&svg, "Overhead");
        assert!(has_zero_line(&doc));
        let texts = texts(&doc);
        assert!(texts.iter().any(|t| t == "-6"), "{texts:?}");
        assert!(texts.iter().any(|t| t == "6"), "{texts:?}");
        assert_eq!(rects_of(&doc, 0), 2 + 1);

        let all_negative = bars(&["a"], vec![series("KVM", vec![p(-2.0, -3.0, -1.0)])]);
        let doc_svg = grouped_bars(&all_negative).unwrap();
        assert!(has_zero_line(&check_document(&doc_svg, "Benchmark times")));

        let falling = bandwidth(
            false,
            vec![line("KVM", &[(1.0, 2.0), (2.0, -1.0), (4.0, -3.0)])],
        );
        let svg = lines(&falling).unwrap();
        assert!(has_zero_line(&check_document(&svg, "Bandwidth by size")));
    }

    #[test]
    fn single_equal_and_zero_values_still_make_a_chart() {
        let cases = [
            bars(&["only"], vec![series("native", vec![p(0.25, 0.25, 0.25)])]),
            bars(
                &["a", "b", "c"],
                vec![
                    series("native", vec![p(5.0, 5.0, 5.0); 3]),
                    series("KVM", vec![p(5.0, 5.0, 5.0); 3]),
                ],
            ),
            bars(
                &["a", "b"],
                vec![series("native", vec![p(0.0, 0.0, 0.0); 2])],
            ),
            bars(
                &["tiny"],
                vec![series("native", vec![p(3e-12, 2e-12, 4e-12)])],
            ),
            bars(&["huge"], vec![series("native", vec![p(3e18, 2e18, 4e18)])]),
        ];
        for chart in &cases {
            let svg = grouped_bars(chart).unwrap();
            let doc = check_document(&svg, "Benchmark times");
            let texts = texts(&doc);
            // The y axis has a range, so it has at least two distinct tick labels.
            let ticks: Vec<&String> = texts.iter().filter(|t| t.parse::<f64>().is_ok()).collect();
            assert!(ticks.len() >= 2, "{texts:?}");
            assert!(ticks.windows(2).all(|w| w[0] != w[1]), "{texts:?}");
        }
        let single = bandwidth(true, vec![line("native", &[(128.0, 4.0)])]);
        let svg = lines(&single).unwrap();
        let texts = texts(&check_document(&svg, "Bandwidth by size"));
        assert!(texts.iter().any(|t| t == "128"), "{texts:?}");
        let flat = bandwidth(false, vec![line("native", &[(3.0, 4.0), (3.0, 4.0)])]);
        check_document(&lines(&flat).unwrap(), "Bandwidth by size");
    }

    #[test]
    fn text_is_escaped() {
        let awkward = "a<b & \"c\" 'd'";
        let mut chart = timings();
        chart.title = awkward.to_owned();
        chart.y_label = awkward.to_owned();
        chart.categories[0] = awkward.to_owned();
        chart.series[0].name = awkward.to_owned();
        let svg = grouped_bars(&chart).unwrap();
        let doc = check_document(&svg, awkward);
        let count = texts(&doc).iter().filter(|t| *t == awkward).count();
        // Title, y label, category and legend.
        assert_eq!(count, 4);
        assert!(svg.contains("a&lt;b &amp; &quot;c&quot;"));

        let mut chart = bandwidth(true, vec![line(awkward, &[(2.0, 1.0), (4.0, 2.0)])]);
        chart.title = awkward.to_owned();
        chart.x_label = awkward.to_owned();
        let svg = lines(&chart).unwrap();
        let doc = check_document(&svg, awkward);
        assert_eq!(texts(&doc).iter().filter(|t| *t == awkward).count(), 3);
    }

    #[test]
    fn nothing_to_draw_is_an_error() {
        let empty = [
            bars(&[], vec![series("native", vec![])]),
            bars(&["a"], vec![]),
            bars(&["a", "b"], vec![series("native", vec![None, None])]),
        ];
        for chart in &empty {
            let error = grouped_bars(chart).unwrap_err();
            assert!(matches!(error, ChartError::Empty(_)), "{error}");
            assert!(error.to_string().starts_with("nothing to draw"));
        }
        for chart in [
            bandwidth(false, vec![]),
            bandwidth(false, vec![line("native", &[])]),
        ] {
            assert!(matches!(lines(&chart), Err(ChartError::Empty(_))));
        }
    }

    #[test]
    fn a_series_needs_a_value_per_category() {
        let chart = bars(&["a", "b"], vec![series("native", vec![p(1.0, 1.0, 1.0)])]);
        let error = grouped_bars(&chart).unwrap_err();
        assert!(matches!(error, ChartError::LengthMismatch { .. }));
        assert_eq!(
            error.to_string(),
            "series \"native\" has 1 values for 2 categories"
        );
    }

    #[test]
    fn non_finite_values_are_errors_naming_series_and_where() {
        let mut chart = timings();
        chart.series[1].values[1] = p(2.0, f64::NAN, 3.0);
        let error = grouped_bars(&chart).unwrap_err().to_string();
        assert!(error.contains("\"KVM 2 vCPU\""), "{error}");
        assert!(
            error.contains("category \"convolutionSeparable\""),
            "{error}"
        );
        assert!(error.contains("low end is NaN"), "{error}");

        chart.series[1].values[1] = p(f64::INFINITY, 2.0, 3.0);
        let error = grouped_bars(&chart).unwrap_err().to_string();
        assert!(error.contains("the value is inf"), "{error}");

        let mut chart = bandwidth(false, vec![line("native", &[(1.0, 1.0), (2.0, 2.0)])]);
        chart.lines[0].points[1].1.high = f64::NEG_INFINITY;
        let error = lines(&chart).unwrap_err().to_string();
        assert!(error.contains("\"native\", point 2 (x = 2)"), "{error}");
        chart.lines[0].points[1].0 = f64::NAN;
        let error = lines(&chart).unwrap_err();
        assert!(
            matches!(&error, ChartError::NonFinite { what: "x", .. }),
            "{error}"
        );

        let too_wide = bars(&["a"], vec![series("native", vec![p(0.0, -1e308, 1e308)])]);
        assert!(matches!(grouped_bars(&too_wide), Err(ChartError::Range)));
    }

    #[test]
    fn a_log_x_axis_is_labelled_with_real_values() {
        let sizes: Vec<(f64, f64)> = (7..=12)
            .map(|e| (2f64.powi(e), f64::from(e) * 10.0))
            .collect();
        let chart = bandwidth(true, vec![line("native", &sizes), line("KVM", &sizes[1..])]);
        let svg = lines(&chart).unwrap();
        let doc = check_document(&svg, "Bandwidth by size");
        let shown = texts(&doc);
        for tick in ["128", "256", "512", "1024", "2048", "4096"] {
            assert!(shown.iter().any(|t| t == tick), "{tick} in {shown:?}");
        }
        // Not the exponents.
        for exponent in ["7", "9", "11"] {
            assert!(
                !shown.iter().any(|t| t == exponent),
                "{exponent} in {shown:?}"
            );
        }
        for expected in [
            "vector size (elements)",
            "bandwidth (GB/s)",
            "native",
            "KVM",
        ] {
            assert!(
                shown.iter().any(|t| t == expected),
                "{expected} in {shown:?}"
            );
        }
        // A marker per point, and one in each legend entry: circles, then squares.
        assert_eq!(
            doc.descendants()
                .filter(|n| n.has_tag_name("circle"))
                .count(),
            6 + 1
        );
        assert_eq!(rects_of(&doc, 1), 5 + 1);

        // Many sizes: every few powers of two, still real values.
        let wide: Vec<(f64, f64)> = (0..=30).map(|e| (2f64.powi(e), 1.0)).collect();
        let svg = lines(&bandwidth(true, vec![line("native", &wide)])).unwrap();
        let labels = texts(&check_document(&svg, "Bandwidth by size"));
        assert!(labels.iter().any(|t| t == "1"), "{labels:?}");
        assert!(labels.iter().any(|t| t == "268435456"), "{labels:?}");
        let powers = labels
            .iter()
            .filter(|t| t.parse::<u64>().is_ok_and(|v| v.is_power_of_two()))
            .count();
        assert!((6..=TICKS + 2).contains(&powers), "{labels:?}");

        // No power of two in range: the values themselves.
        let narrow = bandwidth(true, vec![line("native", &[(100.0, 1.0), (120.0, 2.0)])]);
        let values = texts(&check_document(
            &lines(&narrow).unwrap(),
            "Bandwidth by size",
        ));
        assert!(
            values.iter().any(|t| t == "100") && values.iter().any(|t| t == "120"),
            "{values:?}"
        );
    }

    #[test]
    fn a_log_x_axis_needs_positive_x() {
        for x in [0.0, -4.0] {
            let chart = bandwidth(true, vec![line("native", &[(1.0, 1.0), (x, 2.0)])]);
            let error = lines(&chart).unwrap_err();
            assert!(matches!(error, ChartError::NonPositiveX { .. }), "{error}");
            assert!(error.to_string().contains("\"native\""));
        }
        let chart = bandwidth(false, vec![line("native", &[(-4.0, 1.0), (0.0, 2.0)])]);
        let svg = lines(&chart).unwrap();
        let texts = texts(&check_document(&svg, "Bandwidth by size"));
        assert!(texts.iter().any(|t| t == "-4"), "{texts:?}");
    }

    #[test]
    fn a_long_legend_wraps_and_the_chart_grows() {
        let names: Vec<String> = (0..12)
            .map(|i| format!("KVM {i} vCPU, 16 GiB, hugepages"))
            .collect();
        let chart = bars(
            &["a"],
            names
                .iter()
                .map(|n| series(n, vec![p(1.0, 0.9, 1.1)]))
                .collect(),
        );
        let svg = grouped_bars(&chart).unwrap();
        let doc = check_document(&svg, "Benchmark times");
        let height: i32 = doc
            .root_element()
            .attribute("height")
            .unwrap()
            .parse()
            .unwrap();
        assert!(height > BASE_HEIGHT as i32);
        let texts = texts(&doc);
        assert!(names.iter().all(|n| texts.contains(n)));
    }
}
