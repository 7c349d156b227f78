//! The broker's outbound path end to end, through the hidden `hb-agent __outbound`
//! command: real DNS (dnsmasq), real HTTP and HTTPS upstreams that record what they
//! receive, a test CA trusted through `broker.extra_ca_file`, and listeners on private
//! addresses that must never see a connection. Everything lives on `lo` in the test's
//! own network namespace.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use hb_tests::{
    TcpProbe, TestEnv, agent_bin, private_netns,
    upstream::{Dnsmasq, RecordingServer, TestCa, header},
};
use serde_json::Value;

const DNS_PORT: u16 = 5400;
/// The response size limit of the test config.
const LIMIT: usize = 4096;

/// One test's world: names, upstreams, probes and the config that trusts the test CA.
struct World {
    env: TestEnv,
    /// https://api.test (cert for api.test) on 203.0.113.10:443.
    api: RecordingServer,
    /// http://api.test:8080.
    api_http: RecordingServer,
    /// https://other.test (cert for other.test) on 203.0.113.11:443.
    other: RecordingServer,
    /// https://wrong.test on 203.0.113.12:443, presenting a cert for someone-else.test.
    wrong: RecordingServer,
    /// https://untrusted.test on 203.0.113.13:443, cert from a CA nobody trusts.
    untrusted: RecordingServer,
    /// Port 80 on every address of the namespace, plus 443 on the private ones.
    probes: Vec<TcpProbe>,
    _dns: Dnsmasq,
    /// The CAs' folder (`broker.extra_ca_file` is read by every call).
    ca_dir: std::path::PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.ca_dir);
    }
}

impl World {
    fn new(name: &str, extra_broker: &str) -> Self {
        hb_tests::require_root();
        private_netns(&[
            "203.0.113.10",
            "203.0.113.11",
            "203.0.113.12",
            "203.0.113.13",
            "10.0.0.1",
            "169.254.169.254",
            "203.0.113.20",
        ]);
        let dir =
            std::env::temp_dir().join(format!("hb-outbound-ca-{name}-{}", std::process::id()));
        let ca = TestCa::new(&dir, "trusted");
        let rogue = TestCa::new(&dir, "rogue");
        let config = format!(
            r#"
[broker]
extra_ca_file = "{ca}"
upstream_timeout_secs = 2
max_response_bytes = {LIMIT}
{extra_broker}

[dns]
upstreams = ["127.0.0.1:{DNS_PORT}"]
min_ttl_secs = 1
max_ttl_secs = 5

[egress]
exception_cidrs = ["203.0.113.0/24"]
"#,
            ca = ca.cert.display()
        );
        let env = TestEnv::new(name, &config);
        let dns = Dnsmasq::start(
            "127.0.0.1",
            DNS_PORT,
            &[
                ("api.test", &["203.0.113.10"]),
                ("other.test", &["203.0.113.11"]),
                ("wrong.test", &["203.0.113.12"]),
                ("untrusted.test", &["203.0.113.13"]),
                ("private.test", &["10.0.0.1"]),
                ("loop.test", &["127.0.0.1"]),
                ("metadata.test", &["169.254.169.254"]),
                ("loop6.test", &["::1"]),
                ("mapped.test", &["::ffff:127.0.0.1"]),
                ("mixed.test", &["203.0.113.10", "::1"]),
                ("bench.test", &["203.0.113.20"]),
            ],
            &[("cname.test", "private.test"), ("alias.test", "api.test")],
            5,
        );
        let api_leaf = ca.issue("api", &["api.test"]);
        let other_leaf = ca.issue("other", &["other.test"]);
        let wrong_leaf = ca.issue("someone-else", &["someone-else.test"]);
        let rogue_leaf = rogue.issue("untrusted", &["untrusted.test"]);
        let state = env.state_dir.clone();
        Self {
            api: RecordingServer::start(&state, "203.0.113.10", 443, Some(&api_leaf)),
            api_http: RecordingServer::start(&state, "203.0.113.10", 8080, None),
            other: RecordingServer::start(&state, "203.0.113.11", 443, Some(&other_leaf)),
            wrong: RecordingServer::start(&state, "203.0.113.12", 443, Some(&wrong_leaf)),
            untrusted: RecordingServer::start(&state, "203.0.113.13", 443, Some(&rogue_leaf)),
            probes: vec![
                TcpProbe::bind("[::]:80"),
                TcpProbe::bind("127.0.0.1:443"),
                TcpProbe::bind("10.0.0.1:443"),
                TcpProbe::bind("169.254.169.254:443"),
                TcpProbe::bind("[::1]:443"),
            ],
            _dns: dns,
            env,
            ca_dir: dir,
        }
    }

