//! Request URLs, judged before anything is resolved or connected.
//!
//! Owns: turning a caller's URL string into a [`Target`] whose host is either a DNS
//! name or an IP address, whatever spelling the caller chose. The WHATWG parser (the
//! `url` crate, as browsers) already reads decimal (`2130706433`), hex (`0x7f000001`),
//! octal (`017700000001`), short (`127.1`), mixed, percent-encoded and full-width
//! spellings of IPv4 as addresses; this module adds what it leaves open: IPv4-mapped
//! IPv6 becomes the IPv4 it carries, a name keeps no trailing dot, and anything a parser
//! would otherwise repair silently is refused (control characters and spaces, which
//! WHATWG strips; backslashes, which it reads as slashes; `http:host` without `//`).
//!
//! Refused, each with its own error: schemes other than http/https, userinfo
//! (`user:pass@`, even an empty `@`), fragments (`#…`: never sent to a server, so a
//! URL carrying one is a caller mistake or a game), IPv6 zone ids (`[fe80::1%25eth0]`),
//! port 0, and names that are not LDH labels of at most 63 bytes.
//!
//! Must never: hand out a `Name` host that some other parser would read as an address,
//! or a target that differs from what the caller's policy was judged on.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
};

/// Longest URL accepted, in bytes.
const MAX_URL: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("the URL is empty")]
    Empty,
    #[error("the URL is longer than {MAX_URL} bytes")]
    TooLong,
    #[error("the URL contains a control character or a space (percent-encode it)")]
    ControlOrSpace,
    #[error("the URL must start with http:// or https:// followed by a host")]
    NotAbsolute,
    #[error("scheme \"{0}\" is not allowed: only http and https")]
    Scheme(String),
    #[error("the URL contains a backslash before its query (percent-encode it)")]
    Backslash,
    #[error("the URL carries userinfo (\"user:pass@\"); credentials go in handles, never in URLs")]
    Userinfo,
    #[error("the URL has a fragment (\"#…\"); fragments are never sent upstream, remove it")]
    Fragment,
    #[error("the URL has no host")]
    NoHost,
    #[error("IPv6 zone ids (\"%25…\") are not allowed: they name a local interface")]
    ZoneId,
    #[error("the URL's port is not a number from 1 to 65535")]
    Port,
    #[error("the host is not a valid IPv4 address, though it ends in a number")]
    Ipv4,
    #[error("the host is not a valid IPv6 address")]
    Ipv6,
    #[error("host \"{host}\" is not a valid DNS name: {why}")]
    Name { host: String, why: &'static str },
    #[error("the URL does not parse: {0}")]
    Parse(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Where a request goes: a DNS name (resolved and validated later) or an address
/// (validated as it is).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// Lower-case ASCII (IDNA applied), no trailing dot.
    Name(String),
    /// IPv4-mapped IPv6 is stored as the IPv4 address it carries.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
        }
    }
}

/// A validated request URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub scheme: Scheme,
    pub host: Host,
    pub port: u16,
    /// Origin form: `/path?query`, percent-encoded as WHATWG serialises it.
    pub path_and_query: String,
}

impl Target {
    /// Parses and judges `input` (see the module header for what is refused).
    pub fn parse(input: &str) -> Result<Self, UrlError> {
        precheck(input)?;
        let url = url::Url::parse(input).map_err(parse_error)?;
        Self::from_url(&url)
    }

    fn from_url(url: &url::Url) -> Result<Self, UrlError> {
        let scheme = match url.scheme() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(UrlError::Scheme(other.to_owned())),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Userinfo);
        }
        if url.fragment().is_some() {
            return Err(UrlError::Fragment);
        }
        let host = match url.host() {
            None => return Err(UrlError::NoHost),
            Some(url::Host::Ipv4(a)) => Host::Ip(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => Host::Ip(canonical_v6(a)),
            Some(url::Host::Domain(d)) => Host::Name(check_name(d)?),
        };
        let port = url.port_or_known_default().ok_or(UrlError::Port)?;
        if port == 0 {
            return Err(UrlError::Port);
        }
        let mut path_and_query = url.path().to_owned();
        if let Some(q) = url.query() {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        Ok(Self {
            scheme,
            host,
            port,
            path_and_query,
        })
    }

    /// The target a `Location` header points to, relative to this one. Its fragment, if
    /// any, is dropped (it is never sent); everything else is judged as [`Target::parse`]
    /// judges a caller's URL.
    pub fn join(&self, location: &str) -> Result<Self, UrlError> {
        if location.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(UrlError::ControlOrSpace);
        }
        if location
            .split('?')
            .next()
            .unwrap_or(location)
            .contains('\\')
        {
            return Err(UrlError::Backslash);
        }
        // An absolute (`http://…`) or scheme-relative (`//…`) location names a host.
        let after_scheme = location
            .split_once(':')
            .filter(|(scheme, _)| {
                !scheme.is_empty()
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            })
            .map_or(location, |(_, rest)| rest);
        if let Some(after) = after_scheme.strip_prefix("//") {
            check_authority(after)?;
        }
        let base = url::Url::parse(&self.to_string()).map_err(parse_error)?;
        let mut next = base.join(location).map_err(parse_error)?;
        next.set_fragment(None);
        // The joined URL is re-read from its serialisation so that it passes exactly the
        // checks a caller's URL passes.
        Self::parse(next.as_str())
    }

    /// `Host` header value: the host, and the port when it is not the scheme's default.
    pub fn authority(&self) -> String {
        if self.port == self.scheme.default_port() {
            self.host.to_string()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Same scheme, host and port: the origin a credential was meant for.
    pub fn same_origin(&self, other: &Target) -> bool {
        self.scheme == other.scheme && self.host == other.host && self.port == other.port
    }
}

/// The URL, as it would be sent (never with a credential query parameter: those are
/// added only on the wire).
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.path_and_query
        )
    }
}

