//! Kubernetes without a cluster: a stand-in API server (`tests/fixtures/fake_apiserver.py`,
//! recorded-shaped list and watch responses, 410 Gone on demand) on the test namespace's
//! loopback, a kubeconfig pointing at it, kubelet-shaped pod cgroups, and a direct look
//! into the pinned enrolled map (the `bpf` syscall, no process per look: latency
//! measurements poll it).

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// The fake API server, killed on drop.
pub struct FakeApi {
    child: Child,
    pub port: u16,
}

impl FakeApi {
    /// Starts it on 127.0.0.1 (the caller's network namespace) on a free port.
    pub fn start() -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/fake_apiserver.py");
        let mut child = Command::new(crate::python())
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 fake_apiserver.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("fake API server's port");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("port: {line:?}"));
        Self { child, port }
    }

    /// A kubeconfig for the agent, written to `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{}\nusers:\n- name: hb\n  user:\n    token: hb-test-token\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: hb\ncurrent-context: fake\n",
                self.port
            ),
        )
        .expect("write kubeconfig");
        path
    }

    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let (head, rest) = self.request(method, path, body);
        assert!(head.starts_with("HTTP/1.1 200"), "{method} {path}: {head}");
        serde_json::from_str(&rest).expect("JSON")
    }

    /// One request: the response's head and body.
    fn request(&self, method: &str, path: &str, body: &Value) -> (String, String) {
        let body = body.to_string();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("fake API server");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("response");
        let (head, rest) = text.split_once("\r\n\r\n").expect("HTTP response");
        (head.to_owned(), rest.to_owned())
    }

    /// Adds or changes a pod bound to `node` (a watch event unless `silent`).
    pub fn pod(&self, p: &FakePod, silent: bool) {
        self.call(
            "POST",
            "/hb/pod",
            &json!({"uid": p.uid, "name": p.name, "namespace": p.namespace, "node": p.node,
                    "annotations": p.annotations, "spec": p.spec, "silent": silent}),
        );
    }

    /// Adds or changes a pod as a client would: the API server's refusal (its `Status`
    /// message) if it refuses, as the real one does for a mirror pod annotation added,
    /// removed or changed by an update.
    pub fn try_pod(&self, p: &FakePod) -> Result<(), String> {
        let (head, rest) = self.request(
            "POST",
            "/hb/pod",
            &json!({"uid": p.uid, "name": p.name, "namespace": p.namespace, "node": p.node,
                    "annotations": p.annotations, "spec": p.spec, "silent": false}),
        );
        if head.starts_with("HTTP/1.1 200") {
            return Ok(());
        }
        let status: Value = serde_json::from_str(&rest).unwrap_or(Value::Null);
        Err(format!("{}: {}", status["code"], status["message"]))
    }

    pub fn delete_pod(&self, uid: &str, silent: bool) {
        self.call(
            "POST",
            "/hb/pod-delete",
            &json!({"uid": uid, "silent": silent}),
        );
    }

    /// Adds or changes a namespace with these labels and annotations.
    pub fn namespace(&self, name: &str, labels: Value, annotations: Value, silent: bool) {
        self.call(
            "POST",
            "/hb/namespace",
            &json!({"name": name, "labels": labels, "annotations": annotations, "silent": silent}),
        );
    }

    /// Compacts history: open watches end and their resourceVersion gets 410 Gone.
    pub fn expire(&self) {
        self.call("POST", "/hb/expire", &json!({}));
    }

    /// Every API request line the agent made.
    pub fn requests(&self) -> Vec<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("fake API server");
        write!(
            s,
            "GET /hb/requests HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .expect("request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("response");
        let (_, rest) = text.split_once("\r\n\r\n").expect("HTTP response");
        serde_json::from_str(rest).expect("JSON")
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pod as the fake API serves it.
#[derive(Debug, Clone)]
pub struct FakePod {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub node: String,
    pub annotations: Value,
    /// The pod's spec (`null`: the server's default, one container that drops every
    /// capability).
    pub spec: Value,
}

impl FakePod {
    /// A pod with a fresh uid.
    pub fn new(name: &str, namespace: &str, node: &str, policy: Option<&str>) -> Self {
        Self {
            uid: random_uid(),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            node: node.to_owned(),
            annotations: policy.map_or(json!({}), |p| json!({"hb.dev/policy": p})),
            spec: Value::Null,
        }
    }

    /// This pod with one container `main` whose `securityContext` is `security` (`null`:
    /// none, so the runtime's default capabilities, `CAP_NET_RAW` among them).
    pub fn with_security(mut self, security: Value) -> Self {
        let mut container = json!({"name": "main"});
        if !security.is_null() {
            container["securityContext"] = security;
        }
        self.spec = json!({"containers": [container]});
        self
    }
}

/// A random RFC 4122 version 4 uid, as the API server gives pods.
pub fn random_uid() -> String {
    let h = format!(
        "{}{}{}",
        crate::random_suffix(),
        crate::random_suffix(),
        crate::random_suffix()
    );
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// The kubelet's cgroup drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Systemd,
    Cgroupfs,
}

/// QoS classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

pub const DRIVERS: [Driver; 2] = [Driver::Systemd, Driver::Cgroupfs];
pub const QOS: [Qos; 3] = [Qos::Guaranteed, Qos::Burstable, Qos::BestEffort];

/// The kubelet's pod-level cgroup for pod `uid`, relative to the kubepods cgroup's
/// parent (`kubelet pkg/kubelet/cm`): systemd `kubepods.slice/[kubepods-<qos>.slice/]
/// kubepods-[<qos>-]pod<uid_>.slice`, cgroupfs `kubepods/[<qos>/]pod<uid>`.
pub fn pod_cgroup(driver: Driver, qos: Qos, uid: &str) -> String {
    let under = uid.replace('-', "_");
    let q = match qos {
        Qos::Guaranteed => None,
        Qos::Burstable => Some("burstable"),
        Qos::BestEffort => Some("besteffort"),
    };
    match (driver, q) {
        (Driver::Systemd, None) => format!("kubepods.slice/kubepods-pod{under}.slice"),
        (Driver::Systemd, Some(q)) => {
            format!("kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{under}.slice")
        }
        (Driver::Cgroupfs, None) => format!("kubepods/pod{uid}"),
        (Driver::Cgroupfs, Some(q)) => format!("kubepods/{q}/pod{uid}"),
    }
}

/// A container's cgroup name below its pod's, as containerd names it per driver.
pub fn container_cgroup(driver: Driver) -> String {
    let id = format!(
        "{}{}{}{}{}{}",
        crate::random_suffix(),
        crate::random_suffix(),
        crate::random_suffix(),
        crate::random_suffix(),
        crate::random_suffix(),
        &crate::random_suffix()[..4]
    );
    match driver {
        Driver::Systemd => format!("cri-containerd-{id}.scope"),
        Driver::Cgroupfs => id,
    }
}

/// A pinned BPF map opened by path (`BPF_OBJ_GET`), looked up with `BPF_MAP_LOOKUP_ELEM`.
pub struct PinnedMap(OwnedFd);

impl PinnedMap {
    pub fn open(path: &Path) -> Self {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
        // union bpf_attr for BPF_OBJ_GET: pathname, bpf_fd, file_flags.
        #[repr(C)]
        struct ObjGet {
            pathname: u64,
            bpf_fd: u32,
            file_flags: u32,
        }
        let attr = ObjGet {
            pathname: c.as_ptr() as u64,
            bpf_fd: 0,
            file_flags: 0,
        };
        // SAFETY: bpf(BPF_OBJ_GET) reads `attr` (and the path it points at) only.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, 7, &raw const attr, size_of::<ObjGet>()) };
        assert!(
            fd >= 0,
            "open pinned map {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        // SAFETY: a new descriptor we own.
        Self(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// The 8-byte value at a u64 key (`HB_ENROLLED`: policy id, flags), if any.
    pub fn get_u64_key(&self, key: u64) -> Option<(u32, u32)> {
        #[repr(C)]
        struct Lookup {
            map_fd: u32,
            _pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        let mut value = [0u32; 2];
        let attr = Lookup {
            map_fd: self.0.as_raw_fd() as u32,
            _pad: 0,
            key: (&raw const key) as u64,
            value: (&raw mut value) as u64,
            flags: 0,
        };
        // SAFETY: bpf(BPF_MAP_LOOKUP_ELEM) reads the key and writes 8 bytes to `value`
        // (the map's value size).
        let rc = unsafe { libc::syscall(libc::SYS_bpf, 1, &raw const attr, size_of::<Lookup>()) };
        (rc == 0).then_some((value[0], value[1]))
    }
}

impl PinnedMap {
    /// Stores an 8-byte value at a u64 key (`BPF_MAP_UPDATE_ELEM`); false when the map
    /// refuses it (full: E2BIG).
    pub fn put_u64_key(&self, key: u64, value: (u32, u32)) -> bool {
        #[repr(C)]
        struct Update {
            map_fd: u32,
            _pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        let value = [value.0, value.1];
        let attr = Update {
            map_fd: self.0.as_raw_fd() as u32,
            _pad: 0,
            key: (&raw const key) as u64,
            value: (&raw const value) as u64,
            flags: 0,
        };
        // SAFETY: bpf(BPF_MAP_UPDATE_ELEM) reads the key and 8 bytes of `value`.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, 2, &raw const attr, size_of::<Update>()) };
        rc == 0
    }
}

/// A cgroup's id (its directory's inode).
pub fn cgroup_id(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .ino()
}

/// `cmd` moved into cgroup `dir` (as a kubelet's container would be), run to its end
/// (a refused pod's process is killed): its exit status and output.
pub fn run_in_cgroup(dir: &Path, cmd: &[&str]) -> (std::process::ExitStatus, String) {
    let script = format!("echo $$ > {}/cgroup.procs && exec \"$@\"", dir.display());
    let mut child = Command::new("sh")
        .args(["-c", &script, "sh"])
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh");
    let mut done = None;
    wait_until(Duration::from_secs(20), || {
        done = child.try_wait().expect("wait");
        done.is_some()
    });
    let Some(status) = done else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} in {} neither ended nor was killed", dir.display());
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("stdout");
    (status, out)
}

/// A pod's process writing an IPv4 UDP datagram through a packet socket (`AF_PACKET`,
/// which no cgroup hook sees), then through a UDP socket (judged); prints `packet
/// RESULT` and `udp RESULT`. argv: destination, port, the forged source (an address the
/// host does not hold).
pub const PY_PACKET: &str = r#"
import errno, socket, struct, sys
dst, port = sys.argv[1], int(sys.argv[2])
def attempt(label, f):
    try:
        f(); print(label, "sent", flush=True)
    except OSError as e:
        print(label, errno.errorcode.get(e.errno, str(e)), flush=True)
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
def datagram(label):
    payload = ("hb-exfil:" + label).encode()
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton(sys.argv[3]), socket.inet_aton(dst))
    return ip[:10] + struct.pack("!H", csum(ip)) + ip[12:] + udp
def packet():
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    s.sendto(datagram("packet"), ("lo", 0x0800, 0, 0, bytes(6)))
def udp():
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"hb-exfil:udp", (dst, port))
attempt("packet", packet)
attempt("udp", udp)
"#;

/// Waits until `pred` holds, polling every ms, for at most `limit`; whether it did.
pub fn wait_until(limit: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    pred()
}
