//! Step 4: runs of base64, hex and percent-encoding in the cleaned text, decoded once.
//!
//! Only decodings that read as text are kept (hashes, keys and binary blobs decode to
//! noise and are dropped), so ordinary identifiers cost a failed decode and nothing else.

use std::ops::Range;

use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};

use super::Encoding;

/// Shorter runs are words, not encodings (16 base64 characters carry 12 bytes).
const MIN_RUN: usize = 16;
/// At least this many `%XX` escapes make a token worth decoding.
const MIN_ESCAPES: usize = 3;

#[cfg_attr(test, derive(Debug, PartialEq, Eq))]
pub(super) struct EncodedRun {
    pub span: Range<usize>,
    pub encoding: Encoding,
    pub decoded: String,
}

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Bytes of the standard and URL-safe base64 alphabets, with padding.
const B64: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_');
        c += 1;
    }
    t
};

fn is_b64(b: u8) -> bool {
    B64[usize::from(b)]
}

/// Decoded text that reads as text: valid UTF-8, no control characters beyond line
/// breaks and tabs, mostly letters, digits and spaces. Takes a borrowed buffer so that
/// the many candidates that decode to noise allocate nothing.
fn readable(bytes: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(bytes).ok()?;
    let mut total = 0usize;
    let mut plain = 0usize;
    for c in s.chars() {
        total += 1;
        if c.is_control() && !matches!(c, '\n' | '\r' | '\t') {
            return None;
        }
        if c.is_alphanumeric() || c == ' ' {
            plain += 1;
        }
    }
    (total >= 4 && plain * 10 >= total * 6).then(|| s.to_owned())
}

/// Base64 characters decoded first from a long run: 48 bytes.
const PREFIX: usize = 64;

/// Whether bytes that begin a decoding leave it a chance to be [`readable`]: false
/// when they hold a control character or a byte that is not UTF-8 (a character cut at
/// the end may go on in the rest).
fn may_read(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    !valid
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Two hex digits as `u8::from_str_radix(.., 16)` reads them, which the decoders used
/// to call: it also takes a leading `+` sign, so `%+f` is byte 15. Kept that way so
/// that findings do not change.
fn hex_pair(hi: u8, lo: u8) -> Option<u8> {
    let lo = hex_digit(lo)?;
    match hi {
        b'+' => Some(lo),
        _ => Some(hex_digit(hi)? << 4 | lo),
    }
}

pub(super) fn encoded_runs(text: &str) -> Vec<EncodedRun> {
    let marks = scan(text.as_bytes());
    let mut out = Vec::new();
    // Scratch space for decodings, most of which are noise and are dropped.
    let mut buf = Vec::new();
    for span in marks.runs {
        runs(text, span, &mut buf, &mut out);
    }
    escapes(text, &marks.escapes, &mut buf, &mut out);
    percent(text, &marks.percents, &mut buf, &mut out);
    out
}

/// What the steps look for, found in one pass over the text.
#[derive(Default)]
struct Marks {
    /// Maximal runs of base64 bytes at least [`MIN_RUN`] long.
    runs: Vec<Range<usize>>,
    /// Where the last run found ends: its bytes mark nothing new.
    done: usize,
    /// Where each `\x` starts.
    escapes: Vec<usize>,
    /// Where each `%` is.
    percents: Vec<usize>,
}

/// Finds the [`Marks`] of `b`.
///
/// Prose is nearly all base64 bytes (every letter is one) in words shorter than
/// [`MIN_RUN`], so a byte loop spends its time walking words that never qualify. The
/// text is read instead as 64-bit masks, one per 64 bytes, in which a few shifts find
/// the long runs and skip the words. The same masks hold the backslashes and percent
/// signs, which saves the escape steps a pass over the text each.
fn scan(b: &[u8]) -> Marks {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { scan_avx2(b) };
    }
    scan_with(b, word_portable)
}

