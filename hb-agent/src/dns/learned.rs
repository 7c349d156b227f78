//! The addresses the resolver has validated, in the kernel's allow maps.
//!
//! Owns: writing `HB_ALLOW4/6` (key: policy id + address, value: expiry in monotonic ns),
//! the per-name cap (`max_ips_per_name`, oldest evicted), the name index behind
//! `hb-agent maps dump allow4` (which name(s) taught us an address), and the collector of
//! expired entries. An address learned from several names keeps the latest expiry.
//!
//! Must never: answer a query before its addresses are in the map (the caller awaits
//! [`Learned::learn`] first), or keep going when the map is full (the error makes the
//! resolver answer SERVFAIL: nothing is allowed that the kernel does not know).

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    net::IpAddr,
    path::Path,
};

use aya::maps::{HashMap as BpfHashMap, MapData, MapError};
use hb_common::{Allow4Key, Allow6Key, map_names};

use crate::maps::{MapsError, open_typed};

#[derive(Debug, thiserror::Error)]
#[error("allow map update failed (full?) for {addr}")]
pub struct LearnError {
    pub addr: IpAddr,
    #[source]
    pub source: MapError,
}

/// What the resolver taught the kernel, with enough memory to explain and to evict.
pub struct Learned {
    allow4: BpfHashMap<MapData, Allow4Key, u64>,
    allow6: BpfHashMap<MapData, Allow6Key, u64>,
    /// (policy, name) → its addresses, oldest first.
    by_name: HashMap<(u32, String), VecDeque<IpAddr>>,
    /// (policy, address) → the names it was learned from and its expiry.
    by_addr: HashMap<(u32, IpAddr), (BTreeSet<String>, u64)>,
    max_per_name: usize,
    /// Addresses dropped because a name had too many.
    pub evicted: u64,
    /// Inserts refused by a full map.
    pub full: u64,
    /// The name index changed since it was last written out.
    pub dirty: bool,
}

impl Learned {
    pub fn open(bpffs_dir: &Path, max_per_name: usize) -> Result<Self, MapsError> {
        Ok(Self {
            allow4: open_typed(bpffs_dir, map_names::ALLOW4)?,
            allow6: open_typed(bpffs_dir, map_names::ALLOW6)?,
            by_name: HashMap::new(),
            by_addr: HashMap::new(),
            max_per_name: max_per_name.max(1),
            evicted: 0,
            full: 0,
            dirty: false,
        })
    }

    fn write(&mut self, policy_id: u32, addr: IpAddr, expires: u64) -> Result<(), MapError> {
        match addr {
            IpAddr::V4(a) => self.allow4.insert(
                Allow4Key {
                    policy_id,
                    addr: a.octets(),
                },
                expires,
                0,
            ),
            IpAddr::V6(a) => self.allow6.insert(
                Allow6Key {
                    policy_id,
                    addr: a.octets(),
                },
                expires,
                0,
            ),
        }
    }

    fn delete(&mut self, policy_id: u32, addr: IpAddr) {
        let _ = match addr {
            IpAddr::V4(a) => self.allow4.remove(&Allow4Key {
                policy_id,
                addr: a.octets(),
            }),
            IpAddr::V6(a) => self.allow6.remove(&Allow6Key {
                policy_id,
                addr: a.octets(),
            }),
        };
    }

    /// Allows `addrs` for `policy_id` until `expires` (monotonic ns), as learned from
    /// `name`. On error nothing more is inserted and the caller must not answer.
    pub fn learn(
        &mut self,
        policy_id: u32,
        name: &str,
        addrs: &[IpAddr],
        expires: u64,
    ) -> Result<(), LearnError> {
        for &addr in addrs {
            let key = (policy_id, addr);
            // Fast path for answers served again: already allowed long enough, already
            // indexed under this name. No allocation, no syscall.
            if self
                .by_addr
                .get(&key)
                .is_some_and(|(names, e)| *e >= expires && names.contains(name))
            {
                continue;
            }
            let known = self.by_addr.get(&key).map(|(_, e)| *e);
            let until = known.map_or(expires, |e| e.max(expires));
            // A cached answer hands out what the map already allows: no syscall needed.
            if known.is_none_or(|e| e < expires)
                && let Err(source) = self.write(policy_id, addr, until)
            {
                self.full += 1;
                self.dirty = true;
                return Err(LearnError { addr, source });
            }
            let entry = self
                .by_addr
                .entry(key)
                .or_insert_with(|| (BTreeSet::new(), 0));
            entry.0.insert(name.to_owned());
            entry.1 = until;
            let max = self.max_per_name;
            let list = self
                .by_name
                .entry((policy_id, name.to_owned()))
                .or_default();
            if !list.contains(&addr) {
                list.push_back(addr);
            }
            let mut overflow = Vec::new();
            while list.len() > max {
                overflow.extend(list.pop_front());
            }
            for old in overflow {
                self.evicted += 1;
                self.forget_name(policy_id, old, name);
            }
            self.dirty = true;
        }
        Ok(())
    }

    /// Drops `name` from an address; the address goes when no name keeps it.
    fn forget_name(&mut self, policy_id: u32, addr: IpAddr, name: &str) {
        if let Some((names, _)) = self.by_addr.get_mut(&(policy_id, addr)) {
            names.remove(name);
            if names.is_empty() {
                self.by_addr.remove(&(policy_id, addr));
                self.delete(policy_id, addr);
            }
        }
    }

    /// Removes entries whose expiry has passed (the kernel already ignores them; this
    /// frees their slots). Returns how many went.
    pub fn collect(&mut self, now: u64) -> usize {
        let expired: Vec<(u32, IpAddr)> = self
            .by_addr
            .iter()
            .filter(|(_, (_, e))| *e <= now)
            .map(|(k, _)| *k)
            .collect();
        for (policy_id, addr) in &expired {
            if let Some((names, _)) = self.by_addr.remove(&(*policy_id, *addr)) {
                for n in names {
                    if let Some(list) = self.by_name.get_mut(&(*policy_id, n.clone())) {
                        list.retain(|a| a != addr);
                        if list.is_empty() {
                            self.by_name.remove(&(*policy_id, n));
                        }
                    }
                }
            }
            self.delete(*policy_id, *addr);
        }
        if !expired.is_empty() {
            self.dirty = true;
        }
        expired.len()
    }

    /// Removes expired entries the index does not know (left by a previous agent).
    pub fn sweep_unknown(&mut self, now: u64) {
        let stale4: Vec<Allow4Key> = self
            .allow4
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(_, e)| *e <= now)
            .map(|(k, _)| k)
            .collect();
        for k in stale4 {
            let _ = self.allow4.remove(&k);
        }
        let stale6: Vec<Allow6Key> = self
            .allow6
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(_, e)| *e <= now)
            .map(|(k, _)| k)
            .collect();
        for k in stale6 {
            let _ = self.allow6.remove(&k);
        }
    }

    /// (policy id, address) → names, for the name index file.
    pub fn names(&self) -> Vec<(u32, IpAddr, Vec<String>)> {
        self.by_addr
            .iter()
            .map(|((p, a), (names, _))| (*p, *a, names.iter().cloned().collect()))
            .collect()
    }
}
