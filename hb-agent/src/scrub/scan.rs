//! The anchor scan: where in the input any keyword anchor starts.
//!
//! Owns: the passes over the input that find anchor candidates, and their verification.
//! Must never: miss an anchor that lies wholly in the haystack (a missed anchor is a
//! secret that leaves unredacted), or report one that is not there.
//!
//! Two implementations, one contract ([`AnchorScan::next_hit`]: the first position at or
//! after `from` where an anchor starts, and the longest anchor there):
//! - **Fingerprint** (x86-64 with AVX-512 VBMI): one pass, 64 positions per step. For
//!   each of the first four bytes of an anchor, a 128-entry table gives the set of
//!   *buckets* (16 groups of anchors, placed to let little text through; two tables of
//!   8 bucket bits) that allow that byte there; a position is a candidate when the four
//!   sets, looked up with `vpermi2b`, share a bucket. Candidates are verified against the anchors whose
//!   first three bytes hash as theirs ([`Index`]).
//!   This is Teddy with byte-exact tables instead of nibble-split ones: Teddy's nibble
//!   fingerprints blur when a bucket holds several anchors, so with our 49 anchors it
//!   needs three passes, which took about half of a scrub of the clean benchmark
//!   corpus; the one fingerprint pass, verification included, takes about a quarter of
//!   a scrub that is itself twice as fast (`perf`, same machine, same input).
//!   `aho-corasick` has no AVX-512 path, hence this one.
//! - **Packed** (everywhere else): `aho-corasick`'s packed searchers (Teddy on SSSE3 or
//!   AVX2, Rabin-Karp otherwise), anchors split into passes by [`group_anchors`], for
//!   anchor sets that fit in [`MAX_PACKED_PASSES`] passes; larger sets (the families'
//!   ~320 anchors) and case-folded ones go through `aho-corasick`'s leftmost-longest DFA
//!   in one pass ([`Imp::Automaton`]).
//!
//! A test runs both over the same inputs and requires the same hits.

use aho_corasick::packed;

/// Finds anchors. Anchor indices are positions in the slice it was built from.
pub(super) struct AnchorScan {
    imp: Imp,
    /// ASCII letters match in either case (anchors are stored lower-case).
    fold: bool,
    /// The anchors by their first bytes, to verify the fingerprint's candidates.
    index: Index,
    anchors: Vec<Vec<u8>>,
}

/// Anchors by their first three bytes (lower-cased when folding). Many anchors make the
/// fingerprint pass a good share of positions of text (the clean benchmark corpus:
/// about 51,000 candidates per MiB for 10,775 anchors found); a candidate costs one hash of
/// its first three bytes and the look-up of the few anchors with that hash. Bit sets of
/// anchor starts (2 and 3 bytes) and then the list of every anchor with the candidate's
/// first byte cost a third of a clean scrub (`perf`); this look-up made the clean
/// benchmark 12-16 % faster, built-in and with gitleaks's file (CPU time, alternating
/// runs).
struct Index {
    /// Per hash of three bytes: the range in `long` of the anchors of three or more
    /// bytes whose first three hash there, longest first (the first that matches is the
    /// longest at its position). About four slots per anchor, so most hold none or one.
    slots: Vec<(u32, u32)>,
    /// The hash's top bits taken: `slots.len()` is `1 << (32 - shift)`.
    shift: u32,
    long: Vec<Prefix>,
    /// Anchors of one or two bytes by first byte, longest first: tried where no longer
    /// one matches.
    short: Vec<Vec<Prefix>>,
    /// Whether there is any.
    has_short: bool,
}

/// Most hash slots of an [`Index`] (a power of two).
const MAX_SLOTS: usize = 4096;

/// An anchor's first 8 bytes as a word, to verify a candidate with one load and compare
/// instead of a `memcmp` call (which cost more than the whole vector pass).
#[derive(Clone, Copy)]
struct Prefix {
    anchor: usize,
    word: u64,
    mask: u64,
    /// 0x20 in each byte where the anchor has a lower-case letter, when folding: OR-ed
    /// into the input word, it makes both cases of that letter equal the anchor's.
    fold: u64,
    len: usize,
}

enum Imp {
    #[cfg(target_arch = "x86_64")]
    Fingerprint(Box<fingerprint::Tables>),
    Packed(Vec<Pass>),
    /// Without the fingerprint (no AVX-512 VBMI, or non-ASCII anchors), anchors that
    /// are case-insensitive or too many for [`MAX_PACKED_PASSES`] packed passes:
    /// `aho-corasick`'s leftmost-longest DFA, which answers the same question (the first
    /// position, the longest anchor there) in one pass. The families' 318 anchors took 17
    /// Teddy passes, two thirds of a clean scrub's instructions (callgrind, where the
    /// fingerprint does not run); the DFA reads each byte once.
    Automaton(aho_corasick::AhoCorasick),
}