/// [`scan`] compiled for AVX2, so that [`word_avx2`] inlines into the loop.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scan_avx2(b: &[u8]) -> Marks {
    // A closure: a function with target features is not an `Fn`, but a closure
    // inside one inherits them.
    scan_with(b, |chunk| word_avx2(chunk))
}

#[inline(always)]
fn scan_with(b: &[u8], word: impl Fn(&[u8; 64]) -> Word) -> Marks {
    let mut marks = Marks::default();
    let mut ends = RunEnds::default();
    let mut add = |marks: &mut Marks, base: usize, w: Word| {
        let at = ends.next(w.base64);
        // Prose words are shorter than MIN_RUN and escapes are few: both branches
        // are rarely taken.
        if at != 0 {
            marks.add_runs(b, base, at);
        }
        if w.backslash | w.percent != 0 {
            marks.add_signs(b, base, w);
        }
    };
    let (chunks, tail) = b.as_chunks::<64>();
    for (k, chunk) in chunks.iter().enumerate() {
        add(&mut marks, k * 64, word(chunk));
    }
    if !tail.is_empty() {
        // Zero is none of the bytes looked for, so the padding ends any run at the end
        // of the text and marks nothing.
        let mut last = [0u8; 64];
        last[..tail.len()].copy_from_slice(tail);
        add(&mut marks, chunks.len() * 64, word(&last));
    }
    marks
}

impl Marks {
    /// Adds the runs that `at` (from [`RunEnds::next`]) marks in the word at `base`.
    /// Kept out of line, so that the loop that rarely calls it stays small.
    #[inline(never)]
    fn add_runs(&mut self, b: &[u8], base: usize, mut at: u64) {
        at &= above(self.done.saturating_sub(base));
        while at != 0 {
            // The first MIN_RUN bytes of a run not seen yet, so it starts exactly
            // MIN_RUN - 1 bytes before: a run starting earlier would have marked a
            // byte before this one.
            let first = base + at.trailing_zeros() as usize;
            let end = b[first..]
                .iter()
                .position(|c| !is_b64(*c))
                .map_or(b.len(), |n| first + n);
            self.runs.push(first + 1 - MIN_RUN..end);
            self.done = end;
            at &= above(end - base);
        }
    }

    /// Adds the `\x` and `%` of the word at `base`.
    #[inline(never)]
    fn add_signs(&mut self, b: &[u8], base: usize, w: Word) {
        for k in bits(w.backslash) {
            if b.get(base + k + 1) == Some(&b'x') {
                self.escapes.push(base + k);
            }
        }
        self.percents.extend(bits(w.percent).map(|k| base + k));
    }
}

/// Bits `from` and up (none from 64).
fn above(from: usize) -> u64 {
    if from < 64 { u64::MAX << from } else { 0 }
}

/// The set bits of `m`, lowest first.
fn bits(mut m: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let k = m.trailing_zeros() as usize;
        m &= m.wrapping_sub(1);
        (k < 64).then_some(k)
    })
}

/// Marks, word by word, the bytes that end [`MIN_RUN`] base64 bytes in a row, the
/// earlier ones possibly in previous words. Each step doubles the length of the rows
/// that its mask marks the ends of, and keeps its last word to shift bits in from.
#[derive(Default)]
struct RunEnds {
    carry: [u64; 4],
}

impl RunEnds {
    /// The marks for the next word, whose base64 bytes are the set bits of `m` (bit k
    /// for its byte k). Free of branches: prose changes between base64 and not every
    /// few bytes, which a branch would mispredict.
    #[inline(always)]
    fn next(&mut self, m: u64) -> u64 {
        const _: () = assert!(MIN_RUN == 16);
        let mut x = m;
        for (step, carry) in self.carry.iter_mut().enumerate() {
            let shift = 1 << step;
            let y = x & (x << shift | *carry >> (64 - shift));
            *carry = x;
            x = y;
        }
        x
    }
}

/// The bytes of 64 that the steps look for, bit k for byte k.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word {
    base64: u64,
    backslash: u64,
    percent: u64,
}

