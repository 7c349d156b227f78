//! A ninth attack review, run as the process inside the sandbox: each test performs one
//! attack from a sandbox (uid 65534, arbitrary Python) against the real agent, real
//! kernel and real upstreams on the test namespace's `lo`, and asserts the secure
//! outcome. A test marked `#[ignore = "open: …"]` is a break found and not yet fixed:
//! it fails against the current agent.
//!
//! Angle: the kernel path again — the claim that a sandbox reaches only addresses the
//! resolver validated for a name its policy allows (through the guard where the policy
//! guards the port), never loopback or another policy's resolver — attacked through
//! what the connect/sendmsg hooks route around the guard (UDP to a guarded port other
//! than 443), what the redirect admits (the resolver's loopback address), the
//! unspecified addresses the kernel turns into loopback, and what the allow maps keep
//! across an agent restart that narrows a policy.
//!
//! Everything lives on `lo` in the test's own network namespace; dnsmasq answers the
//! test names; listeners outside the sandbox record what reached them.

use std::{
    fs, thread,
    time::{Duration, Instant},
};

use hb_tests::{
    TcpProbe, TestEnv, UdpProbe, python,
    worlds::{attack_as, names_on_lo, nameserver_sandbox, resolver_config, started_agent},
};

const DNS_PORT: u16 = 5400;
const SHARED: &str = "203.0.113.10";
const SHARED6: &str = "2001:db8::10";

/// `(label, verdict)` for every `label verdict` line the script printed.
fn verdicts(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_owned(), b.trim().to_owned()))
        .collect()
}

/// Waits until `probe` counted `n` datagrams (or 5 s passed); its count.
fn udp_count(probe: &UdpProbe, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    while probe.received() < n && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    probe.received()
}

/// Python helpers every script here starts with: `attempt(label, f)` prints `label sent`
/// or `label ERRNO`; `query(name)` is a DNS query for `name`'s A record.
const PRELUDE: &str = r#"
import errno, socket, struct
def attempt(label, f):
    try:
        f(); print(label, "sent", flush=True)
    except OSError as e:
        print(label, errno.errorcode.get(e.errno, str(e)), flush=True)
def query(name, qid=0x4242):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack(">HH", 1, 1)
"#;

// ---------------------------------------------------------------------------------------
// QUIC to a guarded port other than 443.
// ---------------------------------------------------------------------------------------

