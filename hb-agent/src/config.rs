//! The agent's configuration: TOML, parsed strictly, validated before anything is loaded.
//!
//! Owns: the config schema (the keys in DESIGN.md are a contract: add, never rename),
//! the embedded default (`default.toml`) and every check that can be made without the
//! kernel. Must never: fall back to a default when a key is wrong, or touch the system.
//! Every error names the key and, where the file has one, the line.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, de};
use toml::Spanned;

use crate::egress;

/// The configuration used when `--config` is not given (`hb-agent config default`).
pub const DEFAULT_TOML: &str = include_str!("default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax, unknown keys and wrongly typed values; toml's message names key and line.
    #[error("invalid config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid config {origin}: {key} (line {line}): {message}")]
    Invalid {
        origin: String,
        key: String,
        line: usize,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default)]
    pub broker: BrokerConfig,
    #[serde(default)]
    pub dns: DnsConfig,
    #[serde(default)]
    pub egress: EgressConfig,
    #[serde(default)]
    pub guard: GuardConfig,
    /// Services the broker may call with a credential (used by the broker, later).
    #[serde(default, rename = "integration")]
    pub integrations: Vec<IntegrationConfig>,
    #[serde(default, rename = "policy")]
    pub policies: Vec<PolicyConfig>,
    #[serde(default, rename = "sandbox")]
    pub sandboxes: Vec<SandboxConfig>,
    #[serde(default)]
    pub sandbox_defaults: SandboxDefaults,
    #[serde(default)]
    pub scrub: ScrubConfig,
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
}

/// Pod enrollment on a Kubernetes node (`crate::kube`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Watch this node's pods and enroll the pods of enforced namespaces.
    pub enabled: bool,
    /// This node's name as the API knows it ("" = `$K8S_NODE_NAME`).
    pub node_name: String,
    /// Namespace label whose value `true` enforces every pod of the namespace.
    pub enforce_namespace_label: String,
    /// Pod annotation naming the pod's policy; on a namespace, the namespace's default.
    pub policy_annotation: String,
    /// Namespace annotation listing (comma-separated) the policies its pods may name;
    /// a pod naming another gets the namespace's default. Absent: any configured policy.
    pub allowed_policies_annotation: String,
    /// Kubeconfig file of the API client ("" = the in-cluster service account).
    pub kubeconfig: String,
    /// Policy of an enforced pod whose annotation names no configured policy and whose
    /// namespace names none either ("" = the strictest configured policy).
    pub default_policy: String,
    /// Cgroup (below the cgroup2 mount) holding the kubelet's pod cgroups, watched with
    /// everything below it ("" = `agent.cgroup_root`, where the programs attach; it
    /// must be there or below).
    pub cgroup_root: String,
    /// Enroll pod cgroups the moment they appear (inotify); `false` leaves it to the
    /// periodic scan alone (slower by orders of magnitude: for comparison only).
    pub watch_cgroups: bool,
    /// Period of the full scan of `cgroup_root` that reconciles what inotify missed, ms.
    pub rescan_interval_ms: u64,
    /// Namespaces whose mirror pods' `kubernetes.io/config.mirror` claims are honoured
    /// (static pods enforced through them). Any user who may create pods can create one
    /// carrying that annotation: list only namespaces where only cluster admins create
    /// pods. Empty: static pods are not enforced (a claim from an enforced namespace is
    /// logged).
    pub static_pod_namespaces: Vec<String>,
    /// The kubelet `Localhost` seccomp profile hb's profile is installed as (`hb-agent
    /// sandbox seccomp-profile`, relative to the kubelet's seccomp folder): a pod whose
    /// every container runs under it cannot open packet sockets, so it may keep
    /// `CAP_NET_RAW`. "" = hb does not look at pods' profiles.
    pub seccomp_profile: String,
    /// Refuse (freeze and kill) an enforced pod any of whose containers does not run
    /// under `seccomp_profile`: 32-bit calls, vsock and other socket families, and
    /// io_uring go around the cgroup hooks without it.
    pub require_seccomp_profile: bool,
    /// The RuntimeClasses (`spec.runtimeClassName`) an enforced pod may name. hb's checks
    /// of a spec are written for the node's default runtime (runc under containerd); a
    /// sandboxing runtime takes the pod's processes and sockets elsewhere (gVisor's
    /// netstack writes packet sockets, Kata's VM sends through the host's tap devices,
    /// neither judged by any cgroup hook). Empty (the default): a pod naming any is
    /// refused.
    pub runtime_classes: Vec<String>,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            node_name: String::new(),
            enforce_namespace_label: "hb.dev/enforce".into(),
            policy_annotation: "hb.dev/policy".into(),
            allowed_policies_annotation: "hb.dev/allowed-policies".into(),
            kubeconfig: String::new(),
            default_policy: String::new(),
            cgroup_root: String::new(),
            watch_cgroups: true,
            rescan_interval_ms: 10_000,
            static_pod_namespaces: Vec::new(),
            seccomp_profile: "hb.json".into(),
            require_seccomp_profile: true,
            runtime_classes: Vec::new(),
        }
    }
}

/// The scrubber's keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrubConfig {
    /// Rule files in gitleaks's format whose rules every exit runs besides the built-in
    /// families (a relative path is relative to the config file's directory). Read and
    /// compiled when the config is loaded: a missing or invalid file is a config error.
    pub rules_files: Vec<Spanned<PathBuf>>,
    /// The compiled rules of `rules_files` (filled by validation).
    #[serde(skip)]
    pub rules: std::sync::Arc<crate::scrub::RuleSet>,
}

/// What `hb-agent sandbox run` gives a command unless told otherwise.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxDefaults {
    /// `UID[:GID]` or a user name; `--user` overrides it (root only with `--user 0`).
    pub user: String,
    /// Where tenants' work folders live ("" = `state_dir/tenants`).
    pub tenants_dir: PathBuf,
    /// Where a tenant's folder appears inside its sandbox.
    pub work_mount: PathBuf,
    /// `pids.max` of each sandbox (0 = no limit).
    pub pids_max: u64,
    /// Memory limit of each sandbox, e.g. "2G" ("" or "max" = no limit).
    pub memory_max: String,
    /// CPU limit of each sandbox in cgroup `cpu.max` syntax, "QUOTA PERIOD" in µs
    /// ("" = no limit).
    pub cpu_max: String,
    /// Size of the sandbox's own /tmp.
    pub tmp_size: String,
    /// Internet sockets a sandbox in the agent's network namespace may hold open at once
    /// (0 = no limit). It shares the host's ephemeral ports with every tenant and daemon:
    /// without a bound one sandbox bound them all and no TCP connect on the host worked.
    pub sockets_max: u32,
    /// The share of the host's ephemeral port range, in percent, that all sandboxes in
    /// the agent's network namespace may hold together: open internet sockets and the
    /// TIME_WAIT ends of the connections they closed (0 = no limit). `sockets_max` alone
    /// is no share: a few sandboxes under it held the whole range.
    pub sockets_node_percent: u8,
}

impl Default for SandboxDefaults {
    fn default() -> Self {
        Self {
            user: "1000:1000".into(),
            tenants_dir: PathBuf::new(),
            work_mount: "/work".into(),
            pids_max: 512,
            memory_max: "2G".into(),
            cpu_max: String::new(),
            tmp_size: "256M".into(),
            sockets_max: 4096,
            sockets_node_percent: 50,
        }
    }
}

impl SandboxDefaults {
    /// The limits, parsed (validation has checked every value, so nothing fails here).
    pub fn limits(&self) -> crate::sandbox::limits::Limits {
        use crate::sandbox::limits::{parse_cpu_max, parse_size};
        crate::sandbox::limits::Limits {
            pids_max: (self.pids_max > 0).then_some(self.pids_max),
            memory_max: parse_size(&self.memory_max).ok().flatten(),
            cpu_max: parse_cpu_max(&self.cpu_max).ok().flatten(),
        }
    }

    /// How many ports all sandboxes in the agent's namespace may hold together, given
    /// the namespace's ephemeral range (`ip_local_port_range`'s two ends); 0: no bound.
    /// At least 1 when a share is set: a share of a tiny range is still a bound.
    pub fn sockets_node_max(&self, range: (u16, u16)) -> u64 {
        let size = u64::from(range.1.saturating_sub(range.0)) + 1;
        match self.sockets_node_percent {
            0 => 0,
            pct => (size * u64::from(pct) / 100).max(1),
        }
    }

    /// Each key's problem, if any: (key, message).
    fn problems(&self) -> Vec<(&'static str, String)> {
        use crate::sandbox::limits::{parse_cpu_max, parse_size};
        let mut out = Vec::new();
        match crate::sandbox::parse_user(&self.user) {
            Err(e) => out.push(("user", e)),
            Ok(u) if u.uid == 0 => out.push((
                "user",
                "root is no default: a command runs as uid 0 only with an explicit --user 0".into(),
            )),
            Ok(_) => {}
        }
        if !self.work_mount.is_absolute() || self.work_mount == std::path::Path::new("/") {
            out.push((
                "work_mount",
                "must be an absolute path below / (e.g. \"/work\")".into(),
            ));
        }
        if !self.tenants_dir.as_os_str().is_empty() && !self.tenants_dir.is_absolute() {
            out.push((
                "tenants_dir",
                "must be an absolute path, or \"\" for state_dir/tenants".into(),
            ));
        }
        if let Err(e) = parse_size(&self.memory_max) {
            out.push(("memory_max", e));
        }
        match parse_size(&self.tmp_size) {
            Err(e) => out.push(("tmp_size", e)),
            Ok(None) => out.push((
                "tmp_size",
                "the sandbox's /tmp needs a size (e.g. \"256M\")".into(),
            )),
            Ok(Some(_)) => {}
        }
        if let Err(e) = parse_cpu_max(&self.cpu_max) {
            out.push(("cpu_max", e));
        }
        if self.sockets_node_percent > 100 {
            out.push((
                "sockets_node_percent",
                "a share of the port range: 0 (no limit) to 100".into(),
            ));
        }
        out
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Vault, audit log, event log and the agent's state file.
    pub state_dir: PathBuf,
    /// 32 random bytes, mode 0600.
    pub master_key_file: PathBuf,
    /// bpffs folder for pinned programs, links and maps.
    pub bpffs_dir: PathBuf,
    /// Cgroup (relative to the cgroup2 mount) the programs attach to.
    pub cgroup_root: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// How often the cgroup tree is scanned for new cgroups matching `[[sandbox]]`, in ms.
    pub rescan_interval_ms: u64,
    /// Events kept in `state_dir/events.jsonl` before it is rotated, in bytes.
    pub events_file_max_bytes: u64,
    /// `state_dir/audit.log` is rotated when it would pass this size, in bytes.
    pub audit_max_bytes: u64,
    /// Audit files kept, the current one included.
    pub audit_max_files: u32,
    /// When audit records are forced to disk: `always`, `interval` (once a second) or `never`.
    pub audit_fsync: crate::audit::Fsync,
    /// Where `/metrics`, `/healthz` and `/readyz` are served over HTTP (an IP address and
    /// port); `""` serves none. Loopback by default: the node's Prometheus and the
    /// kubelet's probes reach it from the node's network namespace, and sandboxes are
    /// refused loopback by the deny ranges.
    pub metrics_listen: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            state_dir: "/var/lib/hb".into(),
            master_key_file: "/etc/hb/master.key".into(),
            bpffs_dir: "/sys/fs/bpf/hb".into(),
            cgroup_root: "hb".into(),
            log_format: LogFormat::Text,
            rescan_interval_ms: 500,
            events_file_max_bytes: 16 << 20,
            audit_max_bytes: 64 << 20,
            audit_max_files: 5,
            audit_fsync: crate::audit::Fsync::Interval,
            metrics_listen: "127.0.0.1:9464".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The broker's keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    pub socket: PathBuf,
    /// The folder of the policies' own sockets: the agent serves
    /// `<policy_sockets_dir>/<policy>/broker.sock` for every policy, each with its own
    /// backlog, and answers there only that policy's sandboxes (`sandbox run` binds a
    /// sandbox's policy socket at `socket` inside). Unset: `policies` beside `socket`.
    pub policy_sockets_dir: Option<PathBuf>,
    pub socket_mode: String,
    pub handle_ttl_secs: u64,
    pub max_body_bytes: u64,
    pub readonly_methods: Vec<String>,
    pub operator_uid: u32,
    pub extra_ca_file: String,
    /// A call to an upstream (resolution, connect, TLS, the exchange and every redirect)
    /// must finish within this.
    pub upstream_timeout_secs: u64,
    /// Upstream responses larger than this are refused (`too_large`), never truncated.
    pub max_response_bytes: u64,
    /// Follow upstream redirects (each hop judged by policy again; the credential is
    /// dropped when a hop leaves the origin). Off: a 3xx goes back to the caller as is.
    pub follow_redirects: bool,
    /// Event-stream session tokens expire after this long.
    pub session_ttl_secs: u64,
    /// A broker request (reading it, deciding, answering) must finish within this.
    pub request_timeout_secs: u64,
    /// Connections served at once; more wait in the socket's backlog. Shared among
    /// tenants (a sandbox's policy, or a host uid) and among callers: each takes
    /// another only while it holds fewer than are free (`crate::share`).
    pub max_connections: usize,
    /// The policy that host callers (in no sandbox) act under for handles and requests;
    /// empty: host callers get no handles and no credential-less requests.
    pub host_policy: String,
    /// Return bodies the scrubber cannot read as text (not UTF-8, nor UTF-16 marked by
    /// a byte-order mark or a `charset`) to calls made with a handle. Off (the default):
    /// such a response is refused (`unreadable_response`). **Risk when on:** an
    /// archive, image or other container the upstream builds from what it received can
    /// carry the injected credential in a form no scrubber finds (compressed, packed),
    /// and the caller unpacks it. Handle-less calls carry no credential and are not
    /// affected.
    pub allow_binary_responses: bool,
    /// A request's headers must arrive within this once the broker waits for them: on a
    /// new connection, and for each next request on a kept-alive one (so a connection
    /// that sends nothing, or nothing more, is closed after it).
    pub header_read_timeout_secs: u64,
    /// A connection on which no byte moves either way for this long is closed (a peer
    /// that stops reading its answer). Longer than `request_timeout_secs` (a request
    /// waiting on its upstream moves no byte) and than the event stream's 15 s
    /// keep-alive.
    pub idle_timeout_secs: u64,
    /// `POST /v1/scrub` and `/v1/sanitize` calls a minute per caller (a sandbox, or a
    /// host uid other than root and `operator_uid`); more get `rate_limited`.
    pub scrub_per_minute: u32,
    /// `POST /v1/handles` calls a minute per caller (a sandbox, or a host uid other
    /// than root and `operator_uid`); more get `rate_limited`. Each issued handle
    /// registers its value and its policy's decoys with the shared scrubber, work every
    /// caller's calls wait behind, so no caller may issue handles without a bound.
    pub handles_per_minute: u32,
    /// Live handles one caller (as for `handles_per_minute`) may hold at once; another
    /// is refused with `handle_limit` until one is deleted, expires or its execution
    /// ends.
    pub max_handles_per_caller: usize,
    /// Connections one caller (a sandbox, or a host uid other than root and
    /// `operator_uid`) may have open at once, at most; below it a caller takes another
    /// only while it holds fewer than are free. More are closed unanswered, so no
    /// caller can hold all of `max_connections`.
    pub max_connections_per_caller: usize,
    /// A caller a detector ended (it used a decoy handle, or kept forcing compromise
    /// rotations past `max_compromise_rotations_per_day`) gets no new handle and makes
    /// no request for this long: its sandbox (the enrolled cgroup), or a host caller's
    /// uid.
    pub suspect_bar_secs: u64,
    /// A caller whose call or answer held a run of the credential the call carried (a
    /// piece of at least 8 characters, fewer for short values; see
    /// `broker::fragment_hit`) gets `credential_fragment` for every call and handle
    /// request for that integration's account this long, its handles to the account
    /// ended; its other accounts and the account's other callers are not affected.
    pub fragment_bar_secs: u64,
    /// Kill the sandbox that used a decoy handle (`cgroup.kill` of its enrolled cgroup;
    /// never a host caller, the agent's own cgroup or one containing it).
    pub canary_kill: bool,
}

impl BrokerConfig {
    /// `socket_mode` as permission bits (validated when the config is read).
    pub fn mode(&self) -> u32 {
        u32::from_str_radix(&self.socket_mode, 8).unwrap_or(0o600)
    }

