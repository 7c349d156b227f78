//! `cgroup_skb/egress`: the kernel judges what goes on the wire, and counts it per cgroup.
//!
//! The socket hooks judge what a socket *asks* for; a packet can still go elsewhere: ping
//! sockets (`socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`) and raw sockets send without a
//! sendmsg hook, and an IPv6 routing header (`setsockopt(IPV6_RTHDR)`, or as a cmsg) or an
//! IPv4 source-route option makes the kernel address the packet to a segment the hooks
//! never saw. So every packet leaving an enrolled cgroup meets, for the destination in its
//! header:
//! 0. before all of these (and before the flow cache), an IPv6 packet that is neither
//!    TCP nor UDP from a source that is not the host's (a ping or raw socket bound to
//!    it: no bind hook runs for them) → dropped, reason `nonlocal_source`, the event's
//!    address the source (see `source`);
//! 1. a routing header (IPv6, any type) or a source-route option (IPv4 LSRR/SSRR) →
//!    dropped, reason `source_route`; an extension-header chain or option list we cannot
//!    walk to its end is treated the same (fail closed: it could hide one);
//! 2. the socket's admitted peer (`HB_SOCK_PEER`, the socket's own storage, recorded by
//!    the connect/sendmsg hooks for validated addresses and by the DNS redirect, or by
//!    the inbound path for an accepted connection) → passed without further judgement:
//!    established flows outlive their address's expiry (DESIGN.md: expiry only stops
//!    new connections); no other socket can take that record away. Except a validated
//!    address (`SOCK_ADMIT_VALIDATED`) the host holds now (`HB_LOCAL_ADDRS`: gained
//!    since the connect, a local service behind it) and no exception covers (not
//!    `LOCAL_EXCEPTED`): judged in full (step 4), where the agent has revoked its allow
//!    entry;
//! 3. hb's resolver (redirected DNS on loopback, the resolver's ports), and TCP to the
//!    guard of the packet's own policy (a guarded connection without a step-2 record)
//!    → passed;
//! 4. anything else → the full verdict of `policy::judge4|judge6` (deny ranges,
//!    exceptions, static CIDRs, validated addresses with expiry, NAT64): ICMP echo from
//!    ping sockets to an unvalidated address is dropped here, reason `not_allowed`.
//!
//! Not seen: the copy of an IPv4 multicast or broadcast packet that `ip_mc_output`
//! loops to the host's own listeners (a clone without a socket, handed to
//! `ip_mc_finish_output` before the original reaches this hook; the kernel runs the hook
//! only for an skb whose socket is the sender's). What may send there is kept out before
//! (attack review 27): UDP's destination is judged by `connect4`/`sendmsg4`, a sandbox
//! opens no UDP-Lite socket (`socks`) and sets no `SO_BROADCAST` on a ping or raw socket
//! (`sockopt`); a ping or raw socket's packet to a multicast group still loops (open).
//! IPv6 loops its copy after this hook.
//!
//! A TCP SYN-ACK leaves with the listener as its socket (`sk_to_full_sk` in the cgroup
//! egress hook). Under a policy with `inbound = true` the ingress side records the client
//! of an admitted SYN as the listener's admitted peer, so the answer passes by step 2;
//! under any other policy it meets the full verdict like every packet (a sandbox that may
//! not accept connections cannot answer one either, unless the client's address is one
//! it may reach anyway).
//!
//! IPv4 options: only LSRR (option number 3) and SSRR (9) change where a packet goes; they
//! are matched on the option number whatever the copy and class bits, since routers differ
//! in what they honour. Other options (record route, timestamp, router alert, the CIPSO or
//! CALIPSO labels a host's LSM adds) pass: they carry nothing the payload could not, and
//! dropping them would break labelled-networking hosts. A list whose lengths do not add up
//! (only a raw socket with `IP_HDRINCL` can write one; the kernel validates `IP_OPTIONS`)
//! is dropped as `source_route`, because a router may read it differently than we do.
//!
//! Fast path: a bulk flow sends many packets in a row, so each CPU remembers the last
//! flow it passed ([`FlowCache`]: socket cookie, cgroup, destination, map generation); a
//! packet of that flow without a routing header or IPv4 options skips every other lookup.
//! The cache only ever holds passed flows, and a packet to any other destination misses
//! it; so does one from another socket, unless the verdict could not depend on the socket
//! (a cgroup that is not enrolled, or a static CIDR's allow: both change only with the
//! generation), so new connections to such destinations keep the fast path. On a miss,
//! an admitted flow costs one socket-storage lookup (a redirected UDP DNS socket's also
//! files its client end for the resolver, `dns::record_datagram`, as does a datagram to
//! the resolver from a redirected socket whose admitted peer is another address).
//! Another run of the program on the same CPU (a softirq sending an ACK, a preempting
//! task) may take the slot in the middle of a read: the slot's `seq` tells a reader to
//! miss then, and a run that interrupted a writer leaves the slot alone (see
//! `FlowCache`).
//!
//! Audit mode, as for the socket hooks: a would-be drop passes and is counted per cgroup
//! (`audit_packets`), without a per-packet event.
//!
//! Return value: 1 passes the packet, 0 drops it (the sender sees EPERM for most
//! sockets). A packet from an enrolled cgroup whose header cannot be read is dropped
//! (fail closed).
//!
//! The context starts at the network header (`__sk_buff` data for cgroup_skb); the fixed
//! header is read in place (direct packet access) when it is linear, through
//! `bpf_skb_load_bytes` otherwise, and options/extension headers always through the
//! helper. Addresses are wire bytes, network order. Helpers used, all offered to
//! `BPF_PROG_TYPE_CGROUP_SKB` (`cg_skb_func_proto`, net/core/filter.c):
//! `bpf_skb_cgroup_id`, `bpf_skb_ancestor_cgroup_id`, `bpf_get_socket_cookie` (the skb
//! form: the cookie of `skb->sk`, the same socket the sock_addr hooks saw),
//! `bpf_get_netns_cookie` (for a redirected DNS datagram's record, see `dns`),
//! `bpf_sk_storage_get` (on `skb->sk`, the admitted peer), `bpf_skb_load_bytes`, map
//! helpers and the ring buffer.

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id, generated::bpf_get_socket_cookie},
    macros::{cgroup_skb, map},
    maps::{Array, PerCpuArray},
    programs::SkBuffContext,
};
use hb_common::{
    AF_INET, AF_INET6, CgroupStats, Counter, FLOW_ANY_SOCKET, FLOW_ENROLLED, FlowCache,
    SKB_FLUSH_PACKETS, SOCK_DNS_UDP, hook, reason, verdict,
};

