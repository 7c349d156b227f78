//! Inbound: what may reach a sandbox's sockets from outside, and the peers of the
//! connections it accepts.
//!
//! * `cgroup_skb/ingress` ([`hb_skb_ingress`]): under a policy without `inbound = true`
//!   (`POLICY_INBOUND`), a sandbox accepts no connection from outside its own sandbox and
//!   receives no datagram from a peer it was not admitted to talk to. Every refusal is an
//!   event (`skb_ingress`, `inbound`) with the sender's address and the local port.
//! * `sock_ops` at `TCP_LISTEN_CB` ([`listen_on_loopback_only`]): under a policy without
//!   `inbound = true`, a sandbox's TCP listener is bound to `lo` as it starts to listen,
//!   so a SYN that comes in from the network finds no listener and the kernel answers it
//!   with a reset, as for a port nobody holds. Dropped here instead, it met silence, and
//!   silence on one port beside resets on the others told any host on the network which
//!   ports the sandbox held: a channel out to an address the policy never validated,
//!   as many bits per scan as ports scanned (attack review 47). Its own clients are not
//!   touched: a connection from this host to any of its addresses comes in through `lo`.
//! * `sock_ops` ([`hb_sock_ops`]): when a guarded connection or a redirected TCP DNS
//!   connection sends its SYN, its record is filed for the guard (`guard::record_flow`)
//!   or the resolver (`dns::record_flow`) under [`connect_key`]; when a connection is accepted, its client becomes the
//!   accepted socket's admitted peer in `HB_SOCK_PEER`, so the egress side, which judges
//!   every packet on its destination, lets the replies through. Before that, the SYN-ACK
//!   leaves from the listener: an admitted SYN makes its sender the listener's admitted
//!   peer ([`admit_on_listener`]). And for the port bound (`socks`): a counted socket
//!   that connects gets its state callback turned on, and its connection entering
//!   TIME_WAIT is counted (`socks::watch_close`, `socks::state_changed`).
//!
//! Where the kernel runs `cgroup_skb/ingress`: in `sk_filter_trim_cap()` when a packet is
//! delivered to a socket (`tcp_filter()` in `tcp_v4_rcv`/`tcp_v6_rcv`,
//! `udp_queue_rcv_one_skb()`, `sock_queue_rcv_skb()` for ping and raw sockets), with the
//! receiving socket as `skb->sk`, after IP reassembly; the program is the one of that
//! socket's cgroup (see `__cgroup_bpf_run_filter_skb` in kernel/bpf/cgroup.c). For TCP, the
//! SYN that opens a connection, and the ACK that completes the handshake (request-socket
//! or SYN-cookie path), are filtered on the *listening* socket: `tcp_v4_rcv` calls
//! `tcp_filter()` on `req->rsk_listener` before `tcp_check_req()`, and a SYN that meets a
//! TIME_WAIT socket is re-looked-up to its listener first. Every later segment is
//! filtered on the connection's own socket. Packets no socket receives (ICMP echo
//! answered by the kernel, RSTs to closed ports) never reach a cgroup program.
//!
//! The rules, for sockets of an enrolled cgroup under a policy without `POLICY_INBOUND`:
//! * TCP sockets: a segment that reaches a socket in LISTEN state opens a connection (a
//!   SYN, or the ACK of a SYN-cookie handshake). It passes only when the sending socket is
//!   found in this network namespace (`bpf_sk_lookup_tcp` on the reversed 4-tuple, a
//!   connected socket, never a listener), belongs to the same sandbox (the same nearest
//!   enrolled cgroup) and sends from an address of this host (the address it connected
//!   to, or loopback: see [`from_same_sandbox`]); else it is dropped. Segments to every
//!   other TCP socket pass without a lookup: they belong to a connection the sandbox opened (judged by the connect hooks)
//!   or accepted (judged here, at LISTEN time). A SYN without ACK to a connecting socket
//!   (simultaneous open) can only come from the peer the sandbox connect()ed to.
//! * UDP sockets: a datagram passes from the socket's admitted peer (`HB_SOCK_PEER`), from
//!   hb's DNS resolver (its address and the port of the sandbox's policy), or from an
//!   address the policy allows as a destination (deny ranges, exceptions, static CIDRs,
//!   validated addresses: the very verdict `connect` would give); else it is dropped.
//! * Every other socket (ping sockets' ICMP echo replies, raw sockets of any protocol —
//!   a raw TCP socket hears copies of every TCP segment, so it is no TCP socket here —,
//!   SCTP, UDP-Lite, …): as UDP, without the resolver: only from the admitted peer or an
//!   address the policy allows. So a raw or ping socket hears echo replies from hosts it
//!   may reach and nothing from anyone else.
//!
//! Under `inbound = true` everything passes; an admitted segment to a listener still
//! records its sender (see [`admit_on_listener`]). A policy in audit mode passes what
//! would be dropped and reports it (verdict `audit`).
//! Cgroups that are not enrolled are never touched. Fail closed: a packet to an enrolled
//! socket whose headers or socket cannot be read is dropped (and reported).
//!
//! Return value: 1 passes the packet, 0 drops it. Addresses are wire bytes, network
//! order; the context starts at the network header.

