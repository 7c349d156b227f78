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
//! The rotator is the integration's [`exec`] tool or its provider's [`http`] API (see
//! [`rotator`]); each integration's rotator has a circuit [`breaker`]. A step that fails
//! for now (the provider down, a timeout) is retried after a delay drawn uniformly
//! between `retry_base_secs` and `retry_base_secs × 2^attempt` (at most
//! `retry_cap_secs`), after a restart too (the journal's `next_attempt`); the old
//! credential is never deactivated before a new one is ACTIVE, and one whose expiry
//! nears before it is replaced raises [`deadline`]'s alert. Times and waits are the
//! engine's [`clock`] (the wall clock; faster in tests of a debug build).
//! Every step is an audit record; values appear nowhere but in the vault and the
//! scrubber.
//! Rotations by age are started by [`schedule`] (the `expiry` detector), of dead keys
//! by [`probe`] (the `auth_failure` detector), of keys an execution may have betrayed by
//! the `canary` and `reflection` detectors (`broker::canary`, `broker::requests`); each
//! signal goes through [`detect`], which applies the integration's configured action.
//! A compromised rotation skips **watch** and retires the old key right after finish.
//! How often an account may rotate is [`limits`]' (read from this journal); the
//! detectors' recent state per account is [`book`]'s. Each account's calls per bucket
//! are [`sensor`]'s, judged by [`spike`] (`rate_spike`, quarantine by default) and
//! [`novelty`] (alert only).

pub mod api;
pub mod book;
pub mod breaker;
pub mod clock;
pub mod deadline;
pub mod detect;
pub mod exec;
pub mod http;
pub mod limits;
pub mod minting;
pub mod novelty;
pub mod probe;
pub mod quarantine;
pub mod rotator;
pub mod schedule;
pub mod sensor;
pub mod spike;

use std::{sync::Arc, time::Duration};

use ::http::Method;
use bytes::Bytes;
use ring::rand::SecureRandom as _;
use serde_json::json;

