//! The rotation loop's actuator: drives each rotation through the vault's journal.
//!
//! A rotation is started by an operator (`POST /v1/rotations`, `hb-agent rotation
//! trigger`) and resumed at its recorded step when the agent starts. One task per
//! rotation walks the journal (see `vault::rotations`):
//! - [`create`]: the integration's rotator mints a new value; stored PENDING in the same
//!   transaction that records it, and registered with the scrubber at once;
//! - [`test`]: the integration's `verify_url` called with the PENDING value injected as
//!   every call injects it, through the validating outbound path; a 401/403 is tolerated
//!   for the integration's `propagation_secs`, then the rotation fails (the old value
//!   stays active);
//! - [`finish`]: PENDING → ACTIVE, the old one DEPRECATED for `grace_secs` — handles
//!   carry the new value from their next call;
//! - [`watch`]: after `watch_secs` the new value is verified again; refused → rolled
//!   back to the old one (unless that one is compromised);
//! - [`retire`]: at the end of the old one's grace period the rotator revokes it at the
//!   provider and the vault erases it.
//!
//! A step that fails for now (the provider down, a timeout) is retried after
//! `retry_base_secs × 2^attempt` with full jitter, at most `retry_cap_secs`; the old
//! credential is never deactivated before a new one is ACTIVE. Every step is an audit
//! record; values appear nowhere but in the vault and the scrubber.
//! Rotations by age are started by [`schedule`] (the `expiry` detector), of dead keys
//! by [`probe`] (the `auth_failure` detector). Not built yet: the other evidence
//! detectors (rate spikes, reflection, canaries), quarantine, the HTTP rotator, circuit
//! breakers.

pub mod api;
pub mod exec;
pub mod probe;
pub mod schedule;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::Method;
use ring::rand::SecureRandom as _;
use serde_json::json;

use self::exec::{Ask, ExecRotator, RotatorError};
use super::{
    credentials::with_vault,
    error::{ApiError, Code},
    outbound::{HopDecision, HopPolicy, OutboundRequest, url::Target},
    requests::{credential, host_matches, origin_matches},
    state::Shared,
};
use crate::{
    config::{IntegrationConfig, RotationConfig},
    secret::Secret,
    vault::{Rotation, Step},
};

/// What a step leaves the task to do next.
enum Next {
    /// Go on with the rotation's next step now.
    Go,
    /// Come back to the same rotation after this long.
    Wait(Duration),
    /// The rotation is closed (or cannot go on): the task ends.
    Stop,
}

/// Starts a rotation of `integration`/`account` and its task; the journal row.
pub async fn trigger(
    shared: &Arc<Shared>,
    integration: &str,
    account: &str,
    why: &str,
    compromised: bool,
) -> Result<Rotation, ApiError> {
    let integ = rotating(shared, integration)?;
    let (i, a, w) = (
        integ.name.get_ref().clone(),
        account.to_owned(),
        why.to_owned(),
    );
    let rotation = with_vault(shared.vault.clone(), move |v| {
        v.begin_rotation(&i, &a, &w, compromised)
    })
    .await?;
    record(shared, &rotation, "begun", None);
    tokio::spawn(drive(shared.clone(), rotation.id.clone()));
    Ok(rotation)
}

/// Resumes every open rotation at its recorded step (on start).
pub async fn resume(shared: &Arc<Shared>) {
    if shared.vault.is_none() {
        return;
    }
    match with_vault(shared.vault.clone(), |v| v.open_rotations()).await {
        Ok(open) => {
            for rotation in open {
                crate::telemetry::global().rotation_at(&rotation.id, rotation.step);
                tracing::info!(rotation = %rotation.id, step = %rotation.step, "resuming a rotation");
                tokio::spawn(drive(shared.clone(), rotation.id));
            }
        }
        Err(e) => tracing::warn!(error = %e.message, "cannot read open rotations"),
    }
}

/// One rotation by id, for `GET /v1/rotations/{id}`.
pub async fn status(shared: &Shared, id: &str) -> Result<Rotation, ApiError> {
    let id = id.to_owned();
    with_vault(shared.vault.clone(), move |v| v.rotation(&id)).await
}

/// The integration and its rotator, if it has one.
fn with_rotator<'a>(
    shared: &'a Shared,
    integration: &str,
) -> Option<(&'a IntegrationConfig, &'a RotationConfig)> {
    let integ = shared
        .config
        .integrations
        .iter()
        .find(|i| i.name.get_ref() == integration)?;
    Some((integ, integ.rotation.as_ref()?))
}