/// The reference for [`word_avx2`], and the fallback on CPUs without it.
fn word_portable(chunk: &[u8; 64]) -> Word {
    let mask = |pred: fn(u8) -> bool| {
        chunk
            .iter()
            .enumerate()
            .fold(0, |m, (k, &c)| m | u64::from(pred(c)) << k)
    };
    Word {
        base64: mask(is_b64),
        backslash: mask(|c| c == b'\\'),
        percent: mask(|c| c == b'%'),
    }
}

/// Which groups of base64 bytes a high nibble starts: `+ - /` (bit 0), digits and `=`
/// (1), `A-O a-o` (2), `P-Z p-z` (3) and `_` (4). Bytes from 0x80 have none.
const HIGH_NIBBLE: [i8; 16] = [0, 0, 1, 2, 4, 8 | 16, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0];
/// Which of those groups a low nibble completes: `+ - /` end in B, D, F; digits 0-9
/// and `=` D; `A-O` 1-F; `P-Z` 0-A; `_` F.
const LOW_NIBBLE: [i8; 16] = {
    let mut t = [0i8; 16];
    let mut n = 0;
    while n < 16 {
        let mut g = 0;
        if matches!(n, 0xB | 0xD | 0xF) {
            g |= 1;
        }
        if n <= 9 || n == 0xD {
            g |= 2;
        }
        if n >= 1 {
            g |= 4;
        }
        if n <= 0xA {
            g |= 8;
        }
        if n == 0xF {
            g |= 16;
        }
        t[n] = g;
        n += 1;
    }
    t
};

/// [`word_portable`] in a few instructions per 32 bytes: a byte is base64 when the
/// groups of its two nibbles, looked up in [`HIGH_NIBBLE`] and [`LOW_NIBBLE`], meet.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn word_avx2(chunk: &[u8; 64]) -> Word {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256};
    let (low, high) = chunk.split_at(32);
    // SAFETY: each half holds 32 bytes, as many as one load reads; loadu needs no
    // alignment.
    let (low, high) = unsafe {
        (
            _mm256_loadu_si256(low.as_ptr().cast::<__m256i>()),
            _mm256_loadu_si256(high.as_ptr().cast::<__m256i>()),
        )
    };
    let (low, high) = (half_avx2(low), half_avx2(high));
    let join = |l: u32, h: u32| u64::from(l) | u64::from(h) << 32;
    Word {
        base64: join(low[0], high[0]),
        backslash: join(low[1], high[1]),
        percent: join(low[2], high[2]),
    }
}

/// The three masks of [`Word`] for 32 bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn half_avx2(v: std::arch::x86_64::__m256i) -> [u32; 3] {
    use std::arch::x86_64::*;
    let table = |t: [i8; 16]| {
        _mm256_setr_epi8(
            t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], t[12], t[13],
            t[14], t[15], t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11],
            t[12], t[13], t[14], t[15],
        )
    };
    let nibble = _mm256_set1_epi8(0x0f);
    let high = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble);
    let low = _mm256_and_si256(v, nibble);
    let groups = _mm256_and_si256(
        _mm256_shuffle_epi8(table(HIGH_NIBBLE), high),
        _mm256_shuffle_epi8(table(LOW_NIBBLE), low),
    );
    // movemask packs the top bit of each byte; the casts keep all 32 bits.
    let mask = |m: __m256i| _mm256_movemask_epi8(m) as u32;
    [
        !mask(_mm256_cmpeq_epi8(groups, _mm256_setzero_si256())),
        mask(_mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'\\' as i8))),
        mask(_mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'%' as i8))),
    ]
}

