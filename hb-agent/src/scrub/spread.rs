//! Text spread out with NUL bytes or spelled with escapes: a value's ASCII characters
//! with NUL bytes between them, as UTF-16 and UTF-32 (either byte order, any alignment,
//! with a byte-order mark or without) write ASCII, and as a JSON writer escapes such
//! text (`\u0000`); and a value whose characters are JSON `\uXXXX` escapes or HTML
//! numeric references (`&#x6a;`, `&#106;`), all of them or some (Go's JSON writer
//! escapes `<`, `>` and `&`; `xmlcharrefreplace` the non-ASCII ones), in any case.
//!
//! In text that declares quoted-printable (RFC 2045: `quoted-printable`, as a mail
//! message's `Content-Transfer-Encoding` says it), also its soft line breaks (`=` at a
//! line's end, every 76 columns, which may fall inside a value) and its `=XX` escapes of
//! printable ASCII (a value's `=` is written `=3D`): a mail API's raw message holds
//! a key that way. Only there: elsewhere `=` and two hex digits are ordinary text (a
//! query's `key=3d…`), and reading them as an escape would break a value spelled plainly.
//!
//! Also JSON's short escapes: PHP's `json_encode` writes every `/` as `\/`, so a
//! value's base64 holding a `/` is no form there; and any JSON writer writes the line
//! breaks of wrapped text as `\n`, so base64 wrapped at 76 columns or a value cut every
//! few characters, inside a JSON string, is one line of text whose breaks no wrap scan
//! reads. Read where the buffer holds a `\/` or such a `\n` ([`has_json_wrap_or_slash`]),
//! the view's `/` and line breaks are the text's own, and the scrub of the view joins
//! the wrapped lines (the wrapped-base64 scan, and [`fold_breaks`] in the next layer).
//!
//! Also UTF-7 (RFC 2152), where the text holds a segment of it that spells printable
//! ASCII ([`has_utf7`]): UTF-7 is ASCII, so it passes as UTF-8 text, and any of a
//! value's characters may be written inside a `+…-` segment, the base64 of their
//! UTF-16 (`+AGs-` is `k`), or `+` as `+-`. A value with every character, every second
//! one or a few runs of it in segments matches no form (the live forms hold the base64 of
//! a value's whole UTF-16), and Python's `utf-7` codec gives it back whole. The view
//! reads each well-formed segment as its characters. Likewise a string literal's
//! escapes of printable ASCII (`\x6b`, `\153`, `\U0000006b`, `\u{6b}`, `\N{…}`), and
//! look-alikes that NFKC reads as ASCII (full-width `ｋ`, mathematical `𝐤`).
//!
//! Also characters that take no room (zero-width space, joiners, word joiner, BOM, soft
//! hyphen: [`INVISIBLE`]) put between a value's characters, raw or escaped; and line
//! breaks of a hard wrap at a narrow width (`fold -w 4`: runs of lines of one width up
//! to [`MAX_FOLD`], see [`fold_breaks`]), where the value, its base64 or its hex is cut
//! every few characters (wider base64 is joined by `wrapped` at every exit).
//!
//! The live forms hold UTF-16 and UTF-32 of a value and a few whole-value escapes; any
//! other spacing or mix of escapes matches no form. A [`Squeezed`] view of a buffer
//! drops every NUL byte, `\u0000` escape, invisible character (raw or escaped) and
//! narrow-wrap line break, and writes every other escape as the character's UTF-8: a
//! value spread out, escaped or cut in any of these ways is whole in it, and a span
//! found there maps back to the bytes of the buffer that spell it (whole escapes), so
//! [`cut_spread`] can redact them there. Escapes spelled with escapes (`%26%23106%3B`,
//! `\\u006a` in a JSON string inside a JSON string) are read up to [`LAYERS`] deep: a
//! view of the view, mapped back through both.
//!
//! Owns: the NUL-free, unescaped, unwrapped view of one buffer and the way back to the
//! buffer's bytes.
//! Must never: be built for a buffer with no NUL byte, no `\u`, no `\/`, no `&#`, no
//! invisible character, no run of narrow lines of one width (raw or with `\n` breaks),
//! no `\n` after a line of base64, no declaration of quoted-printable,
//! no `%XX` of an unreserved character, no named reference of [`NAMED`] past the
//! ones templates write and no UTF-7 segment spelling printable ASCII (the hot path pays
//! three `memchr`s, seven `memmem`s, a `memchr3` for the invisible characters' lead
//! bytes, a `memchr` step per line and one per `%`, `&`, `+` and `\n` for it, and a read
//! of the base64 run after each `+`), or outlive the scrub
//! that made it (it holds what the buffer holds).

use std::ops::Range;

use super::wrapped;

/// A buffer without its NUL bytes and `\u0000` escapes, its other escapes decoded,
/// and where each byte left came from.
pub struct Squeezed {
    bytes: Vec<u8>,
    /// The buffer's bytes each byte of `bytes` comes from, start and end (`u32`: the
    /// broker's answers are at most 1 GiB; a larger buffer gets no view): every byte of
    /// a decoded escape comes from the whole escape (see [`Squeezed::input_span`]).
    from: Vec<(u32, u32)>,
}

/// How many escapes deep a view reads: an escape may itself be spelled with escapes
/// (`%26%23106%3B` is `&#106;` percent-encoded; JSON inside a JSON string writes
/// `\\u006a`), and its reader undoes both.
const LAYERS: usize = 3;

/// The escapes a view reads besides JSON's and HTML's numeric ones, each only in a
/// buffer that shows it is written that way.
#[derive(Clone, Copy)]
struct Reads {
    /// Quoted-printable's soft line breaks and `=XX` (the buffer declares it).
    qp: bool,
    /// Percent-encoding's `%XX` of printable ASCII (the buffer holds one of an
    /// unreserved character, which no URL encoder escapes but one that escapes every
    /// byte, whose whole form is a live form already: `%76k%34…`, a value some of whose
    /// characters were escaped so that no form of it matches).
    percent: bool,
    /// HTML's named references of ASCII punctuation ([`NAMED`]: the buffer holds one
    /// that no template writes for a value's symbols, `&lowbar;`, `&sol;`, `&plus;`…).
    named: bool,
    /// UTF-7's `+…-` segments and `+-` (the buffer holds one that spells printable
    /// ASCII, see [`has_utf7`]).
    utf7: bool,
    /// Characters whose compatibility form (NFKC) is one printable ASCII character
    /// (full-width `ｋ`, mathematical `𝐤`, circled, superscript; the buffer holds one,
    /// see [`has_lookalike`]).
    lookalike: bool,
    /// The escapes of C, Python and JavaScript string literals that spell printable
    /// ASCII (`\x6b`, `\153`, `\U0000006b`, `\u{6b}`: the buffer holds one, see
    /// [`literal_escape`]).
    literal: bool,
}

/// HTML's named references (HTML5, as browsers and `html.unescape` read them) of
/// printable ASCII characters: a value's `_`, `.`, `/`, `+` or `=` written so is whole
/// to its reader and matches no form. The first five, which templates write and the
/// live forms hold, do not make a buffer's view by themselves.
const NAMED: [(&str, char); 43] = [
    ("amp;", '&'),
    ("AMP;", '&'),
    ("lt;", '<'),
    ("LT;", '<'),
    ("gt;", '>'),
    ("GT;", '>'),
    ("quot;", '"'),
    ("QUOT;", '"'),
    ("apos;", '\''),
    ("excl;", '!'),
    ("num;", '#'),
    ("dollar;", '$'),
    ("percnt;", '%'),
    ("lpar;", '('),
    ("rpar;", ')'),
    ("ast;", '*'),
    ("midast;", '*'),
    ("plus;", '+'),
    ("comma;", ','),
    ("period;", '.'),
    ("sol;", '/'),
    ("colon;", ':'),
    ("semi;", ';'),
    ("equals;", '='),
    ("quest;", '?'),
    ("commat;", '@'),
    ("lbrack;", '['),
    ("lsqb;", '['),
    ("bsol;", '\\'),
    ("rbrack;", ']'),
    ("rsqb;", ']'),
    ("Hat;", '^'),
    ("lowbar;", '_'),
    ("UnderBar;", '_'),
    ("grave;", '`'),
    ("DiacriticalGrave;", '`'),
    ("lbrace;", '{'),
    ("lcub;", '{'),
    ("verbar;", '|'),
    ("vert;", '|'),
    ("VerticalLine;", '|'),
    ("rbrace;", '}'),
    ("rcub;", '}'),
];

