//! Detector signals and the actions they lead to (`[integration.rotation] on_canary`,
//! `on_reflection`, `on_auth_failure`, `on_expiry`, `on_rate_spike`, `on_novelty`).
//!
//! A detector that sees evidence about an account calls [`signal`]; the account's
//! integration says what follows: `observe` (an audit record), `alert` (and an event on
//! the event stream), `rotate` (and a rotation; the old key keeps its grace period) or
//! `rotate_compromised` (a rotation with no grace and no rollback; an account whose
//! rotation is already open has that rotation marked compromised instead, and if it
//! has finished, its old key's grace ends at once). An integration without a rotator
//! can only be alerted about.
//!
//! Limits (see `limits`): a rotating action first reads the journal. `canary` and
//! `reflection` skip `cooldown_secs` and `max_rotations_per_day`, but past
//! `max_compromise_rotations_per_day` they only alert, and the caller that raised a
//! reflection then (of a key it holds a handle for) is ended as a decoy's user is
//! (barred; see `cutoff`); a signal that no caller had the key in hand for (an
//! upstream's echo, a key in an answer, a decoy used: anything but a key or a piece of
//! it in what a caller sent) stops one short of it (`compromise_reserve`), so that
//! signals a tenant can raise at will never leave a leak only alerted about; `expiry`
//! and `auth_failure` wait out the cooldown and stop at `max_rotations_per_day`. A
//! compromise signal for an account whose open rotation is already compromised joins
//! it (no second rotation). `quarantine` rotates nothing: it holds calls with the
//! account's key (see `quarantine`). A signal a caller raised (a `canary`, a
//! `reflection`) ends that caller and holds it alone on the account, as a rate spike's
//! suspect below; its other callers keep full service. A `rate_spike`
//! names the callers that made it (see `sensor::suspects`): then only they are held on
//! the account, each at its share of the account's rate, and their handles to the
//! account are revoked (they may take new ones, still held); the account's other
//! callers keep full service. A spike no caller can be singled out for holds the whole
//! account.
//!
//! Every signal is an audit record (`detector`) and, unless `observe`, an event; what
//! its action came to is another pair (`detector_action`): the rotation started or
//! joined, or the limit that stopped it. Events go to the event stream and to
//! `state_dir/events.jsonl`; the account's detector state to `book`.
//! Must never: put a value, a handle or a caller's text in a record (handles appear as
//! keyed fingerprints), or start a rotation the journal would not.

use std::{sync::Arc, time::SystemTime};

use serde_json::json;

use super::{
    super::{canary::owner_of, credentials::with_vault, cutoff, identity::Caller, state::Shared},
    limits::{self, Evidence, Gate},
    sensor::{Suspect, suspect_json},
};
use crate::{
    config::{DetectorAction, RotationConfig},
    events::EventRecord,
    vault::Rotation,
};

/// The detectors that lead to actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detector {
    /// A decoy handle was used, or seen in what a caller sent.
    Canary,
    /// A credential's own value in the answer to the call that carried it, or in what a
    /// caller sent; or in an answer to a caller that holds no handle for its account and
    /// did not send it.
    Reflection,
    /// The verify probe after a 401 found the key dead.
    AuthFailure,
    /// Two thirds of the key's lifetime, or `max_age_secs`.
    Expiry,
    /// The account's calls far above its baseline for several buckets (`sensor`).
    RateSpike,
    /// A (method, host) never seen for the account after its learning period.
    Novelty,
}

impl Detector {
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::Canary => "canary",
            Detector::Reflection => "reflection",
            Detector::AuthFailure => "auth_failure",
            Detector::Expiry => "expiry",
            Detector::RateSpike => "rate_spike",
            Detector::Novelty => "novelty",
        }
    }

    fn configured(self, config: &RotationConfig) -> DetectorAction {
        match self {
            Detector::Canary => config.on_canary,
            Detector::Reflection => config.on_reflection,
            Detector::AuthFailure => config.on_auth_failure,
            Detector::Expiry => config.on_expiry,
            Detector::RateSpike => config.on_rate_spike,
            Detector::Novelty => config.on_novelty,
        }
    }
}