use self::{
    exec::ExecRotator,
    http::HttpRotator,
    rotator::{Ask, Key, Rotator, RotatorError},
};
use super::{
    credentials::{usable_now, with_vault},
    error::{ApiError, Code},
    outbound::{HopDecision, HopPolicy, OutboundRequest, Party, url::Target},
    requests::{credential, host_matches, origin_matches},
    state::Shared,
};
use crate::{
    config::{HttpRotatorAuth, IntegrationConfig, RotationConfig},
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
    let Some((integ, _)) = with_rotator(shared, integration) else {
        return;
    };
    for r in open
        .iter()
        .filter(|r| r.integration == integration && r.account == account && !r.step.before_finish())
    {
        record(shared, r, "superseded", Some("compromised"));
        retire_now(shared, integ, config, r).await;
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

/// Mints the last agent left in flight or unsettled (see [`minting`]) get their shape
/// back, derived from the value their rotation replaces (or, once that is revoked, the
/// value that replaced it, or the account's active one), before any answer is served; one
/// that was in flight becomes `unknown` for an HTTP rotator (a retry may return its key)
/// and `orphan` for an exec one.
pub async fn restore_unsettled(shared: &Arc<Shared>) {
    for r in shared.minting.restored() {
        let outcome = match with_rotator(shared, &r.integration) {
            Some((_, config)) if config.http.is_some() => minting::Outcome::Unknown,
            _ => minting::Outcome::Orphan,
        };
        let rotation = r.rotation.clone();
        let kin = with_vault(shared.vault.clone(), move |v| {
            let rotation = v.rotation(&rotation)?;
            // The value replaced; once its rotation is retired that value is revoked
            // (erased), and the provider's next key has the shape of the one that
            // replaced it, or of the account's active one.
            [Some(rotation.old_id.as_str()), rotation.new_id.as_deref()]
                .into_iter()
                .flatten()
                .find_map(|id| v.get(id).ok())
                .map(Ok)
                .or_else(|| {
                    v.active(&rotation.integration, &rotation.account)
                        .transpose()
                })
                .transpose()
        })
        .await;
        let shape = match &kin {
            Ok(Some((_, value))) => {
                crate::scrub::shape::Shape::of(&shared.scrubber, value.expose())
            }
            Ok(None) => {
                tracing::warn!(rotation = %r.rotation, "an unsettled mint's account has no readable value: its answers go unshaped");
                None
            }
            Err(e) => {
                tracing::warn!(
                    rotation = %r.rotation,
                    error = %e.message,
                    "an unsettled mint's rotation cannot be read: its answers go unshaped"
                );
                None
            }
        };
        shared.minting.restore(r.serial, shape, outcome);
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
        // A retry keeps its backoff across a restart: resumed early, it waits its turn.
        if rotation.step.is_open()
            && let Some(left) = rotation
                .next_attempt
                .and_then(|at| at.duration_since(shared.clock.now()).ok())
                .filter(|left| !left.is_zero())
        {
            shared.clock.sleep(left).await;
            continue;
        }
        let next = match rotation.step {
            Step::Begun => create(&shared, integ, config, &rotation).await,
            Step::Created => test(&shared, integ, config, &rotation).await,
            Step::Tested => finish(&shared, config, &rotation).await,
            // A compromised key is revoked as soon as its successor is active: there
            // is nothing to roll back to, so nothing to watch for.
            Step::Finished if rotation.compromised => {
                retire(&shared, integ, config, &rotation).await
            }
            Step::Finished => watch(&shared, integ, config, &rotation).await,
            Step::Watched => retire(&shared, integ, config, &rotation).await,
            Step::Retired | Step::RolledBack | Step::Failed | Step::Aborted => Next::Stop,
        };
        match next {
            Next::Go => {}
            Next::Wait(d) => shared.clock.sleep(d).await,
            Next::Stop => return,
        }
    }
}

/// **create**: a new value from the rotator, stored PENDING.
async fn create(
    shared: &Arc<Shared>,
    integ: &IntegrationConfig,
    config: &RotationConfig,
    rotation: &Rotation,
) -> Next {
    let old_id = rotation.old_id.clone();
    let old = match with_vault(shared.vault.clone(), move |v| v.get(&old_id)).await {
        Ok((_, secret)) => secret,
        Err(e) => return fail(shared, rotation, "old_value_unreadable", &e).await,
    };
    let rotator = match rotator(shared, integ, config).await {
        Ok(r) => r,
        Err(e) => return retry_or_fail(shared, config, rotation, &e).await,
    };
    // Not attempted while the rotator's breaker is open (the provider is down).
    if let Some(wait) = breaker_wait(shared, &rotation.integration) {
        return Next::Wait(wait);
    }
    // Counted before the provider is asked: a crash between its answer and the commit
    // below would otherwise leave a key at the provider nobody knows of.
    let id = rotation.id.clone();
    if let Err(e) = with_vault(shared.vault.clone(), move |v| v.note_create_call(&id)).await {
        // Admitted but not made: a half-open breaker's trial slot goes back.
        shared.breakers.release(&rotation.integration);
        return fail(shared, rotation, "not_recorded", &e).await;
    }
    let ask = ask(rotation, "create", Key::Old, &old);
    // From here until the scrubber knows the new value, the provider may hold (and list)
    // it: answers from the integration's hosts wait (see `minting`).
    // The shape of the value being replaced: what its successor looks like, for the
    // answers made while the mint's outcome is unknown.
    let shape = crate::scrub::shape::Shape::of(&shared.scrubber, old.expose());
    let mint = shared
        .minting
        .begin(&rotation.integration, &rotation.id, shape);
    let minted = rotator.create(&ask).await;
    breaker_record(shared, &rotation.integration, config, minted.as_ref().err());
    let minted = match minted {
        Ok(m) => m,
        Err(e) => {
            // The provider may have committed a key the agent never got: an HTTP
            // rotator's retry (same Idempotency-Key) may return it; a killed exec
            // rotator's never comes.
            let outcome = match (e.class(), config.http.is_some()) {
                ("rotator_timeout" | "rotator_exchange_failed", true) => {
                    Some(minting::Outcome::Unknown)
                }
                ("rotator_timeout" | "rotator_killed", false) => Some(minting::Outcome::Orphan),
                _ => None,
            };
            if let Some(outcome) = outcome {
                mint.unsettled(outcome);
                record(shared, rotation, "mint_unsettled", Some(e.class()));
            }
            return retry_or_fail(shared, config, rotation, &e).await;
        }
    };
    // Scrubbed from the moment it exists, whatever becomes of the rotation: providers
    // list an account's keys, and a sandbox holding a handle for the account may ask.
    // On a blocking thread: registering a value with the scrubber takes milliseconds,
    // which an async worker would take from every call it serves.
    let protecting = {
        let (shared, rotation) = (Arc::clone(shared), rotation.clone());
        let secret = Secret::new(minted.secret.expose().to_vec());
        tokio::task::spawn_blocking(move || shared.protect_pending(&rotation, &secret))
    };
    if protecting.await.is_err() {
        shared.protect_pending(rotation, &minted.secret);
    }
    shared.minting.settled(&rotation.id);
    drop(mint);
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
                // The HTTP rotator asked again with the same Idempotency-Key: a provider
                // that honours it minted one key; one that ignores it may hold orphans.
                let class = if config.http.is_some() {
                    "create_called_again_same_idempotency_key"
                } else {
                    "create_called_again"
                };
                tracing::warn!(rotation = %r.id, integration = %r.integration, account = %r.account,
                    orphans = r.create_calls - 1, class,
                    "the provider was asked for a new credential more than once (a crash or a \
                     timeout cut a recording short): it may hold orphan keys from this rotation; \
                     revoke them there");
                record(shared, &r, "possible_orphan_keys", Some(class));
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
            let since = shared
                .clock
                .now()
                .duration_since(pending_meta.created)
                .unwrap_or_default();
            if since < Duration::from_secs(integ.propagation_secs) {
                attempt_failed(shared, config, rotation, "verify_refused_propagating").await
            } else {
                abandon(shared, rotation, Step::Failed, "verify_refused").await
            }
        }
        // A 403 or 429 (a rate limit a sandbox may spend on purpose) or an odd status:
        // tried again a few times, then the rotation ends and the old value stays —
        // unless the old value is compromised: it is the one a thief holds, and one who
        // spends the account's rate limit with it would keep it alive. A compromise
        // rotation goes on trying at the backoff's pace until the test passes (or an
        // operator aborts it).
        Ok(_) if rotation.attempt + 1 >= TEST_TRIES && !rotation.compromised => {
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

/// How many answers other than 2xx and 401 the test step takes before it gives up (a
/// compromise rotation's never does).
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
    if let Ok(left) = due.duration_since(shared.clock.now())
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
            shared.minting.finished(&r.integration, &r.id);
            record(shared, &r, "watched", note);
            Next::Go
        }
        Err(e) => fail(shared, rotation, "not_recorded", &e).await,
    }
}

