//! The learned stage's features and model file, shared by the agent (which scores with
//! them, `learned.rs`) and `cargo xtask sanitize-train` (which trains on them): this file
//! uses nothing outside `std`, so both crates include it and train and score the same way.
//!
//! Features: character n-grams (lengths [`N_MIN`]..=[`N_MAX`]) of the folded text —
//! lower case, every ASCII digit `0`, every whitespace character a space (runs are kept:
//! collapsing them cost a test and a branch per character), a space before the first
//! character — each hashed into one of `2^bits` buckets. The last [`N_MAX`] folded
//! characters are kept as codes in one `u64` (a shift-in window, [`code`]), and one
//! multiply of it hashes every order at once (multiply-shift over each order's low bits,
//! [`bucket`]): no hash depends on another. The scan keeps the window's product rather
//! than the window ([`shift_in`]), so an ASCII character costs one table load (its fold
//! times the multiplier), a shift and an add, and a shift and a load per order. A text's
//! vector is its bucket counts divided by the square root of its n-gram count, so a long
//! text and a short one score on the same scale. The model is logistic regression over
//! that vector: `logit = bias + scale * Σ weight[bucket] / sqrt(count)` with `i8` weights.
//!
//! A long text is scored in windows of `window` folded characters, moved by `stride`
//! (the window's n-grams are a difference of two running sums taken every `stride`
//! characters, so the windows cost one pass over the text).

/// The model file's first bytes.
pub const MAGIC: &[u8; 8] = b"HBLNG02\n";
/// The shortest and the longest n-gram, in folded characters.
pub const N_MIN: usize = 4;
pub const N_MAX: usize = 4;
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

/// Bits per folded character in the shift-in window: [`N_MAX`] characters fit in a `u64`.
const CODE_BITS: u32 = 64 / N_MAX as u32;
const CODE_MASK: u64 = (1 << CODE_BITS) - 1;
/// The odd multiplier of the multiply-shift hash (the golden ratio's 64-bit fraction).
const MUL: u64 = 0x9e37_79b9_7f4a_7c15;
/// Seeds the hash that gives a non-ASCII character its code.
const SEED: u64 = 0x5bd1_e995_cafe_f00d;

/// A folded character's code in the window: an ASCII character is its byte, any other
/// character the code's top bit (so it never reads as ASCII) and the rest a hash of it.
const fn code(c: char) -> u64 {
    if c.is_ascii() {
        c as u64
    } else {
        (1 << (CODE_BITS - 1)) | ((c as u64 ^ SEED).wrapping_mul(MUL) >> (65 - CODE_BITS))
    }
}

/// The bucket of the `n`-gram at the end of `window` (the last folded characters' codes,
/// the newest in the low bits) from `product = window * MUL`: the top `bits` bits of the
/// product's low `n` codes' bits, which depend on the `n` newest codes alone. So one
/// multiply hashes every order, each by multiply-shift over its own word, and no order's
/// hash waits for another's. Needs `bits <= N_MIN * CODE_BITS`.
#[inline(always)]
const fn bucket(product: u64, n: u32, bits: u32) -> u64 {
    (product >> (CODE_BITS * n - bits)) & ((1 << bits) - 1)
}

/// Calls `each(byte_offset, buckets)` for every character of the folded text, in order:
/// its byte offset and the buckets of the n-grams it ends (none for the first character
/// when [`N_MIN`] > 2).
pub fn ngrams(text: &str, bits: u32, mut each: impl FnMut(usize, &[u32])) {
    // The codes of the last folded characters, the newest in the low bits. A leading
    // space: words at the start of the text have their start marked too.
    let mut window = code(' ');
    let mut have = 1;
    for (at, c) in text.char_indices() {
        let c = fold(c);
        window = (window << CODE_BITS) | code(c);
        have = (have + 1).min(N_MAX);
        let product = window.wrapping_mul(MUL);
        let mut buckets = [0; N_MAX];
        for n in N_MIN..=have {
            buckets[n - N_MIN] = bucket(product, n as u32, bits) as u32;
        }
        each(at, &buckets[..(have + 1).saturating_sub(N_MIN)]);
    }
}

