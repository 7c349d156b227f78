//! The text gate: what `POST /v1/scrub` and `POST /v1/sanitize` may tell a caller.
//!
//! Both endpoints return the caller's own text scrubbed, so each is an oracle unless
//! the scrub depends on who asks: a text that comes back with `[REDACTED:live_secret]`
//! *is* a live credential. So:
//! - a sandboxed caller's text is scrubbed by a *view* of the scrubber that matches only
//!   the live values it has a right to have seen: its own live handles and the
//!   credentials behind them. Every token family still applies (a family match says
//!   only that a text is shaped like a token). The live value of any other credential
//!   comes back exactly as a wrong guess does: unchanged, no redaction.
//! - every caller (a sandbox, or a host uid other than root and `broker.operator_uid`)
//!   gets at most `broker.scrub_per_minute` calls a minute (a token bucket of that size),
//!   then `rate_limited`: the credentials behind its own handles stay guessable only at
//!   that rate;
//! - every call is in the audit log: the caller, the endpoint, the decision, the text's
//!   length and the redactions' families and count (never the text or a value). Refusals
//!   by the rate limit are audited once, then summarised at most once a minute, so a
//!   flood cannot rotate the audit log away;
//! - at most [`WORK_PER_CALLER`] of a caller's calls have work running ([`TextWork`]):
//!   the work cannot be stopped and outlives a call that timed out, so a third call
//!   meanwhile is refused `rate_limited` (each such refusal audited: it took a token of
//!   the rate limit first, so there are no more of them than calls). The scrub of an
//!   upstream's answer (`/v1/requests`) takes a place too, but waits for one
//!   ([`wait_for_work`]): its upstream was already called.
//! - a malformed body gets an error that quotes nothing of it; and on every endpoint, an
//!   error message (which may quote the caller's input: a field name, an integration, a
//!   URL) is scrubbed with the caller's view too ([`caller_view`], [`scrub_message`]),
//!   or `/v1/handles {"integration": <guess>}` would be the same oracle, unlimited.
//!
//! Must never: match a value the caller has no handle for, or put the caller's text in
//! an answer other than the scrubbed one, a log or the audit log.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::{ConnectInfo, Request},
    middleware::Next,
    response::Response,
};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{
    error::{ApiError, Code},
    handles::Owner,
    identity::Caller,
    state::{AppState, PeerAddr, Shared},
};
use crate::scrub::{LiveId, Redaction, Scrubbed, Scrubber, Sees};

/// How often refusals of one caller are written to the audit log at most.
const DENIAL_AUDIT_EVERY: Duration = Duration::from_secs(60);

/// A caller's bucket: `tokens` (at most `per_minute`) refill at `per_minute` a minute.
struct Bucket {
    tokens: f64,
    at: Instant,
    /// Refusals not yet in the audit log, and when refusals were last written there.
    unaudited: u64,
    audited_at: Option<Instant>,
}

/// Per-caller rate limit of an endpoint (the text endpoints; `POST /v1/handles`).
pub struct TextGate {
    per_minute: u32,
    buckets: Mutex<HashMap<Owner, Bucket>>,
}

/// A refusal: the audit summary due with it, if any.
struct Limited {
    retry_after: u64,
    audit: Option<u64>,
}