/// **retire**: at the old value's grace end, the provider revokes it and the vault
/// erases it.
async fn retire(
    shared: &Arc<Shared>,
    integ: &IntegrationConfig,
    config: &RotationConfig,
    rotation: &Rotation,
) -> Next {
    let old_id = rotation.old_id.clone();
    let grace_end = with_vault(shared.vault.clone(), move |v| v.get(&old_id))
        .await
        .ok()
        .and_then(|(meta, _)| meta.grace_until);
    if let Some(end) = grace_end
        && let Ok(left) = end.duration_since(shared.clock.now())
        && !left.is_zero()
    {
        return Next::Wait(left);
    }
    retire_now(shared, integ, config, rotation).await
}

/// The old value revoked at the provider and erased from the vault, grace or not.
async fn retire_now(
    shared: &Arc<Shared>,
    integ: &IntegrationConfig,
    config: &RotationConfig,
    rotation: &Rotation,
) -> Next {
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
        let revoked = match rotator(shared, integ, config).await {
            Ok(r) => {
                if let Some(wait) = breaker_wait(shared, &rotation.integration) {
                    return Next::Wait(wait);
                }
                let revoked = r.revoke(&ask(rotation, "revoke", Key::Old, &secret)).await;
                breaker_record(
                    shared,
                    &rotation.integration,
                    config,
                    revoked.as_ref().err(),
                );
                revoked
            }
            Err(e) => Err(e),
        };
        match revoked {
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
        held: None,
        party: Party::Agent,
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
/// erase) is revoked at the provider by the integration's rotator, from the CLI (the
/// HTTP rotator through an outbound path of its own, its `auth` credential read from
/// `vault`); the error class when it could not be.
pub fn revoke_minted_by_operator(
    config: &crate::config::Config,
    vault: &crate::vault::Vault,
    rotation: &Rotation,
    secret: &Secret,
) -> Result<(), &'static str> {
    let (integ, rotation_config) = config
        .integrations
        .iter()
        .find(|i| i.name.get_ref() == &rotation.integration)
        .and_then(|i| Some((i, i.rotation.as_ref()?)))
        .ok_or("no_rotator")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|_| "no_runtime")?;
    let ask = ask(rotation, "revoke", Key::New, secret);
    let Some(http) = &rotation_config.http else {
        return runtime
            .block_on(exec_rotator(rotation_config).revoke(&ask))
            .map_err(|e| e.class());
    };
    let (auth_integration, auth_secret) = match &http.auth {
        HttpRotatorAuth::SelfKey => (integ, None),
        HttpRotatorAuth::Credential {
            integration,
            account,
        } => {
            let auth_integ = config
                .integrations
                .iter()
                .find(|i| i.name.get_ref() == integration)
                .ok_or("rotator_auth_integration")?;
            let usable = vault
                .usable(integration, account)
                .map_err(|_| "rotator_auth_unreadable")?;
            let (_, current) = usable.into_iter().next().ok_or("rotator_auth_missing")?;
            (auth_integ, Some(current))
        }
    };
    runtime.block_on(async {
        let local = crate::local_addrs::LocalAddrs::snapshot().map_err(|_| "outbound_setup")?;
        let outbound = super::outbound::Outbound::new(config, local)
            .await
            .map_err(|_| "outbound_setup")?;
        HttpRotator {
            outbound: &outbound,
            config: http,
            auth_integration,
            auth_secret,
            timeout: Duration::from_secs(rotation_config.timeout_secs),
        }
        .revoke(&ask)
        .await
        .map_err(|e| e.class())
    })
}