/// How many of [`NAMED`] lead (the ones templates write).
const NAMED_WRITTEN: usize = 9;

/// The character of the named reference `text` starts with (past its `&`), and the
/// reference's length without the `&`, among `names`.
fn named(text: &[u8], names: &[(&str, char)]) -> Option<(char, usize)> {
    names
        .iter()
        .find(|(name, _)| text.starts_with(name.as_bytes()))
        .map(|&(name, c)| (c, name.len()))
}

/// How text declares quoted-printable: the token in any of the cases mail software
/// writes it (`quoted-printable`, `Quoted-Printable`, `QUOTED-PRINTABLE`).
const QP_NAMES: [&[u8]; 3] = [
    b"quoted-printable",
    b"Quoted-Printable",
    b"QUOTED-PRINTABLE",
];

impl Squeezed {
    /// The view of `input`; `None` when it holds no NUL byte, no `\u`, no `&#`, no
    /// invisible character, no narrow hard wrap, no `\/` nor `\n` of wrapped text
    /// ([`has_json_wrap_or_slash`]), no declaration of quoted-printable, no
    /// `%XX` of an unreserved character, no named reference templates do not write and
    /// no UTF-7 segment spelling printable ASCII ([`has_utf7`]) (nothing is spread out,
    /// escaped or cut there) or is over 4 GiB. A view costs a
    /// pass over the buffer, and one over each layer's bytes while the layer before
    /// decoded something ([`LAYERS`] at most).
    pub fn of(input: &[u8]) -> Option<Self> {
        let mut view = Self::layer(input, true)?;
        for _ in 1..LAYERS {
            // A layer that decodes nothing leaves the bytes as long as they were.
            match Self::layer(&view.bytes, false) {
                Some(next) if next.bytes.len() < view.bytes.len() => view = next.over(&view),
                _ => break,
            }
        }
        Some(view)
    }

    /// `self`, a view of `below`'s bytes, as a view of the buffer `below` views.
    fn over(self, below: &Self) -> Self {
        let from = self
            .from
            .iter()
            .map(|&(start, end)| (below.from[start as usize].0, below.from[end as usize - 1].1))
            .collect();
        Self {
            bytes: self.bytes,
            from,
        }
    }

    /// One layer of the view of `input` (see [`Squeezed::of`]); quoted-printable is
    /// read in the `first` only (its `=3D41` is the text `=41`).
    fn layer(input: &[u8], first: bool) -> Option<Self> {
        let reads = Reads {
            qp: first
                && QP_NAMES
                    .iter()
                    .any(|name| memchr::memmem::find(input, name).is_some()),
            percent: has_percent_unreserved(input),
            named: memchr::memchr_iter(b'&', input)
                .any(|i| named(&input[i + 1..], &NAMED[NAMED_WRITTEN..]).is_some()),
            utf7: has_utf7(input),
            lookalike: has_lookalike(input),
            literal: memchr::memchr_iter(b'\\', input)
                .any(|i| literal_escape(&input[i..]).is_some()),
        };
        let folds = fold_breaks(input);
        if !reads.qp
            && !reads.percent
            && !reads.named
            && !reads.utf7
            && !reads.lookalike
            && !reads.literal
            && folds.is_empty()
            && memchr::memchr(0, input).is_none()
            && memchr::memmem::find(input, br"\u").is_none()
            && memchr::memmem::find(input, b"&#").is_none()
            && !has_invisible(input)
            && !has_json_wrap_or_slash(input)
        {
            return None;
        }
        u32::try_from(input.len()).ok()?;
        let mut bytes = Vec::with_capacity(input.len());
        let mut from = Vec::with_capacity(input.len());
        let mut folds = folds.into_iter().peekable();
        let mut i = 0;
        while i < input.len() {
            if input[i] == 0 {
                i += 1;
                continue;
            }
            // A break passed over inside an escape is done with.
            let fold = folds.next_if(|f| f.start <= i);
            if let Some(end) = fold.filter(|f| f.start == i).map(|f| f.end) {
                i = end;
                continue;
            }
            if let Some(len) = invisible_at(&input[i..]) {
                i += len;
                continue;
            }
            if let Some((c, len)) = lookalike_at(&input[i..]).filter(|_| reads.lookalike) {
                bytes.push(c);
                from.push((i as u32, (i + len) as u32));
                i += len;
                continue;
            }
            if reads.utf7 && input[i] == b'+' {
                let (chars, len) = match utf7_at(&input[i..]) {
                    Utf7::Plus => (vec!['+'], 2),
                    Utf7::Segment(chars, len) => (chars, len),
                    Utf7::Text(len) => {
                        bytes.extend_from_slice(&input[i..i + len]);
                        from.extend((i..i + len).map(|at| (at as u32, at as u32 + 1)));
                        i += len;
                        continue;
                    }
                };
                for c in chars.into_iter().filter(|&c| c != '\0' && !is_invisible(c)) {
                    let mut utf8 = [0u8; 4];
                    for &b in c.encode_utf8(&mut utf8).as_bytes() {
                        bytes.push(b);
                        from.push((i as u32, (i + len) as u32));
                    }
                }
                i += len;
                continue;
            }
            let Some((c, len)) = escape(&input[i..], reads) else {
                bytes.push(input[i]);
                from.push((i as u32, i as u32 + 1));
                i += 1;
                continue;
            };
            if c != '\0' && !is_invisible(c) {
                let mut utf8 = [0u8; 4];
                for &b in c.encode_utf8(&mut utf8).as_bytes() {
                    bytes.push(b);
                    from.push((i as u32, (i + len) as u32));
                }
            }
            i += len;
        }
        Some(Self { bytes, from })
    }

    /// The view's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes of the buffer of the view that `len` (at least 1) bytes of the view
    /// from `start` come from: from the first one's place to the end of the last one's
    /// byte or escape (the NULs between them included).
    fn input_span(&self, start: usize, len: usize) -> Range<usize> {
        self.from[start].0 as usize..self.from[start + len.max(1) - 1].1 as usize
    }
}

/// The character an escape at the start of `text` spells and the escape's length: a
/// JSON `\uXXXX` (a surrogate pair as two), an HTML `&#xH…;` or `&#D…;` (the `;`
/// optional, leading zeros allowed, as browsers and `html.unescape` read them), when
/// `reads.percent` a `%XX` of a printable ASCII character, when `reads.named` an HTML
/// named reference of one ([`NAMED`]), and when `reads.qp`
/// a quoted-printable soft line break (`=` CRLF or LF, also as a JSON string writes
/// them, `\r\n` or `\n`: NUL, dropped as the view drops NULs) or `=XX` of a printable
/// ASCII character; when `reads.literal` a string literal's escape of a printable ASCII
/// character ([`literal_escape`]); and JSON's short escapes (`\/`, `\\`, `\"`, `\n`,
/// `\r`, `\t`). `None` when `text` does not start with a well-formed one (a lone
/// surrogate included).
fn escape(text: &[u8], reads: Reads) -> Option<(char, usize)> {
    let qp = reads.qp;
    if let Some(found) = literal_escape(text).filter(|_| reads.literal) {
        return Some(found);
    }
    match text {
        [b'%', h, l, ..] if reads.percent => printable_hex(*h, *l).map(|c| (c, 3)),
        [b'=', b'\r', b'\n', ..] if qp => Some(('\0', 3)),
        [b'=', b'\n', ..] if qp => Some(('\0', 2)),
        // The same inside a JSON string (an API's answer holding the raw message).
        [b'=', b'\\', b'r', b'\\', b'n', ..] if qp => Some(('\0', 5)),
        [b'=', b'\\', b'n', ..] if qp => Some(('\0', 3)),
        [b'=', h, l, ..] if qp => printable_hex(*h, *l).map(|c| (c, 3)),
        [b'\\', b'u', ..] => {
            let unit = hex_unit(text.get(2..6)?)?;
            if !(0xD800..0xDC00).contains(&unit) {
                return Some((char::from_u32(unit)?, 6));
            }
            let low = match text.get(6..12)? {
                [b'\\', b'u', digits @ ..] => hex_unit(digits)?,
                _ => return None,
            };
            if !(0xDC00..0xE000).contains(&low) {
                return None;
            }
            let c = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
            Some((char::from_u32(c)?, 12))
        }
        [b'&', b'#', rest @ ..] => {
            let (code, len) = html_numeric(rest)?;
            Some((char::from_u32(code)?, 2 + len))
        }
        [b'&', rest @ ..] if reads.named => named(rest, &NAMED).map(|(c, n)| (c, n + 1)),
        // JSON's short escapes: PHP's `json_encode` writes every `/` as `\/` (in base64
        // too), any JSON writer a line break of wrapped text as `\n`; JSON inside a JSON
        // string has its escapes' `\` escaped in turn (the next layer reads them).
        [b'\\', b'\\', ..] => Some(('\\', 2)),
        [b'\\', b'/', ..] => Some(('/', 2)),
        [b'\\', b'"', ..] => Some(('"', 2)),
        [b'\\', b'n', ..] => Some(('\n', 2)),
        [b'\\', b'r', ..] => Some(('\r', 2)),
        [b'\\', b't', ..] => Some(('\t', 2)),
        _ => None,
    }
}

