//! The agent's life: fail-closed across kill -9 and restart, adoption of its own pins,
//! inspection that agrees with bpftool, enrollment by glob, and bad config that loads
//! nothing.

use std::{
    collections::BTreeSet,
    fs,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use hb_tests::{PY_PROBE, TcpProbe, TestEnv, private_netns, python, sandbox_probe};
use serde_json::Value;

const OPEN_POLICY: &str = r#"
[[policy]]
name = "open"
allow_cidrs = ["0.0.0.0/0", "::/0"]
"#;

/// Connects to `host:port` in a loop for `secs` seconds, printing `ok=N refused=M`.
const PY_LOOP: &str = r#"
import socket, sys, time
host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ok = refused = 0
end = time.time() + secs
while time.time() < end:
    s = socket.socket()
    try:
        s.connect((host, port)); ok += 1
    except PermissionError:
        refused += 1
    finally:
        s.close()
    time.sleep(0.002)
print(f"ok={ok} refused={refused}")
"#;

/// How many programs hb attaches (one link each), as `status` lists them.
fn program_count(env: &TestEnv) -> usize {
    env.hb_json(&["status"])["programs"]
        .as_array()
        .expect("programs")
        .len()
}

fn map_ids(env: &TestEnv) -> Vec<(String, u64)> {
    env.hb_json(&["maps", "list"])
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().expect("name").to_owned(),
                r["id"].as_u64().expect("id"),
            )
        })
        .collect()
}

fn prog_ids(env: &TestEnv) -> Vec<u64> {
    env.hb_json(&["status"])["programs"]
        .as_array()
        .expect("programs")
        .iter()
        .map(|p| p["prog_id"].as_u64().expect("prog id"))
        .collect()
}

/// How many programs bpftool sees attached to the test's cgroup, by attach type.
fn attached_by_type(env: &TestEnv) -> std::collections::BTreeMap<String, usize> {
    let out = Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(env.cgroup_path())
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool cgroup show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progs: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    let mut by = std::collections::BTreeMap::new();
    for p in progs.as_array().expect("array") {
        *by.entry(p["attach_type"].as_str().expect("attach_type").to_owned())
            .or_insert(0) += 1;
    }
    by
}

#[test]
fn kill_9_keeps_enforcement_and_a_restart_adopts_without_a_gap() {
    private_netns(&["10.0.0.1"]);
    let mut env = TestEnv::new("restart", OPEN_POLICY);
    env.start_agent();
    let probe = TcpProbe::bind("10.0.0.1:0");
    let port = probe.addr.port().to_string();
    let maps_before = map_ids(&env);
    let progs_before = prog_ids(&env);
    assert_eq!(
        attached_by_type(&env).values().sum::<usize>(),
        program_count(&env),
        "every program attached once"
    );

    env.kill_agent();
    let (code, status) = env.status(&[]);
    assert_eq!(code, 3, "no agent, programs enforcing: {status}");
    assert_eq!(status["agent_running"], false);
    assert_eq!(
        status["enforcing"], true,
        "pins survive the agent: {status}"
    );
    assert_eq!(
        sandbox_probe(&env, "open", "tcp", "10.0.0.1", probe.addr.port()),
        "EPERM"
    );

    // A sandbox hammers the private address while a new agent takes over.
    let hammer = env.sandbox_spawn("open", &[python(), "-c", PY_LOOP, "10.0.0.1", &port, "4"]);
    thread::sleep(Duration::from_millis(500));
    env.start_agent();
    let out = hammer.wait_with_output().expect("hammer");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "hammer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("ok=0 "),
        "a connection got through during the restart: {text}"
    );
    let refused: u64 = text
        .rsplit('=')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("count");
    assert!(refused > 50, "the hammer ran: {text}");
    assert_eq!(probe.accepted(), 0);

    // Adopted: the same maps, new programs, old links gone.
    assert_eq!(
        map_ids(&env),
        maps_before,
        "the restarted agent reuses the pinned maps"
    );
    let progs_after = prog_ids(&env);
    assert!(
        progs_before.iter().all(|p| !progs_after.contains(p)),
        "new programs replace old"
    );
    let state: Value =
        serde_json::from_slice(&fs::read(env.state_dir.join("agent.json")).expect("agent.json"))
            .expect("agent.json JSON");
    assert!(
        state["programs"]
            .as_array()
            .expect("programs")
            .iter()
            .all(|p| p["replaced"] == true)
    );
    let attached = attached_by_type(&env);
    assert_eq!(
        attached.values().sum::<usize>(),
        program_count(&env),
        "old links detached: {attached:?}"
    );
    assert_eq!(
        sandbox_probe(&env, "open", "tcp", "10.0.0.1", probe.addr.port()),
        "EPERM"
    );
}

