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
        let w = self.weights.as_ref();
        windows(text, self.bits, self.window, self.stride, |b| {
            f64::from(w[b as usize])
        })
        .into_iter()
        .map(|(r, sum, count)| {
            let logit =
                f64::from(self.bias) + f64::from(self.scale) * sum / (count.max(1) as f64).sqrt();
            (r, logit as f32)
        })
        .collect()
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
        if c.is_ascii_digit() {
            '0'
        } else if c.is_ascii_whitespace() {
            ' '
        } else {
            c.to_ascii_lowercase()
        }
    } else if c.is_whitespace() {
        ' '
    } else {
        c.to_lowercase().next().unwrap_or(c)
    }
}

const SEED: u64 = 0x5bd1_e995_cafe_f00d;
const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix(h: u64, c: char) -> u64 {
    (h.rotate_left(23) ^ u64::from(c as u32)).wrapping_mul(MUL)
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