    /// `hb-agent __outbound … ARGS` with `credentials` on stdin; its JSON output.
    fn call(&self, args: &[&str], credentials: &str) -> Value {
        let mut child = Command::new(agent_bin())
            .arg("--config")
            .arg(&self.env.config_path)
            .arg("__outbound")
            .args(args)
            .args(if credentials.is_empty() {
                &[][..]
            } else {
                &["--credentials-stdin"][..]
            })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hb-agent __outbound");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(credentials.as_bytes())
            .expect("write credentials");
        let out = child.wait_with_output().expect("hb-agent __outbound");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "hb-agent __outbound {args:?}: not JSON ({e}): {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let ok = v.get("error").is_none();
        assert_eq!(
            out.status.success(),
            ok,
            "exit status {} does not match the output {v}",
            out.status
        );
        v
    }

    fn get(&self, url: &str) -> Value {
        self.call(&["GET", url], "")
    }

    /// Connections the private listeners accepted.
    fn probe_connections(&self) -> usize {
        self.probes.iter().map(TcpProbe::accepted).sum()
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error: {v}"))
}

fn response_header<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
}

#[test]
fn https_with_the_test_ca_verifies_the_hostname() {
    let w = World::new("https", "");
    let v = w.get("https://api.test/hello?x=1");
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["body"], "ok GET /hello?x=1");
    assert_eq!(v["final_url"], "https://api.test/hello?x=1");
    let seen = w.api.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(header(&seen[0], "host"), Some("api.test"));

    // A certificate for another name fails the handshake.
    let v = w.get("https://wrong.test/");
    assert_eq!(code(&v), "upstream_error", "{v}");
    let msg = v["error"]["message"].as_str().expect("message");
    assert!(
        msg.contains("wrong.test") && msg.contains("TLS") && msg.contains("not valid for name"),
        "{msg}"
    );
    // And one from a CA that extra_ca_file does not name.
    let v = w.get("https://untrusted.test/");
    assert_eq!(code(&v), "upstream_error", "{v}");
    let msg = v["error"]["message"].as_str().expect("message");
    assert!(msg.contains("UnknownIssuer"), "{msg}");
    assert!(w.wrong.requests().is_empty() && w.untrusted.requests().is_empty());

    // A name reached through a CNAME chain ending at a public address works.
    let v = w.get("http://alias.test:8080/via-cname");
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(
        header(&w.api_http.requests()[0], "host"),
        Some("alias.test:8080")
    );
}

#[test]
fn names_with_private_answers_are_rejected_without_a_connection() {
    let w = World::new("dnsreject", "");
    for (name, addr) in [
        ("private.test", "10.0.0.1"),
        ("loop.test", "127.0.0.1"),
        ("metadata.test", "169.254.169.254"),
        ("loop6.test", "::1"),
        ("mapped.test", "::ffff:127.0.0.1"),
        ("mixed.test", "::1"),
        ("cname.test", "10.0.0.1"),
    ] {
        for scheme in ["http", "https"] {
            let v = w.get(&format!("{scheme}://{name}/"));
            assert_eq!(code(&v), "dns_rejected", "{name}: {v}");
            let msg = v["error"]["message"].as_str().expect("message");
            assert!(msg.contains(name) && msg.contains(addr), "{msg}");
        }
    }
    assert_eq!(w.probe_connections(), 0, "a private listener was reached");
    assert!(
        w.api.requests().is_empty(),
        "mixed.test's public half was used"
    );

    let v = w.get("http://nonexistent.test/");
    assert_eq!(code(&v), "upstream_error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nonexistent.test") && m.contains("NXDOMAIN")),
        "{v}"
    );
}

#[test]
fn private_ip_literals_in_any_spelling_are_refused_without_a_connection() {
    let w = World::new("literals", "");
    for url in [
        "http://2130706433/",
        "http://0x7f000001/",
        "http://017700000001/",
        "http://127.1/",
        "http://127.0.1/",
        "http://0x7f.1/",
        "http://127.0.0.1./",
        "http://[::ffff:7f00:1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::]/",
        "http://[::1]/",
        "http://0/",
        "http://10.1/",
        "http://0xa9fea9fe/",
        "http://[64:ff9b::7f00:1]/",
        "https://2130706433/",
        "https://[::1]/",
    ] {
        let v = w.get(url);
        assert_eq!(code(&v), "policy_denied", "{url}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("deny ranges")),
            "{v}"
        );
    }
    for url in [
        "http://[fe80::1%25lo]/",
        "http://user:pw@api.test/",
        "http://api.test/#x",
        "ftp://api.test/",
    ] {
        let v = w.get(url);
        assert_eq!(code(&v), "bad_request", "{url}: {v}");
    }
    assert_eq!(w.probe_connections(), 0, "a private listener was reached");
}

