//! The `novelty` detector (alert only): a (method, host) pair never seen for an account
//! once its learning period (`novelty_learning_secs` from the sensor's first sight of
//! the account) is over.
//!
//! Owns an account's known pairs and the bucket each was last seen in (which gives the
//! sensor its count of distinct pairs per bucket). A known pair costs a read lock and an
//! atomic swap; only a new pair takes the write lock. At most [`MAX_PAIRS`] pairs are
//! remembered per account (hosts can be wildcards): past it, a new pair is novel once
//! (`overflow`) and then not judged.
//! Must never: hold a path, a query or a value (a method and a host name only).

use std::{
    collections::HashMap,
    sync::{
        RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use http::Method;

/// Pairs remembered per account.
pub const MAX_PAIRS: usize = 256;

/// What a call's pair was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The first time in the current bucket (counted as a distinct pair).
    pub first_in_bucket: bool,
    /// Never seen before (or the table is full and this is its first overflow).
    pub new: bool,
}

#[derive(Default)]
pub struct Pairs {
    /// Method → host → the last bucket it was seen in.
    known: RwLock<HashMap<Method, HashMap<String, AtomicU64>>>,
    len: AtomicU64,
    overflowed: AtomicBool,
}

impl Pairs {
    /// The pairs `list` names (`"METHOD host"`, as [`Pairs::list`] gives them).
    pub fn from_list(list: &[String]) -> Self {
        let pairs = Self::default();
        for item in list.iter().take(MAX_PAIRS) {
            if let Some((m, h)) = item.split_once(' ')
                && let Ok(method) = Method::from_bytes(m.as_bytes())
            {
                pairs.see(&method, h, 0);
            }
        }
        pairs
    }

    /// Notes `method` to `host` in bucket `bucket`.
    pub fn see(&self, method: &Method, host: &str, bucket: u64) -> Seen {
        {
            let known = self.known.read().unwrap_or_else(|e| e.into_inner());
            if let Some(last) = known.get(method).and_then(|hosts| hosts.get(host)) {
                return Seen {
                    first_in_bucket: last.swap(bucket, Ordering::Relaxed) != bucket,
                    new: false,
                };
            }
        }
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = known.get(method).and_then(|hosts| hosts.get(host)) {
            // Added by another call between the two locks.
            return Seen {
                first_in_bucket: last.swap(bucket, Ordering::Relaxed) != bucket,
                new: false,
            };
        }
        if usize::try_from(self.len.load(Ordering::Relaxed)).unwrap_or(usize::MAX) >= MAX_PAIRS {
            return Seen {
                first_in_bucket: false,
                new: !self.overflowed.swap(true, Ordering::Relaxed),
            };
        }
        known
            .entry(method.clone())
            .or_default()
            .insert(host.to_owned(), AtomicU64::new(bucket));
        self.len.fetch_add(1, Ordering::Relaxed);
        Seen {
            first_in_bucket: true,
            new: true,
        }
    }

    /// Every known pair as `"METHOD host"`, sorted.
    pub fn list(&self) -> Vec<String> {
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<String> = known
            .iter()
            .flat_map(|(m, hosts)| hosts.keys().map(move |h| format!("{m} {h}")))
            .collect();
        out.sort();
        out
    }
}

/// Whether a new pair at `now` is a `novelty` signal: only once the account's learning
/// period (from `started`, unix seconds) is over.
pub fn is_novel(seen: Seen, started: u64, learning_secs: u64, now: u64) -> bool {
    seen.new && now >= started.saturating_add(learning_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_pair_is_novel_only_after_learning() {
        let pairs = Pairs::default();
        let learning = 3600;
        let get = pairs.see(&Method::GET, "api.test", 1);
        assert!(get.new && get.first_in_bucket);
        assert!(!is_novel(get, 0, learning, 100), "learned, not novel");
        let again = pairs.see(&Method::GET, "api.test", 1);
        assert!(!again.new && !again.first_in_bucket, "same bucket");
        assert!(
            pairs.see(&Method::GET, "api.test", 2).first_in_bucket,
            "a new bucket counts it again"
        );
        let post = pairs.see(&Method::POST, "api.test", 3);
        assert!(is_novel(post, 0, learning, 3600), "after learning: novel");
        let other = pairs.see(&Method::GET, "uploads.api.test", 3);
        assert!(is_novel(other, 0, learning, 7200), "a new host too");
        assert!(
            !is_novel(pairs.see(&Method::POST, "api.test", 4), 0, learning, 7200),
            "novel once"
        );
        let restored = Pairs::from_list(&pairs.list());
        assert_eq!(restored.list(), pairs.list());
        assert!(!restored.see(&Method::POST, "api.test", 9).new);
    }

    #[test]
    fn past_the_cap_one_overflow_is_novel() {
        let pairs = Pairs::default();
        for i in 0..MAX_PAIRS {
            assert!(pairs.see(&Method::GET, &format!("h{i}.test"), 0).new);
        }
        assert!(pairs.see(&Method::GET, "more.test", 0).new, "the overflow");
        assert!(!pairs.see(&Method::GET, "more2.test", 0).new, "then quiet");
        assert_eq!(pairs.list().len(), MAX_PAIRS);
    }
}
