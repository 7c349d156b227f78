//! The socket server: connections, limits, routing, and the endpoints that need no
//! credential.
//!
//! Limits: at most `broker.max_connections` connections are served at once (the rest
//! wait in the kernel's backlog), a request body over `broker.max_body_bytes` is
//! `too_large`, and a request that takes longer than `broker.request_timeout_secs` is
//! `timeout`. Every error is the JSON envelope of [`super::error`]; unknown paths and
//! methods too.

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{HeaderMap, StatusCode, request::Parts},
    middleware::{self, Next},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post},
    serve::{IncomingStream, Listener},
};
use futures_util::{Stream, StreamExt as _};
use serde_json::json;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{UnixListener, UnixStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};

use super::{
    credentials,
    error::{ApiError, Code},
    identity::{Caller, Peer},
    state::{AppState, CallerOf, JsonBody, scrub_json},
};

// --- connections -------------------------------------------------------------------

/// The Unix listener, bounded: a connection holds a permit while it is open.
struct BoundedListener {
    inner: UnixListener,
    permits: Arc<Semaphore>,
}

/// An accepted connection and its permit.
struct Conn {
    stream: UnixStream,
    _permit: OwnedSemaphorePermit,
}

/// What the kernel said about the peer when it connected, and the caller it was
/// identified as (once per connection: the credentials belong to the connecting process
/// for the connection's life, and moving that process to another cgroup later neither
/// widens nor should change what this connection was opened as).
#[derive(Clone, Debug)]
pub struct PeerAddr(Option<Peer>, Arc<std::sync::OnceLock<Caller>>);

impl Listener for BoundedListener {
    type Io = Conn;
    type Addr = PeerAddr;

    async fn accept(&mut self) -> (Conn, PeerAddr) {
        loop {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                // The semaphore is never closed; wait rather than spin if it were.
                std::future::pending::<()>().await;
                continue;
            };
            match self.inner.accept().await {
                Ok((stream, _)) => {
                    let peer = stream.peer_cred().ok().and_then(|c| {
                        Some(Peer {
                            pid: c.pid()?,
                            uid: c.uid(),
                        })
                    });
                    return (
                        Conn {
                            stream,
                            _permit: permit,
                        },
                        PeerAddr(peer, Arc::default()),
                    );
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "broker accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<PeerAddr> {
        Ok(PeerAddr(None, Arc::default()))
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, BoundedListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, BoundedListener>) -> Self {
        stream.remote_addr().clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

pub async fn serve(
    listener: UnixListener,
    shared: AppState,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let listener = BoundedListener {
        inner: listener,
        permits: Arc::new(Semaphore::new(max_connections)),
    };
    let app = router(shared);
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<PeerAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "broker stopped");
    }
}

fn router(shared: AppState) -> Router {
    Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/sessions", post(create_session).delete(end_session))
        .route("/v1/events", get(events))
        .route("/v1/scrub", post(scrub))
        .route("/v1/sanitize", post(sanitize))
        .route("/v1/requests", post(super::requests::request))
        .route("/v1/handles", post(credentials::create_handle))
        .route(
            "/v1/handles/{handle}",
            axum::routing::delete(credentials::delete_handle),
        )
        .route("/v1/executions/{id}/end", post(credentials::end_execution))
        .fallback(|| async { ApiError::new(Code::NotFound, "no such endpoint (see /v1/…)") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                Code::MethodNotAllowed,
                "this endpoint does not take that method",
            )
        })
        .layer(middleware::from_fn_with_state(shared.clone(), deadline))
        .with_state(shared)
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

impl FromRequestParts<AppState> for CallerOf {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let info = parts
            .extensions
            .get::<ConnectInfo<PeerAddr>>()
            .ok_or_else(|| ApiError::new(Code::UnknownCaller, "no peer credentials"))?;
        let PeerAddr(peer, cache) = &info.0;
        if let Some(caller) = cache.get() {
            return Ok(CallerOf(caller.clone()));
        }
        let peer = peer.ok_or_else(|| ApiError::new(Code::UnknownCaller, "no peer credentials"))?;
        let caller = state
            .identity
            .identify(peer)
            .map_err(|e| ApiError::new(Code::UnknownCaller, e.to_string()))?;
        Ok(CallerOf(cache.get_or_init(|| caller).clone()))
    }
}

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
                    let line = serde_json::to_string(&*record).unwrap_or_default();
                    Event::default()
                        .event("event")
                        .data(scrubber.scrub_str(&line).0)
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
/// Removes known token families and every live secret and handle of this agent.
async fn scrub(
    State(shared): State<AppState>,
    CallerOf(caller): CallerOf,
    JsonBody(req): JsonBody<ScrubRequest>,
) -> Json<serde_json::Value> {
    let (text, redactions) = shared.scrubber.scrub_str(&req.text);
    if !redactions.is_empty() {
        shared.audit_decision(
            &caller,
            caller.sandbox.as_ref().map_or("", |s| s.policy.as_str()),
            "scrub",
            "redacted",
            &format!("{} redactions", redactions.len()),
        );
    }
    Json(json!({ "text": text, "redactions": redactions }))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SanitizeRequest {
    text: String,
    #[serde(default)]
    mode: crate::sanitize::Mode,
    #[serde(default)]
    spotlight: bool,
}

/// `POST /v1/sanitize {"text","mode"?,"spotlight"?}` →
/// `{"text","flagged","severity","findings":[…]}`: untrusted text made safe to show a
/// model as data. The result is scrubbed too (an excerpt must not carry a secret).
async fn sanitize(
    State(shared): State<AppState>,
    JsonBody(req): JsonBody<SanitizeRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let opts = crate::sanitize::Options {
        mode: req.mode,
        spotlight: req.spotlight,
    };
    // CPU-bound on large inputs: off the async workers.
    let result = tokio::task::spawn_blocking(move || crate::sanitize::sanitize(&req.text, &opts))
        .await
        .map_err(|_| ApiError::new(Code::Internal, "sanitizer task failed"))?;
    let value = serde_json::to_value(&result)
        .map_err(|_| ApiError::new(Code::Internal, "cannot encode the result"))?;
    Ok(Json(scrub_json(&shared.scrubber, value)))
}
