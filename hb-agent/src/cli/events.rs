//! `hb-agent events`: what the kernel refused, from the running agent's events file.
//! `--follow` streams live events from the broker's authenticated event stream (a
//! session token minted for this run: root or `broker.operator_uid` only). When no agent
//! runs, root reads the pinned kernel ring buffer directly (the programs keep reporting
//! after the agent is gone); otherwise it falls back to tailing the events file.

use std::{
    fs,
    io::{self, BufRead as _, Seek as _},
    os::unix::fs::MetadataExt as _,
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    config::Config,
    events::{self, EVENTS_FILE, EventRecord},
};

/// Prints one event. This command keeps SIGPIPE ignored (it talks to the broker over a
/// socket), so a reader that goes away (`events --follow | head`) shows up here as
/// EPIPE: the command then ends quietly, as a Unix tool would.
fn print(record: &EventRecord, json: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let line = if json {
        events::json_line(record)?
    } else {
        record.to_string()
    };
    let mut out = io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
        r => r.context("writing stdout"),
    }
}

pub fn show(config: &Config, follow: bool, json: bool, last: Option<usize>) -> anyhow::Result<()> {
    let dir = &config.agent.state_dir;
    let all =
        events::read_all(dir).with_context(|| format!("reading events in {}", dir.display()))?;
    let skip = last.map_or(0, |n| all.len().saturating_sub(n));
    for r in &all[skip..] {
        print(r, json)?;
    }
    if !follow {
        if all.is_empty() && !json {
            eprintln!("(no events in {})", dir.join(EVENTS_FILE).display());
        }
        return Ok(());
    }
    if !crate::agent::agent_running(dir) && crate::agent::is_root() {
        match follow_ring(config, json) {
            Ok(()) => return Ok(()),
            Err(e) => eprintln!("(kernel ring buffer unavailable: {e:#})"),
        }
    }
    match follow_stream(config, json) {
        Ok(()) => return Ok(()),
        Err(e) => eprintln!(
            "(event stream unavailable: {e:#}; following {} instead)",
            dir.join(EVENTS_FILE).display()
        ),
    }
    // Tail the file, reopening it when the agent rotates it.
    let path = dir.join(EVENTS_FILE);
    let mut offset = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let mut inode = fs::metadata(&path).map(|m| m.ino()).unwrap_or(0);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if meta.ino() != inode || meta.len() < offset {
            inode = meta.ino();
            offset = 0;
        }
        if meta.len() == offset {
            continue;
        }
        let mut file = fs::File::open(&path)?;
        file.seek(io::SeekFrom::Start(offset))?;
        let mut reader = io::BufReader::new(file);
        let mut line = String::new();
        while reader.read_line(&mut line)? > 0 {
            if !line.ends_with('\n') {
                break; // a line still being written: read it whole next time
            }
            offset += line.len() as u64;
            if let Ok(r) = serde_json::from_str::<EventRecord>(&line) {
                print(&r, json)?;
            }
            line.clear();
        }
    }
}

/// A minimal HTTP exchange on the broker socket: the status and the body reader.
pub(super) fn http(
    socket: &std::path::Path,
    request: &str,
) -> anyhow::Result<(u16, io::BufReader<std::os::unix::net::UnixStream>)> {
    use std::io::Write as _;
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    stream.write_all(request.as_bytes())?;
    let mut reader = io::BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("the broker's answer has no HTTP status")?;
    // Headers: HTTP/1.0 answers are not chunked, the body runs to the end.
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    Ok((status, reader))
}

/// Streams `GET /v1/events` until interrupted, minting a new session when one ends.
fn follow_stream(config: &Config, json: bool) -> anyhow::Result<()> {
    use std::io::Read as _;
    let socket = &config.broker.socket;
    loop {
        let (status, mut body) = http(
            socket,
            "POST /v1/sessions HTTP/1.0\r\nHost: hb\r\nContent-Length: 0\r\n\r\n",
        )?;
        let mut text = String::new();
        body.read_to_string(&mut text)?;
        if status != 201 {
            anyhow::bail!("the broker refused a session ({status}): {}", text.trim());
        }
        let session: serde_json::Value = serde_json::from_str(&text)?;
        let token = session["token"]
            .as_str()
            .context("the session answer has no token")?;
        let (status, reader) = http(
            socket,
            &format!(
                "GET /v1/events HTTP/1.0\r\nHost: hb\r\nAccept: text/event-stream\r\nAuthorization: Bearer {token}\r\n\r\n"
            ),
        )?;
        if status != 200 {
            anyhow::bail!("the broker refused the event stream ({status})");
        }
        let mut sse = SseLines::default();
        for line in reader.lines() {
            match sse.feed(&line?) {
                Some(StreamItem::Event(r)) => print(&r, json)?,
                Some(StreamItem::Missed(n)) => eprintln!("{}", missed_notice(n)),
                None => {}
            }
        }
        // The session ended (expiry): open the next one.
    }
}

