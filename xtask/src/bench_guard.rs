//! `cargo xtask bench guard`: the egress guard's cost on a new TLS connection and on a
//! bulk transfer, beside the same sandbox with `guard = false`, beside Squid as a
//! forward proxy peeking at the ClientHello and splicing (`ssl_bump peek step1`,
//! `ssl_bump splice all`), and beside a client outside any sandbox, in one run, taking
//! turns.
//!
//! Everything lives in a private network namespace this process creates:
//! - 203.0.113.10: the server (`xtask __guard-server`, rustls, release build) on :443
//!   with a certificate for `allowed.test` from a CA made for the run, and on :80;
//! - dnsmasq on 127.0.0.1:5400 answers `allowed.test` → 203.0.113.10 for hb's resolver;
//! - 203.0.113.20:3128: Squid (Debian's `squid-openssl`, `cargo xtask setup`) as a
//!   forward proxy; clients reach it with CONNECT (TLS) or an absolute-form GET (plain
//!   HTTP). It resolves `allowed.test` from a hosts file of its own.
//!
//! The client (`xtask __guard-client`, release build) runs inside one `hb-agent sandbox
//! run` per measurement, as uid 1000, its DNS going to hb's resolver (a resolv.conf
//! bound over the sandbox's): policy `guard` (guard = true), `noguard` (guard = false),
//! `proxy` (only Squid's address). The direct client runs in this namespace outside any
//! cgroup hb knows, connecting to the address. It makes its connections one after
//! another in one process; each is timed from before `connect()` to the first response
//! byte (TCP + TLS 1.3 full handshake + one GET; plain HTTP: TCP + one GET), and a bulk
//! transfer from before `connect()` to the last byte.
//!
//! Sizes can be lowered for a smoke run: `HB_BENCH_GUARD_CONNECTIONS` (per case, default
//! 2000), `HB_BENCH_GUARD_BYTES` (per transfer, default 1 GiB),
//! `HB_BENCH_GUARD_BULK_ROUNDS` (default 3). `HB_BENCH_GUARD_SOCKMAP=1` runs the guard
//! with its kernel relay (`guard.sockmap = true`).

use std::{
    fs,
    io::{BufRead as _, BufReader},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

use crate::{
    bench::{cgroup2_mount, dnsmasq, percentile, private_netns, start_agent},
    util,
};

const SERVER: &str = "203.0.113.10";
const SQUID: &str = "203.0.113.20:3128";
const NAME: &str = "allowed.test";
const DNS_PORT: u16 = 5400;
/// Latency connections per case are made in this many blocks, the cases taking turns.
const LAT_BLOCKS: usize = 20;
const WARM_CONNECTIONS: usize = 50;

/// The ways the client reaches the server.
#[derive(Clone, Copy, PartialEq)]
enum Case {
    Guard,
    NoGuard,
    Squid,
    Direct,
}

const CASES: [Case; 4] = [Case::Guard, Case::NoGuard, Case::Squid, Case::Direct];

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::Guard => "guard",
            Case::NoGuard => "no guard",
            Case::Squid => "squid",
            Case::Direct => "direct",
        }
    }
}

/// What the runs share: the agent's config, the client binary, the run's folder.
struct Rig {
    agent_bin: PathBuf,
    client_bin: PathBuf,
    config: PathBuf,
    resolv: PathBuf,
    ca: PathBuf,
}

impl Rig {
    /// The client command for `case`, plain HTTP or TLS, with `extra` arguments.
    fn client(&self, case: Case, plain: bool, extra: &[String]) -> Command {
        let port = if plain { 80 } else { 443 };
        let (target, proxy) = match case {
            Case::Guard | Case::NoGuard => (format!("{NAME}:{port}"), false),
            Case::Squid => (SQUID.to_owned(), true),
            Case::Direct => (format!("{SERVER}:{port}"), false),
        };
        let mut cmd = match case {
            Case::Direct => Command::new(&self.client_bin),
            _ => {
                let policy = match case {
                    Case::Guard => "guard",
                    Case::NoGuard => "noguard",
                    _ => "proxy",
                };
                let mut c = Command::new(&self.agent_bin);
                c.arg("--config")
                    .arg(&self.config)
                    .args(["sandbox", "run", "--policy", policy, "--ro-bind"])
                    .arg(&self.resolv)
                    .args(["/etc/resolv.conf", "--"])
                    .arg(&self.client_bin);
                c
            }
        };
        cmd.args(["__guard-client", "--connect", &target, "--name", NAME]);
        if proxy {
            cmd.arg("--proxy");
        }
        if plain {
            cmd.arg("--plain");
        } else {
            cmd.arg("--ca").arg(&self.ca);
        }
        cmd.args(extra);
        cmd
    }

