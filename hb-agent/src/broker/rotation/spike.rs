//! The `rate_spike` detector: is an account's call count in one sensor bucket far
//! above what it usually is?
//!
//! A pure unit: fed one bucket's count and the bucket's time (seconds), it keeps an
//! exponentially weighted mean and variance of past counts (the baseline) and says
//! whether the bucket is anomalous and whether a spike fires. A bucket is anomalous
//! when its count is over `spike_hard_cap`, or, once the learning period is over, when
//! it is at least `spike_min_count` AND `spike_ratio` × the mean AND `spike_z` standard
//! deviations above it (the deviation is at least the square root of the mean, as for a
//! Poisson count, and at least 1, so a very regular account is not judged on a variance
//! of nothing). `spike_buckets` anomalous buckets in a row fire; while the run lasts it
//! fires again every [`REFIRE_BUCKETS`] buckets. Anomalous buckets never enter the
//! baseline, so a long flood does not teach the detector that flooding is normal.
//! Must never: read a clock (the caller gives the time), or learn from an anomalous
//! bucket.

use serde::{Deserialize, Serialize};

use crate::config::RotationConfig;

/// While a spike lasts, it fires again after this many more anomalous buckets (a
/// quarantine ending under a flood that never stopped is renewed).
pub const REFIRE_BUCKETS: u32 = 60;

/// The detector's settings (from `[integration.rotation]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub bucket_secs: u64,
    pub z: f64,
    pub ratio: f64,
    pub min_count: u64,
    pub buckets: u32,
    pub learning_secs: u64,
    /// The weight of a new bucket in the baseline (from the half-life).
    pub alpha: f64,
    /// 0: none.
    pub hard_cap: u64,
}

impl Params {
    pub fn of(config: &RotationConfig) -> Self {
        let bucket = config.sensor_bucket_secs.max(1);
        Self {
            bucket_secs: bucket,
            z: config.spike_z,
            ratio: config.spike_ratio,
            min_count: config.spike_min_count,
            buckets: config.spike_buckets.max(1),
            learning_secs: config.spike_learning_secs,
            alpha: alpha(bucket, config.spike_halflife_secs),
            hard_cap: config.spike_hard_cap,
        }
    }
}

/// The weight that halves a bucket's share in the mean after `halflife_secs`.
pub fn alpha(bucket_secs: u64, halflife_secs: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "seconds, far below 2^52")]
    let buckets = halflife_secs.max(1) as f64 / bucket_secs.max(1) as f64;
    1.0 - 0.5f64.powf(1.0 / buckets.max(1.0))
}

/// The baseline and the current run, per account (kept in `state_dir/sensor.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The first bucket's time (unix seconds): learning ends `learning_secs` after it.
    pub started: Option<u64>,
    /// Exponentially weighted mean of normal buckets' counts.
    pub mean: f64,
    /// Exponentially weighted variance of the same.
    pub var: f64,
    /// Normal buckets that entered the baseline.
    pub learned: u64,
    /// Anomalous buckets in a row (0: none now).
    pub run: u32,
}

/// What one bucket was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// It entered the baseline.
    Normal,
    /// Anomalous, not (yet, or again) a spike.
    Anomalous,
    /// A spike: the signal.
    Fire(Evidence),
}

/// What a fired spike says.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Evidence {
    pub count: u64,
    pub mean: f64,
    pub sd: f64,
    /// Anomalous buckets in a row.
    pub run: u32,
    /// `hard_cap` (over the cap) or `baseline` (far above it).
    pub why: &'static str,
}

impl State {
    /// Whether the baseline is still being learned at `at`.
    pub fn learning(&self, p: &Params, at: u64) -> bool {
        self.started
            .is_none_or(|s| at < s.saturating_add(p.learning_secs))
    }

    /// The deviation a count is measured in (see the module header).
    pub fn sd(&self) -> f64 {
        self.var.sqrt().max(self.mean.sqrt()).max(1.0)
    }

