//! Validating resolution for the broker's own connections.
//!
//! Owns: turning a [`Host`] into the addresses the broker may connect to. A name is
//! asked (A and AAAA, at once) of the upstreams in `dns.upstreams` through hb's own
//! upstream client; the CNAME chain the answer carries is followed from the name to the
//! addresses it ends at; every A/AAAA record in either answer must lie outside
//! `egress.deny_cidrs` and the host's own addresses, minus `egress.exception_cidrs`
//! (judged by the resolver's own [`crate::dns::denied`], so IPv4-mapped and NAT64 answers
//! count as the IPv4 they carry), else the whole answer is refused. An IP literal is
//! judged by the same rule. The broker connects from the host: an answer of the host's
//! own address would carry a sandbox's call to the host's own services. Validated
//! answers are cached for their TTL clamped to `[dns.min_ttl_secs, dns.max_ttl_secs]`.
//!
//! Must never: return an address it did not judge, use the host's own resolver
//! (/etc/hosts, nsswitch), or cache a refusal as if it were an answer.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{Name, RData, RecordType},
};
use ipnet::IpNet;

use super::url::Host;
use crate::dns::upstream::Upstream;

/// Names whose validated answers are kept; when full the cache starts over.
const CACHE_ENTRIES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// An answer for `name` holds a denied address (a rebinding attempt or a private
    /// name): nothing of it is used.
    #[error(
        "{name} resolves to {addr}, which lies in the deny ranges (egress.deny_cidrs) or is \
         one of this host's own addresses"
    )]
    DnsRejected { name: String, addr: IpAddr },
    /// The URL names a denied address directly.
    #[error(
        "{addr} lies in the deny ranges (egress.deny_cidrs) or is one of this host's own \
         addresses; no connection is made"
    )]
    IpDenied { addr: IpAddr },
    #[error("{name} does not exist (NXDOMAIN)")]
    NoSuchName { name: String },
    #[error("{name} has no A or AAAA record")]
    NoAddress { name: String },
    #[error("cannot resolve {name}: {why}")]
    Lookup { name: String, why: String },
}

struct Cached {
    addrs: Arc<[IpAddr]>,
    until: Instant,
}

pub struct Resolver {
    upstream: Arc<Upstream>,
    deny: Vec<IpNet>,
    except: Vec<IpNet>,
    /// `egress.nat64_prefixes` (see [`Resolver::with_nat64`]).
    nat64: Vec<ipnet::Ipv6Net>,
    /// The host's own addresses (see [`Resolver::with_local`]).
    local: crate::local_addrs::LocalAddrs,
    min_ttl: u32,
    max_ttl: u32,
    cache: Mutex<HashMap<String, Cached>>,
}

