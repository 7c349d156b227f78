//! Stdin, stdout and stderr that are regular files cross into the sandbox as pipes the
//! launcher relays, never as the files themselves.
//!
//! A descriptor of a regular file names the file on the host's mount: `/proc/self/fd/N`
//! opens it again, with whatever rights the command's uid has on it and on the host's
//! read-write mount — a log the caller opened to append to is read from its start, an
//! input opened read-only is rewritten, past the sandbox's read-only root and covers. A
//! pipe opened again is only the same pipe. So for each of 0-2 that is a regular file the
//! launcher makes a pipe, the init puts the sandbox's end in its place
//! ([`super::init::Plan::stdio`]), and a launcher thread copies between the file (the
//! caller's own open description: its offset, its `O_APPEND`) and the pipe until either
//! side ends, or the sandbox is gone. What the command loses: seeking its stdin or
//! stdout.
//!
//! The end of a pipe's stream is the last writer closing it, and a writer need not be in
//! the sandbox: a host process of the command's uid takes the (dumpable) command's
//! descriptor with `pidfd_getfd` and holds it. So the relays do not wait for the end of the stream
//! once the sandbox is gone ([`Running::finish`]): an output relay takes what the pipe
//! or terminal holds at that moment (and at most 1 MiB more), and an input relay stops.
//!
//! Must never: hand the sandbox a descriptor of the caller's file, leave a launcher copy
//! of the sandbox's end open (the relay would never see the end of the stream), or let a
//! process outside the sandbox keep the launcher from ending.