    /// `policy_sockets_dir`, or its default: `policies` beside `socket`.
    pub fn policy_sockets_dir(&self) -> PathBuf {
        self.policy_sockets_dir.clone().unwrap_or_else(|| {
            self.socket
                .parent()
                .unwrap_or_else(|| Path::new(""))
                .join("policies")
        })
    }

    /// The socket of `policy`'s sandboxes (`policy` a validated policy name: one path
    /// component, neither `.` nor `..`), named as the main socket is, so a policy's
    /// folder mounted where the main socket's folder was shows the socket at the path
    /// clients use.
    pub fn policy_socket(&self, policy: &str) -> PathBuf {
        let name = self
            .socket
            .file_name()
            .unwrap_or_else(|| std::ffi::OsStr::new("broker.sock"));
        self.policy_sockets_dir().join(policy).join(name)
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            socket: "/run/hb/broker.sock".into(),
            policy_sockets_dir: None,
            socket_mode: "0660".into(),
            handle_ttl_secs: 300,
            max_body_bytes: 10 << 20,
            readonly_methods: vec!["GET".into(), "HEAD".into(), "OPTIONS".into()],
            operator_uid: 0,
            extra_ca_file: String::new(),
            upstream_timeout_secs: 30,
            max_response_bytes: 10 << 20,
            follow_redirects: false,
            session_ttl_secs: 3600,
            request_timeout_secs: 30,
            max_connections: 256,
            host_policy: String::new(),
            allow_binary_responses: false,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 120,
            scrub_per_minute: 120,
            handles_per_minute: 120,
            max_handles_per_caller: 256,
            max_connections_per_caller: 32,
            suspect_bar_secs: 3600,
            fragment_bar_secs: 3600,
            canary_kill: true,
        }
    }
}

/// The egress guard's keys: where it listens and what plain HTTP may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// The guard's IPv4 address and the port of policy 0; policy N is at port + N (and
    /// at `[::1]` on the same ports for IPv6 sockets).
    pub listen: String,
    /// Plain-HTTP methods passed to hosts outside a policy's `write_domains` (the
    /// request line's, and every method a method-override header names).
    pub readonly_methods: Vec<String>,
    /// The first flight (TLS ClientHello, or an HTTP request head) must arrive within
    /// this; so must each next request head on a kept-alive plain-HTTP connection.
    pub first_flight_timeout_secs: u64,
    /// Guarded connections open at once per policy; more are closed at once
    /// (`guard_busy`).
    pub max_connections_per_policy: u32,
    /// The kernel relay: a passed TLS connection whose server selected TLS 1.3 has its
    /// bytes moved between its two sockets by a BPF sock hash verdict after the
    /// ServerHello, instead of through the guard. Off by default.
    pub sockmap: bool,
    /// Guarded connections one cgroup (a sandbox, a pod's container) may hold open at
    /// once, at most; below it a cgroup takes another only while it holds fewer than its
    /// policy has free (`crate::share`). More are closed at once (`guard_cgroup_busy`),
    /// so a few sandboxes cannot take every slot of their policy. Unset: a quarter of
    /// `max_connections_per_policy`.
    pub max_connections_per_cgroup: Option<u32>,
    /// A passed connection with no data either way for this long is closed, so idle
    /// kept-alive connections do not hold their slots for ever.
    pub idle_timeout_secs: u64,
}

impl GuardConfig {
    /// `max_connections_per_cgroup`, or its default: a quarter of the policy's cap.
    pub fn per_cgroup(&self) -> u32 {
        self.max_connections_per_cgroup
            .unwrap_or(self.max_connections_per_policy / 4)
            .max(1)
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:15300".into(),
            readonly_methods: vec!["GET".into(), "HEAD".into(), "OPTIONS".into()],
            first_flight_timeout_secs: 10,
            max_connections_per_policy: 1024,
            sockmap: false,
            max_connections_per_cgroup: None,
            idle_timeout_secs: 300,
        }
    }
}

/// The resolver's keys (parsed and checked now; the resolver comes with its own issue).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// The resolver's IPv4 address and the port of policy 0; policy N is at port + N
    /// (and at `[::1]` on the same ports for IPv6 sockets).
    pub listen: String,
    /// Run hb's resolver and rewrite sandbox DNS (port 53, UDP and TCP) to it in the
    /// kernel. Off: sandbox DNS is judged like any other traffic, and only static CIDRs
    /// allow anything.
    pub redirect: bool,
    /// Answer to a name outside the policy: `"nxdomain"` (musl and glibc then move on
    /// through their search list) or `"refused"`.
    pub denied_name_rcode: DeniedRcode,
    /// Answer when an upstream answer holds a denied address: `"refused"` or `"servfail"`.
    pub rebinding_rcode: RebindingRcode,
    pub upstreams: Vec<String>,
    pub min_ttl_secs: u64,
    pub max_ttl_secs: u64,
    pub max_ips_per_name: u32,
    /// Addresses one policy may hold in the allow maps at once (IPv4 and IPv6 together).
    /// The maps are shared by every policy on the node; without a share per policy, one
    /// sandbox resolving names with many addresses filled them and every other policy's
    /// answers failed (SERVFAIL) until the entries expired. A policy at its share drops
    /// its own soonest-expiring addresses first, never another policy's (counted and
    /// logged). The default, an eighth of a map, lets eight policies fill up at once.
    pub max_ips_per_policy: u32,
    /// Addresses one cgroup (a sandbox, a pod's container) may hold of its policy's
    /// share (`max_ips_per_policy`). An address stays allowed while any sandbox it was
    /// handed to still holds it within its TTL: a sandbox past its share drops only its
    /// own soonest-expiring addresses, never another sandbox's, and once half of the
    /// policy's share is in use a sandbox holding `max_ips_per_name` addresses or more
    /// trades its own rather than taking free ones (the rest is kept for sandboxes that
    /// hold little). When none of its own can make room its answer is SERVFAIL with a
    /// `dns_allow_share_full` event. Unset: an eighth of `max_ips_per_policy` (at least
    /// `max_ips_per_name`).
    pub max_ips_per_cgroup: Option<u32>,
    /// Seconds a TCP DNS connection may wait for a query to begin (RFC 7766 idle timeout).
    pub tcp_idle_timeout_secs: u64,
    /// Seconds a query may take, once its first byte arrived, to arrive whole (length
    /// prefix and body); also the limit for writing the reply. A client that stalls
    /// mid-query is cut off instead of holding an agent file descriptor for ever.
    pub tcp_query_timeout_secs: u64,
    /// TCP DNS connections open at once, all policies together. Also kept below a
    /// quarter of the agent's open-file limit, so the broker and the maps always have
    /// descriptors left. Connections over the cap are closed at once (counted, logged
    /// once per interval).
    pub max_tcp_connections: u32,
    /// TCP DNS connections open at once per policy, so one policy's sandboxes cannot
    /// take every slot of `max_tcp_connections` from the others.
    pub max_tcp_connections_per_policy: u32,
    /// TCP DNS connections one cgroup (a sandbox, a pod's container) may hold at once,
    /// at most; below it a cgroup takes another only while it holds fewer than its
    /// policy has free (`crate::share`), so a few sandboxes cannot take every slot of
    /// their policy; more are closed at once
    /// with a `dns_cgroup_busy` event naming the cgroup. The cgroup is the kernel's
    /// record of the connection; one without a record is closed. Unset: a quarter of
    /// `max_tcp_connections_per_policy` (at least 1).
    pub max_tcp_connections_per_cgroup: Option<u32>,
    /// Upstream lookups (queries the cache cannot answer) in flight at once per policy,
    /// UDP and TCP together. Past it a query is answered SERVFAIL with a
    /// `dns_policy_busy` event. Bounds the resolver's memory and the load a policy's
    /// sandboxes put on the upstream.
    pub max_upstream_lookups_per_policy: u32,
    /// Upstream lookups one cgroup (a sandbox, a pod's container) may have in flight at
    /// once, at most; below it a cgroup takes another only while it holds fewer than its
    /// policy has free (`crate::share`), so sandboxes asking for thousands of distinct
    /// names cannot take their policy's every lookup; past its share a query is
    /// answered SERVFAIL with a
    /// `dns_cgroup_busy` event naming the cgroup and the name. The cgroup is the kernel's
    /// record of the sender; queries without one share cgroup 0's share. Unset: a
    /// quarter of `max_upstream_lookups_per_policy` (at least 1).
    pub max_upstream_lookups_per_cgroup: Option<u32>,
}

impl DnsConfig {
    /// `max_ips_per_cgroup`, or its default: an eighth of the policy's share, at least
    /// one answer.
    pub fn ips_per_cgroup(&self) -> u32 {
        self.max_ips_per_cgroup
            .unwrap_or(self.max_ips_per_policy / 8)
            .max(self.max_ips_per_name)
            .max(1)
    }

    /// `max_tcp_connections_per_cgroup`, or its default: a quarter of the policy's cap.
    pub fn per_cgroup(&self) -> u32 {
        self.max_tcp_connections_per_cgroup
            .unwrap_or(self.max_tcp_connections_per_policy / 4)
            .max(1)
    }

