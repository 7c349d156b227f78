//! The `canary` and `reflection` detectors, end to end, against the fake provider of
//! `rotation.rs` (an exec rotator minting keys into a key store, an HTTPS API that
//! accepts exactly the keys the store holds, and an `/echo` route that reflects the
//! request's headers):
//! - a sandbox that lists its handles and tries one of the decoys its policy planted
//!   gets the answer of a dead handle, its real handle stops working, the account is
//!   rotated as compromised (the old key revoked at the provider and in the vault, not
//!   left deprecated), and another sandbox's handle for the same account carries the new
//!   key with no error;
//! - an upstream that echoes the injected key: the caller gets the scrubbed answer and
//!   the account is rotated as compromised; under `on_reflection = "alert"` only an
//!   event and an audit record follow.
//!
//! No key appears in any output, log, audit record or event. Everything lives on `lo`
//! in the test's own network namespace.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use hb_tests::{
    TestEnv,
    provider::{Provider, agent_env, assert_no_key_in, bearers, minted, store},
    upstream::{Dnsmasq, RecordingServer},
};
use serde_json::Value;

const DNS_PORT: u16 = 5403;
const OLD: &str = "key-old-7a6b5c4d3e2f10ffeeddccbbaa998877";
const MILD_OLD: &str = "key-mild-0123456789abcdef0123456789abcdef";

struct World {
    dir: PathBuf,
    api: RecordingServer,
    _dns: Dnsmasq,
    keys: PathBuf,
    env: TestEnv,
}

/// `svc` (defaults: canary and reflection rotate as compromised, grace 600 s) and
/// `mild` (`on_reflection = "alert"`), both rotating through the fake provider; policy
/// `web` binds both and plants `canaries` decoys per execution and account. A decoy's
/// user is not killed (`canary_kill = false`), so it can report what it was answered.
fn world(name: &str, canaries: u32) -> World {
    world_full(
        name,
        "canary_kill = false",
        "",
        &format!("canary_handles = {canaries}"),
        "on_reflection = \"alert\"",
    )
}

/// [`world`] with `policy_extra` in policy `web` and `mild_extra` in `mild`'s rotation.
fn world_with(name: &str, policy_extra: &str, mild_extra: &str) -> World {
    world_full(name, "", "", policy_extra, mild_extra)
}

/// [`world_with`], with `broker_extra` in `[broker]` and `svc_extra` in `svc`'s rotation.
fn world_full(
    name: &str,
    broker_extra: &str,
    svc_extra: &str,
    policy_extra: &str,
    mild_extra: &str,
) -> World {
    let p = Provider::start(name, DNS_PORT, None);
    let keys = p.key_store("keys.json", &[OLD]);
    let mild_keys = p.key_store("mild-keys.json", &[MILD_OLD]);
    let config = format!(
        r#"{head}{svc}{mild}
[[policy]]
name = "web"
integrations = ["svc", "mild"]
{policy_extra}
"#,
        head = p.config_head(broker_extra),
        svc = p.exec_rotated(
            "svc",
            &keys,
            "verify",
            &format!(
                "grace_secs = 600\nwatch_secs = 1\nretry_base_secs = 1\nretry_cap_secs = 2\n{svc_extra}\n"
            ),
        ),
        mild = p.exec_rotated("mild", &mild_keys, "mild_verify", &format!("{mild_extra}\n")),
    );
    let env = agent_env(name, &config);
    env.vault_put("svc", "bot", OLD);
    env.vault_put("mild", "bot", MILD_OLD);
    World {
        dir: p.dir,
        api: p.api,
        _dns: p.dns,
        keys,
        env,
    }
}

/// [`world_full`] for the `rate_spike` tests: `svc`'s sensor on one-second buckets, its
/// baseline learned for 3 s with a half-life of `halflife_secs`, a spike at 15 calls a
/// bucket over 2 buckets, a quarantine allowing 5 calls a minute, novelty learned for
/// 3 s; `policy_extra` in policy `web`.
fn spike_world(name: &str, halflife_secs: u32, policy_extra: &str) -> World {
    world_full(
        name,
        "",
        &format!(
            "sensor_bucket_secs = 1\nspike_learning_secs = 3\nspike_halflife_secs = {halflife_secs}\n\
             spike_min_count = 15\nspike_buckets = 2\nquarantine_calls_per_minute = 5\n\
             novelty_learning_secs = 3"
        ),
        policy_extra,
        "",
    )
}

/// Python for a sandbox: the client, the socket, the key store's path and `call`.
fn script(env: &TestEnv, keys: &Path, body: &str) -> String {
    let prelude = hb_tests::py_client_prelude();
    format!(
        r#"import sys, json
{prelude}from hb_client import Client, BrokerError
SOCK = {sock:?}
STORE = {store:?}
hb = Client(SOCK)
def call(handle, step, path="/keys"):
    try:
        return hb.request("GET", "https://api.test" + path + "?file=" + STORE + "&step=" + step, handle=handle)
    except BrokerError as e:
        return {{"error": e.code, "message": e.message}}
{body}"#,
        sock = env.broker_socket().display().to_string(),
        store = keys.display().to_string(),
    )
}

