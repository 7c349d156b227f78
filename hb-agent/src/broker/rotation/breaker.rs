//! A circuit breaker per rotator (per integration): a provider that is down is not
//! called by every open rotation at every retry.
//!
//! Closed: calls go through; `breaker_failures` retryable failures in a row (exit 75, a
//! timeout, a refused connection, a 5xx or 429) open it. Open: no rotation of the
//! integration calls the rotator until `breaker_open_secs` have passed. Then half-open:
//! one call (a trial) goes through, the others wait; its success (or any answer that is
//! not an outage: the provider is up) closes the breaker, its failure opens it again for
//! twice as long as the last time, at most `breaker_open_cap_secs`. Each opening and
//! closing is an event (`rotator_breaker_open`, `rotator_breaker_closed`) and an audit
//! record. The states are written to `state_dir/breakers.json` after each change, for
//! `hb-agent rotation status`, and read back when the agent starts: an agent restarted
//! during an outage keeps its breakers open (and its count of failures in a row), so a
//! restart is not a way to hammer a provider that is down.
//!
//! Must never: hold a value or a provider's text (integration names, counts, times).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::config::RotationConfig;

/// File name below `state_dir`.
pub const FILE: &str = "breakers.json";

/// One rotator's breaker.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BreakerState {
    /// `closed`, `open` or `half_open` (as of the last change; `open_until` in the
    /// past means half-open).
    pub state: String,
    /// Retryable failures in a row.
    pub consecutive_failures: u32,
    /// Times it opened since it was last closed (each one twice as long).
    pub openings: u32,
    /// RFC 3339 (UTC, seconds): when an open breaker lets a trial call through.
    #[serde(default)]
    pub open_until: Option<String>,
    /// The class of the last failure that counted (a fixed word).
    #[serde(default)]
    pub last_failure: Option<String>,
    #[serde(skip)]
    until: Option<SystemTime>,
    #[serde(skip)]
    trial: bool,
}

/// Whether a call may go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Go,
    /// Not before this long (open, or a trial of the half-open breaker is out).
    Wait(Duration),
}

/// A change worth an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Opened until then, after this many failures in a row (the `n`th opening).
    Opened {
        until: SystemTime,
        failures: u32,
        opening: u32,
    },
    Closed,
}

/// What a rotator call came to, for its breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider answered (a success, or a refusal that says it is up).
    Answered,
    /// An outage: retried later; counts.
    RetryLater(&'static str),
}

pub struct Breakers {
    path: Option<PathBuf>,
    states: Mutex<BTreeMap<String, BreakerState>>,
}

impl Breakers {
    /// Every breaker closed, kept in memory only.
    #[cfg(test)]
    pub fn new() -> Self {
        Self {
            path: None,
            states: Mutex::new(BTreeMap::new()),
        }
    }

    /// The breakers as the agent last wrote them below `state_dir` (an open one stays
    /// open until its `open_until`; a trial that was out when the agent stopped is
    /// free again), or every breaker closed if there are none or they are unreadable.
    pub fn open(state_dir: &Path, now: SystemTime) -> Self {
        let path = state_dir.join(FILE);
        let states = std::fs::read(&path)
            .ok()
            .and_then(|text| serde_json::from_slice::<BTreeMap<String, BreakerState>>(&text).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|(integration, b)| (integration, restored(b, now)))
            .collect::<BTreeMap<_, _>>();
        let me = Self {
            path: Some(path),
            states: Mutex::new(BTreeMap::new()),
        };
        me.write(&states);
        *me.states.lock().unwrap_or_else(PoisonError::into_inner) = states;
        me
    }

