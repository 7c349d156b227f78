//! The audit records a caller's calls make, under an event budget per caller.
//!
//! Every broker call is audited (a decision, a handle's use, a text-gate call). Written
//! one line per call, a sandbox that calls in a loop would fill the audit log and
//! rotate its own earlier records (a refused connect, a refused call) out of every
//! file. So a caller's records go through an [`EventBudget`], as the kernel's events
//! of a cgroup do: [`limits::EVENT_BURST`] records per window, and past it the latest
//! record of each subject (kind, step, decision, detector, integration, account) held back and
//! written once per window with `suppressed`, the count of the others it stands for.
//! Nothing goes uncounted; a caller's flood costs it a few records a second. Its
//! first record of each subject in a window is written at once, burst or not (up to
//! 64 subjects), so its first refusal is not held back behind its allowed calls. The
//! refusals its calls put on the event stream (which the audit log and `events
//! follow` read) have a budget of their own, the same way.
//!
//! Owns: the budgets, per caller cgroup (a caller's pids share one).
//! Must never: drop a record without counting it, or key a subject on a host name, a
//! path or other text a caller varies per call (its flood would make a subject per
//! call; a method it chooses is bounded by the budget's subjects, past which counts
//! still ride on the next record).
//!
//! [`limits::EVENT_BURST`]: hb_common::limits::EVENT_BURST

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hb_common::limits::EVENT_WINDOW_NS;
use serde_json::Value;

use super::state::Shared;
use crate::{
    audit::AuditLog,
    events::{Budgeted, EventBudget},
};

/// One audit record of a caller's call, before its budget judged it.
pub struct CallerRecord {
    kind: &'static str,
    subject: Subject,
    record: Value,
    suppressed: u64,
}

/// What makes two of a caller's records one: names from the config and the broker's
/// own words, never the caller's.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    kind: &'static str,
    step: String,
    decision: String,
    detector: String,
    integration: String,
    account: String,
}

impl CallerRecord {
    /// `record` (an object) of `kind`; its subject is `kind`, the first word of the
    /// record's `action`, `step` or `endpoint` (a method, not the host that follows
    /// it), and its `decision`, `detector`, `integration` and `account` fields.
    pub fn new(kind: &'static str, record: Value) -> Self {
        let field = |name: &str| record[name].as_str().unwrap_or_default().to_owned();
        let step = ["action", "step", "endpoint"]
            .iter()
            .map(|name| field(name))
            .find(|v| !v.is_empty())
            .and_then(|v| v.split_whitespace().next().map(str::to_owned))
            .unwrap_or_default();
        let subject = Subject {
            kind,
            step,
            decision: field("decision"),
            detector: field("detector"),
            integration: field("integration"),
            account: field("account"),
        };
        Self {
            kind,
            subject,
            record,
            suppressed: 0,
        }
    }

    fn write(mut self, audit: &AuditLog) {
        if self.suppressed > 0
            && let Some(fields) = self.record.as_object_mut()
        {
            fields.insert("suppressed".into(), self.suppressed.into());
        }
        audit.record(self.kind, self.record);
    }
}

impl Budgeted for CallerRecord {
    type Subject = Subject;
    fn subject(&self) -> Subject {
        self.subject.clone()
    }
    fn suppressed_mut(&mut self) -> &mut u64 {
        &mut self.suppressed
    }
}

/// The budgets of the callers that made calls lately, by cgroup, of one kind of
/// record: audit records ([`CallerRecord`]) or the refusals a caller's calls put on the
/// event stream ([`EventRecord`](crate::events::EventRecord)).
pub struct CallerBudgets<R: Budgeted> {
    budgets: Mutex<HashMap<String, CallerBudget<R>>>,
}

/// Subjects a caller may have written at once each window past its budget: its first
/// record of a kind it has not made this window (a first refusal after a burst of
/// allowed calls) is not held back behind the burst.
const FRESH_SUBJECTS: usize = 64;

/// One caller's budget, and the subjects it was written for this window.
struct CallerBudget<R: Budgeted> {
    budget: EventBudget<R>,
    fresh: HashSet<R::Subject>,
    since: Instant,
}

impl<R: Budgeted> CallerBudget<R> {
    fn window_passed(&self, now: Instant) -> bool {
        now.duration_since(self.since) >= Duration::from_nanos(EVENT_WINDOW_NS)
    }

    /// `record` written at once if its subject is new this window (while fewer than
    /// [`FRESH_SUBJECTS`] were), else judged by the budget.
    fn admit(&mut self, record: R, now: Instant) -> Vec<R> {
        if self.window_passed(now) {
            self.fresh.clear();
            self.since = now;
        }
        let subject = record.subject();
        if !self.fresh.contains(&subject) && self.fresh.len() < FRESH_SUBJECTS {
            self.fresh.insert(subject);
            return vec![record];
        }
        self.budget.admit(record, now)
    }
}

impl<R: Budgeted> Default for CallerBudgets<R> {
    fn default() -> Self {
        Self {
            budgets: Mutex::default(),
        }
    }
}

