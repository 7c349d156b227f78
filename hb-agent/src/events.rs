//! Kernel events: from the ring buffer to `state_dir/events.jsonl` and the log.
//!
//! Owns: decoding [`hb_common::Event`] records, their JSON form (stable field names:
//! scripts and tests match on them), and the size-capped events file that
//! `hb-agent events` reads from another process. The agent is the ring buffer's only
//! consumer; the file is how everyone else sees what the kernel refused. Sandbox
//! launchers write to it too (the `seccomp` refusals of their sandbox, [`append_one`]).
//!
//! Must never: block the kernel (a full ring buffer drops events and counts them, it
//! never delays a verdict), or write anything secret (events hold addresses, ports,
//! process names and cgroup ids only).

use std::{
    collections::HashMap,
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use hb_common::{AF_INET, Event, EventRate, EventRateKey, hook, reason, verdict};
use serde::{Deserialize, Serialize};

use crate::maps::addr_of;

/// Displays an attacker-chosen string (a process name, a DNS name, a cgroup path) on one
/// line: control characters (newline, carriage return, escape, …), Unicode line and
/// paragraph separators and bidi controls are written as `\n`, `\u{1b}`, …, and `\`
/// as `\\`, so the text log cannot be given forged lines or rewritten by a terminal.
/// The JSON forms the CLI prints go through [`json_line`].
pub struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        for c in self.0.chars() {
            if acted_on(c) || c == '\\' {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Whether a terminal (or a text viewer) may act on `c` rather than show it: control
/// characters (C0, DEL, C1: U+009B is CSI to a terminal that reads 8-bit controls),
/// Unicode line and paragraph separators, bidi controls.
fn acted_on(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// `value` as one line of JSON for the operator's terminal (the CLI's `--json`, the
/// events file an operator may follow with `tail -f`): serde's, with the characters
/// [`acted_on`] that serde writes raw (DEL, C1, separators, bidi controls) written as
/// `\uXXXX` escapes too, so a sandbox's process name or cgroup name reads back the same
/// to a parser and does nothing to a terminal.
pub fn json_line<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    serde_json::to_string(value).map(|json| inert(&json))
}

/// [`json_line`] in serde's pretty form.
pub fn json_pretty<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    serde_json::to_string_pretty(value).map(|json| inert(&json))
}

/// `json` (serde's, or of its shape: the audit log's scrubbed lines) with what
/// [`acted_on`] names, but newlines, as `\uXXXX`. Outside its strings such JSON holds
/// ASCII punctuation, spaces and (pretty) newlines, and inside them every C0 control is
/// escaped, so each such character lies in a string, where the escape (they all lie in
/// the Basic Multilingual Plane: one each) stands for it.
pub fn inert(json: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c != '\n' && acted_on(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// An attacker-chosen value of a `key=value` text line (`hb-agent events`): [`Escaped`],
/// and its spaces and `=` written as `\u{20}` and `\u{3d}`, so it cannot read as more
/// fields: a process named `x policy=web` would otherwise add `policy=web` to the line
/// of its own refusal, for `grep policy=web` or any key=value reader to file it under
/// another policy.
pub struct Field<'a>(pub &'a str);

impl std::fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        for c in Escaped(self.0).to_string().chars() {
            match c {
                ' ' | '=' => write!(f, "{}", c.escape_unicode())?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// File name below `state_dir`.
pub const EVENTS_FILE: &str = "events.jsonl";

/// One event as written to the events file and printed by `hb-agent events --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventRecord {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// `connect4`, `connect6`, `sendmsg4`, `sendmsg6`, `skb_egress`, `skb_ingress`,
    /// `setsockopt` ([`hook::name`]); `dns` (the resolver); `seccomp` (a system call the
    /// sandbox's seccomp filter refused, written by the `sandbox run` launcher).
    pub hook: String,
    /// `deny` or `audit`; `lost` for an `events_dropped` record (events of the hook the
    /// agent's queue had no room for: their count is `suppressed`).
    pub verdict: String,
    /// `deny_range`, `not_allowed`, `embedded_deny_range`, `source_route` (a packet with
    /// an IPv6 routing header or IPv4 source route, or the socket option that sets one),
    /// `inbound`, `multicast_join` ([`reason::name`]); the resolver's own;
    /// `syscall_refused` for `seccomp`.
    pub reason: String,
    pub policy: String,
    pub cgroup_id: u64,
    /// Path below the cgroup2 mount, when the agent knows it.
    pub cgroup: Option<String>,
    /// Process id (tgid); 0 for packet events, which may run outside the sender's context.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub comm: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or the protocol number.
    pub protocol: String,
    /// The far end: the destination of outbound traffic; for `skb_ingress` events, the
    /// sender of the inbound packet.
    pub dst: String,
    /// Destination port; for `skb_ingress` events, the sandbox's local port; for
    /// `setsockopt`, the refused option as `level << 8 | optname`.
    pub port: u16,
    /// The DNS name, for the resolver's events; the system call, for `seccomp` ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Refusals of the same cgroup the kernel enforced but did not report one by one
    /// since its previous event: the cgroup had used up its event budget
    /// (`hb_common::limits::EVENT_BURST` per `EVENT_WINDOW_NS`).
    #[serde(default)]
    pub suppressed: u64,
    /// For the broker's `detector` events: what was done, in fixed words (the
    /// outcome of the signal's action, a limit reached, a caller ended). For a
    /// `net_raw_pod` or `unconfined_pod` event: which containers keep `CAP_NET_RAW`
    /// or run outside hb's seccomp profile, and the fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Decodes a ring buffer record. `None` for a record of the wrong size.
pub fn decode(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < size_of::<Event>() {
        return None;
    }
    // SAFETY: length checked; Event is Pod (any bytes are a valid value).
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}

/// Monotonic now, in the clock `bpf_ktime_get_ns` uses.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The hook of an [`Uncarried`] record: refusals of any of a cgroup's programs.
pub const KERNEL_HOOK: &str = "kernel";
/// Its reason.
pub const COUNTED_REASON: &str = "refusals_counted";

/// Refusals the kernel counted past a cgroup's event budget that no event carries yet.
///
/// The kernel adds each refusal it does not report to its cgroup's `pending`
/// (`HB_EVENT_BUDGET`), and the cgroup's next reported event takes them. A sandbox that
/// stops after a flood (or ends) leaves them there, in no event. Once such a count has
/// stood still for a tick, the agent writes it as one `refusals_counted` record
/// (standing, like every record, for one refusal and its `suppressed` others) and takes
/// what it wrote off the next kernel event of that cgroup, so each refusal is counted
/// once. The kernel's map is only read: its counts change by atomic adds the agent
/// cannot join.
#[derive(Default)]
pub struct Uncarried {
    cgroups: HashMap<EventRateKey, Pending>,
}

#[derive(Default)]
struct Pending {
    /// `pending` at the previous tick.
    last: u64,
    /// How many of them a record has carried already.
    written: u64,
    /// The policy of the cgroup's last kernel event (its cgroup may be gone by now).
    policy_id: Option<u32>,
}

impl Uncarried {
    /// The cgroups whose pending count stood still since the previous call and holds
    /// refusals not written yet: each cgroup id, its policy when an event named it, and
    /// how many. `kernel` is the content of `HB_EVENT_BUDGET`; call it every tick.
    pub fn due(&mut self, kernel: &[(EventRateKey, EventRate)]) -> Vec<(u64, Option<u32>, u64)> {
        let present: std::collections::HashSet<&EventRateKey> =
            kernel.iter().map(|(k, _)| k).collect();
        self.cgroups.retain(|k, _| present.contains(k));
        let mut out = Vec::new();
        for (key, rate) in kernel {
            let p = self.cgroups.entry(*key).or_default();
            let still = rate.pending == p.last;
            p.last = rate.pending;
            // Still refusing: its next reported event carries them.
            if still && rate.pending > p.written {
                out.push((key.cgroup_id, p.policy_id, rate.pending - p.written));
                p.written = rate.pending;
            }
        }
        out
    }

    /// Takes what was written already for `e`'s cgroup off the count `e` carries.
    pub fn carry(&mut self, e: &mut Event) {
        let key = EventRateKey {
            cgroup_id: e.cgroup_id,
            inbound: u32::from(e.hook == hook::SKB_INGRESS),
            _pad: 0,
        };
        let p = self.cgroups.entry(key).or_default();
        p.policy_id = Some(e.policy_id);
        let already = p.written.min(u64::from(e.suppressed));
        e.suppressed -= already as u32;
        p.written -= already;
    }
}

/// The record of `n` refusals of a cgroup of `policy` that no event carried.
pub fn counted_record(cgroup_id: u64, policy: String, n: u64) -> EventRecord {
    EventRecord {
        policy,
        cgroup_id,
        ..own_record(
            KERNEL_HOOK,
            verdict::name(verdict::DENY),
            COUNTED_REASON,
            n.saturating_sub(1),
        )
    }
}

/// A record the agent writes of its own (a count, not one refusal): no process, no
/// destination, no policy or cgroup until the caller names them.
pub fn own_record(hook: &str, verdict: &str, reason: &str, suppressed: u64) -> EventRecord {
    EventRecord {
        time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        hook: hook.to_owned(),
        verdict: verdict.to_owned(),
        reason: reason.to_owned(),
        policy: String::new(),
        cgroup_id: 0,
        cgroup: None,
        pid: 0,
        tid: 0,
        comm: String::new(),
        family: String::new(),
        protocol: String::new(),
        dst: String::new(),
        port: 0,
        name: None,
        suppressed,
        detail: None,
    }
}

/// Renders an event; `policies` maps ids to names, `cgroups` ids to paths.
pub fn render(
    e: &Event,
    policies: &HashMap<u32, String>,
    cgroups: &HashMap<u64, String>,
) -> EventRecord {
    let age = Duration::from_nanos(monotonic_ns().saturating_sub(e.ts_ns));
    let when = SystemTime::now()
        .checked_sub(age)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let v4 = e.family == AF_INET;
    let comm_end = e.comm.iter().position(|b| *b == 0).unwrap_or(e.comm.len());
    EventRecord {
        time: humantime::format_rfc3339_millis(when).to_string(),
        hook: hook::name(e.hook).to_owned(),
        verdict: verdict::name(e.verdict).to_owned(),
        reason: reason::name(e.reason).to_owned(),
        policy: policies
            .get(&e.policy_id)
            .cloned()
            .unwrap_or_else(|| format!("#{}", e.policy_id)),
        cgroup_id: e.cgroup_id,
        cgroup: cgroups.get(&e.cgroup_id).cloned(),
        pid: (e.pid_tgid >> 32) as u32,
        tid: e.pid_tgid as u32,
        comm: String::from_utf8_lossy(&e.comm[..comm_end]).into_owned(),
        family: if v4 { "ipv4" } else { "ipv6" }.to_owned(),
        protocol: match e.protocol {
            1 => "icmp".to_owned(),
            6 => "tcp".to_owned(),
            17 => "udp".to_owned(),
            58 => "icmpv6".to_owned(),
            p => p.to_string(),
        },
        dst: addr_of(&e.addr, v4).to_string(),
        port: e.port,
        name: None,
        suppressed: u64::from(e.suppressed),
        detail: None,
    }
}

impl std::fmt::Display for EventRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dst = if self.hook == hook::name(hook::SKB_INGRESS) {
            // Inbound: the far end sent to the sandbox's local port.
            format!("{} -> :{}", self.dst, self.port)
        } else if self.hook == SECCOMP_HOOK || self.hook == KERNEL_HOOK {
            // A refused system call has no destination (its name is printed below), nor
            // has a count of a cgroup's refusals.
            String::from("-")
        } else if self.hook == hook::name(hook::SETSOCKOPT) {
            // A refused socket option has no destination: show its level and name.
            format!("option={}:{}", self.port >> 8, self.port & 0xff)
        } else if self.hook == hook::name(hook::SOCK_CREATE) {
            // Nor has a refused socket: its type (2 datagram, 3 raw).
            format!("type={}", self.port)
        } else if self.family == "ipv6" {
            format!("[{}]:{}", self.dst, self.port)
        } else {
            format!("{}:{}", self.dst, self.port)
        };
        write!(
            f,
            "{} {:<5} {:<19} {:<10} {:<4} {:<22} policy={} pid={} comm={} cgroup={}",
            self.time,
            self.verdict,
            self.reason,
            self.hook,
            self.protocol,
            dst,
            Field(&self.policy),
            self.pid,
            Field(&self.comm),
            Field(self.cgroup.as_deref().unwrap_or("?")),
        )?;
        if let Some(name) = &self.name {
            let key = if self.hook == SECCOMP_HOOK {
                "syscall"
            } else {
                "name"
            };
            write!(f, " {key}={}", Field(name))?;
        }
        if self.suppressed > 0 {
            write!(f, " suppressed_before={}", self.suppressed)?;
        }
        if let Some(detail) = &self.detail {
            // hb's own words (a count, an outcome): shown as written.
            write!(f, " detail={}", Escaped(detail))?;
        }
        Ok(())
    }
}

/// The way the resolver, the egress guard and the pod watcher hand their events to the
/// agent's event writer: a bounded channel sent to without waiting (a full one drops the
/// record rather than delay an answer or an accept), which counts what it drops per
/// hook. The writer turns the counts into one `events_dropped` record per hook and
/// second at most ([`dropped_record`]), so a flood that outruns the writer leaves a
/// trace of what it cost instead of vanishing.
#[derive(Clone)]
pub struct EventSender {
    tx: tokio::sync::mpsc::Sender<EventRecord>,
    dropped: DroppedEvents,
}

/// Records dropped at a full [`EventSender`] channel, per hook, since last taken.
#[derive(Clone, Default)]
pub struct DroppedEvents(std::sync::Arc<std::sync::Mutex<HashMap<String, u64>>>);

impl EventSender {
    /// A sender and the writer's receiver, with room for `capacity` records.
    pub fn channel(capacity: usize) -> (Self, tokio::sync::mpsc::Receiver<EventRecord>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        let sender = Self {
            tx,
            dropped: DroppedEvents::default(),
        };
        (sender, rx)
    }

    /// Queues `record` if there is room, else counts it dropped. Never waits.
    pub fn try_send(&self, record: EventRecord) {
        if let Err(e) = self.tx.try_send(record) {
            let record = e.into_inner();
            if let Ok(mut dropped) = self.dropped.0.lock() {
                *dropped.entry(record.hook).or_insert(0) += 1;
            }
        }
    }

    /// The drop counts, for the writer.
    pub fn dropped(&self) -> DroppedEvents {
        self.dropped.clone()
    }
}

impl DroppedEvents {
    /// The counts since the last call, per hook, sorted by hook.
    pub fn take(&self) -> Vec<(String, u64)> {
        let Ok(mut dropped) = self.0.lock() else {
            return Vec::new();
        };
        let mut out: Vec<(String, u64)> = std::mem::take(&mut *dropped).into_iter().collect();
        out.sort();
        out
    }
}

/// The record that says `count` events of `hook` were dropped before their budget could
/// judge them (the writer fell behind a flood): reason `events_dropped`, the count in
/// `suppressed`.
pub fn dropped_record(hook: &str, count: u64) -> EventRecord {
    EventRecord {
        detail: Some(format!(
            "{count} {hook} events dropped: the agent's event queue was full"
        )),
        ..own_record(hook, "lost", "events_dropped", count)
    }
}

/// Most refusal subjects one [`EventBudget`] holds back at once; past it the least
/// recently refused one goes, and its count is carried by the budget's next record.
pub const HELD_BACK_SUBJECTS: usize = 256;

/// The event budget of refusals that do not come from the kernel: `EVENT_BURST` records
/// per window (`hb_common::limits::EVENT_BURST` per `EVENT_WINDOW_NS`, as the kernel
/// gives each cgroup), and past it, refusals held back per subject ([`Subject`]): the
/// latest of each and how many. Each subject is written once, with its count, when a
/// record is next admitted or the window has passed ([`EventBudget::due`]) — so a flood
/// of one refusal cannot hide another, and none goes uncounted. Used per sandbox for
/// its `seccomp` refusals, and per (source, policy, cgroup) for the resolver's and the
/// guard's ([`AgentBudgets`]).
pub struct EventBudget<R: Budgeted = EventRecord> {
    window: Window,
    /// Held-back refusals per subject, least recently refused first: the latest of each
    /// and how many.
    held: hashlink::LinkedHashMap<R::Subject, (R, u64)>,
    /// Refusals of subjects pushed out of `held` (past [`HELD_BACK_SUBJECTS`]): carried
    /// by the next record written.
    overflow: u64,
}

/// What a refusal is held back as: refusals that differ only in their time, process and
/// count are one (the system call of a `seccomp` refusal, the name of a `dns` one, the
/// name and destination of a `guard` one).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    reason: String,
    name: Option<String>,
    dst: String,
    port: u16,
}

impl Subject {
    /// A refused system call's subject (a `seccomp` event's): its name.
    pub fn syscall(name: &str) -> Self {
        Self {
            reason: SYSCALL_REFUSED.to_owned(),
            name: Some(name.to_owned()),
            dst: String::new(),
            port: 0,
        }
    }

    fn of(record: &EventRecord) -> Self {
        Self {
            reason: record.reason.clone(),
            name: record.name.clone(),
            dst: record.dst.clone(),
            port: record.port,
        }
    }
}

/// A record an [`EventBudget`] can hold back: which records are one subject, and where
/// the count of the others it stands for goes.
pub trait Budgeted {
    type Subject: Clone + Eq + std::hash::Hash;
    fn subject(&self) -> Self::Subject;
    fn suppressed_mut(&mut self) -> &mut u64;
}

impl Budgeted for EventRecord {
    type Subject = Subject;
    fn subject(&self) -> Subject {
        Subject::of(self)
    }
    fn suppressed_mut(&mut self) -> &mut u64 {
        &mut self.suppressed
    }
}

impl<R: Budgeted> EventBudget<R> {
    pub fn new(now: Instant) -> Self {
        Self {
            window: Window::new(now),
            held: hashlink::LinkedHashMap::new(),
            overflow: 0,
        }
    }

    /// Judges `record` against the budget; returns what to write now, in order: nothing
    /// while it is held back, else every held-back subject once (see
    /// [`EventBudget::take_held`]) and then `record`, carrying the count its own subject
    /// had held back.
    pub fn admit(&mut self, mut record: R, now: Instant) -> Vec<R> {
        let subject = record.subject();
        if !self.window.admit(now) {
            self.hold(subject, record);
            return Vec::new();
        }
        let own = self.held.remove(&subject).map_or(0, |(_, n)| n);
        *record.suppressed_mut() += own + std::mem::take(&mut self.overflow);
        let mut out = self.take_held();
        out.push(record);
        out
    }

    /// Whether the window has passed with refusals held back: time to write them
    /// ([`EventBudget::take_held`]) without waiting for another refusal.
    pub fn due(&self, now: Instant) -> bool {
        !self.held.is_empty() && self.window.passed(now)
    }

    /// Whether the budget holds nothing and its window has passed: forgetting it changes
    /// nothing (a new one starts with a whole window, as this one would).
    pub fn idle(&self, now: Instant) -> bool {
        self.held.is_empty() && self.overflow == 0 && self.window.passed(now)
    }

    /// The held-back refusals, each subject once: its latest refusal, whose `suppressed`
    /// counts the others (the first also those of subjects pushed out).
    pub fn take_held(&mut self) -> Vec<R> {
        let mut out: Vec<R> = std::mem::take(&mut self.held)
            .into_iter()
            .map(|(_, (mut record, n))| {
                *record.suppressed_mut() = n.saturating_sub(1);
                record
            })
            .collect();
        if let Some(first) = out.first_mut() {
            *first.suppressed_mut() += std::mem::take(&mut self.overflow);
        }
        out
    }

    /// Counts one more refusal of `subject` without its record, when the record would
    /// only be held back behind one already held (the window is spent and the subject
    /// held): true then, and the held record (the subject's process as last described)
    /// stands for it too. False: build the record and [`EventBudget::admit`] it.
    pub fn count_held(&mut self, subject: &R::Subject, now: Instant) -> bool {
        if self.window.passed(now) || self.window.count < hb_common::limits::EVENT_BURST {
            return false;
        }
        match self.held.to_back(subject) {
            Some(entry) => {
                entry.1 += 1;
                true
            }
            None => false,
        }
    }

    fn hold(&mut self, subject: R::Subject, record: R) {
        if let Some(entry) = self.held.to_back(&subject) {
            entry.0 = record;
            entry.1 += 1;
            return;
        }
        if self.held.len() >= HELD_BACK_SUBJECTS
            && let Some((_, (_, n))) = self.held.pop_front()
        {
            self.overflow += n;
        }
        self.held.insert(subject, (record, 1));
    }
}

/// The resolver's and the egress guard's events: an [`EventBudget`] per source (`hook`),
/// policy and cgroup (both know a connection's policy by the port it arrived on; the
/// guard knows its cgroup too, the resolver where the kernel tells it, else 0: the
/// policy's share of unattributed queries). So a sandbox that asks for refused names in
/// a loop cannot flood the events file and the audit log, nor use up another sandbox's
/// budget, nor hide a name among the ones it floods.
#[derive(Default)]
pub struct AgentBudgets {
    budgets: HashMap<(String, String, u64), EventBudget>,
}

impl AgentBudgets {
    /// What to write now for `record` (see [`EventBudget::admit`]).
    pub fn admit(&mut self, record: EventRecord, now: Instant) -> Vec<EventRecord> {
        self.budgets
            .entry((record.hook.clone(), record.policy.clone(), record.cgroup_id))
            .or_insert_with(|| EventBudget::new(now))
            .admit(record, now)
    }

    /// The held-back refusals of every budget whose window has passed (called every
    /// second, so they are written without waiting for another refusal); forgets the
    /// budgets that hold nothing any more.
    pub fn take_due(&mut self, now: Instant) -> Vec<EventRecord> {
        let mut out = Vec::new();
        self.budgets.retain(|_, budget| {
            if budget.due(now) {
                out.extend(budget.take_held());
            }
            !budget.idle(now)
        });
        out
    }
}

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            start: now,
            count: 0,
        }
    }

    /// Whether one more record fits the window (a new one once the last has passed).
    fn admit(&mut self, now: Instant) -> bool {
        if self.passed(now) {
            self.start = now;
            self.count = 0;
        }
        self.count += 1;
        self.count <= hb_common::limits::EVENT_BURST
    }

    fn passed(&self, now: Instant) -> bool {
        now.duration_since(self.start) >= Duration::from_nanos(hb_common::limits::EVENT_WINDOW_NS)
    }
}

