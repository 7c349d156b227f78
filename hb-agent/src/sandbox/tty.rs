//! `sandbox run --tty`: a fresh pseudo-terminal for the command, relayed by the launcher.
//!
//! Owns: giving an interactive command a terminal that is not the caller's. The command
//! gets the slave side as its controlling terminal and stdin/stdout/stderr; the launcher
//! copies its own stdin to the master and the master to its stdout, with the caller's
//! terminal in raw mode meanwhile (so keys such as ^C reach the command's terminal, whose
//! line discipline turns them into signals inside the sandbox). Whatever the command
//! pushes into its terminal (TIOCSTI) lands in its own input queue, read by nothing
//! outside the sandbox.
//! Not done: window size changes after the start (the size is copied once).
//! Must never: hand the command the caller's terminal.

use std::{
    io::{self, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    thread::JoinHandle,
};

/// Both sides of a new pseudo-terminal.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a pseudo-terminal with the window size of the launcher's stdin, when that is a
/// terminal; both descriptors close-on-exec.
pub fn open() -> io::Result<Pty> {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it or fails and leaves it zeroed.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above, on stdin.
    let sized = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut size) } == 0;
    // SAFETY: openpty(3) writes two new descriptors into the locals; the size pointer is
    // to a local or null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            if sized { &size } else { std::ptr::null() },
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    for fd in [master, slave] {
        // SAFETY: fcntl(2) on descriptors this process just opened.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: both are new descriptors owned by nobody else.
    Ok(unsafe {
        Pty {
            master: OwnedFd::from_raw_fd(master),
            slave: OwnedFd::from_raw_fd(slave),
        }
    })
}

/// Makes `slave` the controlling terminal of the calling session leader and its stdin,
/// stdout and stderr.
///
/// # Safety
/// Called in the sandbox's init right after setsid(2): ioctl(2) and dup2(2) only.
pub unsafe fn make_controlling(slave: RawFd) -> io::Result<()> {
    // SAFETY: integer arguments only.
    unsafe {
        if libc::ioctl(slave, libc::TIOCSCTTY, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        for target in 0..=2 {
            if libc::dup2(slave, target) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// The relay between the caller's terminal and the master; restores the caller's
/// terminal mode when finished.
pub struct Relay {
    output: Option<JoinHandle<()>>,
    /// The write end of the "sandbox gone" pipe the output thread also waits on.
    done: Option<OwnedFd>,
    restore: Option<libc::termios>,
}

/// Starts copying stdin → `master` and `master` → stdout, with stdin in raw mode if it
/// is a terminal.
pub fn relay(master: OwnedFd) -> io::Result<Relay> {
    // Everything that can fail comes before the caller's terminal goes raw: an error
    // here leaves it as it was.
    let input = master.try_clone()?;
    let (done_read, done) = super::stdio::pipe()?;
    // SAFETY: dup(2) of the launcher's stdout, owned by the File.
    let stdout = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
    if stdout < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor owned by nobody else.
    let stdout = unsafe { std::fs::File::from_raw_fd(stdout) };
    let restore = raw_mode(0);
    // stdin → master: ends with stdin or when the master is gone; never joined (a read
    // on a terminal does not return when the sandbox ends).
    std::thread::spawn(move || {
        let mut to = std::fs::File::from(input);
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: read(2) into a local buffer from this process's stdin.
            let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 || to.write_all(&buf[..n as usize]).is_err() {
                return;
            }
        }
    });
    // master → stdout: ends with EIO once no process holds the slave any more, or once
    // the sandbox is gone ([`Relay::finish`]) — a host process may hold the slave (taken
    // from the command with pidfd_getfd) — with what the master holds then.
    let output = std::thread::spawn(move || {
        let _ = super::stdio::relay_out(std::fs::File::from(master), stdout, &done_read);
    });
    Ok(Relay {
        output: Some(output),
        done: Some(done),
        restore,
    })
}

impl Relay {
    /// Once the sandbox is gone: copies the command's last output (what the master
    /// holds now), then restores the caller's terminal.
    pub fn finish(mut self) {
        drop(self.done.take());
        if let Some(t) = self.output.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mode) = self.restore.take() {
            // SAFETY: tcsetattr(3) with the mode read from the same descriptor.
            unsafe { libc::tcsetattr(0, libc::TCSAFLUSH, &mode) };
        }
    }
}

/// Puts `fd` in raw mode; the previous mode, or None if it is not a terminal.
fn raw_mode(fd: RawFd) -> Option<libc::termios> {
    // SAFETY: termios is plain data filled by tcgetattr; cfmakeraw edits a copy.
    unsafe {
        let mut mode: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut mode) != 0 {
            return None;
        }
        let mut raw = mode;
        libc::cfmakeraw(&mut raw);
        (libc::tcsetattr(fd, libc::TCSANOW, &raw) == 0).then_some(mode)
    }
}

/// The raw descriptor of a pseudo-terminal side, for the init's plan.
pub fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}

