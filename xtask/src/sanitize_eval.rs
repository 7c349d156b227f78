//! `cargo xtask sanitize-eval`: the sanitizer's recall on the attack corpus and its false
//! positives on the benign corpus (`hb-agent/src/sanitize/testdata/corpus`), per half,
//! family and language; and the figures of the original corpora (`payloads.json`,
//! `benign.json`).
//!
//! Phases: build the agent (debug, as `cargo xtask test` does), load the corpus files,
//! run every text through one `hb-agent __sanitize-batch` process (the library in
//! process; no text on argv), tally, print.
//!
//! The test half exists to be measured, not tuned on: `--list-missed` and
//! `--list-false-positives` print texts, and on the test half that output is for the
//! final report only.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

use crate::util;

const CORPUS: &str = "hb-agent/src/sanitize/testdata/corpus";
const PAYLOADS: &str = "hb-agent/src/sanitize/testdata/payloads.json";
const BENIGN: &str = "hb-agent/src/sanitize/testdata/benign.json";

/// Which halves to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Half {
    Dev,
    Test,
    Both,
    /// The probe set (`corpus/probe`): attacks written to find where the function rules
    /// fail to generalise; tuning may look at it, like the development half.
    Probe,
}

impl Half {
    fn names(self) -> &'static [&'static str] {
        match self {
            Half::Dev => &["dev"],
            Half::Test => &["test"],
            Half::Both => &["dev", "test"],
            Half::Probe => &["probe"],
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The half to measure: dev (what tuning may look at), test (what it never looks
    /// at), both, or probe (attacks written for tuning, beside the halves).
    #[arg(long, value_enum, default_value_t = Half::Both)]
    pub half: Half,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also print every attack text that was not flagged (medium or above). On the test
    /// half this is for reports only: tuning detection on it spoils the measure.
    #[arg(long)]
    pub list_missed: bool,
    /// Also print every benign text that was flagged (medium or above). On the test half
    /// this is for reports only: tuning detection on it spoils the measure.
    #[arg(long)]
    pub list_false_positives: bool,
    /// Count a text as flagged only when a rule flags it: the figures without the learned
    /// stage (`learned_injection` findings are ignored).
    #[arg(long)]
    pub without_learned: bool,
    /// Use this hb-agent binary instead of building the debug one.
    #[arg(long, value_name = "BIN")]
    pub bin: Option<PathBuf>,
}

/// One corpus text and what the sanitizer said of it.
#[derive(Debug)]
struct Judged {
    entry: Value,
    flagged: bool,
    high: bool,
    categories: Vec<String>,
}

/// Flagged and high counts over a group of texts.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    n: usize,
    flagged: usize,
    high: usize,
}

impl Tally {
    fn add(&mut self, j: &Judged) {
        self.n += 1;
        self.flagged += usize::from(j.flagged);
        self.high += usize::from(j.high);
    }

    fn pct(part: usize, n: usize) -> f64 {
        if n == 0 {
            0.0
        } else {
            100.0 * part as f64 / n as f64
        }
    }

    fn to_json(self) -> Value {
        json!({
            "n": self.n,
            "flagged": self.flagged,
            "flagged_pct": Self::pct(self.flagged, self.n),
            "high": self.high,
            "high_pct": Self::pct(self.high, self.n),
        })
    }
}

/// One half's figures.
#[derive(Debug, Default)]
struct HalfReport {
    attacks: Tally,
    by_family: BTreeMap<String, Tally>,
    by_language: BTreeMap<String, Tally>,
    benign: Tally,
    benign_by_language: BTreeMap<String, Tally>,
    discussion: Tally,
    /// Benign texts written for this corpus (hard negatives), as against collected ones.
    hard_negatives: Tally,
    /// Attacks whose template (the form all its translations share) has no text in the
    /// other half: the measure of forms the rules cannot have been fitted to.
    unseen_forms: Tally,
    missed: Vec<Value>,
    false_positives: Vec<(Value, bool)>,
}

pub fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    let root = util::workspace_root();
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => build_agent()?,
    };
    let mut halves = BTreeMap::new();
    for &half in args.half.names() {
        let dir = root.join(CORPUS).join(half);
        let other = if half == "dev" { "test" } else { "dev" };
        let other_forms = templates(&load_jsonl(
            &root.join(CORPUS).join(other).join("attacks.jsonl"),
        )?);
        let attacks = judge(
            &bin,
            load_jsonl(&dir.join("attacks.jsonl"))?,
            args.without_learned,
        )?;
        // The probe set has attacks only; its false positives are the halves' benign sets.
        let benign_file = dir.join("benign.jsonl");
        let benign = if benign_file.exists() {
            judge(&bin, load_jsonl(&benign_file)?, args.without_learned)?
        } else {
            Vec::new()
        };
        let discussion_file = dir.join("discussion.jsonl");
        let discussion = if discussion_file.exists() {
            judge(&bin, load_jsonl(&discussion_file)?, args.without_learned)?
        } else {
            Vec::new()
        };
        let mut report = tally(&attacks, &benign, &discussion);
        for j in &attacks {
            if !other_forms.contains(&field(&j.entry, "template")) {
                report.unseen_forms.add(j);
            }
        }
        halves.insert(half, report);
    }
    let original = original_figures(&bin, &root, args.without_learned)?;
    if args.json {
        print_json(&halves, &original, args)?;
    } else {
        print_tables(&halves, &original, args);
    }
    Ok(())
}

