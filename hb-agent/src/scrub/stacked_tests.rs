//! Live values in stacked encodings and wide charsets: UTF-32 of non-ASCII text,
//! base64 of UTF-16 and UTF-32, hex of UTF-16, percent-encoded base64, JSON strings with
//! every character escaped, HTML numeric character references. Each is planted inside a
//! longer text at every offset where the encoding's alignment depends on it, encoded by
//! an encoder written here (or a literal Python wrote), and the test asserts that a
//! redaction covers every output byte that depends on the value alone, in a whole-buffer
//! scrub and in streams cut into 1- and 7-byte chunks.

use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};

use super::*;
use crate::secret::Secret;

/// Synthetic values: ASCII, and non-ASCII with 2-, 3- and 4-byte characters (the last
/// a UTF-16 surrogate pair).
const ASCII: &str = "Zq8kLm2vX9pQ-live-7a6b5c4d";
const WIDE: &str = "pä$$wörd-Zq8k€-𝄞live";
/// Its standard base64 holds `+` and `/` at every byte offset.
const SIGNS: &str = "k3y?>>~~?~secret";

pub(super) fn scrubber(values: &[&str]) -> Scrubber {
    let s = Scrubber::new();
    for v in values {
        s.register("live_secret", &Secret::new(v.as_bytes().to_vec()))
            .expect("registered");
    }
    s
}

pub(super) fn stream_in(s: &Scrubber, input: &[u8], chunk: usize) -> Vec<u8> {
    let mut stream = s.stream();
    let mut out = Vec::new();
    for c in input.chunks(chunk) {
        stream.push(c, &mut out);
    }
    stream.finish(&mut out);
    out
}

/// Asserts that scrubbing `encoded` redacts all of `must` (the bytes that spell the
/// value) as a live value, and that streams agree.
pub(super) fn assert_cut(s: &Scrubber, encoded: &[u8], must: Range<usize>, what: &str) {
    assert!(
        must.end <= encoded.len() && must.len() >= 8,
        "{what}: bad range"
    );
    let out = s.scrub(encoded);
    assert!(
        out.redactions.iter().any(|r| r.family == "live_secret"
            && r.offset <= must.start
            && r.offset + r.len >= must.end),
        "{what}: {:?} not covered by {:?}",
        must,
        out.redactions
    );
    assert!(
        s.matching(&out.bytes, Sees::All).is_empty(),
        "{what}: a form is left"
    );
    for chunk in [1, 7] {
        // Not `assert_eq!`: a failure would print what may hold the value.
        assert!(
            stream_in(s, encoded, chunk) == out.bytes,
            "{what}: chunk {chunk}"
        );
    }
}

fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
    text.encode_utf16()
        .flat_map(|u| {
            if big_endian {
                u.to_be_bytes()
            } else {
                u.to_le_bytes()
            }
        })
        .collect()
}

fn utf32(text: &str, big_endian: bool) -> Vec<u8> {
    text.chars()
        .flat_map(|c| {
            if big_endian {
                u32::from(c).to_be_bytes()
            } else {
                u32::from(c).to_le_bytes()
            }
        })
        .collect()
}

/// The base64 characters of an encoding of `bytes` that depend on `bytes[span]` alone.
fn base64_inside(span: Range<usize>) -> Range<usize> {
    (8 * span.start).div_ceil(6)..8 * span.end / 6
}

#[test]
fn utf32_of_a_value_is_cut_at_any_alignment_without_the_spread_view() {
    let s = scrubber(&[ASCII, WIDE]);
    for value in [ASCII, WIDE] {
        for big_endian in [false, true] {
            for junk in 0..=3 {
                let text = format!("you sent: {value}\n");
                let mut encoded = b"\xff\xfe\x01"[..junk].to_vec();
                encoded.extend(utf32(&text, big_endian));
                let start = junk + 4 * "you sent: ".chars().count();
                let must = start..start + 4 * value.chars().count();
                assert_cut(
                    &s,
                    &encoded,
                    must,
                    &format!("utf-32 be={big_endian} junk={junk}"),
                );
            }
        }
    }
}

#[test]
fn utf16_of_a_non_ascii_value_is_cut() {
    let s = scrubber(&[WIDE]);
    for big_endian in [false, true] {
        for junk in 0..=1 {
            let mut encoded = b"\x01"[..junk].to_vec();
            encoded.extend(utf16("id=", big_endian));
            let start = encoded.len();
            encoded.extend(utf16(WIDE, big_endian));
            let must = start..encoded.len();
            encoded.extend(utf16(";", big_endian));
            assert_cut(&s, &encoded, must, &format!("utf-16 be={big_endian}"));
        }
    }
}

