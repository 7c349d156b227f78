//! The sanitizer: the hermetic barrier for untrusted text (tool results, fetched pages,
//! emails, tickets) on its way into a model's context.
//!
//! Owns: cleaning such text and reporting what in it looks like an attempt to instruct
//! the model. Must never: execute, fetch or resolve anything it finds; keep state between
//! calls; panic on any input.
//!
//! The pipeline, one call, each step reporting [`Finding`]s with a span in the text it
//! returns:
//! 1. **Normalise** (`clean`): Unicode NFKC (an ASCII fast path; non-ASCII runs only).
//! 2. **Remove** (`clean`): C0/C1 controls except `\n`, `\r`, `\t`; zero-width and other
//!    invisible format characters; bidi embeddings, overrides and isolates; runs of
//!    variation selectors (one after a visible character is kept: emoji and CJK use it);
//!    Unicode tag characters. Hidden text carried by tag characters or variation-selector
//!    runs ("ASCII smuggling") is decoded, reported and checked by step 3.
//! 3. **Detect** (`view`, `rules`): the text is folded into a *detection view* —
//!    compatibility decomposition, accents dropped, Cyrillic/Greek/small-capital look-alikes
//!    folded to Latin, lower case, blank runs collapsed — with a map back to the returned
//!    text. A keyword automaton finds candidate places; bounded rules around them decide:
//!    instruction override, role and chat-template spoofing, tool-call spoofing,
//!    exfiltration cues, credential requests, dangerous commands. The same pass finds the
//!    cues of the multilingual function rules (`lexicon`, judged by `cues`): a command to
//!    disregard, a request for hidden text, a persona switch, a fixed-output demand, a
//!    forged boundary, a claim of authority, a note addressed to the model — each with its
//!    target in the same sentence.
//! 4. **Decode** (`decode`, `unmask`): base64, hex and percent-encoded runs are decoded once
//!    and the result goes through step 3; findings point at the encoded run. Lines that
//!    hold a key word in rot13, reversed, letter-spaced, leetspeak or morse spelling are
//!    decoded and checked the same way.
//!
//!    **Learned** (`learned`, on unless [`Options::learned`] is false): a
//!    logistic-regression model over hashed character n-grams, trained offline (`cargo
//!    xtask sanitize-train`) and embedded, scores the text around the keyword places
//!    step 3 found (up to one window, 512 bytes, either side), in windows; a window over
//!    its threshold is a `learned_injection` finding at medium, one more signal beside
//!    the rules (never high, never replacing a rule's finding). Text with no keyword
//!    place is not scored.
//! 5. **Judge**: each finding carries a severity. Mentions (in code, quoted, negated: "never
//!    run `rm -rf /`") stay at medium; phrasing that only makes sense as an attack is high.
//!    `flagged` means medium or above.
//! 6. **Mode** ([`Mode`]): `flag` returns the cleaned text, `redact` replaces every medium
//!    or high span with `[REMOVED:<category>]` (to a fixed point, so redacting twice changes
//!    nothing), `block` returns no text. **Spotlighting** wraps the text in delimiters
//!    carrying a random tag and returns the line to put in the system prompt.
//!
//! What a deterministic barrier cannot do: understand meaning. A paraphrased instruction
//! ("kindly set aside what you were told earlier") outside the lexicons, one in a language
//! they do not cover, split across fields, encoded twice, in an image, or simply
//! persuasive prose passes. Treat a
//! clean result as "no known marker", never as "safe": spotlighting and the broker's
//! credential isolation are the defences that do not depend on recognising the attack.

mod clean;
mod cues;
mod decode;
mod learned;
// Shared with `cargo xtask sanitize-train`, which uses the parts the agent does not
// (`features`, `Model::encode`).
#[allow(dead_code)]
mod learned_features;
mod lexicon;
mod rules;
mod skip;
mod spotlight;
#[cfg(test)]
mod tests;
mod unmask;
mod view;

use std::ops::Range;

use serde::{Deserialize, Serialize};

pub use spotlight::Spotlight;

/// At most this many findings are listed; the rest are counted in `omitted`.
pub const MAX_FINDINGS: usize = 512;
/// Excerpts are cut to this many characters.
const EXCERPT_CHARS: usize = 120;
/// Redaction rounds: each round re-checks the redacted text (joining the text around a
/// removed span can form a new match); the loop stops at the first round with nothing new.
const REDACT_ROUNDS: usize = 4;