    /// Whether `count` calls in the bucket that began at `at` are over the hard cap or
    /// (after learning) far above the baseline; changes nothing.
    pub fn anomalous(&self, p: &Params, at: u64, count: u64) -> bool {
        let over_cap = p.hard_cap > 0 && count > p.hard_cap;
        over_cap || self.far_above(p, at, count)
    }

    /// Whether `count` calls in the bucket that began at `at` are far above the learned
    /// baseline (never while it is being learned); the hard cap aside.
    pub fn far_above(&self, p: &Params, at: u64, count: u64) -> bool {
        let learning = self
            .started
            .is_some_and(|s| at < s.saturating_add(p.learning_secs))
            || self.started.is_none() && p.learning_secs > 0;
        #[expect(clippy::cast_precision_loss, reason = "call counts, far below 2^52")]
        let x = count as f64;
        !learning
            && count >= p.min_count
            && x >= p.ratio * self.mean
            && (x - self.mean) / self.sd() >= p.z
    }

    /// Judges the bucket that began at `at` (unix seconds) with `count` calls.
    pub fn observe(&mut self, p: &Params, at: u64, count: u64) -> Verdict {
        self.started.get_or_insert(at);
        #[expect(clippy::cast_precision_loss, reason = "call counts, far below 2^52")]
        let x = count as f64;
        let sd = self.sd();
        let over_cap = p.hard_cap > 0 && count > p.hard_cap;
        if !self.anomalous(p, at, count) {
            self.run = 0;
            self.learn(p, x);
            return Verdict::Normal;
        }
        self.run = self.run.saturating_add(1);
        let fires = self.run == p.buckets
            || (self.run > p.buckets && (self.run - p.buckets).is_multiple_of(REFIRE_BUCKETS));
        if !fires {
            return Verdict::Anomalous;
        }
        Verdict::Fire(Evidence {
            count,
            mean: self.mean,
            sd,
            run: self.run,
            why: if over_cap { "hard_cap" } else { "baseline" },
        })
    }

    fn learn(&mut self, p: &Params, x: f64) {
        if self.learned == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            // West's incremental form of the exponentially weighted variance.
            let diff = x - self.mean;
            let incr = p.alpha * diff;
            self.mean += incr;
            self.var = (1.0 - p.alpha) * (self.var + diff * incr);
        }
        self.learned += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults of `[integration.rotation]`, with 10-second buckets.
    fn params() -> Params {
        let config: RotationConfig =
            toml::from_str("exec = [\"/bin/true\"]\n").expect("rotation config");
        Params::of(&config)
    }

    const WEEK: u64 = 7 * 86_400;

    /// A deterministic generator (xorshift64*), so every run sees the same noise.
    struct Noise(u64);

    impl Noise {
        fn unit(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            #[expect(clippy::cast_precision_loss, reason = "53 random bits")]
            let bits = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64;
            bits / (1u64 << 53) as f64
        }

