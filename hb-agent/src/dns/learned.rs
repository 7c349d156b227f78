//! The addresses the resolver has validated, in the kernel's allow maps.
//!
//! Owns: writing `HB_ALLOW4/6` (key: policy id + address, value: expiry in monotonic ns),
//! who learned each row, the per-name cap (`max_ips_per_name`, oldest evicted), the name
//! index behind `hb-agent maps dump allow4` (which name(s) taught us an address), and the
//! collector of expired entries.
//!
//! A row is kept by its *claims*: one per sandbox (cgroup) that was handed the address,
//! each with the expiry of the answer that sandbox got. The row's value is the latest
//! claim's expiry; the row goes when its last claim does. An address handed to two
//! sandboxes (the same name, or a cached answer) is one row with two claims.
//!
//! The maps are shared by every policy on the node, so each policy has a share
//! (`max_ips_per_policy`), and inside it each sandbox has one: at most
//! `max_ips_per_cgroup` claims, and once half of the policy's share is in use a sandbox
//! holding `max_ips_per_name` claims or more takes no free row; it trades one of its
//! own rows instead. A sandbox past its share drops its own soonest-expiring claims,
//! never another sandbox's (nor another policy's); when none of its own can make room,
//! the answer is refused ([`LearnError::Share`]). So a claim lives until its expiry
//! unless its own sandbox gives it up, and filling a policy's share takes
//! (share / 2) / `max_ips_per_cgroup` + (share / 2) / `max_ips_per_name` sandboxes.
//! A restarted agent holds what the pinned maps already hold under a claim no sandbox
//! owns (so the share stays filled and nothing is dropped before its expiry).
//!
//! Must never: answer a query before its addresses are in the map (the caller awaits
//! [`Learned::learn`] first), drop a claim of a sandbox other than the one learning, or
//! keep going when the map or the share is full (the error makes the resolver answer
//! SERVFAIL: nothing is allowed that the kernel does not know).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    net::IpAddr,
    path::Path,
};

use aya::maps::{HashMap as BpfHashMap, MapData, MapError};
use hb_common::{Allow4Key, Allow6Key, map_names};

use crate::maps::{MapsError, open_typed};

/// Why an answer's addresses could not all be allowed (the resolver answers SERVFAIL).
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("allow map update failed (full?) for {addr}")]
    MapFull {
        addr: IpAddr,
        #[source]
        source: MapError,
    },
    #[error(
        "cgroup {cgroup_id} holds its share of policy {policy_id}'s allow map ({held} \
         addresses, the policy {used}) and none of its own can make room for {addr}"
    )]
    Share {
        policy_id: u32,
        cgroup_id: u64,
        addr: IpAddr,
        held: usize,
        used: usize,
    },
}

/// Who is handed an answer: a sandbox (its cgroup; 0: the policy's unattributed
/// queries) of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Learner {
    pub policy_id: u32,
    pub cgroup_id: u64,
}

/// The cgroup under which a restarted agent holds the rows a previous one left: cgroup
/// ids are inode numbers and never this, so no sandbox can trade those rows away.
const ADOPTED: u64 = u64::MAX;

/// One row of the allow maps: (policy, address).
#[derive(Default)]
struct Row {
    /// Its claims, (expiry, cgroup), soonest first.
    claims: BTreeSet<(u64, u64)>,
    /// How many of its claims were taught each name (the egress guard asks by name).
    names: BTreeMap<String, u32>,
    /// The value in the kernel map: the latest expiry ever written.
    value: u64,
}

/// One sandbox's claim on a row.
struct Claim {
    expires: u64,
    /// The names that taught this sandbox the address (none: adopted), at most
    /// [`NAMES_PER_CLAIM`], in the order they were learned (or served again), oldest
    /// first.
    names: VecDeque<String>,
}

/// Names one sandbox's claim on one address keeps (the newest). Every name of a zone
/// whose names share an address (a hosting platform's: `*.github.io`) taught the same
/// claim, and each pushed its expiry on: without a bound, a sandbox asking distinct
/// names made the agent keep every one of them (three indexes and the name index file,
/// rewritten every second) for as long as it kept asking. A sandbox holds at most
/// `max_ips_per_cgroup` claims, so at most that many times this many names (at the
/// defaults 2,048 x 64, ~45 MiB at worst, through a zone whose names spread over a pool
/// of thousands of addresses); a name the sandbox has just been answered is always among
/// its claim's, so the egress guard's question for a fresh lookup is answered yes.
pub const NAMES_PER_CLAIM: usize = 64;

/// One sandbox's claims in one policy, soonest-expiring first.
#[derive(Default)]
struct Holdings {
    /// On rows no other sandbox claims: dropping one frees a row of the share.
    sole: BTreeSet<(u64, IpAddr)>,
    /// On rows other sandboxes claim too.
    shared: BTreeSet<(u64, IpAddr)>,
}

