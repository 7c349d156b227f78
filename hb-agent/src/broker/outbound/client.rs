//! One HTTP/1.1 exchange with an upstream, over a connection pinned to a validated
//! address.
//!
//! Owns: TCP connections to exactly the addresses [`super::resolve`] validated (the next
//! one on a connect failure), TLS over them (rustls with the ring provider, the host's
//! system roots from `rustls-native-certs` plus `broker.extra_ca_file`, the certificate
//! checked against the URL's host), hyper's HTTP/1.1 client, a small pool of idle
//! connections keyed by (scheme, host, address, port) and the [`Party`] whose calls
//! they carried, so that a caller's repeated calls skip TCP and TLS set-up (a
//! connection that carried a request body is closed after its answer, never pooled, see
//! [`Client::finish`]; one never carries two parties' calls), TLS sessions kept to be
//! resumed per party as the pool is ([`TlsConfigs`]), and the response size limit.
//!
//! Must never: connect to an address it was not given, send a request whose TLS peer
//! did not prove the URL's host, read more than the size limit, put a header value,
//! a query string or a body into an error, send a call on a connection that carried
//! a request body (bytes the upstream may not have read as that request's), or resume
//! for one party a TLS session another party's connection set up.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, Request, Response, header};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{
    OutboundError, Party,
    url::{Host, Scheme, Target},
};

/// Longest wait for one TCP connect (and, separately, one TLS handshake); the request's
/// overall deadline still applies.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Addresses of a name one connection tries at most, in the resolver's order. The
/// nameserver of an integration's host chooses how many there are: 3 500 fit one 64 KiB
/// answer, and trying each made one call 3 500 connects from the host, each address's
/// fate (refused, unreachable, silent, TLS) named in the caller's error (attack review
/// 37). APIs publish a few (eight, often).
const ADDRESSES_TRIED: usize = 8;
/// Idle connections kept per (party, scheme, host, address, port): enough for one
/// caller's concurrent calls with one credential to one busy API without reconnecting.
const IDLE_PER_KEY: usize = 64;
/// Idle connections kept in all.
const IDLE_TOTAL: usize = 256;
/// An idle connection older than this is closed rather than reused: servers drop idle
/// keep-alive connections after a while (nginx: 75 s), and a request on one they are
/// dropping fails.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Server names whose TLS sessions one party keeps to resume (rustls keeps a few
/// tickets per name): enough for the APIs one caller calls with one credential.
const SESSIONS_PER_PARTY: usize = 32;
/// Parties whose TLS sessions are kept; past that, one party's are forgotten (its next
/// connection to each name makes a full handshake) to make room.
const PARTIES_WITH_SESSIONS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read broker.extra_ca_file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("broker.extra_ca_file {path} is not a PEM bundle: {reason}")]
    Pem { path: String, reason: String },
    #[error("broker.extra_ca_file {path} holds no certificate")]
    Empty { path: String },
    #[error("broker.extra_ca_file {path}: certificate {index} cannot be a trust anchor: {reason}")]
    Anchor {
        path: String,
        index: usize,
        reason: String,
    },
    #[error("cannot set up TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The TLS client configuration, built once: roots parsed, ring provider, HTTP/1.1 ALPN,