/// svc/bot's row of `hb-agent rotation status --json` (the whole output kept in
/// `outputs`).
fn svc_status(env: &TestEnv, outputs: &mut String) -> Value {
    let status = env.hb_json(&["rotation", "status"]);
    *outputs += &status.to_string();
    status["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .find(|a| a["integration"] == "svc" && a["account"] == "bot")
        .expect("svc/bot in status")
        .clone()
}

/// The account's rotations in `hb-agent rotation history`, once one is retired.
fn wait_retired(env: &TestEnv, integration: &str, outputs: &mut String) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let history = env.hb_json(&["rotation", "history"]);
        *outputs += &history.to_string();
        if let Some(r) = history
            .as_array()
            .expect("history")
            .iter()
            .find(|r| r["integration"] == integration && r["step"] == "retired")
        {
            return r.clone();
        }
        assert!(Instant::now() < deadline, "no retired rotation: {history}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

const BYSTANDER: &str = r#"
h = hb.handle("svc", "bot")["handle"]
out = {"before": call(h, "b_before").get("status")}
print("ready", flush=True)
sys.stdin.readline()
out["after"] = call(h, "b_after").get("status")
print(json.dumps(out), flush=True)
"#;

const THIEF: &str = r#"
h = hb.handle("svc", "bot", execution="exec-thief")["handle"]
out = {"before": call(h, "a_before").get("status")}
listed = hb.handles()
out["listed"] = [{"len": len(x["handle"]), "prefix": x["handle"][:8], "integration": x["integration"],
                  "account": x["account"], "execution": x["execution"], "real": x["handle"] == h}
                 for x in listed]
decoys = [x["handle"] for x in listed if x["handle"] != h]
out["decoy"] = call(decoys[0], "decoy")
out["made_up"] = call("hb_cred_" + "A" * 32, "made_up")
out["after"] = call(h, "a_after")
print(json.dumps(out), flush=True)
"#;

#[test]
fn a_used_canary_handle_ends_the_execution_and_rotates_its_account_as_compromised() {
    let World {
        dir,
        api,
        _dns,
        keys,
        mut env,
    } = world("canary", 2);
    env.start_agent();
    let python = hb_tests::python();
    let mut outputs = String::new();

    // Another sandbox holds a handle for the same account, and keeps it.
    let mut bystander = env.sandbox_piped("web", &[python, "-c", &script(&env, &keys, BYSTANDER)]);
    let mut to_bystander = bystander.stdin.take().expect("stdin");
    let mut from_bystander = BufReader::new(bystander.stdout.take().expect("stdout"));
    let mut line = String::new();
    from_bystander.read_line(&mut line).expect("bystander");
    assert_eq!(line.trim(), "ready");

    // The thief lists its handles and tries a decoy.
    let thief = env.sandbox("web", &[python, "-c", &script(&env, &keys, THIEF)]);
    let thief_text = String::from_utf8_lossy(&thief.stdout).into_owned();
    assert!(
        thief.status.success(),
        "thief: {}",
        String::from_utf8_lossy(&thief.stderr)
    );
    let got: Value = serde_json::from_str(thief_text.trim()).expect("thief JSON");
    assert_eq!(got["before"], 200, "{got}");
    let listed = got["listed"].as_array().expect("listed");
    assert_eq!(listed.len(), 3, "the real handle and two decoys: {got}");
    for l in listed {
        assert_eq!(l["len"], 40, "same length: {got}");
        assert_eq!(l["prefix"], "hb_cred_", "same prefix: {got}");
        assert_eq!(l["integration"], "svc");
        assert_eq!(l["account"], "bot");
        assert_eq!(l["execution"], "exec-thief");
    }
    assert_eq!(
        got["decoy"], got["made_up"],
        "a decoy is refused exactly as a made-up handle: {got}"
    );
    assert_eq!(got["decoy"]["error"], "unknown_handle", "{got}");
    assert_eq!(
        got["after"]["error"], "unknown_handle",
        "the thief's real handle is revoked: {got}"
    );

    // The account is rotated as compromised: the old key revoked at once.
    let rotation = wait_retired(&env, "svc", &mut outputs);
    assert_eq!(rotation["trigger"], "canary", "{rotation}");
    assert_eq!(rotation["compromised"], true, "{rotation}");
    let vault = env.hb_json(&["vault", "list"]);
    outputs += &vault.to_string();
    let old_row = vault
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["id"] == rotation["old_id"])
        .expect("old row");
    assert_eq!(old_row["status"], "revoked", "{vault}");
    let live = store(&keys);
    assert_eq!(live.len(), 1, "the provider revoked the old key: {live:?}");
    let new = live[0].clone();
    assert_ne!(new, OLD);

    // The other execution's handle carries the new key, with no error.
    writeln!(to_bystander, "go").expect("to bystander");
    line.clear();
    from_bystander.read_line(&mut line).expect("bystander");
    let bystander_text = line.clone();
    let b: Value = serde_json::from_str(line.trim()).expect("bystander JSON");
    assert_eq!(b["before"], 200, "{b}");
    assert_eq!(b["after"], 200, "{b}");
    let _ = bystander.wait();
    assert_eq!(bearers(&api, "b_before"), [OLD]);
    assert_eq!(bearers(&api, "b_after"), [new.as_str()]);
    assert!(bearers(&api, "decoy").is_empty(), "a decoy reaches nothing");
    assert!(
        bearers(&api, "a_after").is_empty(),
        "a revoked handle reaches nothing"
    );

    // Audit and event name the detector and the policy; no key anywhere.
    let audit = fs::read_to_string(env.state_dir.join("audit.log")).unwrap_or_default();
    let records: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let text = |v: &Value| v.to_string();
    assert!(
        records.iter().any(|r| {
            let t = text(r);
            t.contains("\"detector\":\"canary\"")
                && t.contains("\"policy\":\"web\"")
                && t.contains("\"action\":\"rotate_compromised\"")
        }),
        "a detector record names canary and the policy: {audit}"
    );
    assert!(
        records.iter().any(|r| {
            let t = text(r);
            t.contains("\"hook\":\"detector\"")
                && t.contains("\"reason\":\"canary\"")
                && t.contains("\"policy\":\"web\"")
        }),
        "an event names canary and the policy: {audit}"
    );
    assert!(
        audit.contains("\"outcome\":\"canary\""),
        "the execution's end is audited"
    );
    let events = env.hb(&["events", "--json"]);
    let events = String::from_utf8_lossy(&events.stdout).into_owned();
    let log = env.agent().log_text();
    assert_no_key_in(
        [OLD, new.as_str()],
        &[
            ("thief", &thief_text),
            ("bystander", &bystander_text),
            ("cli", &outputs),
            ("events", &events),
            ("log", &log),
            ("audit", &audit),
        ],
    );
    let _ = fs::remove_dir_all(&dir);
}

const ECHO: &str = r#"
h = hb.handle("svc", "bot")["handle"]
m = hb.handle("mild", "bot")["handle"]
out = {"svc": call(h, "echo_svc", "/echo"), "mild": call(m, "echo_mild", "/echo")}
print(json.dumps(out), flush=True)
"#;

#[test]
fn an_upstream_echoing_the_injected_key_is_a_reflection() {
    let World {
        dir,
        api,
        _dns,
        keys,
        mut env,
    } = world("reflect", 0);
    env.start_agent();
    let python = hb_tests::python();
    let mut outputs = String::new();
    let out = env.sandbox("web", &[python, "-c", &script(&env, &keys, ECHO)]);
    let client_text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_str(client_text.trim()).expect("client JSON");
    // The upstream did get the keys, and echoed them; the caller got them scrubbed.
    assert_eq!(bearers(&api, "echo_svc"), [OLD]);
    assert_eq!(bearers(&api, "echo_mild"), [MILD_OLD]);
    for which in ["svc", "mild"] {
        assert_eq!(got[which]["status"], 200, "{got}");
        let body = got[which]["body"].as_str().expect("body");
        assert!(body.contains("[REDACTED:"), "{which}: {body}");
    }

    // svc (default on_reflection): rotated as compromised, the old key revoked.
    let rotation = wait_retired(&env, "svc", &mut outputs);
    assert_eq!(rotation["trigger"], "reflection", "{rotation}");
    assert_eq!(rotation["compromised"], true, "{rotation}");
    let live = store(&keys);
    assert_eq!(live.len(), 1, "{live:?}");
    assert_ne!(live[0], OLD);
    let new = live[0].clone();
    let vault = env.hb_json(&["vault", "list"]);
    outputs += &vault.to_string();
    let old_row = vault
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["id"] == rotation["old_id"])
        .expect("old row");
    assert_eq!(old_row["status"], "revoked", "{vault}");

    // mild (on_reflection = "alert"): signalled at the same moment as svc, which has
    // rotated since; mild has an alert and no rotation.
    let history = env.hb_json(&["rotation", "history"]);
    outputs += &history.to_string();
    assert!(
        !history
            .as_array()
            .expect("history")
            .iter()
            .any(|r| r["integration"] == "mild"),
        "alert does not rotate: {history}"
    );
    let audit = fs::read_to_string(env.state_dir.join("audit.log")).unwrap_or_default();
    let detector_records: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r.to_string().contains("\"detector\":\"reflection\""))
        .collect();
    let action_of = |integration: &str| {
        detector_records
            .iter()
            .find(|r| {
                r.to_string()
                    .contains(&format!("\"integration\":\"{integration}\""))
            })
            .map(|r| r.to_string())
            .unwrap_or_default()
    };
    assert!(
        action_of("svc").contains("\"action\":\"rotate_compromised\""),
        "{audit}"
    );
    assert!(
        action_of("mild").contains("\"action\":\"alert\""),
        "{audit}"
    );
    assert!(
        audit.contains("\"hook\":\"detector\"") && audit.contains("\"reason\":\"reflection\""),
        "an event: {audit}"
    );
    let events = env.hb(&["events", "--json"]);
    let events = String::from_utf8_lossy(&events.stdout).into_owned();
    let log = env.agent().log_text();
    assert_no_key_in(
        [OLD, MILD_OLD, new.as_str()],
        &[
            ("client", &client_text),
            ("cli", &outputs),
            ("events", &events),
            ("log", &log),
            ("audit", &audit),
        ],
    );
    let _ = fs::remove_dir_all(&dir);
}