impl TextGate {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token of `who`'s bucket.
    fn take(&self, who: Owner) -> Result<(), Limited> {
        let now = Instant::now();
        let rate = f64::from(self.per_minute) / 60.0;
        let full = f64::from(self.per_minute);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        // Full buckets carry no state worth keeping: drop them now and then, so the
        // table holds only callers seen within the last minute or so.
        if buckets.len() > 4096 {
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < full);
        }
        let b = buckets.entry(who).or_insert(Bucket {
            tokens: full,
            at: now,
            unaudited: 0,
            audited_at: None,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(full);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        b.unaudited += 1;
        let audit = b
            .audited_at
            .is_none_or(|t| now.duration_since(t) >= DENIAL_AUDIT_EVERY)
            .then(|| {
                b.audited_at = Some(now);
                std::mem::take(&mut b.unaudited)
            });
        Err(Limited {
            retry_after: ((1.0 - b.tokens) / rate).ceil() as u64,
            audit,
        })
    }
}

/// Who a call is counted against; `None`: not limited (root and the operator uid on
/// the host).
pub(super) fn limited_as(caller: &Caller, operator_uid: u32) -> Option<Owner> {
    match &caller.sandbox {
        Some(s) => Some(Owner::Sandbox {
            cgroup_id: s.cgroup_id,
        }),
        None if caller.is_operator(operator_uid) => None,
        None => Some(Owner::Host { uid: caller.uid }),
    }
}

fn policy_of(caller: &Caller) -> &str {
    caller.sandbox.as_ref().map_or("", |s| s.policy.as_str())
}

/// Admits a call to `endpoint`, or refuses it with `rate_limited` (audited).
pub fn admit(shared: &Shared, caller: &Caller, endpoint: &str) -> Result<(), ApiError> {
    let Err(limited) = take(&shared.text_gate, shared, caller) else {
        return Ok(());
    };
    shared
        .stats
        .text_gate_limited(&shared.config.agent.state_dir);
    Err(refusal(
        shared,
        caller,
        endpoint,
        &limited,
        "broker.scrub_per_minute",
        &format!(
            "at most broker.scrub_per_minute ({}) calls a minute to /v1/scrub and /v1/sanitize per caller; retry in {} s",
            shared.text_gate.per_minute, limited.retry_after
        ),
    ))
}

/// Admits a `POST /v1/handles` call, or refuses it with `rate_limited` (audited as the
/// text endpoints' refusals are): each handle costs the shared scrubber work that every
/// caller's calls wait behind.
pub fn admit_handle(shared: &Shared, caller: &Caller) -> Result<(), ApiError> {
    let Err(limited) = take(&shared.handle_gate, shared, caller) else {
        return Ok(());
    };
    shared.stats.handles_limited(&shared.config.agent.state_dir);
    Err(refusal(
        shared,
        caller,
        "handle",
        &limited,
        "broker.handles_per_minute",
        &format!(
            "at most broker.handles_per_minute ({}) new handles a minute per caller; retry in {} s",
            shared.handle_gate.per_minute, limited.retry_after
        ),
    ))
}

/// How many pieces of text work (a scrub, a sanitize) one caller may have running at
/// once.
pub const WORK_PER_CALLER: u32 = 2;

/// The text work each caller has running on the blocking pool. Such work cannot be
/// stopped once it runs, and it outlives its call when the call times out (`timeout`)
/// or its caller hangs up: without a bound a caller could stack work up (the CPU and the
/// memory of every text) until the agent stalls, or is killed for its memory with every
/// tenant's broker and resolver.
#[derive(Default)]
pub struct TextWork {
    places: Arc<Places>,
}

/// Each caller's count of running work, and a signal that some ended.
#[derive(Default)]
struct Places {
    running: Mutex<HashMap<Owner, u32>>,
    freed: tokio::sync::Notify,
}

/// A caller's place in [`TextWork`] while one piece of its work runs: moved into the
/// work, and freed when the work ends (dropped), however long after its call that is.
pub struct Working {
    places: Arc<Places>,
    who: Option<Owner>,
}

impl TextWork {
    /// A place for one more piece of `who`'s work, or `None` if it has
    /// [`WORK_PER_CALLER`] running. `who` `None` (root, the operator uid) is not bounded.
    fn start(&self, who: Option<Owner>) -> Option<Working> {
        if let Some(w) = who {
            let mut running = self
                .places
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let n = running.entry(w).or_insert(0);
            if *n >= WORK_PER_CALLER {
                return None;
            }
            *n += 1;
        }
        Some(Working {
            places: self.places.clone(),
            who,
        })
    }

