//! Steps 1 and 2: NFKC normalisation and removal of invisible and control characters,
//! with the hidden text of tag-character and variation-selector runs decoded.
//!
//! Removal happens after normalisation (NFKC never produces these characters). Removing
//! a character can leave text that is no longer in NFKC (`e`, U+200B, U+0301), so such
//! text is normalised once more; that keeps the result a fixed point.

use std::{borrow::Cow, fmt::Write as _};

use unicode_normalization::{
    IsNormalized, UnicodeNormalization as _, char::canonical_combining_class, is_nfkc_quick,
};

use super::{Category, Encoding, Finding, Severity, excerpt, skip};

/// What gets removed, by class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Control,
    ZeroWidth,
    Bidi,
    Tag,
    VariationSelector,
}

fn class(c: char) -> Option<Class> {
    Some(match c {
        '\t' | '\n' | '\r' => return None,
        '\0'..='\u{1f}' | '\u{7f}'..='\u{9f}' => Class::Control,
        // Zero-width and other invisible format characters, fillers that render as
        // nothing (Hangul fillers, Khmer inherent vowels, Mongolian vowel separator),
        // invisible operators, interlinear annotation, musical formatting.
        '\u{ad}' | '\u{34f}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
        | '\u{180b}'..='\u{180f}'
        | '\u{200b}'..='\u{200d}'
        | '\u{2060}'..='\u{2065}'
        | '\u{3164}' | '\u{feff}' | '\u{ffa0}'
        | '\u{fff9}'..='\u{fffb}'
        | '\u{1bca0}'..='\u{1bca3}'
        | '\u{1d173}'..='\u{1d17a}'
        // Bidi marks: right-to-left text uses them honestly, so they count as plain
        // invisible characters.
        | '\u{61c}' | '\u{200e}' | '\u{200f}' => Class::ZeroWidth,
        // Bidi embeddings, overrides and isolates (they reorder what is displayed) and
        // the deprecated format controls.
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{206f}' => Class::Bidi,
        '\u{e0000}'..='\u{e007f}' => Class::Tag,
        '\u{fe00}'..='\u{fe0f}' | '\u{e0100}'..='\u{e01ef}' => Class::VariationSelector,
        _ => return None,
    })
}

/// Whether `c` is removed by this step in the context it appears in (a variation selector
/// may stay: see [`clean`]). For tests.
#[cfg(test)]
pub(super) fn always_removed(c: char) -> bool {
    matches!(
        class(c),
        Some(Class::Control | Class::ZeroWidth | Class::Bidi | Class::Tag)
    )
}

#[cfg(test)]
pub(super) fn is_variation_selector(c: char) -> bool {
    class(c) == Some(Class::VariationSelector)
}

/// One run of removed characters.
#[derive(Debug)]
pub(super) struct Removal {
    /// Byte offset in the cleaned text where the run was.
    at: usize,
    /// Characters removed per class, in [`Class`] order, and up to four distinct ones.
    counts: [usize; 5],
    sample: Vec<char>,
    /// ASCII carried by tag characters.
    tags: String,
    /// Whether the tags spell an emoji subdivision flag (🏴 + tags + cancel tag).
    flag_emoji: bool,
    /// Bytes carried by the variation selectors.
    selectors: Vec<u8>,
}

#[derive(Debug)]
pub(super) struct Cleaned {
    pub text: String,
    removals: Vec<Removal>,
}

/// NFKC, touching only non-ASCII runs (and the ASCII character before each, which a
/// combining mark may attach to). ASCII characters never compose with what precedes
/// them and never reorder, so the runs can be normalised independently.
pub(super) fn nfkc(s: &str) -> Cow<'_, str> {
    let mut segs = segments(s);
    // Most text is in NFKC already: nothing is copied unless a segment changes.
    let Some(first) = segs.find(|seg| !normalised(&s[seg.clone()])) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    out.push_str(&s[..first.start]);
    out.extend(s[first.clone()].nfkc());
    let mut last = first.end;
    for seg in segs {
        out.push_str(&s[last..seg.start]);
        let part = &s[seg.clone()];
        if normalised(part) {
            out.push_str(part);
        } else {
            out.extend(part.nfkc());
        }
        last = seg.end;
    }
    out.push_str(&s[last..]);
    Cow::Owned(out)
}