/// The printable ASCII character a string literal's escape at the start of `text`
/// spells, and the escape's length, as Python's `unicode_escape` (and C, JavaScript)
/// read one: `\xHH`, `\` and up to three octal digits, `\U` and eight hex digits,
/// Python's `\N{NAME}` ([`ascii_named`]) and JavaScript's `\u{H…}` (one to six hex
/// digits). A value some of whose characters are
/// written so is whole to `codecs.decode(text, "unicode_escape")` and matches no form
/// (the live forms hold a value with every byte `\x`- or octal-escaped). `None` for
/// any other text, or an escape of anything but printable ASCII.
fn literal_escape(text: &[u8]) -> Option<(char, usize)> {
    let (code, len) = match text {
        [b'\\', b'x', h, l, ..] => (hex_digits(&[*h, *l])?, 4),
        [b'\\', b'U', rest @ ..] => (hex_digits(rest.get(..8)?)?, 10),
        [b'\\', b'u', b'{', rest @ ..] => {
            let n = rest.iter().position(|&b| b == b'}')?;
            if !(1..=6).contains(&n) {
                return None;
            }
            (hex_digits(&rest[..n])?, 4 + n)
        }
        [b'\\', b'N', b'{', rest @ ..] => {
            let n = rest.iter().take(32).position(|&b| b == b'}')?;
            (u32::from(ascii_named(&rest[..n])?), 4 + n)
        }
        [b'\\', rest @ ..] => {
            let n = rest
                .iter()
                .take(3)
                .take_while(|b| (b'0'..=b'7').contains(b))
                .count();
            if n == 0 {
                return None;
            }
            let digits = std::str::from_utf8(&rest[..n]).ok()?;
            (u32::from_str_radix(digits, 8).ok()?, 1 + n)
        }
        _ => return None,
    };
    let c = char::from_u32(code).filter(|c| (' '..='~').contains(c))?;
    Some((c, len))
}

/// The Unicode names of printable ASCII's punctuation, in order of code point from
/// U+0020 (letters and digits are named by rule: [`ascii_named`]).
const PUNCTUATION_NAMES: [(&str, u8); 33] = [
    ("SPACE", b' '),
    ("EXCLAMATION MARK", b'!'),
    ("QUOTATION MARK", b'"'),
    ("NUMBER SIGN", b'#'),
    ("DOLLAR SIGN", b'$'),
    ("PERCENT SIGN", b'%'),
    ("AMPERSAND", b'&'),
    ("APOSTROPHE", b'\''),
    ("LEFT PARENTHESIS", b'('),
    ("RIGHT PARENTHESIS", b')'),
    ("ASTERISK", b'*'),
    ("PLUS SIGN", b'+'),
    ("COMMA", b','),
    ("HYPHEN-MINUS", b'-'),
    ("FULL STOP", b'.'),
    ("SOLIDUS", b'/'),
    ("COLON", b':'),
    ("SEMICOLON", b';'),
    ("LESS-THAN SIGN", b'<'),
    ("EQUALS SIGN", b'='),
    ("GREATER-THAN SIGN", b'>'),
    ("QUESTION MARK", b'?'),
    ("COMMERCIAL AT", b'@'),
    ("LEFT SQUARE BRACKET", b'['),
    ("REVERSE SOLIDUS", b'\\'),
    ("RIGHT SQUARE BRACKET", b']'),
    ("CIRCUMFLEX ACCENT", b'^'),
    ("LOW LINE", b'_'),
    ("GRAVE ACCENT", b'`'),
    ("LEFT CURLY BRACKET", b'{'),
    ("VERTICAL LINE", b'|'),
    ("RIGHT CURLY BRACKET", b'}'),
    ("TILDE", b'~'),
];

/// The names of the decimal digits, `DIGIT ZERO` to `DIGIT NINE`.
const DIGIT_NAMES: [&str; 10] = [
    "ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE",
];

/// The printable ASCII character whose Unicode name is `name`, in any case, as Python's
/// `\N{…}` reads one (`\N{latin small letter k}`, `\N{LOW LINE}`, `\N{DIGIT ZERO}`).
fn ascii_named(name: &[u8]) -> Option<u8> {
    let name = std::str::from_utf8(name).ok()?.to_ascii_uppercase();
    let letter = |prefix: &str| match name.strip_prefix(prefix)?.as_bytes() {
        [c @ b'A'..=b'Z'] => Some(*c),
        _ => None,
    };
    if let Some(c) = letter("LATIN CAPITAL LETTER ") {
        return Some(c);
    }
    if let Some(c) = letter("LATIN SMALL LETTER ") {
        return Some(c.to_ascii_lowercase());
    }
    if let Some(digit) = name.strip_prefix("DIGIT ") {
        let n = DIGIT_NAMES.iter().position(|d| *d == digit)?;
        return Some(b'0' + n as u8);
    }
    PUNCTUATION_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, c)| c)
}

/// The value of hex digits (all of them hex digits, at most eight).
fn hex_digits(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// The code point of the HTML numeric reference whose text after `&#` starts `rest`
/// (`x6a;`, `106`), and the length it takes of `rest`, as HTML and `html.unescape`
/// read one: every digit up to the first other character, which ends it; a `;` there
/// is part of it, but optional (`&#106&#107` is `jk`), and leading zeros count for
/// nothing. `None` without a digit, or past U+10FFFF's digits (7 decimal, 6 hex).
/// The one reader of them: the view of escapes and the packed runs read them alike.
pub(super) fn html_numeric(rest: &[u8]) -> Option<(u32, usize)> {
    let (radix, digits) = match rest {
        [b'x' | b'X', digits @ ..] => (16, digits),
        _ => (10, rest),
    };
    let n = digits
        .iter()
        .position(|b| !(b.is_ascii_digit() || radix == 16 && b.is_ascii_hexdigit()))
        .unwrap_or(digits.len());
    let significant = &digits[..n];
    let significant = &significant[significant
        .iter()
        .position(|&b| b != b'0')
        .unwrap_or(n.saturating_sub(1))..];
    if n == 0 || significant.len() > 7 {
        return None;
    }
    let code = u32::from_str_radix(std::str::from_utf8(significant).ok()?, radix).ok()?;
    let end = n + usize::from(digits.get(n) == Some(&b';'));
    Some((code, rest.len() - digits.len() + end))
}

/// Whether `input` holds text a JSON writer escaped so that no form matches it: a `\/`
/// (PHP's `json_encode` writes every `/` so, a value's base64 included), or a line
/// break escaped as `\n` inside wrapped text (after a line of [`wrapped::MIN_LINE`]
/// base64 characters, as `base64.encodebytes` wraps at 76 columns; or between two
/// lines of one narrow width with no blank, a value cut every few characters, see
/// [`fold_breaks`]). A `memmem` for `\/` and a step per `\n`.
fn has_json_wrap_or_slash(input: &[u8]) -> bool {
    if memchr::memmem::find(input, br"\/").is_some() {
        return true;
    }
    // The width of the narrow line before the last escaped break (0: none).
    let mut last_piece = 0;
    let mut line_start = 0;
    memchr::memmem::find_iter(input, br"\n").any(|i| {
        let line = input[line_start..i]
            .strip_suffix(br"\r")
            .unwrap_or(&input[line_start..i]);
        line_start = i + 2;
        let base64_line = line.len() >= wrapped::MIN_LINE
            && line[line.len() - wrapped::MIN_LINE..]
                .iter()
                .all(|&b| wrapped::is_base64(b));
        let piece = if line.len() <= MAX_FOLD
            && !line
                .iter()
                .any(|&b| matches!(b, b' ' | b'\t' | b'"' | b'\\'))
        {
            line.len()
        } else {
            0
        };
        let narrow_pair = piece > 0 && piece == last_piece;
        last_piece = piece;
        base64_line || narrow_pair
    })
}

/// What a `+` starts in UTF-7 text (RFC 2152, Python's `utf-7` codec): a decoder reads
/// the `+` and every base64 character after it as one segment, the base64 (no padding)
/// of the UTF-16BE of the characters it spells, ended by a `-` (dropped) or any other
/// character.
enum Utf7 {
    /// `+-`: the `+` itself.
    Plus,
    /// A well-formed segment: the characters it spells and its length, its `-` included.
    Segment(Vec<char>, usize),
    /// No segment the view reads: the `+` and the base64 characters after it, left as
    /// text (read whole, so a long run is read once however many `+` it holds).
    Text(usize),
}

/// Whether `b` is a character of UTF-7's base64 (the standard alphabet, no padding).
fn is_utf7_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// The 6 bits a character of UTF-7's base64 stands for.
fn utf7_sextet(b: u8) -> u32 {
    u32::from(match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'+' => 62,
        _ => 63,
    })
}

