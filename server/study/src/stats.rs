//! Summaries of benchmark samples and differences between two sample sets.
//!
//! An experiment compares targets (native, VMs of various shapes) by running the same benchmark
//! on each several times. Run-to-run noise is real, so a difference is reported with a
//! confidence interval, and it is called a difference only when that interval excludes zero.
//! Medians are used throughout: benchmark times are skewed by the occasional slow run, and a
//! median is not dragged along by it. Intervals come from a percentile bootstrap, which needs no
//! assumption about the shape of the distribution; it is seeded, so a page shows the same
//! numbers every time it is rendered.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A sample set summarised. Quantiles by linear interpolation (R's type 7 / numpy's default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of finite samples summarised.
    pub n: usize,
    /// The median (the type-7 quantile at 0.5).
    pub median: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
    /// The first quartile (type-7 quantile at 0.25).
    pub q1: f64,
    /// The third quartile (type-7 quantile at 0.75).
    pub q3: f64,
    /// The arithmetic mean.
    pub mean: f64,
    /// The sample standard deviation (divided by n − 1); 0 for a single sample.
    pub stddev: f64,
}

/// The finite samples of `samples`, sorted ascending.
fn finite_sorted(samples: &[f64]) -> Vec<f64> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    sorted
}

/// The type-7 quantile of an ascending, non-empty slice of finite values, `p` in 0..=1.
fn quantile_sorted(sorted: &[f64], p: f64) -> f64 {
    debug_assert!(!sorted.is_empty());
    let h = (sorted.len() - 1) as f64 * p.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// The type-7 quantile at `p` (0..=1, clamped) of the finite values of `samples`; None when
/// there are none or `p` is not a number.
pub fn quantile(samples: &[f64], p: f64) -> Option<f64> {
    if p.is_nan() {
        return None;
    }
    let sorted = finite_sorted(samples);
    (!sorted.is_empty()).then(|| quantile_sorted(&sorted, p))
}

/// None for an empty slice; non-finite values are ignored.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    let sorted = finite_sorted(samples);
    if sorted.is_empty() {
        return None;
    }
    // Welford's running mean and sum of squared deviations: no overflow from summing first.
    let (mut mean, mut m2) = (0.0_f64, 0.0_f64);
    for (i, &x) in sorted.iter().enumerate() {
        let delta = x - mean;
        mean += delta / (i + 1) as f64;
        m2 += delta * (x - mean);
    }
    let n = sorted.len();
    let stddev = if n < 2 {
        0.0
    } else {
        (m2 / (n - 1) as f64).sqrt()
    };
    Some(Summary {
        n,
        median: quantile_sorted(&sorted, 0.5),
        min: sorted[0],
        max: sorted[n - 1],
        q1: quantile_sorted(&sorted, 0.25),
        q3: quantile_sorted(&sorted, 0.75),
        mean,
        stddev,
    })
}

/// A confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// The lower bound.
    pub low: f64,
    /// The upper bound.
    pub high: f64,
    /// The confidence level, e.g. 0.95.
    pub level: f64,
}

impl Interval {
    /// Whether `x` lies within the interval, bounds included.
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }

    /// Whether zero lies outside the interval: the difference it bounds is a real one.
    pub fn excludes_zero(&self) -> bool {
        !self.contains(0.0)
    }
}

/// `other` against `baseline`: the difference of medians (other − baseline), absolute and
/// relative to the baseline's median, with 95% percentile-bootstrap intervals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Difference {
    /// The median of the baseline's samples.
    pub baseline_median: f64,
    /// The median of the other samples.
    pub other_median: f64,
    /// other median − baseline median.
    pub absolute: f64,
    /// absolute / baseline median; None when the baseline median is 0.
    pub relative: Option<f64>,
    /// None when either side has fewer than 2 samples.
    pub interval: Option<Interval>,
    /// The interval of the relative difference (each bootstrap replicate's difference divided
    /// by that replicate's baseline median); None as above or when a replicate's baseline
    /// median is 0.
    pub relative_interval: Option<Interval>,
    /// True only when `interval` exists and excludes zero: "a difference is called a
    /// difference only when the interval excludes zero".
    pub significant: bool,
}

/// Bootstrap resamples used by `difference`.
pub const RESAMPLES: usize = 10_000;

/// The confidence level of the intervals that `difference` gives.
pub const LEVEL: f64 = 0.95;

/// None when either side is empty. Deterministic for a given seed (resample both groups
/// independently with replacement, RESAMPLES times, percentile interval at 2.5%/97.5% with
/// type-7 quantiles of the replicate differences). Non-finite samples are ignored, as in
/// [`summarize`].
pub fn difference(baseline: &[f64], other: &[f64], seed: u64) -> Option<Difference> {
    difference_with(baseline, other, seed, RESAMPLES)
}

