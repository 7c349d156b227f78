//! Rotation through a provider's HTTP API (`[integration.rotation.http]`), against a
//! fake provider: an HTTPS API (`provider.test`) that mints and revokes keys, honours
//! `Idempotency-Key`, and has outage modes (refused, 503, hang), beside an API
//! (`api.test`) that accepts exactly the keys the provider holds. The agent calls the
//! provider through its own validating outbound path, authenticated with another vault
//! credential (the provider's admin key). Handles issued before a rotation keep
//! working through it; a provider outage fails no agent request, opens the rotator's
//! circuit breaker and closes it when the provider is back; a create retried after a
//! crash or a timeout mints one key; an expiry that nears while the provider is down
//! raises `deadline_at_risk` once. No key appears in any log, event, audit record or
//! CLI output. Everything lives on `lo` in the test's own network namespace.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use hb_tests::{
    TestEnv, private_netns,
    upstream::{Dnsmasq, FakeProvider, RecordingServer, TestCa, header},
};
use serde_json::Value;

const DNS_PORT: u16 = 5402;
const OLD: &str = "key-old-5a5b5c5d5e5f60616263646566676869";
const ADMIN: &str = "adm-0a1b2c3d4e5f60718293a4b5c6d7e8f9";

/// One test's provider, API, resolver and agent.
struct World {
    dir: PathBuf,
    api: RecordingServer,
    provider: FakeProvider,
    _dns: Dnsmasq,
    env: TestEnv,
}

