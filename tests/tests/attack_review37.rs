//! A thirty-seventh attack review, run as the process inside sandbox A (`sandbox run
//! --user 65534`, arbitrary Python) holding a handle of its own policy, and as the
//! operator of the nameserver of its integration's host: what can it do to the
//! operator's tools (the CLI's output), to the broker's share of connections, and
//! through the broker's own resolver? Each test counts and prints a `figure:` line.
//!
//! Found:
//! - the broker tried every address a name's answer held, one after another, until one
//!   accepted: the nameserver of an integration's host (A's, here) answered 3 500 A
//!   records in one 64 KiB TCP reply (each outside the deny ranges), and one call of A's
//!   made 3 500 connects from the host to addresses of its choosing, each one's fate
//!   (`Network is unreachable`, refused, silent, a TLS failure) named in the 195 KiB error
//!   A got back: a scanner of port 443 from the node's address, 3 500 addresses a call
//!   ([`one_call_tries_a_few_addresses_of_a_name`]). A connection tries the first eight
//!   now (`client::ADDRESSES_TRIED`): 8.
//! - `hb-agent events --json`, the events file and the audit log (which an operator
//!   may follow with `tail -f`) and the JSON of `maps dump`, `maps list` and
//!   `status` wrote a sandbox's process name (or a pod's sub-cgroup's name) as
//!   serde_json writes a string: C0 controls escaped, but DEL, C1 controls (U+009B is
//!   CSI to a terminal that reads 8-bit controls in UTF-8) and bidi overrides (U+202E)
//!   raw. The text forms escape them (`events::Escaped`); these JSON forms now write
//!   them as `\uXXXX` (`events::json_line`, `json_pretty`, `inert` for the audit log):
//!   the same JSON to a parser, nothing a terminal acts on
//!   ([`a_process_name_reaches_the_json_of_events_inert`]): U+009B and U+202E raw in
//!   `events --json`, the events file and the audit log before, none now.
//!
//! Held (tried):
//! - half-closing (SHUT_WR) a `POST /v1/requests` to free the connection's share while
//!   the call runs: hyper (half-close off) ends the connection at the EOF, and the call
//!   with it. Of 10 such calls 0.3 s apart, to a path the upstream answers after 4 s
//!   (`max_connections_per_caller` 2), the upstream saw 2 start, at most 2 at once, and
//!   A got 10 EOFs; closing outright started none; a third held connection is reset at
//!   accept.
//! - `Upgrade: websocket` on `GET /v1/whoami`, `CONNECT /v1/whoami` and `CONNECT
//!   api.test:443` on the broker socket: answered 200, 405 and 404, the connection then
//!   reads no further request and is closed at `header_read_timeout_secs` (3 s in the
//!   probe), as a plain kept-alive one is: no tunnel, no slot held longer.
//! - the URL's port is the integration's (`https://api.test:22/` is `policy_denied`), so
//!   the scan above was of port 443 only.
//!
//! Held (read in the code): the broker's resolver judges every A/AAAA record of a reply
//! (not only those on the question's CNAME chain), so a CNAME into a denied range
//! refuses the whole answer; the addresses judged are the ones connected to (no second
//! lookup: no rebinding between the check and the connect); TTL 0 is raised to
//! `dns.min_ttl_secs` and a cached answer is judged again against the host's addresses.
//! The text outputs (`events`, `maps dump`, `status`'s tables) escape what a sandbox
//! chose (`Escaped`, `Field`), the agent's text log escapes ESC, BEL, DEL and C1
//! (tracing-subscriber 0.3.23) and logs no sandbox-chosen name unescaped; metric labels
//! are policy names and fixed words. Rotations are operator-only; the rotator's breaker
//! counts the provider's failures only; `novelty` only alerts (A sees no reaction to
//! learn another tenant's calls from).
//!
//! Still weak or not checked:
//! - eight addresses a call remain: the nameserver still learns, through A's error, the
//!   fate of eight addresses of its choosing on the integration's port, once per
//!   `dns.min_ttl_secs` per name (the answer is cached) — more with wildcard hosts.
//! - the broker's resolver keeps 1 024 names and then starts over: a tenant with a
//!   wildcard integration host can empty it for everyone (a lookup more each, no
//!   refusal; not tested).
//! - `auth_failure`, `rate_spike` and quarantine with an upstream of A's own were not
//!   tried here (reviews 2–4, 24 and 33 did).

use hb_tests::{
    TestEnv, private_netns,
    sandboxed::{nobody_broker_client, nobody_command},
    worlds::{TrustedNames, dns_server},
};

const DNS_PORT: u16 = 5737;
/// Port of the attacker's nameserver, which the agent asks.
const HOSTILE_DNS: u16 = 5738;
const API: &str = "api.test";

/// Account `a`'s key (sandbox A's): fake, made for this file.
const KEY_A: &str = "keyA-7d2c9e1b4a6f30587e1c9a2b4d6f80";

/// How many addresses the attacker's nameserver gives `api.test`.
const ADDRESSES: usize = 3500;

