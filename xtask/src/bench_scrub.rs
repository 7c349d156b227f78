//! `cargo xtask bench scrub`: hb's scrubber against a Python 3 `re` implementation of the
//! same families (`benches/scrub_baseline.py`), on the same 1 MiB inputs, in one run.
//!
//! Inputs (written to `target/bench-scrub/`, rebuilt each run, deterministic):
//! (a) clean text: the scrubber's clean test corpus (JSON, HTML, stack traces, logs,
//!     shell output, YAML) repeated to 1 MiB — dense with near misses (URLs,
//!     `Authorization`, `Bearer`, `sk-`-words), so it is not an easy case;
//! (b) the same with one synthetic token from `testdata/tokens.tsv` planted every 4 KiB;
//! (c) the clean text with 1,000 synthetic 40-character live values registered.
//! hb is timed in-process (`hb-agent __bench-scrub`, release build) whole-buffer and
//! streaming (64 KiB chunks); MiB/s are from the median CPU time of the scrubbing thread
//! on both sides (wall-clock figures are printed too: on a busy machine they also count
//! other processes' time). Needs no root and loads nothing into the kernel.
//!
//! Each input is also scrubbed with gitleaks's default rule file loaded
//! (`testdata/gitleaks/gitleaks.toml`, as `scrub --rules`), printed beside the built-in
//! figures and held to the same targets.

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, ensure};
use serde_json::Value;

use crate::util;

const MIB: usize = 1024 * 1024;
const LIVE_VALUES: usize = 1000;
const HB_ITERATIONS: &str = "30";

pub fn bench() -> anyhow::Result<()> {
    util::run(util::cargo().args(["build", "--release", "--package", "hb-agent"]))?;
    let root = util::workspace_root();
    let testdata = root.join("hb-agent/src/scrub/testdata");
    let dir = root.join("target/bench-scrub");
    write_inputs(&dir)?;

    let hb = root.join("target/release/hb-agent");
    let rules = testdata.join("gitleaks/gitleaks.toml");
    let python = root.join("benches/scrub_baseline.py");
    let cases = [
        ("(a) clean text", "clean.txt", false, "3"),
        ("(b) token every 4 KiB", "tokens.txt", false, "3"),
        ("(c) 1,000 live values", "clean.txt", true, "2"),
    ];
    let mut rows = Vec::new();
    for (name, file, live, py_iterations) in cases {
        let input = dir.join(file);
        let values = dir.join("live-values.txt");
        let mut cmd = Command::new(&hb);
        cmd.arg("__bench-scrub")
            .arg("--input")
            .arg(&input)
            .args(["--iterations", HB_ITERATIONS]);
        let mut py = Command::new("python3");
        py.arg(&python)
            .arg("--input")
            .arg(&input)
            .args(["--iterations", py_iterations]);
        if live {
            cmd.arg("--secrets-file").arg(&values);
            py.arg("--secrets-file").arg(&values);
        }
        let hb_out = json(&mut cmd)?;
        let hb_rules = json(cmd.arg("--rules").arg(&rules))?;
        let py_out = json(&mut py)?;
        rows.push((name, hb_out, hb_rules, py_out));
    }

    println!();
    println!(
        "{:<24} {:>11} {:>11} {:>9} {:>10} {:>9} {:>6} {:>6}",
        "input (1 MiB)", "hb whole", "hb stream", "str/whl", "python", "hb/py", "hb red", "py red"
    );
    let mut misses = Vec::new();
    for (name, hb, _, py) in &rows {
        let whole = field(hb, "whole_mib_s")?;
        let stream = field(hb, "stream_mib_s")?;
        let python = field(py, "mib_s")?;
        println!(
            "{:<24} {:>7.0} MiB/s {:>5.0} MiB/s {:>9.3} {:>6.1} MiB/s {:>8.0}× {:>6} {:>6}",
            name,
            whole,
            stream,
            stream / whole,
            python,
            whole / python,
            hb["redactions"],
            py["redactions"]
        );
        if whole / python < 10.0 {
            misses.push(format!("{name}: hb/python {:.1}× < 10×", whole / python));
        }
        if stream / whole < 0.9 {
            misses.push(format!(
                "{name}: streaming at {:.0}% of whole-buffer",
                100.0 * stream / whole
            ));
        }
    }
    println!(
        "\nwith gitleaks's default rule file loaded ({} rules):",
        rows[0].2["loaded_rules"]
    );
    println!(
        "{:<24} {:>11} {:>11} {:>9} {:>10} {:>9} {:>6}",
        "input (1 MiB)", "hb+rules", "stream", "/built-in", "python", "hb/py", "hb red"
    );
    for (name, hb, hb_rules, py) in &rows {
        let whole = field(hb_rules, "whole_mib_s")?;
        let stream = field(hb_rules, "stream_mib_s")?;
        let python = field(py, "mib_s")?;
        println!(
            "{:<24} {:>7.0} MiB/s {:>5.0} MiB/s {:>9.3} {:>6.1} MiB/s {:>8.0}× {:>6}",
            name,
            whole,
            stream,
            whole / field(hb, "whole_mib_s")?,
            python,
            whole / python,
            hb_rules["redactions"],
        );
        if whole / python < 10.0 {
            misses.push(format!(
                "{name} with rules: hb/python {:.1}× < 10×",
                whole / python
            ));
        }
        if stream / whole < 0.9 {
            misses.push(format!(
                "{name} with rules: streaming at {:.0}% of whole-buffer",
                100.0 * stream / whole
            ));
        }
    }
    println!("\nwall clock (MiB/s):");
    for (name, hb, _, py) in &rows {
        println!(
            "  {:<24} hb whole {:.0}, hb stream {:.0}, python {:.1}",
            name,
            field(hb, "whole_wall_mib_s")?,
            field(hb, "stream_wall_mib_s")?,
            field(py, "wall_mib_s")?
        );
    }
    println!("\npacked view alone (what a broker answer adds to the scrub; MiB/s, CPU):");
    for (name, hb, _, _) in &rows {
        println!("  {:<24} {:.0}", name, field(hb, "packed_view_mib_s")?);
    }
    let (_, hb_c, _, _) = &rows[2];
    println!(
        "live values: registering {} at once ({} forms) {:.0} ms; then one more {:.2} ms; unregistering one about {:.1} ms",
        hb_c["live_values"],
        rows[2].3["live_forms"],
        field(hb_c, "register_ms")?,
        field(hb_c, "register_one_ms")?,
        field(hb_c, "unregister_one_ms")?
    );
    let clean_gib = field(&rows[0].1, "whole_mib_s")? / 1024.0;
    if clean_gib < 1.0 {
        misses.push(format!("clean text at {clean_gib:.2} GiB/s < 1 GiB/s"));
    }
    let clean_rules_gib = field(&rows[0].2, "whole_mib_s")? / 1024.0;
    if clean_rules_gib < 1.0 {
        misses.push(format!(
            "clean text with rules at {clean_rules_gib:.2} GiB/s < 1 GiB/s"
        ));
    }
    println!(
        "\ntargets (built-in and with rules): ≥ 1 GiB/s on clean text, ≥ 10× python on every input, streaming within 10% of whole-buffer"
    );
    if misses.is_empty() {
        println!("all met");
    } else {
        for m in &misses {
            println!("MISSED: {m}");
        }
    }
    Ok(())
}

