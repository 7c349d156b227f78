//! The guard's judgement: may a name be spoken to this address, may this method go to
//! this host.
//!
//! A name passes when the policy allows it (`allow_domains`) **and** the original
//! destination is an address the resolver validated for that very name, or lies in the
//! policy's `allow_cidrs`. An address validated for `allowed.test` therefore carries
//! only `allowed.test`, even when `evil.test` sits on the same CDN address. Over plain
//! HTTP, a method outside `guard.readonly_methods` passes only to a `write_domains` host
//! (the method of the request line, and every method a method-override header names),
//! and so does an `Upgrade` (a websocket is a write channel). On a port whose
//! convention fixes the protocol ([`port_speaks`]), only that protocol passes: a front
//! reads the name from it alone.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
};

use ipnet::{IpNet, Ipv6Net};

use crate::dns::{learned::Learned, names::Pattern};

/// Why the guard closed a connection. Stable names: tests, alerts and scripts match on
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// TLS without SNI, with an IP literal as SNI, or with Encrypted Client Hello.
    NoSni,
    /// The SNI is not allowed, or the address was not validated for it.
    SniMismatch,
    /// The HTTP host is missing, not allowed, or the address was not validated for it.
    HostMismatch,
    /// A plain-HTTP request a server could frame or address differently from the guard
    /// (see `http`), or a head larger than the guard reads.
    AmbiguousRequest,
    /// A plain-HTTP method that writes, to a host outside `write_domains`; or an
    /// `Upgrade` over plain HTTP, to any host.
    MethodDenied,
    /// The first bytes are neither a TLS ClientHello nor an HTTP/1 request, are the
    /// protocol the port does not serve ([`port_speaks`]), or did not arrive in time.
    NotTlsOrHttp,
    /// A TLS handshake record after encryption started (a TLS 1.2 renegotiation, whose
    /// ClientHello the guard cannot read).
    Renegotiation,
    /// None of the policy's `guard.max_connections_per_policy` is free, or none of the
    /// guard's share of the agent's descriptors.
    Busy,
    /// The connecting cgroup already holds `guard.max_connections_per_cgroup`
    /// connections, or as many as its policy has free: a few sandboxes may not take
    /// every slot of their policy.
    CgroupBusy,
}

impl Reason {
    pub const fn name(self) -> &'static str {
        match self {
            Reason::NoSni => "no_sni",
            Reason::SniMismatch => "sni_mismatch",
            Reason::HostMismatch => "host_mismatch",
            Reason::AmbiguousRequest => "ambiguous_request",
            Reason::MethodDenied => "method_denied",
            Reason::NotTlsOrHttp => "not_tls_or_http",
            Reason::Busy => "guard_busy",
            Reason::CgroupBusy => "guard_cgroup_busy",
            Reason::Renegotiation => "tls_renegotiation",
        }
    }
}

/// The protocol a front on a port routes by, when the port's convention fixes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaks {
    /// An HTTPS port: a front there reads the TLS ClientHello's SNI.
    Tls,
    /// A plain-HTTP port: a front there reads each request's `Host`.
    Http,
}

/// What a front on `port` routes by, for the ports whose use is fixed by convention:
/// 443 and 80, and the other HTTPS and HTTP ports CDNs serve (Cloudflare's 2053, 2083,
/// 2087, 2096, 8443 and 2052, 2082, 2086, 2095, 8080, 8880). `None` for other ports,
/// where either protocol passes.
///
/// A front that routes TLS by SNI without terminating it (HAProxy's `req_ssl_sni` in
/// `mode tcp`, nginx's `ssl_preread`) finds no name in a plain-HTTP request and hands
/// the connection to its default backend, whatever `Host` the guard judged: on port 443
/// a plain `GET` naming `allowed.test` reached `evil.test`'s backend (attack review 50).
/// The same for a ClientHello on an HTTP port, whose front reads no SNI.
pub fn port_speaks(port: u16) -> Option<Speaks> {
    match port {
        443 | 8443 | 2053 | 2083 | 2087 | 2096 => Some(Speaks::Tls),
        80 | 8080 | 8880 | 2052 | 2082 | 2086 | 2095 => Some(Speaks::Http),
        _ => None,
    }
}