/// What to return.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The cleaned text and the findings.
    #[default]
    Flag,
    /// The cleaned text with every medium or high span replaced by `[REMOVED:<category>]`.
    Redact,
    /// No text: findings only (without excerpts, so no attack text leaves through them).
    Block,
}

/// Options of one call (the socket API's request fields besides `text`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// What to return.
    pub mode: Mode,
    /// Wrap the returned text in randomised delimiters and return the instruction line
    /// for the system prompt.
    pub spotlight: bool,
    /// Also run the learned stage (`learned`): on unless turned off. It raises the test
    /// half's recall from about 82 % to about 96 % for no new benign flag there, and
    /// adds about a fifth to a call's instructions.
    pub learned: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::default(),
            spotlight: false,
            learned: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Informational: removed invisible characters, weak cues.
    Low,
    /// Suspicious, or an attack pattern merely mentioned (in code, quoted, negated).
    Medium,
    /// Phrasing or characters that only make sense as an attack.
    High,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Control, zero-width, bidi or variation-selector characters were removed.
    Invisible,
    /// Text hidden in tag characters or variation selectors.
    AsciiSmuggling,
    /// "Ignore previous instructions", "you are now DAN", "reveal your system prompt".
    InstructionOverride,
    /// Role labels and chat-template tokens: `system:`, `<|im_start|>`, `[INST]`, `</system>`.
    RoleSpoofing,
    /// JSON or XML imitating a tool call.
    ToolCallSpoofing,
    /// Data carried out through URLs: markdown images, "send … to https://…", curl -d.
    Exfiltration,
    /// Asking for keys, tokens, passwords or environment variables.
    CredentialRequest,
    /// `rm -rf /`, `curl … | sh`, reverse shells, `base64 -d | sh`, `chmod 777`.
    DangerousCommand,
    /// The learned stage (`learned`): a window the n-gram model scores as injection-like.
    /// Medium only, beside the rules' findings.
    LearnedInjection,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Invisible => "invisible",
            Category::AsciiSmuggling => "ascii_smuggling",
            Category::InstructionOverride => "instruction_override",
            Category::RoleSpoofing => "role_spoofing",
            Category::ToolCallSpoofing => "tool_call_spoofing",
            Category::Exfiltration => "exfiltration",
            Category::CredentialRequest => "credential_request",
            Category::DangerousCommand => "dangerous_command",
            Category::LearnedInjection => "learned_injection",
        }
    }
}

/// Where hidden text was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Base64,
    Hex,
    Url,
    TagCharacters,
    VariationSelectors,
    Rot13,
    Reversed,
    /// `i g n o r e`, `i.g.n.o.r.e`.
    LetterSpaced,
    /// `1gn0r3`.
    Leetspeak,
    Morse,
    /// `\u0438\u0433…`: JSON or source escapes of whole words.
    UnicodeEscape,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub category: Category,
    pub severity: Severity,
    /// The rule that matched (stable identifiers, e.g. `ignore_previous`, `zero_width`).
    pub rule: &'static str,
    /// Byte range `[start, end)` in the returned text (in `block` mode: in the text that
    /// `flag` would return). Removed characters have an empty span where they were; a
    /// finding in decoded text spans the encoded run.
    pub span: [usize; 2],
    /// The matched text (decoded text for hidden or encoded findings; the removed code
    /// points for invisible ones), cut to 120 characters. Absent in `block` mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
    /// Set when the finding is in hidden or encoded text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoded_from: Option<Encoding>,
}

impl Finding {
    pub fn range(&self) -> Range<usize> {
        self.span[0]..self.span[1]
    }
}

/// The result of one call; serialises as the socket API's response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sanitized {
    /// The cleaned text (`None` in `block` mode, or when spotlighting could not draw
    /// random delimiters: the text is then withheld rather than sent unmarked).
    pub text: Option<String>,
    /// At least one finding of medium or high severity.
    pub flagged: bool,
    /// The highest severity among the findings.
    pub severity: Option<Severity>,
    pub findings: Vec<Finding>,
    /// Findings beyond [`MAX_FINDINGS`], not listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub omitted: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spotlight: Option<Spotlight>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SanitizeError {
    #[error("input is not valid UTF-8: invalid byte sequence at byte offset {offset}")]
    InvalidUtf8 { offset: usize },
}

