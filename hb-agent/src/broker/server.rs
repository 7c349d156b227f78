//! The socket server: connections, limits, routing, and the endpoints that need no
//! credential.
//!
//! Limits: at most `broker.max_connections` connections are served at once (the rest
//! wait in the kernel's backlog), a request body over `broker.max_body_bytes` is
//! `too_large`, and a request that takes longer than `broker.request_timeout_secs` is
//! `timeout`. Every error is the JSON envelope of [`super::error`]; unknown paths and
//! methods too.
//!
//! Memory: the request bodies being read at once are held to a budget ([`BodyBudget`]:
//! the larger of 64 MiB and four `broker.max_body_bytes`), shared out among tenants and
//! among the callers within a tenant by [`crate::share`]'s rule (one caller at most a
//! third); a body that would pass its tenant's or its caller's share is `unavailable`.
//! Without it a body sent all but its last bytes is held until the request times out,
//! and one policy's sandboxes make the agent hold connections × `max_body_bytes`.

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post},
};
use futures_util::{Stream, StreamExt as _};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::UnixStream,
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch},
};
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use tower::ServiceExt as _;

use crate::share::{self, Share};

use super::{
    credentials,
    error::{ApiError, Code},
    handles::Owner,
    identity::Caller,
    listeners::Listener,
    state::{AppState, CallerOf, PeerAddr, Shared},
    text_gate,
};

// --- connections -------------------------------------------------------------------
//
// Each accepted connection is identified at once, from the kernel (`identity`), and
// served with that caller for its whole life; a peer that cannot be identified (it has
// exited, or the kernel gives no pidfd), or a caller that holds its share of
// `broker.max_connections` ([`Shares`]: its own, at most
// `broker.max_connections_per_caller`, or its tenant's), is refused: closed unanswered,
// logged and counted as `per_caller_limit`.
// Timeouts: a request's headers must arrive within `broker.header_read_timeout_secs`
// of the broker waiting for them (a new connection that sends nothing, or a kept-alive
// one that sends no next request, is closed), and a connection on which no byte moves
// either way for `broker.idle_timeout_secs` (a peer that stops reading its answer) is
// closed too.

/// A connection's stream that remembers when a byte last moved on it, and gives its
/// place in the shares back as it closes.
struct Tracked {
    /// Given back at the shutdown after the last answer, else as this drops (before
    /// `stream`: fields drop in order), so never after the caller can see the end of
    /// the connection. Given back later (when the serving task ended), a caller that
    /// read the end and connected again still counted its old connection, and it was
    /// refused as over its share while another tenant held its own (attack review 36:
    /// 1 to 4 of 5 sequential calls reset).
    slot: Option<Slot>,
    stream: UnixStream,
    /// Milliseconds after `since` of the last read or write that moved bytes.
    last: Arc<AtomicU64>,
    since: Instant,
}

impl Tracked {
    fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.slot = None;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Who a connection's tenant is: a sandbox's policy, or a host uid.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum Tenant {
    Policy(String),
    Host(u32),
}

/// The broker's `broker.max_connections`, shared out at two levels under
/// [`crate::share`]'s rule: among tenants (so one policy's sandboxes, however many,
/// leave another policy a part), and among callers (a sandbox, or a host uid other
/// than root and the operator uid; each also capped at
/// `broker.max_connections_per_caller`).
struct Shares {
    tenants: Arc<Share<Tenant>>,
    callers: Arc<Share<Owner>>,
}

/// One connection's places in its tenant's and its caller's counts, given back when it
/// is dropped. An operator's connection has no caller place (no per-caller cap).
struct Slot {
    _tenant: share::Slot<Tenant>,
    _caller: Option<share::Slot<Owner>>,
}

/// Which level refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Tenant,
    Caller,
}

impl Shares {
    /// `total` connections, at most `per_caller` for one caller.
    fn new(total: usize, per_caller: usize) -> Self {
        let total = u32::try_from(total).unwrap_or(u32::MAX);
        let per_caller = u32::try_from(per_caller).unwrap_or(u32::MAX);
        Self {
            tenants: Share::new(total, total),
            callers: Share::new(total, per_caller),
        }
    }

