//! A fourth attack review, run as the process inside the sandbox: each test performs one
//! attack from a sandbox (uid 65534, arbitrary Python) against the real agent, real
//! kernel and real upstreams on the test namespace's `lo`, and asserts the secure
//! outcome. A test marked `#[ignore = "open: …"]` is a break found and not yet fixed:
//! it fails against the current agent.
//!
//! Angle: turning the newest defences (the fragment hit's bar) on a tenant that did
//! nothing, and fresh identities from inside a sandbox.

use std::fs;

use hb_tests::{
    TestEnv, private_netns,
    provider::EXEC_ROTATOR,
    sandboxed::{
        broker_client_script, nobody_broker_client, nobody_python, nobody_python_many, unix_secs_in,
    },
    worlds::ReflectingUpstream,
};
use serde_json::Value;

const DNS_PORT: u16 = 5440;

/// A victim tenant's key: a Stripe-shaped secret, `sk_live_` and 24 random characters.
const STRIPE_KEY: &str = "sk_live_Q7mZ2xK9pL4vR8nT3wY6bH1c";
/// A victim tenant's key: an Anthropic-shaped secret, `sk-ant-api03-` and random text.
const ANTHROPIC_KEY: &str = "sk-ant-api03-Xq4Lm8Zr2Tp6Vn0Wk3Jh7Gf5Dc9Sb1Ay";
/// A victim tenant's key: a JWT (HS256), as Supabase, Firebase and many gateways issue.
const JWT_KEY: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoic2VydmljZSIsInN1YiI6InRlbmFudC1iIn0.Vb3kQ9xZ2mL7pR4tN8wY1cH6jF0sD5aG3eK";
/// A victim tenant's key: a GitHub fine-grained token (`github_pat_11` and random text).
const GITHUB_KEY: &str =
    "github_pat_11ABCDEFG0hJkLmNpQrStUv_WxYz0123456789abcdefghijKLMNOPqrstuvwxYZ01234567";
/// The attacker tenant's own key for its own account.
const ATTACKER_KEY: &str = "mallory-0f1e2d3c4b5a69788796a5b4";

/// A shared comment board over HTTPS on 203.0.113.10:443 (`board.test`), as an issue
/// tracker or a ticket system many tenants use with their own keys: `POST /comments`
/// appends the body, `GET /comments` lists every comment as JSON, `GET /verify` answers
/// `{"ok": true}` (the provider's key check).
const BOARD_PY: &str = r#"
import http.server, json, ssl, sys
addr, _log, cert, key = sys.argv[1:5]
comments = []
class H(TlsHandler):
    def answer(self, out):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        comments.append(self.rfile.read(n).decode("utf-8", "replace"))
        self.answer(b'{"ok": true}')
    def do_GET(self):
        if self.path.startswith("/verify"):
            return self.answer(b'{"ok": true}')
        self.answer(json.dumps({"comments": comments}).encode())
"#;

/// A world with the comment board reachable through two integrations on the same host,
/// one per tenant: `board_a` (the attacker's, policy `web`) and `board_b` (the
/// victim's, policy `other`), each with its own account and key.
struct Board {
    env: TestEnv,
    board: ReflectingUpstream,
}

impl Board {
    /// `rotation`: `board_b` rotates through the provider's tool ([`EXEC_ROTATOR`] as an
    /// admin, so it mints whatever the key it replaces; its keys in `keys.json`), with
    /// every detector at its default action.
    fn new(name: &str, victim_key: &str, rotation: bool) -> Self {
        let board = ReflectingUpstream::start(
            &format!("review4-{name}"),
            DNS_PORT,
            &["board.test"],
            BOARD_PY,
            &[],
        );
        let dir = &board.names.dir;
        let keys = dir.join("keys.json");
        fs::write(&keys, serde_json::to_string(&[victim_key]).expect("json")).expect("store");
        let rotator = dir.join("rotator.py");
        fs::write(&rotator, EXEC_ROTATOR).expect("rotator");
        let rotation = if rotation {
            format!(
                "verify_url = \"https://board.test/verify\"\n\n[integration.rotation]\nexec = [\"{}\", \"{}\", \"{}\", \"--admin\"]\n",
                hb_tests::python(),
                rotator.display(),
                keys.display()
            )
        } else {
            String::new()
        };
        let env = board.agent(
            name,
            "",
            &format!(
                r#"
[[integration]]
name = "board_a"
auth = "bearer"
hosts = ["board.test"]
methods = ["GET", "POST"]

[[integration]]
name = "board_b"
auth = "bearer"
hosts = ["board.test"]
methods = ["GET", "POST"]
{rotation}

[[policy]]
name = "web"
integrations = ["board_a"]

[[policy]]
name = "other"
integrations = ["board_b"]
"#
            ),
            &[
                ("board_a", "mallory", ATTACKER_KEY),
                ("board_b", "victim", victim_key),
            ],
        );
        Self { env, board }
    }

