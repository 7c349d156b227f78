//! A forty-sixth attack review, run as the process inside `sandbox run --policy web`
//! (`--user 65534`, arbitrary Python) holding a handle of its own policy, against the
//! broker and the scrub of its answers; the upstream is a provider's API that hands back
//! content holding a credential (another tenant's key it stores, or the caller's own key
//! echoed from the request), written in a charset or with escapes that a stock decoder
//! the caller has undoes. Each test counts and prints a `figure:` line.
//!
//! Found:
//! - UTF-7 (RFC 2152; Python's `utf-7` codec, which any caller has): its text is
//!   ASCII, so the answer passes as UTF-8 text, and a character may be written as
//!   itself or inside a `+…-` segment, the base64 of its UTF-16 (`+AGs-` is `k`). A key
//!   with every character in a segment of its own, or every second one, or runs of it in
//!   segments, matched no form (the live forms hold the base64 of a value's whole
//!   UTF-16, and the view of escapes read no UTF-7): `bytes.decode("utf-7")` gave it
//!   back whole, and no `response_unheld` was raised.
//! - a string literal's escapes, mixed with plain characters: every second character as
//!   `\xHH`, as octal `\153`, as `\U0000006b` (all three read by Python's
//!   `unicode_escape` codec, C and JavaScript), as JavaScript's `\u{6b}` or as Python's
//!   `\N{LATIN SMALL LETTER K}`, raw or inside a JSON string (its `\` escaped). The
//!   live forms hold a value with *every* byte `\x`- or octal-escaped; the view read
//!   `\uXXXX` only.
//! - look-alikes that NFKC (`unicodedata.normalize("NFKC", …)`) reads as ASCII: every
//!   second character full-width (`ｋ`) or a mathematical bold letter or digit (`𝐤`).
//!   The answer is UTF-8 text; no form holds them (the sanitizer's NFKC view was read
//!   only for a call that asks for `sanitize`).
//!
//!   On af34429, of these 11 answers holding another tenant's key (3 UTF-7, 6 escapes,
//!   2 look-alikes), 11 gave it back and none of the 11 accounts was signalled; the
//!   caller's own key, echoed by its integration's host every second character in UTF-7
//!   or as `\xHH`, came back 2 of 2 (200, no marker). The view of escapes (`scrub/spread.rs`, which
//!   the scrub of an answer, the fragment hit of the call's own key, the reflection
//!   detector and the request search all read) now reads UTF-7's well-formed segments
//!   where the text holds one that spells printable ASCII (or a `+-` before a base64
//!   character), string literals' escapes of printable ASCII where the text holds one,
//!   and a look-alike as its ASCII character where the text holds one: 0 of 11, each
//!   account signalled, and 0 of 2 of the caller's own (redacted).
//!   ([`another_tenants_key_in_utf7_or_literal_escapes_never_comes_back`],
//!   [`the_callers_own_key_echoed_in_utf7_or_literal_escapes_never_comes_back`]).
//!
//! Held, tested: the key written by Python's UTF-7 encoder (its characters as
//! themselves: the raw value), in one UTF-7 segment (the base64 of its whole UTF-16, a
//! live form) and with every character `\xHH` (a live form): redacted and signalled on
//! af34429 and now.
//!
//! Still open (not tested): `\N{…}` by a name alias (`\N{SP}`…); IMAP's modified
//! UTF-7 (`&AGs-`, no stock Python codec); quoted-printable's `=6B` in text that does
//! not declare quoted-printable (`quopri.decodestring` reads it anyway; the view reads
//! `=XX` only where the text declares it, since a query's `page=42` would otherwise
//! build a view in most API answers); UTF-7 segments that spell only non-ASCII
//! characters (a non-ASCII key).
//!
//! Everything lives on `lo` in the test's own network namespace; dnsmasq answers the
//! test names; the upstream is a Python HTTPS server started by the test.

use hb_tests::{sandboxed::nobody_broker_client, worlds::EchoTenants};

const DNS_PORT: u16 = 5746;

/// The provider's API, where both tenants' integrations send their credentials.
const API: &str = "api.provider.test";

/// The caller's own key (integration `p`, account `bot`): fake, made for this file.
const OWN: &str = "own-5d0b2e4f6a8c1e3d5f7a9b0c2d4e6f8a";