    /// A place for a connection of `caller`: its tenant's, then its own (an operator
    /// has no per-caller place).
    fn take(&self, caller: &Caller, operator_uid: u32) -> Result<Slot, Refusal> {
        let tenant = tenant_of(caller);
        let owner = text_gate::limited_as(caller, operator_uid);
        let tenant = self.tenants.take(&tenant).map_err(|_| Refusal::Tenant)?;
        let caller = match owner {
            Some(owner) => Some(self.callers.take(&owner).map_err(|_| Refusal::Caller)?),
            None => None,
        };
        Ok(Slot {
            _tenant: tenant,
            _caller: caller,
        })
    }
}

/// A caller's tenant: its sandbox's policy, or its host uid.
fn tenant_of(caller: &Caller) -> Tenant {
    match &caller.sandbox {
        Some(s) => Tenant::Policy(s.policy.clone()),
        None => Tenant::Host(caller.uid),
    }
}

// --- request bodies ---------------------------------------------------------------

/// Bytes held at once (request bodies being read, answers held), in slots of `unit`
/// bytes, shared out at two levels under [`crate::share`]'s rule, as the connections
/// are ([`Shares`]): among tenants (so one policy's sandboxes, however many, leave
/// another policy a part), then among callers (a sandbox, or a host uid other than root
/// and the operator uid), one caller holding at most a third of the whole. Without
/// the second level one sandbox held its whole policy's share, and every other sandbox
/// of that policy was refused meanwhile.
struct Budget {
    tenants: Arc<Share<Tenant>>,
    callers: Arc<Share<Owner>>,
    unit: u64,
}

/// A caller's bytes in hand, counted against its tenant's share of a [`Budget`] and its
/// own.
pub type BudgetCount = share::Counted2<Tenant, Owner>;

impl Budget {
    /// `bytes` (rounded up to whole slots) in slots of `unit`.
    fn new(bytes: u64, unit: u64) -> Self {
        let units = u32::try_from(bytes.div_ceil(unit)).unwrap_or(u32::MAX);
        Self {
            tenants: Share::new(units, units),
            callers: Share::new(units, units.div_ceil(3)),
            unit,
        }
    }

    /// An empty count for `caller` (an operator has no caller level).
    fn count_for(&self, caller: &Caller, operator_uid: u32) -> BudgetCount {
        share::Counted2::new(
            share::Counted::new(self.tenants.clone(), tenant_of(caller), self.unit),
            text_gate::limited_as(caller, operator_uid)
                .map(|owner| share::Counted::new(self.callers.clone(), owner, self.unit)),
        )
    }
}

/// Bytes of request body one slot of the [`BodyBudget`] stands for.
const BODY_UNIT: u64 = 1 << 20;

/// The request body bytes being read at once, a [`Budget`] in slots of [`BODY_UNIT`]:
/// a caller takes a slot for each unit its bodies have sent so far and gives them back
/// when the body is read (or dropped). At least four `broker.max_body_bytes`, so one
/// body of the largest size always fits a lone caller's share (a third).
pub struct BodyBudget(Budget);

impl BodyBudget {
    pub fn new(max_body: usize) -> Self {
        let bytes = (64u64 << 20).max((max_body as u64).saturating_mul(4));
        Self(Budget::new(bytes, BODY_UNIT))
    }
}

/// Bytes of upstream answer one slot of the [`AnswerBudget`] stands for: small, since
/// nearly every answer is far below it and each takes one.
const ANSWER_UNIT: u64 = 64 << 10;

/// The bytes of upstream answers `/v1/requests` holds at once (read, decoded, being
/// scrubbed and written out), a [`Budget`] in slots of [`ANSWER_UNIT`], as the
/// [`BodyBudget`] is: the larger of 64 MiB and four `broker.max_response_bytes`.
/// Without it one policy's sandboxes, each call reading an answer of up to
/// `max_response_bytes` from an upstream it reaches, made the agent hold connections ×
/// that (and its copies) until it ran out of memory.
pub struct AnswerBudget(Budget);

impl AnswerBudget {
    pub fn new(max_response: u64) -> Self {
        let bytes = (64u64 << 20).max(max_response.saturating_mul(4));
        Self(Budget::new(bytes, ANSWER_UNIT))
    }

    /// An empty count of an answer for `caller`.
    pub(super) fn count_for(&self, caller: &Caller, operator_uid: u32) -> BudgetCount {
        self.0.count_for(caller, operator_uid)
    }
}

/// Bytes of a written-out answer handed to its connection at once: the connection asks
/// for the next piece only once it has written most of those before.
const ANSWER_PIECE: usize = 64 << 10;

