//! The kernel relay (`guard.sockmap`, off by default): a passed TLS connection whose
//! server committed to TLS 1.3 has both sockets handed to a BPF sock hash, and
//! hb-ebpf's `hb_guard_splice` (a stream verdict) sends what arrives on one from the
//! other's sending side; the bytes no longer wake the agent.
//!
//! When: only once nothing the client still sends can name another host. The user-space
//! relay reads the client's records for a second ClientHello (after a
//! HelloRetryRequest) and for a renegotiation (`tls_records`). A server whose
//! ServerHello (not a HelloRetryRequest) selected TLS 1.3 reads no further ClientHello
//! and cannot renegotiate: it aborts on a plaintext handshake record. So the guard reads
//! the server's first handshake message, and hands over only after it ([`super::tls`]'s
//! `server_hello`); a TLS 1.2 server, or a HelloRetryRequest, keeps the connection on the
//! user-space relay for good.
//!
//! Hand-over, in order (nothing is lost or sent twice): every byte the guard read was
//! written on before; each socket's cookie is filed with its peer's
//! (`HB_GUARD_SPLICE`), both sockets enter `HB_GUARD_PEERS` (no program: the targets),
//! then `HB_GUARD_SOCKS` (the verdict), and each socket is kicked once
//! (`SO_RCVLOWAT`, which runs the verdict over bytes that arrived before it entered).
//! No room in a map, or a kernel that refuses: the connection stays on the user-space
//! relay (with nothing left to judge: the server is committed to TLS 1.3). A refusal
//! after the first socket entered the verdict map resets both (bytes may already have
//! moved).
//!
//! End: a socket's end of stream is passed on as a half-close only once every byte the
//! verdict sent on has entered the peer's send queue (the verdict's count against the
//! peer's acknowledged plus queued bytes), since the kernel sends redirected bytes from a
//! work queue and a half-close before them would cut them off. A reset, an error or a
//! dropped chunk on either side resets both. The entries are removed when the connection
//! ends, however it ends.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::Mutex,
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, SockHash},
    programs::{SkSkb, sk_skb::SkSkbLink},
};
use hb_common::{GuardSplice, map_names, prog_names};
use tokio::{
    io::{Interest, unix::AsyncFd},
    net::TcpStream,
};

