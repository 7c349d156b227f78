//! The credential vault through the real `hb-agent vault …` commands: a real SQLite file
//! in a temp folder, secrets on stdin, and the files and outputs searched for the secrets'
//! bytes. Needs no root and no network.

use std::{
    cell::RefCell,
    fs,
    io::{Read as _, Write as _},
    os::unix::{fs::PermissionsExt as _, process::ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use hb_tests::agent_bin;
use serde_json::Value;

/// One test's vault world: config, key file and state folder under one temp folder.
struct VaultEnv {
    dir: PathBuf,
    config: PathBuf,
    /// Everything every command printed, searched for secrets at the end.
    outputs: RefCell<Vec<u8>>,
}

impl VaultEnv {
    fn new(name: &str) -> Self {
        let mut b = [0u8; 6];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .expect("/dev/urandom");
        let suffix: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("hb-test-vault-{name}-{suffix}"));
        fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("hb.toml");
        fs::write(
            &config,
            format!(
                r#"[agent]
state_dir = "{dir}/state"
master_key_file = "{dir}/keys/master.key"

[[integration]]
name = "github"
auth = "bearer"
hosts = ["api.github.com"]

[[integration]]
name = "stripe"
auth = {{ header = "X-API-Key" }}
hosts = ["api.stripe.com"]
"#,
                dir = dir.display()
            ),
        )
        .expect("write config");
        Self {
            dir,
            config,
            outputs: RefCell::new(Vec::new()),
        }
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("keys/master.key")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn db(&self) -> PathBuf {
        self.state_dir().join("vault.db")
    }

    /// `hb-agent --config … ARGS` with `stdin` piped in and `env` set, captured.
    fn run(&self, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
        let mut child = Command::new(agent_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hb-agent");
        // A command that refuses early may close stdin unread: ignore EPIPE.
        let _ = child.stdin.take().expect("stdin").write_all(stdin);
        let out = child.wait_with_output().expect("wait hb-agent");
        let mut all = self.outputs.borrow_mut();
        all.extend_from_slice(&out.stdout);
        all.extend_from_slice(&out.stderr);
        out
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str], stdin: &[u8]) -> String {
        let out = self.run(args, stdin, &[]);
        assert!(
            out.status.success(),
            "hb-agent {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must fail with exit 1; returns its stderr.
    fn fails(&self, args: &[&str], stdin: &[u8]) -> String {
        let out = self.run(args, stdin, &[]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "hb-agent {args:?} should fail; stdout: {} stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn json(&self, args: &[&str], stdin: &[u8]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a, stdin);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{a:?}: not JSON ({e}): {out}"))
    }

    fn init(&self) {
        self.ok(&["vault", "init"], b"");
    }

    /// Stores `secret` for `integration`/`account`; returns the new id.
    fn put(&self, integration: &str, account: &str, secret: &[u8]) -> String {
        let meta = self.json(&["vault", "put", "-i", integration, "-a", account], secret);
        assert_eq!(meta["status"], "active", "{meta}");
        meta["id"].as_str().expect("id").to_owned()
    }

    fn rotate(&self, id: &str, secret: &[u8]) -> String {
        let meta = self.json(&["vault", "rotate", "--id", id, "--grace", "10m"], secret);
        assert_eq!(meta["rotated_from"], id, "{meta}");
        meta["id"].as_str().expect("id").to_owned()
    }

    fn list(&self) -> Vec<Value> {
        self.json(&["vault", "list"], b"")
            .as_array()
            .expect("list is an array")
            .clone()
    }

    fn row<'a>(list: &'a [Value], id: &str) -> &'a Value {
        list.iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {list:#?}"))
    }

    fn actives(&self, integration: &str, account: &str) -> Vec<String> {
        self.list()
            .iter()
            .filter(|r| {
                r["integration"] == integration
                    && r["account"] == account
                    && r["status"] == "active"
            })
            .map(|r| r["id"].as_str().expect("id").to_owned())
            .collect()
    }

    /// Whether the stored value of `id` is `secret`, asked through `vault verify`.
    fn matches(&self, id: &str, secret: &[u8]) -> bool {
        let out = self.run(&["vault", "verify", "--id", id], secret, &[]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        match out.status.code() {
            Some(0) => {
                assert!(stdout.contains("matches"), "{stdout}");
                true
            }
            Some(1) => {
                assert!(
                    stdout.contains("does not match"),
                    "verify {id}: {stdout} {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                false
            }
            other => panic!("verify exited {other:?}"),
        }
    }

    /// Every file under the test folder but the config, with its bytes: the vault, its
    /// journal if one is left, the key, anything SQLite may have put beside them.
    fn files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for e in fs::read_dir(dir).expect("read_dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push((p.clone(), fs::read(&p).expect("read file")));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir, &mut out);
        out.retain(|(p, _)| *p != self.config);
        out
    }

    /// No file and no output holds any 8-byte piece of any of `secrets`.
    fn assert_no_plaintext(&self, secrets: &[&[u8]]) {
        let mut haystacks = self.files();
        haystacks.push((
            PathBuf::from("(command outputs)"),
            self.outputs.borrow().clone(),
        ));
        assert!(
            haystacks.iter().any(|(p, _)| *p == self.db()),
            "no vault.db"
        );
        for (path, bytes) in &haystacks {
            for secret in secrets {
                for piece in secret.windows(8) {
                    assert!(
                        !bytes.windows(piece.len()).any(|w| w == piece),
                        "{} holds secret bytes {:?}",
                        path.display(),
                        String::from_utf8_lossy(piece)
                    );
                }
            }
        }
    }
}

impl Drop for VaultEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test state kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A random secret that looks like a token (ASCII, so a leak would be easy to spot).
fn token(prefix: &str) -> Vec<u8> {
    let mut b = [0u8; 20];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("/dev/urandom");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}{hex}").into_bytes()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

#[test]
fn put_list_rotate_revoke_round_trip() {
    let env = VaultEnv::new("roundtrip");
    env.init();
    assert_eq!(mode(&env.key_path()), 0o600);
    assert_eq!(mode(&env.dir.join("keys")), 0o700);
    let (v1, v2, s1) = (token("ghp_"), token("ghp_"), token("sk_live_"));

    let a = env.put("github", "ci", &v1);
    let s = env.put("stripe", "billing", &s1);
    let list = env.list();
    assert_eq!(list.len(), 2);
    for r in &list {
        assert_eq!(r["status"], "active", "{r}");
        assert!(
            r["created"].as_str().expect("created").ends_with('Z'),
            "{r}"
        );
    }
    assert!(env.matches(&a, &v1));
    assert!(!env.matches(&a, &s1));
    assert!(env.matches(&s, &s1));
    // A trailing newline from `echo` is not part of the secret.
    let mut with_newline = v1.clone();
    with_newline.push(b'\n');
    assert!(env.matches(&a, &with_newline));

    let b = env.rotate(&a, &v2);
    let list = env.list();
    assert_eq!(list.len(), 3);
    let old = VaultEnv::row(&list, &a);
    assert_eq!(old["status"], "deprecated");
    assert!(old["grace_until"].is_string(), "{old}");
    let new = VaultEnv::row(&list, &b);
    assert_eq!(new["status"], "active");
    assert_eq!(new["rotated_from"], a.as_str());
    assert_eq!(env.actives("github", "ci"), vec![b.clone()]);
    assert!(env.matches(&b, &v2));
    assert!(env.matches(&a, &v1), "the deprecated value stays usable");

    // Rotating by account, with a human table afterwards.
    let v3 = token("ghp_");
    let rotated = env.ok(
        &[
            "vault",
            "rotate",
            "--integration",
            "github",
            "--account",
            "ci",
            "--grace",
            "0s",
        ],
        &v3,
    );
    assert!(rotated.contains("rotated"), "{rotated}");
    let c = env.actives("github", "ci").pop().expect("one active");
    assert!(env.matches(&c, &v3));
    let table = env.ok(&["vault", "list"], b"");
    assert!(
        table.contains(&c) && table.contains("deprecated"),
        "{table}"
    );

    let revoked = env.json(&["vault", "revoke", "--id", &a], b"");
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked["revoked"].is_string(), "{revoked}");
    let err = env.fails(&["vault", "verify", "--id", &a], &v1);
    assert!(err.contains("revoked"), "{err}");
    let err = env.fails(&["vault", "revoke", "--id", &a], b"");
    assert!(
        err.contains("already revoked") || err.contains("is revoked"),
        "{err}"
    );

    // Roll back the last rotation: the one before it is active again.
    let back = env.json(&["vault", "rollback", "--id", &c], b"");
    assert_eq!(back["id"], b.as_str());
    assert_eq!(env.actives("github", "ci"), vec![b.clone()]);
    assert!(env.matches(&b, &v2));

    let check = env.ok(&["vault", "check"], b"");
    assert!(check.contains("0 failed"), "{check}");
    env.assert_no_plaintext(&[&v1, &v2, &v3, &s1]);
}

#[test]
fn no_plaintext_in_the_vault_files_or_outputs() {
    let env = VaultEnv::new("plaintext");
    env.init();
    let mut secrets = Vec::new();
    let mut ids = Vec::new();
    for account in ["a", "b", "c", "d"] {
        let s = token("xoxb-");
        ids.push(env.put("github", account, &s));
        secrets.push(s);
    }
    // Rotations, a revoke and failed commands leave pages, freed cells and journals
    // behind if anything does.
    for id in ids.iter().take(2) {
        let s = token("ghp_");
        env.rotate(id, &s);
        secrets.push(s);
    }
    env.ok(&["vault", "revoke", "--id", &ids[3]], b"");
    let s = token("ghp_");
    env.fails(&["vault", "put", "-i", "github", "-a", "a"], &s);
    secrets.push(s);
    let s = token("ghp_");
    env.fails(&["vault", "put", "-i", "nope", "-a", "z"], &s);
    secrets.push(s);
    env.ok(&["vault", "list"], b"");
    env.ok(&["vault", "check"], b"");
    let all: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
    env.assert_no_plaintext(&all);
    // The vault is one file at rest: the rollback journal is gone after each commit.
    // Beside it: the audit log of the vault operations (metadata only, searched above).
    let mut names: Vec<String> = fs::read_dir(env.state_dir())
        .expect("state dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["audit.log".to_owned(), "vault.db".to_owned()]);
    let audit = fs::read_to_string(env.state_dir().join("audit.log")).expect("audit.log");
    let operations: Vec<String> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .filter(|r| r["kind"] == "vault")
        .map(|r| r["operation"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        ["put", "rotate", "revoke"]
            .iter()
            .all(|op| operations.iter().any(|o| o == op)),
        "vault operations audited: {operations:?}"
    );
    assert_eq!(mode(&env.db()), 0o600);
}

#[test]
fn a_tampered_row_is_an_error_naming_its_id() {
    let env = VaultEnv::new("tamper");
    env.init();
    let (va, vb) = (token("ghp_"), token("ghp_"));
    let a = env.put("github", "alice", &va);
    let b = env.put("github", "bob", &vb);
    {
        let db = rusqlite::Connection::open(env.db()).expect("open db");
        let mut ct: Vec<u8> = db
            .query_row(
                "SELECT ciphertext FROM credentials WHERE id = ?1",
                [&a],
                |r| r.get(0),
            )
            .expect("read");
        ct[0] ^= 0x01;
        db.execute(
            "UPDATE credentials SET ciphertext = ?2 WHERE id = ?1",
            rusqlite::params![a, ct],
        )
        .expect("tamper");
    }
    let err = env.fails(&["vault", "verify", "--id", &a], &va);
    assert!(err.contains(&a) && err.contains("tampered"), "{err}");
    let err = env.fails(&["vault", "verify", "-i", "github", "-a", "alice"], &va);
    assert!(err.contains(&a) && err.contains("tampered"), "{err}");
    let out = env.run(&["vault", "check"], b"", &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&a) && !stderr.contains(&b), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 failed"));
    // The untouched row is fine.
    assert!(env.matches(&b, &vb));

    // Moving bob's credential to another integration (whose hosts would then receive
    // it) breaks its binding too.
    rusqlite::Connection::open(env.db())
        .expect("open db")
        .execute(
            "UPDATE credentials SET integration = 'stripe' WHERE id = ?1",
            [&b],
        )
        .expect("move");
    let err = env.fails(&["vault", "verify", "-i", "stripe", "-a", "bob"], &vb);
    assert!(err.contains(&b) && err.contains("tampered"), "{err}");
    env.assert_no_plaintext(&[&va, &vb]);
}

#[test]
fn a_wrong_master_key_says_so_and_changes_nothing() {
    let env = VaultEnv::new("wrongkey");
    env.init();
    let v = token("ghp_");
    let id = env.put("github", "ci", &v);
    let right_key = fs::read(env.key_path()).expect("key");
    let db_before = fs::read(env.db()).expect("db");
    let mut wrong = right_key.clone();
    wrong[0] ^= 0xff;
    fs::write(env.key_path(), &wrong).expect("write key");
    for (args, stdin) in [
        (vec!["vault", "list"], &b""[..]),
        (vec!["vault", "check"], b""),
        (
            vec!["vault", "put", "-i", "github", "-a", "other"],
            b"new-secret",
        ),
        (vec!["vault", "rotate", "--id", id.as_str()], b"new-secret"),
        (vec!["vault", "revoke", "--id", id.as_str()], b""),
    ] {
        let err = env.fails(&args, stdin);
        assert!(err.contains("wrong master key"), "{args:?}: {err}");
    }
    assert_eq!(
        fs::read(env.db()).expect("db"),
        db_before,
        "the vault changed"
    );
    fs::write(env.key_path(), &right_key).expect("restore key");
    assert!(env.matches(&id, &v));
    assert_eq!(env.list().len(), 1);
}

#[test]
fn the_key_file_is_checked_and_never_replaced() {
    let env = VaultEnv::new("keyfile");
    // No key yet.
    let err = env.fails(&["vault", "list"], b"");
    assert!(err.contains("master key file"), "{err}");
    env.init();
    let key = fs::read(env.key_path()).expect("key");
    assert_eq!(key.len(), 32);
    let err = env.fails(&["vault", "init"], b"");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read(env.key_path()).expect("key"), key);

    let v = token("ghp_");
    env.put("github", "ci", &v);
    fs::set_permissions(env.key_path(), fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = env.fails(&["vault", "list"], b"");
    assert!(
        err.contains("mode 0644") && err.contains("chmod 600"),
        "{err}"
    );
    let err = env.fails(&["vault", "put", "-i", "github", "-a", "x"], &v);
    assert!(err.contains("mode 0644"), "{err}");
    fs::set_permissions(env.key_path(), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::write(env.key_path(), &key[..31]).expect("truncate");
    let err = env.fails(&["vault", "list"], b"");
    assert!(
        err.contains("31 bytes") && err.contains("exactly 32"),
        "{err}"
    );
    fs::write(env.key_path(), &key).expect("restore");
    assert_eq!(env.list().len(), 1);
    env.assert_no_plaintext(&[&v]);
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let env = VaultEnv::new("badinput");
    env.init();
    // Refused before the vault exists: no vault file is created.
    let err = env.fails(&["vault", "put", "-i", "github", "-a", "ci"], b"");
    assert!(err.contains("no secret on stdin"), "{err}");
    assert!(!env.db().exists(), "a refused put created the vault");

    let v = token("ghp_");
    let id = env.put("github", "ci", &v);
    let db_before = fs::read(env.db()).expect("db");
    let long = vec![b'a'; 64 * 1024 + 1];
    let cases: Vec<(Vec<&str>, &[u8], &str)> = vec![
        (
            vec!["vault", "put", "-i", "github", "-a", "x"],
            b"",
            "no secret on stdin",
        ),
        (
            vec!["vault", "put", "-i", "github", "-a", "x"],
            b"\n",
            "no secret on stdin",
        ),
        (
            vec!["vault", "put", "-i", "github", "-a", "x"],
            &long,
            "longer than 65536",
        ),
        (
            vec!["vault", "put", "-i", "gitlab", "-a", "x"],
            b"s3cret-value",
            "not in the config (configured: github, stripe)",
        ),
        (
            vec!["vault", "put", "-i", "github", "-a", "ci"],
            b"s3cret-value",
            "vault rotate",
        ),
        (
            vec![
                "vault",
                "put",
                "-i",
                "github",
                "-a",
                "x",
                "--expires",
                "soon",
            ],
            b"s3cret-value",
            "--expires \"soon\"",
        ),
        (
            vec![
                "vault",
                "put",
                "-i",
                "github",
                "-a",
                "x",
                "--expires",
                "2020-01-01T00:00:00Z",
            ],
            b"s3cret-value",
            "not in the future",
        ),
        (
            vec!["vault", "put", "-i", "github", "-a", " x"],
            b"s3cret-value",
            "white space",
        ),
        (
            vec!["vault", "rotate", "--id", "cred_nope"],
            b"s3cret-value",
            "no credential with id",
        ),
        (
            vec!["vault", "rotate", "--id", &id],
            b"",
            "no secret on stdin",
        ),
        (
            vec!["vault", "rotate", "-i", "github", "-a", "nobody"],
            b"s3cret-value",
            "no active credential",
        ),
        (
            vec!["vault", "revoke", "--id", "cred_nope"],
            b"",
            "no credential with id",
        ),
        (
            vec!["vault", "rollback", "--id", &id],
            b"",
            "did not come from a rotation",
        ),
    ];
    for (args, stdin, expected) in cases {
        let err = env.fails(&args, stdin);
        assert!(
            err.contains(expected),
            "{args:?}: expected {expected:?} in: {err}"
        );
        assert_eq!(
            fs::read(env.db()).expect("db"),
            db_before,
            "{args:?} changed the vault"
        );
    }
    // Usage errors come from clap (exit 2) and change nothing either.
    let out = env.run(
        &["vault", "rotate", "--id", &id, "-i", "github", "-a", "ci"],
        b"x",
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = env.run(&["vault", "put", "-i", "github"], b"x", &[]);
    assert_eq!(out.status.code(), Some(2));
    // A deprecated credential cannot be rotated again.
    let b = env.rotate(&id, &token("ghp_"));
    let err = env.fails(&["vault", "rotate", "--id", &id], b"s3cret-value");
    assert!(
        err.contains("deprecated, not active") && err.contains(&id),
        "{err}"
    );
    assert_eq!(env.actives("github", "ci"), vec![b]);
    env.assert_no_plaintext(&[&v, b"s3cret-value"]);
}

/// `HB_VAULT_TEST_KILL_AT` (debug builds) SIGKILLs the rotation at each step; whatever
/// the step (a journal is left exactly when the kill cut a write short), the reopened vault has exactly one active credential for the account, with
/// the old value before the commit and the new one after, every value opens, nothing is
/// in plain text (a left-over journal included), and the next rotation works.
#[test]
fn kill_9_during_a_rotation_leaves_one_active_credential() {
    for (step, committed, journal_left) in [
        ("after-begin", false, false),
        ("after-deprecate", false, true),
        ("after-insert", false, true),
        ("before-commit", false, true),
        ("after-commit", true, false),
    ] {
        let env = VaultEnv::new(&format!("kill-{step}"));
        env.init();
        let (old_v, new_v, next_v) = (token("ghp_"), token("ghp_"), token("ghp_"));
        let other = env.put("github", "other", &token("ghp_"));
        let old = env.put("github", "ci", &old_v);

        let out = env.run(
            &["vault", "rotate", "--id", &old],
            &new_v,
            &[("HB_VAULT_TEST_KILL_AT", step)],
        );
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{step}: the rotation was not killed ({}); the kill hook is in debug builds only",
            String::from_utf8_lossy(&out.stderr)
        );
        let journal = env.state_dir().join("vault.db-journal");
        assert_eq!(
            journal.exists(),
            journal_left,
            "{step}: a hot journal is left exactly when the kill cut a write short"
        );
        // Before anything reopens the vault: the files as the crash left them.
        env.assert_no_plaintext(&[&old_v, &new_v]);

        // The database file itself is written only at commit, so a journal cut short
        // here is not hot: SQLite ignores it (its header is not yet valid) and reuses
        // it with the next write.
        let actives = env.actives("github", "ci");
        assert_eq!(actives.len(), 1, "{step}: actives {actives:?}");
        let list = env.list();
        if committed {
            let new = &actives[0];
            assert_ne!(*new, old, "{step}");
            assert_eq!(VaultEnv::row(&list, new)["rotated_from"], old.as_str());
            assert_eq!(VaultEnv::row(&list, &old)["status"], "deprecated");
            assert!(env.matches(new, &new_v), "{step}: new value");
            assert!(env.matches(&old, &old_v), "{step}: old value in grace");
        } else {
            assert_eq!(actives[0], old, "{step}");
            assert_eq!(list.len(), 2, "{step}: no half rotation left: {list:#?}");
            assert!(env.matches(&old, &old_v), "{step}: old value");
            assert!(!env.matches(&old, &new_v), "{step}");
        }
        assert_eq!(VaultEnv::row(&list, &other)["status"], "active");
        let check = env.ok(&["vault", "check"], b"");
        assert!(check.contains("0 failed"), "{step}: {check}");

        // The vault takes the next rotation.
        let next = env.json(&["vault", "rotate", "-i", "github", "-a", "ci"], &next_v);
        let next = next["id"].as_str().expect("id").to_owned();
        assert_eq!(env.actives("github", "ci"), vec![next.clone()], "{step}");
        assert!(env.matches(&next, &next_v), "{step}");
        assert!(
            !journal.exists(),
            "{step}: the next commit removes the journal"
        );
        env.assert_no_plaintext(&[&old_v, &new_v, &next_v]);
    }
}

/// Rotations from many processes at once serialise on the database lock: every one
/// succeeds, each replaces the one before it, and one credential is active at the end.
#[test]
fn concurrent_rotations_keep_one_active_credential() {
    let env = VaultEnv::new("concurrent");
    env.init();
    let first = env.put("github", "ci", &token("ghp_"));
    let children: Vec<_> = (0..8)
        .map(|_| {
            let mut child = Command::new(agent_bin())
                .arg("--config")
                .arg(&env.config)
                .args(["vault", "rotate", "-i", "github", "-a", "ci", "--json"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(&token("ghp_"))
                .expect("write secret");
            child
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "a concurrent rotation failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let list = env.list();
    assert_eq!(list.len(), 9);
    assert_eq!(env.actives("github", "ci").len(), 1);
    // One chain: every credential but the first was rotated from a distinct one.
    let mut from: Vec<&str> = list
        .iter()
        .filter_map(|r| r["rotated_from"].as_str())
        .collect();
    from.sort_unstable();
    from.dedup();
    assert_eq!(from.len(), 8, "{list:#?}");
    assert!(from.contains(&first.as_str()));
    let check = env.ok(&["vault", "check"], b"");
    assert!(check.contains("9 credentials checked, 0 failed"), "{check}");
}

/// Another writer dies with part of its transaction already in the database file (a tiny
/// page cache makes SQLite spill dirty pages mid-transaction): the next `hb-agent vault`
/// command rolls the hot journal back, and the vault is exactly as before.
const PY_SPILL_AND_DIE: &str = r#"
import os, signal, sqlite3, sys
db, old_id = sys.argv[1], sys.argv[2]
c = sqlite3.connect(db, isolation_level=None)
c.execute("PRAGMA cache_size = 10")
c.execute("BEGIN IMMEDIATE")
c.execute("UPDATE credentials SET status = 'deprecated', grace_until = 0 WHERE id = ?", (old_id,))
c.execute("CREATE TABLE filler (x BLOB)")
for _ in range(300):
    c.execute("INSERT INTO filler VALUES (zeroblob(4000))")
os.kill(os.getpid(), signal.SIGKILL)
"#;

#[test]
fn a_hot_journal_from_a_killed_writer_is_rolled_back() {
    let env = VaultEnv::new("hotjournal");
    env.init();
    let v = token("ghp_");
    let id = env.put("github", "ci", &v);
    let before = fs::read(env.db()).expect("db");
    let out = Command::new(hb_tests::python())
        .args(["-c", PY_SPILL_AND_DIE])
        .arg(env.db())
        .arg(&id)
        .output()
        .expect("python3");
    assert_eq!(
        out.status.signal(),
        Some(9),
        "the writer was not killed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let journal = env.state_dir().join("vault.db-journal");
    assert!(journal.exists(), "no journal left");
    assert_ne!(
        fs::read(env.db()).expect("db"),
        before,
        "nothing spilled into the database file: the test proves nothing"
    );

    assert_eq!(env.actives("github", "ci"), vec![id.clone()]);
    assert!(!journal.exists(), "the hot journal was not rolled back");
    assert_eq!(fs::read(env.db()).expect("db").len(), before.len());
    assert!(env.matches(&id, &v));
    let check = env.ok(&["vault", "check"], b"");
    assert!(check.contains("1 credentials checked, 0 failed"), "{check}");
    let next = env.rotate(&id, &token("ghp_"));
    assert_eq!(env.actives("github", "ci"), vec![next]);
    let tables: i64 = rusqlite::Connection::open(env.db())
        .expect("open")
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'filler'",
            [],
            |r| r.get(0),
        )
        .expect("query");
    assert_eq!(tables, 0, "the killed writer's table survived");
    env.assert_no_plaintext(&[&v]);
}