    /// Whether `integration`'s rotator may be called at `now`.
    pub fn admit(&self, integration: &str, now: SystemTime) -> Admit {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(b) = states.get_mut(integration) else {
            return Admit::Go;
        };
        let Some(until) = b.until else {
            return Admit::Go;
        };
        if let Ok(left) = until.duration_since(now)
            && !left.is_zero()
        {
            return Admit::Wait(left);
        }
        if b.trial {
            // One trial at a time; the others look again shortly.
            return Admit::Wait(Duration::from_secs(1));
        }
        b.trial = true;
        b.state = "half_open".into();
        let snapshot = states.clone();
        self.write(&snapshot);
        Admit::Go
    }

    /// A call [`Breakers::admit`] let through was not made after all: a half-open
    /// breaker's trial slot is free again.
    pub fn release(&self, integration: &str) {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = states.get_mut(integration) {
            b.trial = false;
        }
    }

    /// Records a call's outcome; the change it made, if any.
    pub fn record(
        &self,
        integration: &str,
        config: &RotationConfig,
        outcome: Outcome,
        now: SystemTime,
    ) -> Option<Change> {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let b = states.entry(integration.to_owned()).or_default();
        let change = step(b, config, outcome, now);
        let snapshot = states.clone();
        drop(states);
        if change.is_some() || outcome != Outcome::Answered {
            self.write(&snapshot);
        }
        change
    }

    fn write(&self, states: &BTreeMap<String, BreakerState>) {
        let Some(path) = &self.path else {
            return;
        };
        if let Err(e) = write(path, states) {
            tracing::warn!(error = %e, path = %path.display(), "cannot write the rotators' breakers");
        }
    }
}

/// A breaker as read back from its file: its opening time restored (an unreadable
/// one means half-open: one trial, then the usual doubling).
fn restored(mut b: BreakerState, now: SystemTime) -> BreakerState {
    b.trial = false;
    b.until = match b.state.as_str() {
        "open" | "half_open" => Some(
            b.open_until
                .as_deref()
                .and_then(|u| humantime::parse_rfc3339(u).ok())
                .unwrap_or(now),
        ),
        _ => None,
    };
    b
}

/// One breaker's transition.
fn step(
    b: &mut BreakerState,
    config: &RotationConfig,
    outcome: Outcome,
    now: SystemTime,
) -> Option<Change> {
    match outcome {
        Outcome::Answered => {
            let was_open = b.until.is_some();
            *b = BreakerState {
                state: "closed".into(),
                ..BreakerState::default()
            };
            was_open.then_some(Change::Closed)
        }
        Outcome::RetryLater(class) => {
            b.consecutive_failures = b.consecutive_failures.saturating_add(1);
            b.last_failure = Some(class.to_owned());
            let trial_failed = b.trial;
            b.trial = false;
            if !trial_failed && b.until.is_some() {
                // A call admitted before the breaker opened, failing after: counted only.
                return None;
            }
            if !trial_failed && b.consecutive_failures < config.breaker_failures {
                b.state = "closed".into();
                return None;
            }
            let open_for = Duration::from_secs(
                config
                    .breaker_open_secs
                    .saturating_mul(1u64 << b.openings.min(30))
                    .min(config.breaker_open_cap_secs),
            );
            b.openings = b.openings.saturating_add(1);
            let until = now + open_for;
            b.until = Some(until);
            b.open_until = Some(humantime::format_rfc3339_seconds(until).to_string());
            b.state = "open".into();
            Some(Change::Opened {
                until,
                failures: b.consecutive_failures,
                opening: b.openings,
            })
        }
    }
}

fn write(path: &Path, states: &BTreeMap<String, BreakerState>) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o640)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(states).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, path)
}