/// The integration's config if it has a rotator, or the error that says it has none.
fn rotating<'a>(shared: &'a Shared, integration: &str) -> Result<&'a IntegrationConfig, ApiError> {
    with_rotator(shared, integration)
        .map(|(integ, _)| integ)
        .ok_or_else(|| {
            ApiError::new(
                Code::BadRequest,
                format!(
                    "integration \"{integration}\" has no [integration.rotation]: hb cannot get a \
                     new credential for it (rotate by hand with `hb-agent vault rotate`)"
                ),
            )
        })
}

/// The task of one rotation: its steps until it closes.
async fn drive(shared: Arc<Shared>, id: String) {
    loop {
        let rotation = match status(&shared, &id).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(rotation = %id, error = %e.message, "rotation unreadable; its task ends");
                return;
            }
        };
        // Every step as the journal has it (an abort from the CLI included).
        crate::telemetry::global().rotation_at(&rotation.id, rotation.step);
        let Some((integ, config)) = with_rotator(&shared, &rotation.integration) else {
            tracing::warn!(rotation = %id, integration = %rotation.integration,
                "the integration has no rotator any more; the rotation waits for an operator");
            return;
        };
        let next = match rotation.step {
            Step::Begun => create(&shared, config, &rotation).await,
            Step::Created => test(&shared, integ, config, &rotation).await,
            Step::Tested => finish(&shared, config, &rotation).await,
            Step::Finished => watch(&shared, integ, config, &rotation).await,
            Step::Watched => retire(&shared, config, &rotation).await,
            Step::Retired | Step::RolledBack | Step::Failed | Step::Aborted => Next::Stop,
        };
        match next {
            Next::Go => {}
            Next::Wait(d) => tokio::time::sleep(d).await,
            Next::Stop => return,
        }
    }
}

/// **create**: a new value from the rotator, stored PENDING.
async fn create(shared: &Arc<Shared>, config: &RotationConfig, rotation: &Rotation) -> Next {
    let old_id = rotation.old_id.clone();
    let old = match with_vault(shared.vault.clone(), move |v| v.get(&old_id)).await {
        Ok((_, secret)) => secret,
        Err(e) => return fail(shared, rotation, "old_value_unreadable", &e).await,
    };
    // Counted before the provider is asked: a crash between its answer and the commit
    // below would otherwise leave a key at the provider nobody knows of.
    let id = rotation.id.clone();
    if let Err(e) = with_vault(shared.vault.clone(), move |v| v.note_create_call(&id)).await {
        return fail(shared, rotation, "not_recorded", &e).await;
    }
    let rotator = rotator(config);
    let ask = ask(rotation, "create", &old);
    let minted = match rotator.create(&ask).await {
        Ok(m) => m,
        Err(e) => return retry_or_fail(shared, config, rotation, &e).await,
    };
    let id = rotation.id.clone();
    let secret = Secret::new(minted.secret.expose().to_vec());
    let expires = minted.expires;
    let stored = with_vault(shared.vault.clone(), move |v| {
        v.store_pending(&id, &secret, expires)
    })
    .await;
    match stored {
        Ok(r) => {
            if let Some(new_id) = &r.new_id {
                shared.protect(new_id, &minted.secret);
            }
            record(shared, &r, "created", None);
            if r.create_calls > 1 {
                tracing::warn!(rotation = %r.id, integration = %r.integration, account = %r.account,
                    orphans = r.create_calls - 1,
                    "the provider was asked for a new credential more than once (a crash cut a \
                     recording short): it may hold orphan keys from this rotation; revoke them there");
                record(
                    shared,
                    &r,
                    "possible_orphan_keys",
                    Some("create_called_again"),
                );
            }
            Next::Go
        }
        Err(e) => fail(shared, rotation, "pending_not_stored", &e).await,
    }
}

/// **test**: the PENDING value must work at `verify_url` before it is used.
async fn test(
    shared: &Arc<Shared>,
    integ: &IntegrationConfig,
    config: &RotationConfig,
    rotation: &Rotation,
) -> Next {
    let id = rotation.id.clone();
    let pending = match with_vault(shared.vault.clone(), move |v| v.rotation_value(&id)).await {
        Ok((_, secret)) => secret,
        Err(e) => return fail(shared, rotation, "pending_unreadable", &e).await,
    };
    match verify(shared, integ, &pending).await {
        Ok(status) if (200..300).contains(&status) => {
            let id = rotation.id.clone();
            match with_vault(shared.vault.clone(), move |v| v.mark_tested(&id)).await {
                Ok(r) => {
                    record(shared, &r, "tested", None);
                    Next::Go
                }
                Err(e) => fail(shared, rotation, "not_recorded", &e).await,
            }
        }
        Ok(401 | 403) => {
            // A new key takes a while to be valid everywhere.
            let since = SystemTime::now()
                .duration_since(rotation.updated)
                .unwrap_or_default();
            if since < Duration::from_secs(integ.propagation_secs) {
                attempt_failed(shared, config, rotation, "verify_refused_propagating").await
            } else {
                abandon(shared, rotation, Step::Failed, "verify_refused").await
            }
        }
        Ok(_) => attempt_failed(shared, config, rotation, "verify_status").await,
        Err(class) => attempt_failed(shared, config, rotation, class).await,
    }
}

