//! The prefixes this network namespace's routing tables deliver to the host itself: every
//! `local`, `broadcast` and `anycast` route of the tables that every packet the host
//! sends consults (`local`, `main` and `default`, the tables of the kernel's default
//! rules), read with an rtnetlink `RTM_GETROUTE` dump.
//!
//! Why: a packet is delivered locally when the route it meets says `local`, whether or
//! not an interface holds the address. An AnyIP prefix (`ip route add local
//! 100.129.0.0/24 dev lo`, `ip -6 route add local 2a00:1451::/64 dev lo`, which a proxy
//! or a load balancer's node sets up to answer a whole block; `iproute2` files it in the
//! `local` table) makes every address in it the host's, and a connection to one reaches
//! every service listening on the wildcard address, as one to the node's own address
//! does (attack review 43). The interface addresses (`getifaddrs`) miss it.
//!
//! Cost on a node with a large routing table (a BGP-fed one): the socket asks the kernel
//! to filter each dump (`NETLINK_GET_STRICT_CHK`, Linux 4.20) by table and route type,
//! so only the few routes that deliver here are read, and the agent's watcher reads
//! again only on a change [`changes_local`] says can matter.
//!
//! Must never: read a table that only the operator's own rules reach — a transparent
//! proxy's `local 0.0.0.0/0 dev lo table 100`, consulted for packets its firewall marks,
//! would make every address the host's. Unmarked packets from a sandbox (`SO_MARK` takes
//! `CAP_NET_RAW` or `CAP_NET_ADMIN`) meet the default rules' tables first.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use ipnet::IpNet;

/// Route types (include/uapi/linux/rtnetlink.h, `RTN_*`) whose destination is this host.
const RTN_LOCAL: u8 = 2;
const RTN_BROADCAST: u8 = 3;
const RTN_ANYCAST: u8 = 4;
/// The tables of the kernel's default rules (`RT_TABLE_DEFAULT`, `_MAIN`, `_LOCAL`).
const DEFAULT_RULE_TABLES: [u32; 3] = [253, 254, 255];
/// Route attributes (`RTA_*`): the destination prefix, the table id when it needs 32 bits.
const RTA_DST: u16 = 1;
const RTA_TABLE: u16 = 15;
/// `NLM_F_DUMP_INTR`: the table changed while it was dumped; the dump is read again.
const NLM_F_DUMP_INTR: u16 = 0x10;
/// `struct rtmsg`'s size: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
const RTMSG_LEN: usize = 12;
const NLMSG_HDRLEN: usize = 16;

/// The prefixes the default rules' tables deliver here, both families, sorted.
pub fn read() -> io::Result<Vec<IpNet>> {
    // SAFETY: plain system call; the descriptor is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just returned to us and owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: a valid descriptor and an int option of the length passed. Without it (an
    // older kernel) each dump holds every route of the family, filtered below instead.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_NETLINK,
            libc::NETLINK_GET_STRICT_CHK,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    let mut nets = Vec::new();
    let mut seq = 0;
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        for table in DEFAULT_RULE_TABLES {
            for kind in [RTN_LOCAL, RTN_BROADCAST, RTN_ANYCAST] {
                seq += 1;
                let filter = Filter {
                    family,
                    table: table as u8,
                    kind,
                };
                nets.extend(dump_filtered(&fd, seq, filter)?);
            }
        }
    }
    nets.sort();
    nets.dedup();
    Ok(nets)
}

/// What one dump asks for: a family's routes of one table and type (the kernel applies
/// the table and type only under `NETLINK_GET_STRICT_CHK`; [`delivered_here`] checks
/// both either way).
#[derive(Clone, Copy)]
struct Filter {
    family: u8,
    table: u8,
    kind: u8,
}

/// Whether a burst of rtnetlink notifications (address and route groups) can change
/// what is delivered here: an address added or removed, or a route [`delivered_here`]
/// takes. Routes out (a CNI's per-pod routes, a BGP feed) are not.
pub fn changes_local(burst: &[u8]) -> bool {
    messages(burst).any(|(kind, payload)| match kind {
        libc::RTM_NEWADDR | libc::RTM_DELADDR => true,
        libc::RTM_NEWROUTE | libc::RTM_DELROUTE => delivered_here(payload).is_some(),
        _ => false,
    })
}

/// The netlink messages in `buf`: (type, payload), until one's length does not fit.
fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let payload = &rest[NLMSG_HDRLEN..len];
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        Some((kind, payload))
    })
}

