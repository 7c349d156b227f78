//! Worlds several attack reviews set up alike, each in the test's own network namespace:
//! - [`TrustedNames`]: names served over TLS on one address with a certificate of a CA
//!   made for the test, dnsmasq answering them, and [`TrustedNames::agent`], a broker
//!   agent trusting that CA;
//! - [`ReflectingUpstream`]: those names served by a Python upstream that reflects what
//!   it got;
//! - [`PythonApi`]: those names served by an HTTPS API whose handler the test writes in
//!   Python, and [`OverrideArrivals`], what reached one that reads method overrides;
//! - the shared address world's parts: [`names_on_lo`] (addresses on `lo`, dnsmasq
//!   answering the test names), [`resolver_config`] (hb's resolver asking that
//!   dnsmasq), [`started_agent`], [`RecordingPython`] (servers that log each arrival as a
//!   JSON line), [`attack_as`] (a Python attack run as uid 65534 in a sandbox) and
//!   [`nameserver_sandbox`] (such a sandbox to spawn, one that runs on beside the test);
//! - [`recording_upstream`]: a DNS upstream that writes down every query it gets, and
//!   [`dns_server`]: one over UDP and TCP that answers as the test's Python says;
//! - config pieces of the broker worlds: [`bearer_integration`] (one integration table),
//!   [`two_tenants`] (the attacker's `p` and another tenant's `v` on one API, policies
//!   `web` and `other`) and [`svc_broker_config`] (a broker open to every sandbox with
//!   integration `svc`, policies left to the test).

use std::{
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    PythonServer, TestEnv, private_netns, python, stdout, tls_broker_config,
    upstream::{Dnsmasq, Leaf, PY_SERVE_HTTPS, PY_TLS_HANDLER, TestCa},
};

/// The address a [`ReflectingUpstream`] serves on (port 443).
pub const REFLECTOR_ADDR: &str = "203.0.113.10";

