//! The decision shared by every hook: which policy a cgroup is under, whether a
//! destination is allowed for it, and the record of every refusal (reported one by one
//! within each cgroup's event budget, counted past it: see [`report`]).
//!
//! Order of judgement (DESIGN.md, "Kernel side"):
//! 1. not enrolled (neither the cgroup nor an ancestor up to `MAX_CGROUP_DEPTH`) → untouched;
//! 2. in a deny range and not in an exception → refused (`deny_range`);
//! 3. inside one of the policy's static CIDRs, or a validated address of the policy
//!    whose expiry lies ahead → allowed;
//! 4. anything else → refused (`not_allowed`).
//!
//! A policy in audit mode turns 2 and 4 into "allowed and reported".
//!
//! Step 2 and the CIDR part of step 3 are one LPM lookup in the policy's compiled rule
//! trie (see `hb_common::rule`); only addresses no rule decides cost a hash lookup more.
//!
//! IPv6 destinations that carry an IPv4 address are judged by it: IPv4-mapped
//! (`::ffff:0:0/96`, the socket really talks IPv4) and every NAT64 prefix in `HB_NAT64`
//! (`egress.nat64_prefixes`, RFC 6052 embeddings for /32, /40, /48, /56, /64 and /96; the
//! well-known `64:ff9b::/96` is always one, listed or not) wholly; 6to4, Teredo and
//! ISATAP by their relay/server/client addresses first, then as IPv6.
//!
//! The socket hooks and `cgroup_skb/egress` share this judgement; the hooks also record
//! the peer they admitted per socket (`HB_SOCK_PEER`, [`admit`]) so the packet hook can
//! let an established flow outlive its address's expiry. That record is the socket's
//! own storage (`BPF_MAP_TYPE_SK_STORAGE`): it lives and dies with the socket, so no
//! other socket, of this sandbox or another, can push it out.

use crate::{sock_storage::sock_storage_map, source};
use aya_ebpf::{
    EbpfContext,
    bindings::bpf_sock,
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_comm,
        bpf_get_current_pid_tgid, bpf_ktime_get_ns,
    },
    macros::map,
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, lpm_trie::Key,
    },
};
use hb_common::{
    AF_INET, AF_INET6, Allow4Key, Allow6Key, CgroupStats, Counter, Enrollment, Event, EventRate,
    EventRateKey, EventSeenKey, HeldEvent, Nat64Key, POLICY_AUDIT, PolicyCidr4, PolicyCidr6,
    PolicyInfo, SOCK_ADMIT_SENDMSG, SOCK_ADMIT_VALIDATED, SockDest, hook, limits, reason, rule,
    verdict,
};

#[map(name = "HB_ENROLLED")]
static ENROLLED: HashMap<u64, Enrollment> = HashMap::pinned(limits::ENROLLED, 0);

#[map(name = "HB_POLICIES")]
static POLICIES: Array<PolicyInfo> = Array::pinned(limits::POLICIES, 0);

#[map(name = "HB_ALLOW4")]
static ALLOW4: HashMap<Allow4Key, u64> = HashMap::pinned(limits::ALLOW4, 0);

#[map(name = "HB_ALLOW6")]
static ALLOW6: HashMap<Allow6Key, u64> = HashMap::pinned(limits::ALLOW6, 0);

#[map(name = "HB_RULES4")]
static RULES4: LpmTrie<PolicyCidr4, u32> = LpmTrie::pinned(limits::RULES4, 0);

#[map(name = "HB_RULES6")]
static RULES6: LpmTrie<PolicyCidr6, u32> = LpmTrie::pinned(limits::RULES6, 0);

#[map(name = "HB_COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(Counter::COUNT, 0);

#[map(name = "HB_CG_STATS")]
pub(crate) static CG_STATS: PerCpuHashMap<u64, CgroupStats> =
    PerCpuHashMap::pinned(limits::CG_STATS, 0);

/// A socket the programs can hand `bpf_sk_storage_get`: `bpf_sock_addr.sk` (the
/// sock_addr hooks; never null), `__sk_buff.sk` (`cgroup_skb`; may be null) or
/// `bpf_sock_ops.sk` (`sock_ops`; may be null).
pub(crate) type Sock = *mut bpf_sock;

