//! The scrubber's work is linear in its input: inputs made of one keyword (or the start
//! of a token) repeated must not make rule evaluation re-read the same bytes once per
//! hit. Work is counted, not timed: bytes examined by rule evaluation (DFA walks, quick
//! checks, capture searches, span checks, loaded regexes' windows and regions).

use std::{collections::BTreeSet, sync::Arc};

use super::{
    families::RULES,
    loaded::RuleSet,
    tests::{Rng, assert_stream_equals_whole},
    *,
};

const GITLEAKS: &str = include_str!("testdata/gitleaks/gitleaks.toml");
const TOKENS: &str = include_str!("testdata/tokens.tsv");
const LEN: usize = 64 * 1024;
/// Bytes of evaluation work allowed per input byte, whatever the input: each rule reads
/// at most `ROW_BUDGET` (16) bytes per byte its rows span, and a keyword runs a few rules
/// (`sk-ant-` both Anthropic's and OpenAI's; with a rule file, loaded ones too). Before
/// rows were bounded, 64 KiB of `eyJ` took about 5,000.
const WORK_PER_BYTE: u64 = 128;

/// Every keyword and anchor of every built-in family, and the starts of each planted
/// token of the family from its keyword on (`xoxb-`, `key=`, `eyJhb`…): the units an
/// attacker repeats.
fn units() -> BTreeSet<String> {
    let mut units = BTreeSet::new();
    for rule in RULES {
        for k in rule.keywords {
            let text = k.replace('|', "");
            units.insert(text.clone());
            if let Some((_, anchor)) = k.split_once('|') {
                units.insert(anchor.to_string());
            }
            for line in TOKENS.lines().filter(|l| !l.starts_with('#')) {
                let Some(planted) = line.split('\t').nth(1) else {
                    continue;
                };
                if let Some(at) = planted.find(&text) {
                    let rest = &planted.as_bytes()[at..];
                    for n in text.len() + 1..=(text.len() + 6).min(rest.len()) {
                        units.insert(String::from_utf8_lossy(&rest[..n]).into_owned());
                    }
                }
            }
        }
    }
    units
}

fn repeated(unit: &str, len: usize) -> Vec<u8> {
    unit.as_bytes().iter().copied().cycle().take(len).collect()
}

/// Work per input byte of the whole-buffer scrub of `input`.
fn work(s: &Scrubber, input: &[u8]) -> u64 {
    let (_, work) = s.scrub_counting(input);
    work.div_ceil(input.len() as u64)
}

fn assert_linear(s: &Scrubber, units: &BTreeSet<String>) {
    let clean = work(
        s,
        tests::CLEAN
            .iter()
            .map(|(_, t)| *t)
            .collect::<String>()
            .as_bytes(),
    );
    let mut over: Vec<(u64, &str)> = units
        .iter()
        .map(|u| (work(s, &repeated(u, LEN)), u.as_str()))
        .filter(|(w, _)| *w > WORK_PER_BYTE)
        .collect();
    over.sort_unstable_by(|a, b| b.cmp(a));
    assert!(
        over.is_empty(),
        "{} of {} repeated units take more than {WORK_PER_BYTE} bytes of work per input \
         byte (clean text: {clean}); worst: {:?}",
        over.len(),
        units.len(),
        &over[..over.len().min(25)]
    );
}

#[test]
fn repeated_keywords_of_built_in_families_take_linear_work() {
    let units = units();
    assert!(units.len() > 200, "only {} units", units.len());
    assert_linear(&Scrubber::new(), &units);
}

#[test]
fn repeated_keywords_with_gitleaks_rules_loaded_take_linear_work() {
    let rules = Arc::new(RuleSet::from_text(GITLEAKS).expect("gitleaks.toml loads"));
    let mut units = units();
    // The loaded rules' keywords, and each followed by the separators tokens use.
    for info in rules.keywords() {
        for sep in ["", "-", "_", "=", ":"] {
            units.insert(format!("{info}{sep}"));
        }
    }
    assert_linear(&Scrubber::with_rules(rules), &units);
}

/// Runs of a repeated unit between clean text and real tokens, scrubbed whole and in
/// chunks that split the runs anywhere: the same output (rows of hits past their budget
/// are redacted whole, and where a row starts and ends must not depend on chunking).
#[test]
fn streaming_equals_whole_across_repeated_runs() {
    let units: Vec<String> = units().into_iter().collect();
    let tokens: Vec<&str> = TOKENS
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split('\t').nth(1))
        .collect();
    let rules = Arc::new(RuleSet::from_text(GITLEAKS).expect("gitleaks.toml loads"));
    let scrubbers = [Scrubber::new(), Scrubber::with_rules(rules)];
    let mut rng = Rng(0x51_7C_C1_B7_27_22_0A_95);
    for round in 0..24 {
        let mut input = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let clean = tests::CLEAN[rng.below(tests::CLEAN.len())].1.as_bytes();
            input.extend_from_slice(&clean[..clean.len().min(200)]);
            let unit = &units[rng.below(units.len())];
            let run = unit.len() * (40 + rng.below(400));
            input.extend(repeated(unit, run));
            if rng.below(2) == 0 {
                let token = tokens[rng.below(tokens.len())].replace("\\n", "\n");
                input.extend_from_slice(token.as_bytes());
            }
            input.push(b' ');
        }
        assert_stream_equals_whole(&scrubbers[round % 2], &input);
    }
}

/// A repeated unit is still scrubbed: once its row of hits has spent its budget, the
/// rest of the run is redacted, never passed through.
#[test]
fn a_run_past_the_row_budget_is_redacted_not_passed() {
    let s = Scrubber::new();
    for unit in ["eyJ", "fo1_", "ABSK", "xoxb-", "key="] {
        let input = repeated(unit, 4096);
        let out = s.scrub(&input);
        assert!(
            out.bytes.len() < 200,
            "{unit}: {} bytes of the run left",
            out.bytes.len()
        );
        assert!(!out.redactions.is_empty(), "{unit}: nothing redacted");
    }
}
