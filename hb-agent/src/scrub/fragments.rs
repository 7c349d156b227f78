//! Pieces of one credential: every run of at least [`min_run`] consecutive characters
//! of the credential (or of one of its encodings, the scrubber's
//! [`forms`](super::live::forms)), compared ASCII case-insensitively. The broker
//! refuses a call whose request or answer holds one (`broker::fragment_hit`: a cut
//! answer would tell the caller which of its guesses was a piece of the key); other
//! exits redact them.
//!
//! The scrubber matches live values whole. An answer that holds only part of the
//! credential (a partial-content answer, an upstream that echoes the first K bytes of
//! the URL, or that echoes it upper-cased) matches no whole form, and a caller that
//! collects enough parts reads the credential back. Only the credentials the call
//! carried and those of the caller's other accounts are looked for (never every live
//! value: about 3,400 windows, 45 KB of tables, per 40-character value, and a scan per
//! value), so this stays cheap: a few dozen forms per value, their windows in a hash
//! set, and a 4-byte prefilter over the answer.
//!
//! Owns: the windows of one value's forms (kept beside the value, by the handle that
//! holds it).
//! Must never: outlive the value it is built from, or hand out a window. (Windows are
//! kept as keyed hashes; the 4-byte prefixes are kept as bytes, the exception the live
//! sampler makes too.)

use std::{
    collections::HashSet,
    hash::{BuildHasher, RandomState},
};

use zeroize::Zeroizing;

use super::live::forms;

/// What a redacted run is replaced with: the same marker as a whole live value, so the
/// caller learns nothing more than that its own credential was echoed.
const MARKER: &[u8] = b"[REDACTED:live_secret]";

/// Bytes of the prefilter window.
const PREFIX: usize = 4;

/// Bits of the prefilter: a value's forms have at most a few thousand distinct
/// windows (a 40-byte value: about 2,000), so a few positions in a hundred pass it by
/// chance and go on to the exact set.
const FILTER_BITS: usize = 1 << 16;

fn filter_hash(w: [u8; PREFIX]) -> usize {
    (u32::from_le_bytes(w).wrapping_mul(0x9E37_79B1) >> 16) as usize
}

/// The shortest run of a credential's characters that counts: half the value, between
/// 4 and 8 characters, and never fewer than carry [`RUN_BITS`] bits (of the alphabet past the public prefix).
///
/// Why these numbers: a credential a generator made (what a vault holds) has at least
/// about 5 bits per character even case-folded (36 symbols), so 8 characters are 40
/// bits; the chance that an unrelated 1 MiB answer holds one of a 40-character
/// value's ~30 forms' windows by accident is about 10⁶ · 30 · 40 / 36⁸ ≈ 4·10⁻⁴.
/// Shorter runs would match ordinary text more often; longer ones leave more of the
/// value readable to a caller that can choose where a truncated echo cuts (it learns
/// at most `n - 1` characters at each end of the value). Values shorter than 16
/// characters (8 is the scrubber's least) use half their length, so at most a quarter
/// of such a value can be read at each end — unless half of it is a guess: a hit bars
/// the reader and rotates the key, so a run must be more than another tenant can plant
/// every value of in a text the reader reads (5 hex digits are a 1 MiB comment).
pub fn min_run(value: &[u8]) -> usize {
    let half = value.len().div_ceil(2).clamp(PREFIX, 8);
    half.max(guess_proof_run(&value[public_prefix(value)..]))
}

/// Bits a run must carry: every run of 32 bits is 4·10⁹ of them, tens of gigabytes of
/// planted text.
const RUN_BITS: f64 = 32.0;

/// The fewest characters of `value`'s alphabet (case-folded, as runs are matched:
/// hex digits, or digits, letters and other bytes as present) that carry
/// [`RUN_BITS`].
fn guess_proof_run(value: &[u8]) -> usize {
    let symbols = if value.iter().all(u8::is_ascii_hexdigit) {
        if value.iter().all(u8::is_ascii_digit) {
            10
        } else {
            16
        }
    } else {
        let has = |f: fn(&u8) -> bool| value.iter().any(f);
        let digits = if has(u8::is_ascii_digit) { 10 } else { 0 };
        let letters = if has(u8::is_ascii_alphabetic) { 26 } else { 0 };
        let other = if has(|b| !b.is_ascii_alphanumeric()) {
            33
        } else {
            0
        };
        digits + letters + other
    };
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a small positive count of characters"
    )]
    let run = (RUN_BITS / f64::from(symbols).log2()).ceil() as usize;
    run
}

