//! Keys being minted: from the moment a rotator is asked for an integration's new value
//! until that value is registered with the scrubber (or the ask came to nothing).
//!
//! A provider holds — and lists, on the key-listing APIs many have — a key from the
//! moment it commits it, before its answer to `create` reaches the agent (a slow
//! answer, a long round trip, a rotator tool still writing its files). An upstream
//! answer produced in that window can carry the key no scrubber knows yet; it is the
//! account's next ACTIVE key. So an answer from the minting integration's hosts (or its
//! HTTP rotator's), or to a call with one of its handles, that is ready while a mint is
//! in flight waits until the mint is over before it is scrubbed: then the scrubber
//! knows the value. An answer ready before the mint began was made before the provider
//! minted anything. It waits at most [`HOLD`]: a provider that has not answered its
//! create by then is treated as one that timed out — the answer goes, and a key minted
//! meanwhile is unknown to the scrubber until a retry returns it (an exec rotator
//! killed at its timeout leaves one the agent never learns). Waiting longer, a hung
//! provider would fail the calls of every tenant of the integration, which an outage
//! must not.
//!
//! While a mint's outcome is unknown — from the moment the hold expires, or the create
//! timed out or its rotator was killed, until a retry returned the value (or, for an
//! orphan nobody will ever return, until a later rotation of the integration finishes)
//! — the answers the hold would have held go through the pending-key pass instead
//! (`scrub::shape`): tokens of the shape of the value being replaced are redacted.
//!
//! Mints in flight and unsettled are written to `state_dir` at each change, so an
//! agent stopped (or crashed) meanwhile carries them over: at its start
//! ([`super::restore_unsettled`]) each comes back unsettled — one that was in flight is
//! `unknown` for an HTTP rotator (a retry with the same Idempotency-Key may return it)
//! and `orphan` for an exec one — with its shape derived again from the value its
//! rotation replaces (shapes are never written: a derived prefix is part of a key).
//!
//! Owns: the count of mints in flight per integration, and the shapes of the values
//! they replace while their outcome is unknown.
//! Must never: let [`Minting::wait`] return `true` while a mint of an integration its
//! caller is concerned with is in flight; forget a shape whose key may still be listed.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use serde::Serialize;
use tokio::sync::watch;

use crate::scrub::shape::Shape;

/// The longest an answer waits for a mint (providers answer a create in well under it).
pub const HOLD: Duration = Duration::from_secs(5);

pub struct Minting {
    /// Mints in flight per integration (absent: none).
    inflight: watch::Sender<HashMap<String, usize>>,
    /// The shape of the value each mint replaces, by mint: while it is in flight, and
    /// after it while its outcome is unknown.
    shapes: Mutex<HashMap<u64, Pending>>,
    next: std::sync::atomic::AtomicU64,
    /// Where the unsettled mints are written for `rotation status` (none: not kept).
    path: Option<std::path::PathBuf>,
    /// Held from a snapshot of the mints to its rename into place: writes of
    /// concurrent rotations land in the order they were taken, never interleaved.
    writing: Mutex<()>,
}

/// File name below `state_dir`.
const FILE: &str = "unsettled_mints.json";

impl Default for Minting {
    fn default() -> Self {
        Self {
            inflight: watch::Sender::new(HashMap::new()),
            shapes: Mutex::new(HashMap::new()),
            next: std::sync::atomic::AtomicU64::new(0),
            path: None,
            writing: Mutex::new(()),
        }
    }
}

/// What is known of a mint's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The rotator has not answered yet.
    InFlight,
    /// Its create timed out: a retry (same Idempotency-Key) may still return the key.
    Unknown,
    /// Its rotator was killed: nobody will ever return the key.
    Orphan,
    /// It was in flight when the last agent stopped: unknown or orphan, as its rotator
    /// says (see [`Minting::restore`]); judged an orphan until then.
    WasInFlight,
}

struct Pending {
    integration: String,
    rotation: String,
    shape: Option<Arc<Shape>>,
    outcome: Outcome,
    since: SystemTime,
}

/// A mint whose outcome is not settled, as `rotation status` shows it and the file
/// keeps it (never the shape).
#[derive(Debug, Serialize, serde::Deserialize, Clone, PartialEq, Eq)]
pub struct Unsettled {
    pub integration: String,
    pub rotation: String,
    /// `in_flight` (only in the file: its rotator has not answered yet), `unknown` or
    /// `orphan`.
    pub outcome: String,
    pub since: String,
}