struct Window {
    start: Instant,
    count: u64,
}

/// Refusals per cgroup since the last summary, for the agent's log.
///
/// Each event goes to the log at DEBUG only; at INFO the log gets one line per cgroup
/// and interval ([`SUMMARY_INTERVAL`]), so a sandbox that is refused in a loop adds a
/// line every interval, not a line per refusal (the events file and the audit log keep
/// the events themselves).
#[derive(Default)]
pub struct Tally {
    rows: HashMap<(u64, String), TallyRow>,
}

/// How often [`Tally::flush`] runs.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

struct TallyRow {
    cgroup: Option<String>,
    events: u64,
    suppressed: u64,
    last: String,
}

impl Tally {
    pub fn add(&mut self, r: &EventRecord) {
        let row = self
            .rows
            .entry((r.cgroup_id, r.policy.clone()))
            .or_insert_with(|| TallyRow {
                cgroup: r.cgroup.clone(),
                events: 0,
                suppressed: 0,
                last: String::new(),
            });
        row.events += 1;
        row.suppressed += r.suppressed;
        row.last = format!("{} {} {}:{}", r.reason, r.hook, r.dst, r.port);
    }

    /// Logs one line per cgroup seen since the last call, and forgets them. `kernel` is
    /// the content of `HB_EVENT_BUDGET`: each line also says how many of the cgroup's
    /// refusals the kernel has counted without reporting them, in all.
    pub fn flush(&mut self, kernel: &[(hb_common::EventRateKey, hb_common::EventRate)]) {
        for ((cgroup_id, policy), row) in self.rows.drain() {
            let suppressed_total: u64 = kernel
                .iter()
                .filter(|(k, _)| k.cgroup_id == cgroup_id)
                .map(|(_, r)| r.suppressed)
                .sum();
            tracing::warn!(
                target: "hb::event",
                policy = %policy,
                cgroup = row.cgroup.as_deref().unwrap_or("?"),
                cgroup_id,
                events = row.events,
                suppressed = row.suppressed,
                suppressed_total,
                last = %row.last,
                "refusals reported in the last {} s (see events.jsonl)",
                SUMMARY_INTERVAL.as_secs()
            );
        }
    }
}

