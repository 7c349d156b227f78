//! Rule files in gitleaks's format: reading, checking and compiling them.
//!
//! Owns: the TOML schema gitleaks reads (`[[rules]]` with `id`, `regex`, `secretGroup`,
//! `entropy`, `keywords`, `path`, rule allowlists; the global `[allowlist]` /
//! `[[allowlists]]`; `[extend]`), the decision which rules hb's engine can run, and the
//! reason for each one it cannot. Running them is `loaded`'s job.
//! Must never: drop a rule silently (every rule is either compiled or reported with its
//! reason), or let a loaded rule's name pass for a built-in family or a live label.
//!
//! What hb does with each part of the format (gitleaks 8, `config/config.go`,
//! `config/rule.go`, `config/allowlist.go`, `detect/detect.go`):
//! - `regex` is compiled in RE2 syntax with ASCII classes and ASCII case folding (as Go's
//!   `\w`, `\d`, `\s`, `\b`); `.` matches any byte but `\n`. It runs in a bounded window
//!   around each keyword hit (see `loaded`), never over the whole input.
//! - `keywords` are matched case-insensitively; a rule without keywords cannot run (hb
//!   runs regexes only at keyword hits).
//! - `path`: a path-only rule (no `regex`) cannot run on a stream and is reported; a rule
//!   with both runs its regex on every input (a stream has no path), which redacts at
//!   least what gitleaks would find in matching files.
//! - `secretGroup`, `entropy` (Shannon, over characters, must exceed the floor),
//!   allowlists (`regexes` on the secret, the match or the line by `regexTarget`,
//!   `stopwords` on the secret, `condition`) as gitleaks applies them. `paths` and
//!   `commits` of an allowlist never hold on a stream: an `OR` allowlist ignores them, an
//!   `AND` allowlist that has them never allows.
//! - `[[allowlists]]` with `targetRules` applies to those rules; without, to every rule
//!   of its file.
//! - `[extend]` is not followed (a warning says so): list the extended file as another
//!   rule file. `required`, `skipReport` and `tags` do not change what is redacted (a
//!   composite rule's primary part is redacted on its own: more, never less).

use std::{collections::BTreeMap, path::Path, path::PathBuf};

use regex_automata::{meta, util::syntax};

use super::{inner::Inner, matcher::LazyWalker};
use regex_syntax::hir::{Hir, HirKind};
use serde::{Deserialize, Serialize};

/// A repetition without an upper bound (`+`, `*`, `{n,}`) counts as this many more
/// repeats when a rule's window is sized: longer tokens are cut at the window.
pub const OPEN_REPEAT: usize = 1024;
/// No rule's window is longer (a match longer than this is cut).
pub const MAX_WINDOW: usize = 8 * 1024;
/// A rule with a keyword its regex does not spell out (`airtable` for `pat…` tokens)
/// matches text near that keyword rather than through it: its window is at least this
/// long, so a keyword elsewhere on a line of this length still finds the match.
pub const NEAR_KEYWORD: usize = 512;
/// Loaded rule names at most this long.
const MAX_ID_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read rule file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax errors and wrongly typed values: the message names the line.
    #[error("invalid rule file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A part that makes the whole file unusable (gitleaks refuses it too).
    #[error("invalid rule file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

// ---- The format, as gitleaks reads it ------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFile {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    extend: Option<RawExtend>,
    #[serde(default)]
    rules: Vec<RawRule>,
    /// The older single global allowlist.
    #[serde(default)]
    allowlist: Option<RawAllowlist>,
    #[serde(default)]
    allowlists: Vec<RawAllowlist>,
    /// Keys gitleaks does not know either: reported, not fatal.
    #[serde(flatten)]
    other: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawExtend {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    use_default: bool,
    #[serde(default)]
    disabled_rules: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRule {
    #[serde(default)]
    id: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    secret_group: usize,
    #[serde(default)]
    entropy: f64,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "read so a file with tags parses; tags change nothing"
    )]
    tags: Vec<String>,
    #[serde(default)]
    allowlist: Option<RawAllowlist>,
    #[serde(default)]
    allowlists: Vec<RawAllowlist>,
    #[serde(default)]
    required: Vec<toml::Value>,
    #[serde(default)]
    skip_report: bool,
    #[serde(flatten)]
    other: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAllowlist {
    #[serde(default)]
    #[expect(dead_code, reason = "read so a described allowlist parses")]
    description: String,
    #[serde(default)]
    condition: String,
    #[serde(default)]
    commits: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    regex_target: String,
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    /// Global allowlists only: the rules it applies to (all when empty).
    #[serde(default)]
    target_rules: Vec<String>,
}