    /// One client run; its stdout's line starting with `tag`, split after the tag.
    fn run(
        &self,
        case: Case,
        plain: bool,
        extra: &[String],
        tag: &str,
    ) -> anyhow::Result<Vec<f64>> {
        let out = util::output(&mut self.client(case, plain, extra))
            .with_context(|| format!("client, case {}", case.label()))?;
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix(tag))
            .with_context(|| format!("no `{tag}` line in the client's output: {out}"))?;
        line.split_whitespace()
            .map(|v| v.parse::<f64>().context("client output"))
            .collect()
    }

    /// `n` new connections (TLS, or plain HTTP): µs to the first response byte, one per
    /// connection.
    fn latencies(&self, case: Case, plain: bool, n: usize) -> anyhow::Result<Vec<f64>> {
        self.run(
            case,
            plain,
            &["--connections".into(), n.to_string()],
            "lat ",
        )
    }

    /// One transfer of `bytes`: bytes per second.
    fn bulk(&self, case: Case, plain: bool, bytes: u64) -> anyhow::Result<f64> {
        let v = self.run(case, plain, &["--bytes".into(), bytes.to_string()], "bulk ")?;
        ensure!(v.len() == 2, "bulk line {v:?}");
        Ok(v[0] / (v[1] / 1e9))
    }
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Children killed and the run's folders removed however the bench ends.
struct Cleanup {
    children: Vec<Child>,
    agent: Option<Child>,
    dir: PathBuf,
    bpffs: PathBuf,
    cgroups: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.bpffs);
        let _ = fs::remove_dir(self.cgroups.join("sandboxes"));
        let _ = fs::remove_dir(&self.cgroups);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub fn guard() -> anyhow::Result<()> {
    let target = util::target_dir();
    let agent_bin = target.join("release/hb-agent");
    let client_bin = target.join("release/xtask");
    ensure!(
        client_bin.is_file(),
        "{} missing (cargo build --release -p xtask)",
        client_bin.display()
    );
    let connections: usize = env_or("HB_BENCH_GUARD_CONNECTIONS", 2000);
    let bytes: u64 = env_or("HB_BENCH_GUARD_BYTES", 1 << 30);
    let bulk_rounds: usize = env_or("HB_BENCH_GUARD_BULK_ROUNDS", 3);
    let tag = format!("hb-bench-guard-{}", std::process::id());
    // Below /var/tmp, which a sandbox sees (its /tmp is its own): the CA and resolv.conf.
    let dir = PathBuf::from("/var/tmp").join(&tag);
    fs::create_dir_all(&dir)?;
    let mut cleanup = Cleanup {
        children: Vec::new(),
        agent: None,
        dir: dir.clone(),
        bpffs: PathBuf::from(format!("/sys/fs/bpf/{tag}")),
        cgroups: cgroup2_mount()?.join(&tag),
    };
    private_netns(&format!(
        "ip addr add {SERVER}/32 dev lo && ip addr add {}/32 dev lo",
        SQUID.split(':').next().unwrap_or_default()
    ))?;

    let (ca, leaf, leaf_key) = test_ca(&dir)?;
    cleanup
        .children
        .push(start_server(&client_bin, &leaf, &leaf_key)?);
    cleanup.children.push(dnsmasq(
        DNS_PORT,
        &[
            "--no-resolv",
            &format!("--host-record={NAME},{SERVER},3600"),
        ],
    )?);
    cleanup.children.push(start_squid(&dir, &ca)?);

    let config = dir.join("hb.toml");
    fs::write(&config, agent_config(&dir, &cleanup.bpffs, &tag))?;
    let resolv = dir.join("resolv.conf");
    // A documentation address: the kernel sends the sandbox's DNS to hb's resolver.
    fs::write(
        &resolv,
        "nameserver 192.0.2.53\noptions attempts:1 timeout:3\n",
    )?;
    cleanup.agent = Some(start_agent(&agent_bin, &config, &dir.join("agent.log"))?);
    let rig = Rig {
        agent_bin,
        client_bin,
        config,
        resolv,
        ca,
    };

    // Guarded connections made, to check against the guard's own counters at the end.
    let mut through_guard = 0;
    eprintln!("bench: warming up every case ({WARM_CONNECTIONS} connections each)");
    for case in CASES {
        rig.latencies(case, false, WARM_CONNECTIONS)?;
        rig.latencies(case, true, WARM_CONNECTIONS)?;
    }
    through_guard += 2 * WARM_CONNECTIONS;

    let block = connections.div_ceil(LAT_BLOCKS);
    eprintln!(
        "bench: {} new TLS and {0} plain-HTTP connections per case, in {LAT_BLOCKS} blocks taking turns",
        block * LAT_BLOCKS
    );
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    let mut lat_plain: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    // Per block: guard's median minus no guard's, from the same round (drift and
    // neighbours' load hit both alike).
    let mut paired = Vec::with_capacity(LAT_BLOCKS);
    let mut paired_plain = Vec::with_capacity(LAT_BLOCKS);
    for round in 0..LAT_BLOCKS {
        let mut medians = [0.0; CASES.len()];
        let mut medians_plain = [0.0; CASES.len()];
        for k in 0..CASES.len() {
            let i = (round + k) % CASES.len();
            let v = rig.latencies(CASES[i], false, block)?;
            medians[i] = median(v.clone());
            lat[i].extend(v);
            let v = rig.latencies(CASES[i], true, block)?;
            medians_plain[i] = median(v.clone());
            lat_plain[i].extend(v);
        }
        paired.push(medians[0] - medians[1]);
        paired_plain.push(medians_plain[0] - medians_plain[1]);
    }
    through_guard += 2 * block * LAT_BLOCKS;

    eprintln!(
        "bench: {bulk_rounds} rounds of a {} MiB download per case, TLS then plain HTTP",
        bytes >> 20
    );
    let mut bulk_tls: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    let mut bulk_plain: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    for round in 0..bulk_rounds {
        for k in 0..CASES.len() {
            let i = (round + k) % CASES.len();
            bulk_tls[i].push(rig.bulk(CASES[i], false, bytes)?);
            bulk_plain[i].push(rig.bulk(CASES[i], true, bytes)?);
        }
    }
    through_guard += 2 * bulk_rounds;

    let counters = guard_counters(&rig, through_guard as u64)?;
    report(
        [&lat, &lat_plain],
        [median(paired), median(paired_plain)],
        &bulk_tls,
        &bulk_plain,
        bytes,
        &counters,
    );
    drop(cleanup);
    Ok(())
}

