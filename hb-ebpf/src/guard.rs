//! The egress guard's kernel half: guarded TCP connects go to the agent's guard.
//!
//! In `connect4|6`, a TCP destination the policy allows, on one of its `guard_ports`
//! (or on any port under `guard_all_ports`),
//! from a policy with `guard = true` is rewritten to the guard at `port_base + policy id`
//! ([`GuardConfig`]; IPv6 sockets to `[::1]`), and what the socket addressed is
//! remembered, with the cgroup, pid and command that connected, in the socket's own
//! storage (`HB_GUARD_NAMED`, freed with the socket: no other socket's connects can push
//! it out). When the socket sends its SYN, `sock_ops` (`TCP_CONNECT_CB`, the source
//! port now chosen) copies that record to `HB_GUARD_CONNS` under the client end and the
//! network namespace as the guard will see them: the guard reads the original
//! destination there when it accepts, and removes it when it closes the connection;
//! `sock_ops` removes it when the client end closes (`BPF_SOCK_OPS_STATE_CB`), so a
//! connection the guard never accepted leaves nothing behind in the shared LRU.
//! `getpeername4|6` reports the original peer again.
//!
//! Each enrolled cgroup's share of `HB_GUARD_CONNS`: the records a cgroup's sockets
//! filed and that have not closed are counted (`HB_GUARD_HELD`, key 0 all cgroups
//! together), and a guarded connect of a cgroup that holds as many as are free
//! (`limits::GUARD_FLOWS_FILED` less all held) is refused (EPERM, reason
//! `guard_flows_full`). The map's bound is no socket bound: in the host's namespace
//! `sockets_max` keeps each sandbox far below it, but a pod's sockets in its own
//! namespace are not counted, and a pod holding ~65,000 guarded connections that wrote
//! nothing pushed out other tenants' waiting connections' records, which the guard then
//! closed (attack review 51). Counted at `TCP_CONNECT_CB` when the record is filed, given
//! back when the client end enters CLOSE from another state (once per connect, whoever
//! removed the record), to the cgroup in the socket's record.
//!
//! UDP to port 443, or to any port the policy guards (all of them under
//! `guard_all_ports`), from a guarded policy is refused here unless `allow_quic = true`:
//! the guard sees TCP only, and HTTP/3 clients fall back to TCP.
//!
//! Fail closed: a record that cannot be stored refuses the connect (a connect that went
//! to the destination directly would skip the guard); so does a guarded policy while no
//! guard is configured (`guard_down`); the guard closes a connection whose record it
//! cannot find; with no guard listening the connect is refused.

use core::ptr;

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_TCP_CLOSE},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::map,
    maps::{Array, HashMap, LruHashMap},
    programs::{SockAddrContext, SockOpsContext},
};
use hb_common::{
    AF_INET, AF_INET6, Counter, FlowKey, GuardConfig, GuardOrig, GuardPortKey, POLICY_GUARD,
    POLICY_GUARD_ALL, POLICY_QUIC, limits,
};

use crate::{dns, policy, sock_storage::sock_storage_map};

#[map(name = "HB_GUARD")]
static GUARD: Array<GuardConfig> = Array::pinned(1, 0);

#[map(name = "HB_GUARD_PORTS")]
static GUARD_PORTS: HashMap<GuardPortKey, u32> = HashMap::pinned(limits::GUARD_PORTS, 0);

sock_storage_map! {
    /// Each redirected socket's own record of what it addressed and who connected.
    static GUARD_NAMED: GuardNamedMap<GuardOrig> = "HB_GUARD_NAMED";
}

#[map(name = "HB_GUARD_CONNS")]
static GUARD_FLOWS: LruHashMap<FlowKey, GuardOrig> = LruHashMap::pinned(limits::GUARD_FLOWS, 0);

