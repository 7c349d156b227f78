//! Types shared by hb's eBPF programs (`hb-ebpf`) and its agent (`hb-agent`).
//!
//! Everything a map holds, every record the kernel sends up and every name or size both
//! sides must agree on lives here, so the two sides cannot drift. Every type is
//! `#[repr(C)]`, has no implicit padding (explicit `_pad` fields) and carries a size
//! assertion. Addresses are stored as bytes in network order, exactly as they appear on
//! the wire and in `bpf_sock_addr.user_ip4/user_ip6`.
//!
//! This crate must never depend on `std`: the kernel side links it.
#![no_std]

use core::mem::size_of;

/// Names of the maps, as the ELF object declares them and as they are pinned under
/// `<bpffs_dir>/maps/`. The kernel keeps 15 characters of a map's name, so none is longer.
pub mod map_names {
    /// `u64` cgroup id → [`Enrollment`](crate::Enrollment).
    pub const ENROLLED: &str = "HB_ENROLLED";
    /// Array indexed by policy id → [`PolicyInfo`](crate::PolicyInfo).
    pub const POLICIES: &str = "HB_POLICIES";
    /// [`Allow4Key`](crate::Allow4Key) → expiry, monotonic ns (`u64`).
    pub const ALLOW4: &str = "HB_ALLOW4";
    /// [`Allow6Key`](crate::Allow6Key) → expiry, monotonic ns (`u64`).
    pub const ALLOW6: &str = "HB_ALLOW6";
    /// LPM trie of [`PolicyCidr4`](crate::PolicyCidr4) → a [`rule`](crate::rule) value:
    /// each policy's deny ranges, exceptions and static CIDRs compiled into one trie.
    pub const RULES4: &str = "HB_RULES4";
    /// LPM trie of [`PolicyCidr6`](crate::PolicyCidr6) → a [`rule`](crate::rule) value.
    pub const RULES6: &str = "HB_RULES6";
    /// Per-CPU array of `u64`, indexed by [`Counter`](crate::Counter).
    pub const COUNTERS: &str = "HB_COUNTERS";
    /// Per-CPU hash: `u64` cgroup id → [`CgroupStats`](crate::CgroupStats).
    pub const CG_STATS: &str = "HB_CG_STATS";
    /// Ring buffer of [`Event`](crate::Event) records.
    pub const EVENTS: &str = "HB_EVENTS";
    /// Array of one `u64`: bumped by user space after every change to enrollments,
    /// policies or rules, so kernel-side caches know when to forget.
    pub const GENERATION: &str = "HB_GENERATION";
    /// Per-CPU array of one [`FlowCache`](crate::FlowCache): `cgroup_skb/egress`'s memory
    /// of the last flow it passed. (Named anew when `FlowCache` gained the socket cookie:
    /// an agent adopting the pins of an older one must not reuse a map whose values are
    /// shorter, which the verifier would refuse.)
    pub const SKB_CACHE: &str = "HB_SKB_FLOWS";
    /// Array of one [`DnsConfig`](crate::DnsConfig): where sandbox DNS is redirected.
    pub const DNS: &str = "HB_DNS";
    /// Socket storage (`BPF_MAP_TYPE_SK_STORAGE`): each redirected socket's own
    /// [`DnsOrig`](crate::DnsOrig), the nameserver it really addressed (restored in
    /// recvmsg/getpeername) and who asked. The kernel frees a record with its socket, so
    /// no socket can push out another's: the LRU it replaced ([`DNS_ORIG_RETIRED`]), one
    /// for the whole node, let a sandbox that opened and closed redirected sockets evict
    /// every other tenant's records. Cannot be listed (as [`SOCK_PEER`]).
    pub const DNS_ORIG: &str = "HB_DNS_NAMED";
    /// The LRU hash (socket cookie → [`DnsOrig`](crate::DnsOrig)) [`DNS_ORIG`] replaced.
    pub const DNS_ORIG_RETIRED: &str = "HB_DNS_REDIR";
    /// LRU hash: [`FlowKey`](crate::FlowKey) (the client end of a TCP connection to the
    /// resolver, as the resolver sees it) → [`DnsOrig`](crate::DnsOrig). Written by
    /// `sock_ops` when a redirected TCP DNS socket sends its SYN, read by the resolver
    /// when it accepts (its cgroup's share of the TCP slots), removed when it closes or
    /// the client end closes (`sock_ops`' state callback: a connection the resolver never
    /// accepted once left its record for good, attack review 51).
    pub const DNS_FLOWS: &str = "HB_DNS_CONNS";
    /// LRU hash: [`FlowKey`](crate::FlowKey) (the client end of a redirected UDP DNS
    /// socket, as the resolver sees its datagrams) → [`DnsOrig`](crate::DnsOrig).
    /// Written by `cgroup_skb/egress` on a redirected UDP socket's first datagram to the
    /// resolver; read by the resolver to charge a query to its sandbox (event budget,
    /// upstream lookups). Never removed: a port reused by another socket is filed anew
    /// by that socket's first datagram.
    pub const DNS_UDP: &str = "HB_DNS_UDP";
    /// Socket storage (`BPF_MAP_TYPE_SK_STORAGE`): each socket's own
    /// [`SockDest`](crate::SockDest), the peer the socket hooks last admitted for it (or,
    /// for an accepted connection of a policy with `inbound = true`, its client).
    /// `cgroup_skb` passes a packet of that socket to or from exactly that address without
    /// judging it again, so established flows outlive the expiry of the validated address
    /// they were opened to. The kernel frees a record with its socket, so no socket can
    /// push out another's (as one LRU shared by every sandbox once let a flood do). User
    /// space can read a record only through a descriptor of its socket: the map cannot be
    /// listed or counted. Pinned, so a restarted agent's programs read what its
    /// predecessor's recorded for the sockets still open.
    pub const SOCK_PEER: &str = "HB_SOCK_PEER";
    /// The LRU hash (socket cookie → [`SockDest`](crate::SockDest)) [`SOCK_PEER`]
    /// replaced. A pin of it left by an older agent is removed at load (see [`RETIRED`]).
    pub const SOCK_DEST_RETIRED: &str = "HB_SOCK_DEST";
    /// Pins of maps no program uses any more; the agent removes them when it loads (the
    /// programs of an older agent that still run keep their map until they are replaced).
    pub const RETIRED: [&str; 3] = [SOCK_DEST_RETIRED, DNS_ORIG_RETIRED, GUARD_ORIG_RETIRED];
    /// LRU hash: [`EventRateKey`](crate::EventRateKey) (cgroup id and direction) →
    /// [`EventRate`](crate::EventRate), the cgroup's event budget for the current window.
    /// Refusals past it are enforced and counted; a destination not yet reported in the
    /// window is still named ([`EVENT_SEEN`], [`EVENT_HELD`]). (Named anew when
    /// `EventRate` gained `distinct`: an agent adopting older pins must not reuse a map
    /// whose values are shorter.)
    pub const EVENT_RATE: &str = "HB_EVENT_BUDGET";
    /// LRU hash: [`EventSeenKey`](crate::EventSeenKey) (cgroup, hook, protocol,
    /// destination, port) → when it was last reported (`bpf_ktime_get_ns`). Past the
    /// cgroup's burst, a destination not reported within the window is still reported
    /// on its own (see [`EventRate::distinct`](crate::EventRate)).
    pub const EVENT_SEEN: &str = "HB_EVENT_SEEN";
    /// Hash: [`EventSeenKey`](crate::EventSeenKey) → [`HeldEvent`](crate::HeldEvent):
    /// destinations refused past both of a cgroup's caps, held back with their count.
    /// The agent takes them out every second and writes one event each.
    pub const EVENT_HELD: &str = "HB_EVENT_HELD";

