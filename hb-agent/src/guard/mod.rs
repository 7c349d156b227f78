//! The egress guard: a sandbox reaches an allowed address only for the name it was
//! allowed under, and over plain HTTP only with read-only methods unless the host may
//! be written to. Nothing is decrypted.
//!
//! How a connection gets here: the kernel sends a guarded policy's TCP connects on its
//! `guard_ports` to `guard.listen`'s address at port `base + policy id` (IPv6 sockets:
//! `[::1]`, same port; hb-ebpf's `guard` module) and files the original destination
//! under the client end ([`flow`]). The port a connection arrives on names its policy.
//!
//! Per connection: accepted → its origin found ([`flow`]; none: closed) → a slot of its
//! policy's `max_connections_per_policy` for its cgroup, which takes another only while
//! it holds fewer than are free and fewer than `max_connections_per_cgroup`
//! ([`crate::share`]; refused: `guard_cgroup_busy`, so a few sandboxes cannot take
//! their policy's every slot; none free: `guard_busy`) → the first flight read
//! within `first_flight_timeout_secs` → judged
//! ([`decide`]): a TLS ClientHello by its SNI ([`tls`]), a plain HTTP request by its
//! host and method ([`http`]) → refused: closed (plain HTTP: a 403 first) with an event
//! naming the policy, the name and the address, and nothing reaches the upstream;
//! passed: the upstream connection opens, the first flight goes upstream
//! and bytes flow both ways ([`relay`]), every further plain-HTTP request judged the
//! same way, until either side ends or no data moved either way for
//! `idle_timeout_secs` (read from the kernel's TCP_INFO of the client socket).
//!
//! Over TLS the method cannot be seen without decrypting, and hb does not decrypt: a
//! TLS connection to an allowed name may carry any method. State-changing calls that
//! need authority belong on the broker, which sees them.
//!
//! Must never: pass bytes upstream before the first flight was judged, hold more than
//! the first flight (64 KiB at most) per connection, or leave a connection (and its
//! descriptors) behind once either side is gone.

pub mod decide;
pub mod flow;
pub mod http;
mod relay;
pub mod splice;
pub mod tls;
mod tls_records;

#[cfg(test)]
mod parse_props;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hb_common::FlowKey;
use tokio::{
    io::AsyncReadExt as _,
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};

use crate::{
    config::Config,
    dns::learned::Learned,
    events::EventRecord,
    maps::MapsError,
    share::{Refused, Share, Slot},
};

use self::{
    decide::{Judge, PolicyRules, Reason},
    flow::{Flows, Origin},
};

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("cannot listen on {addr} for policy \"{policy}\"'s guard")]
    Bind {
        addr: SocketAddr,
        policy: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error("guard.sockmap: the kernel relay cannot run")]
    Splice(#[from] splice::SpliceError),
}

/// File below `state_dir`: the guard's counters (read by `status`).
pub const STATS_FILE: &str = "guard-stats.json";

/// Contents of [`STATS_FILE`].
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuardStats {
    /// Connections accepted from sandboxes.
    pub accepted: u64,
    /// Connections whose first flight passed and went upstream.
    pub passed: u64,
    /// Connections refused (any reason but `guard_busy`).
    pub refused: u64,
    /// Connections closed at once: the policy's `max_connections_per_policy` was reached.
    pub busy: u64,
    /// Connections closed at once: their cgroup's `max_connections_per_cgroup` was
    /// reached.
    #[serde(default)]
    pub cgroup_busy: u64,
    /// Passed connections closed after `idle_timeout_secs` without data.
    #[serde(default)]
    pub idle_closed: u64,
    /// Connections without a kernel record (closed at once).
    pub unattributed: u64,
    /// Connections open now.
    pub open: u64,
    /// Passed TLS connections handed to the kernel relay (`guard.sockmap`).
    #[serde(default)]
    pub kernel: u64,
    /// Connections the kernel relay would have taken but a map had no room or the
    /// kernel refused: they stayed on the user-space relay.
    #[serde(default)]
    pub kernel_declined: u64,
    /// Entries in the kernel relay's three maps now (two sockets and two records per
    /// connection in its hands; 0 when nothing is).
    #[serde(default)]
    pub kernel_entries: u64,
}

