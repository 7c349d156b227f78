//! The prefixes this network namespace's routing tables deliver to the host itself: every
//! `local`, `broadcast` and `anycast` route of the tables that every packet the host
//! sends consults (`local`, `main` and `default`, the tables of the kernel's default
//! rules), read with rtnetlink `RTM_GETROUTE` dumps (`netlink-packet-route`).
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
};

use ipnet::IpNet;
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// The tables of the kernel's default rules (`RT_TABLE_DEFAULT`, `_MAIN`, `_LOCAL`).
const DEFAULT_RULE_TABLES: [u32; 3] = [253, 254, 255];
/// The route types whose destination is this host.
const HERE: [RouteType; 3] = [RouteType::Local, RouteType::Broadcast, RouteType::Anycast];

/// The prefixes the default rules' tables deliver here, both families, sorted.
pub fn read() -> io::Result<Vec<IpNet>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    // Without it (an older kernel) each dump holds every route of the family, filtered
    // by `delivered_here` instead.
    let _ = socket.set_netlink_get_strict_chk(true);
    let mut nets = Vec::new();
    let mut seq = 0;
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        for table in DEFAULT_RULE_TABLES {
            for kind in HERE {
                seq += 1;
                let filter = Filter {
                    family,
                    table: table as u8,
                    kind,
                };
                nets.extend(dump_filtered(&socket, seq, filter)?);
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
    family: AddressFamily,
    table: u8,
    kind: RouteType,
}

/// Whether a burst of rtnetlink notifications (address and route groups) can change
/// what is delivered here: an address added or removed, a route [`delivered_here`]
/// takes, or a message that does not parse (read again rather than missed). Routes out
/// (a CNI's per-pod routes, a BGP feed) are not.
pub fn changes_local(burst: &[u8]) -> bool {
    framed(burst).any(|frame| {
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(frame).map(|m| m.payload) {
            Ok(NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewAddress(_) | RouteNetlinkMessage::DelAddress(_),
            )) => true,
            Ok(NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r),
            )) => delivered_here(&r).is_some(),
            Ok(_) => false,
            Err(_) => true,
        }
    })
}

/// The netlink messages in `buf`, each its own bytes, until one's length does not fit
/// (a cut message ends the read).
fn framed(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let len = NetlinkBuffer::new_checked(rest).ok()?.length() as usize;
        let frame = &rest[..len];
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        Some(frame)
    })
}

/// One filter's local prefixes; a dump the kernel marks interrupted is read again (a
/// few times, then taken as it is: the watcher reads again on the change that
/// interrupted it).
fn dump_filtered(socket: &Socket, seq: u32, filter: Filter) -> io::Result<Vec<IpNet>> {
    let mut last = Vec::new();
    for _ in 0..3 {
        let (nets, interrupted) = dump_once(socket, seq, filter)?;
        if !interrupted {
            return Ok(nets);
        }
        last = nets;
    }
    Ok(last)
}

/// Sends an `RTM_GETROUTE` dump request for `filter` and reads its answer to the end.
fn dump_once(socket: &Socket, seq: u32, filter: Filter) -> io::Result<(Vec<IpNet>, bool)> {
    let mut route = RouteMessage::default();
    route.header.address_family = filter.family;
    route.header.table = filter.table;
    route.header.kind = filter.kind;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let mut request = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::GetRoute(route)),
    );
    request.finalize();
    let mut buf = vec![0u8; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut nets = Vec::new();
    let mut interrupted = false;
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        let n = socket.recv(&mut buf, 0)?;
        for frame in framed(&buf[..n]) {
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(frame).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("rtnetlink: {e}"))
            })?;
            if m.header.sequence_number != seq {
                continue;
            }
            interrupted |= m.header.flags & NLM_F_DUMP_INTR != 0;
            match m.payload {
                // A dump's own error comes in its DONE message (`netlink_dump_done`): a
                // table that does not exist (ENOENT, no route was ever put in it) holds
                // nothing; any other (a request the kernel refused) fails the read, not
                // passes as "no routes".
                NetlinkPayload::Done(done) => {
                    if done.code < 0 && done.code != -libc::ENOENT {
                        return Err(io::Error::from_raw_os_error(-done.code));
                    }
                    return Ok((nets, interrupted));
                }
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(io::Error::from_raw_os_error(-code.get()));
                    }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => {
                    nets.extend(delivered_here(&r));
                }
                _ => {}
            }
        }
    }
}