    /// LPM trie of [`Nat64Key`](crate::Nat64Key) → the prefix length (`u32`): the NAT64
    /// prefixes (`egress.nat64_prefixes`) whose addresses are judged as the IPv4 address
    /// they embed (RFC 6052).
    pub const NAT64: &str = "HB_NAT64";

    /// Array of one [`GuardConfig`](crate::GuardConfig): where guarded connects go.
    pub const GUARD: &str = "HB_GUARD";
    /// Hash: [`GuardPortKey`](crate::GuardPortKey) (policy id, port) → 1: the TCP ports
    /// whose connects the policy sends through the guard (`guard_ports`).
    pub const GUARD_PORTS: &str = "HB_GUARD_PORTS";
    /// Socket storage (`BPF_MAP_TYPE_SK_STORAGE`): each redirected socket's own
    /// [`GuardOrig`](crate::GuardOrig), what it really addressed and who connected
    /// (restored in getpeername, copied to [`GUARD_FLOWS`] when its SYN leaves). The
    /// kernel frees a record with its socket, so no socket can push out another's: the
    /// LRU it replaced ([`GUARD_ORIG_RETIRED`]), one for the whole node and never emptied,
    /// let a sandbox that opened and reset guarded connections evict every other
    /// tenant's records (attack review 48). Cannot be listed (as [`SOCK_PEER`]).
    pub const GUARD_ORIG: &str = "HB_GUARD_NAMED";
    /// The LRU hash (socket cookie → [`GuardOrig`](crate::GuardOrig)) [`GUARD_ORIG`]
    /// replaced.
    pub const GUARD_ORIG_RETIRED: &str = "HB_GUARD_ORIG";
    /// LRU hash: [`FlowKey`](crate::FlowKey) (the client end of a connection as the
    /// guard sees it) → [`GuardOrig`](crate::GuardOrig). Written by `sock_ops` when a
    /// redirected socket sends its SYN, read by the guard when it accepts, removed when
    /// the guard closes the connection or the client end closes (`sock_ops`' state
    /// callback: a connection reset before its first byte is never accepted, and its
    /// record once stayed until a flood of them pushed out other tenants', attack review
    /// 48): the connections in flight. (Named anew when the
    /// key gained the network namespace: an older agent's pin has shorter keys.)
    pub const GUARD_FLOWS: &str = "HB_GUARD_CONNS";
    /// Hash: enrolled cgroup id → how many of [`GUARD_FLOWS`]' records its sockets filed
    /// and have not closed yet; key 0 (no cgroup's id): all cgroups together. A connect
    /// that would take a cgroup past its part of the map is refused (reason
    /// `guard_flows_full`), so no tenant's flood pushes out another's records (attack
    /// review 51). The agent removes the entries at 0 of cgroups no longer enrolled.
    pub const GUARD_FLOWS_HELD: &str = "HB_GUARD_HELD";

    /// Sock hash, socket cookie → socket, with `hb_guard_splice` attached as its
    /// stream verdict: the passed TLS connections whose bytes the kernel moves
    /// (`guard.sockmap`). Not pinned: it lives with the agent, and a socket leaves it
    /// when it closes. Not in [`ALL`] (nothing to list across agents).
    pub const GUARD_SOCKS: &str = "HB_GUARD_SOCKS";
    /// Sock hash, socket cookie → socket, no program attached: where `hb_guard_splice`
    /// finds a socket's peer. A socket enters it before [`GUARD_SOCKS`], so its peer
    /// is a valid target before the first byte is judged. Not pinned.
    pub const GUARD_PEERS: &str = "HB_GUARD_PEERS";
    /// Hash: socket cookie → [`GuardSplice`](crate::GuardSplice), the peer a spliced
    /// socket's bytes go to and what went. Not pinned.
    pub const GUARD_SPLICE: &str = "HB_GUARD_SPLICE";

    /// Array of one `u64`: the cookie of the network namespace the agent runs in, where
    /// `hb-agent sandbox run` sandboxes share ports with the host's daemons and with each
    /// other (a pod's namespace is its own). `cgroup/setsockopt` refuses shared ports
    /// there only; 0 (not written yet) refuses them everywhere.
    pub const HOST_NETNS: &str = "HB_HOST_NETNS";
    /// Array of one `u32`: the port of the agent's metrics server (`agent.metrics_listen`;
    /// 0: off), in its network namespace ([`HOST_NETNS`]). `cgroup/bind4|6` refuse it to
    /// a sandbox there, as the resolver's and guard's ports everywhere: a socket that
    /// held it while the agent restarted would keep the agent from starting again.
    pub const METRICS_PORT: &str = "HB_METRICS_PORT";

    /// LPM trie, a 16-byte address (IPv4 as IPv4-mapped IPv6, `::ffff:a.b.c.d`, prefix
    /// 96 + its own) → [`crate::LOCAL_OWN`] ([`crate::LOCAL_EXCEPTED`] inside an
    /// `egress.exception_cidrs` entry): the addresses of the agent's network namespace
    /// ([`HOST_NETNS`]), which the agent keeps from rtnetlink (`RTM_NEWADDR`/`DELADDR`):
    /// each address as a host route, and on a loopback device the whole prefix (the
    /// kernel makes 127.0.0.1/8 on `lo` a local route for all of 127/8). `cgroup/bind4|6`
    /// and `cgroup/sendmsg4|6` refuse a sandbox in that namespace a source address not
    /// in it (reason `nonlocal_source`); empty (not written yet), every specific source
    /// is refused. `cgroup_skb/egress` judges a validated peer the host holds (not
    /// excepted) in full, not by its socket's admission. The addresses only delivered
    /// here (network, broadcast, subnet-router anycast), and the prefixes a `local`,
    /// `broadcast` or `anycast` route delivers here without an address (AnyIP, read from
    /// the `local`, `main` and `default` tables), are [`crate::LOCAL_DELIVERED`]: no
    /// source; with the host's own, no static CIDR of a policy opens them.
    pub const LOCAL_ADDRS: &str = "HB_LOCAL_ADDRS";
    /// LRU hash, `u64` cgroup id → when (`bpf_ktime_get_ns`) its last `error_queue`
    /// event was reported: at most one per cgroup per event window, since glibc's
    /// resolver sets `IP_RECVERR` on every query's socket.
    pub const ERRQUEUE_SEEN: &str = "HB_ERRQUEUE_SEEN";
    /// Hash, `u64` governing cgroup id → `u64`: the internet sockets a sandbox in the
    /// agent's network namespace holds open now (`cgroup/sock_create` adds one,
    /// `cgroup/sock_release` takes it back).
    pub const SOCKS_HELD: &str = "HB_SOCKS_HELD";
    /// Array of two `u64`: at 0 how many ports all sandboxes in the agent's network
    /// namespace may hold together, open sockets and TIME_WAIT ends
    /// (`sandbox_defaults.sockets_node_percent` of its range; 0: no bound), at 1 how
    /// many sockets they hold open now.
    pub const SOCKS_NODE: &str = "HB_SOCKS_NODE";
    /// LRU hash, `u64` governing cgroup id (0: all sandboxes) → eight slots of
    /// (`u64` period of 2^34 ns, `u64` count): the TIME_WAIT ends its counted TCP
    /// sockets left in each recent period (`sock_ops`, state callback), which hold
    /// their ports after the socket's release gave its place back.
    pub const SOCKS_TW: &str = "HB_SOCKS_TW";
    /// Array of one `u32`: how many internet sockets a sandbox in the agent's network
    /// namespace may hold at once (`sandbox_defaults.sockets_max`; 0: no bound).
    pub const SOCKS_MAX: &str = "HB_SOCKS_MAX";
    /// Socket storage, `u64`: the governing cgroup a socket was counted against in
    /// [`SOCKS_HELD`], freed with the socket.
    pub const SOCK_COUNTED: &str = "HB_SOCK_COUNTED";