/// [`difference`] with a chosen number of bootstrap resamples.
pub(crate) fn difference_with(
    baseline: &[f64],
    other: &[f64],
    seed: u64,
    resamples: usize,
) -> Option<Difference> {
    let baseline = finite_sorted(baseline);
    let other = finite_sorted(other);
    if baseline.is_empty() || other.is_empty() {
        return None;
    }
    let baseline_median = quantile_sorted(&baseline, 0.5);
    let other_median = quantile_sorted(&other, 0.5);
    let absolute = other_median - baseline_median;
    let relative = (baseline_median != 0.0).then(|| absolute / baseline_median);

    let (interval, relative_interval) = if baseline.len() < 2 || other.len() < 2 || resamples == 0 {
        (None, None)
    } else {
        bootstrap(&baseline, &other, seed, resamples)
    };
    Some(Difference {
        baseline_median,
        other_median,
        absolute,
        relative,
        interval,
        relative_interval,
        significant: interval.is_some_and(|i| i.excludes_zero()),
    })
}

/// Percentile-bootstrap intervals of the absolute and relative difference of medians.
fn bootstrap(
    baseline: &[f64],
    other: &[f64],
    seed: u64,
    resamples: usize,
) -> (Option<Interval>, Option<Interval>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut baseline_draw = vec![0.0; baseline.len()];
    let mut other_draw = vec![0.0; other.len()];
    let mut differences = Vec::with_capacity(resamples);
    let mut relatives = Vec::with_capacity(resamples);
    let mut relative_defined = true;
    for _ in 0..resamples {
        resample(&mut rng, baseline, &mut baseline_draw);
        resample(&mut rng, other, &mut other_draw);
        let baseline_median = median_in_place(&mut baseline_draw);
        let difference = median_in_place(&mut other_draw) - baseline_median;
        differences.push(difference);
        if baseline_median == 0.0 {
            relative_defined = false;
        } else if relative_defined {
            relatives.push(difference / baseline_median);
        }
    }
    let interval = percentile_interval(&mut differences);
    let relative_interval = if relative_defined {
        percentile_interval(&mut relatives)
    } else {
        None
    };
    (interval, relative_interval)
}

/// Fills `draw` with values of `from` drawn uniformly with replacement.
fn resample(rng: &mut SmallRng, from: &[f64], draw: &mut [f64]) {
    for slot in draw.iter_mut() {
        *slot = from[rng.random_range(0..from.len())];
    }
}