#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    #[error("the eBPF object has no {0} (built without the kernel relay?)")]
    Missing(&'static str),
    #[error("opening {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("loading or attaching {} on this kernel", prog_names::GUARD_SPLICE)]
    Program(#[source] aya::programs::ProgramError),
}

/// The maps and the attached verdict, shared by every connection.
pub struct Splicer {
    socks: Mutex<SockHash<MapData, u64>>,
    peers: Mutex<SockHash<MapData, u64>>,
    state: Mutex<BpfHashMap<MapData, u64, GuardSplice>>,
    /// Keeps the verdict attached to `socks` while the guard runs.
    _link: SkSkbLink,
}

/// Why a connection was not handed over.
#[derive(Debug)]
pub enum HandOver {
    /// Nothing changed: the user-space relay goes on.
    Declined,
    /// Part of it happened and cannot be undone safely: reset both sides.
    Broken,
}

/// One connection in the kernel's hands: what [`Splicer::finish`] needs.
pub struct Handed {
    client: u64,
    upstream: u64,
    /// Each socket's written bytes (acknowledged plus queued) at the hand-over.
    client_base: u64,
    upstream_base: u64,
}

impl Splicer {
    /// Takes the maps out of the loaded object and attaches the verdict. Fails on a
    /// kernel without sock hash verdicts (the agent then does not start: the key asked
    /// for it).
    pub fn open(ebpf: &mut Ebpf) -> Result<Self, SpliceError> {
        fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
            ebpf: &mut Ebpf,
            name: &'static str,
        ) -> Result<T, SpliceError> {
            ebpf.take_map(name)
                .ok_or(SpliceError::Missing(name))?
                .try_into()
                .map_err(|source| SpliceError::Map { name, source })
        }
        let socks: SockHash<MapData, u64> = take(ebpf, map_names::GUARD_SOCKS)?;
        let peers: SockHash<MapData, u64> = take(ebpf, map_names::GUARD_PEERS)?;
        let state: BpfHashMap<MapData, u64, GuardSplice> = take(ebpf, map_names::GUARD_SPLICE)?;
        let program: &mut SkSkb = ebpf
            .program_mut(prog_names::GUARD_SPLICE)
            .ok_or(SpliceError::Missing(prog_names::GUARD_SPLICE))?
            .try_into()
            .map_err(SpliceError::Program)?;
        program.load().map_err(SpliceError::Program)?;
        let id = program.attach(socks.fd()).map_err(SpliceError::Program)?;
        let link = program.take_link(id).map_err(SpliceError::Program)?;
        Ok(Self {
            socks: Mutex::new(socks),
            peers: Mutex::new(peers),
            state: Mutex::new(state),
            _link: link,
        })
    }

    /// Hands both sockets to the kernel. Every byte read from either must have been
    /// written on already.
    pub fn hand_over(&self, client: &TcpStream, upstream: &TcpStream) -> Result<Handed, HandOver> {
        let (cfd, ufd) = (client.as_raw_fd(), upstream.as_raw_fd());
        let (Ok(c), Ok(u)) = (cookie(cfd), cookie(ufd)) else {
            return Err(HandOver::Declined);
        };
        let (Ok(client_base), Ok(upstream_base)) = (written(cfd), written(ufd)) else {
            return Err(HandOver::Declined);
        };
        let handed = Handed {
            client: c,
            upstream: u,
            client_base,
            upstream_base,
        };
        // Records first, then targets: nothing is judged yet, so any failure here
        // leaves the connection as it was.
        let filed =
            self.file(c, u) && self.file(u, c) && self.target(c, cfd) && self.target(u, ufd);
        if !filed {
            self.forget(&handed);
            return Err(HandOver::Declined);
        }
        match self.socks.lock() {
            Ok(mut socks) => {
                if socks.insert(c, cfd, 0).is_err() {
                    drop(socks);
                    self.forget(&handed);
                    return Err(HandOver::Declined);
                }
                if socks.insert(u, ufd, 0).is_err() {
                    // The client's bytes may already be on their way through the
                    // kernel: no way back to the user-space relay.
                    drop(socks);
                    self.forget(&handed);
                    return Err(HandOver::Broken);
                }
            }
            Err(_) => {
                self.forget(&handed);
                return Err(HandOver::Declined);
            }
        }
        // Bytes that arrived before a socket entered the map woke nothing: run the
        // verdict over them now.
        kick(cfd);
        kick(ufd);
        Ok(handed)
    }

    /// Waits for both ends of stream, passing each on once the bytes before it left,
    /// then closes both; resets both when either side failed. The entries are removed
    /// in every case.
    ///
    /// The sockets leave tokio's reactor: each chunk the verdict moves still runs the
    /// socket's data-ready wake-up, and tokio's epoll would wake the agent for every
    /// one. A private epoll set watches only for an end of stream or an error
    /// (`EPOLLRDHUP | EPOLLERR`, not `EPOLLIN`), so the bytes wake nothing here.
    pub async fn finish(&self, h: &Handed, client: TcpStream, upstream: TcpStream) {
        let (client, upstream) = match (client.into_std(), upstream.into_std()) {
            (Ok(c), Ok(u)) => (c, u),
            _ => {
                // `into_std` fails only when deregistering fails; the streams are gone.
                self.forget(h);
                return;
            }
        };
        let done = self.until_both_end(h, &client, &upstream).await;
        self.forget(h);
        if done.is_err() {
            reset_std(&client);
            reset_std(&upstream);
        }
    }

    async fn until_both_end(
        &self,
        h: &Handed,
        client: &std::net::TcpStream,
        upstream: &std::net::TcpStream,
    ) -> io::Result<()> {
        let ends = Ends::watch(client.as_raw_fd(), upstream.as_raw_fd())?;
        let mut ended = [false, false];
        while !(ended[0] && ended[1]) {
            for (side, events) in ends.wait().await? {
                let (from, to, cookie, base) = if side == 0 {
                    (client, upstream, h.client, h.upstream_base)
                } else {
                    (upstream, client, h.upstream, h.client_base)
                };
                if let Some(e) = from.take_error()? {
                    return Err(e);
                }
                self.check(cookie)?;
                if events & (libc::EPOLLERR as u32) != 0 {
                    return Err(io::Error::other("socket error"));
                }
                if !ended[side] {
                    self.pass_end(cookie, from, to, base).await?;
                    ended[side] = true;
                    ends.stop(from.as_raw_fd());
                }
            }
        }
        Ok(())
    }

    /// `from` has ended: once all its bytes are in `to`'s send queue, `to` gets the
    /// half-close.
    async fn pass_end(
        &self,
        from_cookie: u64,
        from: &std::net::TcpStream,
        to: &std::net::TcpStream,
        to_base: u64,
    ) -> io::Result<()> {
        let (from_fd, to_fd) = (from.as_raw_fd(), to.as_raw_fd());
        let mut pause = Duration::from_micros(200);
        loop {
            if let Some(e) = to.take_error()? {
                return Err(e);
            }
            if pending(from_fd)? {
                // Bytes the verdict has not seen yet (they came with the end of
                // stream): run it again.
                kick(from_fd);
            } else {
                let sent = self.check(from_cookie)?;
                let queued = written(to_fd)?.wrapping_sub(to_base);
                if queued == sent {
                    break;
                }
                if queued > sent {
                    return Err(io::Error::other("spliced byte count mismatch"));
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        to.shutdown(std::net::Shutdown::Write)
    }

    /// The bytes sent on for `cookie` so far; `Err` once a chunk was dropped.
    fn check(&self, cookie: u64) -> io::Result<u64> {
        let state = self
            .state
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        let s = state
            .get(&cookie, 0)
            .map_err(|_| io::Error::other("splice record gone"))?;
        if s.dropped > 0 {
            return Err(io::Error::other("the kernel dropped spliced bytes"));
        }
        Ok(s.bytes)
    }

    fn file(&self, cookie: u64, peer: u64) -> bool {
        self.state.lock().is_ok_and(|mut m| {
            m.insert(
                cookie,
                GuardSplice {
                    peer,
                    ..GuardSplice::default()
                },
                0,
            )
            .is_ok()
        })
    }

    fn target(&self, cookie: u64, fd: RawFd) -> bool {
        self.peers
            .lock()
            .is_ok_and(|mut m| m.insert(cookie, fd, 0).is_ok())
    }

    /// Removes every entry of a connection (those that exist).
    fn forget(&self, h: &Handed) {
        for cookie in [h.client, h.upstream] {
            if let Ok(mut m) = self.socks.lock() {
                let _ = m.remove(&cookie);
            }
            if let Ok(mut m) = self.peers.lock() {
                let _ = m.remove(&cookie);
            }
            if let Ok(mut m) = self.state.lock() {
                let _ = m.remove(&cookie);
            }
        }
    }

    /// Entries in the three maps (tests and `status`): sockets in the verdict map,
    /// targets, records.
    pub fn entries(&self) -> (usize, usize, usize) {
        let count = |n: Option<usize>| n.unwrap_or(usize::MAX);
        (
            count(self.socks.lock().ok().map(|m| m.keys().count())),
            count(self.peers.lock().ok().map(|m| m.keys().count())),
            count(self.state.lock().ok().map(|m| m.keys().count())),
        )
    }
}

/// A private epoll set over a connection's two sockets, reporting only an end of stream,
/// a hang-up or an error.
struct Ends {
    ep: AsyncFd<OwnedFd>,
    fds: [RawFd; 2],
}

impl Ends {
    fn watch(client: RawFd, upstream: RawFd) -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        for (side, fd) in [client, upstream].into_iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLRDHUP | libc::EPOLLERR | libc::EPOLLHUP) as u32,
                u64: side as u64,
            };
            // SAFETY: both descriptors are open; `ev` is a valid event.
            if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &raw mut ev) } != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: `ep` is an open descriptor the AsyncFd owns until it drops.
        let ep = unsafe { AsyncFd::register_with_interest(ep, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self {
            ep,
            fds: [client, upstream],
        })
    }

    /// The sides (0: client, 1: upstream) with an event, and their events.
    async fn wait(&self) -> io::Result<Vec<(usize, u32)>> {
        loop {
            let mut ready = self.ep.readable().await?;
            let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 2];
            // SAFETY: `evs` has room for the two events asked for; no wait.
            let n = unsafe { libc::epoll_wait(self.ep.as_raw_fd(), evs.as_mut_ptr(), 2, 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                ready.clear_ready();
                continue;
            }
            return Ok(evs[..n as usize]
                .iter()
                .map(|e| (e.u64 as usize, e.events))
                .collect());
        }
    }

    /// No more events from `fd` (its end was passed on; level-triggered, it would report
    /// it again).
    fn stop(&self, fd: RawFd) {
        if self.fds.contains(&fd) {
            // SAFETY: removal of a descriptor added in `watch`; a null event is allowed.
            unsafe {
                libc::epoll_ctl(
                    self.ep.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    fd,
                    std::ptr::null_mut(),
                )
            };
        }
    }
}

