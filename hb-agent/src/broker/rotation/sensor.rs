//! The sensor: what each account of a rotating integration does, in buckets of
//! `sensor_bucket_secs` (10 s by default): calls made with its handles, their answers by
//! status class (401, 403 and 429 apart from the other 4xx), bytes sent (request
//! bodies) and received (answer bodies), distinct (method, host) pairs, handles issued,
//! and scrubber hits of the account's own key (a `reflection`, in an answer or in what a
//! caller sent).
//!
//! The broker's request path only adds to the current bucket's per-account atomic
//! counters (an account is found under a read lock of the account map; only its first
//! call takes the write lock). [`run`] closes every account's bucket when it ends: the
//! counts go into a ring of the last [`RING`] buckets and the call count to the
//! `rate_spike` detector (`spike`), whose signal goes through `detect::signal` like every
//! detector's. A new (method, host) pair is judged on the request path by `novelty`.
//! After each closed bucket the baselines, known pairs and the last [`SAVED`] buckets are
//! written to `state_dir/sensor.json` (a new file renamed over the old one), so a restart
//! keeps what was learned and `hb-agent rotation status` shows it without the agent.
//! Must never: hold a value, a handle, a path or a query (names, methods, hosts, counts).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fs, io,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    novelty::{self, Pairs},
    spike::{self, Evidence, Verdict},
};
use crate::config::{Config, RotationConfig};

/// File name below `state_dir`.
pub const FILE: &str = "sensor.json";

/// Buckets kept in memory per account (an hour at 10 s).
pub const RING: usize = 360;

/// Buckets written to the file per account (five minutes at 10 s).
pub const SAVED: usize = 30;

/// A quarantined account's calls a minute: its baseline's rate times this, at least
/// `quarantine_calls_per_minute`.
pub const QUARANTINE_HEADROOM: f64 = 1.5;

/// One closed bucket's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Its start (unix seconds).
    pub start: u64,
    pub requests: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    /// 4xx other than 401, 403 and 429.
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub status_401: u64,
    pub status_403: u64,
    pub status_429: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Distinct (method, host) pairs.
    pub pairs: u64,
    pub handles: u64,
    pub scrub_hits: u64,
}

/// The current bucket, added to by the request path.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    status_2xx: AtomicU64,
    status_3xx: AtomicU64,
    status_4xx: AtomicU64,
    status_5xx: AtomicU64,
    status_401: AtomicU64,
    status_403: AtomicU64,
    status_429: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    pairs: AtomicU64,
    handles: AtomicU64,
    scrub_hits: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// The counts so far, reset (a call counted meanwhile goes to one bucket or the
    /// next, never to none).
    fn take(&self, start: u64) -> Bucket {
        let t = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
        Bucket {
            start,
            requests: t(&self.requests),
            status_2xx: t(&self.status_2xx),
            status_3xx: t(&self.status_3xx),
            status_4xx: t(&self.status_4xx),
            status_5xx: t(&self.status_5xx),
            status_401: t(&self.status_401),
            status_403: t(&self.status_403),
            status_429: t(&self.status_429),
            bytes_up: t(&self.bytes_up),
            bytes_down: t(&self.bytes_down),
            pairs: t(&self.pairs),
            handles: t(&self.handles),
            scrub_hits: t(&self.scrub_hits),
        }
    }
}

/// What is kept of an account between runs (and read by `rotation status`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Saved {
    pub bucket_secs: u64,
    /// When the sensor first saw the account (unix seconds): learning runs from here.
    pub started: u64,
    pub spike: spike::State,
    /// Known (method, host) pairs, `"METHOD host"`.
    pub pairs: Vec<String>,
    /// The last buckets, oldest first.
    pub buckets: Vec<Bucket>,
}

/// One account's sensor.
pub struct Account {
    params: spike::Params,
    novelty_learning_secs: u64,
    started: u64,
    /// The current bucket's index (unix seconds / bucket width).
    bucket: AtomicU64,
    now: Counters,
    pairs: Pairs,
    past: Mutex<Past>,
}