/// The guard judges TCP only, so a guarded policy refuses QUIC (UDP to port 443) to its
/// allowed addresses: an HTTP/3 ClientHello naming `evil.test`, sent to a CDN address
/// validated for `allowed.test`, would be routed to `evil.test` by the CDN (domain
/// fronting, what the guard exists to stop). A CDN serves HTTPS on more ports than 443
/// — which is why `guard_ports` and `guard_all_ports` exist — and HTTP/3 on any port it
/// advertises (`Alt-Svc: h3=":8443"`). The attack: UDP to the validated address on a
/// port the policy guards that is not 443 — 8443 under `guard_ports = [80, 443, 8443]`,
/// any port under `guard_all_ports` (whose documentation promises that only TLS and
/// plain HTTP pass) — by `sendto`, by `connect` + `send`, and over IPv6. A port the
/// policy does not guard still takes UDP (the control: the fix refuses no more than the
/// guard's ports).
#[test]
fn quic_to_a_guarded_port_other_than_443_never_arrives() {
    let _dns = names_on_lo(
        &[SHARED, SHARED6, "192.0.2.53"],
        DNS_PORT,
        &[("allowed.test", &[SHARED, SHARED6])],
        60,
    );
    let guarded = [
        UdpProbe::bind(&format!("{SHARED}:8443")),
        UdpProbe::bind(&format!("[{SHARED6}]:8443")),
        UdpProbe::bind(&format!("{SHARED}:2053")),
        UdpProbe::bind(&format!("[{SHARED6}]:2053")),
    ];
    let unguarded = UdpProbe::bind(&format!("{SHARED}:7000"));
    let config = format!(
        r#"{resolver}
[[policy]]
name = "web"
allow_domains = ["allowed.test"]
guard_ports = [80, 443, 8443]

[[policy]]
name = "allports"
allow_domains = ["allowed.test"]
guard_all_ports = true
"#,
        resolver = resolver_config(DNS_PORT, true, "", &["203.0.113.0/24", "2001:db8::/32"]),
    );
    let env = started_agent("review9-quic", &config);
    let body = r#"
A = socket.getaddrinfo("allowed.test", 0, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]
A6 = socket.getaddrinfo("allowed.test", 0, socket.AF_INET6, socket.SOCK_DGRAM)[0][4][0]
HELLO = b"\xc3\x00\x00\x00\x01" + b"quic-initial sni=evil.test"
def connected(host, port, family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_DGRAM); s.connect((host, port)); s.send(HELLO)
for port in PORTS:
    attempt("sendto4:%d" % port, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(HELLO, (A, port)))
    attempt("connect4:%d" % port, lambda: connected(A, port))
    attempt("sendto6:%d" % port, lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(HELLO, (A6, port)))
    attempt("mapped:%d" % port, lambda: connected("::ffff:" + A, port, socket.AF_INET6))
attempt("control:7000", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(HELLO, (A, 7000)))
"#;
    let web = attack_as(&env, "web", &format!("{PRELUDE}\nPORTS = [8443]\n{body}"));
    let all = attack_as(
        &env,
        "allports",
        &format!("{PRELUDE}\nPORTS = [8443, 2053]\n{body}"),
    );
    // The `web` control arrives (under `allports` port 7000 is guarded too), so by then
    // every datagram `web` sent before it has too; `allports` ran after it.
    let control = udp_count(&unguarded, 1);
    thread::sleep(Duration::from_millis(300));
    let arrived: usize = guarded.iter().map(UdpProbe::received).sum();
    let sent = |text: &str| {
        text.lines()
            .filter(|l| l.ends_with(" sent") && !l.starts_with("control"))
            .count()
    };
    println!(
        "figure: {arrived} QUIC-shaped datagrams reached guarded ports other than 443 of the allowed address (sent under web: {}, under allports: {})",
        sent(&web),
        sent(&all),
    );
    for (who, text, control) in [("web", &web, "sent"), ("allports", &all, "EPERM")] {
        let v = verdicts(text);
        assert!(v.len() >= 5, "{who}: {text}");
        for (label, verdict) in v {
            let expected = if label.starts_with("control") {
                control
            } else {
                "EPERM"
            };
            assert_eq!(
                verdict, expected,
                "{who} {label}: UDP to a guarded port was not refused\n{text}"
            );
        }
    }
    assert_eq!(
        arrived, 0,
        "datagrams reached a guarded port\nweb: {web}\nallports: {all}"
    );
    assert_eq!(
        control, 1,
        "UDP to a port web does not guard must still pass, once\nweb: {web}\nallports: {all}"
    );
}

// ---------------------------------------------------------------------------------------
// Loopback through the unspecified addresses and the resolver's admitted address.
// ---------------------------------------------------------------------------------------

