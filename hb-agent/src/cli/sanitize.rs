//! `hb-agent sanitize`: the sanitizer as a filter (stdin → stdout), and the hidden
//! `__bench-sanitize` the benchmark measures in-process.

use std::{
    io::{Read as _, Write as _},
    path::Path,
    process::ExitCode,
    time::Instant,
};

use anyhow::Context as _;
use serde_json::json;

use crate::sanitize::{self, Mode, Options, Severity};

/// Exit status when a finding is high: pipelines can gate on it.
pub const EXIT_HIGH: u8 = 3;

pub fn run(mode: Mode, json: bool, spotlight: bool, learned: bool) -> anyhow::Result<ExitCode> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("reading stdin")?;
    let result = sanitize::sanitize_bytes(
        &input,
        &Options {
            mode,
            spotlight,
            learned,
        },
    )
    .context("sanitizing stdin")?;
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut stdout, &result)?;
        writeln!(stdout)?;
    } else {
        if let Some(text) = &result.text {
            stdout.write_all(text.as_bytes())?;
        }
        let mut err = std::io::stderr().lock();
        for f in &result.findings {
            let excerpt = f
                .excerpt
                .as_deref()
                .map(|e| format!(" {:?}", e))
                .unwrap_or_default();
            let decoded = f
                .decoded_from
                .map(|e| format!(" (in {})", serde_json::to_value(e).unwrap_or_default()))
                .unwrap_or_default();
            writeln!(
                err,
                "{:<6} {:<20} {:<26} [{}, {}){decoded}{excerpt}",
                severity_name(f.severity),
                f.category.as_str(),
                f.rule,
                f.span[0],
                f.span[1],
            )?;
        }
        if result.omitted > 0 {
            writeln!(err, "… and {} more findings", result.omitted)?;
        }
        match result.severity {
            Some(s) => writeln!(
                err,
                "sanitize: {} finding(s), highest severity {}{}",
                result.findings.len() + result.omitted,
                severity_name(s),
                if result.flagged { " (flagged)" } else { "" }
            )?,
            None => writeln!(err, "sanitize: clean")?,
        }
        if let Some(s) = &result.spotlight {
            writeln!(err, "spotlight instruction: {}", s.instruction)?;
        }
    }
    stdout.flush()?;
    Ok(if result.severity == Some(Severity::High) {
        ExitCode::from(EXIT_HIGH)
    } else {
        ExitCode::SUCCESS
    })
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
    }
}

/// `__sanitize-batch`: one JSON line in (`{"id"?, "text"}`), one verdict line out, in
/// order, through the library in this process (an evaluation corpus of thousands of texts
/// would otherwise pay a process start per text). The verdict names what matched, never
/// the text.
pub fn batch() -> anyhow::Result<ExitCode> {
    // With the learned stage: `flagged_by_rules` below gives the verdict without it.
    let opts = Options {
        mode: Mode::Block,
        spotlight: false,
        learned: true,
    };
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    for (n, line) in std::io::BufRead::lines(stdin).enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("stdin line {}: not JSON", n + 1))?;
        let text = entry["text"]
            .as_str()
            .with_context(|| format!("stdin line {}: no text field", n + 1))?;
        let r = sanitize::sanitize(text, &opts);
        let mut categories: Vec<&str> = r.findings.iter().map(|f| f.category.as_str()).collect();
        categories.sort_unstable();
        categories.dedup();
        // The verdict without the learned stage, for `sanitize-eval --without-learned`.
        let flagged_by_rules = r.findings.iter().any(|f| {
            f.severity >= sanitize::Severity::Medium
                && f.category != sanitize::Category::LearnedInjection
        });
        let mut rules: Vec<&str> = r.findings.iter().map(|f| f.rule).collect();
        rules.sort_unstable();
        rules.dedup();
        serde_json::to_writer(
            &mut stdout,
            &json!({
                "id": entry.get("id").cloned().unwrap_or(json!(n + 1)),
                "flagged": r.flagged,
                "flagged_by_rules": flagged_by_rules,
                "severity": r.severity.map(severity_name),
                "categories": categories,
                "rules": rules,
            }),
        )?;
        writeln!(stdout)?;
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The middle value (the mean of the two middle ones for an even count); 0 for none.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `__bench-sanitize --input FILE --iterations K`: sanitizes the whole file K times and
/// prints the throughput as JSON. With `--corpus`, FILE is a JSON array of strings or of
/// objects with a `text` field, and it prints how many entries were flagged. With
/// `--phases`, it also times each step of the pipeline (`phases_ms`); `learned` is false
/// with `--no-learned` (the calls then skip the learned stage).
pub fn bench(
    input: &Path,
    iterations: u32,
    corpus: bool,
    phases: bool,
    learned: bool,
) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let opts = Options {
        learned,
        ..Options::default()
    };
    if corpus {
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a JSON array", input.display()))?;
        let (mut flagged, mut high) = (0usize, 0usize);
        for e in &entries {
            let text = e
                .as_str()
                .or_else(|| e["text"].as_str())
                .with_context(|| format!("{}: an entry without text", input.display()))?;
            let r = sanitize::sanitize(text, &opts);
            flagged += usize::from(r.flagged);
            high += usize::from(r.severity == Some(Severity::High));
        }
        println!(
            "{}",
            json!({"entries": entries.len(), "flagged": flagged, "high": high})
        );
        return Ok(ExitCode::SUCCESS);
    }
    let text =
        std::str::from_utf8(&bytes).with_context(|| format!("{}: not UTF-8", input.display()))?;
    // One warm-up call builds the rule engine outside the measured loop.
    let first = sanitize::sanitize(text, &opts);
    let start = Instant::now();
    let cpu_start = cpu_seconds();
    let mut each = Vec::with_capacity(iterations as usize);
    for _ in 0..iterations {
        let t = Instant::now();
        std::hint::black_box(sanitize::sanitize(std::hint::black_box(text), &opts));
        each.push(t.elapsed().as_secs_f64());
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    let mb = (text.len() as f64 * f64::from(iterations)) / 1e6;
    let mut steps = serde_json::Map::new();
    if phases {
        for _ in 0..iterations {
            for (name, t) in sanitize::phase_times(text) {
                let ms = steps.entry(name).or_insert(json!(0.0));
                *ms = json!(
                    ms.as_f64().unwrap_or(0.0) + t.as_secs_f64() * 1e3 / f64::from(iterations)
                );
            }
        }
    }
    println!(
        "{}",
        json!({
            "phases_ms": steps,
            "bytes": text.len(),
            "iterations": iterations,
            "seconds": secs,
            "cpu_seconds": cpu,
            "mb_per_s": mb / secs,
            "mb_per_cpu_s": mb / cpu,
            // Per call, the median: the mean also counts the turns other processes took.
            "median_mb_per_s": text.len() as f64 / 1e6 / median(&mut each),
            "findings": first.findings.len() + first.omitted,
            "flagged": first.flagged,
        })
    );
    Ok(ExitCode::SUCCESS)
}

/// CPU time this process has used: on a shared machine, wall time also counts the
/// other processes' turns.
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
