//! The `auth_failure` detector: an upstream's 401 to a call that carried a credential
//! sends one verify probe of the account's current value (concurrent 401s share it);
//! refused there too with a 401, the key is dead and the account is rotated (trigger
//! `auth_failure`), unless a rotation of it started less than `cooldown_secs` ago;
//! accepted, the 401 was about something else and nothing happens. A 403 or 429 says
//! the key is known but may not do this now (a spent rate limit: a sandbox can spend it
//! on purpose), never that it is dead.
//!
//! Owns: which accounts have a probe in flight or had one recently (at most one per
//! account every [`MIN_INTERVAL`], so a stream of 401s is one probe, not a storm).
//! Must never: probe with a value other than the one calls carry, or start a rotation
//! the journal would not (it refuses a second open rotation of an account).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use std::time::SystemTime;

use super::{super::credentials::usable_now, schedule::cooling_down, with_vault};
use crate::broker::state::Shared;

/// The least time between two probes of one account.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Probes {
    /// When each account's last probe started.
    started: Mutex<HashMap<(String, String), Instant>>,
}

impl Probes {
    /// Claims the account's probe slot; false while one ran less than `MIN_INTERVAL` ago.
    fn claim(&self, integration: &str, account: &str, now: Instant) -> bool {
        let mut started = self.started.lock().unwrap_or_else(PoisonError::into_inner);
        started.retain(|_, at| now.duration_since(*at) < MIN_INTERVAL);
        let key = (integration.to_owned(), account.to_owned());
        if started.contains_key(&key) {
            return false;
        }
        started.insert(key, now);
        true
    }
}

/// A call with a handle of `integration`/`account` got a 401 (after any propagation
/// retry): probe the account's key, once, in the background.
pub fn unauthorized(shared: &Arc<Shared>, integration: &str, account: &str) {
    if super::with_rotator(shared, integration).is_none()
        || !shared.probes.claim(integration, account, Instant::now())
    {
        return;
    }
    let (shared, integration, account) =
        (shared.clone(), integration.to_owned(), account.to_owned());
    tokio::spawn(async move { probe(&shared, &integration, &account).await });
}

/// One verify call with the account's current key; refused → rotate.
async fn probe(shared: &Arc<Shared>, integration: &str, account: &str) {
    let Some((integ, config)) = super::with_rotator(shared, integration) else {
        return;
    };
    let Ok(usable) = usable_now(shared, integration, account).await else {
        return;
    };
    let Some(current) = usable.first() else {
        return;
    };
    let verdict = super::verify(shared, integ, &current.secret).await;
    tracing::info!(integration, account, verdict = ?verdict, "auth_failure probe");
    if verdict != Ok(401) {
        return;
    }
    let since = SystemTime::now() - Duration::from_secs(config.cooldown_secs);
    let recent = with_vault(shared.vault.clone(), move |v| v.rotations(Some(since))).await;
    match recent {
        Ok(r) if !cooling_down(&r, integration, account, config, SystemTime::now()) => {
            super::detect::signal(
                shared,
                &super::detect::Signal {
                    detector: super::detect::Detector::AuthFailure,
                    trigger: "auth_failure",
                    integration,
                    account,
                    policy: "",
                    caller: None,
                    seen: "verify_probe",
                    handle: None,
                    execution: None,
                },
            );
        }
        Ok(_) => {
            tracing::warn!(
                integration,
                account,
                "auth_failure: the key is refused, but the account was rotated less than cooldown_secs ago; not rotated again"
            );
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_probe_per_account_per_interval() {
        let p = Probes::default();
        let t0 = Instant::now();
        assert!(p.claim("gh", "ci", t0));
        assert!(
            !p.claim("gh", "ci", t0 + Duration::from_secs(1)),
            "in flight"
        );
        assert!(p.claim("gh", "other", t0), "another account");
        assert!(p.claim("gh", "ci", t0 + MIN_INTERVAL), "after the interval");
    }
}