/// An older agent kept the admitted peers in an LRU hash pinned as `HB_SOCK_DEST`; they
/// now live in socket storage (`HB_SOCK_PEER`). An agent that finds the old pin removes
/// it (the map's memory is otherwise held for as long as the pin stays) and pins the new
/// map, which bpftool sees as socket storage.
#[test]
fn an_older_agents_retired_map_pin_is_removed_at_load() {
    private_netns(&[]);
    let mut env = TestEnv::new("retired-pin", OPEN_POLICY);
    let old = env.map_pin("HB_SOCK_DEST");
    fs::create_dir_all(old.parent().expect("maps dir")).expect("maps dir");
    let out = Command::new("bpftool")
        .args(["map", "create"])
        .arg(&old)
        .args([
            "type", "lru_hash", "key", "8", "value", "24", "entries", "16",
        ])
        .args(["name", "HB_SOCK_DEST"])
        .output()
        .expect("bpftool");
    assert!(
        out.status.success() && old.exists(),
        "bpftool map create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.start_agent();
    assert!(
        !old.exists(),
        "the retired pin {} is still there",
        old.display()
    );
    let out = Command::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(env.map_pin("HB_SOCK_PEER"))
        .output()
        .expect("bpftool");
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bpftool map show ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(shown["type"], "sk_storage", "{shown}");
}

/// Parses `bpftool -j map dump` of an LPM trie of IPv4 keys into CIDR strings.
fn bpftool_entries(env: &TestEnv, map: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(env.map_pin(map))
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool map dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    let bytes = |v: &Value| -> Vec<u8> {
        v.as_array()
            .expect("hex byte array")
            .iter()
            .map(|b| {
                u8::from_str_radix(b.as_str().expect("hex").trim_start_matches("0x"), 16)
                    .expect("hex")
            })
            .collect()
    };
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|r| (bytes(&r["key"]), bytes(&r["value"])))
        .collect()
}

#[test]
fn bpftool_agrees_with_maps_dump() {
    private_netns(&[]);
    let mut env = TestEnv::new(
        "bpftool",
        r#"
[egress]
exception_cidrs = ["203.0.113.0/24"]

[[policy]]
name = "open"
allow_cidrs = ["0.0.0.0/0", "203.0.113.10/32"]
"#,
    );
    env.start_agent();
    let sleeper = env.sandbox_spawn("open", &["sleep", "5"]);

    // The compiled rule trie: (policy, CIDR, rule) as bpftool decodes the raw bytes,
    // against hb-agent's human dump.
    let policy_id = u64::from(env.policy_id("open"));
    let names = ["", "deny", "allow", "neutral"];
    let theirs: BTreeSet<(u64, String, String)> = bpftool_entries(&env, "HB_RULES4")
        .iter()
        .map(|(k, v)| {
            let len = u32::from_le_bytes(k[..4].try_into().expect("prefix")) - 32;
            let policy = u64::from(u32::from_be_bytes(k[4..8].try_into().expect("policy")));
            let rule = u32::from_le_bytes(v[..4].try_into().expect("value")) as usize;
            (
                policy,
                format!("{}.{}.{}.{}/{len}", k[8], k[9], k[10], k[11]),
                names[rule].to_owned(),
            )
        })
        .collect();
    let ours: BTreeSet<(u64, String, String)> = env
        .hb_json(&["maps", "dump", "rules4"])
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            assert_eq!(r["policy"], "open");
            (
                policy_id,
                r["cidr"].as_str().expect("cidr").to_owned(),
                r["rule"].as_str().expect("rule").to_owned(),
            )
        })
        .collect();
    let has =
        |cidr: &str, rule: &str| ours.contains(&(policy_id, cidr.to_owned(), rule.to_owned()));
    assert!(
        has("169.254.0.0/16", "deny") && has("10.0.0.0/8", "deny"),
        "{ours:?}"
    );
    assert!(
        has("203.0.113.0/24", "allow") && has("203.0.113.10/32", "allow"),
        "{ours:?}"
    );
    assert!(has("0.0.0.0/0", "allow"), "{ours:?}");
    assert_eq!(theirs, ours);

    // Enrolled: wait for the sandbox's cgroup, then compare ids and policy ids.
    let deadline = Instant::now() + Duration::from_secs(5);
    let ours = loop {
        let rows = env.hb_json(&["maps", "dump", "enrolled"]);
        if !rows.as_array().expect("rows").is_empty() || Instant::now() > deadline {
            break rows;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let ours: BTreeSet<(u64, u64)> = ours
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["cgroup_id"].as_u64().expect("id"),
                r["policy_id"].as_u64().expect("pid"),
            )
        })
        .collect();
    let theirs: BTreeSet<(u64, u64)> = bpftool_entries(&env, "HB_ENROLLED")
        .iter()
        .map(|(k, v)| {
            (
                u64::from_le_bytes(k[..8].try_into().expect("key")),
                u64::from(u32::from_le_bytes(v[..4].try_into().expect("value"))),
            )
        })
        .collect();
    assert_eq!(ours.len(), 1, "the running sandbox is enrolled");
    assert_eq!(theirs, ours);
    drop(sleeper);
}