impl<R: Budgeted> CallerBudgets<R> {
    /// What to write now of `record`, from the caller in `cgroup`: nothing while it is
    /// held back past the caller's budget, else what was held back and it.
    pub fn admit(&self, cgroup: &str, record: R) -> Vec<R> {
        let now = Instant::now();
        match self.budgets.lock() {
            Ok(mut budgets) => budgets
                .entry(cgroup.to_owned())
                .or_insert_with(|| CallerBudget {
                    budget: EventBudget::new(now),
                    fresh: HashSet::new(),
                    since: now,
                })
                .admit(record, now),
            // A poisoned lock (a panic elsewhere) must not cost the record.
            Err(_) => vec![record],
        }
    }

    /// What every budget whose window has passed held back; forgets the budgets that
    /// hold nothing.
    pub fn take_due(&self) -> Vec<R> {
        let now = Instant::now();
        let Ok(mut budgets) = self.budgets.lock() else {
            return Vec::new();
        };
        let mut due = Vec::new();
        budgets.retain(|_, caller| {
            if caller.budget.due(now) {
                due.extend(caller.budget.take_held());
            }
            !(caller.budget.idle(now) && caller.window_passed(now))
        });
        due
    }
}

impl CallerBudgets<CallerRecord> {
    /// Writes `record` of the caller in `cgroup` now, or holds it back.
    pub fn record(&self, audit: &AuditLog, cgroup: &str, record: CallerRecord) {
        for record in self.admit(cgroup, record) {
            record.write(audit);
        }
    }
}

/// Writes held-back records every second, so a caller that stops calling has its last
/// window's records written without waiting for another call.
pub async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for record in shared.caller_audit.take_due() {
            record.write(&shared.audit);
        }
        for event in shared.caller_events.take_due() {
            let _ = shared.events.send(Arc::new(event));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{audit::Fsync, scrub::Scrubber};

    fn decision(n: usize) -> CallerRecord {
        CallerRecord::new(
            "broker_decision",
            serde_json::json!({
                "action": "GET",
                "decision": "policy_denied",
                "detail": format!("host{n}.test"),
            }),
        )
    }

    fn written(dir: &std::path::Path) -> Vec<Value> {
        std::fs::read_to_string(dir.join("audit.log"))
            .expect("log")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect()
    }

    #[test]
    fn a_callers_flood_is_written_as_its_burst_and_one_counted_record_a_window() {
        let dir = std::env::temp_dir().join(format!("hb-caller-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let audit = AuditLog::open(&dir, 1 << 24, 2, Fsync::Never, Arc::new(Scrubber::new()))
            .expect("audit");
        let callers = CallerBudgets::<CallerRecord>::default();
        let flood = 1000;
        for n in 0..flood {
            callers.record(&audit, "/sandbox/a", decision(n));
        }
        // Another caller has its own budget.
        callers.record(&audit, "/sandbox/b", decision(0));
        let burst = usize::try_from(hb_common::limits::EVENT_BURST).expect("burst");
        assert_eq!(
            written(&dir).len(),
            1 + burst + 1,
            "a's first record, its burst and b's record, then nothing until a's window passes"
        );
        // A's first record of another subject is written at once, behind no burst.
        callers.record(
            &audit,
            "/sandbox/a",
            CallerRecord::new(
                "broker_decision",
                serde_json::json!({"action": "scrub", "decision": "rate_limited"}),
            ),
        );
        assert_eq!(written(&dir).len(), 1 + burst + 1 + 1);
        // What the window held back: one record (one subject) carrying the rest.
        let held = callers
            .budgets
            .lock()
            .expect("lock")
            .get_mut("/sandbox/a")
            .expect("a's budget")
            .budget
            .take_held();
        assert_eq!(held.len(), 1, "one subject");
        for record in held {
            record.write(&audit);
        }
        let records = written(&dir);
        let last = records.last().expect("the held record");
        assert_eq!(last["detail"], "host999.test", "the latest of its subject");
        let counted: u64 = records
            .iter()
            .map(|r| 1 + r["suppressed"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(counted, flood as u64 + 2, "every call counted once");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_subject_is_never_text_the_caller_chose() {
        let a = CallerRecord::new(
            "broker_decision",
            serde_json::json!({"action": "GET", "decision": "policy_denied", "detail": "a.test"}),
        );
        let b = CallerRecord::new(
            "broker_decision",
            serde_json::json!({"action": "GET", "decision": "policy_denied", "detail": "b.test"}),
        );
        let c = CallerRecord::new(
            "broker_decision",
            serde_json::json!({"action": "POST https://a.test", "decision": "policy_denied", "detail": "a.test"}),
        );
        let d = CallerRecord::new(
            "broker_decision",
            serde_json::json!({"action": "POST https://b.test", "decision": "policy_denied", "detail": "a.test"}),
        );
        assert!(c.subject() == d.subject(), "the host is not the subject");
        assert!(a.subject() == b.subject());
        assert!(a.subject() != c.subject());
    }
}
