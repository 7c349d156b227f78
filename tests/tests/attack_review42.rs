//! A forty-second attack review, run as the process inside `sandbox run --policy web`
//! (`--user 65534`, arbitrary Python) holding a handle of its own policy, against the
//! broker and the scrubber of its answers; the upstream is a provider's API that hands
//! back content holding another tenant's key (a key listing, a stored config, a Helm
//! release), as it was written there. Each test counts and prints a `figure:` line.
//!
//! Found:
//! - base64 text written in a JSON string as PHP's `json_encode` writes it (every `/`
//!   as `\/`, its default) or as any JSON writer writes wrapped base64
//!   (`base64.encodebytes`, MIME's 76 columns: each line break as the two characters
//!   `\n`, as it writes a value cut every few characters) matched no form: the live
//!   forms hold a value's base64 with a raw `/` (or percent-encoded), the wrapped scan
//!   and the narrow-wrap view join lines across raw line breaks only, and the spread view
//!   read no JSON escape but `\u`; the packed view's runs ended at the first `\/` or
//!   `\n` (a gzip stream cut there inflates to what came before the key). `json.loads`
//!   then `b64decode` (and `gzip.decompress`) give the value back whole. Of 6 such
//!   answers holding another tenant's key (its base64 with `\/`, a stored Basic
//!   credential's base64 with `\/`, a config's wrapped base64 in JSON, base64 of gzip
//!   with `\/`, base64 of gzip wrapped in JSON, the key cut every 8 characters in JSON), 6
//!   gave the key back on 8a073d7. The spread view now reads JSON's short escapes (`\/`,
//!   `\\`, `\"`, `\n`, `\r`, `\t`; built where a `\/` is, or a `\n` after a line of
//!   base64 or between two narrow lines of one width), and a packed run reads its base64
//!   characters escaped as JSON (`\/`, `\u002b`…), as percent-escapes (`%2B`, `%2F`,
//!   `%3D`) or as HTML references (`&#43;`, `&#x2F;`…), its line breaks escaped as JSON,
//!   and starts after a `=` too (`?r=H4sI…`): 0 of 6
//!   ([`another_tenants_key_in_json_escaped_base64_never_comes_back`]).
//! - a key in wrapped base64 (a form cut by a line break: YAML's block scalar of
//!   `base64.encodebytes`, 76 columns) was redacted by the scrub, which joins the lines,
//!   but the searches that ask which values a buffer holds read no joined lines: the
//!   reflection detector raised no `response_unheld` for it (nor for the forms above
//!   once redacted), and a guess sent that way was not one the request carried. The
//!   redaction alone told a caller that a guess of its, echoed wrapped, was a live key,
//!   and its account was never rotated. On 8a073d7, 0 of the 7 forms' accounts (the
//!   plain control's was) were signalled; now 7 of 7 (`scrub::any_view`: the
//!   searches read the buffer and its escapes' view with wrapped base64 joined too).
//!
//! - uuencode (`binascii.b2a_uu`) where its line does not stand alone: inside a JSON
//!   string (its line break is `\n` there, its `"` and `\` escaped) or indented in a
//!   YAML block scalar. The packed view read only whole raw lines, so it found no
//!   uuencoded line: on a7e4711, 2 of 2 gave the key back, unsignalled. A block's first
//!   line is now read from its end back to where a writer starts one (the line's start,
//!   its indentation, a `"`), and in a buffer holding a JSON `\n` the lines of its JSON
//!   strings are read too, their escapes undone: 0 of 2
//!   ([`another_tenants_key_uuencoded_in_json_or_yaml_never_comes_back`]).
//!
//! Held, read in the code (not tested here): a base64 `=` JSON-escaped as `\u003d`
//! (Gson's HTML-safe writer) or any character `\u`-escaped is read by the spread view's
//! `\u`; a header value passes the same packed and spread cuts as the body
//! (`requests::AnswerScrub::run`); the request search and the reflection detector read
//! the same views as the scrub now (`scrub::any_view`).
//!
//! Everything lives on `lo` in the test's own network namespace; dnsmasq answers the
//! test names; the upstream is a Python HTTPS server started by the test.

use hb_tests::{sandboxed::nobody_broker_client, worlds::EchoTenants};

const DNS_PORT: u16 = 5742;

/// The provider's API, where both tenants' integrations send their credentials.
const API: &str = "api.provider.test";

