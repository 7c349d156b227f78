//! `cargo xtask scrub-recall`: how many of gitleaks's default rules the scrubber covers.
//!
//! For each rule of a gitleaks-format rule file, three samples are generated from the
//! rule's own regex (as gitleaks's tests do): a random string the regex generates
//! (`rand_regex`, seeded from the rule id, so every run sees the same samples), kept only
//! if the regex really matches it, its secret (the `secretGroup`, or the first non-empty
//! group, or the whole match) is above the rule's entropy floor (Shannon, per character,
//! as gitleaks computes it), it contains one of the rule's keywords, and neither the rule's
//! nor the global allowlists allow it. Each sample is planted in a line that names the
//! keyword (`export X=…`, YAML, JSON, a log line), and the rule's regex must find the same
//! secret in that line. All lines go through one `hb-agent scrub --json` (with `--rules`
//! when given); a sample counts as removed when its secret's text appears nowhere in the
//! output. Samples are synthetic, so printing them (`--list-missed`) shows no secret.

use std::{
    fmt::Write as _,
    io::Write as _,
    ops::Range,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail, ensure};
use rand::{SeedableRng as _, rngs::StdRng};
use regex::bytes::{Regex, RegexBuilder};
use regex_syntax::{
    ast::{self, Ast},
    hir::{self, Class, ClassBytes, ClassBytesRange, Hir, HirKind},
};
use serde::Deserialize;

use crate::util;

/// The vendored copy of gitleaks's default rules.
pub const DEFAULT_GITLEAKS: &str = "hb-agent/src/scrub/testdata/gitleaks/gitleaks.toml";
const SAMPLES_PER_RULE: usize = 3;
/// Generation attempts per rule before it is reported as ungenerable.
const ATTEMPTS: usize = 3000;
/// How far past its minimum an unbounded repetition (`+`, `*`, `{n,}`) may grow.
const MAX_REPEAT: u32 = 24;

#[derive(Debug, clap::Args)]
pub struct RecallArgs {
    /// A rule file passed through to `hb-agent scrub --rules` (default: built-in families
    /// only).
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// The gitleaks-format file samples are generated from.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_GITLEAKS)]
    gitleaks: PathBuf,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Print every rule not wholly removed, with its planted sample lines.
    #[arg(long)]
    list_missed: bool,
    /// Use this `hb-agent` instead of building the release binary.
    #[arg(long, value_name = "BIN")]
    hb_agent: Option<PathBuf>,
}

pub const RECALL_EXAMPLES: &str = "\
Examples:
  cargo xtask scrub-recall                                  # built-in families vs the vendored gitleaks.toml
  cargo xtask scrub-recall --list-missed                    # and every rule not wholly removed, with its samples
  cargo xtask scrub-recall --rules hb-agent/src/scrub/testdata/gitleaks/gitleaks.toml
  cargo xtask scrub-recall --gitleaks /tmp/gitleaks.toml --json | jq .all_removed";

/// The parts of a gitleaks rule file this tool reads (gitleaks's own format, so unknown
/// keys are ignored rather than refused).
#[derive(Deserialize)]
struct RuleFile {
    #[serde(default)]
    allowlist: Option<Allowlist>,
    #[serde(default)]
    allowlists: Vec<Allowlist>,
    #[serde(default)]
    rules: Vec<GlRule>,
}

#[derive(Deserialize)]
struct GlRule {
    id: String,
    regex: Option<String>,
    #[serde(rename = "secretGroup", default)]
    secret_group: usize,
    entropy: Option<f64>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    allowlists: Vec<Allowlist>,
    /// The older single-table form.
    #[serde(default)]
    allowlist: Option<Allowlist>,
}

#[derive(Deserialize, Default)]
struct Allowlist {
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(rename = "regexTarget", default)]
    regex_target: Option<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    commits: Vec<String>,
    #[serde(default)]
    condition: Option<String>,
}

