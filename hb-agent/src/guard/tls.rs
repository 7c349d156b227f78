//! The name a TLS client asks for: the SNI of its ClientHello, read with tls-parser,
//! never decrypted.
//!
//! A ClientHello may span several handshake records; they are joined before parsing,
//! and then refused unless the first record held it whole ([`in_one_record`]): an SNI
//! router reads the name from the first record alone. Anything a server could read
//! differently from the guard is refused rather than guessed: a record that is not a
//! handshake, a first record under a version no TLS client writes, a ClientHello with two extensions of one
//! type, an SNI list with anything but exactly one host name, a name that is not a
//! hostname (a trailing dot too: RFC 6066 forbids it, and an SNI router comparing names
//! whole routes `allowed.test.` elsewhere). Encrypted Client Hello (and its draft, ESNI) hides the real name: refused.

use tls_parser::{
    TlsExtension, TlsExtensionType, TlsMessage, TlsMessageHandshake,
    parse_tls_client_hello_extensions, parse_tls_message_handshake,
    parse_tls_server_hello_extensions,
};

/// TLS record content type of handshake records.
pub const HANDSHAKE: u8 = 22;
/// Largest ClientHello the guard reads (handshake messages may be up to 16 MiB; real
/// ones, post-quantum key shares included, stay far below this).
pub const MAX_HELLO: usize = 64 * 1024;
/// Encrypted Client Hello (RFC 9849's code point).
const ECH: u16 = 0xfe0d;
/// The earlier draft (ESNI).
const ESNI: u16 = 0xffce;

/// What a ClientHello asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// One host name, lower-case (a name with a trailing dot is [`Hello::Malformed`]).
    Name(String),
    /// No SNI at all.
    NoSni,
    /// An IP address as SNI (RFC 6066 forbids it).
    IpLiteral(String),
    /// Encrypted Client Hello or ESNI: the real name is hidden.
    Encrypted,
    /// Not a ClientHello the guard can read the same way every server would.
    Malformed,
}

