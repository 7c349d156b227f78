//! Text packed by a stock decoder's counterpart: base64 of a gzip stream (how Helm
//! stores a release, values and all: `H4sI…`, or base64url; and that base64'd once more,
//! `SDRzSU…`, as a Kubernetes Secret's `data` holds it) and uuencode (`binascii.b2a_uu`:
//! lines led by their length character, `M` for a full line of 45 bytes, with or
//! without the `begin … end` wrapper). A value inside is whole to `gzip.decompress` or
//! `a2b_uu` and matches no live form; a [`Packed`] run's decoded bytes are where it is
//! whole, and a run that holds a live value is redacted whole (there is no way back
//! from an inflated byte to the base64 that spells it).
//!
//! A run is read as its writer's reader reads it: its base64 characters raw or escaped
//! (PHP's `json_encode` writes every `/` as `\/`; `\u002b`, `%2B`, `&#43;`…) and its
//! line breaks raw or as a JSON string writes them (`\n`): a gzip stream's base64
//! holds a `/` or a `+` every 30 characters or so, and a run that ended at the first
//! escaped one would inflate to what came before the value.
//!
//! Bounds (decompression bombs): a run inflates to at most [`RUN_CAP`] bytes, and to at
//! most [`MAX_RATIO`] times its decoded size once past [`RATIO_FLOOR`]; all runs of one
//! buffer to at most [`BUFFER_CAP`]; and each decoded piece is taken only once the
//! caller's `room` says there is room for it (the broker counts them against the
//! caller's answer share, as it counts a content coding's layers). A run that does not
//! inflate whole within them is [`Packed::over`]: its tail was not read, so an answer
//! redacts it whole (fail closed). A truncated or corrupt gzip stream yields what
//! inflated before the break, as Python's `zlib.decompressobj` would give it.
//!
//! Owns: finding the runs of one buffer and decoding them within the bounds.
//! Must never: be built for a buffer with no `H4sI`, no `SDRzSU` and no uuencoded line
//! (the hot path pays two `memmem`s and a `memchr` step per line), read past a bound, or
//! outlive the scrub that made it (it holds what the buffer holds).

use std::{io::Read as _, ops::Range};

use base64::Engine as _;

/// Inflated bytes per decoded byte, at most (once past [`RATIO_FLOOR`]): as for a
/// response's content coding. Text and JSON compress 3-20×; a bomb 1000× and more.
pub const MAX_RATIO: usize = 100;
/// Inflated sizes up to this are not held to [`MAX_RATIO`].
pub const RATIO_FLOOR: usize = 64 << 10;
/// Inflated bytes of one run, at most (a Helm release inflates to a few MiB at most:
/// its Secret holds 1 MiB).
pub const RUN_CAP: usize = 8 << 20;
/// Inflated bytes of all the runs of one buffer, at most, each run charged
/// [`RUN_OVERHEAD`] more.
pub const BUFFER_CAP: usize = 16 << 20;
/// What a run costs besides its inflated bytes (an inflater's state, about its 32 KiB
/// window, set up afresh): a buffer of many small runs starts at most
/// `BUFFER_CAP / RUN_OVERHEAD` (512) inflaters.
pub const RUN_OVERHEAD: usize = 32 << 10;
/// Decoded bytes a gzip run needs to hold a value: a 10-byte header, then at least a
/// few bytes of deflate for [`super::MIN_SECRET_LEN`] bytes (shorter runs are skipped).
const MIN_GZIP: usize = 18;

/// How a base64 run of a gzip stream starts (`1f 8b 08`), and how its base64 does.
const GZIP_LEADS: [&[u8]; 2] = [b"H4sI", b"SDRzSU"];

/// Inflate's output is read this much at a time, each piece asked of `room`.
const PIECE: usize = 16 << 10;

/// One packed run of a buffer.
pub struct Packed {
    /// The run's bytes in the buffer.
    pub span: Range<usize>,
    /// What it decodes to (inflated, for a gzip run), as far as the bounds allowed.
    pub bytes: Vec<u8>,
    /// Whether the bounds stopped the run's decoding before its end (its tail unread).
    pub over: bool,
}

/// What a decoding asks before it takes `n` more bytes: whether there is room for them.
pub type Room<'a> = &'a mut dyn FnMut(usize) -> bool;

/// The packed runs of `input`, decoded within the bounds; empty (after two `memmem`s
/// and a `memchr` step per line) when there are none.
pub fn runs(input: &[u8], room: Room<'_>) -> Vec<Packed> {
    let mut left = BUFFER_CAP;
    let mut out = Vec::new();
    for span in gzip_runs(input) {
        out.extend(inflate_run(input, span, &mut left, room));
    }
    for (span, bytes) in uu_blocks(input) {
        if bytes.len() < super::MIN_SECRET_LEN {
            // No value fits (a stray line of capitals and punctuation).
            continue;
        }
        let over = !room(bytes.len());
        out.push(Packed {
            span,
            bytes: if over { Vec::new() } else { bytes },
            over,
        });
    }
    out
}

