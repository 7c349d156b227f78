//! The sandbox's filesystem, attacked from inside: a read-only root nobody can write or
//! remount, a cgroup filesystem nobody can leave through, the agent's state, master key
//! and pins out of sight, no host process in /proc, no block device, no host daemon's
//! Unix socket, and tenants that cannot reach each other — each as the default user and
//! as `--user 0`. The far side of each attack is on the host (the files, the cgroups,
//! the listening sockets), and the test checks it there. Normal tools keep working.

use std::{
    fs,
    os::unix::{
        ffi::OsStrExt as _,
        fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use hb_tests::{
    TcpProbe, TestEnv, agent_bin, cgroup2_mount, private_netns, python, random_suffix, stdout,
};

const UPSTREAM_PORT: u16 = 5400;

/// One policy that reaches the test's "public" web server by name; the broker socket
/// open to every uid, so the default user could use it (and would reach it if it were
/// not bound in).
const CONFIG: &str = r#"
[broker]
socket_mode = "0666"

[dns]
listen = "127.0.0.1:5300"
redirect = true
upstreams = ["127.0.0.1:5400"]

[egress]
exception_cidrs = ["203.0.113.0/24"]

[[policy]]
name = "open"
allow_domains = ["allowed.test"]
"#;

/// The two users every attack runs as: the default one (1000:1000) and root.
const USERS: [(&str, &[&str]); 2] = [("default user", &[]), ("--user 0", &["--user", "0"])];

fn start(name: &str) -> TestEnv {
    start_in(&std::env::temp_dir(), name, CONFIG)
}

/// An agent whose state folder lies in `base`, in the test's own network namespace.
fn start_in(base: &Path, name: &str, config: &str) -> TestEnv {
    private_netns(&[]);
    let mut env = TestEnv::new_in(base, name, config);
    env.start_agent();
    env
}

/// `sh -c script` in a sandbox of policy "open" with the given `sandbox run` options.
fn sandbox(env: &TestEnv, options: &[&str], script: &str) -> Output {
    let mut args = vec!["sandbox", "run", "--policy", "open"];
    args.extend_from_slice(options);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    env.hb(&args)
}

/// What a sandbox said, with its exit status and stderr for failure messages.
fn said(out: &Output) -> String {
    format!(
        "{}[exit {:?}; stderr: {}]",
        stdout(out),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A host folder for one test, removed on drop (a test that fails against an old binary
/// may leave probe files in it).
struct Scratch(PathBuf);

impl Scratch {
    fn new(parent: &str, tag: &str) -> Self {
        let p = Path::new(parent).join(format!("hb-test-{tag}-{}", random_suffix()));
        fs::create_dir_all(&p).expect("scratch dir");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod scratch");
        Self(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Host paths an attack may have created, removed on drop whatever happened.
struct Probes(Vec<PathBuf>);

impl Drop for Probes {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_file(p);
            let _ = fs::remove_dir(p);
        }
    }
}

/// A process killed and reaped on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The root filesystem, `/etc`, `/usr`, `/var/tmp` (world-writable on the host) and a
/// world-writable host folder: nothing written, no folder made, no root-owned file
/// appended to or chmod-ed (a uid-0 command owns those), not even after trying to
/// remount `/` read-write. Checked on the host.
#[test]
fn writing_or_remounting_the_root_filesystem_is_refused() {
    let env = start("fs-write");
    let host = Scratch::new("/var/tmp", "fs-write-host");
    let open = host.0.join("open");
    fs::create_dir(&open).expect("open dir");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod 777");
    let owned = host.0.join("owned");
    fs::write(&owned, "host").expect("owned file");
    fs::set_permissions(&owned, fs::Permissions::from_mode(0o644)).expect("chmod 644");
    let tag = random_suffix();
    let dirs = [
        PathBuf::from("/"),
        "/etc".into(),
        "/usr".into(),
        "/var/tmp".into(),
        open.clone(),
    ];
    let probes = Probes(
        dirs.iter()
            .flat_map(|d| {
                [
                    d.join(format!("hb-probe-{tag}")),
                    d.join(format!("hb-probe-dir-{tag}")),
                    d.join(format!("hb-probe-after-{tag}")),
                ]
            })
            .collect(),
    );
    let list = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let owned_s = owned.display();
    let script = format!(
        r#"
for d in {list}; do
    echo x > "$d/hb-probe-{tag}" 2>/dev/null && echo "WROTE $d"
    mkdir "$d/hb-probe-dir-{tag}" 2>/dev/null && echo "MKDIR $d"
done
echo x >> {owned_s} 2>/dev/null && echo APPENDED
chmod 666 {owned_s} 2>/dev/null && echo CHMOD
mount -o remount,bind,rw / 2>/dev/null && echo REMOUNTED
for d in {list}; do
    echo x > "$d/hb-probe-after-{tag}" 2>/dev/null && echo "WROTE AFTER REMOUNT $d"
done
echo done
"#
    );
    for (user, options) in USERS {
        let out = sandbox(&env, options, &script);
        let text = said(&out);
        assert!(stdout(&out).ends_with("done\n"), "{user}: {text}");
        for p in &probes.0 {
            assert!(
                !p.exists(),
                "{user}: the sandbox created {} on the host: {text}",
                p.display()
            );
        }
        assert_eq!(
            fs::read_to_string(&owned).expect("owned"),
            "host",
            "{user}: the sandbox appended to a root-owned host file: {text}"
        );
        let mode = fs::metadata(&owned).expect("owned").mode() & 0o7777;
        assert_eq!(
            mode, 0o644,
            "{user}: the sandbox chmod-ed a host file: {text}"
        );
        assert!(
            !text.contains("REMOUNTED"),
            "{user}: the sandbox remounted /: {text}"
        );
    }
}

/// Writing `cgroup.procs` of the cgroup2 root, of a sibling of the sandbox's cgroup,
/// and of every cgroup v1 hierarchy's root (where a hybrid host keeps pids.max):
/// refused, and the shell is still in the cgroups it started in.
#[test]
fn the_cgroup_filesystem_is_read_only_and_the_sandbox_stays_in_its_cgroup() {
    let env = start("fs-cgroup");
    let mount = cgroup2_mount();
    let sibling = mount
        .join(&env.cgroup_root)
        .join(format!("sibling-{}", random_suffix()));
    fs::create_dir_all(&sibling).expect("sibling cgroup");
    let mut targets = vec![
        mount.join("cgroup.procs"),
        sibling.join("cgroup.procs"),
        mount.join(&env.cgroup_root).join("cgroup.procs"),
    ];
    for line in fs::read_to_string("/proc/mounts")
        .expect("/proc/mounts")
        .lines()
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(2) == Some(&"cgroup") {
            targets.push(Path::new(f[1]).join("cgroup.procs"));
            targets.push(Path::new(f[1]).join("tasks"));
        }
    }
    let list = targets
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let script = format!(
        r#"
before=$(cat /proc/self/cgroup | sort | tr '\n' ' ')
for f in {list}; do
    echo 0 > "$f" 2>/dev/null && echo "MOVED through $f"
done
after=$(cat /proc/self/cgroup | sort | tr '\n' ' ')
[ "$before" = "$after" ] && echo SAME || echo "NOW IN $after (was $before)"
"#
    );
    for (user, options) in USERS {
        let out = sandbox(&env, options, &script);
        let text = said(&out);
        assert!(
            !text.contains("MOVED") && stdout(&out).trim_end().ends_with("SAME"),
            "{user}: the sandbox left its cgroup: {text}"
        );
        let sibling_procs = fs::read_to_string(sibling.join("cgroup.procs")).expect("procs");
        assert_eq!(sibling_procs, "", "{user}: a process went into the sibling");
    }
}

/// The sandbox's init (pid 1) keeps descriptors opened in the host's mount namespace
/// (its cgroup directory, cgroup v1 files): through /proc/1/fd a command could follow
/// them into the host's writable cgroup tree and out of its cgroup. Following them,
/// writing `cgroup.procs` above them, reading pid 1's environment: all refused (a uid-0
/// command may still list their numbers: it owns the directory).
#[test]
fn the_inits_descriptors_lead_nowhere() {
    let env = start("fs-init-fds");
    let script = r#"
before=$(cat /proc/self/cgroup | sort | tr '\n' ' ')
for f in /proc/1/fd/*; do
    readlink "$f" >/dev/null 2>&1 && echo "FOLLOWED $f to $(readlink "$f")"
    for up in . .. ../.. ../../.. ../../../..; do
        echo 0 > "$f/$up/cgroup.procs" 2>/dev/null && echo "MOVED through $f/$up"
    done
done
cat /proc/1/environ >/dev/null 2>&1 && echo "READ pid 1's environment"
after=$(cat /proc/self/cgroup | sort | tr '\n' ' ')
[ "$before" = "$after" ] && echo SAME || echo "NOW IN $after (was $before)"
"#;
    for (user, options) in USERS {
        let out = sandbox(&env, options, script);
        let text = said(&out);
        assert_eq!(stdout(&out), "SAME\n", "{user}: {text}");
    }
}

/// The agent's state folder (vault.db holding a credential, the config), its master key
/// and its bpffs pins, in a state folder outside /tmp as on a node: nothing of them can
/// be read or listed, by uid 0 either (who owns those root-owned 0600 files). The broker
/// socket, which lives in that folder here, is still bound in and answers.
#[test]
fn the_agents_state_master_key_and_pins_are_hidden() {
    let config = format!(
        "{CONFIG}\n[[integration]]\nname = \"github\"\nauth = \"bearer\"\nhosts = [\"api.github.com\"]\n"
    );
    let env = start_in(Path::new("/var/tmp"), "fs-secrets", &config);
    let state = &env.state_dir;
    let key = state.join("master.key");
    // 32 random bytes, root's, 0600, as on a node.
    let mut bytes = Vec::new();
    while bytes.len() < 32 {
        bytes.extend(
            random_suffix().as_bytes().chunks(2).map(|h| {
                u8::from_str_radix(std::str::from_utf8(h).expect("hex"), 16).expect("hex")
            }),
        );
    }
    bytes.truncate(32);
    fs::write(&key, &bytes).expect("master key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod key");
    let token = format!("ghp_{}{}", random_suffix(), random_suffix());
    env.vault_put("github", "bot", &token);
    let secrets = [key.clone(), state.join("vault.db"), env.config_path.clone()];
    for s in &secrets {
        assert!(s.exists(), "{} exists on the host", s.display());
    }
    let key_hex: String = fs::read(&key)
        .expect("master key")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let pins = &env.bpffs_dir;
    assert!(
        fs::read_dir(pins).expect("pins").next().is_some(),
        "the agent pinned its maps"
    );
    let list = secrets
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let socket = env.broker_socket();
    let (state_s, pins_s, socket_s) = (state.display(), pins.display(), socket.display());
    let script = format!(
        r#"
for f in {list}; do
    od -An -tx1 "$f" 2>/dev/null | tr -d ' \n' | grep -q . && echo "READ $f: $(od -An -tx1 "$f" | tr -d ' \n')"
done
echo "state: $(ls -A {state_s} 2>&1 | tr '\n' ' ')"
echo "pins: $(ls -A {pins_s} 2>&1 | tr '\n' ' ')"
echo "broker: $(curl -s -o /dev/null -w '%{{http_code}}' --unix-socket {socket_s} http://hb/v1/nothing)"
"#
    );
    for (user, options) in USERS {
        let out = sandbox(&env, options, &script);
        let text = said(&out);
        assert!(
            !text.contains("READ") && !text.contains(&key_hex) && !text.contains(&token),
            "{user}: the sandbox read the agent's secrets: {text}"
        );
        assert!(
            text.contains("state: broker.sock \n"),
            "{user}: the state folder shows more than the broker socket: {text}"
        );
        assert!(
            text.contains("pins: \n"),
            "{user}: the pins are visible: {text}"
        );
        assert!(
            !text.contains("broker: 000"),
            "{user}: the broker is not reachable: {text}"
        );
    }
}

/// A host process (and the agent) by pid, by `ps`, by `/proc/PID/root`: not there. The
/// sandbox's /proc lists its own processes only.
#[test]
fn host_processes_are_not_visible_in_proc() {
    let mut env = start("fs-proc");
    let sleeper = Killed(
        Command::new("sleep")
            .arg("300")
            .stdout(Stdio::null())
            .spawn()
            .expect("sleep"),
    );
    let host_pid = sleeper.0.id();
    let agent_pid = env.agent().pid();
    assert!(host_pid > 10 && agent_pid > 10, "host pids are not tiny");
    let script = format!(
        r#"
n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo "pids $n"
for p in {host_pid} {agent_pid}; do
    [ -e /proc/$p ] && echo "SEEN $p $(cat /proc/$p/comm 2>/dev/null)"
    ls /proc/$p/root/ >/dev/null 2>&1 && echo "ROOT OF $p"
done
ps -e -o comm= | grep -qx sleep && echo "SEEN sleep"
echo done
"#
    );
    for (user, options) in USERS {
        let out = sandbox(&env, options, &script);
        let text = said(&out);
        assert!(
            !text.contains("SEEN") && !text.contains("ROOT OF"),
            "{user}: a host process is visible: {text}"
        );
        // The init (pid 1) and the shell (pid 2): nothing else lives in the namespace.
        assert!(
            text.starts_with("pids 2\n") && stdout(&out).ends_with("done\n"),
            "{user}: {text}"
        );
    }
}

/// No block device in the sandbox's /dev, the host's disk cannot be opened by its
/// name, and the same device node planted (mode 0666) in a host folder the sandbox sees
/// cannot be opened either (the root is mounted nodev).
#[test]
fn no_block_device_can_be_opened() {
    let env = start("fs-dev");
    let (name, rdev) = fs::read_dir("/dev")
        .expect("/dev")
        .flatten()
        .find_map(|e| {
            let m = e.metadata().ok()?;
            m.file_type()
                .is_block_device()
                .then(|| (e.file_name().to_string_lossy().into_owned(), m.rdev()))
        })
        .expect("a block device on the host");
    let host = Scratch::new("/var/tmp", "fs-dev-host");
    let planted = host.0.join("blk");
    let c = std::ffi::CString::new(planted.as_os_str().as_bytes()).expect("path");
    // SAFETY: mknod(2) with a NUL-terminated path.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o666, rdev) };
    assert_eq!(rc, 0, "mknod: {}", std::io::Error::last_os_error());
    fs::set_permissions(&planted, fs::Permissions::from_mode(0o666)).expect("chmod node");
    let planted_s = planted.display();
    let script = format!(
        r#"
for f in /dev/* /dev/*/*; do [ -b "$f" ] && echo "BLOCK $f"; done
[ "$(head -c 512 /dev/{name} 2>/dev/null | wc -c)" -gt 0 ] && echo "OPENED /dev/{name}"
[ "$(head -c 512 {planted_s} 2>/dev/null | wc -c)" -gt 0 ] && echo "OPENED {planted_s}"
echo done
"#
    );
    for (user, options) in USERS {
        let out = sandbox(&env, options, &script);
        let text = said(&out);
        assert!(
            !text.contains("BLOCK") && !text.contains("OPENED"),
            "{user}: a block device is reachable: {text}"
        );
        assert!(stdout(&out).ends_with("done\n"), "{user}: {text}");
    }
}

/// A host daemon's Unix socket (mode 0777) under /run and under /tmp: the sandbox
/// cannot connect to either. The listeners count what arrived: nothing.
#[test]
fn host_unix_sockets_under_run_and_tmp_are_unreachable() {
    let env = start("fs-sock");
    let run = Scratch::new("/run", "fs-sock-run");
    let tmp = Scratch::new("/tmp", "fs-sock-tmp");
    let daemons = hb_tests::UnixDaemons::bind(&[
        (run.0.join("daemon.sock"), 0o777),
        (tmp.0.join("daemon.sock"), 0o777),
    ]);
    let script = daemons.connect_script();
    for (user, options) in USERS {
        let out = sandbox(&env, options, &script);
        let text = said(&out);
        assert!(stdout(&out).ends_with("done\n"), "{user}: {text}");
        let reached = daemons.reached();
        assert!(
            reached.is_empty(),
            "{user}: connection(s) reached {reached:?}: {text}"
        );
        assert!(!text.contains("CONNECTED"), "{user}: {text}");
    }
}

/// Host pids of the processes in the test's sandboxes (read from their cgroups), once
/// at least one is there.
fn sandbox_pids(env: &TestEnv) -> Vec<String> {
    let dir = cgroup2_mount().join(&env.cgroup_root).join("sandboxes");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<String> = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| fs::read_to_string(e.path().join("cgroup.procs")).ok())
            .flat_map(|s| s.lines().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        if !pids.is_empty() || Instant::now() > deadline {
            return pids;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Tenant B keeps a secret in its work dir and stays running. Tenant A — as the default
/// user and, as tenant A0, as `--user 0` — tries B's folder by its host path, by `..`
/// from its own, by a symlink it plants in its work dir (absolute and relative), by
/// `/proc/*/root` of what it can see and by B's host pids: nothing. B's folder is as B
/// left it.
#[test]
fn tenant_a_cannot_see_or_reach_tenant_b() {
    let env = start_in(Path::new("/var/tmp"), "fs-tenants", CONFIG);
    let tenants = env.state_dir.join("tenants");
    let b_work = tenants.join("b/work");
    let out = sandbox(
        &env,
        &["--tenant", "b"],
        "echo B-SECRET > /work/secret && echo ok",
    );
    assert_eq!(stdout(&out), "ok\n", "tenant b: {}", said(&out));
    assert_eq!(
        fs::read_to_string(b_work.join("secret")).expect("b's secret on the host"),
        "B-SECRET\n"
    );
    let _b_running = Killed(
        Command::new(agent_bin())
            .arg("--config")
            .arg(&env.config_path)
            .args(["sandbox", "run", "--policy", "open", "--tenant", "b", "--"])
            .args(["sleep", "300"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tenant b's long run"),
    );
    let b_pids = sandbox_pids(&env);
    assert!(!b_pids.is_empty(), "tenant b's sandbox is running");
    let (tenants_s, b_work_s) = (tenants.display(), b_work.display());
    let b_pids = b_pids.join(" ");
    let script = format!(
        r#"
cd /work || echo "NO WORK DIR"
ln -s {b_work_s} /work/link-b; cat /work/link-b/secret 2>/dev/null && echo "READ via symlink"
ln -s ../b/work /work/rel-b; cat /work/rel-b/secret 2>/dev/null && echo "READ via relative symlink"
ln -s ../../../../../../../../.. /work/up; cat /work/up{b_work_s}/secret 2>/dev/null && echo "READ via up-link"
cat {b_work_s}/secret 2>/dev/null && echo "READ by path"
cat /work/../b/work/secret /work/../../b/work/secret 2>/dev/null && echo "READ via .."
cat ../b/work/secret 2>/dev/null && echo "READ via relative .."
ls -A {tenants_s} 2>/dev/null | grep . && echo "LISTED the tenants"
for p in /proc/[0-9]*; do
    cat $p/root{b_work_s}/secret $p/root/work/secret $p/cwd/secret 2>/dev/null && echo "READ via $p"
done
for p in {b_pids}; do
    cat /proc/$p/root/work/secret /proc/$p/cwd/secret 2>/dev/null && echo "READ via host pid $p"
done
echo done
"#
    );
    for (user, options, tenant) in [
        ("default user", &[][..], "a"),
        ("--user 0", &["--user", "0"][..], "a0"),
    ] {
        let mut opts = options.to_vec();
        opts.extend_from_slice(&["--tenant", tenant]);
        let out = sandbox(&env, &opts, &script);
        let text = said(&out);
        assert!(
            !text.contains("READ")
                && !text.contains("LISTED")
                && !text.contains("B-SECRET")
                && !text.contains("NO WORK DIR"),
            "{user} (tenant {tenant}): reached tenant b: {text}"
        );
        assert!(stdout(&out).ends_with("done\n"), "{user}: {text}");
        // The links A planted stay in A's folder, which nothing outside follows.
        assert!(
            tenants
                .join(tenant)
                .join("work/link-b")
                .symlink_metadata()
                .is_ok()
        );
    }
    assert_eq!(
        fs::read_to_string(b_work.join("secret")).expect("b's secret"),
        "B-SECRET\n",
        "tenant b's folder is as b left it"
    );
    let names: Vec<String> = fs::read_dir(&b_work)
        .expect("b's folder")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["secret"], "nothing was added to tenant b's folder");
}

/// A tenant's file written in one run is there in the next, at the work mount, which
/// is the command's working directory; on the host it is the tenant's, in a 0700
/// folder of the sandbox's user (for `--user 0`, of the host id its user namespace's
/// root is: 65534, who owns nothing else).
#[test]
fn a_tenants_files_persist_across_its_runs() {
    let env = start("fs-persist");
    for (user, options, tenant, uid) in [
        ("default user", &[][..], "keeper", 1000),
        ("--user 0", &["--user", "0"][..], "root-keeper", 65534),
    ] {
        let mut opts = options.to_vec();
        opts.extend_from_slice(&["--tenant", tenant]);
        let first = sandbox(&env, &opts, "echo kept > file && echo ok");
        assert_eq!(stdout(&first), "ok\n", "{user}: {}", said(&first));
        let second = sandbox(&env, &opts, "pwd; cat /work/file");
        assert_eq!(
            stdout(&second),
            "/work\nkept\n",
            "{user}: {}",
            said(&second)
        );
        let work = env.state_dir.join("tenants").join(tenant).join("work");
        let m = fs::metadata(&work).expect("work dir");
        assert_eq!((m.uid(), m.mode() & 0o7777), (uid, 0o700), "{user}");
        assert_eq!(
            fs::read_to_string(work.join("file")).expect("file"),
            "kept\n"
        );
    }
}

/// A real DNS server for allowed.test, killed on drop.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start() -> Self {
        let child = Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--no-resolv",
                "--no-hosts",
                "--user=root",
                "--pid-file=",
                "--host-record=allowed.test,203.0.113.10",
            ])
            .arg(format!("--port={UPSTREAM_PORT}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (cargo xtask setup installs dnsmasq-base)");
        thread::sleep(Duration::from_millis(300));
        Self(child)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The confinement does not break normal tools: curl and python requests reach an
/// allowed name through hb's resolver, and ps, python's multiprocessing (/dev/shm) and
/// mktemp (/tmp) work — as the default user, as `--user 0` and in a tenant's sandbox.
#[test]
fn curl_and_python_still_work_in_the_confined_sandbox() {
    private_netns(&["203.0.113.10", "192.0.2.53"]);
    let _upstream = Dnsmasq::start();
    let mut env = TestEnv::new("fs-tools", CONFIG);
    env.start_agent();
    let web = TcpProbe::bind("203.0.113.10:0");
    let url = format!("http://allowed.test:{}/", web.addr.port());
    let py = python();
    let script = format!(
        r#"
echo "curl $(curl -sS -m 5 {url})"
echo "requests $({py} -c "import requests; print(requests.get('{url}', timeout=5).text)")"
echo "ps $(ps -o comm= -p 1)"
echo "shm $({py} -c "import multiprocessing as m; l = m.Lock(); l.acquire(); print('ok')")"
f=$(mktemp) && echo x > "$f" && echo "tmp ok"
"#
    );
    for (user, options) in [
        ("default user", &[][..]),
        ("--user 0", &["--user", "0"][..]),
        ("tenant", &["--tenant", "tools"][..]),
    ] {
        let out = env.sandbox_with_nameserver_as("open", options, &script);
        assert_eq!(
            stdout(&out),
            "curl hb-test\nrequests hb-test\nps hb-agent\nshm ok\ntmp ok\n",
            "{user}: {}",
            said(&out)
        );
    }
}

/// `--print-confinement` lists the mounts a run would make: the read-only root, the
/// fresh /proc, /tmp, /dev and /run, the hidden state folder's kin, the tenant's work
/// dir and a `--ro-bind`.
#[test]
fn print_confinement_lists_the_mounts() {
    let env = start("fs-print");
    let out = env.hb(&[
        "sandbox",
        "run",
        "--policy",
        "open",
        "--tenant",
        "shown",
        "--ro-bind",
        "/usr/share",
        "/mnt",
        "--print-confinement",
        "--json",
        "--",
        "true",
    ]);
    assert!(out.status.success(), "{}", said(&out));
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let mounts = c["mounts"].as_array().expect("mounts");
    let find = |path: &str| {
        mounts
            .iter()
            .find(|m| m["path"] == path)
            .unwrap_or_else(|| panic!("no mount {path}: {mounts:#?}"))
    };
    assert!(
        find("/")["options"]
            .as_str()
            .expect("options")
            .starts_with("ro,")
    );
    for fresh in ["/proc", "/tmp", "/dev", "/run"] {
        find(fresh);
    }
    let work = find("/work");
    assert!(
        work["what"].as_str().expect("what").contains(&format!(
            "{}",
            env.state_dir.join("tenants/shown/work").display()
        )),
        "{work}"
    );
    assert!(
        find("/mnt")["options"]
            .as_str()
            .expect("options")
            .starts_with("ro,")
    );
    assert!(
        !env.state_dir.join("tenants/shown").exists(),
        "--print-confinement made nothing"
    );
}
