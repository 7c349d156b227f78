//! Live secrets: the exact values this process holds (decrypted vault values, live
//! handles) and the encodings a tool or an attacker would turn them into.
//!
//! Owns: the encodings of a registered value and the automata over all of them (a
//! [`LiveSet`], immutable once built and shared as `Arc`).
//! Must never: keep a value or an encoding outside a zeroized [`Secret`] (the automata
//! and the sampler's 4-byte windows are the exception: they have to hold what they look
//! for), or hand one out.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use aho_corasick::{AhoCorasick, AhoCorasickKind, Anchored, BuildError, MatchKind, StartKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

use crate::secret::Secret;

/// Shorter values are refused: they would redact ordinary words.
pub const MIN_SECRET_LEN: usize = 8;
/// Longer values are refused: the stream scrubber holds back as many bytes as the
/// longest encoding (six bytes per value byte: UTF-16 of percent-encoding, or a JSON
/// string escaping every character).
pub const MAX_SECRET_LEN: usize = 4096;

/// One registered value: its label and every form it is looked for in.
pub(super) struct LiveEntry {
    pub label: &'static str,
    pub forms: Vec<Secret>,
}

/// What scrubs look at: every registered value's forms, as segments (each an
/// automaton over the forms of some values) behind one sampler over all of them.
///
/// Segments keep registration cheap: a new value gets a small segment of its own, and
/// the newest segments merge when they grow to the size of the one before (a binary
/// counter), so there are O(log n) of them and each form is rebuilt O(log n) times.
/// Unregistering marks the value dead (its matches are ignored) and rebuilds its
/// segment only once half of the segment is dead. Scanning cost does not grow with the
/// number of segments: the sampler scans, and the segments are only asked, anchored,
/// at the rare positions it flags.
pub(super) struct LiveSet {
    pub segments: Vec<Arc<Segment>>,
    pub sampler: Arc<Sampler>,
    /// Unregistered values whose forms are still in a segment (and in the sampler).
    pub dead: Arc<HashSet<u64>>,
    pub longest: usize,
    /// The longest form made of base64 characters alone (see `wrapped`).
    pub longest_b64: usize,
}

/// An automaton over the forms of some registered values.
pub(super) struct Segment {
    /// The values it was built from, by registry id.
    pub entries: Vec<(u64, Arc<LiveEntry>)>,
    automaton: AhoCorasick,
    /// The value (index into `entries`) of each pattern.
    owner: Vec<usize>,
}

impl Segment {
    pub fn build(entries: Vec<(u64, Arc<LiveEntry>)>) -> Result<Option<Self>, BuildError> {
        let mut forms: Vec<&[u8]> = Vec::new();
        let mut owner = Vec::new();
        for (i, (_, e)) in entries.iter().enumerate() {
            for f in &e.forms {
                forms.push(f.expose());
                owner.push(i);
            }
        }
        if forms.is_empty() {
            return Ok(None);
        }
        // Only anchored searches at flagged positions: a DFA answers those fastest but
        // costs a transition table per state (about one per pattern byte), so past a
        // few hundred forms or 64 KiB of them (a few long values: a 4 KiB value has
        // about 1 MiB of forms) the contiguous NFA is the sane trade.
        let pattern_bytes: usize = forms.iter().map(|f| f.len()).sum();
        let kind = if forms.len() <= 512 && pattern_bytes <= 1 << 16 {
            AhoCorasickKind::DFA
        } else {
            AhoCorasickKind::ContiguousNFA
        };
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .kind(Some(kind))
            .start_kind(StartKind::Anchored)
            .build(&forms)?;
        drop(forms);
        Ok(Some(Self {
            entries,
            automaton,
            owner,
        }))
    }

    pub fn forms(&self) -> usize {
        self.owner.len()
    }

    /// The longest form of a live value starting exactly at `start`: (end, label, id).
    fn at(
        &self,
        hay: &[u8],
        start: usize,
        dead: &HashSet<u64>,
    ) -> Option<(usize, &'static str, u64)> {
        let input = aho_corasick::Input::new(hay)
            .span(start..hay.len())
            .anchored(Anchored::Yes);
        let m = self.automaton.find(input)?;
        let (id, entry) = &self.entries[self.owner[m.pattern().as_usize()]];
        if !dead.contains(id) {
            return Some((m.end(), entry.label, *id));
        }
        // The longest form here is a dead value's; a live one may still be a prefix of
        // it. Rare (a revoked value showing up), so a plain comparison will do.
        self.entries
            .iter()
            .filter(|(id, _)| !dead.contains(id))
            .flat_map(|(id, e)| e.forms.iter().map(move |f| (f.expose(), e.label, *id)))
            .filter(|(f, _, _)| hay[start..].starts_with(f))
            .map(|(f, label, id)| (start + f.len(), label, id))
            .max_by_key(|&(end, _, _)| end)
    }
}

impl LiveSet {
    pub fn empty() -> Self {
        Self {
            segments: Vec::new(),
            sampler: Arc::new(Sampler::default()),
            dead: Arc::default(),
            longest: 0,
            longest_b64: 0,
        }
    }