/// Whether `b` is a character of base64 or base64url.
fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'=')
}

/// One piece of a packed run's text.
enum Unit {
    /// A base64 or base64url character (or padding).
    Char(u8),
    /// A line break of a wrapped run.
    Break,
}

/// The [`Unit`] `text` starts with and its length: a base64 character, raw or escaped
/// as a JSON writer (`\/`, PHP's `json_encode` writes every `/` so; `\u002b`), a URL
/// (`%2B`, `%2F`, `%3D`, any case) or HTML (`&#43;`, `&#x2f;`, `;` optional) escapes it;
/// or a line break, raw (`\n`, `\r\n`) or as a JSON string writes it (`\n`, `\r\n`).
/// A decoder reading the text as what it is (`json.loads`, `unquote`,
/// `html.unescape`) then `b64decode` gets the run's bytes whole.
fn unit(text: &[u8]) -> Option<(Unit, usize)> {
    let escaped = |code: u32, len: usize| {
        u8::try_from(code)
            .ok()
            .filter(|b| matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
            .map(|b| (Unit::Char(b), len))
    };
    let hex = |digits: &[u8]| {
        std::str::from_utf8(digits)
            .ok()
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| u32::from_str_radix(d, 16).ok())
    };
    match text {
        [b, ..] if is_b64(*b) => Some((Unit::Char(*b), 1)),
        [b'\n', ..] => Some((Unit::Break, 1)),
        [b'\r', b'\n', ..] => Some((Unit::Break, 2)),
        [b'\\', b'n', ..] => Some((Unit::Break, 2)),
        [b'\\', b'r', b'\\', b'n', ..] => Some((Unit::Break, 4)),
        [b'\\', b'/', ..] => Some((Unit::Char(b'/'), 2)),
        [b'\\', b'u', d @ ..] => escaped(hex(d.get(..4)?)?, 6),
        [b'%', d @ ..] => escaped(hex(d.get(..2)?)?, 3),
        [b'&', b'#', rest @ ..] => {
            let (code, len) = super::spread::html_numeric(rest)?;
            escaped(code, 2 + len)
        }
        _ => None,
    }
}

/// Whether `text` starts with a base64 character, raw or escaped (see [`unit`]).
fn starts_char(text: &[u8]) -> bool {
    matches!(unit(text), Some((Unit::Char(_), _)))
}

/// The spans of base64 runs that start a gzip stream (or spell the base64 of one):
/// from a lead of [`GZIP_LEADS`] not inside a longer base64 word (after a `=`, a query's
/// or padding's, and at a line's start after a JSON `\n` too), over base64 characters, raw or escaped, and the line breaks
/// of a wrapped run (a break followed by more base64): see [`unit`].
fn gzip_runs(input: &[u8]) -> Vec<Range<usize>> {
    let mut starts: Vec<usize> = GZIP_LEADS
        .iter()
        .flat_map(|lead| memchr::memmem::find_iter(input, lead))
        .filter(|&i| {
            // Padding ends a run: a lead after `=` starts one (`?release=H4sI…`).
            i == 0 || !is_b64(input[i - 1]) || input[i - 1] == b'=' || input[..i].ends_with(br"\n")
        })
        .collect();
    starts.sort_unstable();
    let mut spans: Vec<Range<usize>> = Vec::new();
    for start in starts {
        if spans.last().is_some_and(|s| start < s.end) {
            continue;
        }
        let mut end = start;
        while let Some((piece, len)) = unit(&input[end..]) {
            if matches!(piece, Unit::Break) && !starts_char(&input[end + len..]) {
                break;
            }
            end += len;
        }
        spans.push(start..end);
    }
    spans
}

