//! `hb-agent run`: bring the kernel in line with the config, then keep it there.
//!
//! Start-up order matters for fail-closed behaviour: maps are opened (or adopted from
//! their pins) and filled — policies, deny ranges, CIDRs, enrollments — *before* the new
//! programs are attached, and old links are retired only after the new ones are attached
//! (see `loader`). Afterwards the agent re-scans cgroups, drains kernel events and
//! forwards the programs' aya-log output to tracing until SIGTERM/SIGINT, then exits
//! leaving every pin in place: enforcement does not depend on the agent being alive.

use std::{
    collections::{HashMap, HashSet},
    fs, io,
    os::{fd::AsRawFd as _, unix::fs::DirBuilderExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use hb_common::map_names;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use crate::{
    cgroup,
    config::Config,
    enroll::{self, Rule},
    events::{self, EventLog, EventRecord},
    loader,
    maps::{self, Maps},
};

/// File below `state_dir` describing the running agent (read by `status`).
pub const STATE_FILE: &str = "agent.json";
const LOCK_FILE: &str = "agent.lock";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("hb-agent run must run as root (it loads eBPF programs and writes cgroups)")]
    NotRoot,
    #[error("{action} {path} failed")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("another hb-agent already runs with state_dir {0} (it holds agent.lock)")]
    AlreadyRunning(PathBuf),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Load(#[from] loader::LoadError),
    #[error(transparent)]
    Maps(#[from] maps::MapsError),
    #[error(transparent)]
    Enroll(#[from] enroll::EnrollError),
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsError),
    #[error(transparent)]
    Guard(#[from] crate::guard::GuardError),
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    #[error(transparent)]
    Kube(#[from] crate::kube::KubeError),
    #[error(transparent)]
    Metrics(#[from] crate::telemetry::server::ServerError),
    #[error(transparent)]
    Ports(#[from] crate::ports::PortsError),
    #[error(transparent)]
    LocalAddrs(#[from] crate::local_addrs::LocalAddrsError),
    #[error("cannot open the events ring buffer")]
    Events(#[source] aya::maps::MapError),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AgentError {
    let path = path.to_owned();
    move |source| AgentError::Io {
        action,
        path,
        source,
    }
}

/// What `status` learns about the running agent.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct AgentState {
    pub pid: u32,
    pub started: String,
    pub cgroup_mount: PathBuf,
    pub cgroup_root: String,
    pub bpffs_dir: PathBuf,
    pub programs: Vec<ProgramState>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ProgramState {
    pub program: String,
    pub prog_id: u32,
    pub replaced: bool,
}

/// Registers an fd-owning value with tokio's reactor.
fn watch<T: std::os::fd::AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `inner` owns its fd and lives inside the AsyncFd, so the fd stays open for
    // as long as it is registered.
    unsafe { AsyncFd::register(inner) }.map_err(io::Error::from)
}

pub fn is_root() -> bool {
    // SAFETY: no arguments.
    unsafe { libc::geteuid() == 0 }
}

/// Holds an exclusive flock on `state_dir/agent.lock` for as long as it lives.
struct Lock(#[expect(dead_code, reason = "held for its fd")] fs::File);

fn lock(state_dir: &Path) -> Result<Lock, AgentError> {
    let path = state_dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("opening", &path))?;
    // SAFETY: valid fd.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(AgentError::AlreadyRunning(state_dir.to_owned()));
    }
    Ok(Lock(file))
}

/// Whether an agent holds the lock in `state_dir` (for `status`).
pub fn agent_running(state_dir: &Path) -> bool {
    let Ok(file) = fs::File::open(state_dir.join(LOCK_FILE)) else {
        return false;
    };
    // SAFETY: valid fd; a shared lock we get is released when `file` closes.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) != 0 }
}

/// Everything the agent keeps between scans.
struct Running {
    config: Config,
    mount: PathBuf,
    maps: Maps,
    rules: Vec<Rule>,
    policy_names: HashMap<u32, String>,
    cgroup_paths: HashMap<u64, String>,
    /// Where `net_raw_cgroup` events go.
    events: events::EventSender,
    /// Glob-enrolled cgroups already reported for a process holding `CAP_NET_RAW`.
    net_raw_reported: HashSet<u64>,
}

impl Running {
    /// The record of a kernel event, its cgroup named. `refreshed`: whether this batch
    /// of events has re-read the cgroup tree already (once per batch at most).
    fn kernel_record(&mut self, event: &hb_common::Event, refreshed: &mut bool) -> EventRecord {
        if !*refreshed && !self.cgroup_paths.contains_key(&event.cgroup_id) {
            // A cgroup newer than the last scan (a fresh sandbox): name it now.
            self.refresh_paths();
            *refreshed = true;
        }
        if !self.cgroup_paths.contains_key(&event.cgroup_id)
            && let Some(path) = cgroup::recall(&self.config.agent.state_dir, event.cgroup_id)
        {
            // A sandbox that ended before its events were read.
            self.cgroup_paths.insert(event.cgroup_id, path);
        }
        events::render(event, &self.policy_names, &self.cgroup_paths)
    }

    /// The record of `n` refusals of `cgroup_id` no kernel event carried, its policy
    /// (`policy_id`, or the enrolled map's) and path named.
    fn counted_record(&mut self, cgroup_id: u64, policy_id: Option<u32>, n: u64) -> EventRecord {
        let policy_id = policy_id.or_else(|| {
            self.maps
                .enrolled
                .get(&cgroup_id, 0)
                .ok()
                .map(|e| e.policy_id)
        });
        let policy = policy_id.map_or_else(String::new, |id| {
            self.policy_names
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("#{id}"))
        });
        if !self.cgroup_paths.contains_key(&cgroup_id)
            && let Some(path) = cgroup::recall(&self.config.agent.state_dir, cgroup_id)
        {
            self.cgroup_paths.insert(cgroup_id, path);
        }
        self.name_cgroup(events::counted_record(cgroup_id, policy, n))
    }

    /// A record of the resolver or the guard, its cgroup named when its id is known.
    fn name_cgroup(&mut self, mut record: EventRecord) -> EventRecord {
        if record.cgroup.is_none() && record.cgroup_id != 0 {
            if !self.cgroup_paths.contains_key(&record.cgroup_id) {
                self.refresh_paths();
            }
            record.cgroup = self.cgroup_paths.get(&record.cgroup_id).cloned();
        }
        record
    }

    fn refresh_paths(&mut self) {
        let max = hb_common::limits::MAX_CGROUP_DEPTH + 1;
        if let Ok(tree) = cgroup::walk(&self.mount, self.config.cgroup_root(), max) {
            self.cgroup_paths = tree.into_iter().map(|f| (f.id, f.relative)).collect();
        }
    }

    fn rescan(&mut self) -> Result<(), AgentError> {
        let (changes, tree) = enroll::reconcile(
            &mut self.maps,
            &self.mount,
            self.config.cgroup_root(),
            &self.rules,
        )?;
        for (path, policy) in &changes.enrolled {
            tracing::info!(cgroup = %events::Escaped(path), %policy, "enrolled");
            if cgroup::populated(&self.mount.join(path)) {
                // Its processes ran unenforced until now: the window a glob leaves.
                crate::telemetry::global().late_enrollments.inc();
                tracing::warn!(cgroup = %events::Escaped(path), %policy, "late_enrollment: processes ran in the cgroup before it was enrolled");
            }
        }
        if changes.abandoned > 0 {
            tracing::info!(
                count = changes.abandoned,
                "cgroups of killed sandbox launchers removed"
            );
        }
        if changes.removed > 0 {
            tracing::info!(
                count = changes.removed,
                "enrollments removed (cgroup gone or no longer matched)"
            );
        }
        for path in &changes.too_deep {
            tracing::error!(cgroup = %events::Escaped(path), max = hb_common::limits::MAX_CGROUP_DEPTH, "matches a [[sandbox]] glob but is too deep to enforce; NOT enrolled");
        }
        self.report_net_raw(&tree);
        self.cgroup_paths = tree.into_iter().map(|f| (f.id, f.relative)).collect();
        let alive = self.cgroup_paths.keys().copied().collect();
        cgroup::forget_old(
            &self.config.agent.state_dir,
            &alive,
            Duration::from_secs(300),
        );
        Ok(())
    }
}

impl Running {
    /// Detection only: a process whose bounding set holds `CAP_NET_RAW`, in a cgroup a
    /// `[[sandbox]]` glob enrolled (or below one), can write frames through a packet
    /// socket that no cgroup program sees. There is no pod spec to refuse it by (the
    /// Kubernetes enrollment does that), so each such cgroup is reported once (event
    /// `net_raw_cgroup`, a warning), nothing more.
    fn report_net_raw(&mut self, tree: &[cgroup::Found]) {
        let alive: HashSet<u64> = tree.iter().map(|f| f.id).collect();
        self.net_raw_reported.retain(|id| alive.contains(id));
        let globbed: Vec<(&cgroup::Found, u32)> = tree
            .iter()
            .filter_map(|f| {
                let e = self.maps.enrolled.get(&f.id, 0).ok()?;
                (e.flags & hb_common::ENROLL_GLOB != 0).then_some((f, e.policy_id))
            })
            .collect();
        for f in tree {
            let Some((enrolled, policy_id)) = globbed.iter().find(|(g, _)| {
                f.relative == g.relative
                    || f.relative
                        .strip_prefix(&g.relative)
                        .is_some_and(|rest| rest.starts_with('/'))
            }) else {
                continue;
            };
            if self.net_raw_reported.contains(&enrolled.id) {
                continue;
            }
            let Some(pid) = cgroup::net_raw_holder(&self.mount.join(&f.relative)) else {
                continue;
            };
            self.net_raw_reported.insert(enrolled.id);
            let policy = self
                .policy_names
                .get(policy_id)
                .cloned()
                .unwrap_or_else(|| format!("#{policy_id}"));
            tracing::warn!(cgroup = %events::Escaped(&f.relative), %policy, pid, "a process in a glob-enrolled cgroup may hold CAP_NET_RAW: its packet sockets pass every hook (reported only; drop NET_RAW there)");
            let comm = fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim().to_owned())
                .unwrap_or_default();
            self.events.try_send(EventRecord {
                policy,
                cgroup_id: f.id,
                cgroup: Some(f.relative.clone()),
                pid,
                tid: pid,
                comm,
                detail: Some(
                    "CAP_NET_RAW in the bounding set: packet sockets pass every hook; \
                     detection only, drop NET_RAW from this cgroup's processes"
                        .to_owned(),
                ),
                ..events::own_record("enroll", "audit", "net_raw_cgroup", 0)
            });
        }
    }
}

/// Raises the open-file limit's soft value to its hard one. Every sandbox TCP DNS
/// connection, broker caller and map costs a descriptor; the usual soft default (1024)
/// ran out under one sandbox's load while the hard limit allowed far more.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let soft = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) } == 0 {
            tracing::info!(from = soft, to = lim.rlim_max, "open-file limit raised");
        } else {
            tracing::warn!(error = %io::Error::last_os_error(), "cannot raise the open-file limit");
        }
    }
}

/// Gives every exit the rules of `scrub.rules_files` (compiled when the config was
/// loaded), and says which of them cannot run.
fn install_scrub_rules(config: &Config) {
    let rules = &config.scrub.rules;
    for report in rules.reports() {
        for note in &report.notes {
            tracing::warn!(file = %report.path.display(), "scrub rule file: {note}");
        }
        for r in report.unrunnable() {
            tracing::warn!(file = %report.path.display(), rule = %r.id, reason = %r.notes.join("; "), "scrub rule not run");
        }
        tracing::info!(file = %report.path.display(), runnable = report.runnable(), rules = report.rules.len(), "scrub rule file loaded");
    }
    if !rules.is_empty() {
        crate::scrub::global().set_rules(std::sync::Arc::clone(rules));
    }
}

pub async fn run(config: Config) -> Result<(), AgentError> {
    if !is_root() {
        return Err(AgentError::NotRoot);
    }
    raise_nofile_limit();
    install_scrub_rules(&config);
    let state_dir = config.agent.state_dir.clone();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&state_dir)
        .map_err(io_err("creating", &state_dir))?;
    let _lock = lock(&state_dir)?;
    // Served from the start: /healthz answers while the rest comes up, and /readyz
    // names what is not up yet.
    let _metrics = config
        .metrics_listen()
        .map(crate::telemetry::server::start)
        .transpose()?;
    let telemetry = crate::telemetry::global();

    let mount = cgroup::cgroup2_mount()?;
    let root = config.cgroup_root().to_owned();
    let root_path = cgroup::create(&mount, &root)?;
    let bpffs = config.agent.bpffs_dir.clone();
    loader::ensure_bpffs(&bpffs)?;
    let mut ebpf = loader::load(&bpffs)?;

    // Fill the maps before anything new is attached.
    let mut maps = Maps::open(&bpffs)?;
    let ids = maps.sync_policies(&config)?;
    maps.sync_rules(&config, &ids)?;
    maps.sync_nat64(&config)?;
    // Before the resolver adopts what the pinned allow maps hold.
    for policy in maps.purge_narrowed(&config, &ids, &state_dir)? {
        tracing::info!(%policy, "policy resolves less than at the last start: its validated addresses cleared");
    }
    telemetry.watch_kernel(&bpffs);
    // The ports the kernel redirects sandboxes to are never handed out as ephemeral
    // ports, so no sandbox holds one while the agent is down (`ports`).
    let mut redirected = Vec::new();
    if config.dns.redirect {
        redirected.push(crate::ports::policy_ports(config.dns_listen().port()));
    }
    if config.guard_in_use() {
        redirected.push(crate::ports::policy_ports(config.guard_listen().port()));
    }
    crate::ports::reserve(&redirected, &config.agent.state_dir)?;
    // The resolver listens before the kernel sends it anything.
    let (dns_events_tx, mut dns_events) = crate::events::EventSender::channel(1024);
    let dropped_events = dns_events_tx.dropped();
    // The addresses a sandbox beside the agent may send from (`HB_LOCAL_ADDRS`), and
    // whom the resolver's listeners answer; kept current from rtnetlink.
    let local_addrs =
        crate::local_addrs::LocalAddrs::start(&bpffs, config.egress.exceptions.clone())?;
    let dns = if config.dns.redirect {
        let service = crate::dns::start(
            &config,
            &ids,
            &bpffs,
            dns_events_tx.clone(),
            local_addrs.clone(),
        )
        .await?;
        tracing::info!(listen = %config.dns_listen(), policies = ids.len(), "resolver listening (policy N on port + N)");
        Some(service)
    } else {
        None
    };
    if let Some(service) = &dns {
        let learned = service.learned();
        telemetry.on_scrape(move || {
            if let Ok(l) = learned.lock() {
                let (v4, v6) = l.family_counts();
                crate::telemetry::global().allow_entries(v4, v6);
            }
        });
    }
    // Listening (or not needed: with `dns.redirect` off no sandbox query comes here).
    telemetry
        .readiness
        .set(crate::telemetry::Condition::ResolverServing, true);
    maps.set_dns(config.dns.redirect, config.dns_listen())?;
    maps.set_host_netns(own_netns_cookie()?)?;
    maps.set_metrics_port(config.metrics_listen().map_or(0, |a| a.port()))?;
    maps.set_sockets_max(config.sandbox_defaults.sockets_max)?;
    maps.set_sockets_node_max(
        config
            .sandbox_defaults
            .sockets_node_max(ephemeral_port_range()?),
    )?;
    // The guard listens before the kernel sends it anything. Until it does, its ports are
    // known (no sandbox may bind them) but not pointed at: a guarded connect meanwhile
    // is refused (`guard_down`), never sent direct.
    maps.set_guard(false, config.guard_listen())?;
    maps.sync_guard_ports(&config, &ids)?;
    let guard = if config.guard_in_use() {
        let service = crate::guard::start(
            &config,
            &mut ebpf,
            &ids,
            &bpffs,
            dns.as_ref().map(crate::dns::DnsService::learned),
            dns_events_tx.clone(),
        )
        .await?;
        tracing::info!(listen = %config.guard_listen(), "egress guard listening (policy N on port + N)");
        Some(service)
    } else {
        None
    };
    maps.set_guard(guard.is_some(), config.guard_listen())?;
    // Pod enrollment: pods of this node registered from the API, their cgroups enrolled
    // as they appear. Started before the programs attach, so the pods already running
    // are enrolled as early as the initial sync allows.
    let _kube_stats = if config.kubernetes.enabled {
        // Not ready until the pods of this node are known and their cgroups enrolled.
        crate::telemetry::global()
            .readiness
            .set(crate::telemetry::Condition::PodsSynced, false);
        Some(
            crate::kube::start(crate::kube::Inputs {
                config: &config,
                policy_ids: &ids,
                bpffs: &bpffs,
                mount: &mount,
                events: dns_events_tx.clone(),
                dns: dns.as_ref().map(crate::dns::DnsService::pod_server),
                guard: guard.as_ref().map(crate::guard::GuardService::pod_server),
            })
            .await?,
        )
    } else {
        None
    };
    let glob_events = dns_events_tx.clone();
    drop(dns_events_tx);
    let rules = config
        .sandboxes
        .iter()
        .map(|s| Rule {
            #[expect(clippy::unwrap_used, reason = "validated by Config::parse")]
            pattern: glob::Pattern::new(s.cgroup.get_ref().trim_matches('/')).unwrap(),
            policy_id: ids[s.policy.get_ref()],
            policy: s.policy.get_ref().clone(),
        })
        .collect();
    let mut running = Running {
        policy_names: ids.iter().map(|(n, id)| (*id, n.clone())).collect(),
        config,
        mount: mount.clone(),
        maps,
        rules,
        cgroup_paths: HashMap::new(),
        events: glob_events,
        net_raw_reported: HashSet::new(),
    };
    running.rescan()?;

    test_hold_before_attach();
    let attached = loader::attach(&mut ebpf, &bpffs, &root_path, &loader::programs())?;
    for a in &attached {
        tracing::info!(
            program = a.program,
            prog_id = a.prog_id,
            replaced_previous = a.replaced,
            "attached"
        );
    }
    // Enforcing means every link the config needs is attached to the root, as the
    // kernel reports it now (an uninstall or a removed cgroup shows at once).
    {
        let root_id = cgroup::cgroup_id(&root_path)?;
        let programs = loader::programs();
        let bpffs = bpffs.clone();
        telemetry.on_scrape(move || {
            crate::telemetry::global().readiness.set(
                crate::telemetry::Condition::ProgramsAttached,
                loader::all_attached(&bpffs, &programs, root_id),
            );
        });
    }
    let state = AgentState {
        pid: std::process::id(),
        started: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        cgroup_mount: mount,
        cgroup_root: root.clone(),
        bpffs_dir: bpffs.clone(),
        programs: attached
            .iter()
            .map(|a| ProgramState {
                program: a.program.to_owned(),
                prog_id: a.prog_id,
                replaced: a.replaced,
            })
            .collect(),
    };
    let state_path = state_dir.join(STATE_FILE);
    fs::write(
        &state_path,
        serde_json::to_vec_pretty(&state)
            .map_err(io::Error::other)
            .map_err(io_err("encoding", &state_path))?,
    )
    .map_err(io_err("writing", &state_path))?;

    // aya-log: the programs may log rare conditions through it (none per event: a full
    // ring buffer is counted, and `report_lost` logs the count once per interval).
    let mut logger = match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(l) => watch(l).ok(),
        // No program logs anything today: the object then has no log map at all.
        Err(aya_log::Error::MapNotFound) => None,
        Err(e) => {
            tracing::warn!(error = %e, "eBPF log forwarding unavailable");
            None
        }
    };

    let ring = maps::open_map(&bpffs, map_names::EVENTS)?;
    let ring: RingBuf<MapData> = ring.try_into().map_err(AgentError::Events)?;
    let mut ring = watch(ring).map_err(io_err("polling", &bpffs))?;
    // Every recorded event also goes to the broker's event stream (`GET /v1/events`).
    let (event_stream, _) =
        tokio::sync::broadcast::channel::<std::sync::Arc<crate::events::EventRecord>>(1024);
    let _broker = crate::broker::start(crate::broker::BrokerInputs {
        config: &running.config,
        cgroup_mount: &running.mount,
        policy_names: running.policy_names.clone(),
        events: event_stream.clone(),
        local_addrs: local_addrs.clone(),
    })?;
    telemetry
        .readiness
        .set(crate::telemetry::Condition::BrokerServing, true);
    let event_log = EventLog::open(&state_dir, running.config.agent.events_file_max_bytes)
        .map_err(io_err("opening events file in", &state_dir))?;

    let mut term = tokio::signal::unix::signal(SignalKind::terminate())
        .map_err(io_err("installing SIGTERM handler", Path::new("-")))?;
    let mut int = tokio::signal::unix::signal(SignalKind::interrupt())
        .map_err(io_err("installing SIGINT handler", Path::new("-")))?;
    let mut tick = tokio::time::interval(Duration::from_millis(
        running.config.agent.rescan_interval_ms,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gc = tokio::time::interval(Duration::from_secs(1));
    let mut gc_rounds: u64 = 0;
    let mut sinks = Sinks {
        tally: events::Tally::default(),
        log: event_log,
        stream: event_stream,
    };
    let mut agent_budgets = events::AgentBudgets::default();
    // The kernel's held-back refusals and the agent's own, written every second.
    let mut held = maps::HeldEvents::open(&bpffs)?;
    let mut uncarried = events::Uncarried::default();
    let mut held_tick = tokio::time::interval(Duration::from_secs(1));
    held_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lost = 0;
    let mut summary = tokio::time::interval(events::SUMMARY_INTERVAL);
    summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    tracing::info!(cgroup = %root_path.display(), bpffs = %bpffs.display(), policies = running.policy_names.len(), "ready: enforcing");

    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            // The resolver's and the guard's events (names refused, rebinding attempts,
            // names that do not fit the address, methods refused).
            Some(record) = dns_events.recv() => {
                for record in agent_budgets.admit(record, std::time::Instant::now()) {
                    sinks.write(running.name_cgroup(record));
                }
            }
            // Refusals held back past their budgets: the kernel's (destinations new to
            // the window past a cgroup's caps) and the resolver's and guard's (names past
            // the burst), each written once with its count; and the count of the
            // resolver's and guard's events dropped at a full queue.
            _ = held_tick.tick() => {
                let mut refreshed = false;
                for event in held.take() {
                    sinks.write(running.kernel_record(&event, &mut refreshed));
                }
                let budgets = maps::event_rates(&bpffs).unwrap_or_default();
                for (cgroup_id, policy_id, n) in uncarried.due(&budgets) {
                    sinks.write(running.counted_record(cgroup_id, policy_id, n));
                }
                for record in agent_budgets.take_due(std::time::Instant::now()) {
                    sinks.write(running.name_cgroup(record));
                }
                // Events the queue above had no room for: one record per hook and
                // second, outside any budget, so the trail says something was lost.
                for (hook, count) in dropped_events.take() {
                    sinks.write(events::dropped_record(&hook, count));
                }
            }
            // Expired allow-map entries, the name index for `maps dump allow4`, and the
            // resolver's and the guard's counters for `status`.
            _ = gc.tick(), if dns.is_some() || guard.is_some() => {
                if let Some(service) = &dns {
                    gc_rounds += 1;
                    service.housekeeping(&state_dir, gc_rounds.is_multiple_of(30));
                }
                if let Some(service) = &guard {
                    service.housekeeping(&state_dir);
                }
            }
            // One log line per cgroup refused since the last summary.
            _ = summary.tick() => {
                sinks.tally.flush(&maps::event_rates(&bpffs).unwrap_or_default());
                lost = report_lost(&running.maps, lost);
            }
            // New cgroups matching [[sandbox]] globs, and gone ones.
            _ = tick.tick() => {
                if let Err(e) = running.rescan() {
                    tracing::error!(error = %events::Escaped(&crate::error_chain(&e)), "cgroup rescan failed");
                }
            }
            // Kernel refusals.
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(io_err("polling", &bpffs))?;
                let rb = guard.get_inner_mut();
                let mut refreshed = false;
                while let Some(item) = rb.next() {
                    let Some(mut event) = events::decode(&item) else { continue };
                    uncarried.carry(&mut event);
                    sinks.write(running.kernel_record(&event, &mut refreshed));
                }
                guard.clear_ready();
            }
            // Log lines from the programs (aya-log), forwarded into tracing via `log`.
            guard = async { logger.as_mut().expect("guarded").readable_mut().await }, if logger.is_some() => {
                if let Ok(mut guard) = guard {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            }
        }
    }
    sinks
        .tally
        .flush(&maps::event_rates(&bpffs).unwrap_or_default());
    tracing::info!("shutting down; programs, links and maps stay pinned and keep enforcing");
    Ok(())
}

