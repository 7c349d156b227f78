//! Scrubbing a byte stream chunk by chunk.
//!
//! Owns: the bytes held back between chunks. Must never: emit a byte before it knows no
//! token or live secret can still cover it, so a secret split across chunk boundaries
//! (even into 1-byte chunks) is caught exactly as in a whole buffer.
//!
//! The hold-back bound: after each `push`, fewer than `W` input bytes are held, where
//! `W` is the largest of: the window of a keyword hit near the end (its rules' longest
//! match: 16 KiB for `jwt` and `pem_private_key`, 4 KiB for `bearer_token`,
//! `authorization_header` and `google_oauth_token`, at most 1 KiB for every other
//! family), the longest anchor plus the longest keyword offset plus the left
//! boundary's lookback (35 bytes), and the
//! longest form of a registered live value (at most 6 × 4096 bytes; 240 for a
//! 40-byte value; in wrapped base64, its longest base64 form and the line breaks inside
//! it). With no keyword near the end and no live values that is 35 bytes.
//! Tokens longer than their family's window are cut there: the first `W` bytes are
//! redacted, the rest is not (a 16 KiB JWT or PEM key is far beyond real ones).

use std::sync::Arc;

use super::{Redaction, Scrubber, engine::Engine, live::LiveSet, loaded::RuleSet};

/// A stream scrubber from [`Scrubber::stream`]. Feed it with [`push`](Self::push), end it
/// with [`finish`](Self::finish); the concatenated output equals `Scrubber::scrub` of the
/// concatenated input.
pub struct ScrubStream<'a> {
    scrubber: &'a Scrubber,
    engine: Engine,
    /// Input bytes from absolute offset `base` on, not yet released.
    buf: Vec<u8>,
    base: usize,
    /// Taken at each push, so values registered mid-stream apply to the rest of it.
    live: Arc<LiveSet>,
    /// Taken once: a stream runs the loaded rules it started with.
    rules: Arc<RuleSet>,
}

impl<'a> ScrubStream<'a> {
    pub(super) fn new(scrubber: &'a Scrubber) -> Self {
        Self {
            scrubber,
            engine: Engine::default(),
            buf: Vec::new(),
            base: 0,
            live: scrubber.live_snapshot(),
            rules: scrubber.rules_snapshot(),
        }
    }

    /// Scrubs `chunk` and appends to `out` every output byte that is now final.
    ///
    /// Only the bytes the engine still needs are copied: the start of the chunk is fed
    /// through the held buffer until nothing before the chunk is needed (usually one
    /// step: as far as the windows of the hits waiting at the end of the last chunk),
    /// then the rest is scanned in place and its unreleased tail kept.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let families = &self.scrubber.families;
        self.live = self.scrubber.live_snapshot();
        let chunk_base = self.base + self.buf.len();
        let mut taken = 0;
        let mut at_least = 256;
        while self.engine.keep_from(families, &self.rules) < chunk_base && taken < chunk.len() {
            // Enough for what the engine waits on; more each round, as hits deferred
            // in this round may wait on more.
            let wanted = self.engine.wanted_end().saturating_sub(chunk_base + taken);
            let n = wanted.max(at_least).min(chunk.len() - taken);
            at_least *= 4;
            self.buf.extend_from_slice(&chunk[taken..taken + n]);
            taken += n;
            self.engine.advance(
                families,
                &self.rules,
                &self.live,
                &self.buf,
                self.base,
                false,
                out,
            );
            self.release();
        }
        if taken < chunk.len() {
            // Everything still needed lies in the chunk: scan it where it is.
            let from = self.engine.keep_from(families, &self.rules);
            let data = &chunk[from - chunk_base..];
            self.engine
                .advance(families, &self.rules, &self.live, data, from, false, out);
            let keep = self.engine.keep_from(families, &self.rules);
            self.buf.clear();
            self.buf.extend_from_slice(&chunk[keep - chunk_base..]);
            self.base = keep;
        }
    }

    /// Drops held bytes the engine no longer needs.
    fn release(&mut self) {
        let keep = self.engine.keep_from(&self.scrubber.families, &self.rules);
        if keep > self.base {
            self.buf.drain(..keep - self.base);
            self.base = keep;
        }
    }

    /// Bytes received but not yet released (the hold-back).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "tests check the hold-back bound with it")
    )]
    pub fn held(&self) -> usize {
        self.base + self.buf.len() - self.engine.emitted()
    }

    /// Redactions completed so far (offsets are absolute over the whole stream), taken
    /// out so an endless stream does not pile them up.
    pub fn take_redactions(&mut self) -> Vec<Redaction> {
        std::mem::take(&mut self.engine.redactions)
    }

    /// Ends the input: appends the rest of the output to `out` and returns the
    /// redactions not yet taken.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Vec<Redaction> {
        self.live = self.scrubber.live_snapshot();
        self.engine.advance(
            &self.scrubber.families,
            &self.rules,
            &self.live,
            &self.buf,
            self.base,
            true,
            out,
        );
        std::mem::take(&mut self.engine.redactions)
    }
}
