//! Opaque handles: what an agent holds instead of a credential.
//!
//! A handle is `hb_cred_` + base64url (no padding) of 24 random bytes from ring's
//! `SystemRandom`. The table lives in this process's memory only — never on disk, in a
//! log or in an answer other than the one that created it — and maps the handle to the
//! integration and account it stands for (never to a value: each call carries the
//! account's current credential, see `accounts`), the identity that created it and its
//! execution. A handle works only for that identity and until it expires
//! (`broker.handle_ttl_secs`), is deleted, or its execution ends or is revoked (an auth
//! collision revokes the whole execution).
//!
//! Must never: answer differently for a handle that is foreign, expired, deleted,
//! revoked or never existed — every one of them is simply not found, so probing
//! teaches nothing.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::rand::{SecureRandom as _, SystemRandom};

pub const PREFIX: &str = "hb_cred_";
const RANDOM_BYTES: usize = 24;

/// Who may use a handle: the sandbox cgroup that created it, or a host caller's uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    Sandbox { cgroup_id: u64 },
    Host { uid: u32 },
}

/// What a live handle stands for.
pub struct Entry {
    pub integration: String,
    pub account: String,
    pub owner: Owner,
    pub execution: String,
    pub expires: Instant,
    /// Wall-clock expiry, for the answer.
    pub expires_at: SystemTime,
}

pub struct Handles {
    ttl: Duration,
    rng: SystemRandom,
    table: Mutex<HashMap<String, Arc<Entry>>>,
    /// Decoy handles (`[[policy]] canary_handles`): never found by [`Handles::get`], so
    /// they stand for nothing; listed beside their owner's real handles while their
    /// execution lives, and remembered for [`DECOY_MEMORY`] after, so a use long after
    /// they were taken still trips.
    decoys: Mutex<HashMap<String, Decoy>>,
    /// Owners a detector ended: no handle is created for them until the instant given
    /// (taken under the table's lock, after it, so a bar and the handles it ends are
    /// one step for [`Handles::create`]).
    barred: Mutex<HashMap<Owner, Instant>>,
    /// (owner, integration, account) a fragment hit barred (see `fragment_hit`): no
    /// handle is created for them until the bar's instant, and the handles it ended are
    /// remembered so their owner's calls with them get the bar's answer. Taken under
    /// the table's lock, after it, as `barred`.
    account_bars: Mutex<HashMap<AccountKey, AccountBar>>,
    /// Every account each owner was given a handle for, with the newest such handle's
    /// entry, kept after the handles end: the fragment watch looks for runs of their
    /// credentials in the owner's calls (`fragment_hit::Others`), so deleting a handle
    /// before reading what a call made with it left behind does not end the watch.
    /// Taken under the table's lock, after it.
    held: Mutex<HashMap<Owner, HeldAccounts>>,
    /// The most decoys remembered at once, and per owner (see [`Handles::plant`]).
    max_decoys: usize,
    max_decoys_per_owner: usize,
}

/// The most owners whose held accounts are remembered (see `Handles::held`): past it,
/// those with no live handle are forgotten.
const MAX_OWNERS_HELD: usize = 65_536;

/// How long a decoy is remembered after its handle would have expired.
pub const DECOY_MEMORY: Duration = Duration::from_secs(86_400);
/// The most decoys remembered at once.
const MAX_DECOYS: usize = 65_536;
/// The most decoys remembered for one owner: planting more forgets that owner's
/// oldest, never another owner's (no caller can flush the decoys of another tenant so
/// that its canaries stop tripping).
pub const MAX_DECOYS_PER_OWNER: usize = 4096;

/// Why [`Handles::create`] issued no handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    #[error("the caller is barred from new handles")]
    Barred(Instant),
    #[error("the caller is barred from new handles for this account")]
    AccountBarred,
    #[error("no randomness for a handle")]
    NoRandomness,
    #[error("the handle table's lock is poisoned")]
    Poisoned,
    #[error("the caller holds {held} live handles, the most it may")]
    AtLimit { held: usize },
}

/// An owner's hold on one integration's account.
type AccountKey = (Owner, String, String);

/// The accounts (integration, account) an owner was given handles for, each with the
/// newest such handle's entry.
type HeldAccounts = BTreeMap<(String, String), Arc<Entry>>;

