//! Rotation through a provider's HTTP API (`[integration.rotation.http]`), against a
//! fake provider: an HTTPS API (`provider.test`) that mints and revokes keys, honours
//! `Idempotency-Key`, and has outage modes (refused, 503, hang), beside an API
//! (`api.test`) that accepts exactly the keys the provider holds. The agent calls the
//! provider through its own validating outbound path, authenticated with another vault
//! credential (the provider's admin key). Handles issued before a rotation keep
//! working through it; a provider outage fails no agent request, opens the rotator's
//! circuit breaker and closes it when the provider is back; a create retried after a
//! crash or a timeout mints one key; an expiry that nears while the provider is down
//! raises `deadline_at_risk` once; six hours of outage on the rotation engine's clock
//! (run faster by a debug build's test seam) — the provider answering 503, refusing
//! connections, or accepting requests and never answering — pace the retries and fail
//! no call; a
//! restart keeps the breaker open and the recorded backoff; a slow verify probe is never
//! doubled; a key that dies while its rotation is open holds its calls for that
//! rotation. No key appears in any log, event, audit record or
//! CLI output. Everything lives on `lo` in the test's own network namespace.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout},
    time::{Duration, Instant},
};

use hb_tests::{
    TestEnv,
    provider::{KeyApi, Provider, agent_env, bearers, client_script, wait_for_step},
    upstream::{Dnsmasq, FakeProvider, RecordingServer, header},
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
    world_with(name, grace_secs, extra, expires, "", "")
}

/// [`world`], with `broker` added to `[broker]` and `integration` to `svc`'s
/// `[[integration]]`.
fn world_with(
    name: &str,
    grace_secs: u64,
    extra: &str,
    expires: Option<&str>,
    broker: &str,
    integration: &str,
) -> World {
    let tuning = format!(
        "grace_secs = {grace_secs}\nwatch_secs = 1\nretry_base_secs = 1\nretry_cap_secs = 2\n\
         timeout_secs = 2\nbreaker_failures = 3\nbreaker_open_secs = 2\n\
         breaker_open_cap_secs = 4\n{extra}"
    );
    world_tuned(name, &tuning, expires, broker, integration, "")
}

