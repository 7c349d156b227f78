//! The two ends of `cargo xtask bench guard`, run from the release build of xtask as
//! `xtask __guard-server` and `xtask __guard-client` (the bench starts them; a debug
//! build's TLS would be the bottleneck of a 1 GiB transfer).
//!
//! - The server: rustls over std threads, one thread per connection, on ADDR:443 (TLS,
//!   the test CA's certificate) and ADDR:80 (plain HTTP). One request per connection:
//!   `/big?n=N` answers N bytes, anything else `ok`; then it closes (TLS close_notify
//!   first), so the server, not the client, holds the TIME_WAIT.
//! - The client: one process making its connections one after another (no process
//!   spawn per connection to hide what is measured). A connection's latency runs from
//!   before `connect()` to the first byte of the response: TCP handshake (plus the
//!   CONNECT exchange through a proxy), full TLS 1.3 handshake (resumption off), the
//!   request, the first byte back. A bulk transfer's rate runs from before `connect()`
//!   to the last byte.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs as _},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    sync::Arc,
    thread,
    time::Instant,
};

use anyhow::{Context as _, bail, ensure};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};

/// What the server writes per call (and the client reads per call) in a bulk transfer.
const CHUNK: usize = 256 * 1024;

/// `xtask __guard-server ADDR CERT KEY`: serves until killed; prints `ready` once both
/// listeners are up.
pub fn server(addr: &str, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("{}", key.display()))?;
    let config = Arc::new(
        ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)?,
    );
    let tls = listen(addr, 443)?;
    let plain = listen(addr, 80)?;
    thread::spawn(move || {
        for s in plain.incoming().flatten() {
            thread::spawn(move || {
                let mut s = s;
                let _ = s.set_nodelay(true);
                let _ = answer(&mut s);
            });
        }
    });
    println!("ready");
    io::stdout().flush()?;
    for s in tls.incoming().flatten() {
        let config = config.clone();
        thread::spawn(move || -> anyhow::Result<()> {
            s.set_nodelay(true)?;
            let mut tls = rustls::StreamOwned::new(ServerConnection::new(config)?, s);
            answer(&mut tls)?;
            tls.conn.send_close_notify();
            tls.flush()?;
            Ok(())
        });
    }
    Ok(())
}

/// A listener with a deep accept queue (std's 128 would drop SYNs under a connect
/// loop and cost a 1 s retransmit).
fn listen(addr: &str, port: u16) -> anyhow::Result<TcpListener> {
    let l = TcpListener::bind((addr, port)).with_context(|| format!("binding {addr}:{port}"))?;
    // SAFETY: a valid listening socket.
    unsafe { libc::listen(l.as_raw_fd(), 4096) };
    Ok(l)
}

/// Reads one request head and answers it.
fn answer(s: &mut (impl Read + Write)) -> io::Result<()> {
    let head = read_head(s)?;
    let head = String::from_utf8_lossy(&head);
    let target = head.split(' ').nth(1).unwrap_or("/");
    let path = target
        .find("://")
        .and_then(|i| target[i + 3..].find('/').map(|j| &target[i + 3 + j..]))
        .unwrap_or(target);
    let n: u64 = path
        .strip_prefix("/big?n=")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if n == 0 {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")?;
        return s.flush();
    }
    write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
    )?;
    let chunk = vec![0x5a_u8; CHUNK];
    let mut left = n;
    while left > 0 {
        let k = left.min(CHUNK as u64) as usize;
        s.write_all(&chunk[..k])?;
        left -= k as u64;
    }
    s.flush()
}

/// Bytes up to and including the blank line ending a head (a few bytes past it at most:
/// nobody pipelines here).
fn read_head(s: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 64 * 1024 {
            return Err(io::Error::other("head too long"));
        }
    }
    Ok(head)
}

/// `xtask __guard-client`: connections one after another, results on stdout.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// HOST:PORT to connect to: the server (a name is resolved once, before timing), or
    /// the proxy with --proxy.
    #[arg(long)]
    connect: String,
    /// The name in SNI, Host, and the CONNECT or absolute-form request through a proxy.
    #[arg(long)]
    name: String,
    /// The CA that issued the server's certificate (TLS only).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// --connect is a forward proxy: CONNECT for TLS, an absolute-form GET for plain HTTP.
    #[arg(long)]
    proxy: bool,
    /// Plain HTTP (port 80) instead of TLS (port 443).
    #[arg(long)]
    plain: bool,
    /// Latency: this many connections, each one GET of a 2-byte answer. Prints
    /// `lat US US …` (µs to the first response byte, one per connection).
    #[arg(long, default_value_t = 0)]
    connections: usize,
    /// Bulk: one GET of this many bytes. Prints `bulk BYTES NS`.
    #[arg(long, default_value_t = 0)]
    bytes: u64,
}

