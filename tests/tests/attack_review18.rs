//! An eighteenth attack review: the credential at rest and inside hb's own processes.
//! Each test performs one attack against the real `hb-agent` binary and asserts the
//! promise "no secret value is ever written to disk unencrypted" holds, so it fails
//! when the attack works. A test marked `#[ignore = "open: …"]` is a break found and
//! not yet fixed.
//!
//! Angle: whoever later reads the node's disk, crash dumps or backups. A process that
//! dies by a signal whose default action dumps core (SIGABRT, SIGQUIT, SIGSEGV, SIGBUS…)
//! leaves its whole memory in a file when its core limit allows it (`LimitCORE=` of a
//! unit, `ulimit -c` of a shell, systemd-coredump's own default of unlimited) and the
//! node's `core_pattern` says where: the agent holds the master key and every unsealed
//! credential; `hb-agent vault put` holds the value it reads on stdin.
//!
//! Each test raises its own core limit (inherited by what it starts), starts the
//! process in its own state folder (a `core_pattern` of `core`, as on this machine,
//! writes the dump in the crashing process's working folder), kills it with SIGABRT and
//! searches every file then in that folder for the secret's bytes and the master key's.
//! Everything lives on `lo` in the test's own network namespace.

use std::{
    fs,
    io::Write as _,
    os::unix::{io::AsRawFd as _, process::ExitStatusExt as _},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use hb_tests::{TestEnv, agent_bin, private_netns, random_suffix};

/// Raises this process's core limit to its hard limit; what it starts inherits it.
fn allow_core_dumps() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer / valid rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_CORE, &raw mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_CORE, &raw const lim), 0);
    }
    assert!(lim.rlim_cur > 1 << 20, "core limit too low to test");
}

/// The node's `core_pattern`; the tests need it to write dumps in the working folder.
fn core_pattern_is_relative() -> bool {
    let p = fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    let p = p.trim();
    !p.is_empty() && !p.starts_with('|') && !p.starts_with('/')
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Every regular file directly in `dir` whose name starts with `core`: (name, bytes,
/// holds `secret`, holds `key`).
fn core_files(dir: &Path, secret: &[u8], key: &[u8]) -> Vec<(String, usize, bool, bool)> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).expect("read dir").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("core") || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let bytes = fs::read(e.path()).unwrap_or_default();
        found.push((
            name,
            bytes.len(),
            contains(&bytes, secret),
            contains(&bytes, key),
        ));
        // The dump holds secrets: gone as soon as it is judged.
        let _ = fs::remove_file(e.path());
    }
    found
}

fn figure(what: &str, dumped: bool, cores: &[(String, usize, bool, bool)]) {
    let files: Vec<String> = cores
        .iter()
        .map(|(n, len, s, k)| {
            format!("{n} ({len} bytes, secret plaintext: {s}, master key raw: {k})")
        })
        .collect();
    println!(
        "figure: {what}: killed by SIGABRT, core dumped: {dumped}, dump files in its working folder: [{}]",
        files.join(", ")
    );
}

/// The agent, with a credential in its vault and its core limit raised, is killed by
/// SIGABRT (as a bug's `abort()`, an operator's `kill -ABRT` or a watchdog would): no
/// core dump is written, so neither the master key nor the credential it unsealed
/// reaches the disk in the clear.
#[test]
fn a_crashed_agent_leaves_no_core_dump_with_the_master_key_or_a_credential() {
    private_netns(&[]);
    assert!(core_pattern_is_relative(), "needs core_pattern = core");
    allow_core_dumps();
    let config = r#"
[[integration]]
name = "github"
auth = "bearer"
hosts = ["api.github.com"]
"#;
    let mut env = TestEnv::new("a18-agent-core", config);
    let secret = format!("ghp_a18AgentCore{}{}", random_suffix(), random_suffix());
    env.init_vault(&[("github", "default", &secret)]);
    let key = fs::read(env.state_dir.join("master.key")).expect("master key");
    std::env::set_current_dir(&env.state_dir).expect("cd state dir");
    env.start_agent();
    let pid = env.agent().pid();
    // SAFETY: signalling the agent this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGABRT) }, 0);
    let status = env
        .wait_agent_exit(Duration::from_secs(20))
        .expect("agent ended");
    let cores = core_files(&env.state_dir, secret.as_bytes(), &key);
    figure("hb-agent run", status.core_dumped(), &cores);
    assert!(
        !status.core_dumped() && cores.is_empty(),
        "the agent left a core dump: {cores:?}"
    );
}

