//! `hb-agent status`: is the agent running, what is attached where, what is enrolled,
//! and the kernel's counters. Read-only.
//!
//! Its exit status says the state in one number (scripts and probes rely on it, see
//! [`EXIT_CODES`]). Enforcing means: every program the config needs has its pinned link
//! attached to `cgroup_root`, as the kernel reports it now (`bpf_link_info`), not merely
//! a pin file. An agent runs when it holds `state_dir/agent.lock`.

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::ExitCode,
    time::{Duration, Instant},
};

use aya::programs::ProgramInfo;
use hb_common::{ENROLL_LAUNCHER, pin_dirs};
use serde_json::{Value, json};

use crate::{
    agent::{self, AgentState, STATE_FILE},
    cli::maps::{cgroup_names, print_rows, row},
    config::Config,
    loader,
    maps::Maps,
};

/// The exit statuses of `status`, for `--help` and the README.
pub const EXIT_CODES: &str = "\
Exit status:
  0  the agent runs and enforces (with --wait-ready: and /readyz answered ready)
  1  error (unreadable config, …)          2  usage error
  3  no agent runs, but the programs are attached and enforce (fail-closed: no
     resolver, no broker, no new enrollments until an agent runs)
  4  an agent runs but does not enforce (a program is not attached to cgroup_root)
  5  no agent runs and nothing enforces (hb is off this node)
  6  with --wait-ready: the agent runs and enforces, but /readyz did not answer ready
     in time (the unmet conditions are printed)
Enforcing: every program the config needs has its pinned link attached to
cgroup_root, as the kernel reports it now.";

/// The state `status` reports, as an exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Enforcing = 0,
    NoAgent = 3,
    NotEnforcing = 4,
    Off = 5,
    NotReady = 6,
}

impl State {
    fn of(running: bool, enforcing: bool) -> Self {
        match (running, enforcing) {
            (true, true) => State::Enforcing,
            (false, true) => State::NoAgent,
            (true, false) => State::NotEnforcing,
            (false, false) => State::Off,
        }
    }

    fn says(self) -> &'static str {
        match self {
            State::Enforcing => "the agent runs and enforces",
            State::NoAgent => "no agent runs (the attached programs still enforce)",
            State::NotEnforcing => "the agent runs but its programs are not attached",
            State::Off => "no agent runs and nothing is attached",
            State::NotReady => "the agent enforces but is not ready",
        }
    }
}

/// Whether an agent runs, and whether the kernel enforces (see the module doc).
fn assess(config: &Config) -> (bool, bool) {
    let running = agent::agent_running(&config.agent.state_dir);
    let root_id = crate::cgroup::cgroup2_mount()
        .ok()
        .and_then(|m| crate::cgroup::cgroup_id(&m.join(config.cgroup_root())).ok());
    let enforcing = root_id
        .is_some_and(|id| loader::all_attached(&config.agent.bpffs_dir, &loader::programs(), id));
    (running, enforcing)
}

/// `GET /readyz` on `agent.metrics_listen`: `Ok` on 200, else what it said.
fn readyz(listen: SocketAddr) -> Result<(), String> {
    // A wildcard listen address is reached on loopback.
    let addr = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            SocketAddr::from(([127, 0, 0, 1], listen.port()))
        }
        ip if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, listen.port()))
        }
        _ => listen,
    };
    let timeout = Duration::from_secs(1);
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: hb\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut answer = Vec::new();
    let _ = stream.take(4096).read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        return Ok(());
    }
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").trim();
    Err(if body.is_empty() {
        format!("/readyz answered {status:?}")
    } else {
        body.to_owned()
    })
}

