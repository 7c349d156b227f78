//! `hb-agent scrub` as a tool: stdin to stdout, streaming with output before end of
//! input, `--json`, `--secret-file`, `--fail-on-match`. No root, no network.

use std::{
    fs,
    io::{Read as _, Write as _},
    process::{Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use hb_tests::agent_bin;
use serde_json::Value;

/// Synthetic, made-up values.
const TOKEN: &str = "ghp_cVeu9259xXEBxdcCHUv0dUnKIXrZ91TZlxIy";
const VALUE: &str = "Qm7#vT2pL9xW4kRz8NcY1sHd6FgJ3bEa0uVo5iXq";

fn scrub(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(agent_bin())
        .arg("scrub")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hb-agent scrub");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = thread::spawn(move || input.write_all(&data));
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer").expect("write stdin");
    out
}

fn secret_file(name: &str, value: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hb-scrub-cli-{}-{name}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("secret");
    fs::write(&path, format!("{value}\n")).expect("write secret file");
    path
}

#[test]
fn tokens_and_secret_file_values_are_redacted_in_their_encodings() {
    let file = secret_file("enc", VALUE);
    let b64 = "UW03I3ZUMnBMOXhXNGtSejhOY1kxc0hkNkZnSjNiRWEwdVZvNWlYcQ==";
    let hex: String = VALUE.bytes().map(|b| format!("{b:02x}")).collect();
    let text = format!("token={TOKEN}\nraw {VALUE}\nb64 {b64}\nhex {hex}\nplain line\n");
    let out = scrub(
        &["--secret-file", file.to_str().expect("utf-8 path")],
        text.as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(
        stdout,
        "token=[REDACTED:github_pat]\nraw [REDACTED:live_secret]\nb64 [REDACTED:live_secret]\nhex [REDACTED:live_secret]\nplain line\n"
    );
    let _ = fs::remove_dir_all(file.parent().expect("dir"));
}

#[test]
fn json_output_and_fail_on_match() {
    let text = format!("a {TOKEN} b");
    let out = scrub(&["--json", "--fail-on-match"], text.as_bytes());
    assert_eq!(out.status.code(), Some(1), "a match fails the gate");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["text"], "a [REDACTED:github_pat] b");
    assert_eq!(doc["redactions"][0]["family"], "github_pat");
    assert_eq!(doc["redactions"][0]["offset"], 2);
    assert_eq!(doc["redactions"][0]["len"], TOKEN.len());
    let clean = scrub(&["--fail-on-match"], b"nothing to see here\n");
    assert_eq!(clean.status.code(), Some(0));
    assert_eq!(clean.stdout, b"nothing to see here\n");
}

#[test]
fn a_too_short_secret_file_is_refused_without_showing_it() {
    let file = secret_file("short", "abc123");
    let out = scrub(
        &["--secret-file", file.to_str().expect("path")],
        b"abc123\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("too short") && stderr.contains(file.to_str().expect("path")));
    assert!(!stderr.contains("abc123"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing is scrubbed with a bad secret file"
    );
    let _ = fs::remove_dir_all(file.parent().expect("dir"));
}

#[test]
fn output_flows_before_the_input_ends() {
    let mut child = Command::new(agent_bin())
        .arg("scrub")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start hb-agent scrub");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    // More than the token's window (256 bytes after `ghp_`) and no keyword near the
    // end: all but the last few bytes must come out while stdin stays open.
    let first = format!("line one {TOKEN} {}\n", "filler ".repeat(60));
    stdin.write_all(first.as_bytes()).expect("write");
    stdin.flush().expect("flush");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&got).contains("filler filler") {
                let _ = tx.send(got.clone());
            }
        }
    });
    let early = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("scrubbed output before end of input");
    let early = String::from_utf8_lossy(&early);
    assert!(
        early.starts_with("line one [REDACTED:github_pat] filler"),
        "{early}"
    );
    assert!(!early.contains(TOKEN));
    drop(stdin);
    assert!(child.wait().expect("wait").success());
}

/// gitleaks's default rule file, vendored as test data.
fn gitleaks_toml() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../hb-agent/src/scrub/testdata/gitleaks/gitleaks.toml"
    )
    .to_owned()
}

fn rule_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hb-scrub-cli-{}-{name}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("rules.toml");
    fs::write(&path, text).expect("write rule file");
    path
}

