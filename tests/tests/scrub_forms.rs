//! A live credential echoed by an upstream in a form the caller decodes at once but no
//! listed encoder writes: upper- or lower-cased, hard-wrapped every few characters,
//! with invisible characters (U+200B, U+2060, U+FEFF, U+00AD) between its characters,
//! every byte escaped (`\xNN`, octal, `xxd -i`), base32 (both
//! alphabets), reversed, ROT13. Each test runs the attack from a sandbox (uid 65534,
//! Python) against the real agent and a real upstream on the test namespace's `lo`: the
//! attacker asks the upstream for each form, decodes each answer as the form says, and
//! the test asserts that no decoded answer holds the key; it prints a `figure:` line
//! naming the forms that gave it back.
//!
//! The call's own key is watched for runs of its characters (a fragment hit refuses the
//! answer), so a form that keeps 8 of them together was already held for it; another
//! tenant's key is found only by the whole-value scan, which is what these forms
//! evaded (on 4db6673 every one of them gave such a key back).
//!
//! Everything lives on `lo` in the test's own network namespace; dnsmasq answers the
//! test names; the upstream is a Python HTTPS server started by the test.

use hb_tests::{sandboxed::nobody_broker_client, worlds::EchoTenants};

const DNS_PORT: u16 = 5741;

/// The provider's API, where both tenants' integrations send their credentials.
const API: &str = "api.provider.test";

/// The forms the upstream writes a key in (see [`ECHO_PY`]).
const FORMS: [&str; 18] = [
    "upper",
    "lower",
    "fold4",
    "fold8crlf",
    "fold2label",
    "b64fold4",
    "zwsp",
    "wj",
    "bom",
    "shy",
    "xesc",
    "octal",
    "xxd",
    "b32",
    "b32hex",
    "reversed",
    "rot13",
    "jsonzw",
];