const CONTENT: &str = r#"
h = hb.handle("svc", "bot", execution="exec-content")["handle"]
m = hb.handle("mild", "bot")["handle"]
decoy = [x["handle"] for x in hb.handles() if x["handle"] not in (h, m) and x["integration"] == "svc"][0]
out = {}
# The mild account's key, as if the sandbox had been shown it: sent along, refused.
try:
    hb.request("GET", "https://api.test/echo?step=leak", handle=m, headers={"X-Note": "k=" + LEAKED})
    out["leak"] = "sent"
except BrokerError as e:
    out["leak"] = e.code
# A decoy in the URL of a call with a real handle: the caller's handles die.
out["decoy_in_url"] = call(h, "decoy_in_url&note=" + decoy).get("error")
out["after"] = call(h, "content_after").get("error")
print(json.dumps(out), flush=True)
"#;

#[test]
fn a_decoy_or_a_known_key_in_what_a_sandbox_sends_is_seen() {
    let World {
        dir,
        api,
        _dns,
        keys,
        mut env,
    } = world("sightings", 1);
    env.start_agent();
    let python = hb_tests::python();
    let mut outputs = String::new();
    let body = format!("LEAKED = {MILD_OLD:?}\n{CONTENT}");
    let out = env.sandbox("web", &[python, "-c", &script(&env, &keys, &body)]);
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("client JSON");
    assert_eq!(
        got["leak"], "policy_denied",
        "a known key is not sent: {got}"
    );
    assert!(
        api.requests()
            .iter()
            .all(|r| !r.to_string().contains(MILD_OLD)),
        "the upstream never saw the leaked key"
    );
    assert_eq!(got["decoy_in_url"], "unknown_handle", "{got}");
    assert_eq!(got["after"], "unknown_handle", "{got}");
    assert!(
        bearers(&api, "content_after").is_empty()
            && api
                .requests()
                .iter()
                .all(|r| !r["path"].as_str().unwrap_or("").contains("decoy_in_url")),
        "nothing was sent once the decoy was seen"
    );
    let rotation = wait_retired(&env, "svc", &mut outputs);
    assert_eq!(rotation["trigger"], "canary", "{rotation}");
    assert_eq!(rotation["compromised"], true, "{rotation}");
    let audit = fs::read_to_string(env.state_dir.join("audit.log")).unwrap_or_default();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"detector\":\"canary\"")
                && l.contains("\"seen\":\"request_content\"")),
        "{audit}"
    );
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"detector\":\"reflection\"")
                && l.contains("\"seen\":\"request_content\"")
                && l.contains("\"integration\":\"mild\"")
                && l.contains("\"action\":\"alert\"")),
        "{audit}"
    );
    let log = env.agent().log_text();
    let new = store(&keys)[0].clone();
    assert_no_key_in(
        [OLD, MILD_OLD, new.as_str()],
        &[("cli", &outputs), ("log", &log), ("audit", &audit)],
    );
    let _ = fs::remove_dir_all(&dir);
}

const ECHO_DEFAULT: &str = r#"
h = hb.handle("svc", "bot")["handle"]
r = call(h, "echo_default", "/echo")
print(json.dumps({"status": r.get("status"), "body": r.get("body")}), flush=True)
"#;

/// With no detector key in the config at all: the default `on_reflection`.
#[test]
fn a_reflected_key_is_rotated_as_compromised_by_default() {
    let World {
        dir,
        api,
        _dns,
        keys,
        mut env,
    } = world_with("reflectdefault", "", "");
    env.start_agent();
    let python = hb_tests::python();
    let mut outputs = String::new();
    let out = env.sandbox("web", &[python, "-c", &script(&env, &keys, ECHO_DEFAULT)]);
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("client JSON");
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(bearers(&api, "echo_default"), [OLD]);
    assert!(!got.to_string().contains(OLD), "scrubbed: {got}");
    let rotation = wait_retired(&env, "svc", &mut outputs);
    assert_eq!(rotation["trigger"], "reflection", "{rotation}");
    assert_eq!(rotation["compromised"], true, "{rotation}");
    assert!(
        !store(&keys).iter().any(|k| k == OLD),
        "old key revoked upstream"
    );
    let _ = fs::remove_dir_all(&dir);
}

const LEAKER: &str = r#"
h = hb.handle("svc", "bot", execution="exec-leaker")["handle"]
decoy = [x["handle"] for x in hb.handles() if x["handle"] != h][0]
print(decoy, flush=True)
sys.stdin.readline()
print(json.dumps({"after": call(h, "leaker_after").get("error")}), flush=True)
"#;