    /// `max_upstream_lookups_per_cgroup`, or its default: a quarter of the policy's cap.
    pub fn upstream_lookups_per_cgroup(&self) -> u32 {
        self.max_upstream_lookups_per_cgroup
            .unwrap_or(self.max_upstream_lookups_per_policy / 4)
            .max(1)
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:53".into(),
            redirect: true,
            denied_name_rcode: DeniedRcode::Nxdomain,
            rebinding_rcode: RebindingRcode::Refused,
            upstreams: vec!["system".into()],
            min_ttl_secs: 5,
            max_ttl_secs: 3600,
            max_ips_per_name: 64,
            max_ips_per_policy: hb_common::limits::ALLOW4 / 8,
            max_ips_per_cgroup: None,
            tcp_idle_timeout_secs: 10,
            tcp_query_timeout_secs: 5,
            max_tcp_connections: 512,
            max_tcp_connections_per_policy: 32,
            max_tcp_connections_per_cgroup: None,
            max_upstream_lookups_per_policy: 256,
            max_upstream_lookups_per_cgroup: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeniedRcode {
    Nxdomain,
    Refused,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RebindingRcode {
    Refused,
    Servfail,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    /// `"default"` (the special-purpose registries, see [`egress::DEFAULT_DENY`]) or a list.
    pub deny_cidrs: DenyCidrs,
    /// Carve-outs from `deny_cidrs`.
    pub exception_cidrs: Vec<Spanned<String>>,
    /// IPv6 prefixes a NAT64 translator on the network serves (RFC 6052 lengths 32, 40,
    /// 48, 56, 64 or 96): an address under one is judged, in the kernel and by the
    /// resolvers, as the IPv4 address it embeds. `64:ff9b::/96` is judged so always.
    pub nat64_prefixes: Vec<Spanned<String>>,
    /// `deny_cidrs`, parsed (filled by validation).
    #[serde(skip)]
    pub deny: Vec<IpNet>,
    /// `exception_cidrs`, parsed (filled by validation).
    #[serde(skip)]
    pub exceptions: Vec<IpNet>,
    /// `nat64_prefixes`, parsed (filled by validation).
    #[serde(skip)]
    pub nat64: Vec<ipnet::Ipv6Net>,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            deny_cidrs: DenyCidrs::Default,
            exception_cidrs: Vec::new(),
            nat64_prefixes: vec![Spanned::new(0..0, egress::WELL_KNOWN_NAT64.into())],
            deny: Vec::new(),
            exceptions: Vec::new(),
            nat64: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum DenyCidrs {
    Default,
    List(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for DenyCidrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = DenyCidrs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""default" or a list of CIDRs"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DenyCidrs, E> {
                if v == "default" {
                    Ok(DenyCidrs::Default)
                } else {
                    Err(E::custom(format!(
                        r#"expected "default" or a list of CIDRs, found "{v}""#
                    )))
                }
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<DenyCidrs, A::Error> {
                let mut list = Vec::new();
                while let Some(c) = seq.next_element::<Spanned<String>>()? {
                    list.push(c);
                }
                Ok(DenyCidrs::List(list))
            }
        }
        d.deserialize_any(V)
    }
}

/// An IP network, written as a CIDR (`10.0.0.0/8`) or a bare address (a /32 or /128).
/// Host bits are cleared (`10.1.2.3/8` means `10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(pub IpNet);

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Cidr(IpNet::from(ip)));
        }
        Err(format!(
            "\"{s}\" is not a CIDR (expected e.g. \"10.0.0.0/8\", \"203.0.113.7\" or \"2001:db8::/32\")"
        ))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationConfig {
    pub name: Spanned<String>,
    /// `"bearer"`, `{ header = "X-API-Key" }` or `{ query = "api_key" }`.
    pub auth: toml::Value,
    pub hosts: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    /// URL schemes the credential may travel over: `"https"` (the default) and, only
    /// when listed here, `"http"`, which puts the credential on the wire in cleartext
    /// for anyone on the path to read. A request with a handle (or a redirect hop that
    /// would keep the credential) over another scheme is refused.
    #[serde(default = "default_integration_schemes")]
    pub schemes: Vec<String>,
    /// Ports the credential may be sent to on the integration's hosts. Default: the
    /// default port of each of `schemes` (443, and 80 if `"http"` is listed), so a
    /// listener on another port of the same host (a debug server, another tenant's
    /// service) never receives it unless listed.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// An upstream 401 to a credential rotated in less than this many seconds ago is
    /// retried once with the previous credential while that one is in its grace period
    /// (providers take a while to make a new key valid everywhere). 0 turns it off.
    #[serde(default = "default_propagation_secs")]
    pub propagation_secs: u64,
    /// Called (GET) with a new credential injected as for any call, to test it before it
    /// becomes active and to watch it afterwards. Required with `rotation`; its host,
    /// scheme and port must be the integration's own.
    #[serde(default)]
    pub verify_url: String,
    /// How hb gets a new credential from the provider (`[integration.rotation]`); none:
    /// rotations are only `hb-agent vault rotate` by hand.
    #[serde(default)]
    pub rotation: Option<RotationConfig>,
    /// `auth`, parsed (filled by validation).
    #[serde(skip)]
    pub auth_kind: Auth,
    /// `hosts`, parsed (filled by validation): exact names or `*.` wildcards.
    #[serde(skip)]
    pub host_patterns: Vec<crate::dns::names::Pattern>,
}

/// `[integration.rotation]`: the rotator and the rotation's timings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    /// The exec rotator: an argv (no shell; the first element an absolute path). It gets
    /// a JSON request on stdin (`op` create|revoke, `rotation`, `integration`,
    /// `account`, `secret`: the credential being replaced) and answers JSON on stdout
    /// (`{"secret": "…", "expires": "RFC 3339"?}` for create); exit 75 means "retry
    /// later". Its environment is empty but `PATH`. Exactly one of `exec` and `http`.
    #[serde(default)]
    pub exec: Vec<String>,
    /// The HTTP rotator (`[integration.rotation.http]`): the provider's API, called
    /// through the broker's validating outbound path. Exactly one of `exec` and `http`.
    #[serde(default)]
    pub http: Option<HttpRotation>,
    /// A rotator call gives up after this long: the exec rotator is killed (its whole
    /// process group), the HTTP rotator's request abandoned (retried later).
    #[serde(default = "default_rotator_timeout_secs")]
    pub timeout_secs: u64,
    /// The rotator's circuit breaker opens after this many retryable failures in a row
    /// (exit 75, a timeout, a refused connection, a 5xx or 429): no rotation of the
    /// integration calls the rotator while it is open.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long the breaker stays open the first time; each time its half-open trial
    /// call fails it opens again for twice as long, at most `breaker_open_cap_secs`.
    #[serde(default = "default_breaker_open_secs")]
    pub breaker_open_secs: u64,
    #[serde(default = "default_breaker_open_cap_secs")]
    pub breaker_open_cap_secs: u64,
    /// A `deadline_at_risk` alert when the account's active credential expires within
    /// this long and no rotation has replaced it yet. 0 (the default): a quarter of the
    /// credential's lifetime (the expiry detector rotates at two thirds of it, so the
    /// alert means the rotation has been failing for at least a twelfth of the lifetime).
    #[serde(default)]
    pub deadline_margin_secs: u64,
    /// How long the replaced credential stays usable after a rotation finishes.
    #[serde(default = "default_rotation_grace_secs")]
    pub grace_secs: u64,
    /// After finishing, the new credential is verified again after this long; if it
    /// fails then and the old one is still usable (and not compromised), the rotation
    /// is rolled back.
    #[serde(default = "default_rotation_watch_secs")]
    pub watch_secs: u64,
    /// Retries of a failing step wait `base × 2^attempt` (full jitter), at most `cap`.
    #[serde(default = "default_rotation_retry_base_secs")]
    pub retry_base_secs: u64,
    #[serde(default = "default_rotation_retry_cap_secs")]
    pub retry_cap_secs: u64,
    /// Rotate a credential this long after it was stored even if it does not expire
    /// (0: only by expiry). A credential with an expiry is rotated at two thirds of its
    /// lifetime.
    #[serde(default)]
    pub max_age_secs: u64,
    /// No rotation of an account starts by schedule within this long of the previous
    /// one's start (whatever became of it): a failing provider is not hammered.
    #[serde(default = "default_rotation_cooldown_secs")]
    pub cooldown_secs: u64,
    /// At most this many rotations of an account begin in any 24 hours (every trigger
    /// counts; past it `expiry` and `auth_failure` only alert; an operator's trigger
    /// is never refused).
    #[serde(default = "default_max_rotations_per_day")]
    pub max_rotations_per_day: u32,
    /// At most this many `canary` and `reflection` rotations of an account begin in any
    /// 24 hours (they skip `cooldown_secs` and `max_rotations_per_day`); past it the
    /// signal only alerts, and the caller that raised it is barred
    /// (`broker.suspect_bar_secs`).
    #[serde(default = "default_max_compromise_rotations_per_day")]
    pub max_compromise_rotations_per_day: u32,
    /// How long the `quarantine` action holds the account (read-only calls at
    /// `quarantine_calls_per_minute`).
    #[serde(default = "default_quarantine_secs")]
    pub quarantine_secs: u64,
    /// Calls a minute a quarantined account takes at least: every caller together, or
    /// each held caller of a `rate_spike` that names its callers (its learned rate ×
    /// 1.5, × the caller's share, when that is more; see `rotation::sensor`).
    #[serde(default = "default_quarantine_calls_per_minute")]
    pub quarantine_calls_per_minute: u32,
    /// What a decoy handle (`[[policy]] canary_handles`) used by an execution that held
    /// a handle of this integration does to the account (default `rotate_compromised`).
    #[serde(default = "compromised_action")]
    pub on_canary: DetectorAction,
    /// What this account's own credential seen in the answer to the call that carried
    /// it, or in what a caller sent, does (default `rotate_compromised`).
    #[serde(default = "compromised_action")]
    pub on_reflection: DetectorAction,
    /// What a key found dead by the verify probe after a 401 does (default `rotate`).
    #[serde(default = "rotate_action")]
    pub on_auth_failure: DetectorAction,
    /// A call answered 401 with the account's active key (after any propagation retry)
    /// is held while the verify probe decides and any rotation it starts finishes, at
    /// most this long, then sent once more with the new key (0: the 401 passes at
    /// once). Below `broker.request_timeout_secs`, which bounds the whole call.
    #[serde(default = "default_rotation_hold_secs")]
    pub hold_secs: u64,
    /// What a credential reaching two thirds of its lifetime or `max_age_secs` does
    /// (default `rotate`).
    #[serde(default = "rotate_action")]
    pub on_expiry: DetectorAction,
    /// The sensor's bucket width: each account's calls are counted per bucket of this
    /// many seconds (10; shorter only for tests), and the `rate_spike` detector judges
    /// each bucket's count.
    #[serde(default = "default_sensor_bucket_secs")]
    pub sensor_bucket_secs: u64,
    /// `rate_spike`: a bucket is anomalous when its count is at least `spike_z`
    /// standard deviations above the account's baseline (an exponentially weighted
    /// mean and variance of past counts) …
    #[serde(default = "default_spike_z")]
    pub spike_z: f64,
    /// … and at least `spike_ratio` times the baseline mean …
    #[serde(default = "default_spike_ratio")]
    pub spike_ratio: f64,
    /// … and at least this many calls.
    #[serde(default = "default_spike_min_count")]
    pub spike_min_count: u64,
    /// This many anomalous buckets in a row are a spike (a signal; another every 60
    /// buckets while it lasts). Anomalous buckets never enter the baseline.
    #[serde(default = "default_spike_buckets")]
    pub spike_buckets: u32,
    /// For this long after the sensor first sees an account only `spike_hard_cap`
    /// counts (the baseline is being learned).
    #[serde(default = "default_spike_learning_secs")]
    pub spike_learning_secs: u64,
    /// The baseline's half-life: how fast it follows a changing (normal) rate.
    #[serde(default = "default_spike_halflife_secs")]
    pub spike_halflife_secs: u64,
    /// A bucket with more calls than this is anomalous whatever the baseline (during
    /// learning too); 0: no cap.
    #[serde(default = "default_spike_hard_cap")]
    pub spike_hard_cap: u64,
    /// What a rate spike does (default `quarantine`: an agent flooding through the
    /// broker misbehaves).
    #[serde(default = "quarantine_action")]
    pub on_rate_spike: DetectorAction,
    /// A (method, host) pair never seen for the account is `novelty` once this long has
    /// passed since the sensor first saw the account.
    #[serde(default = "default_novelty_learning_secs")]
    pub novelty_learning_secs: u64,
    /// What a novel (method, host) does: `observe` or `alert` (the default) only.
    #[serde(default = "alert_action")]
    pub on_novelty: DetectorAction,
}

/// `[integration.rotation.http]`: a provider's API that mints and revokes keys.
///
/// Create: `method` to `url` with `{"op": "create", "rotation", "integration",
/// "account"}` (and `"secret"`, the key being replaced, only with `send_old_secret`);
/// the new key is the string at `secret_pointer` in the JSON answer. Revoke: `method` to
/// `revoke_url` (default `url`) with `{"op": "revoke", …, "key_sha256"}` (the SHA-256 of
/// the key to revoke, in hex: providers store keys hashed; `"secret"` too only with
/// `send_old_secret`). Every call carries `Idempotency-Key: <rotation id>:<op>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRotation {
    /// The provider's endpoint that mints a key (and revokes one, without `revoke_url`).
    /// Its host, scheme and port must be those of the integration whose credential
    /// authenticates the call (`auth`): that credential is sent there.
    pub url: String,
    /// The endpoint that revokes a key; "" (the default): `url`.
    #[serde(default)]
    pub revoke_url: String,
    /// The HTTP method of both calls (default `POST`).
    #[serde(default = "default_http_rotator_method")]
    pub method: String,
    /// What authenticates the calls: `"self"` (the key being replaced, for create, and
    /// the key being revoked, for revoke: self-rotating APIs) or `{ integration = "…",
    /// account = "…" }` (that account's active credential, e.g. an admin key). Injected
    /// as that integration injects its credential (`auth`: bearer, header or query).
    pub auth: HttpRotatorAuth,
    /// JSON pointer (RFC 6901) of the new key in the create answer (default `/secret`).
    #[serde(default = "default_secret_pointer")]
    pub secret_pointer: String,
    /// JSON pointer of the new key's expiry (RFC 3339 text or Unix seconds); "" (the
    /// default): the answer says nothing about expiry.
    #[serde(default)]
    pub expires_pointer: String,
    /// Put the key being replaced (create) or revoked (revoke) in the request body as
    /// `"secret"`. Off by default: only for providers that need the old key in the body.
    #[serde(default)]
    pub send_old_secret: bool,
}

/// What authenticates the HTTP rotator's calls.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawHttpRotatorAuth")]
pub enum HttpRotatorAuth {
    /// The key the call is about (being replaced, or being revoked).
    SelfKey,
    /// Another account's active credential in the vault.
    Credential {
        integration: String,
        account: String,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawHttpRotatorAuth {
    Word(String),
    #[serde(rename_all = "snake_case")]
    Credential {
        integration: String,
        account: String,
    },
}

impl TryFrom<RawHttpRotatorAuth> for HttpRotatorAuth {
    type Error = String;

    fn try_from(raw: RawHttpRotatorAuth) -> Result<Self, String> {
        match raw {
            RawHttpRotatorAuth::Word(w) if w == "self" => Ok(HttpRotatorAuth::SelfKey),
            RawHttpRotatorAuth::Word(w) => Err(format!(
                "auth {w:?}: expected \"self\" or {{ integration = \"…\", account = \"…\" }}"
            )),
            RawHttpRotatorAuth::Credential {
                integration,
                account,
            } => Ok(HttpRotatorAuth::Credential {
                integration,
                account,
            }),
        }
    }
}

fn default_http_rotator_method() -> String {
    "POST".into()
}

fn default_secret_pointer() -> String {
    "/secret".into()
}

fn default_breaker_failures() -> u32 {
    5
}

fn default_breaker_open_secs() -> u64 {
    60
}

fn default_breaker_open_cap_secs() -> u64 {
    900
}

/// What a detector's signal does to the account it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum DetectorAction {
    /// An audit record only.
    Observe,
    /// An audit record and an event on the event stream.
    Alert,
    /// Alert, and rotate the account (the old key keeps its grace period).
    Rotate,
    /// Alert, and rotate the account as compromised: no grace period, no rollback, the
    /// old key revoked at the provider as soon as the new one is active.
    RotateCompromised,
    /// Alert, hold calls with the account's key to read-only ones at a low rate for
    /// `quarantine_secs` (the calls of the caller that raised the signal, which is
    /// ended; of a rate spike's suspects; else every caller's).
    Quarantine,
}

impl DetectorAction {
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorAction::Observe => "observe",
            DetectorAction::Alert => "alert",
            DetectorAction::Rotate => "rotate",
            DetectorAction::RotateCompromised => "rotate_compromised",
            DetectorAction::Quarantine => "quarantine",
        }
    }
}

impl From<DetectorAction> for &'static str {
    fn from(a: DetectorAction) -> Self {
        a.as_str()
    }
}

impl TryFrom<String> for DetectorAction {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        Ok(match s.as_str() {
            "observe" => DetectorAction::Observe,
            "alert" => DetectorAction::Alert,
            "rotate" => DetectorAction::Rotate,
            "rotate_compromised" => DetectorAction::RotateCompromised,
            "quarantine" => DetectorAction::Quarantine,
            other => {
                return Err(format!(
                    "unknown action {other:?}: choose observe, alert, quarantine, rotate or \
                     rotate_compromised"
                ));
            }
        })
    }
}

fn compromised_action() -> DetectorAction {
    DetectorAction::RotateCompromised
}

fn rotate_action() -> DetectorAction {
    DetectorAction::Rotate
}

fn quarantine_action() -> DetectorAction {
    DetectorAction::Quarantine
}

fn alert_action() -> DetectorAction {
    DetectorAction::Alert
}

fn default_sensor_bucket_secs() -> u64 {
    10
}

fn default_spike_z() -> f64 {
    6.0
}

fn default_spike_ratio() -> f64 {
    4.0
}

fn default_spike_min_count() -> u64 {
    30
}

fn default_spike_buckets() -> u32 {
    3
}

fn default_spike_learning_secs() -> u64 {
    3600
}

fn default_spike_halflife_secs() -> u64 {
    3600
}

fn default_spike_hard_cap() -> u64 {
    6000
}

fn default_novelty_learning_secs() -> u64 {
    86_400
}

fn default_rotation_cooldown_secs() -> u64 {
    300
}

fn default_max_rotations_per_day() -> u32 {
    6
}

fn default_max_compromise_rotations_per_day() -> u32 {
    3
}

fn default_quarantine_secs() -> u64 {
    3600
}

fn default_quarantine_calls_per_minute() -> u32 {
    60
}

fn default_rotator_timeout_secs() -> u64 {
    30
}

fn default_rotation_grace_secs() -> u64 {
    600
}

fn default_rotation_hold_secs() -> u64 {
    15
}

fn default_rotation_watch_secs() -> u64 {
    60
}

fn default_rotation_retry_base_secs() -> u64 {
    5
}

fn default_rotation_retry_cap_secs() -> u64 {
    300
}

/// How an integration's credential is put on a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    #[default]
    Bearer,
    /// A named header carries the token as is (stored lower-case).
    Header(String),
    /// A query parameter carries the token.
    Query(String),
}

fn default_propagation_secs() -> u64 {
    60
}

fn default_integration_schemes() -> Vec<String> {
    vec!["https".into()]
}

