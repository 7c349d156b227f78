//! Detector signals and the actions they lead to (`[integration.rotation] on_canary`,
//! `on_reflection`, `on_auth_failure`, `on_expiry`).
//!
//! A detector that sees evidence about an account calls [`signal`]; the account's
//! integration says what follows: `observe` (an audit record), `alert` (and an event on
//! the event stream), `rotate` (and a rotation; the old key keeps its grace period) or
//! `rotate_compromised` (a rotation with no grace and no rollback; an account whose
//! rotation is already open has that rotation marked compromised instead, and if it
//! has finished, its old key's grace ends at once). An integration without a rotator
//! can only be alerted about. `canary` and `reflection` ignore `cooldown_secs` (the
//! schedule applies it to `expiry`; the probe paces `auth_failure`).
//! Must never: put a value, a handle or a caller's text in a record (handles appear as
//! keyed fingerprints), or start a rotation the journal would not.

use std::{sync::Arc, time::SystemTime};

use serde_json::json;

use super::super::{credentials::with_vault, identity::Caller, state::Shared};
use crate::{
    config::{DetectorAction, RotationConfig},
    events::EventRecord,
};

/// The detectors that lead to actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detector {
    /// A decoy handle was used, or seen in what a caller sent.
    Canary,
    /// A credential's own value in the answer to the call that carried it, or in what a
    /// caller sent.
    Reflection,
    /// The verify probe after a 401 found the key dead.
    AuthFailure,
    /// Two thirds of the key's lifetime, or `max_age_secs`.
    Expiry,
}

impl Detector {
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::Canary => "canary",
            Detector::Reflection => "reflection",
            Detector::AuthFailure => "auth_failure",
            Detector::Expiry => "expiry",
        }
    }

    fn configured(self, config: &RotationConfig) -> DetectorAction {
        match self {
            Detector::Canary => config.on_canary,
            Detector::Reflection => config.on_reflection,
            Detector::AuthFailure => config.on_auth_failure,
            Detector::Expiry => config.on_expiry,
        }
    }
}

/// What a detector saw.
pub struct Signal<'a> {
    pub detector: Detector,
    /// The journal's `trigger` if a rotation follows (`canary`, `reflection`,
    /// `auth_failure`, `expiry`, `max_age`).
    pub trigger: &'a str,
    pub integration: &'a str,
    pub account: &'a str,
    /// The policy of the caller whose call raised it ("" for the schedule and probes).
    pub policy: &'a str,
    pub caller: Option<&'a Caller>,
    /// Where it was seen, in fixed words (`request_handle`, `request_content`,
    /// `response`, `delete`, `verify_probe`, `schedule`).
    pub seen: &'static str,
    /// The keyed fingerprint of the handle involved, if any.
    pub handle: Option<String>,
    /// The execution involved, if any.
    pub execution: Option<&'a str>,
}

/// The action the account's integration configures for `detector`: without a rotator,
/// at most `alert`.
pub fn action_for(shared: &Shared, detector: Detector, integration: &str) -> DetectorAction {
    match super::with_rotator(shared, integration) {
        Some((_, config)) => detector.configured(config),
        None => DetectorAction::Alert,
    }
}

/// Records `s`, and acts on it as the account's integration says. The rotation (if
/// any) is started on a task of its own; this returns at once.
pub fn signal(shared: &Arc<Shared>, s: &Signal<'_>) -> DetectorAction {
    let action = record(shared, s);
    if let Some(compromised) = rotates(action) {
        let (shared, integration, account, trigger) = (
            shared.clone(),
            s.integration.to_owned(),
            s.account.to_owned(),
            s.trigger.to_owned(),
        );
        tokio::spawn(async move {
            act(&shared, &integration, &account, &trigger, compromised).await;
        });
    }
    action
}

/// [`signal`], the rotation started before it returns (for the schedule, which reads
/// the journal again on its next tick).
pub async fn signal_and_act(shared: &Arc<Shared>, s: &Signal<'_>) -> DetectorAction {
    let action = record(shared, s);
    if let Some(compromised) = rotates(action) {
        act(shared, s.integration, s.account, s.trigger, compromised).await;
    }
    action
}

