//! `cgroup/sock_create` and `cgroup/sock_release`: a sandbox in the agent's network
//! namespace holds at most `sandbox_defaults.sockets_max` ports of the host's at once,
//! and all such sandboxes together at most `sandbox_defaults.sockets_node_percent` of
//! its ephemeral range. What `sock_ops` calls here: a connection's socket keeps its
//! place until the connection closed, and the TIME_WAIT ends it leaves count too, for
//! as long as they can live.
//!
//! Why: such a sandbox shares the host's ephemeral port range with every tenant, the
//! agent and the host's daemons. A socket bound to port 0 (or listening without a bind,
//! or a UDP socket that sent) takes a port of it, and the kernel never hands a port a
//! bind took to a connect (`__inet_hash_connect` skips such buckets): one sandbox binding
//! sockets until the range ran out left every TCP connect in the namespace failing with
//! EADDRNOTAVAIL (attack review 22). A per-sandbox bound alone is no share: two
//! sandboxes under it held the test's 5,000 ports between them, seven would hold the
//! default range (attack review 25); hence the node's bound on them all. And a
//! connection the sandbox closes first leaves its 4-tuple in TIME_WAIT for a minute
//! after `close()` gave the socket's place back: connect-and-close loops to one server
//! held 4,999 of the 5,000 ports to it (attack review 25), and nobody else on the host
//! (the broker calling the same upstream, another tenant) could connect there. A
//! connection closed with data its server does not take stays on as an orphan
//! (FIN_WAIT1) as long as the server keeps its window shut: bound to port 0 first, 4,998
//! such orphans kept every connect on the host from every server (attack review 25).
//!
//! Each internet socket a sandbox creates in that namespace is counted against its
//! governing cgroup (`HB_SOCKS_HELD`) and the node (`HB_SOCKS_NODE`); the cgroup id is
//! kept in the socket's own storage (`HB_SOCK_COUNTED`), so the socket's release gives the
//! count back to the cgroup that was charged, whichever task closes it — or, for a socket
//! that connected, once its connection closed too (its storage's bits, see `WATCHED`:
//! `sock_ops` sees the CLOSE state; whichever of the release and the CLOSE comes second
//! gives the place back, decided by an atomic fetch-or). The node's bound
//! keeps its last quarter for sandboxes that hold few (`limits::SOCKS_RESERVED_UNDER`):
//! one bound for all alone let one sandbox take it all and starve every other tenant's
//! `socket()`. Past a bound, `socket()` fails with EPERM and the refusal is an event (reason `sockets_max`
//! or `sockets_node_max`, no address). Sockets of a pod in a namespace of its own are not
//! counted: its ports are its own.
//!
//! TIME_WAIT: no hook a cgroup program may use sees a TIME_WAIT socket die (tracing
//! programs on `inet_twsk_kill` would, but they may not be loadable: a kernel or LSM
//! that refuses `BPF_PROG_TYPE_TRACING`, as the test machine's does). What `sock_ops`
//! sees is its birth: when a counted socket connects, its state callback is turned on,
//! and a change to CLOSE from FIN_WAIT2 or CLOSING is the connection entering TIME_WAIT
//! (`tcp_time_wait` ends in `tcp_done`; a reset in those states is counted too, which
//! only over-counts). Each birth is counted in the period of 2^34 ns (~17 s) it fell in,
//! for the cgroup and the node (`HB_SOCKS_TW`); the last five periods (at least 68.7 s)
//! count against the bounds beside the open sockets. A TIME_WAIT socket lives
//! `TCP_TIMEWAIT_LEN` (60 s) plus the timer wheel's slack (2 s at HZ 250, 4 s at 1000),
//! so none that still holds its port is left out, unless its peer keeps it alive by
//! sending its FIN again (`inet_twsk_reschedule`): a peer the sandbox's policy lets it
//! reach and that conspires with it, holding 4-tuples to itself, which nobody else
//! wants.
//!
//! Races: the add comes first and the check reads the count after it, so two tasks
//! creating at once cannot both take the last place (both may be refused: fail closed;
//! 24 processes starting at once held exactly 32 of 32). A sandbox's first entry is made
//! only where none is (`BPF_NOEXIST`: two first sockets at once each replaced the
//! other's, and one charge was lost). A sandbox's entry stays while its cgroup is
//! enrolled, at 0 too: the programs never remove one (an insert and a removal per
//! connection, for a sandbox that holds one socket at a time, cost `sock_create` and
//! `sock_ops` a hash update each). The agent removes the entries at 0 of cgroups no longer
//! enrolled (`maps::Maps::forget_unenrolled_socket_counts`, at every rescan and when it
//! unenrolls one), so that sandboxes gone do not fill the map (which would refuse every
//! other sandbox's sockets); a create racing with that removal loses its charge (the
//! count falls short by it), and a release never takes a count below 0. The node's count is
//! never removed and read signed: a count that a hand-over of programs took below 0
//! admits a few more, it never refuses everything. Two births on two CPUs as a new
//! period starts may both reset its slot, losing one of them.
//! MPTCP: a sandbox in the agent's namespace may open no `IPPROTO_MPTCP` socket while a
//! bound is set (EPERM, reason `mptcp`). Its connections run on subflows, TCP sockets the
//! kernel creates itself (`sock_create` is not called for them, and they have no
//! storage of ours), so their TIME_WAIT ends and orphans held ports nothing counted:
//! connect-and-close loops over MPTCP held 4,999 of 5,000 ports to one server with
//! everything above in place (attack review 25). Clients that ask for MPTCP fall back
//! to TCP on the error (Go does). An SMC socket (`IPPROTO_SMC`) is refused too (reason
//! `sockets_max`): it is released by `smc_release`, never `inet_release`, so its place
//! could never be given back.
//! Unjudged sends: a sandbox in any network namespace may open no `IPPROTO_UDPLITE`
//! socket, and no ping socket (`SOCK_DGRAM`, `IPPROTO_ICMP`/`IPPROTO_ICMPV6`) or raw
//! socket (`SOCK_RAW`, any protocol) unless its policy opts in (`POLICY_ICMP_ECHO`,
//! `POLICY_RAW_SOCKETS`): EPERM, reason `unjudged_send`. No socket hook judges where
//! their datagrams go (UDP-Lite's `connect`, a ping or raw socket's `sendto`), and the
//! copy of an IPv4 multicast or broadcast datagram the kernel loops to the host's
//! listeners is judged by no packet hook either (see [`unjudged`]). An opted-in socket is
//! counted as any other.
//! Every TCP socket reaches CLOSE before it is freed (`inet_csk_destroy_sock` requires it),
//! through `tcp_set_state`, which reports it to a socket whose state callback is on.
//! Fail closed: a sandbox whose count cannot be kept (map full) or whose socket cannot
//! carry its storage is refused. Accepted sockets are not created by `socket()` and are
//! not counted (they share their listener's port), nor their TIME_WAIT ends.
//!
//! Helpers used, all offered to `BPF_PROG_TYPE_CGROUP_SOCK` (`sock_filter_func_proto`,
//! net/core/filter.c) and, where `sock_ops` calls, to `BPF_PROG_TYPE_SOCK_OPS`:
//! `bpf_get_current_cgroup_id`, `bpf_get_current_ancestor_cgroup_id`,
//! `bpf_get_netns_cookie`, `bpf_sk_storage_get`, `bpf_ktime_get_coarse_ns`,
//! `bpf_sock_ops_cb_flags_set` and map helpers.

