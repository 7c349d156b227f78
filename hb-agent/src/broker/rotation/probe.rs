//! The `auth_failure` detector: an upstream's 401 to a call that carried a credential
//! sends one verify probe of the account's current value (concurrent 401s share it);
//! refused there too with a 401, the key is dead and the account is rotated (trigger
//! `auth_failure`), unless a rotation of it started less than `cooldown_secs` ago;
//! accepted, the 401 was about something else and nothing happens. A 403 or 429 says
//! the key is known but may not do this now (a spent rate limit: a sandbox can spend it
//! on purpose), never that it is dead.
//!
//! The probe's [`Verdict`] is published to every call held on a 401 of the account
//! (`broker::requests`): it comes once the key is found working, or once the rotation
//! the dead key started — or the account's rotation that was already open before its
//! switch when the key died — has made a new key active (or failed, or outlasted
//! `hold_secs`).
//!
//! Owns: which accounts have a probe in flight or had one recently (at most one per
//! account every [`MIN_INTERVAL`], and never two at once however long one runs, so a
//! stream of 401s is one probe, not a storm), and each one's verdict.
//! Must never: probe with a value other than the one calls carry, or start a rotation
//! the journal would not (it refuses a second open rotation of an account).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::watch;

use super::{super::credentials::usable_now, detect::Outcome, schedule::cooling_down, with_vault};
use crate::{broker::state::Shared, vault::Step};

/// The least time between two probes of one account.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);

/// How often a probe that started a rotation looks at its step.
const ROTATION_POLL: Duration = Duration::from_millis(100);

/// What the probe of an account found, for the calls held on its 401s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The key is not shown dead (accepted at `verify_url`, or a 403, 429 or outage
    /// there): the 401 was about something else and passes through.
    NotDead,
    /// The key is dead and a rotation made a new key active: send again with it.
    Replaced,
    /// The key is dead and nothing replaced it (a fixed word says why).
    NotReplaced(&'static str),
}

/// A held call's view of its account's probe: `None` until the verdict is in.
pub type Pending = watch::Receiver<Option<Verdict>>;

/// An account's probe slot as claimed by a 401.
enum Claim {
    /// No probe ran recently: this call's 401 starts one, publishing here.
    New(watch::Sender<Option<Verdict>>),
    /// A probe ran less than `MIN_INTERVAL` ago (or is running): its verdict.
    Joined(Pending),
}

type Account = (String, String);

#[derive(Default)]
pub struct Probes {
    /// When each account's last probe started, and its verdict.
    started: Mutex<HashMap<Account, (Instant, Pending)>>,
}

impl Probes {
    /// Claims the account's probe slot; joins the probe that started less than
    /// `MIN_INTERVAL` ago if there is one.
    fn claim(&self, integration: &str, account: &str, now: Instant) -> Claim {
        let mut started = self.started.lock().unwrap_or_else(PoisonError::into_inner);
        // A probe still running is joined however long it runs (its verify call is
        // bounded by `broker.upstream_timeout_secs`, its wait for a rotation by
        // `hold_secs`): a slow `verify_url` must not let a second one start.
        started
            .retain(|_, (at, pending)| now.duration_since(*at) < MIN_INTERVAL || running(pending));
        let key = (integration.to_owned(), account.to_owned());
        if let Some((_, pending)) = started.get(&key) {
            return Claim::Joined(pending.clone());
        }
        let (tx, rx) = watch::channel(None);
        started.insert(key, (now, rx));
        Claim::New(tx)
    }
}

/// Whether the probe behind `pending` has not given its verdict yet (and its task is
/// alive: a task that ended without one frees the slot).
fn running(pending: &Pending) -> bool {
    pending.borrow().is_none() && pending.has_changed().is_ok()
}

/// A call with a handle of `integration`/`account` got a 401 (after any propagation
/// retry): probe the account's key, once, in the background. The probe's verdict, for
/// a call that waits for it (`None`: the integration has no rotator).
pub fn unauthorized(shared: &Arc<Shared>, integration: &str, account: &str) -> Option<Pending> {
    let (_, config) = super::with_rotator(shared, integration)?;
    let hold = Duration::from_secs(config.hold_secs);
    match shared.probes.claim(integration, account, Instant::now()) {
        Claim::Joined(pending) => Some(pending),
        Claim::New(tx) => {
            let pending = tx.subscribe();
            let (shared, integration, account) =
                (shared.clone(), integration.to_owned(), account.to_owned());
            tokio::spawn(async move {
                let verdict = probe(&shared, &integration, &account, hold).await;
                tx.send_replace(Some(verdict));
            });
            Some(pending)
        }
    }
}

