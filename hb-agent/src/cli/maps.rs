//! `hb-agent maps list|dump`: the pinned maps, readable by people and scripts.
//! Read-only: opens the pins, never writes them.

use std::collections::HashMap;

use anyhow::{Context as _, bail};
use aya::maps::MapData;
use hb_common::{ENROLL_KUBE, ENROLL_LAUNCHER, NEVER_EXPIRES, map_names, rule};
use serde_json::{Map as JsonMap, Value, json};

use crate::{
    cgroup,
    config::Config,
    events::monotonic_ns,
    maps::{Maps, addr_of, map_pin},
};

/// Accepts `rules4`, `hb_rules4` or `HB_RULES4`.
fn canonical(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    let upper = if upper.starts_with("HB_") {
        upper
    } else {
        format!("HB_{upper}")
    };
    map_names::ALL.iter().copied().find(|n| *n == upper)
}

pub fn list(config: &Config, json: bool) -> anyhow::Result<()> {
    let bpffs = &config.agent.bpffs_dir;
    let maps = Maps::open(bpffs)?;
    let counts: HashMap<&str, usize> = HashMap::from([
        (map_names::ENROLLED, maps.enrolled.keys().count()),
        (map_names::POLICIES, maps.loaded_policies()?.len()),
        (map_names::ALLOW4, maps.allow4.keys().count()),
        (map_names::ALLOW6, maps.allow6.keys().count()),
        (map_names::RULES4, maps.rules4.keys().count()),
        (map_names::RULES6, maps.rules6.keys().count()),
        (map_names::COUNTERS, hb_common::Counter::COUNT as usize),
        (map_names::CG_STATS, maps.cg_stats.keys().count()),
        (map_names::NAT64, maps.nat64.keys().count()),
        (
            map_names::EVENT_RATE,
            crate::maps::event_rates(bpffs).map_or(0, |r| r.len()),
        ),
        (
            map_names::GUARD_FLOWS,
            crate::guard::flow::dump(bpffs).map_or(0, |r| r.len()),
        ),
        (
            map_names::DNS_FLOWS,
            crate::dns::conns::dump(bpffs, map_names::DNS_FLOWS).map_or(0, |r| r.len()),
        ),
        (
            map_names::DNS_UDP,
            crate::dns::conns::dump(bpffs, map_names::DNS_UDP).map_or(0, |r| r.len()),
        ),
        (
            map_names::LOCAL_ADDRS,
            local_addrs(bpffs).map_or(0, |r| r.len()),
        ),
    ]);
    let mut rows = Vec::new();
    for name in map_names::ALL {
        let path = map_pin(bpffs, name);
        let info = MapData::from_pin(&path)
            .and_then(|m| m.info())
            .with_context(|| format!("reading {}", path.display()))?;
        let kind = info
            .map_type()
            .map(|t| format!("{t:?}"))
            .unwrap_or_else(|_| "unknown".into());
        rows.push(row([
            ("name", json!(name)),
            ("id", json!(info.id())),
            ("type", json!(kind)),
            ("key_size", json!(info.key_size())),
            ("value_size", json!(info.value_size())),
            ("max_entries", json!(info.max_entries())),
            (
                "entries",
                counts.get(name).map_or(Value::Null, |c| json!(c)),
            ),
            ("pin", json!(path.display().to_string())),
        ]));
    }
    print_rows(&rows, json);
    if !json {
        // `entries` is `-` (JSON: null) for it; say why rather than leave it blank.
        println!("\n{SOCK_PEER_UNLISTABLE}. {DNS_NAMED_UNLISTABLE}. {GUARD_NAMED_UNLISTABLE}.");
    }
    Ok(())
}

