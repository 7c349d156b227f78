//! DNS redirection: sandbox DNS goes to hb's resolver, whatever nameserver it names.
//!
//! In `connect4|6` and `sendmsg4|6`, a destination on port 53 (UDP or TCP) from an
//! enrolled cgroup is rewritten to the resolver at `port_base + policy id` (see
//! [`DnsConfig`]), and the original nameserver is remembered in the socket's own storage
//! (`HB_DNS_NAMED`, freed by the kernel with the socket: one node-wide LRU keyed by socket
//! cookie let a sandbox that churned redirected sockets push out every other tenant's
//! records, and their open resolver sockets then got replies from the resolver's own
//! address, which stub resolvers drop). In
//! `recvmsg4|6` and `getpeername4|6` a reply from, or a peer that is, the resolver is
//! reported as that original nameserver again, so unmodified resolvers (glibc, musl, Go,
//! Python) accept the answers.
//!
//! IPv6 sockets are sent to `[::1]`: the kernel refuses a sendmsg6 rewritten to an
//! IPv4-mapped address (ENOTSUPP in `udpv6_sendmsg`), so the resolver listens on both.
//!
//! Fail closed: when the original cannot be remembered (no storage), nothing is rewritten
//! and the query is judged like any other connection — to a nameserver the policy does
//! not allow, that is a refusal.
//!
//! A redirected socket's admitted peer (`HB_SOCK_PEER`) is the resolver's address, which
//! is what its packets carry, so `cgroup_skb/egress` passes them on the socket's record.
//!
//! Who sent a datagram: the resolver sees only its source address and port, which a UDP
//! socket may not have yet in `connect4` (the kernel binds it after the hook), so a
//! redirected UDP socket is marked in its admitted peer, and `cgroup_skb/egress` files
//! its first datagram's client end (network namespace, source address and port, resolver
//! port) with its policy and cgroup in `HB_DNS_UDP` ([`record_datagram`]).

use aya_ebpf::{
    bindings::{BPF_SOCK_OPS_STATE_CB_FLAG, BPF_TCP_CLOSE},
    helpers::generated::bpf_get_netns_cookie,
    macros::map,
    maps::{Array, LruHashMap},
    programs::{SkBuffContext, SockAddrContext, SockOpsContext},
};
use hb_common::{AF_INET, AF_INET6, Counter, DnsConfig, DnsOrig, FlowKey, SOCK_DNS_UDP, limits};

use crate::{policy, sock_storage::sock_storage_map};

#[map(name = "HB_DNS")]
static DNS: Array<DnsConfig> = Array::pinned(1, 0);

sock_storage_map! {
    /// Each redirected socket's own record of the nameserver it named and who asked.
    static DNS_NAMED: DnsNamedMap<DnsOrig> = "HB_DNS_NAMED";
}

#[map(name = "HB_DNS_CONNS")]
static DNS_FLOWS: LruHashMap<FlowKey, DnsOrig> = LruHashMap::pinned(limits::DNS_FLOWS, 0);

#[map(name = "HB_DNS_UDP")]
static DNS_UDP: LruHashMap<FlowKey, DnsOrig> = LruHashMap::pinned(limits::DNS_UDP, 0);

/// Port 53 as `bpf_sock_addr.user_port` holds it (network order in the low 16 bits).
pub(crate) const DNS_PORT: u32 = 53u16.to_be() as u32;

const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;

/// `::1` as four `user_ip6` words.
const LOOPBACK6: [u32; 4] = [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])];
/// `::1` as wire bytes.
const LOOPBACK6_BYTES: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

#[inline(always)]
fn config() -> Option<DnsConfig> {
    DNS.get(0).copied().filter(|c| c.enabled != 0)
}

#[inline(always)]
fn resolver_port(cfg: &DnsConfig, policy_id: u32) -> u32 {
    u32::from(cfg.port_base.wrapping_add(policy_id as u16).to_be())
}

/// The socket of a sock_addr hook (`bpf_sock_addr.sk`, never null), for its admitted
/// peer ([`policy::admit`]).
#[inline(always)]
pub(crate) fn sock(ctx: &SockAddrContext) -> policy::Sock {
    // SAFETY: a verifier-checked 8-byte read of the context's `sk` field.
    unsafe { (*ctx.sock_addr).__bindgen_anon_1.sk }
}

