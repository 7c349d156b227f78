//! What the cgroup hooks cannot see: abstract Unix sockets and signals. Abstract socket
//! names belong to the network namespace, which every sandbox shares with the host, so
//! `sandbox run` puts each command in a Landlock domain of its own whose scopes refuse
//! reaching abstract sockets and signalling processes outside it. The attacks run inside
//! sandboxes as uid 65534 against recorders the test owns, in the test's own network
//! namespace (its abstract socket names are private to the test).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    os::{
        fd::{AsRawFd, FromRawFd as _, OwnedFd},
        linux::net::SocketAddrExt as _,
        unix::net::{SocketAddr, UnixDatagram, UnixListener, UnixStream},
    },
    process::{Child, ChildStdout, Command, Output, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use hb_tests::{TestEnv, agent_bin, private_netns, python};

const CONFIG: &str = r#"
[broker]
socket_mode = "0666"

[egress]
exception_cidrs = ["203.0.113.0/24"]

[[policy]]
name = "strict"
allow_cidrs = []

[[policy]]
name = "loose"
allow_cidrs = ["203.0.113.66/32"]
"#;

/// The "public" address only the loose policy may reach (on the namespace's `lo`).
const LOOSE_ONLY: &str = "203.0.113.66";

/// The sandboxed user of every attack here.
const NOBODY: &str = "65534";

fn sandbox_args<'a>(env: &'a TestEnv, policy: &'a str, cmd: &[&'a str]) -> Vec<&'a str> {
    let config = env.config_path.to_str().expect("utf-8 config path");
    let mut args = vec![
        "--config", config, "sandbox", "run", "--policy", policy, "--user", NOBODY, "--",
    ];
    args.extend_from_slice(cmd);
    args
}

/// `cmd` in a sandbox of `policy` as uid 65534, captured; it must have run.
fn sandboxed(env: &TestEnv, policy: &str, cmd: &[&str]) -> Output {
    let out = Command::new(agent_bin())
        .args(sandbox_args(env, policy, cmd))
        .stdin(Stdio::null())
        .output()
        .expect("run hb-agent sandbox run");
    assert!(
        out.status.success(),
        "sandboxed {cmd:?} did not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn abstract_addr(name: &str) -> SocketAddr {
    SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name")
}

/// A unique abstract name (without the leading NUL) for this test process.
fn abstract_name(what: &str) -> String {
    format!("hb-test-{what}-{}", std::process::id())
}

/// What arrived at the host's abstract sockets: one entry per stream connection (its
/// bytes) or datagram.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<Vec<Vec<u8>>>>);

impl Arrivals {
    fn push(&self, bytes: Vec<u8>) {
        self.0.lock().expect("arrivals").push(bytes);
    }

    fn all(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("arrivals")
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    /// Waits until `sentinel` arrived (sent by the test after the attack, so everything
    /// the attack got through arrived before it), then returns all arrivals.
    fn after(&self, sentinel: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = self.all();
            if all.iter().any(|a| a == sentinel) {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinel never reached the recorder: {all:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A host daemon on abstract stream socket `@name` (outside any sandbox) that records
/// every connection's bytes.
fn record_stream(name: &str) -> Arrivals {
    let listener = UnixListener::bind_addr(&abstract_addr(name)).expect("bind abstract stream");
    let arrivals = Arrivals::default();
    let rec = arrivals.clone();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut bytes = Vec::new();
            let _ = conn.read_to_end(&mut bytes);
            rec.push(bytes);
        }
    });
    arrivals
}

/// A host daemon on abstract datagram socket `@name` that records every datagram.
fn record_datagrams(name: &str) -> Arrivals {
    let sock = UnixDatagram::bind_addr(&abstract_addr(name)).expect("bind abstract datagram");
    let arrivals = Arrivals::default();
    let rec = arrivals.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok(n) = sock.recv(&mut buf) {
            rec.push(buf[..n].to_vec());
        }
    });
    arrivals
}

/// Tries a stream connect and a datagram sendto to the abstract names in argv; prints
/// its uid and `OK` or the errno name for each.
const PY_ABSTRACT_CLIENT: &str = r#"
import errno, os, socket, sys
stream, dgram = "\0" + sys.argv[1], "\0" + sys.argv[2]
def attempt(f):
    try:
        f(); return "OK"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(stream)
    s.sendall(b"exfil over stream"); s.close()
def sendto():
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"exfil over datagram", dgram)
print(os.getuid(), attempt(connect), attempt(sendto))
"#;