    /// The longest form: no live match is longer.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// The longest form made of base64 characters alone: no live match in a run of
    /// wrapped base64 is longer (0 with no values).
    pub fn longest_b64(&self) -> usize {
        self.longest_b64
    }

    /// The first form found starting at or after `from` (an index into `hay`), the
    /// longest one at that start: (start, end, label). The same answer as an unanchored
    /// leftmost-longest search over all live forms.
    ///
    /// The sampler looks at every `k`-th position only: an occurrence of a form spans
    /// `k` window starts, so one of them is sampled, and the window says at which of
    /// the `k` starts before it a form could begin; the segments are tried there,
    /// anchored, in order. (An unanchored automaton over thousands of forms, which no
    /// literal prefilter fits, scans at about 90 MiB/s; this at several hundred.)
    pub fn next_hit(&self, hay: &[u8], from: usize) -> Option<(usize, usize, &'static str)> {
        self.next_hit_id(hay, from)
            .map(|(start, end, label, _)| (start, end, label))
    }

    /// The registry ids of every value a form of which starts somewhere in `hay` (the
    /// longest form at each start), in one pass.
    pub fn ids_in(&self, hay: &[u8]) -> HashSet<u64> {
        let mut found = HashSet::new();
        let mut from = 0;
        while let Some((start, _, _, id)) = self.next_hit_id(hay, from) {
            found.insert(id);
            from = start + 1;
        }
        found
    }

    /// [`LiveSet::next_hit`], with the registry id of the value found.
    fn next_hit_id(&self, hay: &[u8], from: usize) -> Option<(usize, usize, &'static str, u64)> {
        if self.segments.is_empty() {
            return None;
        }
        let k = self.sampler.k;
        let mut t = from;
        while t + WINDOW <= hay.len() {
            if let Some(offsets) = self.sampler.offsets(&hay[t..t + WINDOW]) {
                // Offset j means a form would start at t - j: earliest start first.
                for j in (0..k).rev() {
                    if offsets & (1 << j) == 0 || t < from + j {
                        continue;
                    }
                    let start = t - j;
                    let best = self
                        .segments
                        .iter()
                        .filter_map(|s| s.at(hay, start, &self.dead))
                        .max_by_key(|&(end, _, _)| end);
                    if let Some((end, label, id)) = best {
                        return Some((start, end, label, id));
                    }
                }
            }
            t += k;
        }
        None
    }
}

/// Bytes per sampled window.
const WINDOW: usize = 4;

/// The first `k` windows of every form (`k` as large as the shortest form allows), as
/// a bit per hash (about 64 bits per window, at most 2 MiB, so a sample rarely passes
/// by chance) and, for the samples that pass, the exact windows with the offsets they
/// occur at. Windows of unregistered values may linger: they only cost a look.
#[derive(Clone, Default)]
pub(super) struct Sampler {
    bits: Vec<u64>,
    log2: u32,
    windows: HashMap<[u8; WINDOW], u16>,
    k: usize,
    /// Forms added.
    forms: usize,
}

impl Sampler {
    pub fn new<'a>(entries: impl Iterator<Item = &'a LiveEntry> + Clone) -> Self {
        let count: usize = entries.clone().map(|e| e.forms.len()).sum();
        let shortest = entries
            .clone()
            .flat_map(|e| e.forms.iter().map(Secret::len))
            .min()
            .unwrap_or(WINDOW);
        let k = (shortest + 1).saturating_sub(WINDOW).clamp(1, 16);
        // Room for twice as many before the bits fill up.
        let wanted = (2 * count * k * 64).next_power_of_two();
        let log2 = wanted.trailing_zeros().clamp(12, 24);
        let mut sampler = Self {
            bits: vec![0u64; 1 << (log2 - 6)],
            log2,
            windows: HashMap::new(),
            k,
            forms: 0,
        };
        for e in entries {
            sampler.add(e);
        }
        sampler
    }

    /// Whether `entry` can be added without a rebuild: its forms are long enough for
    /// `k`, and the bits have room.
    pub fn fits(&self, entry: &LiveEntry) -> bool {
        let shortest = entry.forms.iter().map(Secret::len).min().unwrap_or(WINDOW);
        self.k > 0
            && shortest + 1 >= self.k + WINDOW
            && (self.forms + entry.forms.len()) * self.k * 64 <= self.bits.len() * 64
    }

    pub fn add(&mut self, entry: &LiveEntry) {
        for f in &entry.forms {
            let f = f.expose();
            for j in 0..self.k {
                let w = window(&f[j..j + WINDOW]);
                let h = self.hash(w);
                self.bits[h >> 6] |= 1 << (h & 63);
                *self.windows.entry(w).or_default() |= 1 << j;
            }
        }
        self.forms += entry.forms.len();
    }

    /// The offsets (bit j: offset j) at which `hay_window` starts in some form.
    fn offsets(&self, hay_window: &[u8]) -> Option<u16> {
        let w = window(hay_window);
        let h = self.hash(w);
        if self.bits[h >> 6] & (1 << (h & 63)) == 0 {
            return None;
        }
        self.windows.get(&w).copied()
    }

    fn hash(&self, w: [u8; WINDOW]) -> usize {
        (u32::from_le_bytes(w).wrapping_mul(0x9E37_79B1) >> (32 - self.log2)) as usize
    }
}