use aya_ebpf::{
    bindings::{
        __sk_buff, BPF_F_CURRENT_NETNS, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB,
        BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_SOCK_OPS_TCP_LISTEN_CB, BPF_TCP_LISTEN, bpf_sock,
        bpf_sock_tuple,
    },
    helpers::{
        bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id,
        generated::{
            bpf_get_netns_cookie, bpf_setsockopt, bpf_sk_ancestor_cgroup_id, bpf_sk_cgroup_id,
            bpf_sk_fullsock, bpf_sk_lookup_tcp, bpf_sk_release,
        },
    },
    macros::{cgroup_skb, sock_ops},
    programs::{SkBuffContext, SockOpsContext},
};
use hb_common::{
    AF_INET, AF_INET6, Counter, FlowKey, POLICY_INBOUND, SOCK_ADMIT_INBOUND, SockDest, hook,
    reason, verdict,
};

use crate::{
    dns,
    policy::{self, Judgement, Report, governing},
};

const PASS: i32 = 1;
const DROP: i32 = 0;

const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;

/// What the program reads from the packet: its sender, its receiver (both network
/// order, IPv4 in the first four bytes) and, when the transport header directly follows
/// the IP header, its offset.
struct Packet {
    family: u16,
    src: [u8; 16],
    dst: [u8; 16],
    /// Offset of the transport header when it is of the receiving socket's protocol (an
    /// IPv6 extension header in between leaves it unknown: ports cannot be read).
    l4: Option<usize>,
}

/// The receiving socket, as `bpf_sock` shows it.
struct Receiver {
    /// `SOCK_STREAM`, `SOCK_DGRAM`, `SOCK_RAW`, …
    kind: u32,
    protocol: u32,
    state: u32,
    /// Local port, host order.
    port: u16,
}