/// What the `+` that `text` starts with starts (see [`Utf7`]). A segment is read only
/// where a decoder reads it whole (its bits fill UTF-16 units but for fewer than 6 zero
/// bits, which pair their surrogates) and it ends at a `-`, the text's end or a
/// character that starts no escape of this view (a `\`, `%` or `&` after it may be an
/// escaped `/` of base64 text the next step of the view joins).
fn utf7_at(text: &[u8]) -> Utf7 {
    let run = text[1..]
        .iter()
        .position(|&b| !is_utf7_base64(b))
        .unwrap_or(text.len() - 1);
    let after = text.get(1 + run).copied();
    if run == 0 {
        return if after == Some(b'-') {
            Utf7::Plus
        } else {
            Utf7::Text(1)
        };
    }
    let ends_well = !matches!(after, Some(b'\\' | b'%' | b'&' | 0));
    match utf7_chars(&text[1..1 + run]).filter(|_| ends_well) {
        Some(chars) => Utf7::Segment(chars, 1 + run + usize::from(after == Some(b'-'))),
        None => Utf7::Text(1 + run),
    }
}

/// The characters a segment's base64 spells, if it is whole: no more than 5 bits left
/// over, all zero, and its UTF-16 units each a character or a surrogate pair.
fn utf7_chars(b64: &[u8]) -> Option<Vec<char>> {
    let spare = b64.len() * 6 % 16;
    if spare >= 6 || utf7_sextet(b64[b64.len() - 1]) & ((1 << spare) - 1) != 0 {
        return None;
    }
    let mut units = Vec::with_capacity(b64.len() * 6 / 16);
    let (mut bits, mut held) = (0u32, 0u32);
    for &b in b64 {
        bits = bits << 6 | utf7_sextet(b);
        held += 6;
        if held >= 16 {
            held -= 16;
            units.push((bits >> held) as u16);
            bits &= (1 << held) - 1;
        }
    }
    char::decode_utf16(units).collect::<Result<_, _>>().ok()
}

/// Whether `input` holds UTF-7 that spells a value's characters: a well-formed segment
/// (see [`utf7_at`]) holding a printable ASCII character, or a `+-` (a `+`) before a
/// base64 character. A `memchr` step per `+`, each run of base64 after one read once.
fn has_utf7(input: &[u8]) -> bool {
    let mut i = 0;
    while let Some(at) = memchr::memchr(b'+', &input[i..]) {
        let p = i + at;
        i = p + match utf7_at(&input[p..]) {
            Utf7::Plus if input.get(p + 2).is_some_and(|&b| is_utf7_base64(b)) => return true,
            Utf7::Plus => 2,
            Utf7::Segment(chars, _) if chars.iter().any(|c| (' '..='~').contains(c)) => {
                return true;
            }
            Utf7::Segment(_, len) | Utf7::Text(len) => len,
        };
    }
    false
}

/// The UTF-8 lead bytes of the characters whose compatibility form is one printable
/// ASCII character other than the space (1,080 of them: full-width forms, mathematical
/// alphanumerics, circled and parenthesised letters, superscripts and subscripts,
/// modifier letters…; a unit test holds the list to Unicode's tables).
const LOOKALIKE_LEADS: [u8; 10] = [0xC2, 0xC5, 0xCA, 0xCB, 0xCD, 0xE1, 0xE2, 0xEA, 0xEF, 0xF0];

/// [`LOOKALIKE_LEADS`] as a table indexed by byte: one load per byte.
const IS_LOOKALIKE_LEAD: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < LOOKALIKE_LEADS.len() {
        table[LOOKALIKE_LEADS[i] as usize] = true;
        i += 1;
    }
    table
};

/// The printable ASCII character (not the space) whose look-alike `text` starts with,
/// and the look-alike's length: a character whose compatibility decomposition (what
/// `unicodedata.normalize("NFKC", …)` and NFKC-folding identifiers read) is that one
/// character. A value some of whose characters are written so (`vｋ0０`) is whole to
/// NFKC and matches no form.
fn lookalike_at(text: &[u8]) -> Option<(u8, usize)> {
    let len = match text.first()? {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return None,
    };
    let c = std::str::from_utf8(text.get(..len)?).ok()?.chars().next()?;
    let (mut only, mut parts) = (None, 0);
    unicode_normalization::char::decompose_compatible(c, |d| {
        only = Some(d);
        parts += 1;
    });
    let ascii = only.filter(|d| parts == 1 && *d != c && ('!'..='~').contains(d))?;
    Some((ascii as u8, len))
}

/// Whether `input` holds a look-alike of printable ASCII ([`lookalike_at`]): nothing
/// for ASCII text (a word-at-a-time check); else a table load per byte and a lookup per
/// character that starts with one of [`LOOKALIKE_LEADS`] (not the lead bytes of CJK,
/// Cyrillic or Greek text).
fn has_lookalike(input: &[u8]) -> bool {
    !input.is_ascii()
        && (0..input.len()).any(|i| {
            IS_LOOKALIKE_LEAD[usize::from(input[i])] && lookalike_at(&input[i..]).is_some()
        })
}

/// The printable ASCII character (or tab) two hex digits spell, if they do.
fn printable_hex(h: u8, l: u8) -> Option<char> {
    let byte = u8::from_str_radix(std::str::from_utf8(&[h, l]).ok()?, 16).ok()?;
    (byte == b'\t' || (b' '..=b'~').contains(&byte)).then_some(char::from(byte))
}

/// Whether `input` holds a `%XX` of an unreserved character (a letter, a digit, `-`,
/// `.`, `_`, `~`), or the start of an escape percent-encoded (`%26%23`, `&#`; `%5Cu`,
/// `\u`): a step per `%`.
fn has_percent_unreserved(input: &[u8]) -> bool {
    memchr::memchr_iter(b'%', input).any(|i| match input.get(i + 1..i + 3) {
        Some([h, l]) => printable_hex(*h, *l).is_some_and(|c| {
            let next = &input[i + 3..];
            c.is_ascii_alphanumeric()
                || "-._~".contains(c)
                || (c == '&' && next.starts_with(b"%23"))
                || (c == '\\' && next.first() == Some(&b'u'))
        }),
        _ => false,
    })
}

/// The UTF-8 of the characters that take no room (zero-width space, non-joiner and
/// joiner, word joiner and the invisible operators, the zero-width no-break space or
/// BOM, the soft hyphen): put between a value's characters, the text reads as the value
/// and matches no form of it.
const INVISIBLE: [&[u8]; 9] = [
    "\u{200B}".as_bytes(),
    "\u{200C}".as_bytes(),
    "\u{200D}".as_bytes(),
    "\u{2060}".as_bytes(),
    "\u{2061}".as_bytes(),
    "\u{2062}".as_bytes(),
    "\u{2063}".as_bytes(),
    "\u{2064}".as_bytes(),
    "\u{FEFF}".as_bytes(),
];