/// `[integration.rotation]` and `verify_url` of a validated integration: the failing key
/// (below the integration) and why.
fn check_rotation(
    integ: &IntegrationConfig,
    broker: &BrokerConfig,
) -> Result<(), (&'static str, String)> {
    let request_timeout_secs = broker.request_timeout_secs;
    let name = integ.name.get_ref();
    if !integ.verify_url.is_empty() {
        on_integration(integ, &integ.verify_url).map_err(|m| ("verify_url", m))?;
    }
    let Some(r) = &integ.rotation else {
        return Ok(());
    };
    if integ.verify_url.is_empty() {
        return Err((
            "verify_url",
            format!(
                "integration \"{name}\" has a rotation but no verify_url to test new credentials with"
            ),
        ));
    }
    match (r.exec.first(), &r.http) {
        (Some(_), Some(_)) => {
            return Err((
                "rotation.http",
                "set exactly one of rotation.exec and rotation.http".into(),
            ));
        }
        (None, None) => {
            return Err((
                "rotation.exec",
                "a rotation needs a rotator: rotation.exec (an argv) or [integration.rotation.http]"
                    .into(),
            ));
        }
        (Some(cmd), None) if !cmd.starts_with('/') => {
            return Err((
                "rotation.exec",
                "must be an argv whose first element is an absolute path (no shell)".into(),
            ));
        }
        (Some(_), None) => {}
        (None, Some(http)) => check_http_rotator(http)?,
    }
    if !(1..=1000).contains(&r.breaker_failures) {
        return Err(("rotation.breaker_failures", "must be 1-1000".into()));
    }
    if r.breaker_open_secs == 0 || r.breaker_open_cap_secs < r.breaker_open_secs {
        return Err((
            "rotation.breaker_open_secs",
            "must be at least 1, and breaker_open_cap_secs at least breaker_open_secs".into(),
        ));
    }
    if !(1..=3600).contains(&r.timeout_secs) {
        return Err(("rotation.timeout_secs", "must be 1-3600".into()));
    }
    if r.http.is_some() && r.timeout_secs > broker.upstream_timeout_secs {
        return Err((
            "rotation.timeout_secs",
            format!(
                "must be at most broker.upstream_timeout_secs ({}) with an HTTP rotator: its \
                 request gives up then",
                broker.upstream_timeout_secs
            ),
        ));
    }
    if !(1..=10_000).contains(&r.max_rotations_per_day) {
        return Err(("rotation.max_rotations_per_day", "must be 1-10000".into()));
    }
    if !(1..=86_400 * 30).contains(&r.quarantine_secs) {
        return Err(("rotation.quarantine_secs", "must be 1-2592000".into()));
    }
    if !(1..=100_000).contains(&r.quarantine_calls_per_minute) {
        return Err((
            "rotation.quarantine_calls_per_minute",
            "must be 1-100000".into(),
        ));
    }
    if !(1..=10_000).contains(&r.max_compromise_rotations_per_day) {
        return Err((
            "rotation.max_compromise_rotations_per_day",
            "must be 1-10000".into(),
        ));
    }
    check_sensor(r)?;
    if r.hold_secs > 0 && r.hold_secs >= request_timeout_secs {
        return Err((
            "rotation.hold_secs",
            format!(
                "must be below broker.request_timeout_secs ({request_timeout_secs}): a held call \
                 is retried within that time"
            ),
        ));
    }
    if r.retry_base_secs == 0 || r.retry_cap_secs < r.retry_base_secs {
        return Err((
            "rotation.retry_base_secs",
            "must be at least 1, and retry_cap_secs at least retry_base_secs".into(),
        ));
    }
    Ok(())
}

/// The sensor's and the `rate_spike` and `novelty` detectors' keys.
fn check_sensor(r: &RotationConfig) -> Result<(), (&'static str, String)> {
    if !(1..=3600).contains(&r.sensor_bucket_secs) {
        return Err(("rotation.sensor_bucket_secs", "must be 1-3600".into()));
    }
    if !(r.spike_z.is_finite() && r.spike_z > 0.0) {
        return Err(("rotation.spike_z", "must be a number above 0".into()));
    }
    if !(r.spike_ratio.is_finite() && r.spike_ratio >= 1.0) {
        return Err((
            "rotation.spike_ratio",
            "must be a number of at least 1".into(),
        ));
    }
    if !(1..=1000).contains(&r.spike_buckets) {
        return Err(("rotation.spike_buckets", "must be 1-1000".into()));
    }
    if r.spike_halflife_secs < r.sensor_bucket_secs {
        return Err((
            "rotation.spike_halflife_secs",
            "must be at least sensor_bucket_secs".into(),
        ));
    }
    if !matches!(
        r.on_novelty,
        DetectorAction::Observe | DetectorAction::Alert
    ) {
        return Err((
            "rotation.on_novelty",
            format!(
                "\"{}\" is not allowed: a new method or host is evidence for a person to \
                 judge, not for a rotation or a quarantine (choose observe or alert)",
                r.on_novelty.as_str()
            ),
        ));
    }
    Ok(())
}

/// `url` may carry `integ`'s credential: on its hosts (by name), schemes and ports.
fn on_integration(integ: &IntegrationConfig, url: &str) -> Result<(), String> {
    let target =
        crate::broker::outbound::url::Target::parse(url).map_err(|e| format!("\"{url}\": {e}"))?;
    let host_ok = match &target.host {
        crate::broker::outbound::url::Host::Name(n) => {
            crate::dns::names::allowed(&integ.host_patterns, n)
        }
        crate::broker::outbound::url::Host::Ip(_) => false,
    };
    let origin_ok = integ.schemes.iter().any(|s| s == target.scheme.as_str())
        && integ.ports.contains(&target.port);
    if host_ok && origin_ok {
        Ok(())
    } else {
        Err(format!(
            "\"{url}\" is not on integration \"{}\"'s hosts, schemes and ports: the \
             credential is sent there",
            integ.name.get_ref()
        ))
    }
}

/// The integration whose HTTP rotator authenticates with `name`'s credential (another
/// integration's `rotation.http.auth`), if any: a key that mints keys.
fn rotator_key_of<'a>(integrations: &'a [IntegrationConfig], name: &str) -> Option<&'a str> {
    integrations.iter().find_map(|integ| {
        let http = integ.rotation.as_ref()?.http.as_ref()?;
        match &http.auth {
            HttpRotatorAuth::Credential { integration, .. }
                if integration == name && integ.name.get_ref() != name =>
            {
                Some(integ.name.get_ref().as_str())
            }
            _ => None,
        }
    })
}

/// `[integration.rotation.http]` on its own (its URLs against the authenticating
/// integration are checked by [`check_http_rotator_urls`], once every integration is).
fn check_http_rotator(http: &HttpRotation) -> Result<(), (&'static str, String)> {
    for (key, url) in [
        ("rotation.http.url", &http.url),
        ("rotation.http.revoke_url", &http.revoke_url),
    ] {
        if url.is_empty() && key == "rotation.http.revoke_url" {
            continue;
        }
        crate::broker::outbound::url::Target::parse(url)
            .map_err(|e| (key, format!("\"{url}\": {e}")))?;
    }
    let method = http.method.to_ascii_uppercase();
    if !is_token(&method) || matches!(method.as_str(), "CONNECT" | "TRACE" | "GET" | "HEAD") {
        return Err((
            "rotation.http.method",
            format!(
                "\"{}\" is not a method that carries a body (POST, PUT, PATCH…)",
                http.method
            ),
        ));
    }
    if !http.secret_pointer.starts_with('/') {
        return Err((
            "rotation.http.secret_pointer",
            "must be a JSON pointer (RFC 6901), e.g. \"/secret\" or \"/data/key\"".into(),
        ));
    }
    if !http.expires_pointer.is_empty() && !http.expires_pointer.starts_with('/') {
        return Err((
            "rotation.http.expires_pointer",
            "must be \"\" or a JSON pointer (RFC 6901), e.g. \"/expires_at\"".into(),
        ));
    }
    Ok(())
}

/// The HTTP rotator's URLs carry the credential named by its `auth`: they must be on
/// that integration's hosts, schemes and ports, as `verify_url` must be on its own.
fn check_http_rotator_urls(
    integrations: &[IntegrationConfig],
    integ: &IntegrationConfig,
) -> Result<(), (&'static str, String)> {
    let Some(http) = integ.rotation.as_ref().and_then(|r| r.http.as_ref()) else {
        return Ok(());
    };
    let auth_integ = match &http.auth {
        HttpRotatorAuth::SelfKey => integ,
        HttpRotatorAuth::Credential { integration, .. } => integrations
            .iter()
            .find(|i| i.name.get_ref() == integration)
            .ok_or_else(|| {
                (
                    "rotation.http.auth",
                    format!("no [[integration]] is named \"{integration}\""),
                )
            })?,
    };
    on_integration(auth_integ, &http.url).map_err(|m| ("rotation.http.url", m))?;
    if !http.revoke_url.is_empty() {
        on_integration(auth_integ, &http.revoke_url)
            .map_err(|m| ("rotation.http.revoke_url", m))?;
    }
    Ok(())
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub name: Spanned<String>,
    #[serde(default)]
    pub mode: PolicyMode,
    /// Names the resolver may answer: exact, or `*.suffix` for one or more labels.
    #[serde(default)]
    pub allow_domains: Vec<Spanned<String>>,
    /// `allow_domains`, parsed (filled by validation).
    #[serde(skip)]
    pub domains: Vec<crate::dns::names::Pattern>,
    /// Destinations allowed without DNS. Deny ranges still win unless carved out.
    #[serde(default)]
    pub allow_cidrs: Vec<Spanned<String>>,
    /// `allow_cidrs`, parsed (filled by validation).
    #[serde(skip)]
    pub allow: Vec<IpNet>,
    /// Integrations sandboxes under this policy may get handles for.
    #[serde(default)]
    pub integrations: Vec<Spanned<String>>,
    /// The accounts of a bound integration this policy's sandboxes may get handles for
    /// (`{ github = ["ci"] }`); an integration not named here: every account the vault
    /// holds for it. Two tenants' policies binding one integration are kept to their own
    /// accounts this way.
    #[serde(default)]
    pub accounts: Option<Spanned<BTreeMap<String, Vec<String>>>>,
    /// Whether sandboxes under this policy accept connections from outside their own
    /// sandbox (default false: the kernel drops the opening segment with an `inbound`
    /// event, and datagrams only come in from peers the policy admits; replies to the
    /// sandbox's own connections always flow).
    #[serde(default)]
    pub inbound: bool,
    /// The tenant whose work folder sandboxes under this policy get ("" = none unless
    /// `--tenant`).
    #[serde(default)]
    pub tenant: String,
    /// Whether sandboxes under this policy may use io_uring (default false: its socket
    /// operation would create sockets the seccomp filter never sees). With it, a sandbox
    /// opens through `IORING_OP_SOCKET` every socket family the kernel lets uid 65534
    /// create — `AF_VSOCK` (the hypervisor's host on a VM node), every netlink protocol
    /// (`NETLINK_SOCK_DIAG` lists the host's sockets) — and no cgroup hook judges them
    /// (`attack_review30`, open). Connects, sends and socket options through io_uring
    /// are judged as the system calls are.
    #[serde(default)]
    pub allow_io_uring: bool,
    /// Whether TCP connects to allowed destinations on `guard_ports` go through the
    /// egress guard, which checks the name the client sends (TLS SNI, HTTP Host)
    /// against the address and, over plain HTTP, the method (default true).
    #[serde(default = "yes")]
    pub guard: bool,
    /// The TCP ports the guard covers (default 80 and 443).
    #[serde(default = "default_guard_ports")]
    pub guard_ports: Vec<u16>,
    /// Every TCP port of an allowed destination goes through the guard (default false):
    /// a CDN that serves HTTPS on more ports than 80 and 443 (Cloudflare: 2053, 2083,
    /// 2087, 2096, 8443, …) cannot be fronted through them either. Only TLS and plain
    /// HTTP then pass (SSH, databases and other protocols are refused).
    #[serde(default)]
    pub guard_all_ports: bool,
    /// Plain-HTTP hosts that may receive any method (patterns as in `allow_domains`);
    /// other hosts get only `guard.readonly_methods`.
    #[serde(default)]
    pub write_domains: Vec<Spanned<String>>,
    /// `write_domains`, parsed (filled by validation).
    #[serde(skip)]
    pub writes: Vec<crate::dns::names::Pattern>,
    /// Whether a guarded policy's UDP to port 443 and to its other guarded ports (QUIC,
    /// HTTP/3) is judged like other UDP (default false: refused in the kernel, clients
    /// fall back to TCP).
    #[serde(default)]
    pub allow_quic: bool,
    /// Whether sandboxes under this policy may open ping sockets (`SOCK_DGRAM`,
    /// `IPPROTO_ICMP`/`IPPROTO_ICMPV6`, where `net.ipv4.ping_group_range` admits their
    /// group; default false: `socket()` fails with EPERM, reason `unjudged_send`). With
    /// it, echoes reach validated addresses only (`cgroup_skb/egress` judges them), but an
    /// echo to an IPv4 multicast group reaches the host's raw ICMP listeners: the kernel
    /// loops that copy to the host before any hook judges it.
    #[serde(default)]
    pub icmp_echo: bool,
    /// Whether sandboxes under this policy that hold `CAP_NET_RAW` (a pod may; `sandbox
    /// run` never grants it) may open raw sockets (default false: EPERM, reason
    /// `unjudged_send`). With it, their packets reach validated addresses only, but a
    /// packet to an IPv4 multicast group or broadcast address, written whole, reaches the
    /// host's listeners of any protocol (the copy the kernel loops to the host is judged
    /// by no hook), and a raw socket hears the packets of every protocol it names.
    /// Under `[kubernetes]`, an enforced pod whose spec keeps `CAP_NET_RAW` (the
    /// runtime's default) is frozen and killed unless its policy sets this: its packet
    /// sockets (`AF_PACKET`) pass every cgroup hook, so with it they reach any address.
    /// It spares `CAP_NET_RAW` alone: a pod holding a capability beyond the runtime's
    /// default set is refused under every policy.
    #[serde(default)]
    pub raw_sockets: bool,
    /// Decoy handles planted beside the first handle of each execution and account
    /// (0-16, default 0): listed with the caller's real handles by `GET /v1/handles`,
    /// indistinguishable from them, standing for no credential. Any use of one is the
    /// `canary` signal (see `[integration.rotation] on_canary`).
    #[serde(default)]
    pub canary_handles: u32,
}

/// The most decoy handles a policy may plant per execution and account.
pub const MAX_CANARY_HANDLES: u32 = 16;

impl PolicyConfig {
    /// Whether this policy's sandboxes may get a handle for `integration`'s `account`:
    /// it binds the integration, and `accounts` names the account or says nothing of
    /// the integration.
    pub fn binds(&self, integration: &str, account: &str) -> Binding {
        if !self.integrations.iter().any(|i| i.get_ref() == integration) {
            return Binding::Integration;
        }
        match self
            .accounts
            .as_ref()
            .and_then(|a| a.get_ref().get(integration))
        {
            Some(listed) if !listed.iter().any(|a| a == account) => Binding::Account,
            _ => Binding::Bound,
        }
    }
}