/// The forms the upstream writes a key in (see [`ECHO_PY`]), each undone by a stock
/// decoder: in UTF-7 (`.encode().decode("utf-7")`), `utf7_python` (Python's encoder,
/// which writes the key's characters as themselves: a control, the raw value),
/// `utf7_whole` (the whole key in one `+…-` segment: the base64 of its UTF-16BE, a live
/// form), `utf7_each` (every character a segment of its own), `utf7_mixed` (every
/// second character a segment) and `utf7_chunks` (the key in runs of 5 characters,
/// every second run a segment); in a string literal's escapes (`codecs.decode(text,
/// "unicode_escape")`), `esc_x_all` (every character `\xHH`: a control, a live form),
/// and every second character as `\xHH` (`esc_x_mixed`), as three octal digits
/// (`esc_octal_mixed`), as `\U000000HH` (`esc_u8_mixed`), as JavaScript's `\u{HH}`
/// (`esc_ubrace_mixed`, read as a JavaScript literal reads it) or by its Unicode name,
/// `\N{LATIN SMALL LETTER K}` (`esc_named_mixed`), and `esc_x_mixed_json`
/// (the first of these in a JSON string, its `\` escaped, `json.loads` first); and
/// in look-alikes that NFKC reads as ASCII (`unicodedata.normalize("NFKC", text)`),
/// every second character full-width (`nfkc_fullwidth_mixed`: `ｋ`) or a mathematical
/// bold letter or digit (`nfkc_math_mixed`: `𝐤`). Each is the whole body
/// (`text/plain; charset=utf-8`), or a JSON document's `blob` for `_json`.
const FORMS: [&str; 14] = [
    "utf7_python",
    "utf7_whole",
    "utf7_each",
    "utf7_mixed",
    "utf7_chunks",
    "esc_x_all",
    "esc_x_mixed",
    "esc_octal_mixed",
    "esc_u8_mixed",
    "esc_ubrace_mixed",
    "esc_named_mixed",
    "esc_x_mixed_json",
    "nfkc_fullwidth_mixed",
    "nfkc_math_mixed",
];

/// The controls among [`FORMS`]: forms the scrub redacted before this review.
const CONTROLS: [&str; 3] = ["utf7_python", "utf7_whole", "esc_x_all"];

/// The provider's API: `/other/F/N` answers `victims[N]` (another tenant's key, which
/// the provider holds) in form `F`; `/self/F` the value of the request's
/// `Authorization` past `Bearer ` (the caller's own key, as an echo endpoint shows it).
const ECHO_PY: &str = r##"
import base64, unicodedata
def seg(s):
    return "+" + base64.b64encode(s.encode("utf-16-be")).decode().rstrip("=") + "-"
def every_second(k, esc):
    return "".join(esc(c) if i % 2 else c for i, c in enumerate(k))
def form(f, k):
    if f == "utf7_python":
        return k.encode("utf-7").decode()
    if f == "utf7_whole":
        return seg(k)
    if f == "utf7_each":
        return "".join(seg(c) for c in k)
    if f == "utf7_mixed":
        return every_second(k, seg)
    if f == "utf7_chunks":
        runs = [k[i:i + 5] for i in range(0, len(k), 5)]
        return "".join(seg(r) if i % 2 else r for i, r in enumerate(runs))
    if f == "esc_x_all":
        return "".join("\\x%02x" % ord(c) for c in k)
    if f in ("esc_x_mixed", "esc_x_mixed_json"):
        return every_second(k, lambda c: "\\x%02x" % ord(c))
    if f == "esc_octal_mixed":
        return every_second(k, lambda c: "\\%03o" % ord(c))
    if f == "esc_u8_mixed":
        return every_second(k, lambda c: "\\U%08x" % ord(c))
    if f == "esc_ubrace_mixed":
        return every_second(k, lambda c: "\\u{%x}" % ord(c))
    if f == "nfkc_fullwidth_mixed":
        return every_second(k, lambda c: chr(ord(c) + 0xFEE0))
    if f == "nfkc_math_mixed":
        def bold(c):
            if c.isdigit():
                return chr(0x1D7CE + ord(c) - ord("0"))
            if c.isupper():
                return chr(0x1D400 + ord(c) - ord("A"))
            if c.islower():
                return chr(0x1D41A + ord(c) - ord("a"))
            return c
        return every_second(k, bold)
    if f == "esc_named_mixed":
        return every_second(k, lambda c: "\\N{%s}" % unicodedata.name(c))
    raise SystemExit("no form " + f)
class H(TlsHandler):
    def do_GET(self):
        parts = self.path.split("/")
        f = parts[2]
        if parts[1] == "self":
            k = self.headers.get("Authorization", "").split(" ", 1)[-1]
        else:
            k = victims[int(parts[3])]
        text = form(f, k)
        if f.endswith("_json"):
            body, kind = json.dumps({"blob": text}).encode(), "application/json"
        else:
            body, kind = text.encode(), "text/plain; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
"##;

/// The attacker's side: a call with its own handle to each of `paths` (`/…/FORM…`), the
/// answer decoded as its form says (nothing when it does not decode): `{path: [status
/// or error code, decoded, whether the body holds a marker]}`.
fn attacker_script(paths: &[String]) -> String {
    format!(
        r#"
import codecs, re, unicodedata
def decode(f, body):
    t = json.loads(body)["blob"] if f.endswith("_json") else body
    if f.startswith("utf7"):
        return t.encode().decode("utf-7")
    if f.startswith("nfkc"):
        return unicodedata.normalize("NFKC", t)
    if f == "esc_ubrace_mixed":
        # As a JavaScript string literal reads it (Python's codec knows no `\u{{…}}`).
        return re.sub(r"\\u\{{([0-9a-fA-F]+)\}}", lambda m: chr(int(m.group(1), 16)), t)
    return codecs.decode(t, "unicode_escape")
out = {{}}
h = hb.handle("p", "bot")["handle"]
for p in {paths:?}:
    r = attempt(lambda: hb.request("GET", "https://{API}" + p, handle=h))
    try:
        decoded = decode(p.split("/")[2], r["body"]) if r.get("status") == 200 else ""
    except Exception as e:
        decoded = ""
    out[p] = [r.get("status", r.get("error")), decoded, "[REDACTED:" in r.get("body", "")]
print(json.dumps(out))
"#
    )
}

