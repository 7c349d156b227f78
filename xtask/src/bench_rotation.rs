//! `cargo xtask bench rotation`: broker calls through a live handle while rotations run
//! back to back, against the same calls with no rotation, taking turns in one run; and
//! how long a rotation takes from its trigger (an operator's, or the `expiry` detector
//! firing) to the new credential being ACTIVE.
//!
//! The world is the rotation tests' own (`hb_tests::provider`): a private network
//! namespace, a test CA, the fake provider on `provider.test` (mints and revokes keys,
//! honours `Idempotency-Key`, keeps each key's minting time), dnsmasq, and an agent
//! rotating `svc/bot` through the provider's HTTP API. The upstream the calls go to is
//! here, in Rust, so the figures measure hb rather than a Python server: `api.test:8080`
//! accepts exactly the keys the provider's store holds — at `step=verify` (the rotation's
//! test and watch) at once, at `step=load` (the callers) only [`propagation`] after the
//! key was minted. So a call that meets a new key too early is retried by the broker
//! with the previous one, as with a provider that takes a while to make a key valid
//! everywhere, and the time to ACTIVE excludes that wait.
//!
//! Callers are keep-alive host callers of the broker (as in `bench broker`), all with
//! one handle issued before any rotation. Rounds alternate: in a rotating round the
//! bench triggers rotations one after the other (`POST /v1/rotations`, each followed to
//! its `retired` step in the audit log: create, test, finish, watch, the old key's
//! grace, its revocation at the provider); a quiet round lasts as long with no rotation.
//! Then a second integration, `sweep`, whose keys have `max_age_secs = 1`, is given a
//! key and its `expiry` detector rotates it again and again: the time from each
//! `detector` audit record to the rotation's `finished` record (milliseconds in the
//! audit log) is the detector-to-ACTIVE time.

use std::{
    collections::{HashMap, HashSet},
    fs,
    io::{self, BufRead, BufReader, Read as _, Seek as _, SeekFrom, Write as _},
    net::TcpListener,
    os::unix::{fs::MetadataExt as _, net::UnixStream},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail, ensure};
use hb_tests::{
    provider::{self, API_ADDR, KeyApi, Provider},
    upstream::FakeProvider,
};
use serde_json::Value;

use crate::{
    bench::percentile,
    bench_broker::{Caller, exchange_response},
};

const DNS_PORT: u16 = 5410;
const UPSTREAM_PORT: u16 = 8080;
/// The account the callers use (its key at the start).
const OLD: &str = "key-old-0f1e2d3c4b5a69788796a5b4c3d2e1f0";
/// The `sweep` account's first key (the detector phase).
const SWEEP_OLD: &str = "key-sweep-00112233445566778899aabbccddeeff";
const ADMIN: &str = "adm-f0e1d2c3b4a5968778695a4b3c2d1e0f";
/// How long after its minting the upstream refuses a key to the callers: 2 s, or
/// `HB_BENCH_ROTATION_PROPAGATION_SECS` (0: a provider whose new keys work everywhere at
/// once, so no call is retried).
fn propagation() -> Duration {
    static SECS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    Duration::from_secs(*SECS.get_or_init(|| {
        std::env::var("HB_BENCH_ROTATION_PROPAGATION_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2)
    }))
}
/// The environment variable that selects the small run (`cargo xtask bench --smoke`).
pub const SMOKE_ENV: &str = "HB_BENCH_SMOKE";

/// How much the bench does.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Rotating rounds (as many quiet ones, alternating).
    pub rounds: usize,
    /// Rotations back to back in each rotating round.
    pub rotations_per_round: usize,
    /// Concurrent callers.
    pub callers: usize,
    /// Rotations by the `expiry` detector.
    pub detector_rotations: usize,
}

impl Size {
    pub const FULL: Self = Self {
        rounds: 10,
        rotations_per_round: 2,
        callers: 8,
        detector_rotations: 20,
    };
    /// What the bench's test runs: it proves the bench works, and measures little.
    pub const SMOKE: Self = Self {
        rounds: 1,
        rotations_per_round: 1,
        callers: 2,
        detector_rotations: 2,
    };
}