    /// Every map, in the order `hb-agent maps list` shows them.
    pub const ALL: [&str; 34] = [
        ENROLLED,
        POLICIES,
        ALLOW4,
        ALLOW6,
        RULES4,
        RULES6,
        COUNTERS,
        CG_STATS,
        EVENTS,
        GENERATION,
        SKB_CACHE,
        DNS,
        DNS_ORIG,
        DNS_FLOWS,
        DNS_UDP,
        SOCK_PEER,
        NAT64,
        EVENT_RATE,
        EVENT_SEEN,
        EVENT_HELD,
        GUARD,
        GUARD_PORTS,
        GUARD_ORIG,
        GUARD_FLOWS,
        GUARD_FLOWS_HELD,
        HOST_NETNS,
        METRICS_PORT,
        LOCAL_ADDRS,
        ERRQUEUE_SEEN,
        SOCKS_HELD,
        SOCKS_MAX,
        SOCK_COUNTED,
        SOCKS_NODE,
        SOCKS_TW,
    ];
}

/// Names of the programs (the functions in hb-ebpf), which are also their pin names.
pub mod prog_names {
    pub const CONNECT4: &str = "hb_connect4";
    pub const CONNECT6: &str = "hb_connect6";
    pub const SENDMSG4: &str = "hb_sendmsg4";
    pub const SENDMSG6: &str = "hb_sendmsg6";
    pub const SKB_EGRESS: &str = "hb_skb_egress";
    pub const RECVMSG4: &str = "hb_recvmsg4";
    pub const RECVMSG6: &str = "hb_recvmsg6";
    pub const GETPEERNAME4: &str = "hb_getpeer4";
    pub const GETPEERNAME6: &str = "hb_getpeer6";
    /// `cgroup_skb/ingress`: what reaches a sandbox's sockets from outside.
    pub const SKB_INGRESS: &str = "hb_skb_ingress";
    /// `sock_ops`: records an accepted connection's client as its socket's admitted peer.
    pub const SOCK_OPS: &str = "hb_sock_ops";

    /// `cgroup/setsockopt`: refuses multicast joins and route options.
    pub const SETSOCKOPT: &str = "hb_setsockopt";
    /// `cgroup/bind4|6`: refuses binds to the ports of hb's resolver and guard.
    pub const BIND4: &str = "hb_bind4";
    pub const BIND6: &str = "hb_bind6";
    /// `cgroup/sock_create` and `cgroup/sock_release`: count the internet sockets a
    /// sandbox in the agent's network namespace holds, and refuse one past its bound.
    pub const SOCK_CREATE: &str = "hb_sock_create";
    pub const SOCK_RELEASE: &str = "hb_sock_release";

    /// `sk_skb/stream_verdict` on [`map_names::GUARD_SOCKS`](crate::map_names): a
    /// spliced guard connection's bytes sent on to the peer socket in the kernel. Not
    /// a cgroup program, not in [`ALL`]: the guard loads and attaches it itself.
    pub const GUARD_SPLICE: &str = "hb_guard_splice";

    pub const ALL: [&str; 16] = [
        CONNECT4,
        CONNECT6,
        SENDMSG4,
        SENDMSG6,
        SKB_EGRESS,
        RECVMSG4,
        RECVMSG6,
        GETPEERNAME4,
        GETPEERNAME6,
        SKB_INGRESS,
        SOCK_OPS,
        SETSOCKOPT,
        BIND4,
        BIND6,
        SOCK_CREATE,
        SOCK_RELEASE,
    ];
}

/// Sub-folders of the bpffs folder (`agent.bpffs_dir`).
pub mod pin_dirs {
    pub const MAPS: &str = "maps";
    pub const PROGS: &str = "progs";
    pub const LINKS: &str = "links";
}

/// Map capacities. A full map fails closed: user space refuses to add, the kernel denies.
pub mod limits {
    pub const ENROLLED: u32 = 16_384;
    pub const POLICIES: u32 = 256;
    pub const ALLOW4: u32 = 131_072;
    pub const ALLOW6: u32 = 131_072;
    /// Compiled rules, all policies together (policies × (deny + exception + CIDR
    /// prefixes)); the agent refuses a config that does not fit.
    pub const RULES4: u32 = 65_536;
    pub const RULES6: u32 = 65_536;
    pub const CG_STATS: u32 = 16_384;
    /// Bytes in the events ring buffer (a power of two and a multiple of the page size).
    pub const EVENTS_BYTES: u32 = 1 << 20;
    /// TCP DNS connections between SYN and close at once (least recently used go: a
    /// connection whose entry is gone is closed by the resolver, which fails closed).
    pub const DNS_FLOWS: u32 = 65_536;
    /// Redirected UDP DNS client ends remembered at once (least recently used go: a
    /// datagram whose entry is gone is answered, charged to its policy's unattributed share).
    pub const DNS_UDP: u32 = 65_536;
    /// NAT64 prefixes (`egress.nat64_prefixes`); the agent refuses a config with more.
    pub const NAT64_PREFIXES: u32 = 16;
    /// Addresses of the agent's network namespace (`map_names::LOCAL_ADDRS`); past it
    /// the agent logs, and binds to the addresses left out are refused (fail closed).
    pub const LOCAL_ADDRS: u32 = 65_536;
    /// Cgroups whose last `error_queue` event is remembered at once.
    pub const ERRQUEUE_SEEN: u32 = 16_384;
    /// Sandboxes whose open sockets are counted at once (`map_names::SOCKS_HELD`); a
    /// socket of another one past it is refused (fail closed).
    pub const SOCKS_HELD: u32 = 16_384;
    /// Sandboxes whose recent TIME_WAIT ends are counted at once (`map_names::SOCKS_TW`,
    /// least recently used go: a sandbox that closes connections is recently used).
    pub const SOCKS_TW: u32 = 16_384;
    /// A sandbox holding at most this many ports (with the one it asks for) may take
    /// them from the last quarter of `sandbox_defaults.sockets_node_percent`, which the
    /// others may not: sandboxes holding many cannot starve one that holds few.
    pub const SOCKS_RESERVED_UNDER: u64 = 64;
    /// Cgroups whose event budget is remembered at once (least recently used go; a
    /// forgotten cgroup starts with a full budget again, so the bound per cgroup holds
    /// only while fewer cgroups than this report at once — each still has its own).
    pub const EVENT_RATE: u32 = 16_384;
    /// Events one cgroup may report per [`EVENT_WINDOW_NS`]; refusals beyond are
    /// enforced and counted, and the next event that gets through carries their number.
    ///
    /// Why so few: every reported event becomes an 88-byte record in the 1 MiB ring
    /// buffer all sandboxes share, a line in `events.jsonl` (~300 bytes) and one in
    /// `audit.log` (~340 bytes, measured). At 64 per 10 s (a burst of 64, then 6.4/s)
    /// one sandbox that does nothing but get refused writes ~2.2 KB/s to the audit
    /// log, so the default history (`audit_max_files` 5 × `audit_max_bytes` 64 MiB =
    /// 320 MiB) lasts 320 MiB / 2.2 KB/s ≈ 42 hours of it (before: ~4.4 MB/s, ~75 s);
    /// `events.jsonl` (2 × 16 MiB) keeps ~4.8 hours of it. In the ring buffer one
    /// window of one cgroup takes 5.6 KiB: ~180 cgroups would have to burst within
    /// the same moment, faster than the agent drains, to fill it. A cgroup that scans
    /// new destinations also gets [`EVENT_DISTINCT`] and [`EVENT_HELD_PER_WINDOW`]
    /// named: at most 320 events per window, ~11 KB/s of audit log, so the default
    /// history lasts ~8 hours of a scan (a flood of one destination stays at 64).
    pub const EVENT_BURST: u64 = 64;
    /// Length of one event budget window, in ns (`bpf_ktime_get_ns`).
    pub const EVENT_WINDOW_NS: u64 = 10_000_000_000;
    /// Past [`EVENT_BURST`], destinations a cgroup had not been reported refused for in
    /// the window that are still reported at once, per window: a flood of one refused
    /// destination cannot hide the next one tried.
    pub const EVENT_DISTINCT: u64 = 64;
    /// Past [`EVENT_DISTINCT`] too, further new destinations a cgroup may have held back
    /// per window ([`map_names::EVENT_HELD`](crate::map_names)), each written later as one
    /// event with its count. Beyond that a scan is only counted. Together a cgroup
    /// names at most `EVENT_BURST + EVENT_DISTINCT + EVENT_HELD_PER_WINDOW` (320)
    /// refusals per window, whatever it does.
    pub const EVENT_HELD_PER_WINDOW: u64 = 192;
    /// Destinations whose last report is remembered at once, all cgroups together
    /// (least recently used go: a forgotten one counts as new, within the caps above).
    pub const EVENT_SEEN: u32 = 16_384;
    /// Held-back destinations at once, all cgroups together (the agent empties the map
    /// every second; a refusal that finds it full is counted only).
    pub const EVENT_HELD: u32 = 8_192;
    /// How many cgroup levels below the root the programs look at for an enrollment.
    /// The agent refuses to enroll a cgroup deeper than this, so nothing enrolled can be
    /// missed; a process may sit deeper below an enrolled cgroup, which is still found.
    pub const MAX_CGROUP_DEPTH: u32 = 16;
    /// Longest policy name (bytes) that fits [`PolicyInfo::name`](crate::PolicyInfo).
    pub const POLICY_NAME_LEN: usize = 48;
    /// Guard ports, all policies together (`guard_ports`); the agent refuses a config
    /// with more.
    pub const GUARD_PORTS: u32 = 4096;
    /// Guarded connections between SYN and close at once (least recently used go: a
    /// connection whose entry is gone is closed by the guard, which fails closed). A
    /// record lives as long as its client end, and the connect hooks keep the records
    /// of all cgroups together below [`GUARD_FLOWS_FILED`], so none is pushed out. The
    /// size declared; on a node of more than 64 CPUs the agent creates the map larger
    /// (`loader::guard_flow_entries`: 128 entries per CPU beside the held part).
    pub const GUARD_FLOWS: u32 = 65_536;
    /// Records of [`GUARD_FLOWS`] the connect hooks let all cgroups hold at once (see
    /// [`map_names::GUARD_FLOWS_HELD`](crate::map_names)). An eighth of the map stays
    /// free: an LRU hash starts evicting before it is full when free entries sit in
    /// other CPUs' local lists (up to 128 each), so this leaves none to evict on
    /// machines of up to 64 CPUs (the agent grows the map on larger ones). Each cgroup may take another record only while it
    /// holds fewer than are free: one flooding cgroup holds at most half, N of them
    /// leave `1/(N+1)` free, and a cgroup holding few always finds room.
    pub const GUARD_FLOWS_FILED: u64 = (GUARD_FLOWS - GUARD_FLOWS / 8) as u64;
    /// Cgroups whose guard records are counted at once (`HB_GUARD_HELD`, with its key 0):
    /// as many as may be enrolled.
    pub const GUARD_FLOWS_HELD: u32 = ENROLLED + 1;
    /// Sockets (two per connection) the guard hands to the kernel at once; a connection
    /// that finds no room stays on the user-space relay.
    pub const GUARD_SPLICED: u32 = 16_384;
}

