//! Handles for credentials: `POST /v1/handles`, `DELETE /v1/handles/{handle}`,
//! `POST /v1/executions/{id}/end`.
//!
//! A caller acts under its sandbox's policy (a host caller under `broker.host_policy`,
//! or none). To get a handle, that policy must bind the integration
//! (`[[policy]] integrations`) and the vault must hold an active credential for the
//! account. The decrypted value goes straight into the handle's entry and the
//! scrubber's set of values that must never leave; the caller only ever sees the handle.

use std::sync::{Arc, Mutex};

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use serde::Deserialize;
use serde_json::json;

use super::{
    error::{ApiError, Code},
    handles::{self, Owner},
    identity::Caller,
    state::{AppState, CallerOf, JsonBody},
};
use crate::vault::Vault;

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
    let bound = shared
        .config
        .policies
        .iter()
        .find(|p| p.name.get_ref() == &policy)
        .is_some_and(|p| {
            p.integrations
                .iter()
                .any(|i| i.get_ref() == &req.integration)
        });
    if !bound {
        shared.audit_decision(
            &caller,
            &policy,
            "handle",
            "binding_missing",
            &req.integration,
        );
        return Err(ApiError::new(
            Code::BindingMissing,
            format!(
                "policy \"{policy}\" does not bind integration \"{}\" ([[policy]] integrations): \
                 no handle can be issued for it",
                req.integration
            ),
        ));
    }
    let (integration, account) = (req.integration.clone(), req.account.clone());
    let found = with_vault(shared.vault.clone(), move |v| {
        v.active(&integration, &account)
    })
    .await?;
    let Some((meta, secret)) = found else {
        shared.audit_decision(
            &caller,
            &policy,
            "handle",
            "no_credential",
            &req.integration,
        );
        return Err(ApiError::new(
            Code::NoCredential,
            format!(
                "the vault holds no active credential for integration \"{}\" account \"{}\"",
                req.integration, req.account
            ),
        ));
    };
    shared.protect(&meta.id, &secret);
    let execution = match req.execution {
        Some(e) => e,
        None => handles::new_execution_id(shared.handles.rng())
            .ok_or_else(|| ApiError::new(Code::Internal, "no randomness"))?,
    };
    let (handle, entry, expired) = shared
        .handles
        .create(
            req.integration,
            req.account,
            meta.id,
            Arc::new(secret),
            owner,
            execution,
        )
        .ok_or_else(|| ApiError::new(Code::Internal, "cannot create a handle"))?;
    shared.forget_handles(&expired);
    shared.protect_handle(&handle);
    shared.audit_handle(&caller, &policy, "registered", &handle, &entry);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "handle": handle,
            "expires_at": humantime::format_rfc3339_seconds(entry.expires_at).to_string(),
            "execution": entry.execution,
        })),
    ))
}

pub async fn delete_handle(
    State(shared): State<AppState>,
    CallerOf(caller): CallerOf,
    Path(handle): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (policy, owner) = acting(&caller, &shared.config.broker.host_policy)?;
    match shared.handles.get(&handle, owner) {
        Some(entry) if shared.handles.delete(&handle, owner) => {
            shared.audit_handle(&caller, &policy, "revoked", &handle, &entry);
            shared.forget_handles(std::slice::from_ref(&handle));
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(unknown_handle()),
    }
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