/// A bar of one owner from one account.
struct AccountBar {
    until: Instant,
    /// The owner's handles to the account the bar ended.
    ended: std::collections::HashSet<String>,
}

/// A planted decoy: what it pretends to stand for, and whether it is still listed.
struct Decoy {
    entry: Arc<Entry>,
    /// Deleted by its owner, or its execution ended: no longer listed.
    ended: bool,
}

/// One line of a caller's handle listing (`GET /v1/handles`); real and decoy alike.
pub struct Listed {
    pub handle: String,
    pub entry: Arc<Entry>,
}

/// A fresh execution id (when the caller gives none): `exec_` + 16 hex digits.
pub fn new_execution_id(rng: &SystemRandom) -> Option<String> {
    let mut raw = [0u8; 8];
    rng.fill(&mut raw).ok()?;
    Some(format!("exec_{:016x}", u64::from_be_bytes(raw)))
}

impl Handles {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            rng: SystemRandom::new(),
            table: Mutex::new(HashMap::new()),
            decoys: Mutex::new(HashMap::new()),
            barred: Mutex::new(HashMap::new()),
            account_bars: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            max_decoys: MAX_DECOYS,
            max_decoys_per_owner: MAX_DECOYS_PER_OWNER,
        }
    }

    /// [`Handles::new`] with other decoy limits (tests fill them).
    #[cfg(test)]
    fn with_decoy_limits(ttl: Duration, max: usize, per_owner: usize) -> Self {
        Self {
            max_decoys: max,
            max_decoys_per_owner: per_owner,
            ..Self::new(ttl)
        }
    }

    /// Bars `owner` from new handles until `until` and revokes every live handle it
    /// holds, in one step: a [`Handles::create`] racing it either made its handle
    /// before (revoked here) or sees the bar. The handles revoked.
    pub fn bar(&self, owner: Owner, until: Instant) -> Vec<(String, Arc<Entry>)> {
        let Ok(mut table) = self.table.lock() else {
            return Vec::new();
        };
        if let Ok(mut barred) = self.barred.lock() {
            let now = Instant::now();
            barred.retain(|_, t| *t > now);
            let at = barred.entry(owner).or_insert(until);
            *at = (*at).max(until);
        }
        let ended = remove_where(&mut table, |e| e.owner == owner);
        drop(table);
        if let Ok(mut decoys) = self.decoys.lock() {
            for d in decoys.values_mut().filter(|d| d.entry.owner == owner) {
                d.ended = true;
            }
        }
        ended
    }

    /// Bars `owner` from `integration`/`account` until `until` (a longer bar wins) and
    /// ends every handle it holds to the account, in one step (as [`Handles::bar`]);
    /// the handles ended. Its other handles, and other owners', stay.
    pub fn bar_account(
        &self,
        owner: Owner,
        integration: &str,
        account: &str,
        until: Instant,
    ) -> Vec<String> {
        let Ok(mut table) = self.table.lock() else {
            return Vec::new();
        };
        let ended = remove_account(&mut table, owner, integration, account);
        if let Ok(mut bars) = self.account_bars.lock() {
            let now = Instant::now();
            bars.retain(|_, b| b.until > now);
            let bar = bars
                .entry((owner, integration.to_owned(), account.to_owned()))
                .or_insert(AccountBar {
                    until,
                    ended: std::collections::HashSet::new(),
                });
            bar.until = bar.until.max(until);
            bar.ended.extend(ended.iter().cloned());
        }
        ended
    }

    /// Whether `owner` is barred from `integration`/`account` now.
    pub fn account_barred(&self, owner: Owner, integration: &str, account: &str) -> bool {
        let Ok(bars) = self.account_bars.lock() else {
            return true;
        };
        bars.get(&(owner, integration.to_owned(), account.to_owned()))
            .is_some_and(|b| b.until > Instant::now())
    }

    /// Whether `handle` is one of `owner`'s a live account bar ended (its owner's call
    /// with it gets the bar's answer; anyone else's, a dead handle's).
    pub fn ended_by_account_bar(&self, handle: &str, owner: Owner) -> bool {
        let Ok(bars) = self.account_bars.lock() else {
            return false;
        };
        let now = Instant::now();
        bars.iter()
            .any(|((o, _, _), b)| *o == owner && b.until > now && b.ended.contains(handle))
    }

    /// Until when `owner` is barred from new handles, if it is.
    pub fn barred_until(&self, owner: Owner) -> Option<Instant> {
        let barred = self.barred.lock().ok()?;
        barred.get(&owner).copied().filter(|t| *t > Instant::now())
    }

    fn fresh(&self) -> Option<String> {
        let mut raw = [0u8; RANDOM_BYTES];
        self.rng.fill(&mut raw).ok()?;
        Some(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw)))
    }

    /// Plants `n` decoys beside `real` unless its execution already has decoys for the
    /// same account; the decoys planted (to register with the scrubber), and the
    /// decoys forgotten now (to unregister).
    pub fn plant(&self, real: &Entry, n: u32) -> (Vec<String>, Vec<String>) {
        if n == 0 {
            return (Vec::new(), Vec::new());
        }
        let Ok(mut decoys) = self.decoys.lock() else {
            return (Vec::new(), Vec::new());
        };
        let now = Instant::now();
        let mut forgotten: Vec<String> = decoys
            .iter()
            .filter(|(_, d)| d.entry.expires + DECOY_MEMORY <= now)
            .map(|(h, _)| h.clone())
            .collect();
        for h in &forgotten {
            decoys.remove(h);
        }
        let planted_already = decoys.values().any(|d| {
            d.entry.owner == real.owner
                && d.entry.execution == real.execution
                && d.entry.integration == real.integration
                && d.entry.account == real.account
        });
        if planted_already {
            return (Vec::new(), forgotten);
        }
        let n = self.make_room(&mut decoys, real.owner, n as usize, &mut forgotten);
        let mut planted = Vec::new();
        for _ in 0..n {
            let Some(h) = self.fresh() else { break };
            let entry = Arc::new(Entry {
                integration: real.integration.clone(),
                account: real.account.clone(),
                owner: real.owner,
                execution: real.execution.clone(),
                expires: real.expires,
                expires_at: real.expires_at,
            });
            decoys.insert(
                h.clone(),
                Decoy {
                    entry,
                    ended: false,
                },
            );
            planted.push(h);
        }
        (planted, forgotten)
    }

    /// Room for `n` more decoys of `owner`: its own oldest are forgotten (into
    /// `forgotten`) while it would hold more than its quota or the table more than its
    /// size; never another owner's. How many fit (fewer than `n` only when the table is
    /// full of other owners' decoys).
    fn make_room(
        &self,
        decoys: &mut HashMap<String, Decoy>,
        owner: Owner,
        n: usize,
        forgotten: &mut Vec<String>,
    ) -> usize {
        let n = n.min(self.max_decoys_per_owner);
        let mut own: Vec<(Instant, String)> = decoys
            .iter()
            .filter(|(_, d)| d.entry.owner == owner)
            .map(|(h, d)| (d.entry.expires, h.clone()))
            .collect();
        let over_quota = (own.len() + n).saturating_sub(self.max_decoys_per_owner);
        let over_table = (decoys.len() + n).saturating_sub(self.max_decoys);
        let evict = over_quota.max(over_table).min(own.len());
        if evict > 0 {
            own.sort_unstable();
            for (_, h) in own.into_iter().take(evict) {
                decoys.remove(&h);
                forgotten.push(h);
            }
        }
        n.min(self.max_decoys.saturating_sub(decoys.len()))
    }

    /// The entry a decoy pretends to stand for, if `handle` is one (whoever asks).
    pub fn decoy(&self, handle: &str) -> Option<Arc<Entry>> {
        let decoys = self.decoys.lock().ok()?;
        decoys.get(handle).map(|d| d.entry.clone())
    }

    /// The handles `owner` holds as a listing shows them: its live handles and its
    /// listed decoys, in no telling order (sorted by the handle's random text).
    pub fn listing(&self, owner: Owner) -> Vec<Listed> {
        let now = Instant::now();
        let mut out: Vec<Listed> = Vec::new();
        if let Ok(table) = self.table.lock() {
            out.extend(
                table
                    .iter()
                    .filter(|(_, e)| e.owner == owner && e.expires > now)
                    .map(|(h, e)| Listed {
                        handle: h.clone(),
                        entry: e.clone(),
                    }),
            );
        }
        if let Ok(decoys) = self.decoys.lock() {
            out.extend(
                decoys
                    .iter()
                    .filter(|(_, d)| !d.ended && d.entry.owner == owner && d.entry.expires > now)
                    .map(|(h, d)| Listed {
                        handle: h.clone(),
                        entry: d.entry.clone(),
                    }),
            );
        }
        out.sort_by(|a, b| a.handle.cmp(&b.handle));
        out
    }

    /// Takes a listed decoy out of its owner's listing (`DELETE` by its owner answers
    /// as for a real handle); whether it did.
    pub fn delete_decoy(&self, handle: &str, owner: Owner) -> bool {
        let Ok(mut decoys) = self.decoys.lock() else {
            return false;
        };
        match decoys.get_mut(handle) {
            Some(d) if d.entry.owner == owner && !d.ended && d.entry.expires > Instant::now() => {
                d.ended = true;
                true
            }
            _ => false,
        }
    }

    pub fn rng(&self) -> &SystemRandom {
        &self.rng
    }

    /// Registers a handle unless `owner` is barred or holds `cap` live handles already;
    /// the handle, its entry, and handles that had expired (dropped now, for the caller
    /// to forget elsewhere too).
    pub fn create(
        &self,
        integration: String,
        account: String,
        owner: Owner,
        execution: String,
        cap: usize,
    ) -> Result<(String, Arc<Entry>, Vec<String>), CreateError> {
        let handle = self.fresh().ok_or(CreateError::NoRandomness)?;
        let entry = Arc::new(Entry {
            integration,
            account,
            owner,
            execution,
            expires: Instant::now() + self.ttl,
            expires_at: SystemTime::now() + self.ttl,
        });
        let mut table = self.table.lock().map_err(|_| CreateError::Poisoned)?;
        let now = Instant::now();
        // Under the table's lock: a bar is set under it too (see `bar`).
        if let Some(until) = self
            .barred
            .lock()
            .map_err(|_| CreateError::Poisoned)?
            .get(&owner)
            .filter(|t| **t > now)
        {
            return Err(CreateError::Barred(*until));
        }
        if self
            .account_bars
            .lock()
            .map_err(|_| CreateError::Poisoned)?
            .get(&(owner, entry.integration.clone(), entry.account.clone()))
            .is_some_and(|b| b.until > now)
        {
            return Err(CreateError::AccountBarred);
        }
        let mut held = 0;
        let mut expired = Vec::new();
        for (h, e) in table.iter() {
            if e.expires <= now {
                expired.push(h.clone());
            } else if e.owner == owner {
                held += 1;
            }
        }
        if held >= cap {
            return Err(CreateError::AtLimit { held });
        }
        for h in &expired {
            table.remove(h);
        }
        table.insert(handle.clone(), entry.clone());
        let mut held_by = self.held.lock().map_err(|_| CreateError::Poisoned)?;
        if held_by.len() >= MAX_OWNERS_HELD && !held_by.contains_key(&owner) {
            // Owners with no live handle left are forgotten first.
            held_by.retain(|o, _| table.values().any(|e| e.owner == *o && e.expires > now));
        }
        held_by.entry(owner).or_default().insert(
            (entry.integration.clone(), entry.account.clone()),
            entry.clone(),
        );
        Ok((handle, entry, expired))
    }

    /// Every account `owner` was given a handle for (live or not), with the newest such
    /// handle's entry, in account order.
    pub fn held_accounts(&self, owner: Owner) -> Vec<((String, String), Arc<Entry>)> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&owner)
            .map(|m| m.iter().map(|(k, e)| (k.clone(), e.clone())).collect())
            .unwrap_or_default()
    }

    /// How many handles are live (not expired; deleted and revoked ones are gone).
    pub fn live(&self) -> usize {
        let Ok(table) = self.table.lock() else {
            return 0;
        };
        let now = Instant::now();
        table.values().filter(|e| e.expires > now).count()
    }

    /// The entry of `handle` if it is live and `owner` created it.
    pub fn get(&self, handle: &str, owner: Owner) -> Option<Arc<Entry>> {
        let table = self.table.lock().ok()?;
        let e = table.get(handle)?;
        (e.owner == owner && e.expires > Instant::now()).then(|| e.clone())
    }

    /// Deletes `handle` if `owner` may use it; whether it did.
    pub fn delete(&self, handle: &str, owner: Owner) -> bool {
        let Ok(mut table) = self.table.lock() else {
            return false;
        };
        if table
            .get(handle)
            .is_some_and(|e| e.owner == owner && e.expires > Instant::now())
        {
            table.remove(handle);
            return true;
        }
        false
    }

    /// Revokes every handle `owner` holds for `integration`/`account` (a caller held by
    /// a quarantine; it is not barred); the handles revoked.
    pub fn revoke_account(&self, owner: Owner, integration: &str, account: &str) -> Vec<String> {
        let Ok(mut table) = self.table.lock() else {
            return Vec::new();
        };
        remove_account(&mut table, owner, integration, account)
    }

    /// Revokes every handle of `execution` created by `owner`; the handles revoked.
    pub fn end_execution(&self, execution: &str, owner: Owner) -> Vec<String> {
        self.end_execution_entries(execution, owner)
            .into_iter()
            .map(|(h, _)| h)
            .collect()
    }

    /// [`Handles::end_execution`], with what each revoked handle stood for.
    pub fn end_execution_entries(
        &self,
        execution: &str,
        owner: Owner,
    ) -> Vec<(String, Arc<Entry>)> {
        let Ok(mut table) = self.table.lock() else {
            return Vec::new();
        };
        let ended = remove_where(&mut table, |e| e.execution == execution && e.owner == owner);
        if let Ok(mut decoys) = self.decoys.lock() {
            for d in decoys
                .values_mut()
                .filter(|d| d.entry.execution == execution && d.entry.owner == owner)
            {
                d.ended = true;
            }
        }
        ended
    }
}

