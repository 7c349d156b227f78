//! The process's own exits: log lines, error messages and panic messages pass the
//! scrubber before they reach stderr.
//!
//! `tracing` formats each event completely before writing it, so a writer that collects
//! one event and scrubs it as a whole sees every secret whole. Panic messages and the
//! CLI's final error line are scrubbed the same way.

use std::io::{self, Write};

use super::global;

/// A `MakeWriter` for tracing-subscriber: each event is scrubbed, then written to
/// stderr in one piece.
pub struct ScrubbedStderr;

/// One event's bytes, written scrubbed when dropped.
pub struct EventWriter(Vec<u8>);

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let scrubbed = scrub_event(&self.0);
        let _ = io::stderr().lock().write_all(&scrubbed);
    }
}

/// One event as the log writes it, scrubbed. A JSON event (`agent.log_format =
/// "json"`) stays JSON of its shape ([`crate::audit::scrub_json`]): a redaction of the
/// whole line could take the quote or backslash around a value (a cgroup a pod named
/// `-----BEGIN PRIVATE KEY-----"`) and leave a line no log reader parses.
fn scrub_event(bytes: &[u8]) -> Vec<u8> {
    if bytes.first() == Some(&b'{')
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes)
    {
        let mut line = crate::audit::scrub_json(global(), value).into_bytes();
        if bytes.ends_with(b"\n") {
            line.push(b'\n');
        }
        return line;
    }
    global().scrub(bytes).bytes
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ScrubbedStderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter(Vec::with_capacity(256))
    }
}

/// `text`, scrubbed: for messages printed outside tracing.
pub fn scrubbed(text: &str) -> String {
    global().scrub_str(text).0
}

/// Panic messages are scrubbed before they are printed (the payload and location; no
/// backtrace is printed by this hook).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("<unnamed>");
        eprintln!("hb-agent: thread '{name}' {}", scrubbed(&info.to_string()));
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_writer_scrubs_a_whole_event() {
        let token = format!("ghp_{}", "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8");
        assert!(!scrubbed(&format!("upstream said {token}")).contains(&token));
        let mut w = EventWriter(Vec::new());
        w.write_all(format!("token={token}\n").as_bytes())
            .expect("write");
        let out = global().scrub(&w.0).bytes;
        assert!(!String::from_utf8_lossy(&out).contains(&token));
        w.0.clear();
    }

    #[test]
    fn a_json_event_stays_json_whatever_a_redaction_takes() {
        let line = serde_json::json!({
            "level": "WARN",
            "fields": { "cgroup": "pods/x/-----BEGIN PRIVATE KEY-----\"", "events": 3 },
        })
        .to_string()
            + "\n";
        let out = String::from_utf8(scrub_event(line.as_bytes())).expect("UTF-8");
        assert!(out.ends_with('\n'), "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(v["fields"]["events"], 3, "{out}");
        let cgroup = v["fields"]["cgroup"].as_str().expect("cgroup");
        assert!(cgroup.starts_with("pods/x/"), "{cgroup}");
        assert!(!cgroup.contains("PRIVATE KEY"), "redacted: {cgroup}");
        // A text line is scrubbed as before.
        let token = format!("ghp_{}", "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8");
        let out = scrub_event(format!("2026 WARN token={token}\n").as_bytes());
        assert!(!String::from_utf8_lossy(&out).contains(&token));
    }
}
