//! Typed access to the pinned maps, shared by the agent, the sandbox launcher and the
//! inspection CLI (which all open the same pins, from separate processes).
//!
//! Owns: opening pins by name, key/value conversions, and the reconciliation of policy
//! table, deny/exception tries and static CIDRs with a config. Must never: leave a gap
//! while reconciling — it always inserts what is wanted before it removes what is stale.

use std::{
    collections::{HashMap as StdHashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use aya::maps::{
    Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuHashMap, lpm_trie::Key,
};
use hb_common::{
    Allow4Key, Allow6Key, CgroupStats, Counter, DnsConfig, Enrollment, EventRate, EventRateKey,
    EventSeenKey, GuardConfig, GuardPortKey, HeldEvent, Nat64Key, POLICY_AUDIT, POLICY_GUARD,
    POLICY_GUARD_ALL, POLICY_ICMP_ECHO, POLICY_IN_USE, POLICY_INBOUND, POLICY_PREFIX_BITS,
    POLICY_QUIC, POLICY_RAW_SOCKETS, PolicyCidr4, PolicyCidr6, PolicyInfo, limits, map_names,
    pin_dirs, rule,
};
use ipnet::IpNet;

use crate::config::{Config, PolicyMode};

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error(
        "cannot open pinned map {path}: is hb-agent running (or has it run) with this bpffs_dir?"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: MapError,
    },
    #[error("map {map}: {op} failed")]
    Op {
        map: &'static str,
        op: &'static str,
        #[source]
        source: MapError,
    },
    #[error(
        "no free slot in the kernel's policy table ({} slots)",
        limits::POLICIES
    )]
    PolicyTableFull,
}

type Result<T> = std::result::Result<T, MapsError>;

fn op(map: &'static str, op: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Op { map, op, source }
}

/// Path of a pinned map.
pub fn map_pin(bpffs_dir: &Path, name: &str) -> PathBuf {
    bpffs_dir.join(pin_dirs::MAPS).join(name)
}

/// Opens one pinned map as aya's generic [`Map`].
pub fn open_map(bpffs_dir: &Path, name: &str) -> Result<Map> {
    let path = map_pin(bpffs_dir, name);
    MapData::from_pin(&path)
        .and_then(Map::from_map_data)
        .map_err(|source| MapsError::Open { path, source })
}

/// Adds one to `HB_GENERATION` (`generation`, opened with [`open_typed`]): every
/// kernel-side cache of a verdict (the per-CPU flow cache) misses once.
pub fn bump_generation(generation: &mut Array<MapData, u64>) -> Result<()> {
    let now = generation
        .get(&0, 0)
        .map_err(op(map_names::GENERATION, "lookup"))?;
    generation
        .set(0, now.wrapping_add(1), 0)
        .map_err(op(map_names::GENERATION, "update"))
}

pub fn open_typed<T: TryFrom<Map, Error = MapError>>(
    bpffs_dir: &Path,
    name: &'static str,
) -> Result<T> {
    open_map(bpffs_dir, name)?
        .try_into()
        .map_err(op(name, "open"))
}

/// Each cgroup's event budget (`HB_EVENT_BUDGET`, which the kernel alone writes), for
/// `status` and `maps dump event_rate`.
pub fn event_rates(bpffs_dir: &Path) -> Result<Vec<(EventRateKey, EventRate)>> {
    let map: HashMap<MapData, EventRateKey, EventRate> =
        open_typed(bpffs_dir, map_names::EVENT_RATE)?;
    Ok(map.iter().filter_map(|r| r.ok()).collect())
}

/// The kernel's held-back refusals (`HB_EVENT_HELD`): destinations a cgroup was refused
/// past its event burst and distinct cap, each with its count. The agent alone takes
/// them out.
pub struct HeldEvents(HashMap<MapData, EventSeenKey, HeldEvent>);

impl HeldEvents {
    pub fn open(bpffs_dir: &Path) -> Result<Self> {
        open_typed(bpffs_dir, map_names::EVENT_HELD).map(Self)
    }

