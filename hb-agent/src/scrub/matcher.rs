//! Running one rule's regex at a keyword hit.
//!
//! Owns: the compiled forms of a rule's regex. Must never: disagree with the regex
//! crate's leftmost-first match of `^(?:regex)` on the window (a test compares them).
//!
//! Almost every hit in ordinary text is a near miss that fails a few bytes in. A call
//! into the regex crate costs about 40 ns before the first byte (pool, strategy, start
//! state), which made rule evaluation a fifth of a clean scrub. Rules whose DFA is small
//! are compiled once to an anchored dense DFA and walked here a byte at a time, from a
//! start state computed at build time, or from the state after the keyword the hit
//! starts with (also computed at build time: [`Resume`]), so a keyword's bytes are not
//! walked again at each of its hits. The few larger rules are walked the same way
//! through `regex-automata`'s lazy DFA (a pooled cache per rule), so every walk knows how
//! many bytes it read: the engine bounds rows of overlapping hits with that (see
//! `families::Effort`). The regex crate runs only for capture groups once a match is
//! certain, and when the lazy DFA gives up.

use std::{ops::Range, sync::Arc};

use regex_automata::{
    Anchored, Input,
    dfa::{Automaton, StartKind, dense, onepass},
    hybrid, meta,
    nfa::thompson::{self, backtrack},
    util::{
        pool::Pool,
        primitives::{NonMaxUsize, StateID},
        start, syntax,
    },
};

/// How a DFA walk over a window ended, and how many of its bytes it read.
enum Walk {
    /// In the dead state after reading `walked` bytes: no later byte can change the
    /// result.
    Final(Option<usize>, usize),
    /// At the end of the window (and the end of input there), every byte read.
    Ran(Option<usize>),
    /// The lazy DFA gave up (its cache thrashed, or a byte it cannot decide on).
    Lazy,
}

/// The answer of a walk, and the bytes it read (the engine's work measure, and how far
/// the rule looked past its keyword).
pub(super) struct Walked<T> {
    pub result: T,
    pub walked: usize,
}

/// Where a walk at a keyword hit may start instead of the DFA's start state: the state
/// after the keyword's bytes, which every hit of that keyword begins with (see
/// [`Matcher::resume_after`]). The walk then reads `skip` bytes fewer, and ends where
/// and as the walk from the start would have: same match, same bytes counted as read.
#[derive(Clone, Copy)]
pub(super) struct Resume {
    state: StateID,
    skip: usize,
}

/// The highest capture group a rule may redact.
pub(super) const MAX_GROUP: usize = 7;

/// A DFA past this many bytes stays lazy (walked through `regex-automata`'s lazy DFA).
const DFA_LIMIT: usize = 128 * 1024;

/// The same for rules run at common words (see [`Matcher::for_common_keywords`]).
const COMMON_DFA_LIMIT: usize = 1024 * 1024;

type CachePool = Pool<hybrid::dfa::Cache, Box<dyn Fn() -> hybrid::dfa::Cache + Send + Sync>>;
type BacktrackPool = Pool<backtrack::Cache, Box<dyn Fn() -> backtrack::Cache + Send + Sync>>;

pub(super) struct Matcher {
    /// `^(?:pattern)` as the regex crate builds it for bytes without Unicode (its own
    /// engine, so capture searches can be cut to the match's span).
    regex: meta::Regex,
    dfa: Option<(dense::DFA<Vec<u32>>, StateID)>,
    /// For rules whose dense DFA is too large: the lazy DFA, walked the same way, so
    /// every walk knows where it died.
    lazy: Option<(Arc<hybrid::dfa::DFA>, CachePool)>,
    /// For capture groups of a regex that is not one-pass: the regex crate's own capture
    /// engine, called directly (see [`Matcher::group`]).
    backtrack: Option<(Arc<backtrack::BoundedBacktracker>, BacktrackPool)>,
}

impl Matcher {
    /// `pattern` is matched at the start of the window (a `^` is implied); bytes, no
    /// Unicode classes.
    pub fn new(pattern: &str) -> Result<Self, Box<meta::BuildError>> {
        Self::with_dense_limit(pattern, DFA_LIMIT)
    }

    /// [`Matcher::new`] for a rule whose keywords are common words (`token`, `key`,
    /// `secret`: thousands of hits per MiB of text): its dense DFA may take up to
    /// [`COMMON_DFA_LIMIT`] bytes. A lazy DFA's walk costs a cache from its pool and a
    /// start state at each hit, several times a dense walk of the same bytes, and it
    /// cannot resume after the keyword; the unquoted `secret_assignment` rule's DFA
    /// (counted repetitions: a name, up to three words, a block scalar's indent, the
    /// value) takes about 500 KiB.
    pub fn for_common_keywords(pattern: &str) -> Result<Self, Box<meta::BuildError>> {
        Self::with_dense_limit(pattern, COMMON_DFA_LIMIT)
    }