/// What a run measured.
#[derive(Debug)]
pub struct Figures {
    /// Index 0: rotating rounds; 1: quiet rounds.
    pub latencies_us: [Vec<f64>; 2],
    pub failed: [u64; 2],
    /// Up to five failures, described.
    pub failures: Vec<String>,
    pub secs: [f64; 2],
    /// Calls the upstream saw beyond the callers' own: the broker's retries with the
    /// previous key while a new one propagated.
    pub propagation_retries: u64,
    /// Operator trigger → ACTIVE, ms, one per rotation under load.
    pub trigger_ms: Vec<f64>,
    /// `expiry` detector firing → ACTIVE, ms.
    pub detector_ms: Vec<f64>,
}

/// `xtask __bench-one rotation`.
pub fn rotation() -> anyhow::Result<()> {
    let size = if std::env::var_os(SMOKE_ENV).is_some() {
        Size::SMOKE
    } else {
        Size::FULL
    };
    let load_before = loadavg();
    let f = run(&size)?;
    print(&size, &f, &load_before, &loadavg());
    Ok(())
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Phases the callers read before each call.
const WARMUP: u8 = 0;
const ROTATING: u8 = 1;
const QUIET: u8 = 2;
const STOP: u8 = 3;

/// Sets up the world, runs the rounds and the detector phase, and tears it down.
pub fn run(size: &Size) -> anyhow::Result<Figures> {
    let name = "rotbench";
    let mut p = Provider::start(
        name,
        DNS_PORT,
        Some(KeyApi {
            admin: ADMIN,
            keys: &[OLD, SWEEP_OLD],
            hang_secs: 5.0,
        }),
    );
    let keys_api = p.keys_api.take().context("the key API")?;
    let live = Arc::new(LiveKeys::new(keys_api.keys_path(), keys_api.born_path()));
    let listener = TcpListener::bind((API_ADDR, UPSTREAM_PORT))?;
    let counts = Arc::new(UpstreamCounts::default());
    {
        let (live, counts) = (live.clone(), counts.clone());
        thread::spawn(move || serve_upstream(listener, &live, &counts));
    }
    let mut env = provider::agent_env(name, &config(&p));
    env.vault_put("svc", "bot", OLD);
    env.vault_put("provider", "admin", ADMIN);
    eprintln!("bench: starting the agent");
    env.start_agent();
    let socket = env.broker_socket();
    let mut audit = AuditLog::new(env.state_dir.join("audit.log"));
    let figures = under_load(size, &socket, &mut audit, &keys_api, &counts).and_then(|mut f| {
        env.vault_put("sweep", "bot", SWEEP_OLD);
        f.detector_ms = detector_phase(size, &mut audit, &keys_api)?;
        Ok(f)
    });
    let _ = fs::copy(env.state_dir.join("audit.log"), "/tmp/rotbench-audit.log");
    let _ = fs::write("/tmp/rotbench-agent.log", env.agent().log_text());
    let _ = fs::copy(
        p.dir.join("provider/provider.jsonl"),
        "/tmp/rotbench-provider.jsonl",
    );
    drop(env);
    drop(keys_api);
    let _ = fs::remove_dir_all(&p.dir);
    figures
}

/// The agent config: `svc` rotated by the bench's triggers, `sweep` by its age.
fn config(p: &Provider) -> String {
    let upstream = format!("http://api.test:{UPSTREAM_PORT}");
    let integration = |name: &str, rotation: &str| {
        format!(
            r#"
[[integration]]
name = "{name}"
auth = "bearer"
hosts = ["api.test"]
schemes = ["http"]
ports = [{UPSTREAM_PORT}]
methods = ["GET"]
verify_url = "{upstream}/keys?step=verify"
propagation_secs = {propagation}

[integration.rotation]
watch_secs = 1
retry_base_secs = 1
retry_cap_secs = 2
timeout_secs = 5
spike_hard_cap = 0
max_rotations_per_day = 10000
{rotation}

[integration.rotation.http]
url = "https://provider.test/v1/keys"
auth = {{ integration = "provider", account = "admin" }}
secret_pointer = "/data/secret"
"#,
            // Whole seconds, from the switch: past the upstream's delay from the minting.
            propagation = propagation().as_secs() + 1,
        )
    };
    format!(
        r#"{head}{svc}{sweep}
[[integration]]
name = "provider"
auth = "bearer"
hosts = ["provider.test"]
methods = ["POST"]

[[policy]]
name = "bench"
integrations = ["svc"]
"#,
        head = p.config_head(
            "host_policy = \"bench\"\nhandle_ttl_secs = 3600\nmax_connections = 256\n\
             max_connections_per_caller = 128"
        ),
        // The old key stays usable past the propagation retries' window.
        svc = integration(
            "svc",
            &format!("grace_secs = {}", propagation().as_secs() + 2)
        ),
        sweep = integration(
            "sweep",
            "grace_secs = 1\nmax_age_secs = 1\ncooldown_secs = 0"
        ),
    )
}

/// The rounds: callers throughout, rotations in every other round.
fn under_load(
    size: &Size,
    socket: &Path,
    audit: &mut AuditLog,
    keys_api: &FakeProvider,
    counts: &UpstreamCounts,
) -> anyhow::Result<Figures> {
    let handle = issue_handle(socket)?;
    let url = format!("http://api.test:{UPSTREAM_PORT}/keys?step=load");
    let phase = AtomicU8::new(WARMUP);
    let mut secs = [0.0; 2];
    let mut trigger_ms = Vec::new();
    let mut counted_at_start = 0;
    let (samples, rounds) = thread::scope(|scope| {
        let callers: Vec<_> = (0..size.callers)
            .map(|_| scope.spawn(|| call_loop(socket, &handle, &url, &phase)))
            .collect();
        let rounds = (|| -> anyhow::Result<()> {
            eprintln!("bench: {} callers warming up", size.callers);
            thread::sleep(Duration::from_secs(2));
            counted_at_start = counts.load.load(Ordering::Relaxed);
            for round in 1..=size.rounds {
                phase.store(ROTATING, Ordering::Relaxed);
                let start = Instant::now();
                let mut took = Vec::new();
                for _ in 0..size.rotations_per_round {
                    let id = trigger(socket, "svc", "bot")?;
                    audit.wait_for(&id, "retired")?;
                    let steps = audit.steps(&id)?;
                    let ms = ms_between(steps.begun, steps.finished);
                    eprintln!(
                        "bench: rotation {id}: trigger → active {ms:.0} ms ({}), retired",
                        steps.split(keys_api, &id)
                    );
                    took.push(ms);
                }
                let rotating = start.elapsed();
                phase.store(QUIET, Ordering::Relaxed);
                // Reading the audit log as a rotating round does, so both kinds of
                // round carry the bench's own work alike.
                let quiet = Instant::now();
                while quiet.elapsed() < rotating {
                    audit.poll()?;
                    thread::sleep(Duration::from_millis(20));
                }
                secs[0] += rotating.as_secs_f64();
                secs[1] += rotating.as_secs_f64();
                eprintln!(
                    "bench: round {round}/{}: {} rotations in {:.1} s, then as long quiet",
                    size.rounds,
                    took.len(),
                    rotating.as_secs_f64(),
                );
                trigger_ms.extend(took);
            }
            Ok(())
        })();
        phase.store(STOP, Ordering::Relaxed);
        let samples: Vec<Samples> = callers
            .into_iter()
            .map(|c| c.join().unwrap_or_default())
            .collect();
        (samples, rounds)
    });
    rounds?;
    let mut f = Figures {
        latencies_us: [Vec::new(), Vec::new()],
        failed: [0; 2],
        failures: Vec::new(),
        secs,
        propagation_retries: 0,
        trigger_ms,
        detector_ms: Vec::new(),
    };
    let mut calls = 0;
    for s in samples {
        for i in 0..2 {
            calls += s.latencies_us[i].len() as u64 + s.failed[i];
            f.latencies_us[i].extend(&s.latencies_us[i]);
            f.failed[i] += s.failed[i];
        }
        f.failures.extend(s.failures);
    }
    f.failures.truncate(5);
    // Each call reached the upstream once, plus once per retry with the previous key
    // (give or take the calls in flight when the rounds began).
    let at_upstream = counts.load.load(Ordering::Relaxed) - counted_at_start;
    f.propagation_retries = at_upstream.saturating_sub(calls);
    ensure!(
        !f.latencies_us[0].is_empty() && !f.latencies_us[1].is_empty(),
        "no call completed in a round: {:?}",
        f.failures
    );
    Ok(f)
}

/// One caller's calls, by phase.
#[derive(Debug, Default)]
struct Samples {
    latencies_us: [Vec<f64>; 2],
    failed: [u64; 2],
    failures: Vec<String>,
}

/// Calls through `handle` until the phase says stop; a failed call is counted (with a
/// fresh connection after an error) and the loop goes on.
fn call_loop(socket: &Path, handle: &str, url: &str, phase: &AtomicU8) -> Samples {
    let mut s = Samples::default();
    let mut caller: Option<Caller> = None;
    loop {
        let at = phase.load(Ordering::Relaxed);
        if at == STOP {
            return s;
        }
        let start = Instant::now();
        let result = match caller.as_mut() {
            Some(c) => c.call(),
            None => Caller::broker_to(socket, handle, url).and_then(|mut c| {
                let r = c.call();
                caller = Some(c);
                r
            }),
        };
        let took = start.elapsed().as_secs_f64() * 1e6;
        let failure = match result {
            Ok((200, body)) => match serde_json::from_slice::<Value>(&body) {
                Ok(v) if v["status"] == 200 => None,
                Ok(v) => Some(format!(
                    "upstream status {} {}",
                    v["status"], v["credential_error"]
                )),
                Err(e) => Some(format!("answer not JSON: {e}")),
            },
            Ok((status, body)) => Some(format!(
                "broker status {status}: {}",
                String::from_utf8_lossy(&body)
            )),
            Err(e) => {
                caller = None;
                Some(format!("connection: {e}"))
            }
        };
        let i = match at {
            ROTATING => 0,
            QUIET => 1,
            _ => continue,
        };
        match failure {
            None => s.latencies_us[i].push(took),
            Some(why) => {
                s.failed[i] += 1;
                if s.failures.len() < 5 {
                    s.failures.push(why);
                }
            }
        }
    }
}

/// `expiry` (`max_age`) rotations of `sweep/bot`, each started by the detector once the
/// previous one retired: detector record → `finished` record, in ms.
fn detector_phase(
    size: &Size,
    audit: &mut AuditLog,
    keys_api: &FakeProvider,
) -> anyhow::Result<Vec<f64>> {
    eprintln!(
        "bench: the expiry detector rotating sweep/bot (max_age_secs = 1), {} times",
        size.detector_rotations
    );
    let deadline = Instant::now() + Duration::from_secs(30 + 10 * size.detector_rotations as u64);
    let mut shown = 0;
    loop {
        audit.poll()?;
        let done = audit.detector_rotations("sweep", "bot");
        for (fired, id, steps) in done.iter().take(size.detector_rotations).skip(shown) {
            shown += 1;
            eprintln!(
                "bench: detector rotation {shown}/{}: detector → active {:.0} ms (to begun {:.0}, {})",
                size.detector_rotations,
                ms_between(*fired, steps.finished),
                ms_between(*fired, steps.begun),
                steps.split(keys_api, id)
            );
        }
        if done.len() >= size.detector_rotations {
            return Ok(done[..size.detector_rotations]
                .iter()
                .map(|(fired, _, steps)| ms_between(*fired, steps.finished))
                .collect());
        }
        if let Some(r) = audit.failed_rotation("sweep") {
            bail!("a sweep rotation did not complete: {r}");
        }
        ensure!(
            Instant::now() < deadline,
            "the expiry detector finished {} of {} rotations in time",
            done.len(),
            size.detector_rotations
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// A handle for `svc/bot`, as a host caller.
fn issue_handle(socket: &Path) -> anyhow::Result<String> {
    let (status, answer) = post(
        socket,
        "/v1/handles",
        r#"{"integration":"svc","account":"bot"}"#,
    )?;
    ensure!(status == 201, "no handle: {answer}");
    Ok(answer["handle"]
        .as_str()
        .context("handle in the answer")?
        .to_owned())
}

/// `POST /v1/rotations` (root, outside any sandbox): the rotation's id.
fn trigger(socket: &Path, integration: &str, account: &str) -> anyhow::Result<String> {
    let body = format!(r#"{{"integration":"{integration}","account":"{account}"}}"#);
    let (status, answer) = post(socket, "/v1/rotations", &body)?;
    ensure!(status == 202, "rotation not started: {answer}");
    Ok(answer["id"].as_str().context("rotation id")?.to_owned())
}

fn post(socket: &Path, path: &str, body: &str) -> anyhow::Result<(u16, Value)> {
    let mut s = UnixStream::connect(socket).context("connecting to the broker")?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: hb\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let (status, answer) = exchange_response(&mut BufReader::new(s))?;
    let answer = serde_json::from_slice(&answer)
        .with_context(|| format!("{path}: {}", String::from_utf8_lossy(&answer)))?;
    Ok((status, answer))
}

/// The agent's audit log, read as it grows.
struct AuditLog {
    path: PathBuf,
    offset: u64,
    partial: String,
    records: Vec<Value>,
}

impl AuditLog {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            offset: 0,
            partial: String::new(),
            records: Vec::new(),
        }
    }

    /// Reads the records appended since the last poll.
    fn poll(&mut self) -> anyhow::Result<()> {
        let mut f = match fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).context("the audit log"),
        };
        f.seek(SeekFrom::Start(self.offset))?;
        let mut text = String::new();
        self.offset += f.read_to_string(&mut text)? as u64;
        self.partial.push_str(&text);
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            // Every broker call is a record too: only the rotations' and detectors' are
            // kept (parsing every call's would load the machine the calls share).
            if line.contains(r#""kind":"rotation""#) || line.contains(r#""kind":"detector"#) {
                self.records
                    .push(serde_json::from_str(&line).context("an audit record")?);
            }
        }
        Ok(())
    }

    /// Polls until rotation `id` reaches `step`; an error if it closes otherwise.
    fn wait_for(&mut self, id: &str, step: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.poll()?;
            for r in self.records.iter().filter(|r| r["rotation"] == id) {
                if r["step"] == step {
                    return Ok(());
                }
                if is_failure(r) {
                    bail!("rotation {id} did not complete: {r}");
                }
            }
            ensure!(
                Instant::now() < deadline,
                "rotation {id} never reached {step}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The time of the `kind` record matching `pred`.
    fn time_of(&self, pred: impl Fn(&Value) -> bool) -> Option<SystemTime> {
        self.records
            .iter()
            .find(|r| pred(r))
            .and_then(|r| humantime::parse_rfc3339(r["time"].as_str()?).ok())
    }

    /// Rotation `id`'s steps up to ACTIVE, once it has finished.
    fn steps(&self, id: &str) -> anyhow::Result<Steps> {
        let step = |s: &'static str| {
            self.time_of(|r| r["kind"] == "rotation" && r["rotation"] == id && r["step"] == s)
                .with_context(|| format!("no {s} record for {id}"))
        };
        Ok(Steps {
            begun: step("begun")?,
            created: step("created")?,
            tested: step("tested")?,
            finished: step("finished")?,
        })
    }

    /// For each rotation of `integration`/`account` a detector started, in order, once
    /// it has finished: when the `detector` record was written, and the steps.
    fn detector_rotations(
        &self,
        integration: &str,
        account: &str,
    ) -> Vec<(SystemTime, String, Steps)> {
        let ours = |r: &Value| r["integration"] == integration && r["account"] == account;
        let mut fired: Option<SystemTime> = None;
        let mut started: Vec<(SystemTime, String)> = Vec::new();
        for r in self.records.iter().filter(|r| ours(r)) {
            if r["kind"] == "detector" {
                fired = humantime::parse_rfc3339(r["time"].as_str().unwrap_or("")).ok();
            } else if r["kind"] == "detector_action"
                && r["outcome"] == "rotation_started"
                && let (Some(at), Some(id)) = (fired.take(), r["rotation"].as_str())
            {
                started.push((at, id.to_owned()));
            }
        }
        started
            .into_iter()
            .map_while(|(at, id)| {
                let steps = self.steps(&id).ok()?;
                Some((at, id, steps))
            })
            .collect()
    }

    /// A rotation of `integration` that closed without completing.
    fn failed_rotation(&self, integration: &str) -> Option<&Value> {
        self.records
            .iter()
            .find(|r| r["kind"] == "rotation" && r["integration"] == integration && is_failure(r))
    }
}

/// When a rotation's steps up to ACTIVE were recorded.
struct Steps {
    begun: SystemTime,
    created: SystemTime,
    tested: SystemTime,
    finished: SystemTime,
}

impl Steps {
    /// Where rotation `id`'s time went: create (split where the provider received the
    /// call), test, finish, in ms.
    fn split(&self, keys_api: &FakeProvider, id: &str) -> String {
        let received = keys_api
            .calls("create")
            .iter()
            .filter(|c| {
                serde_json::from_str::<Value>(c["body"].as_str().unwrap_or(""))
                    .is_ok_and(|b| b["rotation"] == id)
            })
            .find_map(|c| c["t"].as_f64())
            .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(t));
        let create = match received {
            Some(at) => format!(
                "create {:.0} = {:.0} to the provider + {:.0} from its receipt to stored",
                ms_between(self.begun, self.created),
                ms_between(self.begun, at),
                ms_between(at, self.created)
            ),
            None => format!("create {:.0}", ms_between(self.begun, self.created)),
        };
        format!(
            "{create}, test {:.0}, finish {:.0} ms",
            ms_between(self.created, self.tested),
            ms_between(self.tested, self.finished)
        )
    }
}