#[test]
fn rules_files_redact_with_their_ids_and_report_what_cannot_run() {
    let gl = gitleaks_toml();
    // A made-up NuGet config password (no built-in family covers it).
    let text = "<add key=\"ClearTextPassword\" value=\"Qx7Lm2Rb9Kt4Wz8N\" />\nplain line\n";
    let out = scrub(&["--rules", &gl], text.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).expect("utf-8"),
        "<add key=\"ClearTextPassword\" value=\"[REDACTED:nuget-config-password]\" />\nplain line\n"
    );
    // The one rule it cannot run is named on stderr.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pkcs12-file") && stderr.contains("path-only"),
        "{stderr}"
    );
    // Without the file, neither is found.
    let out = scrub(&[], text.as_bytes());
    assert_eq!(out.stdout, text.as_bytes());

    let check = scrub(&["--check-rules", &gl], b"");
    assert_eq!(check.status.code(), Some(3), "some rules cannot run");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(stdout.contains("221 of 222 rules runnable"), "{stdout}");
    let check = scrub(&["--check-rules", &gl, "--json"], b"");
    let doc: Value = serde_json::from_slice(&check.stdout).expect("json");
    assert_eq!(
        (doc["rules"].as_u64(), doc["runnable"].as_u64()),
        (Some(222), Some(221))
    );
    assert_eq!(doc["unrunnable"][0]["id"], "pkcs12-file");

    let good = rule_file(
        "good",
        "[[rules]]\nid = \"zz-key\"\nregex = '''zz_[0-9]{8}'''\nkeywords = [\"zz_\"]\n",
    );
    let check = scrub(&["--check-rules", good.to_str().expect("path")], b"");
    assert_eq!(check.status.code(), Some(0), "every rule runs");
    let bad = rule_file("bad", "[[rules]]\nid = \"x\"\nregex = [\n");
    let check = scrub(&["--check-rules", bad.to_str().expect("path")], b"");
    assert_eq!(check.status.code(), Some(2), "an invalid file");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains("rules.toml") && stderr.contains("line"),
        "{stderr}"
    );
    let out = scrub(&["--rules", bad.to_str().expect("path")], b"text\n");
    assert_eq!(out.status.code(), Some(1), "scrub refuses a bad rule file");
    assert!(out.stdout.is_empty());
    for f in [good, bad] {
        let _ = fs::remove_dir_all(f.parent().expect("dir"));
    }
}

#[test]
fn list_families_shows_built_in_and_loaded_rules_apart() {
    let out = scrub(
        &["--list-families", "--json", "--rules", &gitleaks_toml()],
        b"",
    );
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    let built_in = doc["built_in"].as_array().expect("built_in");
    let loaded = doc["loaded"].as_array().expect("loaded");
    assert!(built_in.iter().any(|f| f["name"] == "github_pat"));
    assert!(
        built_in
            .iter()
            .all(|f| !f["name"].as_str().unwrap_or("-").contains('-'))
    );
    assert_eq!(loaded.len(), 221);
    assert!(loaded.iter().any(|r| r["name"] == "gitlab-pat"));
    assert!(
        loaded
            .iter()
            .any(|r| r["id"] == "jwt" && r["name"] == "rule-jwt")
    );
    let text = scrub(&["--list-families", "--rules", &gitleaks_toml()], b"");
    let text = String::from_utf8_lossy(&text.stdout);
    let (built, loaded) = text.split_once("Loaded rules:").expect("a loaded section");
    assert!(built.contains("github_pat") && !built.contains("gitlab-pat"));
    assert!(loaded.contains("gitlab-pat") && !loaded.contains("github_pat "));
}

/// Runs an encoder on `input` (`base64`, `openssl base64`: real tools, as a tool call
/// would) and returns what it printed.
fn encode_with(tool: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(tool[0])
        .args(&tool[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {tool:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{tool:?} failed");
    out.stdout
}

#[test]
fn a_secret_file_value_in_line_wrapped_base64_is_redacted() {
    let file = secret_file("wrapped", VALUE);
    let tools: [(&[&str], usize); 3] = [
        (&["base64"], 76),
        (&["base64", "-w", "64"], 64),
        (&["openssl", "base64"], 64),
    ];
    let mut checked = 0;
    for (tool, width) in tools {
        for crlf in [false, true] {
            // The value inside a JSON document at each of base64's three byte phases,
            // and at places that put a line break inside its encoding.
            for pad in [0, 1, 2, 17, 31, 46] {
                let doc = format!(
                    "{{\"user\":\"deploy{}\",\"password\":\"{VALUE}\",\"region\":\"eu-west-1\"}}\n",
                    "x".repeat(pad)
                );
                let offset = doc.find(VALUE).expect("value");
                let mut encoded = encode_with(tool, doc.as_bytes());
                if crlf {
                    encoded = String::from_utf8(encoded)
                        .expect("base64 is ASCII")
                        .replace('\n', "\r\n")
                        .into_bytes();
                }
                let eol = if crlf { 2 } else { 1 };
                let out = scrub(
                    &["--json", "--secret-file", file.to_str().expect("path")],
                    &encoded,
                );
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let report: Value = serde_json::from_slice(&out.stdout).expect("json");
                let spans: Vec<(u64, u64)> = report["redactions"]
                    .as_array()
                    .expect("redactions")
                    .iter()
                    .filter(|r| r["family"] == "live_secret")
                    .map(|r| {
                        let at = r["offset"].as_u64().expect("offset");
                        (at, at + r["len"].as_u64().expect("len"))
                    })
                    .collect();
                // Every character that carries bits of the value alone: character i
                // holds bits [6i, 6i + 6) of the document.
                for i in (8 * offset).div_ceil(6)..8 * (offset + VALUE.len()) / 6 {
                    let at = (i + (i / width) * eol) as u64;
                    assert!(
                        spans.iter().any(|&(s, e)| s <= at && at < e),
                        "{tool:?} crlf {crlf} pad {pad}: character {i} of the value's encoding survives: {}",
                        report["text"]
                    );
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 36);
    let _ = fs::remove_dir_all(file.parent().expect("dir"));
}