/// A decoy that got out of its sandbox and is tried by another one: the other caller's
/// handles and the decoy's own execution are ended.
#[test]
fn a_decoy_tried_by_another_sandbox_ends_both() {
    let World {
        dir,
        api,
        _dns,
        keys,
        mut env,
    } = world("canaryforeign", 1);
    env.start_agent();
    let python = hb_tests::python();
    let mut outputs = String::new();
    let mut leaker = env.sandbox_piped("web", &[python, "-c", &script(&env, &keys, LEAKER)]);
    let mut to_leaker = leaker.stdin.take().expect("stdin");
    let mut from_leaker = BufReader::new(leaker.stdout.take().expect("stdout"));
    let mut decoy = String::new();
    from_leaker.read_line(&mut decoy).expect("decoy");
    let decoy = decoy.trim().to_owned();
    assert!(decoy.starts_with("hb_cred_"), "{decoy}");
    let user = format!(
        "mine = hb.handle(\"svc\", \"bot\")[\"handle\"]\nd = call({decoy:?}, \"foreign\")\nprint(json.dumps({{\"decoy\": d.get(\"error\"), \"mine\": call(mine, \"user_after\").get(\"error\")}}), flush=True)\n"
    );
    let out = env.sandbox("web", &[python, "-c", &script(&env, &keys, &user)]);
    assert!(
        out.status.success(),
        "user: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("user JSON");
    assert_eq!(got["decoy"], "unknown_handle", "{got}");
    assert_eq!(
        got["mine"], "unknown_handle",
        "the user's own handle: {got}"
    );
    writeln!(to_leaker, "go").expect("to leaker");
    let mut line = String::new();
    from_leaker.read_line(&mut line).expect("leaker");
    let _ = leaker.wait();
    let l: Value = serde_json::from_str(line.trim()).expect("leaker JSON");
    assert_eq!(l["after"], "unknown_handle", "the decoy's execution: {l}");
    assert!(bearers(&api, "foreign").is_empty() && bearers(&api, "leaker_after").is_empty());
    let rotation = wait_retired(&env, "svc", &mut outputs);
    assert_eq!(rotation["trigger"], "canary", "{rotation}");
    let _ = fs::remove_dir_all(&dir);
}

/// Waits (up to `limit`) for `child` to exit; its status, or `None` if it still runs.
fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether host process `pid` is gone (or a zombie waiting for its reaper).
fn gone(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

const THIEF_KILLED: &str = r#"
import subprocess
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
h = hb.handle("svc", "bot", execution="exec-thief")["handle"]
decoys = [x["handle"] for x in hb.handles() if x["handle"] != h]
print("ready", flush=True)
sys.stdin.readline()
out = {"decoy": call(decoys[0], "decoy")}
out["survived"] = True
try:
    out["new_handle"] = hb.handle("svc", "bot")["handle"][:8]
except BrokerError as e:
    out["new_handle"] = e.code
print(json.dumps(out), flush=True)
sys.stdin.readline()
"#;

/// A sandbox that uses a decoy is killed, every process of it (the cgroup, not a pid),
/// while a sandbox beside it holding a handle for the same account keeps working.
#[test]
fn a_sandbox_that_uses_a_canary_is_killed_and_a_bystander_keeps_working() {
    let World {
        dir,
        api,
        _dns,
        keys,
        mut env,
    } = world_full("canarykill", "", "", "canary_handles = 1", "");
    env.start_agent();
    let python = hb_tests::python();
    let mut bystander = env.sandbox_piped("web", &[python, "-c", &script(&env, &keys, BYSTANDER)]);
    let mut to_bystander = bystander.stdin.take().expect("stdin");
    let mut from_bystander = BufReader::new(bystander.stdout.take().expect("stdout"));
    let mut line = String::new();
    from_bystander.read_line(&mut line).expect("bystander");
    assert_eq!(line.trim(), "ready");

    let mut thief = env.sandbox_piped("web", &[python, "-c", &script(&env, &keys, THIEF_KILLED)]);
    let mut to_thief = thief.stdin.take().expect("stdin");
    let mut from_thief = BufReader::new(thief.stdout.take().expect("stdout"));
    line.clear();
    from_thief.read_line(&mut line).expect("thief");
    assert_eq!(line.trim(), "ready");
    // The thief's processes, on the host: its cgroup as the broker identified it.
    let registered = env
        .audit_records()
        .into_iter()
        .find(|r| {
            r["kind"] == "handle" && r["step"] == "registered" && r["execution"] == "exec-thief"
        })
        .expect("the thief's handle is audited");
    let cgroup = registered["caller"]["cgroup"]
        .as_str()
        .expect("cgroup")
        .to_owned();
    let procs = fs::read_to_string(hb_tests::cgroup2_mount().join(&cgroup).join("cgroup.procs"))
        .expect("the thief's cgroup");
    let pids: Vec<String> = procs.lines().map(str::to_owned).collect();
    assert!(pids.len() >= 2, "the thief and its child: {pids:?}");

    writeln!(to_thief, "go").expect("to thief");
    let status = wait_exit(&mut thief, Duration::from_secs(20));
    let mut rest = String::new();
    if status.is_none() {
        // Still running: what it got (an old broker answers and lets it go on).
        let _ = from_thief.read_line(&mut rest);
        let _ = thief.kill();
    } else {
        let _ = std::io::Read::read_to_string(&mut from_thief, &mut rest);
    }
    let status = status.unwrap_or_else(|| panic!("the thief was not killed: {rest}"));
    assert!(!status.success(), "killed: {status:?}");
    assert!(
        !rest.contains("survived"),
        "no line after the decoy: {rest}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids.iter().all(|p| gone(p)) {
        assert!(
            Instant::now() < deadline,
            "a process of the thief lives: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The account is rotated as compromised; the bystander's handle carries the new key.
    let mut outputs = String::new();
    let rotation = wait_retired(&env, "svc", &mut outputs);
    assert_eq!(rotation["trigger"], "canary", "{rotation}");
    writeln!(to_bystander, "go").expect("to bystander");
    line.clear();
    from_bystander.read_line(&mut line).expect("bystander");
    let b: Value = serde_json::from_str(line.trim()).expect("bystander JSON");
    assert_eq!(b["after"], 200, "the bystander keeps working: {b}");
    let _ = bystander.wait();
    let new = store(&keys)[0].clone();
    assert_eq!(bearers(&api, "b_after"), [new.as_str()]);
    assert!(bearers(&api, "decoy").is_empty());

    let records = env.audit_records();
    let ended = records
        .iter()
        .find(|r| r["kind"] == "caller_ended")
        .expect("a caller_ended record");
    assert_eq!(ended["why"], "canary", "{ended}");
    assert_eq!(ended["kill"], "killed", "{ended}");
    assert_eq!(ended["caller"]["cgroup"], cgroup.as_str(), "{ended}");
    let events = String::from_utf8_lossy(&env.hb(&["events", "--json"]).stdout).into_owned();
    assert!(
        events.lines().any(|l| l.contains("\"hook\":\"detector\"")
            && l.contains("\"verdict\":\"end_caller\"")
            && l.contains("\"reason\":\"canary\"")),
        "events.jsonl says the caller was ended: {events}"
    );
    let audit = fs::read_to_string(env.state_dir.join("audit.log")).unwrap_or_default();
    for key in [OLD, new.as_str()] {
        assert!(
            !events.contains(key) && !audit.contains(key),
            "a key in a record"
        );
    }
    let _ = fs::remove_dir_all(&dir);
}

const RACER: &str = r#"
import threading, time
h = hb.handle("svc", "bot", execution="exec-racer")["handle"]
decoys = [x["handle"] for x in hb.handles() if x["handle"] != h]
got = []
stop = threading.Event()
def grab():
    c = Client(SOCK)
    while not stop.is_set():
        try:
            got.append(c.handle("svc", "bot", execution="exec-race")["handle"])
        except BrokerError as e:
            got.append(e.code)
t = threading.Thread(target=grab)
t.start()
# The trip lands while the other thread is asking: once it got a handle, and until
# it has been answered after the trip (at most 10 s each way).
t0 = time.time()
while not any(g.startswith("hb_cred_") for g in got) and time.time() - t0 < 10:
    time.sleep(0.02)
out = {"decoy": call(decoys[0], "decoy").get("error")}
n = len(got)
t0 = time.time()
while len(got) < n + 3 and time.time() - t0 < 10:
    time.sleep(0.02)
stop.set()
t.join()
issued = [g for g in got if g.startswith("hb_cred_")]
out["issued"] = len(issued)
out["issued_alive"] = sum(1 for x in issued if call(x, "racer_after").get("status") is not None)
out["refusals"] = sorted(set(g for g in got if not g.startswith("hb_cred_")))
try:
    out["new_handle"] = hb.handle("mild", "bot")["handle"][:8]
except BrokerError as e:
    out["new_handle"] = e.code
print(json.dumps(out), flush=True)
"#;

const LATECOMER: &str = r#"
h = hb.handle("svc", "bot")["handle"]
print(json.dumps({"status": call(h, "latecomer").get("status")}), flush=True)
"#;

/// A host caller (a service outside every sandbox, under `broker.host_policy`: never
/// killed) that uses a decoy is barred: every handle it got, even while racing the
/// trip from another thread, is dead, and it gets no new one (for any account); a
/// sandbox is not barred by it and keeps working.
#[test]
fn a_canary_bars_its_user_from_new_handles_even_racing_the_trip() {
    let World {
        dir,
        api,
        _dns,
        keys,
        mut env,
    } = world_full(
        "canarybar",
        "host_policy = \"web\"",
        "",
        "canary_handles = 1",
        "",
    );
    env.start_agent();
    let python = hb_tests::python();
    let out = std::process::Command::new(python)
        .args(["-c", &script(&env, &keys, RACER)])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "racer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("racer JSON");
    assert_eq!(got["decoy"], "unknown_handle", "{got}");
    assert!(
        got["issued"].as_u64().unwrap_or(0) > 0,
        "the race ran: {got}"
    );
    assert_eq!(got["issued_alive"], 0, "no handle outlives the trip: {got}");
    assert_eq!(got["new_handle"], "policy_denied", "barred: {got}");
    assert!(
        got["refusals"]
            .as_array()
            .is_some_and(|r| r.iter().any(|c| c == "policy_denied")),
        "the racing thread was refused once the bar was set: {got}"
    );
    let mut outputs = String::new();
    wait_retired(&env, "svc", &mut outputs);
    let late = env.sandbox("web", &[python, "-c", &script(&env, &keys, LATECOMER)]);
    let late: Value = serde_json::from_slice(&late.stdout).expect("latecomer JSON");
    assert_eq!(late["status"], 200, "a sandbox is not barred: {late}");
    assert_eq!(bearers(&api, "latecomer").len(), 1);
    let ended = env
        .audit_records()
        .into_iter()
        .find(|r| r["kind"] == "caller_ended")
        .expect("a caller_ended record");
    assert_eq!(ended["kill"], "host_caller_not_killed", "{ended}");
    let _ = fs::remove_dir_all(&dir);
}

const STORM: &str = r#"
for i in range(5):
    try:
        h = hb.handle("svc", "bot")["handle"]
        r = call(h, "storm", "/echo")
        out = {"i": i, "status": r.get("status"), "error": r.get("error")}
    except BrokerError as e:
        out = {"i": i, "handle": e.code}
    print(json.dumps(out), flush=True)
    sys.stdin.readline()
"#;

/// A sandbox that makes an upstream echo its account's key again and again gets at most
/// all but one of `max_compromise_rotations_per_day` (default 3) new keys minted (the
/// last is kept for a leak: `compromise_reserve`); past it the signal only alerts and
/// the sandbox is barred. Events, audit and `rotation status` say so, with no key.
#[test]
fn forced_reflections_stop_at_the_daily_compromise_cap() {
    let World {
        dir,
        api: _api,
        _dns,
        keys,
        mut env,
    } = world_with("reflectcap", "", "");
    env.start_agent();
    let python = hb_tests::python();
    let mut storm = env.sandbox_piped("web", &[python, "-c", &script(&env, &keys, STORM)]);
    let mut to_storm = storm.stdin.take().expect("stdin");
    let mut from_storm = BufReader::new(storm.stdout.take().expect("stdout"));
    let mut rounds = Vec::new();
    let mut outputs = String::new();
    for i in 0..5usize {
        let mut line = String::new();
        from_storm.read_line(&mut line).expect("storm");
        let round: Value = serde_json::from_str(line.trim()).expect("round JSON");
        rounds.push(round.clone());
        if round["status"] == 200 {
            // Its signal settled (a rotation closed, or the cap said no) before the next
            // one: a reflection during an open compromise rotation joins it.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let history = env.hb_json(&["rotation", "history"]);
                outputs += &history.to_string();
                let rows = history.as_array().expect("history");
                let closed = rows
                    .iter()
                    .filter(|r| {
                        r["integration"] == "svc"
                            && matches!(r["step"].as_str(), Some("retired" | "failed"))
                    })
                    .count();
                let open = rows.len()
                    > rows
                        .iter()
                        .filter(|r| {
                            matches!(
                                r["step"].as_str(),
                                Some("retired" | "failed" | "rolled_back" | "aborted")
                            )
                        })
                        .count();
                let capped = env
                    .audit_records()
                    .iter()
                    .filter(|r| r["kind"] == "detector_action" && r["outcome"] == "capped")
                    .count();
                if !open && closed + capped > i {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "round {i} did not settle: {history}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        writeln!(to_storm, "go").expect("to storm");
    }
    let _ = storm.wait();
    let minted = minted(&keys);
    assert_eq!(
        minted.len(),
        2,
        "at most max_compromise_rotations_per_day - 1 keys: {minted:?} after {rounds:?}"
    );
    assert_eq!(
        rounds[2]["status"], 200,
        "the third echo answered: {rounds:?}"
    );
    assert_eq!(
        rounds[3]["handle"], "policy_denied",
        "then the caller is barred: {rounds:?}"
    );
    let records = env.audit_records();
    let capped = records
        .iter()
        .find(|r| r["kind"] == "detector_action" && r["outcome"] == "capped")
        .expect("a capped record");
    assert_eq!(capped["detector"], "reflection", "{capped}");
    assert_eq!(capped["action"], "alert", "{capped}");
    assert_eq!(capped["limit"], "compromise_reserve", "{capped}");
    assert_eq!(capped["caller_ended"], true, "{capped}");
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "caller_ended" && r["why"] == "compromise_cap"),
        "the caller is ended"
    );
    let events = String::from_utf8_lossy(&env.hb(&["events", "--json"]).stdout).into_owned();
    let detector_events: Vec<Value> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["hook"] == "detector")
        .collect();
    assert!(
        detector_events.iter().any(|e| e["reason"] == "reflection"
            && e["verdict"] == "rotate_compromised"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("signal"))),
        "each signal is an event in events.jsonl: {events}"
    );
    assert!(
        detector_events.iter().any(|e| e["reason"] == "reflection"
            && e["verdict"] == "alert"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("capped") && d.contains("compromise_reserve 2/2"))),
        "the capped action is an event that says so: {events}"
    );
    let svc = svc_status(&env, &mut outputs);
    assert_eq!(svc["max_compromise_rotations_per_day"], 3, "{svc}");
    assert_eq!(svc["compromise_rotations_24h"], 2, "{svc}");
    assert_eq!(
        svc["compromise_rotations_left"], 1,
        "the one kept for a leak: {svc}"
    );
    assert_eq!(svc["max_rotations_per_day"], 6, "the default: {svc}");
    assert_eq!(svc["detectors"]["reflection"]["today"], 3, "{svc}");
    assert_eq!(
        svc["detectors"]["reflection"]["last_outcome"], "capped",
        "{svc}"
    );
    let text = String::from_utf8_lossy(&env.hb(&["rotation", "status"]).stdout).into_owned();
    assert!(
        text.contains("2/3"),
        "the text form shows the budget: {text}"
    );
    let audit = fs::read_to_string(env.state_dir.join("audit.log")).unwrap_or_default();
    let book = fs::read_to_string(env.state_dir.join("detectors.json")).unwrap_or_default();
    let log = env.agent().log_text();
    assert_no_key_in(
        std::iter::once(OLD.to_owned()).chain(minted),
        &[
            ("events", &events),
            ("audit", &audit),
            ("status", &outputs),
            ("status text", &text),
            ("detectors.json", &book),
            ("log", &log),
        ],
    );
    let _ = fs::remove_dir_all(&dir);
}

const ECHO_PAST_THE_END: &str = r#"
import threading, time
h = hb.handle("svc", "bot")["handle"]
first = call(h, "first_echo", "/echo")
print(json.dumps({"first": first.get("status", first.get("error"))}), flush=True)
sys.stdin.readline()
h = hb.handle("svc", "bot")["handle"]
res = {}
def slow():
    res["slow"] = call(h, "slow_echo&secs=3", "/echo")
t = threading.Thread(target=slow)
t.start()
time.sleep(0.5)
res["fast"] = call(h, "fast_echo", "/echo")
t.join()
print(json.dumps({k: v.get("status", v.get("error")) for k, v in res.items()}), flush=True)
"#;

/// An echo whose answer comes back after another echo of the same caller ended it (its
/// handles revoked) is still the echo of the key the call was given — a key rotated in
/// by an earlier echo's rotation, protected under its rotation's id as well as its
/// own: one reflection signal per echo (`seen: "response"`), never a second one as
/// another account's key (`response_unheld`), which would spend a compromise rotation
/// (or, with `compromise_reserve`, the one kept for a leak) for nothing.
#[test]
fn an_echo_answered_after_its_caller_was_ended_is_one_reflection() {
    let World {
        dir,
        api,
        _dns,
        keys,
        mut env,
    } = world_full(
        "reflectended",
        "",
        "max_compromise_rotations_per_day = 2",
        "",
        "",
    );
    env.start_agent();
    let python = hb_tests::python();
    let mut outputs = String::new();
    let mut client = env.sandbox_piped(
        "web",
        &[python, "-c", &script(&env, &keys, ECHO_PAST_THE_END)],
    );
    let mut to_client = client.stdin.take().expect("stdin");
    let mut from_client = BufReader::new(client.stdout.take().expect("stdout"));
    let mut got = String::new();
    from_client.read_line(&mut got).expect("first echo");
    // The first echo's reflection spends the one compromise rotation the reserve leaves.
    wait_retired(&env, "svc", &mut outputs);
    writeln!(to_client, "go").expect("to client");
    from_client.read_line(&mut got).expect("second round");
    let _ = client.wait();
    let minted = minted(&keys);
    assert_eq!(minted.len(), 1, "one rotation: {got}");
    assert_eq!(bearers(&api, "first_echo"), [OLD], "{got}");
    // Both later calls reached the upstream, the slow one first, with the new key.
    assert_eq!(
        bearers(&api, "slow_echo&secs=3"),
        [minted[0].as_str()],
        "{got}"
    );
    assert_eq!(bearers(&api, "fast_echo"), [minted[0].as_str()], "{got}");
    let records = env.audit_records();
    let ended: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "caller_ended")
        .collect();
    assert!(
        !ended.is_empty(),
        "the fast echo's capped signal ends the caller: {records:?}"
    );
    let signals: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "detector" && r["detector"] == "reflection")
        .collect();
    let seen: Vec<&str> = signals
        .iter()
        .map(|r| r["seen"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        seen,
        ["response", "response", "response"],
        "one signal per echo, the slow one's after the caller was ended: {signals:?}"
    );
    // The audit log is in the order things happened.
    let at = |wanted: &Value| records.iter().position(|r| r == wanted);
    assert!(
        at(ended[0]) < at(signals[2]),
        "the slow echo was answered after the caller was ended: {records:?}"
    );
    let svc = svc_status(&env, &mut outputs);
    assert_eq!(svc["detectors"]["reflection"]["today"], 3, "{svc}");
    assert_eq!(svc["compromise_rotations_24h"], 1, "{svc}");
    let audit = fs::read_to_string(env.state_dir.join("audit.log")).unwrap_or_default();
    assert_no_key_in(
        std::iter::once(OLD.to_owned()).chain(minted),
        &[("audit", &audit), ("client", &got), ("cli", &outputs)],
    );
    let _ = fs::remove_dir_all(&dir);
}

