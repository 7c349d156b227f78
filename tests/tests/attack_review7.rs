//! A seventh attack review, run as the process inside the sandbox: each test performs
//! one attack from a sandbox (uid 65534, arbitrary Python) against the real agent, real
//! kernel and real upstreams on the test namespace's `lo`, and asserts the secure
//! outcome. A test marked `#[ignore = "open: …"]` is a break found and not yet fixed:
//! it fails against the current agent.
//!
//! Angle: the credential lifecycle — what a sandbox holding a handle for an account
//! can see of the account's keys while a rotation mints, tests, switches and retires
//! them, and what it can make the rotation engine do.
//!
//! The world is the fake provider of `rotation.rs` (`tests/src/provider.rs`): an HTTPS
//! API `api.test` that accepts exactly the keys a key store holds and lists them on
//! `?list=newest` (newest first, as key-listing APIs do), and an exec rotator minting
//! into that store or (`provider.test`) a provider's key API behind the HTTP rotator.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Stdio},
    time::{Duration, Instant},
};

use hb_tests::{
    TestEnv,
    provider::{
        EXEC_ROTATOR, KeyApi, Provider, agent_env, begin_rotation, minted, svc_rotated,
        wait_for_step,
    },
    sandboxed::{broker_client_script, nobody_command},
};
use serde_json::Value;

const DNS_PORT: u16 = 5417;
const OLD: &str = "key-old-7a1c0e93d5b24f6e8c0a9d17b3e5f248";
const ADMIN: &str = "adm-3e2d1c0b4a5968778695a4b3c2d1e0f9";

/// The exec rotator of a provider whose `create` answers a while after it committed the
/// key (a slow API, a long round trip): the new key is in the store, and listed, before
/// the agent hears of it.
fn slow_rotator(p: &Provider, secs: f64) -> PathBuf {
    let script = EXEC_ROTATOR.replace(
        "    print(json.dumps({\"secret\": new}))\n",
        &format!(
            "    with open(store, \"w\") as f:\n        json.dump(live, f)\n    \
             import time\n    time.sleep({secs})\n    print(json.dumps({{\"secret\": new}}))\n"
        ),
    );
    assert_eq!(
        script.matches("time.sleep").count(),
        1,
        "the rotator's create was changed"
    );
    let path = p.dir.join("slow-rotator.py");
    fs::write(&path, script).expect("rotator");
    path
}

/// The agent of this world: `svc` (bearer, host `api.test`, verified against the key
/// store `keys`) rotated as `rotator` says (the `[integration.rotation]` lines after
/// the tuning: the grace period and the rotator), bound to the policy `web`; `more` appended (more integrations). The
/// vault holds `svc/bot` = [`OLD`] and, with `more`, `provider/admin` = [`ADMIN`].
fn agent(name: &str, p: &Provider, keys: &Path, rotator: &str, more: &str) -> TestEnv {
    agent_with(name, p, keys, rotator, more, OLD)
}

/// [`agent`] with `svc/bot` = `old`.
fn agent_with(
    name: &str,
    p: &Provider,
    keys: &Path,
    rotator: &str,
    more: &str,
    old: &str,
) -> TestEnv {
    let config = format!(
        r#"{head}{svc}{more}
[[policy]]
name = "web"
integrations = ["svc"]
"#,
        head = p.config_head(""),
        // The listing echoes the key a call carries too: only an alert, so that no
        // compromise rotation joins the one under test.
        svc = svc_rotated(keys, "", &format!("on_reflection = \"alert\"\n{rotator}")),
    );
    let mut env = agent_env(name, &config);
    env.vault_put("svc", "bot", old);
    if !more.is_empty() {
        env.vault_put("provider", "admin", ADMIN);
    }
    env.start_agent();
    env
}

/// The sandbox's loop: the provider's key listing (newest first) through its handle,
/// as fast as it goes, until its stdin says stop; then how many answers held a key in
/// the clear that is not the old one (it counts, it never prints a key).
const LISTER: &str = r#"
h = hb.handle("svc", "bot")["handle"]
url = "https://api.test/keys?file=" + STORE + "&list=newest&step=list"
stop = threading.Event()
def wait_stop():
    sys.stdin.readline()
    stop.set()
