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
//! Everything lives on `lo` in the test's own network namespace: dnsmasq (or a small
//! Python DNS server the test scripts) is the upstream on 127.0.0.1.

use hb_tests::{
    python,
    sandboxed::{Running, nobody_command, nobody_run},
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