/// Most passes of packed searchers an anchor set is split into; past that, one pass of
/// [`Imp::Automaton`]. Teddy reads the whole input once per pass (about 1.5 instructions
/// per byte each, callgrind, before its candidates are verified); three passes are what
/// the 49 anchors this was first measured with took.
const MAX_PACKED_PASSES: usize = 3;

/// [`Index`]'s slot of an anchor's (or a candidate's) first three bytes.
#[inline]
fn slot(a: u8, b: u8, c: u8, shift: u32) -> usize {
    let x = u32::from(a) | u32::from(b) << 8 | u32::from(c) << 16;
    (x.wrapping_mul(0x9E37_79B1) >> shift) as usize
}

impl Index {
    fn new(prefixes: Vec<Prefix>, anchors: &[&[u8]]) -> Self {
        let n = (4 * anchors.len()).next_power_of_two().clamp(64, MAX_SLOTS);
        let shift = 32 - n.trailing_zeros();
        let mut long: Vec<(usize, Prefix)> = Vec::new();
        let mut short: Vec<Vec<Prefix>> = vec![Vec::new(); 256];
        for p in prefixes {
            match anchors[p.anchor] {
                &[a, b, c, ..] => long.push((slot(a, b, c, shift), p)),
                a => short[usize::from(a[0])].push(p),
            }
        }
        long.sort_by_key(|(slot, p)| (*slot, std::cmp::Reverse(p.len)));
        let mut slots = vec![(0u32, 0u32); n];
        for (i, &(slot, _)) in long.iter().enumerate() {
            // A rules file's keywords are its anchors: no count of them may panic.
            let i = u32::try_from(i).unwrap_or(u32::MAX - 1);
            let range = &mut slots[slot];
            if range.0 == range.1 {
                range.0 = i;
            }
            range.1 = i + 1;
        }
        for list in &mut short {
            list.sort_by_key(|p| std::cmp::Reverse(p.len));
        }
        Self {
            slots,
            shift,
            long: long.into_iter().map(|(_, p)| p).collect(),
            has_short: short.iter().any(|l| !l.is_empty()),
            short,
        }
    }
}

/// Which implementation to build.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum ScanKind {
    /// The fastest this CPU runs.
    Best,
    /// The portable one (tests compare the two).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "tests compare it with the best")
    )]
    Packed,
}

/// One pass of the packed implementation over a group of anchors.
struct Pass {
    searcher: packed::Searcher,
    /// The anchor index of each of its patterns.
    anchors: Vec<usize>,
}

impl AnchorScan {
    /// `anchors` must be non-empty byte strings.
    pub fn new(anchors: &[&[u8]], kind: ScanKind) -> Self {
        Self::with_fold(anchors, kind, false)
    }

    /// Anchors whose ASCII letters match in either case (for loaded rules' keywords,
    /// which gitleaks matches case-insensitively). Always one pass.
    pub fn folded(anchors: &[&[u8]], kind: ScanKind) -> Self {
        let lower: Vec<Vec<u8>> = anchors.iter().map(|a| a.to_ascii_lowercase()).collect();
        let lower: Vec<&[u8]> = lower.iter().map(Vec::as_slice).collect();
        Self::with_fold(&lower, kind, true)
    }

    fn with_fold(anchors: &[&[u8]], kind: ScanKind, fold: bool) -> Self {
        assert!(anchors.iter().all(|a| !a.is_empty()), "empty anchor");
        let mut prefixes = Vec::with_capacity(anchors.len());
        for (i, a) in anchors.iter().enumerate() {
            let mut word = [0u8; 8];
            let mut mask = [0u8; 8];
            let mut folded = [0u8; 8];
            for (k, &b) in a.iter().take(8).enumerate() {
                word[k] = b;
                mask[k] = 0xff;
                if fold && b.is_ascii_lowercase() {
                    folded[k] = 0x20;
                }
            }
            prefixes.push(Prefix {
                anchor: i,
                word: u64::from_le_bytes(word),
                mask: u64::from_le_bytes(mask),
                fold: u64::from_le_bytes(folded),
                len: a.len(),
            });
        }
        Self {
            imp: Self::build(anchors, kind, fold),
            fold,
            index: Index::new(prefixes, anchors),
            anchors: anchors.iter().map(|a| a.to_vec()).collect(),
        }
    }

