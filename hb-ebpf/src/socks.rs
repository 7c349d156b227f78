//! `cgroup/sock_create` and `cgroup/sock_release`: a sandbox in the agent's network
//! namespace holds at most `sandbox_defaults.sockets_max` internet sockets at once.
//!
//! Why: such a sandbox shares the host's ephemeral port range with every tenant, the
//! agent and the host's daemons. A socket bound to port 0 (or listening without a bind,
//! or a UDP socket that sent) takes a port of it, and the kernel never hands a port a
//! bind took to a connect (`__inet_hash_connect` skips such buckets): one sandbox binding
//! sockets until the range ran out left every TCP connect in the namespace failing with
//! EADDRNOTAVAIL (attack review 22). Each internet socket a sandbox creates there is
//! counted against its governing cgroup (`HB_SOCKS_HELD`); the cgroup id is kept under the
//! socket's cookie (`HB_SOCK_CHARGED`), so the socket's release gives the count back to
//! the cgroup that was charged, whichever task closes it. Past the bound, `socket()`
//! fails with EPERM and the refusal is an event (reason `sockets_max`, no address).
//! Sockets of a pod in a namespace of its own are not counted: its ports are its own.
//!
//! Two tasks creating at once may both pass the check when one socket is left (the add
//! and the read are two steps): the bound is exceeded by at most the number of CPUs. A
//! sandbox's entry goes when its count returns to 0; a create racing with that removal
//! loses its charge (the count falls short by it), and a release never takes a count
//! below 0.
//! Fail closed: a sandbox whose count cannot be kept (map full) or whose charge cannot be
//! filed (every counted socket of the node holds an entry) is refused. Accepted sockets
//! are not created by `socket()` and are not counted (they share their listener's port).
//! A socket another `sock_create` program refuses after this one charged it is never
//! released as an internet socket: its charge and entry stay (its sandbox holds one place
//! less); hb attaches no such program.
//!
//! Helpers used, all offered to `BPF_PROG_TYPE_CGROUP_SOCK` (`sock_filter_func_proto`,
//! net/core/filter.c): `bpf_get_current_cgroup_id`, `bpf_get_current_ancestor_cgroup_id`,
//! `bpf_get_netns_cookie`, `bpf_get_socket_cookie` and map helpers.

use core::ptr;

use aya_ebpf::{
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id,
        generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    },
    macros::{cgroup_sock, map},
    maps::{Array, HashMap},
    programs::SockContext,
};
use hb_common::{Counter, hook, limits, reason, verdict};

use crate::{
    policy::{self, Report},
    sockopt,
};

const ALLOW: i32 = 1;
const REFUSE: i32 = 0;

#[map(name = "HB_SOCKS_HELD")]
static HELD: HashMap<u64, u64> = HashMap::pinned(limits::SOCKS_HELD, 0);

#[map(name = "HB_SOCKS_MAX")]
static MAX: Array<u32> = Array::pinned(1, 0);

/// The governing cgroup each counted socket was charged to, by socket cookie. A hash
/// rather than socket storage: creating a socket's storage entry (an allocation, freed
/// after an RCU grace period) cost about 550 ns of every socket a sandbox created,
/// the update of a preallocated hash a fraction of it.
#[map(name = "HB_SOCK_CHARGED")]
static CHARGED: HashMap<u64, u64> = HashMap::pinned(limits::SOCK_CHARGED, 0);