/// One run of base64 characters: `=` ends base64 text (padding), so `key=VALUE` holds
/// a run after it; each piece is tried on its own.
fn runs(text: &str, span: Range<usize>, buf: &mut Vec<u8>, out: &mut Vec<EncodedRun>) {
    let b = text.as_bytes();
    let mut from = span.start;
    while from < span.end {
        let body_end = memchr::memchr(b'=', &b[from..span.end]).map_or(span.end, |k| from + k);
        let end = b[body_end..span.end]
            .iter()
            .position(|c| *c != b'=')
            .map_or(span.end, |k| body_end + k);
        if body_end - from >= MIN_RUN
            && let Some(run) = base64_or_hex(text, from..end, buf)
        {
            out.push(run);
        }
        from = end;
    }
}

fn base64_or_hex(text: &str, span: Range<usize>, buf: &mut Vec<u8>) -> Option<EncodedRun> {
    let run = &text[span.clone()];
    // A run glued to a URL or path is most likely part of it; percent() covers URLs.
    let mut hexish = run;
    // Every leading "0x", as `trim_start_matches("0x")` would (without building a
    // substring searcher per run).
    while let Some(rest) = hexish.strip_prefix("0x") {
        hexish = rest;
    }
    buf.clear();
    if hexish.len() >= MIN_RUN
        && hexish.len().is_multiple_of(2)
        && hexish.bytes().all(|c| c.is_ascii_hexdigit())
    {
        for pair in hexish.as_bytes().chunks_exact(2) {
            buf.push(hex_pair(pair[0], pair[1])?);
        }
        return readable(buf).map(|decoded| EncodedRun {
            span,
            encoding: Encoding::Hex,
            decoded,
        });
    }
    let body = run.trim_end_matches('=');
    if memchr::memchr(b'=', body.as_bytes()).is_some() {
        return None;
    }
    let body = if body.len() % 4 == 1 {
        &body[..body.len() - 1]
    } else {
        body
    };
    let engine = if memchr::memchr2(b'-', b'_', body.as_bytes()).is_some() {
        &URL_SAFE
    } else {
        &STANDARD
    };
    // Blobs (keys, images, archives) are long and decode to binary: their first bytes
    // are enough to tell. A prefix of whole quads decodes to the first bytes of the
    // whole decoding, and fails to decode only if the whole fails.
    if let Some(head) = body.get(..PREFIX)
        && body.len() > 2 * PREFIX
    {
        engine.decode_vec(head, buf).ok()?;
        if !may_read(buf) {
            return None;
        }
        buf.clear();
    }
    engine.decode_vec(body, buf).ok()?;
    let decoded = readable(buf)?;
    Some(EncodedRun {
        span,
        encoding: Encoding::Base64,
        decoded,
    })
}

/// `\x69\x67…` escapes (at least eight in a row), at the `starts` of [`Marks`].
fn escapes(text: &str, starts: &[usize], buf: &mut Vec<u8>, out: &mut Vec<EncodedRun>) {
    let b = text.as_bytes();
    for &start in starts {
        if start > 0 && b[start - 1] == b'\\' || out.last().is_some_and(|r| r.span.end > start) {
            continue;
        }
        buf.clear();
        let mut i = start;
        while i + 4 <= b.len() && &b[i..i + 2] == b"\\x" {
            match hex_pair(b[i + 2], b[i + 3]) {
                Some(v) => buf.push(v),
                None => break,
            }
            i += 4;
        }
        if buf.len() >= 8
            && let Some(decoded) = readable(buf)
        {
            out.push(EncodedRun {
                span: start..i,
                encoding: Encoding::Hex,
                decoded,
            });
        }
    }
}

/// `%XX` escapes in `token`, counted as [`percent`] decodes them.
fn escape_count(token: &[u8]) -> usize {
    let mut count = 0;
    let mut k = 0;
    while k < token.len() {
        if token[k] == b'%'
            && let Some(&[hi, lo]) = token.get(k + 1..k + 3)
            && hex_pair(hi, lo).is_some()
        {
            count += 1;
            k += 3;
        } else {
            k += 1;
        }
    }
    count
}