    /// A place for one more piece of `who`'s work, once it has fewer than
    /// [`WORK_PER_CALLER`] running. Waiting holds nothing but the future: a call
    /// dropped meanwhile (timed out, its caller gone) leaves no work behind.
    async fn wait(&self, who: Option<Owner>) -> Working {
        loop {
            // Listening before looking: a place freed between the two still wakes us.
            let freed = self.places.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(working) = self.start(who) {
                return working;
            }
            freed.await;
        }
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        let Some(w) = self.who else {
            return;
        };
        let mut running = self
            .places
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = running.get_mut(&w) {
            *n -= 1;
            if *n == 0 {
                running.remove(&w);
            }
        }
        drop(running);
        self.places.freed.notify_waiters();
    }
}

/// A place for `caller`'s text work on `endpoint`, or `rate_limited` (audited) while
/// [`WORK_PER_CALLER`] of its earlier calls' work still runs.
pub fn start_work(shared: &Shared, caller: &Caller, endpoint: &str) -> Result<Working, ApiError> {
    if let Some(working) = shared
        .text_work
        .start(limited_as(caller, shared.operator_uid))
    {
        return Ok(working);
    }
    shared
        .stats
        .text_gate_limited(&shared.config.agent.state_dir);
    shared.audit_decision(
        caller,
        policy_of(caller),
        endpoint,
        "rate_limited",
        &format!("{WORK_PER_CALLER} earlier calls' work still running"),
    );
    Err(ApiError::new(
        Code::RateLimited,
        format!(
            "at most {WORK_PER_CALLER} calls' work at a time per caller on /v1/scrub and /v1/sanitize, and \
             earlier work of this caller still runs (work goes on after its call timed out or was \
             dropped); retry when it ends"
        ),
    ))
}

/// A place for the scrub of an upstream's answer to `caller` (`/v1/requests`), once
/// fewer than [`WORK_PER_CALLER`] pieces of its text work run: waited for, not refused,
/// since the upstream was already called and a refusal would lose its answer (the wait
/// ends with the call's `broker.request_timeout_secs`).
pub async fn wait_for_work(shared: &Shared, caller: &Caller) -> Working {
    shared
        .text_work
        .wait(limited_as(caller, shared.operator_uid))
        .await
}

/// Takes a token of `gate` for `caller` (root and the operator uid on the host are not
/// limited).
fn take(gate: &TextGate, shared: &Shared, caller: &Caller) -> Result<(), Limited> {
    match limited_as(caller, shared.operator_uid) {
        Some(who) => gate.take(who),
        None => Ok(()),
    }
}

/// The `rate_limited` answer; the refusal audited if one is due.
fn refusal(
    shared: &Shared,
    caller: &Caller,
    endpoint: &str,
    limited: &Limited,
    key: &str,
    message: &str,
) -> ApiError {
    if let Some(refused) = limited.audit {
        shared.audit_decision(
            caller,
            policy_of(caller),
            endpoint,
            "rate_limited",
            &format!("{refused} calls refused over {key} since the last record"),
        );
    }
    ApiError::new(Code::RateLimited, message)
}

/// Whether `caller` is held to the per-caller limits (every caller but root and the
/// operator uid on the host).
pub fn is_limited(shared: &Shared, caller: &Caller) -> bool {
    limited_as(caller, shared.operator_uid).is_some()
}

/// Scrubs with what `caller` may see: everything for a host caller; for a sandbox,
/// the families and the live values of its own handles and their credentials
/// ([`View::of`]), or in an upstream's answer every live value but those it sent
/// ([`View::answer`]).
pub struct View {
    scrubber: Arc<Scrubber>,
    seen: Seen,
}

/// The live values a [`View`] matches.
enum Seen {
    All,
    Only(HashSet<LiveId>),
    AllBut(HashSet<LiveId>),
}

impl View {
    /// What `caller`'s own text is scrubbed of (`/v1/scrub`, `/v1/sanitize`, error
    /// messages): for a sandbox, only the values it has a right to have seen.
    pub fn of(shared: &Shared, caller: &Caller) -> Self {
        let seen = match &caller.sandbox {
            None => Seen::All,
            Some(s) => Seen::Only(own_values(shared, s.cgroup_id)),
        };
        Self {
            scrubber: shared.scrubber.clone(),
            seen,
        }
    }