pub fn dump(config: &Config, name: &str, json: bool) -> anyhow::Result<()> {
    // `allow`: both families, what the resolver has taught the kernel. `guard`: the
    // connections in flight through the egress guard.
    let both = name.eq_ignore_ascii_case("allow");
    let Some(map) = (if both {
        Some(map_names::ALLOW4)
    } else if name.eq_ignore_ascii_case("guard") {
        Some(map_names::GUARD_FLOWS)
    } else if name.eq_ignore_ascii_case("sock_dest") {
        // The LRU the socket storage replaced: say why there is nothing to dump.
        Some(map_names::SOCK_PEER)
    } else {
        canonical(name)
    }) else {
        bail!(
            "no map named \"{name}\"; maps: {}",
            map_names::ALL
                .iter()
                .map(|n| n.trim_start_matches("HB_").to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let bpffs = &config.agent.bpffs_dir;
    let maps = Maps::open(bpffs)?;
    let policies: HashMap<u32, String> = maps
        .loaded_policies()?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    let policy = |id: u32| {
        policies
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("#{id}"))
    };
    let cgroups = cgroup_names(config);
    let cg = |id: u64| cgroups.get(&id).cloned().map_or(Value::Null, Value::String);
    let now = monotonic_ns();
    let expiry = |e: u64| -> (Value, Value) {
        if e == NEVER_EXPIRES {
            (Value::Null, json!(false))
        } else if e <= now {
            (json!(0), json!(true))
        } else {
            (json!((e - now) / 1_000_000_000), json!(false))
        }
    };
    let mut rows = Vec::new();
    match map {
        map_names::ENROLLED => {
            for (id, e) in maps.enrolled.iter().filter_map(|r| r.ok()) {
                rows.push(row([
                    ("cgroup_id", json!(id)),
                    ("cgroup", cg(id)),
                    ("policy", json!(policy(e.policy_id))),
                    ("policy_id", json!(e.policy_id)),
                    (
                        "source",
                        json!(if e.flags & ENROLL_LAUNCHER != 0 {
                            "sandbox-run"
                        } else if e.flags & ENROLL_KUBE != 0 {
                            "kubernetes"
                        } else {
                            "glob"
                        }),
                    ),
                ]));
            }
        }
        map_names::POLICIES => {
            for p in maps.loaded_policies()? {
                rows.push(row([
                    ("id", json!(p.id)),
                    ("name", json!(p.name)),
                    ("mode", json!(if p.audit { "audit" } else { "enforce" })),
                    ("inbound", json!(p.inbound)),
                    ("icmp_echo", json!(p.icmp_echo)),
                    ("raw_sockets", json!(p.raw_sockets)),
                ]));
            }
        }
        map_names::ALLOW4 | map_names::ALLOW6 => {
            // Which names taught each address, from the running agent's resolver.
            let learned: HashMap<(u32, std::net::IpAddr), Vec<String>> =
                std::fs::read(config.agent.state_dir.join(crate::dns::NAMES_FILE))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Vec<crate::dns::NamesRow>>(&b).ok())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| ((r.policy_id, r.ip), r.names))
                    .collect();
            let mut entries: Vec<(u32, std::net::IpAddr, u64)> = Vec::new();
            if map == map_names::ALLOW4 {
                entries.extend(
                    maps.allow4
                        .iter()
                        .filter_map(|r| r.ok())
                        .map(|(k, e)| (k.policy_id, std::net::IpAddr::from(k.addr), e)),
                );
            }
            if map == map_names::ALLOW6 || both {
                entries.extend(
                    maps.allow6
                        .iter()
                        .filter_map(|r| r.ok())
                        .map(|(k, e)| (k.policy_id, addr_of(&k.addr, false), e)),
                );
            }
            for (policy_id, ip, e) in entries {
                let (left, expired) = expiry(e);
                let names = learned.get(&(policy_id, ip)).cloned().unwrap_or_default();
                rows.push(row([
                    ("policy", json!(policy(policy_id))),
                    ("ip", json!(ip.to_string())),
                    ("names", json!(names.join(","))),
                    ("expires_in_secs", left),
                    ("expired", expired),
                ]));
            }
        }
        map_names::RULES4 => {
            let mut rules: Vec<_> = maps.rules4.iter().filter_map(|r| r.ok()).collect();
            rules.sort_by_key(|(k, _)| (k.data().policy_id_be, k.data().addr, k.prefix_len()));
            for (k, v) in rules {
                let d = k.data();
                let prefix = k.prefix_len().saturating_sub(hb_common::POLICY_PREFIX_BITS);
                rows.push(row([
                    ("policy", json!(policy(u32::from_be_bytes(d.policy_id_be)))),
                    (
                        "cidr",
                        json!(format!("{}/{prefix}", std::net::Ipv4Addr::from(d.addr))),
                    ),
                    ("rule", json!(rule::name(v))),
                ]));
            }
        }
        map_names::RULES6 => {
            let mut rules: Vec<_> = maps.rules6.iter().filter_map(|r| r.ok()).collect();
            rules.sort_by_key(|(k, _)| (k.data().policy_id_be, k.data().addr, k.prefix_len()));
            for (k, v) in rules {
                let d = k.data();
                let prefix = k.prefix_len().saturating_sub(hb_common::POLICY_PREFIX_BITS);
                rows.push(row([
                    ("policy", json!(policy(u32::from_be_bytes(d.policy_id_be)))),
                    (
                        "cidr",
                        json!(format!("{}/{prefix}", std::net::Ipv6Addr::from(d.addr))),
                    ),
                    ("rule", json!(rule::name(v))),
                ]));
            }
        }
        map_names::COUNTERS => {
            for (c, v) in maps.counters()? {
                rows.push(row([("counter", json!(c.name())), ("value", json!(v))]));
            }
        }
        map_names::CG_STATS => {
            for (id, s) in maps.cgroup_stats() {
                rows.push(row([
                    ("cgroup_id", json!(id)),
                    ("cgroup", cg(id)),
                    ("pass_packets", json!(s.pass_packets)),
                    ("pass_bytes", json!(s.pass_bytes)),
                    ("drop_packets", json!(s.drop_packets)),
                    ("drop_bytes", json!(s.drop_bytes)),
                    ("audit_packets", json!(s.audit_packets)),
                    ("audit_bytes", json!(s.audit_bytes)),
                ]));
            }
        }
        map_names::NAT64 => {
            for (k, len) in maps.nat64.iter().filter_map(|r| r.ok()) {
                rows.push(row([
                    (
                        "prefix",
                        json!(format!(
                            "{}/{}",
                            std::net::Ipv6Addr::from(k.data().addr),
                            k.prefix_len()
                        )),
                    ),
                    ("embedding_len", json!(len)),
                ]));
            }
        }
        map_names::EVENT_RATE => {
            let mut rates = crate::maps::event_rates(bpffs)?;
            rates.sort_by_key(|(k, _)| (k.cgroup_id, k.inbound));
            for (k, r) in rates {
                rows.push(row([
                    ("cgroup_id", json!(k.cgroup_id)),
                    ("cgroup", cg(k.cgroup_id)),
                    ("direction", json!(direction(k.inbound))),
                    (
                        "window_age_s",
                        json!(now.saturating_sub(r.start_ns) / 1_000_000_000),
                    ),
                    ("window_events", json!(r.count)),
                    ("window_distinct", json!(r.distinct)),
                    ("pending", json!(r.pending)),
                    ("suppressed", json!(r.suppressed)),
                ]));
            }
        }
        map_names::GUARD_FLOWS => {
            let mut flows = crate::guard::flow::dump(bpffs)?;
            flows.sort_by_key(|(k, _)| (k.netns_cookie, k.server_port, k.client_port));
            for (k, o) in flows {
                rows.push(row([
                    ("netns_cookie", json!(k.netns_cookie)),
                    ("client", json!(crate::flow_key::client_of(&k).to_string())),
                    ("guard_port", json!(k.server_port)),
                    ("policy", json!(policy(o.policy_id))),
                    ("policy_id", json!(o.policy_id)),
                    ("dst", json!(o.dst.ip().to_string())),
                    ("port", json!(o.dst.port())),
                    ("cgroup_id", json!(o.cgroup_id)),
                    ("cgroup", cg(o.cgroup_id)),
                    ("pid", json!(o.pid)),
                    ("comm", json!(o.comm)),
                ]));
            }
        }
        map_names::DNS_FLOWS | map_names::DNS_UDP => {
            let mut conns = crate::dns::conns::dump(bpffs, map)?;
            conns.sort_by_key(|(k, _)| (k.netns_cookie, k.server_port, k.client_port));
            for (k, c) in conns {
                rows.push(row([
                    ("netns_cookie", json!(k.netns_cookie)),
                    ("client", json!(crate::flow_key::client_of(&k).to_string())),
                    ("resolver_port", json!(k.server_port)),
                    ("policy", json!(policy(c.policy_id))),
                    ("policy_id", json!(c.policy_id)),
                    ("nameserver", json!(c.named.to_string())),
                    ("cgroup_id", json!(c.cgroup_id)),
                    ("cgroup", cg(c.cgroup_id)),
                ]));
            }
        }
        map_names::GUARD_PORTS => {
            let ports: aya::maps::HashMap<MapData, hb_common::GuardPortKey, u32> =
                crate::maps::open_typed(bpffs, map_names::GUARD_PORTS)?;
            let mut keys: Vec<_> = ports.keys().filter_map(|r| r.ok()).collect();
            keys.sort_by_key(|k| (k.policy_id, k.port));
            for k in keys {
                rows.push(row([
                    ("policy", json!(policy(k.policy_id))),
                    ("policy_id", json!(k.policy_id)),
                    ("port", json!(k.port)),
                ]));
            }
        }
        map_names::LOCAL_ADDRS => {
            for address in local_addrs(bpffs)? {
                rows.push(row([("address", json!(address))]));
            }
        }
        map_names::EVENTS => bail!("{map} is a ring buffer; read it with `hb-agent events`"),
        map_names::SOCK_PEER => bail!("{}", SOCK_PEER_UNLISTABLE),
        map_names::DNS_ORIG => bail!("{}", DNS_NAMED_UNLISTABLE),
        map_names::GUARD_ORIG => bail!("{}", GUARD_NAMED_UNLISTABLE),
        _ => bail!("{map} holds kernel-internal state; `hb-agent maps list` shows its size"),
    }
    print_rows(&rows, json);
    Ok(())
}