/// Tokens (between blanks) with several `%XX` escapes, found from the percent `signs`
/// of [`Marks`].
fn percent(text: &str, signs: &[usize], buf: &mut Vec<u8>, out: &mut Vec<EncodedRun>) {
    let b = text.as_bytes();
    let mut next = 0;
    for &p in signs {
        if p < next {
            continue;
        }
        let start = b[..p]
            .iter()
            .rposition(|c| c.is_ascii_whitespace())
            .map_or(0, |k| k + 1);
        let end = b[p..]
            .iter()
            .position(|c| c.is_ascii_whitespace())
            .map_or(b.len(), |k| p + k);
        next = end;
        let token = &b[start..end];
        // Most `%` are percentages; count before decoding anything.
        if escape_count(token) < MIN_ESCAPES {
            continue;
        }
        buf.clear();
        let mut k = 0;
        while k < token.len() {
            let hex = match token.get(k + 1..k + 3) {
                Some(&[hi, lo]) => hex_pair(hi, lo),
                _ => None,
            };
            match (token[k], hex) {
                (b'%', Some(v)) => {
                    buf.push(v);
                    k += 3;
                }
                (b'+', _) => {
                    buf.push(b' ');
                    k += 1;
                }
                (c, _) => {
                    buf.push(c);
                    k += 1;
                }
            }
        }
        if let Some(decoded) = readable(buf) {
            out.push(EncodedRun {
                span: start..end,
                encoding: Encoding::Url,
                decoded,
            });
        }
    }
}