/// The type-7 median of a non-empty slice of finite values, reordering it.
fn median_in_place(values: &mut [f64]) -> f64 {
    let n = values.len();
    let mid = n / 2;
    let (below, &mut upper, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    if n % 2 == 1 {
        return upper;
    }
    let lower = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // The same arithmetic as `quantile_sorted` at 0.5, so that both agree to the bit.
    lower + 0.5 * (upper - lower)
}

/// The central `LEVEL` percentile interval of the replicates, or None if it is not finite.
fn percentile_interval(replicates: &mut [f64]) -> Option<Interval> {
    if replicates.is_empty() {
        return None;
    }
    replicates.sort_by(f64::total_cmp);
    // 2.5% and 97.5% for LEVEL = 0.95, written out so that no rounding moves them.
    let low = quantile_sorted(replicates, 0.025);
    let high = quantile_sorted(replicates, 0.975);
    (low.is_finite() && high.is_finite()).then_some(Interval {
        low,
        high,
        level: LEVEL,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < 1e-12,
            "{actual} is not {expected}"
        );
    }

    #[test]
    fn quartiles_of_four_values_are_type_7() {
        let s = summarize(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.n, 4);
        assert_close(s.q1, 1.75);
        assert_close(s.median, 2.5);
        assert_close(s.q3, 3.25);
        assert_eq!((s.min, s.max), (1.0, 4.0));
        assert_close(s.mean, 2.5);
    }

    #[test]
    fn a_single_value_is_every_statistic_with_no_spread() {
        let s = summarize(&[7.5]).unwrap();
        assert_eq!(
            s,
            Summary {
                n: 1,
                median: 7.5,
                min: 7.5,
                max: 7.5,
                q1: 7.5,
                q3: 7.5,
                mean: 7.5,
                stddev: 0.0,
            }
        );
    }

    #[test]
    fn odd_and_even_medians() {
        assert_eq!(summarize(&[3.0, 1.0, 2.0]).unwrap().median, 2.0);
        assert_eq!(summarize(&[5.0, 1.0, 3.0, 2.0]).unwrap().median, 2.5);
        assert_eq!(summarize(&[10.0, 20.0]).unwrap().median, 15.0);
        assert_eq!(quantile(&[5.0, 1.0, 3.0], 0.0), Some(1.0));
        assert_eq!(quantile(&[5.0, 1.0, 3.0], 1.0), Some(5.0));
        assert_close(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.1).unwrap(), 1.4);
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[1.0], f64::NAN), None);
    }

    #[test]
    fn sample_standard_deviation_divides_by_n_minus_one() {
        let s = summarize(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_close(s.mean, 5.0);
        // Sum of squared deviations 32, over n − 1 = 7.
        assert_close(s.stddev, (32.0_f64 / 7.0).sqrt());
        assert!((s.stddev - 2.138_089_935).abs() < 1e-9);
    }

    #[test]
    fn non_finite_samples_are_ignored() {
        let s = summarize(&[f64::NAN, 1.0, f64::INFINITY, 3.0, f64::NEG_INFINITY]).unwrap();
        assert_eq!(s.n, 2);
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        assert_eq!(summarize(&[f64::NAN, f64::INFINITY]), None);
        assert_eq!(summarize(&[]), None);
        let d = difference(&[f64::NAN, 5.0, 5.0], &[7.0, f64::INFINITY, 7.0], 1).unwrap();
        assert_eq!(d.absolute, 2.0);
        assert_eq!(difference(&[f64::NAN], &[1.0, 2.0], 1), None);
    }

    #[test]
    fn constant_groups_differ_exactly() {
        let d = difference(&[5.0; 12], &[7.0; 9], 42).unwrap();
        assert_eq!((d.baseline_median, d.other_median), (5.0, 7.0));
        assert_eq!(d.absolute, 2.0);
        assert_eq!(d.relative, Some(0.4));
        assert_eq!(
            d.interval,
            Some(Interval {
                low: 2.0,
                high: 2.0,
                level: 0.95
            })
        );
        assert_eq!(
            d.relative_interval,
            Some(Interval {
                low: 0.4,
                high: 0.4,
                level: 0.95
            })
        );
        assert!(d.significant);
    }

    /// With three samples a side the bootstrap distribution is known exactly: a resampled
    /// median of {1, 2, 3} is 1 or 3 with probability 7/27 each and 2 with 13/27, so a
    /// replicate difference is at its extreme (shift ± 2) with probability 49/729 = 6.7%, more
    /// than the 2.5% each end of a 95% interval leaves out: the interval is [shift − 2,
    /// shift + 2] exactly, whatever the seed.
    #[test]
    fn three_samples_a_side_give_the_exact_bootstrap_interval() {
        for seed in [1, 2, 3, 99] {
            let d = difference(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0], seed).unwrap();
            let interval = d.interval.unwrap();
            assert_eq!((interval.low, interval.high), (1.0, 5.0), "seed {seed}");
            assert!(d.significant);
            // Shifted by one only: the medians differ, the interval holds zero, so it is not
            // called a difference.
            let d = difference(&[1.0, 2.0, 3.0], &[2.0, 3.0, 4.0], seed).unwrap();
            assert_eq!(d.absolute, 1.0);
            let interval = d.interval.unwrap();
            assert_eq!((interval.low, interval.high), (-1.0, 3.0), "seed {seed}");
            assert!(!d.significant);
        }
    }

    #[test]
    fn identical_groups_do_not_differ() {
        let samples: Vec<f64> = (0..15).map(|i| 10.0 + f64::from(i % 7) * 0.3).collect();
        let d = difference(&samples, &samples, 7).unwrap();
        assert_eq!(d.absolute, 0.0);
        assert_eq!(d.relative, Some(0.0));
        let interval = d.interval.unwrap();
        assert!(interval.contains(0.0), "{interval:?}");
        assert!(interval.low < 0.0 && interval.high > 0.0, "{interval:?}");
        assert!(d.relative_interval.unwrap().contains(0.0));
        assert!(!d.significant);
    }

    #[test]
    fn a_clear_shift_is_significant() {
        let baseline: Vec<f64> = (1..=20).map(f64::from).collect();
        let other: Vec<f64> = (101..=120).map(f64::from).collect();
        let d = difference(&baseline, &other, 3).unwrap();
        assert_eq!((d.baseline_median, d.other_median), (10.5, 110.5));
        assert_eq!(d.absolute, 100.0);
        assert_close(d.relative.unwrap(), 100.0 / 10.5);
        let interval = d.interval.unwrap();
        // A resampled median lies within its group's range, so a replicate difference lies
        // between 101 − 20 and 120 − 1.
        assert!(81.0 <= interval.low && interval.low < 100.0, "{interval:?}");
        assert!(
            100.0 < interval.high && interval.high <= 119.0,
            "{interval:?}"
        );
        assert!(interval.excludes_zero());
        let relative = d.relative_interval.unwrap();
        assert!(
            relative.low > 0.0 && relative.contains(100.0 / 10.5),
            "{relative:?}"
        );
        assert!(d.significant);
    }

    #[test]
    fn fewer_than_two_samples_give_no_interval() {
        for (baseline, other) in [(&[1.0][..], &[1.0, 2.0, 3.0][..]), (&[1.0, 2.0], &[5.0])] {
            let d = difference(baseline, other, 1).unwrap();
            assert_eq!(d.interval, None);
            assert_eq!(d.relative_interval, None);
            assert!(!d.significant);
        }
        let d = difference(&[2.0], &[3.0], 1).unwrap();
        assert_eq!((d.absolute, d.relative), (1.0, Some(0.5)));
        assert_eq!(difference(&[], &[1.0, 2.0], 1), None);
        assert_eq!(difference(&[1.0, 2.0], &[], 1), None);
    }

    #[test]
    fn a_zero_baseline_median_has_no_relative_difference() {
        let d = difference(&[0.0, 0.0, 0.0], &[1.0, 1.0], 1).unwrap();
        assert_eq!(d.relative, None);
        assert_eq!(d.relative_interval, None);
        assert_eq!(d.interval.map(|i| (i.low, i.high)), Some((1.0, 1.0)));
        assert!(d.significant);
        // The median is not 0, but some replicates' medians are.
        let d = difference(&[-1.0, 0.0, 1.0, 2.0, 3.0], &[4.0, 5.0], 1).unwrap();
        assert_eq!(d.relative, Some(3.5));
        assert!(d.interval.is_some());
        assert_eq!(d.relative_interval, None);
    }

    #[test]
    fn the_same_seed_gives_the_same_result() {
        let baseline = [3.1, 2.9, 3.4, 3.0, 3.3, 2.8, 3.6, 3.2, 3.05, 2.95, 3.15];
        let other = [3.3, 3.5, 3.1, 3.6, 3.4, 3.25, 3.9, 3.0, 3.45, 3.35];
        let first = difference(&baseline, &other, 11).unwrap();
        assert_eq!(difference(&baseline, &other, 11), Some(first));
        // Other seeds resample differently; the point estimates do not depend on the seed.
        let others: Vec<Difference> = (12..17)
            .map(|seed| difference(&baseline, &other, seed).unwrap())
            .collect();
        assert!(others.iter().any(|d| d.interval != first.interval));
        assert!(others.iter().all(|d| d.absolute == first.absolute));
    }

    #[test]
    fn interval_contains_its_bounds_and_knows_zero() {
        let i = Interval {
            low: -1.0,
            high: 2.0,
            level: 0.95,
        };
        assert!(i.contains(-1.0) && i.contains(2.0) && i.contains(0.0));
        assert!(!i.contains(2.5) && !i.contains(f64::NAN));
        assert!(!i.excludes_zero());
        let above = Interval { low: 0.5, ..i };
        let below = Interval {
            low: -3.0,
            high: -0.1,
            ..i
        };
        assert!(above.excludes_zero() && below.excludes_zero());
        let touching = Interval { low: 0.0, ..i };
        assert!(!touching.excludes_zero());
    }

    /// A standard normal draw by the Box–Muller transform.
    fn normal(rng: &mut SmallRng) -> f64 {
        let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln stays finite
        let u2: f64 = rng.random();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    #[test]
    fn intervals_cover_a_known_shift_about_95_percent_of_the_time() {
        const TRIALS: u64 = 400;
        const SHIFT: f64 = 1.5;
        // Fewer resamples than `difference` uses keep this quick in a debug build; the
        // percentile interval barely depends on it at this size.
        const TEST_RESAMPLES: usize = 1_000;
        let covered = (0..TRIALS)
            .filter(|&trial| {
                let mut rng = SmallRng::seed_from_u64(1_000 + trial);
                let baseline: Vec<f64> = (0..30).map(|_| 10.0 + 2.0 * normal(&mut rng)).collect();
                let other: Vec<f64> = (0..30)
                    .map(|_| 10.0 + SHIFT + 2.0 * normal(&mut rng))
                    .collect();
                let d = difference_with(&baseline, &other, trial, TEST_RESAMPLES).unwrap();
                d.interval.unwrap().contains(SHIFT)
            })
            .count();
        let rate = covered as f64 / TRIALS as f64;
        // With a true coverage of 0.95, 400 trials give a standard error of about 0.011: the
        // bounds are four or more of those away.
        assert!((0.88..=0.99).contains(&rate), "coverage {rate}");
    }
}