/// Whether `buf` (records as received) holds a whole ClientHello: `Some(handshake
/// message)` once it does, `None` while more bytes are needed, `Err` for bytes that are
/// not handshake records or a hello larger than [`MAX_HELLO`].
pub fn complete_hello(buf: &[u8]) -> Result<Option<Vec<u8>>, ()> {
    let mut message = Vec::new();
    let mut rest = buf;
    while rest.len() >= 5 {
        if rest[0] != HANDSHAKE {
            return Err(());
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 || len > 16384 + 2048 {
            return Err(());
        }
        if rest.len() < 5 + len {
            break;
        }
        message.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
        if message.len() >= 4 {
            let need = 4
                + (usize::from(message[1]) << 16
                    | usize::from(message[2]) << 8
                    | usize::from(message[3]));
            if need > MAX_HELLO {
                return Err(());
            }
            if message.len() >= need {
                message.truncate(need);
                return Ok(Some(message));
            }
        }
    }
    if buf.len() > MAX_HELLO + 5 * 8 {
        return Err(());
    }
    Ok(None)
}

/// Largest first ClientHello the guard passes. A front that routes by SNI reads the
/// hello into one buffer: HAProxy's default (16 KiB less 1 KiB kept for rewrites) holds
/// a 14.5 KB hello and sends a 15.5 KB one to its default backend unread. Real hellos,
/// post-quantum key shares and session tickets included, stay under 4 KB.
pub const MAX_FIRST_HELLO: usize = 8 * 1024;

/// Whether the first record of `buf` holds the whole ClientHello `message` (as
/// [`complete_hello`] joined it) and nothing else, under a record version a TLS client
/// writes (0x0301 to 0x0303; TLS 1.3 keeps 0x0301 or 0x0303 there), within
/// [`MAX_FIRST_HELLO`].
///
/// A front that routes TLS by SNI without terminating it reads the name from the first
/// record only: HAProxy's `req_ssl_sni` takes the bytes after the first record's header
/// for the whole hello, and a record of version 2.0 for no TLS at all. A hello cut
/// across records, under another version, or longer than its buffer goes to its default
/// backend, whatever name the guard joined from the pieces; TLS clients write their
/// first hello in one record.
pub fn in_one_record(buf: &[u8], message: &[u8]) -> bool {
    let Some(&[_, major, minor, high, low]) = buf.get(..5) else {
        return false;
    };
    let version = u16::from_be_bytes([major, minor]);
    let len = usize::from(u16::from_be_bytes([high, low]));
    (0x0301..=0x0303).contains(&version) && len == message.len() && len <= MAX_FIRST_HELLO
}

/// The name a whole ClientHello handshake message asks for.
pub fn hello_name(message: &[u8]) -> Hello {
    let Ok((rest, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)))) =
        parse_tls_message_handshake(message)
    else {
        return Hello::Malformed;
    };
    // The legacy version a TLS client writes there (TLS 1.3 keeps 0x0303): HAProxy's
    // `req_ssl_sni` takes a hello of 0x0300 or older for none and routes it to its
    // default backend.
    if !rest.is_empty() || !(0x0301..=0x0303).contains(&hello.version.0) {
        return Hello::Malformed;
    }
    let Some(ext) = hello.ext else {
        return Hello::NoSni;
    };
    let Ok((rest, extensions)) = parse_tls_client_hello_extensions(ext) else {
        return Hello::Malformed;
    };
    if !rest.is_empty() {
        return Hello::Malformed;
    }
    let mut seen = Vec::with_capacity(extensions.len());
    let mut sni = None;
    for e in &extensions {
        let TlsExtensionType(code) = TlsExtensionType::from(e);
        if seen.contains(&code) {
            return Hello::Malformed;
        }
        seen.push(code);
        match e {
            TlsExtension::SNI(names) => sni = Some(names),
            TlsExtension::EncryptedServerName { .. } => return Hello::Encrypted,
            TlsExtension::Unknown(TlsExtensionType(t), _) if *t == ECH || *t == ESNI => {
                return Hello::Encrypted;
            }
            _ => {}
        }
    }
    let Some(names) = sni else {
        return Hello::NoSni;
    };
    let [(kind, name)] = names.as_slice() else {
        return Hello::Malformed;
    };
    if kind.0 != 0 {
        return Hello::Malformed;
    }
    let Ok(text) = std::str::from_utf8(name) else {
        return Hello::Malformed;
    };
    if text.parse::<std::net::IpAddr>().is_ok() {
        return Hello::IpLiteral(text.to_owned());
    }
    match super::http::hostname(text) {
        Some(n) => Hello::Name(n),
        None => Hello::Malformed,
    }
}

/// What the server's first handshake message commits it to.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerHello {
    /// A ServerHello selecting TLS 1.3 (not a HelloRetryRequest): the server reads no
    /// further ClientHello on this connection and cannot renegotiate (RFC 8446 §4.1.3,
    /// §4.1.4, §5: a TLS 1.3 server aborts on a plaintext handshake record once its
    /// keys changed).
    Tls13,
    /// Anything else: TLS 1.2 or older, a HelloRetryRequest (a second ClientHello is
    /// still to come), or bytes the guard cannot read as a ServerHello.
    Other,
}