    /// What an upstream's answer to `caller` is scrubbed of: every live value on the
    /// node (every tenant's credentials and handles), but for a sandbox not the ones
    /// `in_request` holds (what its request carried, in any encoding the scrubber
    /// knows) that are not its own. An answer cannot then tell a sandbox which of the
    /// guesses it sent is a live value, and a value it never sent (a provider's key
    /// listing) does not reach it.
    pub fn answer(shared: &Shared, caller: &Caller, in_request: &HashSet<LiveId>) -> Self {
        let seen = match &caller.sandbox {
            Some(s) if !in_request.is_empty() => {
                let own = own_values(shared, s.cgroup_id);
                Seen::AllBut(in_request.difference(&own).copied().collect())
            }
            _ => Seen::All,
        };
        Self {
            scrubber: shared.scrubber.clone(),
            seen,
        }
    }

    fn sees(&self) -> Sees<'_> {
        match &self.seen {
            Seen::All => Sees::All,
            Seen::Only(visible) => Sees::Only(visible),
            Seen::AllBut(hidden) => Sees::AllBut(hidden),
        }
    }

    /// Scrubs a buffer (an upstream's answer) with what the caller may see.
    pub fn scrub(&self, input: &[u8]) -> Scrubbed {
        self.scrubber.scrub_seeing(input, self.sees())
    }

    pub fn scrub_str(&self, text: &str) -> (String, Vec<Redaction>) {
        self.scrubber.scrub_str_seeing(text, self.sees())
    }

    /// The live values of this view that `input` holds (see [`Scrubber::matching`]).
    pub fn matching(&self, input: &[u8]) -> HashSet<LiveId> {
        self.scrubber.matching(input, self.sees())
    }

    /// Whether what a packed run of an answer decodes to holds a live value of this view
    /// (see [`Scrubber::holds_packed`]).
    pub fn holds_packed(&self, decoded: &[u8]) -> bool {
        self.scrubber.holds_packed(decoded, self.sees())
    }

    /// Scrubs every string in a JSON value.
    pub fn scrub_json(&self, value: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(s) => Value::String(self.scrub_str(&s).0),
            Value::Array(a) => Value::Array(a.into_iter().map(|v| self.scrub_json(v)).collect()),
            Value::Object(o) => Value::Object(
                o.into_iter()
                    .map(|(k, v)| (self.scrub_str(&k).0, self.scrub_json(v)))
                    .collect(),
            ),
            other => other,
        }
    }
}

/// The live values a sandbox has a right to have seen: its live handles and decoys,
/// and the credentials behind them.
fn own_values(shared: &Shared, cgroup_id: u64) -> HashSet<LiveId> {
    // Its decoys too: an answer that echoes one is scrubbed as a real handle is.
    let held = shared
        .handles
        .listing(Owner::Sandbox { cgroup_id })
        .into_iter()
        .map(|l| {
            (
                l.handle,
                l.entry.integration.clone(),
                l.entry.account.clone(),
            )
        });
    let protected = shared
        .protected
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    held.flat_map(|(handle, integration, account)| {
        let mut keys = shared.accounts.seen(&integration, &account);
        keys.push(handle);
        keys
    })
    .filter_map(|key| protected.get(key.as_str()).copied())
    .collect()
}

/// Who the task is serving: enough to build its [`View`] should an error need it.
struct Served {
    shared: AppState,
    caller: Arc<Caller>,
}

tokio::task_local! {
    /// The caller whose request this task is serving (see [`caller_view`]).
    static SERVED: Served;
}

/// Middleware: error messages of this request are scrubbed with the caller's view.
/// Messages quote the caller's input (a field name, an integration, a URL); scrubbed
/// with every live value, they would say which input was a live credential, on every
/// endpoint and without a limit. The view is built only when a message is scrubbed.
pub async fn caller_view(
    axum::extract::State(shared): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let caller = req
        .extensions()
        .get::<ConnectInfo<PeerAddr>>()
        .map(|info| info.0.caller_arc());
    match caller {
        Some(caller) => SERVED.scope(Served { shared, caller }, next.run(req)).await,
        None => next.run(req).await,
    }
}

