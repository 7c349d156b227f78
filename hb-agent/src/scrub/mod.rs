//! The scrubber: the one place that finds secrets in outgoing bytes and replaces them
//! with `[REDACTED:<family>]`.
//!
//! Owns: the known token families (`families`), the registry of live secrets this
//! process holds (`live`) and their forms cut by line breaks (`wrapped`), runs of one
//! credential's characters (`fragments`, for the answer to the call that carried it),
//! values spread out with NUL bytes (`spread`: UTF-32 and kin; the live forms hold UTF-32
//! and stacked encodings too, so every exit finds those), and whole-buffer and
//! streaming scrubs (`engine`, `stream`), and rule files in gitleaks's format
//! (`rules_file` reads them, `loaded` runs them).
//! Every exit of hb (broker responses, error messages, event stream, audit log,
//! `POST /v1/scrub`, `hb-agent scrub`) goes through one shared `Arc<Scrubber>`.
//! Must never: return, log or print a matched value — callers get the family, the input
//! offset and length, and where the marker sits in the output; or block a scrub on a
//! registration (a scrub takes the live set's `Arc` under a read lock and lets go).

mod assigned;
#[cfg(test)]
mod effort_tests;
mod engine;
pub mod exits;
mod families;
#[cfg(test)]
mod forms_tests;
mod fragments;
mod inner;
mod live;
mod loaded;
mod matcher;
mod memo;
mod packed;
mod rules_file;
#[cfg(test)]
mod rules_tests;
mod scan;
pub mod shape;
mod spread;
#[cfg(test)]
mod stacked_tests;
mod stream;
#[cfg(test)]
mod tests;
mod wrapped;

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex, PoisonError, RwLock},
};

use serde::Serialize;

use crate::secret::Secret;
use engine::Engine;
use families::Families;
pub use fragments::Fragments;
use live::{LiveEntry, LiveSet, Sampler, Segment};
pub use live::{MAX_SECRET_LEN, MIN_SECRET_LEN};
pub use loaded::{LoadedInfo, RuleSet};
pub use memo::Memo;
pub use packed::cut_packed;
pub use rules_file::{FileReport, check_file};
use spread::Squeezed;
pub use spread::cut_spread;
pub use stream::ScrubStream;

/// One redacted span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redaction {
    /// Family name (`github_pat`, `jwt`, …), a loaded rule's name (`gitlab-pat`) or the
    /// live value's label.
    pub family: &'static str,
    /// Byte offset of the redacted span in the **input**.
    pub offset: usize,
    /// Byte length of the redacted span in the input.
    pub len: usize,
    /// Byte offset of its `[REDACTED:…]` marker in the **output**.
    pub output_offset: usize,
}

/// Some live values of a scrubber, looked for without the token families (see
/// [`Scrubber::visible_values`]).
pub struct VisibleValues(Option<LiveSet>);

impl VisibleValues {
    /// Whether `input` holds a form of one of the values, or does once its NUL bytes
    /// are dropped and its escapes decoded (see [`Squeezed`]) or its wrapped base64
    /// joined (see [`any_view`]).
    pub fn contains(&self, input: &[u8]) -> bool {
        self.0
            .as_ref()
            .is_some_and(|live| any_view(input, |text| live.next_hit(text, 0).is_some()))
    }
}