/// What one `data:` line of the broker's event stream carries.
#[derive(Debug)]
enum StreamItem {
    Event(Box<EventRecord>),
    /// The stream fell behind and skipped events (how many, when the broker says).
    Missed(Option<u64>),
}

/// The broker's event stream read line by line (server-sent events): an `event:` line
/// names the kind of the `data:` line after it, an empty line ends the message.
#[derive(Default)]
struct SseLines {
    kind: String,
}

impl SseLines {
    fn feed(&mut self, line: &str) -> Option<StreamItem> {
        if let Some(name) = line.strip_prefix("event: ") {
            self.kind = name.to_owned();
        } else if let Some(data) = line.strip_prefix("data: ") {
            if self.kind == "lagged" {
                let missed = serde_json::from_str::<serde_json::Value>(data)
                    .ok()
                    .and_then(|v| v["missed"].as_u64());
                return Some(StreamItem::Missed(missed));
            }
            return serde_json::from_str(data)
                .ok()
                .map(|r| StreamItem::Event(Box::new(r)));
        } else if line.is_empty() {
            self.kind.clear();
        }
        None
    }
}

/// Said on stderr when the stream skipped events (stdout keeps one event per line, in
/// either format), so an operator knows the view has a gap.
fn missed_notice(missed: Option<u64>) -> String {
    match missed {
        Some(n) => format!("hb-agent events: {n} events were missed here (the stream fell behind)"),
        None => "hb-agent events: events were missed here (the stream fell behind)".to_owned(),
    }
}

/// Reads the pinned events ring buffer directly (only while no agent runs: a reader
/// consumes what it reads).
fn follow_ring(config: &Config, json: bool) -> anyhow::Result<()> {
    use aya::maps::{MapData, RingBuf};
    let bpffs = &config.agent.bpffs_dir;
    let map = crate::maps::open_map(bpffs, hb_common::map_names::EVENTS)?;
    let mut ring: RingBuf<MapData> = map.try_into().context("the events map")?;
    let policies: std::collections::HashMap<u32, String> = crate::maps::Maps::open(bpffs)?
        .loaded_policies()?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    let mut cgroups = std::collections::HashMap::new();
    eprintln!("(no agent runs: reading the kernel's ring buffer directly)");
    loop {
        while let Some(item) = ring.next() {
            let Some(event) = events::decode(&item) else {
                continue;
            };
            if let std::collections::hash_map::Entry::Vacant(v) = cgroups.entry(event.cgroup_id)
                && let Some(path) = crate::cgroup::recall(&config.agent.state_dir, event.cgroup_id)
            {
                v.insert(path);
            }
            print(&events::render(&event, &policies, &cgroups), json)?;
        }
        if crate::agent::agent_running(&config.agent.state_dir) {
            anyhow::bail!("an agent started: it reads the ring buffer now");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stream as the broker writes it: events, a keep-alive comment, a lagged
    /// notice with and without its count, and events after it.
    #[test]
    fn a_lagged_notice_is_told_apart_from_the_events_around_it() {
        let event =
            |n| serde_json::to_string(&events::counted_record(7, "p".into(), n)).expect("a record");
        let stream = format!(
            "event: event\ndata: {}\n\n:\n\nevent: lagged\ndata: {{\"missed\":42}}\n\n\
             event: lagged\ndata: not json\n\nevent: event\ndata: {}\n\ndata: {{\"missed\":1}}\n\n",
            event(1),
            event(2)
        );
        let mut sse = SseLines::default();
        let items: Vec<StreamItem> = stream.lines().filter_map(|l| sse.feed(l)).collect();
        let told: Vec<String> = items
            .iter()
            .map(|i| match i {
                StreamItem::Event(r) => format!("event {}", r.suppressed),
                StreamItem::Missed(n) => missed_notice(*n),
            })
            .collect();
        assert_eq!(
            told,
            [
                "event 0",
                "hb-agent events: 42 events were missed here (the stream fell behind)",
                "hb-agent events: events were missed here (the stream fell behind)",
                "event 1",
            ],
            "a `data:` line with no `event: lagged` before it in its message is no notice"
        );
    }
}
