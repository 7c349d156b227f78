//! The broker's outbound path: an already-authorized request in, the upstream's
//! response out.
//!
//! The path, module by module: [`url`] (the URL judged: http/https only, no userinfo, no
//! fragment, IP literals in any spelling read as addresses) → [`resolve`] (names resolved
//! through hb's own upstream client and every answer address judged against the deny
//! ranges; IP literals judged the same way) → [`client`] (a connection pinned to exactly
//! a validated address, TLS that checks the URL's host, HTTP/1.1, a small idle pool, the
//! size limit, `Accept-Encoding: identity`) → [`headers`] (what goes out, what comes
//! back) → [`decode`] (content and transfer codings undone within the size limit and a
//! ratio, so the scrubber sees the bytes the caller will) → redirects, when
//! `broker.follow_redirects` is on: each hop's URL is judged and resolved again and put
//! to the caller's [`HopPolicy`]; the credential (the headers and query parameter the
//! caller marks as such) is dropped for good once a hop leaves the first URL's origin
//! (scheme, host and port) or the policy says so. Everything, redirects included, must
//! finish within `broker.upstream_timeout_secs`.
//!
//! The caller (the `POST /v1/requests` endpoint) has already decided that the first URL
//! and method are allowed and put the credential in; this module never sees policies or
//! handles.
//!
//! Must never: connect to an address that was not validated for this hop, send a
//! credential to another origin, follow a redirect the caller's policy refused, or put a
//! header value, credential or body into an error or a log.

pub mod client;
pub mod decode;
pub mod headers;
pub mod resolve;
pub mod url;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};

use self::{
    client::{Client, Fetched, Outgoing},
    decode::DecodeError,
    headers::HeaderError,
    resolve::{ResolveError, Resolver},
    url::{Target, UrlError},
};
use crate::{
    broker::{error::Code, handles::Owner},
    config::Config,
    secret::Secret,
};

/// Redirects followed at most, after the first request.
pub const MAX_REDIRECTS: usize = 5;

/// Setting up the outbound path failed (bad `extra_ca_file`, unusable `dns.upstreams`).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot set up the broker's resolver")]
    Dns(#[from] crate::dns::DnsError),
    #[error("cannot set up the broker's resolver")]
    Upstream(#[from] crate::dns::upstream::UpstreamError),
    #[error(transparent)]
    Tls(#[from] client::TlsSetupError),
}

/// Why a request got no response. [`OutboundError::code`] maps each onto the broker's
/// stable codes. The message (`to_string()`) is complete on its own (no `source()`
/// chain to walk) and names hosts, addresses and config keys, never a header value, a
/// query string or a body.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("invalid URL: {0}")]
    Url(UrlError),
    #[error("invalid request header: {0}")]
    Header(HeaderError),
    #[error("method {0} is not allowed through the broker")]
    Method(Method),
    #[error("the URL's path and query cannot be sent as an HTTP request target")]
    RequestTarget,
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// `origin` is scheme://host[:port] only: the path and query of a Location are the
    /// upstream's and may carry anything, the caller's data included.
    #[error("redirect to {origin} refused by policy")]
    RedirectDenied { origin: String },
    #[error("{host} answered {status} with a Location that cannot be followed: {problem}")]
    BadRedirect {
        host: String,
        status: u16,
        problem: UrlError,
    },
    #[error("more than {MAX_REDIRECTS} redirects (the last from {host})")]
    TooManyRedirects { host: String },
    #[error("cannot connect to {host}: {reason}")]
    Connect { host: String, reason: String },
    #[error("TLS with {host} ({addr}) failed: {reason}")]
    Tls {
        host: String,
        addr: std::net::SocketAddr,
        reason: String,
    },
    #[error("HTTP exchange with {host} failed: {reason}")]
    Http { host: String, reason: String },
    #[error("the response from {host} is larger than broker.max_response_bytes ({limit} bytes)")]
    TooLarge { host: String, limit: usize },
    #[error("{host} did not answer within broker.upstream_timeout_secs ({secs} s)")]
    Timeout { host: String, secs: u64 },
    #[error("{host}: {problem}")]
    Decode { host: String, problem: DecodeError },
    #[error(
        "the broker holds as much of upstream answers for this caller, or its policy, as it \
         may at once; retry when its other requests end"
    )]
    AnswerBudgetSpent,
}