/// An answer of `/v1/requests` written out (its JSON) as a response body, still counted
/// against its caller's shares of the [`AnswerBudget`] until the connection has written
/// it or closed: a caller that does not read its answers holds them in its own share,
/// not past it.
pub(super) struct HeldAnswer {
    rest: Bytes,
    _held: BudgetCount,
}

impl HeldAnswer {
    pub(super) fn new(json: Vec<u8>, held: BudgetCount) -> Self {
        Self {
            rest: Bytes::from(json),
            _held: held,
        }
    }
}

impl hyper::body::Body for HeldAnswer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.rest.is_empty() {
            return Poll::Ready(None);
        }
        let piece = this.rest.split_to(this.rest.len().min(ANSWER_PIECE));
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}

/// What a body read ends with when its tenant's or its caller's share of the
/// [`BodyBudget`] is spent.
#[derive(Debug, thiserror::Error)]
#[error(
    "the broker is reading as many request bodies of this caller, or of its policy, as it \
     holds at once; retry when its other requests end"
)]
struct BodyBudgetSpent;

/// A request body whose bytes are counted against its caller's shares as they arrive.
struct Budgeted {
    inner: Body,
    seen: BudgetCount,
}

impl hyper::body::Body for Budgeted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
            && this.seen.grow(data.len() as u64).is_err()
        {
            return Poll::Ready(Some(Err(axum::Error::new(BodyBudgetSpent))));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Puts every request's body under its caller's and its tenant's shares of the
/// [`BodyBudget`].
async fn body_budget(State(shared): State<AppState>, req: Request, next: Next) -> Response {
    let Some(seen) = req.extensions().get::<ConnectInfo<PeerAddr>>().map(|info| {
        shared
            .body_budget
            .0
            .count_for(&info.0.caller_arc(), shared.operator_uid)
    }) else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let body = Body::new(Budgeted { inner: body, seen });
    next.run(Request::from_parts(parts, body)).await
}

/// The error of a body read that failed: `unavailable` when its caller's share of the
/// [`BodyBudget`] was spent, else `too_large` (over `limit`, `broker.max_body_bytes`).
pub(super) fn body_error(e: &axum::Error, limit: usize) -> ApiError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(spent) = err.downcast_ref::<BodyBudgetSpent>() {
            return ApiError::new(Code::Unavailable, spent.to_string());
        }
        cur = err.source();
    }
    ApiError::new(
        Code::TooLarge,
        format!("the request body is over broker.max_body_bytes ({limit} bytes)"),
    )
}

/// How often a refused connection is logged at most: a caller past its share that
/// connects in a loop is refused thousands of times a second, and a log line (and a
/// stats file written) for each made the accept loop so slow that the socket's backlog
/// stayed full of its connections, and another tenant's connect found no room.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);

/// The accept loop's refusals not logged yet, and when one was last logged.
#[derive(Default)]
struct RefusalLog {
    unlogged: u64,
    at: Option<Instant>,
}

/// Closes a connection unanswered: counted under `reason`, and logged (the first, then
/// at most once per [`REFUSAL_LOG_EVERY`] with the count of those not logged).
fn refuse(shared: &Shared, log: &mut RefusalLog, reason: &'static str, why: &str) {
    crate::telemetry::global().broker_refused(reason);
    let total = shared.stats.refused(reason, &shared.config.agent.state_dir);
    log.unlogged += 1;
    let now = Instant::now();
    if log
        .at
        .is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_EVERY)
    {
        return;
    }
    tracing::warn!(
        reason,
        refused_total = total,
        refused_since_last_line = log.unlogged,
        "broker refused a connection: {why}"
    );
    log.unlogged = 0;
    log.at = Some(now);
}

/// What every socket's accept loop shares: the permits for `broker.max_connections`,
/// the tenants' and callers' shares of them, and the refusal log.
struct Gate {
    shared: AppState,
    permits: Arc<Semaphore>,
    shares: Shares,
    refusals: std::sync::Mutex<RefusalLog>,
}

/// A connection an accept loop admitted: its caller, its permit and its slot.
struct Admitted {
    stream: UnixStream,
    caller: Caller,
    permit: OwnedSemaphorePermit,
    slot: Slot,
}

impl Gate {
    fn new(shared: AppState, max_connections: usize) -> Self {
        let shares = Shares::new(
            max_connections,
            shared.config.broker.max_connections_per_caller,
        );
        Self {
            shared,
            permits: Arc::new(Semaphore::new(max_connections)),
            shares,
            refusals: std::sync::Mutex::default(),
        }
    }

