//! `cgroup/setsockopt`: the socket options that make the kernel send, or route, what no
//! other hook of ours can attribute to the sandbox.
//!
//! * **Multicast membership.** Joining a group (or changing a group's source filter)
//!   makes the kernel announce it in IGMP/MLD reports, which it builds and sends itself
//!   (`igmp_send_report`/`igmpv3_sendpack` in net/ipv4/igmp.c, `igmp6_send`/`mld_sendpack`
//!   on the per-namespace `net->ipv6.igmp_sk` in net/ipv6/mcast.c), from no socket of the
//!   sandbox: neither the connect/sendmsg hooks nor `cgroup_skb/egress` see it. The group
//!   address is the sandbox's choice, so each report carries 112 bits (IPv6) or 28 bits
//!   (IPv4) of its data onto the link; the source addresses of an IGMPv3/MLDv2 report
//!   carry more. Refused: every option that joins, leaves or filters a group —
//!   `IP_ADD_MEMBERSHIP` … `IP_MSFILTER` (35–41) at `SOL_IP`, `IPV6_JOIN_GROUP`,
//!   `IPV6_LEAVE_GROUP` (20, 21) and `IPV6_JOIN_ANYCAST`, `IPV6_LEAVE_ANYCAST` (27, 28: an
//!   anycast join joins the address's solicited-node group) at `SOL_IPV6`, and the
//!   protocol-independent `MCAST_JOIN_GROUP` … `MCAST_MSFILTER` (42–48) at both levels
//!   (include/uapi/linux/in.h, in6.h). Leaves and filters are refused too: a sandbox that
//!   can join nothing has nothing to leave, and on a socket it inherited already joined,
//!   a block/unblock or filter change sends a report naming sources of its choosing.
//! * **Source routing.** Options that send a packet elsewhere than its destination field
//!   (which is what the connect/sendmsg hooks judged): `IPV6_RTHDR` (57) and
//!   `IPV6_2292PKTOPTIONS` (6; RFC 2292 sticky options, a cmsg buffer that may hold a
//!   routing header or a next hop) at `SOL_IPV6`, and `IP_OPTIONS` (4) at `SOL_IP`.
//!   `IPV6_2292RTHDR` (5) is refused with them: in `setsockopt` Linux reads it as the
//!   switch to *receive* routing headers, which no sandbox needs, and refusing it keeps
//!   every spelling of "routing header" out.
//!   All IP options are refused, not only LSRR/SSRR: the kernel's own parser
//!   (`ip_options_compile`) is what counts, and a second parser here, bounded to the
//!   40-byte option space, that disagreed with it on one length or padding edge would be
//!   a bypass; refusing the whole option cannot disagree. Nothing a sandbox runs needs
//!   IP options (record-route and timestamp are diagnostics; router alert is for IGMP,
//!   RSVP and the like). A zero-length value, which only clears the option, passes.
//!   The same headers can ride in a `sendmsg` control message (`IPV6_RTHDR`,
//!   `IPV6_2292RTHDR`, `IP_RETOPTS`), which never passes through here: `cgroup_skb/egress`
//!   drops packets that carry them for enrolled cgroups.
//! * **Sources that are not the host's.** `IP_FREEBIND` (15) and `IP_TRANSPARENT` (19) at
//!   `SOL_IP` (both also act on IPv6 sockets), `IPV6_TRANSPARENT` (75) and
//!   `IPV6_FREEBIND` (78) at `SOL_IPV6` (reason `nonlocal_source`). With freebind a
//!   socket binds any address without privilege, and an IPv6 socket then sends from it:
//!   the hooks judge where a packet goes, not where it says it comes from, so whatever
//!   answers it — a listener of the sandbox's own, hb's resolver — answers that
//!   address, off the host, from a socket the egress side passes (attack review 13:
//!   a TCP connection to the attacker's host, a DNS answer echoing the sandbox's name to
//!   it). Refused whatever the value (the value is never read). A host with
//!   `net.ipv6.ip_nonlocal_bind = 1` lets any socket do the same without an option:
//!   `cgroup/bind4|6` and `cgroup/sendmsg4|6` refuse a source that is not the host's
//!   (see `source`), and the ingress program admits a same-sandbox client only from a
//!   local source anyway. The sticky `IPV6_PKTINFO` (50) names a source for the
//!   socket's datagrams, which the kernel takes without a check and uses when the
//!   socket connects: refused when its address is not the host's (read from the value).
//! * **Shared ports** (reason `shared_port`). `SO_REUSEPORT` (15 at `SOL_SOCKET`):
//!   binding with it joins the port group of every socket of the same uid on that
//!   address and port, and the kernel spreads the group's connections and datagrams
//!   over its members. Every sandbox runs as nobody, as many host daemons do: a sandbox
//!   would take a share of another tenant's or the host's clients (their requests,
//!   whatever credentials they send), or, under `inbound = false`, drop that share. A
//!   server in a sandbox shares one listener between its processes instead (fork after
//!   `listen`, or pass the socket). `SO_REUSEADDR` (2) on any socket but a stream one:
//!   a UDP socket that sets it may bind, whatever its uid, a port that another socket
//!   which set it holds on the wildcard address, on a more specific address — and the
//!   kernel delivers every datagram sent to that address to the more specific socket
//!   (attack review 13: a host service's ten datagrams, all taken). TCP keeps
//!   `SO_REUSEADDR` (every server sets it; a listening socket's port cannot be bound
//!   beside it). Both refused whatever the value, and only for sockets in the agent's
//!   own network namespace (`HB_HOST_NETNS`), where `sandbox run` sandboxes share ports
//!   with the host's daemons and each other: a pod's namespace holds only the pod's own
//!   sockets, and its servers (a sidecar proxy's listeners) keep `SO_REUSEPORT`. A
//!   socket that has either option anyway (set by a 32-bit call, which skips this hook:
//!   see below) cannot bind there (`cgroup/bind4|6`, `sock_addr::refuse_shared_port`).
//!
//! * **A listener on a device of its choosing** (reason `inbound`, for a policy without
//!   `inbound = true`). `SO_BINDTODEVICE` (25) and `SO_BINDTOIFINDEX` (62) at
//!   `SOL_SOCKET` on a stream socket: `sock_ops` binds such a sandbox's listeners to `lo`
//!   as they start listening, so that the network gets a reset from them as from a port
//!   nobody holds (see `ingress`); a socket already bound to another device cannot be
//!   bound again without `CAP_NET_RAW`, and its listener would stay silent to the
//!   network — dropped by `cgroup_skb/ingress` where a closed port answers — which tells
//!   any host which ports the sandbox holds (attack review 47). Refused whatever the
//!   value (a TCP client that binds a device, `curl --interface`, is refused too).
//!
//! * **Broadcast without a send hook** (reason `unjudged_send`). `SO_BROADCAST` (6 at
//!   `SOL_SOCKET`) on a datagram or raw socket other than UDP: a ping socket's `sendto`
//!   runs no cgroup hook, and the copy of an IPv4 broadcast the kernel loops back to the
//!   host's own listeners (`ip_mc_output` → `ip_mc_finish_output`, a clone without a
//!   socket, which `cgroup_skb/egress` skips) is judged by no program: an echo request
//!   carrying the sandbox's payload reached a raw ICMP socket of the host (attack review
//!   27), while the original packet was dropped. UDP keeps the option: its broadcast
//!   destination is judged by `connect4`/`sendmsg4` (and refused, never validated).
//!   Multicast needs no option and is still looped for a ping socket (see
//!   `attack_review27.rs`, open).
//!
//! * **The error queue** (reason `error_queue`). `IP_RECVERR` (11) and
//!   `IP_RECVERR_RFC4884` (26) at `SOL_IP`, `IPV6_RECVERR` (25) and `IPV6_RECVERR_RFC4884`
//!   (31) at `SOL_IPV6`, for a policy without `inbound = true`: an ICMP error quoting one
//!   of the socket's datagrams, from any host (`icmp_rcv` → `__udp4_lib_err` →
//!   `ip_icmp_error`, and the same for ping sockets and IPv6), is queued for the socket
//!   to read with `MSG_ERRQUEUE` — the quoted payload and the sender, chosen by whoever
//!   sent the error — through no cgroup program (`sk_filter` never runs for it): an
//!   inbound channel from hosts the sandbox may not hear (attack review 13). Not
//!   refused: glibc's resolver sets `IPV6_RECVERR`/`IP_RECVERR` on every query's socket
//!   and gives up on EPERM. The value is *rewritten to 0* in the program's copy
//!   (`optlen` 4 for an int, or the single byte `do_ip_setsockopt` reads as a char), so
//!   the call succeeds and nothing is queued; `getsockopt` reads 0. What stays is the
//!   socket error the kernel sets without the option (`sk_err`: ECONNREFUSED and the like
//!   on a connected socket, a few bits per error). A value of 0 passes untouched, as
//!   does every value under `inbound = true`; audit mode passes and reports. The event
//!   is reported at most once per cgroup per event window (`HB_ERRQUEUE_SEEN`), since
//!   every DNS lookup would report it. Raw sockets (which need `CAP_NET_RAW`) receive
//!   ICMP errors as datagrams, through `sk_filter`, where `cgroup_skb/ingress` judges
//!   the sender. Stream sockets too: TCP queues an ICMP error quoting its segment for a
//!   socket with the option while it is in SYN_SENT or SYN_RECV (`tcp_v4_err` →
//!   `ip_icmp_error`, since Linux 5.8 for `traceroute -M tcp`); without it the error is
//!   a soft error, and a connect to an unreachable host fails at its timeout instead of
//!   at once.
//!
//! Return value (Documentation/bpf/prog_cgroup_sockopt.rst): 0 refuses the call with
//! EPERM, 1 hands it on to the next program and then to the kernel. A pass-through
//! leaves `level`, `optname` and `optval` as they are and sets `optlen` to 0, which tells
//! the kernel to use the caller's original buffer and length (`optlen == 0 from BPF
//! indicates that we should use original userspace data` in
//! `__cgroup_bpf_run_filter_setsockopt`, kernel/bpf/cgroup.c). Left as it was, a
//! non-zero `optlen` makes the kernel allocate a buffer, copy our copy of the value into
//! it and free it after the call: one allocation per `setsockopt` of every enrolled
//! socket (`SO_LINGER`, `TCP_NODELAY`, …) for a value we never looked at. For a value
//! longer than a page (the kernel copies only the first page for us) 0 is required
//! anyway. Setting it to -1 would instead skip the kernel's handling and return success:
//! never done here.
//!
//! That the kernel reads the caller's buffer again after we passed is sound only for a
//! decision that does not depend on the option's value. The two that do (the error
//! queue's and the sticky source's, which read the value) hand the program's own copy
//! on ([`pass_judged`]: `optlen` left as it is, or cut to one page), or the caller could
//! change the value, from another thread, between our check and the kernel's read.
//!
//! A rewritten value is handed on with `optlen` set (never 0), which makes the kernel use
//! the program's copy of the value.
//!
//! Which programs run is decided by the socket's cgroup (`sk_cgrp_data`); whose call it
//! is, by the calling task's cgroup, as in `sock_addr`. Byte order: `level`, `optname`
//! and `optlen` are host-order integers; the option value is read only for the error
//! queue's options (is it on?) and `IPV6_PKTINFO` (its address), within `optval_end`.
//!
//! The kernel runs this hook only for native system calls (`do_sock_setsockopt(sock,
//! in_compat_syscall(), …)` in net/socket.c skips cgroup programs for compat calls), so
//! a 32-bit `setsockopt` (`int $0x80`, a 32-bit binary) is never seen here. `hb-agent
//! sandbox run` closes that with a seccomp filter that allows only the native ABI
//! (hb-agent/src/sandbox.rs); processes enrolled some other way (a pod's cgroup) need a
//! seccomp profile that does the same.