/// Closes with a reset (see `relay::reset`).
fn reset_std(s: &std::net::TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a valid option value of its size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// `SO_COOKIE`: the socket's id, as the verdict sees it.
fn cookie(fd: RawFd) -> io::Result<u64> {
    let mut v = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt into a u64 of the size given.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&raw mut v).cast(),
            &raw mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// The head of `struct tcp_info` up to `tcpi_bytes_acked` (include/uapi/linux/tcp.h).
#[repr(C)]
struct TcpInfoHead {
    _before: [u8; 104],
    _pacing_rate: u64,
    _max_pacing_rate: u64,
    bytes_acked: u64,
}

fn bytes_acked(fd: RawFd) -> io::Result<u64> {
    // SAFETY: plain old data; zeroes are a valid value.
    let mut info: TcpInfoHead = unsafe { std::mem::zeroed() };
    let mut len = size_of::<TcpInfoHead>() as libc::socklen_t;
    // SAFETY: getsockopt into a buffer of the size given.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &raw mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) < size_of::<TcpInfoHead>() {
        return Err(io::Error::other("tcp_info without bytes_acked"));
    }
    Ok(info.bytes_acked)
}

/// Bytes ever written into `fd`'s send queue (acknowledged plus still queued), up to a
/// constant: read while no acknowledgement moved in between.
fn written(fd: RawFd) -> io::Result<u64> {
    loop {
        let before = bytes_acked(fd)?;
        let mut queued: libc::c_int = 0;
        // SAFETY: SIOCOUTQ into an int.
        if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &raw mut queued) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if bytes_acked(fd)? == before {
            return Ok(before + u64::try_from(queued).unwrap_or(0));
        }
    }
}