#[test]
fn a_sandbox_cannot_reach_a_host_daemon_on_an_abstract_unix_socket() {
    private_netns(&[]);
    let mut env = TestEnv::new("absunix", CONFIG);
    env.start_agent();
    let (stream, dgram) = (abstract_name("hostsvc"), abstract_name("hostdgram"));
    let streams = record_stream(&stream);
    let datagrams = record_datagrams(&dgram);

    // The same client outside any sandbox gets through: the recorders work.
    let host = Command::new(python())
        .args(["-c", PY_ABSTRACT_CLIENT, &stream, &dgram])
        .output()
        .expect("python3");
    assert_eq!(stdout_of(&host), "0 OK OK", "{host:?}");
    let send_sentinels = |text: &str| {
        UnixStream::connect_addr(&abstract_addr(&stream))
            .and_then(|mut s| s.write_all(text.as_bytes()))
            .expect("sentinel connect");
        UnixDatagram::unbound()
            .and_then(|s| s.send_to_addr(text.as_bytes(), &abstract_addr(&dgram)))
            .expect("sentinel datagram");
    };
    send_sentinels("before");
    let streams_before = streams.after("before").len();
    let datagrams_before = datagrams.after("before").len();
    let out = sandboxed(
        &env,
        "strict",
        &[python(), "-c", PY_ABSTRACT_CLIENT, &stream, &dgram],
    );
    assert_eq!(
        stdout_of(&out),
        "65534 EPERM EPERM",
        "connect and sendto to a host abstract socket are refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    send_sentinels("sentinel");
    assert_eq!(
        streams.after("sentinel")[streams_before..],
        ["sentinel"],
        "nothing from the sandbox reached the stream recorder"
    );
    assert_eq!(
        datagrams.after("sentinel")[datagrams_before..],
        ["sentinel"],
        "nothing from the sandbox reached the datagram recorder"
    );
}

/// Sandbox B: opens the connection its policy allows, then hands it (SCM_RIGHTS) to
/// whoever connects to `@relay`, until a peer says "stop".
const PY_RELAY_B: &str = r#"
import array, socket, sys
relay, host, port = "\0" + sys.argv[1], sys.argv[2], int(sys.argv[3])
conn = socket.create_connection((host, port))
conn.sendall(b"B's own bytes\n")
srv = socket.socket(socket.AF_UNIX); srv.bind(relay); srv.listen(4)
print("ready", flush=True)
while True:
    c, _ = srv.accept()
    c.sendmsg([b"fd"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [conn.fileno()]))])
    if c.recv(16) == b"stop":
        break
"#;

/// Sandbox A: tries the forbidden address directly, then through B's socket.
const PY_RELAY_A: &str = r#"
import array, errno, socket, sys
relay, host, port = "\0" + sys.argv[1], sys.argv[2], int(sys.argv[3])
def attempt(f):
    try:
        f(); return "OK"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def direct():
    socket.create_connection((host, port), timeout=5).sendall(b"A direct\n")
def through_b():
    u = socket.socket(socket.AF_UNIX); u.connect(relay)
    _, anc, _, _ = u.recvmsg(16, socket.CMSG_LEN(4))
    fd = array.array("i", anc[0][2])[0]
    socket.socket(fileno=fd).sendall(b"A's data through B\n")
    u.send(b"done")
print("direct", attempt(direct))
print("relay", attempt(through_b))
"#;

