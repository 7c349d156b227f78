//! The addresses of the agent's network namespace, kept current from rtnetlink: what a
//! sandbox beside the agent may use as a source address (`HB_LOCAL_ADDRS`, read by the
//! kernel's `cgroup/bind4|6` and `cgroup/sendmsg4|6`), and whom the resolver's own
//! listeners answer.
//!
//! Why: a socket whose source is not one of the host's addresses (a host with
//! `net.ipv6.ip_nonlocal_bind = 1` lets any socket bind one, no option needed) sends
//! packets whose answers go to that address, off the host — hb's resolver echoed a
//! sandbox's chosen name to the attacker's host that way (attack review 13). The kernel
//! side refuses such a source; the resolver answers only local sources besides, for
//! what that refusal cannot see (a connected UDP socket's `IPV6_PKTINFO` control
//! message: the kernel runs no sendmsg hook for it).
//!
//! "Local" as the kernel's own check (`inet_addr_type` == `RTN_LOCAL`,
//! `ipv6_chk_addr`) means it: every address of every interface, and for an IPv4
//! address on a loopback device its whole prefix (the kernel routes 127.0.0.0/8 to `lo`
//! as local for 127.0.0.1/8). The list comes from `getifaddrs` (an `RTM_GETADDR` dump)
//! and, for what the host delivers here without an address of its own (an AnyIP
//! prefix's `local` route), from the routing tables (`local_routes`); both are read again
//! whenever a netlink socket subscribed to `RTMGRP_IPV4_IFADDR`, `RTMGRP_IPV6_IFADDR`,
//! `RTMGRP_IPV4_ROUTE` and `RTMGRP_IPV6_ROUTE` hears of a change (or lost some:
//! `ENOBUFS`). The socket subscribes before the first read, so no change between the two
//! is missed.
//!
//! Only the agent's namespace: a pod's namespace has addresses of its own, which this
//! does not track; the kernel side checks sockets of the agent's namespace only
//! (`HB_HOST_NETNS`), and the resolver's listeners in a pod's namespace answer as
//! before (the options that give a foreign source stay refused there).

use std::{
    collections::HashSet,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    sync::{Arc, RwLock},
    time::Duration,
};

use aya::maps::{LpmTrie, MapData, lpm_trie::Key};
use hb_common::{LOCAL_DELIVERED, LOCAL_EXCEPTED, LOCAL_OWN, limits, map_names};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::maps::{MapsError, open_typed, sync_trie};

#[derive(Debug, thiserror::Error)]
pub enum LocalAddrsError {
    #[error("cannot read this network namespace's addresses ({what})")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Maps(#[from] MapsError),
}

/// The local addresses: each address, and on a loopback device each IPv4 prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Set {
    exact: HashSet<IpAddr>,
    loopback4: Vec<Ipv4Net>,
    /// Addresses that are no source but whose packets are delivered here too: the
    /// network and broadcast address of each IPv4 prefix shorter than /31 on a device
    /// other than loopback (the kernel's `RTN_BROADCAST` routes, `fib_add_ifaddr`; such a
    /// datagram also goes to the whole link), and the subnet-router anycast address of
    /// each IPv6 prefix shorter than /127 (RFC 4291 §2.6.1: a forwarding host, as every
    /// Kubernetes node is, takes datagrams to it, `addrconf_join_anycast`).
    also_delivered: Vec<IpAddr>,
    /// Prefixes the routing tables deliver here that no entry above covers: a `local`,
    /// `broadcast` or `anycast` route without an address of the host's behind it (an
    /// AnyIP prefix, `ip route add local 100.129.0.0/24 dev lo`; see `local_routes`).
    /// Delivered here, and no source: whether the world routes such a prefix back to
    /// this host is not the kernel's to say.
    routed: Vec<IpNet>,
}

/// The kernel map's key of one address: IPv4 as IPv4-mapped IPv6, prefix 128.
fn address_key(ip: IpAddr) -> Key<[u8; 16]> {
    match ip {
        IpAddr::V4(v4) => Key::new(128, v4.to_ipv6_mapped().octets()),
        IpAddr::V6(v6) => Key::new(128, v6.octets()),
    }
}

