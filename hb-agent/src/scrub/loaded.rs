//! Running loaded rules (gitleaks-format files) at their keyword hits.
//!
//! Owns: the keyword search of loaded rules and the *regions* their regexes run in.
//! Must never: run a loaded regex outside a region, or let a region's result depend on
//! how the input was chunked (stream and whole-buffer scrubs must agree byte for byte).
//!
//! gitleaks runs a rule's regex over a whole file once one of its keywords appears in it,
//! and its keywords may sit anywhere in a match (`api_key = …` is found through `key`). A
//! stream has no whole file, so hb runs the regex around each keyword hit instead: a hit
//! of a keyword of length `k` at `p` gives rule `r` the window `[p - W, p + k + W)`,
//! where `W` is the longest match of `r`'s regex (an open repetition counting as
//! [`OPEN_REPEAT`] repeats, at most [`MAX_WINDOW`]): every match of `r` that touches the
//! keyword lies inside. Windows of one rule that overlap are merged into one region (up
//! to [`MAX_REGION`] bytes) and the regex runs once over it, so text full of `key` and
//! `token` is searched once per rule, not once per hit. A region is a function of the
//! hits alone, and the search sees one byte of context on each side of it (for `\b`,
//! `^`, `$`), so the result does not depend on chunk boundaries. A regex that is a short
//! lead and a tail starting with literals (`[\w.-]{0,50}?(?:key|token|…)…`) is searched
//! over its region from those literals' hits instead of byte by byte, with the same
//! matches (`inner`).
//!
//! Most rules' matches start with a keyword (`glpat-…`, `xoxb-…`; proved from the
//! regex's literal prefixes at load): those run *anchored* at each hit instead, and a near
//! miss costs a few bytes of DFA. A match found from a keyword hit inside another match
//! of the same rule is a sub-span of it and merges. The keywords themselves are found by
//! the anchor scan of the built-in families (`scan`), with case folded.
//!
//! Each match then goes through gitleaks's steps: trim `\n`, pick the secret (the
//! `secretGroup`, else the first non-empty group of the match matched alone), the entropy
//! floor, the file's global allowlists and the rule's. The redacted span is the secret.

use regex_automata::{Input, util::captures::Captures};

use super::families::Chain;
use super::rules_file::MAX_WINDOW;
use super::{
    rules_file::{self, Allowlist, Compiled, FileReport, LoadedRule, RulesError},
    scan::{AnchorScan, ScanKind},
};

/// Merged windows stop growing here (a new region starts at the next hit); it bounds
/// what a stream holds back for loaded rules.
pub const MAX_REGION: usize = 4 * MAX_WINDOW;

/// Loaded rule files, compiled. Empty: no rules, no cost.
pub struct RuleSet {
    rules: Vec<LoadedRule>,
    globals: Vec<Vec<Allowlist>>,
    reports: Vec<FileReport>,
    /// The keywords, matched in either case: the scan reports the longest at each
    /// position.
    keywords: Option<AnchorScan>,
    keyword_len: Vec<usize>,
    /// Per keyword: the rules it triggers, its own and those of every keyword that is a
    /// prefix of it (found at the same position, they are not reported apart).
    keyword_rules: Vec<Vec<usize>>,
    longest_keyword: usize,
    /// The largest window: a region starts at most this far before its hit.
    max_window: usize,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field(
                "files",
                &self.reports.iter().map(|r| &r.path).collect::<Vec<_>>(),
            )
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl Default for RuleSet {
    fn default() -> Self {
        Self::build(Compiled {
            rules: Vec::new(),
            globals: Vec::new(),
            reports: Vec::new(),
        })
    }
}

/// A loaded rule as `--list-families` shows it.
#[derive(Debug, serde::Serialize)]
pub struct LoadedInfo {
    pub name: &'static str,
    pub id: String,
    pub about: String,
    pub file: std::path::PathBuf,
}

impl RuleSet {
    /// Reads and compiles rule files. Unrunnable rules are in [`RuleSet::reports`].
    pub fn load(paths: &[std::path::PathBuf]) -> Result<Self, RulesError> {
        Self::load_each(paths).map_err(|(_, e)| e)
    }

    /// As [`RuleSet::load`], and on error the index of the file at fault.
    pub fn load_each(paths: &[std::path::PathBuf]) -> Result<Self, (usize, RulesError)> {
        Ok(Self::build(rules_file::compile_files(paths)?))
    }

    #[cfg(test)]
    pub(super) fn from_text(text: &str) -> Result<Self, RulesError> {
        let mut c = Compiled {
            rules: Vec::new(),
            globals: Vec::new(),
            reports: Vec::new(),
        };
        rules_file::compile_text(text, std::path::Path::new("test.toml"), &mut c)?;
        Ok(Self::build(c))
    }