const QUARANTINE_TRIGGER: &str = r#"
import time
m = hb.handle("mild", "bot")["handle"]
out = {"echo": call(m, "q_echo", "/echo").get("status")}
try:
    hb.handle("mild", "bot")
    out["again"] = "issued"
except BrokerError as e:
    out["again"] = e.code
print(json.dumps(out), flush=True)
sys.stdin.readline()
# Its bar (suspect_bar_secs = 1) ends; its hold on the account does not.
for _ in range(300):
    try:
        m = hb.handle("mild", "bot")["handle"]
        break
    except BrokerError:
        time.sleep(0.05)
"#;

const QUARANTINED: &str = r#"
m = hb.handle("mild", "bot")["handle"]
h = hb.handle("svc", "bot")["handle"]
def code(f):
    try:
        return f().get("status")
    except BrokerError as e:
        return e.code
out = {}
out["post"] = code(lambda: hb.request("POST", "https://api.test/plain?step=" + STEP + "post", handle=m, body="x"))
out["gets"] = [code(lambda: hb.request("GET", "https://api.test/plain?step=" + STEP + "get", handle=m)) for _ in range(4)]
out["svc_post"] = code(lambda: hb.request("POST", "https://api.test/plain?step=" + STEP + "svc", handle=h, body="x"))
print(json.dumps(out), flush=True)
"#;