impl From<UrlError> for OutboundError {
    fn from(e: UrlError) -> Self {
        OutboundError::Url(e)
    }
}

impl From<HeaderError> for OutboundError {
    fn from(e: HeaderError) -> Self {
        OutboundError::Header(e)
    }
}

impl OutboundError {
    /// The broker's error code for this failure.
    pub fn code(&self) -> Code {
        match self {
            OutboundError::Url(_)
            | OutboundError::Header(_)
            | OutboundError::Method(_)
            | OutboundError::RequestTarget => Code::BadRequest,
            OutboundError::Resolve(ResolveError::DnsRejected { .. }) => Code::DnsRejected,
            OutboundError::Resolve(ResolveError::IpDenied { .. })
            | OutboundError::RedirectDenied { .. } => Code::PolicyDenied,
            OutboundError::Resolve(_)
            | OutboundError::BadRedirect { .. }
            | OutboundError::TooManyRedirects { .. }
            | OutboundError::Connect { .. }
            | OutboundError::Tls { .. }
            | OutboundError::Http { .. } => Code::UpstreamError,
            OutboundError::TooLarge { .. }
            | OutboundError::Decode {
                problem: DecodeError::TooLarge { .. },
                ..
            } => Code::TooLarge,
            OutboundError::AnswerBudgetSpent
            | OutboundError::Decode {
                problem: DecodeError::NoRoom,
                ..
            } => Code::Unavailable,
            OutboundError::Decode {
                problem: DecodeError::Unsupported { .. },
                ..
            } => Code::UnreadableResponse,
            OutboundError::Decode {
                problem: DecodeError::Corrupt { .. },
                ..
            } => Code::UpstreamError,
            OutboundError::Timeout { .. } => Code::Timeout,
        }
    }
}

/// A query parameter that carries a credential (`?api_key=…`), added on the wire only.
pub struct CredentialQuery {
    pub name: String,
    pub value: Secret,
}

/// Whose calls a connection may carry: one that carried a party's call is never handed
/// to another party's. An upstream that writes more than its answer's framing says (a
/// body after its answer to HEAD, a `Content-Length` short of the body, bytes a moment
/// after its answer) leaves bytes on the connection that hyper reads as the answer to
/// the connection's next request: the next party's call would get an answer the first
/// party's call caused, and its own answer would go to whoever sends next. Bytes that
/// come once the next request is on its way cannot be told from its answer, so a party
/// is everything an answer is judged by that its calls choose: the caller (another
/// tenant's calls, made with its credential) and the credential the call carries (a
/// call made with a handle gets refusals, fragments watched and an echo signalled that
/// a call without one, or with another handle's, does not).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Party {
    /// The agent's own calls: rotators and verify probes. Never pooled, nor resuming a
    /// TLS session (`client::TlsConfigs`): they carry the keys of every tenant's
    /// accounts, and one account's verify answer followed by bytes of the upstream's
    /// would otherwise answer the next account's verify (a dead key judged good, a good
    /// one dead and rotated); they are rare, so a connection each costs little.
    Agent,
    /// The debug CLI's calls: one process of one operator, with the one credential its
    /// command line gives.
    Operator,
    /// One broker caller's calls carrying one credential (its id; `None`: none).
    Caller {
        owner: Owner,
        credential: Option<Arc<str>>,
    },
}

impl Party {
    /// Whether a connection that carried this party's call is kept for its next one.
    pub fn pooled(&self) -> bool {
        !matches!(self, Self::Agent)
    }
}