impl Holdings {
    fn len(&self) -> usize {
        self.sole.len() + self.shared.len()
    }
}

/// The kernel side: the rows of `HB_ALLOW4/6`.
pub trait AllowRows {
    /// Inserts or updates a row.
    fn write(&mut self, policy_id: u32, addr: IpAddr, expires: u64) -> Result<(), MapError>;
    /// Removes a row (absent: nothing to do).
    fn delete(&mut self, policy_id: u32, addr: IpAddr);
}

/// The pinned allow maps.
pub struct KernelMaps {
    allow4: BpfHashMap<MapData, Allow4Key, u64>,
    allow6: BpfHashMap<MapData, Allow6Key, u64>,
}

impl AllowRows for KernelMaps {
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
}

/// The shares of one policy's rows, from the config.
#[derive(Debug, Clone, Copy)]
pub struct Shares {
    /// `max_ips_per_name`.
    pub per_name: usize,
    /// `max_ips_per_policy`.
    pub per_policy: usize,
    /// `max_ips_per_cgroup`.
    pub per_cgroup: usize,
}

/// What the resolver taught the kernel, with enough memory to explain and to evict.
pub struct Learned<M = KernelMaps> {
    maps: M,
    rows: HashMap<(u32, IpAddr), Row>,
    /// Rows per policy (its use of `max_ips_per_policy`).
    policy_rows: HashMap<u32, usize>,
    claims: HashMap<(Learner, IpAddr), Claim>,
    holdings: HashMap<Learner, Holdings>,
    /// (sandbox, name) → the addresses it was taught, oldest first.
    by_name: HashMap<(Learner, String), VecDeque<IpAddr>>,
    /// Every claim by expiry: the collector's order.
    expiry: BTreeSet<(u64, Learner, IpAddr)>,
    shares: Shares,
    /// Claims a sandbox dropped to stay within its share.
    pub quota_evicted: u64,
    /// Quota drops not logged yet, and when the last log line went out.
    quota_log: (u64, Option<std::time::Instant>),
    /// Claims dropped because a name had too many.
    pub evicted: u64,
    /// Inserts refused by a full map.
    pub full: u64,
    /// Answers refused because the sandbox had no room in its share.
    pub share_refused: u64,
    /// The name index changed since it was last written out.
    pub dirty: bool,
}

impl Learned<KernelMaps> {
    pub fn open(bpffs_dir: &Path, shares: Shares) -> Result<Self, MapsError> {
        let maps = KernelMaps {
            allow4: open_typed(bpffs_dir, map_names::ALLOW4)?,
            allow6: open_typed(bpffs_dir, map_names::ALLOW6)?,
        };
        let pinned: Vec<(u32, IpAddr, u64)> = maps
            .allow4
            .iter()
            .filter_map(Result::ok)
            .map(|(k, e)| (k.policy_id, IpAddr::from(k.addr), e))
            .chain(
                maps.allow6
                    .iter()
                    .filter_map(Result::ok)
                    .map(|(k, e)| (k.policy_id, IpAddr::from(k.addr), e)),
            )
            .collect();
        let mut learned = Self::with_maps(maps, shares);
        learned.adopt(pinned);
        Ok(learned)
    }

    /// Removes expired entries the index does not know (left by a previous agent).
    pub fn sweep_unknown(&mut self, now: u64) {
        let stale4: Vec<Allow4Key> = self
            .maps
            .allow4
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(_, e)| *e <= now)
            .map(|(k, _)| k)
            .collect();
        for k in stale4 {
            let _ = self.maps.allow4.remove(&k);
        }
        let stale6: Vec<Allow6Key> = self
            .maps
            .allow6
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(_, e)| *e <= now)
            .map(|(k, _)| k)
            .collect();
        for k in stale6 {
            let _ = self.maps.allow6.remove(&k);
        }
    }
}

impl<M: AllowRows> Learned<M> {
    fn with_maps(maps: M, shares: Shares) -> Self {
        let per_name = shares.per_name.max(1);
        let per_policy = shares.per_policy.max(per_name);
        Self {
            maps,
            rows: HashMap::new(),
            policy_rows: HashMap::new(),
            claims: HashMap::new(),
            holdings: HashMap::new(),
            by_name: HashMap::new(),
            expiry: BTreeSet::new(),
            shares: Shares {
                per_name,
                per_policy,
                per_cgroup: shares.per_cgroup.clamp(per_name, per_policy),
            },
            quota_evicted: 0,
            quota_log: (0, None),
            evicted: 0,
            full: 0,
            share_refused: 0,
            dirty: false,
        }
    }

    /// Holds what a previous agent left in the pinned maps (without names) under a
    /// claim no sandbox owns, so every policy's share counts it until it expires.
    fn adopt(&mut self, pinned: Vec<(u32, IpAddr, u64)>) {
        for (policy_id, addr, expires) in pinned {
            let who = Learner {
                policy_id,
                cgroup_id: ADOPTED,
            };
            self.add_claim(who, addr, expires);
            if let Some(row) = self.rows.get_mut(&(policy_id, addr)) {
                row.value = row.value.max(expires);
            }
        }
    }