/// Loopback reached sideways. (1) `connect`/`sendto` to `0.0.0.0` and `::`, which the
/// kernel turns into loopback after the hooks ran. (2) A UDP socket whose DNS query the
/// kernel redirected to the resolver has `127.0.0.1` (or `::1`) as its admitted peer —
/// an address, not a port — so the packet hook passes its datagrams to any port there:
/// the socket then aims at another loopback port by `sendto`, and by `connect` + `send`.
/// (3) Another policy's resolver port, straight: that resolver validates names for its
/// own policy, and a query there is charged to it. Listeners on loopback (TCP and UDP,
/// IPv4 and IPv6) record what arrives; every attempt must be refused and none arrive.
#[test]
fn loopback_is_unreachable_through_unspecified_addresses_or_the_resolvers_admission() {
    let _dns = names_on_lo(
        &[SHARED, "192.0.2.53"],
        DNS_PORT,
        &[("allowed.test", &[SHARED]), ("other.test", &[SHARED])],
        60,
    );
    let tcp4 = TcpProbe::bind("127.0.0.1:9999");
    let tcp6 = TcpProbe::bind("[::1]:9999");
    let udp4 = UdpProbe::bind("127.0.0.1:9998");
    let udp6 = UdpProbe::bind("[::1]:9998");
    let config = format!(
        r#"{resolver}
[[policy]]
name = "web"
allow_domains = ["allowed.test"]

[[policy]]
name = "other"
allow_domains = ["other.test"]
"#,
        resolver = resolver_config(DNS_PORT, true, "", &["203.0.113.0/24"]),
    );
    let env = started_agent("review9-loop", &config);
    let other_port = 5300 + env.policy_id("other");
    let script = format!(
        r#"{PRELUDE}
OTHER = {other_port}
def tcp(host, port, family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_STREAM); s.settimeout(3); s.connect((host, port)); s.send(b"x")
attempt("tcp_any4", lambda: tcp("0.0.0.0", 9999))
attempt("tcp_any6", lambda: tcp("::", 9999, socket.AF_INET6))
attempt("udp_any4", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("0.0.0.0", 9998)))
attempt("udp_any6", lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b"x", ("::", 9998)))
# A DNS socket: its query goes to the resolver, which answers; then elsewhere on loopback.
s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s4.settimeout(3)
s4.sendto(query("allowed.test"), ("192.0.2.53", 53)); s4.recvfrom(512)
attempt("dns4_sendto", lambda: s4.sendto(b"x", ("127.0.0.1", 9998)))
attempt("dns4_other_resolver", lambda: s4.sendto(query("other.test"), ("127.0.0.1", OTHER)))
def reaim4():
    s4.connect(("127.0.0.1", 9998)); s4.send(b"x")
attempt("dns4_connect", reaim4)
c4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c4.settimeout(3)
c4.connect(("192.0.2.53", 53)); c4.send(query("allowed.test")); c4.recv(512)
attempt("dns4_connected_sendto", lambda: c4.sendto(b"x", ("127.0.0.1", 9998)))
s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s6.settimeout(3)
s6.sendto(query("allowed.test"), ("2001:db8::53", 53)); s6.recvfrom(512)
attempt("dns6_sendto", lambda: s6.sendto(b"x", ("::1", 9998)))
attempt("dns6_other_resolver", lambda: s6.sendto(query("other.test"), ("::1", OTHER)))
def reaim6():
    s6.connect(("::1", 9998)); s6.send(b"x")
attempt("dns6_connect", reaim6)
attempt("tcp_other_resolver", lambda: tcp("127.0.0.1", OTHER))
"#
    );
    let text = attack_as(&env, "web", &script);
    thread::sleep(Duration::from_millis(300));
    let arrived = tcp4.accepted() + tcp6.accepted() + udp4.received() + udp6.received();
    let learned_other = env
        .allow_rows()
        .iter()
        .filter(|r| r.to_string().contains("other.test"))
        .count();
    println!(
        "figure: {arrived} connections/datagrams reached loopback listeners; {learned_other} allow rows learned for other.test"
    );
    let v = verdicts(&text);
    assert_eq!(v.len(), 12, "every attempt ran: {text}");
    for (label, verdict) in &v {
        assert!(
            verdict == "EPERM",
            "{label}: loopback was not refused ({verdict})\n{text}"
        );
    }
    assert_eq!(arrived, 0, "something reached loopback: {text}");
    assert_eq!(
        learned_other, 0,
        "another policy's resolver validated a name: {text}"
    );
}

// ---------------------------------------------------------------------------------------
// A name taken out of a policy, across an agent restart.
// ---------------------------------------------------------------------------------------

/// The operator takes `evil.test` out of policy `web` and restarts the agent (the only
/// way a config change takes effect). Before that, the sandbox had `evil.test`
/// resolved — a long TTL, as most records have — so its address sat in the policy's
/// allow map. The restarted agent adopts the pinned allow-map rows it finds, without
/// names, until their expiry: the address of a name the policy no longer allows stayed
/// connectable for up to `max_ttl_secs` (an hour by default). The attack: a new sandbox
/// of `web`, after the restart, connects to that address. Established connections may
/// outlive the change (DESIGN: expiry only stops new connections); a new one must not.
#[test]
fn a_name_taken_out_of_a_policy_is_not_reachable_after_the_restart() {
    narrowed_across_a_restart(
        "review9-revoke",
        r#"allow_domains = ["allowed.test", "evil.test"]"#,
        r#"allow_domains = ["allowed.test"]"#,
    );
}

