//! The resolver against a hostile upstream, continued from attack review 31 (which made
//! the resolver keep only the question's CNAME chain): three weak points left there.
//! The seat is the operator of the authoritative DNS for a name a policy allows through a
//! wildcard (`*.wild.test`: the attacker registers a name under it and answers whatever
//! it likes), with a sandbox of that policy asking (uid 65534, raw DNS over TCP to a
//! port-53 address, which the kernel redirects to hb's resolver).
//!
//! - A DNAME (RFC 6672) without the CNAME it stands for was passed over: the answer was
//!   NODATA. Now hb synthesises the CNAME (the owner's suffix of the name replaced by the
//!   target) and follows it like a given one: the addresses it leads to are judged by the
//!   deny ranges and learned for the asked name alone, and the link counts toward the
//!   16-link bound; a loop, a chain past the bound or a name past 255 octets is SERVFAIL.
//! - The same address many times in one answer (500 times, under two TTLs) was kept as
//!   many records: handed out 500 times, cached as 500, and counted 500 times against
//!   `max_ips_per_name`, so the name's other address was trimmed away. Now each address
//!   is kept once, under the lowest TTL it came with.
//! - A reply over TCP (after a truncated UDP one) was taken whatever its id; a UDP reply
//!   needed the query's. Both are held to the id and the question now, by one function.
//!   Not exploitable from a sandbox (the reply comes over the agent's own connection to
//!   the server it chose), so this test is a guard of the same rule on both transports.
//!
//! Everything lives on `lo` in the test's own network namespace; the upstream is a small
//! Python DNS server the test scripts, on 127.0.0.1 (UDP and TCP).

use std::{thread, time::Duration};

use hb_tests::{
    PythonServer, TestEnv, private_netns,
    sandboxed::tcp_answers,
    worlds::{dns_server, resolver_config, started_agent},
};
use serde_json::Value;

const PORT: u16 = 5532;

/// The hostile upstream on 127.0.0.1:`PORT`, UDP and TCP; it answers A queries (others:
/// NODATA) by the question's first label:
/// - under `dn.wild.test`: a DNAME `dn.wild.test` → `evil.test` and no CNAME, with
///   addresses for `x.evil.test` (203.0.113.30), `priv.evil.test` (10.0.0.1) and
///   `evil.test` itself (203.0.113.31);
/// - under `dloop.wild.test`: a DNAME onto its own owner; under `dgrow.wild.test`: one onto
///   a name below itself (each link a longer name); under `dlong.wild.test`: one onto a
///   198-octet name;
/// - `dup`: 203.0.113.20 500 times (TTL 60 and 30 in turn), then 203.0.113.21;
/// - `tc`: truncated over UDP, and over TCP 203.0.113.40 under another id than the
///   query's; `tcok`: the same with the query's id, 203.0.113.41;
/// - anything else: 203.0.113.10.
fn hostile_upstream() -> PythonServer {
    dns_server(
        PORT,
        r#"
def name(n):
    return b"".join(bytes([len(p)]) + p.encode() for p in n.split(".")) + b"\0"
def rr(owner, t, data, ttl=60):
    return owner + struct.pack("!HHIH", t, 1, ttl, len(data)) + data
def a(ip): return socket.inet_aton(ip)
DNAME = 39
def answer(q, tcp):
    end = 12
    while q[end] != 0: end += q[end] + 1
    first = q[13:13 + q[12]].decode().lower()
    qname = q[12:end + 1].lower()
    qtype = struct.unpack("!H", q[end + 1:end + 3])[0]
    qid, flags, rrs = q[:2], 0x8180, []
    if qtype != 1:
        pass
    elif qname.endswith(name("dn.wild.test")):
        rrs = [rr(name("dn.wild.test"), DNAME, name("evil.test")),
               rr(name("evil.test"), 1, a("203.0.113.31")),
               rr(name("x.evil.test"), 1, a("203.0.113.30")),
               rr(name("priv.evil.test"), 1, a("10.0.0.1"))]
    elif qname.endswith(name("dloop.wild.test")):
        rrs = [rr(name("dloop.wild.test"), DNAME, name("dloop.wild.test"))]
    elif qname.endswith(name("dgrow.wild.test")):
        rrs = [rr(name("dgrow.wild.test"), DNAME, name("a.dgrow.wild.test"))]
    elif qname.endswith(name("dlong.wild.test")):
        long = ".".join(["l" * 63] * 3) + ".test"
        rrs = [rr(name("dlong.wild.test"), DNAME, name(long))]
    elif first == "dup":
        rrs = [rr(b"\xc0\x0c", 1, a("203.0.113.20"), 60 if i % 2 else 30) for i in range(500)]
        rrs.append(rr(b"\xc0\x0c", 1, a("203.0.113.21")))
    elif first in ("tc", "tcok") and not tcp:
        flags |= 0x0200
    elif first == "tc":
        qid = bytes([q[0] ^ 0x5a, q[1]])
        rrs = [rr(b"\xc0\x0c", 1, a("203.0.113.40"))]
    elif first == "tcok":
        rrs = [rr(b"\xc0\x0c", 1, a("203.0.113.41"))]
    else:
        rrs = [rr(b"\xc0\x0c", 1, a("203.0.113.10"))]
    return qid + struct.pack("!HHHHH", flags, 1, len(rrs), 0, 0) + q[12:end + 5] + b"".join(rrs)
"#,
    )
}