/// The nameserver of `api.test`, run by the attacker: an A question is answered
/// truncated over UDP and, over TCP, with `N` A records (`N` set before), each its own
/// address in 203.0.0.0/18 but 203.0.113.0/24 (outside the deny ranges, no route in the
/// test's namespace); other questions get no records.
const MANY_ADDRESSES_DNS: &str = r#"
def answer(q, tcp):
    i = 12
    while q[i]:
        i += q[i] + 1
    question = q[12:i + 5]
    qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
    flags = 0x8180
    if qtype != 1:
        return q[:2] + struct.pack("!HHHHH", flags, 1, 0, 0, 0) + question
    if not tcp:
        return q[:2] + struct.pack("!HHHHH", flags | 0x0200, 1, 0, 0, 0) + question
    rrs = b"".join(b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4)
                   + bytes([203, 0, k // 250 + (k // 250 >= 113), k % 250 + 1]) for k in range(N))
    return q[:2] + struct.pack("!HHHHH", flags, 1, N, 0, 0) + question + rrs
"#;

/// Sandbox A: one call with its handle to `argv[1]`; the broker's answer.
const ONE_CALL: &str = r#"
h = hb.handle("sa", "a")["handle"]
print(json.dumps(attempt(lambda: hb.request("GET", sys.argv[1], handle=h))))
"#;

/// One call of A's to its integration's host, whose nameserver answers [`ADDRESSES`]
/// addresses, makes the broker try a few of them, not all: the error A gets names the
/// addresses tried.
#[test]
fn one_call_tries_a_few_addresses_of_a_name() {
    let names = TrustedNames::start("review37-many", DNS_PORT, "provider", &[API]);
    let _dns = dns_server(
        HOSTILE_DNS,
        &format!("N = {ADDRESSES}\n{MANY_ADDRESSES_DNS}"),
    );
    let config = format!(
        "\n{}{}\n[[policy]]\nname = \"pa\"\nintegrations = [\"sa\"]\n",
        hb_tests::tls_broker_config(&names.ca.cert, HOSTILE_DNS, ""),
        hb_tests::worlds::bearer_integration("sa", API, &["GET"]),
    );
    let mut env = TestEnv::new("review37-many", &config);
    env.init_vault(&[("sa", "a", KEY_A)]);
    env.start_agent();
    let got = nobody_broker_client(&env, "pa", ONE_CALL, &["https://api.test/x"]);
    let message = got["message"].as_str().unwrap_or_default();
    let tried = message.matches(":443: ").count();
    println!(
        "figure: one call to a name of {ADDRESSES} addresses: {} after {tried} connects \
         (error message {} bytes)",
        got["error"],
        message.len()
    );
    assert_eq!(
        got["error"], "upstream_error",
        "control: no address answers: {got}"
    );
    assert!(
        tried >= 1,
        "control: the error names the addresses tried: {message:.300}"
    );
    assert!(
        tried <= 8,
        "one call made the broker connect to {tried} addresses its nameserver chose"
    );
}

/// The characters of `text` a terminal may act on rather than show (DEL, C1 controls,
/// bidi controls), as escapes.
fn unsafe_chars(text: &str) -> Vec<String> {
    text.chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)
        })
        .map(|c| c.escape_unicode().to_string())
        .collect()
}

/// `hb-agent events --json`, the events file and the audit log carry a sandbox's process
/// name whole (a script reads it back as it was) and write none of its control
/// characters raw, for a terminal to act on.
#[test]
fn a_process_name_reaches_the_json_of_events_inert() {
    hb_tests::require_root();
    private_netns(&[]);
    let mut env = TestEnv::new(
        "review37-json",
        "\n[dns]\nlisten = \"127.0.0.1:5300\"\n\n[[policy]]\nname = \"web\"\nallow_domains = []\n",
    );
    env.start_agent();
    let out = nobody_command(
        &env,
        "web",
        &[],
        &[
            hb_tests::python(),
            "-c",
            &hb_tests::sandboxed::py_named_refused_connect(
                // A C1 CSI (U+009B), `2J`, a right-to-left override (U+202E) and `x`.
                r#""\u009b2J\u202ex".encode()"#,
            ),
        ],
    )
    .output()
    .expect("sandbox run");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "EPERM",
        "control: the connect is refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let event = env.wait_event("the refused connect", |e| e["dst"] == "198.51.100.7");
    assert_eq!(
        event["comm"], "\u{9b}2J\u{202e}x",
        "the JSON carries the name as it is"
    );
    let shown = String::from_utf8_lossy(&env.hb(&["events", "--json"]).stdout).into_owned();
    let raw = unsafe_chars(&shown);
    // The files an operator follows with `tail -f` (the CLI reads the first).
    let file = std::fs::read_to_string(env.state_dir.join("events.jsonl")).expect("events file");
    let raw_in_file = unsafe_chars(&file);
    let audited = env
        .audit_records()
        .into_iter()
        .any(|r| r["kind"] == "kernel_event" && r["comm"] == "\u{9b}2J\u{202e}x");
    let audit = std::fs::read_to_string(env.state_dir.join("audit.log")).expect("audit log");
    let raw_in_audit = unsafe_chars(&audit);
    println!(
        "figure: characters written raw by `hb-agent events --json`: {raw:?}; in \
         events.jsonl: {raw_in_file:?}; in audit.log: {raw_in_audit:?}"
    );
    assert!(
        audited,
        "control: the audit log holds the refusal, name whole"
    );
    assert!(
        raw_in_audit.is_empty(),
        "the sandbox's name is in the audit log as {raw_in_audit:?}"
    );
    assert!(
        raw.is_empty(),
        "the sandbox's name reached the terminal as {raw:?}"
    );
    assert!(
        raw_in_file.is_empty(),
        "the sandbox's name is in the events file as {raw_in_file:?}"
    );
}