/// Value of [`map_names::ENROLLED`]: the policy a cgroup (and everything below it) is under.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Enrollment {
    pub policy_id: u32,
    /// `ENROLL_*` bits: who enrolled the cgroup, so reconciliation only removes its own.
    pub flags: u32,
}
const _: () = assert!(size_of::<Enrollment>() == 8);

/// Enrolled by the agent because the cgroup matches a `[[sandbox]]` glob.
pub const ENROLL_GLOB: u32 = 1;
/// Enrolled by `hb-agent sandbox run`, which removes it when the sandbox ends.
pub const ENROLL_LAUNCHER: u32 = 2;
/// Enrolled by the agent's pod watcher (`[kubernetes]`): a pod-level cgroup of an
/// enforced pod, removed only once the cgroup is gone.
pub const ENROLL_KUBE: u32 = 4;

/// Value of [`map_names::POLICIES`] at a policy id. A slot with `flags == 0` is free.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyInfo {
    /// `POLICY_*` bits.
    pub flags: u32,
    pub _pad: u32,
    /// The policy's name, NUL-padded (for inspection; the kernel never reads it).
    pub name: [u8; limits::POLICY_NAME_LEN],
}
const _: () = assert!(size_of::<PolicyInfo>() == 56);

/// The slot holds a configured policy.
pub const POLICY_IN_USE: u32 = 1;
/// Audit mode: would-be refusals are allowed and reported.
pub const POLICY_AUDIT: u32 = 2;
/// `inbound = true`: sandboxes under the policy may accept connections from outside
/// their cgroup. Without it, unsolicited inbound connections and datagrams are dropped.
pub const POLICY_INBOUND: u32 = 4;
/// `guard = true`: TCP connects to allowed destinations on the policy's guard ports go
/// to the agent's guard (see [`GuardConfig`]), and UDP to port 443 is refused unless
/// [`POLICY_QUIC`].
pub const POLICY_GUARD: u32 = 8;
/// `allow_quic = true`: a guarded policy's UDP to port 443 is judged like other UDP.
pub const POLICY_QUIC: u32 = 16;
/// `guard_all_ports = true`: a guarded policy's TCP connects to allowed destinations go
/// through the guard on every port, not only its `guard_ports`.
pub const POLICY_GUARD_ALL: u32 = 32;
/// `icmp_echo = true`: sandboxes under the policy may open ping sockets (`SOCK_DGRAM`,
/// `IPPROTO_ICMP`/`IPPROTO_ICMPV6`). Without it `cgroup/sock_create` refuses them
/// (`reason::UNJUDGED_SEND`): their `sendto` runs no cgroup hook, and an echo to an
/// IPv4 multicast group is looped to the host's listeners before the packet hook.
pub const POLICY_ICMP_ECHO: u32 = 64;
/// `raw_sockets = true`: sandboxes under the policy (those holding `CAP_NET_RAW`) may
/// open raw sockets (`SOCK_RAW`, any protocol), refused otherwise as ping sockets are.
pub const POLICY_RAW_SOCKETS: u32 = 128;

/// Key of [`map_names::ALLOW4`]: one validated address for one policy.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Allow4Key {
    pub policy_id: u32,
    /// Network order.
    pub addr: [u8; 4],
}
const _: () = assert!(size_of::<Allow4Key>() == 8);

/// Key of [`map_names::ALLOW6`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Allow6Key {
    pub policy_id: u32,
    /// Network order.
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<Allow6Key>() == 20);

/// Expiry value meaning "never" in the allow maps.
pub const NEVER_EXPIRES: u64 = u64::MAX;

/// Data part of an LPM key in [`map_names::RULES4`]. The prefix length always covers the
/// whole policy id (32 bits) plus the CIDR's own prefix, so policies never share entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyCidr4 {
    /// Big-endian, so the trie's bit order matches the id's.
    pub policy_id_be: [u8; 4],
    pub addr: [u8; 4],
}
const _: () = assert!(size_of::<PolicyCidr4>() == 8);

/// Data part of an LPM key in [`map_names::RULES6`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyCidr6 {
    pub policy_id_be: [u8; 4],
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<PolicyCidr6>() == 20);

/// Bits of a policy-prefixed LPM key taken by the policy id.
pub const POLICY_PREFIX_BITS: u32 = 32;