/// The bytes base64 or base64url `text` spells (its characters raw or escaped, line
/// breaks and padding dropped, a truncated tail decoded as far as it goes), as Python's
/// lenient `b64decode` reads it once the text is unescaped.
fn b64_decode(text: &[u8]) -> Vec<u8> {
    let mut chars = Vec::with_capacity(text.len());
    let mut at = 0;
    while at < text.len() {
        match unit(&text[at..]) {
            Some((Unit::Char(b), len)) => {
                chars.push(b);
                at += len;
            }
            Some((Unit::Break, len)) => at += len,
            None => at += 1,
        }
    }
    let mut clean: Vec<u8> = chars
        .into_iter()
        .filter_map(|b| match b {
            b'-' => Some(b'+'),
            b'_' => Some(b'/'),
            b'=' => None,
            b => Some(b),
        })
        .collect();
    if clean.len() % 4 == 1 {
        clean.pop();
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    engine.decode(&clean).unwrap_or_default()
}

/// The run at `span` of `input` decoded and inflated within the bounds (`left`: what
/// the buffer's cap has left, lowered by what this run took); `None` when it is too
/// short to hold a value.
fn inflate_run(
    input: &[u8],
    span: Range<usize>,
    left: &mut usize,
    room: Room<'_>,
) -> Option<Packed> {
    let mut gz = b64_decode(&input[span.clone()]);
    if gz.starts_with(b"H4sI") {
        // The base64 of a gzip's base64 (a Secret's `data` of a Helm release).
        gz = b64_decode(&gz);
    }
    if gz.len() < MIN_GZIP {
        return None;
    }
    let Some(after) = left.checked_sub(RUN_OVERHEAD) else {
        // The buffer's cap is spent: the run is not read at all.
        return Some(Packed {
            span,
            bytes: Vec::new(),
            over: true,
        });
    };
    *left = after;
    let cap = RUN_CAP
        .min(*left)
        .min(RATIO_FLOOR.max(gz.len().saturating_mul(MAX_RATIO)));
    let (bytes, over) = inflate(&gz, cap, room);
    *left -= bytes.len();
    Some(Packed { span, bytes, over })
}

/// `gz` inflated (every member), at most `cap` bytes, each piece taken only once `room`
/// says so; and whether a bound stopped it before the stream's end. A corrupt or
/// truncated stream gives what inflated before the break.
fn inflate(gz: &[u8], cap: usize, room: Room<'_>) -> (Vec<u8>, bool) {
    let mut reader = flate2::read::MultiGzDecoder::new(gz);
    let mut out = Vec::new();
    let mut piece = [0u8; PIECE];
    loop {
        let n = match reader.read(&mut piece) {
            Ok(0) | Err(_) => return (out, false),
            Ok(n) => n,
        };
        if out.len() + n > cap || !room(n) {
            return (out, true);
        }
        out.extend_from_slice(&piece[..n]);
    }
}

/// The length a uuencoded line's first character says (0 to 63; 45 in a full line).
fn uu_len(lead: u8) -> usize {
    usize::from(lead.wrapping_sub(b' ') & 0x3f)
}

/// Whether `line` (without its line break) is a uuencoded line of at least one byte:
/// its length character, then that many bytes' characters (4 per 3, the last group
/// whole; up to three of its trailing spaces may have been stripped and two extra
/// characters written, as encoders pad), every one in `' '..='`'`.
fn is_uu_line(line: &[u8]) -> bool {
    let Some((&lead, body)) = line.split_first() else {
        return false;
    };
    let n = uu_len(lead);
    if !(1..=45).contains(&n) || !(b'!'..=b'`').contains(&lead) {
        return false;
    }
    let want = n.div_ceil(3) * 4;
    (want.saturating_sub(3)..=want + 2).contains(&body.len())
        && body.iter().all(|b| (b' '..=b'`').contains(b))
}

/// The longest a uuencoded line is: its length character and 62 more (see [`is_uu_line`]).
const UU_LINE_MAX: usize = 63;

/// Where the uuencoded line that ends `line` starts, if one does: at the line's start,
/// after a blank (indentation, as in a YAML block scalar; `data: M…`) or after a `"`
/// (the first line of a JSON string, `{"blob": "M…`): where its writer puts one.
fn uu_tail(line: &[u8]) -> Option<usize> {
    let spelled = line
        .iter()
        .rev()
        .take(UU_LINE_MAX)
        .take_while(|b| (b' '..=b'`').contains(*b))
        .count();
    (line.len() - spelled..line.len()).find(|&p| {
        matches!(line[..p].last(), None | Some(b' ' | b'\t' | b'"')) && is_uu_line(&line[p..])
    })
}

/// One line of text as its reader reads it, and where each of its bytes is in the
/// buffer (`None`: at its own offset from `start`, the line being the buffer's bytes).
struct Line<'a> {
    text: std::borrow::Cow<'a, [u8]>,
    from: Option<Vec<usize>>,
    start: usize,
    end: usize,
}

impl Line<'_> {
    /// Where the line's byte `at` is in the buffer.
    fn place(&self, at: usize) -> usize {
        self.from.as_ref().map_or(self.start + at, |from| from[at])
    }
}

