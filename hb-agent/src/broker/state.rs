//! What every endpoint shares: the broker's state ([`Shared`]: config, identity,
//! handles, vault, scrubber, audit log, outbound path), the extractors endpoints take
//! ([`CallerOf`], [`JsonBody`]) and the caller a connection was bound to at accept
//! ([`PeerAddr`]). (What an answer is scrubbed with depends on the caller: see
//! `text_gate::View`.)
//!
//! Owns the types the socket server and the endpoint modules (`credentials`,
//! `requests`) both use, so that neither imports the other: the server builds the
//! router from the endpoints, the endpoints import only this. (How a connection's
//! caller is identified stays with the server, beside the connection it belongs to;
//! this module only carries the result.)
//! Must never: hold a secret outside the handle registry and the scrubber, or write one
//! to the audit log (handles are fingerprinted).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Request},
    http::request::Parts,
};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::broadcast;

use super::{
    accounts::Accounts,
    error::{ApiError, Code},
    handles::{Entry, Handles},
    identity::{Caller, Identity},
    sessions::Sessions,
};
use crate::{
    audit::AuditLog,
    config::Config,
    events::EventRecord,
    scrub::{LiveId, Scrubber},
    secret::Secret,
    vault::Vault,
};

pub struct Shared {
    pub config: Arc<Config>,
    pub identity: Identity,
    pub sessions: Sessions,
    pub handles: Handles,
    /// Each account's current credentials, which a handle's call carries.
    pub accounts: Accounts,
    pub vault: Option<Arc<Mutex<Vault>>>,
    pub scrubber: Arc<Scrubber>,
    /// Live values registered with the scrubber: credential ids and handles.
    pub protected: Mutex<HashMap<String, LiveId>>,
    /// The scrubber ids of the decoy handles (`canary`), searched for in what callers
    /// send.
    pub canaries: Mutex<HashMap<LiveId, String>>,
    pub audit: Arc<AuditLog>,
    pub outbound: Arc<super::outbound::Outbound>,
    pub events: broadcast::Sender<Arc<EventRecord>>,
    pub operator_uid: u32,
    pub max_body: usize,
    /// The request body bytes read at once, shared out by tenant.
    pub body_budget: super::server::BodyBudget,
    /// The upstream answers held at once (see `server::AnswerBudget`).
    pub answer_budget: super::server::AnswerBudget,
    pub timeout: Duration,
    /// Connections refused, closed idle; text-gate refusals.
    pub stats: super::stats::Stats,
    /// The rate limit of `/v1/scrub` and `/v1/sanitize`.
    pub text_gate: super::text_gate::TextGate,
    /// The rate limit of `POST /v1/handles` (`broker.handles_per_minute`).
    pub handle_gate: super::text_gate::TextGate,
    /// The text work each caller of `/v1/scrub` and `/v1/sanitize` has running.
    pub text_work: super::text_gate::TextWork,
    /// The `auth_failure` detector's probes in flight.
    pub probes: super::rotation::probe::Probes,
    /// The detectors' recent state per account (`state_dir/detectors.json`).
    pub book: super::rotation::book::Book,
    /// Accounts held by the `quarantine` action.
    pub quarantines: super::rotation::quarantine::Quarantines,
    /// Each sensed account's calls per bucket, baseline and known pairs
    /// (`state_dir/sensor.json`).
    pub sensor: super::rotation::sensor::Sensor,
    /// Each rotator's circuit breaker (`state_dir/breakers.json`).
    pub breakers: super::rotation::breaker::Breakers,
    /// The integrations whose rotator is minting a value the scrubber does not know yet.
    pub minting: super::rotation::minting::Minting,
    /// The vault file's stamp when its every stored value was last registered with the
    /// scrubber (see `credentials::protect_stored`); `None`: not since the start.
    pub stored: super::accounts::StoredMark,
    /// The accounts whose newest key the upstream refused within its propagation window.
    pub propagation: super::propagation::Propagation,
    /// Each caller's audit records under its event budget.
    pub caller_audit: super::caller_audit::CallerBudgets<super::caller_audit::CallerRecord>,
    /// Each caller's refusals for the event stream under its event budget.
    pub caller_events: super::caller_audit::CallerBudgets<EventRecord>,
    /// The rotation engine's clock (the wall clock; see `rotation::clock`).
    pub clock: super::rotation::clock::Clock,
}

