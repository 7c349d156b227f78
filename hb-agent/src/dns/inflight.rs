//! Upstream lookups in flight, held to a share per policy and per cgroup
//! (`dns.max_upstream_lookups_per_policy`, `dns.max_upstream_lookups_per_cgroup`).
//!
//! Every query the cache cannot answer holds one lookup from the moment it is sent
//! upstream until its answer (or the upstream's last timeout). Without a bound, a sandbox
//! asking for thousands of distinct names (random labels under an allowed zone) held
//! thousands at once: the agent's memory and the upstream's own limit on concurrent
//! queries were spent, and the other sandboxes' lookups were dropped upstream. The
//! cgroup is the kernel's record of the query's sender ([`super::conns`]); cgroup 0 is a
//! policy's unattributed share, held to the same bound.
//!
//! Must never let one cgroup hold more than its share, nor count a lookup that ended.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// Which share a refused lookup would have exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Busy {
    /// `dns.max_upstream_lookups_per_cgroup`.
    Cgroup,
    /// `dns.max_upstream_lookups_per_policy`.
    Policy,
}

impl Busy {
    /// The event reason (`dns_cgroup_busy`, as for TCP connections past the share).
    pub(super) fn reason(self) -> &'static str {
        match self {
            Busy::Cgroup => "dns_cgroup_busy",
            Busy::Policy => "dns_policy_busy",
        }
    }

    /// The config key whose share was reached, for the event's detail.
    pub(super) fn detail(self) -> &'static str {
        match self {
            Busy::Cgroup => "dns.max_upstream_lookups_per_cgroup reached",
            Busy::Policy => "dns.max_upstream_lookups_per_policy reached",
        }
    }
}

#[derive(Default)]
struct Held {
    policies: HashMap<u32, u32>,
    cgroups: HashMap<(u32, u64), u32>,
}

/// Lookups in flight per policy and per (policy, cgroup).
pub(super) struct Inflight {
    per_policy: u32,
    per_cgroup: u32,
    held: Arc<Mutex<Held>>,
}

impl Inflight {
    pub(super) fn new(per_policy: u32, per_cgroup: u32) -> Self {
        Self {
            per_policy,
            per_cgroup,
            held: Arc::default(),
        }
    }

    /// A lookup for `cgroup` of `policy`, or which share is used up. The cgroup's share
    /// is judged first: a sandbox past its own share is told so even when the policy's
    /// is full too.
    pub(super) fn take(&self, policy: u32, cgroup: u64) -> Result<Lookup, Busy> {
        let Ok(mut held) = self.held.lock() else {
            return Err(Busy::Policy);
        };
        if held.cgroups.get(&(policy, cgroup)).copied().unwrap_or(0) >= self.per_cgroup {
            return Err(Busy::Cgroup);
        }
        if held.policies.get(&policy).copied().unwrap_or(0) >= self.per_policy {
            return Err(Busy::Policy);
        }
        *held.cgroups.entry((policy, cgroup)).or_insert(0) += 1;
        *held.policies.entry(policy).or_insert(0) += 1;
        Ok(Lookup {
            held: self.held.clone(),
            policy,
            cgroup,
        })
    }
}

/// One lookup's place in its policy's and cgroup's counts, given back when it ends.
pub(super) struct Lookup {
    held: Arc<Mutex<Held>>,
    policy: u32,
    cgroup: u64,
}

impl Drop for Lookup {
    fn drop(&mut self) {
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        release(&mut held.cgroups, (self.policy, self.cgroup));
        release(&mut held.policies, self.policy);
    }
}

/// One fewer under `key`; the entry goes when none is left.
fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, u32>, key: K) {
    if let Some(n) = counts.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_gets_its_share_of_lookups_and_never_another_cgroups() {
        let inflight = Inflight::new(3, 2);
        let a1 = inflight.take(1, 7).expect("first");
        let _a2 = inflight.take(1, 7).expect("second");
        assert_eq!(inflight.take(1, 7).err(), Some(Busy::Cgroup));
        let _b = inflight
            .take(1, 8)
            .expect("another cgroup has its own share");
        assert_eq!(
            inflight.take(1, 9).err(),
            Some(Busy::Policy),
            "the policy's share is used up"
        );
        let _other = inflight
            .take(2, 9)
            .expect("another policy has its own share");
        drop(a1);
        assert!(
            inflight.take(1, 7).is_ok(),
            "a lookup that ended is given back"
        );
    }
}