    fn build(anchors: &[&[u8]], kind: ScanKind, fold: bool) -> Imp {
        #[cfg(target_arch = "x86_64")]
        if kind == ScanKind::Best
            && let Some(tables) = fingerprint::Tables::new(anchors, fold)
        {
            return Imp::Fingerprint(Box::new(tables));
        }
        let _ = kind;
        let groups = group_anchors(anchors);
        if fold || groups.len() > MAX_PACKED_PASSES {
            return Imp::Automaton(
                aho_corasick::AhoCorasick::builder()
                    .ascii_case_insensitive(fold)
                    .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                    .kind(Some(aho_corasick::AhoCorasickKind::DFA))
                    .build(anchors)
                    .expect("non-empty anchors build an automaton"),
            );
        }
        let passes = groups
            .into_iter()
            .map(|group| {
                let mut builder = packed::Config::new()
                    .match_kind(packed::MatchKind::LeftmostLongest)
                    .builder();
                builder.extend(group.iter().map(|&a| anchors[a]));
                Pass {
                    // Teddy where the CPU has SSSE3 or AVX2, Rabin-Karp elsewhere.
                    searcher: builder
                        .build()
                        .expect("a packed searcher builds for up to 128 non-empty literals"),
                    anchors: group,
                }
            })
            .collect();
        Imp::Packed(passes)
    }

    /// How many independent passes `next_hit` takes (the engine keeps a position per
    /// pass).
    pub fn passes(&self) -> usize {
        match &self.imp {
            #[cfg(target_arch = "x86_64")]
            Imp::Fingerprint(_) => 1,
            Imp::Packed(p) => p.len(),
            Imp::Automaton(_) => 1,
        }
    }

    /// The first hit of `pass` at or after `from` (an index into `hay`): (start, anchor),
    /// the longest anchor there (among the pass's anchors). Only anchors wholly inside
    /// `hay` are found.
    pub fn next_hit(&self, pass: usize, hay: &[u8], from: usize) -> Option<(usize, usize)> {
        match &self.imp {
            #[cfg(target_arch = "x86_64")]
            Imp::Fingerprint(tables) => {
                debug_assert_eq!(pass, 0);
                // SAFETY: `Tables::new` returned Some, so the CPU has the features
                // `find_candidate` is compiled for.
                unsafe { tables.next_hit(hay, from, |at| self.verify(hay, at)) }
            }
            Imp::Packed(passes) => {
                let p = &passes[pass];
                p.searcher
                    .find_in(hay, aho_corasick::Span::from(from..hay.len()))
                    .map(|m| (m.start(), p.anchors[m.pattern().as_usize()]))
            }
            Imp::Automaton(ac) => ac
                .find(aho_corasick::Input::new(hay).span(from..hay.len()))
                .map(|m| (m.start(), m.pattern().as_usize())),
        }
    }

    /// The longest anchor starting at `at`, if any.
    #[inline]
    fn verify(&self, hay: &[u8], at: usize) -> Option<usize> {
        let rest = &hay[at..];
        let low = |b: u8| if self.fold { b.to_ascii_lowercase() } else { b };
        if let Some(&[a, b, c]) = rest.first_chunk::<3>() {
            let (lo, hi) = self.index.slots[slot(low(a), low(b), low(c), self.index.shift)];
            let long = &self.index.long[lo as usize..hi as usize];
            if let Some(p) = long.iter().find(|p| self.is_at(rest, p)) {
                return Some(p.anchor);
            }
        }
        if !self.index.has_short {
            return None;
        }
        self.index.short[usize::from(low(*rest.first()?))]
            .iter()
            .find(|p| self.is_at(rest, p))
            .map(|p| p.anchor)
    }

    /// Whether the anchor of `p` starts `rest` (when folding, ASCII letters in either
    /// case): its first 8 bytes with one load and compare, as a `memcmp` call cost more
    /// than the whole vector pass.
    #[inline]
    fn is_at(&self, rest: &[u8], p: &Prefix) -> bool {
        let anchor = &self.anchors[p.anchor];
        let whole = |rest: &[u8], anchor: &[u8]| {
            if self.fold {
                rest.len() >= anchor.len() && rest[..anchor.len()].eq_ignore_ascii_case(anchor)
            } else {
                rest.starts_with(anchor)
            }
        };
        match rest.first_chunk::<8>() {
            Some(w) => {
                let w = u64::from_le_bytes(*w);
                ((w | p.fold) & p.mask) == p.word && (p.len <= 8 || whole(&rest[8..], &anchor[8..]))
            }
            None => whole(rest, anchor),
        }
    }
}

/// Splits the anchors into passes for the packed implementation. Teddy sorts a pass's
/// literals into 8 buckets by the low halves of their first bytes (as many bytes as its
/// shortest literal has, up to 4) and checks every position whose bytes fit a bucket;
/// literals sharing a bucket widen its fingerprint, and false candidates multiply past
/// about 16 literals. Each pass costs a full read of the input, so the split trades
/// passes against false candidates:
/// - anchors starting with an upper-case letter form one pass: upper-case pairs are rare
///   in text, so even the 2-byte `SK` fingerprints well there (alone, it would need a
///   pass of its own);
/// - the rest, sorted (literals sharing first bytes share buckets), in as few passes of
///   at most 20 as hold them.
///
/// Measured on the clean benchmark corpus (49 anchors, 4,500 hits per MiB), CPU time of
/// the scan alone: 3 sorted passes of 16 plus `memmem` for `SK` 372 µs per MiB, this
/// split (3 passes) 358 µs, all anchors in one 16-bucket pass 1,270 µs.
fn group_anchors(anchors: &[&[u8]]) -> Vec<Vec<usize>> {
    const MAX_PER_PASS: usize = 20;
    let mut upper: Vec<usize> = Vec::new();
    let mut rest: Vec<usize> = Vec::new();
    for (i, a) in anchors.iter().enumerate() {
        if a[0].is_ascii_uppercase() {
            upper.push(i);
        } else {
            rest.push(i);
        }
    }
    let mut groups = Vec::new();
    for mut part in [upper, rest] {
        if part.is_empty() {
            continue;
        }
        part.sort_by_key(|&a| anchors[a]);
        let passes = part.len().div_ceil(MAX_PER_PASS);
        let per = part.len().div_ceil(passes);
        groups.extend(part.chunks(per).map(<[usize]>::to_vec));
    }
    groups
}

