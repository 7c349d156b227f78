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
//! A fixed cap per cgroup alone was not enough: four cgroups at a quarter each held the
//! policy's every lookup and a fifth got SERVFAIL for all its names. So a cgroup takes
//! another lookup only while it holds fewer than its policy has free
//! ([`crate::share`]): N flooding cgroups leave a newcomer about 1/(N+1) of the pool.
//!
//! Must never let one cgroup hold more than its share, nor count a lookup that ended.

use std::{collections::HashMap, sync::Arc};

use crate::share::{Refused, Share, Slot};

/// Which share a refused lookup would have exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Busy {
    /// `dns.max_upstream_lookups_per_cgroup`, or the cgroup holds as many as its
    /// policy has free.
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

/// Lookups in flight: per policy a pool of `dns.max_upstream_lookups_per_policy`,
/// shared by its cgroups under [`crate::share`]'s rule with
/// `dns.max_upstream_lookups_per_cgroup` as each cgroup's cap.
pub(super) struct Inflight {
    policies: HashMap<u32, Arc<Share<u64>>>,
}

/// One lookup's place in its policy's pool, given back when it ends.
pub(super) type Lookup = Slot<u64>;

impl Inflight {
    pub(super) fn new(
        policy_ids: impl Iterator<Item = u32>,
        per_policy: u32,
        per_cgroup: u32,
    ) -> Self {
        Self {
            policies: policy_ids
                .map(|id| (id, Share::new(per_policy, per_cgroup)))
                .collect(),
        }
    }

    /// A lookup for `cgroup` of `policy`, or which share is used up: the cgroup's
    /// (its cap, or it holds as many as its policy has free) or the policy's (none
    /// free).
    pub(super) fn take(&self, policy: u32, cgroup: u64) -> Result<Lookup, Busy> {
        let pool = self.policies.get(&policy).ok_or(Busy::Policy)?;
        pool.take(&cgroup).map_err(|refused| match refused {
            Refused::Share => Busy::Cgroup,
            Refused::Full => Busy::Policy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_gets_its_share_of_lookups_and_never_another_cgroups() {
        let inflight = Inflight::new([1, 2].into_iter(), 8, 2);
        let a1 = inflight.take(1, 7).expect("first");
        let _a2 = inflight.take(1, 7).expect("second");
        assert_eq!(inflight.take(1, 7).err(), Some(Busy::Cgroup), "at its cap");
        let _b: Vec<_> = (0..2)
            .map(|_| {
                inflight
                    .take(1, 8)
                    .expect("another cgroup has its own share")
            })
            .collect();
        let _c = inflight.take(1, 9).expect("2 held, 4 free");
        let _c2 = inflight.take(1, 9).expect("2 held, 3 free");
        let _d = inflight.take(1, 10).expect("a newcomer, 2 free");
        assert_eq!(
            inflight.take(1, 10).err(),
            Some(Busy::Cgroup),
            "1 held, 1 free: the last is left to another newcomer"
        );
        let _e = inflight.take(1, 11).expect("a newcomer takes the last");
        assert_eq!(inflight.take(1, 12).err(), Some(Busy::Policy), "none free");
        let _other = inflight
            .take(2, 9)
            .expect("another policy has its own share");
        assert_eq!(
            inflight.take(3, 9).err(),
            Some(Busy::Policy),
            "no such policy"
        );
        drop(a1);
        assert!(
            inflight.take(1, 12).is_ok(),
            "a lookup that ended is given back"
        );
    }
}
