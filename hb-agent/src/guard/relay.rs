//! Bytes both ways once the first flight passed.
//!
//! TLS: each direction is spliced through a pipe (`splice(2)`: the bytes stay in the
//! kernel) until that side's end of stream, which is passed on as a half-close
//! (`shutdown(SHUT_WR)`), so a client that closes its sending side still gets its
//! answer. The client's side is read in 64 KiB reads, each record header judged as it
//! streams by (and its handshake messages, until it encrypts) so no later ClientHello
//! names another host (`tls_records`). An error or a refusal on either side resets
//! both.
//!
//! Plain HTTP: requests are read head by head, each judged before it is sent, each body
//! forwarded exactly as far as its framing says (`Content-Length`, spliced; or chunk by
//! chunk, the data spliced), so the next head is found where the server will find it.
//! A body is forwarded unjudged, and a server that reads only part of it (a size cap, an
//! answer before the body) would read the rest as the next request: a request with a
//! body goes marked `Connection: close` (`http::with_connection_close`), nothing the
//! client sends after it goes on, and the final response to it reaches the client marked
//! the same, after which the guard closes. Its first line is looked at too (one that
//! reads as a request line resets the connection: `http::body_start`), for a server
//! that ignores `close`. Responses are read head by head for where each ends (behind
//! earlier answers and 1xx interim ones), their bodies spliced. A refused request stops
//! the requests: the upstream gets a half-close, the responses still in flight are
//! finished, then the client reads the guard's 403.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::atomic::Ordering,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
};

use super::{
    Inner, Refusal,
    decide::PolicyRules,
    flow::Origin,
    http::{self, Chunks, Framing},
    splice::HandOver,
    tls_records::{self, Step, Watch},
};

/// Closes a connection with a reset (its other side failed, or the upstream could not be
/// reached): the peer sees the failure it would have seen directly, not a clean end.
pub fn reset(client: TcpStream) {
    #[expect(
        deprecated,
        reason = "a zero linger resets at once; only a positive one blocks the closing thread"
    )]
    let _ = client.set_linger(Some(Duration::ZERO));
    drop(client);
}

/// A passed TLS connection: the client's records judged by their headers (and, until
/// encryption starts, its handshake messages: see `tls_records`) and spliced on, the
/// server's spliced back, until both ends closed. With `guard.sockmap`, a connection
/// whose server commits to TLS 1.3 is handed to the kernel after its ServerHello
/// (`splice`).
pub async fn tls(
    ctx: &Ctx<'_>,
    client: TcpStream,
    upstream: TcpStream,
    first: Vec<u8>,
    name: String,
) {
    let mut side = ClientSide {
        held: first,
        watch: Watch::new(name),
        scan: RecordScan::default(),
    };
    if let Some(splicer) = &ctx.inner.splicer {
        match until_server_commits(ctx, &client, &upstream, &mut side).await {
            Ok(true) => match splicer.hand_over(&client, &upstream) {
                Ok(handed) => {
                    ctx.inner.stats.kernel.fetch_add(1, Ordering::Relaxed);
                    splicer.finish(&handed, client, upstream).await;
                    return;
                }
                Err(HandOver::Broken) => {
                    reset(client);
                    reset(upstream);
                    return;
                }
                Err(HandOver::Declined) => {
                    ctx.inner
                        .stats
                        .kernel_declined
                        .fetch_add(1, Ordering::Relaxed);
                }
            },
            Ok(false) => {}
            Err(_) => {
                reset(client);
                reset(upstream);
                return;
            }
        }
    }
    // The first flight goes upstream before anything else is set up: the server works
    // on it while the pipe is made.
    let down = Pipe::default();
    if side.forward(ctx, &upstream).await.is_err() || down.ends().is_err() {
        reset(client);
        reset(upstream);
        return;
    }
    let relayed = tokio::try_join!(
        forward_client_records(ctx, &client, &upstream, side),
        splice_one_way(&upstream, &client, &down),
    );
    if relayed.is_err() {
        // One side reset (or failed, or was refused): the other gets a reset too, not a
        // clean end that would pass for a complete answer.
        reset(client);
        reset(upstream);
    }
}