/// Whether `fd` holds received bytes the verdict has not taken yet.
fn pending(fd: RawFd) -> io::Result<bool> {
    let mut b = 0u8;
    // SAFETY: a peek of at most one byte into `b`.
    let n = unsafe {
        libc::recv(
            fd,
            (&raw mut b).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n >= 0 {
        return Ok(n > 0);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        return Ok(false);
    }
    Err(e)
}

/// Runs the socket's data-ready callback (the verdict) if bytes wait: setting
/// `SO_RCVLOWAT` checks for readable bytes at once (`tcp_set_rcvlowat`).
fn kick(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with an int option value of its size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (s, _) = l.accept().expect("accept");
        (c, s)
    }

    #[test]
    fn written_counts_what_entered_the_send_queue_acknowledged_or_not() {
        let (mut c, mut s) = pair();
        let base = written(c.as_raw_fd()).expect("written");
        c.write_all(&[7; 50_000]).expect("write");
        assert_eq!(written(c.as_raw_fd()).expect("written") - base, 50_000);
        let mut got = vec![0; 50_000];
        s.read_exact(&mut got).expect("read");
        // Read and acknowledged: still counted once.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while bytes_acked(c.as_raw_fd()).expect("acked") < 50_000 {
            assert!(std::time::Instant::now() < deadline, "never acknowledged");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(written(c.as_raw_fd()).expect("written") - base, 50_000);
    }

    #[test]
    fn pending_sees_unread_bytes_and_not_the_end_of_stream() {
        let (mut c, s) = pair();
        c.set_nonblocking(true).expect("nonblocking");
        assert!(!pending(c.as_raw_fd()).expect("pending"));
        (&s).write_all(b"abc").expect("write");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !pending(c.as_raw_fd()).expect("pending") {
            assert!(std::time::Instant::now() < deadline, "bytes never arrived");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut b = [0; 3];
        c.read_exact(&mut b).expect("read");
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        std::thread::sleep(Duration::from_millis(20));
        assert!(!pending(c.as_raw_fd()).expect("pending"));
        assert_ne!(
            cookie(c.as_raw_fd()).expect("cookie"),
            cookie(s.as_raw_fd()).expect("cookie")
        );
    }
}
