//! The audit log: one JSON line per broker decision, handle life-cycle step, vault
//! operation, policy denial and kernel event, in `state_dir/audit.log`.
//!
//! The file is created with mode 0600 and opened append-only. When it passes
//! `agent.audit_max_bytes` it is rotated (`audit.log` → `audit.log.1` → … up to
//! `agent.audit_max_files`, the oldest dropped). `agent.audit_fsync` says when the data
//! is forced to disk: `always` (every record), `interval` (at most once a second, the
//! default) or `never` (left to the kernel). A megabyte past the file's end is kept
//! allocated for the next records (`room`): a sandbox that fills a filesystem it shares
//! with `state_dir` does not leave its next refusals unrecorded.
//!
//! How long the history lasts against a sandbox that gets refused in a loop: kernel and
//! resolver events reach this log at most `hb_common::limits::EVENT_BURST` per
//! `EVENT_WINDOW_NS` per cgroup (per policy for the resolver), ~2.2 KB/s, so the
//! default 5 × 64 MiB last about 42 hours of one such sandbox (the arithmetic is at
//! `EVENT_BURST`).
//!
//! Must never: write a record that has not passed the scrubber, or show a handle in
//! full (handles appear as a keyed fingerprint: the first 12 hex digits of
//! HMAC-SHA256 under a key made at start, so records of one run can be correlated and
//! nothing can be reversed into a handle).

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Instant, SystemTime},
};

use ring::{hmac, rand::SystemRandom};

use crate::scrub::{Memo, Scrubber};

pub const FILE: &str = "audit.log";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    Always,
    Interval,
    Never,
}

struct Inner {
    file: File,
    size: u64,
    last_sync: Instant,
    /// Blocks kept past the end for the next records (a full filesystem still takes them).
    room: crate::room::Room,
}

pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    fsync: Fsync,
    scrubber: Arc<Scrubber>,
    key: hmac::Key,
    /// Scrubs of records seen before (see [`Memo`]).
    memo: Memo,
    inner: Mutex<Inner>,
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl AuditLog {
    pub fn open(
        state_dir: &Path,
        max_bytes: u64,
        max_files: u32,
        fsync: Fsync,
        scrubber: Arc<Scrubber>,
    ) -> io::Result<Self> {
        let path = state_dir.join(FILE);
        let file = open(&path)?;
        let size = file.metadata()?.len();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| io::Error::other("no randomness for the audit fingerprint key"))?;
        Ok(Self {
            path,
            max_bytes,
            max_files,
            fsync,
            scrubber,
            key,
            memo: Memo::default(),
            inner: Mutex::new(Inner {
                room: crate::room::Room::ahead_of(&file, size),
                file,
                size,
                last_sync: Instant::now(),
            }),
        })
    }

    /// The short keyed fingerprint a handle appears as.
    pub fn fingerprint(&self, handle: &str) -> String {
        let tag = hmac::sign(&self.key, handle.as_bytes());
        tag.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Appends `record` (an object; `time` is added, and a `time` of the record's own —
    /// a kernel event's — becomes `event_time`), scrubbed. Errors are logged, not
    /// returned: the caller's decision stands either way.
    pub fn record(&self, kind: &str, mut record: serde_json::Value) {
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let mut line = match record.as_object_mut() {
            Some(obj) => {
                obj.insert("kind".into(), kind.into());
                // One `time` per line: readers keeping the first or the last would differ.
                if let Some(own) = obj.remove("time") {
                    obj.insert("event_time".into(), own);
                }
                self.timed(record, &time)
            }
            None => scrub_json(&self.scrubber, record),
        };
        line.push('\n');
        if let Err(e) = self.write(line.as_bytes()) {
            tracing::error!(error = %e, path = %self.path.display(), "cannot write the audit log");
        }
    }

    /// `record` (an object) scrubbed, `time` put first. The record is scrubbed without
    /// its time, so one that repeats (a handle's use, call after call) is answered from
    /// the memo: the time is the agent's own clock in RFC 3339, digits and separators,
    /// so leaving it out of the scan hides nothing.
    ///
    /// A scrubbed line that is not the record's own shape is not written: the record is
    /// scrubbed value by value instead ([`keep_shape`]).
    fn timed(&self, record: serde_json::Value, time: &str) -> String {
        let object = serde_json::to_string(&record).unwrap_or_default();
        let scrubbed = self.scrubber.scrub_str_memo(&self.memo, &object);
        let line = keep_shape(&self.scrubber, record, &object, scrubbed.to_string());
        match line.strip_prefix('{') {
            Some(rest) if rest != "}" => format!("{{\"time\":\"{time}\",{rest}"),
            _ => line,
        }
    }

    fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| io::Error::other("audit log lock poisoned"))?;
        if inner.size > 0 && inner.size + bytes.len() as u64 > self.max_bytes {
            self.rotate(&mut inner)?;
        }
        // Room for this record and the next (a file just rotated in has none yet).
        let Inner {
            file, size, room, ..
        } = &mut *inner;
        room.keep(file, *size);
        inner.file.write_all(bytes)?;
        inner.size += bytes.len() as u64;
        let sync = match self.fsync {
            Fsync::Always => true,
            Fsync::Interval => inner.last_sync.elapsed().as_secs() >= 1,
            Fsync::Never => false,
        };
        if sync {
            inner.file.sync_data()?;
            inner.last_sync = Instant::now();
        }
        Ok(())
    }

    fn rotate(&self, inner: &mut Inner) -> io::Result<()> {
        inner.file.sync_data()?;
        inner.room.release(&inner.file);
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.max_files <= 1 {
            fs::remove_file(&self.path)?;
        } else {
            let _ = fs::remove_file(numbered(self.max_files - 1));
            for n in (1..self.max_files - 1).rev() {
                let _ = fs::rename(numbered(n), numbered(n + 1));
            }
            fs::rename(&self.path, numbered(1))?;
        }
        inner.file = open(&self.path)?;
        inner.size = 0;
        Ok(())
    }
}