/// One verify call with the account's current key; refused → rotate, and wait (at most
/// `hold`) for the rotation to make a new key active.
async fn probe(shared: &Arc<Shared>, integration: &str, account: &str, hold: Duration) -> Verdict {
    let Some((integ, config)) = super::with_rotator(shared, integration) else {
        return Verdict::NotDead;
    };
    let Ok(usable) = usable_now(shared, integration, account).await else {
        return Verdict::NotDead;
    };
    let Some(current) = usable.first() else {
        return Verdict::NotDead;
    };
    let verdict = super::verify(shared, integ, &current.secret).await;
    tracing::info!(integration, account, verdict = ?verdict, "auth_failure probe");
    if verdict != Ok(401) {
        return Verdict::NotDead;
    }
    let deadline = tokio::time::Instant::now() + hold;
    let since = shared.clock.now() - Duration::from_secs(config.cooldown_secs);
    let journal = with_vault(shared.vault.clone(), move |v| {
        Ok((v.rotations(Some(since))?, v.open_rotations()?))
    })
    .await;
    // A rotation of the account already on its way to a new key (begun before the key
    // died: by age, by an operator, through a provider outage) is the one that replaces
    // it: the calls wait for it rather than get `credential_dead` for its cooldown.
    let replacing = |open: &[crate::vault::Rotation]| {
        open.iter()
            .any(|r| r.integration == integration && r.account == account && r.step.before_finish())
    };
    let outcome = match journal {
        Ok((r, open))
            if replacing(&open)
                || !cooling_down(&r, integration, account, config, shared.clock.now()) =>
        {
            super::detect::signal_and_act(
                shared,
                &super::detect::Signal {
                    detector: super::detect::Detector::AuthFailure,
                    trigger: "auth_failure",
                    integration,
                    account,
                    policy: "",
                    caller: None,
                    seen: super::detect::SeenAt::VerifyProbe,
                    handle: None,
                    execution: None,
                },
            )
            .await
        }
        Ok(_) => {
            tracing::warn!(
                integration,
                account,
                "auth_failure: the key is refused, but the account was rotated less than cooldown_secs ago; not rotated again"
            );
            return Verdict::NotReplaced("cooling_down");
        }
        Err(_) => return Verdict::NotReplaced("journal_unreadable"),
    };
    let rotation = match (&outcome, outcome.rotation()) {
        (_, Some(id)) => id.to_owned(),
        // The account's open rotation (started before this 401) may be the one that
        // replaces the dead key.
        (Outcome::RotationOpen, None) => {
            let open = with_vault(shared.vault.clone(), |v| v.open_rotations()).await;
            match open.ok().and_then(|o| {
                o.into_iter()
                    .find(|r| r.integration == integration && r.account == account)
            }) {
                Some(r) => r.id,
                None => return Verdict::NotReplaced("rotation_open"),
            }
        }
        (other, None) => return Verdict::NotReplaced(not_replaced(other)),
    };
    until_active(shared, &rotation, deadline).await
}

/// Why a dead key's signal started no rotation, in a fixed word.
fn not_replaced(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::CoolingDown(_) => "cooling_down",
        Outcome::Capped { .. } => "capped",
        Outcome::Quarantined(_) => "quarantined",
        Outcome::NoRotation => "not_rotated",
        _ => "not_started",
    }
}

/// Waits (until `deadline`) for `rotation` to make its new key active.
async fn until_active(shared: &Shared, rotation: &str, deadline: tokio::time::Instant) -> Verdict {
    loop {
        match super::status(shared, rotation).await.map(|r| r.step) {
            Ok(Step::Begun | Step::Created | Step::Tested) => {}
            Ok(Step::Finished | Step::Watched | Step::Retired) => return Verdict::Replaced,
            Ok(Step::RolledBack | Step::Failed | Step::Aborted) | Err(_) => {
                return Verdict::NotReplaced("rotation_failed");
            }
        }
        if tokio::time::Instant::now() + ROTATION_POLL > deadline {
            return Verdict::NotReplaced("rotation_pending");
        }
        tokio::time::sleep(ROTATION_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_probe_per_account_per_interval_and_its_verdict_is_shared() {
        let p = Probes::default();
        let t0 = Instant::now();
        let Claim::New(tx) = p.claim("gh", "ci", t0) else {
            panic!("the first 401 starts a probe");
        };
        let Claim::Joined(joined) = p.claim("gh", "ci", t0 + Duration::from_secs(1)) else {
            panic!("a second 401 in flight joins it");
        };
        assert!(
            matches!(p.claim("gh", "other", t0), Claim::New(_)),
            "another account"
        );
        tx.send_replace(Some(Verdict::Replaced));
        assert_eq!(*joined.borrow(), Some(Verdict::Replaced));
        let Claim::Joined(later) = p.claim("gh", "ci", t0 + Duration::from_secs(9)) else {
            panic!("within the interval");
        };
        assert_eq!(
            *later.borrow(),
            Some(Verdict::Replaced),
            "the verdict stays"
        );
        assert!(
            matches!(p.claim("gh", "ci", t0 + MIN_INTERVAL), Claim::New(_)),
            "after the interval"
        );
    }

    #[test]
    fn a_probe_running_past_the_interval_is_still_joined() {
        let p = Probes::default();
        let t0 = Instant::now();
        let Claim::New(tx) = p.claim("gh", "ci", t0) else {
            panic!("the first 401 starts a probe");
        };
        let late = t0 + MIN_INTERVAL * 3;
        assert!(
            matches!(p.claim("gh", "ci", late), Claim::Joined(_)),
            "a slow probe is joined, not doubled"
        );
        tx.send_replace(Some(Verdict::NotDead));
        assert!(
            matches!(p.claim("gh", "ci", late), Claim::New(_)),
            "its verdict in and the interval over: a new one"
        );
        let Claim::New(tx) = p.claim("gh", "other", t0) else {
            panic!("another account");
        };
        drop(tx);
        assert!(
            matches!(p.claim("gh", "other", late), Claim::New(_)),
            "a probe task that died without a verdict frees the slot"
        );
    }
}
