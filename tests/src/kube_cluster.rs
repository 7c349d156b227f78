//! One test's Kubernetes node, shared by the tests that need it (`kubernetes.rs`,
//! `attack_review10.rs`, `attack_review27.rs`): the API stand-in with namespaces `agents`
//! (enforced, default `strict`) and `plain`, the real agent with policies `web`, `strict`,
//! `open` and `rawok` (`raw_sockets = true`), the resolver's upstream, recording
//! listeners, and pods in network namespaces of their own.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

use crate::{
    TcpProbe, TestEnv,
    kube::{
        Driver, FakeApi, FakePod, PinnedMap, Qos, cgroup_id, container_cgroup, pod_cgroup,
        wait_until,
    },
    private_netns, python,
    upstream::Dnsmasq,
};

pub const NODE: &str = "node-a";
/// `hb_common::ENROLL_KUBE`.
pub const ENROLL_KUBE: u32 = 4;

pub fn config(kubeconfig: &Path) -> String {
    config_with(kubeconfig, 60_000)
}

/// [`config`] with the reconciling scan every `rescan_ms`.
pub fn config_with(kubeconfig: &Path, rescan_ms: u64) -> String {
    format!(
        r#"
[dns]
listen = "127.0.0.1:5300"
redirect = true
upstreams = ["127.0.0.1:5400"]

[egress]
exception_cidrs = ["203.0.113.0/24"]

[[policy]]
name = "web"
allow_domains = ["allowed.test"]

[[policy]]
name = "strict"

[[policy]]
name = "open"
allow_cidrs = ["0.0.0.0/0"]

# Its pods may keep CAP_NET_RAW (attack review 27).
[[policy]]
name = "rawok"
allow_domains = ["allowed.test"]
raw_sockets = true

# Its pods may keep CAP_NET_RAW, and reach anything public (attack review 41).
[[policy]]
name = "rawopen"
allow_cidrs = ["0.0.0.0/0"]
raw_sockets = true

[kubernetes]
enabled = true
node_name = "{NODE}"
kubeconfig = "{}"
# The reconciling scan is slow on purpose: enrollment in time proves the inotify path.
rescan_interval_ms = {rescan_ms}
# The cluster admin's static pods (attack review 10) run in `agents`.
static_pod_namespaces = ["agents"]
# No runtime applies seccomp profiles here: a pod's spec is all the agent has, and the
# tests' pods keep or drop CAP_NET_RAW by it (pod_seccomp requires the profile).
require_seccomp_profile = false
"#,
        kubeconfig.display()
    )
}

/// Connects to the private target first, then resolves `allowed.test` through the
/// pod's nameserver (redirected to the agent's resolver when enrolled) and connects to
/// what it got. Prints `<private> <resolved ip> <public>`.
pub const PROBE: &str = r#"
import errno, socket, sys
priv, pub = int(sys.argv[1]), int(sys.argv[2])
def tcp(host, port):
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((host, port)); return "OK"
    except OSError as e:
        return errno.errorcode.get(e.errno, "E%s" % e.errno)