/// `HB_LOCAL_ADDRS` as prefixes (IPv4 as IPv4, not mapped), sorted.
fn local_addrs(bpffs: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let trie: aya::maps::LpmTrie<MapData, [u8; 16], u32> =
        crate::maps::open_typed(bpffs, map_names::LOCAL_ADDRS)?;
    let mut keys: Vec<([u8; 16], u32)> = trie
        .keys()
        .filter_map(|k| k.ok())
        .map(|k| (k.data(), k.prefix_len()))
        .collect();
    keys.sort();
    Ok(keys
        .into_iter()
        .map(|(addr, len)| {
            let v6 = std::net::Ipv6Addr::from(addr);
            match v6.to_ipv4_mapped() {
                Some(v4) if len >= 96 => format!("{v4}/{}", len - 96),
                _ => format!("{v6}/{len}"),
            }
        })
        .collect())
}

/// Why `maps dump sock_peer` has no rows (and `maps list` no entry count for it).
pub const SOCK_PEER_UNLISTABLE: &str = "HB_SOCK_PEER is socket storage: each socket's admitted peer lives with the socket and the kernel frees it with the socket; it has no keys to list or count (user space reads a record only through a descriptor of its socket)";

/// Why `maps dump dns_named` has no rows (and `maps list` no entry count for it).
pub const DNS_NAMED_UNLISTABLE: &str = "HB_DNS_NAMED is socket storage too: the nameserver each redirected DNS socket named lives with the socket";