#[derive(Default)]
struct Stats {
    accepted: AtomicU64,
    passed: AtomicU64,
    refused: AtomicU64,
    busy: AtomicU64,
    cgroup_busy: AtomicU64,
    idle_closed: AtomicU64,
    unattributed: AtomicU64,
    open: AtomicU64,
    kernel: AtomicU64,
    kernel_declined: AtomicU64,
}

impl Stats {
    fn snapshot(&self) -> GuardStats {
        GuardStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            passed: self.passed.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            busy: self.busy.load(Ordering::Relaxed),
            cgroup_busy: self.cgroup_busy.load(Ordering::Relaxed),
            idle_closed: self.idle_closed.load(Ordering::Relaxed),
            unattributed: self.unattributed.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
            kernel: self.kernel.load(Ordering::Relaxed),
            kernel_declined: self.kernel_declined.load(Ordering::Relaxed),
            kernel_entries: 0,
        }
    }
}

/// Handle to the running guard, for the agent's housekeeping.
pub struct GuardService {
    inner: Arc<Inner>,
    stats: Arc<Stats>,
    splicer: Option<Arc<splice::Splicer>>,
    written: Mutex<Option<GuardStats>>,
}

impl GuardService {
    /// Once a second: rewrites the counters file when they changed.
    pub fn housekeeping(&self, state_dir: &Path) {
        let mut now = self.stats.snapshot();
        if let Some(s) = &self.splicer {
            let (socks, peers, records) = s.entries();
            now.kernel_entries = (socks + peers + records) as u64;
        }
        let Ok(mut written) = self.written.lock() else {
            return;
        };
        if written.as_ref() == Some(&now) {
            return;
        }
        if let Ok(bytes) = serde_json::to_vec(&now) {
            crate::dns::write_state(state_dir, STATS_FILE, &bytes);
        }
        *written = Some(now);
    }
}

/// Descriptors one guarded connection may hold: the client, the upstream, two pipes
/// while it is spliced, and the client's duplicate its idle watch reads.
const FDS_PER_CONNECTION: u64 = 7;

/// Connections open at once, all policies together: at most half the agent's
/// open-file limit goes to the guard, so the resolver, the broker and the maps always
/// have descriptors left whatever the sandboxes do.
fn global_slots(config: &Config) -> usize {
    let wanted = u64::from(config.guard.max_connections_per_policy) * guarded(config);
    let cap = crate::dns::nofile_limit().map_or(wanted, |n| n / 2 / FDS_PER_CONNECTION);
    usize::try_from(wanted.min(cap).max(1)).unwrap_or(usize::MAX)
}

/// Guarded policies (at least one, for the division).
fn guarded(config: &Config) -> u64 {
    config.policies.iter().filter(|p| p.guard).count().max(1) as u64
}

/// Connections one guarded policy may hold: `max_connections_per_policy`, or an equal
/// part of [`global_slots`] when the open-file limit keeps those below the policies'
/// caps together. Each policy's pool is its own, so the sandboxes of one policy cannot
/// take the slots another policy's sandboxes need (a first-come pool over all policies
/// let one sandbox hold every slot of the node when the limit was low).
fn policy_slots(config: &Config) -> u32 {
    let part = global_slots(config) as u64 / guarded(config);
    u32::try_from(part)
        .unwrap_or(u32::MAX)
        .clamp(1, config.guard.max_connections_per_policy.max(1))
}

/// A guarded policy: its rules and its connection slots.
struct Policy {
    rules: PolicyRules,
    /// [`policy_slots`] (`max_connections_per_policy` unless the open-file limit is
    /// low), shared by the policy's cgroups under [`crate::share`]'s rule, each capped
    /// at `max_connections_per_cgroup`.
    slots: Arc<Share<u64>>,
}

/// Shared by every listener and connection task.
struct Inner {
    flows: Flows,
    judge: Judge,
    policies: HashMap<u32, Policy>,
    /// Slots shared by every policy (see [`global_slots`]).
    slots: Arc<Semaphore>,
    first_flight: Duration,
    /// A passed connection without data either way for this long is closed.
    idle: Duration,
    events: crate::events::EventSender,
    stats: Arc<Stats>,
    /// The kernel relay, when `guard.sockmap` is on.
    splicer: Option<Arc<splice::Splicer>>,
    /// Accept errors not logged yet, and when the last log line went out.
    accept_log: Mutex<(u64, Option<Instant>)>,
}

