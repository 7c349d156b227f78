//! Who holds the resolver's TCP connections and who sent its datagrams: the kernel's
//! record of each redirected TCP DNS connection (`HB_DNS_CONNS`) and of each redirected
//! UDP DNS socket's client end (`HB_DNS_UDP`).
//!
//! The connect hook remembered the policy and cgroup of every socket it sent to the
//! resolver; `sock_ops` filed that under the socket's network namespace, client end and
//! resolver port when its SYN left ([`crate::flow_key`]). The resolver finds it from the
//! accepted socket, holds the cgroup to its share of its policy's connections
//! (`super::TcpLimits`; past it: closed with a `dns_cgroup_busy` event), and removes the
//! record when the connection ends. So one sandbox holding idle connections cannot take its policy's every slot.
//!
//! UDP: `cgroup_skb/egress` filed a redirected UDP socket's first datagram to the
//! resolver under the same kind of key (its source as the resolver sees it); the
//! resolver reads it per datagram that needs more than the cache ([`Conns::sender`]).
//! A datagram without a record (or with one of another policy's port) is still answered,
//! charged to cgroup 0: its policy's unattributed share.
//!
//! Must never serve a TCP connection it cannot attribute: no record (the LRU map forgot
//! it, something the kernel did not redirect connected directly), a record of another
//! policy's port, or an unreadable namespace — each is closed at once.

use std::{net::SocketAddr, path::Path, sync::Mutex};

use aya::maps::{HashMap as BpfHashMap, MapData};
use hb_common::{AF_INET, DnsOrig, FlowKey};

use crate::maps::{MapsError, addr_of, open_typed};

/// A table of redirected DNS client ends (TCP connections, or UDP sockets), shared by
/// every listener of its transport.
pub(super) struct Conns {
    map: Mutex<BpfHashMap<MapData, FlowKey, DnsOrig>>,
}

/// Who opened one TCP DNS connection, and which nameserver it named.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    pub policy_id: u32,
    pub cgroup_id: u64,
    /// The nameserver the sandbox addressed (before the kernel redirected it).
    pub named: SocketAddr,
}

impl Caller {
    fn from_record(o: &DnsOrig) -> Self {
        Self {
            policy_id: o.policy_id,
            cgroup_id: o.cgroup_id,
            named: SocketAddr::new(
                addr_of(&o.addr, o.family == AF_INET),
                u16::from_be(o.port_be),
            ),
        }
    }
}

/// Every record in a table (`hb-agent maps dump dns_conns`: the TCP DNS connections
/// between SYN and close; `dns_udp`: the UDP DNS client ends), and who opened each.
pub(crate) fn dump(
    bpffs_dir: &Path,
    table: &'static str,
) -> Result<Vec<(FlowKey, Caller)>, MapsError> {
    let map: BpfHashMap<MapData, FlowKey, DnsOrig> = open_typed(bpffs_dir, table)?;
    Ok(map
        .iter()
        .filter_map(|r| r.ok())
        .map(|(k, o)| (k, Caller::from_record(&o)))
        .collect())
}

impl Conns {
    /// The table of TCP connections (`map_names::DNS_FLOWS`) or of UDP client ends
    /// (`map_names::DNS_UDP`).
    pub(super) fn open(bpffs_dir: &Path, table: &'static str) -> Result<Self, MapsError> {
        Ok(Self {
            map: Mutex::new(open_typed(bpffs_dir, table)?),
        })
    }

    /// The cgroup that sent a datagram from `from` to the listener at `local` (of
    /// `policy_id`, in network namespace `netns`), or 0 — its policy's unattributed
    /// share — when the kernel filed none, filed one of another policy, or the
    /// namespace is unknown.
    pub(super) fn sender(
        &self,
        policy_id: u32,
        netns: Option<u64>,
        from: SocketAddr,
        local: Option<SocketAddr>,
    ) -> u64 {
        let (Some(netns), Some(local)) = (netns, local) else {
            return 0;
        };
        self.find(&crate::flow_key::key_of(netns, from, local))
            .filter(|c| c.policy_id == policy_id)
            .map_or(0, |c| c.cgroup_id)
    }

    /// The caller of the connection with this key, if the kernel filed one.
    pub(super) fn find(&self, key: &FlowKey) -> Option<Caller> {
        let map = self.map.lock().ok()?;
        map.get(key, 0).ok().map(|o| Caller::from_record(&o))
    }

    /// Drops the record of a connection the resolver has closed.
    pub(super) fn forget(&self, key: &FlowKey) {
        if let Ok(mut map) = self.map.lock() {
            let _ = map.remove(key);
        }
    }
}