    fn build(c: Compiled) -> Self {
        let mut words: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        for (r, rule) in c.rules.iter().enumerate() {
            for k in &rule.keywords {
                let i = match words.iter().position(|w| w == k) {
                    Some(i) => i,
                    None => {
                        words.push(k.clone());
                        keyword_rules.push(Vec::new());
                        words.len() - 1
                    }
                };
                if !keyword_rules[i].contains(&r) {
                    keyword_rules[i].push(r);
                }
            }
        }
        let own = keyword_rules.clone();
        for (i, w) in words.iter().enumerate() {
            for (j, shorter) in words.iter().enumerate() {
                if j != i && w.as_bytes().starts_with(shorter.as_bytes()) {
                    for &r in &own[j] {
                        if !keyword_rules[i].contains(&r) {
                            keyword_rules[i].push(r);
                        }
                    }
                }
            }
        }
        let keywords = (!words.is_empty()).then(|| {
            let anchors: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
            AnchorScan::folded(&anchors, ScanKind::Best)
        });
        Self {
            keyword_len: words.iter().map(String::len).collect(),
            longest_keyword: words.iter().map(String::len).max().unwrap_or(1),
            max_window: c.rules.iter().map(|r| r.window).max().unwrap_or(0),
            keywords,
            keyword_rules,
            rules: c.rules,
            globals: c.globals,
            reports: c.reports,
        }
    }

    /// Every keyword of the loaded rules (lower case).
    #[cfg(test)]
    pub(super) fn keywords(&self) -> Vec<String> {
        let mut words: Vec<String> = self
            .rules
            .iter()
            .flat_map(|r| r.keywords.iter().cloned())
            .collect();
        words.sort();
        words.dedup();
        words
    }

    /// What each file held: runnable rules, and the reason for each other one.
    pub fn reports(&self) -> &[FileReport] {
        &self.reports
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn infos(&self) -> Vec<LoadedInfo> {
        self.rules
            .iter()
            .map(|r| LoadedInfo {
                name: r.name,
                id: r.id.clone(),
                about: r.description.clone(),
                file: self.reports[r.file].path.clone(),
            })
            .collect()
    }
}

/// A rule's merged windows, in absolute input offsets.
#[derive(Clone, Copy)]
struct Region {
    start: usize,
    end: usize,
}

/// A span a loaded rule wants redacted.
pub(super) struct LoadedFound {
    pub start: usize,
    pub end: usize,
    pub rule: usize,
    pub name: &'static str,
}

/// Per scrub (or stream): how far the keyword search has gone and each rule's open region.
#[derive(Default)]
pub(super) struct LoadedState {
    /// Every keyword hit starting before this has been given to its rules.
    pos: usize,
    regions: Vec<Option<Region>>,
    /// The input end the last scan stopped for (a region to search before the next
    /// opens): until the input reaches it, a scan has nothing new to do.
    waiting_for: usize,
    /// Per anchored rule: the row of its hits that start inside what the ones before
    /// read (`families::Effort`, as for built-in rules).
    rows: Vec<Chain>,
    /// Bytes given to loaded regexes (windows and regions searched).
    work: u64,
    /// Per rule: where its capture groups are searched (made at its first match).
    captures: Vec<Option<Captures>>,
}

impl LoadedState {
    /// Bytes given to loaded regexes so far.
    #[cfg(test)]
    pub fn work(&self) -> u64 {
        self.work
    }

    /// Input before this is final as far as loaded rules go (`usize::MAX` without any).
    pub fn settled(&self, set: &RuleSet) -> usize {
        if set.is_empty() {
            return usize::MAX;
        }
        self.regions
            .iter()
            .flatten()
            .map(|r| r.start)
            .fold(self.pos.saturating_sub(set.max_window), usize::min)
    }

