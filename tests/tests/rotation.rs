//! Rotation driven by the agent, against a fake provider: an exec rotator that mints
//! keys into a key store, and an HTTPS API that accepts exactly the keys the store
//! holds. `hb-agent rotation trigger --wait` gets a new key, tests it at `verify_url`,
//! switches to it (a sandbox's handle, issued before, carries it from its next call),
//! and at the end of the grace period the provider revokes the old key and the vault
//! erases it. A provider whose new key does not work leaves the old one active. No key
//! appears in any output, log or audit record. Everything lives on `lo` in the test's
//! own network namespace.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use hb_tests::{
    TestEnv,
    provider::{
        Provider, agent_env, assert_no_key_in, begin_rotation, store, svc_rotated, wait_for_step,
    },
    sandboxed::broker_client_script,
    upstream::{Dnsmasq, RecordingServer, header},
};
use serde_json::Value;

const DNS_PORT: u16 = 5402;
const OLD: &str = "key-old-0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const BAD_OLD: &str = "key-bad-old-00112233445566778899aabbccddeeff";

const CLIENT: &str = r#"
hb = Client(SOCK)
h = hb.handle("svc", "bot")["handle"]
b = hb.handle("bad", "bot")["handle"]
def call(handle, step, store=STORE):
    try:
        return hb.request("GET", "https://api.test/keys?file=" + store + "&step=" + step, handle=handle)["status"]
    except BrokerError as e:
        return e.code
out = {"before": call(h, "before")}
try:
    hb.call("POST", "/v1/rotations", {"integration": "svc", "account": "bot"})
    out["sandbox_trigger"] = "ok"
except BrokerError as e:
    out["sandbox_trigger"] = e.code
print("rotate", flush=True)
sys.stdin.readline()
out["after"] = call(h, "after")
out["bad_after"] = call(b, "bad_after", BAD_STORE)
print("retire", flush=True)
sys.stdin.readline()
out["retired"] = call(h, "retired")
print(json.dumps(out), flush=True)
"#;

/// One test's provider, API, resolver and agent config.
struct World {
    dir: std::path::PathBuf,
    api: RecordingServer,
    _dns: Dnsmasq,
    keys: std::path::PathBuf,
    bad_keys: std::path::PathBuf,
    env: TestEnv,
}

/// The fake provider and its API, an agent config rotating `svc` (grace `grace_secs`,
/// watch 1 s) and `bad` (whose new keys never work), and a vault holding both accounts'
/// first keys.
fn world(name: &str, grace_secs: u64, svc_expires: Option<&str>, admin: bool) -> World {
    let p = Provider::start(name, DNS_PORT, None);
    // The key store and the rotator live where the sandbox cannot write (it only reads
    // the store's path in its URLs).
    let keys = p.key_store("keys.json", &[OLD]);
    let bad_keys = p.key_store("bad-keys.json", &[BAD_OLD]);
    let rotator = p.exec_rotator();
    let python = hb_tests::python();
    let config = format!(
        r#"{head}{svc}
[[integration]]
name = "bad"
auth = "bearer"
hosts = ["api.test"]
verify_url = "https://api.test/keys?file={bad_keys}&step=bad_verify"
propagation_secs = 0

[integration.rotation]
exec = ["{python}", "{rotator}", "{bad_keys}", "--forget"]

[[policy]]
name = "web"
integrations = ["svc", "bad"]
"#,
        head = p.config_head(""),
        svc = svc_rotated(
            &keys,
            &format!("&hold={}", p.dir.join("hold").display()),
            &format!(
                "exec = [\"{python}\", \"{rotator}\", \"{keys}\"{admin}]\ngrace_secs = {grace_secs}",
                rotator = rotator.display(),
                keys = keys.display(),
                admin = if admin { ", \"--admin\"" } else { "" },
            ),
        ),
        bad_keys = bad_keys.display(),
        rotator = rotator.display(),
    );
    let env = agent_env(name, &config);
    match svc_expires {
        Some(when) => {
            env.vault_with_secret(&["put", "-i", "svc", "-a", "bot", "--expires", when], OLD)
        }
        None => env.vault_put("svc", "bot", OLD),
    }
    env.vault_put("bad", "bot", BAD_OLD);
    World {
        dir: p.dir,
        api: p.api,
        _dns: p.dns,
        keys,
        bad_keys,
        env,
    }
}

