//! Loaded rule files: parsing and the reasons for rules hb cannot run, gitleaks's
//! semantics (secret group, entropy floor, allowlists by target, stop-words, the global
//! allowlist), window edges, stream output equal to whole-buffer output, and gitleaks's
//! own default file with samples written here.

use std::sync::Arc;

use super::{
    Scrubber,
    loaded::RuleSet,
    rules_file::{self, from_go, gitleaks_entropy, rule_name},
    tests::{CLEAN, Rng, assert_stream_equals_whole},
};

const GITLEAKS: &str = include_str!("testdata/gitleaks/gitleaks.toml");

fn set(toml: &str) -> Arc<RuleSet> {
    Arc::new(RuleSet::from_text(toml).unwrap_or_else(|e| panic!("rule file: {e}")))
}

fn scrub(rules: &Arc<RuleSet>, text: &str) -> String {
    Scrubber::with_rules(Arc::clone(rules)).scrub_str(text).0
}

fn report<'a>(rules: &'a RuleSet, id: &str) -> &'a rules_file::RuleReport {
    rules.reports()[0]
        .rules
        .iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no report for {id}"))
}

#[test]
fn every_rule_is_compiled_or_reported_with_its_reason() {
    let rules = set(r#"
title = "t"
[extend]
useDefault = true
[[rules]]
id = "ok-rule"
regex = '''tok_[a-z0-9]{8}'''
keywords = ["tok_"]
[[rules]]
id = "no-keywords"
regex = '''x[0-9]{4}'''
[[rules]]
id = "path-only"
path = '''\.p12$'''
keywords = ["p12"]
[[rules]]
id = "bad-regex"
regex = '''(?<=a)b'''
keywords = ["b"]
[[rules]]
id = "Bad Id"
regex = '''a'''
keywords = ["a"]
[[rules]]
id = "bad-group"
regex = '''k(e)y'''
secretGroup = 2
keywords = ["key"]
[[rules]]
id = "twice-rule"
regex = '''first'''
keywords = ["first"]
[[rules]]
id = "twice-rule"
regex = '''second[0-9]'''
keywords = ["second"]
[[rules]]
id = "with-path"
path = '''\.env$'''
regex = '''envkey_[0-9]{6}'''
keywords = ["envkey_"]
"#);
    let file = &rules.reports()[0];
    assert!(
        file.notes.iter().any(|n| n.contains("[extend]")),
        "{:?}",
        file.notes
    );
    let reason = |id: &str| report(&rules, id).notes.join("; ");
    assert!(report(&rules, "ok-rule").runnable);
    assert!(!report(&rules, "no-keywords").runnable);
    assert!(reason("no-keywords").contains("no keywords"));
    assert!(reason("path-only").contains("path-only"));
    assert!(
        reason("bad-regex").contains("look-around"),
        "{}",
        reason("bad-regex")
    );
    assert!(reason("Bad Id").contains("kebab"));
    assert!(reason("bad-group").contains("secretGroup 2"));
    // The later of two rules with one id replaces the earlier, as in gitleaks.
    let twice: Vec<_> = file.rules.iter().filter(|r| r.id == "twice-rule").collect();
    assert_eq!(twice.len(), 2);
    assert!(!twice[0].runnable && twice[1].runnable);
    assert!(reason("with-path").contains("path condition is ignored"));
    assert_eq!(file.runnable(), 3);
    let out = scrub(&rules, "a tok_abcd1234 first second7 envkey_123456 x1234\n");
    assert_eq!(
        out,
        "a [REDACTED:ok-rule] first [REDACTED:twice-rule] [REDACTED:with-path] x1234\n"
    );
}

#[test]
fn a_broken_file_is_an_error_naming_the_line() {
    let e = RuleSet::from_text("[[rules]]\nid = \"a\"\nregex = 3\n")
        .expect_err("a number is not a regex");
    assert!(e.to_string().contains("line 3"), "{e}");
    let e = RuleSet::from_text("[[rules]]\nid = \"a\"\nregex = '''a'''\nkeywords = [\"a\"]\n[[rules.allowlists]]\nregexTarget = \"everything\"\nregexes = ['''x''']\n")
        .map(|s| s.reports()[0].rules[0].notes.join(";"))
        .expect("a rule allowlist problem is the rule's");
    assert!(e.contains("regexTarget"), "{e}");
    let e = RuleSet::from_text("[allowlist]\nstopwords = []\n")
        .expect_err("an empty global allowlist is refused");
    assert!(e.to_string().contains("at least one check"), "{e}");
}

#[test]
fn ids_cannot_pass_for_built_in_families_or_live_labels() {
    assert_eq!(rule_name("gitlab-pat").as_deref(), Ok("gitlab-pat"));
    // Built-in families and live labels are snake_case without `-`.
    assert_eq!(rule_name("jwt").as_deref(), Ok("rule-jwt"));
    assert_eq!(rule_name("live_secret").as_deref(), Ok("rule-live_secret"));
    for bad in ["", "GitLab", "a b", "-x", "x]", "é", &"a".repeat(65)] {
        assert!(rule_name(bad).is_err(), "{bad:?}");
    }
    let rules = set("[[rules]]\nid = \"jwt\"\nregex = '''zz[0-9]{4}'''\nkeywords = [\"zz\"]\n");
    assert_eq!(scrub(&rules, "zz1234"), "[REDACTED:rule-jwt]");
}

#[test]
fn the_secret_group_is_redacted() {
    let rules = set(r#"
[[rules]]
id = "grouped-rule"
regex = '''(?i)(apizork)\s*[:=]\s*"?([a-z0-9]{12})"?'''
secretGroup = 2
keywords = ["apizork"]
[[rules]]
id = "first-group"
regex = '''(x)?wk_(?:(short[0-9]{3})|([0-9]{8}))'''
keywords = ["wk_"]
"#);
    assert_eq!(
        scrub(&rules, "APIZORK = \"ab12cd34ef56\"\n"),
        "APIZORK = \"[REDACTED:grouped-rule]\"\n"
    );
    // No secretGroup: the first group that is not empty (`x` did not take part).
    assert_eq!(scrub(&rules, "wk_12345678."), "wk_[REDACTED:first-group].");
    assert_eq!(scrub(&rules, "wk_short123"), "wk_[REDACTED:first-group]");
}

#[test]
fn ascii_entropy_is_the_character_map_entropy_to_the_bit() {
    // The character map the ASCII fast path replaces, summed in the same order.
    fn by_map(s: &[u8]) -> f64 {
        let mut counts = std::collections::BTreeMap::<char, u32>::new();
        for c in String::from_utf8_lossy(s).chars() {
            *counts.entry(c).or_default() += 1;
        }
        let inv = 1.0 / s.len() as f64;
        counts
            .values()
            .map(|&c| {
                let f = f64::from(c) * inv;
                -f * f.log2()
            })
            .sum()
    }
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    for len in 1..300 {
        let s: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 128) as u8
            })
            .collect();
        assert_eq!(
            gitleaks_entropy(&s).to_bits(),
            by_map(&s).to_bits(),
            "{s:?}"
        );
    }
}