/// Which live values a scrub or a search looks for (a scrub runs every token family
/// whatever it is).
#[derive(Clone, Copy)]
pub enum Sees<'a> {
    /// Every registered value.
    All,
    /// These values only.
    Only(&'a HashSet<LiveId>),
    /// Every registered value but these.
    AllBut(&'a HashSet<LiveId>),
}

/// The result of [`Scrubber::scrub`].
pub struct Scrubbed {
    pub bytes: Vec<u8>,
    pub redactions: Vec<Redaction>,
}

/// Names a registered live value, to unregister it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LiveId(u64);

#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    #[error(
        "a live secret of {len} bytes is too short to scrub (at least {min}): it would redact ordinary text"
    )]
    TooShort { len: usize, min: usize },
    #[error("a live secret of {len} bytes is too long to scrub (at most {max})")]
    TooLong { len: usize, max: usize },
    #[error("label {label:?} is not a snake_case name (a-z, 0-9, _; 1 to 40 characters)")]
    BadLabel { label: &'static str },
    #[error("building the live-secret automaton failed (nothing was registered)")]
    Build(#[source] aho_corasick::BuildError),
}

/// A family as listed by `hb-agent scrub --list-families`.
#[derive(Debug, Serialize)]
pub struct FamilyInfo {
    pub name: &'static str,
    pub about: Vec<&'static str>,
}

#[derive(Default)]
struct Registry {
    next: u64,
    /// The live values, by id.
    entries: BTreeMap<u64, Arc<LiveEntry>>,
    /// Oldest (largest) first; see [`LiveSet`].
    segments: Vec<Arc<Segment>>,
    /// Unregistered ids whose forms are still in a segment.
    dead: HashSet<u64>,
    sampler: Arc<Sampler>,
}

impl Registry {
    /// A segment of the values of `segments` that are still live.
    fn rebuild<'a>(
        &self,
        segments: impl Iterator<Item = &'a Segment>,
    ) -> Result<Option<Segment>, aho_corasick::BuildError> {
        Segment::build(
            segments
                .flat_map(|s| s.entries.iter())
                .filter(|(id, _)| !self.dead.contains(id))
                .map(|(id, e)| (*id, Arc::clone(e)))
                .collect(),
        )
    }

    /// Merges the newest segments while the one before is under twice the newest's
    /// size, so sizes shrink geometrically and there are O(log n) segments.
    fn merge_newest(&mut self) {
        while let [.., older, newer] = self.segments.as_slice() {
            if older.forms() >= 2 * newer.forms() {
                break;
            }
            // Both built alone; if together they do not, they stay apart.
            let Ok(merged) = self.rebuild([&**older, &**newer].into_iter()) else {
                break;
            };
            let gone: Vec<u64> = [older, newer]
                .iter()
                .flat_map(|s| s.entries.iter().map(|(id, _)| *id))
                .collect();
            self.segments.truncate(self.segments.len() - 2);
            self.segments.extend(merged.map(Arc::new));
            for id in gone {
                self.dead.remove(&id);
            }
        }
    }

    fn fresh_sampler(&mut self) {
        self.sampler = Arc::new(Sampler::new(self.entries.values().map(|e| &**e)));
    }

    fn live_set(&self) -> LiveSet {
        LiveSet {
            segments: self.segments.clone(),
            sampler: Arc::clone(&self.sampler),
            dead: Arc::new(self.dead.clone()),
            longest: self
                .entries
                .values()
                .flat_map(|e| e.forms.iter().map(Secret::len))
                .max()
                .unwrap_or(0),
            longest_b64: self
                .entries
                .values()
                .flat_map(|e| e.forms.iter())
                .filter(|f| f.expose().iter().all(|&b| wrapped::is_base64(b)))
                .map(Secret::len)
                .max()
                .unwrap_or(0),
        }
    }
}

/// Finds and redacts secrets. `Send + Sync`: share one as `Arc<Scrubber>`.
pub struct Scrubber {
    families: Families,
    /// Writers (register, unregister) serialise here and build the next live set (the
    /// segments they share with the current one are `Arc`s, not copies).
    registry: Mutex<Registry>,
    /// The current live set; scrubs clone the `Arc` and drop the lock at once.
    live: RwLock<Arc<LiveSet>>,
    /// Loaded rule files (none unless configured); taken as the live set is.
    rules: RwLock<Arc<RuleSet>>,
    /// Scans made by [`Scrubber::matching`]: tests count them, never time them.
    #[cfg(test)]
    pub(crate) visible_scans: std::sync::atomic::AtomicUsize,
}

/// The process's one scrubber: the broker, the audit log, the event stream, error
/// messages and the panic hook all use it, so a value registered once is removed
/// everywhere.
pub fn global() -> &'static Arc<Scrubber> {
    static GLOBAL: std::sync::OnceLock<Arc<Scrubber>> = std::sync::OnceLock::new();
    GLOBAL.get_or_init(|| Arc::new(Scrubber::new()))
}

impl Default for Scrubber {
    fn default() -> Self {
        Self::new()
    }
}