/// Flow records filed and not yet closed, per enrolled cgroup; [`ALL_CGROUPS`]: all
/// together (see the module documentation).
#[map(name = "HB_GUARD_HELD")]
static FLOWS_HELD: HashMap<u64, u64> = HashMap::pinned(limits::GUARD_FLOWS_HELD, 0);
/// The key of all cgroups' count in `FLOWS_HELD` (no cgroup has id 0).
const ALL_CGROUPS: u64 = 0;

const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
/// Port 443 as `bpf_sock_addr.user_port` holds it.
const QUIC_PORT: u32 = 443u16.to_be() as u32;

/// `::1` as four `user_ip6` words, and as bytes.
const LOOPBACK6: [u32; 4] = [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])];
const LOOPBACK6_BYTES: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// What the connect hooks do with an allowed destination.
pub(crate) enum Route {
    /// Not guarded: connect as addressed.
    Direct,
    /// Rewritten to the guard; the socket's admitted peer is the guard.
    Guarded,
    /// Refused: QUIC under a guarded policy.
    Quic,
    /// Refused: the original destination could not be remembered.
    Unrecorded,
    /// Refused: the policy is guarded and no guard is running.
    GuardDown,
    /// Refused: the cgroup holds its part of the guard's flow records.
    FlowsFull,
}

#[inline(always)]
fn config() -> Option<GuardConfig> {
    GUARD.get(0).copied().filter(|c| c.enabled != 0)
}

#[inline(always)]
fn guard_port(cfg: &GuardConfig, policy_id: u32) -> u16 {
    cfg.port_base.wrapping_add(policy_id as u16)
}

/// Whether the policy guards TCP connects to `port` (network order in the low 16 bits,
/// as `user_port` holds it). Only reached for a policy with `POLICY_GUARD`.
#[inline(always)]
fn guards_port(policy_id: u32, port: u32) -> bool {
    let key = GuardPortKey {
        policy_id,
        port: u16::from_be(port as u16),
        _pad: 0,
    };
    // SAFETY: the value is not read, only its presence.
    unsafe { GUARD_PORTS.get(key) }.is_some()
}

/// Decides an allowed destination's route. `addr` is the destination as the hook read it
/// (IPv4 in the first four bytes for `family == AF_INET`).
#[inline(always)]
pub(crate) fn route(
    ctx: &SockAddrContext,
    cgroup_id: u64,
    policy_id: u32,
    family: u16,
    protocol: u32,
    port: u32,
    addr: [u8; 16],
) -> Route {
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return Route::Direct;
    }
    let flags = policy::policy_flags(policy_id);
    if flags & POLICY_GUARD == 0 {
        return Route::Direct;
    }
    if protocol == IPPROTO_UDP {
        // QUIC goes wherever HTTPS does: 443, and every port the policy guards (a CDN
        // serves HTTP/3 on the ports it serves HTTPS on, `Alt-Svc: h3=":8443"`). UDP to
        // a guarded port would carry an HTTP/3 ClientHello's SNI past the guard. DNS
        // (port 53, here only when it was not redirected to the resolver) stays judged
        // like other UDP under `guard_all_ports`.
        let guarded = port == QUIC_PORT
            || (flags & POLICY_GUARD_ALL != 0 && port != dns::DNS_PORT)
            || guards_port(policy_id, port);
        return if guarded && flags & POLICY_QUIC == 0 {
            Route::Quic
        } else {
            Route::Direct
        };
    }
    if flags & POLICY_GUARD_ALL == 0 && !guards_port(policy_id, port) {
        return Route::Direct;
    }
    // The policy is guarded but no guard is pointed at (an agent that flagged the policy
    // and died before its guard listened): refused, never direct.
    let Some(cfg) = config() else {
        return Route::GuardDown;
    };
    let (orig_family, orig_addr) = match mapped_v4(family, &addr) {
        Some(v4) => (AF_INET, v4),
        None => (family, addr),
    };
    let orig = GuardOrig {
        addr: orig_addr,
        port_be: port as u16,
        family: orig_family,
        policy_id,
        cgroup_id,
        pid_tgid: bpf_get_current_pid_tgid(),
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    if !flow_room(cgroup_id) {
        return Route::FlowsFull;
    }
    let sk = dns::sock(ctx);
    if !GUARD_NAMED.write(sk, orig) {
        policy::count(Counter::MapFull);
        return Route::Unrecorded;
    }
    let to = u32::from(guard_port(&cfg, policy_id).to_be());
    // SAFETY: verifier-checked context field writes (4-byte stores of user_ip4,
    // user_ip6[i] and user_port are allowed in connect4/connect6).
    unsafe {
        let sa = &mut *ctx.sock_addr;
        if family == AF_INET {
            sa.user_ip4 = u32::from_ne_bytes(cfg.addr4);
            let mut peer = [0u8; 16];
            peer[..4].copy_from_slice(&cfg.addr4);
            sa.user_port = to;
            policy::admit(sk, AF_INET, peer, hb_common::SOCK_ADMIT_CONNECT);
        } else {
            sa.user_ip6[0] = LOOPBACK6[0];
            sa.user_ip6[1] = LOOPBACK6[1];
            sa.user_ip6[2] = LOOPBACK6[2];
            sa.user_ip6[3] = LOOPBACK6[3];
            sa.user_port = to;
            policy::admit(sk, AF_INET6, LOOPBACK6_BYTES, hb_common::SOCK_ADMIT_CONNECT);
        }
    }
    Route::Guarded
}