/// **finish**: the new value becomes the account's active credential.
async fn finish(shared: &Arc<Shared>, config: &RotationConfig, rotation: &Rotation) -> Next {
    let id = rotation.id.clone();
    let grace = Duration::from_secs(config.grace_secs);
    match with_vault(shared.vault.clone(), move |v| v.finish_rotation(&id, grace)).await {
        Ok(r) => {
            record(shared, &r, "finished", None);
            Next::Go
        }
        Err(e) => {
            tracing::warn!(rotation = %rotation.id, error = %e.message, "rotation not finished");
            record(shared, rotation, "failed", Some("finish_refused"));
            Next::Stop
        }
    }
}

/// **watch**: after `watch_secs`, the new value must still work; if not, back to the old.
async fn watch(
    shared: &Arc<Shared>,
    integ: &IntegrationConfig,
    config: &RotationConfig,
    rotation: &Rotation,
) -> Next {
    let due = rotation.updated + Duration::from_secs(config.watch_secs);
    if let Ok(left) = due.duration_since(SystemTime::now())
        && !left.is_zero()
    {
        return Next::Wait(left);
    }
    let Some(new_id) = rotation.new_id.clone() else {
        return Next::Stop;
    };
    let current = match with_vault(shared.vault.clone(), move |v| v.get(&new_id)).await {
        Ok((_, secret)) => secret,
        Err(e) => return fail(shared, rotation, "new_value_unreadable", &e).await,
    };
    let id = rotation.id.clone();
    match verify(shared, integ, &current).await {
        Ok(status) if (200..300).contains(&status) => {
            match with_vault(shared.vault.clone(), move |v| v.mark_watched(&id)).await {
                Ok(r) => {
                    record(shared, &r, "watched", None);
                    Next::Go
                }
                Err(e) => fail(shared, rotation, "not_recorded", &e).await,
            }
        }
        Ok(401 | 403) => {
            match with_vault(shared.vault.clone(), move |v| v.roll_back_rotation(&id)).await {
                Ok(r) => {
                    record(shared, &r, "rolled_back", Some("watch_refused"));
                    Next::Stop
                }
                Err(e) => {
                    // The old one is compromised or gone: keep the new one and say so.
                    tracing::warn!(rotation = %rotation.id, error = %e.message,
                        "the new credential fails its watch and cannot be rolled back");
                    record(shared, rotation, "watch_failed", Some("no_rollback"));
                    attempt_failed(shared, config, rotation, "watch_refused").await
                }
            }
        }
        Ok(_) => attempt_failed(shared, config, rotation, "verify_status").await,
        Err(class) => attempt_failed(shared, config, rotation, class).await,
    }
}

/// **retire**: at the old value's grace end, the provider revokes it and the vault
/// erases it.
async fn retire(shared: &Arc<Shared>, config: &RotationConfig, rotation: &Rotation) -> Next {
    let old_id = rotation.old_id.clone();
    let old = with_vault(shared.vault.clone(), move |v| v.get(&old_id)).await;
    if let Ok((meta, secret)) = old {
        if let Some(end) = meta.grace_until
            && let Ok(left) = end.duration_since(SystemTime::now())
            && !left.is_zero()
        {
            return Next::Wait(left);
        }
        match rotator(config)
            .revoke(&ask(rotation, "revoke", &secret))
            .await
        {
            Ok(()) => {}
            Err(e @ RotatorError::RetryLater(_)) => {
                return attempt_failed(shared, config, rotation, e.class()).await;
            }
            Err(e) => {
                // Erased here all the same; the provider may still accept it.
                tracing::warn!(rotation = %rotation.id, class = e.class(),
                    "the provider did not revoke the old credential: it may still work upstream");
                record(shared, rotation, "provider_revoke_failed", Some(e.class()));
            }
        }
    }
    let id = rotation.id.clone();
    match with_vault(shared.vault.clone(), move |v| v.retire_rotation(&id)).await {
        Ok(r) => {
            record(shared, &r, "retired", None);
            Next::Stop
        }
        Err(e) => fail(shared, rotation, "not_recorded", &e).await,
    }
}

/// The integration's `verify_url` with `secret` injected; the status, or a failure class.
async fn verify(
    shared: &Shared,
    integ: &IntegrationConfig,
    secret: &Secret,
) -> Result<u16, &'static str> {
    let target = Target::parse(&integ.verify_url).map_err(|_| "verify_url_invalid")?;
    let (credential_headers, credential_query) =
        credential(integ, secret).map_err(|_| "verify_injection")?;
    let request = OutboundRequest {
        method: Method::GET,
        target,
        headers: Vec::new(),
        credential_headers,
        credential_query,
        body: Bytes::new(),
    };
    shared
        .outbound
        .send(request, &SameOrigin(integ))
        .await
        .map(|r| r.status)
        .map_err(|_| "verify_unreachable")
}

