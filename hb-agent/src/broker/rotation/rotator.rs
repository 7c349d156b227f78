//! What every rotator is asked and answers, and the rotator an integration configures:
//! [`exec`](super::exec) (the provider's own tool) or [`http`](super::http) (the
//! provider's API).
//!
//! Must never: carry a provider's own words as a failure (classes are fixed words: a
//! provider's text may quote a secret).

use std::time::SystemTime;

use super::{exec::ExecRotator, http::HttpRotator};
use crate::secret::Secret;

/// Why a rotator call did not give an answer; the class is a fixed word for the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotatorError {
    /// Worth another attempt later (exit 75, a timeout, a refused connection, a 5xx or
    /// 429): counts toward the rotator's circuit breaker.
    RetryLater(&'static str),
    /// Will not work as configured (other exits, a 4xx, unreadable answers).
    Failed(&'static str),
}

impl RotatorError {
    pub fn class(&self) -> &'static str {
        match self {
            RotatorError::RetryLater(c) | RotatorError::Failed(c) => c,
        }
    }
}

/// A new credential from the provider.
pub struct Minted {
    pub secret: Secret,
    pub expires: Option<SystemTime>,
}

/// Which of a rotation's keys a call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// The key the rotation replaces (create: the one being replaced; revoke: at retire).
    Old,
    /// The key the rotation minted (revoked when the rotation gives it up).
    New,
}

/// What the rotator is asked to do.
pub struct Ask<'a> {
    /// `create` or `revoke`.
    pub op: &'static str,
    pub rotation: &'a str,
    pub integration: &'a str,
    pub account: &'a str,
    /// Which key `secret` is.
    pub key: Key,
    /// create: the key being replaced; revoke: the key to revoke.
    pub secret: &'a Secret,
}

impl Ask<'_> {
    /// The provider's idempotency key for this call: the same for every retry of it
    /// (after a timeout, or a crash before its answer was recorded), different for each
    /// call a rotation makes.
    pub fn idempotency_key(&self) -> String {
        match (self.op, self.key) {
            ("create", _) => format!("{}:create", self.rotation),
            (op, Key::Old) => format!("{}:{op}:old", self.rotation),
            (op, Key::New) => format!("{}:{op}:new", self.rotation),
        }
    }
}

/// An integration's rotator, ready to call.
pub enum Rotator<'a> {
    Exec(ExecRotator),
    Http(HttpRotator<'a>),
}

impl Rotator<'_> {
    /// `create`: a new credential replacing `ask.secret`.
    pub async fn create(&self, ask: &Ask<'_>) -> Result<Minted, RotatorError> {
        match self {
            Rotator::Exec(r) => r.create(ask).await,
            Rotator::Http(r) => r.create(ask).await,
        }
    }

    /// `revoke`: the provider stops accepting `ask.secret`.
    pub async fn revoke(&self, ask: &Ask<'_>) -> Result<(), RotatorError> {
        match self {
            Rotator::Exec(r) => r.revoke(ask).await,
            Rotator::Http(r) => r.revoke(ask).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_of_a_rotation_has_its_own_idempotency_key_and_retries_share_it() {
        let s = Secret::new(b"k".to_vec());
        let ask = |op, key| Ask {
            op,
            rotation: "rot_1",
            integration: "i",
            account: "a",
            key,
            secret: &s,
        };
        assert_eq!(ask("create", Key::Old).idempotency_key(), "rot_1:create");
        assert_eq!(
            ask("revoke", Key::Old).idempotency_key(),
            "rot_1:revoke:old"
        );
        assert_eq!(
            ask("revoke", Key::New).idempotency_key(),
            "rot_1:revoke:new"
        );
    }
}