/// Whether `c` is an invisible character the view drops (see [`INVISIBLE`]).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{AD}')
}

/// The length of the invisible character `text` starts with, if it does.
fn invisible_at(text: &[u8]) -> Option<usize> {
    match text {
        [0xC2, 0xAD, ..] => Some(2),
        [0xE2 | 0xEF, ..] => INVISIBLE
            .iter()
            .find(|c| text.starts_with(c))
            .map(|c| c.len()),
        _ => None,
    }
}

/// Whether `input` holds an invisible character: one pass for the three lead bytes
/// they have (ASCII text has none of them).
fn has_invisible(input: &[u8]) -> bool {
    memchr::memchr3_iter(0xC2, 0xE2, 0xEF, input).any(|i| invisible_at(&input[i..]).is_some())
}

/// The widest line of a hard wrap the view joins: wider base64 is joined by the scan of
/// wrapped base64 (`wrapped`, 16 characters before a break).
const MAX_FOLD: usize = 16;

/// The line breaks of `input` that a hard wrap at a narrow width put inside its text
/// (`fold -w 4`, a value cut every few characters): in each run of two or more
/// consecutive lines of the same width (1 to [`MAX_FOLD`] bytes, `\r` not counted) that
/// hold no space or tab and are not one character repeated three or more times (a
/// heading's `=====`, a fence's ```) nor a
/// markup tag (`</body>` above `</html>`), the
/// breaks between them, and those joining the run to a non-empty line right before it
/// (where the wrapped text may start, after a label) and right after it (the wrap's
/// last, shorter line). In order, each `\n` or `\r\n`. Text without such a run (prose,
/// most code and markup: 5 of 171 files of Python's standard library, 10 of 300
/// documentation files) gives none; each line costs a `memchr` step.
fn fold_breaks(input: &[u8]) -> Vec<Range<usize>> {
    // Each line: (start, end of its content, end of its line break).
    let mut lines: Vec<(usize, usize, usize)> = Vec::new();
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', input) {
        let end = if nl > start && input[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        lines.push((start, end, nl + 1));
        start = nl + 1;
    }
    if lines.len() < 2 {
        return Vec::new();
    }
    lines.push((start, input.len(), input.len()));
    let width = |l: &(usize, usize, usize)| l.1 - l.0;
    // The width of a line that may be a piece of a wrapped value (0 if it may not).
    let piece = |l: &(usize, usize, usize)| {
        let text = &input[l.0..l.1];
        let spaced = text.iter().any(|&b| b == b' ' || b == b'\t');
        // Three or more (a fence's ```): a value cut every 2 characters often has a
        // piece `44`.
        let repeated = text.len() > 2 && text.iter().all(|&b| b == text[0]);
        // `</body>` above `</html>` ends every page.
        let tag = text.first() == Some(&b'<') && text.last() == Some(&b'>');
        if spaced || repeated || tag {
            0
        } else {
            text.len()
        }
    };
    let mut breaks: Vec<Range<usize>> = Vec::new();
    // A line's break, once.
    let push = |l: &(usize, usize, usize), breaks: &mut Vec<Range<usize>>| {
        if breaks.last().is_none_or(|b| b.start < l.1) && l.1 < l.2 {
            breaks.push(l.1..l.2);
        }
    };
    let mut i = 0;
    while i + 1 < lines.len() {
        let w = piece(&lines[i]);
        let mut j = i;
        while j + 1 < lines.len() && piece(&lines[j + 1]) == w && lines[j].1 < lines[j].2 {
            j += 1;
        }
        if w == 0 || w > MAX_FOLD || j == i {
            i = j.max(i + 1);
            continue;
        }
        if i > 0 && width(&lines[i - 1]) > 0 {
            push(&lines[i - 1], &mut breaks);
        }
        for line in &lines[i..j] {
            push(line, &mut breaks);
        }
        if j + 1 < lines.len() && width(&lines[j + 1]) > 0 {
            push(&lines[j], &mut breaks);
        }
        i = j + 1;
    }
    breaks
}

