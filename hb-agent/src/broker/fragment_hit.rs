//! A **fragment hit**: a run (at least [`crate::scrub::min_run`] characters) of a
//! credential a call carries, or of a credential of any other account its caller holds
//! a handle for ([`Others`]), or of one of their encodings, in what the caller sent
//! (target, headers, body, before injection) or anywhere in the upstream's answer other
//! than as the whole value (a whole echo is the `reflection` the scrubber already
//! redacts).
//!
//! Why a hit is not simply redacted: an answer cut where a caller's guess matched tells
//! it which guess was a piece of the key, and a sandbox that knows only a key's shape
//! rebuilds it a few characters at a time. Any answer that depends on where a guess
//! hit is such an oracle, so a hit is answered with one fixed error
//! ([`refusal`], `credential_fragment`) and nothing of the upstream's answer, and it
//! costs the caller its access to the account whose run was seen: its handles to the account are ended
//! and its calls and new handles for that (caller, account) get the same error for
//! `broker.fragment_bar_secs`. Other callers of the account keep full service. The
//! account gets a `reflection` signal (`seen`: `request_fragment`, `answer_fragment`),
//! so its integration's `on_reflection` runs.
//!
//! Owns: what counts as a hit in a request, the bar a hit sets, and the one answer
//! every refusal it causes gets.
//! Must never: say where a hit was (request or answer, which part), hand out any byte
//! of an answer that held one, or put a value or a handle in a record (handles appear
//! as keyed fingerprints).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use http::{HeaderName, HeaderValue};
use serde_json::json;

use super::{
    accounts::Current,
    error::{ApiError, Code},
    handles::Entry,
    identity::Caller,
    rotation::detect::{self, Detector, EventFields, SeenAt, Signal},
    state::Shared,
};

/// The one answer to a hit and to every call or handle request the bar refuses: the
/// same words whatever part of the request or answer held the run.
pub fn refusal() -> ApiError {
    ApiError::new(
        Code::CredentialFragment,
        "refused: a piece of the credential this handle stands for was in the call or its \
         answer. This caller's handles for the account are ended and it gets none for \
         broker.fragment_bar_secs",
    )
}

/// Where a hit was, for the record and the signal only (never the caller's answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Request,
    Answer,
}

impl Seen {
    fn at(self) -> SeenAt {
        match self {
            Seen::Request => SeenAt::RequestFragment,
            Seen::Answer => SeenAt::AnswerFragment,
        }
    }
}

/// What the caller sent, before injection.
pub struct Sent<'a> {
    pub target: &'a str,
    pub headers: &'a [(HeaderName, HeaderValue)],
    pub body: &'a [u8],
}

/// The credentials of the caller's other accounts (those it holds a handle for besides
/// the call's), each with one of its handles' entries: a run of one in a call of this
/// caller, request or answer, is a hit charged to that account. A caller holding
/// handles for two accounts could otherwise read one's credential, all but a character,
/// through a call made with the other (a provider's request log cut short).
pub type Others = [(Arc<Entry>, Arc<Current>)];

/// Whose credential a hit's run is of.
#[derive(Clone)]
pub enum Whose {
    /// A credential the call carries (or would, retried).
    Call,
    /// Another account the caller holds a handle for: one of that handle's entries.
    Other(Arc<Entry>),
}

/// Whether what the caller sent holds a run of one of `carried` (the account's usable
/// credentials: the active one and any the call may be retried with) or of `others`:
/// in the target as given and percent-decoded, in a header's name or value, or in the
/// body.
pub fn in_request(carried: &[Arc<Current>], others: &Others, sent: &Sent<'_>) -> Option<Whose> {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(sent.target).collect();
    let holds = |f: &crate::scrub::Fragments| {
        f.holds_run(sent.target.as_bytes())
            || f.holds_run(&decoded)
            || sent
                .headers
                .iter()
                .any(|(n, v)| f.holds_run(n.as_str().as_bytes()) || f.holds_run(v.as_bytes()))
            || f.holds_run(sent.body)
    };
    if carried.iter().filter_map(|c| c.fragments()).any(holds) {
        return Some(Whose::Call);
    }
    others
        .iter()
        .find(|(_, c)| c.fragments().is_some_and(holds))
        .map(|(e, _)| Whose::Other(e.clone()))
}

/// The parts of one answer checked for runs of the credentials its call sent and of the
/// caller's other accounts' (see [`Others`]), after the whole values were scrubbed from
/// them; remembers the first hit. It holds its own list of both (shared handles to the
/// credentials), so the check can run off the task that made the call.
pub struct AnswerWatch {
    sent: Vec<Arc<Current>>,
    others: Vec<(Arc<Entry>, Arc<Current>)>,
    hit: Mutex<Option<Whose>>,
}

