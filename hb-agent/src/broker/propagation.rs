//! A new key the upstream does not take yet: which of an account's keys a call tries
//! first, and the one retry with the other.
//!
//! Providers take seconds to minutes to make a new key valid everywhere. While the
//! newest key is younger than the integration's `propagation_secs` and a previous one
//! is still in its grace period, an upstream's 401 to one of the two is sent once more
//! with the other ([`retry_with_other`]). Once the upstream refused the newest and took
//! the previous one in its place, the account's calls try the previous key first for
//! [`REPROBE`], then the newest again: a propagation costs the callers a second round
//! trip every [`REPROBE`], not one on every call of the window (nor the provider a 401
//! per call in its logs). A 401 to both keys is no propagation: a path that refuses
//! every key, which any caller may choose, moves none of the account's other callers
//! (attack review 14).
//!
//! Owns: the accounts whose newest key the upstream refused within its window moments
//! ago ([`Propagation`]).
//! Must never: order a key that is not in the account's usable list (a compromised key
//! has no grace period, so it never is), or put the previous key first once the newest
//! is out of its window.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use super::accounts::Current;

/// How long an account's calls try the previous key first after the upstream refused
/// the newest within its window; the first call after it tries the newest again.
pub const REPROBE: Duration = Duration::from_secs(1);

/// The vault's resolution of times.
const ROUNDING: Duration = Duration::from_secs(1);

/// (integration, account).
type Key = (String, String);

/// The newest key the upstream refused, and when.
struct Refusal {
    credential_id: String,
    at: Instant,
}

/// The accounts whose newest key the upstream refused within its propagation window.
#[derive(Default)]
pub struct Propagation {
    refused: Mutex<HashMap<Key, Refusal>>,
}

impl Propagation {
    /// The key of `usable` (the active key first) a call tries first: the previous key
    /// while the upstream refused the newest less than [`REPROBE`] ago and the newest is
    /// still in its window; else the active one.
    pub fn first(
        &self,
        key: &Key,
        usable: &[Arc<Current>],
        propagation: Duration,
    ) -> Option<Arc<Current>> {
        let newest = usable.first()?;
        let recently_refused = self
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .is_some_and(|r| r.credential_id == newest.credential_id && r.at.elapsed() < REPROBE);
        match usable.get(1) {
            Some(previous)
                if recently_refused && in_window(newest, propagation, SystemTime::now()) =>
            {
                Some(previous.clone())
            }
            _ => Some(newest.clone()),
        }
    }

    /// The upstream answered a call's tries (`answers`: each key's id and the status,
    /// in order; the newest key is `newest`). A 401 to the newest while another key
    /// was taken in its place (a status other than 401) is a propagation and is
    /// remembered; any other answer to the newest forgets the account — a 401 to every
    /// key says nothing about propagation (a path that refuses them all, a previous key
    /// the provider already revoked), and must not put the previous key first for the
    /// account's other callers. Tries without the newest change nothing.
    pub fn answered(&self, key: &Key, newest: &str, answers: &[(&str, u16)]) {
        let Some(&(_, to_newest)) = answers.iter().find(|(id, _)| *id == newest) else {
            return;
        };
        let other_taken = answers.iter().any(|&(id, s)| id != newest && s != 401);
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        if to_newest == 401 && other_taken {
            refused.insert(
                key.clone(),
                Refusal {
                    credential_id: newest.to_owned(),
                    at: Instant::now(),
                },
            );
        } else {
            refused.remove(key);
        }
    }
}

/// Whether `newest` became active less than `propagation` ago. The vault keeps whole
/// seconds, so the window is measured from the start of the second the switch happened
/// in, a second longer: never shorter than `propagation`.
fn in_window(newest: &Current, propagation: Duration, now: SystemTime) -> bool {
    !propagation.is_zero()
        && (now
            .duration_since(newest.created)
            .is_ok_and(|age| age < propagation + ROUNDING)
            || newest.created > now)
}

