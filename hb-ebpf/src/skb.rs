//! `cgroup_skb/egress`: the per-packet second line and the per-cgroup traffic sensor.
//!
//! The socket hooks cannot see raw sockets, ICMP sends or anything else that never names
//! a destination through connect/sendmsg, so every packet leaving an enrolled cgroup is
//! checked against the deny ranges here (not against the allow set: the socket hooks own
//! that). Packets, bytes and verdicts are counted per cgroup for the rotation loop.
//!
//! Fast path: a bulk flow sends many packets to one destination in a row, so each CPU
//! remembers the last flow it passed ([`FlowCache`]); a packet of that flow under the
//! same map generation skips every hash and LPM lookup. Refusals never take the fast path.
//!
//! Return value: 1 passes the packet, 0 drops it (the sender sees EPERM for most
//! sockets). A packet from an enrolled cgroup whose header cannot be read is dropped
//! (fail closed).
//!
//! The context starts at the network header (`__sk_buff` data for cgroup_skb); the
//! header is read in place (direct packet access) when it is linear, through
//! `bpf_skb_load_bytes` otherwise. Addresses are wire bytes, network order.

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id},
    macros::{cgroup_skb, map},
    maps::{Array, PerCpuArray},
    programs::SkBuffContext,
};
use hb_common::{
    AF_INET, AF_INET6, CgroupStats, Counter, FlowCache, SKB_FLUSH_PACKETS, hook, reason, verdict,
};

use crate::{
    dns,
    policy::{self, CG_STATS, Report},
};

const PASS: i32 = 1;
const DROP: i32 = 0;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

#[map(name = "HB_GENERATION")]
static GENERATION: Array<u64> = Array::pinned(1, 0);

#[map(name = "HB_SKB_CACHE")]
static SKB_CACHE: PerCpuArray<FlowCache> = PerCpuArray::pinned(1, 0);

/// A packet's destination and the header facts the verdict and the event need.
struct Dest {
    family: u16,
    protocol: u8,
    /// Offset of the transport header.
    l4: usize,
    addr: [u8; 16],
}

/// Drops packets from enrolled cgroups to deny ranges, counts every packet per cgroup.
/// Drops on an unreadable header.
#[cgroup_skb(egress)]
pub fn hb_skb_egress(ctx: SkBuffContext) -> i32 {
    let skb: *mut __sk_buff = ctx.skb.skb;
    // SAFETY: skb is the program's context pointer.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    let len = u64::from(ctx.len());
    let dest = read_dest(&ctx);
    let generation = GENERATION.get(0).copied().unwrap_or(0);

    if let Some(d) = &dest
        && let Some(c) = SKB_CACHE.get_ptr_mut(0)
    {
        // SAFETY: this CPU's slot; programs do not migrate while they run.
        let c = unsafe { &mut *c };
        if c.cgroup_id == cgroup_id
            && c.generation == generation
            && c.family == u32::from(d.family)
            && c.addr == d.addr
        {
            if c.enrolled != 0 {
                c.pending_packets += 1;
                c.pending_bytes += len;
                if c.pending_packets >= SKB_FLUSH_PACKETS {
                    flush(c);
                }
            }
            return PASS;
        }
    }

    let enrollment = policy::enrollment(cgroup_id, |level| unsafe {
        bpf_skb_ancestor_cgroup_id(skb, level)
    });
    let Some(e) = enrollment else {
        if let Some(d) = &dest {
            remember(cgroup_id, generation, d, false, 0);
        }
        return PASS;
    };
    let Some(d) = dest else {
        // Enrolled, header unreadable: fail closed.
        return refuse(&ctx, cgroup_id, e.policy_id, len, reason::DENY_RANGE, None);
    };
    // Redirected DNS to hb's resolver on loopback. Never cached: the cache is keyed by
    // address only, and other ports of loopback stay denied.
    if dns::is_resolver_addr(d.family, &d.addr)
        && dns::is_resolver_port(port_at(&ctx, d.protocol, d.l4))
    {
        account(cgroup_id, |s| {
            s.pass_packets += 1;
            s.pass_bytes += len;
        });
        policy::count(Counter::SkbPass);
        return PASS;
    }
    let denied = if d.family == AF_INET {
        policy::denied4_by_range(e.policy_id, [d.addr[0], d.addr[1], d.addr[2], d.addr[3]])
    } else {
        policy::denied6_by_range(e.policy_id, d.addr)
    };
    match denied {
        None => {
            remember(cgroup_id, generation, &d, true, len);
            PASS
        }
        Some(reason) => refuse(&ctx, cgroup_id, e.policy_id, len, reason, Some(&d)),
    }
}

