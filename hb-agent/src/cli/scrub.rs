//! `hb-agent scrub`: stdin → stdout through the scrubber, the gate before LLM context
//! and a CI check; and the hidden `__bench-scrub` that `cargo xtask bench scrub` times.

use std::{
    fs,
    io::{self, Read as _, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Instant,
};

use anyhow::{Context as _, bail, ensure};

use crate::{
    scrub::{FileReport, Redaction, RuleSet, Scrubber},
    secret::Secret,
};

/// `--check-rules` exit status when some rules cannot run (0: all run; 2: bad file).
const SOME_UNRUNNABLE: u8 = 3;
const BAD_RULE_FILE: u8 = 2;

const CHUNK: usize = 64 * 1024;

/// Registers every `--secret-file` (one value per file, trailing newline dropped).
fn register_files(scrubber: &Scrubber, files: &[PathBuf]) -> anyhow::Result<()> {
    let mut secrets = Vec::new();
    for f in files {
        let file = fs::File::open(f).with_context(|| format!("opening {}", f.display()))?;
        let secret = Secret::read_from(file).with_context(|| format!("reading {}", f.display()))?;
        secrets.push((f, secret));
    }
    for (f, s) in &secrets {
        scrubber
            .register("live_secret", s)
            .with_context(|| format!("secret file {}", f.display()))?;
    }
    Ok(())
}

/// Loads `--rules` files, telling stderr about every rule that cannot run.
pub fn load_rules(files: &[PathBuf]) -> anyhow::Result<Arc<RuleSet>> {
    let rules = RuleSet::load(files)?;
    for report in rules.reports() {
        warn_unrunnable(report);
    }
    Ok(Arc::new(rules))
}

fn warn_unrunnable(report: &FileReport) {
    for note in &report.notes {
        eprintln!("warning: {}: {note}", report.path.display());
    }
    for r in report.unrunnable() {
        eprintln!(
            "warning: {}: rule {:?} is not run: {}",
            report.path.display(),
            r.id,
            r.notes.join("; ")
        );
    }
}

/// `hb-agent scrub --check-rules FILE`.
pub fn check_rules(file: &Path, json: bool) -> ExitCode {
    let report = match crate::scrub::check_file(file) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            return ExitCode::from(BAD_RULE_FILE);
        }
    };
    let runnable = report.runnable();
    if json {
        let doc = serde_json::json!({
            "path": report.path,
            "rules": report.rules.len(),
            "runnable": runnable,
            "unrunnable": report.unrunnable().map(|r| serde_json::json!({
                "id": r.id, "reason": r.notes.join("; "),
            })).collect::<Vec<_>>(),
            "notes": report.notes,
            "details": report.rules,
        });
        println!("{doc:#}");
    } else {
        println!(
            "{}: {runnable} of {} rules runnable",
            report.path.display(),
            report.rules.len()
        );
        for note in &report.notes {
            println!("  note: {note}");
        }
        let unrunnable: Vec<_> = report.unrunnable().collect();
        if !unrunnable.is_empty() {
            println!("not runnable:");
            for r in unrunnable {
                println!("  {:<32} {}", r.id, r.notes.join("; "));
            }
        }
        let noted: Vec<_> = report
            .rules
            .iter()
            .filter(|r| r.runnable && !r.notes.is_empty())
            .collect();
        if !noted.is_empty() {
            println!("runnable, with notes:");
            for r in noted {
                println!("  {:<32} {}", r.id, r.notes.join("; "));
            }
        }
    }
    if runnable == report.rules.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(SOME_UNRUNNABLE)
    }
}

