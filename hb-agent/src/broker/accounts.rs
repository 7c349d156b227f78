//! An account's current credentials: what a handle's call carries when it is sent.
//!
//! A handle stands for an (integration, account), not for a value: every call resolves
//! the account's usable credentials here — the ACTIVE one first, then DEPRECATED ones
//! still within their grace period, newest first — so handles issued before a rotation
//! carry the new value after it, and a revoked credential stops being sent.
//!
//! Owns: a cache of each account's usable credentials, read from the vault on a blocking
//! thread and kept until the vault file changes (another process committed: `hb-agent
//! vault rotate|revoke`, or this one) or until the first grace period or expiry among
//! them ends. The file's identity, size and change times (one `stat`, a few µs) are
//! compared on every resolution; they are taken *before* the vault is read, so a cached
//! list is never older than the stamp it is kept under. Every value read is registered
//! with the scrubber before any call can carry it.
//! Must never: hand out a value the vault did not return as usable at or after the
//! stamp it is cached under, or keep one past its grace end or expiry.

use std::{
    collections::{BTreeSet, HashMap},
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use crate::{scrub::Fragments, secret::Secret, vault::CredentialMeta};

/// One usable credential of an account.
pub struct Current {
    pub credential_id: String,
    pub secret: Arc<Secret>,
    /// When it was stored (for a rotated-in value: when the rotation finished).
    pub created: SystemTime,
    /// The runs of `secret` redacted from the answers to calls that carried it, built
    /// at the first such answer.
    fragments: OnceLock<Option<Fragments>>,
}

impl Current {
    pub fn new(meta: &CredentialMeta, secret: Secret) -> Self {
        Self {
            credential_id: meta.id.clone(),
            secret: Arc::new(secret),
            created: meta.created,
            fragments: OnceLock::new(),
        }
    }

    /// The runs of this credential to redact from an answer.
    pub fn fragments(&self) -> Option<&Fragments> {
        self.fragments
            .get_or_init(|| Fragments::new(self.secret.expose()))
            .as_ref()
    }
}

/// What identifies a state of the vault file: any commit changes it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(path: &std::path::Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        })
    }
}

impl Stamp {
    /// A 64-bit digest of the stamp, for a lock-free "still the same file" check.
    fn digest(&self) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns).hash(&mut h);
        // 0 stands for "nothing registered yet".
        h.finish().max(1)
    }
}

/// The vault file's stamp when its every stored value was last registered with the
/// scrubber: answers compare against a lock-free digest first, so the common case (the
/// file did not change) takes no lock; only a change takes the async lock that
/// serialises the re-read.
#[derive(Default)]
pub struct StoredMark {
    seen: AtomicU64,
    registering: tokio::sync::Mutex<Option<Stamp>>,
}

impl StoredMark {
    /// Whether every value stored at `stamp` is known to be registered (lock-free).
    pub fn covers(&self, stamp: Stamp) -> bool {
        self.seen.load(Ordering::Acquire) == stamp.digest()
    }

    /// The lock held while the stored values are read and registered; `None` when
    /// another answer registered them at `stamp` meanwhile.
    pub async fn begin(&self, stamp: Stamp) -> Option<StoredGuard<'_>> {
        let guard = self.registering.lock().await;
        (*guard != Some(stamp)).then_some(StoredGuard { mark: self, guard })
    }
}

/// Held while the values stored at one stamp are registered; `done` records it.
pub struct StoredGuard<'a> {
    mark: &'a StoredMark,
    guard: tokio::sync::MutexGuard<'a, Option<Stamp>>,
}

impl StoredGuard<'_> {
    /// Every value stored at `stamp` is registered now.
    pub fn done(mut self, stamp: Stamp) {
        *self.guard = Some(stamp);
        self.mark.seen.store(stamp.digest(), Ordering::Release);
    }
}

/// An account's usable credentials as the vault had them at `stamp`.
struct Cached {
    stamp: Stamp,
    /// The first grace end or expiry among them: the list is read again after it.
    until: Option<SystemTime>,
    usable: Vec<Arc<Current>>,
}

type Key = (String, String);