fn exec_rotator(config: &RotationConfig) -> ExecRotator {
    ExecRotator {
        argv: config.exec.clone(),
        timeout: Duration::from_secs(config.timeout_secs),
    }
}

/// The integration's rotator; for the HTTP rotator with another account's credential
/// as `auth`, that credential as it is now. Its `timeout_secs` is on the engine's
/// clock, like every other wait of a rotation: under a test clock a provider that
/// never answers costs a rotation its timeout there, not that long in real time.
async fn rotator<'a>(
    shared: &'a Shared,
    integ: &'a IntegrationConfig,
    config: &'a RotationConfig,
) -> Result<Rotator<'a>, RotatorError> {
    let timeout = shared
        .clock
        .real_duration(Duration::from_secs(config.timeout_secs));
    let Some(http) = &config.http else {
        return Ok(Rotator::Exec(ExecRotator {
            timeout,
            ..exec_rotator(config)
        }));
    };
    let (auth_integration, auth_secret) = match &http.auth {
        HttpRotatorAuth::SelfKey => (integ, None),
        HttpRotatorAuth::Credential {
            integration,
            account,
        } => {
            let auth_integ = shared
                .config
                .integrations
                .iter()
                .find(|i| i.name.get_ref() == integration)
                .ok_or(RotatorError::Failed("rotator_auth_integration"))?;
            let usable = usable_now(shared, integration, account)
                .await
                .map_err(|_| RotatorError::Failed("rotator_auth_missing"))?;
            let current = usable
                .first()
                .ok_or(RotatorError::Failed("rotator_auth_missing"))?;
            (
                auth_integ,
                Some(Secret::new(current.secret.expose().to_vec())),
            )
        }
    };
    Ok(Rotator::Http(HttpRotator {
        outbound: &shared.outbound,
        config: http,
        auth_integration,
        auth_secret,
        timeout,
    }))
}

/// How long to wait before calling `integration`'s rotator (its breaker is open, or its
/// half-open trial is out); `None`: call now.
fn breaker_wait(shared: &Shared, integration: &str) -> Option<Duration> {
    match shared.breakers.admit(integration, shared.clock.now()) {
        breaker::Admit::Go => None,
        breaker::Admit::Wait(d) => Some(d.max(Duration::from_millis(100))),
    }
}