use core::ptr;

use aya_ebpf::{
    bindings::{
        BPF_NOEXIST, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_TCP_CLOSE, BPF_TCP_CLOSING, BPF_TCP_FIN_WAIT2,
    },
    helpers::generated::{bpf_get_netns_cookie, bpf_ktime_get_coarse_ns},
    macros::{cgroup_sock, map},
    maps::{Array, HashMap, LruHashMap},
    programs::{SockContext, SockOpsContext},
};
use hb_common::{Counter, POLICY_ICMP_ECHO, POLICY_RAW_SOCKETS, hook, limits, reason, verdict};

use crate::{
    policy::{self, Report},
    sock_storage::sock_storage_map,
    sockopt,
};

/// `IPPROTO_MPTCP` (include/uapi/linux/in.h).
const IPPROTO_MPTCP: u32 = 262;
/// `IPPROTO_SMC`: an internet socket (`net/smc/smc_inet.c`, Linux 6.11) released by
/// `smc_release`, never `inet_release`, so `sock_release` never runs for it.
const IPPROTO_SMC: u32 = 256;
/// `IPPROTO_UDPLITE` (include/uapi/linux/in.h).
const IPPROTO_UDPLITE: u32 = 136;
/// `IPPROTO_ICMP` and `IPPROTO_ICMPV6`: on a socket that is not raw, a ping socket
/// (`inetsw_array`, `inetsw6_array`: the only other sockets of these protocols).
const IPPROTO_ICMP: u32 = 1;
const IPPROTO_ICMPV6: u32 = 58;
/// `SOCK_RAW` (include/linux/net.h).
const SOCK_RAW: u32 = 3;

