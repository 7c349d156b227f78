//! Plain HTTP/1 as the guard reads it: each request's head (httparse), the host it
//! names, and where its body ends, so every request on a kept-alive connection is
//! judged, not only the first.
//!
//! Refused as ambiguous rather than guessed (a server could frame or route it
//! differently from the guard): two `Host` headers, an absolute-form target whose host
//! differs from `Host`, `Transfer-Encoding` other than exactly `chunked` (and chunked in
//! HTTP/1.0), both `Transfer-Encoding` and `Content-Length`, two different
//! `Content-Length`s or one that is not plain digits, a chunk size that is not hex, a
//! bare CR or LF or a line that is no header field in a chunked body's lines, a body on
//! GET, HEAD, OPTIONS, TRACE or DELETE (a server that ignores it would read it as a
//! request the guard never judged), and any body whose first line reads as a request
//! line ([`body_start`]: a server that answers before reading a body reads it the same
//! way, if it ignores the `Connection: close` the guard marks a request with a body
//! with: [`with_connection_close`]). `CONNECT` (a tunnel to any host), the HTTP/2
//! preface and an `Upgrade` to h2c (after which each request names its own authority)
//! are never passed. Response heads are read only for where each response ends
//! ([`parse_response_head`]).
//!
//! A field value loses spaces and tabs around it and nothing else ([`field_trim`]): the
//! host, lengths and codings the guard judges are the bytes a server reads, so a `Host`
//! padded with a Unicode white space (`allowed.test` and U+00A0) is no hostname and is
//! refused, where a trim of every white space judged `allowed.test` and the server read a
//! name it does not serve.

use std::net::IpAddr;

pub use crate::http_rules::{BodyStart, body_start};
use crate::http_rules::{is_method_override, takes_no_body};

/// Largest request head the guard reads.
pub const MAX_HEAD: usize = 64 * 1024;
/// Headers per request.
const MAX_HEADERS: usize = 128;

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// One request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, the blank line included.
    pub len: usize,
    pub method: String,
    /// The host the request names (target or `Host`), lower-case, without its port; an
    /// IP literal normalised.
    pub host: Option<String>,
    /// The port written after the host, if any (see [`port_fits`]).
    pub port: Option<u16>,
    pub framing: Framing,
    /// The `Upgrade` header's protocols, if any.
    pub upgrade: Option<String>,
    /// The methods its method-override headers name
    /// ([`crate::http_rules::is_method_override`]), as written: a framework that
    /// reads one acts as that method.
    pub overrides: Vec<String>,
}

/// Why a request head cannot be passed.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1 at all.
    NotHttp,
    /// HTTP, but framed or addressed ambiguously (see the module documentation).
    Ambiguous(&'static str),
    /// Larger than [`MAX_HEAD`].
    TooLarge,
}

/// A hostname as the guard compares them: lower-case, hostname labels only (see
/// `dns::names::hostname`). `None` for anything else, a trailing dot included: servers
/// differ on whether `allowed.test.` is `allowed.test` (nginx's `server_name` drops the
/// dot; a `map` over its stream module's `$ssl_preread_server_name`, as nginx documents
/// SNI routing, and HAProxy's ACLs compare the name whole and send it to their default),
/// and RFC 6066 §3 forbids the dot in SNI.
pub fn hostname(text: &str) -> Option<String> {
    if text.is_empty() || text.len() > 253 {
        return None;
    }
    crate::dns::names::hostname(text.split('.').map(str::as_bytes))
}

/// A host and the port written after it, if any.
type Authority = (String, Option<u16>);

/// The parts of a `Host` value or an authority (`name`, `name:port`, `[v6]:port`): a
/// hostname or an IP literal, normalised, and the port. `None` for anything else.
fn authority(value: &str) -> Option<Authority> {
    let value = field_trim(value);
    if let Some(v6) = value.strip_prefix('[') {
        let (ip, rest) = v6.split_once(']')?;
        let port = match rest {
            "" => None,
            _ => Some(port(rest.strip_prefix(':')?)?),
        };
        return Some((ip.parse::<IpAddr>().ok()?.to_string(), port));
    }
    let (host, port) = match value.rsplit_once(':') {
        Some((h, p)) => (h, Some(port(p)?)),
        None => (value, None),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some((ip.to_string(), port));
    }
    Some((hostname(host)?, port))
}