pub type AppState = Arc<Shared>;

pub(super) fn caller_json(caller: &Caller, policy: &str) -> serde_json::Value {
    json!({
        "pid": caller.pid,
        "uid": caller.uid,
        "cgroup": caller.cgroup,
        "policy": policy,
    })
}

impl Shared {
    /// Protects a rotation's new value before it has a credential id (under the
    /// rotation's id), as one of its account's credentials: the answers of sandboxes
    /// holding a handle for the account are scrubbed of it (see `text_gate::View`).
    pub fn protect_pending(&self, rotation: &crate::vault::Rotation, secret: &Secret) {
        self.protect(&rotation.id, secret);
        self.accounts
            .note(&rotation.integration, &rotation.account, &rotation.id);
    }

    /// Makes `credential_id` name what `protected_as` already protects (one value,
    /// registered with the scrubber once).
    pub fn protect_alias(&self, credential_id: &str, protected_as: &str) {
        let Ok(mut protected) = self.protected.lock() else {
            return;
        };
        if let Some(id) = protected.get(protected_as).copied() {
            protected.entry(credential_id.to_owned()).or_insert(id);
        }
    }

    /// Adds a decrypted credential (once per credential id) to what the scrubber removes
    /// from everything leaving hb, in its encodings too.
    pub fn protect(&self, credential_id: &str, secret: &Secret) {
        let known = |credential_id: &str| {
            self.protected
                .lock()
                .map_or(true, |protected| protected.contains_key(credential_id))
        };
        if known(credential_id) {
            return;
        }
        // Registered without the lock the request path's search takes: building the
        // value's forms and automaton segment (and merging segments) takes milliseconds,
        // and every call would wait for it.
        let id = match self.scrubber.register("live_secret", secret) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, credential = credential_id, "credential not scrubbed by value");
                return;
            }
        };
        let Ok(mut protected) = self.protected.lock() else {
            return;
        };
        if protected.contains_key(credential_id) {
            // Registered meanwhile by another call: one registration is enough.
            drop(protected);
            unregister_off_workers(&self.scrubber, vec![id]);
            return;
        }
        protected.insert(credential_id.to_owned(), id);
    }

    /// Stops scrubbing the values of `handles`: their ids leave `protected` at once
    /// (the lock the request path's search takes), the scrubber forgets them after.
    pub fn forget_handles(&self, handles: &[String]) {
        let ids: Vec<LiveId> = {
            let Ok(mut protected) = self.protected.lock() else {
                return;
            };
            handles.iter().filter_map(|h| protected.remove(h)).collect()
        };
        unregister_off_workers(&self.scrubber, ids);
    }

    /// A record of `caller`'s call, written under its event budget (see
    /// `caller_audit`): a caller that calls in a loop cannot rotate the audit log.
    pub fn audit_caller(&self, caller: &Caller, kind: &'static str, record: serde_json::Value) {
        self.caller_audit.record(
            &self.audit,
            &caller.cgroup,
            super::caller_audit::CallerRecord::new(kind, record),
        );
    }

    /// A refusal of `caller`'s call for the event stream, under its event budget.
    pub fn caller_event(&self, caller: &Caller, record: EventRecord) {
        for record in self.caller_events.admit(&caller.cgroup, record) {
            let _ = self.events.send(Arc::new(record));
        }
    }

    pub fn audit_decision(
        &self,
        caller: &Caller,
        policy: &str,
        action: &str,
        decision: &str,
        detail: &str,
    ) {
        self.audit_caller(
            caller,
            "broker_decision",
            json!({
                "caller": caller_json(caller, policy),
                "action": action,
                "decision": decision,
                "detail": detail,
            }),
        );
    }

    pub fn audit_handle(
        &self,
        caller: &Caller,
        policy: &str,
        step: &str,
        handle: &str,
        entry: &Entry,
        credential: Option<&str>,
    ) {
        self.audit_caller(
            caller,
            "handle",
            json!({
                "caller": caller_json(caller, policy),
                "step": step,
                "handle": self.audit.fingerprint(handle),
                "integration": entry.integration,
                "account": entry.account,
                "credential": credential,
                "execution": entry.execution,
            }),
        );
    }

    /// A call made with a handle: the decision and the handle's use, in one record.
    pub fn audit_handle_use(
        &self,
        caller: &Caller,
        policy: &str,
        handle: &str,
        (entry, credential): (&Entry, &str),
        action: &str,
        status: u16,
    ) {
        self.audit_caller(
            caller,
            "handle",
            json!({
                "caller": caller_json(caller, policy),
                "step": "used",
                "handle": self.audit.fingerprint(handle),
                "integration": entry.integration,
                "account": entry.account,
                "credential": credential,
                "execution": entry.execution,
                "action": action,
                "decision": "allowed",
                "status": status,
            }),
        );
    }

    pub fn audit_execution_end(
        &self,
        caller: &Caller,
        policy: &str,
        execution: &str,
        outcome: &str,
        revoked: usize,
    ) {
        self.audit_caller(
            caller,
            "handle",
            json!({
                "caller": caller_json(caller, policy),
                "step": "execution_ended",
                "execution": execution,
                "outcome": outcome,
                "revoked": revoked,
            }),
        );
    }
}