#[cfg(test)]
mod reference;

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose;
    use proptest::prelude::*;

    use super::*;

    /// Maximal runs of base64 bytes at least [`MIN_RUN`] long, one byte at a time.
    fn plain_long_runs(b: &[u8]) -> Vec<Range<usize>> {
        let mut want = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let start = i;
            while i < b.len() && is_b64(b[i]) {
                i += 1;
            }
            if i - start >= MIN_RUN {
                want.push(start..i);
            }
            i += 1;
        }
        want
    }

    /// Text in pieces that each step looks for: encodings of readable text that decode
    /// (and near misses that do not), words, blanks and non-ASCII characters, glued
    /// together so that runs cross 64-byte words and touch each other.
    fn rich_text() -> impl Strategy<Value = String> {
        // Short, long (decoded in two goes), and with a control character late.
        let readable = "[a-zA-Z0-9 ]{3,40}|[a-zé日 \n]{40,140}|[a-z ]{60,100}\u{1}[a-z]{0,9}";
        let piece = prop_oneof![
            "[a-zA-Z0-9+/=_-]{0,90}",
            prop::collection::vec(any::<u8>(), 40..120)
                .prop_map(|b| general_purpose::STANDARD_NO_PAD.encode(b)),
            "[a-z]{1,12}",
            "[ \n\t]{1,3}",
            "[éü日本😀\u{a0}\u{200b}]{1,3}",
            "[0-9a-fA-Fx%+=\\\\ ]{1,30}",
            (readable, any::<bool>(), any::<bool>()).prop_map(|(t, url, pad)| {
                match (url, pad) {
                    (false, true) => general_purpose::STANDARD.encode(t),
                    (false, false) => general_purpose::STANDARD_NO_PAD.encode(t),
                    (true, true) => general_purpose::URL_SAFE.encode(t),
                    (true, false) => general_purpose::URL_SAFE_NO_PAD.encode(t),
                }
            }),
            (readable, any::<bool>()).prop_map(|(t, prefix)| {
                let hex: String = t.bytes().map(|c| format!("{c:02x}")).collect();
                if prefix { format!("0x{hex}") } else { hex }
            }),
            (readable, "(\\\\\\\\|x|\\\\x\\+|\\\\xz)?").prop_map(|(t, glue)| {
                let esc: String = t.bytes().map(|c| format!("\\x{c:02X}")).collect();
                format!("{glue}{esc}")
            }),
            (readable, "(%|%z|%\\+4|\\+|=)?").prop_map(|(t, glue)| {
                let url: String = t
                    .bytes()
                    .map(|c| match c {
                        b' ' => "+".to_owned(),
                        c if c % 3 == 0 => format!("%{c:02x}"),
                        c => char::from(c).to_string(),
                    })
                    .collect();
                format!("{url}{glue}")
            }),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn long_runs_skipping_equals_a_plain_scan(s in "[a-c=+ .]{0,300}") {
            let b = s.as_bytes();
            prop_assert_eq!(scan(b).runs, plain_long_runs(b));
            prop_assert_eq!(scan_with(b, word_portable).runs, plain_long_runs(b));
        }

        #[test]
        fn marks_of_rich_text_equal_plain_scans(s in rich_text()) {
            let b = s.as_bytes();
            for marks in [scan(b), scan_with(b, word_portable)] {
                prop_assert_eq!(marks.runs, plain_long_runs(b));
                prop_assert_eq!(
                    marks.escapes,
                    memchr::memmem::find_iter(b, b"\\x").collect::<Vec<_>>()
                );
                prop_assert_eq!(marks.percents, memchr::memchr_iter(b'%', b).collect::<Vec<_>>());
            }
        }

        #[test]
        fn encoded_runs_equal_the_reference(s in rich_text()) {
            prop_assert_eq!(encoded_runs(&s), reference::encoded_runs(&s));
        }

        #[test]
        fn encoded_runs_of_any_text_equal_the_reference(s in "(?s).{0,200}") {
            prop_assert_eq!(encoded_runs(&s), reference::encoded_runs(&s));
        }

        #[test]
        fn hex_pairs_read_as_from_str_radix(hi in any::<u8>(), lo in any::<u8>()) {
            let radix = std::str::from_utf8(&[hi, lo])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            prop_assert_eq!(hex_pair(hi, lo), radix);
        }
    }

    #[test]
    fn every_byte_is_classified_like_the_table() {
        let bytes: Vec<u8> = (0..=255).collect();
        for (k, chunk) in bytes.as_chunks::<64>().0.iter().enumerate() {
            let mask = |pred: &dyn Fn(u8) -> bool| {
                (0..64).fold(0u64, |m, i| m | u64::from(pred(chunk[i])) << i)
            };
            let want = Word {
                base64: mask(&is_b64),
                backslash: mask(&|c| c == b'\\'),
                percent: mask(&|c| c == b'%'),
            };
            assert_eq!(word_portable(chunk), want, "bytes {}..", k * 64);
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, checked just above.
                assert_eq!(unsafe { word_avx2(chunk) }, want, "bytes {}..", k * 64);
            }
        }
    }

    #[test]
    fn runs_touching_word_edges_are_found() {
        for len in [15, 16, 17, 63, 64, 65, 127, 128, 129, 200] {
            for start in [0, 1, 47, 48, 49, 63, 64, 65] {
                let mut text = vec![b' '; 300];
                text[start..start + len].fill(b'A');
                let want = plain_long_runs(&text);
                assert_eq!(scan(&text).runs, want, "{len} at {start}");
                assert_eq!(
                    scan_with(&text, word_portable).runs,
                    want,
                    "{len} at {start}"
                );
                let end = start + len;
                assert_eq!(scan(&text[..end]).runs, plain_long_runs(&text[..end]));
            }
        }
    }

    #[test]
    fn signs_at_word_edges_are_found() {
        for at in [0, 1, 62, 63, 64, 126, 127, 128] {
            for len in [at + 1, at + 2, 200] {
                let mut text = vec![b'a'; len];
                text[at] = b'\\';
                if at + 1 < len {
                    text[at + 1] = b'x';
                }
                let escapes: Vec<usize> = memchr::memmem::find_iter(&text, b"\\x").collect();
                assert_eq!(scan(&text).escapes, escapes, "\\x at {at} of {len}");
                assert_eq!(scan_with(&text, word_portable).escapes, escapes);
                text[at] = b'%';
                assert_eq!(scan(&text).percents, [at], "% at {at} of {len}");
                assert_eq!(scan_with(&text, word_portable).percents, [at]);
            }
        }
    }
}