/// The IPv4 address of an IPv4-mapped IPv6 destination.
#[inline(always)]
fn mapped_v4(family: u16, a: &[u8; 16]) -> Option<[u8; 16]> {
    if family == AF_INET6 && a[..10] == [0; 10] && a[10] == 0xff && a[11] == 0xff {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&a[12..16]);
        Some(v4)
    } else {
        None
    }
}

/// Whether `port` (as user_port holds it) is one of the guard's ports.
#[inline(always)]
fn is_guard_port(cfg: &GuardConfig, port: u32) -> bool {
    hb_common::in_policy_ports(cfg.port_base, u16::from_be(port as u16))
}

/// For `sock_ops` at `TCP_CONNECT_CB`: whether a connection to `port` (host order) could
/// be one [`record_flow`] files (the guard runs and `port` is `guard_port` of some policy
/// id below `limits::POLICIES`). A superset of the ports `record_flow` accepts.
#[inline(always)]
pub(crate) fn may_be_guard_port(port: u16) -> bool {
    config().is_some_and(|cfg| u32::from(port.wrapping_sub(cfg.port_base)) < limits::POLICIES)
}

/// For the bind hooks: whether `port` (host order) is in the guard's range, whether or
/// not the guard runs.
#[inline(always)]
pub(crate) fn is_guard_port_any(port: u16) -> bool {
    GUARD
        .get(0)
        .is_some_and(|cfg| hb_common::in_policy_ports(cfg.port_base, port))
}

/// For the packet hook: whether a TCP segment goes to the guard of `policy_id` (its
/// address, `[::1]` for IPv6, and that policy's port; `port` host order). A sandbox
/// reaches that port only through the connect hooks' redirect (a connect that names it
/// is judged as loopback and refused), so this passes the segments of a guarded
/// connection that has no admitted-peer record (`HB_SOCK_PEER`: the kernel could not
/// allocate it, or the connection predates an agent upgrade that replaced the map), as
/// `dns::is_resolver_addr` does for the resolver. (It was the fix against a flood of
/// other sockets pushing guarded connections out of the shared LRU the records once
/// were; the per-socket storage has no such pressure.)
#[inline(always)]
pub(crate) fn is_own_guard(policy_id: u32, family: u16, addr: &[u8; 16], port: u16) -> bool {
    let Some(cfg) = config() else { return false };
    if port == 0 || port != guard_port(&cfg, policy_id) {
        return false;
    }
    if family == AF_INET {
        addr[..4] == cfg.addr4
    } else {
        *addr == LOOPBACK6_BYTES
    }
}

