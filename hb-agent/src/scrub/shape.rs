//! Tokens shaped like a value: for a key the provider may hold and list that no
//! scrubber knows yet (a rotator's create whose answer the agent never got), found by
//! the shape of the value it replaces.
//!
//! A value a built-in family recognises (`sk_live_…`, `ghp_…`) has that family's shape:
//! the family's rule finds its kin. Any other value gets a derived shape: the same
//! literal prefix up to its last separator (`_`, `-`, `.`; none if it has none), the
//! same length (±[`LEN_SLACK`]), no character class the value's body lacks (lower,
//! upper, digit, its separators), and entropy of at least the families' floor
//! ([`ENTROPY_FLOOR`]).
//!
//! Owns: deriving a shape from a value, and the pass that redacts tokens of a shape.
//! Must never: keep or report a value (a shape holds its prefix, length and classes
//! only), or redact a token of another shape.

use std::{collections::HashSet, ops::Range};

use super::{Redaction, Scrubbed, Scrubber, Sees, families};

/// How far a token's length may be from the value's.
pub const LEN_SLACK: usize = 2;

/// The entropy (bits per byte) the generic families ask of a random value.
pub const ENTROPY_FLOOR: f64 = 3.0;

const LOWER: u8 = 1;
const UPPER: u8 = 2;
const DIGIT: u8 = 4;
const DASH: u8 = 8;
const UNDERSCORE: u8 = 16;
const DOT: u8 = 32;

fn class(b: u8) -> u8 {
    match b {
        b'a'..=b'z' => LOWER,
        b'A'..=b'Z' => UPPER,
        b'0'..=b'9' => DIGIT,
        b'-' => DASH,
        b'_' => UNDERSCORE,
        b'.' => DOT,
        _ => 0,
    }
}

fn classes(s: &[u8]) -> u8 {
    s.iter().fold(0, |c, &b| c | class(b))
}

/// The shape of a value (its `Debug` says the prefix's length, not the prefix).
#[derive(Clone, PartialEq)]
pub enum Shape {
    /// A built-in family recognises the value whole.
    Family(&'static str),
    /// Derived from the value itself.
    Derived {
        /// Up to and including the last separator (empty: none).
        prefix: Vec<u8>,
        len: usize,
        /// Classes of the value after its prefix.
        classes: u8,
    },
}

impl std::fmt::Debug for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shape::Family(name) => write!(f, "Family({name})"),
            Shape::Derived {
                prefix,
                len,
                classes,
            } => write!(
                f,
                "Derived {{ prefix: {} bytes, len: {len}, classes: {classes:#b} }}",
                prefix.len()
            ),
        }
    }
}

impl Shape {
    /// The shape of `value`: its family's if a built-in one recognises it whole, else
    /// derived (`None` for a value too short or too plain to have one that would not
    /// redact ordinary text).
    pub fn of(scrubber: &Scrubber, value: &[u8]) -> Option<Self> {
        let none = HashSet::new();
        let found = scrubber.scrub_seeing(value, Sees::Only(&none));
        if let Some(r) = found
            .redactions
            .iter()
            .find(|r| r.offset == 0 && r.len == value.len())
        {
            return Some(Shape::Family(r.family));
        }
        let cut = value
            .iter()
            .rposition(|&b| matches!(b, b'_' | b'-' | b'.'))
            .map_or(0, |i| i + 1);
        let body = &value[cut..];
        if body.len() < 8 || classes(body) & (LOWER | UPPER | DIGIT) == 0 {
            return None;
        }
        Some(Shape::Derived {
            prefix: value[..cut].to_vec(),
            len: value.len(),
            classes: classes(body),
        })
    }