/// Relays both ways in user space (the client's records judged) until the server's first
/// handshake message: `true` when it committed the server to TLS 1.3 (everything read
/// was written on, so the kernel may take over), `false` when the connection stays on
/// the user-space relay (another version, a HelloRetryRequest, an end of stream: the
/// relay picks up where this stopped).
async fn until_server_commits(
    ctx: &Ctx<'_>,
    client: &TcpStream,
    upstream: &TcpStream,
    side: &mut ClientSide,
) -> std::io::Result<bool> {
    side.forward(ctx, upstream).await?;
    let mut server = Vec::with_capacity(8 * 1024);
    loop {
        tokio::select! {
            r = upstream.readable() => {
                r?;
                let start = server.len();
                server.reserve(READ_BYTES);
                match upstream.try_read_buf(&mut server) {
                    Ok(0) => return Ok(false),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
                write_all_to(client, &server[start..]).await?;
                match super::tls::server_hello(&server) {
                    Some(super::tls::ServerHello::Tls13) => {
                        // Whatever the client sends from now on is past judging: a
                        // TLS 1.3 server reads no other ClientHello (also when the
                        // connection stays here for want of room in the kernel's maps).
                        side.scan.skip_judging();
                        side.forward(ctx, upstream).await?;
                        return Ok(true);
                    }
                    Some(super::tls::ServerHello::Other) => return Ok(false),
                    None if server.len() > super::tls::MAX_HELLO => return Ok(false),
                    None => {}
                }
            }
            r = client.readable() => {
                r?;
                side.held.reserve(READ_BYTES);
                match client.try_read_buf(&mut side.held) {
                    Ok(0) => return Ok(false),
                    Ok(_) => side.forward(ctx, upstream).await?,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// The client → server direction of a TLS connection: what was read and not sent on
/// yet, and where its record stream stands.
struct ClientSide {
    held: Vec<u8>,
    watch: Watch,
    scan: RecordScan,
}

impl ClientSide {
    /// Judges what `held` holds and writes on what may go (a refusal is counted and
    /// reported, and ends the connection unless the policy only audits).
    async fn forward(&mut self, ctx: &Ctx<'_>, upstream: &TcpStream) -> std::io::Result<()> {
        let fits = |n: &str| {
            ctx.inner
                .judge
                .name_fits(ctx.policy, n, ctx.origin.dst.ip())
        };
        let ready = match self.scan.advance(&self.held, &mut self.watch, fits) {
            Ok(ready) => ready,
            Err((reason, name)) => {
                ctx.inner
                    .refused(ctx.policy, ctx.origin, &Refusal::closed(reason, name));
                if !ctx.policy.audit {
                    return Err(std::io::Error::other("refused"));
                }
                self.scan.skip_judging();
                self.held.len()
            }
        };
        write_all_to(upstream, &self.held[..ready]).await?;
        self.held.drain(..ready);
        Ok(())
    }
}

/// The client → server direction of a TLS connection: read in large reads, each record
/// header judged as it streams by (a plaintext handshake record held until it is whole
/// and judged), and the bytes forwarded unchanged, one write per read. `side.held`
/// starts with what was read and not sent on yet.
async fn forward_client_records(
    ctx: &Ctx<'_>,
    client: &TcpStream,
    upstream: &TcpStream,
    mut side: ClientSide,
) -> std::io::Result<()> {
    loop {
        side.forward(ctx, upstream).await?;
        side.held.reserve(READ_BYTES);
        let got = loop {
            client.readable().await?;
            match client.try_read_buf(&mut side.held) {
                Ok(got) => break got,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        };
        if got == 0 {
            if side.held.is_empty() && side.scan.at_record_start() {
                // SAFETY: shutdown of a socket the caller's stream owns.
                unsafe { libc::shutdown(upstream.as_raw_fd(), libc::SHUT_WR) };
                return Ok(());
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Bytes read from a TLS client at a time.
const READ_BYTES: usize = 64 * 1024;

/// Where a client's record stream stands between reads.
#[derive(Default)]
struct RecordScan {
    /// Body bytes of a passed record still to come (forwarded without reading).
    skip: usize,
    /// An audit-mode policy passed a refusal, or the server committed to TLS 1.3 (see
    /// `splice`): the rest streams unjudged.
    unjudged: bool,
}

impl RecordScan {
    /// How many bytes at the start of `held` may go upstream now: every whole header
    /// judged, every plaintext handshake record whole and judged. Bytes after that wait
    /// for more input.
    fn advance(
        &mut self,
        held: &[u8],
        watch: &mut Watch,
        fits: impl Fn(&str) -> bool,
    ) -> Result<usize, (super::decide::Reason, Option<String>)> {
        if self.unjudged {
            return Ok(held.len());
        }
        let mut at = 0;
        loop {
            if self.skip > 0 {
                let take = self.skip.min(held.len() - at);
                at += take;
                self.skip -= take;
                if self.skip > 0 {
                    return Ok(at);
                }
            }
            if held.len() - at < 5 {
                return Ok(at);
            }
            let kind = held[at];
            let len = usize::from(u16::from_be_bytes([held[at + 3], held[at + 4]]));
            let whole = watch.wants_body(kind) && len <= tls_records::MAX_RECORD;
            if whole && held.len() - at < 5 + len {
                return Ok(at);
            }
            let body = if whole {
                &held[at + 5..at + 5 + len]
            } else {
                &[][..]
            };
            if let Step::Refuse(reason, name) = watch.record(kind, len, body, &fits) {
                return Err((reason, name));
            }
            at += 5;
            self.skip = len;
        }
    }

    fn skip_judging(&mut self) {
        self.unjudged = true;
    }

    fn at_record_start(&self) -> bool {
        self.skip == 0 || self.unjudged
    }
}

/// Writes all of `buf` to a shared stream.
async fn write_all_to(stream: &TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes the next close of `fd` a reset.
///
/// # Safety
/// `fd` must be an open socket.
unsafe fn set_zero_linger(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the caller's promise; `linger` is a valid option value of its size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// A pipe the bytes of one direction pass through inside the kernel, made when bytes are
/// first spliced: a plain-HTTP connection whose bodies all came with their heads never
/// needs one.
#[derive(Default)]
struct Pipe(std::sync::OnceLock<Ends>);

impl Pipe {
    /// The pipe's two ends, made on the first call.
    fn ends(&self) -> std::io::Result<&Ends> {
        if let Some(ends) = self.0.get() {
            return Ok(ends);
        }
        let ends = Ends::open()?;
        Ok(self.0.get_or_init(|| ends))
    }
}

/// The two ends of a [`Pipe`].
struct Ends {
    read: OwnedFd,
    write: OwnedFd,
}

impl Ends {
    fn open() -> std::io::Result<Self> {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid out-array of two ints.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A larger pipe moves more per call; the default (64 KiB) stays if refused.
        // SAFETY: plain fcntl on a descriptor we own.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
        Ok(Self { read, write })
    }
}

/// Bytes asked of one `splice` call, and the pipe size asked for.
const PIPE_BYTES: libc::c_int = 256 * 1024;

/// `splice(2)` between two descriptors, never blocking.
fn splice(from: RawFd, to: RawFd, len: usize) -> std::io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (owned by the
    // caller's streams and pipe); null offsets: both ends are streams.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
}

/// One direction, `from` → pipe → `to`, until `from`'s end of stream, which `to` gets as
/// a half-close.
async fn splice_one_way(from: &TcpStream, to: &TcpStream, pipe: &Pipe) -> std::io::Result<()> {
    splice_until(from, to, pipe, None).await?;
    // SAFETY: shutdown of a socket the caller's stream owns.
    unsafe { libc::shutdown(to.as_raw_fd(), libc::SHUT_WR) };
    Ok(())
}

/// Moves bytes `from` → pipe → `to` until `from`'s end of stream, or until `limit`
/// bytes moved (an end of stream before that is an error). The bytes never enter user
/// space; the pipe is empty between rounds, so the guard holds nothing of its own.
async fn splice_until(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe,
    limit: Option<u64>,
) -> std::io::Result<()> {
    use tokio::io::Interest;
    let mut left = limit;
    if left == Some(0) {
        return Ok(());
    }
    let pipe = pipe.ends()?;
    loop {
        let want = match left {
            Some(0) => return Ok(()),
            Some(n) => usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(PIPE_BYTES as usize),
            None => PIPE_BYTES as usize,
        };
        let n = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                splice(from.as_raw_fd(), pipe.write.as_raw_fd(), want)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return match left {
                None => Ok(()),
                Some(_) => Err(std::io::ErrorKind::UnexpectedEof.into()),
            };
        }
        if let Some(l) = &mut left {
            *l -= n as u64;
        }
        let mut queued = n;
        while queued > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_raw_fd(), to.as_raw_fd(), queued)
            }) {
                Ok(m) => queued -= m,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// What a passed connection is judged with after its first flight.
pub struct Ctx<'a> {
    pub inner: &'a Inner,
    pub policy: &'a PolicyRules,
    pub origin: &'a Origin,
}

/// How the request side ended.
enum Requests {
    /// The client closed its sending side between requests.
    Ended,
    /// A request with a body went, marked `Connection: close`: nothing the client sends
    /// after it goes on.
    Closed,
    /// A request was refused (already counted and reported).
    Refused(Refusal),
    /// A read or write failed, or a request stalled mid-head.
    Broken,
}

/// How the response side ended.
enum Responses {
    /// The server's end of stream.
    Ended,
    /// The final response to the request marked `Connection: close` went.
    Closed,
    /// A read or write failed (a reset), or a response broke off.
    Broken,
}

/// What the response side knows of a forwarded request, sent before its head goes (so
/// it is there when the answer comes).
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// A HEAD: its answer has no body, whatever its head says.
    head: bool,
    /// Marked `Connection: close`: the connection ends after its final response.
    last: bool,
}

/// A passed plain-HTTP connection. `buf` holds the first request head (and whatever
/// followed it).
pub async fn http(ctx: &Ctx<'_>, client: TcpStream, upstream: TcpStream, buf: Vec<u8>) {
    let (client_fd, upstream_fd) = (client.as_raw_fd(), upstream.as_raw_fd());
    let (up, down) = (Pipe::default(), Pipe::default());
    let (mut client_rx, client_tx) = client.into_split();
    let (upstream_rx, mut upstream_tx) = upstream.into_split();
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    // Responses are not judged: each head is read for where the response ends, the
    // bytes spliced.
    let responses = async move {
        let (mut upstream_rx, mut client_tx) = (upstream_rx, client_tx);
        let end = forward_responses(&mut upstream_rx, &mut client_tx, &down, sent_rx).await;
        (end, client_tx)
    };
    tokio::pin!(responses);
    let requests = forward_requests(ctx, &mut client_rx, &mut upstream_tx, &up, buf, sent_tx);
    // The server closing ends the connection even while the client is idle between
    // requests.
    let outcome = tokio::select! {
        outcome = requests => outcome,
        (end, client_tx) = &mut responses => {
            end_responses(ctx, end, client_tx, &mut client_rx, client_fd).await;
            return;
        }
    };
    match outcome {
        Requests::Ended => {
            let _ = upstream_tx.shutdown().await;
            let (end, client_tx) = responses.await;
            end_responses(ctx, end, client_tx, &mut client_rx, client_fd).await;
        }
        Requests::Closed => {
            // What the client sends now is read and dropped (a client that pipelined
            // learns from `Connection: close` to send it again on a new connection); its
            // end of stream is passed on. No half-close of the guard's own: a server may
            // take one for a client that gave up and abandon the request.
            let (end, client_tx) = tokio::select! {
                r = &mut responses => r,
                eof = discard(&mut client_rx) => {
                    if eof {
                        let _ = upstream_tx.shutdown().await;
                        responses.await
                    } else {
                        // SAFETY: the descriptors belong to `client_rx` and
                        // `upstream_tx`, alive here.
                        unsafe {
                            set_zero_linger(client_fd);
                            set_zero_linger(upstream_fd);
                        }
                        upstream_tx.forget();
                        return;
                    }
                }
            };
            end_responses(ctx, end, client_tx, &mut client_rx, client_fd).await;
        }
        Requests::Refused(refusal) => {
            let _ = upstream_tx.shutdown().await;
            // The responses to the requests that passed, then the refusal.
            if let Ok((Responses::Ended, mut client_tx)) =
                tokio::time::timeout(ctx.inner.first_flight, responses).await
            {
                let detail = refusal.http_detail.unwrap_or_default();
                let _ = client_tx
                    .write_all(&http::forbidden(refusal.reason.name(), &detail))
                    .await;
                let _ = client_tx.shutdown().await;
            }
        }
        Requests::Broken => {
            // A request broke off (a reset, a stalled head): both sides learn it.
            // SAFETY: the descriptors belong to `client_rx` and `upstream_tx`, alive here.
            unsafe {
                set_zero_linger(client_fd);
                set_zero_linger(upstream_fd);
            }
            upstream_tx.forget();
        }
    }
}

/// Ends the response direction: the server's clean end (or the last response) becomes
/// the client's, a reset (or failure) a reset. After the last response the client's
/// bytes are read and dropped for a while before the close, so a client still sending
/// (a body the server answered early) reads its answer rather than a reset.
async fn end_responses(
    ctx: &Ctx<'_>,
    end: Responses,
    mut client_tx: OwnedWriteHalf,
    client_rx: &mut OwnedReadHalf,
    client_fd: RawFd,
) {
    match end {
        Responses::Ended => {
            let _ = client_tx.shutdown().await;
        }
        Responses::Closed => {
            let _ = client_tx.shutdown().await;
            let _ = tokio::time::timeout(ctx.inner.first_flight, discard(client_rx)).await;
        }
        Responses::Broken => {
            // SAFETY: the descriptor belongs to `client_tx`'s stream, alive here.
            unsafe { set_zero_linger(client_fd) };
            // No FIN first (a write half shuts down when dropped): the reset alone.
            client_tx.forget();
        }
    }
}

/// Reads and drops what the client sends: `true` at its end of stream, `false` on an
/// error.
async fn discard(client: &mut OwnedReadHalf) -> bool {
    let mut sink = vec![0; 16 * 1024];
    loop {
        match client.read(&mut sink).await {
            Ok(0) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// Judges and forwards requests until the client stops sending, one is refused, or one
/// with a body went (marked `Connection: close`).
async fn forward_requests(
    ctx: &Ctx<'_>,
    client: &mut OwnedReadHalf,
    upstream: &mut OwnedWriteHalf,
    pipe: &Pipe,
    mut buf: Vec<u8>,
    sent: std::sync::mpsc::Sender<Sent>,
) -> Requests {
    let mut first = true;
    loop {
        // Between requests a kept-alive connection may idle as long as the server lets
        // it; once a head has begun it must arrive whole in time.
        if buf.is_empty() {
            match client.read_buf(&mut buf).await {
                Ok(0) => return Requests::Ended,
                Ok(_) => {}
                Err(_) => return Requests::Broken,
            }
        }
        if !read_head(ctx, client, &mut buf).await {
            return Requests::Broken;
        }
        let head = match ctx.inner.judge_request(ctx.policy, ctx.origin, &buf) {
            Ok(head) => head,
            Err(refusal) => {
                // The first request was judged (and reported) before the upstream was
                // opened; a later one is reported here.
                if !first {
                    ctx.inner.refused(ctx.policy, ctx.origin, &refusal);
                }
                if !ctx.policy.audit {
                    return Requests::Refused(refusal);
                }
                match http::parse_head(&buf) {
                    Ok(Some(head)) => head,
                    _ => return Requests::Refused(refusal),
                }
            }
        };
        first = false;
        // A body is forwarded unjudged, and a server that reads only part of it (a size
        // cap, an early answer) reads the rest as the next request: after a body the
        // server is told to read no further request, and nothing more goes on.
        let last = head.has_body();
        let _ = sent.send(Sent {
            head: head.method == "HEAD",
            last,
        });
        let written = if last {
            upstream
                .write_all(&http::with_connection_close(&buf[..head.len]))
                .await
        } else {
            upstream.write_all(&buf[..head.len]).await
        };
        if written.is_err() {
            return Requests::Broken;
        }
        buf.drain(..head.len);
        // A server that ignores `close` and answers before reading the body reads it
        // as the next request, which would go unjudged: a body that starts like one
        // goes nowhere.
        if last && !body_starts_no_request(ctx, client, &mut buf, head.framing).await {
            return Requests::Broken;
        }
        let forwarded = match head.framing {
            Framing::None => true,
            Framing::Length(n) => forward_length(client, upstream, pipe, &mut buf, n).await,
            Framing::Chunked => {
                forward_chunked(
                    client,
                    upstream,
                    pipe,
                    &mut buf,
                    Some(ctx.inner.first_flight),
                )
                .await
            }
        };
        if !forwarded {
            return Requests::Broken;
        }
        if last {
            return Requests::Closed;
        }
    }
}

/// Forwards responses, each head read for where its response ends (behind the answers
/// to earlier requests and any interim 1xx), the bodies spliced, until the server's end
/// of stream or the final response to the request marked `Connection: close` — which
/// reaches the client marked so too (a server need not echo it), so the client opens a
/// new connection for its next request rather than writing into this one. A head the
/// guard cannot frame passes with everything after it as it comes.
async fn forward_responses(
    upstream: &mut OwnedReadHalf,
    client: &mut OwnedWriteHalf,
    pipe: &Pipe,
    sent: std::sync::mpsc::Receiver<Sent>,
) -> Responses {
    let mut buf = Vec::new();
    loop {
        let head = loop {
            match http::parse_response_head(&buf) {
                Ok(Some(head)) => break Some(head),
                Ok(None) => {}
                Err(_) => break None,
            }
            buf.reserve(RESPONSE_READ);
            match upstream.read_buf(&mut buf).await {
                Ok(0) if buf.is_empty() => return Responses::Ended,
                // A head cut short: the client gets what came.
                Ok(0) => break None,
                Ok(_) => {}
                Err(_) => return Responses::Broken,
            }
        };
        let Some(head) = head else {
            return pass_the_rest(upstream, client, pipe, &buf).await;
        };
        if head.interim() {
            if client.write_all(&buf[..head.len]).await.is_err() {
                return Responses::Broken;
            }
            buf.drain(..head.len);
            continue;
        }
        // The request this answers went before its answer came (an answer to nothing is
        // framed as one to GET).
        let answers = sent.try_recv().ok();
        let last = answers.is_some_and(|a| a.last);
        let body = head.body(answers.is_some_and(|a| a.head));
        // The head and as much of a sized body as came with it go in one write.
        let with_head = match body {
            http::ResponseBody::Length(n) => usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(buf.len() - head.len),
            _ => 0,
        };
        let written = if last {
            let mut out = http::with_connection_close(&buf[..head.len]);
            out.extend_from_slice(&buf[head.len..head.len + with_head]);
            client.write_all(&out).await
        } else {
            client.write_all(&buf[..head.len + with_head]).await
        };
        if written.is_err() {
            return Responses::Broken;
        }
        buf.drain(..head.len + with_head);
        let forwarded = match body {
            http::ResponseBody::None => true,
            http::ResponseBody::Length(n) => {
                forward_length(upstream, client, pipe, &mut buf, n - with_head as u64).await
            }
            http::ResponseBody::Chunked => {
                forward_chunked(upstream, client, pipe, &mut buf, None).await
            }
            http::ResponseBody::UntilClose => {
                return pass_the_rest(upstream, client, pipe, &buf).await;
            }
        };
        if !forwarded {
            return Responses::Broken;
        }
        if last {
            return Responses::Closed;
        }
    }
}

/// Bytes read from the server at a time while a response head is looked for.
const RESPONSE_READ: usize = 16 * 1024;

/// Writes `buf`, then splices everything the server sends until its end of stream.
async fn pass_the_rest(
    upstream: &mut OwnedReadHalf,
    client: &mut OwnedWriteHalf,
    pipe: &Pipe,
    buf: &[u8],
) -> Responses {
    if client.write_all(buf).await.is_err() {
        return Responses::Broken;
    }
    match splice_until(upstream.as_ref(), client.as_ref(), pipe, None).await {
        Ok(()) => Responses::Ended,
        Err(_) => Responses::Broken,
    }
}

/// Reads the start of a request's body (within the first-flight limit) until
/// [`http::body_start`] can tell whether a server leaving it unread would take it for a
/// request: `false` when it would (refused: counted and reported, unless the policy only
/// audits), or when the start did not come in time. The head went on already (a client
/// that sent `Expect: 100-continue` waits for the server before sending its body); a
/// refusal resets both sides, so the server never reads the body as anything.
async fn body_starts_no_request(
    ctx: &Ctx<'_>,
    client: &mut OwnedReadHalf,
    buf: &mut Vec<u8>,
    framing: Framing,
) -> bool {
    let deadline = tokio::time::Instant::now() + ctx.inner.first_flight;
    let limit = match framing {
        Framing::Length(n) => usize::try_from(n).unwrap_or(usize::MAX).min(http::MAX_HEAD),
        _ => http::MAX_HEAD,
    };
    loop {
        let seen = buf.len().min(limit);
        match http::body_start(&buf[..seen], seen == limit) {
            http::BodyStart::NoRequest => return true,
            http::BodyStart::Request => {
                let refusal = Refusal {
                    reason: super::decide::Reason::AmbiguousRequest,
                    name: None,
                    http_detail: Some("a request in a request's body".into()),
                    first: None,
                };
                ctx.inner.refused(ctx.policy, ctx.origin, &refusal);
                return ctx.policy.audit;
            }
            http::BodyStart::Undecided => {}
        }
        match tokio::time::timeout_at(deadline, client.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
}

/// Reads until `buf` starts with a whole request head (or one that cannot be parsed,
/// which the judgement refuses), within the first-flight limit.
async fn read_head(ctx: &Ctx<'_>, client: &mut OwnedReadHalf, buf: &mut Vec<u8>) -> bool {
    let deadline = tokio::time::Instant::now() + ctx.inner.first_flight;
    loop {
        if !matches!(http::parse_head(buf), Ok(None)) {
            return true;
        }
        match tokio::time::timeout_at(deadline, client.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
}

/// Forwards a body of `n` bytes `from` → `to`: what is buffered, then the rest spliced
/// straight through.
async fn forward_length(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    pipe: &Pipe,
    buf: &mut Vec<u8>,
    n: u64,
) -> bool {
    let buffered = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
    if to.write_all(&buf[..buffered]).await.is_err() {
        return false;
    }
    buf.drain(..buffered);
    let rest = n - buffered as u64;
    splice_until(from.as_ref(), to.as_ref(), pipe, Some(rest))
        .await
        .is_ok()
}

/// Forwards a chunked body `from` → `to` up to its end (the last chunk and the trailer):
/// the chunk lines read, the chunk data spliced once no more of it is buffered. A chunk
/// line must come within `line_limit`, if any.
async fn forward_chunked(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    pipe: &Pipe,
    buf: &mut Vec<u8>,
    line_limit: Option<Duration>,
) -> bool {
    let mut state = Chunks::Size;
    loop {
        let Ok((used, next)) = http::scan_chunks(state, buf) else {
            return false;
        };
        if to.write_all(&buf[..used]).await.is_err() {
            return false;
        }
        buf.drain(..used);
        state = next;
        match state {
            Chunks::Done => return true,
            // Chunk data streams without a deadline (a slow upload is fine); whatever of
            // it was buffered went above (`scan_chunks` stops inside data only at the
            // buffer's end).
            Chunks::Data(left) => {
                if splice_until(from.as_ref(), to.as_ref(), pipe, Some(left))
                    .await
                    .is_err()
                {
                    return false;
                }
                state = Chunks::DataEnd;
                continue;
            }
            _ => {}
        }
        // A chunk line must not stall for ever.
        let read = match line_limit {
            None => from.read_buf(buf).await,
            Some(limit) => match tokio::time::timeout(limit, from.read_buf(buf)).await {
                Ok(r) => r,
                Err(_) => return false,
            },
        };
        match read {
            Ok(n) if n > 0 => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::{
        decide::Reason,
        tls::tests::{client_hello, sni},
    };

    /// Feeds `stream` in pieces of `step` bytes, as reads would; returns the bytes
    /// passed before a refusal (or all), and the refusal.
    fn scan(stream: &[u8], step: usize) -> (usize, Option<Reason>) {
        let mut scan = RecordScan::default();
        let mut watch = Watch::new("allowed.test".into());
        let (mut held, mut passed) = (Vec::new(), 0);
        for piece in stream.chunks(step) {
            held.extend_from_slice(piece);
            match scan.advance(&held, &mut watch, |_| true) {
                Ok(ready) => {
                    passed += ready;
                    held.drain(..ready);
                }
                Err((reason, _)) => return (passed, Some(reason)),
            }
        }
        (passed, None)
    }

    /// [`scan`], with the stream cut at `cuts` (offsets, any order) instead of in steps.
    fn scan_cut(stream: &[u8], cuts: &[usize]) -> (usize, Option<Reason>) {
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut scan = RecordScan::default();
        let mut watch = Watch::new("allowed.test".into());
        let (mut held, mut passed, mut from) = (Vec::new(), 0, 0);
        for cut in cuts {
            held.extend_from_slice(&stream[from..cut]);
            from = cut;
            match scan.advance(&held, &mut watch, |name| name == "allowed.test") {
                Ok(ready) => {
                    passed += ready;
                    held.drain(..ready);
                }
                Err((reason, _)) => return (passed, Some(reason)),
            }
        }
        (passed, None)
    }

    /// A client's records after its first ClientHello, as a sandbox may write them.
    fn later_records() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let record = prop_oneof![
            3 => Just(vec![20, 3, 3, 0, 1, 1]),
            1 => Just(vec![21, 3, 3, 0, 2, 1, 0]),
            3 => prop::collection::vec(any::<u8>(), 1..40).prop_map(|b| {
                let mut r = vec![23, 3, 3, 0, u8::try_from(b.len()).unwrap_or(0)];
                r.extend(b);
                r
            }),
            2 => (prop_oneof![Just("allowed.test"), Just("evil.test")], 0usize..90)
                .prop_map(|(name, cut)| {
                    // A second ClientHello, in one record or cut into two.
                    let whole = client_hello(&[sni(&[name])]);
                    let message = &whole[5..];
                    let cut = cut.min(message.len());
                    let mut out = Vec::new();
                    for part in [&message[..cut], &message[cut..]] {
                        if !part.is_empty() {
                            out.extend([22, 3, 3]);
                            out.extend(u16::try_from(part.len()).unwrap_or(0).to_be_bytes());
                            out.extend(part);
                        }
                    }
                    out
                }),
            1 => prop::collection::vec(any::<u8>(), 1..48).prop_map(|b| {
                let mut r = vec![22, 3, 3, 0, u8::try_from(b.len()).unwrap_or(0)];
                r.extend(b);
                r
            }),
            1 => prop::collection::vec(any::<u8>(), 1..8),
        ];
        prop::collection::vec(record, 0..6).prop_map(|rs| rs.concat())
    }

    proptest::proptest! {
        /// However a client's records fall into reads, the guard refuses the same
        /// stream for the same reason, passes no byte of the record it refuses (no
        /// more than it passes reading one byte at a time), and passes the same bytes of
        /// a stream it does not refuse.
        #[test]
        fn a_record_stream_is_judged_the_same_however_it_is_cut(
            later in later_records(),
            cuts in proptest::collection::vec(0usize..400, 0..6),
        ) {
            let mut stream = client_hello(&[sni(&["allowed.test"])]);
            stream.extend(later);
            let whole = scan_cut(&stream, &[]);
            let bytewise = scan(&stream, 1);
            let (passed, refused) = scan_cut(&stream, &cuts);
            proptest::prop_assert_eq!(refused, whole.1);
            proptest::prop_assert_eq!(bytewise.1, whole.1);
            if refused.is_some() {
                proptest::prop_assert!(passed <= bytewise.0, "{} > {}", passed, bytewise.0);
            } else {
                proptest::prop_assert_eq!(passed, whole.0);
                proptest::prop_assert_eq!(bytewise.0, whole.0);
            }
        }
    }

    /// The property above checks something only if its streams are both refused and
    /// passed, each often.
    #[test]
    fn the_record_generator_reaches_refusals_and_passes() {
        use proptest::{
            strategy::{Strategy as _, ValueTree as _},
            test_runner::TestRunner,
        };
        let mut runner = TestRunner::deterministic();
        let mut refused: Vec<(Option<Reason>, usize)> = Vec::new();
        for _ in 0..2000 {
            let later = later_records()
                .new_tree(&mut runner)
                .expect("sample")
                .current();
            let mut stream = client_hello(&[sni(&["allowed.test"])]);
            stream.extend(later);
            let outcome = scan_cut(&stream, &[]).1;
            match refused.iter_mut().find(|(o, _)| *o == outcome) {
                Some((_, n)) => *n += 1,
                None => refused.push((outcome, 1)),
            }
        }
        println!("of 2000 streams: {refused:?}");
        for outcome in [None, Some(Reason::SniMismatch), Some(Reason::Renegotiation)] {
            let n = refused
                .iter()
                .find(|(o, _)| *o == outcome)
                .map_or(0, |(_, n)| *n);
            assert!(n >= 50, "{outcome:?}: {refused:?}");
        }
    }

    /// Two connected TCP sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listener");
        let addr = listener.local_addr().expect("addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.expect("connect"), b.expect("accept").0)
    }

    #[tokio::test]
    async fn a_pipe_is_made_only_when_bytes_are_spliced() {
        let (mut a1, b1) = pair().await;
        let (a2, mut b2) = pair().await;
        let pipe = Pipe::default();
        splice_until(&b1, &a2, &pipe, Some(0))
            .await
            .expect("nothing to move");
        assert!(pipe.0.get().is_none(), "a pipe for no bytes");
        a1.write_all(b"hi").await.expect("write");
        splice_until(&b1, &a2, &pipe, Some(2))
            .await
            .expect("two bytes");
        assert!(pipe.0.get().is_some(), "bytes spliced without a pipe?");
        let mut got = [0u8; 2];
        b2.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"hi");
    }

    #[test]
    fn records_stream_through_and_a_later_hello_is_caught_however_the_reads_fall() {
        let first = client_hello(&[sni(&["allowed.test"])]);
        let mut ok = first.clone();
        ok.extend([20, 3, 3, 0, 1, 1]); // change_cipher_spec
        ok.extend([23, 3, 3, 0, 4, 9, 9, 9, 9]); // application data
        let mut evil = first.clone();
        evil.extend([20, 3, 3, 0, 1, 1]);
        let second = client_hello(&[sni(&["evil.test"])]);
        evil.extend(&second);
        for step in [1, 2, 5, 7, 64, 4096] {
            assert_eq!(scan(&ok, step), (ok.len(), None), "step {step}");
            let (passed, refused) = scan(&evil, step);
            assert_eq!(refused, Some(Reason::SniMismatch), "step {step}");
            assert!(passed <= evil.len() - second.len(), "step {step}: {passed}");
        }
    }
}
