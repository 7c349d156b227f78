//! Where a guarded connection was going: the kernel's record of it (`HB_GUARD_CONNS`),
//! found from the accepted socket's two ends and removed when the guard is done.
//!
//! The connect hook remembered what the sandbox's socket addressed; `sock_ops` filed it
//! under the socket's network namespace, client end (address, port) and the guard port
//! when the SYN left ([`crate::flow_key`]). The accepted socket's namespace, peer and
//! local port are those, so the guard needs no cooperation from the client, and two
//! pods whose clients share an address and port find their own records. A connection
//! without a record (the LRU map forgot it, something not redirected by the kernel
//! connected to the guard directly, or its namespace could not be read) is closed:
//! nothing the guard cannot attribute goes anywhere.

use std::{net::SocketAddr, path::Path, sync::Mutex};

use aya::maps::{HashMap as BpfHashMap, MapData};
use hb_common::{AF_INET, FlowKey, GuardOrig, map_names};

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
    map: Mutex<BpfHashMap<MapData, FlowKey, GuardOrig>>,
}

impl Flows {
    pub fn open(bpffs_dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            map: Mutex::new(open_typed(bpffs_dir, map_names::GUARD_FLOWS)?),
        })
    }

    /// The record of the connection with this key, if the kernel filed one.
    pub fn find(&self, key: &FlowKey) -> Option<Origin> {
        let map = self.map.lock().ok()?;
        map.get(key, 0).ok().map(|o| Origin::from_record(&o))
    }

    /// Drops the record of a connection the guard has closed.
    pub fn forget(&self, key: &FlowKey) {
        if let Ok(mut map) = self.map.lock() {
            let _ = map.remove(key);
        }
    }
}

/// Every record in the table (`hb-agent maps dump guard`): the client end and the
/// original destination of each connection in flight.
pub fn dump(bpffs_dir: &Path) -> Result<Vec<(FlowKey, Origin)>, MapsError> {
    let map: BpfHashMap<MapData, FlowKey, GuardOrig> =
        open_typed(bpffs_dir, map_names::GUARD_FLOWS)?;
    Ok(map
        .iter()
        .filter_map(|r| r.ok())
        .map(|(k, o)| (k, Origin::from_record(&o)))
        .collect())
}