/// Whether an upstream's 401 to `tried` is worth one retry with the account's other
/// usable key: the newest (`usable[0]`) is in its window and a previous one is still
/// usable; `tried` was one of the two, and the retry goes to the other.
pub fn retry_with_other(
    usable: &[Arc<Current>],
    tried: &str,
    status: u16,
    propagation: Duration,
    now: SystemTime,
) -> Option<Arc<Current>> {
    let (newest, previous) = (usable.first()?, usable.get(1)?);
    if status != 401 || !in_window(newest, propagation, now) {
        return None;
    }
    if tried == newest.credential_id {
        Some(previous.clone())
    } else if tried == previous.credential_id {
        Some(newest.clone())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        secret::Secret,
        vault::{CredentialMeta, Status},
    };

    fn current(id: &str, created: SystemTime) -> Arc<Current> {
        let meta = CredentialMeta {
            id: id.into(),
            integration: "gh".into(),
            account: "bot".into(),
            status: Status::Active,
            created,
            expires: None,
            rotated_from: None,
            grace_until: None,
            revoked: None,
        };
        Arc::new(Current::new(&meta, Secret::new(b"v".to_vec())))
    }

    #[test]
    fn a_401_is_retried_with_the_other_key_only_while_the_new_one_is_young() {
        let now = SystemTime::now();
        let young = vec![
            current("n", now - Duration::from_secs(5)),
            current("o", now),
        ];
        let p = Duration::from_secs(30);
        let other = |list: &[Arc<Current>], tried, status, p| {
            retry_with_other(list, tried, status, p, now).map(|c| c.credential_id.clone())
        };
        assert_eq!(other(&young, "n", 401, p), Some("o".into()));
        assert_eq!(other(&young, "o", 401, p), Some("n".into()));
        assert_eq!(other(&young, "x", 401, p), None, "a key of neither");
        assert_eq!(other(&young, "n", 403, p), None);
        assert_eq!(other(&young, "n", 200, p), None);
        let old = vec![
            current("n", now - Duration::from_secs(60)),
            current("o", now),
        ];
        assert_eq!(other(&old, "n", 401, p), None);
        // Whole seconds in the vault: a switch stored as second S happened before S + 1.
        let edge = vec![
            current("n", now - Duration::from_millis(30_500)),
            current("o", now),
        ];
        assert_eq!(other(&edge, "n", 401, p), Some("o".into()));
        assert_eq!(
            other(&young, "n", 401, Duration::ZERO),
            None,
            "propagation_secs = 0: no retry"
        );
        assert_eq!(other(&young[..1], "n", 401, p), None);
    }

    #[test]
    fn the_previous_key_goes_first_only_briefly_after_the_newest_was_refused() {
        let now = SystemTime::now();
        let key = ("gh".to_owned(), "bot".to_owned());
        let p = Duration::from_secs(30);
        let young = [
            current("n", now - Duration::from_secs(5)),
            current("o", now),
        ];
        let memory = Propagation::default();
        let first = |k: &Key, list: &[Arc<Current>]| {
            memory.first(k, list, p).map(|c| c.credential_id.clone())
        };
        assert_eq!(first(&key, &young).as_deref(), Some("n"));
        // A 401 to the previous key says nothing about the newest.
        memory.answered(&key, "n", &[("o", 401)]);
        assert_eq!(first(&key, &young).as_deref(), Some("n"));
        // A 401 to every key is no propagation (attack review 14): nothing moves.
        memory.answered(&key, "n", &[("n", 401), ("o", 401)]);
        assert_eq!(first(&key, &young).as_deref(), Some("n"));
        memory.answered(&key, "n", &[("n", 401)]);
        assert_eq!(first(&key, &young).as_deref(), Some("n"));
        // The newest refused, the previous taken: a propagation.
        memory.answered(&key, "n", &[("n", 401), ("o", 200)]);
        assert_eq!(first(&key, &young).as_deref(), Some("o"));
        // The previous key taken again says nothing more; both refused forgets.
        memory.answered(&key, "n", &[("o", 200)]);
        assert_eq!(first(&key, &young).as_deref(), Some("o"));
        memory.answered(&key, "n", &[("o", 401), ("n", 401)]);
        assert_eq!(first(&key, &young).as_deref(), Some("n"));
        memory.answered(&key, "n", &[("n", 401), ("o", 200)]);
        assert_eq!(first(&key, &young).as_deref(), Some("o"));
        let other = ("gh".to_owned(), "admin".to_owned());
        assert_eq!(first(&other, &young).as_deref(), Some("n"));
        // Out of its window, rotated again, or no previous key: the active key first.
        let aged = [
            current("n", now - Duration::from_secs(60)),
            current("o", now),
        ];
        assert_eq!(first(&key, &aged).as_deref(), Some("n"));
        let rotated = [current("m", now), current("n", now)];
        assert_eq!(first(&key, &rotated).as_deref(), Some("m"));
        assert_eq!(first(&key, &young[..1]).as_deref(), Some("n"));
        assert_eq!(first(&key, &[]), None);
        // The upstream took the newest (after the previous was refused): forgotten.
        memory.answered(&key, "n", &[("o", 401), ("n", 200)]);
        assert_eq!(first(&key, &young).as_deref(), Some("n"));
        // Refused again, then REPROBE later the newest is tried first again.
        memory.answered(&key, "n", &[("n", 401), ("o", 200)]);
        assert_eq!(first(&key, &young).as_deref(), Some("o"));
        for r in memory.refused.lock().expect("lock").values_mut() {
            r.at -= REPROBE;
        }
        assert_eq!(first(&key, &young).as_deref(), Some("n"));
    }
}
