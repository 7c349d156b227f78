//! A twenty-eighth attack review, run as the process inside the sandbox: each test performs
//! one attack from a sandbox (uid 65534, arbitrary Python) against the real agent and a
//! real upstream on the test namespace's `lo`, and asserts the secure outcome; it prints
//! a `figure:` line saying what the attacker got.
//!
//! Angle: the broker, the resolver and the operator's screens — what is judged against
//! what is sent, what an upstream's answer carries back, and what reaches an operator.
//!
//! Found:
//! - a credentialed POST (the integration allows POST, not DELETE) still acted as a
//!   DELETE at upstreams that read a method override where review 23's check did not
//!   look: Rack (`Rack::MethodOverride` before Rails or Sinatra) reads the body of a
//!   `multipart/mixed` or `multipart/related` POST as form fields (`parseable_data?`),
//!   and any multipart body without a boundary as a URL-encoded form, so
//!   `_method=DELETE` under those types went out; Laravel (Symfony's `getMethod` over
//!   a JSON body's input) reads `_method` from a JSON object nested up to 512 levels or
//!   holding a number past `f64` (`1e400`, INF), which the check's full parse (128
//!   levels, no such numbers) refused and so never looked into, and from `$_POST`,
//!   which PHP fills for a type it reads up to a space as well as `;` or `,`
//!   (`application/x-www-form-urlencoded x`); Express (body-parser
//!   under method-override reading `req.body._method`) decodes a body through
//!   iconv-lite, which drops a byte order mark, and a JSON body in any `utf-*` charset
//!   (UTF-16 too), where the check read UTF-8 only and a BOM as part of the first
//!   field. On 2740a98, of 9 such POSTs, 9 acted as a DELETE; now each is refused
//!   `policy_denied` before it is sent.
//! - the override check read the media type of the caller's headers, but the broker
//!   sends without the headers the caller's own `Connection` names (hop-by-hop): a
//!   `Content-Type: text/plain` named there was judged "no form" and never sent, and
//!   Rack reads a POST without a media type as a form. On 2740a98, 2 of 2 such POSTs
//!   with `_method=DELETE` acted as a DELETE; the check now reads the headers as sent.
//! - Rack names a multipart part by its `Content-ID` when it has no `name=`, and
//!   unescapes a quoted name (`name="_meth\od"`): both now count as part names (unit
//!   test `method_overrides_in_query_and_form_are_found`).
//! - the check's read of part names ran on the broker's async workers and was
//!   quadratic: a bare `name=` value was read to the next `;` or blank, so a body of
//!   `name=` repeated cost a read to its end per occurrence (debug build: 64 KiB 22 s,
//!   256 KiB 438 s). Two such calls of 1.25 MiB with the attacker's own handle held
//!   both workers for hours: on 2740a98 another tenant's whoami was answered 0 of 3
//!   times (two minutes each); now 3 of 3, and the read is linear (debug build: 8 MiB
//!   of `name=` in about 5 s, release much less; a name longer than 64 characters is
//!   no override and is not read further).
//! - a redirect hop inside the integration kept the credential whatever its query: an
//!   API with an open redirect (`/go?to=`, a 307) sent a credentialed POST on to a
//!   same-origin URL with `?_method=DELETE` in its query (the caller's own URL held it
//!   only encoded, in `to`), and Symfony (Laravel) reads a POST's `_method` from the
//!   query: on 2740a98, 1 of 1 acted as a DELETE. Such a hop now keeps no credential
//!   (a POST's is not followed: `policy_denied`).
//!
//! Held (read in the code, not kept as tests): the URL parser refuses control
//! characters, blanks, `\`, userinfo, fragments, zone ids and port 0, and reads every
//! IPv4 spelling as an address (`url.rs`); `Host`, method-override and proxy-steering
//! headers are refused or dropped in `_` spelling too, CR/LF/NUL in values refused
//! (`headers.rs`); the resolver lower-cases names, refuses non-LDH labels and other
//! query types, judges every A/AAAA of an answer whatever name owns it, and the
//! broker's own resolution does the same; `hb-agent events` and the `maps`/`status`
//! tables escape controls and bidi marks in every attacker-chosen string, the audit
//! log and event stream are JSON written by serde and scrubbed without changing shape.
//! Also changed, without an attack built on it: the request-side fragment scan
//! (`refuse_fragments`) runs on an async worker over a body of up to
//! `broker.max_body_bytes`, and `Fragments::holds_run` collected every run before
//! answering: 10 MiB of a credential's pieces took 43 s on the debug build (10 MiB
//! without any: 0.3 s). A caller never holds a credential's pieces and such a body is
//! refused and bars it, so this is no attack from a sandbox; the first run now answers
//! (the same 10 MiB: 0.09 s).
//!
//! Everything lives on `lo` in the test's own network namespace; dnsmasq answers the
//! test names; the upstream is a Python HTTPS server started by the test.