fn window(bytes: &[u8]) -> [u8; WINDOW] {
    [bytes[0], bytes[1], bytes[2], bytes[3]]
}

/// Every form `value` is looked for in: raw; base64 standard and URL-safe, padded and
/// not, and the stable inner characters at each of the three byte offsets (the value
/// inside a longer encoded text); percent-encoding (every byte but the unreserved ones,
/// those and `/` as Python's `quote()` keeps it, and every byte; upper and lower hex);
/// hex (lower, upper); HTML escaping as templates write it ([`HTML_QUOTES`]); JSON string escaping (minimal, with `\/`, and ASCII-only `\uXXXX`
/// as Python writes it); and each of these that is text, in UTF-16LE and UTF-16BE (a
/// Windows tool's output, an API answering in UTF-16). Last, the standard base64 inner
/// characters of each standard inner form, at each offset: the value base64'd twice,
/// each time inside a longer text (a Kubernetes `.dockerconfigjson` holds
/// `{"auth": base64(user:password)}` and is base64'd again as a Secret's data). Then
/// the stacked forms: percent-encoded base64 ([`percent_base64`]) and, for text, UTF-32
/// and the encodings of UTF-16 and UTF-32 and the escapes of every character
/// ([`stacked_text`]); and the value's bytes printed as a list of numbers
/// ([`byte_lists`]), as escapes of every byte ([`byte_escapes`]), in base32
/// ([`base32_cores`]), upper- and lower-cased ([`recased`]), reversed and in ROT13
/// ([`rearranged`]). Duplicates removed.
///
/// All of them are patterns of the one live scan: clean text gets no extra pass (the
/// sampler looks at the same positions whatever the forms; more forms only set more of
/// its bits, so a sample passes its first check a little more often), and a
/// registration builds more patterns.
pub(super) fn forms(value: &[u8]) -> Vec<Secret> {
    let mut out: Vec<Zeroizing<Vec<u8>>> = vec![Zeroizing::new(value.to_vec())];
    for (padded, bare) in [(STANDARD, STANDARD_NO_PAD), (URL_SAFE, URL_SAFE_NO_PAD)] {
        out.push(Zeroizing::new(padded.encode(value).into_bytes()));
        out.push(Zeroizing::new(bare.encode(value).into_bytes()));
        for offset in 0..3 {
            out.push(base64_core(&bare, value, offset));
        }
    }
    for upper in [true, false] {
        for kept in [Kept::Unreserved, Kept::UnreservedAndSlash, Kept::Nothing] {
            out.push(percent(value, upper, kept));
        }
        out.push(hex(value, upper));
    }
    if let Ok(text) = std::str::from_utf8(value) {
        let minimal = json_escape(text, false);
        out.push(into_bytes(Zeroizing::new(minimal.replace('/', r"\/"))));
        out.push(into_bytes(json_escape(text, true)));
        out.push(into_bytes(minimal));
        for quotes in HTML_QUOTES {
            out.push(into_bytes(html_escape(text, quotes)));
        }
    }
    let wide: Vec<Zeroizing<Vec<u8>>> = out
        .iter()
        .filter_map(|f| std::str::from_utf8(f).ok())
        .flat_map(|text| [utf16(text, false), utf16(text, true)])
        .collect();
    out.extend(wide);
    let inner: Vec<Zeroizing<Vec<u8>>> = (0..3)
        .map(|offset| base64_core(&STANDARD_NO_PAD, value, offset))
        .collect();
    for inner in &inner {
        for offset in 0..3 {
            out.push(base64_core(&STANDARD_NO_PAD, inner, offset));
        }
    }
    out.extend(percent_base64(value));
    if let Ok(text) = std::str::from_utf8(value) {
        out.extend(stacked_text(text));
    }
    if !value.is_ascii() {
        out.extend(read_as_latin1(value));
    }
    out.extend(byte_lists(value));
    out.extend(byte_escapes(value));
    out.extend(base32_cores(value));
    out.extend(recased(value));
    out.extend(rearranged(value));
    out.sort_unstable_by(|a, b| a.as_slice().cmp(b.as_slice()));
    out.dedup_by(|a, b| a.as_slice() == b.as_slice());
    out.into_iter()
        .map(|mut f| Secret::new(std::mem::take(&mut *f)))
        .collect()
}