    /// Runs `script` (a [`broker_client_script`], with `hb` a broker client and `code(f)`
    /// the status or error code of a call) in a sandbox of `policy` as user 65534; its
    /// JSON output.
    fn in_sandbox(&self, policy: &str, script: &str, args: &[&str]) -> Value {
        nobody_broker_client(&self.env, policy, script, args)
    }

    fn audit_records(&self, kind: &str) -> Vec<Value> {
        self.env
            .audit_records()
            .into_iter()
            .filter(|r| r.to_string().contains(kind))
            .collect()
    }
}

/// The attacker: with its own key (for its own account), posts one comment (`sys.argv[1]`)
/// to the shared board. It knows nothing of the victim's key but its public shape.
const PLANT: &str = r#"
h = hb.handle("board_a", "mallory")["handle"]
body = sys.argv[1]
print(json.dumps({"post": code(lambda: hb.request("POST", "https://board.test/comments", handle=h, body=body))}))
"#;

/// The attacker, knowing nothing of the victim's key but that it is short and hex: posts
/// one comment holding every run of `sys.argv[1]` hex digits (a de Bruijn sequence,
/// 16^n characters).
const PLANT_EVERY_RUN: &str = r#"
h = hb.handle("board_a", "mallory")["handle"]
n, k = int(sys.argv[1]), 16
a, seq = [0] * k * n, []
def db(t, p):
    if t > n:
        if n % p == 0:
            seq.extend(a[1:p + 1])
    else:
        a[t] = a[t - p]
        db(t + 1, p)
        for j in range(a[t - p] + 1, k):
            a[t] = j
            db(t + 1, t)
db(1, 1)
body = "".join("0123456789abcdef"[d] for d in seq + seq[:n - 1])
print(json.dumps({"post": code(lambda: hb.request("POST", "https://board.test/comments", handle=h, body=body)), "bytes": len(body)}))
"#;

/// The victim: reads the board with its own handle, twice, and asks for a new handle.
const READ: &str = r#"
h = hb.handle("board_b", "victim")["handle"]
out = {"read": code(lambda: hb.request("GET", "https://board.test/comments", handle=h))}
out["again"] = code(lambda: hb.request("GET", "https://board.test/comments", handle=h))
try:
    hb.handle("board_b", "victim")
    out["new_handle"] = "ok"
except BrokerError as e:
    out["new_handle"] = e.code
print(json.dumps(out))
"#;

/// The victim (its key `victim_key`) reads a board the attacker wrote `planted` to, and
/// is served as before: no call refused, no `credential_fragment` record.
fn assert_planted_text_bars_no_reader(name: &str, victim_key: &str, planted: &str) {
    let world = Board::new(name, victim_key, false);
    let posted = world.in_sandbox("web", PLANT, &[planted]);
    assert_eq!(
        posted["post"], 200,
        "the attacker's comment was posted: {posted}"
    );
    let victim = world.in_sandbox("other", READ, &[]);
    let hits = world.audit_records("credential_fragment");
    println!(
        "attacker posted {} bytes: {posted} | victim: {victim} | credential_fragment records: {}",
        planted.len(),
        hits.len()
    );
    assert_victim_served(&victim, &hits);
}

fn assert_victim_served(victim: &Value, hits: &[Value]) {
    assert_eq!(
        victim["read"], 200,
        "the victim reading a board the attacker wrote to was refused as a fragment hit"
    );
    assert_eq!(victim["again"], 200, "the victim stayed barred");
    assert_eq!(victim["new_handle"], "ok", "the victim got no new handle");
    assert!(hits.is_empty(), "a fragment hit was charged: {hits:?}");
}

