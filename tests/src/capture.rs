//! A packet capture on the test namespace's `lo`: what really went on the wire.
//!
//! `cgroup_skb/egress` runs before a packet reaches the device, so a packet it drops never
//! shows here, and a packet that shows here was sent, whatever the socket API reported.
//! An `AF_PACKET` socket (cooked, `SOCK_DGRAM`: frames start at the IP header) records
//! every packet of every protocol, which a listener cannot (an ICMP echo, a SYN whose
//! answer the sender discards, a datagram with a routing header).

use std::{
    net::IpAddr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{Arc, Mutex},
    thread,
};

/// One captured packet: the IP header onwards.
#[derive(Clone, Debug)]
pub struct Packet(pub Vec<u8>);

impl Packet {
    /// The destination address in the IP header.
    pub fn dst(&self) -> Option<IpAddr> {
        let b = &self.0;
        match b.first()? >> 4 {
            4 if b.len() >= 20 => Some(IpAddr::from([b[16], b[17], b[18], b[19]])),
            6 if b.len() >= 40 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&b[24..40]);
                Some(IpAddr::from(a))
            }
            _ => None,
        }
    }

    /// Whether the payload carries `needle` anywhere (data smuggled in a packet).
    pub fn carries(&self, needle: &[u8]) -> bool {
        self.0.windows(needle.len()).any(|w| w == needle)
    }
}

/// Records every packet on `lo` of the calling thread's network namespace until dropped.
pub struct Capture {
    packets: Arc<Mutex<Vec<Packet>>>,
    fd: Arc<OwnedFd>,
}

impl Capture {
    /// Starts capturing on `lo`; panics (never skips) when it cannot.
    pub fn lo() -> Self {
        // SAFETY: plain syscalls with valid arguments; the fd is owned right away.
        let fd = unsafe {
            let raw = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            );
            assert!(
                raw >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            OwnedFd::from_raw_fd(raw)
        };
        let ifindex = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        assert!(ifindex > 0, "no lo in this namespace");
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll is a valid sockaddr_ll of the given size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            rc,
            0,
            "bind AF_PACKET to lo: {}",
            std::io::Error::last_os_error()
        );
        let fd = Arc::new(fd);
        let packets = Arc::new(Mutex::new(Vec::new()));
        let (reader, sink) = (fd.clone(), packets.clone());
        thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            loop {
                // SAFETY: buf is valid for its length.
                let n = unsafe {
                    libc::recv(reader.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                };
                if n <= 0 {
                    return;
                }
                if let Ok(mut p) = sink.lock() {
                    p.push(Packet(buf[..n as usize].to_vec()));
                }
            }
        });
        Self { packets, fd }
    }

    /// Every packet captured so far addressed to `dst` (each appears twice on `lo`: as it
    /// leaves and as it arrives).
    pub fn to(&self, dst: IpAddr) -> Vec<Packet> {
        self.packets
            .lock()
            .expect("capture lock")
            .iter()
            .filter(|p| p.dst() == Some(dst))
            .cloned()
            .collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Ends the reader's recv; the thread exits on the error.
        // SAFETY: shutting down our own socket.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) };
    }
}