use crate::{
    dns, guard,
    policy::{self, CG_STATS, Judgement, Report},
    source,
};

const PASS: i32 = 1;
const DROP: i32 = 0;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// IPv6 extension headers (RFC 8200 section 4, IANA "IPv6 Extension Header Types").
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;
const NEXTHDR_MOBILITY: u8 = 135;
const NEXTHDR_HIP: u8 = 139;
const NEXTHDR_SHIM6: u8 = 140;
/// Extension headers walked before we give up (and drop): Linux lets a socket add at
/// most four (hop-by-hop, destination options twice, routing) plus a fragment header.
const MAX_EXT_HEADERS: u32 = 8;
/// Option bytes an IPv4 header can hold ((15 - 5) * 4).
const MAX_IPV4_OPTION_BYTES: u32 = 40;

#[map(name = "HB_GENERATION")]
static GENERATION: Array<u64> = Array::pinned(1, 0);

#[map(name = "HB_SKB_FLOWS")]
static SKB_CACHE: PerCpuArray<FlowCache> = PerCpuArray::pinned(1, 0);

/// A packet's destination and the header facts the verdict and the event need.
struct Dest {
    family: u16,
    /// The transport protocol after any extension headers (a non-first IPv6 fragment
    /// reports `NEXTHDR_FRAGMENT`: it carries no transport header).
    protocol: u8,
    /// Offset of the transport header.
    l4: usize,
    addr: [u8; 16],
}

