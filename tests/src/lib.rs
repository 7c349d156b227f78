//! Harness for hb's end-to-end tests: the real `hb-agent` binary, the real kernel, real
//! clients, each test in a private network namespace it creates itself.
//!
//! Every resource is owned by a guard that cleans up on drop, failure included: the
//! agent process, the test's cgroup tree, its bpffs folder (removing the pins detaches
//! the links), its state folder. Names carry a random suffix so tests can run in
//! parallel. Nothing here skips: a test that cannot do its job panics and says why.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, UdpSocket},
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod capture;
pub mod kube;
pub mod kube_cluster;
pub mod metrics;
pub mod provider;
pub mod sandboxed;
pub mod upstream;
pub mod worlds;

/// Fails the test unless it runs as root: hb's tests load real eBPF programs.
pub fn require_root() {
    // SAFETY: no arguments.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "hb's end-to-end tests load eBPF programs and create cgroups: run them as root \
         (cargo xtask test)"
    );
}

/// The hb-agent binary: `HB_AGENT_BIN` (set by `cargo xtask test`), else the debug build
/// next to this test executable.
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HB_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/test-… → target/debug/hb-agent
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("hb-agent"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo build -p hb-agent) or set HB_AGENT_BIN",
        bin.display()
    );
    bin
}

