//! `cargo xtask bench enroll`: how long a pod's cgroup is unenforced, from the kubelet's
//! `mkdir` to the cgroup's entry in the pinned enrolled map, with 1,000 pods known to
//! the agent, for the inotify path and for the periodic scan it replaces (the same agent
//! with `watch_cgroups = false`, scanning every 500 ms, `agent.rescan_interval_ms`'s
//! default), in one run; and the agent's resident memory with those 1,000 pods known
//! and enrolled.
//!
//! The API is the tests' stand-in server (`tests/fixtures/fake_apiserver.py`) on the
//! loopback of a network namespace this process makes. A creator makes one pod cgroup
//! every 5 ms (both drivers, the three QoS classes, in turn) while the measuring loop
//! looks every pending cgroup id up in the map (`bpf(BPF_MAP_LOOKUP_ELEM)` on the pin,
//! no process per look). Targets: inotify p99 ≤ 5 ms and ≥ 100× faster than the scan's
//! p99; RSS ≤ 64 MiB.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::{
    bench::{cgroup2_mount, private_netns, start_agent},
    util,
};

const PODS: usize = 1000;
const PACE: Duration = Duration::from_millis(5);
const SCAN_MS: u64 = 500;
const NODE: &str = "bench-node";

/// Kills a child on drop.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes a bench's cgroup tree, bpffs folder and state folder on drop.
struct Tree {
    cgroup: PathBuf,
    bpffs: PathBuf,
    state: PathBuf,
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.bpffs);
        remove_tree(&self.cgroup);
        let _ = fs::remove_dir_all(&self.state);
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

