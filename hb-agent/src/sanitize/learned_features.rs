//! The learned stage's features and model file, shared by the agent (which scores with
//! them, `learned.rs`) and `cargo xtask sanitize-train` (which trains on them): this file
//! uses nothing outside `std`, so both crates include it and train and score the same way.
//!
//! Features: character n-grams (lengths [`N_MIN`]..=[`N_MAX`]) of the folded text —
//! lower case, every ASCII digit `0`, every whitespace run one space, a space before the
//! first character — each hashed into one of `2^bits` buckets. A text's vector is its
//! bucket counts divided by the square root of its n-gram count, so a long text and a
//! short one score on the same scale. The model is logistic regression over that vector:
//! `logit = bias + scale * Σ weight[bucket] / sqrt(count)` with `i8` weights.
//!
//! A long text is scored in windows of `window` folded characters, moved by `stride`
//! (the window's n-grams are a difference of two running sums taken every `stride`
//! characters, so the windows cost one pass over the text).

/// The model file's first bytes.
pub const MAGIC: &[u8; 8] = b"HBLNG01\n";
/// The shortest and the longest n-gram, in folded characters.
pub const N_MIN: usize = 2;
pub const N_MAX: usize = 5;
/// Bytes before the weights: magic, bits, window, stride, scale, bias, threshold.
const HEADER: usize = 8 + 4 * 6;

/// A model: the file's fields, weights borrowed or owned.
#[derive(Debug, Clone, PartialEq)]
pub struct Model<W> {
    /// `2^bits` buckets.
    pub bits: u32,
    /// Window and stride in folded characters.
    pub window: u32,
    pub stride: u32,
    /// One weight unit in logit.
    pub scale: f32,
    pub bias: f32,
    /// A window whose logit reaches this is a finding.
    pub threshold: f32,
    pub weights: W,
}

impl<W: AsRef<[i8]>> Model<W> {
    /// The file: the header (little-endian), then one byte per bucket.
    pub fn encode(&self) -> Vec<u8> {
        let w = self.weights.as_ref();
        let mut out = Vec::with_capacity(HEADER + w.len());
        out.extend_from_slice(MAGIC);
        for v in [self.bits, self.window, self.stride] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.scale, self.bias, self.threshold] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend(w.iter().map(|&b| b as u8));
        out
    }

    /// Every window of `text` with its logit, in order: byte range in `text`, logit.
    /// A text shorter than one window is one window.
    pub fn windows(&self, text: &str) -> Vec<(std::ops::Range<usize>, f32)> {
        window_sums(
            text,
            self.bits,
            self.window,
            self.stride,
            self.weights.as_ref(),
        )
        .into_iter()
        .map(|(r, sum, count)| (r, self.logit(sum, count)))
        .collect()
    }

    /// A window's logit from its weight sum and n-gram count. The sum is an integer, so
    /// `sum as f64` is exact (|sum| ≤ 127 × count, far under 2^53) and equals the `f64`
    /// sum [`windows`] adds weight by weight.
    fn logit(&self, sum: i64, count: usize) -> f32 {
        let logit = f64::from(self.bias)
            + f64::from(self.scale) * sum as f64 / (count.max(1) as f64).sqrt();
        logit as f32
    }

    /// The highest window logit of `text` (the bias alone for a text with no n-gram).
    pub fn max_logit(&self, text: &str) -> f32 {
        self.windows(text)
            .into_iter()
            .map(|(_, l)| l)
            .fold(f32::NEG_INFINITY, f32::max)
            .max(if text.is_empty() {
                self.bias
            } else {
                f32::NEG_INFINITY
            })
    }
}

