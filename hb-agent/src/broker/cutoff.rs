//! Ending a suspect caller: a sandbox that used a decoy handle (`canary`), a caller
//! whose compromise signals keep coming past the account's
//! `max_compromise_rotations_per_day`, or one whose call raised a signal under
//! `quarantine`.
//!
//! In this order: the caller's owner (its enrolled sandbox, or a host caller's uid) is
//! barred from new handles and requests for `broker.suspect_bar_secs`, and every live
//! handle it holds is revoked, in one step of the handle table (a handle request racing
//! the bar either got its handle before, and it is revoked here, or is refused); then,
//! for a decoy's user that is a sandbox, under `broker.canary_kill`, its enrolled
//! cgroup is killed
//! (`cgroup.kill`): the cgroup its connection was identified in at accept, checked by
//! id and enrollment (see `identity::Identity::kill_sandbox`), never a pid. A host
//! caller (a service outside every sandbox) is never killed: it is barred only.
//! Every end is an audit record (`caller_ended`) and a `detector` event.
//!
//! Must never: kill a cgroup that is not an enrolled sandbox's, the cgroup root, or one
//! holding the agent; put a handle in a record other than as a keyed fingerprint.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use serde_json::json;

use super::{
    canary::owner_of,
    handles::Entry,
    identity::Caller,
    rotation::detect::{self, EventFields},
    state::Shared,
};

/// Why a caller is ended (fixed words, in records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// It used a decoy handle.
    Canary,
    /// Its compromise signal came with the account's compromise budget spent.
    CompromiseCap,
    /// Its call raised a signal whose action is `quarantine`.
    Quarantine,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Canary => "canary",
            Why::CompromiseCap => "compromise_cap",
            Why::Quarantine => "quarantine",
        }
    }
}

/// Bars `caller` and, for a decoy's user (a sandbox, under `canary_kill`), kills it;
/// the handles revoked.
pub fn end_caller(
    shared: &Arc<Shared>,
    caller: &Caller,
    policy: &str,
    why: Why,
) -> Vec<(String, Arc<Entry>)> {
    let bar = Duration::from_secs(shared.config.broker.suspect_bar_secs);
    let revoked = shared.handles.bar(owner_of(caller), Instant::now() + bar);
    let handles: Vec<String> = revoked.iter().map(|(h, _)| h.clone()).collect();
    shared.forget_handles(&handles);
    // A decoy's user is beyond doubt; a caller past the compromise budget may be an
    // honest one behind an upstream that echoes keys: refused, not killed.
    let killed = match why {
        Why::Canary => kill(shared, caller),
        Why::CompromiseCap | Why::Quarantine => "not_killed",
    };
    let barred_until = humantime::format_rfc3339_seconds(SystemTime::now() + bar).to_string();
    tracing::warn!(
        why = why.as_str(),
        policy,
        pid = caller.pid,
        cgroup = %crate::events::Escaped(&caller.cgroup),
        kill = killed,
        revoked = revoked.len(),
        "a suspect caller is ended"
    );
    shared.audit.record(
        "caller_ended",
        json!({
            "why": why.as_str(),
            "caller": {
                "pid": caller.pid,
                "uid": caller.uid,
                "cgroup": caller.cgroup,
                "sandbox": caller.sandbox.as_ref().map(|s| &s.cgroup),
                "policy": policy,
            },
            "revoked": revoked.len(),
            "barred_until": barred_until,
            "kill": killed,
        }),
    );
    detect::event(
        shared,
        &EventFields {
            caller: Some(caller),
            policy,
            verdict: "end_caller",
            reason: why.as_str(),
            name: None,
            detail: format!(
                "{killed}; barred until {barred_until}; {} handles revoked",
                revoked.len()
            ),
        },
    );
    revoked
}

/// The kill, as a fixed word: `killed`, or why not.
fn kill(shared: &Shared, caller: &Caller) -> &'static str {
    let Some(sandbox) = &caller.sandbox else {
        return "host_caller_not_killed";
    };
    if !shared.config.broker.canary_kill {
        return "kill_off";
    }
    match shared.identity.kill_sandbox(sandbox) {
        Ok(()) => "killed",
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), cgroup = %crate::events::Escaped(&sandbox.cgroup),
                "the suspect sandbox was not killed");
            e.class()
        }
    }
}
