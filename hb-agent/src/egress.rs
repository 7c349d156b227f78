//! The default deny ranges: where a sandbox may never connect unless an operator carves
//! the range out with `egress.exception_cidrs`; and the judgement of IPv6 addresses that
//! carry an IPv4 one (IPv4-mapped, NAT64 prefixes from `egress.nat64_prefixes`), which
//! the resolvers share with the kernel (hb-ebpf `policy::embedded_v4`).
//!
//! Owns: the named list and its sources, the NAT64 prefix rules (RFC 6052) and
//! [`denied`]. Must never: shrink silently — every entry below is there for a reason
//! written beside it, and tests check the notorious ones.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};

/// RFC 6052's well-known NAT64 prefix: judged as NAT64 whether configured or not (the
/// kernel does the same), so an empty `egress.nat64_prefixes` opens nothing.
pub const WELL_KNOWN_NAT64: &str = "64:ff9b::/96";

/// Parses one `egress.nat64_prefixes` entry: an IPv6 prefix of a length RFC 6052 (section
/// 2.2) defines an embedding for, without host bits.
pub fn parse_nat64_prefix(s: &str) -> Result<Ipv6Net, String> {
    let net: Ipv6Net = s
        .trim()
        .parse()
        .map_err(|_| format!("\"{s}\" is not an IPv6 prefix (expected e.g. \"64:ff9b::/96\")"))?;
    if !hb_common::NAT64_PREFIX_LENS.contains(&net.prefix_len()) {
        return Err(format!(
            "\"{s}\" has prefix length {}; RFC 6052 defines NAT64 prefixes of length 32, 40, \
             48, 56, 64 or 96 only",
            net.prefix_len()
        ));
    }
    if net != net.trunc() {
        return Err(format!(
            "\"{s}\" has host bits set (did you mean {}?)",
            net.trunc()
        ));
    }
    Ok(net)
}

/// The IPv4 address an IPv6 address stands for when traffic to it reaches an IPv4 host:
/// IPv4-mapped (`::ffff:0:0/96`), or under a NAT64 prefix (the longest of `nat64` and
/// the well-known one that contains it, with its RFC 6052 embedding).
pub fn embedded_v4(v6: Ipv6Addr, nat64: &[Ipv6Net]) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let o = v6.octets();
    if o[..12] == [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0] {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    let prefix = nat64
        .iter()
        .filter(|p| p.contains(&v6))
        .max_by_key(|p| p.prefix_len())?;
    hb_common::nat64_embedded(&o, u32::from(prefix.prefix_len())).map(Ipv4Addr::from)
}

/// Whether an answer address lies in a deny range and no exception; IPv6 addresses that
/// carry an IPv4 one (mapped, NAT64) are judged by it, and those of a tunnel (6to4,
/// Teredo, ISATAP: [`hb_common::tunnel_embedded`]) by the IPv4 they carry first, then as
/// IPv6, as the kernel does.
pub fn denied(deny: &[IpNet], except: &[IpNet], nat64: &[Ipv6Net], ip: IpAddr) -> bool {
    let listed = |ip: IpAddr| {
        deny.iter().any(|n| n.contains(&ip)) && !except.iter().any(|n| n.contains(&ip))
    };
    let ip = match ip {
        IpAddr::V6(v6) => embedded_v4(v6, nat64).map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if let IpAddr::V6(v6) = ip
        && let Some((first, second)) = hb_common::tunnel_embedded(&v6.octets())
        && (listed(IpAddr::from(first)) || listed(IpAddr::from(second)))
    {
        return true;
    }
    listed(ip)
}

/// Whether an answer address is one of the host's own (`local`; or the network or
/// broadcast address of one of its IPv4 prefixes) and no exception carves it out; IPv6
/// addresses that carry an IPv4 one are judged by it, as in [`denied`].
///
/// Why the resolvers refuse these beside the deny ranges: a connection to an address of
/// the host never leaves it. It is delivered locally, as one to loopback is, to every
/// service listening on the wildcard address (the kubelet, node-exporter, sshd, the
/// agent's `/metrics` on the node's address) and past firewalls that filter only what
/// arrives from outside; yet a bare-metal node's public IPv4 or any node's global IPv6
/// lies in no deny range. An allowed name whose authority answers such an address (the
/// rebinding trick) reached them from a sandbox beside the agent, and from any sandbox
/// through the broker, which connects from the host (attack review 22).
pub fn host_own(
    local: &crate::local_addrs::LocalAddrs,
    except: &[IpNet],
    nat64: &[Ipv6Net],
    ip: IpAddr,
) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => embedded_v4(v6, nat64).map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    local.delivers_here(ip) && !except.iter().any(|n| n.contains(&ip))
}