use aya_ebpf::{
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id,
        generated::bpf_get_netns_cookie,
    },
    macros::{cgroup_sockopt, map},
    maps::{Array, LruHashMap},
    programs::SockoptContext,
};
use hb_common::{
    AF_INET, AF_INET6, Counter, POLICY_INBOUND, hook, limits, reason, sockopt_port, verdict,
};

use crate::policy::{self, Report};

const PASS: i32 = 1;
const REFUSE: i32 = 0;

const SOL_IP: i32 = 0;
const SOL_IPV6: i32 = 41;
pub(crate) const SOL_SOCKET: i32 = 1;
/// include/uapi/asm-generic/socket.h.
pub(crate) const SO_REUSEADDR: i32 = 2;
pub(crate) const SO_REUSEPORT: i32 = 15;
const SO_BROADCAST: i32 = 6;
const SO_BINDTODEVICE: i32 = 25;
const SO_BINDTOIFINDEX: i32 = 62;
const IPPROTO_UDP: u32 = 17;
/// `SOCK_STREAM` (`bpf_sock.type`).
pub(crate) const SOCK_STREAM: u32 = 1;
/// include/uapi/linux/in.h, in6.h.
const IP_FREEBIND: i32 = 15;
const IP_TRANSPARENT: i32 = 19;
const IPV6_TRANSPARENT: i32 = 75;
const IPV6_FREEBIND: i32 = 78;