/// The forms of a value that is text and that an encoder writes character by
/// character, or encodes again after a wide charset:
/// - UTF-32 (either byte order): of a non-ASCII value, the spread view (`spread`) sees
///   no text (its NUL-free bytes are not the value), and the streaming scrubs do not
///   use that view at all;
/// - base64 (standard and URL-safe, the characters fixed by the value alone at each of
///   the three byte offsets) of UTF-16 and UTF-32 in either byte order, and hex (lower,
///   upper) of UTF-16: a tool that encodes a wide-charset answer for transport;
/// - a JSON string with every character as `\uXXXX` (lower- and upper-case hex, UTF-16
///   surrogate pairs past U+FFFF), as a writer escaping everything writes it;
/// - HTML numeric character references of every character (`&#x6a;`, `&#x6A;`,
///   `&#106;`), and of the non-ASCII characters alone (`&#233;`:
///   Python's `xmlcharrefreplace`).
///
/// At most six bytes per value byte (a JSON `\u0067` per ASCII character), as the
/// longest of the other forms.
fn stacked_text(text: &str) -> Vec<Zeroizing<Vec<u8>>> {
    let mut out = Vec::new();
    for big_endian in [false, true] {
        let wide16 = utf16(text, big_endian);
        let wide32 = utf32(text, big_endian);
        for wide in [&wide16, &wide32] {
            for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
                for offset in 0..3 {
                    out.push(base64_core(&engine, wide, offset));
                }
            }
        }
        for upper in [false, true] {
            out.push(hex(&wide16, upper));
        }
        out.push(wide32);
    }
    for upper in [false, true] {
        out.push(into_bytes(json_every_char(text, upper)));
    }
    for style in [
        Reference::Hex { upper: false },
        Reference::Hex { upper: true },
        Reference::Decimal,
    ] {
        out.push(into_bytes(references(text, style, true)));
    }
    out.push(into_bytes(references(text, Reference::Decimal, false)));
    out
}

/// A non-ASCII value's bytes read as Latin-1, one character each, as Python's
/// `http.server` and WSGI read header bytes: written back as UTF-8 (two bytes for each
/// byte past 0x7F) and as a JSON string with those characters escaped (`\u00c3\u00a4`:
/// `json.dumps` with `ensure_ascii`). So an upstream that echoes a request header
/// through such a server returns neither form of the value's own characters. At most
/// six bytes per value byte, as the other forms.
fn read_as_latin1(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let latin1: Zeroizing<String> = Zeroizing::new(value.iter().map(|&b| char::from(b)).collect());
    vec![into_bytes(json_escape(&latin1, true)), into_bytes(latin1)]
}

/// The standard base64 forms of `value` (whole, padded and not, and the characters
/// fixed at each byte offset) percent-encoded, as a URL or a form carries base64:
/// `+`, `/` and `=` as `%2B`, `%2F`, `%3D` (upper and lower hex), `/` kept or not
/// (Python's `quote()` keeps it). Forms equal to the base64 itself are dropped later
/// with the other duplicates.
fn percent_base64(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let mut encoded = vec![
        Zeroizing::new(STANDARD.encode(value).into_bytes()),
        Zeroizing::new(STANDARD_NO_PAD.encode(value).into_bytes()),
        Zeroizing::new(URL_SAFE.encode(value).into_bytes()),
    ];
    encoded.extend((0..3).map(|offset| base64_core(&STANDARD_NO_PAD, value, offset)));
    let mut out = Vec::new();
    for b64 in &encoded {
        for upper in [true, false] {
            for kept in [Kept::Unreserved, Kept::UnreservedAndSlash] {
                out.push(percent(b64, upper, kept));
            }
        }
    }
    out
}

/// `text` in UTF-32, little- or big-endian, without a byte-order mark.
fn utf32(text: &str, big_endian: bool) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 4));
    for c in text.chars() {
        let c = u32::from(c);
        out.extend_from_slice(&if big_endian {
            c.to_be_bytes()
        } else {
            c.to_le_bytes()
        });
    }
    out
}

/// The inside of a JSON string holding `text` with every character escaped as
/// `\uXXXX` (UTF-16 units).
fn json_every_char(text: &str, upper: bool) -> Zeroizing<String> {
    let digits = if upper { UPPER } else { LOWER };
    let mut out = Zeroizing::new(String::with_capacity(text.len() * 6));
    let mut units = [0u16; 2];
    for c in text.chars() {
        for &unit in c.encode_utf16(&mut units).iter() {
            out.push_str("\\u");
            for shift in [12, 8, 4, 0] {
                out.push(char::from(digits[usize::from((unit >> shift) & 15)]));
            }
        }
    }
    units.fill(0);
    out
}

/// How an HTML numeric character reference writes a code point.
#[derive(Clone, Copy)]
enum Reference {
    /// `&#x6a;` (lower-case digits) or `&#x6A;` (upper-case).
    Hex { upper: bool },
    /// `&#103;`.
    Decimal,
}

/// `text` with its characters as HTML numeric character references: every one, or
/// (`every` false) the non-ASCII ones only.
fn references(text: &str, style: Reference, every: bool) -> Zeroizing<String> {
    use std::fmt::Write as _;
    let mut out = Zeroizing::new(String::with_capacity(text.len() * 6));
    for c in text.chars() {
        if !every && c.is_ascii() {
            out.push(c);
            continue;
        }
        let code = u32::from(c);
        // Writing to a String cannot fail.
        let _ = match style {
            Reference::Hex { upper: false } => write!(out, "&#x{code:x};"),
            Reference::Hex { upper: true } => write!(out, "&#x{code:X};"),
            Reference::Decimal => write!(out, "&#{code};"),
        };
    }
    out
}

/// `text` in UTF-16, little- or big-endian, without a byte-order mark.
fn utf16(text: &str, big_endian: bool) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 2));
    for unit in text.encode_utf16() {
        out.extend_from_slice(&if big_endian {
            unit.to_be_bytes()
        } else {
            unit.to_le_bytes()
        });
    }
    out
}