/// Whether a segment is in NFKC. [`stable`] characters pass the quick check and leave
/// it in its initial state (combining class 0), so only the stretches between them need
/// the Unicode tables.
fn normalised(seg: &str) -> bool {
    seg.split(stable)
        .all(|part| part.is_empty() || is_nfkc_quick(part.chars()) == IsNormalized::Yes)
}

/// The stretches [`nfkc`] looks at: each run of characters that NFKC may change,
/// reorder or join, with the character before it (a combining mark may compose with it).
/// A run ends at ASCII or at a character that [`nfkc_quiet`] vouches for: both are
/// starters that nothing composes onto, so the text on either side normalises alone.
fn segments(s: &str) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let b = s.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        let run = skip::next_stop(b, i, skip::non_ascii, |c| (c >= 0xc0) & !nfkc_quiet(c));
        if run == b.len() {
            return None;
        }
        let mut start = run;
        if start > i {
            start -= 1;
            while !s.is_char_boundary(start) {
                start -= 1;
            }
        }
        let end = b[run + 1..]
            .iter()
            .position(|&c| c < 0x80 || nfkc_quiet(c))
            .map_or(b.len(), |p| run + 1 + p);
        i = end;
        Some(start..end)
    })
}

/// Lead bytes of characters that NFKC leaves alone wherever they stand: combining class
/// 0, quick check "yes" (so no decomposition, and never the second half of a
/// composition). Latin-1 letters, most Cyrillic, CJK ideographs and Hangul syllables
/// among them; text in those scripts then skips normalisation at block speed. A test
/// checks every character against the Unicode tables. Branch-free for
/// [`skip::next_stop`].
fn nfkc_quiet(c: u8) -> bool {
    (c == 0xc3) | ((c & 0xfe) == 0xd0) | (c.wrapping_sub(0xe4) < 6) | (c.wrapping_sub(0xeb) < 3)
}

/// Bytes that may start a removable character: controls and the lead bytes of the
/// blocks [`class`] names (a test checks it against every character). Branch-free for
/// [`skip::next_stop`].
fn special(c: u8) -> bool {
    ((c < 0x20) & (c != b'\t') & (c != b'\n') & (c != b'\r'))
        | (c == 0x7f)
        | (c == 0xc2)
        | (c == 0xcd)
        | (c == 0xd8)
        | (c.wrapping_sub(0xe1) < 3)
        | (c == 0xef)
        | (c == 0xf0)
        | (c == 0xf3)
}

/// Characters of common scripts that NFKC leaves alone whatever surrounds them (no
/// decomposition, combining class 0, never the second half of a composition): a
/// shortcut past the normalisation tables for ordinary non-English text.
fn stable(c: char) -> bool {
    matches!(c,
        '\u{c0}'..='\u{d6}' | '\u{d8}'..='\u{f6}' | '\u{f8}'..='\u{ff}' // Latin-1 letters
        | '\u{391}'..='\u{3a1}' | '\u{3a3}'..='\u{3c9}' // Greek
        | '\u{400}'..='\u{482}' | '\u{48a}'..='\u{4ff}' // Cyrillic
        | '\u{5d0}'..='\u{5ea}' // Hebrew
        | '\u{621}'..='\u{63a}' | '\u{641}'..='\u{64a}' // Arabic
        | '\u{3041}'..='\u{3096}' | '\u{309d}' | '\u{309e}' | '\u{30a1}'..='\u{30fe}' // kana
        | '\u{4e00}'..='\u{9fff}' // CJK ideographs
        | '\u{ac00}'..='\u{d7a3}' // Hangul syllables (a trailing jamo is checked)
        | '\u{2018}'..='\u{201d}' | '\u{2013}' | '\u{2014}' | '\u{3001}' | '\u{3002}'
        | '\u{2600}'..='\u{27bf}' | '\u{1f300}'..='\u{1faff}' // symbols and emoji
    )
}