/// An error message as it may leave: scrubbed with the view of the caller being
/// served, or with everything outside a request.
pub fn scrub_message(message: &str) -> String {
    SERVED
        .try_with(|s| View::of(&s.shared, &s.caller).scrub_str(message).0)
        .unwrap_or_else(|_| crate::scrub::global().scrub_str(message).0)
}

/// Reads a text endpoint's JSON body (up to `broker.max_body_bytes`). Errors say where
/// the body is wrong, never what it holds.
pub async fn body<T: DeserializeOwned + Send + 'static>(
    body: Body,
    limit: usize,
    shape: &str,
) -> Result<T, ApiError> {
    let bytes: Bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| super::server::body_error(&e, limit))?;
    super::state::parse_json(bytes).await?.map_err(|e| {
        ApiError::new(
            Code::BadRequest,
            format!(
                "the request body must be {shape} (it is not: line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

/// The audit record of an admitted call.
/// `redactions`: `None` where the endpoint does not count them (sanitize scrubs its
/// whole JSON answer).
pub fn audit(
    shared: &Shared,
    caller: &Caller,
    endpoint: &str,
    len: usize,
    redactions: Option<&[Redaction]>,
) {
    let families = redactions.map(|r| {
        let mut f: Vec<&str> = r.iter().map(|r| r.family).collect();
        f.sort_unstable();
        f.dedup();
        f
    });
    shared.audit_caller(
        caller,
        "text_gate",
        json!({
            "caller": {
                "pid": caller.pid,
                "uid": caller.uid,
                "cgroup": caller.cgroup,
                "policy": policy_of(caller),
            },
            "endpoint": endpoint,
            "decision": "allowed",
            "bytes": len,
            "redactions": redactions.map(<[Redaction]>::len),
            "families": families,
        }),
    );
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;

    use super::*;

    #[test]
    fn a_bucket_allows_its_size_then_refuses_and_audits_the_first_refusal_only() {
        let gate = TextGate::new(3);
        let a = Owner::Sandbox { cgroup_id: 1 };
        let b = Owner::Sandbox { cgroup_id: 2 };
        for _ in 0..3 {
            assert!(gate.take(a).is_ok());
        }
        let first = gate.take(a).expect_err("limited");
        assert_eq!(first.audit, Some(1));
        assert!(first.retry_after >= 1);
        assert_eq!(
            gate.take(a).expect_err("limited").audit,
            None,
            "summarised later"
        );
        assert!(gate.take(b).is_ok(), "buckets are per caller");
    }

    #[test]
    fn a_callers_work_is_bounded_until_it_ends_whenever_its_call_ended() {
        let work = TextWork::default();
        let a = Some(Owner::Sandbox { cgroup_id: 1 });
        let b = Some(Owner::Host { uid: 1000 });
        let first = work.start(a).expect("first");
        let second = work.start(a).expect("second");
        assert!(work.start(a).is_none(), "a third while two run");
        assert!(work.start(b).is_some(), "places are per caller");
        drop(first);
        let third = work.start(a).expect("a place freed when the work ended");
        assert!(work.start(a).is_none());
        drop((second, third));
        assert!(
            work.places.running.lock().expect("lock").is_empty(),
            "no entry left for a caller with no work"
        );
        let unbounded: Vec<_> = (0..5).map(|_| work.start(None)).collect();
        assert!(unbounded.iter().all(Option::is_some), "root is not bounded");
    }

    #[tokio::test]
    async fn a_wait_for_a_place_ends_when_one_is_freed_and_leaves_nothing_when_dropped() {
        let work = TextWork::default();
        let a = Some(Owner::Sandbox { cgroup_id: 1 });
        let (first, second) = (work.wait(a).await, work.wait(a).await);
        let third = work.wait(a);
        tokio::pin!(third);
        assert!(
            third.as_mut().now_or_never().is_none(),
            "a third waits while two run"
        );
        drop(first);
        let third = third.await;
        // A wait dropped before it got a place takes none.
        {
            let fourth = work.wait(a);
            tokio::pin!(fourth);
            assert!(fourth.as_mut().now_or_never().is_none());
        }
        drop((second, third));
        assert!(
            work.places.running.lock().expect("lock").is_empty(),
            "no place left taken"
        );
    }
}