    /// Where `input` holds tokens of this shape.
    fn spans(&self, scrubber: &Scrubber, input: &[u8]) -> Vec<Range<usize>> {
        match self {
            Shape::Family(name) => {
                let none = HashSet::new();
                scrubber
                    .scrub_seeing(input, Sees::Only(&none))
                    .redactions
                    .into_iter()
                    .filter(|r| r.family == *name)
                    .map(|r| r.offset..r.offset + r.len)
                    .collect()
            }
            Shape::Derived {
                prefix,
                len,
                classes: allowed,
            } => derived_spans(input, prefix, *len, *allowed),
        }
    }
}

/// Tokens of a derived shape: at a word start, `prefix`, then a maximal run of bytes of
/// the `allowed` classes; `len` ± [`LEN_SLACK`] long in all, entropy of the run at least
/// [`ENTROPY_FLOOR`].
fn derived_spans(input: &[u8], prefix: &[u8], len: usize, allowed: u8) -> Vec<Range<usize>> {
    let in_body = |b: u8| class(b) != 0 && class(b) & !allowed == 0;
    let mut out = Vec::new();
    let mut at = 0;
    while at < input.len() {
        let start = if prefix.is_empty() {
            match input[at..].iter().position(|&b| in_body(b)) {
                Some(p) => at + p,
                None => break,
            }
        } else {
            match memchr::memmem::find(&input[at..], prefix) {
                Some(p) => at + p,
                None => break,
            }
        };
        let body_start = start + prefix.len();
        let body_len = input[body_start..]
            .iter()
            .take_while(|&&b| in_body(b))
            .count();
        let end = body_start + body_len;
        let total = end - start;
        // A token starts a word; with no prefix the run is the token whole.
        let word = families::left_boundary(input, start)
            && (prefix.is_empty()
                || !input
                    .get(start.wrapping_sub(1))
                    .is_some_and(|&b| in_body(b)))
            && !input.get(end).is_some_and(u8::is_ascii_alphanumeric);
        if word
            && total.abs_diff(len) <= LEN_SLACK
            && families::entropy(&input[body_start..end]) >= ENTROPY_FLOOR
        {
            out.push(start..end);
            at = end;
        } else {
            at = if prefix.is_empty() {
                end.max(start + 1)
            } else {
                start + 1
            };
        }
    }
    out
}