/// [`world_with`], with `tuning` as the whole of `[integration.rotation]` (but its
/// `http` table) and `verify_query` added to the verify URL's query.
fn world_tuned(
    name: &str,
    tuning: &str,
    expires: Option<&str>,
    broker: &str,
    integration: &str,
    verify_query: &str,
) -> World {
    let mut p = Provider::start(
        name,
        DNS_PORT,
        Some(KeyApi {
            admin: ADMIN,
            keys: &[OLD],
            hang_secs: 5.0,
        }),
    );
    let provider = p.keys_api.take().expect("the key API");
    let config = format!(
        r#"{head}
[[integration]]
name = "svc"
auth = "bearer"
hosts = ["api.test"]
verify_url = "https://api.test/keys?file={keys}&hold={hold}{verify_query}&step=verify"
{integration}

[integration.rotation]
{tuning}

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
        head = p.config_head(broker),
        keys = provider.keys_path().display(),
        hold = p.dir.join("hold").display(),
    );
    let env = agent_env(name, &config);
    match expires {
        Some(when) => {
            env.vault_with_secret(&["put", "-i", "svc", "-a", "bot", "--expires", when], OLD)
        }
        None => env.vault_put("svc", "bot", OLD),
    }
    env.vault_put("provider", "admin", ADMIN);
    World {
        dir: p.dir,
        api: p.api,
        provider,
        _dns: p.dns,
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

/// Stops a [`LOOPER`]: every status it got.
fn stop_looper(mut client: Client) -> Vec<Value> {
    client.say("stop");
    let statuses = client.answer();
    client.finish();
    statuses.as_array().expect("statuses").clone()
}

/// A client script running in a sandbox of policy `web`: the test writes it lines and
/// reads what it prints, line by line.
struct Client {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
}

impl Client {
    /// Runs `body` with `args`, `SOCK` (the broker socket), `STORE` (the key store) and
    /// `consts` defined; its first line must be `ready`.
    fn start(w: &World, body: &str, consts: &[(&str, String)], args: &[&str], ready: &str) -> Self {
        let mut all = vec![
            ("SOCK", w.env.broker_socket().display().to_string()),
            ("STORE", w.provider.keys_path().display().to_string()),
        ];
        all.extend_from_slice(consts);
        let script = client_script(&all, body);
        let mut cmd = vec![hb_tests::python(), "-c", &script];
        cmd.extend_from_slice(args);
        let mut child = w.env.sandbox_piped("web", &cmd);
        let to = child.stdin.take().expect("stdin");
        let from = BufReader::new(child.stdout.take().expect("stdout"));
        let mut client = Self { child, to, from };
        assert_eq!(client.line(), ready, "the client's first line");
        client
    }

    /// Writes `line` to it.
    fn say(&mut self, line: &str) {
        writeln!(self.to, "{line}").expect("to client");
    }

    /// The next line it printed, trimmed.
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.from.read_line(&mut line).expect("client output");
        line.trim().to_owned()
    }

    /// The next line it printed, as JSON.
    fn answer(&mut self) -> Value {
        let line = self.line();
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("client said {line:?}"))
    }

    /// Closes its stdin and waits for it: it must exit 0.
    fn finish(self) {
        let Self { child, to, .. } = self;
        drop(to);
        let out = child.wait_with_output().expect("client");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Triggers a rotation of `svc`/`bot` (waiting for its end with `wait`); its record.
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

/// Triggers a rotation of `svc`/`bot` without waiting; its id.
fn begin(env: &TestEnv) -> String {
    trigger(env, false)["id"].as_str().expect("id").to_owned()
}

/// Waits up to `secs` for `done`; `what` names it in the failure.
fn wait_until(what: &str, secs: u64, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
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

impl World {
    /// The test's end: none of `keys` in anything the agent or the CLI wrote (`cli`
    /// being what the test read from the CLI); the test's folder removed.
    fn finish(mut self, cli: &str, keys: &[&str]) {
        let outs = outputs(&mut self.env, cli);
        assert_no_key(&outs, keys);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_http_rotator_mints_through_the_providers_api_and_revokes_the_old_key_at_grace_end() {
    let mut w = world("rothttp", 3, "", None);
    w.env.start_agent();
    let mut client = Client::start(&w, STEPPER, &[], &[], "ready");
    let mut call = |step: &str| -> String {
        client.say(step);
        client.line()
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
    assert_eq!(
        body["key_sha256"],
        hb_tests::sha256_hex(OLD).as_str(),
        "{body}"
    );
    assert!(body.get("secret").is_none());
    assert_eq!(
        call("retired"),
        "200",
        "the handle works on after the old key is gone"
    );
    client.say("quit");
    client.finish();

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
    w.finish(&cli, &[OLD, ADMIN, &new]);
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
    let client = Client::start(&w, LOOPER, &[], &[], "ready");

    // Expiring within the margin and not replaced: alerted at once, with no rotation.
    let at_risk = wait_events(&w.env, "deadline_at_risk", 1, 10);
    assert_eq!(at_risk[0]["name"], "svc/bot", "{at_risk:?}");
    assert!(
        at_risk[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expires ") && d.ends_with("rotation none")),
        "{at_risk:?}"
    );

    let id = begin(&w.env);
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
    let statuses = stop_looper(client);
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
    w.finish(&done.to_string(), &[OLD, ADMIN, &new]);
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
    let id2 = begin(&w.env);
    wait_until("the hanging create never arrived", 20, || {
        w.provider.minted().len() >= 2
    });
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
    w.finish(
        &format!("{done}{done2}{history}"),
        &[OLD, ADMIN, &minted[0], &minted[1]],
    );
}

/// An operator aborts a rotation whose new key is held PENDING (its test answered 403):
/// the CLI revokes that key at the provider itself — through an outbound path of its
/// own, authenticated with the admin key from the vault — and the old key stays.
#[test]
fn an_abort_revokes_the_pending_key_at_the_provider_from_the_cli() {
    let mut w = world("rothttpabort", 60, "", None);
    fs::write(w.dir.join("hold"), "").expect("hold");
    w.env.start_agent();
    let id = begin(&w.env);
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
    w.finish(&said, &[OLD, ADMIN, &minted[0]]);
}

/// A sandbox's client: a call with its `svc` handle (`before`), then `ready`; at the
/// next line, `N` threads (each its own connection to the broker) make one call each
/// at the same moment (step `storm`), and it prints what each got as a JSON list of
/// `[status, credential_error]`.
const STORM: &str = r#"
import threading
N = int(sys.argv[1])
h = Client(SOCK).handle("svc", "bot")["handle"]
first = Client(SOCK).request("GET", "https://api.test/keys?file=" + STORE + "&step=before", handle=h)["status"]
clients = [Client(SOCK) for _ in range(N)]
for c in clients:
    c.call("GET", "/v1/whoami")
print("ready %d" % first, flush=True)
sys.stdin.readline()
barrier, got = threading.Barrier(N), [None] * N
def call(i):
    barrier.wait()
    try:
        r = clients[i].request("GET", "https://api.test/keys?file=" + STORE + "&step=storm", handle=h)
        got[i] = [r["status"], r.get("credential_error")]
    except BrokerError as e:
        got[i] = [e.code, None]
threads = [threading.Thread(target=call, args=(i,)) for i in range(N)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(got), flush=True)
"#;

/// Runs [`STORM`] with `n` threads, revokes the key at the provider out of band, then
/// lets the threads call: what they got (as printed, and parsed) and how long it took.
fn storm_after_revocation(w: &World, n: usize) -> (String, Vec<Value>, Duration) {
    let mut client = Client::start(w, STORM, &[], &[&n.to_string()], "ready 200");
    w.provider.revoke_all_out_of_band();
    let started = Instant::now();
    client.say("go");
    let line = client.line();
    let took = started.elapsed();
    client.finish();
    let got: Vec<Value> = serde_json::from_str(&line).expect("statuses");
    assert_eq!(got.len(), n);
    (line, got, took)
}

/// Out-of-band revocation: the key is revoked at the provider's console and hb is not
/// told. A hundred calls at once through a handle issued before all get a 401; they
/// share one verify probe (the provider's API sees the dead key at `verify_url` once),
/// which starts one rotation (one create at the provider); each call is held until the
/// new key is active and sent once more with it: every one succeeds after one retry.
#[test]
fn a_hundred_calls_refused_after_an_out_of_band_revocation_share_one_probe_and_one_rotation_and_all_succeed()
 {
    let mut w = world_with(
        "rotheld",
        1,
        "",
        None,
        "max_connections_per_caller = 128",
        "",
    );
    w.env.start_agent();
    let (line, got, took) = storm_after_revocation(&w, 100);
    let failed: Vec<&Value> = got.iter().filter(|g| g[0] != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of 100 calls failed after the revocation: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    eprintln!("100 held calls answered in {took:?}");

    // From the provider's side: one probe with the dead key, one key minted.
    let probes = bearers(&w.api, "verify")
        .iter()
        .filter(|k| *k == OLD)
        .count();
    assert_eq!(probes, 1, "one verify probe for a hundred 401s");
    assert_eq!(w.provider.calls("create").len(), 1, "one create");
    let minted = w.provider.minted();
    assert_eq!(minted.len(), 1, "one rotation at the provider");
    let new = minted[0].clone();
    // Each call went out twice: with the dead key, then once with the new one.
    let storm = bearers(&w.api, "storm");
    assert_eq!(
        storm.iter().filter(|k| *k == OLD).count(),
        100,
        "first tries"
    );
    assert_eq!(
        storm.iter().filter(|k| **k == new).count(),
        100,
        "one retry each, with the new key"
    );
    assert_eq!(storm.len(), 200, "no call was sent a third time");
    let history = w.env.hb_json(&["rotation", "history"]);
    let all = history.as_array().expect("history");
    assert_eq!(all.len(), 1, "{history}");
    assert_eq!(all[0]["trigger"], "auth_failure", "{history}");
    w.finish(&format!("{line}{history}"), &[OLD, ADMIN, &new]);
}

/// A held call whose rotation fails (the provider refuses to mint) gets the original
/// 401, with `credential_error` saying the key is dead and why it was not replaced,
/// as soon as the rotation fails (well within `hold_secs`); the old key stays the
/// account's.
#[test]
fn a_call_held_for_a_rotation_that_fails_gets_the_401_and_the_reason() {
    let mut w = world_with(
        "rotheldfail",
        1,
        "",
        None,
        "max_connections_per_caller = 64",
        "",
    );
    w.provider.set_mode("403");
    w.env.start_agent();
    let (line, got, took) = storm_after_revocation(&w, 5);
    for g in &got {
        assert_eq!(g[0], 401, "the original 401: {line}");
        assert_eq!(g[1]["code"], "credential_dead", "{line}");
        assert_eq!(g[1]["reason"], "rotation_failed", "{line}");
    }
    assert!(
        took < Duration::from_secs(10),
        "answered when the rotation failed, not at hold_secs (15 s): {took:?}"
    );
    let history = w.env.hb_json(&["rotation", "history"]);
    let all = history.as_array().expect("history");
    assert_eq!(all.len(), 1, "{history}");
    assert_eq!(all[0]["step"], "failed", "{history}");
    assert_eq!(bearers(&w.api, "storm").len(), 5, "nothing was retried");
    let vault = w.env.hb_json(&["vault", "list"]);
    let active = vault
        .as_array()
        .expect("list")
        .iter()
        .filter(|c| c["integration"] == "svc" && c["status"] == "active")
        .count();
    assert_eq!(active, 1, "{vault}");
    w.finish(&format!("{line}{history}"), &[OLD, ADMIN]);
}

/// A sandbox's load: `THREADS` threads (each its own connection), with one handle
/// issued before any rotation, call the API as fast as they can (step `load`; a new
/// key is refused there for 2 s after its minting) until a line arrives; then it
/// prints the count of each answer, the calls made and the seconds spent.
const LOAD: &str = r#"
import threading, collections
THREADS = int(sys.argv[1])
h = Client(SOCK).handle("svc", "bot")["handle"]
url = "https://api.test/keys?file=" + STORE + "&born=" + BORN + "&propagation_ms=2000&step=load"
stop, lock, counts = threading.Event(), threading.Lock(), collections.Counter()
def loop():
    c = Client(SOCK)
    while not stop.is_set():
        try:
            r = c.request("GET", url, handle=h)
            k = str(r["status"])
        except BrokerError as e:
            k = e.code
        with lock:
            counts[k] += 1
threads = [threading.Thread(target=loop) for _ in range(THREADS)]
t0 = time.time()
for t in threads: t.start()
print("ready", flush=True)
sys.stdin.readline()
stop.set()
for t in threads: t.join()
print(json.dumps({"counts": counts, "secs": time.time() - t0}), flush=True)
"#;

/// Twenty rotations back to back under load through a handle issued before them all,
/// the provider's API taking 2 s to accept each new key: no call fails. A call the API
/// refuses while the new key propagates is retried with the previous one, still in its
/// grace period (`propagation_secs`, 3 s here: the vault keeps whole seconds).
#[test]
fn twenty_rotations_under_load_with_a_slow_to_propagate_provider_fail_no_call() {
    let mut w = world_with(
        "rotload",
        4,
        "spike_hard_cap = 0",
        None,
        "max_connections_per_caller = 64",
        "propagation_secs = 3",
    );
    w.env.start_agent();
    let born = w.provider.born_path().display().to_string();
    let mut client = Client::start(&w, LOAD, &[("BORN", born)], &["8"], "ready");
    let mut cli = String::new();
    for _ in 0..20 {
        let rotation = trigger(&w.env, true);
        let id = rotation["id"].as_str().expect("id").to_owned();
        cli += &wait_for_step(&w.env, &id, &["retired"], 60).to_string();
    }
    client.say("stop");
    let load = client.answer();
    client.finish();
    let counts = load["counts"].as_object().expect("counts");
    let ok = counts.get("200").and_then(Value::as_u64).unwrap_or(0);
    let total: u64 = counts.values().filter_map(Value::as_u64).sum();
    let secs = load["secs"].as_f64().expect("secs");
    eprintln!(
        "{total} calls in {secs:.1} s ({:.0}/s) through 20 rotations: {counts:?}",
        total as f64 / secs
    );
    assert_eq!(ok, total, "calls failed: {counts:?}");
    assert!(
        total > 1000,
        "the load was too light to say anything: {total}"
    );
    let minted = w.provider.minted();
    assert_eq!(minted.len(), 20, "twenty rotations");
    // The API saw more calls than the client got answers: the propagation retries.
    let at_api = bearers(&w.api, "load");
    let retried = at_api.len() as u64 - total;
    eprintln!("{retried} calls retried with the previous key while a new one propagated");
    assert!(
        retried > 0,
        "no call met a propagating key: the test proves nothing"
    );
    let live = w.provider.live();
    assert_eq!(live, [minted[19].as_str()], "every replaced key revoked");
    let mut keys: Vec<&str> = minted.iter().map(String::as_str).collect();
    keys.extend([OLD, ADMIN]);
    w.finish(&cli, &keys);
}

/// A sandbox's client: at each line it reads (the call's step name; `quit` ends it)
/// one call with its `svc` handle starts on a connection of its own; each prints
/// `[step, status, credential_error]` as JSON when it is answered.
const CALLER: &str = r#"
import threading
h = Client(SOCK).handle("svc", "bot")["handle"]
print("ready", flush=True)
lock = threading.Lock()
def call(step):
    try:
        r = Client(SOCK).request("GET", "https://api.test/keys?file=" + STORE + "&step=" + step, handle=h)
        out = [step, r["status"], r.get("credential_error")]
    except BrokerError as e:
        out = [step, e.code, None]
    with lock:
        print(json.dumps(out), flush=True)
threads = []
for line in sys.stdin:
    step = line.strip()
    if step == "quit":
        break
    t = threading.Thread(target=call, args=(step,))
    t.start()
    threads.append(t)
for t in threads:
    t.join()
"#;

/// How many times faster than real time the agent's rotation clock runs in
/// [`provider_outage_on_the_test_clock`].
const SCALE: u32 = 600;

/// The rotator's `timeout_secs` in [`provider_outage_on_the_test_clock`], on the
/// engine's clock (0.5 s of real time at [`SCALE`]).
const SIM_TIMEOUT_SECS: u32 = 300;

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// How the provider is down in [`provider_outage_on_the_test_clock`].
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// It answers 503.
    Unavailable,
    /// Nothing listens: every connection is refused.
    Refused,
    /// It accepts each request (and mints, the first time) but never answers.
    Hang,
}

impl Outage {
    /// The failure class the agent records for a create it makes meanwhile.
    fn class(self) -> &'static str {
        match self {
            Outage::Unavailable => "rotator_http_5xx",
            Outage::Refused => "rotator_unreachable",
            Outage::Hang => "rotator_timeout",
        }
    }

    /// How long (simulated seconds) a create takes to fail: a hung one, the timeout.
    fn call_secs(self) -> f64 {
        match self {
            Outage::Hang => f64::from(SIM_TIMEOUT_SECS),
            Outage::Unavailable | Outage::Refused => 0.0,
        }
    }

    fn start(self, provider: &mut FakeProvider) {
        match self {
            Outage::Unavailable => provider.set_mode("503"),
            Outage::Refused => provider.stop(),
            Outage::Hang => {
                provider.set_hang_secs(3600.0);
                provider.set_mode("hang");
            }
        }
    }

    /// The provider answers again (once this returns).
    fn end(self, provider: &mut FakeProvider) {
        provider.set_mode("ok");
        if let Outage::Refused = self {
            provider.restart();
        }
    }

    /// When (Unix seconds, real time) each create of rotation `id` was made during the
    /// outage: the provider's log of the 503s and hangs it received; for refused
    /// connections, which reach no provider, the agent's audit of their failures.
    fn creates(self, w: &World, id: &str) -> Vec<f64> {
        let mode = match self {
            Outage::Unavailable => "503",
            Outage::Hang => "hang",
            Outage::Refused => return failed_attempts(&w.env, id, self.class()),
        };
        w.provider
            .calls("create")
            .iter()
            .filter(|c| c["mode"] == mode)
            .map(|c| c["t"].as_f64().expect("t"))
            .collect()
    }
}

/// When (Unix seconds, real time) the agent audited each attempt of rotation `id` that
/// failed with `class`.
fn failed_attempts(env: &TestEnv, id: &str, class: &str) -> Vec<f64> {
    fs::read_to_string(env.state_dir.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| {
            r["kind"] == "rotation"
                && r["rotation"] == id
                && r["step"] == "attempt_failed"
                && r["class"] == class
        })
        .map(|r| {
            let t = humantime::parse_rfc3339_weak(r["time"].as_str().expect("time"))
                .expect("RFC 3339 time");
            t.duration_since(std::time::UNIX_EPOCH)
                .expect("after the epoch")
                .as_secs_f64()
        })
        .collect()
}

/// The provider is down (503, refused connections, or requests accepted and never
/// answered) for six hours of the rotation engine's clock, run 600 times faster than
/// real time by the debug build's test seam (the provider, its API, the vault and the
/// client stay on real time; the rotator's 5-minute timeout is on the engine's clock):
/// the rotation the agent began keeps retrying — a hung create times out and counts as
/// a failure — never sooner than `retry_base_secs` (60 s) after the last try, backing
/// off up to the cap (30 min); the rotator's breaker opens on the outage's failures; the
/// old key stays the account's active one and every call through a handle succeeds;
/// `deadline_at_risk` is raised once as the key's expiry (7 h after it was stored,
/// margin 2 h) nears; once the provider is back the rotation completes within one
/// backoff step (and, for a hang, the timeout of the call still hanging).
fn provider_outage_on_the_test_clock(name: &str, outage: Outage) {
    let tuning = format!(
        "grace_secs = 600\nwatch_secs = 60\nretry_base_secs = 60\nretry_cap_secs = 1800\n\
         timeout_secs = {SIM_TIMEOUT_SECS}\nbreaker_failures = 3\nbreaker_open_secs = 300\n\
         breaker_open_cap_secs = 1800\ndeadline_margin_secs = 7200\n"
    );
    // The outbound path's own limit is real time, so it is set past the rotator's.
    let broker = format!("upstream_timeout_secs = {SIM_TIMEOUT_SECS}\n");
    let mut w = world_tuned(name, &tuning, Some("7h"), &broker, "", "");
    let listed = w.env.hb_json(&["vault", "list"]);
    let old_id = listed
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["integration"] == "svc")
        .expect("svc/bot")["id"]
        .clone();
    outage.start(&mut w.provider);
    let scale = SCALE.to_string();
    w.env
        .start_agent_with("info", &[("HB_TEST_ROTATION_CLOCK_SCALE", &scale)]);
    // The agent's clock started before this instant: simulated times measured from it
    // are a little short, never long.
    let t0 = Instant::now();
    let sim = |real: f64| real * f64::from(SCALE);
    let client = Client::start(&w, LOOPER, &[], &[], "ready");
    let id = begin(&w.env);

    // Six simulated hours of outage, looked at every simulated hour or so.
    let outage_len = Duration::from_secs(6 * 3600 / u64::from(SCALE));
    let mut at_risk_seen: Option<f64> = None;
    let mut looked = 0;
    while t0.elapsed() < outage_len {
        std::thread::sleep(Duration::from_millis(250));
        if at_risk_seen.is_none()
            && events(&w.env, "deadline_at_risk")
                .iter()
                .any(|e| e["detail"].as_str().is_some_and(|d| d.contains(&id)))
        {
            at_risk_seen = Some(sim(t0.elapsed().as_secs_f64()));
        }
        if t0.elapsed().as_secs_f64() * f64::from(SCALE) >= f64::from(looked) * 3600.0 {
            looked += 1;
            let vault = w.env.hb_json(&["vault", "list"]);
            let active: Vec<&Value> = vault
                .as_array()
                .expect("list")
                .iter()
                .filter(|c| c["integration"] == "svc" && c["status"] == "active")
                .collect();
            assert!(
                active.len() == 1 && active[0]["id"] == old_id,
                "the old key is the active one during the outage: {vault}"
            );
            let r = wait_for_step(&w.env, &id, &["begun"], 5);
            assert_eq!(r["step"], "begun", "no key while the provider is down");
        }
    }
    // What the outage came to, before the provider is back.
    let during = outage.creates(&w, &id).len();
    eprintln!("{outage:?}: {during} creates in six simulated hours of outage");
    assert!(
        (8..=40).contains(&during),
        "{during} creates in six simulated hours of {outage:?} (a hung create must time out \
         on the engine's clock and the rotation try again)"
    );
    let opened = events(&w.env, "rotator_breaker_open");
    assert!(
        opened.iter().any(|e| e["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("({})", outage.class())))),
        "the breaker never opened on {}: {opened:?}",
        outage.class()
    );
    outage.end(&mut w.provider);
    let outage_end = unix_now();
    let done = wait_for_step(&w.env, &id, &["finished", "watched", "retired"], 30);
    let active_after = sim(unix_now() - outage_end);
    wait_events(&w.env, "rotator_breaker_closed", 1, 10);

    // Every create of the outage, in simulated seconds apart.
    let times = outage.creates(&w, &id);
    let gaps: Vec<f64> = times.windows(2).map(|p| sim(p[1] - p[0])).collect();
    eprintln!(
        "{outage:?}: {} creates during the outage; simulated gaps (s): {:?}",
        times.len(),
        gaps.iter().map(|g| g.round()).collect::<Vec<_>>()
    );
    // Each of them failed, and was counted, with the outage's class (a hung one at
    // its timeout).
    let counted = failed_attempts(&w.env, &id, outage.class()).len();
    assert!(
        counted >= times.len(),
        "{} creates during the outage, {counted} failures of class {}",
        times.len(),
        outage.class()
    );
    assert!(
        gaps.iter().all(|g| *g >= 59.0),
        "a retry came sooner than retry_base_secs (60 s): {gaps:?}"
    );
    // Full jitter under a breaker that doubles up to its cap: the gaps grow to 30 min
    // (plus the time a create takes to fail) and stay there (a second of real-time
    // slack: 600 simulated).
    let most = 1800.0 + outage.call_secs() + 600.0;
    assert!(
        gaps.iter().all(|g| *g <= most),
        "a gap beyond the cap: {gaps:?}"
    );
    assert!(
        gaps.iter().rev().take(3).all(|g| *g >= 1700.0),
        "the backoff never reached its cap: {gaps:?}"
    );
    // The first create the provider answered after it came back.
    let back = w
        .provider
        .calls("create")
        .iter()
        .filter(|c| c["mode"] == "ok" && c["status"] == 200)
        .map(|c| c["t"].as_f64().expect("t"))
        .next()
        .expect("a create answered after the provider came back");
    let back_after = sim(back - outage_end);
    eprintln!(
        "{outage:?}: asked {back_after:.0} simulated s after the provider came back; the new \
         key seen active {active_after:.0} simulated s after"
    );
    assert!(
        back_after <= most,
        "the rotation asked {back_after} simulated s after the provider came back"
    );
    assert_eq!(w.provider.minted().len(), 1, "one key minted");

    // Raised once for the rotation, as the expiry neared (from 5 h on, before 6 h).
    let at = at_risk_seen.expect("deadline_at_risk was not raised during the outage");
    eprintln!(
        "{outage:?}: deadline_at_risk at {:.2} simulated h",
        at / 3600.0
    );
    assert!(
        (4.5 * 3600.0..6.0 * 3600.0).contains(&at),
        "deadline_at_risk at {at} simulated s"
    );
    let for_rotation = events(&w.env, "deadline_at_risk")
        .iter()
        .filter(|e| e["detail"].as_str().is_some_and(|d| d.contains(&id)))
        .count();
    assert_eq!(for_rotation, 1, "once, not at every retry");

    let statuses = stop_looper(client);
    eprintln!("{outage:?}: {} calls through the handle", statuses.len());
    assert!(
        statuses.len() >= 150,
        "the client called all along: {}",
        statuses.len()
    );
    assert!(
        statuses.iter().all(|s| s == 200),
        "an agent request failed during the outage: {statuses:?}"
    );
    let new = w.provider.minted()[0].clone();
    w.finish(&done.to_string(), &[OLD, ADMIN, &new]);
}

/// [`provider_outage_on_the_test_clock`] with the provider answering 503.
#[test]
fn six_simulated_hours_of_provider_outage_fail_no_call_pace_the_retries_and_the_rotation_completes_within_a_step_of_its_return()
 {
    provider_outage_on_the_test_clock("rotsimdown", Outage::Unavailable);
}

/// [`provider_outage_on_the_test_clock`] with nothing listening at the provider.
#[test]
fn six_simulated_hours_of_refused_connections_fail_no_call_pace_the_retries_and_the_rotation_completes_within_a_step_of_its_return()
 {
    provider_outage_on_the_test_clock("rotsimrefused", Outage::Refused);
}

/// [`provider_outage_on_the_test_clock`] with a provider that accepts each request and
/// never answers: each create times out on the engine's clock and counts as a failure.
#[test]
fn six_simulated_hours_of_a_provider_that_never_answers_time_out_each_create_and_the_rotation_completes_within_a_step_of_its_return()
 {
    provider_outage_on_the_test_clock("rotsimhang", Outage::Hang);
}

/// The breaker opens during an outage; the agent is killed (-9) and started again: the
/// breaker is still open (read back from `state_dir`) and the resumed rotation does not
/// call the provider before it would have.
#[test]
fn an_agent_restarted_during_an_outage_keeps_its_breaker_open_and_does_not_call_the_provider() {
    let tuning = "grace_secs = 1\nwatch_secs = 1\nretry_base_secs = 1\nretry_cap_secs = 2\n\
                  timeout_secs = 2\nbreaker_failures = 2\nbreaker_open_secs = 3600\n\
                  breaker_open_cap_secs = 3600\n";
    let mut w = world_tuned("rotbrkrestart", tuning, None, "", "", "");
    w.provider.set_mode("503");
    w.env.start_agent();
    let id = begin(&w.env);
    wait_events(&w.env, "rotator_breaker_open", 1, 30);
    let before = w.provider.calls("create").len();
    assert_eq!(before, 2, "opened after breaker_failures (2)");
    w.env.kill_agent();
    w.env.start_agent();
    std::thread::sleep(Duration::from_secs(6));
    let status = w.env.hb_json(&["rotation", "status"]);
    assert_eq!(
        status["breakers"]["svc"]["state"], "open",
        "the breaker after the restart: {status}"
    );
    assert_eq!(
        w.provider.calls("create").len(),
        before,
        "the restarted agent called a provider whose breaker was open"
    );
    let r = wait_for_step(&w.env, &id, &["begun"], 5);
    assert_eq!(r["step"], "begun", "{r}");
    // The old key still serves calls.
    let mut client = Client::start(&w, CALLER, &[], &[], "ready");
    client.say("after");
    let got = client.answer();
    assert_eq!(got[1], 200, "{got}");
    client.say("quit");
    client.finish();
    w.finish("", &[OLD, ADMIN]);
}

/// The key is revoked out of band and `verify_url` answers only when the test lets it
/// (here after 12 s, past the probes' 10 s interval): a 401 that comes 11 s after the
/// first joins the probe still running instead of starting a second; both calls are
/// held and succeed with the new key.
#[test]
fn a_verify_probe_slower_than_its_interval_is_shared_by_a_later_401() {
    let name = "rotslowprobe";
    let go = std::env::temp_dir()
        .join(format!("hb-{name}-{}", std::process::id()))
        .join("go");
    let tuning = "grace_secs = 1\nwatch_secs = 1\nretry_base_secs = 1\nretry_cap_secs = 2\n\
                  timeout_secs = 2\nhold_secs = 25\n";
    let mut w = world_tuned(
        name,
        tuning,
        None,
        "",
        "",
        &format!("&wait={}", go.display()),
    );
    w.env.start_agent();
    let mut client = Client::start(&w, CALLER, &[], &[], "ready");
    w.provider.revoke_all_out_of_band();
    client.say("first");
    std::thread::sleep(Duration::from_secs(11));
    client.say("second");
    std::thread::sleep(Duration::from_secs(1));
    fs::write(&go, "").expect("go");
    let got = [client.answer(), client.answer()];
    client.say("quit");
    client.finish();
    for g in &got {
        assert_eq!(g[1], 200, "held and sent again with the new key: {got:?}");
    }
    let probes = bearers(&w.api, "verify")
        .iter()
        .filter(|k| *k == OLD)
        .count();
    assert_eq!(
        probes, 1,
        "one verify probe of the dead key, however long it ran"
    );
    assert_eq!(w.provider.calls("create").len(), 1, "one create");
    let new = w.provider.minted()[0].clone();
    w.finish(&format!("{got:?}"), &[OLD, ADMIN, &new]);
}

/// A sandbox's client like [`CALLER`], whose line `end` ends the handle's execution
/// (revoking the handle) instead of making a call, and prints `["end", "ended", null]`.
const ENDER: &str = r#"
import threading
got = Client(SOCK).handle("svc", "bot")
h, execution = got["handle"], got["execution"]
print("ready", flush=True)
lock = threading.Lock()
def call(step):
    try:
        r = Client(SOCK).request("GET", "https://api.test/keys?file=" + STORE + "&step=" + step, handle=h)
        out = [step, r["status"], r.get("credential_error")]
    except BrokerError as e:
        out = [step, e.code, None]
    with lock:
        print(json.dumps(out), flush=True)
threads = []
for line in sys.stdin:
    step = line.strip()
    if step == "quit":
        break
    if step == "end":
        Client(SOCK).end_execution(execution, "done")
        with lock:
            print(json.dumps(["end", "ended", None]), flush=True)
        continue
    t = threading.Thread(target=call, args=(step,))
    t.start()
    threads.append(t)
for t in threads:
    t.join()
"#;

/// A call held for a rotation (its key revoked out of band, the verify probe held by the
/// test) whose handle is revoked during the hold (its execution ended) is not sent again
/// with the new key when the rotation finishes: it is refused as a dead handle, and the
/// API never sees the new key for it. Before, the hold's retry sent the account's next
/// key for a handle that no longer existed (attack review 49's open item).
#[test]
fn a_call_whose_handle_is_revoked_while_held_is_not_sent_with_the_new_key() {
    let name = "rotheldrevoked";
    let go = std::env::temp_dir()
        .join(format!("hb-{name}-{}", std::process::id()))
        .join("go");
    let tuning = "grace_secs = 1\nwatch_secs = 1\nretry_base_secs = 1\nretry_cap_secs = 2\n\
                  timeout_secs = 2\nhold_secs = 25\n";
    let mut w = world_tuned(
        name,
        tuning,
        None,
        "",
        "",
        &format!("&wait={}", go.display()),
    );
    w.env.start_agent();
    let mut client = Client::start(&w, ENDER, &[], &[], "ready");
    w.provider.revoke_all_out_of_band();
    client.say("held");
    // The call's 401 started the probe, which waits for `go`: the call is held.
    wait_until("the held call's probe never reached verify_url", 15, || {
        !bearers(&w.api, "verify").is_empty()
    });
    client.say("end");
    let ended = client.answer();
    assert_eq!(ended[1], "ended", "{ended}");
    fs::write(&go, "").expect("go");
    let held = client.answer();
    client.say("quit");
    client.finish();
    let new_keys_seen = bearers(&w.api, "held").iter().filter(|k| *k != OLD).count();
    println!("figure: the held call answered {held}; new keys the API saw for it: {new_keys_seen}");
    assert_eq!(held[0], "held", "{held}");
    assert_eq!(
        held[1], "unknown_handle",
        "refused as a dead handle: {held}"
    );
    assert_eq!(
        new_keys_seen, 0,
        "the new key went out for a revoked handle"
    );
    let new = w.provider.minted()[0].clone();
    w.finish(&format!("{held}"), &[OLD, ADMIN, &new]);
}

/// A rotation is open (the provider down, 503) when the key is revoked out of band: a
/// call refused with it is held on that rotation — not answered `credential_dead` for
/// the cooldown — and sent once more with the new key when the provider is back and
/// the rotation finishes.
#[test]
fn a_key_that_dies_while_its_rotation_is_open_holds_its_calls_for_that_rotation() {
    let mut w = world_with("rotheldopen", 1, "hold_secs = 20", None, "", "");
    w.provider.set_mode("503");
    w.env.start_agent();
    let mut client = Client::start(&w, CALLER, &[], &[], "ready");
    let id = begin(&w.env);
    wait_until("the rotation never asked the provider", 10, || {
        !w.provider.calls("create").is_empty()
    });
    w.provider.revoke_all_out_of_band();
    client.say("held");
    std::thread::sleep(Duration::from_secs(2));
    w.provider.set_mode("ok");
    let got = client.answer();
    client.say("quit");
    client.finish();
    assert_eq!(
        got[1], 200,
        "held on the open rotation, then sent with its key: {got}"
    );
    let history = w.env.hb_json(&["rotation", "history"]);
    let all = history.as_array().expect("history");
    assert_eq!(all.len(), 1, "no second rotation: {history}");
    assert_eq!(all[0]["id"], id.as_str(), "{history}");
    let new = w.provider.minted()[0].clone();
    assert_eq!(
        bearers(&w.api, "held"),
        vec![OLD.to_owned(), new.clone()],
        "sent with the dead key, then once with the new one"
    );
    w.finish(&format!("{got}{history}"), &[OLD, ADMIN, &new]);
}

/// A create fails (503) and is due again no sooner than `retry_base_secs` (30 s); the
/// agent is killed (-9) and started again at once: the resumed rotation waits out the
/// backoff the journal recorded instead of calling the provider on start (the breaker
/// never opens here: the backoff alone paces it).
#[test]
fn a_rotation_resumed_after_a_restart_waits_out_its_recorded_backoff() {
    let tuning = "grace_secs = 1\nwatch_secs = 1\nretry_base_secs = 30\nretry_cap_secs = 60\n\
                  timeout_secs = 2\nbreaker_failures = 100\n";
    let mut w = world_tuned("rotresumewait", tuning, None, "", "", "");
    w.provider.set_mode("503");
    w.env.start_agent();
    let id = begin(&w.env);
    let r = wait_for_step(&w.env, &id, &["begun"], 5);
    wait_until(
        &format!("the rotation never asked the provider: {r}"),
        10,
        || !w.provider.calls("create").is_empty(),
    );
    // The failure recorded (with its next attempt) before the kill.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = w.env.hb_json(&["rotation", "history"]);
        if h[0]["attempt"].as_u64() >= Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "no failed attempt recorded: {h}");
        std::thread::sleep(Duration::from_millis(100));
    }
    w.env.kill_agent();
    w.env.start_agent();
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        w.provider.calls("create").len(),
        1,
        "the restarted agent called the provider before the recorded backoff was over"
    );
    w.finish("", &[OLD, ADMIN]);
}