/// What the header says about where the packet goes.
enum Parsed {
    /// No routing header, no source route: `Dest` is where it goes.
    Plain(Dest),
    /// A routing header or source-route option (or a chain we could not walk).
    SourceRoute(Dest),
    /// Not even the fixed header could be read.
    Unreadable,
}

/// Judges every packet from an enrolled cgroup on its real destination (see the module
/// header), counts every packet per cgroup. Drops on an unreadable header.
#[cgroup_skb(egress)]
pub fn hb_skb_egress(ctx: SkBuffContext) -> i32 {
    let skb: *mut __sk_buff = ctx.skb.skb;
    // SAFETY: skb is the program's context pointer.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    // SAFETY: as above; the skb form of the helper reads skb->sk (0 without a socket).
    let socket_cookie = || unsafe { bpf_get_socket_cookie(skb.cast()) };
    let len = u64::from(ctx.len());
    let parsed = parse(&ctx);
    let generation = GENERATION.get(0).copied().unwrap_or(0);

    // An IPv6 packet other than TCP or UDP from a source that is not the host's (a ping
    // or raw socket: see `source`), before the cache: its source can change per packet.
    if let Parsed::Plain(d) = &parsed
        && source::egress_refused(&ctx, d.family, d.protocol)
        && let Some(e) = policy::enrollment(cgroup_id, |level| unsafe {
            bpf_skb_ancestor_cgroup_id(skb, level)
        })
    {
        let from = Dest {
            family: d.family,
            protocol: d.protocol,
            l4: d.l4,
            addr: source::egress_source(&ctx),
        };
        return refuse(
            &ctx,
            cgroup_id,
            e.policy_id,
            len,
            reason::NONLOCAL_SOURCE,
            Some(&from),
        );
    }
    if let Parsed::Plain(d) = &parsed
        && cached(&socket_cookie, cgroup_id, generation, d, len)
    {
        return PASS;
    }
    // Asked for only here: a cached flow whose verdict holds for any socket never needs it.
    let cookie = socket_cookie();
    if let Parsed::Plain(d) = &parsed {
        // The socket's admitted peer: one lookup in its own storage, and the flow takes
        // the cache. Only enrolled sockets have records, so the packet counts as
        // enrolled.
        // SAFETY: a verifier-checked 8-byte read of the context's `sk` field (null
        // without a socket; `admitted` checks).
        let sk = unsafe { (*skb).__bindgen_anon_2.sk };
        // A validated peer the host has gained since (a local service on it now), and
        // that no exception covers, is judged in full below: its allow entry was revoked,
        // so the flow is refused. One lookup more, on a miss only; the agent bumps the
        // generation once it has revoked, so cached flows miss.
        if let Some((dns_mark, validated)) = policy::admitted(sk, d.family, &d.addr)
            && !(validated && source::host_own(d.family, &d.addr))
        {
            if dns_mark == SOCK_DNS_UDP {
                // A redirected UDP DNS socket: the resolver learns its sandbox from this.
                dns::record_datagram(&ctx, sk, d.family, d.l4);
            }
            remember(cookie, cgroup_id, generation, d, FLOW_ENROLLED, len);
            return PASS;
        }
    }

    let enrollment = policy::enrollment(cgroup_id, |level| unsafe {
        bpf_skb_ancestor_cgroup_id(skb, level)
    });
    let Some(e) = enrollment else {
        if let Parsed::Plain(d) = &parsed {
            // Enrollment changes only with the generation: any socket of this cgroup.
            remember(cookie, cgroup_id, generation, d, FLOW_ANY_SOCKET, len);
        }
        return PASS;
    };
    let d = match parsed {
        Parsed::Plain(d) => d,
        Parsed::SourceRoute(d) => {
            return refuse(
                &ctx,
                cgroup_id,
                e.policy_id,
                len,
                reason::SOURCE_ROUTE,
                Some(&d),
            );
        }
        // Enrolled, header unreadable: fail closed.
        Parsed::Unreadable => {
            return refuse(&ctx, cgroup_id, e.policy_id, len, reason::DENY_RANGE, None);
        }
    };
    // Redirected DNS to hb's resolver on loopback whose socket has no record (its storage
    // could not be allocated) or never had one (a raw socket aiming at it), or whose
    // record is another peer's (a UDP socket connected elsewhere: a datagram's
    // destination never replaces a connected peer). Never cached: the cache is keyed by
    // address only, and other ports of loopback stay denied.
    if dns::is_resolver_addr(d.family, &d.addr)
        && dns::is_resolver_port(port_at(&ctx, d.protocol, d.l4))
    {
        if d.protocol == IPPROTO_UDP {
            // The redirect recorded who sent it whatever the socket's peer: file it, or
            // the resolver charged the query to the policy's unattributed share, or to
            // whichever sandbox's datagram last came from this client end (attack review
            // 45). A socket the redirect never recorded files nothing.
            // SAFETY: a verifier-checked 8-byte read of the context's `sk` field (null
            // without a socket; `record_datagram` checks).
            let sk = unsafe { (*skb).__bindgen_anon_2.sk };
            dns::record_datagram(&ctx, sk, d.family, d.l4);
        }
        pass_uncached(cgroup_id, len);
        return PASS;
    }
    // A guarded connection to its policy's guard on loopback whose socket has no record
    // (see `guard::is_own_guard`). Never cached, as above.
    if d.protocol == IPPROTO_TCP
        && guard::is_own_guard(
            e.policy_id,
            d.family,
            &d.addr,
            port_at(&ctx, d.protocol, d.l4),
        )
    {
        pass_uncached(cgroup_id, len);
        return PASS;
    }
    let judgement = if d.family == AF_INET {
        policy::judge4(e.policy_id, [d.addr[0], d.addr[1], d.addr[2], d.addr[3]])
    } else {
        policy::judge6(e.policy_id, d.addr)
    };
    match judgement {
        Judgement::Allow(counter) => {
            // A static CIDR's allow changes only with the generation; a validated
            // address's expires, so only this socket may reuse it.
            let flags = if counter == Counter::AllowCidr {
                FLOW_ENROLLED | FLOW_ANY_SOCKET
            } else {
                FLOW_ENROLLED
            };
            remember(cookie, cgroup_id, generation, &d, flags, len);
            PASS
        }
        Judgement::Deny(reason, _) => refuse(&ctx, cgroup_id, e.policy_id, len, reason, Some(&d)),
    }
}

