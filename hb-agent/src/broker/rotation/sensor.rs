//! The sensor: what each account of a rotating integration does, in buckets of
//! `sensor_bucket_secs` (10 s by default): calls made with its handles, their answers by
//! status class (401, 403 and 429 apart from the other 4xx), bytes sent (request
//! bodies) and received (answer bodies), distinct (method, host) pairs, handles issued,
//! and scrubber hits of the account's own key (a `reflection`, in an answer or in what a
//! caller sent).
//!
//! The broker's request path only adds to the current bucket's per-account atomic
//! counters (an account is found under a read lock of the account map; only its first
//! call takes the write lock), and counts the call's caller (a sandbox's cgroup id or a
//! host uid) in the account's heavy-hitter table under a short lock.
//!
//! The callers are counted with the Space-Saving algorithm (Metwally, Agrawal and El
//! Abbadi, "Efficient computation of frequent and top-k elements in data streams",
//! ICDT 2005) in [`HITTERS`] counters per account and bucket, however many callers
//! there are: a caller not counted takes the counter with the fewest calls and inherits
//! that count as its error. Each counter's `calls − error` is a lower bound on its
//! caller's true calls and `calls` an upper one, and any caller with more than
//! total / [`HITTERS`] calls of the bucket is always counted, its lower bound within
//! total / [`HITTERS`] of the truth. Suspects and shares use the lower bound only, so a
//! caller that merely took over a flooder's counter is never charged with its calls,
//! and many callers taking counters early cannot hide a later flood. A call costs one
//! scan of at most [`HITTERS`] counters under the account's lock: about 23 ns alone
//! (a first-come slot cost 10), 70 ns when every call takes a counter over (100
//! callers in turn), of a whole `Account::call` of 120–180 ns (release build,
//! `bench_call_cost`, one thread).
//!
//! [`run`] closes every account's bucket when it ends: the counts go into a ring of the
//! last [`RING`] buckets and the call count to the `rate_spike` detector (`spike`),
//! whose signal goes through `detect::signal` like every detector's. A new (method,
//! host) pair is judged on the request path by `novelty`. After each closed bucket the
//! baselines, known pairs and the last [`SAVED`] buckets are written to
//! `state_dir/sensor.json` (a new file renamed over the old one; callers are not kept),
//! so a restart keeps what was learned and `hb-agent rotation status` shows it without
//! the agent.
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
    super::handles::Owner,
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

/// Counters of the heavy-hitter table (Space-Saving) per account and bucket: the
/// memory bound on callers, however many call. A caller with more than 1/`HITTERS` of a
/// bucket's calls is always counted.
pub const HITTERS: usize = 32;

/// A `rate_spike` names at most this many callers: every caller counted, so a flood
/// spread over a few sandboxes names each of them rather than holding the whole
/// account; a spike the counted callers' guaranteed calls cannot explain is the
/// account's (see [`suspects`]).
pub const MAX_SUSPECTS: usize = HITTERS;

const HOST_BIT: u64 = 1 << 63;

/// An owner as one word: a sandbox's cgroup id (top bit clear), or a host uid with the
/// top bit set.
fn owner_key(owner: Owner) -> u64 {
    match owner {
        Owner::Sandbox { cgroup_id } => cgroup_id & !HOST_BIT,
        Owner::Host { uid } => HOST_BIT | u64::from(uid),
    }
}

fn key_owner(key: u64) -> Owner {
    if key & HOST_BIT == 0 {
        Owner::Sandbox { cgroup_id: key }
    } else {
        Owner::Host {
            uid: u32::try_from(key & !HOST_BIT).unwrap_or(u32::MAX),
        }
    }
}

/// One counter of the heavy-hitter table: a caller, its policy, and its calls in the
/// bucket with their error (the calls it inherited when it took the counter over).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hitter {
    key: u64,
    policy: String,
    /// An upper bound on the caller's calls in the bucket.
    calls: u64,
    /// Calls of other callers in `calls` at most (the count it took over).
    error: u64,
}

impl Hitter {
    /// The calls the caller surely made in the bucket.
    fn guaranteed(&self) -> u64 {
        self.calls - self.error
    }
}

/// The current bucket's callers: Space-Saving over at most [`HITTERS`] counters (see
/// the module header).
#[derive(Default)]
struct Hitters {
    counters: Vec<Hitter>,
}