/// A verify call follows redirects only within the integration's origins.
struct SameOrigin<'a>(&'a IntegrationConfig);

impl HopPolicy for SameOrigin<'_> {
    fn hop_allowed(&self, next: &Target) -> HopDecision {
        if host_matches(self.0, &next.host) && origin_matches(self.0, next) {
            HopDecision::Allow {
                keep_credential: true,
            }
        } else {
            HopDecision::Deny
        }
    }
}

fn rotator(config: &RotationConfig) -> ExecRotator {
    ExecRotator {
        argv: config.exec.clone(),
        timeout: Duration::from_secs(config.timeout_secs),
    }
}

fn ask<'a>(rotation: &'a Rotation, op: &'static str, secret: &'a Secret) -> Ask<'a> {
    Ask {
        op,
        rotation: &rotation.id,
        integration: &rotation.integration,
        account: &rotation.account,
        secret,
    }
}

/// A rotator error: retried later, or the rotation failed.
async fn retry_or_fail(
    shared: &Arc<Shared>,
    config: &RotationConfig,
    rotation: &Rotation,
    e: &RotatorError,
) -> Next {
    match e {
        RotatorError::RetryLater(class) => attempt_failed(shared, config, rotation, class).await,
        RotatorError::Failed(class) => abandon(shared, rotation, Step::Failed, class).await,
    }
}

/// A step that failed for now: counted, and retried after the backoff.
async fn attempt_failed(
    shared: &Arc<Shared>,
    config: &RotationConfig,
    rotation: &Rotation,
    class: &'static str,
) -> Next {
    let delay = backoff(shared, config, rotation.attempt);
    let id = rotation.id.clone();
    let at = SystemTime::now() + delay;
    match with_vault(shared.vault.clone(), move |v| {
        v.record_attempt_failure(&id, class, at)
    })
    .await
    {
        Ok(r) => {
            record(shared, &r, "attempt_failed", Some(class));
            Next::Wait(delay)
        }
        Err(_) => Next::Stop,
    }
}

/// Full jitter: uniform in [0, min(cap, base × 2^attempt)], at least a second.
fn backoff(shared: &Shared, config: &RotationConfig, attempt: u32) -> Duration {
    let ceiling = config
        .retry_base_secs
        .saturating_mul(1u64 << attempt.min(30))
        .min(config.retry_cap_secs)
        .max(1);
    let mut r = [0u8; 8];
    let jitter = match shared.handles.rng().fill(&mut r) {
        Ok(()) => u64::from_le_bytes(r) % (ceiling * 1000 + 1),
        Err(_) => ceiling * 1000,
    };
    Duration::from_millis(jitter.max(1000))
}

/// The rotation is given up before it finished (its PENDING value revoked).
async fn abandon(
    shared: &Arc<Shared>,
    rotation: &Rotation,
    how: Step,
    class: &'static str,
) -> Next {
    let id = rotation.id.clone();
    match with_vault(shared.vault.clone(), move |v| {
        v.abandon_rotation(&id, how, class)
    })
    .await
    {
        Ok(r) => record(shared, &r, how.as_str(), Some(class)),
        Err(e) => {
            tracing::warn!(rotation = %rotation.id, error = %e.message, "rotation not closed");
        }
    }
    Next::Stop
}

/// A vault error in a step: logged and the rotation abandoned when it can be.
async fn fail(
    shared: &Arc<Shared>,
    rotation: &Rotation,
    class: &'static str,
    e: &ApiError,
) -> Next {
    tracing::warn!(rotation = %rotation.id, class, error = %e.message, "rotation step failed");
    if rotation.step.before_finish() {
        abandon(shared, rotation, Step::Failed, class).await
    } else {
        Next::Stop
    }
}

/// Every step is an audit record (ids and fixed words only) and a log line.
fn record(shared: &Shared, rotation: &Rotation, what: &str, class: Option<&str>) {
    crate::telemetry::global().rotation_at(&rotation.id, rotation.step);
    tracing::info!(
        rotation = %rotation.id,
        integration = %rotation.integration,
        account = %rotation.account,
        step = what,
        class = class.unwrap_or(""),
        "rotation"
    );
    shared.audit.record(
        "rotation",
        json!({
            "rotation": rotation.id,
            "integration": rotation.integration,
            "account": rotation.account,
            "trigger": rotation.trigger,
            "compromised": rotation.compromised,
            "step": what,
            "old": rotation.old_id,
            "new": rotation.new_id,
            "attempt": rotation.attempt,
            "class": class,
        }),
    );
}