/// Sanitizes bytes that should be UTF-8 text; anything else is refused with the offset
/// of the first invalid byte.
pub fn sanitize_bytes(bytes: &[u8], opts: &Options) -> Result<Sanitized, SanitizeError> {
    let text = std::str::from_utf8(bytes).map_err(|e| SanitizeError::InvalidUtf8 {
        offset: e.valid_up_to(),
    })?;
    Ok(sanitize(text, opts))
}

/// Runs the pipeline described in the module header on `text`.
pub fn sanitize(text: &str, opts: &Options) -> Sanitized {
    let cleaned = clean::clean(text);
    let mut findings = clean::findings(&cleaned, detect);
    let mut out = cleaned.text;
    // A long text's findings are mostly cut at the cap (block mode shows no excerpts at
    // all), so the text's own findings get theirs after the cut, from the text they
    // point into. Redaction rewrites that text: it needs them first.
    let excerpts = match opts.mode {
        Mode::Flag => Excerpts::AfterCut,
        Mode::Block => Excerpts::None,
        Mode::Redact => Excerpts::Now,
    };
    findings.extend(detect_with(&out, excerpts, opts.learned));
    if opts.mode == Mode::Redact {
        out = redact(out, &mut findings, opts.learned);
    }
    findings.sort_by(|a, b| {
        (a.span[0], b.severity, a.span[1], a.rule).cmp(&(b.span[0], a.severity, b.span[1], b.rule))
    });
    findings.dedup();
    let severity = findings.iter().map(|f| f.severity).max();
    let omitted = findings.len().saturating_sub(MAX_FINDINGS);
    if omitted > 0 {
        // Keep the most severe ones when cutting.
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        findings.truncate(MAX_FINDINGS);
        findings.sort_by_key(|f| (f.span[0], f.span[1]));
    }
    if excerpts == Excerpts::AfterCut {
        for f in findings.iter_mut().filter(|f| f.excerpt.is_none()) {
            f.excerpt = Some(excerpt(&out[f.range()]));
        }
    }
    let mut result = Sanitized {
        text: None,
        flagged: severity >= Some(Severity::Medium),
        severity,
        findings,
        omitted,
        spotlight: None,
    };
    match opts.mode {
        Mode::Block => {
            for f in &mut result.findings {
                f.excerpt = None;
            }
        }
        Mode::Flag | Mode::Redact if opts.spotlight => {
            if let Some((wrapped, spot)) = spotlight::wrap(&out) {
                let shift = spot.begin.len() + 1;
                for f in &mut result.findings {
                    f.span = [f.span[0] + shift, f.span[1] + shift];
                }
                result.text = Some(wrapped);
                result.spotlight = Some(spot);
            }
        }
        Mode::Flag | Mode::Redact => result.text = Some(out),
    }
    result
}

/// How long each step takes on `text`, for `__bench-sanitize --phases`: the steps run
/// one by one, as [`sanitize`] runs them (a step that includes another is named so).
#[doc(hidden)]
pub fn phase_times(text: &str) -> Vec<(&'static str, std::time::Duration)> {
    let mut times = Vec::new();
    let mut time = |name: &'static str, f: &mut dyn FnMut()| {
        let start = std::time::Instant::now();
        f();
        times.push((name, start.elapsed()));
    };
    time("normalise (nfkc)", &mut || {
        std::hint::black_box(clean::nfkc(text));
    });
    let mut cleaned = None;
    time("clean (nfkc + removal)", &mut || {
        cleaned = Some(clean::clean(text))
    });
    let out = cleaned.map(|c| c.text).unwrap_or_default();
    let mut view = None;
    time("view", &mut || view = Some(view::View::build(&out)));
    let view = view.expect("built");
    time("keywords", &mut || {
        std::hint::black_box(rules::ENGINE.keyword_places(view.bytes()));
    });
    let mut hits = Vec::new();
    time("rules (keywords + patterns + judges)", &mut || {
        hits = rules::ENGINE.scan(view.bytes());
    });
    time("map back", &mut || {
        hits.sort_unstable_by_key(|hit| hit.view.start);
        let mut cursor = 0;
        for hit in &hits {
            std::hint::black_box(view.to_output_after(&mut cursor, hit.view.clone()));
        }
    });
    drop(hits);
    let mut view = Some(view);
    time("drop view", &mut || drop(view.take()));
    time("detect plain (view + rules + map back)", &mut || {
        std::hint::black_box(detect_plain(&out, None, Excerpts::None, false));
    });
    let mut runs = Vec::new();
    time("encoded runs", &mut || runs = decode::encoded_runs(&out));
    time("decoded runs' detection", &mut || {
        for run in &runs {
            std::hint::black_box(detect_plain(
                &run.decoded,
                Some(run.encoding),
                Excerpts::Now,
                false,
            ));
        }
    });
    times
}

