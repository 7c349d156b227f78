//! `cgroup/connect4|6` and `cgroup/sendmsg4|6`: judge each destination a sandboxed
//! socket names — every `connect()` (TCP, UDP, ICMP ping sockets, TCP fast open) and every
//! `sendto()`/`sendmsg()` with an address on an unconnected UDP socket.
//!
//! Return value (include/uapi/linux/bpf.h, `BPF_CGROUP_INET4_CONNECT`): 1 lets the call
//! go on, 0 makes it fail with EPERM.
//!
//! Byte order: `user_ip4` and `user_ip6[i]` hold the address in network order, as four
//! bytes each; `user_port` holds the port in network order in its low 16 bits
//! (Documentation/bpf/prog_cgroup_sockopt.rst and `bpf_sock_addr` in uapi/linux/bpf.h).
//!
//! DNS to port 53 is rewritten here, before judgement, to the agent's resolver for the
//! policy (see `dns`); the resolver then decides what the sandbox may resolve.
//!
//! A destination admitted as a validated address (and the resolver's address for a
//! redirected query) is recorded as the socket's peer in its own storage (`HB_SOCK_PEER`,
//! socket-local), so `cgroup_skb/egress` passes that socket's packets to exactly that peer
//! without judging them again: an established connection keeps working after its
//! validated address expires (expiry only stops new connections), while the same address
//! from another socket is judged afresh. A destination admitted by a static CIDR is not
//! recorded: it does not expire, so the packet hook's own verdict passes its packets as
//! long as the policy holds the CIDR (and a connect stays one LPM lookup).

use aya_ebpf::{
    helpers::generated::bpf_getsockopt,
    macros::{cgroup_sock_addr, map},
    maps::Array,
    programs::SockAddrContext,
};
use hb_common::{
    AF_INET, AF_INET6, Counter, POLICY_INBOUND, SOCK_ADMIT_CONNECT, SOCK_ADMIT_SENDMSG,
    SOCK_ADMIT_VALIDATED, hook, reason, verdict,
};

use crate::{
    dns,
    guard::{self, Route},
    policy::{self, Judgement, Report},
    sockopt, source,
};

const ALLOW: i32 = 1;
const REFUSE: i32 = 0;

/// Refuses (EPERM) a connect from an enrolled cgroup to an IPv4 destination its policy
/// does not allow.
#[cgroup_sock_addr(connect4)]
pub fn hb_connect4(ctx: SockAddrContext) -> i32 {
    judge_sock4(&ctx, hook::CONNECT4)
}

/// Refuses (EPERM) a connect from an enrolled cgroup to an IPv6 destination its policy
/// does not allow; IPv4-mapped and NAT64 destinations are judged as the IPv4 they embed.
#[cgroup_sock_addr(connect6)]
pub fn hb_connect6(ctx: SockAddrContext) -> i32 {
    judge_sock6(&ctx, hook::CONNECT6)
}

/// As `hb_connect4`, for datagrams sent with an explicit destination; also refuses a
/// source (`msg_src_ip4`) that is not the host's (see `source`).
#[cgroup_sock_addr(sendmsg4)]
pub fn hb_sendmsg4(ctx: SockAddrContext) -> i32 {
    // SAFETY: a 4-byte read of a field sendmsg4 programs may read.
    let src = unsafe { (*ctx.sock_addr).msg_src_ip4 };
    if src != 0 && refuse_source(&ctx, hook::SENDMSG4, AF_INET, source::mapped4(src)) {
        return REFUSE;
    }
    // SAFETY: a 4-byte read of a field sendmsg4 programs may read.
    if unsafe { (*ctx.sock_addr).user_ip4 } == 0 && to_connected_peer(&ctx) {
        return ALLOW;
    }
    judge_sock4(&ctx, hook::SENDMSG4)
}