impl Model<Vec<i8>> {
    /// Reads a model file; `None` if it is not one (wrong magic, sizes or values).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return None;
        }
        let word = |i: usize| -> [u8; 4] {
            let mut w = [0; 4];
            w.copy_from_slice(&bytes[8 + 4 * i..12 + 4 * i]);
            w
        };
        let (bits, window, stride) = (
            u32::from_le_bytes(word(0)),
            u32::from_le_bytes(word(1)),
            u32::from_le_bytes(word(2)),
        );
        let (scale, bias, threshold) = (
            f32::from_le_bytes(word(3)),
            f32::from_le_bytes(word(4)),
            f32::from_le_bytes(word(5)),
        );
        let ok = (8..=24).contains(&bits)
            && stride > 0
            && window >= stride
            && window % stride == 0
            && scale.is_finite()
            && bias.is_finite()
            && threshold.is_finite()
            && bytes.len() == HEADER + (1usize << bits);
        if !ok {
            return None;
        }
        Some(Model {
            bits,
            window,
            stride,
            scale,
            bias,
            threshold,
            weights: bytes[HEADER..].iter().map(|&b| b as i8).collect(),
        })
    }
}

/// Folds one character: lower case, digits to `0`, whitespace to a space.
fn fold(c: char) -> char {
    if c.is_ascii() {
        fold_ascii(c as u8) as char
    } else if c.is_whitespace() {
        ' '
    } else {
        c.to_lowercase().next().unwrap_or(c)
    }
}

/// [`fold`] of an ASCII byte.
const fn fold_ascii(b: u8) -> u8 {
    if b.is_ascii_digit() {
        b'0'
    } else if b.is_ascii_whitespace() {
        b' '
    } else {
        b.to_ascii_lowercase()
    }
}

const SEED: u64 = 0x5bd1_e995_cafe_f00d;
const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

const fn mix(h: u64, c: char) -> u64 {
    (h.rotate_left(23) ^ c as u64).wrapping_mul(MUL)
}

/// Calls `emit(byte_offset, bucket)` for every n-gram of the folded text, at the byte
/// offset of the character that ends it, in order.
pub fn ngrams(text: &str, bits: u32, mut emit: impl FnMut(usize, u32)) {
    // hashes[k]: the (k+1)-gram ending at the previous folded character.
    let mut hashes = [0u64; N_MAX];
    // A leading space: words at the start of the text have their start marked too.
    hashes[0] = mix(SEED, ' ');
    let mut have = 1;
    let mut last_space = true;
    for (at, c) in text.char_indices() {
        let c = fold(c);
        if c == ' ' {
            if last_space {
                continue;
            }
            last_space = true;
        } else {
            last_space = false;
        }
        for k in (1..have.min(N_MAX - 1) + 1).rev() {
            hashes[k] = mix(hashes[k - 1], c);
        }
        hashes[0] = mix(SEED, c);
        have = (have + 1).min(N_MAX);
        for h in &hashes[N_MIN - 1..have] {
            emit(at, (h >> (64 - bits)) as u32);
        }
    }
}

/// A text's feature vector: (bucket, count / sqrt(n-gram count)), buckets ascending.
pub fn features(text: &str, bits: u32) -> Vec<(u32, f32)> {
    let mut buckets = Vec::new();
    ngrams(text, bits, |_, b| buckets.push(b));
    let norm = 1.0 / (buckets.len().max(1) as f32).sqrt();
    buckets.sort_unstable();
    let mut out: Vec<(u32, f32)> = Vec::new();
    for b in buckets {
        match out.last_mut() {
            Some((last, v)) if *last == b => *v += norm,
            _ => out.push((b, norm)),
        }
    }
    out
}

