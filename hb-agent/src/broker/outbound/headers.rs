//! Headers on their way out and back in.
//!
//! Owns: which caller headers reach the upstream (hop-by-hop headers describe the
//! caller's connection to the broker, not ours to the upstream, and are dropped;
//! `Content-Length` is recomputed from the body; `Accept-Encoding` is the broker's own
//! (`identity`), and so is the body's flow (it is written at once: a caller's `Expect` is
//! dropped); `Host` comes from the URL and a caller's own is refused, as are
//! method-override headers, which would let an allowed method act as another; headers
//! that steer a reverse proxy in front of the upstream to another host or path are
//! dropped; on a credentialed call, partial-content requests (`Range`, `If-Range`) are
//! dropped too, see [`without_partial_content`]), which survive a redirect, and which
//! response headers the caller may see (`Set-Cookie`, `Set-Cookie2`, `Authorization` and
//! `Proxy-Authorization` are removed; `WWW-Authenticate` and `Proxy-Authenticate` keep
//! their scheme names only, since realm and error parameters can echo a token).
//!
//! Must never: put a header value into an error message (values may carry tokens; errors
//! name the header only), or let CR, LF or NUL reach the wire.

use http::{HeaderName, HeaderValue, header};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header name {0:?} is not a valid HTTP token")]
    Name(String),
    #[error("the value of header \"{0}\" holds CR, LF, NUL or another control character")]
    Value(String),
    #[error("header \"host\" cannot be set: the broker sends the URL's host")]
    Host,
    #[error(
        "header \"{0}\" asks the upstream to act as another method: send that method itself, \
         so policy judges it"
    )]
    MethodOverride(String),
}

/// Headers that belong to one connection (RFC 9110 §7.6.1), plus the non-standard
/// `Keep-Alive` and `Proxy-Connection` that clients still send.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Caller headers never forwarded: the broker asks for `identity` itself, so what
/// comes back is bytes the scrubber can read (a compressed body hides a credential
/// from it); and the broker writes a body at once, never waiting for a `100 Continue`,
/// so an `Expect` would only ask a server to answer before the body and read no
/// further: a back end that then takes the body as not coming reads it as the next
/// request on the connection — one nobody judged, and behind a front that shares its
/// back-end connection among clients, its answer is queued for another tenant's call,
/// whose own answer goes to the call after (attack review 34).
const NEGOTIATED_BY_BROKER: &[&str] = &["accept-encoding", "expect"];

/// Caller headers never forwarded: a reverse proxy or load balancer in front of the
/// upstream may route, rewrite or authorise by them (`X-Original-URL` and
/// `X-Rewrite-URL` replace the path IIS, Symfony and some gateways route on;
/// `X-Original-URI` (nginx's `auth_request` convention), `X-Forwarded-Uri` (Traefik's
/// forward auth) and `X-Forwarded-Path` (Kong) carry the path a proxy says it was
/// asked for; `X-Forwarded-Host`, `X-Host`, `X-HTTP-Host-Override` and `Forwarded` the
/// host), so a request the broker judged for one path and host would be served as
/// another: on a shared front end, with the credential, by another tenant's vhost.
/// Every `X-Forwarded-*` header is one ([`PROXY_STEERING_PREFIX`]), whatever it names.
/// The client-address headers CDNs and gateways set and trust (`X-Real-IP`,
/// `True-Client-IP`, `CF-Connecting-IP`, …) are too: an upstream that lets an address it
/// trusts past its own checks would take the caller's word for it.
const PROXY_STEERING: &[&str] = &[
    "cf-connecting-ip",
    "client-ip",
    "fastly-client-ip",
    "forwarded",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "x-originating-ip",
    "x-remote-addr",
    "x-remote-ip",
    "x-host",
    "x-http-host-override",
    "x-original-host",
    "x-original-uri",
    "x-original-url",
    "x-rewrite-url",
    "x-real-ip",
];

/// The prefix of the proxy-steering headers not listed one by one: `X-Forwarded-Host`,
/// `-Server`, `-For`, `-Proto`, `-Port`, `-Prefix`, `-Path`, `-Uri`, `-Scheme`, `-Ssl`
/// and whatever else a proxy names so.
const PROXY_STEERING_PREFIX: &str = "x-forwarded-";