/// Where every event the agent records goes: its log (each at DEBUG; at INFO the
/// tally's summary, one line per cgroup and interval), the metrics, the events file and
/// the broker's event stream.
struct Sinks {
    tally: events::Tally,
    log: EventLog,
    stream: tokio::sync::broadcast::Sender<std::sync::Arc<EventRecord>>,
}

impl Sinks {
    fn write(&mut self, record: EventRecord) {
        tracing::debug!(target: "hb::event", "{record}");
        crate::telemetry::global().refusal(&record);
        self.tally.add(&record);
        if let Err(e) = self.log.append(&record) {
            tracing::error!(error = %e, "cannot write events file");
        }
        let _ = self.stream.send(std::sync::Arc::new(record));
    }
}

/// Test aid, debug builds only: start-up waits here, before anything is attached, until
/// the file named by `HB_TEST_HOLD_BEFORE_ATTACH` exists (so a test can see the agent
/// running and not yet ready: `/readyz` 503, `status` exit 4).
fn test_hold_before_attach() {
    #[cfg(debug_assertions)]
    if let Some(path) = std::env::var_os("HB_TEST_HOLD_BEFORE_ATTACH") {
        tracing::info!(file = ?path, "holding before attaching (test aid)");
        while !Path::new(&path).exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Logs how many kernel events the full ring buffer cost since the last call (once per
/// summary interval at most, rather than once per event). Returns the new total.
fn report_lost(maps: &Maps, before: u64) -> u64 {
    let Ok(counters) = maps.counters() else {
        return before;
    };
    let now = counters
        .iter()
        .find(|(c, _)| *c == hb_common::Counter::EventsLost)
        .map_or(before, |(_, v)| *v);
    if now > before {
        tracing::warn!(
            lost = now - before,
            total = now,
            "events ring buffer full: kernel events lost (refusals still enforced)"
        );
    }
    now
}

/// The ephemeral port range of the agent's network namespace, as read at start (a
/// range changed later is not followed: the node's share of it stays as computed).
fn ephemeral_port_range() -> Result<(u16, u16), AgentError> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_local_port_range";
    let text = fs::read_to_string(PATH).map_err(io_err("reading", Path::new(PATH)))?;
    let mut ends = text.split_whitespace().map(str::parse::<u16>);
    match (ends.next(), ends.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => Ok((lo, hi)),
        _ => Err(io_err("parsing", Path::new(PATH))(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not two ports: {text:?}"),
        ))),
    }
}

/// The cookie of the network namespace the agent runs in (of a socket made for asking).
fn own_netns_cookie() -> Result<u64, AgentError> {
    use std::os::fd::AsFd as _;
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").map_err(io_err(
        "binding a UDP socket to read the network namespace cookie of",
        Path::new("127.0.0.1:0"),
    ))?;
    crate::flow_key::netns_cookie(probe.as_fd()).map_err(io_err(
        "reading the network namespace cookie (SO_NETNS_COOKIE) of",
        Path::new("a UDP socket"),
    ))
}