        /// A count around `mean` with a Poisson-like spread (sum of uniforms).
        fn count(&mut self, mean: f64) -> u64 {
            let normal: f64 = (0..12).map(|_| self.unit()).sum::<f64>() - 6.0;
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a small non-negative count"
            )]
            let n = (mean + normal * mean.sqrt()).round().max(0.0) as u64;
            n
        }
    }

    /// Feeds `count(t)` for every bucket from `from` to `to`; the times it fired.
    fn run(
        state: &mut State,
        p: &Params,
        from: u64,
        to: u64,
        mut count: impl FnMut(u64) -> u64,
    ) -> Vec<u64> {
        (from..to)
            .step_by(usize::try_from(p.bucket_secs).expect("width"))
            .filter(|&t| matches!(state.observe(p, t, count(t)), Verdict::Fire(_)))
            .collect()
    }

    #[test]
    fn a_steady_week_never_fires() {
        let p = params();
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        let mut s = State::default();
        let fired = run(&mut s, &p, 0, WEEK, |_| noise.count(20.0));
        assert!(fired.is_empty(), "fired at {fired:?}");
        assert!((s.mean - 20.0).abs() < 2.0, "baseline {}", s.mean);
    }

    #[test]
    fn a_week_of_daily_cycles_never_fires() {
        let p = params();
        let mut noise = Noise(0x0123_4567_89ab_cdef);
        let mut s = State::default();
        // Night 3 calls a bucket, afternoon 57: a 19× swing over the day, with noise.
        #[expect(clippy::cast_precision_loss, reason = "seconds in a week")]
        let fired = run(&mut s, &p, 0, WEEK, |t| {
            let day = (t % 86_400) as f64 / 86_400.0;
            noise.count(30.0 - 27.0 * (2.0 * std::f64::consts::PI * day).cos())
        });
        assert!(fired.is_empty(), "fired at {fired:?}");
    }

    #[test]
    fn a_tenfold_step_fires_within_three_buckets() {
        let p = params();
        let mut noise = Noise(7);
        let mut s = State::default();
        let step = 2 * 86_400;
        let fired = run(&mut s, &p, 0, step + 600, |t| {
            noise.count(if t < step { 15.0 } else { 150.0 })
        });
        let first = *fired.first().expect("the step fires");
        assert!(first >= step, "no signal before the step: {fired:?}");
        assert!(
            first < step + 3 * p.bucket_secs,
            "fired {} s after the step",
            first - step
        );
    }

    #[test]
    fn a_long_flood_does_not_raise_the_baseline() {
        let p = params();
        let mut noise = Noise(11);
        let mut s = State::default();
        let start = 86_400;
        assert!(run(&mut s, &p, 0, start, |_| noise.count(15.0)).is_empty());
        let before = s.mean;
        // Six hours of a 10× flood: it fires at its start and again while it lasts.
        let end = start + 6 * 3600;
        let fired = run(&mut s, &p, start, end, |_| noise.count(150.0));
        assert!(fired.first().is_some_and(|t| *t < start + 30), "{fired:?}");
        assert!(fired.len() > 10, "refires while it lasts: {}", fired.len());
        assert!(
            (s.mean - before).abs() < 1e-9,
            "the flood entered the baseline: {before} → {}",
            s.mean
        );
        // Back to normal, then the same flood again: it still fires.
        assert!(run(&mut s, &p, end, end + 3600, |_| noise.count(15.0)).is_empty());
        let again = run(&mut s, &p, end + 3600, end + 3700, |_| noise.count(150.0));
        assert!(!again.is_empty(), "a second flood fires too");
    }

    #[test]
    fn while_learning_only_the_hard_cap_fires() {
        let p = params();
        let mut s = State::default();
        // A first hour of ten calls a bucket, then a 50× jump while still learning.
        assert!(run(&mut s, &p, 0, 1800, |_| 10).is_empty());
        assert!(
            run(&mut s, &p, 1800, 2400, |_| 500).is_empty(),
            "the statistics do not judge during learning"
        );
        assert!(s.learning(&p, 2400));
        let over = run(&mut s, &p, 2400, 2400 + 3 * p.bucket_secs, |_| {
            p.hard_cap + 1
        });
        assert_eq!(
            over,
            vec![2400 + 2 * p.bucket_secs],
            "the cap fires after spike_buckets buckets"
        );
        let mut fresh = State::default();
        let Verdict::Fire(e) = ({
            fresh.observe(&p, 0, p.hard_cap + 1);
            fresh.observe(&p, 10, p.hard_cap + 1);
            fresh.observe(&p, 20, p.hard_cap + 1)
        }) else {
            panic!("a fresh account over the cap fires");
        };
        assert_eq!(e.why, "hard_cap");
    }

    #[test]
    fn a_quiet_account_needs_the_minimum_count() {
        let p = params();
        let mut s = State::default();
        assert!(run(&mut s, &p, 0, 86_400, |_| 1).is_empty());
        let mut same = s.clone();
        // 20× a baseline of 1 is far, but under spike_min_count (30).
        assert!(run(&mut s, &p, 86_400, 87_000, |_| 20).is_empty());
        assert!(!run(&mut same, &p, 86_400, 86_500, |_| 40).is_empty());
    }
}