/// Whether `action` rotates, and as compromised.
fn rotates(action: DetectorAction) -> Option<bool> {
    match action {
        DetectorAction::Observe | DetectorAction::Alert => None,
        DetectorAction::Rotate => Some(false),
        DetectorAction::RotateCompromised => Some(true),
    }
}

/// The audit record (and, unless `observe`, the event) of a signal; its action.
fn record(shared: &Shared, s: &Signal<'_>) -> DetectorAction {
    let action = action_for(shared, s.detector, s.integration);
    let caller = s.caller.map(|c| {
        json!({
            "pid": c.pid,
            "uid": c.uid,
            "cgroup": c.cgroup,
        })
    });
    tracing::warn!(
        detector = s.detector.as_str(),
        action = action.as_str(),
        integration = s.integration,
        account = s.account,
        policy = s.policy,
        seen = s.seen,
        "detector signal"
    );
    shared.audit.record(
        "detector",
        json!({
            "detector": s.detector.as_str(),
            "action": action.as_str(),
            "integration": s.integration,
            "account": s.account,
            "policy": s.policy,
            "caller": caller,
            "seen": s.seen,
            "handle": s.handle,
            "execution": s.execution,
            "rotator": super::with_rotator(shared, s.integration).is_some(),
        }),
    );
    if action != DetectorAction::Observe {
        let _ = shared.events.send(Arc::new(EventRecord {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            hook: "detector".into(),
            verdict: action.as_str().into(),
            reason: s.detector.as_str().into(),
            policy: s.policy.to_owned(),
            cgroup_id: s
                .caller
                .and_then(|c| c.sandbox.as_ref())
                .map_or(0, |sb| sb.cgroup_id),
            cgroup: s.caller.map(|c| c.cgroup.clone()),
            pid: s.caller.map_or(0, |c| u32::try_from(c.pid).unwrap_or(0)),
            tid: 0,
            comm: String::new(),
            family: String::new(),
            protocol: String::new(),
            dst: String::new(),
            port: 0,
            name: Some(format!("{}/{}", s.integration, s.account)),
            suppressed: 0,
        }));
    }
    action
}

/// Starts the rotation (a compromise one supersedes a rotation of the account past its
/// finish: see `rotation::trigger`); for a compromise, an open rotation of the account
/// before its finish is marked compromised instead of starting a second one (the
/// journal allows one at a time).
async fn act(
    shared: &Arc<Shared>,
    integration: &str,
    account: &str,
    trigger: &str,
    compromised: bool,
) {
    match super::trigger(shared, integration, account, trigger, compromised).await {
        Ok(_) => {}
        // One is open before its finish: mark that one.
        Err(_) if compromised => {
            if !upgrade(shared, integration, account, trigger).await {
                note(shared, integration, account, trigger, "not_started");
            }
        }
        Err(_) => note(shared, integration, account, trigger, "rotation_open"),
    }
}

/// Marks the account's open rotation compromised; whether there was one.
async fn upgrade(shared: &Arc<Shared>, integration: &str, account: &str, trigger: &str) -> bool {
    let (i, a) = (integration.to_owned(), account.to_owned());
    match with_vault(shared.vault.clone(), move |v| {
        v.compromise_open_rotation(&i, &a)
    })
    .await
    {
        Ok(Some(r)) => {
            super::record(shared, &r, "marked_compromised", Some(trigger));
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(integration, account, error = %e.message, "cannot mark the open rotation compromised");
            false
        }
    }
}

/// A signal whose rotation did not start (a fixed word says why).
fn note(shared: &Shared, integration: &str, account: &str, trigger: &str, class: &str) {
    shared.audit.record(
        "detector",
        json!({
            "integration": integration,
            "account": account,
            "trigger": trigger,
            "rotation": class,
        }),
    );
}