const ALLOW: i32 = 1;
const REFUSE: i32 = 0;

#[map(name = "HB_SOCKS_HELD")]
static HELD: HashMap<u64, u64> = HashMap::pinned(limits::SOCKS_HELD, 0);

#[map(name = "HB_SOCKS_MAX")]
static MAX: Array<u32> = Array::pinned(1, 0);

/// The node's bound (`NODE_MAX`, written by the agent) and count (`NODE_HELD`).
#[map(name = "HB_SOCKS_NODE")]
static NODE: Array<u64> = Array::pinned(2, 0);
const NODE_MAX: u32 = 0;
const NODE_HELD: u32 = 1;

/// Recent TIME_WAIT births per cgroup (key 0: all sandboxes), see [`TwWindow`].
#[map(name = "HB_SOCKS_TW")]
static TW: LruHashMap<u64, TwWindow> = LruHashMap::pinned(limits::SOCKS_TW, 0);
/// The key of the node's window in `TW` (no cgroup has id 0).
const NODE_KEY: u64 = 0;

/// TIME_WAIT births in the last `SLOTS` periods of 2^`PERIOD_SHIFT` ns: slot
/// `period % SLOTS` holds (period, births in it); a slot of an older period is stale.
#[repr(C)]
#[derive(Clone, Copy)]
struct TwWindow {
    slots: [[u64; 2]; SLOTS as usize],
}
const SLOTS: u64 = 8;
const PERIOD_SHIFT: u64 = 34;
/// Periods that count (the current one and four before it: at least 4 × 2^34 ns =
/// 68.7 s, more than a TIME_WAIT socket lives).
const COUNTED_PERIODS: u64 = 5;

sock_storage_map! {
    /// The governing cgroup each counted socket was charged to.
    static COUNTED: SockCountedMap<u64> = "HB_SOCK_COUNTED";
}

/// The bits of a `HB_SOCK_COUNTED` value above the cgroup id (`CGROUP_ID`): a
/// connecting socket (`WATCHED`, its state callback on), released by its task
/// (`RELEASED`), closed as a connection (`CLOSED`, its port let go). A watched socket's
/// place goes back when it is both released and closed, by whichever comes second.
const WATCHED: u64 = 1 << 63;
const RELEASED: u64 = 1 << 62;
const CLOSED: u64 = 1 << 61;
const CGROUP_ID: u64 = CLOSED - 1;

/// Counts a new internet socket of a sandbox in the agent's network namespace against
/// its governing cgroup and the node; refuses it (EPERM, an event) past `sockets_max` or
/// `sockets_node_max`, and in any namespace a sandbox's socket whose sends no hook
/// judges ([`unjudged`]).
#[cgroup_sock(sock_create)]
pub fn hb_sock_create(ctx: SockContext) -> i32 {
    // SAFETY: 4-byte reads of fields every cgroup sock program may read.
    let (family, kind, protocol) =
        unsafe { ((*ctx.sock).family, (*ctx.sock).type_, (*ctx.sock).protocol) };
    // TCP and UDP pass four compares here; anything else meets the enrollment lookup.
    if (kind == SOCK_RAW
        || protocol == IPPROTO_ICMP
        || protocol == IPPROTO_ICMPV6
        || protocol == IPPROTO_UDPLITE)
        && let Some(refused) = unjudged(&ctx, family, kind, protocol)
    {
        return refused;
    }
    let max = MAX.get(0).copied().unwrap_or(0);
    let node_max = NODE.get(NODE_MAX).copied().unwrap_or(0);
    if max == 0 && node_max == 0 {
        return ALLOW;
    }
    let Some((cgroup_id, e)) = policy::current_enrollment() else {
        return ALLOW;
    };
    // SAFETY: the context's socket, which this helper accepts for cgroup sock programs.
    let netns = unsafe { bpf_get_netns_cookie(ctx.sock.cast()) };
    if !sockopt::host_netns_is(netns) {
        return ALLOW;
    }
    let why = if protocol == IPPROTO_MPTCP {
        // Its subflows are the kernel's own TCP sockets: none is counted, nor watched
        // to its close (see the module documentation).
        reason::MPTCP
    } else if protocol == IPPROTO_SMC {
        // Released by `smc_release`, never `inet_release`: its place could never be
        // given back, so it is refused as one past the bound.
        reason::SOCKETS_MAX
    } else {
        let Err(why) = charge(&ctx, cgroup_id, max, node_max) else {
            return ALLOW;
        };
        why
    };
    refuse(&ctx, cgroup_id, e.policy_id, why, family, kind, protocol)
}