/// `IP_OPTIONS` (include/uapi/linux/in.h).
const IP_OPTIONS: i32 = 4;
/// `IP_ADD_MEMBERSHIP` (35) … `IP_MSFILTER` (41).
const IP_MEMBERSHIP: core::ops::RangeInclusive<i32> = 35..=41;
/// `MCAST_JOIN_GROUP` (42) … `MCAST_MSFILTER` (48), at `SOL_IP` and `SOL_IPV6`.
const MCAST_ANY: core::ops::RangeInclusive<i32> = 42..=48;
/// include/uapi/linux/in6.h.
const IPV6_2292RTHDR: i32 = 5;
const IPV6_2292PKTOPTIONS: i32 = 6;
const IPV6_JOIN_GROUP: i32 = 20;
const IPV6_LEAVE_GROUP: i32 = 21;
const IPV6_JOIN_ANYCAST: i32 = 27;
const IPV6_LEAVE_ANYCAST: i32 = 28;
const IPV6_RTHDR: i32 = 57;

/// The most of `optval` the kernel copies for a program (`sockopt_alloc_buf`).
const PAGE_SIZE: i32 = 4096;

/// Refuses (EPERM) multicast membership and source-routing options for enrolled
/// cgroups, with an event; a policy in audit mode lets them pass and reports them.
/// Nothing here can fail: every option outside the list passes untouched, and a full
/// events ring loses the event (counted), never the refusal.
#[cgroup_sockopt(setsockopt)]
pub fn hb_setsockopt(ctx: SockoptContext) -> i32 {
    // SAFETY: the verifier checks ctx accesses; level, optname and optlen are 4-byte
    // fields every sockopt program may read.
    let (level, optname, optlen) = unsafe {
        let so = &*ctx.sockopt;
        (so.level, so.optname, so.optlen)
    };
    // SAFETY: `sk` is a non-null PTR_TO_SOCKET in a sockopt context; `type` and
    // `protocol` are readable 4-byte fields of `bpf_sock`.
    let (kind, protocol) = unsafe {
        let sk = &*(*ctx.sockopt).__bindgen_anon_1.sk;
        (sk.type_, sk.protocol)
    };
    if is_error_queue_option(level, optname) {
        return error_queue(&ctx, level, optname, optlen);
    }
    if level == SOL_IPV6 && optname == IPV6_PKTINFO {
        return sticky_source(&ctx, optlen);
    }
    let Some(why) = refused_option(level, optname, optlen, kind, protocol) else {
        return pass(&ctx);
    };
    if why == reason::SHARED_PORT && !in_host_netns(&ctx) {
        return pass(&ctx);
    }
    // SAFETY: helpers without pointer arguments.
    let own = unsafe { bpf_get_current_cgroup_id() };
    let Some(e) = policy::enrollment(own, |l| unsafe { bpf_get_current_ancestor_cgroup_id(l) })
    else {
        return pass(&ctx);
    };
    if why == reason::INBOUND && policy::policy_flags(e.policy_id) & POLICY_INBOUND != 0 {
        return pass(&ctx);
    }
    let verdict = policy::refusal_verdict(e.policy_id);
    report_option(
        &ctx,
        own,
        e.policy_id,
        verdict,
        why,
        (level, optname),
        [0; 16],
    );
    if verdict == verdict::AUDIT {
        policy::count(Counter::Audit);
        return pass(&ctx);
    }
    REFUSE
}