/// In getpeername4: reports the guard as the peer the socket addressed.
#[inline(always)]
pub(crate) fn restore4(ctx: &SockAddrContext) {
    let Some(cfg) = config() else { return };
    let Some(orig) = GUARD_NAMED.read(dns::sock(ctx)) else {
        return;
    };
    if orig.family != AF_INET {
        return;
    }
    // SAFETY: verifier-checked context field accesses.
    unsafe {
        let sa = &mut *ctx.sock_addr;
        if sa.user_ip4 != u32::from_ne_bytes(cfg.addr4) || !is_guard_port(&cfg, sa.user_port) {
            return;
        }
        sa.user_ip4 = u32::from_ne_bytes([orig.addr[0], orig.addr[1], orig.addr[2], orig.addr[3]]);
        sa.user_port = u32::from(orig.port_be);
    }
}

/// In getpeername6: reports `[::1]` (the guard) as the peer the socket addressed; an IPv4
/// destination of an IPv6 socket as the IPv4-mapped address it named.
#[inline(always)]
pub(crate) fn restore6(ctx: &SockAddrContext) {
    let Some(cfg) = config() else { return };
    let Some(orig) = GUARD_NAMED.read(dns::sock(ctx)) else {
        return;
    };
    // SAFETY: verifier-checked context field accesses.
    unsafe {
        let sa = &mut *ctx.sock_addr;
        let from = [
            sa.user_ip6[0],
            sa.user_ip6[1],
            sa.user_ip6[2],
            sa.user_ip6[3],
        ];
        if from != LOOPBACK6 || !is_guard_port(&cfg, sa.user_port) {
            return;
        }
        let a = orig.addr;
        if orig.family == AF_INET {
            sa.user_ip6[0] = 0;
            sa.user_ip6[1] = 0;
            sa.user_ip6[2] = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
            sa.user_ip6[3] = u32::from_ne_bytes([a[0], a[1], a[2], a[3]]);
        } else {
            sa.user_ip6[0] = u32::from_ne_bytes([a[0], a[1], a[2], a[3]]);
            sa.user_ip6[1] = u32::from_ne_bytes([a[4], a[5], a[6], a[7]]);
            sa.user_ip6[2] = u32::from_ne_bytes([a[8], a[9], a[10], a[11]]);
            sa.user_ip6[3] = u32::from_ne_bytes([a[12], a[13], a[14], a[15]]);
        }
        sa.user_port = u32::from(orig.port_be);
    }
}

/// In `sock_ops` at `TCP_CONNECT_CB`: a redirected socket's record, filed under its
/// client end (address and the source port just chosen), the guard port and its network
/// namespace ([`crate::ingress::connect_key`]), which is how the guard finds it from the
/// accepted socket. A socket that was not redirected (no record) costs one lookup.
/// A filed socket's state changes are to be reported, so that [`forget_flow`] removes
/// the record when the connection closes.
#[inline(always)]
pub(crate) fn record_flow(ctx: &SockOpsContext) {
    let Some((key, orig)) = flow_of(ctx) else {
        return;
    };
    if GUARD_FLOWS.insert(key, orig, 0).is_err() {
        policy::count(Counter::MapFull);
        return;
    }
    held_add(orig.cgroup_id, 1);
    held_add(ALL_CGROUPS, 1);
    // Fails only for a socket that is not a full TCP one, which sends no SYN.
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
}