/// The same with a policy that audited (which resolves every name, allowed or not, and
/// teaches the allow map its addresses) switched to enforce: what it learned while it
/// audited must not outlive the switch.
#[test]
fn what_an_audit_policy_resolved_is_not_reachable_after_it_enforces() {
    narrowed_across_a_restart(
        "review9-audit",
        "mode = \"audit\"\nallow_domains = [\"allowed.test\"]",
        "mode = \"enforce\"\nallow_domains = [\"allowed.test\"]",
    );
}

/// A sandbox of `web` (whose policy lines are `before`) resolves `evil.test` and
/// connects; the agent is stopped, the policy lines become `after`, the agent starts;
/// a new sandbox connects to `evil.test`'s address, which must be refused.
fn narrowed_across_a_restart(name: &str, before: &str, after: &str) {
    let _dns = names_on_lo(
        &[SHARED, "198.51.100.7", "192.0.2.53"],
        DNS_PORT,
        &[
            ("allowed.test", &[SHARED]),
            ("evil.test", &["198.51.100.7"]),
        ],
        600,
    );
    let evil = TcpProbe::bind("198.51.100.7:8080");
    let config = format!(
        r#"{resolver}
[[policy]]
name = "web"
{before}
"#,
        resolver = resolver_config(DNS_PORT, true, "", &["203.0.113.0/24", "198.51.100.0/24"]),
    );
    let mut env = started_agent(name, &config);
    let connect = r#"
import socket, sys
def tcp(host):
    s = socket.socket(); s.settimeout(3); s.connect((host, 8080)); s.close()
if sys.argv[-1] == "resolve":
    attempt("resolve", lambda: print("addr", socket.getaddrinfo("evil.test", 8080, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]))
attempt("connect", lambda: tcp("198.51.100.7"))
"#;
    let first = attack_as(
        &env,
        "web",
        &format!("{PRELUDE}\nimport sys; sys.argv.append('resolve')\n{connect}"),
    );
    assert!(
        first.contains("addr 198.51.100.7") && first.contains("connect sent"),
        "evil.test must be reachable while the policy lets it resolve: {first}"
    );
    assert_eq!(evil.wait_accepted(1), 1, "{first}");
    // The operator narrows the policy and restarts the agent.
    env.stop_agent();
    let text = fs::read_to_string(&env.config_path).expect("config");
    let narrowed = text.replace(before, after);
    assert_ne!(text, narrowed, "the config holds the policy lines");
    fs::write(&env.config_path, narrowed).expect("narrowed config");
    env.start_agent();
    let second = attack_as(
        &env,
        "web",
        &format!("{PRELUDE}\nimport sys; sys.argv.append('no')\n{connect}"),
    );
    thread::sleep(Duration::from_millis(300));
    let reached = evil.accepted() - 1;
    println!(
        "figure: after the policy stopped resolving evil.test ({after:?}) and the agent restarted, a new sandbox connected to its address {reached} time(s) ({})",
        second.trim()
    );
    assert!(second.contains("connect EPERM"), "{second}");
    assert_eq!(
        reached, 0,
        "evil.test's address was reached after the policy stopped resolving it: {second}"
    );
}

// ---------------------------------------------------------------------------------------
// Established connections and their admitted peer: another tenant's flood, an agent restart.
// ---------------------------------------------------------------------------------------

