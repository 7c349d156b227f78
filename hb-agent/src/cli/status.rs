//! `hb-agent status`: is the agent running, what is attached where, what is enrolled,
//! and the kernel's counters. Read-only.

use std::collections::HashMap;

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

pub fn show(config: &Config, json: bool) -> anyhow::Result<()> {
    let state_dir = &config.agent.state_dir;
    let bpffs = &config.agent.bpffs_dir;
    let running = agent::agent_running(state_dir);
    let state: Option<AgentState> = std::fs::read(state_dir.join(STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let mut programs = Vec::new();
    for (name, pinned) in loader::pinned_links(bpffs, &loader::programs_for(config)) {
        let info = ProgramInfo::from_pin(bpffs.join(pin_dirs::PROGS).join(name)).ok();
        programs.push(row([
            ("program", json!(name)),
            ("link_pinned", json!(pinned)),
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
    let attached = programs.iter().all(|p| p["link_pinned"] == json!(true));
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
    let attached_to = state
        .as_ref()
        .map(|s| s.cgroup_mount.join(&s.cgroup_root).display().to_string());
    if json {
        let out = json!({
            "agent_running": running,
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
            "guard": guard,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
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
            "NO (programs not attached)"
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
            "resolver: {} addresses learned, {} evicted (max_ips_per_name), {} evicted (max_ips_per_policy), {} answers refused with the allow map full, {} TCP connections refused (max_tcp_connections)",
            r.learned, r.evicted, r.policy_quota_evicted, r.allow_map_full, r.tcp_refused
        );
    }
    if let Some(g) = &guard {
        println!();
        println!(
            "guard: {} connections accepted, {} passed, {} refused, {} closed at max_connections_per_policy, {} without a kernel record, {} open",
            g.accepted, g.passed, g.refused, g.busy, g.unattributed, g.open
        );
    }
    if let Some(b) = &broker {
        let refused: Vec<String> = b.refused.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!(
            "broker: connections refused at accept: {} ({}); closed idle: {}; scrub/sanitize calls rate-limited: {}",
            b.refused.values().sum::<u64>(),
            if refused.is_empty() {
                "none".to_owned()
            } else {
                refused.join(", ")
            },
            b.idle_closed,
            b.text_gate_limited
        );
    }
    Ok(())
}