    /// [`refuse`], on the log every socket shares.
    fn refuse(&self, reason: &'static str, why: &str) {
        let mut log = self
            .refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        refuse(&self.shared, &mut log, reason, why);
    }

    /// The next connection on `listener` whose caller could be identified, may use this
    /// socket and is under its own limit, with its permit (at most
    /// `broker.max_connections` are served; while none is free, this socket's callers
    /// wait in its backlog) and its slot.
    async fn accept(&self, listener: &Listener) -> Admitted {
        let shared = &self.shared;
        loop {
            let (stream, permit) = match listener.accept(&self.permits).await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "broker accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Dropping the stream (on refusal) closes it unanswered.
            let caller = match shared.identity.identify(&stream) {
                Ok(caller) => caller,
                Err(e) => {
                    self.refuse(e.kind(), &crate::error_chain(&e));
                    continue;
                }
            };
            if !listener.admits(&caller) {
                self.refuse("policy_socket", &wrong_socket(&caller, listener));
                continue;
            }
            match self.shares.take(&caller, shared.operator_uid) {
                Ok(slot) => {
                    return Admitted {
                        stream,
                        caller,
                        permit,
                        slot,
                    };
                }
                Err(refusal) => {
                    self.refuse("per_caller_limit", &share_refused(&caller, refusal, shared));
                }
            }
        }
    }
}

/// One socket's accept loop: every connection it admits goes to `admitted` (to be
/// served) until the receiver is gone.
async fn accept_loop(listener: Listener, gate: Arc<Gate>, admitted: mpsc::Sender<Admitted>) {
    loop {
        let next = gate.accept(&listener).await;
        if admitted.send(next).await.is_err() {
            return;
        }
    }
}

/// Why `caller` was refused on a policy's socket, for the log.
fn wrong_socket(caller: &Caller, listener: &Listener) -> String {
    let socket = listener
        .policy
        .as_deref()
        .map(crate::events::Escaped)
        .map_or_else(String::new, |p| format!("policy {p}'s socket"));
    match &caller.sandbox {
        Some(s) => format!(
            "sandbox {} of policy {} on {socket}",
            s.cgroup,
            crate::events::Escaped(&s.policy)
        ),
        None => format!("host caller uid {} on {socket}", caller.uid),
    }
}

/// Why `caller` was refused a connection, for the log.
fn share_refused(caller: &Caller, refusal: Refusal, shared: &Shared) -> String {
    let who = caller.sandbox.as_ref().map_or_else(
        || format!("uid {}", caller.uid),
        |s| format!("sandbox {}", s.cgroup),
    );
    match (refusal, &caller.sandbox) {
        (Refusal::Caller, _) => format!(
            "{who} holds its share of broker.max_connections (at most \
             broker.max_connections_per_caller, {}, and fewer than are free)",
            shared.config.broker.max_connections_per_caller
        ),
        (Refusal::Tenant, Some(s)) => format!(
            "{who}: policy {} holds its share of broker.max_connections (fewer than are free)",
            crate::events::Escaped(&s.policy)
        ),
        (Refusal::Tenant, None) => {
            format!("{who} holds its share of broker.max_connections (fewer than are free)")
        }
    }
}

