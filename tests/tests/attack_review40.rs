//! A fortieth attack review, run as the process inside `sandbox run --policy web`
//! (`--user 65534`, arbitrary Python) holding a handle of its own policy, and as the
//! operator of an upstream that echoes: what landed last (a policy's `accounts`, the
//! scrubber's new forms and spread view, the ping/raw opt-in, the socket folder bind and
//! the removal of abandoned cgroups, `events::inert`). Each test counts and prints a
//! `figure:` line.
//!
//! Found:
//! - the spread view (`scrub/spread.rs`), which reads a broker answer's escapes so that a
//!   value with some of its characters escaped is whole there, read an HTML numeric
//!   reference only with its `;` and at most 8 digits, no named reference, no
//!   percent-escape, and one layer of escapes only: browsers and Python's
//!   `html.unescape` read `&#106&#107` (no `;`), `&#0000000106;` and `&lowbar;` as `jk`,
//!   `j` and `_`; `unquote` reads `%76k%34` and a key whose `_` alone is `%5F`; a
//!   reader undoes both layers of `%26%23106%3B` (`&#106;` percent-encoded) and of
//!   `\\u006a` (JSON inside a JSON string). An upstream that wrote another tenant's key
//!   in one of those forms handed it back whole to the attacker's decoder, unredacted:
//!   8 of 8 forms on b70f749 (decimal and hex references without `;`, decimal ones with
//!   8-digit zero padding, every other character percent-encoded, only the `_`
//!   percent-encoded, only the `_` as `&lowbar;`, every character as a percent-encoded
//!   reference, every character `\u`-escaped in JSON inside JSON). The view now reads
//!   numeric references as HTML does, `%XX` of printable ASCII in a body holding a
//!   `%XX` of an unreserved character or a percent-encoded `&#` or `\u` (no URL encoder
//!   escapes those but one escaping every byte, whose whole form is a live form),
//!   HTML5's named references of ASCII punctuation in a body holding one that templates
//!   do not write, and escapes of escapes up to three layers: 0 of 8
//!   ([`another_tenants_key_in_loose_references_or_escapes_never_comes_back`]).
//!
//! - the key in uuencode (`binascii.b2a_uu`) and inside base64 of gzip (how Helm
//!   stores a release, values and all) came back, 2 of 3 on b70f749 (hex with a space
//!   between bytes was redacted). The packed view (`scrub/packed.rs`) decodes base64
//!   runs that start a gzip stream (`H4sI`, base64url, and base64 of that, `SDRzSU`),
//!   inflated within a ratio and a cap per run and per answer counted in the caller's
//!   answer share, and blocks of uuencoded lines, and redacts a run whole where a live
//!   value is inside (a run the bounds stopped is redacted whole too): 0 of 3
//!   ([`another_tenants_key_in_other_stock_decoders_forms_never_comes_back`]).
//!
//! Held (read in the code, and where said tried on b70f749):
//! - a policy's `accounts`: `create_handle` is the one place a handle (and so a
//!   credential) is issued, and it asks `PolicyConfig::binds` with the request's exact
//!   strings; the vault's lookups are exact (`integration = ?1 AND account = ?2`, no
//!   `COLLATE NOCASE`), so a case, Unicode or whitespace variant of a listed account is
//!   `binding_missing`, and one of an unlisted account is too (it is not listed); a
//!   handle's use checks its owner, not the policy again, but the agent has no config
//!   reload (a changed policy needs a restart, which forgets every handle). Decoys,
//!   the fragment watch and reflection act only on accounts the caller was handed.
//! - the scrubber's cost: keyword units of every family interleaved (all ~300
//!   concatenated and repeated, each unit 2–64 times in turn, a random mix; 64 KiB) take
//!   9–20 bytes of rule work per byte (`scrub_counting`, a scratch test not kept), under
//!   the 65 of the worst single unit and the 128 the effort tests allow; stacked content
//!   codings (`gzip, gzip, …`, any number) decode each layer within
//!   `max_response_bytes` and count every layer's bytes against the caller's answer
//!   share (a third of 64 MiB): about 21 MiB of work a call at most, however stacked.
//! - the view's new readings cost one `memchr` step per `%` and per `&` of a body, and
//!   an escape's digits are read once (a failed `&#` moves on by one byte, past which no
//!   `&#` starts); its layers are at most three passes, each kept only if it decoded
//!   something.
//! - chunk boundaries and codings: the broker holds an answer whole (chunked transfer
//!   undone by hyper, gzip/deflate/br/zstd decoded, stacked in any order) before the
//!   scrub, so a value split across chunks or inside a compressed body is whole there;
//!   an unknown coding is `unreadable_response`.
//! - ping/raw opt-in (`sock_create`): without it no ping or raw socket opens; with it
//!   `SO_BROADCAST` stays refused on them (`setsockopt`), a ping to a broadcast address
//!   is EACCES, IPv6 multicast is judged before the kernel loops it
//!   (`ip6_finish_output`), and the IPv4 multicast loop is the documented risk of the
//!   opt-in (attack review 27 tried each; not tried again here).
//! - abandoned-cgroup removal: `cgroup::abandoned` needs `populated 0` and a free lock,
//!   and the enrollment goes only once `rmdir` succeeded, which the kernel refuses for a
//!   cgroup with a process or a child: a live sandbox cannot be unenrolled by a race of
//!   the two checks; the sandbox cannot move itself out (its cgroupfs is read-only) nor
//!   reach the launcher's lock (a `CLOEXEC` descriptor outside its pid namespace).
//! - operator outputs: the event stream, the audit log, `events --json` and `status
//!   --json` go through `events::inert`; a rotation's `last_error` is a fixed class word.