/// The destination prefix of route `r` when it delivers here and lies in one of the
/// default rules' tables.
fn delivered_here(r: &RouteMessage) -> Option<IpNet> {
    if !HERE.contains(&r.header.kind) {
        return None;
    }
    // A table id past 255 is in RTA_TABLE (the header says RT_TABLE_COMPAT then).
    let table = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table));
    if !DEFAULT_RULE_TABLES.contains(&table) {
        return None;
    }
    let dst = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(d) => Some(d),
        _ => None,
    });
    let ip = match (r.header.address_family, dst) {
        (AddressFamily::Inet, Some(RouteAddress::Inet(ip))) => IpAddr::V4(*ip),
        (AddressFamily::Inet6, Some(RouteAddress::Inet6(ip))) => IpAddr::V6(*ip),
        // No destination attribute: the default route, 0/0 of the family.
        (AddressFamily::Inet, None) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (AddressFamily::Inet6, None) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    IpNet::new(ip, r.header.destination_prefix_length)
        .ok()
        .map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route to `dst`/`len` of `kind` in `table` (in the header; past 255 also in
    /// RTA_TABLE, the header saying RT_TABLE_COMPAT as the kernel does).
    fn route(dst: IpAddr, len: u8, table: u32, kind: RouteType) -> RouteMessage {
        let mut r = RouteMessage::default();
        r.header.address_family = if dst.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        r.header.destination_prefix_length = len;
        r.header.table = u8::try_from(table).unwrap_or(252);
        r.header.kind = kind;
        r.attributes.push(RouteAttribute::Destination(dst.into()));
        if table > 255 {
            r.attributes.push(RouteAttribute::Table(table));
        }
        r
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn local_broadcast_and_anycast_routes_of_the_default_tables_deliver_here() {
        let anyip = route(ip("100.129.0.0"), 24, 255, RouteType::Local);
        assert_eq!(delivered_here(&anyip), Some(net("100.129.0.0/24")));
        let main = route(ip("100.129.1.0"), 24, 254, RouteType::Local);
        assert_eq!(delivered_here(&main), Some(net("100.129.1.0/24")));
        let bcast = route(ip("100.129.0.255"), 32, 255, RouteType::Broadcast);
        assert_eq!(delivered_here(&bcast), Some(net("100.129.0.255/32")));
        let any6 = route(ip("2a00:1451::"), 64, 255, RouteType::Anycast);
        assert_eq!(delivered_here(&any6), Some(net("2a00:1451::/64")));
    }

    /// A notification of `route` (or of an address), as the kernel sends it.
    fn message(inner: RouteNetlinkMessage) -> Vec<u8> {
        let mut m = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(inner));
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    }

    #[test]
    fn only_address_changes_and_routes_that_deliver_here_are_changes() {
        let anyip = route(ip("100.129.0.0"), 24, 255, RouteType::Local);
        let pod = route(ip("10.244.1.7"), 32, 254, RouteType::Unicast);
        assert!(changes_local(&message(RouteNetlinkMessage::NewRoute(
            anyip.clone()
        ))));
        assert!(changes_local(&message(RouteNetlinkMessage::DelRoute(
            anyip.clone()
        ))));
        assert!(!changes_local(&message(RouteNetlinkMessage::NewRoute(
            pod.clone()
        ))));
        assert!(changes_local(&message(RouteNetlinkMessage::NewAddress(
            Default::default()
        ))));
        // One that matters after one that does not, in one read.
        let mut burst = message(RouteNetlinkMessage::NewRoute(pod));
        burst.extend(message(RouteNetlinkMessage::NewRoute(anyip)));
        assert!(changes_local(&burst));
        assert!(
            !changes_local(&burst[..burst.len() - 4]),
            "a cut message is not read"
        );
        // A whole message that does not parse (a route whose header is cut short): read
        // again rather than missed.
        let mut odd = message(RouteNetlinkMessage::NewRoute(route(
            ip("10.244.1.7"),
            32,
            254,
            RouteType::Unicast,
        )));
        odd.truncate(20);
        odd[..4].copy_from_slice(&20u32.to_ne_bytes());
        assert!(changes_local(&odd));
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
        // A route out, not here.
        assert_eq!(
            delivered_here(&route(ip("100.129.0.0"), 24, 254, RouteType::Unicast)),
            None
        );
        // A transparent proxy's table, reached by a fwmark rule only.
        assert_eq!(
            delivered_here(&route(ip("0.0.0.0"), 0, 100, RouteType::Local)),
            None
        );
        // A table id past 255: the header says RT_TABLE_COMPAT (252), RTA_TABLE the id.
        assert_eq!(
            delivered_here(&route(ip("0.0.0.0"), 0, 1000, RouteType::Local)),
            None
        );
        // A destination of the other family is not misread.
        let mut odd = route(ip("100.129.0.0"), 24, 255, RouteType::Local);
        odd.header.address_family = AddressFamily::Inet6;
        assert_eq!(delivered_here(&odd), None);
    }
}