    /// Finds keyword hits in `data` (input `[base, end)`), grows regions and searches
    /// those that are complete. Needs `data` to hold from `settled() - 1` on. Returns the
    /// input end it waits for to go on (0 if none).
    pub fn scan(
        &mut self,
        set: &RuleSet,
        data: &[u8],
        base: usize,
        finished: bool,
        found: &mut Vec<LoadedFound>,
    ) -> usize {
        let Some(ac) = &set.keywords else {
            return 0;
        };
        let end = base + data.len();
        if !finished && end < self.waiting_for {
            return self.waiting_for;
        }
        self.regions.resize(set.rules.len(), None);
        self.rows.resize(set.rules.len(), Chain::default());
        // Keywords starting before `limit` lie wholly in `data`.
        let limit = if finished {
            end
        } else {
            end.saturating_sub(set.longest_keyword - 1)
        };
        let mut wanted = 0;
        if limit > self.pos {
            let mut next = limit;
            let mut at = self.pos.max(base) - base;
            'hits: while let Some((hit, k)) = ac.next_hit(0, data, at) {
                let p = base + hit;
                if p >= limit {
                    break;
                }
                at = hit + 1;
                // Everything this hit needs must be held before any of its rules runs
                // (a hit run twice would find its anchored matches twice).
                if !finished {
                    for &r in &set.keyword_rules[k] {
                        let need = self.needs(set, r, p, k);
                        if need > end {
                            wanted = need;
                            next = p;
                            break 'hits;
                        }
                    }
                }
                for &r in &set.keyword_rules[k] {
                    let rule = &set.rules[r];
                    if rule.anchored {
                        self.search_at(set, r, p, data, base, end, found);
                        continue;
                    }
                    let w = rule.window;
                    let window = Region {
                        start: p.saturating_sub(w),
                        end: p + set.keyword_len[k] + w,
                    };
                    match self.regions[r] {
                        Some(mut open) if extends(open, window) => {
                            open.end = open.end.max(window.end);
                            self.regions[r] = Some(open);
                        }
                        Some(open) => {
                            self.search(set, r, open, data, base, end, found);
                            self.regions[r] = Some(window);
                        }
                        None => self.regions[r] = Some(window),
                    }
                }
            }
            self.pos = next;
        }
        self.waiting_for = wanted;
        // Search the regions no later hit can reach.
        for r in 0..self.regions.len() {
            let Some(open) = self.regions[r] else {
                continue;
            };
            let closed = self.pos.saturating_sub(set.rules[r].window) > open.end;
            if finished || (closed && open.end < end) {
                self.search(set, r, open, data, base, end, found);
                self.regions[r] = None;
            }
        }
        wanted
    }

    /// The input end rule `r` needs to handle keyword `k`'s hit at `p` (0: none).
    fn needs(&self, set: &RuleSet, r: usize, p: usize, k: usize) -> usize {
        let rule = &set.rules[r];
        if rule.anchored {
            // The window and a byte of context after it.
            return p + rule.window + 1;
        }
        let window = Region {
            start: p.saturating_sub(rule.window),
            end: p + set.keyword_len[k] + rule.window,
        };
        match self.regions[r] {
            // The open region is searched before the next one opens.
            Some(open) if !extends(open, window) => open.end + 1,
            _ => 0,
        }
    }