/// Where a detector saw its evidence; written as its fixed word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeenAt {
    /// A decoy handle used in a call.
    RequestHandle,
    /// A live key (or a decoy) in what a caller sent.
    RequestContent,
    /// A run of a live key in what a caller sent.
    RequestFragment,
    /// A run of a live key in an answer, outside any whole value.
    AnswerFragment,
    /// A call counted by the account's sensor.
    Request,
    /// The key a call carried, echoed in its answer.
    Response,
    /// Another account's key in an answer (a provider's key listing).
    ResponseUnheld,
    /// A decoy handle deleted.
    Delete,
    /// The account's verify probe.
    VerifyProbe,
    /// The rotation schedule.
    Schedule,
    /// The account's sensor (a rate spike).
    Sensor,
}

impl SeenAt {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestHandle => "request_handle",
            Self::RequestContent => "request_content",
            Self::RequestFragment => "request_fragment",
            Self::AnswerFragment => "answer_fragment",
            Self::Request => "request",
            Self::Response => "response",
            Self::ResponseUnheld => "response_unheld",
            Self::Delete => "delete",
            Self::VerifyProbe => "verify_probe",
            Self::Schedule => "schedule",
            Self::Sensor => "sensor",
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
    /// Where it was seen.
    pub seen: SeenAt,
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

/// What a signal's action came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `observe` or `alert`: nothing to do.
    NoRotation,
    /// A rotation began (its id).
    Started(String),
    /// The account's open rotation is already compromised: this signal joins it.
    Joined(String),
    /// The account's open rotation was marked compromised.
    Marked(String),
    /// A routine signal while a rotation of the account is open.
    RotationOpen,
    /// A routine signal within `cooldown_secs` of the last rotation's start.
    CoolingDown(SystemTime),
    /// A budget is spent (its config key, the count, the cap, when one fits again).
    Capped {
        limit: &'static str,
        count: u32,
        cap: u32,
        until: SystemTime,
    },
    /// Not started (the journal or the vault refused; a fixed word).
    NotStarted(&'static str),
    /// `quarantine`: the account is held until then.
    Quarantined(SystemTime),
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::NoRotation => "no_rotation",
            Outcome::Started(_) => "rotation_started",
            Outcome::Joined(_) => "joined",
            Outcome::Marked(_) => "marked_compromised",
            Outcome::RotationOpen => "rotation_open",
            Outcome::CoolingDown(_) => "cooling_down",
            Outcome::Capped { .. } => "capped",
            Outcome::NotStarted(_) => "not_started",
            Outcome::Quarantined(_) => "quarantined",
        }
    }

    pub fn rotation(&self) -> Option<&str> {
        match self {
            Outcome::Started(id) | Outcome::Joined(id) | Outcome::Marked(id) => Some(id),
            _ => None,
        }
    }
}

/// A signal, owned, for the task that acts on it.
struct Job {
    detector: Detector,
    trigger: String,
    integration: String,
    account: String,
    policy: String,
    caller: Option<Caller>,
    action: DetectorAction,
    compromised: bool,
    /// Which budget a rotation it asks for may spend (see [`evidence`]).
    evidence: Evidence,
    /// Where it was seen.
    seen: SeenAt,
    /// `quarantine`: the account's calls a minute while held.
    per_minute: Option<u32>,
}

impl Job {
    /// Whether its caller is ended when the account's budget is spent: a reflection of
    /// a key the caller holds a handle for, which it may be forcing; not another
    /// account's key in an answer to it (`response_unheld`: a provider's key listing),
    /// or any tenant that spends its own account's budget could have the readers of
    /// that listing cut off.
    fn ends_caller_when_capped(&self) -> bool {
        self.detector == Detector::Reflection && self.seen != SeenAt::ResponseUnheld
    }
}

/// Records `s`, and acts on it as the account's integration says. The rotation (if
/// any) is decided and started on a task of its own; this returns at once.
pub fn signal(shared: &Arc<Shared>, s: &Signal<'_>) -> DetectorAction {
    signal_spike(shared, s, &[])
}