/// A field value without the optional white space around it, which is spaces and tabs
/// only (RFC 9110 §5.5), as servers trim it. Never `str::trim`: that also drops Unicode
/// white space (U+00A0, U+0085, U+3000, …), whose UTF-8 bytes httparse passes as
/// `obs-text` and a server keeps, so `Host: allowed.test\u{a0}` would be judged as a name
/// the server never reads (nginx gives it to its default virtual host).
fn field_trim(value: &str) -> &str {
    value.trim_matches([' ', '\t'])
}

/// A port as written after a host: decimal digits without a leading zero (`080` is 80
/// to one server and no match to another), 1 to 65535.
fn port(p: &str) -> Option<u16> {
    if p.starts_with('0') || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok().filter(|&n| n != 0)
}

/// Whether the port a request wrote after its host (`written`) is one every server routes
/// as the host alone or as the host at the connection's port `dst`: none, or `dst` when
/// that is not HTTP's default port. Clients leave 80 out (curl, Python's http.client,
/// browsers), and a router that matches the `Host` whole (HAProxy's `hdr(host) -i
/// allowed.test`) sends `allowed.test:80`, or the name with any other port, to its
/// default backend.
pub fn port_fits(written: Option<u16>, dst: u16) -> bool {
    written.is_none_or(|p| p == dst && p != 80)
}

/// The host and port of an absolute-form target (`http://host[:port]/…`), if the target
/// is one.
fn target_authority(target: &str) -> Result<Option<Authority>, HeadError> {
    let lower = target.get(..7).map(str::to_ascii_lowercase);
    let rest = match lower.as_deref() {
        Some("http://") => &target[7..],
        _ if target.starts_with('/') || target == "*" => return Ok(None),
        _ => return Err(HeadError::Ambiguous("request target")),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(HeadError::Ambiguous("user info in the request target"));
    }
    self::authority(authority)
        .map(Some)
        .ok_or(HeadError::Ambiguous("request target host"))
}

/// Parses the request head at the start of `buf`: `Ok(None)` while it is incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::NotHttp),
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    // Lines end in CRLF only: a server that splits lines differently (on a bare LF, or
    // not at all) would see other headers than the guard did.
    let raw = &buf[..len];
    if raw.iter().enumerate().any(|(i, &b)| {
        (b == b'\n' && (i == 0 || raw[i - 1] != b'\r'))
            || (b == b'\r' && raw.get(i + 1) != Some(&b'\n'))
    }) {
        return Err(HeadError::Ambiguous("line ending other than CRLF"));
    }
    let method = req.method.unwrap_or_default().to_owned();
    let target = req.path.unwrap_or_default();
    if method == "PRI" || method == "CONNECT" {
        return Err(HeadError::Ambiguous("tunnel or HTTP/2 preface"));
    }
    let mut host_header = None;
    let mut lengths = Vec::new();
    let mut chunked = false;
    let mut encodings = 0;
    let mut upgrade = None;
    let mut overrides = Vec::new();
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| HeadError::Ambiguous("header"))?;
        if h.name.eq_ignore_ascii_case("host") {
            if host_header.is_some() {
                return Err(HeadError::Ambiguous("two Host headers"));
            }
            host_header = Some(authority(value).ok_or(HeadError::Ambiguous("Host header"))?);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            // Digits only: Rust would read "+5" as 5, a server may read it as nothing.
            let digits = field_trim(value);
            if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(HeadError::Ambiguous("Content-Length"));
            }
            lengths.push(
                digits
                    .parse()
                    .map_err(|_| HeadError::Ambiguous("Content-Length"))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            encodings += 1;
            chunked = field_trim(value).eq_ignore_ascii_case("chunked");
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = Some(field_trim(value).to_ascii_lowercase());
        } else if is_method_override(h.name) {
            overrides.push(field_trim(value).to_owned());
        }
    }
    let framing = match (encodings, lengths.as_slice()) {
        (0, []) => Framing::None,
        (0, [n, rest @ ..]) if rest.iter().all(|m| m == n) => Framing::Length(*n),
        (1, []) if chunked => Framing::Chunked,
        _ => return Err(HeadError::Ambiguous("body framing")),
    };
    // An HTTP/1.0 server may not know chunked framing and read the chunks as requests.
    if framing == Framing::Chunked && req.version != Some(1) {
        return Err(HeadError::Ambiguous("chunked body in HTTP/1.0"));
    }
    // A server that ignores the body of a method that has no use for one would read it
    // as the next request, which the guard forwarded as a body without judging it.
    if framing != Framing::None && framing != Framing::Length(0) && takes_no_body(&method) {
        return Err(HeadError::Ambiguous("a body on a method without one"));
    }
    if upgrade.as_deref().is_some_and(|u| u.contains("h2c")) {
        return Err(HeadError::Ambiguous("upgrade to h2c"));
    }
    let (host, port) = match (target_authority(target)?, host_header) {
        (Some(t), Some(h)) if t != h => return Err(HeadError::Ambiguous("target and Host differ")),
        (t, h) => t.or(h).unzip(),
    };
    Ok(Some(Head {
        len,
        method,
        host,
        port: port.flatten(),
        framing,
        upgrade,
        overrides,
    }))
}