/// A sandbox's socket, in any network namespace, whose sends no socket hook judges:
/// the refusal (EPERM, reason `unjudged_send`), or `None` (not a sandbox's, its policy
/// opts in, or audits and the refusal was reported: then it is counted as any other
/// socket).
///
/// - A raw socket (`SOCK_RAW`, any protocol; `CAP_NET_RAW`, which a pod may hold):
///   refused unless `POLICY_RAW_SOCKETS`.
/// - A ping socket (where `ping_group_range` lets the sandbox's group open one):
///   refused unless `POLICY_ICMP_ECHO`.
/// - UDP-Lite: always refused. Its `connect` runs no cgroup hook (`udplite_prot` has no
///   `pre_connect`), and the guard's port rules judge UDP only, so UDP-Lite reached a
///   guarded port of an allowed address. Deprecated in the kernel, it serves no
///   sandbox.
///
/// A ping or raw socket's `sendto` runs no hook, and a UDP-Lite socket's connected
/// sends none either: `cgroup_skb/egress` judges their unicast packets, but the copy of
/// an IPv4 multicast or broadcast packet the kernel loops to the host's listeners
/// (`ip_mc_output`, a clone with no socket) skips it, and an echo to a group, a
/// datagram written whole to one, reached the host's listeners (attack review 27). An
/// opted-in policy keeps that risk.
#[inline(always)]
fn unjudged(ctx: &SockContext, family: u32, kind: u32, protocol: u32) -> Option<i32> {
    let (cgroup_id, e) = policy::current_enrollment()?;
    let opt_in = if kind == SOCK_RAW {
        POLICY_RAW_SOCKETS
    } else if protocol == IPPROTO_UDPLITE {
        0
    } else {
        POLICY_ICMP_ECHO
    };
    if opt_in != 0 && policy::policy_flags(e.policy_id) & opt_in != 0 {
        return None;
    }
    let verdict = refuse(
        ctx,
        cgroup_id,
        e.policy_id,
        reason::UNJUDGED_SEND,
        family,
        kind,
        protocol,
    );
    (verdict == REFUSE).then_some(verdict)
}