fn is_failure(r: &Value) -> bool {
    ["failed", "rolled_back", "aborted"]
        .iter()
        .any(|s| r["step"] == *s)
}

fn ms_between(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).unwrap_or_default().as_secs_f64() * 1e3
}

/// What the upstream was asked.
#[derive(Default)]
struct UpstreamCounts {
    /// Calls at `step=load` (the callers' calls and the broker's retries of them).
    load: AtomicU64,
}

/// The provider's live keys as its API sees them: the key store and the minting times,
/// read again whenever the provider replaced either file (it writes each by rename).
struct LiveKeys {
    keys_path: PathBuf,
    born_path: PathBuf,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    stamps: [(u64, u64, i64); 2],
    keys: HashSet<String>,
    born: HashMap<String, f64>,
}

/// A file's inode, size and modification time in ns.
fn stamp(path: &Path) -> (u64, u64, i64) {
    fs::metadata(path).map_or((0, 0, 0), |m| {
        (
            m.ino(),
            m.size(),
            m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        )
    })
}

impl LiveKeys {
    fn new(keys_path: PathBuf, born_path: PathBuf) -> Self {
        Self {
            keys_path,
            born_path,
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Whether the provider holds `key`, minted at least `propagation` ago. `fresh`
    /// reads the files whatever their stamps say (two renames within one tick of the
    /// file system's clock can leave the same stamp).
    fn accepts(&self, key: &str, propagation: Duration, fresh: bool) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        let stamps = [stamp(&self.keys_path), stamp(&self.born_path)];
        if fresh || stamps != seen.stamps {
            // The store first: the provider writes a key's minting time before the key,
            // so a key read here has its time in the file read next.
            let keys: Vec<String> = fs::read_to_string(&self.keys_path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            let born: HashMap<String, f64> = fs::read_to_string(&self.born_path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            *seen = Seen {
                stamps,
                keys: keys.into_iter().collect(),
                born,
            };
        }
        if !seen.keys.contains(key) {
            return false;
        }
        let born = seen.born.get(key).copied().unwrap_or(0.0);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        now - born >= propagation.as_secs_f64()
    }
}

/// The API: `GET /keys?step=verify` and `?step=load` with `Authorization: Bearer KEY`,
/// 200 if the provider holds the key (at `load`, minted [`propagation`] ago), else 401.
/// Keep-alive HTTP/1.1, a thread per connection.
fn serve_upstream(listener: TcpListener, live: &Arc<LiveKeys>, counts: &Arc<UpstreamCounts>) {
    for stream in listener.incoming().flatten() {
        let (live, counts) = (live.clone(), counts.clone());
        thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            let Ok(read) = stream.try_clone() else { return };
            let mut reader = BufReader::new(read);
            let mut writer = stream;
            let mut line = String::new();
            loop {
                let (mut path, mut bearer) = (String::new(), String::new());
                // The request line and headers, up to the blank line (no bodies).
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" && !path.is_empty() => break,
                        Ok(_) if path.is_empty() => {
                            path = line.split(' ').nth(1).unwrap_or("-").to_owned();
                        }
                        Ok(_) => {
                            if let Some((k, v)) = line.split_once(':')
                                && k.eq_ignore_ascii_case("authorization")
                            {
                                bearer = v.trim().trim_start_matches("Bearer ").to_owned();
                            }
                        }
                    }
                }
                // The callers' calls (the load) may meet a stale view for a moment
                // (a key the provider just revoked passes; one it just minted is
                // refused for the propagation delay anyway); the rotation's own verify calls
                // never do.
                let load = path.ends_with("step=load");
                let propagation = if load {
                    counts.load.fetch_add(1, Ordering::Relaxed);
                    propagation()
                } else {
                    Duration::ZERO
                };
                let answer: &[u8] = if path.starts_with("/keys?")
                    && live.accepts(&bearer, propagation, !load)
                {
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nauthorized"
                } else {
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nunauthorized"
                };
                if writer.write_all(answer).is_err() {
                    return;
                }
            }
        });
    }
}