/// Every line of the file `log`, each a JSON value.
pub fn json_lines(log: &Path) -> Vec<Value> {
    fs::read_to_string(log)
        .expect("log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Names a test upstream serves over TLS: the test's namespace with [`REFLECTOR_ADDR`] on
/// `lo`; a CA made for the test and a certificate it issued for the names (`leaf`); dnsmasq
/// answering the names with that address. Its folder is removed on drop.
pub struct TrustedNames {
    pub dir: PathBuf,
    pub ca: TestCa,
    pub leaf: Leaf,
    dns_port: u16,
    _dns: Dnsmasq,
}

impl TrustedNames {
    /// The world in folder `hb-{dir_name}-{pid}` of the temp dir, dnsmasq on
    /// 127.0.0.1:`dns_port` answering `names`; the certificate's files are labelled
    /// `label`.
    pub fn start(dir_name: &str, dns_port: u16, label: &str, names: &[&str]) -> Self {
        crate::require_root();
        private_netns(&[REFLECTOR_ADDR]);
        // The pid and a random part: two worlds of one name in one test process (plain
        // `cargo test`) get folders of their own.
        let dir = std::env::temp_dir().join(format!(
            "hb-{dir_name}-{}-{}",
            std::process::id(),
            crate::random_suffix()
        ));
        let ca = TestCa::new(&dir, "trusted");
        let leaf = ca.issue(label, names);
        let answers: Vec<(&str, &[&str])> =
            names.iter().map(|n| (*n, &[REFLECTOR_ADDR][..])).collect();
        let dns = Dnsmasq::start("127.0.0.1", dns_port, &answers, &[], 60);
        Self {
            dir,
            ca,
            leaf,
            dns_port,
            _dns: dns,
        }
    }

    /// A broker agent of this world, started: [`tls_broker_config`] (the test CA trusted,
    /// lookups sent to the world's dnsmasq, `broker_extra` lines in `[broker]`) and then
    /// `body` (the integrations and policies); the vault holds `credentials`
    /// (integration, account, secret).
    pub fn agent(
        &self,
        name: &str,
        broker_extra: &str,
        body: &str,
        credentials: &[(&str, &str, &str)],
    ) -> TestEnv {
        let config = format!(
            "\n{}{body}",
            tls_broker_config(&self.ca.cert, self.dns_port, broker_extra)
        );
        let mut env = TestEnv::new(name, &config);
        env.init_vault(credentials);
        env.start_agent();
        env
    }
}

impl Drop for TrustedNames {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A reflecting upstream world: [`TrustedNames`] and the Python `reflector` (an
/// `http.server` handler class `H`, which may derive from [`PY_TLS_HANDLER`]'s
/// `TlsHandler`, served over TLS by [`PY_SERVE_HTTPS`]) on
/// [`REFLECTOR_ADDR`]:443 with the names' certificate. The reflector is given `addr, log,
/// cert, key` and then the extra arguments in `sys.argv`; `log` is an empty file it may
/// write JSON lines to.
pub struct ReflectingUpstream {
    _server: PythonServer,
    pub log: PathBuf,
    pub names: TrustedNames,
}

impl ReflectingUpstream {
    /// The world in folder `hb-{dir_name}-{pid}` of the temp dir, dnsmasq on
    /// 127.0.0.1:`dns_port` answering `names`; `args`: the reflector's extra arguments.
    pub fn start(
        dir_name: &str,
        dns_port: u16,
        names: &[&str],
        reflector: &str,
        args: &[&str],
    ) -> Self {
        let names = TrustedNames::start(dir_name, dns_port, "echo", names);
        // PythonServer takes one script: the arguments travel in it.
        let extra: String = args.iter().map(|a| format!(", {a:?}")).collect();
        let (server, log) = serve_python(
            &names,
            "reflect.jsonl",
            |[addr, log, cert, key]| {
                format!("import sys\nsys.argv = ['x', {addr}, {log}, {cert}, {key}{extra}]\n")
            },
            reflector,
        );
        Self {
            _server: server,
            log,
            names,
        }
    }

    /// [`TrustedNames::agent`] of this world.
    pub fn agent(
        &self,
        name: &str,
        broker_extra: &str,
        body: &str,
        credentials: &[(&str, &str, &str)],
    ) -> TestEnv {
        self.names.agent(name, broker_extra, body, credentials)
    }

    /// Every request the reflector logged, one JSON value each.
    pub fn records(&self) -> Vec<Value> {
        json_lines(&self.log)
    }
}

/// An HTTPS API whose handler a test writes in Python: [`TrustedNames`] (certificate files
/// labelled `provider`) and the `handler` served over TLS by [`PY_SERVE_HTTPS`] on
/// [`REFLECTOR_ADDR`]:443 with the names' certificate. `handler` is Python defining `H`
/// (which may derive from [`PY_TLS_HANDLER`]'s `TlsHandler`), with `addr`, `cert`, `key`
/// and `log` (an empty file it may write a JSON line to per request) in scope and
/// `http.server`, `json`, `ssl`, `sys`, `threading`, `time` and `urllib.parse` imported;
/// a caller puts the constants its handler reads before it.
pub struct PythonApi {
    _server: PythonServer,
    pub log: PathBuf,
    pub names: TrustedNames,
}

impl PythonApi {
    /// The world in folder `hb-{dir_name}-{pid}` of the temp dir, dnsmasq on
    /// 127.0.0.1:`dns_port` answering `names`.
    pub fn start(dir_name: &str, dns_port: u16, names: &[&str], handler: &str) -> Self {
        let names = TrustedNames::start(dir_name, dns_port, "provider", names);
        let (server, log) = serve_python(
            &names,
            "arrivals.jsonl",
            |[addr, log, cert, key]| {
                format!(
                    "import http.server, json, ssl, sys, threading, time, urllib.parse\n\
                     addr, cert, key, log = [{addr}, {cert}, {key}, {log}]\n"
                )
            },
            handler,
        );
        Self {
            _server: server,
            log,
            names,
        }
    }
}

/// `handler` (Python defining `H`) served over TLS by [`PY_SERVE_HTTPS`] on
/// [`REFLECTOR_ADDR`]:443 with `names`' certificate, after [`PY_TLS_HANDLER`] and after
/// `head`'s Python, which `head` writes given the address, the log and the certificate
/// and key files, each a Python string literal. The log is `log_file` in the names'
/// folder, empty; returned with the server.
fn serve_python(
    names: &TrustedNames,
    log_file: &str,
    head: impl FnOnce([String; 4]) -> String,
    handler: &str,
) -> (PythonServer, PathBuf) {
    let log = names.dir.join(log_file);
    fs::write(&log, "").expect("log");
    let head = head(
        [
            REFLECTOR_ADDR.to_owned(),
            log.display().to_string(),
            names.leaf.cert.display().to_string(),
            names.leaf.key.display().to_string(),
        ]
        .map(|a| format!("{a:?}")),
    );
    let server = PythonServer::start(&format!("{head}{PY_TLS_HANDLER}{handler}{PY_SERVE_HTTPS}"));
    (server, log)
}

/// What reached an upstream that reads a request's method as a framework's method
/// override does (a [`PythonApi`] handler logging `method` as sent, `acted` as the
/// framework reads it, `path` and `auth`, the `Authorization` header).
pub struct OverrideArrivals {
    /// Every request logged.
    pub all: Vec<Value>,
    /// Those that carried the credential.
    pub credentialed: Vec<Value>,
    /// The paths of the credentialed ones the upstream acted on as another method.
    pub overridden: Vec<String>,
}

impl OverrideArrivals {
    /// The requests `api` logged, `secret` (the credential) telling the credentialed
    /// ones; prints the figure line: `what` was sent, `got` is what the caller got.
    pub fn read(api: &PythonApi, secret: &str, what: &str, got: &Value) -> Self {
        let all = json_lines(&api.log);
        let credentialed: Vec<Value> = all
            .iter()
            .filter(|r| r["auth"].as_str().is_some_and(|a| a.contains(secret)))
            .cloned()
            .collect();
        let overridden: Vec<String> = credentialed
            .iter()
            .filter(|r| r["acted"] != r["method"])
            .map(|r| r["path"].as_str().unwrap_or_default().to_owned())
            .collect();
        println!(
            "figure: {what}; {} credentialed arrivals, {} acted as DELETE: {overridden:?}; {got}",
            credentialed.len(),
            overridden.len()
        );
        Self {
            all,
            credentialed,
            overridden,
        }
    }

    /// Whether a credentialed request to `path` arrived and was acted on as a POST.
    pub fn credentialed_post(&self, path: &str) -> bool {
        self.credentialed
            .iter()
            .any(|r| r["path"] == path && r["acted"] == "POST")
    }

    /// Asserts that no credentialed request was acted on as another method than sent.
    pub fn assert_none_overridden(&self) {
        assert!(
            self.overridden.is_empty(),
            "a credentialed POST acted as a DELETE the integration does not allow: {:?}",
            self.overridden
        );
    }
}

/// The test's namespace with `addrs` on `lo` and dnsmasq on 127.0.0.1:`dns_port` answering
/// `names` (each with its addresses) with TTL `ttl`.
pub fn names_on_lo(addrs: &[&str], dns_port: u16, names: &[(&str, &[&str])], ttl: u32) -> Dnsmasq {
    crate::require_root();
    private_netns(addrs);
    Dnsmasq::start("127.0.0.1", dns_port, names, &[], ttl)
}

/// The `[dns]` and `[egress]` tables of a world whose names dnsmasq answers: hb's
/// resolver on 127.0.0.1:5300 asking dnsmasq on `dns_port`, the kernel's redirect of a
/// sandbox's DNS to it on when `redirect`, `dns_extra` (whole lines) in `[dns]`;
/// `exception_cidrs` (the test's addresses) reachable.
pub fn resolver_config(
    dns_port: u16,
    redirect: bool,
    dns_extra: &str,
    exception_cidrs: &[&str],
) -> String {
    format!(
        "\n[dns]\nlisten = \"127.0.0.1:5300\"\n{redirect}upstreams = [\"127.0.0.1:{dns_port}\"]\n{dns_extra}\n[egress]\nexception_cidrs = {exception_cidrs:?}\n",
        redirect = if redirect { "redirect = true\n" } else { "" },
    )
}

/// Adds `addr` (IPv4) to the test namespace's `lo`, as the host gaining an address (an
/// address added to an interface, a failover address moved here), and waits until the
/// agent has revoked what it validated (or, on an agent that does not, a bounded number
/// of looks). Asserts that the agent logged the change.
pub fn gain_address(env: &mut TestEnv, addr: &str) {
    let changes = env
        .agent()
        .log_text()
        .matches("local addresses changed")
        .count();
    let added = Command::new("ip")
        .args(["addr", "add", &format!("{addr}/32"), "dev", "lo"])
        .status()
        .expect("ip addr add");
    assert!(added.success(), "ip addr add {addr}");
    for _ in 0..100 {
        if env
            .agent()
            .log_text()
            .contains("addresses the host now holds revoked")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        env.agent()
            .log_text()
            .matches("local addresses changed")
            .count()
            > changes,
        "the agent never logged the address change"
    );
}

/// An agent with `config` (see [`TestEnv::new`]), started.
pub fn started_agent(name: &str, config: &str) -> TestEnv {
    let mut env = TestEnv::new(name, config);
    env.start_agent();
    env
}

/// Python a sandbox runs before a plain-HTTP attack on the shared address of the guard's
/// worlds (203.0.113.10 serving `allowed.test`, `write.test` and `evil.test` by `Host`):
/// resolves the two allowed names through hb (which validates the address for them,
/// `SHARED`); `exchange(data)` sends `data` on one connection to port 80, waits for the
/// answers, half-closes and returns every status line that came back (`["closed"]` for
/// none, the exception's name if the connection failed).
pub const SHARED_HTTP_PRELUDE: &str = r#"
import socket, ssl, time
def resolve(name):
    return socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
SHARED = resolve("write.test")
assert resolve("allowed.test") == SHARED == "203.0.113.10", SHARED
def recv_all(s):
    out = b""
    s.settimeout(3)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except OSError:
        pass
    return out
def statuses(got):
    return [l.decode("latin-1") for l in got.split(b"\r\n") if l.startswith(b"HTTP/")]
def exchange(data):
    s = socket.create_connection((SHARED, 80), timeout=5)
    try:
        s.sendall(data)
        time.sleep(0.5)
        s.shutdown(socket.SHUT_WR)
        return statuses(recv_all(s)) or ["closed"]
    except OSError as e:
        return [type(e).__name__]
    finally:
        s.close()
"#;

/// The shared servers' records of requests routed to `evil.test`'s virtual host.
pub fn reached_evil(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| r["vhost"] == "evil.test")
        .collect()
}

/// The shared servers' records of write methods (any but GET and HEAD) that reached a
/// virtual host other than `write.test`, the one host the worlds' policy writes to.
pub fn writes_elsewhere(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| r["method"] != "GET" && r["method"] != "HEAD" && r["vhost"] != "write.test")
        .collect()
}

/// Runs `script` (Python) as uid 65534 in a sandbox of `policy`, its DNS through hb's
/// resolver; what it printed. The script travels hex-encoded (no quoting to get wrong).
pub fn attack_as(env: &TestEnv, policy: &str, script: &str) -> String {
    let hex: String = script.bytes().map(|b| format!("{b:02x}")).collect();
    let cmd = format!("{} -c \"exec(bytes.fromhex('{hex}'))\"", python());
    let out = env.sandbox_with_nameserver_as(policy, &["--user", "65534"], &cmd);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "attack script failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `args` as uid 65534 in a sandbox of `policy`, its DNS through hb's resolver: its
/// /etc/resolv.conf (a file in the state folder, bound read-only) names 192.0.2.53, one
/// try of `dns_timeout` seconds. The caller sets its stdio and spawns it.
pub fn nameserver_sandbox(env: &TestEnv, policy: &str, dns_timeout: u32, args: &[&str]) -> Command {
    let rc = env.state_dir.join("resolv.conf");
    fs::write(
        &rc,
        format!("nameserver 192.0.2.53\noptions attempts:1 timeout:{dns_timeout}\n"),
    )
    .expect("resolv.conf");
    let rc = rc.to_str().expect("UTF-8 state dir");
    crate::sandboxed::nobody_command(env, policy, &["--ro-bind", rc, "/etc/resolv.conf"], args)
}

/// Python servers that log every arrival as one JSON line in `log` and print `ready`
/// once they listen; killed on drop.
pub struct RecordingPython {
    child: Child,
    pub log: PathBuf,
}

impl RecordingPython {
    /// Runs `script` given `addr`, `log` and `args` in `sys.argv` (`python -c script addr
    /// log args…`) and waits for its `ready`; `log` (emptied here) is where it writes.
    pub fn start<A: AsRef<OsStr>>(script: &str, addr: &str, log: &Path, args: &[A]) -> Self {
        fs::write(log, "").expect("log");
        let child = crate::spawn_ready(
            Command::new(python())
                .args(["-c", script, addr])
                .arg(log)
                .args(args),
            "the recording servers",
        );
        Self {
            child,
            log: log.to_owned(),
        }
    }

    /// Every record so far.
    pub fn records(&self) -> Vec<Value> {
        json_lines(&self.log)
    }

    /// Every record, once `pred` holds for one (2 s at most): a request that passed may
    /// still be on its way when the client has exited.
    pub fn settle(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let r = self.records();
            if r.iter().any(&pred) || Instant::now() >= deadline {
                return r;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RecordingPython {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DNS server on 127.0.0.1:`port` that appends every query it receives (hex,
/// one a line) to `log` and answers A queries with 203.0.113.10. Killed on drop.
pub fn recording_upstream(port: u16, log: &Path) -> PythonServer {
    let script = format!(
        r#"
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", {port}))
while True:
    q, a = s.recvfrom(512)
    with open({log:?}, "a") as f: f.write(q.hex() + "\n")
    end = 12
    while q[end] != 0: end += q[end] + 1
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("203.0.113.10")
    s.sendto(q[:2] + b"\x81\x80" + struct.pack("!HHHH", 1, 1, 0, 0) + q[12:end + 5] + rr, a)
"#,
        log = log.display().to_string()
    );
    PythonServer::start(&script)
}

/// A DNS server (Python) on 127.0.0.1:`port`, UDP and TCP, killed on drop. `answer` is
/// Python defining `answer(q, tcp)`: the reply's bytes for the query's bytes `q`, which
/// came over TCP when `tcp` (`socket`, `struct` and `threading` are imported; the
/// server's own names are local to its functions, so `answer`'s globals stay its own). A
/// query whose `answer` raises gets no reply.
pub fn dns_server(port: u16, answer: &str) -> PythonServer {
    PythonServer::start(&format!(
        r#"
import socket, struct, threading
{answer}
def serve_tcp():
    t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("127.0.0.1", {port})); t.listen(64)
    while True:
        c, _ = t.accept()
        try:
            ln = struct.unpack("!H", c.recv(2, socket.MSG_WAITALL))[0]
            r = answer(c.recv(ln, socket.MSG_WAITALL), True)
            c.sendall(struct.pack("!H", len(r)) + r)
        except Exception:
            pass
        c.close()
def serve_udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    s.bind(("127.0.0.1", {port}))
    while True:
        q, peer = s.recvfrom(4096)
        try:
            s.sendto(answer(q, False), peer)
        except Exception:
            pass
threading.Thread(target=serve_tcp, daemon=True).start()
serve_udp()
"#
    ))
}

/// Integration `name` (bearer) for `methods` on `host`, as a TOML table.
pub fn bearer_integration(name: &str, host: &str, methods: &[&str]) -> String {
    format!(
        "\n[[integration]]\nname = {name:?}\nauth = \"bearer\"\nhosts = [{host:?}]\nmethods = {methods:?}\n"
    )
}

/// The two-tenant world's integrations and policies: `p` (the attacker's, bearer,
/// `p_methods`) and `v` (another tenant's, bearer, GET), both on `api`; policy `web`
/// binds `p` (and with `web_reaches_api` also reaches `api` without the broker),
/// policy `other` binds `v`.
pub fn two_tenants(api: &str, p_methods: &[&str], web_reaches_api: bool) -> String {
    let reach = if web_reaches_api {
        format!("allow_domains = [{api:?}]\n")
    } else {
        String::new()
    };
    format!(
        "{}{}\n[[policy]]\nname = \"web\"\nintegrations = [\"p\"]\n{reach}\n[[policy]]\nname = \"other\"\nintegrations = [\"v\"]\n",
        bearer_integration("p", api, p_methods),
        bearer_integration("v", api, &["GET"]),
    )
}

/// Two tenants of one provider at `api` ([`two_tenants`], GET only): `web`'s
/// integration `p` holds `own` (account, key), `other`'s integration `v` holds
/// `victims[i]` as account `a{i}` and has taken a handle for each (the broker holds them
/// decrypted). The provider runs `handler` (Python defining `H`, see [`PythonApi`]) with
/// `victims` in scope. What the scrubber's echo tests attack.
pub struct EchoTenants {
    pub env: TestEnv,
    _api: PythonApi,
}

impl EchoTenants {
    pub fn start(
        name: &str,
        dns_port: u16,
        api: &str,
        handler: &str,
        own: &[(&str, &str)],
        victims: &[String],
    ) -> Self {
        let server = PythonApi::start(
            name,
            dns_port,
            &[api],
            &format!("victims = {victims:?}\n{handler}"),
        );
        let accounts: Vec<String> = (0..victims.len()).map(|i| format!("a{i}")).collect();
        let mut credentials: Vec<(&str, &str, &str)> =
            own.iter().map(|&(a, k)| ("p", a, k)).collect();
        credentials.extend(
            accounts
                .iter()
                .zip(victims)
                .map(|(a, k)| ("v", a.as_str(), k.as_str())),
        );
        let env = server
            .names
            .agent(name, "", &two_tenants(api, &["GET"], false), &credentials);
        let taken = crate::sandboxed::nobody_broker_client(
            &env,
            "other",
            &format!(
                "print(json.dumps(all(hb.handle(\"v\", a)[\"handle\"] is not None for a in {accounts:?})))"
            ),
            &[],
        );
        assert_eq!(taken, serde_json::json!(true), "{taken}");
        Self { env, _api: server }
    }
}

/// A broker world's config without its policies: the broker's socket open to every
/// sandbox (`socket_mode = "0666"`) with `broker` (more `[broker]` keys, a line each),
/// hb's resolver on 127.0.0.1:`dns_port`, and integration `svc` (bearer, GET on
/// `api.svc.test`).
pub fn svc_broker_config(broker: &str, dns_port: u16) -> String {
    format!(
        "\n[broker]\nsocket_mode = \"0666\"\n{broker}\n[dns]\nlisten = \"127.0.0.1:{dns_port}\"\n{}",
        bearer_integration("svc", "api.svc.test", &["GET"])
    )
}

/// Two policies that reach nothing, `web` and `other`, with the broker's socket open to
/// every sandbox (`socket_mode = "0666"`) and `broker` (more `[broker]` keys, a line
/// each), hb's resolver on 127.0.0.1:5300.
pub fn two_bare_policies(broker: &str) -> String {
    format!(
        "\n[broker]\nsocket_mode = \"0666\"\n{broker}\n[dns]\nlisten = \"127.0.0.1:5300\"\n\n[[policy]]\nname = \"web\"\nallow_domains = []\n\n[[policy]]\nname = \"other\"\nallow_domains = []\n"
    )
}