impl Head {
    /// Whether the request carries a body (after which the guard forwards nothing more
    /// of the client's on the connection: see [`with_connection_close`]).
    pub fn has_body(&self) -> bool {
        !matches!(self.framing, Framing::None | Framing::Length(0))
    }
}

/// `head` (a request or response head, its blank line included) with its
/// `Connection` headers (and any `Keep-Alive`) replaced by one `Connection: close`,
/// exactly that value, so the peer ends the connection after this exchange.
///
/// On a request with a body: a server that reads only part of a body (a size cap, an
/// early 401 or 413) would read the rest as the next request, one the guard forwarded
/// as body bytes unjudged. A server that gets `close` reads no further request on the
/// connection (RFC 9112 §9.6). On the final response to that request: the client
/// learns the connection ends, and opens another for its next request.
///
/// Exactly `close`, the client's other options dropped (the fields they name stay, as
/// fields): Python's `http.server` closes only on a value equal to `close`, and read
/// `Connection: close, te` as keep-alive, then the unread body as the next request
/// (attack review 50). Never removes the fields an option names, as a proxy would:
/// `Connection: content-length` would then drop the length the guard framed the body
/// by.
pub fn with_connection_close(head: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + 32);
    let mut lines = head.split_inclusive(|&b| b == b'\n');
    if let Some(first) = lines.next() {
        out.extend_from_slice(first);
    }
    for line in lines {
        let bare = line.strip_suffix(b"\n").unwrap_or(line);
        let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
        if bare.is_empty() {
            break;
        }
        let name = match memchr::memchr(b':', bare) {
            Some(colon) => &bare[..colon],
            None => bare,
        };
        if !name.eq_ignore_ascii_case(b"connection") && !name.eq_ignore_ascii_case(b"keep-alive") {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

/// How a response's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// No body: an interim (1xx) response, a 204 or 304, the answer to HEAD.
    None,
    Length(u64),
    Chunked,
    /// Until the server closes (no length, a coding other than chunked last, a 101
    /// switching protocols): nothing after it on the connection is a response.
    UntilClose,
}

/// One response head, as far as the guard reads it: where the response ends, so the
/// final answer to a request is found behind any earlier ones and interim ones.
#[derive(Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Bytes of the head, the blank line included.
    pub len: usize,
    pub status: u16,
    /// The body's framing as the head states it (an answer to HEAD has none whatever it
    /// states: see [`ResponseHead::body`]).
    framing: ResponseBody,
}

impl ResponseHead {
    /// An interim response (1xx other than 101): the final one to the same request
    /// follows.
    pub fn interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// How the body is delimited, for a response to a request of `method`.
    pub fn body(&self, to_head: bool) -> ResponseBody {
        match self.status {
            101 => ResponseBody::UntilClose,
            100..=199 | 204 | 304 => ResponseBody::None,
            _ if to_head => ResponseBody::None,
            _ => self.framing,
        }
    }
}

/// Parses the response head at the start of `buf`: `Ok(None)` while it is incomplete.
/// A head that cannot be framed (no HTTP, two different lengths) is an error: the guard
/// then passes the rest of the connection as it comes.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::NotHttp),
    };
    let status = resp.code.unwrap_or_default();
    let mut length = None;
    let mut coding = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding of the last header decides (RFC 9112 §6.3).
            coding = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .map(<[u8]>::trim_ascii);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let digits = std::str::from_utf8(h.value)
                .ok()
                .map(field_trim)
                .filter(|d| !d.is_empty() && d.len() <= 18 && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<u64>().ok())
                .ok_or(HeadError::Ambiguous("Content-Length"))?;
            if length.is_some_and(|n| n != digits) {
                return Err(HeadError::Ambiguous("Content-Length"));
            }
            length = Some(digits);
        }
    }
    let framing = match (coding, length) {
        (Some(c), _) if c.eq_ignore_ascii_case(b"chunked") => ResponseBody::Chunked,
        (Some(_), _) => ResponseBody::UntilClose,
        (None, Some(n)) => ResponseBody::Length(n),
        (None, None) => ResponseBody::UntilClose,
    };
    Ok(Some(ResponseHead {
        len,
        status,
        framing,
    }))
}