/// The debug agent, built as `cargo xtask test` builds it (with its eBPF programs, so the
/// binary the integration tests drive is not replaced by one without them).
fn build_agent() -> anyhow::Result<PathBuf> {
    util::run(util::cargo().args(["build", "--package", "hb-agent"]))?;
    Ok(util::target_dir().join("debug/hb-agent"))
}

/// A JSON Lines file: one object per non-blank line, each with a `text`.
fn load_jsonl(path: &Path) -> anyhow::Result<Vec<Value>> {
    let body = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in body.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        ensure!(
            v["text"].is_string(),
            "{}:{}: no text field",
            path.display(),
            n + 1
        );
        out.push(v);
    }
    Ok(out)
}

/// Every entry through one `__sanitize-batch` process; the verdicts come back in order.
fn judge(bin: &Path, entries: Vec<Value>, without_learned: bool) -> anyhow::Result<Vec<Judged>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let mut child = Command::new(bin)
        .arg("__sanitize-batch")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} __sanitize-batch", bin.display()))?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let lines: Vec<String> = entries
        .iter()
        .map(|e| json!({"text": e["text"]}).to_string())
        .collect();
    // Written from a thread: the child answers line by line, and a full pipe on either
    // side would otherwise stop both.
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        for l in lines {
            writeln!(stdin, "{l}")?;
        }
        Ok(())
    });
    let stdout = child.stdout.take().context("no stdout")?;
    let mut verdicts = Vec::with_capacity(entries.len());
    for line in BufReader::new(stdout).lines() {
        verdicts.push(serde_json::from_str::<Value>(&line?)?);
    }
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    let status = child.wait()?;
    if !status.success() {
        bail!("{} __sanitize-batch failed ({status})", bin.display());
    }
    ensure!(
        verdicts.len() == entries.len(),
        "{} verdicts for {} texts",
        verdicts.len(),
        entries.len()
    );
    Ok(entries
        .into_iter()
        .zip(verdicts)
        .map(|(entry, v)| Judged {
            entry,
            flagged: v[if without_learned {
                "flagged_by_rules"
            } else {
                "flagged"
            }]
            .as_bool()
            .unwrap_or(false),
            high: v["severity"].as_str() == Some("high"),
            categories: v["categories"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect())
}

/// The templates the entries were written from (only their ids are read).
fn templates(entries: &[Value]) -> std::collections::BTreeSet<String> {
    entries.iter().map(|e| field(e, "template")).collect()
}

fn field(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or("?").to_string()
}

fn tally(attacks: &[Judged], benign: &[Judged], discussion: &[Judged]) -> HalfReport {
    let mut r = HalfReport::default();
    for j in attacks {
        r.attacks.add(j);
        r.by_family
            .entry(field(&j.entry, "family"))
            .or_default()
            .add(j);
        r.by_language
            .entry(field(&j.entry, "language"))
            .or_default()
            .add(j);
        if !j.flagged {
            r.missed.push(j.entry.clone());
        }
    }
    for j in benign {
        r.benign.add(j);
        if field(&j.entry, "source").starts_with("written for") {
            r.hard_negatives.add(j);
        }
        r.benign_by_language
            .entry(field(&j.entry, "language"))
            .or_default()
            .add(j);
        if j.flagged {
            r.false_positives.push((j.entry.clone(), j.high));
        }
    }
    for j in discussion {
        r.discussion.add(j);
    }
    r
}

/// The original corpora's figures: payloads flagged with their own category, and
/// benign texts flagged high and medium.
#[derive(Debug)]
struct Original {
    payloads: usize,
    payloads_flagged: usize,
    payloads_right_category: usize,
    payloads_high: usize,
    benign: usize,
    benign_high: usize,
    benign_flagged: usize,
}

fn original_figures(bin: &Path, root: &Path, without_learned: bool) -> anyhow::Result<Original> {
    let read = |p: &str| -> anyhow::Result<Vec<Value>> {
        let path = root.join(p);
        let body = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&body)
            .with_context(|| format!("{}: not a JSON array", path.display()))
    };
    let payloads = judge(bin, read(PAYLOADS)?, without_learned)?;
    let benign = judge(bin, read(BENIGN)?, without_learned)?;
    Ok(Original {
        payloads: payloads.len(),
        payloads_flagged: payloads.iter().filter(|j| j.flagged).count(),
        payloads_right_category: payloads
            .iter()
            .filter(|j| j.flagged && j.categories.contains(&field(&j.entry, "category")))
            .count(),
        payloads_high: payloads.iter().filter(|j| j.high).count(),
        benign: benign.len(),
        benign_high: benign.iter().filter(|j| j.high).count(),
        benign_flagged: benign.iter().filter(|j| j.flagged).count(),
    })
}

fn print_tables(halves: &BTreeMap<&str, HalfReport>, o: &Original, args: &EvalArgs) {
    let row = |name: &str, t: Tally| {
        println!(
            "  {:<24} {:>5} {:>8} {:>7.1} % {:>6} {:>7.1} %",
            name,
            t.n,
            t.flagged,
            Tally::pct(t.flagged, t.n),
            t.high,
            Tally::pct(t.high, t.n)
        );
    };
    let head = |what: &str| {
        println!(
            "  {:<24} {:>5} {:>8} {:>9} {:>6} {:>9}",
            what, "texts", "flagged", "%", "high", "%"
        );
    };
    for (half, r) in halves {
        println!();
        println!(
            "sanitize-eval: {half} half (flagged = medium or above{})",
            if args.without_learned {
                "; rules only, learned stage ignored"
            } else {
                ""
            }
        );
        println!("{:-<70}", "");
        head("attacks by family");
        for (k, t) in &r.by_family {
            row(k, *t);
        }
        head("attacks by language");
        for (k, t) in &r.by_language {
            row(k, *t);
        }
        row("ALL ATTACKS", r.attacks);
        row("forms not in other half", r.unseen_forms);
        println!("  (targets: >= 90 % flagged overall, >= 80 % in every family and language)");
        head("benign by language");
        for (k, t) in &r.benign_by_language {
            row(k, *t);
        }
        row("ALL BENIGN", r.benign);
        row("  written for the corpus", r.hard_negatives);
        println!("  (targets: <= 1 % high, <= 5 % flagged)");
        if r.discussion.n > 0 {
            row("discussion (not counted)", r.discussion);
        }
        if args.list_missed {
            println!("\nmissed attacks ({half}):");
            for e in &r.missed {
                println!(
                    "  [{} {} {}] {:?}",
                    field(e, "id"),
                    field(e, "family"),
                    field(e, "language"),
                    field(e, "text")
                );
            }
        }
        if args.list_false_positives {
            println!("\nflagged benign texts ({half}):");
            for (e, high) in &r.false_positives {
                println!(
                    "  [{} {} {}] {:?}",
                    field(e, "id"),
                    if *high { "high" } else { "medium" },
                    field(e, "source"),
                    field(e, "text")
                );
            }
        }
    }
    println!();
    println!(
        "payloads.json: {}/{} flagged, {} with the right category, {} high",
        o.payloads_flagged, o.payloads, o.payloads_right_category, o.payloads_high
    );
    println!(
        "benign.json:   {} of {} high, {} flagged (medium or above)",
        o.benign_high, o.benign, o.benign_flagged
    );
}

fn print_json(
    halves: &BTreeMap<&str, HalfReport>,
    o: &Original,
    args: &EvalArgs,
) -> anyhow::Result<()> {
    let map = |m: &BTreeMap<String, Tally>| -> Value {
        m.iter()
            .map(|(k, t)| (k.clone(), t.to_json()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let mut out = serde_json::Map::new();
    for (half, r) in halves {
        let mut h = json!({
            "attacks": r.attacks.to_json(),
            "by_family": map(&r.by_family),
            "by_language": map(&r.by_language),
            "benign": r.benign.to_json(),
            "benign_by_language": map(&r.benign_by_language),
            "discussion": r.discussion.to_json(),
            "hard_negatives": r.hard_negatives.to_json(),
            "unseen_forms": r.unseen_forms.to_json(),
        });
        if args.list_missed {
            h["missed"] = Value::Array(r.missed.clone());
        }
        if args.list_false_positives {
            h["false_positives"] = r
                .false_positives
                .iter()
                .map(|(e, high)| {
                    let mut e = e.clone();
                    e["judged"] = json!(if *high { "high" } else { "medium" });
                    e
                })
                .collect();
        }
        out.insert((*half).to_string(), h);
    }
    out.insert(
        "original".into(),
        json!({
            "payloads": o.payloads,
            "payloads_flagged": o.payloads_flagged,
            "payloads_right_category": o.payloads_right_category,
            "payloads_high": o.payloads_high,
            "benign": o.benign,
            "benign_high": o.benign_high,
            "benign_flagged": o.benign_flagged,
        }),
    );
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, &Value::Object(out))?;
    writeln!(stdout)?;
    Ok(())
}
