//! `cargo xtask scrub-precision`: how often the scrubber alters real text nobody here
//! wrote.
//!
//! The text: this machine's Python standard library sources (`/usr/lib/python3.*`,
//! `*.py`), man pages (`/usr/share/man/**/*.gz`, decompressed) and `/usr/share/doc` files
//! (plain text, or gzipped), each group in sorted path order and the three in turn (a
//! file of each), taken until `--mb` megabytes (10^6 bytes) are in hand; files with a NUL byte in their first 8 KiB are
//! skipped as binary. Everything goes through one `hb-agent scrub --json` (with `--rules`
//! when given); an altered line is a line of a file that a redaction touches. These are
//! public files, so `--list` prints each alteration in full for review.

use std::{
    collections::BTreeSet,
    fs,
    io::Read as _,
    path::{Path, PathBuf},
};

use anyhow::ensure;
use flate2::read::GzDecoder;

use crate::scrub_recall::{Redaction, hb_agent_binary, run_scrubber};

const MB: usize = 1_000_000;
/// Less real text than this says too little.
const MIN_MB: usize = 20;

#[derive(Debug, clap::Args)]
pub struct PrecisionArgs {
    /// A rule file passed through to `hb-agent scrub --rules` (default: built-in families
    /// only).
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Megabytes of text to scrub (at least 20).
    #[arg(long, value_name = "N", default_value_t = 30)]
    mb: usize,
    /// Print every alteration: file, line number, family, the line as redacted.
    #[arg(long)]
    list: bool,
    /// Use this `hb-agent` instead of building the release binary.
    #[arg(long, value_name = "BIN")]
    hb_agent: Option<PathBuf>,
}

pub const PRECISION_EXAMPLES: &str = "\
Examples:
  cargo xtask scrub-precision                 # altered lines per MB, built-in families, 30 MB
  cargo xtask scrub-precision --list          # and every alteration, for review
  cargo xtask scrub-precision --mb 60 --rules hb-agent/src/scrub/testdata/gitleaks/gitleaks.toml";

/// One file's text and where it sits in the scrubbed input.
struct Part {
    path: PathBuf,
    start: usize,
    len: usize,
}

pub fn precision(args: &PrecisionArgs) -> anyhow::Result<()> {
    ensure!(args.mb >= MIN_MB, "--mb must be at least {MIN_MB}");
    let (input, parts) = collect_text(args.mb * MB)?;
    ensure!(
        input.len() >= MIN_MB * MB,
        "only {:.1} MB of text found under /usr/lib/python3*, /usr/share/man, /usr/share/doc (at least {MIN_MB} needed)",
        input.len() as f64 / MB as f64
    );
    let bin = hb_agent_binary(args.hb_agent.as_deref())?;
    let redactions = run_scrubber(&bin, args.rules.as_deref(), &input)?.redactions;
    let altered = altered_lines(&input, &parts, &redactions);
    if args.list {
        for a in &altered {
            println!(
                "{}:{}: {}: {}",
                a.path.display(),
                a.line,
                a.families.join(","),
                a.redacted
            );
        }
        println!();
    }
    let mb = input.len() as f64 / MB as f64;
    println!(
        "scrubbed {mb:.1} MB in {} files (Python stdlib, man pages, /usr/share/doc){}",
        parts.len(),
        args.rules
            .as_deref()
            .map(|r| format!(", --rules {}", r.display()))
            .unwrap_or_default()
    );
    println!(
        "redactions: {}, altered lines: {}, altered lines per MB: {:.3}",
        redactions.len(),
        altered.len(),
        altered.len() as f64 / mb
    );
    Ok(())
}

