//! Running one rule's regex at a keyword hit.
//!
//! Owns: the compiled forms of a rule's regex. Must never: disagree with the regex
//! crate's leftmost-first match of `^(?:regex)` on the window (a test compares them).
//!
//! Almost every hit in ordinary text is a near miss that fails a few bytes in. A call
//! into the regex crate costs about 40 ns before the first byte (pool, strategy, start
//! state), which made rule evaluation a fifth of a clean scrub. Rules whose DFA is small
//! are compiled once to an anchored dense DFA and walked here a byte at a time, from a
//! start state computed at build time; the regex crate runs only for the few larger
//! rules, and for capture groups once a match is certain.

use std::ops::Range;

use regex::bytes::{Regex, RegexBuilder};
use regex_automata::{
    Anchored,
    dfa::{Automaton, StartKind, dense},
    nfa::thompson,
    util::{primitives::StateID, syntax},
};

/// How a DFA walk over a window ended.
enum Walk {
    /// In the dead state: no later byte can change the result.
    Final(Option<usize>),
    /// At the end of the window (and the end of input there).
    Ran(Option<usize>),
    /// The rule has no DFA.
    Lazy,
}

/// A DFA past this many bytes stays lazy (the regex crate's own).
const DFA_LIMIT: usize = 128 * 1024;

pub(super) struct Matcher {
    regex: Regex,
    dfa: Option<(dense::DFA<Vec<u32>>, StateID)>,
}

impl Matcher {
    /// `pattern` is matched at the start of the window (a `^` is implied); bytes, no
    /// Unicode classes.
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        let regex = RegexBuilder::new(&format!("^(?:{pattern})"))
            .unicode(false)
            .build()?;
        Ok(Self {
            regex,
            dfa: dense_dfa(pattern),
        })
    }

    /// The length of the leftmost-first match at the window's start, if any.
    pub fn match_len(&self, window: &[u8]) -> Option<usize> {
        match self.walk(window) {
            Walk::Final(m) | Walk::Ran(m) => m,
            Walk::Lazy => self.regex.find(window).map(|m| m.end()),
        }
    }

    /// The match at the start of `partial`, the first bytes of a longer window, if no
    /// byte after them can change it: Some(result) when the DFA ruled out every longer
    /// match within `partial`, None when it needs more bytes (or the rule has no DFA).
    pub fn decided_in(&self, partial: &[u8]) -> Option<Option<usize>> {
        match self.walk(partial) {
            Walk::Final(m) => Some(m),
            Walk::Ran(_) | Walk::Lazy => None,
        }
    }

    fn walk(&self, window: &[u8]) -> Walk {
        let Some((dfa, start)) = &self.dfa else {
            return Walk::Lazy;
        };
        let mut state = *start;
        let mut matched = None;
        for (i, &b) in window.iter().enumerate() {
            state = dfa.next_state(state, b);
            if dfa.is_special_state(state) {
                // Match states come one byte late: this one ends before byte `i`.
                if dfa.is_match_state(state) {
                    matched = Some(i);
                } else if dfa.is_dead_state(state) {
                    return Walk::Final(matched);
                }
            }
        }
        if dfa.is_match_state(dfa.next_eoi_state(state)) {
            return Walk::Ran(Some(window.len()));
        }
        Walk::Ran(matched)
    }

    /// The span of capture group `group` of the match at the window's start.
    pub fn group(&self, window: &[u8], group: usize) -> Option<Range<usize>> {
        self.regex
            .captures(window)
            .and_then(|c| c.get(group))
            .map(|m| m.range())
    }
}

/// The anchored dense DFA of `pattern`, if it is small and its start state does not
/// depend on the byte before the window (none of the built-in rules' does).
fn dense_dfa(pattern: &str) -> Option<(dense::DFA<Vec<u32>>, StateID)> {
    let dfa = dense::Builder::new()
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .thompson(thompson::Config::new().utf8(false))
        .configure(
            dense::Config::new()
                .start_kind(StartKind::Anchored)
                .dfa_size_limit(Some(DFA_LIMIT))
                .determinize_size_limit(Some(4 * DFA_LIMIT)),
        )
        .build(pattern)
        .ok()?;
    let start = dfa.universal_start_state(Anchored::Yes)?;
    Some((dfa, start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrub::families::RULES;

    /// xorshift over an alphabet of the bytes the rules care about.
    fn random(state: &mut u64, len: usize) -> Vec<u8> {
        const ALPHABET: &[u8] =
            b"aAzZ09fF_-+/=.:@ \n\t\"'\\ghpsk_ABEGINKSYeyJtwilo%3D<>{}[]\x80\xff";
        (0..len)
            .map(|_| {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                ALPHABET[(*state % ALPHABET.len() as u64) as usize]
            })
            .collect()
    }

    #[test]
    fn the_dfa_walk_agrees_with_the_regex_crate() {
        let tokens = include_str!("testdata/tokens.tsv");
        let mut state = 0xD1B5_4A32_D192_ED03;
        let mut dense = 0;
        let mut matched = 0;
        for rule in RULES {
            let m = Matcher::new(rule.regex).expect("rule compiles");
            if m.dfa.is_some() {
                dense += 1;
            }
            // Every planted token, cut at every length, and random tails after each.
            let mut inputs: Vec<Vec<u8>> = Vec::new();
            for line in tokens
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
            {
                let planted = line
                    .split('\t')
                    .nth(1)
                    .unwrap_or_default()
                    .replace("\\n", "\n");
                for kw in rule.keywords {
                    let kw = kw.replace('|', "");
                    if let Some(at) = planted.find(&kw) {
                        let t = planted.as_bytes()[at..].to_vec();
                        for cut in 0..=t.len() {
                            inputs.push(t[..cut].to_vec());
                        }
                        let mut tail = t.clone();
                        tail.extend(random(&mut state, 40));
                        inputs.push(tail);
                    }
                }
            }
            for kw in rule.keywords {
                let kw = kw.replace('|', "");
                for len in 0..200 {
                    let mut hay = kw.as_bytes().to_vec();
                    hay.extend(random(&mut state, len));
                    inputs.push(hay);
                }
            }
            for hay in &inputs {
                let want = m.regex.find(hay).map(|x| x.end());
                assert_eq!(m.match_len(hay), want, "rule {}", rule.name);
                matched += usize::from(want.is_some());
            }
        }
        assert!(
            dense >= RULES.len() / 2,
            "only {dense} rules have a dense DFA"
        );
        assert!(
            matched > 500,
            "only {matched} matches: the inputs miss the rules"
        );
    }
}