#[cfg(target_arch = "x86_64")]
mod fingerprint {
    use std::arch::x86_64::{
        __m512i, _mm512_and_si512, _mm512_loadu_epi8, _mm512_mask_blend_epi8,
        _mm512_maskz_loadu_epi8, _mm512_movepi8_mask, _mm512_permutex2var_epi8, _mm512_set1_epi8,
        _mm512_test_epi8_mask,
    };

    /// Bytes of an anchor the fingerprint looks at.
    const DEPTH: usize = 4;
    /// Sets of tables, each with a bucket bit per table entry byte: a position is a
    /// candidate when the four look-ups of any set share a bucket. The families have
    /// ~150 anchors: in 8 buckets each bucket's union of bytes let so many positions
    /// through that verifying candidates took a third of a clean scrub (`perf`); 16
    /// buckets halve the anchors per bucket for a second round of four look-ups.
    const GROUPS: usize = 2;
    /// Buckets in all.
    const BUCKETS: usize = 8 * GROUPS;

    /// The tables of 8 buckets.
    #[derive(Clone, Copy)]
    struct Group {
        lo: [[u8; 64]; DEPTH],
        hi: [[u8; 64]; DEPTH],
        any: [u8; DEPTH],
    }

    /// For each of the first `DEPTH` bytes of an anchor, the buckets that allow each
    /// ASCII byte there (two 64-byte halves, as `vpermi2b` takes them), and the buckets
    /// that allow any byte there (anchors shorter than the position; they also take
    /// bytes ≥ 0x80, which the 128-entry tables do not cover).
    pub(super) struct Tables {
        groups: [Group; GROUPS],
    }