/// The random of a HelloRetryRequest (RFC 8446 §4.1.3: SHA-256 of
/// "HelloRetryRequest").
const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// Reads the server's first handshake message from the start of its byte stream:
/// `None` while more bytes are needed.
pub fn server_hello(buf: &[u8]) -> Option<ServerHello> {
    let message = match complete_hello(buf) {
        Ok(Some(m)) => m,
        Ok(None) => return None,
        Err(()) => return Some(ServerHello::Other),
    };
    let Ok((rest, TlsMessage::Handshake(TlsMessageHandshake::ServerHello(hello)))) =
        parse_tls_message_handshake(&message)
    else {
        return Some(ServerHello::Other);
    };
    if !rest.is_empty() || hello.random == HRR_RANDOM {
        return Some(ServerHello::Other);
    }
    let Some(Ok((rest, extensions))) = hello.ext.map(parse_tls_server_hello_extensions) else {
        return Some(ServerHello::Other);
    };
    let selected: Vec<_> = extensions
        .iter()
        .filter_map(|e| match e {
            TlsExtension::SupportedVersions(v) => Some(v.as_slice()),
            _ => None,
        })
        .collect();
    Some(match selected.as_slice() {
        [[v]] if rest.is_empty() && v.0 == 0x0304 => ServerHello::Tls13,
        _ => ServerHello::Other,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ClientHello record carrying `extensions` (each: type, data).
    pub(crate) fn client_hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0); // session id
        body.extend([0, 2, 0x13, 0x01]); // one cipher suite
        body.extend([1, 0]); // null compression
        let mut ext = Vec::new();
        for (t, data) in extensions {
            ext.extend(t.to_be_bytes());
            ext.extend((data.len() as u16).to_be_bytes());
            ext.extend(data);
        }
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend(ext);
        let mut msg = vec![1];
        msg.extend(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend(body);
        let mut rec = vec![HANDSHAKE, 3, 1];
        rec.extend((msg.len() as u16).to_be_bytes());
        rec.extend(msg);
        rec
    }

    pub(crate) fn sni(names: &[&str]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for n in names {
            list.push(0);
            list.extend((n.len() as u16).to_be_bytes());
            list.extend(n.as_bytes());
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend(list);
        (0, data)
    }

    fn name_of(record: &[u8]) -> Hello {
        let msg = complete_hello(record)
            .expect("test input")
            .expect("whole hello");
        hello_name(&msg)
    }

    #[test]
    fn the_sni_is_read_lower_case_and_a_trailing_dot_is_no_name() {
        let r = client_hello(&[sni(&["Allowed.Test"])]);
        assert_eq!(name_of(&r), Hello::Name("allowed.test".into()));
        // RFC 6066 forbids the dot, and an SNI router that compares the name whole
        // (nginx's `ssl_preread` with a `map`, HAProxy) sends it to its default.
        let r = client_hello(&[sni(&["allowed.test."])]);
        assert_eq!(name_of(&r), Hello::Malformed);
    }

    #[test]
    fn a_hello_is_in_one_record_only_whole_alone_and_under_a_client_version() {
        let whole = client_hello(&[sni(&["allowed.test"])]);
        let message = complete_hello(&whole)
            .expect("test input")
            .expect("whole hello");
        assert!(in_one_record(&whole, &message));
        // Cut across two records: joined, but not in one.
        let body = &whole[5..];
        let mut cut = Vec::new();
        for part in [&body[..10], &body[10..]] {
            cut.extend([HANDSHAKE, 3, 1]);
            cut.extend((part.len() as u16).to_be_bytes());
            cut.extend(part);
        }
        let joined = complete_hello(&cut)
            .expect("test input")
            .expect("whole hello");
        assert_eq!(joined, message);
        assert!(!in_one_record(&cut, &joined));
        for version in [[2, 0], [3, 0], [3, 4], [4, 1]] {
            let mut other = whole.clone();
            other[1..3].copy_from_slice(&version);
            assert!(!in_one_record(&other, &message), "{version:?}");
        }
        // Past what a front reads into its buffer.
        let big = client_hello(&[sni(&["allowed.test"]), (0x4444, vec![0; MAX_FIRST_HELLO])]);
        let big_message = complete_hello(&big)
            .expect("test input")
            .expect("whole hello");
        assert!(!in_one_record(&big, &big_message));
        // An SSL 3.0 or 2.0 hello inside: no name a front reads alike.
        for version in [[3, 0], [2, 0]] {
            let mut old = whole.clone();
            old[9..11].copy_from_slice(&version);
            let message = complete_hello(&old)
                .expect("test input")
                .expect("whole hello");
            assert_eq!(hello_name(&message), Hello::Malformed, "{version:?}");
        }
        // A second message after the hello in its record.
        let mut more = whole.clone();
        more.extend([20, 0, 0, 0]);
        let len = (more.len() - 5) as u16;
        more[3..5].copy_from_slice(&len.to_be_bytes());
        assert!(!in_one_record(&more, &message));
    }

    #[test]
    fn hidden_missing_literal_and_doubled_names_are_not_names() {
        assert_eq!(name_of(&client_hello(&[])), Hello::NoSni);
        assert_eq!(
            name_of(&client_hello(&[sni(&["203.0.113.10"])])),
            Hello::IpLiteral("203.0.113.10".into())
        );
        assert_eq!(
            name_of(&client_hello(&[
                sni(&["allowed.test"]),
                (ECH, vec![0, 1, 2])
            ])),
            Hello::Encrypted
        );
        assert_eq!(
            name_of(&client_hello(&[sni(&["allowed.test", "evil.test"])])),
            Hello::Malformed
        );
        assert_eq!(
            name_of(&client_hello(&[
                sni(&["allowed.test"]),
                sni(&["evil.test"])
            ])),
            Hello::Malformed
        );
        assert_eq!(
            name_of(&client_hello(&[sni(&["evil test"])])),
            Hello::Malformed
        );
    }

    #[test]
    fn a_hello_split_over_records_and_reads_is_joined() {
        let whole = client_hello(&[sni(&["allowed.test"])]);
        let msg = &whole[5..];
        // The same message in two records.
        let (a, b) = msg.split_at(20);
        let mut two = Vec::new();
        for part in [a, b] {
            two.extend([HANDSHAKE, 3, 1]);
            two.extend((part.len() as u16).to_be_bytes());
            two.extend(part);
        }
        for cut in 0..two.len() {
            assert_eq!(complete_hello(&two[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(name_of(&two), Hello::Name("allowed.test".into()));
    }

    /// A ServerHello record with `random` and a supported_versions extension selecting
    /// `version` (none: no extension).
    pub(crate) fn server_hello_record(random: [u8; 32], version: Option<u16>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend(random);
        body.push(0); // session id
        body.extend([0x13, 0x01, 0]); // cipher suite, null compression
        let mut ext = Vec::new();
        if let Some(v) = version {
            ext.extend([0, 43, 0, 2]);
            ext.extend(v.to_be_bytes());
        }
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend(ext);
        let mut msg = vec![2];
        msg.extend(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend(body);
        let mut rec = vec![HANDSHAKE, 3, 3];
        rec.extend((msg.len() as u16).to_be_bytes());
        rec.extend(msg);
        rec
    }

    #[test]
    fn only_a_tls13_server_hello_commits_the_server() {
        let tls13 = server_hello_record([7; 32], Some(0x0304));
        for cut in 0..tls13.len() {
            assert_eq!(server_hello(&tls13[..cut]), None, "cut at {cut}");
        }
        assert_eq!(server_hello(&tls13), Some(ServerHello::Tls13));
        let mut more = tls13.clone();
        more.extend([20, 3, 3, 0, 1, 1, 23, 3, 3, 0, 2, 9, 9]);
        assert_eq!(server_hello(&more), Some(ServerHello::Tls13));
        for other in [
            server_hello_record(HRR_RANDOM, Some(0x0304)),
            server_hello_record([7; 32], Some(0x0303)),
            server_hello_record([7; 32], None),
            client_hello(&[sni(&["allowed.test"])]),
            vec![21, 3, 3, 0, 2, 2, 40],
        ] {
            assert_eq!(server_hello(&other), Some(ServerHello::Other));
        }
    }

    #[test]
    fn other_records_are_refused() {
        assert_eq!(complete_hello(&[23, 3, 3, 0, 1, 0]), Err(()));
        assert_eq!(complete_hello(b"GET / HTTP/1.1\r\n"), Err(()));
    }
}