#[test]
fn redirects_are_returned_unless_following_is_on() {
    let w = World::new("redirect-off", "");
    let v = w.call(
        &[
            "GET",
            "https://api.test/redirect?to=https://other.test/landing",
        ],
        "header X-Api-Key: tok-123\n",
    );
    assert_eq!(v["status"], 302, "{v}");
    assert_eq!(
        response_header(&v, "location"),
        Some("https://other.test/landing")
    );
    assert!(w.other.requests().is_empty());
    assert_eq!(header(&w.api.requests()[0], "x-api-key"), Some("tok-123"));
}

#[test]
fn followed_redirects_carry_the_credential_only_on_its_origin() {
    let w = World::new("redirect-on", "follow_redirects = true");
    let creds = "header X-Api-Key: tok-123\nquery api_key=tok-q\n";

    // Same origin: the credential stays, on both requests.
    let v = w.call(&["GET", "https://api.test/redirect?to=/landing"], creds);
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["final_url"], "https://api.test/landing");
    let seen = w.api.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for r in &seen {
        assert_eq!(header(r, "x-api-key"), Some("tok-123"), "{r}");
        assert!(
            r["path"]
                .as_str()
                .is_some_and(|p| p.contains("api_key=tok-q")),
            "{r}"
        );
    }
    // (The test server echoes its request line in the body; bodies belong to the
    // scrubber, not to this path.) Nothing else in the answer carries it.
    assert!(
        !v["final_url"].to_string().contains("tok-") && !v["headers"].to_string().contains("tok-"),
        "credential in the answer: {v}"
    );

    // Another host: the credential is gone there, and its first hop still had it.
    let v = w.call(
        &[
            "POST",
            "https://api.test/redirect?to=https://other.test/landing&code=307",
            "--data",
            "payload",
        ],
        creds,
    );
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["final_url"], "https://other.test/landing");
    assert_eq!(v["body"], "ok POST /landing");
    let at_api = w.api.requests();
    assert_eq!(header(&at_api[2], "x-api-key"), Some("tok-123"));
    let at_other = w.other.requests();
    assert_eq!(at_other.len(), 1, "{at_other:?}");
    assert_eq!(at_other[0]["body"], "payload", "307 keeps the body");
    assert!(
        !w.other.log_text().contains("tok-"),
        "the credential reached the other host: {}",
        w.other.log_text()
    );

    // 303 turns POST into GET without the body.
    let v = w.call(
        &[
            "POST",
            "https://api.test/redirect?to=https://other.test/seen&code=303",
            "--data",
            "payload",
        ],
        creds,
    );
    assert_eq!(v["body"], "ok GET /seen", "{v}");
    assert_eq!(w.other.requests()[1]["body"], "");

    // The hop policy can refuse a hop before any connection, or strip the credential.
    let v = w.call(
        &[
            "GET",
            "https://api.test/redirect?to=https://other.test/no",
            "--deny-hop",
            "other.test",
        ],
        creds,
    );
    assert_eq!(code(&v), "policy_denied", "{v}");
    assert_eq!(w.other.requests().len(), 2);
    let v = w.call(
        &[
            "GET",
            "https://api.test/redirect?to=/stripped",
            "--strip-hop",
            "api.test",
        ],
        creds,
    );
    assert_eq!(v["status"], 200, "{v}");
    let last = w.api.requests().pop().expect("request");
    assert_eq!(last["path"], "/stripped");
    assert_eq!(header(&last, "x-api-key"), None, "{last}");

    // Each hop is judged like a first URL: private names and literals are refused.
    let v = w.get("https://api.test/redirect?to=http://loop.test/");
    assert_eq!(code(&v), "dns_rejected", "{v}");
    let v = w.get("https://api.test/redirect?to=http://2130706433/");
    assert_eq!(code(&v), "policy_denied", "{v}");
    assert_eq!(w.probe_connections(), 0);

    // Loops end after five redirects.
    let before = w.api.requests().len();
    let v = w.get("https://api.test/loop");
    assert_eq!(code(&v), "upstream_error", "{v}");
    assert_eq!(w.api.requests().len() - before, 6);
}

#[test]
fn secret_response_headers_are_filtered() {
    let w = World::new("filter", "");
    let v = w.get("https://api.test/cookie");
    assert_eq!(v["status"], 200, "{v}");
    for gone in ["set-cookie", "set-cookie2", "authorization"] {
        assert_eq!(response_header(&v, gone), None, "{gone}: {v}");
    }
    assert_eq!(response_header(&v, "www-authenticate"), Some("Bearer"));
    assert_eq!(response_header(&v, "proxy-authenticate"), Some("Basic"));
    assert_eq!(response_header(&v, "x-kept"), Some("yes"));
    assert!(!v.to_string().contains("secret"), "{v}");
}

