//! What a passed TLS client may still send in the clear: its record headers, read for
//! the whole connection, and its handshake messages until encryption starts.
//!
//! The first ClientHello is not the last chance to name a host. After a
//! HelloRetryRequest a TLS 1.3 client sends a second ClientHello, in the clear, and a
//! server takes its SNI (OpenSSL's servername callback runs again); a TLS 1.2 client
//! may renegotiate inside the encrypted connection with a ClientHello the guard cannot
//! read. So every ClientHello the guard can see must name the first one's host (and
//! fit the address, judged again), and a handshake record after encryption started —
//! a renegotiation, which TLS 1.3 does not have — ends the connection.
//!
//! Record by record (RFC 8446 §5.1, RFC 5246 §6.2): `application_data` (23) means the
//! client encrypts from now on; `change_cipher_spec` (20) that its next handshake
//! record is encrypted (TLS 1.2 Finished) unless it starts with a whole message of the
//! ClientHello type (a TLS 1.3 client in middlebox-compatibility mode sends its second
//! ClientHello after one), which must then be the record's only message and a
//! ClientHello naming the first one's host; a `change_cipher_spec` while a handshake
//! message is still incomplete is refused; `handshake` (22) in the clear is
//! reassembled into messages and each ClientHello judged; `alert` (21) passes; any
//! other type is refused.
//!
//! The guard does not see which version the server chose, so after
//! `change_cipher_spec` it tells a ClientHello from TLS 1.2's encrypted Finished by
//! shape: ciphertext starts with type 1 once in 256 records, but a ClientHello cannot
//! be shorter than [`MIN_HELLO`] bytes, and an encrypted Finished (40 bytes with an
//! AEAD suite) cannot hold a whole message that long. Only a CBC suite's longer
//! Finished can (its first four bytes 1, 0, 0 and a length that fits: under one
//! record in 10^7), and is then refused as a malformed ClientHello.

use super::{decide::Reason, tls};

/// Largest record body (2^14 plus the 2048 bytes of expansion TLS allows).
pub const MAX_RECORD: usize = 16384 + 2048;

/// The smallest ClientHello body: version (2), random (32), an empty session id (1),
/// one cipher suite (2 + 2), the null compression method (1 + 1).
const MIN_HELLO: usize = 41;

/// Where a client's record stream stands.
#[derive(Debug)]
pub struct Watch {
    /// The host the first ClientHello named.
    name: String,
    /// A `change_cipher_spec` was sent.
    ccs: bool,
    /// Handshake records sent after `change_cipher_spec`.
    after_ccs: u32,
    /// `application_data` was sent: everything from now on is encrypted.
    encrypted: bool,
    /// Plaintext handshake bytes not yet a whole message.
    partial: Vec<u8>,
}

/// What to do with one record.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Pass it (its body unread when [`Watch::wants_body`] said so).
    Pass,
    /// End the connection: the reason, and the host named, if any.
    Refuse(Reason, Option<String>),
}

impl Watch {
    pub fn new(name: String) -> Self {
        Self {
            name,
            ccs: false,
            after_ccs: 0,
            encrypted: false,
            partial: Vec::new(),
        }
    }

    /// Whether the guard must read a record of `kind` before passing it: plaintext
    /// handshake records are judged; every other record is passed by its header alone.
    pub fn wants_body(&self, kind: u8) -> bool {
        kind == 22 && !self.encrypted
    }

    /// Judges one record by its header (and its body, when [`Watch::wants_body`]).
    /// `fits` says whether a host may be spoken to the connection's address.
    pub fn record(
        &mut self,
        kind: u8,
        len: usize,
        body: &[u8],
        fits: impl Fn(&str) -> bool,
    ) -> Step {
        if len > MAX_RECORD {
            return Step::Refuse(Reason::NotTlsOrHttp, None);
        }
        match kind {
            // A message cut by the change: a server still waiting for its rest would
            // read it from the records that follow, which are no longer judged.
            20 if !self.partial.is_empty() => Step::Refuse(Reason::NotTlsOrHttp, None),
            20 => {
                self.ccs = true;
                Step::Pass
            }
            21 => Step::Pass,
            23 => {
                self.encrypted = true;
                Step::Pass
            }
            22 if self.encrypted => Step::Refuse(Reason::Renegotiation, None),
            22 if self.ccs => self.after_change_cipher_spec(body, fits),
            22 => self.plaintext(body, fits),
            _ => Step::Refuse(Reason::NotTlsOrHttp, None),
        }
    }