/// A rotator call's outcome, for its breaker; an opening or closing is an audit record
/// and an event.
fn breaker_record(
    shared: &Shared,
    integration: &str,
    config: &RotationConfig,
    error: Option<&RotatorError>,
) {
    let outcome = match error {
        Some(RotatorError::RetryLater(class)) => breaker::Outcome::RetryLater(class),
        _ => breaker::Outcome::Answered,
    };
    let Some(change) = shared
        .breakers
        .record(integration, config, outcome, shared.clock.now())
    else {
        return;
    };
    let (reason, detail, audit) = match change {
        breaker::Change::Opened {
            until,
            failures,
            opening,
        } => {
            let until = humantime::format_rfc3339_seconds(until).to_string();
            let class = error.map_or("", RotatorError::class);
            (
                "rotator_breaker_open",
                format!(
                    "open until {until} after {failures} failures in a row ({class}); opening {opening}"
                ),
                json!({"integration": integration, "state": "open", "until": until,
                       "failures": failures, "opening": opening, "class": class}),
            )
        }
        breaker::Change::Closed => (
            "rotator_breaker_closed",
            "closed: the provider answered".to_owned(),
            json!({"integration": integration, "state": "closed"}),
        ),
    };
    tracing::warn!(integration, event = reason, "{detail}");
    shared.audit.record("rotator_breaker", audit);
    detect::event(
        shared,
        &detect::EventFields {
            caller: None,
            policy: "",
            verdict: "alert",
            reason,
            name: Some(integration.to_owned()),
            detail,
        },
    );
}

fn ask<'a>(rotation: &'a Rotation, op: &'static str, key: Key, secret: &'a Secret) -> Ask<'a> {
    Ask {
        op,
        rotation: &rotation.id,
        integration: &rotation.integration,
        account: &rotation.account,
        key,
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
    let at = shared.clock.now() + delay;
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

/// Full jitter above the base: uniform in [base, min(cap, base × 2^attempt)], so
/// retries spread out but never come faster than `retry_base_secs`.
fn backoff(shared: &Shared, config: &RotationConfig, attempt: u32) -> Duration {
    let mut r = [0u8; 8];
    let draw = match shared.handles.rng().fill(&mut r) {
        Ok(()) => u64::from_le_bytes(r),
        Err(_) => u64::MAX,
    };
    jittered(config.retry_base_secs, config.retry_cap_secs, attempt, draw)
}

/// [`backoff`] for a random `draw`.
fn jittered(base_secs: u64, cap_secs: u64, attempt: u32, draw: u64) -> Duration {
    let base = base_secs.max(1) * 1000;
    let ceiling = base_secs
        .saturating_mul(1u64 << attempt.min(30))
        .min(cap_secs)
        .saturating_mul(1000)
        .max(base);
    Duration::from_millis(base + draw % (ceiling - base + 1))
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
    let Some((integ, config)) = with_rotator(shared, &rotation.integration) else {
        return;
    };
    // Once, best effort, even through an open breaker: the alternative is a live key
    // nobody holds.
    let revoked = match rotator(shared, integ, config).await {
        Ok(r) => {
            let revoked = r.revoke(&ask(rotation, "revoke", Key::New, secret)).await;
            breaker_record(
                shared,
                &rotation.integration,
                config,
                revoked.as_ref().err(),
            );
            revoked
        }
        Err(e) => Err(e),
    };
    if let Err(e) = revoked {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_jittered_between_the_base_and_the_exponential_ceiling() {
        for draw in [0, 1, 999, 1_000, 123_456_789, u64::MAX] {
            for attempt in 0..12 {
                let d = jittered(2, 30, attempt, draw);
                let ceiling = (2u64 << attempt).min(30);
                assert!(d >= Duration::from_secs(2), "{d:?} below the base");
                assert!(d <= Duration::from_secs(ceiling), "{d:?} above {ceiling} s");
            }
        }
        assert_eq!(jittered(2, 30, 0, u64::MAX), Duration::from_secs(2));
        assert_eq!(jittered(2, 30, 5, 28_000), Duration::from_secs(30));
    }
}