#[test]
fn request_headers_are_cleaned_and_checked() {
    let w = World::new("reqheaders", "");
    let v = w.call(
        &[
            "POST",
            "https://api.test/echo",
            "--data",
            "hello",
            "--header",
            "Connection: keep-alive, X-Drop",
            "--header",
            "X-Drop: 1",
            "--header",
            "Keep-Alive: timeout=5",
            "--header",
            "Upgrade: websocket",
            "--header",
            "Content-Length: 99",
            "--header",
            "X-Keep: 1",
        ],
        "header Authorization: Bearer cred-abc\n",
    );
    assert_eq!(v["status"], 200, "{v}");
    let r = &w.api.requests()[0];
    assert_eq!(header(r, "x-keep"), Some("1"));
    assert_eq!(header(r, "authorization"), Some("Bearer cred-abc"));
    assert_eq!(header(r, "content-length"), Some("5"));
    assert_eq!(r["body"], "hello");
    for gone in ["x-drop", "keep-alive", "upgrade"] {
        assert_eq!(header(r, gone), None, "{gone}: {r}");
    }

    for bad in [
        "X-A: b\r\nX-Injected: 1",
        "X-A: b\nc",
        "X-A: b\rc",
        "X\r\nB: c",
        "Host: evil.test",
    ] {
        let v = w.call(&["GET", "https://api.test/never", "--header", bad], "");
        assert_eq!(code(&v), "bad_request", "{bad:?}: {v}");
    }
    for cred in ["header X-Key: zq\rvalue\n", "header X-Key: zq\0value\n"] {
        let v = w.call(&["GET", "https://api.test/never"], cred);
        assert_eq!(code(&v), "bad_request", "{v}");
        assert!(!v.to_string().contains("zq"), "value echoed: {v}");
    }
    let v = w.call(&["TRACE", "https://api.test/never"], "");
    assert_eq!(code(&v), "bad_request", "{v}");
    assert_eq!(
        w.api.requests().len(),
        1,
        "a refused request reached the upstream"
    );
}

#[test]
fn size_limit_and_timeout_are_enforced() {
    let w = World::new("limits", "");
    let v = w.get(&format!("https://api.test/big?n={LIMIT}"));
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["body"].as_str().map(str::len), Some(LIMIT));
    let v = w.get(&format!("https://api.test/big?n={}", LIMIT + 1));
    assert_eq!(code(&v), "too_large", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("broker.max_response_bytes")),
        "{v}"
    );
    // A HEAD's Content-Length is the size of a body it does not carry: no limit applies.
    let v = w.call(
        &["HEAD", &format!("https://api.test/big?n={}", LIMIT + 1)],
        "",
    );
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(
        response_header(&v, "content-length"),
        Some((LIMIT + 1).to_string().as_str()),
        "{v}"
    );
    // Without a Content-Length the limit holds while reading.
    let v = w.get(&format!("http://api.test:8080/stream?n={}", LIMIT * 4));
    assert_eq!(code(&v), "too_large", "{v}");
    let v = w.get("http://api.test:8080/stream?n=10");
    assert_eq!(v["body"], "yyyyyyyyyy", "{v}");

    let v = w.get("https://api.test/slow?secs=5");
    assert_eq!(code(&v), "timeout", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("api.test") && m.contains("upstream_timeout_secs")),
        "{v}"
    );

    let v = w.get("https://api.test:9/closed");
    assert_eq!(code(&v), "upstream_error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("203.0.113.10:9") && m.contains("refused")),
        "{v}"
    );
}

#[test]
fn repeated_calls_reuse_one_connection() {
    let w = World::new("pool", "");
    let v = w.call(&["GET", "https://api.test/again", "--repeat", "5"], "");
    assert_eq!(v["status"], 200, "{v}");
    let seen = w.api.requests();
    assert_eq!(seen.len(), 5);
    assert!(
        seen.iter().all(|r| r["conn"] == seen[0]["conn"]),
        "more than one TLS connection for sequential calls: {seen:?}"
    );
}

#[test]
fn a_pooled_connection_the_server_dropped_is_replaced() {
    let w = World::new("stale", "");
    let v = w.call(&["GET", "https://api.test/close", "--repeat", "4"], "");
    assert_eq!(v["status"], 200, "{v}");
    let seen = w.api.requests();
    assert_eq!(seen.len(), 4, "{seen:?}");
    let mut conns: Vec<_> = seen.iter().map(|r| r["conn"].to_string()).collect();
    conns.dedup();
    assert_eq!(conns.len(), 4, "a closed connection was reused: {seen:?}");
}