/// [`signal`] for a `rate_spike` with the callers that made it (`suspects`: a
/// quarantine holds them only; empty: the account).
pub fn signal_spike(shared: &Arc<Shared>, s: &Signal<'_>, suspects: &[Suspect]) -> DetectorAction {
    let action = record(shared, s, suspects);
    if action == DetectorAction::Quarantine {
        quarantine(shared, s, suspects);
        return action;
    }
    if let Some(job) = job(s, action) {
        let shared = shared.clone();
        tokio::spawn(async move {
            act(&shared, &job).await;
        });
    }
    action
}

/// [`signal`], decided before it returns (for the schedule, which must know when an
/// account's budget is spent, and the `auth_failure` probe, whose held calls wait for
/// the rotation it starts).
pub async fn signal_and_act(shared: &Arc<Shared>, s: &Signal<'_>) -> Outcome {
    let action = record(shared, s, &[]);
    if action == DetectorAction::Quarantine {
        return quarantine(shared, s, &[]);
    }
    match job(s, action) {
        Some(job) => act(shared, &job).await,
        None => Outcome::NoRotation,
    }
}

/// `quarantine`: the suspects held on the account and their handles to it revoked; or
/// the caller that raised the signal ended and held so; or (neither) the account held;
/// the outcome recorded.
fn quarantine(shared: &Arc<Shared>, s: &Signal<'_>, suspects: &[Suspect]) -> Outcome {
    let Some((_, config)) = super::with_rotator(shared, s.integration) else {
        return Outcome::NoRotation;
    };
    let time = std::time::Duration::from_secs(config.quarantine_secs);
    let floor = config.quarantine_calls_per_minute;
    let now = std::time::Instant::now();
    let (until, per_minute) = match (suspects, s.caller) {
        ([], None) => {
            // Near the account's learned rate: its honest reads go on, a flood does not.
            let per_minute =
                shared
                    .sensor
                    .quarantine_per_minute(s.integration, s.account, None, floor);
            let until =
                shared
                    .quarantines
                    .hold(s.integration, s.account, None, time, per_minute, now);
            (until, per_minute)
        }
        ([], Some(caller)) => {
            // The evidence is this caller's (a decoy it used, a key in its call or its
            // answer): held alone. Holding the account would hand any tenant of a
            // shared account a way to hold every other one's calls (an echo is enough).
            cutoff::end_caller(shared, caller, s.policy, cutoff::Why::Quarantine);
            let suspect = Suspect {
                owner: owner_of(caller),
                policy: s.policy.to_owned(),
                calls: 0,
            };
            hold_suspect(shared, s, &suspect, time, floor, now)
        }
        (suspects, _) => {
            let mut held = None;
            for suspect in suspects {
                held = Some(hold_suspect(shared, s, suspect, time, floor, now));
            }
            held.unwrap_or((std::time::SystemTime::now(), floor))
        }
    };
    let outcome = Outcome::Quarantined(until);
    let job = Job {
        detector: s.detector,
        trigger: s.trigger.to_owned(),
        integration: s.integration.to_owned(),
        account: s.account.to_owned(),
        policy: s.policy.to_owned(),
        caller: s.caller.cloned(),
        action: DetectorAction::Quarantine,
        compromised: false,
        evidence: Evidence::Routine,
        seen: s.seen,
        per_minute: Some(per_minute),
    };
    record_outcome(shared, &job, &outcome);
    outcome
}

/// One suspect held on the account at its share of the account's rate, and its handles
/// to the account revoked (an audit record, `quarantine_caller`); until when, and the
/// rate.
fn hold_suspect(
    shared: &Arc<Shared>,
    s: &Signal<'_>,
    suspect: &Suspect,
    time: std::time::Duration,
    floor: u32,
    now: std::time::Instant,
) -> (SystemTime, u32) {
    let per_minute =
        shared
            .sensor
            .quarantine_per_minute(s.integration, s.account, Some(suspect.owner), floor);
    let until = shared.quarantines.hold(
        s.integration,
        s.account,
        Some(suspect.owner),
        time,
        per_minute,
        now,
    );
    let revoked = shared
        .handles
        .revoke_account(suspect.owner, s.integration, s.account);
    shared.forget_handles(&revoked);
    shared.audit.record(
        "quarantine_caller",
        json!({
            "detector": s.detector.as_str(),
            "integration": s.integration,
            "account": s.account,
            "caller": suspect_json(suspect),
            "calls_per_minute": per_minute,
            "until": humantime::format_rfc3339_seconds(until).to_string(),
            "revoked": revoked.len(),
        }),
    );
    (until, per_minute)
}

