//! A few bytes and at most one descriptor over a Unix socket (SCM_RIGHTS): how the
//! sandbox's init hands the launcher its seccomp listener along with its report.
//!
//! Owns: the control-message plumbing, once. [`send`] allocates nothing, so the init
//! (a forked copy of the launcher) may call it.

use std::{
    io,
    os::fd::{FromRawFd as _, OwnedFd, RawFd},
};

/// Room for one header and one descriptor, aligned for `cmsghdr`.
type Control = [u64; 4];

/// Sends `bytes` (one message on a `SOCK_SEQPACKET`) with `fd` attached, if any.
pub fn send(sock: RawFd, bytes: &[u8], fd: Option<RawFd>) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    let mut control: Control = [0; 4];
    // SAFETY: msghdr is plain data; its pointers are to locals that outlive the call, and
    // CMSG_* write inside `control`, which has room for one descriptor.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        if let Some(fd) = fd {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(size_of::<RawFd>() as u32) as usize;
            let c = libc::CMSG_FIRSTHDR(&raw const msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
        }
        libc::sendmsg(sock, &raw const msg, libc::MSG_NOSIGNAL)
    };
    if sent == bytes.len() as isize {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Receives one message into `buf`: its length (0 at the end of the stream) and the
/// descriptor it carried, if any (close-on-exec). Retries when interrupted.
pub fn recv(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control: Control = [0; 4];
    // SAFETY: msghdr is plain data; every pointer in it is to a local that outlives the
    // calls below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control);
    let n = loop {
        // SAFETY: as above.
        let n = unsafe { libc::recvmsg(sock, &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: walking the control buffer the kernel filled, with the libc macros; a
    // descriptor is read only from an SCM_RIGHTS message.
    let fd = unsafe {
        let c = libc::CMSG_FIRSTHDR(&raw const msg);
        (!c.is_null() && (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS)
            .then(|| {
                OwnedFd::from_raw_fd(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>()))
            })
    };
    Ok((n, fd))
}