/// The lines of `input` split at its raw line breaks (a `\r` before one dropped).
fn raw_lines(input: &[u8]) -> impl Iterator<Item = Line<'_>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        (at < input.len()).then(|| {
            let end = memchr::memchr(b'\n', &input[at..]).map_or(input.len(), |i| at + i);
            let text = &input[at..end];
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            let line = Line {
                text: text.into(),
                from: None,
                start: at,
                end: at + text.len(),
            };
            at = end + 1;
            line
        })
    })
}

/// How a JSON writer writes a line break in a string: `\n`, or `\u000a` (a writer that
/// escapes every control character so).
const JSON_BREAKS: [&[u8]; 3] = [br"\n", br"\u000a", br"\u000A"];

/// How a JSON writer writes a carriage return before a line break.
const JSON_RETURNS: [&[u8]; 3] = [br"\r", br"\u000d", br"\u000D"];

/// Whether `input` holds a line break a JSON writer wrote ([`JSON_BREAKS`]).
fn has_json_break(input: &[u8]) -> bool {
    JSON_BREAKS
        .iter()
        .any(|b| memchr::memmem::find(input, b).is_some())
}

/// The lines of `input` as the strings of a JSON document hold them: split at the line
/// breaks a JSON writer writes ([`JSON_BREAKS`]; a carriage return's escape before one
/// dropped), JSON's short escapes and `\u` escapes of ASCII read (`\"`, `\\`, `\/`: a
/// uuencoded line's `"` and `\` are escaped there). Only a line whose last bytes could
/// spell an escaped uuencoded line is read (the others come back empty): a step back
/// over at most twice [`UU_LINE_MAX`] bytes per break, and a step per byte of the lines
/// that could.
fn json_lines(input: &[u8]) -> impl Iterator<Item = Line<'_>> {
    let mut breaks: Vec<(usize, usize)> = JSON_BREAKS
        .iter()
        .flat_map(|b| memchr::memmem::find_iter(input, b).map(|i| (i, b.len())))
        // A `\` before one escaped in turn (`\\n`: a backslash, then `n`) is no break.
        .filter(|&(i, _)| input[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0)
        .collect();
    breaks.sort_unstable();
    let mut breaks = breaks.into_iter();
    let mut at = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let (end, next) = match breaks.next() {
            Some((i, len)) => (i, i + len),
            None => {
                done = true;
                (input.len(), input.len())
            }
        };
        let start = at;
        at = next;
        let raw = &input[start..end];
        let raw = JSON_RETURNS
            .iter()
            .find_map(|r| raw.strip_suffix(*r))
            .unwrap_or(raw);
        let spelled = raw
            .iter()
            .rev()
            .take(2 * UU_LINE_MAX)
            .take_while(|b| (b' '..=b'`').contains(*b))
            .count();
        let (text, from) = if spelled >= 2 {
            unescape_json(raw, start)
        } else {
            (Vec::new(), Vec::new())
        };
        Some(Line {
            text: text.into(),
            from: Some(from),
            start,
            end: start + raw.len(),
        })
    })
}

/// `raw` (at `start` in its buffer) as a JSON string's reader reads it (see
/// [`json_char`]), and where each byte read is in the buffer.
fn unescape_json(raw: &[u8], start: usize) -> (Vec<u8>, Vec<usize>) {
    let mut text = Vec::with_capacity(raw.len());
    let mut from = Vec::with_capacity(raw.len());
    let mut at = 0;
    while at < raw.len() {
        let (b, len) = json_char(&raw[at..]);
        text.push(b);
        from.push(start + at);
        at += len;
    }
    (text, from)
}

/// The byte a JSON string's text at the start of `text` reads as, and its length: a
/// short escape's character, a `\u` escape's ASCII one (another character reads as
/// DEL, which no uuencoded line holds), or the byte itself.
fn json_char(text: &[u8]) -> (u8, usize) {
    match text {
        [b'\\', b @ (b'"' | b'\\' | b'/'), ..] => (*b, 2),
        [b'\\', b'r', ..] => (b'\r', 2),
        [b'\\', b't', ..] => (b'\t', 2),
        [b'\\', b'u', d @ ..] => {
            let code = d
                .get(..4)
                .and_then(|d| std::str::from_utf8(d).ok())
                .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|d| u32::from_str_radix(d, 16).ok());
            match code {
                Some(code) => (
                    u8::try_from(code).ok().filter(u8::is_ascii).unwrap_or(0x7f),
                    6,
                ),
                None => (b'\\', 1),
            }
        }
        [b, ..] => (*b, 1),
        [] => (0, 1),
    }
}