// ---- Compiled ------------------------------------------------------------------------

/// What an allowlist's regexes are matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Secret,
    Match,
    Line,
}

pub(super) struct Allowlist {
    pub target: Target,
    /// All of its checks must hold (`condition = "AND"`), rather than one.
    pub and: bool,
    /// `AND` with `paths` or `commits`: those never hold on a stream.
    pub never: bool,
    pub regexes: Option<meta::Regex>,
    /// Lower-case; matched against the lower-cased secret.
    pub stopwords: Option<aho_corasick::AhoCorasick>,
}

impl Allowlist {
    /// Whether a finding is allowed (not redacted).
    pub fn allows(&self, secret: &[u8], matched: &[u8], line: &[u8]) -> bool {
        if self.never {
            return false;
        }
        let target = match self.target {
            Target::Secret => secret,
            Target::Match => matched,
            Target::Line => line,
        };
        // gitleaks: an empty target or secret allows nothing.
        let regex = self
            .regexes
            .as_ref()
            .map(|r| !target.is_empty() && r.is_match(target));
        let stop = self
            .stopwords
            .as_ref()
            .map(|s| !secret.is_empty() && s.is_match(secret));
        if self.and {
            regex.unwrap_or(true) && stop.unwrap_or(true)
        } else {
            regex.unwrap_or(false) || stop.unwrap_or(false)
        }
    }
}

/// A rule hb runs.
pub(super) struct LoadedRule {
    /// The `<family>` in `[REDACTED:<family>]` (leaked once per load: rule sets live as
    /// long as the process, and redactions name families as `&'static str`).
    pub name: &'static str,
    pub id: String,
    pub description: String,
    pub regex: meta::Regex,
    pub secret_group: usize,
    pub entropy: f64,
    /// Lower-case.
    pub keywords: Vec<String>,
    /// Longest match the window allows for.
    pub window: usize,
    /// Every match starts with one of its keywords: the regex runs anchored at each
    /// keyword hit (a near miss fails in a few bytes) instead of over a region.
    pub anchored: bool,
    /// For anchored rules: the regex as a lazy DFA, to learn how far a search reads.
    pub walker: Option<LazyWalker>,
    /// For the others: the regex split where literals start (its regions are searched
    /// from those literals' hits), if it can be.
    pub inner: Option<Inner>,
    pub allowlists: Vec<Allowlist>,
    /// Index of its file's global allowlists in [`RuleSet::globals`].
    pub file: usize,
}

/// One rule as `--check-rules` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    pub id: String,
    /// The redaction name (the id, or `rule-<id>` for an id without `-`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub runnable: bool,
    /// Why it cannot run, or what differs from gitleaks when it does.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Bytes searched on each side of a keyword hit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
    /// Every match starts with a keyword: the regex runs anchored at each hit (cheap)
    /// rather than over the region around it.
    pub anchored: bool,
}

/// The outcome of reading one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: PathBuf,
    pub rules: Vec<RuleReport>,
    /// File-level notes (`[extend]`, unknown keys).
    pub notes: Vec<String>,
}

impl FileReport {
    pub fn runnable(&self) -> usize {
        self.rules.iter().filter(|r| r.runnable).count()
    }

    /// The rules it cannot run.
    pub fn unrunnable(&self) -> impl Iterator<Item = &RuleReport> {
        self.rules.iter().filter(|r| !r.runnable)
    }
}

/// Compiled rule files, ready for `loaded`.
pub(super) struct Compiled {
    pub rules: Vec<LoadedRule>,
    /// Per file: its global allowlists (those without `targetRules`).
    pub globals: Vec<Vec<Allowlist>>,
    pub reports: Vec<FileReport>,
}

