//! The addresses the resolver has validated, in the kernel's allow maps.
//!
//! Owns: writing `HB_ALLOW4/6` (key: policy id + address, value: expiry in monotonic ns),
//! the per-name cap (`max_ips_per_name`, oldest evicted), the name index behind
//! `hb-agent maps dump allow4` (which name(s) taught us an address), and the collector of
//! expired entries. An address learned from several names keeps the latest expiry.
//!
//! The maps are shared by every policy on the node, so each policy has a share
//! (`max_ips_per_policy`): a policy at its share drops its own soonest-expiring
//! addresses to make room, never another policy's, and the drops are counted and logged.
//! A restarted agent counts what the pinned maps already hold per policy before it
//! learns anything, so a share filled before the restart stays filled.
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
    /// (policy, address) → the names it was learned from and its expiry. Entries a
    /// previous agent left in the maps have no names.
    by_addr: HashMap<(u32, IpAddr), (BTreeSet<String>, u64)>,
    /// policy → its addresses by expiry, soonest first: the order its share is freed in.
    by_expiry: HashMap<u32, BTreeSet<(u64, IpAddr)>>,
    max_per_name: usize,
    max_per_policy: usize,
    /// Addresses dropped to keep a policy within its share.
    pub quota_evicted: u64,
    /// Quota drops not logged yet, and when the last log line went out.
    quota_log: (u64, Option<std::time::Instant>),
    /// Addresses dropped because a name had too many.
    pub evicted: u64,
    /// Inserts refused by a full map.
    pub full: u64,
    /// The name index changed since it was last written out.
    pub dirty: bool,
}

impl Learned {
    pub fn open(
        bpffs_dir: &Path,
        max_per_name: usize,
        max_per_policy: usize,
    ) -> Result<Self, MapsError> {
        let mut learned = Self {
            allow4: open_typed(bpffs_dir, map_names::ALLOW4)?,
            allow6: open_typed(bpffs_dir, map_names::ALLOW6)?,
            by_name: HashMap::new(),
            by_addr: HashMap::new(),
            by_expiry: HashMap::new(),
            max_per_name: max_per_name.max(1),
            max_per_policy: max_per_policy.max(max_per_name).max(1),
            quota_evicted: 0,
            quota_log: (0, None),
            evicted: 0,
            full: 0,
            dirty: false,
        };
        learned.adopt_pinned();
        Ok(learned)
    }

    /// Indexes what a previous agent left in the pinned maps (without names), so every
    /// policy's share counts it and the collector frees it when it expires.
    fn adopt_pinned(&mut self) {
        let v4: Vec<(u32, IpAddr, u64)> = self
            .allow4
            .iter()
            .filter_map(Result::ok)
            .map(|(k, e)| (k.policy_id, IpAddr::from(k.addr), e))
            .collect();
        let v6: Vec<(u32, IpAddr, u64)> = self
            .allow6
            .iter()
            .filter_map(Result::ok)
            .map(|(k, e)| (k.policy_id, IpAddr::from(k.addr), e))
            .collect();
        for (policy_id, addr, expires) in v4.into_iter().chain(v6) {
            self.by_addr
                .insert((policy_id, addr), (BTreeSet::new(), expires));
            self.by_expiry
                .entry(policy_id)
                .or_default()
                .insert((expires, addr));
        }
    }

    /// Addresses in the IPv4 and the IPv6 allow map (for the metrics).
    pub fn family_counts(&self) -> (usize, usize) {
        let v4 = self.by_addr.keys().filter(|(_, a)| a.is_ipv4()).count();
        (v4, self.by_addr.len() - v4)
    }

    /// How many addresses `policy_id` holds in the maps.
    pub fn policy_len(&self, policy_id: u32) -> usize {
        self.by_expiry.get(&policy_id).map_or(0, BTreeSet::len)
    }

