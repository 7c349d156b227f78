//! `hb-agent events`: what the kernel refused, from the running agent's events file.

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

fn print(record: &EventRecord, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(record)?);
    } else {
        println!("{record}");
    }
    Ok(())
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