impl AnswerWatch {
    pub fn new(sent: &[Arc<Current>], others: &Others) -> Self {
        Self {
            sent: sent.to_vec(),
            others: others.to_vec(),
            hit: Mutex::new(None),
        }
    }

    /// Every credential watched, with whose it is.
    pub fn watched(&self) -> impl Iterator<Item = (Whose, &crate::scrub::Fragments)> {
        let call = self
            .sent
            .iter()
            .filter_map(|c| c.fragments())
            .map(|f| (Whose::Call, f));
        let others = self
            .others
            .iter()
            .filter_map(|(e, c)| c.fragments().map(|f| (Whose::Other(e.clone()), f)));
        call.chain(others)
    }

    /// Checks `bytes`.
    pub fn check(&self, bytes: &[u8]) {
        if let Some((whose, _)) = self.watched().find(|(_, f)| f.holds_run(bytes)) {
            self.mark(whose);
        }
    }

    /// Checks `text` and gives it back (for `map_strings` and header folding).
    pub fn pass(&self, text: String) -> String {
        self.check(text.as_bytes());
        text
    }

    /// Records a hit found elsewhere (a spread view of the body); the first one counts.
    pub fn mark(&self, whose: Whose) {
        self.hit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert(whose);
    }

    /// Whose run the first hit was of, if there was one.
    pub fn hit(&self) -> Option<Whose> {
        self.hit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// What a hit is charged to.
pub struct Hit<'a> {
    pub caller: &'a Caller,
    pub policy: &'a str,
    pub entry: &'a Entry,
    /// The keyed fingerprint of the handle used.
    pub handle: Option<String>,
    pub seen: Seen,
}

/// A hit: the caller barred from the account (its handles to it ended), one audit
/// record and one event, the account's `reflection` signal; the fixed refusal.
pub fn charge(shared: &Arc<Shared>, hit: &Hit<'_>) -> ApiError {
    let e = hit.entry;
    let bar = Duration::from_secs(shared.config.broker.fragment_bar_secs);
    let revoked =
        shared
            .handles
            .bar_account(e.owner, &e.integration, &e.account, Instant::now() + bar);
    shared.forget_handles(&revoked);
    let barred_until = humantime::format_rfc3339_seconds(SystemTime::now() + bar).to_string();
    shared.audit.record(
        "credential_fragment",
        json!({
            "caller": super::state::caller_json(hit.caller, hit.policy),
            "integration": e.integration,
            "account": e.account,
            "execution": e.execution,
            "handle": hit.handle,
            "seen": hit.seen.at().as_str(),
            "revoked": revoked.len(),
            "barred_until": barred_until,
        }),
    );
    detect::event(
        shared,
        &EventFields {
            caller: Some(hit.caller),
            policy: hit.policy,
            verdict: "bar_account",
            reason: "credential_fragment",
            name: Some(format!("{}/{}", e.integration, e.account)),
            detail: format!(
                "{}; barred until {barred_until}; {} handles revoked",
                hit.seen.at().as_str(),
                revoked.len()
            ),
        },
    );
    shared.sensor.scrub_hit(&e.integration, &e.account);
    detect::signal(
        shared,
        &Signal {
            detector: Detector::Reflection,
            trigger: "reflection",
            integration: &e.integration,
            account: &e.account,
            policy: hit.policy,
            caller: Some(hit.caller),
            seen: hit.seen.at(),
            handle: hit.handle.clone(),
            execution: Some(&e.execution),
        },
    );
    refusal()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        secret::Secret,
        vault::{CredentialMeta, Status},
    };

    const KEY: &str = "key-9f3a61c0d2b84e57a1c6f0e3d9b27c48";

    fn carried() -> Vec<Arc<Current>> {
        let meta = CredentialMeta {
            id: "cred_1".into(),
            integration: "svc".into(),
            account: "bot".into(),
            status: Status::Active,
            created: SystemTime::now(),
            expires: None,
            rotated_from: None,
            grace_until: None,
            revoked: None,
        };
        vec![Arc::new(Current::new(
            &meta,
            Secret::new(KEY.as_bytes().to_vec()),
        ))]
    }

    fn header(name: &str, value: &str) -> (HeaderName, HeaderValue) {
        super::super::outbound::headers::header(name, value).expect("header")
    }

    fn sends(target: &str, headers: &[(HeaderName, HeaderValue)], body: &str) -> bool {
        in_request(
            &carried(),
            &[],
            &Sent {
                target,
                headers,
                body: body.as_bytes(),
            },
        )
        .is_some()
    }