/// A CA made for this run and a certificate for [`NAME`] (P-256, openssl CLI): (CA
/// certificate, leaf certificate, leaf key).
fn test_ca(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let p = |f: &str| dir.join(f).display().to_string();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    crate::bench::sh(&format!(
        "cd {d} && openssl req -x509 {ec} -days 2 -subj '/CN=hb bench CA' \
           -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
           -keyout ca.key -out ca.pem 2>/dev/null \
         && printf 'subjectAltName=DNS:{NAME}\\nbasicConstraints=CA:FALSE\\nkeyUsage=critical,digitalSignature\\nextendedKeyUsage=serverAuth\\n' > leaf.ext \
         && openssl req {ec} -subj '/CN={NAME}' -keyout leaf.key -out leaf.csr 2>/dev/null \
         && openssl x509 -req -days 2 -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
           -extfile leaf.ext -out leaf.pem 2>/dev/null \
         && chmod 0644 ca.pem",
        d = dir.display()
    ))?;
    Ok((
        p("ca.pem").into(),
        p("leaf.pem").into(),
        p("leaf.key").into(),
    ))
}

/// The TLS and plain-HTTP server, up when it says `ready`.
fn start_server(bin: &Path, cert: &Path, key: &Path) -> anyhow::Result<Child> {
    let mut child = Command::new(bin)
        .args(["__guard-server", SERVER])
        .arg(cert)
        .arg(key)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the bench server")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("server stdout")?).read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        bail!("the bench server did not start");
    }
    Ok(child)
}

