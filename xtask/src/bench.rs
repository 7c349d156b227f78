//! `cargo xtask bench connect`: hb's kernel side measured against the same work without
//! it, in one run, with ratios.
//!
//! Everything happens in a private network namespace this process creates (all test
//! addresses on its `lo`), with a fresh agent on its own cgroup root and bpffs folder:
//! - the programs' own cost per run, from the kernel's accounting
//!   (`kernel.bpf_stats_enabled`, restored afterwards), with the deny tries at their
//!   default contents, 64k entries in the allow map and 1k static CIDRs;
//! - connect()+close rate from an enrolled cgroup vs a cgroup without hb programs
//!   (median of alternating rounds);
//! - bulk TCP throughput (iperf3) from an enrolled cgroup vs not.

use std::{
    fs,
    io::Write as _,
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

use crate::{setup, util};

const ROUNDS: usize = 31;
/// Rounds per agent turn when a previous agent is timed beside this tree's.
const TURN_ROUNDS: usize = 11;
const CONNECTS_PER_ROUND: usize = 2000;
const IPERF_ROUNDS: usize = 3;
const IPERF_SECS: &str = "3";
const ALLOW_ENTRIES: u32 = 65_536;
const STATIC_CIDRS: u32 = 1_000;

pub fn bench(which: Option<&str>, previous: Option<&Path>, smoke: bool) -> anyhow::Result<()> {
    // Pure user space: no root, no eBPF set-up.
    if which == Some("sanitize") {
        return crate::bench_sanitize::bench();
    }
    if which == Some("scrub") {
        return crate::bench_scrub::bench();
    }
    let run_connect = matches!(which, None | Some("connect"));
    let run_dns = matches!(which, None | Some("dns"));
    let run_broker = matches!(which, None | Some("broker"));
    let run_sandbox = matches!(which, None | Some("sandbox"));
    let run_guard = matches!(which, None | Some("guard"));
    let run_enroll = matches!(which, None | Some("enroll"));
    let run_rotation = matches!(which, None | Some("rotation"));
    if !run_connect
        && !run_dns
        && !run_broker
        && !run_sandbox
        && !run_guard
        && !run_enroll
        && !run_rotation
    {
        bail!(
            "unknown benchmark \"{}\" (available: connect, dns, broker, sandbox, guard, enroll, rotation, scrub, sanitize)",
            which.unwrap_or_default()
        );
    }
    // SAFETY: no arguments.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the benchmark loads eBPF programs: run it as root"
    );
    setup::setup()?;
    util::run(util::cargo().args(["build", "--release", "--package", "hb-agent"]))?;
    if run_guard {
        // The guard bench's TLS client and server: a debug build's TLS would be the
        // bottleneck of its transfers.
        util::run(util::cargo().args(["build", "--release", "--package", "xtask"]))?;
    }
    // Each benchmark moves its process into a network namespace of its own: run each
    // in a process of its own.
    let me = std::env::current_exe()?;
    for (name, wanted) in [
        ("connect", run_connect),
        ("dns", run_dns),
        ("broker", run_broker),
        ("sandbox", run_sandbox),
        ("guard", run_guard),
        ("enroll", run_enroll),
        ("rotation", run_rotation),
    ] {
        if wanted {
            let mut one = Command::new(&me);
            one.args(["__bench-one", name]);
            // The rotation bench starts its agent through the tests' harness, which
            // runs this binary.
            one.env(
                "HB_AGENT_BIN",
                util::workspace_root().join("target/release/hb-agent"),
            );
            if smoke {
                one.env(crate::bench_rotation::SMOKE_ENV, "1");
            }
            if let Some(previous) = previous {
                ensure!(
                    previous.is_file(),
                    "--previous {}: no such file",
                    previous.display()
                );
                one.env(PREVIOUS_ENV, previous.canonicalize()?);
            }
            util::run(&mut one)?;
        }
    }
    if which.is_none() {
        crate::bench_scrub::bench()?;
        crate::bench_sanitize::bench()?;
    }
    Ok(())
}