    fn with_dense_limit(pattern: &str, limit: usize) -> Result<Self, Box<meta::BuildError>> {
        let anchored = format!("^(?:{pattern})");
        let regex = meta::Builder::new()
            .syntax(syntax::Config::new().unicode(false).utf8(false))
            .configure(meta::Config::new().utf8_empty(false))
            .build(&anchored)
            .map_err(Box::new)?;
        let dfa = dense_dfa(pattern, limit);
        let lazy = if dfa.is_none() {
            lazy_dfa(pattern)
        } else {
            None
        };
        Ok(Self {
            regex,
            dfa,
            lazy,
            backtrack: backtracker(&anchored),
        })
    }

    /// The state after walking `prefix` from the start, if the rule has a dense DFA and
    /// no byte of `prefix` leads to a special state (a match, the dead state): a walk
    /// over a window that starts with `prefix` may then begin there (its first
    /// `prefix.len()` steps are this walk, and none of them ends it or records a match).
    pub fn resume_after(&self, prefix: &[u8]) -> Option<Resume> {
        let (dfa, start) = self.dfa.as_ref()?;
        let mut state = *start;
        for &b in prefix {
            state = dfa.next_state(state, b);
            if dfa.is_special_state(state) {
                return None;
            }
        }
        Some(Resume {
            state,
            skip: prefix.len(),
        })
    }

    /// The length of the leftmost-first match at the window's start, if any. `resume`
    /// (from [`Matcher::resume_after`]) must come from a prefix the window starts with.
    pub fn match_len(&self, window: &[u8], resume: Option<Resume>) -> Walked<Option<usize>> {
        match self.walk(window, resume) {
            Walk::Final(m, walked) => Walked { result: m, walked },
            Walk::Ran(m) => Walked {
                result: m,
                walked: window.len(),
            },
            Walk::Lazy => Walked {
                result: self.regex.find(window).map(|m| m.end()),
                walked: window.len(),
            },
        }
    }

    /// The match at the start of `partial`, the first bytes of a longer window, if no
    /// byte after them can change it: Some(result) when the DFA ruled out every longer
    /// match within `partial`, None when it needs more bytes.
    /// Rules without a dense DFA always wait for their whole window, as they did when
    /// the regex crate ran them.
    pub fn decided_in(
        &self,
        partial: &[u8],
        resume: Option<Resume>,
    ) -> Walked<Option<Option<usize>>> {
        if self.dfa.is_none() {
            return Walked {
                result: None,
                walked: 0,
            };
        }
        match self.walk(partial, resume) {
            Walk::Final(m, walked) => Walked {
                result: Some(m),
                walked,
            },
            Walk::Ran(_) | Walk::Lazy => Walked {
                result: None,
                walked: partial.len(),
            },
        }
    }

    fn walk(&self, window: &[u8], resume: Option<Resume>) -> Walk {
        let Some((dfa, start)) = &self.dfa else {
            return self.walk_lazy(window);
        };
        debug_assert!(resume.is_none_or(|r| r.skip <= window.len()));
        let (mut state, skip) = match resume {
            Some(r) if r.skip <= window.len() => (r.state, r.skip),
            _ => (*start, 0),
        };
        let mut matched = None;
        for (i, &b) in window.iter().enumerate().skip(skip) {
            state = dfa.next_state(state, b);
            if dfa.is_special_state(state) {
                // Match states come one byte late: this one ends before byte `i`.
                if dfa.is_match_state(state) {
                    matched = Some(i);
                } else if dfa.is_dead_state(state) {
                    return Walk::Final(matched, i + 1);
                }
            }
        }
        if dfa.is_match_state(dfa.next_eoi_state(state)) {
            return Walk::Ran(Some(window.len()));
        }
        Walk::Ran(matched)
    }

    /// [`Matcher::walk`] through the lazy DFA.
    fn walk_lazy(&self, window: &[u8]) -> Walk {
        let Some((dfa, pool)) = &self.lazy else {
            return Walk::Lazy;
        };
        let mut cache = pool.get();
        let cache = &mut *cache;
        let Ok(mut state) = dfa.start_state(cache, &start::Config::new().anchored(Anchored::Yes))
        else {
            return Walk::Lazy;
        };
        let mut matched = None;
        for (i, &b) in window.iter().enumerate() {
            let Ok(next) = dfa.next_state(cache, state, b) else {
                return Walk::Lazy;
            };
            state = next;
            if state.is_tagged() {
                if state.is_match() {
                    matched = Some(i);
                } else if state.is_dead() {
                    return Walk::Final(matched, i + 1);
                } else if state.is_quit() || state.is_unknown() {
                    return Walk::Lazy;
                }
            }
        }
        match dfa.next_eoi_state(cache, state) {
            Ok(eoi) if eoi.is_match() => Walk::Ran(Some(window.len())),
            Ok(_) => Walk::Ran(matched),
            Err(_) => Walk::Lazy,
        }
    }