impl Scrubber {
    /// The built-in families, no live values.
    pub fn new() -> Self {
        Self {
            families: Families::new(),
            registry: Mutex::default(),
            live: RwLock::new(Arc::new(LiveSet::empty())),
            rules: RwLock::new(Arc::new(RuleSet::default())),
            #[cfg(test)]
            visible_scans: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The built-in families and the rules of `rules`.
    pub fn with_rules(rules: Arc<RuleSet>) -> Self {
        let s = Self::new();
        s.set_rules(rules);
        s
    }

    /// Runs `rules` (besides the built-in families) in every scrub from now on; streams
    /// already open keep the rules they started with.
    pub fn set_rules(&self, rules: Arc<RuleSet>) {
        *self.rules.write().unwrap_or_else(PoisonError::into_inner) = rules;
    }

    /// The loaded rules, for `--list-families`.
    pub fn loaded_rules(&self) -> Vec<LoadedInfo> {
        self.rules_snapshot().infos()
    }

    /// Every built-in family (a name may have several rules).
    pub fn families() -> Vec<FamilyInfo> {
        families::names()
            .into_iter()
            .map(|(name, about)| FamilyInfo { name, about })
            .collect()
    }

    /// Scrubs `secret` (and its encodings) from everything scrubbed from now on,
    /// redacted as `[REDACTED:<label>]` (`live_secret`, `hb_handle`, …).
    pub fn register(&self, label: &'static str, secret: &Secret) -> Result<LiveId, ScrubError> {
        let mut ids = self.register_many([(label, secret)])?;
        Ok(ids.remove(0))
    }

    /// Registers many values at once (one new automaton segment for all). All or
    /// nothing.
    pub fn register_many<'s>(
        &self,
        values: impl IntoIterator<Item = (&'static str, &'s Secret)>,
    ) -> Result<Vec<LiveId>, ScrubError> {
        let mut entries = Vec::new();
        for (label, secret) in values {
            check_label(label)?;
            let len = secret.len();
            if len < MIN_SECRET_LEN {
                return Err(ScrubError::TooShort {
                    len,
                    min: MIN_SECRET_LEN,
                });
            }
            if len > MAX_SECRET_LEN {
                return Err(ScrubError::TooLong {
                    len,
                    max: MAX_SECRET_LEN,
                });
            }
            entries.push(LiveEntry {
                label,
                forms: live::forms(secret.expose()),
            });
        }
        let entries: Vec<Arc<LiveEntry>> = entries.into_iter().map(Arc::new).collect();
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let first = registry.next;
        let ids: Vec<u64> = (first..first + entries.len() as u64).collect();
        let segment = Segment::build(ids.iter().copied().zip(entries.iter().cloned()).collect())
            .map_err(ScrubError::Build)?;
        registry.next = first + ids.len() as u64;
        for (id, entry) in ids.iter().zip(&entries) {
            registry.entries.insert(*id, Arc::clone(entry));
        }
        registry.segments.extend(segment.map(Arc::new));
        registry.merge_newest();
        if entries.iter().all(|e| registry.sampler.fits(e)) {
            let mut sampler = Sampler::clone(&registry.sampler);
            for e in &entries {
                sampler.add(e);
            }
            registry.sampler = Arc::new(sampler);
        } else {
            registry.fresh_sampler();
        }
        self.publish(&registry);
        Ok(ids.into_iter().map(LiveId).collect())
    }

    /// Stops scrubbing a value (its handle was revoked, its credential rotated away).
    /// Returns whether it was registered.
    pub fn unregister(&self, id: LiveId) -> bool {
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if registry.entries.remove(&id.0).is_none() {
            return false;
        }
        registry.dead.insert(id.0);
        let holder = registry
            .segments
            .iter()
            .position(|s| s.entries.iter().any(|(x, _)| *x == id.0));
        if let Some(i) = holder {
            let segment = Arc::clone(&registry.segments[i]);
            let dead = segment
                .entries
                .iter()
                .filter(|(x, _)| registry.dead.contains(x))
                .count();
            // Half dead: rebuild it with the live half (amortised: each rebuild follows
            // as many unregistrations as it keeps values), and the sampler with it.
            if 2 * dead > segment.entries.len()
                && let Ok(rebuilt) = registry.rebuild(std::iter::once(&*segment))
            {
                match rebuilt {
                    Some(s) => registry.segments[i] = Arc::new(s),
                    None => {
                        registry.segments.remove(i);
                    }
                }
                for (x, _) in &segment.entries {
                    registry.dead.remove(x);
                }
                registry.fresh_sampler();
            }
        }
        self.publish(&registry);
        true
    }

    /// How many live values are registered.
    pub fn live_count(&self) -> usize {
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }

    /// Scrubs a whole buffer (any bytes, UTF-8 or not).
    pub fn scrub(&self, input: &[u8]) -> Scrubbed {
        let live = self.live_snapshot();
        let rules = self.rules_snapshot();
        let mut engine = Engine::default();
        let mut bytes = Vec::with_capacity(input.len());
        engine.advance(&self.families, &rules, &live, input, 0, true, &mut bytes);
        Scrubbed {
            bytes,
            redactions: std::mem::take(&mut engine.redactions),
        }
    }

    /// [`Scrubber::scrub`], and the bytes rule evaluation examined (the work the tests
    /// bound per input byte).
    #[cfg(test)]
    pub(super) fn scrub_counting(&self, input: &[u8]) -> (Scrubbed, u64) {
        let live = self.live_snapshot();
        let rules = self.rules_snapshot();
        let mut engine = Engine::default();
        let mut bytes = Vec::with_capacity(input.len());
        engine.advance(&self.families, &rules, &live, input, 0, true, &mut bytes);
        let work = engine.work();
        let redactions = std::mem::take(&mut engine.redactions);
        (Scrubbed { bytes, redactions }, work)
    }

    /// Scrubs text. Markers are ASCII; a live value that is not UTF-8 itself could cut
    /// a character, which then comes out as U+FFFD.
    pub fn scrub_str(&self, input: &str) -> (String, Vec<Redaction>) {
        let Scrubbed { bytes, redactions } = self.scrub(input.as_bytes());
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        (text, redactions)
    }

    /// [`Scrubber::scrub_str`]'s text, answered from `memo` when the same text was
    /// scrubbed there under the live set and rules of now (see [`Memo`]): for texts
    /// that repeat, which then cost a digest instead of a scan.
    pub fn scrub_str_memo(&self, memo: &Memo, input: &str) -> Arc<str> {
        let live = self.live_snapshot();
        let rules = self.rules_snapshot();
        let key = memo::key(input);
        if let Some(answer) = memo.get(&key, &live, &rules) {
            return answer;
        }
        let mut engine = Engine::default();
        let mut bytes = Vec::with_capacity(input.len());
        engine.advance(
            &self.families,
            &rules,
            &live,
            input.as_bytes(),
            0,
            true,
            &mut bytes,
        );
        let answer: Arc<str> = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
            .into();
        memo.keep(key, &live, &rules, Arc::clone(&answer));
        answer
    }

    /// Scrubs a buffer as [`Scrubber::scrub`] does, matching the live values `sees`
    /// says (every family still applies). With [`Sees::Only`] the answer is exactly what
    /// a scrubber that never registered the other values would give, so it tells the
    /// caller nothing about them: for answers to callers that choose what is scrubbed
    /// (a sandbox's `POST /v1/scrub`).
    pub fn scrub_seeing(&self, input: &[u8], sees: Sees<'_>) -> Scrubbed {
        let view = self.seen(sees);
        let rules = self.rules_snapshot();
        let mut engine = Engine::default();
        let mut bytes = Vec::with_capacity(input.len());
        engine.advance(&self.families, &rules, &view, input, 0, true, &mut bytes);
        Scrubbed {
            bytes,
            redactions: std::mem::take(&mut engine.redactions),
        }
    }

    /// Which of the live values in `visible` `input` holds a form of, the token families
    /// left out (a family's span can swallow a live value's: `Bearer <value>` is
    /// redacted as `bearer`): one scan, however many values are looked for (the
    /// automata say whose form each match is). For the detectors that must know whose
    /// value a request carries; never says where.
    pub fn matching_visible(&self, input: &[u8], visible: &HashSet<LiveId>) -> HashSet<LiveId> {
        if visible.is_empty() {
            return HashSet::new();
        }
        self.matching(input, Sees::Only(visible))
    }

    /// Which of the live values `sees` says `input` holds a form of, as
    /// [`Scrubber::matching_visible`] finds them; in the view of `input` without its NUL
    /// bytes and with its escapes decoded too (a value in UTF-32, or escaped character by
    /// character, see [`Squeezed`]), and in what its packed runs decode to (base64 of
    /// gzip, uuencode: see `packed`), within the packed view's own bounds.
    pub fn matching(&self, input: &[u8], sees: Sees<'_>) -> HashSet<LiveId> {
        #[cfg(test)]
        self.visible_scans
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let live = self.seen(sees);
        let mut found = ids_in_views(&live, input);
        for run in packed::runs(input, &mut |_| true) {
            found.extend(ids_in_views(&live, &run.bytes));
        }
        found.into_iter().map(LiveId).collect()
    }

    /// Whether what a packed run decodes to holds a form of a live value `sees` says,
    /// plainly or in its [`Squeezed`] view (a Helm release's JSON escapes): for
    /// [`cut_packed`], whose runs are decoded already.
    pub fn holds_packed(&self, decoded: &[u8], sees: Sees<'_>) -> bool {
        !ids_in_views(&self.seen(sees), decoded).is_empty()
    }

    /// The live values in `visible` alone, for several [`VisibleValues::contains`]
    /// checks against one view (building it walks every registered value).
    pub fn visible_values(&self, visible: &HashSet<LiveId>) -> VisibleValues {
        VisibleValues((!visible.is_empty()).then(|| self.view(visible)))
    }

    /// The current live set with every value outside `visible` treated as unregistered
    /// (the live set's `dead` rule: their matches are skipped and a visible value that
    /// is a prefix of one still matches).
    fn view(&self, visible: &HashSet<LiveId>) -> LiveSet {
        let live = self.live_snapshot();
        let hidden: HashSet<u64> = live
            .segments
            .iter()
            .flat_map(|s| s.entries.iter().map(|(id, _)| *id))
            .filter(|id| !visible.contains(&LiveId(*id)))
            .chain(live.dead.iter().copied())
            .collect();
        LiveSet {
            segments: live.segments.clone(),
            sampler: Arc::clone(&live.sampler),
            dead: Arc::new(hidden),
            longest: live.longest,
            longest_b64: live.longest_b64,
        }
    }

    /// The live set `sees` says: the current one, or a view of it.
    fn seen(&self, sees: Sees<'_>) -> Arc<LiveSet> {
        match sees {
            Sees::All => self.live_snapshot(),
            Sees::AllBut(hidden) if hidden.is_empty() => self.live_snapshot(),
            Sees::Only(visible) => Arc::new(self.view(visible)),
            Sees::AllBut(hidden) => {
                let live = self.live_snapshot();
                let dead = live
                    .dead
                    .iter()
                    .copied()
                    .chain(hidden.iter().map(|id| id.0))
                    .collect();
                Arc::new(LiveSet {
                    segments: live.segments.clone(),
                    sampler: Arc::clone(&live.sampler),
                    dead: Arc::new(dead),
                    longest: live.longest,
                    longest_b64: live.longest_b64,
                })
            }
        }
    }

    /// [`Scrubber::scrub_seeing`] for text, as [`Scrubber::scrub_str`] is for
    /// [`Scrubber::scrub`].
    pub fn scrub_str_seeing(&self, input: &str, sees: Sees<'_>) -> (String, Vec<Redaction>) {
        let Scrubbed { bytes, redactions } = self.scrub_seeing(input.as_bytes(), sees);
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        (text, redactions)
    }

    /// A stream scrubber (see [`ScrubStream`] for what it holds back).
    pub fn stream(&self) -> ScrubStream<'_> {
        ScrubStream::new(self)
    }