    #[test]
    fn a_run_in_any_part_of_a_request_is_a_hit() {
        let run = &KEY[10..18];
        let u = "https://api.test/plain";
        assert!(sends(&format!("{u}?g={run}"), &[], ""));
        assert!(sends(
            &format!("{u}?g={}", run.to_ascii_uppercase()),
            &[],
            ""
        ));
        // Percent-encoded, character by character.
        let encoded: String = run.bytes().map(|b| format!("%{b:02X}")).collect();
        assert!(sends(&format!("{u}?g={encoded}"), &[], ""));
        assert!(sends(u, &[header("X-Guess", run)], ""));
        assert!(sends(u, &[], &format!("{{\"g\":\"{run}\"}}")));
        // Hex of a run (a form of the value).
        let hex: String = KEY[4..16].bytes().map(|b| format!("{b:02x}")).collect();
        assert!(sends(u, &[], &hex));
    }

    #[test]
    fn short_pieces_and_other_text_are_not_hits() {
        let u = "https://api.test/plain";
        // Below the run: "the key ending in 7c48" style text.
        assert!(!sends(&format!("{u}?ending={}", &KEY[29..]), &[], ""));
        assert!(!sends(u, &[header("X-Note", &KEY[..7])], ""));
        assert!(!sends(
            u,
            &[header("Content-Type", "application/json")],
            "{\"items\":[1,2,3],\"next\":\"cursor-0001\"}"
        ));
    }

    #[test]
    fn an_answer_watch_remembers_a_run_and_ignores_the_rest() {
        let sent = carried();
        let w = AnswerWatch::new(&sent, &[]);
        assert_eq!(w.pass("ok GET /plain?x=1".into()), "ok GET /plain?x=1");
        w.check(b"[REDACTED:live_secret] key ending in 7c48");
        assert!(w.hit().is_none());
        w.check(format!("echo {}", &KEY[..12].to_ascii_uppercase()).as_bytes());
        assert!(matches!(w.hit(), Some(Whose::Call)));
    }

    /// Another account's key (fake, made for this test).
    const OTHER: &str = "key-Vt5nR8aLw2Hx7Cm4Ze9Bp3Uy6Dj1KsQo";

    fn others() -> Vec<(Arc<Entry>, Arc<Current>)> {
        let meta = CredentialMeta {
            id: "cred_2".into(),
            integration: "svc".into(),
            account: "admin".into(),
            status: Status::Active,
            created: SystemTime::now(),
            expires: None,
            rotated_from: None,
            grace_until: None,
            revoked: None,
        };
        let entry = Arc::new(Entry {
            integration: "svc".into(),
            account: "admin".into(),
            owner: super::super::handles::Owner::Host { uid: 1000 },
            execution: "exec_1".into(),
            expires: Instant::now(),
            expires_at: SystemTime::now(),
        });
        vec![(
            entry,
            Arc::new(Current::new(&meta, Secret::new(OTHER.as_bytes().to_vec()))),
        )]
    }

    fn account(whose: Option<Whose>) -> Option<String> {
        whose.map(|w| match w {
            Whose::Call => "call".into(),
            Whose::Other(e) => e.account.clone(),
        })
    }

    #[test]
    fn a_run_of_another_held_account_is_a_hit_charged_to_that_account() {
        let (carried, others) = (carried(), others());
        let u = "https://api.test/plain";
        // A request: the other account's run, named; the call's own, the call.
        let whose_in = |target: &str| {
            let sent = Sent {
                target,
                headers: &[],
                body: b"",
            };
            account(in_request(&carried, &others, &sent))
        };
        assert_eq!(
            whose_in(&format!("{u}?g={}", &OTHER[10..20])).as_deref(),
            Some("admin")
        );
        assert_eq!(
            whose_in(&format!("{u}?g={}&h={}", &KEY[10..20], &OTHER[10..20])).as_deref(),
            Some("call")
        );
        // An answer: a request log cut one character short of the other's key.
        let w = AnswerWatch::new(&carried, &others);
        w.check(format!("/pad?api_key={}", &OTHER[..OTHER.len() - 1]).as_bytes());
        assert_eq!(account(w.hit()).as_deref(), Some("admin"));
        // Nothing of either: no hit.
        let w = AnswerWatch::new(&carried, &others);
        w.check(b"/pad?api_key=[REDACTED:live_secret] ending in KsQo");
        assert!(w.hit().is_none());
        // Without the other account held, the same log is no hit (the near miss).
        let w = AnswerWatch::new(&carried, &[]);
        w.check(format!("/pad?api_key={}", &OTHER[..OTHER.len() - 1]).as_bytes());
        assert!(w.hit().is_none());
    }
}