/// The windows of one value's forms, lower-cased, by window length.
pub struct Fragments {
    /// A bit per hash of every [`PREFIX`]-byte window of every form: the first test at
    /// each position of an answer, one multiplication and one load.
    filter: Vec<u64>,
    /// Every [`PREFIX`]-byte window of every form (the second test).
    prefixes: HashSet<[u8; PREFIX]>,
    /// (window length, hashes of the windows of that length). A form `e` times longer
    /// than the value (hex: 2, UTF-16: 2, percent-encoding: up to 3) is cut in windows
    /// `e` times longer, so each window carries about [`min_run`] characters of the
    /// value whatever its encoding.
    windows: Vec<(usize, HashSet<u64>)>,
    hasher: RandomState,
}

/// Longest word-built public prefix looked for: `sk-ant-api03-` and `github_pat_` fit.
const PUBLIC_PREFIX_MAX: usize = 16;

/// How many leading bytes of `value` every key of its kind shares, or anyone may read
/// off it, so that a run there says nothing of this value:
/// - a kind's prefix: words of letters and digits, the first starting with a letter,
///   each ending in `_` or `-` (`sk_live_`, `ghp_`, `xoxb-`, `github_pat_`, `sk-proj-`,
///   `sk-ant-api03-`), at most [`PUBLIC_PREFIX_MAX`] bytes; dashboards and key
///   listings show it (`sk_live_…4242`), and format documentation prints it;
/// - a JWT's header and claims (`eyJ…` `.` `…` `.`): every HS256 token starts
///   `eyJhbGciOiJIUzI1NiIs`, and the claims are readable by whoever holds a token; only
///   the signature is secret.
pub fn public_prefix(value: &[u8]) -> usize {
    jwt_signature_start(value).unwrap_or_else(|| kind_prefix(value))
}

fn kind_prefix(value: &[u8]) -> usize {
    let mut end = 0;
    let mut word = 0;
    for (i, &b) in value.iter().enumerate().take(PUBLIC_PREFIX_MAX) {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' => word += 1,
            b'0'..=b'9' if end > 0 || word > 0 => word += 1,
            b'_' | b'-' if word > 0 => {
                end = i + 1;
                word = 0;
            }
            _ => break,
        }
    }
    end
}

/// Where a JWT's signature starts (after the second `.`), if `value` is shaped as one:
/// three base64url segments, the first a JSON object's (`eyJ`).
fn jwt_signature_start(value: &[u8]) -> Option<usize> {
    let base64url = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
    let segments: Vec<&[u8]> = value.split(|&b| b == b'.').collect();
    match segments.as_slice() {
        [header, claims, signature]
            if header.starts_with(b"eyJ")
                && [header, claims, signature]
                    .iter()
                    .all(|s| !s.is_empty() && s.iter().all(base64url)) =>
        {
            Some(header.len() + claims.len() + 2)
        }
        _ => None,
    }
}

/// Where the windows of `form` (one of the value's forms) start to hold only the
/// value's own characters: past the form of the public prefix it starts with (an
/// encoding byte by byte: hex, percent, escapes, UTF-16), or past the longest start it
/// shares with one and [`MIXED`] more bytes (a base64 character there still carries
/// prefix bits, and a twice-encoded form spreads them one more).
fn private_start(form: &[u8], public_forms: &[Zeroizing<Vec<u8>>]) -> usize {
    if let Some(whole) = public_forms
        .iter()
        .filter(|p| form.starts_with(p))
        .map(|p| p.len())
        .max()
    {
        return whole;
    }
    public_forms
        .iter()
        .map(|p| p.iter().zip(form).take_while(|(a, b)| a == b).count())
        .max()
        .map_or(0, |shared| shared + MIXED)
}

/// Bytes past a form's shared start that may still mix public and private bits.
const MIXED: usize = 2;