/// `accounts` of `policy` names only integrations it binds, each with one or more
/// distinct account names (as a handle request may carry them: 1–256 characters, no
/// control character).
fn check_policy_accounts(
    policy: &PolicyConfig,
    accounts: &BTreeMap<String, Vec<String>>,
) -> Result<(), String> {
    for (integration, listed) in accounts {
        if !policy
            .integrations
            .iter()
            .any(|i| i.get_ref() == integration)
        {
            return Err(format!(
                "names integration \"{integration}\", which this policy does not bind \
                 (add it to integrations, or remove it here)"
            ));
        }
        if listed.is_empty() {
            return Err(format!(
                "lists no account of \"{integration}\": name its accounts, or leave it out \
                 to allow every account"
            ));
        }
        for (k, account) in listed.iter().enumerate() {
            if account.is_empty() || account.len() > 256 || account.chars().any(char::is_control) {
                return Err(format!(
                    "account {k} of \"{integration}\" must be 1-256 characters without \
                     control characters"
                ));
            }
            if listed[..k].contains(account) {
                return Err(format!(
                    "account \"{account}\" of \"{integration}\" is listed twice"
                ));
            }
        }
    }
    Ok(())
}

/// What [`PolicyConfig::binds`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Bound,
    /// The integration is not bound.
    Integration,
    /// The integration is bound, for other accounts than this one.
    Account,
}

fn yes() -> bool {
    true
}

fn default_guard_ports() -> Vec<u16> {
    vec![80, 443]
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    #[default]
    Enforce,
    /// Log would-be refusals, block nothing.
    Audit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Glob below the cgroup2 mount (`*` stays within one path segment).
    pub cgroup: Spanned<String>,
    pub policy: Spanned<String>,
}

impl Config {
    /// Reads and validates a config file, or the embedded default when `path` is `None`.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::parse(&text, &path.display().to_string())
            }
            None => Self::parse(DEFAULT_TOML, "(embedded default)"),
        }
    }

    /// Parses and validates `text`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.validate(text, origin)?;
        Ok(config)
    }

    fn validate(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, span: Option<std::ops::Range<usize>>, message: String| {
            ConfigError::Invalid {
                origin: origin.to_owned(),
                key,
                line: span.map_or(0, |s| line_of(text, s.start)),
                message,
            }
        };
        let key_line = |key: &str| find_key_line(text, key);

        let root = self.agent.cgroup_root.trim_matches('/');
        if root.is_empty()
            || root
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                key: "agent.cgroup_root".into(),
                line: key_line("cgroup_root"),
                message: format!(
                    "\"{}\" must be a relative cgroup path like \"hb\" (not the root itself)",
                    self.agent.cgroup_root
                ),
            });
        }
        if let Some((key, message)) = self.sandbox_defaults.problems().into_iter().next() {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                key: format!("sandbox_defaults.{key}"),
                line: key_line(key),
                message,
            });
        }
        if !self.agent.bpffs_dir.is_absolute() {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                key: "agent.bpffs_dir".into(),
                line: key_line("bpffs_dir"),
                message: "must be an absolute path on a bpf filesystem".into(),
            });
        }
        if self
            .broker
            .policy_sockets_dir
            .as_ref()
            .is_some_and(|d| !d.is_absolute() || d == Path::new("/"))
        {
            // Relative, it named one folder for the agent and another for `sandbox run`
            // (each its own working directory): a socket found there was bound into the
            // sandbox as its broker, and with none the sandbox fell back to the main
            // socket. `/` would be hidden from every sandbox (the folder is).
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                key: "broker.policy_sockets_dir".into(),
                line: key_line("policy_sockets_dir"),
                message: "must be an absolute path below / (e.g. \"/run/hb/policies\")".into(),
            });
        }
        if u32::from_str_radix(&self.broker.socket_mode, 8)
            .map_or(true, |m| m > 0o777 || m & 0o600 != 0o600)
        {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                key: "broker.socket_mode".into(),
                line: key_line("socket_mode"),
                message: format!(
                    "\"{}\" must be octal permission bits that let the owner read and write, like \"0660\"",
                    self.broker.socket_mode
                ),
            });
        }
        for (key, value) in [
            ("broker.session_ttl_secs", self.broker.session_ttl_secs),
            (
                "broker.request_timeout_secs",
                self.broker.request_timeout_secs,
            ),
            ("broker.max_connections", self.broker.max_connections as u64),
            (
                "broker.header_read_timeout_secs",
                self.broker.header_read_timeout_secs,
            ),
            (
                "broker.scrub_per_minute",
                u64::from(self.broker.scrub_per_minute),
            ),
            (
                "broker.handles_per_minute",
                u64::from(self.broker.handles_per_minute),
            ),
            (
                "broker.max_handles_per_caller",
                self.broker.max_handles_per_caller as u64,
            ),
            (
                "broker.max_connections_per_caller",
                self.broker.max_connections_per_caller as u64,
            ),
            ("broker.suspect_bar_secs", self.broker.suspect_bar_secs),
            ("broker.fragment_bar_secs", self.broker.fragment_bar_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    origin: origin.into(),
                    key: key.into(),
                    line: key_line(key.trim_start_matches("broker.")),
                    message: "must be at least 1".into(),
                });
            }
        }
        // A day bounds the deadline arithmetic; a response must fit in memory.
        for (key, value, max) in [
            (
                "broker.upstream_timeout_secs",
                self.broker.upstream_timeout_secs,
                86_400,
            ),
            (
                "broker.max_response_bytes",
                self.broker.max_response_bytes,
                1 << 30,
            ),
        ] {
            if value == 0 || value > max {
                return Err(ConfigError::Invalid {
                    origin: origin.into(),
                    key: key.into(),
                    line: key_line(key.trim_start_matches("broker.")),
                    message: format!("{value} is outside 1..={max}"),
                });
            }
        }
        let idle_floor = self.broker.request_timeout_secs.max(15);
        if self.broker.idle_timeout_secs <= idle_floor || self.broker.idle_timeout_secs > 86_400 {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                key: "broker.idle_timeout_secs".into(),
                line: key_line("idle_timeout_secs"),
                message: format!(
                    "{} must be over broker.request_timeout_secs and the event stream's 15 s keep-alive ({idle_floor}) and at most a day",
                    self.broker.idle_timeout_secs
                ),
            });
        }
        self.validate_kubernetes(text, origin)?;
        if self.agent.rescan_interval_ms == 0 {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                key: "agent.rescan_interval_ms".into(),
                line: key_line("rescan_interval_ms"),
                message: "must be at least 1".into(),
            });
        }
        if !self.agent.metrics_listen.is_empty()
            && self
                .agent
                .metrics_listen
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                key: "agent.metrics_listen".into(),
                line: key_line("metrics_listen"),
                message: format!(
                    "\"{}\" is not an IP address and port like \"127.0.0.1:9464\" (or \"\" for none)",
                    self.agent.metrics_listen
                ),
            });
        }
        let listen: std::net::SocketAddrV4 =
            self.dns.listen.parse().map_err(|_| ConfigError::Invalid {
                origin: origin.into(),
                key: "dns.listen".into(),
                line: key_line("listen"),
                message: format!(
                    "\"{}\" is not an IPv4 address and port like \"127.0.0.1:5300\"",
                    self.dns.listen
                ),
            })?;
        if u32::from(listen.port()) + hb_common::limits::POLICIES > 65_536 || listen.port() == 0 {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                key: "dns.listen".into(),
                line: key_line("listen"),
                message: format!(
                    "port {} leaves no room for one port per policy (port + {} must stay below 65536)",
                    listen.port(),
                    hb_common::limits::POLICIES
                ),
            });
        }
        if self.dns.min_ttl_secs > self.dns.max_ttl_secs {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                key: "dns.min_ttl_secs".into(),
                line: key_line("min_ttl_secs"),
                message: format!(
                    "{} is larger than dns.max_ttl_secs ({})",
                    self.dns.min_ttl_secs, self.dns.max_ttl_secs
                ),
            });
        }
        if self.dns.max_ips_per_policy < self.dns.max_ips_per_name.max(1) {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                key: "dns.max_ips_per_policy".into(),
                line: key_line("max_ips_per_policy"),
                message: format!(
                    "{} is smaller than dns.max_ips_per_name ({}): one answer must fit in a policy's share",
                    self.dns.max_ips_per_policy, self.dns.max_ips_per_name
                ),
            });
        }
        if let Some(per_cgroup) = self.dns.max_ips_per_cgroup
            && (per_cgroup < self.dns.max_ips_per_name.max(1)
                || per_cgroup > self.dns.max_ips_per_policy)
        {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                key: "dns.max_ips_per_cgroup".into(),
                line: key_line("max_ips_per_cgroup"),
                message: format!(
                    "{per_cgroup} is outside [dns.max_ips_per_name ({}), dns.max_ips_per_policy ({})]: one answer must fit in a sandbox's share, and the share in its policy's",
                    self.dns.max_ips_per_name, self.dns.max_ips_per_policy
                ),
            });
        }
        for (key, value) in [
            ("tcp_idle_timeout_secs", self.dns.tcp_idle_timeout_secs),
            ("tcp_query_timeout_secs", self.dns.tcp_query_timeout_secs),
            (
                "max_tcp_connections",
                u64::from(self.dns.max_tcp_connections),
            ),
            (
                "max_tcp_connections_per_policy",
                u64::from(self.dns.max_tcp_connections_per_policy),
            ),
            (
                "max_tcp_connections_per_cgroup",
                u64::from(self.dns.max_tcp_connections_per_cgroup.unwrap_or(1)),
            ),
            (
                "max_upstream_lookups_per_policy",
                u64::from(self.dns.max_upstream_lookups_per_policy),
            ),
            (
                "max_upstream_lookups_per_cgroup",
                u64::from(self.dns.max_upstream_lookups_per_cgroup.unwrap_or(1)),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    origin: origin.into(),
                    key: format!("dns.{key}"),
                    line: key_line(key),
                    message: "must be at least 1".into(),
                });
            }
        }

        for (i, m) in self.broker.readonly_methods.iter_mut().enumerate() {
            if !is_token(m) {
                return Err(ConfigError::Invalid {
                    origin: origin.into(),
                    key: format!("broker.readonly_methods[{i}]"),
                    line: key_line("readonly_methods"),
                    message: format!("\"{m}\" is not an HTTP method"),
                });
            }
            *m = m.to_ascii_uppercase();
        }
        let mut integrations = HashSet::new();
        for (i, integ) in self.integrations.iter_mut().enumerate() {
            let name = integ.name.get_ref().clone();
            let span = Some(integ.name.span());
            if !integrations.insert(name.clone()) {
                return Err(invalid(
                    format!("integration[{i}].name"),
                    span,
                    format!("integration \"{name}\" is defined twice"),
                ));
            }
            integ.auth_kind = match &integ.auth {
                toml::Value::String(s) if s == "bearer" => Auth::Bearer,
                toml::Value::Table(t) if t.len() == 1 => match t.iter().next() {
                    Some((k, toml::Value::String(v))) if k == "header" && is_token(v) => {
                        Auth::Header(v.to_ascii_lowercase())
                    }
                    Some((k, toml::Value::String(v))) if k == "query" && !v.is_empty() => {
                        Auth::Query(v.clone())
                    }
                    _ => {
                        return Err(invalid(
                            format!("integration[{i}].auth"),
                            span,
                            format!(
                                "integration \"{name}\": auth must be \"bearer\", {{ header = \"X-Name\" }} or {{ query = \"param\" }}"
                            ),
                        ));
                    }
                },
                _ => {
                    return Err(invalid(
                        format!("integration[{i}].auth"),
                        span,
                        format!(
                            "integration \"{name}\": auth must be \"bearer\", {{ header = \"X-Name\" }} or {{ query = \"param\" }}"
                        ),
                    ));
                }
            };
            if integ.hosts.is_empty() {
                return Err(invalid(
                    format!("integration[{i}].hosts"),
                    span,
                    format!("integration \"{name}\" lists no hosts"),
                ));
            }
            integ.host_patterns = Vec::new();
            for (j, h) in integ.hosts.iter().enumerate() {
                let p = crate::dns::names::Pattern::parse(h).map_err(|m| {
                    invalid(format!("integration[{i}].hosts[{j}]"), span.clone(), m)
                })?;
                integ.host_patterns.push(p);
            }
            if integ.schemes.is_empty() {
                return Err(invalid(
                    format!("integration[{i}].schemes"),
                    span,
                    format!("integration \"{name}\" lists no schemes (\"https\", \"http\")"),
                ));
            }
            for (j, scheme) in integ.schemes.iter_mut().enumerate() {
                *scheme = scheme.to_ascii_lowercase();
                if scheme != "https" && scheme != "http" {
                    return Err(invalid(
                        format!("integration[{i}].schemes[{j}]"),
                        span.clone(),
                        format!("\"{scheme}\" is not \"https\" or \"http\""),
                    ));
                }
            }
            if integ.ports.is_empty() {
                integ.ports = integ
                    .schemes
                    .iter()
                    .map(|s| if s == "http" { 80 } else { 443 })
                    .collect();
                integ.ports.dedup();
            }
            if let Some(j) = integ.ports.iter().position(|&p| p == 0) {
                return Err(invalid(
                    format!("integration[{i}].ports[{j}]"),
                    span.clone(),
                    "port 0 is not a port".to_owned(),
                ));
            }
            if integ.methods.is_empty() {
                integ.methods = vec!["GET".into(), "HEAD".into()];
            }
            if let Err((key, message)) = check_rotation(integ, &self.broker) {
                return Err(invalid(format!("integration[{i}].{key}"), span, message));
            }
            for (j, m) in integ.methods.iter_mut().enumerate() {
                if !is_token(m) {
                    return Err(invalid(
                        format!("integration[{i}].methods[{j}]"),
                        span.clone(),
                        format!("\"{m}\" is not an HTTP method"),
                    ));
                }
                *m = m.to_ascii_uppercase();
            }
        }

        for (i, integ) in self.integrations.iter().enumerate() {
            if let Err((key, message)) = check_http_rotator_urls(&self.integrations, integ) {
                return Err(invalid(
                    format!("integration[{i}].{key}"),
                    Some(integ.name.span()),
                    message,
                ));
            }
        }

        let mut policies = HashSet::new();
        for (i, policy) in self.policies.iter().enumerate() {
            let name = policy.name.get_ref();
            // A policy's name is a folder of `broker.policy_sockets_dir`: one path
            // component, never `.` or `..`.
            if name.is_empty()
                || name.len() >= hb_common::limits::POLICY_NAME_LEN
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
                || name == "."
                || name == ".."
            {
                return Err(invalid(
                    format!("policy[{i}].name"),
                    Some(policy.name.span()),
                    format!(
                        "\"{name}\" must be 1-{} characters of A-Z a-z 0-9 - _ . (not \".\" or \"..\": \
                         it names the policy's folder of broker.policy_sockets_dir)",
                        hb_common::limits::POLICY_NAME_LEN - 1
                    ),
                ));
            }
            if !policies.insert(name.as_str()) {
                return Err(invalid(
                    format!("policy[{i}].name"),
                    Some(policy.name.span()),
                    format!("policy \"{name}\" is defined twice"),
                ));
            }
            for (j, integ) in policy.integrations.iter().enumerate() {
                if !integrations.contains(integ.get_ref().as_str()) {
                    return Err(invalid(
                        format!("policy[{i}].integrations[{j}]"),
                        Some(integ.span()),
                        format!("no [[integration]] is named \"{}\"", integ.get_ref()),
                    ));
                }
                if let Some(rotated) = rotator_key_of(&self.integrations, integ.get_ref()) {
                    return Err(invalid(
                        format!("policy[{i}].integrations[{j}]"),
                        Some(integ.span()),
                        format!(
                            "\"{}\" authenticates the HTTP rotator of \"{rotated}\" \
                             (its rotation.http.auth): a sandbox holding a handle to it could \
                             mint and revoke that integration's keys; give it to no policy",
                            integ.get_ref()
                        ),
                    ));
                }
            }
            if let Some(accounts) = &policy.accounts {
                check_policy_accounts(policy, accounts.get_ref()).map_err(|message| {
                    invalid(
                        format!("policy[{i}].accounts"),
                        Some(accounts.span()),
                        message,
                    )
                })?;
            }
        }
        if self.policies.len() > hb_common::limits::POLICIES as usize {
            return Err(invalid(
                "policy".into(),
                None,
                format!(
                    "{} policies configured; at most {} fit the kernel's policy table",
                    self.policies.len(),
                    hb_common::limits::POLICIES
                ),
            ));
        }

        if !self.broker.host_policy.is_empty()
            && !policies.contains(self.broker.host_policy.as_str())
        {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                key: "broker.host_policy".into(),
                line: key_line("host_policy"),
                message: format!("no [[policy]] is named \"{}\"", self.broker.host_policy),
            });
        }
        for (i, sandbox) in self.sandboxes.iter().enumerate() {
            let policy = sandbox.policy.get_ref();
            if !policies.contains(policy.as_str()) {
                return Err(invalid(
                    format!("sandbox[{i}].policy"),
                    Some(sandbox.policy.span()),
                    format!("no [[policy]] is named \"{policy}\""),
                ));
            }
            let glob = sandbox.cgroup.get_ref().trim_matches('/');
            if let Err(e) = glob::Pattern::new(glob) {
                return Err(invalid(
                    format!("sandbox[{i}].cgroup"),
                    Some(sandbox.cgroup.span()),
                    format!("\"{glob}\" is not a valid glob: {e}"),
                ));
            }
            if !glob.starts_with(&format!("{root}/")) {
                return Err(invalid(
                    format!("sandbox[{i}].cgroup"),
                    Some(sandbox.cgroup.span()),
                    format!(
                        "\"{glob}\" is not below agent.cgroup_root \"{root}\": hb's programs only \
                         run for cgroups under it"
                    ),
                ));
            }
        }

        // CIDRs are parsed here, not by serde, so an error points at the element's own
        // line rather than at the start of its array.
        let parse = |key: String, list: &[Spanned<String>]| -> Result<Vec<IpNet>, ConfigError> {
            list.iter()
                .enumerate()
                .map(|(i, c)| {
                    c.get_ref()
                        .parse::<Cidr>()
                        .map(|c| c.0)
                        .map_err(|m| invalid(format!("{key}[{i}]"), Some(c.span()), m))
                })
                .collect()
        };
        let deny = match &self.egress.deny_cidrs {
            DenyCidrs::Default => egress::default_deny(),
            DenyCidrs::List(list) => parse("egress.deny_cidrs".into(), list)?,
        };
        let exceptions = parse(
            "egress.exception_cidrs".into(),
            &self.egress.exception_cidrs,
        )?;
        let mut allows = Vec::new();
        for (i, policy) in self.policies.iter().enumerate() {
            allows.push(parse(
                format!("policy[{i}].allow_cidrs"),
                &policy.allow_cidrs,
            )?);
        }
        for (i, (policy, allow)) in self.policies.iter().zip(&allows).enumerate() {
            for (j, (cidr, &net)) in policy.allow_cidrs.iter().zip(allow).enumerate() {
                // Only a CIDR wholly inside a deny range is surely a mistake; a wider one
                // (even 0.0.0.0/0: "any public address") keeps its public part.
                let covered_by_deny = deny.iter().any(|d| d.contains(&net));
                let carved_out = exceptions.iter().any(|e| e.contains(&net));
                if covered_by_deny && !carved_out {
                    return Err(invalid(
                        format!("policy[{i}].allow_cidrs[{j}]"),
                        Some(cidr.span()),
                        format!(
                            "{net} lies inside the deny ranges, which win over allow_cidrs; carve it \
                             out with egress.exception_cidrs if it is really meant"
                        ),
                    ));
                }
            }
        }
        for (policy, allow) in self.policies.iter_mut().zip(allows) {
            policy.allow = allow;
        }
        for (i, policy) in self.policies.iter_mut().enumerate() {
            let mut domains = Vec::new();
            for (j, d) in policy.allow_domains.iter().enumerate() {
                let pattern = crate::dns::names::Pattern::parse(d.get_ref()).map_err(|m| {
                    invalid(format!("policy[{i}].allow_domains[{j}]"), Some(d.span()), m)
                })?;
                domains.push(pattern);
            }
            policy.domains = domains;
        }
        self.validate_guard(text, origin)?;
        self.validate_scrub(text, origin)?;
        let mut nat64 = Vec::new();
        for (i, p) in self.egress.nat64_prefixes.iter().enumerate() {
            let span = p.span();
            // A default entry has no span in the text; its line is the key's, if any.
            let line = if span.end == 0 {
                key_line("nat64_prefixes")
            } else {
                line_of(text, span.start)
            };
            let net = egress::parse_nat64_prefix(p.get_ref()).map_err(|message| {
                ConfigError::Invalid {
                    origin: origin.into(),
                    key: format!("egress.nat64_prefixes[{i}]"),
                    line,
                    message,
                }
            })?;
            if !nat64.contains(&net) {
                nat64.push(net);
            }
        }
        if nat64.len() > hb_common::limits::NAT64_PREFIXES as usize {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                key: "egress.nat64_prefixes".into(),
                line: key_line("nat64_prefixes"),
                message: format!(
                    "{} prefixes configured; at most {} fit the kernel's table",
                    nat64.len(),
                    hb_common::limits::NAT64_PREFIXES
                ),
            });
        }
        self.egress.deny = deny;
        self.egress.exceptions = exceptions;
        self.egress.nat64 = nat64;
        Ok(())
    }

    /// The `[guard]` section and each policy's guard keys.
    /// Reads and compiles `scrub.rules_files`: the agent does not start without the rules
    /// it was told to run.
    fn validate_scrub(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        // A path relative to the config file's directory (origin is its path, or a
        // parenthesised name for text that has none).
        let dir = (!origin.starts_with('('))
            .then(|| std::path::Path::new(origin).parent())
            .flatten()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let paths: Vec<PathBuf> = self
            .scrub
            .rules_files
            .iter()
            .map(|f| dir.join(f.get_ref()))
            .collect();
        if !paths.is_empty() {
            let rules = crate::scrub::RuleSet::load_each(&paths).map_err(|(i, e)| {
                ConfigError::Invalid {
                    origin: origin.to_owned(),
                    key: "scrub.rules_files".into(),
                    line: line_of(text, self.scrub.rules_files[i].span().start),
                    message: format!("{:#}", anyhow::Error::from(e)),
                }
            })?;
            self.scrub.rules = std::sync::Arc::new(rules);
        }
        Ok(())
    }

    fn validate_guard(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, line: usize, message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            line,
            message,
        };
        let section_line = find_section_key_line(text, "guard", "listen");
        let listen: std::net::SocketAddrV4 = self.guard.listen.parse().map_err(|_| {
            invalid(
                "guard.listen".into(),
                section_line,
                format!(
                    "\"{}\" is not an IPv4 address and port like \"127.0.0.1:15300\"",
                    self.guard.listen
                ),
            )
        })?;
        let ports = |base: u16| u32::from(base)..u32::from(base) + hb_common::limits::POLICIES;
        if ports(listen.port()).end > 65_536 || listen.port() == 0 {
            return Err(invalid(
                "guard.listen".into(),
                section_line,
                format!(
                    "port {} leaves no room for one port per policy (port + {} must stay below 65536)",
                    listen.port(),
                    hb_common::limits::POLICIES
                ),
            ));
        }
        let dns = ports(self.dns_listen().port());
        let guard = ports(listen.port());
        if self.dns.redirect && dns.start < guard.end && guard.start < dns.end {
            return Err(invalid(
                "guard.listen".into(),
                section_line,
                format!(
                    "ports {}..{} overlap the resolver's ({}..{}, dns.listen)",
                    guard.start, guard.end, dns.start, dns.end
                ),
            ));
        }
        for (key, value) in [
            (
                "guard.first_flight_timeout_secs",
                self.guard.first_flight_timeout_secs,
            ),
            (
                "guard.max_connections_per_policy",
                u64::from(self.guard.max_connections_per_policy),
            ),
            (
                "guard.max_connections_per_cgroup",
                u64::from(self.guard.max_connections_per_cgroup.unwrap_or(1)),
            ),
            ("guard.idle_timeout_secs", self.guard.idle_timeout_secs),
        ] {
            const MAX: u64 = 86_400 * 365;
            if value == 0 || value > MAX {
                return Err(invalid(
                    key.into(),
                    find_key_line(text, key.trim_start_matches("guard.")),
                    format!("{value} is outside 1..={MAX}"),
                ));
            }
        }
        for (i, m) in self.guard.readonly_methods.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(invalid(
                    format!("guard.readonly_methods[{i}]"),
                    find_key_line(text, "readonly_methods"),
                    format!("\"{m}\" is not an upper-case HTTP method like \"GET\""),
                ));
            }
        }
        let mut total_ports = 0usize;
        for (i, policy) in self.policies.iter_mut().enumerate() {
            if policy.guard_all_ports && !policy.guard {
                return Err(invalid(
                    format!("policy[{i}].guard_all_ports"),
                    line_of(text, policy.name.span().start),
                    "needs guard = true".into(),
                ));
            }
            if policy.canary_handles > MAX_CANARY_HANDLES {
                return Err(invalid(
                    format!("policy[{i}].canary_handles"),
                    line_of(text, policy.name.span().start),
                    format!("must be 0-{MAX_CANARY_HANDLES}"),
                ));
            }
            if policy.guard && !policy.guard_all_ports && policy.guard_ports.is_empty() {
                return Err(invalid(
                    format!("policy[{i}].guard_ports"),
                    line_of(text, policy.name.span().start),
                    "is empty while guard = true; set guard = false to turn the guard off".into(),
                ));
            }
            if let Some(p) = policy.guard_ports.iter().find(|p| **p == 0) {
                return Err(invalid(
                    format!("policy[{i}].guard_ports"),
                    line_of(text, policy.name.span().start),
                    format!("{p} is not a TCP port"),
                ));
            }
            policy.guard_ports.sort_unstable();
            policy.guard_ports.dedup();
            if policy.guard {
                total_ports += policy.guard_ports.len();
            }
            let mut writes = Vec::new();
            for (j, d) in policy.write_domains.iter().enumerate() {
                let pattern = crate::dns::names::Pattern::parse(d.get_ref()).map_err(|m| {
                    invalid(
                        format!("policy[{i}].write_domains[{j}]"),
                        line_of(text, d.span().start),
                        m,
                    )
                })?;
                writes.push(pattern);
            }
            policy.writes = writes;
        }
        if total_ports > hb_common::limits::GUARD_PORTS as usize {
            return Err(invalid(
                "policy.guard_ports".into(),
                0,
                format!(
                    "{total_ports} guard ports configured in all; at most {} fit the kernel's table",
                    hb_common::limits::GUARD_PORTS
                ),
            ));
        }
        Ok(())
    }

    /// The guard's address and the port of policy 0 (validated at parse time).
    pub fn guard_listen(&self) -> std::net::SocketAddrV4 {
        self.guard
            .listen
            .parse()
            .unwrap_or(std::net::SocketAddrV4::new(
                std::net::Ipv4Addr::LOCALHOST,
                15_300,
            ))
    }

    /// Whether any policy sends connects through the guard.
    pub fn guard_in_use(&self) -> bool {
        self.policies.iter().any(|p| p.guard)
    }

    /// The resolver's address and the port of policy 0 (validated at parse time).
    /// `agent.metrics_listen`, or `None` when it is `""` (validated at load).
    pub fn metrics_listen(&self) -> Option<std::net::SocketAddr> {
        self.agent.metrics_listen.parse().ok()
    }

    pub fn dns_listen(&self) -> std::net::SocketAddrV4 {
        self.dns
            .listen
            .parse()
            .unwrap_or(std::net::SocketAddrV4::new(
                std::net::Ipv4Addr::LOCALHOST,
                53,
            ))
    }

    /// The cgroup below the cgroup2 mount that programs attach to, without slashes.
    pub fn cgroup_root(&self) -> &str {
        self.agent.cgroup_root.trim_matches('/')
    }
}

