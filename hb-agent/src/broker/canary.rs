//! Canary handles: decoys planted beside real handles (`[[policy]] canary_handles`),
//! and what happens when one is used.
//!
//! When a caller under a policy with `canary_handles = N` gets the first handle of an
//! execution for an account, N decoys are planted for the same owner, execution,
//! integration and account: the same form as a real handle (`hb_cred_` + 32 base64url
//! characters from the same random source), the same expiry, and standing for no
//! credential. They are listed with the caller's real handles by `GET /v1/handles`, in
//! an order that tells nothing, so code that harvests every handle it can find gets
//! them too; the handle `POST /v1/handles` returned is the one to use.
//!
//! A decoy used (as the handle of `POST /v1/requests`, by anyone; deleted by someone
//! other than its owner; or found in what a caller sends through the broker — its URL,
//! headers or body, in any encoding the scrubber knows) is the `canary` signal:
//! - the caller that used it is ended (`cutoff`): barred from new handles and requests
//!   for `broker.suspect_bar_secs`, every live handle it holds (all its executions)
//!   revoked, and, if it is a sandbox, killed (`cgroup.kill` of its enrolled cgroup,
//!   under `broker.canary_kill`); the execution the decoy was planted in loses its
//!   handles too (its owner may only have been robbed: it is not killed or barred);
//! - every account those handles stood for, the decoy's own among them, gets its
//!   integration's `on_canary` action (default `rotate_compromised`);
//! - the answer is the one any dead handle gets (`unknown_handle`).
//!
//! Must never: make a decoy answer differently from a dead real handle, or let a decoy
//! reach a credential.

use std::{
    collections::BTreeSet,
    sync::{Arc, PoisonError},
};

use axum::{Json, extract::State};
use serde_json::{Value, json};

use super::{
    credentials::acting,
    error::ApiError,
    handles::{Entry, Owner},
    identity::Caller,
    rotation::detect::{self, Detector, SeenAt, Signal},
    state::{AppState, CallerOf, Shared},
};
use crate::secret::Secret;

/// Protects a newly issued real handle and plants the policy's decoys beside it: the
/// handle and its decoys registered with the scrubber in one batch (one automaton
/// build, not one per value). Blocking work: call it off the async workers.
pub fn issue(shared: &Shared, policy: &str, handle: &str, real: &Entry) {
    let n = shared
        .config
        .policies
        .iter()
        .find(|p| p.name.get_ref() == policy)
        .map_or(0, |p| p.canary_handles);
    let (planted, forgotten) = shared.handles.plant(real, n);
    forget(shared, &forgotten);
    let values: Vec<Secret> = std::iter::once(handle)
        .chain(planted.iter().map(String::as_str))
        .map(|h| Secret::new(h.as_bytes().to_vec()))
        .collect();
    // Decoys are scrubbed like a real handle (the same label), so an answer that echoes
    // one looks the same; and searched for in what callers send.
    let ids = match shared
        .scrubber
        .register_many(values.iter().map(|v| ("hb_handle", v)))
    {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "handle not scrubbed by value");
            return;
        }
    };
    let mut protected = shared
        .protected
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut canaries = shared
        .canaries
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    protected.insert(handle.to_owned(), ids[0]);
    for (h, id) in planted.iter().zip(&ids[1..]) {
        protected.insert(h.clone(), *id);
        canaries.insert(*id, h.clone());
    }
    drop((protected, canaries));
    if planted.is_empty() {
        return;
    }
    shared.audit.record(
        "handle",
        json!({
            "step": "decoys_planted",
            "policy": policy,
            "integration": real.integration,
            "account": real.account,
            "execution": real.execution,
            "count": planted.len(),
        }),
    );
}

/// Forgets decoys no longer remembered.
fn forget(shared: &Shared, decoys: &[String]) {
    if decoys.is_empty() {
        return;
    }
    let mut protected = shared
        .protected
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut canaries = shared
        .canaries
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let ids: Vec<_> = decoys
        .iter()
        .filter_map(|h| protected.remove(h))
        .inspect(|id| drop(canaries.remove(id)))
        .collect();
    drop((protected, canaries));
    super::state::unregister_off_workers(&shared.scrubber, ids);
}

/// The owner a caller's handles have (a host caller by its uid, whatever its policy).
pub fn owner_of(caller: &Caller) -> Owner {
    match &caller.sandbox {
        Some(s) => Owner::Sandbox {
            cgroup_id: s.cgroup_id,
        },
        None => Owner::Host { uid: caller.uid },
    }
}

/// If `handle` is a decoy: the canary signal (see the module header); whether it was.
pub fn check(shared: &Arc<Shared>, caller: &Caller, handle: &str, seen: SeenAt) -> bool {
    let Some(decoy) = shared.handles.decoy(handle) else {
        return false;
    };
    trip(shared, caller, handle, &decoy, seen);
    true
}

/// A decoy was used: end the caller and the decoy's execution, act on their accounts.
fn trip(shared: &Arc<Shared>, caller: &Caller, handle: &str, decoy: &Entry, seen: SeenAt) {
    let policy = caller
        .sandbox
        .as_ref()
        .map_or(shared.config.broker.host_policy.as_str(), |s| {
            s.policy.as_str()
        })
        .to_owned();
    // The caller first: barred and its handles revoked in one step, then its sandbox
    // killed (see `cutoff`).
    let mut ended = super::cutoff::end_caller(shared, caller, &policy, super::cutoff::Why::Canary);
    let mut executions = BTreeSet::new();
    executions.insert(decoy.execution.clone());
    for (h, e) in shared
        .handles
        .end_execution_entries(&decoy.execution, decoy.owner)
    {
        ended.push((h, e));
    }
    let revoked: Vec<String> = ended.iter().map(|(h, _)| h.clone()).collect();
    shared.forget_handles(&revoked);
    let mut accounts = BTreeSet::new();
    accounts.insert((decoy.integration.clone(), decoy.account.clone()));
    for (_, e) in &ended {
        accounts.insert((e.integration.clone(), e.account.clone()));
        executions.insert(e.execution.clone());
    }
    for execution in &executions {
        let n = ended
            .iter()
            .filter(|(_, e)| &e.execution == execution)
            .count();
        shared.audit_execution_end(caller, &policy, execution, "canary", n);
    }
    let fingerprint = shared.audit.fingerprint(handle);
    for (integration, account) in &accounts {
        detect::signal(
            shared,
            &Signal {
                detector: Detector::Canary,
                trigger: "canary",
                integration,
                account,
                policy: &policy,
                caller: Some(caller),
                seen,
                handle: Some(fingerprint.clone()),
                execution: Some(&decoy.execution),
            },
        );
    }
}

/// `GET /v1/handles`: the caller's live handles and its decoys, alike.
pub async fn list(
    State(shared): State<AppState>,
    CallerOf(caller): CallerOf,
) -> Result<Json<Value>, ApiError> {
    let (_, owner) = acting(&caller, &shared.config.broker.host_policy)?;
    let handles: Vec<Value> = shared
        .handles
        .listing(owner)
        .into_iter()
        .map(|l| {
            json!({
                "handle": l.handle,
                "integration": l.entry.integration,
                "account": l.entry.account,
                "execution": l.entry.execution,
                "expires_at": humantime::format_rfc3339_seconds(l.entry.expires_at).to_string(),
            })
        })
        .collect();
    Ok(Json(json!({ "handles": handles })))
}
