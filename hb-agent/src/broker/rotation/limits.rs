//! How often an account may be rotated: what the journal says about the last 24 hours.
//!
//! Two budgets per account, both counted from the rotations journal (so a restart does
//! not reset them), over a sliding window of [`WINDOW`]:
//! - `max_rotations_per_day`: every rotation begun in the window counts, whatever its
//!   trigger or fate; a *routine* rotation (`expiry`, `auth_failure`) is refused past
//!   it, and also within `cooldown_secs` of the last one's start;
//! - `max_compromise_rotations_per_day`: rotations begun by the `canary` and
//!   `reflection` detectors; those skip the cooldown and the first budget (a real leak
//!   must not wait for an expiry storm to pass) but not this one, so a sandbox that
//!   burns its own account's key on purpose gets at most this many new keys a day.
//!   The last of them is kept for evidence that a caller had the key in hand (it sent
//!   the key, or a piece of it): any other compromise signal (an upstream's echo of the
//!   key its call carried, a key in an answer, a decoy used) a caller can raise at will,
//!   at most at the cost of its sandbox, and a tenant sharing the account must not
//!   leave a real leak later that day only alerted about.
//!
//! An operator's `rotation trigger` is never refused here (it counts).
//! Must never: read a value (only the journal's rows), or count another account's rows.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::{config::RotationConfig, vault::Rotation};

/// The sliding window the per-day limits count over.
pub const WINDOW: Duration = Duration::from_secs(86_400);

/// The journal's triggers of the compromise detectors.
pub fn compromise_trigger(trigger: &str) -> bool {
    matches!(trigger, "canary" | "reflection")
}

/// An account's use of its budgets at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// Rotations begun in the window (every trigger).
    #[serde(rename = "rotations_24h")]
    pub rotations: u32,
    #[serde(rename = "max_rotations_per_day")]
    pub max_rotations: u32,
    /// Of them, begun by `canary` or `reflection`.
    #[serde(rename = "compromise_rotations_24h")]
    pub compromise: u32,
    #[serde(rename = "max_compromise_rotations_per_day")]
    pub max_compromise: u32,
    /// A routine rotation may not begin before this (the last start + `cooldown_secs`).
    #[serde(serialize_with = "rfc3339_opt")]
    pub cooldown_until: Option<SystemTime>,
    /// When the oldest counted rotation leaves the window (one more fits then).
    #[serde(serialize_with = "rfc3339_opt")]
    pub frees_at: Option<SystemTime>,
    /// The same, for the compromise budget.
    #[serde(serialize_with = "rfc3339_opt")]
    pub compromise_frees_at: Option<SystemTime>,
}

/// What asks for a rotation, and so which budget it may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Age or a dead key (`expiry`, `auth_failure`): the cooldown and
    /// `max_rotations_per_day`.
    Routine,
    /// A caller had the key in hand (it sent the key, or a piece of it):
    /// `max_compromise_rotations_per_day`.
    Leak,
    /// Any other compromise signal (a key caught in an answer, a decoy used): all but
    /// the last of `max_compromise_rotations_per_day`, which is kept for a
    /// [`Evidence::Leak`].
    Suspicion,
}

/// Whether a detector's rotation may begin now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// A routine rotation within `cooldown_secs` of the last start.
    CoolingDown(SystemTime),
    /// A budget is spent until `until`; `limit` is its config key.
    Capped {
        limit: &'static str,
        count: u32,
        cap: u32,
        until: SystemTime,
    },
}

/// The budgets of `integration`/`account` from `rotations` (the journal's rows begun in
/// the last [`WINDOW`] at least; older rows are ignored).
pub fn budget(
    rotations: &[Rotation],
    integration: &str,
    account: &str,
    config: &RotationConfig,
    now: SystemTime,
) -> Budget {
    let start = now.checked_sub(WINDOW).unwrap_or(SystemTime::UNIX_EPOCH);
    let mine: Vec<&Rotation> = rotations
        .iter()
        .filter(|r| r.integration == integration && r.account == account && r.started > start)
        .collect();
    let compromise: Vec<&Rotation> = mine
        .iter()
        .copied()
        .filter(|r| compromise_trigger(&r.trigger))
        .collect();
    let oldest = |rows: &[&Rotation]| rows.iter().map(|r| r.started).min().map(|t| t + WINDOW);
    let last = mine.iter().map(|r| r.started).max();
    Budget {
        rotations: u32::try_from(mine.len()).unwrap_or(u32::MAX),
        max_rotations: config.max_rotations_per_day,
        compromise: u32::try_from(compromise.len()).unwrap_or(u32::MAX),
        max_compromise: config.max_compromise_rotations_per_day,
        cooldown_until: last
            .map(|t| t + Duration::from_secs(config.cooldown_secs))
            .filter(|t| *t > now),
        frees_at: oldest(&mine),
        compromise_frees_at: oldest(&compromise),
    }
}

impl Budget {
    /// May a rotation asked for by `evidence` begin now (see the module header).
    pub fn gate(&self, evidence: Evidence, now: SystemTime) -> Gate {
        let (limit, cap) = match evidence {
            Evidence::Routine => return self.routine_gate(now),
            Evidence::Leak => ("max_compromise_rotations_per_day", self.max_compromise),
            Evidence::Suspicion => ("compromise_reserve", self.max_compromise.saturating_sub(1)),
        };
        if self.compromise >= cap {
            return Gate::Capped {
                limit,
                count: self.compromise,
                cap,
                until: self.compromise_frees_at.unwrap_or(now),
            };
        }
        Gate::Open
    }