fn into_bytes(mut s: Zeroizing<String>) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(std::mem::take(&mut *s).into_bytes())
}

/// The base64 characters that depend on `value`'s bits alone when it starts `offset`
/// bytes into a 3-byte group: whatever surrounds it, an encoding holds these.
fn base64_core(engine: &impl base64::Engine, value: &[u8], offset: usize) -> Zeroizing<Vec<u8>> {
    let mut buf = Zeroizing::new(vec![0u8; offset]);
    buf.extend_from_slice(value);
    buf.extend_from_slice(&[0, 0]);
    let encoded = Zeroizing::new(engine.encode(&*buf));
    // Character i covers bits [6i, 6i + 6).
    let first = (8 * offset).div_ceil(6);
    let end = 8 * (offset + value.len()) / 6;
    Zeroizing::new(encoded.as_bytes()[first..end].to_vec())
}

/// The value's bytes as server software prints a byte array (in an echo, a debug
/// dump, an error message), each number joined to the next by a separator:
/// - decimal, joined by `,` (`JSON.stringify` of a Node `Buffer`:
///   `{"type":"Buffer","data":[103,104]}`), `, ` (Python's `list(bytes)`, Java's
///   `Arrays.toString` of an ASCII value) or a space (Go's `%v` of a `[]byte`); and, for a
///   value with bytes past ASCII, Java's signed bytes (`-61, -74`);
/// - two hex digits (lower and upper case), joined by a space (Node's `util.inspect` of
///   a `Buffer`, `od -An -tx1`, Go's `% x`), `:` or `-` (.NET's
///   `BitConverter.ToString`).
///
/// At most five bytes per value byte (`103, `); Java's `-128, ` (six) is as long as a
/// JSON `\u0067`.
fn byte_lists(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    fn joined(
        value: &[u8],
        sep: &[u8],
        mut write: impl FnMut(&mut Vec<u8>, u8),
    ) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(value.len() * (4 + sep.len())));
        for (i, &b) in value.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(sep);
            }
            write(&mut out, b);
        }
        out
    }
    fn decimal(out: &mut Vec<u8>, n: u8) {
        if n >= 100 {
            out.push(b'0' + n / 100);
        }
        if n >= 10 {
            out.push(b'0' + n / 10 % 10);
        }
        out.push(b'0' + n % 10);
    }
    let mut out = Vec::new();
    for sep in [&b","[..], b", ", b" "] {
        out.push(joined(value, sep, decimal));
    }
    if !value.is_ascii() {
        out.push(joined(value, b", ", |out, b| {
            if b < 0x80 {
                decimal(out, b);
            } else {
                // Java's byte: b - 256, from -128 to -1.
                out.push(b'-');
                let magnitude = 0u8.wrapping_sub(b);
                if magnitude == 0x80 {
                    out.extend_from_slice(b"128");
                } else {
                    decimal(out, magnitude);
                }
            }
        }));
    }
    for digits in [LOWER, UPPER] {
        for sep in [&b" "[..], b":", b"-"] {
            out.push(joined(value, sep, |out, b| {
                out.push(digits[usize::from(b >> 4)]);
                out.push(digits[usize::from(b & 15)]);
            }));
        }
    }
    out
}

/// The value's bytes as escapes that a caller decodes by evaluating a literal:
/// - every byte as `\xNN` (lower- and upper-case hex: a C or Python string literal,
///   `echo -e`) or as octal `\NNN` (C, `printf '%b'`);
/// - Python's `repr` of the bytes (printable ASCII kept, `\\` and `\'` escaped, the
///   rest `\xNN`): the same as the value unless it holds other bytes;
/// - a C array initializer, `0x41, 0x42` (`xxd -i`) and `0x41,0x42`.
///
/// At most six bytes per value byte (`0x41, `), as the other forms.
fn byte_escapes(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    fn each(value: &[u8], mut write: impl FnMut(&mut Vec<u8>, u8)) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 6));
        for &b in value {
            write(&mut out, b);
        }
        out
    }
    fn hex_escape(out: &mut Vec<u8>, b: u8, digits: &[u8; 16]) {
        out.extend_from_slice(&[
            b'\\',
            b'x',
            digits[usize::from(b >> 4)],
            digits[usize::from(b & 15)],
        ]);
    }
    let mut out = Vec::new();
    for digits in [LOWER, UPPER] {
        out.push(each(value, |out, b| hex_escape(out, b, digits)));
    }
    out.push(each(value, |out, b| {
        out.extend_from_slice(&[b'\\', b'0' + (b >> 6), b'0' + (b >> 3 & 7), b'0' + (b & 7)]);
    }));
    out.push(each(value, |out, b| match b {
        b'\\' | b'\'' => out.extend_from_slice(&[b'\\', b]),
        b' '..=b'~' => out.push(b),
        _ => hex_escape(out, b, LOWER),
    }));
    for sep in [&b", "[..], b","] {
        let mut list = each(value, |out, b| {
            out.extend_from_slice(&[
                b'0',
                b'x',
                LOWER[usize::from(b >> 4)],
                LOWER[usize::from(b & 15)],
            ]);
            out.extend_from_slice(sep);
        });
        let len = list.len() - sep.len();
        list.truncate(len);
        out.push(list);
    }
    out
}