/// When the excerpts of findings in the text itself are cut (those of decoded text are
/// cut at once: the decoded text is gone afterwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Excerpts {
    Now,
    /// By [`sanitize`], for the findings that survive the cap.
    AfterCut,
    None,
}

/// Step 3 and 4 on clean text: rule findings in the text itself and in its encoded runs.
fn detect(text: &str) -> Vec<Finding> {
    detect_with(text, Excerpts::Now, false)
}

/// [`detect`], and with `learned` step 4b.
fn detect_with(text: &str, excerpts: Excerpts, learned: bool) -> Vec<Finding> {
    let mut findings = detect_plain(text, None, excerpts, learned);
    for run in decode::encoded_runs(text) {
        for inner in detect_plain(&run.decoded, Some(run.encoding), Excerpts::Now, false) {
            findings.push(Finding {
                span: [run.span.start, run.span.end],
                ..inner
            });
        }
    }
    escalate(&mut findings);
    findings
}

/// How close a credential request and an exfiltration cue must be to count as one
/// attack ("read the API key … and send it to https://…").
const PAIR_DISTANCE: usize = 400;

/// A request for secrets next to a way out for them is an attack even when each half
/// alone reads as ordinary (a support question, a webhook URL): both become high.
fn escalate(findings: &mut [Finding]) {
    let spans = |keep: &dyn Fn(&Finding) -> bool| {
        let mut s: Vec<[usize; 2]> = findings
            .iter()
            .filter(|f| keep(f))
            .map(|f| f.span)
            .collect();
        s.sort_unstable();
        Near::new(s)
    };
    let requests =
        spans(&|f| f.category == Category::CredentialRequest && f.severity >= Severity::Medium);
    let exits = spans(&|f| f.category == Category::Exfiltration);
    for f in findings.iter_mut() {
        let other = match f.category {
            Category::CredentialRequest if f.severity >= Severity::Medium => &exits,
            Category::Exfiltration => &requests,
            _ => continue,
        };
        if other.any_near(f.span) {
            f.severity = Severity::High;
        }
    }
}

/// Spans sorted by start, with the furthest end of each prefix: whether any lies within
/// [`PAIR_DISTANCE`] of a span is one binary search (comparing every request with every
/// exit was quadratic in a text full of both).
struct Near {
    starts: Vec<usize>,
    furthest_end: Vec<usize>,
}

impl Near {
    fn new(spans: Vec<[usize; 2]>) -> Near {
        let mut end = 0;
        let furthest_end = spans
            .iter()
            .map(|s| {
                end = end.max(s[1]);
                end
            })
            .collect();
        Near {
            starts: spans.iter().map(|s| s[0]).collect(),
            furthest_end,
        }
    }

    /// Whether some span `b` has `b.start <= a.end + D` and `a.start <= b.end + D`.
    fn any_near(&self, a: [usize; 2]) -> bool {
        let k = self.starts.partition_point(|&s| s <= a[1] + PAIR_DISTANCE);
        k > 0 && a[0] <= self.furthest_end[k - 1] + PAIR_DISTANCE
    }
}