/// no session resumption (each party gets its own session store, see [`TlsConfigs`]).
/// Returns it with the number of system roots found.
pub fn tls_config(
    extra_ca_file: &str,
) -> Result<(Arc<rustls::ClientConfig>, usize), TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    // The node's own store (SSL_CERT_FILE/SSL_CERT_DIR or the distribution's bundle), so
    // an operator's corporate roots are honoured; unreadable entries are skipped.
    let native = rustls_native_certs::load_native_certs();
    let (system, _ignored) = roots.add_parsable_certificates(native.certs);
    if !extra_ca_file.is_empty() {
        let path = extra_ca_file.to_owned();
        let pem = std::fs::read(&path).map_err(|source| TlsSetupError::Read {
            path: path.clone(),
            source,
        })?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsSetupError::Pem {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsSetupError::Empty { path });
        }
        for (index, cert) in certs.into_iter().enumerate() {
            roots.add(cert).map_err(|e| TlsSetupError::Anchor {
                path: path.clone(),
                index,
                reason: e.to_string(),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok((Arc::new(config), system))
}

/// The TLS client configuration each party's connections use: the base one, with a
/// session store of the party's own. One store for every connection (rustls' default)
/// would let a connection of one caller resume a session (a TLS 1.3 PSK, a TLS 1.2
/// ticket or session id, all sent in clear) that another caller's connection set up,
/// so the upstream, or whoever sees the handshakes, links the two callers' calls, which
/// hb keeps apart as the pool does ([`PoolKey`]). The agent's own calls (rotators,
/// verify probes) resume nothing: they carry every tenant's accounts' keys, are never
/// pooled, and are rare.
struct TlsConfigs {
    /// Without resumption: the agent's calls, and the base of the others.
    base: Arc<rustls::ClientConfig>,
    by_party: Mutex<HashMap<Party, Arc<rustls::ClientConfig>>>,
}

impl TlsConfigs {
    fn for_party(&self, party: &Party) -> Arc<rustls::ClientConfig> {
        if !party.pooled() {
            return self.base.clone();
        }
        let Ok(mut by_party) = self.by_party.lock() else {
            return self.base.clone();
        };
        if let Some(config) = by_party.get(party) {
            return config.clone();
        }
        if by_party.len() >= PARTIES_WITH_SESSIONS
            && let Some(old) = by_party.keys().next().cloned()
        {
            by_party.remove(&old);
        }
        let mut config = (*self.base).clone();
        config.resumption = rustls::client::Resumption::in_memory_sessions(SESSIONS_PER_PARTY);
        let config = Arc::new(config);
        by_party.insert(party.clone(), config.clone());
        config
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    party: Party,
    scheme: Scheme,
    host: Host,
    addr: IpAddr,
    port: u16,
}

struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

#[derive(Default)]
struct IdleConns {
    by_key: HashMap<PoolKey, Vec<Idle>>,
    total: usize,
}

/// What one exchange sends; rebuilt into a request for each attempt.
pub struct Outgoing<'a> {
    /// Whose calls the connection may carry (see [`Party`]).
    pub party: &'a Party,
    pub method: &'a Method,
    pub target: &'a Target,
    /// Origin form, with the credential query parameter when there is one.
    pub path_and_query: &'a str,
    pub headers: &'a [(HeaderName, HeaderValue)],
    pub credential_headers: &'a [(HeaderName, HeaderValue)],
    pub body: &'a Bytes,
}

/// A response read whole.
pub struct Fetched {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

pub struct Client {
    tls: TlsConfigs,
    idle: Mutex<IdleConns>,
    max_response: usize,
}

impl Client {
    pub fn new(tls: Arc<rustls::ClientConfig>, max_response: usize) -> Self {
        Self {
            tls: TlsConfigs {
                base: tls,
                by_party: Mutex::default(),
            },
            idle: Mutex::new(IdleConns::default()),
            max_response,
        }
    }

    /// Sends `out` to one of `addrs` (all validated) and reads the response whole.
    pub async fn exchange(
        &self,
        out: &Outgoing<'_>,
        addrs: &[IpAddr],
        held: Option<&mut super::Held>,
    ) -> Result<Fetched, OutboundError> {
        let target = out.target;
        let pooled = if out.party.pooled() {
            self.checkout(out.party, target, addrs).await
        } else {
            None
        };
        let (mut sender, key, reused) = match pooled {
            Some((sender, key)) => (sender, key, true),
            None => {
                let (sender, key) = self.connect(out.party, target, addrs).await?;
                (sender, key, false)
            }
        };
        match sender.send_request(build(out)?).await {
            Ok(response) => self.finish(response, sender, key, out, held).await,
            Err(e) if reused && retryable(&e, out.method) => {
                // The pooled connection died under us (the server closed it while idle):
                // once more, on a fresh one.
                let (mut fresh, key) = self.connect(out.party, target, addrs).await?;
                let response = fresh
                    .send_request(build(out)?)
                    .await
                    .map_err(|e| http_err(target, &e))?;
                self.finish(response, fresh, key, out, held).await
            }
            Err(e) => Err(http_err(target, &e)),
        }
    }

    /// Reads the response to `out` whole; the connection goes back to the pool only when
    /// its party's calls are pooled ([`Party::pooled`]) and `out` carried no body: a
    /// request that carried one leaves its connection closed, since an upstream that
    /// answers without reading the body (a GET handler, an early error) reads that body
    /// as the next request on the connection — one the caller wrote
    /// whole, unjudged, and that (a request head still waiting for its own body) would
    /// take the next call sent on the connection, another tenant's with its credential,
    /// as its body. Nor after an answer that has no body (HEAD, 1xx, 204, 304): an
    /// upstream that sends one anyway (a HEAD served by its GET code) leaves it on the
    /// connection, read as the answer to the connection's next call — the caller's own,
    /// maybe one with its credential, whose answer would then reach a later call that
    /// does not get a credentialed call's refusals (a part of a representation).
    async fn finish(
        &self,
        response: Response<Incoming>,
        sender: SendRequest<Full<Bytes>>,
        key: PoolKey,
        out: &Outgoing<'_>,
        mut held: Option<&mut super::Held>,
    ) -> Result<Fetched, OutboundError> {
        let target = out.target;
        let reusable = out.body.is_empty();
        let (parts, mut body) = response.into_parts();
        let too_large = || OutboundError::TooLarge {
            host: target.host.to_string(),
            limit: self.max_response,
        };
        // The length of the body a GET would have got, for an answer that has none
        // (RFC 9110 §8.6: HEAD, 1xx, 204, 304): it announces nothing to read or hold.
        let bodiless = out.method == http::Method::HEAD
            || parts.status.is_informational()
            || parts.status == http::StatusCode::NO_CONTENT
            || parts.status == http::StatusCode::NOT_MODIFIED;
        let announced = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|_| !bodiless);
        if announced.is_some_and(|n| n > self.max_response as u64) {
            // Dropping the sender closes the connection: the body is never read.
            return Err(too_large());
        }
        let reserve = announced.map_or(0, |n| {
            usize::try_from(n).unwrap_or(0).min(self.max_response)
        });
        // Counted before it is taken or kept (the room an announced length reserves,
        // then what comes past it): past its tenant's share the read stops.
        let mut count = |before: usize, after: usize| match held.as_deref_mut() {
            Some(h) => h
                .grow(after.saturating_sub(before) as u64)
                .map_err(|_| OutboundError::AnswerBudgetSpent),
            None => Ok(()),
        };
        count(0, reserve)?;
        let mut buf = BytesMut::with_capacity(reserve);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| http_err(target, &e))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > self.max_response {
                    return Err(too_large());
                }
                count(reserve.max(buf.len()), reserve.max(buf.len() + data.len()))?;
                buf.extend_from_slice(&data);
            }
        }
        if reusable && !bodiless && out.party.pooled() {
            self.checkin(key, sender);
        }
        Ok(Fetched {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: buf.freeze(),
        })
    }

    /// A pooled connection of `party`'s to one of `addrs`, ready for a request.
    async fn checkout(
        &self,
        party: &Party,
        target: &Target,
        addrs: &[IpAddr],
    ) -> Option<(SendRequest<Full<Bytes>>, PoolKey)> {
        for &addr in addrs {
            let key = PoolKey {
                party: party.clone(),
                scheme: target.scheme,
                host: target.host.clone(),
                addr,
                port: target.port,
            };
            loop {
                let idle = {
                    let mut guard = self.idle.lock().ok()?;
                    let IdleConns { by_key, total } = &mut *guard;
                    let found = by_key.get_mut(&key).and_then(Vec::pop);
                    if found.is_some() {
                        *total -= 1;
                    }
                    found
                };
                let Some(mut idle) = idle else { break };
                if idle.since.elapsed() > IDLE_TIMEOUT || idle.sender.is_closed() {
                    continue;
                }
                // Ready at once for a live connection; an error for one that closed.
                if idle.sender.ready().await.is_ok() {
                    return Some((idle.sender, key));
                }
            }
        }
        None
    }

    fn checkin(&self, key: PoolKey, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let Ok(mut guard) = self.idle.lock() else {
            return;
        };
        let IdleConns { by_key, total } = &mut *guard;
        if *total >= IDLE_TOTAL {
            // Make room by closing what has gone stale; if nothing has, drop this one.
            by_key.retain(|_, list| {
                let before = list.len();
                list.retain(|i| i.since.elapsed() <= IDLE_TIMEOUT && !i.sender.is_closed());
                *total -= before - list.len();
                !list.is_empty()
            });
            if *total >= IDLE_TOTAL {
                return;
            }
        }
        let list = by_key.entry(key).or_default();
        if list.len() < IDLE_PER_KEY {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
            *total += 1;
        }
    }

    /// A new connection to the first of `addrs` (of the first [`ADDRESSES_TRIED`]) that
    /// accepts, with TLS for https, pooled for `party`'s calls.
    async fn connect(
        &self,
        party: &Party,
        target: &Target,
        addrs: &[IpAddr],
    ) -> Result<(SendRequest<Full<Bytes>>, PoolKey), OutboundError> {
        let host = target.host.to_string();
        let mut failures = Vec::new();
        for &addr in addrs.iter().take(ADDRESSES_TRIED) {
            let sa = SocketAddr::new(addr, target.port);
            let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(sa)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    failures.push(format!("{sa}: {e}"));
                    continue;
                }
                Err(_) => {
                    failures.push(format!(
                        "{sa}: no answer within {}s",
                        CONNECT_TIMEOUT.as_secs()
                    ));
                    continue;
                }
            };
            // Requests are written in one go; waiting for ACKs (Nagle) only adds latency.
            let _ = tcp.set_nodelay(true);
            let sender = match target.scheme {
                Scheme::Http => handshake(TokioIo::new(tcp), &host).await?,
                Scheme::Https => {
                    let name = server_name(&target.host).map_err(|reason| OutboundError::Tls {
                        host: host.clone(),
                        addr: sa,
                        reason,
                    })?;
                    let connector = TlsConnector::from(self.tls.for_party(party));
                    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                        .await
                        .map_err(|_| OutboundError::Tls {
                            host: host.clone(),
                            addr: sa,
                            reason: format!("no handshake within {}s", CONNECT_TIMEOUT.as_secs()),
                        })?
                        .map_err(|e| OutboundError::Tls {
                            host: host.clone(),
                            addr: sa,
                            reason: e.to_string(),
                        })?;
                    handshake(TokioIo::new(tls), &host).await?
                }
            };
            let key = PoolKey {
                party: party.clone(),
                scheme: target.scheme,
                host: target.host.clone(),
                addr,
                port: target.port,
            };
            return Ok((sender, key));
        }
        Err(OutboundError::Connect {
            host,
            reason: failures.join("; "),
        })
    }
}