/// Where a chunked body stands after some of its bytes were seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunks {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data (bytes left, then CRLF).
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last (zero) chunk: trailer lines until an empty one.
    Trailer,
    /// The body is complete.
    Done,
}

/// Advances a chunked body over `buf`: returns how many bytes of `buf` belong to the
/// body so far and the new state. A line that is not complete yet stops the scan (it is
/// consumed on the next call, with more bytes); a line longer than 4 KiB or a bad size
/// is an error.
pub fn scan_chunks(mut state: Chunks, buf: &[u8]) -> Result<(usize, Chunks), HeadError> {
    let mut at = 0;
    loop {
        match state {
            Chunks::Done => return Ok((at, state)),
            Chunks::Data(left) => {
                let take = (buf.len() - at).min(usize::try_from(left).unwrap_or(usize::MAX));
                at += take;
                let left = left - take as u64;
                if left > 0 {
                    return Ok((at, Chunks::Data(left)));
                }
                state = Chunks::DataEnd;
            }
            Chunks::DataEnd => {
                match buf.get(at..at + 2) {
                    Some(b"\r\n") => {}
                    Some(_) => return Err(HeadError::Ambiguous("chunk end")),
                    None if buf.get(at).is_some_and(|&b| b != b'\r') => {
                        return Err(HeadError::Ambiguous("chunk end"));
                    }
                    None => return Ok((at, state)),
                }
                at += 2;
                state = Chunks::Size;
            }
            Chunks::Size | Chunks::Trailer => {
                // A bare CR or LF ends a line for some servers and not for others: a
                // request could hide behind it. Refused wherever it shows.
                if let Some(bare) = memchr::memchr2(b'\r', b'\n', &buf[at..])
                    && buf[at + bare] == b'\n'
                {
                    return Err(HeadError::Ambiguous("bare LF in a chunk line"));
                }
                let Some(end) = memchr::memmem::find(&buf[at..], b"\r\n") else {
                    if buf.len() - at > 4096 {
                        return Err(HeadError::Ambiguous("chunk line"));
                    }
                    return Ok((at, state));
                };
                let line = &buf[at..at + end];
                if memchr::memchr(b'\r', line).is_some() {
                    return Err(HeadError::Ambiguous("bare CR in a chunk line"));
                }
                at += end + 2;
                state = match state {
                    Chunks::Trailer if line.is_empty() => Chunks::Done,
                    Chunks::Trailer if is_field_line(line) => Chunks::Trailer,
                    Chunks::Trailer => return Err(HeadError::Ambiguous("trailer line")),
                    _ => match chunk_size(line)? {
                        0 => Chunks::Trailer,
                        n => Chunks::Data(n),
                    },
                };
            }
        }
    }
}

/// Whether a trailer line is a header field: a token, a colon, a value without
/// control characters (so no request line hides in the trailer section).
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = memchr::memchr(b':', line) else {
        return false;
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && value.iter().all(|&b| b == b'\t' || !b.is_ascii_control())
}

/// A chunk-size line's size (extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Result<u64, HeadError> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    let digits = std::str::from_utf8(digits).map_err(|_| HeadError::Ambiguous("chunk size"))?;
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HeadError::Ambiguous("chunk size"));
    }
    u64::from_str_radix(digits, 16).map_err(|_| HeadError::Ambiguous("chunk size"))
}

