//! Attacks on the sandbox's cell found by an adversarial review after the cell was built,
//! each performed from inside a sandbox with the far side checked on the host. Each test
//! failed when it was written (the attack succeeded) and passes with its fix; each doc
//! comment says how the attack goes and what closed it.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Output,
};

use hb_tests::{TestEnv, private_netns, python, random_suffix, stdout};

const CONFIG: &str = r#"
[broker]
socket_mode = "0666"

[[policy]]
name = "open"
"#;

/// The two users every attack runs as: the default one (1000:1000) and root.
const USERS: [(&str, &[&str]); 2] = [("default user", &[]), ("--user 0", &["--user", "0"])];

fn start(name: &str) -> TestEnv {
    private_netns(&[]);
    // The state folder in /var/tmp: visible (read-only) inside, like a node's /var/lib/hb.
    let mut env = TestEnv::new_in(Path::new("/var/tmp"), name, CONFIG);
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

fn said(out: &Output) -> String {
    format!(
        "{}[exit {:?}; stderr: {}]",
        stdout(out),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// **The host's cgroup v1 trees show a sandbox every other sandbox.** On a hybrid host
/// (controllers in v1 hierarchies, as here: `/sys/fs/cgroup/{memory,pids,cpu,…}`) the
/// sandbox gets a fresh cgroup2 rooted at its own cgroup namespace, but the v1
/// hierarchies are the host's mounts, read-only and whole: every other sandbox's cgroup
/// by name (policy and launcher's host pid: `hb-sandboxes/POLICY-PID-…`), its memory
/// use and statistics (a side channel on what another tenant runs), every host
/// service's cgroup. Read-only keeps it from moving anything; it still tells a sandbox
/// who else runs on the node and under which policy.
///
/// Closed: every cgroup v1 mount point is covered by an empty read-only tmpfs in the
/// sandbox (its own v1 limits were joined before the mounts).
#[test]
fn the_hosts_cgroup_v1_trees_show_no_other_sandbox() {
    let env = start("atk-v1");
    let mut other = env.sandbox_spawn("open", &["sleep", "60"]);
    // The other sandbox's cgroup exists once `sandbox run` has made it.
    let mut leaf = None;
    for _ in 0..500 {
        let dir = env.cgroup_path().join("sandboxes");
        if let Some(e) = fs::read_dir(&dir)
            .ok()
            .and_then(|mut d| d.find_map(|e| e.ok().filter(|e| e.path().is_dir())))
        {
            leaf = Some(e.file_name().to_string_lossy().into_owned());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let leaf = leaf.expect("the other sandbox's cgroup");
    let script = "find /sys/fs/cgroup -type d 2>/dev/null; echo done";
    for (user, options) in USERS {
        let out = sandbox(&env, options, script);
        let text = stdout(&out);
        assert!(text.ends_with("done\n"), "{user}: {}", said(&out));
        let seen: Vec<&str> = text.lines().filter(|l| l.contains(&leaf)).collect();
        assert!(
            seen.is_empty(),
            "{user}: the sandbox sees the other sandbox's cgroup {leaf}: {seen:?}"
        );
    }
    let _ = other.kill();
    let _ = other.wait();
}

/// **A sandbox outlives its launcher.** The command runs in a new session (so a
/// process-group or session kill of the caller misses it) and in a cgroup of the
/// agent's tree (so stopping the caller's systemd unit, or a CI runner cancelling the
/// job, misses it too); when the launcher dies by SIGKILL the init is simply re-parented
/// and the command runs on: unsupervised (its refused system calls now fail with ENOSYS
/// and are no longer reported), its cgroup and v1 cgroups never removed, its network
/// access per its policy intact, for as long as it likes. A cancelled untrusted job keeps
/// running.
///
/// Closed: the init asks for `PR_SET_PDEATHSIG(SIGKILL)` right after its ids change
/// (which clears it), then checks the launcher's end of the report channel has not hung
/// up; pid 1 killed, the kernel kills the namespace.
#[test]
fn a_sandbox_dies_with_its_launcher() {
    let env = start("atk-orphan");
    let mut launcher = env.sandbox_spawn("open", &["sleep", "300"]);
    let sandboxes = env.cgroup_path().join("sandboxes");
    let procs = || -> Vec<String> {
        fs::read_dir(&sandboxes)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().is_dir())
                    .flat_map(|e| {
                        fs::read_to_string(e.path().join("cgroup.procs"))
                            .unwrap_or_default()
                            .lines()
                            .map(str::to_owned)
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    // The sandbox is running once its cgroup holds a process.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while procs().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sandbox did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    launcher.kill().expect("SIGKILL the launcher");
    launcher.wait().expect("reap the launcher");
    // Whatever the kernel does on the launcher's death has been done once it is reaped;
    // the namespace's processes then need a moment to exit.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut left = procs();
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        left = procs();
    }
    assert!(
        left.is_empty(),
        "the sandbox's processes {left:?} still run after its launcher was killed"
    );
}

/// **The caller's whole environment crosses into the sandbox.** Only descriptors 0–2
/// cross by design, but `sandbox run` hands the command every environment variable of
/// whoever launched it: an operator's or CI runner's `AWS_SECRET_ACCESS_KEY`,
/// `GITHUB_TOKEN`, `VAULT_TOKEN`, `SSH_AUTH_SOCK`, … — credentials the broker exists to
/// keep out of the sandbox, readable by the untrusted command and sent anywhere its
/// policy allows. Docker starts a container with the image's environment only.
///
/// Closed: the command gets PATH, TERM, LANG, TZ, LC_* and HOME (the work mount or /),
/// plus what `--env KEY[=VALUE]` names.
#[test]
fn the_callers_credentials_in_its_environment_stay_outside() {
    let env = start("atk-env");
    let secret = format!("AKIA{}", random_suffix());
    let out = std::process::Command::new(hb_tests::agent_bin())
        .arg("--config")
        .arg(&env.config_path)
        .args([
            "sandbox",
            "run",
            "--policy",
            "open",
            "--",
            "sh",
            "-c",
            "env; echo done",
        ])
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .env("GITHUB_TOKEN", &secret)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("sandbox run");
    let text = said(&out);
    assert!(stdout(&out).ends_with("done\n"), "{text}");
    let leaked: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&secret))
        .filter_map(|l| l.split('=').next())
        .collect();
    assert!(
        leaked.is_empty(),
        "the caller's credentials reached the sandbox's environment as {leaked:?}"
    );
}

/// **`open_tree_attr` (Linux 6.15, system call 467) goes past the mount rule.** The rule
/// filter refuses `open_tree`, `mount_setattr` and the other mount calls and reports each
/// as a `seccomp` event, but `open_tree_attr` — `open_tree` and `mount_setattr` in one
/// call — is not in the table (nor in the libc crate), so the filter lets it through;
/// with `OPEN_TREE_CLONE` only the kernel's own capability check (no `CAP_SYS_ADMIN`)
/// refuses it, silently. The filter is a denylist, so every call newer than its table
/// is in the same position (`file_setattr` 469, …). Low on its own, as capabilities
/// are gone; the promise "a refused mount call is an event" does not hold.
///
/// Closed: `open_tree_attr` is in the mount rule. Still open: the filter is a denylist,
/// so a call newer than its table is allowed until the table names it.
#[test]
fn open_tree_attr_is_refused_and_reported_like_open_tree() {
    let env = start("atk-ota");
    let py = python();
    let script = format!(
        r#"{py} -c 'import ctypes, os
l = ctypes.CDLL(None, use_errno=True)
l.syscall.restype = ctypes.c_long
# open_tree_attr(AT_FDCWD, "/", OPEN_TREE_CLONE | AT_RECURSIVE, NULL, 0)
r = l.syscall(467, -100, b"/", 0x1 | 0x8000, None, 0)
print("open_tree_attr", r, ctypes.get_errno())'"#
    );
    let out = sandbox(&env, &["--user", "0"], &script);
    let text = said(&out);
    assert!(stdout(&out).starts_with("open_tree_attr"), "{text}");
    // A refused call is an event named after it (the launcher writes it; give it 5 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let reported = loop {
        let events = env.hb(&["events", "--json"]);
        let found = String::from_utf8_lossy(&events.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|e| e["hook"] == "seccomp" && e["name"] == "open_tree_attr");
        if found || std::time::Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        reported,
        "open_tree_attr was not refused by the filter (no seccomp event): {text}"
    );
}

/// **A flood of one refused call hides the others' names.** Each sandbox's `seccomp`
/// events have a budget (64 per window); past it the launcher keeps only the *last*
/// held-back refusal and writes it at the end with the count of the others. So a
/// command refuses itself 64 cheap `ptrace` calls, then tries what it is really after
/// (`bpf`, `unshare`, `init_module`, `open_by_handle_at`…), then one more `ptrace`: the
/// audit trail says "ptrace, N suppressed" and never names the escape attempts.
///
/// Closed: held-back refusals are kept per system call name, and each name is written
/// once with its count when a record is next admitted and at the sandbox's end.
#[test]
fn a_flood_of_one_refusal_does_not_hide_another() {
    let env = start("atk-evflood");
    let py = python();
    let script = format!(
        r#"{py} -c 'import ctypes
l = ctypes.CDLL(None, use_errno=True)
l.syscall.restype = ctypes.c_long
for _ in range(100):
    l.syscall(101, 0, 0, 0, 0)  # ptrace(PTRACE_TRACEME)
l.syscall(321, 0, 0, 0)  # bpf(BPF_MAP_CREATE, NULL, 0)
l.syscall(101, 0, 0, 0, 0)
print("done")'"#
    );
    let out = sandbox(&env, &[], &script);
    assert_eq!(stdout(&out), "done\n", "{}", said(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let names = loop {
        let events = env.hb(&["events", "--json"]);
        let names: Vec<String> = String::from_utf8_lossy(&events.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["hook"] == "seccomp")
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect();
        if names.iter().any(|n| n == "bpf") || std::time::Instant::now() > deadline {
            break names;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut distinct = names.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        names.iter().any(|n| n == "bpf"),
        "the refused bpf() call is named in no event ({} seccomp events, names {distinct:?})",
        names.len()
    );
}

/// A host folder for one test (root's, `mode`), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(parent: &str, tag: &str, mode: u32) -> Self {
        let p = Path::new(parent).join(format!("hb-test-{tag}-{}", random_suffix()));
        fs::create_dir_all(&p).expect("scratch dir");
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod scratch");
        Self(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// **Host daemon sockets outside `/run` and `/tmp` are reachable.** The sandbox's root is
/// the host's, read-only — but a read-only mount does not stop `connect(2)` on a Unix
/// socket file (the kernel checks write permission on the socket inode, and `EROFS`
/// only for regular files, directories and links). Only `/run` and `/tmp` are fresh, so
/// every daemon whose socket lives elsewhere (`/var/lib/incus/unix.socket`,
/// `/var/snap/lxd/common/lxd/unix.socket`, a CI runner's socket in `/var/tmp` or `/srv`,
/// another agent's broker) is one `connect` away; a `--user 0` sandbox owns root's
/// 0600 sockets too, so it reaches root-only APIs (LXD/Incus: a host takeover).
///
/// Closed: every Unix socket bound by a path in the network namespace the sandbox
/// shares (`/proc/net/unix` at launch) is covered by a node that is no socket, but the
/// broker's. Still open: a socket bound after the sandbox started.
#[test]
fn host_daemon_sockets_outside_run_and_tmp_are_unreachable() {
    let env = start("atk-sock");
    let dirs = [
        Scratch::new("/var/tmp", "atk-sock-vartmp", 0o755),
        Scratch::new("/var/lib", "atk-sock-varlib", 0o755),
    ];
    // A root-only socket (0600) and one open to every uid (0666), in each folder.
    let sockets: Vec<(PathBuf, u32)> = dirs
        .iter()
        .flat_map(|d| {
            [
                (d.0.join("root-only.sock"), 0o600),
                (d.0.join("open.sock"), 0o666),
            ]
        })
        .collect();
    let daemons = hb_tests::UnixDaemons::bind(&sockets);
    let script = daemons.connect_script();
    for (user, options) in USERS {
        let out = sandbox(&env, options, &script);
        let text = said(&out);
        assert!(stdout(&out).ends_with("done\n"), "{user}: {text}");
        let reached = daemons.reached();
        assert!(
            reached.is_empty(),
            "{user}: the sandbox connected to host daemon sockets {reached:?}: {text}"
        );
    }
}

/// **A `--user 0` command owned root's host files.** The root is the host's, read-only,
/// with a denylist of paths hidden; uid 0 without any capability was still the *owner*
/// of every root-owned file, so it read root's 0600 keys that no list named (the review
/// read `/etc/ssl/private/ssl-cert-snakeoil.key`), held locks on root's 0640 lock files,
/// and connected to root's 0600 sockets. Here: a root-only key and a root-only lock file
/// in a folder of `/var/lib`, and the sandbox's view of its own ids.
///
/// Closed: a `--user 0` command is root of a user namespace of its own whose uid and gid 0
/// are the host's 65534, who owns nothing; root's files are other people's to it.
#[test]
fn a_root_sandbox_owns_none_of_roots_host_files() {
    let env = start("atk-rootown");
    let dir = Scratch::new("/var/lib", "atk-rootown", 0o755);
    let key = dir.0.join("service.key");
    let secret = format!("PRIVATE-{}", random_suffix());
    fs::write(&key, &secret).expect("key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod key");
    let lock = dir.0.join("lock-frontend");
    fs::write(&lock, "").expect("lock file");
    fs::set_permissions(&lock, fs::Permissions::from_mode(0o640)).expect("chmod lock");
    let py = python();
    let script = format!(
        r#"id -u; cat /proc/self/uid_map; cat {key} 2>/dev/null; echo
{py} -c 'import fcntl, sys
try:
    f = open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB); print("LOCKED")
except OSError as e:
    print("no lock", e.errno)' {lock}
echo done"#,
        key = key.display(),
        lock = lock.display()
    );
    let out = sandbox(&env, &["--user", "0"], &script);
    let text = stdout(&out);
    assert!(text.ends_with("done\n"), "{}", said(&out));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("0"), "uid 0 inside: {text}");
    let map: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        map,
        ["0", "65534", "1"],
        "uid 0 is the host's 65534: {text}"
    );
    assert!(
        !text.contains(&secret),
        "the sandbox read root's 0600 key: {text}"
    );
    assert!(
        !text.contains("LOCKED"),
        "the sandbox locked root's 0640 file: {text}"
    );
}