/// How often accept errors are logged: once per interval with a count.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Binds one listener per guarded policy on the guard's IPv4 address and on `[::1]`,
/// and serves them until the runtime ends.
pub async fn start(
    config: &Config,
    ebpf: &mut aya::Ebpf,
    ids: &HashMap<String, u32>,
    bpffs_dir: &Path,
    learned: Option<Arc<Mutex<Learned>>>,
    events: crate::events::EventSender,
) -> Result<GuardService, GuardError> {
    let mut policies = HashMap::new();
    for p in config.policies.iter().filter(|p| p.guard) {
        let Some(&id) = ids.get(p.name.get_ref()) else {
            continue;
        };
        policies.insert(
            id,
            Policy {
                rules: PolicyRules {
                    id,
                    name: p.name.get_ref().clone(),
                    audit: p.mode == crate::config::PolicyMode::Audit,
                    domains: p.domains.clone(),
                    writes: p.writes.clone(),
                    cidrs: p.allow.clone(),
                },
                slots: Share::new(policy_slots(config), config.guard.per_cgroup()),
            },
        );
    }
    let stats = Arc::new(Stats::default());
    let splicer = if config.guard.sockmap {
        Some(Arc::new(splice::Splicer::open(ebpf)?))
    } else {
        None
    };
    let inner = Arc::new(Inner {
        flows: Flows::open(bpffs_dir)?,
        judge: Judge {
            learned,
            nat64: config.egress.nat64.clone(),
            readonly: config.guard.readonly_methods.clone(),
        },
        policies,
        slots: Arc::new(Semaphore::new(global_slots(config))),
        first_flight: Duration::from_secs(config.guard.first_flight_timeout_secs),
        idle: Duration::from_secs(config.guard.idle_timeout_secs),
        events,
        stats: stats.clone(),
        splicer: splicer.clone(),
        accept_log: Mutex::new((0, None)),
    });
    let listen = config.guard_listen();
    for (&id, policy) in &inner.policies {
        let port = listen.port() + id as u16;
        for ip in [IpAddr::V4(*listen.ip()), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
            let addr = SocketAddr::new(ip, port);
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| GuardError::Bind {
                    addr,
                    policy: policy.rules.name.clone(),
                    source,
                })?;
            defer_accept(&listener, config.guard.first_flight_timeout_secs);
            tokio::spawn(serve_listener(inner.clone(), id, listener));
        }
    }
    Ok(GuardService {
        inner,
        stats,
        splicer,
        written: Mutex::new(None),
    })
}

/// Serves one guarded policy on a listener bound elsewhere (in a pod's network
/// namespace, by `kube::netns`). The origin lookup works there too: the kernel files a
/// connection under its client end and guard port whatever the namespace. Upstream
/// connections leave from the agent's namespace.
#[derive(Clone)]
pub struct PodServer {
    inner: Arc<Inner>,
    first_flight_secs: u64,
}

impl GuardService {
    pub fn pod_server(&self) -> PodServer {
        PodServer {
            inner: self.inner.clone(),
            first_flight_secs: self.inner.first_flight.as_secs(),
        }
    }
}

impl PodServer {
    /// Whether policy `policy_id` is guarded.
    pub fn serves(&self, policy_id: u32) -> bool {
        self.inner.policies.contains_key(&policy_id)
    }

    /// Serves `policy_id` on a bound, non-blocking listener on the current runtime; the
    /// task, and the listener with it, ends when its handle is aborted. Must run inside
    /// the runtime (`Handle::enter`).
    pub fn serve(
        &self,
        policy_id: u32,
        listener: std::net::TcpListener,
    ) -> std::io::Result<tokio::task::AbortHandle> {
        let listener = TcpListener::from_std(listener)?;
        defer_accept(&listener, self.first_flight_secs);
        Ok(tokio::spawn(serve_listener(self.inner.clone(), policy_id, listener)).abort_handle())
    }
}

/// `TCP_DEFER_ACCEPT`: a connection is handed to the guard only once its first bytes
/// arrived, so accepting and reading the first flight cost one wake-up, and a client
/// that connects and sends nothing never holds an agent descriptor (the kernel drops it
/// after `secs`). Best effort: without it the first-flight timeout still bounds them.
fn defer_accept(listener: &TcpListener, secs: u64) {
    let secs = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    set_tcp_option(listener.as_fd(), libc::TCP_DEFER_ACCEPT, secs);
}

