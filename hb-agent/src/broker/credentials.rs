//! Handles for credentials: `POST /v1/handles`, `DELETE /v1/handles/{handle}`,
//! `POST /v1/executions/{id}/end`.
//!
//! A caller acts under its sandbox's policy (a host caller under `broker.host_policy`,
//! or none). To get a handle, that policy must bind the integration
//! (`[[policy]] integrations`) and the vault must hold a usable credential for the
//! account. The handle stands for the account: each call resolves the account's current
//! credential ([`usable_now`]), whose decrypted value goes into the scrubber's set of
//! values that must never leave before any call carries it; the caller only ever sees
//! the handle.

use std::sync::{Arc, Mutex};

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use serde::Deserialize;
use serde_json::json;

use super::{
    accounts::Current,
    error::{ApiError, Code},
    handles::{self, Entry, Owner},
    identity::Caller,
    state::{AppState, CallerOf, JsonBody, Shared},
    text_gate,
};
use crate::{config::Binding, vault::Vault};

/// The policy a caller acts under and the owner its handles get.
pub fn acting(caller: &Caller, host_policy: &str) -> Result<(String, Owner), ApiError> {
    match &caller.sandbox {
        Some(s) => Ok((
            s.policy.clone(),
            Owner::Sandbox {
                cgroup_id: s.cgroup_id,
            },
        )),
        None if !host_policy.is_empty() => {
            Ok((host_policy.to_owned(), Owner::Host { uid: caller.uid }))
        }
        None => Err(ApiError::new(
            Code::PolicyDenied,
            "callers outside a sandbox act under broker.host_policy, which is not set: \
             host callers get no handles and make no requests",
        )),
    }
}

fn valid_name(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
        return Err(ApiError::new(
            Code::BadRequest,
            format!("\"{field}\" must be 1-256 characters without control characters"),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateHandle {
    integration: String,
    account: String,
    #[serde(default)]
    execution: Option<String>,
}

/// Runs `f` on the vault on a blocking thread (SQLite and AES are blocking work).
pub async fn with_vault<T: Send + 'static>(
    vault: Option<Arc<Mutex<Vault>>>,
    f: impl FnOnce(&mut Vault) -> Result<T, crate::vault::VaultError> + Send + 'static,
) -> Result<T, ApiError> {
    let vault = vault.ok_or_else(|| {
        ApiError::new(
            Code::Unavailable,
            "the agent has no vault (no master key at agent.master_key_file: run `hb-agent vault init`)",
        )
    })?;
    tokio::task::spawn_blocking(move || {
        let mut v = vault
            .lock()
            .map_err(|_| ApiError::new(Code::Internal, "vault lock poisoned"))?;
        f(&mut v).map_err(|e| ApiError::new(Code::Unavailable, crate::error_chain(&e)))
    })
    .await
    .map_err(|_| ApiError::new(Code::Internal, "vault task failed"))?
}

pub async fn create_handle(
    State(shared): State<AppState>,
    CallerOf(caller): CallerOf,
    JsonBody(req): JsonBody<CreateHandle>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    valid_name("integration", &req.integration)?;
    valid_name("account", &req.account)?;
    if let Some(e) = &req.execution {
        valid_name("execution", e)?;
    }
    let (policy, owner) = acting(&caller, &shared.config.broker.host_policy)?;
    refuse_barred(&shared, &caller, &policy, owner, "handle")?;
    text_gate::admit_handle(&shared, &caller)?;
    let binding = shared
        .config
        .policies
        .iter()
        .find(|p| p.name.get_ref() == &policy)
        .map_or(Binding::Integration, |p| {
            p.binds(&req.integration, &req.account)
        });
    if binding != Binding::Bound {
        shared.audit_decision(
            &caller,
            &policy,
            "handle",
            "binding_missing",
            &req.integration,
        );
        let message = if binding == Binding::Account {
            format!(
                "policy \"{policy}\" binds integration \"{}\" for other accounts than \"{}\" \
                 ([[policy]] accounts): no handle can be issued for it",
                req.integration, req.account
            )
        } else {
            format!(
                "policy \"{policy}\" does not bind integration \"{}\" ([[policy]] integrations): \
                 no handle can be issued for it",
                req.integration
            )
        };
        return Err(ApiError::new(Code::BindingMissing, message));
    }
    let usable = usable_now(&shared, &req.integration, &req.account).await?;
    let Some(current) = usable.first() else {
        shared.audit_decision(
            &caller,
            &policy,
            "handle",
            "no_credential",
            &req.integration,
        );
        return Err(no_credential(&req.integration, &req.account));
    };
    let credential_id = current.credential_id.clone();
    let execution = match req.execution {
        Some(e) => e,
        None => handles::new_execution_id(shared.handles.rng())
            .ok_or_else(|| ApiError::new(Code::Internal, "no randomness"))?,
    };
    let cap = if text_gate::is_limited(&shared, &caller) {
        shared.config.broker.max_handles_per_caller
    } else {
        usize::MAX
    };
    // The bar is checked again under the table's lock: a bar set since the check above
    // wins.
    let (handle, entry, expired) = shared
        .handles
        .create(req.integration, req.account, owner, execution, cap)
        .map_err(|e| handle_refused(&shared, &caller, &policy, &e))?;
    register(&shared, &policy, &handle, &entry, expired).await?;
    shared
        .sensor
        .handle_issued(&entry.integration, &entry.account);
    shared.audit_handle(
        &caller,
        &policy,
        "registered",
        &handle,
        &entry,
        Some(&credential_id),
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "handle": handle,
            "expires_at": humantime::format_rfc3339_seconds(entry.expires_at).to_string(),
            "execution": entry.execution,
        })),
    ))
}