/// Normalises `input` and removes what [`class`] names. A variation selector is kept
/// when it is alone and follows a visible character (emoji presentation, CJK
/// variants); runs of them carry bytes and go.
pub(super) fn clean(input: &str) -> Cleaned {
    let normal = nfkc(input);
    let s: &str = &normal;
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut removals = Vec::new();
    let mut last = 0; // start of the text not yet copied to `out`
    let mut i = 0;
    while i < b.len() {
        if !special(b[i]) {
            i = skip::next_stop(b, i, skip::control_or_non_ascii, special);
            continue;
        }
        let Some(c) = s[i..].chars().next() else {
            break;
        };
        if class(c).is_none() {
            i += c.len_utf8();
            continue;
        }
        out.push_str(&s[last..i]);
        let prev = out.chars().next_back();
        let mut r = Removal {
            at: out.len(),
            counts: [0; 5],
            sample: Vec::new(),
            tags: String::new(),
            flag_emoji: false,
            selectors: Vec::new(),
        };
        let mut kept_selector = None;
        let mut ended_with_cancel = false;
        let mut j = i;
        for c in s[i..].chars() {
            let Some(k) = class(c) else { break };
            j += c.len_utf8();
            r.counts[k as usize] += 1;
            match k {
                Class::Tag => {
                    let v = u32::from(c) - 0xe0000;
                    if (0x20..0x7f).contains(&v) {
                        r.tags.push(char::from(v as u8));
                    }
                    ended_with_cancel = v == 0x7f;
                }
                Class::VariationSelector => {
                    let v = u32::from(c);
                    let byte = if v <= 0xfe0f {
                        v - 0xfe00
                    } else {
                        v - 0xe0100 + 16
                    };
                    r.selectors.push(byte as u8);
                    kept_selector = Some(c);
                }
                _ => {}
            }
            if r.sample.len() < 4 && !r.sample.contains(&c) {
                r.sample.push(c);
            }
        }
        let selectors = r.counts[Class::VariationSelector as usize];
        let keep_one =
            selectors == 1 && prev.is_some_and(|p| class(p).is_none() && !p.is_whitespace());
        if keep_one {
            if let Some(vs) = kept_selector {
                out.push(vs);
            }
            r.counts[Class::VariationSelector as usize] = 0;
            r.selectors.clear();
            r.sample
                .retain(|c| class(*c) != Some(Class::VariationSelector));
        }
        r.flag_emoji = prev == Some('\u{1f3f4}')
            && ended_with_cancel
            && (2..=7).contains(&r.tags.len())
            && r.tags
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if r.counts.iter().any(|&n| n > 0) {
            removals.push(r);
        }
        last = j;
        i = j;
    }
    out.push_str(&s[last..]);
    if removals.iter().any(|r| joins_badly(&out, r.at)) {
        renormalise(&mut out, &mut removals);
    }
    Cleaned {
        text: out,
        removals,
    }
}

/// Whether the text around a removal point may have left NFKC. The text on either side
/// was normalised, so only the join matters, and only when the character after it is
/// not a starter that never composes with what precedes it (ASCII, for one).
fn joins_badly(out: &str, at: usize) -> bool {
    let Some(next) = out[at..].chars().next() else {
        return false;
    };
    if next.is_ascii()
        || stable(next)
        || (canonical_combining_class(next) == 0
            && is_nfkc_quick(std::iter::once(next)) == IsNormalized::Yes)
    {
        return false;
    }
    let mut from = at.saturating_sub(1);
    while !out.is_char_boundary(from) {
        from -= 1;
    }
    let b = out.as_bytes();
    let mut to = b[at..]
        .iter()
        .position(u8::is_ascii)
        .map_or(b.len(), |k| at + k)
        .min(at + 64);
    while !out.is_char_boundary(to) {
        to += 1;
    }
    is_nfkc_quick(out[from..to].chars()) != IsNormalized::Yes
}

/// Normalises `out` again after removals joined what they separated, moving each
/// removal's offset to the same place in the new text (a place inside a character that
/// composed across it moves to that character's start).
fn renormalise(out: &mut String, removals: &mut [Removal]) {
    let mut new = String::with_capacity(out.len());
    let mut last = 0;
    let mut ats = Vec::with_capacity(removals.len());
    for r in removals.iter() {
        new.push_str(&nfkc(&out[last..r.at]));
        ats.push(new.len());
        last = r.at;
    }
    new.push_str(&nfkc(&out[last..]));
    let joined = nfkc(&new).into_owned();
    for (r, at) in removals.iter_mut().zip(ats) {
        let mut at = at.min(joined.len());
        while !joined.is_char_boundary(at) {
            at -= 1;
        }
        r.at = at;
    }
    *out = joined;
}

const CLASS_RULES: [(&str, Severity); 5] = [
    ("control_characters", Severity::Low),
    ("zero_width", Severity::Low),
    ("bidi_controls", Severity::Medium),
    ("tag_characters", Severity::High),
    ("variation_selectors", Severity::Low),
];

