//! Attacks on the live scan with forms a caller decodes at once but no listed encoder
//! writes: the value upper- or lower-cased whole (and those in hex and base64), every
//! byte escaped (`\xNN`, octal `\NNN`, Python's `repr`, `xxd -i`), base32 in either
//! alphabet at each byte offset, reversed, ROT13. Each is planted inside a longer text,
//! encoded here, and the test asserts that a live redaction covers every byte that
//! depends on the value alone, whole-buffer and streamed in 1- and 7-byte chunks
//! (`stacked_tests`'s check).
//! (Invisible separators and short hard wraps are read by the spread view: `spread`'s
//! tests.)

use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::stacked_tests::{assert_cut, scrubber};

/// Synthetic values: mixed-case ASCII with a symbol, a hex key (whole in either case),
/// and non-ASCII text.
const MIXED: &str = "Zq8kLm2vX9pQ-live-7a6b5c4d";
const HEX_KEY: &str = "7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d";
const WIDE: &str = "pä$$wörd-Zq8k€-live";

/// `lead`, then `value` as `encode` writes it, then a tail: the text and where the
/// value's encoding sits in it.
fn planted(lead: &str, encoded: &str) -> (Vec<u8>, Range<usize>) {
    let text = format!("{lead}{encoded}\" (rejected)\n");
    (text.into_bytes(), lead.len()..lead.len() + encoded.len())
}

#[test]
fn a_value_with_its_case_changed_is_cut_raw_in_hex_and_in_base64() {
    let s = scrubber(&[MIXED, HEX_KEY]);
    for value in [MIXED, HEX_KEY] {
        for cased in [value.to_ascii_uppercase(), value.to_ascii_lowercase()] {
            if cased == value {
                continue;
            }
            let (text, must) = planted("error: unknown key \"", &cased);
            assert_cut(&s, &text, must, &format!("{cased:.4}… raw"));
            let lower_hex: String = cased.bytes().map(|b| format!("{b:02x}")).collect();
            let upper_hex = lower_hex.to_ascii_uppercase();
            for hex in [lower_hex, upper_hex] {
                let (text, must) = planted("key_hex=\"", &hex);
                assert_cut(&s, &text, must, "recased hex");
            }
            // In base64 inside a longer text, at each byte offset.
            for lead in ["", "a", "ab"] {
                let encoded = STANDARD.encode(format!("{lead}{cased}\n"));
                let must = (8 * lead.len()).div_ceil(6)..8 * (lead.len() + cased.len()) / 6;
                assert_cut(&s, encoded.as_bytes(), must, "recased base64");
            }
        }
    }
}

#[test]
fn a_value_escaped_byte_by_byte_is_cut() {
    let s = scrubber(&[MIXED, WIDE]);
    for value in [MIXED, WIDE] {
        let bytes = value.as_bytes();
        let each = |f: &dyn Fn(u8) -> String| bytes.iter().map(|&b| f(b)).collect::<String>();
        let python_repr: String = each(&|b| match b {
            b'\\' | b'\'' => format!("\\{}", char::from(b)),
            b' '..=b'~' => char::from(b).to_string(),
            _ => format!("\\x{b:02x}"),
        });
        let xxd: Vec<String> = bytes.iter().map(|b| format!("0x{b:02x}")).collect();
        for (what, escaped) in [
            ("\\x", each(&|b| format!("\\x{b:02x}"))),
            ("\\X", each(&|b| format!("\\x{b:02X}"))),
            ("octal", each(&|b| format!("\\{b:03o}"))),
            ("repr", python_repr),
            ("xxd -i", xxd.join(", ")),
            ("0x,", xxd.join(",")),
        ] {
            if escaped == value {
                continue;
            }
            let (text, must) = planted("token = b'", &escaped);
            assert_cut(&s, &text, must, what);
        }
    }
}

#[test]
fn base32_of_a_value_is_cut_at_any_offset_in_either_alphabet() {
    let s = scrubber(&[MIXED, WIDE]);
    for value in [MIXED, WIDE] {
        for lead in 0..5 {
            for tail in [0, 3] {
                let mut bytes = b"xyzw"[..lead].to_vec();
                bytes.extend_from_slice(value.as_bytes());
                bytes.extend_from_slice(&b"!!!"[..tail]);
                for encoding in [
                    &data_encoding::BASE32,
                    &data_encoding::BASE32_NOPAD,
                    &data_encoding::BASE32HEX,
                ] {
                    let encoded = encoding.encode(&bytes);
                    let must = (8 * lead).div_ceil(5)..8 * (lead + value.len()) / 5;
                    let (text, planted_at) = planted("b32: ", &encoded);
                    let must = must.start + planted_at.start..must.end + planted_at.start;
                    assert_cut(&s, &text, must, &format!("base32 lead={lead} tail={tail}"));
                }
            }
        }
    }
}

#[test]
fn a_value_reversed_or_in_rot13_is_cut() {
    let s = scrubber(&[MIXED, WIDE]);
    for value in [MIXED, WIDE] {
        let reversed: String = value.chars().rev().collect();
        let rot13: String = value
            .chars()
            .map(|c| match c {
                'a'..='m' | 'A'..='M' => char::from(c as u8 + 13),
                'n'..='z' | 'N'..='Z' => char::from(c as u8 - 13),
                c => c,
            })
            .collect();
        for (what, form) in [("reversed", reversed), ("rot13", rot13)] {
            let (text, must) = planted("echo: \"", &form);
            assert_cut(&s, &text, must, what);
        }
    }
}

/// None of these forms is made of ordinary text: a scrubber holding the values leaves
/// text without them as it is.
#[test]
fn text_without_the_values_is_left_alone() {
    let s = scrubber(&[MIXED, HEX_KEY, WIDE]);
    let text = "GET /v1/items?limit=10 HTTP/1.1\r\nb'\\x00\\x01' 0x7a, 0x6b\n\
                MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43UOV3HO6DZPI======\nZQ8KLM2V\n";
    let out = s.scrub(text.as_bytes());
    assert!(out.redactions.is_empty(), "{:?}", out.redactions);
}