/// IPv4-mapped (`::ffff:a.b.c.d`) is the IPv4 address; every other IPv6 stays as it is
/// (NAT64 and the rest are judged by the deny ranges, which know about them).
fn canonical_v6(a: Ipv6Addr) -> IpAddr {
    match a.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(a),
    }
}

/// Checks on the raw text, for what WHATWG would repair without a word.
fn precheck(input: &str) -> Result<(), UrlError> {
    if input.is_empty() {
        return Err(UrlError::Empty);
    }
    if input.len() > MAX_URL {
        return Err(UrlError::TooLong);
    }
    if input.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(UrlError::ControlOrSpace);
    }
    let Some((scheme, rest)) = input.split_once(':') else {
        return Err(UrlError::NotAbsolute);
    };
    let lower = scheme.to_ascii_lowercase();
    if lower != "http" && lower != "https" {
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return Err(UrlError::NotAbsolute);
        }
        return Err(UrlError::Scheme(lower));
    }
    let Some(after) = rest.strip_prefix("//") else {
        return Err(UrlError::NotAbsolute);
    };
    let before_query = input.split('?').next().unwrap_or(input);
    if before_query.contains('\\') {
        return Err(UrlError::Backslash);
    }
    check_authority(after)
}

/// Checks the authority at the start of `after` (the text after `//`).
fn check_authority(after: &str) -> Result<(), UrlError> {
    let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let authority = &after[..authority_end];
    if authority.contains('@') {
        return Err(UrlError::Userinfo);
    }
    if authority.contains('[') && authority.contains('%') {
        return Err(UrlError::ZoneId);
    }
    if authority.is_empty() || authority.starts_with(':') {
        return Err(UrlError::NoHost);
    }
    Ok(())
}

fn parse_error(e: url::ParseError) -> UrlError {
    match e {
        url::ParseError::EmptyHost => UrlError::NoHost,
        url::ParseError::InvalidPort => UrlError::Port,
        url::ParseError::InvalidIpv4Address => UrlError::Ipv4,
        url::ParseError::InvalidIpv6Address => UrlError::Ipv6,
        other => UrlError::Parse(other.to_string()),
    }
}