/// The forms the upstream writes another tenant's key in (see [`ECHO_PY`]), each one
/// `json.loads` then a stock decoder undoes: `b64_plain` (a control: the key's base64
/// in JSON with a raw `/`, a live form on any agent), `b64_php` (its base64 as PHP's
/// `json_encode` writes a string: `/` as `\/`), `basic_php` (a stored Basic credential,
/// base64 of `user:key`, the same way), `b64_wrapped_json` (a config file holding it,
/// `base64.encodebytes`'d, in a JSON string: its line breaks as `\n`), `b64gzip_php`
/// (base64 of gzip, as Helm stores a release, written by PHP) and
/// `b64gzip_wrapped_json` (the same `encodebytes`'d, in a JSON string) and `fold_json`
/// (the key itself cut every 8 characters, as `fold -w 8` does, in a JSON string); and
/// `b64_wrapped_raw` (the config's wrapped base64 with its line breaks raw, in YAML: a
/// live form across a break, which the scrub redacted before, and which is here for
/// the reflection detector).
const FORMS: [&str; 8] = [
    "b64_plain",
    "b64_php",
    "basic_php",
    "b64_wrapped_json",
    "b64gzip_php",
    "b64gzip_wrapped_json",
    "fold_json",
    "b64_wrapped_raw",
];

/// The key uuencoded (`binascii.b2a_uu`) where its line does not stand alone: `uu_json`
/// (in a JSON string: its line break written `\n`, its `"` and `\` escaped) and
/// `uu_yaml` (a YAML block scalar: the line indented).
const UU: [&str; 2] = ["uu_json", "uu_yaml"];

/// The provider's API: `/other/F/N` answers `{"blob": …}` with `victims[N]` (another
/// tenant's key, which the provider holds) inside, in form `F`.
const ECHO_PY: &str = r##"
import base64, binascii, gzip, random
def php(doc):
    return json.dumps(doc).replace("/", "\\/")
def gz_with_early_slash(payload):
    # Incompressible filler before the payload, chosen so that the stream's base64
    # holds a `/` well before the key's bytes.
    for seed in range(1000):
        filler = random.Random(seed).randbytes(400)
        b = base64.b64encode(gzip.compress(filler + payload, mtime=0)).decode()
        if "/" in b[:200]:
            return b, gzip.compress(filler + payload, mtime=0)
    raise SystemExit("no seed")
class H(TlsHandler):
    def do_GET(self):
        parts = self.path.split("/")
        f = parts[2]
        k = victims[int(parts[3])]
        kb = k.encode()
        config = b"# ci runner settings, generated\nservice_password=" + kb + b"\nregion=eu\n"
        release = b'{"values":{"token":"' + kb + b'"}}'
        b64gz, gz = gz_with_early_slash(release)
        forms = {
            "b64_plain": json.dumps({"blob": base64.b64encode(kb).decode()}),
            "b64_php": php({"blob": base64.b64encode(kb).decode()}),
            "basic_php": php({"blob": "Basic " + base64.b64encode(b"ci-bot:" + kb).decode()}),
            "b64_wrapped_json": json.dumps({"blob": base64.encodebytes(config).decode()}),
            "b64gzip_php": php({"blob": b64gz}),
            "b64gzip_wrapped_json": json.dumps({"blob": base64.encodebytes(gz).decode()}),
            "b64_wrapped_raw": "blob: |\n  " + base64.encodebytes(config).decode().replace("\n", "\n  "),
            "uu_json": json.dumps({"blob": binascii.b2a_uu(kb).decode()}),
            "uu_yaml": "blob: |\n  " + binascii.b2a_uu(kb).decode(),
            "fold_json": json.dumps({"blob": "\n".join(k[i:i + 8] for i in range(0, len(k), 8))}),
        }
        body = forms[f].encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
"##;

/// The attacker's side: for each form (index `i` in [`FORMS`]) a call with its own
/// handle to `/other/F/i`, the answer's `blob` decoded as its form says (nothing when it
/// does not decode): `{F: [status or error code, decoded, whether the body holds a
/// marker]}`.
fn attacker_script(forms: &[&str]) -> String {
    let all = all_forms();
    format!(
        r#"
import base64, binascii, gzip
def decode(f, body):
    if f == "uu_yaml":
        return binascii.a2b_uu(body.split("|", 1)[1].strip() + "\n").decode("latin-1")
    if f == "b64_wrapped_raw":
        return base64.b64decode(body.split("|", 1)[1]).decode("latin-1")
    t = json.loads(body)["blob"]
    if f == "fold_json":
        return t.replace("\n", "")
    if f == "uu_json":
        return binascii.a2b_uu(t).decode("latin-1")
    if f == "basic_php":
        t = t.split(" ", 1)[1]
    raw = base64.b64decode(t)
    if f.startswith("b64gzip"):
        raw = gzip.decompress(raw)
    return raw.decode("latin-1")
out = {{}}
h = hb.handle("p", "bot")["handle"]
for f in {forms:?}:
    i = {all:?}.index(f)
    r = attempt(lambda: hb.request("GET", "https://{API}/other/%s/%d" % (f, i), handle=h))
    try:
        decoded = decode(f, r["body"]) if r.get("status") == 200 else ""
    except Exception as e:
        decoded = ""
    out[f] = [r.get("status", r.get("error")), decoded, "[REDACTED:" in r.get("body", "")]
print(json.dumps(out))
"#
    )
}

