//! Live values cut by line breaks: base64 as `base64` and MIME (76 columns) or PEM and
//! `openssl base64` (64) write it, where a value's encoded characters may sit on two or
//! more lines.
//!
//! Owns: finding *breaks* (a line break inside a run of base64 characters), joining the
//! runs across them, and looking for live forms in the joined text that cross a break.
//! Must never: report a form that crosses no break (the live scan over the input reports
//! those), or report a span by anything but its place in the input.
//!
//! A break is `\n` or `\r\n` with at least [`MIN_LINE`] base64 characters right before
//! it, then up to [`MAX_INDENT`] spaces or tabs (a YAML block scalar's indentation) and a
//! base64 character. Lines of prose and code rarely end in 16 such characters, so text
//! without wrapped base64 costs a search for `\n` and a look at the bytes around each.
//! The width is not looked at: any wrapping is joined (76 and 64 are the common ones). A
//! *run* is base64 text joined across breaks; the live forms are searched in it (only
//! forms made of base64 characters can match there: no run is longer than needed, see
//! [`LiveSet::longest_b64`]) and a form found across a break is redacted from its first
//! to its last byte in the input, the breaks inside included.

use super::live::LiveSet;

/// Base64 characters a line must end with for its line break to be a break.
pub const MIN_LINE: usize = 16;
/// Spaces or tabs allowed after a break's line feed.
pub const MAX_INDENT: usize = 16;
/// Bytes before a line break the break check reads (`\r` and [`MIN_LINE`]).
pub const LOOKBACK: usize = MIN_LINE + 1;

/// Both base64 alphabets and the padding (standard `+/`, URL-safe `-_`).
static BASE64: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b'-' | b'_');
        b += 1;
    }
    t
};

/// Whether `b` is a base64 character (either alphabet, or padding).
pub(super) fn is_base64(b: u8) -> bool {
    BASE64[usize::from(b)]
}

/// A live form found across a break, in absolute input offsets.
pub(super) struct WrappedFound {
    pub start: usize,
    pub end: usize,
    pub label: &'static str,
}

/// What a line break at `data[at]` (`\r` or `\n`) is.
enum Eol {
    /// Not a line break, or not one inside base64 text.
    No,
    /// A break; the next line's base64 starts at this index.
    Break(usize),
    /// The bytes after it are not held yet.
    Unknown,
}

/// Whether `data[at..]` starts a break (see the module header). Needs [`LOOKBACK`]
/// bytes before `at` for a yes.
fn eol(data: &[u8], at: usize, finished: bool) -> Eol {
    let nl = match data[at] {
        b'\n' => at,
        b'\r' => match data.get(at + 1) {
            Some(b'\n') => at + 1,
            Some(_) => return Eol::No,
            None if finished => return Eol::No,
            None => return Eol::Unknown,
        },
        _ => return Eol::No,
    };
    if at < MIN_LINE || !data[at - MIN_LINE..at].iter().all(|&b| is_base64(b)) {
        return Eol::No;
    }
    let rest = &data[nl + 1..];
    match rest
        .iter()
        .take(MAX_INDENT + 1)
        .position(|&b| b != b' ' && b != b'\t')
    {
        Some(n) if n <= MAX_INDENT && is_base64(rest[n]) => Eol::Break(nl + 1 + n),
        Some(_) => Eol::No,
        None if finished || rest.len() > MAX_INDENT => Eol::No,
        None => Eol::Unknown,
    }
}