use std::{
    fs::File,
    io::{self, Read as _, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::Arc,
    thread::JoinHandle,
};

/// The pipes for the standard descriptors that are regular files.
pub struct Relays {
    /// Per descriptor 0-2: (the sandbox's end, the launcher's end).
    pipes: [Option<(OwnedFd, OwnedFd)>; 3],
}

impl Relays {
    /// A pipe for each of 0-2 that is a regular file (none with `--tty`, where the
    /// sandbox's 0-2 are its own terminal). Runs before the clone: the sandbox's ends go
    /// into the plan.
    pub fn prepare(tty: bool) -> io::Result<Relays> {
        let mut pipes = [None, None, None];
        if tty {
            return Ok(Relays { pipes });
        }
        for (fd, slot) in pipes.iter_mut().enumerate() {
            let fd = fd as RawFd;
            // SAFETY: stat is plain data; fstat(2) writes it.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat(2) of a descriptor number into a local.
            if unsafe { libc::fstat(fd, &mut st) } != 0
                || st.st_mode & libc::S_IFMT != libc::S_IFREG
            {
                continue;
            }
            let (read, write) = pipe()?;
            *slot = Some(if fd == 0 {
                (read, write)
            } else {
                (write, read)
            });
        }
        Ok(Relays { pipes })
    }

    /// The sandbox's ends, for the init to put in place of 0, 1 and 2.
    pub fn sandbox_ends(&self) -> [Option<RawFd>; 3] {
        let end = |p: &Option<(OwnedFd, OwnedFd)>| p.as_ref().map(|(s, _)| s.as_raw_fd());
        [
            end(&self.pipes[0]),
            end(&self.pipes[1]),
            end(&self.pipes[2]),
        ]
    }

    /// Once the init is cloned (it holds the sandbox's ends now): closes the launcher's
    /// copies of them and starts one thread per pipe. Each ends with its stream, or at
    /// [`Running::finish`].
    pub fn start(self) -> io::Result<Running> {
        let (done_read, done) = pipe()?;
        let done_read = Arc::new(done_read);
        let mut threads = Vec::new();
        for (fd, pipe) in self.pipes.into_iter().enumerate() {
            let Some((sandbox_end, launcher_end)) = pipe else {
                continue;
            };
            drop(sandbox_end);
            // SAFETY: dup(2) of the launcher's own standard descriptor; the copy is owned
            // by the File below, so the relay's end does not close the launcher's.
            let file = unsafe { libc::fcntl(fd as RawFd, libc::F_DUPFD_CLOEXEC, 3) };
            if file < 0 {
                continue;
            }
            // SAFETY: a new descriptor owned by nobody else.
            let file = unsafe { File::from_raw_fd(file) };
            let pipe = File::from(launcher_end);
            let done = Arc::clone(&done_read);
            threads.push(std::thread::spawn(move || {
                let _ = if fd == 0 {
                    relay_in(file, pipe, &done)
                } else {
                    relay_out(pipe, file, &done)
                };
            }));
        }
        Ok(Running {
            threads,
            done: Some(done),
        })
    }
}

/// The relay threads of a started sandbox.
pub struct Running {
    threads: Vec<JoinHandle<()>>,
    /// The write end of the "sandbox gone" pipe; closing it wakes every relay.
    done: Option<OwnedFd>,
}

impl Running {
    /// Once every process of the sandbox is gone (the init reaped: its pid namespace
    /// ended with it): output relays copy what their pipe holds now and end, the input
    /// relay ends; then the threads are joined. Whatever a process outside the sandbox
    /// still holds of a pipe keeps nothing waiting.
    pub fn finish(mut self) {
        drop(self.done.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Copies the caller's file into the sandbox's stdin pipe until the file ends, the
/// pipe's reader is gone, or the sandbox is.
fn relay_in(mut from: File, to: File, done: &OwnedFd) -> io::Result<()> {
    // Writes go only as far as the pipe has room, so a full pipe never blocks the
    // thread past the sandbox's end.
    set_nonblocking(&to)?;
    let mut to = to;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut sent = 0;
        while sent < n {
            if wait(&to, libc::POLLOUT, done)? == Ready::SandboxGone {
                return Ok(());
            }
            match to.write(&buf[sent..n]) {
                Ok(k) => sent += k,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Copies the sandbox's stdout or stderr pipe into the caller's file until the pipe's
/// stream ends, or the sandbox is gone; then what the pipe holds at that moment.
pub(super) fn relay_out(mut from: File, mut to: File, done: &OwnedFd) -> io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if wait(&from, libc::POLLIN, done)? == Ready::SandboxGone {
            return drain(&mut from, &mut to, &mut buf);
        }
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
}

/// Copies what `from` (a pipe, or a terminal's master) holds now, and at most
/// [`DRAIN_PAST_HELD`] more: a writer outside the sandbox that keeps writing cannot keep
/// it going. The allowance is for what a terminal has not handed its master yet (its
/// flip buffers, up to 640 KiB, beyond the 4 KiB line buffer `FIONREAD` counts): a read
/// without waiting hands it over first (`n_tty_read`), and stops at EIO once the other
/// side is closed and nothing is left, or at EAGAIN.
fn drain(from: &mut File, to: &mut File, buf: &mut [u8]) -> io::Result<()> {
    let mut held: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into a local.
    if unsafe { libc::ioctl(from.as_raw_fd(), libc::FIONREAD, &raw mut held) } != 0 {
        held = 0;
    }
    set_nonblocking(from)?;
    let mut left = usize::try_from(held).unwrap_or(0) + DRAIN_PAST_HELD;
    while left > 0 {
        let want = left.min(buf.len());
        let n = match from.read(&mut buf[..want]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => return Ok(()),
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        left -= n;
    }
    Ok(())
}

/// How much a drain copies past what `FIONREAD` reported: more than a terminal's flip
/// buffers hold (640 KiB, `TTYB_DEFAULT_MEM_LIMIT`).
const DRAIN_PAST_HELD: usize = 1 << 20;

#[derive(Debug, PartialEq, Eq)]
enum Ready {
    /// The relayed descriptor has the event (or hung up, or failed: the next call says).
    Descriptor,
    SandboxGone,
}

/// Waits until `fd` has `events` or the sandbox is gone (`done` hung up).
fn wait(fd: &File, events: libc::c_short, done: &OwnedFd) -> io::Result<Ready> {
    let mut fds = [
        libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: done.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: poll(2) on two descriptors this process owns, in a local array.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[1].revents != 0 {
            return Ok(Ready::SandboxGone);
        }
        if fds[0].revents != 0 {
            return Ok(Ready::Descriptor);
        }
    }
}

fn set_nonblocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl(2) reading and setting the status flags of a descriptor we own.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(super) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: pipe2(2) writes two descriptors into the local array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