#[test]
fn sandboxes_under_different_policies_cannot_pass_a_socket_over_an_abstract_socket() {
    private_netns(&[LOOSE_ONLY]);
    let mut env = TestEnv::new("absrelay", CONFIG);
    env.start_agent();
    // The far side: records every byte that reaches the address only "loose" may reach.
    let far = TcpListener::bind((LOOSE_ONLY, 0)).expect("bind far side");
    let port = far.local_addr().expect("addr").port().to_string();
    let far_side = thread::spawn(move || {
        let (mut conn, _) = far.accept().expect("B's connection");
        let mut bytes = Vec::new();
        let _ = conn.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let relay = abstract_name("relay");

    let mut b = Command::new(agent_bin())
        .args(sandbox_args(
            &env,
            "loose",
            &[python(), "-c", PY_RELAY_B, &relay, LOOSE_ONLY, &port],
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sandbox B");
    let mut ready = String::new();
    BufReader::new(b.stdout.take().expect("B's stdout"))
        .read_line(&mut ready)
        .expect("B's first line");
    assert_eq!(ready.trim(), "ready", "sandbox B did not start: {b:?}");

    let a = sandboxed(
        &env,
        "strict",
        &[python(), "-c", PY_RELAY_A, &relay, LOOSE_ONLY, &port],
    );
    let a_said = stdout_of(&a);

    // The test (outside any sandbox) may still connect into B's socket: it tells B to end.
    if let Ok(mut stop) = UnixStream::connect_addr(&abstract_addr(&relay)) {
        let mut fd_msg = [0u8; 2];
        let _ = stop.read_exact(&mut fd_msg);
        let _ = stop.write_all(b"stop");
    }
    let b_status = b.wait().expect("wait B");
    let arrived = far_side.join().expect("far side");

    assert_eq!(
        a_said,
        "direct EPERM\nrelay EPERM",
        "A may not reach the address directly nor connect to B's abstract socket: {}",
        String::from_utf8_lossy(&a.stderr)
    );
    assert!(b_status.success(), "sandbox B: {b_status:?}");
    assert_eq!(
        arrived, "B's own bytes\n",
        "only B's own bytes reached the far side, nothing of A's"
    );
}

/// In one sandbox: a parent listens on abstract stream and datagram sockets, its child
/// connects and sends to them.
const PY_WITHIN: &str = r#"
import os, socket, sys
name = "\0" + sys.argv[1]
srv = socket.socket(socket.AF_UNIX); srv.bind(name); srv.listen(1); srv.settimeout(30)
d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); d.bind(name + "-d"); d.settimeout(30)
pid = os.fork()
if pid == 0:
    try:
        c = socket.socket(socket.AF_UNIX); c.connect(name); c.sendall(b"stream-from-child")
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"dgram-from-child", name + "-d")
    finally:
        os._exit(0)
conn, _ = srv.accept()
print(conn.recv(64).decode(), d.recv(64).decode())
os.waitpid(pid, 0)
"#;

#[test]
fn a_sandbox_keeps_abstract_sockets_within_itself_and_the_broker_socket() {
    private_netns(&[]);
    let mut env = TestEnv::new("absinside", CONFIG);
    env.start_agent();
    let name = abstract_name("inside");
    let out = sandboxed(&env, "strict", &[python(), "-c", PY_WITHIN, &name]);
    assert_eq!(
        stdout_of(&out),
        "stream-from-child dgram-from-child",
        "a parent and its child in one sandbox still talk over abstract sockets: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The broker's socket is a pathname socket: reachable, and it names the sandbox.
    let socket = env.broker_socket();
    let socket = socket.to_str().expect("utf-8 socket path");
    let out = sandboxed(
        &env,
        "strict",
        &[
            "curl",
            "-sS",
            "-m",
            "5",
            "--unix-socket",
            socket,
            "http://hb/v1/whoami",
        ],
    );
    let whoami: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "whoami from the sandbox: {e}: {} {}",
            stdout_of(&out),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(whoami["uid"], 65534, "{whoami}");
    assert_eq!(whoami["sandbox"]["policy"], "strict", "{whoami}");
}

/// Kills the host process it holds when dropped.
struct Victim(Child);

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until process `pid` runs as `uid` (setpriv has switched before exec), so a
/// refused kill is not the plain uid check against a still-root process.
fn wait_until_uid(pid: &str, uid: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let runs_as = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .is_some_and(|ids| ids.split_whitespace().all(|id| id == uid));
        if runs_as && status.lines().any(|l| l == "Name:\tsleep") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "victim {pid} never ran as {uid}: {status}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Prints `ready`, then receives on its stdin (a Unix socket) a message whose bytes are a
/// pid and which carries two pidfds (SCM_RIGHTS). Sends SIGKILL through the first pidfd,
/// to the pid in the message, through the second pidfd, to the pid in argv, and to a
/// child of its own; prints the errno name (or OK) of the first four and the signal that
/// ended the child, then waits for its stdin to close. (SIGKILL: it cannot be blocked or
/// caught, so the outcome is the permission check's alone.)
const PY_SIGNALS: &str = r#"
import errno, os, signal, socket, sys
def attempt(f):
    try:
        f(); return "OK"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
print("ready", flush=True)
stdin = socket.socket(fileno=0)
msg, fds, _, _ = socket.recv_fds(stdin, 64, 2)
out = [
    attempt(lambda: signal.pidfd_send_signal(fds[0], signal.SIGKILL)),
    attempt(lambda: os.kill(int(msg), signal.SIGKILL)),
    attempt(lambda: signal.pidfd_send_signal(fds[1], signal.SIGKILL)),
    attempt(lambda: os.kill(int(sys.argv[1]), signal.SIGKILL)),
]
pid = os.fork()
if pid == 0:
    while True:
        signal.pause()
os.kill(pid, signal.SIGKILL)
_, status = os.waitpid(pid, 0)
out.append(str(os.WTERMSIG(status)) if os.WIFSIGNALED(status) else "exited")
print(" ".join(out), flush=True)
stdin.recv(1)
"#;

/// `setpriv` arguments that switch to uid and gid 65534 with no groups.
fn to_nobody() -> [String; 3] {
    [
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".to_owned(),
    ]
}

/// `setpriv` to uid 65534 running `sleep 600`, after `prefix` (e.g. an `nsenter`).
fn as_nobody(prefix: &[&str]) -> Command {
    let mut cmd = Command::new(prefix.first().copied().unwrap_or("setpriv"));
    if !prefix.is_empty() {
        cmd.args(&prefix[1..]).arg("setpriv");
    }
    cmd.args(to_nobody()).args(["sleep", "600"]);
    cmd
}

/// A host process of uid 65534 running `sleep`; its pid.
fn host_process_of_nobody() -> (Victim, u32) {
    let victim = Victim(as_nobody(&[]).spawn().expect("spawn the victim"));
    let pid = victim.0.id();
    wait_until_uid(&pid.to_string(), NOBODY);
    (victim, pid)
}

/// A host process of uid 65534 running `sleep` that entered the pid namespace of the
/// process `init` (as `nsenter`, or a `docker exec`, does): outside the sandbox's
/// Landlock domain, cgroup and mount namespace, but named by a pid inside its pid
/// namespace. Returns it (nsenter, which waits for it), its host pid and its pid there.
fn host_process_of_nobody_in_pid_namespace_of(init: i32) -> (Victim, u32, u32) {
    let target = init.to_string();
    let nsenter = Victim(
        as_nobody(&["nsenter", "--target", &target, "--pid", "--"])
            .spawn()
            .expect("nsenter"),
    );
    let children = format!("/proc/{0}/task/{0}/children", nsenter.0.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid: u32 = loop {
        let text = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(pid) = text.split_whitespace().next() {
            break pid.parse().expect("child pid");
        }
        assert!(Instant::now() < deadline, "nsenter started no child");
        thread::sleep(Duration::from_millis(10));
    };
    wait_until_uid(&pid.to_string(), NOBODY);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let ns_pid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|ids| ids.split_whitespace().last())
        .and_then(|id| id.parse().ok())
        .expect("NSpid");
    (nsenter, pid, ns_pid)
}

/// Sends `data` with pidfds of `pids` (pidfd_open(2), SCM_RIGHTS) over `sock`.
fn send_pidfds(sock: &UnixStream, data: &[u8], pids: &[u32]) {
    let pidfds: Vec<OwnedFd> = pids
        .iter()
        .map(|&pid| {
            // SAFETY: pidfd_open(2) with integer arguments; the fd is owned right below.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
            assert!(
                fd >= 0,
                "pidfd_open({pid}): {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: a fresh fd of this process, owned only here.
            unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) }
        })
        .collect();
    let raw: Vec<libc::c_int> = pidfds.iter().map(AsRawFd::as_raw_fd).collect();
    let mut data = data.to_vec();
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let fds_len = std::mem::size_of_val(raw.as_slice()) as u32;
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE(fds_len) } as usize;
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive sendmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: msg_control points at `space` bytes: room for one header and the fds.
    let sent = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fds_len) as usize;
        std::ptr::copy_nonoverlapping(
            raw.as_ptr(),
            libc::CMSG_DATA(cmsg).cast::<libc::c_int>(),
            raw.len(),
        );
        libc::sendmsg(sock.as_raw_fd(), &raw const msg, 0)
    };
    assert_eq!(
        sent,
        data.len() as isize,
        "sendmsg(SCM_RIGHTS): {}",
        std::io::Error::last_os_error()
    );
}