fn job(s: &Signal<'_>, action: DetectorAction) -> Option<Job> {
    let compromised = rotates(action)?;
    Some(Job {
        detector: s.detector,
        trigger: s.trigger.to_owned(),
        integration: s.integration.to_owned(),
        account: s.account.to_owned(),
        policy: s.policy.to_owned(),
        caller: s.caller.cloned(),
        action,
        compromised,
        evidence: evidence(s, compromised),
        seen: s.seen,
        per_minute: None,
    })
}

/// The budget a signal's rotation may spend: only a caller that sent the key, or a
/// piece of it, had it in hand (`Leak`); a key hb caught in an answer (an upstream
/// echoing what it is sent) or a decoy used is a signal any caller can raise at will,
/// at most at the cost of its sandbox (`Suspicion`: not the last compromise rotation of
/// the day; see `limits`).
fn evidence(s: &Signal<'_>, compromised: bool) -> Evidence {
    match (compromised, s.detector, s.seen) {
        (false, ..) => Evidence::Routine,
        (true, Detector::Reflection, SeenAt::RequestContent | SeenAt::RequestFragment) => {
            Evidence::Leak
        }
        (true, ..) => Evidence::Suspicion,
    }
}

/// Whether `action` rotates, and as compromised.
fn rotates(action: DetectorAction) -> Option<bool> {
    match action {
        DetectorAction::Observe | DetectorAction::Alert | DetectorAction::Quarantine => None,
        DetectorAction::Rotate => Some(false),
        DetectorAction::RotateCompromised => Some(true),
    }
}

/// The audit record (and, unless `observe`, the event) of a signal; its action.
fn record(shared: &Shared, s: &Signal<'_>, suspects: &[Suspect]) -> DetectorAction {
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
        seen = s.seen.as_str(),
        "detector signal"
    );
    let record = json!({
        "detector": s.detector.as_str(),
        "action": action.as_str(),
        "integration": s.integration,
        "account": s.account,
        "policy": s.policy,
        "caller": caller,
        "seen": s.seen.as_str(),
        "handle": s.handle,
        "execution": s.execution,
        "rotator": super::with_rotator(shared, s.integration).is_some(),
        "suspects": suspects.iter().map(suspect_json).collect::<Vec<_>>(),
    });
    match s.caller {
        // A caller's calls can signal once a call: under its budget.
        Some(caller) => shared.audit_caller(caller, "detector", record),
        None => shared.audit.record("detector", record),
    }
    shared.book.signal(
        s.integration,
        s.account,
        s.detector.as_str(),
        action.as_str(),
    );
    if action != DetectorAction::Observe {
        event(
            shared,
            &EventFields {
                caller: s.caller,
                policy: s.policy,
                verdict: action.as_str(),
                reason: s.detector.as_str(),
                name: Some(format!("{}/{}", s.integration, s.account)),
                detail: format!(
                    "signal seen={}{}",
                    s.seen.as_str(),
                    suspects_words(suspects)
                ),
            },
        );
    }
    action
}

/// The suspects of a signal, for an event's detail: ` suspects=sandbox:ID,uid:N`.
fn suspects_words(suspects: &[Suspect]) -> String {
    if suspects.is_empty() {
        return String::new();
    }
    let words: Vec<String> = suspects
        .iter()
        .map(|s| match s.owner {
            super::super::handles::Owner::Sandbox { cgroup_id } => format!("sandbox:{cgroup_id}"),
            super::super::handles::Owner::Host { uid } => format!("uid:{uid}"),
        })
        .collect();
    format!(" suspects={}", words.join(","))
}

/// What a `detector` event says besides its time.
pub struct EventFields<'a> {
    pub caller: Option<&'a Caller>,
    pub policy: &'a str,
    /// The action taken (`alert`, `rotate_compromised`, `end_caller`, …).
    pub verdict: &'a str,
    /// The detector (or why a caller was ended).
    pub reason: &'a str,
    /// `integration/account`, when one account is concerned.
    pub name: Option<String>,
    /// Fixed words and ids: what came of it.
    pub detail: String,
}