/// Remembers what a DNS socket named, if redirection applies: returns the config to
/// redirect with, or `None` to leave the destination alone (and judged as usual).
#[inline(always)]
fn remember(ctx: &SockAddrContext, protocol: u32, orig: DnsOrig) -> Option<DnsConfig> {
    if protocol != IPPROTO_UDP && protocol != IPPROTO_TCP {
        return None;
    }
    let cfg = config()?;
    if !DNS_NAMED.write(sock(ctx), orig) {
        policy::count(Counter::MapFull);
        return None;
    }
    policy::count(Counter::DnsRedirect);
    Some(cfg)
}

/// Redirects a port-53 destination of an IPv4 socket. Returns whether it did.
#[inline(always)]
pub(crate) fn redirect4(
    ctx: &SockAddrContext,
    cgroup_id: u64,
    policy_id: u32,
    protocol: u32,
    admit_flags: u32,
) -> bool {
    // SAFETY: verifier-checked context field accesses (4-byte reads and writes of
    // user_ip4 and user_port are allowed in connect4 and sendmsg4).
    unsafe {
        let sa = &mut *ctx.sock_addr;
        let mut orig = DnsOrig {
            addr: [0; 16],
            port_be: sa.user_port as u16,
            family: AF_INET,
            policy_id,
            cgroup_id,
        };
        orig.addr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
        let Some(cfg) = remember(ctx, protocol, orig) else {
            return false;
        };
        sa.user_ip4 = u32::from_ne_bytes(cfg.addr4);
        sa.user_port = resolver_port(&cfg, policy_id);
        let mut peer = [0u8; 16];
        peer[..4].copy_from_slice(&cfg.addr4);
        policy::admit_marked(sock(ctx), AF_INET, peer, admit_flags, udp_mark(protocol));
    }
    true
}

