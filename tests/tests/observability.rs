//! Observability and taking hb off a node: `/metrics` counts what really happened,
//! `/readyz` and `status` follow the kernel's links, and `uninstall` leaves no pin, link
//! or enrollment behind (checked with bpftool), refusing while an agent runs.

use std::{
    collections::BTreeSet,
    fs,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use hb_tests::{
    PY_PROBE, TcpProbe, TestEnv,
    metrics::{Scrape, get, try_get},
    pod_glob, private_netns, python, sandbox_probe,
    upstream::Dnsmasq,
};
use serde_json::Value;

/// `agent.metrics_listen`'s default, in the test's own network namespace.
const METRICS: &str = "127.0.0.1:9464";
const DNS_PORT: u16 = 5399;

fn config() -> String {
    format!(
        r#"
[broker]
socket_mode = "0666"

[dns]
listen = "127.0.0.1:5300"
upstreams = ["127.0.0.1:{DNS_PORT}"]

[egress]
exception_cidrs = ["203.0.113.0/24"]

[[policy]]
name = "web"
allow_domains = ["allowed.test"]
{}"#,
        pod_glob("web")
    )
}

/// Scrapes until `done` holds for the difference from `before` (5 s at most): events
/// reach the agent's counters asynchronously, through the ring buffer.
fn scrape_until(before: &Scrape, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = Scrape::fetch(METRICS);
        if done(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not counted after 5 s; before {before:?}\nnow {now:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// `POST /v1/scrub` with a body that is not JSON, as a host caller: `bad_request`.
fn broker_bad_request(env: &TestEnv) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "--unix-socket"])
        .arg(env.broker_socket())
        .args(["-X", "POST", "-d", "{", "http://hb/v1/scrub"])
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl: {:?}", out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn metrics_count_a_refused_connect_an_allowed_query_and_a_broker_error() {
    private_netns(&["10.0.0.1"]);
    let _dns = Dnsmasq::start(
        "127.0.0.1",
        DNS_PORT,
        &[("allowed.test", &["203.0.113.10"])],
        &[],
        60,
    );
    let mut env = TestEnv::new("metrics", &config());
    env.start_agent();
    let target = TcpProbe::bind("10.0.0.1:0");
    let before = Scrape::fetch(METRICS);
    assert_eq!(
        before.get("hb_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    let web_queries = |s: &Scrape| -> f64 {
        [
            "noerror", "nxdomain", "servfail", "refused", "formerr", "notimp", "other", "dropped",
        ]
        .iter()
        .map(|r| s.get("hb_dns_queries_total", &[("policy", "web"), ("result", r)]))
        .sum()
    };
    let dns_latencies = |s: &Scrape| -> f64 {
        ["cache", "local", "upstream"]
            .iter()
            .map(|p| s.get("hb_dns_query_duration_seconds_count", &[("path", p)]))
            .sum()
    };
    let refused_private = [
        ("hook", "connect4"),
        ("policy", "web"),
        ("reason", "deny_range"),
        ("verdict", "deny"),
    ];
    let scrub_bad = [
        ("endpoint", "/v1/scrub"),
        ("method", "POST"),
        ("code", "bad_request"),
    ];

    // 1. A private connect from a sandbox, refused.
    assert_eq!(
        sandbox_probe(&env, "web", "tcp", "10.0.0.1", target.addr.port()),
        "EPERM"
    );
    // 2. An allowed name, resolved through the agent.
    let out = env.sandbox_with_nameserver("web", "getent hosts allowed.test");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("203.0.113.10"),
        "allowed.test resolved: {out:?}"
    );
    // 3. A broker request that fails with a known code.
    let answer = broker_bad_request(&env);
    assert!(answer.contains("\"bad_request\""), "{answer}");

    let after = scrape_until(&before, "the refused connect", |s| {
        s.get("hb_refusals_total", &refused_private)
            > before.get("hb_refusals_total", &refused_private)
    });
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    assert_eq!(delta("hb_refusals_total", &refused_private), 1.0);
    assert_eq!(
        delta("hb_kernel_decisions_total", &[("decision", "deny_range")]),
        1.0,
        "the kernel's own count of deny-range refusals"
    );
    assert!(
        delta(
            "hb_dns_queries_total",
            &[("policy", "web"), ("result", "noerror")]
        ) >= 1.0
    );
    assert!(delta("hb_dns_redirects_total", &[]) >= 1.0);
    assert_eq!(
        web_queries(&after) - web_queries(&before),
        dns_latencies(&after) - dns_latencies(&before),
        "every query answered has its latency observed"
    );
    assert_eq!(delta("hb_broker_requests_total", &scrub_bad), 1.0);
    assert_eq!(
        delta(
            "hb_broker_request_duration_seconds_count",
            &[("endpoint", "/v1/scrub")]
        ),
        1.0
    );
    assert!(
        after.get("hb_allow_map_entries", &[("family", "ipv4")]) >= 1.0,
        "allowed.test's address is in the allow map"
    );
    assert_eq!(
        after.get("hb_ready", &[("condition", "programs_attached")]),
        1.0
    );
    assert_eq!(target.accepted(), 0);

    // The attack on the endpoint itself: a sandbox shares the host's loopback, where
    // /metrics listens; loopback is a deny range, so the connect is refused.
    assert_eq!(
        sandbox_probe(&env, "web", "tcp", "127.0.0.1", 9464),
        "EPERM",
        "a sandbox must not reach /metrics"
    );
    let attack = scrape_until(&after, "the refused loopback connect", |s| {
        s.get("hb_refusals_total", &refused_private)
            > after.get("hb_refusals_total", &refused_private)
    });
    assert_eq!(
        attack.get("hb_refusals_total", &refused_private)
            - after.get("hb_refusals_total", &refused_private),
        1.0
    );

    // No label carries a cgroup path, a pod's or test's name, or a handle.
    for (name, labels) in attack.series() {
        for value in labels.values() {
            assert!(
                !value.contains(&env.cgroup_root)
                    && !value.contains("hb-test")
                    && !value.contains("hb_cred_")
                    && !value.contains('/')
                    || value.starts_with("/v1/"),
                "{name} has label value {value:?}"
            );
        }
    }
}

#[test]
fn readyz_and_status_follow_the_links_from_start_to_a_forced_uninstall() {
    private_netns(&[]);
    let mut env = TestEnv::new("ready", &config());

    // Nothing runs, nothing is attached.
    let (code, status) = env.status(&[]);
    assert_eq!(code, 5, "{status}");
    let out = env.hb(&["status", "--wait-ready", "2"]);
    assert_eq!(out.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not ready after 2 s"), "{stderr}");
    assert!(try_get(METRICS, "/readyz").is_err(), "nothing listens yet");

    // Running, maps filled, nothing attached yet: alive, not ready, not enforcing.
    let release = env.state_dir.join("release");
    env.start_agent_held(&release);
    assert_eq!(get(METRICS, "/healthz").0, 200);
    let (code, body) = get(METRICS, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("programs_attached") && body.contains("broker_serving"),
        "{body}"
    );
    assert!(!body.contains("pods_synced"), "Kubernetes is off: {body}");
    let (code, status) = env.status(&[]);
    assert_eq!(code, 4, "{status}");
    assert_eq!(status["agent_running"], true);
    let out = env.hb(&["status", "--wait-ready", "1"]);
    assert_eq!(out.status.code(), Some(4));

    // Released: ready.
    fs::write(&release, "").expect("release");
    let out = env.hb(&["status", "--wait-ready", "30"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get(METRICS, "/readyz"), (200, "ready\n".to_owned()));

    // uninstall refuses while the agent runs, and changes nothing.
    let out = env.hb(&["uninstall"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(env.status(&[]).0, 0, "still enforcing");
    assert!(
        env.bpffs_dir
            .join("links")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some())
    );

    // Forced: the programs are detached under the running agent, which says so.
    let out = env.hb(&["uninstall", "--force", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["agent_was_running"], true);
    let (code, body) = get(METRICS, "/readyz");
    assert_eq!(code, 503);
    assert_eq!(body, "not ready: programs_attached\n");
    let (code, status) = env.status(&[]);
    assert_eq!(code, 4, "{status}");
    assert_eq!(
        Scrape::fetch(METRICS).get("hb_ready", &[("condition", "programs_attached")]),
        0.0
    );

    env.stop_agent();
    assert_eq!(env.status(&[]).0, 5);
}

/// Ids of hb's programs, links or maps that bpftool lists (`kind`: prog, link, map),
/// among `ours`.
fn bpftool_ids(kind: &str, field: &str, ours: &BTreeSet<u64>) -> BTreeSet<u64> {
    let out = Command::new("bpftool")
        .args(["-j", kind, "show"])
        .output()
        .expect("bpftool");
    assert!(out.status.success(), "bpftool {kind} show: {out:?}");
    let rows: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    rows.as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r[field].as_u64())
        .filter(|id| ours.contains(id))
        .collect()
}

/// Waits until bpftool lists none of `ours` (the kernel frees objects once their last
/// reference goes; 5 s at most).
fn assert_gone(kind: &str, field: &str, ours: &BTreeSet<u64>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = bpftool_ids(kind, field, ours);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "bpftool {kind} show still lists {left:?} after uninstall"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn uninstall_leaves_no_pin_link_or_enrollment_and_a_second_run_is_a_no_op() {
    private_netns(&["10.0.0.1"]);
    let reserved = || {
        fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports").expect("reserved ports")
    };
    let reserved_before = reserved();
    let mut env = TestEnv::new("uninstall", &config());
    env.start_agent();
    assert_ne!(
        reserved(),
        reserved_before,
        "the agent reserves its redirect ports"
    );
    let pod = env.root_pod("web");
    let target = TcpProbe::bind("10.0.0.1:0");
    let port = target.addr.port().to_string();
    let probe = |pod: &hb_tests::Pod| {
        let out = pod.run(&[python(), "-c", PY_PROBE, "tcp", "10.0.0.1", &port]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(probe(&pod), "EPERM", "enforced before");

    let status = env.hb_json(&["status"]);
    let progs: BTreeSet<u64> = status["programs"]
        .as_array()
        .expect("programs")
        .iter()
        .map(|p| p["prog_id"].as_u64().expect("prog id"))
        .collect();
    let maps: BTreeSet<u64> = env
        .hb_json(&["maps", "list"])
        .as_array()
        .expect("maps")
        .iter()
        .map(|m| m["id"].as_u64().expect("map id"))
        .collect();
    assert_eq!(bpftool_ids("prog", "id", &progs), progs);
    let links = bpftool_ids("link", "prog_id", &progs);
    assert_eq!(links, progs, "one link per program");

    // The agent stops; its links stay pinned and enforce (status 3) until uninstall.
    env.stop_agent();
    assert_eq!(env.status(&[]).0, 3);
    assert_eq!(probe(&pod), "EPERM", "enforced with no agent");

    let out = env.hb(&["uninstall", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let removed = report["removed"].as_array().expect("removed");
    let kinds = |k: &str| removed.iter().filter(|r| r["kind"] == k).count();
    assert_eq!(kinds("link"), progs.len(), "{report}");
    assert_eq!(kinds("program"), progs.len(), "{report}");
    assert!(
        removed.iter().any(|r| r["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("/maps/HB_ENROLLED"))),
        "the enrollments go with their map: {report}"
    );
    assert!(
        removed
            .iter()
            .filter(|r| r["kind"] == "link")
            .all(|r| r["note"]
                .as_str()
                .is_some_and(|n| n.starts_with("detached from cgroup id"))),
        "{report}"
    );
    assert_eq!(report["agent_was_running"], false);
    assert_eq!(kinds("reserved_ports"), 1, "{report}");
    assert_eq!(
        reserved(),
        reserved_before,
        "the ports hb reserved are given back, and only those"
    );

    // Nothing of hb's is left: no pin, no program, link or map in the kernel, nothing
    // attached to the cgroup (bpftool's own view).
    assert!(!env.bpffs_dir.exists(), "{} left", env.bpffs_dir.display());
    assert_gone("link", "prog_id", &progs);
    assert_gone("prog", "id", &progs);
    assert_gone("map", "id", &maps);
    for cmd in [["cgroup", "show"], ["cgroup", "tree"]] {
        let out = Command::new("bpftool")
            .arg("-j")
            .args(cmd)
            .arg(env.cgroup_path())
            .output()
            .expect("bpftool");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !text.contains("\"hb_"),
            "bpftool {cmd:?}: {text}"
        );
    }
    assert!(
        !env.state_dir.join("agent.json").exists(),
        "the agent's state goes too"
    );
    assert_eq!(env.status(&[]).0, 5, "hb is off this node");
    // The pod is no longer enforced: its private connect now goes through.
    assert_eq!(probe(&pod), "OK");
    assert_eq!(target.wait_accepted(1), 1);

    // Twice: nothing to remove, success.
    let out = env.hb(&["uninstall"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to remove"),
        "{out:?}"
    );
    let out = env.hb(&["uninstall", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["removed"], serde_json::json!([]));
}

#[test]
fn a_bad_metrics_address_is_a_config_error_that_names_the_key() {
    let env = TestEnv::new("badmetrics", "[[policy]]\nname = \"p\"\n");
    let text = fs::read_to_string(&env.config_path).expect("config");
    fs::write(
        &env.config_path,
        text.replacen("[agent]\n", "[agent]\nmetrics_listen = \"localhost\"\n", 1),
    )
    .expect("config");
    let out = env.hb(&["config", "check", env.config_path.to_str().expect("path")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("agent.metrics_listen (line 2)") && stderr.contains("\"localhost\""),
        "{stderr}"
    );
    let out = env.hb(&["run"]);
    assert!(!out.status.success(), "the agent refuses to start");
    assert!(!env.bpffs_dir.exists(), "and loads nothing");
}

#[test]
fn uninstall_removes_nothing_outside_a_bpf_filesystem() {
    let env = TestEnv::new("notbpffs", "[[policy]]\nname = \"p\"\n");
    let dir = env.state_dir.join("not-bpffs");
    for sub in ["links", "progs", "maps"] {
        fs::create_dir_all(dir.join(sub)).expect("mkdir");
        fs::write(dir.join(sub).join("precious"), "keep me").expect("file");
    }
    let text = fs::read_to_string(&env.config_path).expect("config");
    fs::write(
        &env.config_path,
        text.replace(
            &format!("bpffs_dir = \"{}\"", env.bpffs_dir.display()),
            &format!("bpffs_dir = \"{}\"", dir.display()),
        ),
    )
    .expect("config");
    let out = env.hb(&["uninstall"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not on a bpf filesystem"),
        "{out:?}"
    );
    for sub in ["links", "progs", "maps"] {
        assert!(
            dir.join(sub).join("precious").exists(),
            "{sub}/precious removed"
        );
    }
}