    /// Addresses in the IPv4 and the IPv6 allow map (for the metrics).
    pub fn family_counts(&self) -> (usize, usize) {
        let v4 = self.rows.keys().filter(|(_, a)| a.is_ipv4()).count();
        (v4, self.rows.len() - v4)
    }

    /// How many rows `policy_id` holds in the maps.
    pub fn policy_len(&self, policy_id: u32) -> usize {
        self.policy_rows.get(&policy_id).copied().unwrap_or(0)
    }

    /// How many claims a sandbox holds.
    pub fn held(&self, who: Learner) -> usize {
        self.holdings.get(&who).map_or(0, Holdings::len)
    }

    /// Allows `addrs` for `who`'s policy until at least `expires` (monotonic ns), as
    /// `who` learned them from `name`. On error nothing more is inserted and the caller
    /// must not answer.
    pub fn learn(
        &mut self,
        who: Learner,
        name: &str,
        addrs: &[IpAddr],
        expires: u64,
    ) -> Result<(), LearnError> {
        for &addr in addrs {
            // Fast path for answers served again: this sandbox's claim is long enough
            // and names this name. No allocation, no syscall.
            let claimed = self.claims.get(&(who, addr));
            if claimed.is_some_and(|c| c.expires >= expires && c.names.iter().any(|n| n == name)) {
                continue;
            }
            match claimed.map(|c| c.expires) {
                Some(before) if before < expires => self.extend_claim(who, addr, before, expires),
                Some(_) => {}
                None => self.claim_new(who, addr, addrs, expires)?,
            }
            let until = self.claims.get(&(who, addr)).map_or(expires, |c| c.expires);
            self.write_row(who.policy_id, addr, until)?;
            self.add_name(who, addr, name);
            self.dirty = true;
        }
        Ok(())
    }

    /// Makes room for a new claim of `who` (within its share, by its own claims only)
    /// and adds it.
    fn claim_new(
        &mut self,
        who: Learner,
        addr: IpAddr,
        keep: &[IpAddr],
        expires: u64,
    ) -> Result<(), LearnError> {
        let new_row = !self.rows.contains_key(&(who.policy_id, addr));
        let room = if new_row {
            self.may_take_row(who) || self.drop_own(who, keep, true, None)
        } else {
            // The row exists: the claim costs memory, not a row.
            self.held(who) < self.shares.per_cgroup || self.drop_own(who, keep, false, None)
        };
        if !room {
            self.share_refused += 1;
            return Err(LearnError::Share {
                policy_id: who.policy_id,
                cgroup_id: who.cgroup_id,
                addr,
                held: self.held(who),
                used: self.policy_len(who.policy_id),
            });
        }
        if new_row && let Err(source) = self.maps.write(who.policy_id, addr, expires) {
            // The map is full (other policies' shares together exceed it): this sandbox
            // may still trade one of its own rows of the family for the new one.
            let traded = self.drop_own(who, keep, true, Some(addr))
                && self.maps.write(who.policy_id, addr, expires).is_ok();
            if !traded {
                self.full += 1;
                self.dirty = true;
                return Err(LearnError::MapFull { addr, source });
            }
        }
        self.add_claim(who, addr, expires);
        if let Some(row) = self.rows.get_mut(&(who.policy_id, addr))
            && new_row
        {
            row.value = expires;
        }
        Ok(())
    }

    /// Whether `who` may take a free row of its policy's share: below the policy's and
    /// its own share, and, once half of the policy's share is in use, holding fewer than
    /// one name's worth (the rest is kept for sandboxes that hold little).
    fn may_take_row(&self, who: Learner) -> bool {
        let used = self.policy_len(who.policy_id);
        let held = self.held(who);
        used < self.shares.per_policy
            && held < self.shares.per_cgroup
            && (used < self.shares.per_policy / 2 || held < self.shares.per_name)
    }

    /// Raises the row's kernel value to `until` when it is later.
    fn write_row(&mut self, policy_id: u32, addr: IpAddr, until: u64) -> Result<(), LearnError> {
        let Some(row) = self.rows.get_mut(&(policy_id, addr)) else {
            return Ok(());
        };
        if row.value >= until {
            return Ok(());
        }
        self.maps
            .write(policy_id, addr, until)
            .map_err(|source| LearnError::MapFull { addr, source })?;
        row.value = until;
        Ok(())
    }

