//! The rotation loop's actuator: drives each rotation through the vault's journal.
//!
//! A rotation is started by an operator (`POST /v1/rotations`, `hb-agent rotation
//! trigger`) and resumed at its recorded step when the agent starts. One task per
//! rotation walks the journal (see `vault::rotations`):
//! - [`create`]: the integration's rotator mints a new value; stored PENDING in the same
//!   transaction that records it, and registered with the scrubber at once;
//! - [`test`]: the integration's `verify_url` called with the PENDING value injected as
//!   every call injects it, through the validating outbound path; a 401 is tolerated
//!   for the integration's `propagation_secs` from the value's minting, then the
//!   rotation fails (the old value stays active);
//! - [`finish`]: PENDING → ACTIVE, the old one DEPRECATED for `grace_secs` — handles
//!   carry the new value from their next call;
//! - [`watch`]: after `watch_secs` the new value is verified again, up to
//!   [`WATCH_TRIES`] times; a 401 to each → rolled back to the old one;
//! - [`retire`]: at the end of the old one's grace period the rotator revokes it at the
//!   provider and the vault erases it.
//!
//! A step that fails for now (the provider down, a timeout) is retried after
//! `retry_base_secs × 2^attempt` with full jitter, at most `retry_cap_secs`; the old
//! credential is never deactivated before a new one is ACTIVE. Every step is an audit
//! record; values appear nowhere but in the vault and the scrubber.
//! Rotations by age are started by [`schedule`] (the `expiry` detector), of dead keys
//! by [`probe`] (the `auth_failure` detector), of keys an execution may have betrayed by
//! the `canary` and `reflection` detectors (`broker::canary`, `broker::requests`); each
//! signal goes through [`detect`], which applies the integration's configured action.
//! A compromised rotation skips **watch** and retires the old key right after finish.
//! How often an account may rotate is [`limits`]' (read from this journal); the
//! detectors' recent state per account is [`book`]'s. Each account's calls per bucket
//! are [`sensor`]'s, judged by [`spike`] (`rate_spike`, quarantine by default) and
//! [`novelty`] (alert only).
//! Not built yet: the HTTP rotator, circuit breakers.

pub mod api;
pub mod book;
pub mod detect;
pub mod exec;
pub mod limits;
pub mod novelty;
pub mod probe;
pub mod quarantine;
pub mod schedule;
pub mod sensor;
pub mod spike;

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
    if compromised {
        supersede_finished(shared, integration, account).await;
    }
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

/// Before a compromise rotation: an open rotation of the account past its finish (its
/// old value in grace, waiting to be watched and retired) is retired now, so the
/// compromise rotation can begin at once (the leaked value may be either).
async fn supersede_finished(shared: &Arc<Shared>, integration: &str, account: &str) {
    let Some((_, config)) = with_rotator(shared, integration) else {
        return;
    };
    let Ok(open) = with_vault(shared.vault.clone(), |v| v.open_rotations()).await else {
        return;
    };
    for r in open
        .iter()
        .filter(|r| r.integration == integration && r.account == account && !r.step.before_finish())
    {
        record(shared, r, "superseded", Some("compromised"));
        retire_now(shared, config, r).await;
    }
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
            // A compromised key is revoked as soon as its successor is active: there
            // is nothing to roll back to, so nothing to watch for.
            Step::Finished if rotation.compromised => retire(&shared, config, &rotation).await,
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
    // Scrubbed from the moment it exists, whatever becomes of the rotation: providers
    // list an account's keys, and a sandbox holding a handle for the account may ask.
    shared.protect_pending(rotation, &minted.secret);
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
                shared.protect_alias(new_id, &r.id);
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
        Err(e) => {
            // Not stored (the rotation was aborted meanwhile, or the vault failed): the
            // provider holds a key nobody will use.
            revoke_at_provider(shared, rotation, &minted.secret).await;
            fail(shared, rotation, "pending_not_stored", &e).await
        }
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
    let (pending_meta, pending) =
        match with_vault(shared.vault.clone(), move |v| v.rotation_value(&id)).await {
            Ok(read) => read,
            Err(e) => return fail(shared, rotation, "pending_unreadable", &e).await,
        };
    // Resumed after a restart, the value is protected from here on.
    shared.protect_pending(rotation, &pending);
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
        Ok(401) => {
            // A new key takes a while to be valid everywhere: from when it was minted,
            // not from the last attempt (that would never end).
            let since = SystemTime::now()
                .duration_since(pending_meta.created)
                .unwrap_or_default();
            if since < Duration::from_secs(integ.propagation_secs) {
                attempt_failed(shared, config, rotation, "verify_refused_propagating").await
            } else {
                abandon(shared, rotation, Step::Failed, "verify_refused").await
            }
        }
        // A 403 or 429 (a rate limit a sandbox may spend on purpose) or an odd status:
        // tried again a few times, then the rotation ends and the old value stays.
        Ok(_) if rotation.attempt + 1 >= TEST_TRIES => {
            abandon(shared, rotation, Step::Failed, "verify_status").await
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

/// How many answers other than 2xx and 401 the test step takes before it gives up.
const TEST_TRIES: u32 = 8;

/// How many verify calls (spread by the backoff) the watch makes before it decides: a
/// 401 to every one rolls back; a 403 or 429 never does (a sandbox can spend a key's
/// rate limit at will).
const WATCH_TRIES: u32 = 3;

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
        Ok((meta, secret)) if meta.status == crate::vault::Status::Active => secret,
        // Rolled back or revoked by hand meanwhile: nothing left to watch; the old
        // value's fate is the operator's (retired as planned if it is still there).
        _ => return watched(shared, rotation, Some("new_value_gone")).await,
    };
    let id = rotation.id.clone();
    let last_try = rotation.attempt + 1 >= WATCH_TRIES;
    match verify(shared, integ, &current).await {
        Ok(status) if (200..300).contains(&status) => watched(shared, rotation, None).await,
        Ok(401) if last_try => {
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
                    watched(shared, rotation, Some("no_rollback")).await
                }
            }
        }
        // The new value passed its test before it became active: anything but 401s
        // every time (a 403 or 429 of a spent rate limit, an outage) is no evidence
        // against it, and the old one is retired as planned.
        _ if last_try => watched(shared, rotation, Some("inconclusive")).await,
        Ok(401) => attempt_failed(shared, config, rotation, "watch_refused").await,
        Ok(_) => attempt_failed(shared, config, rotation, "verify_status").await,
        Err(class) => attempt_failed(shared, config, rotation, class).await,
    }
}