    impl Tables {
        /// None if the CPU lacks AVX-512 VBMI or an anchor is not ASCII. With `fold`, a
        /// letter's bucket bits are set for both of its cases.
        pub fn new(anchors: &[&[u8]], fold: bool) -> Option<Self> {
            if !(std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vbmi"))
            {
                return None;
            }
            if !anchors.iter().all(|a| a.is_ascii()) {
                return None;
            }
            let mut tables = Self {
                groups: [Group {
                    lo: [[0; 64]; DEPTH],
                    hi: [[0; 64]; DEPTH],
                    any: [0; DEPTH],
                }; GROUPS],
            };
            for (bucket, members) in buckets(anchors, fold).iter().enumerate() {
                let bit = 1u8 << (bucket % 8);
                let group = &mut tables.groups[bucket / 8];
                for a in members {
                    for j in 0..DEPTH {
                        match a.get(j) {
                            Some(&b) => {
                                let other = if fold && b.is_ascii_alphabetic() {
                                    b ^ 0x20
                                } else {
                                    b
                                };
                                for b in [b, other] {
                                    if b < 64 {
                                        group.lo[j][usize::from(b)] |= bit;
                                    } else {
                                        group.hi[j][usize::from(b - 64)] |= bit;
                                    }
                                }
                            }
                            None => {
                                group.any[j] |= bit;
                                for k in 0..64 {
                                    group.lo[j][k] |= bit;
                                    group.hi[j][k] |= bit;
                                }
                            }
                        }
                    }
                }
            }
            Some(tables)
        }

        /// The first position at or after `from` where `verify` finds an anchor.
        ///
        /// # Safety
        /// The CPU must have AVX-512F, AVX-512BW and AVX-512 VBMI (as `new` checked).
        pub unsafe fn next_hit(
            &self,
            hay: &[u8],
            from: usize,
            verify: impl Fn(usize) -> Option<usize>,
        ) -> Option<(usize, usize)> {
            let mut at = from;
            // SAFETY: the caller guarantees the features.
            while let Some((block, mut candidates)) = unsafe { self.next_candidates(hay, at) } {
                while candidates != 0 {
                    let pos = block + candidates.trailing_zeros() as usize;
                    if let Some(anchor) = verify(pos) {
                        return Some((pos, anchor));
                    }
                    candidates &= candidates - 1;
                }
                at = block + 64;
            }
            None
        }

        /// How many positions of `hay` the fingerprint passes (those `verify` then
        /// looks at).
        ///
        /// # Safety
        /// As [`Tables::next_hit`].
        #[cfg(test)]
        pub unsafe fn candidates(&self, hay: &[u8]) -> usize {
            let mut n = 0;
            let mut at = 0;
            // SAFETY: the caller guarantees the features.
            while let Some((block, candidates)) = unsafe { self.next_candidates(hay, at) } {
                n += candidates.count_ones() as usize;
                at = block + 64;
            }
            n
        }

        /// The first 64-position block from `at` on with candidates: (its start, bit `k`
        /// set if position `start + k` may start an anchor). No calls inside, so the
        /// tables stay in registers for the whole loop.
        #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
        unsafe fn next_candidates(&self, hay: &[u8], mut at: usize) -> Option<(usize, u64)> {
            let tables: [[(__m512i, __m512i, __m512i); DEPTH]; GROUPS] = std::array::from_fn(|g| {
                let group = &self.groups[g];
                std::array::from_fn(|j| {
                    // SAFETY: each table is 64 bytes.
                    let (lo, hi) = unsafe {
                        (
                            _mm512_loadu_epi8(group.lo[j].as_ptr().cast()),
                            _mm512_loadu_epi8(group.hi[j].as_ptr().cast()),
                        )
                    };
                    (lo, hi, _mm512_set1_epi8(group.any[j] as i8))
                })
            });
            let fingerprint = |bytes: [__m512i; DEPTH]| {
                let mut candidates = 0;
                for group in &tables {
                    let mut acc = _mm512_set1_epi8(-1);
                    for (&(lo, hi, any), &bytes) in group.iter().zip(&bytes) {
                        // The low 7 bits index the 128 entries; bytes ≥ 0x80 take `any`.
                        let set = _mm512_permutex2var_epi8(lo, bytes, hi);
                        let set = _mm512_mask_blend_epi8(_mm512_movepi8_mask(bytes), set, any);
                        acc = _mm512_and_si512(acc, set);
                    }
                    candidates |= _mm512_test_epi8_mask(acc, acc);
                }
                candidates
            };
            while at + 64 + DEPTH - 1 <= hay.len() {
                // SAFETY: bytes `at .. at + 64 + DEPTH - 1` are in `hay` (loop condition).
                let bytes = std::array::from_fn(|j| unsafe {
                    _mm512_loadu_epi8(hay.as_ptr().add(at + j).cast())
                });
                let candidates = fingerprint(bytes);
                if candidates != 0 {
                    return Some((at, candidates));
                }
                at += 64;
            }
            // The end: masked loads read only the bytes that are there (the rest are 0,
            // which no anchor holds, so positions an anchor cannot fit in mostly drop
            // out; `verify` checks the bounds of the rest).
            let within = |from: usize| -> u64 {
                match hay.len().saturating_sub(from) {
                    n if n >= 64 => u64::MAX,
                    n => (1u64 << n) - 1,
                }
            };
            while at < hay.len() {
                // SAFETY: a masked load touches only the bytes its mask selects, here
                // those inside `hay` (`wrapping_add`: the address may lie past the end
                // when the mask is empty).
                let bytes = std::array::from_fn(|j| unsafe {
                    _mm512_maskz_loadu_epi8(
                        within(at + j),
                        hay.as_ptr().wrapping_add(at + j).cast(),
                    )
                });
                let candidates = fingerprint(bytes) & within(at);
                if candidates != 0 {
                    return Some((at, candidates));
                }
                at += 64;
            }
            None
        }
    }