pub fn client(a: &ClientArgs) -> anyhow::Result<()> {
    let addr: SocketAddr = a
        .connect
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", a.connect))?
        .next()
        .with_context(|| format!("{} has no address", a.connect))?;
    let tls = if a.plain {
        None
    } else {
        let ca = a.ca.as_deref().context("--ca is needed for TLS")?;
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading {}", ca.display()))?
        {
            roots.add(c?)?;
        }
        let mut config = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Every connection is a new one: a full handshake, as a first visit.
        config.resumption = rustls::client::Resumption::disabled();
        Some(Arc::new(config))
    };
    let conn = Conn {
        addr,
        name: &a.name,
        tls,
        proxy: a.proxy,
    };
    if a.connections > 0 {
        let mut lat = Vec::with_capacity(a.connections);
        for _ in 0..a.connections {
            let (first, body) = conn.get("/")?;
            ensure!(body == 2, "answer of {body} bytes, not `ok`");
            lat.push(format!("{:.1}", first * 1e6));
        }
        println!("lat {}", lat.join(" "));
    }
    if a.bytes > 0 {
        let start = Instant::now();
        let (_, body) = conn.get(&format!("/big?n={}", a.bytes))?;
        let ns = start.elapsed().as_nanos();
        ensure!(body == a.bytes, "got {body} of {} bytes", a.bytes);
        println!("bulk {body} {ns}");
    }
    Ok(())
}

/// How the client reaches the server.
struct Conn<'a> {
    addr: SocketAddr,
    name: &'a str,
    tls: Option<Arc<ClientConfig>>,
    proxy: bool,
}

impl Conn<'_> {
    /// One connection, one GET of `path`: (seconds to the first response byte, body
    /// bytes read to the end).
    fn get(&self, path: &str) -> anyhow::Result<(f64, u64)> {
        let start = Instant::now();
        let mut tcp =
            TcpStream::connect(self.addr).with_context(|| format!("connect {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let request_target = if self.proxy && self.tls.is_none() {
            format!("http://{}{path}", self.name)
        } else {
            path.to_owned()
        };
        let request = format!(
            "GET {request_target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.name
        );
        match &self.tls {
            None => exchange(&mut tcp, request.as_bytes(), start),
            Some(config) => {
                if self.proxy {
                    connect_through(&mut tcp, self.name)?;
                }
                let name = ServerName::try_from(self.name.to_owned())?;
                let conn = ClientConnection::new(config.clone(), name)?;
                let mut s = rustls::StreamOwned::new(conn, tcp);
                exchange(&mut s, request.as_bytes(), start)
            }
        }
    }
}

/// `CONNECT name:443` through a forward proxy; the stream then carries TLS.
fn connect_through(tcp: &mut TcpStream, name: &str) -> anyhow::Result<()> {
    write!(
        tcp,
        "CONNECT {name}:443 HTTP/1.1\r\nHost: {name}:443\r\n\r\n"
    )?;
    // Byte by byte: nothing past the blank line may be taken from the TLS stream.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ensure!(tcp.read(&mut b)? == 1, "the proxy closed during CONNECT");
        head.push(b[0]);
    }
    let line = String::from_utf8_lossy(&head);
    if !line.starts_with("HTTP/1.1 200") && !line.starts_with("HTTP/1.0 200") {
        bail!(
            "CONNECT refused: {}",
            line.lines().next().unwrap_or_default()
        );
    }
    Ok(())
}

/// Sends the request, reads the answer to the end: (seconds from `start` to the first
/// byte, body bytes).
fn exchange(
    s: &mut (impl Read + Write),
    request: &[u8],
    start: Instant,
) -> anyhow::Result<(f64, u64)> {
    s.write_all(request)?;
    s.flush()?;
    let mut buf = vec![0u8; CHUNK];
    let mut n = s.read(&mut buf)?;
    let first = start.elapsed().as_secs_f64();
    ensure!(n > 0, "closed before answering");
    // The head fits the first read or few; gather it, then count the rest.
    let mut head = buf[..n].to_vec();
    let body_start = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        n = s.read(&mut buf)?;
        ensure!(n > 0, "closed inside the answer's head");
        head.extend_from_slice(&buf[..n]);
    };
    ensure!(
        head.starts_with(b"HTTP/1.1 200"),
        "answer: {}",
        String::from_utf8_lossy(&head[..head.len().min(200)])
    );
    let mut body = (head.len() - body_start) as u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => body += k as u64,
            Err(e) => return Err(e).context("reading the answer"),
        }
    }
    Ok((first, body))
}
