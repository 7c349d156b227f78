//! A twenty-ninth attack review, run as the process inside the sandbox: each test performs
//! one attack from a sandbox (uid 65534, arbitrary Python) against the real agent and a
//! real upstream on the test namespace's `lo`, and asserts the secure outcome; it prints
//! a `figure:` line saying what the attacker got.
//!
//! Angle: what an upstream's answer carries back, the resolver as a gateway, and the
//! broker's resources held by one tenant.
//!
//! Found:
//! - another tenant's credential in an answer in quoted-printable (RFC 2045: a raw mail
//!   message as a mail API returns it, the provider's "your new key" mail in a shared
//!   inbox) came back whole once decoded: a soft line break (`=` CRLF, at column 76)
//!   inside the value and each `=` of the value written `=3D` match no form the
//!   scrubber looks for, and such a value is not the call's own, so no run of it is
//!   watched either. On b600072, of 3 raw messages holding a live key of another
//!   tenant (one cut by a soft break, one with `=3D`, one cut by a soft break in a JSON
//!   answer's string), 3 gave the key back decodable, and no `response_unheld`
//!   reflection was raised. The spread view of an answer (`cut_spread` in the broker)
//!   now also reads quoted-printable in text that declares it (`quoted-printable`):
//!   soft line breaks dropped (also as a JSON string writes them), `=XX` of printable
//!   ASCII decoded; 0 of 3, each key's account signalled.
//!
//! Held, tested ([`the_callers_key_put_back_in_an_answers_framing_never_comes_back`],
//! the call's own key, an account each): a 302 whose `Location` holds it as a query
//! parameter (the 302 returned, the value redacted); its halves in two header lines of
//! one name (`credential_fragment`); a header named by it, a chunked body's trailer
//! field (the client keeps data frames only), `Content-Encoding: gzip, gzip` and
//! `gzip, identity`, gzip of 70 000 bytes with it across the 64 KiB mark, a 103 whose
//! `Link` holds it then a 200, `Content-Length` beside `Transfer-Encoding: chunked`, a
//! body longer than its `Content-Length`, `Set-Cookie`, `WWW-Authenticate` (200,
//! redacted or cut off); an unknown `Content-Encoding` (`unreadable_response`). Of 13,
//! 0 gave a run of 8 of its characters back, on b600072 and now.
//! Held, read in the code (not tested): the resolver answers every type but A and AAAA
//! `REFUSED` (so `HTTPS`/`SVCB` hints, `ANY`, `SRV` never reach a sandbox), judges
//! every A/AAAA of the answer section whatever name owns it (the additional section is
//! never read) and a TCP retry's answer as the UDP one's; the broker's own resolution
//! judges both replies whole before following the CNAME chain.
//! Not checked (no time): the resolver with a hostile DNS server (TTL 0 then another
//! answer, a TC answer whose TCP answer differs, 0x20 and trailing dots), and item 3 of
//! the brief (slowloris, held connections, pipelining, unread answers, trickling
//! upstreams) beyond what `broker_limits.rs` and reviews 3 and 23 cover.
//!
//! Still weak: the whole-value scan of a credential the call did not carry misses forms
//! no listed encoder writes but a caller could undo — the value upper-cased, cut by a
//! hard line break with fewer than 16 of its characters before it, with zero-width
//! characters between its characters, every byte as `\xNN` or `0xNN,`, base32 (probed
//! by a unit test on b600072's scrubber, not kept). The quoted-printable view is built
//! only where the text spells `quoted-printable` in one of three cases, and decodes
//! `=XX` of printable ASCII only (a non-ASCII value's UTF-8 bytes stay escaped).
//!
//! Everything lives on `lo` in the test's own network namespace; dnsmasq answers the
//! test names; the upstream is a Python HTTPS server started by the test.

use hb_tests::{
    TestEnv,
    sandboxed::nobody_broker_client,
    worlds::{PythonApi, two_tenants},
};

const DNS_PORT: u16 = 5729;

/// The provider's API, where both tenants' integrations send their credentials.
const API: &str = "api.provider.test";

