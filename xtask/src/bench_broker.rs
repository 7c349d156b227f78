//! `cargo xtask bench broker`: a call through the broker (handle lookup, policy,
//! injection, validated resolution, pinned pooled connection, scrubbing) against the
//! same call made directly, by the same client code, to the same upstream.
//!
//! Everything lives in a private network namespace this process creates: the upstream
//! is a small keep-alive HTTP/1.1 server on 203.0.113.10:8080 (carved out of the deny
//! ranges by the bench config), dnsmasq answers `api.bench` for the broker, and the
//! agent runs on its own cgroup root, bpffs folder and state directory. The client
//! speaks HTTP/1.1 over one keep-alive connection per caller: over the broker's Unix
//! socket (`POST /v1/requests` with a handle, as a host caller under
//! `broker.host_policy`) or over TCP straight to the upstream.

use std::{
    fs,
    io::{self, BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::net::UnixStream,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::{
    bench::{dnsmasq, percentile, private_netns, start_agent},
    util,
};

const UPSTREAM: &str = "203.0.113.10:8080";
const DNS_PORT: u16 = 5400;
const SEQUENTIAL: usize = 4000;
const BLOCK: usize = 500;
const CONCURRENT: usize = 64;
const CONCURRENT_SECS: f64 = 3.0;

/// One keep-alive HTTP/1.1 connection and the bytes of the request it repeats.
pub(crate) struct Caller {
    reader: BufReader<Box<dyn Read + Send>>,
    writer: Box<dyn Write + Send>,
    request: Vec<u8>,
}

impl Caller {
    fn direct() -> io::Result<Self> {
        let s = TcpStream::connect(UPSTREAM)?;
        s.set_nodelay(true)?;
        let request = b"GET / HTTP/1.1\r\nHost: api.bench:8080\r\n\r\n".to_vec();
        Ok(Self {
            reader: BufReader::new(Box::new(s.try_clone()?)),
            writer: Box::new(s),
            request,
        })
    }

    fn broker(socket: &Path, handle: &str) -> io::Result<Self> {
        Self::broker_to(socket, handle, "http://api.bench:8080/")
    }

    /// A host caller of the broker on `socket`, GET `url` with `handle`.
    pub(crate) fn broker_to(socket: &Path, handle: &str, url: &str) -> io::Result<Self> {
        let s = UnixStream::connect(socket)?;
        let body = format!(r#"{{"handle":"{handle}","method":"GET","url":"{url}"}}"#);
        let request = format!(
            "POST /v1/requests HTTP/1.1\r\nHost: hb\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        Ok(Self {
            reader: BufReader::new(Box::new(s.try_clone()?)),
            writer: Box::new(s),
            request,
        })
    }

    /// One request; the status and body.
    pub(crate) fn call(&mut self) -> io::Result<(u16, Vec<u8>)> {
        self.writer.write_all(&self.request)?;
        exchange_response(&mut self.reader)
    }
}

/// One HTTP/1.1 response with a Content-Length: its status and body.
pub(crate) fn exchange_response(reader: &mut impl BufRead) -> io::Result<(u16, Vec<u8>)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
    let mut len = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::other("connection closed"));
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().map_err(io::Error::other)?;
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok((status, body))
}

/// The upstream: answers every request on a keep-alive connection with `200 ok`.
fn serve_upstream(listener: TcpListener) {
    for stream in listener.incoming().flatten() {
        thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            let Ok(read) = stream.try_clone() else { return };
            let mut reader = BufReader::new(read);
            let mut writer = stream;
            let mut line = String::new();
            loop {
                // Headers up to the blank line (the bench sends no request bodies).
                let mut got = false;
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" && got => break,
                        Ok(_) => got = true,
                    }
                }
                let answer =
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
                if writer.write_all(answer).is_err() {
                    return;
                }
            }
        });
    }
}