/// `input` with every break dropped (its line break and the indentation after it), so
/// that a form cut by one is whole; `None` when it has none. For the searches that ask
/// which values a buffer holds, not where (a scrub reports a form across a break where
/// it is, see [`Wrapped::scan`]). A `memchr` step per line.
pub(super) fn joined(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    for nl in memchr::memchr_iter(b'\n', input) {
        let brk = if nl > 0 && input[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        if let Eol::Break(content) = eol(input, brk, true) {
            out.extend_from_slice(&input[at..brk]);
            at = content;
        }
    }
    (at > 0).then(|| {
        out.extend_from_slice(&input[at..]);
        out
    })
}

/// The scan's position and its reusable buffers.
#[derive(Default)]
pub(super) struct Wrapped {
    /// Every form across a break starting before this absolute offset is reported.
    pos: usize,
    /// The run being searched, breaks left out.
    joined: Vec<u8>,
    /// Where each line's piece of the run starts: (index in `joined`, input offset).
    pieces: Vec<(usize, usize)>,
}

impl Wrapped {
    /// Where forms not yet reported may start.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Reports to `found` every live form that crosses a break and starts at or after
    /// [`Wrapped::pos`], as far as `data` (input bytes from `base` on, holding
    /// [`LOOKBACK`] bytes before `pos` or the input's start) decides them. Returns the
    /// input end that would decide what it waits on (0 if nothing).
    pub fn scan(
        &mut self,
        live: &LiveSet,
        data: &[u8],
        base: usize,
        finished: bool,
        found: &mut Vec<WrappedFound>,
    ) -> usize {
        let end = base + data.len();
        let longest = live.longest_b64();
        if longest == 0 {
            self.pos = self.pos.max(end);
            return 0;
        }
        loop {
            let from = self.pos.max(base) - base;
            // The next break, or where an undecided one may start.
            let mut next = None;
            let mut search = from;
            while let Some(n) = memchr::memchr(b'\n', &data[search..]) {
                let nl = search + n;
                let at = if nl > 0 && data[nl - 1] == b'\r' {
                    nl - 1
                } else {
                    nl
                };
                match eol(data, at, finished) {
                    Eol::Break(content) => {
                        next = Some((at, content));
                        break;
                    }
                    Eol::No => search = nl + 1,
                    Eol::Unknown => {
                        // A form across it starts within `longest` before it.
                        self.pos = self.pos.max(base + at.saturating_sub(longest - 1));
                        return end + MAX_INDENT + 2;
                    }
                }
            }
            let Some((at, content)) = next else {
                if finished {
                    self.pos = end;
                    return 0;
                }
                // A break may yet end at the last byte (`\r` then `\n`).
                let undecided = data.len().saturating_sub(1).max(from);
                self.pos = self.pos.max(base + undecided.saturating_sub(longest - 1));
                return 0;
            };
            // Only the last `longest - 1` characters before the first break can start a
            // form across it.
            let mut first = at;
            while first > from && at - first < longest - 1 && is_base64(data[first - 1]) {
                first -= 1;
            }
            let open = self.join(data, base, first, at, content, finished);
            // Forms starting within `longest` of an open run's end may grow.
            let limit = if open {
                self.joined.len().saturating_sub(longest - 1)
            } else {
                self.joined.len()
            };
            self.report(live, limit, found);
            if open {
                self.pos = self.pos.max(self.input_at(limit));
                return self.input_at(self.joined.len()) + longest;
            }
            self.pos = self.input_at(self.joined.len());
        }
    }

    /// Joins the run from `data[first..at]` (`at` the first break, the next line's
    /// base64 at `content`) into `joined`. Returns whether the run may go on past
    /// `data` (an unfinished input ending inside it).
    fn join(
        &mut self,
        data: &[u8],
        base: usize,
        first: usize,
        at: usize,
        content: usize,
        finished: bool,
    ) -> bool {
        self.joined.clear();
        self.pieces.clear();
        self.joined.extend_from_slice(&data[first..at]);
        self.pieces.push((0, base + first));
        let mut line = content;
        loop {
            let len = data[line..]
                .iter()
                .position(|&b| !is_base64(b))
                .unwrap_or(data.len() - line);
            self.pieces.push((self.joined.len(), base + line));
            self.joined.extend_from_slice(&data[line..line + len]);
            let stop = line + len;
            if stop == data.len() {
                return !finished;
            }
            match eol(data, stop, finished) {
                Eol::Break(next) => line = next,
                Eol::No => return false,
                Eol::Unknown => return true,
            }
        }
    }

    /// Reports the forms in `joined` that start before `limit` and cross a break.
    fn report(&self, live: &LiveSet, limit: usize, found: &mut Vec<WrappedFound>) {
        let mut from = 0;
        while let Some((start, stop, label)) = live.next_hit(&self.joined, from) {
            if start >= limit {
                break;
            }
            // A break sits before each piece but the first.
            let crosses = self.pieces[1..].iter().any(|&(j, _)| start < j && j < stop);
            if crosses {
                found.push(WrappedFound {
                    start: self.input_at(start),
                    end: self.input_at(stop - 1) + 1,
                    label,
                });
            }
            from = start + 1;
        }
    }

    /// The input offset of `joined[j]` (of the run's end for `j == joined.len()`).
    fn input_at(&self, j: usize) -> usize {
        let i = self.pieces.partition_point(|&(start, _)| start <= j) - 1;
        // A piece may be empty (a break right before another): take the last piece
        // starting at or before `j`, whose start is the furthest.
        let (start, input) = self.pieces[i];
        input + (j - start)
    }
}