/// An allowlist compiled: a sample is allowed when its criteria say so.
struct Allow {
    regexes: Vec<Regex>,
    target: Target,
    stopwords: Vec<String>,
    /// `condition = "AND"`: every criterion must hold (a path or commit criterion never
    /// does for a planted line).
    all: bool,
    has_path_or_commit: bool,
}

#[derive(Clone, Copy)]
enum Target {
    Secret,
    Match,
    Line,
}

/// One planted sample: its line and where its secret sits in it.
struct Sample {
    line: String,
    secret: Range<usize>,
}

/// A rule's samples, or why it has none.
struct RuleSamples {
    id: String,
    samples: Vec<Sample>,
    ungenerated: Option<String>,
}

/// What the scrubber did to one rule's samples.
struct Outcome {
    id: String,
    total: usize,
    removed: usize,
    families: Vec<String>,
    ungenerated: Option<String>,
}

pub fn recall(args: &RecallArgs) -> anyhow::Result<()> {
    let root = util::workspace_root();
    let gitleaks = root.join(&args.gitleaks);
    let file = load_rule_file(&gitleaks)?;
    let global = compile_allowlists(file.allowlist.iter().chain(&file.allowlists))
        .context("the global allowlist")?;
    let generated: Vec<RuleSamples> = file
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| generate_rule(i, r, &global))
        .collect();
    let (input, spans) = plant(&generated);
    let bin = hb_agent_binary(args.hb_agent.as_deref())?;
    let scrubbed = run_scrubber(&bin, args.rules.as_deref(), &input)?;
    let outcomes = tally(&generated, &input, &spans, &scrubbed);
    if args.json {
        print_json(&gitleaks, args.rules.as_deref(), &outcomes)?;
    } else {
        print_text(
            &gitleaks,
            args.rules.as_deref(),
            &outcomes,
            &generated,
            args.list_missed,
        );
    }
    Ok(())
}

fn load_rule_file(path: &Path) -> anyhow::Result<RuleFile> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading {} (get gitleaks's default rules: git -C <gitleaks repo> show HEAD:config/gitleaks.toml > /tmp/gitleaks.toml, then --gitleaks /tmp/gitleaks.toml)",
            path.display()
        )
    })?;
    let file: RuleFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    ensure!(
        !file.rules.is_empty(),
        "{} has no [[rules]]",
        path.display()
    );
    Ok(file)
}

/// gitleaks's regexes are RE2 over UTF-8 text with ASCII `\w`, `\s`, `\b`: bytes without
/// Unicode classes is the closest the regex crate comes.
fn re2(pattern: &str) -> anyhow::Result<Regex> {
    Ok(RegexBuilder::new(&literal_braces(pattern))
        .unicode(false)
        .size_limit(64 << 20)
        .build()?)
}

/// RE2 reads a `{` that does not start a counted repetition (`{\d+}` after `|`) as a
/// literal; the regex crate refuses it, so it is escaped.
fn literal_braces(pattern: &str) -> String {
    let b = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && i + 1 < b.len() {
            out.push_str(&pattern[i..i + 2]);
            i += 2;
            continue;
        }
        if c == b'{' {
            let rest = &pattern[i + 1..];
            let counted = rest.find('}').is_some_and(|end| {
                let inner = &rest[..end];
                let (lo, hi) = inner.split_once(',').unwrap_or((inner, "0"));
                !lo.is_empty()
                    && lo.bytes().all(|d| d.is_ascii_digit())
                    && hi.bytes().all(|d| d.is_ascii_digit())
            });
            let after_atom = i > 0 && !matches!(b[i - 1], b'(' | b'|');
            if !(counted && after_atom) {
                out.push_str("\\{");
                i += 1;
                continue;
            }
        }
        let ch = pattern[i..].chars().next().unwrap_or_default();
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn compile_allowlists<'a>(
    lists: impl Iterator<Item = &'a Allowlist>,
) -> anyhow::Result<Vec<Allow>> {
    lists
        .map(|a| {
            Ok(Allow {
                regexes: a
                    .regexes
                    .iter()
                    .map(|r| re2(r).with_context(|| format!("allowlist regex {r}")))
                    .collect::<anyhow::Result<_>>()?,
                target: match a.regex_target.as_deref() {
                    Some("match") => Target::Match,
                    Some("line") => Target::Line,
                    _ => Target::Secret,
                },
                stopwords: a.stopwords.iter().map(|s| s.to_lowercase()).collect(),
                all: a
                    .condition
                    .as_deref()
                    .is_some_and(|c| c.eq_ignore_ascii_case("and")),
                has_path_or_commit: !a.paths.is_empty() || !a.commits.is_empty(),
            })
        })
        .collect()
}