impl Fragments {
    /// The windows of `value`'s forms. `None` for a value shorter than the shortest run.
    pub fn new(value: &[u8]) -> Option<Self> {
        let n = min_run(value);
        if value.len() < n {
            return None;
        }
        let hasher = RandomState::new();
        let mut prefixes = HashSet::new();
        let mut windows: Vec<(usize, HashSet<u64>)> = Vec::new();
        // A window that holds any of the public prefix is not the value's: every key of
        // its kind shows the prefix, so a window across its end is one short guess (36
        // for `sk_live_` and one character) and reading it proves nothing.
        let public: Vec<Zeroizing<Vec<u8>>> = match public_prefix(value) {
            0 => Vec::new(),
            p => forms(&value[..p])
                .into_iter()
                .map(|form| Zeroizing::new(form.expose().to_ascii_lowercase()))
                .collect(),
        };
        for form in forms(value) {
            let lower = Zeroizing::new(form.expose().to_ascii_lowercase());
            let len = (n * lower.len())
                .div_ceil(value.len())
                .clamp(n, lower.len().max(n));
            if lower.len() < len {
                continue;
            }
            let slot = match windows.iter().position(|(l, _)| *l == len) {
                Some(i) => i,
                None => {
                    windows.push((len, HashSet::new()));
                    windows.len() - 1
                }
            };
            let private = private_start(&lower, &public);
            for w in lower.get(private..).unwrap_or_default().windows(len) {
                windows[slot].1.insert(hasher.hash_one(w));
                prefixes.insert([w[0], w[1], w[2], w[3]]);
            }
        }
        let mut filter = vec![0u64; FILTER_BITS / 64];
        for p in &prefixes {
            let h = filter_hash(*p);
            filter[h >> 6] |= 1 << (h & 63);
        }
        Some(Self {
            filter,
            prefixes,
            windows,
            hasher,
        })
    }

    /// `hay` with every run of the value's characters redacted; `None` when it holds
    /// none.
    pub fn redact(&self, hay: &[u8]) -> Option<Vec<u8>> {
        let spans = self.spans(hay);
        if spans.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(hay.len());
        let mut at = 0;
        for span in spans {
            out.extend_from_slice(&hay[at..span.start]);
            out.extend_from_slice(MARKER);
            at = span.end;
        }
        out.extend_from_slice(&hay[at..]);
        Some(out)
    }

    /// Where `hay` holds runs of the value's characters, in order; overlapping and
    /// touching runs are one span.
    pub fn spans(&self, hay: &[u8]) -> Vec<std::ops::Range<usize>> {
        let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
        for run in self.runs(hay) {
            match spans.last_mut() {
                Some(last) if run.start <= last.end => last.end = last.end.max(run.end),
                _ => spans.push(run),
            }
        }
        spans
    }