sock_storage_map! {
    /// Each socket's own record of the peer the socket hooks admitted (see
    /// `hb_common::SockDest`), freed by the kernel with the socket.
    static SOCK_PEER: SockPeerMap<SockDest> = "HB_SOCK_PEER";
}

/// The peer admitted for socket `sk`, if any (`sk` may be null: no socket, no peer).
#[inline(always)]
pub(crate) fn peer(sk: Sock) -> Option<SockDest> {
    SOCK_PEER.read(sk)
}

/// Records `d` as the peer admitted for socket `sk`, replacing any other (`sk` may be
/// null: nothing to record on). Storage the kernel cannot allocate is counted as a full
/// map; the flow's packets are then judged in full (fail closed).
#[inline(always)]
pub(crate) fn set_peer(sk: Sock, d: SockDest) {
    if !sk.is_null() && !SOCK_PEER.write(sk, d) {
        count(Counter::MapFull);
    }
}

/// NAT64 prefixes → prefix length (see `hb_common::nat64_embedded`).
#[map(name = "HB_NAT64")]
static NAT64: LpmTrie<Nat64Key, u32> = LpmTrie::pinned(limits::NAT64_PREFIXES, 0);

#[map(name = "HB_EVENTS")]
static EVENTS: RingBuf = RingBuf::pinned(limits::EVENTS_BYTES, 0);

/// Cgroup id and direction → its event budget (see `hb_common::EventRate`).
#[map(name = "HB_EVENT_BUDGET")]
static EVENT_RATE: LruHashMap<EventRateKey, EventRate> = LruHashMap::pinned(limits::EVENT_RATE, 0);

/// What a cgroup was refused → when that was last reported (see `hb_common::EventSeenKey`).
#[map(name = "HB_EVENT_SEEN")]
static EVENT_SEEN: LruHashMap<EventSeenKey, u64> = LruHashMap::pinned(limits::EVENT_SEEN, 0);

/// Destinations refused past a cgroup's caps, held back for the agent (see
/// `hb_common::HeldEvent`). Not LRU: a scan cannot push out what is held, a full map
/// only counts.
#[map(name = "HB_EVENT_HELD")]
static EVENT_HELD: HashMap<EventSeenKey, HeldEvent> = HashMap::pinned(limits::EVENT_HELD, 0);

/// The enrollment that governs a cgroup: its own, else its nearest enrolled ancestor.
///
/// `own` is the cgroup's id; `ancestor(level)` returns the id of its ancestor at `level`
/// (root = 0), or 0 when the cgroup is not that deep — which is how the kernel's
/// `bpf_get_current_ancestor_cgroup_id` and `bpf_skb_ancestor_cgroup_id` behave.
#[inline(always)]
pub(crate) fn enrollment(own: u64, ancestor: impl Fn(i32) -> u64) -> Option<Enrollment> {
    // The common case: the process sits directly in the enrolled (sandbox) cgroup.
    // SAFETY: the value is copied out at once; user space only inserts and deletes whole
    // entries, so the worst a concurrent delete can do is hand us the old value.
    if let Some(e) = unsafe { ENROLLED.get(own) } {
        return Some(*e);
    }
    // Not an `Option`: LLVM may leave a `None`'s payload undefined, and the verifier
    // refuses a program that copies an uninitialised register.
    let mut found = Enrollment {
        policy_id: 0,
        flags: 0,
    };
    let mut any = false;
    let mut level = 1;
    while level <= limits::MAX_CGROUP_DEPTH as i32 {
        let id = ancestor(level);
        if id == 0 || id == own {
            break;
        }
        // SAFETY: as above.
        if let Some(e) = unsafe { ENROLLED.get(id) } {
            // Keep walking: the nearest (deepest) enrolled ancestor wins.
            found = *e;
            any = true;
        }
        level += 1;
    }
    any.then_some(found)
}

/// Whether the policy at `policy_id` audits instead of refusing. A missing slot (which the
/// agent never leaves referenced) counts as enforcing.
#[inline(always)]
pub(crate) fn audits(policy_id: u32) -> bool {
    match POLICIES.get(policy_id) {
        Some(p) => p.flags & POLICY_AUDIT != 0,
        None => false,
    }
}