    fn routine_gate(&self, now: SystemTime) -> Gate {
        if let Some(until) = self.cooldown_until.filter(|t| *t > now) {
            return Gate::CoolingDown(until);
        }
        if self.rotations >= self.max_rotations {
            return Gate::Capped {
                limit: "max_rotations_per_day",
                count: self.rotations,
                cap: self.max_rotations,
                until: self.frees_at.unwrap_or(now),
            };
        }
        Gate::Open
    }

    /// Rotations that may still begin in the window: (routine, compromise).
    pub fn remaining(&self) -> (u32, u32) {
        (
            self.max_rotations.saturating_sub(self.rotations),
            self.max_compromise.saturating_sub(self.compromise),
        )
    }
}

fn rfc3339_opt<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&humantime::format_rfc3339_seconds(*t).to_string()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::Step;

    fn config() -> RotationConfig {
        toml::from_str(
            "exec = [\"/bin/true\"]\ncooldown_secs = 300\nmax_rotations_per_day = 3\n\
             max_compromise_rotations_per_day = 2\n",
        )
        .expect("rotation config")
    }

    fn row(account: &str, trigger: &str, started: SystemTime) -> Rotation {
        Rotation {
            id: format!("rot_{trigger}"),
            integration: "gh".into(),
            account: account.into(),
            trigger: trigger.into(),
            compromised: compromise_trigger(trigger),
            step: Step::Retired,
            old_id: "cred_a".into(),
            new_id: Some("cred_b".into()),
            attempt: 0,
            create_calls: 1,
            next_attempt: None,
            last_error: None,
            started,
            updated: started,
        }
    }

    #[test]
    fn compromise_rotations_skip_the_cooldown_but_not_their_own_cap() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000_000);
        let c = config();
        let fresh = budget(&[], "gh", "ci", &c, now);
        assert_eq!(fresh.gate(Evidence::Leak, now), Gate::Open);
        assert_eq!(fresh.gate(Evidence::Routine, now), Gate::Open);
        assert_eq!(fresh.remaining(), (3, 2));
        let one = [row("ci", "reflection", now - Duration::from_secs(10))];
        let b = budget(&one, "gh", "ci", &c, now);
        assert_eq!(
            b.gate(Evidence::Leak, now),
            Gate::Open,
            "no cooldown for a compromise"
        );
        assert_eq!(
            b.gate(Evidence::Routine, now),
            Gate::CoolingDown(now + Duration::from_secs(290)),
            "a routine one waits"
        );
        let two = [
            row("ci", "canary", now - Duration::from_secs(3600)),
            row("ci", "reflection", now - Duration::from_secs(10)),
            // Another account's and one outside the window do not count.
            row("other", "reflection", now),
            row("ci", "reflection", now - WINDOW - Duration::from_secs(1)),
        ];
        let b = budget(&two, "gh", "ci", &c, now);
        assert_eq!((b.rotations, b.compromise), (2, 2));
        assert_eq!(
            b.gate(Evidence::Leak, now),
            Gate::Capped {
                limit: "max_compromise_rotations_per_day",
                count: 2,
                cap: 2,
                until: now - Duration::from_secs(3600) + WINDOW,
            }
        );
        assert_eq!(b.remaining(), (1, 0));
    }

    #[test]
    fn a_suspicion_leaves_the_last_compromise_rotation_to_a_leak() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000_000);
        let c = config();
        let fresh = budget(&[], "gh", "ci", &c, now);
        assert_eq!(fresh.gate(Evidence::Suspicion, now), Gate::Open);
        let one = [row("ci", "reflection", now - Duration::from_secs(60))];
        let b = budget(&one, "gh", "ci", &c, now);
        assert_eq!(
            b.gate(Evidence::Suspicion, now),
            Gate::Capped {
                limit: "compromise_reserve",
                count: 1,
                cap: 1,
                until: now - Duration::from_secs(60) + WINDOW,
            },
            "a suspicion may not take the last"
        );
        assert_eq!(b.gate(Evidence::Leak, now), Gate::Open, "a leak may");
        let mut single = c.clone();
        single.max_compromise_rotations_per_day = 1;
        assert!(
            matches!(
                budget(&[], "gh", "ci", &single, now).gate(Evidence::Suspicion, now),
                Gate::Capped { cap: 0, .. }
            ),
            "a budget of one is a leak's"
        );
    }

    #[test]
    fn routine_rotations_stop_at_the_daily_cap() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000_000);
        let c = config();
        let hours = |h: u64| now - Duration::from_secs(3600 * h);
        let rows = [
            row("ci", "expiry", hours(20)),
            row("ci", "manual", hours(10)),
            row("ci", "auth_failure", hours(1)),
        ];
        let b = budget(&rows, "gh", "ci", &c, now);
        assert_eq!(
            b.gate(Evidence::Routine, now),
            Gate::Capped {
                limit: "max_rotations_per_day",
                count: 3,
                cap: 3,
                until: hours(20) + WINDOW,
            }
        );
        assert_eq!(
            b.gate(Evidence::Leak, now),
            Gate::Open,
            "a leak still rotates"
        );
        // Once the oldest leaves the window, one fits again.
        let later = hours(20) + WINDOW + Duration::from_secs(1);
        assert_eq!(
            budget(&rows, "gh", "ci", &c, later).gate(Evidence::Routine, later),
            Gate::Open
        );
    }
}