    /// A handshake record after `change_cipher_spec`: one that starts with a whole
    /// message of the ClientHello type, long enough to be one (TLS 1.3's second, in
    /// compatibility mode), must be exactly one ClientHello naming the first one's host;
    /// anything else is the encrypted Finished of TLS 1.2, once.
    fn after_change_cipher_spec(&mut self, body: &[u8], fits: impl Fn(&str) -> bool) -> Step {
        self.after_ccs += 1;
        if let Some(len) = leading_hello(body) {
            return match self.hello(&body[..len], fits) {
                // More after the hello: a server would read it as a further message.
                Step::Pass if len < body.len() => Step::Refuse(Reason::NotTlsOrHttp, None),
                step => step,
            };
        }
        if self.after_ccs > 1 {
            return Step::Refuse(Reason::Renegotiation, None);
        }
        Step::Pass
    }

    /// A plaintext handshake record: whole messages are taken from it, each ClientHello
    /// judged.
    fn plaintext(&mut self, body: &[u8], fits: impl Fn(&str) -> bool) -> Step {
        self.partial.extend_from_slice(body);
        while self.partial.len() >= 4 {
            let need = 4
                + (usize::from(self.partial[1]) << 16
                    | usize::from(self.partial[2]) << 8
                    | usize::from(self.partial[3]));
            if need > tls::MAX_HELLO {
                return Step::Refuse(Reason::NotTlsOrHttp, None);
            }
            if self.partial.len() < need {
                break;
            }
            let message: Vec<u8> = self.partial.drain(..need).collect();
            if message[0] == 1
                && let Step::Refuse(r, n) = self.hello(&message, &fits)
            {
                return Step::Refuse(r, n);
            }
        }
        Step::Pass
    }

    /// A ClientHello after the first: it must name the same host, which must still fit.
    fn hello(&self, message: &[u8], fits: impl Fn(&str) -> bool) -> Step {
        match tls::hello_name(message) {
            tls::Hello::Name(n) if n == self.name && fits(&n) => Step::Pass,
            tls::Hello::Name(n) => Step::Refuse(Reason::SniMismatch, Some(n)),
            tls::Hello::IpLiteral(ip) => Step::Refuse(Reason::NoSni, Some(ip)),
            tls::Hello::NoSni | tls::Hello::Encrypted => Step::Refuse(Reason::NoSni, None),
            tls::Hello::Malformed => Step::Refuse(Reason::NotTlsOrHttp, None),
        }
    }
}

