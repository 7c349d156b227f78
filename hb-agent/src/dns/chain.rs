//! The part of an upstream's answer that answers the question asked: its CNAME chain.
//!
//! Owns: picking from an upstream's answer section the CNAMEs that lead on from the
//! asked name (those a DNAME of the answer synthesises included, RFC 6672), and the
//! addresses of the asked type that the chain's last name owns, each once, in the
//! chain's order. Everything else an upstream put there (records for other names, of
//! other types, the DNAME itself) is dropped before any of it is validated, learned,
//! cached or handed to a sandbox. The operator of a name a policy allows answers for
//! that name, not for others; and what a record of another type holds (a 30,000-byte
//! NULL) sat in the answer cache, whose bound counts records, not their contents (attack
//! review 31). A link a DNAME synthesises is a CNAME like any other: its target is judged
//! as a CNAME's is (its addresses by the deny ranges, learned for the asked name only),
//! and it counts toward the bound.
//!
//! Must never: follow a chain without bound ([`MAX_CHAIN`] links at most, no name
//! twice, no name past 255 octets: else `None`, and the resolver answers SERVFAIL), or
//! hand on an address twice (the same A 500 times would be 500 records in the cache and
//! 500 of the name's `max_ips_per_name` slots).

use std::collections::{HashMap, hash_map::Entry};

use hickory_proto::{
    rr::{Name, RData, Record, RecordType, rdata::CNAME},
    serialize::binary::BinDecodable as _,
};

/// The most CNAMEs followed from a question's name (BIND and Unbound stop near here).
pub const MAX_CHAIN: usize = 16;

/// A DNAME of the answer: names below `owner` are aliases of the same names below
/// `target`.
struct Dname {
    owner: Name,
    target: Name,
    ttl: u32,
}

/// The question's chain in `answers`: the CNAMEs from `qname` on (given, or synthesised
/// from a DNAME where none is given), then the `qtype` records of the name they lead to,
/// each record data once under the lowest TTL it came with. `None` for a chain longer
/// than [`MAX_CHAIN`], one that loops, or a DNAME that makes a name too long.
pub fn question_chain(
    answers: Vec<Record>,
    qname: &Name,
    qtype: RecordType,
) -> Option<Vec<Record>> {
    // Both by owner (a name's hash and equality ignore case), so a link looks up its
    // name (and its ancestors) instead of testing every record of the answer: some 5,000
    // DNAMEs or CNAMEs owned beside a 16-link chain (a 64 KiB reply, behind compression
    // pointers) cost a pass over them per link (attack review 36). A name's first CNAME
    // is its link; a second one could only be reached through a loop, which is refused.
    let mut cnames: HashMap<Name, Record> = HashMap::new();
    let mut dnames: HashMap<Name, Dname> = HashMap::new();
    let mut others = Vec::new();
    for r in answers {
        if matches!(r.data, RData::CNAME(_)) {
            cnames.entry(r.name.clone()).or_insert(r);
        } else if let Some(dname) = dname(&r) {
            dnames.insert(dname.owner.clone(), dname);
        } else if r.record_type() == qtype {
            others.push(r);
        }
    }
    let mut chain = Vec::new();
    let mut names = vec![qname.clone()];
    let mut current = qname.clone();
    loop {
        let link = match cnames.remove(&current) {
            Some(r) => r,
            None => match synthesise(&current, &dnames) {
                Some(r) => r?,
                None => break,
            },
        };
        let RData::CNAME(target) = &link.data else {
            return None;
        };
        if chain.len() == MAX_CHAIN || names.contains(&target.0) {
            return None;
        }
        current = target.0.clone();
        names.push(current.clone());
        chain.push(link);
    }
    chain.extend(unique(others.into_iter().filter(|r| r.name == current)));
    Some(chain)
}

/// The DNAME `r` holds, if it is one whose target reads as a name (RFC 6672 §2.5: sent
/// uncompressed, so it reads on its own; one that does not is passed over like any
/// record off the chain).
fn dname(r: &Record) -> Option<Dname> {
    let RData::Unknown {
        code: RecordType::DNAME,
        rdata,
    } = &r.data
    else {
        return None;
    };
    Some(Dname {
        owner: r.name.clone(),
        target: Name::from_bytes(&rdata.anything).ok()?,
        ttl: r.ttl,
    })
}

/// The CNAME the closest DNAME above `name` stands for (RFC 6672 §2.2: `name` with the
/// DNAME's owner replaced by its target, the DNAME's TTL); `None` when no DNAME lies above
/// `name` (a DNAME does not apply to its own owner); `Some(None)` when the new name would
/// pass 255 octets (RFC 6672 answers YXDOMAIN; hb refuses the answer). `dnames` by owner.
fn synthesise(name: &Name, dnames: &HashMap<Name, Dname>) -> Option<Option<Record>> {
    let labels = name.iter().count();
    // The ancestors, closest first: the name less its first label, then less two, …
    let (d, owner_labels) = (0..labels)
        .rev()
        .find_map(|n| dnames.get(&name.trim_to(n)).map(|d| (d, n)))?;
    let prefix = Name::from_labels(name.iter().take(labels - owner_labels));
    let target = prefix.and_then(|p| p.append_domain(&d.target)).ok();
    Some(target.map(|t| Record::from_rdata(name.clone(), d.ttl, RData::CNAME(CNAME(t)))))
}