/// `hb-agent vault put` has read the value on its stdin (the operator has not closed it
/// yet) and is killed by SIGABRT: no core dump holds the value.
#[test]
fn a_crashed_vault_put_leaves_no_core_dump_with_the_value() {
    private_netns(&[]);
    assert!(core_pattern_is_relative(), "needs core_pattern = core");
    allow_core_dumps();
    let env = TestEnv::new(
        "a18-put-core",
        "[[integration]]\nname = \"github\"\nauth = \"bearer\"\nhosts = [\"api.github.com\"]\n",
    );
    env.init_vault(&[]);
    let key = fs::read(env.state_dir.join("master.key")).expect("master key");
    let secret = format!("ghp_a18PutCore{}{}", random_suffix(), random_suffix());
    let mut child = Command::new(agent_bin())
        .arg("--config")
        .arg(&env.config_path)
        .args([
            "vault",
            "put",
            "--integration",
            "github",
            "--account",
            "default",
        ])
        .current_dir(&env.state_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hb-agent vault put");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(secret.as_bytes()).expect("secret on stdin");
    stdin.flush().expect("flush");
    // Until the command has taken every byte from the pipe (it then waits for the end).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut unread: libc::c_int = 0;
        // SAFETY: FIONREAD on our own pipe end, valid out-pointer.
        let r = unsafe { libc::ioctl(stdin.as_raw_fd(), libc::FIONREAD, &raw mut unread) };
        assert_eq!(r, 0, "FIONREAD");
        if unread == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "vault put never read its stdin");
        thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGABRT) }, 0);
    let status = child.wait().expect("wait vault put");
    drop(stdin);
    let cores = core_files(&env.state_dir, secret.as_bytes(), &key);
    figure("hb-agent vault put", status.core_dumped(), &cores);
    assert_eq!(status.signal(), Some(libc::SIGABRT), "killed by the test");
    assert!(
        !status.core_dumped() && cores.is_empty(),
        "vault put left a core dump: {cores:?}"
    );
}

/// A config with one bearer integration `svc` for `api.test` whose rotation runs the
/// script `rotator` with /bin/sh, and `extra` lines in its `[integration.rotation]`.
fn exec_rotator_config(rotator: &Path, extra: &str) -> String {
    format!(
        r#"
[[integration]]
name = "svc"
auth = "bearer"
hosts = ["api.test"]
verify_url = "https://api.test/verify"

[integration.rotation]
exec = ["/bin/sh", "{rotator}"]
{extra}
"#,
        rotator = rotator.display()
    )
}

/// Every file below `dir` (recursively) that holds `needle`, by name.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() && contains(&fs::read(e.path()).unwrap_or_default(), needle) {
                found.push(
                    e.path()
                        .strip_prefix(dir)
                        .unwrap_or(&e.path())
                        .display()
                        .to_string(),
                );
            }
        }
    }
    found
}