/// Values of the compiled rule tries ([`map_names::RULES4`], [`map_names::RULES6`]).
///
/// User space inserts, for each policy, every deny, exception and static-CIDR prefix
/// with the verdict for the addresses whose *longest* match it is: denied if some deny
/// range covers the prefix and no exception does; else allowed if a static CIDR covers
/// it; else neutral. All configured prefixes that contain an address also contain its
/// longest match, so this is exactly "in a deny range and in no exception → refused;
/// in a static CIDR → allowed", answered by a single LPM lookup.
pub mod rule {
    /// In a deny range and in no exception: refused.
    pub const DENY: u32 = 1;
    /// In a static CIDR of the policy: allowed.
    pub const ALLOW: u32 = 2;
    /// Neither: allowed only if the address is in the policy's allow map.
    pub const NEUTRAL: u32 = 3;

    pub const fn name(rule: u32) -> &'static str {
        match rule {
            DENY => "deny",
            ALLOW => "allow",
            NEUTRAL => "neutral",
            _ => "unknown",
        }
    }
}

/// Value of [`map_names::CG_STATS`]: what `cgroup_skb/egress` saw leave one cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupStats {
    pub pass_packets: u64,
    pub pass_bytes: u64,
    pub drop_packets: u64,
    pub drop_bytes: u64,
    /// Packets a policy in audit mode would have dropped.
    pub audit_packets: u64,
    pub audit_bytes: u64,
}
const _: () = assert!(size_of::<CgroupStats>() == 48);

/// Value of [`map_names::SKB_CACHE`]: the last flow `cgroup_skb/egress` passed on this
/// CPU. A packet of the same cgroup to the same destination under the same generation,
/// with no routing header or IPv4 option, skips the enrollment, socket, rule and
/// statistics lookups when it comes from the same socket (cookie), or from any socket if
/// the verdict did not depend on the socket or the clock ([`FLOW_ANY_SOCKET`]: a cgroup
/// that is not enrolled, or a destination a static CIDR allows — both change only with
/// the generation). A validated address expires, so its flow is the socket's alone: a
/// new socket to it after expiry is judged afresh. Its packets and bytes are kept here
/// and added to [`map_names::CG_STATS`] every [`SKB_FLUSH_PACKETS`] packets or when
/// another flow takes the slot (so those statistics lag by fewer packets than that).
/// Only passed packets are remembered, never refusals.
///
/// The program can be interrupted on its CPU by another run of itself (a softirq
/// sending an ACK, a preempting task) that takes the slot between two of its reads: a
/// reader that compared the old flow's cgroup and then the new flow's destination would
/// pass a packet nobody judged. So a writer makes `seq` odd, writes, and makes it even
/// again, and a reader trusts what it read only if `seq` was even and unchanged around
/// its reads (a run that interrupts another completes before the other goes on).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowCache {
    /// `bpf_get_socket_cookie` of the sending socket.
    pub cookie: u64,
    pub cgroup_id: u64,
    pub generation: u64,
    /// Destination, network order; IPv4 in the first four bytes.
    pub addr: [u8; 16],
    /// [`AF_INET`] or [`AF_INET6`]; 0 marks an empty slot.
    pub family: u16,
    /// Odd while the slot is being written (see above).
    pub seq: u16,
    /// `FLOW_*` bits.
    pub flags: u32,
    pub pending_packets: u64,
    pub pending_bytes: u64,
}
/// The cgroup is enrolled: the flow's packets are counted.
pub const FLOW_ENROLLED: u32 = 1;
/// The verdict holds for any socket of the cgroup (see [`FlowCache`]).
pub const FLOW_ANY_SOCKET: u32 = 2;
const _: () = assert!(size_of::<FlowCache>() == 64);
const _: () = assert!(core::mem::offset_of!(FlowCache, addr) == 24);

/// Value of [`map_names::DNS`]. DNS (port 53, UDP and TCP) from an enrolled cgroup goes
/// to `addr4:(port_base + policy id)` for IPv4 sockets and `[::1]:(port_base + policy id)`
/// for IPv6 ones, so the port the resolver receives a query on names the policy — which
/// works whatever network namespace the sandbox is in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsConfig {
    /// 1 when redirection is on.
    pub enabled: u32,
    /// The resolver's IPv4 address, network order.
    pub addr4: [u8; 4],
    /// Port of policy 0, host order; policy N is at `port_base + N`.
    pub port_base: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<DnsConfig>() == 16);

/// Value of [`map_names::DNS_ORIG`] and [`map_names::DNS_FLOWS`]: what a redirected
/// socket originally addressed, and the policy and cgroup it was redirected for
/// (recorded in the socket hook, in the task's context).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsOrig {
    /// Network order; IPv4 in the first four bytes.
    pub addr: [u8; 16],
    /// Network order, as in `bpf_sock_addr.user_port`.
    pub port_be: u16,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
    pub policy_id: u32,
    /// The connecting task's cgroup (the resolver's per-cgroup share of TCP slots).
    pub cgroup_id: u64,
}
const _: () = assert!(size_of::<DnsOrig>() == 32);

/// Value of [`map_names::SOCK_PEER`]: the one peer a socket was admitted to talk to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockDest {
    /// Network order; IPv4 in the first four bytes.
    pub addr: [u8; 16],
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
    /// [`SOCK_DNS_UDP`] for a UDP socket redirected to the resolver (its datagrams' client
    /// end is filed in [`map_names::DNS_UDP`]), else 0.
    pub dns: u16,
    /// `SOCK_ADMIT_*`: which hook admitted the peer, and whether it was a validated
    /// address ([`SOCK_ADMIT_VALIDATED`]).
    pub flags: u32,
}
const _: () = assert!(size_of::<SockDest>() == 24);

/// Data part of an LPM key in [`map_names::NAT64`]: an IPv6 prefix, network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Nat64Key {
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<Nat64Key>() == 16);

/// The prefix lengths RFC 6052 (section 2.2) defines an IPv4 embedding for.
pub const NAT64_PREFIX_LENS: [u8; 6] = [32, 40, 48, 56, 64, 96];

/// The IPv4 address an IPv6 address under a NAT64 prefix of length `len` carries (RFC
/// 6052 section 2.2: bits 64..72, the "u" octet, are skipped); `None` for a length the
/// RFC does not define. Shared by the kernel and the resolver so both read the same
/// octets.
#[inline(always)]
pub const fn nat64_embedded(a: &[u8; 16], len: u32) -> Option<[u8; 4]> {
    match len {
        32 => Some([a[4], a[5], a[6], a[7]]),
        40 => Some([a[5], a[6], a[7], a[9]]),
        48 => Some([a[6], a[7], a[9], a[10]]),
        56 => Some([a[7], a[9], a[10], a[11]]),
        64 => Some([a[9], a[10], a[11], a[12]]),
        96 => Some([a[12], a[13], a[14], a[15]]),
        _ => None,
    }
}

/// The IPv4 addresses an IPv6 address of a tunnel carries, which a tunnel on the node
/// sends its packets to: 6to4 `2002:V4::/48` (the relay, twice), Teredo `2001:0::/32`
/// (the server at bits 32..64, the client XOR-obfuscated in the last 32 bits), and an
/// ISATAP interface identifier under any prefix (`0000:5efe:V4` or `0200:5efe:V4`, RFC
/// 5214 §6.1: Linux's `sit` sends such a destination, or next hop, to the IPv4 address in
/// it, `ipv6_addr_is_isatap`). The outer IPv4 packet leaves from no socket, so no cgroup
/// program judges it: the embedded address must be judged with the IPv6 one. Shared by
/// the kernel and the resolvers.
#[inline(always)]
pub const fn tunnel_embedded(a: &[u8; 16]) -> Option<([u8; 4], [u8; 4])> {
    if a[0] == 0x20 && a[1] == 0x02 {
        let v4 = [a[2], a[3], a[4], a[5]];
        return Some((v4, v4));
    }
    if a[0] == 0x20 && a[1] == 0x01 && a[2] == 0 && a[3] == 0 {
        let server = [a[4], a[5], a[6], a[7]];
        let client = [!a[12], !a[13], !a[14], !a[15]];
        return Some((server, client));
    }
    if a[8] | 0x02 == 0x02 && a[9] == 0 && a[10] == 0x5e && a[11] == 0xfe {
        let v4 = [a[12], a[13], a[14], a[15]];
        return Some((v4, v4));
    }
    None
}