pub struct Accounts {
    db: PathBuf,
    cache: Mutex<HashMap<Key, Arc<Cached>>>,
    /// Every credential id a call of the account was resolved to, so an answer to a
    /// sandbox holding a handle for it is scrubbed of the values it may have seen
    /// before a rotation too.
    seen: Mutex<HashMap<Key, BTreeSet<String>>>,
    /// Bumped by every [`Accounts::store`]: the watch sets built before it are stale.
    generation: AtomicU64,
    /// The credentials last read of each set of accounts a caller holds handles for
    /// (see [`Accounts::watched`]), built once per set and per [`Accounts::store`].
    watch_sets: Mutex<HashMap<Vec<Key>, (u64, WatchSet)>>,
}

/// The credentials last read of a set of accounts: (account, credential).
pub type WatchSet = Arc<[(Key, Arc<Current>)]>;

/// The most watch sets kept (one per distinct set of accounts callers hold handles
/// for); past it they are all dropped and built again as calls need them.
const MAX_WATCH_SETS: usize = 1024;

impl Accounts {
    pub fn new(db: PathBuf) -> Self {
        Self {
            db,
            cache: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            watch_sets: Mutex::new(HashMap::new()),
        }
    }

    /// The credentials last read of each of `accounts` (sorted, deduplicated): what the
    /// fragment watch looks for besides the call's own (`fragment_hit`). Built once per
    /// set of accounts and per [`Accounts::store`] (each credential's runs are built
    /// once, in its [`Current`]); an account no call resolved yet has none here.
    pub fn watched(&self, accounts: &[Key]) -> WatchSet {
        let generation = self.generation.load(Ordering::Acquire);
        let mut sets = self
            .watch_sets
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((g, set)) = sets.get(accounts)
            && *g == generation
        {
            return set.clone();
        }
        let set: WatchSet = {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            accounts
                .iter()
                .filter_map(|k| cache.get(k).map(|c| (k, c)))
                .flat_map(|(k, c)| c.usable.iter().map(|u| (k.clone(), u.clone())))
                .collect()
        };
        if sets.len() >= MAX_WATCH_SETS {
            sets.clear();
        }
        sets.insert(accounts.to_vec(), (generation, set.clone()));
        set
    }

    /// The vault file's stamp now (None when it cannot be read: nothing is cached then).
    pub fn stamp(&self) -> Option<Stamp> {
        Stamp::of(&self.db)
    }