/// The special-purpose ranges denied by default (`deny_cidrs = "default"`).
///
/// Sources: the IANA IPv4 Special-Purpose Address Registry (RFC 6890 and updates), the
/// IANA IPv6 Special-Purpose Address Registry, the IPv4 multicast and reserved blocks
/// (RFC 5771, RFC 1112 §4), and the IPv6 multicast block (RFC 4291). IPv4-mapped
/// (`::ffff:0:0/96`) and NAT64 (`64:ff9b::/96`) addresses are not listed: the kernel
/// judges them by the IPv4 address they embed.
pub const DEFAULT_DENY: &[(&str, &str)] = &[
    // IPv4
    ("0.0.0.0/8", "\"this network\" (RFC 791, RFC 1122 §3.2.1.3)"),
    ("10.0.0.0/8", "private use (RFC 1918)"),
    (
        "100.64.0.0/10",
        "shared address space, carrier-grade NAT (RFC 6598)",
    ),
    ("127.0.0.0/8", "loopback (RFC 1122 §3.2.1.3)"),
    (
        "169.254.0.0/16",
        "link local, incl. cloud metadata 169.254.169.254 (RFC 3927)",
    ),
    ("172.16.0.0/12", "private use (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890 §2.1)"),
    ("192.0.2.0/24", "documentation TEST-NET-1 (RFC 5737)"),
    ("192.31.196.0/24", "AS112-v4 (RFC 7535)"),
    ("192.52.193.0/24", "AMT (RFC 7450)"),
    ("192.88.99.0/24", "deprecated 6to4 relay anycast (RFC 7526)"),
    ("192.168.0.0/16", "private use (RFC 1918)"),
    (
        "192.175.48.0/24",
        "direct delegation AS112 service (RFC 7534)",
    ),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation TEST-NET-2 (RFC 5737)"),
    ("203.0.113.0/24", "documentation TEST-NET-3 (RFC 5737)"),
    ("224.0.0.0/4", "multicast (RFC 5771)"),
    (
        "240.0.0.0/4",
        "reserved for future use (RFC 1112 §4), incl. limited broadcast",
    ),
    // IPv6
    ("::/128", "unspecified address (RFC 4291)"),
    ("::1/128", "loopback (RFC 4291)"),
    (
        "::/96",
        "deprecated IPv4-compatible addresses (RFC 4291 §2.5.5.1)",
    ),
    (
        "64:ff9b:1::/48",
        "local-use IPv4/IPv6 translation (RFC 8215)",
    ),
    ("100::/64", "discard-only (RFC 6666)"),
    (
        "2001::/23",
        "IETF protocol assignments, incl. Teredo 2001::/32 (RFC 2928, RFC 4380)",
    ),
    ("2001:db8::/32", "documentation (RFC 3849)"),
    ("2002::/16", "6to4 (RFC 3056)"),
    ("3fff::/20", "documentation (RFC 9637)"),
    ("5f00::/16", "segment routing SIDs (RFC 9602)"),
    ("fc00::/7", "unique local addresses (RFC 4193)"),
    ("fe80::/10", "link-local unicast (RFC 4291)"),
    ("fec0::/10", "deprecated site-local (RFC 3879)"),
    ("ff00::/8", "multicast (RFC 4291)"),
];

