//! The broker's own counters: connections refused (by reason), connections closed
//! idle, text-gate calls and handle requests refused by their per-caller limits.
//!
//! Kept in memory and written to `state_dir/broker-stats.json` (atomically) when one
//! changes, so `hb-agent status` can show them from another process, as the resolver's
//! counters are. Idle closes are rare: each is written at once. Refusals come in floods
//! (a caller past its share connecting in a loop, or past a rate limit): they are
//! written at most once a second (the file may lag the last second of a flood).
//! Must never: hold anything about a caller beyond a count.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// File below `state_dir`: the broker's counters (read by `status`).
pub const STATS_FILE: &str = "broker-stats.json";

/// Contents of [`STATS_FILE`].
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct BrokerStats {
    /// Connections closed unanswered at accept because their caller could not be
    /// identified, by reason (`peer_gone`, `no_pidfd`, …).
    pub refused: BTreeMap<String, u64>,
    /// Connections closed after `broker.idle_timeout_secs` without a byte moving.
    pub idle_closed: u64,
    /// `POST /v1/scrub` and `/v1/sanitize` calls refused by `broker.text_gate_per_minute`.
    pub text_gate_limited: u64,
    /// `POST /v1/handles` calls refused by `broker.handles_per_minute` (`rate_limited`)
    /// or `broker.max_handles_per_caller` (`handle_limit`).
    #[serde(default)]
    pub handles_limited: u64,
}

#[derive(Default)]
pub struct Stats(Mutex<(BrokerStats, Option<Instant>)>);

impl Stats {
    /// Counts a refused connection; the total refused so far.
    pub fn refused(&self, reason: &str, state_dir: &Path) -> u64 {
        self.bump(state_dir, false, |s| {
            *s.refused.entry(reason.to_owned()).or_default() += 1;
            s.refused.values().sum()
        })
    }

    /// Counts a connection closed idle; the total so far.
    pub fn idle_closed(&self, state_dir: &Path) -> u64 {
        self.bump(state_dir, true, |s| {
            s.idle_closed += 1;
            s.idle_closed
        })
    }

    /// Counts a text-gate call refused by the rate limit; the total so far.
    pub fn text_gate_limited(&self, state_dir: &Path) -> u64 {
        self.bump(state_dir, false, |s| {
            s.text_gate_limited += 1;
            s.text_gate_limited
        })
    }

    /// Counts a handle request refused by a per-caller limit; the total so far.
    pub fn handles_limited(&self, state_dir: &Path) -> u64 {
        self.bump(state_dir, false, |s| {
            s.handles_limited += 1;
            s.handles_limited
        })
    }

    /// Applies `f`; writes the file now if `rare`, else if a second has passed since
    /// the last write.
    fn bump(&self, state_dir: &Path, rare: bool, f: impl FnOnce(&mut BrokerStats) -> u64) -> u64 {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (stats, written) = &mut *guard;
        let total = f(stats);
        let due = rare || written.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if !due {
            return total;
        }
        *written = Some(Instant::now());
        if let Ok(bytes) = serde_json::to_vec(&*stats) {
            let path = state_dir.join(STATS_FILE);
            let tmp = state_dir.join(format!("{STATS_FILE}.tmp"));
            if let Err(e) = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path))
            {
                tracing::warn!(error = %e, "cannot write {}", path.display());
            }
        }
        total
    }
}