/// Step 3 alone, and the lines of `text` that hold a key word in a hidden spelling,
/// decoded and checked once (not again inside decoded text). Spans are in `text`; for
/// decoded text the caller moves them.
fn detect_plain(
    text: &str,
    decoded_from: Option<Encoding>,
    excerpts: Excerpts,
    learned: bool,
) -> Vec<Finding> {
    let view = view::View::build(text);
    let (mut hits, masked, marks) = rules::ENGINE.scan_marked(view.bytes());
    hits.sort_unstable_by_key(|hit| hit.view.start);
    let mut cursor = 0;
    let mut findings: Vec<Finding> = hits
        .into_iter()
        .map(|hit| {
            let span = view.to_output_after(&mut cursor, hit.view);
            Finding {
                category: hit.category,
                severity: hit.severity,
                rule: hit.rule,
                excerpt: (excerpts == Excerpts::Now).then(|| excerpt(&text[span.clone()])),
                span: [span.start, span.end],
                decoded_from,
            }
        })
        .collect();
    if decoded_from.is_none() && !masked.is_empty() {
        findings.extend(unmasked(text, &view, masked));
    }
    if learned && decoded_from.is_none() && !marks.is_empty() {
        findings.extend(learned_near(text, &view, marks, excerpts));
    }
    findings
}

/// The learned stage's findings in the stretches of `text` around the rules' and cues'
/// keyword places (`marks`, in the view): the model is too slow to read every byte at
/// the sanitizer's speed target, so it judges only text the keyword scan already marked.
fn learned_near(
    text: &str,
    view: &view::View,
    mut marks: Vec<usize>,
    excerpts: Excerpts,
) -> Vec<Finding> {
    // The keyword pass lists them by where each keyword ends: a few bytes out of order.
    rules::sort_nearly_sorted(&mut marks);
    marks.dedup();
    let mut cursor = 0;
    let places: Vec<usize> = marks
        .into_iter()
        .map(|p| view.to_output_start_after(&mut cursor, p))
        .collect();
    learned::findings_near(text, &places)
        .into_iter()
        .map(|f| Finding {
            excerpt: (excerpts == Excerpts::Now).then(|| excerpt(&text[f.range()])),
            ..f
        })
        .collect()
}

/// Findings in the lines that hold a hidden spelling of a key word: what the rules find
/// in the decoded line, or, when they find nothing, the key word itself (medium). Each
/// spans the line.
fn unmasked(text: &str, view: &view::View, mut masked: Vec<(usize, unmask::Mask)>) -> Vec<Finding> {
    masked.sort_unstable_by_key(|(p, _)| *p);
    let mut out = Vec::new();
    // Per spelling: the last line decoded, and the line of the last trigger skipped since
    // if it reaches past that one. A trigger on that line, or with half a line's reach
    // after it inside it, was read with it (decoding a line for each trigger of a long
    // line of them cost [`unmask::LINE_MAX`] bytes of the whole pipeline per trigger);
    // what its own line holds past the decoded one is read before the next line is, or
    // at the end, so no byte a trigger's line holds goes unread.
    let mut done: Vec<(unmask::Mask, Range<usize>, Option<Range<usize>>)> = Vec::new();
    let mut cursor = 0;
    for (p, mask) in masked {
        let at = view.to_output_after(&mut cursor, p..p + 1).start;
        let line = unmask::line_around(text.as_bytes(), at);
        let read_with =
            |l: &Range<usize>| *l == line || l.start <= at && at + unmask::LINE_MAX / 2 <= l.end;
        let Some((_, l, skipped)) = done.iter_mut().find(|(m, ..)| *m == mask) else {
            done.push((mask, line.clone(), None));
            out.extend(unmasked_line(text, mask, line));
            continue;
        };
        if !read_with(l)
            && let Some(s) = skipped.take()
        {
            *l = s.clone();
            out.extend(unmasked_line(text, mask, s));
        }
        if read_with(l) {
            if line.end > l.end {
                *skipped = Some(line);
            }
            continue;
        }
        *l = line.clone();
        out.extend(unmasked_line(text, mask, line));
    }
    for (mask, _, skipped) in done {
        if let Some(s) = skipped {
            out.extend(unmasked_line(text, mask, s));
        }
    }
    out
}

/// The findings of one line of `text` decoded as `mask` spells it (see [`unmasked`]).
fn unmasked_line(text: &str, mask: unmask::Mask, line: Range<usize>) -> Vec<Finding> {
    let Some(u) = unmask::decode(mask, text, line) else {
        return Vec::new();
    };
    let encoding = mask.encoding();
    let span = [u.line.start, u.line.end];
    let inner: Vec<Finding> = detect_plain(&u.decoded, Some(encoding), Excerpts::Now, false)
        .into_iter()
        .filter(|f| f.severity >= Severity::Medium)
        .collect();
    if !inner.is_empty() {
        return inner.into_iter().map(|f| Finding { span, ..f }).collect();
    }
    let foreign = matches!(mask, unmask::Mask::Reversed | unmask::Mask::Spaced)
        && unmask::holds_foreign_key_word(&u.decoded);
    if !(unmask::holds_key_word(&u.decoded) || foreign) {
        return Vec::new();
    }
    vec![Finding {
        category: Category::InstructionOverride,
        severity: Severity::Medium,
        rule: "obfuscated_keyword",
        span,
        excerpt: Some(excerpt(&u.decoded)),
        decoded_from: Some(encoding),
    }]
}

