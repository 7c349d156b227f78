//! `cargo xtask bench sanitize`: hb's sanitizer against seed 003's Python
//! `InputSanitizer` (`benches/sanitize_baseline.py`), same input, same run.
//!
//! - throughput on 1 MiB of mixed text (prose, docs and code, non-ASCII lines, one
//!   injection payload every eight paragraphs), each side in its own process, timing
//!   only its own loop (hb: a release build's hidden `__bench-sanitize`). The targets
//!   are judged on the median call of each side (hb 100 calls, Python 5): the mean,
//!   printed beside it, also counts whatever else the machine ran meanwhile;
//! - detection on the payload corpus, and flags on the benign corpus, for both.
//!
//! Needs neither root nor eBPF: the agent is built with `AYA_BUILD_SKIP=1` into a target
//! folder of its own, so the real release binary is never replaced by one that cannot
//! load programs.

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, ensure};
use serde_json::Value;

use crate::util;

const INPUT_BYTES: usize = 1 << 20;
const HB_ITERATIONS: &str = "100";
const PY_ITERATIONS: &str = "5";
const TARGET_MB_S: f64 = 200.0;
const TARGET_RATIO: f64 = 20.0;
const PAYLOADS: &str = "hb-agent/src/sanitize/testdata/payloads.json";
const BENIGN: &str = "hb-agent/src/sanitize/testdata/benign.json";
const BASELINE: &str = "benches/sanitize_baseline.py";

/// Ordinary prose between the corpus texts, so the input reads like fetched pages and
/// tickets rather than a list of edge cases.
const PROSE: [&str; 4] = [
    "The quarterly review covered three areas: latency, reliability and cost. Median \
     request latency fell from 84 ms to 61 ms after the cache rework, while the error \
     budget for the month was met with a margin of 0.02 %. Storage costs rose slightly \
     because the audit log retention was extended to 400 days, as the compliance team \
     requested in March.",
    "When you open a support ticket, include the version you run (see Help > About), the \
     steps that lead to the problem, what you expected and what happened instead. \
     Screenshots help, but please remove personal data from them first. Our team answers \
     within one business day; urgent outages go through the status page.",
    "Der Bericht fasst die Ergebnisse der Umfrage zusammen: 68 % der Befragten nutzen das \
     Werkzeug täglich, 21 % wöchentlich. Die häufigsten Wünsche betreffen die Suche und \
     die Geschwindigkeit beim Öffnen großer Dateien. — Le rapport complet est disponible \
     en français sur l'intranet. 報告書の全文は社内ポータルで公開されています。",
    "Migration notes: the old endpoint stays available until the end of the year. New \
     clients should call /v2/items with a page size of at most 500, follow the `next` \
     link for further pages and retry on HTTP 429 after the number of seconds given in \
     Retry-After. Timestamps are RFC 3339 in UTC.",
];