/// The response the guard writes for a refused plain-HTTP request.
pub fn forbidden(reason: &str, detail: &str) -> Vec<u8> {
    let body = format!("hb guard: {reason}: {detail}\n");
    format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\nX-Hb-Refused: {reason}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Head>, HeadError> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn host_and_framing_are_read() {
        let h = head("POST /x HTTP/1.1\r\nHost: Allowed.Test:80\r\nContent-Length: 5\r\n\r\nhello")
            .expect("test input")
            .expect("test input");
        assert_eq!(h.method, "POST");
        assert_eq!(h.host.as_deref(), Some("allowed.test"));
        assert_eq!(h.port, Some(80));
        assert_eq!(h.framing, Framing::Length(5));
        assert_eq!(h.len, 62);
        assert!(h.overrides.is_empty());
        let h = head(
            "GET / HTTP/1.1\r\nHost: a.test\r\nX-HTTP-Method-Override:  DELETE \r\nx-method-override: put\r\n\r\n",
        )
        .expect("test input")
        .expect("test input");
        assert_eq!(h.overrides, ["DELETE", "put"]);
        let h = head("PUT http://allowed.test/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .expect("test input")
            .expect("test input");
        assert_eq!(h.host.as_deref(), Some("allowed.test"));
        assert_eq!(h.framing, Framing::Chunked);
        assert_eq!(head("GET / HTTP/1.1\r\nHost: a.test\r\n"), Ok(None));
        let h = head("GET / HTTP/1.0\r\n\r\n")
            .expect("test input")
            .expect("test input");
        assert_eq!(h.host, None);
    }

    #[test]
    fn ambiguous_requests_are_refused() {
        for bad in [
            "GET / HTTP/1.1\r\nHost: a.test\r\nHost: evil.test\r\n\r\n",
            "GET http://evil.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "GET http://a.test@evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.test\r\nUpgrade: h2c\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: evil test\r\n\r\n",
            "GET https://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.0\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 40\r\n\r\n",
            "OPTIONS / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 40\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a.test\r\nX: a\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\nHost: a.test\n\n",
            // Unicode white space is no optional white space: a server keeps it in the
            // value (nginx routes `a.test\u{a0}` to its default virtual host).
            "GET / HTTP/1.1\r\nHost: a.test\u{a0}\r\n\r\n",
            // A trailing dot: some servers drop it, others route the name whole.
            "GET / HTTP/1.1\r\nHost: a.test.\r\n\r\n",
            "GET http://a.test.:80/ HTTP/1.1\r\nHost: a.test.:80\r\n\r\n",
            // A port with a leading zero, or that differs between target and Host.
            "GET / HTTP/1.1\r\nHost: a.test:080\r\n\r\n",
            "GET http://a.test:8080/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: \u{3000}a.test\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.test\u{85}:80\r\n\r\n",
            "GET http://a.test\u{2028}/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\u{a0}\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\u{1680}\r\n\r\n",
        ] {
            assert!(
                matches!(head(bad), Err(HeadError::Ambiguous(_))),
                "{bad:?} → {:?}",
                head(bad)
            );
        }
        assert_eq!(head("\x16\x03\x01\x00\x05hello"), Err(HeadError::NotHttp));
        // The HTTP/2 preface is no HTTP/1 request at all.
        assert_eq!(
            head("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Err(HeadError::NotHttp)
        );
    }

    #[test]
    fn a_port_passes_only_as_the_connections_own_other_than_80() {
        assert!(port_fits(None, 80));
        assert!(port_fits(None, 8080));
        assert!(port_fits(Some(8080), 8080));
        for (written, dst) in [(80, 80), (81, 80), (80, 8080), (443, 8080)] {
            assert!(!port_fits(Some(written), dst), "{written} on {dst}");
        }
        let h = head("GET / HTTP/1.1\r\nHost: [2001:db8::10]:8080\r\n\r\n")
            .expect("test input")
            .expect("test input");
        assert_eq!(
            (h.host.as_deref(), h.port),
            (Some("2001:db8::10"), Some(8080))
        );
    }

    #[test]
    fn a_body_that_starts_like_a_request_is_seen() {
        for (body, whole, want) in [
            (
                &b"GET /x HTTP/1.1\r\nHost: evil.test\r\n\r\n"[..],
                true,
                BodyStart::Request,
            ),
            (b"\r\n\r\n get  /x  http/1.1", true, BodyStart::Request),
            (b"POST /w HTTP/1.1", true, BodyStart::Request),
            (b"POST /w HTTP/1.1", false, BodyStart::Undecided),
            (b"GET /a b HTTP/1.1\r\n", false, BodyStart::Request),
            (
                b"Fetch the page over HTTP/2 please\n",
                false,
                BodyStart::NoRequest,
            ),
            (b"0;GET /x HTTP/1.1\r\n", false, BodyStart::Request),
            (b"GET /x HT", false, BodyStart::Undecided),
            (b"\r\n", false, BodyStart::Undecided),
            // HTTP/0.9 to Python's `http.server`, which reads its headers too.
            (b"GET /x", true, BodyStart::Request),
            (b"GET /x", false, BodyStart::Undecided),
            (b"POST /x", true, BodyStart::NoRequest),
            (b"{\"a\": 1}", false, BodyStart::NoRequest),
            (b"a=1&b=2", false, BodyStart::NoRequest),
            (
                b"hello world\nGET / HTTP/1.1\r\n",
                false,
                BodyStart::NoRequest,
            ),
            (b"5\r\nhello\r\n0\r\n\r\n", false, BodyStart::NoRequest),
            (b"\x00\x01binary", false, BodyStart::NoRequest),
            (b"", true, BodyStart::NoRequest),
        ] {
            assert_eq!(
                body_start(body, whole),
                want,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn connection_close_replaces_the_connection_headers_with_close_alone() {
        // Python's `http.server` keeps a connection whose `Connection` is not exactly
        // `close`: the client's other options go, the fields they name stay.
        let head = b"POST /x HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive, TE\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nconnection: Close\r\nContent-Length: 3\r\n\r\n";
        let out = with_connection_close(head);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "POST /x HTTP/1.1\r\nHost: a.test\r\nTE: trailers\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
        );
        let out = with_connection_close(
            b"POST /x HTTP/1.1\r\nHost: a.test\r\nConnection: content-length, host\r\nContent-Length: 3\r\n\r\n",
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
        );
        let parsed = parse_head(&out).expect("test input").expect("test input");
        assert_eq!(parsed.len, out.len());
        assert_eq!(parsed.framing, Framing::Length(3));
        // A response head (as python's http.server writes it: no Connection at all).
        let out = with_connection_close(
            b"HTTP/1.0 413 Too Large\r\nServer: x\r\nContent-Length: 2\r\n\r\n",
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.0 413 Too Large\r\nServer: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
        assert!(parse_response_head(&out).expect("test input").is_some());
    }

    #[test]
    fn responses_end_where_their_framing_says() {
        let body = |text: &str, to_head: bool| {
            parse_response_head(text.as_bytes())
                .expect("test input")
                .expect("test input")
                .body(to_head)
        };
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", false),
            ResponseBody::Length(12)
        );
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", true),
            ResponseBody::None
        );
        assert_eq!(
            body(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
                false
            ),
            ResponseBody::Chunked
        );
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
            ResponseBody::UntilClose
        );
        assert_eq!(
            body("HTTP/1.0 200 OK\r\n\r\n", false),
            ResponseBody::UntilClose
        );
        assert_eq!(
            body("HTTP/1.1 204 No Content\r\n\r\n", false),
            ResponseBody::None
        );
        assert_eq!(
            body(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false
            ),
            ResponseBody::None
        );
        assert_eq!(
            body("HTTP/1.1 101 Switching Protocols\r\n\r\n", false),
            ResponseBody::UntilClose
        );
        let interim = parse_response_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
            .expect("test input")
            .expect("test input");
        assert!(interim.interim());
        assert_eq!(interim.len, 25);
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Le"),
            Ok(None)
        );
        assert!(
            parse_response_head(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
            )
            .is_err()
        );
        assert!(parse_response_head(b"\x16\x03\x01 not http\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_bodies_end_where_the_server_sees_them_end() {
        let body = b"5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\nGET /next";
        let (n, state) = scan_chunks(Chunks::Size, body).expect("test input");
        assert_eq!(state, Chunks::Done);
        assert_eq!(&body[n..], b"GET /next");
        // Fed byte by byte, the same end.
        let mut state = Chunks::Size;
        let mut at = 0;
        let mut pending = Vec::new();
        for &b in body.iter() {
            pending.push(b);
            let (used, s) = scan_chunks(state, &pending).expect("test input");
            at += used;
            pending.drain(..used);
            state = s;
            if state == Chunks::Done {
                break;
            }
        }
        assert_eq!(at, n);
        assert!(scan_chunks(Chunks::Size, b"zz\r\n").is_err());
        // A request hidden in the trailer section, behind a bare LF or as a line of its own.
        assert!(scan_chunks(Chunks::Size, b"0\r\nX: a\nPOST / HTTP/1.1\r\n\r\n").is_err());
        assert!(scan_chunks(Chunks::Size, b"0\r\nPOST / HTTP/1.1\r\n\r\n").is_err());
        assert!(scan_chunks(Chunks::Size, b"5\nhello\r\n0\r\n\r\n").is_err());
        assert!(scan_chunks(Chunks::Size, b"5\r\nhelloXX").is_err());
    }
}
