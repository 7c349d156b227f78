//! Answers of recent whole-text scrubs, for texts that repeat (the audit log's records:
//! the same caller, handle, credential and action call after call).
//!
//! Owns: up to [`ENTRIES`] scrubbed texts, each under the SHA-256 digest of the text it
//! came from, all made with one live set and one rule set, which the memo holds weakly
//! (the values behind them are freed as soon as the scrubber lets them go; the weak
//! reference only keeps their addresses from being reused, so an address compared
//! equal is the same set). A scrub under any other live set or rule set (a value was
//! registered or forgotten, rules were loaded) finds nothing here and starts a new
//! memo.
//! Must never: answer a text with what a scan under another live set or rule set gave,
//! or keep a text that was scrubbed (only its digest and the scrubbed answer).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, Weak},
};

use ring::digest::{SHA256, digest};

use super::{LiveSet, RuleSet};

/// How many answers a memo keeps; a full memo starts again empty.
const ENTRIES: usize = 512;

type Digest = [u8; 32];

/// See the module header.
#[derive(Default)]
pub struct Memo {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    live: Weak<LiveSet>,
    rules: Weak<RuleSet>,
    answers: HashMap<Digest, Arc<str>>,
}

impl Inner {
    fn made_with(&self, live: &Arc<LiveSet>, rules: &Arc<RuleSet>) -> bool {
        std::ptr::eq(self.live.as_ptr(), Arc::as_ptr(live))
            && std::ptr::eq(self.rules.as_ptr(), Arc::as_ptr(rules))
    }
}

/// The digest a text is kept under.
pub(super) fn key(text: &str) -> Digest {
    let mut key = [0; 32];
    key.copy_from_slice(digest(&SHA256, text.as_bytes()).as_ref());
    key
}

impl Memo {
    /// What the scrub of the text of `key` gave under `live` and `rules`, if kept.
    pub(super) fn get(
        &self,
        key: &Digest,
        live: &Arc<LiveSet>,
        rules: &Arc<RuleSet>,
    ) -> Option<Arc<str>> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if !inner.made_with(live, rules) {
            return None;
        }
        inner.answers.get(key).cloned()
    }

    /// Keeps what the scrub of the text of `key` gave under `live` and `rules`; a memo
    /// made with other sets is emptied first (every answer in it was made with the sets
    /// it holds).
    pub(super) fn keep(
        &self,
        key: Digest,
        live: &Arc<LiveSet>,
        rules: &Arc<RuleSet>,
        answer: Arc<str>,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if !inner.made_with(live, rules) || inner.answers.len() >= ENTRIES {
            inner.answers.clear();
            inner.live = Arc::downgrade(live);
            inner.rules = Arc::downgrade(rules);
        }
        inner.answers.insert(key, answer);
    }
}