pub fn enroll() -> anyhow::Result<()> {
    let root = util::workspace_root();
    // `HB_AGENT_BIN` measures another build (e.g. a debug one, for a quick look).
    let agent_bin = std::env::var_os("HB_AGENT_BIN")
        .map_or_else(|| root.join("target/release/hb-agent"), PathBuf::from);
    println!("enroll: agent {}", agent_bin.display());
    private_netns("true")?;
    let api = start_api(&root.join("tests/fixtures/fake_apiserver.py"))?;
    let port = api.1;
    let _api = api.0;
    post(
        port,
        "/hb/namespace",
        r#"{"name":"bench","labels":{"hb.dev/enforce":"true"},"annotations":{"hb.dev/policy":"bench"}}"#,
    )?;
    let uids: Vec<String> = (0..PODS).map(|i| uid(i as u32)).collect();
    for (i, u) in uids.iter().enumerate() {
        post(
            port,
            "/hb/pod",
            &format!(r#"{{"uid":"{u}","name":"p{i}","namespace":"bench","node":"{NODE}"}}"#),
        )?;
    }
    let inotify = run_one(&agent_bin, port, &uids, true)?;
    let scan = run_one(&agent_bin, port, &uids, false)?;
    let (ip50, ip99, imax) = inotify.percentiles();
    let (sp50, sp99, smax) = scan.percentiles();
    println!(
        "enroll: mkdir of a pod cgroup → enrolled in the pinned map, {PODS} pod cgroups (systemd and cgroupfs, \
         3 QoS classes), {PODS} pods known"
    );
    println!(
        "  inotify (hb):                 p50 {ip50:>9.3} ms  p99 {ip99:>9.3} ms  max {imax:>9.3} ms"
    );
    println!(
        "  periodic scan every {SCAN_MS} ms: p50 {sp50:>9.3} ms  p99 {sp99:>9.3} ms  max {smax:>9.3} ms"
    );
    println!(
        "  scan p99 / inotify p99: {:.0}×  (targets: inotify p99 ≤ 5 ms, ≥ 100×)",
        sp99 / ip99.max(1e-6)
    );
    println!(
        "  the agent's own share (event or scan → map updated), mean: {:.0} µs inotify, {:.0} µs scan",
        inotify.agent_mean_us, scan.agent_mean_us
    );
    println!(
        "  agent RSS with {PODS} pods known and enrolled: {:.1} MiB inotify, {:.1} MiB scan (target ≤ 64 MiB)",
        inotify.rss_kib as f64 / 1024.0,
        scan.rss_kib as f64 / 1024.0
    );
    Ok(())
}

struct Run {
    latencies_ms: Vec<f64>,
    rss_kib: u64,
    /// The agent's own share (inotify event or scan → map updated), mean in µs, from
    /// its `kubernetes.json` histogram.
    agent_mean_us: f64,
}

impl Run {
    fn percentiles(&self) -> (f64, f64, f64) {
        let mut v = self.latencies_ms.clone();
        v.sort_by(f64::total_cmp);
        let at = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
        (at(0.5), at(0.99), v[v.len() - 1])
    }
}

fn run_one(agent_bin: &Path, port: u16, uids: &[String], inotify: bool) -> anyhow::Result<Run> {
    let tag = format!(
        "hb-bench-enroll-{}-{}",
        if inotify { "inotify" } else { "scan" },
        std::process::id()
    );
    let mount = cgroup2_mount()?;
    let tree = Tree {
        cgroup: mount.join(&tag),
        bpffs: PathBuf::from(format!("/sys/fs/bpf/{tag}")),
        state: std::env::temp_dir().join(&tag),
    };
    fs::create_dir_all(&tree.state)?;
    let kubeconfig = tree.state.join("kubeconfig");
    fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: b\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: b\n  user:\n    token: bench\ncontexts:\n- name: b\n  context:\n    cluster: b\n    user: b\ncurrent-context: b\n"
        ),
    )?;
    let config = tree.state.join("hb.toml");
    fs::write(
        &config,
        format!(
            r#"
[agent]
state_dir = "{state}"
master_key_file = "{state}/master.key"
bpffs_dir = "{bpffs}"
cgroup_root = "{tag}"

[broker]
socket = "{state}/broker.sock"

[dns]
listen = "127.0.0.1:5300"

[[policy]]
name = "bench"

[kubernetes]
enabled = true
node_name = "{NODE}"
kubeconfig = "{kubeconfig}"
watch_cgroups = {inotify}
rescan_interval_ms = {rescan}
"#,
            state = tree.state.display(),
            bpffs = tree.bpffs.display(),
            kubeconfig = kubeconfig.display(),
            rescan = if inotify { 60_000 } else { SCAN_MS },
        ),
    )?;
    let agent = Kill(start_agent(
        agent_bin,
        &config,
        &tree.state.join("agent.log"),
    )?);
    let stats = tree.state.join("kubernetes.json");
    wait_for(
        Duration::from_secs(60),
        "the agent to know every pod",
        || {
            fs::read_to_string(&stats).is_ok_and(|t| {
                t.contains(&format!("\"pods_enforced\": {PODS}"))
                    && t.contains("\"initial_sync_done\": true")
            })
        },
    )?;
    let map = PinnedMap::open(&tree.bpffs.join("maps/HB_ENROLLED"))?;
    let base = tree.cgroup.clone();
    let uids_owned = uids.to_vec();
    // The creator: one pod cgroup every PACE; sends (cgroup id, mkdir instant).
    let (tx, rx) = std::sync::mpsc::channel::<(u64, Instant)>();
    let creator = thread::spawn(move || -> anyhow::Result<()> {
        let mut next = Instant::now();
        for (i, u) in uids_owned.iter().enumerate() {
            let dir = base.join(pod_cgroup(i, u));
            thread::sleep(next.saturating_duration_since(Instant::now()));
            next += PACE;
            let t0 = Instant::now();
            fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
            let id = fs::metadata(&dir)?.ino();
            tx.send((id, t0))?;
        }
        Ok(())
    });
    let mut pending: Vec<(u64, Instant)> = Vec::new();
    let mut latencies_ms = Vec::with_capacity(uids.len());
    let deadline = Instant::now() + Duration::from_secs(120);
    while latencies_ms.len() < uids.len() {
        ensure!(
            Instant::now() < deadline,
            "not every pod cgroup was enrolled within 120 s"
        );
        pending.extend(rx.try_iter());
        pending.retain(|(id, t0)| {
            if map.contains(*id) {
                latencies_ms.push(t0.elapsed().as_secs_f64() * 1e3);
                false
            } else {
                true
            }
        });
        thread::yield_now();
    }
    match creator.join() {
        Ok(r) => r?,
        Err(_) => bail!("creator thread panicked"),
    }
    let rss_kib = fs::read_to_string(format!("/proc/{}/status", agent.0.id()))?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS")?;
    let agent_mean_us = wait_stats_mean(&stats)?;
    drop(agent);
    Ok(Run {
        latencies_ms,
        rss_kib,
        agent_mean_us,
    })
}

