//! Forwarding to the upstream resolvers.
//!
//! A small pool of UDP sockets stays open (each bound once to a kernel-chosen random
//! port), so a query costs one send and one receive instead of a socket set-up. Each
//! query gets a random 16-bit id, and a reply is taken only from the server it was sent
//! to, with that id and the very question asked — anything else is dropped. A truncated
//! reply is asked again over TCP, whose reply is held to the same id and question
//! ([`answering`]). A server that times out or answers SERVFAIL/REFUSED
//! hands over to the next one.
//!
//! Must never: accept a reply for another query, or wait without a deadline.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, MessageType, Query, ResponseCode},
    rr::{Name, RecordType},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpStream, UdpSocket},
    sync::oneshot,
};

/// Sockets per address family in the pool.
const POOL: usize = 8;
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream answered")]
    NoAnswer,
    #[error("cannot open an upstream socket")]
    Socket(#[source] std::io::Error),
    #[error("cannot read {path}")]
    ResolvConf {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} lists no nameserver")]
    NoServers(&'static str),
}

type Waiters = Mutex<HashMap<(usize, u16), oneshot::Sender<Vec<u8>>>>;

pub struct Upstream {
    servers: Vec<SocketAddr>,
    socks: Vec<Arc<UdpSocket>>,
    /// Indexes into `socks` of the IPv4 and the IPv6 sockets.
    v4: Vec<usize>,
    v6: Vec<usize>,
    waiters: Arc<Waiters>,
    next: AtomicUsize,
}

/// Nameservers of the host's /etc/resolv.conf (for `upstreams = ["system"]`).
pub fn system_servers() -> Result<Vec<SocketAddr>, UpstreamError> {
    const PATH: &str = "/etc/resolv.conf";
    let text = std::fs::read_to_string(PATH)
        .map_err(|source| UpstreamError::ResolvConf { path: PATH, source })?;
    let servers: Vec<SocketAddr> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect();
    if servers.is_empty() {
        return Err(UpstreamError::NoServers(PATH));
    }
    Ok(servers)
}

/// Random query ids, drawn from the kernel 256 at a time (one getrandom call per 256
/// queries instead of one per query).
fn random_u16() -> u16 {
    use std::cell::RefCell;
    thread_local! {
        static POOL: RefCell<(Vec<u16>, usize)> = const { RefCell::new((Vec::new(), 0)) };
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let (ids, next) = &mut *pool;
        if *next >= ids.len() {
            let mut bytes = [0u8; 512];
            // SAFETY: valid buffer of the given length; getrandom fills it or fails.
            let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
            if n != bytes.len() as isize {
                // Fall back to the clock's low bits; ids are a defence in depth, not the
                // only one (the reply must also come from the server and match the question).
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0);
                return (t ^ (t >> 16)) as u16;
            }
            *ids = bytes
                .chunks_exact(2)
                .map(|c| u16::from_ne_bytes([c[0], c[1]]))
                .collect();
            *next = 0;
        }
        let id = ids[*next];
        *next += 1;
        id
    })
}

