//! The passes' fast path: finding the next byte that needs work in text that is mostly
//! plain ASCII.
//!
//! Owns: scanning bytes for a caller's condition. Must never: decide what a byte means
//! (the callers say that) or read outside the slice it is given.

/// Bytes checked at once.
const BLOCK: usize = 16;

/// The first index at or after `i` where `stop(byte)` holds, or `b.len()`.
///
/// A byte loop with an early exit costs a compare and a branch per byte, which made the
/// normalisation, removal and view passes each take about a millisecond per MiB of
/// ASCII. A block reduced with `|` has no branch inside and compiles to vector compares,
/// so `stop` must be branch-free (`&` and `|`, not `&&` and `||`).
///
/// `coarse` is a cheaper test that holds wherever `stop` does (callers' tests check it
/// on every byte): a block where it holds nowhere is passed on it alone. The removal
/// step's `stop` takes a dozen vector compares a block; "a control or a non-ASCII byte"
/// takes two, and most blocks of text have neither.
#[inline(always)]
pub(super) fn next_stop(
    b: &[u8],
    mut i: usize,
    coarse: impl Fn(u8) -> bool,
    stop: impl Fn(u8) -> bool,
) -> usize {
    while let Some(cur) = block(b, i) {
        if cur.iter().fold(false, |any, &c| any | coarse(c)) {
            let m = mask(cur.map(&stop));
            if m != 0 {
                return i + m.trailing_zeros() as usize;
            }
        }
        i += BLOCK;
    }
    while i < b.len() && !stop(b[i]) {
        i += 1;
    }
    i.min(b.len())
}

/// A control character or any non-ASCII byte: a cheap `coarse` test for [`next_stop`]
/// (one signed compare catches both ends).
#[inline(always)]
pub(super) fn control_or_non_ascii(c: u8) -> bool {
    ((c as i8) < 0x20) | (c == 0x7f)
}

/// Any non-ASCII byte: a cheap `coarse` test for [`next_stop`].
#[inline(always)]
pub(super) fn non_ascii(c: u8) -> bool {
    (c as i8) < 0
}

/// [`next_stop`] for a condition on a byte and the one after it, `stop(byte, next
/// byte)` (the byte after the last one reads as 0).
#[inline(always)]
pub(super) fn next_stop_pair(b: &[u8], mut i: usize, stop: impl Fn(u8, u8) -> bool) -> usize {
    while let (Some(cur), Some(next)) = (block(b, i), block(b, i + 1)) {
        let m = mask(std::array::from_fn(|k| stop(cur[k], next[k])));
        if m != 0 {
            return i + m.trailing_zeros() as usize;
        }
        i += BLOCK;
    }
    while i < b.len() && !stop(b[i], b.get(i + 1).copied().unwrap_or(0)) {
        i += 1;
    }
    i.min(b.len())
}

/// The last index before `i` where `stop(byte)` holds: [`next_stop`] backwards, block by
/// block from `i` down (`stop` branch-free as there).
#[inline(always)]
pub(super) fn prev_stop(b: &[u8], i: usize, stop: impl Fn(u8) -> bool) -> Option<usize> {
    let mut i = i.min(b.len());
    while let Some(cur) = i.checked_sub(BLOCK).and_then(|at| block(b, at)) {
        let m = mask(cur.map(&stop));
        if m != 0 {
            return Some(i - BLOCK + (u32::BITS - 1 - m.leading_zeros()) as usize);
        }
        i -= BLOCK;
    }
    (0..i).rev().find(|&k| stop(b[k]))
}

/// Bit `k` set where `flags[k]` is: the exact place of a stop in a block, so that a
/// stop costs no byte loop. On x86-64 one SSE2 instruction (part of the baseline) does
/// it and the flags never leave the vector registers they were computed in.
#[inline(always)]
fn mask(flags: [bool; BLOCK]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_loadu_si128, _mm_movemask_epi8};
        let high = flags.map(|f| u8::from(f) << 7);
        // SAFETY: SSE2 is part of every x86-64 CPU; the load reads the 16 bytes of `high`.
        unsafe { _mm_movemask_epi8(_mm_loadu_si128(high.as_ptr().cast())) as u32 }
    }
    #[cfg(not(target_arch = "x86_64"))]
    flags
        .iter()
        .enumerate()
        .fold(0, |m, (k, &f)| m | (u32::from(f) << k))
}

#[inline(always)]
fn block(b: &[u8], at: usize) -> Option<&[u8; BLOCK]> {
    b.get(at..)?.first_chunk::<BLOCK>()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn blank_pair(c: u8, n: u8) -> bool {
        (c == b' ') & ((n == b' ') | (n == b'\t'))
    }

    proptest! {
        #[test]
        /// Long runs, so that whole blocks are skipped, and stops at every offset.
        fn next_stop_equals_a_byte_loop(
            runs in prop::collection::vec(("[a \t\u{e9}]", 0usize..80), 0..8),
            from in 0usize..400,
        ) {
            let s: String = runs.iter().map(|(c, n)| c.repeat(*n)).collect();
            let b = s.as_bytes();
            let want = (from.min(b.len())..b.len())
                .find(|&i| blank_pair(b[i], b.get(i + 1).copied().unwrap_or(0)))
                .unwrap_or(b.len());
            prop_assert_eq!(next_stop_pair(b, from, blank_pair), want);
            let want = (from.min(b.len())..b.len()).find(|&i| b[i] == b'\t').unwrap_or(b.len());
            prop_assert_eq!(next_stop(b, from, control_or_non_ascii, |c| c == b'\t'), want);
            let want = (0..from.min(b.len())).rev().find(|&i| b[i] == b'\t');
            prop_assert_eq!(prev_stop(b, from, |c| c == b'\t'), want);
        }
    }
}