/// The victim's side of [`evicted_victim`]: one kept-alive HTTP connection to
/// `allowed.test:PORT` (through the guard on a guarded port), a request,
/// then, once a line arrives on stdin, a second request on the same connection.
const PY_KEEPALIVE: &str = r#"
import socket, sys
A = socket.getaddrinfo("allowed.test", PORT, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
s = socket.create_connection((A, PORT), timeout=5)
def request(i):
    s.sendall(b"GET /r%d HTTP/1.1\r\nHost: allowed.test\r\n\r\n" % i)
    data = b""
    while b"\r\n\r\n" not in data:
        d = s.recv(4096)
        if not d:
            raise OSError("closed")
        data += d
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length:
        d = s.recv(4096)
        if not d:
            raise OSError("closed")
        body += d
    return head.split(b"\r\n")[0].decode()
print("first", request(1), flush=True)
sys.stdin.readline()
try:
    print("second", request(2), flush=True)
except OSError as e:
    print("second failed:", e, flush=True)
"#;

/// `HB_SOCK_DEST`, the map that let an established flow's packets pass on their socket
/// cookie (a guarded connection's packets go to the guard on loopback, a deny range; a
/// direct one's to an address whose validation may have expired), was one LRU hash of
/// 65 536 sockets shared by every sandbox of the node (now `HB_SOCK_PEER`, each
/// socket's own storage, which no other socket can push out). Every socket whose connect or
/// datagram the hooks admit takes an entry, and a closed socket's entry stays until it
/// is pushed out. The attack: a sandbox of another policy opens, aims and closes 200 000
/// UDP sockets at an address its own policy allows (a few seconds of Python), pushing
/// out the entries of every idle connection on the node. The victim: a sandbox with a
/// kept-alive HTTP connection to `allowed.test:80` through the guard (an HTTP client's
/// pool), idle meanwhile; its next request on that connection must still be answered.
/// (Fixed for guarded connections: the packet hook passes TCP to the guard of the
/// packet's own policy, as it does for the resolver.)
#[test]
fn a_flood_of_admitted_sockets_does_not_cut_another_tenants_guarded_connection() {
    let (second, flood, reached) = evicted_victim("review9-evict", 80, 600, "");
    println!(
        "figure: after another policy's sandbox {flood}, the victim's kept-alive request through the guard: {second} (server saw it {reached} time(s))"
    );
    assert!(
        second.starts_with("second HTTP/1.1 200"),
        "the victim's guarded connection was cut by another tenant's flood: {second}"
    );
}

/// The same flood against a direct connection (a port the policy does not guard) that
/// outlived its address's validation (TTL 1 s): its packets pass only on its socket's
/// admitted peer, which the flood pushed out of the shared LRU (they were then judged in
/// full, as a new connection's would be, and dropped). Fixed: the admitted peer is the
/// socket's own storage (`HB_SOCK_PEER`).
#[test]
fn a_flood_of_admitted_sockets_does_not_cut_another_tenants_direct_connection() {
    let (second, flood, reached) =
        evicted_victim("review9-evict-direct", 8080, 1, "min_ttl_secs = 1\n");
    println!(
        "figure: after another policy's sandbox {flood}, the victim's kept-alive request past its address's expiry: {second} (server saw it {reached} time(s))"
    );
    assert!(
        second.starts_with("second HTTP/1.1 200"),
        "the victim's established connection was cut by another tenant's flood: {second}"
    );
}

/// The socket storage that holds an established flow's admitted peer is pinned: an agent
/// killed and started again loads new programs that read what the old ones recorded for
/// the sockets still open. A sandbox's kept-alive connection to `allowed.test:8080` (not
/// guarded) whose address's validation (TTL 1 s) has expired by the time the new agent
/// runs (a new connect to it is refused) must still carry its next request. Without the
/// pin the new programs would find no record and drop the flow's packets.
#[test]
fn an_established_connection_keeps_its_admitted_peer_across_an_agent_restart() {
    let (second, between, reached) = kept_alive_victim(
        "review9-restart-direct",
        8080,
        1,
        "min_ttl_secs = 1\n",
        |env| {
            env.kill_agent();
            env.start_agent();
            // The address's validation has run out: a new connection to it is refused.
            let mut last = String::new();
            for _ in 0..60 {
                last = hb_tests::sandbox_probe(env, "victim", "tcp", SHARED, 8080);
                if last == "EPERM" {
                    break;
                }
                thread::sleep(Duration::from_millis(250));
            }
            assert_eq!(last, "EPERM", "a new connect after the address expired");
            "was killed and started again and a new connect was refused".to_owned()
        },
    );
    println!(
        "figure: after the agent {between}, the victim's kept-alive request: {second} (server saw it {reached} time(s))"
    );
    assert!(
        second.starts_with("second HTTP/1.1 200"),
        "the established connection was cut by an agent restart: {second}"
    );
    assert_eq!(reached, 1, "the second request reached the server once");
}

/// A victim sandbox (policy `victim`) with a kept-alive HTTP connection to
/// `allowed.test:port` makes one request; a sandbox of policy `attacker` floods the
/// admitted-peer map; the victim makes a second request on the same connection. What the
/// victim printed for it, what the attacker printed, and how often the server saw it.
/// `ttl`: of `allowed.test`'s answer (with `dns_extra` in `[dns]`, e.g. a lower
/// `min_ttl_secs`).
fn evicted_victim(name: &str, port: u16, ttl: u32, dns_extra: &str) -> (String, String, usize) {
    kept_alive_victim(name, port, ttl, dns_extra, |env| {
        attack_as(
            env,
            "attacker",
            &format!(
                r#"{PRELUDE}
A = socket.getaddrinfo("allowed.test", 9, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]
n = 0
for i in range(200000):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"", (A, 9)); n += 1
    except OSError:
        # Its own validation expired (a short TTL): resolve again.
        socket.getaddrinfo("allowed.test", 9, socket.AF_INET, socket.SOCK_DGRAM)
    s.close()
print("admitted", n, "sockets", flush=True)
"#
            ),
        )
    })
}