/// `n` sequential calls; latencies in µs.
fn sequential(caller: &mut Caller, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (status, body) = caller.call()?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        ensure!(
            status == 200,
            "status {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(lat)
}

/// `threads` callers for `secs`; (requests per second, latencies in µs).
fn concurrent(
    make: &(dyn Fn() -> io::Result<Caller> + Sync),
    threads: usize,
    secs: f64,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let results: Vec<anyhow::Result<Vec<f64>>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                scope.spawn(move || -> anyhow::Result<Vec<f64>> {
                    let mut c = make()?;
                    let mut lat = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let (status, _) = c.call()?;
                        lat.push(t.elapsed().as_secs_f64() * 1e6);
                        ensure!(status == 200, "status {status}");
                    }
                    Ok(lat)
                })
            })
            .collect();
        thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("caller panicked")))
            })
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    Ok((all.len() as f64 / elapsed, all))
}

struct Stop(Vec<Child>);

impl Drop for Stop {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn broker() -> anyhow::Result<()> {
    let root = util::workspace_root();
    let agent_bin = root.join("target/release/hb-agent");
    let tag = format!("hb-bench-broker-{}", std::process::id());
    let dir = std::env::temp_dir().join(&tag);
    fs::create_dir_all(&dir)?;
    private_netns("ip addr add 203.0.113.10/32 dev lo")?;
    let listener = TcpListener::bind(UPSTREAM)?;
    thread::spawn(move || serve_upstream(listener));
    let mut children = Stop(Vec::new());
    children.0.push(dnsmasq(
        DNS_PORT,
        &["--no-resolv", "--host-record=api.bench,203.0.113.10,3600"],
    )?);
    let bpffs = format!("/sys/fs/bpf/{tag}");
    let socket = dir.join("broker.sock");
    let config = dir.join("hb.toml");
    fs::write(
        &config,
        format!(
            r#"
[agent]
state_dir = "{state}"
master_key_file = "{state}/master.key"
bpffs_dir = "{bpffs}"
cgroup_root = "{tag}"
audit_fsync = "never"

[broker]
socket = "{socket}"
socket_mode = "0600"
host_policy = "bench"
max_connections = 256

[dns]
listen = "127.0.0.1:5300"
upstreams = ["127.0.0.1:{DNS_PORT}"]
min_ttl_secs = 3600

[egress]
exception_cidrs = ["203.0.113.0/24"]

[[integration]]
name = "bench"
auth = "bearer"
hosts = ["api.bench"]
methods = ["GET"]
schemes = ["http"]
ports = [8080]

[[policy]]
name = "bench"
allow_domains = []
integrations = ["bench"]
"#,
            state = dir.display(),
            socket = socket.display()
        ),
    )?;
    let hb = |args: &[&str], stdin: Option<&[u8]>| -> anyhow::Result<Vec<u8>> {
        let mut child = Command::new(&agent_bin)
            .arg("--config")
            .arg(&config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(data) = stdin {
            child.stdin.take().context("stdin")?.write_all(data)?;
        }
        drop(child.stdin.take());
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "hb-agent {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out.stdout)
    };
    hb(&["vault", "init"], None)?;
    hb(
        &["vault", "put", "--integration", "bench", "--account", "bot"],
        Some(b"bench-token-0123456789abcdef0123456789"),
    )?;
    let agent = start_agent(&agent_bin, &config, &dir.join("agent.log"))?;
    children.0.push(agent);

    // A handle, as a host caller.
    let mut s = UnixStream::connect(&socket).context("connecting to the broker")?;
    let body = r#"{"integration":"bench","account":"bot"}"#;
    write!(
        s,
        "POST /v1/handles HTTP/1.1\r\nHost: hb\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let (status, answer) = exchange_response(&mut BufReader::new(s))?;
    ensure!(
        status == 201,
        "no handle: {}",
        String::from_utf8_lossy(&answer)
    );
    let answer: serde_json::Value = serde_json::from_slice(&answer)?;
    let handle = answer["handle"]
        .as_str()
        .context("handle in the answer")?
        .to_owned();

    println!(
        "bench: {SEQUENTIAL} sequential calls each through the broker and direct (alternating blocks of {BLOCK})"
    );
    let mut via = Caller::broker(&socket, &handle)?;
    let mut direct = Caller::direct()?;
    // Warm both paths (pool, resolver cache, allocator).
    sequential(&mut via, 200)?;
    sequential(&mut direct, 200)?;
    let (mut lat_via, mut lat_direct) = (Vec::new(), Vec::new());
    for block in 0..SEQUENTIAL / BLOCK {
        if block % 2 == 0 {
            lat_via.extend(sequential(&mut via, BLOCK)?);
            lat_direct.extend(sequential(&mut direct, BLOCK)?);
        } else {
            lat_direct.extend(sequential(&mut direct, BLOCK)?);
            lat_via.extend(sequential(&mut via, BLOCK)?);
        }
    }
    println!("bench: {CONCURRENT} concurrent callers, {CONCURRENT_SECS} s each way");
    let socket2 = socket.clone();
    let handle2 = handle.clone();
    let make_via = move || Caller::broker(&socket2, &handle2);
    let (rate_via, conc_via) = concurrent(&make_via, CONCURRENT, CONCURRENT_SECS)?;
    let (rate_direct, conc_direct) = concurrent(&Caller::direct, CONCURRENT, CONCURRENT_SECS)?;
    let (rate1_via, _) = concurrent(&make_via, 1, CONCURRENT_SECS)?;
    let (rate1_direct, _) = concurrent(&Caller::direct, 1, CONCURRENT_SECS)?;

    let p = |v: &Vec<f64>, q: f64| percentile(v.clone(), q);
    let added = p(&lat_via, 0.5) - p(&lat_direct, 0.5);
    println!();
    println!("hb bench broker (private netns; same upstream, same client code)");
    println!("{}", "-".repeat(78));
    println!(
        "{:<40}{:>12}{:>12}{:>14}",
        "measure", "broker", "direct", "broker-direct"
    );
    let row = |name: &str, a: f64, b: f64| {
        println!("{name:<40}{a:>12.1}{b:>12.1}{:>14.1}", a - b);
    };
    row(
        "1 caller: p50 latency, µs",
        p(&lat_via, 0.5),
        p(&lat_direct, 0.5),
    );
    row(
        "1 caller: p99 latency, µs",
        p(&lat_via, 0.99),
        p(&lat_direct, 0.99),
    );
    row(
        "64 callers: p50 latency, µs",
        p(&conc_via, 0.5),
        p(&conc_direct, 0.5),
    );
    row(
        "64 callers: p99 latency, µs",
        p(&conc_via, 0.99),
        p(&conc_direct, 0.99),
    );
    println!(
        "{:<40}{:>12.0}{:>12.0}{:>14}",
        "1 caller: requests/s", rate1_via, rate1_direct, "-"
    );
    println!(
        "{:<40}{:>12.0}{:>12.0}{:>14}",
        "64 callers: requests/s", rate_via, rate_direct, "-"
    );
    println!("{}", "-".repeat(78));
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!(
        "p50 added by the broker (1 caller): {added:.1} µs (target <= 150) {}",
        verdict(added <= 150.0)
    );
    println!(
        "broker throughput, 64 callers: {rate_via:.0} req/s = {:.2} × direct (target >= 10000 req/s) {}",
        rate_via / rate_direct,
        verdict(rate_via >= 10_000.0)
    );
    drop(children);
    let _ = fs::remove_dir_all(&bpffs);
    if let Ok(mount) = crate::bench::cgroup2_mount() {
        let _ = fs::remove_dir(mount.join(&tag));
    }
    let _ = fs::remove_dir_all(&dir);
    if fs::metadata(&bpffs).is_ok() {
        bail!("{bpffs} left behind");
    }
    Ok(())
}