impl Allow {
    /// Whether this allowlist lets a finding through (gitleaks: OR of the criteria by
    /// default, AND with `condition = "AND"`; paths and commits never match here).
    fn allows(&self, secret: &str, matched: &str, line: &str) -> bool {
        let target = match self.target {
            Target::Secret => secret,
            Target::Match => matched,
            Target::Line => line,
        };
        let by_regex = (!self.regexes.is_empty())
            .then(|| self.regexes.iter().any(|r| r.is_match(target.as_bytes())));
        let lower = secret.to_lowercase();
        let by_stopword = (!self.stopwords.is_empty())
            .then(|| self.stopwords.iter().any(|s| lower.contains(s.as_str())));
        let criteria: Vec<bool> = [by_regex, by_stopword].into_iter().flatten().collect();
        if self.all {
            !self.has_path_or_commit && !criteria.is_empty() && criteria.iter().all(|&c| c)
        } else {
            criteria.iter().any(|&c| c)
        }
    }
}

/// FNV-1a: a stable seed per rule id.
fn seed(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Shannon entropy per character, as gitleaks computes it.
fn shannon(s: &str) -> f64 {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return 0.0;
    }
    let mut counts = std::collections::HashMap::new();
    for c in &chars {
        *counts.entry(*c).or_insert(0usize) += 1;
    }
    let n = chars.len() as f64;
    counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// The rule's regex as a generator: word boundaries and anchors dropped (the regex
/// check afterwards keeps only samples that satisfy them), every class cut to printable
/// ASCII so samples are single-line text. Literals under `(?i)` are generated in the case
/// the rule's author wrote them (`-----BEGIN`, `algolia`, `dor_v1_`), as real tokens and
/// names are written, not in random case (`aLgOlIa`) that no one writes; classes keep
/// both cases.
fn generator(pattern: &str) -> anyhow::Result<rand_regex::Regex> {
    let pattern = &literal_braces(pattern);
    let mut ast = regex_syntax::ast::parse::Parser::new().parse(pattern)?;
    case_sensitive(&mut ast, &mut false);
    let hir = regex_syntax::hir::translate::TranslatorBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .translate(pattern, &ast)?;
    let hir = printable(hir).context("a class has no printable ASCII byte")?;
    Ok(rand_regex::Regex::with_hir(hir, MAX_REPEAT)?)
}

/// Removes the `i` flag from `ast`, except around classes that were case-insensitive:
/// literals keep the case they were written in, classes keep the cases the rule allows
/// (`(?i)[a-z]{34}` still yields mixed case).
fn case_sensitive(ast: &mut Ast, ci: &mut bool) {
    /// Applies a flag set to `ci` and removes its `i`.
    fn apply(flags: &mut ast::Flags, ci: &mut bool) {
        let mut negated = false;
        for item in &flags.items {
            match item.kind {
                ast::FlagsItemKind::Negation => negated = true,
                ast::FlagsItemKind::Flag(ast::Flag::CaseInsensitive) => *ci = !negated,
                ast::FlagsItemKind::Flag(_) => {}
            }
        }
        flags
            .items
            .retain(|i| i.kind != ast::FlagsItemKind::Flag(ast::Flag::CaseInsensitive));
        if flags
            .items
            .last()
            .is_some_and(|i| i.kind == ast::FlagsItemKind::Negation)
        {
            flags.items.pop();
        }
    }
    match ast {
        Ast::Flags(f) => apply(&mut f.flags, ci),
        Ast::Group(g) => {
            let mut inner = *ci;
            if let ast::GroupKind::NonCapturing(flags) = &mut g.kind {
                apply(flags, &mut inner);
            }
            case_sensitive(&mut g.ast, &mut inner);
        }
        Ast::Repetition(r) => case_sensitive(&mut r.ast, &mut ci.clone()),
        Ast::Alternation(a) => {
            for b in &mut a.asts {
                case_sensitive(b, &mut ci.clone());
            }
        }
        Ast::Concat(c) => {
            // A flag set changes the flags of what follows it in the same group.
            for b in &mut c.asts {
                case_sensitive(b, ci);
            }
        }
        Ast::ClassBracketed(_) | Ast::ClassPerl(_) | Ast::ClassUnicode(_) if *ci => {
            let span = *ast.span();
            let class = std::mem::replace(ast, Ast::empty(span));
            *ast = Ast::group(ast::Group {
                span,
                kind: ast::GroupKind::NonCapturing(ast::Flags {
                    span,
                    items: vec![ast::FlagsItem {
                        span,
                        kind: ast::FlagsItemKind::Flag(ast::Flag::CaseInsensitive),
                    }],
                }),
                ast: Box::new(class),
            });
        }
        _ => {}
    }
}

fn printable(h: Hir) -> Option<Hir> {
    let ascii = ClassBytes::new([ClassBytesRange::new(b' ', b'~')]);
    Some(match h.into_kind() {
        HirKind::Look(_) | HirKind::Empty => Hir::empty(),
        HirKind::Literal(l) => Hir::literal(l.0),
        HirKind::Class(Class::Bytes(mut c)) => {
            c.intersect(&ascii);
            if c.ranges().is_empty() {
                return None;
            }
            let any = c.ranges().iter().map(|r| r.len()).sum::<usize>() >= 90;
            let class = Hir::class(Class::Bytes(c));
            // An unescaped `.` in a host name (`hooks.slack.com`) is a dot half the time,
            // not one time in 95.
            if any {
                Hir::alternation(vec![Hir::literal(*b"."), class])
            } else {
                class
            }
        }
        HirKind::Class(Class::Unicode(c)) => {
            printable(Hir::class(Class::Bytes(c.to_byte_class()?)))?
        }
        HirKind::Repetition(r) => {
            let sub = printable(*r.sub);
            match sub {
                Some(sub) => Hir::repetition(hir::Repetition {
                    sub: Box::new(sub),
                    ..r
                }),
                None if r.min == 0 => Hir::empty(),
                None => return None,
            }
        }
        HirKind::Capture(c) => Hir::capture(hir::Capture {
            sub: Box::new(printable(*c.sub)?),
            ..c
        }),
        HirKind::Concat(subs) => {
            Hir::concat(subs.into_iter().map(printable).collect::<Option<_>>()?)
        }
        HirKind::Alternation(subs) => {
            let alts: Vec<Hir> = subs.into_iter().filter_map(printable).collect();
            if alts.is_empty() {
                return None;
            }
            Hir::alternation(alts)
        }
    })
}

/// The secret of a match, as gitleaks takes it: the `secretGroup`, or the first
/// non-empty capture group, or the whole match.
fn secret_range(caps: &regex::bytes::Captures<'_>, group: usize) -> Option<Range<usize>> {
    if caps.len() < 2 {
        return caps.get(0).map(|m| m.range());
    }
    if group > 0 {
        return caps.get(group).map(|m| m.range());
    }
    (1..caps.len())
        .filter_map(|g| caps.get(g))
        .find(|m| !m.is_empty())
        .map(|m| m.range())
}

/// A line naming `keyword` with `sample` in it (template `which` of four); returns the
/// line and where the sample starts in it.
fn plant_line(which: usize, keyword: &str, sample: &str) -> (String, usize) {
    let name: String = keyword
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let (before, after) = match which % 4 {
        0 => (
            format!("export {}_TOKEN=", name.to_uppercase()),
            String::new(),
        ),
        1 => (format!("  {}_token: ", name.to_lowercase()), String::new()),
        2 => (
            format!("{{\"{}_key\": \"", name.to_lowercase()),
            "\"}".to_string(),
        ),
        _ => (
            format!(
                "2026-12-04T14:31:21Z INFO {} client configured with ",
                name.to_lowercase()
            ),
            " (ok)".to_string(),
        ),
    };
    (format!("{before}{sample}{after}"), before.len())
}

fn generate_rule(index: usize, rule: &GlRule, global: &[Allow]) -> RuleSamples {
    let mut out = RuleSamples {
        id: rule.id.clone(),
        samples: Vec::new(),
        ungenerated: None,
    };
    let Some(pattern) = &rule.regex else {
        out.ungenerated = Some("no regex (a path-only rule)".into());
        return out;
    };
    let parts = (|| -> anyhow::Result<_> {
        let regex = re2(pattern)?;
        let generate = generator(pattern)?;
        let local = compile_allowlists(rule.allowlists.iter().chain(&rule.allowlist))?;
        Ok((regex, generate, local))
    })();
    let (regex, generate, local) = match parts {
        Ok(p) => p,
        Err(e) => {
            out.ungenerated = Some(format!("{e:#}"));
            return out;
        }
    };
    let keywords: Vec<String> = rule.keywords.iter().map(|k| k.to_lowercase()).collect();
    let mut rng = StdRng::seed_from_u64(seed(&rule.id));
    for _ in 0..ATTEMPTS {
        if out.samples.len() == SAMPLES_PER_RULE {
            break;
        }
        let bytes: Vec<u8> = rand::RngExt::sample(&mut rng, &generate);
        let Ok(sample) = String::from_utf8(bytes) else {
            continue;
        };
        let lower = sample.to_lowercase();
        // gitleaks looks for a keyword in the whole text, not in the match: the line's
        // name carries one the sample lacks (Airtable's `pat…` tokens, keyword `airtable`).
        let keyword = keywords
            .iter()
            .find(|k| lower.contains(k.as_str()))
            .or(keywords.first())
            .cloned()
            .unwrap_or_else(|| rule.id.clone());
        let which = index + out.samples.len();
        let (line, at) = plant_line(which, &keyword, &sample);
        let lower_line = line.to_lowercase();
        if !keywords.is_empty() && !keywords.iter().any(|k| lower_line.contains(k.as_str())) {
            continue;
        }
        // The rule must find this sample's secret in the planted line, as gitleaks would.
        let Some(caps) = regex.captures(line.as_bytes()) else {
            continue;
        };
        let Some(secret) = secret_range(&caps, rule.secret_group) else {
            continue;
        };
        if secret.start < at || secret.end > at + sample.len() || secret.is_empty() {
            continue;
        }
        let secret_text = &line[secret.clone()];
        let whole = caps.get(0).map(|m| &line[m.range()]).unwrap_or_default();
        if rule.entropy.is_some_and(|e| shannon(secret_text) <= e) {
            continue;
        }
        if local
            .iter()
            .chain(global)
            .any(|a| a.allows(secret_text, whole, &line))
        {
            continue;
        }
        out.samples.push(Sample { line, secret });
    }
    if out.samples.is_empty() {
        out.ungenerated = Some(format!(
            "no valid sample in {ATTEMPTS} attempts (regex match, entropy, keyword, allowlists)"
        ));
    }
    out
}

/// Every sample's line, one per line with a blank line between; the absolute range of
/// each sample's secret, per rule.
fn plant(rules: &[RuleSamples]) -> (String, Vec<Vec<Range<usize>>>) {
    let mut input = String::new();
    let mut spans = Vec::new();
    for r in rules {
        let mut mine = Vec::new();
        for s in &r.samples {
            let base = input.len();
            input.push_str(&s.line);
            input.push_str("\n\n");
            mine.push(base + s.secret.start..base + s.secret.end);
        }
        spans.push(mine);
    }
    (input, spans)
}

/// The release `hb-agent`, built now, or the one given.
pub fn hb_agent_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(b) = given {
        return Ok(b.to_path_buf());
    }
    util::run(util::cargo().args(["build", "--release", "--package", "hb-agent"]))?;
    Ok(util::target_dir().join("release/hb-agent"))
}

