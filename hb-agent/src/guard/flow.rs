//! Where a guarded connection was going: the kernel's record of it (`HB_GUARD_FLOWS`),
//! found from the accepted socket's two ends and removed when the guard is done.
//!
//! The connect hook remembered what the sandbox's socket addressed; `sock_ops` filed it
//! under the socket's client end (address, port) and the guard port when the SYN left.
//! The accepted socket's peer is that client end and its local port that guard port, so
//! the guard needs no cooperation from the client. A connection without a record (the
//! LRU map forgot it, or something not redirected by the kernel connected to the guard
//! directly) is closed: nothing the guard cannot attribute goes anywhere.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Mutex,
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use hb_common::{AF_INET, AF_INET6, GuardFlowKey, GuardOrig, map_names};

use crate::maps::{MapsError, addr_of, open_typed};

/// The original destination of one guarded connection, and who opened it.
#[derive(Debug, Clone)]
pub struct Origin {
    pub dst: SocketAddr,
    pub policy_id: u32,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    /// The connecting thread's command name.
    pub comm: String,
}

impl Origin {
    fn from_record(o: &GuardOrig) -> Self {
        let ip = addr_of(&o.addr, o.family == AF_INET);
        let end = o.comm.iter().position(|&b| b == 0).unwrap_or(o.comm.len());
        Self {
            dst: SocketAddr::new(ip, u16::from_be(o.port_be)),
            policy_id: o.policy_id,
            cgroup_id: o.cgroup_id,
            pid: (o.pid_tgid >> 32) as u32,
            tid: o.pid_tgid as u32,
            comm: String::from_utf8_lossy(&o.comm[..end]).into_owned(),
        }
    }
}

/// The flow table, shared by every connection task.
pub struct Flows {
    map: Mutex<BpfHashMap<MapData, GuardFlowKey, GuardOrig>>,
}

/// A connection's key in the flow table: the accepted socket's peer and local port.
pub fn key_of(peer: SocketAddr, local: SocketAddr) -> GuardFlowKey {
    let mut key = GuardFlowKey {
        client: [0; 16],
        client_port: peer.port(),
        guard_port: local.port(),
        family: AF_INET,
        _pad: 0,
    };
    match peer.ip() {
        IpAddr::V4(a) => key.client[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => key.client[..4].copy_from_slice(&v4.octets()),
            None => {
                key.client = a.octets();
                key.family = AF_INET6;
            }
        },
    }
    key
}

impl Flows {
    pub fn open(bpffs_dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            map: Mutex::new(open_typed(bpffs_dir, map_names::GUARD_FLOWS)?),
        })
    }

    /// The record of the connection with this key, if the kernel filed one.
    pub fn find(&self, key: &GuardFlowKey) -> Option<Origin> {
        let map = self.map.lock().ok()?;
        map.get(key, 0).ok().map(|o| Origin::from_record(&o))
    }

    /// Drops the record of a connection the guard has closed.
    pub fn forget(&self, key: &GuardFlowKey) {
        if let Ok(mut map) = self.map.lock() {
            let _ = map.remove(key);
        }
    }
}

/// Every record in the table (`hb-agent maps dump guard`): the client end and the
/// original destination of each connection in flight.
pub fn dump(bpffs_dir: &Path) -> Result<Vec<(GuardFlowKey, Origin)>, MapsError> {
    let map: BpfHashMap<MapData, GuardFlowKey, GuardOrig> =
        open_typed(bpffs_dir, map_names::GUARD_FLOWS)?;
    Ok(map
        .iter()
        .filter_map(|r| r.ok())
        .map(|(k, o)| (k, Origin::from_record(&o)))
        .collect())
}

/// A flow key's client end as an address.
pub fn client_of(key: &GuardFlowKey) -> SocketAddr {
    SocketAddr::new(addr_of(&key.client, key.family == AF_INET), key.client_port)
}
