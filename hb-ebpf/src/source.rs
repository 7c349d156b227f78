//! Source addresses that are not the host's (`cgroup/bind4|6`, `cgroup/sendmsg4|6`).
//!
//! The other hooks judge where a packet goes, not where it says it comes from. A socket
//! with a source address that is not one of the host's sends packets whose answers go
//! to that address — off the host, to a place the policy never allowed, from a socket
//! (hb's resolver, a sandbox's own listener, any service the policy allows) that no hook
//! of the sandbox's judges (attack review 13: the resolver echoed a sandbox's chosen
//! name to the attacker's host). The options that allow it are refused in
//! `cgroup/setsockopt` (`IP_FREEBIND`, `IPV6_FREEBIND`, `IP_TRANSPARENT`,
//! `IPV6_TRANSPARENT`); a host with `net.ipv4.ip_nonlocal_bind` or
//! `net.ipv6.ip_nonlocal_bind` set lets every socket bind such an address without one.
//! So here, for enrolled cgroups: a `bind()` to an address that is not the wildcard and
//! not in `HB_LOCAL_ADDRS`, and an unconnected `sendmsg()` whose source (a bound
//! address, or `IP_PKTINFO`/`IPV6_PKTINFO` in its control message: `msg_src_ip4|6`) is
//! not local, are refused with EPERM and reported (reason `nonlocal_source`, the event's
//! address the source, its port the bind's or the destination's).
//!
//! `HB_LOCAL_ADDRS` holds the addresses of the agent's network namespace, which the
//! agent keeps from rtnetlink. The check holds for sockets in that namespace only
//! (`HB_HOST_NETNS`): a pod's namespace has addresses of its own, which the agent does
//! not track, and its sysctls are its own (a new namespace starts with
//! `ip_nonlocal_bind = 0`); there the options stay refused and the resolver answers
//! only what it can check (see the agent's `local_addrs`).
//!
//! Not seen here (see README): the kernel runs no bind hook for ping and raw sockets
//! (`ping_bind` and `raw_bind` replace `inet_bind`), and no sendmsg hook for a connected
//! UDP socket, whose `IPV6_PKTINFO` control message may name a source too; on a host
//! with `net.ipv6.ip_nonlocal_bind = 1` those remain ways to send from a foreign
//! IPv6 source (IPv4 needs a local source to route a packet without `IP_TRANSPARENT`).

use aya_ebpf::{
    helpers::generated::bpf_get_netns_cookie,
    macros::map,
    maps::{LpmTrie, lpm_trie::Key},
    programs::SockAddrContext,
};
use hb_common::limits;

use crate::sockopt;

/// The host's addresses (`map_names::LOCAL_ADDRS`), IPv4 as IPv4-mapped IPv6; each key
/// as four words of network-order bytes, as `user_ip6` holds an address.
#[map(name = "HB_LOCAL_ADDRS")]
static LOCAL_ADDRS: LpmTrie<[u32; 4], u32> = LpmTrie::pinned(limits::LOCAL_ADDRS, 0);

/// `::ffff:0:0/96`'s third word.
const MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// An IPv4 address (`user_ip4`, `msg_src_ip4`) as the map keys it.
#[inline(always)]
pub(crate) fn mapped4(ip: u32) -> [u32; 4] {
    [0, 0, MAPPED, ip]
}

/// Whether a source address may be used by a sandbox's socket: the wildcard (the
/// kernel picks a local source), an IPv4-mapped wildcard, or an address of the host.
#[inline(always)]
pub(crate) fn allowed(addr: [u32; 4]) -> bool {
    if addr[0] == 0 && addr[1] == 0 && (addr[2] == 0 || addr[2] == MAPPED) && addr[3] == 0 {
        return true;
    }
    LOCAL_ADDRS.get(&Key::new(128, addr)).is_some()
}

/// Whether the hook's socket lives in the agent's network namespace (see
/// `sockopt::in_host_netns`, whose map this reads).
#[inline(always)]
pub(crate) fn in_host_netns(ctx: &SockAddrContext) -> bool {
    // SAFETY: the context pointer of a sock_addr program, which this helper accepts.
    let own = unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
    sockopt::host_netns_is(own)
}