/// 1-based line of a byte offset.
impl Config {
    fn validate_kubernetes(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let k = &self.kubernetes;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            origin: origin.into(),
            key: format!("kubernetes.{key}"),
            line: find_section_key_line(text, "kubernetes", key),
            message,
        };
        let root = self.cgroup_root();
        let kube_root = k.cgroup_root.trim_matches('/');
        if !kube_root.is_empty()
            && (kube_root
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
                || !(kube_root == root || kube_root.starts_with(&format!("{root}/"))))
        {
            return Err(invalid(
                "cgroup_root",
                format!(
                    "\"{kube_root}\" must be agent.cgroup_root \"{root}\" or a cgroup below it: hb's \
                     programs only run for cgroups under agent.cgroup_root"
                ),
            ));
        }
        if !k.default_policy.is_empty()
            && !self
                .policies
                .iter()
                .any(|p| *p.name.get_ref() == k.default_policy)
        {
            return Err(invalid(
                "default_policy",
                format!("no [[policy]] is named \"{}\"", k.default_policy),
            ));
        }
        if k.enabled && self.policies.is_empty() {
            return Err(invalid(
                "enabled",
                "enforced pods need at least one [[policy]]".into(),
            ));
        }
        for (key, value) in [
            ("enforce_namespace_label", &k.enforce_namespace_label),
            ("policy_annotation", &k.policy_annotation),
            (
                "allowed_policies_annotation",
                &k.allowed_policies_annotation,
            ),
        ] {
            if value.is_empty()
                || value.contains(|c: char| c.is_whitespace() || c == '=' || c == ',')
            {
                return Err(invalid(
                    key,
                    format!("\"{value}\" is not a label or annotation key"),
                ));
            }
        }
        if k.rescan_interval_ms == 0 {
            return Err(invalid("rescan_interval_ms", "must be at least 1".into()));
        }
        for ns in &k.static_pod_namespaces {
            let dns_label = !ns.is_empty()
                && ns.len() <= 63
                && ns
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !ns.starts_with('-')
                && !ns.ends_with('-');
            if !dns_label {
                return Err(invalid(
                    "static_pod_namespaces",
                    format!("\"{ns}\" is not a namespace name (a DNS label: a-z, 0-9, '-')"),
                ));
            }
        }
        let profile = &k.seccomp_profile;
        if profile.starts_with('/') || profile.split('/').any(|p| p == "..") {
            return Err(invalid(
                "seccomp_profile",
                format!(
                    "\"{profile}\" must be a path below the kubelet's seccomp folder, as a pod's \
                     localhostProfile names it (e.g. \"hb.json\")"
                ),
            ));
        }
        for class in &k.runtime_classes {
            let subdomain = !class.is_empty()
                && class.len() <= 253
                && class.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !subdomain {
                return Err(invalid(
                    "runtime_classes",
                    format!(
                        "\"{class}\" is not a RuntimeClass name (a DNS subdomain: a-z, 0-9, '-', '.')"
                    ),
                ));
            }
        }
        if k.require_seccomp_profile && profile.is_empty() {
            return Err(invalid(
                "seccomp_profile",
                "is empty, but kubernetes.require_seccomp_profile needs the profile enforced pods \
                 must run under (name it, or set require_seccomp_profile = false)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The cgroup the pod watcher scans (see [`KubernetesConfig::cgroup_root`]).
    pub fn kube_cgroup_root(&self) -> &str {
        match self.kubernetes.cgroup_root.trim_matches('/') {
            "" => self.cgroup_root(),
            root => root,
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Line where `key = …` first appears, or 0 when the key is not in the text (a default).
/// 1-based line of `key` inside the `[section]` table (0 when absent): keys of the same
/// name in other tables (`listen` in `[dns]`) are skipped.
fn find_section_key_line(text: &str, section: &str, key: &str) -> usize {
    let header = format!("[{section}]");
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim_start();
        if l.starts_with('[') {
            inside = l.split('#').next().is_some_and(|h| h.trim() == header);
        } else if inside
            && l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return i + 1;
        }
    }
    0
}

fn find_key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match Config::parse(text, "test.toml") {
            Ok(_) => panic!("config unexpectedly valid:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_key_that_mints_keys_is_given_to_no_policy() {
        let config = |policy_integrations: &str| {
            format!(
                "[[integration]]\nname = \"svc\"\nauth = \"bearer\"\nhosts = [\"api.test\"]\n\
                 verify_url = \"https://api.test/me\"\n[integration.rotation.http]\n\
                 url = \"https://keys.test/v1/keys\"\n\
                 auth = {{ integration = \"admin\", account = \"ops\" }}\n\
                 [[integration]]\nname = \"admin\"\nauth = {{ header = \"X-Key\" }}\n\
                 hosts = [\"keys.test\"]\n\
                 [[policy]]\nname = \"agents\"\nintegrations = {policy_integrations}\n"
            )
        };
        Config::parse(&config("[\"svc\"]"), "test").expect("the rotated integration is fine");
        let e = err(&config("[\"svc\", \"admin\"]"));
        assert!(
            e.contains("policy[0].integrations[1]") && e.contains("rotation.http.auth"),
            "{e}"
        );
    }

    #[test]
    fn the_http_rotator_needs_one_rotator_a_known_auth_and_urls_on_its_hosts() {
        let svc = |rotation: &str| {
            format!(
                "[[integration]]\nname = \"svc\"\nauth = \"bearer\"\nhosts = [\"api.test\"]\n\
                 verify_url = \"https://api.test/me\"\n[integration.rotation]\n{rotation}\n\
                 [[integration]]\nname = \"admin\"\nauth = {{ header = \"X-Key\" }}\n\
                 hosts = [\"keys.test\"]\n"
            )
        };
        let admin = "[integration.rotation.http]\nurl = \"https://keys.test/v1/keys\"\n\
                     auth = { integration = \"admin\", account = \"ops\" }\n";
        let c = Config::parse(&svc(admin), "test").expect("http rotator");
        let r = c.integrations[0].rotation.as_ref().expect("rotation");
        let http = r.http.as_ref().expect("http");
        assert_eq!(
            http.auth,
            HttpRotatorAuth::Credential {
                integration: "admin".into(),
                account: "ops".into()
            }
        );
        assert_eq!(
            (http.method.as_str(), http.secret_pointer.as_str()),
            ("POST", "/secret")
        );
        assert!(
            !http.send_old_secret,
            "the old key stays out of the body by default"
        );
        assert_eq!(
            (
                r.breaker_failures,
                r.breaker_open_secs,
                r.breaker_open_cap_secs
            ),
            (5, 60, 900)
        );
        let own = "[integration.rotation.http]\nurl = \"https://api.test/keys\"\nauth = \"self\"\n";
        let c = Config::parse(&svc(own), "test").expect("self");
        assert_eq!(
            c.integrations[0]
                .rotation
                .as_ref()
                .and_then(|r| r.http.as_ref())
                .map(|h| &h.auth),
            Some(&HttpRotatorAuth::SelfKey)
        );
        for (rotation, key) in [
            (format!("exec = [\"/bin/true\"]\n{admin}"), "rotation.http"),
            ("grace_secs = 5\n".to_owned(), "rotation.exec"),
            // The admin key would go to a host that is not the admin integration's.
            (
                admin.replace("keys.test/v1", "api.test/v1"),
                "rotation.http.url",
            ),
            (
                own.replace("api.test/keys", "keys.test/keys"),
                "rotation.http.url",
            ),
            (
                format!("{admin}revoke_url = \"http://keys.test/revoke\"\n"),
                "rotation.http.revoke_url",
            ),
            (
                admin.replace("\"admin\"", "\"nobody\""),
                "rotation.http.auth",
            ),
            (
                format!("{admin}secret_pointer = \"secret\"\n"),
                "rotation.http.secret_pointer",
            ),
            (format!("{admin}method = \"GET\"\n"), "rotation.http.method"),
            (
                format!("breaker_failures = 0\n{admin}"),
                "rotation.breaker_failures",
            ),
            // Past the outbound path's own limit (30 s): the request would give up first.
            (
                format!("timeout_secs = 31\n{admin}"),
                "rotation.timeout_secs",
            ),
            (
                format!("breaker_open_secs = 60\nbreaker_open_cap_secs = 10\n{admin}"),
                "rotation.breaker_open_secs",
            ),
        ] {
            let e = err(&svc(&rotation));
            assert!(e.contains(key), "{key}: {e}");
        }
        assert!(
            err(&svc(&admin.replace(
                "{ integration = \"admin\", account = \"ops\" }",
                "\"mine\""
            )))
            .contains("self")
        );
    }

    #[test]
    fn a_401_is_held_below_the_request_timeout() {
        let base = "[[integration]]\nname = \"svc\"\nauth = \"bearer\"\nhosts = [\"api.test\"]\n\
                    verify_url = \"https://api.test/me\"\n[integration.rotation]\nexec = [\"/bin/true\"]\n";
        let c = Config::parse(base, "test").expect("defaults");
        let r = c.integrations[0].rotation.as_ref().expect("rotation");
        assert_eq!(r.hold_secs, 15);
        assert!(Config::parse(&format!("{base}hold_secs = 0\n"), "test").is_ok());
        let e = err(&format!("{base}hold_secs = 30\n"));
        assert!(
            e.contains("rotation.hold_secs") && e.contains("broker.request_timeout_secs"),
            "{e}"
        );
        let longer = format!(
            "[broker]\nrequest_timeout_secs = 60\nidle_timeout_secs = 120\n{base}hold_secs = 30\n"
        );
        assert!(Config::parse(&longer, "test").is_ok());
    }

    #[test]
    fn detector_actions_default_per_detector_and_quarantine_is_accepted() {
        let base = "[[integration]]\nname = \"svc\"\nauth = \"bearer\"\nhosts = [\"api.test\"]\n\
                    verify_url = \"https://api.test/me\"\n[integration.rotation]\nexec = [\"/bin/true\"]\n";
        let c = Config::parse(base, "test").expect("defaults");
        let r = c.integrations[0].rotation.as_ref().expect("rotation");
        assert_eq!(r.on_canary, DetectorAction::RotateCompromised);
        assert_eq!(r.on_reflection, DetectorAction::RotateCompromised);
        assert_eq!(r.on_auth_failure, DetectorAction::Rotate);
        assert_eq!(r.on_expiry, DetectorAction::Rotate);
        let c = Config::parse(
            &format!("{base}on_reflection = \"alert\"\non_expiry = \"observe\"\n"),
            "test",
        )
        .expect("set");
        let r = c.integrations[0].rotation.as_ref().expect("rotation");
        assert_eq!(r.on_reflection, DetectorAction::Alert);
        assert_eq!(r.on_expiry, DetectorAction::Observe);
        let c = Config::parse(&format!("{base}on_canary = \"quarantine\"\n"), "test")
            .expect("quarantine");
        let r = c.integrations[0].rotation.as_ref().expect("rotation");
        assert_eq!(r.on_canary, DetectorAction::Quarantine);
        assert_eq!(
            (r.quarantine_secs, r.quarantine_calls_per_minute),
            (3600, 60)
        );
        assert_eq!(r.on_rate_spike, DetectorAction::Quarantine);
        assert_eq!(r.on_novelty, DetectorAction::Alert);
        assert_eq!((r.sensor_bucket_secs, r.spike_buckets), (10, 3));
        for bad in ["rotate", "quarantine", "rotate_compromised"] {
            let e = Config::parse(&format!("{base}on_novelty = \"{bad}\"\n"), "test")
                .expect_err("novelty only alerts")
                .to_string();
            assert!(
                e.contains("rotation.on_novelty") && e.contains("observe or alert"),
                "{e}"
            );
        }
        let e = Config::parse(&format!("{base}sensor_bucket_secs = 0\n"), "test")
            .expect_err("no bucket")
            .to_string();
        assert!(e.contains("rotation.sensor_bucket_secs"), "{e}");
        let e = Config::parse(&format!("{base}on_canary = \"rotate-now\"\n"), "test")
            .expect_err("unknown")
            .to_string();
        assert!(e.contains("unknown action"), "{e}");
        let p = |n: u32| format!("[[policy]]\nname = \"p\"\ncanary_handles = {n}\n");
        assert_eq!(
            Config::parse(&p(3), "test").expect("ok").policies[0].canary_handles,
            3
        );
        let e = Config::parse(&p(MAX_CANARY_HANDLES + 1), "test")
            .expect_err("too many")
            .to_string();
        assert!(e.contains("canary_handles"), "{e}");
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::load(None).expect("embedded default parses");
        assert_eq!(c.cgroup_root(), "hb");
        assert!(!c.policies.is_empty());
    }

    #[test]
    fn scrub_rules_files_are_read_at_load_and_a_bad_one_is_fatal() {
        let dir = std::env::temp_dir().join(format!("hb-config-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join("good.toml"),
            "[[rules]]\nid = \"zz-key\"\nregex = '''zz_[0-9]{8}'''\nkeywords = [\"zz_\"]\n",
        )
        .expect("write");
        std::fs::write(dir.join("bad.toml"), "[[rules]]\nid = \"x\"\n\nregex = [\n")
            .expect("write");
        let origin = dir.join("hb.toml");
        let origin = origin.to_str().expect("utf-8 path");
        // Relative to the config file's directory.
        let c = Config::parse("[scrub]\nrules_files = [\"good.toml\"]\n", origin)
            .expect("a good rule file");
        assert_eq!(c.scrub.rules.infos().len(), 1);
        let e = Config::parse(
            "[scrub]\nrules_files = [\n  \"good.toml\",\n  \"bad.toml\",\n]\n",
            origin,
        )
        .expect_err("an invalid rule file")
        .to_string();
        assert!(
            e.contains("scrub.rules_files (line 4)")
                && e.contains("bad.toml")
                && e.contains("line 4"),
            "{e}"
        );
        let e = Config::parse("[scrub]\nrules_files = [\"missing.toml\"]\n", origin)
            .expect_err("a missing rule file")
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_example_config_in_the_repo_parses() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("deploy/ exists") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(Some(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen > 0, "no example config found in deploy/");
    }

    /// The DaemonSet's config (deploy/kubernetes/hb.toml, the ConfigMap's `hb.toml`).
    /// Its `[kubernetes]` table and `agent.metrics_listen` are keys of DESIGN.md's
    /// second-wave contract: a build whose parser does not know one of them yet (asked
    /// below, not assumed) checks the rest of the file without exactly that key, and once
    /// the parser knows it the whole file is checked, so a misspelt key fails here.
    #[test]
    fn kubernetes_deploy_config_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes/hb.toml");
        let text = std::fs::read_to_string(path).expect("deploy/kubernetes/hb.toml");
        let mut doc: toml::Table = text.parse().expect("deploy/kubernetes/hb.toml is TOML");
        let knows = |probe: &str| Config::parse(probe, "probe").is_ok();
        let mut left_out = Vec::new();
        if !knows("[kubernetes]\nenabled = false\n") {
            assert!(doc.remove("kubernetes").is_some(), "[kubernetes] is set");
            left_out.push("[kubernetes]");
        }
        if !knows("[agent]\nmetrics_listen = \"127.0.0.1:9464\"\n") {
            let agent = doc
                .get_mut("agent")
                .and_then(toml::Value::as_table_mut)
                .expect("[agent] is set");
            assert!(
                agent.remove("metrics_listen").is_some(),
                "metrics_listen is set"
            );
            left_out.push("agent.metrics_listen");
        }
        let checked = if left_out.is_empty() {
            text
        } else {
            eprintln!("this build does not parse {left_out:?} yet: checked without them");
            toml::to_string(&doc).expect("re-serialise")
        };
        let c = Config::parse(&checked, path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.cgroup_root(), "kubepods.slice");
        assert_eq!(
            c.agent.master_key_file,
            std::path::Path::new("/etc/hb/secret/master.key"),
            "the Secret's mount path in daemonset.yaml"
        );
        assert!(c.policies.iter().any(|p| p.name.get_ref() == "default"));
    }

    #[test]
    fn ping_and_raw_sockets_are_refused_unless_a_policy_opts_in() {
        let c = Config::parse(
            "[[policy]]\nname = \"a\"\n[[policy]]\nname = \"b\"\nicmp_echo = true\nraw_sockets = true\n",
            "t",
        )
        .expect("valid opt-ins");
        assert!(!c.policies[0].icmp_echo && !c.policies[0].raw_sockets);
        assert!(c.policies[1].icmp_echo && c.policies[1].raw_sockets);
        let d = Config::parse(DEFAULT_TOML, "t").expect("the embedded default");
        assert!(d.policies.iter().all(|p| !p.icmp_echo && !p.raw_sockets));
        let err = Config::parse("[[policy]]\nname = \"a\"\nicmp_echo = \"yes\"\n", "t")
            .expect_err("a string for a switch")
            .to_string();
        assert!(err.contains("line 3") && err.contains("bool"), "{err}");
    }

    #[test]
    fn guard_keys_are_checked_and_named() {
        let c = Config::parse(
            "[[policy]]\nname = \"a\"\nguard_ports = [443, 80, 443]\nwrite_domains = [\"*.w.test\"]\n",
            "t",
        )
        .expect("valid guard keys");
        assert!(c.policies[0].guard && !c.policies[0].allow_quic);
        assert_eq!(c.policies[0].guard_ports, [80, 443]);
        assert!(crate::dns::names::allowed(
            &c.policies[0].writes,
            "x.w.test"
        ));
        for (text, key, line, says) in [
            (
                "[dns]\nlisten = \"127.0.0.1:53\"\n[guard]\nlisten = \"127.0.0.1:100\"\n",
                "guard.listen",
                4,
                "overlap",
            ),
            (
                "[guard]\nlisten = \"localhost\"\n",
                "guard.listen",
                2,
                "IPv4",
            ),
            (
                "[[policy]]\nname = \"a\"\nguard_ports = []\n",
                "policy[0].guard_ports",
                2,
                "guard = false",
            ),
            (
                "[[policy]]\nname = \"a\"\nwrite_domains = [\"a b\"]\n",
                "policy[0].write_domains[0]",
                3,
                "domain",
            ),
            (
                "[guard]\nreadonly_methods = [\"get\"]\n",
                "guard.readonly_methods[0]",
                2,
                "upper-case",
            ),
            (
                "[[policy]]\nname = \"a\"\nguard = false\nguard_all_ports = true\n",
                "policy[0].guard_all_ports",
                2,
                "needs guard = true",
            ),
            (
                "[guard]\nmax_connections_per_policy = 0\n",
                "guard.max_connections_per_policy",
                2,
                "outside 1..=",
            ),
            (
                "[dns]\nmax_tcp_connections_per_cgroup = 0\n",
                "dns.max_tcp_connections_per_cgroup",
                2,
                "at least 1",
            ),
            (
                "[dns]\nmax_upstream_lookups_per_cgroup = 0\n",
                "dns.max_upstream_lookups_per_cgroup",
                2,
                "at least 1",
            ),
            (
                "[guard]\n\nmax_connections_per_cgroup = 0\n",
                "guard.max_connections_per_cgroup",
                3,
                "outside 1..=",
            ),
            (
                "[guard]\nidle_timeout_secs = 0\n",
                "guard.idle_timeout_secs",
                2,
                "outside 1..=",
            ),
            (
                "[dns]\nmax_ips_per_cgroup = 8\n",
                "dns.max_ips_per_cgroup",
                2,
                "is outside [dns.max_ips_per_name (64)",
            ),
            (
                "[dns]\nmax_ips_per_policy = 100\nmax_ips_per_cgroup = 101\n",
                "dns.max_ips_per_cgroup",
                3,
                "dns.max_ips_per_policy (100)]",
            ),
        ] {
            let e = err(text);
            assert!(
                e.contains(key) && e.contains(&format!("line {line}")) && e.contains(says),
                "{text:?} → {e}"
            );
        }
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = err("[agent]\nstate_dir = \"/x\"\nbogus = 1\n");
        assert!(e.contains("bogus") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn inbound_defaults_to_false_and_must_be_a_bool() {
        let c = Config::parse(
            "[[policy]]\nname = \"a\"\n[[policy]]\nname = \"b\"\ninbound = true\n",
            "test",
        )
        .expect("parses");
        assert!(!c.policies[0].inbound && c.policies[1].inbound);
        let e = err("[[policy]]\nname = \"a\"\ninbound = \"yes\"\n");
        assert!(e.contains("inbound") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn bad_cidr_names_line() {
        let e = err("[egress]\nexception_cidrs = [\n  \"10.0.0.0/33\",\n]\n");
        assert!(e.contains("10.0.0.0/33") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn missing_policy_names_key_and_line() {
        let e = err(
            "[[policy]]\nname = \"a\"\n\n[[sandbox]]\ncgroup = \"hb/x/*\"\npolicy = \"nope\"\n",
        );
        assert!(
            e.contains("sandbox[0].policy") && e.contains("line 6") && e.contains("nope"),
            "{e}"
        );
    }

    #[test]
    fn a_policy_name_that_is_not_one_folder_is_refused() {
        for name in [".", "..", "a/b", ""] {
            let e = err(&format!("[[policy]]\nname = \"{name}\"\n"));
            assert!(
                e.contains("policy[0].name") && e.contains("line 2"),
                "{name:?}: {e}"
            );
        }
        let c = Config::parse("[[policy]]\nname = \".web\"\n", "test").expect("parses");
        assert_eq!(
            c.broker.policy_socket(".web"),
            PathBuf::from("/run/hb/policies/.web/broker.sock")
        );
    }

    #[test]
    fn a_policy_sockets_dir_that_is_relative_or_the_root_is_refused() {
        for dir in ["policies", "./run/hb", "/"] {
            let e = err(&format!("[broker]\npolicy_sockets_dir = \"{dir}\"\n"));
            assert!(
                e.contains("broker.policy_sockets_dir") && e.contains("line 2"),
                "{dir:?}: {e}"
            );
        }
        let c =
            Config::parse("[broker]\npolicy_sockets_dir = \"/srv/hb\"\n", "test").expect("parses");
        assert_eq!(c.broker.policy_sockets_dir(), PathBuf::from("/srv/hb"));
    }

    #[test]
    fn sandbox_glob_outside_root_is_refused() {
        let e =
            err("[[policy]]\nname = \"a\"\n[[sandbox]]\ncgroup = \"other/*\"\npolicy = \"a\"\n");
        assert!(
            e.contains("sandbox[0].cgroup") && e.contains("line 4"),
            "{e}"
        );
    }

    #[test]
    fn kubernetes_keys_are_checked_key_by_key() {
        for (text, key, says) in [
            (
                "cgroup_root = \"kubepods\"",
                "kubernetes.cgroup_root",
                "below it",
            ),
            (
                "cgroup_root = \"hb/../x\"",
                "kubernetes.cgroup_root",
                "below it",
            ),
            (
                "default_policy = \"nope\"",
                "kubernetes.default_policy",
                "no [[policy]]",
            ),
            (
                "policy_annotation = \"a b\"",
                "kubernetes.policy_annotation",
                "not a label",
            ),
            (
                "rescan_interval_ms = 0",
                "kubernetes.rescan_interval_ms",
                "at least 1",
            ),
            (
                "seccomp_profile = \"/var/lib/kubelet/seccomp/hb.json\"",
                "kubernetes.seccomp_profile",
                "below the kubelet's seccomp folder",
            ),
            (
                "seccomp_profile = \"\"",
                "kubernetes.seccomp_profile",
                "require_seccomp_profile needs the profile",
            ),
            (
                "static_pod_namespaces = [\"kube-system\", \"Ops/Team\"]",
                "kubernetes.static_pod_namespaces",
                "\"Ops/Team\" is not a namespace name",
            ),
            (
                "runtime_classes = [\"runc\", \"Kata Containers\"]",
                "kubernetes.runtime_classes",
                "\"Kata Containers\" is not a RuntimeClass name",
            ),
        ] {
            let e = err(&format!(
                "[[policy]]\nname = \"a\"\n\n[kubernetes]\nenabled = true\n{text}\n"
            ));
            assert!(
                e.contains(key) && e.contains("line 6") && e.contains(says),
                "{text}: {e}"
            );
        }
        let c = Config::parse(
            "[[policy]]\nname = \"a\"\n\n[kubernetes]\nenabled = true\ncgroup_root = \"hb/kubepods.slice\"\n",
            "test",
        )
        .expect("a kubepods root below agent.cgroup_root");
        assert_eq!(c.kube_cgroup_root(), "hb/kubepods.slice");
        let c = Config::parse("", "test").expect("defaults");
        assert!(!c.kubernetes.enabled);
        assert_eq!(c.kube_cgroup_root(), "hb");
    }

    #[test]
    fn the_nodes_socket_bound_is_its_share_of_the_port_range() {
        let mut d = SandboxDefaults::default();
        assert_eq!(d.sockets_node_max((41_000, 45_999)), 2_500);
        assert_eq!(d.sockets_node_max((32_768, 60_999)), 14_116);
        d.sockets_node_percent = 1;
        assert_eq!(
            d.sockets_node_max((40_000, 40_000)),
            1,
            "a share is a bound"
        );
        d.sockets_node_percent = 0;
        assert_eq!(d.sockets_node_max((32_768, 60_999)), 0, "0: no bound");
    }

    #[test]
    fn sandbox_defaults_are_checked_key_by_key() {
        for (text, key, says) in [
            ("user = \"0\"", "sandbox_defaults.user", "explicit --user 0"),
            ("user = \"12x\"", "sandbox_defaults.user", "UID[:GID]"),
            (
                "memory_max = \"2X\"",
                "sandbox_defaults.memory_max",
                "not a size",
            ),
            (
                "tmp_size = \"\"",
                "sandbox_defaults.tmp_size",
                "needs a size",
            ),
            ("cpu_max = \"5 1\"", "sandbox_defaults.cpu_max", "cpu.max"),
            (
                "work_mount = \"work\"",
                "sandbox_defaults.work_mount",
                "absolute",
            ),
            (
                "sockets_node_percent = 101",
                "sandbox_defaults.sockets_node_percent",
                "0 (no limit) to 100",
            ),
        ] {
            let e = err(&format!(
                "[[policy]]\nname = \"a\"\n\n[sandbox_defaults]\n{text}\n"
            ));
            assert!(
                e.contains(key) && e.contains("line 5") && e.contains(says),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn a_policys_accounts_name_bound_integrations_and_keep_it_to_them() {
        let config = |accounts: &str| {
            format!(
                "[[integration]]\nname = \"svc\"\nauth = \"bearer\"\nhosts = [\"api.test\"]\n\
                 [[integration]]\nname = \"gh\"\nauth = \"bearer\"\nhosts = [\"gh.test\"]\n\
                 [[policy]]\nname = \"a\"\nintegrations = [\"svc\", \"gh\"]\n{accounts}\n"
            )
        };
        let c = Config::parse(&config("accounts = { svc = [\"ci\", \"bot\"] }"), "t")
            .expect("accounts of a bound integration");
        let p = &c.policies[0];
        assert_eq!(p.binds("svc", "ci"), Binding::Bound);
        assert_eq!(p.binds("svc", "ops"), Binding::Account);
        assert_eq!(
            p.binds("gh", "anyone"),
            Binding::Bound,
            "gh is not narrowed"
        );
        assert_eq!(p.binds("other", "ci"), Binding::Integration);
        for (accounts, says) in [
            ("accounts = { nope = [\"ci\"] }", "does not bind"),
            ("accounts = { svc = [] }", "lists no account"),
            ("accounts = { svc = [\"ci\", \"ci\"] }", "listed twice"),
            ("accounts = { svc = [\"\"] }", "1-256 characters"),
            ("accounts = { svc = [\"a\\u0007\"] }", "1-256 characters"),
        ] {
            let e = err(&config(accounts));
            assert!(
                e.contains("policy[0].accounts") && e.contains(says),
                "{accounts}: {e}"
            );
        }
    }

    #[test]
    fn allow_cidr_inside_deny_needs_exception() {
        let base = "[[policy]]\nname = \"a\"\nallow_cidrs = [\"10.1.0.0/16\"]\n";
        let e = err(base);
        assert!(
            e.contains("policy[0].allow_cidrs[0]") && e.contains("line 3"),
            "{e}"
        );
        let ok = format!("[egress]\nexception_cidrs = [\"10.1.0.0/16\"]\n{base}");
        Config::parse(&ok, "t").expect("carved out");
    }

    #[test]
    fn deny_cidrs_accepts_default_or_list_only() {
        Config::parse(
            "[egress]\ndeny_cidrs = [\"10.0.0.0/8\", \"fd00::/8\"]\n",
            "t",
        )
        .expect("list");
        let e = err("[egress]\ndeny_cidrs = \"none\"\n");
        assert!(e.contains("deny_cidrs") || e.contains("line 2"), "{e}");
    }

    #[test]
    fn outbound_limits_have_defaults_and_bounds() {
        let c = Config::parse("", "t").expect("defaults");
        assert_eq!(c.broker.upstream_timeout_secs, 30);
        assert_eq!(c.broker.max_response_bytes, 10 << 20);
        assert!(!c.broker.follow_redirects);
        assert!(
            !c.broker.allow_binary_responses,
            "binary bodies are refused by default"
        );
        let e = err("[broker]\nupstream_timeout_secs = 0\n");
        assert!(
            e.contains("broker.upstream_timeout_secs") && e.contains("line 2"),
            "{e}"
        );
        let e = err("[broker]\nfollow_redirects = true\nmax_response_bytes = 0\n");
        assert!(
            e.contains("broker.max_response_bytes") && e.contains("line 3"),
            "{e}"
        );
        let e = err("[broker]\nupstream_timeout_secs = 86401\n");
        assert!(e.contains("86401 is outside 1..=86400"), "{e}");
    }

    #[test]
    fn nat64_prefixes_default_and_rfc6052_lengths_only() {
        let c = Config::parse("", "t").expect("defaults");
        assert_eq!(c.egress.nat64, vec!["64:ff9b::/96".parse().expect("net")]);
        let c = Config::parse(
            "[egress]\nnat64_prefixes = [\"2001:db8:64::/96\", \"2001:db8:100::/40\"]\n",
            "t",
        )
        .expect("network-specific prefixes");
        assert_eq!(c.egress.nat64.len(), 2);
        let e = err("[egress]\nnat64_prefixes = [\n  \"64:ff9b::/96\",\n  \"2001:db8::/33\",\n]\n");
        assert!(
            e.contains("egress.nat64_prefixes[1]") && e.contains("line 4") && e.contains("33"),
            "{e}"
        );
        let e = err("[egress]\nnat64_prefixes = [\"10.0.0.0/8\"]\n");
        assert!(
            e.contains("egress.nat64_prefixes[0]") && e.contains("IPv6"),
            "{e}"
        );
        let e = err("[egress]\nnat64_prefixes = [\"2001:db8:64::1/96\"]\n");
        assert!(e.contains("host bits"), "{e}");
    }

    #[test]
    fn connection_timeouts_and_the_scrub_limit_have_defaults_and_bounds() {
        let c = Config::parse("", "t").expect("defaults");
        assert_eq!(c.broker.header_read_timeout_secs, 10);
        assert_eq!(c.broker.idle_timeout_secs, 120);
        assert_eq!(c.broker.scrub_per_minute, 120);
        assert_eq!(c.broker.handles_per_minute, 120);
        assert_eq!(c.broker.max_handles_per_caller, 256);
        assert_eq!(c.broker.max_connections_per_caller, 32);
        let e = err("[broker]\nheader_read_timeout_secs = 0\n");
        assert!(
            e.contains("broker.header_read_timeout_secs") && e.contains("line 2"),
            "{e}"
        );
        let e = err("[broker]\nscrub_per_minute = 0\n");
        assert!(e.contains("broker.scrub_per_minute"), "{e}");
        let e = err("[broker]\nmax_handles_per_caller = 0\n");
        assert!(e.contains("broker.max_handles_per_caller"), "{e}");
        // Idle must outlast a request waiting on its upstream, and the SSE keep-alive.
        let e = err("[broker]\nrequest_timeout_secs = 60\nidle_timeout_secs = 60\n");
        assert!(
            e.contains("broker.idle_timeout_secs") && e.contains("line 3"),
            "{e}"
        );
        let e = err("[broker]\nrequest_timeout_secs = 2\nidle_timeout_secs = 15\n");
        assert!(e.contains("broker.idle_timeout_secs"), "{e}");
        Config::parse(
            "[broker]\nrequest_timeout_secs = 2\nidle_timeout_secs = 16\n",
            "t",
        )
        .expect("valid");
    }

    #[test]
    fn bare_address_is_a_host_cidr_and_host_bits_are_cleared() {
        assert_eq!(
            "203.0.113.7".parse::<Cidr>().expect("valid").to_string(),
            "203.0.113.7/32"
        );
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().expect("valid").to_string(),
            "10.0.0.0/8"
        );
        assert!("10.0.0.0/8x".parse::<Cidr>().is_err());
    }
}
