//! hb's own resolver: the only DNS a sandbox gets, and the only source of addresses its
//! policy's allow map learns.
//!
//! How a query finds its policy: the kernel rewrites sandbox DNS (port 53, UDP and TCP,
//! to any address) to `dns.listen`'s address at port `base + policy id` (IPv6 sockets:
//! `[::1]`, same port; see hb-ebpf's `dns` module), and the resolver listens on one port
//! per policy. The port a query arrives on *is* its policy, which holds whatever network
//! namespace the sandbox lives in and needs no lookup of the sender.
//!
//! Per query: one question of type A or AAAA (other types are answered REFUSED: hb
//! forwards only what turns into connectable addresses; a message of more questions or
//! another opcode is answered FORMERR or NOTIMP, the refused names in it recorded as if
//! asked alone) → the name must be a hostname
//! (labels of letters, digits, `-`, `_`: else the denied-name answer and a
//! `name_malformed` event, in audit mode too) and match the policy's `allow_domains`
//! (else `dns.denied_name_rcode`, NXDOMAIN by default, and a `name_not_allowed` event;
//! audit mode resolves and reports) → answered from the cache
//! of validated answers, or forwarded upstream (`upstream`: persistent sockets, random
//! ids, TCP on truncation; of the upstream's answer only the question's CNAME chain and
//! the addresses it leads to are kept, each once, [`chain`]; a DNAME stands for the
//! CNAME it synthesises; a chain past 16 links, a loop or a name past 255 octets is
//! SERVFAIL) → every A/AAAA in the answer must lie outside the deny ranges and
//! the host's own addresses (minus exceptions; IPv4-mapped and NAT64 answers judged by
//! the IPv4 they carry, 6to4, Teredo and ISATAP ones by it first; see
//! [`crate::egress::denied`], [`crate::egress::host_own`]), else the
//! whole answer is refused (`dns.rebinding_rcode`) and a `dns_rebinding` event names the
//! name and address (an AAAA under any of `egress.nat64_prefixes` counts as the IPv4 it
//! embeds, RFC 6052) →
//! the addresses are written into the policy's allow map, held for the asking sandbox
//! within its share ([`learned`]: `max_ips_per_cgroup`), with expiry = TTL (the lowest
//! of the chain's records, CNAMEs included) clamped to
//! `[min_ttl_secs, max_ttl_secs]` (an answer with more than `max_ips_per_name`
//! addresses is trimmed to that many; older addresses of the name are evicted) → only
//! then is the answer sent, with that TTL. Negative answers (NXDOMAIN, and NODATA: the
//! name exists without an address of the type) are cached too, for the upstream SOA's
//! negative TTL (RFC 2308) within the same bounds.
//!
//! TCP (RFC 7766): a connection may wait `tcp_idle_timeout_secs` for a query to begin,
//! and a begun query must arrive whole within `tcp_query_timeout_secs`; connections are
//! capped per cgroup, per policy and in all (see [`TcpLimits`]; a cgroup's share of its
//! policy's connections also shrinks as its pool fills: [`crate::share`]) and those over a cap are closed at once. The cgroup comes from the kernel's record of the connection
//! ([`conns`]); a connection without one is closed. Each connection holds one of the agent's file descriptors, which the broker and
//! the state files share: stalled connections without these bounds starved them all.
//!
//! Who asked: over TCP the connection's record, over UDP the kernel's record of the
//! datagram's sender ([`conns`]; none: the policy's unattributed share, cgroup 0). A
//! query's events are budgeted per policy and that cgroup, and a query the cache cannot
//! answer takes one of the cgroup's and the policy's upstream lookups ([`inflight`]:
//! `max_upstream_lookups_per_cgroup`, `_per_policy`); past a share it is answered
//! SERVFAIL with a `dns_cgroup_busy` (`dns_policy_busy`) event.
//!
//! Must never: answer from the host's /etc/hosts, answer before the allow map holds the
//! addresses, let a malformed packet stop a listener, let a sandbox hold agent file
//! descriptors without bound, or let one sandbox hold another's share of upstream lookups.

mod cache;
pub(crate) mod chain;
pub(crate) mod conns;
mod inflight;
pub mod learned;
pub mod names;
pub(crate) mod upstream;
mod wire;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hb_common::FlowKey;
use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{Name, RData, RecordType},
};
use ipnet::{IpNet, Ipv6Net};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::{OwnedSemaphorePermit, Semaphore},
};

use crate::{
    config::{Config, DeniedRcode, RebindingRcode},
    events::EventRecord,
    maps::MapsError,
    share::{Refused, Share, Slot},
};