    /// The longest run of the value's characters starting at each position of `hay`
    /// that starts one, in order, found as they are asked for.
    fn runs<'h>(&'h self, hay: &[u8]) -> impl Iterator<Item = std::ops::Range<usize>> + 'h {
        let lower = hay.to_ascii_lowercase();
        (0..lower.len().saturating_sub(PREFIX - 1)).filter_map(move |start| {
            let p = [
                lower[start],
                lower[start + 1],
                lower[start + 2],
                lower[start + 3],
            ];
            let h = filter_hash(p);
            if self.filter[h >> 6] & (1 << (h & 63)) == 0 || !self.prefixes.contains(&p) {
                return None;
            }
            self.windows
                .iter()
                .filter(|(len, _)| start + len <= lower.len())
                .filter(|(len, set)| {
                    set.contains(&self.hasher.hash_one(&lower[start..start + len]))
                })
                .map(|(len, _)| start..start + len)
                .max_by_key(|run| run.end)
        })
    }

    /// The bytes its tables hold (payload only, not the hash sets' slack): the
    /// prefilter's bits, the prefixes, and a hash per window.
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        let windows: usize = self.windows.iter().map(|(_, set)| set.len()).sum();
        (
            windows,
            self.filter.len() * 8 + self.prefixes.len() * PREFIX + windows * 8,
        )
    }

    /// Whether `hay` holds a run of the value's characters (the broker's fragment hit,
    /// see `broker::fragment_hit`).
    pub fn holds_run(&self, hay: &[u8]) -> bool {
        // The first run answers: the broker scans a caller's whole request body with
        // this on an async worker, and every run of 10 MiB of a value's pieces took 43 s
        // on the debug build.
        self.runs(hay).next().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUE: &str = "7UeRy-cred-7a6b5c4d3e2f1a0b9c8d7e6f";

    fn redacted(f: &Fragments, hay: &str) -> String {
        String::from_utf8(
            f.redact(hay.as_bytes())
                .unwrap_or_else(|| hay.as_bytes().to_vec()),
        )
        .expect("utf-8")
    }

    #[test]
    fn runs_of_the_value_are_redacted_in_any_case() {
        let f = Fragments::new(VALUE.as_bytes()).expect("long enough");
        assert_eq!(min_run(VALUE.as_bytes()), 8);
        // Range-sized pieces: 8 characters and more are redacted.
        for piece in [&VALUE[..8], &VALUE[3..11], &VALUE[20..], &VALUE[..30]] {
            let out = redacted(&f, &format!("{{\"self\":\"x?api_key={piece}\"}}"));
            assert!(!out.contains(piece), "{out}");
            assert!(out.contains("[REDACTED:live_secret]"), "{out}");
            let upper = piece.to_ascii_uppercase();
            let out = redacted(&f, &format!("KEY={upper}"));
            assert_eq!(out, "KEY=[REDACTED:live_secret]");
        }
        // Two pieces around other text: two markers.
        let two = format!("a{}!{}c", &VALUE[..9], &VALUE[15..25]);
        assert_eq!(
            redacted(&f, &two),
            "a[REDACTED:live_secret]![REDACTED:live_secret]c"
        );
        // Shorter than the run: left alone (and ordinary text untouched).
        let short = &VALUE[4..11];
        assert_eq!(redacted(&f, short), short);
        assert!(f.redact(b"{\"ok\":true,\"items\":[1,2,3]}").is_none());
    }

    #[test]
    fn runs_of_encoded_forms_are_redacted() {
        let f = Fragments::new(VALUE.as_bytes()).expect("long enough");
        let hex: String = VALUE.bytes().map(|b| format!("{b:02X}")).collect();
        let out = redacted(&f, &format!("h={}", &hex[6..30]));
        assert_eq!(out, "h=[REDACTED:live_secret]");
        let wide: Vec<u8> = VALUE[5..20]
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let out = f.redact(&wide).expect("UTF-16 piece found");
        assert!(!out.windows(4).any(|w| w == &wide[..4]), "{out:?}");
    }

    #[test]
    fn a_kinds_public_prefix_is_no_run_of_the_value() {
        assert_eq!(public_prefix(b"sk_live_51Hx7a6b5c4d3e2f1a0b9c8d7e6f"), 8);
        assert_eq!(public_prefix(b"github_pat_11ABCDEF0123456789"), 11);
        assert_eq!(public_prefix(b"key-7a6b5c4d3e2f1a0b9c8d7e6f"), 4);
        assert_eq!(public_prefix(b"7a6b5c4d3e2f1a0b9c8d7e6f"), 0);
        let value = "sk_live_51Hx7a6b5c4d3e2f1a0b9c8d7e6f";
        let f = Fragments::new(value.as_bytes()).expect("long enough");
        // A key listing shows the prefix and the last four: nothing of this key.
        let listing = "{\"keys\":[\"sk_live_...7e6f\",\"SK_LIVE_\"]}";
        assert_eq!(redacted(&f, listing), listing);
        // A run of eight of the value's own characters is the value's, with the
        // prefix before it or not.
        assert!(f.holds_run(b"x sk_live_51Hx7a6b y"));
        assert!(f.holds_run(b"x 51Hx7a6b y"));
        // Across the prefix's end it is a guess of a few characters: every one of them
        // planted in one text is no run of this value.
        let guesses: String = (b'0'..=b'9')
            .chain(b'a'..=b'z')
            .map(|c| format!("sk_live_{} sk_live_5{} ", c as char, c as char))
            .collect();
        assert!(!f.holds_run(guesses.as_bytes()), "{guesses}");
        use base64::Engine as _;
        for lead in ["", "a", "ab"] {
            let encoded: String = (b'0'..=b'9')
                .chain(b'a'..=b'z')
                .map(|c| {
                    let guess = format!("{lead}sk_live_5{}", c as char);
                    base64::engine::general_purpose::STANDARD.encode(guess) + " "
                })
                .collect();
            assert!(!f.holds_run(encoded.as_bytes()), "{encoded}");
        }
        assert!(!f.holds_run(b"x sk_live_51Hx7a6 y"), "seven of its own");
    }

    #[test]
    fn a_kinds_prefix_with_digits_and_a_jwts_header_and_claims_are_public() {
        assert_eq!(public_prefix(b"sk-ant-api03-Xy7a6b5c4d3e2f1a0b9c8d"), 13);
        assert_eq!(public_prefix(b"xoxb-1234567890-7a6b5c4d3e2f1a0b"), 16);
        assert_eq!(public_prefix(b"0day-7a6b5c4d3e2f1a0b9c8d7e6f"), 0);
        let header = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
        let claims = "eyJzdWIiOiJ0ZW5hbnQtYiIsImlhdCI6MTcwMDAwMDAwMH0";
        let signature = "q3V8x0Zr7m2LkS9cT1wYbN4hJ6dF5gA8eR0uI2oP7sX";
        let jwt = format!("{header}.{claims}.{signature}");
        assert_eq!(
            public_prefix(jwt.as_bytes()),
            header.len() + claims.len() + 2
        );
        assert_eq!(public_prefix(b"eyJhbGciOiJIUzI1NiIs.only-two"), 0);
        let f = Fragments::new(jwt.as_bytes()).expect("long enough");
        // Every HS256 token's header, and the claims, as a tutorial prints them.
        assert!(!f.holds_run(format!("Authorization: Bearer {header}.{claims}.").as_bytes()));
        assert!(f.holds_run(format!("sig={}", &signature[10..20]).as_bytes()));
        let ant = "sk-ant-api03-Xy7a6b5c4d3e2f1a0b9c8d";
        let f = Fragments::new(ant.as_bytes()).expect("long enough");
        assert!(!f.holds_run(b"keys look like sk-ant-api03-... or SK-ANT-API03-X"));
        assert!(f.holds_run(b"api03-Xy7a6b5c4d"));
    }

    #[test]
    fn short_values_use_half_their_length() {
        assert_eq!(min_run(b"Zq8pW2kd7xLm"), 7, "half is a guess: 32 bits");
        assert_eq!(min_run(b"Zq8p!2kd7xLmR4tY9"), 8);
        assert_eq!(min_run(&[b'k'; 4096]), 8);
        let f = Fragments::new(b"pa55w0rd").expect("long enough");
        assert_eq!(redacted(&f, "x PA55W0R y"), "x [REDACTED:live_secret] y");
        assert_eq!(redacted(&f, "x pa55w0 y"), "x pa55w0 y");
    }

    /// A short key's half is a guess another tenant can plant every value of: runs
    /// carry 32 bits whatever the key's alphabet.
    #[test]
    fn a_run_carries_32_bits_whatever_the_alphabet() {
        assert_eq!(min_run(b"9f3a61c0d2"), 8, "hex: 4 bits a digit");
        assert_eq!(min_run(b"4821907735"), 10, "digits");
        assert_eq!(
            min_run(b"pin-4821907735"),
            10,
            "the alphabet past the prefix"
        );
        assert!(Fragments::new(b"482190").is_none(), "a PIN has no run");
        let f = Fragments::new(b"9f3a61c0d2").expect("long enough");
        let every_five: String = (0..0x10_0000u32).map(|i| format!("{i:05x} ")).collect();
        assert!(!f.holds_run(every_five.as_bytes()));
        assert!(f.holds_run(b"x 9F3A61C0 y"));
    }

    /// What one value's watch costs in memory (the figure behind watching a caller's
    /// own accounts' values only, not every live value of the node).
    #[test]
    fn one_values_windows_are_a_few_thousand() {
        let f = Fragments::new(b"ghp_R8evw8Tok3nXyZaBcDeFgHiJkLmNoPqRs0AZ").expect("long enough");
        let (windows, bytes) = f.size();
        println!("figure: a 40-character value: {windows} windows, {bytes} bytes of tables");
        assert!((500..20_000).contains(&windows), "{windows}");
    }
}