use hb_tests::{
    TestEnv,
    sandboxed::nobody_broker_client,
    worlds::{OverrideArrivals, PythonApi},
};

const DNS_PORT: u16 = 5728;

/// The provider's API, where the integration sends its credential.
const API: &str = "api.provider.test";

/// The attacker's own credential (integration `p`): fake, made for this file.
const OWN: &str = "own-9c3e5a7f1b2d4e6a8c0f2b4d6e8a1c3e";

/// An upstream that reads a POST's method as the two framework families that honour a
/// `_method` field in the body do. Rack (`Rack::Request#POST` under
/// `Rack::MethodOverride`): a body whose media type (the `Content-Type` up to `;` or
/// `,`, blanks stripped, lower case) is none, a form's, `multipart/mixed` or
/// `multipart/related` is parsed as multipart parts when the type names a boundary
/// (then by each part's `name=`), else as a URL-encoded form. Laravel (Symfony's
/// `Request::getMethod` with the parameter override Laravel turns on): `$_POST`, which
/// PHP fills from a body whose type, up to the first `;`, `,` or space, is a form's;
/// else a body whose
/// `Content-Type` holds `/json` or `+json` is its input, read by `json_decode` (512
/// levels; Python's `json` reads deeper still and takes `1e400` as inf, as PHP does),
/// else its query string. Express (body-parser under method-override with a getter
/// that reads `req.body._method`, as its README shows): a JSON body in any `utf-*`
/// charset its `Content-Type` names and a URL-encoded one in UTF-8, decoded through
/// iconv-lite, which drops a byte order mark. `/go?to=URL` answers a 307 to `URL` (an open redirect).
/// Every request is a JSON line in `log`: `method` (as sent), `acted` (as the
/// framework of `?fw=` reads it; without one, as sent), `path`, `auth` (the
/// `Authorization` header).
const FRAMEWORKS_PY: &str = r#"
import re
lock = threading.Lock()
RACK_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "multipart/mixed", "multipart/related")
def media_type(v):
    if v is None:
        return None
    t = v.strip(" \t").replace(",", ";").split(";")[0].rstrip(" \t").lower()
    return t or None
def rack_fields(ctype, body):
    t = media_type(ctype)
    if not (t is None or t in RACK_TYPES):
        return {}
    m = re.match(r'(?is)multipart/.*boundary="?([^";,]+)"?', (ctype or "").strip())
    if m:
        names = re.findall(rb'(?i)name="?([^";\r\n]+)"?\r\n\r\n([^\r\n]*)', body)
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in names}
    return dict(urllib.parse.parse_qsl(body.decode("latin-1")))
def php_type(ctype):
    # PHP's SAPI: the type in lower case, up to the first ';', ',' or space.
    return re.split(r"[;, ]", (ctype or "").lower(), maxsplit=1)[0]
def laravel_fields(ctype, body):
    if php_type(ctype) == "application/x-www-form-urlencoded":
        return dict(urllib.parse.parse_qsl(body.decode("latin-1")))
    if "/json" not in (ctype or "") and "+json" not in (ctype or ""):
        return {}
    try:
        v = json.loads(body)
    except Exception:
        return {}
    return v if isinstance(v, dict) else {}
def express_fields(ctype, body):
    # body-parser: a charset from the Content-Type (utf-8 by default), decoded through
    # iconv-lite, which drops a byte order mark; JSON in any utf-* charset, forms in
    # utf-8.
    t = media_type(ctype) or ""
    m = re.search(r'(?i)charset="?([^";\s]+)', ctype or "")
    charset = (m.group(1) if m else "utf-8").lower()
    try:
        text = body.decode(charset).lstrip("\ufeff")
    except Exception:
        return {}
    if t == "application/json" and charset.startswith("utf-"):
        try:
            v = json.loads(text)
        except Exception:
            return {}
        return v if isinstance(v, dict) else {}
    if t == "application/x-www-form-urlencoded" and charset == "utf-8":
        return dict(urllib.parse.parse_qsl(text))
    return {}