/// `s` cut to [`EXCERPT_CHARS`] characters.
fn excerpt(s: &str) -> String {
    if s.len() <= EXCERPT_CHARS {
        return s.to_owned();
    }
    match s.char_indices().nth(EXCERPT_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn redactable(f: &Finding) -> bool {
    f.severity >= Severity::Medium && f.span[0] < f.span[1]
}

/// Replaces the spans of medium and high findings with markers, re-checks, repeats until
/// nothing new appears; moves every finding's span onto the new text.
fn redact(mut text: String, findings: &mut Vec<Finding>, learned: bool) -> String {
    let mut targets: Vec<Finding> = findings.iter().filter(|f| redactable(f)).cloned().collect();
    for _ in 0..REDACT_ROUNDS {
        if targets.is_empty() {
            break;
        }
        let (new_text, edits) = apply_redactions(&text, &targets);
        for f in findings.iter_mut() {
            f.span = edits.map_span(f.span);
        }
        text = new_text;
        targets = detect_with(&text, Excerpts::Now, learned)
            .into_iter()
            .filter(redactable)
            .inspect(|f| findings.push(f.clone()))
            .collect();
    }
    text
}

/// Marker replacements made by one redaction round, in order, for moving offsets.
struct Edits(Vec<(Range<usize>, Range<usize>)>);

impl Edits {
    fn map_span(&self, [s, e]: [usize; 2]) -> [usize; 2] {
        if s == e {
            let p = self.map(s, false);
            return [p, p];
        }
        [self.map(s, false), self.map(e, true)]
    }

    /// Moves an old offset; one inside a replaced range goes to the marker's start (or
    /// its end, for the end of a span).
    fn map(&self, x: usize, is_end: bool) -> usize {
        // Edits that end before `x` only move it (by the last one's shift): skipped by a
        // binary search, since every finding's span is moved after every round (walking
        // them all was quadratic in a text full of findings).
        let first = self.0.partition_point(|(old, _)| old.end < x);
        let mut delta: isize = first.checked_sub(1).map_or(0, |i| {
            let (old, new) = &self.0[i];
            new.end as isize - old.end as isize
        });
        for (old, new) in &self.0[first..] {
            let inside = if is_end {
                x > old.start && x <= old.end
            } else {
                x >= old.start && x < old.end
            };
            if inside {
                return if is_end { new.end } else { new.start };
            }
            if old.end <= x {
                delta = new.end as isize - old.end as isize;
            } else {
                break;
            }
        }
        x.saturating_add_signed(delta)
    }
}

fn apply_redactions(text: &str, targets: &[Finding]) -> (String, Edits) {
    let mut spans: Vec<(Range<usize>, Severity, Category)> = targets
        .iter()
        .map(|f| (f.range(), f.severity, f.category))
        .collect();
    spans.sort_by_key(|(r, _, _)| (r.start, r.end));
    // Merge overlapping spans; the merged span is named after its most severe finding.
    let mut merged: Vec<(Range<usize>, Severity, Category)> = Vec::new();
    for (r, sev, cat) in spans {
        match merged.last_mut() {
            Some((m, msev, mcat)) if r.start < m.end => {
                m.end = m.end.max(r.end);
                if sev > *msev {
                    *msev = sev;
                    *mcat = cat;
                }
            }
            _ => merged.push((r, sev, cat)),
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut edits = Vec::with_capacity(merged.len());
    let mut last = 0;
    for (r, _, cat) in merged {
        out.push_str(&text[last..r.start]);
        let start = out.len();
        out.push_str("[REMOVED:");
        out.push_str(cat.as_str());
        out.push(']');
        edits.push((r.clone(), start..out.len()));
        last = r.end;
    }
    out.push_str(&text[last..]);
    (out, Edits(edits))
}
