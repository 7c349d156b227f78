//! hb's kernel side: cgroup programs that refuse what a sandbox's policy forbids.
//!
//! * `sock_addr` — `cgroup/connect4|6` and `cgroup/sendmsg4|6`: judge the destination of
//!   every connect and every unconnected datagram send (EPERM on refusal).
//! * `skb` — `cgroup_skb/egress`: every packet judged on the destination in its header
//!   (ping and raw sockets, routing headers and source routes included), a socket's
//!   admitted peer passed as established; also the per-cgroup traffic sensor.
//! * `ingress` — `cgroup_skb/ingress` and `sock_ops`: what reaches a sandbox from outside
//!   (no connection from outside its sandbox unless its policy says `inbound = true`),
//!   and an accepted connection's client recorded as its socket's admitted peer.
//! * `dns` — port-53 traffic redirected to hb's resolver, and the redirect undone in
//!   `cgroup/recvmsg4|6` and `cgroup/getpeername4|6`.
//! * `guard` — TCP connects to allowed destinations on a guarded policy's ports sent to
//!   the agent's guard (which checks the name the client sends), the original
//!   destination recorded per socket and restored in `getpeername4|6`; QUIC refused.
//! * `sockopt` — `cgroup/setsockopt`: refuses the options that make the kernel send for
//!   the sandbox from its own sockets (multicast membership reports) or route a packet
//!   elsewhere than its destination (routing headers, IP options), or send from a
//!   foreign source; rewrites the error-queue options (`IP_RECVERR`…) to 0.
//! * `socks` — `cgroup/sock_create|sock_release`: a sandbox in the agent's network
//!   namespace holds at most `sockets_max` of the host's ephemeral ports, all of them
//!   together at most `sockets_node_percent` of the range (TIME_WAIT ends, seen by
//!   `sock_ops`, count too).
//! * `source` — `cgroup/bind4|6` and `cgroup/sendmsg4|6`: refuses a source address that
//!   is not one of the host's (`HB_LOCAL_ADDRS`, kept by the agent from rtnetlink).
//! * `splice` — `sk_skb/stream_verdict`: a passed guard connection's bytes sent from
//!   one of its sockets to the other in the kernel (`guard.sockmap`).
//! * `policy` — the decision all share (NAT64 prefixes included), the per-socket admitted
//!   peers, the maps, counters and events.
//!
//! Everything here fails closed: a lookup we cannot make or a record we cannot read means
//! refusal for an enrolled cgroup. Cgroups that are not enrolled are never touched.
#![no_std]
#![no_main]
// `asm!` on BPF: the event budget's atomic add (`policy::atomic_add`), which `core`'s
// atomics do not offer on a target without compare-and-swap.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod dns;
mod guard;
mod ingress;
mod policy;
mod skb;
mod sock_addr;
mod sock_storage;
mod sockopt;
mod socks;
mod source;
mod splice;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any program that could reach this; it exists for the linker.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