/// `records` with each record data once, in first-seen order, under the lowest TTL it
/// came with (RFC 2181 §5.2: differing TTLs of one set are read as the lowest).
fn unique(records: impl Iterator<Item = Record>) -> Vec<Record> {
    let mut kept: Vec<Record> = Vec::new();
    let mut seen: HashMap<RData, usize> = HashMap::new();
    for r in records {
        match seen.entry(r.data.clone()) {
            Entry::Occupied(at) => {
                let kept = &mut kept[*at.get()];
                kept.ttl = kept.ttl.min(r.ttl);
            }
            Entry::Vacant(slot) => {
                slot.insert(kept.len());
                kept.push(r);
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, str::FromStr as _};

    use hickory_proto::{rr::rdata, serialize::binary::BinEncodable as _};

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

    fn dname(from: &str, to: &str) -> Record {
        let target = name(to).to_bytes().expect("wire name");
        Record::from_rdata(
            name(from),
            30,
            RData::Unknown {
                code: RecordType::DNAME,
                rdata: rdata::NULL::with(target),
            },
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

    #[test]
    fn a_dname_stands_for_the_cname_it_synthesises() {
        let q = name("x.dn.wild.test.");
        let answers = vec![
            a("evil.test.", 9),
            dname("dn.wild.test.", "evil.test."),
            a("x.evil.test.", 1),
            a("x.dn.wild.test.", 2),
        ];
        let kept = question_chain(answers, &q, RecordType::A).expect("a chain");
        assert_eq!(owners(&kept), ["x.dn.wild.test. CNAME", "x.evil.test. A"]);
        assert_eq!(
            kept[0].data,
            RData::CNAME(rdata::CNAME(name("x.evil.test.")))
        );
        assert_eq!(kept[0].ttl, 30, "the DNAME's TTL");
        // A CNAME the upstream gave is taken over the DNAME's synthesis.
        let given = vec![
            dname("dn.wild.test.", "evil.test."),
            cname("x.dn.wild.test.", "x.evil.test."),
            a("x.evil.test.", 1),
        ];
        let kept = question_chain(given, &q, RecordType::A).expect("a chain");
        assert_eq!(owners(&kept), ["x.dn.wild.test. CNAME", "x.evil.test. A"]);
        assert_eq!(kept[0].ttl, 60, "the CNAME's own TTL");
        // The closest DNAME above the name applies; one on the name itself, or beside
        // it, does not.
        let nested = vec![
            dname("wild.test.", "far.test."),
            dname("dn.wild.test.", "near.test."),
            a("x.near.test.", 3),
            a("x.far.test.", 4),
        ];
        let kept = question_chain(nested, &q, RecordType::A).expect("a chain");
        assert_eq!(owners(&kept), ["x.dn.wild.test. CNAME", "x.near.test. A"]);
        for off in [
            dname("x.dn.wild.test.", "evil.test."),
            dname("other.test.", "evil.test."),
        ] {
            let kept = question_chain(vec![off, a("x.evil.test.", 1)], &q, RecordType::A);
            assert_eq!(kept.map(|r| r.len()), Some(0));
        }
    }

    #[test]
    fn a_dname_owned_by_the_root_or_a_tld_applies_below_it() {
        let q = name("x.wild.test.");
        let kept = question_chain(vec![dname("test.", "evil.")], &q, RecordType::A);
        let kept = kept.expect("a chain");
        assert_eq!(owners(&kept), ["x.wild.test. CNAME"]);
        assert_eq!(
            kept[0].data,
            RData::CNAME(rdata::CNAME(name("x.wild.evil.")))
        );
        // The root's applies to every name, its own targets too: the bound stops it.
        let root = question_chain(vec![dname(".", "evil.")], &q, RecordType::A);
        assert!(root.is_none());
    }

    #[test]
    fn a_dname_is_bounded_like_a_cname() {
        let q = name("x.dn.test.");
        // Onto its own owner: the name comes back, a loop.
        assert!(question_chain(vec![dname("dn.test.", "dn.test.")], &q, RecordType::A).is_none());
        // Below its own owner: every link is a new, longer name, stopped by the bound.
        assert!(question_chain(vec![dname("dn.test.", "a.dn.test.")], &q, RecordType::A).is_none());
        // A target that makes the name pass 255 octets.
        let long = format!("{}.test.", vec!["l".repeat(63); 3].join("."));
        let q = name(&format!("{}.dn.test.", "x".repeat(60)));
        assert!(question_chain(vec![dname("dn.test.", &long)], &q, RecordType::A).is_none());
        // Links a DNAME synthesises count toward the bound with the CNAMEs.
        let mut mixed: Vec<Record> = (0..MAX_CHAIN - 1)
            .map(|i| cname(&format!("c{i}.test."), &format!("c{}.test.", i + 1)))
            .collect();
        mixed.push(cname(&format!("c{}.test.", MAX_CHAIN - 1), "x.dn.test."));
        mixed.push(dname("dn.test.", "end.test."));
        mixed.push(a("x.end.test.", 1));
        assert!(question_chain(mixed.clone(), &name("c0.test."), RecordType::A).is_none());
        let within = question_chain(mixed, &name("c1.test."), RecordType::A);
        assert_eq!(within.map(|r| r.len()), Some(MAX_CHAIN + 1));
    }

    #[test]
    fn each_address_is_kept_once_under_its_lowest_ttl() {
        let q = name("dup.test.");
        let mut answers: Vec<Record> = (0..500).map(|_| a("dup.test.", 1)).collect();
        let mut short = a("dup.test.", 1);
        short.ttl = 7;
        answers.insert(250, short);
        answers.push(a("dup.test.", 2));
        answers.push(a("dup.test.", 1));
        let kept = question_chain(answers, &q, RecordType::A).expect("an answer");
        let shown: Vec<(String, u32)> = kept.iter().map(|r| (r.data.to_string(), r.ttl)).collect();
        assert_eq!(
            shown,
            [
                ("203.0.113.1".to_owned(), 7),
                ("203.0.113.2".to_owned(), 60)
            ]
        );
    }
}