/// Polls until the agent runs, enforces and (with `metrics_listen` set) `/readyz`
/// answers 200, for at most `secs`; progress on stderr. The state it ended in.
fn wait_ready(config: &Config, secs: u64) -> State {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last_said = String::new();
    loop {
        let (running, enforcing) = assess(config);
        let mut state = State::of(running, enforcing);
        let mut why = state.says().to_owned();
        if state == State::Enforcing
            && let Some(listen) = config.metrics_listen()
            && let Err(unmet) = readyz(listen)
        {
            state = State::NotReady;
            why = unmet;
        }
        if state == State::Enforcing {
            eprintln!("hb-agent: ready");
            return state;
        }
        if Instant::now() >= deadline {
            eprintln!("hb-agent: not ready after {secs} s: {why}");
            return state;
        }
        if why != last_said {
            eprintln!("hb-agent: waiting for readiness: {why}");
            last_said = why;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn show(config: &Config, json: bool, wait_ready_secs: Option<u64>) -> anyhow::Result<ExitCode> {
    let waited = wait_ready_secs.map(|secs| wait_ready(config, secs));
    let state_dir = &config.agent.state_dir;
    let bpffs = &config.agent.bpffs_dir;
    let (running, enforcing) = assess(config);
    let mut outcome = State::of(running, enforcing);
    if outcome == State::Enforcing && waited == Some(State::NotReady) {
        outcome = State::NotReady;
    }
    let state: Option<AgentState> = std::fs::read(state_dir.join(STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let mut programs = Vec::new();
    let states = loader::link_states(bpffs, &loader::programs());
    for (name, link) in states {
        let info = ProgramInfo::from_pin(bpffs.join(pin_dirs::PROGS).join(name)).ok();
        programs.push(row([
            ("program", json!(name)),
            ("link_pinned", json!(link != loader::LinkState::Missing)),
            (
                "attached",
                json!(matches!(link, loader::LinkState::Attached { .. })),
            ),
            (
                "prog_id",
                info.as_ref().map_or(Value::Null, |i| json!(i.id())),
            ),
            (
                "run_count",
                info.as_ref()
                    .and_then(|i| i.run_count().into())
                    .map_or(Value::Null, |c| json!(c)),
            ),
        ]));
    }
    let attached = enforcing;
    let maps = Maps::open(bpffs).ok();
    let cgroups = cgroup_names(config);
    let mut enrolled = Vec::new();
    let mut counters = serde_json::Map::new();
    let mut suppressed = Vec::new();
    if let Some(maps) = &maps {
        let policies: HashMap<u32, String> = maps
            .loaded_policies()?
            .into_iter()
            .map(|p| (p.id, p.name))
            .collect();
        for (id, e) in maps.enrolled.iter().filter_map(|r| r.ok()) {
            enrolled.push(row([
                (
                    "cgroup",
                    cgroups.get(&id).map_or(json!(id.to_string()), |p| json!(p)),
                ),
                (
                    "policy",
                    json!(
                        policies
                            .get(&e.policy_id)
                            .cloned()
                            .unwrap_or_else(|| format!("#{}", e.policy_id))
                    ),
                ),
                (
                    "source",
                    json!(if e.flags & ENROLL_LAUNCHER != 0 {
                        "sandbox-run"
                    } else {
                        "glob"
                    }),
                ),
            ]));
        }
        for (c, v) in maps.counters()? {
            counters.insert(c.name().to_owned(), json!(v));
        }
        // Cgroups that used up their event budget: their refusals past it were
        // enforced and counted, not reported one by one.
        for (k, r) in crate::maps::event_rates(bpffs).unwrap_or_default() {
            let id = k.cgroup_id;
            if r.suppressed > 0 {
                suppressed.push(row([
                    (
                        "cgroup",
                        // A sandbox that has ended is named by the launcher's record.
                        cgroups
                            .get(&id)
                            .cloned()
                            .or_else(|| crate::cgroup::recall(state_dir, id))
                            .map_or(json!(id.to_string()), |p| json!(p)),
                    ),
                    ("cgroup_id", json!(id)),
                    ("direction", json!(crate::cli::maps::direction(k.inbound))),
                    ("events_suppressed", json!(r.suppressed)),
                    ("pending", json!(r.pending)),
                ]));
            }
        }
    }
    let resolver: Option<crate::dns::DnsStats> =
        std::fs::read(state_dir.join(crate::dns::STATS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
    let broker: Option<crate::broker::stats::BrokerStats> =
        std::fs::read(state_dir.join(crate::broker::stats::STATS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
    let guard: Option<crate::guard::GuardStats> =
        std::fs::read(state_dir.join(crate::guard::STATS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
    // The pod watcher's numbers, when `[kubernetes]` runs (written twice a second).
    let kubernetes: Option<Value> = std::fs::read(state_dir.join(crate::kube::STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    // The broker's sockets the config names, and whether each is there (a socket).
    let broker_sockets: Vec<Value> = crate::broker::socket_paths(config)
        .into_iter()
        .map(|(policy, path)| {
            json!({
                "path": path.display().to_string(),
                "policy": policy,
                "present": std::fs::symlink_metadata(&path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())),
            })
        })
        .collect();
    let attached_to = state
        .as_ref()
        .map(|s| s.cgroup_mount.join(&s.cgroup_root).display().to_string());
    if json {
        let out = json!({
            "agent_running": running,
            "exit_code": outcome as u8,
            "state": outcome.says(),
            "agent_pid": state.as_ref().filter(|_| running).map(|s| s.pid),
            "enforcing": attached,
            "attached_to": attached_to,
            "bpffs_dir": bpffs.display().to_string(),
            "programs": programs,
            "enrolled": enrolled,
            "counters": counters,
            "events_suppressed_by_cgroup": suppressed,
            "resolver": resolver,
            "broker": broker,
            "broker_sockets": broker_sockets,
            "guard": guard,
            "kubernetes": kubernetes,
        });
        println!("{}", crate::events::json_pretty(&out)?);
        return Ok(ExitCode::from(outcome as u8));
    }
    match (&state, running) {
        (Some(s), true) => println!("agent:     running (pid {}, since {})", s.pid, s.started),
        _ => println!("agent:     not running"),
    }
    println!(
        "enforcing: {}{}",
        if attached {
            "yes"
        } else {
            "NO (programs not attached to cgroup_root)"
        },
        attached_to.map(|c| format!(" on {c}")).unwrap_or_default()
    );
    println!("bpffs:     {}", bpffs.display());
    println!();
    print_rows(&programs, false);
    println!();
    println!("enrolled cgroups: {}", enrolled.len());
    if !enrolled.is_empty() {
        print_rows(&enrolled, false);
    }
    if !counters.is_empty() {
        println!();
        let rows: Vec<_> = counters
            .iter()
            .map(|(k, v)| row([("counter", json!(k)), ("value", v.clone())]))
            .collect();
        print_rows(&rows, false);
    }
    if !suppressed.is_empty() {
        println!();
        println!("events suppressed (event budget used up; refusals still enforced):");
        print_rows(&suppressed, false);
    }
    if let Some(r) = &resolver {
        println!();
        println!(
            "resolver: {} addresses learned, {} evicted (max_ips_per_name), {} evicted (max_ips_per_policy), {} answers refused with the allow map full, {} TCP connections refused (max_tcp_connections, _per_policy, _per_cgroup, or no kernel record)",
            r.learned, r.evicted, r.policy_quota_evicted, r.allow_map_full, r.tcp_refused
        );
    }
    if let Some(g) = &guard {
        println!();
        println!(
            "guard: {} connections accepted, {} passed, {} refused, {} closed at max_connections_per_policy, {} at max_connections_per_cgroup, {} closed idle, {} without a kernel record, {} open",
            g.accepted,
            g.passed,
            g.refused,
            g.busy,
            g.cgroup_busy,
            g.idle_closed,
            g.unattributed,
            g.open
        );
        if g.kernel > 0 || g.kernel_declined > 0 || g.kernel_entries > 0 {
            println!(
                "guard kernel relay: {} connections handed over, {} kept in user space (no room), {} map entries now",
                g.kernel, g.kernel_declined, g.kernel_entries
            );
        }
    }
    if let Some(b) = &broker {
        let refused: Vec<String> = b.refused.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!(
            "broker: connections refused at accept: {} ({}); closed idle: {}; scrub/sanitize calls rate-limited: {}; handle requests refused by per-caller limits: {}",
            b.refused.values().sum::<u64>(),
            if refused.is_empty() {
                "none".to_owned()
            } else {
                refused.join(", ")
            },
            b.idle_closed,
            b.text_gate_limited,
            b.handles_limited
        );
    }
    if let Some(k) = &kubernetes {
        println!();
        println!(
            "kubernetes: {} pods known, {} enforced, {} pod cgroups enrolled, {} late enrollments, {} pods frozen and killed for keeping CAP_NET_RAW (net_raw_pod), {} for running outside hb's seccomp profile (unconfined_pod)",
            k["pods_known"],
            k["pods_enforced"],
            k["cgroups_enrolled"],
            k["late_enrollments"],
            k["net_raw_pods"],
            k["unconfined_pods"]
        );
    }
    println!();
    println!("state:     {}", outcome.says());
    Ok(ExitCode::from(outcome as u8))
}