/// Outcome of judging a destination for an enrolled cgroup.
pub(crate) enum Judgement {
    Allow(Counter),
    /// A [`reason`] value and the counter to bump.
    Deny(u32, Counter),
}

/// The compiled rule for an IPv4 destination of a policy (0 when nothing matches).
#[inline(always)]
fn rule4(policy_id: u32, addr: [u8; 4]) -> u32 {
    let key = Key::new(
        hb_common::POLICY_PREFIX_BITS + 32,
        PolicyCidr4 {
            policy_id_be: policy_id.to_be_bytes(),
            addr,
        },
    );
    RULES4.get(&key).copied().unwrap_or(0)
}

#[inline(always)]
fn rule6(policy_id: u32, addr: [u8; 16]) -> u32 {
    let key = Key::new(
        hb_common::POLICY_PREFIX_BITS + 128,
        PolicyCidr6 {
            policy_id_be: policy_id.to_be_bytes(),
            addr,
        },
    );
    RULES6.get(&key).copied().unwrap_or(0)
}

/// One LPM lookup decides deny and static allow; only an address no rule decides costs
/// a hash lookup in the allow map as well, and a static allow one in the host's
/// addresses (see [`static_allow`]).
#[inline(always)]
pub(crate) fn judge4(policy_id: u32, addr: [u8; 4]) -> Judgement {
    match rule4(policy_id, addr) {
        rule::DENY => return Judgement::Deny(reason::DENY_RANGE, Counter::DenyRange),
        rule::ALLOW => return static_allow(source::host_own4(addr)),
        _ => {}
    }
    // SAFETY: the u64 expiry is copied out at once. The clock is read only here: most
    // verdicts never need it.
    if let Some(expires) = unsafe { ALLOW4.get(Allow4Key { policy_id, addr }) }
        && *expires > now_ns()
    {
        return Judgement::Allow(Counter::AllowAddr);
    }
    Judgement::Deny(reason::NOT_ALLOWED, Counter::DenyNotAllowed)
}

/// The verdict on an address a static CIDR of the policy allows: denied (`deny_range`)
/// when it is one of the host's (`host_own`: in `HB_LOCAL_ADDRS`, no exception over
/// it), as every other way to name it is. A CIDR wide enough to hold the node (a
/// provider's block the node lives in, `0.0.0.0/0`) let a sandbox reach every host
/// service on the wildcard address through the node's own address (attack review 27);
/// only `exception_cidrs` opens the host's addresses.
#[inline(always)]
fn static_allow(host_own: bool) -> Judgement {
    if host_own {
        Judgement::Deny(reason::DENY_RANGE, Counter::DenyRange)
    } else {
        Judgement::Allow(Counter::AllowCidr)
    }
}

#[inline(always)]
pub(crate) fn judge6(policy_id: u32, addr: [u8; 16]) -> Judgement {
    match embedded_v4(&addr) {
        // The socket talks IPv4 to the embedded host: judge that host, fully.
        Embedded::Mapped(v4) => return judge4(policy_id, v4),
        // A translator talks IPv4 to the embedded host: its deny ranges and static
        // CIDRs decide; else the IPv4 address validated by an A answer, or the NAT64
        // address itself validated by an AAAA answer, allows.
        Embedded::Nat64(v4) => {
            return match judge4(policy_id, v4) {
                Judgement::Deny(reason::NOT_ALLOWED, _) if allowed6(policy_id, addr) => {
                    Judgement::Allow(Counter::AllowAddr)
                }
                j => j,
            };
        }
        // Tunnels: the embedded relay/client must not be private; the IPv6 address itself
        // is then judged as IPv6 (and 2002::/16 and 2001::/32 are denied by default).
        Embedded::Partly(a, b) => {
            if rule4(policy_id, a) == rule::DENY || rule4(policy_id, b) == rule::DENY {
                return Judgement::Deny(reason::EMBEDDED_DENY_RANGE, Counter::DenyEmbedded);
            }
        }
        Embedded::None => {}
    }
    match rule6(policy_id, addr) {
        rule::DENY => return Judgement::Deny(reason::DENY_RANGE, Counter::DenyRange),
        rule::ALLOW => return static_allow(source::host_own(AF_INET6, &addr)),
        _ => {}
    }
    if allowed6(policy_id, addr) {
        return Judgement::Allow(Counter::AllowAddr);
    }
    Judgement::Deny(reason::NOT_ALLOWED, Counter::DenyNotAllowed)
}