/// The attacker's own credential (integration `p`): fake, made for this file.
const OWN: &str = "own-2b7e4c9a1f3d5e8b0c6a2d4f7e9b1c3a";

/// Another tenant's credentials (integration `v`, policy `other`, accounts `bot` and
/// `ops`): fakes made for this file that no token family matches; the second ends in
/// base64 padding, as storage account keys do.
const VICTIMS: [(&str, &str); 3] = [
    ("bot", "vk5c8e1a7d3f9b2e6c0a4d8f1b5e9c3a7d2f6b0e"),
    ("ops", "vq3e8b1d6f0a9c2e7b4d1f8a5c2e9b6d3f0a7c4e1b=="),
    ("ci", "vm8a2c6e0b4d9f3a7c1e5b8d2f6a0c4e9b3d7f1a"),
];

/// The provider's mail API: `/mail/N` answers the raw message N (`text/plain`, as a
/// mail API's raw view) whose body is quoted-printable (Python's `quopri`, 76 columns),
/// a line of text and then `victims[N]`: message 0's line is long enough that its soft
/// line break falls inside the key; message 1's is not, but its key holds `=`, written
/// `=3D`; message 2 is as message 0, inside a JSON answer (`{"RawSource": …}`, as mail
/// APIs give a stored message's source).
const MAIL_PY: &str = r#"
import quopri
class H(TlsHandler):
    def do_GET(self):
        n = int(self.path.split("/")[-1])
        lead = ("Here is the new one, as asked for on the console:", "Here it is:")[n % 2]
        text = (lead + " " + victims[n] + "\n").encode()
        body = (b"From: keys@provider.test\r\nSubject: your new key\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                + quopri.encodestring(text).replace(b"\n", b"\r\n"))
        ctype = "text/plain"
        if n == 2:
            body, ctype = json.dumps({"RawSource": body.decode()}).encode(), "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
"#;

/// Integration `p` (the attacker's, bearer, GET) and `v` (another tenant's), both on the
/// provider's API; policy `web` binds `p`, policy `other` binds `v`; the API's handler
/// is `handler` (Python defining `H`, a `TlsHandler`, with `victims` in scope).
struct World {
    env: TestEnv,
    _api: PythonApi,
}

impl World {
    fn with(name: &str, handler: &str) -> Self {
        Self::with_more(name, handler, &[])
    }

    /// The world with `extra` credentials (integration, account, secret) in the vault
    /// beside [`OWN`] and [`VICTIMS`].
    fn with_more(name: &str, handler: &str, extra: &[(&str, &str, &str)]) -> Self {
        let victims: Vec<&str> = VICTIMS.iter().map(|(_, k)| *k).collect();
        let api = PythonApi::start(
            name,
            DNS_PORT,
            &[API],
            &format!("victims = {victims:?}\n{handler}"),
        );
        let body = two_tenants(API, &["GET"], false);
        let mut credentials = vec![("p", "bot", OWN)];
        credentials.extend(VICTIMS.iter().map(|(a, k)| ("v", *a, *k)));
        credentials.extend_from_slice(extra);
        let env = api.names.agent(name, "", &body, &credentials);
        // The other tenant uses its credentials: the broker holds them decrypted.
        let taken = nobody_broker_client(
            &env,
            "other",
            r#"print(json.dumps([hb.handle("v", a)["handle"] is not None for a in ("bot", "ops", "ci")]))"#,
            &[],
        );
        assert_eq!(taken, serde_json::json!([true, true, true]), "{taken}");
        Self { env, _api: api }
    }
}

/// `text` decoded as quoted-printable (RFC 2045: soft line breaks dropped, `=XX` as
/// the byte), as the attacker decodes a raw message.
fn quoted_printable_decoded(text: &str) -> String {
    let text = text.replace("=\r\n", "").replace("=\n", "");
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let byte = (b[i] == b'=')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match byte {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Another tenant's live credential in a raw mail message the attacker reads with its
/// own handle, in quoted-printable (a soft line break inside it; its `=` as `=3D`),
/// never comes back in a form the attacker decodes.
#[test]
fn another_tenants_key_in_quoted_printable_never_comes_back() {
    let w = World::with("review29-qp", MAIL_PY);
    let script = r#"
h = hb.handle("p", "bot")["handle"]
out = []
for n in range(3):
    out.append(attempt(lambda: hb.request("GET", "https://api.provider.test/mail/%d" % n, handle=h)))
print(json.dumps(out))
"#;
    let got = nobody_broker_client(&w.env, "web", script, &[]);
    let answers = got.as_array().expect("answers");
    let mut leaked = 0;
    let mut shown = Vec::new();
    for (answer, (_, victim)) in answers.iter().zip(VICTIMS) {
        let text = answer.to_string();
        let body = answer["body"].as_str().unwrap_or_default();
        // A JSON answer's raw message, as the attacker reads it.
        let raw = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["RawSource"].as_str().map(str::to_owned))
            .unwrap_or_else(|| body.to_owned());
        let decoded = quoted_printable_decoded(&raw);
        let found = text.contains(victim) || decoded.contains(victim);
        leaked += usize::from(found);
        // The message's last line, where the key is (the headers before it are fixed).
        let last = decoded.trim_end().lines().last().unwrap_or_default();
        shown.push(last.replace(victim, "<victim>"));
        assert!(
            answer["status"] == 200 || answer["error"].is_string(),
            "{}",
            text.replace(victim, "<victim>")
        );
    }
    let signalled: Vec<String> = w
        .env
        .audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "detector" && r["seen"] == "response_unheld")
        .map(|r| format!("{}/{}", r["integration"], r["account"]).replace('"', ""))
        .collect();
    println!(
        "figure: raw messages that gave another tenant's key back decodable: {leaked} of {} \
         (decoded, the key's line: {shown:?}); response_unheld signals: {signalled:?}",
        answers.len()
    );
    assert_eq!(
        leaked, 0,
        "another tenant's key came back in quoted-printable"
    );
    for (account, _) in VICTIMS {
        assert!(
            signalled.contains(&format!("v/{account}")),
            "v/{account}'s key was shown and not signalled: {signalled:?}"
        );
    }
}

/// The provider's echo API: `/echo/V` answers with the caller's bearer token (`k`) put
/// back in the way `V` names, the framing written by hand: `location` (a 302 whose
/// `Location` holds it as a query parameter), `split` (its halves in two header lines
/// of one name), `name` (a header named by it), `trailer` (a chunked body's trailer
/// field), `gzip2` (`Content-Encoding: gzip, gzip`), `gzid` (`gzip, identity`),
/// `unknown` (`Content-Encoding: compress`), `straddle` (gzip of 70 000 bytes of text
/// and then it, across the decoder's and any 64 KiB chunk's edge), `early` (a 103 whose
/// `Link` holds it, then a 200), `clte` (both `Content-Length` and `Transfer-Encoding:
/// chunked`), `longer` (a body longer than its `Content-Length`, it past the end),
/// `cookie` (`Set-Cookie`), `www` (`WWW-Authenticate`).
const ECHO_PY: &str = r#"
import gzip
class H(TlsHandler):
    def do_GET(self):
        v = self.path.split("/")[-1]
        k = self.headers.get("Authorization", "")[7:]
        kb = k.encode()
        status, headers, body, raw = "200 OK", [], b"ok\n", None
        if v == "location":
            status, headers = "302 Found", [("Location", "https://elsewhere.test/cb?api_key=" + k)]
        elif v == "split":
            headers = [("X-Echo", k[:18]), ("X-Echo", k[18:])]
        elif v == "name":
            headers = [("X-" + k, "1")]
        elif v == "trailer":
            raw = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
                   b"Trailer: X-Echo\r\n\r\n3\r\nok\n\r\n0\r\nX-Echo: " + kb + b"\r\n\r\n")
        elif v in ("gzip2", "gzid"):
            once = gzip.compress(b"you sent " + kb + b"\n")
            body = gzip.compress(once) if v == "gzip2" else once
            headers = [("Content-Encoding", "gzip, gzip" if v == "gzip2" else "gzip, identity")]
        elif v == "unknown":
            body, headers = b"you sent " + kb + b"\n", [("Content-Encoding", "compress")]
        elif v == "straddle":
            body, headers = gzip.compress(b"a" * 65530 + b" " + kb + b" " + b"b" * 4000), [("Content-Encoding", "gzip")]
        elif v == "early":
            raw = (b"HTTP/1.1 103 Early Hints\r\nLink: </cb?api_key=" + kb + b">; rel=preload\r\n\r\n"
                   b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n")
        elif v == "clte":
            chunk = b"you sent " + kb + b"\n"
            raw = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n" + (b"%x\r\n" % len(chunk)) + chunk + b"\r\n0\r\n\r\n")
        elif v == "longer":
            raw = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
                   b"Connection: close\r\n\r\nok\n" + kb + b"\n")
        elif v == "cookie":
            headers = [("Set-Cookie", "s=" + k + "; Path=/; HttpOnly")]
        elif v == "www":
            headers = [("WWW-Authenticate", 'Bearer realm="api", error="insufficient_scope", token="' + k + '"')]
        if raw is None:
            head = "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % (status, len(body))
            head += "".join("%s: %s\r\n" % (a, b) for a, b in headers)
            raw = head.encode() + b"\r\n" + body
        self.wfile.write(raw)
        self.wfile.flush()
        if b"Connection: close" in raw:
            self.close_connection = True