/// The caller's terminals on fds 0–2 as they were before a run without `--tty` (the
/// command then gets them as they are), put back when this is dropped, after the
/// sandbox is gone: its modes (`stty -echo`, raw mode), whether it was exclusive
/// (`TIOCEXCL`: no one else could open it), and its output flowing (`TCXONC` `TCOOFF`
/// stopped it). What the command did to them does not outlive it: the operator's shell
/// gets back the terminal it had. (Keystrokes it pushed, `TIOCSTI`, and its line
/// discipline, `TIOCSETD`, the seccomp filter refuses outright.) Not its window size:
/// the operator may have resized the window meanwhile, and the saved size would undo
/// that; a size the command set lasts until the next resize.
pub struct CallerTerminals(Vec<SavedTerminal>);

struct SavedTerminal {
    fd: RawFd,
    mode: libc::termios,
    exclusive: bool,
}

impl CallerTerminals {
    /// Each distinct terminal among fds 0–2, saved.
    pub fn save() -> CallerTerminals {
        let mut saved: Vec<SavedTerminal> = Vec::new();
        let mut seen: Vec<libc::dev_t> = Vec::new();
        for fd in 0..3 {
            // SAFETY: termios and stat are plain data the calls below fill; each
            // call reads or writes only the local passed to it.
            unsafe {
                let mut mode: libc::termios = std::mem::zeroed();
                let mut st: libc::stat = std::mem::zeroed();
                if libc::tcgetattr(fd, &mut mode) != 0
                    || libc::fstat(fd, &mut st) != 0
                    || seen.contains(&st.st_rdev)
                {
                    continue;
                }
                seen.push(st.st_rdev);
                let mut exclusive: libc::c_int = 0;
                let known = libc::ioctl(fd, libc::TIOCGEXCL, &mut exclusive) == 0;
                saved.push(SavedTerminal {
                    fd,
                    mode,
                    // Unknown: left as the command left it.
                    exclusive: !known || exclusive != 0,
                });
            }
        }
        CallerTerminals(saved)
    }
}

impl Drop for CallerTerminals {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        // SAFETY: signal(2) dispositions and terminal ioctls on the launcher's own 0–2,
        // with the values saved from them. A launcher moved to the background between the
        // check and the call would be stopped by SIGTTOU: ignored for these calls.
        unsafe {
            let previous = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
            for t in &self.0 {
                // Not from the background: a launcher sent there (`^Z`, `bg`, `&`) would
                // undo what the job in front set since (an editor's raw mode, a password
                // prompt's echo off). A terminal that is not the launcher's controlling
                // terminal (tcgetpgrp fails) has no jobs to race.
                let front = libc::tcgetpgrp(t.fd);
                if front >= 0 && front != libc::getpgrp() {
                    continue;
                }
                libc::tcsetattr(t.fd, libc::TCSANOW, &t.mode);
                if !t.exclusive {
                    libc::ioctl(t.fd, libc::TIOCNXCL);
                }
                libc::tcflow(t.fd, libc::TCOON);
            }
            libc::signal(libc::SIGTTOU, previous);
        }
    }
}