/// Whether the resolver validated `addr` for the policy and its expiry lies ahead.
#[inline(always)]
fn allowed6(policy_id: u32, addr: [u8; 16]) -> bool {
    // SAFETY: the u64 expiry is copied out at once. The clock is read only here: most
    // verdicts never need it.
    match unsafe { ALLOW6.get(Allow6Key { policy_id, addr }) } {
        Some(expires) => *expires > now_ns(),
        None => false,
    }
}

/// IPv4 addresses carried inside an IPv6 address.
pub(crate) enum Embedded {
    None,
    /// `::ffff:0:0/96` (IPv4-mapped: the socket really talks IPv4).
    Mapped([u8; 4]),
    /// Under a NAT64 prefix (RFC 6052): a translator talks IPv4 to it.
    Nat64([u8; 4]),
    /// A tunnel's (`hb_common::tunnel_embedded`): 6to4 `2002:V4::/48` (the relay, twice
    /// for symmetry), Teredo `2001:0::/32` (server at bits 32..64, client XOR-obfuscated
    /// in the last 32 bits), an ISATAP interface identifier (`0000:5efe:V4`,
    /// `0200:5efe:V4`, twice; attack review 45).
    Partly([u8; 4], [u8; 4]),
}

/// `64:ff9b::/96`, RFC 6052's well-known prefix: always NAT64, configured or not, so an
/// empty `egress.nat64_prefixes` cannot open a path to private IPv4 through a translator.
const WELL_KNOWN_NAT64: [u8; 12] = [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0];

#[inline(always)]
pub(crate) fn embedded_v4(a: &[u8; 16]) -> Embedded {
    let tail = [a[12], a[13], a[14], a[15]];
    if a[..10] == [0; 10] && a[10] == 0xff && a[11] == 0xff {
        return Embedded::Mapped(tail);
    }
    if a[..12] == WELL_KNOWN_NAT64 {
        return Embedded::Nat64(tail);
    }
    // The configured prefixes: one LPM lookup, the longest prefix decides the embedding.
    let key = Key::new(128, Nat64Key { addr: *a });
    if let Some(len) = NAT64.get(&key)
        && let Some(v4) = hb_common::nat64_embedded(a, *len)
    {
        return Embedded::Nat64(v4);
    }
    match hb_common::tunnel_embedded(a) {
        Some((first, second)) => Embedded::Partly(first, second),
        None => Embedded::None,
    }
}

/// Records `addr` as the peer the socket hooks admitted for socket `sk` (see
/// `hb_common::SockDest`), in the socket's own storage. A datagram's destination
/// (`SOCK_ADMIT_SENDMSG`) never replaces a connected or accepted peer: a connected UDP
/// socket that also sends elsewhere keeps its established flow. Storage the kernel cannot
/// allocate is counted as a full map; the flow then meets the full verdict in
/// `cgroup_skb/egress`, which fails closed.
///
/// An IPv4-mapped peer of an IPv6 socket is recorded as the IPv4 address: that is what
/// its packets carry.
///
/// The writers of one socket's record are its own connect/sendmsg hooks, which the
/// kernel runs under the socket's lock, so a record is replaced whole in place; a packet
/// hook reading it meanwhile compares against the old or the new peer, both admitted.
#[inline(always)]
pub(crate) fn admit(sk: Sock, family: u16, addr: [u8; 16], flags: u32) {
    admit_marked(sk, family, addr, flags, 0);
}

