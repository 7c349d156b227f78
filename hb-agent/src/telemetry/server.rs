//! The HTTP server on `agent.metrics_listen`: `/metrics`, `/healthz`, `/readyz`.
//!
//! It runs on a thread of its own with its own small runtime, so a scraper (or anyone
//! else who can reach the address) can never delay the agent's kernel work, its
//! resolver or its broker; at most [`MAX_CONNECTIONS`] connections are served at once,
//! each for at most [`CONNECTION_DEADLINE`]. It serves no secret and takes no input
//! beyond the path: every answer is the same for every caller.
//!
//! `/healthz` answers 200 while the process lives. `/readyz` answers 200 when every
//! readiness condition holds, else 503 with the unmet conditions' names in the body.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 8;
/// Longest life of one connection (a scrape takes milliseconds).
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("agent.metrics_listen {addr}: cannot listen")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("agent.metrics_listen {addr}: cannot start the metrics thread")]
    Thread {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The running server; dropping it stops serving.
pub struct MetricsServer {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds `addr` now (a bad or busy address is an error at start) and serves it on a
/// thread of its own.
pub fn start(addr: SocketAddr) -> Result<MetricsServer, ServerError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServerError::Bind { addr, source })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ServerError::Thread { addr, source })?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("hb-metrics".into())
        .spawn(move || runtime.block_on(serve(listener, rx)))
        .map_err(|source| ServerError::Thread { addr, source })?;
    tracing::info!(listen = %addr, "metrics, health and readiness served (/metrics, /healthz, /readyz)");
    Ok(MetricsServer {
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

async fn serve(listener: std::net::TcpListener, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        tracing::error!("metrics listener unusable; /metrics, /healthz and /readyz are not served");
        return;
    };
    let app = router();
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => return,
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |req: axum::extract::Request<hyper::body::Incoming>| {
                    app.clone().oneshot(req.map(axum::body::Body::new))
                },
            );
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, conn).await;
            drop(permit);
        });
    }
}

fn router() -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { (StatusCode::NOT_FOUND, "/metrics, /healthz or /readyz\n") })
}

async fn metrics() -> Response {
    let text = super::global().encode();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn readyz() -> Response {
    let unmet = super::global().unmet();
    if unmet.is_empty() {
        (StatusCode::OK, "ready\n".to_owned()).into_response()
    } else {
        let names: Vec<&str> = unmet.iter().map(|c| c.name()).collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", names.join(", ")),
        )
            .into_response()
    }
}