/// As `hb_connect6`, for datagrams sent with an explicit destination; also refuses a
/// source (`msg_src_ip6`) that is not the host's (see `source`).
#[cgroup_sock_addr(sendmsg6)]
pub fn hb_sendmsg6(ctx: SockAddrContext) -> i32 {
    // SAFETY: 4-byte reads of a field sendmsg6 programs may read.
    let src = unsafe {
        let sa = &*ctx.sock_addr;
        [
            sa.msg_src_ip6[0],
            sa.msg_src_ip6[1],
            sa.msg_src_ip6[2],
            sa.msg_src_ip6[3],
        ]
    };
    if src != [0; 4] && refuse_source(&ctx, hook::SENDMSG6, AF_INET6, src) {
        return REFUSE;
    }
    if user_ip6(&ctx) == [0; 4] && to_connected_peer(&ctx) {
        return ALLOW;
    }
    judge_sock6(&ctx, hook::SENDMSG6)
}

/// The context's `user_ip6`, read as the four 4-byte words the verifier allows.
#[inline(always)]
fn user_ip6(ctx: &SockAddrContext) -> [u32; 4] {
    // SAFETY: 4-byte reads of a field every IPv6 sock_addr program may read.
    unsafe {
        let sa = &*ctx.sock_addr;
        [
            sa.user_ip6[0],
            sa.user_ip6[1],
            sa.user_ip6[2],
            sa.user_ip6[3],
        ]
    }
}

/// Whether a send names no destination: a connected UDP socket's datagram whose control
/// message (`IP_TOS` for ECN, `IP_TTL`, `IPV6_TCLASS`, `IP_PKTINFO`…) made
/// `udp_sendmsg`/`udpv6_sendmsg` treat the socket as unconnected and run this hook with
/// no address; the kernel hands the program a zeroed one (`__cgroup_bpf_run_filter_sock_addr`).
/// The datagram goes to the connected peer, which `connect4|6` judged, as a plain `send`
/// on the socket does; judging the zeroed address refused it as `0.0.0.0` (`deny_range`,
/// attack review 30). A destination the caller names always has a port (`udp_sendmsg`
/// refuses port 0 with EINVAL before the hook, and an IPv6 `AF_UNSPEC` name is dropped
/// as none), so an address whose family and port are zero is the kernel's (the callers
/// check that the address is zero too).
#[inline(always)]
fn to_connected_peer(ctx: &SockAddrContext) -> bool {
    // SAFETY: 4-byte reads of fields every sock_addr program may read.
    unsafe {
        let sa = &*ctx.sock_addr;
        sa.user_family == 0 && sa.user_port == 0
    }
}

/// Refuses (EPERM) a bind from an enrolled cgroup to a port of hb's resolver or guard,
/// or to an address that is not the host's (see `source`).
#[cgroup_sock_addr(bind4)]
pub fn hb_bind4(ctx: SockAddrContext) -> i32 {
    // SAFETY: a 4-byte read of a field bind4 programs may read.
    let ip = unsafe { (*ctx.sock_addr).user_ip4 };
    if refuse_source(&ctx, hook::BIND4, AF_INET, source::mapped4(ip)) {
        return REFUSE;
    }
    if refuse_shared_port(&ctx, hook::BIND4, AF_INET, source::mapped4(ip)) {
        return REFUSE;
    }
    judge_bind(&ctx, hook::BIND4, AF_INET)
}

/// As `hb_bind4`, for IPv6 sockets; also refuses to bind a stream socket to a link-local
/// address under a policy without `inbound = true` (see [`refuse_link_bound_stream`]).
#[cgroup_sock_addr(bind6)]
pub fn hb_bind6(ctx: SockAddrContext) -> i32 {
    if refuse_source(&ctx, hook::BIND6, AF_INET6, user_ip6(&ctx)) {
        return REFUSE;
    }
    if refuse_link_bound_stream(&ctx, user_ip6(&ctx)) {
        return REFUSE;
    }
    if refuse_shared_port(&ctx, hook::BIND6, AF_INET6, user_ip6(&ctx)) {
        return REFUSE;
    }
    judge_bind(&ctx, hook::BIND6, AF_INET6)
}

