//! The egress guard's kernel relay (`guard.sockmap`): once the guard has judged a TLS
//! connection and handed both of its sockets over, each chunk that arrives on one is
//! sent on from the other's sending side without a trip through the agent.
//!
//! The guard files each socket under its cookie in `HB_GUARD_SPLICE` (the peer's
//! cookie) and in `HB_GUARD_PEERS` (where the peer is looked up), then in
//! `HB_GUARD_SOCKS`, whose stream verdict is [`hb_guard_splice`]. The counters tell
//! the guard how many bytes went, so it passes a half-close on only once they left.
//!
//! Fail closed: a socket without a record, or whose peer is gone, has its bytes
//! dropped and counted (`dropped`); the guard then resets both sides. Nothing here
//! judges bytes: the guard hands a connection over only once nothing it sends can
//! name another host (see the agent's `guard::splice`).

use aya_ebpf::{
    bindings::sk_action,
    helpers::generated::bpf_get_socket_cookie,
    macros::{map, stream_verdict},
    maps::{HashMap, SockHash},
    programs::SkBuffContext,
};
use hb_common::{GuardSplice, limits};

#[map(name = "HB_GUARD_SOCKS")]
static GUARD_SOCKS: SockHash<u64> = SockHash::with_max_entries(limits::GUARD_SPLICED, 0);

#[map(name = "HB_GUARD_PEERS")]
static GUARD_PEERS: SockHash<u64> = SockHash::with_max_entries(limits::GUARD_SPLICED, 0);

#[map(name = "HB_GUARD_SPLICE")]
static GUARD_SPLICE: HashMap<u64, GuardSplice> =
    HashMap::with_max_entries(limits::GUARD_SPLICED, 0);

/// One chunk received on a spliced socket: sent on from its peer, or dropped.
#[stream_verdict]
pub fn hb_guard_splice(ctx: SkBuffContext) -> u32 {
    // SAFETY: the helper reads the context's socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
    let Some(state) = GUARD_SPLICE.get_ptr_mut(cookie) else {
        return sk_action::SK_DROP;
    };
    let len = u64::from(ctx.len());
    if len == 0 {
        // The end of stream's empty carrier: the guard passes the half-close on
        // itself, once the bytes before it left. Sent on, it would break the peer.
        return sk_action::SK_DROP;
    }
    // SAFETY: a map value of this socket's; only this program writes its counters,
    // one chunk of the socket at a time.
    let mut peer = unsafe { (*state).peer };
    let verdict = GUARD_PEERS.redirect_skb(&ctx, &mut peer, 0) as u32;
    // SAFETY: as above.
    unsafe {
        if verdict == sk_action::SK_PASS {
            (*state).bytes += len;
        } else {
            (*state).dropped += 1;
        }
    }
    verdict
}
