//! Searching a loaded rule's region from the literals inside its matches.
//!
//! Owns: [`Inner`], a rule's regex split into a short *lead* and a *tail* that starts
//! with literals, and the search of a region through it ([`Inner::find_iter`]).
//! Must never: find other matches than the regex crate's `find_iter` over the same span
//! of the same haystack (a test compares them; the bench inputs and the accuracy runs
//! redact byte for byte what they did).
//!
//! Rules shaped like gitleaks's generic-api-key (`[\w.-]{0,50}?(?:access|auth|…|token)…`)
//! match near keywords that are everywhere in text, so their regions cover most input
//! and the regex crate's unanchored search read all of it (a quarter of a scrub with
//! gitleaks's file). Such a regex is `lead tail`: the lead matches at most `lead` bytes
//! and every match of the tail starts with one of a finite set of literals. So every
//! match starting at `s` has its tail start at a literal hit `h` with
//! `s <= h <= s + lead`, and the tail matches anchored at `h`. The search walks the
//! literal hits from the last match's end: a hit where the tail does not match
//! anchored (most: a keyword with no `=` after it) costs a few bytes of DFA; at the
//! first where it does, no match can start before `h - lead` (its tail would sit at an
//! earlier hit, which failed), so the regex crate's search from there finds exactly the
//! match `find_iter` finds next.

use std::ops::Range;

use regex_automata::{Anchored, Input, Match, meta};
use regex_syntax::hir::{Hir, HirKind};

use super::{
    matcher::LazyWalker,
    scan::{AnchorScan, ScanKind},
};

/// A longer lead is not worth it: each hit could restart the search this far back.
const MAX_LEAD: usize = 256;
/// Shorter literals hit too often in text to be worth a probe each.
const MIN_LITERAL: usize = 3;

pub(super) struct Inner {
    /// The longest match of the lead (the parts of the regex before the tail).
    lead: usize,
    /// Where a literal a tail match starts with begins (ASCII case folded: a superset).
    starts: AnchorScan,
    /// The tail, run anchored at a hit: whether it matches there.
    tail: meta::Regex,
    /// The tail as a lazy DFA (cheaper to start than the regex crate; it may give up).
    walker: Option<LazyWalker>,
}

impl Inner {
    /// The split of `hir` (a rule's regex as compiled) into lead and tail, if it has one.
    pub fn new(hir: &Hir) -> Option<Self> {
        // An empty match would need `find_iter`'s handling of empty matches.
        if hir.properties().minimum_len().is_none_or(|n| n == 0) {
            return None;
        }
        let parts: &[Hir] = match hir.kind() {
            HirKind::Concat(parts) => parts,
            _ => std::slice::from_ref(hir),
        };
        for split in 0..parts.len() {
            let lead = Hir::concat(parts[..split].to_vec())
                .properties()
                .maximum_len()?;
            if lead > MAX_LEAD {
                return None;
            }
            let tail = Hir::concat(parts[split..].to_vec());
            let Some(literals) = tail_literals(&tail) else {
                continue;
            };
            let regex = meta::Builder::new()
                .configure(meta::Config::new().utf8_empty(false))
                .build_from_hir(&tail)
                .ok()?;
            let literals: Vec<&[u8]> = literals.iter().map(Vec::as_slice).collect();
            return Some(Self {
                lead,
                starts: AnchorScan::folded(&literals, ScanKind::Best),
                tail: regex,
                walker: LazyWalker::from_hir(&tail),
            });
        }
        None
    }

    /// The matches of `regex` (the whole rule, of which this is the split) over
    /// `hay[span]`, as `regex.find_iter` finds them.
    pub fn find_iter<'a>(
        &'a self,
        regex: &'a meta::Regex,
        hay: &'a [u8],
        span: Range<usize>,
    ) -> InnerMatches<'a> {
        InnerMatches {
            inner: self,
            regex,
            hay,
            pos: span.start,
            at: span.start,
            end: span.end,
        }
    }

    /// Whether the tail matches anchored at `at` within `hay[..end]`.
    fn tail_at(&self, hay: &[u8], at: usize, end: usize) -> bool {
        if let Some((matches, _)) = self.walker.as_ref().and_then(|w| w.probe(hay, at..end)) {
            return matches;
        }
        self.tail
            .is_match(Input::new(hay).span(at..end).anchored(Anchored::Yes))
    }
}

pub(super) struct InnerMatches<'a> {
    inner: &'a Inner,
    regex: &'a meta::Regex,
    hay: &'a [u8],
    /// Where the next match may start (the last one's end).
    pos: usize,
    /// Where the next literal hit is looked for (every hit from `pos` to here failed).
    at: usize,
    end: usize,
}