/// The value of 4 hex digits.
fn hex_unit(digits: &[u8]) -> Option<u32> {
    if digits.len() != 4 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// `input` with what `find` finds in its [`Squeezed`] view (spans of the view, each
/// with the label of its marker) redacted where the view's bytes came from; `None` when
/// `input` has no view (no NUL byte, no `\u`, no `&#`) or `find` finds nothing there.
pub fn cut_spread(
    input: &[u8],
    find: impl FnOnce(&[u8]) -> Vec<(Range<usize>, &'static str)>,
) -> Option<Vec<u8>> {
    let squeezed = Squeezed::of(input)?;
    let spans: Vec<(Range<usize>, &'static str)> = find(squeezed.bytes())
        .into_iter()
        .filter(|(r, _)| !r.is_empty())
        .map(|(r, label)| (squeezed.input_span(r.start, r.len()), label))
        .collect();
    (!spans.is_empty()).then(|| cut(input, spans))
}

/// `input` with each span replaced by `[REDACTED:<label>]`; overlapping and touching
/// spans are one (the first one's label).
pub(super) fn cut(input: &[u8], mut spans: Vec<(Range<usize>, &'static str)>) -> Vec<u8> {
    spans.sort_by_key(|(r, _)| r.start);
    let mut merged: Vec<(Range<usize>, &'static str)> = Vec::with_capacity(spans.len());
    for (r, label) in spans {
        match merged.last_mut() {
            Some((last, _)) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push((r, label)),
        }
    }
    let mut out = Vec::with_capacity(input.len());
    let mut at = 0;
    for (r, label) in merged {
        out.extend_from_slice(&input[at..r.start]);
        out.extend_from_slice(b"[REDACTED:");
        out.extend_from_slice(label.as_bytes());
        out.push(b']');
        at = r.end;
    }
    out.extend_from_slice(&input[at..]);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::{Scrubber, Sees};
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn no_nul_no_escape_no_view() {
        assert!(Squeezed::of(b"plain text & more, \\n and \\t escapes, #1 & #2").is_none());
        assert!(Squeezed::of(b"").is_none());
    }

    #[test]
    fn escapes_are_decoded_and_map_back_whole() {
        let input = br"a\u00e9\u0042\ud834\udd1e&#x6a;&#X6B;&#108;&#xd800;\ud800x\u12&#;&#12a;b";
        let sq = Squeezed::of(input).expect("escaped");
        let mut want = "a\u{e9}B\u{1d11e}jkl".as_bytes().to_vec();
        // `&#12a;` is U+000C and `a;`, as HTML reads it.
        want.extend_from_slice(b"&#xd800;\\ud800x\\u12&#;\x0ca;b");
        assert_eq!(sq.bytes(), want.as_slice());
        // The two bytes of é come from the one escape; the pair from its 12 bytes.
        assert_eq!(&input[sq.input_span(1, 1)], br"\u00e9");
        assert_eq!(&input[sq.input_span(2, 1)], br"\u00e9");
        assert_eq!(&input[sq.input_span(1, 3)], br"\u00e9\u0042");
        assert_eq!(&input[sq.input_span(4, 4)], br"\ud834\udd1e");
        assert_eq!(&input[sq.input_span(8, 3)], b"&#x6a;&#X6B;&#108;");
    }

    #[test]
    fn percent_escapes_are_read_where_an_unreserved_character_is_escaped() {
        // A URL's usual escapes (reserved characters) build no view.
        assert!(Squeezed::of(b"https://x.test/?q=a%20b%2Fc&r=%3D%25").is_none());
        // One of a letter does (attack review 40: `%76k%34` came back whole to
        // `unquote`); then every `%XX` of printable ASCII is read.
        let input = b"%76k%340%2Dab%0a%zz";
        let sq = Squeezed::of(input).expect("escaped");
        assert_eq!(sq.bytes(), b"vk40-ab%0a%zz");
        assert_eq!(&input[sq.input_span(0, 5)], b"%76k%340%2D");
    }

    #[test]
    fn named_references_of_punctuation_are_read_where_one_templates_do_not_write_is() {
        // `&amp;` and its kin alone build no view (the live forms hold them).
        assert!(Squeezed::of(b"a &amp; b &lt;c&gt; &quot;d&quot; &nbsp;").is_none());
        // `&lowbar;` does (attack review 40: a key's `_` so came back whole to
        // `html.unescape`); then `&amp;` is read too.
        let input = b"vk40&lowbar;ab&period;c&amp;d&lowbar";
        let sq = Squeezed::of(input).expect("escaped");
        assert_eq!(sq.bytes(), b"vk40_ab.c&d&lowbar");
        assert_eq!(&input[sq.input_span(0, 7)], b"vk40&lowbar;ab");
    }

    #[test]
    fn utf7_segments_are_read_where_one_spells_ascii() {
        // Plain text, a `+` in arithmetic, tables and base64 build no view.
        assert!(Squeezed::of(b"1+2=3, C++ and +--+--+, x+-- y").is_none());
        assert!(
            Squeezed::of(
                b"{\"b\": \"q8Zx+kL9mN2pQ7rS4tU5vW6x+Y7z8A9B0C1D2E3F4G5H6I7J8K9L0M1N2O3P4Q5\"}"
            )
            .is_none()
        );
        // Every second character in a segment, a run in one, `+` as `+-` (attack review
        // 46: each came back whole to `decode("utf-7")`).
        let input = b"v+AGs-0+ADAAPwBh-b+-c+AOkA6Q-d+AGU.";
        let sq = Squeezed::of(input).expect("utf-7");
        assert_eq!(sq.bytes(), "vk00?ab+c\u{e9}\u{e9}de.".as_bytes());
        assert_eq!(&input[sq.input_span(0, 5)], b"v+AGs-0+ADAAPwBh-");
        assert_eq!(&input[sq.input_span(7, 1)], b"+-");
        // Ill-formed segments (padding bits set, a partial unit, a lone surrogate) and a
        // run before an escape stay text; the escape is read.
        let input = br"+AGF- +AG- +2D0- +AGsA +AGs-";
        let sq = Squeezed::of(input).expect("utf-7");
        assert_eq!(sq.bytes(), b"+AGF- +AG- +2D0- +AGsA k");
    }

    #[test]
    fn lookalikes_of_ascii_are_read_as_it() {
        // Accents, CJK, NBSP, `…` and `™` (more than one character) build no view.
        assert!(Squeezed::of("café 東京\u{a0}… ™ é".as_bytes()).is_none());
        // Every second character full-width, mathematical, circled (attack review 46:
        // each came back whole to `normalize("NFKC", …)`).
        let input = "vｋ0𝟎?ⓐb＿Z".as_bytes();
        let sq = Squeezed::of(input).expect("look-alikes");
        assert_eq!(sq.bytes(), b"vk00?ab_Z");
        assert_eq!(&input[sq.input_span(1, 1)], "ｋ".as_bytes());
        // Every look-alike's lead byte is one the gate looks for.
        for c in (0x80..=0x10FFFF).filter_map(char::from_u32) {
            let mut utf8 = [0u8; 4];
            let bytes = c.encode_utf8(&mut utf8).as_bytes();
            if lookalike_at(bytes).is_some() {
                assert!(LOOKALIKE_LEADS.contains(&bytes[0]), "{:X}", u32::from(c));
            }
        }
    }

    #[test]
    fn string_literal_escapes_are_read_where_one_spells_ascii() {
        // Escapes of control characters (a C string's `\x00\n`, a regex's `\1`) and
        // JSON's own build no view.
        assert!(Squeezed::of(br"\x00\x1b[0m \0 \1 \400 C:\xyz").is_none());
        // Every second character escaped (attack review 46: each came back whole to
        // `codecs.decode(text, "unicode_escape")`).
        let input = br"v\x6b0\060?\U00000061b\u{5f}\1530\N{Latin Capital Letter Q}\N{low line}\N{DIGIT NINE}\N{SNOWMAN}";
        let sq = Squeezed::of(input).expect("escaped");
        assert_eq!(sq.bytes(), br"vk00?ab_k0Q_9\N{SNOWMAN}");
        assert_eq!(&input[sq.input_span(0, 4)], br"v\x6b0\060");
        // Escaped again inside a JSON string: the next layer reads them.
        let sq = Squeezed::of(br"v\\x6b0").expect("escaped");
        assert_eq!(sq.bytes(), b"vk0");
    }

    #[test]
    fn escapes_spelled_with_escapes_are_read_and_map_back_whole() {
        // `&#118;&#107;` percent-encoded, then `\u0034\u0030` inside a JSON string in
        // JSON.
        let input = br"%26%23118%3B%26%23107%3B-\\u0034\\u0030!";
        let sq = Squeezed::of(input).expect("escaped");
        assert_eq!(sq.bytes(), b"vk-40!");
        assert_eq!(&input[sq.input_span(0, 2)], b"%26%23118%3B%26%23107%3B");
        assert_eq!(&input[sq.input_span(3, 2)], br"\\u0034\\u0030");
    }

    #[test]
    fn html_references_are_read_as_browsers_read_them() {
        // No `;`, leading zeros past 8 digits (attack review 40: each gave another
        // tenant's key back whole to `html.unescape`).
        let input = b"&#106&#x6B&#0000000108;&#x00000006d&#110x&#99999999;";
        let sq = Squeezed::of(input).expect("escaped");
        assert_eq!(sq.bytes(), b"jklmnx&#99999999;");
        assert_eq!(&input[sq.input_span(0, 2)], b"&#106&#x6B");
        assert_eq!(&input[sq.input_span(2, 2)], b"&#0000000108;&#x00000006d");
        assert_eq!(&input[sq.input_span(4, 1)], b"&#110");
    }

    #[test]
    fn the_view_maps_back_to_the_spread_bytes() {
        // "ab" in UTF-32BE after a 1-byte prefix (misaligned), then JSON-escaped NULs.
        let input = b"x\0\0\0a\0\0\0b!c\\u0000d";
        let sq = Squeezed::of(input).expect("spread");
        assert_eq!(sq.bytes(), b"xab!cd");
        assert_eq!(&input[sq.input_span(1, 2)], b"a\0\0\0b");
        assert_eq!(&input[sq.input_span(4, 2)], b"c\\u0000d");
    }

    const VALUE: &str = "Zq8kLm2vX9pQ-live-7a6b5c4d";

    fn utf32(text: &str, big_endian: bool) -> Vec<u8> {
        text.chars()
            .flat_map(|c| {
                if big_endian {
                    u32::from(c).to_be_bytes()
                } else {
                    u32::from(c).to_le_bytes()
                }
            })
            .collect()
    }

    /// `bytes` with the NULs dropped, as the attacker reads an answer.
    fn squeezed(bytes: &[u8]) -> String {
        String::from_utf8_lossy(
            &bytes
                .iter()
                .copied()
                .filter(|&b| b != 0)
                .collect::<Vec<_>>(),
        )
        .replace(r"\u0000", "")
    }

    /// What the broker does with an answer: the spread-out values the scrub sees cut.
    fn cut_live(scrubber: &Scrubber, sees: Sees<'_>, body: &[u8]) -> Option<Vec<u8>> {
        cut_spread(body, |view| {
            scrubber
                .scrub_seeing(view, sees)
                .redactions
                .iter()
                .map(|r| (r.offset..r.offset + r.len, r.family))
                .collect()
        })
    }

    #[test]
    fn a_live_value_in_utf32_at_any_alignment_is_cut() {
        let scrubber = Scrubber::new();
        let id = scrubber
            .register("live_secret", &Secret::new(VALUE.as_bytes().to_vec()))
            .expect("registered");
        let text = format!("you sent: Bearer {VALUE}\n");
        for big_endian in [false, true] {
            for bom in [false, true] {
                // 0 to 3 bytes before it: UTF-32 inside a longer answer need not be aligned.
                for prefix in 0..=3 {
                    let mut body = b"ok:"[..prefix].to_vec();
                    if bom {
                        body.extend_from_slice(if big_endian {
                            &[0, 0, 0xFE, 0xFF]
                        } else {
                            &[0xFF, 0xFE, 0, 0]
                        });
                    }
                    body.extend(utf32(&text, big_endian));
                    let what = format!("be={big_endian} bom={bom} prefix={prefix}");
                    assert!(squeezed(&body).contains(VALUE), "{what}: planted");
                    assert_eq!(
                        scrubber.matching(&body, Sees::All),
                        HashSet::from([id]),
                        "{what}: found by the search"
                    );
                    assert!(
                        scrubber
                            .visible_values(&HashSet::from([id]))
                            .contains(&body),
                        "{what}: seen by the reflection check"
                    );
                    let out = cut_live(&scrubber, Sees::All, &body).expect("cut");
                    let read = squeezed(&out);
                    assert!(!read.contains(VALUE), "{what}: {read:?}");
                    assert!(read.contains("[REDACTED:live_secret]"), "{what}: {read:?}");
                    assert!(read.contains("you sent: Bearer"), "{what}: {read:?}");
                    // No run of it is left either.
                    assert!(!read.contains(&VALUE[..8]) && !read.contains(&VALUE[18..]));
                }
            }
        }
    }

    #[test]
    fn mixed_text_is_cut_where_the_value_is_spread_and_left_alone_elsewhere() {
        let scrubber = Scrubber::new();
        let value = Secret::new(VALUE.as_bytes().to_vec());
        let id = scrubber
            .register("live_secret", &value)
            .expect("registered");
        // UTF-8 text, the value in UTF-32BE, more UTF-8 with a stray NUL, the value
        // spelled with JSON NUL escapes (UTF-32 text put in a JSON string), and UTF-16 at
        // an odd offset.
        let mut body = "résumé: ".as_bytes().to_vec();
        body.extend(utf32(VALUE, true));
        body.extend_from_slice(" and ünïcode\0 stays ".as_bytes());
        for c in VALUE.chars() {
            body.push(c as u8);
            body.extend_from_slice(br"\u0000\u0000\u0000");
        }
        body.push(b'!');
        body.extend(VALUE.encode_utf16().flat_map(u16::to_le_bytes));
        let out = cut_live(&scrubber, Sees::All, &body).expect("cut");
        let read = squeezed(&out);
        assert!(!read.contains(VALUE), "{read:?}");
        assert_eq!(
            read.matches("[REDACTED:live_secret]").count(),
            3,
            "{read:?}"
        );
        assert!(read.starts_with("résumé: [REDACTED"), "{read:?}");
        assert!(read.contains(" and ünïcode stays "), "{read:?}");
        // A view that does not see the value cuts nothing (the broker's answer to a
        // sandbox that sent it).
        assert!(cut_live(&scrubber, Sees::AllBut(&HashSet::from([id])), &body).is_none());
        assert!(cut_live(&scrubber, Sees::Only(&HashSet::new()), &body).is_none());
        // Text with no NUL and no escape is not looked at.
        assert!(cut_live(&scrubber, Sees::All, VALUE.as_bytes()).is_none());
    }

    #[test]
    fn a_live_value_escaped_in_any_mix_is_cut_where_the_escapes_are() {
        let scrubber = Scrubber::new();
        let go = "Zq8k<Lm2v&X9pQ>live-7a6b";
        let id = scrubber
            .register("live_secret", &Secret::new(go.as_bytes().to_vec()))
            .expect("registered");
        let wide = "pä$$wörd-Zq8k€-𝄞live";
        scrubber
            .register("live_secret", &Secret::new(wide.as_bytes().to_vec()))
            .expect("registered");
        // Go's JSON writer (`<`, `>`, `&` escaped), and every character escaped a
        // different way in turn, JSON and HTML, upper and lower case (no encoder does
        // that, so no form is written that way).
        let go_json = go
            .replace('<', r"\u003c")
            .replace('>', r"\u003e")
            .replace('&', r"\u0026");
        let mixed: String = wide
            .chars()
            .enumerate()
            .map(|(i, c)| match i % 5 {
                0 => c
                    .encode_utf16(&mut [0; 2])
                    .iter()
                    .map(|u| format!("\\u{u:04X}"))
                    .collect(),
                1 => format!("&#x{:x};", u32::from(c)),
                2 => format!("&#{};", u32::from(c)),
                3 => c.to_string(),
                _ => c
                    .encode_utf16(&mut [0; 2])
                    .iter()
                    .map(|u| format!("\\u{u:04x}"))
                    .collect(),
            })
            .collect();
        for (what, escaped) in [("go json", go_json), ("mixed", mixed)] {
            let body = format!("{{\"msg\":\"{escaped}\",\"n\":1}}");
            assert!(
                scrubber.scrub(body.as_bytes()).redactions.is_empty(),
                "{what}: a form"
            );
            let out = cut_live(&scrubber, Sees::All, body.as_bytes()).expect("cut");
            // Not `assert_eq!`: a failure would print the value.
            assert!(
                out == b"{\"msg\":\"[REDACTED:live_secret]\",\"n\":1}",
                "{what}"
            );
            assert!(
                !scrubber.matching(body.as_bytes(), Sees::All).is_empty(),
                "{what}"
            );
        }
        // Not for a view that does not see it.
        let body = format!("[\"{}\"]", go.replace('&', r"\u0026"));
        assert!(
            cut_live(
                &scrubber,
                Sees::AllBut(&HashSet::from([id])),
                body.as_bytes()
            )
            .is_none()
        );
    }

    #[test]
    fn quoted_printable_is_read_where_the_text_declares_it() {
        let scrubber = Scrubber::new();
        let padded = format!("{VALUE}==");
        scrubber
            .register("live_secret", &Secret::new(padded.as_bytes().to_vec()))
            .expect("registered");
        let (a, b) = padded.split_at(11);
        let mime = "Content-Transfer-Encoding: quoted-printable\r\n\r\nkey: ";
        let bodies = [
            format!("{mime}{a}=\r\n{b}\r\n").replace("==\r\n", "=3D=3D\r\n"),
            format!("{mime}{a}=\n{}\n", b.replace('=', "=3d")),
            format!("{mime}{}\r\n", padded.replace('=', "=3D")),
            // In a JSON string, its line breaks escaped.
            format!("{mime}{a}=\\r\\n{}\r\n", b.replace('=', "=3D")),
            format!("{mime}{a}=\\n{}\n", b.replace('=', "=3D")),
        ];
        for body in &bodies {
            let out = cut_live(&scrubber, Sees::All, body.as_bytes()).expect("cut");
            let out = String::from_utf8(out).expect("text");
            assert!(
                out.ends_with("key: [REDACTED:live_secret]\r\n")
                    || out.ends_with("key: [REDACTED:live_secret]\n"),
                "{out:?}"
            );
        }
        // Undeclared, `=` and two hex digits are text: a value spelled plainly after
        // `=3D` stays whole for the scrub, and no view is made.
        let plain = format!("?a=3D&key={padded}");
        assert!(Squeezed::of(plain.as_bytes()).is_none());
        let sq = Squeezed::of(format!("{mime}x=41=3d=\r\ny=E9=20").as_bytes()).expect("declared");
        assert!(sq.bytes().ends_with(b"xA=y=E9 "), "{:?}", sq.bytes());
    }

    /// `text` as the attacker reads it: invisible characters and line breaks dropped,
    /// and the escapes of them.
    fn read_back(text: &[u8]) -> String {
        let mut read = String::from_utf8_lossy(text).into_owned();
        for c in [
            "\u{200B}", "\u{200C}", "\u{200D}", "\u{2060}", "\u{FEFF}", "\u{AD}",
        ] {
            read = read.replace(c, "");
        }
        for escape in [r"\u200b", "&#8203;", "&#x200B;", "\r", "\n"] {
            read = read.replace(escape, "");
        }
        read
    }

    #[test]
    fn a_live_value_with_invisible_characters_between_its_characters_is_cut() {
        let scrubber = Scrubber::new();
        let id = scrubber
            .register("live_secret", &Secret::new(VALUE.as_bytes().to_vec()))
            .expect("registered");
        for sep in [
            "\u{200B}", "\u{200C}", "\u{200D}", "\u{2060}", "\u{FEFF}", "\u{AD}", r"\u200b",
            "&#8203;", "&#x200B;",
        ] {
            // Between every two characters, and every third only.
            for every in [1, 3] {
                let spread: String = VALUE
                    .chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if i > 0 && i % every == 0 {
                            format!("{sep}{c}")
                        } else {
                            c.to_string()
                        }
                    })
                    .collect();
                let body = format!("{{\"you_sent\":\"Bearer {spread}\",\"ok\":false}}");
                let what = format!("{sep:?} every {every}");
                assert!(
                    read_back(body.as_bytes()).contains(VALUE),
                    "{what}: planted"
                );
                assert!(
                    scrubber.scrub(body.as_bytes()).redactions.is_empty(),
                    "{what}: a form"
                );
                assert_eq!(
                    scrubber.matching(body.as_bytes(), Sees::All),
                    HashSet::from([id]),
                    "{what}"
                );
                let out = cut_live(&scrubber, Sees::All, body.as_bytes()).expect("cut");
                // Not `assert_eq!`: a failure would print the value.
                assert!(
                    out == b"{\"you_sent\":\"Bearer [REDACTED:live_secret]\",\"ok\":false}",
                    "{what}"
                );
            }
        }
        // Invisible characters elsewhere are text.
        let text = "a\u{200B}b\u{FEFF}c soft\u{AD}hyphen".as_bytes();
        assert!(Squeezed::of(text).is_some());
        assert!(cut_live(&scrubber, Sees::All, text).is_none());
    }

    /// `text` cut into lines of `width` bytes, as `fold -w` does.
    fn fold(text: &str, width: usize, eol: &str) -> String {
        text.as_bytes()
            .chunks(width)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect::<Vec<_>>()
            .join(eol)
    }

    #[test]
    fn base64_and_wraps_a_json_writer_escaped_are_cut() {
        use base64::Engine as _;
        // A value whose base64 holds a `/` at each of the three byte offsets.
        const SLASHED: &str = "vk07?1c9e4a2b7d3f5e60?8A2C4E6F1B3D5A7C?z";
        let scrubber = Scrubber::new();
        scrubber
            .register("live_secret", &Secret::new(SLASHED.as_bytes().to_vec()))
            .expect("registered");
        let b64 = |data: &[u8]| base64::engine::general_purpose::STANDARD.encode(data);
        let php = |text: &str| text.replace('/', r"\/");
        // `base64.encodebytes`: 76 columns, each line ended.
        let mime = |data: &[u8]| {
            b64(data)
                .as_bytes()
                .chunks(76)
                .map(|l| format!("{}\\n", std::str::from_utf8(l).expect("ascii")))
                .collect::<String>()
        };
        let config = format!("# ci runner settings, generated\npassword={SLASHED}\n");
        let pieces: Vec<&str> = (0..SLASHED.len())
            .step_by(8)
            .map(|i| &SLASHED[i..(i + 8).min(SLASHED.len())])
            .collect();
        for (what, body) in [
            (
                "php base64",
                format!(r#"{{"blob":"{}"}}"#, php(&b64(SLASHED.as_bytes()))),
            ),
            (
                "php basic",
                format!(
                    r#"{{"stored":"Basic {}"}}"#,
                    php(&b64(format!("ci-bot:{SLASHED}").as_bytes()))
                ),
            ),
            (
                "json wrapped",
                format!(r#"{{"blob":"{}"}}"#, mime(config.as_bytes())),
            ),
            (
                "json wrapped crlf",
                format!(
                    r#"{{"blob":"{}"}}"#,
                    mime(config.as_bytes()).replace(r"\n", r"\r\n")
                ),
            ),
            (
                "json fold",
                format!(r#"{{"blob":"{}"}}"#, pieces.join(r"\n")),
            ),
        ] {
            assert!(
                scrubber.scrub(body.as_bytes()).redactions.is_empty(),
                "{what}: a live form already"
            );
            let out = cut_live(&scrubber, Sees::All, body.as_bytes()).expect(what);
            let out = String::from_utf8(out).expect("text");
            assert!(out.contains("[REDACTED:live_secret]"), "{what}: {out}");
            assert!(
                out.starts_with(r#"{""#) && out.ends_with(r#""}"#),
                "{what}: {out}"
            );
        }
        // Prose with escaped line breaks, and a URL with escaped slashes holding no value,
        // are left as they are.
        for body in [
            r#"{"text":"line one\nline two\n\nthe end"}"#,
            r#"{"url":"https:\/\/example.com\/a\/b"}"#,
        ] {
            assert!(
                cut_live(&scrubber, Sees::All, body.as_bytes()).is_none(),
                "{body}"
            );
        }
        assert!(Squeezed::of(br#"{"text":"line one\nline two\n\nthe end"}"#).is_none());
    }

    #[test]
    fn a_live_value_hard_wrapped_at_a_narrow_width_is_cut() {
        use base64::Engine as _;
        let scrubber = Scrubber::new();
        scrubber
            .register("live_secret", &Secret::new(VALUE.as_bytes().to_vec()))
            .expect("registered");
        let b64 = base64::engine::general_purpose::STANDARD.encode(VALUE);
        let hex: String = VALUE.bytes().map(|b| format!("{b:02x}")).collect();
        for width in [1, 2, 4, 5, 8, 15, 16] {
            for eol in ["\n", "\r\n"] {
                let whole = format!("you sent: Bearer {VALUE} (invalid)\n");
                // A run needs two full lines of one width without a space: the value
                // alone (26 characters) has them up to width 13, after a label or
                // inside a wrapped sentence up to width 8.
                for (what, body, widest) in [
                    ("whole answer", fold(&whole, width, eol), 8),
                    (
                        "value alone",
                        format!("key:{eol}{}{eol}end", fold(VALUE, width, eol)),
                        13,
                    ),
                    (
                        "after a label",
                        format!("key: {}{eol}", fold(VALUE, width, eol)),
                        8,
                    ),
                    (
                        "base64",
                        format!("b64:{eol}{}{eol}", fold(&b64, width, eol)),
                        16,
                    ),
                    ("hex", format!("{}{eol}", fold(&hex, width, eol)), 16),
                ] {
                    if width > widest {
                        continue;
                    }
                    let what = format!("{what} width {width} {eol:?}");
                    let read = read_back(body.as_bytes());
                    let planted =
                        read.contains(VALUE) || read.contains(&b64[..32]) || read.contains(&hex);
                    assert!(planted, "{what}: planted");
                    let out = cut_live(&scrubber, Sees::All, body.as_bytes()).expect(&what);
                    let read = read_back(&out);
                    assert!(
                        !read.contains(VALUE)
                            && !read.contains(&b64[..32])
                            && !read.contains(&hex[..32]),
                        "{what}: left"
                    );
                    // `key:` and the value joined may be a `secret_assignment`.
                    assert!(read.contains("[REDACTED:"), "{what}");
                }
            }
        }
    }

    #[test]
    fn narrow_hard_wraps_are_found_only_in_runs_of_equal_lines() {
        // Prose, and code whose short lines differ: no run, no view.
        let prose = "fn main() {\n    let x = 1;\n    x + 1\n}\nok\nA line of prose.\n";
        assert!(fold_breaks(prose.as_bytes()).is_empty());
        assert!(Squeezed::of(prose.as_bytes()).is_none());
        // Two lines of one width: their break, and those to the lines beside them.
        let text = b"head: ab\ncdef\r\nghij\nkl\n\nlast";
        let breaks: Vec<&[u8]> = fold_breaks(text).into_iter().map(|r| &text[r]).collect();
        assert_eq!(breaks, [&b"\n"[..], b"\r\n", b"\n"]);
        let sq = Squeezed::of(text).expect("folded");
        assert_eq!(sq.bytes(), b"head: abcdefghijkl\n\nlast");
        // A piece of one character repeated, short, is a piece.
        assert_eq!(fold_breaks(b"k: vk\n44\n-a\n7").len(), 3);
        // Headings' underlines, indented code and lines with spaces are no run.
        let markup =
            "Title\n=====\n\nSection\n-------\n  if x:\n  pass\na b\nc d\n</body>\n</html>\n";
        assert!(fold_breaks(markup.as_bytes()).is_empty());
        // Lines wider than a narrow wrap are left to the scan of wrapped base64.
        let wide = "0123456789abcdefgh\n0123456789abcdefgh\nend";
        assert!(fold_breaks(wide.as_bytes()).is_empty());
    }

    #[test]
    fn cut_merges_overlaps() {
        let out = cut(
            b"0123456789",
            vec![(5..7, "b"), (1..3, "a"), (2..4, "c"), (6..9, "d")],
        );
        assert_eq!(out, b"0[REDACTED:a]4[REDACTED:b]9");
    }
}