/// The pending-key pass: `input` (already scrubbed) with every token of one of `shapes`
/// replaced by `[REDACTED:<label>]`. Spans of two shapes that overlap are merged.
pub fn redact_shaped(
    scrubber: &Scrubber,
    shapes: &[&Shape],
    label: &'static str,
    input: &[u8],
) -> Scrubbed {
    let mut spans: Vec<Range<usize>> = shapes
        .iter()
        .flat_map(|s| s.spans(scrubber, input))
        .collect();
    spans.sort_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
    let mut bytes = Vec::with_capacity(input.len());
    let mut redactions = Vec::new();
    let mut at = 0;
    for span in spans {
        if span.start < at {
            continue;
        }
        bytes.extend_from_slice(&input[at..span.start]);
        redactions.push(Redaction {
            family: label,
            offset: span.start,
            len: span.len(),
            output_offset: bytes.len(),
        });
        bytes.extend_from_slice(format!("[REDACTED:{label}]").as_bytes());
        at = span.end;
    }
    bytes.extend_from_slice(&input[at..]);
    Scrubbed { bytes, redactions }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(value: &str, input: &str) -> String {
        let scrubber = Scrubber::new();
        let shape = Shape::of(&scrubber, value.as_bytes()).expect("a shape");
        let out = redact_shaped(&scrubber, &[&shape], "pending_credential", input.as_bytes());
        String::from_utf8(out.bytes).expect("utf-8")
    }

    #[test]
    fn a_value_a_family_recognises_has_its_family_shape() {
        let scrubber = Scrubber::new();
        let value = format!("ghp_{}", "aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xY2zA4");
        let shape = Shape::of(&scrubber, value.as_bytes()).expect("a shape");
        assert_eq!(shape, Shape::Family("github_pat"));
        let other = format!("ghp_{}", "Zq9Xw8Ve7Ut6Sr5Qp4On3Ml2Kj1Ih0Gf9Ed8");
        let input = format!("{{\"keys\": [\"{other}\"], \"id\": \"key-abc\"}}");
        let out = redact_shaped(&scrubber, &[&shape], "pending_credential", input.as_bytes());
        let text = String::from_utf8(out.bytes).expect("utf-8");
        assert!(!text.contains(&other), "{text}");
        assert!(text.contains("\"key-abc\""), "{text}");
        assert_eq!(out.redactions.len(), 1);
        assert_eq!(out.redactions[0].family, "pending_credential");
    }

    #[test]
    fn a_derived_shape_keeps_the_prefix_up_to_the_last_separator() {
        let value = "key-http-7a1c0e93d5b24f6e8c0a9d17b3e5f248";
        let shape = Shape::of(&Scrubber::new(), value.as_bytes()).expect("a shape");
        assert_eq!(
            shape,
            Shape::Derived {
                prefix: b"key-http-".to_vec(),
                len: value.len(),
                classes: LOWER | DIGIT,
            }
        );
        let next = "key-http-9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b";
        let out = pass(value, &format!("[\"{next}\", \"[REDACTED:x]\"]"));
        assert_eq!(out, "[\"[REDACTED:pending_credential]\", \"[REDACTED:x]\"]");
    }

    #[test]
    fn a_token_of_another_shape_in_the_same_answer_is_untouched() {
        let value = "key-http-7a1c0e93d5b24f6e8c0a9d17b3e5f248";
        let next = "key-http-9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b";
        // Another prefix, another length, another class (upper case), too plain.
        let others = [
            "adm-3e2d1c0b4a5968778695a4b3c2d1e0f9",
            "key-http-9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b0a1b2c3d",
            "key-http-9E8D7C6B5A4F3E2D1C0B9A8F7E6D5C4B",
            "key-http-00000000000000000000000000000000",
            "xkey-http-9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4",
        ];
        for other in others {
            let input = format!("{{\"keys\": [\"{next}\", \"{other}\"]}}");
            let out = pass(value, &input);
            assert_eq!(
                out,
                format!("{{\"keys\": [\"[REDACTED:pending_credential]\", \"{other}\"]}}"),
                "{other}"
            );
        }
    }

    #[test]
    fn a_derived_shape_allows_two_bytes_of_length_either_way() {
        let value = "key-http-7a1c0e93d5b24f6e8c0a9d17b3e5f248";
        for next in [
            "key-http-9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c",
            "key-http-9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a",
        ] {
            assert_eq!(pass(value, next), "[REDACTED:pending_credential]", "{next}");
        }
        assert_eq!(
            pass(value, "key-http-9e8d7c6b5a4f3e2d1c0b9a8f7e6d"),
            "key-http-9e8d7c6b5a4f3e2d1c0b9a8f7e6d"
        );
    }

    #[test]
    fn a_value_without_a_separator_is_matched_by_its_length_and_classes() {
        let value = "Qx7vN2mK9pL4wR8tY3zB6cD1fG5hJ0aS";
        let shape = Shape::of(&Scrubber::new(), value.as_bytes()).expect("a shape");
        assert!(matches!(&shape, Shape::Derived { prefix, .. } if prefix.is_empty()));
        let next = "Wm3Kp8Zr1Tq6Yv9Xn2Bc5Df7Gh4Jk0Ls";
        let out = pass(value, &format!("token={next} id=order-123"));
        assert_eq!(out, "token=[REDACTED:pending_credential] id=order-123");
        // A word of one class, and a run of the right length but low entropy, stay.
        let plain = "aaaaaaaabbbbbbbbaaaaaaaabbbbbbbb";
        assert_eq!(pass(value, plain), plain);
    }

    #[test]
    fn a_value_too_plain_or_short_has_no_shape() {
        let scrubber = Scrubber::new();
        assert_eq!(Shape::of(&scrubber, b"key-old-short"), None);
        assert_eq!(Shape::of(&scrubber, b"key-________"), None);
    }
}
