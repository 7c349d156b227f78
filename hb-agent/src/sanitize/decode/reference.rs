//! The decoder as it was before [`super::long_runs`] read the text 64 bytes at a time:
//! byte loops that are easy to check by eye. Tests hold the fast one to the same
//! answers on every input.

use std::ops::Range;

use base64::Engine as _;

use super::{EncodedRun, MIN_ESCAPES, MIN_RUN, STANDARD, URL_SAFE, is_b64};
use crate::sanitize::Encoding;

/// Decoded text that reads as text: valid UTF-8, no control characters beyond line
/// breaks and tabs, mostly letters, digits and spaces.
fn readable(bytes: Vec<u8>) -> Option<String> {
    let s = String::from_utf8(bytes).ok()?;
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
    (total >= 4 && plain * 10 >= total * 6).then_some(s)
}

pub(super) fn encoded_runs(text: &str) -> Vec<EncodedRun> {
    let mut out = Vec::new();
    for span in long_runs(text.as_bytes()) {
        runs(text, span, &mut out);
    }
    escapes(text, &mut out);
    percent(text, &mut out);
    out
}

/// Maximal runs of base64 bytes at least [`MIN_RUN`] long.
pub(super) fn long_runs(b: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    // Invariant: the byte before `i` is not base64, so runs start at `i` or later. If
    // the byte MIN_RUN - 1 ahead is not base64 either, no long run starts in between.
    let mut i = 0;
    while i + MIN_RUN <= b.len() {
        let probe = i + MIN_RUN - 1;
        if !is_b64(b[probe]) {
            i = probe + 1;
            continue;
        }
        let mut start = probe;
        while start > i && is_b64(b[start - 1]) {
            start -= 1;
        }
        let end = b[probe..]
            .iter()
            .position(|c| !is_b64(*c))
            .map_or(b.len(), |k| probe + k);
        if end - start >= MIN_RUN {
            out.push(start..end);
        }
        i = end + 1;
    }
    out
}

/// One run of base64 characters: `=` ends base64 text (padding), so `key=VALUE` holds
/// a run after it; each piece is tried on its own.
fn runs(text: &str, span: Range<usize>, out: &mut Vec<EncodedRun>) {
    let b = text.as_bytes();
    let mut from = span.start;
    while from < span.end {
        let body_end = b[from..span.end]
            .iter()
            .position(|c| *c == b'=')
            .map_or(span.end, |k| from + k);
        let end = b[body_end..span.end]
            .iter()
            .position(|c| *c != b'=')
            .map_or(span.end, |k| body_end + k);
        if body_end - from >= MIN_RUN
            && let Some(run) = base64_or_hex(text, from..end)
        {
            out.push(run);
        }
        from = end;
    }
}

fn base64_or_hex(text: &str, span: Range<usize>) -> Option<EncodedRun> {
    let run = &text[span.clone()];
    // A run glued to a URL or path is most likely part of it; percent() covers URLs.
    let hexish = run.trim_start_matches("0x");
    if hexish.len() >= MIN_RUN
        && hexish.len().is_multiple_of(2)
        && hexish.bytes().all(|c| c.is_ascii_hexdigit())
    {
        let bytes = (0..hexish.len())
            .step_by(2)
            .map(|k| u8::from_str_radix(&hexish[k..k + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        return readable(bytes).map(|decoded| EncodedRun {
            span,
            encoding: Encoding::Hex,
            decoded,
        });
    }
    let body = run.trim_end_matches('=');
    if body.bytes().any(|c| c == b'=') {
        return None;
    }
    let body = if body.len() % 4 == 1 {
        &body[..body.len() - 1]
    } else {
        body
    };
    let engine = if body.bytes().any(|c| c == b'-' || c == b'_') {
        &URL_SAFE
    } else {
        &STANDARD
    };
    let decoded = readable(engine.decode(body).ok()?)?;
    Some(EncodedRun {
        span,
        encoding: Encoding::Base64,
        decoded,
    })
}

/// `\x69\x67…` escapes (at least eight in a row).
fn escapes(text: &str, out: &mut Vec<EncodedRun>) {
    let b = text.as_bytes();
    for start in memchr::memmem::find_iter(b, b"\\x") {
        if start > 0 && b[start - 1] == b'\\' || out.last().is_some_and(|r| r.span.end > start) {
            continue;
        }
        let mut bytes = Vec::new();
        let mut i = start;
        while i + 4 <= b.len() && &b[i..i + 2] == b"\\x" {
            match std::str::from_utf8(&b[i + 2..i + 4])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(v) => bytes.push(v),
                None => break,
            }
            i += 4;
        }
        if bytes.len() >= 8
            && let Some(decoded) = readable(bytes)
        {
            out.push(EncodedRun {
                span: start..i,
                encoding: Encoding::Hex,
                decoded,
            });
        }
    }
}

/// Tokens (between blanks) with several `%XX` escapes.
fn percent(text: &str, out: &mut Vec<EncodedRun>) {
    let b = text.as_bytes();
    let mut next = 0;
    for p in memchr::memchr_iter(b'%', b) {
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
        let mut decoded = Vec::with_capacity(token.len());
        let mut escapes = 0;
        let mut k = 0;
        while k < token.len() {
            let hex = token
                .get(k + 1..k + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (token[k], hex) {
                (b'%', Some(v)) => {
                    decoded.push(v);
                    escapes += 1;
                    k += 3;
                }
                (b'+', _) => {
                    decoded.push(b' ');
                    k += 1;
                }
                (c, _) => {
                    decoded.push(c);
                    k += 1;
                }
            }
        }
        if escapes >= MIN_ESCAPES
            && let Some(decoded) = readable(decoded)
        {
            out.push(EncodedRun {
                span: start..end,
                encoding: Encoding::Url,
                decoded,
            });
        }
    }
}