use hb_tests::{sandboxed::nobody_broker_client, worlds::EchoTenants};

const DNS_PORT: u16 = 5740;

/// The provider's API, where both tenants' integrations send their credentials.
const API: &str = "api.provider.test";

/// The forms the upstream writes another tenant's key in (see [`ECHO_PY`]) that the
/// view of escapes reads, each one a stock decoder undoes: `html.unescape` (numeric
/// references without their `;`, or with leading zeros; `&lowbar;`),
/// `urllib.parse.unquote` (some characters percent-encoded), both (HTML references
/// percent-encoded) and `json.loads` twice (every character `\u`-escaped in a JSON
/// string inside a JSON string).
const ESCAPES: [&str; 8] = [
    "html_nosemi",
    "htmlx_nosemi",
    "html_zeros",
    "pct_some",
    "pct_sep",
    "html_named",
    "pct_html",
    "json2",
];

/// The forms of stock decoders the packed view reads: `binascii.a2b_uu` (uuencode),
/// `base64` + `gzip` (a Helm release's storage), and (a control, redacted by the live
/// forms before) hex with a space between bytes.
const PACKED: [&str; 3] = ["uu", "b64gzip", "hex_spaced"];

/// Every form; the other tenant has a key per form, `victim(i)` for the `i`th.
fn forms() -> Vec<&'static str> {
    ESCAPES.iter().chain(&PACKED).copied().collect()
}