/// A provider's exec rotator mints a key and says on stderr what it created, the key
/// included, then answers `create` in a way hb refuses: first with the key but an
/// expiry hb cannot read, then (a second rotation) with the key but exit status 1.
/// Each rotation fails (the key never becomes hb's), but the key is live at the
/// provider: the agent must not write it in its log (it cut a minted key from the
/// rotator's stderr only when the whole answer was accepted).
#[test]
fn a_key_minted_in_an_answer_hb_refuses_is_not_logged_from_the_rotators_stderr() {
    private_netns(&[]);
    let dir = std::env::temp_dir().join(format!("hb-test-a18-rotator-{}", random_suffix()));
    fs::create_dir_all(&dir).expect("rotator dir");
    let minted = dir.join("minted");
    let rotator = dir.join("rotator.sh");
    fs::write(
        &rotator,
        format!(
            r#"req=$(cat)
case "$req" in *'"op":"create"'*) ;; *) exit 0;; esac
key="prov_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s\n' "$key" >> {minted}
printf 'created %s for account bot\n' "$key" >&2
if [ "$(wc -l < {minted})" -eq 1 ]; then
    printf '{{"secret":"%s","expires":"next tuesday"}}' "$key"
else
    printf '{{"secret":"%s"}}' "$key"
    exit 1
fi
"#,
            minted = minted.display()
        ),
    )
    .expect("rotator");
    let config = exec_rotator_config(&rotator, "");
    let mut env = TestEnv::new("a18-rotator-stderr", &config);
    env.init_vault(&[("svc", "bot", "key-old-a18-0f1e2d3c4b5a69788796a5b4c3d2e1f0")]);
    env.start_agent();
    let mut rows = Vec::new();
    for _ in 0..2 {
        let begun = env.hb(&["rotation", "trigger", "-i", "svc", "-a", "bot", "--json"]);
        assert!(
            begun.status.success(),
            "{}",
            String::from_utf8_lossy(&begun.stderr)
        );
        let id = serde_json::from_slice::<serde_json::Value>(&begun.stdout).expect("JSON")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(10);
        rows.push(loop {
            let h = env.hb_json(&["rotation", "history"]);
            if let Some(r) = h
                .as_array()
                .and_then(|all| all.iter().find(|r| r["id"] == id.as_str()))
                && r["step"] == "failed"
            {
                break format!("{}", r["last_error"]);
            }
            assert!(Instant::now() < deadline, "rotation never failed: {h}");
            thread::sleep(Duration::from_millis(50));
        });
    }
    let keys = fs::read_to_string(&minted).expect("the rotator minted keys");
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 2, "one key minted per rotation");
    // Every line the agent wrote is flushed once it has stopped.
    env.stop_agent();
    let holding: Vec<Vec<String>> = keys
        .iter()
        .map(|k| files_holding(&env.state_dir, k.as_bytes()))
        .collect();
    println!(
        "figure: rotations failed as {rows:?}; each minted key found in plain text in state_dir files: {holding:?}"
    );
    let _ = fs::remove_dir_all(&dir);
    assert!(
        holding.iter().all(Vec::is_empty),
        "a minted key is in the clear in {holding:?}"
    );
}