/// Why `maps dump guard_named` has no rows (and `maps list` no entry count for it).
pub const GUARD_NAMED_UNLISTABLE: &str = "HB_GUARD_NAMED is socket storage too: the destination each guarded socket addressed lives with the socket (`maps dump guard` lists the connections in flight)";

/// Which of a cgroup's two event budgets an `HB_EVENT_BUDGET` key names.
pub fn direction(inbound: u32) -> &'static str {
    if inbound != 0 { "inbound" } else { "outbound" }
}

/// Cgroup id → path below the mount, for cgroups under hb's root.
pub fn cgroup_names(config: &Config) -> HashMap<u64, String> {
    cgroup::cgroup2_mount()
        .ok()
        .and_then(|m| {
            cgroup::walk(
                &m,
                config.cgroup_root(),
                hb_common::limits::MAX_CGROUP_DEPTH + 1,
            )
            .ok()
        })
        .map(|t| t.into_iter().map(|f| (f.id, f.relative)).collect())
        .unwrap_or_default()
}

pub fn row<const N: usize>(fields: [(&str, Value); N]) -> JsonMap<String, Value> {
    fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// One JSON array (`--json`) or an aligned table, its text escaped
/// ([`crate::events::inert`], [`crate::events::Escaped`]).
pub fn print_rows(rows: &[JsonMap<String, Value>], json: bool) {
    if json {
        let array = Value::Array(rows.iter().cloned().map(Value::Object).collect());
        println!("{}", crate::events::inert(&array.to_string()));
        return;
    }
    let Some(first) = rows.first() else {
        println!("(empty)");
        return;
    };
    let cols: Vec<&String> = first.keys().collect();
    // A cell may hold what a sandbox chose (its process name, a pod's cgroup names):
    // shown escaped, as `hb-agent events` shows it, so a terminal runs none of it.
    let cell = |v: &Value| match v {
        Value::String(s) => crate::events::Escaped(s).to_string(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let widths: Vec<usize> = cols
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| r.get(*c).map_or(1, |v| cell(v).len()))
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let line = |vals: Vec<String>| {
        vals.iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!("{}", line(cols.iter().map(|c| c.to_uppercase()).collect()));
    for r in rows {
        println!(
            "{}",
            line(
                cols.iter()
                    .map(|c| r.get(*c).map_or("-".into(), cell))
                    .collect()
            )
        );
    }
}