/// Files in a deterministic order: each source sorted by path, the three taken in turn.
fn sources() -> Vec<PathBuf> {
    let mut python: Vec<PathBuf> = Vec::new();
    if let Ok(dir) = fs::read_dir("/usr/lib") {
        let mut roots: Vec<PathBuf> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("python3.") && !n.ends_with(".so"))
            })
            .collect();
        roots.sort();
        for r in roots {
            walk(&r, &mut python);
        }
    }
    python.retain(|p| p.extension().is_some_and(|e| e == "py"));
    python.sort();
    let mut man = Vec::new();
    walk(Path::new("/usr/share/man"), &mut man);
    man.retain(|p| p.extension().is_some_and(|e| e == "gz"));
    man.sort();
    let mut doc = Vec::new();
    walk(Path::new("/usr/share/doc"), &mut doc);
    doc.sort();
    // Round-robin, so any amount is a mix of the three kinds of text.
    let mut out = Vec::new();
    let mut lists = [python.into_iter(), man.into_iter(), doc.into_iter()];
    loop {
        let before = out.len();
        for l in &mut lists {
            out.extend(l.next());
        }
        if out.len() == before {
            return out;
        }
    }
}

/// Regular files under `dir`, symlinks not followed.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            walk(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

/// A file's text: gunzipped if it ends in `.gz`; None if binary (a NUL in the first
/// 8 KiB) or unreadable. Invalid UTF-8 is replaced, so the text is what a tool's
/// output would show.
fn read_text(path: &Path) -> Option<String> {
    let raw = fs::read(path).ok()?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        GzDecoder::new(raw.as_slice()).read_to_end(&mut out).ok()?;
        out
    } else {
        raw
    };
    if bytes.iter().take(8192).any(|&b| b == 0) {
        return None;
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

fn collect_text(limit: usize) -> anyhow::Result<(String, Vec<Part>)> {
    let mut input = String::new();
    let mut parts = Vec::new();
    for path in sources() {
        if input.len() >= limit {
            break;
        }
        let Some(text) = read_text(&path) else {
            continue;
        };
        let start = input.len();
        input.push_str(&text);
        if !text.ends_with('\n') {
            input.push('\n');
        }
        parts.push(Part {
            path,
            start,
            len: text.len(),
        });
    }
    ensure!(!parts.is_empty(), "no text files found");
    Ok((input, parts))
}

/// One altered line.
struct Altered {
    path: PathBuf,
    line: usize,
    families: Vec<String>,
    redacted: String,
}

/// The lines redactions touch, each once, with the line as the scrubber left it.
fn altered_lines(input: &str, parts: &[Part], redactions: &[Redaction]) -> Vec<Altered> {
    let bytes = input.as_bytes();
    // Line starts of the whole input.
    let mut touched: BTreeSet<usize> = BTreeSet::new();
    for r in redactions {
        let first = line_start(bytes, r.offset);
        touched.insert(first);
        // A span across lines alters each of them.
        let mut p = r.offset;
        while let Some(nl) = bytes[p..r.offset + r.len].iter().position(|&b| b == b'\n') {
            p += nl + 1;
            touched.insert(p);
        }
    }
    touched
        .into_iter()
        .filter_map(|start| {
            let part = parts
                .iter()
                .rfind(|p| p.start <= start && start <= p.start + p.len)?;
            let end = bytes[start..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |n| start + n);
            let line = 1 + bytes[part.start..start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            let mut redacted = String::new();
            let mut families = Vec::new();
            let mut pos = start;
            for r in redactions
                .iter()
                .filter(|r| r.offset < end && r.offset + r.len > start)
            {
                if r.offset > pos {
                    redacted.push_str(&String::from_utf8_lossy(&bytes[pos..r.offset]));
                }
                redacted.push_str(&format!("[REDACTED:{}]", r.family));
                pos = pos.max(r.offset + r.len);
                if !families.contains(&r.family) {
                    families.push(r.family.clone());
                }
            }
            if pos < end {
                redacted.push_str(&String::from_utf8_lossy(&bytes[pos..end]));
            }
            Some(Altered {
                path: part.path.clone(),
                line,
                families,
                redacted,
            })
        })
        .collect()
}

fn line_start(bytes: &[u8], at: usize) -> usize {
    bytes[..at]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |n| n + 1)
}