/// Drops, for a sandbox whose policy has no `inbound = true`, the connections and
/// datagrams that come from outside it (see the module documentation). Drops on an
/// unreadable socket or header.
#[cgroup_skb(ingress)]
pub fn hb_skb_ingress(ctx: SkBuffContext) -> i32 {
    let receiver = receiver(&ctx);
    // The hot path, before any map lookup: segments of established (or connecting) TCP
    // connections were judged when the connection was opened or accepted.
    if let Some(r) = &receiver
        && r.is_tcp()
        && r.state != BPF_TCP_LISTEN
    {
        return PASS;
    }
    let skb: *mut __sk_buff = ctx.skb.skb;
    // SAFETY: skb is the program's context pointer.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    let Some((sandbox, e)) = governing(cgroup_id, |level| unsafe {
        // SAFETY: as above.
        bpf_skb_ancestor_cgroup_id(skb, level)
    }) else {
        return PASS;
    };
    let inbound = policy::policy_flags(e.policy_id) & POLICY_INBOUND != 0;
    // Enrolled, socket or header unreadable: fail closed (unless inbound is open anyway).
    let Some(r) = receiver else {
        return if inbound {
            PASS
        } else {
            refuse(&ctx, cgroup_id, e.policy_id, 0, 0, None)
        };
    };
    if inbound && !r.is_tcp() {
        return PASS;
    }
    let Some(p) = read_packet(&ctx, r.protocol) else {
        return if inbound {
            PASS
        } else {
            refuse(&ctx, cgroup_id, e.policy_id, r.protocol, r.port, None)
        };
    };
    if r.is_tcp() {
        // A segment to a listener: a connection being opened.
        if inbound || from_same_sandbox(&ctx, &p, r.port, sandbox) {
            admit_on_listener(&ctx, &p);
            return PASS;
        }
    } else if from_admitted_peer(&ctx, &p, e.policy_id)
        || (r.is_udp() && from_resolver(&ctx, &p, e.policy_id))
    {
        return PASS;
    }
    refuse(&ctx, cgroup_id, e.policy_id, r.protocol, r.port, Some(&p))
}

/// Records an admitted client as the *listener's* admitted peer, for the egress side: the
/// SYN-ACK leaves with the listener as its socket (the request socket's full socket,
/// `BPF_CGROUP_RUN_PROG_INET_EGRESS` in ip_finish_output), right after this SYN is
/// processed. One entry per listener: a SYN-ACK that meets another client's entry (two
/// SYNs at once) is judged in full, and the client's SYN retransmission records it again.
#[inline(always)]
fn admit_on_listener(ctx: &SkBuffContext, p: &Packet) {
    let d = SockDest {
        addr: p.src,
        family: p.family,
        dns: 0,
        flags: SOCK_ADMIT_INBOUND,
    };
    // skb->sk is the listener. Two SYNs processed at once on two CPUs (the listener is
    // not locked for them) may leave a record mixing both clients: the SYN-ACKs then meet
    // the full verdict, and the clients' retransmissions record them again.
    policy::set_peer(skb_sock(ctx), d);
}

/// Drops (or, in audit mode, passes) an inbound packet, with an event.
#[inline(always)]
fn refuse(
    ctx: &SkBuffContext,
    cgroup_id: u64,
    policy_id: u32,
    protocol: u32,
    port: u16,
    p: Option<&Packet>,
) -> i32 {
    let verdict = policy::refusal_verdict(policy_id);
    let (family, addr) = match p {
        Some(p) => (p.family, p.src),
        None => (0, [0; 16]),
    };
    policy::report(
        ctx,
        Report {
            cgroup_id,
            policy_id,
            hook: hook::SKB_INGRESS,
            verdict,
            reason: reason::INBOUND,
            family,
            protocol: protocol as u16,
            port,
            addr,
            task_context: false,
        },
    );
    if verdict == verdict::AUDIT {
        policy::count(Counter::Audit);
        PASS
    } else {
        DROP
    }
}

/// The receiving socket (`skb->sk`, which cgroup ingress sets to it). `None` when it is
/// not a full socket, which the kernel never hands a cgroup program here.
#[inline(always)]
fn receiver(ctx: &SkBuffContext) -> Option<Receiver> {
    // SAFETY: reading the context's socket pointer, which the verifier checks for NULL
    // through bpf_sk_fullsock (it accepts a NULL argument and returns NULL).
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return None;
    }
    // SAFETY: sk is the context's socket, non-NULL.
    let full = unsafe { bpf_sk_fullsock(sk) };
    if full.is_null() {
        return None;
    }
    // SAFETY: a full socket: type, protocol, state and src_port are readable.
    unsafe {
        Some(Receiver {
            kind: (*full).type_,
            protocol: (*full).protocol,
            state: (*full).state,
            port: (*full).src_port as u16,
        })
    }
}