/// `xtask __bench-one NAME`: one benchmark, in this process.
pub fn bench_one(name: &str) -> anyhow::Result<()> {
    match name {
        "connect" => connect(),
        "dns" => dns(),
        "broker" => crate::bench_broker::broker(),
        "sandbox" => crate::bench_sandbox::sandbox(),
        "guard" => crate::bench_guard::guard(),
        "enroll" => crate::bench_enroll::enroll(),
        "rotation" => crate::bench_rotation::rotation(),
        other => bail!("unknown benchmark {other}"),
    }
}

/// `xtask __connect-loop ADDR N`: N × (connect, close with RST). Prints elapsed ns.
pub fn connect_loop(addr: &str, n: usize) -> anyhow::Result<()> {
    let addr: SocketAddr = addr.parse().context("address")?;
    let start = Instant::now();
    for _ in 0..n {
        let s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        // RST instead of FIN: no TIME_WAIT, so rounds never run out of ports.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: valid socket fd and option struct of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        ensure!(rc == 0, "SO_LINGER: {}", std::io::Error::last_os_error());
        drop(s);
    }
    println!("{}", start.elapsed().as_nanos());
    Ok(())
}

struct Cleanup {
    agent: Option<Child>,
    bpffs: Vec<PathBuf>,
    cgroups: Vec<PathBuf>,
    stats_before: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        for dir in &self.bpffs {
            let _ = fs::remove_dir_all(dir);
        }
        for cg in self.cgroups.iter().rev() {
            let _ = fs::write(cg.join("cgroup.kill"), "1");
            for _ in 0..100 {
                if fs::remove_dir(cg).is_ok() || !cg.exists() {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.stats_before);
    }
}

/// Moves this process into a network namespace of its own, brings its `lo` up and runs
/// `setup` (more addresses on `lo`). Call while the process is single-threaded.
pub(crate) fn private_netns(setup: &str) -> anyhow::Result<()> {
    // SAFETY: plain syscall; the caller is single-threaded, the namespace is ours alone.
    ensure!(
        unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0,
        "unshare(CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
    sh(&format!("ip link set lo up && {setup}"))
}

pub(crate) fn sh(cmd: &str) -> anyhow::Result<()> {
    util::run(Command::new("sh").args(["-c", cmd]))
}

pub(crate) fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts")?;
    let mut found: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .collect();
    found.sort_by_key(|p| p != Path::new("/sys/fs/cgroup"));
    found.into_iter().next().context("no cgroup2 mount")
}

/// Runs `cmd` with `args` inside the cgroup `cg`, pinned to CPU 1 (the listeners keep
/// CPU 0), returning stdout.
fn in_cgroup(cg: &Path, cmd: &Path, args: &[&str]) -> anyhow::Result<String> {
    let script = format!(
        "echo $$ > '{}/cgroup.procs' && exec taskset -c 1 \"$@\"",
        cg.display()
    );
    util::output(
        Command::new("sh")
            .args(["-c", &script, "sh"])
            .arg(cmd)
            .args(args),
    )
}

/// Starts `hb-agent run` on `config`, logging to `log`, and waits until it enforces.
pub(crate) fn start_agent(agent_bin: &Path, config: &Path, log: &Path) -> anyhow::Result<Child> {
    let out = fs::File::create(log)?;
    let mut agent = Command::new(agent_bin)
        .args(["run", "--config"])
        .arg(config)
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("starting hb-agent")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(log)?.contains("ready: enforcing") {
        if Instant::now() > deadline || agent.try_wait()?.is_some() {
            let _ = agent.kill();
            bail!("hb-agent did not start: {}", fs::read_to_string(log)?);
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(agent)
}

fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t with CPU 0 set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Measures `rounds` times from the enrolled and the plain cgroup, alternating who goes
/// first so drift hits both sides alike; returns the medians (enrolled, plain).
fn alternate(
    rounds: usize,
    enrolled: &Path,
    plain: &Path,
    mut measure: impl FnMut(&Path) -> anyhow::Result<f64>,
) -> anyhow::Result<(f64, f64)> {
    let (mut with_hb, mut without) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            with_hb.push(measure(enrolled)?);
            without.push(measure(plain)?);
        } else {
            without.push(measure(plain)?);
            with_hb.push(measure(enrolled)?);
        }
    }
    Ok((median(with_hb), median(without)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The agent binary whose program costs are measured beside this tree's in the same run
/// (`cargo xtask bench connect|sandbox --previous BIN`), passed to `__bench-one` through the
/// environment.
pub(crate) const PREVIOUS_ENV: &str = "HB_BENCH_PREVIOUS_AGENT";

/// Programs whose cost the benchmark reports, with their budgets (ns per run). A program
/// that an agent binary does not have is left out of its column.
const PROGRAM_BUDGETS: [(&str, f64); 8] = [
    ("hb_connect4", 250.0),
    ("hb_connect6", 250.0),
    ("hb_skb_egress", 100.0),
    ("hb_skb_ingress", 100.0),
    ("hb_sock_ops", 100.0),
    ("hb_setsockopt", 100.0),
    ("hb_sock_create", 100.0),
    ("hb_sock_release", 100.0),
];

/// The benchmark's cgroups and the config each agent binary runs on.
struct Rig {
    dir: PathBuf,
    tag: String,
    enrolled: PathBuf,
    plain: PathBuf,
}

impl Rig {
    /// The agent config for one binary: its own bpffs folder, the shared cgroup root.
    fn config(&self, name: &str, bpffs: &Path) -> anyhow::Result<PathBuf> {
        // 1k static CIDRs (public /24s) plus the benchmark's own target.
        let mut cidrs: Vec<String> = (0..STATIC_CIDRS)
            .map(|i| format!("\"1.{}.{}.0/24\"", 1 + i / 250, i % 250))
            .collect();
        cidrs.push("\"203.0.113.10\"".into());
        cidrs.push("\"2001:db8::10/128\"".into());
        let config = self.dir.join(format!("{name}.toml"));
        fs::write(
            &config,
            format!(
                r#"[agent]
state_dir = "{state}"
bpffs_dir = "{bpffs}"
cgroup_root = "{tag}"
rescan_interval_ms = 1000

[egress]
exception_cidrs = ["203.0.113.0/24", "2001:db8::/32"]

[[policy]]
name = "bench"
allow_cidrs = [{cidrs}]

[[sandbox]]
cgroup = "{tag}/enrolled"
policy = "bench"
"#,
                state = self.dir.join(format!("state-{name}")).display(),
                bpffs = bpffs.display(),
                tag = self.tag,
                cidrs = cidrs.join(", "),
            ),
        )?;
        Ok(config)
    }

    /// Starts `agent_bin` on `config`, waits for the glob enrollment and fills the
    /// policy's allow map with [`ALLOW_ENTRIES`] entries through bpftool's batch mode.
    fn start(&self, agent_bin: &Path, config: &Path, bpffs: &Path) -> anyhow::Result<Child> {
        let log = self.dir.join(format!(
            "{}.log",
            config.file_stem().unwrap_or_default().to_string_lossy()
        ));
        let agent = start_agent(agent_bin, config, &log)?;
        let enrolled_rel = format!("{}/enrolled", self.tag);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = util::output(
                Command::new(agent_bin)
                    .args(["--config"])
                    .arg(config)
                    .args(["maps", "dump", "enrolled", "--json"]),
            )?;
            if out.contains(&enrolled_rel) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "cgroup {enrolled_rel} not enrolled"
            );
            thread::sleep(Duration::from_millis(50));
        }
        let policies: Value = serde_json::from_str(&util::output(
            Command::new(agent_bin)
                .arg("--config")
                .arg(config)
                .args(["maps", "dump", "policies", "--json"]),
        )?)?;
        let policy_id = policies[0]["id"].as_u64().context("policy id")? as u32;
        let batch = self.dir.join("allow.batch");
        let mut f = fs::File::create(&batch)?;
        let allow_pin = bpffs.join("maps/HB_ALLOW4");
        for i in 0..ALLOW_ENTRIES {
            let ip = [45, (i >> 16) as u8, (i >> 8) as u8, i as u8];
            let key: Vec<String> = policy_id
                .to_le_bytes()
                .iter()
                .chain(ip.iter())
                .map(|b| b.to_string())
                .collect();
            writeln!(
                f,
                "map update pinned {} key {} value 255 255 255 255 255 255 255 255",
                allow_pin.display(),
                key.join(" ")
            )?;
        }
        drop(f);
        eprintln!("bench: filling the allow map with {ALLOW_ENTRIES} entries");
        util::output(Command::new("bpftool").args(["batch", "file"]).arg(&batch))?;
        Ok(agent)
    }
}

/// One agent's programs: ns per run and runs, from the kernel's accounting, after the
/// same connect loops and bulk transfer from the enrolled cgroup.
fn program_costs(
    rig: &Rig,
    me: &Path,
    targets: [&str; 2],
    iperf_port: &str,
    bpffs: &Path,
) -> anyhow::Result<Vec<(&'static str, f64, f64)>> {
    let n = CONNECTS_PER_ROUND.to_string();
    fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").context("enabling bpf stats")?;
    for _ in 0..3 {
        for target in targets {
            in_cgroup(&rig.enrolled, me, &["__connect-loop", target, &n])?;
        }
    }
    in_cgroup(
        &rig.enrolled,
        Path::new("iperf3"),
        &["-c", "203.0.113.10", "-p", iperf_port, "-t", "2", "-J"],
    )?;
    fs::write("/proc/sys/kernel/bpf_stats_enabled", "0")?;
    let mut costs = Vec::new();
    for (prog, _) in PROGRAM_BUDGETS {
        let pin = bpffs.join("progs").join(prog);
        if !pin.exists() {
            continue;
        }
        let v: Value = serde_json::from_str(&util::output(
            Command::new("bpftool")
                .args(["-j", "prog", "show", "pinned"])
                .arg(pin),
        )?)?;
        let ns = v["run_time_ns"].as_f64().unwrap_or(0.0);
        let cnt = v["run_cnt"].as_f64().unwrap_or(0.0);
        costs.push((prog, cnt, if cnt > 0.0 { ns / cnt } else { f64::NAN }));
    }
    Ok(costs)
}

/// Stops an agent and removes its pins, which detaches its programs.
fn stop_agent(agent: &mut Option<Child>, bpffs: &Path) {
    if let Some(mut a) = agent.take() {
        let _ = a.kill();
        let _ = a.wait();
    }
    let _ = fs::remove_dir_all(bpffs);
}

fn connect() -> anyhow::Result<()> {
    let root = util::workspace_root();
    let agent_bin = root.join("target/release/hb-agent");
    let previous_bin = std::env::var_os(PREVIOUS_ENV).map(PathBuf::from);
    let me = std::env::current_exe()?;
    let tag = format!("hb-bench-{}", std::process::id());
    let mount = cgroup2_mount()?;
    let dir = std::env::temp_dir().join(&tag);
    fs::create_dir_all(&dir)?;

    private_netns(
        "ip addr add 203.0.113.10/32 dev lo && ip -6 addr add 2001:db8::10/128 dev lo nodad",
    )?;

    let bpffs = PathBuf::from(format!("/sys/fs/bpf/{tag}"));
    let bpffs_previous = PathBuf::from(format!("/sys/fs/bpf/{tag}-previous"));
    let mut cleanup = Cleanup {
        agent: None,
        bpffs: vec![bpffs.clone(), bpffs_previous.clone()],
        cgroups: Vec::new(),
        stats_before: fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .unwrap_or_else(|_| "0".into()),
    };
    let hb_root = mount.join(&tag);
    let rig = Rig {
        dir: dir.clone(),
        tag: tag.clone(),
        enrolled: hb_root.join("enrolled"),
        plain: mount.join(format!("{tag}-plain")),
    };
    fs::create_dir_all(&rig.enrolled)?;
    fs::create_dir_all(&rig.plain)?;
    cleanup.cgroups = vec![rig.plain.clone(), hb_root.clone(), rig.enrolled.clone()];
    let config = rig.config("hb", &bpffs)?;
    let config_previous = rig.config("previous", &bpffs_previous)?;

    cleanup.agent = Some(rig.start(&agent_bin, &config, &bpffs)?);

    // A listener that accepts and drops.
    let listener = TcpListener::bind("203.0.113.10:0")?;
    let port = listener.local_addr()?.port();
    let listener6 = TcpListener::bind("[2001:db8::10]:0")?;
    let port6 = listener6.local_addr()?.port();
    for l in [listener, listener6] {
        // std listens with a backlog of 128; a full accept queue drops SYNs and costs a
        // 1 s retransmit, which would swamp the measurement.
        // SAFETY: valid listening socket.
        unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&l), 4096) };
        thread::spawn(move || {
            pin_to_cpu0();
            for s in l.incoming() {
                drop(s)
            }
        });
    }
    let target = format!("203.0.113.10:{port}");
    let target6 = format!("[2001:db8::10]:{port6}");
    let n = CONNECTS_PER_ROUND.to_string();

    eprintln!("bench: {ROUNDS} alternating rounds of {CONNECTS_PER_ROUND} connect+close");
    let connect_rate = |cg: &Path| -> anyhow::Result<f64> {
        let ns: f64 = in_cgroup(cg, &me, &["__connect-loop", &target, &n])?
            .trim()
            .parse()?;
        Ok(CONNECTS_PER_ROUND as f64 / (ns / 1e9))
    };
    let (rate_hb, rate_plain) = alternate(ROUNDS, &rig.enrolled, &rig.plain, connect_rate)?;

    eprintln!("bench: {IPERF_ROUNDS} alternating iperf3 rounds of {IPERF_SECS} s");
    let iperf_port = (port.wrapping_add(1)).max(1024).to_string();
    let mut server = Command::new("iperf3")
        .args(["-s", "-B", "203.0.113.10", "-p", &iperf_port, "-A", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 (cargo xtask setup installs it)")?;
    thread::sleep(Duration::from_millis(300));
    let iperf = Path::new("iperf3");
    let (bw_hb, bw_plain) = alternate(IPERF_ROUNDS, &rig.enrolled, &rig.plain, |cg| {
        let out = in_cgroup(
            cg,
            iperf,
            &[
                "-c",
                "203.0.113.10",
                "-p",
                &iperf_port,
                "-t",
                IPERF_SECS,
                "-J",
            ],
        )?;
        let v: Value = serde_json::from_str(&out)?;
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .context("iperf3 JSON")
    })?;

    // The programs' own cost, from the kernel's accounting, in passes of their own: the
    // accounting itself slows every run, so the rates above were measured without it.
    // With a previous binary, the two agents take turns on the same cgroups (each on its
    // own pins) so both are measured in the same minutes.
    let targets = [target.as_str(), target6.as_str()];
    eprintln!("bench: program cost pass (kernel.bpf_stats_enabled=1)");
    let mut costs = vec![program_costs(&rig, &me, targets, &iperf_port, &bpffs)?];
    let mut costs_previous = Vec::new();
    // In each turn, before its cost pass (accounting off), the agent in place is also
    // timed beside the plain cgroup: the two agents' connect ratios come from the same
    // minutes, which the machine's swings between runs would otherwise hide.
    let turn_ratio = || -> anyhow::Result<f64> {
        let (with_agent, plain) = alternate(TURN_ROUNDS, &rig.enrolled, &rig.plain, connect_rate)?;
        Ok(with_agent / plain)
    };
    let (mut ratios, mut ratios_previous) = (Vec::new(), Vec::new());
    if let Some(previous) = &previous_bin {
        // This tree's agent is in place at the start and the end of every turn; which
        // agent is timed first alternates between turns, so drift within a turn does
        // not always favour the same one.
        for turn in 0..3 {
            let this_first = turn % 2 == 1;
            if this_first {
                eprintln!("bench: connect rate and program cost pass, this tree's agent");
                ratios.push(turn_ratio()?);
                costs.push(program_costs(&rig, &me, targets, &iperf_port, &bpffs)?);
            }
            stop_agent(&mut cleanup.agent, &bpffs);
            eprintln!(
                "bench: connect rate and program cost pass, previous agent {}",
                previous.display()
            );
            cleanup.agent = Some(rig.start(previous, &config_previous, &bpffs_previous)?);
            ratios_previous.push(turn_ratio()?);
            costs_previous.push(program_costs(
                &rig,
                &me,
                targets,
                &iperf_port,
                &bpffs_previous,
            )?);
            stop_agent(&mut cleanup.agent, &bpffs_previous);
            cleanup.agent = Some(rig.start(&agent_bin, &config, &bpffs)?);
            if !this_first {
                eprintln!("bench: connect rate and program cost pass, this tree's agent");
                ratios.push(turn_ratio()?);
                // Three cost passes of this tree in all, the first before the turns.
                if turn < 2 {
                    costs.push(program_costs(&rig, &me, targets, &iperf_port, &bpffs)?);
                }
            }
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    if cleanup.agent.is_none() {
        cleanup.agent = Some(rig.start(&agent_bin, &config, &bpffs)?);
    }
    let memlock = locked_memory(&bpffs)?;

    println!();
    println!("hb bench connect (private netns, loopback; medians)");
    println!("{:-<78}", "");
    println!(
        "{:<34} {:>12} {:>12} {:>8} {:>8}",
        "measure", "hb", "without hb", "ratio", "target"
    );
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    let r = rate_hb / rate_plain;
    println!(
        "{:<34} {:>12.0} {:>12.0} {:>8.3} {:>8} {}",
        "connect+close per second",
        rate_hb,
        rate_plain,
        r,
        ">=0.97",
        verdict(r >= 0.97)
    );
    if !ratios.is_empty() {
        println!(
            "{:<34} {:>12} {:>12} {:>8.3} (previous agent {:.3}, turns taken in the same minutes)",
            "connect+close ratio, turns",
            "",
            "",
            median(ratios),
            median(ratios_previous)
        );
    }
    let r = bw_hb / bw_plain;
    println!(
        "{:<34} {:>12.2} {:>12.2} {:>8.3} {:>8} {}",
        "iperf3 TCP throughput, Gbit/s",
        bw_hb / 1e9,
        bw_plain / 1e9,
        r,
        ">=0.95",
        verdict(r >= 0.95)
    );
    println!("{:-<78}", "");
    println!(
        "{:<26} {:>10} {:>12} {:>14} {:>8}",
        "program (kernel accounting)", "ns/run", "runs", "previous ns/run", "budget"
    );
    for (prog, budget) in PROGRAM_BUDGETS {
        let Some(per) = median_cost(&costs, prog) else {
            continue;
        };
        let runs = costs[0].iter().find(|c| c.0 == prog).map_or(0.0, |c| c.1);
        let previous = median_cost(&costs_previous, prog)
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.1}"));
        println!(
            "{:<26} {:>10.1} {:>12.0} {:>14} {:>8.0} {}",
            prog,
            per,
            runs,
            previous,
            budget,
            verdict(per.is_finite() && per <= budget)
        );
    }
    println!("{:-<78}", "");
    if costs.len() > 1 {
        println!(
            "program costs: medians of {} passes each, the two agents alternating",
            costs.len()
        );
    }
    println!(
        "maps: {ALLOW_ENTRIES} allow entries, {STATIC_CIDRS} static CIDRs, default deny list; locked memory {:.1} MiB",
        memlock / (1024.0 * 1024.0)
    );
    Ok(())
}

/// The median ns per run of `prog` over passes (`None` when no pass has it).
fn median_cost(passes: &[Vec<(&'static str, f64, f64)>], prog: &str) -> Option<f64> {
    let v: Vec<f64> = passes
        .iter()
        .filter_map(|p| p.iter().find(|c| c.0 == prog).map(|c| c.2))
        .collect();
    (!v.is_empty()).then(|| median(v))
}

/// The locked memory of the maps pinned under `bpffs`, in bytes.
fn locked_memory(bpffs: &Path) -> anyhow::Result<f64> {
    let maps: Value = serde_json::from_str(&util::output(
        Command::new("bpftool").args(["-j", "map", "show"]),
    )?)?;
    let map_ids: Vec<u64> = fs::read_dir(bpffs.join("maps"))?
        .flatten()
        .filter_map(|e| {
            let v: Value = serde_json::from_str(
                &util::output(
                    Command::new("bpftool")
                        .args(["-j", "map", "show", "pinned"])
                        .arg(e.path()),
                )
                .ok()?,
            )
            .ok()?;
            v["id"].as_u64()
        })
        .collect();
    Ok(maps
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|m| m["id"].as_u64().is_some_and(|id| map_ids.contains(&id)))
                .filter_map(|m| m["bytes_memlock"].as_f64())
                .sum()
        })
        .unwrap_or(0.0))
}

/// A DNS query for `name`, type A, with `id`.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Sequential queries: per-query latencies in µs. `unique` makes every name new (a
/// cache miss everywhere but the authoritative upstream).
fn dns_latencies(server: &str, n: usize, unique: bool, tag: &str) -> anyhow::Result<Vec<f64>> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    sock.connect(server)?;
    let mut buf = [0u8; 1500];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = if unique {
            format!("q{i}.{tag}.bench.test")
        } else {
            "cached.bench.test".to_owned()
        };
        let q = dns_query(i as u16, &name);
        let start = Instant::now();
        sock.send(&q)?;
        let got = sock
            .recv(&mut buf)
            .with_context(|| format!("no answer from {server}"))?;
        ensure!(
            got >= 12 && buf[3] & 0x0f == 0,
            "{server} answered rcode {}",
            buf[3] & 0x0f
        );
        out.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(out)
}

