//! HTTP rules that both the egress guard (a sandbox's own plain-HTTP requests) and the
//! broker (the requests it sends for a sandbox) apply, kept in one place so the two
//! judge a request alike.
//!
//! Owns: [`takes_no_body`], [`body_start`] and [`is_method_override`]. Must never:
//! diverge between the guard and the broker.

/// Request headers that make frameworks act as another method than the request line's:
/// Slim 4's `MethodOverrideMiddleware` takes `X-Http-Method-Override` on any method, a
/// GET included; Rails, Express, Spring and Google's APIs read these names on a POST.
/// Lower case. The guard judges a plain-HTTP request by every method it names; the
/// broker refuses them.
pub const METHOD_OVERRIDE_HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Whether a header `name` is one of [`METHOD_OVERRIDE_HEADERS`] as a server reads it:
/// without case, and with `_` for `-` (a WSGI or CGI gateway names both spellings
/// `HTTP_X_HTTP_METHOD_OVERRIDE`, which Werkzeug's and others' override middleware read).
pub fn is_method_override(name: &str) -> bool {
    METHOD_OVERRIDE_HEADERS.iter().any(|o| {
        o.len() == name.len()
            && o.bytes()
                .zip(name.bytes())
                .all(|(o, n)| o == n.to_ascii_lowercase() || (o == b'-' && n == b'_'))
    })
}

/// Methods that have no use for a body (GET, HEAD, OPTIONS, TRACE, DELETE): a server
/// may answer one without reading its body and read that body as the next request on
/// the connection, one nobody judged. The guard refuses such a body; the broker sends
/// none. Compared without case: methods are case-sensitive tokens, but a lenient server
/// may read `get` as GET.
pub fn takes_no_body(method: &str) -> bool {
    ["GET", "HEAD", "OPTIONS", "TRACE", "DELETE"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
}

/// What the start of a request's body would be to a server that leaves the body
/// unread and reads it as the next request (a handler that answers first — a 401, a
/// redirect — and keeps the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyStart {
    /// Its first line reads as a request line (`method target HTTP/…`, after any blank
    /// lines): a request the guard would forward, or the broker send, unjudged.
    Request,
    /// No server takes it for a request line.
    NoRequest,
    /// Not decided yet: more of the body is needed.
    Undecided,
}

/// Judges the start of a body (`prefix`; `whole`: nothing more of it is to come, or the
/// guard reads no further) by its first line, split on white space as servers split a
/// request line ([`request_line_space`]): a token, then at least two more words, the
/// last starting with `HTTP/`, is a request line; so is `GET` and one more word, which
/// Python's `http.server` takes for an HTTP/0.9 request (and nginx too) — Python still
/// reads the headers after it, `Host` included. A line is judged once it ended (or the
/// body did: a body cut before its first line ends is judged as it stands, since the
/// request the guard judges next must start with `method target`, and a server joining
/// the two sees other words). Bodies almost never start like this (JSON, forms, binary
/// data end the question at their first byte); a chunked body's first line is its size
/// line.
pub fn body_start(prefix: &[u8], whole: bool) -> BodyStart {
    let Some(start) = prefix.iter().position(|&b| !request_line_space(b)) else {
        return if whole {
            BodyStart::NoRequest
        } else {
            BodyStart::Undecided
        };
    };
    let rest = &prefix[start..];
    let (line, ended) = match memchr::memchr(b'\n', rest) {
        Some(end) => (&rest[..end], true),
        None => (rest, whole),
    };
    let words: Vec<&[u8]> = line
        .split(|&b| request_line_space(b))
        .filter(|w| !w.is_empty())
        .collect();
    let first_is_token = words.first().is_some_and(|w| {
        w.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~;".contains(&b))
    });
    if !first_is_token {
        return BodyStart::NoRequest;
    }
    if !ended {
        return BodyStart::Undecided;
    }
    let version = words
        .last()
        .is_some_and(|w| w.len() >= 5 && w[..5].eq_ignore_ascii_case(b"HTTP/"));
    let http09 = words.len() == 2 && words[0].eq_ignore_ascii_case(b"GET");
    if (words.len() >= 3 && version) || http09 {
        BodyStart::Request
    } else {
        BodyStart::NoRequest
    }
}

/// A byte some server splits a request line on: ASCII white space, and what Python's
/// `http.server` splits on besides (`str.split()` of the line decoded as Latin-1:
/// `\x0b`, `\x1c` to `\x1f`, `\x85`, `\xa0`). Splitting on ASCII white space alone
/// read `GET\x0b/x\x0bHTTP/1.1` as one word, where Python read a request (attack review
/// 50).
fn request_line_space(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, 0x0b | 0x1c..=0x1f | 0x85 | 0xa0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_overrides_are_read_without_case_and_with_underscores() {
        for name in [
            "X-HTTP-Method-Override",
            "x-http-method",
            "X_HTTP_METHOD_OVERRIDE",
            "x_method-override",
        ] {
            assert!(is_method_override(name), "{name}");
        }
        for name in [
            "x-http-method-overrides",
            "x-http",
            "method",
            "x.http.method",
        ] {
            assert!(!is_method_override(name), "{name}");
        }
    }

    #[test]
    fn bodiless_methods_are_the_five_in_any_case() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "DELETE", "get", "Delete"] {
            assert!(takes_no_body(m), "{m}");
        }
        for m in ["POST", "PUT", "PATCH", "post", "CONNECT", "GETS"] {
            assert!(!takes_no_body(m), "{m}");
        }
    }

    #[test]
    fn a_request_line_is_split_as_python_splits_it() {
        for body in [
            &b"GET\x0b/x\x0bHTTP/1.1\r\n"[..],
            b"\x1cGET /x HTTP/1.1\r\n",
            b"POST\xa0/x\x85HTTP/1.1\r\n",
            b"GET\x1f/x\x1eHTTP/1.0\n",
            b"GET /exfil?d=1\r\nHost: evil.test\r\n\r\n",
            b"get /x\n",
        ] {
            assert_eq!(
                body_start(body, false),
                BodyStart::Request,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        for body in [
            &b"GET is a verb\n"[..],
            b"POST /x\r\n",
            b"hello world\n",
            b"GETS /x\n",
        ] {
            assert_eq!(
                body_start(body, true),
                BodyStart::NoRequest,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