/// Reads and compiles rule files (in order; a rule's name may repeat across files).
pub(super) fn compile_files(paths: &[PathBuf]) -> Result<Compiled, (usize, RulesError)> {
    let mut compiled = Compiled {
        rules: Vec::new(),
        globals: Vec::new(),
        reports: Vec::new(),
    };
    for (i, path) in paths.iter().enumerate() {
        let text = std::fs::read_to_string(path).map_err(|source| {
            (
                i,
                RulesError::Read {
                    path: path.clone(),
                    source,
                },
            )
        })?;
        compile_text(&text, path, &mut compiled).map_err(|e| (i, e))?;
    }
    Ok(compiled)
}

/// Reads one file for `--check-rules`: what runs and why the rest does not.
pub fn check_file(path: &Path) -> Result<FileReport, RulesError> {
    let mut c = compile_files(&[path.to_owned()]).map_err(|(_, e)| e)?;
    Ok(c.reports.remove(0))
}

/// Compiles the rules of one file's text into `out`.
pub(super) fn compile_text(text: &str, path: &Path, out: &mut Compiled) -> Result<(), RulesError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| RulesError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let invalid = |message: String| RulesError::Invalid {
        path: path.to_owned(),
        message,
    };
    let _ = (&raw.title, &raw.description, &raw.min_version);
    let mut notes: Vec<String> = raw
        .other
        .keys()
        .map(|k| format!("unknown top-level key `{k}` ignored"))
        .collect();
    if let Some(e) = &raw.extend {
        let what = match (&e.path, &e.url, e.use_default) {
            (Some(p), _, _) => format!("path {p:?}"),
            (_, Some(u), _) => format!("url {u:?}"),
            (_, _, true) => "gitleaks's built-in default".to_owned(),
            _ => "nothing".to_owned(),
        };
        notes.push(format!(
            "[extend] ({what}{}) is not followed: list the extended file in rules_files (or --rules) as well",
            if e.disabled_rules.is_empty() {
                String::new()
            } else {
                format!(", disabledRules {:?}", e.disabled_rules)
            }
        ));
    }
    if raw.allowlist.is_some() && !raw.allowlists.is_empty() {
        return Err(invalid(
            "[allowlist] cannot be used alongside [[allowlists]]".into(),
        ));
    }
    let file = out.globals.len();
    let mut globals = Vec::new();
    let mut targeted: BTreeMap<String, Vec<Allowlist>> = BTreeMap::new();
    for a in raw.allowlist.iter().chain(&raw.allowlists) {
        let compiled = compile_allowlist(a).map_err(|m| invalid(format!("[[allowlists]] {m}")))?;
        if a.target_rules.is_empty() {
            globals.push(compiled);
        } else {
            for id in &a.target_rules {
                if !raw.rules.iter().any(|r| &r.id == id) {
                    return Err(invalid(format!(
                        "[[allowlists]] target rule {id:?} does not exist"
                    )));
                }
            }
            // One compiled copy per target rule (allowlists are small).
            for id in &a.target_rules {
                let again =
                    compile_allowlist(a).map_err(|m| invalid(format!("[[allowlists]] {m}")))?;
                targeted.entry(id.clone()).or_default().push(again);
            }
            drop(compiled);
        }
    }
    // gitleaks keeps the last rule of an id.
    let mut last: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, r) in raw.rules.iter().enumerate() {
        last.insert(r.id.as_str(), i);
    }
    let mut reports = Vec::new();
    for (i, r) in raw.rules.iter().enumerate() {
        if last.get(r.id.as_str()) != Some(&i) {
            reports.push(RuleReport {
                id: r.id.clone(),
                name: None,
                runnable: false,
                notes: vec!["a later rule has the same id and replaces it (as in gitleaks)".into()],
                window: None,
                anchored: false,
            });
            continue;
        }
        let extra = targeted.remove(&r.id).unwrap_or_default();
        match compile_rule(r, file, extra) {
            Ok((rule, notes)) => {
                reports.push(RuleReport {
                    id: r.id.clone(),
                    name: Some(rule.name.to_owned()),
                    runnable: true,
                    notes,
                    window: Some(rule.window),
                    anchored: rule.anchored,
                });
                out.rules.push(rule);
            }
            Err(reason) => reports.push(RuleReport {
                id: r.id.clone(),
                name: None,
                runnable: false,
                notes: vec![reason],
                window: None,
                anchored: false,
            }),
        }
    }
    out.globals.push(globals);
    out.reports.push(FileReport {
        path: path.to_owned(),
        rules: reports,
        notes,
    });
    Ok(())
}