/// Registers a new handle and its policy's decoys with the scrubber (one batch) and
/// forgets the handles that expired, on a blocking thread: rebuilding the scrubber's
/// automata is CPU work every other caller's call would otherwise wait behind.
async fn register(
    shared: &AppState,
    policy: &str,
    handle: &str,
    entry: &Arc<Entry>,
    expired: Vec<String>,
) -> Result<(), ApiError> {
    let (shared, policy, handle, entry) = (
        shared.clone(),
        policy.to_owned(),
        handle.to_owned(),
        entry.clone(),
    );
    tokio::task::spawn_blocking(move || {
        shared.forget_handles(&expired);
        super::canary::issue(&shared, &policy, &handle, &entry);
    })
    .await
    .map_err(|_| ApiError::new(Code::Internal, "handle registration failed"))
}

/// The answer to a handle [`Handles::create`](handles::Handles::create) refused; a
/// caller at its cap is audited and counted.
fn handle_refused(
    shared: &Shared,
    caller: &Caller,
    policy: &str,
    e: &handles::CreateError,
) -> ApiError {
    let held = match e {
        handles::CreateError::AtLimit { held } => held,
        handles::CreateError::Barred(until) => {
            shared.audit_decision(caller, policy, "handle", "barred", "");
            return barred(*until);
        }
        handles::CreateError::AccountBarred => {
            shared.audit_decision(caller, policy, "handle", "credential_fragment", "");
            return super::fragment_hit::refusal();
        }
        _ => return ApiError::new(Code::Internal, format!("cannot create a handle: {e}")),
    };
    shared.stats.handles_limited(&shared.config.agent.state_dir);
    shared.audit_decision(
        caller,
        policy,
        "handle",
        "handle_limit",
        &format!("{held} live handles"),
    );
    ApiError::new(
        Code::HandleLimit,
        format!(
            "at most broker.max_handles_per_caller ({}) live handles per caller: delete one \
             (DELETE /v1/handles/{{handle}}), end an execution (POST /v1/executions/{{id}}/end) \
             or wait for one to expire",
            shared.config.broker.max_handles_per_caller
        ),
    )
}