use self::{
    cache::CachedAnswer,
    learned::{LearnError, Learned, Learner},
    names::Pattern,
};

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen on {addr} for policy \"{policy}\"")]
    Bind {
        addr: SocketAddr,
        policy: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the upstream resolvers from dns.upstreams")]
    Upstream(#[from] upstream::UpstreamError),
    #[error("dns.upstreams entry \"{0}\" is not \"system\" or an IP address with optional port")]
    BadUpstream(String),
    #[error(transparent)]
    Maps(#[from] MapsError),
}

/// A policy as the resolver sees it.
struct PolicyDns {
    name: String,
    patterns: Vec<Pattern>,
    audit: bool,
    /// Its `hb_dns_queries_total` counters, by result.
    queries: crate::telemetry::DnsCounters,
}

/// Shared by every listener task.
struct Inner {
    upstream: Arc<upstream::Upstream>,
    policies: HashMap<u32, PolicyDns>,
    deny: Vec<IpNet>,
    except: Vec<IpNet>,
    /// `egress.nat64_prefixes`: AAAA answers under one are judged as their IPv4.
    nat64: Vec<Ipv6Net>,
    /// The host's own addresses: refused as answers like the deny ranges
    /// ([`crate::egress::host_own`]).
    local: crate::local_addrs::LocalAddrs,
    min_ttl: u32,
    max_ttl: u32,
    denied_name: ResponseCode,
    rebinding: ResponseCode,
    /// `max_ips_per_name`: an answer with more addresses is trimmed to this many.
    max_ips: usize,
    learned: Arc<Mutex<Learned>>,
    /// Validated answers, bounded in entries and in bytes ([`cache`]).
    cache: Mutex<cache::AnswerCache>,
    events: crate::events::EventSender,
    tcp: TcpLimits,
    /// The kernel's records of the redirected TCP connections: who holds each.
    conns: Arc<conns::Conns>,
    /// The kernel's records of the redirected UDP sockets: who sent a datagram.
    udp_senders: conns::Conns,
    /// Upstream lookups in flight, per policy and cgroup.
    inflight: inflight::Inflight,
    /// `hb_dns_query_duration_seconds` of the cache, local and upstream paths.
    latency: [prometheus_client::metrics::histogram::Histogram; 3],
    /// Allow-map write failures not logged yet, and when the last log line went out.
    map_error_log: Mutex<(u64, Option<Instant>)>,
}

/// How a query was answered, for its latency.
#[derive(Clone, Copy)]
enum AnswerPath {
    /// From a pre-encoded cached answer ([`Inner::cached`]).
    Cache = 0,
    /// Decided without the upstream ([`Inner::prepare`]).
    Local = 1,
    /// Forwarded ([`Inner::resolve`]).
    Upstream = 2,
}

/// How often a repeated condition (connections refused at a cap, accept errors) is
/// logged: once per interval with a count, never once per connection.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The bounds on TCP DNS connections.
struct TcpLimits {
    idle: Duration,
    query: Duration,
    /// Slots for all policies together (`max_tcp_connections`).
    global: Arc<Semaphore>,
    /// Slots per policy id (`max_tcp_connections_per_policy`, shared by its IPv4 and
    /// IPv6 listeners), shared by its cgroups under the same rule, each capped at
    /// `max_tcp_connections_per_cgroup`.
    per_policy: HashMap<u32, Arc<Share<u64>>>,
    /// Connections closed at accept because a cap was reached (for `status`).
    refused: Arc<AtomicU64>,
    /// Refusals not logged yet, and when the last log line went out.
    refused_log: Mutex<(u64, Option<Instant>)>,
}

impl TcpLimits {
    /// A slot of `cgroup` in its policy's pool (`Refused::Share`: the cgroup has its
    /// share), then one of all policies' (none free there, or an unknown policy:
    /// `Refused::Full`).
    fn admit(&self, policy_id: u32, cgroup: u64) -> Result<TcpSlots, Refused> {
        let pool = self.per_policy.get(&policy_id).ok_or(Refused::Full)?;
        let cgroup = pool.take(&cgroup)?;
        let global = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Full)?;
        Ok((cgroup, global))
    }

    /// Counts a connection closed at a cap; logs the count at most once per interval.
    fn refused(&self, policy: &str) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let Ok(mut log) = self.refused_log.lock() else {
            return;
        };
        log.0 += 1;
        let now = Instant::now();
        if log.1.is_none_or(|t| now.duration_since(t) >= LOG_INTERVAL) {
            tracing::warn!(
                count = log.0,
                policy = %crate::events::Escaped(policy),
                "TCP DNS connections closed at once: dns.max_tcp_connections(_per_policy, _per_cgroup) reached, or no kernel record"
            );
            *log = (0, Some(now));
        }
    }
}

/// The agent's open-file limit (soft), or `None` when unknown or unlimited.
pub(crate) fn nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(lim.rlim_cur)
}

/// Handle to the running resolver, for the agent's housekeeping.
pub struct DnsService {
    inner: Arc<Inner>,
    learned: Arc<Mutex<Learned>>,
    /// TCP connections closed at a cap, and how many the stats file last showed.
    tcp_refused: Arc<AtomicU64>,
    tcp_refused_written: AtomicU64,
}

/// File below `state_dir`: which names taught which addresses (read by `maps dump`).
pub const NAMES_FILE: &str = "dns-names.json";

/// File below `state_dir`: the resolver's own counters (read by `status`).
pub const STATS_FILE: &str = "dns-stats.json";

/// Contents of [`STATS_FILE`].
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct DnsStats {
    /// Addresses dropped because a name had more than `max_ips_per_name`.
    pub evicted: u64,
    /// Answers refused (SERVFAIL) because the allow map was full.
    pub allow_map_full: u64,
    /// Addresses currently learned.
    pub learned: usize,
    /// Addresses a sandbox dropped to stay within its share of its policy's rows
    /// (`max_ips_per_cgroup`, `max_ips_per_policy`).
    #[serde(default)]
    pub policy_quota_evicted: u64,
    /// Answers refused (SERVFAIL, `dns_allow_share_full`) because the sandbox held its
    /// share and none of its own addresses could make room.
    #[serde(default)]
    pub share_refused: u64,
    /// TCP connections closed at once: `max_tcp_connections(_per_policy, _per_cgroup)`
    /// was reached, or the kernel had no record of the connection's cgroup.
    #[serde(default)]
    pub tcp_refused: u64,
}

/// Writes `bytes` to `state_dir/name` atomically (rename over).
pub(crate) fn write_state(state_dir: &Path, name: &str, bytes: &[u8]) {
    let path = state_dir.join(name);
    let tmp = state_dir.join(format!("{name}.tmp"));
    if let Err(e) = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path)) {
        tracing::warn!(error = %e, "cannot write {}", path.display());
    }
}

/// One row of [`NAMES_FILE`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct NamesRow {
    pub policy_id: u32,
    pub ip: IpAddr,
    pub names: Vec<String>,
}

impl DnsService {
    /// The validated addresses and the names behind them (the egress guard asks).
    pub fn learned(&self) -> Arc<Mutex<Learned>> {
        self.learned.clone()
    }

    /// Once a second: drops expired allow entries; with `sweep`, also those a previous
    /// agent left; rewrites the name index when it changed.
    pub fn housekeeping(&self, state_dir: &Path, sweep: bool) {
        let Ok(mut learned) = self.learned.lock() else {
            return;
        };
        let now = crate::events::monotonic_ns();
        learned.collect(now);
        if sweep {
            learned.sweep_unknown(now);
        }
        let tcp_refused = self.tcp_refused.load(Ordering::Relaxed);
        if learned.dirty || self.tcp_refused_written.load(Ordering::Relaxed) != tcp_refused {
            self.tcp_refused_written
                .store(tcp_refused, Ordering::Relaxed);
            learned.dirty = false;
            let rows: Vec<NamesRow> = learned
                .names()
                .into_iter()
                .map(|(policy_id, ip, names)| NamesRow {
                    policy_id,
                    ip,
                    names,
                })
                .collect();
            if let Ok(bytes) = serde_json::to_vec(&rows) {
                write_state(state_dir, NAMES_FILE, &bytes);
            }
            let stats = DnsStats {
                evicted: learned.evicted,
                allow_map_full: learned.full,
                learned: rows.len(),
                policy_quota_evicted: learned.quota_evicted,
                share_refused: learned.share_refused,
                tcp_refused,
            };
            if let Ok(bytes) = serde_json::to_vec(&stats) {
                write_state(state_dir, STATS_FILE, &bytes);
            }
        }
    }
}