/// Serves one identified connection until it ends, times out or the broker stops.
async fn serve_connection(
    stream: UnixStream,
    slot: Slot,
    caller: Caller,
    app: Router,
    shared: AppState,
    mut stop: watch::Receiver<bool>,
) {
    let broker = &shared.config.broker;
    let idle = Duration::from_secs(broker.idle_timeout_secs);
    let last = Arc::new(AtomicU64::new(0));
    let since = Instant::now();
    let io = TokioIo::new(Tracked {
        slot: Some(slot),
        stream,
        last: last.clone(),
        since,
    });
    let peer = ConnectInfo(PeerAddr::new(caller));
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(peer.clone());
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(broker.header_read_timeout_secs));
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let quiet_since = since + Duration::from_millis(last.load(Ordering::Relaxed));
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "broker connection ended");
                }
                return;
            }
            () = tokio::time::sleep_until((quiet_since + idle).into()) => {
                // Bytes may have moved since the deadline was set: only a full quiet
                // period ends the connection.
                if since + Duration::from_millis(last.load(Ordering::Relaxed)) == quiet_since {
                    let total = shared.stats.idle_closed(&shared.config.agent.state_dir);
                    tracing::info!(idle_closed_total = total, "broker closed an idle connection (broker.idle_timeout_secs)");
                    return;
                }
            }
            changed = stop.changed(), if !stopping => {
                // Finish the request in flight, then close (an idle connection closes now).
                let _ = changed;
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Serves every socket of `listeners`, each with its own accept loop (and the kernel's
/// backlog of its own), until `shutdown`; the loops share one [`Gate`].
pub async fn serve(
    listeners: Vec<Listener>,
    shared: AppState,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = router(shared.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Gate::new(shared.clone(), max_connections));
    let (admitted_tx, mut admitted) = mpsc::channel(1);
    let mut loops = tokio::task::JoinSet::new();
    for listener in listeners {
        loops.spawn(accept_loop(listener, gate.clone(), admitted_tx.clone()));
    }
    drop(admitted_tx);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let Admitted {
            stream,
            caller,
            permit,
            slot,
        } = tokio::select! {
            Some(next) = admitted.recv() => next,
            () = &mut shutdown => break,
        };
        // The share's slot goes with the stream (see `Tracked`), before the permit: a
        // permit given back first lets the next connection be accepted while this one
        // still counts in the shares, and it would be refused as over its share.
        let served = serve_connection(
            stream,
            slot,
            caller,
            app.clone(),
            shared.clone(),
            stop_rx.clone(),
        );
        connections.spawn(async move {
            served.await;
            drop(permit);
        });
        while connections.try_join_next().is_some() {}
    }
    loops.abort_all();
    let _ = stop_tx.send(true);
    // Requests in flight get their deadline to finish; then the runtime drops the rest.
    let drained = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(shared.timeout, drained).await;
}

fn router(shared: AppState) -> Router {
    Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/sessions", post(create_session).delete(end_session))
        .route("/v1/events", get(events))
        .route("/v1/scrub", post(scrub))
        .route("/v1/sanitize", post(sanitize))
        .route("/v1/requests", post(super::requests::request))
        .route(
            "/v1/handles",
            post(credentials::create_handle).get(super::canary::list),
        )
        .route(
            "/v1/handles/{handle}",
            axum::routing::delete(credentials::delete_handle),
        )
        .route("/v1/executions/{id}/end", post(credentials::end_execution))
        .route("/v1/rotations", post(super::rotation::api::start))
        .route("/v1/rotations/{id}", get(super::rotation::api::show))
        .fallback(|| async { ApiError::new(Code::NotFound, "no such endpoint (see /v1/…)") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                Code::MethodNotAllowed,
                "this endpoint does not take that method",
            )
        })
        .layer(middleware::from_fn_with_state(shared.clone(), body_budget))
        .layer(middleware::from_fn_with_state(shared.clone(), deadline))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            refuse_a_host_caller_enrolled_since,
        ))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            text_gate::caller_view,
        ))
        .layer(middleware::from_fn(count))
        .with_state(shared)
}

/// The routes, as `hb_broker_requests_total` names them (anything else is `other`).
const ENDPOINTS: [&str; 11] = [
    "/v1/whoami",
    "/v1/sessions",
    "/v1/events",
    "/v1/scrub",
    "/v1/sanitize",
    "/v1/requests",
    "/v1/handles",
    "/v1/handles/{handle}",
    "/v1/executions/{id}/end",
    "/v1/rotations",
    "/v1/rotations/{id}",
];

/// Counts every answer by route template, method and code, with its latency (the
/// outermost layer: timeouts and refusals of the inner layers count too). Labels are
/// hb's own words: the route's template, never the path the caller sent.
async fn count(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let endpoint = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .and_then(|m| ENDPOINTS.iter().find(|e| **e == m.as_str()))
        .copied()
        .unwrap_or("other");
    let method = match *req.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let response = next.run(req).await;
    let code = match response.extensions().get::<Code>() {
        Some(code) => code.as_str(),
        None if response.status().is_success() => "ok",
        None => status_label(response.status()),
    };
    crate::telemetry::global().broker_request(
        &crate::telemetry::BrokerLabels {
            endpoint,
            method,
            code,
        },
        start.elapsed(),
    );
    response
}