async fn handshake<T>(io: T, host: &str) -> Result<SendRequest<Full<Bytes>>, OutboundError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| OutboundError::Http {
            host: host.to_owned(),
            reason: e.to_string(),
        })?;
    // The connection's I/O runs on its own task until every sender is dropped.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// The name the certificate must carry: the URL's host, as a DNS name or an address.
fn server_name(host: &Host) -> Result<ServerName<'static>, String> {
    match host {
        Host::Name(n) => ServerName::try_from(n.clone())
            .map_err(|e| format!("{n} cannot be checked against a certificate: {e}")),
        Host::Ip(a) => Ok(ServerName::IpAddress((*a).into())),
    }
}

/// The request for one attempt. Fails only when the path cannot be an HTTP request
/// target (the error says so without repeating it: it may hold a credential).
fn build(out: &Outgoing<'_>) -> Result<Request<Full<Bytes>>, OutboundError> {
    let uri = http::Uri::try_from(out.path_and_query).map_err(|_| OutboundError::RequestTarget)?;
    let mut req = Request::new(Full::new(out.body.clone()));
    *req.method_mut() = out.method.clone();
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    let host =
        HeaderValue::from_str(&out.target.authority()).map_err(|_| OutboundError::RequestTarget)?;
    headers.insert(header::HOST, host);
    for (name, value) in out.headers.iter().chain(out.credential_headers) {
        headers.append(name.clone(), value.clone());
    }
    // The body must come back as bytes the scrubber reads (see `headers::outgoing`).
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if !out.body.is_empty() {
        // A server that answers without reading the body must not then read it as a
        // further request (another method, another `Host`, never judged): after a
        // `close` it may process no further request on the connection (RFC 9112 §9.6),
        // and the connection is not pooled either (see `finish`).
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(req)
}

/// Whether a failure on a reused connection may be retried on a fresh one: always when
/// nothing was sent, and for idempotent methods when the connection closed before an
/// answer (the server may have dropped the idle connection as we wrote; over TLS that
/// can surface as an end of stream or a reset underneath hyper rather than as hyper's
/// own "closed").
fn retryable(e: &hyper::Error, method: &Method) -> bool {
    e.is_canceled()
        || (method.is_idempotent()
            && (e.is_incomplete_message() || e.is_closed() || closed_underneath(e)))
}

/// An I/O error in `e`'s sources saying the peer went away (end of stream, reset,
/// broken pipe).
fn closed_underneath(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            )
        {
            return true;
        }
        source = s.source();
    }
    false
}