/// Squid as a forward proxy that peeks at the ClientHello (step 1: the SNI) and splices,
/// never decrypting; no cache, no access log. Up when its port accepts.
fn start_squid(dir: &Path, ca: &Path) -> anyhow::Result<Child> {
    let sq = dir.join("squid");
    fs::create_dir_all(&sq)?;
    // ssl-bump ports need a CA even when they only splice (no certificate is minted).
    fs::copy(dir.join("ca.pem"), sq.join("ca.pem"))?;
    fs::copy(dir.join("ca.key"), sq.join("ca.key"))?;
    fs::write(sq.join("hosts"), format!("{SERVER} {NAME}\n"))?;
    let conf = sq.join("squid.conf");
    fs::write(
        &conf,
        format!(
            "http_port {SQUID} ssl-bump tls-cert={d}/ca.pem tls-key={d}/ca.key generate-host-certificates=off
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump splice all
http_access allow all
cache deny all
cache_mem 0 MB
access_log none
cache_store_log none
cache_log {d}/cache.log
pid_filename none
coredump_dir {d}
hosts_file {d}/hosts
dns_nameservers 127.0.0.1
tls_outgoing_options cafile={ca}
max_filedescriptors 8192
shutdown_lifetime 0 seconds
workers 1
",
            d = sq.display(),
            ca = ca.display(),
        ),
    )?;
    crate::bench::sh(&format!("chown -R proxy: {}", sq.display()))?;
    let mut child = Command::new("/usr/sbin/squid")
        .args(["-N", "-f"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting squid (cargo xtask setup installs squid-openssl)")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(SQUID).is_err() {
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "squid did not start: {}",
                fs::read_to_string(sq.join("cache.log")).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(child)
}

fn agent_config(dir: &Path, bpffs: &Path, tag: &str) -> String {
    // `HB_BENCH_GUARD_SOCKMAP=1`: the guard's kernel relay on (`guard.sockmap`).
    let sockmap = std::env::var("HB_BENCH_GUARD_SOCKMAP").is_ok_and(|v| v == "1");
    format!(
        r#"
[guard]
sockmap = {sockmap}

[agent]
state_dir = "{state}/state"
master_key_file = "{state}/state/master.key"
bpffs_dir = "{bpffs}"
cgroup_root = "{tag}"
audit_fsync = "never"

[broker]
socket = "{state}/state/broker.sock"

[dns]
listen = "127.0.0.1:5300"
upstreams = ["127.0.0.1:{DNS_PORT}"]
min_ttl_secs = 3600

[egress]
exception_cidrs = ["203.0.113.0/24"]

[[policy]]
name = "guard"
allow_domains = ["{NAME}"]
guard = true

[[policy]]
name = "noguard"
allow_domains = ["{NAME}"]
guard = false

[[policy]]
name = "proxy"
allow_domains = []
allow_cidrs = ["{squid}/32"]
"#,
        state = dir.display(),
        bpffs = bpffs.display(),
        squid = SQUID.split(':').next().unwrap_or_default(),
    )
}

/// The guard's counters once they account for `expected` passed connections (the agent
/// writes them once a second): each guarded connection passed, none refused, and the
/// unguarded cases did not go through it.
fn guard_counters(rig: &Rig, expected: u64) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status: Value = serde_json::from_str(&util::output(
            Command::new(&rig.agent_bin)
                .arg("--config")
                .arg(&rig.config)
                .args(["status", "--json"]),
        )?)?;
        let g = status["guard"].clone();
        let passed = g["passed"].as_u64().unwrap_or(0);
        if passed >= expected || Instant::now() > deadline {
            ensure!(
                passed == expected && g["refused"].as_u64() == Some(0),
                "the guard passed {passed} connections, {expected} expected: {g}"
            );
            return Ok(g);
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn report(
    [lat, lat_plain]: [&[Vec<f64>]; 2],
    [paired, paired_plain]: [f64; 2],
    bulk_tls: &[Vec<f64>],
    bulk_plain: &[Vec<f64>],
    bytes: u64,
    counters: &Value,
) {
    let p = |i: usize, q: f64| percentile(lat[i].clone(), q);
    let pp = |i: usize, q: f64| percentile(lat_plain[i].clone(), q);
    let tls: Vec<f64> = bulk_tls.iter().map(|v| median(v.clone())).collect();
    let plain: Vec<f64> = bulk_plain.iter().map(|v| median(v.clone())).collect();
    let (g, n, s, d) = (0, 1, 2, 3);
    println!();
    println!(
        "hb bench guard (private netns, loopback; sandboxed client as uid 1000; {} connections per case, medians of {} transfers of {} MiB)",
        lat[0].len(),
        bulk_tls[0].len(),
        bytes >> 20
    );
    println!("{:-<98}", "");
    println!(
        "{:<36} {:>10} {:>10} {:>10} {:>10} {:>16}",
        "measure", "guard", "no guard", "squid", "direct", "guard-no guard"
    );
    for (label, q) in [
        ("new TLS connection p50, µs", 0.5),
        ("new TLS connection p90, µs", 0.9),
        ("new TLS connection p99, µs", 0.99),
    ] {
        println!(
            "{label:<36} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>16.1}",
            p(g, q),
            p(n, q),
            p(s, q),
            p(d, q),
            p(g, q) - p(n, q)
        );
    }
    for (label, q) in [
        ("new plain-HTTP connection p50, µs", 0.5),
        ("new plain-HTTP connection p90, µs", 0.9),
    ] {
        println!(
            "{label:<36} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>16.1}",
            pp(g, q),
            pp(n, q),
            pp(s, q),
            pp(d, q),
            pp(g, q) - pp(n, q)
        );
    }
    let mib = |v: f64| v / (1024.0 * 1024.0);
    for (label, v) in [
        ("TLS download, MiB/s", &tls),
        ("plain HTTP download, MiB/s", &plain),
    ] {
        println!(
            "{label:<36} {:>10.0} {:>10.0} {:>10.0} {:>10.0} {:>16.3}",
            mib(v[g]),
            mib(v[n]),
            mib(v[s]),
            mib(v[d]),
            v[g] / v[n]
        );
    }
    println!("{:-<98}", "");
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    let added = p(g, 0.5) - p(n, 0.5);
    println!(
        "added per connection by the guard at p50: {added:.1} µs (target <= 50) {}",
        verdict(added <= 50.0)
    );
    println!(
        "  the same, paired: median over {LAT_BLOCKS} rounds of (guard block p50 - no-guard block p50): {paired:.1} µs"
    );
    println!(
        "added per plain-HTTP connection (no TLS: the guard's own cost, less hidden by crypto): p50 {:.1} µs, paired {paired_plain:.1} µs",
        pp(g, 0.5) - pp(n, 0.5)
    );
    let ratio = tls[g] / tls[n];
    println!(
        "TLS throughput guard / no guard: {ratio:.3} (target >= 0.90) {}",
        verdict(ratio >= 0.90)
    );
    println!(
        "plain-HTTP throughput guard / no guard: {:.3} (every request head checked; no target)",
        plain[g] / plain[n]
    );
    println!(
        "guard vs squid: p50 {:+.1} µs, TLS throughput {:.2} ×, plain-HTTP throughput {:.2} ×",
        p(g, 0.5) - p(s, 0.5),
        tls[g] / tls[s],
        plain[g] / plain[s]
    );
    println!("guard counters: {counters}");
    let summary = json!({
        "connections_per_case": lat[0].len(),
        "bulk_bytes": bytes,
        "cases": CASES.iter().enumerate().map(|(i, c)| json!({
            "case": c.label(),
            "connect_p50_us": p(i, 0.5),
            "connect_p90_us": p(i, 0.9),
            "connect_p99_us": p(i, 0.99),
            "plain_connect_p50_us": pp(i, 0.5),
            "plain_connect_p90_us": pp(i, 0.9),
            "tls_bytes_per_sec": tls[i],
            "plain_bytes_per_sec": plain[i],
        })).collect::<Vec<_>>(),
        "added_p50_us": added,
        "added_p50_paired_us": paired,
        "plain_added_p50_paired_us": paired_plain,
        "tls_throughput_ratio": ratio,
        "plain_throughput_ratio": plain[g] / plain[n],
        "squid_mode": "forward proxy (CONNECT), ssl_bump peek step1 + splice all",
        "guard_counters": counters,
    });
    println!("json: {summary}");
}
