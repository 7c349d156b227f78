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
//! side ends. What the command loses: seeking its stdin or stdout.
//!
//! Must never: hand the sandbox a descriptor of the caller's file, or leave a launcher
//! copy of the sandbox's end open (the relay would never see the end of the stream).

use std::{
    fs::File,
    io::{self, Read as _, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
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
    /// copies of them and starts one thread per pipe. Each ends with its stream.
    pub fn start(self) -> Vec<JoinHandle<()>> {
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
            threads.push(std::thread::spawn(move || {
                let _ = if fd == 0 {
                    copy(file, pipe)
                } else {
                    copy(pipe, file)
                };
            }));
        }
        threads
    }
}

/// Copies until the end of `from` or an error on either side; `to` is closed after.
fn copy(mut from: File, mut to: File) -> io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: pipe2(2) writes two descriptors into the local array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