/// The windows of `text`: (byte range, Σ weight(bucket), n-gram count) per window of
/// `window` folded characters, moved by `stride`; one window when the text is shorter.
pub fn windows(
    text: &str,
    bits: u32,
    window: u32,
    stride: u32,
    weight: impl Fn(u32) -> f64,
) -> Vec<(std::ops::Range<usize>, f64, usize)> {
    // Running sums at every stride-th folded character: (byte offset, Σ weight, count).
    let mut marks: Vec<(usize, f64, usize)> = vec![(0, 0.0, 0)];
    let (mut sum, mut count, mut chars, mut last_at) = (0.0, 0usize, 0u32, usize::MAX);
    ngrams(text, bits, |at, b| {
        if at != last_at {
            if chars > 0 && chars % stride == 0 {
                marks.push((at, sum, count));
            }
            chars += 1;
            last_at = at;
        }
        sum += weight(b);
        count += 1;
    });
    marks.push((text.len(), sum, count));
    let span = (window / stride) as usize;
    let last = marks.len() - 1;
    if last <= span {
        return vec![(0..text.len(), sum, count)];
    }
    let mut out = Vec::with_capacity(last - span + 1);
    let mut i = 0;
    loop {
        let j = (i + span).min(last);
        let (a, b) = (marks[i], marks[j]);
        out.push((a.0..b.0, b.1 - a.1, b.2 - a.2));
        if j == last {
            break;
        }
        i += 1;
    }
    out
}

/// [`fold`] of every ASCII byte.
const FOLD_ASCII: [u8; 128] = {
    let mut t = [0; 128];
    let mut b = 0;
    while b < 128 {
        t[b] = fold_ascii(b as u8);
        b += 1;
    }
    t
};

/// The 1-gram hash of every folded ASCII byte.
const FIRST_ASCII: [u64; 128] = {
    let mut t = [0; 128];
    let mut b = 0;
    while b < 128 {
        t[b] = mix(SEED, fold_ascii(b as u8) as char);
        b += 1;
    }
    t
};

/// The 1-gram hash and the folded byte of every ASCII byte, side by side for the fast
/// loop of [`window_scan`].
const ASCII: [(u64, u64); 128] = {
    let mut t = [(0, 0); 128];
    let mut b = 0;
    while b < 128 {
        t[b] = (FIRST_ASCII[b], FOLD_ASCII[b] as u64);
        b += 1;
    }
    t
};

/// The 1-gram hash of a space: the last folded character was a space exactly when the
/// 1-gram hash equals it (`mix` is a bijection for a fixed `h`: `MUL` is odd).
const FIRST_SPACE: u64 = mix(SEED, ' ');

/// The number of n-grams in the first `chars` folded characters (1, 2, 3, then 4 per
/// character: the orders reached so far).
fn ngram_count(chars: usize) -> usize {
    if chars <= N_MAX - N_MIN + 1 {
        chars * (chars + 1) / 2
    } else {
        (N_MAX - N_MIN + 1) * chars - 6
    }
}

/// [`windows`] with the model's `i8` weights, the sums in integers: the same windows,
/// sums and counts, for a fraction of the instructions (the agent's learned stage runs
/// this on every stretch it judges). One pass over the bytes: an ASCII byte is folded
/// and hashed by table lookup, other characters are decoded and folded as [`ngrams`]
/// folds them; the four n-gram hashes stay in registers.
pub fn window_sums(
    text: &str,
    bits: u32,
    window: u32,
    stride: u32,
    weights: &[i8],
) -> Vec<(std::ops::Range<usize>, i64, usize)> {
    // The committed model's size, with the bucket's bound known to the compiler (no
    // bounds check per n-gram); any other size goes through the checked index.
    if bits == 18
        && let Ok(w) = <&[i8; 1 << 18]>::try_from(weights)
    {
        return window_scan(text, window, stride, |h| {
            i32::from(w[(h >> (64 - 18)) as usize])
        });
    }
    let shift = 64 - bits;
    window_scan(text, window, stride, |h| {
        i32::from(weights[(h >> shift) as usize])
    })
}