/// Whether to refuse the bind of a stream socket to IPv6 link-local address `addr` (four
/// `user_ip6` words, network order), its task enrolled under a policy without `inbound =
/// true`. Such a bind ties the socket to the link's device (`inet6_bind` sets
/// `sk_bound_dev_if` from the scope), so `sock_ops` cannot bind its listener to `lo`
/// (`ingress::listen_on_loopback_only`): it would stay silent to a scan from the link
/// where a closed port answers with a reset (attack review 47). Nothing such a sandbox
/// may reach is link-local (`fe80::/10` is a deny range). Reason `inbound`, the address
/// in the event; audit mode reports and lets it pass.
#[inline(always)]
fn refuse_link_bound_stream(ctx: &SockAddrContext, addr: [u32; 4]) -> bool {
    // SAFETY: a 4-byte read of a field every sock_addr program may read.
    let kind = unsafe { (*ctx.sock_addr).type_ };
    let first = addr[0].to_ne_bytes();
    if kind != sockopt::SOCK_STREAM || first[0] != 0xfe || first[1] & 0xc0 != 0x80 {
        return false;
    }
    let Some((_, e)) = policy::current_enrollment() else {
        return false;
    };
    policy::policy_flags(e.policy_id) & POLICY_INBOUND == 0
        && refuse_enrolled(
            ctx,
            hook::BIND6,
            AF_INET6,
            reason::INBOUND,
            source::event_addr(AF_INET6, addr),
        ) == REFUSE
}

/// Whether to refuse source address `addr` (four `user_ip6`-style words; IPv4 mapped)
/// for the hook's socket: not the wildcard, not the host's, the socket in the agent's
/// network namespace and its task enrolled. Reports the refusal (reason
/// `nonlocal_source`); in audit mode reports and lets it pass.
#[inline(always)]
fn refuse_source(ctx: &SockAddrContext, hook: u32, family: u16, addr: [u32; 4]) -> bool {
    if source::allowed(addr) || !source::in_host_netns(ctx) {
        return false;
    }
    refuse_enrolled(
        ctx,
        hook,
        family,
        reason::NONLOCAL_SOURCE,
        source::event_addr(family, addr),
    ) == REFUSE
}

/// The verdict on the hook's call when the calling task is enrolled and the call is
/// refused for reason `why`: REFUSE with the refusal reported (the event's address
/// `addr`, its port and protocol the context's), or ALLOW in audit mode (reported) and
/// for a task that is not enrolled.
#[inline(always)]
fn refuse_enrolled(ctx: &SockAddrContext, hook: u32, family: u16, why: u32, addr: [u8; 16]) -> i32 {
    let Some((cgroup_id, e)) = policy::current_enrollment() else {
        return ALLOW;
    };
    // SAFETY: 4-byte reads of fields every sock_addr program may read.
    let (port, protocol) = unsafe {
        let sa = &*ctx.sock_addr;
        (sa.user_port, sa.protocol)
    };
    finish(
        ctx,
        Judgement::Deny(why, Counter::DenyNotAllowed),
        cgroup_id,
        e.policy_id,
        hook,
        family,
        protocol,
        port,
        addr,
    )
}

/// Whether `port` (host order) is the agent's metrics port and the socket in the agent's
/// network namespace (a pod's namespace has its own ports).
#[inline(always)]
fn is_metrics_port(ctx: &SockAddrContext, port: u16) -> bool {
    port != 0
        && METRICS_PORT.get(0).is_some_and(|p| *p == u32::from(port))
        && source::in_host_netns(ctx)
}

/// Whether to refuse the bind of a socket that would share its port in the agent's
/// network namespace: `SO_REUSEPORT` set, or `SO_REUSEADDR` on a socket that is not a
/// stream one (read back from the socket, `bpf_getsockopt`), its task enrolled.
/// `cgroup/setsockopt` refuses both options there (see `sockopt`, shared ports), but a
/// 32-bit `setsockopt` skips that hook, and no seccomp filter keeps a pod from making
/// one: a pod's UDP socket bound a host service's port on `127.0.0.1` beside the
/// service's wildcard socket and took every datagram sent there (attack review 39).
/// The bind is the step every such use of a port goes through, whatever set the option.
/// Reason `shared_port`, the bind's address and port in the event; audit mode reports
/// and lets it pass. A pod's own namespace keeps both options (its servers may share
/// their ports), as `sockopt` does.
#[inline(always)]
fn refuse_shared_port(ctx: &SockAddrContext, hook: u32, family: u16, addr: [u32; 4]) -> bool {
    if !source::in_host_netns(ctx) {
        return false;
    }
    // SAFETY: a 4-byte read of a field every sock_addr program may read.
    let kind = unsafe { (*ctx.sock_addr).type_ };
    let shared = socket_option_set(ctx, sockopt::SO_REUSEPORT)
        || (kind != sockopt::SOCK_STREAM && socket_option_set(ctx, sockopt::SO_REUSEADDR));
    shared
        && refuse_enrolled(
            ctx,
            hook,
            family,
            reason::SHARED_PORT,
            source::event_addr(family, addr),
        ) == REFUSE
}

