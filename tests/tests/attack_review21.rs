//! A twenty-first attack review, run as the process inside the sandbox: each test
//! performs one attack from a sandbox (uid 65534, arbitrary Python) against the real
//! agent, the real kernel and the fake provider of `rotation.rs` (an exec rotator
//! minting keys into a key store, an HTTPS API `api.test` that accepts exactly the keys
//! the store holds and reflects a request's headers on `/echo`) on the test namespace's
//! `lo`, and asserts the secure outcome.
//!
//! Angle: forcing the rotation loop — making hb rotate, hold or keep keys through the
//! evidence its detectors act on, and spending the limits that evidence is judged by.
//!
//! Found:
//! - a sandbox holding a handle for an account shared with other tenants spent the
//!   account's whole `max_compromise_rotations_per_day` by asking the API to echo the
//!   key its calls carried (a `reflection` each, which the caller never sees: the
//!   answer is scrubbed) and using a decoy of its own, and was cut off only on the
//!   signal after the last; a real leak of the account's key later that day (a caller
//!   sending it) was then only alerted about, and the key stayed live at the provider
//!   (baseline 3e3e945: 3 keys minted by the burner, the leak's signal `capped`). Only
//!   evidence that a caller had the key in hand may now spend the last of that budget;
//! - under `on_reflection = "quarantine"`, one echo of a tenant's own key held the whole
//!   shared account: every other tenant's writes refused and its reads rate-limited for
//!   `quarantine_secs`. A caller's signal now holds that caller alone;
//! - past that budget a tenant's spent account also cut off another tenant whose own
//!   provider key listing showed the account's key (`response_unheld`): the reader was
//!   ended as if it forced the reflection. Only a reflection of a key the caller holds
//!   a handle for now ends it.
//!
//! Held, with the figures in each test's output: a single echo, decoy or leak still
//! rotates as before; an echo's quarantine still bars and holds its own caller.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use hb_tests::{
    TestEnv,
    provider::{Provider, agent_env, assert_no_key_in, minted, store},
};
use serde_json::Value;

const DNS_PORT: u16 = 5421;
const OLD: &str = "key-old-21a9b8c7d6e5f40312ffeeddccbbaa99";

/// `svc`'s account `bot`, rotated by the fake provider's exec rotator with the default
/// limits (`max_compromise_rotations_per_day = 3`) and `rotation` (more lines of its
/// `[integration.rotation]`), shared by two tenants: policy `web` (the attacker) and
/// policy `ops` (another tenant), each with one decoy planted per execution. A decoy's
/// user is barred, not killed, so it can report what it was answered. Started.
fn shared_account(p: &Provider, keys: &Path, rotation: &str) -> TestEnv {
    agent(p, "", keys, rotation, "svc", "", |_| {})
}

/// [`shared_account`] with policy `ops` bound to integration `ops` instead, `extra` (more
/// TOML) in the config, and `vault` storing more values before the start.
fn agent(
    p: &Provider,
    broker: &str,
    keys: &Path,
    rotation: &str,
    ops: &str,
    extra: &str,
    vault: impl FnOnce(&TestEnv),
) -> TestEnv {
    let config = format!(
        r#"{head}{svc}
[[policy]]
name = "web"
integrations = ["svc"]
canary_handles = 1

[[policy]]
name = "ops"
integrations = ["{ops}"]
canary_handles = 1
{extra}
"#,
        head = p.config_head(&format!("canary_kill = false\n{broker}")),
        svc = p.exec_rotated(
            "svc",
            keys,
            "verify",
            &format!(
                "grace_secs = 600\nwatch_secs = 1\nretry_base_secs = 1\nretry_cap_secs = 2\n{rotation}\n"
            ),
        ),
    );
    let mut env = agent_env("attack21", &config);
    env.vault_put("svc", "bot", OLD);
    vault(&env);
    env.start_agent();
    env
}

/// Python for a sandbox: the client, `call` (a GET of `path` on the API with `handle`,
/// `step` naming it in the API's log) and `another` (a new handle: `issued`, or the
/// refusal's code).
fn script(env: &TestEnv, keys: &Path, body: &str) -> String {
    hb_tests::provider::client_script(
        &[
            ("SOCK", env.broker_socket().display().to_string()),
            ("STORE", keys.display().to_string()),
        ],
        &format!(
            r#"hb = Client(SOCK)
def call(handle, step, path="/keys"):
    try:
        return hb.request("GET", "https://api.test" + path + "?file=" + STORE + "&step=" + step, handle=handle)
    except BrokerError as e:
        return {{"error": e.code}}
def another(integration, account):
    try:
        hb.handle(integration, account)
        return "issued"
    except BrokerError as e:
        return e.code
{body}"#
        ),
    )
}