/// One filter's local prefixes; a dump the kernel marks interrupted is read again (a
/// few times, then taken as it is: the watcher reads again on the change that
/// interrupted it).
fn dump_filtered(fd: &OwnedFd, seq: u32, filter: Filter) -> io::Result<Vec<IpNet>> {
    let mut last = Vec::new();
    for _ in 0..3 {
        let (nets, interrupted) = dump_once(fd, seq, filter)?;
        if !interrupted {
            return Ok(nets);
        }
        last = nets;
    }
    Ok(last)
}

/// Sends an `RTM_GETROUTE` dump request for `filter` and reads its answer to the end.
fn dump_once(fd: &OwnedFd, seq: u32, filter: Filter) -> io::Result<(Vec<IpNet>, bool)> {
    const REQUEST_LEN: usize = NLMSG_HDRLEN + RTMSG_LEN;
    let mut request = [0u8; REQUEST_LEN];
    request[0..4].copy_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    request[4..6].copy_from_slice(&libc::RTM_GETROUTE.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    request[6..8].copy_from_slice(&flags.to_ne_bytes());
    request[8..12].copy_from_slice(&seq.to_ne_bytes());
    request[NLMSG_HDRLEN] = filter.family;
    request[NLMSG_HDRLEN + 4] = filter.table;
    request[NLMSG_HDRLEN + 7] = filter.kind;
    // SAFETY: a valid descriptor and a buffer of the length passed; an unbound netlink
    // socket sends to the kernel.
    let sent = unsafe { libc::send(fd.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut nets = Vec::new();
    let mut interrupted = false;
    loop {
        // SAFETY: a valid descriptor and a buffer of the length passed.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        let mut rest = &buf[..n as usize];
        while rest.len() >= NLMSG_HDRLEN {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            let flags = u16::from_ne_bytes([rest[6], rest[7]]);
            let msg_seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
            if len < NLMSG_HDRLEN || len > rest.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed rtnetlink message",
                ));
            }
            let payload = &rest[NLMSG_HDRLEN..len];
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
            if msg_seq != seq {
                continue;
            }
            interrupted |= flags & NLM_F_DUMP_INTR != 0;
            match i32::from(kind) {
                // A dump's own error comes in its DONE message (`netlink_dump_done`): a
                // table that does not exist (ENOENT, no route was ever put in it) holds
                // nothing; any other (a request the kernel refused) fails the read, not
                // passes as "no routes".
                libc::NLMSG_DONE => {
                    let code = payload
                        .get(..4)
                        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    if code < 0 && code != -libc::ENOENT {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    return Ok((nets, interrupted));
                }
                libc::NLMSG_ERROR => {
                    let code = payload
                        .get(..4)
                        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    if code < 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                }
                k if k == i32::from(libc::RTM_NEWROUTE) => {
                    nets.extend(delivered_here(payload));
                }
                _ => {}
            }
        }
    }
}

/// The destination prefix of one `RTM_NEWROUTE` payload (`struct rtmsg` and its
/// attributes) when the route delivers here and lies in one of the default rules'
/// tables.
fn delivered_here(payload: &[u8]) -> Option<IpNet> {
    let rtmsg = payload.get(..RTMSG_LEN)?;
    let (family, dst_len, kind) = (rtmsg[0], rtmsg[1], rtmsg[7]);
    if !matches!(kind, RTN_LOCAL | RTN_BROADCAST | RTN_ANYCAST) {
        return None;
    }
    let mut table = u32::from(rtmsg[4]);
    let mut dst: Option<&[u8]> = None;
    let mut attrs = &payload[RTMSG_LEN..];
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            break;
        }
        let data = &attrs[4..len];
        match kind {
            RTA_DST => dst = Some(data),
            RTA_TABLE if data.len() == 4 => {
                table = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
            }
            _ => {}
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    if !DEFAULT_RULE_TABLES.contains(&table) {
        return None;
    }
    let ip = match (i32::from(family), dst) {
        (libc::AF_INET, Some(d)) => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(d).ok()?)),
        (libc::AF_INET6, Some(d)) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(d).ok()?)),
        // No destination attribute: the default route, 0/0 of the family.
        (libc::AF_INET, None) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (libc::AF_INET6, None) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    IpNet::new(ip, dst_len).ok().map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `RTM_NEWROUTE` payload: `struct rtmsg` with `table` and `kind`, then RTA_DST
    /// and, when `table32` is given, RTA_TABLE.
    fn route(
        family: u8,
        dst: &[u8],
        dst_len: u8,
        table: u8,
        kind: u8,
        table32: Option<u32>,
    ) -> Vec<u8> {
        let mut p = vec![family, dst_len, 0, 0, table, 2, 254, kind, 0, 0, 0, 0];
        p.extend_from_slice(&((4 + dst.len()) as u16).to_ne_bytes());
        p.extend_from_slice(&RTA_DST.to_ne_bytes());
        p.extend_from_slice(dst);
        while !p.len().is_multiple_of(4) {
            p.push(0);
        }
        if let Some(t) = table32 {
            p.extend_from_slice(&8u16.to_ne_bytes());
            p.extend_from_slice(&RTA_TABLE.to_ne_bytes());
            p.extend_from_slice(&t.to_ne_bytes());
        }
        p
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn local_broadcast_and_anycast_routes_of_the_default_tables_deliver_here() {
        let v4 = libc::AF_INET as u8;
        let v6 = libc::AF_INET6 as u8;
        let anyip = route(v4, &[100, 129, 0, 0], 24, 255, RTN_LOCAL, None);
        assert_eq!(delivered_here(&anyip), Some(net("100.129.0.0/24")));
        let main = route(v4, &[100, 129, 1, 0], 24, 254, RTN_LOCAL, Some(254));
        assert_eq!(delivered_here(&main), Some(net("100.129.1.0/24")));
        let bcast = route(v4, &[100, 129, 0, 255], 32, 255, RTN_BROADCAST, None);
        assert_eq!(delivered_here(&bcast), Some(net("100.129.0.255/32")));
        let mut six = [0u8; 16];
        six[..4].copy_from_slice(&[0x2a, 0, 0x14, 0x51]);
        let any6 = route(v6, &six, 64, 255, RTN_ANYCAST, None);
        assert_eq!(delivered_here(&any6), Some(net("2a00:1451::/64")));
    }

    /// A notification: the netlink header of `kind` around `payload`.
    fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = ((NLMSG_HDRLEN + payload.len()) as u32)
            .to_ne_bytes()
            .to_vec();
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(payload);
        while !m.len().is_multiple_of(4) {
            m.push(0);
        }
        m
    }

    #[test]
    fn only_address_changes_and_routes_that_deliver_here_are_changes() {
        let v4 = libc::AF_INET as u8;
        let anyip = route(v4, &[100, 129, 0, 0], 24, 255, RTN_LOCAL, None);
        let pod = route(v4, &[10, 244, 1, 7], 32, 254, 1, None);
        assert!(changes_local(&message(libc::RTM_NEWROUTE, &anyip)));
        assert!(changes_local(&message(libc::RTM_DELROUTE, &anyip)));
        assert!(!changes_local(&message(libc::RTM_NEWROUTE, &pod)));
        assert!(changes_local(&message(
            libc::RTM_NEWADDR,
            &[v4, 24, 0, 0, 1, 0, 0, 0]
        )));
        // One that matters after one that does not, in one read.
        let mut burst = message(libc::RTM_NEWROUTE, &pod);
        burst.extend(message(libc::RTM_NEWROUTE, &anyip));
        assert!(changes_local(&burst));
        assert!(
            !changes_local(&burst[..burst.len() - 4]),
            "a cut message is not read"
        );
    }

    /// The machine's own tables: loopback's `local 127.0.0.0/8` (every namespace with `lo`
    /// up has it), read through the filtered dumps without error.
    #[test]
    fn this_namespace_routes_loopback_here() {
        let routes = read().expect("RTM_GETROUTE dumps");
        assert!(routes.contains(&net("127.0.0.0/8")), "{routes:?}");
    }

    #[test]
    fn unicast_routes_and_other_tables_do_not() {
        let v4 = libc::AF_INET as u8;
        // RTN_UNICAST (1): a route out, not here.
        assert_eq!(
            delivered_here(&route(v4, &[100, 129, 0, 0], 24, 254, 1, None)),
            None
        );
        // A transparent proxy's table, reached by a fwmark rule only.
        assert_eq!(
            delivered_here(&route(v4, &[0, 0, 0, 0], 0, 100, RTN_LOCAL, None)),
            None
        );
        // A table id past 255: rtm_table says RT_TABLE_COMPAT (252), RTA_TABLE the id.
        let far = route(v4, &[0, 0, 0, 0], 0, 252, RTN_LOCAL, Some(1000));
        assert_eq!(delivered_here(&far), None);
        // Truncated or odd payloads are skipped, not misread.
        assert_eq!(delivered_here(&[v4, 24, 0]), None);
        assert_eq!(
            delivered_here(&route(v4, &[100, 129, 0], 24, 255, RTN_LOCAL, None)),
            None
        );
    }
}
