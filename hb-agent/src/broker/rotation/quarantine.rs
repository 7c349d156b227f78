//! The `quarantine` action: an account held for `quarantine_secs`, during which calls
//! carrying its credential (through any handle, any caller) must be read-only (one of
//! `broker.readonly_methods`, no body, no method override) and are capped at a rate for
//! the account as a whole (its learned rate × 1.5, at least
//! `quarantine_calls_per_minute`: given by `detect`); the caller whose call raised the
//! signal, if one did, is ended (barred, see `cutoff`; not killed).
//!
//! Owns: which accounts are held, until when, and their minute's count. Memory only: a
//! restart lifts a quarantine (the detector that set it fires again on the same
//! evidence).
//! Must never: let a call that is not read-only through, or hold a value.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

/// Why a call of a quarantined account was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not read-only (method, body or method override).
    NotReadOnly(SystemTime),
    /// The account's calls this minute are spent.
    Rate(SystemTime),
}

struct Held {
    until: Instant,
    until_wall: SystemTime,
    per_minute: u32,
    window: Instant,
    used: u32,
}

#[derive(Default)]
pub struct Quarantines {
    held: Mutex<HashMap<(String, String), Held>>,
}

impl Quarantines {
    /// Holds `integration`/`account` for `time` (a longer hold wins) at `per_minute`
    /// calls a minute; until when (wall clock).
    pub fn hold(
        &self,
        integration: &str,
        account: &str,
        time: Duration,
        per_minute: u32,
        now: Instant,
    ) -> SystemTime {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.retain(|_, h| h.until > now);
        let until_wall = SystemTime::now() + time;
        let h = held
            .entry((integration.to_owned(), account.to_owned()))
            .or_insert(Held {
                until: now,
                until_wall,
                per_minute,
                window: now,
                used: 0,
            });
        if now + time > h.until {
            h.until = now + time;
            h.until_wall = until_wall;
        }
        h.per_minute = h.per_minute.min(per_minute);
        h.until_wall
    }

    /// Whether a call of `integration`/`account` may go (`readonly`: see the module
    /// header); counts it if so.
    pub fn admit(
        &self,
        integration: &str,
        account: &str,
        readonly: bool,
        now: Instant,
    ) -> Result<(), Refusal> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (integration.to_owned(), account.to_owned());
        let Some(h) = held.get_mut(&key) else {
            return Ok(());
        };
        if h.until <= now {
            held.remove(&key);
            return Ok(());
        }
        if !readonly {
            return Err(Refusal::NotReadOnly(h.until_wall));
        }
        if now.duration_since(h.window) >= Duration::from_secs(60) {
            h.window = now;
            h.used = 0;
        }
        if h.used >= h.per_minute {
            return Err(Refusal::Rate(h.until_wall));
        }
        h.used += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_account_takes_read_only_calls_up_to_its_rate_until_the_hold_ends() {
        let q = Quarantines::default();
        let t0 = Instant::now();
        assert_eq!(q.admit("gh", "ci", false, t0), Ok(()), "not held");
        q.hold("gh", "ci", Duration::from_secs(600), 2, t0);
        assert!(matches!(
            q.admit("gh", "ci", false, t0),
            Err(Refusal::NotReadOnly(_))
        ));
        assert_eq!(q.admit("gh", "ci", true, t0), Ok(()));
        assert_eq!(q.admit("gh", "ci", true, t0), Ok(()));
        assert!(matches!(
            q.admit("gh", "ci", true, t0),
            Err(Refusal::Rate(_))
        ));
        assert_eq!(q.admit("gh", "other", false, t0), Ok(()), "another account");
        let next_minute = t0 + Duration::from_secs(60);
        assert_eq!(q.admit("gh", "ci", true, next_minute), Ok(()));
        let after = t0 + Duration::from_secs(601);
        assert_eq!(q.admit("gh", "ci", false, after), Ok(()), "the hold ended");
    }
}