/// The base32 characters (RFC 4648, the standard alphabet and the "extended hex" one,
/// upper case) that depend on `value`'s bits alone when it starts at each of the five
/// byte offsets of a 5-byte group: whatever surrounds it, padded or not, an encoding
/// holds these (as [`base64_core`] for base64).
fn base32_cores(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let mut out = Vec::new();
    for encoding in [
        &data_encoding::BASE32_NOPAD,
        &data_encoding::BASE32HEX_NOPAD,
    ] {
        for offset in 0..5 {
            let mut buf = Zeroizing::new(vec![0u8; offset]);
            buf.extend_from_slice(value);
            buf.extend_from_slice(&[0; 4]);
            let encoded = Zeroizing::new(encoding.encode(&buf));
            // Character i covers bits [5i, 5i + 5).
            let first = (8 * offset).div_ceil(5);
            let end = 8 * (offset + value.len()) / 5;
            out.push(Zeroizing::new(encoded.as_bytes()[first..end].to_vec()));
        }
    }
    out
}

/// The value upper- and lower-cased whole (ASCII letters; an API that normalises case
/// gives the value back this way, and a hex or base32 key is whole in either), each raw,
/// in hex (both cases) and as the standard base64 characters fixed at each byte offset.
/// None when the value has no letter to change.
fn recased(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let mut out = Vec::new();
    for cased in [value.to_ascii_uppercase(), value.to_ascii_lowercase()] {
        let cased = Zeroizing::new(cased);
        if *cased == value {
            continue;
        }
        for upper in [false, true] {
            out.push(hex(&cased, upper));
        }
        for offset in 0..3 {
            out.push(base64_core(&STANDARD_NO_PAD, &cased, offset));
        }
        out.push(cased);
    }
    out
}

/// The value's characters reversed (bytes, when it is not UTF-8), and ROT13 of its
/// ASCII letters (when it has any): no encoder writes these, but an upstream that
/// echoes a request header may, and the caller undoes them at once.
fn rearranged(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let reversed: Zeroizing<Vec<u8>> = match std::str::from_utf8(value) {
        Ok(text) => into_bytes(Zeroizing::new(text.chars().rev().collect())),
        Err(_) => Zeroizing::new(value.iter().rev().copied().collect()),
    };
    let rot13 = Zeroizing::new(
        value
            .iter()
            .map(|&b| match b {
                b'a'..=b'z' => b'a' + (b - b'a' + 13) % 26,
                b'A'..=b'Z' => b'A' + (b - b'A' + 13) % 26,
                _ => b,
            })
            .collect(),
    );
    vec![reversed, rot13]
}

const UPPER: &[u8; 16] = b"0123456789ABCDEF";
const LOWER: &[u8; 16] = b"0123456789abcdef";

/// The bytes a percent-encoder leaves as they are.
#[derive(Clone, Copy)]
enum Kept {
    /// RFC 3986's unreserved bytes (letters, digits, `-_.~`): most encoders.
    Unreserved,
    /// Those and `/`: Python's `urllib.parse.quote()` by default.
    UnreservedAndSlash,
    /// None: every byte as `%XX`.
    Nothing,
}

fn percent(value: &[u8], upper: bool, kept: Kept) -> Zeroizing<Vec<u8>> {
    let digits = if upper { UPPER } else { LOWER };
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 3));
    for &b in value {
        let unreserved = b.is_ascii_alphanumeric() || b"-_.~".contains(&b);
        let keep = match kept {
            Kept::Unreserved => unreserved,
            Kept::UnreservedAndSlash => unreserved || b == b'/',
            Kept::Nothing => false,
        };
        if keep {
            out.push(b);
        } else {
            out.extend_from_slice(&[
                b'%',
                digits[usize::from(b >> 4)],
                digits[usize::from(b & 15)],
            ]);
        }
    }
    out
}

fn hex(value: &[u8], upper: bool) -> Zeroizing<Vec<u8>> {
    let digits = if upper { UPPER } else { LOWER };
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 2));
    for &b in value {
        out.extend_from_slice(&[digits[usize::from(b >> 4)], digits[usize::from(b & 15)]]);
    }
    out
}

/// The inside of a JSON string holding `text` (no quotes).
/// How HTML escapers write `"` and `'` (after `&amp;`, `&lt;`, `&gt;`, which all
/// write): Python's `html.escape`, Django (`&quot;`, `&#x27;`); markupsafe/Jinja2
/// (`&#34;`, `&#39;`); Go's `html.EscapeString` and `html/template` (`&#34;`, `&#39;`);
/// HTML5 and XML names (`&quot;`, `&apos;`); and `html.escape(quote=False)` (neither).
/// Also `&quot;` beside a raw `'`: what the broker's decoded view (numeric references
/// decoded) leaves of `html.escape`'s `&quot;` and `&#x27;`.
const HTML_QUOTES: [Option<(&str, &str)>; 6] = [
    Some(("&quot;", "&#x27;")),
    Some(("&#34;", "&#39;")),
    Some(("&quot;", "&#39;")),
    Some(("&quot;", "&apos;")),
    Some(("&quot;", "'")),
    None,
];