struct Past {
    ring: VecDeque<Bucket>,
    spike: spike::State,
}

/// A closed bucket and what the detector made of it.
pub struct Closed {
    pub integration: String,
    pub account: String,
    pub bucket: Bucket,
    pub verdict: Verdict,
}

impl Account {
    fn new(config: &RotationConfig, saved: Option<Saved>, now: u64) -> Self {
        let params = spike::Params::of(config);
        let saved = saved.unwrap_or_default();
        // A baseline of other bucket widths counts other things: learned again.
        let (spike, ring) = if saved.bucket_secs == params.bucket_secs {
            // A restart lifts a quarantine: a flood still running is a new spike.
            let spike = spike::State {
                run: 0,
                ..saved.spike
            };
            (spike, saved.buckets.into_iter().collect())
        } else {
            (spike::State::default(), VecDeque::new())
        };
        Self {
            params,
            novelty_learning_secs: config.novelty_learning_secs,
            started: if saved.started == 0 {
                now
            } else {
                saved.started
            },
            bucket: AtomicU64::new(now / params.bucket_secs),
            now: Counters::default(),
            pairs: Pairs::from_list(&saved.pairs),
            past: Mutex::new(Past { ring, spike }),
        }
    }

    /// A call with one of the account's handles: counted, and its pair noted; whether
    /// the pair is a `novelty` signal.
    pub fn call(&self, method: &Method, host: &str, bytes_up: usize, now: u64) -> bool {
        add(&self.now.requests, 1);
        add(&self.now.bytes_up, bytes_up as u64);
        let seen = self
            .pairs
            .see(method, host, self.bucket.load(Ordering::Relaxed));
        if seen.first_in_bucket {
            add(&self.now.pairs, 1);
        }
        novelty::is_novel(seen, self.started, self.novelty_learning_secs, now)
    }

    /// The upstream's answer to a counted call.
    pub fn answer(&self, status: u16, bytes_down: usize) {
        let c = &self.now;
        let counter = match status {
            401 => &c.status_401,
            403 => &c.status_403,
            429 => &c.status_429,
            200..=299 => &c.status_2xx,
            300..=399 => &c.status_3xx,
            400..=499 => &c.status_4xx,
            _ => &c.status_5xx,
        };
        add(counter, 1);
        add(&c.bytes_down, bytes_down as u64);
    }

    /// Closes the current bucket if it ended before `now`.
    fn close(&self, now: u64) -> Option<(Bucket, Verdict)> {
        let index = now / self.params.bucket_secs;
        let current = self.bucket.load(Ordering::Relaxed);
        if index <= current {
            return None;
        }
        self.bucket.store(index, Ordering::Relaxed);
        let bucket = self.now.take(current * self.params.bucket_secs);
        let mut past = self.past.lock().unwrap_or_else(PoisonError::into_inner);
        let verdict = past
            .spike
            .observe(&self.params, bucket.start, bucket.requests);
        if past.ring.len() == RING {
            past.ring.pop_front();
        }
        past.ring.push_back(bucket.clone());
        Some((bucket, verdict))
    }

    fn saved(&self) -> Saved {
        let past = self.past.lock().unwrap_or_else(PoisonError::into_inner);
        Saved {
            bucket_secs: self.params.bucket_secs,
            started: self.started,
            spike: past.spike.clone(),
            pairs: self.pairs.list(),
            buckets: past
                .ring
                .iter()
                .skip(past.ring.len().saturating_sub(SAVED))
                .cloned()
                .collect(),
        }
    }

    /// Calls a minute the baseline stands for, once it is learned.
    fn baseline_per_minute(&self, now: u64) -> Option<f64> {
        let past = self.past.lock().unwrap_or_else(PoisonError::into_inner);
        if past.spike.learning(&self.params, now) || past.spike.learned == 0 {
            return None;
        }
        #[expect(clippy::cast_precision_loss, reason = "a bucket width in seconds")]
        let per_minute = past.spike.mean * 60.0 / self.params.bucket_secs as f64;
        Some(per_minute)
    }
}