fn http_err(target: &Target, e: &hyper::Error) -> OutboundError {
    let mut reason = e.to_string();
    if let Some(source) = std::error::Error::source(e) {
        reason.push_str(": ");
        reason.push_str(&source.to_string());
    }
    OutboundError::Http {
        host: target.host.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request line carries the path in origin form, whatever the path looks like:
    /// a path that reads like an authority (`//evil.test/…`) or an absolute URL cannot
    /// make the request go, or be read as going, anywhere but the URL's host.
    #[test]
    fn request_target_is_origin_form_and_host_is_the_urls() {
        for url in [
            "https://allowed.test//evil.test/x",
            "https://allowed.test/http://evil.test/x",
            "https://allowed.test/%2F%2Fevil.test",
        ] {
            let target = Target::parse(url).expect("url");
            let path = target.path_and_query.clone();
            let body = Bytes::new();
            let out = Outgoing {
                party: &Party::Agent,
                method: &Method::GET,
                target: &target,
                path_and_query: &path,
                headers: &[],
                credential_headers: &[],
                body: &body,
            };
            let req = build(&out).expect("request");
            assert!(req.uri().authority().is_none(), "{url}: {}", req.uri());
            assert!(req.uri().scheme().is_none(), "{url}");
            assert!(req.uri().to_string().starts_with('/'), "{url}");
            assert_eq!(req.headers()[header::HOST], "allowed.test", "{url}");
            assert_eq!(req.headers()[header::ACCEPT_ENCODING], "identity", "{url}");
        }
    }

    fn caller(cgroup_id: u64, credential: Option<&str>) -> Party {
        Party::Caller {
            owner: crate::broker::handles::Owner::Sandbox { cgroup_id },
            credential: credential.map(Arc::from),
        }
    }

    /// A party's connections share one session store, no other party's: not another
    /// caller's, not the same caller's with another credential, not the agent's (which
    /// resume nothing); the stores kept stay within their bound.
    #[test]
    fn each_party_resumes_only_its_own_sessions() {
        let (base, _) = tls_config("").expect("config");
        let configs = TlsConfigs {
            base: base.clone(),
            by_party: Mutex::default(),
        };
        let a = configs.for_party(&caller(1, Some("cred_a")));
        assert!(Arc::ptr_eq(
            &a,
            &configs.for_party(&caller(1, Some("cred_a")))
        ));
        for other in [
            caller(2, Some("cred_a")),
            caller(1, Some("cred_b")),
            caller(1, None),
        ] {
            let theirs = configs.for_party(&other);
            assert!(!Arc::ptr_eq(&a, &theirs));
            assert!(!Arc::ptr_eq(&base, &theirs));
        }
        assert!(Arc::ptr_eq(&base, &configs.for_party(&Party::Agent)));
        for id in 0..2 * PARTIES_WITH_SESSIONS as u64 {
            configs.for_party(&caller(id, None));
        }
        let kept = configs.by_party.lock().expect("lock").len();
        assert!(kept <= PARTIES_WITH_SESSIONS, "{kept}");
    }
}