/// Takes every handle whose entry `ends` out of `table`; the handles taken, with what
/// each stood for.
fn remove_where(
    table: &mut HashMap<String, Arc<Entry>>,
    ends: impl Fn(&Entry) -> bool,
) -> Vec<(String, Arc<Entry>)> {
    table.extract_if(|_, e| ends(e)).collect()
}

/// Takes every handle `owner` holds for `integration`/`account` out of `table`; the
/// handles taken.
fn remove_account(
    table: &mut HashMap<String, Arc<Entry>>,
    owner: Owner,
    integration: &str,
    account: &str,
) -> Vec<String> {
    remove_where(table, |e| {
        e.owner == owner && e.integration == integration && e.account == account
    })
    .into_iter()
    .map(|(h, _)| h)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_work_only_for_their_owner_until_deleted_or_their_execution_ends() {
        let h = Handles::new(Duration::from_secs(60));
        let me = Owner::Sandbox { cgroup_id: 7 };
        let other = Owner::Sandbox { cgroup_id: 8 };
        let (a, _, _) = h
            .create("gh".into(), "bot".into(), me, "e1".into(), usize::MAX)
            .expect("create");
        assert!(
            a.starts_with(PREFIX) && a.len() == PREFIX.len() + 32,
            "{}",
            a.len()
        );
        assert!(h.get(&a, me).is_some());
        assert!(h.get(&a, other).is_none(), "foreign");
        assert!(!h.delete(&a, other), "foreign delete");
        let (b, _, _) = h
            .create("gh".into(), "bot".into(), me, "e1".into(), usize::MAX)
            .expect("create");
        let (c, _, _) = h
            .create("gh".into(), "bot".into(), me, "e2".into(), usize::MAX)
            .expect("create");
        assert!(
            h.end_execution("e1", other).is_empty(),
            "foreign execution end"
        );
        assert_eq!(h.end_execution("e1", me).len(), 2);
        assert!(h.get(&a, me).is_none() && h.get(&b, me).is_none());
        assert!(h.get(&c, me).is_some(), "another execution lives on");
        let listed: Vec<String> = h.listing(me).into_iter().map(|l| l.handle).collect();
        assert_eq!(listed, vec![c.clone()]);
        assert!(h.listing(other).is_empty(), "held only by its owner");
        assert!(h.delete(&c, me));
        assert!(h.get(&c, me).is_none());
        let short = Handles::new(Duration::ZERO);
        let (d, _, _) = short
            .create("gh".into(), "bot".into(), me, "e".into(), usize::MAX)
            .expect("create");
        assert!(short.get(&d, me).is_none(), "expired");
    }

    #[test]
    fn an_account_bar_ends_one_owners_handles_to_one_account_only() {
        let h = Handles::new(Duration::from_secs(60));
        let me = Owner::Sandbox { cgroup_id: 7 };
        let other = Owner::Sandbox { cgroup_id: 8 };
        let mk = |o, a: &str| {
            h.create("gh".into(), a.into(), o, "e".into(), usize::MAX)
                .expect("create")
                .0
        };
        let (mine, mine_other_account, theirs) = (mk(me, "bot"), mk(me, "ci"), mk(other, "bot"));
        let ended = h.bar_account(me, "gh", "bot", Instant::now() + Duration::from_secs(60));
        assert_eq!(ended, vec![mine.clone()]);
        assert!(h.get(&mine, me).is_none(), "ended");
        assert!(h.ended_by_account_bar(&mine, me));
        assert!(!h.ended_by_account_bar(&mine, other), "only for its owner");
        assert!(h.get(&mine_other_account, me).is_some(), "another account");
        assert!(h.get(&theirs, other).is_some(), "another owner");
        assert!(h.account_barred(me, "gh", "bot"));
        assert!(!h.account_barred(other, "gh", "bot"));
        assert!(matches!(
            h.create("gh".into(), "bot".into(), me, "e2".into(), usize::MAX),
            Err(CreateError::AccountBarred)
        ));
        h.create("gh".into(), "ci".into(), me, "e2".into(), usize::MAX)
            .expect("its other accounts are not barred");
        h.create("gh".into(), "bot".into(), other, "e2".into(), usize::MAX)
            .expect("the account's other callers are not barred");
        // A lapsed bar refuses nothing.
        let _ = h.bar_account(other, "gh", "x", Instant::now());
        assert!(!h.account_barred(other, "gh", "x"));
        h.create("gh".into(), "x".into(), other, "e3".into(), usize::MAX)
            .expect("lapsed");
    }

    #[test]
    fn a_bar_ends_the_owners_handles_and_refuses_new_ones_until_it_lapses() {
        let h = Handles::new(Duration::from_secs(60));
        let me = Owner::Sandbox { cgroup_id: 7 };
        let other = Owner::Host { uid: 1000 };
        let (a, _, _) = h
            .create("gh".into(), "bot".into(), me, "e1".into(), usize::MAX)
            .expect("create");
        let (b, _, _) = h
            .create("gh".into(), "bot".into(), other, "e2".into(), usize::MAX)
            .expect("create");
        let ended = h.bar(me, Instant::now() + Duration::from_secs(60));
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].0, a);
        assert!(h.get(&a, me).is_none(), "revoked");
        assert!(h.get(&b, other).is_some(), "another owner keeps its handle");
        assert!(matches!(
            h.create("gh".into(), "bot".into(), me, "e3".into(), usize::MAX),
            Err(CreateError::Barred(_))
        ));
        assert!(h.barred_until(me).is_some());
        assert!(h.barred_until(other).is_none());
        h.create("gh".into(), "bot".into(), other, "e4".into(), usize::MAX)
            .expect("another owner is not barred");
        // A bar that has lapsed refuses nothing.
        let _ = h.bar(other, Instant::now());
        h.create("gh".into(), "bot".into(), other, "e5".into(), usize::MAX)
            .expect("lapsed");
    }

    #[test]
    fn decoys_look_like_handles_stand_for_nothing_and_are_planted_once() {
        let h = Handles::new(Duration::from_secs(60));
        let me = Owner::Sandbox { cgroup_id: 7 };
        let (real, entry, _) = h
            .create("gh".into(), "bot".into(), me, "e1".into(), usize::MAX)
            .expect("create");
        let (planted, _) = h.plant(&entry, 2);
        assert_eq!(planted.len(), 2);
        for d in &planted {
            assert!(d.starts_with(PREFIX) && d.len() == real.len(), "{d}");
            assert!(h.get(d, me).is_none(), "a decoy reaches no credential");
            let e = h.decoy(d).expect("remembered");
            assert_eq!((e.integration.as_str(), e.execution.as_str()), ("gh", "e1"));
        }
        assert!(h.decoy(&real).is_none());
        assert!(
            h.plant(&entry, 2).0.is_empty(),
            "once per execution and account"
        );
        let listed: Vec<String> = h.listing(me).into_iter().map(|l| l.handle).collect();
        assert_eq!(listed.len(), 3);
        let mut sorted = listed.clone();
        sorted.sort();
        assert_eq!(listed, sorted, "listed in the order of their random text");
        assert!(!h.delete_decoy(&planted[0], Owner::Sandbox { cgroup_id: 8 }));
        assert!(h.delete_decoy(&planted[0], me));
        assert_eq!(h.listing(me).len(), 2);
        assert!(
            h.decoy(&planted[0]).is_some(),
            "still remembered after delete"
        );
        let ended = h.bar(me, Instant::now());
        assert_eq!(ended.len(), 1, "the real handle");
        assert!(h.listing(me).is_empty(), "decoys no longer listed");
        assert!(h.decoy(&planted[1]).is_some(), "still remembered");
    }

    #[test]
    fn a_caller_at_its_handle_cap_is_refused_and_others_are_not() {
        let h = Handles::new(Duration::from_secs(60));
        let me = Owner::Sandbox { cgroup_id: 7 };
        let other = Owner::Sandbox { cgroup_id: 8 };
        let mut mine = Vec::new();
        for i in 0..3 {
            let (handle, _, _) = h
                .create("gh".into(), "bot".into(), me, format!("e{i}"), 3)
                .expect("under the cap");
            mine.push(handle);
        }
        assert!(matches!(
            h.create("gh".into(), "bot".into(), me, "e9".into(), 3),
            Err(CreateError::AtLimit { held: 3 })
        ));
        assert!(
            h.create("gh".into(), "bot".into(), other, "e".into(), 3)
                .is_ok(),
            "the cap is per caller"
        );
        assert!(h.delete(&mine[0], me));
        assert!(
            h.create("gh".into(), "bot".into(), me, "e9".into(), 3)
                .is_ok(),
            "a deleted handle makes room"
        );
    }

    /// Plants decoys for `owner` in `executions` fresh executions; every decoy planted.
    fn plant_many(h: &Handles, owner: Owner, executions: usize, n: u32) -> Vec<String> {
        let mut all = Vec::new();
        for i in 0..executions {
            let (_, entry, _) = h
                .create(
                    "gh".into(),
                    "bot".into(),
                    owner,
                    format!("x{i}"),
                    usize::MAX,
                )
                .expect("create");
            all.extend(h.plant(&entry, n).0);
        }
        all
    }

    #[test]
    fn an_owner_planting_past_the_table_forgets_only_its_own_decoys() {
        // A table of 64 decoys, 16 per owner.
        let h = Handles::with_decoy_limits(Duration::from_secs(60), 64, 16);
        let a = Owner::Sandbox { cgroup_id: 1 };
        let b = Owner::Sandbox { cgroup_id: 2 };
        let a_decoys = plant_many(&h, a, 1, 4);
        assert_eq!(a_decoys.len(), 4);
        // B plants 200 executions x 4 decoys: far more than the whole table.
        let b_decoys = plant_many(&h, b, 200, 4);
        assert_eq!(b_decoys.len(), 800, "every planting gets its decoys");
        for d in &a_decoys {
            assert!(h.decoy(d).is_some(), "A's decoy still recognised");
        }
        let b_live = b_decoys.iter().filter(|d| h.decoy(d).is_some()).count();
        assert_eq!(b_live, 16, "B keeps its quota: its newest");
        assert!(
            b_decoys[b_decoys.len() - 16..]
                .iter()
                .all(|d| h.decoy(d).is_some())
        );
        // Owners filling the table leave a new owner without decoys rather than
        // forgetting another's.
        for cgroup_id in 3..6 {
            plant_many(&h, Owner::Sandbox { cgroup_id }, 10, 4);
        }
        let late = plant_many(&h, Owner::Sandbox { cgroup_id: 9 }, 1, 4);
        assert!(late.is_empty(), "the table is full of other owners' decoys");
        for d in &a_decoys {
            assert!(h.decoy(d).is_some(), "A's decoy still recognised");
        }
    }
}