/// The cookie of the network namespace the agent runs in (`map_names::HOST_NETNS`).
#[map(name = "HB_HOST_NETNS")]
static HOST_NETNS: Array<u64> = Array::pinned(1, 0);

/// Whether the socket lives in the agent's network namespace, where a shared port is
/// shared with the host's daemons and other sandboxes. A pod's namespace holds only the
/// pod's own sockets (and hb's, which no sandbox may bind beside): its servers keep
/// `SO_REUSEPORT`. Not written yet: treated as the agent's (refused).
#[inline(always)]
fn in_host_netns(ctx: &SockoptContext) -> bool {
    // SAFETY: the context pointer of a sockopt program, which this helper accepts.
    let own = unsafe { bpf_get_netns_cookie(ctx.sockopt.cast()) };
    host_netns_is(own)
}

/// Whether network namespace cookie `own` is the agent's (or the agent has not named
/// its namespace yet: treated as the agent's, which refuses more).
#[inline(always)]
pub(crate) fn host_netns_is(own: u64) -> bool {
    let host = HOST_NETNS.get(0).copied().unwrap_or(0);
    host == 0 || own == host
}

/// The [`reason`] for refusing an option on a socket of type `kind`, or `None` for one
/// that passes.
#[inline(always)]
fn refused_option(level: i32, optname: i32, optlen: i32, kind: u32, protocol: u32) -> Option<u32> {
    match level {
        SOL_SOCKET if optname == SO_REUSEPORT => Some(reason::SHARED_PORT),
        SOL_SOCKET if optname == SO_BROADCAST && kind != SOCK_STREAM && protocol != IPPROTO_UDP => {
            Some(reason::UNJUDGED_SEND)
        }
        SOL_SOCKET if optname == SO_REUSEADDR && kind != SOCK_STREAM => Some(reason::SHARED_PORT),
        SOL_SOCKET
            if matches!(optname, SO_BINDTODEVICE | SO_BINDTOIFINDEX) && kind == SOCK_STREAM =>
        {
            Some(reason::INBOUND)
        }
        SOL_IP if matches!(optname, IP_FREEBIND | IP_TRANSPARENT) => Some(reason::NONLOCAL_SOURCE),
        SOL_IPV6 if matches!(optname, IPV6_FREEBIND | IPV6_TRANSPARENT) => {
            Some(reason::NONLOCAL_SOURCE)
        }
        SOL_IP if IP_MEMBERSHIP.contains(&optname) || MCAST_ANY.contains(&optname) => {
            Some(reason::MULTICAST_JOIN)
        }
        SOL_IP if optname == IP_OPTIONS && optlen > 0 => Some(reason::SOURCE_ROUTE),
        SOL_IPV6
            if matches!(
                optname,
                IPV6_JOIN_GROUP | IPV6_LEAVE_GROUP | IPV6_JOIN_ANYCAST | IPV6_LEAVE_ANYCAST
            ) || MCAST_ANY.contains(&optname) =>
        {
            Some(reason::MULTICAST_JOIN)
        }
        SOL_IPV6
            if matches!(optname, IPV6_RTHDR | IPV6_2292RTHDR | IPV6_2292PKTOPTIONS)
                && optlen > 0 =>
        {
            Some(reason::SOURCE_ROUTE)
        }
        _ => None,
    }
}

