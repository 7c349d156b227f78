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
//! (A connected UDP socket's send with a control message runs the sendmsg hook too:
//! `udp_sendmsg`/`udpv6_sendmsg` treat it as unconnected. Its source is checked here
//! like any other; its destination, when it names none, is the connected peer that
//! `connect4|6` judged, and passes: see `sock_addr::to_connected_peer`.)
//!
//! Not seen by those hooks: ping and raw sockets, whose bind is their own (`ping_bind`,
//! `raw_bind` replace `inet_bind`, and run no cgroup hook) and whose sends run no
//! sendmsg hook, though a ping socket's `IPV6_PKTINFO` control message names a source
//! too. An IPv4 packet cannot leave from a non-local source without `IP_TRANSPARENT`
//! or `IP_HDRINCL` (`__ip_route_output_key` refuses it, `ip_nonlocal_bind` or not), but
//! an IPv6 one can (attack review 13: a ping socket bound to the attacker's address had
//! the echo reply, payload included, sent there). So `cgroup_skb/egress` checks the
//! source of every IPv6 packet of an enrolled cgroup that is neither TCP nor UDP
//! ([`egress_refused`]) — a couple of comparisons for the TCP and UDP packets that are
//! nearly all of the traffic, and before its flow cache, since a ping socket's source
//! can change from one packet to the next.

use aya_ebpf::{
    helpers::generated::bpf_get_netns_cookie,
    macros::map,
    maps::{LpmTrie, lpm_trie::Key},
    programs::{SkBuffContext, SockAddrContext},
};
use hb_common::{AF_INET, AF_INET6, LOCAL_DELIVERED, LOCAL_EXCEPTED, limits};

use crate::sockopt;

/// The host's addresses (`map_names::LOCAL_ADDRS`), IPv4 as IPv4-mapped IPv6; each key
/// as four words of network-order bytes, as `user_ip6` holds an address.
#[map(name = "HB_LOCAL_ADDRS")]
static LOCAL_ADDRS: LpmTrie<[u32; 4], u32> = LpmTrie::pinned(limits::LOCAL_ADDRS, 0);

/// `::ffff:0:0/96`'s third word.
const MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// Whether the host holds `addr` (wire bytes, IPv4 in the first four) and no exception
/// covers it (`LOCAL_EXCEPTED`): a validated peer `cgroup_skb/egress` no longer passes
/// by its admission alone, an address no static CIDR allows (`policy::judge4|6`).
#[inline(always)]
pub(crate) fn host_own(family: u16, addr: &[u8; 16]) -> bool {
    let word = |i: usize| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    if family == AF_INET {
        return host_own4([addr[0], addr[1], addr[2], addr[3]]);
    }
    held([word(0), word(4), word(8), word(12)])
}

/// As [`host_own`], for an IPv4 address (wire bytes).
#[inline(always)]
pub(crate) fn host_own4(addr: [u8; 4]) -> bool {
    held(mapped4(u32::from_ne_bytes(addr)))
}

/// Whether `HB_LOCAL_ADDRS` holds `key` outside every exception.
#[inline(always)]
fn held(key: [u32; 4]) -> bool {
    LOCAL_ADDRS
        .get(Key::new(128, key))
        .is_some_and(|v| *v != LOCAL_EXCEPTED)
}

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
    LOCAL_ADDRS
        .get(Key::new(128, addr))
        .is_some_and(|v| *v != LOCAL_DELIVERED)
}

/// `addr` (four words as the kernel keeps an address, IPv4 mapped into IPv6) as an
/// event's bytes: IPv4 in the first four bytes, IPv6 whole.
#[inline(always)]
pub(crate) fn event_addr(family: u16, addr: [u32; 4]) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    if family == AF_INET {
        bytes[0..4].copy_from_slice(&addr[3].to_ne_bytes());
        return bytes;
    }
    for (chunk, word) in bytes.chunks_exact_mut(4).zip(addr) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    bytes
}

/// Whether the hook's socket lives in the agent's network namespace (see
/// `sockopt::in_host_netns`, whose map this reads).
#[inline(always)]
pub(crate) fn in_host_netns(ctx: &SockAddrContext) -> bool {
    // SAFETY: the context pointer of a sock_addr program, which this helper accepts.
    let own = unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
    sockopt::host_netns_is(own)
}

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// For `cgroup_skb/egress`: whether an IPv6 packet of `protocol` (after its extension
/// headers) leaves from a source that is not the host's, from a socket in the agent's
/// network namespace. TCP and UDP are not checked here (their sources are judged at
/// bind and sendmsg); an IPv4 packet never (the kernel routes it only from a local
/// source). An unreadable source is not local (fail closed); the caller drops only for
/// an enrolled cgroup.
#[inline(always)]
pub(crate) fn egress_refused(ctx: &SkBuffContext, family: u16, protocol: u8) -> bool {
    if family != AF_INET6 || protocol == IPPROTO_TCP || protocol == IPPROTO_UDP {
        return false;
    }
    // SAFETY: the context pointer of a cgroup_skb program, which this helper accepts.
    let own = unsafe { bpf_get_netns_cookie(ctx.skb.skb.cast()) };
    if !sockopt::host_netns_is(own) {
        return false;
    }
    // The source address, bytes 8..24 of the IPv6 header.
    let Ok(src) = ctx.load::<[u32; 4]>(8) else {
        return true;
    };
    !allowed(src)
}

/// The source of an IPv6 packet as event bytes (zero if unreadable).
#[inline(always)]
pub(crate) fn egress_source(ctx: &SkBuffContext) -> [u8; 16] {
    ctx.load::<[u8; 16]>(8).unwrap_or([0; 16])
}
