//! What an assignment's name and value say: the checks of the generic assignment
//! families (`service_credential`, `secret_assignment`), whose regexes alone also fit
//! ordinary code, configuration and CI output.
//!
//! Owns: telling a credential assigned to a name from a placeholder, a path, a version,
//! a commit, a public key or an identifier assigned to itself. Must never: read more than
//! `engine::LOOKBACK` bytes before the keyword (a stream holds no more), or report
//! anything about the value.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;

use super::{engine::LOOKBACK, families::entropy};

/// Which assignment family a name check is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Assigned {
    /// A service's name (`SENTRY_…`, `linear:`): the keyword is a service, the rest of the
    /// name says what of it is assigned.
    Service,
    /// A secret-ish name (`api_key`, `token`, `password`): the keyword must be the word
    /// (`tokenizer`, `author`, `keyboard` are other words).
    Secret,
}

/// Whether `window[span]`, matched at a keyword at `hay[at]` (`window` starts there), is
/// a credential: by its name (the identifier holding the keyword: up to
/// [`LOOKBACK`] bytes of it before the keyword, and the match before the assignment) and
/// by its value.
pub(super) fn credential(
    hay: &[u8],
    at: usize,
    window: &[u8],
    span: std::ops::Range<usize>,
    kind: Assigned,
    (bits, letter, digits): (f64, bool, usize),
) -> bool {
    let value = &window[span.clone()];
    let name_len = window[..span.start]
        .iter()
        .position(|&b| !is_ident(b))
        .unwrap_or(span.start);
    let name = &window[..name_len];
    let before = hay[at.saturating_sub(LOOKBACK)..at]
        .iter()
        .rev()
        .take_while(|&&b| is_ident(b))
        .count();
    let prefix = &hay[at - before..at];
    // Cheapest first: the value's digit and letter counts reject most of the near
    // misses of ordinary text (`"token": "Bearer"`), before the name is split into
    // words (which allocates) for every one of them.
    plausible_value(value, bits, letter, digits)
        && !assigned_to_itself(name, value)
        && (kind == Assigned::Service || secret_word(name))
        && !(kind == Assigned::Service && slug(value))
        && !public_name(prefix, name)
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// The last word of a name that says its value is not a credential (`TRAVIS_COMMIT`,
/// `SENTRY_RELEASE`, `SONAR_SCANNER_VERSION`, `api_url`), compared lower-cased.
const PUBLIC_LAST_WORDS: &[&[u8]] = &[
    b"commit",
    b"sha",
    b"release",
    b"revision",
    b"rev",
    b"version",
    b"ref",
    b"branch",
    b"tag",
    b"url",
    b"uri",
    b"host",
    b"hostname",
    b"port",
    b"path",
    b"file",
    b"filename",
    b"dir",
    b"name",
    b"type",
    b"mode",
    b"format",
    b"fingerprint",
    b"checksum",
    b"digest",
    b"length",
    b"size",
    b"count",
    b"timeout",
    b"ttl",
    b"expiry",
    b"expires",
    b"algorithm",
];

/// Words of a name that make the whole of it public (`PublicKey`, `public_key`,
/// `pubkey`).
const PUBLIC_WORDS: &[&[u8]] = &[b"public", b"pub", b"pubkey"];

/// The words of an identifier, lower-cased: split at `_`, `-`, `.` and where a lower-case
/// letter or digit is followed by an upper-case one (`passWord`, `X509KeyUsage`).
fn words(ident: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut prev = 0u8;
    for &b in ident {
        let camel = b.is_ascii_uppercase() && (prev.is_ascii_lowercase() || prev.is_ascii_digit());
        if (matches!(b, b'_' | b'-' | b'.') || camel) && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        if !matches!(b, b'_' | b'-' | b'.') {
            cur.push(b.to_ascii_lowercase());
        }
        prev = b;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The identifier (`prefix` before the keyword, `name` from it) names something public.
fn public_name(prefix: &[u8], name: &[u8]) -> bool {
    let mut ident = prefix.to_vec();
    ident.extend_from_slice(name);
    let words = words(&ident);
    words.iter().any(|w| PUBLIC_WORDS.contains(&w.as_slice()))
        || words
            .last()
            .is_some_and(|w| PUBLIC_LAST_WORDS.contains(&w.as_slice()))
}

/// What may follow a secret-ish keyword in its word (`tokens`, `authtoken`,
/// `secretkey`); anything else makes another word (`tokenizer`, `author`, `keyboard`).
const KEYWORD_ENDINGS: &[&[u8]] = &[b"", b"s", b"key", b"keys", b"token", b"tokens"];

/// `name` starts with one of `secret_assignment`'s keywords, and that keyword is the
/// word there, not the start of another.
fn secret_word(name: &[u8]) -> bool {
    let Some(keyword) = super::families::secret_keyword(name) else {
        return false;
    };
    let rest = &name[keyword..];
    let Some(&last) = name[..keyword].last() else {
        return false;
    };
    if !last.is_ascii_alphabetic() {
        return true;
    }
    // The rest of the word: letters of the keyword's case (an upper-case letter after a
    // lower-case one starts a new word).
    let more = rest
        .iter()
        .take_while(|b| {
            if last.is_ascii_lowercase() {
                b.is_ascii_lowercase()
            } else {
                b.is_ascii_alphabetic()
            }
        })
        .count();
    KEYWORD_ENDINGS.contains(&rest[..more].to_ascii_lowercase().as_slice())
}

/// `exports.X509KeyUsageExtension = X509KeyUsageExtension;`: a code identifier assigned
/// to itself (or to a longer name ending in it).
fn assigned_to_itself(name: &[u8], value: &[u8]) -> bool {
    !name.is_empty()
        && value.ends_with(name)
        && value
            .first()
            .is_some_and(|&b| b.is_ascii_alphabetic() || b == b'_')
        && value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A value made of words, numbers and short tags joined by `-` or `_`
/// (`ENG-1234-fix-login-redirect-2`, `bert-base-multilingual-cased-v2`): a branch, a
/// ticket, a model name. After a service's name it is one of these far more often than
/// a key (random keys mix cases and digits within their parts).
fn slug(v: &[u8]) -> bool {
    let parts: Vec<&[u8]> = v.split(|&b| b == b'-' || b == b'_').collect();
    let plain = |p: &&[u8]| {
        p.len() <= 3
            || p.iter().all(u8::is_ascii_lowercase)
            || p.iter().all(u8::is_ascii_uppercase)
            || p.iter().all(u8::is_ascii_digit)
    };
    let words = parts
        .iter()
        .filter(|p| p.len() >= 3 && p.iter().all(u8::is_ascii_alphabetic))
        .count();
    parts.len() >= 3 && words >= 2 && parts.iter().all(plain)
}

/// A content address after words joined by `-` (`Linux-cargo-<sha1>`,
/// `deps-<sha256>`): a cache key, an artifact or image name. Only `-`, and only a
/// lower-case digest: tokens put their prefix before `_` (`sgp_local_<40 hex>`).
fn content_addressed(v: &[u8]) -> bool {
    let parts: Vec<&[u8]> = v.split(|&b| b == b'-').collect();
    let Some((last, words)) = parts.split_last() else {
        return false;
    };
    matches!(last.len(), 40 | 64)
        && last
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        && !words.is_empty()
        && words
            .iter()
            .all(|w| w.len() >= 2 && w.iter().all(u8::is_ascii_alphabetic))
}

/// A DER public key in base64 (`MFkwEwYHKoZIzj0CAQ…`, `MIIBIjANBgkqhkiG9w0BAQEF…`): a
/// SubjectPublicKeyInfo is a SEQUENCE whose first element is a SEQUENCE (the
/// algorithm); private keys (PKCS #1, PKCS #8) start with an INTEGER (the version).
fn public_key_der(v: &[u8]) -> bool {
    let Some(head) = v.get(..8) else {
        return false;
    };
    let Ok(der) = STANDARD_NO_PAD.decode(head) else {
        return false;
    };
    let inner = match der.get(1) {
        Some(&n) if n < 0x80 => 2,
        Some(0x81) => 3,
        Some(0x82) => 4,
        _ => return false,
    };
    der.first() == Some(&0x30) && der.get(inner) == Some(&0x30)
}

/// What placeholders and example values hold (compared lower-cased).
const PLACEHOLDERS: &[&[u8]] = &[
    b"example",
    b"changeme",
    b"change_me",
    b"placeholder",
    b"your_",
    b"your-",
    b"xxxx",
    b"dummy",
    b"redacted",
    b"sample",
    b"12345678",
    b"abcdefgh",
    b"password",
    b"secret",
    b"token",
];

/// [`Check::Value`]: a value someone assigned as a credential, not a placeholder, a path,
/// a URL or a dotted name from code (`self.auth_token2`, `os.environ.get`).
pub(super) fn plausible_value(v: &[u8], bits: f64, letter: bool, digits: usize) -> bool {
    if v.iter().filter(|b| b.is_ascii_digit()).count() < digits
        || (letter && !v.iter().any(u8::is_ascii_alphabetic))
        || matches!(v.first(), Some(b'/' | b'.'))
        || v.windows(2).any(|w| w == b"//")
        || entropy(v) < bits
    {
        return false;
    }
    let lower = v.to_ascii_lowercase();
    if PLACEHOLDERS
        .iter()
        .any(|p| lower.windows(p.len()).any(|w| w == *p))
        || public_shape(&lower)
        || content_addressed(v)
        || public_key_der(v)
    {
        return false;
    }
    // A dotted name: every part starts like an identifier.
    let dotted = v.contains(&b'.')
        && v.split(|&b| b == b'.').all(|part| {
            part.first()
                .is_some_and(|&b| b.is_ascii_alphabetic() || b == b'_')
                && part.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_')
        });
    !dotted
}

/// Values whose shape says what they are, and it is not a credential: an integrity hash
/// or image digest (`sha512-…`, `sha256:…`), an address with a port (`db.internal:5432`,
/// `10.0.0.7:8080`), a timestamp (`2024-05-01T12:00:00Z`), a version (`v2.3.14-rc1`,
/// `5.0.1.3006-linux`), an object key or file path ending in an extension
/// (`uploads/2024/<uuid>.png`). `v` is lower-cased.
fn public_shape(v: &[u8]) -> bool {
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    let integrity = [
        "sha1-", "sha256-", "sha384-", "sha512-", "sha256:", "sha512:",
    ]
    .iter()
    .any(|p| v.starts_with(p.as_bytes()));
    let host_port = match v.iter().rposition(|&b| b == b':') {
        Some(i) if (2..=5).contains(&(v.len() - i - 1)) && digits(&v[i + 1..]) => v[..i]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'),
        _ => false,
    };
    let timestamp = v.len() >= 16
        && digits(&v[0..4])
        && v[4] == b'-'
        && digits(&v[5..7])
        && v[7] == b'-'
        && digits(&v[8..10])
        && matches!(v[10], b't' | b' ')
        && digits(&v[11..13])
        && v[13] == b':';
    let version = {
        let rest = v.strip_prefix(b"v").unwrap_or(v);
        let mut parts = rest.split(|&b| b == b'.');
        let (a, b) = (parts.next(), parts.next());
        let c = parts.next().map(|c| {
            let n = c.iter().take_while(|b| b.is_ascii_digit()).count();
            &c[..n]
        });
        a.is_some_and(digits) && b.is_some_and(digits) && c.is_some_and(digits)
    };
    let object_key = v.contains(&b'/')
        && v.rsplit(|&b| b == b'/').next().is_some_and(|last| {
            last.iter().rposition(|&b| b == b'.').is_some_and(|dot| {
                let ext = &last[dot + 1..];
                (2..=4).contains(&ext.len()) && ext.iter().all(u8::is_ascii_lowercase)
            })
        });
    integrity || host_port || timestamp || version || object_key
}