/// A policy as the guard sees it.
pub struct PolicyRules {
    pub id: u32,
    pub name: String,
    pub audit: bool,
    pub domains: Vec<Pattern>,
    pub writes: Vec<Pattern>,
    pub cidrs: Vec<IpNet>,
}

/// What every policy's judgement needs besides the policy.
pub struct Judge {
    /// The resolver's validated addresses (none when `dns.redirect` is off: then only
    /// `allow_cidrs` destinations carry names).
    pub learned: Option<Arc<Mutex<Learned>>>,
    /// `egress.nat64_prefixes`: a NAT64 destination carries the names its embedded
    /// IPv4 address was validated for.
    pub nat64: Vec<Ipv6Net>,
    pub readonly: Vec<String>,
}

impl Judge {
    /// Whether `name` (normalised) may be spoken to `dst` under `p`.
    pub fn name_fits(&self, p: &PolicyRules, name: &str, dst: IpAddr) -> bool {
        if !crate::dns::names::allowed(&p.domains, name) {
            return false;
        }
        if p.cidrs.iter().any(|n| n.contains(&dst)) {
            return true;
        }
        let Some(learned) = &self.learned else {
            return false;
        };
        let Ok(learned) = learned.lock() else {
            return false;
        };
        learned.validated_for(p.id, dst, name)
            || self
                .embedded_v4(dst)
                .is_some_and(|v4| learned.validated_for(p.id, v4, name))
    }

    /// An IP literal as HTTP host: passes only as the destination itself, when that is in
    /// the policy's `allow_cidrs` (no name, so nothing to front).
    pub fn literal_fits(&self, p: &PolicyRules, literal: &str, dst: IpAddr) -> bool {
        literal.parse::<IpAddr>().is_ok_and(|ip| ip == dst)
            && p.cidrs.iter().any(|n| n.contains(&dst))
    }

    /// Whether a plain-HTTP request with `method` (and `upgrade`) may go to `host`.
    ///
    /// An `Upgrade` (a plain `ws://` websocket) never passes: after it the connection
    /// carries frames the guard cannot judge as requests, and whether the server took
    /// the upgrade is only in its answer, so a refused upgrade would leave the next
    /// request unjudged. Over TLS (`wss://`) a websocket is as opaque as any TLS traffic
    /// and passes with its SNI.
    ///
    /// `overrides` are the methods the request's method-override headers name: a
    /// framework that reads one (Slim 4 does on a GET) acts as that method, so each must
    /// be read-only too.
    pub fn method_fits(
        &self,
        p: &PolicyRules,
        method: &str,
        overrides: &[String],
        upgrade: bool,
        host: &str,
    ) -> bool {
        if upgrade {
            return false;
        }
        crate::dns::names::allowed(&p.writes, host)
            || std::iter::once(method)
                .chain(overrides.iter().map(String::as_str))
                .all(|named| self.readonly.iter().any(|m| m == named))
    }

    fn embedded_v4(&self, dst: IpAddr) -> Option<IpAddr> {
        let IpAddr::V6(v6) = dst else { return None };
        let net = self.nat64.iter().find(|n| n.contains(&v6))?;
        let v4 = hb_common::nat64_embedded(&v6.octets(), u32::from(net.prefix_len()))?;
        Some(IpAddr::from(v4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_web_ports_speak_one_protocol_each() {
        for port in [443, 8443, 2053, 2083, 2087, 2096] {
            assert_eq!(port_speaks(port), Some(Speaks::Tls), "{port}");
        }
        for port in [80, 8080, 8880, 2052, 2082, 2086, 2095] {
            assert_eq!(port_speaks(port), Some(Speaks::Http), "{port}");
        }
        for port in [22, 8000, 8444, 8445, 9443] {
            assert_eq!(port_speaks(port), None, "{port}");
        }
    }
}