/// A text's feature vector: (bucket, count / sqrt(n-gram count)), buckets ascending.
pub fn features(text: &str, bits: u32) -> Vec<(u32, f32)> {
    let mut buckets = Vec::new();
    ngrams(text, bits, |_, b| buckets.extend_from_slice(b));
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
    let (mut sum, mut count, mut chars) = (0.0, 0usize, 0u32);
    ngrams(text, bits, |at, buckets| {
        if chars > 0 && chars % stride == 0 {
            marks.push((at, sum, count));
        }
        chars += 1;
        for &b in buckets {
            sum += weight(b);
            count += 1;
        }
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

/// Every ASCII byte's code times [`MUL`]: what shifting the byte into the window adds to
/// the window's product (see [`shift_in`]). One load folds and multiplies.
const FOLD_MUL: [u64; 256] = {
    let mut t = [0; 256];
    let mut b = 0;
    while b < 128 {
        t[b] = (fold_ascii(b as u8) as u64).wrapping_mul(MUL);
        b += 1;
    }
    t
};

/// The product of the window with one more code shifted in, from the window's product
/// and the code's: `((w << CODE_BITS) | c) * MUL = ((w * MUL) << CODE_BITS) + c * MUL`
/// (mod 2^64, `c` under 2^CODE_BITS). The scan keeps the product, never the window.
#[inline(always)]
const fn shift_in(product: u64, code_mul: u64) -> u64 {
    (product << CODE_BITS).wrapping_add(code_mul)
}

/// The code of the folded character `c` (not ASCII) times [`MUL`]. The characters of
/// the two-byte UTF-8 range (Latin, Greek, Cyrillic, Hebrew, Arabic) come from a table,
/// the ranges without case or blanks (kana, CJK ideographs, Hangul syllables) skip the
/// fold; [`fold`] decides the rest.
#[inline]
fn non_ascii_code_mul(c: char) -> u64 {
    let cp = c as u32;
    let code = if cp < 0x800 {
        u64::from(TWO_BYTE_CODES[(cp - 0x80) as usize])
    } else if is_caseless(cp) {
        code(c)
    } else {
        code(fold(c))
    };
    code.wrapping_mul(MUL)
}

/// Code points with no case mapping and no blank, whose fold is themselves (a test
/// checks every one): Hiragana to the CJK unified ideographs, and the Hangul syllables.
const fn is_caseless(cp: u32) -> bool {
    matches!(cp, 0x3040..=0x9fff | 0xac00..=0xd7a3)
}

/// [`code`] of [`fold`] of every character from U+0080 to U+07FF.
static TWO_BYTE_CODES: std::sync::LazyLock<Vec<u16>> = std::sync::LazyLock::new(|| {
    (0x80..0x800u32)
        .map(|cp| char::from_u32(cp).map_or(0, |c| code(fold(c)) as u16))
        .collect()
});

/// The number of n-grams in the first `chars` folded characters: the `t`-th character
/// ends an n-gram of every order up to `t + 1` (the leading space counts).
fn ngram_count(chars: usize) -> usize {
    (1..=chars.min(N_MAX)).map(orders_at).sum::<usize>()
        + chars.saturating_sub(N_MAX) * (N_MAX - N_MIN + 1)
}

/// The number of orders the `t`-th folded character (from 1) ends an n-gram of.
const fn orders_at(t: usize) -> usize {
    let top = if t + 1 < N_MAX { t + 1 } else { N_MAX };
    (top + 1).saturating_sub(N_MIN)
}

/// [`windows`] with the model's `i8` weights, the sums in integers: the same windows,
/// sums and counts, for a fraction of the instructions (the agent's learned stage runs
/// this on every stretch it judges). One pass over the bytes: an ASCII byte is folded
/// and multiplied by one table look-up, other characters are decoded and folded as
/// [`ngrams`] folds them; the window's product stays in a register.
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
        return window_scan(text, window, stride, |product, n| {
            i32::from(w[bucket(product, n, 18) as usize])
        });
    }
    window_scan(text, window, stride, |product, n| {
        i32::from(weights[bucket(product, n, bits) as usize])
    })
}

/// The body of [`window_sums`]: `weight(product, n)` is the weight of the `n`-gram whose
/// window's product is `product`.
#[inline(always)]
fn window_scan(
    text: &str,
    window: u32,
    stride: u32,
    weight: impl Fn(u64, u32) -> i32,
) -> Vec<(std::ops::Range<usize>, i64, usize)> {
    let bytes = text.as_bytes();
    // As in `windows`: (byte offset, Σ weight, count) before every stride-th folded
    // character. The counts follow from the number of characters (`ngram_count`) and
    // are filled in at the end.
    let mut marks: Vec<(usize, i64, usize)> = vec![(0, 0, 0)];
    let mut sum = 0i64;
    // The product of the last folded characters' codes (`window` in `ngrams`) and
    // `MUL`, read as if a space came first.
    let mut product = SPACE.wrapping_mul(MUL);
    // Folded characters read so far, while fewer than N_MAX - 1 (from then on every
    // character ends an n-gram of every order).
    let mut warm = 0;
    // Folded characters until the next mark.
    let mut until_mark = stride;
    let mut i = 0;
    while i < bytes.len() {
        // A mark before the next character.
        if until_mark == 0 {
            marks.push((i, sum, 0));
            until_mark = stride;
        }
        if warm < N_MAX - 1 {
            // The text's first characters: only the orders reached so far.
            let code_mul = if bytes[i] < 0x80 {
                FOLD_MUL[usize::from(bytes[i])]
            } else {
                non_ascii_code_mul(decode_utf8(bytes, i).0)
            };
            i += utf8_len(bytes[i]);
            until_mark -= 1;
            warm += 1;
            product = shift_in(product, code_mul);
            for n in N_MIN..N_MIN + orders_at(warm) {
                sum += i64::from(weight(product, n as u32));
            }
            continue;
        }
        // The characters that start in the next `until_mark` bytes: at most that many,
        // so no mark falls among them.
        let end = bytes.len().min(i + until_mark as usize);
        let (next, read, part) = steady_run(bytes, i, end, &mut product, &weight);
        sum += part;
        i = next;
        until_mark -= read;
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

/// The weights of every order's n-gram at a window whose product is `product`, added.
#[inline(always)]
fn weight_sum(product: u64, weight: &impl Fn(u64, u32) -> i32) -> i32 {
    (N_MIN as u32..=N_MAX as u32)
        .map(|n| weight(product, n))
        .sum()
}

/// A space's code.
const SPACE: u64 = b' ' as u64;

/// The length in bytes of the UTF-8 character whose first byte is `b`.
#[inline(always)]
fn utf8_len(b: u8) -> usize {
    match b {
        0..0xc0 => 1,
        0xc0..0xe0 => 2,
        0xe0..0xf0 => 3,
        _ => 4,
    }
}

/// The steady state's characters that start in `bytes[i..end]`, for [`window_scan`]:
/// shifts their codes into the window's `product` and adds the weights of the n-grams
/// each ends; returns where it stopped (the last character may end past `end`), the
/// characters read and their n-grams' weight sum. ASCII stretches go through
/// [`ascii_weights`]; a non-ASCII character is decoded and folded one at a time. Not
/// inlined: where the compiler inlined [`window_scan`] into its caller, the loop came
/// out slower than where it did not.
#[inline(never)]
fn steady_run(
    bytes: &[u8],
    mut i: usize,
    end: usize,
    product: &mut u64,
    weight: &impl Fn(u64, u32) -> i32,
) -> (usize, u32, i64) {
    let mut p = *product;
    let mut sum = 0i64;
    let mut read = 0;
    while i < end {
        if bytes[i] < 0x80 {
            let ascii = &bytes[i..i + ascii_prefix(&bytes[i..end])];
            sum += ascii_weights(ascii, &mut p, weight);
            i += ascii.len();
            read += ascii.len() as u32;
        } else {
            let (c, len) = decode_utf8(bytes, i);
            i += len;
            read += 1;
            p = shift_in(p, non_ascii_code_mul(c));
            sum += i64::from(weight_sum(p, weight));
        }
    }
    *product = p;
    (i, read, sum)
}

/// The weight sum of the n-grams that the ASCII characters `ascii` end, shifting them
/// into the window's `product`: one table load folds and multiplies a byte, one shift
/// and add moves the window, one load finds the weight. Four at a time, so the loop's
/// own counting is paid once per four.
#[inline(always)]
fn ascii_weights(ascii: &[u8], product: &mut u64, weight: &impl Fn(u64, u32) -> i32) -> i64 {
    let mut p = *product;
    let mut step = |b: u8| {
        p = shift_in(p, FOLD_MUL[usize::from(b)]);
        weight_sum(p, weight)
    };
    let mut sum = 0i64;
    let mut quads = ascii.chunks_exact(4);
    for q in &mut quads {
        sum += i64::from(step(q[0]) + step(q[1]) + step(q[2]) + step(q[3]));
    }
    for &b in quads.remainder() {
        sum += i64::from(step(b));
    }
    *product = p;
    sum
}

/// The length of the ASCII bytes at the start of `bytes`, read eight at a time.
fn ascii_prefix(bytes: &[u8]) -> usize {
    let mut n = 0;
    for word in bytes.chunks_exact(8) {
        let mut w = [0; 8];
        w.copy_from_slice(word);
        let high = u64::from_le_bytes(w) & 0x8080_8080_8080_8080;
        if high != 0 {
            return n + (high.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + bytes[n..].iter().take_while(|b| b.is_ascii()).count()
}

/// The character that starts at byte `i` of valid UTF-8 whose byte `i` is not ASCII,
/// and its length in bytes.
#[inline(always)]
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

    /// The ASCII table is `fold`'s code times `MUL`, and a character's code is its
    /// folded byte exactly when it is ASCII.
    #[test]
    fn ascii_table_is_fold() {
        for b in 0..128u8 {
            let f = fold(b as char);
            assert_eq!(FOLD_MUL[b as usize], code(f).wrapping_mul(MUL), "byte {b}");
            assert_eq!(code(f), u64::from(f as u8), "byte {b}");
        }
        for c in ['é', '日', '\u{10ffff}', 'ж'] {
            assert!(
                (1 << (CODE_BITS - 1)..=CODE_MASK).contains(&code(c)),
                "{c:?}"
            );
        }
    }

    /// The non-ASCII shortcuts give `fold`'s codes: the two-byte table, and the
    /// ranges taken as caseless, over every character they cover.
    #[test]
    fn non_ascii_codes_are_fold() {
        for c in ('\u{80}'..='\u{ffff}').chain(['\u{10000}', '\u{1f600}', '\u{10ffff}']) {
            let f = fold(c);
            assert_eq!(non_ascii_code_mul(c), code(f).wrapping_mul(MUL), "{c:?}");
            if is_caseless(c as u32) {
                assert_eq!(f, c, "{c:?}");
            }
        }
    }

    /// `ngram_count` is the count `ngrams` emits.
    #[test]
    fn ngram_count_matches_ngrams() {
        let text: String = "ab cd".repeat(9);
        for end in 0..=text.len() {
            let mut n = 0;
            ngrams(&text[..end], 18, |_, b| n += b.len());
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