    /// The cached usable list of an account if it is still current at `stamp` and `now`.
    pub fn cached(
        &self,
        integration: &str,
        account: &str,
        stamp: Stamp,
        now: SystemTime,
    ) -> Option<Vec<Arc<Current>>> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let c = cache.get(&(integration.to_owned(), account.to_owned()))?;
        (c.stamp == stamp && c.until.is_none_or(|u| now < u)).then(|| c.usable.clone())
    }

    /// Keeps what the vault returned (read after `stamp` was taken) for the account.
    pub fn store(
        &self,
        integration: &str,
        account: &str,
        stamp: Stamp,
        read: Vec<(CredentialMeta, Secret)>,
    ) -> Vec<Arc<Current>> {
        let until = read
            .iter()
            .flat_map(|(m, _)| [m.grace_until, m.expires])
            .flatten()
            .min();
        let usable: Vec<Arc<Current>> = read
            .into_iter()
            .map(|(m, s)| Arc::new(Current::new(&m, s)))
            .collect();
        let key = (integration.to_owned(), account.to_owned());
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            let ids = seen.entry(key.clone()).or_default();
            ids.extend(usable.iter().map(|c| c.credential_id.clone()));
        }
        // Kept under the stamp taken before the read: if the vault moved on meanwhile,
        // the next resolution's stamp differs and reads again.
        let cached = Arc::new(Cached {
            stamp,
            until,
            usable: usable.clone(),
        });
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, cached);
        self.generation.fetch_add(1, Ordering::Release);
        usable
    }

    /// Records a value of the account no call carried yet (a rotation's new one, under
    /// the rotation's id), so a sandbox's answers are scrubbed of it too.
    pub fn note(&self, integration: &str, account: &str, key: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.entry((integration.to_owned(), account.to_owned()))
            .or_default()
            .insert(key.to_owned());
    }

    /// The account (integration, account) a call resolved `credential_id` for, if any
    /// did (a rotation's pending value too, once noted).
    pub fn owner_of(&self, credential_id: &str) -> Option<(String, String)> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.iter()
            .find(|(_, ids)| ids.contains(credential_id))
            .map(|(account, _)| account.clone())
    }

    /// The credential ids calls of this account were resolved to, in any state.
    pub fn seen(&self, integration: &str, account: &str) -> Vec<String> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.get(&(integration.to_owned(), account.to_owned()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::vault::Status;

    fn meta(id: &str, created: SystemTime, grace_until: Option<SystemTime>) -> CredentialMeta {
        CredentialMeta {
            id: id.into(),
            integration: "gh".into(),
            account: "bot".into(),
            status: if grace_until.is_some() {
                Status::Deprecated
            } else {
                Status::Active
            },
            created,
            expires: None,
            rotated_from: None,
            grace_until,
            revoked: None,
        }
    }

    #[test]
    fn a_watch_set_is_built_once_per_set_of_accounts_and_vault_read() {
        let dir = crate::vault::tests::TempDir::new();
        let db = dir.path().join("vault.db");
        std::fs::write(&db, b"one").expect("write");
        let accounts = Accounts::new(db);
        let stamp = accounts.stamp().expect("stamp");
        let now = SystemTime::now();
        let key = |a: &str| ("gh".to_owned(), a.to_owned());
        accounts.store(
            "gh",
            "bot",
            stamp,
            vec![(meta("cred_bot", now, None), Secret::new(b"bot".to_vec()))],
        );
        let set = [key("admin"), key("bot")];
        let first = accounts.watched(&set);
        assert_eq!(first.len(), 1, "admin was never read: only bot's");
        assert!(
            Arc::ptr_eq(&first, &accounts.watched(&set)),
            "the same set, not built again"
        );
        accounts.store(
            "gh",
            "admin",
            stamp,
            vec![(
                meta("cred_admin", now, None),
                Secret::new(b"admin".to_vec()),
            )],
        );
        let second = accounts.watched(&set);
        assert!(!Arc::ptr_eq(&first, &second), "built again after a read");
        let mut ids: Vec<&str> = second
            .iter()
            .map(|(_, c)| c.credential_id.as_str())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, ["cred_admin", "cred_bot"]);
        // Each credential's runs are its `Current`'s, shared by every set holding it.
        let bot_only = accounts.watched(&[key("bot")]);
        assert!(Arc::ptr_eq(&bot_only[0].1, &second[1].1));
    }

    #[test]
    fn a_cached_list_lives_until_the_vault_file_changes_or_a_grace_period_ends() {
        let dir = crate::vault::tests::TempDir::new();
        let db = dir.path().join("vault.db");
        std::fs::write(&db, b"one").expect("write");
        let accounts = Accounts::new(db.clone());
        let now = SystemTime::now();
        let stamp = accounts.stamp().expect("stamp");
        let grace_end = now + Duration::from_secs(60);
        let read = vec![
            (meta("cred_new", now, None), Secret::new(b"new".to_vec())),
            (
                meta("cred_old", now, Some(grace_end)),
                Secret::new(b"old".to_vec()),
            ),
        ];
        let got = accounts.store("gh", "bot", stamp, read);
        assert_eq!(got[0].credential_id, "cred_new");
        let hit = accounts.cached("gh", "bot", stamp, now).expect("cached");
        assert_eq!(hit.len(), 2);
        assert!(accounts.cached("gh", "other", stamp, now).is_none());
        assert!(
            accounts.cached("gh", "bot", stamp, grace_end).is_none(),
            "read again once the old one's grace ends"
        );
        std::fs::write(&db, b"two, after a commit").expect("write");
        let later = accounts.stamp().expect("stamp");
        assert_ne!(later, stamp);
        assert!(accounts.cached("gh", "bot", later, now).is_none());
        assert_eq!(accounts.seen("gh", "bot"), vec!["cred_new", "cred_old"]);
    }
}
