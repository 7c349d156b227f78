//! Live secrets: the exact values this process holds (decrypted vault values, live
//! handles) and the encodings a tool or an attacker would turn them into.
//!
//! Owns: the encodings of a registered value and the Aho-Corasick automaton over all of
//! them (a [`LiveSet`], immutable once built and shared as `Arc`).
//! Must never: keep a value or an encoding outside a zeroized [`Secret`] (the automaton
//! itself is the one exception: it has to hold the bytes it looks for), or hand one out.

use aho_corasick::{AhoCorasick, AhoCorasickKind, BuildError, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

use crate::secret::Secret;

/// Shorter values are refused: they would redact ordinary words.
pub const MIN_SECRET_LEN: usize = 8;
/// Longer values are refused: the stream scrubber holds back as many bytes as the
/// longest encoding (percent-encoding triples a value).
pub const MAX_SECRET_LEN: usize = 4096;

/// One registered value: its label and every form it is looked for in.
pub(super) struct LiveEntry {
    pub label: &'static str,
    pub forms: Vec<Secret>,
}

/// The automaton over every form of every registered value.
pub(super) struct LiveSet {
    automaton: Option<AhoCorasick>,
    /// The label of each pattern of the automaton.
    labels: Vec<&'static str>,
    longest: usize,
}

impl LiveSet {
    pub fn empty() -> Self {
        Self {
            automaton: None,
            labels: Vec::new(),
            longest: 0,
        }
    }

    pub fn build<'a>(entries: impl Iterator<Item = &'a LiveEntry>) -> Result<Self, BuildError> {
        let mut forms: Vec<&[u8]> = Vec::new();
        let mut labels = Vec::new();
        for e in entries {
            for f in &e.forms {
                forms.push(f.expose());
                labels.push(e.label);
            }
        }
        if forms.is_empty() {
            return Ok(Self::empty());
        }
        let longest = forms.iter().map(|f| f.len()).max().unwrap_or(0);
        // A DFA scans fastest but costs a transition table per state (about one state
        // per pattern byte): past a few hundred forms the contiguous NFA is the sane
        // trade.
        let kind = if forms.len() <= 512 {
            AhoCorasickKind::DFA
        } else {
            AhoCorasickKind::ContiguousNFA
        };
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .kind(Some(kind))
            .build(&forms)?;
        Ok(Self {
            automaton: Some(automaton),
            labels,
            longest,
        })
    }

    /// The longest form: no live match is longer.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// The first form found starting at or after `from` (an index into `hay`):
    /// (start, end, label).
    pub fn next_hit(&self, hay: &[u8], from: usize) -> Option<(usize, usize, &'static str)> {
        let automaton = self.automaton.as_ref()?;
        let input = aho_corasick::Input::new(hay).span(from..hay.len());
        automaton
            .find(input)
            .map(|m| (m.start(), m.end(), self.labels[m.pattern().as_usize()]))
    }
}

/// Every form `value` is looked for in: raw; base64 standard and URL-safe, padded and
/// not, and the stable inner characters at each of the three byte offsets (the value
/// inside a longer encoded text); percent-encoding (reserved bytes only, and every byte;
/// upper and lower hex); hex (lower, upper); JSON string escaping (minimal, with `\/`,
/// and ASCII-only `\uXXXX` as Python writes it). Duplicates removed.
pub(super) fn forms(value: &[u8]) -> Vec<Secret> {
    let mut out: Vec<Zeroizing<Vec<u8>>> = vec![Zeroizing::new(value.to_vec())];
    for (padded, bare) in [(STANDARD, STANDARD_NO_PAD), (URL_SAFE, URL_SAFE_NO_PAD)] {
        out.push(Zeroizing::new(padded.encode(value).into_bytes()));
        out.push(Zeroizing::new(bare.encode(value).into_bytes()));
        for offset in 0..3 {
            out.push(base64_core(&bare, value, offset));
        }
    }
    for upper in [true, false] {
        out.push(percent(value, upper, false));
        out.push(percent(value, upper, true));
        out.push(hex(value, upper));
    }
    if let Ok(text) = std::str::from_utf8(value) {
        let minimal = json_escape(text, false);
        out.push(into_bytes(Zeroizing::new(minimal.replace('/', r"\/"))));
        out.push(into_bytes(json_escape(text, true)));
        out.push(into_bytes(minimal));
    }
    out.sort_unstable_by(|a, b| a.as_slice().cmp(b.as_slice()));
    out.dedup_by(|a, b| a.as_slice() == b.as_slice());
    out.into_iter()
        .map(|mut f| Secret::new(std::mem::take(&mut *f)))
        .collect()
}