#[test]
fn cgroups_matching_a_sandbox_glob_are_enrolled_as_they_appear() {
    private_netns(&["10.0.0.1"]);
    let mut env = TestEnv::new(
        "glob",
        r#"
[[policy]]
name = "open"
allow_cidrs = ["0.0.0.0/0"]

[[sandbox]]
cgroup = "{root}/agents/*"
policy = "open"
"#,
    );
    env.start_agent();
    let probe = TcpProbe::bind("10.0.0.1:0");
    let port = probe.addr.port().to_string();
    let agents = env.cgroup_path().join("agents");
    let matched = agents.join("a1");
    let unmatched = env.cgroup_path().join("other");
    fs::create_dir_all(&matched).expect("mkdir a1");
    fs::create_dir_all(&unmatched).expect("mkdir other");
    let rel = format!("{}/agents/a1", env.cgroup_root);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rows = env.hb_json(&["maps", "dump", "enrolled"]);
        if rows
            .as_array()
            .expect("rows")
            .iter()
            .any(|r| r["cgroup"] == rel && r["source"] == "glob")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{rel} not enrolled after 5 s: {rows}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let run_in = |cg: &std::path::Path| -> String {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec {} -c \"$0\" tcp 10.0.0.1 {port}",
            cg.display(),
            python()
        );
        let out = Command::new("sh")
            .args(["-c", &script, PY_PROBE])
            .output()
            .expect("sh");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(
        run_in(&matched),
        "EPERM",
        "a process in the glob-matched cgroup is enforced"
    );
    assert_eq!(
        run_in(&unmatched),
        "OK",
        "a cgroup no glob matches is untouched"
    );
    assert_eq!(probe.wait_accepted(1), 1);

    let status = env.hb_json(&["status"]);
    assert!(
        status["enrolled"]
            .as_array()
            .expect("enrolled")
            .iter()
            .any(|e| e["cgroup"] == rel),
        "status lists {rel}: {status}"
    );
}