/// The redaction name of a rule id, or why the id is refused. Built-in families and live
/// labels are snake_case without `-`; an id with a `-` cannot be one, and one without
/// (`jwt`) is named `rule-<id>` so it cannot pass for one either.
pub fn rule_name(id: &str) -> Result<String, String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if !ok {
        return Err(format!(
            "id {id:?} is not a kebab- or snake-case name (a-z, 0-9, - and _, starting with a letter or digit, 1 to {MAX_ID_LEN} characters)"
        ));
    }
    Ok(if id.contains('-') {
        id.to_owned()
    } else {
        format!("rule-{id}")
    })
}

/// A rule hb can run, with notes on how it differs from gitleaks, or why it cannot run.
fn compile_rule(
    r: &RawRule,
    file: usize,
    targeted: Vec<Allowlist>,
) -> Result<(LoadedRule, Vec<String>), String> {
    let name = rule_name(&r.id)?;
    let mut notes: Vec<String> = r
        .other
        .keys()
        .map(|k| format!("unknown key `{k}` ignored"))
        .collect();
    let Some(pattern) = &r.regex else {
        return Err(if r.path.is_some() {
            "path-only rule: it matches file names, and a stream has none".into()
        } else {
            "no regex and no path: the rule matches nothing".into()
        });
    };
    if r.keywords.is_empty() {
        return Err(
            "no keywords: hb runs a rule's regex only in a window at a keyword hit, never over the whole input"
                .into(),
        );
    }
    if r.keywords.iter().any(|k| k.is_empty()) {
        return Err("an empty keyword".into());
    }
    if r.path.is_some() {
        notes.push(
            "its path condition is ignored (a stream has no path): the regex runs on all input"
                .into(),
        );
    }
    if !r.required.is_empty() {
        notes.push("required rules are not checked: the rule redacts on its own".into());
    }
    if r.skip_report {
        notes.push("skipReport is ignored: its matches are redacted".into());
    }
    let (regex, hir) = compile_regex(pattern)?;
    let groups = regex
        .group_info()
        .group_len(regex_automata::PatternID::ZERO)
        - 1;
    if r.secret_group > groups {
        return Err(format!(
            "secretGroup {} but the regex has {groups} group(s)",
            r.secret_group
        ));
    }
    if !(r.entropy.is_finite() && r.entropy >= 0.0) {
        return Err(format!("entropy {} is not a number ≥ 0", r.entropy));
    }
    let longest = max_len(&hir);
    let spelled = pattern.to_lowercase();
    let near = r
        .keywords
        .iter()
        .any(|k| !spelled.contains(&k.to_lowercase()));
    let window = if near {
        longest.max(NEAR_KEYWORD)
    } else {
        longest
    }
    .min(MAX_WINDOW);
    if hir.properties().maximum_len().is_none() {
        notes.push(format!(
            "unbounded repetition: matches are found within {window} bytes of a keyword (longer ones are cut)"
        ));
    } else if longest > MAX_WINDOW {
        notes.push(format!("window capped at {MAX_WINDOW} bytes"));
    }
    let mut allowlists = Vec::new();
    for a in r.allowlist.iter().chain(&r.allowlists) {
        allowlists.push(compile_allowlist(a).map_err(|m| format!("allowlist: {m}"))?);
    }
    if r.allowlist.is_some() && !r.allowlists.is_empty() {
        return Err("[rules.allowlist] cannot be used alongside [[rules.allowlists]]".into());
    }
    allowlists.extend(targeted);
    if allowlists.iter().any(|a| a.never) {
        notes.push(
            "an AND allowlist with paths or commits never holds on a stream (those checks cannot pass)"
                .into(),
        );
    }
    let anchored = starts_with_keyword(&hir, &r.keywords);
    let rule = LoadedRule {
        walker: if anchored {
            LazyWalker::from_hir(&hir)
        } else {
            None
        },
        inner: if anchored { None } else { Inner::new(&hir) },
        name: Box::leak(name.into_boxed_str()),
        id: r.id.clone(),
        description: r.description.clone(),
        regex,
        secret_group: r.secret_group,
        entropy: r.entropy,
        keywords: r.keywords.iter().map(|k| k.to_lowercase()).collect(),
        window,
        anchored,
        allowlists,
        file,
    };
    Ok((rule, notes))
}

