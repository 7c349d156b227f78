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
//! record is encrypted (TLS 1.2 Finished) unless it is a whole ClientHello (a TLS 1.3
//! client in middlebox-compatibility mode sends one before its second ClientHello);
//! `handshake` (22) in the clear is reassembled into messages and each ClientHello
//! judged; `alert` (21) passes; any other type is refused.

use super::{decide::Reason, tls};

/// Largest record body (2^14 plus the 2048 bytes of expansion TLS allows).
pub const MAX_RECORD: usize = 16384 + 2048;

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

    /// A handshake record after `change_cipher_spec`: a whole ClientHello (TLS 1.3's
    /// second, in compatibility mode) is judged; anything else is the encrypted Finished
    /// of TLS 1.2, once.
    fn after_change_cipher_spec(&mut self, body: &[u8], fits: impl Fn(&str) -> bool) -> Step {
        self.after_ccs += 1;
        let whole_hello = body.len() >= 4
            && body[0] == 1
            && usize::from(body[1]) << 16 | usize::from(body[2]) << 8 | usize::from(body[3])
                == body.len() - 4;
        if whole_hello {
            return self.hello(body, fits);
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
}