/// The upstream servers: `"system"` (the host's /etc/resolv.conf) or addresses. The
/// broker's outbound resolver uses the same list.
pub(crate) fn upstream_servers(config: &Config) -> Result<Vec<SocketAddr>, DnsError> {
    let mut servers = Vec::new();
    for u in &config.dns.upstreams {
        if u == "system" {
            servers.extend(upstream::system_servers()?);
            continue;
        }
        let sa: SocketAddr = u
            .parse()
            .or_else(|_| u.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map_err(|_| DnsError::BadUpstream(u.clone()))?;
        servers.push(sa);
    }
    Ok(servers)
}

/// Binds one UDP and one TCP listener per policy on the resolver's IPv4 address and on
/// `[::1]`, and serves them until the runtime ends.
pub async fn start(
    config: &Config,
    ids: &HashMap<String, u32>,
    bpffs_dir: &Path,
    events: crate::events::EventSender,
    local: crate::local_addrs::LocalAddrs,
) -> Result<DnsService, DnsError> {
    let learned = Arc::new(Mutex::new(Learned::open(
        bpffs_dir,
        learned::Shares {
            per_name: config.dns.max_ips_per_name as usize,
            per_policy: config.dns.max_ips_per_policy as usize,
            per_cgroup: config.dns.ips_per_cgroup() as usize,
        },
    )?));
    let mut policies = HashMap::new();
    for p in &config.policies {
        let Some(&id) = ids.get(p.name.get_ref()) else {
            continue;
        };
        policies.insert(
            id,
            PolicyDns {
                name: p.name.get_ref().clone(),
                patterns: p.domains.clone(),
                audit: p.mode == crate::config::PolicyMode::Audit,
                queries: crate::telemetry::global().dns_counters(p.name.get_ref()),
            },
        );
    }
    let listen = config.dns_listen();
    let tcp = tcp_limits(config, policies.keys().copied());
    let tcp_refused = tcp.refused.clone();
    let inflight = inflight::Inflight::new(
        policies.keys().copied(),
        config.dns.max_upstream_lookups_per_policy,
        config.dns.upstream_lookups_per_cgroup(),
    );
    let inner = Arc::new(Inner {
        upstream: upstream::Upstream::new(upstream_servers(config)?).await?,
        policies,
        deny: config.egress.deny.clone(),
        except: config.egress.exceptions.clone(),
        nat64: config.egress.nat64.clone(),
        local: local.clone(),
        min_ttl: u32::try_from(config.dns.min_ttl_secs).unwrap_or(u32::MAX),
        max_ttl: u32::try_from(config.dns.max_ttl_secs).unwrap_or(u32::MAX),
        denied_name: match config.dns.denied_name_rcode {
            DeniedRcode::Nxdomain => ResponseCode::NXDomain,
            DeniedRcode::Refused => ResponseCode::Refused,
        },
        rebinding: match config.dns.rebinding_rcode {
            RebindingRcode::Refused => ResponseCode::Refused,
            RebindingRcode::Servfail => ResponseCode::ServFail,
        },
        max_ips: (config.dns.max_ips_per_name as usize).max(1),
        learned: learned.clone(),
        cache: Mutex::new(cache::AnswerCache::new()),
        events,
        tcp,
        conns: Arc::new(conns::Conns::open(
            bpffs_dir,
            hb_common::map_names::DNS_FLOWS,
        )?),
        udp_senders: conns::Conns::open(bpffs_dir, hb_common::map_names::DNS_UDP)?,
        inflight,
        latency: ["cache", "local", "upstream"].map(|p| crate::telemetry::global().dns_latency(p)),
        map_error_log: Mutex::new((0, None)),
    });
    let generation = crate::maps::open_typed(bpffs_dir, hb_common::map_names::GENERATION)?;
    tokio::spawn(revoke_gained(inner.clone(), local.changes(), generation));
    for (&id, policy) in &inner.policies {
        let port = listen.port() + id as u16;
        for ip in [IpAddr::V4(*listen.ip()), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
            let addr = SocketAddr::new(ip, port);
            let bind_err = |source| DnsError::Bind {
                addr,
                policy: policy.name.clone(),
                source,
            };
            let udp = UdpSocket::bind(addr).await.map_err(bind_err)?;
            let tcp = TcpListener::bind(addr).await.map_err(bind_err)?;
            tokio::spawn(serve_udp(
                inner.clone(),
                id,
                Arc::new(udp),
                Some(local.clone()),
            ));
            tokio::spawn(serve_tcp(inner.clone(), id, tcp, Some(local.clone())));
        }
    }
    Ok(DnsService {
        inner,
        learned,
        tcp_refused,
        tcp_refused_written: AtomicU64::new(0),
    })
}

/// At the start (rows a previous agent left) and after each change of the host's
/// addresses: the allow entries of addresses the host now holds go, so a sandbox taught
/// one before the host gained it (an address added to an interface, a failover address
/// moved here) connects to it no longer; a cached answer holding one is judged again
/// when read ([`Inner::gained_since`]). Then the kernel's flow cache is dropped
/// (`generation`, `HB_GENERATION`): a socket admitted to such an address before (a
/// connected UDP socket) is judged in full at its next packet, since
/// `cgroup_skb/egress` passes a validated peer the host holds by no admission.
async fn revoke_gained(
    inner: Arc<Inner>,
    mut changes: tokio::sync::watch::Receiver<u64>,
    mut generation: aya::maps::Array<aya::maps::MapData, u64>,
) {
    changes.mark_changed();
    while changes.changed().await.is_ok() {
        let gone = {
            let Ok(mut learned) = inner.learned.lock() else {
                return;
            };
            learned.revoke(|ip| inner.host_own(ip))
        };
        if let Err(e) = crate::maps::bump_generation(&mut generation) {
            tracing::warn!(error = %e, "dropping the kernel's flow cache failed");
        }
        if gone > 0 {
            tracing::warn!(
                claims = gone,
                "allow entries of addresses the host now holds revoked"
            );
        }
    }
}

/// Serves one policy's queries on listeners bound elsewhere (in a pod's network
/// namespace, by `kube::netns`): the same resolver, cache and allow map as the agent's
/// own listeners; the upstream sockets stay in the agent's namespace.
#[derive(Clone)]
pub struct PodServer {
    inner: Arc<Inner>,
}

impl DnsService {
    pub fn pod_server(&self) -> PodServer {
        PodServer {
            inner: self.inner.clone(),
        }
    }
}

impl PodServer {
    /// Whether the resolver answers policy `policy_id`.
    pub fn serves(&self, policy_id: u32) -> bool {
        self.inner.policies.contains_key(&policy_id)
    }

    /// Serves `policy_id` on a bound UDP socket and TCP listener (non-blocking) on the
    /// current runtime; the tasks, and the sockets with them, end when their handles
    /// are aborted. Must run inside the runtime (`Handle::enter`).
    pub fn serve(
        &self,
        policy_id: u32,
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
    ) -> std::io::Result<Vec<tokio::task::AbortHandle>> {
        let udp = UdpSocket::from_std(udp)?;
        let tcp = TcpListener::from_std(tcp)?;
        Ok(vec![
            tokio::spawn(serve_udp(
                self.inner.clone(),
                policy_id,
                Arc::new(udp),
                None,
            ))
            .abort_handle(),
            tokio::spawn(serve_tcp(self.inner.clone(), policy_id, tcp, None)).abort_handle(),
        ])
    }
}

/// The TCP bounds from the config; the global cap stays below a quarter of the open-file
/// limit, so TCP DNS can never take the descriptors the broker and the maps need.
fn tcp_limits(config: &Config, policy_ids: impl Iterator<Item = u32>) -> TcpLimits {
    let mut global = u64::from(config.dns.max_tcp_connections);
    if let Some(nofile) = nofile_limit()
        && nofile / 4 < global
    {
        tracing::warn!(
            configured = global,
            nofile,
            "dns.max_tcp_connections lowered to a quarter of the open-file limit"
        );
        global = (nofile / 4).max(1);
    }
    let global = u32::try_from(global).unwrap_or(u32::MAX);
    let per_policy = config.dns.max_tcp_connections_per_policy.min(global);
    TcpLimits {
        idle: Duration::from_secs(config.dns.tcp_idle_timeout_secs),
        query: Duration::from_secs(config.dns.tcp_query_timeout_secs),
        global: Arc::new(Semaphore::new(global as usize)),
        per_policy: policy_ids
            .map(|id| (id, Share::new(per_policy, config.dns.per_cgroup())))
            .collect(),
        refused: Arc::new(AtomicU64::new(0)),
        refused_log: Mutex::new((0, None)),
    }
}

/// Serves one policy's UDP listener. `local`: the addresses of the listener's network
/// namespace, when known (the agent's own listeners): a query from any other source is
/// dropped with a `nonlocal_source` event, since its answer would go to that address —
/// off the host, to wherever a sandbox that forged it wanted its chosen name to go
/// (attack review 13). A pod's listeners (`None`) answer every source.
async fn serve_udp(
    inner: Arc<Inner>,
    policy_id: u32,
    sock: Arc<UdpSocket>,
    local: Option<crate::local_addrs::LocalAddrs>,
) {
    use std::os::fd::AsFd as _;
    // Where the kernel filed this listener's senders: its namespace and port.
    let netns = crate::flow_key::netns_cookie(sock.as_fd()).ok();
    let here = sock.local_addr().ok();
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let start = Instant::now();
        // Who sent it: the sandbox a cached answer's addresses are held for, and whose
        // event budget and lookups it uses past the cache.
        let cgroup_id = inner.udp_senders.sender(policy_id, netns, from, here);
        if let Some(addrs) = &local
            && !answers_source(addrs, from.ip())
        {
            inner.nonlocal_source(policy_id, cgroup_id, from.ip(), "udp");
            continue;
        }
        if let Some(reply) = inner.cached(policy_id, cgroup_id, &buf[..n], Transport::Udp) {
            let _ = sock.send_to(&reply, from).await;
            inner.answered(policy_id, AnswerPath::Cache, Some(&reply), start);
            continue;
        }
        match inner.prepare(policy_id, cgroup_id, &buf[..n], Transport::Udp) {
            Step::Reply(reply) => {
                if let Some(reply) = &reply {
                    let _ = sock.send_to(reply, from).await;
                }
                inner.answered(policy_id, AnswerPath::Local, reply.as_deref(), start);
            }
            Step::Resolve(pending) => {
                let lookup = match inner.take_lookup(&pending) {
                    Ok(lookup) => lookup,
                    Err(reply) => {
                        if let Some(reply) = &reply {
                            let _ = sock.send_to(reply, from).await;
                        }
                        inner.answered(policy_id, AnswerPath::Local, reply.as_deref(), start);
                        continue;
                    }
                };
                let (inner, sock) = (inner.clone(), sock.clone());
                tokio::spawn(async move {
                    let reply = inner.resolve(pending).await;
                    drop(lookup);
                    if let Some(reply) = &reply {
                        let _ = sock.send_to(reply, from).await;
                    }
                    inner.answered(policy_id, AnswerPath::Upstream, reply.as_deref(), start);
                });
            }
        }
    }
}