/// Integration → account → its sensor.
type Map = HashMap<String, HashMap<String, Arc<Account>>>;

pub struct Sensor {
    config: Arc<Config>,
    path: PathBuf,
    accounts: RwLock<Map>,
    /// Accounts in the file not seen in this run yet (kept, and written back).
    unseen: Mutex<HashMap<String, Saved>>,
    /// Serialises writes of the file, so it never goes back to an older state.
    writing: Mutex<()>,
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Sensor {
    /// The sensor of `state_dir` (what it learned before, if it can be read).
    pub fn open(state_dir: &Path, config: Arc<Config>) -> Self {
        Self {
            config,
            path: state_dir.join(FILE),
            accounts: RwLock::default(),
            unseen: Mutex::new(read(state_dir).unwrap_or_default().into_iter().collect()),
            writing: Mutex::default(),
        }
    }

    /// The sensor of `integration`/`account`, made at its first use; `None` if the
    /// integration has no rotator (it is not sensed).
    pub fn account(&self, integration: &str, account: &str) -> Option<Arc<Account>> {
        if let Some(a) = self
            .accounts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(integration)
            .and_then(|m| m.get(account))
        {
            return Some(a.clone());
        }
        let config = self
            .config
            .integrations
            .iter()
            .find(|i| i.name.get_ref() == integration)?
            .rotation
            .as_ref()?;
        let mut accounts = self
            .accounts
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let slot = accounts
            .entry(integration.to_owned())
            .or_default()
            .entry(account.to_owned());
        Some(
            slot.or_insert_with(|| {
                let saved = self
                    .unseen
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&format!("{integration}/{account}"));
                Arc::new(Account::new(config, saved, unix_now()))
            })
            .clone(),
        )
    }

    /// A handle issued for `integration`/`account`.
    pub fn handle_issued(&self, integration: &str, account: &str) {
        if let Some(a) = self.account(integration, account) {
            add(&a.now.handles, 1);
        }
    }

    /// The account's own key seen by the scrubber (a reflection).
    pub fn scrub_hit(&self, integration: &str, account: &str) {
        if let Some(a) = self.account(integration, account) {
            add(&a.now.scrub_hits, 1);
        }
    }

    /// The rate a quarantine holds `integration`/`account` to: its learned baseline's
    /// calls a minute × [`QUARANTINE_HEADROOM`], at least `floor`.
    pub fn quarantine_per_minute(&self, integration: &str, account: &str, floor: u32) -> u32 {
        let baseline = self
            .account(integration, account)
            .and_then(|a| a.baseline_per_minute(unix_now()));
        match baseline {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "clamped to u32 first"
            )]
            Some(b) => {
                ((b * QUARANTINE_HEADROOM).ceil().min(f64::from(u32::MAX)) as u32).max(floor)
            }
            None => floor,
        }
    }

    /// Closes every bucket that ended before `now`; the closed buckets and verdicts.
    /// Writes the file if any closed.
    pub fn tick(&self, now: u64) -> Vec<Closed> {
        let accounts: Vec<(String, String, Arc<Account>)> = self
            .accounts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flat_map(|(i, m)| m.iter().map(|(a, s)| (i.clone(), a.clone(), s.clone())))
            .collect();
        let closed: Vec<Closed> = accounts
            .into_iter()
            .filter_map(|(integration, account, a)| {
                let (bucket, verdict) = a.close(now)?;
                Some(Closed {
                    integration,
                    account,
                    bucket,
                    verdict,
                })
            })
            .collect();
        if !closed.is_empty()
            && let Err(e) = self.save()
        {
            tracing::warn!(error = %e, path = %self.path.display(), "cannot write the sensor's state");
        }
        closed
    }

    fn save(&self) -> io::Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: BTreeMap<String, Saved> = self
            .unseen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .into_iter()
            .collect();
        for (i, accounts) in self
            .accounts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            for (a, sensor) in accounts {
                all.insert(format!("{i}/{a}"), sensor.saved());
            }
        }
        write(&self.path, &all)
    }
}