/// Whether the context's socket has the `SOL_SOCKET` int option `optname` on. One that
/// cannot be read counts as on (fail closed: the bind is refused only for an enrolled
/// task in the agent's namespace).
#[inline(always)]
fn socket_option_set(ctx: &SockAddrContext, optname: i32) -> bool {
    let mut value: i32 = 0;
    // SAFETY: the context pointer of a bind program, which `bpf_getsockopt` accepts;
    // `value` is a writable int of the length passed.
    let rc = unsafe {
        bpf_getsockopt(
            ctx.sock_addr.cast(),
            sockopt::SOL_SOCKET,
            optname,
            (&raw mut value).cast(),
            size_of::<i32>() as i32,
        )
    };
    rc != 0 || value != 0
}

/// The port of the agent's metrics server (`map_names::METRICS_PORT`; 0: off).
#[map(name = "HB_METRICS_PORT")]
static METRICS_PORT: Array<u32> = Array::pinned(1, 0);

/// The ports the agent's resolver and guard listen on (`port_base + policy id`, on every
/// address) are the agent's: a sandbox that bound one (while the agent restarts, or
/// with a wildcard address) would receive the DNS or guarded connections other sandboxes
/// are redirected to, or keep the agent from listening. So is its metrics port in its
/// own network namespace: a `hostNetwork` pod that bound it while the agent restarted
/// kept the agent from starting again (it exits when it cannot listen), and from
/// enrolling any new pod of the node (attack review 39). Other binds pass untouched.
#[inline(always)]
fn judge_bind(ctx: &SockAddrContext, hook: u32, family: u16) -> i32 {
    // SAFETY: a 4-byte read of a field every sock_addr program may read.
    let port = unsafe { (*ctx.sock_addr).user_port };
    let host_port = u16::from_be(port as u16);
    if !dns::is_resolver_port_any(host_port)
        && !guard::is_guard_port_any(host_port)
        && !is_metrics_port(ctx, host_port)
    {
        return ALLOW;
    }
    refuse_enrolled(ctx, hook, family, reason::RESERVED_PORT, [0; 16])
}

/// Reports a reply from hb's resolver as coming from the nameserver the socket named.
/// Always 1: recvmsg hooks cannot refuse.
#[cgroup_sock_addr(recvmsg4)]
pub fn hb_recvmsg4(ctx: SockAddrContext) -> i32 {
    dns::restore4(&ctx);
    ALLOW
}

/// As `hb_recvmsg4`, for IPv6 sockets.
#[cgroup_sock_addr(recvmsg6)]
pub fn hb_recvmsg6(ctx: SockAddrContext) -> i32 {
    dns::restore6(&ctx);
    ALLOW
}

/// Reports a redirected socket's peer as the nameserver (or, through the guard, the
/// destination) it named. Always 1.
#[cgroup_sock_addr(getpeername4)]
pub fn hb_getpeer4(ctx: SockAddrContext) -> i32 {
    dns::restore4(&ctx);
    guard::restore4(&ctx);
    ALLOW
}

/// As `hb_getpeer4`, for IPv6 sockets.
#[cgroup_sock_addr(getpeername6)]
pub fn hb_getpeer6(ctx: SockAddrContext) -> i32 {
    dns::restore6(&ctx);
    guard::restore6(&ctx);
    ALLOW
}

#[inline(always)]
fn judge_sock4(ctx: &SockAddrContext, hook: u32) -> i32 {
    let Some((cgroup_id, e)) = policy::current_enrollment() else {
        policy::count(Counter::NotEnrolled);
        return ALLOW;
    };
    // SAFETY: the verifier checks ctx field accesses; these are 4-byte reads of fields
    // every sock_addr program may read.
    let (ip, port, protocol) = unsafe {
        let sa = &*ctx.sock_addr;
        (sa.user_ip4, sa.user_port, sa.protocol)
    };
    if port == dns::DNS_PORT
        && dns::redirect4(ctx, cgroup_id, e.policy_id, protocol, admit_flags(hook))
    {
        return ALLOW;
    }
    let addr = ip.to_ne_bytes();
    let judgement = policy::judge4(e.policy_id, addr);
    let mut wide = [0u8; 16];
    wide[..4].copy_from_slice(&addr);
    finish(
        ctx,
        judgement,
        cgroup_id,
        e.policy_id,
        hook,
        AF_INET,
        protocol,
        port,
        wide,
    )
}