/// Redirects a port-53 destination of an IPv6 socket to `[::1]`. Returns whether it did.
#[inline(always)]
pub(crate) fn redirect6(
    ctx: &SockAddrContext,
    cgroup_id: u64,
    policy_id: u32,
    protocol: u32,
    admit_flags: u32,
) -> bool {
    // SAFETY: as in redirect4; user_ip6 is accessed as four 4-byte words.
    unsafe {
        let sa = &mut *ctx.sock_addr;
        let mut orig = DnsOrig {
            addr: [0; 16],
            port_be: sa.user_port as u16,
            family: AF_INET6,
            policy_id,
            cgroup_id,
        };
        for (i, w) in [
            sa.user_ip6[0],
            sa.user_ip6[1],
            sa.user_ip6[2],
            sa.user_ip6[3],
        ]
        .iter()
        .enumerate()
        {
            orig.addr[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        let Some(cfg) = remember(ctx, protocol, orig) else {
            return false;
        };
        sa.user_ip6[0] = LOOPBACK6[0];
        sa.user_ip6[1] = LOOPBACK6[1];
        sa.user_ip6[2] = LOOPBACK6[2];
        sa.user_ip6[3] = LOOPBACK6[3];
        sa.user_port = resolver_port(&cfg, policy_id);
        policy::admit_marked(
            sock(ctx),
            AF_INET6,
            LOOPBACK6_BYTES,
            admit_flags,
            udp_mark(protocol),
        );
    }
    true
}

/// In `sock_ops` at `TCP_CONNECT_CB`: a redirected TCP DNS socket's record, filed under
/// its client end, the resolver port and its network namespace
/// ([`crate::ingress::connect_key`]), which is how the resolver finds the connection's
/// cgroup from the accepted socket. A socket that was not redirected costs one lookup.
/// A full map is counted; the resolver then closes the connection (fail closed). A filed
/// socket's state changes are to be reported, so that [`forget_flow`] removes the record
/// when the connection closes.
#[inline(always)]
pub(crate) fn record_flow(ctx: &SockOpsContext) {
    let Some((key, orig)) = flow_of(ctx) else {
        return;
    };
    if DNS_FLOWS.insert(key, orig, 0).is_err() {
        policy::count(Counter::MapFull);
        return;
    }
    // Fails only for a socket that is not a full TCP one, which sends no SYN.
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
}

/// In `sock_ops` at `BPF_SOCK_OPS_STATE_CB` (args: old state, new state), a TCP DNS
/// connection's client end closing: its record goes. The resolver reads (and removes) a
/// record when it accepts; one it never accepted (reset, or left in a full accept queue
/// and closed) stayed in the node-wide LRU: a pod that opened and closed 70,000 left
/// ~20,000 behind, which push out other tenants' records of connections waiting in the
/// resolver's accept queue (attack review 51). As for the guard's records
/// (`guard::forget_flow`): the callback fires before the socket is unhashed.
#[inline(always)]
pub(crate) fn forget_flow(ctx: &SockOpsContext) {
    if ctx.arg(1) != BPF_TCP_CLOSE {
        return;
    }
    let Some((key, _)) = flow_of(ctx) else {
        return;
    };
    let _ = DNS_FLOWS.remove(key);
}

/// A redirected socket's flow key and record, if it connects to its policy's resolver
/// port.
#[inline(always)]
fn flow_of(ctx: &SockOpsContext) -> Option<(FlowKey, DnsOrig)> {
    // SAFETY: a verifier-checked 8-byte read of the context's `sk` field (null-checked by
    // `read`).
    let sk = unsafe { (*ctx.ops).__bindgen_anon_2.sk };
    let orig = DNS_NAMED.read(sk)?;
    let cfg = config()?;
    let key = crate::ingress::connect_key(ctx)?;
    // Redirected once, connected again elsewhere: not a connection to the resolver.
    (key.server_port == cfg.port_base.wrapping_add(orig.policy_id as u16)).then_some((key, orig))
}

/// The admitted peer's `dns` marker of a redirected socket: UDP sockets get their
/// datagrams' client end filed ([`record_datagram`]).
#[inline(always)]
fn udp_mark(protocol: u32) -> u16 {
    if protocol == IPPROTO_UDP {
        SOCK_DNS_UDP
    } else {
        0
    }
}

/// In `cgroup_skb/egress`, for a datagram of a socket marked [`SOCK_DNS_UDP`] that missed
/// the flow cache (a socket's first datagram on this CPU), and for every datagram to the
/// resolver from a socket whose admitted peer is another address (a UDP socket connected
/// elsewhere that names a port-53 nameserver in `sendto`: the redirect recorded it, but a
/// datagram's destination never replaces a connected peer, so it carries no mark; unfiled,
/// its queries were charged to cgroup 0, or to the sandbox whose datagram last came from
/// the same client end, attack review 45): files its client end as the
/// resolver will see it — the socket's network namespace (`bpf_get_netns_cookie` of the
/// skb: the test kernel offers it to cgroup_skb, `bpftool feature probe`; a kernel that
/// does not refuses to load the program), source address and port, destination
/// (resolver) port — with the policy and cgroup the redirect recorded, in `HB_DNS_UDP`.
/// Fields are read from the packet: an unconnected socket has no source address of its
/// own. A missing redirect record, an unreadable header or a full map files nothing (the
/// resolver then answers the datagram under its policy's unattributed share).
#[inline(always)]
pub(crate) fn record_datagram(ctx: &SkBuffContext, sk: policy::Sock, family: u16, l4: usize) {
    let Some(orig) = DNS_NAMED.read(sk) else {
        return;
    };
    let (Ok(sport), Ok(dport)) = (ctx.load::<u16>(l4), ctx.load::<u16>(l4 + 2)) else {
        return;
    };
    let mut key = FlowKey {
        // SAFETY: the context pointer of a cgroup_skb program, which this helper accepts.
        netns_cookie: unsafe { bpf_get_netns_cookie(ctx.skb.skb.cast()) },
        client: [0; 16],
        client_port: u16::from_be(sport),
        server_port: u16::from_be(dport),
        family,
        _pad: 0,
    };
    if family == AF_INET {
        let Ok(src) = ctx.load::<[u8; 4]>(12) else {
            return;
        };
        key.client[..4].copy_from_slice(&src);
    } else {
        let Ok(src) = ctx.load::<[u8; 16]>(8) else {
            return;
        };
        key.client = src;
    }
    if DNS_UDP.insert(key, orig, 0).is_err() {
        policy::count(Counter::MapFull);
    }
}

/// Whether `port` (as user_port holds it) is one of the resolver's policy ports.
#[inline(always)]
fn is_policy_port(cfg: &DnsConfig, port: u32) -> bool {
    hb_common::in_policy_ports(cfg.port_base, u16::from_be(port as u16))
}

/// In recvmsg4/getpeername4: reports the resolver as the nameserver the socket named.
#[inline(always)]
pub(crate) fn restore4(ctx: &SockAddrContext) {
    let Some(cfg) = config() else { return };
    let Some(orig) = DNS_NAMED.read(sock(ctx)) else {
        return;
    };
    if orig.family != AF_INET {
        return;
    }
    // SAFETY: verifier-checked context field accesses.
    unsafe {
        let sa = &mut *ctx.sock_addr;
        if sa.user_ip4 != u32::from_ne_bytes(cfg.addr4) || !is_policy_port(&cfg, sa.user_port) {
            return;
        }
        sa.user_ip4 = u32::from_ne_bytes([orig.addr[0], orig.addr[1], orig.addr[2], orig.addr[3]]);
        sa.user_port = u32::from(orig.port_be);
    }
}

/// In recvmsg6/getpeername6: reports `[::1]` (the resolver) as the original nameserver.
#[inline(always)]
pub(crate) fn restore6(ctx: &SockAddrContext) {
    let Some(cfg) = config() else { return };
    let Some(orig) = DNS_NAMED.read(sock(ctx)) else {
        return;
    };
    if orig.family != AF_INET6 {
        return;
    }
    // SAFETY: verifier-checked context field accesses.
    unsafe {
        let sa = &mut *ctx.sock_addr;
        let from = [
            sa.user_ip6[0],
            sa.user_ip6[1],
            sa.user_ip6[2],
            sa.user_ip6[3],
        ];
        if from != LOOPBACK6 || !is_policy_port(&cfg, sa.user_port) {
            return;
        }
        let a = orig.addr;
        sa.user_ip6[0] = u32::from_ne_bytes([a[0], a[1], a[2], a[3]]);
        sa.user_ip6[1] = u32::from_ne_bytes([a[4], a[5], a[6], a[7]]);
        sa.user_ip6[2] = u32::from_ne_bytes([a[8], a[9], a[10], a[11]]);
        sa.user_ip6[3] = u32::from_ne_bytes([a[12], a[13], a[14], a[15]]);
        sa.user_port = u32::from(orig.port_be);
    }
}

/// For the packet hook: whether a destination is the resolver's address, which lives on
/// loopback (a deny range) yet must be reachable on the resolver's ports.
#[inline(always)]
pub(crate) fn is_resolver_addr(family: u16, addr: &[u8; 16]) -> bool {
    let Some(cfg) = config() else { return false };
    if family == AF_INET {
        addr[..4] == cfg.addr4
    } else {
        *addr == LOOPBACK6_BYTES
    }
}

/// For the packet hook: whether a TCP/UDP destination port (host order; 0 for other
/// protocols) is one of the resolver's policy ports.
#[inline(always)]
pub(crate) fn is_resolver_port(port: u16) -> bool {
    let Some(cfg) = config() else { return false };
    port != 0 && hb_common::in_policy_ports(cfg.port_base, port)
}

/// For `sock_ops` at `TCP_CONNECT_CB`: whether a connection to `port` (host order) could
/// be one [`record_flow`] files: redirection is on and `port` is `port_base + N` (with
/// the same wrapping add) for some policy id `N` (ids index `HB_POLICIES`, so
/// `N < limits::POLICIES`). A superset of the ports `record_flow` accepts.
#[inline(always)]
pub(crate) fn may_be_resolver_port(port: u16) -> bool {
    config().is_some_and(|cfg| u32::from(port.wrapping_sub(cfg.port_base)) < limits::POLICIES)
}

/// For the bind hooks: whether `port` (host order) is in the resolver's range, whether
/// or not redirection is on (an agent may turn it on at its next start).
#[inline(always)]
pub(crate) fn is_resolver_port_any(port: u16) -> bool {
    DNS.get(0)
        .is_some_and(|cfg| hb_common::in_policy_ports(cfg.port_base, port))
}

/// For the packet hooks: the resolver port (host order) that answers `policy_id`'s
/// queries, `None` when redirection is off.
#[inline(always)]
pub(crate) fn resolver_port_of(policy_id: u32) -> Option<u16> {
    let cfg = config()?;
    Some(cfg.port_base.wrapping_add(policy_id as u16))
}