/// The provider, its API and an agent config rotating `svc` through the provider (its
/// test answered 403 while the file `hold` exists; grace `grace_secs`, watch 1 s, retries from 1 s, a 2 s timeout, the breaker open
/// after 3 failures for 2 s then 4 s); `extra` goes into `[integration.rotation]`.
/// The vault holds `svc/bot` (OLD, expiring as `expires` says) and `provider/admin`.
fn world(name: &str, grace_secs: u64, extra: &str, expires: Option<&str>) -> World {
    private_netns(&["203.0.113.10", "203.0.113.20"]);
    let dir = std::env::temp_dir().join(format!("hb-{name}-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("dir");
    let ca = TestCa::new(&dir, "trusted");
    let api_cert = ca.issue("api", &["api.test"]);
    let provider_cert = ca.issue("provider", &["provider.test"]);
    let api = RecordingServer::start(&dir, "203.0.113.10", 443, Some(&api_cert));
    let provider = FakeProvider::start(
        &dir.join("provider"),
        "203.0.113.20",
        443,
        &provider_cert,
        ADMIN,
        &[OLD],
        5.0,
    );
    let dns = Dnsmasq::start(
        "127.0.0.1",
        DNS_PORT,
        &[
            ("api.test", &["203.0.113.10"]),
            ("provider.test", &["203.0.113.20"]),
        ],
        &[],
        60,
    );
    let config = format!(
        r#"
[broker]
socket_mode = "0666"
extra_ca_file = "{ca}"

[dns]
listen = "127.0.0.1:5300"
upstreams = ["127.0.0.1:{DNS_PORT}"]

[egress]
exception_cidrs = ["203.0.113.0/24"]

[[integration]]
name = "svc"
auth = "bearer"
hosts = ["api.test"]
verify_url = "https://api.test/keys?file={keys}&hold={hold}&step=verify"

[integration.rotation]
grace_secs = {grace_secs}
watch_secs = 1
retry_base_secs = 1
retry_cap_secs = 2
timeout_secs = 2
breaker_failures = 3
breaker_open_secs = 2
breaker_open_cap_secs = 4
{extra}

[integration.rotation.http]
url = "https://provider.test/v1/keys"
auth = {{ integration = "provider", account = "admin" }}
secret_pointer = "/data/secret"
expires_pointer = "/data/expires"

[[integration]]
name = "provider"
auth = "bearer"
hosts = ["provider.test"]
methods = ["POST"]

[[policy]]
name = "web"
integrations = ["svc"]
"#,
        ca = ca.cert.display(),
        keys = provider.keys_path().display(),
        hold = dir.join("hold").display(),
    );
    let env = TestEnv::new(name, &config);
    let init = env.hb(&["vault", "init"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    match expires {
        Some(when) => {
            env.vault_with_secret(&["put", "-i", "svc", "-a", "bot", "--expires", when], OLD)
        }
        None => env.vault_put("svc", "bot", OLD),
    }
    env.vault_put("provider", "admin", ADMIN);
    World {
        dir,
        api,
        provider,
        _dns: dns,
        env,
    }
}

/// A sandbox's client: one call with its `svc` handle per line it reads (the line is
/// the call's step name; `quit` ends it), printing each status.
const STEPPER: &str = r#"
hb = Client(SOCK)
h = hb.handle("svc", "bot")["handle"]
print("ready", flush=True)
for line in sys.stdin:
    step = line.strip()
    if step == "quit":
        break
    try:
        print(hb.request("GET", "https://api.test/keys?file=" + STORE + "&step=" + step, handle=h)["status"], flush=True)
    except BrokerError as e:
        print(e.code, flush=True)
"#;

/// A sandbox's client calling the API with its `svc` handle every 100 ms until a line
/// arrives on stdin; then it prints every status as a JSON list.
const LOOPER: &str = r#"
import threading
hb = Client(SOCK)
h = hb.handle("svc", "bot")["handle"]
stop, got = threading.Event(), []
def loop():
    while not stop.is_set():
        try:
            got.append(hb.request("GET", "https://api.test/keys?file=" + STORE + "&step=loop", handle=h)["status"])
        except BrokerError as e:
            got.append(e.code)
        time.sleep(0.1)
t = threading.Thread(target=loop)
t.start()
print("ready", flush=True)
sys.stdin.readline()
stop.set()
t.join()
print(json.dumps(got), flush=True)
"#;

/// Runs `client` in a sandbox of policy `web` with the broker socket and key store.
fn sandbox_client(w: &World, client: &str) -> std::process::Child {
    let prelude = hb_tests::py_client_prelude();
    let script = format!(
        "import sys, json, time\n{prelude}from hb_client import Client, BrokerError\nSOCK = {:?}\nSTORE = {:?}\n{client}",
        w.env.broker_socket().display().to_string(),
        w.provider.keys_path().display().to_string(),
    );
    w.env
        .sandbox_piped("web", &[hb_tests::python(), "-c", &script])
}

fn trigger(env: &TestEnv, wait: bool) -> Value {
    let mut args = vec!["rotation", "trigger", "-i", "svc", "-a", "bot", "--json"];
    if wait {
        args.push("--wait");
    }
    let out = env.hb(&args);
    assert!(
        out.status.success(),
        "trigger: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("rotation JSON")
}

fn wait_for_step(env: &TestEnv, id: &str, steps: &[&str], secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let h = env.hb_json(&["rotation", "history"]);
        if let Some(r) = h
            .as_array()
            .and_then(|all| all.iter().find(|r| r["id"] == id))
            && steps.iter().any(|s| r["step"] == *s)
        {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "rotation {id} never reached {steps:?}: {h}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The events the agent wrote (`state_dir/events.jsonl`) whose reason is `reason`.
fn events(env: &TestEnv, reason: &str) -> Vec<Value> {
    fs::read_to_string(env.state_dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["reason"] == reason)
        .collect()
}

fn wait_events(env: &TestEnv, reason: &str, n: usize, secs: u64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = events(env, reason);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} {reason} events after {secs} s: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sha256_hex(text: &str) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_owned()
}

/// Everything the agent and the CLI wrote that a key must never be in.
fn outputs(env: &mut TestEnv, cli: &str) -> Vec<(&'static str, String)> {
    let state = env.state_dir.clone();
    let read = |f: &str| fs::read_to_string(state.join(f)).unwrap_or_default();
    let status = env.hb(&["rotation", "status", "--json"]);
    let history = env.hb(&["rotation", "history", "--json"]);
    vec![
        ("log", env.agent().log_text()),
        ("audit", read("audit.log")),
        ("events", read("events.jsonl")),
        ("breakers", read("breakers.json")),
        ("detectors", read("detectors.json")),
        (
            "status",
            String::from_utf8_lossy(&status.stdout).into_owned(),
        ),
        (
            "history",
            String::from_utf8_lossy(&history.stdout).into_owned(),
        ),
        ("cli", cli.to_owned()),
    ]
}

fn assert_no_key(outputs: &[(&'static str, String)], keys: &[&str]) {
    for key in keys {
        for (name, text) in outputs {
            assert!(!text.contains(key), "a key ({}…) in the {name}", &key[..8]);
        }
    }
}

/// The bearer each API request of `step` carried.
fn bearers(api: &RecordingServer, step: &str) -> Vec<String> {
    api.requests()
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
}

#[test]
fn the_http_rotator_mints_through_the_providers_api_and_revokes_the_old_key_at_grace_end() {
    let mut w = world("rothttp", 3, "", None);
    w.env.start_agent();
    let mut client = sandbox_client(&w, STEPPER);
    let mut to_client = client.stdin.take().expect("stdin");
    let mut from_client = BufReader::new(client.stdout.take().expect("stdout"));
    let mut ready = String::new();
    from_client.read_line(&mut ready).expect("client output");
    assert_eq!(ready.trim(), "ready");
    let mut call = |step: &str| -> String {
        writeln!(to_client, "{step}").expect("to client");
        let mut line = String::new();
        from_client.read_line(&mut line).expect("client output");
        line.trim().to_owned()
    };
    assert_eq!(call("before"), "200");
    let mut cli = String::new();
    let rotation = trigger(&w.env, true);
    cli += &rotation.to_string();
    let id = rotation["id"].as_str().expect("id").to_owned();
    assert!(
        matches!(
            rotation["step"].as_str(),
            Some("finished" | "watched" | "retired")
        ),
        "{rotation}"
    );

    // One create at the provider: authenticated with the admin key, the rotation's
    // idempotency key, and no key in its body.
    let creates = w.provider.calls("create");
    assert_eq!(creates.len(), 1, "{creates:?}");
    let create = &creates[0];
    assert_eq!(
        header(create, "authorization"),
        Some(format!("Bearer {ADMIN}").as_str())
    );
    assert_eq!(
        header(create, "idempotency-key"),
        Some(format!("{id}:create").as_str())
    );
    let body: Value = serde_json::from_str(create["body"].as_str().expect("body")).expect("json");
    assert_eq!(
        (
            body["rotation"].as_str(),
            body["integration"].as_str(),
            body["account"].as_str()
        ),
        (Some(id.as_str()), Some("svc"), Some("bot")),
        "{body}"
    );
    assert!(
        body.get("secret").is_none(),
        "the old key was sent: send_old_secret is off"
    );
    let minted = w.provider.minted();
    assert_eq!(minted.len(), 1);
    let new = minted[0].clone();
    assert_eq!(
        w.provider.live(),
        [OLD, new.as_str()],
        "both live in the grace"
    );
    assert_eq!(
        call("after"),
        "200",
        "the handle issued before carries the new key"
    );

    // At the grace end the provider revokes the old key, named by its hash.
    let done = wait_for_step(&w.env, &id, &["retired"], 60);
    cli += &done.to_string();
    assert_eq!(
        w.provider.live(),
        [new.as_str()],
        "the old key revoked there"
    );
    let revokes = w.provider.calls("revoke");
    assert_eq!(revokes.len(), 1, "{revokes:?}");
    assert_eq!(
        header(&revokes[0], "idempotency-key"),
        Some(format!("{id}:revoke:old").as_str())
    );
    let body: Value =
        serde_json::from_str(revokes[0]["body"].as_str().expect("body")).expect("json");
    assert_eq!(body["key_sha256"], sha256_hex(OLD).as_str(), "{body}");
    assert!(body.get("secret").is_none());
    assert_eq!(
        call("retired"),
        "200",
        "the handle works on after the old key is gone"
    );
    call("quit");
    let out = client.wait_with_output().expect("client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(bearers(&w.api, "before"), [OLD]);
    assert_eq!(bearers(&w.api, "after"), [new.as_str()]);
    assert_eq!(bearers(&w.api, "retired"), [new.as_str()]);
    let verified = bearers(&w.api, "verify");
    assert!(
        !verified.is_empty() && verified.iter().all(|k| *k == new),
        "the new key was tested before use"
    );
    let outs = outputs(&mut w.env, &cli);
    assert!(
        outs[1].1.contains("\"rotation\""),
        "rotation steps are audited"
    );
    assert_no_key(&outs, &[OLD, ADMIN, &new]);
    let _ = fs::remove_dir_all(&w.dir);
}

/// The provider refuses connections, then answers 503, then recovers. The sandbox's
/// calls through its handle all succeed meanwhile; the rotator's breaker opens (the
/// rotation stops calling) and closes when the provider answers; retries never come
/// faster than `retry_base_secs`; the rotation completes; and the credential's near
/// expiry raises one `deadline_at_risk` for the rotation however often it retries.
#[test]
fn a_provider_outage_opens_the_breaker_fails_no_call_and_the_rotation_completes_after_it() {
    let mut w = world("rothttpdown", 1, "deadline_margin_secs = 86400", Some("2h"));
    w.provider.set_mode("503");
    w.env.start_agent();
    let mut client = sandbox_client(&w, LOOPER);
    let mut to_client = client.stdin.take().expect("stdin");
    let mut from_client = BufReader::new(client.stdout.take().expect("stdout"));
    let mut line = String::new();
    from_client.read_line(&mut line).expect("client output");
    assert_eq!(line.trim(), "ready");

    // Expiring within the margin and not replaced: alerted at once, with no rotation.
    let at_risk = wait_events(&w.env, "deadline_at_risk", 1, 10);
    assert_eq!(at_risk[0]["name"], "svc/bot", "{at_risk:?}");
    assert!(
        at_risk[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expires ") && d.ends_with("rotation none")),
        "{at_risk:?}"
    );

    let rotation = trigger(&w.env, false);
    let id = rotation["id"].as_str().expect("id").to_owned();
    let opened = wait_events(&w.env, "rotator_breaker_open", 1, 30);
    assert_eq!(opened[0]["name"], "svc", "{opened:?}");
    let status = w.env.hb_json(&["rotation", "status"]);
    assert!(
        matches!(
            status["breakers"]["svc"]["state"].as_str(),
            Some("open" | "half_open")
        ),
        "the breaker in rotation status: {status}"
    );
    assert!(
        status["breakers"]["svc"]["consecutive_failures"].as_u64() >= Some(3),
        "{status}"
    );
    // Now refused: the half-open trial fails and the breaker opens again, longer.
    w.provider.stop();
    wait_events(&w.env, "rotator_breaker_open", 2, 30);
    let open = wait_for_step(&w.env, &id, &["begun"], 5);
    assert_eq!(open["step"], "begun", "no key while the provider is down");
    // Back: the next trial succeeds, the breaker closes, the rotation completes.
    w.provider.set_mode("ok");
    w.provider.restart();
    let closed = wait_events(&w.env, "rotator_breaker_closed", 1, 30);
    assert_eq!(closed[0]["name"], "svc");
    let done = wait_for_step(&w.env, &id, &["finished", "watched", "retired"], 30);
    writeln!(to_client, "stop").expect("to client");
    line.clear();
    from_client.read_line(&mut line).expect("client output");
    let statuses: Vec<Value> = serde_json::from_str(line.trim()).expect("statuses");
    let out = client.wait_with_output().expect("client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        statuses.len() >= 20,
        "the client called all along: {}",
        statuses.len()
    );
    assert!(
        statuses.iter().all(|s| s == 200),
        "an agent request failed during the outage: {statuses:?}"
    );

    // Every create the provider saw (503s and the one that worked) carried the same
    // idempotency key, never less than retry_base_secs (1 s) after the one before.
    let creates = w.provider.calls("create");
    assert!(creates.len() >= 4, "{} creates", creates.len());
    assert!(
        creates
            .iter()
            .all(|c| { header(c, "idempotency-key") == Some(format!("{id}:create").as_str()) })
    );
    let times: Vec<f64> = creates
        .iter()
        .map(|c| c["t"].as_f64().expect("t"))
        .collect();
    let gaps: Vec<f64> = times.windows(2).map(|p| p[1] - p[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= 0.95),
        "a retry came faster than the base interval: {gaps:?}"
    );
    assert_eq!(w.provider.minted().len(), 1, "one key minted");
    // Once for the rotation, however many retries it took.
    let at_risk = events(&w.env, "deadline_at_risk");
    let for_rotation = at_risk
        .iter()
        .filter(|e| e["detail"].as_str().is_some_and(|d| d.contains(&id)))
        .count();
    assert_eq!(for_rotation, 1, "{at_risk:?}");
    assert_eq!(
        at_risk.len(),
        2,
        "once with no rotation, once for it: {at_risk:?}"
    );
    let status = w.env.hb_json(&["rotation", "status"]);
    assert_eq!(status["breakers"]["svc"]["state"], "closed", "{status}");
    let new = w.provider.minted()[0].clone();
    let outs = outputs(&mut w.env, &done.to_string());
    assert_no_key(&outs, &[OLD, ADMIN, &new]);
    let _ = fs::remove_dir_all(&w.dir);
}

/// The agent is killed (-9) after the provider minted the key and before the PENDING
/// row was committed; after a restart it asks again with the same idempotency key and
/// gets the same key: one key at the provider. Then a create whose answer comes after
/// the rotator's timeout is retried with the same key: again one key.
#[test]
fn a_create_retried_after_a_crash_or_a_timeout_mints_one_key_at_the_provider() {
    let mut w = world("rothttpidem", 1, "", None);
    w.env.start_agent_with(
        "info",
        &[("HB_VAULT_TEST_KILL_AT", "rotation-after-pending")],
    );
    let _ = w.env.hb(&["rotation", "trigger", "-i", "svc", "-a", "bot"]);
    let status = w.env.wait_agent_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(
            |s| std::os::unix::process::ExitStatusExt::signal(&s) == Some(libc::SIGKILL)
        ),
        "the agent was not killed at its kill point: {status:?}"
    );
    assert_eq!(
        w.provider.minted().len(),
        1,
        "the provider minted before the crash"
    );
    let open = w.env.hb_json(&["rotation", "status"])["open"].clone();
    let id = open[0]["id"].as_str().expect("an open rotation").to_owned();
    assert_eq!(open[0]["step"], "begun", "nothing recorded: {open}");
    w.env.start_agent();
    let done = wait_for_step(&w.env, &id, &["retired"], 60);
    let creates = w.provider.calls("create");
    assert_eq!(creates.len(), 2, "asked again after the restart");
    assert!(
        creates
            .iter()
            .all(|c| { header(c, "idempotency-key") == Some(format!("{id}:create").as_str()) })
    );
    let minted = w.provider.minted();
    assert_eq!(minted.len(), 1, "one key minted for two creates");
    assert_eq!(w.provider.live(), [minted[0].as_str()]);
    let audit = fs::read_to_string(w.env.state_dir.join("audit.log")).unwrap_or_default();
    assert!(
        audit.contains("create_called_again_same_idempotency_key"),
        "the second create is reported"
    );

    // The provider mints, then hangs past the 2 s timeout; the retry gets the same key.
    w.provider.set_mode("hang");
    let second = trigger(&w.env, false);
    let id2 = second["id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.provider.minted().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the hanging create never arrived"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    w.provider.set_mode("ok");
    let done2 = wait_for_step(&w.env, &id2, &["retired"], 60);
    let history = w.env.hb_json(&["rotation", "history"]);
    let creates2: Vec<Value> = w
        .provider
        .calls("create")
        .into_iter()
        .filter(|c| header(c, "idempotency-key") == Some(format!("{id2}:create").as_str()))
        .collect();
    assert_eq!(creates2.len(), 2, "the timed-out create was retried once");
    let minted = w.provider.minted();
    assert_eq!(
        minted.len(),
        2,
        "one key for the second rotation: {}",
        minted.len()
    );
    assert_eq!(w.provider.live(), [minted[1].as_str()]);
    let before = bearers(&w.api, "verify");
    assert!(
        before.iter().any(|k| *k == minted[1]),
        "the key it tested is the one minted"
    );
    let outs = outputs(&mut w.env, &format!("{done}{done2}{history}"));
    assert_no_key(&outs, &[OLD, ADMIN, &minted[0], &minted[1]]);
    let _ = fs::remove_dir_all(&w.dir);
}

/// An operator aborts a rotation whose new key is held PENDING (its test answered 403):
/// the CLI revokes that key at the provider itself — through an outbound path of its
/// own, authenticated with the admin key from the vault — and the old key stays.
#[test]
fn an_abort_revokes_the_pending_key_at_the_provider_from_the_cli() {
    let mut w = world("rothttpabort", 60, "", None);
    fs::write(w.dir.join("hold"), "").expect("hold");
    w.env.start_agent();
    let id = trigger(&w.env, false)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    wait_for_step(&w.env, &id, &["created"], 30);
    let minted = w.provider.minted();
    assert_eq!(minted.len(), 1);
    assert_eq!(w.provider.live(), [OLD, minted[0].as_str()]);
    let aborted = w.env.hb(&["rotation", "abort", &id, "--json"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&aborted.stdout),
        String::from_utf8_lossy(&aborted.stderr)
    );
    assert!(aborted.status.success(), "{said}");
    assert!(
        !said.contains("warning"),
        "the provider did not revoke: {said}"
    );
    assert_eq!(
        w.provider.live(),
        [OLD],
        "the pending key revoked at the provider"
    );
    let revokes = w.provider.calls("revoke");
    assert_eq!(revokes.len(), 1, "{revokes:?}");
    assert_eq!(
        header(&revokes[0], "idempotency-key"),
        Some(format!("{id}:revoke:new").as_str())
    );
    assert_eq!(
        header(&revokes[0], "authorization"),
        Some(format!("Bearer {ADMIN}").as_str())
    );
    let outs = outputs(&mut w.env, &said);
    assert_no_key(&outs, &[OLD, ADMIN, &minted[0]]);
    let _ = fs::remove_dir_all(&w.dir);
}