#[test]
fn entropy_is_gitleaks_entropy_and_the_floor_is_exclusive() {
    assert_eq!(gitleaks_entropy(b""), 0.0);
    assert_eq!(gitleaks_entropy(b"aaaa"), 0.0);
    assert!((gitleaks_entropy(b"abab") - 1.0).abs() < 1e-12);
    assert!((gitleaks_entropy(b"abcd") - 2.0).abs() < 1e-12);
    // Over characters, divided by bytes: "éé" is one character twice in 4 bytes.
    assert!((gitleaks_entropy("éé".as_bytes()) - 0.5).abs() < 1e-12);
    // A floor of exactly 2.0: "abcd" (2.0 bits) stays, "abcde" (2.32) goes.
    let rules = set(
        "[[rules]]\nid = \"e-rule\"\nregex = '''v=([a-e]+)'''\nentropy = 2.0\nkeywords = [\"v=\"]\n",
    );
    assert_eq!(
        scrub(&rules, "v=abcd v=abcde"),
        "v=abcd v=[REDACTED:e-rule]"
    );
}

#[test]
fn allowlists_apply_by_target_stopword_and_condition() {
    let rules = set(r#"
[allowlist]
regexes = ['''^EXAMPLE''']
[[rules]]
id = "k-rule"
regex = '''(?i)zork\s*=\s*([A-Za-z0-9]{10,})'''
keywords = ["zork"]
[[rules.allowlists]]
regexes = ['''^0+$''']
[[rules.allowlists]]
regexTarget = "match"
regexes = ['''^ZORK\b''']
[[rules.allowlists]]
regexTarget = "line"
regexes = ['''#\s*fake''']
[[rules.allowlists]]
stopwords = ["dummy"]
[[rules.allowlists]]
condition = "AND"
paths = ['''\.md$''']
regexes = ['''^Abcdef''']
"#);
    let cases = [
        ("zork = Q7x9Lm2Kp4Rt", true),
        ("zork = EXAMPLEQ7x9Lm2", false), // global, on the secret
        ("zork = 000000000000", false),   // rule, on the secret
        ("ZORK = Q7x9Lm2Kp4Rt", false),   // on the match
        ("zork = Q7x9Lm2Kp4Rt  # fake", false), // on the line
        ("zork = xxDUMMYxx1234", false),  // stop-word, any case
        ("zork = Abcdef123456", true),    // AND with a path never holds
    ];
    for (line, redacted) in cases {
        let out = scrub(&rules, &format!("{line}\n"));
        assert_eq!(
            out.contains("[REDACTED:k-rule]"),
            redacted,
            "{line:?} -> {out:?}"
        );
    }
    // The line is the match's line only.
    let out = scrub(&rules, "# fake\nzork = Q7x9Lm2Kp4Rt\n");
    assert!(out.contains("[REDACTED:k-rule]"), "{out}");
}

#[test]
fn global_allowlists_target_their_rules() {
    let rules = set(r#"
[[allowlists]]
targetRules = ["a-rule"]
stopwords = ["safe"]
[[rules]]
id = "a-rule"
regex = '''aa_[a-z]{8}'''
keywords = ["aa_"]
[[rules]]
id = "b-rule"
regex = '''bb_[a-z]{8}'''
keywords = ["bb_"]
"#);
    assert_eq!(
        scrub(&rules, "aa_safesafe bb_safesafe"),
        "aa_safesafe [REDACTED:b-rule]"
    );
}

#[test]
fn keywords_match_in_any_case_and_anywhere_in_the_match() {
    // The keyword sits in the middle of the match; the match starts 40 bytes before it.
    let rules = set(r#"
[[rules]]
id = "mid-rule"
regex = '''(?i)\b[a-z0-9]{40}midkw[a-z0-9]{40}\b'''
keywords = ["MIDKW"]
"#);
    assert_eq!(report(&rules, "mid-rule").window, Some(85));
    let value = format!("{}MidKw{}", "a1".repeat(20), "b2".repeat(20));
    for (before, after) in [("", ""), ("x ", " y"), ("\n", "\n")] {
        let out = scrub(&rules, &format!("{before}{value}{after}"));
        assert_eq!(out, format!("{before}[REDACTED:mid-rule]{after}"));
    }
    // `\b` sees the byte before the window: a longer run is not a match.
    let out = scrub(&rules, &format!("z{value}"));
    assert_eq!(out, format!("z{value}"));
}

#[test]
fn dollar_and_caret_mean_the_ends_of_input() {
    let rules = set(r#"
[[rules]]
id = "end-rule"
regex = '''(?:^|\s)(endkw[0-9]{4})(?:\s|$)'''
keywords = ["endkw"]
"#);
    assert_eq!(scrub(&rules, "endkw1234"), "[REDACTED:end-rule]");
    assert_eq!(scrub(&rules, "a endkw1234 b"), "a [REDACTED:end-rule] b");
    assert_eq!(scrub(&rules, "aendkw1234"), "aendkw1234");
    assert_eq!(scrub(&rules, "endkw12345"), "endkw12345");
}

#[test]
fn go_syntax_is_read_as_go_reads_it() {
    assert_eq!(from_go(r"^\$(?:\d+|{\d+})$"), r"^\$(?:\d+|\{\d+})$");
    assert_eq!(from_go(r"a{2,3}b{4}c{5,}"), r"a{2,3}b{4}c{5,}");
    assert_eq!(from_go(r"[[]x[]a][^]b]"), r"[\[]x[\]a][^\]b]");
    assert_eq!(from_go(r"[[:alpha:]--]"), r"[[:alpha:]\--]");
    assert_eq!(from_go(r"\{x\}"), r"\{x\}");
}

/// Text with keywords and near misses of the rules in `GITLEAKS` around planted samples.
fn mixed_corpus(rng: &mut Rng) -> String {
    let mut text = String::new();
    for (_, clean) in CLEAN {
        text.push_str(clean);
    }
    let words = [
        "api_key = ",
        "token: ",
        "secret=",
        "password ",
        "key",
        "glpat-",
        "xoxb-",
        "https://hooks.slack.com/services/",
        "AKIA",
        "cloudflare",
        "-----BEGIN ",
        "\n",
        " ",
        "\"",
        "=",
    ];
    let alnum = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for _ in 0..400 {
        text.push_str(words[rng.below(words.len())]);
        let n = rng.below(48);
        text.extend((0..n).map(|_| char::from(alnum[rng.below(alnum.len())])));
        if rng.below(3) == 0 {
            text.push('\n');
        }
    }
    for s in SAMPLES {
        text.push_str(&format!("\n{}\n", s.1));
    }
    text
}

/// Samples for well-known rules of gitleaks's default file, written here: (rule id,
/// line, the secret that must not survive).
const SAMPLES: &[(&str, &str, &str)] = &[
    (
        "gitlab-pat",
        "export GITLAB_TOKEN=glpat-Zq8Rk2Lp0Tm4Wx6Nb3Vc",
        "glpat-Zq8Rk2Lp0Tm4Wx6Nb3Vc",
    ),
    (
        "gitlab-ptt",
        "trigger: glptt-4f9c2a7e1b3d5f608a2c4e6b8d0f1a3c5e7b9d2f",
        "4f9c2a7e1b3d5f608a2c4e6b8d0f1a3c5e7b9d2f",
    ),
    (
        "slack-webhook-url",
        "url: https://hooks.slack.com/services/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",
        "Xy9Zk2Lm4Np6Qr8St0Uv1Wx3",
    ),
    (
        "cloudflare-api-key",
        "cloudflare_api_key = \"Qx7Lm2Rb9Kt4Wz8Np3Vh6Jd1Fs5Gc0Ya3Eu7Tk9B\"",
        "Qx7Lm2Rb9Kt4Wz8Np3Vh6Jd1Fs5Gc0Ya3Eu7Tk9B",
    ),
    (
        "stripe-access-token",
        "STRIPE=sk_live_51Hq8ZtLm3Np5Rv7Tx9Wb2Yc4",
        "sk_live_51Hq8ZtLm3Np5Rv7Tx9Wb2Yc4",
    ),
    (
        "npm-access-token",
        "//registry.npmjs.org/:_authToken=npm_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
        "npm_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    ),
    (
        "generic-api-key",
        "api_key = \"k3J9xQ2mZ7vB4nR8tW1pL6yH\"",
        "k3J9xQ2mZ7vB4nR8tW1pL6yH",
    ),
    (
        "heroku-api-key",
        "HEROKU_API_KEY=4d8e2f1a-9b3c-4e7d-8a6f-2c1b5e9d7a30",
        "4d8e2f1a-9b3c-4e7d-8a6f-2c1b5e9d7a30",
    ),
    (
        "sendgrid-api-token",
        "SG.k3J9xQ2mZ7vB4nR8tW1pLw.6yHq2Zt8Lm3Np5Rv7Tx9Wb2Yc4Dd6Ff8Hh0Jj2Kk4Lm5",
        "SG.k3J9xQ2mZ7vB4nR8tW1pLw.6yHq2Zt8Lm3Np5Rv7Tx9Wb2Yc4Dd6Ff8Hh0Jj2Kk4Lm5",
    ),
];

fn gitleaks() -> Arc<RuleSet> {
    set(GITLEAKS)
}

#[test]
fn gitleaks_default_file_runs_all_but_its_path_only_rule() {
    let rules = gitleaks();
    let file = &rules.reports()[0];
    assert_eq!(file.rules.len(), 222);
    let unrunnable: Vec<&str> = file.unrunnable().map(|r| r.id.as_str()).collect();
    assert_eq!(
        unrunnable,
        ["pkcs12-file"],
        "{:?}",
        file.unrunnable().collect::<Vec<_>>()
    );
    assert_eq!(file.runnable(), 221);
    // Token rules run anchored at their prefix; generic ones over regions.
    let anchored = |id: &str| report(&rules, id).anchored;
    assert!(anchored("gitlab-pat") && anchored("jwt") && anchored("twilio-api-key"));
    assert!(!anchored("generic-api-key") && !anchored("airtable-personnal-access-token"));
}

#[test]
fn gitleaks_samples_are_removed_and_named_by_their_rule() {
    let rules = gitleaks();
    let s = Scrubber::with_rules(rules);
    for (id, line, secret) in SAMPLES {
        let out = s.scrub(line.as_bytes());
        let text = String::from_utf8_lossy(&out.bytes);
        assert!(!text.contains(secret), "{id}: {text}");
        // Named by its rule, by the generic rule that also matches it, or by a built-in
        // family (a built-in family names a tie).
        assert!(
            out.redactions.iter().any(|r| r.family == *id
                || r.family == "generic-api-key"
                || !r.family.contains('-')),
            "{id}: named {:?}",
            out.redactions.iter().map(|r| r.family).collect::<Vec<_>>()
        );
    }
}

/// A rule no built-in family covers, with a line.
const BEYOND_BUILT_IN: &[(&str, &str)] = &[(
    "microsoft-teams-webhook",
    "TEAMS_HOOK=https://contoso.webhook.office.com/webhookb2/7d2b5a9e-1c3f-4b8a-9e6d-2f4a6c8e0b1d@5f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/IncomingWebhook/0a1b2c3d4e5f60718293a4b5c6d7e8f9/8e7d6c5b-4a39-2817-0605-f4e3d2c1b0a9",
)];

#[test]
fn a_loaded_rule_names_what_no_built_in_family_finds() {
    let s = Scrubber::with_rules(gitleaks());
    for (id, line) in BEYOND_BUILT_IN {
        let families: Vec<_> = s
            .scrub(line.as_bytes())
            .redactions
            .iter()
            .map(|r| r.family)
            .collect();
        assert_eq!(families, [*id]);
        assert!(
            Scrubber::new().scrub(line.as_bytes()).redactions.is_empty(),
            "{id}"
        );
    }
}

#[test]
fn streaming_equals_whole_with_loaded_rules() {
    let s = Scrubber::with_rules(gitleaks());
    let mut rng = Rng(0x5151_2024_ABCD_0001);
    let text = mixed_corpus(&mut rng);
    let whole = s.scrub(text.as_bytes());
    assert!(
        whole
            .redactions
            .iter()
            .filter(|r| r.family.contains('-'))
            .count()
            >= SAMPLES.len(),
        "the corpus does not exercise the loaded rules"
    );
    assert_stream_equals_whole(&s, text.as_bytes());
    // Keywords every few bytes: regions merge up to their cap and start again.
    let dense = "api_key=Zx9 token key secret=Q1w2E3r4T5y6U7i8 ".repeat(800);
    assert_stream_equals_whole(&s, dense.as_bytes());
}