fn write(path: &Path, all: &BTreeMap<String, Saved>) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("json.tmp");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o640)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(all).map_err(io::Error::other)?)?;
    fs::rename(&tmp, path)
}

/// What the sensor last wrote, keyed `integration/account` (for the CLI); `None` if
/// nothing is there.
pub fn read(state_dir: &Path) -> Option<BTreeMap<String, Saved>> {
    let text = fs::read(state_dir.join(FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// An account's sensor for `rotation status --json`: its baseline and last buckets.
pub fn view(saved: &Saved, config: &RotationConfig, last: usize) -> serde_json::Value {
    let p = spike::Params::of(config);
    let learning_until = saved
        .spike
        .started
        .unwrap_or(saved.started)
        .saturating_add(p.learning_secs);
    let rfc = |secs: u64| {
        humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .to_string()
    };
    #[expect(clippy::cast_precision_loss, reason = "a bucket width in seconds")]
    let per_minute = saved.spike.mean * 60.0 / saved.bucket_secs.max(1) as f64;
    json!({
        "bucket_secs": saved.bucket_secs,
        "since": rfc(saved.started),
        "learning_until": rfc(learning_until),
        "novelty_learning_until": rfc(saved.started.saturating_add(config.novelty_learning_secs)),
        "baseline": {
            "mean": saved.spike.mean,
            "sd": saved.spike.sd(),
            "calls_per_minute": per_minute,
            "buckets_learned": saved.spike.learned,
        },
        "anomalous_run": saved.spike.run,
        "pairs": saved.pairs,
        "last_buckets": saved
            .buckets
            .iter()
            .skip(saved.buckets.len().saturating_sub(last))
            .collect::<Vec<_>>(),
    })
}

/// The `rate_spike` signal of a fired bucket: an audit record of the evidence
/// (`sensor_spike`: counts and the baseline), then `detect::signal`.
fn spike_signal(shared: &Arc<super::super::state::Shared>, closed: &Closed, e: &Evidence) {
    shared.audit.record(
        "sensor_spike",
        json!({
            "integration": closed.integration,
            "account": closed.account,
            "bucket_start": closed.bucket.start,
            "count": e.count,
            "baseline_mean": e.mean,
            "baseline_sd": e.sd,
            "run": e.run,
            "why": e.why,
        }),
    );
    super::detect::signal(
        shared,
        &super::detect::Signal {
            detector: super::detect::Detector::RateSpike,
            trigger: "rate_spike",
            integration: &closed.integration,
            account: &closed.account,
            policy: "",
            caller: None,
            seen: "sensor",
            handle: None,
            execution: None,
        },
    );
}

/// Closes buckets as they end (every second) until the runtime stops.
pub async fn run(shared: Arc<super::super::state::Shared>) {
    if !shared
        .config
        .integrations
        .iter()
        .any(|i| i.rotation.is_some())
    {
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for closed in shared.sensor.tick(unix_now()) {
            if let Verdict::Fire(e) = &closed.verdict {
                spike_signal(&shared, &closed, e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bucket: u64) -> Arc<Config> {
        Arc::new(
            Config::parse(
                &format!(
                    "[[integration]]\nname = \"svc\"\nauth = \"bearer\"\nhosts = [\"api.test\"]\n\
                     verify_url = \"https://api.test/me\"\n[integration.rotation]\n\
                     exec = [\"/bin/true\"]\nsensor_bucket_secs = {bucket}\n\
                     spike_learning_secs = 60\nnovelty_learning_secs = 60\n\
                     quarantine_calls_per_minute = 5\n\
                     [[integration]]\nname = \"plain\"\nauth = \"bearer\"\nhosts = [\"api.test\"]\n"
                ),
                "test",
            )
            .expect("config"),
        )
    }

    #[test]
    fn buckets_count_calls_answers_and_pairs_and_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("hb-sensor-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let sensor = Sensor::open(&dir, config(10));
        assert!(
            sensor.account("plain", "ci").is_none(),
            "no rotator: not sensed"
        );
        let a = sensor.account("svc", "ci").expect("sensed");
        let t0 = a.bucket.load(Ordering::Relaxed) * 10;
        for status in [200, 201, 401, 403, 429, 404, 302, 503] {
            a.call(&Method::GET, "api.test", 5, t0);
            a.answer(status, 100);
        }
        a.call(&Method::POST, "api.test", 7, t0);
        sensor.handle_issued("svc", "ci");
        sensor.scrub_hit("svc", "ci");
        assert!(sensor.tick(t0 + 9).is_empty(), "the bucket has not ended");
        let closed = sensor.tick(t0 + 10);
        let [c] = closed.as_slice() else {
            panic!("one bucket closed");
        };
        let b = &c.bucket;
        assert_eq!(
            (
                b.start,
                b.requests,
                b.status_2xx,
                b.status_3xx,
                b.status_4xx,
                b.status_5xx
            ),
            (t0, 9, 2, 1, 1, 1)
        );
        assert_eq!((b.status_401, b.status_403, b.status_429), (1, 1, 1));
        assert_eq!((b.bytes_up, b.bytes_down), (47, 800));
        assert_eq!((b.pairs, b.handles, b.scrub_hits), (2, 1, 1));
        a.call(&Method::GET, "api.test", 0, t0 + 10);
        let next = sensor.tick(t0 + 20);
        assert_eq!(next[0].bucket.pairs, 1, "seen again in the next bucket");
        let saved = read(&dir).expect("written")["svc/ci"].clone();
        assert_eq!(saved.buckets.len(), 2);
        assert_eq!(saved.pairs, vec!["GET api.test", "POST api.test"]);
        assert_eq!(saved.spike.learned, 2);
        // A new run goes on from the file: same baseline, same pairs, same start.
        let again = Sensor::open(&dir, config(10));
        let b = again.account("svc", "ci").expect("sensed");
        assert_eq!(b.started, a.started);
        assert_eq!(b.saved().spike, saved.spike);
        assert!(
            !b.call(&Method::POST, "api.test", 0, t0 + 1000),
            "known pair"
        );
        assert!(
            b.call(&Method::DELETE, "api.test", 0, t0 + 1000),
            "a new pair after the learning period is novel"
        );
        // Another bucket width starts the baseline over, keeping the pairs.
        let wider = Sensor::open(&dir, config(20));
        let w = wider.account("svc", "ci").expect("sensed");
        assert_eq!(w.saved().spike, spike::State::default());
        assert_eq!(w.pairs.list().len(), 2);
        fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_quarantine_holds_near_the_learned_baseline() {
        let dir = std::env::temp_dir().join(format!("hb-sensor-q-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let sensor = Sensor::open(&dir, config(10));
        let a = sensor.account("svc", "ci").expect("sensed");
        assert_eq!(sensor.quarantine_per_minute("svc", "ci", 5), 5, "unlearned");
        // 20 calls a bucket (120 a minute) for the learning period and beyond.
        let mut t = a.bucket.load(Ordering::Relaxed) * 10;
        a.past.lock().expect("past").spike.started = Some(t - 3600);
        for _ in 0..30 {
            for _ in 0..20 {
                a.call(&Method::GET, "api.test", 0, t);
            }
            t += 10;
            sensor.tick(t);
        }
        assert_eq!(sensor.quarantine_per_minute("svc", "ci", 5), 180);
        assert_eq!(sensor.quarantine_per_minute("svc", "ci", 500), 500, "floor");
        fs::remove_dir_all(&dir).expect("clean up");
    }
}