/// [`admit`], with the peer's `dns` marker (`hb_common::SockDest::dns`): the DNS
/// redirect marks a UDP socket it sent to the resolver.
#[inline(always)]
pub(crate) fn admit_marked(sk: Sock, family: u16, addr: [u8; 16], flags: u32, dns: u16) {
    let (family, addr) = match embedded_mapped(family, &addr) {
        Some(v4) => (
            AF_INET,
            [
                v4[0], v4[1], v4[2], v4[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ),
        None => (family, addr),
    };
    let mut dest = SockDest {
        addr,
        family,
        dns,
        flags,
    };
    // One helper call either way: the socket's record, created as `dest` if it had none.
    let p = SOCK_PEER.storage(sk, Some(&mut dest));
    if p.is_null() {
        count(Counter::MapFull);
        return;
    }
    // SAFETY: non-null storage of this map is a `SockDest`, the socket's own.
    let old = unsafe { &mut *p };
    // A datagram's destination: a repeated destination (or a record just created from
    // it) costs no write, and a connected or accepted peer stays. A connect always
    // replaces.
    if flags & SOCK_ADMIT_SENDMSG != 0
        && ((old.family == family && old.addr == addr) || old.flags & SOCK_ADMIT_SENDMSG == 0)
    {
        return;
    }
    *old = dest;
}

/// The IPv4 address of an IPv4-mapped IPv6 address (`::ffff:0:0/96`).
#[inline(always)]
fn embedded_mapped(family: u16, a: &[u8; 16]) -> Option<[u8; 4]> {
    (family == AF_INET6 && a[..10] == [0; 10] && a[10] == 0xff && a[11] == 0xff)
        .then_some([a[12], a[13], a[14], a[15]])
}

/// Whether `addr` is the peer admitted for socket `sk` (may be null: no socket):
/// `Some` of its `dns` marker (`hb_common::SockDest::dns`) when it is, and whether it
/// was a validated address ([`SOCK_ADMIT_VALIDATED`]).
#[inline(always)]
pub(crate) fn admitted(sk: Sock, family: u16, addr: &[u8; 16]) -> Option<(u16, bool)> {
    if sk.is_null() {
        return None;
    }
    let p = SOCK_PEER.storage(sk, None);
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null storage of this map is a `SockDest`; compared in place.
    let d = unsafe { &*p };
    (d.family == family && d.addr == *addr).then_some((d.dns, d.flags & SOCK_ADMIT_VALIDATED != 0))
}

#[inline(always)]
pub(crate) fn count(counter: Counter) {
    count_n(counter, 1);
}

#[inline(always)]
pub(crate) fn count_n(counter: Counter, n: u64) {
    if let Some(v) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot; programs do not migrate CPUs while they run.
        unsafe { *v += n };
    }
}

#[inline(always)]
pub(crate) fn now_ns() -> u64 {
    // SAFETY: no arguments, always valid.
    unsafe { bpf_ktime_get_ns() }
}

/// What an event reports, beside the time and the program that wrote it.
pub(crate) struct Report {
    pub cgroup_id: u64,
    pub policy_id: u32,
    pub hook: u32,
    pub verdict: u32,
    pub reason: u32,
    pub family: u16,
    pub protocol: u16,
    pub port: u16,
    pub addr: [u8; 16],
    /// Whether the program runs in the context of the task that caused the event.
    pub task_context: bool,
}

/// Writes one event to the ring buffer, within the cgroup's event budget.
///
/// The refusal itself is enforced by the caller either way: this only decides whether
/// it is reported on its own. Within the cgroup's burst it is. Past it, a destination
/// already reported in the window is counted (`events_suppressed`, the cgroup's
/// `EventRate`) and the cgroup's next reported event carries the number; a destination
/// new to the window is still named — reported at once up to `limits::EVENT_DISTINCT`
/// of them, then held back in `HB_EVENT_HELD` for the agent, up to
/// `limits::EVENT_HELD_PER_WINDOW`; past both it is counted only. So one sandbox that
/// provokes refusals in a loop cannot fill the ring buffer all sandboxes share, nor the
/// agent's files, nor hide the one destination it is after behind a flood of another.
/// A full ring buffer is counted, never fatal, and never logged per event (that log
/// would be the flood again). Only refusals come here: allowed traffic pays nothing.
#[inline(always)]
pub(crate) fn report<C: EbpfContext>(_ctx: &C, r: Report) {
    let key = EventRateKey {
        cgroup_id: r.cgroup_id,
        inbound: u32::from(r.hook == hook::SKB_INGRESS),
        _pad: 0,
    };
    let seen = EventSeenKey {
        cgroup_id: r.cgroup_id,
        hook: r.hook,
        protocol: r.protocol,
        port: r.port,
        addr: r.addr,
    };
    let now = now_ns();
    let budget = match within_budget(&key, &seen, now) {
        Admit::Report(b) => b,
        Admit::HoldBack => {
            hold_back(&key, &seen, &r, now);
            return;
        }
        Admit::Counted => return,
    };
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        // Left in `pending`: the next event that gets through carries this cgroup's
        // suppressed refusals still.
        count(Counter::EventsLost);
        return;
    };
    entry.write(event(&r, now, take_pending(budget)));
    entry.submit(0);
    // Refusals of this destination in the rest of the window are counted only. A
    // failed insert forgets it, which lets a later one through as new (within the caps).
    let _ = EVENT_SEEN.insert(seen, now, 0);
}