impl Hitters {
    /// Counts a call of `key` (of `policy`): its counter, a free one, or the one with
    /// the fewest calls, taken over (its count kept as the error).
    fn count(&mut self, key: u64, policy: &str) {
        if let Some(h) = self.counters.iter_mut().find(|h| h.key == key) {
            h.calls += 1;
            return;
        }
        if self.counters.len() < HITTERS {
            self.counters.push(Hitter {
                key,
                policy: policy.to_owned(),
                calls: 1,
                error: 0,
            });
            return;
        }
        let Some(min) = self.counters.iter_mut().min_by_key(|h| h.calls) else {
            return;
        };
        min.key = key;
        // The buffer is reused: no allocation under the lock once the table is full.
        policy.clone_into(&mut min.policy);
        min.error = min.calls;
        min.calls += 1;
    }

    /// The counters so far, most guaranteed calls first (then by caller); reset.
    fn take(&mut self) -> Vec<Hitter> {
        let mut taken = std::mem::replace(&mut self.counters, Vec::with_capacity(HITTERS));
        taken.sort_by_key(|h| (std::cmp::Reverse(h.guaranteed()), h.key));
        taken
    }
}

/// A caller that made a spike: who, its policy, its calls in the firing bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspect {
    pub owner: Owner,
    pub policy: String,
    pub calls: u64,
}

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
    /// Calls per caller: its own lock, held for one scan of the table per call.
    hitters: Mutex<Hitters>,
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

    /// Counts a call of `key` (of `policy`) among the bucket's callers.
    fn owner_call(&self, key: u64, policy: &str) {
        self.hitters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .count(key, policy);
    }

    /// The bucket's callers so far (see [`Hitters::take`]); reset.
    fn take_hitters(&self) -> Vec<Hitter> {
        self.hitters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
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
    /// Each caller's share of the calls in the last normal bucket with calls (of its
    /// guaranteed calls: see [`shares`]).
    shares: Vec<(u64, f64)>,
}

