//! Event-stream sessions: short-lived bearer tokens for `GET /v1/events`.
//!
//! Only root or `broker.operator_uid` may mint one (`POST /v1/sessions`). A token is
//! `hb_sess_` + 64 hex digits (32 random bytes), shown once, and bound to the uid that
//! minted it: a process of another user that gets hold of the token (a sandbox, say) is
//! refused, as is any token after `session_ttl_secs`, after `DELETE /v1/sessions`, or
//! from an earlier run of the agent (sessions live only in this process's memory, kept
//! as SHA-256 digests, so the table holds no usable token). Binding to the uid rather
//! than the minting process keeps `TOKEN=$(curl …)` followed by `curl -N …` usable.
//!
//! Must never: tell a caller why a token failed beyond "unauthorized".

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ring::{
    digest,
    rand::{SecureRandom as _, SystemRandom},
};

pub const PREFIX: &str = "hb_sess_";

struct Session {
    owner: u32,
    expires: Instant,
}

pub struct Sessions {
    ttl: Duration,
    rng: SystemRandom,
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
}

fn digest_of(token: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A freshly minted token: handed to the caller once.
pub struct Minted {
    pub token: String,
    pub expires_in: Duration,
}

impl Sessions {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            rng: SystemRandom::new(),
            by_digest: Mutex::new(HashMap::new()),
        }
    }

    pub fn mint(&self, owner: u32) -> Option<Minted> {
        let mut raw = [0u8; 32];
        self.rng.fill(&mut raw).ok()?;
        let mut token = String::with_capacity(PREFIX.len() + 64);
        token.push_str(PREFIX);
        for b in raw {
            token.push_str(&format!("{b:02x}"));
        }
        let mut table = self.by_digest.lock().ok()?;
        let now = Instant::now();
        table.retain(|_, s| s.expires > now);
        table.insert(
            digest_of(&token),
            Session {
                owner,
                expires: now + self.ttl,
            },
        );
        Some(Minted {
            token,
            expires_in: self.ttl,
        })
    }

    /// When the session of `token`, presented by `caller`, ends; `None`: refuse.
    pub fn check(&self, token: &str, caller: u32) -> Option<Instant> {
        let table = self.by_digest.lock().ok()?;
        let s = table.get(&digest_of(token))?;
        (s.owner == caller && s.expires > Instant::now()).then_some(s.expires)
    }

    /// Ends the session of `token` if `caller` owns it; whether it did.
    pub fn revoke(&self, token: &str, caller: u32) -> bool {
        let Ok(mut table) = self.by_digest.lock() else {
            return false;
        };
        let key = digest_of(token);
        if table.get(&key).is_some_and(|s| s.owner == caller) {
            table.remove(&key);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_only_for_its_uid_until_revoked_or_expired() {
        let (me, other) = (0, 1000);
        let sessions = Sessions::new(Duration::from_secs(60));
        let minted = sessions.mint(me).expect("mint");
        assert!(minted.token.starts_with(PREFIX) && minted.token.len() == PREFIX.len() + 64);
        assert!(sessions.check(&minted.token, me).is_some());
        assert!(
            sessions.check(&minted.token, other).is_none(),
            "another uid"
        );
        assert!(sessions.check("hb_sess_00", me).is_none(), "unknown token");
        assert!(!sessions.revoke(&minted.token, other));
        assert!(sessions.revoke(&minted.token, me));
        assert!(sessions.check(&minted.token, me).is_none(), "revoked");
        let short = Sessions::new(Duration::ZERO);
        let t = short.mint(me).expect("mint");
        assert!(short.check(&t.token, me).is_none(), "expired");
    }
}
