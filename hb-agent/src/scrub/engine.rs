//! The one scanning loop behind whole-buffer and streaming scrubs.
//!
//! Owns: turning keyword and live-secret hits into redaction spans, merging overlapping
//! spans, and writing the output up to the point where nothing later can change it.
//! Must never: emit a byte that a span not yet decided could still cover.
//!
//! Positions are absolute input offsets. A hit at `p` is *decided* once the engine holds
//! its whole window (`p + window` bytes), or the input has ended, or earlier when its
//! rules' DFAs die before the bytes held end (most near misses); every span starts at or
//! after its keyword, which starts at most `max_offset` bytes before the anchor that was
//! found. So with `B = min(next undecided anchor hit - max_offset, next undecided live
//! hit)` every byte before `B` is final, except inside a span that reaches past `B`, whose
//! marker is written at its start and whose bytes are swallowed as they come. A whole
//! buffer is the same loop run once with `finished`, so streaming output equals
//! whole-buffer output for every chunking by construction (and by test).
//!
//! Loaded rules (`loaded`) add their own bound: spans start inside a rule's region, and a
//! region starts at most the largest window before its keyword hit, so nothing before
//! `min(open regions' starts, next undecided keyword - largest window)` can change.

use super::{
    Redaction,
    families::{Effort, Families, Found, RULES},
    live::LiveSet,
    loaded::{LoadedFound, LoadedState, RuleSet},
    wrapped::{self, Wrapped, WrappedFound},
};

/// A decided span, not yet written.
#[derive(Clone, Copy)]
struct Candidate {
    start: usize,
    end: usize,
    family: &'static str,
    /// Lower wins a tie (same start, same end): live secrets 0, then table order.
    rank: usize,
}

/// A span whose marker is written and whose end may still grow.
struct Open {
    start: usize,
    end: usize,
    family: &'static str,
    output_offset: usize,
}

#[derive(Default)]
pub(super) struct Engine {
    /// Per anchor pass: every hit starting before this is decided.
    family_pos: Vec<usize>,
    /// Every live hit starting before this is decided.
    live_pos: usize,
    /// Input bytes before this are written (or swallowed by a span).
    emit_pos: usize,
    /// Output bytes written so far.
    output_len: usize,
    candidates: Vec<Candidate>,
    open: Option<Open>,
    found: Vec<Found>,
    /// Rows of overlapping hits per rule, and the work done (see [`Effort`]).
    effort: Effort,
    /// Keyword hits and regions of loaded rules.
    loaded: LoadedState,
    loaded_found: Vec<LoadedFound>,
    /// Live forms across the line breaks of wrapped base64.
    wrapped: Wrapped,
    wrapped_found: Vec<WrappedFound>,
    /// After `advance`: the input end that would let the engine decide everything it
    /// is waiting on now (the windows of deferred hits).
    wanted_end: usize,
    pub redactions: Vec<Redaction>,
}

/// Bytes before a keyword its rules read: the left boundary check looks through escapes
/// of up to 6 bytes (`\\uXXXX`, see `families::left_boundary`), the assignment checks
/// read the identifier the keyword ends (`PublicKey`, see `assigned::credential`), the
/// break check of wrapped base64 the end of the line before (`wrapped::LOOKBACK`).
pub const LOOKBACK: usize = 24;
const _: () = assert!(wrapped::LOOKBACK <= LOOKBACK);

impl Engine {
    /// The first input byte the engine still needs ([`LOOKBACK`] before `emit_pos`, for
    /// the left boundary check of a hit right there).
    pub fn keep_from(&self, families: &Families, rules: &RuleSet) -> usize {
        self.emit_pos
            .min(self.family_settled(families))
            .min(self.live_pos)
            .min(self.wrapped.pos())
            .min(self.loaded.settled(rules))
            .saturating_sub(LOOKBACK)
    }

    /// How far the input must reach for the hits deferred by the last `advance` to be
    /// decided (0 if none was deferred).
    pub fn wanted_end(&self) -> usize {
        self.wanted_end
    }

