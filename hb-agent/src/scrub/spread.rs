//! Text spread out with NUL bytes: a value's ASCII characters with NUL bytes between
//! them, as UTF-16 and UTF-32 (either byte order, any alignment, with a byte-order mark
//! or without) write ASCII, and as a JSON writer escapes such text (`\u0000`).
//!
//! The live forms hold UTF-16 of a value; UTF-32 and any other spacing match no form,
//! and UTF-32 of ASCII is valid UTF-8, so it passes as text. A [`Squeezed`] view of a
//! buffer drops every NUL byte and `\u0000` escape: a value spread out in any of these
//! ways is whole in it, and a span found there maps back to the bytes of the buffer
//! that spell it, so [`cut_spread`] can redact them there.
//!
//! Owns: the NUL-free view of one buffer and the way back to the buffer's bytes.
//! Must never: be built for a buffer with no NUL byte and no `\u0000` (the hot path
//! pays one `memchr` and one `memmem` for it), or outlive the scrub that made it (it
//! holds what the buffer holds).

use std::ops::Range;

/// The JSON escape of a NUL character, as `json.dumps` and serde write it.
const JSON_NUL: &[u8] = br"\u0000";

/// A buffer without its NUL bytes and `\u0000` escapes, and where each byte left
/// came from.
pub struct Squeezed {
    bytes: Vec<u8>,
    /// The buffer offset of each byte of `bytes` (`u32`: the broker's answers are at
    /// most 1 GiB; a larger buffer gets no view).
    at: Vec<u32>,
}

impl Squeezed {
    /// The view of `input`; `None` when it holds no NUL byte and no `\u0000` (nothing
    /// is spread out there) or is over 4 GiB.
    pub fn of(input: &[u8]) -> Option<Self> {
        if memchr::memchr(0, input).is_none() && memchr::memmem::find(input, JSON_NUL).is_none() {
            return None;
        }
        u32::try_from(input.len()).ok()?;
        let mut bytes = Vec::with_capacity(input.len());
        let mut at = Vec::with_capacity(input.len());
        let mut i = 0;
        while i < input.len() {
            if input[i] == 0 {
                i += 1;
            } else if input[i..].starts_with(JSON_NUL) {
                i += JSON_NUL.len();
            } else {
                bytes.push(input[i]);
                at.push(i as u32);
                i += 1;
            }
        }
        Some(Self { bytes, at })
    }

    /// The view's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The buffer's bytes that `len` (at least 1) bytes of the view from `start` come
    /// from: from the first one's place to just past the last one's (the NULs between
    /// them included).
    fn input_span(&self, start: usize, len: usize) -> Range<usize> {
        let first = self.at[start] as usize;
        let last = self.at[start + len.max(1) - 1] as usize;
        first..last + 1
    }
}

