//! The `quarantine` action: an account held for `quarantine_secs`, for one caller or
//! for all. While held, the calls it covers must be read-only (one of
//! `broker.readonly_methods`, no body, no method override) and are capped at a rate a
//! minute (given by `detect`). A hold for a caller (an owner: a sandbox, or a host
//! uid; a `rate_spike` that names the callers who made it) covers that caller's calls
//! with the account's credential, each caller with its own minute's count; a hold for
//! the account (no caller singled out) covers every call carrying its credential,
//! through any handle, any caller, with one count.
//!
//! Owns: which accounts (and callers of them) are held, until when, and their minute's
//! count. Memory only: a restart lifts a quarantine (the detector that set it fires
//! again on the same evidence).
//! Must never: let a call that is not read-only through, or hold a value.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use super::super::handles::Owner;

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

/// Integration, account, and the caller held (`None`: every caller).
type Key = (String, String, Option<Owner>);

#[derive(Default)]
pub struct Quarantines {
    held: Mutex<HashMap<Key, Held>>,
}

impl Quarantines {
    /// Holds `integration`/`account` for `caller` (`None`: every caller) for `time` (a
    /// longer hold wins) at `per_minute` calls a minute; until when (wall clock).
    pub fn hold(
        &self,
        integration: &str,
        account: &str,
        caller: Option<Owner>,
        time: Duration,
        per_minute: u32,
        now: Instant,
    ) -> SystemTime {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.retain(|_, h| h.until > now);
        let until_wall = SystemTime::now() + time;
        let h = held
            .entry((integration.to_owned(), account.to_owned(), caller))
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

    /// Whether a call of `integration`/`account` by `caller` may go (`readonly`: see
    /// the module header): it must pass the account's hold and the caller's, if any;
    /// counted by each.
    pub fn admit(
        &self,
        integration: &str,
        account: &str,
        caller: Owner,
        readonly: bool,
        now: Instant,
    ) -> Result<(), Refusal> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.is_empty() {
            return Ok(());
        }
        for who in [None, Some(caller)] {
            let key = (integration.to_owned(), account.to_owned(), who);
            admit_one(&mut held, &key, readonly, now)?;
        }
        Ok(())
    }
}

/// One hold's judgement of a call.
fn admit_one(
    held: &mut HashMap<Key, Held>,
    key: &Key,
    readonly: bool,
    now: Instant,
) -> Result<(), Refusal> {
    let Some(h) = held.get_mut(key) else {
        return Ok(());
    };
    if h.until <= now {
        held.remove(key);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_account_takes_read_only_calls_up_to_its_rate_until_the_hold_ends() {
        let q = Quarantines::default();
        let t0 = Instant::now();
        let me = Owner::Host { uid: 1000 };
        assert_eq!(q.admit("gh", "ci", me, false, t0), Ok(()), "not held");
        q.hold("gh", "ci", None, Duration::from_secs(600), 2, t0);
        assert!(matches!(
            q.admit("gh", "ci", me, false, t0),
            Err(Refusal::NotReadOnly(_))
        ));
        assert_eq!(q.admit("gh", "ci", me, true, t0), Ok(()));
        assert_eq!(q.admit("gh", "ci", me, true, t0), Ok(()));
        assert!(matches!(
            q.admit("gh", "ci", me, true, t0),
            Err(Refusal::Rate(_))
        ));
        assert_eq!(
            q.admit("gh", "other", me, false, t0),
            Ok(()),
            "another account"
        );
        let next_minute = t0 + Duration::from_secs(60);
        assert_eq!(q.admit("gh", "ci", me, true, next_minute), Ok(()));
        let after = t0 + Duration::from_secs(601);
        assert_eq!(
            q.admit("gh", "ci", me, false, after),
            Ok(()),
            "the hold ended"
        );
    }

    #[test]
    fn a_held_caller_is_read_only_and_others_keep_full_service() {
        let q = Quarantines::default();
        let t0 = Instant::now();
        let flooder = Owner::Sandbox { cgroup_id: 7 };
        let other = Owner::Sandbox { cgroup_id: 8 };
        q.hold("gh", "ci", Some(flooder), Duration::from_secs(600), 1, t0);
        assert!(matches!(
            q.admit("gh", "ci", flooder, false, t0),
            Err(Refusal::NotReadOnly(_))
        ));
        assert_eq!(q.admit("gh", "ci", flooder, true, t0), Ok(()));
        assert!(matches!(
            q.admit("gh", "ci", flooder, true, t0),
            Err(Refusal::Rate(_))
        ));
        for _ in 0..10 {
            assert_eq!(q.admit("gh", "ci", other, false, t0), Ok(()), "not held");
        }
        assert_eq!(
            q.admit("gh", "other", flooder, false, t0),
            Ok(()),
            "another account"
        );
    }
}