/// A closed bucket and what the detector made of it.
pub struct Closed {
    pub integration: String,
    pub account: String,
    pub bucket: Bucket,
    pub verdict: Verdict,
    /// For a fired spike: the callers that made it (see [`suspects`]); empty if none
    /// can be singled out.
    pub suspects: Vec<Suspect>,
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
            past: Mutex::new(Past {
                ring,
                spike,
                shares: Vec::new(),
            }),
        }
    }

    /// A call with one of the account's handles by `owner` (of `policy`): counted, and
    /// its pair noted; whether the pair is a `novelty` signal.
    pub fn call(
        &self,
        owner: Owner,
        policy: &str,
        method: &Method,
        host: &str,
        bytes_up: usize,
        now: u64,
    ) -> bool {
        add(&self.now.requests, 1);
        self.now.owner_call(owner_key(owner), policy);
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

    /// Closes the current bucket if it ended before `now`; for a fired spike, the
    /// callers that made it.
    fn close(&self, now: u64) -> Option<(Bucket, Verdict, Vec<Suspect>)> {
        let index = now / self.params.bucket_secs;
        let current = self.bucket.load(Ordering::Relaxed);
        if index <= current {
            return None;
        }
        self.bucket.store(index, Ordering::Relaxed);
        let bucket = self.now.take(current * self.params.bucket_secs);
        let hitters = self.now.take_hitters();
        let mut past = self.past.lock().unwrap_or_else(PoisonError::into_inner);
        // Judged before `observe`, on the baseline the bucket is judged on.
        let made_by = suspects(
            &past.spike,
            &self.params,
            bucket.start,
            &hitters,
            &past.shares,
        );
        let verdict = past
            .spike
            .observe(&self.params, bucket.start, bucket.requests);
        if verdict == Verdict::Normal && bucket.requests > 0 {
            past.shares = shares(&hitters);
        }
        if past.ring.len() == RING {
            past.ring.pop_front();
        }
        past.ring.push_back(bucket.clone());
        drop(past);
        let named = if matches!(verdict, Verdict::Fire(_)) {
            made_by
                .iter()
                .map(|h| Suspect {
                    owner: key_owner(h.key),
                    policy: h.policy.clone(),
                    calls: h.guaranteed(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Some((bucket, verdict, named))
    }

    /// `owner`'s share of the calls in the last normal bucket (0 if it made none).
    fn share(&self, owner: Owner) -> f64 {
        let key = owner_key(owner);
        let past = self.past.lock().unwrap_or_else(PoisonError::into_inner);
        past.shares
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(0.0, |(_, s)| *s)
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
    /// calls a minute × [`QUARANTINE_HEADROOM`] (for one caller, × its share of the
    /// calls in the last normal bucket), at least `floor`.
    pub fn quarantine_per_minute(
        &self,
        integration: &str,
        account: &str,
        caller: Option<Owner>,
        floor: u32,
    ) -> u32 {
        let baseline = self.account(integration, account).and_then(|a| {
            let b = a.baseline_per_minute(unix_now())?;
            Some(caller.map_or(b, |owner| b * a.share(owner)))
        });
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
                let (bucket, verdict, suspects) = a.close(now)?;
                Some(Closed {
                    integration,
                    account,
                    bucket,
                    verdict,
                    suspects,
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

/// Each caller's share of a bucket's calls: its guaranteed calls over the calls of all
/// counters, all from one snapshot of the table (a call counted in `requests` before
/// the bucket closed and among the callers after, or the reverse, cannot make a share
/// over one; the shares add up to one at most).
fn shares(hitters: &[Hitter]) -> Vec<(u64, f64)> {
    let total: u64 = hitters.iter().map(|h| h.calls).sum();
    if total == 0 {
        return Vec::new();
    }
    #[expect(clippy::cast_precision_loss, reason = "call counts")]
    hitters
        .iter()
        .filter(|h| h.guaranteed() > 0)
        .map(|h| (h.key, h.guaranteed() as f64 / total as f64))
        .collect()
}

/// The callers that made a bucket anomalous: the fewest of its counted callers, most
/// guaranteed calls over their usual first, without whose guaranteed calls the bucket
/// would have been normal for `state`; none if what is left keeps it anomalous (the
/// excess is spread over so many callers that none is surely heavy). A caller's usual
/// calls are its share of the last normal bucket (`shares`) of the baseline's mean: a
/// caller calling no more than usual is never named, however heavy, for a bucket far
/// above the baseline. A bucket over the hard cap but not far above the baseline (or
/// while it is learned) excuses no caller's usual calls: the account's usual load
/// nearly fills the cap, and a caller that made its own usual rate that load would
/// otherwise have whoever else calls named (any other tenant of the account, at a few
/// calls). Only a caller's guaranteed calls count, so none is named for calls it may
/// not have made.
fn suspects(
    state: &spike::State,
    p: &spike::Params,
    at: u64,
    hitters: &[Hitter],
    shares: &[(u64, f64)],
) -> Vec<Hitter> {
    let mut rest: u64 = hitters.iter().map(|h| h.calls).sum();
    let excused = state.far_above(p, at, rest);
    let usual = |key: u64| {
        shares
            .iter()
            .find(|s| s.0 == key)
            .filter(|_| excused)
            .map_or(0.0, |s| s.1 * state.mean)
    };
    #[expect(clippy::cast_precision_loss, reason = "call counts")]
    let mut over_usual: Vec<(f64, &Hitter)> = hitters
        .iter()
        .map(|h| (h.guaranteed() as f64 - usual(h.key), h))
        .filter(|(over, _)| *over > 0.0)
        .collect();
    over_usual.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.key.cmp(&b.1.key)));
    for (n, (_, h)) in over_usual.iter().take(MAX_SUSPECTS).enumerate() {
        rest = rest.saturating_sub(h.guaranteed());
        if !state.anomalous(p, at, rest) {
            return over_usual[..=n].iter().map(|(_, h)| (*h).clone()).collect();
        }
    }
    Vec::new()
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
/// (`sensor_spike`: counts, the baseline and the callers that made it), then
/// `detect::signal_spike`.
fn spike_signal(shared: &Arc<super::super::state::Shared>, closed: &Closed, e: &Evidence) {
    let suspects: Vec<serde_json::Value> = closed.suspects.iter().map(suspect_json).collect();
    let policies: Vec<&str> = closed.suspects.iter().map(|s| s.policy.as_str()).collect();
    let policy = policies.join(",");
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
            "suspects": suspects,
        }),
    );
    super::detect::signal_spike(
        shared,
        &super::detect::Signal {
            detector: super::detect::Detector::RateSpike,
            trigger: "rate_spike",
            integration: &closed.integration,
            account: &closed.account,
            policy: &policy,
            caller: None,
            seen: super::detect::SeenAt::Sensor,
            handle: None,
            execution: None,
        },
        &closed.suspects,
    );
}

/// A suspect in records: its sandbox's cgroup id or its host uid, its policy, its calls.
pub fn suspect_json(s: &Suspect) -> serde_json::Value {
    let (cgroup_id, uid) = match s.owner {
        Owner::Sandbox { cgroup_id } => (Some(cgroup_id), None),
        Owner::Host { uid } => (None, Some(uid)),
    };
    json!({
        "cgroup_id": cgroup_id,
        "uid": uid,
        "policy": s.policy,
        "calls": s.calls,
    })
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

    const HOST: Owner = Owner::Host { uid: 0 };

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
            a.call(HOST, "p", &Method::GET, "api.test", 5, t0);
            a.answer(status, 100);
        }
        a.call(HOST, "p", &Method::POST, "api.test", 7, t0);
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
        a.call(HOST, "p", &Method::GET, "api.test", 0, t0 + 10);
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
            !b.call(HOST, "p", &Method::POST, "api.test", 0, t0 + 1000),
            "known pair"
        );
        assert!(
            b.call(HOST, "p", &Method::DELETE, "api.test", 0, t0 + 1000),
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
        assert_eq!(
            sensor.quarantine_per_minute("svc", "ci", None, 5),
            5,
            "unlearned"
        );
        // 20 calls a bucket (120 a minute) for the learning period and beyond.
        let mut t = a.bucket.load(Ordering::Relaxed) * 10;
        a.past.lock().expect("past").spike.started = Some(t - 3600);
        for _ in 0..30 {
            for _ in 0..20 {
                a.call(HOST, "p", &Method::GET, "api.test", 0, t);
            }
            t += 10;
            sensor.tick(t);
        }
        assert_eq!(sensor.quarantine_per_minute("svc", "ci", None, 5), 180);
        assert_eq!(
            sensor.quarantine_per_minute("svc", "ci", None, 500),
            500,
            "floor"
        );
        fs::remove_dir_all(&dir).expect("clean up");
    }

    /// A caller's calls counted among the bucket's callers but not (yet) in its
    /// `requests` (a call racing the bucket's close) do not lift its share over one,
    /// nor its quarantine over the account's.
    #[test]
    fn a_callers_share_is_never_over_one_when_its_calls_race_the_close() {
        let dir = std::env::temp_dir().join(format!("hb-sensor-r-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let sensor = Sensor::open(&dir, config(10));
        let a = sensor.account("svc", "ci").expect("sensed");
        let me = Owner::Sandbox { cgroup_id: 9 };
        let mut t = a.bucket.load(Ordering::Relaxed) * 10;
        a.past.lock().expect("past").spike.started = Some(t - 3600);
        for _ in 0..30 {
            for _ in 0..20 {
                a.call(me, "p", &Method::GET, "api.test", 0, t);
            }
            // Ten calls that reached the callers' table after `requests` was taken.
            for _ in 0..10 {
                a.now.owner_call(owner_key(me), "p");
            }
            t += 10;
            sensor.tick(t);
        }
        assert!(a.share(me) <= 1.0, "share {}", a.share(me));
        assert!(
            sensor.quarantine_per_minute("svc", "ci", Some(me), 5)
                <= sensor.quarantine_per_minute("svc", "ci", None, 5),
            "one caller is held no looser than the whole account"
        );
        fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_spike_names_the_callers_that_made_it_even_spread_over_several() {
        let dir = std::env::temp_dir().join(format!("hb-sensor-s-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let sensor = Sensor::open(&dir, config(10));
        let a = sensor.account("svc", "ci").expect("sensed");
        let flooder = Owner::Sandbox { cgroup_id: 7 };
        let honest = Owner::Sandbox { cgroup_id: 8 };
        let host = Owner::Host { uid: 1000 };
        let mut t = a.bucket.load(Ordering::Relaxed) * 10;
        a.past.lock().expect("past").spike.started = Some(t - 3600);
        let calls = |a: &Account, owner: Owner, policy: &str, n: u32, t: u64| {
            for _ in 0..n {
                a.call(owner, policy, &Method::GET, "api.test", 0, t);
            }
        };
        // A baseline of 20 calls a bucket, 15 by one tenant and 5 by the host.
        for _ in 0..30 {
            calls(&a, honest, "other", 15, t);
            calls(&a, host, "host", 5, t);
            t += 10;
            sensor.tick(t);
        }
        // One sandbox floods (200 a bucket) beside the usual calls: it alone is named.
        let mut fired = Vec::new();
        for _ in 0..3 {
            calls(&a, honest, "other", 16, t);
            calls(&a, host, "host", 5, t);
            calls(&a, flooder, "web", 200, t);
            t += 10;
            fired.extend(
                sensor
                    .tick(t)
                    .into_iter()
                    .filter(|c| matches!(c.verdict, Verdict::Fire(_))),
            );
        }
        let [c] = fired.as_slice() else {
            panic!("one spike");
        };
        assert_eq!(
            c.suspects,
            vec![Suspect {
                owner: flooder,
                policy: "web".into(),
                calls: 200
            }]
        );
        // The flooder's share of the last normal bucket was nothing: held at the floor.
        assert_eq!(
            sensor.quarantine_per_minute("svc", "ci", Some(flooder), 5),
            5
        );
        assert_eq!(
            sensor.quarantine_per_minute("svc", "ci", Some(honest), 5),
            135,
            "15 of 20 calls: 120/min × 1.5 × 0.75"
        );
        // Back to normal, then the same excess spread over twelve callers, each
        // counted: the fewest that explain it are named (eight of equal calls, in
        // caller order); the other four's 72 calls alone would be normal.
        for _ in 0..5 {
            calls(&a, honest, "other", 15, t);
            calls(&a, host, "host", 5, t);
            t += 10;
            sensor.tick(t);
        }
        let mut spread = Vec::new();
        for _ in 0..3 {
            for id in 100..112 {
                calls(&a, Owner::Sandbox { cgroup_id: id }, "web", 18, t);
            }
            t += 10;
            spread.extend(
                sensor
                    .tick(t)
                    .into_iter()
                    .filter(|c| matches!(c.verdict, Verdict::Fire(_))),
            );
        }
        let [c] = spread.as_slice() else {
            panic!("one spike");
        };
        let named: Vec<Owner> = c.suspects.iter().map(|s| s.owner).collect();
        assert_eq!(
            named,
            (100..108)
                .map(|id| Owner::Sandbox { cgroup_id: id })
                .collect::<Vec<_>>(),
            "{:?}",
            c.suspects
        );
        // Back to normal, then a flood spread over three sandboxes beside the usual
        // calls: the three are named, the tenant and the host are not.
        for _ in 0..5 {
            calls(&a, honest, "other", 15, t);
            calls(&a, host, "host", 5, t);
            t += 10;
            sensor.tick(t);
        }
        let mut three = Vec::new();
        for _ in 0..3 {
            calls(&a, honest, "other", 15, t);
            calls(&a, host, "host", 5, t);
            for id in 200..203 {
                calls(&a, Owner::Sandbox { cgroup_id: id }, "web", 70, t);
            }
            t += 10;
            three.extend(
                sensor
                    .tick(t)
                    .into_iter()
                    .filter(|c| matches!(c.verdict, Verdict::Fire(_))),
            );
        }
        let [c] = three.as_slice() else {
            panic!("one spike");
        };
        let mut named: Vec<Owner> = c.suspects.iter().map(|s| s.owner).collect();
        named.sort_by_key(|o| owner_key(*o));
        assert_eq!(
            named,
            (200..203)
                .map(|id| Owner::Sandbox { cgroup_id: id })
                .collect::<Vec<_>>(),
            "{:?}",
            c.suspects
        );
        fs::remove_dir_all(&dir).expect("clean up");
    }

    /// A sensor whose `svc/ci` account has learned `baseline` (callers and their calls
    /// a bucket, in order) for 30 buckets; the sensor, the account and the next
    /// bucket's start.
    fn learned(dir: &Path, baseline: &[(Owner, &str, u32)]) -> (Sensor, Arc<Account>, u64) {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir).expect("dir");
        let sensor = Sensor::open(dir, config(10));
        let a = sensor.account("svc", "ci").expect("sensed");
        let mut t = a.bucket.load(Ordering::Relaxed) * 10;
        // Three buckets of the 60 s learning period left: the first bucket sets the mean.
        a.past.lock().expect("past").spike.started = Some(t - 30);
        for _ in 0..30 {
            for &(owner, policy, n) in baseline {
                for _ in 0..n {
                    a.call(owner, policy, &Method::GET, "api.test", 0, t);
                }
            }
            t += 10;
            let closed = sensor.tick(t);
            assert!(
                closed.iter().all(|c| c.verdict == Verdict::Normal),
                "the baseline is normal"
            );
        }
        (sensor, a, t)
    }

    /// The file as the sensor wrote it before callers were counted by Space-Saving
    /// (callers were never kept in it): read, and an account goes on from it.
    #[test]
    fn a_file_of_the_earlier_format_is_read() {
        let dir = std::env::temp_dir().join(format!("hb-sensor-f-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        fs::write(
            dir.join(FILE),
            r#"{"svc/ci":{"bucket_secs":10,"started":1796000000,"spike":{"started":1796000000,"mean":20.0,"var":4.0,"learned":30,"run":0},"pairs":["GET api.test"],"buckets":[{"start":1796000290,"requests":20,"status_2xx":20,"status_3xx":0,"status_4xx":0,"status_5xx":0,"status_401":0,"status_403":0,"status_429":0,"bytes_up":0,"bytes_down":100,"pairs":1,"handles":0,"scrub_hits":0}]}}"#,
        )
        .expect("write");
        let saved = read(&dir).expect("read")["svc/ci"].clone();
        assert_eq!((saved.spike.learned, saved.buckets.len()), (30, 1));
        let sensor = Sensor::open(&dir, config(10));
        let a = sensor.account("svc", "ci").expect("sensed");
        assert_eq!(a.started, 1_796_000_000);
        assert_eq!(a.saved().spike.learned, 30);
        fs::remove_dir_all(&dir).expect("clean up");
    }

    /// Many callers taking counters early in every bucket (a call each) do not hide a
    /// flood made after them: only the flooder is named, at its guaranteed calls; the
    /// account's heavy honest tenant is not, and keeps its share; the table never holds
    /// more than [`HITTERS`] callers.
    #[test]
    fn decoys_taking_counters_early_do_not_hide_the_flooder() {
        for decoys in [9, 20, 100] {
            let dir =
                std::env::temp_dir().join(format!("hb-sensor-d{decoys}-{}", std::process::id()));
            let honest = Owner::Sandbox { cgroup_id: 8 };
            let flooder = Owner::Sandbox { cgroup_id: 7 };
            let decoy_owners: Vec<Owner> = (1000..1000 + decoys)
                .map(|id| Owner::Sandbox { cgroup_id: id })
                .collect();
            // The decoys' single calls are part of the learned rate: the account is used
            // that way, and they are no spike.
            let mut baseline: Vec<(Owner, &str, u32)> =
                decoy_owners.iter().map(|&o| (o, "web", 1)).collect();
            baseline.push((honest, "other", 15));
            baseline.push((HOST, "host", 5));
            let (sensor, a, mut t) = learned(&dir, &baseline);
            let honest_held = sensor.quarantine_per_minute("svc", "ci", Some(honest), 5);
            let flood: u32 = 3000;
            let mut fired = Vec::new();
            for _ in 0..3 {
                for &d in &decoy_owners {
                    a.call(d, "web", &Method::GET, "api.test", 0, t);
                }
                // The flood, with the tenant's and the host's usual calls in the middle.
                for n in 0..flood {
                    if n == flood / 2 {
                        for _ in 0..15 {
                            a.call(honest, "other", &Method::GET, "api.test", 0, t);
                        }
                        for _ in 0..5 {
                            a.call(HOST, "host", &Method::GET, "api.test", 0, t);
                        }
                    }
                    a.call(flooder, "web", &Method::GET, "api.test", 0, t);
                }
                let table = a.now.hitters.lock().expect("hitters");
                assert!(table.counters.len() <= HITTERS, "{decoys} decoys");
                assert!(table.counters.capacity() <= HITTERS, "{decoys} decoys");
                assert_eq!(
                    table.counters.iter().map(|h| h.calls).sum::<u64>(),
                    u64::from(flood) + 20 + decoys,
                    "every call counted once"
                );
                drop(table);
                t += 10;
                fired.extend(
                    sensor
                        .tick(t)
                        .into_iter()
                        .filter(|c| matches!(c.verdict, Verdict::Fire(_))),
                );
            }
            let [c] = fired.as_slice() else {
                panic!("{decoys} decoys: one spike, got {}", fired.len());
            };
            let [s] = c.suspects.as_slice() else {
                panic!("{decoys} decoys: the flooder alone: {:?}", c.suspects);
            };
            assert_eq!((s.owner, s.policy.as_str()), (flooder, "web"), "{decoys}");
            let total = u64::from(flood) + 20 + decoys;
            assert!(
                s.calls <= u64::from(flood) && s.calls + total / HITTERS as u64 >= u64::from(flood),
                "{decoys} decoys: within total/k of its calls: {s:?}"
            );
            assert_eq!(
                sensor.quarantine_per_minute("svc", "ci", Some(honest), 5),
                honest_held,
                "{decoys} decoys: the tenant's share is its learned one"
            );
            fs::remove_dir_all(&dir).expect("clean up");
        }
    }

    /// A caller that takes over a flooder's counter inherits its count only as error:
    /// it is never charged with (nor named for) the flooder's calls.
    #[test]
    fn a_caller_taking_over_a_flooders_counter_is_not_named_for_its_calls() {
        let state = spike::State {
            started: Some(0),
            mean: 20.0,
            var: 0.0,
            learned: 100,
            run: 0,
        };
        let cfg = config(10);
        let p = spike::Params::of(
            cfg.integrations[0]
                .rotation
                .as_ref()
                .expect("a rotating integration"),
        );
        let mut table = Hitters::default();
        // A flooder's burst, then 31 sandboxes' heavier ones: the flooder's counter has
        // the fewest calls when the innocent caller comes.
        let flooder = owner_key(Owner::Sandbox { cgroup_id: 7 });
        let innocent = owner_key(Owner::Sandbox { cgroup_id: 8 });
        for _ in 0..500 {
            table.count(flooder, "web");
        }
        for id in 100..131 {
            for _ in 0..600 {
                table.count(owner_key(Owner::Sandbox { cgroup_id: id }), "web");
            }
        }
        for _ in 0..15 {
            table.count(innocent, "other");
        }
        let hitters = table.take();
        assert_eq!(hitters.len(), HITTERS);
        let took_over = hitters
            .iter()
            .find(|h| h.key == innocent)
            .expect("the innocent caller is counted");
        assert_eq!(
            (
                took_over.calls,
                took_over.guaranteed(),
                took_over.policy.as_str()
            ),
            (515, 15, "other"),
            "charged with its own calls only"
        );
        assert_eq!(hitters.last().map(|h| h.key), Some(innocent), "ranked last");
        let named = suspects(&state, &p, 10_000, &hitters, &[]);
        assert!(
            named.iter().all(|h| h.key != innocent),
            "the innocent caller is not named: {named:?}"
        );
        // The 500 calls no counter surely made keep the bucket anomalous: the account's.
        assert!(named.is_empty(), "{named:?}");
        let shares = shares(&hitters);
        let innocent_share = shares
            .iter()
            .find(|(k, _)| *k == innocent)
            .map_or(0.0, |s| s.1);
        assert!(
            innocent_share < 0.001,
            "its share is its own calls': {innocent_share}"
        );
        assert!(shares.iter().map(|s| s.1).sum::<f64>() <= 1.0);
    }

    /// A bucket over the hard cap but not far above the baseline: a caller that made its
    /// own steady rate the account's usual load, just under the cap, is named, not the
    /// other tenant whose few calls took the bucket over it.
    #[test]
    fn over_the_cap_near_the_baseline_the_heaviest_caller_is_named() {
        let state = spike::State {
            started: Some(0),
            mean: 36.0,
            var: 0.0,
            learned: 100,
            run: 0,
        };
        let cfg = config(10);
        let mut p = spike::Params::of(
            cfg.integrations[0]
                .rotation
                .as_ref()
                .expect("a rotating integration"),
        );
        p.hard_cap = 40;
        let steady = owner_key(Owner::Sandbox { cgroup_id: 7 });
        let bystander = owner_key(Owner::Sandbox { cgroup_id: 8 });
        let mut table = Hitters::default();
        for _ in 0..36 {
            table.count(steady, "web");
        }
        for _ in 0..10 {
            table.count(bystander, "other");
        }
        let hitters = table.take();
        assert!(state.anomalous(&p, 10_000, 46) && !state.far_above(&p, 10_000, 46));
        let named: Vec<u64> = suspects(&state, &p, 10_000, &hitters, &[(steady, 1.0)])
            .iter()
            .map(|h| h.key)
            .collect();
        assert_eq!(named, vec![steady]);
    }

    /// A flood spread over sandboxes that each call less than the account's heavy
    /// tenant usually does: flooders are named, the tenant (at its usual calls) is not.
    #[test]
    fn a_heavy_caller_at_its_usual_rate_is_not_named_for_a_spread_flood() {
        let dir = std::env::temp_dir().join(format!("hb-sensor-u-{}", std::process::id()));
        let honest = Owner::Sandbox { cgroup_id: 8 };
        let (sensor, a, mut t) = learned(&dir, &[(honest, "other", 15), (HOST, "host", 5)]);
        let mut fired = Vec::new();
        for _ in 0..3 {
            for _ in 0..15 {
                a.call(honest, "other", &Method::GET, "api.test", 0, t);
            }
            for id in 300..306 {
                for _ in 0..12 {
                    a.call(
                        Owner::Sandbox { cgroup_id: id },
                        "web",
                        &Method::GET,
                        "api.test",
                        0,
                        t,
                    );
                }
            }
            for _ in 0..5 {
                a.call(HOST, "host", &Method::GET, "api.test", 0, t);
            }
            t += 10;
            fired.extend(
                sensor
                    .tick(t)
                    .into_iter()
                    .filter(|c| matches!(c.verdict, Verdict::Fire(_))),
            );
        }
        let [c] = fired.as_slice() else {
            panic!("one spike, got {}", fired.len());
        };
        assert!(
            !c.suspects.is_empty()
                && c.suspects
                    .iter()
                    .all(|s| s.policy == "web" && s.calls == 12),
            "flooders only: {:?}",
            c.suspects
        );
        fs::remove_dir_all(&dir).expect("clean up");
    }

    /// However many callers call, the table keeps [`HITTERS`] counters, and a caller
    /// with more than total / [`HITTERS`] of the calls is counted, within that of its
    /// calls.
    #[test]
    fn the_table_stays_bounded_and_keeps_every_heavy_caller() {
        let mut table = Hitters::default();
        let heavy = owner_key(Owner::Host { uid: 1000 });
        let mut total = 0u64;
        for round in 0..100u64 {
            for id in 0..100 {
                table.count(round * 100 + id, "web");
                total += 1;
            }
            for _ in 0..10 {
                table.count(heavy, "host");
                total += 1;
            }
            assert!(table.counters.len() <= HITTERS);
            assert!(table.counters.capacity() <= HITTERS);
        }
        let hitters = table.take();
        assert_eq!(hitters.iter().map(|h| h.calls).sum::<u64>(), total);
        let h = hitters
            .iter()
            .find(|h| h.key == heavy)
            .expect("1000 of 11000 calls, over 1/32: counted");
        assert!(h.guaranteed() <= 1000 && h.guaranteed() + total / HITTERS as u64 >= 1000);
        assert_eq!(hitters[0].key, heavy, "the heaviest first");
        assert!(table.counters.is_empty(), "reset");
    }

    /// What a call costs the request path (`cargo test … bench_call_cost -- --ignored
    /// --nocapture`, a release build for real figures): one caller, 11 callers, 100
    /// callers churning the table; one thread and two.
    #[test]
    #[ignore = "a benchmark: run by hand"]
    fn bench_call_cost() {
        let dir = std::env::temp_dir().join(format!("hb-sensor-b-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let sensor = Sensor::open(&dir, config(10));
        let a = sensor.account("svc", "ci").expect("sensed");
        let t = a.bucket.load(Ordering::Relaxed) * 10;
        let n: u64 = 2_000_000;
        for callers in [1u64, 11, 100] {
            for threads in [1u64, 2] {
                let start = std::time::Instant::now();
                std::thread::scope(|s| {
                    for th in 0..threads {
                        let a = &a;
                        s.spawn(move || {
                            for i in 0..n / threads {
                                let owner = Owner::Sandbox {
                                    cgroup_id: (i + th) % callers,
                                };
                                a.call(owner, "web", &Method::GET, "api.test", 0, t);
                            }
                        });
                    }
                });
                #[expect(clippy::cast_precision_loss, reason = "a benchmark's figures")]
                let ns = start.elapsed().as_nanos() as f64 / n as f64;
                eprintln!("callers {callers:>3} threads {threads}: {ns:.1} ns/call");
                a.now.take_hitters();
            }
            // The caller's count alone, one thread.
            let start = std::time::Instant::now();
            for i in 0..n {
                a.now.owner_call(i % callers, "web");
            }
            #[expect(clippy::cast_precision_loss, reason = "a benchmark's figures")]
            let ns = start.elapsed().as_nanos() as f64 / n as f64;
            eprintln!("callers {callers:>3} the count alone: {ns:.1} ns/call");
            a.now.take_hitters();
        }
        fs::remove_dir_all(&dir).expect("clean up");
    }
}