/// `IP_RECVERR` (11), `IP_RECVERR_RFC4884` (26) at `SOL_IP`; `IPV6_RECVERR` (25),
/// `IPV6_RECVERR_RFC4884` (31) at `SOL_IPV6` (include/uapi/linux/in.h, in6.h).
const IP_RECVERR: i32 = 11;
const IP_RECVERR_RFC4884: i32 = 26;
const IPV6_RECVERR: i32 = 25;
const IPV6_RECVERR_RFC4884: i32 = 31;

#[inline(always)]
fn is_error_queue_option(level: i32, optname: i32) -> bool {
    match level {
        SOL_IP => matches!(optname, IP_RECVERR | IP_RECVERR_RFC4884),
        SOL_IPV6 => matches!(optname, IPV6_RECVERR | IPV6_RECVERR_RFC4884),
        _ => false,
    }
}

/// Cgroups' last `error_queue` event (`map_names::ERRQUEUE_SEEN`).
#[map(name = "HB_ERRQUEUE_SEEN")]
static ERRQUEUE_SEEN: LruHashMap<u64, u64> = LruHashMap::pinned(limits::ERRQUEUE_SEEN, 0);

/// Turning on a socket's error queue, for a sandbox whose policy has no `inbound =
/// true`: the call succeeds with the value rewritten to 0 (see the module header). A
/// value of 0 (turning it off), a cgroup that is not enrolled, and an `inbound = true`
/// policy pass untouched; audit mode passes and reports. A value the program cannot
/// rewrite (the kernel gave it no bytes to write) is refused: fail closed.
#[inline(always)]
fn error_queue(ctx: &SockoptContext, level: i32, optname: i32, optlen: i32) -> i32 {
    if optlen <= 0 {
        // The kernel refuses it (EINVAL) or reads nothing.
        return pass(ctx);
    }
    // SAFETY: optval and optval_end are the verifier's packet pointers for the copied
    // value; every access below is checked against optval_end first.
    let (start, end) = unsafe {
        let so = &*ctx.sockopt;
        (
            so.__bindgen_anon_2.optval as *mut u8,
            so.__bindgen_anon_3.optval_end as *mut u8,
        )
    };
    // An int (every spelling), or, at SOL_IP, one byte (`do_ip_setsockopt` reads a
    // shorter value as a char).
    let wide = optlen >= 4;
    let len = if wide { 4 } else { 1 };
    if start.wrapping_add(len) > end {
        return REFUSE;
    }
    // SAFETY: checked above: `len` bytes from `start` lie within the value.
    let on = unsafe {
        if wide {
            core::ptr::read_unaligned(start.cast::<u32>()) != 0
        } else {
            *start != 0
        }
    };
    if !on {
        return pass_judged(ctx, optlen);
    }
    // SAFETY: helpers without pointer arguments.
    let own = unsafe { bpf_get_current_cgroup_id() };
    let Some(e) = policy::enrollment(own, |l| unsafe { bpf_get_current_ancestor_cgroup_id(l) })
    else {
        return pass_judged(ctx, optlen);
    };
    if policy::policy_flags(e.policy_id) & POLICY_INBOUND != 0 {
        return pass_judged(ctx, optlen);
    }
    let verdict = policy::refusal_verdict(e.policy_id);
    let now = policy::now_ns();
    // SAFETY: the value is copied out at once; another CPU's update of it at the same
    // moment can only make one event more or fewer.
    let last = unsafe { ERRQUEUE_SEEN.get(own).copied() };
    let noted = last.is_some_and(|t| now.wrapping_sub(t) < limits::EVENT_WINDOW_NS);
    if !noted {
        let _ = ERRQUEUE_SEEN.insert(own, now, 0);
        let why = reason::ERROR_QUEUE;
        report_option(
            ctx,
            own,
            e.policy_id,
            verdict,
            why,
            (level, optname),
            [0; 16],
        );
    }
    if verdict == verdict::AUDIT {
        policy::count(Counter::Audit);
        return pass_judged(ctx, optlen);
    }
    // SAFETY: checked above: `len` bytes from `start` lie within the value.
    unsafe {
        if wide {
            core::ptr::write_unaligned(start.cast::<u32>(), 0);
            // The kernel reads the (rewritten) first four bytes of the program's copy;
            // a longer value (up to a page: beyond it the copy is only the first page)
            // is read as an int either way.
            (*ctx.sockopt).optlen = 4;
        } else {
            *start = 0;
        }
    }
    PASS
}