/// A redaction as `hb-agent scrub --json` reports it.
#[derive(Deserialize)]
pub struct Redaction {
    pub family: String,
    pub offset: usize,
    pub len: usize,
}

/// What `hb-agent scrub --json` prints.
#[derive(Deserialize)]
pub struct ScrubOutput {
    pub text: String,
    pub redactions: Vec<Redaction>,
}

/// `hb-agent scrub --json [--rules FILE]` over `input` in one process.
pub fn run_scrubber(bin: &Path, rules: Option<&Path>, input: &str) -> anyhow::Result<ScrubOutput> {
    let mut cmd = Command::new(bin);
    cmd.args(["scrub", "--json"]);
    if let Some(r) = rules {
        cmd.arg("--rules").arg(r);
    }
    eprintln!("+ {cmd:?} < ({} bytes)", input.len());
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut stdin = child.stdin.take().context("scrubber stdin")?;
    let data = input.as_bytes().to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let output = child
        .wait_with_output()
        .context("waiting for the scrubber")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the stdin writer panicked"))?
        .context("writing the scrubber's stdin")?;
    if !output.status.success() {
        bail!("{cmd:?} failed: {}", output.status);
    }
    serde_json::from_slice(&output.stdout).context("parsing the scrubber's JSON output")
}