    /// The span of capture group `group` (at most [`MAX_GROUP`]) of the match at the
    /// window's start, which `match_len` found `len` bytes long. The search is anchored
    /// and reads the match's bytes alone: the highest-priority match of the window ends
    /// at `len`, so it is the highest-priority one ending there or before, and the
    /// bytes after it are look-around context only (`$` still means the window's end).
    /// A search over the whole window cost a capture engine set up for every byte of
    /// it (the backtracker's visited set), at each of the many near-miss matches of
    /// clean text that a rule's check then rejects.
    pub fn group(&self, window: &[u8], len: usize, group: usize) -> Option<Range<usize>> {
        let mut slots = [None::<NonMaxUsize>; 2 * (MAX_GROUP + 1)];
        let slots = &mut slots[..2 * (group + 1)];
        let input = Input::new(window).span(0..len).anchored(Anchored::Yes);
        // The regex crate would first run its lazy DFA over the span to find the match
        // (`match_len` found it) and then the backtracker over the same span; a one-pass
        // regex it runs its one-pass DFA on at once.
        let direct = self
            .backtrack
            .as_ref()
            .and_then(|(bt, pool)| bt.try_search_slots(&mut pool.get(), &input, slots).ok());
        let found = match direct {
            Some(found) => found,
            None => self.regex.search_slots(&input, slots),
        };
        found?;
        let (start, end) = (slots[2 * group]?, slots[2 * group + 1]?);
        Some(start.get()..end.get())
    }
}

/// A loaded rule's regex as a lazy DFA, walked at a keyword hit to learn where its
/// search can stop (the regex crate does not say), so rows of hits are measured as for
/// built-in rules.
pub(super) struct LazyWalker {
    dfa: Arc<hybrid::dfa::DFA>,
    pool: CachePool,
}

impl LazyWalker {
    /// None if the lazy DFA does not build (the rule then counts whole windows).
    pub fn from_hir(hir: &regex_syntax::hir::Hir) -> Option<Self> {
        let nfa = thompson::Compiler::new()
            .configure(thompson::Config::new().utf8(false))
            .build_from_hir(hir)
            .ok()?;
        let dfa = Arc::new(hybrid::dfa::Builder::new().build_from_nfa(nfa).ok()?);
        let for_pool = Arc::clone(&dfa);
        let create: Box<dyn Fn() -> hybrid::dfa::Cache + Send + Sync> =
            Box::new(move || for_pool.create_cache());
        Some(Self {
            dfa,
            pool: Pool::new(create),
        })
    }

    /// The anchored search at `span.start` of `hay`, as the regex crate runs it (the
    /// bytes around `span` are look-around context): whether it matches, and how many
    /// bytes it reads before it cannot. None if the lazy DFA gives up.
    pub fn probe(&self, hay: &[u8], span: Range<usize>) -> Option<(bool, usize)> {
        let mut cache = self.pool.get();
        let cache = &mut *cache;
        let config = start::Config::new()
            .anchored(Anchored::Yes)
            .look_behind(span.start.checked_sub(1).map(|i| hay[i]));
        let mut state = self.dfa.start_state(cache, &config).ok()?;
        let mut matched = false;
        for (i, &b) in hay[span.clone()].iter().enumerate() {
            state = self.dfa.next_state(cache, state, b).ok()?;
            if state.is_tagged() {
                if state.is_match() {
                    matched = true;
                } else if state.is_dead() {
                    return Some((matched, i + 1));
                } else if state.is_quit() || state.is_unknown() {
                    return None;
                }
            }
        }
        let last = match hay.get(span.end) {
            Some(&b) => self.dfa.next_state(cache, state, b).ok()?,
            None => self.dfa.next_eoi_state(cache, state).ok()?,
        };
        if last.is_quit() || last.is_unknown() {
            return None;
        }
        Some((matched || last.is_match(), span.len()))
    }
}

