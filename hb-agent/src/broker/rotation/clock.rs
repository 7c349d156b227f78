//! The rotation engine's clock: what "now" is and how long a wait lasts for the
//! rotation steps, their backoff, the rotators' breakers, the `expiry` detector and the
//! `deadline_at_risk` alert.
//!
//! It is the wall clock. A debug build (never a release build) started with
//! `HB_TEST_ROTATION_CLOCK_SCALE=N` runs it N times faster, from the moment the agent
//! starts: hours of a provider outage (backoff up to its cap, breaker openings, a
//! credential's expiry nearing) pass in seconds, while the rotators, the provider and
//! the vault stay real. This is a test seam, not a setting: no config key reaches it.
//! The vault stamps its rows with the wall clock, so under a scaled clock the waits
//! measured from those stamps (a new key's propagation, the watch, the grace period)
//! are over almost at once. The rotator's `timeout_secs` is on this clock too (a
//! provider that never answers costs each try its timeout here, as in production),
//! so a scaled test gives it a timeout that is still long enough in real time for a
//! provider to answer; the outbound path's own limits (`broker.upstream_timeout_secs`,
//! the connect timeout) and the verify calls stay real time.
//!
//! Must never: be scaled in a release build, or go backwards.

use std::time::{Duration, Instant, SystemTime};

/// The environment variable a debug build reads (see the module doc).
pub const SCALE_ENV: &str = "HB_TEST_ROTATION_CLOCK_SCALE";

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// `None`: the wall clock; else the wall and monotonic times it started at and how
    /// many times faster it runs.
    scaled: Option<(SystemTime, Instant, u32)>,
}

impl Clock {
    /// The wall clock.
    pub const fn real() -> Self {
        Self { scaled: None }
    }

    /// The wall clock, or in a debug build a clock `SCALE_ENV` times faster.
    pub fn from_env() -> Self {
        if !cfg!(debug_assertions) {
            return Self::real();
        }
        let Some(scale) = std::env::var(SCALE_ENV)
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|s| *s > 1)
        else {
            return Self::real();
        };
        tracing::warn!(
            scale,
            "{SCALE_ENV}: the rotation engine's clock runs {scale} times faster (a test seam of debug builds)"
        );
        Self::scaled(SystemTime::now(), Instant::now(), scale)
    }

    const fn scaled(wall: SystemTime, mono: Instant, scale: u32) -> Self {
        Self {
            scaled: Some((wall, mono, scale)),
        }
    }

    /// Now, on this clock.
    pub fn now(&self) -> SystemTime {
        self.at(Instant::now())
    }

    fn at(&self, mono: Instant) -> SystemTime {
        match self.scaled {
            None => SystemTime::now(),
            Some((wall, start, scale)) => wall + mono.saturating_duration_since(start) * scale,
        }
    }

    /// How long `d` on this clock lasts in real time.
    pub fn real_duration(&self, d: Duration) -> Duration {
        match self.scaled {
            None => d,
            Some((_, _, scale)) => d / scale,
        }
    }

    /// Waits `d` on this clock.
    pub async fn sleep(&self, d: Duration) {
        tokio::time::sleep(self.real_duration(d)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scaled_clock_runs_faster_from_its_start_and_waits_shorter() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mono = Instant::now();
        let c = Clock::scaled(wall, mono, 600);
        assert_eq!(c.at(mono), wall);
        assert_eq!(
            c.at(mono + Duration::from_secs(6)),
            wall + Duration::from_secs(3600)
        );
        assert_eq!(
            c.real_duration(Duration::from_secs(3600)),
            Duration::from_secs(6)
        );
        assert_eq!(
            Clock::real().real_duration(Duration::from_secs(5)),
            Duration::from_secs(5)
        );
    }
}