/// The attacker: twice a fresh handle and the API asked to echo what it got; then one
/// of its own decoys used.
const BURN: &str = r#"
for i in range(2):
    h = hb.handle("svc", "bot")["handle"]
    r = call(h, "burn", "/echo")
    print(json.dumps({"i": i, "status": r.get("status"), "error": r.get("error")}), flush=True)
    sys.stdin.readline()
h = hb.handle("svc", "bot", execution="exec-burn")["handle"]
decoys = [x["handle"] for x in hb.handles() if x["handle"] != h and x["execution"] == "exec-burn"]
print(json.dumps({"decoys": len(decoys), "decoy": call(decoys[0], "burn_decoy")}), flush=True)
"#;

/// The real leak later: a caller of the account that got its live key out of band (on
/// stdin) sends it.
const THIEF: &str = r#"
key = sys.stdin.readline().strip()
h = hb.handle("svc", "bot")["handle"]
try:
    out = {"status": hb.request("POST", "https://api.test/plain?step=leak", handle=h, body="token=" + key).get("status")}
except BrokerError as e:
    out = {"error": e.code}
print(json.dumps(out), flush=True)
"#;

/// The `detector_action` records of `detector`.
fn actions(env: &TestEnv, detector: &str) -> Vec<Value> {
    env.audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "detector_action" && r["detector"] == detector)
        .collect()
}