/// Whether `port` (host order) is one of the per-policy ports starting at `port_base`
/// (the resolver's and the guard's: `port_base + policy id`). A `port_base` of 0 means
/// none (the agent never configured that service).
#[inline(always)]
pub const fn in_policy_ports(port_base: u16, port: u16) -> bool {
    port_base != 0 && port >= port_base && ((port - port_base) as u32) < limits::POLICIES
}

/// Value of [`map_names::GUARD`]. A guarded TCP connect of policy N goes to
/// `addr4:(port_base + N)` for IPv4 sockets and `[::1]:(port_base + N)` for IPv6 ones
/// (as [`DnsConfig`] does for DNS).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardConfig {
    /// 1 when the guard runs.
    pub enabled: u32,
    /// The guard's IPv4 address, network order.
    pub addr4: [u8; 4],
    /// Port of policy 0, host order.
    pub port_base: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<GuardConfig>() == 16);

/// Key of [`map_names::GUARD_PORTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GuardPortKey {
    pub policy_id: u32,
    /// Host order.
    pub port: u16,
    pub _pad: u16,
}
const _: () = assert!(size_of::<GuardPortKey>() == 8);

/// Value of [`map_names::GUARD_ORIG`] and [`map_names::GUARD_FLOWS`]: what a redirected
/// socket addressed, and who opened it (recorded in the connect hook, in the task's
/// context).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardOrig {
    /// Network order; IPv4 in the first four bytes.
    pub addr: [u8; 16],
    /// Network order, as in `bpf_sock_addr.user_port`.
    pub port_be: u16,
    /// [`AF_INET`] or [`AF_INET6`]: the family of `addr` (an IPv4-mapped destination of
    /// an IPv6 socket is stored as the IPv4 it is).
    pub family: u16,
    pub policy_id: u32,
    pub cgroup_id: u64,
    pub pid_tgid: u64,
    pub comm: [u8; 16],
}
const _: () = assert!(size_of::<GuardOrig>() == 56);

/// Key of [`map_names::GUARD_FLOWS`] and [`map_names::DNS_FLOWS`]: a redirected TCP
/// connection as the agent's accepted socket sees it (the peer is the sandbox's socket).
///
/// The network namespace is part of it: the agent listens on the same loopback address
/// and ports inside every pod's namespace, so two pods' clients can have the same
/// address and port at once; without the namespace one pod's record would be found for
/// the other's connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The network namespace's cookie: `bpf_get_netns_cookie` of the client socket in
    /// `sock_ops`, `SO_NETNS_COOKIE` of the accepted socket in the agent (the same
    /// namespace: both ends of a loopback connection live in it).
    pub netns_cookie: u64,
    /// The client's address, network order; IPv4 in the first four bytes.
    pub client: [u8; 16],
    /// The client's port, host order.
    pub client_port: u16,
    /// The agent's port connected to (guard or resolver), host order.
    pub server_port: u16,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
    pub _pad: u16,
}
const _: () = assert!(size_of::<FlowKey>() == 32);

/// Value of [`map_names::GUARD_SPLICE`]: one spliced socket. Written by the guard
/// before the socket enters [`map_names::GUARD_SOCKS`]; the counters only by
/// `hb_guard_splice`, which runs for one socket at a time (under its lock).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardSplice {
    /// Cookie of the socket this one's bytes go to (a key of
    /// [`map_names::GUARD_PEERS`]).
    pub peer: u64,
    /// Bytes handed to the peer's sending side.
    pub bytes: u64,
    /// Chunks the kernel could not hand on (the peer was gone): the connection is
    /// broken and the guard resets both sides.
    pub dropped: u64,
}
const _: () = assert!(size_of::<GuardSplice>() == 24);

/// Admitted by `cgroup/connect4|6`.
pub const SOCK_ADMIT_CONNECT: u32 = 1;
/// Admitted by `cgroup/sendmsg4|6` (the datagram's destination).
pub const SOCK_ADMIT_SENDMSG: u32 = 2;
/// An accepted connection's client, under a policy with [`POLICY_INBOUND`].
pub const SOCK_ADMIT_INBOUND: u32 = 4;
/// With [`SOCK_ADMIT_CONNECT`] or [`SOCK_ADMIT_SENDMSG`]: the peer was a validated
/// address (the allow map's), not the resolver or the guard. `cgroup_skb/egress` judges
/// such a flow in full, not by its admission, once the host holds the peer's address
/// (an address added to an interface, a failover address moved here).
pub const SOCK_ADMIT_VALIDATED: u32 = 8;

/// Value of an address in [`map_names::LOCAL_ADDRS`]: the host's own.
pub const LOCAL_OWN: u32 = 1;
/// Value of an address in [`map_names::LOCAL_ADDRS`]: the host's, and inside an
/// `egress.exception_cidrs` entry, so a validated peer there is not the host's own
/// ([`SOCK_ADMIT_VALIDATED`] keeps passing by its admission).
pub const LOCAL_EXCEPTED: u32 = 2;
/// Value of an address in [`map_names::LOCAL_ADDRS`]: no address of the host's, but one
/// its prefixes deliver here (an IPv4 prefix's network and broadcast address, an IPv6
/// prefix's subnet-router anycast address), or one a `local` route delivers here without
/// an address (an AnyIP prefix, keyed as a prefix), outside every exception: a
/// destination the kernel refuses as the host's own, never a source.
pub const LOCAL_DELIVERED: u32 = 3;
/// [`SockDest::dns`] of a UDP socket the DNS redirect sent to the resolver.
pub const SOCK_DNS_UDP: u16 = 1;

/// Key of [`map_names::EVENT_RATE`]. A cgroup has two budgets: one for the refusals of
/// what it sends (socket hooks, `cgroup_skb/egress`) and one for what others send it
/// (`cgroup_skb/ingress`), so nobody outside a sandbox can use up the budget that
/// reports the sandbox's own attempts by sending it refused packets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EventRateKey {
    pub cgroup_id: u64,
    /// 1 for inbound (`cgroup_skb/ingress`) events, 0 for the cgroup's own.
    pub inbound: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<EventRateKey>() == 16);

/// Value of [`map_names::EVENT_RATE`]: one cgroup's event budget, a fixed window.
///
/// Shared by all CPUs (not per-CPU: a per-CPU budget would multiply with the number of
/// CPUs a sandbox's threads run on). `count`, `pending` and `suppressed` change only by
/// atomic adds, so concurrent reporters never lose a count and at most
/// [`limits::EVENT_BURST`] of them see `count` within budget. The window restart
/// (`start_ns`, `count = 0`) is a plain store: CPUs that restart the same window at
/// once can each let through a few events more, which bounds the error by the number
/// of CPUs per window, never by the sender's rate.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventRate {
    /// When the current window began (`bpf_ktime_get_ns`).
    pub start_ns: u64,
    /// Events counted against the current window (reported or not).
    pub count: u64,
    /// Events suppressed since the last one this cgroup reported: the next reported
    /// event carries (and takes) them in [`Event::suppressed`].
    pub pending: u64,
    /// Every event of this cgroup ever suppressed.
    pub suppressed: u64,
    /// Destinations new to the window (not in [`map_names::EVENT_SEEN`](crate::map_names)
    /// within it) refused past [`limits::EVENT_BURST`]: the first
    /// [`limits::EVENT_DISTINCT`] are reported, the next
    /// [`limits::EVENT_HELD_PER_WINDOW`] held back.
    pub distinct: u64,
}
const _: () = assert!(size_of::<EventRate>() == 40);