    /// Drops `who`'s soonest-expiring claim that is not in `keep` (the answer being
    /// learned): among those on rows only it claims when `sole` (to free a row), of the
    /// family of `like` when given (to free a slot in that map). Returns whether one went.
    fn drop_own(
        &mut self,
        who: Learner,
        keep: &[IpAddr],
        sole: bool,
        like: Option<IpAddr>,
    ) -> bool {
        let fits =
            |a: &IpAddr| !keep.contains(a) && like.is_none_or(|l| l.is_ipv6() == a.is_ipv6());
        let Some(h) = self.holdings.get(&who) else {
            return false;
        };
        let first_sole = h.sole.iter().find(|(_, a)| fits(a)).copied();
        let first_shared = if sole {
            None
        } else {
            h.shared.iter().find(|(_, a)| fits(a)).copied()
        };
        let Some((_, victim)) = first_sole.into_iter().chain(first_shared).min() else {
            return false;
        };
        self.drop_claim(who, victim);
        self.quota_evicted += 1;
        self.quota_log.0 += 1;
        let now = std::time::Instant::now();
        if self
            .quota_log
            .1
            .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(10))
        {
            tracing::warn!(
                policy_id = who.policy_id,
                cgroup_id = who.cgroup_id,
                dropped = self.quota_log.0,
                max_ips_per_cgroup = self.shares.per_cgroup,
                "sandbox at its share of its policy's allow map: its own soonest-expiring addresses dropped"
            );
            self.quota_log = (0, Some(now));
        }
        true
    }

    /// Adds `who`'s claim on a row (made if new) without names.
    fn add_claim(&mut self, who: Learner, addr: IpAddr, expires: u64) {
        let row = self.rows.entry((who.policy_id, addr)).or_insert_with(|| {
            *self.policy_rows.entry(who.policy_id).or_default() += 1;
            Row::default()
        });
        // The row's only claimer so far now shares it.
        let other = (row.claims.len() == 1)
            .then(|| row.claims.first().copied())
            .flatten();
        let shared = !row.claims.is_empty();
        row.claims.insert((expires, who.cgroup_id));
        if let Some((e, cgroup_id)) = other {
            let h = self
                .holdings
                .entry(Learner { cgroup_id, ..who })
                .or_default();
            h.sole.remove(&(e, addr));
            h.shared.insert((e, addr));
        }
        let h = self.holdings.entry(who).or_default();
        if shared {
            h.shared.insert((expires, addr));
        } else {
            h.sole.insert((expires, addr));
        }
        self.claims.insert(
            (who, addr),
            Claim {
                expires,
                names: VecDeque::new(),
            },
        );
        self.expiry.insert((expires, who, addr));
    }

    /// Moves `who`'s claim from expiry `before` to the later `until`.
    fn extend_claim(&mut self, who: Learner, addr: IpAddr, before: u64, until: u64) {
        if let Some(c) = self.claims.get_mut(&(who, addr)) {
            c.expires = until;
        }
        if let Some(row) = self.rows.get_mut(&(who.policy_id, addr)) {
            row.claims.remove(&(before, who.cgroup_id));
            row.claims.insert((until, who.cgroup_id));
        }
        if let Some(h) = self.holdings.get_mut(&who) {
            if h.sole.remove(&(before, addr)) {
                h.sole.insert((until, addr));
            } else if h.shared.remove(&(before, addr)) {
                h.shared.insert((until, addr));
            }
        }
        self.expiry.remove(&(before, who, addr));
        self.expiry.insert((until, who, addr));
    }

    /// Records that `who` learned `addr` from `name`, within the per-name cap.
    fn add_name(&mut self, who: Learner, addr: IpAddr, name: &str) {
        let Some(claim) = self.claims.get_mut(&(who, addr)) else {
            return;
        };
        if claim.names.iter().any(|n| n == name) {
            // Served again: the newest of the name, so the per-name cap never drops an
            // address of the answer being sent, and the newest name of the claim.
            claim.names.retain(|n| n != name);
            claim.names.push_back(name.to_owned());
            if let Some(list) = self.by_name.get_mut(&(who, name.to_owned())) {
                list.retain(|a| *a != addr);
                list.push_back(addr);
            }
            return;
        }
        claim.names.push_back(name.to_owned());
        let oldest = (claim.names.len() > NAMES_PER_CLAIM)
            .then(|| claim.names.pop_front())
            .flatten();
        if let Some(oldest) = oldest {
            // The claim keeps its newest names; the address stays allowed (this name
            // still speaks for it), only no longer as an address of the oldest name.
            self.unname_row(who.policy_id, addr, &oldest);
            let key = (who, oldest);
            if let Some(list) = self.by_name.get_mut(&key) {
                list.retain(|a| *a != addr);
                if list.is_empty() {
                    self.by_name.remove(&key);
                }
            }
        }
        if let Some(row) = self.rows.get_mut(&(who.policy_id, addr)) {
            *row.names.entry(name.to_owned()).or_default() += 1;
        }
        let list = self.by_name.entry((who, name.to_owned())).or_default();
        list.push_back(addr);
        let mut overflow = Vec::new();
        while list.len() > self.shares.per_name {
            overflow.extend(list.pop_front());
        }
        for old in overflow {
            self.evicted += 1;
            self.forget_name(who, old, name);
        }
    }

    /// Drops `name` from `who`'s claim on an address; the claim goes when no name keeps it.
    fn forget_name(&mut self, who: Learner, addr: IpAddr, name: &str) {
        let Some(claim) = self.claims.get_mut(&(who, addr)) else {
            return;
        };
        claim.names.retain(|n| n != name);
        let empty = claim.names.is_empty();
        self.unname_row(who.policy_id, addr, name);
        if empty {
            self.drop_claim(who, addr);
        }
    }

    fn unname_row(&mut self, policy_id: u32, addr: IpAddr, name: &str) {
        if let Some(row) = self.rows.get_mut(&(policy_id, addr))
            && let Some(n) = row.names.get_mut(name)
        {
            *n -= 1;
            if *n == 0 {
                row.names.remove(name);
            }
        }
    }

    /// Forgets `who`'s claim on an address everywhere; the row goes (index and kernel
    /// map) with its last claim.
    fn drop_claim(&mut self, who: Learner, addr: IpAddr) {
        let Some(claim) = self.claims.remove(&(who, addr)) else {
            return;
        };
        for name in &claim.names {
            self.unname_row(who.policy_id, addr, name);
            let key = (who, name.clone());
            if let Some(list) = self.by_name.get_mut(&key) {
                list.retain(|a| *a != addr);
                if list.is_empty() {
                    self.by_name.remove(&key);
                }
            }
        }
        self.expiry.remove(&(claim.expires, who, addr));
        if let Some(h) = self.holdings.get_mut(&who) {
            h.sole.remove(&(claim.expires, addr));
            h.shared.remove(&(claim.expires, addr));
            if h.len() == 0 {
                self.holdings.remove(&who);
            }
        }
        let key = (who.policy_id, addr);
        let Some(row) = self.rows.get_mut(&key) else {
            return;
        };
        row.claims.remove(&(claim.expires, who.cgroup_id));
        match row.claims.len() {
            0 => {
                self.rows.remove(&key);
                if let Some(n) = self.policy_rows.get_mut(&who.policy_id) {
                    *n -= 1;
                    if *n == 0 {
                        self.policy_rows.remove(&who.policy_id);
                    }
                }
                self.maps.delete(who.policy_id, addr);
            }
            1 => {
                // The last claimer holds the row alone again.
                if let Some(&(e, cgroup_id)) = row.claims.first()
                    && let Some(h) = self.holdings.get_mut(&Learner { cgroup_id, ..who })
                    && h.shared.remove(&(e, addr))
                {
                    h.sole.insert((e, addr));
                }
            }
            _ => {}
        }
        self.dirty = true;
    }

    /// Removes claims whose expiry has passed, and rows with them (the kernel already
    /// ignores them; this frees their slots). Returns how many claims went.
    pub fn collect(&mut self, now: u64) -> usize {
        let mut gone = 0;
        while let Some(&(expires, who, addr)) = self.expiry.first()
            && expires <= now
        {
            self.drop_claim(who, addr);
            gone += 1;
        }
        gone
    }

    /// Removes every claim on an address `refused` now refuses (one the host gained
    /// since it was validated), and rows with them: the kernel allows it no longer.
    /// Returns how many claims went.
    pub fn revoke(&mut self, refused: impl Fn(IpAddr) -> bool) -> usize {
        let gone: Vec<(Learner, IpAddr)> = self
            .claims
            .keys()
            .filter(|(_, addr)| refused(*addr))
            .copied()
            .collect();
        for &(who, addr) in &gone {
            self.drop_claim(who, addr);
        }
        gone.len()
    }

    /// Whether the resolver validated `addr` for `policy_id` as an address of `name`
    /// (lower-case, no trailing dot): the egress guard's question. An address a previous
    /// agent left in the map has no names and validates none.
    pub fn validated_for(&self, policy_id: u32, addr: IpAddr, name: &str) -> bool {
        self.rows
            .get(&(policy_id, addr))
            .is_some_and(|row| row.names.contains_key(name))
    }

    /// (policy id, address) → names, for the name index file.
    pub fn names(&self) -> Vec<(u32, IpAddr, Vec<String>)> {
        self.rows
            .iter()
            .filter(|(_, row)| !row.names.is_empty())
            .map(|((p, a), row)| (*p, *a, row.names.keys().cloned().collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// The allow rows as a table of the given capacity: these tests are about who holds
    /// which row (the kernel's side is proven by the resolver's end-to-end tests).
    #[derive(Default)]
    struct Rows {
        rows: HashMap<(u32, IpAddr), u64>,
        capacity: usize,
    }

    impl AllowRows for Rows {
        fn write(&mut self, policy_id: u32, addr: IpAddr, expires: u64) -> Result<(), MapError> {
            if self.rows.len() >= self.capacity && !self.rows.contains_key(&(policy_id, addr)) {
                return Err(MapError::KeyNotFound);
            }
            self.rows.insert((policy_id, addr), expires);
            Ok(())
        }

        fn delete(&mut self, policy_id: u32, addr: IpAddr) {
            self.rows.remove(&(policy_id, addr));
        }
    }

    const POLICY: u32 = 1;
    const VICTIM: Learner = Learner {
        policy_id: POLICY,
        cgroup_id: 100,
    };

    fn attacker(n: u64) -> Learner {
        Learner {
            policy_id: POLICY,
            cgroup_id: 1000 + n,
        }
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xc612_0000 + n))
    }

    /// A policy share of 64 rows, 16 per cgroup, 4 per name; room for 1,000 rows.
    fn learned() -> Learned<Rows> {
        Learned::with_maps(
            Rows {
                capacity: 1000,
                ..Rows::default()
            },
            Shares {
                per_name: 4,
                per_policy: 64,
                per_cgroup: 16,
            },
        )
    }

    /// `who` resolves `names` names of 4 fresh addresses each, from `first`, all
    /// expiring at `expires`; returns how many answers were refused.
    fn flood(l: &mut Learned<Rows>, who: Learner, first: u32, names: u32, expires: u64) -> usize {
        (first..first + names)
            .filter(|n| {
                let addrs: Vec<IpAddr> = (0..4).map(|j| ip(1000 + n * 4 + j)).collect();
                l.learn(who, &format!("n{n}.wild.test"), &addrs, expires)
                    .is_err()
            })
            .count()
    }

    #[test]
    fn a_claim_keeps_only_its_newest_names_and_the_address_stays() {
        let mut l = learned();
        let shared = ip(7);
        l.learn(VICTIM, "victim.wild.test", &[shared], 300)
            .expect("victim learns");
        let extra = 50;
        for n in 0..NAMES_PER_CLAIM + extra {
            l.learn(
                attacker(0),
                &format!("s{n}.wild.test"),
                &[shared],
                3600 + n as u64,
            )
            .expect("learns");
        }
        let claim = l.claims.get(&(attacker(0), shared)).expect("claim");
        assert_eq!(claim.names.len(), NAMES_PER_CLAIM);
        assert!(
            !l.validated_for(POLICY, shared, "s0.wild.test"),
            "the oldest went"
        );
        let newest = format!("s{}.wild.test", NAMES_PER_CLAIM + extra - 1);
        assert!(l.validated_for(POLICY, shared, &newest));
        assert!(
            l.validated_for(POLICY, shared, "victim.wild.test"),
            "another sandbox's name of the address stays"
        );
        let row = l.rows.get(&(POLICY, shared)).expect("row");
        assert_eq!(row.names.len(), NAMES_PER_CLAIM + 1);
        assert_eq!(
            l.by_name.keys().filter(|(w, _)| *w == attacker(0)).count(),
            NAMES_PER_CLAIM
        );
        // A name served again is the claim's newest: the next new name pushes out another.
        l.learn(attacker(0), "s60.wild.test", &[shared], 9000)
            .expect("served again");
        l.learn(attacker(0), "late.wild.test", &[shared], 9000)
            .expect("learns");
        assert!(l.validated_for(POLICY, shared, "s60.wild.test"));
        assert!(!l.validated_for(POLICY, shared, "s50.wild.test"));
    }

    /// An address the host gained is revoked from every claim on it (two sandboxes'),
    /// and from the kernel; another address of the same name stays.
    #[test]
    fn revoked_addresses_leave_every_claim_and_the_kernel() {
        let mut l = learned();
        let (gained, other) = (ip(1), ip(2));
        l.learn(VICTIM, "both.test", &[gained, other], 300)
            .expect("learns");
        l.learn(attacker(0), "both.test", &[gained], 300)
            .expect("learns");
        assert_eq!(l.revoke(|a| a == gained), 2, "both claims");
        assert!(!l.validated_for(POLICY, gained, "both.test"));
        assert!(l.validated_for(POLICY, other, "both.test"));
        assert_eq!(l.maps.rows.get(&(POLICY, gained)), None);
        assert_eq!(l.maps.rows.get(&(POLICY, other)), Some(&300));
        assert_eq!(l.held(attacker(0)), 0);
        assert_eq!(l.revoke(|a| a == gained), 0, "nothing left to revoke");
    }

    #[test]
    fn a_sandbox_at_its_share_drops_only_its_own_addresses() {
        let mut l = learned();
        let victim = ip(1);
        l.learn(VICTIM, "victim.wild.test", &[victim], 300)
            .expect("victim learns");
        // Longer TTLs than the victim's: soonest-expiring first would pick the victim's.
        let refused = flood(&mut l, attacker(0), 0, 100, 3600);
        assert_eq!(refused, 0, "the attacker's answers are all served");
        assert_eq!(l.held(attacker(0)), 16, "the attacker holds its share");
        assert!(l.quota_evicted >= 400 - 16, "by trading its own");
        assert!(l.validated_for(POLICY, victim, "victim.wild.test"));
        assert_eq!(l.maps.rows.get(&(POLICY, victim)), Some(&300));
        assert_eq!(l.policy_len(POLICY), 17);
        assert_eq!(
            l.maps.rows.len(),
            17,
            "the kernel holds what the index does"
        );
    }

    #[test]
    fn many_sandboxes_fill_the_share_but_never_take_the_victims_addresses() {
        let mut l = learned();
        let victim = ip(1);
        l.learn(VICTIM, "victim.wild.test", &[victim], 300)
            .expect("victim learns");
        // Half the share (32 rows) at 16 per cgroup, then 4 each (a name's worth) for
        // the sandboxes that hold little: 2 + 8 attackers fill it.
        for a in 0..20 {
            flood(&mut l, attacker(a), a as u32 * 100, 10, 3600);
        }
        assert_eq!(l.policy_len(POLICY), 64, "the share is full");
        assert!(
            l.held(attacker(19)) <= 4,
            "late sandboxes only got a name's worth"
        );
        assert!(l.validated_for(POLICY, victim, "victim.wild.test"));
        assert!(l.maps.rows.contains_key(&(POLICY, victim)));
        // A sandbox holding nothing now has no room: refused, fail closed.
        let newcomer = attacker(99);
        let refused_before = l.share_refused;
        let refused = l.learn(newcomer, "new.wild.test", &[ip(9)], 300);
        assert!(
            matches!(refused, Err(LearnError::Share { held: 0, .. })),
            "{refused:?}"
        );
        assert!(!l.maps.rows.contains_key(&(POLICY, ip(9))));
        assert_eq!(l.share_refused, refused_before + 1);
        // The victim trades its own: its old address for the new one.
        l.learn(VICTIM, "other.wild.test", &[ip(2)], 60)
            .expect("the victim trades its own");
        assert!(!l.maps.rows.contains_key(&(POLICY, victim)));
        assert!(l.maps.rows.contains_key(&(POLICY, ip(2))));
    }

    #[test]
    fn a_victims_address_survives_to_its_ttl_and_goes_then() {
        let mut l = learned();
        l.learn(VICTIM, "victim.wild.test", &[ip(1)], 300)
            .expect("victim learns");
        flood(&mut l, attacker(0), 0, 50, 3600);
        l.collect(299);
        assert!(l.maps.rows.contains_key(&(POLICY, ip(1))), "within its TTL");
        l.collect(300);
        assert!(
            !l.maps.rows.contains_key(&(POLICY, ip(1))),
            "expired: freed"
        );
        assert!(!l.validated_for(POLICY, ip(1), "victim.wild.test"));
        assert_eq!(l.held(VICTIM), 0);
        assert_eq!(l.held(attacker(0)), 16, "the attacker's claims run on");
    }

    #[test]
    fn a_shared_address_stays_while_any_learner_holds_it() {
        let mut l = learned();
        let shared = ip(1);
        // The attacker learns it first, the victim from the same (cached) answer.
        l.learn(attacker(0), "victim.wild.test", &[shared], 300)
            .expect("attacker learns");
        l.learn(VICTIM, "victim.wild.test", &[shared], 300)
            .expect("victim learns");
        assert_eq!(l.policy_len(POLICY), 1, "one row, two claims");
        // The attacker's flood trades all its own claims, the shared one included.
        flood(&mut l, attacker(0), 0, 50, 3600);
        assert!(
            l.maps.rows.contains_key(&(POLICY, shared)),
            "the victim holds it"
        );
        assert!(l.validated_for(POLICY, shared, "victim.wild.test"));
        // A later claim keeps it longer; the row's value is the latest expiry.
        l.learn(attacker(1), "victim.wild.test", &[shared], 600)
            .expect("another learns");
        assert_eq!(l.maps.rows.get(&(POLICY, shared)), Some(&600));
        l.collect(300);
        assert!(
            l.maps.rows.contains_key(&(POLICY, shared)),
            "one learner left"
        );
        l.collect(600);
        assert!(!l.maps.rows.contains_key(&(POLICY, shared)), "none left");
        assert!(!l.validated_for(POLICY, shared, "victim.wild.test"));
    }

    #[test]
    fn a_trade_frees_a_row_only_from_addresses_the_sandbox_holds_alone() {
        let mut l = learned();
        // The attacker's share, all on rows a victim holds too: trading them frees no
        // row, so with the share full the attacker is refused rather than dropping them.
        let victims: Vec<IpAddr> = (0..16).map(ip).collect();
        for (i, a) in victims.iter().enumerate() {
            l.learn(VICTIM, &format!("v{i}.wild.test"), &[*a], 300)
                .expect("victim learns");
            l.learn(attacker(0), &format!("v{i}.wild.test"), &[*a], 3600)
                .expect("attacker shares");
        }
        for a in 1..20 {
            flood(&mut l, attacker(a), a as u32 * 100, 10, 3600);
        }
        assert_eq!(l.policy_len(POLICY), 64);
        let refused = l.learn(attacker(0), "more.wild.test", &[ip(5000)], 3600);
        assert!(
            matches!(refused, Err(LearnError::Share { .. })),
            "{refused:?}"
        );
        assert!(
            victims
                .iter()
                .all(|a| l.maps.rows.contains_key(&(POLICY, *a)))
        );
    }

    #[test]
    fn a_full_map_is_traded_against_the_sandboxs_own_rows_or_refused() {
        let mut l = learned();
        l.maps.capacity = 6;
        l.learn(VICTIM, "victim.wild.test", &[ip(1), ip(2)], 300)
            .expect("victim learns");
        l.learn(
            attacker(0),
            "a.wild.test",
            &[ip(3), ip(4), ip(5), ip(6)],
            3600,
        )
        .expect("attacker learns");
        l.learn(attacker(0), "b.wild.test", &[ip(7)], 3600)
            .expect("the attacker trades one of its own rows");
        assert_eq!(l.maps.rows.len(), 6);
        assert!(l.maps.rows.contains_key(&(POLICY, ip(1))));
        assert!(l.maps.rows.contains_key(&(POLICY, ip(2))));
        let refused = l.learn(attacker(1), "c.wild.test", &[ip(8)], 3600);
        assert!(
            matches!(refused, Err(LearnError::MapFull { .. })),
            "{refused:?}"
        );
        assert_eq!(l.full, 1);
    }

    #[test]
    fn the_per_name_cap_drops_only_the_learners_own_addresses_of_the_name() {
        let mut l = learned();
        l.learn(VICTIM, "cdn.wild.test", &[ip(1)], 300)
            .expect("victim learns");
        // The same name rotating through more addresses than the cap, asked by another.
        for round in 0..3 {
            let addrs: Vec<IpAddr> = (0..4).map(|j| ip(10 + round * 4 + j)).collect();
            l.learn(attacker(0), "cdn.wild.test", &addrs, 3600)
                .expect("attacker learns");
        }
        assert!(l.evicted >= 8);
        assert!(l.validated_for(POLICY, ip(1), "cdn.wild.test"));
        assert!(l.maps.rows.contains_key(&(POLICY, ip(1))));
        assert_eq!(l.held(attacker(0)), 4);
    }

    #[test]
    fn a_restarted_agent_keeps_what_the_pins_hold_until_it_expires() {
        let mut l = learned();
        l.adopt((0..64).map(|n| (POLICY, ip(n), 300)).collect());
        assert_eq!(l.policy_len(POLICY), 64);
        let refused = l.learn(VICTIM, "victim.wild.test", &[ip(100)], 300);
        assert!(
            matches!(refused, Err(LearnError::Share { .. })),
            "{refused:?}"
        );
        l.collect(300);
        assert_eq!(l.policy_len(POLICY), 0);
        l.learn(VICTIM, "victim.wild.test", &[ip(100)], 600)
            .expect("room again");
    }

    /// Resident memory of this process, in bytes.
    fn rss() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
        let pages: usize = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("resident pages");
        pages * 4096
    }

    /// The README's figure: memory per row (one claim, one name of 20 bytes), and per
    /// further sandbox claiming it, from the process's resident memory (nextest runs
    /// each test in a process of its own; under `cargo test` other tests' memory may
    /// add to it, hence the loose bound).
    #[test]
    fn learned_memory() {
        const ROWS: u32 = 50_000;
        let mut l = Learned::with_maps(
            Rows {
                capacity: usize::MAX,
                ..Rows::default()
            },
            Shares {
                per_name: 4,
                per_policy: usize::MAX,
                per_cgroup: usize::MAX,
            },
        );
        // The test double's own table is not the resolver's memory: filled first.
        for n in 0..ROWS {
            l.maps.rows.insert((POLICY, ip(n)), 0);
        }
        let base = rss();
        for n in 0..ROWS {
            l.learn(VICTIM, &format!("n{n:07}.example.test"), &[ip(n)], 300)
                .expect("learns");
        }
        let one = rss() - base;
        for n in 0..ROWS {
            l.learn(attacker(0), &format!("n{n:07}.example.test"), &[ip(n)], 300)
                .expect("learns");
        }
        let two = rss() - base - one;
        let (per_row, per_claim) = (one / ROWS as usize, two / ROWS as usize);
        println!("bytes per row with one claim: {per_row}; per further claim: {per_claim}");
        assert!(per_row < 4096 && per_claim < 4096, "{per_row} {per_claim}");
    }
}