/// Policy `web` allows `*.wild.test`; at most 4 addresses a name; the upstream on `PORT`.
fn config() -> String {
    format!(
        "{}\n[[policy]]\nname = \"web\"\nallow_domains = [\"*.wild.test\"]\n",
        resolver_config(PORT, true, "max_ips_per_name = 4\n", &["203.0.113.0/24"])
    )
}

/// The allow map's rows once each names its names (the agent writes the name index once
/// a second), or as they are after 50 looks.
fn named_rows(env: &TestEnv) -> Vec<Value> {
    let mut rows = env.allow_rows();
    for _ in 0..50 {
        if rows.iter().all(|r| r["names"] != "") {
            break;
        }
        thread::sleep(Duration::from_millis(100));
        rows = env.allow_rows();
    }
    rows
}

/// The allow map's rows for `ip`.
fn rows_of<'a>(rows: &'a [Value], ip: &str) -> Vec<&'a Value> {
    rows.iter().filter(|r| r["ip"] == ip).collect()
}

/// The answer for `name` in [`tcp_answers`]' output, from its rcode on.
fn answer_of<'a>(said: &'a str, name: &str) -> &'a str {
    said.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no answer for {name}: {said}"))
}

/// A DNAME `dn.wild.test` → `evil.test` without its CNAME. hb answered NODATA; now the
/// sandbox gets the synthesised CNAME and `x.evil.test`'s address, learned for
/// `x.dn.wild.test` only — not `evil.test`'s own address (off the chain), and not a
/// private one the chain leads to (refused as rebinding). DNAMEs that loop, grow a name
/// link by link, or make it pass 255 octets are SERVFAIL, their addresses never learned.
#[test]
fn a_dname_is_followed_as_its_cname_judged_and_bounded_like_one() {
    private_netns(&["192.0.2.53", "203.0.113.10"]);
    let _up = hostile_upstream();
    let env = started_agent("rchdname", &config());
    let long = format!("{}.dlong.wild.test", "x".repeat(60));
    let said = tcp_answers(
        &env,
        "web",
        &[
            "x.dn.wild.test",
            "priv.dn.wild.test",
            "x.dloop.wild.test",
            "x.dgrow.wild.test",
            &long,
        ],
    );
    let rows = named_rows(&env);
    let learned = rows_of(&rows, "203.0.113.30");
    println!(
        "figure: the sandbox was handed: {} | rows for the DNAME's target: {learned:?}",
        said.trim().replace('\n', " | ")
    );
    assert_eq!(
        answer_of(&said, "x.dn.wild.test"),
        "rcode 0 answers 2 types 5,1 addrs 203.0.113.30 ttl 60",
        "a DNAME without its CNAME: {said}"
    );
    assert!(
        learned.len() == 1 && learned[0]["names"] == "x.dn.wild.test",
        "the DNAME target's address is learned for the asked name alone: {rows:?}"
    );
    assert!(
        rows_of(&rows, "203.0.113.31").is_empty(),
        "an address off the synthesised chain was learned: {rows:?}"
    );
    assert!(
        answer_of(&said, "priv.dn.wild.test").starts_with("rcode 5 answers 0"),
        "a private address behind a DNAME is refused as rebinding: {said}"
    );
    assert!(rows_of(&rows, "10.0.0.1").is_empty(), "{rows:?}");
    for bounded in ["x.dloop.wild.test", "x.dgrow.wild.test", &long] {
        assert!(
            answer_of(&said, bounded).starts_with("rcode 2 answers 0"),
            "{bounded}: {said}"
        );
    }
}

