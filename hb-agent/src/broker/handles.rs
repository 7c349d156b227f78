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
    collections::HashMap,
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
        }
    }

    pub fn rng(&self) -> &SystemRandom {
        &self.rng
    }

    /// Registers a handle; the handle, its entry, and handles that had expired (dropped
    /// now, for the caller to forget elsewhere too).
    pub fn create(
        &self,
        integration: String,
        account: String,
        owner: Owner,
        execution: String,
    ) -> Option<(String, Arc<Entry>, Vec<String>)> {
        let mut raw = [0u8; RANDOM_BYTES];
        self.rng.fill(&mut raw).ok()?;
        let handle = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
        let entry = Arc::new(Entry {
            integration,
            account,
            owner,
            execution,
            expires: Instant::now() + self.ttl,
            expires_at: SystemTime::now() + self.ttl,
        });
        let mut table = self.table.lock().ok()?;
        let now = Instant::now();
        let expired: Vec<String> = table
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(h, _)| h.clone())
            .collect();
        for h in &expired {
            table.remove(h);
        }
        table.insert(handle.clone(), entry.clone());
        Some((handle, entry, expired))
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

    /// The live handles `owner` holds, each with the integration and account it stands
    /// for.
    pub fn held_by(&self, owner: Owner) -> Vec<(String, String, String)> {
        let Ok(table) = self.table.lock() else {
            return Vec::new();
        };
        let now = Instant::now();
        table
            .iter()
            .filter(|(_, e)| e.owner == owner && e.expires > now)
            .map(|(h, e)| (h.clone(), e.integration.clone(), e.account.clone()))
            .collect()
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

    /// Revokes every handle of `execution` created by `owner`; the handles revoked.
    pub fn end_execution(&self, execution: &str, owner: Owner) -> Vec<String> {
        let Ok(mut table) = self.table.lock() else {
            return Vec::new();
        };
        let ended: Vec<String> = table
            .iter()
            .filter(|(_, e)| e.execution == execution && e.owner == owner)
            .map(|(h, _)| h.clone())
            .collect();
        for h in &ended {
            table.remove(h);
        }
        ended
    }
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
            .create("gh".into(), "bot".into(), me, "e1".into())
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
            .create("gh".into(), "bot".into(), me, "e1".into())
            .expect("create");
        let (c, _, _) = h
            .create("gh".into(), "bot".into(), me, "e2".into())
            .expect("create");
        assert!(
            h.end_execution("e1", other).is_empty(),
            "foreign execution end"
        );
        assert_eq!(h.end_execution("e1", me).len(), 2);
        assert!(h.get(&a, me).is_none() && h.get(&b, me).is_none());
        assert!(h.get(&c, me).is_some(), "another execution lives on");
        assert_eq!(
            h.held_by(me),
            vec![(c.clone(), "gh".to_owned(), "bot".to_owned())]
        );
        assert!(h.held_by(other).is_empty(), "held only by its owner");
        assert!(h.delete(&c, me));
        assert!(h.get(&c, me).is_none());
        let short = Handles::new(Duration::ZERO);
        let (d, _, _) = short
            .create("gh".into(), "bot".into(), me, "e".into())
            .expect("create");
        assert!(short.get(&d, me).is_none(), "expired");
    }
}