    fn rules_snapshot(&self) -> Arc<RuleSet> {
        Arc::clone(&self.rules.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn live_snapshot(&self) -> Arc<LiveSet> {
        Arc::clone(&self.live.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Makes the live set of `registry` the one scrubs use.
    fn publish(&self, registry: &Registry) {
        let set = Arc::new(registry.live_set());
        let old = std::mem::replace(
            &mut *self.live.write().unwrap_or_else(PoisonError::into_inner),
            set,
        );
        // Freed after the lock is let go (a big automaton takes a while to free).
        drop(old);
    }
}

/// The ids of the values of `live` that `input` holds a form of, plainly or in one of
/// its views (see [`any_view`]).
fn ids_in_views(live: &LiveSet, input: &[u8]) -> HashSet<u64> {
    let mut found = HashSet::new();
    any_view(input, |text| {
        found.extend(live.ids_in(text));
        false
    });
    found
}

/// Whether `f` says yes to `input` or to one of the views a search for the values a
/// buffer holds reads: its [`Squeezed`] view, and each of the two with the breaks of
/// wrapped base64 dropped (`wrapped::joined`; a scrub finds a form across such a break
/// where it is, a search that only asks whose values are there reads them joined). So
/// whatever a scrub redacts is found by the searches too: the reflection detector's
/// (`response_unheld`) and the request's (what it carried). Stops at the first yes.
fn any_view(input: &[u8], mut f: impl FnMut(&[u8]) -> bool) -> bool {
    let squeezed = Squeezed::of(input);
    std::iter::once(input)
        .chain(squeezed.as_ref().map(Squeezed::bytes))
        .any(|text| f(text) || wrapped::joined(text).is_some_and(|joined| f(&joined)))
}

fn check_label(label: &'static str) -> Result<(), ScrubError> {
    let ok = !label.is_empty()
        && label.len() <= 40
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ScrubError::BadLabel { label })
    }
}
