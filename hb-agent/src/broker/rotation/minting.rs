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
//! Owns: the count of mints in flight per integration.
//! Must never: let [`Minting::wait`] return `true` while a mint of an integration its
//! caller is concerned with is in flight.

use std::{collections::HashMap, time::Duration};

use tokio::sync::watch;

/// The longest an answer waits for a mint (providers answer a create in well under it).
pub const HOLD: Duration = Duration::from_secs(5);

pub struct Minting {
    /// Mints in flight per integration (absent: none).
    inflight: watch::Sender<HashMap<String, usize>>,
}

impl Default for Minting {
    fn default() -> Self {
        Self {
            inflight: watch::Sender::new(HashMap::new()),
        }
    }
}

/// One mint in flight; over when dropped.
pub struct Mint<'a> {
    minting: &'a Minting,
    integration: String,
}

impl Minting {
    /// A mint of `integration` begins (before its rotator is asked).
    pub fn begin(&self, integration: &str) -> Mint<'_> {
        self.inflight.send_modify(|m| {
            *m.entry(integration.to_owned()).or_default() += 1;
        });
        Mint {
            minting: self,
            integration: integration.to_owned(),
        }
    }

    /// Whether any mint is in flight (a cheap check before [`Minting::wait`]).
    pub fn any(&self) -> bool {
        !self.inflight.borrow().is_empty()
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

impl Drop for Mint<'_> {
    fn drop(&mut self) {
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
        let mint = minting.begin("svc");
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
        let a = minting.begin("svc");
        let b = minting.begin("svc");
        drop(a);
        assert!(
            !minting
                .wait(|i| i == "svc", Duration::from_millis(10))
                .await
        );
        drop(b);
        assert!(minting.wait(|i| i == "svc", Duration::ZERO).await);
    }
}