/// Twelve random hex digits, for names on a shared filesystem.
pub fn random_suffix() -> String {
    let mut b = [0u8; 6];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("/dev/urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs a shell command as the test (root), failing the test when it fails.
pub fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Moves the calling thread into a new network namespace with `lo` up and the given
/// addresses on it. Threads and processes started by this thread afterwards live there
/// too. Nothing in it can reach the host's networks: a failed block leaks nothing.
pub fn private_netns(addrs: &[&str]) {
    // SAFETY: plain syscall; affects this thread only.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
    sh("ip link set lo up");
    for a in addrs {
        if a.contains(':') {
            sh(&format!("ip -6 addr add {a}/128 dev lo nodad"));
        } else {
            sh(&format!("ip addr add {a}/32 dev lo"));
        }
    }
}

pub fn cgroup2_mount() -> PathBuf {
    let mounts = fs::read_to_string("/proc/mounts").expect("/proc/mounts");
    let mut found: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .collect();
    found.sort_by_key(|p| p != Path::new("/sys/fs/cgroup"));
    found.into_iter().next().expect("a cgroup2 mount")
}

/// Removes a cgroup tree, deepest first, killing what is left in it.
pub fn remove_cgroup_tree(path: &Path) {
    if !path.exists() {
        return;
    }
    let _ = fs::write(path.join("cgroup.kill"), "1");
    if let Ok(entries) = fs::read_dir(path) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    for _ in 0..300 {
        if fs::remove_dir(path).is_ok() || !path.exists() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// One test's world: config, cgroup root, bpffs folder and state folder.
pub struct TestEnv {
    pub name: String,
    pub cgroup_root: String,
    pub bpffs_dir: PathBuf,
    pub state_dir: PathBuf,
    pub config_path: PathBuf,
    agent: Option<Agent>,
}

/// The `[broker]`, `[dns]` and `[egress]` tables a broker test with TLS upstreams
/// shares: the socket open to sandbox users, `ca` trusted, lookups sent to the test's
/// dnsmasq on `dns_port`, 203.0.113.0/24 reachable. `broker_extra` (whole lines) goes
/// into `[broker]`; the test appends its integrations and policies.
pub fn tls_broker_config(ca: &Path, dns_port: u16, broker_extra: &str) -> String {
    format!(
        r#"
[broker]
socket_mode = "0666"
extra_ca_file = "{ca}"
{broker_extra}
[dns]
listen = "127.0.0.1:5300"
upstreams = ["127.0.0.1:{dns_port}"]

[egress]
exception_cidrs = ["203.0.113.0/24"]
"#,
        ca = ca.display()
    )
}

impl TestEnv {
    /// `config` is TOML appended after the test's own `[agent]` table (so it must not
    /// contain one); `{root}` in it stands for the test's cgroup root.
    pub fn new(name: &str, config: &str) -> Self {
        Self::new_in(&std::env::temp_dir(), name, config)
    }

    /// [`TestEnv::new`] with the state folder (and so the broker socket and the master
    /// key) in `base` rather than the temp dir: e.g. /var/tmp, which a sandbox sees (read
    /// only) where it gets a fresh /tmp.
    pub fn new_in(base: &Path, name: &str, config: &str) -> Self {
        require_root();
        let suffix = random_suffix();
        let cgroup_root = format!("hb-test-{name}-{suffix}");
        let config = config.replace("{root}", &cgroup_root);
        let bpffs_dir = PathBuf::from(format!("/sys/fs/bpf/hb-test-{name}-{suffix}"));
        let state_dir = base.join(format!("hb-test-{name}-{suffix}"));
        fs::create_dir_all(&state_dir).expect("state dir");
        let config_path = state_dir.join("hb.toml");
        // Each test's broker socket and master key live in its own state directory.
        let socket = format!("socket = \"{}\"\n", state_dir.join("broker.sock").display());
        let config = if config.contains("[broker]\n") {
            config.replacen("[broker]\n", &format!("[broker]\n{socket}"), 1)
        } else {
            format!("[broker]\n{socket}\n{config}")
        };
        let text = format!(
            "[agent]\nstate_dir = \"{}\"\nbpffs_dir = \"{}\"\ncgroup_root = \"{cgroup_root}\"\nrescan_interval_ms = 100\nmaster_key_file = \"{}\"\n\n{config}",
            state_dir.display(),
            bpffs_dir.display(),
            state_dir.join("master.key").display()
        );
        fs::write(&config_path, text).expect("write config");
        Self {
            name: name.to_owned(),
            cgroup_root,
            bpffs_dir,
            state_dir,
            config_path,
            agent: None,
        }
    }

    /// `hb-agent vault init`, then each (integration, account, secret) stored; every
    /// step must succeed.
    pub fn init_vault(&self, credentials: &[(&str, &str, &str)]) {
        let init = self.hb(&["vault", "init"]);
        assert!(
            init.status.success(),
            "vault init: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        for (integration, account, secret) in credentials {
            self.vault_put(integration, account, secret);
        }
    }

    /// `hb-agent vault put` of `secret` (on stdin, never argv) for `integration`/`account`;
    /// must succeed.
    pub fn vault_put(&self, integration: &str, account: &str, secret: &str) {
        self.vault_with_secret(
            &["put", "--integration", integration, "--account", account],
            secret,
        );
    }

    /// `hb-agent vault ARGS…` with `secret` on stdin (never argv); must succeed.
    pub fn vault_with_secret(&self, args: &[&str], secret: &str) {
        use std::io::Write as _;
        let mut child = Command::new(agent_bin())
            .arg("--config")
            .arg(&self.config_path)
            .arg("vault")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hb-agent vault");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(secret.as_bytes())
            .expect("secret on stdin");
        let out = child.wait_with_output().expect("hb-agent vault");
        assert!(
            out.status.success(),
            "vault {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The agent's broker socket.
    pub fn broker_socket(&self) -> PathBuf {
        self.state_dir.join("broker.sock")
    }

    /// `policy`'s own broker socket (`broker.policy_sockets_dir`'s default, `policies`
    /// beside the main one): what `sandbox run --policy POLICY` shows at
    /// [`TestEnv::broker_socket`]'s path inside.
    pub fn policy_socket(&self, policy: &str) -> PathBuf {
        self.state_dir
            .join("policies")
            .join(policy)
            .join("broker.sock")
    }

    /// Starts the agent and waits until it says it enforces.
    pub fn start_agent(&mut self) -> &mut Agent {
        self.start_agent_logging("info")
    }

    /// As [`TestEnv::start_agent`], with the agent's log filter (`HB_LOG`), e.g.
    /// `"info,hb::event=debug"` to log every event line.
    pub fn start_agent_logging(&mut self, filter: &str) -> &mut Agent {
        self.start_agent_with(filter, &[])
    }

    /// As [`TestEnv::start_agent_logging`], with extra environment variables (e.g. a
    /// debug build's `HB_VAULT_TEST_KILL_AT`).
    pub fn start_agent_with(&mut self, filter: &str, env: &[(&str, &str)]) -> &mut Agent {
        let log = self
            .state_dir
            .join(format!("agent-{}.log", random_suffix()));
        let agent = Agent::start(&self.config_path, &log, filter, env, "ready: enforcing");
        self.agent.insert(agent)
    }

    /// Starts the agent (a debug build) held before it attaches anything until `release`
    /// exists, and returns once it says it holds: it runs, its maps are filled, its
    /// metrics server answers, nothing enforces yet.
    pub fn start_agent_held(&mut self, release: &Path) -> &mut Agent {
        let log = self
            .state_dir
            .join(format!("agent-{}.log", random_suffix()));
        let hold = release.to_str().expect("UTF-8 path");
        let agent = Agent::start(
            &self.config_path,
            &log,
            "info",
            &[("HB_TEST_HOLD_BEFORE_ATTACH", hold)],
            "holding before attaching",
        );
        self.agent.insert(agent)
    }

    /// `hb-agent status --json ARGS…`, whatever its exit status: (exit status, JSON).
    pub fn status(&self, args: &[&str]) -> (i32, Value) {
        let mut a = vec!["status", "--json"];
        a.extend_from_slice(args);
        let out = self.hb(&a);
        let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "hb-agent {a:?}: not JSON ({e}): {} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().expect("exit status"), json)
    }

    /// `status`'s guard counters once `pred` holds for them, asked every 100 ms for `secs`
    /// seconds at most (the agent writes them about once a second); past that the test
    /// fails saying the counters never `what`.
    pub fn guard_stats_when(&self, secs: u64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let g = self.hb_json(&["status"])["guard"].clone();
            if pred(&g) {
                return g;
            }
            assert!(Instant::now() < deadline, "status guard never {what}: {g}");
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits up to `limit` for the agent to exit by itself (e.g. killed at a test kill
    /// point); its exit status. The agent is forgotten either way.
    pub fn wait_agent_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut agent = self.agent.take()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = agent.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                agent.kill9();
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn agent(&mut self) -> &mut Agent {
        self.agent.as_mut().expect("agent started")
    }

    /// Stops the agent with SIGTERM, as an operator would.
    pub fn stop_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            a.stop();
        }
    }

    /// Kills the agent with SIGKILL (no clean-up of any kind), leaving its pins.
    pub fn kill_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            a.kill9();
        }
    }

    /// `hb-agent -c CONFIG ARGS…`, captured.
    pub fn hb(&self, args: &[&str]) -> Output {
        Command::new(agent_bin())
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run hb-agent")
    }

    /// `hb-agent … ARGS --json`, which must succeed, parsed.
    pub fn hb_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.hb(&a);
        assert!(
            out.status.success(),
            "hb-agent {a:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "hb-agent {a:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs `cmd` in a fresh sandbox under `policy`.
    pub fn sandbox(&self, policy: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["sandbox", "run", "--policy", policy, "--"];
        args.extend_from_slice(cmd);
        self.hb(&args)
    }

    /// Runs `cmd` (a shell command) in a sandbox of `policy` with /etc/resolv.conf naming
    /// a documentation nameserver, 192.0.2.53 (bound over the sandbox's read-only
    /// /etc/resolv.conf with `--ro-bind`; the host's file is untouched): the sandbox's
    /// DNS goes there, and so to hb's resolver.
    pub fn sandbox_with_nameserver(&self, policy: &str, cmd: &str) -> Output {
        self.sandbox_with_nameserver_as(policy, &[], cmd)
    }

    /// [`TestEnv::sandbox_with_nameserver`] with more `sandbox run` options (`--user 0`,
    /// `--tenant NAME`, …).
    pub fn sandbox_with_nameserver_as(&self, policy: &str, options: &[&str], cmd: &str) -> Output {
        let rc = self.state_dir.join("resolv.conf");
        fs::write(&rc, "nameserver 192.0.2.53\noptions attempts:1 timeout:3\n")
            .expect("resolv.conf");
        let rc = rc.to_str().expect("UTF-8 state dir");
        let mut args = vec!["sandbox", "run", "--policy", policy];
        args.extend_from_slice(options);
        args.extend_from_slice(&["--ro-bind", rc, "/etc/resolv.conf", "--", "sh", "-c", cmd]);
        self.hb(&args)
    }

    /// Spawns `cmd` in a fresh sandbox without waiting.
    pub fn sandbox_spawn(&self, policy: &str, cmd: &[&str]) -> Child {
        self.sandbox_command(policy, cmd, Stdio::null())
    }

    /// As [`TestEnv::sandbox_spawn`], with the command's stdin a pipe: the test and the
    /// sandboxed command take turns (the command prints, the test acts and answers).
    pub fn sandbox_piped(&self, policy: &str, cmd: &[&str]) -> Child {
        self.sandbox_command(policy, cmd, Stdio::piped())
    }

    fn sandbox_command(&self, policy: &str, cmd: &[&str], stdin: Stdio) -> Child {
        Command::new(agent_bin())
            .arg("--config")
            .arg(&self.config_path)
            .args(["sandbox", "run", "--policy", policy, "--"])
            .args(cmd)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sandbox")
    }

    /// The rows of the IPv4 allow map (`maps dump allow4`).
    pub fn allow_rows(&self) -> Vec<Value> {
        self.hb_json(&["maps", "dump", "allow4"])
            .as_array()
            .expect("rows")
            .clone()
    }

    /// The events `hb-agent events --json` lists now (a line that is no JSON is passed
    /// over).
    pub fn events(&self) -> Vec<Value> {
        let out = self.hb(&["events", "--json"]);
        assert!(out.status.success(), "hb-agent events failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Events from `hb-agent events --json`, waiting up to 5 s until `pred` holds for one.
    pub fn wait_event(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = self.hb(&["events", "--json"]);
            assert!(out.status.success(), "hb-agent events failed");
            let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| serde_json::from_str(l).expect("event JSON"))
                .collect();
            if let Some(e) = events.iter().find(|e| pred(e)) {
                return e.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no event {what} after 5 s; events: {events:#?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The records of the agent's audit log (`audit.log` in its state folder) so far, in
    /// order; none when there is no log yet.
    pub fn audit_records(&self) -> Vec<Value> {
        fs::read_to_string(self.state_dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Summed counter from `hb-agent maps dump counters`.
    pub fn counter(&self, name: &str) -> u64 {
        let rows = self.hb_json(&["maps", "dump", "counters"]);
        rows.as_array()
            .expect("rows")
            .iter()
            .find(|r| r["counter"] == name)
            .and_then(|r| r["value"].as_u64())
            .unwrap_or_else(|| panic!("no counter {name}: {rows}"))
    }

    /// A policy's id in the kernel's table.
    pub fn policy_id(&self, name: &str) -> u32 {
        let rows = self.hb_json(&["maps", "dump", "policies"]);
        rows.as_array()
            .expect("rows")
            .iter()
            .find(|r| r["name"] == name)
            .and_then(|r| r["id"].as_u64())
            .unwrap_or_else(|| panic!("no policy {name}: {rows}")) as u32
    }

    pub fn map_pin(&self, name: &str) -> PathBuf {
        self.bpffs_dir.join("maps").join(name)
    }

    /// The test's cgroup root, as a path.
    pub fn cgroup_path(&self) -> PathBuf {
        cgroup2_mount().join(&self.cgroup_root)
    }

    /// The cgroup of the one sandbox of `policy` of this test that runs now, below the
    /// cgroup2 mount (a sandboxed command sees neither its host pid nor its host cgroup
    /// path: it has a pid namespace and a cgroup namespace of its own). Sandbox cgroups
    /// are named `<policy>-<launcher pid>-<nanos>` below `{root}/sandboxes/`.
    pub fn running_sandbox_cgroup(&self, policy: &str) -> String {
        let dir = self.cgroup_path().join("sandboxes");
        let found: Vec<String> = fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| is_sandbox_of(n, policy))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            found.len(),
            1,
            "one sandbox of policy {policy} runs below {}: {found:?}",
            dir.display()
        );
        format!("{}/sandboxes/{}", self.cgroup_root, found[0])
    }

    /// The host pid of the process that is `ns_pid` in the pid namespace of the one
    /// running sandbox of `policy` (what the broker and the kernel's peer credentials
    /// report for it). The process must still live: it is found among the sandbox
    /// cgroup's processes by the last field of its `NSpid` (`NSpid:\tHOST\tNS`).
    pub fn host_pid_in_sandbox(&self, policy: &str, ns_pid: i32) -> i32 {
        let cgroup = cgroup2_mount().join(self.running_sandbox_cgroup(policy));
        let mut pids = Vec::new();
        procs_below(&cgroup, &mut pids);
        let found: Vec<i32> = pids
            .iter()
            .filter_map(|pid| {
                let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let ids: Vec<i32> = status
                    .lines()
                    .find_map(|l| l.strip_prefix("NSpid:"))?
                    .split_whitespace()
                    .map(|p| p.parse().expect("NSpid"))
                    .collect();
                (ids.last() == Some(&ns_pid)).then(|| ids[0])
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one process of {} is pid {ns_pid} in its namespace: {found:?} among {pids:?}",
            cgroup.display()
        );
        found[0]
    }

    /// A cgroup shaped like a Kubernetes pod's, `{root}/pods-<policy>/<random>`, created
    /// by the test (not by `sandbox run`) and enrolled by the agent through the test
    /// config's `[[sandbox]]` glob [`pod_glob`]`(policy)`; returns once `maps dump
    /// enrolled` shows it with source `glob`. Its processes run as root with every
    /// capability (a pod may hold CAP_NET_RAW): what the kernel programs enforce there
    /// is all that stands between them and the network. (The agent reports such a
    /// process, `net_raw_cgroup`, and stops nothing: the tests that need the capability
    /// keep it.)
    pub fn root_pod(&self, policy: &str) -> Pod {
        let rel = format!("{}/pods-{policy}/{}", self.cgroup_root, random_suffix());
        let dir = cgroup2_mount().join(&rel);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let pod = Pod { dir, rel };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let rows = self.hb_json(&["maps", "dump", "enrolled"]);
            if rows
                .as_array()
                .expect("rows")
                .iter()
                .any(|r| r["cgroup"] == pod.rel && r["source"] == "glob")
            {
                return pod;
            }
            assert!(
                Instant::now() < deadline,
                "{} not enrolled by its glob after 5 s (does the config have \
                 pod_glob(\"{policy}\")?): {rows}",
                pod.rel
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether a cgroup name below `{root}/sandboxes/` is a sandbox of `policy`:
/// `<policy>-<launcher pid>-<nanos>`.
fn is_sandbox_of(name: &str, policy: &str) -> bool {
    name.strip_prefix(policy)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(pid, nanos)| {
            pid.bytes().all(|b| b.is_ascii_digit())
                && !nanos.is_empty()
                && nanos.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

/// Every pid in `cgroup.procs` of `dir` and of the cgroups below it.
fn procs_below(dir: &Path, pids: &mut Vec<i32>) {
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                procs_below(&e.path(), pids);
            }
        }
    }
}

/// The `[[sandbox]]` glob that enrolls the cgroups [`TestEnv::root_pod`] creates for
/// `policy` (TOML for a test's config; `{root}` is the test's cgroup root).
pub fn pod_glob(policy: &str) -> String {
    format!("\n[[sandbox]]\ncgroup = \"{{root}}/pods-{policy}/*\"\npolicy = \"{policy}\"\n")
}

/// A pod-shaped cgroup enrolled by a glob (see [`TestEnv::root_pod`]). Dropped, it is
/// removed, whatever still runs in it killed.
pub struct Pod {
    dir: PathBuf,
    /// Its path below the cgroup2 mount.
    pub rel: String,
}

impl Pod {
    /// `cmd` as root with every capability, moved into the pod's cgroup before it execs
    /// (`echo $$ > cgroup.procs`), outside any `sandbox run`; stdin is null unless the
    /// caller sets it.
    pub fn command(&self, cmd: &[&str]) -> Command {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec \"$@\"",
            self.dir.display()
        );
        let mut c = Command::new("sh");
        c.args(["-c", &script, "sh"]).args(cmd).stdin(Stdio::null());
        c
    }

    /// [`Pod::command`], run to its end and captured.
    pub fn run(&self, cmd: &[&str]) -> Output {
        self.command(cmd)
            .output()
            .expect("run a command in the pod")
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.dir);
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            a.stop();
        }
        // Removing the pins drops the last references: links detach, maps go.
        let _ = fs::remove_dir_all(&self.bpffs_dir);
        remove_cgroup_tree(&cgroup2_mount().join(&self.cgroup_root));
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.state_dir);
        } else {
            eprintln!("test state kept in {}", self.state_dir.display());
        }
    }
}

/// A running `hb-agent run`.
pub struct Agent {
    child: Child,
    pub log: PathBuf,
}

impl Agent {
    /// Spawns `hb-agent run` and waits until its log holds `until`.
    fn start(config: &Path, log: &Path, filter: &str, env: &[(&str, &str)], until: &str) -> Self {
        let log_file = fs::File::create(log).expect("agent log");
        let child = Command::new(agent_bin())
            .args(["run", "--config"])
            .arg(config)
            .env("HB_LOG", filter)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup"))
            .stderr(log_file)
            .spawn()
            .expect("spawn hb-agent run");
        let mut agent = Self {
            child,
            log: log.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = fs::read_to_string(log).unwrap_or_default();
            if text.contains(until) {
                return agent;
            }
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("hb-agent run exited early ({status}):\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "hb-agent log has no {until:?} after 30 s:\n{text}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait agent");
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "agent died by SIGKILL"
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// SHA-256 of `text` in hex (`sha256sum`; the text goes on stdin, never in argv).
pub fn sha256_hex(text: &str) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_owned()
}

/// A process's resident memory in KiB: now (`VmRSS`) or at its peak (`VmHWM`, with
/// `peak`), from `/proc/PID/status`. Panics when the process or the field is gone.
pub fn memory_kib(pid: u32, peak: bool) -> u64 {
    let field = if peak { "VmHWM:" } else { "VmRSS:" };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} of {pid}: {status}"))
}

/// A command's standard output, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A python3 script running as a test server (an upstream DNS server, say), killed when
/// dropped. Started, it is given 300 ms to bind.
pub struct PythonServer(Child);

impl PythonServer {
    pub fn start(script: &str) -> Self {
        let child = Command::new(python())
            .args(["-c", script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        thread::sleep(Duration::from_millis(300));
        Self(child)
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP listener that counts the connections it accepted, answering each with a tiny
/// HTTP response (so curl and requests get a 200).
pub struct TcpProbe {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl TcpProbe {
    pub fn bind(addr: &str) -> Self {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nhb-test",
                );
            }
        });
        Self { addr, accepted }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The count once it reaches `expected` (or after 10 s, whatever it is then): a
    /// client that connected and exited may be done before this probe's thread got to
    /// accept, so a count of expected arrivals is read only after they were accepted.
    pub fn wait_accepted(&self, expected: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.accepted() < expected && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        self.accepted()
    }
}

/// A UDP socket that counts the datagrams it received.
pub struct UdpProbe {
    pub addr: SocketAddr,
    received: Arc<AtomicUsize>,
}

impl UdpProbe {
    pub fn bind(addr: &str) -> Self {
        let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind udp {addr}: {e}"));
        let addr = sock.local_addr().expect("local addr");
        let received = Arc::new(AtomicUsize::new(0));
        let count = received.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while sock.recv_from(&mut buf).is_ok() {
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        Self { addr, received }
    }

    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

/// Spawns `cmd`, a server that prints `ready` on stdout once it listens, and waits for
/// that line (stdin and stderr closed); `what` names the server when it does not start.
pub fn spawn_ready(cmd: &mut Command, what: &str) -> Child {
    use std::io::BufRead as _;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{what}'s output: {e}"));
    assert_eq!(line.trim(), "ready", "{what} did not start");
    child
}

/// Debian's python3 (which has python3-requests), else whatever `python3` is.
pub fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Python helpers for `setsockopt` through the 32-bit system call entry (`int $0x80`,
/// i386 number 366) from a 64-bit process (x86_64 only), which the kernel runs no cgroup
/// sockopt program for: `compat(s, level, name, value)` copies `value` below 4 GiB and
/// makes the call; `native(…)` makes the ordinary one; `attempt(f)` runs `f`. Each
/// returns `OK` or the errno's name. `ONE` is an int 1.
pub const PY_COMPAT_SETSOCKOPT: &str = r#"
import ctypes, errno, mmap, socket, struct, sys
# push rbx; mov ebx,edi; mov edi,r8d; xchg esi,ecx; mov eax,366; int 0x80; pop rbx; ret
code = bytes.fromhex("5389fb4489c787ceb86e010000cd805bc3")
anon = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
exe = mmap.mmap(-1, 4096, flags=anon, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
exe.write(code)
call = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_ulong,
                        ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(exe)))
low = mmap.mmap(-1, 4096, flags=anon | 0x40, prot=mmap.PROT_READ | mmap.PROT_WRITE)  # MAP_32BIT
lowaddr = ctypes.addressof(ctypes.c_char.from_buffer(low))
assert lowaddr < 1 << 32
def compat(s, level, name, value):
    low.seek(0); low.write(value)
    rc = call(s.fileno(), level, name, lowaddr, len(value))
    return "OK" if rc == 0 else errno.errorcode.get(-rc, str(rc))
def native(s, level, name, value):
    try:
        s.setsockopt(level, name, value); return "OK"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
def attempt(f):
    try:
        f(); return "OK"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
ONE = struct.pack("i", 1)
"#;

/// A Python client that tries `op` (`tcp`, `udp-connect`, `udp-sendto`) towards
/// `host`/`port` and prints `OK` or the errno name (`EPERM`, …).
pub const PY_PROBE: &str = r#"
import errno, socket, sys
op, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
addr = (host, port, 0, socket.if_nametoindex("lo")) if host.startswith("fe80") else (host, port)
try:
    if op == "tcp":
        s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(3); s.connect(addr)
    elif op == "udp-connect":
        s = socket.socket(fam, socket.SOCK_DGRAM); s.connect(addr); s.send(b"hb")
    else:
        s = socket.socket(fam, socket.SOCK_DGRAM); s.sendto(b"hb", addr)
    print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

/// Runs [`PY_PROBE`] in a sandbox and returns what it printed.
pub fn sandbox_probe(env: &TestEnv, policy: &str, op: &str, host: &str, port: u16) -> String {
    let port = port.to_string();
    let out = env.sandbox(policy, &[python(), "-c", PY_PROBE, op, host, &port]);
    assert!(
        out.status.success(),
        "sandboxed probe {op} {host}:{port} did not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs [`PY_PROBE`] outside any sandbox (as the host would).
pub fn host_probe(op: &str, host: &str, port: u16) -> String {
    let out = Command::new(python())
        .args(["-c", PY_PROBE, op, host, &port.to_string()])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Python that makes `hb_client` (examples/python/hb_client.py) importable wherever the
/// script runs: its source travels inside the script, since a sandbox sees neither the
/// repository (a clone below /tmp is under the sandbox's own /tmp) nor the test's files.
pub fn py_client_prelude() -> String {
    let hex: String = include_bytes!("../../examples/python/hb_client.py")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "import sys, types\n_hb = types.ModuleType('hb_client')\nexec(compile(bytes.fromhex('{hex}'), 'hb_client.py', 'exec'), _hb.__dict__)\nsys.modules['hb_client'] = _hb\n"
    )
}

/// Unix listeners a test binds at host paths, standing for host daemons, to see
/// whether a sandbox can reach them.
pub struct UnixDaemons(Vec<(PathBuf, std::os::unix::net::UnixListener)>);

impl UnixDaemons {
    /// Binds a listener at each path, with its mode.
    pub fn bind(sockets: &[(PathBuf, u32)]) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        Self(
            sockets
                .iter()
                .map(|(path, mode)| {
                    let l = std::os::unix::net::UnixListener::bind(path)
                        .unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
                    l.set_nonblocking(true).expect("nonblocking");
                    fs::set_permissions(path, fs::Permissions::from_mode(*mode)).expect("chmod");
                    (path.clone(), l)
                })
                .collect(),
        )
    }

    /// A shell script that connects to each socket and sends a byte, printing
    /// `CONNECTED PATH` when it could; it ends by printing `done`.
    pub fn connect_script(&self) -> String {
        let list = self
            .0
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" ");
        format!(
            r#"
for s in {list}; do
    {py} -c 'import socket,sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1]); s.sendall(b"hi"); print("CONNECTED", sys.argv[1])' "$s" 2>/dev/null
done
echo done
"#,
            py = python()
        )
    }

    /// The sockets a connection reached since the last call (a connect that succeeded
    /// is queued on its listener by the time it returns).
    pub fn reached(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (path, l) in &self.0 {
            while l.accept().is_ok() {
                out.push(path.display().to_string());
            }
        }
        out
    }
}
