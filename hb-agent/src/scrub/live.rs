//! Live secrets: the exact values this process holds (decrypted vault values, live
//! handles) and the encodings a tool or an attacker would turn them into.
//!
//! Owns: the encodings of a registered value and the Aho-Corasick automaton over all of
//! them (a [`LiveSet`], immutable once built and shared as `Arc`).
//! Must never: keep a value or an encoding outside a zeroized [`Secret`] (the automaton
//! itself is the one exception: it has to hold the bytes it looks for), or hand one out.

use aho_corasick::{AhoCorasick, AhoCorasickKind, Anchored, BuildError, MatchKind, StartKind};
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
    sampler: Sampler,
    /// The label of each pattern of the automaton.
    labels: Vec<&'static str>,
    longest: usize,
}

impl LiveSet {
    pub fn empty() -> Self {
        Self {
            automaton: None,
            sampler: Sampler::default(),
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
            .start_kind(StartKind::Both)
            .build(&forms)?;
        Ok(Self {
            sampler: Sampler::new(&forms),
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
    ///
    /// The sampler looks at every `k`-th position only; an occurrence of a form spans
    /// `k` window starts, so one of them is sampled, and the automaton is then tried,
    /// anchored, at the `k` starts that window could belong to, in order. That gives
    /// the same answer as an unanchored search, faster: the automaton's own scan over
    /// thousands of forms (no literal prefilter fits them) runs at about 90 MiB/s.
    pub fn next_hit(&self, hay: &[u8], from: usize) -> Option<(usize, usize, &'static str)> {
        let automaton = self.automaton.as_ref()?;
        let k = self.sampler.k;
        let mut t = from;
        while t + WINDOW <= hay.len() {
            if self.sampler.maybe(&hay[t..t + WINDOW]) {
                for start in from.max((t + 1).saturating_sub(k))..=t {
                    let input = aho_corasick::Input::new(hay)
                        .span(start..hay.len())
                        .anchored(Anchored::Yes);
                    if let Some(m) = automaton.find(input) {
                        return Some((m.start(), m.end(), self.labels[m.pattern().as_usize()]));
                    }
                }
            }
            t += k;
        }
        None
    }
}

/// Bytes hashed per sample.
const WINDOW: usize = 4;

/// A bit per hash of every `WINDOW`-byte window a sample can land on: the first `k`
/// windows of each form, where `k` is as large as the shortest form allows. About 32
/// bits per window (at most 1 MiB), so a few per cent are set.
#[derive(Default)]
struct Sampler {
    bits: Vec<u64>,
    log2: u32,
    k: usize,
}

impl Sampler {
    fn new(forms: &[&[u8]]) -> Self {
        let shortest = forms.iter().map(|f| f.len()).min().unwrap_or(WINDOW);
        let k = (shortest + 1).saturating_sub(WINDOW).clamp(1, 16);
        let wanted = (forms.len() * k * 32).next_power_of_two();
        let log2 = wanted.trailing_zeros().clamp(12, 23);
        let mut sampler = Self {
            bits: vec![0u64; 1 << (log2 - 6)],
            log2,
            k,
        };
        for f in forms {
            for j in 0..k {
                let h = sampler.hash(&f[j..j + WINDOW]);
                sampler.bits[h >> 6] |= 1 << (h & 63);
            }
        }
        sampler
    }

    fn maybe(&self, window: &[u8]) -> bool {
        let h = self.hash(window);
        self.bits[h >> 6] & (1 << (h & 63)) != 0
    }

    fn hash(&self, window: &[u8]) -> usize {
        let w = u32::from_le_bytes([window[0], window[1], window[2], window[3]]);
        (w.wrapping_mul(0x9E37_79B1) >> (32 - self.log2)) as usize
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
    fn sampled_search_finds_what_a_full_search_finds() {
        let values: Vec<Vec<u8>> = (0..40u8)
            .map(|i| format!("v{i:02}-Zq8kLm2vX9pQ{}", "x".repeat(usize::from(i % 7))).into_bytes())
            .collect();
        let entries: Vec<LiveEntry> = values
            .iter()
            .map(|v| LiveEntry {
                label: "live_secret",
                forms: forms(v),
            })
            .collect();
        let set = LiveSet::build(entries.iter()).expect("build");
        let all: Vec<&[u8]> = entries
            .iter()
            .flat_map(|e| e.forms.iter().map(Secret::expose))
            .collect();
        let reference = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&all)
            .expect("reference");
        // Forms planted at every offset, overlapping and back to back, in filler.
        let mut hay = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            hay.extend(std::iter::repeat_n(b'.', i % 9));
            hay.extend_from_slice(e.forms[i % e.forms.len()].expose());
            if i % 3 == 0 {
                hay.truncate(hay.len() - 2);
            }
        }
        let mut found = 0;
        for from in 0..hay.len() {
            let want = reference
                .find(aho_corasick::Input::new(&hay).span(from..hay.len()))
                .map(|m| (m.start(), m.end()));
            let got = set.next_hit(&hay, from).map(|(s, e, _)| (s, e));
            assert_eq!(got, want, "from {from}");
            found += usize::from(got.is_some());
        }
        assert!(found > hay.len() / 2);
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