/// An authorized request. No `Debug`: it carries the credential.
pub struct OutboundRequest {
    pub method: Method,
    pub target: Target,
    /// The caller's own headers. Hop-by-hop headers and `Content-Length` are dropped;
    /// `Host` is refused (it comes from the URL).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Headers that carry the credential: sent marked sensitive, replacing caller
    /// headers of the same name, dropped when a redirect leaves the origin.
    pub credential_headers: Vec<(HeaderName, HeaderValue)>,
    pub credential_query: Option<CredentialQuery>,
    pub body: Bytes,
    /// The answer's bytes, counted against its caller's shares of the broker's
    /// answer budget as they are read (`server::AnswerBudget`); `None`: not counted (the
    /// agent's own calls: rotators, probes).
    pub held: Option<Held>,
    /// Whose calls its connection may carry besides it.
    pub party: Party,
}

/// An answer's bytes in hand, counted against its tenant's share and its caller's.
pub type Held = super::server::BudgetCount;

#[derive(Debug)]
pub struct OutboundResponse {
    pub status: u16,
    /// Lower-case names in the upstream's order, secret-bearing ones filtered (see
    /// [`headers::incoming`]); non-UTF-8 bytes replaced. Without `Content-Encoding`
    /// and `Content-Length` when the body was decoded.
    pub headers: Vec<(String, String)>,
    /// Decoded: no content or transfer coding left (see [`decode`]).
    pub body: Bytes,
    /// The URL that gave this response (after redirects), without the credential query.
    pub final_url: String,
    /// Whether the hop that gave this response carried the credential (a redirect to
    /// another origin drops it): only then does its status say anything about the key.
    pub credential_sent: bool,
    /// The count of the body's bytes, kept as long as the response (see
    /// [`OutboundRequest::held`]).
    pub held: Option<Held>,
}

/// What the caller's policy says about one redirect hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopDecision {
    /// Follow it; `keep_credential: false` drops the credential from here on even when
    /// the hop stays on the origin (leaving the origin always drops it).
    Allow {
        keep_credential: bool,
    },
    Deny,
}

/// The caller's judgement of each redirect hop (the first URL is judged before
/// [`Outbound::send`]). The hop has already passed URL validation; resolution follows.
pub trait HopPolicy: Send + Sync {
    fn hop_allowed(&self, next: &Target) -> HopDecision;
}

impl<F: Fn(&Target) -> HopDecision + Send + Sync> HopPolicy for F {
    fn hop_allowed(&self, next: &Target) -> HopDecision {
        self(next)
    }
}

/// The outbound path, shared by every request of the broker.
pub struct Outbound {
    resolver: Resolver,
    client: Client,
    /// `broker.max_response_bytes`, also the limit of a decoded body.
    max_response: usize,
    timeout: Duration,
    follow_redirects: bool,
}

impl Outbound {
    /// Builds the resolver (its own upstream sockets, on the current tokio runtime: call
    /// it from the runtime that will send) and the TLS configuration (system roots plus
    /// `broker.extra_ca_file`, parsed once). `local`: the host's own addresses, which the
    /// resolver refuses as answers and literals.
    pub async fn new(
        config: &Config,
        local: crate::local_addrs::LocalAddrs,
    ) -> Result<Arc<Self>, SetupError> {
        let servers = crate::dns::upstream_servers(config)?;
        let upstream = crate::dns::upstream::Upstream::new(servers).await?;
        let resolver = Resolver::new(
            upstream,
            config.egress.deny.clone(),
            config.egress.exceptions.clone(),
            u32::try_from(config.dns.min_ttl_secs).unwrap_or(u32::MAX),
            u32::try_from(config.dns.max_ttl_secs).unwrap_or(u32::MAX),
        )
        .with_nat64(config.egress.nat64.clone())
        .with_local(local);
        let (tls, system_roots) = client::tls_config(&config.broker.extra_ca_file)?;
        if system_roots == 0 {
            tracing::warn!(
                "no system CA certificates found (SSL_CERT_FILE, SSL_CERT_DIR, /etc/ssl/certs): \
                 the broker trusts only broker.extra_ca_file"
            );
        }
        let max_response = usize::try_from(config.broker.max_response_bytes).unwrap_or(usize::MAX);
        Ok(Arc::new(Self {
            resolver,
            client: Client::new(tls, max_response),
            max_response,
            timeout: Duration::from_secs(config.broker.upstream_timeout_secs),
            follow_redirects: config.broker.follow_redirects,
        }))
    }