impl Receiver {
    /// A TCP socket. Not a raw socket of protocol 6, which hears copies of every TCP
    /// segment, listener or not: that one is judged like any raw socket.
    #[inline(always)]
    fn is_tcp(&self) -> bool {
        self.kind == SOCK_STREAM && self.protocol == IPPROTO_TCP
    }

    #[inline(always)]
    fn is_udp(&self) -> bool {
        self.kind == SOCK_DGRAM && self.protocol == IPPROTO_UDP
    }
}

/// Reads the IP header. `None` when it cannot be read or is neither IPv4 nor IPv6.
#[inline(always)]
fn read_packet(ctx: &SkBuffContext, protocol: u32) -> Option<Packet> {
    let first: u8 = ctx.load(0).ok()?;
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    match first >> 4 {
        4 => {
            let s: [u8; 4] = ctx.load(12).ok()?;
            let d: [u8; 4] = ctx.load(16).ok()?;
            src[..4].copy_from_slice(&s);
            dst[..4].copy_from_slice(&d);
            let next: u8 = ctx.load(9).ok()?;
            Some(Packet {
                family: AF_INET,
                src,
                dst,
                l4: (u32::from(next) == protocol).then_some(usize::from(first & 0x0f) * 4),
            })
        }
        6 => {
            let next: u8 = ctx.load(6).ok()?;
            Some(Packet {
                family: AF_INET6,
                src: ctx.load(8).ok()?,
                dst: ctx.load(24).ok()?,
                l4: (u32::from(next) == protocol).then_some(40),
            })
        }
        _ => None,
    }
}

/// Source and destination port of a TCP or UDP header, network order.
#[inline(always)]
fn ports(ctx: &SkBuffContext, p: &Packet) -> Option<(u16, u16)> {
    let l4 = p.l4?;
    Some((ctx.load(l4).ok()?, ctx.load(l4 + 2).ok()?))
}

/// Whether a segment to a listener comes from a connected TCP socket of the same sandbox
/// in this network namespace. The sender is looked up by the reversed 4-tuple: its local
/// end is the packet's source. A listener that the lookup falls back to (one bound to
/// the source port on a wildcard address) is not a sender and does not count.
#[inline(always)]
fn from_same_sandbox(ctx: &SkBuffContext, p: &Packet, local_port: u16, sandbox: u64) -> bool {
    let Some((sport, dport)) = ports(ctx, p) else {
        return false;
    };
    // The listener's own port, as a cross-check of the header we read.
    if u16::from_be(dport) != local_port {
        return false;
    }
    // The sender's address becomes the admitted peer of the listener and of the accepted
    // connection, which the egress side then passes without judging it: it must be an
    // address of this host, or the replies leave it. A socket of the sandbox may bind an
    // address that is not (`IPV6_FREEBIND`, `net.ipv6.ip_nonlocal_bind`) and connect from
    // it; the SYN is delivered locally, the SYN-ACK and every byte written to the
    // accepted connection would go to that address (attack review 13). So the client
    // must send from the very address it connected to (what the kernel picks for a local
    // destination) or from loopback; both are this host's.
    if p.src != p.dst && !is_loopback(p.family, &p.src) {
        return false;
    }
    // SAFETY: plain data, every byte pattern is valid; zeroed so no byte is uninitialised.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let size = if p.family == AF_INET {
        // SAFETY: writing the union's IPv4 member.
        unsafe {
            let t = &mut tuple.__bindgen_anon_1.ipv4;
            t.saddr = u32::from_ne_bytes([p.dst[0], p.dst[1], p.dst[2], p.dst[3]]);
            t.daddr = u32::from_ne_bytes([p.src[0], p.src[1], p.src[2], p.src[3]]);
            t.sport = dport;
            t.dport = sport;
        }
        core::mem::size_of::<u32>() * 2 + core::mem::size_of::<u16>() * 2
    } else {
        // SAFETY: writing the union's IPv6 member.
        unsafe {
            let t = &mut tuple.__bindgen_anon_1.ipv6;
            t.saddr = words(&p.dst);
            t.daddr = words(&p.src);
            t.sport = dport;
            t.dport = sport;
        }
        core::mem::size_of::<u32>() * 8 + core::mem::size_of::<u16>() * 2
    };
    // SAFETY: the context is an skb (cgroup_skb may look sockets up); tuple is a
    // properly sized stack buffer. The reference taken is released below on every path.
    let sk = unsafe {
        bpf_sk_lookup_tcp(
            ctx.skb.skb.cast(),
            &mut tuple,
            size as u32,
            BPF_F_CURRENT_NETNS as u64,
            0,
        )
    };
    if sk.is_null() {
        return false;
    }
    let same = same_sandbox_socket(sk, sandbox);
    // SAFETY: releasing the reference bpf_sk_lookup_tcp took.
    unsafe { bpf_sk_release(sk.cast()) };
    same
}