threading.Thread(target=wait_stop, daemon=True).start()
calls = clear = two = near = 0
errors = Counter()
print("ready", flush=True)
while not stop.is_set():
    r = attempt(lambda: hb.request("GET", url, handle=h))
    calls += 1
    if "error" in r:
        errors[r["error"]] += 1
        continue
    try:
        listed = json.loads(r["body"])["keys"]
    except Exception:
        errors["not_json"] += 1
        continue
    # A key of another shape (`key-oth-`) is not one of the account's.
    if len([k for k in listed if not k.startswith("key-oth-")]) > 1:
        two += 1
    if any(k.startswith(("key-new-", "key-http-", "kx-new-")) for k in listed):
        clear += 1
    # A listing whose next key went as a pending key, another shape beside it clear.
    if "[REDACTED:pending_credential]" in listed and any(k.startswith("key-oth-") for k in listed):
        near += 1
print(json.dumps({"calls": calls, "listed_two": two, "new_key_in_clear": clear,
                  "pending_beside_other_shape": near, "errors": dict(errors)}), flush=True)
"#;

/// [`LISTER`] running as nobody in a sandbox of `web`, listing the key store `store`.
struct Lister {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
}

impl Lister {
    fn start(env: &TestEnv, store: &Path) -> Self {
        let script = format!("STORE = {:?}\n{LISTER}", store.display().to_string());
        let mut child = nobody_command(
            env,
            "web",
            &[],
            &[
                hb_tests::python(),
                "-c",
                &broker_client_script(env, &script),
            ],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("sandbox run");
        let to = child.stdin.take().expect("stdin");
        let mut from = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        from.read_line(&mut line).expect("sandbox output");
        assert_eq!(line.trim(), "ready", "the lister did not start");
        Self { child, to, from }
    }

    /// Stops it; what it counted.
    fn stop(mut self) -> Value {
        writeln!(self.to, "stop").expect("to sandbox");
        let mut line = String::new();
        self.from.read_line(&mut line).expect("sandbox output");
        let _ = self.child.wait();
        serde_json::from_str(line.trim()).expect("lister JSON")
    }
}

impl Drop for Lister {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_never_in_clear(got: &Value, done: &Value) {
    assert_eq!(done["step"], "watched", "the rotation completed: {done}");
    assert!(
        got["listed_two"].as_u64().unwrap_or(0) > 0,
        "the sandbox saw the listing with both keys: {got}"
    );
    assert_eq!(
        got["new_key_in_clear"], 0,
        "the provider's listing gave the sandbox the account's next key: {got}"
    );
}

/// Begins a rotation of `svc/bot` while `lister` lists; `after_begin` runs once it has
/// begun; waits until the rotation ends, lets the lister list half a second more (the
/// new key active), stops it. What the lister counted and the rotation's last record.
fn rotate_while_listing(
    env: &TestEnv,
    lister: Lister,
    after_begin: impl FnOnce(),
) -> (Value, Value) {
    let id = begin_rotation(env);
    after_begin();
    let done = wait_for_step(
        env,
        &id,
        &["watched", "retired", "failed", "rolled_back"],
        60,
    );
    // A few more listings with the new key active.
    std::thread::sleep(Duration::from_millis(500));
    (lister.stop(), done)
}

/// One listing of the key store `store` (newest first) through a handle for
/// `integration`/`bot`, by a sandbox of `policy`: its status, error, how many keys it
/// listed and the first 8 characters of each listed in the clear.
fn list_once(env: &TestEnv, policy: &str, integration: &str, store: &Path) -> Value {
    let script = format!(
        "STORE = {:?}\n\
         h = hb.handle({integration:?}, 'bot')['handle']\n\
         r = attempt(lambda: hb.request('GET', 'https://api.test/keys?file=' + STORE + '&list=newest&step=list', handle=h))\n\
         listed = json.loads(r['body'])['keys'] if 'body' in r else []\n\
         print(json.dumps({{'status': r.get('status'), 'error': r.get('error'), 'listed': len(listed),\n\
                           'clear': [k[:8] for k in listed if not k.startswith('[')]}}))\n",
        store.display().to_string()
    );
    hb_tests::sandboxed::nobody_broker_client(env, policy, &script, &[])
}

/// Attack: the sandbox lists the account's keys at the provider in a loop while a
/// rotation mints the account's next key. The provider holds (and lists) the new key
/// from the moment it commits it; the agent registers it with the scrubber only once
/// the rotator's `create` has answered. Every listing answered in between carried the
/// account's next key — the one the rotation is about to make ACTIVE — in the clear
/// (on e711982: 33 of 60 listings with a create answering 1.5 s after its commit; 1 or
/// 2 of ~20 in two runs of three with no delay at all).
#[test]
fn the_next_key_listed_by_the_provider_before_its_create_answers_never_reaches_the_sandbox() {
    let name = "atk7mint";
    let p = Provider::start(name, DNS_PORT, None);
    let keys = p.key_store("keys.json", &[OLD]);
    let rotator = format!(
        "grace_secs = 600\nexec = [{:?}, {:?}, {:?}]",
        hb_tests::python(),
        slow_rotator(&p, 1.5).display().to_string(),
        keys.display().to_string()
    );
    let env = agent(name, &p, &keys, &rotator, "");
    let lister = Lister::start(&env, &keys);
    let (got, done) = rotate_while_listing(&env, lister, || {});
    println!(
        "figure: {} of {} listings during the rotation carried the account's next key in the clear (step {})",
        got["new_key_in_clear"], got["calls"], done["step"]
    );
    assert_never_in_clear(&got, &done);
    assert_eq!(minted(&keys).len(), 1, "one key minted");
    let _ = fs::remove_dir_all(&p.dir);
}

/// The account's key as this provider's key API mints them (`key-http-`, 32 hex
/// digits): a provider's next key has the shape of its last.
const OLD_HTTP: &str = "key-http-5c3e1a9f7b2d4c6e8a0b1d3f5e7c9a2b";
/// A key of another shape the same listing carries (another account's kind).
const OTHER_SHAPE: &str = "key-oth-0f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// Attack: as above, with the HTTP rotator of a provider that commits the key and then
/// answers later than the rotator's `timeout_secs` (an overloaded API). The agent stops
/// waiting, so the value is unknown to it until the retry, after the backoff, gets the
/// same key back through its `Idempotency-Key`; every listing in between carried it in
/// the clear (on e711982). (An exec rotator killed at its timeout leaves an orphan the
/// agent never learns at all.) Fixed: while the mint's outcome is unknown, the answers
/// are scrubbed of tokens of the current key's shape (`pending_credential`). Near miss:
/// a token of another shape (`key-oth-…`) in the same listing reaches the sandbox.
#[test]
fn the_next_key_minted_by_a_create_that_timed_out_never_reaches_the_sandbox() {
    let name = "atk7hang";
    let mut p = Provider::start(
        name,
        DNS_PORT,
        Some(KeyApi {
            admin: ADMIN,
            keys: &[OTHER_SHAPE, OLD_HTTP],
            hang_secs: 4.0,
        }),
    );
    let provider = p.keys_api.take().expect("the key API");
    let keys = provider.keys_path();
    let rotator = r#"grace_secs = 600
timeout_secs = 2

[integration.rotation.http]
url = "https://provider.test/v1/keys"
auth = { integration = "provider", account = "admin" }
secret_pointer = "/data/secret"
"#;
    let more = r#"
[[integration]]
name = "provider"
auth = "bearer"
hosts = ["provider.test"]
methods = ["POST"]
"#;
    let env = agent_with(name, &p, &keys, rotator, more, OLD_HTTP);
    let lister = Lister::start(&env, &keys);
    provider.set_mode("hang");
    let (got, done) = rotate_while_listing(&env, lister, || {
        // The first create has minted and timed out; the second is out, hanging too.
        let deadline = Instant::now() + Duration::from_secs(30);
        while provider.calls("create").len() < 2 {
            assert!(Instant::now() < deadline, "the create was never retried");
            std::thread::sleep(Duration::from_millis(50));
        }
        provider.set_mode("ok");
    });
    println!(
        "figure: {} of {} listings during the rotation carried the account's next key in the clear (step {}, {} creates)",
        got["new_key_in_clear"],
        got["calls"],
        done["step"],
        provider.calls("create").len()
    );
    assert_never_in_clear(&got, &done);
    assert!(
        got["pending_beside_other_shape"].as_u64().unwrap_or(0) > 0,
        "a listing with the next key redacted as pending carried the other shape's key: {got}"
    );
    assert_eq!(provider.minted().len(), 1, "one key minted");
    let _ = fs::remove_dir_all(&p.dir);
}

/// The `[integration.rotation]` lines of [`EXEC_ROTATOR`] minting `prefix` keys whose
/// first `create` commits its key to the store `keys` and then hangs past the 2 s
/// `timeout_secs` (the agent kills it: an orphan the provider lists); later creates
/// answer at once.
fn first_create_hangs(p: &Provider, keys: &Path, prefix: &str, grace_secs: u32) -> String {
    let script = EXEC_ROTATOR
        .replace("\"key-new-\"", &format!("{prefix:?}"))
        .replace(
            "    print(json.dumps({\"secret\": new}))\n",
            "    import os, time\n    \
             if not os.path.exists(store + \".hung\"):\n        \
             open(store + \".hung\", \"w\").close()\n        \
             with open(store, \"w\") as f:\n            json.dump(live, f)\n        \
             time.sleep(60)\n    \
             print(json.dumps({\"secret\": new}))\n",
        );
    assert!(
        script.matches("time.sleep").count() == 1 && script.contains(&format!("{prefix:?}")),
        "the rotator's create was changed"
    );
    let path = p.dir.join("hung-rotator.py");
    fs::write(&path, script).expect("rotator");
    format!(
        "grace_secs = {grace_secs}\ntimeout_secs = 2\nexec = [{:?}, {:?}, {:?}]",
        hb_tests::python(),
        path.display().to_string(),
        keys.display().to_string()
    )
}

/// The account's key as [`EXEC_ROTATOR`] mints them (`key-new-`, 32 hex digits).
const OLD_EXEC: &str = "key-new-2b4d6f8a0c1e3a5c7e9b1d3f5a7c9e0b";

/// Attack: the exec rotator's first `create` commits the key to the provider and then
/// hangs past `timeout_secs`: the agent kills it and never learns that key (an orphan
/// the provider lists); the retry mints another. On e711982 every listing after the
/// kill carried the orphan in the clear. Fixed: the integration's answers are scrubbed
/// of tokens of the key's shape until a later rotation finishes, and `rotation status`
/// names the unsettled mint.
#[test]
fn a_key_minted_by_an_exec_rotator_killed_at_its_timeout_never_reaches_the_sandbox() {
    let name = "atk7orphan";
    let p = Provider::start(name, DNS_PORT, None);
    let keys = p.key_store("keys.json", &[OLD_EXEC]);
    let rotator = first_create_hangs(&p, &keys, "key-new-", 600);
    let env = agent_with(name, &p, &keys, &rotator, "", OLD_EXEC);
    let lister = Lister::start(&env, &keys);
    let (got, done) = rotate_while_listing(&env, lister, || {});
    println!(
        "figure: {} of {} listings carried a key of the account the agent does not hold in the clear (step {})",
        got["new_key_in_clear"], got["calls"], done["step"]
    );
    assert_never_in_clear(&got, &done);
    assert_eq!(
        minted(&keys).len(),
        2,
        "the orphan and the key the retry got"
    );
    let status = env.hb_json(&["rotation", "status"]);
    let unsettled = status["unsettled_mints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        unsettled
            .iter()
            .any(|u| u["integration"] == "svc" && u["outcome"] == "orphan"),
        "rotation status names the orphan: {status}"
    );
    let _ = fs::remove_dir_all(&p.dir);
}

const OTHER: &str = "key-oth-51d0c2a8e6f34b79a0c1d2e3f4a5b6c7";
const OTHER_NEW: &str = "key-onw-9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b";

/// Attack: two tenants of one provider (an organisation's keys, listed by its API to
/// any of them, as admin listings go): `a` for the policy `web` (the attacker), `b` for
/// `ops`. While the agent runs, the operator rotates `b`'s key by hand (`hb-agent vault
/// rotate`, another process); the provider lists the new key at once. The agent
/// registered every stored value with the scrubber when it started, and a value stored
/// since only when a call of its own account reads it: until `b` calls, the attacker's
/// listing carries `b`'s new key in the clear.
#[test]
fn another_tenants_key_rotated_by_hand_never_reaches_the_sandbox_before_its_first_use() {
    let name = "atk7hand";
    let p = Provider::start(name, DNS_PORT, None);
    let keys = p.key_store("keys.json", &[OLD, OTHER]);
    let config = format!(
        r#"{head}
[[integration]]
name = "a"
auth = "bearer"
hosts = ["api.test"]

[[integration]]
name = "b"
auth = "bearer"
hosts = ["api.test"]

[[policy]]
name = "web"
integrations = ["a"]

[[policy]]
name = "ops"
integrations = ["b"]
"#,
        head = p.config_head(""),
    );
    let mut env = agent_env(name, &config);
    env.vault_put("a", "bot", OLD);
    env.vault_put("b", "bot", OTHER);
    env.start_agent();
    // The provider mints `b`'s next key; the operator stores it by hand.
    fs::write(
        &keys,
        serde_json::to_string(&[OLD, OTHER, OTHER_NEW]).expect("json"),
    )
    .expect("store");
    env.vault_with_secret(
        &["rotate", "-i", "b", "-a", "bot", "--grace", "10m"],
        OTHER_NEW,
    );
    let got = list_once(&env, "web", "a", &keys);
    let clear = got["clear"].as_array().cloned().unwrap_or_default();
    println!(
        "figure: {} of {} listed keys reached the attacker in the clear ({:?})",
        clear.len(),
        got["listed"],
        clear
    );
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(got["listed"], 3, "{got}");
    assert!(
        clear.is_empty(),
        "another tenant's key stored while the agent ran reached the attacker: {got}"
    );
    let _ = fs::remove_dir_all(&p.dir);
}

/// Held (a regression test): the provider failed to revoke the old key at the end of
/// its grace (its revoke answered success and did nothing), so it still lists and
/// accepts it; the vault erased it. A sandbox listing the account's keys after the
/// retirement gets neither key in the clear: the scrubber keeps a retired value.
#[test]
fn a_retired_key_the_provider_still_lists_stays_scrubbed() {
    let name = "atk7retired";
    let p = Provider::start(name, DNS_PORT, None);
    let keys = p.key_store("keys.json", &[OLD]);
    // A revoke that does nothing.
    let script = EXEC_ROTATOR.replace(
        "    live = [k for k in live if k != req[\"secret\"]]\n",
        "    pass\n",
    );
    assert_ne!(script, EXEC_ROTATOR, "the rotator's revoke was changed");
    let path = p.dir.join("lazy-rotator.py");
    fs::write(&path, script).expect("rotator");
    let rotator = format!(
        "grace_secs = 1\nexec = [{:?}, {:?}, {:?}]",
        hb_tests::python(),
        path.display().to_string(),
        keys.display().to_string()
    );
    let env = agent(name, &p, &keys, &rotator, "");
    let id = begin_rotation(&env);
    let done = wait_for_step(&env, &id, &["retired", "failed", "rolled_back"], 60);
    assert_eq!(done["step"], "retired", "{done}");
    let got = list_once(&env, "web", "svc", &keys);
    let clear = got["clear"].as_array().cloned().unwrap_or_default();
    println!(
        "figure: {} of {} listed keys (the retired one still live at the provider) in the clear",
        clear.len(),
        got["listed"]
    );
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(
        got["listed"], 2,
        "the provider still lists the old key: {got}"
    );
    assert!(clear.is_empty(), "a key reached the sandbox: {got}");
    let _ = fs::remove_dir_all(&p.dir);
}

/// Attack: the sandbox has a key leaked (its upstream echoes the key it was sent: a
/// `reflection`, rotated as compromised by default), and the thief who holds it keeps
/// the account's rate limit spent with it from outside (the test's `hold` file: every
/// call of the account is answered 403, as a per-account limit answers), so the new
/// key's test is answered 403 too. A routine rotation gives up after a few such
/// answers and keeps the old key; a compromised one must not: the old key is the one
/// the thief holds. Run on a rotation clock 20 times faster (the backoff between tries).
#[test]
fn a_thief_spending_the_accounts_rate_limit_does_not_keep_a_leaked_key_alive() {
    let name = "atk7thief";
    let p = Provider::start(name, DNS_PORT, None);
    let keys = p.key_store("keys.json", &[OLD]);
    let hold = p.dir.join("hold");
    let config = format!(
        r#"{head}{svc}
[[policy]]
name = "web"
integrations = ["svc"]
"#,
        head = p.config_head(""),
        svc = svc_rotated(
            &keys,
            &format!("&hold={}", hold.display()),
            &format!(
                "exec = [\"{python}\", \"{rotator}\", \"{keys}\"]",
                python = hb_tests::python(),
                rotator = p.exec_rotator().display(),
                keys = keys.display(),
            ),
        ),
    );
    let mut env = agent_env(name, &config);
    env.vault_put("svc", "bot", OLD);
    env.start_agent_with("info", &[("HB_TEST_ROTATION_CLOCK_SCALE", "20")]);
    // The thief spends the account's rate limit with the stolen key.
    fs::write(&hold, "").expect("hold");
    let got = hb_tests::sandboxed::nobody_broker_client(
        &env,
        "web",
        "h = hb.handle('svc', 'bot')['handle']\n\
         print(json.dumps({'echo': code(lambda: hb.request('GET', 'https://api.test/echo', handle=h))}))\n",
        &[],
    );
    assert_eq!(got["echo"], 200, "{got}");
    // The compromise rotation, once it has been refused more often than a routine one
    // takes, or has ended.
    let deadline = Instant::now() + Duration::from_secs(90);
    let rotation = loop {
        let h = env.hb_json(&["rotation", "history"]);
        if let Some(r) = h.as_array().and_then(|all| all.first())
            && (r["attempt"].as_u64().unwrap_or(0) >= 9
                || !matches!(r["step"].as_str(), Some("begun" | "created")))
        {
            break r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no compromise rotation went on: {h}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(rotation["compromised"], true, "{rotation}");
    // The thief stops (or the limit resets): a rotation still open completes.
    fs::remove_file(&hold).expect("hold");
    let id = rotation["id"].as_str().expect("id").to_owned();
    let done = wait_for_step(
        &env,
        &id,
        &["retired", "failed", "aborted", "rolled_back"],
        60,
    );
    let live = hb_tests::provider::store(&keys);
    let old_live = live.iter().any(|k| k == OLD);
    println!(
        "figure: the compromise rotation ended {} after {} refused tests; the leaked key {} live at the provider",
        done["step"],
        rotation["attempt"],
        if old_live { "is still" } else { "is no longer" }
    );
    assert_eq!(
        done["step"], "retired",
        "the compromise rotation gave up: {done}"
    );
    assert!(!old_live, "the leaked key is still live at the provider");
    let _ = fs::remove_dir_all(&p.dir);
}

/// Attack: as the orphan above, then the agent restarts (an upgrade, a crash) with the
/// orphan still listed by the provider. The agent kept its unsettled mints in memory
/// only: after the restart nothing shaped the integration's answers, and every listing
/// carried the orphan in the clear (on 7267337: 41 of 41). Fixed: mints in flight and
/// unsettled are written to `state_dir` and come back at the start, their shapes derived
/// again from the values their rotations replace. The keys are `kx-new-…`: a listing of
/// `key-new-…` keys reads to the generic assignment family as `key-…` names assigned
/// values, which it redacts whatever the agent knows.
#[test]
fn a_key_orphaned_before_an_agent_restart_never_reaches_the_sandbox_after_it() {
    orphan_listed_after_a_restart("atk7orphrs", 600, "watched");
}

/// As above, the restart coming after the rotation retired the key it replaced: that
/// value is revoked and erased from the vault then, so the shape is derived from the key
/// that replaced it (the first restore read only the replaced value, and left the
/// orphan's answers unshaped).
#[test]
fn a_key_orphaned_before_a_restart_after_its_rotation_retired_never_reaches_the_sandbox() {
    orphan_listed_after_a_restart("atk7orphrt", 1, "retired");
}

/// The orphan of [`first_create_hangs`] (grace `grace_secs`), the agent restarted once
/// the rotation reached `step`, then the sandbox's listings for 2 s.
fn orphan_listed_after_a_restart(name: &str, grace_secs: u32, step: &str) {
    let p = Provider::start(name, DNS_PORT, None);
    let old = OLD_EXEC.replace("key-new-", "kx-new-");
    let keys = p.key_store("keys.json", &[&old]);
    let rotator = first_create_hangs(&p, &keys, "kx-new-", grace_secs);
    let mut env = agent_with(name, &p, &keys, &rotator, "", &old);
    let id = begin_rotation(&env);
    let done = wait_for_step(&env, &id, &[step, "failed", "rolled_back"], 60);
    assert_eq!(done["step"], step, "the rotation reached {step}: {done}");
    assert_eq!(
        minted(&keys).len(),
        2,
        "the orphan and the key the retry got"
    );
    env.stop_agent();
    env.start_agent();
    let lister = Lister::start(&env, &keys);
    std::thread::sleep(Duration::from_secs(2));
    let got = lister.stop();
    println!(
        "figure: after a restart at {step}, {} of {} listings carried the orphaned key in the clear",
        got["new_key_in_clear"], got["calls"]
    );
    assert!(
        got["listed_two"].as_u64().unwrap_or(0) > 0,
        "the sandbox saw the listing with two keys: {got}"
    );
    assert_eq!(
        got["new_key_in_clear"], 0,
        "the provider's listing gave the sandbox the orphaned key: {got}"
    );
    let status = env.hb_json(&["rotation", "status"]);
    assert!(
        status["unsettled_mints"].as_array().is_some_and(|u| u
            .iter()
            .any(|u| u["integration"] == "svc" && u["outcome"] == "orphan")),
        "rotation status names the orphan after the restart: {status}"
    );
    let _ = fs::remove_dir_all(&p.dir);
}