/// `text` as an HTML escaper writes it in a page (see [`HTML_QUOTES`]): a value with
/// symbols reflected by a template is no longer its raw form, and its runs between the
/// symbols are shorter than a fragment.
fn html_escape(text: &str, quotes: Option<(&str, &str)>) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(text.len() + 16));
    for c in text.chars() {
        match (c, quotes) {
            ('&', _) => out.push_str("&amp;"),
            ('<', _) => out.push_str("&lt;"),
            ('>', _) => out.push_str("&gt;"),
            ('"', Some((double, _))) => out.push_str(double),
            ('\'', Some((_, single))) => out.push_str(single),
            (c, _) => out.push(c),
        }
    }
    out
}

fn json_escape(text: &str, ascii_only: bool) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(text.len() + 8));
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            // Python's `ensure_ascii` escapes DEL too.
            c if (c as u32) < 0x20 || (ascii_only && (!c.is_ascii() || c == '\u{7f}')) => {
                let mut units = [0u16; 2];
                for &unit in c.encode_utf16(&mut units).iter() {
                    out.push_str("\\u");
                    for shift in [12, 8, 4, 0] {
                        out.push(char::from(LOWER[usize::from((unit >> shift) & 15)]));
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(forms: &[Secret], s: &[u8]) -> bool {
        forms.iter().any(|f| f.expose() == s)
    }

    /// A value with symbols, as each HTML escaper writes it in a page.
    #[test]
    fn a_value_with_symbols_is_looked_for_as_html_escapers_write_it() {
        let value = "Zq8k<Lm2v&X9pQ>r7\"w3T'Yb";
        let found = forms(value.as_bytes());
        for escaped in [
            "Zq8k&lt;Lm2v&amp;X9pQ&gt;r7&quot;w3T&#x27;Yb",
            "Zq8k&lt;Lm2v&amp;X9pQ&gt;r7&#34;w3T&#39;Yb",
            "Zq8k&lt;Lm2v&amp;X9pQ&gt;r7&quot;w3T&#39;Yb",
            "Zq8k&lt;Lm2v&amp;X9pQ&gt;r7&quot;w3T&apos;Yb",
            "Zq8k&lt;Lm2v&amp;X9pQ&gt;r7\"w3T'Yb",
        ] {
            assert!(has(&found, escaped.as_bytes()), "{escaped}");
        }
    }

    #[test]
    fn base64_cores_are_inside_any_surrounding() {
        let value = b"Zq8#kLm2-vX9/pQ";
        let forms = forms(value);
        for before in 0..6usize {
            for after in 0..4usize {
                let mut text = vec![b'x'; before];
                text.extend_from_slice(value);
                text.extend(std::iter::repeat_n(b'y', after));
                for engine in [STANDARD, URL_SAFE, STANDARD_NO_PAD] {
                    let encoded = engine.encode(&text);
                    let found = forms
                        .iter()
                        .any(|f| encoded.as_bytes().windows(f.len()).any(|w| w == f.expose()));
                    assert!(found, "no form inside the base64 of {before}+value+{after}");
                }
            }
        }
    }

    #[test]
    fn sampled_search_finds_what_a_full_search_finds() {
        let values: Vec<Vec<u8>> = (0..40u8)
            .map(|i| format!("v{i:02}-Zq8kLm2vX9pQ{}", "x".repeat(usize::from(i % 7))).into_bytes())
            .collect();
        let entries: Vec<LiveEntry> = values
            .iter()
            .map(|v| LiveEntry {
                label: "live_secret",
                forms: forms(v),
            })
            .collect();
        // Several segments, as registrations one by one would leave them.
        let entries: Vec<Arc<LiveEntry>> = entries.into_iter().map(Arc::new).collect();
        let segments: Vec<Arc<Segment>> = entries
            .chunks(7)
            .enumerate()
            .filter_map(|(i, c)| {
                Segment::build(c.iter().map(|e| (i as u64, Arc::clone(e))).collect())
                    .expect("build")
                    .map(Arc::new)
            })
            .collect();
        assert!(segments.len() > 3);
        let set = LiveSet {
            segments,
            sampler: Arc::new(Sampler::new(entries.iter().map(|e| &**e))),
            dead: Arc::default(),
            longest: 1000,
            longest_b64: 1000,
        };
        let all: Vec<&[u8]> = entries
            .iter()
            .flat_map(|e| e.forms.iter().map(Secret::expose))
            .collect();
        let reference = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&all)
            .expect("reference");
        // Forms planted at every offset, overlapping and back to back, in filler.
        let mut hay = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            hay.extend(std::iter::repeat_n(b'.', i % 9));
            hay.extend_from_slice(e.forms[i % e.forms.len()].expose());
            if i % 3 == 0 {
                hay.truncate(hay.len() - 2);
            }
        }
        let mut found = 0;
        for from in 0..hay.len() {
            let want = reference
                .find(aho_corasick::Input::new(&hay).span(from..hay.len()))
                .map(|m| (m.start(), m.end()));
            let got = set.next_hit(&hay, from).map(|(s, e, _)| (s, e));
            assert_eq!(got, want, "from {from}");
            found += usize::from(got.is_some());
        }
        assert!(found > hay.len() / 2);
    }

    #[test]
    fn the_usual_encodings_are_forms() {
        let forms = forms("p/ss wörd\"1".as_bytes());
        assert!(has(&forms, b"p%2Fss%20w%C3%B6rd%221"));
        assert!(has(&forms, b"p%2fss%20w%c3%b6rd%221"));
        assert!(has(&forms, b"%70%2F%73%73%20%77%C3%B6%72%64%22%31"));
        assert!(has(&forms, b"702f73732077c3b672642231"));
        assert!(has(&forms, b"702F73732077C3B672642231"));
        assert!(has(&forms, br#"p/ss w\u00f6rd\"1"#));
        assert!(has(&forms, r#"p\/ss wörd\"1"#.as_bytes()));
        assert!(has(&forms, r#"p/ss wörd\"1"#.as_bytes()));
        assert!(has(&forms, b"cC9zcyB3w7ZyZCIx"));
        assert!(has(&forms, b"p/ss w\xc3\xb6rd\"1"));
        let le: Vec<u8> = "p/ss wörd\"1"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let be: Vec<u8> = "p/ss wörd\"1"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        assert_eq!(&le[..4], b"p\x00/\x00");
        assert!(has(&forms, &le));
        assert!(has(&forms, &be));
        // The encodings in UTF-16 too (hex here).
        let hex16: Vec<u8> = "702f73732077c3b672642231"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert!(has(&forms, &hex16));
    }

    /// A value's bytes escaped one by one, as C and Python literals and `xxd -i` write
    /// them.
    #[test]
    fn a_value_escaped_byte_by_byte_is_a_form() {
        let forms = forms("p'ö\\".as_bytes());
        for escaped in [
            r"\x70\x27\xc3\xb6\x5c",
            r"\x70\x27\xC3\xB6\x5C",
            r"\160\047\303\266\134",
            r"p\'\xc3\xb6\\",
            "0x70, 0x27, 0xc3, 0xb6, 0x5c",
            "0x70,0x27,0xc3,0xb6,0x5c",
        ] {
            assert!(has(&forms, escaped.as_bytes()), "{escaped}");
        }
    }

    /// Base32 of any text holding the value, in either alphabet, padded or not, holds
    /// one of its base32 forms.
    #[test]
    fn base32_cores_are_inside_any_surrounding() {
        let value = b"Zq8#kLm2-vX9/pQ";
        let forms = forms(value);
        for before in 0..7usize {
            for after in 0..6usize {
                let mut text = vec![b'x'; before];
                text.extend_from_slice(value);
                text.extend(std::iter::repeat_n(b'y', after));
                for encoding in [
                    &data_encoding::BASE32,
                    &data_encoding::BASE32_NOPAD,
                    &data_encoding::BASE32HEX,
                ] {
                    let encoded = encoding.encode(&text);
                    let found = forms
                        .iter()
                        .any(|f| encoded.as_bytes().windows(f.len()).any(|w| w == f.expose()));
                    assert!(found, "no form inside the base32 of {before}+value+{after}");
                }
            }
        }
    }

    /// The value with its case changed whole, and those in hex and base64; reversed;
    /// ROT13.
    #[test]
    fn a_value_recased_reversed_or_rotated_is_a_form() {
        let value = "Zq8kLm2v-X9pQ";
        let forms = forms(value.as_bytes());
        let upper = value.to_ascii_uppercase();
        let lower = value.to_ascii_lowercase();
        for form in [&upper, &lower, "Qp9X-v2mLk8qZ", "Md8xYz2i-K9cD"] {
            assert!(has(&forms, form.as_bytes()), "{form}");
        }
        for cased in [&upper, &lower] {
            for hex_upper in [false, true] {
                assert!(
                    has(&forms, &hex(cased.as_bytes(), hex_upper)),
                    "{cased} in hex"
                );
            }
            // In base64, inside a longer text at any offset.
            for before in 0..3 {
                let encoded = STANDARD.encode(format!("{}{cased}.", &"ab"[..before]));
                let found = forms
                    .iter()
                    .any(|f| encoded.as_bytes().windows(f.len()).any(|w| w == f.expose()));
                assert!(found, "{cased} in base64 after {before}");
            }
        }
    }

    /// A value's bytes as Node, Python, Java, Go, .NET and `od` print a byte array.
    #[test]
    fn a_value_printed_as_a_byte_array_is_a_form() {
        let forms = forms("p/ö".as_bytes());
        for printed in [
            "112,47,195,182",
            "112, 47, 195, 182",
            "112 47 195 182",
            "112, 47, -61, -74",
            "70 2f c3 b6",
            "70:2f:c3:b6",
            "70-2F-C3-B6",
            "70 2F C3 B6",
        ] {
            assert!(has(&forms, printed.as_bytes()), "{printed}");
        }
        // -128 as Java prints it.
        assert!(has(&super::forms(&[0x80, b'a']), b"-128, 97"));
    }
}