/// A mint carried over from before a restart whose shape is still to be derived.
pub struct Restored {
    pub serial: u64,
    pub integration: String,
    pub rotation: String,
}

/// One mint in flight; over when dropped.
pub struct Mint<'a> {
    minting: &'a Minting,
    integration: String,
    serial: u64,
}

impl Mint<'_> {
    /// Its rotator's answer never came (`orphan`: and never will): the shape pass stays
    /// on for the integration after the mint is over.
    pub fn unsettled(&self, outcome: Outcome) {
        let mut shapes = self.minting.lock();
        if let Some(p) = shapes.get_mut(&self.serial) {
            p.outcome = outcome;
            p.since = SystemTime::now();
        }
        drop(shapes);
        self.minting.write();
    }
}

impl Minting {
    /// The mints the last agent left in flight or unsettled (see [`read`]), each as an
    /// unsettled mint whose outcome is `orphan` for now and whose shape is not derived
    /// yet ([`Minting::restored`], [`Minting::restore`]); written below `state_dir` on
    /// each change.
    pub fn open(state_dir: &std::path::Path) -> Self {
        let minting = Self {
            path: Some(state_dir.join(FILE)),
            ..Self::default()
        };
        let path = state_dir.join(FILE);
        let kept: Vec<Unsettled> = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            read => match read
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(kept) => kept,
                Err(e) => {
                    // Kept aside for an operator, never overwritten unread.
                    let aside = path.with_extension("json.unreadable");
                    let _ = std::fs::rename(&path, &aside);
                    tracing::error!(error = %e, path = %aside.display(), "the unsettled mints of the last run cannot be read: their keys' shape passes are lost");
                    Vec::new()
                }
            },
        };
        for u in kept {
            let serial = minting.serial();
            minting.lock().insert(
                serial,
                Pending {
                    integration: u.integration,
                    rotation: u.rotation,
                    shape: None,
                    outcome: match u.outcome.as_str() {
                        "unknown" => Outcome::Unknown,
                        "in_flight" => Outcome::WasInFlight,
                        _ => Outcome::Orphan,
                    },
                    since: humantime::parse_rfc3339(&u.since).unwrap_or_else(|_| SystemTime::now()),
                },
            );
        }
        minting.write();
        minting
    }

    fn serial(&self) -> u64 {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The mints carried over from before a restart whose shape is not derived yet.
    pub fn restored(&self) -> Vec<Restored> {
        self.lock()
            .iter()
            .filter(|(_, p)| p.shape.is_none() && p.outcome != Outcome::InFlight)
            .map(|(&serial, p)| Restored {
                serial,
                integration: p.integration.clone(),
                rotation: p.rotation.clone(),
            })
            .collect()
    }

    /// Gives a carried-over mint its shape and settles what a mint in flight at the
    /// stop became (`outcome`: unknown or orphan).
    pub fn restore(&self, serial: u64, shape: Option<Shape>, outcome: Outcome) {
        if let Some(p) = self.lock().get_mut(&serial) {
            p.shape = shape.map(Arc::new);
            if p.outcome == Outcome::WasInFlight {
                p.outcome = outcome;
            }
        }
        self.write();
    }

    fn write(&self) {
        let Some(path) = &self.path else {
            return;
        };
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec(&self.kept())
            .map_err(std::io::Error::other)
            .and_then(|text| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %path.display(), "cannot write the unsettled mints");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.shapes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A mint of `integration` begins (before its rotator is asked) for the rotation
    /// `rotation`, replacing a value of `shape`.
    pub fn begin(&self, integration: &str, rotation: &str, shape: Option<Shape>) -> Mint<'_> {
        let serial = self.serial();
        self.lock().insert(
            serial,
            Pending {
                integration: integration.to_owned(),
                rotation: rotation.to_owned(),
                shape: shape.map(Arc::new),
                outcome: Outcome::InFlight,
                since: SystemTime::now(),
            },
        );
        self.inflight.send_modify(|m| {
            *m.entry(integration.to_owned()).or_default() += 1;
        });
        // Kept before the rotator is asked: a stop while it mints must not forget it.
        self.write();
        Mint {
            minting: self,
            integration: integration.to_owned(),
            serial,
        }
    }

    /// Whether any mint is in flight or unsettled (a cheap check before
    /// [`Minting::wait`]).
    pub fn any(&self) -> bool {
        !self.inflight.borrow().is_empty() || !self.lock().is_empty()
    }

    /// The rotation `rotation` has the value its rotator minted in hand (a retry
    /// returned it, and the scrubber knows it): its timed-out creates are settled.
    pub fn settled(&self, rotation: &str) {
        let mut shapes = self.lock();
        let before = shapes.len();
        shapes.retain(|_, p| !(p.rotation == rotation && p.outcome == Outcome::Unknown));
        let changed = shapes.len() != before;
        drop(shapes);
        if changed {
            self.write();
        }
    }

    /// A rotation of `integration` finished: the unsettled mints of its other rotations
    /// no longer keep the shape pass on.
    pub fn finished(&self, integration: &str, rotation: &str) {
        let mut shapes = self.lock();
        let before = shapes.len();
        shapes.retain(|_, p| {
            p.outcome == Outcome::InFlight || p.integration != integration || p.rotation == rotation
        });
        let changed = shapes.len() != before;
        drop(shapes);
        if changed {
            self.write();
        }
    }

    /// The shapes whose pass an answer concerning the integrations `concerned` says yes
    /// to goes through: those of unsettled mints, and (`expired`: the hold for it
    /// expired) of mints in flight.
    pub fn shapes(&self, concerned: impl Fn(&str) -> bool, expired: bool) -> Vec<Arc<Shape>> {
        self.lock()
            .values()
            .filter(|p| concerned(&p.integration) && (expired || p.outcome != Outcome::InFlight))
            .filter_map(|p| p.shape.clone())
            .collect()
    }

    /// What the file keeps: the mints in flight and unsettled, oldest first.
    fn kept(&self) -> Vec<Unsettled> {
        let mut out: Vec<(SystemTime, Unsettled)> = self
            .lock()
            .values()
            .map(|p| {
                (
                    p.since,
                    Unsettled {
                        integration: p.integration.clone(),
                        rotation: p.rotation.clone(),
                        outcome: match p.outcome {
                            Outcome::InFlight => "in_flight",
                            Outcome::Unknown => "unknown",
                            Outcome::Orphan => "orphan",
                            // Not yet restored: kept as it was read.
                            Outcome::WasInFlight => "in_flight",
                        }
                        .to_owned(),
                        since: humantime::format_rfc3339_seconds(p.since).to_string(),
                    },
                )
            })
            .collect();
        out.sort_by_key(|(t, _)| *t);
        out.into_iter().map(|(_, u)| u).collect()
    }

    /// Waits until no integration `concerned` says yes to has a mint in flight, at most
    /// `limit`; `false` if it still had one then.
    pub async fn wait(&self, concerned: impl Fn(&str) -> bool, limit: Duration) -> bool {
        let mut rx = self.inflight.subscribe();
        let clear = |m: &HashMap<String, usize>| !m.keys().any(|i| concerned(i));
        matches!(
            tokio::time::timeout(limit, rx.wait_for(clear)).await,
            Ok(Ok(_))
        )
    }
}