/// A `detector` event: on the event stream and in `state_dir/events.jsonl` (as the
/// kernel's and the resolver's are; rotated at `agent.events_file_max_bytes`, under
/// the file's lock).
pub fn event(shared: &Shared, f: &EventFields<'_>) {
    let record = EventRecord {
        time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        hook: "detector".into(),
        verdict: f.verdict.to_owned(),
        reason: f.reason.to_owned(),
        policy: f.policy.to_owned(),
        cgroup_id: f
            .caller
            .and_then(|c| c.sandbox.as_ref())
            .map_or(0, |sb| sb.cgroup_id),
        cgroup: f.caller.map(|c| c.cgroup.clone()),
        pid: f.caller.map_or(0, |c| u32::try_from(c.pid).unwrap_or(0)),
        tid: 0,
        comm: String::new(),
        family: String::new(),
        protocol: String::new(),
        dst: String::new(),
        port: 0,
        name: f.name.clone(),
        suppressed: 0,
        detail: Some(f.detail.clone()),
    };
    let agent = &shared.config.agent;
    if let Err(e) =
        crate::events::append_one(&agent.state_dir, agent.events_file_max_bytes, &record)
    {
        tracing::warn!(error = %crate::error_chain(&e), "cannot write a detector event");
    }
    let _ = shared.events.send(Arc::new(record));
}

/// Decides (see the module header), acts, and records what came of it.
async fn act(shared: &Arc<Shared>, job: &Job) -> Outcome {
    let outcome = decide_and_start(shared, job).await;
    if let (Outcome::Capped { .. }, true, Some(caller)) =
        (&outcome, job.ends_caller_when_capped(), &job.caller)
    {
        // A caller that keeps reflecting keys once the account's budget is spent is
        // forcing them: it loses its handles and gets no new ones (a decoy's user was
        // ended already). Before the record: what it says is done.
        cutoff::end_caller(shared, caller, &job.policy, cutoff::Why::CompromiseCap);
    }
    record_outcome(shared, job, &outcome);
    outcome
}

async fn decide_and_start(shared: &Arc<Shared>, job: &Job) -> Outcome {
    let Some((_, config)) = super::with_rotator(shared, &job.integration) else {
        return Outcome::NotStarted("no_rotator");
    };
    let since = SystemTime::now()
        .checked_sub(limits::WINDOW)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let Ok((open, recent)) = with_vault(shared.vault.clone(), move |v| {
        Ok((v.open_rotations()?, v.rotations(Some(since))?))
    })
    .await
    else {
        return Outcome::NotStarted("journal_unreadable");
    };
    let now = SystemTime::now();
    let open = open
        .into_iter()
        .find(|r| r.integration == job.integration && r.account == job.account);
    let budget = limits::budget(&recent, &job.integration, &job.account, config, now);
    let gate = budget.gate(job.evidence, now);
    if !job.compromised {
        if open.is_some() {
            return Outcome::RotationOpen;
        }
        return match gate {
            Gate::Open => start(shared, job, false).await,
            Gate::CoolingDown(until) => Outcome::CoolingDown(until),
            Gate::Capped {
                limit,
                count,
                cap,
                until,
            } => Outcome::Capped {
                limit,
                count,
                cap,
                until,
            },
        };
    }
    match (open, gate) {
        // One compromise rotation at a time: a second signal joins the first.
        (Some(r), _) if r.compromised => Outcome::Joined(r.id),
        // A routine rotation before its switch: it becomes the compromise rotation.
        (Some(r), _) if r.step.before_finish() => mark(shared, job, &r).await,
        (
            open,
            Gate::Capped {
                limit,
                count,
                cap,
                until,
            },
        ) => {
            // No new key; a finished routine rotation's old key (in grace, maybe the
            // leaked one) is cut off at least.
            if let Some(r) = open {
                mark(shared, job, &r).await;
            }
            Outcome::Capped {
                limit,
                count,
                cap,
                until,
            }
        }
        // Open (the cooldown does not apply), or a finished routine rotation that the
        // compromise rotation supersedes.
        _ => start(shared, job, true).await,
    }
}

