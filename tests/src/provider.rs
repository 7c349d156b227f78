//! The fake provider's world, shared by the rotation suites (`rotation.rs`,
//! `rotation_http.rs`, `rotation_detect.rs`): in the test's own network namespace, a
//! test CA, the provider's API `api.test` (a [`RecordingServer`] whose `/keys` accepts
//! exactly the keys a key store holds — with `born=` and `propagation_ms=`, only once
//! a key is old enough), optionally the provider's key API `provider.test` (a
//! [`FakeProvider`] that mints and revokes keys), a resolver naming both, an exec
//! rotator minting into a key store, and the agent config's head that trusts the CA and
//! reaches them. Helpers read what each side saw: a key store, the bearers the API
//! received, the rotation journal through the CLI.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    TestEnv, private_netns,
    upstream::{Dnsmasq, FakeProvider, RecordingServer, TestCa, header},
};

/// The provider's API (`api.test`).
pub const API_ADDR: &str = "203.0.113.10";
/// The provider's key API (`provider.test`).
pub const PROVIDER_ADDR: &str = "203.0.113.20";

/// The provider's tool for the exec rotator: `create` mints a key (added to the store
/// unless `--forget`; appended to `<store>.minted`), `revoke` removes one; it also says
/// on stderr what it minted (the agent's log must not repeat it). It authenticates with
/// the key being replaced, or (`--admin`) with an account of its own, which can replace
/// a key the provider already revoked. Its argv: the store, then the flags.
pub const EXEC_ROTATOR: &str = r#"
import json, secrets, sys
store, forget, admin = sys.argv[1], "--forget" in sys.argv, "--admin" in sys.argv
req = json.load(sys.stdin)
with open(store) as f:
    live = json.load(f)
if req["op"] == "create":
    if req["secret"] not in live and not admin:
        sys.exit(3)
    new = "key-new-" + secrets.token_hex(16)
    if not forget:
        live.append(new)
    with open(store + ".minted", "a") as f:
        f.write(new + "\n")
    print("minted " + new + " for " + req["account"], file=sys.stderr)
    print(json.dumps({"secret": new}))
elif req["op"] == "revoke":
    live = [k for k in live if k != req["secret"]]
with open(store, "w") as f:
    json.dump(live, f)
"#;

/// The key API's first state: its admin key, its live keys, and how long its `hang`
/// mode waits.
pub struct KeyApi<'a> {
    pub admin: &'a str,
    pub keys: &'a [&'a str],
    pub hang_secs: f64,
}

/// One test's provider: every part is killed or removed on drop (its folder is the
/// test's to remove).
pub struct Provider {
    pub dir: PathBuf,
    pub ca: TestCa,
    pub api: RecordingServer,
    pub keys_api: Option<FakeProvider>,
    pub dns: Dnsmasq,
    dns_port: u16,
}