/// Per rule: how many samples' secrets are gone from the output (their text appears
/// nowhere in it), and the families whose redactions touched them.
fn tally(
    rules: &[RuleSamples],
    input: &str,
    spans: &[Vec<Range<usize>>],
    scrubbed: &ScrubOutput,
) -> Vec<Outcome> {
    let redactions = &scrubbed.redactions;
    rules
        .iter()
        .zip(spans)
        .map(|(r, mine)| {
            let mut families: Vec<String> = Vec::new();
            for s in mine {
                for x in redactions
                    .iter()
                    .filter(|x| x.offset < s.end && x.offset + x.len > s.start)
                {
                    if !families.contains(&x.family) {
                        families.push(x.family.clone());
                    }
                }
            }
            Outcome {
                id: r.id.clone(),
                total: mine.len(),
                removed: mine
                    .iter()
                    .filter(|s| !scrubbed.text.contains(&input[(*s).clone()]))
                    .count(),
                families,
                ungenerated: r.ungenerated.clone(),
            }
        })
        .collect()
}

struct Summary {
    all: usize,
    some: usize,
    none: usize,
    ungenerated: usize,
}

fn summary(outcomes: &[Outcome]) -> Summary {
    let with: Vec<&Outcome> = outcomes.iter().filter(|o| o.total > 0).collect();
    Summary {
        all: with.iter().filter(|o| o.removed == o.total).count(),
        some: with.iter().filter(|o| o.removed > 0).count(),
        none: with.iter().filter(|o| o.removed == 0).count(),
        ungenerated: outcomes.len() - with.len(),
    }
}