/// Starts the rotation; one that another signal started meanwhile is joined.
async fn start(shared: &Arc<Shared>, job: &Job, compromised: bool) -> Outcome {
    match super::trigger(
        shared,
        &job.integration,
        &job.account,
        &job.trigger,
        compromised,
    )
    .await
    {
        Ok(r) => Outcome::Started(r.id),
        Err(_) if compromised => {
            let (i, a) = (job.integration.clone(), job.account.clone());
            match with_vault(shared.vault.clone(), move |v| v.open_rotations()).await {
                Ok(open) => match open
                    .into_iter()
                    .find(|r| r.integration == i && r.account == a)
                {
                    Some(r) if r.compromised => Outcome::Joined(r.id),
                    Some(r) => mark(shared, job, &r).await,
                    None => Outcome::NotStarted("refused"),
                },
                Err(_) => Outcome::NotStarted("journal_unreadable"),
            }
        }
        Err(_) => Outcome::RotationOpen,
    }
}

/// Marks the account's open rotation compromised.
async fn mark(shared: &Arc<Shared>, job: &Job, open: &Rotation) -> Outcome {
    let (i, a) = (job.integration.clone(), job.account.clone());
    match with_vault(shared.vault.clone(), move |v| {
        v.compromise_open_rotation(&i, &a)
    })
    .await
    {
        Ok(Some(r)) => {
            super::record(shared, &r, "marked_compromised", Some(&job.trigger));
            Outcome::Marked(r.id)
        }
        Ok(None) => Outcome::NotStarted("closed_meanwhile"),
        Err(e) => {
            tracing::warn!(rotation = %open.id, error = %e.message, "cannot mark the open rotation compromised");
            Outcome::NotStarted("not_marked")
        }
    }
}

/// The audit record and event of what a signal's action came to.
fn record_outcome(shared: &Shared, job: &Job, outcome: &Outcome) {
    let (limit, count, cap, until) = match outcome {
        Outcome::Capped {
            limit,
            count,
            cap,
            until,
        } => (Some(*limit), Some(*count), Some(*cap), Some(*until)),
        Outcome::CoolingDown(until) | Outcome::Quarantined(until) => {
            (None, None, None, Some(*until))
        }
        _ => (None, None, None, None),
    };
    let until = until.map(|t| humantime::format_rfc3339_seconds(t).to_string());
    let caller_ended = job.caller.is_some()
        && (matches!(outcome, Outcome::Quarantined(_))
            || matches!(outcome, Outcome::Capped { .. }) && job.ends_caller_when_capped());
    // Past a limit the action is an alert: that is what the event says was done.
    let done = match outcome {
        Outcome::Started(_) | Outcome::Joined(_) | Outcome::Marked(_) | Outcome::Quarantined(_) => {
            job.action.as_str()
        }
        _ => DetectorAction::Alert.as_str(),
    };
    let record = json!({
        "detector": job.detector.as_str(),
        "configured": job.action.as_str(),
        "action": done,
        "outcome": outcome.as_str(),
        "integration": job.integration,
        "account": job.account,
        "policy": job.policy,
        "trigger": job.trigger,
        "rotation": outcome.rotation(),
        "limit": limit,
        "count": count,
        "cap": cap,
        "until": until,
        "caller_ended": caller_ended,
        "calls_per_minute": job.per_minute,
    });
    match &job.caller {
        Some(caller) => shared.audit_caller(caller, "detector_action", record),
        None => shared.audit.record("detector_action", record),
    }
    shared.book.outcome(
        &job.integration,
        &job.account,
        job.detector.as_str(),
        outcome.as_str(),
    );
    let mut detail = outcome.as_str().to_owned();
    if let Some(id) = outcome.rotation() {
        detail += &format!(" {id}");
    }
    if let (Some(limit), Some(count), Some(cap)) = (limit, count, cap) {
        detail += &format!(" {limit} {count}/{cap}");
    }
    if let Some(until) = &until {
        detail += &format!(" until {until}");
    }
    if let Some(n) = job.per_minute {
        detail += &format!(", {n} calls/min");
    }
    if caller_ended {
        detail += "; caller ended";
    }
    event(
        shared,
        &EventFields {
            caller: job.caller.as_ref(),
            policy: &job.policy,
            verdict: done,
            reason: job.detector.as_str(),
            name: Some(format!("{}/{}", job.integration, job.account)),
            detail,
        },
    );
}
