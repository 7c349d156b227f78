//! A fifty-first attack review, run as the processes of two enforced Kubernetes pods,
//! each in a network namespace of its own (root inside, arbitrary Python), against the
//! real agent and kernel, with the recorded-API stand-in, dnsmasq and a listener on the
//! test namespace's `lo` (`hb_tests::kube_cluster`). Each test prints a `figure:` line.
//!
//! Angle: the kernel's bounded maps under a flood from a pod, read for what another
//! tenant loses (attack review 48 closed this for `sandbox run` sandboxes, whose sockets
//! in the host's namespace are bounded by `sockets_max`).
//!
//! Found (fails against 061f73e):
//! - the guard's flow records (`HB_GUARD_CONNS`, client end → original destination, an
//!   LRU of 65,536 for the node) live as long as their client end, and nothing bounded
//!   how many one tenant holds: a pod's sockets in its own namespace are counted by no
//!   socket bound. A pod (policy `web`) that holds 70,000 guarded connects open without
//!   writing (non-blocking, sources spread over four loopback addresses) pushed out the
//!   record of another pod's (policy `rawok`) connection that had connected and not
//!   written yet: the guard closed it when its request came (fail closed, but the victim
//!   lost service: on 061f73e its request read `closed`). Now each enrolled cgroup's
//!   records are counted (`HB_GUARD_HELD`) and a guarded connect of a cgroup holding as
//!   many as are free of
//!   `limits::GUARD_FLOWS_FILED` (57,344, seven eighths of the map) is refused (EPERM,
//!   event `guard_flows_full`): the flooding pod opened 28,673 and was refused 41,327,
//!   the victim's record stayed and its request was answered 200; the count went back
//!   to 0 once the flood's connections closed
//!   ([`a_pods_unwritten_guarded_connections_leave_another_pods_waiting_connection`]).
//! - `HB_DNS_CONNS` (TCP DNS, the same shape) was removed only by the resolver when it
//!   accepted: a connect it never accepted left its record behind for good. A pod that
//!   opened 70,000 TCP DNS connects in its namespace (the resolver's accept queue full
//!   past the first few thousand) and closed them left 24,534 records in the node's
//!   LRU, all still there 4 minutes later (on 061f73e); enough such rounds push out
//!   other tenants' records of connections waiting in the resolver's accept queue,
//!   which it then closes. Now `sock_ops` removes a record when its client end closes
//!   (the state callback, as for the guard's since attack review 48): 0 left once the
//!   last orphan retrying its FIN died (~2 minutes on loopback)
//!   ([`a_pods_unaccepted_tcp_dns_connects_leave_no_records_behind`]).
//!
//! Held (read, not run as tests here):
//! - `HB_ALLOW4`/`HB_ALLOW6`: each policy has a share (`max_ips_per_policy`, default an
//!   eighth of the map: 8 policies' full shares fill it); one tenant's (policy's)
//!   sandboxes take at most their share, so one tenant alone cannot fill the map; with
//!   more than 8 policies all filling their shares, an answer that finds the map full is
//!   SERVFAIL with a `dns_allow_map_full` event (`dns/learned.rs`), never a silent
//!   drop; a row's expiry is judged by the kernel (`expiry > now`), so a row the
//!   collector has not removed yet admits nothing past its TTL.
//!
//! Still open or weak:
//! - `HB_DNS_CONNS` has no share per cgroup yet: a pod *holding* ~65,000 TCP DNS
//!   connects open (the resolver's accept queue full, so most never accepted) could
//!   still push out another tenant's record of a connection waiting in the resolver's
//!   accept queue (fail closed: closed unanswered; not run). The guard's count
//!   (`HB_GUARD_HELD`) would carry over. A UDP datagram whose `HB_DNS_UDP` record the
//!   LRU forgot is charged to cgroup 0 (attack review 45).
//! - a pod's closed guarded or TCP DNS connections that its server never took linger as
//!   orphans retrying their FIN for about two minutes, and keep their records (and
//!   their count) as long.
//! - the count per cgroup trusts the socket's record for the cgroup to give back to; a
//!   connected socket handed to a process of another enrolled cgroup that calls
//!   `connect` again (EISCONN) rewrites that record, so its close is given back to the
//!   other cgroup (bounded by one per such socket; not run).
//! - the LRU's margin (an eighth of the map) covers per-CPU free lists of up to 64 CPUs;
//!   on larger nodes the agent now creates the map larger by 128 entries a CPU
//!   (`loader::guard_flow_entries`; a unit test, no machine here has more than 64).