fn into_bytes(mut s: Zeroizing<String>) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(std::mem::take(&mut *s).into_bytes())
}

/// The base64 characters that depend on `value`'s bits alone when it starts `offset`
/// bytes into a 3-byte group: whatever surrounds it, an encoding holds these.
fn base64_core(engine: &impl base64::Engine, value: &[u8], offset: usize) -> Zeroizing<Vec<u8>> {
    let mut buf = Zeroizing::new(vec![0u8; offset]);
    buf.extend_from_slice(value);
    buf.extend_from_slice(&[0, 0]);
    let encoded = Zeroizing::new(engine.encode(&*buf));
    // Character i covers bits [6i, 6i + 6).
    let first = (8 * offset).div_ceil(6);
    let end = 8 * (offset + value.len()) / 6;
    Zeroizing::new(encoded.as_bytes()[first..end].to_vec())
}

const UPPER: &[u8; 16] = b"0123456789ABCDEF";
const LOWER: &[u8; 16] = b"0123456789abcdef";

fn percent(value: &[u8], upper: bool, every_byte: bool) -> Zeroizing<Vec<u8>> {
    let digits = if upper { UPPER } else { LOWER };
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 3));
    for &b in value {
        if !every_byte && (b.is_ascii_alphanumeric() || b"-_.~".contains(&b)) {
            out.push(b);
        } else {
            out.extend_from_slice(&[
                b'%',
                digits[usize::from(b >> 4)],
                digits[usize::from(b & 15)],
            ]);
        }
    }
    out
}

fn hex(value: &[u8], upper: bool) -> Zeroizing<Vec<u8>> {
    let digits = if upper { UPPER } else { LOWER };
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 2));
    for &b in value {
        out.extend_from_slice(&[digits[usize::from(b >> 4)], digits[usize::from(b & 15)]]);
    }
    out
}

/// The inside of a JSON string holding `text` (no quotes).
fn json_escape(text: &str, ascii_only: bool) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(text.len() + 8));
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ascii_only && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for &unit in c.encode_utf16(&mut units).iter() {
                    out.push_str("\\u");
                    for shift in [12, 8, 4, 0] {
                        out.push(char::from(LOWER[usize::from((unit >> shift) & 15)]));
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(forms: &[Secret], s: &[u8]) -> bool {
        forms.iter().any(|f| f.expose() == s)
    }

    #[test]
    fn base64_cores_are_inside_any_surrounding() {
        let value = b"Zq8#kLm2-vX9/pQ";
        let forms = forms(value);
        for before in 0..6usize {
            for after in 0..4usize {
                let mut text = vec![b'x'; before];
                text.extend_from_slice(value);
                text.extend(std::iter::repeat_n(b'y', after));
                for engine in [STANDARD, URL_SAFE, STANDARD_NO_PAD] {
                    let encoded = engine.encode(&text);
                    let found = forms
                        .iter()
                        .any(|f| encoded.as_bytes().windows(f.len()).any(|w| w == f.expose()));
                    assert!(found, "no form inside the base64 of {before}+value+{after}");
                }
            }
        }
    }

    #[test]
    fn the_usual_encodings_are_forms() {
        let forms = forms("p/ss wörd\"1".as_bytes());
        assert!(has(&forms, b"p%2Fss%20w%C3%B6rd%221"));
        assert!(has(&forms, b"p%2fss%20w%c3%b6rd%221"));
        assert!(has(&forms, b"%70%2F%73%73%20%77%C3%B6%72%64%22%31"));
        assert!(has(&forms, b"702f73732077c3b672642231"));
        assert!(has(&forms, b"702F73732077C3B672642231"));
        assert!(has(&forms, br#"p/ss w\u00f6rd\"1"#));
        assert!(has(&forms, r#"p\/ss wörd\"1"#.as_bytes()));
        assert!(has(&forms, r#"p/ss wörd\"1"#.as_bytes()));
        assert!(has(&forms, b"cC9zcyB3w7ZyZCIx"));
        assert!(has(&forms, b"p/ss w\xc3\xb6rd\"1"));
    }
}
