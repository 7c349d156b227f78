//! Readiness: named conditions that the subsystems set, all of which must hold for
//! `/readyz` to answer 200 (and for `hb-agent status --wait-ready` to return).
//!
//! Each subsystem owns its condition: the agent sets [`Condition::ProgramsAttached`]
//! from the pinned links before every `/readyz` (so a detached or unpinned link shows at
//! once), the resolver and the broker set theirs once they serve, and the Kubernetes
//! enrollment clears [`Condition::PodsSynced`] when it starts and sets it after its
//! initial sync (it holds while Kubernetes is off).

use std::sync::atomic::{AtomicBool, Ordering};

/// One readiness condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Every program the config needs is linked to `cgroup_root` through its pinned link.
    ProgramsAttached = 0,
    /// The resolver listens (or `dns.redirect` is off, and none is needed).
    ResolverServing = 1,
    /// The broker's socket is served.
    BrokerServing = 2,
    /// The initial list of this node's pods is enrolled (always met with Kubernetes off).
    PodsSynced = 3,
}

impl Condition {
    pub const ALL: [Condition; 4] = [
        Condition::ProgramsAttached,
        Condition::ResolverServing,
        Condition::BrokerServing,
        Condition::PodsSynced,
    ];

    /// Stable name, as `/readyz` and the `hb_ready` metric show it.
    pub const fn name(self) -> &'static str {
        match self {
            Condition::ProgramsAttached => "programs_attached",
            Condition::ResolverServing => "resolver_serving",
            Condition::BrokerServing => "broker_serving",
            Condition::PodsSynced => "pods_synced",
        }
    }
}

/// The conditions' current values.
pub struct Readiness([AtomicBool; 4]);

impl Default for Readiness {
    /// Nothing is ready but the pod sync, which only the Kubernetes enrollment withholds.
    fn default() -> Self {
        let r = Self(Default::default());
        r.set(Condition::PodsSynced, true);
        r
    }
}

impl Readiness {
    pub fn set(&self, c: Condition, met: bool) {
        self.0[c as usize].store(met, Ordering::Release);
    }

    pub fn met(&self, c: Condition) -> bool {
        self.0[c as usize].load(Ordering::Acquire)
    }

    pub fn unmet(&self) -> Vec<Condition> {
        Condition::ALL
            .into_iter()
            .filter(|c| !self.met(*c))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pod_sync_holds_before_anything_starts() {
        let r = Readiness::default();
        assert_eq!(
            r.unmet(),
            [
                Condition::ProgramsAttached,
                Condition::ResolverServing,
                Condition::BrokerServing
            ]
        );
        for c in Condition::ALL {
            assert_eq!(
                c as usize,
                Condition::ALL.iter().position(|x| *x == c).unwrap_or(99)
            );
            r.set(c, true);
        }
        assert!(r.unmet().is_empty());
        r.set(Condition::PodsSynced, false);
        assert_eq!(r.unmet(), [Condition::PodsSynced]);
    }
}