/// The other tenant's keys (integration `v`, an account `a{i}` per form, since a
/// reflection signals that account): fakes made for this file that no token family
/// matches.
fn victim(i: usize) -> String {
    let bits = (i as u128 + 46).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    format!("vk{i:02}?{:016x}?{:016X}?z", bits >> 64, bits as u64)
}

fn world(name: &str, dns_port: u16) -> EchoTenants {
    let victims: Vec<String> = (0..FORMS.len()).map(victim).collect();
    EchoTenants::start(name, dns_port, API, ECHO_PY, &[("bot", OWN)], &victims)
}

/// Another tenant's key in UTF-7, with some or all of its characters in `+…-` segments,
/// or with some of them as a string literal's escapes, in an answer to the attacker's
/// own call, never comes back decodable, and its account is signalled `response_unheld`.
#[test]
fn another_tenants_key_in_utf7_or_literal_escapes_never_comes_back() {
    let w = world("review46-utf7-other", DNS_PORT);
    let paths: Vec<String> = (0..FORMS.len())
        .map(|i| format!("/other/{}/{i}", FORMS[i]))
        .collect();
    let got = nobody_broker_client(&w.env, "web", &attacker_script(&paths), &[]);
    let mut back = Vec::new();
    let mut outcomes = Vec::new();
    for (i, f) in FORMS.iter().enumerate() {
        let r = &got[&paths[i]];
        if r[1].as_str().unwrap_or_default().contains(&victim(i)) {
            back.push(*f);
        }
        outcomes.push(format!("{f}: {} marker {}", r[0], r[2]));
    }
    let signalled: Vec<String> = w
        .env
        .audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "detector" && r["seen"] == "response_unheld")
        .map(|r| r["account"].as_str().unwrap_or_default().to_owned())
        .collect();
    let unsignalled: Vec<&str> = FORMS
        .iter()
        .enumerate()
        .filter(|(i, _)| !signalled.contains(&format!("a{i}")))
        .map(|(_, f)| *f)
        .collect();
    let tried = FORMS.len() - CONTROLS.len();
    let tried_back: Vec<&str> = back
        .iter()
        .copied()
        .filter(|f| !CONTROLS.contains(f))
        .collect();
    println!(
        "figure: forms (the controls aside) that gave another tenant's key back: {} of {tried} \
         {tried_back:?} ({}); forms whose key was not signalled response_unheld: {unsignalled:?}",
        tried_back.len(),
        outcomes.join(", ")
    );
    for (i, f) in FORMS.iter().enumerate() {
        assert_eq!(
            got[&paths[i]][0], 200,
            "control: {f} was not answered: {outcomes:?}"
        );
        if CONTROLS.contains(f) {
            assert_eq!(
                got[&paths[i]][2], true,
                "control: {f} was not redacted: {outcomes:?}"
            );
        }
    }
    assert!(back.is_empty(), "another tenant's key came back: {back:?}");
    assert!(
        unsignalled.is_empty(),
        "keys shown (redacted) and not signalled: {unsignalled:?}"
    );
}

/// The caller's own key, echoed by its integration's host with every second character
/// in a UTF-7 segment or as `\xHH`, never comes back decodable (redacted now).
#[test]
fn the_callers_own_key_echoed_in_utf7_or_literal_escapes_never_comes_back() {
    let w = world("review46-utf7-self", DNS_PORT + 1);
    let paths = vec![
        "/self/utf7_mixed".to_owned(),
        "/self/esc_x_mixed".to_owned(),
    ];
    let got = nobody_broker_client(&w.env, "web", &attacker_script(&paths), &[]);
    let outcomes: Vec<String> = paths
        .iter()
        .map(|p| format!("{p}: {} marker {}", got[p][0], got[p][2]))
        .collect();
    let back: Vec<&String> = paths
        .iter()
        .filter(|p| got[*p][1].as_str().unwrap_or_default().contains(OWN))
        .collect();
    println!(
        "figure: echoes of the caller's own key (UTF-7, \\xHH) that gave it back: {} of {} ({})",
        back.len(),
        paths.len(),
        outcomes.join(", ")
    );
    assert!(back.is_empty(), "the caller's own key came back: {back:?}");
    // Whole in the view, the echo is the value's: redacted where its bytes were.
    for p in &paths {
        assert!(
            got[p][0] == 200 && got[p][2] == true || got[p][0] == "credential_fragment",
            "the echo of {p} was neither redacted nor refused: {outcomes:?}"
        );
    }
}