fn print_text(
    gitleaks: &Path,
    rules: Option<&Path>,
    outcomes: &[Outcome],
    generated: &[RuleSamples],
    list_missed: bool,
) {
    let s = summary(outcomes);
    let samples: usize = outcomes.iter().map(|o| o.total).sum();
    let removed: usize = outcomes.iter().map(|o| o.removed).sum();
    if list_missed {
        for (o, g) in outcomes.iter().zip(generated) {
            if o.total == 0 || o.removed == o.total {
                continue;
            }
            println!(
                "{:<48} {}/{} removed{}",
                o.id,
                o.removed,
                o.total,
                if o.families.is_empty() {
                    String::new()
                } else {
                    format!(" (by {})", o.families.join(", "))
                }
            );
            for sample in &g.samples {
                println!("    {}", sample.line);
            }
        }
        for o in outcomes.iter().filter(|o| o.ungenerated.is_some()) {
            println!(
                "{:<48} no sample: {}",
                o.id,
                o.ungenerated.as_deref().unwrap_or_default()
            );
        }
        println!();
    }
    let mut head = format!(
        "gitleaks rules: {} ({}), scrubber: built-in families",
        outcomes.len(),
        gitleaks.display()
    );
    if let Some(r) = rules {
        let _ = write!(head, " + --rules {}", r.display());
    }
    println!("{head}");
    println!("samples: {samples} ({SAMPLES_PER_RULE} per rule), removed: {removed}");
    println!("rules with all samples removed:      {:>4}", s.all);
    println!("rules with at least one removed:     {:>4}", s.some);
    println!("rules with none removed:             {:>4}", s.none);
    println!("rules with no sample generated:      {:>4}", s.ungenerated);
}