use std::{fs, thread, time::Duration};

use hb_tests::{
    TcpProbe,
    kube::{Driver, FakePod, PinnedMap, Qos, wait_until},
    kube_cluster::{Cluster, NODE, PodNetns},
    python,
};

/// The victim: connects to `allowed.test:80` (guarded), prints `connected`, waits for a
/// line on stdin, then a GET on that connection: prints its status line.
const VICTIM_PY: &str = r#"
import socket, sys
a = socket.getaddrinfo("allowed.test", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
s = socket.create_connection((a, 80), timeout=10)
print("connected %s:%d" % s.getpeername(), flush=True)
sys.stdin.readline()
try:
    s.sendall(b"GET /victim HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
    print("status " + (s.recv(4096).split(b"\r\n")[0].decode() or "closed"), flush=True)
except OSError as e:
    print("status " + type(e).__name__, flush=True)
"#;

/// The attacker: `argv[1]` TCP connects to `argv[2]:argv[3]` held open without writing (non-blocking; sources
/// 127.0.0.2–5, the port chosen at connect), over 5 processes (a process may hold 20,000
/// descriptors here: no `CAP_SYS_RESOURCE`); prints `opened O refused R`, then holds them
/// until a line on stdin.
const FLOOD_PY: &str = r#"
import os, signal, socket, sys, time
N, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
a = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
W, t = 5, time.time()
report_r, report_w = os.pipe()
hold_r, hold_w = os.pipe()
for w in range(W):
    if os.fork() == 0:
        os.close(hold_w)
        held, refused = [], 0
        for i in range(w, N, W):
            s = socket.socket()
            s.setsockopt(socket.IPPROTO_IP, 24, 1)  # IP_BIND_ADDRESS_NO_PORT
            s.bind(("127.0.0.%d" % (2 + i % 4), 0))
            s.setblocking(False)
            e = s.connect_ex((a, port))
            if e in (0, 115):
                held.append(s)
            else:
                refused += 1
                s.close()
        os.write(report_w, b"%d %d\n" % (len(held), refused))
        os.read(hold_r, 1)
        os._exit(0)
os.close(hold_r)
signal.alarm(240)  # a worker that died would leave the count unread
lines = b""
while lines.count(b"\n") < W:
    lines += os.read(report_r, 4096)
nums = [int(x) for x in lines.split()]
opened, refused = sum(nums[0::2]), sum(nums[1::2])
signal.alarm(0)
print("opened %d refused %d in %.1f s" % (opened, refused, time.time() - t), flush=True)
sys.stdin.readline()
"#;

/// A pod of `policy` in a network namespace of its own, served (its listeners open).
struct Pod {
    dir: std::path::PathBuf,
    netns: PodNetns,
    _pause: hb_tests::kube_cluster::Sleeper,
}

fn served_pod(c: &Cluster, name: &str, policy: &str, served: u64) -> Pod {
    let pod = FakePod::new(name, "agents", NODE, Some(policy));
    c.add_enforced_pod(&pod);
    let dir = c.pod_dir(Driver::Systemd, Qos::Burstable, &pod.uid);
    fs::create_dir_all(&dir).expect("pod cgroup");
    c.wait_enrolled(&dir, policy);
    let netns = PodNetns::new();
    let pause = netns.pause_in(&dir.join(hb_tests::kube::container_cgroup(Driver::Systemd)));
    c.wait_stat("pod namespace served", |s| {
        s["netns_served"].as_u64() >= Some(served)
    });
    Pod {
        dir,
        netns,
        _pause: pause,
    }
}

/// A pod (`web`) holds 70,000 guarded connects open without writing while another pod
/// (`rawok`), in a namespace of its own, holds one connection that has not written yet:
/// the victim's request is still answered.
#[test]
fn a_pods_unwritten_guarded_connections_leave_another_pods_waiting_connection() {
    let c = Cluster::start("r51flows");
    let web = TcpProbe::bind("203.0.113.10:80");
    let attacker = served_pod(&c, "flood", "web", 1);
    let victim_pod = served_pod(&c, "victim", "rawok", 2);

    let mut victim = victim_pod.netns.spawn_in_pod(
        Driver::Systemd,
        &victim_pod.dir,
        &[python(), "-c", VICTIM_PY],
    );
    let before = victim.line();
    println!("victim: {before}");
    assert_eq!(
        before, "connected 203.0.113.10:80",
        "the victim's connection"
    );

    let mut flooder = attacker.netns.spawn_in_pod(
        Driver::Systemd,
        &attacker.dir,
        &[python(), "-c", FLOOD_PY, "70000", "allowed.test", "80"],
    );
    let flooded = flooder.line();
    println!("flood: {flooded}");
    thread::sleep(Duration::from_millis(500));
    let records = c
        .env
        .hb_json(&["maps", "dump", "guard"])
        .as_array()
        .map_or(0, Vec::len);
    victim.go();
    let status = victim.line();
    println!(
        "figure: the victim's request after a pod's 70,000 unwritten guarded connects ({flooded}, {records} flow records): {status}"
    );
    assert_eq!(
        status,
        "status HTTP/1.1 200 OK",
        "another pod's flood of unwritten guarded connections cost the victim its waiting connection\n{}",
        c.log()
    );
    assert!(
        web.wait_accepted(1) >= 1,
        "the victim's request reached the allowed upstream"
    );
    // The attacker's refusals are reported, under its own cgroup.
    let refused = c.env.wait_event("guard_flows_full", |e| {
        e["reason"] == "guard_flows_full"
            && e["cgroup_id"] == hb_tests::kube::cgroup_id(&attacker.dir)
    });
    println!("refusal: {refused}");
    // Every record counted is given back once the connections closed: the flood leaves
    // no share behind (key 0: all cgroups together).
    let held = PinnedMap::open(&c.env.map_pin("HB_GUARD_HELD"));
    let count = |key: u64| {
        held.get_u64_key(key)
            .map_or(0, |(lo, hi)| u64::from(lo) | u64::from(hi) << 32)
    };
    drop(flooder);
    let states = || {
        let out = attacker.netns.run(&["ss", "-Htan"]);
        let mut by: std::collections::BTreeMap<String, usize> = Default::default();
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let state = l.split_whitespace().next().unwrap_or("").to_owned();
            *by.entry(state).or_default() += 1;
        }
        by
    };
    wait_until(Duration::from_secs(10), || count(0) == 0);
    println!("after 10 s: {} counted, sockets {:?}", count(0), states());
    let drained = wait_until(Duration::from_secs(240), || count(0) == 0);
    println!(
        "figure: guard flow records counted after the pods' connections closed: {} (attacker's cgroup {}), sockets {:?}",
        count(0),
        count(hb_tests::kube::cgroup_id(&attacker.dir)),
        states()
    );
    assert!(
        drained,
        "counted records left after every connection closed"
    );
}

/// A pod opens 70,000 TCP DNS connects without writing (more than the resolver takes
/// before its accept queue is full), then closes them all: the kernel's records of them
/// (`HB_DNS_CONNS`) go with their client ends, as the guard's do.
#[test]
fn a_pods_unaccepted_tcp_dns_connects_leave_no_records_behind() {
    let c = Cluster::start("r51dns");
    let attacker = served_pod(&c, "flood", "web", 1);
    let mut flooder = attacker.netns.spawn_in_pod(
        Driver::Systemd,
        &attacker.dir,
        &[python(), "-c", FLOOD_PY, "70000", "192.0.2.53", "53"],
    );
    let flooded = flooder.line();
    println!("flood: {flooded}");
    drop(flooder);
    let records = || {
        c.env
            .hb_json(&["maps", "dump", "dns_conns"])
            .as_array()
            .map_or(0, Vec::len)
    };
    wait_until(Duration::from_secs(30), || records() == 0);
    println!("after 30 s: {} records", records());
    // A connection the resolver never took ends as an orphan retrying its FIN (about
    // two minutes on loopback): its record goes when it does.
    let gone = wait_until(Duration::from_secs(240), || records() == 0);
    println!(
        "figure: TCP DNS records left after a pod closed its 70,000 connects ({flooded}): {}",
        records()
    );
    assert!(gone, "records of closed connections stay in HB_DNS_CONNS");
}
