//! What the agent tells a monitoring system: Prometheus metrics, liveness and readiness.
//!
//! Owns: every metric's name, help text and label set (here, in one place, so the list
//! in the README can be checked against one file), the readiness conditions
//! ([`readiness`]), the counters read from the pinned kernel maps at scrape time
//! ([`kernel`]) and the HTTP server on `agent.metrics_listen` ([`server`]).
//!
//! The data path calls cheap handles: a counter or histogram fetched once (a policy's DNS
//! counters when the resolver starts) or through a family's `get_or_create` with
//! `&'static str` labels (one read lock and a hash lookup, no allocation). Values that
//! cost something to compute (live handles, allow-map entries, the kernel's counters)
//! are computed only when someone scrapes, by [`Metrics::on_scrape`] hooks and the
//! kernel collector.
//!
//! Must never: put a pod name, host name, handle, cgroup path, DNS name or secret in a
//! label. Label values are policy names (a bounded set from the config, or `#<id>` for
//! an id the config no longer names), and fixed words chosen by hb.

pub mod kernel;
pub mod readiness;
pub mod server;

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex, OnceLock, PoisonError},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram, info::Info},
    registry::{Registry, Unit},
};

pub use self::readiness::{Condition, Readiness};

/// Latency buckets, in seconds: 100 µs to ~6.5 s (DNS answers from cache take tens of
/// microseconds; broker calls that reach an upstream take tens of milliseconds).
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 17)
}

fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// A refusal the agent recorded (kernel hook, resolver or guard).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `connect4`, `skb_egress`, `dns`, … (the event's `hook`).
    pub hook: String,
    pub policy: String,
    pub reason: String,
    /// `deny` or `audit`.
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsQueryLabels {
    pub policy: String,
    /// The answer's response code in lower case (`noerror`, `nxdomain`, `servfail`,
    /// `refused`, `formerr`, `notimp`, `other`), or `dropped` when none was sent.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsPathLabel {
    /// `cache` (pre-encoded answer), `local` (decided without the upstream: refused,
    /// malformed, cached), `upstream` (forwarded).
    pub path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BrokerLabels {
    /// The route template (`/v1/requests`, `/v1/handles/{handle}`, …) or `other`.
    pub endpoint: &'static str,
    pub method: &'static str,
    /// The error envelope's stable code, `ok` for a success, or `status_<n>` for an
    /// error answered outside the envelope.
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IpFamilyLabel {
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabel {
    pub step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The step a rotation closed at: `retired`, `rolled_back`, `failed`, `aborted`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabel {
    pub condition: &'static str,
}

/// The open rotations' current steps, by rotation id (ids never leave this struct).
#[derive(Default)]
struct RotationSteps(Mutex<HashMap<String, &'static str>>);

/// A computation run before each scrape (and each `/readyz`).
type ScrapeHook = Box<dyn Fn() + Send + Sync>;

/// Every metric the agent exports. One per process: [`global`].
pub struct Metrics {
    registry: Registry,
    refusals: Family<RefusalLabels, Counter>,
    refusals_unreported: Family<PolicyLabel, Counter>,
    dns_queries: Family<DnsQueryLabels, Counter>,
    dns_duration: Family<DnsPathLabel, Histogram>,
    broker_requests: Family<BrokerLabels, Counter>,
    broker_duration: Family<EndpointLabel, Histogram>,
    broker_refused: Family<ReasonLabel, Counter>,
    /// Live handles (set before each scrape by the broker's hook).
    pub handles_live: Gauge,
    /// Pods of this node the agent enforces (set by the Kubernetes enrollment).
    pub pods: Gauge,
    /// From a pod cgroup's creation to its enrollment (observed by the enrollment code).
    pub enrollment_latency: Histogram,
    /// Cgroups found with processes already in them when they were enrolled (a glob
    /// rescan counts them; so does the Kubernetes enrollment).
    pub late_enrollments: Counter,
    /// Pod cgroups frozen and killed because their pod keeps `CAP_NET_RAW` under a
    /// policy without `raw_sockets` (the Kubernetes enrollment counts them).
    pub net_raw_pods: Counter,
    /// Pod cgroups frozen and killed because a container of their pod runs outside hb's
    /// seccomp profile (`kubernetes.require_seccomp_profile`).
    pub unconfined_pods: Counter,
    allow_entries: Family<IpFamilyLabel, Gauge>,
    rotations_open: Family<StepLabel, Gauge>,
    rotations_closed: Family<OutcomeLabel, Counter>,
    rotations_finished: Counter,
    rotation_steps: RotationSteps,
    ready: Family<ConditionLabel, Gauge>,
    pub readiness: Readiness,
    hooks: Mutex<Vec<ScrapeHook>>,
    kernel: std::sync::Arc<OnceLock<kernel::KernelMaps>>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut r = Registry::with_prefix("hb");
        r.register(
            "build",
            "hb-agent's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        r.register(
            "refusals",
            "Refusals reported as events (kernel hooks, resolver, guard), by hook, policy, reason and verdict (deny, or audit: would have been refused)",
            refusals.clone(),
        );
        let refusals_unreported = Family::<PolicyLabel, Counter>::default();
        r.register(
            "refusals_unreported",
            "Refusals enforced but not reported one by one (their cgroup had used up its event budget), by policy",
            refusals_unreported.clone(),
        );
        let dns_queries = Family::<DnsQueryLabels, Counter>::default();
        r.register(
            "dns_queries",
            "Queries answered by the resolver, by policy and response code (dropped: no answer sent)",
            dns_queries.clone(),
        );
        let dns_duration =
            Family::<DnsPathLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        r.register_with_unit(
            "dns_query_duration",
            "Time from a query's arrival to its answer, by path (cache, local, upstream)",
            Unit::Seconds,
            dns_duration.clone(),
        );
        let broker_requests = Family::<BrokerLabels, Counter>::default();
        r.register(
            "broker_requests",
            "Broker requests answered, by endpoint, method and code (ok, or the error's stable code)",
            broker_requests.clone(),
        );
        let broker_duration = Family::<EndpointLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> _,
        );
        r.register_with_unit(
            "broker_request_duration",
            "Time from a broker request's headers to its answer, by endpoint",
            Unit::Seconds,
            broker_duration.clone(),
        );
        let broker_refused = Family::<ReasonLabel, Counter>::default();
        r.register(
            "broker_connections_refused",
            "Broker connections closed unanswered at accept, by reason",
            broker_refused.clone(),
        );
        let handles_live = Gauge::default();
        r.register(
            "broker_handles_live",
            "Handles issued and not yet expired, deleted or revoked",
            handles_live.clone(),
        );
        let pods = Gauge::default();
        r.register(
            "pods_enforced",
            "Pods of this node the agent enforces (Kubernetes enrollment)",
            pods.clone(),
        );
        let enrollment_latency = latency_histogram();
        r.register_with_unit(
            "enrollment_latency",
            "Time from a pod cgroup's creation to its enrollment",
            Unit::Seconds,
            enrollment_latency.clone(),
        );
        let late_enrollments = Counter::default();
        r.register(
            "late_enrollments",
            "Cgroups that already held processes when they were enrolled",
            late_enrollments.clone(),
        );
        let net_raw_pods = Counter::default();
        r.register(
            "net_raw_pods",
            "Pod cgroups frozen and killed: their pod keeps CAP_NET_RAW under a policy without raw_sockets",
            net_raw_pods.clone(),
        );
        let unconfined_pods = Counter::default();
        r.register(
            "unconfined_pods",
            "Pod cgroups frozen and killed: a container of their pod runs outside hb's seccomp profile",
            unconfined_pods.clone(),
        );
        let allow_entries = Family::<IpFamilyLabel, Gauge>::default();
        r.register(
            "allow_map_entries",
            "Addresses the resolver has validated into the allow maps (compare hb_allow_map_capacity)",
            allow_entries.clone(),
        );
        let capacity = Family::<IpFamilyLabel, Gauge>::default();
        capacity
            .get_or_create(&IpFamilyLabel { family: "ipv4" })
            .set(i64::from(hb_common::limits::ALLOW4));
        capacity
            .get_or_create(&IpFamilyLabel { family: "ipv6" })
            .set(i64::from(hb_common::limits::ALLOW6));
        r.register(
            "allow_map_capacity",
            "Capacity of the allow maps (a full map fails closed: the answer is SERVFAIL)",
            capacity,
        );
        let rotations_open = Family::<StepLabel, Gauge>::default();
        r.register(
            "rotations_open",
            "Rotations in progress, by the step they last reached",
            rotations_open.clone(),
        );
        let rotations_closed = Family::<OutcomeLabel, Counter>::default();
        r.register(
            "rotations_closed",
            "Rotations closed, by outcome (retired: done; rolled_back, failed, aborted)",
            rotations_closed.clone(),
        );
        let rotations_finished = Counter::default();
        r.register(
            "rotations_finished",
            "Rotations whose new credential became active",
            rotations_finished.clone(),
        );
        let ready = Family::<ConditionLabel, Gauge>::default();
        r.register(
            "ready",
            "Readiness conditions (1 met, 0 unmet); /readyz answers 200 when all are met",
            ready.clone(),
        );
        let kernel = std::sync::Arc::new(OnceLock::new());
        r.register_collector(Box::new(kernel::Collector(kernel.clone())));
        Self {
            registry: r,
            refusals,
            refusals_unreported,
            dns_queries,
            dns_duration,
            broker_requests,
            broker_duration,
            broker_refused,
            handles_live,
            pods,
            enrollment_latency,
            late_enrollments,
            net_raw_pods,
            unconfined_pods,
            allow_entries,
            rotations_open,
            rotations_closed,
            rotations_finished,
            rotation_steps: RotationSteps::default(),
            ready,
            readiness: Readiness::default(),
            hooks: Mutex::new(Vec::new()),
            kernel,
        }
    }

    /// Reads the kernel's counters and enrollments from these pinned maps at each scrape
    /// (the agent calls this once its maps exist).
    pub fn watch_kernel(&self, bpffs_dir: &std::path::Path) {
        match kernel::KernelMaps::open(bpffs_dir) {
            Ok(maps) => {
                let _ = self.kernel.set(maps);
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "kernel counters not exported");
            }
        }
    }

    /// Runs `hook` before every scrape and `/readyz` (for values that cost a lock or a
    /// walk to compute, which only a scrape needs).
    pub fn on_scrape(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(hook));
    }

    fn run_hooks(&self) {
        for hook in self
            .hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            hook();
        }
        for c in Condition::ALL {
            self.ready
                .get_or_create(&ConditionLabel {
                    condition: c.name(),
                })
                .set(i64::from(self.readiness.met(c)));
        }
    }

    /// The text exposition of every metric (hooks run first).
    pub fn encode(&self) -> String {
        self.run_hooks();
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        out
    }

    /// The unmet readiness conditions, after the hooks ran.
    pub fn unmet(&self) -> Vec<Condition> {
        self.run_hooks();
        self.readiness.unmet()
    }

    /// Counts an event the agent recorded (kernel, resolver or guard).
    pub fn refusal(&self, e: &crate::events::EventRecord) {
        self.refusals
            .get_or_create(&RefusalLabels {
                hook: e.hook.clone(),
                policy: e.policy.clone(),
                reason: e.reason.clone(),
                verdict: e.verdict.clone(),
            })
            .inc();
        if e.suppressed > 0 {
            self.refusals_unreported
                .get_or_create(&PolicyLabel {
                    policy: e.policy.clone(),
                })
                .inc_by(e.suppressed);
        }
    }

    /// A policy's DNS query counters, one per result, fetched once by the resolver.
    pub fn dns_counters(&self, policy: &str) -> DnsCounters {
        DnsCounters(DnsResult::ALL.map(|r| {
            self.dns_queries
                .get_or_create(&DnsQueryLabels {
                    policy: policy.to_owned(),
                    result: r.name(),
                })
                .clone()
        }))
    }

    /// The DNS latency histogram of one path (`cache`, `local`, `upstream`).
    pub fn dns_latency(&self, path: &'static str) -> Histogram {
        self.dns_duration
            .get_or_create(&DnsPathLabel { path })
            .clone()
    }

    /// One broker request answered.
    pub fn broker_request(&self, labels: &BrokerLabels, took: Duration) {
        self.broker_requests.get_or_create(labels).inc();
        self.broker_duration
            .get_or_create(&EndpointLabel {
                endpoint: labels.endpoint,
            })
            .observe(took.as_secs_f64());
    }

    /// One broker connection refused at accept.
    pub fn broker_refused(&self, reason: &'static str) {
        self.broker_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Addresses in the allow maps, by family.
    pub fn allow_entries(&self, v4: usize, v6: usize) {
        for (family, n) in [("ipv4", v4), ("ipv6", v6)] {
            self.allow_entries
                .get_or_create(&IpFamilyLabel { family })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// A rotation reached `step` (any step, open or closed; called at every step and
    /// whenever its task reads it back).
    pub fn rotation_at(&self, id: &str, step: crate::vault::Step) {
        let mut steps = self
            .rotation_steps
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before = steps.get(id).copied();
        let now = step.as_str();
        if before == Some(now) {
            return;
        }
        if let Some(b) = before {
            self.rotations_open
                .get_or_create(&StepLabel { step: b })
                .dec();
        }
        if step == crate::vault::Step::Finished {
            self.rotations_finished.inc();
        }
        if step.is_open() {
            steps.insert(id.to_owned(), now);
            self.rotations_open
                .get_or_create(&StepLabel { step: now })
                .inc();
        } else {
            steps.remove(id);
            self.rotations_closed
                .get_or_create(&OutcomeLabel { outcome: now })
                .inc();
        }
    }
}

/// What a DNS answer said (its response code), or that none was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsResult {
    NoError,
    NxDomain,
    ServFail,
    Refused,
    FormErr,
    NotImp,
    Other,
    Dropped,
}

impl DnsResult {
    pub const ALL: [DnsResult; 8] = [
        DnsResult::NoError,
        DnsResult::NxDomain,
        DnsResult::ServFail,
        DnsResult::Refused,
        DnsResult::FormErr,
        DnsResult::NotImp,
        DnsResult::Other,
        DnsResult::Dropped,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DnsResult::NoError => "noerror",
            DnsResult::NxDomain => "nxdomain",
            DnsResult::ServFail => "servfail",
            DnsResult::Refused => "refused",
            DnsResult::FormErr => "formerr",
            DnsResult::NotImp => "notimp",
            DnsResult::Other => "other",
            DnsResult::Dropped => "dropped",
        }
    }

    /// The result of a wire-format answer: its RCODE (the low four bits of the header's
    /// fourth byte, RFC 1035 section 4.1.1).
    pub fn of_reply(reply: Option<&[u8]>) -> Self {
        match reply.and_then(|r| r.get(3)).map(|b| b & 0x0f) {
            None => DnsResult::Dropped,
            Some(0) => DnsResult::NoError,
            Some(1) => DnsResult::FormErr,
            Some(2) => DnsResult::ServFail,
            Some(3) => DnsResult::NxDomain,
            Some(4) => DnsResult::NotImp,
            Some(5) => DnsResult::Refused,
            Some(_) => DnsResult::Other,
        }
    }
}

/// One policy's DNS query counters, indexed by [`DnsResult`].
#[derive(Clone)]
pub struct DnsCounters([Counter; 8]);

impl DnsCounters {
    pub fn count(&self, result: DnsResult) {
        self.0[result as usize].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_results_index_their_own_counter() {
        for (i, r) in DnsResult::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.name());
        }
        assert_eq!(DnsResult::of_reply(None), DnsResult::Dropped);
        assert_eq!(
            DnsResult::of_reply(Some(&[0, 1, 0x81, 0x83])),
            DnsResult::NxDomain
        );
        assert_eq!(
            DnsResult::of_reply(Some(&[0, 1, 0x81, 0x80])),
            DnsResult::NoError
        );
    }

    #[test]
    fn the_exposition_shows_counted_samples_with_their_labels() {
        let m = Metrics::new();
        let c = m.dns_counters("default");
        c.count(DnsResult::NxDomain);
        m.broker_request(
            &BrokerLabels {
                endpoint: "/v1/requests",
                method: "POST",
                code: "policy_denied",
            },
            Duration::from_millis(3),
        );
        let text = m.encode();
        assert!(text.contains("hb_dns_queries_total{policy=\"default\",result=\"nxdomain\"} 1"));
        assert!(text.contains(
            "hb_broker_requests_total{endpoint=\"/v1/requests\",method=\"POST\",code=\"policy_denied\"} 1"
        ));
        assert!(text.contains("hb_build_info{version="));
        assert!(text.ends_with("# EOF\n"));
    }
}