impl Set {
    /// From `(address, prefix length, on a loopback device)` as an interface lists it.
    pub fn from_entries(entries: impl IntoIterator<Item = (IpAddr, u8, bool)>) -> Self {
        let mut set = Self::default();
        for (ip, prefix, loopback) in entries {
            let ip = canonical(ip);
            set.exact.insert(ip);
            let edges = match ip {
                IpAddr::V4(v4) => {
                    let Ok(net) = Ipv4Net::new(v4, prefix.min(32)).map(|n| n.trunc()) else {
                        continue;
                    };
                    if loopback {
                        if !set.loopback4.contains(&net) {
                            set.loopback4.push(net);
                        }
                        continue;
                    }
                    if net.prefix_len() >= 31 {
                        continue;
                    }
                    vec![net.network().into(), net.broadcast().into()]
                }
                IpAddr::V6(v6) => match Ipv6Net::new(v6, prefix.min(128)) {
                    Ok(net) if net.prefix_len() < 127 => vec![net.network().into()],
                    _ => continue,
                },
            };
            for edge in edges {
                if !set.also_delivered.contains(&edge) {
                    set.also_delivered.push(edge);
                }
            }
        }
        set.loopback4.sort();
        set.also_delivered.sort();
        set
    }

    /// The set with the prefixes the routing tables deliver here (`local_routes::read`)
    /// added, but for those an address or a loopback prefix of the set already covers
    /// (each address has its own `local` route, each IPv4 prefix its `broadcast` one).
    #[must_use]
    pub fn with_routes(mut self, routes: impl IntoIterator<Item = IpNet>) -> Self {
        for net in routes {
            let net = match net {
                IpNet::V6(v6) if v6.prefix_len() >= 96 => v6
                    .addr()
                    .to_ipv4_mapped()
                    .and_then(|v4| Ipv4Net::new(v4, v6.prefix_len() - 96).ok())
                    .map_or(net, IpNet::V4),
                other => other,
            };
            let single = net.prefix_len() == net.max_prefix_len();
            let covered = (single
                && (self.exact.contains(&net.addr()) || self.also_delivered.contains(&net.addr())))
                || matches!(net, IpNet::V4(n) if self.loopback4.iter().any(|l| l.contains(&n)));
            if !covered && !self.routed.contains(&net) {
                self.routed.push(net);
            }
        }
        self.routed.sort();
        self
    }

    /// Whether `ip` is an address of this namespace (IPv4-mapped IPv6 as its IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.exact.contains(&ip)
            || matches!(ip, IpAddr::V4(v4) if self.loopback4.iter().any(|n| n.contains(&v4)))
    }

    /// Whether a packet to `ip` is delivered on this host: one of its addresses, or one
    /// its prefixes give it (see `also_delivered`).
    pub fn delivers_here(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.contains(ip)
            || self.also_delivered.contains(&ip)
            || self.routed.iter().any(|n| n.contains(&ip))
    }

    /// The kernel map's entries: IPv4 as IPv4-mapped IPv6 (prefix 96 + its own); an
    /// entry wholly inside one of `except` (`egress.exception_cidrs`) is
    /// `LOCAL_EXCEPTED`, every other one `LOCAL_OWN`. (An address on a loopback device
    /// is both an address and a prefix: a /32 is one key, with one value.) Then each
    /// address only delivered here (`also_delivered`) that is no address of the host's
    /// and in no exception, as `LOCAL_DELIVERED`: the kernel refuses it as a static
    /// CIDR's destination (attack review 27), and never takes it as a source. Last the
    /// routed prefixes (`routed`), as `LOCAL_DELIVERED` prefixes with the exceptions cut
    /// out of them (an address inside an exception finds no entry, as one outside the
    /// host does), each key not already written.
    pub fn keys(&self, except: &[IpNet]) -> Vec<(Key<[u8; 16]>, u32)> {
        let value = |net: IpNet| {
            if except.iter().any(|e| e.contains(&net)) {
                LOCAL_EXCEPTED
            } else {
                LOCAL_OWN
            }
        };
        let mut keys: Vec<(Key<[u8; 16]>, u32)> = self
            .exact
            .iter()
            .map(|&ip| (address_key(ip), value(IpNet::from(ip))))
            .chain(self.loopback4.iter().map(|&n| {
                let key = Key::new(
                    96 + u32::from(n.prefix_len()),
                    n.network().to_ipv6_mapped().octets(),
                );
                (key, value(IpNet::V4(n)))
            }))
            .chain(
                self.also_delivered
                    .iter()
                    .filter(|&&ip| {
                        !self.exact.contains(&ip) && !except.iter().any(|e| e.contains(&ip))
                    })
                    .map(|&ip| (address_key(ip), LOCAL_DELIVERED)),
            )
            .collect();
        let mut written: HashSet<([u8; 16], u32)> = keys
            .iter()
            .map(|(k, _)| (k.data(), k.prefix_len()))
            .collect();
        for net in self.routed.iter().flat_map(|&n| without(n, except)) {
            let key = prefix_key(net);
            if written.insert((key.data(), key.prefix_len())) {
                keys.push((key, LOCAL_DELIVERED));
            }
        }
        keys.sort_by_key(|(k, _)| (k.data(), k.prefix_len()));
        keys
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.loopback4.len() + self.routed.len()
    }
}