/// A victim sandbox (policy `victim`; a policy `attacker` allows the same name) with a
/// kept-alive HTTP connection to `allowed.test:port` makes one request; `between` runs;
/// the victim makes a second request on the same connection. What the victim printed for
/// it, what `between` returned, and how often the server saw the second request.
/// `ttl`: of `allowed.test`'s answer (with `dns_extra` in `[dns]`, e.g. a lower
/// `min_ttl_secs`).
fn kept_alive_victim(
    name: &str,
    port: u16,
    ttl: u32,
    dns_extra: &str,
    between: impl FnOnce(&mut TestEnv) -> String,
) -> (String, String, usize) {
    use std::{
        io::{BufRead as _, BufReader, Write as _},
        process::Stdio,
    };
    let _dns = names_on_lo(
        &[SHARED, "192.0.2.53"],
        DNS_PORT,
        &[("allowed.test", &[SHARED])],
        ttl,
    );
    let dir = std::env::temp_dir().join(format!("hb-{name}-{}", hb_tests::random_suffix()));
    fs::create_dir_all(&dir).expect("dir");
    let server = hb_tests::upstream::RecordingServer::start(&dir, SHARED, port, None);
    let config = format!(
        r#"{resolver}
[[policy]]
name = "victim"
allow_domains = ["allowed.test"]

[[policy]]
name = "attacker"
allow_domains = ["allowed.test"]
"#,
        resolver = resolver_config(DNS_PORT, true, dns_extra, &["203.0.113.0/24"]),
    );
    let mut env = started_agent(name, &config);
    let script = PY_KEEPALIVE.replace("PORT", &port.to_string());
    let mut victim = nameserver_sandbox(&env, "victim", 3, &[python(), "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("victim");
    let mut stdin = victim.stdin.take().expect("stdin");
    let mut out = BufReader::new(victim.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("victim output");
    assert!(
        first.starts_with("first HTTP/1.1 200"),
        "the victim's first request: {first}"
    );
    let between = between(&mut env);
    stdin.write_all(b"go\n").expect("victim stdin");
    let mut second = String::new();
    out.read_line(&mut second).expect("victim output");
    let _ = victim.kill();
    let _ = victim.wait();
    let reached = server
        .requests()
        .iter()
        .filter(|r| r.to_string().contains("/r2"))
        .count();
    let _ = fs::remove_dir_all(&dir);
    (second.trim().to_owned(), between.trim().to_owned(), reached)
}