/// Key of [`map_names::EVENT_SEEN`] and [`map_names::EVENT_HELD`]: what one refusal was
/// aimed at, as its [`Event`] says it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EventSeenKey {
    pub cgroup_id: u64,
    /// A [`hook`] value.
    pub hook: u32,
    /// As [`Event::protocol`].
    pub protocol: u16,
    /// As [`Event::port`].
    pub port: u16,
    /// As [`Event::addr`].
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<EventSeenKey>() == 32);

/// Value of [`map_names::EVENT_HELD`]: the first refusal of a held-back destination
/// (its `suppressed` is 0) and how many there were since it was held back.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HeldEvent {
    pub event: Event,
    /// Refusals of this destination held back, the first included (atomic adds).
    pub count: u64,
}
const _: () = assert!(size_of::<HeldEvent>() == 96);

/// How many packets a [`FlowCache`] accumulates before it adds them to the statistics.
pub const SKB_FLUSH_PACKETS: u64 = 64;

/// Indexes of [`map_names::COUNTERS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Socket hook ran for a cgroup that is not enrolled: passed untouched.
    NotEnrolled = 0,
    /// Enrolled and allowed by the allow map.
    AllowAddr = 1,
    /// Enrolled and allowed by a static CIDR.
    AllowCidr = 2,
    /// Refused: destination in a deny range.
    DenyRange = 3,
    /// Refused: destination not in the policy's allow set.
    DenyNotAllowed = 4,
    /// Refused: IPv6 address embedding an IPv4 address in a deny range.
    DenyEmbedded = 5,
    /// Would have been refused, allowed because the policy audits.
    Audit = 6,
    /// Packet from an enrolled cgroup passed `cgroup_skb/egress`.
    SkbPass = 7,
    /// Packet dropped by `cgroup_skb/egress`.
    SkbDrop = 8,
    /// Packet `cgroup_skb/egress` would have dropped, but the policy audits.
    SkbAudit = 9,
    /// A kernel-side map insert failed because the map was full.
    MapFull = 10,
    /// An event could not be written because the ring buffer was full.
    EventsLost = 11,
    /// A DNS query was redirected to hb's resolver.
    DnsRedirect = 12,
    /// A refusal was enforced but not reported on its own: its cgroup had used up its
    /// event budget ([`limits::EVENT_BURST`] per [`limits::EVENT_WINDOW_NS`]).
    EventsSuppressed = 13,
}

impl Counter {
    pub const COUNT: u32 = 14;
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::NotEnrolled,
        Counter::AllowAddr,
        Counter::AllowCidr,
        Counter::DenyRange,
        Counter::DenyNotAllowed,
        Counter::DenyEmbedded,
        Counter::Audit,
        Counter::SkbPass,
        Counter::SkbDrop,
        Counter::SkbAudit,
        Counter::MapFull,
        Counter::EventsLost,
        Counter::DnsRedirect,
        Counter::EventsSuppressed,
    ];

    /// Stable snake_case name, used in `hb-agent status` and JSON output.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::NotEnrolled => "not_enrolled",
            Counter::AllowAddr => "allow_addr",
            Counter::AllowCidr => "allow_cidr",
            Counter::DenyRange => "deny_range",
            Counter::DenyNotAllowed => "deny_not_allowed",
            Counter::DenyEmbedded => "deny_embedded",
            Counter::Audit => "audit",
            Counter::SkbPass => "skb_pass",
            Counter::SkbDrop => "skb_drop",
            Counter::SkbAudit => "skb_audit",
            Counter::MapFull => "map_full",
            Counter::EventsLost => "events_lost",
            Counter::DnsRedirect => "dns_redirect",
            Counter::EventsSuppressed => "events_suppressed",
        }
    }
}

/// Which program wrote an [`Event`].
pub mod hook {
    pub const CONNECT4: u32 = 1;
    pub const CONNECT6: u32 = 2;
    pub const SENDMSG4: u32 = 3;
    pub const SENDMSG6: u32 = 4;
    pub const SKB_EGRESS: u32 = 5;
    pub const SKB_INGRESS: u32 = 6;
    /// `cgroup/setsockopt`. Its events carry the option in `port` (see
    /// [`sockopt_port`](crate::sockopt_port)) and no address.
    pub const SETSOCKOPT: u32 = 7;
    pub const BIND4: u32 = 8;
    pub const BIND6: u32 = 9;
    /// `cgroup/sock_create`. Its events carry no port and no address.
    pub const SOCK_CREATE: u32 = 10;

    pub const fn name(hook: u32) -> &'static str {
        match hook {
            SOCK_CREATE => "sock_create",
            BIND4 => "bind4",
            BIND6 => "bind6",
            SKB_INGRESS => "skb_ingress",
            CONNECT4 => "connect4",
            CONNECT6 => "connect6",
            SENDMSG4 => "sendmsg4",
            SENDMSG6 => "sendmsg6",
            SKB_EGRESS => "skb_egress",
            SETSOCKOPT => "setsockopt",
            _ => "unknown",
        }
    }
}

/// What happened to the connection or packet an [`Event`] reports.
pub mod verdict {
    /// Refused (EPERM) or dropped.
    pub const DENY: u32 = 1;
    /// Would have been refused; allowed because the policy is in audit mode.
    pub const AUDIT: u32 = 2;

    pub const fn name(verdict: u32) -> &'static str {
        match verdict {
            DENY => "deny",
            AUDIT => "audit",
            _ => "unknown",
        }
    }
}