/// The identified caller of this request: the one its connection was bound to at
/// accept (`server`), never looked up again.
pub struct CallerOf(pub Caller);

impl FromRequestParts<AppState> for CallerOf {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        // Bound when the connection was accepted; never looked up again.
        let info = parts
            .extensions
            .get::<ConnectInfo<PeerAddr>>()
            .ok_or_else(|| ApiError::new(Code::UnknownCaller, "no peer credentials"))?;
        Ok(CallerOf(Caller::clone(&info.0.0)))
    }
}

/// The caller a connection was opened by, bound at accept (as the request extension
/// [`ConnectInfo<PeerAddr>`] that [`CallerOf`] reads).
#[derive(Clone, Debug)]
pub struct PeerAddr(Arc<Caller>);

impl PeerAddr {
    pub fn new(caller: Caller) -> Self {
        Self(Arc::new(caller))
    }

    pub fn caller_arc(&self) -> Arc<Caller> {
        self.0.clone()
    }
}

/// A JSON body, read up to `broker.max_body_bytes`, with errors in our envelope.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + Send + 'static> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.max_body;
        let bytes: Bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|e| super::server::body_error(&e, limit))?;
        parse_json(bytes)
            .await?
            .map(JsonBody)
            .map_err(|e| ApiError::new(Code::BadRequest, format!("the request body: {e}")))
    }
}

/// Request bodies up to this size are parsed on the calling task: the hand-off to a
/// blocking thread costs more than their parse.
const INLINE_PARSE_BYTES: usize = 64 * 1024;

/// A request body read as JSON; a large one on a blocking thread. The parse is linear,
/// but on the broker's two async workers, which every tenant's calls share, one caller's
/// bodies of up to `broker.max_body_bytes` held them for as long as each took, call after
/// call (attack review 49). The outer error: the parsing task failed.
pub async fn parse_json<T: DeserializeOwned + Send + 'static>(
    bytes: Bytes,
) -> Result<Result<T, serde_json::Error>, ApiError> {
    if bytes.len() <= INLINE_PARSE_BYTES {
        return Ok(serde_json::from_slice(&bytes));
    }
    tokio::task::spawn_blocking(move || serde_json::from_slice(&bytes))
        .await
        .map_err(|_| ApiError::new(Code::Internal, "the request body's parse failed"))
}

/// Unregisters `ids` from the scrubber. A rebuild takes milliseconds with many live
/// values, so on the runtime it runs on a blocking thread: a caller that revokes
/// handles in a loop must not stall the async workers every other caller shares.
/// Until it lands the values are still redacted, which is harmless.
pub fn unregister_off_workers(scrubber: &Arc<Scrubber>, ids: Vec<LiveId>) {
    if ids.is_empty() {
        return;
    }
    let unregister = {
        let scrubber = Arc::clone(scrubber);
        move || {
            for id in ids {
                scrubber.unregister(id);
            }
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(unregister)),
        Err(_) => unregister(),
    }
}