    /// Bytes examined by rule evaluation so far (built-in and loaded rules).
    #[cfg(test)]
    pub fn work(&self) -> u64 {
        self.effort.work + self.loaded.work()
    }

    /// Input bytes written (or swallowed by a span) so far.
    pub fn emitted(&self) -> usize {
        self.emit_pos
    }

    /// Scans `data` (input bytes `[base, base + data.len())`, holding at least everything
    /// from `keep_from()`) and writes what is final to `out`. With `finished`, `data`
    /// reaches the end of input and everything is written.
    #[expect(
        clippy::too_many_arguments,
        reason = "the three matchers and the input"
    )]
    pub fn advance(
        &mut self,
        families: &Families,
        rules: &RuleSet,
        live: &LiveSet,
        data: &[u8],
        base: usize,
        finished: bool,
        out: &mut Vec<u8>,
    ) {
        debug_assert!(base <= self.keep_from(families, rules));
        let end = base + data.len();
        self.wanted_end = 0;
        self.scan_families(families, data, base, end, finished);
        self.scan_loaded(rules, data, base, finished);
        self.scan_live(live, data, base, end, finished);
        self.scan_wrapped(live, data, base, finished);
        self.candidates
            .sort_unstable_by_key(|c| (c.start, std::cmp::Reverse(c.end), c.rank));
        let settled = if finished {
            end
        } else {
            // A keyword (and so a span) starts up to `max_offset` before its anchor.
            self.family_settled(families)
                .min(self.live_pos)
                .min(self.wrapped.pos())
                .min(self.loaded.settled(rules))
                .min(end)
        };
        self.emit(data, base, settled, out);
    }

    fn scan_families(
        &mut self,
        families: &Families,
        data: &[u8],
        base: usize,
        end: usize,
        finished: bool,
    ) {
        self.family_pos.resize(families.passes(), 0);
        for pass in 0..families.passes() {
            self.scan_pass(families, pass, data, base, end, finished);
        }
    }

    /// Where spans from undecided anchor hits may start: keywords start up to
    /// `max_offset` before their anchor.
    fn family_settled(&self, families: &Families) -> usize {
        self.family_pos
            .iter()
            .min()
            .copied()
            .unwrap_or(0)
            .saturating_sub(families.max_offset())
    }

    fn scan_pass(
        &mut self,
        families: &Families,
        pass: usize,
        data: &[u8],
        base: usize,
        end: usize,
        finished: bool,
    ) {
        let mut pos = self.family_pos[pass];
        loop {
            if pos >= end {
                break;
            }
            match families.next_hit(pass, data, pos - base) {
                None => {
                    // An anchor starting earlier would be whole in `data` and found.
                    let whole = end.saturating_sub(families.longest_anchor() - 1);
                    pos = if finished { end } else { pos.max(whole) };
                    break;
                }
                Some((at, anchor)) => {
                    let p = base + at;
                    // A longer anchor may start here once more bytes come (`shpat_`
                    // where `sh` is all there is yet): the longest one decides which
                    // rules run, so wait until every anchor starting here would be
                    // whole.
                    if !finished && p + families.longest_anchor() > end {
                        self.wanted_end = self.wanted_end.max(p + families.longest_anchor());
                        pos = p;
                        break;
                    }
                    // Near the end of what is held, a hit is decided early if its rules
                    // fail (or end) before the held bytes do; otherwise it waits.
                    let partial = !finished && p + families.reach(anchor) > end;
                    self.found.clear();
                    if !families.eval_hit(
                        data,
                        base,
                        at,
                        anchor,
                        pass,
                        partial,
                        &mut self.effort,
                        &mut self.found,
                    ) {
                        self.wanted_end = self.wanted_end.max(p + families.reach(anchor));
                        pos = p;
                        break;
                    }
                    for f in &self.found {
                        self.candidates.push(Candidate {
                            start: f.start,
                            end: f.end,
                            family: RULES[f.rule].name,
                            rank: 1 + f.rule,
                        });
                    }
                    pos = p + 1;
                }
            }
        }
        self.family_pos[pass] = pos;
    }

    fn scan_loaded(&mut self, rules: &RuleSet, data: &[u8], base: usize, finished: bool) {
        if rules.is_empty() {
            return;
        }
        self.loaded_found.clear();
        let wanted = self
            .loaded
            .scan(rules, data, base, finished, &mut self.loaded_found);
        self.wanted_end = self.wanted_end.max(wanted);
        for f in &self.loaded_found {
            self.candidates.push(Candidate {
                start: f.start,
                end: f.end,
                family: f.name,
                // After every built-in rule: a built-in family names a tie.
                rank: 1 + RULES.len() + f.rule,
            });
        }
    }

    fn scan_live(&mut self, live: &LiveSet, data: &[u8], base: usize, end: usize, finished: bool) {
        let mut pos = self.live_pos.max(base);
        loop {
            if pos >= end {
                break;
            }
            match live.next_hit(data, pos - base) {
                None => {
                    let whole = end.saturating_sub(live.longest().saturating_sub(1));
                    pos = if finished { end } else { pos.max(whole) };
                    break;
                }
                Some((start, stop, label)) => {
                    let p = base + start;
                    // The longest form starting at `p` may not be whole yet.
                    if !finished && p + live.longest() > end {
                        self.wanted_end = self.wanted_end.max(p + live.longest());
                        pos = p;
                        break;
                    }
                    self.candidates.push(Candidate {
                        start: p,
                        end: base + stop,
                        family: label,
                        rank: 0,
                    });
                    // Restart one byte on, not at the end: forms may overlap.
                    pos = p + 1;
                }
            }
        }
        self.live_pos = pos;
    }

    /// Live forms that a line break of wrapped base64 cuts in two (or more).
    fn scan_wrapped(&mut self, live: &LiveSet, data: &[u8], base: usize, finished: bool) {
        self.wrapped_found.clear();
        let wanted = self
            .wrapped
            .scan(live, data, base, finished, &mut self.wrapped_found);
        self.wanted_end = self.wanted_end.max(wanted);
        for f in &self.wrapped_found {
            self.candidates.push(Candidate {
                start: f.start,
                end: f.end,
                family: f.label,
                rank: 0,
            });
        }
    }

    /// Writes input up to `settled`, replacing spans with markers.
    fn emit(&mut self, data: &[u8], base: usize, settled: usize, out: &mut Vec<u8>) {
        let mut used = 0;
        loop {
            if let Some(open) = &mut self.open {
                // Union with every decided span that starts inside this one.
                while let Some(c) = self.candidates.get(used) {
                    if c.start >= open.end {
                        break;
                    }
                    open.end = open.end.max(c.end);
                    used += 1;
                }
                if open.end > settled {
                    // A span starting at `settled` or later may still join it.
                    self.emit_pos = self.emit_pos.max(settled);
                    break;
                }
                self.emit_pos = open.end;
                self.redactions.push(Redaction {
                    family: open.family,
                    offset: open.start,
                    len: open.end - open.start,
                    output_offset: open.output_offset,
                });
                self.open = None;
                continue;
            }
            match self.candidates.get(used) {
                Some(c) if c.start < settled => {
                    debug_assert!(c.start >= self.emit_pos);
                    let c = *c;
                    used += 1;
                    self.copy(data, base, c.start, out);
                    let output_offset = self.output_len;
                    let marker_len = out.len();
                    out.extend_from_slice(b"[REDACTED:");
                    out.extend_from_slice(c.family.as_bytes());
                    out.push(b']');
                    self.output_len += out.len() - marker_len;
                    self.open = Some(Open {
                        start: c.start,
                        end: c.end,
                        family: c.family,
                        output_offset,
                    });
                }
                _ => {
                    self.copy(data, base, settled, out);
                    break;
                }
            }
        }
        self.candidates.drain(..used);
    }

    fn copy(&mut self, data: &[u8], base: usize, to: usize, out: &mut Vec<u8>) {
        if to > self.emit_pos {
            out.extend_from_slice(&data[self.emit_pos - base..to - base]);
            self.output_len += to - self.emit_pos;
            self.emit_pos = to;
        }
    }
}