/// Whether the resolver answers a query from `source` on a listener in the namespace
/// whose addresses are `local`: only from an address of that namespace (a sandbox's
/// query always comes from one, unless its source was forged).
fn answers_source(local: &crate::local_addrs::LocalAddrs, source: IpAddr) -> bool {
    local.contains(source)
}

/// Longest pause after failed accepts (EMFILE and the like), doubling from 10 ms.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves one policy's TCP listener; `local` as in [`serve_udp`].
async fn serve_tcp(
    inner: Arc<Inner>,
    policy_id: u32,
    listener: TcpListener,
    local: Option<crate::local_addrs::LocalAddrs>,
) {
    let policy = inner
        .policies
        .get(&policy_id)
        .map(|p| p.name.clone())
        .unwrap_or_default();
    let mut backoff = Duration::ZERO;
    let mut last_error_log: Option<Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = Duration::ZERO;
                accepted
            }
            Err(e) => {
                // The connection stays queued; retrying at once spun a core while the
                // error (no descriptor left) lasted.
                backoff = (backoff * 2).clamp(Duration::from_millis(10), ACCEPT_BACKOFF_MAX);
                let now = Instant::now();
                if last_error_log.is_none_or(|t| now.duration_since(t) >= LOG_INTERVAL) {
                    tracing::warn!(error = %e, policy = %crate::events::Escaped(&policy), "TCP DNS accept failed; backing off");
                    last_error_log = Some(now);
                }
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        if let Some(addrs) = &local
            && !answers_source(addrs, peer.ip())
        {
            drop(stream);
            inner.nonlocal_source(policy_id, 0, peer.ip(), "tcp");
            continue;
        }
        let Some(ticket) = inner.admit_tcp(policy_id, &policy, &stream, peer) else {
            drop(stream);
            inner.tcp.refused(&policy);
            continue;
        };
        tokio::spawn(serve_tcp_conn(inner.clone(), policy_id, stream, ticket));
    }
}

/// A TCP connection's slot of its cgroup in its policy's pool, and one of all policies'.
type TcpSlots = (Slot<u64>, OwnedSemaphorePermit);

/// An admitted TCP connection's kernel record and slots, given back when it ends.
struct TcpTicket {
    conns: Arc<conns::Conns>,
    key: FlowKey,
    /// The connection's sandbox, from the kernel's record.
    cgroup_id: u64,
    _slots: TcpSlots,
}

impl Drop for TcpTicket {
    fn drop(&mut self) {
        self.conns.forget(&self.key);
    }
}