/// Appends events to `state_dir/events.jsonl`, rotating to `events.jsonl.1` at a size cap.
///
/// The agent is not the file's only writer: sandbox launchers append their `seccomp`
/// events ([`append_one`]). Every writer appends and rotates under an exclusive `flock`
/// of `events.jsonl.lock`, and checks the size of the file at the path (not of what it
/// wrote itself), so a rotation by one writer is never undone or clobbered by another:
/// the agent reopens the path when the file it holds was rotated away.
pub struct EventLog {
    path: PathBuf,
    lock: fs::File,
    file: fs::File,
    max_bytes: u64,
    /// Blocks kept past the end of `file` for the next events (see `room`).
    room: crate::room::Room,
}

impl EventLog {
    pub fn open(state_dir: &Path, max_bytes: u64) -> io::Result<Self> {
        let path = state_dir.join(EVENTS_FILE);
        let file = open_append(&path)?;
        Ok(Self {
            lock: open_lock(state_dir)?,
            room: crate::room::Room::ahead_of(&file, file.metadata()?.len()),
            file,
            path,
            max_bytes,
        })
    }

    pub fn append(&mut self, record: &EventRecord) -> io::Result<()> {
        let mut line = json_line(record).map_err(io::Error::other)?.into_bytes();
        line.push(b'\n');
        let _held = Flock::exclusive(&self.lock)?;
        if !same_file(&self.file, &self.path) {
            // Another writer rotated it.
            self.room.release(&self.file);
            self.file = open_append(&self.path)?;
            self.room = crate::room::Room::ahead_of(&self.file, self.file.metadata()?.len());
        }
        let len = rotate_if_full(
            &self.path,
            &mut self.file,
            line.len(),
            self.max_bytes,
            Some(&mut self.room),
        )?;
        // Room for this line and the next (a file just rotated in has none yet).
        self.room.keep(&self.file, len);
        self.file.write_all(&line)
    }
}