/// The provider's echo API: `/own/F` answers with the caller's bearer token and
/// `/other/F/N` with `victims[N]` (another tenant's key, which the provider knows),
/// each in form `F`, after a line `you sent:`.
const ECHO_PY: &str = r#"
import base64, codecs
class H(TlsHandler):
    def do_GET(self):
        parts = self.path.split("/")
        f = parts[2]
        k = self.headers.get("Authorization", "")[7:] if parts[1] == "own" else victims[int(parts[3])]
        kb = k.encode()
        def fold(t, w, eol="\n"):
            return eol.join(t[i:i + w] for i in range(0, len(t), w))
        forms = {
            "upper": k.upper(),
            "lower": k.lower(),
            "fold4": fold(k, 4),
            "fold8crlf": fold(k, 8, "\r\n"),
            "fold2label": "key: " + fold(k, 2),
            "b64fold4": fold(base64.b64encode(kb).decode(), 4),
            "zwsp": "\u200b".join(k),
            "wj": "\u2060".join(k),
            "bom": "\ufeff".join(k),
            "shy": "\u00ad".join(k),
            "xesc": "".join("\\x%02x" % b for b in kb),
            "octal": "".join("\\%03o" % b for b in kb),
            "xxd": ", ".join("0x%02x" % b for b in kb),
            "b32": base64.b32encode(b"id:" + kb).decode(),
            "b32hex": base64.b32hexencode(b"x" + kb).decode().rstrip("="),
            "reversed": k[::-1],
            "rot13": codecs.encode(k, "rot13"),
            "jsonzw": json.dumps("\u200b".join(k))[1:-1],
        }
        body = ("you sent:\n" + forms[f] + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
"#;

/// The attacker's side: for each form `f` (its index `i`), `hb.request` to the path the
/// Python expression `path` gives, with the handle of account `account` (an expression
/// too), and the answer's body decoded as its form says (nothing when it does not
/// decode): `{f: [status or error code, decoded, whether the body holds a marker]}`.
fn attacker_script(path: &str, account: &str) -> String {
    format!(
        r#"
import base64, codecs, re
def decode(f, body):
    t = body.split("you sent:\n", 1)[-1].rstrip("\n")
    if f in ("upper", "lower"):
        return t.lower()
    if "fold" in f:
        t = t.replace("\r", "").replace("\n", "").replace("key: ", "")
        return base64.b64decode(t).decode("latin-1") if f.startswith("b64") else t
    if f in ("zwsp", "wj", "bom", "shy"):
        return re.sub("[\u200b\u2060\ufeff\u00ad]", "", t)
    if f == "jsonzw":
        return json.loads('"' + t + '"').replace("\u200b", "")
    if f in ("xesc", "octal"):
        return codecs.escape_decode(t.encode())[0].decode("latin-1")
    if f == "xxd":
        return bytes(int(x, 16) for x in t.split(", ")).decode("latin-1")
    if f == "b32":
        return base64.b32decode(t).decode("latin-1")
    if f == "b32hex":
        return base64.b32hexdecode(t + "=" * (-len(t) % 8)).decode("latin-1")
    if f == "reversed":
        return t[::-1]
    if f == "rot13":
        return codecs.decode(t, "rot13")
out = {{}}
for i, f in enumerate({FORMS:?}):
    h = attempt(lambda: hb.handle("p", {account}))
    h = h.get("handle") if isinstance(h, dict) else None
    r = attempt(lambda: hb.request("GET", "https://{API}" + {path}, handle=h))
    try:
        decoded = decode(f, r["body"]) if r.get("status") == 200 else ""
    except Exception as e:
        decoded = ""
    out[f] = [r.get("status", r.get("error")), decoded, "[REDACTED:" in r.get("body", "")]
print(json.dumps(out))
"#
    )
}

/// The attacker's keys (integration `p`: account `bot`, and an account `e{i}` per
/// form, since a fragment hit bars the caller from that account) and the other tenant's
/// (integration `v`, an account `a{i}` per form, since a reflection signals that
/// account): fakes made for this file that no token family matches.
fn own(i: usize) -> String {
    key("ow", i)
}

fn victim(i: usize) -> String {
    key("vk", i + 40)
}

fn key(lead: &str, i: usize) -> String {
    let bits = (i as u128 + 7).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    // Both cases, so that neither case change leaves it as it is.
    format!("{lead}{i:02}-{:016x}{:016X}", bits >> 64, bits as u64)
}

fn world(name: &str) -> EchoTenants {
    let victims: Vec<String> = (0..FORMS.len()).map(victim).collect();
    let owned: Vec<(String, String)> = (0..FORMS.len())
        .map(|i| (format!("e{i}"), own(i)))
        .collect();
    let mut own_keys = vec![("bot", "own-4c9a1f3d5e8b0c6a2d4f7e9b1c3a2b7e")];
    own_keys.extend(owned.iter().map(|(a, k)| (a.as_str(), k.as_str())));
    EchoTenants::start(name, DNS_PORT, API, ECHO_PY, &own_keys, &victims)
}

/// The forms whose decoded answer holds `key(i)` (ASCII case ignored), and each
/// form's outcome (a status or an error code). Asserts that every answer is a 200
/// with the key's place redacted, or a refusal.
fn given_back(
    got: &serde_json::Value,
    key: impl Fn(usize) -> String,
) -> (Vec<&'static str>, Vec<String>) {
    let mut back = Vec::new();
    let mut outcomes = Vec::new();
    for (i, f) in FORMS.iter().enumerate() {
        let decoded = got[f][1].as_str().unwrap_or_default().to_ascii_lowercase();
        if decoded.contains(&key(i).to_ascii_lowercase()) {
            back.push(*f);
        }
        outcomes.push(format!("{f}: {}", got[f][0]));
        assert!(
            got[f][0] != 200 || got[f][2] == true || back.contains(f),
            "{f}: a 200 without the key and without a marker: {}",
            got[f]
        );
    }
    (back, outcomes)
}

/// Runs the attack in a world of its own (`name`): the attacker asks for each form at
/// `path` with the handle of `account` (Python expressions of `f` and `i`, see
/// [`attacker_script`]); prints and asserts that no form gave `whose` key (`key(i)`)
/// back.
fn assert_never_given_back(
    name: &str,
    path: &str,
    account: &str,
    key: impl Fn(usize) -> String,
    whose: &str,
) {
    let w = world(name);
    let script = attacker_script(path, account);
    let got = nobody_broker_client(&w.env, "web", &script, &[]);
    let (back, outcomes) = given_back(&got, key);
    println!(
        "figure: forms that gave {whose} key back: {} of {} {back:?} ({})",
        back.len(),
        FORMS.len(),
        outcomes.join(", ")
    );
    assert!(back.is_empty(), "{whose} key came back: {back:?}");
    // The control: the provider was reached and the scrubber redacted (a 200 carries
    // a marker, checked above), so refusals alone cannot pass this test.
    assert!(
        FORMS.iter().any(|f| got[f][0] == 200),
        "no form was answered: {outcomes:?}"
    );
}

/// Another tenant's key, put in each form by the provider in an answer to the
/// attacker's own call, never comes back decodable.
#[test]
fn another_tenants_key_in_a_decodable_form_never_comes_back() {
    assert_never_given_back(
        "scrubforms-other",
        r#""/other/%s/%d" % (f, i)"#,
        r#""bot""#,
        victim,
        "another tenant's",
    );
}

/// The caller's own key, echoed by the provider in each form (an account each), never
/// comes back decodable.
#[test]
fn the_callers_own_key_echoed_in_a_decodable_form_never_comes_back() {
    assert_never_given_back(
        "scrubforms-own",
        r#""/own/" + f"#,
        r#""e%d" % i"#,
        own,
        "the caller's own",
    );
}
