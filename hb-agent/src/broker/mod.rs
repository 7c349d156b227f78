//! The credential broker: HTTP/1.1 + JSON on a Unix socket (`broker.socket`).
//!
//! The data path, module by module: a connection is accepted and its caller identified
//! once, from the kernel (`identity`: pidfd → cgroup → enrolled sandbox → policy;
//! `server`: bounded connections, header-read and idle timeouts, body limit, request
//! timeout) → the endpoint decides (`sessions` for the event stream; `text_gate` for
//! scrub and sanitize, text on its way to a model) → every answer, error message and
//! event passes the scrubber on its way out. `stats` counts what the broker refused.
//!
//! The broker runs on threads of its own (a small multi-threaded tokio runtime), so a
//! flood of broker calls cannot delay the agent's kernel work (events, DNS, cgroup scans).
//!
//! Host callers (processes in no enrolled cgroup) may use `whoami`, `scrub` and
//! `sanitize`; root and `broker.operator_uid` may also mint event-stream sessions.
//!
//! The broker serves several sockets (`listeners`): `broker.socket`, and one per policy
//! that serves only that policy's sandboxes (each its own backlog).
//!
//! Must never: serve on a socket another live agent owns, remove anything at a socket
//! path that is not a socket, or let an error message out unscrubbed.

mod accounts;
mod caller_audit;
mod canary;
mod credentials;
mod cutoff;
pub mod error;
mod fragment_hit;
mod handles;
pub mod identity;
mod listeners;
pub use listeners::paths as socket_paths;
pub mod outbound;
mod propagation;
mod requests;
mod rotation;
pub use rotation::{
    book as rotation_book, breaker as rotation_breaker, limits as rotation_limits,
    minting as rotation_minting, revoke_minted_by_operator, sensor as rotation_sensor,
};
mod server;
pub mod sessions;
mod sightings;
mod state;
pub mod stats;
mod text_gate;

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::sync::broadcast;