fn print(size: &Size, f: &Figures, load_before: &str, load_after: &str) {
    let p = |v: &Vec<f64>, q: f64| percentile(v.clone(), q);
    let rate = |i: usize| f.latencies_us[i].len() as f64 / f.secs[i];
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!();
    println!(
        "hb bench rotation (private netns; fake provider; {} callers through one handle issued before the rotations)",
        size.callers
    );
    println!("load average before / after: {load_before} / {load_after}");
    println!("{}", "-".repeat(86));
    println!(
        "{:<34}{:>12}{:>12}{:>10}{:>10}",
        "measure", "rotating", "quiet", "ratio", "target"
    );
    println!(
        "{:<34}{:>12}{:>12}{:>10}{:>10} {}",
        "failed requests",
        f.failed[0],
        f.failed[1],
        "-",
        "0",
        verdict(f.failed == [0, 0])
    );
    for (label, q, target) in [
        ("p50 latency, µs", 0.5, None),
        ("p99 latency, µs", 0.99, Some(1.2)),
    ] {
        let (a, b) = (p(&f.latencies_us[0], q), p(&f.latencies_us[1], q));
        let r = a / b;
        match target {
            Some(t) => println!(
                "{label:<34}{a:>12.1}{b:>12.1}{r:>10.3}{:>10} {}",
                format!("<={t}"),
                verdict(r <= t)
            ),
            None => println!("{label:<34}{a:>12.1}{b:>12.1}{r:>10.3}"),
        }
    }
    let (a, b) = (rate(0), rate(1));
    println!(
        "{:<34}{a:>12.0}{b:>12.0}{:>10.3}",
        "calls per second",
        a / b
    );
    println!("{}", "-".repeat(86));
    println!(
        "{:<34}{:>12}{:>12}{:>10}{:>10}",
        "to ACTIVE, ms", "p50", "p99", "n", "target"
    );
    for (label, v) in [
        ("operator trigger (under load)", &f.trigger_ms),
        ("expiry detector firing", &f.detector_ms),
    ] {
        let p50 = p(v, 0.5);
        println!(
            "{label:<34}{p50:>12.1}{:>12.1}{:>10}{:>10} {}",
            p(v, 0.99),
            v.len(),
            "p50<=1000",
            verdict(p50 <= 1000.0)
        );
    }
    println!("{}", "-".repeat(86));
    println!(
        "rotating rounds: {} × {} rotations back to back ({:.0} s), quiet rounds as long; {} calls retried with the previous key while a new one propagated ({} s)",
        size.rounds,
        size.rotations_per_round,
        f.secs[0],
        f.propagation_retries,
        propagation().as_secs()
    );
    for why in &f.failures {
        println!("failure: {why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench's small run end to end (root: it starts the agent in a namespace of its
    /// own): every round and the detector phase complete, and no call fails while the
    /// account rotates. Its figures are printed, never judged: tests do not time.
    #[test]
    fn the_rotation_bench_runs_in_its_small_size_and_no_call_fails() {
        let size = Size::SMOKE;
        let f = run(&size).expect("the rotation bench");
        print(&size, &f, "-", "-");
        assert_eq!(f.failed, [0, 0], "calls failed: {:?}", f.failures);
        assert_eq!(f.trigger_ms.len(), size.rounds * size.rotations_per_round);
        assert_eq!(f.detector_ms.len(), size.detector_rotations);
        assert!(
            f.latencies_us.iter().all(|l| !l.is_empty()),
            "calls in both kinds of round"
        );
    }
}