    /// Sends `req` and returns the upstream's response (a 3xx as it is when redirects
    /// are not followed, with its `Location`).
    pub async fn send(
        &self,
        req: OutboundRequest,
        policy: &dyn HopPolicy,
    ) -> Result<OutboundResponse, OutboundError> {
        if req.method == Method::CONNECT || req.method == Method::TRACE {
            // CONNECT asks for a tunnel; TRACE echoes the request, credential included.
            return Err(OutboundError::Method(req.method));
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut req = req;
        let mut held = req.held.take();
        let mut carry = Carry::new(req)?;
        let mut target = carry.first.clone();
        for hop in 0..=MAX_REDIRECTS {
            // A redirect's body is dropped: only this hop's answer is held.
            if let Some(h) = held.as_mut() {
                h.clear();
            }
            let fetched =
                tokio::time::timeout_at(deadline, self.fetch(&target, &carry, held.as_mut()))
                    .await
                    .map_err(|_| OutboundError::Timeout {
                        host: target.host.to_string(),
                        secs: self.timeout.as_secs(),
                    })??;
            let location = fetched
                .headers
                .get(http::header::LOCATION)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let location = match location {
                Some(l) if self.follow_redirects && is_redirect(fetched.status) => l,
                _ => {
                    let credential_sent = carry.carries_credential();
                    return respond(fetched, &target, credential_sent, self.max_response, held)
                        .await;
                }
            };
            if hop == MAX_REDIRECTS {
                return Err(OutboundError::TooManyRedirects {
                    host: target.host.to_string(),
                });
            }
            let next = target
                .join(&location)
                .map_err(|problem| OutboundError::BadRedirect {
                    host: target.host.to_string(),
                    status: fetched.status,
                    problem,
                })?;
            let decision = policy.hop_allowed(&next);
            carry.redirect(&target, &next, fetched.status, decision)?;
            target = next;
        }
        Err(OutboundError::TooManyRedirects {
            host: target.host.to_string(),
        })
    }

    /// One hop: resolve and validate, then exchange over a pinned connection.
    async fn fetch(
        &self,
        target: &Target,
        carry: &Carry,
        held: Option<&mut Held>,
    ) -> Result<Fetched, OutboundError> {
        let addrs = self.resolver.resolve(&target.host).await?;
        let path = carry.path_and_query(target);
        let out = Outgoing {
            party: &carry.party,
            method: &carry.method,
            target,
            path_and_query: &path,
            headers: &carry.headers,
            credential_headers: &carry.credential_headers,
            body: &carry.body,
        };
        self.client.exchange(&out, &addrs, held).await
    }
}

// The broker calls `send` from its multi-threaded runtime: the path and its future must
// be shareable between threads.
const _: () = {
    fn send_future<'a>(
        o: &'a Outbound,
        r: OutboundRequest,
        p: &'a dyn HopPolicy,
    ) -> impl Send + 'a {
        o.send(r, p)
    }
    fn shared<T: Send + Sync>() {}
    let _ = send_future;
    let _ = shared::<Outbound>;
};

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// The response as the caller may see it: codings undone (on a blocking thread: a
/// body of up to `max_response` bytes), secret-bearing headers filtered.
async fn respond(
    fetched: Fetched,
    target: &Target,
    credential_sent: bool,
    max_response: usize,
    mut held: Option<Held>,
) -> Result<OutboundResponse, OutboundError> {
    let decode_err = |problem| OutboundError::Decode {
        host: target.host.to_string(),
        problem,
    };
    let mut headers = headers::incoming(&fetched.headers);
    // An empty body (HEAD, 204, 304) has nothing to decode, whatever its headers say.
    let body = if !fetched.body.is_empty() && decode::is_encoded(&fetched.headers) {
        let (map, body) = (fetched.headers, fetched.body);
        // Each decoded piece is counted before it is taken (up to `max_response` for
        // each layer, held beside the encoded body): a tenant's calls decoding at once
        // stop at its share, not at `max_response` each.
        let (decoded, held_back) = tokio::task::spawn_blocking(move || {
            let mut room = |n: usize| held.as_mut().is_none_or(|h| h.grow(n as u64).is_ok());
            let decoded = decode::decode(&map, body, max_response, &mut room);
            (decoded, held)
        })
        .await
        .map_err(|_| OutboundError::Http {
            host: target.host.to_string(),
            reason: "the decoding task failed".into(),
        })?;
        held = held_back;
        let body = decoded.map_err(|e| match e {
            decode::DecodeError::NoRoom => OutboundError::AnswerBudgetSpent,
            e => decode_err(e),
        })?;
        headers.retain(|(name, _)| name != "content-encoding" && name != "content-length");
        // The decoded body takes the encoded one's place: every layer was counted as it
        // was decoded, so the count only shrinks to it (no slot let go of and taken again,
        // which another tenant could take in between).
        if let Some(h) = held.as_mut() {
            h.recount(body.len() as u64)
                .map_err(|_| OutboundError::AnswerBudgetSpent)?;
        }
        body
    } else {
        // An unknown coding is refused here too (is_encoded is true for it).
        fetched.body
    };
    Ok(OutboundResponse {
        status: fetched.status,
        headers,
        body,
        final_url: target.to_string(),
        credential_sent,
        held,
    })
}