/// The blocks of consecutive uuencoded lines of `input` (a value may be cut by a line
/// break), each as the span from its first line's uuencoded part to its last line's end
/// and the bytes it spells: its lines read raw, and where the buffer holds a JSON line
/// break (`\n`, `\u000a`) also as a JSON string's lines (`json.dumps` of `b2a_uu`'s text). A block's first line
/// may follow other text on its line (see [`uu_tail`]); the lines after it are whole.
fn uu_blocks(input: &[u8]) -> Vec<(Range<usize>, Vec<u8>)> {
    let mut blocks = blocks_in(raw_lines(input));
    if has_json_break(input) {
        blocks.extend(blocks_in(json_lines(input)));
    }
    blocks
}

/// The blocks of uuencoded lines among `lines` (see [`uu_blocks`]).
fn blocks_in<'a>(lines: impl Iterator<Item = Line<'a>>) -> Vec<(Range<usize>, Vec<u8>)> {
    let mut blocks: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
    let mut joined = false;
    for line in lines {
        let tail = uu_tail(&line.text);
        if let Some(p) = tail {
            let bytes = uu_line_bytes(&line.text[p..]);
            let indented = line.text[..p].iter().all(|&b| b == b' ' || b == b'\t');
            match blocks.last_mut() {
                Some((span, block)) if joined && indented => {
                    span.end = line.end;
                    block.extend(bytes);
                }
                _ => blocks.push((line.place(p)..line.end, bytes)),
            }
        }
        joined = tail.is_some();
    }
    blocks
}

/// The bytes a uuencoded line spells, as `binascii.a2b_uu` reads it (a short line padded
/// with zero characters).
fn uu_line_bytes(line: &[u8]) -> Vec<u8> {
    let Some((&lead, body)) = line.split_first() else {
        return Vec::new();
    };
    let n = uu_len(lead);
    let sextet = |i: usize| {
        body.get(i)
            .map_or(0, |b| u32::from(b.wrapping_sub(b' ') & 0x3f))
    };
    let mut bytes = Vec::with_capacity(n + 2);
    for group in 0..n.div_ceil(3) {
        let v = (0..4).fold(0u32, |v, k| (v << 6) | sextet(group * 4 + k));
        bytes.extend_from_slice(&v.to_be_bytes()[1..]);
    }
    bytes.truncate(n);
    bytes
}