/// Starts [`PY_SIGNALS`] with `host_pid` in argv and a socket as stdin, by `launch`
/// (`sandbox run`, or setpriv on the host); returns it, the test's end of the socket and
/// its output, after its `ready` line.
fn start_signaller(mut launch: Command) -> (Child, UnixStream, BufReader<ChildStdout>) {
    let (near, far) = UnixStream::pair().expect("socketpair");
    let mut child = launch
        .stdin(OwnedFd::from(far))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the signaller");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut ready = String::new();
    stdout.read_line(&mut ready).expect("ready");
    assert_eq!(ready.trim(), "ready", "the signaller did not start");
    (child, near, stdout)
}

/// Hands the signaller its pid and pidfds and returns what it said.
fn signal_through(
    near: &UnixStream,
    stdout: &mut BufReader<ChildStdout>,
    pid: u32,
    pidfds: &[u32],
) -> String {
    send_pidfds(near, pid.to_string().as_bytes(), pidfds);
    let mut said = String::new();
    stdout.read_line(&mut said).expect("the signaller's answer");
    said.trim().to_owned()
}

/// A sandbox has a pid namespace of its own, so a host pid names nothing in it (ESRCH),
/// or a process of its own namespace, and a pidfd of a host process outside that
/// namespace cannot be used there (EINVAL). A host process can still be named from
/// inside when it enters the sandbox's pid namespace (`nsenter`, an exec into the
/// sandbox): there the Landlock signal scope refuses the signal, by pid and by pidfd
/// (EPERM). Host processes of the sandbox's own uid, which the uid check alone would let
/// a kill reach, survive every attempt; the sandbox's own child can be signalled. The
/// same attempts from a host process of that uid reach their target.
#[test]
fn a_sandbox_cannot_signal_a_host_process_of_its_uid_but_can_signal_its_children() {
    private_netns(&[]);
    let mut env = TestEnv::new("abssignal", CONFIG);
    env.start_agent();

    // Outside any sandbox, as the same uid: pidfd and pid reach their target.
    let (mut control, pid) = host_process_of_nobody();
    let mut setpriv = Command::new("setpriv");
    setpriv
        .args(to_nobody())
        .args([python(), "-c", PY_SIGNALS, &pid.to_string()]);
    let (mut host, near, mut stdout) = start_signaller(setpriv);
    let said = signal_through(&near, &mut stdout, pid, &[pid, pid]);
    drop(near);
    let _ = host.wait();
    assert_eq!(said, "OK OK OK OK 9", "a host process of uid {NOBODY}");
    let status = control.0.wait().expect("control victim");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the control victim was killed through its pidfd"
    );

    let (mut victim, pid) = host_process_of_nobody();
    let (mut sandbox, near, mut stdout) = start_signaller({
        let mut c = Command::new(agent_bin());
        c.args(sandbox_args(
            &env,
            "strict",
            &[python(), "-c", PY_SIGNALS, &pid.to_string()],
        ));
        c
    });
    let init = env.host_pid_in_sandbox("strict", 1);
    let (mut entered, entered_pid, ns_pid) = host_process_of_nobody_in_pid_namespace_of(init);
    let said = signal_through(&near, &mut stdout, ns_pid, &[entered_pid, pid]);
    let fields: Vec<&str> = said.split(' ').collect();
    let alive = |v: &mut Victim| v.0.try_wait().expect("victim").is_none();
    let (entered_alive, victim_alive) = (alive(&mut entered), alive(&mut victim));
    drop(near);
    let status = sandbox.wait().expect("sandbox");
    assert!(
        fields.len() == 5
            && fields[0] == "EPERM"
            && fields[1] == "EPERM"
            && (fields[2] == "EINVAL" || fields[2] == "EPERM")
            && (fields[3] == "ESRCH" || fields[3] == "EPERM")
            && fields[4] == "9",
        "refused: the pidfd (EPERM) and the namespace pid {ns_pid} (EPERM) of the host \
         process that entered the namespace, the pidfd (EINVAL or EPERM) and the host pid \
         {pid} (ESRCH or EPERM) of the one outside; the sandbox's own child killed (9): \
         {said:?}"
    );
    assert!(status.success(), "the sandbox: {status:?}");
    assert!(
        entered_alive,
        "the host process in the sandbox's pid namespace is still running"
    );
    assert!(victim_alive, "the host process is still running");
}