/// The master key file belongs to another user (mode 0600 all the same: made by an
/// operator's own account and moved into place, or a Secret volume's `fsUser`). That
/// user can read the key, and with it every value sealed under it in any copy of the
/// vault (a backup, a disk image). hb refuses such a key as it refuses one group or
/// others may read, at `vault` commands and at the agent's start alike.
#[test]
fn a_master_key_file_another_user_owns_is_refused() {
    private_netns(&[]);
    let config =
        "[[integration]]\nname = \"github\"\nauth = \"bearer\"\nhosts = [\"api.github.com\"]\n";
    let env = TestEnv::new("a18-key-owner", config);
    let secret = format!("ghp_a18KeyOwner{}{}", random_suffix(), random_suffix());
    env.init_vault(&[("github", "default", &secret)]);
    let key = env.state_dir.join("master.key");
    std::os::unix::fs::chown(&key, Some(65534), Some(65534)).expect("chown key");
    // The other user reads it.
    let read = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .args(["head", "-c", "32"])
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .expect("setpriv");
    let readable = read.status.success() && read.stdout.len() == 32;
    let list = env.hb(&["vault", "list", "--json"]);
    let log_path = env.state_dir.join("agent-run.log");
    let log = fs::File::create(&log_path).expect("log");
    let mut run = Command::new(agent_bin())
        .args(["run", "--config"])
        .arg(&env.config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .spawn()
        .expect("hb-agent run");
    // A refused key ends the agent before it is ready; an accepted one lets it enforce.
    let deadline = Instant::now() + Duration::from_secs(20);
    let ran = loop {
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("ready: enforcing") {
            // SAFETY: signalling the agent this test started.
            unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
            let _ = run.wait();
            break true;
        }
        if run.try_wait().expect("wait run").is_some() {
            break false;
        }
        assert!(
            Instant::now() < deadline,
            "agent neither ready nor ended: {text}"
        );
        thread::sleep(Duration::from_millis(50));
    };
    let run_log = fs::read_to_string(&log_path).unwrap_or_default();
    println!(
        "figure: master key owned by uid 65534, readable by it: {readable}; vault list accepted it: {}; agent ran with it: {ran}",
        list.status.success()
    );
    assert!(readable, "the key's owner can read it");
    assert!(
        !list.status.success(),
        "vault list used a key another user owns"
    );
    assert!(
        String::from_utf8_lossy(&list.stderr).contains("owned by"),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(
        !ran && run_log.contains("owned by"),
        "the agent started with a key another user owns: {run_log}"
    );
}

/// An unprivileged user of the node (uid 65534, on the host, outside any sandbox) reads
/// what `/proc` shows of the running agent, which holds the master key and an unsealed
/// credential: its command line, environment, memory, open files and maps. The
/// credential is in none of what it gets; the environment, memory and descriptors are
/// refused to it.
#[test]
fn an_unprivileged_user_gets_no_secret_from_the_agents_proc_files() {
    private_netns(&[]);
    let config =
        "[[integration]]\nname = \"github\"\nauth = \"bearer\"\nhosts = [\"api.github.com\"]\n";
    let mut env = TestEnv::new("a18-proc", config);
    let secret = format!("ghp_a18Proc{}{}", random_suffix(), random_suffix());
    env.init_vault(&[("github", "default", &secret)]);
    env.start_agent();
    let pid = env.agent().pid();
    let script = format!(
        r#"T=$(mktemp -d)
for f in cmdline environ maps stat status; do
    if cat /proc/{pid}/$f > "$T/$f" 2>/dev/null; then echo "READ $f: $(tr '\0' ' ' < "$T/$f")"; else echo "DENIED $f"; fi
done
if head -c 1 /proc/{pid}/mem >/dev/null 2>&1 || [ -r /proc/{pid}/mem ]; then echo "READ mem"; else echo "DENIED mem"; fi
if ls /proc/{pid}/fd >/dev/null 2>&1; then echo "READ fd"; else echo "DENIED fd"; fi
rm -rf "$T"
"#
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("setpriv");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let read: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("READ "))
        .map(|l| l.split(':').next().unwrap_or(l))
        .collect();
    let leaked = contains(text.as_bytes(), secret.as_bytes());
    println!(
        "figure: uid 65534 read /proc/<agent>/ {read:?}; the credential in any of it: {leaked}"
    );
    assert!(!leaked, "a credential in the agent's /proc files");
    for refused in ["environ", "mem", "fd"] {
        assert!(
            text.contains(&format!("DENIED {refused}")),
            "uid 65534 read /proc/<agent>/{refused}: {text}"
        );
    }
}

/// An operator rotates a credential right after the agent started, before any sandbox
/// call; the provider's exec rotator says on stderr which key it replaces (the old one,
/// which hb sent it on stdin). The agent logs a rotator's stderr scrubbed of the values
/// it knows: the old key must be one of them by then.
#[test]
fn the_key_a_rotator_echoes_on_stderr_before_any_call_is_not_logged() {
    private_netns(&[]);
    let dir = std::env::temp_dir().join(format!("hb-test-a18-echo-{}", random_suffix()));
    fs::create_dir_all(&dir).expect("rotator dir");
    let rotator = dir.join("rotator.sh");
    fs::write(
        &rotator,
        r#"req=$(cat)
old=$(printf '%s' "$req" | sed -n 's/.*"secret":"\([^"]*\)".*/\1/p')
printf 'replacing %s\n' "$old" >&2
printf '{"secret":"prov_%s"}' "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
"#,
    )
    .expect("rotator");
    let config = exec_rotator_config(&rotator, "retry_base_secs = 60");
    let mut env = TestEnv::new("a18-rotator-echo", &config);
    let old = format!("key-old-a18Echo{}{}", random_suffix(), random_suffix());
    env.init_vault(&[("svc", "bot", &old)]);
    env.start_agent();
    let begun = env.hb(&["rotation", "trigger", "-i", "svc", "-a", "bot", "--json"]);
    assert!(
        begun.status.success(),
        "{}",
        String::from_utf8_lossy(&begun.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !env.agent().log_text().contains("rotator wrote to stderr") {
        assert!(
            Instant::now() < deadline,
            "the rotator's stderr never logged: {}",
            env.agent().log_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let log = env.agent().log_text();
    let line = log
        .lines()
        .find(|l| l.contains("rotator wrote to stderr"))
        .unwrap_or_default();
    // The rotator did echo a value (redacted or not): the attack took place.
    assert!(
        line.contains("replacing ") && !line.trim_end().ends_with("replacing"),
        "{line}"
    );
    env.stop_agent();
    let holding = files_holding(&env.state_dir, old.as_bytes());
    println!(
        "figure: the old key in plain text in state_dir files: {holding:?}; the rotator's line logged with a redaction marker: {}",
        line.contains("[REDACTED:")
    );
    let _ = fs::remove_dir_all(&dir);
    assert!(
        holding.is_empty(),
        "the old key is in the clear in {holding:?}"
    );
}

/// A provider's exec rotator is third-party code the agent runs as root with the old key
/// on its stdin. What it inherits besides its three pipes would be the agent's own: the
/// vault's database, the master key, the broker's listening socket, eBPF maps and
/// programs. It lists its open descriptors: none but its pipes (and the script the
/// shell reads) is open, besides what the agent itself inherited from this test.
#[test]
fn an_exec_rotator_inherits_no_descriptor_of_the_agent() {
    private_netns(&[]);
    let dir = std::env::temp_dir().join(format!("hb-test-a18-fds-{}", random_suffix()));
    fs::create_dir_all(&dir).expect("rotator dir");
    let rotator = dir.join("rotator.sh");
    let fds = dir.join("fds");
    fs::write(
        &rotator,
        format!(
            r#"(ls -l /proc/$$/fd/) > {fds}.tmp
mv {fds}.tmp {fds}
cat > /dev/null
exit 75
"#,
            fds = fds.display()
        ),
    )
    .expect("rotator");
    let config = exec_rotator_config(&rotator, "retry_base_secs = 60");
    let mut env = TestEnv::new("a18-rotator-fds", &config);
    env.init_vault(&[("svc", "bot", "key-old-a18-fds-0f1e2d3c4b5a69788796a5b4c3d2")]);
    env.start_agent();
    let begun = env.hb(&["rotation", "trigger", "-i", "svc", "-a", "bot", "--json"]);
    assert!(
        begun.status.success(),
        "{}",
        String::from_utf8_lossy(&begun.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !fds.exists() {
        assert!(Instant::now() < deadline, "the rotator never ran");
        thread::sleep(Duration::from_millis(50));
    }
    let listing = fs::read_to_string(&fds).expect("fds");
    let rotator_s = rotator.display().to_string();
    // What this test process holds open itself (a build tool's jobserver pipe…) the
    // agent got from it, not from its own work.
    let harness: Vec<String> = fs::read_dir("/proc/self/fd")
        .expect("own fds")
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .map(|t| t.display().to_string())
        .collect();
    let inherited: Vec<&str> = listing
        .lines()
        .filter_map(|l| {
            // `lr-x------ 1 root root 64 Dec  6 04:50 3 -> pipe:[123]`
            let (left, target) = l.split_once(" -> ")?;
            let fd = left.rsplit(' ').next()?;
            let std = matches!(fd, "0" | "1" | "2") && target.starts_with("pipe:");
            (!std && target != rotator_s && !harness.iter().any(|h| h == target)).then_some(l)
        })
        .collect();
    assert!(
        listing.contains(" 0 -> pipe:") && listing.contains(&format!(" -> {rotator_s}")),
        "the listing is the rotator's: {listing}"
    );
    println!("figure: the exec rotator's descriptors beyond its pipes and script: {inherited:?}");
    env.stop_agent();
    let _ = fs::remove_dir_all(&dir);
    assert!(inherited.is_empty(), "inherited: {inherited:?}\n{listing}");
}
