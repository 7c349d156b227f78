//! `deadline_at_risk`: an account's ACTIVE credential expires within its integration's
//! `deadline_margin_secs` (default: a quarter of its lifetime) and no rotation has
//! replaced it — the rotation is failing (the provider down, the breaker open), or none
//! could start. An alert event and an audit record naming the integration, the account,
//! the credential's id and expiry, and the open rotation if any: once per credential and
//! rotation (not at every retry, not at every tick), so a rotation that starts later for
//! the same credential alerts again. Checked at every tick of [`schedule`](super::schedule).
//!
//! Must never: read a value (the vault's metadata is enough), or alert about a
//! credential that was replaced (DEPRECATED in its grace period is not at risk: the
//! new one is ACTIVE).

use std::{
    collections::HashSet,
    time::{Duration, SystemTime},
};

use serde_json::json;

use super::detect::{EventFields, event};
use crate::{
    broker::state::Shared,
    config::RotationConfig,
    vault::{CredentialMeta, Rotation, Status},
};

/// The credentials (and rotations) already alerted about.
#[derive(Default)]
pub struct Deadlines {
    alerted: HashSet<(String, Option<String>)>,
}

impl Deadlines {
    /// Alerts about every credential at risk at `now` not alerted about yet.
    pub fn check(
        &mut self,
        shared: &Shared,
        credentials: &[CredentialMeta],
        rotations: &[Rotation],
        now: SystemTime,
    ) {
        // Replaced or erased credentials are forgotten: the set stays as small as the vault.
        self.alerted.retain(|(id, _)| {
            credentials
                .iter()
                .any(|m| m.id == *id && m.status == Status::Active)
        });
        for meta in credentials {
            let Some((_, config)) = super::with_rotator(shared, &meta.integration) else {
                continue;
            };
            let Some(expires) = at_risk(meta, config, now) else {
                continue;
            };
            let open = rotations
                .iter()
                .find(|r| r.step.is_open() && r.old_id == meta.id)
                .map(|r| r.id.clone());
            if self.alerted.insert((meta.id.clone(), open.clone())) {
                alert(shared, meta, expires, open.as_deref(), now);
            }
        }
    }
}

/// `meta`'s expiry if it is ACTIVE and expires within the margin of `now`.
pub fn at_risk(
    meta: &CredentialMeta,
    config: &RotationConfig,
    now: SystemTime,
) -> Option<SystemTime> {
    if meta.status != Status::Active {
        return None;
    }
    let expires = meta.expires?;
    let margin = margin(meta, config);
    (expires <= now + margin).then_some(expires)
}

/// `deadline_margin_secs`, or a quarter of the credential's lifetime.
fn margin(meta: &CredentialMeta, config: &RotationConfig) -> Duration {
    if config.deadline_margin_secs > 0 {
        return Duration::from_secs(config.deadline_margin_secs);
    }
    meta.expires
        .and_then(|e| e.duration_since(meta.created).ok())
        .map_or(Duration::ZERO, |life| life / 4)
}

fn alert(
    shared: &Shared,
    meta: &CredentialMeta,
    expires: SystemTime,
    rotation: Option<&str>,
    now: SystemTime,
) {
    let expires_text = humantime::format_rfc3339_seconds(expires).to_string();
    let left = expires.duration_since(now).unwrap_or_default().as_secs();
    tracing::warn!(
        integration = %meta.integration,
        account = %meta.account,
        credential = %meta.id,
        expires = %expires_text,
        rotation = rotation.unwrap_or(""),
        "deadline_at_risk: the active credential expires soon and no rotation has replaced it"
    );
    shared.audit.record(
        "deadline_at_risk",
        json!({
            "integration": meta.integration,
            "account": meta.account,
            "credential": meta.id,
            "expires": expires_text,
            "seconds_left": left,
            "rotation": rotation,
        }),
    );
    event(
        shared,
        &EventFields {
            caller: None,
            policy: "",
            verdict: "alert",
            reason: "deadline_at_risk",
            name: Some(format!("{}/{}", meta.integration, meta.account)),
            detail: format!(
                "expires {expires_text} ({left} s left); rotation {}",
                rotation.unwrap_or("none")
            ),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(margin: u64) -> RotationConfig {
        toml::from_str(&format!(
            "exec = [\"/bin/true\"]\ndeadline_margin_secs = {margin}\n"
        ))
        .expect("config")
    }

    fn meta(status: Status, created: SystemTime, expires: Option<SystemTime>) -> CredentialMeta {
        CredentialMeta {
            id: "cred_1".into(),
            integration: "gh".into(),
            account: "ci".into(),
            status,
            created,
            expires,
            rotated_from: None,
            grace_until: None,
            revoked: None,
        }
    }

    #[test]
    fn at_risk_within_the_margin_or_the_last_quarter_of_its_life() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        let m = meta(Status::Active, t0, Some(t0 + hour * 4));
        // Default: the last quarter of a 4 h life, i.e. from 3 h on.
        assert_eq!(at_risk(&m, &config(0), t0 + hour * 2), None);
        assert_eq!(at_risk(&m, &config(0), t0 + hour * 3), Some(t0 + hour * 4));
        // A fixed margin of 30 min.
        assert_eq!(at_risk(&m, &config(1800), t0 + hour * 3), None);
        assert!(at_risk(&m, &config(1800), t0 + hour * 3 + hour / 2).is_some());
        // Expired already: still at risk (the rotation has not replaced it).
        assert!(at_risk(&m, &config(0), t0 + hour * 5).is_some());
        // Replaced (in its grace period), or no expiry: not at risk.
        let replaced = meta(Status::Deprecated, t0, Some(t0 + hour * 4));
        assert_eq!(at_risk(&replaced, &config(0), t0 + hour * 3), None);
        assert_eq!(
            at_risk(&meta(Status::Active, t0, None), &config(60), t0),
            None
        );
    }
}