/// Writes the benchmark's inputs to `dir` (also `cargo xtask __scrub-input DIR`, for
/// instruction counts of `hb-agent scrub` on them): `clean.txt` (a), `tokens.txt` (b),
/// `live-values.txt` (the values of (c), one a line).
pub fn write_inputs(dir: &Path) -> anyhow::Result<()> {
    let testdata = util::workspace_root().join("hb-agent/src/scrub/testdata");
    fs::create_dir_all(dir)?;
    let clean = clean_text(&testdata)?;
    let planted = with_tokens(&clean, &fs::read_to_string(testdata.join("tokens.tsv"))?);
    fs::write(dir.join("clean.txt"), &clean)?;
    fs::write(dir.join("tokens.txt"), &planted)?;
    fs::write(dir.join("live-values.txt"), live_values())?;
    Ok(())
}

fn json(cmd: &mut Command) -> anyhow::Result<Value> {
    let out = util::output(cmd)?;
    serde_json::from_str(out.trim()).with_context(|| format!("parsing benchmark output {out:?}"))
}

fn field(v: &Value, name: &str) -> anyhow::Result<f64> {
    v[name]
        .as_f64()
        .with_context(|| format!("benchmark output lacks {name}: {v}"))
}

/// The clean corpus, file after file, repeated to exactly 1 MiB.
fn clean_text(testdata: &Path) -> anyhow::Result<Vec<u8>> {
    let mut files: Vec<_> = fs::read_dir(testdata.join("clean"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    let texts: Vec<Vec<u8>> = files.iter().map(fs::read).collect::<Result<_, _>>()?;
    ensure!(
        !texts.is_empty(),
        "no clean corpus in {}",
        testdata.display()
    );
    let mut out = Vec::with_capacity(MIB + 4096);
    for t in texts.iter().cycle() {
        if out.len() >= MIB {
            break;
        }
        out.extend_from_slice(t);
    }
    out.truncate(MIB);
    Ok(out)
}

/// `clean` with a line holding the next token of `tokens.tsv` after every 4 KiB.
fn with_tokens(clean: &[u8], tsv: &str) -> Vec<u8> {
    let tokens: Vec<String> = tsv
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split('\t').nth(1))
        .map(|t| t.replace("\\n", "\n"))
        .collect();
    let mut out = Vec::with_capacity(clean.len() + clean.len() / 16);
    let mut next_mark = 4096;
    let mut i = 0;
    for line in clean.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line);
        if out.len() >= next_mark && !tokens.is_empty() {
            out.extend_from_slice(
                format!("  \"token\": \"{}\",\n", tokens[i % tokens.len()]).as_bytes(),
            );
            i += 1;
            next_mark += 4096;
        }
    }
    out
}

/// 1,000 synthetic 40-character values without any known prefix (xorshift, fixed seed).
fn live_values() -> String {
    const ALPHABET: &[u8] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#%&*+/=?@^_~";
    let mut state: u64 = 0x5DEE_CE66_D1CE_4E5B;
    let mut out = String::with_capacity(LIVE_VALUES * 41);
    for _ in 0..LIVE_VALUES {
        for _ in 0..40 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.push(char::from(
                ALPHABET[(state % ALPHABET.len() as u64) as usize],
            ));
        }
        out.push('\n');
    }
    out
}