/// The regex as hb runs it: RE2 syntax, ASCII classes, any bytes. A pattern that needs
/// Unicode (`\pL`, non-ASCII literals) is compiled with Unicode classes instead.
pub(super) fn compile_regex(pattern: &str) -> Result<(meta::Regex, Hir), String> {
    let pattern = &from_go(pattern);
    let build = |unicode: bool| {
        let syn = syntax::Config::new().unicode(unicode).utf8(false);
        let hir = syntax::parse_with(pattern, &syn).map_err(|e| e.to_string())?;
        let regex = meta::Builder::new()
            .syntax(syn)
            .configure(meta::Config::new().utf8_empty(false))
            .build(pattern)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((regex, hir))
    };
    build(false).or_else(|ascii| {
        build(true).map_err(|_| {
            if ascii.contains("look-around") {
                format!("the regex uses look-around, which RE2 and hb do not run: {ascii}")
            } else {
                format!("the regex does not compile: {}", one_line(&ascii))
            }
        })
    })
}

/// Go's RE2 syntax as the `regex` crate reads it. They differ where Go is lenient:
/// a `{` that does not start a repetition (`{\d+}`) is a literal in Go and an error here,
/// and inside a class a `[` that does not open `[:name:]`, and doubled `&`, `-` or `~`
/// (set operations here), are literals in Go. Those are escaped; the rest is copied.
pub(super) fn from_go(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    let mut class_depth = 0usize;
    // Inside a class: whether the next char is its first (where `]` is a literal).
    let mut class_start = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            out.push(c);
            if let Some(&n) = chars.get(i + 1) {
                out.push(n);
            }
            i += 2;
            class_start = false;
            continue;
        }
        if class_depth > 0 {
            let first = class_start;
            class_start = false;
            match c {
                '^' if first => {
                    out.push(c);
                    class_start = true;
                }
                ']' if first => out.push_str("\\]"),
                ']' => {
                    out.push(c);
                    class_depth -= 1;
                }
                '[' if chars.get(i + 1) == Some(&':') => {
                    // `[:alpha:]`: copied up to its closing `:]`.
                    let rest: String = chars[i..].iter().collect();
                    match rest.find(":]") {
                        Some(n) => {
                            out.push_str(&rest[..n + 2]);
                            i += rest[..n + 2].chars().count();
                            continue;
                        }
                        None => out.push_str("\\["),
                    }
                }
                '[' => out.push_str("\\["),
                '&' | '-' | '~' if chars.get(i + 1) == Some(&c) => {
                    out.push('\\');
                    out.push(c);
                }
                _ => out.push(c),
            }
            i += 1;
            continue;
        }
        match c {
            '[' => {
                class_depth = 1;
                class_start = true;
                out.push(c);
            }
            '{' if !is_repetition(&chars[i..]) => out.push_str("\\{"),
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// `{n}`, `{n,}` or `{n,m}` at the start of `rest`.
fn is_repetition(rest: &[char]) -> bool {
    let body: String = rest.iter().skip(1).take_while(|&&c| c != '}').collect();
    if rest.len() < body.chars().count() + 2 {
        return false;
    }
    let mut parts = body.splitn(2, ',');
    let min = parts.next().unwrap_or_default();
    let max = parts.next();
    !min.is_empty()
        && min.bytes().all(|b| b.is_ascii_digit())
        && max.is_none_or(|m| m.bytes().all(|b| b.is_ascii_digit()))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn compile_allowlist(a: &RawAllowlist) -> Result<Allowlist, String> {
    let and = match a.condition.to_ascii_uppercase().as_str() {
        "AND" | "&&" => true,
        "" | "OR" | "||" => false,
        other => return Err(format!("unknown condition {other:?} (expected AND or OR)")),
    };
    let target = match a.regex_target.as_str() {
        "" | "secret" => Target::Secret,
        "match" => Target::Match,
        "line" => Target::Line,
        other => {
            return Err(format!(
                "unknown regexTarget {other:?} (expected secret, match or line)"
            ));
        }
    };
    if a.commits.is_empty() && a.paths.is_empty() && a.regexes.is_empty() && a.stopwords.is_empty()
    {
        return Err("must contain at least one check: commits, paths, regexes or stopwords".into());
    }
    let regexes = if a.regexes.is_empty() {
        None
    } else {
        let syn = syntax::Config::new().unicode(false).utf8(false);
        let patterns: Vec<String> = a.regexes.iter().map(|r| from_go(r)).collect();
        let r = meta::Builder::new()
            .syntax(syn)
            .configure(meta::Config::new().utf8_empty(false))
            .build_many(&patterns)
            .or_else(|_| {
                meta::Builder::new()
                    .syntax(syn.unicode(true))
                    .configure(meta::Config::new().utf8_empty(false))
                    .build_many(&patterns)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| format!("a regex does not compile: {}", one_line(&e)))?;
        Some(r)
    };
    let stopwords = if a.stopwords.is_empty() {
        None
    } else {
        let words: Vec<String> = a.stopwords.iter().map(|w| w.to_lowercase()).collect();
        Some(
            aho_corasick::AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(&words)
                .map_err(|e| format!("stopwords: {e}"))?,
        )
    };
    let never = and && (!a.paths.is_empty() || !a.commits.is_empty());
    Ok(Allowlist {
        target,
        and,
        never,
        regexes,
        stopwords,
    })
}

/// The longest match of `hir` in bytes, a repetition without upper bound counting as
/// `OPEN_REPEAT` more (saturating).
pub(super) fn max_len(hir: &Hir) -> usize {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => 0,
        HirKind::Literal(l) => l.0.len(),
        HirKind::Class(c) => c.maximum_len().unwrap_or(4),
        HirKind::Capture(c) => max_len(&c.sub),
        HirKind::Repetition(r) => {
            let times = match r.max {
                Some(m) => m as usize,
                None => (r.min as usize).saturating_add(OPEN_REPEAT),
            };
            max_len(&r.sub).saturating_mul(times)
        }
        HirKind::Concat(parts) => parts.iter().map(max_len).fold(0, usize::saturating_add),
        HirKind::Alternation(parts) => parts.iter().map(max_len).max().unwrap_or(0),
    }
}

/// Whether every match of `hir` starts with one of `keywords` (case-insensitively): each
/// literal a match can start with, as regex-syntax extracts them, begins with a keyword.
/// Unprovable (no finite prefix set, or prefixes cut shorter than a keyword) is false.
fn starts_with_keyword(hir: &Hir, keywords: &[String]) -> bool {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(hir);
    let Some(literals) = seq.literals() else {
        return false;
    };
    !literals.is_empty()
        && literals.iter().all(|l| {
            let l = l.as_bytes().to_ascii_lowercase();
            keywords
                .iter()
                .any(|k| l.starts_with(k.to_lowercase().as_bytes()))
        })
}

/// Shannon entropy of `s` in bits, as gitleaks computes it: over characters (an invalid
/// UTF-8 byte counts as U+FFFD), divided by the length in bytes.
pub(super) fn gitleaks_entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let inv = 1.0 / s.len() as f64;
    if s.is_ascii() {
        // The same counts summed in the same (character) order as below, without a map.
        let mut counts = [0u32; 128];
        for &b in s {
            counts[usize::from(b)] += 1;
        }
        return counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let f = f64::from(c) * inv;
                -f * f.log2()
            })
            .sum();
    }
    let mut counts: BTreeMap<char, u32> = BTreeMap::new();
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            *counts.entry(c).or_default() += 1;
        }
        for _ in chunk.invalid() {
            *counts.entry(char::REPLACEMENT_CHARACTER).or_default() += 1;
        }
    }
    counts
        .values()
        .map(|&c| {
            let f = f64::from(c) * inv;
            -f * f.log2()
        })
        .sum()
}