    /// Takes every entry out of the map: each held-back destination's first refusal, its
    /// `suppressed` set to the number of others held back with it. A refusal the kernel
    /// counts between the read and the delete of its entry is lost from the count (the
    /// next one past the caps makes a new entry).
    pub fn take(&mut self) -> Vec<hb_common::Event> {
        let keys: Vec<EventSeenKey> = self.0.keys().filter_map(|k| k.ok()).collect();
        keys.into_iter()
            .filter_map(|k| {
                let held = self.0.get(&k, 0).ok()?;
                // Gone already is fine: nothing else deletes, and a failed delete leaves
                // the entry to be reported (again) next time rather than lost.
                let _ = self.0.remove(&k);
                let mut event = held.event;
                event.suppressed = u32::try_from(held.count.saturating_sub(1)).unwrap_or(u32::MAX);
                Some(event)
            })
            .collect()
    }
}

/// Every map the agent writes to, opened from its pin.
pub struct Maps {
    pub enrolled: HashMap<MapData, u64, Enrollment>,
    pub policies: Array<MapData, PolicyInfo>,
    pub allow4: HashMap<MapData, Allow4Key, u64>,
    pub allow6: HashMap<MapData, Allow6Key, u64>,
    pub rules4: LpmTrie<MapData, PolicyCidr4, u32>,
    pub rules6: LpmTrie<MapData, PolicyCidr6, u32>,
    pub counters: PerCpuArray<MapData, u64>,
    pub cg_stats: PerCpuHashMap<MapData, u64, CgroupStats>,
    pub nat64: LpmTrie<MapData, Nat64Key, u32>,
    generation: Array<MapData, u64>,
    dns: Array<MapData, DnsConfig>,
    guard: Array<MapData, GuardConfig>,
    guard_ports: HashMap<MapData, GuardPortKey, u32>,
    host_netns: Array<MapData, u64>,
    metrics_port: Array<MapData, u32>,
    socks_max: Array<MapData, u32>,
    socks_node: Array<MapData, u64>,
    socks_held: HashMap<MapData, u64, u64>,
    guard_flows_held: HashMap<MapData, u64, u64>,
}

/// A policy as the kernel's table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedPolicy {
    pub id: u32,
    pub name: String,
    pub audit: bool,
    /// `inbound = true`: sandboxes under it accept connections from outside.
    pub inbound: bool,
    /// `guard = true`: its connects on guard ports go through the egress guard.
    pub guard: bool,
    /// `icmp_echo = true`: its sandboxes may open ping sockets.
    pub icmp_echo: bool,
    /// `raw_sockets = true`: its sandboxes (with `CAP_NET_RAW`) may open raw sockets.
    pub raw_sockets: bool,
}

impl Maps {
    pub fn open(bpffs_dir: &Path) -> Result<Self> {
        Ok(Self {
            enrolled: open_typed(bpffs_dir, map_names::ENROLLED)?,
            policies: open_typed(bpffs_dir, map_names::POLICIES)?,
            allow4: open_typed(bpffs_dir, map_names::ALLOW4)?,
            allow6: open_typed(bpffs_dir, map_names::ALLOW6)?,
            rules4: open_typed(bpffs_dir, map_names::RULES4)?,
            rules6: open_typed(bpffs_dir, map_names::RULES6)?,
            counters: open_typed(bpffs_dir, map_names::COUNTERS)?,
            cg_stats: open_typed(bpffs_dir, map_names::CG_STATS)?,
            nat64: open_typed(bpffs_dir, map_names::NAT64)?,
            generation: open_typed(bpffs_dir, map_names::GENERATION)?,
            dns: open_typed(bpffs_dir, map_names::DNS)?,
            guard: open_typed(bpffs_dir, map_names::GUARD)?,
            guard_ports: open_typed(bpffs_dir, map_names::GUARD_PORTS)?,
            host_netns: open_typed(bpffs_dir, map_names::HOST_NETNS)?,
            metrics_port: open_typed(bpffs_dir, map_names::METRICS_PORT)?,
            socks_max: open_typed(bpffs_dir, map_names::SOCKS_MAX)?,
            socks_node: open_typed(bpffs_dir, map_names::SOCKS_NODE)?,
            socks_held: open_typed(bpffs_dir, map_names::SOCKS_HELD)?,
            guard_flows_held: open_typed(bpffs_dir, map_names::GUARD_FLOWS_HELD)?,
        })
    }

