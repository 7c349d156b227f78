//! The `expiry` detector: rotations started by age, not by a person.
//!
//! Every second the vault's metadata (never a value) is read and each ACTIVE credential
//! of an integration with a rotator is checked: it is due at two thirds of its lifetime
//! (`created` → `expires`, less a jitter of up to a tenth of the lifetime, so that
//! credentials stored together do not all rotate in the same second), or at the
//! integration's `max_age_secs` since it was stored, whichever comes first. A due
//! credential is rotated unless a rotation of its account is open or one started less
//! than `cooldown_secs` ago (a failing provider is not hammered: the rotation's own
//! retries and the cooldown pace it), and at most `max_rotations_per_day` times a day
//! (past it the signal is an alert, once until a rotation fits again).
//! Must never: start two rotations of one account (the journal refuses that anyway), or
//! read a credential's value.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use ring::rand::SecureRandom as _;

use super::super::{credentials::with_vault, state::Shared};
use crate::{
    config::RotationConfig,
    vault::{CredentialMeta, Rotation, Status},
};

const TICK: Duration = Duration::from_secs(1);

/// Runs the detector until the runtime stops.
pub async fn run(shared: Arc<Shared>) {
    if shared.vault.is_none()
        || !shared
            .config
            .integrations
            .iter()
            .any(|i| i.rotation.is_some())
    {
        return;
    }
    let mut jitter: HashMap<String, f64> = HashMap::new();
    // Credentials signalled under an action that does not rotate: signalled once.
    let mut signalled: std::collections::HashSet<String> = std::collections::HashSet::new();
    // Credentials whose account's `max_rotations_per_day` is spent: signalled once,
    // then not again before a rotation fits.
    let mut capped: HashMap<String, SystemTime> = HashMap::new();
    let mut deadlines = super::deadline::Deadlines::default();
    loop {
        tokio::time::sleep(TICK).await;
        let week_ago = shared.clock.now() - Duration::from_secs(86_400 * 7);
        let Ok((credentials, rotations)) = with_vault(shared.vault.clone(), move |v| {
            Ok((v.list()?, v.rotations(Some(week_ago))?))
        })
        .await
        else {
            continue;
        };
        let now = shared.clock.now();
        deadlines.check(&shared, &credentials, &rotations, now);
        for meta in credentials.iter().filter(|m| m.status == Status::Active) {
            let Some((_, config)) = super::with_rotator(&shared, &meta.integration) else {
                continue;
            };
            let share = *jitter
                .entry(meta.id.clone())
                .or_insert_with(|| random_share(&shared));
            let Some((due, why)) = due(meta, config, share) else {
                continue;
            };
            if now < due || cooling_down(&rotations, &meta.integration, &meta.account, config, now)
            {
                continue;
            }
            if signalled.contains(&meta.id) || capped.get(&meta.id).is_some_and(|t| now < *t) {
                continue;
            }
            // A rotation refused while one is open (or after the integration lost its
            // rotator) is fine: the next tick sees the state as it is.
            let outcome = super::detect::signal_and_act(
                &shared,
                &super::detect::Signal {
                    detector: super::detect::Detector::Expiry,
                    trigger: why,
                    integration: &meta.integration,
                    account: &meta.account,
                    policy: "",
                    caller: None,
                    seen: super::detect::SeenAt::Schedule,
                    handle: None,
                    execution: None,
                },
            )
            .await;
            match outcome {
                super::detect::Outcome::NoRotation => {
                    signalled.insert(meta.id.clone());
                }
                super::detect::Outcome::Capped { until, .. } => {
                    capped.insert(meta.id.clone(), until);
                }
                _ => {}
            }
        }
    }
}

/// When `meta` is due for rotation, and why: two thirds of its lifetime less
/// `share` × a tenth of it, or `max_age_secs` after it was stored.
pub fn due(
    meta: &CredentialMeta,
    config: &RotationConfig,
    share: f64,
) -> Option<(SystemTime, &'static str)> {
    let by_expiry = meta.expires.and_then(|e| {
        let life = e.duration_since(meta.created).ok()?;
        let early = life.mul_f64(share.clamp(0.0, 1.0) / 10.0);
        Some((meta.created + life * 2 / 3 - early, "expiry"))
    });
    let by_age = (config.max_age_secs > 0).then(|| {
        (
            meta.created + Duration::from_secs(config.max_age_secs),
            "max_age",
        )
    });
    match (by_expiry, by_age) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// A rotation of the account is open, or one started less than `cooldown_secs` ago
/// (whatever became of it: a failed one is not retried at once either).
pub fn cooling_down(
    rotations: &[Rotation],
    integration: &str,
    account: &str,
    config: &RotationConfig,
    now: SystemTime,
) -> bool {
    rotations
        .iter()
        .filter(|r| r.integration == integration && r.account == account)
        .any(|r| {
            r.step.is_open()
                || now
                    .duration_since(r.started)
                    .is_ok_and(|age| age < Duration::from_secs(config.cooldown_secs))
        })
}

fn random_share(shared: &Shared) -> f64 {
    let mut b = [0u8; 4];
    match shared.handles.rng().fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX),
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_age_secs: u64) -> RotationConfig {
        let text = format!("exec = [\"/bin/true\"]\nmax_age_secs = {max_age_secs}\n");
        toml::from_str(&text).expect("rotation config")
    }

    fn meta(created: SystemTime, expires: Option<SystemTime>) -> CredentialMeta {
        CredentialMeta {
            id: "cred_1".into(),
            integration: "gh".into(),
            account: "ci".into(),
            status: Status::Active,
            created,
            expires,
            rotated_from: None,
            grace_until: None,
            revoked: None,
        }
    }

    #[test]
    fn a_credential_is_due_at_two_thirds_of_its_life_or_at_its_max_age() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        let m = meta(t0, Some(t0 + day * 30));
        assert_eq!(due(&m, &config(0), 0.0), Some((t0 + day * 20, "expiry")));
        // The jitter moves it earlier by at most a tenth of the lifetime.
        assert_eq!(due(&m, &config(0), 1.0), Some((t0 + day * 17, "expiry")));
        // max_age wins when it comes first.
        assert_eq!(
            due(&m, &config(86_400 * 7), 0.0),
            Some((t0 + day * 7, "max_age"))
        );
        assert_eq!(
            due(&meta(t0, None), &config(0), 0.5),
            None,
            "no expiry, no max age"
        );
        assert_eq!(
            due(&meta(t0, None), &config(60), 0.5),
            Some((t0 + Duration::from_secs(60), "max_age"))
        );
    }
}
