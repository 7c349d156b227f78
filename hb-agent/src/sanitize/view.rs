//! The detection view: the cleaned text folded so that look-alike spellings of the same
//! words become the same bytes, with a map back to the cleaned text.
//!
//! Per character: compatibility decomposition (fullwidth forms, mathematical
//! alphanumerics, ligatures, circled letters become plain letters), combining marks
//! dropped (`ïgnöre` → `ignore`), Cyrillic, Greek, small-capital and other Latin
//! look-alikes folded to the ASCII letter they imitate, lower case; blank runs become one
//! space (kept as they are at a line start, where indentation means code). The view is
//! only ever searched; it is never returned.

use std::ops::Range;

use unicode_normalization::char::{decompose_compatible, is_combining_mark};

use super::skip;

/// A stretch of the view and where it comes from.
#[derive(Debug, Clone, Copy)]
struct Seg {
    view: usize,
    out: usize,
    /// 0: byte-for-byte from `out` on (ASCII, and characters that fold to themselves);
    /// otherwise the byte length of the one output character every view byte of this
    /// stretch comes from.
    len: usize,
}

pub(super) struct View {
    bytes: Vec<u8>,
    segs: Vec<Seg>,
}

impl View {
    pub fn build(text: &str) -> View {
        let b = text.as_bytes();
        let mut v: Vec<u8> = Vec::with_capacity(b.len() + 16);
        let mut segs: Vec<Seg> = Vec::new();
        // Whether the last segment is an identity one that the next byte continues.
        let mut identity = false;
        let mut line_start = true;
        let mut i = 0;
        let blank = |c: &u8| *c == b' ' || *c == b'\t';
        let mut cache = FoldCache::new();
        while i < b.len() {
            if b[i] >= 0x80 && !quiet(b[i]) {
                let Some(c) = text[i..].chars().next() else {
                    break;
                };
                let len = c.len_utf8();
                let start = v.len();
                if cache.fold(c, &mut v) {
                    // Folds to itself: part of a byte-for-byte stretch rather than a
                    // segment of its own.
                    if !identity {
                        segs.push(Seg {
                            view: start,
                            out: i,
                            len: 0,
                        });
                        identity = true;
                    }
                    line_start = false;
                    i += len;
                    continue;
                }
                identity = false;
                if v.len() > start && v[start] == b' ' && start > 0 && v[start - 1] == b' ' {
                    v.truncate(start);
                }
                if v.len() > start {
                    segs.push(Seg {
                        view: start,
                        out: i,
                        len,
                    });
                    line_start = v.last() == Some(&b'\n');
                }
                i += len;
                continue;
            }
            if !identity {
                segs.push(Seg {
                    view: v.len(),
                    out: i,
                    len: 0,
                });
                identity = true;
            }
            if line_start {
                // Indentation stays as it is: it tells code from prose.
                let n = b[i..].iter().take_while(|c| blank(c)).count();
                v.extend_from_slice(&b[i..i + n]);
                i += n;
                line_start = false;
                continue;
            }
            // Bytes that stand for themselves: up to a character to fold, a tab, or a
            // blank or line break followed by a blank (a blank run to collapse, or
            // indentation to keep).
            let start = i;
            i = skip::next_stop_pair(b, i, |c, n| {
                let blank_next = (n == b' ') | (n == b'\t');
                let fold = (c >= 0xc0) & !quiet(c);
                fold | (c == b'\t') | (((c == b' ') | (c == b'\n')) & blank_next)
            });
            v.extend_from_slice(&b[start..i]);
            // A stretch that ends in a line break (one stopped by a character to fold
            // rather than by a blank) leaves the view at a line start: a character that
            // folds to nothing, such as a combining mark, keeps it there, and the blanks
            // after it are indentation.
            line_start = b[start..i].last() == Some(&b'\n');
            match b.get(i) {
                Some(b'\n') => {
                    v.push(b'\n');
                    i += 1;
                    line_start = true;
                }
                Some(b' ' | b'\t') => {
                    // A blank run: one space, mapped to its first byte.
                    let n = b[i..].iter().take_while(|c| blank(c)).count();
                    if v.last() == Some(&b' ') {
                        identity = false;
                    } else {
                        v.push(b' ');
                        identity = n == 1;
                    }
                    i += n;
                }
                _ => {}
            }
        }
        // Folded characters are lower case already; this lowers the ASCII bytes.
        v.make_ascii_lowercase();
        View { bytes: v, segs }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The cleaned-text range that view range `r` comes from, widened to whole characters.
    #[cfg(test)]
    pub fn to_output(&self, r: Range<usize>) -> Range<usize> {
        self.to_output_after(&mut 0, r)
    }

    /// The cleaned-text range that view range `r` comes from, widened to whole
    /// characters. `cursor` (0 at first) remembers the segment of the last range's start
    /// and the search gallops on from there, so ranges taken in order of their start read
    /// the segments about once; binary-searching all of them for each match cost a cache
    /// miss per step on long texts. Any order gives the same answers.
    pub fn to_output_after(&self, cursor: &mut usize, r: Range<usize>) -> Range<usize> {
        if self.segs.is_empty() || r.start >= self.bytes.len() {
            return 0..0;
        }
        *cursor = self.seg_index(*cursor, r.start);
        let start = self.locate(*cursor, r.start).start;
        if r.end <= r.start {
            return start..start;
        }
        let last = self.seg_index(*cursor, r.end - 1);
        start..self.locate(last, r.end - 1).end
    }

    /// Where the cleaned-text character that view byte `p` comes from starts:
    /// `to_output_after(cursor, p..p + 1).start`, without looking for its end (the
    /// learned stage maps tens of thousands of keyword places per MiB this way).
    pub fn to_output_start_after(&self, cursor: &mut usize, p: usize) -> usize {
        if self.segs.is_empty() || p >= self.bytes.len() {
            return 0;
        }
        *cursor = self.seg_index(*cursor, p);
        self.locate_start(*cursor, p)
    }

    /// The segment view byte `v` is in, searching from segment `from` on (from the first
    /// one if `v` is before it).
    fn seg_index(&self, from: usize, v: usize) -> usize {
        let segs = &self.segs;
        let mut lo = if segs.get(from).is_some_and(|s| s.view <= v) {
            from
        } else {
            0
        };
        let mut step = 1;
        while lo + step < segs.len() && segs[lo + step].view <= v {
            lo += step;
            step *= 2;
        }
        let hi = (lo + step).min(segs.len());
        (lo + segs[lo..hi].partition_point(|s| s.view <= v)).saturating_sub(1)
    }

    /// Where the output character that view byte `v`, in segment `k`, comes from
    /// starts: `locate(k, v).start`.
    fn locate_start(&self, k: usize, v: usize) -> usize {
        let s = self.segs[k];
        if s.len == 0 {
            let mut from = v;
            while from > s.view && self.bytes.get(from).is_some_and(|b| b & 0xc0 == 0x80) {
                from -= 1;
            }
            s.out + (from - s.view)
        } else {
            s.out
        }
    }

    /// The output character that view byte `v`, in segment `k`, comes from.
    fn locate(&self, k: usize, v: usize) -> Range<usize> {
        let s = self.segs[k];
        if s.len == 0 {
            // Byte for byte: the character's bytes are the view's, continuation bytes
            // and all, and a segment never splits a character.
            let continuation = |i: usize| self.bytes.get(i).is_some_and(|b| b & 0xc0 == 0x80);
            let mut from = v;
            while from > s.view && continuation(from) {
                from -= 1;
            }
            let mut to = v + 1;
            while continuation(to) {
                to += 1;
            }
            s.out + (from - s.view)..s.out + (to - s.view)
        } else {
            s.out..s.out + s.len
        }
    }
}

/// Lead bytes of characters that fold to themselves (U+4000 to U+9FFF: CJK ideographs
/// and hexagram symbols have no decomposition, case or look-alike): copied with the
/// ASCII around them, so Chinese and Japanese text need no per-character work. A test
/// checks every one. Branch-free for [`skip::next_stop_pair`].
fn quiet(c: u8) -> bool {
    c.wrapping_sub(0xe4) < 6
}

/// Folding goes through several Unicode tables; text repeats the same few characters,
/// so a small direct-mapped cache of results saves most of the lookups.
struct FoldCache {
    /// Character, folded length, whether it folds to itself, folded bytes.
    slots: Vec<(char, u8, bool, [u8; 7])>,
}

impl FoldCache {
    const SLOTS: usize = 256;