/// In `sock_ops` at `BPF_SOCK_OPS_STATE_CB` (args: old state, new state), a guarded
/// connection's client end closing (reset, a failed connect, or the end of TIME_WAIT's
/// way in): its flow record goes. The guard reads a record when it accepts, and a
/// client end reaches CLOSE only after the guard's FIN, a reset or a failed connect, so
/// no connection the guard could still accept loses it. Without this a connection the
/// guard never accepted (it accepts only once the first bytes came, `TCP_DEFER_ACCEPT`,
/// so one reset before writing) left its record to the node-wide LRU until a flood of
/// such records from any sandbox pushed out other tenants' waiting connections' records
/// (attack review 48). The state callback fires before the kernel unhashes the socket,
/// so its ends are still those filed.
#[inline(always)]
pub(crate) fn forget_flow(ctx: &SockOpsContext) {
    if ctx.arg(1) != BPF_TCP_CLOSE {
        return;
    }
    let Some((key, orig)) = flow_of(ctx) else {
        return;
    };
    let _ = GUARD_FLOWS.remove(key);
    // CLOSE is entered once per connect (`tcp_set_state` reports CLOSE to CLOSE too,
    // which gives nothing back twice).
    if ctx.arg(0) != BPF_TCP_CLOSE {
        held_add(orig.cgroup_id, u64::MAX);
        held_add(ALL_CGROUPS, u64::MAX);
    }
}

/// Whether `cgroup_id` may file one more flow record: it holds fewer than all cgroups
/// leave free of [`limits::GUARD_FLOWS_FILED`]. Its entry is made here, at its first
/// guarded connect; a cgroup whose entry cannot be made (the map full) is refused. The
/// counts are read signed: one that a hand-over of programs took below 0 (a record filed
/// by programs that did not count it, given back by these) reads as 0.
#[inline(always)]
fn flow_room(cgroup_id: u64) -> bool {
    if FLOWS_HELD.get_ptr_mut(cgroup_id).is_none() {
        let _ = FLOWS_HELD.insert(cgroup_id, 0, u64::from(BPF_NOEXIST));
    }
    let Some(own) = FLOWS_HELD.get_ptr_mut(cgroup_id) else {
        policy::count(Counter::MapFull);
        return false;
    };
    let all = FLOWS_HELD.get_ptr_mut(ALL_CGROUPS).map_or(0, |p| {
        // SAFETY: a map value's u64, 8-byte aligned.
        (unsafe { ptr::read_volatile(p) } as i64).max(0)
    });
    // SAFETY: as above.
    let own = (unsafe { ptr::read_volatile(own) } as i64).max(0);
    own < (limits::GUARD_FLOWS_FILED as i64).saturating_sub(all)
}

/// Adds `n` (`u64::MAX`: takes one back) to the count of `key`; all cgroups' entry is
/// made at the first record. A count at 0 is never taken below it.
#[inline(always)]
fn held_add(key: u64, n: u64) {
    if key == ALL_CGROUPS && n == 1 && FLOWS_HELD.get_ptr_mut(key).is_none() {
        let _ = FLOWS_HELD.insert(key, 0, u64::from(BPF_NOEXIST));
    }
    let Some(p) = FLOWS_HELD.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: a map value's u64, 8-byte aligned; the add wraps (`u64::MAX`: minus one).
    unsafe {
        if n == u64::MAX && ptr::read_volatile(p) == 0 {
            return;
        }
        policy::atomic_add(p, n);
    }
}

/// A redirected socket's flow key and record, if it connects to its policy's guard port.
#[inline(always)]
fn flow_of(ctx: &SockOpsContext) -> Option<(FlowKey, GuardOrig)> {
    // SAFETY: a verifier-checked 8-byte read of the context's `sk` field (null-checked by
    // `read`).
    let sk = unsafe { (*ctx.ops).__bindgen_anon_2.sk };
    let orig = GUARD_NAMED.read(sk)?;
    let cfg = config()?;
    let key = crate::ingress::connect_key(ctx)?;
    // A socket redirected once and connected again elsewhere (after a failed connect):
    // not a guarded connection.
    (key.server_port == guard_port(&cfg, orig.policy_id)).then_some((key, orig))
}