/// The record of refusal `r` at `now`.
#[inline(always)]
fn event(r: &Report, now: u64, suppressed: u32) -> Event {
    let (pid_tgid, comm) = if r.task_context {
        (
            bpf_get_current_pid_tgid(),
            bpf_get_current_comm().unwrap_or([0; 16]),
        )
    } else {
        (0, [0; 16])
    };
    Event {
        ts_ns: now,
        cgroup_id: r.cgroup_id,
        pid_tgid,
        policy_id: r.policy_id,
        hook: r.hook,
        verdict: r.verdict,
        reason: r.reason,
        family: r.family,
        protocol: r.protocol,
        port: r.port,
        _pad: 0,
        addr: r.addr,
        comm,
        suppressed,
        _pad2: 0,
    }
}

/// Holds refusal `r` back in `HB_EVENT_HELD` for the agent to report. A map that is full
/// (or a key another CPU inserted at the same moment) leaves it counted only.
#[inline(always)]
fn hold_back(key: &EventRateKey, seen: &EventSeenKey, r: &Report, now: u64) {
    let held = HeldEvent {
        event: event(r, now, 0),
        count: 1,
    };
    if EVENT_HELD.insert(seen, held, BPF_NOEXIST).is_err() {
        count(Counter::MapFull);
        if let Some(b) = EVENT_RATE.get_ptr_mut(key) {
            // SAFETY: as in `within_budget`.
            unsafe { atomic_add(&raw mut (*b).pending, 1) };
        }
    }
}

/// `BPF_NOEXIST`: insert only a new key.
const BPF_NOEXIST: u64 = 1;

/// Whether an event may be reported, from its cgroup's budget.
enum Admit {
    /// Report it; the budget to take the pending count from, when the cgroup has one.
    Report(Option<*mut EventRate>),
    /// Over the burst and the distinct cap, its destination new: hold it back.
    HoldBack,
    /// Over budget: counted (in `pending`, or in its held-back entry), not reported.
    Counted,
}