/// A DNS name as WHATWG left it (lower case, IDNA applied): LDH and `_` labels of 1-63
/// bytes, at most 253 in all, one trailing dot allowed and removed.
fn check_name(domain: &str) -> Result<String, UrlError> {
    let name = domain.strip_suffix('.').unwrap_or(domain);
    let bad = |why| UrlError::Name {
        host: domain.to_owned(),
        why,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > 253 {
        return Err(bad("it is longer than 253 bytes"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(bad("it has an empty label"));
        }
        if label.len() > 63 {
            return Err(bad("a label is longer than 63 bytes"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(bad("labels may hold only a-z, 0-9, '-' and '_'"));
        }
    }
    // WHATWG reads a host ending in a numeric label as IPv4 and fails when it is not one,
    // so a name reaching here never looks like an address; checked again regardless.
    if name.parse::<IpAddr>().is_ok() {
        return Err(bad("it is an IP address"));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn ip(s: &str) -> Host {
        Host::Ip(s.parse().expect("test address"))
    }

    fn name(s: &str) -> Host {
        Host::Name(s.into())
    }

    #[test]
    fn every_ipv4_spelling_is_an_address() {
        let loopback = ip("127.0.0.1");
        let table: &[(&str, Host)] = &[
            ("http://127.0.0.1/", loopback.clone()),
            ("http://2130706433/", loopback.clone()),
            ("http://0x7f000001/", loopback.clone()),
            ("http://0X7F000001/", loopback.clone()),
            ("http://017700000001/", loopback.clone()),
            ("http://127.1/", loopback.clone()),
            ("http://127.0.1/", loopback.clone()),
            ("http://0x7f.1/", loopback.clone()),
            ("http://0177.0.0.1/", loopback.clone()),
            ("http://0x7f.0.0.0x1/", loopback.clone()),
            ("http://0177.0x0.1/", loopback.clone()),
            ("http://127.0.0.1./", loopback.clone()),
            ("http://2130706433./", loopback.clone()),
            ("http://%31%32%37.0.0.1/", loopback.clone()),
            ("http://127.0.0.1%2e/", loopback.clone()),
            ("http://\u{ff11}\u{ff12}\u{ff17}.0.0.1/", loopback.clone()),
            ("http://127\u{3002}0\u{3002}0\u{3002}1/", loopback),
            ("http://0/", ip("0.0.0.0")),
            ("http://10.1/", ip("10.0.0.1")),
            ("http://169.254.43518/", ip("169.254.169.254")),
            ("http://0xa9fea9fe/", ip("169.254.169.254")),
            ("http://2852039166/", ip("169.254.169.254")),
            ("https://0300.0250.0.1:8443/", ip("192.168.0.1")),
        ];
        for (input, want) in table {
            let t = Target::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(&t.host, want, "{input}");
        }
    }

    #[test]
    fn every_ipv6_spelling_is_an_address() {
        let table: &[(&str, Host)] = &[
            ("http://[::1]/", ip("::1")),
            ("http://[0:0:0:0:0:0:0:1]/", ip("::1")),
            ("http://[::]/", ip("::")),
            ("http://[::ffff:7f00:1]/", ip("127.0.0.1")),
            ("http://[::ffff:127.0.0.1]/", ip("127.0.0.1")),
            ("http://[::FFFF:A9FE:A9FE]/", ip("169.254.169.254")),
            ("http://[::127.0.0.1]/", ip("::7f00:1")),
            ("http://[64:ff9b::7f00:1]/", ip("64:ff9b::7f00:1")),
            ("http://[64:ff9b::a9fe:a9fe]/", ip("64:ff9b::a9fe:a9fe")),
            ("http://[fe80::1]/", ip("fe80::1")),
            ("http://[2001:DB8::10]:8080/", ip("2001:db8::10")),
        ];
        for (input, want) in table {
            let t = Target::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(&t.host, want, "{input}");
        }
        let t = Target::parse("http://[::ffff:7f00:1]/").expect("parses");
        assert_eq!(t.host, Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(
            Target::parse("http://[2001:db8::10]:8080/x")
                .expect("parses")
                .to_string(),
            "http://[2001:db8::10]:8080/x"
        );
        assert_eq!(
            Target::parse("http://[::]/").expect("parses").host,
            Host::Ip(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
        );
    }

    #[test]
    fn names_are_lower_case_without_trailing_dot() {
        let table: &[(&str, Host)] = &[
            ("https://API.GitHub.com/user", name("api.github.com")),
            ("https://api.github.com./user", name("api.github.com")),
            ("http://b\u{fc}cher.example/", name("xn--bcher-kva.example")),
            ("http://under_score.test/", name("under_score.test")),
            ("http://localhost/", name("localhost")),
            ("http://0x7g.test/", name("0x7g.test")),
        ];
        for (input, want) in table {
            let t = Target::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(&t.host, want, "{input}");
        }
    }

    #[test]
    fn refused_urls_say_why() {
        let long = format!("http://a.test/{}", "x".repeat(MAX_URL));
        let table: &[(&str, UrlError)] = &[
            ("", UrlError::Empty),
            (&long, UrlError::TooLong),
            ("ftp://a.test/", UrlError::Scheme("ftp".into())),
            ("file:///etc/passwd", UrlError::Scheme("file".into())),
            ("gopher://a.test/", UrlError::Scheme("gopher".into())),
            ("//a.test/", UrlError::NotAbsolute),
            ("a.test/x", UrlError::NotAbsolute),
            ("http:a.test/", UrlError::NotAbsolute),
            ("http:/a.test/", UrlError::NotAbsolute),
            ("http:\\\\a.test/", UrlError::NotAbsolute),
            ("http://a.test\\@b.test/", UrlError::Backslash),
            ("http://user:pass@a.test/", UrlError::Userinfo),
            ("http://user@a.test/", UrlError::Userinfo),
            ("http://@a.test/", UrlError::Userinfo),
            ("http://:@a.test/", UrlError::Userinfo),
            ("http://a.test/#frag", UrlError::Fragment),
            ("http://a.test/x#", UrlError::Fragment),
            ("http://[fe80::1%25eth0]/", UrlError::ZoneId),
            ("http://[fe80::1%eth0]/", UrlError::ZoneId),
            ("http://[::1]:0/", UrlError::Port),
            ("http://a.test:0/", UrlError::Port),
            ("http://a.test:65536/", UrlError::Port),
            ("http://a.test:8x/", UrlError::Port),
            ("http:///x", UrlError::NoHost),
            ("http://:80/", UrlError::NoHost),
            ("http://256.0.0.1/", UrlError::Ipv4),
            ("http://1.2.3.4.5/", UrlError::Ipv4),
            ("http://0x100000000/", UrlError::Ipv4),
            ("http://a.123/", UrlError::Ipv4),
            ("http://[::1/", UrlError::Ipv6),
            ("http://[1:2:3:4:5:6:7:8:9]/", UrlError::Ipv6),
            ("http://a.test/ x", UrlError::ControlOrSpace),
            ("http://a.test/\tx", UrlError::ControlOrSpace),
            ("http://a.te\nst/", UrlError::ControlOrSpace),
            ("http://a.test/\0", UrlError::ControlOrSpace),
            (" http://a.test/", UrlError::ControlOrSpace),
        ];
        for (input, want) in table {
            assert_eq!(Target::parse(input).as_ref().err(), Some(want), "{input:?}");
        }
        for input in [
            "http://a..test/",
            "http://a.test../",
            "http://.a.test/",
            "http://a*b.test/",
            "http://a!b.test/",
            &format!("http://{}.test/", "a".repeat(64)),
        ] {
            assert!(
                matches!(Target::parse(input), Err(UrlError::Name { .. })),
                "{input}: {:?}",
                Target::parse(input)
            );
        }
    }

    #[test]
    fn path_query_and_port_are_kept() {
        let t = Target::parse("https://a.test:8443/p/a%20th?q=1&r=%2F").expect("parses");
        assert_eq!(t.scheme, Scheme::Https);
        assert_eq!(t.port, 8443);
        assert_eq!(t.path_and_query, "/p/a%20th?q=1&r=%2F");
        assert_eq!(t.authority(), "a.test:8443");
        assert_eq!(t.to_string(), "https://a.test:8443/p/a%20th?q=1&r=%2F");
        let t = Target::parse("HTTPS://A.test").expect("parses");
        assert_eq!(t.port, 443);
        assert_eq!(t.path_and_query, "/");
        assert_eq!(t.authority(), "a.test");
        let t = Target::parse("http://a.test:80/").expect("parses");
        assert_eq!(t.to_string(), "http://a.test/");
    }

    #[test]
    fn redirect_locations_are_joined_and_judged_again() {
        let base = Target::parse("https://a.test/dir/page?x=1").expect("parses");
        let j = |l: &str| base.join(l);
        assert_eq!(
            j("next").expect("relative").to_string(),
            "https://a.test/dir/next"
        );
        assert_eq!(
            j("/top#frag").expect("fragment dropped").to_string(),
            "https://a.test/top"
        );
        assert_eq!(
            j("//b.test/x").expect("scheme-relative").to_string(),
            "https://b.test/x"
        );
        assert_eq!(
            j("http://2130706433/").expect("an address").host,
            ip("127.0.0.1")
        );
        assert_eq!(j("http://u:p@b.test/"), Err(UrlError::Userinfo));
        assert_eq!(j("ftp://b.test/"), Err(UrlError::Scheme("ftp".into())));
        assert_eq!(j("http://[fe80::1%25lo]/"), Err(UrlError::ZoneId));
        assert_eq!(j("//u@b.test/"), Err(UrlError::Userinfo));
        assert_eq!(j("\\\\b.test/"), Err(UrlError::Backslash));
        assert_eq!(j("/a b"), Err(UrlError::ControlOrSpace));
        assert_eq!(j("http://b.test:0/"), Err(UrlError::Port));
        assert_eq!(
            j("?page=2").expect("query only").to_string(),
            "https://a.test/dir/page?page=2"
        );
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let a = Target::parse("https://a.test/x").expect("parses");
        assert!(a.same_origin(&Target::parse("https://A.test:443/y?z").expect("parses")));
        assert!(!a.same_origin(&Target::parse("http://a.test/x").expect("parses")));
        assert!(!a.same_origin(&Target::parse("https://a.test:8443/x").expect("parses")));
        assert!(!a.same_origin(&Target::parse("https://b.test/x").expect("parses")));
    }
}