/// Whether a looked-up socket is a connected (not listening) socket of `sandbox`.
#[inline(always)]
fn same_sandbox_socket(sk: *mut bpf_sock, sandbox: u64) -> bool {
    // SAFETY: sk is a referenced full socket from bpf_sk_lookup_tcp.
    if unsafe { (*sk).state } == BPF_TCP_LISTEN {
        return false;
    }
    // SAFETY: as above; the cgroup helpers take a socket pointer.
    let own = unsafe { bpf_sk_cgroup_id(sk.cast()) };
    let peer = governing(own, |level| unsafe {
        // SAFETY: as above.
        bpf_sk_ancestor_cgroup_id(sk.cast(), level)
    });
    matches!(peer, Some((id, _)) if id == sandbox)
}

/// 127.0.0.0/8 or ::1: addresses that never leave the host.
#[inline(always)]
fn is_loopback(family: u16, a: &[u8; 16]) -> bool {
    if family == AF_INET {
        a[0] == 127
    } else {
        a[..15] == [0; 15] && a[15] == 1
    }
}

#[inline(always)]
fn words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// Whether a datagram (or ICMP/raw packet) comes from the receiving socket's admitted
/// peer, or from an address the policy would let the sandbox connect to.
#[inline(always)]
fn from_admitted_peer(ctx: &SkBuffContext, p: &Packet, policy_id: u32) -> bool {
    // skb->sk is the receiving socket.
    if let Some(d) = policy::peer(skb_sock(ctx))
        && same_address(&d, p.family, &p.src)
    {
        return true;
    }
    let judged = if p.family == AF_INET {
        policy::judge4(policy_id, [p.src[0], p.src[1], p.src[2], p.src[3]])
    } else {
        policy::judge6(policy_id, p.src)
    };
    matches!(judged, Judgement::Allow(_))
}

/// Whether a remembered peer is this address (an IPv4-mapped peer matches its IPv4).
#[inline(always)]
fn same_address(d: &SockDest, family: u16, addr: &[u8; 16]) -> bool {
    if d.family == family {
        return d.addr == *addr;
    }
    let mapped =
        d.family == AF_INET6 && d.addr[..10] == [0; 10] && d.addr[10] == 0xff && d.addr[11] == 0xff;
    family == AF_INET && mapped && d.addr[12..] == addr[..4]
}

/// Whether a datagram is an answer of hb's resolver: its address and the port of the
/// sandbox's own policy, where the DNS redirection sent the sandbox's queries (not any
/// port of the resolver's range, which something else on the host could bind).
#[inline(always)]
fn from_resolver(ctx: &SkBuffContext, p: &Packet, policy_id: u32) -> bool {
    if !dns::is_resolver_addr(p.family, &p.src) {
        return false;
    }
    match (ports(ctx, p), dns::resolver_port_of(policy_id)) {
        (Some((sport, _)), Some(port)) => u16::from_be(sport) == port,
        _ => false,
    }
}