/// Counts an event against its cgroup's budget (a fixed window of
/// `limits::EVENT_WINDOW_NS` allowing `limits::EVENT_BURST` events, then
/// `limits::EVENT_DISTINCT` and `limits::EVENT_HELD_PER_WINDOW` destinations new to the
/// window — not reported in `HB_EVENT_SEEN` within `EVENT_WINDOW_NS`).
///
/// Fails open towards reporting: a cgroup whose budget cannot be stored (the insert
/// fails) is reported as before the budget existed; the refusal is enforced either way.
/// An LRU map never fills up, it forgets the least recently used cgroup, which starts
/// afresh with a whole budget.
#[inline(always)]
fn within_budget(key: &EventRateKey, seen: &EventSeenKey, now: u64) -> Admit {
    let Some(b) = EVENT_RATE.get_ptr_mut(key) else {
        let first = EventRate {
            start_ns: now,
            count: 1,
            pending: 0,
            suppressed: 0,
            distinct: 0,
        };
        // Two CPUs inserting the same new cgroup at once: the later insert wins and one
        // count is lost, once per cgroup.
        let _ = EVENT_RATE.insert(key, first, 0);
        return Admit::Report(None);
    };
    // SAFETY: `b` points into a map value, valid for this program run; every field is
    // an aligned u64, and the fields other CPUs change concurrently are only ever
    // changed through atomic adds.
    unsafe {
        if now.wrapping_sub((*b).start_ns) >= limits::EVENT_WINDOW_NS {
            // A new window. Plain stores: CPUs that restart the same window together
            // may each let a few events more through (see `hb_common::EventRate`).
            (*b).start_ns = now;
            (*b).count = 0;
            (*b).distinct = 0;
        }
        let count_ptr = &raw mut (*b).count;
        atomic_add(count_ptr, 1);
        // Read after our own add: it includes every add ordered before ours, so at
        // most EVENT_BURST reporters of one window read a value within budget.
        if core::ptr::read_volatile(count_ptr) <= limits::EVENT_BURST {
            return Admit::Report(Some(b));
        }
        let past = past_the_burst(b, seen, now);
        if let Past::New = past {
            return Admit::Report(Some(b));
        }
        atomic_add(&raw mut (*b).suppressed, 1);
        count(Counter::EventsSuppressed);
        match past {
            Past::Pending => {
                atomic_add(&raw mut (*b).pending, 1);
                Admit::Counted
            }
            Past::HoldBack => Admit::HoldBack,
            Past::New | Past::Held => Admit::Counted,
        }
    }
}

/// What becomes of a refusal past the cgroup's burst.
enum Past {
    /// Its destination is new to the window, within `limits::EVENT_DISTINCT`: reported.
    New,
    /// New, past that, within `limits::EVENT_HELD_PER_WINDOW`: held back.
    HoldBack,
    /// Its destination is held back already: counted in its entry.
    Held,
    /// Reported in the window already, or past both caps: carried by the next event.
    Pending,
}

/// Judges a refusal past the burst by its destination (see [`Past`]).
///
/// # Safety
/// `b` as in [`within_budget`].
#[inline(always)]
unsafe fn past_the_burst(b: *mut EventRate, seen: &EventSeenKey, now: u64) -> Past {
    // SAFETY: the value is copied out at once.
    if let Some(t) = unsafe { EVENT_SEEN.get(seen) }
        && now.wrapping_sub(*t) < limits::EVENT_WINDOW_NS
    {
        return Past::Pending;
    }
    if let Some(h) = EVENT_HELD.get_ptr_mut(seen) {
        // SAFETY: a map value; `count` is an aligned u64 changed only by atomic adds.
        unsafe { atomic_add(&raw mut (*h).count, 1) };
        return Past::Held;
    }
    // SAFETY: the caller's promise.
    unsafe {
        let distinct_ptr = &raw mut (*b).distinct;
        atomic_add(distinct_ptr, 1);
        let distinct = core::ptr::read_volatile(distinct_ptr);
        if distinct <= limits::EVENT_DISTINCT {
            Past::New
        } else if distinct <= limits::EVENT_DISTINCT + limits::EVENT_HELD_PER_WINDOW {
            Past::HoldBack
        } else {
            Past::Pending
        }
    }
}

/// Takes the cgroup's pending suppressed count for the event being written. Exactly
/// what was read is subtracted (an atomic add of its negation), so refusals suppressed
/// meanwhile on other CPUs stay pending for the next event.
#[inline(always)]
fn take_pending(budget: Option<*mut EventRate>) -> u32 {
    let Some(b) = budget else { return 0 };
    // SAFETY: as in `admit`.
    unsafe {
        let pending_ptr = &raw mut (*b).pending;
        let n = core::ptr::read_volatile(pending_ptr);
        if n == 0 {
            return 0;
        }
        // More than fits the event's field stays pending for the next one.
        let n = if n > u32::MAX as u64 {
            u32::MAX as u64
        } else {
            n
        };
        atomic_add(pending_ptr, n.wrapping_neg());
        n as u32
    }
}