/// An error status answered outside the envelope (an extractor's own rejection).
fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "status_400",
        401 => "status_401",
        403 => "status_403",
        404 => "status_404",
        405 => "status_405",
        408 => "status_408",
        413 => "status_413",
        415 => "status_415",
        422 => "status_422",
        429 => "status_429",
        500 => "status_500",
        502 => "status_502",
        503 => "status_503",
        _ => "status_other",
    }
}

/// Refuses, and closes, a host caller's connection once its cgroup has been enrolled
/// (a process that connected in the moment between its cgroup's creation and its
/// enrollment): it would otherwise keep a host caller's rights — root's or the operator
/// uid's among them — for as long as it keeps the connection.
async fn refuse_a_host_caller_enrolled_since(
    State(shared): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let caller = req
        .extensions()
        .get::<ConnectInfo<PeerAddr>>()
        .map(|info| info.0.caller_arc());
    let Some(caller) = caller.filter(|c| shared.identity.enrolled_since_accept(c)) else {
        return next.run(req).await;
    };
    tracing::warn!(
        pid = caller.pid,
        cgroup = %crate::events::Escaped(&caller.cgroup),
        "a host caller's cgroup was enrolled after it connected: its connection is refused"
    );
    let mut response = ApiError::new(
        Code::UnknownCaller,
        "this connection was opened before its cgroup was enrolled: reconnect, and the \
         broker serves it under its sandbox's policy",
    )
    .into_response();
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// `broker.request_timeout_secs` for the whole request (streams excepted: the event
/// stream ends with its session instead).
async fn deadline(State(shared): State<AppState>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/v1/events" {
        return next.run(req).await;
    }
    match tokio::time::timeout(shared.timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            Code::Timeout,
            format!(
                "the request took longer than broker.request_timeout_secs ({} s)",
                shared.timeout.as_secs()
            ),
        )
        .into_response(),
    }
}

// --- extractors --------------------------------------------------------------------

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthorized() -> ApiError {
    ApiError::new(
        Code::Unauthorized,
        "a valid session token is needed: Authorization: Bearer <token from POST /v1/sessions>",
    )
}

// --- endpoints ---------------------------------------------------------------------

/// `GET /v1/whoami`: how the broker sees the caller (pid, uid, cgroup, policy).
async fn whoami(CallerOf(caller): CallerOf) -> Json<Caller> {
    Json(caller)
}

/// `POST /v1/sessions`: a token for the event stream (root or `broker.operator_uid`).
async fn create_session(
    State(shared): State<AppState>,
    CallerOf(caller): CallerOf,
) -> Result<Response, ApiError> {
    if caller.sandbox.is_some() {
        return Err(ApiError::new(
            Code::Forbidden,
            "sandboxed callers may not open event-stream sessions",
        ));
    }
    if !caller.is_operator(shared.operator_uid) {
        return Err(ApiError::new(
            Code::Forbidden,
            format!(
                "only root or broker.operator_uid ({}) may open an event-stream session; uid {} may not",
                shared.operator_uid, caller.uid
            ),
        ));
    }
    let owner = caller.uid;
    let minted = shared
        .sessions
        .mint(owner)
        .ok_or_else(|| ApiError::new(Code::Internal, "cannot mint a session token"))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": minted.token,
            "expires_in_secs": minted.expires_in.as_secs(),
        })),
    )
        .into_response())
}

/// `DELETE /v1/sessions` with the session's own bearer token: ends it.
async fn end_session(
    State(shared): State<AppState>,
    CallerOf(caller): CallerOf,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let token = bearer(&headers).ok_or_else(unauthorized)?;
    let owner = caller.uid;
    if shared.sessions.revoke(token, owner) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(unauthorized())
    }
}