/// What a request carries from hop to hop, and how a redirect changes it.
struct Carry {
    /// The URL the caller asked for (the origin the credential belongs to).
    first: Target,
    method: Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    credential_headers: Vec<(HeaderName, HeaderValue)>,
    credential_query: Option<CredentialQuery>,
    body: Bytes,
    party: Party,
}

impl Carry {
    fn new(req: OutboundRequest) -> Result<Self, OutboundError> {
        let credential_headers = headers::credentials(&req.credential_headers)?;
        let mut ordinary = headers::outgoing(&req.headers)?;
        ordinary.retain(|(n, _)| !credential_headers.iter().any(|(c, _)| c == n));
        Ok(Self {
            first: req.target,
            method: req.method,
            headers: ordinary,
            credential_headers,
            credential_query: req.credential_query,
            body: req.body,
            party: req.party,
        })
    }

    /// Whether the credential still travels with the request.
    fn carries_credential(&self) -> bool {
        !self.credential_headers.is_empty() || self.credential_query.is_some()
    }

    /// The request target for `target`, with the credential query parameter if it
    /// still travels.
    fn path_and_query(&self, target: &Target) -> String {
        let mut path = target.path_and_query.clone();
        if let Some(q) = &self.credential_query {
            path.push(if path.contains('?') { '&' } else { '?' });
            path.extend(::url::form_urlencoded::byte_serialize(q.name.as_bytes()));
            path.push('=');
            path.extend(::url::form_urlencoded::byte_serialize(q.value.expose()));
        }
        path
    }

