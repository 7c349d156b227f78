//! The evaluation corpus (`src/sanitize/testdata/corpus`) is what `cargo xtask
//! sanitize-eval` measures: these tests hold its shape — every entry has its fields, the
//! families and languages are the documented ones, the two halves are disjoint and
//! balanced, and whole templates of the later batch sit in one half. They say nothing of
//! detection.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

const FAMILIES: [&str; 9] = [
    "goal_hijack",
    "prompt_leak",
    "indirect_document",
    "boundary_forgery",
    "authority_claim",
    "exfiltration_link",
    "persona_jailbreak",
    "encoded",
    "tool_call",
];
const LANGUAGES: [&str; 10] = ["en", "de", "fr", "es", "pt", "it", "ru", "zh", "ja", "ko"];

fn load(half: &str, file: &str) -> Vec<Value> {
    let path = format!(
        "{}/src/sanitize/testdata/corpus/{half}/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .enumerate()
        .map(|(n, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}:{}: {e}", n + 1)))
        .collect()
}

fn s<'a>(e: &'a Value, k: &str) -> &'a str {
    e[k].as_str()
        .unwrap_or_else(|| panic!("{k} missing in {}", e["id"]))
}

#[test]
fn attack_entries_have_their_fields_and_the_documented_families_and_languages() {
    let mut ids = BTreeSet::new();
    for half in ["dev", "test"] {
        for e in load(half, "attacks.jsonl") {
            let id = s(&e, "id");
            assert!(ids.insert(id.to_string()), "{id} appears twice");
            assert!(!s(&e, "text").trim().is_empty(), "{id}: empty text");
            assert!(FAMILIES.contains(&s(&e, "family")), "{id}: family");
            assert!(LANGUAGES.contains(&s(&e, "language")), "{id}: language");
            assert!(!s(&e, "source").is_empty(), "{id}: source");
            assert!(!s(&e, "expected_category").is_empty(), "{id}: category");
            assert!(
                s(&e, "template").starts_with(s(&e, "family")),
                "{id}: template"
            );
            assert_eq!(
                e["encoding"].is_string(),
                s(&e, "family") == "encoded",
                "{id}"
            );
        }
    }
    assert!(ids.len() >= 500, "{} attack texts", ids.len());
}

#[test]
fn the_halves_are_balanced_per_family_and_language() {
    let mut count: BTreeMap<(String, String), [i64; 2]> = BTreeMap::new();
    for (i, half) in ["dev", "test"].into_iter().enumerate() {
        for e in load(half, "attacks.jsonl") {
            let key = (s(&e, "family").to_string(), s(&e, "language").to_string());
            count.entry(key).or_default()[i] += 1;
        }
    }
    assert_eq!(count.len(), FAMILIES.len() * LANGUAGES.len());
    for (group, [dev, test]) in count {
        assert!(dev > 0 && test > 0, "{group:?}: {dev} dev, {test} test");
        assert!((dev - test).abs() <= 1, "{group:?}: {dev} dev, {test} test");
    }
}

#[test]
fn later_templates_sit_wholly_in_one_half() {
    let templates = |half: &str| -> BTreeSet<String> {
        load(half, "attacks.jsonl")
            .iter()
            .filter(|e| {
                let n: u32 = s(e, "id")
                    .rsplit('-')
                    .next()
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0);
                n >= 7
            })
            .map(|e| s(e, "template").to_string())
            .collect()
    };
    let (dev, test) = (templates("dev"), templates("test"));
    assert!(!test.is_empty());
    assert!(
        dev.is_disjoint(&test),
        "{:?}",
        dev.intersection(&test).collect::<Vec<_>>()
    );
}

#[test]
fn benign_entries_name_their_source_and_the_halves_do_not_share_text() {
    let mut texts = BTreeSet::new();
    let mut total = 0;
    for half in ["dev", "test"] {
        for e in load(half, "benign.jsonl") {
            total += 1;
            assert!(!s(&e, "source").is_empty() && !s(&e, "kind").is_empty());
            assert!(!s(&e, "language").is_empty());
            assert!(
                texts.insert(s(&e, "text").to_lowercase()),
                "{} twice",
                e["id"]
            );
        }
    }
    assert!(total >= 1000, "{total} benign texts");
}

#[test]
fn probe_entries_have_their_fields_and_unique_ids() {
    let probe = load("probe", "attacks.jsonl");
    assert!(probe.len() >= 300, "{} probe texts", probe.len());
    let mut ids = BTreeSet::new();
    for e in &probe {
        let id = s(e, "id");
        assert!(id.starts_with("p-"), "{id}");
        assert!(ids.insert(id.to_string()), "{id} twice");
        assert!(FAMILIES.contains(&s(e, "family")), "{id}: family");
        assert!(LANGUAGES.contains(&s(e, "language")), "{id}: language");
        assert!(s(e, "template").starts_with("probe-"), "{id}: template");
        assert!(!s(e, "text").is_empty() && !s(e, "expected_category").is_empty());
    }
    // No probe text is a corpus text: the halves stay what they measure.
    let corpus: BTreeSet<String> = ["dev", "test"]
        .iter()
        .flat_map(|h| load(h, "attacks.jsonl"))
        .map(|e| s(&e, "text").to_string())
        .collect();
    assert!(probe.iter().all(|e| !corpus.contains(s(e, "text"))));
}