"#;

/// The ways [`ECHO_PY`] puts the caller's key back.
const ECHOES: [&str; 13] = [
    "location", "split", "name", "trailer", "gzip2", "gzid", "unknown", "straddle", "early",
    "clte", "longer", "cookie", "www",
];

/// Every string in `v`, object keys included.
fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| {
            out.push(k.clone());
            strings(x, out);
        }),
        _ => {}
    }
}

/// The key of integration `p`'s account `e{i}`, the one [`ECHOES`]`[i]` is tried with
/// (an echo that is a fragment hit bars the caller from that account only): fake,
/// made for this file.
fn echo_key(i: usize) -> String {
    let bits = (i as u128 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    format!("ek{i:02}-{bits:032x}")
}

/// The caller's own key, echoed by the provider in any of [`ECHOES`] (each with an
/// account of its own), never comes back whole nor as a run of 8 of its characters
/// (any case) in any string of the answer: each answer is the echo scrubbed, or an
/// error.
#[test]
fn the_callers_key_put_back_in_an_answers_framing_never_comes_back() {
    let keys: Vec<String> = (0..ECHOES.len()).map(echo_key).collect();
    let accounts: Vec<String> = (0..ECHOES.len()).map(|i| format!("e{i}")).collect();
    let extra: Vec<(&str, &str, &str)> = accounts
        .iter()
        .zip(&keys)
        .map(|(a, k)| ("p", a.as_str(), k.as_str()))
        .collect();
    let w = World::with_more("review29-echo", ECHO_PY, &extra);
    let script = format!(
        r#"
out = {{}}
for i, v in enumerate({ECHOES:?}):
    h = hb.handle("p", "e%d" % i)["handle"]
    out[v] = attempt(lambda: hb.request("GET", "https://{API}/echo/" + v, handle=h))
print(json.dumps(out))
"#
    );
    let got = nobody_broker_client(&w.env, "web", &script, &[]);
    let mut back = Vec::new();
    let mut outcomes = Vec::new();
    for (v, key) in ECHOES.iter().zip(&keys) {
        let key = key.to_ascii_lowercase();
        let mut all = Vec::new();
        strings(&got[v], &mut all);
        let text = all.join("\n").to_ascii_lowercase();
        if (0..=key.len() - 8).any(|i| text.contains(&key[i..i + 8])) {
            back.push(*v);
        }
        let outcome = got[v]["error"]
            .as_str()
            .map_or_else(|| format!("{}", got[v]["status"]), str::to_owned);
        outcomes.push(format!("{v}: {outcome}"));
    }
    println!(
        "figure: echoes that gave the caller's key back: {} of {} {back:?} ({})",
        back.len(),
        ECHOES.len(),
        outcomes.join(", ")
    );
    assert!(back.is_empty(), "the key came back: {back:?}");
}