/// Whether this CPU's cache holds the packet's flow; if so, counts the packet there.
#[inline(always)]
fn cached(cookie: &impl Fn() -> u64, cgroup_id: u64, generation: u64, d: &Dest, len: u64) -> bool {
    let Some(c) = SKB_CACHE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot; programs do not migrate while they run (another run on
    // this CPU may interrupt this one: `seq`, see `FlowCache`).
    let c = unsafe { &mut *c };
    // Every read of the flow is volatile, so none moves out from between the two reads
    // of `seq` (the BPF backend has no compiler fence).
    // SAFETY: reads of this CPU's slot through a valid reference.
    let (before, same, after) = unsafe {
        let before = core::ptr::read_volatile(&c.seq);
        let same = core::ptr::read_volatile(&c.cgroup_id) == cgroup_id
            && core::ptr::read_volatile(&c.generation) == generation
            && core::ptr::read_volatile(&c.family) == d.family
            && same_addr(&c.addr, &d.addr)
            && (core::ptr::read_volatile(&c.flags) & FLOW_ANY_SOCKET != 0
                || core::ptr::read_volatile(&c.cookie) == cookie());
        (before, same, core::ptr::read_volatile(&c.seq))
    };
    if !same || before & 1 != 0 || after != before {
        return false;
    }
    if c.flags & FLOW_ENROLLED != 0 {
        c.pending_packets += 1;
        c.pending_bytes += len;
        if c.pending_packets >= SKB_FLUSH_PACKETS {
            flush(c);
        }
    }
    true
}

/// Counts a passed packet that is not cached.
#[inline(always)]
fn pass_uncached(cgroup_id: u64, len: u64) {
    account(cgroup_id, |s| {
        s.pass_packets += 1;
        s.pass_bytes += len;
    });
    policy::count(Counter::SkbPass);
}

/// Drops (or, in audit mode, passes) a packet, with event and counters.
#[inline(always)]
fn refuse(
    ctx: &SkBuffContext,
    cgroup_id: u64,
    policy_id: u32,
    len: u64,
    reason: u32,
    d: Option<&Dest>,
) -> i32 {
    let verdict = policy::refusal_verdict(policy_id);
    if verdict == verdict::AUDIT {
        // Counted, not reported: the socket hook already reported the connection, and a
        // per-packet audit event would flood the ring buffer.
        account(cgroup_id, |s| {
            s.audit_packets += 1;
            s.audit_bytes += len;
        });
        policy::count(Counter::SkbAudit);
        return PASS;
    }
    let (family, protocol, port, addr) = match d {
        Some(d) => (d.family, d.protocol, port_at(ctx, d.protocol, d.l4), d.addr),
        None => (0, 0, 0, [0; 16]),
    };
    policy::report(
        ctx,
        Report {
            cgroup_id,
            policy_id,
            hook: hook::SKB_EGRESS,
            verdict,
            reason,
            family,
            protocol: u16::from(protocol),
            port,
            addr,
            task_context: false,
        },
    );
    account(cgroup_id, |s| {
        s.drop_packets += 1;
        s.drop_bytes += len;
    });
    policy::count(Counter::SkbDrop);
    DROP
}

/// Whether the slot's destination (read as two volatile words) is `addr`.
#[inline(always)]
fn same_addr(slot: &[u8; 16], addr: &[u8; 16]) -> bool {
    let words = slot.as_ptr().cast::<u64>();
    // SAFETY: 16 bytes of the slot, 8-aligned in `FlowCache` (offset 24), read as two
    // words.
    let (a, b) = unsafe {
        (
            core::ptr::read_volatile(words),
            core::ptr::read_volatile(words.add(1)),
        )
    };
    let (mut x, mut y) = ([0u8; 8], [0u8; 8]);
    x.copy_from_slice(&addr[..8]);
    y.copy_from_slice(&addr[8..]);
    a == u64::from_ne_bytes(x) && b == u64::from_ne_bytes(y)
}

/// Takes this CPU's cache slot for a passed flow, first adding what the previous flow
/// had pending to its cgroup's statistics.
#[inline(always)]
fn remember(cookie: u64, cgroup_id: u64, generation: u64, d: &Dest, flags: u32, len: u64) {
    let Some(c) = SKB_CACHE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot.
    let c = unsafe { &mut *c };
    // Volatile throughout, so no write of the flow moves out from between the two of
    // `seq` (the BPF backend has no compiler fence).
    // SAFETY: reads and writes of this CPU's slot through a valid reference.
    unsafe {
        let seq = core::ptr::read_volatile(&c.seq);
        if seq & 1 != 0 {
            // This run interrupted another one writing the slot: it is left to that one
            // (two writers interleaved would leave a mix of both flows behind an even
            // seq).
            return;
        }
        core::ptr::write_volatile(&mut c.seq, seq.wrapping_add(1));
        flush(c);
        core::ptr::write_volatile(&mut c.cookie, cookie);
        core::ptr::write_volatile(&mut c.cgroup_id, cgroup_id);
        core::ptr::write_volatile(&mut c.generation, generation);
        core::ptr::write_volatile(&mut c.family, d.family);
        core::ptr::write_volatile(&mut c.addr, d.addr);
        core::ptr::write_volatile(&mut c.flags, flags);
        if flags & FLOW_ENROLLED != 0 {
            core::ptr::write_volatile(&mut c.pending_packets, 1);
            core::ptr::write_volatile(&mut c.pending_bytes, len);
        }
        core::ptr::write_volatile(&mut c.seq, seq.wrapping_add(2));
    }
}

/// Adds a cache slot's pending packets to its cgroup's statistics.
#[inline(always)]
fn flush(c: &mut FlowCache) {
    if c.pending_packets == 0 {
        return;
    }
    let (packets, bytes) = (c.pending_packets, c.pending_bytes);
    c.pending_packets = 0;
    c.pending_bytes = 0;
    policy::count_n(Counter::SkbPass, packets);
    account(c.cgroup_id, |s| {
        s.pass_packets += packets;
        s.pass_bytes += bytes;
    });
}

/// Reads the destination from the fixed header (in place when linear, else through the
/// load helper) and walks IPv4 options or IPv6 extension headers when there are any.
#[inline(always)]
fn parse(ctx: &SkBuffContext) -> Parsed {
    // SAFETY: reading the context's data pointers; every dereference below is bounds
    // checked against data_end, which the verifier requires and enforces.
    let (data, end) = unsafe {
        (
            (*ctx.skb.skb).data as usize,
            (*ctx.skb.skb).data_end as usize,
        )
    };
    let mut addr = [0u8; 16];
    let (first, protocol) = if data + 40 <= end {
        // SAFETY: 40 bytes are in bounds: a whole IPv6 header, more than an IPv4 one.
        let first = unsafe { *(data as *const u8) };
        match first >> 4 {
            4 => {
                // SAFETY: offsets 9 and 16..20 lie within the 40 checked bytes.
                let (protocol, dst) =
                    unsafe { (*((data + 9) as *const u8), *((data + 16) as *const [u8; 4])) };
                addr[..4].copy_from_slice(&dst);
                (first, protocol)
            }
            6 => {
                // SAFETY: offsets 6 and 24..40 lie within the 40 checked bytes.
                let (protocol, dst) = unsafe {
                    (
                        *((data + 6) as *const u8),
                        *((data + 24) as *const [u8; 16]),
                    )
                };
                addr = dst;
                (first, protocol)
            }
            _ => return Parsed::Unreadable,
        }
    } else {
        let Ok(first) = ctx.load::<u8>(0) else {
            return Parsed::Unreadable;
        };
        match first >> 4 {
            4 => {
                let (Ok(dst), Ok(protocol)) = (ctx.load::<[u8; 4]>(16), ctx.load::<u8>(9)) else {
                    return Parsed::Unreadable;
                };
                addr[..4].copy_from_slice(&dst);
                (first, protocol)
            }
            6 => {
                let (Ok(dst), Ok(protocol)) = (ctx.load::<[u8; 16]>(24), ctx.load::<u8>(6)) else {
                    return Parsed::Unreadable;
                };
                addr = dst;
                (first, protocol)
            }
            _ => return Parsed::Unreadable,
        }
    };
    if first >> 4 == 4 {
        let ihl = usize::from(first & 0x0f) * 4;
        if ihl < 20 {
            return Parsed::Unreadable;
        }
        let d = Dest {
            family: AF_INET,
            protocol,
            l4: ihl,
            addr,
        };
        if ihl == 20 || ipv4_options_safe(ctx, ihl) {
            return Parsed::Plain(d);
        }
        return Parsed::SourceRoute(d);
    }
    let mut d = Dest {
        family: AF_INET6,
        protocol,
        l4: 40,
        addr,
    };
    if is_ipv6_ext_header(protocol) {
        return match walk_ipv6_ext_headers(ctx, protocol) {
            Some((protocol, l4)) => {
                d.protocol = protocol;
                d.l4 = l4;
                Parsed::Plain(d)
            }
            None => Parsed::SourceRoute(d),
        };
    }
    Parsed::Plain(d)
}

/// Whether an IPv4 option list (bytes 20..`ihl`) is well formed and holds no LSRR or
/// SSRR option (see the module header for why only those two).
#[inline(always)]
fn ipv4_options_safe(ctx: &SkBuffContext, ihl: usize) -> bool {
    let mut off = 20usize;
    let mut i = 0;
    while i < MAX_IPV4_OPTION_BYTES {
        i += 1;
        if off >= ihl {
            return true;
        }
        let Ok(kind) = ctx.load::<u8>(off) else {
            return false;
        };
        match kind {
            // End of option list: the rest is padding.
            0 => return true,
            // No operation: one byte.
            1 => {
                off += 1;
                continue;
            }
            _ => {}
        }
        let number = kind & 0x1f;
        if number == 3 || number == 9 {
            return false;
        }
        let Ok(len) = ctx.load::<u8>(off + 1) else {
            return false;
        };
        if len < 2 {
            return false;
        }
        off += usize::from(len);
        if off > ihl {
            return false;
        }
    }
    off >= ihl
}

#[inline(always)]
fn is_ipv6_ext_header(next: u8) -> bool {
    matches!(
        next,
        NEXTHDR_HOP
            | NEXTHDR_ROUTING
            | NEXTHDR_FRAGMENT
            | NEXTHDR_AUTH
            | NEXTHDR_DEST
            | NEXTHDR_MOBILITY
            | NEXTHDR_HIP
            | NEXTHDR_SHIM6
    )
}

/// Walks the IPv6 extension-header chain from `next` at offset 40: the transport protocol
/// and its offset, or `None` when a routing header (any type) is present or the chain
/// cannot be walked to its end within [`MAX_EXT_HEADERS`].
#[inline(always)]
fn walk_ipv6_ext_headers(ctx: &SkBuffContext, mut next: u8) -> Option<(u8, usize)> {
    let mut off = 40usize;
    let mut i = 0;
    while i < MAX_EXT_HEADERS {
        i += 1;
        if !is_ipv6_ext_header(next) {
            return Some((next, off));
        }
        if next == NEXTHDR_ROUTING {
            return None;
        }
        // Every extension header starts with its next-header byte and a length byte.
        let h: [u8; 4] = ctx.load(off).ok()?;
        if next == NEXTHDR_FRAGMENT {
            // A non-first fragment carries no transport header: report the fragment.
            // (A routing header would sit before the fragment header, already seen.)
            if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                return Some((NEXTHDR_FRAGMENT, off));
            }
            off += 8;
        } else if next == NEXTHDR_AUTH {
            // RFC 4302: length in 4-octet units, minus 2.
            off += (usize::from(h[1]) + 2) * 4;
        } else {
            // RFC 8200: length in 8-octet units, not counting the first 8.
            off += (usize::from(h[1]) + 1) * 8;
        }
        next = h[0];
    }
    if is_ipv6_ext_header(next) {
        return None;
    }
    Some((next, off))
}

/// Destination port of a TCP or UDP header at `l4` (0 for other protocols).
#[inline(always)]
fn port_at(ctx: &SkBuffContext, protocol: u8, l4: usize) -> u16 {
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return 0;
    }
    ctx.load::<u16>(l4 + 2).map(u16::from_be).unwrap_or(0)
}

/// Adds to a cgroup's per-CPU statistics, creating the entry on first use.
#[inline(always)]
fn account(cgroup_id: u64, add: impl Fn(&mut CgroupStats)) {
    if let Some(s) = CG_STATS.get_ptr_mut(cgroup_id) {
        // SAFETY: per-CPU value, this CPU's copy.
        add(unsafe { &mut *s });
        return;
    }
    let mut s = CgroupStats::default();
    add(&mut s);
    if CG_STATS.insert(cgroup_id, s, 0).is_err() {
        policy::count(Counter::MapFull);
    }
}
