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
//!   `net.ipv6.ip_nonlocal_bind = 1` lets any socket do the same without an option; the
//!   ingress program admits a same-sandbox client only from a local source anyway.
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
//!   sockets, and its servers (a sidecar proxy's listeners) keep `SO_REUSEPORT`.
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
//! That the kernel reads the caller's buffer again after we passed is sound only because
//! no decision here depends on the option's value: a program that judged the value would
//! have to hand its own copy on (leave `optlen`), or the caller could change the value
//! between our check and the kernel's read.
//!
//! Which programs run is decided by the socket's cgroup (`sk_cgrp_data`); whose call it
//! is, by the calling task's cgroup, as in `sock_addr`. Byte order: `level`, `optname`
//! and `optlen` are host-order integers; the option value is never read.
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
    maps::Array,
    programs::SockoptContext,
};
use hb_common::{AF_INET, AF_INET6, Counter, hook, reason, sockopt_port, verdict};

use crate::policy::{self, Report};

const PASS: i32 = 1;
const REFUSE: i32 = 0;

const SOL_IP: i32 = 0;
const SOL_IPV6: i32 = 41;
const SOL_SOCKET: i32 = 1;
/// include/uapi/asm-generic/socket.h.
const SO_REUSEADDR: i32 = 2;
const SO_REUSEPORT: i32 = 15;
/// `SOCK_STREAM` (`bpf_sock.type`).
const SOCK_STREAM: u32 = 1;
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
    // SAFETY: `sk` is a non-null PTR_TO_SOCKET in a sockopt context; `type` is a
    // readable 4-byte field of `bpf_sock`.
    let kind = unsafe { (*(*ctx.sockopt).__bindgen_anon_1.sk).type_ };
    let Some(why) = refused_option(level, optname, optlen, kind) else {
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
    let verdict = policy::refusal_verdict(e.policy_id);
    // SAFETY: `sk` is a non-null PTR_TO_SOCKET in a sockopt context; `protocol` is a
    // readable 4-byte field of `bpf_sock`.
    let protocol = unsafe { (*(*ctx.sockopt).__bindgen_anon_1.sk).protocol };
    policy::report(
        &ctx,
        Report {
            cgroup_id: own,
            policy_id: e.policy_id,
            hook: hook::SETSOCKOPT,
            verdict,
            reason: why,
            family: if level == SOL_IPV6 { AF_INET6 } else { AF_INET },
            protocol: protocol as u16,
            port: sockopt_port(level as u8, optname as u8),
            addr: [0; 16],
            task_context: true,
        },
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
    let host = HOST_NETNS.get(0).copied().unwrap_or(0);
    // SAFETY: the context pointer of a sockopt program, which this helper accepts.
    let own = unsafe { bpf_get_netns_cookie(ctx.sockopt.cast()) };
    host == 0 || own == host
}

/// The [`reason`] for refusing an option on a socket of type `kind`, or `None` for one
/// that passes.
#[inline(always)]
fn refused_option(level: i32, optname: i32, optlen: i32, kind: u32) -> Option<u32> {
    match level {
        SOL_SOCKET if optname == SO_REUSEPORT => Some(reason::SHARED_PORT),
        SOL_SOCKET if optname == SO_REUSEADDR && kind != SOCK_STREAM => Some(reason::SHARED_PORT),
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