impl Resolver {
    pub fn new(
        upstream: Arc<Upstream>,
        deny: Vec<IpNet>,
        except: Vec<IpNet>,
        min_ttl: u32,
        max_ttl: u32,
    ) -> Self {
        Self {
            upstream,
            deny,
            except,
            nat64: Vec::new(),
            local: crate::local_addrs::LocalAddrs::default(),
            min_ttl,
            max_ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Judges addresses under these NAT64 prefixes (beside the well-known one, always
    /// judged so) as the IPv4 address they embed.
    pub fn with_nat64(mut self, nat64: Vec<ipnet::Ipv6Net>) -> Self {
        self.nat64 = nat64;
        self
    }

    /// Refuses the host's own addresses (`local`, kept current by the agent) as it
    /// refuses the deny ranges.
    pub fn with_local(mut self, local: crate::local_addrs::LocalAddrs) -> Self {
        self.local = local;
        self
    }

    /// Whether `addr` is refused by the deny ranges or as the host's own, and not carved
    /// out.
    pub fn denied(&self, addr: IpAddr) -> bool {
        crate::dns::denied(&self.deny, &self.except, &self.nat64, &self.local, addr)
    }

    /// The addresses `host` may be reached at, IPv4 first.
    pub async fn resolve(&self, host: &Host) -> Result<Arc<[IpAddr]>, ResolveError> {
        let name = match host {
            Host::Ip(addr) => {
                if self.denied(*addr) {
                    return Err(ResolveError::IpDenied { addr: *addr });
                }
                return Ok(Arc::from([*addr]));
            }
            Host::Name(name) => name,
        };
        if let Some(addrs) = self.cached(name) {
            return Ok(addrs);
        }
        let fqdn = Name::from_ascii(format!("{name}.")).map_err(|e| ResolveError::Lookup {
            name: name.clone(),
            why: format!("not a DNS name ({e})"),
        })?;
        let (a, aaaa) = tokio::join!(
            self.upstream.query(&fqdn, RecordType::A),
            self.upstream.query(&fqdn, RecordType::AAAA)
        );
        // One family failing (a server that refuses AAAA, say) leaves the other's
        // addresses usable; each reply that does arrive is judged whole.
        let mut addrs = Vec::new();
        let mut ttl = self.max_ttl;
        let mut nxdomain = false;
        let mut failure = None;
        for (qtype, reply) in [(RecordType::A, a), (RecordType::AAAA, aaaa)] {
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    failure = Some(e.to_string());
                    continue;
                }
            };
            match reply.metadata.response_code {
                ResponseCode::NoError => {}
                ResponseCode::NXDomain => {
                    nxdomain = true;
                    continue;
                }
                rc => {
                    failure = Some(format!("the upstream answered {rc}"));
                    continue;
                }
            }
            let (found, reply_ttl) = self.judge(name, &fqdn, qtype, &reply)?;
            addrs.extend(found);
            ttl = ttl.min(reply_ttl);
        }
        if addrs.is_empty() {
            let name = name.clone();
            return Err(match (nxdomain, failure) {
                (true, _) => ResolveError::NoSuchName { name },
                (false, Some(why)) => ResolveError::Lookup { name, why },
                (false, None) => ResolveError::NoAddress { name },
            });
        }
        let ttl = ttl.clamp(self.min_ttl, self.max_ttl);
        let addrs: Arc<[IpAddr]> = Arc::from(addrs);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(
                name.clone(),
                Cached {
                    addrs: addrs.clone(),
                    until: Instant::now() + Duration::from_secs(u64::from(ttl)),
                },
            );
        }
        Ok(addrs)
    }

    /// A validated answer still current, judged again: an address the host gained
    /// since (an address added to an interface, a failover address moved here) makes
    /// it a miss, looked up and refused.
    fn cached(&self, name: &str) -> Option<Arc<[IpAddr]>> {
        let cache = self.cache.lock().ok()?;
        let entry = cache.get(name)?;
        (entry.until > Instant::now() && !entry.addrs.iter().any(|&a| self.denied(a)))
            .then(|| entry.addrs.clone())
    }

    /// The addresses one reply to `fqdn`/`qtype` gives `name` (following its CNAME chain)
    /// and their lowest TTL; an error when any address record in the reply is denied.
    fn judge(
        &self,
        name: &str,
        fqdn: &Name,
        qtype: RecordType,
        reply: &Message,
    ) -> Result<(Vec<IpAddr>, u32), ResolveError> {
        for r in &reply.answers {
            let addr = match &r.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                _ => continue,
            };
            if self.denied(addr) {
                return Err(ResolveError::DnsRejected {
                    name: name.to_owned(),
                    addr,
                });
            }
        }
        Ok(chain_addresses(fqdn, qtype, &reply.answers, self.max_ttl))
    }
}