/// Cached-name throughput: `threads` clients, each one query in flight, for `secs`.
fn dns_rate(server: &str, threads: usize, secs: f64) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let server = server.to_owned();
            thread::spawn(move || -> anyhow::Result<u64> {
                let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
                sock.set_read_timeout(Some(Duration::from_secs(2)))?;
                sock.connect(&server)?;
                let q = dns_query(t as u16, "cached.bench.test");
                let mut buf = [0u8; 1500];
                let mut n = 0;
                while Instant::now() < deadline {
                    sock.send(&q)?;
                    sock.recv(&mut buf)?;
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h
            .join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    }
    Ok(total as f64 / secs)
}

pub(crate) fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// dnsmasq on 127.0.0.1:`port` in the foreground (no config file, no /etc/hosts), with
/// `extra` arguments; killed by the caller.
pub(crate) fn dnsmasq(port: u16, extra: &[&str]) -> anyhow::Result<Child> {
    Command::new("dnsmasq")
        .args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--no-hosts",
            "--user=root",
            "--pid-file=",
        ])
        .arg(format!("--port={port}"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting dnsmasq (cargo xtask setup installs dnsmasq-base)")
}

/// `cargo xtask bench dns`: hb's resolver vs the upstream directly vs dnsmasq as a
/// caching forwarder, all in front of the same upstream, in one private namespace.
fn dns() -> anyhow::Result<()> {
    let root = util::workspace_root();
    let agent_bin = root.join("target/release/hb-agent");
    let tag = format!("hb-bench-dns-{}", std::process::id());
    let dir = std::env::temp_dir().join(&tag);
    fs::create_dir_all(&dir)?;
    private_netns("true")?;
    let mount = cgroup2_mount()?;
    let mut cleanup = Cleanup {
        agent: None,
        bpffs: vec![PathBuf::from(format!("/sys/fs/bpf/{tag}"))],
        cgroups: vec![mount.join(&tag)],
        stats_before: fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .unwrap_or_else(|_| "0".into()),
    };
    // The upstream: answers every *.bench.test name itself, TTL 300.
    let mut upstream = dnsmasq(
        5400,
        &[
            "--no-resolv",
            "--address=/bench.test/203.0.113.10",
            "--local-ttl=300",
            "--cache-size=0",
        ],
    )?;
    // The comparison: dnsmasq as a caching forwarder to the same upstream.
    let mut forwarder = dnsmasq(
        5500,
        &[
            "--no-resolv",
            "--server=127.0.0.1#5400",
            "--cache-size=10000",
        ],
    )?;
    let config = dir.join("hb.toml");
    fs::write(
        &config,
        format!(
            r#"[agent]
state_dir = "{state}"
bpffs_dir = "{bpffs}"
cgroup_root = "{tag}"

[dns]
listen = "127.0.0.1:5300"
redirect = true
upstreams = ["127.0.0.1:5400"]

[egress]
exception_cidrs = ["203.0.113.0/24"]

[[policy]]
name = "bench"
allow_domains = ["*.bench.test"]
"#,
            state = dir.join("state").display(),
            bpffs = cleanup.bpffs[0].display(),
        ),
    )?;
    cleanup.agent = Some(start_agent(&agent_bin, &config, &dir.join("agent.log"))?);
    thread::sleep(Duration::from_millis(300));
    // The only policy has id 0, so it is served on the base port.
    let (hb, direct, fwd) = ("127.0.0.1:5300", "127.0.0.1:5400", "127.0.0.1:5500");
    const N: usize = 2000;
    eprintln!(
        "bench: {N} cache-miss queries each through hb, direct, dnsmasq (interleaved in blocks)"
    );
    let (mut hb_miss, mut direct_miss, mut fwd_miss) = (Vec::new(), Vec::new(), Vec::new());
    for block in 0..10 {
        hb_miss.extend(dns_latencies(hb, N / 10, true, &format!("h{block}"))?);
        direct_miss.extend(dns_latencies(direct, N / 10, true, &format!("d{block}"))?);
        fwd_miss.extend(dns_latencies(fwd, N / 10, true, &format!("f{block}"))?);
    }
    eprintln!("bench: cached-name latency and throughput");
    let hb_hit = dns_latencies(hb, N, false, "x")?;
    let fwd_hit = dns_latencies(fwd, N, false, "x")?;
    let direct_hit = dns_latencies(direct, N, false, "x")?;
    let hb_rate = dns_rate(hb, 4, 2.0)?;
    let fwd_rate = dns_rate(fwd, 4, 2.0)?;
    let direct_rate = dns_rate(direct, 4, 2.0)?;
    for c in [&mut upstream, &mut forwarder] {
        let _ = c.kill();
        let _ = c.wait();
    }
    drop(cleanup);

    let p = |v: &Vec<f64>, q: f64| percentile(v.clone(), q);
    println!();
    println!("hb bench dns (private netns, loopback; same dnsmasq upstream for all)");
    println!("{:-<86}", "");
    println!(
        "{:<30} {:>12} {:>12} {:>14} {:>14}",
        "measure", "hb", "direct", "dnsmasq fwd", "hb - direct"
    );
    for (label, q) in [("cache miss p50, µs", 0.5), ("cache miss p99, µs", 0.99)] {
        let (h, d, f) = (p(&hb_miss, q), p(&direct_miss, q), p(&fwd_miss, q));
        println!("{label:<30} {h:>12.1} {d:>12.1} {f:>14.1} {:>14.1}", h - d);
    }
    for (label, q) in [("cached p50, µs", 0.5), ("cached p99, µs", 0.99)] {
        let (h, d, f) = (p(&hb_hit, q), p(&direct_hit, q), p(&fwd_hit, q));
        println!("{label:<30} {h:>12.1} {d:>12.1} {f:>14.1} {:>14.1}", h - d);
    }
    println!(
        "{:<30} {:>12.0} {:>12.0} {:>14.0} {:>14}",
        "cached queries/s (4 clients)", hb_rate, direct_rate, fwd_rate, "-"
    );
    println!("{:-<86}", "");
    let added = p(&hb_miss, 0.5) - p(&direct_miss, 0.5);
    println!(
        "miss p50 added by hb: {added:.1} µs (target <= 50) {}",
        if added <= 50.0 { "ok" } else { "MISSED" }
    );
    let ratio = hb_rate / fwd_rate;
    println!(
        "cached rate hb / dnsmasq: {ratio:.2} (target >= 1.0) {}",
        if ratio >= 1.0 { "ok" } else { "MISSED" }
    );
    Ok(())
}