    /// Groups anchors into `BUCKETS` buckets. Anchors in a bucket widen each other's
    /// fingerprint (the bucket allows the union of their bytes at each position, so
    /// `ghp_` and `rer ` together also let `gep_` through), and an anchor shorter than
    /// `DEPTH` allows any byte past its end. The cost of a bucket is its expected false
    /// candidates: the product over positions of how often text has an allowed byte
    /// there, by [`weight`]. Each anchor, the most permissive first, goes to the bucket
    /// whose cost it raises least; then anchors move, one at a time, to the bucket where
    /// they cost less than where they are, until none does (or [`ROUNDS`] passes).
    /// Placing whole groups of one first byte instead (`ecret`, `entry`, `eyJ`, … in one
    /// bucket) let about twice as many false candidates through on both the clean
    /// benchmark corpus and real text (Python sources, man pages).
    fn buckets<'a>(anchors: &[&'a [u8]], fold: bool) -> Vec<Vec<&'a [u8]>> {
        let mut order: Vec<&[u8]> = anchors.to_vec();
        let alone = |a: &[u8]| Bucket::default().cost_with(a, fold);
        order.sort_by(|x, y| alone(y).total_cmp(&alone(x)).then(x.cmp(y)));
        let mut buckets: Vec<Bucket<'a>> = (0..BUCKETS).map(|_| Bucket::default()).collect();
        for a in order {
            let best = (0..BUCKETS)
                .min_by(|&x, &y| {
                    let (bx, by) = (&buckets[x], &buckets[y]);
                    (bx.cost_with(a, fold) - bx.cost())
                        .total_cmp(&(by.cost_with(a, fold) - by.cost()))
                        .then(bx.members.len().cmp(&by.members.len()))
                })
                .expect("BUCKETS > 0");
            buckets[best].add(a, fold);
        }
        for _ in 0..ROUNDS {
            let mut moved = false;
            for from in 0..BUCKETS {
                let mut k = 0;
                while k < buckets[from].members.len() {
                    let a = buckets[from].members[k];
                    let saved = buckets[from].cost() - buckets[from].cost_without(a, fold);
                    let mut best = None;
                    let mut best_cost = saved * (1.0 - 1e-9);
                    for (to, b) in buckets.iter().enumerate() {
                        let added = b.cost_with(a, fold) - b.cost();
                        if to != from && added < best_cost {
                            (best, best_cost) = (Some(to), added);
                        }
                    }
                    match best {
                        Some(to) => {
                            buckets[from].remove(k, fold);
                            buckets[to].add(a, fold);
                            moved = true;
                        }
                        None => k += 1,
                    }
                }
            }
            if !moved {
                break;
            }
        }
        buckets.into_iter().map(|b| b.members).collect()
    }

    /// Passes of moves between buckets at most (they settle in a few).
    const ROUNDS: usize = 10;

    /// A bucket being filled, with what its cost needs kept up to date: per position,
    /// how many members allow each byte there, how many are too short to reach it, and
    /// the weight of the bytes allowed.
    struct Bucket<'a> {
        members: Vec<&'a [u8]>,
        allowed: [[u32; 256]; DEPTH],
        short: [u32; DEPTH],
        weight: [f64; DEPTH],
    }

    impl Default for Bucket<'_> {
        fn default() -> Self {
            Self {
                members: Vec::new(),
                allowed: [[0; 256]; DEPTH],
                short: [0; DEPTH],
                weight: [0.0; DEPTH],
            }
        }
    }

    /// The bytes an anchor byte allows (both cases of a letter when folding).
    fn cases(b: u8, fold: bool) -> impl Iterator<Item = u8> {
        let other = (fold && b.is_ascii_alphabetic()).then_some(b ^ 0x20);
        std::iter::once(b).chain(other)
    }

    /// The weight of every byte: what a position allows past a short anchor's end.
    fn all_bytes() -> f64 {
        (0..=255u8).map(weight).sum()
    }

    impl<'a> Bucket<'a> {
        /// Expected false candidates per position of text (0 when empty).
        fn cost(&self) -> f64 {
            if self.members.is_empty() {
                return 0.0;
            }
            (0..DEPTH)
                .map(|j| {
                    if self.short[j] > 0 {
                        all_bytes()
                    } else {
                        self.weight[j]
                    }
                })
                .product()
        }

        /// [`Bucket::cost`] with `a` added.
        fn cost_with(&self, a: &[u8], fold: bool) -> f64 {
            (0..DEPTH)
                .map(|j| match a.get(j) {
                    Some(&b) if self.short[j] == 0 => {
                        self.weight[j]
                            + cases(b, fold)
                                .filter(|&c| self.allowed[j][usize::from(c)] == 0)
                                .map(weight)
                                .sum::<f64>()
                    }
                    _ => all_bytes(),
                })
                .product()
        }

        /// [`Bucket::cost`] without `a` (a member).
        fn cost_without(&self, a: &[u8], fold: bool) -> f64 {
            if self.members.len() <= 1 {
                return 0.0;
            }
            (0..DEPTH)
                .map(|j| {
                    let short = self.short[j] - u32::from(a.len() <= j);
                    match a.get(j) {
                        _ if short > 0 => all_bytes(),
                        Some(&b) => {
                            self.weight[j]
                                - cases(b, fold)
                                    .filter(|&c| self.allowed[j][usize::from(c)] == 1)
                                    .map(weight)
                                    .sum::<f64>()
                        }
                        None => self.weight[j],
                    }
                })
                .product()
        }

        fn add(&mut self, a: &'a [u8], fold: bool) {
            self.members.push(a);
            for j in 0..DEPTH {
                match a.get(j) {
                    Some(&b) => {
                        for c in cases(b, fold) {
                            let n = &mut self.allowed[j][usize::from(c)];
                            if *n == 0 {
                                self.weight[j] += weight(c);
                            }
                            *n += 1;
                        }
                    }
                    None => self.short[j] += 1,
                }
            }
        }

        /// Takes out member `k`.
        fn remove(&mut self, k: usize, fold: bool) {
            let a = self.members.swap_remove(k);
            for j in 0..DEPTH {
                match a.get(j) {
                    Some(&b) => {
                        for c in cases(b, fold) {
                            let n = &mut self.allowed[j][usize::from(c)];
                            *n -= 1;
                            if *n == 0 {
                                self.weight[j] -= weight(c);
                            }
                        }
                    }
                    None => self.short[j] -= 1,
                }
            }
        }
    }

    /// A prior for how common a byte is in text (English letter frequencies for lower
    /// case, blanks very common, everything else rare); it only steers the grouping.
    fn weight(b: u8) -> f64 {
        const LOWER: [f64; 26] = [
            8.2, 1.5, 2.8, 4.3, 12.7, 2.2, 2.0, 6.1, 7.0, 0.15, 0.8, 4.0, 2.4, 6.7, 7.5, 1.9, 0.1,
            6.0, 6.3, 9.1, 2.8, 1.0, 2.4, 0.15, 2.0, 0.07,
        ];
        match b {
            b'a'..=b'z' => 0.007 * LOWER[usize::from(b - b'a')],
            b' ' => 0.15,
            0x80.. => 0.0005,
            _ => 0.003,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::scrub::families::Families;

    /// Every (start, longest anchor) from `from` on, over all passes.
    fn hits(scan: &AnchorScan, hay: &[u8], from: usize) -> BTreeMap<usize, usize> {
        let mut out = BTreeMap::new();
        for pass in 0..scan.passes() {
            let mut pos = from;
            while let Some((at, a)) = scan.next_hit(pass, hay, pos) {
                let best = out.entry(at).or_insert(a);
                if scan.anchors[a].len() > scan.anchors[*best].len() {
                    *best = a;
                }
                pos = at + 1;
            }
        }
        out
    }

    /// The definition: every position, every anchor (those starting with the byte
    /// there: the same set, found without trying the others).
    fn naive(anchors: &[Vec<u8>], hay: &[u8], from: usize) -> BTreeMap<usize, usize> {
        let mut by_first: Vec<Vec<usize>> = vec![Vec::new(); 256];
        for (a, anchor) in anchors.iter().enumerate() {
            if let Some(&b) = anchor.first() {
                by_first[usize::from(b)].push(a);
            }
        }
        let mut out = BTreeMap::new();
        for at in from..hay.len() {
            let longest = by_first[usize::from(hay[at])]
                .iter()
                .copied()
                .filter(|&a| hay[at..].starts_with(&anchors[a]))
                .max_by_key(|&a| anchors[a].len());
            if let Some(a) = longest {
                out.insert(at, a);
            }
        }
        out
    }

    /// xorshift: inputs made of anchor bytes, their neighbours and bytes ≥ 0x80, so
    /// anchors, near misses and fingerprint collisions are all frequent.
    fn random_input(state: &mut u64, alphabet: &[u8], len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                alphabet[(*state % alphabet.len() as u64) as usize]
            })
            .collect()
    }

    fn check_both(anchors: &[&[u8]], inputs: &[Vec<u8>]) -> usize {
        let best = AnchorScan::new(anchors, ScanKind::Best);
        let packed = AnchorScan::new(anchors, ScanKind::Packed);
        let mut found = 0;
        for hay in inputs {
            for from in [0, 1, 63, 64, 65].into_iter().filter(|&f| f <= hay.len()) {
                let want = naive(&best.anchors, hay, from);
                assert_eq!(hits(&best, hay, from), want, "best, from {from}");
                assert_eq!(hits(&packed, hay, from), want, "packed, from {from}");
                found += want.len();
            }
        }
        found
    }

    #[test]
    fn both_scans_find_exactly_the_anchors_of_the_rules() {
        let families = Families::new();
        let anchors: Vec<&[u8]> = families.scan().anchors.iter().map(Vec::as_slice).collect();
        let mut alphabet: Vec<u8> = anchors.iter().flat_map(|a| a.iter().copied()).collect();
        alphabet.extend_from_slice(b" \n\x80\xc3\xa9\xff");
        alphabet.sort_unstable();
        alphabet.dedup();
        let mut state = 0x9E37_79B9_7F4A_7C15;
        let mut inputs: Vec<Vec<u8>> = (0..400)
            .map(|i| random_input(&mut state, &alphabet, i % 300))
            .collect();
        // Every anchor planted at every offset of a 70-byte window, and cut at its end.
        for a in &anchors {
            for at in 0..70 {
                let mut hay = random_input(&mut state, b"xyz \xc3\xa9", 140);
                hay[at..at + a.len()].copy_from_slice(a);
                inputs.push(hay.clone());
                inputs.push(hay[..at + a.len() - 1].to_vec());
            }
        }
        let found = check_both(&anchors, &inputs);
        assert!(
            found > 5_000,
            "only {found} hits: the inputs do not exercise the scan"
        );
    }

    /// The definition, with ASCII letters in either case.
    fn naive_folded(anchors: &[Vec<u8>], hay: &[u8], from: usize) -> BTreeMap<usize, usize> {
        let mut out = BTreeMap::new();
        for at in from..hay.len() {
            let longest = (0..anchors.len())
                .filter(|&a| {
                    let n = anchors[a].len();
                    hay.len() - at >= n && hay[at..at + n].eq_ignore_ascii_case(&anchors[a])
                })
                .max_by_key(|&a| anchors[a].len());
            if let Some(a) = longest {
                out.insert(at, a);
            }
        }
        out
    }

    #[test]
    fn folded_scans_find_anchors_in_either_case() {
        let anchors: [&[u8]; 9] = [
            b"key",
            b"api",
            b"sk",
            b"s.",
            b"glpat-",
            b"xoxe.xoxb-",
            b"xoxb-",
            b"api-",
            b"Token",
        ];
        let mut state = 11;
        let inputs: Vec<Vec<u8>> = (0..300)
            .map(|i| {
                random_input(
                    &mut state,
                    b"keyKEYapiAPIsSkK.glpatGLPAT-xoeXOEb@` \x80\xc3tTnN",
                    i,
                )
            })
            .collect();
        let mut found = 0;
        for kind in [ScanKind::Best, ScanKind::Packed] {
            let scan = AnchorScan::folded(&anchors, kind);
            for hay in &inputs {
                for from in [0, 1, 63, 64, 65].into_iter().filter(|&f| f <= hay.len()) {
                    let want = naive_folded(&scan.anchors, hay, from);
                    assert_eq!(hits(&scan, hay, from), want, "{kind:?}, from {from}");
                    found += want.len();
                }
            }
        }
        assert!(found > 1_000, "only {found} hits");
    }

    /// Positions of `hay` the fingerprint passes, and the anchors among them; None
    /// without AVX-512 VBMI.
    fn fingerprint_candidates(scan: &AnchorScan, hay: &[u8]) -> Option<(usize, usize)> {
        #[cfg(target_arch = "x86_64")]
        if let Imp::Fingerprint(tables) = &scan.imp {
            // SAFETY: the scan was built, so the CPU has the features.
            let candidates = unsafe { tables.candidates(hay) };
            return Some((candidates, naive(&scan.anchors, hay, 0).len()));
        }
        let _ = (scan, hay);
        None
    }

    /// The fingerprint passes few positions of ordinary text that are not anchors
    /// (each costs a verification): the clean benchmark corpus, and this README (prose,
    /// shell, Rust, TOML; nothing was tuned on it). Grouping anchors by first byte let
    /// about 92,000 positions per MiB through on the corpus and 96,000 on the README;
    /// placing anchors one by one, about 51,000 and 40,000.
    #[test]
    fn the_fingerprint_passes_few_positions_of_ordinary_text() {
        let families = Families::new();
        let corpus: Vec<u8> = crate::scrub::tests::CLEAN
            .iter()
            .flat_map(|(_, t)| t.bytes())
            .collect();
        let readme = include_bytes!("../../../README.md");
        for (name, text) in [("clean corpus", &corpus[..]), ("README", &readme[..])] {
            let Some((candidates, anchors)) = fingerprint_candidates(families.scan(), text) else {
                println!("no AVX-512 VBMI here: the fingerprint is not built");
                return;
            };
            let per_mib = |n: usize| n as f64 * 1_048_576.0 / text.len() as f64;
            println!(
                "{name}: {:.0} candidates per MiB, {:.0} anchors per MiB ({:.1} per anchor)",
                per_mib(candidates),
                per_mib(anchors),
                candidates as f64 / anchors as f64
            );
            assert!(
                per_mib(candidates) <= 60_000.0,
                "{name}: {candidates} candidates in {} bytes",
                text.len()
            );
        }
    }

    /// A rules file's keywords are anchors: a file with more of them than the index's
    /// ranges held once (65,535) builds and scans like any other.
    #[test]
    fn seventy_thousand_anchors_build_and_are_found() {
        let words: Vec<Vec<u8>> = (0..70_000)
            .map(|i| format!("kw{i:05}x").into_bytes())
            .collect();
        let anchors: Vec<&[u8]> = words.iter().map(Vec::as_slice).collect();
        let scan = AnchorScan::new(&anchors, ScanKind::Best);
        let hay = b"a kw00007x b kw69999x c kw70000x kw12345x".to_vec();
        let want = naive(&scan.anchors, &hay, 0);
        assert_eq!(want.len(), 3, "{want:?}");
        assert_eq!(hits(&scan, &hay, 0), want);
    }

    #[test]
    fn both_scans_handle_short_and_overlapping_anchors() {
        let anchors: [&[u8]; 7] = [b"a", b"ab", b"abcdef", b"b", b"SK", b"t\x7f", b"zz"];
        let mut state = 7;
        let inputs: Vec<Vec<u8>> = (0..300)
            .map(|i| random_input(&mut state, b"abcdefSKz\xc3\xa9t\x7f \x80", i))
            .collect();
        let found = check_both(&anchors, &inputs);
        assert!(found > 10_000, "only {found} hits");
    }
}