/// Follows the CNAME chain from `name` through `records` and returns the `qtype`
/// addresses of the name it ends at, with the lowest TTL along the way; none for a chain
/// that loops or runs past [`crate::dns::chain::MAX_CHAIN`].
fn chain_addresses(
    name: &Name,
    qtype: RecordType,
    records: &[hickory_proto::rr::Record],
    max_ttl: u32,
) -> (Vec<IpAddr>, u32) {
    let chain = crate::dns::chain::question_chain(records.to_vec(), name, qtype);
    let mut ttl = max_ttl;
    let mut addrs = Vec::new();
    for r in chain.iter().flatten() {
        ttl = ttl.min(r.ttl);
        match &r.data {
            RData::A(a) => addrs.push(IpAddr::V4(a.0)),
            RData::AAAA(a) => addrs.push(IpAddr::V6(a.0)),
            _ => {}
        }
    }
    (addrs, ttl)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use hickory_proto::rr::{Record, rdata};

    use super::*;

    fn a(owner: &str, ip: &str, ttl: u32) -> Record {
        Record::from_rdata(
            Name::from_str(owner).expect("name"),
            ttl,
            RData::A(rdata::A(ip.parse().expect("ip"))),
        )
    }

    fn fqdn(name: &str) -> Name {
        Name::from_str(name).expect("name")
    }

    fn cname(owner: &str, target: &str, ttl: u32) -> Record {
        Record::from_rdata(
            Name::from_str(owner).expect("name"),
            ttl,
            RData::CNAME(rdata::CNAME(Name::from_str(target).expect("name"))),
        )
    }

    #[tokio::test]
    async fn ip_literals_are_judged_by_the_deny_ranges() {
        // No upstream servers: a literal needs none, and a name then cannot resolve.
        let upstream = Upstream::new(Vec::new()).await.expect("no sockets needed");
        let except = vec!["203.0.113.0/24".parse().expect("cidr")];
        let r = Resolver::new(upstream, crate::egress::default_deny(), except, 5, 60);
        for addr in [
            "127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "::",
            "::7f00:1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "fd00::1",
            "fe80::1",
            "2002:7f00:1::",
        ] {
            let addr: IpAddr = addr.parse().expect("ip");
            assert_eq!(
                r.resolve(&Host::Ip(addr)).await,
                Err(ResolveError::IpDenied { addr }),
                "{addr}"
            );
        }
        for addr in [
            "203.0.113.10",
            "8.8.8.8",
            "64:ff9b::808:808",
            "2606:4700::1111",
        ] {
            let addr: IpAddr = addr.parse().expect("ip");
            assert_eq!(
                r.resolve(&Host::Ip(addr)).await.as_deref(),
                Ok(&[addr][..]),
                "{addr}"
            );
        }
        assert!(matches!(
            r.resolve(&Host::Name("a.test".into())).await,
            Err(ResolveError::Lookup { .. })
        ));
    }

    #[tokio::test]
    async fn the_hosts_own_addresses_are_refused_unless_excepted() {
        use crate::local_addrs::{LocalAddrs, Set};
        let upstream = Upstream::new(Vec::new()).await.expect("no sockets needed");
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let local = LocalAddrs::fixed(Set::from_entries([
            (ip("100.128.0.77"), 24, false),
            (ip("203.0.113.10"), 32, false),
        ]));
        let except = vec!["203.0.113.0/24".parse().expect("cidr")];
        let r =
            Resolver::new(upstream, crate::egress::default_deny(), except, 5, 60).with_local(local);
        for addr in ["100.128.0.77", "100.128.0.255", "::ffff:100.128.0.77"] {
            let addr = ip(addr);
            assert_eq!(
                r.resolve(&Host::Ip(addr)).await,
                Err(ResolveError::IpDenied { addr }),
                "{addr}"
            );
        }
        for addr in ["100.128.0.78", "203.0.113.10"] {
            assert!(r.resolve(&Host::Ip(ip(addr))).await.is_ok(), "{addr}");
        }
    }

    #[test]
    fn chain_is_followed_to_its_addresses() {
        let records = vec![
            cname("www.a.test.", "Edge.CDN.test.", 300),
            cname("edge.cdn.test.", "pop1.cdn.test.", 60),
            a("pop1.cdn.test.", "203.0.113.7", 120),
            a("pop1.cdn.test.", "203.0.113.8", 30),
            a("unrelated.test.", "203.0.113.9", 5),
        ];
        let (addrs, ttl) = chain_addresses(&fqdn("www.a.test."), RecordType::A, &records, 3600);
        let want: Vec<IpAddr> = vec![
            "203.0.113.7".parse().expect("ip"),
            "203.0.113.8".parse().expect("ip"),
        ];
        assert_eq!(addrs, want);
        assert_eq!(ttl, 30);
    }

    #[test]
    fn chain_without_addresses_or_looping_gives_none() {
        let records = vec![
            cname("a.test.", "b.test.", 60),
            cname("b.test.", "a.test.", 60),
        ];
        assert!(
            chain_addresses(&fqdn("a.test."), RecordType::A, &records, 3600)
                .0
                .is_empty()
        );
        let records = vec![cname("a.test.", "gone.test.", 60)];
        assert!(
            chain_addresses(&fqdn("a.test."), RecordType::A, &records, 3600)
                .0
                .is_empty()
        );
    }
}