/// Why an [`Event`] was written. Stable names: tests, alerts and scripts match on them.
pub mod reason {
    /// Destination lies in a deny range (and in no exception).
    pub const DENY_RANGE: u32 = 1;
    /// Destination is neither a validated address nor in a static CIDR of the policy.
    pub const NOT_ALLOWED: u32 = 2;
    /// IPv6 destination embeds an IPv4 address (6to4, Teredo) that lies in a deny range.
    pub const EMBEDDED_DENY_RANGE: u32 = 3;
    /// The packet carries a header that sends it somewhere else than its destination
    /// field says (an IPv6 routing header, an IPv4 source-route option).
    pub const SOURCE_ROUTE: u32 = 4;
    /// An unsolicited connection or datagram to a sandbox whose policy has
    /// `inbound = false`.
    pub const INBOUND: u32 = 5;
    /// A socket option that joins a multicast group or changes a group's source filter:
    /// the kernel would announce the group (chosen by the sandbox) in IGMP/MLD reports
    /// sent from its own socket, which no cgroup hook attributes to the sandbox.
    pub const MULTICAST_JOIN: u32 = 6;
    /// UDP to port 443 (QUIC) from a policy with `guard = true` and `allow_quic = false`:
    /// the guard sees only TCP, and HTTP/3 clients fall back to it.
    pub const QUIC: u32 = 7;
    /// A TCP connect a guarded policy sends through the egress guard while no guard is
    /// configured (an agent that failed before its guard listened): refused, never sent
    /// direct.
    pub const GUARD_DOWN: u32 = 8;
    /// A bind to one of the ports hb's resolver or guard listens on (any address): a
    /// sandbox holding one would receive other sandboxes' redirected traffic, or keep
    /// the agent from starting.
    pub const RESERVED_PORT: u32 = 9;
    /// A socket option that lets a socket send from an address that is not the host's
    /// (`IP_FREEBIND`, `IPV6_FREEBIND`, `IP_TRANSPARENT`, `IPV6_TRANSPARENT`), or such an
    /// address itself: a bind to it, a send naming it (`IP_PKTINFO`/`IPV6_PKTINFO`), an
    /// IPv6 ping or raw packet carrying it, a query from it to hb's resolver. Whoever
    /// answers such a packet (a listener of the sandbox's own, hb's resolver) answers
    /// that address, off the host, on no socket of the sandbox.
    pub const NONLOCAL_SOURCE: u32 = 10;
    /// `SO_REUSEPORT` (a socket that binds with it joins the port group of every socket
    /// of the same uid — every sandbox runs as nobody, as many host daemons do — and
    /// takes a share of the connections and datagrams meant for them), or `SO_REUSEADDR`
    /// on a socket other than TCP (a UDP socket that sets it binds beside any other that
    /// did, of any uid, on a more specific address, and takes every datagram sent there).
    pub const SHARED_PORT: u32 = 11;
    /// `IP_RECVERR`, `IPV6_RECVERR` (and their `_RFC4884` forms) set by a sandbox whose
    /// policy has no `inbound = true`: the call succeeds with the value rewritten to 0,
    /// so no ICMP error (whose quoted payload any host on the path may choose) is
    /// queued for the socket to read; reported at most once per cgroup per event window.
    pub const ERROR_QUEUE: u32 = 12;
    /// A socket past `sandbox_defaults.sockets_max` of a sandbox in the agent's network
    /// namespace: it shares the host's ephemeral ports, and a socket bound to port 0
    /// takes one that no connect in the namespace can use until it closes (one sandbox
    /// held them all, and every TCP connect on the host failed: attack review 22).
    pub const SOCKETS_MAX: u32 = 13;
    /// A socket past `sandbox_defaults.sockets_node_percent`: all sandboxes in the agent's
    /// network namespace together hold that many ports (open sockets and TIME_WAIT
    /// ends), each under its own `sockets_max` (seven at the default bound held the
    /// default range between them).
    pub const SOCKETS_NODE_MAX: u32 = 14;
    /// An `IPPROTO_MPTCP` socket of a sandbox in the agent's network namespace while a
    /// socket bound is set: its subflows are the kernel's own TCP sockets, which no hook
    /// counts, and their TIME_WAIT ends held the host's ports past every bound.
    pub const MPTCP: u32 = 15;
    /// A send no socket hook judges, to a destination the kernel copies back to the
    /// host's own listeners before `cgroup_skb/egress` runs (an IPv4 multicast or
    /// broadcast address: `ip_mc_output` loops its copy with no socket, which the
    /// packet hook skips): a UDP-Lite socket (its `connect` has no cgroup hook, nor has
    /// any of its sends the guard's port rules), `SO_BROADCAST` on a socket other than
    /// UDP (a ping socket's `sendto` has no cgroup hook), a ping socket or a raw socket
    /// under a policy without [`POLICY_ICMP_ECHO`] or [`POLICY_RAW_SOCKETS`].
    pub const UNJUDGED_SEND: u32 = 16;
    /// A guarded connect of a cgroup that holds its part of the guard's flow records
    /// ([`limits::GUARD_FLOWS_FILED`](crate::limits)): connections to the guard that
    /// have not closed, written or not. Filed past it, one tenant's records (a pod's
    /// ~65,000 unwritten connections: its own network namespace bounds no socket)
    /// pushed out other tenants' waiting connections' records, which the guard then
    /// closed (attack review 51).
    pub const GUARD_FLOWS_FULL: u32 = 17;

    pub const fn name(reason: u32) -> &'static str {
        match reason {
            SOCKETS_MAX => "sockets_max",
            SOCKETS_NODE_MAX => "sockets_node_max",
            MPTCP => "mptcp",
            UNJUDGED_SEND => "unjudged_send",
            GUARD_FLOWS_FULL => "guard_flows_full",
            ERROR_QUEUE => "error_queue",
            QUIC => "quic",
            GUARD_DOWN => "guard_down",
            RESERVED_PORT => "reserved_port",
            NONLOCAL_SOURCE => "nonlocal_source",
            SHARED_PORT => "shared_port",
            SOURCE_ROUTE => "source_route",
            INBOUND => "inbound",
            MULTICAST_JOIN => "multicast_join",
            DENY_RANGE => "deny_range",
            NOT_ALLOWED => "not_allowed",
            EMBEDDED_DENY_RANGE => "embedded_deny_range",
            _ => "unknown",
        }
    }
}

/// The `port` of a [`hook::SETSOCKOPT`] event: the option's level in the high byte
/// (0 `SOL_IP`, 41 `SOL_IPV6`, 1 `SOL_SOCKET`) and its name in the low byte (every option
/// hb refuses has a name below 256), e.g. `41 << 8 | 20` for `IPV6_JOIN_GROUP`.
pub const fn sockopt_port(level: u8, optname: u8) -> u16 {
    (level as u16) << 8 | optname as u16
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// A refusal (or audited would-be refusal), sent up through [`map_names::EVENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    pub ts_ns: u64,
    pub cgroup_id: u64,
    /// `bpf_get_current_pid_tgid()`: tgid in the upper half. 0 in `cgroup_skb/egress`,
    /// which may run outside the sending task's context.
    pub pid_tgid: u64,
    /// Policy id, or `u32::MAX` when unknown.
    pub policy_id: u32,
    /// A [`hook`] value.
    pub hook: u32,
    /// A [`verdict`] value.
    pub verdict: u32,
    /// A [`reason`] value.
    pub reason: u32,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, …).
    pub protocol: u16,
    /// Destination port, host order (0 where the protocol has none); for
    /// [`hook::SETSOCKOPT`], the refused option ([`sockopt_port`]); for
    /// [`hook::SOCK_CREATE`], the refused socket's type (1 stream, 2 datagram, 3 raw).
    pub port: u16,
    pub _pad: u16,
    /// Destination, network order; IPv4 in the first four bytes.
    pub addr: [u8; 16],
    /// `bpf_get_current_comm()`, NUL-padded; empty in `cgroup_skb/egress`.
    pub comm: [u8; 16],
    /// Refusals of the same cgroup enforced but not reported since its previous event
    /// (its event budget was used up; see [`EventRate`]). Saturates.
    pub suppressed: u32,
    pub _pad2: u32,
}
const _: () = assert!(size_of::<Event>() == 88);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is #[repr(C)], Copy, and has no padding (size assertions above),
    // so every byte pattern the kernel writes is a valid value.
    unsafe impl aya::Pod for super::Enrollment {}
    unsafe impl aya::Pod for super::GuardSplice {}
    unsafe impl aya::Pod for super::PolicyInfo {}
    unsafe impl aya::Pod for super::Allow4Key {}
    unsafe impl aya::Pod for super::Allow6Key {}
    unsafe impl aya::Pod for super::PolicyCidr4 {}
    unsafe impl aya::Pod for super::PolicyCidr6 {}
    unsafe impl aya::Pod for super::CgroupStats {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::FlowCache {}
    unsafe impl aya::Pod for super::DnsConfig {}
    unsafe impl aya::Pod for super::DnsOrig {}
    unsafe impl aya::Pod for super::SockDest {}
    unsafe impl aya::Pod for super::Nat64Key {}
    unsafe impl aya::Pod for super::EventRate {}
    unsafe impl aya::Pod for super::EventRateKey {}
    unsafe impl aya::Pod for super::EventSeenKey {}
    unsafe impl aya::Pod for super::HeldEvent {}
    unsafe impl aya::Pod for super::GuardConfig {}
    unsafe impl aya::Pod for super::GuardPortKey {}
    unsafe impl aya::Pod for super::GuardOrig {}
    unsafe impl aya::Pod for super::FlowKey {}
}