/// `*p += v` as one atomic instruction (`BPF_ATOMIC | BPF_ADD`, the original `XADD`,
/// which every BPF CPU version has): adds from other CPUs are never lost.
///
/// # Safety
/// `p` must point to a u64 in a map value, 8-byte aligned.
#[inline(always)]
pub(crate) unsafe fn atomic_add(p: *mut u64, v: u64) {
    // SAFETY: the caller's promise; the instruction touches only `*p`.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {v}",
            p = in(reg) p,
            v = in(reg) v,
            options(nostack),
        );
    }
}

/// `*p |= v` as one atomic instruction that returns what `*p` was before
/// (`BPF_ATOMIC | BPF_OR | BPF_FETCH`, Linux 5.12): of two CPUs setting the same bit,
/// exactly one sees it clear.
///
/// # Safety
/// `p` must point to a u64 in a map value (socket storage included), 8-byte aligned.
#[inline(always)]
pub(crate) unsafe fn atomic_fetch_or(p: *mut u64, v: u64) -> u64 {
    let mut old = v;
    // SAFETY: the caller's promise; the instruction touches only `*p`.
    unsafe {
        core::arch::asm!(
            "{v} = atomic_fetch_or((u64 *)({p} + 0), {v})",
            p = in(reg) p,
            v = inout(reg) old,
            options(nostack),
        );
    }
    old
}

/// `*p &= v` as one atomic instruction (`BPF_ATOMIC | BPF_AND`, Linux 5.12).
///
/// # Safety
/// As [`atomic_fetch_or`].
#[inline(always)]
pub(crate) unsafe fn atomic_and(p: *mut u64, v: u64) {
    // SAFETY: the caller's promise; the instruction touches only `*p`.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) &= {v}",
            p = in(reg) p,
            v = in(reg) v,
            options(nostack),
        );
    }
}

/// The verdict for a refusal, given the policy's mode.
#[inline(always)]
pub(crate) fn refusal_verdict(policy_id: u32) -> u32 {
    if audits(policy_id) {
        verdict::AUDIT
    } else {
        verdict::DENY
    }
}

/// The `POLICY_*` flags of the policy at `policy_id`; 0 for a missing slot (the agent
/// never leaves one referenced), which grants nothing.
#[inline(always)]
pub(crate) fn policy_flags(policy_id: u32) -> u32 {
    POLICIES.get(policy_id).map_or(0, |p| p.flags)
}

/// The current task's sandbox, if its cgroup or an ancestor is enrolled: the id of the
/// enrolled cgroup that governs it (not the task's own, which may be any sub-cgroup of
/// the sandbox) and its enrollment. Records and budgets kept per cgroup (the guard's and
/// the resolver's connection shares, the event budget) are kept per sandbox with it, so
/// a sandbox split into sub-cgroups holds one share, not one per sub-cgroup.
#[inline(always)]
pub(crate) fn current_enrollment() -> Option<(u64, Enrollment)> {
    // SAFETY: helpers without pointer arguments.
    let own = unsafe { bpf_get_current_cgroup_id() };
    governing(own, |level| unsafe {
        bpf_get_current_ancestor_cgroup_id(level)
    })
}

/// The sandbox a cgroup belongs to: the id of the cgroup whose enrollment governs it
/// (itself or its nearest enrolled ancestor, as [`enrollment`] finds it) and that
/// enrollment. `ancestor` as in [`enrollment`].
#[inline(always)]
pub(crate) fn governing(own: u64, ancestor: impl Fn(i32) -> u64) -> Option<(u64, Enrollment)> {
    // SAFETY: as in enrollment.
    if let Some(e) = unsafe { ENROLLED.get(own) } {
        return Some((own, *e));
    }
    // Plain values, not an `Option` of a tuple: LLVM may spill the payload of a `None`
    // while it is still undefined, which the verifier refuses (`!read_ok`). An id found
    // is never 0 (the walk stops there).
    let mut found_id = 0u64;
    let mut found = Enrollment {
        policy_id: 0,
        flags: 0,
    };
    let mut level = 1;
    while level <= limits::MAX_CGROUP_DEPTH as i32 {
        let id = ancestor(level);
        if id == 0 || id == own {
            break;
        }
        // SAFETY: as above.
        if let Some(e) = unsafe { ENROLLED.get(id) } {
            found_id = id;
            found = *e;
        }
        level += 1;
    }
    (found_id != 0).then_some((found_id, found))
}