/// Why [`append_one`] did not write.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {0}")]
pub struct AppendError(PathBuf, #[source] io::Error);

/// Appends one record to `state_dir/events.jsonl` from a process other than the agent
/// (a sandbox launcher), rotating the file at `max_bytes` like the agent does, under the
/// same lock (see [`EventLog`]). One `write` on an `O_APPEND` descriptor per line.
pub fn append_one(
    state_dir: &Path,
    max_bytes: u64,
    record: &EventRecord,
) -> Result<(), AppendError> {
    let path = state_dir.join(EVENTS_FILE);
    let error = |e| AppendError(path.clone(), e);
    let mut line = json_line(record)
        .map_err(io::Error::other)
        .map_err(error)?
        .into_bytes();
    line.push(b'\n');
    let lock = open_lock(state_dir).map_err(error)?;
    let _held = Flock::exclusive(&lock).map_err(error)?;
    let mut file = open_append(&path).map_err(error)?;
    rotate_if_full(&path, &mut file, line.len(), max_bytes, None).map_err(error)?;
    let written = file.write(&line).map_err(error)?;
    if written != line.len() {
        return Err(error(io::Error::from(io::ErrorKind::WriteZero)));
    }
    Ok(())
}

/// The `hook` of the launcher's seccomp events.
pub const SECCOMP_HOOK: &str = "seccomp";
/// The reason of a `seccomp` event: the system call was refused.
pub const SYSCALL_REFUSED: &str = "syscall_refused";

/// Renames `path` (held open as `file`) to `events.jsonl.1` and opens a fresh one when
/// `incoming` more bytes would take it past `max_bytes`, giving back the old file's
/// `room` first. Called under the lock. The length of the file written next (0 for a
/// fresh one).
fn rotate_if_full(
    path: &Path,
    file: &mut fs::File,
    incoming: usize,
    max_bytes: u64,
    room: Option<&mut crate::room::Room>,
) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if len + incoming as u64 <= max_bytes {
        return Ok(len);
    }
    if let Some(room) = room {
        room.release(file);
    }
    fs::rename(path, path.with_extension("jsonl.1"))?;
    *file = open_append(path)?;
    Ok(0)
}