/// The provider's echo API: `/other/F/N` answers with `victims[N]` (another tenant's
/// key, which the provider knows) in form `F`, after a line `you sent:`.
const ECHO_PY: &str = r#"
import base64, binascii, gzip
class H(TlsHandler):
    def do_GET(self):
        parts = self.path.split("/")
        f = parts[2]
        k = victims[int(parts[3])]
        kb = k.encode()
        forms = {
            "html_nosemi": "".join("&#%d" % ord(c) for c in k),
            "htmlx_nosemi": "".join("&#x%x" % ord(c) for c in k),
            "html_zeros": "".join("&#%08d;" % ord(c) for c in k),
            "pct_some": "".join(c if i % 2 else "%%%02X" % ord(c) for i, c in enumerate(k)),
            "pct_sep": k.replace("_", "%5F"),
            "html_named": k.replace("_", "&lowbar;"),
            "uu": binascii.b2a_uu(kb).decode().rstrip("\n"),
            "b64gzip": base64.b64encode(gzip.compress(b'{"values":{"token":"' + kb + b'"}}', mtime=0)).decode(),
            "hex_spaced": kb.hex(" "),
            "pct_html": urllib.parse.quote("".join("&#%d;" % ord(c) for c in k)),
            "json2": json.dumps("".join("\\u%04x" % ord(c) for c in k))[1:-1],
        }
        body = ("you sent:\n" + forms[f] + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
"#;

/// The attacker's side: for each form `f` of `forms` (index `i` in [`forms()`]) a call
/// with its own handle to `/other/f/i`, the answer decoded as its form says (nothing
/// when it does not decode): `{f: [status or error code, decoded, whether the body
/// holds a marker]}`.
fn attacker_script(forms: &[&str]) -> String {
    let all = self::forms();
    format!(
        r#"
import base64, binascii, gzip, html, urllib.parse
def decode(f, body):
    t = body.split("you sent:\n", 1)[-1].rstrip("\n")
    if f.startswith("html"):
        return html.unescape(t)
    if f == "pct_html":
        return html.unescape(urllib.parse.unquote(t))
    if f.startswith("pct"):
        return urllib.parse.unquote(t)
    if f == "uu":
        return binascii.a2b_uu(t).decode("latin-1")
    if f == "b64gzip":
        return gzip.decompress(base64.b64decode(t)).decode("latin-1")
    if f == "json2":
        return json.loads(json.loads('"' + t + '"').join('""'))
    if f == "hex_spaced":
        return bytes.fromhex(t).decode("latin-1")
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
/// matches.
fn victim(i: usize) -> String {
    let bits = (i as u128 + 47).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    format!("vk{i:02}_{:016x}{:016X}", bits >> 64, bits as u64)
}

/// Runs the attack in a world of its own (`name`): the other tenant takes handles for
/// its keys, the attacker asks for each of `forms` (names in [`forms()`]); prints the
/// forms whose decoded answer holds the other tenant's key and asserts there are none.
fn assert_never_given_back(name: &str, forms: &[&str]) {
    let all = self::forms();
    let victims: Vec<String> = (0..all.len()).map(victim).collect();
    let w = EchoTenants::start(
        name,
        DNS_PORT,
        API,
        ECHO_PY,
        &[("bot", "own-4c9a1f3d5e8b0c6a2d4f7e9b1c3a2b7e")],
        &victims,
    );
    let got = nobody_broker_client(&w.env, "web", &attacker_script(forms), &[]);
    let mut back = Vec::new();
    let mut outcomes = Vec::new();
    for f in forms {
        let i = all.iter().position(|g| g == f).expect("a form of forms()");
        let decoded = got[f][1].as_str().unwrap_or_default();
        if decoded.contains(&victim(i)) {
            back.push((*f).to_owned());
        }
        outcomes.push(format!("{f}: {} marker {}", got[f][0], got[f][2]));
    }
    println!(
        "figure: forms that gave another tenant's key back: {} of {} {back:?} ({})",
        back.len(),
        forms.len(),
        outcomes.join(", ")
    );
    assert!(
        forms.iter().any(|f| got[f][0] == 200),
        "control: no form was answered: {outcomes:?}"
    );
    assert!(back.is_empty(), "another tenant's key came back: {back:?}");
}

/// Another tenant's key, put by the provider in HTML references as browsers and
/// `html.unescape` read them (numeric ones without `;` or with leading zeros, `&lowbar;`),
/// with some of its characters percent-encoded, or escaped twice, in an answer to the
/// attacker's own call, never comes back decodable.
#[test]
fn another_tenants_key_in_loose_references_or_escapes_never_comes_back() {
    assert_never_given_back("review40-escapes", &ESCAPES);
}

/// Another tenant's key uuencoded, in base64 of gzip or in spaced hex ([`PACKED`])
/// never comes back decodable.
#[test]
fn another_tenants_key_in_other_stock_decoders_forms_never_comes_back() {
    assert_never_given_back("review40-forms", &PACKED);
}