/// Refuses (EPERM) a sandbox's new socket for `why`, with an event (its `port` the
/// socket's type); in audit mode reports and lets it pass.
#[inline(always)]
fn refuse(
    ctx: &SockContext,
    cgroup_id: u64,
    policy_id: u32,
    why: u32,
    family: u32,
    kind: u32,
    protocol: u32,
) -> i32 {
    let verdict = policy::refusal_verdict(policy_id);
    policy::report(
        ctx,
        Report {
            cgroup_id,
            policy_id,
            hook: hook::SOCK_CREATE,
            verdict,
            reason: why,
            family: family as u16,
            protocol: protocol as u16,
            port: kind as u16,
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
    let charged = COUNTED.storage(ctx.sock, None);
    if charged.is_null() {
        return ALLOW;
    }
    // SAFETY: non-null storage of this map is the socket's own `u64`, 8-byte aligned.
    let was = unsafe { policy::atomic_fetch_or(charged, RELEASED) };
    // A connection still under way holds its port until it closes: then
    // `state_changed` gives the place back.
    if was & RELEASED == 0 && (was & WATCHED == 0 || was & CLOSED != 0) {
        give_back(was & CGROUP_ID);
    }
    ALLOW
}

/// Charges one socket to `cgroup_id` and the node if the cgroup then holds at most `max`
/// and the node at most `node_max` (0: no bound), and files the charge in the socket's
/// storage. The refusal's reason when it may not have one more (or the charge cannot be
/// kept: fail closed).
#[inline(always)]
fn charge(ctx: &SockContext, cgroup_id: u64, max: u32, node_max: u64) -> Result<(), u32> {
    let Some(held) = held_entry(cgroup_id) else {
        policy::count(Counter::MapFull);
        return Err(reason::SOCKETS_MAX);
    };
    let Some(node) = NODE.get_ptr_mut(NODE_HELD) else {
        return Err(reason::SOCKETS_MAX);
    };
    // SAFETY: map values' u64s, 8-byte aligned.
    unsafe {
        policy::atomic_add(held, 1);
        policy::atomic_add(node, 1);
    }
    // SAFETY: as above; plain reads after the adds (see the module documentation).
    let (now, node_now) = unsafe { (ptr::read_volatile(held), ptr::read_volatile(node)) };
    let period = current_period();
    let node_tw = recent_tw(NODE_KEY, period);
    // Every birth is counted for the node as well as its cgroup: a node without any
    // leaves the cgroup's window unread (one map lookup fewer per socket).
    let own_tw = if node_tw == 0 {
        0
    } else {
        recent_tw(cgroup_id, period)
    };
    let own = now + own_tw;
    let node_all = (node_now as i64).saturating_add(node_tw as i64);
    let over = if max != 0 && own > u64::from(max) {
        Some(reason::SOCKETS_MAX)
    } else if node_max != 0 && node_all > node_bound(node_max, own) {
        Some(reason::SOCKETS_NODE_MAX)
    } else {
        None
    };
    let mut id = cgroup_id;
    let stored: *mut u64 = if over.is_some() {
        ptr::null_mut()
    } else {
        // The context's socket: never null in sock_create.
        COUNTED.storage(ctx.sock, Some(&mut id))
    };
    if stored.is_null() {
        // Taken back as a release would (an entry left at 0 would stay: a sandbox
        // refused while it holds nothing but TIME_WAIT ends).
        give_back(cgroup_id);
        return Err(over.unwrap_or(reason::SOCKETS_MAX));
    }
    // SAFETY: the socket's own storage.
    unsafe { *stored = cgroup_id };
    Ok(())
}

/// The count of `cgroup_id`, its entry made at its first socket. Never over another
/// task's new entry (`BPF_NOEXIST`): a replaced entry's element is freed at once (and may
/// be reused for another sandbox) under the task that was adding to it, so that its
/// charge was lost (4,097 of 4,096 held in attack review 22's test). `None`: the map is
/// full.
#[inline(always)]
fn held_entry(cgroup_id: u64) -> Option<*mut u64> {
    if let Some(held) = HELD.get_ptr_mut(cgroup_id) {
        return Some(held);
    }
    let _ = HELD.insert(cgroup_id, 0, u64::from(BPF_NOEXIST));
    HELD.get_ptr_mut(cgroup_id)
}

/// How many ports all sandboxes may hold before one more of a sandbox that would then
/// hold `own` is refused: the node's bound for a sandbox holding at most
/// `SOCKS_RESERVED_UNDER`, three quarters of it for any other. The last quarter is kept
/// for the sandboxes that hold few, so that those that hold many cannot starve the rest
/// (a reserve of the default bound, 3,529 ports, gives 55 sandboxes 64 each).
#[inline(always)]
fn node_bound(node_max: u64, own: u64) -> i64 {
    let bound = if own <= limits::SOCKS_RESERVED_UNDER {
        node_max
    } else {
        node_max - node_max / 4
    };
    bound as i64
}

/// Gives one socket's place back to the cgroup it was charged to and the node.
#[inline(always)]
fn give_back(cgroup_id: u64) {
    if let Some(node) = NODE.get_ptr_mut(NODE_HELD) {
        // SAFETY: a map value's u64, 8-byte aligned; the add wraps, taking one back.
        unsafe { policy::atomic_add(node, u64::MAX) };
    }
    let Some(held) = HELD.get_ptr_mut(cgroup_id) else {
        return;
    };
    // SAFETY: as above.
    if unsafe { ptr::read_volatile(held) } == 0 {
        // A charge lost to the agent's removal of the entry: never taken back twice (a
        // count that wrapped would refuse the sandbox every socket).
        return;
    }
    // SAFETY: as above. The entry stays at 0: the agent removes it once the cgroup is
    // no longer enrolled (see the module documentation).
    unsafe { policy::atomic_add(held, u64::MAX) };
}

/// At `TCP_CONNECT_CB` (every active open, Fast Open too): a counted socket's state
/// changes are to be reported, so that [`state_changed`] sees its connection close
/// (and enter TIME_WAIT); it is marked watched and not closed (a socket may connect
/// again after a connection failed).
#[inline(always)]
pub(crate) fn watch_close(ctx: &SockOpsContext) {
    let Some(charged) = charge_of(ctx) else {
        return;
    };
    // SAFETY: the socket's own storage, 8-byte aligned.
    unsafe {
        policy::atomic_and(charged, !CLOSED);
        policy::atomic_fetch_or(charged, WATCHED);
    }
    // Fails only for a socket that is not a full TCP one, which never enters TIME_WAIT.
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
}

/// At `BPF_SOCK_OPS_STATE_CB` (args: old state, new state), a counted socket's
/// connection closing: its port is let go (or passes to a TIME_WAIT socket), so a
/// socket its task released already gives its place back now; entering TIME_WAIT
/// (CLOSE from FIN_WAIT2 or CLOSING) is counted for its cgroup and the node in the
/// current period.
#[inline(always)]
pub(crate) fn state_changed(ctx: &SockOpsContext) {
    if ctx.arg(1) != BPF_TCP_CLOSE {
        return;
    }
    let Some(charged) = charge_of(ctx) else {
        return;
    };
    // SAFETY: the socket's own storage, 8-byte aligned.
    let was = unsafe { policy::atomic_fetch_or(charged, CLOSED) };
    let cgroup_id = was & CGROUP_ID;
    if was & CLOSED == 0 && was & RELEASED != 0 {
        give_back(cgroup_id);
    }
    let old = ctx.arg(0);
    if old == BPF_TCP_FIN_WAIT2 || old == BPF_TCP_CLOSING {
        let period = current_period();
        count_tw(cgroup_id, period);
        count_tw(NODE_KEY, period);
    }
}

/// A `sock_ops` socket's `HB_SOCK_COUNTED` value, if it was counted.
#[inline(always)]
fn charge_of(ctx: &SockOpsContext) -> Option<*mut u64> {
    // SAFETY: a verifier-checked 8-byte read of the context's `sk` field.
    let sk = unsafe { (*ctx.ops).__bindgen_anon_2.sk };
    if sk.is_null() {
        return None;
    }
    let charged = COUNTED.storage(sk, None);
    (!charged.is_null()).then_some(charged)
}

/// The period now falls in (2^`PERIOD_SHIFT` ns of the monotonic clock).
#[inline(always)]
fn current_period() -> u64 {
    // SAFETY: a helper without arguments.
    (unsafe { bpf_ktime_get_coarse_ns() }) >> PERIOD_SHIFT
}

/// One TIME_WAIT birth for `key` in `period`.
#[inline(always)]
fn count_tw(key: u64, period: u64) {
    if TW.get_ptr_mut(key).is_none() {
        let fresh = TwWindow {
            slots: [[0; 2]; SLOTS as usize],
        };
        // Another CPU's entry may have come first: either is fine.
        let _ = TW.insert(key, fresh, 0);
    }
    let Some(w) = TW.get_ptr_mut(key) else {
        policy::count(Counter::MapFull);
        return;
    };
    let i = (period % SLOTS) as usize;
    // SAFETY: the map's value, `i` < SLOTS; u64s, 8-byte aligned.
    unsafe {
        let slot = ptr::addr_of_mut!((*w).slots[i]);
        if ptr::read_volatile(ptr::addr_of!((*slot)[0])) != period {
            ptr::write_volatile(ptr::addr_of_mut!((*slot)[1]), 0);
            ptr::write_volatile(ptr::addr_of_mut!((*slot)[0]), period);
        }
        policy::atomic_add(ptr::addr_of_mut!((*slot)[1]), 1);
    }
}

/// TIME_WAIT births for `key` in the `COUNTED_PERIODS` periods up to `period`.
#[inline(always)]
fn recent_tw(key: u64, period: u64) -> u64 {
    // SAFETY: a lookup; the value is read field by field below.
    let Some(w) = (unsafe { TW.get(key) }) else {
        return 0;
    };
    let mut sum = 0;
    let mut back = 0;
    while back < COUNTED_PERIODS {
        let p = period.wrapping_sub(back);
        let slot = w.slots[(p % SLOTS) as usize];
        if slot[0] == p {
            sum += slot[1];
        }
        back += 1;
    }
    sum
}