    /// Points (or stops pointing) guarded connects at the guard. Only called once the
    /// guard listens: before that, a guarded connect would be refused.
    pub fn set_guard(&mut self, enabled: bool, listen: std::net::SocketAddrV4) -> Result<()> {
        let value = GuardConfig {
            enabled: u32::from(enabled),
            addr4: listen.ip().octets(),
            port_base: listen.port(),
            _pad: [0; 6],
        };
        self.guard
            .set(0, value, 0)
            .map_err(op(map_names::GUARD, "update"))
    }

    /// Makes the kernel's guard-port table hold exactly each guarded policy's
    /// `guard_ports` (new entries first, then stale ones go).
    pub fn sync_guard_ports(
        &mut self,
        config: &Config,
        ids: &StdHashMap<String, u32>,
    ) -> Result<()> {
        let mut want = HashSet::new();
        for p in config.policies.iter().filter(|p| p.guard) {
            let Some(&policy_id) = ids.get(p.name.get_ref()) else {
                continue;
            };
            for &port in &p.guard_ports {
                want.insert(GuardPortKey {
                    policy_id,
                    port,
                    _pad: 0,
                });
            }
        }
        for key in &want {
            self.guard_ports
                .insert(key, 1, 0)
                .map_err(op(map_names::GUARD_PORTS, "update"))?;
        }
        let stale: Vec<GuardPortKey> = self
            .guard_ports
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !want.contains(k))
            .collect();
        for key in stale {
            let _ = self.guard_ports.remove(&key);
        }
        Ok(())
    }

    /// Names the network namespace the agent runs in (by its cookie): where a sandbox's
    /// shared ports would be shared with the host's daemons (see `HB_HOST_NETNS`).
    pub fn set_host_netns(&mut self, cookie: u64) -> Result<()> {
        self.host_netns
            .set(0, cookie, 0)
            .map_err(op(map_names::HOST_NETNS, "update"))
    }

    /// The port of the agent's metrics server (0: off), which no sandbox in the agent's
    /// namespace may bind (see `HB_METRICS_PORT`).
    pub fn set_metrics_port(&mut self, port: u16) -> Result<()> {
        self.metrics_port
            .set(0, u32::from(port), 0)
            .map_err(op(map_names::METRICS_PORT, "update"))
    }

    /// How many internet sockets a sandbox in the agent's namespace may hold at once
    /// (`sandbox_defaults.sockets_max`; 0: no bound).
    pub fn set_sockets_max(&mut self, max: u32) -> Result<()> {
        self.socks_max
            .set(0, max, 0)
            .map_err(op(map_names::SOCKS_MAX, "update"))
    }

    /// How many ports all sandboxes in the agent's namespace may hold together
    /// (`sandbox_defaults.sockets_node_percent` of its range; 0: no bound). The count
    /// beside it is the kernel's.
    pub fn set_sockets_node_max(&mut self, max: u64) -> Result<()> {
        self.socks_node
            .set(0, max, 0)
            .map_err(op(map_names::SOCKS_NODE, "update"))
    }

    /// Removes the socket counts (`HB_SOCKS_HELD`) and the guard flow record counts
    /// (`HB_GUARD_HELD`) of cgroups no longer enrolled once they are 0. The programs make
    /// a sandbox's entry at its first socket (first guarded connect) and never remove one
    /// (see `hb-ebpf/src/socks.rs`, `guard.rs`): without this, sandboxes gone would fill
    /// the map, which refuses every other sandbox's sockets (guarded connects). A count
    /// above 0 stays until what it counts is given back: a cgroup enrolled again
    /// meanwhile (a glob matching it again) finds it still counted.
    pub fn forget_unenrolled_socket_counts(&mut self) {
        for counts in [&mut self.socks_held, &mut self.guard_flows_held] {
            let stale: Vec<u64> = counts
                .iter()
                .filter_map(|r| r.ok())
                .filter(|(id, held)| {
                    // Key 0 is no cgroup: the guard's count of all cgroups together.
                    *held == 0 && *id != 0 && self.enrolled.get(id, 0).is_err()
                })
                .map(|(id, _)| id)
                .collect();
            for id in stale {
                let _ = counts.remove(&id);
            }
        }
    }

    /// Points (or stops pointing) sandbox DNS at the resolver.
    pub fn set_dns(&mut self, enabled: bool, listen: std::net::SocketAddrV4) -> Result<()> {
        let value = DnsConfig {
            enabled: u32::from(enabled),
            addr4: listen.ip().octets(),
            port_base: listen.port(),
            _pad: [0; 6],
        };
        self.dns
            .set(0, value, 0)
            .map_err(op(map_names::DNS, "update"))
    }

    /// Tells kernel-side caches that enrollments, policies or rules changed. Every writer
    /// of those maps calls this after writing.
    pub fn bump_generation(&mut self) -> Result<()> {
        bump_generation(&mut self.generation)
    }

    /// The policies in the kernel's table, by id.
    pub fn loaded_policies(&self) -> Result<Vec<LoadedPolicy>> {
        let mut out = Vec::new();
        for id in 0..limits::POLICIES {
            out.extend(self.loaded_policy_at(id)?);
        }
        Ok(out)
    }

    /// The loaded policy named `name`, looking no further than its slot (a sandbox's
    /// start reads one or two slots, not the whole table).
    pub fn loaded_policy(&self, name: &str) -> Result<Option<LoadedPolicy>> {
        for id in 0..limits::POLICIES {
            if let Some(p) = self.loaded_policy_at(id)?
                && p.name == name
            {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// The policy in slot `id`, if the slot is in use.
    fn loaded_policy_at(&self, id: u32) -> Result<Option<LoadedPolicy>> {
        let info = self
            .policies
            .get(&id, 0)
            .map_err(op(map_names::POLICIES, "lookup"))?;
        Ok((info.flags & POLICY_IN_USE != 0).then(|| LoadedPolicy {
            id,
            name: policy_name(&info),
            audit: info.flags & POLICY_AUDIT != 0,
            inbound: info.flags & POLICY_INBOUND != 0,
            guard: info.flags & POLICY_GUARD != 0,
            icmp_echo: info.flags & POLICY_ICMP_ECHO != 0,
            raw_sockets: info.flags & POLICY_RAW_SOCKETS != 0,
        }))
    }

    /// Makes the policy table match `config`: known names keep their ids (so enrollments
    /// and allow entries stay valid across restarts), new names get free slots, removed
    /// names are cleared together with their allow entries and CIDRs. Returns name → id.
    pub fn sync_policies(&mut self, config: &Config) -> Result<StdHashMap<String, u32>> {
        let loaded = self.loaded_policies()?;
        // Slots an enrollment still points at are not handed to a new policy: a sandbox
        // whose policy was removed stays fail-closed instead of inheriting another one.
        let referenced: HashSet<u32> = self
            .enrolled
            .iter()
            .filter_map(|r| r.ok().map(|(_, e)| e.policy_id))
            .collect();
        let mut ids = StdHashMap::new();
        let mut taken: HashSet<u32> = HashSet::new();
        for p in &config.policies {
            if let Some(l) = loaded.iter().find(|l| &l.name == p.name.get_ref()) {
                ids.insert(p.name.get_ref().clone(), l.id);
                taken.insert(l.id);
            }
        }
        for p in &config.policies {
            let name = p.name.get_ref();
            let id = match ids.get(name) {
                Some(id) => *id,
                None => {
                    let id = (0..limits::POLICIES)
                        .find(|id| {
                            !taken.contains(id)
                                && !loaded.iter().any(|l| l.id == *id)
                                && !referenced.contains(id)
                        })
                        .ok_or(MapsError::PolicyTableFull)?;
                    taken.insert(id);
                    ids.insert(name.clone(), id);
                    id
                }
            };
            let mut info = PolicyInfo {
                flags: POLICY_IN_USE,
                _pad: 0,
                name: [0; limits::POLICY_NAME_LEN],
            };
            if p.mode == PolicyMode::Audit {
                info.flags |= POLICY_AUDIT;
            }
            if p.inbound {
                info.flags |= POLICY_INBOUND;
            }
            if p.guard {
                info.flags |= POLICY_GUARD;
            }
            if p.allow_quic {
                info.flags |= POLICY_QUIC;
            }
            if p.guard && p.guard_all_ports {
                info.flags |= POLICY_GUARD_ALL;
            }
            if p.icmp_echo {
                info.flags |= POLICY_ICMP_ECHO;
            }
            if p.raw_sockets {
                info.flags |= POLICY_RAW_SOCKETS;
            }
            info.name[..name.len()].copy_from_slice(name.as_bytes());
            self.policies
                .set(id, info, 0)
                .map_err(op(map_names::POLICIES, "update"))?;
        }
        for stale in loaded.iter().filter(|l| !taken.contains(&l.id)) {
            tracing::info!(policy = %stale.name, id = stale.id, "policy removed from config; clearing it");
            let empty = PolicyInfo {
                flags: 0,
                _pad: 0,
                name: [0; limits::POLICY_NAME_LEN],
            };
            self.policies
                .set(stale.id, empty, 0)
                .map_err(op(map_names::POLICIES, "update"))?;
            self.purge_allow(stale.id)?;
        }
        self.bump_generation()?;
        Ok(ids)
    }

    /// Empties the allow map of every policy that lets its sandboxes resolve less than
    /// when the agent last started: a name taken out of `allow_domains`, or a switch from
    /// audit (which resolves every name) to enforce. A restarted agent adopts the pinned
    /// rows it finds without their names ([`crate::dns::learned`]), so without this the
    /// addresses of a name the policy no longer allows stayed connectable for new
    /// connections until their expiry (up to `dns.max_ttl_secs`). Established flows keep
    /// their admitted peers either way; sandboxes resolve again. What each policy allowed
    /// is kept in `state_dir/`[`POLICY_SCOPES_FILE`], rewritten here; without it (a first
    /// start) nothing is purged, and an unreadable one purges every policy (fail closed).
    /// Returns the names of the policies purged.
    pub fn purge_narrowed(
        &mut self,
        config: &Config,
        ids: &StdHashMap<String, u32>,
        state_dir: &Path,
    ) -> Result<Vec<String>> {
        let path = state_dir.join(POLICY_SCOPES_FILE);
        let previous: Option<StdHashMap<String, PolicyScope>> = match std::fs::read(&path) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).unwrap_or_default()),
            Err(_) => None,
        };
        let mut now = StdHashMap::new();
        let mut purged = Vec::new();
        for p in &config.policies {
            let name = p.name.get_ref();
            let scope = PolicyScope {
                domains: p
                    .allow_domains
                    .iter()
                    .map(|d| d.get_ref().clone())
                    .collect(),
                audit: p.mode == PolicyMode::Audit,
            };
            if let (Some(previous), Some(&id)) = (&previous, ids.get(name)) {
                let narrowed = previous.get(name).is_none_or(|old| scope.narrows(old));
                if narrowed {
                    self.purge_allow(id)?;
                    purged.push(name.clone());
                }
            }
            now.insert(name.clone(), scope);
        }
        if let Ok(bytes) = serde_json::to_vec(&now) {
            crate::dns::write_state(state_dir, POLICY_SCOPES_FILE, &bytes);
        }
        Ok(purged)
    }

    /// Removes every allow-map entry of a policy.
    fn purge_allow(&mut self, policy_id: u32) -> Result<()> {
        let k4: Vec<_> = self
            .allow4
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.policy_id == policy_id)
            .collect();
        for k in k4 {
            let _ = self.allow4.remove(&k);
        }
        let k6: Vec<_> = self
            .allow6
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.policy_id == policy_id)
            .collect();
        for k in k6 {
            let _ = self.allow6.remove(&k);
        }
        Ok(())
    }

    /// Compiles every policy's deny ranges, exceptions and static CIDRs into the rule
    /// tries (see [`compile`]) and makes the tries hold exactly that.
    pub fn sync_rules(&mut self, config: &Config, ids: &StdHashMap<String, u32>) -> Result<()> {
        let mut want4 = Vec::new();
        let mut want6 = Vec::new();
        for p in &config.policies {
            let Some(&id) = ids.get(p.name.get_ref()) else {
                continue;
            };
            let policy_id_be = id.to_be_bytes();
            for (net, rule) in compile(&config.egress.deny, &config.egress.exceptions, &p.allow) {
                let bits = POLICY_PREFIX_BITS + u32::from(net.prefix_len());
                match net {
                    IpNet::V4(n) => want4.push((
                        Key::new(
                            bits,
                            PolicyCidr4 {
                                policy_id_be,
                                addr: n.network().octets(),
                            },
                        ),
                        rule,
                    )),
                    IpNet::V6(n) => want6.push((
                        Key::new(
                            bits,
                            PolicyCidr6 {
                                policy_id_be,
                                addr: n.network().octets(),
                            },
                        ),
                        rule,
                    )),
                }
            }
        }
        sync_trie(&mut self.rules4, map_names::RULES4, want4)?;
        sync_trie(&mut self.rules6, map_names::RULES6, want6)?;
        self.bump_generation()
    }

    /// Makes the kernel's NAT64 table hold exactly `egress.nat64_prefixes` (value: the
    /// prefix length, which selects the RFC 6052 embedding).
    pub fn sync_nat64(&mut self, config: &Config) -> Result<()> {
        let want = config
            .egress
            .nat64
            .iter()
            .map(|n| {
                let len = u32::from(n.prefix_len());
                (
                    Key::new(
                        len,
                        Nat64Key {
                            addr: n.network().octets(),
                        },
                    ),
                    len,
                )
            })
            .collect();
        sync_trie(&mut self.nat64, map_names::NAT64, want)?;
        self.bump_generation()
    }

    /// Sums the per-CPU counters.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>> {
        Counter::ALL
            .iter()
            .map(|c| {
                let index = *c as u32;
                // A counters map pinned by an older agent may be shorter (the pins
                // outlive the agent): counters it lacks have counted nothing.
                if index >= self.counters.len() {
                    return Ok((*c, 0));
                }
                let values = self
                    .counters
                    .get(&index, 0)
                    .map_err(op(map_names::COUNTERS, "lookup"))?;
                Ok((*c, values.iter().sum()))
            })
            .collect()
    }

    /// Per-cgroup traffic seen by `cgroup_skb/egress`, summed over CPUs.
    pub fn cgroup_stats(&self) -> Vec<(u64, CgroupStats)> {
        self.cg_stats
            .iter()
            .filter_map(|r| r.ok())
            .map(|(id, per_cpu)| {
                let mut sum = CgroupStats::default();
                for s in per_cpu.iter() {
                    sum.pass_packets += s.pass_packets;
                    sum.pass_bytes += s.pass_bytes;
                    sum.drop_packets += s.drop_packets;
                    sum.drop_bytes += s.drop_bytes;
                    sum.audit_packets += s.audit_packets;
                    sum.audit_bytes += s.audit_bytes;
                }
                (id, sum)
            })
            .collect()
    }
}