/// Request headers that ask for part of a representation. A part of an answer that
/// echoes a credential holds a piece of it, shorter than any form the scrubber matches
/// whole: piece by piece, the caller would read the credential back.
const PARTIAL_CONTENT: &[&str] = &["range", "if-range", "request-range"];

/// Response headers removed outright: they set or carry credentials.
const SECRET_RESPONSE: &[&str] = &[
    "set-cookie",
    "set-cookie2",
    "authorization",
    "proxy-authorization",
];

/// Caller headers that are credentials of the origin they were meant for; dropped with
/// the marked credentials when a redirect leaves that origin.
const ORIGIN_BOUND: &[&str] = &["authorization", "proxy-authorization", "cookie"];

/// Headers that describe a request body; dropped when a redirect turns the request
/// into a body-less GET.
const BODY_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-language",
    "content-location",
];

/// Builds a header from text (a JSON request, a CLI argument), refusing what the wire
/// format cannot carry. The error names the header, never the value.
pub fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), HeaderError> {
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| HeaderError::Name(printable(name)))?;
    check_value(&name, value.as_bytes())?;
    let value = HeaderValue::from_bytes(value.as_bytes())
        .map_err(|_| HeaderError::Value(name.to_string()))?;
    Ok((name, value))
}

/// The name with anything unprintable escaped, for an error message.
fn printable(name: &str) -> String {
    name.chars()
        .flat_map(char::escape_default)
        .take(64)
        .collect()
}

/// CR, LF, NUL and other controls (tab aside) are refused, whatever built the value.
fn check_value(name: &HeaderName, bytes: &[u8]) -> Result<(), HeaderError> {
    if bytes.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f) {
        return Err(HeaderError::Value(name.to_string()));
    }
    Ok(())
}

/// The caller's headers as they may be sent: hop-by-hop ones (and any the `Connection`
/// header names), `Accept-Encoding`, `Expect`, proxy-steering ones and `Content-Length`
/// dropped; `Host`, method overrides and bad values refused.
pub fn outgoing(
    headers: &[(HeaderName, HeaderValue)],
) -> Result<Vec<(HeaderName, HeaderValue)>, HeaderError> {
    let mut named_by_connection: Vec<HeaderName> = Vec::new();
    for (name, value) in headers {
        check_value(name, value.as_bytes())?;
        if name == header::HOST {
            return Err(HeaderError::Host);
        }
        // Headers that make many frameworks (Rails, Express, Spring, Google APIs) treat
        // a request as another method: a GET a policy allows would act as the DELETE it
        // does not. Refused, in any spelling a server reads as one.
        if crate::http_rules::is_method_override(name.as_str()) {
            return Err(HeaderError::MethodOverride(name.to_string()));
        }
        if name == header::CONNECTION
            && let Ok(v) = value.to_str()
        {
            named_by_connection.extend(
                v.split(',')
                    .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok()),
            );
        }
    }
    // Names are compared with `_` read as `-` throughout: a CGI-style server reads
    // `Accept_Encoding` or `Transfer_Encoding` as the header the broker keeps for itself.
    Ok(headers
        .iter()
        .filter(|(name, _)| {
            let dashed = dashed(name);
            !HOP_BY_HOP.contains(&dashed.as_str())
                && !NEGOTIATED_BY_BROKER.contains(&dashed.as_str())
                && !steers_a_proxy(name)
                && !named_by_connection.contains(name)
                && dashed != header::CONTENT_LENGTH.as_str()
        })
        .cloned()
        .collect())
}

/// Whether a front proxy may route, rewrite or authorise by header `name` (see
/// [`PROXY_STEERING`]), read with `_` as `-`.
fn steers_a_proxy(name: &HeaderName) -> bool {
    let name = dashed(name);
    PROXY_STEERING.contains(&name.as_str()) || name.starts_with(PROXY_STEERING_PREFIX)
}

/// A header name with `_` read as `-` (CGI-style gateways and some servers map both to
/// the same variable).
fn dashed(name: &HeaderName) -> String {
    dashed_str(name.as_str())
}