pub fn bench() -> anyhow::Result<()> {
    let root = util::workspace_root();
    let work = root.join("target/bench-sanitize");
    fs::create_dir_all(&work)?;
    util::run(
        util::cargo()
            .args(["build", "--release", "--package", "hb-agent"])
            .env("AYA_BUILD_SKIP", "1")
            .env("CARGO_TARGET_DIR", work.join("target")),
    )?;
    let hb = work.join("target/release/hb-agent");
    let input = work.join("input.txt");
    let payloads = root.join(PAYLOADS);
    let benign = root.join(BENIGN);
    let text = mixed_input(&payloads, &benign)?;
    fs::write(&input, &text).with_context(|| format!("writing {}", input.display()))?;

    let hb_run = json(
        Command::new(&hb)
            .args(["__bench-sanitize", "--input"])
            .arg(&input)
            .args(["--iterations", HB_ITERATIONS]),
    )?;
    let py_run = json(
        python()
            .arg("--input")
            .arg(&input)
            .args(["--iterations", PY_ITERATIONS]),
    )?;
    let hb_pay = json(
        Command::new(&hb)
            .args(["__bench-sanitize", "--corpus", "--input"])
            .arg(&payloads),
    )?;
    let py_pay = json(python().arg("--corpus").arg(&payloads))?;
    let hb_ben = json(
        Command::new(&hb)
            .args(["__bench-sanitize", "--corpus", "--input"])
            .arg(&benign),
    )?;
    let py_ben = json(python().arg("--corpus").arg(&benign))?;

    let num = |v: &Value, k: &str| v[k].as_f64().with_context(|| format!("no {k} in {v}"));
    let (hb_mbs, py_mbs) = (num(&hb_run, "mb_per_s")?, num(&py_run, "mb_per_s")?);
    let (hb_cpu, py_cpu) = (num(&hb_run, "mb_per_cpu_s")?, num(&py_run, "mb_per_cpu_s")?);
    let (hb_med, py_med) = (
        num(&hb_run, "median_mb_per_s")?,
        num(&py_run, "median_mb_per_s")?,
    );
    let ratio = hb_med / py_med;
    let mean_ratio = hb_mbs / py_mbs;
    let cpu_ratio = hb_cpu / py_cpu;
    let entries = num(&hb_pay, "entries")?;
    let (hb_det, py_det) = (num(&hb_pay, "flagged")?, num(&py_pay, "flagged")?);
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };

    println!();
    println!(
        "hb bench sanitize ({} bytes of mixed text: prose, docs, code, non-ASCII, payloads)",
        text.len()
    );
    println!("{:-<84}", "");
    println!(
        "{:<34} {:>14} {:>16} {:>16}",
        "measure", "hb", "python seed", "ratio / target"
    );
    println!(
        "{:<34} {:>14.1} {:>16.2} {:>9.1}× {}",
        "throughput, median call, MB/s",
        hb_med,
        py_med,
        ratio,
        verdict(ratio >= TARGET_RATIO)
    );
    println!(
        "{:<34} {:>14.1} {:>16.2} {:>9.1}× {}",
        "throughput, all calls, MB/s",
        hb_mbs,
        py_mbs,
        mean_ratio,
        verdict(mean_ratio >= TARGET_RATIO)
    );
    println!(
        "{:<34} {:>14.1} {:>16.2} {:>9.1}× {}",
        "throughput per CPU second, MB/s",
        hb_cpu,
        py_cpu,
        cpu_ratio,
        verdict(cpu_ratio >= TARGET_RATIO)
    );
    println!(
        "{:<34} {:>14} {:>16} {:>16}",
        format!("payload corpus flagged (of {entries})"),
        hb_det,
        py_det,
        verdict(hb_det > py_det)
    );
    println!(
        "{:<34} {:>14} {:>16}",
        format!("benign corpus flagged (of {})", num(&hb_ben, "entries")?),
        format!(
            "{} ({} high)",
            num(&hb_ben, "flagged")?,
            num(&hb_ben, "high")?
        ),
        num(&py_ben, "flagged")?,
    );
    println!("{:-<84}", "");
    println!(
        "hb throughput {hb_med:.1} MB/s for the median call ({hb_mbs:.1} over all {HB_ITERATIONS}, \
         {hb_cpu:.1} per CPU second; target >= {TARGET_MB_S}) {}; {ratio:.1}× the seed's median \
         (target >= {TARGET_RATIO}) {}; detects strictly more: {}",
        verdict(hb_med >= TARGET_MB_S),
        verdict(ratio >= TARGET_RATIO),
        verdict(hb_det > py_det),
    );
    println!(
        "(load average now {}: on a busy machine wall time includes other processes' turns)",
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .next()
            .unwrap_or("?")
    );
    println!(
        "(hb flags medium and high; the seed flags any match of its regexes or any control character)"
    );
    Ok(())
}

fn python() -> Command {
    let mut c = Command::new("python3");
    c.arg(util::workspace_root().join(BASELINE));
    c
}

fn json(cmd: &mut Command) -> anyhow::Result<Value> {
    let out = util::output(cmd)?;
    serde_json::from_str(out.trim()).with_context(|| format!("not JSON: {out}"))
}

/// Writes the benchmark's input to `path` (`cargo xtask __sanitize-input PATH`): the
/// README's instruction counts are `hb-agent sanitize --json` on this file.
pub fn write_input(path: &Path) -> anyhow::Result<()> {
    let root = util::workspace_root();
    let text = mixed_input(&root.join(PAYLOADS), &root.join(BENIGN))?;
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Exactly [`INPUT_BYTES`] (to a character boundary) of prose and corpus texts, benign
/// ones in order, a payload after every eighth.
fn mixed_input(payloads: &Path, benign: &Path) -> anyhow::Result<String> {
    let texts = |p: &Path| -> anyhow::Result<Vec<String>> {
        let v: Vec<Value> = serde_json::from_slice(
            &fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{}: not a JSON array", p.display()))?;
        v.iter()
            .map(|e| {
                e["text"]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("{}: entry without text", p.display()))
            })
            .collect()
    };
    let (payloads, benign) = (texts(payloads)?, texts(benign)?);
    ensure!(!payloads.is_empty() && !benign.is_empty(), "empty corpus");
    let mut s = String::with_capacity(INPUT_BYTES + 4096);
    let mut k = 0;
    while s.len() < INPUT_BYTES {
        s.push_str(PROSE[k % PROSE.len()]);
        s.push_str("\n\n");
        s.push_str(&benign[k % benign.len()]);
        s.push_str("\n\n");
        if k % 8 == 7 {
            s.push_str(&payloads[(k / 8) % payloads.len()]);
            s.push_str("\n\n");
        }
        k += 1;
    }
    let mut end = INPUT_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    Ok(s)
}
