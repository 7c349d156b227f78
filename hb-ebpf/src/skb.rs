//! `cgroup_skb/egress`: the per-packet second line and the per-cgroup traffic sensor.
//!
//! The socket hooks cannot see raw sockets, ICMP sends or anything else that never names
//! a destination through connect/sendmsg, so every packet leaving an enrolled cgroup is
//! checked against the deny ranges here (not against the allow set: the socket hooks own
//! that). Packets, bytes and verdicts are counted per cgroup for the rotation loop.
//!
//! Return value: 1 passes the packet, 0 drops it (the sender sees EPERM for most
//! sockets). A packet whose header cannot be read is dropped (fail closed).
//!
//! The context starts at the network header (`__sk_buff` data for cgroup_skb); addresses
//! are read as wire bytes, network order.

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id},
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use hb_common::{AF_INET, AF_INET6, CgroupStats, Counter, hook, reason, verdict};

use crate::policy::{self, CG_STATS, Report};

const PASS: i32 = 1;
const DROP: i32 = 0;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Drops packets from enrolled cgroups to deny ranges, counts every packet per cgroup.
/// Drops on an unreadable header.
#[cgroup_skb(egress)]
pub fn hb_skb_egress(ctx: SkBuffContext) -> i32 {
    let skb: *mut __sk_buff = ctx.skb.skb;
    // SAFETY: skb is the program's context pointer.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    let Some(e) = policy::enrollment(cgroup_id, |level| unsafe {
        bpf_skb_ancestor_cgroup_id(skb, level)
    }) else {
        return PASS;
    };
    let len = ctx.len() as u64;
    let Dest {
        denied: reason,
        family,
        protocol,
        port,
        addr,
    } = classify(&ctx, e.policy_id).unwrap_or(Dest {
        denied: Some(reason::DENY_RANGE),
        family: 0,
        protocol: 0,
        port: 0,
        addr: [0; 16],
    });
    let Some(reason) = reason else {
        account(cgroup_id, |s| {
            s.pass_packets += 1;
            s.pass_bytes += len;
        });
        policy::count(Counter::SkbPass);
        return PASS;
    };
    let verdict = policy::refusal_verdict(e.policy_id);
    if verdict == verdict::AUDIT {
        // Counted, not reported: the socket hook already reported the connection, and a
        // per-packet audit event would flood the ring buffer.
        account(cgroup_id, |s| {
            s.audit_packets += 1;
            s.audit_bytes += len;
        });
        policy::count(Counter::SkbAudit);
        PASS
    } else {
        policy::report(
            &ctx,
            Report {
                cgroup_id,
                policy_id: e.policy_id,
                hook: hook::SKB_EGRESS,
                verdict,
                reason,
                family,
                protocol,
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
}

/// A packet's destination, as far as the verdict and the event need it.
struct Dest {
    /// The deny reason, if the destination lies in a deny range.
    denied: Option<u32>,
    family: u16,
    protocol: u16,
    port: u16,
    addr: [u8; 16],
}

/// Reads the destination; `None` when the header cannot be read.
#[inline(always)]
fn classify(ctx: &SkBuffContext, policy_id: u32) -> Option<Dest> {
    let first: u8 = ctx.load(0).ok()?;
    let mut addr = [0u8; 16];
    match first >> 4 {
        4 => {
            let dst: [u8; 4] = ctx.load(16).ok()?;
            let protocol: u8 = ctx.load(9).ok()?;
            addr[..4].copy_from_slice(&dst);
            let denied = policy::denied4_by_range(policy_id, dst);
            let port = if denied.is_some() {
                port_at(ctx, protocol, usize::from(first & 0x0f) * 4)
            } else {
                0
            };
            Some(Dest {
                denied,
                family: AF_INET,
                protocol: protocol as u16,
                port,
                addr,
            })
        }
        6 => {
            let dst: [u8; 16] = ctx.load(24).ok()?;
            let next: u8 = ctx.load(6).ok()?;
            let denied = policy::denied6_by_range(policy_id, dst);
            let port = if denied.is_some() {
                port_at(ctx, next, 40)
            } else {
                0
            };
            Some(Dest {
                denied,
                family: AF_INET6,
                protocol: next as u16,
                port,
                addr: dst,
            })
        }
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

/// Adds one packet to the cgroup's per-CPU statistics, creating the entry on first use.
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