/// The findings of step 2: one per class per run, plus smuggling findings for hidden text
/// and whatever `detect` finds in that text (at the run's place).
pub(super) fn findings(cleaned: &Cleaned, detect: fn(&str) -> Vec<Finding>) -> Vec<Finding> {
    let mut out = Vec::new();
    for r in &cleaned.removals {
        let span = [r.at, r.at];
        for (k, &(rule, severity)) in CLASS_RULES.iter().enumerate() {
            let n = r.counts[k];
            if n == 0 || k == Class::Tag as usize || k == Class::VariationSelector as usize {
                continue;
            }
            out.push(Finding {
                category: Category::Invisible,
                severity,
                rule,
                span,
                excerpt: Some(describe(&r.sample, n)),
                decoded_from: None,
            });
        }
        if r.counts[Class::Tag as usize] > 0 {
            if r.flag_emoji {
                out.push(Finding {
                    category: Category::Invisible,
                    severity: Severity::Low,
                    rule: "tag_characters_flag_emoji",
                    span,
                    excerpt: Some(r.tags.clone()),
                    decoded_from: None,
                });
            } else {
                hidden(
                    &mut out,
                    span,
                    &r.tags,
                    Encoding::TagCharacters,
                    "tag_characters",
                    detect,
                );
            }
        }
        let selectors = r.counts[Class::VariationSelector as usize];
        if selectors > 0 {
            match std::str::from_utf8(&r.selectors) {
                Ok(text) if printable(text) => hidden(
                    &mut out,
                    span,
                    text,
                    Encoding::VariationSelectors,
                    "variation_selectors",
                    detect,
                ),
                _ => out.push(Finding {
                    category: Category::Invisible,
                    severity: Severity::Low,
                    rule: "variation_selectors",
                    span,
                    excerpt: Some(describe(&r.sample, selectors)),
                    decoded_from: None,
                }),
            }
        }
    }
    out
}

/// Smuggled text: always high (there is no honest reason to hide text this way), and
/// checked like visible text.
fn hidden(
    out: &mut Vec<Finding>,
    span: [usize; 2],
    text: &str,
    encoding: Encoding,
    rule: &'static str,
    detect: fn(&str) -> Vec<Finding>,
) {
    out.push(Finding {
        category: Category::AsciiSmuggling,
        severity: if text.trim().is_empty() {
            Severity::Medium
        } else {
            Severity::High
        },
        rule,
        span,
        excerpt: Some(excerpt(text)),
        decoded_from: Some(encoding),
    });
    for f in detect(text) {
        out.push(Finding {
            span,
            decoded_from: Some(encoding),
            ..f
        });
    }
}

/// Mostly printable text of at least two characters: what a smuggler hides, as opposed
/// to selector noise.
pub(super) fn printable(s: &str) -> bool {
    let total = s.chars().count();
    let good = s
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t' | '\r'))
        .count();
    total >= 2 && good * 10 >= total * 9
}

fn describe(sample: &[char], n: usize) -> String {
    let mut out = format!("{n} removed: ");
    for (k, c) in sample.iter().enumerate() {
        if k > 0 {
            out.push(' ');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "U+{:04X}", u32::from(*c));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(c: char) -> u8 {
        c.encode_utf8(&mut [0; 4]).as_bytes()[0]
    }

    #[test]
    fn the_coarse_block_tests_hold_wherever_the_passes_stop() {
        for b in 0..=u8::MAX {
            assert!(!special(b) || skip::control_or_non_ascii(b), "{b:#x}");
            let nfkc_stop = (b >= 0xc0) & !nfkc_quiet(b);
            assert!(!nfkc_stop || skip::non_ascii(b), "{b:#x}");
        }
    }

    #[test]
    fn the_fast_paths_skip_only_characters_their_pass_leaves_alone() {
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            if class(c).is_some() {
                assert!(
                    special(lead(c)),
                    "{c:?} is removable behind lead {:#x}",
                    lead(c)
                );
            }
            if !c.is_ascii() && nfkc_quiet(lead(c)) {
                assert_eq!(canonical_combining_class(c), 0, "{c:?}");
                assert_eq!(
                    is_nfkc_quick(std::iter::once(c)),
                    IsNormalized::Yes,
                    "{c:?}"
                );
            }
        }
    }
}