/// The length of the message `body` starts with, when it is of the ClientHello type,
/// whole within `body`, and at least [`MIN_HELLO`] long.
fn leading_hello(body: &[u8]) -> Option<usize> {
    let [1, a, b, c, ..] = *body else {
        return None;
    };
    let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
    (len >= MIN_HELLO && 4 + len <= body.len()).then_some(4 + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::tls::tests::{client_hello, sni};

    fn hello_body(name: &str) -> Vec<u8> {
        client_hello(&[sni(&[name])])[5..].to_vec()
    }

    #[test]
    fn a_second_client_hello_must_name_the_same_host() {
        let mut w = Watch::new("allowed.test".into());
        let ok = |_: &str| true;
        assert_eq!(
            w.record(22, 10, &hello_body("allowed.test"), ok),
            Step::Pass
        );
        // TLS 1.3 compatibility mode: CCS, then the second ClientHello.
        assert_eq!(w.record(20, 1, &[], ok), Step::Pass);
        assert_eq!(
            w.record(22, 10, &hello_body("evil.test"), ok),
            Step::Refuse(Reason::SniMismatch, Some("evil.test".into()))
        );
        // Without CCS, split over two records.
        let mut w = Watch::new("allowed.test".into());
        let body = hello_body("evil.test");
        let (a, b) = body.split_at(7);
        assert_eq!(w.record(22, a.len(), a, ok), Step::Pass);
        assert_eq!(
            w.record(22, b.len(), b, ok),
            Step::Refuse(Reason::SniMismatch, Some("evil.test".into()))
        );
    }

    #[test]
    fn handshake_records_after_encryption_are_renegotiation() {
        let ok = |_: &str| true;
        let mut w = Watch::new("allowed.test".into());
        assert_eq!(w.record(23, 100, &[], ok), Step::Pass);
        assert!(!w.wants_body(22));
        assert_eq!(
            w.record(22, 100, &[], ok),
            Step::Refuse(Reason::Renegotiation, None)
        );
        // TLS 1.2: CCS, encrypted Finished once, then another handshake record.
        let mut w = Watch::new("allowed.test".into());
        assert_eq!(w.record(20, 1, &[], ok), Step::Pass);
        assert_eq!(w.record(22, 40, &[0x17; 40], ok), Step::Pass);
        assert_eq!(
            w.record(22, 40, &[0x17; 40], ok),
            Step::Refuse(Reason::Renegotiation, None)
        );
        assert_eq!(
            Watch::new("a.test".into()).record(24, 3, &[], ok),
            Step::Refuse(Reason::NotTlsOrHttp, None)
        );
    }

    /// After `change_cipher_spec`, a ClientHello naming another host hidden in a record
    /// with more bytes after it, or a hello message cut before the change, is refused.
    #[test]
    fn a_hello_after_change_cipher_spec_cannot_hide_behind_more_bytes() {
        let ok = |_: &str| true;
        let first = hello_body("allowed.test");
        let refused = |second: Vec<u8>| {
            let mut w = Watch::new("allowed.test".into());
            assert_eq!(w.record(22, first.len(), &first, ok), Step::Pass);
            assert_eq!(w.record(20, 1, &[], ok), Step::Pass);
            w.record(22, second.len(), &second, ok)
        };
        let mut evil = hello_body("evil.test");
        evil.push(0);
        assert_eq!(
            refused(evil),
            Step::Refuse(Reason::SniMismatch, Some("evil.test".into()))
        );
        let mut same = hello_body("allowed.test");
        same.extend(hello_body("evil.test"));
        assert_eq!(refused(same), Step::Refuse(Reason::NotTlsOrHttp, None));
        // TLS 1.3 compatibility mode as clients send it still passes.
        assert_eq!(refused(hello_body("allowed.test")), Step::Pass);

        // A change_cipher_spec while a message is incomplete.
        let mut w = Watch::new("allowed.test".into());
        assert_eq!(w.record(22, first.len(), &first, ok), Step::Pass);
        let next = hello_body("evil.test");
        assert_eq!(w.record(22, 7, &next[..7], ok), Step::Pass);
        assert_eq!(
            w.record(20, 1, &[], ok),
            Step::Refuse(Reason::NotTlsOrHttp, None)
        );
    }

    /// TLS 1.2's encrypted Finished is random bytes to the guard: it starts with 1 once
    /// in 256 connections, and even then passes (AEAD: 40 bytes; CBC up to 96 bytes
    /// with a length that does not fit).
    #[test]
    fn an_encrypted_finished_that_starts_like_a_hello_passes() {
        let ok = |_: &str| true;
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut byte = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        };
        for round in 0..20_000 {
            let len = [32, 40, 64, 80, 96][round % 5];
            let mut finished: Vec<u8> = (0..len).map(|_| byte()).collect();
            finished[0] = 1;
            if round % 2 == 0 {
                // The worst shape an AEAD Finished can take: a whole message.
                finished[1] = 0;
                finished[2] = 0;
                finished[3] = u8::try_from(len.min(40) - 4).unwrap_or(0);
            }
            if len > 40 && finished[1] == 0 && finished[2] == 0 {
                continue; // a CBC Finished of this shape: see the module's note
            }
            let mut w = Watch::new("allowed.test".into());
            assert_eq!(
                w.record(22, 10, &hello_body("allowed.test"), ok),
                Step::Pass
            );
            assert_eq!(w.record(20, 1, &[], ok), Step::Pass);
            assert_eq!(
                w.record(22, len, &finished, ok),
                Step::Pass,
                "round {round}: {finished:02x?}"
            );
            assert_eq!(w.record(23, 100, &[], ok), Step::Pass);
        }
    }
}