class H(TlsHandler):
    def any(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        read = {"rack": rack_fields, "laravel": laravel_fields, "express": express_fields}.get(
            q.get("fw"), lambda c, b: {})
        acted = self.command
        if self.command == "POST":
            fields = read(self.headers.get("content-type"), body)
            if q.get("fw") == "laravel":
                fields.setdefault("_method", q.get("_method", ""))
            m = str(fields.get("_method", "")).upper()
            if m in ("PUT", "PATCH", "DELETE"):
                acted = m
        rec = {"method": self.command, "acted": acted, "path": self.path,
               "auth": self.headers.get("authorization", "")}
        with lock, open(log, "a") as f:
            f.write(json.dumps(rec) + "\n")
        out = b"ok\n"
        if urllib.parse.urlsplit(self.path).path == "/go":
            self.send_response(307)
            self.send_header("Location", q["to"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = do_PUT = do_DELETE = any
"#;

/// Integration `p` (bearer, GET and POST) on the provider's API, bound by policy `web`,
/// which reaches the API by itself too.
struct World {
    env: TestEnv,
    api: PythonApi,
}

impl World {
    /// The world with `handler` as the API (a [`PythonApi`] handler).
    fn with(name: &str, handler: &str) -> Self {
        Self::configured(name, handler, "")
    }

    /// [`World::with`], with `broker_extra` in the agent's `[broker]` table.
    fn configured(name: &str, handler: &str, broker_extra: &str) -> Self {
        let api = PythonApi::start(name, DNS_PORT, &[API], handler);
        let body = format!(
            r#"
[[integration]]
name = "p"
auth = "bearer"
hosts = ["{API}"]
methods = ["GET", "POST"]

[[policy]]
name = "web"
integrations = ["p"]
allow_domains = ["{API}"]
"#
        );
        let env = api
            .names
            .agent(name, broker_extra, &body, &[("p", "bot", OWN)]);
        Self { env, api }
    }
}

/// A credentialed POST to an integration that allows POST and not DELETE never acts as
/// a DELETE where Rack or Laravel read a `_method` body field: not in a
/// `multipart/mixed` or `multipart/related` body (Rack parses both), not in a
/// multipart body without a boundary (Rack reads it URL-encoded), not in a JSON object
/// nested 300 deep or holding `1e400` (PHP reads both), not after a byte order mark or
/// in a JSON body in UTF-16 (Express's body-parser reads both). Control: the same body as
/// `text/plain` reaches the upstream as a POST nobody reads as another method.
#[test]
fn a_post_whose_body_a_framework_reads_as_delete_is_refused() {
    let w = World::with("review28-override", FRAMEWORKS_PY);
    let got = nobody_broker_client(
        &w.env,
        "web",
        &format!(
            r#"
h = hb.handle("p", "bot")["handle"]
deep = "[" * 300 + "]" * 300
part = "--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n"
cases = {{
    "mixed": ("rack", "multipart/mixed; boundary=b", part),
    "related": ("rack", "multipart/related", "_method=DELETE"),
    "noboundary": ("rack", "multipart/form-data", "_method=DELETE"),
    "deep": ("laravel", "application/json", '{{"_method":"DELETE","a":' + deep + '}}'),
    "inf": ("laravel", "application/json", '{{"a":1e400,"_method":"DELETE"}}'),
    "php-space": ("laravel", "application/x-www-form-urlencoded x", "_method=DELETE"),
    "bom-form": ("express", "application/x-www-form-urlencoded", "\ufeff_method=DELETE"),
    "bom-json": ("express", "application/json", '\ufeff{{"_method":"DELETE"}}'),
    "utf16-json": ("express", "application/json; charset=utf-16le", '{{"_method":"DELETE"}}'),
    "text": ("rack", "text/plain", "_method=DELETE"),
}}
out = {{}}
for name, (fw, ctype, body) in cases.items():
    wire = body.encode("utf-16-le" if "utf-16le" in ctype else "utf-8")
    r = attempt(lambda: hb.request("POST", "https://{API}/items/1?fw=" + fw + "&case=" + name,
                                   handle=h, headers={{"Content-Type": ctype}},
                                   body_base64=base64.b64encode(wire).decode()))
    out[name] = r.get("error") or r["status"]
print(json.dumps(out))
"#
        ),
        &[],
    );
    let seen = OverrideArrivals::read(
        &w.api,
        OWN,
        "9 POSTs with a _method=DELETE body field Rack, Laravel or Express reads",
        &got,
    );
    assert_eq!(got["text"], 200, "control: a text body is sent: {got}");
    assert!(
        seen.credentialed_post("/items/1?fw=rack&case=text"),
        "control: the text POST did not arrive as a POST: {:?}",
        seen.credentialed
    );
    seen.assert_none_overridden();
    for case in [
        "mixed",
        "related",
        "noboundary",
        "deep",
        "inf",
        "php-space",
        "bom-form",
        "bom-json",
        "utf16-json",
    ] {
        assert_eq!(got[case], "policy_denied", "{case}: {got}");
    }
}

/// A credentialed POST whose `Content-Type` (`text/plain`: no form, judged so) is named
/// in its own `Connection` header reaches the upstream without any `Content-Type` (the
/// broker drops the headers a `Connection` names, as hop-by-hop): Rack reads a POST
/// without a media type as a form, so its `_method=DELETE` acted as a DELETE. The
/// override check now reads the media types the upstream gets. Control: the same
/// request without the `Connection` header is sent and stays a POST.
#[test]
fn a_content_type_named_in_connection_does_not_hide_a_form() {
    let w = World::with("review28-connection", FRAMEWORKS_PY);
    let got = nobody_broker_client(
        &w.env,
        "web",
        &format!(
            r#"
h = hb.handle("p", "bot")["handle"]
cases = {{
    "named": {{"Content-Type": "text/plain", "Connection": "Content-Type"}},
    "named-among": {{"Content-Type": "text/plain", "Connection": "keep-alive, content-type"}},
    "text": {{"Content-Type": "text/plain"}},
}}
out = {{}}
for name, headers in cases.items():
    r = attempt(lambda: hb.request("POST", "https://{API}/items/1?fw=rack&case=" + name,
                                   handle=h, headers=headers, body="_method=DELETE"))
    out[name] = r.get("error") or r["status"]
print(json.dumps(out))
"#
        ),
        &[],
    );
    let seen = OverrideArrivals::read(
        &w.api,
        OWN,
        "2 POSTs naming their text/plain Content-Type in Connection, body _method=DELETE",
        &got,
    );
    assert_eq!(got["text"], 200, "control: {got}");
    seen.assert_none_overridden();
    for case in ["named", "named-among"] {
        assert_eq!(got[case], "policy_denied", "{case}: {got}");
    }
}

/// A sandbox's calls to `/v1/requests` with its own handle, side by side: each a POST
/// to the API of a multipart body of `name=` repeated (1.25 MiB, no delimiter); prints
/// `sent` once both are written, then `answered STATUS` (or `failed ERROR`) for each.
const PY_NAME_FLOOD: &str = r#"
import socket
h = hb.handle("p", "bot")["handle"]
body = json.dumps({"method": "POST", "url": "https://%s/upload?fw=none" % sys.argv[1], "handle": h,
                   "headers": {"Content-Type": "multipart/form-data; boundary=b"},
                   "body": "name=" * (1 << 18)}).encode()
conns = []
for _ in range(2):
    s = socket.socket(socket.AF_UNIX); s.connect(SOCK); s.settimeout(3600)
    conns.append(s)
for s in conns:
    s.sendall(b"POST /v1/requests HTTP/1.1\r\nHost: hb\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
print("sent", flush=True)
def read(s):
  try:
    data = b""
    while True:
        d = s.recv(1 << 20)
        if not d: break
        data += d
    print("answered", data.split(b" ")[1].decode(), flush=True)
  except Exception as e:
    print("failed", type(e).__name__, flush=True)
readers = [threading.Thread(target=read, args=(s,)) for s in conns]
[t.start() for t in readers]
[t.join() for t in readers]
"#;

/// The override check's read of a multipart body's part names ran on the broker's
/// async workers and was quadratic in the body: every `name=` had its bare name read up
/// to the next `;` or blank, so a body of `name=` repeated (a handle for any integration
/// is enough: the check comes before the method's) cost a read to the body's end per
/// occurrence. Two such calls of 1.25 MiB held both workers for hours on the debug build
/// (a 256 KiB body took 438 s alone), and no other tenant's call was answered. Once the
/// attacker's calls are written (and a second more), another tenant (root on the host)
/// asks `GET /v1/whoami` three times, each waiting at most two minutes: all three must
/// be answered (and the attacker's calls too, once the test is done with them).
#[test]
fn a_body_of_part_names_does_not_hold_the_broker_from_other_tenants() {
    use std::{
        io::{Read as _, Write as _},
        os::unix::net::UnixStream,
        process::Stdio,
        time::Duration,
    };
    const ASKED: usize = 3;
    let w = World::with("review28-names", FRAMEWORKS_PY);
    let script = hb_tests::sandboxed::broker_client_script(&w.env, PY_NAME_FLOOD);
    let mut attacker = hb_tests::sandboxed::nobody_command(
        &w.env,
        "web",
        &[],
        &[hb_tests::python(), "-c", &script, API],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .expect("sandbox run");
    let rx = hb_tests::sandboxed::stdout_lines(&mut attacker);
    let first = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the attacker sent its calls");
    assert_eq!(first, "sent", "the attacker's first line");
    std::thread::sleep(Duration::from_secs(1));
    let mut served = 0;
    for _ in 0..ASKED {
        let mut s = UnixStream::connect(w.env.broker_socket()).expect("connect to the broker");
        s.set_read_timeout(Some(Duration::from_secs(120)))
            .expect("read timeout");
        s.write_all(b"GET /v1/whoami HTTP/1.1\r\nHost: hb\r\nConnection: close\r\n\r\n")
            .expect("send whoami");
        let mut answer = String::new();
        if s.read_to_string(&mut answer).is_err() || !answer.starts_with("HTTP/1.1 200") {
            break;
        }
        served += 1;
    }
    let heard: Vec<String> = if served == ASKED {
        rx.iter().collect()
    } else {
        let _ = attacker.kill();
        rx.try_iter().collect()
    };
    let _ = attacker.wait();
    println!(
        "figure: while a sandbox's two POSTs of 1.25 MiB of `name=` were judged, another tenant's whoami was answered {served} of {ASKED} times; the attacker heard {heard:?}"
    );
    assert_eq!(
        served, ASKED,
        "another tenant's whoami waited behind the judgement of the attacker's bodies"
    );
    assert_eq!(
        heard.iter().filter(|l| l.starts_with("answered")).count(),
        2,
        "the attacker's calls: {heard:?}"
    );
}

/// A credentialed POST to an API with an open redirect (`/go?to=`, a 307) named a
/// same-origin `Location` whose query holds `_method=DELETE`: the broker followed it
/// with the credential (a 307 keeps the POST a POST and the hop stays inside the
/// integration), and Symfony (Laravel) reads a POST's `_method` from its query, so it
/// acted as a DELETE. The caller's own URL carried no override field (`to` holds it
/// encoded). A hop whose query names another method now keeps no credential and, for a
/// POST, is not followed. Control: the same redirect to a plain path is followed with
/// the credential.
#[test]
fn a_redirect_to_a_method_override_does_not_carry_the_credential() {
    let w = World::configured(
        "review28-redirect",
        FRAMEWORKS_PY,
        "follow_redirects = true\n",
    );
    let got = nobody_broker_client(
        &w.env,
        "web",
        &format!(
            r#"
from urllib.parse import quote
h = hb.handle("p", "bot")["handle"]
out = {{}}
for name, to in (("override", "/items/1?fw=laravel&case=override&_method=DELETE"),
                 ("plain", "/items/1?fw=laravel&case=plain")):
    r = attempt(lambda: hb.request("POST", "https://{API}/go?to=" + quote(to, safe=""),
                                   handle=h, body="x=1"))
    out[name] = r.get("error") or r["status"]
print(json.dumps(out))
"#
        ),
        &[],
    );
    let seen = OverrideArrivals::read(
        &w.api,
        OWN,
        "a POST through a 307 to a same-origin URL with _method=DELETE",
        &got,
    );
    assert!(
        seen.credentialed_post("/items/1?fw=laravel&case=plain"),
        "control: the plain redirect was not followed with the credential: {:?}",
        seen.credentialed
    );
    seen.assert_none_overridden();
}