/// `IPV6_PKTINFO` (50, include/uapi/linux/in6.h): the sticky form of the control
/// message, a source address (and interface) for the socket's datagrams.
const IPV6_PKTINFO: i32 = 50;

/// A sticky `IPV6_PKTINFO` naming a source that is not the host's (see `source`): the
/// kernel accepts any address there, and uses it when the socket connects
/// (`ip6_datagram_dst_update`). Refused for an enrolled cgroup (reason
/// `nonlocal_source`, the address in the event); in the agent's network namespace the
/// wildcard and the host's addresses pass, in another (a pod's, whose addresses the
/// agent does not track) the wildcard only. A value shorter than an address passes (the kernel refuses
/// it); one the program cannot read is refused.
#[inline(always)]
fn sticky_source(ctx: &SockoptContext, optlen: i32) -> i32 {
    if optlen < 16 {
        return pass(ctx);
    }
    // SAFETY: as in `error_queue`: packet pointers, checked before the read.
    let (start, end) = unsafe {
        let so = &*ctx.sockopt;
        (
            so.__bindgen_anon_2.optval as *const u8,
            so.__bindgen_anon_3.optval_end as *const u8,
        )
    };
    if start.wrapping_add(16) > end {
        return REFUSE;
    }
    // SAFETY: checked above: 16 bytes from `start` lie within the value.
    let addr = unsafe { core::ptr::read_unaligned(start.cast::<[u32; 4]>()) };
    // Beside the agent: the host's addresses and the wildcard. In a namespace of its own
    // (a pod's), whose addresses the agent does not track: the wildcard only (the option
    // then only picks an interface), since nothing else would check the address.
    let host = in_host_netns(ctx);
    if (host && crate::source::allowed(addr)) || (!host && addr == [0; 4]) {
        return pass_judged(ctx, optlen);
    }
    // SAFETY: helpers without pointer arguments.
    let own = unsafe { bpf_get_current_cgroup_id() };
    let Some(e) = policy::enrollment(own, |l| unsafe { bpf_get_current_ancestor_cgroup_id(l) })
    else {
        return pass_judged(ctx, optlen);
    };
    let verdict = policy::refusal_verdict(e.policy_id);
    report_option(
        ctx,
        own,
        e.policy_id,
        verdict,
        reason::NONLOCAL_SOURCE,
        (SOL_IPV6, IPV6_PKTINFO),
        crate::source::event_addr(AF_INET6, addr),
    );
    if verdict == verdict::AUDIT {
        policy::count(Counter::Audit);
        return pass_judged(ctx, optlen);
    }
    REFUSE
}

