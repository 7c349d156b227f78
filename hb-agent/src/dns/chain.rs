//! The part of an upstream's answer that answers the question asked: its CNAME chain.
//!
//! Owns: picking from an upstream's answer section the CNAMEs that lead on from the
//! asked name, and the addresses of the asked type that the chain's last name owns, in
//! the chain's order. Everything else an upstream put there (records for other names,
//! of other types, a DNAME beside the CNAME synthesised from it) is dropped before any
//! of it is validated, learned, cached or handed to a sandbox. The operator of a name a
//! policy allows answers for that name, not for others; and what a record of another
//! type holds (a 30,000-byte NULL) sat in the answer cache, whose bound counts records,
//! not their contents (attack review 31).
//!
//! Must never: follow a chain without bound ([`MAX_CHAIN`] CNAMEs at most, no name
//! twice: else `None`, and the resolver answers SERVFAIL).

use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The most CNAMEs followed from a question's name (BIND and Unbound stop near here).
pub const MAX_CHAIN: usize = 16;

/// The question's chain in `answers`: the CNAMEs from `qname` on, then the `qtype`
/// records of the name they lead to. `None` for a chain longer than [`MAX_CHAIN`] or
/// one that loops.
pub fn question_chain(
    answers: Vec<Record>,
    qname: &Name,
    qtype: RecordType,
) -> Option<Vec<Record>> {
    let mut cnames: Vec<Option<Record>> = Vec::new();
    let mut others = Vec::new();
    for r in answers {
        if matches!(r.data, RData::CNAME(_)) {
            cnames.push(Some(r));
        } else if r.record_type() == qtype {
            others.push(r);
        }
    }
    let mut chain = Vec::new();
    let mut names = vec![qname.clone()];
    let mut current = qname.clone();
    while let Some(r) = cnames
        .iter_mut()
        .find(|r| r.as_ref().is_some_and(|r| r.name == current))
        .and_then(Option::take)
    {
        let RData::CNAME(target) = &r.data else {
            return None;
        };
        if chain.len() == MAX_CHAIN || names.contains(&target.0) {
            return None;
        }
        current = target.0.clone();
        names.push(current.clone());
        chain.push(r);
    }
    chain.extend(others.into_iter().filter(|r| r.name == current));
    Some(chain)
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, str::FromStr as _};

    use hickory_proto::rr::rdata;

    use super::*;

    fn name(n: &str) -> Name {
        Name::from_str(n).expect("name")
    }

    fn cname(from: &str, to: &str) -> Record {
        Record::from_rdata(name(from), 60, RData::CNAME(rdata::CNAME(name(to))))
    }

    fn a(owner: &str, last: u8) -> Record {
        Record::from_rdata(
            name(owner),
            60,
            RData::A(rdata::A(Ipv4Addr::new(203, 0, 113, last))),
        )
    }

    fn owners(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| format!("{} {}", r.name, r.record_type()))
            .collect()
    }

    #[test]
    fn keeps_the_chain_in_order_and_the_addresses_of_its_end() {
        let q = name("Www.Wild.Test.");
        let answers = vec![
            a("edge.cdn.test.", 1),
            Record::from_rdata(
                name("edge.cdn.test."),
                60,
                RData::TXT(rdata::TXT::new(vec!["x".into()])),
            ),
            cname("mid.cdn.test.", "edge.cdn.test."),
            a("victim.test.", 2),
            cname("www.wild.test.", "mid.cdn.test."),
            a("www.wild.test.", 3),
            cname("other.test.", "edge.cdn.test."),
            Record::from_rdata(
                name("edge.cdn.test."),
                60,
                RData::AAAA(rdata::AAAA("2001:db8::1".parse().expect("ip"))),
            ),
        ];
        let kept = question_chain(answers, &q, RecordType::A).expect("a chain");
        assert_eq!(
            owners(&kept),
            [
                "www.wild.test. CNAME",
                "mid.cdn.test. CNAME",
                "edge.cdn.test. A"
            ]
        );
        let direct = question_chain(
            vec![a("victim.test.", 2), a("www.wild.test.", 3)],
            &q,
            RecordType::A,
        );
        assert_eq!(owners(&direct.expect("an answer")), ["www.wild.test. A"]);
        let nodata = question_chain(vec![a("www.wild.test.", 3)], &q, RecordType::AAAA);
        assert_eq!(nodata.map(|r| r.len()), Some(0));
    }

    #[test]
    fn refuses_loops_and_chains_past_the_bound() {
        let q = name("c0.test.");
        let looped = vec![
            cname("c0.test.", "c1.test."),
            cname("c1.test.", "C0.test."),
            a("c0.test.", 1),
        ];
        assert!(question_chain(looped, &q, RecordType::A).is_none());
        let chain = |n: usize| {
            let mut r: Vec<Record> = (0..n)
                .map(|i| cname(&format!("c{i}.test."), &format!("c{}.test.", i + 1)))
                .collect();
            r.push(a(&format!("c{n}.test."), 1));
            r
        };
        let longest =
            question_chain(chain(MAX_CHAIN), &q, RecordType::A).expect("within the bound");
        assert_eq!(longest.len(), MAX_CHAIN + 1);
        assert!(question_chain(chain(MAX_CHAIN + 1), &q, RecordType::A).is_none());
    }
}