/// The unsettled mints as the agent last wrote them (for the CLI); `None` if never.
pub fn read(state_dir: &std::path::Path) -> Option<Vec<Unsettled>> {
    serde_json::from_slice(&std::fs::read(state_dir.join(FILE)).ok()?).ok()
}

impl Drop for Mint<'_> {
    fn drop(&mut self) {
        let over = {
            let mut shapes = self.minting.lock();
            shapes
                .get(&self.serial)
                .is_some_and(|p| p.outcome == Outcome::InFlight)
                && shapes.remove(&self.serial).is_some()
        };
        if over {
            self.minting.write();
        }
        self.minting.inflight.send_modify(|m| {
            if let Some(n) = m.get_mut(&self.integration) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.integration);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_waits_for_the_mint_of_its_integration_only() {
        let minting = Minting::default();
        assert!(!minting.any());
        let mint = minting.begin("svc", "r1", None);
        assert!(minting.any());
        // Another integration's answer does not wait.
        assert!(minting.wait(|i| i == "other", Duration::ZERO).await);
        // Its own waits, and gives up at the limit.
        assert!(
            !minting
                .wait(|i| i == "svc", Duration::from_millis(20))
                .await
        );
        let waiter = minting.wait(|i| i == "svc", Duration::from_secs(5));
        let release = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(mint);
        };
        let (clear, ()) = tokio::join!(waiter, release);
        assert!(clear, "released when the mint is over");
        assert!(!minting.any());
    }

    #[tokio::test]
    async fn two_mints_of_one_integration_hold_until_both_are_over() {
        let minting = Minting::default();
        let a = minting.begin("svc", "r1", None);
        let b = minting.begin("svc", "r1", None);
        drop(a);
        assert!(
            !minting
                .wait(|i| i == "svc", Duration::from_millis(10))
                .await
        );
        drop(b);
        assert!(minting.wait(|i| i == "svc", Duration::ZERO).await);
    }

    fn shape() -> Option<Shape> {
        Some(Shape::Derived {
            prefix: b"key-".to_vec(),
            len: 40,
            classes: 5,
        })
    }

    #[test]
    fn a_timed_out_create_keeps_the_shape_pass_on_until_a_retry_returns_the_key() {
        let minting = Minting::default();
        let mint = minting.begin("svc", "r1", shape());
        // In flight: only an answer whose hold expired goes through the pass.
        assert!(minting.shapes(|i| i == "svc", false).is_empty());
        assert_eq!(minting.shapes(|i| i == "svc", true).len(), 1);
        assert!(minting.shapes(|i| i == "other", true).is_empty());
        mint.unsettled(Outcome::Unknown);
        drop(mint);
        assert!(minting.any());
        assert_eq!(minting.shapes(|i| i == "svc", false).len(), 1);
        assert_eq!(minting.kept()[0].outcome, "unknown");
        // The retry returned it.
        let retry = minting.begin("svc", "r1", shape());
        drop(retry);
        minting.settled("r1");
        assert!(minting.shapes(|i| i == "svc", true).is_empty());
        assert!(!minting.any());
    }

    #[tokio::test]
    async fn mints_in_flight_and_unsettled_at_a_stop_come_back_unsettled_after_it() {
        let dir = std::env::temp_dir().join(format!("hb-minting-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        {
            let before = Minting::open(&dir);
            let timed_out = before.begin("svc", "r1", shape());
            timed_out.unsettled(Outcome::Unknown);
            drop(timed_out);
            // Still in flight when the agent stops (the mint is never dropped).
            std::mem::forget(before.begin("web", "r2", shape()));
        }
        let after = Minting::open(&dir);
        let mut restored = after.restored();
        restored.sort_by(|a, b| a.rotation.cmp(&b.rotation));
        assert_eq!(
            restored
                .iter()
                .map(|r| (r.integration.as_str(), r.rotation.as_str()))
                .collect::<Vec<_>>(),
            [("svc", "r1"), ("web", "r2")]
        );
        // Unsettled (answers are not held for them), but without a shape until restored.
        assert!(after.any());
        assert!(after.shapes(|_| true, false).is_empty());
        for r in &restored {
            after.restore(r.serial, shape(), Outcome::Unknown);
        }
        assert!(after.restored().is_empty());
        assert_eq!(after.shapes(|i| i == "web", false).len(), 1);
        assert!(
            after.wait(|_| true, Duration::ZERO).await,
            "nothing is in flight now"
        );
        // The one in flight at the stop became unknown: a retry's key settles it.
        after.settled("r2");
        assert_eq!(after.shapes(|_| true, false).len(), 1);
        let kept = read(&dir).expect("the file");
        assert_eq!(kept.len(), 1);
        assert_eq!(
            (kept[0].rotation.as_str(), kept[0].outcome.as_str()),
            ("r1", "unknown")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unreadable_file_of_the_last_run_is_kept_aside_not_overwritten() {
        let dir = std::env::temp_dir().join(format!("hb-minting-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(FILE), b"[{\"integration\": \"svc\", \"rot").expect("file");
        let minting = Minting::open(&dir);
        assert!(!minting.any());
        assert_eq!(
            std::fs::read(dir.join("unsettled_mints.json.unreadable")).expect("kept aside"),
            b"[{\"integration\": \"svc\", \"rot"
        );
        assert_eq!(read(&dir), Some(Vec::new()), "a fresh file for this run");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_orphan_keeps_the_shape_pass_on_until_a_later_rotation_finishes() {
        let minting = Minting::default();
        let mint = minting.begin("svc", "r1", shape());
        mint.unsettled(Outcome::Orphan);
        drop(mint);
        // Its own rotation getting a key settles nothing: the orphan is another key.
        minting.settled("r1");
        minting.finished("svc", "r1");
        assert_eq!(minting.shapes(|i| i == "svc", false).len(), 1);
        assert_eq!(minting.kept()[0].outcome, "orphan");
        minting.finished("svc", "r2");
        assert!(minting.shapes(|i| i == "svc", false).is_empty());
        assert!(minting.kept().is_empty());
    }
}