/// [`dashed`] for a name given as text (the integration's configured auth header).
pub(crate) fn dashed_str(name: &str) -> String {
    name.replace('_', "-")
}

/// `headers` without the partial-content requests (`Range`, `If-Range`,
/// `Request-Range`): for a call that carries a credential, the whole answer is asked
/// for, so the scrubber sees every echo of the credential whole.
pub fn without_partial_content(headers: &mut Vec<(HeaderName, HeaderValue)>) {
    headers.retain(|(name, _)| !PARTIAL_CONTENT.contains(&dashed(name).as_str()));
}

/// Marked credential headers, checked and flagged sensitive (hyper then keeps them out
/// of its own debug output and HPACK tables).
pub fn credentials(
    headers: &[(HeaderName, HeaderValue)],
) -> Result<Vec<(HeaderName, HeaderValue)>, HeaderError> {
    headers
        .iter()
        .map(|(name, value)| {
            check_value(name, value.as_bytes())?;
            if name == header::HOST {
                return Err(HeaderError::Host);
            }
            let mut value = value.clone();
            value.set_sensitive(true);
            Ok((name.clone(), value))
        })
        .collect()
}

/// What remains of the caller's ordinary headers after a redirect: without the
/// origin-bound credentials when the origin changed, without body headers when the
/// body was dropped.
pub fn after_redirect(
    headers: &mut Vec<(HeaderName, HeaderValue)>,
    origin_changed: bool,
    body_dropped: bool,
) {
    headers.retain(|(name, _)| {
        !(origin_changed && ORIGIN_BOUND.contains(&name.as_str())
            || body_dropped && BODY_HEADERS.contains(&name.as_str()))
    });
}

/// The response headers the caller may see, as text, in the upstream's order.
pub fn incoming(headers: &http::HeaderMap) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        if SECRET_RESPONSE.contains(&name.as_str()) || HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        let text = String::from_utf8_lossy(value.as_bytes());
        let text = if name == header::WWW_AUTHENTICATE || name == header::PROXY_AUTHENTICATE {
            challenge_schemes(&text)
        } else {
            text.into_owned()
        };
        out.push((name.as_str().to_owned(), text));
    }
    out
}