out = [tcp("10.0.0.1", priv)]
try:
    ip = socket.getaddrinfo("allowed.test", pub, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    out += [ip, tcp(ip, pub)]
except OSError as e:
    out += ["NORESOLVE", "-"]
print(" ".join(out))
"#;

/// One test's cluster: the API stand-in, the agent, the resolver's upstream, the
/// listeners that record what reached them.
pub struct Cluster {
    pub api: FakeApi,
    pub env: TestEnv,
    pub _dns: Dnsmasq,
    pub private: TcpProbe,
    pub public: TcpProbe,
    pub enrolled: PinnedMap,
    pub kubeconfig_dir: PathBuf,
}

impl Cluster {
    /// Namespaces `agents` (enforced, default policy `strict`) and `plain` (not), then the
    /// agent, synced.
    pub fn start(name: &str) -> Self {
        Self::start_with(name, 60_000)
    }

    /// [`Cluster::start`] with the pod watcher's reconciling scan every `rescan_ms`.
    pub fn start_with(name: &str, rescan_ms: u64) -> Self {
        Self::start_configured(name, rescan_ms, false)
    }

    /// [`Cluster::start_with`], the agent requiring enforced pods to run under hb's
    /// seccomp profile (`kubernetes.require_seccomp_profile`) or not.
    pub fn start_configured(name: &str, rescan_ms: u64, require_profile: bool) -> Self {
        private_netns(&["203.0.113.10", "10.0.0.1"]);
        let dns = Dnsmasq::start(
            "127.0.0.1",
            5400,
            &[("allowed.test", &["203.0.113.10"])],
            &[],
            60,
        );
        let api = FakeApi::start();
        let kubeconfig_dir =
            std::env::temp_dir().join(format!("hb-kube-{}", crate::random_suffix()));
        fs::create_dir_all(&kubeconfig_dir).expect("kubeconfig dir");
        let kubeconfig = api.kubeconfig(&kubeconfig_dir);
        api.namespace(
            "agents",
            json!({"hb.dev/enforce": "true"}),
            json!({"hb.dev/policy": "strict"}),
            false,
        );
        api.namespace("plain", json!({}), json!({}), false);
        let mut env = TestEnv::new(name, &config_with(&kubeconfig, rescan_ms));
        // No [[sandbox]] glob here: the agent's glob reconciler runs at start, then
        // rarely (it removes the enrollments of cgroups that do not exist, which the
        // full-map test makes up).
        let text = fs::read_to_string(&env.config_path).expect("config");
        fs::write(
            &env.config_path,
            text.replacen(
                "rescan_interval_ms = 100\n",
                "rescan_interval_ms = 60000\n",
                1,
            )
            .replacen(
                "require_seccomp_profile = false\n",
                &format!("require_seccomp_profile = {require_profile}\n"),
                1,
            ),
        )
        .expect("config");
        env.start_agent();
        let enrolled = PinnedMap::open(&env.map_pin("HB_ENROLLED"));
        let c = Self {
            api,
            env,
            _dns: dns,
            private: TcpProbe::bind("10.0.0.1:0"),
            public: TcpProbe::bind("203.0.113.10:0"),
            enrolled,
            kubeconfig_dir,
        };
        c.wait_stat("initial sync", |s| s["initial_sync_done"] == true);
        c
    }

    /// The pod watcher's numbers (`state_dir/kubernetes.json`).
    pub fn stats(&self) -> Value {
        fs::read_to_string(self.env.state_dir.join("kubernetes.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    }

    pub fn wait_stat(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        assert!(
            wait_until(Duration::from_secs(15), || pred(&self.stats())),
            "{what}: not reached; kubernetes.json: {}\nagent log:\n{}",
            self.stats(),
            self.log()
        );
        self.stats()
    }

    pub fn log(&self) -> String {
        fs::read_dir(&self.env.state_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("agent-"))
            .map(|e| fs::read_to_string(e.path()).unwrap_or_default())
            .collect()
    }

    /// Waits for an agent log line holding every one of `needles`.
    pub fn wait_log(&self, needles: &[&str]) {
        let found = wait_until(Duration::from_secs(15), || {
            self.log()
                .lines()
                .any(|l| needles.iter().all(|n| l.contains(n)))
        });
        assert!(found, "no log line with {needles:?}:\n{}", self.log());
    }

    /// Registers `pod` with the API and waits until the agent decided it enforced.
    pub fn add_enforced_pod(&self, pod: &FakePod) {
        self.api.pod(pod, false);
        self.wait_log(&["pod enforced", &pod.uid]);
    }

    /// Registers `pod` (enforced, under `policy`), makes its cgroup and waits until it is
    /// enrolled so, then makes a container cgroup in it: (the pod's, the container's).
    pub fn enrolled_container(
        &self,
        pod: &FakePod,
        driver: Driver,
        qos: Qos,
        policy: &str,
    ) -> (PathBuf, PathBuf) {
        self.add_enforced_pod(pod);
        let dir = self.pod_dir(driver, qos, &pod.uid);
        fs::create_dir_all(&dir).expect("pod cgroup");
        self.wait_enrolled(&dir, policy);
        let container = dir.join(container_cgroup(driver));
        fs::create_dir_all(&container).expect("container cgroup");
        (dir, container)
    }

    /// The pod's cgroup below the test's root (the kubepods hierarchy's parent).
    pub fn pod_dir(&self, driver: Driver, qos: Qos, uid: &str) -> PathBuf {
        self.env.cgroup_path().join(pod_cgroup(driver, qos, uid))
    }

    pub fn enrollment(&self, dir: &Path) -> Option<(u32, u32)> {
        self.enrolled.get_u64_key(cgroup_id(dir))
    }

    pub fn wait_enrolled(&self, dir: &Path, policy: &str) {
        let id = cgroup_id(dir);
        assert!(
            wait_until(Duration::from_secs(15), || self
                .enrolled
                .get_u64_key(id)
                .is_some()),
            "{} not enrolled:\n{}",
            dir.display(),
            self.log()
        );
        assert_eq!(
            self.enrolled.get_u64_key(id),
            Some((self.env.policy_id(policy), ENROLL_KUBE)),
            "{} enrolled under {policy} by the pod watcher",
            dir.display()
        );
    }

    /// Runs the probe in a fresh container cgroup of the pod at `pod_dir`, moved there
    /// before it execs (no wait for anything): `[private, resolved, public]`.
    pub fn probe_in_new_container(&self, driver: Driver, pod_dir: &Path) -> Vec<String> {
        let container = pod_dir.join(container_cgroup(driver));
        fs::create_dir_all(&container).expect("container cgroup");
        let out = run_in(
            &container,
            &[
                python(),
                "-c",
                PROBE,
                &self.private.addr.port().to_string(),
                &self.public.addr.port().to_string(),
            ],
        );
        assert!(
            out.status.success(),
            "probe: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.kubeconfig_dir);
    }
}

/// `cmd`, moved into cgroup `dir` before it execs, run to its end.
pub fn run_in(dir: &Path, cmd: &[&str]) -> Output {
    let script = format!("echo $$ > {}/cgroup.procs && exec \"$@\"", dir.display());
    Command::new("sh")
        .args(["-c", &script, "sh"])
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("run in cgroup")
}

/// A container process that keeps running; killed and reaped on drop.
pub struct Sleeper {
    pub child: std::process::Child,
    pub pid: u32,
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sleep 600` in cgroup `dir` (a container that keeps running).
pub fn sleeper_in(dir: &Path) -> Sleeper {
    let script = format!("echo $$ > {}/cgroup.procs && exec sleep 600", dir.display());
    let child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .expect("sleep in cgroup");
    let pid = child.id();
    let procs = dir.join("cgroup.procs");
    assert!(
        wait_until(Duration::from_secs(5), || fs::read_to_string(&procs)
            .is_ok_and(|t| t.lines().any(|l| l.trim() == pid.to_string()))),
        "sleeper not in {}",
        dir.display()
    );
    Sleeper { child, pid }
}

/// What a process inside a pod's own network namespace (only `lo` there) gets: the
/// private target, the allowed name through the resolver's listener in that namespace,
/// and a plain-HTTP fetch of it (port 80: through the guard's listener there, which
/// relays from the agent's namespace). Prints `<private> <resolved ip> <http body>`.
pub const NETNS_PROBE: &str = r#"
import errno, socket, subprocess, sys
priv = int(sys.argv[1])
def tcp(host, port):
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((host, port)); return "OK"
    except OSError as e:
        return errno.errorcode.get(e.errno, "E%s" % e.errno)
out = [tcp("10.0.0.1", priv)]
try:
    out.append(socket.getaddrinfo("allowed.test", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])
except OSError:
    out.append("NORESOLVE")
r = subprocess.run(["curl", "-sS", "--max-time", "5", "http://allowed.test/"], capture_output=True, text=True)
out.append(r.stdout.strip() or "CURL%d" % r.returncode)
print(" ".join(out))
"#;

/// From inside an enforced pod's namespace: another policy's resolver (UDP and TCP) and
/// guard ports, and the agent's own metrics port, on the pod's loopback. Prints one
/// verdict per try.
pub const NETNS_ATTACK: &str = r#"
import errno, socket, sys
def tcp(port):
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port)); return "OK"
    except OSError as e:
        return errno.errorcode.get(e.errno, "E%s" % e.errno)
def udp(port):
    # A DNS query for allowed.test, type A.
    q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07allowed\x04test\x00\x00\x01\x00\x01"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    try:
        s.sendto(q, ("127.0.0.1", port)); s.recvfrom(512); return "ANSWER"
    except OSError as e:
        return errno.errorcode.get(e.errno, "timeout" if isinstance(e, socket.timeout) else "E%s" % e.errno)
print(" ".join([udp(int(sys.argv[1])), tcp(int(sys.argv[1])), tcp(int(sys.argv[2])), tcp(int(sys.argv[3]))]))
"#;

/// A network namespace with only `lo` (up), held by a process outside every pod (the
/// test's own cgroup), as the runtime's pinned namespace of a pod sandbox is.
pub struct PodNetns(pub Sleeper);

impl PodNetns {
    #[expect(
        clippy::new_without_default,
        reason = "starts a process: not a default value"
    )]
    pub fn new() -> Self {
        let child = Command::new("unshare")
            .args(["-n", "sh", "-c", "ip link set lo up && exec sleep 600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare -n");
        let pid = child.id();
        let own = fs::read_link("/proc/self/ns/net").expect("own netns");
        assert!(
            wait_until(Duration::from_secs(5), || fs::read_link(format!(
                "/proc/{pid}/ns/net"
            ))
            .is_ok_and(|l| l != own)
                && fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")),
            "the pod namespace's holder did not start"
        );
        Self(Sleeper { child, pid })
    }

    pub fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.0.pid)
    }

    /// `cmd` run inside the namespace (not in any pod cgroup).
    pub fn run(&self, cmd: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.path()))
            .arg("--")
            .args(cmd)
            .output()
            .expect("nsenter")
    }

    /// The listening sockets in the namespace, `proto local-address:port`, sorted.
    pub fn listeners(&self) -> Vec<String> {
        let out = self.run(&["ss", "-Hlntu"]);
        let mut l: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                format!("{} {}", f[0], f[4])
            })
            .collect();
        l.sort();
        l
    }

    /// The pod's sandbox ("pause") process: in this namespace and in container cgroup
    /// `dir` (the namespace first, as the runtime does).
    pub fn pause_in(&self, dir: &Path) -> Sleeper {
        fs::create_dir_all(dir).expect("container cgroup");
        let script = format!("echo $$ > {}/cgroup.procs && exec sleep 600", dir.display());
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.path()))
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("pause");
        let pid = child.id();
        let procs = dir.join("cgroup.procs");
        assert!(
            wait_until(Duration::from_secs(5), || fs::read_to_string(&procs)
                .is_ok_and(|t| t.lines().any(|l| l.trim() == pid.to_string()))),
            "pause not in {}",
            dir.display()
        );
        Sleeper { child, pid }
    }

    /// `cmd` started in a fresh container cgroup of the pod at `pod_dir`, in this
    /// namespace, with its stdin and stdout piped to the test; killed on drop.
    pub fn spawn_in_pod(&self, driver: Driver, pod_dir: &Path, cmd: &[&str]) -> Piped {
        let container = pod_dir.join(container_cgroup(driver));
        fs::create_dir_all(&container).expect("container cgroup");
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec nsenter --net={} -- \"$@\"",
            container.display(),
            self.path()
        );
        let mut child = Command::new("sh")
            .args(["-c", &script, "sh"])
            .args(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn in pod");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        Piped { child, out }
    }

    /// `cmd` in a fresh container cgroup of the pod at `pod_dir`, in this namespace.
    pub fn run_in_pod(&self, driver: Driver, pod_dir: &Path, cmd: &[&str]) -> Output {
        let container = pod_dir.join(container_cgroup(driver));
        fs::create_dir_all(&container).expect("container cgroup");
        let net = format!("--net={}", self.path());
        let mut full = vec!["nsenter", &net, "--"];
        full.extend_from_slice(cmd);
        run_in(&container, &full)
    }
}

/// A pod's process the test talks to line by line; killed and reaped on drop.
pub struct Piped {
    pub child: std::process::Child,
    pub out: BufReader<std::process::ChildStdout>,
}

impl Piped {
    pub fn line(&mut self) -> String {
        let mut l = String::new();
        self.out.read_line(&mut l).expect("pod process output");
        l.trim().to_owned()
    }

    /// Sends one line (the go-ahead) to the process.
    pub fn go(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("go");
        stdin.flush().expect("flush");
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn stdout_words(out: &Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}