    fn new() -> Self {
        FoldCache {
            slots: vec![('\0', 0, false, [0; 7]); Self::SLOTS],
        }
    }

    /// Appends the view bytes of `c` (non-ASCII) and says whether they are its own.
    fn fold(&mut self, c: char, v: &mut Vec<u8>) -> bool {
        let slot = &mut self.slots[c as usize % Self::SLOTS];
        if slot.0 == c {
            v.extend_from_slice(&slot.3[..usize::from(slot.1)]);
            return slot.2;
        }
        let start = v.len();
        fold(c, v);
        let folded = &v[start..];
        let itself = folded == c.encode_utf8(&mut [0; 4]).as_bytes();
        if folded.len() <= 7 {
            *slot = (c, folded.len() as u8, itself, [0; 7]);
            slot.3[..folded.len()].copy_from_slice(folded);
        }
        itself
    }
}

/// Appends the view bytes of one non-ASCII character.
fn fold(c: char, v: &mut Vec<u8>) {
    if c.is_whitespace() {
        v.push(if matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}') {
            b'\n'
        } else {
            b' '
        });
        return;
    }
    if let Some(a) = confusable(c) {
        v.push(a);
        return;
    }
    decompose_compatible(c, |d| {
        if is_combining_mark(d) {
            return;
        }
        if d.is_ascii() {
            v.push((d as u8).to_ascii_lowercase());
        } else if let Some(a) = confusable(d) {
            v.push(a);
        } else {
            for l in d.to_lowercase() {
                match confusable(l) {
                    Some(a) => v.push(a),
                    None => {
                        let mut buf = [0u8; 4];
                        v.extend_from_slice(l.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
        }
    });
}

/// The ASCII character a non-ASCII one is made to look like (after compatibility
/// decomposition, which already handles fullwidth and mathematical forms). Upper-case
/// Greek and Cyrillic are listed apart: `Η` looks like `H`, its lower case `η` like `n`.
fn confusable(c: char) -> Option<u8> {
    Some(match c {
        // Cyrillic
        'а' | 'А' => b'a',
        'в' | 'В' | 'Ь' | 'ь' => b'b',
        'с' | 'С' | 'ϲ' | 'Ϲ' => b'c',
        'ԁ' => b'd',
        'е' | 'Е' | 'ё' | 'Ё' | 'є' | 'Є' => b'e',
        'ғ' => b'f',
        'ԍ' | 'ɡ' | 'ց' => b'g',
        'һ' | 'Һ' | 'Н' | 'н' => b'h',
        'і' | 'І' | 'ї' | 'Ї' | 'ӏ' | 'Ӏ' | 'ı' | 'ɪ' | 'ι' | 'Ι' | 'ί' => b'i',
        'ј' | 'Ј' | 'ȷ' => b'j',
        'к' | 'К' | 'κ' | 'Κ' | 'ᴋ' => b'k',
        'ⅼ' | 'ǀ' => b'l',
        'М' | 'м' | 'Μ' | 'ᴍ' => b'm',
        'п' | 'η' | 'ո' | 'Ν' | 'ɴ' => b'n',
        'о' | 'О' | 'ο' | 'Ο' | 'σ' | 'ό' | 'օ' | 'ᴏ' => b'o',
        'р' | 'Р' | 'ρ' | 'Ρ' | 'ᴘ' => b'p',
        'ԛ' | 'Ԛ' => b'q',
        'г' | 'ʀ' => b'r',
        'ѕ' | 'Ѕ' | 'ꜱ' => b's',
        'т' | 'Т' | 'τ' | 'Τ' | 'ᴛ' => b't',
        'υ' | 'ս' | 'ᴜ' => b'u',
        'ν' | 'ѵ' | 'ᴠ' => b'v',
        'ԝ' | 'ѡ' | 'ω' | 'ᴡ' => b'w',
        'х' | 'Х' | 'χ' | 'Χ' => b'x',
        'у' | 'У' | 'ү' | 'Ү' | 'γ' | 'Υ' | 'ʏ' => b'y',
        'Ζ' | 'ᴢ' => b'z',
        'α' | 'Α' | 'ɑ' | 'ᴀ' => b'a',
        'β' | 'Β' | 'ʙ' => b'b',
        'ε' | 'Ε' | 'ᴇ' => b'e',
        'Η' | 'ʜ' => b'h',
        'ᴄ' => b'c',
        'ᴅ' => b'd',
        'ʟ' => b'l',
        'ᴊ' => b'j',
        // Punctuation look-alikes that rules rely on.
        '‘' | '’' | '‚' | '‛' | '′' | 'ʼ' => b'\'',
        '“' | '”' | '„' | '‟' | '″' | '«' | '»' => b'"',
        '‐' | '‑' | '‒' | '–' | '—' | '―' | '−' => b'-',
        '⁄' | '∕' => b'/',
        '∣' | '￨' => b'|',
        '‹' | '〈' | '⟨' | '＜' => b'<',
        '›' | '〉' | '⟩' | '＞' => b'>',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The view one character at a time, as the module header defines it: what
    /// [`View::build`] must produce, fast path or not.
    fn plain_view(text: &str) -> Vec<u8> {
        let chars: Vec<char> = text.chars().collect();
        let blank = |c: &char| *c == ' ' || *c == '\t';
        let mut v = Vec::new();
        let mut line_start = true;
        let mut k = 0;
        while k < chars.len() {
            let c = chars[k];
            if !c.is_ascii() {
                let start = v.len();
                fold(c, &mut v);
                if v.len() > start && v[start] == b' ' && start > 0 && v[start - 1] == b' ' {
                    v.truncate(start);
                }
                if v.len() > start {
                    line_start = v.last() == Some(&b'\n');
                }
                k += 1;
            } else if blank(&c) {
                let n = chars[k..].iter().take_while(|c| blank(c)).count();
                if line_start {
                    v.extend(chars[k..k + n].iter().map(|c| *c as u8));
                } else if (n == 1 && c == ' ') || v.last() != Some(&b' ') {
                    v.push(b' ');
                }
                line_start = false;
                k += n;
            } else {
                v.push(c.to_ascii_lowercase() as u8);
                line_start = c == '\n';
                k += 1;
            }
        }
        v
    }

    #[test]
    fn characters_behind_quiet_lead_bytes_fold_to_themselves() {
        for c in (0x4000..=0x9fff).filter_map(char::from_u32) {
            let own = c.encode_utf8(&mut [0; 4]).as_bytes().to_vec();
            assert!(quiet(own[0]), "{c:?}");
            let mut v = Vec::new();
            fold(c, &mut v);
            assert_eq!(v, own, "{c:?}");
        }
        let quiet_leads = (0x80..=0xff).filter(|&b| quiet(b)).count();
        assert_eq!(
            quiet_leads, 6,
            "U+4000 to U+9FFF is all that lead bytes E4 to E9 start"
        );
    }

    /// A combining mark right after a line break folds to nothing, so the tab after it
    /// is indentation and stays a tab (the bulk copy ended in the line break without
    /// noting the line start, and the tab became a collapsed blank).
    #[test]
    fn blanks_after_a_line_break_and_a_mark_that_folds_to_nothing_are_indentation() {
        for text in [
            "\n\u{301}\t",
            "a\n\u{301}\t",
            "a\n\u{301}\u{301}  b",
            "\n\u{301}\t\n",
        ] {
            let view = View::build(text);
            assert_eq!(view.bytes(), plain_view(text).as_slice(), "{text:?}");
        }
        assert_eq!(View::build("\n\u{301}\t").bytes(), b"\n\t");
        assert_eq!(View::build("a\n\u{301}\t").bytes(), b"a\n\t");
    }

    proptest! {
        /// Long runs, so that the fast path skips whole blocks, with every kind of
        /// blank, line start and folded character between them.
        #[test]
        fn the_view_is_the_plain_fold_and_maps_back(
            runs in prop::collection::vec(
                ("[aB \t\n\r-]|é|\u{3000}|\u{2028}|Ａ|\u{301}|日|が|\u{1f600}", 0usize..40),
                0..12,
            )
        ) {
            let text: String = runs.iter().map(|(c, n)| c.repeat(*n)).collect();
            let view = View::build(&text);
            let v = view.bytes();
            let want = plain_view(&text);
            prop_assert_eq!(v, want.as_slice());
            let (mut cursor, mut point_cursor) = (0, 0);
            for (j, &b) in v.iter().enumerate() {
                let range = view.to_output_after(&mut cursor, j..j + 1);
                prop_assert_eq!(range.clone(), view.to_output(j..j + 1));
                prop_assert_eq!(view.to_output_start_after(&mut point_cursor, j), range.start);
                prop_assert!(text.is_char_boundary(range.start) && text.is_char_boundary(range.end));
                let from = &text.as_bytes()[range];
                if let [c] = from {
                    let blank_run = b == b' ' && (*c == b' ' || *c == b'\t');
                    prop_assert!(b == c.to_ascii_lowercase() || blank_run, "{j}: {:?}", *c as char);
                }
            }
            prop_assert_eq!(view.to_output_start_after(&mut point_cursor, v.len()), 0);
        }
    }
}
