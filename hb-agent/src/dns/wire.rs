//! The cache-hit fast path on raw DNS wire bytes (RFC 1035 §4).
//!
//! Owns: reading the one shape of query that stub resolvers send (one question, class
//! IN, optionally one EDNS OPT record, no compression) straight from the packet, and
//! answering it from a pre-encoded answer section by patching in the id, the question
//! (copied byte for byte, so 0x20 case randomisation survives) and the remaining TTL.
//! Everything else — and anything this module is unsure of — returns `None` and takes
//! the general path through hickory-proto, which also answers malformed queries.
//!
//! Must never: accept a query the general path would judge differently (the name is
//! lower-cased and judged by the same policy code), or emit a name compression pointer
//! (answers are position independent, so they can follow any question).

use hickory_proto::rr::{Name, RData, Record};

/// RFC 1035 limit on a name's wire length.
const MAX_NAME_WIRE: usize = 255;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;

/// A query as read off the wire.
pub struct RawQuery<'a> {
    pub id: u16,
    pub recursion_desired: bool,
    /// QNAME + QTYPE + QCLASS exactly as received.
    pub question: &'a [u8],
    /// The name, lower-case, dotted, without the trailing dot.
    pub name: String,
    pub qtype: u16,
    /// What the client takes over UDP: 512, or its EDNS payload size.
    pub udp_limit: usize,
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

/// Reads the common query shape, or `None` for anything else.
pub fn parse_query(q: &[u8]) -> Option<RawQuery<'_>> {
    let flags = u16_at(q, 2)?;
    // QR = 0 (a query), OPCODE = 0 (QUERY), TC = 0.
    if flags & 0xfa00 != 0 {
        return None;
    }
    let (qd, an, ns, ar) = (u16_at(q, 4)?, u16_at(q, 6)?, u16_at(q, 8)?, u16_at(q, 10)?);
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return None;
    }
    let mut i = 12;
    let mut name = String::with_capacity(64);
    loop {
        let len = usize::from(*q.get(i)?);
        if len == 0 {
            i += 1;
            break;
        }
        // Compression pointers and the reserved label types: general path.
        if len > 63 {
            return None;
        }
        let label = q.get(i + 1..i + 1 + len)?;
        // Bytes that the presentation form would escape: general path.
        if !label
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return None;
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.extend(label.iter().map(|c| char::from(c.to_ascii_lowercase())));
        i += 1 + len;
        if i - 12 > MAX_NAME_WIRE {
            return None;
        }
    }
    let qtype = u16_at(q, i)?;
    if u16_at(q, i + 2)? != CLASS_IN {
        return None;
    }
    let question = &q[12..i + 4];
    let mut end = i + 4;
    let mut udp_limit = 512;
    if ar == 1 {
        // The OPT pseudo-record: root name, type 41, class = UDP payload size.
        if *q.get(end)? != 0 || u16_at(q, end + 1)? != TYPE_OPT {
            return None;
        }
        udp_limit = usize::from(u16_at(q, end + 3)?).max(512);
        let rdlen = usize::from(u16_at(q, end + 9)?);
        end += 11 + rdlen;
    }
    if end != q.len() {
        return None;
    }
    Some(RawQuery {
        id: u16_at(q, 0)?,
        recursion_desired: flags & 0x0100 != 0,
        question,
        name,
        qtype,
        udp_limit,
    })
}

/// An answer section encoded once, answered many times.
#[derive(Clone)]
pub struct EncodedAnswers {
    bytes: Vec<u8>,
    count: u16,
    /// Where each record's TTL sits in `bytes`.
    ttl_at: Vec<usize>,
}

fn emit_name(out: &mut Vec<u8>, name: &Name) -> Option<()> {
    let start = out.len();
    for label in name.iter() {
        out.push(u8::try_from(label.len()).ok()?);
        out.extend_from_slice(label);
    }
    out.push(0);
    (out.len() - start <= MAX_NAME_WIRE).then_some(())
}

impl EncodedAnswers {
    /// Encodes `records` without compression; `None` when a record type is not one the
    /// fast path knows (A, AAAA, CNAME), so such answers always take the general path.
    pub fn encode(records: &[Record]) -> Option<Self> {
        let mut bytes = Vec::with_capacity(records.len() * 32);
        let mut ttl_at = Vec::with_capacity(records.len());
        for r in records {
            emit_name(&mut bytes, &r.name)?;
            bytes.extend_from_slice(&u16::from(r.record_type()).to_be_bytes());
            bytes.extend_from_slice(&u16::from(r.dns_class).to_be_bytes());
            ttl_at.push(bytes.len());
            bytes.extend_from_slice(&r.ttl.to_be_bytes());
            let len_at = bytes.len();
            bytes.extend_from_slice(&[0, 0]);
            match &r.data {
                RData::A(a) => bytes.extend_from_slice(&a.0.octets()),
                RData::AAAA(a) => bytes.extend_from_slice(&a.0.octets()),
                RData::CNAME(c) => emit_name(&mut bytes, &c.0)?,
                _ => return None,
            }
            let rdlen = u16::try_from(bytes.len() - len_at - 2).ok()?;
            bytes[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        }
        Some(Self {
            count: u16::try_from(records.len()).ok()?,
            bytes,
            ttl_at,
        })
    }

    /// The heap it takes (for the cache's bound).
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.ttl_at.capacity() * size_of::<usize>()
    }

