//! Kernel DNS redirection: sandbox DNS to any nameserver lands on the resolver port of
//! the sandbox's policy, and replies look as if the named nameserver sent them, so
//! unmodified clients (glibc getent, curl, python) resolve. A real DNS server (dnsmasq)
//! stands at the resolver's address here; hb's own resolver replaces it in a later step.

use std::{
    fs,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use hb_tests::{TcpProbe, TestEnv, UdpProbe, private_netns, python};

const CONFIG: &str = r#"
[dns]
listen = "127.0.0.1:5300"
redirect = true

[egress]
exception_cidrs = ["203.0.113.0/24", "2001:db8::/32"]

[[policy]]
name = "web"
allow_cidrs = ["203.0.113.10", "2001:db8::10/128"]
"#;

/// A dnsmasq that answers allowed.test, killed on drop.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(port: u16) -> Self {
        let child = Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--listen-address=::1",
                "--no-resolv",
                "--no-hosts",
                "--user=root",
                "--pid-file=",
                "--address=/allowed.test/203.0.113.10",
                "--address=/allowed.test/2001:db8::10",
            ])
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (cargo xtask setup installs dnsmasq-base)");
        thread::sleep(Duration::from_millis(300));
        Self(child)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Queries allowed.test from the sandbox over UDP (unconnected and connected) and TCP,
/// all aimed at a documentation address, and prints what the socket API reports.
const PY_DNS: &str = r#"
import socket, struct
def q(name):
    h = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    return h + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
ns = ("192.0.2.53", 53)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3)
u.sendto(q("allowed.test"), ns)
data, src = u.recvfrom(512)
print("udp", src[0], src[1], socket.inet_ntoa(data[-4:]))
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(3); c.connect(ns)
print("peer", *c.getpeername())
t = socket.create_connection(ns, timeout=3)
m = q("allowed.test"); t.sendall(struct.pack("!H", len(m)) + m)
n = struct.unpack("!H", t.recv(2))[0]; d = b""
while len(d) < n: d += t.recv(n - len(d))
print("tcp", *t.getpeername(), socket.inet_ntoa(d[-4:]))
"#;

/// Runs `cmd` in the sandbox with /etc/resolv.conf naming a documentation nameserver
/// (a private mount namespace, so the host's file is untouched).
fn in_sandbox_with_resolv(env: &TestEnv, cmd: &str) -> std::process::Output {
    let rc = env.state_dir.join("resolv.conf");
    fs::write(&rc, "nameserver 192.0.2.53\noptions attempts:1 timeout:2\n").expect("resolv.conf");
    let script = format!("mount --bind {} /etc/resolv.conf && {cmd}", rc.display());
    env.sandbox("web", &["unshare", "-m", "sh", "-c", &script])
}

#[test]
fn sandbox_dns_is_redirected_and_clients_resolve() {
    private_netns(&["203.0.113.10", "2001:db8::10"]);
    let mut env = TestEnv::new("dnsredir", CONFIG);
    env.start_agent();
    let port = 5300 + env.policy_id("web") as u16;
    let _dns = Dnsmasq::start(port);
    let web = TcpProbe::bind("203.0.113.10:0");

    let out = in_sandbox_with_resolv(
        &env,
        &format!("{} -c '{}'", python(), PY_DNS.replace('\'', "\"")),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dns probe: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("udp 192.0.2.53 53 203.0.113.10"),
        "unconnected UDP: {text}"
    );
    assert!(
        text.contains("peer 192.0.2.53 53"),
        "getpeername restored: {text}"
    );
    assert!(
        text.contains("tcp 192.0.2.53 53 203.0.113.10"),
        "TCP DNS: {text}"
    );

    let getent = in_sandbox_with_resolv(&env, "getent ahostsv4 allowed.test");
    let text = String::from_utf8_lossy(&getent.stdout);
    assert!(text.contains("203.0.113.10"), "getent ahostsv4: {text}");
    let getent6 = in_sandbox_with_resolv(&env, "getent ahostsv6 allowed.test");
    let text = String::from_utf8_lossy(&getent6.stdout);
    assert!(text.contains("2001:db8::10"), "getent ahostsv6: {text}");

    let url = format!("http://allowed.test:{}/", web.addr.port());
    let curl = in_sandbox_with_resolv(&env, &format!("curl -sS -m 5 {url}"));
    assert_eq!(
        String::from_utf8_lossy(&curl.stdout),
        "hb-test",
        "curl: {}",
        String::from_utf8_lossy(&curl.stderr)
    );
    let req = in_sandbox_with_resolv(
        &env,
        &format!(
            "{} -c \"import requests; print(requests.get('{url}', timeout=5).text)\"",
            python()
        ),
    );
    assert_eq!(
        String::from_utf8_lossy(&req.stdout).trim(),
        "hb-test",
        "requests: {}",
        String::from_utf8_lossy(&req.stderr)
    );
    assert!(env.counter("dns_redirect") >= 5);
}

#[test]
fn without_a_resolver_sandbox_dns_fails_closed() {
    // An address beside loopback, or getaddrinfo's AI_ADDRCONFIG would not even ask.
    private_netns(&["203.0.113.10", "192.0.2.53"]);
    let mut env = TestEnv::new("dnsclosed", CONFIG);
    env.start_agent();
    let named = UdpProbe::bind("192.0.2.53:53");
    // Nothing listens on the policy's resolver port: no answer, and the query never
    // reaches the nameserver it named.
    let out = in_sandbox_with_resolv(&env, "getent ahostsv4 allowed.test");
    assert!(
        !out.status.success(),
        "resolved without a resolver: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(env.counter("dns_redirect") >= 1);
    assert_eq!(named.received(), 0, "the named nameserver got a query");
}
