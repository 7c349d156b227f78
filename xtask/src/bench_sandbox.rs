//! `cargo xtask bench sandbox`: how long `hb-agent sandbox run -- /bin/true` takes from
//! start to finish, beside bubblewrap with comparable confinement and `unshare` alone,
//! in one run, taking turns, as medians and ratios.
//!
//! hb's side is everything a run does: cgroup made and enrolled in the pinned map,
//! limits written, the init cloned into new pid/mount/IPC/cgroup namespaces, session,
//! capabilities, user, no_new_privs, Landlock, seccomp, exec, then the cgroup removed
//! and the enrollment dropped. bwrap gets the closest options it has (new pid, IPC and
//! mount namespaces, a new session, a read-only root with its own /tmp, /proc and /dev,
//! every capability dropped, uid 1000 in a user namespace); `unshare` only the
//! namespaces. Targets: hb within 1.5× of bwrap, and under 10 ms. hb also runs once more
//! without limits, which bwrap does not set: the difference is what the limits cost.

use std::{
    fs,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, ensure};

use crate::{
    bench::{cgroup2_mount, private_netns, start_agent},
    util,
};

const RUNS: usize = 200;

/// One way of running /bin/true confined.
struct Contender {
    name: &'static str,
    cmd: Command,
}

pub fn sandbox() -> anyhow::Result<()> {
    let root = util::workspace_root();
    let agent_bin = root.join("target/release/hb-agent");
    let tag = format!("hb-bench-sandbox-{}", std::process::id());
    let dir = std::env::temp_dir().join(&tag);
    fs::create_dir_all(&dir)?;
    private_netns("true")?;
    let bpffs = format!("/sys/fs/bpf/{tag}");
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

[broker]
socket = "{state}/broker.sock"

[dns]
listen = "127.0.0.1:5300"

[[policy]]
name = "bench"
allow_domains = []
"#,
            state = dir.display(),
        ),
    )?;
    // The same agent's config without limits: on hosts whose controllers are in cgroup
    // v1 hierarchies (hybrid), joining them costs the kernel an RCU grace period per
    // write, which CLONE_INTO_CGROUP avoids on the v2 tree; bwrap sets no limits at all.
    let unlimited = dir.join("hb-unlimited.toml");
    fs::write(
        &unlimited,
        format!(
            "{}\n[sandbox_defaults]\npids_max = 0\nmemory_max = \"\"\n",
            fs::read_to_string(&config)?
        ),
    )?;
    let mut agent = Stop(Some(start_agent(
        &agent_bin,
        &config,
        &dir.join("agent.log"),
    )?));
    let hb_true = |bin: &std::path::Path, config: &std::path::Path| {
        let mut c = Command::new(bin);
        c.arg("--config").arg(config).args([
            "sandbox",
            "run",
            "--policy",
            "bench",
            "--",
            "/bin/true",
        ]);
        c
    };
    let mut contenders = vec![
        Contender {
            name: "hb",
            cmd: hb_true(&agent_bin, &config),
        },
        Contender {
            name: "hb-nolim",
            cmd: hb_true(&agent_bin, &unlimited),
        },
        Contender {
            name: "bwrap",
            cmd: {
                let mut c = Command::new("bwrap");
                c.args([
                    "--unshare-pid",
                    "--unshare-ipc",
                    "--unshare-user",
                    "--uid",
                    "1000",
                    "--gid",
                    "1000",
                    "--new-session",
                    "--die-with-parent",
                    "--ro-bind",
                    "/",
                    "/",
                    "--tmpfs",
                    "/tmp",
                    "--proc",
                    "/proc",
                    "--dev",
                    "/dev",
                    "--cap-drop",
                    "ALL",
                    "--",
                    "/bin/true",
                ]);
                c
            },
        },
        Contender {
            name: "unshare",
            cmd: {
                let mut c = Command::new("unshare");
                c.args(["--pid", "--fork", "--mount", "--ipc", "--", "/bin/true"]);
                c
            },
        },
    ];
    // `--previous BIN`: that build's `sandbox run`, with limits, beside this one's (the
    // agent stays this build's: the pinned maps it reads are the same).
    let previous = std::env::var_os(crate::bench::PREVIOUS_ENV).map(std::path::PathBuf::from);
    if let Some(bin) = &previous {
        contenders.push(Contender {
            name: "previous",
            cmd: hb_true(bin, &config),
        });
    }
    for c in &mut contenders {
        c.cmd.stdin(Stdio::null()).stdout(Stdio::null());
        let status = c
            .cmd
            .status()
            .with_context(|| format!("running {}", c.name))?;
        ensure!(status.success(), "{} -- /bin/true failed: {status}", c.name);
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    for round in 0..RUNS {
        // A different one goes first each round, so drift hits all alike.
        for k in 0..contenders.len() {
            let i = (round + k) % contenders.len();
            let start = Instant::now();
            let status = contenders[i].cmd.status()?;
            times[i].push(start.elapsed().as_secs_f64() * 1e3);
            ensure!(status.success(), "{} failed: {status}", contenders[i].name);
        }
    }
    agent.stop();
    let cgroups = cgroup2_mount()?.join(&tag);
    let _ = fs::remove_dir(cgroups.join("sandboxes"));
    let _ = fs::remove_dir(&cgroups);
    let _ = fs::remove_dir_all(&bpffs);
    let _ = fs::remove_dir_all(&dir);
    let medians: Vec<f64> = times.into_iter().map(median).collect();
    println!("sandbox start-to-exit of /bin/true, median of {RUNS} runs each, taking turns:");
    for (c, m) in contenders.iter().zip(&medians) {
        println!("  {:<8} {m:7.2} ms", c.name);
    }
    let (hb, unlimited, bwrap, unshare) = (medians[0], medians[1], medians[2], medians[3]);
    println!(
        "hb / bwrap = {:.2} (target <= 1.5: {}), hb = {hb:.2} ms (target < 10 ms: {}), hb / unshare = {:.2}",
        hb / bwrap,
        verdict(hb / bwrap <= 1.5),
        verdict(hb < 10.0),
        hb / unshare
    );
    println!(
        "without limits (as bwrap runs): hb / bwrap = {:.2}, hb = {unlimited:.2} ms; the limits cost {:.2} ms here",
        unlimited / bwrap,
        hb - unlimited
    );
    if let Some(&before) = medians.get(4) {
        println!(
            "previous build (--previous), with limits: {before:.2} ms, hb / bwrap = {:.2}; this build / previous = {:.2}",
            before / bwrap,
            hb / before
        );
    }
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The agent, killed when the benchmark ends however it ends.
struct Stop(Option<std::process::Child>);

impl Stop {
    fn stop(&mut self) {
        if let Some(mut a) = self.0.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        self.stop();
    }
}
