//! The key under which the kernel files a redirected TCP connection for the agent
//! (`FlowKey`: network namespace, client address and port, the agent's port), built
//! from the accepted socket's side, for the guard's and the resolver's flow tables.
//!
//! `sock_ops` files the record when the client's SYN leaves; the accepted socket's peer
//! is that client end, its local port the one connected to, and its network namespace
//! the client's (a loopback connection never leaves its namespace). So the agent finds
//! the record without the client's cooperation. Must never guess: a socket whose
//! namespace cannot be read gets no key, and its connection is closed.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, BorrowedFd},
};

use hb_common::{AF_INET, AF_INET6, FlowKey};

use crate::maps::addr_of;

/// The cookie of the network namespace a socket lives in (`SO_NETNS_COOKIE`, Linux
/// 5.14), the value `bpf_get_netns_cookie` gives for it in the kernel.
pub fn netns_cookie(sock: BorrowedFd<'_>) -> io::Result<u64> {
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: a valid descriptor and an out-buffer of the length passed.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// A connection's key: the accepted socket's network namespace, peer and local port.
/// An IPv4-mapped peer (an IPv4 client of a dual-stack listener) is keyed as the IPv4
/// address it is.
pub fn key_of(netns_cookie: u64, peer: SocketAddr, local: SocketAddr) -> FlowKey {
    let mut key = FlowKey {
        netns_cookie,
        client: [0; 16],
        client_port: peer.port(),
        server_port: local.port(),
        family: AF_INET,
        _pad: 0,
    };
    match peer.ip() {
        IpAddr::V4(a) => key.client[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => key.client[..4].copy_from_slice(&v4.octets()),
            None => {
                key.client = a.octets();
                key.family = AF_INET6;
            }
        },
    }
    key
}

/// The key of an accepted connection, or `None` when its namespace cannot be read.
pub fn key_of_accepted(
    sock: BorrowedFd<'_>,
    peer: SocketAddr,
    local: SocketAddr,
) -> Option<FlowKey> {
    netns_cookie(sock).ok().map(|ns| key_of(ns, peer, local))
}

/// A flow key's client end as an address.
pub fn client_of(key: &FlowKey) -> SocketAddr {
    SocketAddr::new(addr_of(&key.client, key.family == AF_INET), key.client_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapped_client_is_keyed_as_its_ipv4_address_and_the_namespace_is_kept() {
        let peer: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().expect("addr");
        let local: SocketAddr = "[::ffff:127.0.0.1]:15301".parse().expect("addr");
        let k = key_of(7, peer, local);
        assert_eq!(k.family, AF_INET);
        assert_eq!(&k.client[..4], &[127, 0, 0, 1]);
        assert_eq!(
            (k.netns_cookie, k.client_port, k.server_port),
            (7, 40000, 15301)
        );
        assert_ne!(k, key_of(8, peer, local), "another namespace, another key");
    }

    #[test]
    fn a_socket_reports_the_namespace_it_lives_in() {
        use std::os::fd::AsFd as _;
        let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
        let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
        let cookie = |s: &std::net::UdpSocket| netns_cookie(s.as_fd()).expect("SO_NETNS_COOKIE");
        let (ca, cb) = (cookie(&a), cookie(&b));
        assert_ne!(ca, 0);
        assert_eq!(ca, cb, "two sockets of one namespace");
    }
}