/// The auth scheme names of a `WWW-Authenticate` value (RFC 9110 §11.6.1), parameters
/// removed: `Bearer realm="x", error="…", Basic realm="y"` → `Bearer, Basic`.
///
/// A challenge is a token followed by a space, a comma or the end; a token followed by
/// `=` is a parameter name; quoted strings are skipped whole, so a comma or `=` inside
/// one is not mistaken for structure. Token68 values (`Negotiate abc==`) are dropped too.
pub fn challenge_schemes(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut schemes: Vec<&str> = Vec::new();
    // Whether the next token may start a challenge (at the start, after a comma).
    let mut at_item_start = true;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                at_item_start = false;
            }
            b',' => {
                at_item_start = true;
                i += 1;
            }
            b' ' | b'\t' => i += 1,
            _ => {
                let start = i;
                while i < bytes.len() && !matches!(bytes[i], b' ' | b'\t' | b',' | b'=' | b'"') {
                    i += 1;
                }
                let token = &value[start..i];
                let mut j = i;
                while j < bytes.len() && matches!(bytes[j], b' ' | b'\t') {
                    j += 1;
                }
                let is_param = j < bytes.len() && bytes[j] == b'=';
                if at_item_start && !is_param && !token.is_empty() {
                    schemes.push(token);
                }
                if is_param {
                    // Skip `=` (and a token68's padding) so it does not start a token.
                    i = j;
                    while i < bytes.len() && bytes[i] == b'=' {
                        i += 1;
                    }
                }
                at_item_start = false;
                if token.is_empty() && i == start {
                    i += 1;
                }
            }
        }
    }
    schemes.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    fn names(headers: &[(HeaderName, HeaderValue)]) -> Vec<&str> {
        headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn header_text_with_crlf_or_nul_is_refused_without_echoing_the_value() {
        for value in [
            "a\r\nX-Evil: 1",
            "a\nb",
            "a\rb",
            "a\0b",
            "a\x7fb",
            "\x1b[31m",
        ] {
            let e = header("X-Token", value).expect_err(value);
            assert_eq!(e, HeaderError::Value("x-token".into()), "{value:?}");
            assert!(!e.to_string().contains(value), "{e}");
        }
        for name in ["X-A\r\nB", "X A", "", "X:Y", "X\0"] {
            assert!(
                matches!(header(name, "v"), Err(HeaderError::Name(_))),
                "{name:?}"
            );
        }
        let (n, v) = header("X-Ok", "tab\there ünïcode").expect("valid");
        assert_eq!(n.as_str(), "x-ok");
        assert_eq!(v.as_bytes(), "tab\there ünïcode".as_bytes());
    }

    #[test]
    fn raw_values_are_checked_byte_by_byte() {
        // `outgoing` and `credentials` check the bytes again, whatever built the value
        // (http's unchecked constructors skip its own validation).
        let name = HeaderName::from_static("x-a");
        for bad in [&b"a\r\nb"[..], b"a\nb", b"a\0b", b"\x7f"] {
            assert_eq!(
                check_value(&name, bad),
                Err(HeaderError::Value("x-a".into()))
            );
        }
        assert_eq!(check_value(&name, b"a\tb \xc3\xbc"), Ok(()));
    }

    #[test]
    fn hop_by_hop_and_content_length_are_not_forwarded() {
        let input = vec![
            (header::CONNECTION, hv("keep-alive, X-Private")),
            (HeaderName::from_static("keep-alive"), hv("timeout=5")),
            (HeaderName::from_static("proxy-connection"), hv("close")),
            (header::TE, hv("trailers")),
            (header::TRAILER, hv("x")),
            (header::TRANSFER_ENCODING, hv("chunked")),
            (header::UPGRADE, hv("websocket")),
            (header::CONTENT_LENGTH, hv("999")),
            (
                HeaderName::from_static("x-private"),
                hv("named by Connection"),
            ),
            (header::ACCEPT_ENCODING, hv("gzip, br")),
            (header::EXPECT, hv("100-continue")),
            // As a CGI-style server reads them: the same headers.
            (HeaderName::from_static("accept_encoding"), hv("gzip")),
            (HeaderName::from_static("transfer_encoding"), hv("chunked")),
            (HeaderName::from_static("content_length"), hv("999")),
            (HeaderName::from_static("keep_alive"), hv("timeout=5")),
            (
                HeaderName::from_static("x-forwarded-host"),
                hv("internal.test"),
            ),
            (HeaderName::from_static("x-original-url"), hv("/admin")),
            (HeaderName::from_static("x-rewrite-url"), hv("/admin")),
            (HeaderName::from_static("x-original-uri"), hv("/admin")),
            (HeaderName::from_static("x-forwarded-uri"), hv("/admin")),
            (HeaderName::from_static("x-forwarded-path"), hv("/admin")),
            (HeaderName::from_static("x_forwarded_scheme"), hv("http")),
            (
                HeaderName::from_static("x-http-host-override"),
                hv("internal.test"),
            ),
            (
                HeaderName::from_static("x_http_host_override"),
                hv("internal.test"),
            ),
            (header::FORWARDED, hv("host=internal.test")),
            (HeaderName::from_static("x-real-ip"), hv("10.0.0.1")),
            (HeaderName::from_static("true-client-ip"), hv("10.0.0.1")),
            (HeaderName::from_static("cf-connecting-ip"), hv("10.0.0.1")),
            (HeaderName::from_static("x_client_ip"), hv("10.0.0.1")),
            (header::ACCEPT, hv("application/json")),
            (HeaderName::from_static("x-request-id"), hv("42")),
        ];
        let out = outgoing(&input).expect("valid");
        assert_eq!(names(&out), ["accept", "x-request-id"]);
        assert_eq!(
            outgoing(&[(header::HOST, hv("internal.test"))]),
            Err(HeaderError::Host)
        );
        for name in [
            "X-HTTP-Method-Override",
            "x-http-method",
            "X-Method-Override",
            "X_HTTP_METHOD_OVERRIDE",
        ] {
            let pair = header(name, "DELETE").expect("valid header");
            assert_eq!(
                outgoing(&[pair]),
                Err(HeaderError::MethodOverride(name.to_ascii_lowercase()))
            );
        }
    }

    #[test]
    fn partial_content_requests_can_be_removed() {
        let mut h = vec![
            (header::RANGE, hv("bytes=0-3")),
            (header::IF_RANGE, hv("\"etag\"")),
            (HeaderName::from_static("request-range"), hv("bytes=0-3")),
            (HeaderName::from_static("if_range"), hv("\"etag\"")),
            (HeaderName::from_static("request_range"), hv("bytes=0-3")),
            (header::ACCEPT, hv("*/*")),
        ];
        without_partial_content(&mut h);
        assert_eq!(names(&h), ["accept"]);
    }

    #[test]
    fn credentials_are_marked_sensitive() {
        let out = credentials(&[(header::AUTHORIZATION, hv("Bearer t0ken"))]).expect("valid");
        assert!(out[0].1.is_sensitive());
        assert!(!format!("{:?}", out[0].1).contains("t0ken"));
    }

    #[test]
    fn redirect_drops_origin_credentials_and_body_headers() {
        let all = vec![
            (header::AUTHORIZATION, hv("Bearer caller-own")),
            (header::COOKIE, hv("a=b")),
            (header::PROXY_AUTHORIZATION, hv("Basic x")),
            (header::CONTENT_TYPE, hv("application/json")),
            (header::ACCEPT, hv("*/*")),
        ];
        let mut same = all.clone();
        after_redirect(&mut same, false, false);
        assert_eq!(same.len(), all.len());
        let mut other = all.clone();
        after_redirect(&mut other, true, false);
        assert_eq!(names(&other), ["content-type", "accept"]);
        let mut get = all.clone();
        after_redirect(&mut get, false, true);
        assert_eq!(
            names(&get),
            ["authorization", "cookie", "proxy-authorization", "accept"]
        );
    }

    #[test]
    fn secret_response_headers_are_filtered() {
        let mut map = http::HeaderMap::new();
        map.append(header::SET_COOKIE, hv("session=abc; HttpOnly"));
        map.append(header::SET_COOKIE, hv("other=def"));
        map.append(HeaderName::from_static("set-cookie2"), hv("x=1"));
        map.append(header::AUTHORIZATION, hv("Bearer echoed"));
        map.append(header::PROXY_AUTHORIZATION, hv("Basic echoed"));
        map.append(
            header::WWW_AUTHENTICATE,
            hv(r#"Bearer realm="api", error="invalid_token", error_description="token ghp_x expired""#),
        );
        map.append(header::PROXY_AUTHENTICATE, hv(r#"Basic realm="proxy""#));
        map.append(header::CONNECTION, hv("keep-alive"));
        map.append(header::CONTENT_TYPE, hv("text/plain"));
        map.append(HeaderName::from_static("x-kept"), hv("yes"));
        let out = incoming(&map);
        let want: Vec<(String, String)> = [
            ("www-authenticate", "Bearer"),
            ("proxy-authenticate", "Basic"),
            ("content-type", "text/plain"),
            ("x-kept", "yes"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
        assert_eq!(out, want);
        let text = format!("{out:?}");
        for leaked in ["abc", "def", "echoed", "ghp_x", "realm"] {
            assert!(!text.contains(leaked), "{leaked} in {text}");
        }
    }

    #[test]
    fn challenge_parameters_are_removed() {
        let table = [
            ("Basic", "Basic"),
            (r#"Basic realm="x""#, "Basic"),
            (
                r#"Bearer realm="a, b=c", error="invalid_token", Basic realm="y""#,
                "Bearer, Basic",
            ),
            ("Negotiate YIIB+gYGKwYBBQUCoIIB7jCCAeqgDTAL==", "Negotiate"),
            (
                r#"Digest realm="r", nonce="n\"q, Fake x", qop=auth"#,
                "Digest",
            ),
            (
                "Newauth realm=apps, type=1, Basic realm=simple",
                "Newauth, Basic",
            ),
            (r#", , Bearer error="x""#, "Bearer"),
            ("", ""),
            ("=,=\"", ""),
        ];
        for (input, want) in table {
            assert_eq!(challenge_schemes(input), want, "{input}");
        }
    }
}