/// Drops (or, in audit mode, passes) a packet to a deny range, with event and counters.
#[inline(always)]
fn refuse(
    ctx: &SkBuffContext,
    cgroup_id: u64,
    policy_id: u32,
    len: u64,
    reason: u32,
    d: Option<&Dest>,
) -> i32 {
    let verdict = policy::refusal_verdict(policy_id);
    if verdict == verdict::AUDIT {
        // Counted, not reported: the socket hook already reported the connection, and a
        // per-packet audit event would flood the ring buffer.
        account(cgroup_id, |s| {
            s.audit_packets += 1;
            s.audit_bytes += len;
        });
        policy::count(Counter::SkbAudit);
        return PASS;
    }
    let (family, protocol, port, addr) = match d {
        Some(d) => (d.family, d.protocol, port_at(ctx, d.protocol, d.l4), d.addr),
        None => (0, 0, 0, [0; 16]),
    };
    policy::report(
        ctx,
        Report {
            cgroup_id,
            policy_id,
            hook: hook::SKB_EGRESS,
            verdict,
            reason,
            family,
            protocol: u16::from(protocol),
            port,
            addr,
            task_context: false,
        },
    );
    account(cgroup_id, |s| {
        s.drop_packets += 1;
        s.drop_bytes += len;
    });
    policy::count(Counter::SkbDrop);
    DROP
}

/// Takes this CPU's cache slot for a passed flow, first adding what the previous flow
/// had pending to its cgroup's statistics.
#[inline(always)]
fn remember(cgroup_id: u64, generation: u64, d: &Dest, enrolled: bool, len: u64) {
    let Some(c) = SKB_CACHE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot.
    let c = unsafe { &mut *c };
    flush(c);
    c.cgroup_id = cgroup_id;
    c.generation = generation;
    c.family = u32::from(d.family);
    c.addr = d.addr;
    c.enrolled = u32::from(enrolled);
    if enrolled {
        c.pending_packets = 1;
        c.pending_bytes = len;
    }
}

/// Adds a cache slot's pending packets to its cgroup's statistics.
#[inline(always)]
fn flush(c: &mut FlowCache) {
    if c.pending_packets == 0 {
        return;
    }
    let (packets, bytes) = (c.pending_packets, c.pending_bytes);
    c.pending_packets = 0;
    c.pending_bytes = 0;
    policy::count_n(Counter::SkbPass, packets);
    account(c.cgroup_id, |s| {
        s.pass_packets += packets;
        s.pass_bytes += bytes;
    });
}

/// Reads the destination from the packet: in place when the header is linear, else
/// through the load helper. `None` when it cannot be read.
#[inline(always)]
fn read_dest(ctx: &SkBuffContext) -> Option<Dest> {
    // SAFETY: reading the context's data pointers; every dereference below is bounds
    // checked against data_end, which the verifier requires and enforces.
    let (data, end) = unsafe {
        (
            (*ctx.skb.skb).data as usize,
            (*ctx.skb.skb).data_end as usize,
        )
    };
    let mut addr = [0u8; 16];
    if data + 40 <= end {
        // SAFETY: 40 bytes are in bounds: a whole IPv6 header, more than an IPv4 one.
        let first = unsafe { *(data as *const u8) };
        return match first >> 4 {
            4 => {
                // SAFETY: offsets 9 and 16..20 lie within the 40 checked bytes.
                let (protocol, dst) =
                    unsafe { (*((data + 9) as *const u8), *((data + 16) as *const [u8; 4])) };
                addr[..4].copy_from_slice(&dst);
                Some(Dest {
                    family: AF_INET,
                    protocol,
                    l4: usize::from(first & 0x0f) * 4,
                    addr,
                })
            }
            6 => {
                // SAFETY: offsets 6 and 24..40 lie within the 40 checked bytes.
                let (protocol, dst) = unsafe {
                    (
                        *((data + 6) as *const u8),
                        *((data + 24) as *const [u8; 16]),
                    )
                };
                Some(Dest {
                    family: AF_INET6,
                    protocol,
                    l4: 40,
                    addr: dst,
                })
            }
            _ => None,
        };
    }
    let first: u8 = ctx.load(0).ok()?;
    match first >> 4 {
        4 => {
            let dst: [u8; 4] = ctx.load(16).ok()?;
            addr[..4].copy_from_slice(&dst);
            Some(Dest {
                family: AF_INET,
                protocol: ctx.load(9).ok()?,
                l4: usize::from(first & 0x0f) * 4,
                addr,
            })
        }
        6 => Some(Dest {
            family: AF_INET6,
            protocol: ctx.load(6).ok()?,
            l4: 40,
            addr: ctx.load(24).ok()?,
        }),
        _ => None,
    }
}

/// Destination port of a TCP or UDP header at `l4` (0 for other protocols).
#[inline(always)]
fn port_at(ctx: &SkBuffContext, protocol: u8, l4: usize) -> u16 {
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return 0;
    }
    ctx.load::<u16>(l4 + 2).map(u16::from_be).unwrap_or(0)
}

/// Adds to a cgroup's per-CPU statistics, creating the entry on first use.
#[inline(always)]
fn account(cgroup_id: u64, add: impl Fn(&mut CgroupStats)) {
    if let Some(s) = CG_STATS.get_ptr_mut(cgroup_id) {
        // SAFETY: per-CPU value, this CPU's copy.
        add(unsafe { &mut *s });
        return;
    }
    let mut s = CgroupStats::default();
    add(&mut s);
    if CG_STATS.insert(cgroup_id, s, 0).is_err() {
        policy::count(Counter::MapFull);
    }
}