#[test]
fn the_agent_rotates_through_the_provider_and_handles_follow() {
    let World {
        dir,
        api,
        _dns,
        keys,
        bad_keys,
        mut env,
    } = world("rotation", 3, None, false);
    let python = hb_tests::python();
    env.start_agent();

    let prelude = hb_tests::py_client_prelude();
    let script = format!(
        "import sys, json\n{prelude}from hb_client import Client, BrokerError\nSOCK = {:?}\nSTORE = {:?}\nBAD_STORE = {:?}\n{CLIENT}",
        env.broker_socket().display().to_string(),
        keys.display().to_string(),
        bad_keys.display().to_string(),
    );
    let mut client = env.sandbox_piped("web", &[python, "-c", &script]);
    let mut to_client = client.stdin.take().expect("stdin");
    let mut from_client = BufReader::new(client.stdout.take().expect("stdout"));
    let mut next_line = || {
        let mut line = String::new();
        from_client.read_line(&mut line).expect("client output");
        line
    };
    let mut outputs = String::new();

    assert_eq!(next_line().trim(), "rotate");
    // A working provider: the new key is tested and active when --wait returns.
    let good = env.hb(&[
        "rotation", "trigger", "-i", "svc", "-a", "bot", "--wait", "--json",
    ]);
    outputs += &String::from_utf8_lossy(&good.stdout);
    outputs += &String::from_utf8_lossy(&good.stderr);
    assert!(good.status.success(), "trigger: {outputs}");
    let rotation: Value = serde_json::from_slice(&good.stdout).expect("rotation JSON");
    assert!(
        matches!(
            rotation["step"].as_str(),
            Some("finished" | "watched" | "retired")
        ),
        "{rotation}"
    );
    let live = store(&keys);
    assert_eq!(
        live.len(),
        2,
        "old and new both live during the grace: {live:?}"
    );
    let new = live.iter().find(|k| *k != OLD).expect("a new key").clone();
    // A provider whose new key does not work: the rotation fails, the old key stays.
    let bad = env.hb(&[
        "rotation", "trigger", "-i", "bad", "-a", "bot", "--wait", "--json",
    ]);
    outputs += &String::from_utf8_lossy(&bad.stdout);
    outputs += &String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{outputs}");
    let failed: Value = serde_json::from_slice(&bad.stdout).expect("rotation JSON");
    assert_eq!(failed["step"], "failed", "{failed}");
    assert_eq!(failed["last_error"], "verify_refused", "{failed}");
    writeln!(to_client, "go").expect("to client");

    assert_eq!(next_line().trim(), "retire");
    // At the grace end the provider revokes the old key and the vault erases it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let history = loop {
        let h = env.hb_json(&["rotation", "history"]);
        let svc = h
            .as_array()
            .expect("history")
            .iter()
            .find(|r| r["integration"] == "svc")
            .expect("svc rotation")
            .clone();
        if svc["step"] == "retired" {
            break h;
        }
        assert!(Instant::now() < deadline, "not retired: {h}");
        std::thread::sleep(Duration::from_millis(250));
    };
    outputs += &history.to_string();
    assert_eq!(
        store(&keys),
        [new.as_str()],
        "the provider revoked the old key"
    );
    let vault = env.hb_json(&["vault", "list"]);
    outputs += &vault.to_string();
    let status_of = |integration: &str, status: &str| {
        vault
            .as_array()
            .expect("list")
            .iter()
            .filter(|c| c["integration"] == integration && c["status"] == status)
            .count()
    };
    assert_eq!(status_of("svc", "active"), 1);
    assert_eq!(status_of("svc", "revoked"), 1, "{vault}");
    assert_eq!(
        status_of("bad", "active"),
        1,
        "the bad rotation kept the old key"
    );
    assert_eq!(
        status_of("bad", "revoked"),
        1,
        "its pending key revoked: {vault}"
    );
    writeln!(to_client, "go").expect("to client");
    let text = next_line();
    let out = client.wait_with_output().expect("client");
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_str(&text).expect("client JSON");
    assert_eq!(got["before"], 200, "{got}");
    assert_eq!(
        got["sandbox_trigger"], "forbidden",
        "a sandbox cannot start rotations: {got}"
    );
    assert_eq!(got["after"], 200, "{got}");
    assert_eq!(got["bad_after"], 200, "{got}");
    assert_eq!(
        got["retired"], 200,
        "the handle works on after the old key is gone: {got}"
    );

    // Upstream: the handle carried the old key before, the new one after; the verify
    // calls carried the key under test.
    let at_api = api.requests();
    let bearers = |step: &str| -> Vec<String> {
        at_api
            .iter()
            .filter(|r| {
                r["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(&format!("step={step}")))
            })
            .map(|r| {
                header(r, "authorization")
                    .unwrap_or("")
                    .trim_start_matches("Bearer ")
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(bearers("before"), [OLD]);
    assert_eq!(bearers("after"), [new.as_str()]);
    assert_eq!(bearers("retired"), [new.as_str()]);
    assert!(
        bearers("verify").iter().all(|k| *k == new),
        "{:?}",
        bearers("verify")
    );
    assert!(
        !bearers("verify").is_empty(),
        "the new key was tested before use"
    );
    assert_eq!(bearers("bad_after"), [BAD_OLD]);

    // No key in anything the agent or the CLI printed, logged or audited.
    let log = env.agent().log_text();
    let audit = fs::read_to_string(env.state_dir.join("audit.log")).unwrap_or_default();
    assert!(audit.contains("\"rotation\""), "rotation steps are audited");
    assert!(
        log.contains("rotator wrote to stderr") && log.contains("[REDACTED:new_secret]"),
        "the rotator's stderr is logged with the key it minted cut out"
    );
    assert_no_key_in(
        [OLD, BAD_OLD, new.as_str()],
        &[
            ("client", &text),
            ("cli", &outputs),
            ("log", &log),
            ("audit", &audit),
        ],
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Counts, every few ms, the `svc` account's ACTIVE rows in the vault file; prints the
/// counts that were not exactly one (with how often) when stdin closes.
const SAMPLER: &str = r#"
import sqlite3, sys, threading, time, json
db = sys.argv[1]
bad, samples, stop = {}, [0], threading.Event()
def watch():
    while not stop.is_set():
        try:
            c = sqlite3.connect("file:" + db + "?mode=ro", uri=True, timeout=10)
            n = c.execute("SELECT count(*) FROM credentials WHERE integration = 'svc' AND status = 'active'").fetchone()[0]
            c.close()
            samples[0] += 1
            if n != 1:
                bad[n] = bad.get(n, 0) + 1
        except sqlite3.OperationalError:
            pass
        time.sleep(0.003)
t = threading.Thread(target=watch)
t.start()
sys.stdin.read()
stop.set()
t.join()
print(json.dumps({"samples": samples[0], "bad": bad}))
"#;

#[test]
fn a_rotation_cut_short_by_kill_9_completes_after_restart_with_one_active_key_throughout() {
    let World {
        dir,
        api: _api,
        _dns,
        keys,
        bad_keys: _,
        mut env,
    } = world("rotkill", 1, None, false);
    let mut sampler = Command::new(hb_tests::python())
        .args(["-c", SAMPLER])
        .arg(env.state_dir.join("vault.db"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sampler");
    let mut orphans = 0;
    for point in [
        "rotation-after-begin",
        "rotation-during-create",
        "rotation-after-pending",
        "rotation-after-create",
        "rotation-after-test",
        "rotation-inside-finish",
        "rotation-after-finish",
        "rotation-inside-retire",
    ] {
        env.start_agent_with("info", &[("HB_VAULT_TEST_KILL_AT", point)]);
        // The agent dies inside the rotation's task, maybe before it answers.
        let _ = env.hb(&["rotation", "trigger", "-i", "svc", "-a", "bot"]);
        let status = env.wait_agent_exit(Duration::from_secs(30));
        assert!(
            status.is_some_and(
                |s| std::os::unix::process::ExitStatusExt::signal(&s) == Some(libc::SIGKILL)
            ),
            "{point}: the agent was not killed at its kill point: {status:?}"
        );
        let open = env.hb_json(&["rotation", "status"])["open"].clone();
        assert_eq!(
            open.as_array().map(Vec::len),
            Some(1),
            "{point}: one open rotation: {open}"
        );
        // Restarted, the agent resumes the rotation at its recorded step.
        env.start_agent();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let open = env.hb_json(&["rotation", "status"])["open"].clone();
            if open.as_array().is_some_and(Vec::is_empty) {
                break;
            }
            assert!(Instant::now() < deadline, "{point}: still open: {open}");
            std::thread::sleep(Duration::from_millis(200));
        }
        let history = env.hb_json(&["rotation", "history"]);
        let last = history
            .as_array()
            .and_then(|h| h.last())
            .expect("a rotation");
        assert_eq!(last["step"], "retired", "{point}: {last}");
        let vault = env.hb_json(&["vault", "list"]);
        let active: Vec<&Value> = vault
            .as_array()
            .expect("list")
            .iter()
            .filter(|c| c["integration"] == "svc" && c["status"] == "active")
            .collect();
        assert_eq!(active.len(), 1, "{point}: {vault}");
        assert_eq!(active[0]["id"], last["new_id"], "{point}");
        // The provider: the new key, plus at most one orphan minted before a crash cut
        // its recording short (the value never reached the vault).
        let live = store(&keys);
        orphans = live.len() - 1;
        assert!(orphans <= 1, "{point}: {live:?}");
        assert!(!live.iter().any(|k| k == OLD), "{point}: old key revoked");
        env.stop_agent();
        fs::write(
            &keys,
            serde_json::to_string(&live[live.len() - 1..]).expect("json"),
        )
        .expect("store");
        let audit = fs::read_to_string(env.state_dir.join("audit.log")).unwrap_or_default();
        let reported = audit.matches("possible_orphan_keys").count();
        // Killed after the rotator was counted but before its key was recorded: the
        // provider may hold an orphan (it does when the kill came after it answered),
        // and the rotation reports it once resumed. Reports accumulate in the audit log.
        let reported_before = ["rotation-during-create", "rotation-after-pending"]
            .iter()
            .position(|p| *p == point)
            .map_or(
                if point == "rotation-after-begin" {
                    0
                } else {
                    2
                },
                |i| i + 1,
            );
        assert_eq!(reported, reported_before, "{point}");
        let expected_orphans = usize::from(point == "rotation-after-pending");
        assert_eq!(orphans, expected_orphans, "{point}: {live:?}");
    }
    assert_eq!(orphans, 0, "later kill points leave no orphan");
    drop(sampler.stdin.take());
    let seen = sampler.wait_with_output().expect("sampler");
    let seen: Value = serde_json::from_slice(&seen.stdout).expect("sampler JSON");
    assert!(seen["samples"].as_u64().unwrap_or(0) > 50, "{seen}");
    assert_eq!(
        seen["bad"],
        serde_json::json!({}),
        "a reader saw zero or two active keys"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_credential_is_rotated_by_itself_at_two_thirds_of_its_lifetime_and_only_once() {
    let World {
        dir,
        api: _api,
        _dns,
        keys,
        bad_keys: _,
        mut env,
    } = world("rotexpiry", 1, Some("9s"), false);
    let stored = env.hb_json(&["vault", "list"]);
    let created = |id: &Value| {
        let c = stored
            .as_array()
            .and_then(|l| l.iter().find(|c| &c["id"] == id))
            .expect("credential");
        humantime::parse_rfc3339(c["created"].as_str().expect("created")).expect("time")
    };
    env.start_agent();
    let deadline = Instant::now() + Duration::from_secs(40);
    let rotation = loop {
        let history = env.hb_json(&["rotation", "history"]);
        if let Some(r) = history.as_array().and_then(|h| h.first())
            && r["step"] == "retired"
        {
            break r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no rotation by expiry: {history}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(rotation["trigger"], "expiry", "{rotation}");
    // Due between 5.4 s (the jitter) and 6 s after the 9-second key was stored, not before
    // (whole seconds in the vault).
    let started =
        humantime::parse_rfc3339(rotation["started"].as_str().expect("started")).expect("time");
    let age = started
        .duration_since(created(&rotation["old_id"]))
        .expect("started after it was stored");
    assert!(age >= Duration::from_secs(5), "rotated too early: {age:?}");
    assert_eq!(rotation["integration"], "svc");
    let live = store(&keys);
    assert_eq!(live.len(), 1, "{live:?}");
    assert_ne!(live[0], OLD, "the provider holds the new key only");
    // The new key has no expiry: no further rotation (and "bad", which never expires,
    // was left alone).
    std::thread::sleep(Duration::from_secs(3));
    let history = env.hb_json(&["rotation", "history"]);
    assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");
    let _ = fs::remove_dir_all(&dir);
}

const DEAD_KEY_CLIENT: &str = r#"
import threading
h = Client(SOCK).handle("svc", "bot")["handle"]
def call(step, results):
    try:
        r = Client(SOCK).request("GET", "https://api.test/keys?file=" + STORE + "&step=" + step, handle=h)
        results.append(r["status"])
    except BrokerError as e:
        results.append(e.code)
first = []
threads = [threading.Thread(target=call, args=("storm", first)) for _ in range(20)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(first), flush=True)
sys.stdin.readline()
after = []
call("after", after)
print(json.dumps(after), flush=True)
"#;

#[test]
fn a_key_revoked_at_the_provider_is_found_by_one_probe_and_rotated_once() {
    let World {
        dir,
        api,
        _dns,
        keys,
        bad_keys: _,
        mut env,
    } = world("rotdead", 1, None, true);
    env.start_agent();
    // The provider revoked the key out of band.
    fs::write(&keys, "[]").expect("store");
    let prelude = hb_tests::py_client_prelude();
    let script = format!(
        "import sys, json\n{prelude}from hb_client import Client, BrokerError\nSOCK = {:?}\nSTORE = {:?}\n{DEAD_KEY_CLIENT}",
        env.broker_socket().display().to_string(),
        keys.display().to_string(),
    );
    let mut client = env.sandbox_piped("web", &[hb_tests::python(), "-c", &script]);
    let mut to_client = client.stdin.take().expect("stdin");
    let mut from_client = BufReader::new(client.stdout.take().expect("stdout"));
    let mut line = String::new();
    from_client.read_line(&mut line).expect("client output");
    let storm: Vec<Value> = serde_json::from_str(&line).expect("statuses");
    assert_eq!(storm.len(), 20, "{line}");
    assert!(
        storm.iter().all(|s| s == 200),
        "the dead key's 401s are held until its replacement is active, then sent again: {line}"
    );

    let deadline = Instant::now() + Duration::from_secs(40);
    let rotation = loop {
        let history = env.hb_json(&["rotation", "history"]);
        if let Some(r) = history.as_array().and_then(|h| h.first())
            && matches!(r["step"].as_str(), Some("finished" | "watched" | "retired"))
        {
            break r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no rotation of the dead key: {history}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(rotation["trigger"], "auth_failure", "{rotation}");
    writeln!(to_client, "go").expect("to client");
    line.clear();
    from_client.read_line(&mut line).expect("client output");
    assert_eq!(line.trim(), "[200]", "the handle works with the new key");
    let out = client.wait_with_output().expect("client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Twenty 401s, one probe with the dead key, one rotation.
    let probes = api
        .requests()
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("step=verify"))
                && header(r, "authorization") == Some(format!("Bearer {OLD}").as_str())
        })
        .count();
    assert_eq!(probes, 1, "one probe for twenty 401s");
    let storm = api
        .requests()
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("step=storm"))
        })
        .count();
    assert_eq!(
        storm, 40,
        "each call sent twice: the dead key, then the new one"
    );
    let history = env.hb_json(&["rotation", "history"]);
    assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");
    let _ = fs::remove_dir_all(&dir);
}

/// A sandbox's one call with the `svc` handle to `url` (python, inside the sandbox): the
/// broker's answer as JSON, or the error code.
fn sandbox_call(env: &TestEnv, url: &str) -> std::process::Child {
    let script = broker_client_script(
        env,
        &format!(
            "h = hb.handle('svc', 'bot')['handle']\n\
             try:\n    print(json.dumps(hb.request('GET', {url:?}, handle=h)), flush=True)\n\
             except BrokerError as e:\n    print(json.dumps({{'error': e.code}}), flush=True)\n"
        ),
    );
    env.sandbox_piped("web", &[hb_tests::python(), "-c", &script])
}

/// What a [`sandbox_call`] printed once it ends: the broker's answer as JSON, or the
/// error code.
fn answer_of(client: std::process::Child) -> Value {
    let out = client.wait_with_output().expect("client");
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("client JSON")
}

/// Attack: the provider lists the account's keys (as Algolia's or Meilisearch's key
/// APIs do) while a rotation holds a new key PENDING. The sandbox's answer is scrubbed
/// of it as of the old key; an operator's abort revokes it at the provider.
#[test]
fn a_pending_key_the_provider_lists_never_reaches_the_sandbox_and_an_abort_revokes_it() {
    let World {
        dir,
        api: _api,
        _dns,
        keys,
        bad_keys: _,
        mut env,
    } = world("rotpending", 60, None, false);
    // The new key's test is answered 403 (a spent rate limit): the rotation stays open.
    fs::write(dir.join("hold"), "").expect("hold");
    env.start_agent();
    let id = begin_rotation(&env);
    wait_for_step(&env, &id, &["created"], 30);
    assert_eq!(store(&keys).len(), 2, "the provider holds the minted key");
    let url = format!(
        "https://api.test/keys?file={}&list=1&step=list",
        keys.display()
    );
    let out = sandbox_call(&env, &url).wait_with_output().expect("client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let answer: Value = serde_json::from_str(text.trim()).expect("client JSON");
    assert_eq!(answer["status"], 200, "{answer}");
    let body = answer["body"].as_str().expect("body");
    assert_eq!(
        body.matches("[REDACTED:live_secret]").count(),
        2,
        "the listing came back with both keys scrubbed: {body}"
    );
    assert!(
        !text.contains("key-new-"),
        "the pending key reached the sandbox: {text}"
    );

    let aborted = env.hb(&["rotation", "abort", &id]);
    assert!(
        aborted.status.success(),
        "{}",
        String::from_utf8_lossy(&aborted.stderr)
    );
    assert_eq!(
        store(&keys),
        [OLD],
        "the aborted rotation's key was revoked at the provider"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Attack: a call whose first attempt (with the new key) is answered 401 only after the
/// old key's grace ended and the provider revoked it. The propagation retry must not
/// send the retired key (it reads the account again first).
#[test]
fn the_propagation_retry_never_sends_a_key_retired_while_the_call_was_out() {
    let World {
        dir,
        api,
        _dns,
        keys,
        bad_keys: _,
        mut env,
    } = world("rotstale", 2, None, false);
    env.start_agent();
    let rotated = env.hb(&[
        "rotation", "trigger", "-i", "svc", "-a", "bot", "--wait", "--json",
    ]);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let id = serde_json::from_slice::<Value>(&rotated.stdout).expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // Every key is refused at this URL, and the answer waits for the `release` file.
    let empty = dir.join("empty.json");
    fs::write(&empty, "[]").expect("empty store");
    let release = dir.join("release");
    let url = format!(
        "https://api.test/keys?file={}&wait={}&step=stale",
        empty.display(),
        release.display()
    );
    let client = sandbox_call(&env, &url);
    let stale = |api: &RecordingServer| -> Vec<String> {
        api.requests()
            .iter()
            .filter(|r| {
                r["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("step=stale"))
            })
            .map(|r| header(r, "authorization").unwrap_or("").to_owned())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while stale(&api).is_empty() {
        assert!(Instant::now() < deadline, "the call never reached the API");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The old key's grace ends and the provider revokes it while the call is out.
    wait_for_step(&env, &id, &["retired"], 60);
    assert_eq!(
        store(&keys).len(),
        1,
        "the old key is revoked at the provider"
    );
    fs::write(&release, "").expect("release");
    let answer = answer_of(client);
    assert_eq!(answer["status"], 401, "the 401 passes through: {answer}");
    let sent = stale(&api);
    assert!(
        !sent.iter().any(|b| b.ends_with(OLD)),
        "the retired key was sent after its revocation: {} attempts",
        sent.len()
    );
    assert_eq!(sent.len(), 1, "no retry with a retired key");
    let _ = fs::remove_dir_all(&dir);
}

/// Attack: a sandbox spends the key's rate limit at the provider (403s), then makes a
/// call that gets a 401. A 403 at the probe is no evidence of a dead key: no rotation.
/// And a 403 at the watch after an operator's rotation never rolls it back.
#[test]
fn a_spent_rate_limit_neither_rotates_a_healthy_key_nor_rolls_a_rotation_back() {
    let World {
        dir,
        api: _api,
        _dns,
        keys,
        bad_keys: _,
        mut env,
    } = world("rot403", 1, None, false);
    let hold = dir.join("hold");
    fs::write(&hold, "").expect("hold");
    env.start_agent();
    // The key's last 6 characters tell the fake API which key to refuse: shorter than a
    // run of it (8), which a caller may not send (`credential_fragment`).
    let url = format!(
        "https://api.test/auth?deny={}&step=deny",
        &OLD[OLD.len() - 6..]
    );
    let answer = answer_of(sandbox_call(&env, &url));
    assert_eq!(answer["status"], 401, "{answer}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !env.agent().log_text().contains("auth_failure probe") {
        assert!(Instant::now() < deadline, "no probe after a 401");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The probe's verdict is in; a rotation would have begun by now.
    std::thread::sleep(Duration::from_millis(500));
    let history = env.hb_json(&["rotation", "history"]);
    assert_eq!(
        history.as_array().map(Vec::len),
        Some(0),
        "a healthy key was rotated on a 403: {history}"
    );

    // An operator's rotation; the new key's rate limit is spent as soon as it is active:
    // the hold lets one call through (the rotation's test of the new key) and refuses
    // every later one (the watch's), whenever the watch comes.
    fs::write(&hold, "1").expect("hold after one call");
    let id = begin_rotation(&env);
    let done = wait_for_step(&env, &id, &["retired", "rolled_back"], 90);
    assert_eq!(
        done["step"], "retired",
        "a 403 rolled the rotation back: {done}"
    );
    let audit = fs::read_to_string(env.state_dir.join("audit.log")).unwrap_or_default();
    assert!(
        audit.contains("inconclusive"),
        "the watch saw the 403s and retired the old key anyway"
    );
    assert_eq!(
        store(&keys).len(),
        1,
        "the old key is revoked at the provider"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Operators overrule a rotation past its finish: a compromise trigger while the old
/// key waits out its grace supersedes that rotation at once (both earlier keys revoked
/// at the provider); a rollback by hand is kept (the old key is never revoked for it).
#[test]
fn operators_overrule_a_finished_rotation_by_compromise_or_by_a_rollback_by_hand() {
    let World {
        dir,
        api: _api,
        _dns,
        keys,
        bad_keys: _,
        mut env,
    } = world("rotoverrule", 4, None, false);
    env.start_agent();
    let trigger = |compromised: bool| -> Value {
        let mut args = vec![
            "rotation", "trigger", "-i", "svc", "-a", "bot", "--wait", "--json",
        ];
        if compromised {
            args.push("--compromised");
        }
        let out = env.hb(&args);
        assert!(
            out.status.success(),
            "trigger (compromised: {compromised}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("rotation JSON")
    };
    // A compromise while the first rotation's old key is in its grace period.
    let first = trigger(false);
    let first_id = first["id"].as_str().expect("id").to_owned();
    let first_key = store(&keys).into_iter().find(|k| k != OLD).expect("minted");
    // Erasing the old key by hand would keep it live at the provider for good: refused,
    // and the way out named.
    let old_id = first["old_id"].as_str().expect("old id");
    let by_hand = env.hb(&["vault", "revoke", "--id", old_id]);
    let said = String::from_utf8_lossy(&by_hand.stderr);
    assert!(!by_hand.status.success(), "a revoke by hand went through");
    assert!(
        said.contains(&first_id) && said.contains("--compromised"),
        "{said}"
    );
    let second = trigger(true);
    let second_id = second["id"].as_str().expect("id").to_owned();
    let done = wait_for_step(&env, &first_id, &["retired"], 30);
    assert_eq!(done["step"], "retired", "{done}");
    wait_for_step(&env, &second_id, &["retired"], 30);
    let live = store(&keys);
    assert_eq!(live.len(), 1, "only the newest key is live at the provider");
    assert!(!live.contains(&OLD.to_owned()) && !live.contains(&first_key));

    // A rollback by hand before the old key's grace ends.
    let current = live[0].clone();
    let third = trigger(false);
    let third_id = third["id"].as_str().expect("id").to_owned();
    let new_id = third["new_id"].as_str().expect("new id").to_owned();
    let back = env.hb(&["vault", "rollback", "--id", &new_id]);
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
    let closed = wait_for_step(&env, &third_id, &["rolled_back", "retired"], 60);
    assert_eq!(closed["step"], "rolled_back", "{closed}");
    assert!(
        store(&keys).contains(&current),
        "the key rolled back to is still live at the provider"
    );
    let vault = env.hb_json(&["vault", "list"]);
    let active = vault
        .as_array()
        .expect("list")
        .iter()
        .filter(|c| c["integration"] == "svc" && c["status"] == "active")
        .count();
    assert_eq!(active, 1, "{vault}");
    let _ = fs::remove_dir_all(&dir);
}