    /// Runs anchored rule `r` at its keyword hit `p` and keeps what it finds.
    #[expect(
        clippy::too_many_arguments,
        reason = "the engine's state, passed apart"
    )]
    fn search_at(
        &mut self,
        set: &RuleSet,
        r: usize,
        p: usize,
        data: &[u8],
        base: usize,
        end: usize,
        found: &mut Vec<LoadedFound>,
    ) {
        let rule = &set.rules[r];
        let stop = (p + rule.window).min(end);
        // A hit joining a row of hits that spent its budget: the window goes whole,
        // unsearched (fail closed; see `families::Effort`).
        let row = self.rows[r];
        if row.holds(p) && row.spent() {
            self.work += 1;
            self.rows[r] = row.after(p, 0, stop);
            if p < stop {
                found.push(LoadedFound {
                    start: p,
                    end: stop,
                    rule: r,
                    name: rule.name,
                });
            }
            return;
        }
        let from = p.saturating_sub(1);
        let to = (stop + 1).min(end);
        debug_assert!(from >= base, "the engine keeps a hit's bytes");
        let hay = &data[from - base..to - base];
        // How far the search reads (the lazy DFA walked first; the regex crate does not
        // say), and whether it can match at all.
        let (matches, read) = rule
            .walker
            .as_ref()
            .and_then(|w| w.probe(hay, p - from..stop - from))
            .unwrap_or((true, stop - p));
        self.work += read as u64;
        self.rows[r] = row.after(p, read, p + read);
        if !matches {
            return;
        }
        let input = Input::new(hay)
            .span(p - from..stop - from)
            .anchored(regex_automata::Anchored::Yes);
        if let Some(m) = rule.regex.search(&input) {
            self.work += m.len() as u64;
            self.keep(set, r, hay, from, m.start(), m.end(), found);
        }
    }

    /// Runs rule `r` over `region` and keeps its findings.
    #[expect(
        clippy::too_many_arguments,
        reason = "the engine's state, passed apart"
    )]
    fn search(
        &mut self,
        set: &RuleSet,
        r: usize,
        region: Region,
        data: &[u8],
        base: usize,
        end: usize,
        found: &mut Vec<LoadedFound>,
    ) {
        let rule = &set.rules[r];
        let stop = region.end.min(end);
        if region.start >= stop {
            return;
        }
        // One byte of context on each side, for `\b`, `^` and `$`.
        let from = region.start.saturating_sub(1);
        let to = (stop + 1).min(end);
        debug_assert!(from >= base, "the engine keeps a region's bytes");
        let hay = &data[from - base..to - base];
        self.work += (stop - region.start) as u64;
        let span = region.start - from..stop - from;
        if let Some(inner) = &rule.inner {
            for m in inner.find_iter(&rule.regex, hay, span) {
                self.work += m.len() as u64;
                self.keep(set, r, hay, from, m.start(), m.end(), found);
            }
        } else {
            for m in rule.regex.find_iter(Input::new(hay).span(span)) {
                self.work += m.len() as u64;
                self.keep(set, r, hay, from, m.start(), m.end(), found);
            }
        }
    }

    /// A match of rule `r` at `[start, end)` of `hay` (which starts at input offset
    /// `from`): its secret, if it passes the entropy floor and no allowlist allows it.
    #[expect(
        clippy::too_many_arguments,
        reason = "the engine's state, passed apart"
    )]
    fn keep(
        &mut self,
        set: &RuleSet,
        r: usize,
        hay: &[u8],
        from: usize,
        start: usize,
        end: usize,
        found: &mut Vec<LoadedFound>,
    ) {
        let rule = &set.rules[r];
        if self.captures.len() < set.rules.len() {
            self.captures.resize_with(set.rules.len(), || None);
        }
        let caps = self.captures[r].get_or_insert_with(|| rule.regex.create_captures());
        let Some((s, e)) = secret_of(rule, hay, start, end, caps) else {
            return;
        };
        let line = line_of(hay, start, end);
        let matched = trim_newlines(&hay[start..end]);
        let secret = &hay[s..e];
        let allowed = set.globals[rule.file]
            .iter()
            .chain(&rule.allowlists)
            .any(|a| a.allows(secret, matched, line));
        if !allowed {
            found.push(LoadedFound {
                start: from + s,
                end: from + e,
                rule: r,
                name: rule.name,
            });
        }
    }
}

/// Whether `window` joins the open region (overlaps or touches it, and the union stays
/// within [`MAX_REGION`]).
fn extends(open: Region, window: Region) -> bool {
    window.start <= open.end && window.end.max(open.end) - open.start <= MAX_REGION
}

/// The secret of a match at `[start, end)` of `hay`, as gitleaks picks it, if it passes
/// the entropy floor: `\n` trimmed from both ends; then, if the regex has groups, it is
/// matched again on that text alone and the secret is `secretGroup` (or, without one, the
/// first non-empty group).
fn secret_of(
    rule: &LoadedRule,
    hay: &[u8],
    start: usize,
    end: usize,
    caps: &mut Captures,
) -> Option<(usize, usize)> {
    let text = &hay[start..end];
    let lead = text.iter().take_while(|&&b| b == b'\n').count();
    let text = trim_newlines(text);
    let at = start + lead;
    let mut span = (at, at + text.len());
    if rule
        .regex
        .group_info()
        .group_len(regex_automata::PatternID::ZERO)
        > 1
    {
        rule.regex.search_captures(&Input::new(text), caps);
        if caps.is_match() {
            let group = if rule.secret_group > 0 {
                // A group that did not take part is an empty secret.
                Some(
                    caps.get_group(rule.secret_group)
                        .map_or(0..0, |g| g.range()),
                )
            } else {
                (1..caps.group_len())
                    .filter_map(|g| caps.get_group(g))
                    .find(|g| !g.is_empty())
                    .map(|g| g.range())
            };
            if let Some(g) = group {
                span = (at + g.start, at + g.end);
            }
        }
    }
    let secret = &hay[span.0..span.1];
    if rule.entropy != 0.0 && rules_file::gitleaks_entropy(secret) <= rule.entropy {
        return None;
    }
    (span.0 < span.1).then_some(span)
}

fn trim_newlines(s: &[u8]) -> &[u8] {
    let a = s.iter().take_while(|&&b| b == b'\n').count();
    let b = s[a..].iter().rev().take_while(|&&b| b == b'\n').count();
    &s[a..s.len() - b]
}

/// The lines holding `[start, end)`, within `hay` (a region and its context).
fn line_of(hay: &[u8], start: usize, end: usize) -> &[u8] {
    let from = hay[..start]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let to = hay[end..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(hay.len(), |i| end + i);
    &hay[from..to]
}