    /// The reply to `q`: NOERROR, its question, these answers with `ttl`. `None` when it
    /// would not fit the client's UDP limit (the general path truncates properly).
    pub fn reply(&self, q: &RawQuery<'_>, ttl: u32, udp: bool) -> Option<Vec<u8>> {
        let len = 12 + q.question.len() + self.bytes.len();
        if udp && len > q.udp_limit {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&q.id.to_be_bytes());
        // QR, RD as asked, RA; OPCODE 0, AA 0, TC 0, RCODE NOERROR.
        let flags: u16 = 0x8080 | if q.recursion_desired { 0x0100 } else { 0 };
        out.extend_from_slice(&flags.to_be_bytes());
        for count in [1, self.count, 0, 0] {
            out.extend_from_slice(&count.to_be_bytes());
        }
        out.extend_from_slice(q.question);
        let base = out.len();
        out.extend_from_slice(&self.bytes);
        for &at in &self.ttl_at {
            out[base + at..base + at + 4].copy_from_slice(&ttl.to_be_bytes());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use hickory_proto::{
        op::{Edns, Message, MessageType, Query, ResponseCode},
        rr::{RecordType, rdata},
    };

    use super::*;

    fn query(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0xbeef;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_str(name).expect("name"), qtype));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            m.edns = Some(e);
        }
        m.to_vec().expect("encode")
    }

    #[test]
    fn parses_what_stub_resolvers_send() {
        let bytes = query("WwW.Example.TEST.", RecordType::AAAA, true);
        let q = parse_query(&bytes).expect("fast path");
        assert_eq!(q.id, 0xbeef);
        assert!(q.recursion_desired);
        assert_eq!(q.name, "www.example.test");
        assert_eq!(q.qtype, u16::from(RecordType::AAAA));
        assert_eq!(q.udp_limit, 1232);
        let plain = query("a.test.", RecordType::A, false);
        assert_eq!(parse_query(&plain).expect("fast path").udp_limit, 512);
    }

    #[test]
    fn leaves_unusual_queries_to_the_general_path() {
        let good = query("a.test.", RecordType::A, false);
        let mut response = good.clone();
        response[2] |= 0x80;
        assert!(parse_query(&response).is_none(), "a response");
        let mut two = good.clone();
        two[5] = 2;
        assert!(parse_query(&two).is_none(), "two questions");
        assert!(parse_query(&good[..good.len() - 1]).is_none(), "short");
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(parse_query(&trailing).is_none(), "trailing bytes");
        let mut escaped = good.clone();
        escaped[13] = b'.';
        assert!(parse_query(&escaped).is_none(), "a dot inside a label");
        let mut chaos = good;
        let n = chaos.len();
        chaos[n - 1] = 3;
        assert!(parse_query(&chaos).is_none(), "class CH");
    }

    #[test]
    fn reply_decodes_to_the_same_answer() {
        let owner = Name::from_str("www.example.test.").expect("name");
        let target = Name::from_str("edge.cdn.test.").expect("name");
        let records = vec![
            Record::from_rdata(owner, 300, RData::CNAME(rdata::CNAME(target.clone()))),
            Record::from_rdata(
                target.clone(),
                300,
                RData::A(rdata::A(std::net::Ipv4Addr::new(192, 0, 2, 7))),
            ),
            Record::from_rdata(
                target,
                300,
                RData::A(rdata::A(std::net::Ipv4Addr::new(192, 0, 2, 8))),
            ),
        ];
        let encoded = EncodedAnswers::encode(&records).expect("encodable");
        let bytes = query("WWW.example.test.", RecordType::A, true);
        let q = parse_query(&bytes).expect("fast path");
        let reply = encoded.reply(&q, 42, true).expect("fits");
        let m = Message::from_vec(&reply).expect("valid DNS");
        assert_eq!(m.metadata.id, 0xbeef);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.recursion_desired && m.metadata.recursion_available);
        // The question is echoed byte for byte (0x20 case randomisation survives).
        assert_eq!(&reply[12..12 + q.question.len()], q.question);
        assert_eq!(m.queries[0].query_type(), RecordType::A);
        assert_eq!(m.answers.len(), 3);
        for (got, want) in m.answers.iter().zip(&records) {
            assert_eq!(got.name, want.name);
            assert_eq!(got.data, want.data);
            assert_eq!(got.ttl, 42);
        }
        assert!(encoded.reply(&q, 42, false).is_some());
        let small = parse_query(&query("www.example.test.", RecordType::A, false)).map(|q| {
            let many: Vec<Record> = (0..40u8)
                .map(|i| {
                    Record::from_rdata(
                        Name::from_str("www.example.test.").expect("name"),
                        1,
                        RData::A(rdata::A(std::net::Ipv4Addr::new(192, 0, 2, i))),
                    )
                })
                .collect();
            EncodedAnswers::encode(&many)
                .expect("encodable")
                .reply(&q, 1, true)
        });
        assert_eq!(small.map(|r| r.is_none()), Some(true), "over 512 bytes");
    }

    /// A query as a sandbox may write it: labels of any bytes and lengths (dots, NULs,
    /// upper case, over-long), any type and class, flags and counts, EDNS or not, then
    /// some of its bytes overwritten, some cut off or added.
    fn any_query() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let label = prop::collection::vec(
            prop_oneof![
                8 => prop::sample::select(b"aZ09-_".to_vec()),
                1 => prop::sample::select(b".\0* \xc3\xff".to_vec()),
            ],
            0..70,
        );
        (
            any::<u16>(),
            prop_oneof![6 => Just(0x0100u16), 1 => any::<u16>()],
            prop_oneof![8 => Just([1u16, 0, 0, 0]), 1 => any::<[u16; 4]>().prop_map(|c| c.map(|n| n % 3))],
            prop::collection::vec(label, 0..6),
            prop_oneof![4 => Just(1u16), 4 => Just(28u16), 1 => any::<u16>()],
            prop_oneof![8 => Just(1u16), 1 => any::<u16>()],
            prop_oneof![Just(None), Just(Some(1232u16)), Just(Some(0u16))],
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..2),
            prop_oneof![6 => Just(0isize), 1 => -3isize..4],
        )
            .prop_map(|(id, flags, counts, labels, qtype, class, edns, flips, resize)| {
                let mut q = id.to_be_bytes().to_vec();
                q.extend(flags.to_be_bytes());
                let ar = u16::from(edns.is_some());
                let counts = if counts == [1, 0, 0, 0] { [1, 0, 0, ar] } else { counts };
                for c in counts {
                    q.extend(c.to_be_bytes());
                }
                for l in &labels {
                    q.push(u8::try_from(l.len()).unwrap_or(u8::MAX));
                    q.extend(l);
                }
                q.push(0);
                q.extend(qtype.to_be_bytes());
                q.extend(class.to_be_bytes());
                if let Some(size) = edns {
                    q.extend([0, 0, 41]);
                    q.extend(size.to_be_bytes());
                    q.extend([0, 0, 0, 0, 0, 0]);
                }
                for (at, byte) in flips {
                    let i = at.index(q.len());
                    q[i] = byte;
                }
                match resize {
                    n if n < 0 => q.truncate(q.len().saturating_sub(n.unsigned_abs())),
                    n => q.extend(std::iter::repeat_n(0u8, n.unsigned_abs())),
                }
                q
            })
    }

    proptest::proptest! {
        /// The fast path reads a query exactly as the general path does, or leaves it to
        /// it: the same id, one question, the same name once made a hostname (the name
        /// the policy judges), type and class IN. A query the two read differently
        /// could be judged on one name and answered for another. Any bytes: no panic.
        #[test]
        fn the_fast_path_reads_a_query_as_the_general_path_does(q in any_query()) {
            let Some(raw) = parse_query(&q) else {
                return Ok(());
            };
            let m = Message::from_vec(&q);
            proptest::prop_assert!(m.is_ok(), "fast path read what hickory refuses: {:?}", q);
            let Ok(m) = m else { unreachable!() };
            proptest::prop_assert_eq!(m.metadata.id, raw.id);
            proptest::prop_assert_eq!(m.metadata.message_type, MessageType::Query);
            proptest::prop_assert_eq!(m.metadata.op_code, hickory_proto::op::OpCode::Query);
            proptest::prop_assert_eq!(m.queries.len(), 1);
            let general = crate::dns::names::hostname(m.queries[0].name().iter());
            proptest::prop_assert_eq!(general.as_deref(), Some(raw.name.as_str()));
            proptest::prop_assert_eq!(u16::from(m.queries[0].query_type()), raw.qtype);
            proptest::prop_assert_eq!(u16::from(m.queries[0].query_class()), CLASS_IN);
            proptest::prop_assert_eq!(raw.recursion_desired, m.metadata.recursion_desired);
        }
    }

    /// The generator reaches queries the fast path reads, and ones it leaves alone.
    #[test]
    fn the_query_generator_reaches_both_paths() {
        use proptest::{
            strategy::{Strategy as _, ValueTree as _},
            test_runner::TestRunner,
        };
        let mut runner = TestRunner::deterministic();
        let read = (0..2000)
            .filter(|_| {
                let q = any_query().new_tree(&mut runner).expect("sample").current();
                parse_query(&q).is_some()
            })
            .count();
        assert!(
            (100..1900).contains(&read),
            "{read} of 2000 read by the fast path"
        );
    }
}