#[inline(always)]
fn judge_sock6(ctx: &SockAddrContext, hook: u32) -> i32 {
    let Some((cgroup_id, e)) = policy::current_enrollment() else {
        policy::count(Counter::NotEnrolled);
        return ALLOW;
    };
    let w = user_ip6(ctx);
    // SAFETY: as in judge_sock4.
    let (port, protocol) = unsafe {
        let sa = &*ctx.sock_addr;
        (sa.user_port, sa.protocol)
    };
    if port == dns::DNS_PORT
        && dns::redirect6(ctx, cgroup_id, e.policy_id, protocol, admit_flags(hook))
    {
        return ALLOW;
    }
    let mut addr = [0u8; 16];
    addr[0..4].copy_from_slice(&w[0].to_ne_bytes());
    addr[4..8].copy_from_slice(&w[1].to_ne_bytes());
    addr[8..12].copy_from_slice(&w[2].to_ne_bytes());
    addr[12..16].copy_from_slice(&w[3].to_ne_bytes());
    let judgement = policy::judge6(e.policy_id, addr);
    finish(
        ctx,
        judgement,
        cgroup_id,
        e.policy_id,
        hook,
        AF_INET6,
        protocol,
        port,
        addr,
    )
}

/// The `SOCK_ADMIT_*` flag a hook records its admitted peers with.
#[inline(always)]
fn admit_flags(hook: u32) -> u32 {
    if hook == hook::CONNECT4 || hook == hook::CONNECT6 {
        SOCK_ADMIT_CONNECT
    } else {
        SOCK_ADMIT_SENDMSG
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one flat call keeps the verifier's job small"
)]
#[inline(always)]
fn finish(
    ctx: &SockAddrContext,
    judgement: Judgement,
    cgroup_id: u64,
    policy_id: u32,
    hook: u32,
    family: u16,
    protocol: u32,
    port: u32,
    addr: [u8; 16],
) -> i32 {
    // An allowed destination may still be guarded (TCP: sent to the guard) or refused
    // (QUIC under a guarded policy).
    let judgement = match judgement {
        Judgement::Allow(counter) => {
            match guard::route(ctx, cgroup_id, policy_id, family, protocol, port, addr) {
                Route::Direct => Judgement::Allow(counter),
                Route::Guarded => {
                    policy::count(counter);
                    return ALLOW;
                }
                Route::Quic => Judgement::Deny(reason::QUIC, Counter::DenyNotAllowed),
                Route::Unrecorded => return REFUSE,
                Route::GuardDown => Judgement::Deny(reason::GUARD_DOWN, Counter::DenyNotAllowed),
                Route::FlowsFull => Judgement::Deny(reason::GUARD_FLOWS_FULL, Counter::MapFull),
            }
        }
        deny => deny,
    };
    match judgement {
        Judgement::Allow(counter) => {
            policy::count(counter);
            // Only a validated address can expire under an established flow; a static
            // CIDR gets the same verdict per packet for as long as the policy holds it,
            // so its connects (the benchmark's) skip the map update.
            if counter == Counter::AllowAddr {
                policy::admit(
                    dns::sock(ctx),
                    family,
                    addr,
                    admit_flags(hook) | SOCK_ADMIT_VALIDATED,
                );
            }
            ALLOW
        }
        Judgement::Deny(reason, counter) => {
            let verdict = policy::refusal_verdict(policy_id);
            policy::report(
                ctx,
                Report {
                    cgroup_id,
                    policy_id,
                    hook,
                    verdict,
                    reason,
                    family,
                    protocol: protocol as u16,
                    port: u16::from_be(port as u16),
                    addr,
                    task_context: true,
                },
            );
            if verdict == verdict::AUDIT {
                policy::count(Counter::Audit);
                ALLOW
            } else {
                policy::count(counter);
                REFUSE
            }
        }
    }
}