/// `on_reflection = "quarantine"`: the caller that raised it is barred, and held on the
/// account once its bar ends: its calls with the account's key read-only at
/// `quarantine_calls_per_minute`; its other account is untouched; another caller of the
/// account keeps full service (attack review 21: the whole account was held, for every
/// tenant); nothing is rotated.
#[test]
fn a_quarantined_caller_takes_only_read_only_calls_at_its_rate() {
    let World {
        dir,
        api,
        _dns,
        keys,
        mut env,
    } = world_full(
        "quarantine",
        "suspect_bar_secs = 1",
        "",
        "",
        "on_reflection = \"quarantine\"\nquarantine_calls_per_minute = 3",
    );
    env.start_agent();
    let python = hb_tests::python();
    let held = |step: &str| format!("STEP = {step:?}\n{QUARANTINED}");
    let mut suspect = env.sandbox_piped(
        "web",
        &[
            python,
            "-c",
            &script(&env, &keys, &(QUARANTINE_TRIGGER.to_owned() + &held("q_"))),
        ],
    );
    let mut to_suspect = suspect.stdin.take().expect("stdin");
    let mut from_suspect = BufReader::new(suspect.stdout.take().expect("stdout"));
    let mut line = String::new();
    from_suspect.read_line(&mut line).expect("suspect");
    let first: Value = serde_json::from_str(line.trim()).expect("trigger JSON");
    assert_eq!(first["echo"], 200, "{first}");
    assert_eq!(
        first["again"], "policy_denied",
        "the suspect is barred: {first}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !env.audit_records().iter().any(|r| {
        r["kind"] == "detector_action"
            && r["outcome"] == "quarantined"
            && r["integration"] == "mild"
    }) {
        assert!(Instant::now() < deadline, "no quarantine");
        std::thread::sleep(Duration::from_millis(100));
    }
    writeln!(to_suspect, "go").expect("to suspect");
    line.clear();
    from_suspect.read_line(&mut line).expect("suspect");
    let _ = suspect.wait();
    let got: Value = serde_json::from_str(line.trim()).expect("suspect JSON");
    assert_eq!(got["post"], "policy_denied", "not read-only: {got}");
    assert_eq!(
        got["gets"],
        serde_json::json!([200, 200, 200, "rate_limited"]),
        "{got}"
    );
    assert_eq!(got["svc_post"], 200, "another account is not held: {got}");
    assert!(bearers(&api, "q_post").is_empty(), "the POST never left");
    assert_eq!(bearers(&api, "q_get").len(), 3);

    let out = env.sandbox("web", &[python, "-c", &script(&env, &keys, &held("o_"))]);
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other: Value = serde_json::from_slice(&out.stdout).expect("client JSON");
    assert_eq!(
        other,
        serde_json::json!({"post": 200, "gets": [200, 200, 200, 200], "svc_post": 200}),
        "another caller of the account keeps full service"
    );
    let history = env.hb_json(&["rotation", "history"]);
    assert!(
        history.as_array().is_some_and(Vec::is_empty),
        "nothing rotated: {history}"
    );
    let records = env.audit_records();
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "caller_ended" && r["why"] == "quarantine")
    );
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "quarantine_caller" && r["integration"] == "mild"),
        "the caller's hold is audited"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// A sandbox calls `svc` at a steady low rate through its handle, then floods it from
/// eight connections, then tries a write; then reads as fast as it can. Prints what it
/// was answered.
const FLOOD: &str = r#"
import threading, time
from collections import Counter
h = hb.handle("svc", "bot")["handle"]
def code(c, f):
    try:
        return f(c)["status"]
    except BrokerError as e:
        return e.code
def get(c, step):
    return code(c, lambda c: c.request("GET", "https://api.test/plain?step=" + step, handle=h))
out = {"steady": []}
end = time.time() + 7
while time.time() < end:
    out["steady"].append(get(hb, "steady"))
    time.sleep(0.5)
flood = []
def worker():
    c = Client(SOCK)
    stop = time.time() + 6
    while time.time() < stop:
        got = get(c, "flood")
        flood.append(got)
        if got != 200:
            return