/// The body of [`window_sums`]: `weight(hash)` is the n-gram's weight.
#[inline(always)]
fn window_scan(
    text: &str,
    window: u32,
    stride: u32,
    weight: impl Fn(u64) -> i32,
) -> Vec<(std::ops::Range<usize>, i64, usize)> {
    let bytes = text.as_bytes();
    // As in `windows`: (byte offset, Σ weight, count) before every stride-th folded
    // character. The counts follow from the number of characters (`ngram_count`) and
    // are filled in at the end.
    let mut marks: Vec<(usize, i64, usize)> = vec![(0, 0, 0)];
    let mut sum = 0i64;
    // The 1- to 4-gram hashes ending at the previous folded character (`hashes` in
    // `ngrams`); those of orders not yet reached hold junk that is never used. `h1`
    // starts as a space's: the text is read as if a space came first.
    let (mut h1, mut h2, mut h3, mut h4) = (FIRST_SPACE, 0u64, 0u64, 0u64);
    // Folded characters read so far, while fewer than N_MAX - 1 (the orders reached).
    let mut warm = 0;
    // Folded characters until the next mark.
    let mut until_mark = stride;
    let mut i = 0;
    while i < bytes.len() {
        if warm == N_MAX - N_MIN {
            // The steady state's ASCII characters, at most `until_mark` bytes (so at most
            // that many characters: no mark falls inside), in a loop with nothing else
            // in it, so the hashes and the sum stay in registers.
            let chunk = &bytes[i..bytes.len().min(i + until_mark as usize)];
            let mut h = [h1, h2, h3, h4];
            let (j, skipped, part) = ascii_run(chunk, &mut h, &weight);
            [h1, h2, h3, h4] = h;
            sum += part;
            i += j;
            until_mark -= (j - skipped) as u32;
            if i >= bytes.len() {
                break;
            }
        }
        // One character the loop above does not take: a non-ASCII one, one of the
        // text's first, or one a mark comes before.
        let at = i;
        let b = bytes[i];
        let (c, first) = if b < 0x80 {
            i += 1;
            (
                u64::from(FOLD_ASCII[usize::from(b)]),
                FIRST_ASCII[usize::from(b)],
            )
        } else {
            let (c, len) = decode_utf8(bytes, i);
            i += len;
            let f = fold(c);
            (u64::from(f), mix(SEED, f))
        };
        // A blank after a blank is not read.
        if first == FIRST_SPACE && h1 == FIRST_SPACE {
            continue;
        }
        if until_mark == 0 {
            marks.push((at, sum, 0));
            until_mark = stride;
        }
        until_mark -= 1;
        let next = |h: u64| (h.rotate_left(23) ^ c).wrapping_mul(MUL);
        let (n2, n3, n4, n5) = (next(h1), next(h2), next(h3), next(h4));
        (h1, h2, h3, h4) = (first, n2, n3, n4);
        if warm == N_MAX - N_MIN {
            sum += i64::from(weight(n2) + weight(n3) + weight(n4) + weight(n5));
        } else {
            // The text's first characters: only the orders reached so far.
            warm += 1;
            for h in [n2, n3, n4, n5].into_iter().take(warm) {
                sum += i64::from(weight(h));
            }
        }
    }
    let stride = stride as usize;
    for (k, m) in marks.iter_mut().enumerate() {
        m.2 = ngram_count(k * stride);
    }
    let chars = (marks.len() - 1) * stride + (stride - until_mark as usize);
    let count = ngram_count(chars);
    marks.push((text.len(), sum, count));
    let span = window as usize / stride;
    let last = marks.len() - 1;
    if last <= span {
        return vec![(0..text.len(), sum, count)];
    }
    (0..=last - span)
        .map(|i| {
            let (a, b) = (marks[i], marks[i + span]);
            (a.0..b.0, b.1 - a.1, b.2 - a.2)
        })
        .collect()
}