/// [`DEFAULT_DENY`] as networks.
pub fn default_deny() -> Vec<IpNet> {
    DEFAULT_DENY
        .iter()
        .map(|(cidr, _)| {
            #[expect(clippy::unwrap_used, reason = "constant list, checked by a test")]
            cidr.parse().unwrap()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(ip: &str) -> bool {
        let ip: std::net::IpAddr = ip.parse().expect("test address");
        default_deny().iter().any(|n| n.contains(&ip))
    }

    #[test]
    fn list_parses_and_is_normalised() {
        for net in default_deny() {
            assert_eq!(net, net.trunc(), "{net} has host bits set");
        }
    }

    #[test]
    fn notorious_targets_are_denied() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "2001:db8::10",
            "2002:a00:1::",
            "2001:0:a00:1::",
            "ff02::1",
        ] {
            assert!(denied(ip), "{ip} must be denied by default");
        }
    }

    #[test]
    fn the_hosts_own_addresses_are_refused_in_every_spelling_unless_excepted() {
        use crate::local_addrs::{LocalAddrs, Set};
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let local = LocalAddrs::fixed(Set::from_entries([
            (ip("100.128.0.77"), 24, false),
            (ip("2a00:1450::77"), 64, false),
            (ip("203.0.113.10"), 32, false),
        ]));
        let except: Vec<IpNet> = vec!["203.0.113.0/24".parse().expect("net")];
        for own in [
            "100.128.0.77",
            "::ffff:100.128.0.77",
            "64:ff9b::6480:4d",
            "2a00:1450::77",
        ] {
            assert!(host_own(&local, &except, &[], ip(own)), "{own}");
        }
        // A datagram to the subnet's broadcast (or network) address is delivered here too.
        for edge in ["100.128.0.255", "100.128.0.0", "::ffff:100.128.0.255"] {
            assert!(host_own(&local, &except, &[], ip(edge)), "{edge}");
        }
        // The rest of the address's subnet is not the host's; an exception carves out.
        for other in ["100.128.0.78", "2a00:1450::78", "203.0.113.10"] {
            assert!(!host_own(&local, &except, &[], ip(other)), "{other}");
        }
    }

    #[test]
    fn nat64_addresses_are_judged_by_the_ipv4_they_embed() {
        let nat64: Vec<Ipv6Net> = ["2001:db8:64::/96", "2001:db8:100::/40", "2001:db8:200::/64"]
            .iter()
            .map(|p| parse_nat64_prefix(p).expect("prefix"))
            .collect();
        let deny = default_deny();
        let except: Vec<IpNet> = vec!["2001:db8::/32".parse().expect("net")];
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        // /96: the last 32 bits.
        assert!(super::denied(
            &deny,
            &except,
            &nat64,
            ip("2001:db8:64::a00:1")
        ));
        assert!(!super::denied(
            &deny,
            &except,
            &nat64,
            ip("2001:db8:64::808:808")
        ));
        // /40: 10.1.2.3 as 0a01:02 | u | 03.
        assert!(super::denied(
            &deny,
            &except,
            &nat64,
            ip("2001:db8:10a:102:3::")
        ));
        // /64: after the u octet.
        assert!(super::denied(
            &deny,
            &except,
            &nat64,
            ip("2001:db8:200:0:a9:fea9:fe00:0")
        ));
        // Outside every prefix: the IPv6 address itself, carved out here.
        assert!(!super::denied(
            &deny,
            &except,
            &nat64,
            ip("2001:db8:65::a00:1")
        ));
        // The well-known prefix needs no configuration.
        assert!(super::denied(&deny, &except, &[], ip("64:ff9b::7f00:1")));
        assert_eq!(
            embedded_v4("2001:db8:10a:102:3::".parse().expect("ip"), &nat64),
            Some(Ipv4Addr::new(10, 1, 2, 3))
        );
    }

    /// A tunnel's address is refused when the IPv4 address it sends to is denied, whatever
    /// the explicit deny list holds of the IPv6 ranges; ISATAP under any prefix.
    #[test]
    fn tunnel_addresses_are_judged_by_the_ipv4_they_carry() {
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let deny: Vec<IpNet> = ["10.0.0.0/8", "169.254.0.0/16"]
            .iter()
            .map(|n| n.parse().expect("net"))
            .collect();
        for carried in [
            "2a01:4f8:1::5efe:a00:1",
            "2a01:4f8:1::200:5efe:a9fe:a9fe",
            "2002:a00:1::1",
            "2001:0:a00:1::1",
            "2001:0:808:808::f5ff:fffe",
        ] {
            assert!(super::denied(&deny, &[], &[], ip(carried)), "{carried}");
        }
        for public in [
            "2a01:4f8:1::5efe:808:808",
            "2a01:4f8:1::100:5efe:a00:1",
            "2a01:4f8:1::1:5efe:a00:1",
            "2002:808:808::1",
        ] {
            assert!(!super::denied(&deny, &[], &[], ip(public)), "{public}");
        }
        let except: Vec<IpNet> = vec!["10.0.0.0/24".parse().expect("net")];
        assert!(!super::denied(
            &deny,
            &except,
            &[],
            ip("2a01:4f8:1::5efe:a00:1")
        ));
    }

    #[test]
    fn nat64_prefix_lengths_are_those_of_rfc6052() {
        for ok in [
            "64:ff9b::/96",
            "2001:db8::/32",
            "2001:db8:100::/40",
            "2001:db8:1::/48",
        ] {
            parse_nat64_prefix(ok).expect(ok);
        }
        for bad in [
            "2001:db8::/33",
            "2001:db8::/128",
            "10.0.0.0/8",
            "2001:db8::1/96",
        ] {
            assert!(parse_nat64_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn public_addresses_are_not_denied() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "140.82.112.3",
            "2606:4700::1111",
            "2a00:1450::1",
        ] {
            assert!(!denied(ip), "{ip} is public");
        }
    }
}