threads = [threading.Thread(target=worker) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
out["flood"] = dict(Counter(str(x) for x in flood))
deadline = time.time() + 15
out["posts_sent"] = 0
while True:
    try:
        hb.request("POST", "https://api.test/plain?step=write", handle=h, body="x")
        out["post"] = 200
        out["posts_sent"] += 1
    except BrokerError as e:
        if e.code == "unknown_handle" and "renewed" not in out:
            # The flooder's handles to the account were ended: it takes a new one.
            h = hb.handle("svc", "bot")["handle"]
            out["renewed"] = True
            continue
        out["post"], out["post_message"] = e.code, e.message
        break
    if time.time() > deadline:
        break
    time.sleep(0.3)
burst = []
while len(burst) < 400 and (not burst or burst[-1] == 200):
    burst.append(get(hb, "burst"))
out["burst"] = dict(Counter(str(x) for x in burst))
print(json.dumps(out), flush=True)
"#;

/// The sensor and the `rate_spike` detector end to end, on one-second buckets: a
/// steady trickle is learned, a flood from the same handle is a spike that names the
/// flooder, and the default action (`quarantine`) ends the flooder's handles to the
/// account and holds its calls on the account (with a new handle too) to read-only at
/// a rate near the trickle's (not the flood's); a write is refused with the
/// quarantine's answer and never reaches the upstream. A write pair never seen before is a `novelty` alert.
/// Nothing is rotated, and no key appears in any output, record or file.
#[test]
fn a_flood_through_a_handle_is_a_rate_spike_and_quarantines_the_account() {
    let World {
        dir,
        api,
        _dns,
        keys,
        mut env,
    } = spike_world(
        "spike",
        // A long half-life: the flood's first buckets, under the spike's floor while its
        // threads start on a loaded machine, barely move the trickle's baseline.
        300, "",
    );
    env.start_agent();
    let python = hb_tests::python();
    let out = env.sandbox("web", &[python, "-c", &script(&env, &keys, FLOOD)]);
    let client_text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_str(client_text.trim()).expect("client JSON");
    let steady = got["steady"].as_array().expect("steady");
    assert!(
        steady.len() >= 8 && steady.iter().all(|s| s == 200),
        "the trickle goes through: {got}"
    );
    assert_eq!(got["post"], "policy_denied", "the write is held: {got}");
    assert!(
        got["post_message"]
            .as_str()
            .is_some_and(|m| m.contains("quarantined")),
        "{got}"
    );
    let records = env.audit_records();
    let holds: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["kind"] == "detector_action"
                || r["kind"] == "quarantine_caller"
                || r["kind"] == "sensor_spike"
        })
        .collect();
    // Held to a rate, or (the burst being a flood again) its new handle ended again.
    assert!(
        got["flood"].get("rate_limited").is_some()
            || got["burst"].get("rate_limited").is_some()
            || got["burst"].get("unknown_handle").is_some(),
        "reads are held to a rate: {got}; holds: {holds:?}"
    );
    assert_eq!(
        u64::try_from(bearers(&api, "write").len()).ok(),
        got["posts_sent"].as_u64(),
        "the refused write never left: {got}"
    );

    let spike = records
        .iter()
        .find(|r| r["kind"] == "detector" && r["detector"] == "rate_spike")
        .unwrap_or_else(|| panic!("a rate_spike signal: {records:?}"));
    assert_eq!(spike["action"], "quarantine", "{spike}");
    assert_eq!(spike["integration"], "svc", "{spike}");
    assert_eq!(spike["policy"], "web", "the flooder is named: {spike}");
    assert_eq!(
        got["renewed"], true,
        "the flooder's handle was ended: {got}"
    );
    let evidence = records
        .iter()
        .find(|r| r["kind"] == "sensor_spike")
        .expect("the evidence is audited");
    assert!(
        evidence["count"].as_u64().is_some_and(|c| c >= 15),
        "{evidence}"
    );
    let held = records
        .iter()
        .find(|r| r["kind"] == "detector_action" && r["detector"] == "rate_spike")
        .expect("the quarantine is audited");
    assert_eq!(held["outcome"], "quarantined", "{held}");
    // Two calls a second learned: about 180 a minute with the headroom, far above the
    // configured floor of 5 and far below the flood.
    let per_minute = held["calls_per_minute"].as_u64().expect("a rate");
    assert!((30..=1000).contains(&per_minute), "{held}");
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "detector" && r["detector"] == "novelty"),
        "the first POST is novel: {records:?}"
    );
    let events = env.hb(&["events", "--json"]);
    let events = String::from_utf8_lossy(&events.stdout).into_owned();
    let spike_event = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["hook"] == "detector" && e["reason"] == "rate_spike")
        .unwrap_or_else(|| panic!("a rate_spike event: {events}"));
    assert_eq!(spike_event["verdict"], "quarantine", "{spike_event}");
    assert_eq!(spike_event["name"], "svc/bot", "{spike_event}");

    let status = env.hb_json(&["rotation", "status"]);
    let account = status["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .find(|a| a["integration"] == "svc" && a["account"] == "bot")
        .unwrap_or_else(|| panic!("svc/bot in {status}"))
        .clone();
    let sensor = &account["sensor"];
    assert_eq!(sensor["bucket_secs"], 1, "{account}");
    let baseline = sensor["baseline"]["calls_per_minute"]
        .as_f64()
        .expect("a baseline");
    assert!(
        (30.0..=600.0).contains(&baseline),
        "the trickle's: {account}"
    );
    assert!(
        !sensor["last_buckets"]
            .as_array()
            .expect("buckets")
            .is_empty(),
        "{account}"
    );
    assert!(account["detectors"]["rate_spike"]["today"].as_u64() >= Some(1));
    let history = env.hb_json(&["rotation", "history"]);
    assert!(
        history.as_array().is_some_and(Vec::is_empty),
        "a spike quarantines, it does not rotate: {history}"
    );
    eprintln!(
        "answers: {got}; spike count {}; held at {per_minute} calls/min; baseline now {baseline:.1}/min",
        evidence["count"]
    );

    let audit = fs::read_to_string(env.state_dir.join("audit.log")).unwrap_or_default();
    let saved = fs::read_to_string(env.state_dir.join("sensor.json")).expect("sensor.json");
    let status_text = status.to_string();
    let log = env.agent().log_text();
    for (name, t) in [
        ("client", &client_text),
        ("status", &status_text),
        ("events", &events),
        ("log", &log),
        ("audit", &audit),
        ("sensor.json", &saved),
    ] {
        assert!(!t.contains(OLD), "the key in the {name} output");
    }
    let _ = fs::remove_dir_all(&dir);
}

/// Python for the `rate_spike` attack on the counted callers. With its handle, the
/// sandbox prints `ready`, then reads one line a bucket from its stdin, sent the moment
/// the sensor closed the last bucket (and started counting callers afresh), and acts on
/// it (`turn(word)`, timed from `T`, when the line came) until `end`; then it prints
/// `result()`. `get` and `post` answer a status or a broker error code.
const SPREAD_PRELUDE: &str = r#"
import threading, time
from collections import Counter
h = hb.handle("svc", "bot")["handle"]
def code(f):
    try:
        return f()["status"]
    except BrokerError as e:
        return e.code
def get(c, step):
    return code(lambda: c.request("GET", "https://api.test/plain?step=" + step, handle=h))
def post(c, step):
    return code(lambda: c.request("POST", "https://api.test/plain?step=" + step, handle=h, body="x"))
def at(s):
    time.sleep(max(0.0, T + s - time.time()))
"#;

/// Reads the lines and prints the result (after a sandbox's `turn` and `result`).
const SPREAD_LOOP: &str = r#"
print("ready", flush=True)
n = 0
for line in sys.stdin:
    word = line.strip()
    if word == "end":
        break
    T = time.time()
    turn(word, n)
    n += 1
print(json.dumps(result()), flush=True)
"#;

/// A decoy: one call the moment a bucket starts (it is counted among the bucket's
/// callers before anyone else calls).
const DECOY: &str = r#"
got = []
def turn(word, n):
    got.append(get(hb, "decoy"))
def result():
    return {"decoy": dict(Counter(str(x) for x in got))}
"#;