fn list_families(scrubber: &Scrubber, json: bool) -> anyhow::Result<()> {
    let families = Scrubber::families();
    let loaded = scrubber.loaded_rules();
    if json {
        let doc = serde_json::json!({ "built_in": families, "loaded": loaded });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("Built-in families:");
    for f in families {
        println!("  {:<24} {}", f.name, f.about.join("; "));
    }
    if !loaded.is_empty() {
        println!("Loaded rules:");
        for r in loaded {
            println!("  {:<32} {} ({})", r.name, r.about, r.file.display());
        }
    }
    Ok(())
}

pub fn run(
    json: bool,
    secret_files: &[PathBuf],
    fail_on_match: bool,
    list: bool,
    rules: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let scrubber = Scrubber::with_rules(load_rules(rules)?);
    if list {
        list_families(&scrubber, json)?;
        return Ok(ExitCode::SUCCESS);
    }
    register_files(&scrubber, secret_files)?;
    let redactions = if json {
        let mut input = Vec::new();
        io::stdin()
            .lock()
            .read_to_end(&mut input)
            .context("reading stdin")?;
        let out = scrubber.scrub(&input);
        let doc = serde_json::json!({
            "text": String::from_utf8_lossy(&out.bytes),
            "redactions": out.redactions,
        });
        println!("{doc}");
        out.redactions.len()
    } else {
        stream(&scrubber)?
    };
    Ok(if fail_on_match && redactions > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Streams stdin to stdout, writing each chunk's final output at once.
fn stream(scrubber: &Scrubber) -> anyhow::Result<usize> {
    let mut stdin = io::stdin().lock();
    let mut stdout = io::stdout().lock();
    let mut stream = scrubber.stream();
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(CHUNK);
    let mut count = 0;
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading stdin"),
        };
        out.clear();
        stream.push(&buf[..n], &mut out);
        count += stream.take_redactions().len();
        stdout.write_all(&out).context("writing stdout")?;
        stdout.flush().context("writing stdout")?;
    }
    out.clear();
    count += stream.finish(&mut out).len();
    stdout.write_all(&out).context("writing stdout")?;
    stdout.flush().context("writing stdout")?;
    Ok(count)
}

/// `hb-agent __bench-scrub`: times whole-buffer and streaming scrubs of one file in this
/// process and prints one JSON object (MiB/s are medians over the iterations).
pub fn bench(
    input: &Path,
    secrets_file: Option<&Path>,
    iterations: usize,
    chunk: usize,
    rules: &[PathBuf],
) -> anyhow::Result<()> {
    ensure!(
        iterations > 0 && chunk > 0,
        "iterations and chunk must be > 0"
    );
    let data = fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let scrubber = Scrubber::with_rules(Arc::new(RuleSet::load(rules)?));
    let (mut register_ms, mut register_one_ms, mut unregister_one_ms) = (0.0, 0.0, 0.0);
    if let Some(f) = secrets_file {
        // Synthetic benchmark values, one per line.
        let text = fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let secrets: Vec<Secret> = text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| Secret::new(l.to_vec()))
            .collect();
        let start = Instant::now();
        let ids = scrubber
            .register_many(secrets.iter().map(|s| ("live_secret", s)))
            .context("registering the benchmark values")?;
        register_ms = start.elapsed().as_secs_f64() * 1e3;
        // What the broker pays per handle once this many are live.
        let extra = Secret::new(b"one-more-benchmark-value-0123456789".to_vec());
        let start = Instant::now();
        let id = scrubber.register("live_secret", &extra)?;
        register_one_ms = start.elapsed().as_secs_f64() * 1e3;
        let start = Instant::now();
        scrubber.unregister(id);
        if let Some(&first) = ids.first() {
            scrubber.unregister(first);
            scrubber.register("live_secret", &secrets[0])?;
        }
        unregister_one_ms = start.elapsed().as_secs_f64() * 1e3 / 2.0;
    }
    let whole = scrubber.scrub(&data);
    let streamed = stream_all(&scrubber, &data, chunk);
    if streamed.0 != whole.bytes || streamed.1 != whole.redactions {
        bail!("streaming output differs from whole-buffer output");
    }
    let mib = data.len() as f64 / (1024.0 * 1024.0);
    // CPU time of this thread as well as wall time: on a shared machine the wall clock
    // also counts time other processes had the CPU.
    let (mut whole_wall, mut whole_cpu, mut stream_wall, mut stream_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Alternate which goes first, so neither always runs on a warmer cache.
    for i in 0..2 * iterations {
        let (t, c) = (Instant::now(), thread_cpu());
        if (i % 2 == 0) == (i / 2 % 2 == 0) {
            std::hint::black_box(scrubber.scrub(std::hint::black_box(&data)));
            whole_cpu.push(thread_cpu() - c);
            whole_wall.push(t.elapsed().as_secs_f64());
        } else {
            std::hint::black_box(stream_all(&scrubber, std::hint::black_box(&data), chunk));
            stream_cpu.push(thread_cpu() - c);
            stream_wall.push(t.elapsed().as_secs_f64());
        }
    }
    // What a broker answer adds: the packed view (base64 of gzip, uuencoded lines)
    // looked for and decoded, nothing cut.
    let mut packed_cpu = Vec::new();
    for _ in 0..iterations {
        let c = thread_cpu();
        std::hint::black_box(crate::scrub::cut_packed(
            std::hint::black_box(&data),
            &mut |_| true,
            |_| false,
        ));
        packed_cpu.push(thread_cpu() - c);
    }
    let doc = serde_json::json!({
        "input_bytes": data.len(),
        "live_values": scrubber.live_count(),
        "redactions": whole.redactions.len(),
        "register_ms": register_ms,
        "register_one_ms": register_one_ms,
        "unregister_one_ms": unregister_one_ms,
        "whole_mib_s": mib / median(whole_cpu),
        "stream_mib_s": mib / median(stream_cpu),
        "whole_wall_mib_s": mib / median(whole_wall),
        "stream_wall_mib_s": mib / median(stream_wall),
        "packed_view_mib_s": mib / median(packed_cpu),
        "chunk": chunk,
        "loaded_rules": scrubber.loaded_rules().len(),
    });
    println!("{doc}");
    Ok(())
}

/// CPU seconds used by the calling thread.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn stream_all(scrubber: &Scrubber, data: &[u8], chunk: usize) -> (Vec<u8>, Vec<Redaction>) {
    let mut stream = scrubber.stream();
    let mut out = Vec::with_capacity(data.len());
    let mut redactions = Vec::new();
    for c in data.chunks(chunk) {
        stream.push(c, &mut out);
        redactions.extend(stream.take_redactions());
    }
    redactions.extend(stream.finish(&mut out));
    (out, redactions)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