impl Inner {
    /// Admits an accepted TCP connection: its caller from the kernel's record (none, or
    /// one of another policy: closed), a slot of the caller's cgroup in its policy's
    /// pool (the cgroup has its share: closed with a `dns_cgroup_busy` event), then of
    /// the policy in the pool of all. `None` closes it.
    fn admit_tcp(
        &self,
        policy_id: u32,
        policy: &str,
        stream: &TcpStream,
        peer: SocketAddr,
    ) -> Option<TcpTicket> {
        use std::os::fd::AsFd as _;
        let local = stream.local_addr().ok()?;
        let key = crate::flow_key::key_of_accepted(stream.as_fd(), peer, local)?;
        let caller = self.conns.find(&key);
        let Some(caller) = caller.filter(|c| c.policy_id == policy_id) else {
            // Not redirected by the kernel for this port: no cgroup to hold to its share.
            self.conns.forget(&key);
            return None;
        };
        let slots = match self.tcp.admit(policy_id, caller.cgroup_id) {
            Ok(slots) => slots,
            Err(refused) => {
                self.conns.forget(&key);
                if refused == Refused::Share {
                    self.cgroup_busy(policy, &caller);
                }
                return None;
            }
        };
        Some(TcpTicket {
            conns: self.conns.clone(),
            key,
            cgroup_id: caller.cgroup_id,
            _slots: slots,
        })
    }

    /// Reports a query dropped because its source is not an address of this host.
    fn nonlocal_source(&self, policy_id: u32, cgroup_id: u64, source: IpAddr, protocol: &str) {
        let policy = self
            .policies
            .get(&policy_id)
            .map_or("", |d| d.name.as_str());
        let record = EventRecord {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            hook: "dns".into(),
            verdict: "deny".into(),
            reason: "nonlocal_source".into(),
            policy: policy.into(),
            cgroup_id,
            cgroup: None,
            pid: 0,
            tid: 0,
            comm: String::new(),
            family: match source {
                IpAddr::V6(_) => "ipv6".into(),
                IpAddr::V4(_) => "ipv4".into(),
            },
            protocol: protocol.into(),
            dst: source.to_string(),
            port: 0,
            name: None,
            suppressed: 0,
            detail: Some("query from an address that is not this host's: not answered".into()),
        };
        // A full channel drops the event rather than delaying the listener.
        self.events.try_send(record);
    }

    /// Reports a TCP connection closed because its cgroup holds its share already.
    fn cgroup_busy(&self, policy: &str, caller: &conns::Caller) {
        let record = EventRecord {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            hook: "dns".into(),
            verdict: "deny".into(),
            reason: "dns_cgroup_busy".into(),
            policy: policy.into(),
            cgroup_id: caller.cgroup_id,
            cgroup: None,
            pid: 0,
            tid: 0,
            comm: String::new(),
            family: match caller.named.ip() {
                IpAddr::V6(_) => "ipv6".into(),
                IpAddr::V4(_) => "ipv4".into(),
            },
            protocol: "tcp".into(),
            dst: caller.named.ip().to_string(),
            port: caller.named.port(),
            name: None,
            suppressed: 0,
            detail: Some("dns.max_tcp_connections_per_cgroup reached".into()),
        };
        // A full channel drops the event rather than delaying the accept loop.
        self.events.try_send(record);
    }
}

/// Reads one length-prefixed query (RFC 7766): up to the idle timeout for its first byte,
/// then the query timeout for the rest. `None` ends the connection.
async fn read_tcp_query(limits: &TcpLimits, stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    match tokio::time::timeout(limits.idle, stream.read(&mut len[..1])).await {
        Ok(Ok(1)) => {}
        _ => return None,
    }
    let rest = async {
        stream.read_exact(&mut len[1..]).await?;
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut query).await?;
        Ok::<_, std::io::Error>(query)
    };
    tokio::time::timeout(limits.query, rest).await.ok()?.ok()
}