impl Iterator for InnerMatches<'_> {
    type Item = Match;

    fn next(&mut self) -> Option<Match> {
        while let Some((h, _)) = self.inner.starts.next_hit(0, self.hay, self.at) {
            if h >= self.end {
                break;
            }
            self.at = h + 1;
            if !self.inner.tail_at(self.hay, h, self.end) {
                continue;
            }
            let from = self.pos.max(h.saturating_sub(self.inner.lead));
            let m = self
                .regex
                .search(&Input::new(self.hay).span(from..self.end))?;
            self.pos = m.end();
            self.at = self.at.max(self.pos);
            return Some(m);
        }
        self.at = self.end;
        None
    }
}

/// The literals every match of `tail` starts with, lower-cased, if there are finitely
/// many and none is shorter than [`MIN_LITERAL`].
fn tail_literals(tail: &Hir) -> Option<Vec<Vec<u8>>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(tail);
    let literals = seq.literals()?;
    if literals.is_empty() || literals.iter().any(|l| l.as_bytes().len() < MIN_LITERAL) {
        return None;
    }
    let mut lower: Vec<Vec<u8>> = literals
        .iter()
        .map(|l| l.as_bytes().to_ascii_lowercase())
        .collect();
    lower.sort();
    lower.dedup();
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrub::rules_file::compile_regex;

    /// xorshift text over what the generic rules care about: keywords, operators,
    /// quotes, word bytes and line breaks.
    fn random_text(state: &mut u64, len: usize) -> Vec<u8> {
        const PIECES: &[&str] = &[
            "api",
            "API",
            "Api",
            "key",
            "KEY",
            "token",
            "secret",
            "auth",
            "access",
            "password",
            "passwd",
            "creds",
            "credential",
            "kind:",
            "Secret",
            "data:",
            " = ",
            "=",
            ":",
            ": ",
            "\"",
            "'",
            "`",
            " ",
            "\t",
            "\n",
            "\\n",
            "_",
            "-",
            ".",
            "a1B2c3D4e5",
            "xY9",
            "Zq7w",
            "+/",
            "==",
            "{{",
            "}}",
            "|",
            ">",
            ",",
            ";",
            "0123456789",
            "abcdefghijkl",
            "\u{e9}",
        ];
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            out.extend_from_slice(PIECES[(*state % PIECES.len() as u64) as usize].as_bytes());
        }
        out
    }

    #[test]
    fn the_inner_search_finds_what_find_iter_finds() {
        let rules = include_str!("testdata/gitleaks/gitleaks.toml");
        let table: toml::Table = toml::from_str(rules).expect("gitleaks.toml parses");
        let patterns: Vec<String> = table["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .filter_map(|r| r.get("regex").and_then(|v| v.as_str()).map(String::from))
            .collect();
        let mut state = 0x9E37_79B9_7F4A_7C15;
        let texts: Vec<Vec<u8>> = (0..40)
            .map(|i| random_text(&mut state, 200 + 100 * i))
            .collect();
        let mut split = 0;
        let mut matched = 0;
        for pattern in &patterns {
            let Ok((regex, hir)) = compile_regex(pattern) else {
                continue;
            };
            let Some(inner) = Inner::new(&hir) else {
                continue;
            };
            split += 1;
            for text in &texts {
                for span in [
                    0..text.len(),
                    1..text.len().saturating_sub(1),
                    7..text.len() / 2,
                ] {
                    let want: Vec<Match> = regex
                        .find_iter(Input::new(text).span(span.clone()))
                        .collect();
                    let got: Vec<Match> = inner.find_iter(&regex, text, span).collect();
                    assert_eq!(got, want, "pattern {pattern}");
                    matched += want.len();
                }
            }
        }
        assert!(split >= 2, "only {split} rules split into lead and tail");
        assert!(
            matched > 100,
            "only {matched} matches: the texts miss the rules"
        );
    }

    #[test]
    fn generic_api_key_splits_after_its_lead() {
        let (_, hir) = compile_regex(
            r#"(?i)[\w.-]{0,50}?(?:access|auth|(?-i:[Aa]pi|API)|credential|creds|key|passw(?:or)?d|secret|token)(?:[ \t\w.-]{0,20})[\s'"]{0,3}(?:=|>|:{1,3}=|\|\||:|=>|\?=|,)[\x60'"\s=]{0,5}([\w.=-]{10,150}|[a-z0-9][a-z0-9+/]{11,}={0,3})(?:[\x60'"\s;]|\\[nr]|$)"#,
        )
        .expect("compiles");
        let inner = Inner::new(&hir).expect("splits");
        assert_eq!(inner.lead, 50);
    }
}