impl Upstream {
    pub async fn new(servers: Vec<SocketAddr>) -> Result<Arc<Self>, UpstreamError> {
        let waiters: Arc<Waiters> = Arc::new(Mutex::new(HashMap::new()));
        let need_v4 = servers.iter().any(SocketAddr::is_ipv4);
        let need_v6 = servers.iter().any(SocketAddr::is_ipv6);
        let mut socks = Vec::new();
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for (need, any) in [
            (need_v4, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            (need_v6, IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        ] {
            if !need {
                continue;
            }
            for _ in 0..POOL {
                let sock = UdpSocket::bind(SocketAddr::new(any, 0))
                    .await
                    .map_err(UpstreamError::Socket)?;
                if any.is_ipv4() { &mut v4 } else { &mut v6 }.push(socks.len());
                socks.push(Arc::new(sock));
            }
        }
        for (idx, sock) in socks.iter().enumerate() {
            tokio::spawn(read_replies(
                idx,
                sock.clone(),
                servers.clone(),
                waiters.clone(),
            ));
        }
        Ok(Arc::new(Self {
            servers,
            socks,
            v4,
            v6,
            waiters,
            next: AtomicUsize::new(0),
        }))
    }

    /// Asks the upstreams for `name`/`qtype`; returns the first usable reply.
    pub async fn query(&self, name: &Name, qtype: RecordType) -> Result<Message, UpstreamError> {
        let question = Query::query(name.clone(), qtype);
        for attempt in 0..self.servers.len() * 2 {
            let server = self.servers[attempt % self.servers.len()];
            let Some(reply) = self.ask_udp(server, &question).await else {
                continue;
            };
            let reply = if reply.metadata.truncation {
                match ask_tcp(server, &question).await {
                    Some(r) => r,
                    None => continue,
                }
            } else {
                reply
            };
            match reply.metadata.response_code {
                ResponseCode::ServFail | ResponseCode::Refused => continue,
                _ => return Ok(reply),
            }
        }
        Err(UpstreamError::NoAnswer)
    }

    async fn ask_udp(&self, server: SocketAddr, question: &Query) -> Option<Message> {
        let family = if server.is_ipv4() { &self.v4 } else { &self.v6 };
        let idx = *family.get(self.next.fetch_add(1, Ordering::Relaxed) % family.len().max(1))?;
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut w = self.waiters.lock().ok()?;
            let mut id = random_u16();
            while w.contains_key(&(idx, id)) {
                id = random_u16();
            }
            w.insert((idx, id), tx);
            id
        };
        let bytes = request(id, question).to_vec().ok()?;
        let sent = self.socks[idx].send_to(&bytes, server).await;
        let got = match sent {
            Ok(_) => tokio::time::timeout(TIMEOUT, rx)
                .await
                .ok()
                .and_then(Result::ok),
            Err(_) => None,
        };
        if let Ok(mut w) = self.waiters.lock() {
            w.remove(&(idx, id));
        }
        answering(&got?, id, question)
    }
}

/// The query message we send: our id, recursion desired, EDNS for large UDP answers.
fn request(id: u16, question: &Query) -> Message {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(question.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    m.edns = Some(edns);
    m
}

/// `bytes` read as the reply to our query `id` for `question`, over UDP or TCP alike: a
/// response with that id and that one question (type, and name in any case); `None` for
/// anything else.
fn answering(bytes: &[u8], id: u16, question: &Query) -> Option<Message> {
    let reply = Message::from_vec(bytes).ok()?;
    let answers = reply.metadata.id == id
        && reply.metadata.message_type == MessageType::Response
        && matches!(reply.queries.as_slice(), [q] if q.query_type() == question.query_type()
            && q.name().to_ascii().eq_ignore_ascii_case(&question.name().to_ascii()));
    answers.then_some(reply)
}

async fn ask_tcp(server: SocketAddr, question: &Query) -> Option<Message> {
    let id = random_u16();
    let work = async {
        let mut stream = TcpStream::connect(server).await.ok()?;
        let bytes = request(id, question).to_vec().ok()?;
        let len = u16::try_from(bytes.len()).ok()?;
        stream.write_all(&len.to_be_bytes()).await.ok()?;
        stream.write_all(&bytes).await.ok()?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.ok()?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).await.ok()?;
        Some(buf)
    };
    let reply = tokio::time::timeout(TIMEOUT, work).await.ok()??;
    answering(&reply, id, question)
}

/// Hands each reply to the query waiting for it; drops replies from elsewhere.
async fn read_replies(
    idx: usize,
    sock: Arc<UdpSocket>,
    servers: Vec<SocketAddr>,
    waiters: Arc<Waiters>,
) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        if n < 12 || !servers.contains(&from) {
            continue;
        }
        let id = u16::from_be_bytes([buf[0], buf[1]]);
        let waiter = waiters.lock().ok().and_then(|mut w| w.remove(&(idx, id)));
        if let Some(tx) = waiter {
            let _ = tx.send(buf[..n].to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use super::*;

    /// A reply is ours only with our id and our question, whichever transport it came by.
    #[test]
    fn a_reply_needs_our_id_and_our_question() {
        let question = Query::query(
            Name::from_str("www.wild.test.").expect("name"),
            RecordType::A,
        );
        let reply = |id: u16, name: &str, qtype: RecordType| {
            let mut m = request(
                id,
                &Query::query(Name::from_str(name).expect("name"), qtype),
            );
            m.metadata.message_type = MessageType::Response;
            m.to_vec().expect("wire")
        };
        assert!(answering(&reply(7, "WWW.wild.test.", RecordType::A), 7, &question).is_some());
        assert!(answering(&reply(8, "www.wild.test.", RecordType::A), 7, &question).is_none());
        assert!(answering(&reply(7, "www.wild.test.", RecordType::AAAA), 7, &question).is_none());
        assert!(answering(&reply(7, "victim.wild.test.", RecordType::A), 7, &question).is_none());
        let asked = request(7, &question).to_vec().expect("wire");
        assert!(
            answering(&asked, 7, &question).is_none(),
            "a query is no reply"
        );
        assert!(answering(&[0, 7, 0x81], 7, &question).is_none());
    }
}