pub async fn delete_handle(
    State(shared): State<AppState>,
    CallerOf(caller): CallerOf,
    Path(handle): Path<String>,
) -> Result<StatusCode, ApiError> {
    let acting = acting(&caller, &shared.config.broker.host_policy);
    // A decoy deleted by its owner goes as a real handle would; by anyone else it is
    // the canary signal, answered as any dead handle (or as acting's refusal).
    if let Some(decoy) = shared.handles.decoy(&handle) {
        let owner = super::canary::owner_of(&caller);
        if decoy.owner != owner {
            super::canary::check(
                &shared,
                &caller,
                &handle,
                super::rotation::detect::SeenAt::Delete,
            );
        } else if acting.is_ok() && shared.handles.delete_decoy(&handle, owner) {
            return Ok(StatusCode::NO_CONTENT);
        }
        acting?;
        return Err(unknown_handle());
    }
    let (policy, owner) = acting?;
    match shared.handles.get(&handle, owner) {
        Some(entry) if shared.handles.delete(&handle, owner) => {
            shared.audit_handle(&caller, &policy, "revoked", &handle, &entry, None);
            shared.forget_handles(std::slice::from_ref(&handle));
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(unknown_handle()),
    }
}

/// Registers with the scrubber every stored value (not revoked) it does not know yet,
/// when the vault file changed since the last look: a value another process stored
/// (`hb-agent vault put|rotate`) is scrubbed from every answer from then on, not only
/// once a call of its own account reads it — a provider's listing may hold another
/// tenant's key that no call has carried yet. One `stat` when nothing changed; after a
/// change, the metadata and only the values not registered yet are read. The unchanged
/// case takes no lock (see `accounts::StoredMark`).
pub async fn protect_stored(shared: &Arc<Shared>) {
    let Some(stamp) = shared.accounts.stamp() else {
        return;
    };
    if shared.stored.covers(stamp) {
        return;
    }
    let Some(mark) = shared.stored.begin(stamp).await else {
        return;
    };
    let known: std::collections::HashSet<String> = shared
        .protected
        .lock()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let read = with_vault(shared.vault.clone(), move |v| {
        let mut values = Vec::new();
        for meta in v.list()? {
            // A row that does not open (`vault check` names it) is skipped, not retried
            // at every answer.
            if meta.status != crate::vault::Status::Revoked
                && !known.contains(&meta.id)
                && let Ok(value) = v.get(&meta.id)
            {
                values.push(value);
            }
        }
        Ok(values)
    })
    .await;
    let Ok(values) = read else {
        return;
    };
    if !values.is_empty() {
        // Off the async workers: registering takes milliseconds with many live values.
        let registering = {
            let shared = Arc::clone(shared);
            tokio::task::spawn_blocking(move || {
                for (meta, secret) in &values {
                    shared.protect(&meta.id, secret);
                }
            })
        };
        if registering.await.is_err() {
            return;
        }
    }
    // The stamp taken before the read: a commit meanwhile changes it, and the next look
    // reads again.
    mark.done(stamp);
}

/// The credentials a call of `integration`/`account` may carry now, the active one
/// first (see `accounts`): from the cache while the vault file is unchanged, else read
/// from the vault, each value registered with the scrubber before it is returned.
pub async fn usable_now(
    shared: &Shared,
    integration: &str,
    account: &str,
) -> Result<Vec<Arc<Current>>, ApiError> {
    let now = std::time::SystemTime::now();
    let stamp = shared.accounts.stamp();
    if let Some(stamp) = stamp
        && let Some(hit) = shared.accounts.cached(integration, account, stamp, now)
    {
        return Ok(hit);
    }
    let (i, a) = (integration.to_owned(), account.to_owned());
    let read = with_vault(shared.vault.clone(), move |v| v.usable(&i, &a)).await?;
    for (meta, secret) in &read {
        shared.protect(&meta.id, secret);
    }
    Ok(match stamp {
        Some(stamp) => shared.accounts.store(integration, account, stamp, read),
        None => read
            .into_iter()
            .map(|(m, s)| Arc::new(Current::new(&m, s)))
            .collect(),
    })
}

/// A caller a detector ended (see `cutoff`) gets no handle and makes no request until
/// its bar lapses.
pub fn refuse_barred(
    shared: &Shared,
    caller: &Caller,
    policy: &str,
    owner: Owner,
    action: &str,
) -> Result<(), ApiError> {
    match shared.handles.barred_until(owner) {
        Some(until) => {
            shared.audit_decision(caller, policy, action, "barred", "");
            Err(barred(until))
        }
        None => Ok(()),
    }
}

fn barred(until: std::time::Instant) -> ApiError {
    let left = until.saturating_duration_since(std::time::Instant::now());
    ApiError::new(
        Code::PolicyDenied,
        format!(
            "this caller was ended by a detector: no handle or request for another {} s \
             (broker.suspect_bar_secs)",
            left.as_secs()
        ),
    )
}

/// The vault holds nothing usable for the account (never stored, or revoked).
pub fn no_credential(integration: &str, account: &str) -> ApiError {
    ApiError::new(
        Code::NoCredential,
        format!(
            "the vault holds no active credential for integration \"{integration}\" account \"{account}\""
        ),
    )
}

/// The one answer for every handle that cannot be used.
pub fn unknown_handle() -> ApiError {
    ApiError::new(
        Code::UnknownHandle,
        "unknown handle: it does not exist, has expired or ended, or belongs to another caller",
    )
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EndExecution {
    #[serde(default)]
    outcome: Option<String>,
}

pub async fn end_execution(
    State(shared): State<AppState>,
    CallerOf(caller): CallerOf,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (policy, owner) = acting(&caller, &shared.config.broker.host_policy)?;
    let body: EndExecution = if body.is_empty() {
        EndExecution::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(Code::BadRequest, format!("the request body: {e}")))?
    };
    let outcome = body.outcome.unwrap_or_default();
    let revoked = shared.handles.end_execution(&id, owner);
    shared.forget_handles(&revoked);
    shared.audit_execution_end(&caller, &policy, &id, &outcome, revoked.len());
    Ok(Json(json!({ "execution": id, "revoked": revoked.len() })))
}