fn assert_bad_config(name: &str, config: &str, needle: &str, key: &str) {
    let env = TestEnv::new(name, config);
    let text = fs::read_to_string(&env.config_path).expect("config");
    let line = text
        .lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .expect("needle in config");
    for args in [
        vec!["run"],
        vec!["config", "check", env.config_path.to_str().expect("utf-8")],
    ] {
        let out = env.hb(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted a bad config");
        assert!(
            stderr.contains(key),
            "{args:?}: error names {key}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("line {line}")),
            "{args:?}: error names line {line}: {stderr}"
        );
    }
    assert!(!env.bpffs_dir.exists(), "nothing was pinned");
    assert!(!env.cgroup_path().exists(), "no cgroup was created");
}

#[test]
fn bad_config_names_key_and_line_and_loads_nothing() {
    assert_bad_config(
        "unknown",
        "[egress]\nbogus_key = 1\n",
        "bogus_key",
        "bogus_key",
    );
    assert_bad_config(
        "badcidr",
        "[egress]\nexception_cidrs = [\"10.0.0.0/33\"]\n",
        "10.0.0.0/33",
        "10.0.0.0/33",
    );
    assert_bad_config(
        "nopolicy",
        "[[policy]]\nname = \"a\"\n\n[[sandbox]]\ncgroup = \"{root}/x/*\"\npolicy = \"missing\"\n",
        "\"missing\"",
        "sandbox[0].policy",
    );
    // A policy's name is a folder of broker.policy_sockets_dir.
    assert_bad_config(
        "dotdot",
        "[[policy]]\nname = \"..\"\nallow_domains = []\n",
        "\"..\"",
        "policy[0].name",
    );
}

#[test]
fn sandbox_run_refuses_to_start_when_nothing_enforces() {
    let env = TestEnv::new("noagent", OPEN_POLICY);
    // The command says so on stdout if it runs (a file it wrote would be in the
    // sandbox's own /tmp, out of the test's sight).
    let out = env.sandbox("open", &["echo", "ran"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "sandbox run without attached programs must fail"
    );
    assert!(stderr.contains("not attached"), "error says why: {stderr}");
    assert!(out.stdout.is_empty(), "the command must not have run");
}

/// Reads the sandboxed command's output up to its "ready" line.
fn wait_ready(stdout: &mut impl std::io::BufRead) {
    let mut line = String::new();
    while stdout.read_line(&mut line).expect("read") > 0 && line.trim() != "ready" {
        line.clear();
    }
}

#[test]
fn sandbox_run_passes_on_the_exit_status_and_removes_its_cgroup() {
    private_netns(&[]);
    let mut env = TestEnv::new("exitcode", OPEN_POLICY);
    env.start_agent();
    // The command waits for a signal from outside: its stdin closing (the harness gives
    // it none, so a fifo would do; a read on a pipe the test holds is simplest).
    let script = "echo ready; read _; exit 7";
    let mut child = std::process::Command::new(hb_tests::agent_bin())
        .arg("--config")
        .arg(&env.config_path)
        .args([
            "sandbox", "run", "--policy", "open", "--", "sh", "-c", script,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sandbox");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    wait_ready(&mut stdout);
    let rel = env.running_sandbox_cgroup("open");
    assert!(
        rel.starts_with(&format!("{}/sandboxes/open-", env.cgroup_root)),
        "ran in a sandbox cgroup: {rel}"
    );
    drop(child.stdin.take());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(7));
    assert!(
        !hb_tests::cgroup2_mount().join(&rel).exists(),
        "sandbox cgroup removed"
    );
    let unknown = env.sandbox("nope", &["true"]);
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        !unknown.status.success() && stderr.contains("\"nope\"") && stderr.contains("open"),
        "{stderr}"
    );
}

#[test]
fn sandboxed_commands_get_a_cgroup_namespace_no_new_privs_and_with_user_cannot_leave() {
    private_netns(&[]);
    let mut env = TestEnv::new("confine", OPEN_POLICY);
    env.start_agent();
    let root_procs = hb_tests::cgroup2_mount().join("cgroup.procs");
    // The escape works for root outside a sandbox (a throwaway shell moves itself to the
    // root cgroup), so a refusal below is the sandbox's doing.
    let outside = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("echo $$ > {} && echo moved", root_procs.display()),
        ])
        .output()
        .expect("sh");
    assert_eq!(
        String::from_utf8_lossy(&outside.stdout).trim(),
        "moved",
        "{}",
        String::from_utf8_lossy(&outside.stderr)
    );
    let script = format!(
        "id -u; id -G; grep '^0::' /proc/self/cgroup; grep NoNewPrivs /proc/self/status; \
         if echo $$ > {} 2>/dev/null; then echo moved; else echo refused; fi",
        root_procs.display()
    );
    let run = |user: Option<&str>| {
        let mut args = vec!["sandbox", "run", "--policy", "open"];
        if let Some(u) = user {
            args.extend(["--user", u]);
        }
        args.extend(["--", "sh", "-c", &script]);
        let out = env.hb(&args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // By default: uid and gid 1000 ([sandbox_defaults] user), no groups, its own cgroup
    // namespace, no_new_privs, and the move refused (root owns cgroup.procs).
    let (text, stderr) = run(None);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        ["1000", "1000", "0::/", "NoNewPrivs:\t1", "refused"],
        "the default user in the sandbox: {stderr}"
    );
    // As nobody: the same.
    let (text, stderr) = run(Some("65534"));
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        ["65534", "65534", "0::/", "NoNewPrivs:\t1", "refused"],
        "--user 65534 in the sandbox: {stderr}"
    );
    // As root (asked for): uid 0, and the move refused all the same, with or without the
    // mount's nsdelegate: the cgroup filesystem is read-only in the sandbox (and the
    // host's root cgroup is not even in it).
    let (text, stderr) = run(Some("0"));
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        ["0", "0", "0::/", "NoNewPrivs:\t1", "refused"],
        "--user 0 in the sandbox: {stderr}"
    );
    // Bad input is named and runs nothing (the command would say so on stdout).
    let bad = env.hb(&[
        "sandbox",
        "run",
        "--policy",
        "open",
        "--user",
        "no-such-user-hb",
        "--",
        "echo",
        "ran",
    ]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("no user \"no-such-user-hb\""),
        "{stderr}"
    );
    assert!(bad.stdout.is_empty(), "nothing ran");
}