/// The other tenant's keys (integration `v`, an account `a{i}` per form, since a
/// reflection signals that account): fakes made for this file that no token family
/// matches, a `?` at each of the three byte offsets so that their base64 holds a `/`
/// wherever it starts.
fn victim(i: usize) -> String {
    let bits = (i as u128 + 42).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    format!("vk{i:02}?{:016x}?{:016X}?z", bits >> 64, bits as u64)
}

/// [`FORMS`] and [`UU`]: the other tenant has a key per form, `victim(i)` for the `i`th.
fn all_forms() -> Vec<&'static str> {
    FORMS.iter().chain(&UU).copied().collect()
}

/// Runs the attack in a world of its own (`name`): the other tenant takes handles for
/// its keys, the attacker asks for each of `forms`; prints the forms whose decoded
/// answer holds the other tenant's key and those whose account no `response_unheld`
/// signal named, and asserts there are none.
fn assert_never_given_back(name: &str, dns_port: u16, forms: &[&str]) {
    let all = all_forms();
    let victims: Vec<String> = (0..all.len()).map(victim).collect();
    let w = EchoTenants::start(
        name,
        dns_port,
        API,
        ECHO_PY,
        &[("bot", "own-5d0b2e4f6a8c1e3d5f7a9b0c2d4e6f8a")],
        &victims,
    );
    let got = nobody_broker_client(&w.env, "web", &attacker_script(forms), &[]);
    let index = |f: &str| all.iter().position(|g| *g == f).expect("a form");
    let mut back = Vec::new();
    let mut outcomes = Vec::new();
    for f in forms {
        if got[f][1]
            .as_str()
            .unwrap_or_default()
            .contains(&victim(index(f)))
        {
            back.push(*f);
        }
        outcomes.push(format!("{f}: {} marker {}", got[f][0], got[f][2]));
    }
    // The accounts whose key an answer showed and the request did not carry.
    let signalled: Vec<String> = w
        .env
        .audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "detector" && r["seen"] == "response_unheld")
        .map(|r| r["account"].as_str().unwrap_or_default().to_owned())
        .collect();
    let unsignalled: Vec<&str> = forms
        .iter()
        .copied()
        .filter(|f| !signalled.contains(&format!("a{}", index(f))))
        .collect();
    let tried: Vec<&str> = forms
        .iter()
        .copied()
        .filter(|f| *f != "b64_plain")
        .collect();
    let tried_back: Vec<&str> = back.iter().copied().filter(|f| tried.contains(f)).collect();
    println!(
        "figure: forms (the control aside) that gave another tenant's key back: {} of {} \
         {tried_back:?} ({}); forms whose key was not signalled response_unheld: {unsignalled:?}",
        tried_back.len(),
        tried.len(),
        outcomes.join(", ")
    );
    assert!(
        forms.iter().all(|f| got[f][0] == 200),
        "control: a form was not answered: {outcomes:?}"
    );
    if forms.contains(&"b64_plain") {
        assert_eq!(
            got["b64_plain"][2], true,
            "control: the plain base64 form was not redacted: {outcomes:?}"
        );
    }
    assert!(back.is_empty(), "another tenant's key came back: {back:?}");
    assert!(
        unsignalled.is_empty(),
        "keys shown (redacted) and not signalled: {unsignalled:?}"
    );
}

/// Another tenant's key, in base64 text that a JSON writer escaped (PHP's `\/`, a wrapped
/// run's `\n`), alone or as a gzip stream's base64, or cut every few characters in a
/// JSON string, or in raw wrapped base64, in an answer to the attacker's own call, never
/// comes back decodable, and its account is signalled.
#[test]
fn another_tenants_key_in_json_escaped_base64_never_comes_back() {
    assert_never_given_back("review42-json-b64", DNS_PORT, &FORMS);
}

/// Another tenant's key uuencoded (`binascii.b2a_uu`) in a JSON string (its line break
/// written `\n`, its `"` and `\` escaped) or indented in a YAML block scalar, in an answer
/// to the attacker's own call, never comes back decodable, and its account is signalled.
#[test]
fn another_tenants_key_uuencoded_in_json_or_yaml_never_comes_back() {
    assert_never_given_back("review42-uu-json", DNS_PORT + 1, &UU);
}