/// A header echoed by a server that reads its bytes as Latin-1 (Python's `http.server`,
/// WSGI): the value's UTF-8 bytes come back one character each, as UTF-8 or as
/// `json.dumps` escapes them (literals as Python wrote them for `WIDE`).
#[test]
fn a_non_ascii_value_read_as_latin1_is_cut() {
    let s = scrubber(&[WIDE]);
    let mojibake: String = WIDE.bytes().map(char::from).collect();
    let escaped =
        r"p\u00c3\u00a4$$w\u00c3\u00b6rd-Zq8k\u00e2\u0082\u00ac-\u00f0\u009d\u0084\u009elive";
    for (form, what) in [
        (mojibake.as_str(), "latin-1 read, written as UTF-8"),
        (escaped, "latin-1 read, JSON-escaped"),
    ] {
        let mut encoded = br#"{"headers": {"Authorization": "Bearer "#.to_vec();
        let start = encoded.len();
        encoded.extend(form.as_bytes());
        let must = start..encoded.len();
        encoded.extend(br#""}}"#);
        assert_cut(&s, &encoded, must, what);
    }
}

#[test]
fn base64_of_utf16_and_utf32_is_cut_at_every_byte_offset() {
    let s = scrubber(&[ASCII, WIDE]);
    type Wide = fn(&str, bool) -> Vec<u8>;
    let charsets: [(&str, Wide); 2] = [("utf-16", utf16), ("utf-32", utf32)];
    for value in [ASCII, WIDE] {
        for (name, charset) in charsets {
            for big_endian in [false, true] {
                // Prefixes of every length mod 3 in bytes, for both unit sizes.
                for pad in 0..6 {
                    let before = format!("{{\"user\":\"u{}\",\"key\":\"", "x".repeat(pad));
                    let text = format!("{before}{value}\"}}");
                    let wide = charset(&text, big_endian);
                    let start = charset(&before, big_endian).len();
                    let span = start..start + charset(value, big_endian).len();
                    for engine in [STANDARD, URL_SAFE] {
                        let encoded = engine.encode(&wide);
                        assert_cut(
                            &s,
                            encoded.as_bytes(),
                            base64_inside(span.clone()),
                            &format!("base64 of {name} be={big_endian} pad={pad}"),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn hex_of_utf16_is_cut() {
    let s = scrubber(&[ASCII, WIDE]);
    for value in [ASCII, WIDE] {
        for big_endian in [false, true] {
            let before = utf16("token: ", big_endian);
            let mut wide = before.clone();
            wide.extend(utf16(value, big_endian));
            wide.extend(utf16("\n", big_endian));
            let span = 2 * before.len()..2 * (before.len() + utf16(value, big_endian).len());
            for upper in [false, true] {
                let encoded: String = wide
                    .iter()
                    .map(|b| {
                        if upper {
                            format!("{b:02X}")
                        } else {
                            format!("{b:02x}")
                        }
                    })
                    .collect();
                assert_cut(
                    &s,
                    encoded.as_bytes(),
                    span.clone(),
                    &format!("hex of utf-16 be={big_endian} upper={upper}"),
                );
            }
        }
    }
}

/// `text` percent-encoded: everything but letters, digits and `-_.~` (and `/` if
/// `keep_slash`), as `%XX`.
fn quote(text: &str, keep_slash: bool, upper: bool) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
                char::from(b).to_string()
            } else if upper {
                format!("%{b:02X}")
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

#[test]
fn percent_encoded_base64_is_cut_at_every_byte_offset() {
    let s = scrubber(&[SIGNS]);
    for pad in 0..3 {
        let before = format!("user:{}", "x".repeat(pad));
        let text = format!("{before}{SIGNS}");
        let b64 = STANDARD.encode(&text);
        let inside = base64_inside(before.len()..text.len());
        assert!(
            b64[inside.clone()].contains(['+', '/']),
            "pad={pad}: no sign to encode"
        );
        for keep_slash in [false, true] {
            for upper in [false, true] {
                let encoded = format!("page={}&x=1", quote(&b64, keep_slash, upper));
                let start = "page=".len() + quote(&b64[..inside.start], keep_slash, upper).len();
                let end = "page=".len() + quote(&b64[..inside.end], keep_slash, upper).len();
                assert_cut(
                    &s,
                    encoded.as_bytes(),
                    start..end,
                    &format!("percent of base64 pad={pad} slash={keep_slash} upper={upper}"),
                );
            }
        }
    }
}

#[test]
fn json_with_every_character_escaped_is_cut() {
    let s = scrubber(&[ASCII, WIDE]);
    for value in [ASCII, WIDE] {
        for upper in [false, true] {
            let escaped: String = value
                .encode_utf16()
                .map(|u| {
                    if upper {
                        format!("\\u{u:04X}")
                    } else {
                        format!("\\u{u:04x}")
                    }
                })
                .collect();
            let doc = format!("{{\"msg\":\"{escaped}\"}}");
            let start = "{\"msg\":\"".len();
            assert_cut(
                &s,
                doc.as_bytes(),
                start..start + escaped.len(),
                &format!("json every char upper={upper}"),
            );
        }
    }
    // `json.dumps(value)` (ensure_ascii), as Python 3 wrote it.
    let dumped = r#"{"msg": "p\u00e4$$w\u00f6rd-Zq8k\u20ac-\ud834\udd1elive"}"#;
    let start = dumped.find("p\\u").expect("value");
    assert_cut(&s, dumped.as_bytes(), start..dumped.len() - 2, "json.dumps");
}

#[test]
fn html_numeric_references_are_cut() {
    let s = scrubber(&[ASCII, WIDE]);
    for value in [ASCII, WIDE] {
        for style in ["x", "X", "dec"] {
            let refs: String = value
                .chars()
                .map(|c| match style {
                    "x" => format!("&#x{:x};", u32::from(c)),
                    "X" => format!("&#x{:X};", u32::from(c)),
                    _ => format!("&#{};", u32::from(c)),
                })
                .collect();
            let page = format!("<td>{refs}</td>");
            assert_cut(
                &s,
                page.as_bytes(),
                4..4 + refs.len(),
                &format!("html {style}"),
            );
        }
    }
    // `value.encode("ascii", "xmlcharrefreplace")`, as Python 3 wrote it.
    let page = "<p>p&#228;$$w&#246;rd-Zq8k&#8364;-&#119070;live</p>";
    assert_cut(&s, page.as_bytes(), 3..page.len() - 4, "xmlcharrefreplace");
}

#[test]
fn stacked_encodings_of_other_text_are_left_alone() {
    let s = scrubber(&[ASCII, WIDE, SIGNS]);
    // The values with one character in the middle changed, in every encoding above.
    for near in ["Zq8kLm2vX9pQ-livf-7a6b5c4d", "pä$$wörd-Zq8l€-𝄞live"] {
        let mut texts = vec![utf32(near, false), utf32(near, true)];
        for wide in [utf16(near, false), utf32(near, true)] {
            texts.push(STANDARD.encode(&wide).into_bytes());
            texts.push(
                wide.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
                    .into(),
            );
        }
        texts.push(quote(&STANDARD.encode(near), false, true).into_bytes());
        texts.push(
            near.encode_utf16()
                .map(|u| format!("\\u{u:04x}"))
                .collect::<String>()
                .into_bytes(),
        );
        texts.push(
            near.chars()
                .map(|c| format!("&#{};", u32::from(c)))
                .collect::<String>()
                .into_bytes(),
        );
        for t in texts {
            let out = s.scrub(&t);
            assert!(out.redactions.is_empty(), "{:?}", out.redactions);
            assert!(out.bytes == t);
        }
    }
}

#[test]
fn no_form_is_longer_than_six_bytes_per_value_byte() {
    // The stream's hold-back and `MAX_SECRET_LEN` rest on this bound.
    for value in [
        ASCII,
        WIDE,
        SIGNS,
        "~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~",
    ] {
        let forms = super::live::forms(value.as_bytes());
        let longest = forms.iter().map(Secret::len).max().expect("forms");
        assert!(
            longest <= 6 * value.len(),
            "{longest} for {} bytes",
            value.len()
        );
    }
    let forty = super::live::forms(&[b'~'; 40]);
    assert_eq!(forty.iter().map(Secret::len).max(), Some(240));
}

#[test]
fn the_longest_value_registers_and_is_found_in_utf32() {
    let value: String = (0..MAX_SECRET_LEN)
        .map(|i| char::from(b"Zq8kLm2vX9pQ7a6b"[(i * 7 + i / 16) % 16]))
        .collect();
    let s = scrubber(&[&value]);
    let mut encoded = b"x".to_vec();
    encoded.extend(utf32(&value, true));
    // A whole-buffer scrub only: streams in 1-byte chunks of 16 KiB forms are slow in a
    // debug build, and chunking is the same engine.
    let out = s.scrub(&encoded);
    assert_eq!(out.redactions.len(), 1);
    assert_eq!(
        (out.redactions[0].offset, out.redactions[0].len),
        (1, encoded.len() - 1)
    );
    assert!(out.bytes == b"x[REDACTED:live_secret]");
}