/// Counts a new internet socket of a sandbox in the agent's network namespace against
/// its governing cgroup; refuses it (EPERM, an event) past `sockets_max`.
#[cgroup_sock(sock_create)]
pub fn hb_sock_create(ctx: SockContext) -> i32 {
    let max = MAX.get(0).copied().unwrap_or(0);
    if max == 0 {
        return ALLOW;
    }
    // SAFETY: helpers without pointer arguments.
    let own = unsafe { bpf_get_current_cgroup_id() };
    let Some((cgroup_id, e)) = policy::governing(own, |level| unsafe {
        bpf_get_current_ancestor_cgroup_id(level)
    }) else {
        return ALLOW;
    };
    // SAFETY: the context's socket, which this helper accepts for cgroup sock programs.
    let netns = unsafe { bpf_get_netns_cookie(ctx.sock.cast()) };
    if !sockopt::host_netns_is(netns) {
        return ALLOW;
    }
    if charge(&ctx, cgroup_id, max) {
        return ALLOW;
    }
    // SAFETY: 4-byte reads of fields every cgroup sock program may read.
    let (family, protocol) = unsafe { ((*ctx.sock).family, (*ctx.sock).protocol) };
    let verdict = policy::refusal_verdict(e.policy_id);
    policy::report(
        &ctx,
        Report {
            cgroup_id,
            policy_id: e.policy_id,
            hook: hook::SOCK_CREATE,
            verdict,
            reason: reason::SOCKETS_MAX,
            family: family as u16,
            protocol: protocol as u16,
            port: 0,
            addr: [0; 16],
            task_context: true,
        },
    );
    if verdict == verdict::AUDIT {
        policy::count(Counter::Audit);
        ALLOW
    } else {
        policy::count(Counter::DenyNotAllowed);
        REFUSE
    }
}

/// Gives a counted socket's place back to the cgroup it was charged to. Always 1.
#[cgroup_sock(sock_release)]
pub fn hb_sock_release(ctx: SockContext) -> i32 {
    // Only sockets of the agent's namespace were counted: every other one (a pod's in its
    // own namespace) leaves on the namespace's cookie, before the socket's own is made.
    // SAFETY: the context's socket, which these helpers accept.
    let netns = unsafe { bpf_get_netns_cookie(ctx.sock.cast()) };
    if !sockopt::host_netns_is(netns) {
        return ALLOW;
    }
    // SAFETY: as above.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
    // SAFETY: the value is copied out before the entry is removed.
    let Some(cgroup_id) = (unsafe { CHARGED.get(cookie) }).copied() else {
        return ALLOW;
    };
    let _ = CHARGED.remove(cookie);
    let Some(held) = HELD.get_ptr_mut(cgroup_id) else {
        return ALLOW;
    };
    // SAFETY: a map value's u64, 8-byte aligned (as below).
    if unsafe { ptr::read_volatile(held) } == 0 {
        // A charge lost to a race with the removal below: never taken back twice (a
        // count that wrapped would refuse the sandbox every socket).
        return ALLOW;
    }
    // SAFETY: as above; the add wraps, taking one back.
    unsafe { policy::atomic_add(held, u64::MAX) };
    // SAFETY: as above.
    if unsafe { ptr::read_volatile(held) } == 0 {
        // The sandbox holds none: its entry goes, so that sandboxes gone do not fill
        // the map (which would refuse every other sandbox's sockets).
        let _ = HELD.remove(cgroup_id);
    }
    ALLOW
}

/// Charges one socket to `cgroup_id` if it holds fewer than `max`, and files the charge
/// under the socket's cookie. False when it may not have one more (or the charge cannot be
/// kept: fail closed).
#[inline(always)]
fn charge(ctx: &SockContext, cgroup_id: u64, max: u32) -> bool {
    if HELD.get_ptr_mut(cgroup_id).is_none() && HELD.insert(cgroup_id, 0, 0).is_err() {
        policy::count(Counter::MapFull);
        return false;
    }
    let Some(held) = HELD.get_ptr_mut(cgroup_id) else {
        return false;
    };
    // SAFETY: a map value's u64, 8-byte aligned.
    unsafe { policy::atomic_add(held, 1) };
    // SAFETY: as above; a plain read after the add (see the module documentation).
    let now = unsafe { ptr::read_volatile(held) };
    // SAFETY: the context's socket (never null in sock_create), which this helper accepts.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
    let filed = now <= u64::from(max) && {
        let filed = CHARGED.insert(cookie, cgroup_id, 0).is_ok();
        if !filed {
            policy::count(Counter::MapFull);
        }
        filed
    };
    if !filed {
        // SAFETY: as above: the charge taken back.
        unsafe { policy::atomic_add(held, u64::MAX) };
    }
    filed
}