/// Accepts a policy's connections, one task each.
async fn serve_listener(inner: Arc<Inner>, policy_id: u32, listener: TcpListener) {
    // An accepted socket's local end is the listener's: its port, all the flow key needs
    // of it, is read once here rather than per connection.
    let local = listener.local_addr().ok();
    let inherited = set_nodelay(listener.as_fd());
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                inner.stats.accepted.fetch_add(1, Ordering::Relaxed);
                if !inherited {
                    let _ = stream.set_nodelay(true);
                }
                tokio::spawn(serve(inner.clone(), policy_id, stream, peer, local));
            }
            Err(e) => {
                inner.accept_failed(&e);
                // Out of descriptors: give connections time to end instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Sets `TCP_NODELAY` on a listener, whose accepted sockets then have it from birth
/// (Linux copies it to them): the guard relays whatever each side writes at once, and
/// Nagle would hold a small write back for the peer's delayed ACK (40 ms). `false` if
/// the kernel refused, and each accepted socket must be set on its own.
fn set_nodelay(listener: std::os::fd::BorrowedFd<'_>) -> bool {
    set_tcp_option(listener, libc::TCP_NODELAY, 1)
}

/// Sets the int-valued TCP option `option` of `socket` to `value`; whether the kernel
/// took it.
fn set_tcp_option(
    socket: std::os::fd::BorrowedFd<'_>,
    option: libc::c_int,
    value: libc::c_int,
) -> bool {
    // SAFETY: setsockopt on a socket the caller holds, with an int option value of its
    // size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            option,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// Forgets a connection's kernel record when the connection ends, however it ends.
struct Tracked<'a> {
    inner: &'a Inner,
    key: FlowKey,
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.inner.flows.forget(&self.key);
        self.inner.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One guarded connection, from accept to close. `local`: the listener's address, if
/// it could be read (else the socket's own is read).
async fn serve(
    inner: Arc<Inner>,
    policy_id: u32,
    client: TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) {
    let Some(local) = local.or_else(|| client.local_addr().ok()) else {
        return;
    };
    let Some(key) = crate::flow_key::key_of_accepted(client.as_fd(), peer, local) else {
        inner.stats.unattributed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let Some(origin) = inner.flows.find(&key) else {
        inner.stats.unattributed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    inner.stats.open.fetch_add(1, Ordering::Relaxed);
    let _tracked = Tracked { inner: &inner, key };
    // A record filed for another policy's port cannot be this connection's.
    let Some(policy) = inner
        .policies
        .get(&policy_id)
        .filter(|_| origin.policy_id == policy_id)
    else {
        inner.stats.unattributed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let _slots = match take_slots(policy, &inner.slots, origin.cgroup_id) {
        Ok(slots) => slots,
        Err(reason) => {
            let counter = match reason {
                Reason::CgroupBusy => &inner.stats.cgroup_busy,
                _ => &inner.stats.busy,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            inner.report(&policy.rules, &origin, reason, None);
            return;
        }
    };
    let mut client = client;
    let first = read_first_flight(&mut client, inner.first_flight).await;
    let first = match first.and_then(|f| inner.judge_first(&policy.rules, &origin, f)) {
        Ok(f) => f,
        Err(refusal) => {
            inner.refused(&policy.rules, &origin, &refusal);
            if !policy.rules.audit {
                refusal.answer(&mut client).await;
                return;
            }
            match refusal.first {
                Some(f) => f,
                None => return,
            }
        }
    };
    // Only now, judged: a refused connection never reaches the upstream, not even as a
    // TCP handshake.
    let Some(upstream) = connect_upstream(origin.dst, inner.first_flight).await else {
        relay::reset(client);
        return;
    };
    // The idle watch reads the client socket through its own descriptor, alive however
    // the relay hands the stream around; without one the connection is not relayed.
    let Ok(probe) = client.as_fd().try_clone_to_owned() else {
        relay::reset(client);
        return;
    };
    inner.stats.passed.fetch_add(1, Ordering::Relaxed);
    let ctx = relay::Ctx {
        inner: &inner,
        policy: &policy.rules,
        origin: &origin,
    };
    let relayed = async {
        match first {
            FirstFlight::Tls { records, name } => {
                relay::tls(&ctx, client, upstream, records, name).await;
            }
            FirstFlight::Http(buf) => relay::http(&ctx, client, upstream, buf).await,
        }
    };
    tokio::select! {
        () = relayed => {}
        () = idle_past(&probe, inner.idle) => {
            // Dropping the relay closes both sockets (the client's once `probe` goes too).
            inner.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Ends once no data moved either way on the client socket for `limit`, as the kernel
/// counts it (TCP_INFO's time since the last data received and sent): one wake-up per
/// `limit` while the connection is busy, no bookkeeping in the relay. The first look is
/// after `limit`: the first flight has just arrived, and a short connection ends without
/// the kernel being asked at all.
async fn idle_past(client: &OwnedFd, limit: Duration) {
    let mut wait = limit;
    loop {
        tokio::time::sleep(wait).await;
        let quiet = quiet_for(client).unwrap_or(Duration::ZERO);
        if quiet >= limit {
            return;
        }
        wait = limit - quiet;
    }
}

/// How long the socket has neither received nor sent data; `None` if the kernel does
/// not say.
fn quiet_for(socket: &OwnedFd) -> Option<Duration> {
    // SAFETY: tcp_info is plain data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt on a socket we own, into a buffer of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    let ms = info.tcpi_last_data_recv.min(info.tcpi_last_data_sent);
    Some(Duration::from_millis(u64::from(ms)))
}

/// A slot of `cgroup` in its policy's pool, then one of all policies'; or why not: the
/// cgroup has its share (`CgroupBusy`), or nothing is free to it (`Busy`).
fn take_slots(
    policy: &Policy,
    global: &Arc<Semaphore>,
    cgroup: u64,
) -> Result<(Slot<u64>, OwnedSemaphorePermit), Reason> {
    let cgroup = policy
        .slots
        .take(&cgroup)
        .map_err(|refused| match refused {
            Refused::Share => Reason::CgroupBusy,
            Refused::Full => Reason::Busy,
        })?;
    let global = global
        .clone()
        .try_acquire_owned()
        .map_err(|_| Reason::Busy)?;
    Ok((cgroup, global))
}

/// The upstream connection, opened once the first flight passed. `None` when it cannot
/// be opened in time.
async fn connect_upstream(dst: SocketAddr, limit: Duration) -> Option<TcpStream> {
    let stream = tokio::time::timeout(limit, TcpStream::connect(dst))
        .await
        .ok()?
        .ok()?;
    let _ = stream.set_nodelay(true);
    Some(stream)
}

/// The bytes a client sent before the guard let anything through.
pub enum FirstFlight {
    /// Records up to and including a whole ClientHello, and the host it names (filled in
    /// when the hello is judged; empty for a hello an audit-mode policy passes unnamed).
    Tls { records: Vec<u8>, name: String },
    /// Bytes up to and including a whole first request head (maybe more).
    Http(Vec<u8>),
}

/// Why a connection was refused, and what the client is told.
pub struct Refusal {
    pub reason: Reason,
    /// The name the client sent, if any.
    pub name: Option<String>,
    /// What a plain-HTTP client reads in the 403 (`None`: the connection is just closed).
    pub http_detail: Option<String>,
    /// The first flight, when it was read (an audit-mode policy passes it on).
    first: Option<FirstFlight>,
}

impl Refusal {
    fn closed(reason: Reason, name: Option<String>) -> Self {
        Self {
            reason,
            name,
            http_detail: None,
            first: None,
        }
    }

    /// Tells the client, where the protocol has a way to (a plain-HTTP 403), and closes.
    async fn answer(&self, client: &mut TcpStream) {
        if let Some(detail) = &self.http_detail {
            use tokio::io::AsyncWriteExt as _;
            let _ = client
                .write_all(&http::forbidden(self.reason.name(), detail))
                .await;
            let _ = client.shutdown().await;
        }
    }
}

/// Reads until a whole ClientHello or a whole HTTP request head has arrived, within
/// `limit`.
async fn read_first_flight(
    client: &mut TcpStream,
    limit: Duration,
) -> Result<FirstFlight, Refusal> {
    let not_tls_or_http = || Refusal::closed(Reason::NotTlsOrHttp, None);
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = Vec::with_capacity(2048);
    loop {
        let n = tokio::time::timeout_at(deadline, client.read_buf(&mut buf))
            .await
            .map_err(|_| not_tls_or_http())?
            .map_err(|_| not_tls_or_http())?;
        if n == 0 {
            return Err(not_tls_or_http());
        }
        if buf[0] == tls::HANDSHAKE {
            match tls::complete_hello(&buf) {
                Ok(Some(_)) => {
                    return Ok(FirstFlight::Tls {
                        records: buf,
                        name: String::new(),
                    });
                }
                Ok(None) => {}
                Err(()) => return Err(not_tls_or_http()),
            }
        } else {
            match http::parse_head(&buf) {
                Ok(Some(_)) => return Ok(FirstFlight::Http(buf)),
                Ok(None) => {}
                Err(http::HeadError::NotHttp) => return Err(not_tls_or_http()),
                Err(_) => return Ok(FirstFlight::Http(buf)),
            }
        }
        if buf.len() >= tls::MAX_HELLO.max(http::MAX_HEAD) + 64 {
            return Err(not_tls_or_http());
        }
        buf.reserve(4096);
    }
}

/// Whether the first flight is the protocol its port serves (`decide::port_speaks`): a
/// front there reads the name from that protocol only, so a plain-HTTP request to an
/// HTTPS port (or a ClientHello to an HTTP port) carries no name it reads, and goes to
/// its default backend.
fn protocol_fits_port(first: &FirstFlight, port: u16) -> Result<(), Refusal> {
    match (first, decide::port_speaks(port)) {
        (FirstFlight::Http(_), Some(decide::Speaks::Tls)) => Err(Refusal {
            reason: Reason::NotTlsOrHttp,
            name: None,
            http_detail: Some(format!(
                "plain HTTP to port {port}, an HTTPS port: use https://"
            )),
            first: None,
        }),
        (FirstFlight::Tls { .. }, Some(decide::Speaks::Http)) => {
            Err(Refusal::closed(Reason::NotTlsOrHttp, None))
        }
        _ => Ok(()),
    }
}

impl Inner {
    /// Judges the first flight; passes it back when it may go upstream.
    fn judge_first(
        &self,
        p: &PolicyRules,
        origin: &Origin,
        mut first: FirstFlight,
    ) -> Result<FirstFlight, Refusal> {
        if let Err(mut r) = protocol_fits_port(&first, origin.dst.port()) {
            r.first = Some(first);
            return Err(r);
        }
        let verdict = match &mut first {
            FirstFlight::Tls { records, name } => {
                self.judge_hello(p, origin, records).map(|n| *name = n)
            }
            FirstFlight::Http(buf) => self.judge_request(p, origin, buf).map(|_| ()),
        };
        match verdict {
            Ok(()) => Ok(first),
            Err(mut r) => {
                r.first = Some(first);
                Err(r)
            }
        }
    }

    /// A TLS first flight: its SNI must be allowed and validated for the address.
    /// Returns the name.
    fn judge_hello(&self, p: &PolicyRules, origin: &Origin, buf: &[u8]) -> Result<String, Refusal> {
        let Ok(Some(message)) = tls::complete_hello(buf) else {
            return Err(Refusal::closed(Reason::NotTlsOrHttp, None));
        };
        match tls::hello_name(&message) {
            tls::Hello::Name(name) if !self.judge.name_fits(p, &name, origin.dst.ip()) => {
                Err(Refusal::closed(Reason::SniMismatch, Some(name)))
            }
            // A name that fits, in a hello that a front routing by SNI may read otherwise
            // (cut across records, an odd record version).
            tls::Hello::Name(name) if !tls::in_one_record(buf, &message) => {
                Err(Refusal::closed(Reason::NotTlsOrHttp, Some(name)))
            }
            tls::Hello::Name(name) => Ok(name),
            tls::Hello::IpLiteral(ip) => Err(Refusal::closed(Reason::NoSni, Some(ip))),
            tls::Hello::NoSni | tls::Hello::Encrypted => Err(Refusal::closed(Reason::NoSni, None)),
            tls::Hello::Malformed => Err(Refusal::closed(Reason::NotTlsOrHttp, None)),
        }
    }

    /// A plain-HTTP request head at the start of `buf`: its host must be allowed and
    /// validated for the address, and its method read-only unless the host may be
    /// written to. Returns the head.
    fn judge_request(
        &self,
        p: &PolicyRules,
        origin: &Origin,
        buf: &[u8],
    ) -> Result<http::Head, Refusal> {
        let refuse = |reason: Reason, name: Option<String>, detail: String| Refusal {
            reason,
            name,
            http_detail: Some(detail),
            first: None,
        };
        let head = match http::parse_head(buf) {
            Ok(Some(head)) => head,
            Ok(None) | Err(http::HeadError::NotHttp) => {
                return Err(Refusal::closed(Reason::NotTlsOrHttp, None));
            }
            Err(http::HeadError::TooLarge) => {
                return Err(refuse(
                    Reason::AmbiguousRequest,
                    None,
                    "request head too large".into(),
                ));
            }
            Err(http::HeadError::Ambiguous(what)) => {
                return Err(refuse(
                    Reason::AmbiguousRequest,
                    None,
                    format!("ambiguous request ({what})"),
                ));
            }
        };
        let dst = origin.dst.ip();
        let Some(host) = head.host.clone() else {
            return Err(refuse(
                Reason::HostMismatch,
                None,
                "the request names no host".into(),
            ));
        };
        let fits = if host.parse::<IpAddr>().is_ok() {
            self.judge.literal_fits(p, &host, dst)
        } else {
            self.judge.name_fits(p, &host, dst)
        };
        if !fits {
            let detail = format!("{host} is not a name policy {} allows at {dst}", p.name);
            return Err(refuse(Reason::HostMismatch, Some(host), detail));
        }
        // The name fits; its spelling must be one every server routes as that name.
        if !http::port_fits(head.port, origin.dst.port()) {
            let detail = format!(
                "ambiguous request (port {} after the host, on a connection to port {})",
                head.port.unwrap_or_default(),
                origin.dst.port()
            );
            return Err(refuse(Reason::AmbiguousRequest, Some(host), detail));
        }
        if !self.judge.method_fits(
            p,
            &head.method,
            &head.overrides,
            head.upgrade.is_some(),
            &host,
        ) {
            let detail = format!(
                "{} to {host} is not allowed by policy {} (guard.readonly_methods; write_domains)",
                if head.upgrade.is_some() {
                    format!("{} with Upgrade", head.method)
                } else if !head.overrides.is_empty() {
                    format!(
                        "{} overridden as {}",
                        head.method,
                        head.overrides.join(", ")
                    )
                } else {
                    head.method.clone()
                },
                p.name
            );
            return Err(refuse(Reason::MethodDenied, Some(host), detail));
        }
        Ok(head)
    }

    /// Counts and reports a refusal.
    fn refused(&self, p: &PolicyRules, origin: &Origin, refusal: &Refusal) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        self.report(p, origin, refusal.reason, refusal.name.as_deref());
    }

    /// Writes a `guard` event (within the policy's event budget, applied by the agent).
    fn report(&self, p: &PolicyRules, origin: &Origin, reason: Reason, name: Option<&str>) {
        let record = EventRecord {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            hook: "guard".into(),
            verdict: if p.audit { "audit" } else { "deny" }.into(),
            reason: reason.name().into(),
            policy: p.name.clone(),
            cgroup_id: origin.cgroup_id,
            cgroup: None,
            pid: origin.pid,
            tid: origin.tid,
            comm: origin.comm.clone(),
            family: match origin.dst.ip() {
                IpAddr::V4(_) => "ipv4".into(),
                IpAddr::V6(_) => "ipv6".into(),
            },
            protocol: "tcp".into(),
            dst: origin.dst.ip().to_string(),
            port: origin.dst.port(),
            name: name.map(str::to_owned),
            suppressed: 0,
            detail: None,
        };
        // A full channel drops the event rather than delaying the connection.
        self.events.try_send(record);
    }

    /// Counts an accept error; logs the count at most once per interval.
    fn accept_failed(&self, e: &std::io::Error) {
        let Ok(mut log) = self.accept_log.lock() else {
            return;
        };
        log.0 += 1;
        let now = Instant::now();
        if log.1.is_none_or(|t| now.duration_since(t) >= LOG_INTERVAL) {
            tracing::warn!(count = log.0, error = %e, "guard: accept failed");
            *log = (0, Some(now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_sockets_have_nodelay_from_their_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        assert!(set_nodelay(listener.as_fd()), "TCP_NODELAY on the listener");
        let _client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        assert!(
            accepted.nodelay().expect("TCP_NODELAY"),
            "an accepted socket did not get TCP_NODELAY from its listener"
        );
    }
}