/// The watch is over (`note` says why when the value was not seen working): on to retire.
async fn watched(shared: &Arc<Shared>, rotation: &Rotation, note: Option<&'static str>) -> Next {
    let id = rotation.id.clone();
    match with_vault(shared.vault.clone(), move |v| v.mark_watched(&id)).await {
        Ok(r) => {
            record(shared, &r, "watched", note);
            Next::Go
        }
        Err(e) => fail(shared, rotation, "not_recorded", &e).await,
    }
}

/// **retire**: at the old value's grace end, the provider revokes it and the vault
/// erases it.
async fn retire(shared: &Arc<Shared>, config: &RotationConfig, rotation: &Rotation) -> Next {
    let old_id = rotation.old_id.clone();
    let grace_end = with_vault(shared.vault.clone(), move |v| v.get(&old_id))
        .await
        .ok()
        .and_then(|(meta, _)| meta.grace_until);
    if let Some(end) = grace_end
        && let Ok(left) = end.duration_since(SystemTime::now())
        && !left.is_zero()
    {
        return Next::Wait(left);
    }
    retire_now(shared, config, rotation).await
}

/// The old value revoked at the provider and erased from the vault, grace or not.
async fn retire_now(shared: &Arc<Shared>, config: &RotationConfig, rotation: &Rotation) -> Next {
    let old_id = rotation.old_id.clone();
    let old = with_vault(shared.vault.clone(), move |v| v.get(&old_id)).await;
    if let Ok((meta, _)) = &old
        && meta.status == crate::vault::Status::Active
    {
        // Rolled back by hand: the old value is the account's key again, never revoked.
        let id = rotation.id.clone();
        return match with_vault(shared.vault.clone(), move |v| {
            v.close_rolled_back_by_hand(&id)
        })
        .await
        {
            Ok(r) => {
                record(shared, &r, "rolled_back", Some("by_hand"));
                Next::Stop
            }
            Err(e) => fail(shared, rotation, "not_recorded", &e).await,
        };
    }
    if let Ok((_, secret)) = old {
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
    } else {
        // Revoked and erased by hand during its grace period: hb has nothing to give
        // the provider, which may still accept it.
        tracing::warn!(rotation = %rotation.id,
            "the old credential was erased before the provider revoked it: revoke it there by hand");
        record(
            shared,
            rotation,
            "provider_revoke_skipped",
            Some("value_erased"),
        );
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

/// For `hb-agent rotation abort`: the value `rotation` minted (and the vault is about to
/// erase) is revoked at the provider by the integration's rotator, from the CLI; the
/// error class when it could not be.
pub fn revoke_minted_by_operator(
    config: &crate::config::Config,
    rotation: &Rotation,
    secret: &Secret,
) -> Result<(), &'static str> {
    let rotation_config = config
        .integrations
        .iter()
        .find(|i| i.name.get_ref() == &rotation.integration)
        .and_then(|i| i.rotation.as_ref())
        .ok_or("no_rotator")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|_| "no_runtime")?;
    runtime
        .block_on(rotator(rotation_config).revoke(&ask(rotation, "revoke", secret)))
        .map_err(|e| e.class())
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
    revoke_minted(shared, rotation).await;
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

/// The value minted for a rotation that ends without it is revoked at the provider
/// (once, best effort), or the provider keeps a live key nobody holds.
async fn revoke_minted(shared: &Arc<Shared>, rotation: &Rotation) {
    if rotation.new_id.is_none() {
        return;
    }
    let id = rotation.id.clone();
    let Ok((_, secret)) = with_vault(shared.vault.clone(), move |v| v.rotation_value(&id)).await
    else {
        return;
    };
    revoke_at_provider(shared, rotation, &secret).await;
}

/// Asks the integration's rotator to revoke `secret`; a failure is an audit record.
async fn revoke_at_provider(shared: &Arc<Shared>, rotation: &Rotation, secret: &Secret) {
    let Some((_, config)) = with_rotator(shared, &rotation.integration) else {
        return;
    };
    if let Err(e) = rotator(config)
        .revoke(&ask(rotation, "revoke", secret))
        .await
    {
        tracing::warn!(rotation = %rotation.id, class = e.class(),
            "the provider did not revoke a minted credential the rotation gave up: it may still work upstream");
        record(shared, rotation, "provider_revoke_failed", Some(e.class()));
    }
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