/// The mean of the agent's enrollment latency histogram once it counts every pod.
fn wait_stats_mean(stats: &Path) -> anyhow::Result<f64> {
    let mut mean = 0.0;
    wait_for(
        Duration::from_secs(10),
        "the agent's latency histogram",
        || {
            let v: serde_json::Value = fs::read_to_string(stats)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            let l = &v["enroll_latency_us"];
            let (sum, count) = (
                l["sum_us"].as_f64().unwrap_or(0.0),
                l["count"].as_f64().unwrap_or(0.0),
            );
            mean = sum / count.max(1.0);
            count >= PODS as f64
        },
    )?;
    Ok(mean)
}

fn wait_for(limit: Duration, what: &str, mut pred: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !pred() {
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Pod `i`'s cgroup: the kubelet's layouts, both drivers and the three QoS classes in turn.
fn pod_cgroup(i: usize, uid: &str) -> String {
    let under = uid.replace('-', "_");
    match i % 6 {
        0 => format!("kubepods.slice/kubepods-pod{under}.slice"),
        1 => format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{under}.slice"),
        2 => {
            format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{under}.slice")
        }
        3 => format!("kubepods/pod{uid}"),
        4 => format!("kubepods/burstable/pod{uid}"),
        _ => format!("kubepods/besteffort/pod{uid}"),
    }
}

/// A uid per pod, unique per run.
fn uid(i: u32) -> String {
    format!("{:08x}-0000-4000-a000-{:012x}", std::process::id(), i)
}

fn start_api(script: &Path) -> anyhow::Result<(Kill, u16)> {
    let mut child = Command::new("python3")
        .arg(script)
        .stdout(Stdio::piped())
        .spawn()
        .context("python3 fake_apiserver.py")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let port = line.trim().parse().context("fake API server's port")?;
    Ok((Kill(child), port))
}

fn post(port: u16, path: &str, body: &str) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    ensure!(text.starts_with("HTTP/1.1 200"), "{path}: {text}");
    Ok(())
}

/// A pinned BPF map with u64 keys, looked up by the `bpf` syscall.
struct PinnedMap(OwnedFd);

impl PinnedMap {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
        // union bpf_attr for BPF_OBJ_GET (7): pathname, bpf_fd, file_flags.
        #[repr(C)]
        struct ObjGet {
            pathname: u64,
            bpf_fd: u32,
            file_flags: u32,
        }
        let attr = ObjGet {
            pathname: c.as_ptr() as u64,
            bpf_fd: 0,
            file_flags: 0,
        };
        // SAFETY: bpf(BPF_OBJ_GET) reads `attr` and the path it points at.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, 7, &raw const attr, size_of::<ObjGet>()) };
        ensure!(
            fd >= 0,
            "open {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        // SAFETY: a new descriptor we own.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    fn contains(&self, key: u64) -> bool {
        // union bpf_attr for BPF_MAP_LOOKUP_ELEM (1).
        #[repr(C)]
        struct Lookup {
            map_fd: u32,
            _pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        let mut value = [0u8; 8];
        let attr = Lookup {
            map_fd: self.0.as_raw_fd() as u32,
            _pad: 0,
            key: (&raw const key) as u64,
            value: (&raw mut value) as u64,
            flags: 0,
        };
        // SAFETY: reads the 8-byte key, writes the 8-byte value (HB_ENROLLED's sizes).
        unsafe { libc::syscall(libc::SYS_bpf, 1, &raw const attr, size_of::<Lookup>()) == 0 }
    }
}