/// 3(a) The attack: the fragment hit bars a caller from an account for an hour when a
/// run of 8 characters of the call's credential is in its answer, and the windows
/// skipped as public are only those wholly inside the key's public prefix (`sk_live_`).
/// A window that straddles the prefix and the first secret character (`k_live_q`) is
/// one of 36 guesses once case is folded. An attacker tenant posts `sk_live_0 …
/// sk_live_z` (359 bytes) to a board both tenants read with their own keys; the victim,
/// which did nothing but read it, gets `credential_fragment`, is barred from its own
/// account (its handles ended, no new ones), and its account's `reflection` signal
/// fires (`rotate_compromised` by default).
#[test]
fn planted_prefix_guesses_do_not_bar_another_tenant_that_reads_them() {
    let planted: Vec<String> = "0123456789abcdefghijklmnopqrstuvwxyz"
        .chars()
        .map(|c| format!("sk_live_{c}"))
        .collect();
    assert_planted_text_bars_no_reader("plant", STRIPE_KEY, &planted.join(" "));
}

/// 3(a) The same with no guess at all: a key whose fixed text runs past the part
/// `scrub::fragments::public_prefix` recognises (`sk-ant-` is letters-and-dash words; `api03-` starts
/// with letters but holds digits, so it ends the prefix) has 8-character windows every
/// key of its kind shares. A comment, a README or an error page that names the format
/// (`sk-ant-api03-…`) bars every tenant that reads it with such a key.
#[test]
fn a_documented_key_format_does_not_bar_a_tenant_that_reads_it() {
    assert_planted_text_bars_no_reader(
        "format",
        ANTHROPIC_KEY,
        "keys look like sk-ant-api03-... (see the docs)",
    );
}

/// 3(a) The same for a JWT credential: every HS256 JWT starts `eyJhbGciOiJIUzI1NiIs`
/// (`{"alg":"HS256",`), and `public_prefix` sees no prefix in it. A whole JWT in an
/// answer is scrubbed as a token before the fragment check (that held, below), but a
/// JWT's header alone, as any JWT tutorial prints it, bars the reader.
#[test]
fn a_jwt_header_in_an_answer_does_not_bar_a_tenant_whose_key_is_a_jwt() {
    assert_planted_text_bars_no_reader(
        "jwthead",
        JWT_KEY,
        "a JWT's first part, eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9, decodes to its header",
    );
}

/// 3(a) What held: another whole JWT in an answer (the scrubber's token family takes it
/// before the fragment check) does not bar a reader whose credential is a JWT.
#[test]
fn another_whole_jwt_in_an_answer_does_not_bar_a_tenant_whose_key_is_a_jwt() {
    assert_planted_text_bars_no_reader(
        "jwt",
        JWT_KEY,
        "example: Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.c2lnbmF0dXJl",
    );
}

/// 3(a) The same for GitHub's fine-grained tokens, which all start `github_pat_11`:
/// the prefix stops at the digits, so `ub_pat_1` is a window every such token shares.
#[test]
fn a_documented_github_token_format_does_not_bar_a_tenant_that_reads_it() {
    assert_planted_text_bars_no_reader(
        "ghpat",
        GITHUB_KEY,
        "fine-grained tokens start with github_pat_11...",
    );
}

/// 3(a) What held: a comment that holds the victim's public prefix alone
/// (`sk_live_`, as dashboards show it) is no fragment hit.
#[test]
fn a_bare_public_prefix_does_not_bar_a_tenant_that_reads_it() {
    assert_planted_text_bars_no_reader(
        "prefix",
        STRIPE_KEY,
        "keys look like sk_live_... and sk_live_…4242",
    );
}