/// Records the client of an accepted connection as the accepted socket's admitted peer
/// (`SOCK_ADMIT_INBOUND`), so the egress side passes the replies.
///
/// `BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB` runs for every passively opened connection of
/// a socket in the cgroups this program is attached to (no callback flag needed;
/// `tcp_init_transfer()`), before the accepted socket sends anything, in softirq context
/// (so the current task says nothing about the socket). Every such connection got past
/// [`hb_skb_ingress`] on its listener, which refuses it unless the policy accepts inbound
/// connections, audits, or the client is in the same sandbox: the admission was decided
/// there, this records it, in the accepted socket's own storage. A socket of a cgroup
/// that is not enrolled gets a record that nothing reads (freed with the socket).
/// Storage the kernel cannot allocate is counted as a full map (the replies are then
/// judged in full: fail closed). Addresses: `remote_ip4`/`remote_ip6` are network order; an IPv4 client of a
/// dual-stack IPv6 listener appears IPv4-mapped and is stored as the IPv4 it is, the
/// address its packets carry.
#[sock_ops]
pub fn hb_sock_ops(ctx: SockOpsContext) -> u32 {
    let op = ctx.op();
    if op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        record_client(&ctx);
    } else if op == BPF_SOCK_OPS_STATE_CB {
        crate::socks::state_changed(&ctx);
        crate::guard::forget_flow(&ctx);
        dns::forget_flow(&ctx);
    } else if op == BPF_SOCK_OPS_TCP_LISTEN_CB {
        listen_on_loopback_only(&ctx);
    } else if op == BPF_SOCK_OPS_TCP_CONNECT_CB {
        crate::socks::watch_close(&ctx);
        // Only a connection to a resolver or guard port can have a record to file: every
        // other connect (nearly all of them) leaves here on one context read and two
        // inlined array reads, before the two socket-storage lookups.
        let port = server_port(&ctx);
        if !dns::may_be_resolver_port(port) && !crate::guard::may_be_guard_port(port) {
            return 1;
        }
        crate::guard::record_flow(&ctx);
        dns::record_flow(&ctx);
    }
    1
}

/// `SO_BINDTOIFINDEX` (include/uapi/asm-generic/socket.h).
const SO_BINDTOIFINDEX: i32 = 62;
/// The loopback device's index, the same in every network namespace
/// (`LOOPBACK_IFINDEX`, include/net/net_namespace.h).
const LOOPBACK_IFINDEX: i32 = 1;

/// At `BPF_SOCK_OPS_TCP_LISTEN_CB` (`__inet_listen_sk`, the listener hashed and locked, the
/// caller the task that called `listen`): binds the listener of a sandbox whose policy
/// has no `inbound = true` to `lo`, so it hears only this host (see the module header).
/// Every connection its policy admits comes from this host, through `lo`; the ingress
/// program still judges those. Audit mode leaves the listener as it is (its refusals
/// pass). The call fails only for a listener already bound to another device, which no
/// stream socket under such a policy gets: `cgroup/setsockopt` refuses it the device
/// options (`SO_BINDTODEVICE`, `SO_BINDTOIFINDEX`) and `cgroup/bind6` a link-local
/// address (whose scope binds it to that link's device).
#[inline(always)]
fn listen_on_loopback_only(ctx: &SockOpsContext) {
    let Some((_, e)) = policy::current_enrollment() else {
        return;
    };
    if policy::policy_flags(e.policy_id) & POLICY_INBOUND != 0
        || policy::refusal_verdict(e.policy_id) == verdict::AUDIT
    {
        return;
    }
    let mut lo = LOOPBACK_IFINDEX;
    // SAFETY: the context pointer of a sock_ops program at a callback where the socket is
    // locked, which this helper accepts; `lo` is a 4-byte value on the stack.
    let _ = unsafe {
        bpf_setsockopt(
            ctx.ops.cast(),
            crate::sockopt::SOL_SOCKET,
            SO_BINDTOIFINDEX,
            core::ptr::addr_of_mut!(lo).cast(),
            4,
        )
    };
}