/// RFC 7766: length-prefixed messages, several per connection, idle and query timeouts.
/// `ticket` holds the connection's slots and record, given back when it ends.
async fn serve_tcp_conn(
    inner: Arc<Inner>,
    policy_id: u32,
    mut stream: TcpStream,
    ticket: TcpTicket,
) {
    loop {
        let Some(query) = read_tcp_query(&inner.tcp, &mut stream).await else {
            return;
        };
        let start = Instant::now();
        let (path, reply) = match inner.cached(policy_id, ticket.cgroup_id, &query, Transport::Tcp)
        {
            Some(reply) => (AnswerPath::Cache, Some(reply)),
            None => match inner.prepare(policy_id, ticket.cgroup_id, &query, Transport::Tcp) {
                Step::Reply(r) => (AnswerPath::Local, r),
                Step::Resolve(pending) => match inner.take_lookup(&pending) {
                    Ok(_lookup) => (AnswerPath::Upstream, inner.resolve(pending).await),
                    Err(r) => (AnswerPath::Local, r),
                },
            },
        };
        inner.answered(policy_id, path, reply.as_deref(), start);
        let Some(reply) = reply else {
            return;
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&n.to_be_bytes());
        framed.extend_from_slice(&reply);
        // A client that does not read its reply is cut off like one that stalls a query.
        let write = tokio::time::timeout(inner.tcp.query, stream.write_all(&framed));
        if !matches!(write.await, Ok(Ok(()))) {
            return;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

/// Refused names recorded at most per message hb does not answer
/// ([`Inner::record_unanswered`]).
const UNANSWERED_NAMES: usize = 4;

/// What [`Inner::prepare`] decided.
enum Step {
    /// Send this (or nothing).
    Reply(Option<Vec<u8>>),
    /// Needs the upstream.
    Resolve(Pending),
}

/// A query waiting for the upstream.
struct Pending {
    request: Message,
    policy_id: u32,
    /// The sender's sandbox (0: unattributed), for its events and its share of lookups.
    cgroup_id: u64,
    name: String,
    qtype: RecordType,
    transport: Transport,
}

/// The event of a lookup refused past a share (its time is set by the caller).
fn lookup_busy(policy: &str, p: &Pending, busy: inflight::Busy) -> EventRecord {
    EventRecord {
        time: String::new(),
        hook: "dns".into(),
        verdict: "deny".into(),
        reason: busy.reason().into(),
        policy: policy.into(),
        cgroup_id: p.cgroup_id,
        cgroup: None,
        pid: 0,
        tid: 0,
        comm: String::new(),
        family: "ipv4".into(),
        protocol: match p.transport {
            Transport::Udp => "udp".into(),
            Transport::Tcp => "tcp".into(),
        },
        dst: String::new(),
        port: 0,
        name: Some(p.name.clone()),
        suppressed: 0,
        detail: Some(busy.detail().into()),
    }
}

/// A reply skeleton for `request` with `rc`.
fn reply(request: &Message, rc: ResponseCode) -> Message {
    let mut m = Message::response(request.metadata.id, request.metadata.op_code);
    m.metadata.recursion_desired = request.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.response_code = rc;
    m.queries = request.queries.clone();
    m
}

/// Wire form of `m`, truncated (TC) when it exceeds what a UDP client can take.
fn encode(request: &Message, m: Message, transport: Transport) -> Option<Vec<u8>> {
    let bytes = m.to_vec().ok()?;
    // Classic UDP limit without EDNS; the client retries over TCP on TC.
    let limit = request
        .edns
        .as_ref()
        .map_or(512, |e| usize::from(e.max_payload()).max(512));
    if transport == Transport::Udp && bytes.len() > limit {
        return m.truncate().to_vec().ok();
    }
    Some(bytes)
}

/// Whether an answer address lies in a deny range or is one of the host's own addresses
/// (`local`), and no exception carves it out; IPv6 addresses that carry an IPv4 one
/// (mapped, NAT64 under `egress.nat64_prefixes`) are judged by it, as the kernel does.
pub(crate) fn denied(
    deny: &[IpNet],
    except: &[IpNet],
    nat64: &[Ipv6Net],
    local: &crate::local_addrs::LocalAddrs,
    ip: IpAddr,
) -> bool {
    crate::egress::denied(deny, except, nat64, ip)
        || crate::egress::host_own(local, except, nat64, ip)
}

impl Inner {
    /// Whether the host holds one of a cached answer's addresses now (gained since the
    /// answer was validated: an address added to an interface, a failover address moved
    /// here): the answer is looked up and judged again, and refused. The deny ranges do
    /// not change while the agent runs; the host's addresses do.
    fn gained_since(&self, entry: &cache::CachedAnswer) -> bool {
        entry.addrs.iter().any(|&ip| self.host_own(ip))
    }

    /// Whether `ip` is one of the host's addresses now ([`crate::egress::host_own`]).
    fn host_own(&self, ip: IpAddr) -> bool {
        crate::egress::host_own(&self.local, &self.except, &self.nat64, ip)
    }

    /// Teaches the kernel `addrs` for `who`, each judged once more under the lock
    /// [`revoke_gained`] takes: an address the host gained between the answer's judgement
    /// and this learn (whose revocation may have run in between, finding nothing) is
    /// never written. `None` for that, or a poisoned lock: no answer goes out.
    fn learn_current(
        &self,
        who: Learner,
        name: &str,
        addrs: &[IpAddr],
        expires: u64,
    ) -> Option<Result<(), LearnError>> {
        let mut learned = self.learned.lock().ok()?;
        if addrs.iter().any(|&ip| self.host_own(ip)) {
            return None;
        }
        Some(learned.learn(who, name, addrs, expires))
    }

    /// Counts an answered (or dropped) query and its latency.
    fn answered(&self, policy_id: u32, path: AnswerPath, reply: Option<&[u8]>, start: Instant) {
        if let Some(p) = self.policies.get(&policy_id) {
            p.queries
                .count(crate::telemetry::DnsResult::of_reply(reply));
        }
        self.latency[path as usize].observe(start.elapsed().as_secs_f64());
    }

    /// Reports a refusal of a query by `cgroup_id` (0: unattributed), budgeted per
    /// policy and cgroup by the event writer.
    fn event(
        &self,
        policy: &str,
        cgroup_id: u64,
        reason: &str,
        verdict: &str,
        name: &str,
        dst: Option<IpAddr>,
    ) {
        let record = EventRecord {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            hook: "dns".into(),
            verdict: verdict.into(),
            reason: reason.into(),
            policy: policy.into(),
            cgroup_id,
            cgroup: None,
            pid: 0,
            tid: 0,
            comm: String::new(),
            family: match dst {
                Some(IpAddr::V6(_)) => "ipv6".into(),
                _ => "ipv4".into(),
            },
            protocol: "dns".into(),
            dst: dst.map(|d| d.to_string()).unwrap_or_default(),
            port: 0,
            name: Some(name.to_owned()),
            suppressed: 0,
            detail: None,
        };
        // A full channel drops the event rather than delaying the answer.
        self.events.try_send(record);
    }

    /// A place for `p`'s upstream lookup in its cgroup's and policy's shares, or the
    /// reply that refuses it (SERVFAIL: a temporary condition, the client may retry)
    /// after a `dns_cgroup_busy` (or `dns_policy_busy`) event naming the name.
    fn take_lookup(&self, p: &Pending) -> Result<inflight::Lookup, Option<Vec<u8>>> {
        self.inflight
            .take(p.policy_id, p.cgroup_id)
            .map_err(|busy| {
                let policy = self
                    .policies
                    .get(&p.policy_id)
                    .map_or("", |d| d.name.as_str());
                let mut record = lookup_busy(policy, p, busy);
                record.time =
                    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
                // A full channel drops the event rather than delaying the answer.
                self.events.try_send(record);
                encode(
                    &p.request,
                    reply(&p.request, ResponseCode::ServFail),
                    p.transport,
                )
            })
    }

    /// A SERVFAIL reply to `request` (a temporary condition: the client may retry).
    fn servfail(&self, request: &Message, transport: Transport) -> Option<Vec<u8>> {
        encode(request, reply(request, ResponseCode::ServFail), transport)
    }

    /// Reports an answer refused because its addresses could not all be allowed: a
    /// `dns_allow_share_full` event when the sandbox holds its share of its policy's
    /// allow map and none of its own addresses could make room, `dns_allow_map_full`
    /// when the map itself is full (other policies' shares together fill it) — naming
    /// the name and the address that did not fit, budgeted per policy and cgroup like
    /// the other refusals (never a log line per query, which a sandbox could repeat).
    ///
    /// A map write that failed for another reason than a full map (a replaced pin, a
    /// kernel refusal) reaches the event the same way, and its cause the log, at most
    /// once per [`LOG_INTERVAL`] with the count since.
    fn allow_full(&self, policy: &str, cgroup_id: u64, name: &str, error: &LearnError) {
        let (reason, addr) = match error {
            LearnError::Share { addr, .. } => ("dns_allow_share_full", *addr),
            LearnError::MapFull { addr, source } => {
                self.map_error(source);
                ("dns_allow_map_full", *addr)
            }
        };
        self.event(policy, cgroup_id, reason, "deny", name, Some(addr));
    }

    /// Logs why an allow-map write failed, at most once per [`LOG_INTERVAL`], unless the
    /// map was only full (E2BIG: the event says all there is).
    fn map_error(&self, source: &aya::maps::MapError) {
        if let aya::maps::MapError::SyscallError(e) = source
            && e.io_error.raw_os_error() == Some(libc::E2BIG)
        {
            return;
        }
        let Ok(mut log) = self.map_error_log.lock() else {
            return;
        };
        log.0 += 1;
        let now = Instant::now();
        if log.1.is_none_or(|t| now.duration_since(t) >= LOG_INTERVAL) {
            tracing::error!(
                count = log.0,
                error = %crate::error_chain(source),
                "allow map write failed: answering SERVFAIL"
            );
            *log = (0, Some(now));
        }
    }

    /// The fast path: a common-shape query for an allowed name whose validated answer is
    /// cached, answered from pre-encoded bytes after the allow map is confirmed to hold
    /// its addresses. `None` sends the query down the general path ([`Inner::prepare`]),
    /// which judges it the same way and also handles everything unusual.
    fn cached(
        &self,
        policy_id: u32,
        cgroup_id: u64,
        query: &[u8],
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let mut q = wire::parse_query(query)?;
        let qtype = RecordType::from(q.qtype);
        if qtype != RecordType::A && qtype != RecordType::AAAA {
            return None;
        }
        let policy = self.policies.get(&policy_id)?;
        // The name moves into the cache key (the reply needs only the raw question).
        let key = (policy_id, std::mem::take(&mut q.name), qtype);
        if !names::allowed(&policy.patterns, &key.1) {
            return None;
        }
        let now = std::time::Instant::now();
        let cache = self.cache.lock().ok()?;
        let entry = cache
            .get(&key)
            .filter(|e| e.until > now && !self.gained_since(e))?;
        let wire = entry.wire.as_ref()?;
        let left = entry.until.saturating_duration_since(now);
        let ttl = u32::try_from(left.as_secs()).unwrap_or(u32::MAX).max(1);
        let expires = crate::events::monotonic_ns() + u64::from(ttl) * 1_000_000_000;
        let who = Learner {
            policy_id,
            cgroup_id,
        };
        let learned = self
            .learn_current(who, &key.1, &entry.addrs, expires)?
            .is_ok();
        if !learned {
            return None;
        }
        wire.reply(&q, ttl, transport == Transport::Udp)
    }

    /// Everything that needs no upstream: parsing, policy, and answers still cached.
    /// Cheap and never waits, so listeners run it inline and spawn only real lookups.
    fn prepare(&self, policy_id: u32, cgroup_id: u64, query: &[u8], transport: Transport) -> Step {
        let request = match Message::from_vec(query) {
            Ok(m) => m,
            Err(_) if query.len() >= 12 => {
                let id = u16::from_be_bytes([query[0], query[1]]);
                return Step::Reply(
                    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                        .to_vec()
                        .ok(),
                );
            }
            Err(_) => return Step::Reply(None),
        };
        if request.metadata.message_type != MessageType::Query {
            return Step::Reply(None);
        }
        let Some(policy) = self.policies.get(&policy_id) else {
            return Step::Reply(encode(
                &request,
                reply(&request, ResponseCode::Refused),
                transport,
            ));
        };
        if request.metadata.op_code != OpCode::Query {
            self.record_unanswered(policy, cgroup_id, &request);
            return Step::Reply(encode(
                &request,
                reply(&request, ResponseCode::NotImp),
                transport,
            ));
        }
        let [question] = request.queries.as_slice() else {
            self.record_unanswered(policy, cgroup_id, &request);
            return Step::Reply(encode(
                &request,
                reply(&request, ResponseCode::FormErr),
                transport,
            ));
        };
        let Some(name) = names::hostname(question.name().iter()) else {
            // Not a hostname (a dot, NUL or other odd byte inside a label): no pattern
            // can speak for it, so it is denied in audit mode too.
            let shown = question.name().to_ascii();
            self.event(
                &policy.name,
                cgroup_id,
                "name_malformed",
                "deny",
                &shown,
                None,
            );
            return Step::Reply(encode(
                &request,
                reply(&request, self.denied_name),
                transport,
            ));
        };
        if !names::allowed(&policy.patterns, &name) {
            let verdict = if policy.audit { "audit" } else { "deny" };
            self.event(
                &policy.name,
                cgroup_id,
                "name_not_allowed",
                verdict,
                &name,
                None,
            );
            if !policy.audit {
                return Step::Reply(encode(
                    &request,
                    reply(&request, self.denied_name),
                    transport,
                ));
            }
        }
        let qtype = question.query_type();
        if qtype != RecordType::A && qtype != RecordType::AAAA {
            return Step::Reply(encode(
                &request,
                reply(&request, ResponseCode::Refused),
                transport,
            ));
        }
        let key = (policy_id, name, qtype);
        let hit = self.cache.lock().ok().and_then(|c| {
            c.get(&key)
                .filter(|e| e.until > std::time::Instant::now() && !self.gained_since(e))
                .cloned()
        });
        if hit
            .as_ref()
            .is_some_and(|e| e.rcode == ResponseCode::NXDomain)
        {
            // The name does not exist: nothing to teach the kernel.
            return Step::Reply(encode(
                &request,
                reply(&request, ResponseCode::NXDomain),
                transport,
            ));
        }
        if let Some(entry) = hit {
            let left = entry
                .until
                .saturating_duration_since(std::time::Instant::now());
            let ttl = u32::try_from(left.as_secs()).unwrap_or(u32::MAX).max(1);
            // The allow map already covers the cached addresses until `until`; learning
            // again costs no syscall and puts back anything evicted meanwhile.
            let expires = crate::events::monotonic_ns() + u64::from(ttl) * 1_000_000_000;
            let who = Learner {
                policy_id,
                cgroup_id,
            };
            let Some(learned) = self.learn_current(who, &key.1, &entry.addrs, expires) else {
                return Step::Reply(self.servfail(&request, transport));
            };
            if let Err(e) = &learned {
                self.allow_full(&policy.name, cgroup_id, &key.1, e);
                return Step::Reply(self.servfail(&request, transport));
            }
            let mut m = reply(&request, ResponseCode::NoError);
            m.answers = entry.records;
            for r in &mut m.answers {
                r.ttl = ttl;
            }
            return Step::Reply(encode(&request, m, transport));
        }
        Step::Resolve(Pending {
            request,
            policy_id,
            cgroup_id,
            name: key.1,
            qtype,
            transport,
        })
    }

    /// Records the refused names of a message hb does not answer (more than one question,
    /// or an opcode other than QUERY: an UPDATE's zone, a NOTIFY's), as if each had been
    /// asked alone: a refused name must not go unrecorded because the message around it
    /// was refused as a whole. At most [`UNANSWERED_NAMES`] per message, so one message
    /// cannot put thousands of events in the channel every sandbox's refusals share.
    fn record_unanswered(&self, policy: &PolicyDns, cgroup_id: u64, request: &Message) {
        let verdict = if policy.audit { "audit" } else { "deny" };
        let refused =
            request
                .queries
                .iter()
                .filter_map(|q| match names::hostname(q.name().iter()) {
                    None => Some(("name_malformed", "deny", q.name().to_ascii())),
                    Some(name) if !names::allowed(&policy.patterns, &name) => {
                        Some(("name_not_allowed", verdict, name))
                    }
                    Some(_) => None,
                });
        for (reason, verdict, name) in refused.take(UNANSWERED_NAMES) {
            self.event(&policy.name, cgroup_id, reason, verdict, &name, None);
        }
    }

    /// The lookup itself: forward, validate, teach the kernel, answer.
    async fn resolve(&self, p: Pending) -> Option<Vec<u8>> {
        let Pending {
            request,
            policy_id,
            cgroup_id,
            name,
            qtype,
            transport,
        } = p;
        let policy = self.policies.get(&policy_id)?;
        let answer = |rc| encode(&request, reply(&request, rc), transport);
        let fqdn = match Name::from_ascii(format!("{name}.")) {
            Ok(n) => n,
            Err(_) => return answer(ResponseCode::FormErr),
        };
        let upstream_reply = match self.upstream.query(&fqdn, qtype).await {
            Ok(m) => m,
            Err(_) => return answer(ResponseCode::ServFail),
        };
        match upstream_reply.metadata.response_code {
            ResponseCode::NoError => {}
            ResponseCode::NXDomain => {
                // Cached like NODATA (RFC 2308): agents retry a mistyped or vanished
                // name in a loop, and each retry went upstream.
                let ttl = self.negative_ttl(&upstream_reply.authorities);
                self.remember(
                    (policy_id, name, qtype),
                    CachedAnswer {
                        rcode: ResponseCode::NXDomain,
                        records: Vec::new(),
                        addrs: Vec::new(),
                        wire: None,
                        until: std::time::Instant::now() + Duration::from_secs(u64::from(ttl)),
                    },
                );
                return answer(ResponseCode::NXDomain);
            }
            _ => return answer(ResponseCode::ServFail),
        }
        // The answer section's part that answers the question: the CNAME chain, if any,
        // and the addresses of the asked type it leads to; nothing else goes on.
        let Some(mut records) = chain::question_chain(upstream_reply.answers, &fqdn, qtype) else {
            return answer(ResponseCode::ServFail);
        };
        let mut addrs = Vec::new();
        let mut ttl = self.max_ttl;
        for r in &records {
            let ip = match &r.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                _ => {
                    // A CNAME of the chain: the answer lasts no longer than its links
                    // (RFC 2181 §5.2), or the address outlives the alias that led to it.
                    ttl = ttl.min(r.ttl);
                    continue;
                }
            };
            if denied(&self.deny, &self.except, &self.nat64, &self.local, ip) {
                self.event(
                    &policy.name,
                    cgroup_id,
                    "dns_rebinding",
                    "deny",
                    &name,
                    Some(ip),
                );
                if !policy.audit {
                    return answer(self.rebinding);
                }
                continue;
            }
            ttl = ttl.min(r.ttl);
            addrs.push(ip);
        }
        // NODATA (the name exists, with no address of this type; perhaps only a CNAME):
        // cached like an answer, for as long as the upstream's SOA allows (RFC 2308: the
        // smaller of its TTL and MINIMUM). Clients ask A and AAAA together, so without
        // this every lookup of an IPv4-only name went upstream for its AAAA half.
        let nodata = records
            .iter()
            .all(|r| !matches!(r.data, RData::A(_) | RData::AAAA(_)));
        let ttl = if nodata {
            self.negative_ttl(&upstream_reply.authorities)
        } else {
            ttl.clamp(self.min_ttl, self.max_ttl)
        };
        if addrs.len() > self.max_ips {
            // Hand out only what the allow map will hold for this name.
            addrs.truncate(self.max_ips);
            records.retain(|r| match &r.data {
                RData::A(a) => addrs.contains(&IpAddr::V4(a.0)),
                RData::AAAA(a) => addrs.contains(&IpAddr::V6(a.0)),
                _ => true,
            });
        }
        if !addrs.is_empty() {
            let expires = crate::events::monotonic_ns() + u64::from(ttl) * 1_000_000_000;
            let who = Learner {
                policy_id,
                cgroup_id,
            };
            let Some(result) = self.learn_current(who, &name, &addrs, expires) else {
                return answer(ResponseCode::ServFail);
            };
            if let Err(e) = result {
                self.allow_full(&policy.name, cgroup_id, &name, &e);
                return answer(ResponseCode::ServFail);
            }
        }
        for r in &mut records {
            r.ttl = ttl;
        }
        if !addrs.is_empty() || nodata {
            self.remember(
                (policy_id, name, qtype),
                CachedAnswer {
                    rcode: ResponseCode::NoError,
                    wire: wire::EncodedAnswers::encode(&records),
                    records: records.clone(),
                    addrs,
                    until: std::time::Instant::now() + Duration::from_secs(u64::from(ttl)),
                },
            );
        }
        let mut m = reply(&request, ResponseCode::NoError);
        m.answers = records;
        encode(&request, m, transport)
    }

    /// How long a negative answer (NXDOMAIN, NODATA) stays cached: the smaller of the
    /// upstream SOA's TTL and MINIMUM (RFC 2308), `min_ttl` without one, clamped to the
    /// configured bounds.
    fn negative_ttl(&self, authorities: &[hickory_proto::rr::Record]) -> u32 {
        authorities
            .iter()
            .find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })
            .unwrap_or(self.min_ttl)
            .clamp(self.min_ttl, self.max_ttl)
    }

    fn remember(&self, key: cache::Key, entry: CachedAnswer) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, entry);
        }
    }
}

#[cfg(test)]
mod source_tests {
    use super::*;
    use crate::local_addrs::{LocalAddrs, Set};

    /// The resolver's own listeners answer this host's addresses and nothing else: a
    /// query whose source a sandbox forged (the attacker's host) gets no answer there.
    #[test]
    fn the_resolver_answers_only_this_hosts_addresses() {
        let local = LocalAddrs::fixed(Set::from_entries([
            ("127.0.0.1".parse().expect("address"), 8, true),
            ("::1".parse().expect("address"), 128, true),
            ("2001:db8::20".parse().expect("address"), 64, false),
        ]));
        for ok in [
            "127.0.0.1",
            "127.0.0.2",
            "::1",
            "2001:db8::20",
            "::ffff:127.0.0.1",
        ] {
            assert!(answers_source(&local, ok.parse().expect("address")), "{ok}");
        }
        for forged in [
            "2001:db8:66::66",
            "198.51.100.66",
            "2001:db8::21",
            "::ffff:198.51.100.66",
        ] {
            assert!(
                !answers_source(&local, forged.parse().expect("address")),
                "{forged}"
            );
        }
    }
}