/// `value` serialised and scrubbed as one line (the scrubber then sees values across
/// fields and in their JSON-escaped form), still JSON of `value`'s shape: what the audit
/// log and the broker's event stream write. See [`keep_shape`].
pub fn scrub_json(scrubber: &Scrubber, value: serde_json::Value) -> String {
    let line = serde_json::to_string(&value).unwrap_or_default();
    let scrubbed = scrubber.scrub_str(&line).0;
    keep_shape(scrubber, value, &line, scrubbed)
}

/// `scrubbed` (the scrub of `line`, `value` serialised) when it is JSON of `value`'s
/// shape; else `value` scrubbed string by string. A redaction of the serialised line
/// may take a quote or a backslash of the JSON around a value (a PEM header without
/// its END runs on through the `\` that escapes the next quote): the line would no
/// longer be JSON, or would be another record, and its readers (`jq`, `hb-agent events
/// --follow`) would skip it. Either way with [`crate::events::inert`]'s escapes.
fn keep_shape(
    scrubber: &Scrubber,
    value: serde_json::Value,
    line: &str,
    scrubbed: String,
) -> String {
    let json = if scrubbed == line || same_skeleton(&value, &scrubbed) {
        scrubbed
    } else {
        serde_json::to_string(&scrub_values(scrubber, value)).unwrap_or_default()
    };
    // An operator reads the log with `tail -f`: no C1 or bidi control of a sandbox's
    // process name or cgroup name for the terminal to act on.
    crate::events::inert(&json)
}

/// `value` with each of its strings scrubbed on its own: redactions stay inside the
/// strings, so the record keeps its shape whatever they take.
fn scrub_values(scrubber: &Scrubber, value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(scrubber.scrub_str(&s).0),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| scrub_values(scrubber, v))
                .collect(),
        ),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, scrub_values(scrubber, v)))
                .collect(),
        ),
        other => other,
    }
}