/// Waits until `detector` has `n` outcomes and no rotation is open; the journal.
fn settled(env: &TestEnv, detector: &str, n: usize, outputs: &mut String) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let history = env.hb_json(&["rotation", "history"]);
        *outputs += &history.to_string();
        let open = history.as_array().expect("history").iter().any(|r| {
            !matches!(
                r["step"].as_str(),
                Some("retired" | "failed" | "rolled_back" | "aborted")
            )
        });
        if !open && actions(env, detector).len() >= n {
            return history;
        }
        assert!(
            Instant::now() < deadline,
            "{detector} signal {n} did not settle: {history}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A tenant that makes the API echo its shared account's key and uses its own decoy
/// spends only part of the account's compromise budget: a caller sending the live key
/// later that day still has the account rotated as compromised, and the key is revoked
/// at the provider. Baseline 3e3e945: 3 keys minted by the burner, then the leak's
/// signal is `capped` (an alert) and the key stays live.
#[test]
fn echoes_and_decoys_cannot_spend_the_budget_a_real_leak_needs() {
    let p = Provider::start("attack21-cap", DNS_PORT, None);
    let keys: PathBuf = p.key_store("keys.json", &[OLD]);
    let mut env = shared_account(&p, &keys, "");
    let python = hb_tests::python();
    let mut outputs = String::new();

    let mut burn = env.sandbox_piped("web", &[python, "-c", &script(&env, &keys, BURN)]);
    let mut to_burn = burn.stdin.take().expect("stdin");
    let mut from_burn = BufReader::new(burn.stdout.take().expect("stdout"));
    let mut rounds = Vec::new();
    for i in 0..3usize {
        let mut line = String::new();
        from_burn.read_line(&mut line).expect("burn");
        outputs += &line;
        let round: Value = serde_json::from_str(line.trim()).expect("round JSON");
        if i < 2 {
            assert_eq!(round["status"], 200, "the echo is answered: {round}");
            settled(&env, "reflection", i + 1, &mut outputs);
            writeln!(to_burn, "go").expect("to burn");
        } else {
            assert_eq!(round["decoys"], 1, "its decoy: {round}");
            settled(&env, "canary", 1, &mut outputs);
        }
        rounds.push(round);
    }
    let _ = burn.wait();
    let burnt = minted(&keys).len();
    let live = store(&keys);
    eprintln!("figure: the burner minted {burnt} keys; rounds {rounds:?}");
    let stolen = live.last().expect("a live key").clone();

    let mut thief = env.sandbox_piped("ops", &[python, "-c", &script(&env, &keys, THIEF)]);
    let mut to_thief = thief.stdin.take().expect("stdin");
    writeln!(to_thief, "{stolen}").expect("to thief");
    let mut thief_text = String::new();
    BufReader::new(thief.stdout.take().expect("stdout"))
        .read_line(&mut thief_text)
        .expect("thief");
    let _ = thief.wait();
    let got: Value = serde_json::from_str(thief_text.trim()).expect("thief JSON");
    assert_eq!(got["error"], "policy_denied", "the key is not sent: {got}");
    assert!(
        hb_tests::provider::bearers(&p.api, "leak").is_empty(),
        "the call never left"
    );
    let leak_outcomes = |env: &TestEnv| -> Vec<Value> {
        actions(env, "reflection")
            .into_iter()
            .filter(|r| r["policy"] == "ops")
            .map(|r| r["outcome"].clone())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while leak_outcomes(&env).is_empty() {
        assert!(Instant::now() < deadline, "no outcome for the leak");
        std::thread::sleep(Duration::from_millis(100));
    }
    settled(&env, "reflection", 3, &mut outputs);
    let leak = leak_outcomes(&env);
    eprintln!("figure: the leak's signals came to {leak:?}");
    assert!(
        leak.iter().any(|o| o == "rotation_started"),
        "the real leak rotates the account ({burnt} keys minted by the burner first): {leak:?}"
    );
    assert!(
        !store(&keys).contains(&stolen),
        "the leaked key is revoked at the provider"
    );
    assert!(
        burnt < 3,
        "the burner spent less than the whole budget: {burnt}"
    );

    let audit = fs::read_to_string(env.state_dir.join("audit.log")).unwrap_or_default();
    let events = String::from_utf8_lossy(&env.hb(&["events", "--json"]).stdout).into_owned();
    let log = env.agent().log_text();
    assert_no_key_in(
        std::iter::once(OLD.to_owned()).chain(minted(&keys)),
        &[
            ("sandboxes and CLI", &outputs),
            ("thief", &thief_text),
            ("audit", &audit),
            ("events", &events),
            ("log", &log),
        ],
    );
    let _ = fs::remove_dir_all(&p.dir);
}

/// The other tenant: a write and a read before, then (on a line on stdin) a write and
/// five reads.
const TENANT: &str = r#"
h = hb.handle("svc", "bot")["handle"]
def code(f):
    try:
        return f().get("status")
    except BrokerError as e:
        return e.code
post = lambda step: code(lambda: hb.request("POST", "https://api.test/plain?step=" + step, handle=h, body="x"))
get = lambda step: code(lambda: hb.request("GET", "https://api.test/plain?step=" + step, handle=h))
print(json.dumps({"post": post("t_post_before"), "get": get("t_get_before")}), flush=True)
sys.stdin.readline()
print(json.dumps({"post": post("t_post_after"), "gets": [get("t_get_after") for _ in range(5)]}), flush=True)
"#;

/// The attacker: one echo of its own key, then another handle asked for.
const ECHO_ONCE: &str = r#"
h = hb.handle("svc", "bot")["handle"]
out = {"echo": call(h, "echo", "/echo").get("status")}
out["again"] = another("svc", "bot")
print(json.dumps(out), flush=True)
"#;

/// Under `on_reflection = "quarantine"`, a tenant that makes the API echo its own key
/// on a shared account is held (barred), and the other tenant of the account keeps full
/// service: its write and its reads go through. Baseline 3e3e945: the whole account was
/// held, so the other tenant's write was `policy_denied` and its reads `rate_limited`
/// past 3 a minute.
#[test]
fn an_echo_on_a_shared_account_quarantines_only_its_caller() {
    let p = Provider::start("attack21-hold", DNS_PORT, None);
    let keys: PathBuf = p.key_store("keys.json", &[OLD]);
    let mut env = shared_account(
        &p,
        &keys,
        "on_reflection = \"quarantine\"\nquarantine_calls_per_minute = 3",
    );
    let python = hb_tests::python();
    let mut outputs = String::new();

    let mut tenant = env.sandbox_piped("ops", &[python, "-c", &script(&env, &keys, TENANT)]);
    let mut to_tenant = tenant.stdin.take().expect("stdin");
    let mut from_tenant = BufReader::new(tenant.stdout.take().expect("stdout"));
    let mut line = String::new();
    from_tenant.read_line(&mut line).expect("tenant");
    outputs += &line;
    let before: Value = serde_json::from_str(line.trim()).expect("tenant JSON");
    assert_eq!(
        before,
        serde_json::json!({"post": 200, "get": 200}),
        "{before}"
    );

    let attack = env.sandbox("web", &[python, "-c", &script(&env, &keys, ECHO_ONCE)]);
    let attack_text = String::from_utf8_lossy(&attack.stdout).into_owned();
    let got: Value = serde_json::from_str(attack_text.trim()).expect("attack JSON");
    assert_eq!(got["echo"], 200, "the scrubbed echo is answered: {got}");
    assert_eq!(got["again"], "policy_denied", "the echoer is barred: {got}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !actions(&env, "reflection")
        .iter()
        .any(|r| r["outcome"] == "quarantined")
    {
        assert!(Instant::now() < deadline, "no quarantine");
        std::thread::sleep(Duration::from_millis(100));
    }

    writeln!(to_tenant, "go").expect("to tenant");
    line.clear();
    from_tenant.read_line(&mut line).expect("tenant");
    outputs += &line;
    let _ = tenant.wait();
    let after: Value = serde_json::from_str(line.trim()).expect("tenant JSON");
    eprintln!("figure: the other tenant after the echo: {after}");
    assert_eq!(
        after,
        serde_json::json!({"post": 200, "gets": [200, 200, 200, 200, 200]}),
        "the other tenant keeps full service"
    );
    assert_eq!(
        hb_tests::provider::bearers(&p.api, "t_post_after").len(),
        1,
        "its write reached the API"
    );
    let history = env.hb_json(&["rotation", "history"]);
    outputs += &history.to_string();
    assert!(
        history.as_array().is_some_and(Vec::is_empty),
        "nothing rotated: {history}"
    );
    let audit = fs::read_to_string(env.state_dir.join("audit.log")).unwrap_or_default();
    let log = env.agent().log_text();
    assert_no_key_in(
        [OLD],
        &[
            ("sandboxes and CLI", &outputs),
            ("attack", &attack_text),
            ("audit", &audit),
            ("log", &log),
        ],
    );
    let _ = fs::remove_dir_all(&p.dir);
}

/// The other tenant's own integration on the same provider: its admin key lists the
/// organisation's keys (`/keys?list=1`), `svc`'s among them.
const LISTER: &str = r#"
[[integration]]
name = "lister"
auth = "bearer"
hosts = ["api.test"]
methods = ["GET"]
"#;

const ADMIN: &str = "key-admin-5e4d3c2b1a09f8e7d6c5b4a392817160";

/// The attacker: fresh handles and echoes until it is refused (three rounds at most).
const ECHO_TO_THE_CAP: &str = r#"
for i in range(3):
    try:
        h = hb.handle("svc", "bot")["handle"]
        out = {"i": i, "status": call(h, "burn", "/echo").get("status")}
    except BrokerError as e:
        out = {"i": i, "handle": e.code}
    print(json.dumps(out), flush=True)
    sys.stdin.readline()
"#;

/// The other tenant: lists its organisation's keys, then calls again.
const LISTING: &str = r#"
h = hb.handle("lister", "admin")["handle"]
out = {"list": call(h, "list&list=1").get("status")}
again = call(h, "again")
out["again"] = again.get("status", again.get("error"))
out["handle"] = another("lister", "admin")
print(json.dumps(out), flush=True)
"#;

/// A tenant that spends its own account's compromise budget by echoes does not get
/// another tenant barred whose provider's key listing shows that account's key (a
/// `response_unheld` reflection past the budget): the reader is no thief of a key it
/// holds no handle for. Baseline 3e3e945: the reader was ended (its handles revoked, no
/// new one for `suspect_bar_secs`).
#[test]
fn a_spent_budget_does_not_bar_a_reader_of_another_accounts_key() {
    let p = Provider::start("attack21-list", DNS_PORT, None);
    let keys: PathBuf = p.key_store("org.json", &[OLD, ADMIN]);
    let env = agent(&p, "", &keys, "", "lister", LISTER, |env| {
        env.vault_put("lister", "admin", ADMIN);
    });
    let python = hb_tests::python();
    let mut outputs = String::new();

    let mut burn = env.sandbox_piped(
        "web",
        &[python, "-c", &script(&env, &keys, ECHO_TO_THE_CAP)],
    );
    let mut to_burn = burn.stdin.take().expect("stdin");
    let mut from_burn = BufReader::new(burn.stdout.take().expect("stdout"));
    for i in 0..3usize {
        let mut line = String::new();
        from_burn.read_line(&mut line).expect("burn");
        outputs += &line;
        let round: Value = serde_json::from_str(line.trim()).expect("round JSON");
        if round["status"] == 200 {
            settled(&env, "reflection", i + 1, &mut outputs);
        }
        writeln!(to_burn, "go").expect("to burn");
    }
    let _ = burn.wait();
    eprintln!("figure: the echoes minted {} keys", minted(&keys).len());

    let out = env.sandbox("ops", &[python, "-c", &script(&env, &keys, LISTING)]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "reader: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_str(text.trim()).expect("reader JSON");
    eprintln!("figure: the reader got {got}");
    assert_eq!(got["list"], 200, "{got}");
    let listing = hb_tests::provider::bearers(&p.api, "list&list=1");
    assert_eq!(listing.len(), 1, "the listing was made");
    let unheld = env.audit_records().into_iter().any(|r| {
        r["kind"] == "detector" && r["seen"] == "response_unheld" && r["account"] == "bot"
    });
    assert!(unheld, "the listing showed svc's key: a signal");
    // Its action (capped: the budget is spent) is recorded before the reader is looked
    // for among the ended callers.
    settled(&env, "reflection", 4, &mut outputs);
    let ended: Vec<Value> = env
        .audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "caller_ended" && r["caller"]["policy"] == "ops")
        .collect();
    assert!(ended.is_empty(), "the reader is not ended: {ended:?}");
    assert_eq!(got["again"], 200, "its handle still works: {got}");
    assert_eq!(got["handle"], "issued", "it still gets handles: {got}");

    let audit = fs::read_to_string(env.state_dir.join("audit.log")).unwrap_or_default();
    assert_no_key_in(
        [OLD.to_owned(), ADMIN.to_owned()]
            .into_iter()
            .chain(minted(&keys)),
        &[
            ("sandboxes and CLI", &outputs),
            ("reader", &text),
            ("audit", &audit),
        ],
    );
    let _ = fs::remove_dir_all(&p.dir);
}

/// The attacker: two calls whose answers take its two places of text work for a few
/// seconds (10 MB sanitized), then, while they run, the API asked to echo its key.
const ECHO_BEHIND_WORK: &str = r#"
import threading
h = hb.handle("svc", "bot")["handle"]
def big():
    try:
        Client(SOCK).request("GET", "https://api.test/big?n=10000000&step=big", handle=h, sanitize="flag")
    except BrokerError:
        pass
ts = [threading.Thread(target=big) for _ in range(2)]
[t.start() for t in ts]
time.sleep(0.5)
r = call(h, "echo", "/echo")
print(json.dumps({"echo": r.get("status"), "error": r.get("error")}), flush=True)
[t.join() for t in ts]
"#;

/// An echo of the key a call carried is a `reflection` even when the call times out
/// waiting for a place of text work: the upstream saw the key and sent it back whatever
/// the caller is answered.
#[test]
fn an_echo_that_times_out_waiting_for_its_scrub_is_still_a_reflection() {
    let p = Provider::start("attack21-late", DNS_PORT, None);
    let keys: PathBuf = p.key_store("keys.json", &[OLD]);
    let env = agent(
        &p,
        "request_timeout_secs = 1",
        &keys,
        "hold_secs = 0",
        "svc",
        "",
        |_| {},
    );
    let python = hb_tests::python();
    let out = env.sandbox(
        "web",
        &[python, "-c", &script(&env, &keys, ECHO_BEHIND_WORK)],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("figure: the echo call: {text}");
    assert_eq!(
        hb_tests::provider::bearers(&p.api, "echo").len(),
        1,
        "the echo reached the API with the key"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let reflected = |env: &TestEnv| {
        env.audit_records()
            .into_iter()
            .any(|r| r["kind"] == "detector" && r["detector"] == "reflection")
    };
    while !reflected(&env) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        reflected(&env),
        "the echo of the key was never a reflection: {text}"
    );
    let _ = fs::remove_dir_all(&p.dir);
}