/// The breakers as the agent last wrote them (for the CLI); `None` if none were.
pub fn read(state_dir: &Path) -> Option<BTreeMap<String, BreakerState>> {
    let text = std::fs::read(state_dir.join(FILE)).ok()?;
    let mut states: BTreeMap<String, BreakerState> = serde_json::from_slice(&text).ok()?;
    // An open breaker whose time is up lets its next call through.
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    for b in states.values_mut() {
        if b.state == "open" && b.open_until.as_deref().is_some_and(|u| u <= now.as_str()) {
            b.state = "half_open".into();
        }
    }
    Some(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RotationConfig {
        toml::from_str(
            "exec = [\"/bin/true\"]\nbreaker_failures = 3\nbreaker_open_secs = 10\n\
             breaker_open_cap_secs = 25\n",
        )
        .expect("config")
    }

    #[test]
    fn an_open_breaker_is_still_open_after_a_restart() {
        let dir = std::env::temp_dir().join(format!(
            "hb-breakers-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let c = config();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let fail = Outcome::RetryLater("rotator_unreachable");
        let before = Breakers::open(&dir, t0);
        for _ in 0..3 {
            before.record("p", &c, fail, t0);
        }
        before.record("q", &c, fail, t0);
        assert!(matches!(before.admit("p", t0), Admit::Wait(_)));
        drop(before);
        // The agent starts again 4 s later: 6 s of the opening are left.
        let after = Breakers::open(&dir, t0 + Duration::from_secs(4));
        assert_eq!(
            after.admit("p", t0 + Duration::from_secs(4)),
            Admit::Wait(Duration::from_secs(6))
        );
        // Then one trial; its failure opens it for twice as long (the openings kept).
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(after.admit("p", t1), Admit::Go);
        assert!(matches!(
            after.record("p", &c, fail, t1),
            Some(Change::Opened { opening: 2, .. })
        ));
        // A closed breaker's failures in a row are kept too.
        assert_eq!(after.admit("q", t0), Admit::Go);
        assert_eq!(after.record("q", &c, fail, t0), None);
        assert!(matches!(
            after.record("q", &c, fail, t0),
            Some(Change::Opened { failures: 3, .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn opens_after_k_failures_in_a_row_and_closes_after_a_good_trial() {
        let b = Breakers::new();
        let c = config();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let fail = Outcome::RetryLater("rotator_http_5xx");
        assert_eq!(b.record("p", &c, fail, t0), None);
        // An answer in between resets the count.
        assert_eq!(b.record("p", &c, Outcome::Answered, t0), None);
        assert_eq!(b.record("p", &c, fail, t0), None);
        assert_eq!(b.record("p", &c, fail, t0), None);
        assert_eq!(b.admit("p", t0), Admit::Go);
        let opened = b.record("p", &c, fail, t0);
        assert_eq!(
            opened,
            Some(Change::Opened {
                until: t0 + Duration::from_secs(10),
                failures: 3,
                opening: 1
            })
        );
        assert_eq!(
            b.admit("p", t0 + Duration::from_secs(4)),
            Admit::Wait(Duration::from_secs(6))
        );
        assert_eq!(b.admit("other", t0), Admit::Go, "per rotator");
        // Half-open: one trial, the others wait.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.admit("p", t1), Admit::Go);
        assert!(matches!(b.admit("p", t1), Admit::Wait(_)));
        // A trial admitted but not made gives its slot back.
        b.release("p");
        assert_eq!(b.admit("p", t1), Admit::Go);
        // The trial fails: open for twice as long, then capped.
        let again = b.record("p", &c, fail, t1);
        assert!(
            matches!(again, Some(Change::Opened { until, opening: 2, .. }) if until == t1 + Duration::from_secs(20)),
            "{again:?}"
        );
        let t2 = t1 + Duration::from_secs(20);
        assert_eq!(b.admit("p", t2), Admit::Go);
        let capped = b.record("p", &c, fail, t2);
        assert!(
            matches!(capped, Some(Change::Opened { until, .. }) if until == t2 + Duration::from_secs(25)),
            "{capped:?}"
        );
        let t3 = t2 + Duration::from_secs(25);
        assert_eq!(b.admit("p", t3), Admit::Go);
        assert_eq!(
            b.record("p", &c, Outcome::Answered, t3),
            Some(Change::Closed)
        );
        assert_eq!(b.admit("p", t3), Admit::Go);
        assert_eq!(
            b.record("p", &c, fail, t3),
            None,
            "counting from zero again"
        );
    }
}