/// `input` with every packed run whose decoded bytes `holds` says hold a value, or
/// that the bounds stopped before its end, redacted whole (`[REDACTED:live_secret]`,
/// `[REDACTED:packed_over_bound]`); `None` when there is no such run.
pub fn cut_packed(
    input: &[u8],
    room: Room<'_>,
    mut holds: impl FnMut(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let spans: Vec<(Range<usize>, &'static str)> = runs(input, room)
        .into_iter()
        .filter_map(|run| {
            if run.over {
                Some((run.span, "packed_over_bound"))
            } else {
                holds(&run.bytes).then_some((run.span, "live_secret"))
            }
        })
        .collect();
    (!spans.is_empty()).then(|| super::spread::cut(input, spans))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).expect("in memory");
        enc.finish().expect("in memory")
    }

    fn b64(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    fn all_room() -> impl FnMut(usize) -> bool {
        |_| true
    }

    /// Python's `binascii.b2a_uu` of up to 45 bytes, without the line break.
    fn b2a_uu(data: &[u8]) -> String {
        let mut s = String::from(char::from(b' ' + data.len() as u8));
        for chunk in data.chunks(3) {
            let mut g = [0u8; 3];
            g[..chunk.len()].copy_from_slice(chunk);
            let v = u32::from_be_bytes([0, g[0], g[1], g[2]]);
            for k in (0..4).rev() {
                s.push(char::from(b' ' + ((v >> (6 * k)) & 0x3f) as u8));
            }
        }
        s
    }

    const VALUE: &[u8] = b"vk09_6c2f0a4e9b17d3c85e40f1a2b3c4d5e6";

    #[test]
    fn a_gzip_run_inflates_whole_and_only_it_is_cut() {
        let mut data = b"{\"values\":{\"token\":\"".to_vec();
        data.extend_from_slice(VALUE);
        data.extend_from_slice(b"\"}}");
        let text = format!("release: {} end", b64(&gzip(&data)));
        let mut room = all_room();
        let runs = runs(text.as_bytes(), &mut room);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].bytes, data);
        assert!(!runs[0].over);
        let cut = cut_packed(text.as_bytes(), &mut room, |b| {
            memchr::memmem::find(b, VALUE).is_some()
        })
        .expect("cut");
        assert_eq!(cut, b"release: [REDACTED:live_secret] end");
    }

    #[test]
    fn base64url_wrapped_and_double_base64_runs_inflate() {
        let data = [VALUE, &[0xfb; 300]].concat();
        let gz = gzip(&data);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&gz);
        let wrapped: Vec<String> = b64(&gz)
            .as_bytes()
            .chunks(76)
            .map(|c| String::from_utf8(c.to_vec()).expect("ascii"))
            .collect();
        let twice = b64(b64(&gz).as_bytes());
        for text in [url, wrapped.join("\r\n"), twice] {
            let mut room = all_room();
            let runs = runs(text.as_bytes(), &mut room);
            assert_eq!(runs.len(), 1, "{text}");
            assert_eq!(runs[0].span, 0..text.len());
            assert_eq!(runs[0].bytes, data);
        }
    }

    #[test]
    fn a_run_escaped_as_json_a_url_or_html_writes_it_inflates_whole() {
        // Incompressible bytes before the value: the stream's base64 holds a `/` and a
        // `+` well before the value's bytes, so a run that ended at either would not
        // hold it.
        let filler: Vec<u8> = (0..600u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let data = [&filler[..], VALUE].concat();
        let plain = b64(&gzip(&data));
        assert!(plain[..400].contains('/') && plain[..400].contains('+'));
        // `base64.encodebytes` in a JSON string: 76 columns, each line ended by `\n`.
        let mime: String = plain
            .as_bytes()
            .chunks(76)
            .map(|l| format!("{}\\n", std::str::from_utf8(l).expect("ascii")))
            .collect();
        for (what, text) in [
            ("php", format!(r#"{{"r":"{}"}}"#, plain.replace('/', r"\/"))),
            (
                "json u",
                format!(
                    r#"{{"r":"{}"}}"#,
                    plain.replace('+', r"\u002b").replace('/', r"\u002F")
                ),
            ),
            (
                "percent",
                format!(
                    "https://x.test/?r={}",
                    plain
                        .replace('+', "%2B")
                        .replace('/', "%2f")
                        .replace('=', "%3D")
                ),
            ),
            (
                "html",
                format!(
                    "<p>{}</p>",
                    plain.replace('+', "&#43;").replace('/', "&#x2F;")
                ),
            ),
            ("json wrapped", format!(r#"{{"r":"{mime}"}}"#)),
            (
                "json wrapped crlf",
                format!(r#"{{"r":"{}"}}"#, mime.replace(r"\n", r"\r\n")),
            ),
            ("after a json break", format!(r#"{{"r":"chart\n{plain}"}}"#)),
        ] {
            let runs = runs(text.as_bytes(), &mut all_room());
            assert_eq!(runs.len(), 1, "{what}");
            assert_eq!(runs[0].bytes, data, "{what}");
            let cut = cut_packed(text.as_bytes(), &mut all_room(), |b| {
                memchr::memmem::find(b, VALUE).is_some()
            })
            .expect(what);
            let cut = String::from_utf8(cut).expect("text");
            assert!(cut.contains("[REDACTED:live_secret]"), "{what}: {cut}");
            assert!(!cut.contains(&plain[..40]), "{what}: {cut}");
            assert!(
                cut.ends_with(r#""}"#) || cut.ends_with("</p>") || cut.ends_with("]"),
                "{what}: {cut}"
            );
        }
    }

    #[test]
    fn html_references_read_as_the_view_of_escapes_reads_them() {
        // Leading zeros count for nothing (`html.unescape`), however many.
        for (text, len) in [
            (&b"&#0000000047;x"[..], 13),
            (b"&#x2F", 5),
            (b"&#43&#43", 4),
        ] {
            let (unit, n) = unit(text).expect("a reference");
            assert!(matches!(unit, Unit::Char(b'/' | b'+')) && n == len);
        }
        assert!(unit(b"&#99999999;").is_none() && unit(b"&#;").is_none());
    }

    #[test]
    fn a_truncated_gzip_gives_what_inflated_before_the_break() {
        let data: Vec<u8> = (0..20_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let gz = gzip(&[VALUE, &data].concat());
        let text = b64(&gz[..gz.len() / 2]);
        let mut room = all_room();
        let runs = runs(text.as_bytes(), &mut room);
        assert_eq!(runs.len(), 1);
        assert!(!runs[0].over, "a break is not a bound");
        assert!(runs[0].bytes.starts_with(VALUE));
    }

    #[test]
    fn a_bomb_stops_at_the_ratio_and_is_over() {
        let gz = gzip(&vec![0u8; 4 << 20]);
        let text = b64(&gz);
        let mut asked = 0;
        let mut room = |n: usize| {
            asked += n;
            true
        };
        let runs = runs(text.as_bytes(), &mut room);
        assert!(runs[0].over);
        let cap = RATIO_FLOOR.max(gz.len() * MAX_RATIO);
        assert!(
            runs[0].bytes.len() <= cap,
            "{} > {cap}",
            runs[0].bytes.len()
        );
        assert_eq!(asked, runs[0].bytes.len(), "every byte taken was asked for");
        let mut room = all_room();
        assert_eq!(
            cut_packed(text.as_bytes(), &mut room, |_| false).expect("cut"),
            b"[REDACTED:packed_over_bound]"
        );
    }

    #[test]
    fn no_room_stops_a_run() {
        let text = b64(&gzip(&[VALUE, &[7u8; 100_000]].concat()));
        let mut room = |n: usize| n == 0;
        let runs = runs(text.as_bytes(), &mut room);
        assert!(runs[0].over);
        assert!(runs[0].bytes.is_empty());
    }

    #[test]
    fn the_buffer_cap_holds_across_runs() {
        // Each run is within its ratio (random-ish data barely compresses) but not
        // all together.
        let chunk: Vec<u8> = (0..(3u32 << 20))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let one = b64(&gzip(&chunk));
        let text = vec![one; 7].join(" ");
        let mut room = all_room();
        let runs = runs(text.as_bytes(), &mut room);
        let total: usize = runs.iter().map(|r| r.bytes.len()).sum();
        assert!(total <= BUFFER_CAP);
        assert!(runs.iter().any(|r| r.over));
    }

    #[test]
    fn many_small_runs_start_a_bounded_number_of_inflaters() {
        // 20 000 runs of a minimal gzip stream each: past the cap's share of inflaters
        // the rest are over (redacted whole, unread); leads too short to hold a value
        // are not runs at all.
        let small = b64(&gzip(b"x"));
        let text = vec![small.as_str(); 20_000].join(" ") + &" H4sIAAAA".repeat(20_000);
        let mut room = all_room();
        let runs = runs(text.as_bytes(), &mut room);
        assert_eq!(runs.len(), 20_000);
        let read = runs.iter().filter(|r| !r.over).count();
        assert_eq!(read, BUFFER_CAP / (RUN_OVERHEAD + 1));
    }

    #[test]
    fn gzip_of_clean_text_is_left_alone() {
        let text = format!("a: {}\nb", b64(&gzip(b"nothing secret here, just a chart")));
        let mut room = all_room();
        assert!(
            cut_packed(text.as_bytes(), &mut room, |b| {
                memchr::memmem::find(b, VALUE).is_some()
            })
            .is_none()
        );
    }

    #[test]
    fn uuencode_decodes_with_and_without_begin() {
        let long = [VALUE, b"-and-some-more-bytes-past-one-line"].concat();
        let lines: Vec<String> = long.chunks(45).map(b2a_uu).collect();
        let bare = lines.join("\n");
        let wrapped = format!("begin 644 key.txt\n{}\n`\nend\n", lines.join("\n"));
        for text in [bare.as_str(), wrapped.as_str()] {
            let mut room = all_room();
            let runs = runs(text.as_bytes(), &mut room);
            assert_eq!(runs.len(), 1, "{text}");
            assert_eq!(runs[0].bytes, long);
            let cut = cut_packed(text.as_bytes(), &mut room, |b| {
                memchr::memmem::find(b, VALUE).is_some()
            })
            .expect("cut");
            let cut = String::from_utf8(cut).expect("text");
            assert!(!cut.contains(&lines[0]) && cut.contains("[REDACTED:live_secret]"));
        }
    }

    #[test]
    fn a_uu_line_with_its_trailing_spaces_stripped_still_decodes() {
        // The last group, `@` and two zero bytes, ends in three spaces.
        let data = b"abcdefghi@\0\0";
        let line = b2a_uu(data);
        let stripped = line.trim_end();
        assert_eq!(stripped.len() + 3, line.len());
        let mut room = all_room();
        let runs = runs(stripped.as_bytes(), &mut room);
        assert_eq!(runs[0].bytes, data);
    }

    /// A value of [`VALUE`]'s length whose uuencoding holds a `"` and a `\\` (which a
    /// JSON writer escapes).
    fn value_with_quote_and_backslash() -> Vec<u8> {
        (0u8..=255)
            .map(|i| [&VALUE[..VALUE.len() - 1], &[i]].concat())
            .chain((0u8..=255).map(|i| [&[i], &VALUE[1..]].concat()))
            .find(|v| {
                let uu = b2a_uu(v);
                uu.contains('"') && uu.contains('\\')
            })
            .expect("one of them")
    }

    #[test]
    fn uuencode_in_a_json_string_decodes_and_is_cut_whole() {
        let value = value_with_quote_and_backslash();
        let long = [value.as_slice(), b"-and-some-more-bytes-past-one-line"].concat();
        let one = format!("{}\n", b2a_uu(&value));
        let many: String = long
            .chunks(45)
            .map(|c| format!("{}\n", b2a_uu(c)))
            .collect();
        for (uu, want, breaks) in [
            (one.clone(), value.clone(), r"\n"),
            (many.clone(), long.clone(), r"\n"),
            (many, long.clone(), r"\u000a"),
            (one, value.clone(), r"\r\n"),
        ] {
            let blob = serde_json::to_string(&uu)
                .expect("text")
                .replace(r"\n", breaks);
            let note = serde_json::to_string("see \\n and \"quotes\"").expect("text");
            let json = format!(r#"{{"blob":{blob},"note":{note}}}"#);
            let mut room = all_room();
            let runs = runs(json.as_bytes(), &mut room);
            assert_eq!(runs.len(), 1, "{json}");
            assert_eq!(runs[0].bytes, want, "{json}");
            let cut = cut_packed(json.as_bytes(), &mut room, |b| {
                memchr::memmem::find(b, &value).is_some()
            })
            .expect("cut");
            let doc: serde_json::Value = serde_json::from_slice(&cut).expect("still JSON");
            let blob = doc["blob"].as_str().expect("a string");
            assert!(blob.starts_with("[REDACTED:live_secret]"), "{blob}");
            assert_eq!(doc["note"], "see \\n and \"quotes\"");
        }
    }

    #[test]
    fn indented_or_inline_uuencoded_lines_are_one_block() {
        let long = [VALUE, b"-and-some-more-bytes-past-one-line"].concat();
        let lines: Vec<String> = long
            .chunks(45)
            .map(|c| format!("    {}", b2a_uu(c)))
            .collect();
        let yaml = format!("blob: |\n{}\nnext: 1\n", lines.join("\n"));
        let runs = runs(yaml.as_bytes(), &mut all_room());
        assert_eq!(runs.len(), 1, "{yaml}");
        assert_eq!(runs[0].bytes, long);
        // A line's tail after other text starts a block; an indented line goes on.
        let inline = format!("data: {}\n{}\n", b2a_uu(&long[..45]), lines[1]);
        let inline_runs = super::runs(inline.as_bytes(), &mut all_room());
        assert_eq!(inline_runs.len(), 1, "{inline}");
        assert_eq!(inline_runs[0].bytes, long);
        assert!(inline.as_bytes()[inline_runs[0].span.clone()].starts_with(b"M"));
    }

    #[test]
    fn an_escaped_backslash_before_n_breaks_no_line() {
        // `\\n` in a JSON string is a backslash and an `n`: the text is one line, whose
        // tail is no uuencoded line (read as a break, the head would be one).
        let (head, tail) = (b2a_uu(VALUE), b2a_uu(b"-and-some-more-bytes"));
        let json = format!(r#"{{"blob": "{head}\\n{tail}"}}"#);
        assert!(runs(json.as_bytes(), &mut all_room()).is_empty(), "{json}");
    }

    #[test]
    fn the_scrubber_finds_a_live_value_packed_escaped_or_not() {
        use std::collections::HashSet;

        use super::super::{Scrubber, Sees};
        use crate::secret::Secret;

        let scrubber = Scrubber::new();
        let id = scrubber
            .register("live_secret", &Secret::new(VALUE.to_vec()))
            .expect("registered");
        let other = scrubber
            .register(
                "live_secret",
                &Secret::new(b"other_7d1e5a9c3b2f4e6a8d0c".to_vec()),
            )
            .expect("registered");
        // JSON-escaped inside the gzip (the view of escapes reads the inflated bytes).
        let escaped: String = VALUE.iter().map(|&b| format!("\\u{b:04x}")).collect();
        let gz = b64(&gzip(format!("{{\"token\":\"{escaped}\"}}").as_bytes()));
        let uu = b2a_uu(VALUE);
        for body in [format!("release: {gz}"), format!("you sent:\n{uu}\n")] {
            assert_eq!(
                scrubber.matching(body.as_bytes(), Sees::All),
                HashSet::from([id]),
                "{body}"
            );
            assert!(
                scrubber
                    .matching(body.as_bytes(), Sees::Only(&HashSet::from([other])))
                    .is_empty()
            );
            assert!(
                scrubber.holds_packed(&runs(body.as_bytes(), &mut all_room())[0].bytes, Sees::All)
            );
        }
    }

    #[test]
    fn prose_and_plain_base64_have_no_runs() {
        let text = b"Hello, world.\nTHE END\nSGVsbG8gd29ybGQ=\nxH4sIAAAA is inside a word\n";
        let mut room = all_room();
        assert!(runs(text, &mut room).is_empty());
    }
}