/// `GET /v1/events`: server-sent events, one per kernel or resolver event, scrubbed,
/// until the session ends (expiry or revocation).
async fn events(
    State(shared): State<AppState>,
    CallerOf(caller): CallerOf,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // A sandbox never reads the event stream, even with a token leaked into it.
    if caller.sandbox.is_some() {
        return Err(unauthorized());
    }
    let token = bearer(&headers).ok_or_else(unauthorized)?.to_owned();
    let owner = caller.uid;
    let until = shared
        .sessions
        .check(&token, owner)
        .ok_or_else(unauthorized)?;
    let ends = tokio::time::sleep_until(until.into());
    let rx = shared.events.subscribe();
    let check = shared.clone();
    let scrubber = shared.scrubber.clone();
    let stream = BroadcastStream::new(rx)
        .take_while(move |_| {
            let alive = check.sessions.check(&token, owner).is_some();
            std::future::ready(alive)
        })
        .map(move |item| {
            Ok(match item {
                Ok(record) => {
                    let value = serde_json::to_value(&*record).unwrap_or_default();
                    Event::default()
                        .event("event")
                        .data(crate::audit::scrub_json(&scrubber, value))
                }
                Err(BroadcastStreamRecvError::Lagged(n)) => Event::default()
                    .event("lagged")
                    .data(json!({ "missed": n }).to_string()),
            })
        })
        .take_until(ends);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrubRequest {
    text: String,
}

/// `POST /v1/scrub {"text"}` → `{"text","redactions"}`: the gate before LLM context.
/// Removes known token families and the live secrets and handles the caller may know
/// of (all of them for a host caller; see [`text_gate`] for a sandbox's view, the rate
/// limit and the audit record).
async fn scrub(
    State(shared): State<AppState>,
    CallerOf(caller): CallerOf,
    req: Request,
) -> Result<Json<serde_json::Value>, ApiError> {
    text_gate::admit(&shared, &caller, "scrub")?;
    let req: ScrubRequest =
        text_gate::body(req.into_body(), shared.max_body, r#"{"text": "…"}"#).await?;
    let view = text_gate::View::of(&shared, &caller);
    let len = req.text.len();
    let working = text_gate::start_work(&shared, &caller, "scrub")?;
    // CPU-bound on large inputs (a second or more for 10 MiB of token starts): off the
    // async workers, which serve every tenant's calls (two of them held by a scrub each
    // stopped the broker). The caller's place is held until the scrub ends.
    let (text, redactions) = tokio::task::spawn_blocking(move || {
        let _working = working;
        view.scrub_str(&req.text)
    })
    .await
    .map_err(|_| ApiError::new(Code::Internal, "scrubber task failed"))?;
    text_gate::audit(&shared, &caller, "scrub", len, Some(&redactions));
    Ok(Json(json!({ "text": text, "redactions": redactions })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SanitizeRequest {
    text: String,
    #[serde(default)]
    mode: crate::sanitize::Mode,
    #[serde(default)]
    spotlight: bool,
    /// The learned stage runs unless the caller sends `"learned": false`.
    #[serde(default = "learned_by_default")]
    learned: bool,
}

fn learned_by_default() -> bool {
    crate::sanitize::Options::default().learned
}

/// `POST /v1/sanitize {"text","mode"?,"spotlight"?,"learned"?}` →
/// `{"text","flagged","severity","findings":[…]}`: untrusted text made safe to show a
/// model as data. The result is scrubbed too (an excerpt must not carry a secret), with
/// the caller's view, limit and audit as for `/v1/scrub`.
async fn sanitize(
    State(shared): State<AppState>,
    CallerOf(caller): CallerOf,
    req: Request,
) -> Result<Json<serde_json::Value>, ApiError> {
    text_gate::admit(&shared, &caller, "sanitize")?;
    let req: SanitizeRequest = text_gate::body(
        req.into_body(),
        shared.max_body,
        r#"{"text": "…", "mode"?: "flag"|"redact"|"block", "spotlight"?: bool, "learned"?: bool}"#,
    )
    .await?;
    let len = req.text.len();
    let opts = crate::sanitize::Options {
        mode: req.mode,
        spotlight: req.spotlight,
        learned: req.learned,
    };
    // CPU-bound on large inputs: off the async workers, and the scrub of the result
    // with it; the caller's place is held until both end.
    let view = text_gate::View::of(&shared, &caller);
    let working = text_gate::start_work(&shared, &caller, "sanitize")?;
    let value = tokio::task::spawn_blocking(move || {
        let _working = working;
        let result = crate::sanitize::sanitize(&req.text, &opts);
        serde_json::to_value(&result).map(|value| view.scrub_json(value))
    })
    .await
    .map_err(|_| ApiError::new(Code::Internal, "sanitizer task failed"))?
    .map_err(|_| ApiError::new(Code::Internal, "cannot encode the result"))?;
    text_gate::audit(&shared, &caller, "sanitize", len, None);
    Ok(Json(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::identity::Sandbox;

    /// `/v1/sanitize` runs the learned stage unless the request turns it off.
    #[test]
    fn sanitize_requests_run_the_learned_stage_unless_turned_off() {
        let req = |body: &str| -> SanitizeRequest { serde_json::from_str(body).expect(body) };
        assert!(req(r#"{"text":"x"}"#).learned);
        assert!(!req(r#"{"text":"x","learned":false}"#).learned);
        assert!(req(r#"{"text":"x","learned":true}"#).learned);
    }

    fn sandbox(policy: &str, cgroup_id: u64) -> Caller {
        Caller {
            pid: 1,
            uid: 65534,
            cgroup: format!("/hb/{cgroup_id}"),
            sandbox: Some(Sandbox {
                cgroup: format!("/hb/{cgroup_id}"),
                cgroup_id,
                policy: policy.into(),
            }),
        }
    }

    #[test]
    fn eight_greedy_sandboxes_of_one_tenant_leave_another_tenant_served() {
        let shares = Shares::new(256, 32);
        let mut held = Vec::new();
        let mut refused = Vec::new();
        for cgroup in 1..=8 {
            let caller = sandbox("web", cgroup);
            for _ in 0..32 {
                match shares.take(&caller, 1000) {
                    Ok(slot) => held.push(slot),
                    Err(r) => refused.push(r),
                }
            }
        }
        assert_eq!(held.len(), 128, "one tenant holds half the connections");
        assert!(refused.contains(&Refusal::Tenant), "{refused:?}");
        let _ops = shares
            .take(&sandbox("ops", 99), 1000)
            .expect("another tenant is served");
        let root = Caller {
            pid: 1,
            uid: 0,
            cgroup: "/".into(),
            sandbox: None,
        };
        let _op = shares.take(&root, 1000).expect("the operator is served");
        held.clear();
        assert!(
            shares.take(&sandbox("web", 1), 1000).is_ok(),
            "connections given back are free again"
        );
    }

    #[tokio::test]
    async fn bodies_past_a_tenants_share_of_the_budget_are_unavailable_and_the_rest_too_large() {
        let budget = BodyBudget::new(1 << 20);
        let read = |caller: &Caller, bytes: usize, limit: usize| {
            let body = Budgeted {
                inner: Body::from(vec![b'a'; bytes]),
                seen: budget.0.count_for(caller, 1000),
            };
            async move {
                axum::body::to_bytes(Body::new(body), limit)
                    .await
                    .map(|b| b.len())
                    .map_err(|e| body_error(&e, limit).code)
            }
        };
        let (web, ops) = (sandbox("web", 1), sandbox("ops", 3));
        // 64 slots of 1 MiB: a lone tenant may hold half of what is free.
        let mut held = Vec::new();
        for _ in 0..32 {
            held.push(budget.0.tenants.take(&tenant_of(&web)).expect("slot"));
        }
        assert_eq!(read(&web, 10, 1 << 20).await, Err(Code::Unavailable));
        assert_eq!(
            read(&ops, 1 << 20, 2 << 20).await,
            Ok(1 << 20),
            "another tenant"
        );
        assert_eq!(
            read(&ops, (1 << 20) + 1, 1 << 20).await,
            Err(Code::TooLarge)
        );
        held.clear();
        assert_eq!(
            read(&web, 3 << 20, 4 << 20).await,
            Ok(3 << 20),
            "given back"
        );
        assert_eq!(
            budget.0.tenants.free(),
            64,
            "every slot given back once read"
        );
        assert_eq!(budget.0.callers.free(), 64, "at both levels");
    }

    /// One caller holds at most a third of the budget: its policy's other sandboxes
    /// still have their part of the policy's share.
    #[tokio::test]
    async fn one_sandbox_leaves_the_other_sandboxes_of_its_policy_their_part_of_the_budget() {
        let budget = BodyBudget::new(1 << 20);
        let (web, web2) = (sandbox("web", 1), sandbox("web", 2));
        let mut greedy = budget.0.count_for(&web, 1000);
        greedy.grow(22 << 20).expect("a third of 64 MiB");
        assert_eq!(greedy.grow(1), Err(share::Refused::Share), "past a third");
        assert_eq!(
            budget.0.tenants.free(),
            64,
            "a refused count gives back both levels"
        );
        greedy.grow(16 << 20).expect("a quarter again");
        let mut other = budget.0.count_for(&web2, 1000);
        other
            .grow(16 << 20)
            .expect("another sandbox of the policy is served");
        drop((greedy, other));
        assert_eq!(budget.0.tenants.free(), 64);
        assert_eq!(budget.0.callers.free(), 64);
    }
}