/// The command must start as any program expects: nothing blocked, nothing ignored
/// that it did not ignore itself. Python installs no SIGTERM or SIGHUP handler, so the
/// forwarded SIGTERM ends it only if the launcher's own blocking of those signals (to
/// forward them) did not leak into it. (A shell with a `trap` would hide the leak:
/// dash clears its signal mask itself.)
const PY_SIGNALS: &str = r#"
import os, time
fields = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
print(os.getpid())
print(fields["SigBlk"].strip(), fields["SigIgn"].strip(), flush=True)
print("ready", flush=True)
time.sleep(1000)
"#;

#[test]
fn sigterm_to_the_launcher_reaches_the_command_and_the_cgroup_is_removed() {
    private_netns(&[]);
    let mut env = TestEnv::new("sigterm", OPEN_POLICY);
    env.start_agent();
    use std::io::BufRead as _;
    let mut child = env.sandbox_spawn("open", &[hb_tests::python(), "-c", PY_SIGNALS]);
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut pid = String::new();
    stdout.read_line(&mut pid).expect("pid");
    let mut masks = String::new();
    stdout.read_line(&mut masks).expect("signal masks");
    let mut ready = String::new();
    stdout.read_line(&mut ready).expect("ready");
    assert_eq!(
        pid.trim(),
        "2",
        "the command is pid 2 of its own pid namespace"
    );
    let rel = env.running_sandbox_cgroup("open");
    let (blocked, ignored) = masks.trim().split_once(' ').expect("two masks");
    let ignored = u64::from_str_radix(ignored, 16).expect("SigIgn");
    let killed_by = |sig: libc::c_int| 1u64 << (sig - 1);
    if u64::from_str_radix(blocked, 16) != Ok(0)
        || ignored & (killed_by(libc::SIGTERM) | killed_by(libc::SIGHUP)) != 0
    {
        // The command would outlive the launcher with SIGTERM blocked: kill the cgroup.
        let _ = std::fs::write(
            hb_tests::cgroup2_mount().join(&rel).join("cgroup.kill"),
            "1",
        );
        let _ = child.kill();
        panic!(
            "the command starts with signals blocked or ignored: SigBlk {blocked}, SigIgn {ignored:x}"
        );
    }
    // SAFETY: kill(2) on the launcher this test spawned.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = child.wait().expect("wait");
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGTERM),
        "the forwarded SIGTERM ended the command (default action), and the launcher says so: {status:?}"
    );
    assert!(
        !hb_tests::cgroup2_mount().join(&rel).exists(),
        "the launcher removed the sandbox cgroup after its command ended"
    );
}