/// Whether `file` is still the file at `path`.
fn same_file(file: &fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn open_lock(state_dir: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(state_dir.join(format!("{EVENTS_FILE}.lock")))
}

/// An exclusive `flock(2)`, released when dropped.
struct Flock<'f>(&'f fs::File);

impl<'f> Flock<'f> {
    fn exclusive(file: &'f fs::File) -> io::Result<Self> {
        use std::os::fd::AsRawFd as _;
        loop {
            // SAFETY: flock(2) on a descriptor `file` owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Self(file));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd as _;
        // SAFETY: as above.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn open_append(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// Reads the events file (and its rotated predecessor), oldest first. Lines that do not
/// parse are skipped: the file is append-only, a torn last line is possible after a crash.
pub fn read_all(state_dir: &Path) -> io::Result<Vec<EventRecord>> {
    let mut out = Vec::new();
    for name in [format!("{EVENTS_FILE}.1"), EVENTS_FILE.to_owned()] {
        match fs::read_to_string(state_dir.join(name)) {
            Ok(text) => out.extend(
                text.lines()
                    .filter_map(|l| serde_json::from_str::<EventRecord>(l).ok()),
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(cgroup_id: u64, pending: u64) -> (EventRateKey, EventRate) {
        (
            EventRateKey {
                cgroup_id,
                inbound: 0,
                _pad: 0,
            },
            EventRate {
                pending,
                ..EventRate::default()
            },
        )
    }

    fn kernel_event(cgroup_id: u64, suppressed: u32) -> Event {
        Event {
            ts_ns: 0,
            cgroup_id,
            pid_tgid: 0,
            policy_id: 7,
            hook: hook::CONNECT4,
            verdict: verdict::DENY,
            reason: reason::NOT_ALLOWED,
            family: AF_INET,
            protocol: 6,
            port: 80,
            _pad: 0,
            addr: [0; 16],
            comm: [0; 16],
            suppressed,
            _pad2: 0,
        }
    }

    /// A count that stands still is written once; a later event of the cgroup carries
    /// only what came after; a count still growing waits for its event.
    #[test]
    fn uncarried_refusals_are_written_once_and_never_counted_twice() {
        let mut u = Uncarried::default();
        let mut e = kernel_event(1, 0);
        u.carry(&mut e);
        assert!(
            u.due(&[budget(1, 40)]).is_empty(),
            "first sight: still growing?"
        );
        assert_eq!(u.due(&[budget(1, 40)]), vec![(1, Some(7), 40)]);
        assert!(u.due(&[budget(1, 40)]).is_empty(), "written twice");
        // 40 written + 5 more, carried by the next event: it keeps only the 5.
        let mut e = kernel_event(1, 45);
        u.carry(&mut e);
        assert_eq!(e.suppressed, 5);
        assert!(u.due(&[budget(1, 0)]).is_empty());
        // Growing between ticks: not yet.
        assert!(u.due(&[budget(1, 3)]).is_empty());
        assert!(u.due(&[budget(1, 9)]).is_empty());
        assert_eq!(u.due(&[budget(1, 9)]), vec![(1, Some(7), 9)]);
        // A cgroup the kernel forgot is forgotten; another's counts are its own.
        assert!(u.due(&[budget(2, 4)]).is_empty());
        let mut e = kernel_event(1, 12);
        u.carry(&mut e);
        assert_eq!(e.suppressed, 12, "a forgotten cgroup starts afresh");
        assert_eq!(u.due(&[budget(2, 4)]), vec![(2, None, 4)]);
    }

    #[test]
    fn a_field_cannot_read_as_more_fields() {
        assert_eq!(Field("python3").to_string(), "python3");
        assert_eq!(Field("").to_string(), "");
        assert_eq!(
            Field("x policy=web").to_string(),
            "x\\u{20}policy\\u{3d}web"
        );
        assert_eq!(Field("a\\ =\n").to_string(), "a\\\\\\u{20}\\u{3d}\\n");
        let mut r = dns_record("web");
        r.comm = "x policy=other pid=1".into();
        let line = r.to_string();
        let policies: Vec<&str> = line
            .split(' ')
            .filter(|t| t.starts_with("policy="))
            .collect();
        assert_eq!(policies, ["policy=web"], "{line}");
        assert!(!line.contains("policy=other"), "{line}");
    }

    #[test]
    fn escaped_keeps_attacker_text_on_one_line() {
        let forged = "a\nhb::event forged\r\u{1b}[2K\\x\u{2028}\u{202e}é";
        let shown = Escaped(forged).to_string();
        assert_eq!(
            shown,
            "a\\nhb::event forged\\r\\u{1b}[2K\\\\x\\u{2028}\\u{202e}é"
        );
        assert!(!shown.chars().any(char::is_control));
    }

    #[test]
    fn json_line_reads_back_whole_and_shows_nothing_a_terminal_acts_on() {
        let name = "\u{9b}2J\u{7f}\u{202e}\u{2028}\u{1b}\"\\é𝄞";
        let line = json_line(&serde_json::json!({ "comm": name })).expect("json");
        assert_eq!(line, r#"{"comm":"\u009b2J\u007f\u202e\u2028\u001b\"\\é𝄞"}"#);
        let back: serde_json::Value = serde_json::from_str(&line).expect("reads back");
        assert_eq!(back["comm"], name);
        let pretty = json_pretty(&serde_json::json!({ "comm": name })).expect("json");
        assert_eq!(
            pretty,
            "{\n  \"comm\": \"\\u009b2J\\u007f\\u202e\\u2028\\u001b\\\"\\\\é𝄞\"\n}"
        );
    }

    fn dns_record(policy: &str) -> EventRecord {
        EventRecord {
            time: String::new(),
            hook: "dns".into(),
            verdict: "deny".into(),
            reason: "name_not_allowed".into(),
            policy: policy.into(),
            cgroup_id: 0,
            cgroup: None,
            pid: 0,
            tid: 0,
            comm: String::new(),
            family: "ipv4".into(),
            protocol: "dns".into(),
            dst: String::new(),
            port: 0,
            name: Some("evil.test".into()),
            suppressed: 0,
            detail: None,
        }
    }

    fn named(policy: &str, cgroup_id: u64, name: &str) -> EventRecord {
        EventRecord {
            cgroup_id,
            name: Some(name.into()),
            ..dns_record(policy)
        }
    }

    /// Refusals a batch of records stands for: each itself and what it carries.
    fn counted(records: &[EventRecord]) -> u64 {
        records.iter().map(|r| 1 + r.suppressed).sum()
    }

    #[test]
    fn events_a_full_queue_drops_are_counted_per_hook_and_taken_once() {
        let (tx, mut rx) = EventSender::channel(1);
        tx.try_send(dns_record("p"));
        for _ in 0..3 {
            tx.try_send(dns_record("p"));
        }
        let dropped = tx.dropped();
        assert_eq!(dropped.take(), vec![("dns".to_owned(), 3)]);
        assert!(dropped.take().is_empty(), "taken once");
        assert!(rx.try_recv().is_ok(), "the first was queued");
        let r = dropped_record("dns", 3);
        assert_eq!((r.reason.as_str(), r.suppressed), ("events_dropped", 3));
    }

    #[test]
    fn a_budget_holds_back_per_name_and_writes_each_once_with_its_count() {
        let burst = hb_common::limits::EVENT_BURST;
        let window = Duration::from_nanos(hb_common::limits::EVENT_WINDOW_NS);
        let mut budgets = AgentBudgets::default();
        let t0 = Instant::now();
        let mut written = Vec::new();
        for _ in 0..1000 {
            written.extend(budgets.admit(named("flood", 7, "noise.test"), t0));
        }
        written.extend(budgets.admit(named("flood", 7, "target.test"), t0));
        assert_eq!(
            written.len() as u64,
            burst,
            "past the burst, nothing at once"
        );
        // Another cgroup of the same policy, and another policy, have budgets of their own.
        assert_eq!(budgets.admit(named("flood", 8, "b.test"), t0).len(), 1);
        assert_eq!(budgets.admit(named("quiet", 7, "c.test"), t0).len(), 1);
        // The next window's first record brings every held-back name, once each.
        let next = budgets.admit(named("flood", 7, "late.test"), t0 + window);
        let names: Vec<_> = next.iter().filter_map(|r| r.name.as_deref()).collect();
        assert_eq!(names, ["noise.test", "target.test", "late.test"]);
        assert_eq!(next[0].suppressed, 1000 - burst - 1);
        assert_eq!((next[1].suppressed, next[2].suppressed), (0, 0));
        written.extend(next);
        assert_eq!(counted(&written), 1002, "every refusal counted once");
    }

    #[test]
    fn a_refusal_counted_without_its_record_is_counted_once_only_behind_a_held_one() {
        let burst = hb_common::limits::EVENT_BURST;
        let window = Duration::from_nanos(hb_common::limits::EVENT_WINDOW_NS);
        let t0 = Instant::now();
        let mut budget: EventBudget = EventBudget::new(t0);
        let held = named("p", 1, "mount");
        let subject = held.subject();
        assert!(
            !budget.count_held(&subject, t0),
            "the burst has room: describe it"
        );
        let mut written = Vec::new();
        for _ in 0..burst {
            written.extend(budget.admit(named("p", 1, "noise"), t0));
        }
        assert!(
            !budget.count_held(&subject, t0),
            "spent, but not held yet: its first record is kept whole"
        );
        written.extend(budget.admit(held, t0));
        for _ in 0..500 {
            assert!(budget.count_held(&subject, t0));
        }
        assert!(
            !budget.count_held(&named("p", 1, "bpf").subject(), t0),
            "another name is held whole"
        );
        assert!(
            !budget.count_held(&subject, t0 + window),
            "a new window writes again"
        );
        written.extend(budget.take_held());
        assert_eq!(
            counted(&written),
            burst + 1 + 500,
            "every refusal counted once"
        );
    }

    #[test]
    fn held_back_names_are_written_once_the_window_passes_without_another_refusal() {
        let burst = hb_common::limits::EVENT_BURST;
        let window = Duration::from_nanos(hb_common::limits::EVENT_WINDOW_NS);
        let mut budgets = AgentBudgets::default();
        let t0 = Instant::now();
        for _ in 0..burst {
            assert_eq!(budgets.admit(named("p", 1, "noise.test"), t0).len(), 1);
        }
        assert!(budgets.admit(named("p", 1, "target.test"), t0).is_empty());
        assert!(
            budgets.take_due(t0).is_empty(),
            "not before the window passes"
        );
        let due = budgets.take_due(t0 + window);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].name.as_deref(), Some("target.test"));
        // Then the budget holds nothing and is forgotten.
        assert!(budgets.take_due(t0 + window).is_empty());
        assert!(budgets.budgets.is_empty());
    }

    #[test]
    fn a_budget_holds_a_bounded_set_of_names_and_counts_the_rest() {
        let burst = hb_common::limits::EVENT_BURST as usize;
        let window = Duration::from_nanos(hb_common::limits::EVENT_WINDOW_NS);
        let t0 = Instant::now();
        let mut budget = EventBudget::new(t0);
        let mut written = Vec::new();
        let total = burst + 3 * HELD_BACK_SUBJECTS;
        for i in 0..total {
            written.extend(budget.admit(named("p", 1, &format!("n{i}.test")), t0));
        }
        // The most recently refused names stay held, the oldest went (counted).
        let held = budget.take_held();
        assert_eq!(held.len(), HELD_BACK_SUBJECTS);
        assert_eq!(
            held.last().and_then(|r| r.name.as_deref()),
            Some(format!("n{}.test", total - 1).as_str())
        );
        written.extend(held);
        written.extend(budget.admit(named("p", 1, "late.test"), t0 + window));
        assert_eq!(counted(&written), total as u64 + 1);
    }

    #[test]
    fn suppressed_is_decoded_and_old_lines_still_parse() {
        // SAFETY: Event is Pod: all zeroes is a valid value.
        let mut e: Event = unsafe { std::mem::zeroed() };
        e.family = AF_INET;
        e.suppressed = 1234;
        let mut bytes = vec![0u8; size_of::<Event>()];
        // SAFETY: Event is Pod and `bytes` is exactly its size.
        unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast::<Event>(), e) };
        let decoded = decode(&bytes).expect("decodes");
        let record = render(&decoded, &HashMap::new(), &HashMap::new());
        assert_eq!(record.suppressed, 1234);
        let line = serde_json::to_string(&record).expect("json");
        assert!(line.contains("\"suppressed\":1234"), "{line}");
        assert!(record.to_string().contains("suppressed_before=1234"));
        // A line written before the field existed.
        let mut old: serde_json::Value = serde_json::from_str(&line).expect("json");
        old.as_object_mut().expect("object").remove("suppressed");
        let parsed: EventRecord = serde_json::from_value(old).expect("old line parses");
        assert_eq!(parsed.suppressed, 0);
    }

    #[test]
    fn the_agent_and_a_launcher_share_the_file_and_its_rotation() {
        let dir = std::env::temp_dir().join(format!("hb-events-shared-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let max = 1000;
        let mut agent = EventLog::open(&dir, max).expect("open");
        let mut written = 0;
        for i in 0..40 {
            let mut r = dns_record(if i % 2 == 0 { "agent" } else { "launcher" });
            r.tid = i;
            if i % 2 == 0 {
                agent.append(&r).expect("agent append");
            } else {
                append_one(&dir, max, &r).expect("launcher append");
            }
            written += 1;
            let size = fs::metadata(dir.join(EVENTS_FILE)).expect("file").len();
            assert!(size <= max, "{size} after {written}");
        }
        // Both rotated (each line is ~300 bytes), and the latest lines are all in the
        // current file or its predecessor, in order: nothing went to a file that another
        // writer had rotated away.
        let records = read_all(&dir).expect("read");
        fs::remove_dir_all(&dir).expect("clean up");
        let tids: Vec<u32> = records.iter().map(|r| r.tid).collect();
        assert!(tids.len() >= 2, "{tids:?}");
        assert_eq!(*tids.last().expect("one"), 39);
        assert!(tids.windows(2).all(|w| w[1] == w[0] + 1), "{tids:?}");
    }
}
