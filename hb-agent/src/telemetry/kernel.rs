//! The kernel's side of the metrics, read from the pinned maps when someone scrapes:
//! the programs' global counters (`HB_COUNTERS`, summed over CPUs) and the enrolled
//! cgroups (`HB_ENROLLED`, counted by who enrolled them).
//!
//! Reading at scrape time costs nothing between scrapes and shows exactly what the
//! kernel counted, whether or not an event was reported. The counters belong to the
//! pins, not to this process: they keep counting across agent restarts.

use std::path::Path;

use aya::maps::{HashMap, MapData, PerCpuArray};
use hb_common::{Counter, ENROLL_LAUNCHER, Enrollment, limits, map_names};
use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use crate::maps::{MapsError, open_typed};

/// The pinned maps the collector reads.
pub struct KernelMaps {
    counters: PerCpuArray<MapData, u64>,
    enrolled: HashMap<MapData, u64, Enrollment>,
}

impl std::fmt::Debug for KernelMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KernelMaps")
    }
}

impl KernelMaps {
    pub fn open(bpffs_dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            counters: open_typed(bpffs_dir, map_names::COUNTERS)?,
            enrolled: open_typed(bpffs_dir, map_names::ENROLLED)?,
        })
    }

    fn counter(&self, c: Counter) -> u64 {
        let index = c as u32;
        if index >= self.counters.len() {
            return 0;
        }
        self.counters
            .get(&index, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

/// Registered once; reads nothing until the agent hands it the maps.
#[derive(Debug)]
pub struct Collector(pub std::sync::Arc<std::sync::OnceLock<KernelMaps>>);

/// Socket-hook decisions, with their label value.
const DECISIONS: [(Counter, &str); 6] = [
    (Counter::AllowAddr, "allow_addr"),
    (Counter::AllowCidr, "allow_cidr"),
    (Counter::DenyRange, "deny_range"),
    (Counter::DenyNotAllowed, "deny_not_allowed"),
    (Counter::DenyEmbedded, "deny_embedded"),
    (Counter::Audit, "audit"),
];

const PACKETS: [(Counter, &str); 3] = [
    (Counter::SkbPass, "pass"),
    (Counter::SkbDrop, "drop"),
    (Counter::SkbAudit, "audit"),
];

/// Unlabelled kernel counters: name, help.
const SINGLES: [(Counter, &str, &str); 4] = [
    (
        Counter::EventsLost,
        "events_lost",
        "Kernel events lost because the ring buffer was full (the refusals were still enforced)",
    ),
    (
        Counter::EventsSuppressed,
        "events_suppressed",
        "Refusals enforced but not reported: their cgroup had used up its event budget",
    ),
    (
        Counter::MapFull,
        "kernel_map_full",
        "Kernel-side map inserts that failed because the map was full (failed closed)",
    ),
    (
        Counter::DnsRedirect,
        "dns_redirects",
        "Sandbox DNS queries the kernel redirected to hb's resolver",
    ),
];

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(maps) = self.0.get() else {
            return Ok(());
        };
        {
            let mut family = encoder.encode_descriptor(
                "kernel_decisions",
                "Connects and datagrams of enrolled cgroups judged by the socket hooks, all policies, by decision",
                None,
                MetricType::Counter,
            )?;
            for (c, decision) in DECISIONS {
                ConstCounter::new(maps.counter(c))
                    .encode(family.encode_family(&DecisionLabel { decision })?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "skb_packets",
                "Packets of enrolled cgroups judged by cgroup_skb/egress, by verdict (drop: dropped)",
                None,
                MetricType::Counter,
            )?;
            for (c, verdict) in PACKETS {
                ConstCounter::new(maps.counter(c))
                    .encode(family.encode_family(&VerdictLabel { verdict })?)?;
            }
        }
        for (c, name, help) in SINGLES {
            ConstCounter::new(maps.counter(c)).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
        let (mut glob, mut launcher) = (0i64, 0i64);
        for (_, e) in maps.enrolled.iter().filter_map(Result::ok) {
            if e.flags & ENROLL_LAUNCHER != 0 {
                launcher += 1;
            } else {
                glob += 1;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "enrolled_cgroups",
                "Cgroups enrolled in the kernel's map, by who enrolled them (glob: a [[sandbox]] rule; launcher: sandbox run)",
                None,
                MetricType::Gauge,
            )?;
            for (source, n) in [("glob", glob), ("launcher", launcher)] {
                ConstGauge::new(n).encode(family.encode_family(&SourceLabel { source })?)?;
            }
        }
        ConstGauge::new(i64::from(limits::ENROLLED)).encode(encoder.encode_descriptor(
            "enrolled_cgroups_capacity",
            "Capacity of the enrolled-cgroups map",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}