/// `dup.wild.test` answers 203.0.113.20 500 times (TTLs 60 and 30) and 203.0.113.21 once;
/// the policy takes 4 addresses a name. hb kept the 500 copies: the sandbox was handed
/// 500 records and the name's 4 slots went to the copies, so 203.0.113.21 was trimmed
/// away. Now each address is kept once, under the lower TTL.
#[test]
fn an_address_repeated_in_one_answer_is_kept_once() {
    private_netns(&["192.0.2.53", "203.0.113.10"]);
    let _up = hostile_upstream();
    let env = started_agent("rchdup", &config());
    let said = tcp_answers(&env, "web", &["dup.wild.test"]);
    let rows = env.allow_rows();
    let (first, second) = (
        rows_of(&rows, "203.0.113.20").len(),
        rows_of(&rows, "203.0.113.21").len(),
    );
    let handed = answer_of(&said, "dup.wild.test");
    println!(
        "figure: 501 address records (2 addresses) -> handed {} | rows: {first} + {second}",
        handed.split(" types").next().unwrap_or(handed)
    );
    assert_eq!(
        handed, "rcode 0 answers 2 types 1,1 addrs 203.0.113.20,203.0.113.21 ttl 30",
        "{said}"
    );
    assert_eq!((first, second), (1, 1), "{rows:?}");
}

/// `tc.wild.test` is truncated over UDP, and its TCP reply carries another id than the
/// query's. hb took it (it checked the id of UDP replies only): answered and learned
/// 203.0.113.40. Now it is dropped like a UDP reply of another id: SERVFAIL, nothing
/// learned. `tcok.wild.test`, the same with the right id, shows the TCP path answers.
#[test]
fn a_tcp_reply_under_another_id_is_not_taken() {
    private_netns(&["192.0.2.53", "203.0.113.10"]);
    let _up = hostile_upstream();
    let env = started_agent("rchtcpid", &config());
    let said = tcp_answers(&env, "web", &["tcok.wild.test", "tc.wild.test"]);
    let rows = env.allow_rows();
    println!(
        "figure: {} | rows for the wrong id's address: {}",
        said.trim().replace('\n', " | "),
        rows_of(&rows, "203.0.113.40").len()
    );
    assert!(
        answer_of(&said, "tcok.wild.test")
            .starts_with("rcode 0 answers 1 types 1 addrs 203.0.113.41"),
        "the TCP path answers (else the test proves nothing): {said}"
    );
    assert!(
        answer_of(&said, "tc.wild.test").starts_with("rcode 2 answers 0"),
        "a TCP reply under another id was taken: {said}"
    );
    assert!(rows_of(&rows, "203.0.113.40").is_empty(), "{rows:?}");
}