/// Whether `scrubbed` (a scrub of `record`'s serialised form) is JSON of `record`'s
/// shape: the same fields, at the same places, holding the same kinds of value. What a
/// redaction changed is then only text inside strings.
fn same_skeleton(record: &serde_json::Value, scrubbed: &str) -> bool {
    fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
            }
            (Value::String(_), Value::String(_)) => true,
            // Numbers, booleans and null are hb's own: a scrub leaves them as they were.
            (x, y) => x == y,
        }
    }
    serde_json::from_str::<serde_json::Value>(scrubbed).is_ok_and(|v| same(record, &v))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::secret::Secret;

    #[test]
    fn records_are_scrubbed_rotated_and_private() {
        let dir = std::env::temp_dir().join(format!("hb-audit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let scrubber = Arc::new(Scrubber::new());
        let secret = "Zq8vLr2mXn4pWt6yBc1dEf3gHj5kMs7u";
        scrubber
            .register("live_secret", &Secret::new(secret.as_bytes().to_vec()))
            .expect("register");
        let log = AuditLog::open(&dir, 400, 3, Fsync::Always, scrubber).expect("open");
        for i in 0..10 {
            log.record(
                "test",
                serde_json::json!({ "n": i, "detail": format!("upstream said {secret}") }),
            );
        }
        let mode = fs::metadata(dir.join(FILE))
            .expect("log")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut files = vec![dir.join(FILE)];
        files.push(dir.join(format!("{FILE}.1")));
        files.push(dir.join(format!("{FILE}.2")));
        assert!(!dir.join(format!("{FILE}.3")).exists(), "max_files = 3");
        let mut lines = 0;
        for f in &files {
            let text = fs::read_to_string(f).expect("rotated file");
            assert!(!text.contains(secret), "scrubbed: {text}");
            for l in text.lines() {
                let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
                assert_eq!(v["kind"], "test");
                lines += 1;
            }
        }
        assert!(
            (3..10).contains(&lines),
            "older records rotated away: {lines}"
        );
        // A record with a time of its own keeps it apart from the time it was written.
        log.record(
            "timed",
            serde_json::json!({ "time": "2026-01-02T03:04:05Z" }),
        );
        let last = fs::read_to_string(dir.join(FILE)).expect("log");
        let line = last.lines().last().expect("a line");
        assert_eq!(line.matches("\"time\"").count(), 1, "{line}");
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        assert_eq!(v["event_time"], "2026-01-02T03:04:05Z", "{line}");
        assert_ne!(v["time"], "2026-01-02T03:04:05Z", "{line}");
        let fp = log.fingerprint("hb_cred_abc");
        assert_eq!(fp.len(), 12);
        assert_eq!(fp, log.fingerprint("hb_cred_abc"));
        assert_ne!(fp, log.fingerprint("hb_cred_abd"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_redaction_that_would_take_a_quote_leaves_the_record_json() {
        let dir = std::env::temp_dir().join(format!("hb-audit-shape-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let log = AuditLog::open(&dir, 1 << 20, 2, Fsync::Never, Arc::new(Scrubber::new()))
            .expect("open");
        // A PEM header without its END, then a quote or a backslash: serialised, the
        // redaction runs through the backslash that escapes what follows.
        let opened = "-----BEGIN PRIVATE KEY-----";
        for tail in ["\"", "\\", "\\\"", "\",\"kind\":\"forged"] {
            log.record(
                "test",
                serde_json::json!({ "caller": { "cgroup": format!("pods/{opened}{tail}"), "pid": 7 }, "step": "used" }),
            );
        }
        // Repeated (the memo's answer) and without an object around it.
        log.record(
            "test",
            serde_json::json!({ "caller": { "cgroup": format!("pods/{opened}\""), "pid": 7 }, "step": "used" }),
        );
        log.record("test", serde_json::json!([format!("{opened}\""), 1]));
        let text = fs::read_to_string(dir.join(FILE)).expect("log");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        assert_eq!(lines.len(), 6, "{text}");
        for v in &lines[..5] {
            assert_eq!(v["kind"], "test", "{v}");
            assert_eq!(v["step"], "used", "{v}");
            assert_eq!(v["caller"]["pid"], 7, "{v}");
            let cgroup = v["caller"]["cgroup"].as_str().expect("cgroup");
            assert!(cgroup.starts_with("pods/"), "{cgroup}");
            assert!(!cgroup.contains("BEGIN PRIVATE KEY"), "redacted: {cgroup}");
            humantime::parse_rfc3339(v["time"].as_str().expect("time")).expect("a time");
        }
        assert_eq!(lines[5][1], 1, "{text}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_repeated_record_is_scrubbed_with_the_values_live_at_its_time() {
        let dir = std::env::temp_dir().join(format!("hb-audit-memo-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let scrubber = Arc::new(Scrubber::new());
        let log = AuditLog::open(&dir, 1 << 20, 2, Fsync::Never, scrubber.clone()).expect("open");
        let value = "bluebirdsingsatdawnoverthehill";
        let record = || serde_json::json!({ "step": "used", "detail": format!("saw {value}") });
        log.record("test", record());
        log.record("test", record());
        let id = scrubber
            .register("live_secret", &Secret::new(value.as_bytes().to_vec()))
            .expect("register");
        // The same record as before: the memo's answer was made without the value.
        log.record("test", record());
        log.record("test", record());
        assert!(scrubber.unregister(id));
        log.record("test", record());
        let text = fs::read_to_string(dir.join(FILE)).expect("log");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        let shown: Vec<bool> = lines
            .iter()
            .map(|v| {
                assert_eq!(v["kind"], "test");
                assert_eq!(v["step"], "used");
                humantime::parse_rfc3339(v["time"].as_str().expect("time")).expect("a time");
                v["detail"].as_str().expect("detail").contains(value)
            })
            .collect();
        assert_eq!(shown, [true, true, false, false, true], "{text}");
        let _ = fs::remove_dir_all(&dir);
    }
}