/// The bounded backtracker of `anchored` (`^(?:pattern)`, built as the regex crate
/// builds it), unless the regex is one-pass (the regex crate then runs its one-pass DFA
/// for captures, which is faster).
fn backtracker(anchored: &str) -> Option<(Arc<backtrack::BoundedBacktracker>, BacktrackPool)> {
    let syntax = syntax::Config::new().unicode(false).utf8(false);
    let nfa = thompson::Compiler::new()
        .syntax(syntax)
        .configure(thompson::Config::new().utf8(false))
        .build(anchored)
        .ok()?;
    if onepass::DFA::new_from_nfa(nfa.clone()).is_ok() {
        return None;
    }
    let bt = Arc::new(backtrack::BoundedBacktracker::new_from_nfa(nfa).ok()?);
    let for_pool = Arc::clone(&bt);
    let create: Box<dyn Fn() -> backtrack::Cache + Send + Sync> =
        Box::new(move || for_pool.create_cache());
    Some((bt, Pool::new(create)))
}

/// The lazy DFA of `pattern`, for anchored walks, and a pool of its caches.
fn lazy_dfa(pattern: &str) -> Option<(Arc<hybrid::dfa::DFA>, CachePool)> {
    let dfa = hybrid::dfa::Builder::new()
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .thompson(thompson::Config::new().utf8(false))
        .build(pattern)
        .ok()?;
    let dfa = Arc::new(dfa);
    let for_pool = Arc::clone(&dfa);
    let create: Box<dyn Fn() -> hybrid::dfa::Cache + Send + Sync> =
        Box::new(move || for_pool.create_cache());
    Some((dfa, Pool::new(create)))
}

/// The anchored dense DFA of `pattern`, if it takes at most `limit` bytes and its start
/// state does not depend on the byte before the window (none of the built-in rules'
/// does).
fn dense_dfa(pattern: &str, limit: usize) -> Option<(dense::DFA<Vec<u32>>, StateID)> {
    let dfa = dense::Builder::new()
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .thompson(thompson::Config::new().utf8(false))
        .configure(
            dense::Config::new()
                .start_kind(StartKind::Anchored)
                .dfa_size_limit(Some(limit))
                .determinize_size_limit(Some(4 * limit)),
        )
        .build(pattern)
        .ok()?;
    let start = dfa.universal_start_state(Anchored::Yes)?;
    Some((dfa, start))
}

#[cfg(test)]
mod tests {
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
        let mut resumed = 0;
        for rule in RULES {
            let m = rule.matcher().expect("rule compiles");
            if m.dfa.is_some() {
                dense += 1;
            }
            assert!(
                m.dfa.is_some() || m.lazy.is_some(),
                "rule {} has no DFA to walk",
                rule.name
            );
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
            let crate_regex = regex::bytes::RegexBuilder::new(&format!("^(?:{})", rule.regex))
                .unicode(false)
                .build()
                .expect("rule compiles");
            for hay in &inputs {
                let want = crate_regex.captures(hay);
                let got = m.match_len(hay, None);
                assert_eq!(
                    got.result,
                    want.as_ref().map(|c| c.get(0).expect("group 0").end()),
                    "rule {}",
                    rule.name
                );
                assert!(got.walked <= hay.len(), "rule {}", rule.name);
                // Resumed past a prefix the hay starts with (a keyword, or its first
                // bytes), the walk ends as and where the walk from the start does,
                // whole or on a cut of the hay.
                let prefixes = rule
                    .keywords
                    .iter()
                    .map(|kw| kw.replace('|', "").into_bytes())
                    .filter(|kw| hay.starts_with(kw))
                    .chain([hay[..hay.len().min(5)].to_vec()]);
                for prefix in prefixes {
                    let Some(resume) = m.resume_after(&prefix) else {
                        continue;
                    };
                    resumed += 1;
                    let again = m.match_len(hay, Some(resume));
                    assert_eq!(
                        (again.result, again.walked),
                        (got.result, got.walked),
                        "rule {} resumed",
                        rule.name
                    );
                    let cut = &hay[..(prefix.len() + 7).min(hay.len())];
                    let (a, b) = (m.decided_in(cut, Some(resume)), m.decided_in(cut, None));
                    assert_eq!(
                        (a.result, a.walked),
                        (b.result, b.walked),
                        "rule {} resumed on a cut",
                        rule.name
                    );
                }
                if let (Some(c), Some(len)) = (&want, got.result) {
                    // The capture search over the match's span alone finds the group
                    // the regex crate finds over the whole window.
                    assert_eq!(
                        m.group(hay, len, rule.group),
                        c.get(rule.group).map(|g| g.range()),
                        "rule {} group {}",
                        rule.name,
                        rule.group
                    );
                }
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
        assert!(
            resumed > 10_000,
            "only {resumed} resumed walks: the inputs miss the keywords"
        );
    }
}