/// `input` with what `find` finds in its [`Squeezed`] view (spans of the view, each
/// with the label of its marker) redacted where the view's bytes came from; `None` when
/// `input` has no view (no NUL byte, no `\u0000`) or `find` finds nothing there.
pub fn cut_spread(
    input: &[u8],
    find: impl FnOnce(&[u8]) -> Vec<(Range<usize>, &'static str)>,
) -> Option<Vec<u8>> {
    let squeezed = Squeezed::of(input)?;
    let spans: Vec<(Range<usize>, &'static str)> = find(squeezed.bytes())
        .into_iter()
        .filter(|(r, _)| !r.is_empty())
        .map(|(r, label)| (squeezed.input_span(r.start, r.len()), label))
        .collect();
    (!spans.is_empty()).then(|| cut(input, spans))
}

/// `input` with each span replaced by `[REDACTED:<label>]`; overlapping and touching
/// spans are one (the first one's label).
fn cut(input: &[u8], mut spans: Vec<(Range<usize>, &'static str)>) -> Vec<u8> {
    spans.sort_by_key(|(r, _)| r.start);
    let mut merged: Vec<(Range<usize>, &'static str)> = Vec::with_capacity(spans.len());
    for (r, label) in spans {
        match merged.last_mut() {
            Some((last, _)) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push((r, label)),
        }
    }
    let mut out = Vec::with_capacity(input.len());
    let mut at = 0;
    for (r, label) in merged {
        out.extend_from_slice(&input[at..r.start]);
        out.extend_from_slice(b"[REDACTED:");
        out.extend_from_slice(label.as_bytes());
        out.push(b']');
        at = r.end;
    }
    out.extend_from_slice(&input[at..]);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::{Scrubber, Sees};
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn no_nul_no_view() {
        assert!(Squeezed::of(b"plain text, even with \\u00e9 escapes").is_none());
        assert!(Squeezed::of(b"").is_none());
    }

    #[test]
    fn the_view_maps_back_to_the_spread_bytes() {
        // "ab" in UTF-32BE after a 1-byte prefix (misaligned), then JSON-escaped NULs.
        let input = b"x\0\0\0a\0\0\0b!c\\u0000d";
        let sq = Squeezed::of(input).expect("spread");
        assert_eq!(sq.bytes(), b"xab!cd");
        assert_eq!(&input[sq.input_span(1, 2)], b"a\0\0\0b");
        assert_eq!(&input[sq.input_span(4, 2)], b"c\\u0000d");
    }

    const VALUE: &str = "Zq8kLm2vX9pQ-live-7a6b5c4d";

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

    /// `bytes` with the NULs dropped, as the attacker reads an answer.
    fn squeezed(bytes: &[u8]) -> String {
        String::from_utf8_lossy(
            &bytes
                .iter()
                .copied()
                .filter(|&b| b != 0)
                .collect::<Vec<_>>(),
        )
        .replace(r"\u0000", "")
    }

    /// What the broker does with an answer: the spread-out values the scrub sees cut.
    fn cut_live(scrubber: &Scrubber, sees: Sees<'_>, body: &[u8]) -> Option<Vec<u8>> {
        cut_spread(body, |view| {
            scrubber
                .scrub_seeing(view, sees)
                .redactions
                .iter()
                .map(|r| (r.offset..r.offset + r.len, r.family))
                .collect()
        })
    }

    #[test]
    fn a_live_value_in_utf32_at_any_alignment_is_cut() {
        let scrubber = Scrubber::new();
        let id = scrubber
            .register("live_secret", &Secret::new(VALUE.as_bytes().to_vec()))
            .expect("registered");
        let text = format!("you sent: Bearer {VALUE}\n");
        for big_endian in [false, true] {
            for bom in [false, true] {
                // 0 to 3 bytes before it: UTF-32 inside a longer answer need not be aligned.
                for prefix in 0..=3 {
                    let mut body = b"ok:"[..prefix].to_vec();
                    if bom {
                        body.extend_from_slice(if big_endian {
                            &[0, 0, 0xFE, 0xFF]
                        } else {
                            &[0xFF, 0xFE, 0, 0]
                        });
                    }
                    body.extend(utf32(&text, big_endian));
                    let what = format!("be={big_endian} bom={bom} prefix={prefix}");
                    assert!(squeezed(&body).contains(VALUE), "{what}: planted");
                    assert_eq!(
                        scrubber.matching(&body, Sees::All),
                        HashSet::from([id]),
                        "{what}: found by the search"
                    );
                    assert!(
                        scrubber
                            .visible_values(&HashSet::from([id]))
                            .contains(&body),
                        "{what}: seen by the reflection check"
                    );
                    let out = cut_live(&scrubber, Sees::All, &body).expect("cut");
                    let read = squeezed(&out);
                    assert!(!read.contains(VALUE), "{what}: {read:?}");
                    assert!(read.contains("[REDACTED:live_secret]"), "{what}: {read:?}");
                    assert!(read.contains("you sent: Bearer"), "{what}: {read:?}");
                    // No run of it is left either.
                    assert!(!read.contains(&VALUE[..8]) && !read.contains(&VALUE[18..]));
                }
            }
        }
    }

    #[test]
    fn mixed_text_is_cut_where_the_value_is_spread_and_left_alone_elsewhere() {
        let scrubber = Scrubber::new();
        let value = Secret::new(VALUE.as_bytes().to_vec());
        let id = scrubber
            .register("live_secret", &value)
            .expect("registered");
        // UTF-8 text, the value in UTF-32BE, more UTF-8 with a stray NUL, the value
        // spelled with JSON NUL escapes (UTF-32 text put in a JSON string), and UTF-16 at
        // an odd offset.
        let mut body = "résumé: ".as_bytes().to_vec();
        body.extend(utf32(VALUE, true));
        body.extend_from_slice(" and ünïcode\0 stays ".as_bytes());
        for c in VALUE.chars() {
            body.push(c as u8);
            body.extend_from_slice(br"\u0000\u0000\u0000");
        }
        body.push(b'!');
        body.extend(VALUE.encode_utf16().flat_map(u16::to_le_bytes));
        let out = cut_live(&scrubber, Sees::All, &body).expect("cut");
        let read = squeezed(&out);
        assert!(!read.contains(VALUE), "{read:?}");
        assert_eq!(
            read.matches("[REDACTED:live_secret]").count(),
            3,
            "{read:?}"
        );
        assert!(read.starts_with("résumé: [REDACTED"), "{read:?}");
        assert!(read.contains(" and ünïcode stays "), "{read:?}");
        // A view that does not see the value cuts nothing (the broker's answer to a
        // sandbox that sent it).
        assert!(cut_live(&scrubber, Sees::AllBut(&HashSet::from([id])), &body).is_none());
        assert!(cut_live(&scrubber, Sees::Only(&HashSet::new()), &body).is_none());
        // Text with no NUL and no escape is not looked at.
        assert!(cut_live(&scrubber, Sees::All, VALUE.as_bytes()).is_none());
    }

    #[test]
    fn cut_merges_overlaps() {
        let out = cut(
            b"0123456789",
            vec![(5..7, "b"), (1..3, "a"), (2..4, "c"), (6..9, "d")],
        );
        assert_eq!(out, b"0[REDACTED:a]4[REDACTED:b]9");
    }
}
