//! The resolver's cache of validated answers, per policy, name and type.
//!
//! Owns: the answers and the bound on the memory they take. An answer of a zone where
//! every name has many addresses (a CDN's, an object store's: 64, `max_ips_per_name`'s
//! default) takes ~20 KiB as hickory records. Bounded by entries alone (65,536), one
//! sandbox resolving distinct names of such a zone made the agent hold ~200 MiB per
//! 10,000 names, ~1.3 GiB at the bound: past the DaemonSet's 512 MiB limit, which kills
//! the agent and every tenant's DNS with it. So the entries are bounded by their
//! estimated size as well ([`MAX_BYTES`]), and when either bound is reached, the policy
//! whose entries take the most bytes gives all of them up: a policy that floods the cache
//! empties its own part of it, not the others' (the upstream keeps its own cache; a
//! dropped answer costs a lookup, never a wrong one).
//!
//! Must never: grow past its bounds by more than the entry being inserted.

use std::{collections::HashMap, net::IpAddr, time::Instant};

use hickory_proto::{
    op::ResponseCode,
    rr::{Record, RecordType},
};

use super::wire::EncodedAnswers;

/// Answers kept at most, in all.
pub(super) const MAX_ENTRIES: usize = 65_536;

/// Estimated bytes the answers may take, in all.
pub(super) const MAX_BYTES: usize = 16 << 20;

/// Policy id, name (lower case, without the trailing dot), type.
pub(super) type Key = (u32, String, RecordType);

#[derive(Clone)]
pub(super) struct CachedAnswer {
    /// NoError (addresses, or NODATA) or NXDomain.
    pub rcode: ResponseCode,
    pub records: Vec<Record>,
    pub addrs: Vec<IpAddr>,
    /// The answer section pre-encoded for the fast path, when it can be.
    pub wire: Option<EncodedAnswers>,
    /// When the clamped TTL runs out (the allow map entry expires with it).
    pub until: Instant,
}

/// The cache and what its entries cost, per policy and in all.
pub(super) struct AnswerCache {
    map: HashMap<Key, CachedAnswer>,
    /// Estimated bytes of each policy's entries.
    bytes: HashMap<u32, usize>,
    total: usize,
    max_entries: usize,
    max_bytes: usize,
}

/// An entry's estimated size: its structs, its records (each a hickory `Record` and the
/// heap its names and a CNAME's target may take; only A, AAAA and CNAME records are
/// kept, [`super::chain`]), addresses and pre-encoded bytes, and the table's own slot.
fn cost(key: &Key, e: &CachedAnswer) -> usize {
    let records: usize = e
        .records
        .iter()
        .map(|r| {
            let target = match &r.data {
                hickory_proto::rr::RData::CNAME(c) => c.0.len(),
                _ => 0,
            };
            size_of::<Record>() + r.name.len() + target + 16
        })
        .sum();
    size_of::<Key>()
        + size_of::<CachedAnswer>()
        + key.1.len()
        + records
        + e.addrs.len() * size_of::<IpAddr>()
        + e.wire.as_ref().map_or(0, EncodedAnswers::heap_bytes)
        + 32
}

impl AnswerCache {
    pub(super) fn new() -> Self {
        Self::with_bounds(MAX_ENTRIES, MAX_BYTES)
    }