/// The `setsockopt` event of option `(level, optname)` for the calling cgroup `own`: its
/// family from the level, its `port` holding `level << 8 | optname`, `addr` what the
/// option named (zeros for none).
#[inline(always)]
fn report_option(
    ctx: &SockoptContext,
    own: u64,
    policy_id: u32,
    verdict: u32,
    reason: u32,
    (level, optname): (i32, i32),
    addr: [u8; 16],
) {
    // SAFETY: `sk` is a non-null PTR_TO_SOCKET in a sockopt context; `protocol` is a
    // readable 4-byte field of `bpf_sock`.
    let protocol = unsafe { (*(*ctx.sockopt).__bindgen_anon_1.sk).protocol };
    policy::report(
        ctx,
        Report {
            cgroup_id: own,
            policy_id,
            hook: hook::SETSOCKOPT,
            verdict,
            reason,
            family: if level == SOL_IPV6 { AF_INET6 } else { AF_INET },
            protocol: protocol as u16,
            port: sockopt_port(level as u8, optname as u8),
            addr,
            task_context: true,
        },
    );
}

/// Hands the call on unchanged: the kernel uses the caller's own buffer and length (see
/// the module header for the `optlen` rule). Only for decisions that never read the
/// option's value.
#[inline(always)]
fn pass(ctx: &SockoptContext) -> i32 {
    // SAFETY: optlen is writable in a setsockopt context; 0 means "use the caller's
    // buffer and length", which is what an untouched option wants.
    unsafe { (*ctx.sockopt).optlen = 0 };
    PASS
}

/// Hands the call on with the program's own copy of the value, which the decision read:
/// `optlen` as it is (the kernel then uses the copy), or one page when it was longer
/// (the copy holds only the first page; 0 or an untouched longer `optlen` would send the
/// kernel back to the caller's buffer, which another thread may have changed since).
#[inline(always)]
fn pass_judged(ctx: &SockoptContext, optlen: i32) -> i32 {
    if optlen > PAGE_SIZE {
        // SAFETY: optlen is writable in a setsockopt context.
        unsafe { (*ctx.sockopt).optlen = PAGE_SIZE };
    }
    PASS
}