/// The kernel map's key of a prefix: IPv4 as IPv4-mapped IPv6 (prefix 96 + its own).
fn prefix_key(net: IpNet) -> Key<[u8; 16]> {
    match net {
        IpNet::V4(n) => Key::new(
            96 + u32::from(n.prefix_len()),
            n.network().to_ipv6_mapped().octets(),
        ),
        IpNet::V6(n) => Key::new(u32::from(n.prefix_len()), n.network().octets()),
    }
}

/// `net` without every part of it that one of `holes` covers, as the fewest prefixes:
/// each half that holds a hole is split again, each that holds none is kept whole.
fn without(net: IpNet, holes: &[IpNet]) -> Vec<IpNet> {
    if holes.iter().any(|h| h.contains(&net)) {
        return Vec::new();
    }
    if !holes.iter().any(|h| net.contains(h)) {
        return vec![net];
    }
    net.subnets(net.prefix_len() + 1)
        .into_iter()
        .flatten()
        .flat_map(|half| without(half, holes))
        .collect()
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The current set, shared by the resolver's listeners and the watcher that renews it,
/// and the count of its changes: what validated an address before a change (a cached
/// answer, an allow entry) judges it again after, since an address the host gains is
/// refused from then on ([`crate::egress::host_own`]).
#[derive(Clone)]
pub struct LocalAddrs {
    set: Arc<RwLock<Set>>,
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for LocalAddrs {
    fn default() -> Self {
        Self::of(Set::default())
    }
}

impl LocalAddrs {
    fn of(set: Set) -> Self {
        Self {
            set: Arc::new(RwLock::new(set)),
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// A fixed set (tests).
    #[cfg(test)]
    pub fn fixed(set: Set) -> Self {
        Self::of(set)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.set.read().is_ok_and(|s| s.contains(ip))
    }

    /// [`Set::delivers_here`] of the current set.
    pub fn delivers_here(&self, ip: IpAddr) -> bool {
        self.set.read().is_ok_and(|s| s.delivers_here(ip))
    }

    /// Told of each change, once the set holds it.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The set is now `set`.
    fn replace(&self, set: Set) {
        if let Ok(mut current) = self.set.write() {
            *current = set;
        }
        self.changes.send_modify(|n| *n += 1);
    }

    /// The calling thread's namespace's addresses now, not kept current: for an outbound
    /// path that lives one task (an HTTP rotator's call, the CLI's debug commands).
    pub fn snapshot() -> io::Result<Self> {
        read().map(Self::of)
    }

    /// Reads this namespace's addresses into the shared set and the kernel's map, and
    /// keeps both current from a thread of its own (which stays in the namespace the
    /// agent started in whatever other threads enter). Call in the agent's namespace.
    pub fn start(bpffs_dir: &Path, except: Vec<IpNet>) -> Result<Self, LocalAddrsError> {
        let events = subscribe().map_err(|source| LocalAddrsError::Io {
            what: "subscribing to address changes on a netlink socket",
            source,
        })?;
        let set = read().map_err(|source| LocalAddrsError::Io {
            what: "getifaddrs and the routes",
            source,
        })?;
        let mut map: LpmTrie<MapData, [u8; 16], u32> =
            open_typed(bpffs_dir, map_names::LOCAL_ADDRS)?;
        write_map(&mut map, &set, &except)?;
        tracing::info!(addresses = set.len(), "local addresses read");
        let shared = Self::of(set);
        let renewed = shared.clone();
        std::thread::Builder::new()
            .name("hb-local-addrs".into())
            .spawn(move || watch(&events, &mut map, &except, &renewed))
            .map_err(|source| LocalAddrsError::Io {
                what: "starting the address watcher thread",
                source,
            })?;
        Ok(shared)
    }
}

fn write_map(
    map: &mut LpmTrie<MapData, [u8; 16], u32>,
    set: &Set,
    except: &[IpNet],
) -> Result<(), MapsError> {
    let keys = set.keys(except);
    if keys.len() > limits::LOCAL_ADDRS as usize {
        tracing::warn!(
            addresses = keys.len(),
            limit = limits::LOCAL_ADDRS,
            "more local addresses than HB_LOCAL_ADDRS holds: sandboxes cannot bind the rest"
        );
    }
    let keys = keys
        .into_iter()
        .take(limits::LOCAL_ADDRS as usize)
        .collect();
    sync_trie(map, map_names::LOCAL_ADDRS, keys)
}

/// Waits for address changes and renews the set and the map after each burst of them.
fn watch(
    events: &OwnedFd,
    map: &mut LpmTrie<MapData, [u8; 16], u32>,
    except: &[IpNet],
    shared: &LocalAddrs,
) {
    let mut buf = vec![0u8; 16 * 1024];
    // The map missed the last change (its update failed): try again in a second, without
    // waiting for another change.
    let mut stale = false;
    loop {
        let n = if stale {
            std::thread::sleep(Duration::from_secs(1));
            0
        } else {
            // SAFETY: a valid descriptor and a buffer of the length passed.
            unsafe { libc::recv(events.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) }
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Messages were lost: read the whole list again below.
                Some(libc::ENOBUFS) => {}
                _ => {
                    tracing::warn!(error = %e, "reading address changes failed; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            }
        }
        // ENOBUFS (messages lost) and a retry read again whatever the burst held.
        // A message longer than the buffer (cut) counts as relevant too.
        let mut relevant = n <= 0
            || n as usize >= buf.len()
            || crate::local_routes::changes_local(&buf[..n as usize]);
        // The rest of a burst (an interface coming up brings several).
        loop {
            // SAFETY: as above.
            let more = unsafe {
                libc::recv(
                    events.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if more <= 0 {
                break;
            }
            relevant |= more as usize >= buf.len()
                || crate::local_routes::changes_local(&buf[..more as usize]);
        }
        if !relevant {
            // Routes out (a CNI's per-pod routes, a BGP feed): nothing delivered here.
            continue;
        }
        let set = match read() {
            Ok(set) => set,
            Err(e) => {
                tracing::warn!(error = %e, "reading local addresses failed; keeping the last list");
                continue;
            }
        };
        let unchanged = match shared.set.read() {
            Ok(current) => *current == set,
            Err(_) => return,
        };
        if unchanged && !stale {
            continue;
        }
        // The map first: a new address is bindable by the time the resolver answers it,
        // and a removed one stops being either at about the same moment.
        if let Err(e) = write_map(map, &set, except) {
            tracing::warn!(error = %e, "updating HB_LOCAL_ADDRS failed; retrying in a second");
            stale = true;
            continue;
        }
        stale = false;
        tracing::info!(addresses = set.len(), "local addresses changed");
        shared.replace(set);
    }
}

/// A netlink socket subscribed to address and route changes of both families.
fn subscribe() -> io::Result<OwnedFd> {
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
    // SAFETY: zeroed is a valid sockaddr_nl.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // Routes too: a `local` route without an address changes what is delivered here.
    addr.nl_groups = (libc::RTMGRP_IPV4_IFADDR
        | libc::RTMGRP_IPV6_IFADDR
        | libc::RTMGRP_IPV4_ROUTE
        | libc::RTMGRP_IPV6_ROUTE) as u32;
    // SAFETY: a valid descriptor and address of the length passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// This namespace's addresses now, and the prefixes its routes deliver here.
pub fn read() -> io::Result<Set> {
    let routes = crate::local_routes::read()?;
    Ok(read_addresses()?.with_routes(routes))
}

/// This namespace's interface addresses now (`getifaddrs`).
fn read_addresses() -> io::Result<Set> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: an out-pointer; freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut entries = Vec::new();
    let mut p = head;
    while !p.is_null() {
        // SAFETY: a node of the list getifaddrs returned, not freed yet.
        let ifa = unsafe { &*p };
        // SAFETY: the node's address pointers are null or point at sockaddrs of the
        // family they name.
        if let Some(ip) = unsafe { sockaddr_ip(ifa.ifa_addr) } {
            let full = if ip.is_ipv4() { 32 } else { 128 };
            // SAFETY: as above.
            let prefix = unsafe { sockaddr_ip(ifa.ifa_netmask) }.map_or(full, mask_len);
            let loopback = ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0;
            entries.push((ip, prefix, loopback));
        }
        p = ifa.ifa_next;
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(Set::from_entries(entries))
}

/// # Safety
/// `sa` is null or points at a sockaddr of the family it names.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: per the contract.
    match i32::from(unsafe { (*sa).sa_family }) {
        libc::AF_INET => {
            // SAFETY: an AF_INET sockaddr is a sockaddr_in.
            let sin = unsafe { &*sa.cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: an AF_INET6 sockaddr is a sockaddr_in6.
            let sin6 = unsafe { &*sa.cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// The prefix length of a netmask (its leading ones).
fn mask_len(mask: IpAddr) -> u8 {
    let ones = match mask {
        IpAddr::V4(m) => u32::from(m).leading_ones(),
        IpAddr::V6(m) => u128::from(m).leading_ones(),
    };
    u8::try_from(ones).unwrap_or(128)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn sample() -> Set {
        Set::from_entries([
            (ip("127.0.0.1"), 8, true),
            (ip("::1"), 128, true),
            (ip("203.0.113.20"), 24, false),
            (ip("2001:db8::20"), 64, false),
            (ip("fe80::1"), 64, false),
        ])
    }

    #[test]
    fn each_address_is_local_and_its_neighbours_are_not() {
        let s = sample();
        for local in [
            "203.0.113.20",
            "2001:db8::20",
            "fe80::1",
            "::1",
            "::ffff:203.0.113.20",
        ] {
            assert!(s.contains(ip(local)), "{local}");
        }
        // The prefix of an address on an ordinary interface is on the link, not local;
        // IPv6 on a loopback device is local per address only.
        for foreign in [
            "203.0.113.21",
            "2001:db8::21",
            "2001:db8:66::66",
            "::2",
            "0.0.0.0",
            "::",
        ] {
            assert!(!s.contains(ip(foreign)), "{foreign}");
        }
    }

    #[test]
    fn an_ipv4_prefix_on_a_loopback_device_is_local_whole() {
        let s = sample();
        assert!(s.contains(ip("127.0.0.53")));
        assert!(s.contains(ip("127.255.255.254")));
        assert!(s.contains(ip("::ffff:127.1.2.3")));
        assert!(!s.contains(ip("128.0.0.1")));
    }

    #[test]
    fn a_subnets_broadcast_and_network_addresses_are_delivered_here_but_are_no_source() {
        let s = sample();
        for edge in ["203.0.113.255", "203.0.113.0", "::ffff:203.0.113.255"] {
            assert!(s.delivers_here(ip(edge)), "{edge}");
            assert!(!s.contains(ip(edge)), "{edge} is no source");
        }
        assert!(s.delivers_here(ip("203.0.113.20")));
        assert!(!s.delivers_here(ip("203.0.113.21")));
        // A /31 or /32 has no broadcast address (RFC 3021).
        let point = Set::from_entries([(ip("198.51.100.8"), 31, false)]);
        assert!(!point.delivers_here(ip("198.51.100.9")));
        // IPv6: the subnet-router anycast address of the prefix, nothing else of it.
        assert!(s.delivers_here(ip("2001:db8::")));
        assert!(!s.contains(ip("2001:db8::")));
        assert!(!s.delivers_here(ip("2001:db8::21")));
    }

    /// An address on a loopback device is a key twice (the address, its prefix), with
    /// one value: excepted when an exception holds it, as the tests' own addresses are.
    #[test]
    fn an_excepted_loopback_address_is_excepted_as_a_prefix_too() {
        let set = Set::from_entries([(ip("203.0.113.10"), 32, true), (ip("127.0.0.1"), 8, true)]);
        let keys = set.keys(&["203.0.113.0/24".parse().expect("net")]);
        let of = |prefix: u32, addr: &str| {
            let IpAddr::V4(v4) = ip(addr) else {
                unreachable!("IPv4")
            };
            keys.iter()
                .filter(|(k, _)| {
                    k.prefix_len() == prefix && k.data() == v4.to_ipv6_mapped().octets()
                })
                .map(|(_, v)| *v)
                .collect::<Vec<_>>()
        };
        assert_eq!(of(128, "203.0.113.10"), [LOCAL_EXCEPTED, LOCAL_EXCEPTED]);
        assert_eq!(of(104, "127.0.0.0"), [LOCAL_OWN]);
    }

    #[test]
    fn the_kernel_keys_map_ipv4_into_ipv6() {
        let keys = sample().keys(&["203.0.113.20/32".parse().expect("net")]);
        let has = |prefix: u32, addr: &str| {
            let want = match ip(addr) {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            keys.iter()
                .any(|(k, _)| k.prefix_len() == prefix && k.data() == want)
        };
        assert!(has(128, "203.0.113.20"));
        let value = |addr: &str| {
            let IpAddr::V4(v4) = ip(addr) else {
                unreachable!("IPv4")
            };
            keys.iter()
                .find(|(k, _)| k.prefix_len() == 128 && k.data() == v4.to_ipv6_mapped().octets())
                .map(|(_, v)| *v)
        };
        assert_eq!(
            value("203.0.113.20"),
            Some(LOCAL_EXCEPTED),
            "inside an exception"
        );
        assert_eq!(value("127.0.0.1"), Some(LOCAL_OWN));
        assert!(has(128, "127.0.0.1"));
        assert!(has(104, "127.0.0.0"), "127/8 as ::ffff:127.0.0.0/104");
        assert!(has(128, "2001:db8::20"));
        assert!(has(128, "::1"));
        assert!(
            !has(120, "203.0.113.0"),
            "an ordinary interface's prefix is not local"
        );
        // What the prefixes deliver here, outside the exception: destinations, no source.
        for delivered in ["203.0.113.0", "203.0.113.255"] {
            assert_eq!(value(delivered), Some(LOCAL_DELIVERED), "{delivered}");
        }
        assert!(has(128, "2001:db8::") && has(128, "fe80::"));
        assert_eq!(keys.len(), 10);
        let excepted = sample().keys(&["203.0.113.0/24".parse().expect("net")]);
        assert_eq!(
            excepted.len(),
            8,
            "an exception over a prefix's edges leaves them out"
        );
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    /// The routes the kernel makes for [`sample`]'s addresses, and two AnyIP prefixes.
    fn with_anyip() -> Set {
        sample().with_routes([
            net("127.0.0.0/8"),
            net("127.0.0.1/32"),
            net("127.255.255.255/32"),
            net("203.0.113.20/32"),
            net("203.0.113.255/32"),
            net("::1/128"),
            net("2001:db8::/128"),
            net("2001:db8::20/128"),
            net("100.129.0.0/24"),
            net("::ffff:100.130.0.0/120"),
            net("2a00:1451::/64"),
        ])
    }

    #[test]
    fn a_locally_routed_prefix_is_delivered_here_but_is_no_source() {
        let s = with_anyip();
        for routed in [
            "100.129.0.5",
            "::ffff:100.129.0.255",
            "100.130.0.9",
            "2a00:1451::5",
        ] {
            assert!(s.delivers_here(ip(routed)), "{routed}");
            assert!(!s.contains(ip(routed)), "{routed} is no source");
        }
        assert!(!s.delivers_here(ip("100.129.1.5")));
        assert!(!s.delivers_here(ip("2a00:1451:0:1::5")));
        // The addresses' own routes add nothing: only the three AnyIP prefixes remain.
        assert_eq!(
            s.routed,
            [
                net("100.129.0.0/24"),
                net("100.130.0.0/24"),
                net("2a00:1451::/64")
            ]
        );
    }

    #[test]
    fn a_locally_routed_prefix_is_a_delivered_prefix_key_with_its_exceptions_cut_out() {
        let s = with_anyip();
        let plain = s.keys(&[]);
        assert_eq!(plain.len(), sample().keys(&[]).len() + 3);
        let value = |keys: &[(Key<[u8; 16]>, u32)], len: u32, a: &str| {
            let data = match ip(a) {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            keys.iter()
                .find(|(k, _)| k.prefix_len() == len && k.data() == data)
                .map(|(_, v)| *v)
        };
        assert_eq!(value(&plain, 120, "100.129.0.0"), Some(LOCAL_DELIVERED));
        assert_eq!(value(&plain, 64, "2a00:1451::"), Some(LOCAL_DELIVERED));
        // An exception over one address of the prefix: the rest in 8 prefixes (/25 … /32),
        // the excepted address in none of them.
        let cut = s.keys(&[net("100.129.0.7/32")]);
        let pieces: Vec<(u32, u32)> = cut
            .iter()
            .filter(|(k, _)| k.data()[..15] == ip6_prefix("100.129.0.0")[..15])
            .map(|(k, v)| (k.prefix_len(), *v))
            .collect();
        assert_eq!(pieces.len(), 8, "{pieces:?}");
        assert!(pieces.iter().all(|&(_, v)| v == LOCAL_DELIVERED));
        assert_eq!(value(&cut, 128, "100.129.0.6"), Some(LOCAL_DELIVERED));
        assert_eq!(value(&cut, 128, "100.129.0.7"), None);
        // An exception over the whole prefix: nothing of it.
        let gone = s.keys(&[net("100.129.0.0/16")]);
        assert_eq!(gone.len(), plain.len() - 1);
        // And the excepted address is no longer the host's (the resolvers' check).
        assert!(!crate::egress::host_own(
            &LocalAddrs::fixed(s.clone()),
            &[net("100.129.0.7/32")],
            &[],
            ip("100.129.0.7")
        ));
        assert!(crate::egress::host_own(
            &LocalAddrs::fixed(s),
            &[net("100.129.0.7/32")],
            &[],
            ip("100.129.0.6")
        ));
    }

    fn ip6_prefix(a: &str) -> [u8; 16] {
        match ip(a) {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        }
    }

    #[test]
    fn netmasks_give_prefix_lengths() {
        assert_eq!(mask_len(ip("255.0.0.0")), 8);
        assert_eq!(mask_len(ip("255.255.255.255")), 32);
        assert_eq!(mask_len(ip("ffff:ffff:ffff:ffff::")), 64);
        assert_eq!(mask_len(ip("0.0.0.0")), 0);
    }

    /// The machine's own list holds loopback, as every namespace's does once `lo` is up.
    #[test]
    fn this_namespace_lists_loopback() {
        let s = read().expect("getifaddrs and the routes");
        assert!(
            s.contains(ip("127.0.0.1")) || s.contains(ip("::1")),
            "{s:?}"
        );
    }
}