/// The flooder: on `steady`, one call 0.3 s into the bucket; on `flood`, from eight
/// connections from 0.3 s to 0.75 s into it (never in the decoys' turn, nor racing the
/// next close), each connection stopping at its first answer other than 200.
const SPREAD_FLOOD: &str = r#"
steady, flood = [], []
clients = [Client(SOCK) for _ in range(8)]
held = []
def worker(c):
    while time.time() < T + 0.75 and not held:
        got = get(c, "spread_flood")
        flood.append(got)
        if got != 200:
            held.append(got)
def turn(word, n):
    at(0.3)
    if word == "steady":
        steady.append(get(hb, "spread_steady"))
    elif word == "flood" and not held:
        threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
        for t in threads: t.start()
        for t in threads: t.join()
def result():
    return {"steady": dict(Counter(str(x) for x in steady)),
            "flood": dict(Counter(str(x) for x in flood))}
"#;

/// The innocent tenant: a read 0.3 s into every bucket and a write 0.5 s into it; what
/// each was answered, with its bucket's number.
const TENANT: &str = r#"
calls = []
def turn(word, n):
    at(0.3)
    calls.append([n, "GET", get(hb, "tenant_read")])
    at(0.5)
    calls.append([n, "POST", post(hb, "tenant_write")])
def result():
    return {"calls": calls}
"#;

/// The sandboxes of [`callers_taking_the_counters_early_cannot_turn_a_flood_into_an_account_hold`].
struct Spread {
    who: &'static str,
    child: std::process::Child,
    from: BufReader<std::process::ChildStdout>,
}

/// Buckets of the attack: the baseline is learned, then the flood, then the tenant
/// goes on alone with the decoys.
const STEADY_BUCKETS: usize = 8;
const FLOOD_BUCKETS: usize = 5;
const AFTER_BUCKETS: usize = 5;

/// The `rate_spike` attack on the counted callers, end to end (the world of
/// [`a_flood_through_a_handle_is_a_rate_spike_and_quarantines_the_account`]): nine
/// sandboxes of policy `web` each make one call the moment each one-second bucket
/// starts (the test watches the sensor's file being written at each close and tells
/// them), so they are counted before anyone else; a tenth floods later in each bucket;
/// a sandbox of policy `tenant` on the same account reads and writes all along. The
/// spike names the flooder alone (at the calls it surely made), and the quarantine
/// holds it only: the tenant's writes and reads keep going through after the spike.
#[test]
fn callers_taking_the_counters_early_cannot_turn_a_flood_into_an_account_hold() {
    let World {
        dir,
        api,
        _dns,
        keys,
        mut env,
    } = spike_world(
        "spread",
        // A short half-life: the baseline reaches the twelve calls a bucket of the
        // steady phase (after the empty buckets before it) before the flood.
        3,
        "\n[[policy]]\nname = \"tenant\"\nintegrations = [\"svc\"]",
    );
    env.start_agent();
    let python = hb_tests::python();
    let mut sandboxes: Vec<Spread> = [("tenant", TENANT), ("flooder", SPREAD_FLOOD)]
        .into_iter()
        .chain(std::iter::repeat_n(("decoy", DECOY), 9))
        .map(|(who, body)| {
            let text = script(&env, &keys, &format!("{SPREAD_PRELUDE}{body}{SPREAD_LOOP}"));
            let policy = if who == "tenant" { "tenant" } else { "web" };
            let mut child = env.sandbox_piped(policy, &[python, "-c", &text]);
            let mut from = BufReader::new(child.stdout.take().expect("stdout"));
            let mut line = String::new();
            from.read_line(&mut line).expect("ready");
            assert_eq!(line.trim(), "ready", "{who}");
            Spread { who, child, from }
        })
        .collect();
    // Every sandbox has its handle, so the account's buckets close every second, each
    // close writing the sensor's file: its new time is the attacker's signal.
    let file = env.state_dir.join("sensor.json");
    let written = || fs::metadata(&file).and_then(|m| m.modified()).ok();
    let mut last = written();
    for n in 0..STEADY_BUCKETS + FLOOD_BUCKETS + AFTER_BUCKETS {
        let deadline = Instant::now() + Duration::from_secs(5);
        while written() == last {
            assert!(Instant::now() < deadline, "the sensor closes no bucket");
            std::thread::sleep(Duration::from_millis(3));
        }
        last = written();
        for s in &mut sandboxes {
            let word = match s.who {
                "flooder" if n >= STEADY_BUCKETS + FLOOD_BUCKETS => "idle",
                "flooder" if n >= STEADY_BUCKETS => "flood",
                "flooder" => "steady",
                _ => "go",
            };
            writeln!(s.child.stdin.as_mut().expect("stdin"), "{word}").expect("to sandbox");
        }
    }
    let mut outputs: Vec<Value> = sandboxes
        .into_iter()
        .map(|mut s| {
            writeln!(s.child.stdin.as_mut().expect("stdin"), "end").expect("to sandbox");
            let mut line = String::new();
            s.from.read_line(&mut line).expect("output");
            let status = s.child.wait().expect("sandbox");
            let mut err = String::new();
            if let Some(mut e) = s.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            assert!(status.success(), "{}: {err}", s.who);
            serde_json::from_str(line.trim())
                .unwrap_or_else(|e| panic!("{} JSON ({e}): {line}", s.who))
        })
        .collect();
    let decoys = outputs.split_off(2);
    let (tenant, flooder) = (&outputs[0], &outputs[1]);
    let records = env.audit_records();
    let spikes: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "sensor_spike" || r["kind"] == "detector_action")
        .collect();
    eprintln!("flooder: {flooder}; decoys: {decoys:?}; spikes: {spikes:?}");

    let calls = tenant["calls"].as_array().expect("tenant calls");
    let refused: Vec<&Value> = calls.iter().filter(|c| c[2] != 200).collect();
    // The spike fires at the close of the flood's second bucket at the latest.
    let writes_after = calls
        .iter()
        .filter(|c| {
            c[1] == "POST"
                && c[0]
                    .as_u64()
                    .is_some_and(|n| n >= u64::try_from(STEADY_BUCKETS + 2).unwrap_or(0))
        })
        .count();
    assert!(
        refused.is_empty() && writes_after >= FLOOD_BUCKETS + AFTER_BUCKETS - 2,
        "the tenant is not held: refused {refused:?}; all {tenant}; records {spikes:?}"
    );
    assert_eq!(
        u64::try_from(bearers(&api, "tenant_write").len()).ok(),
        u64::try_from(calls.iter().filter(|c| c[1] == "POST").count()).ok(),
        "every tenant write reached the upstream"
    );
    let spike = records
        .iter()
        .find(|r| r["kind"] == "sensor_spike")
        .unwrap_or_else(|| panic!("a spike: {records:?}"));
    let suspects = spike["suspects"].as_array().expect("suspects");
    assert!(
        suspects.len() == 1
            && suspects[0]["policy"] == "web"
            && suspects[0]["calls"].as_u64().is_some_and(|c| c >= 30),
        "the flooder alone is named: {spike}"
    );
    let held: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "quarantine_caller")
        .collect();
    assert!(
        !held.is_empty() && held.iter().all(|r| r["caller"]["policy"] == "web"),
        "the flooder is held, nobody of `tenant`: {held:?}"
    );
    assert!(
        ["rate_limited", "unknown_handle", "policy_denied"]
            .iter()
            .any(|k| flooder["flood"].get(k).is_some()),
        "the flood is held: {flooder}"
    );
    assert!(
        records.iter().any(|r| r["kind"] == "detector_action"
            && r["detector"] == "rate_spike"
            && r["outcome"] == "quarantined"),
        "the quarantine is recorded: {records:?}"
    );
    eprintln!(
        "tenant: {} calls all 200 ({writes_after} writes after the spike); suspects {suspects:?}",
        calls.len()
    );
    let _ = fs::remove_dir_all(&dir);
}