    /// Applies a followed redirect from `from` to `to` (answered with `status`): the
    /// policy's decision, credential dropping, and the method change of 301/302/303.
    fn redirect(
        &mut self,
        from: &Target,
        to: &Target,
        status: u16,
        decision: HopDecision,
    ) -> Result<(), OutboundError> {
        let keep_credential = match decision {
            HopDecision::Deny => {
                return Err(OutboundError::RedirectDenied {
                    origin: format!("{}://{}", to.scheme.as_str(), to.authority()),
                });
            }
            HopDecision::Allow { keep_credential } => keep_credential,
        };
        let origin_changed = !to.same_origin(from);
        if origin_changed || !keep_credential {
            self.credential_headers.clear();
            self.credential_query = None;
        }
        // RFC 9110 §15.4: 303 turns anything but HEAD into GET; browsers (and curl) do
        // the same for POST on 301/302. 307/308 keep method and body.
        let to_get = (status == 303 && self.method != Method::HEAD)
            || (matches!(status, 301 | 302) && self.method == Method::POST);
        if to_get {
            self.method = Method::GET;
            self.body = Bytes::new();
        }
        headers::after_redirect(&mut self.headers, origin_changed, to_get);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(s: &str) -> Target {
        Target::parse(s).expect("test URL")
    }

    fn carry(method: Method, with_query: bool) -> Carry {
        Carry::new(OutboundRequest {
            method,
            target: target("https://api.test/start"),
            headers: vec![
                (
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (
                    http::header::ACCEPT,
                    HeaderValue::from_static("application/json"),
                ),
                (
                    HeaderName::from_static("x-api-key"),
                    HeaderValue::from_static("caller-value"),
                ),
            ],
            credential_headers: vec![(
                HeaderName::from_static("x-api-key"),
                HeaderValue::from_static("s3cr3t"),
            )],
            credential_query: with_query.then(|| CredentialQuery {
                name: "api_key".into(),
                value: Secret::new(b"q s&cret".to_vec()),
            }),
            body: Bytes::from_static(b"{}"),
            held: None,
            party: Party::Agent,
        })
        .expect("valid request")
    }

    /// A compressed answer is decoded only as far as its tenant's answer budget goes:
    /// a gzip stream cut short (no trailer) far past the budget is refused for the
    /// budget, since its decoding stopped there, not as corrupt (which it would be once
    /// decoded to the cut, as each call was before counting); every slot comes back.
    #[tokio::test]
    async fn a_decoding_stops_at_the_tenants_answer_budget() {
        use std::io::Write as _;
        let text: Vec<u8> = (0..16_384u32)
            .flat_map(|i| format!("row {i:09}: {}\n", "ok ".repeat(20)).into_bytes())
            .collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).expect("gzip");
        let mut gz = gz.finish().expect("gzip");
        gz.truncate(gz.len() - 8);
        // 64 slots of 4 KiB: a lone tenant holds up to about half, 128 KiB.
        let pool = crate::share::Share::new(64, 64);
        let mut held = Held::new(
            crate::share::Counted::new(
                pool.clone(),
                super::super::server::Tenant::Host(1000),
                4096,
            ),
            None,
        );
        held.grow(gz.len() as u64).expect("the encoded body fits");
        assert!(
            text.len() > 4 * (128 << 10),
            "decoded, it is far past the budget"
        );
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip"),
        );
        let fetched = client::Fetched {
            status: 200,
            headers,
            body: Bytes::from(gz),
        };
        let target = target("https://api.test/x");
        match respond(fetched, &target, false, 10 << 20, Some(held)).await {
            Err(OutboundError::AnswerBudgetSpent) => {}
            Err(e) => panic!("refused otherwise: {e}"),
            Ok(r) => panic!("answered, {} bytes", r.body.len()),
        }
        assert_eq!(pool.free(), 64, "every slot given back");
    }

    const KEEP: HopDecision = HopDecision::Allow {
        keep_credential: true,
    };

    #[test]
    fn credential_replaces_a_caller_header_of_the_same_name() {
        let c = carry(Method::GET, false);
        assert!(c.headers.iter().all(|(n, _)| n != "x-api-key"));
        assert_eq!(c.credential_headers.len(), 1);
        assert!(c.credential_headers[0].1.is_sensitive());
    }

    #[test]
    fn credential_query_is_encoded_and_appended() {
        let c = carry(Method::GET, true);
        assert_eq!(
            c.path_and_query(&target("https://api.test/x")),
            "/x?api_key=q+s%26cret"
        );
        assert_eq!(
            c.path_and_query(&target("https://api.test/x?a=1")),
            "/x?a=1&api_key=q+s%26cret"
        );
    }

    #[test]
    fn credential_stays_on_the_same_origin() {
        let mut c = carry(Method::GET, true);
        let from = target("https://api.test/start");
        let to = target("https://API.test:443/next?page=2");
        c.redirect(&from, &to, 302, KEEP).expect("allowed");
        assert!(c.carries_credential());
        assert_eq!(c.path_and_query(&to), "/next?page=2&api_key=q+s%26cret");
    }

