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
//! `?list=1` (as key-listing APIs do), and an exec rotator minting into that store.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    process::Stdio,
    time::Duration,
};

use hb_tests::{
    TestEnv,
    provider::{EXEC_ROTATOR, Provider, agent_env, minted, wait_for_step},
    sandboxed::{broker_client_script, nobody_command},
};
use serde_json::Value;

const DNS_PORT: u16 = 5417;
const OLD: &str = "key-old-7a1c0e93d5b24f6e8c0a9d17b3e5f248";

/// The exec rotator of a provider whose `create` answers a while after it committed the
/// key (a slow API, a long round trip): the new key is in the store, and listed, before
/// the agent hears of it.
fn slow_rotator(p: &Provider, secs: f64) -> std::path::PathBuf {
    // Newest first, as key listings go.
    let script = EXEC_ROTATOR
        .replace("live.append(new)", "live.insert(0, new)")
        .replace(
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
    assert!(script.contains("live.insert(0, new)"), "newest first");
    let path = p.dir.join("slow-rotator.py");
    fs::write(&path, script).expect("rotator");
    path
}

/// The agent of this world: `svc` (bearer, host `api.test`, its key store `keys`)
/// rotated by `rotator`, bound to the policy `web`.
fn agent(name: &str, p: &Provider, keys: &std::path::Path, rotator: &std::path::Path) -> TestEnv {
    let config = format!(
        r#"{head}
[[integration]]
name = "svc"
auth = "bearer"
hosts = ["api.test"]
verify_url = "https://api.test/keys?file={keys}&step=verify"

[integration.rotation]
exec = ["{python}", "{rotator}", "{keys}"]
grace_secs = 600
watch_secs = 1
retry_base_secs = 1
retry_cap_secs = 2
# The listing echoes the key a call carries too: only an alert, so that no compromise
# rotation joins the one under test.
on_reflection = "alert"

[[policy]]
name = "web"
integrations = ["svc"]
"#,
        head = p.config_head(""),
        keys = keys.display(),
        python = hb_tests::python(),
        rotator = rotator.display(),
    );
    let mut env = agent_env(name, &config);
    env.vault_put("svc", "bot", OLD);
    env.start_agent();
    env
}

/// The sandbox's loop: the provider's key listing through its handle, as fast as it
/// goes, until its stdin says stop; then how many answers held a key in the clear that
/// is not the old one (it counts, it never prints a key).
const LISTER: &str = r#"
h = hb.handle("svc", "bot")["handle"]
url = "https://api.test/keys?file=" + STORE + "&list=1&step=list"
stop = threading.Event()
def wait_stop():
    sys.stdin.readline()
    stop.set()
threading.Thread(target=wait_stop, daemon=True).start()
calls = clear = two = 0
errors = Counter()
shapes = Counter()
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
    if len(listed) > 1:
        two += 1
    if any(k.startswith("key-new-") for k in listed):
        clear += 1
    shapes[",".join(k[:12] if k.startswith("[") else k[:8] for k in listed)] += 1
print(json.dumps({"calls": calls, "listed_two": two, "new_key_in_clear": clear,
                  "errors": dict(errors), "shapes": dict(shapes)}), flush=True)
"#;

/// Attack: the sandbox lists the account's keys at the provider in a loop while a
/// rotation mints the account's next key. The provider holds (and lists) the new key
/// from the moment it commits it; the agent registers it with the scrubber only once
/// the rotator's `create` has answered. Every listing answered in between carries the
/// account's next key — the one the rotation is about to make ACTIVE — in the clear.
#[test]
fn the_next_key_listed_by_the_provider_before_its_create_answers_never_reaches_the_sandbox() {
    let name = "atk7mint";
    let p = Provider::start(name, DNS_PORT, None);
    let keys = p.key_store("keys.json", &[OLD]);
    let rotator = slow_rotator(&p, 1.5);
    let env = agent(name, &p, &keys, &rotator);

    let script = format!("STORE = {:?}\n{LISTER}", keys.display().to_string());
    let mut child = nobody_command(
        &env,
        "web",
        &[],
        &[
            hb_tests::python(),
            "-c",
            &broker_client_script(&env, &script),
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .expect("sandbox run");
    let mut to = child.stdin.take().expect("stdin");
    let mut from = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    from.read_line(&mut line).expect("sandbox output");
    assert_eq!(line.trim(), "ready", "the lister did not start");

    let begun = env.hb(&["rotation", "trigger", "-i", "svc", "-a", "bot", "--json"]);
    assert!(
        begun.status.success(),
        "{}",
        String::from_utf8_lossy(&begun.stderr)
    );
    let id = serde_json::from_slice::<Value>(&begun.stdout).expect("rotation JSON")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let done = wait_for_step(
        &env,
        &id,
        &["watched", "retired", "failed", "rolled_back"],
        60,
    );
    // A few more listings with the new key active.
    std::thread::sleep(Duration::from_millis(500));
    writeln!(to, "stop").expect("to sandbox");
    line.clear();
    from.read_line(&mut line).expect("sandbox output");
    let _ = child.wait();
    let got: Value = serde_json::from_str(line.trim()).expect("lister JSON");
    println!(
        "figure: {} of {} listings during the rotation carried the account's next key in the clear (step {})",
        got["new_key_in_clear"], got["calls"], done["step"]
    );
    eprintln!("lister: {got}; rotation: {done}");
    assert_eq!(done["step"], "watched", "the rotation completed: {done}");
    assert!(
        got["listed_two"].as_u64().unwrap_or(0) > 0,
        "the sandbox saw the listing with both keys: {got}"
    );
    assert_eq!(
        got["new_key_in_clear"], 0,
        "the provider's listing gave the sandbox the account's next key: {got}"
    );
    assert_eq!(minted(&keys).len(), 1, "one key minted");
    let _ = fs::remove_dir_all(&p.dir);
}