/// 3(a) The consequence past the bar: with a rotation configured (every detector at its
/// default, so `on_reflection = "rotate_compromised"`), the attacker's planted format
/// text makes the agent rotate the victim's account as compromised, revoking the
/// victim's working key at the provider. The attacker holds no handle to that account
/// and the victim did nothing but read.
#[test]
fn planted_format_text_does_not_revoke_another_tenants_key() {
    let world = Board::new("revoke", ANTHROPIC_KEY, true);
    let keys = world.board.names.dir.join("keys.json");
    let posted = world.in_sandbox(
        "web",
        PLANT,
        &["keys look like sk-ant-api03-... (see the docs)"],
    );
    assert_eq!(
        posted["post"], 200,
        "the attacker's comment was posted: {posted}"
    );
    let victim = world.in_sandbox("other", READ, &[]);
    // The rotation runs in the background: give it time to reach the provider.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut live: Vec<String> = Vec::new();
    while std::time::Instant::now() < deadline {
        live = serde_json::from_str(&fs::read_to_string(&keys).unwrap_or_default())
            .unwrap_or_default();
        if !live.iter().any(|k| k == ANTHROPIC_KEY) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let rotations = world.audit_records("rotate_compromised");
    println!(
        "victim: {victim} | victim's key still live at the provider: {} | keys at the \
         provider: {} | rotate_compromised records: {}",
        live.iter().any(|k| k == ANTHROPIC_KEY),
        live.len(),
        rotations.len()
    );
    assert!(
        live.iter().any(|k| k == ANTHROPIC_KEY),
        "the victim's key was revoked at its provider because of text the attacker planted"
    );
}

/// Python for the attacker: every TCP peer address in `/proc/net/tcp`, decoded, with
/// the socket's uid (`ip:port uid`), one per line.
const PY_PEERS: &str = r#"
import socket, struct
for line in open("/proc/net/tcp").read().splitlines()[1:]:
    f = line.split()
    ip, port = f[2].split(":")
    if ip == "00000000":
        continue
    print("%s:%d uid %s" % (socket.inet_ntoa(struct.pack("<I", int(ip, 16))), int(port, 16), f[7]))
"#;

/// Angle 2, the cell: it shares the node's network namespace (the hooks see it), and the
/// sandbox's fresh `/proc` still shows that namespace's `net/` files. The seccomp rules
/// refuse `NETLINK_SOCK_DIAG` because socket listings "expose the host", but
/// `/proc/net/tcp` is the same listing: a sandbox of one tenant reads every TCP
/// connection on the node — another tenant's sandbox's peers (its private API address
/// and port, never in the attacker's policy), the broker's upstream connections, the
/// host's — with each socket's uid, and can watch them over time.
#[test]
#[ignore = "open: /proc/net/tcp in a sandbox lists every connection of the node, another tenant's peers included"]
fn a_sandbox_cannot_list_another_tenants_connections() {
    use std::{io::Read as _, net::TcpListener, time::Duration};

    hb_tests::require_root();
    private_netns(&["203.0.113.20"]);
    let listener = TcpListener::bind("203.0.113.20:8443").expect("victim's upstream");
    let mut env = TestEnv::new(
        "peers",
        r#"
[egress]
exception_cidrs = ["203.0.113.0/24"]

[[policy]]
name = "web"
allow_cidrs = ["203.0.113.99/32"]

[[policy]]
name = "other"
allow_cidrs = ["203.0.113.20/32"]
"#,
    );
    env.start_agent();
    // The victim tenant holds a connection to its upstream.
    let mut victim = env.sandbox_spawn(
        "other",
        &[
            hb_tests::python(),
            "-c",
            "import socket, time\ns = socket.create_connection(('203.0.113.20', 8443))\ntime.sleep(30)",
        ],
    );
    listener.set_nonblocking(false).expect("blocking listener");
    let (mut held, from) = listener.accept().expect("the victim connected");
    let _ = held.set_read_timeout(Some(Duration::from_millis(10)));
    let _ = held.read(&mut [0u8; 1]);
    let out = nobody_python(&env, "web", PY_PEERS, &[]);
    let _ = victim.kill();
    let _ = victim.wait();
    let seen = hb_tests::stdout(&out);
    assert!(
        out.status.success(),
        "attacker: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<&str> = seen
        .lines()
        .filter(|l| l.starts_with("203.0.113.20:8443"))
        .collect();
    println!(
        "victim connected from {from}; the attacker's /proc/net/tcp lists {} peers; the \
         victim's: {theirs:?}",
        seen.lines().count()
    );
    assert!(
        theirs.is_empty(),
        "a sandbox of policy web read another tenant's connection to 203.0.113.20:8443"
    );
}

/// 3(a) Without any knowledge of the key but its length and alphabet: for a credential
/// shorter than 16 characters the shortest run is half its length (`min_run`), chosen
/// when a run was only redacted ("a false positive only redacts 8 bytes"); a run now
/// bars the caller and rotates the account as compromised. A 10-character hex key has
/// runs of 5, and every 5-digit hex string fits in one 1 MiB comment (a de Bruijn
/// sequence), within `max_body_bytes` and `max_response_bytes`: whoever reads it with
/// such a key is barred.
#[test]
fn every_short_run_planted_does_not_bar_a_tenant_with_a_short_key() {
    let world = Board::new("shortkey", "9f3a7c21be", false);
    let posted = world.in_sandbox("web", PLANT_EVERY_RUN, &["5"]);
    assert_eq!(
        posted["post"], 200,
        "the attacker's comment was posted: {posted}"
    );
    let victim = world.in_sandbox("other", READ, &[]);
    let hits = world.audit_records("credential_fragment");
    println!(
        "attacker: {posted} | victim: {victim} | credential_fragment records: {}",
        hits.len()
    );
    assert_victim_served(&victim, &hits);
}

/// Python for the attacker: every way it has to a fresh identity — a child cgroup of
/// its own, a write of its pid into one, a new user or cgroup namespace by `unshare`
/// or by raw `clone` — then its own and a forked child's identity as the broker sees
/// it. JSON.
const PY_FRESH_IDENTITY: &str = r#"
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
out = {}
def attempt(name, f):
    try:
        f(); out[name] = "OK"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
def child_cgroup():
    os.mkdir("/sys/fs/cgroup/fresh")
    with open("/sys/fs/cgroup/fresh/cgroup.procs", "w") as f:
        f.write(str(os.getpid()))
attempt("mkdir_child_cgroup", child_cgroup)
def own_procs():
    with open("/sys/fs/cgroup/cgroup.procs", "w") as f:
        f.write(str(os.getpid()))
attempt("write_cgroup_procs", own_procs)
CLONE_NEWUSER, CLONE_NEWCGROUP, SIGCHLD = 0x10000000, 0x02000000, 17
def unshare():
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWCGROUP) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
attempt("unshare_user_cgroup", unshare)
def raw_clone():
    pid = libc.syscall(56, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        os._exit(0)
    if pid < 0:
        raise OSError(ctypes.get_errno(), "clone")
    os.waitpid(pid, 0)
attempt("clone_newuser", raw_clone)
me = hb.whoami()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    os.write(w, json.dumps(Client(SOCK).whoami()).encode())
    os._exit(0)
os.close(w)
child = json.loads(os.read(r, 65536))
os.waitpid(pid, 0)
out["parent"] = (me.get("sandbox") or {}).get("cgroup_id")
out["child"] = (child.get("sandbox") or {}).get("cgroup_id")
print(json.dumps(out))
"#;

/// Angle 1, what held: a sandbox (as uid 65534, and as `--user 0`) gets no fresh
/// identity to escape a per-caller bar, hold or budget: its cgroup tree is a read-only
/// mount of its own namespace (or, for `--user 0`, absent), `unshare` and `clone` of a
/// new user or cgroup namespace are refused, and a forked child is the same caller to
/// the broker.
#[test]
fn a_sandbox_cannot_get_a_fresh_caller_identity() {
    hb_tests::require_root();
    private_netns(&["203.0.113.10"]);
    let mut env = TestEnv::new(
        "fresh",
        "[broker]\nsocket_mode = \"0666\"\n\n[[policy]]\nname = \"web\"\n",
    );
    env.start_agent();
    let script = broker_client_script(&env, PY_FRESH_IDENTITY);
    for user in ["65534", "0"] {
        let out = env.hb(&[
            "sandbox",
            "run",
            "--policy",
            "web",
            "--user",
            user,
            "--",
            hb_tests::python(),
            "-c",
            &script,
        ]);
        let text = hb_tests::stdout(&out);
        println!("--user {user}: {}", text.trim());
        assert!(
            out.status.success(),
            "attacker: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Value = serde_json::from_str(text.trim()).expect("attacker's JSON");
        for step in [
            "mkdir_child_cgroup",
            "write_cgroup_procs",
            "unshare_user_cgroup",
            "clone_newuser",
        ] {
            assert_ne!(got[step], "OK", "--user {user}: {step} succeeded");
        }
        assert!(
            got["parent"].is_u64(),
            "--user {user}: not a sandbox caller"
        );
        assert_eq!(
            got["parent"], got["child"],
            "--user {user}: a forked child is another caller"
        );
    }
}

const SPREAD_DNS_PORT: u16 = 5441;
const SPREAD_KEY: &str = "key-acct-0a1b2c3d4e5f60718293a4b5c6d7e8f9";

/// A flooder: from the wall-clock second in `argv[1]`, for 5 s, GETs through its own
/// handle as fast as it can; prints the answers counted.
const SPREAD_FLOOD: &str = r#"
h = hb.handle("svc", "bot")["handle"]
time.sleep(max(0, float(sys.argv[1]) - time.time()))
got = []
stop = time.time() + 5
while time.time() < stop:
    got.append(code(lambda: hb.request("GET", "https://api.test/plain?step=flood", handle=h)))
print(json.dumps(dict(Counter(str(x) for x in got))), flush=True)
"#;

/// The innocent tenant, after the flood: one write, then ten reads a second apart.
const SPREAD_VICTIM: &str = r#"
h = hb.handle("svc", "bot")["handle"]
out = {"post": code(lambda: hb.request("POST", "https://api.test/plain?step=victim", handle=h, body="x"))}
reads = []
for _ in range(10):
    reads.append(code(lambda: hb.request("GET", "https://api.test/plain?step=victimread", handle=h)))
    time.sleep(1)
out["reads"] = dict(Counter(str(x) for x in reads))
print(json.dumps(out), flush=True)
"#;

/// 3(b) Nine sandboxes of one tenant flood a shared account at once. The sensor counts
/// 8 callers apart per bucket; the ninth's calls are unattributed, so the spike cannot
/// be pinned on the callers it can name and the whole account is held, every tenant
/// together (the README says so). Measured: what a tenant of another policy that only
/// writes once and reads ten times afterwards gets during the hold (`quarantine_secs`,
/// an hour by default): its write is `policy_denied` and its reads `rate_limited`, as
/// the flooders, held too, keep spending the account's one per-minute allowance.
#[test]
fn a_flood_spread_over_nine_sandboxes_does_not_hold_an_innocent_tenant() {
    use hb_tests::provider::{Provider, bearers};
    hb_tests::require_root();
    let p = Provider::start("spread9", SPREAD_DNS_PORT, None);
    let env = p.shared_account_agent("spread9", SPREAD_KEY);

    let flood = broker_client_script(&env, SPREAD_FLOOD);
    let floods: Vec<String> = nobody_python_many(&env, "web", &flood, &[&unix_secs_in(12)], 9)
        .into_iter()
        .map(|s| s.trim().to_owned())
        .collect();
    let victim = nobody_python(&env, "ops", &broker_client_script(&env, SPREAD_VICTIM), &[]);
    let victim = hb_tests::stdout(&victim);
    let records = env.audit_records();
    let spikes = records
        .iter()
        .filter(|r| r["kind"] == "detector" && r["detector"] == "rate_spike")
        .count();
    let holds: Vec<String> = records
        .iter()
        .filter(|r| r["kind"] == "detector_action")
        .map(|r| r.to_string().chars().take(300).collect())
        .collect();
    println!(
        "flooders: {floods:?} | victim: {} | rate_spike records: {spikes} | actions: {holds:?}",
        victim.trim()
    );
    let writes = bearers(&p.api, "victim").len();
    let _ = fs::remove_dir_all(&p.dir);
    assert!(
        spikes > 0,
        "the flood was a rate_spike (else this test proves nothing)"
    );
    assert!(
        victim.contains("\"post\": 200"),
        "a tenant that made one write was held by a quarantine nine other sandboxes raised: {victim}"
    );
    assert_eq!(writes, 1, "the write reached the API");
}