/// The port a connecting socket connects to, host order (see [`connect_key`] for how
/// the kernel hands `remote_port` over).
#[inline(always)]
fn server_port(ctx: &SockOpsContext) -> u16 {
    u16::from_be((ctx.remote_port() >> 16) as u16)
}

/// At `TCP_CONNECT_CB`: the connecting socket's client end (address, the source port
/// just chosen), the port it connects to and its network namespace, as the agent's
/// accepted socket will see them (peer, local port, `SO_NETNS_COOKIE`). `None` for a
/// family other than IPv4 and IPv6.
///
/// `local_port` is host order. `remote_port` is network order, and on a little-endian
/// machine the kernel hands it over shifted into the upper 16 bits
/// (`sock_ops_convert_ctx_access`, `BPF_LSH 16` under `!__BIG_ENDIAN_BITFIELD`).
/// `bpf_get_netns_cookie` takes the sock_ops context (present in Linux 5.15)
/// (`bpf_get_netns_cookie_sock_ops_proto`): the namespace of the socket, not of the task.
#[inline(always)]
pub(crate) fn connect_key(ctx: &SockOpsContext) -> Option<FlowKey> {
    let mut key = FlowKey {
        // SAFETY: the context pointer of a sock_ops program, which this helper accepts.
        netns_cookie: unsafe { bpf_get_netns_cookie(ctx.ops.cast()) },
        client: [0; 16],
        client_port: ctx.local_port() as u16,
        server_port: server_port(ctx),
        family: AF_INET,
        _pad: 0,
    };
    match ctx.family() {
        2 => key.client[..4].copy_from_slice(&ctx.local_ip4().to_ne_bytes()),
        10 => {
            // The verifier allows only 4-byte reads of local_ip6: one word at a time.
            for i in 0..4 {
                // SAFETY: an in-bounds field of the context, read as the u32 it is.
                let word = unsafe {
                    core::ptr::read_volatile(core::ptr::addr_of!((*ctx.ops).local_ip6[i]))
                };
                key.client[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
            }
            key.family = AF_INET6;
        }
        _ => return None,
    }
    Some(key)
}

#[inline(always)]
fn record_client(ctx: &SockOpsContext) {
    let mut d = SockDest {
        addr: [0; 16],
        family: AF_INET,
        dns: 0,
        flags: SOCK_ADMIT_INBOUND,
    };
    match ctx.family() {
        2 => d.addr[..4].copy_from_slice(&ctx.remote_ip4().to_ne_bytes()),
        10 => {
            // The verifier allows only 4-byte reads of remote_ip6: one word at a time.
            for i in 0..4 {
                // SAFETY: an in-bounds field of the context, read as the u32 it is.
                let word = unsafe {
                    core::ptr::read_volatile(core::ptr::addr_of!((*ctx.ops).remote_ip6[i]))
                };
                d.addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
            }
            if d.addr[..10] == [0; 10] && d.addr[10] == 0xff && d.addr[11] == 0xff {
                let v4 = [d.addr[12], d.addr[13], d.addr[14], d.addr[15]];
                d.addr = [0; 16];
                d.addr[..4].copy_from_slice(&v4);
            } else {
                d.family = AF_INET6;
            }
        }
        _ => return,
    }
    // SAFETY: a verifier-checked 8-byte read of the context's `sk` field (the accepted
    // socket; null-checked by `set_peer`).
    let sk = unsafe { (*ctx.ops).__bindgen_anon_2.sk };
    policy::set_peer(sk, d);
}

/// The socket of a `cgroup_skb` packet (`skb->sk`: for ingress the receiving socket, a
/// listener for a SYN), or null.
#[inline(always)]
fn skb_sock(ctx: &SkBuffContext) -> policy::Sock {
    // SAFETY: a verifier-checked 8-byte read of the context's `sk` field.
    unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk }
}