impl Provider {
    /// The namespace, CA, API, key API (when `key_api` says how it starts) and a
    /// resolver on `dns_port`; the test's folder is `hb-<name>-<pid>` in the temp dir.
    pub fn start(name: &str, dns_port: u16, key_api: Option<KeyApi<'_>>) -> Self {
        let with_key_api = key_api.is_some();
        let addrs: &[&str] = if with_key_api {
            &[API_ADDR, PROVIDER_ADDR]
        } else {
            &[API_ADDR]
        };
        private_netns(addrs);
        let dir = std::env::temp_dir().join(format!("hb-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let ca = TestCa::new(&dir, "trusted");
        let api_cert = ca.issue("api", &["api.test"]);
        let api = RecordingServer::start(&dir, API_ADDR, 443, Some(&api_cert));
        let keys_api = key_api.map(|k| {
            let cert = ca.issue("provider", &["provider.test"]);
            FakeProvider::start(
                &dir.join("provider"),
                PROVIDER_ADDR,
                443,
                &cert,
                k.admin,
                k.keys,
                k.hang_secs,
            )
        });
        let mut names: Vec<(&str, &[&str])> = vec![("api.test", &[API_ADDR])];
        if with_key_api {
            names.push(("provider.test", &[PROVIDER_ADDR]));
        }
        let dns = Dnsmasq::start("127.0.0.1", dns_port, &names, &[], 60);
        Self {
            dir,
            ca,
            api,
            keys_api,
            dns,
            dns_port,
        }
    }

    /// The agent config's `[broker]` (trusting the test CA, `broker_extra` added),
    /// `[dns]` (this world's resolver) and `[egress]` (the test range reachable).
    pub fn config_head(&self, broker_extra: &str) -> String {
        crate::tls_broker_config(&self.ca.cert, self.dns_port, broker_extra)
    }

    /// A key store `file` in the test's folder holding `keys` (what the API accepts
    /// when a call names it in `?file=`).
    pub fn key_store(&self, file: &str, keys: &[&str]) -> PathBuf {
        let path = self.dir.join(file);
        fs::write(&path, serde_json::to_string(keys).expect("json")).expect("store");
        path
    }

    /// An agent `name` of this world whose integration `svc` (bearer, host `api.test`,
    /// `GET` and `POST`, account `bot` = `key`) rotates through [`EXEC_ROTATOR`] (its store
    /// `keys.json` holding `key`) on one-second sensor buckets, a spike at 8 calls a
    /// bucket over 2 buckets after an hour of learning, and is bound to two policies:
    /// `web` and `ops`; started. The world of the spread-flood attacks.
    pub fn shared_account_agent(&self, name: &str, key: &str) -> TestEnv {
        self.shared_account_agent_sensing(
            name,
            key,
            "sensor_bucket_secs = 1
spike_hard_cap = 8
spike_buckets = 2
             spike_learning_secs = 3600
",
        )
    }

    /// [`Provider::shared_account_agent`] with `sensing` (whole lines of `svc`'s
    /// `[integration.rotation]`: its sensor, spike and quarantine) in place of its own.
    pub fn shared_account_agent_sensing(&self, name: &str, key: &str, sensing: &str) -> TestEnv {
        let config = format!(
            r#"{head}
[[integration]]
name = "svc"
auth = "bearer"
hosts = ["api.test"]
methods = ["GET", "POST"]
verify_url = "https://api.test/plain?step=verify"

[integration.rotation]
exec = ["{python}", "{rotator}", "{keys}"]
{sensing}
[[policy]]
name = "web"
integrations = ["svc"]

[[policy]]
name = "ops"
integrations = ["svc"]
"#,
            head = self.config_head(""),
            python = crate::python(),
            rotator = self.exec_rotator().display(),
            keys = self.key_store("keys.json", &[key]).display(),
        );
        let mut env = TestEnv::new(name, &config);
        env.init_vault(&[("svc", "bot", key)]);
        env.start_agent();
        env
    }

    /// The config of integration `name` (bearer, host `api.test`, `GET` and `POST`), its
    /// key checked against the key store `keys` (the check's log step: `verify_step`) and
    /// rotated by [`EXEC_ROTATOR`] minting into that store, as `rotation` (whole lines of
    /// its `[integration.rotation]`) says.
    pub fn exec_rotated(
        &self,
        name: &str,
        keys: &Path,
        verify_step: &str,
        rotation: &str,
    ) -> String {
        format!(
            r#"
[[integration]]
name = "{name}"
auth = "bearer"
hosts = ["api.test"]
methods = ["GET", "POST"]
verify_url = "https://api.test/keys?file={keys}&step={verify_step}"

[integration.rotation]
exec = ["{python}", "{rotator}", "{keys}"]
{rotation}"#,
            keys = keys.display(),
            python = crate::python(),
            rotator = self.exec_rotator().display(),
        )
    }

    /// [`EXEC_ROTATOR`], written in the test's folder.
    pub fn exec_rotator(&self) -> PathBuf {
        let path = self.dir.join("rotator.py");
        fs::write(&path, EXEC_ROTATOR).expect("rotator");
        path
    }
}

/// The config of integration `svc` (bearer, host `api.test`), its key checked against
/// the key store `keys` (`verify_query`: more of the check's query, e.g. `&hold=PATH`),
/// rotated as `rotation` (whole lines of its `[integration.rotation]`) says on the test
/// clock: watched for a second, a failed step tried again after 1 s, at most 2 s apart.
pub fn svc_rotated(keys: &Path, verify_query: &str, rotation: &str) -> String {
    format!(
        r#"
[[integration]]
name = "svc"
auth = "bearer"
hosts = ["api.test"]
verify_url = "https://api.test/keys?file={keys}{verify_query}&step=verify"

[integration.rotation]
watch_secs = 1
retry_base_secs = 1
retry_cap_secs = 2
{rotation}
"#,
        keys = keys.display(),
    )
}

/// Begins a rotation of `svc`'s account `bot` (`rotation trigger`, not waiting for it);
/// its id.
pub fn begin_rotation(env: &TestEnv) -> String {
    let begun = env.hb(&["rotation", "trigger", "-i", "svc", "-a", "bot", "--json"]);
    assert!(
        begun.status.success(),
        "{}",
        String::from_utf8_lossy(&begun.stderr)
    );
    let r: Value = serde_json::from_slice(&begun.stdout).expect("rotation JSON");
    r["id"].as_str().expect("id").to_owned()
}

/// An agent environment for `config`, its vault initialised.
pub fn agent_env(name: &str, config: &str) -> TestEnv {
    let env = TestEnv::new(name, config);
    env.init_vault(&[]);
    env
}

/// The keys a key store holds.
pub fn store(path: &Path) -> Vec<String> {
    serde_json::from_str(&fs::read_to_string(path).expect("key store")).expect("JSON")
}

/// The keys the exec rotator minted into `store`, oldest first.
pub fn minted(store: &Path) -> Vec<String> {
    let mut path = store.as_os_str().to_owned();
    path.push(".minted");
    fs::read_to_string(PathBuf::from(path))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The bearer each API request of `step` (its URL ending `step=<step>`) carried.
pub fn bearers(api: &RecordingServer, step: &str) -> Vec<String> {
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

/// Asserts that no key of `keys` is in any of `outputs` (each named for the message):
/// no key in anything a test's clients, the CLI or the agent printed, logged or wrote.
pub fn assert_no_key_in<K: AsRef<str>>(
    keys: impl IntoIterator<Item = K>,
    outputs: &[(&str, &str)],
) {
    for key in keys {
        for (name, text) in outputs {
            assert!(!text.contains(key.as_ref()), "a key in the {name} output");
        }
    }
}

/// The rotation `id` from `rotation history` once its step is one of `steps` (within
/// `secs`).
pub fn wait_for_step(env: &TestEnv, id: &str, steps: &[&str], secs: u64) -> Value {
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
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A sandbox's python program: the client prelude, `consts` as Python string
/// constants, then `body`.
pub fn client_script(consts: &[(&str, String)], body: &str) -> String {
    let prelude = crate::py_client_prelude();
    let mut script =
        format!("import sys, json, time\n{prelude}from hb_client import Client, BrokerError\n");
    for (name, value) in consts {
        script += &format!("{name} = {value:?}\n");
    }
    script + body
}