    #[test]
    fn credential_is_dropped_for_good_when_the_origin_changes() {
        for to in [
            "https://other.test/x",
            "http://api.test/start",
            "https://api.test:8443/start",
            "https://203.0.113.10/start",
        ] {
            let mut c = carry(Method::GET, true);
            let from = target("https://api.test/start");
            let to = target(to);
            c.redirect(&from, &to, 302, KEEP).expect("allowed");
            assert!(!c.carries_credential(), "{to}");
            assert_eq!(c.path_and_query(&to), to.path_and_query, "{to}");
            // Back on the first origin, it does not come back.
            let back = target("https://api.test/again");
            c.redirect(&to, &back, 302, KEEP).expect("allowed");
            assert!(!c.carries_credential(), "back from {to}");
        }
    }

    #[test]
    fn policy_can_drop_the_credential_or_refuse_the_hop() {
        let from = target("https://api.test/start");
        let to = target("https://api.test/elsewhere");
        let mut c = carry(Method::GET, true);
        c.redirect(
            &from,
            &to,
            307,
            HopDecision::Allow {
                keep_credential: false,
            },
        )
        .expect("allowed");
        assert!(!c.carries_credential());
        let mut c = carry(Method::GET, true);
        let e = c
            .redirect(&from, &to, 307, HopDecision::Deny)
            .expect_err("denied");
        assert_eq!(e.code(), Code::PolicyDenied);
        assert_eq!(
            e.to_string(),
            "redirect to https://api.test refused by policy"
        );
    }

    #[test]
    fn methods_change_as_browsers_do() {
        let from = target("https://api.test/start");
        let to = target("https://api.test/next");
        let table = [
            (Method::POST, 301, Method::GET, true),
            (Method::POST, 302, Method::GET, true),
            (Method::POST, 303, Method::GET, true),
            (Method::PUT, 303, Method::GET, true),
            (Method::HEAD, 303, Method::HEAD, false),
            (Method::PUT, 302, Method::PUT, false),
            (Method::POST, 307, Method::POST, false),
            (Method::POST, 308, Method::POST, false),
        ];
        for (method, status, want, dropped) in table {
            let mut c = carry(method.clone(), false);
            c.redirect(&from, &to, status, KEEP).expect("allowed");
            assert_eq!(c.method, want, "{method} {status}");
            assert_eq!(c.body.is_empty(), dropped, "{method} {status}");
            let has_type = c
                .headers
                .iter()
                .any(|(n, _)| n == http::header::CONTENT_TYPE);
            assert_eq!(has_type, !dropped, "{method} {status}");
        }
    }

    #[test]
    fn error_codes_match_the_broker_contract() {
        let table: Vec<(OutboundError, Code)> = vec![
            (UrlError::Userinfo.into(), Code::BadRequest),
            (HeaderError::Host.into(), Code::BadRequest),
            (OutboundError::Method(Method::TRACE), Code::BadRequest),
            (
                ResolveError::DnsRejected {
                    name: "a.test".into(),
                    addr: "10.0.0.1".parse().expect("ip"),
                }
                .into(),
                Code::DnsRejected,
            ),
            (
                ResolveError::IpDenied {
                    addr: "127.0.0.1".parse().expect("ip"),
                }
                .into(),
                Code::PolicyDenied,
            ),
            (
                ResolveError::NoSuchName {
                    name: "a.test".into(),
                }
                .into(),
                Code::UpstreamError,
            ),
            (
                OutboundError::TooLarge {
                    host: "a.test".into(),
                    limit: 1,
                },
                Code::TooLarge,
            ),
            (
                OutboundError::Timeout {
                    host: "a.test".into(),
                    secs: 1,
                },
                Code::Timeout,
            ),
            (
                OutboundError::TooManyRedirects {
                    host: "a.test".into(),
                },
                Code::UpstreamError,
            ),
        ];
        for (e, code) in table {
            assert_eq!(e.code(), code, "{e}");
        }
    }
}
