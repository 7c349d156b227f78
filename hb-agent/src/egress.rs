//! The default deny ranges: where a sandbox may never connect unless an operator carves
//! the range out with `egress.exception_cidrs`.
//!
//! Owns: the named list and its sources. Must never: shrink silently — every entry below
//! is there for a reason written beside it, and tests check the notorious ones.

use ipnet::IpNet;

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
