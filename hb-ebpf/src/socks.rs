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
//! socket's cookie (`HB_SOCK_CHARGED`; once that table is full, in the socket's own
//! storage, `HB_SOCK_COUNTED`), so the socket's release gives the count back to the
//! cgroup that was charged, whichever task closes it. Past the bound, `socket()` fails
//! with EPERM and the refusal is an event (reason `sockets_max`, no address). So is an
//! SMC socket (`IPPROTO_SMC`), whose release this program never sees and which could
//! therefore never be given back. Sockets of a pod in a namespace of its own are not
//! counted: its ports are its own.
//!
//! Two tasks creating at once may both pass the check when one socket is left (the add
//! and the read are two steps): the bound is exceeded by at most the number of CPUs. A
//! sandbox's entry goes when its count returns to 0; a create racing with that removal
//! loses its charge (the count falls short by it; the preallocated map may even hand
//! the removed entry to another sandbox before the racing add lands), and a release
//! never takes a count below 0.
//! Fail closed: a sandbox whose count cannot be kept (map full) or whose charge can be
//! filed nowhere (the table full and the socket's storage not allocated) is refused.
//! Accepted sockets are not created by `socket()` and are not counted (they share their
//! listener's port). A socket that another `sock_create` program refuses (before or
//! after this one: every program of the cgroup runs) is never released as an internet
//! socket: its charge and entry stay (its sandbox holds one place less); hb attaches no
//! such program.
//!
//! Helpers used, all offered to `BPF_PROG_TYPE_CGROUP_SOCK` (`sock_filter_func_proto`,
//! net/core/filter.c): `bpf_get_current_cgroup_id`, `bpf_get_current_ancestor_cgroup_id`,
//! `bpf_get_netns_cookie`, `bpf_get_socket_cookie`, `bpf_sk_storage_get` and map helpers.

use core::ptr;

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_SK_STORAGE_GET_F_CREATE, bpf_map_type},
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id,
        generated::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_sk_storage_get},
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
/// after an RCU grace period) cost about 550 ns of every socket a sandbox created, the
/// update of a preallocated hash less in the connect rate. Its size is no bound: once
/// it is full, charges go to [`COUNTED`].
#[map(name = "HB_SOCK_CHARGED")]
static CHARGED: HashMap<u64, u64> = HashMap::pinned(limits::SOCK_CHARGED, 0);

/// The BTF definition of `HB_SOCK_COUNTED` (socket storage of a `u64`), pinned by name
/// as `policy::SockPeerMap` explains.
#[repr(C)]
struct SockCountedMap {
    r#type: *const [i32; bpf_map_type::BPF_MAP_TYPE_SK_STORAGE as usize],
    key: *const i32,
    value: *const u64,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
    pinning: *const [i32; 1],
}

// SAFETY: the fields are placeholders the loader reads from BTF; nothing dereferences them.
unsafe impl Sync for SockCountedMap {}

/// The governing cgroup of a counted socket whose charge found [`CHARGED`] full (the
/// node's sandboxes hold that many sockets, bound or not: a table that refused then
/// would let one tenant's sandboxes at their bound refuse every other sandbox's
/// sockets), and of sockets an agent before the table charged (kept across an upgrade).
#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "HB_SOCK_COUNTED")]
static COUNTED: SockCountedMap = SockCountedMap {
    r#type: ptr::null(),
    key: ptr::null(),
    value: ptr::null(),
    max_entries: ptr::null(),
    map_flags: ptr::null(),
    pinning: ptr::null(),
};

/// `IPPROTO_SMC`: an internet socket (`net/smc/smc_inet.c`, Linux 6.11) released by
/// `smc_release`, never `inet_release`, so `sock_release` never runs for it.
const IPPROTO_SMC: u32 = 256;

/// `BPF_NOEXIST`: an update that creates only.
const BPF_NOEXIST: u64 = 1;

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
    // SAFETY: a 4-byte read of a field every cgroup sock program may read.
    let uncountable = unsafe { (*ctx.sock).protocol } == IPPROTO_SMC;
    if !uncountable && charge(&ctx, cgroup_id, max) {
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
    let cgroup_id = match unsafe { CHARGED.get(cookie) }.copied() {
        Some(id) => {
            let _ = CHARGED.remove(cookie);
            id
        }
        None => match overflow_charge(&ctx) {
            Some(id) => id,
            None => return ALLOW,
        },
    };
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

/// The charge filed in the socket's own storage ([`COUNTED`]), if any. A socket without
/// storage (nearly all) answers at once.
#[inline(always)]
fn overflow_charge(ctx: &SockContext) -> Option<u64> {
    // SAFETY: this program's map; the context's socket; no value, no creation.
    let charged: *mut u64 = unsafe {
        bpf_sk_storage_get(
            ptr::from_ref(&COUNTED).cast_mut().cast(),
            ctx.sock.cast(),
            ptr::null_mut(),
            0,
        )
    }
    .cast();
    // SAFETY: non-null storage of this map is the socket's own `u64`.
    (!charged.is_null()).then(|| unsafe { *charged })
}

/// Files a charge in the socket's own storage, when [`CHARGED`] is full.
#[inline(always)]
fn file_overflow(ctx: &SockContext, cgroup_id: u64) -> bool {
    let mut id = cgroup_id;
    // SAFETY: this program's map; the context's socket (never null in sock_create); `id`
    // a whole u64 on the stack.
    let stored: *mut u64 = unsafe {
        bpf_sk_storage_get(
            ptr::from_ref(&COUNTED).cast_mut().cast(),
            ctx.sock.cast(),
            ptr::from_mut(&mut id).cast(),
            u64::from(BPF_SK_STORAGE_GET_F_CREATE),
        )
    }
    .cast();
    if stored.is_null() {
        return false;
    }
    // SAFETY: the socket's own storage.
    unsafe { *stored = cgroup_id };
    true
}

/// Charges one socket to `cgroup_id` if it holds fewer than `max`, and files the charge
/// under the socket's cookie (or, that table full, in its own storage). False when it may not have one more (or the charge cannot be
/// kept: fail closed).
#[inline(always)]
fn charge(ctx: &SockContext, cgroup_id: u64, max: u32) -> bool {
    // Create only: a sandbox's first two sockets at once must not both write 0 (the
    // second would wipe the first's charge); the lookup below decides (none: map full).
    if HELD.get_ptr_mut(cgroup_id).is_none() {
        let _ = HELD.insert(cgroup_id, 0, BPF_NOEXIST);
    }
    let Some(held) = HELD.get_ptr_mut(cgroup_id) else {
        policy::count(Counter::MapFull);
        return false;
    };
    // SAFETY: a map value's u64, 8-byte aligned.
    unsafe { policy::atomic_add(held, 1) };
    // SAFETY: as above; a plain read after the add (see the module documentation).
    let now = unsafe { ptr::read_volatile(held) };
    // SAFETY: the context's socket (never null in sock_create), which this helper accepts.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
    let filed = now <= u64::from(max)
        && (CHARGED.insert(cookie, cgroup_id, BPF_NOEXIST).is_ok()
            || file_overflow(ctx, cgroup_id));
    if !filed {
        // SAFETY: as above: the charge taken back.
        unsafe { policy::atomic_add(held, u64::MAX) };
    }
    filed
}