fn print_json(gitleaks: &Path, rules: Option<&Path>, outcomes: &[Outcome]) -> anyhow::Result<()> {
    let s = summary(outcomes);
    let per_rule: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| {
            serde_json::json!({
                "id": o.id,
                "samples": o.total,
                "removed": o.removed,
                "families": o.families,
                "ungenerated": o.ungenerated,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "gitleaks": gitleaks.display().to_string(),
        "rules_file": rules.map(|r| r.display().to_string()),
        "rules": outcomes.len(),
        "all_removed": s.all,
        "at_least_one_removed": s.some,
        "none_removed": s.none,
        "no_sample": s.ungenerated,
        "per_rule": per_rule,
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_counts_as_removed_when_its_secret_text_is_gone() {
        let rules = [RuleSamples {
            id: "r".into(),
            samples: Vec::new(),
            ungenerated: None,
        }];
        let input = "k=SECRET1\n\nk=SECRET2\n\n";
        let spans = [vec![2..9, 13..20]];
        let scrubbed = ScrubOutput {
            text: "k=[REDACTED:x]\n\nk=SECRET2\n\n".into(),
            redactions: vec![Redaction {
                family: "x".into(),
                offset: 2,
                len: 7,
            }],
        };
        let out = tally(&rules, input, &spans, &scrubbed);
        assert_eq!((out[0].total, out[0].removed), (2, 1));
        assert_eq!(out[0].families, ["x"]);
    }

    #[test]
    fn entropy_is_per_character() {
        assert!((shannon("aabb") - 1.0).abs() < 1e-9);
        assert_eq!(shannon(""), 0.0);
    }

    #[test]
    fn generated_samples_match_their_rule() {
        let rule = GlRule {
            id: "demo".into(),
            regex: Some(r#"(?i)\bdemo[\w.-]{0,10}\s*[:=]\s*['"]?([a-f0-9]{32})\b"#.into()),
            secret_group: 0,
            entropy: Some(3.0),
            keywords: vec!["demo".into()],
            allowlists: Vec::new(),
            allowlist: None,
        };
        let got = generate_rule(0, &rule, &[]);
        assert_eq!(got.samples.len(), SAMPLES_PER_RULE, "{:?}", got.ungenerated);
        for s in &got.samples {
            let secret = &s.line[s.secret.clone()];
            assert_eq!(secret.len(), 32);
            assert!(shannon(secret) > 3.0);
            assert!(s.line.to_lowercase().contains("demo"));
        }
    }
}