use crate::{config::Config, events::EventRecord, maps::MapsError};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker socket {0}: another agent is serving there")]
    InUse(PathBuf),
    #[error("broker socket {0} exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    #[error("broker socket {path}: {action} failed")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the enrollment map for caller identification")]
    Maps(#[from] MapsError),
    #[error("cannot open the vault")]
    Vault(#[from] crate::vault::VaultError),
    #[error("cannot set up the broker's outbound path")]
    Outbound(#[from] outbound::SetupError),
    #[error("the vault lock is poisoned")]
    Poisoned,
    #[error("cannot open the audit log in {0}")]
    Audit(PathBuf, #[source] io::Error),
}

fn io_err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> BrokerError + 'a {
    move |source| BrokerError::Io {
        path: path.to_owned(),
        action,
        source,
    }
}

/// What the agent hands the broker.
pub struct BrokerInputs<'a> {
    pub config: &'a Config,
    pub cgroup_mount: &'a Path,
    pub policy_names: HashMap<u32, String>,
    /// Every event the agent records (kernel and resolver), for `GET /v1/events`.
    pub events: broadcast::Sender<Arc<EventRecord>>,
    /// The host's own addresses, kept current: never a destination of the broker's.
    pub local_addrs: crate::local_addrs::LocalAddrs,
}

/// The running broker; dropping it stops serving and removes the socket files.
pub struct BrokerService {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Removed once the thread has stopped serving them.
    _files: listeners::Files,
}

impl Drop for BrokerService {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds the sockets (the main one and a policy's each, see [`listeners`]) and serves
/// them on the broker's own threads.
pub fn start(inputs: BrokerInputs<'_>) -> Result<BrokerService, BrokerError> {
    let cfg = &inputs.config.broker;
    let path = cfg.socket.clone();
    let (bound, files) = listeners::bind(inputs.config)?;
    let identity = identity::Identity::open(
        inputs.cgroup_mount,
        &inputs.config.agent.bpffs_dir,
        inputs.policy_names,
    )?;
    let agent = &inputs.config.agent;
    let vault = if agent.master_key_file.exists() {
        let key = crate::vault::MasterKey::load(&agent.master_key_file)?;
        let vault = crate::vault::Vault::open(&agent.state_dir.join(crate::vault::DB_FILE), &key)?;
        Some(Arc::new(std::sync::Mutex::new(vault)))
    } else {
        tracing::warn!(
            master_key_file = %agent.master_key_file.display(),
            "no master key: the broker issues no handles (hb-agent vault init creates one)"
        );
        None
    };
    let scrubber = crate::scrub::global().clone();
    // Every stored value is scrubbed from the start, not only once a handle used it.
    let mut protected = HashMap::new();
    if let Some(v) = &vault {
        let v = v.lock().map_err(|_| BrokerError::Poisoned)?;
        let mut values = Vec::new();
        for meta in v.list()? {
            if meta.status != crate::vault::Status::Revoked {
                let (meta, secret) = v.get(&meta.id)?;
                values.push((meta.id, secret));
            }
        }
        let ids = scrubber
            .register_many(values.iter().map(|(_, s)| ("live_secret", s)))
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "vault values not scrubbed by value");
                Vec::new()
            });
        for ((id, _), live) in values.iter().zip(ids) {
            protected.insert(id.clone(), live);
        }
        tracing::info!(
            credentials = protected.len(),
            "vault open; its values are scrubbed"
        );
    }
    let audit = Arc::new(
        crate::audit::AuditLog::open(
            &agent.state_dir,
            agent.audit_max_bytes,
            agent.audit_max_files,
            agent.audit_fsync,
            scrubber.clone(),
        )
        .map_err(|e| BrokerError::Audit(agent.state_dir.clone(), e))?,
    );
    let kernel_events = inputs.events.subscribe();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("hb-broker")
        .enable_all()
        .build()
        .map_err(io_err(&path, "starting the broker runtime"))?;
    let config = Arc::new(inputs.config.clone());
    let events = inputs.events;
    let local_addrs = inputs.local_addrs;
    let sessions = sessions::Sessions::new(Duration::from_secs(cfg.session_ttl_secs));
    let handles = handles::Handles::new(Duration::from_secs(cfg.handle_ttl_secs));
    let accounts = accounts::Accounts::new(agent.state_dir.join(crate::vault::DB_FILE));
    let operator_uid = cfg.operator_uid;
    let state_dir = agent.state_dir.clone();
    let max_body = usize::try_from(cfg.max_body_bytes).unwrap_or(usize::MAX);
    let timeout = Duration::from_secs(cfg.request_timeout_secs);
    let max_connections = cfg.max_connections;
    let scrub_per_minute = cfg.scrub_per_minute;
    let handles_per_minute = cfg.handles_per_minute;
    let (tx, rx) = tokio::sync::oneshot::channel();
    // The broker's thread reports whether its outbound path (resolver sockets on its
    // own runtime, TLS roots) came up before the agent goes on.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), BrokerError>>();
    let thread_path = path.clone();
    let thread = std::thread::Builder::new()
        .name("hb-broker".into())
        .spawn(move || {
            runtime.block_on(async move {
                let outbound = match outbound::Outbound::new(&config, local_addrs).await {
                    Ok(o) => o,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                let listeners = match bound.serve() {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(BrokerError::Io {
                            path: thread_path,
                            action: "serving",
                            source: e,
                        }));
                        return;
                    }
                };
                let sensor_config = config.clone();
                let answer_budget = server::AnswerBudget::new(config.broker.max_response_bytes);
                let clock = rotation::clock::Clock::from_env();
                let shared = Arc::new(state::Shared {
                    config,
                    identity,
                    sessions,
                    handles,
                    accounts,
                    vault,
                    scrubber,
                    protected: std::sync::Mutex::new(protected),
                    canaries: std::sync::Mutex::default(),
                    audit: audit.clone(),
                    outbound,
                    events,
                    operator_uid,
                    max_body,
                    body_budget: server::BodyBudget::new(max_body),
                    answer_budget,
                    timeout,
                    stats: stats::Stats::default(),
                    text_gate: text_gate::TextGate::new(scrub_per_minute),
                    handle_gate: text_gate::TextGate::new(handles_per_minute),
                    text_work: text_gate::TextWork::default(),
                    probes: rotation::probe::Probes::default(),
                    book: rotation::book::Book::open(&state_dir),
                    quarantines: rotation::quarantine::Quarantines::default(),
                    sensor: rotation::sensor::Sensor::open(&state_dir, sensor_config),
                    breakers: rotation::breaker::Breakers::open(&state_dir, clock.now()),
                    minting: rotation::minting::Minting::open(&state_dir),
                    stored: accounts::StoredMark::default(),
                    propagation: propagation::Propagation::default(),
                    clock,
                    caller_audit: caller_audit::CallerBudgets::default(),
                    caller_events: caller_audit::CallerBudgets::default(),
                });
                // Live handles, counted when someone scrapes.
                let weak = Arc::downgrade(&shared);
                crate::telemetry::global().on_scrape(move || {
                    if let Some(shared) = weak.upgrade() {
                        crate::telemetry::global()
                            .handles_live
                            .set(i64::try_from(shared.handles.live()).unwrap_or(i64::MAX));
                    }
                });
                // Kernel and resolver events go to the audit log as well.
                tokio::spawn(audit_events(kernel_events, audit));
                // Keys minted before a stop that no scrubber knows keep their shape pass.
                rotation::restore_unsettled(&shared).await;
                let _ = ready_tx.send(Ok(()));
                // Rotations cut short by a stop or a crash go on at their recorded step.
                rotation::resume(&shared).await;
                tokio::spawn(rotation::schedule::run(shared.clone()));
                tokio::spawn(rotation::sensor::run(shared.clone()));
                tokio::spawn(caller_audit::run(shared.clone()));
                server::serve(listeners, shared, max_connections, async {
                    let _ = rx.await;
                })
                .await;
            });
        })
        .map_err(io_err(&path, "starting the broker thread"))?;
    let service = BrokerService {
        shutdown: Some(tx),
        thread: Some(thread),
        _files: files,
    };
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(BrokerError::Io {
                path,
                action: "starting",
                source: io::Error::other("the broker thread ended"),
            });
        }
    }
    tracing::info!(
        socket = %path.display(),
        policy_sockets = %cfg.policy_sockets_dir().display(),
        "broker listening"
    );
    Ok(service)
}

async fn audit_events(
    mut rx: broadcast::Receiver<Arc<EventRecord>>,
    audit: Arc<crate::audit::AuditLog>,
) {
    loop {
        match rx.recv().await {
            Ok(record) => audit.record(
                "kernel_event",
                serde_json::to_value(&*record).unwrap_or_default(),
            ),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                audit.record("kernel_event_lost", serde_json::json!({ "missed": n }));
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