    /// Drops `policy_id`'s soonest-expiring address that is not in `keep` (the answer
    /// being learned), of the family of `like` when given (to free a slot in that map).
    /// Returns whether one went.
    fn evict_own_oldest(&mut self, policy_id: u32, keep: &[IpAddr], like: Option<IpAddr>) -> bool {
        let fits = |a: &IpAddr| like.is_none_or(|l| l.is_ipv6() == a.is_ipv6());
        let Some(victim) = self.by_expiry.get(&policy_id).and_then(|set| {
            set.iter()
                .find(|(_, a)| !keep.contains(a) && fits(a))
                .map(|(_, a)| *a)
        }) else {
            return false;
        };
        self.drop_addr(policy_id, victim);
        self.quota_evicted += 1;
        self.quota_log.0 += 1;
        let now = std::time::Instant::now();
        if self
            .quota_log
            .1
            .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(10))
        {
            tracing::warn!(
                policy_id,
                dropped = self.quota_log.0,
                max_ips_per_policy = self.max_per_policy,
                "policy at its share of the allow maps: its own soonest-expiring addresses dropped"
            );
            self.quota_log = (0, Some(now));
        }
        true
    }

    /// Forgets an address of a policy everywhere: the index, its names, the kernel map.
    fn drop_addr(&mut self, policy_id: u32, addr: IpAddr) {
        if let Some((names, expires)) = self.by_addr.remove(&(policy_id, addr)) {
            for n in names {
                let key = (policy_id, n);
                if let Some(list) = self.by_name.get_mut(&key) {
                    list.retain(|a| *a != addr);
                    if list.is_empty() {
                        self.by_name.remove(&key);
                    }
                }
            }
            self.unindex_expiry(policy_id, addr, expires);
        }
        self.delete(policy_id, addr);
        self.dirty = true;
    }

    fn unindex_expiry(&mut self, policy_id: u32, addr: IpAddr, expires: u64) {
        if let Some(set) = self.by_expiry.get_mut(&policy_id) {
            set.remove(&(expires, addr));
            if set.is_empty() {
                self.by_expiry.remove(&policy_id);
            }
        }
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
            if known.is_none() {
                // A new address: the policy makes room within its own share.
                while self.policy_len(policy_id) >= self.max_per_policy
                    && self.evict_own_oldest(policy_id, addrs, None)
                {}
            }
            // A cached answer hands out what the map already allows: no syscall needed.
            if known.is_none_or(|e| e < expires) {
                let mut written = self.write(policy_id, addr, until);
                // The map is full (other policies' shares together exceed it): this
                // policy may still trade one of its own addresses for the new one.
                if written.is_err()
                    && known.is_none()
                    && self.evict_own_oldest(policy_id, addrs, Some(addr))
                {
                    written = self.write(policy_id, addr, until);
                }
                if let Err(source) = written {
                    self.full += 1;
                    self.dirty = true;
                    return Err(LearnError { addr, source });
                }
            }
            let entry = self
                .by_addr
                .entry(key)
                .or_insert_with(|| (BTreeSet::new(), 0));
            entry.0.insert(name.to_owned());
            let before = std::mem::replace(&mut entry.1, until);
            if known.is_some() {
                self.unindex_expiry(policy_id, addr, before);
            }
            self.by_expiry
                .entry(policy_id)
                .or_default()
                .insert((until, addr));
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
                self.drop_addr(policy_id, addr);
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
            self.drop_addr(*policy_id, *addr);
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

    /// Whether the resolver validated `addr` for `policy_id` as an address of `name`
    /// (lower-case, no trailing dot): the egress guard's question. An address a previous
    /// agent left in the map has no names and validates none.
    pub fn validated_for(&self, policy_id: u32, addr: IpAddr, name: &str) -> bool {
        self.by_addr
            .get(&(policy_id, addr))
            .is_some_and(|(names, _)| names.contains(name))
    }

    /// (policy id, address) → names, for the name index file.
    pub fn names(&self) -> Vec<(u32, IpAddr, Vec<String>)> {
        self.by_addr
            .iter()
            .filter(|(_, (names, _))| !names.is_empty())
            .map(|((p, a), (names, _))| (*p, *a, names.iter().cloned().collect()))
            .collect()
    }
}