    fn with_bounds(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            map: HashMap::new(),
            bytes: HashMap::new(),
            total: 0,
            max_entries,
            max_bytes,
        }
    }

    pub(super) fn get(&self, key: &Key) -> Option<&CachedAnswer> {
        self.map.get(key)
    }

    /// Keeps `entry` under `key` (replacing what was there), after making room: while a
    /// bound would be passed, the policy whose entries take the most bytes loses them all.
    pub(super) fn insert(&mut self, key: Key, entry: CachedAnswer) {
        if let Some(old) = self.map.remove(&key) {
            self.uncharge(key.0, cost(&key, &old));
        }
        let size = cost(&key, &entry);
        while !self.map.is_empty()
            && (self.map.len() >= self.max_entries || self.total + size > self.max_bytes)
        {
            let Some(biggest) = self
                .bytes
                .iter()
                .max_by_key(|(_, b)| **b)
                .map(|(&policy, _)| policy)
            else {
                break;
            };
            self.map.retain(|k, _| k.0 != biggest);
            let freed = self.bytes.remove(&biggest).unwrap_or(0);
            self.total = self.total.saturating_sub(freed);
        }
        *self.bytes.entry(key.0).or_default() += size;
        self.total += size;
        self.map.insert(key, entry);
    }

    fn uncharge(&mut self, policy: u32, size: usize) {
        if let Some(b) = self.bytes.get_mut(&policy) {
            *b = b.saturating_sub(size);
        }
        self.total = self.total.saturating_sub(size);
    }

    #[cfg(test)]
    fn len_of(&self, policy: u32) -> usize {
        self.map.keys().filter(|k| k.0 == policy).count()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::Ipv4Addr,
        str::FromStr as _,
        time::{Duration, Instant},
    };

    use hickory_proto::rr::{Name, RData, rdata};

    use super::*;

    fn wide(name: &str, n: u8) -> CachedAnswer {
        let owner = Name::from_str(name).expect("name");
        let records: Vec<Record> = (0..n)
            .map(|i| {
                Record::from_rdata(
                    owner.clone(),
                    60,
                    RData::A(rdata::A(Ipv4Addr::new(198, 18, 0, i))),
                )
            })
            .collect();
        CachedAnswer {
            rcode: ResponseCode::NoError,
            addrs: (0..n)
                .map(|i| IpAddr::V4(Ipv4Addr::new(198, 18, 0, i)))
                .collect(),
            wire: EncodedAnswers::encode(&records),
            records,
            until: Instant::now() + Duration::from_secs(60),
        }
    }

    fn key(policy: u32, name: &str) -> Key {
        (policy, name.into(), RecordType::A)
    }

    #[test]
    fn a_flooding_policy_empties_its_own_part_and_stays_within_the_bytes() {
        let one = cost(&key(1, "n0.wild.test"), &wide("n0.wild.test.", 64));
        assert!(one > 64 * size_of::<Record>(), "{one}");
        let mut cache = AnswerCache::with_bounds(MAX_ENTRIES, 20 * one);
        cache.insert(key(2, "victim.test"), wide("victim.test.", 1));
        for n in 0..200 {
            let name = format!("n{n}.wild.test");
            cache.insert(key(1, &name), wide(&format!("{name}."), 64));
            assert!(cache.total <= 20 * one, "{} > {}", cache.total, 20 * one);
        }
        assert!(
            cache.get(&key(2, "victim.test")).is_some(),
            "another policy's answer stays"
        );
        assert!(cache.len_of(1) > 0 && cache.len_of(1) <= 20);
        let recount: usize = cache.map.iter().map(|(k, e)| cost(k, e)).sum();
        assert_eq!(recount, cache.total, "the running total is the sum");
    }

    #[test]
    fn entries_are_bounded_too_and_replacing_one_costs_nothing_more() {
        let mut cache = AnswerCache::with_bounds(4, usize::MAX);
        for n in 0..3 {
            cache.insert(key(1, &format!("a{n}.test")), wide("a.test.", 1));
        }
        cache.insert(key(2, "b.test"), wide("b.test.", 1));
        let total = cache.total;
        cache.insert(key(2, "b.test"), wide("b.test.", 1));
        assert_eq!(cache.total, total, "a replaced entry is charged once");
        cache.insert(key(2, "c.test"), wide("c.test.", 1));
        assert_eq!(
            (cache.len_of(1), cache.len_of(2)),
            (0, 2),
            "the policy holding the most gave its entries up"
        );
    }
}