/// What each policy let its sandboxes resolve when the agent last started (see
/// [`Maps::purge_narrowed`]), in the state folder.
pub const POLICY_SCOPES_FILE: &str = "policy_scopes.json";

/// What a policy lets its sandboxes resolve: its `allow_domains` and whether it audits.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyScope {
    pub domains: Vec<String>,
    pub audit: bool,
}

impl PolicyScope {
    /// Whether this scope lets a sandbox resolve something `old` did and this does not:
    /// a pattern of `old` is gone, or `old` audited (resolving every name) and this
    /// does not.
    pub fn narrows(&self, old: &PolicyScope) -> bool {
        (old.audit && !self.audit) || old.domains.iter().any(|d| !self.domains.contains(d))
    }
}

/// A policy name from its NUL-padded slot.
pub fn policy_name(info: &PolicyInfo) -> String {
    let end = info
        .name
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(info.name.len());
    String::from_utf8_lossy(&info.name[..end]).into_owned()
}

/// One policy's rules: every configured prefix with the verdict for the addresses whose
/// longest match it is (`hb_common::rule`). Any prefix that contains an address contains
/// that address's longest match too, so judging the prefix judges the address.
pub fn compile(deny: &[IpNet], except: &[IpNet], allow: &[IpNet]) -> Vec<(IpNet, u32)> {
    let mut prefixes: Vec<IpNet> = deny
        .iter()
        .chain(except)
        .chain(allow)
        .map(IpNet::trunc)
        .collect();
    prefixes.sort();
    prefixes.dedup();
    prefixes
        .into_iter()
        .map(|p| {
            let covered = |set: &[IpNet]| set.iter().any(|n| n.contains(&p));
            let rule = if covered(deny) && !covered(except) {
                rule::DENY
            } else if covered(allow) {
                rule::ALLOW
            } else {
                rule::NEUTRAL
            };
            (p, rule)
        })
        .collect()
}