/// The steady state's ASCII characters at the start of `chunk`, for [`window_scan`]:
/// steps the 1- to 4-gram hashes `h` over them, in a loop with nothing else in it so
/// that the hashes and the sum stay in registers; returns the bytes read, the blanks
/// among them that were not read (a blank after a blank) and the n-grams' weight sum.
/// Stops at the first non-ASCII byte. Not inlined: where the compiler inlined
/// [`window_scan`] into its caller, this loop came out 1.5 M instructions per MiB
/// slower than where it did not.
#[inline(never)]
fn ascii_run(chunk: &[u8], h: &mut [u64; 4], weight: &impl Fn(u64) -> i32) -> (usize, usize, i64) {
    let blank = |b: u8| b < 0x80 && ASCII[usize::from(b)].1 == u64::from(b' ');
    let [mut h1, mut h2, mut h3, mut h4] = *h;
    let mut sum = 0i64;
    let mut rest = chunk;
    // Blanks after a blank are not read (as a run that began before the chunk).
    let mut skipped = 0;
    if h1 == FIRST_SPACE {
        while let [b, tail @ ..] = rest
            && blank(*b)
        {
            rest = tail;
            skipped += 1;
        }
    }
    while let [b, tail @ ..] = rest {
        if *b >= 0x80 {
            break;
        }
        rest = tail;
        let (first, c) = ASCII[usize::from(*b)];
        // Each order's weight is added as soon as its hash is known, so no hash
        // outlives its step: fewer values live at once, none spilled.
        let next = |h: u64| (h.rotate_left(23) ^ c).wrapping_mul(MUL);
        sum += i64::from(weight(next(h4)));
        h4 = next(h3);
        sum += i64::from(weight(h4));
        h3 = next(h2);
        sum += i64::from(weight(h3));
        h2 = next(h1);
        sum += i64::from(weight(h2));
        h1 = first;
        if c == u64::from(b' ') {
            while let [b, tail @ ..] = rest
                && blank(*b)
            {
                rest = tail;
                skipped += 1;
            }
        }
    }
    *h = [h1, h2, h3, h4];
    (chunk.len() - rest.len(), skipped, sum)
}

/// The character that starts at byte `i` of valid UTF-8 whose byte `i` is not ASCII,
/// and its length in bytes.
#[inline]
fn decode_utf8(bytes: &[u8], i: usize) -> (char, usize) {
    let b = bytes[i];
    let cont = |k: usize| u32::from(bytes[i + k] & 0x3f);
    let (cp, len) = if b < 0xe0 {
        ((u32::from(b & 0x1f) << 6) | cont(1), 2)
    } else if b < 0xf0 {
        ((u32::from(b & 0x0f) << 12) | (cont(1) << 6) | cont(2), 3)
    } else {
        (
            (u32::from(b & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3),
            4,
        )
    };
    (
        char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER),
        len,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ASCII table is `fold` and the 1-gram hash, byte by byte.
    #[test]
    fn ascii_table_is_fold_and_mix() {
        for b in 0..128u8 {
            let f = fold(b as char);
            assert_eq!(FOLD_ASCII[b as usize], f as u8, "byte {b}");
            assert_eq!(FIRST_ASCII[b as usize], mix(SEED, f), "byte {b}");
        }
    }

    /// `ngram_count` is the count `ngrams` emits.
    #[test]
    fn ngram_count_matches_ngrams() {
        let text: String = "ab cd".repeat(9);
        for end in 0..=text.len() {
            let mut n = 0;
            ngrams(&text[..end], 18, |_, _| n += 1);
            let chars = text[..end].chars().count();
            assert_eq!(ngram_count(chars), n, "{:?}", &text[..end]);
        }
    }

    /// `decode_utf8` reads every non-ASCII character as `str` does.
    #[test]
    fn decode_utf8_matches_chars() {
        let text: String = ('\u{80}'..='\u{10ffff}').step_by(7).collect();
        let mut i = 0;
        for c in text.chars() {
            assert_eq!(decode_utf8(text.as_bytes(), i), (c, c.len_utf8()));
            i += c.len_utf8();
        }
    }
}