/// Inserts (or updates) every wanted entry, then removes every other key: the trie never
/// lacks an entry that both the old and the new config have.
pub(crate) fn sync_trie<K>(
    trie: &mut LpmTrie<MapData, K, u32>,
    name: &'static str,
    want: Vec<(Key<K>, u32)>,
) -> Result<()>
where
    K: aya::Pod + Eq + std::hash::Hash,
{
    let wanted: HashSet<(u32, K)> = want
        .iter()
        .map(|(k, _)| (k.prefix_len(), k.data()))
        .collect();
    for (k, v) in &want {
        trie.insert(k, v, 0).map_err(op(name, "insert"))?;
    }
    let stale: Vec<Key<K>> = trie
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| !wanted.contains(&(k.prefix_len(), k.data())))
        .collect();
    for k in stale {
        trie.remove(&k).map_err(op(name, "remove"))?;
    }
    Ok(())
}

/// An address from an event or key (IPv4 in the first four bytes when `v4`).
pub fn addr_of(bytes: &[u8; 16], v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().expect("net")).collect()
    }

    #[test]
    fn a_scope_narrows_when_a_pattern_goes_or_audit_ends() {
        let scope = |d: &[&str], audit| PolicyScope {
            domains: d.iter().map(|s| (*s).to_owned()).collect(),
            audit,
        };
        let old = scope(&["a.test", "*.b.test"], false);
        assert!(!scope(&["a.test", "*.b.test"], false).narrows(&old));
        assert!(!scope(&["*.b.test", "a.test", "c.test"], false).narrows(&old));
        assert!(scope(&["a.test"], false).narrows(&old));
        assert!(scope(&[], false).narrows(&old));
        assert!(
            scope(&["a.test", "*.b.test"], false).narrows(&scope(&["a.test", "*.b.test"], true))
        );
        assert!(!scope(&["a.test"], true).narrows(&scope(&["a.test"], false)));
    }

    /// The compiled longest-match answer equals the plain definition for every probe.
    #[test]
    fn compiled_rules_match_the_definition() {
        let deny = nets(&[
            "10.0.0.0/8",
            "10.1.0.0/16",
            "203.0.113.0/24",
            "127.0.0.0/8",
            "fd00::/8",
        ]);
        let except = nets(&[
            "10.0.0.0/9",
            "203.0.113.0/24",
            "127.0.0.2/32",
            "fd00:1::/32",
        ]);
        let allow = nets(&["0.0.0.0/0", "10.1.2.0/24", "203.0.113.10/32", "fd00:1::/48"]);
        let rules = compile(&deny, &except, &allow);
        for probe in [
            "10.0.0.1",
            "10.1.2.3",
            "10.1.3.3",
            "10.200.0.1",
            "203.0.113.10",
            "203.0.113.11",
            "127.0.0.1",
            "127.0.0.2",
            "8.8.8.8",
            "fd00::1",
            "fd00:1::1",
            "fd00:1:0:1::1",
            "2001:db8::1",
        ] {
            let ip: IpAddr = probe.parse().expect("ip");
            let expected = if deny.iter().any(|n| n.contains(&ip))
                && !except.iter().any(|n| n.contains(&ip))
            {
                rule::DENY
            } else if allow.iter().any(|n| n.contains(&ip)) {
                rule::ALLOW
            } else {
                rule::NEUTRAL
            };
            let got = rules
                .iter()
                .filter(|(n, _)| n.contains(&ip))
                .max_by_key(|(n, _)| n.prefix_len())
                .map_or(rule::NEUTRAL, |(_, r)| *r);
            assert_eq!(got, expected, "{probe}: {}", rule::name(got));
        }
    }
}
