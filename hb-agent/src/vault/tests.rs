//! The vault's unit tests: a real SQLite file in a temp folder, a second raw connection
//! where a test plays the attacker or injects a failure.

use std::{
    fs,
    io::Read as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rusqlite::Connection;

use super::*;

/// A temp folder removed on drop (kept when the test fails, for a look).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let mut b = [0u8; 8];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .expect("/dev/urandom");
        let name: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let path = std::env::temp_dir().join(format!("hb-vault-unit-{name}"));
        fs::create_dir(&path).expect("temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// The broker keeps a vault behind a mutex or moves it to a blocking thread.
const _: () = {
    const fn send<T: Send>() {}
    send::<Vault>();
};

fn key(byte: u8) -> MasterKey {
    MasterKey::from_bytes([byte; 32])
}

fn secret(s: &str) -> Secret {
    Secret::new(s.as_bytes().to_vec())
}

struct Fixture {
    dir: TempDir,
    vault: Vault,
}

impl Fixture {
    fn new() -> Self {
        let dir = TempDir::new();
        let vault = Vault::open(&dir.path().join("state/vault.db"), &key(1)).expect("open");
        Self { dir, vault }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("state/vault.db")
    }

    /// A second connection, as another process (or an attacker with the file) would have.
    fn raw(&self) -> Connection {
        Connection::open(self.db()).expect("raw open")
    }

    fn value(&self, id: &str) -> Vec<u8> {
        self.vault.get(id).expect("get").1.expose().to_vec()
    }
}

#[test]
fn put_then_active_gives_the_value_and_list_only_metadata() {
    let mut f = Fixture::new();
    let meta = f
        .vault
        .put("github", "ci", &secret("ghp_first"), None)
        .expect("put");
    assert!(
        meta.id.starts_with("cred_") && meta.id.len() == 5 + 24,
        "{}",
        meta.id
    );
    assert_eq!(meta.status, Status::Active);
    let (active, value) = f
        .vault
        .active("github", "ci")
        .expect("active")
        .expect("some");
    assert_eq!(active, meta);
    assert_eq!(value.expose(), b"ghp_first");
    assert!(f.vault.active("github", "other").expect("active").is_none());
    assert_eq!(f.vault.list().expect("list"), vec![meta.clone()]);
    let json = serde_json::to_string(&meta).expect("json");
    assert!(!json.contains("ghp_first"), "{json}");
    assert!(json.contains(r#""status":"active""#), "{json}");
    // The database file and its folder are private.
    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&f.db()), 0o600);
    assert_eq!(mode(f.db().parent().expect("dir")), 0o700);
}

#[test]
fn a_second_active_credential_is_refused_and_changes_nothing() {
    let mut f = Fixture::new();
    let first = f
        .vault
        .put("github", "ci", &secret("a"), None)
        .expect("put");
    let err = f
        .vault
        .put("github", "ci", &secret("b"), None)
        .expect_err("refused");
    assert!(
        matches!(&err, VaultError::AlreadyActive { id, .. } if *id == first.id),
        "{err}"
    );
    assert!(err.to_string().contains("vault rotate"), "{err}");
    assert_eq!(f.vault.list().expect("list"), vec![first.clone()]);
    assert_eq!(f.value(&first.id), b"a");
    // The schema enforces it too, whatever code writes the file.
    let raw = f.raw();
    let res = raw.execute(
        "INSERT INTO credentials (id, integration, account, status, created, nonce, ciphertext)
         SELECT 'cred_dup', integration, account, 'active', created, nonce, ciphertext
         FROM credentials",
        [],
    );
    assert!(res.is_err(), "a second active row was accepted");
}

#[test]
fn rotation_deprecates_the_old_one_with_its_grace_period() {
    let mut f = Fixture::new();
    let old = f
        .vault
        .put("github", "ci", &secret("v1"), None)
        .expect("put");
    let new = f
        .vault
        .rotate(
            Target::Account {
                integration: "github",
                account: "ci",
            },
            &secret("v2"),
            Duration::from_secs(600),
            None,
        )
        .expect("rotate");
    assert_eq!(new.status, Status::Active);
    assert_eq!(new.rotated_from.as_deref(), Some(old.id.as_str()));
    let list = f.vault.list().expect("list");
    assert_eq!(list.len(), 2);
    let old_now = list.iter().find(|m| m.id == old.id).expect("old");
    assert_eq!(old_now.status, Status::Deprecated);
    let grace = old_now.grace_until.expect("grace_until");
    // Grace counts from the rotation, which is when the new credential was created.
    assert_eq!(grace, new.created + Duration::from_secs(600));
    assert_eq!(f.value(&old.id), b"v1");
    assert_eq!(f.value(&new.id), b"v2");

    let (active, value) = f
        .vault
        .active("github", "ci")
        .expect("active")
        .expect("some");
    assert_eq!(
        (active.id.as_str(), value.expose()),
        (new.id.as_str(), &b"v2"[..])
    );
    let ids = |v: &Vault, now| -> Vec<String> {
        v.usable_at("github", "ci", now)
            .expect("usable")
            .into_iter()
            .map(|(m, _)| m.id)
            .collect()
    };
    assert_eq!(
        ids(&f.vault, SystemTime::now()),
        vec![new.id.clone(), old.id.clone()]
    );
    assert_eq!(
        ids(&f.vault, grace + Duration::from_secs(1)),
        vec![new.id.clone()]
    );

    // By id, again: the first rotated one is now deprecated too, with its own grace.
    let third = f
        .vault
        .rotate(Target::Id(&new.id), &secret("v3"), Duration::ZERO, None)
        .expect("rotate by id");
    assert_eq!(
        ids(&f.vault, SystemTime::now()),
        vec![third.id.clone(), old.id.clone()]
    );
    let actives = f
        .vault
        .list()
        .expect("list")
        .into_iter()
        .filter(|m| m.status == Status::Active)
        .count();
    assert_eq!(actives, 1);
}

#[test]
fn rotating_what_is_not_active_is_refused_and_changes_nothing() {
    let mut f = Fixture::new();
    let old = f
        .vault
        .put("github", "ci", &secret("v1"), None)
        .expect("put");
    let new = f
        .vault
        .rotate(
            Target::Id(&old.id),
            &secret("v2"),
            Duration::from_secs(60),
            None,
        )
        .expect("rotate");
    let before = f.vault.list().expect("list");
    type Expected = fn(&VaultError) -> bool;
    let cases: [(Target<'_>, Expected); 3] = [
        (Target::Id(&old.id), |e| {
            matches!(
                e,
                VaultError::NotActive {
                    status: Status::Deprecated,
                    ..
                }
            )
        }),
        (Target::Id("cred_nope"), |e| {
            matches!(e, VaultError::NotFound { .. })
        }),
        (
            Target::Account {
                integration: "github",
                account: "nobody",
            },
            |e| matches!(e, VaultError::NoActive { .. }),
        ),
    ];
    for (target, expected) in cases {
        let err = f
            .vault
            .rotate(target, &secret("v3"), Duration::from_secs(60), None)
            .expect_err("refused");
        assert!(expected(&err), "{target:?}: {err}");
    }
    assert_eq!(f.vault.list().expect("list"), before);
    assert_eq!(f.value(&new.id), b"v2");
}

#[test]
fn a_rotation_that_fails_midway_rolls_back() {
    let mut f = Fixture::new();
    let old = f
        .vault
        .put("github", "ci", &secret("v1"), None)
        .expect("put");
    // Fails the insert of the new row, after the old one was deprecated in the same
    // transaction.
    f.raw()
        .execute_batch(
            "CREATE TRIGGER fail_insert BEFORE INSERT ON credentials
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .expect("trigger");
    let err = f
        .vault
        .rotate(
            Target::Id(&old.id),
            &secret("v2"),
            Duration::from_secs(60),
            None,
        )
        .expect_err("rotation fails");
    assert!(matches!(err, VaultError::Sqlite { .. }), "{err}");
    assert_eq!(f.vault.list().expect("list"), vec![old.clone()]);
    let (active, value) = f
        .vault
        .active("github", "ci")
        .expect("active")
        .expect("some");
    assert_eq!(active.id, old.id);
    assert_eq!(value.expose(), b"v1");
}

#[test]
fn a_value_moved_to_another_row_or_account_fails_naming_the_row() {
    let mut f = Fixture::new();
    let a = f
        .vault
        .put("github", "alice", &secret("token-a"), None)
        .expect("put");
    let b = f
        .vault
        .put("github", "bob", &secret("token-b"), None)
        .expect("put");
    let c = f
        .vault
        .put("github", "carol", &secret("token-c"), None)
        .expect("put");
    let raw = f.raw();
    // Swap a's and b's sealed values.
    let sealed = |id: &str| -> (Vec<u8>, Vec<u8>) {
        raw.query_row(
            "SELECT nonce, ciphertext FROM credentials WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("read sealed")
    };
    let (sa, sb) = (sealed(&a.id), sealed(&b.id));
    for (id, (nonce, ciphertext)) in [(&a.id, sb), (&b.id, sa)] {
        raw.execute(
            "UPDATE credentials SET nonce = ?2, ciphertext = ?3 WHERE id = ?1",
            rusqlite::params![id, nonce, ciphertext],
        )
        .expect("swap");
    }
    // Point c's row at another integration (so its token would go to that one's hosts).
    raw.execute(
        "UPDATE credentials SET integration = 'evil' WHERE id = ?1",
        [&c.id],
    )
    .expect("move");
    for id in [&a.id, &b.id, &c.id] {
        let err = f.vault.get(id).err().expect("must not open");
        assert!(
            matches!(&err, VaultError::Tampered { id: t } if t == id),
            "{err}"
        );
        assert!(err.to_string().contains(id.as_str()), "{err}");
    }
    let err = f
        .vault
        .active("evil", "carol")
        .err()
        .expect("must not open");
    assert!(matches!(err, VaultError::Tampered { .. }), "{err}");
    let checked = f.vault.check().expect("check");
    assert_eq!(checked.len(), 3);
    assert!(
        checked
            .iter()
            .all(|c| matches!(c.error, Some(VaultError::Tampered { .. })))
    );
}

#[test]
fn a_flipped_ciphertext_byte_is_tampering_naming_the_id() {
    let mut f = Fixture::new();
    let a = f
        .vault
        .put("github", "ci", &secret("token-a"), None)
        .expect("put");
    let raw = f.raw();
    let mut ciphertext: Vec<u8> = raw
        .query_row(
            "SELECT ciphertext FROM credentials WHERE id = ?1",
            [&a.id],
            |r| r.get(0),
        )
        .expect("read");
    ciphertext[3] ^= 0x5a;
    raw.execute(
        "UPDATE credentials SET ciphertext = ?2 WHERE id = ?1",
        rusqlite::params![a.id, ciphertext],
    )
    .expect("tamper");
    let err = f.vault.active("github", "ci").err().expect("must not open");
    assert!(
        matches!(&err, VaultError::Tampered { id } if *id == a.id),
        "{err}"
    );
}

#[test]
fn a_wrong_master_key_is_named_as_such() {
    let f = Fixture::new();
    drop(f.vault);
    let db = f.dir.path().join("state/vault.db");
    {
        let mut v = Vault::open(&db, &key(1)).expect("open");
        v.put("github", "ci", &secret("v1"), None).expect("put");
    }
    let err = Vault::open(&db, &key(2)).err().expect("wrong key");
    assert!(matches!(err, VaultError::WrongMasterKey { .. }), "{err}");
    assert!(err.to_string().contains("wrong master key"), "{err}");
    // An empty vault still knows its key.
    let empty = f.dir.path().join("empty/vault.db");
    drop(Vault::open(&empty, &key(1)).expect("create"));
    let err = Vault::open(&empty, &key(2)).err().expect("wrong key");
    assert!(matches!(err, VaultError::WrongMasterKey { .. }), "{err}");
    let v = Vault::open(&db, &key(1)).expect("right key again");
    assert_eq!(v.list().expect("list").len(), 1);
}

#[test]
fn revoking_erases_the_value_for_good() {
    let mut f = Fixture::new();
    let old = f
        .vault
        .put("github", "ci", &secret("v1"), None)
        .expect("put");
    let new = f
        .vault
        .rotate(
            Target::Id(&old.id),
            &secret("v2"),
            Duration::from_secs(600),
            None,
        )
        .expect("rotate");
    let revoked = f.vault.revoke(&old.id).expect("revoke");
    assert_eq!(revoked.status, Status::Revoked);
    assert!(revoked.revoked.is_some() && revoked.grace_until.is_none());
    let (nonce_null, ct_null): (bool, bool) = f
        .raw()
        .query_row(
            "SELECT nonce IS NULL, ciphertext IS NULL FROM credentials WHERE id = ?1",
            [&old.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("raw");
    assert!(nonce_null && ct_null);
    assert!(matches!(
        f.vault.get(&old.id),
        Err(VaultError::Revoked { .. })
    ));
    assert!(matches!(
        f.vault.revoke(&old.id),
        Err(VaultError::Revoked { .. })
    ));
    assert!(matches!(
        f.vault.revoke("cred_x"),
        Err(VaultError::NotFound { .. })
    ));
    let usable: Vec<_> = f
        .vault
        .usable("github", "ci")
        .expect("usable")
        .into_iter()
        .map(|(m, _)| m.id)
        .collect();
    assert_eq!(usable, vec![new.id.clone()]);
    f.vault.revoke(&new.id).expect("revoke active");
    assert!(f.vault.active("github", "ci").expect("active").is_none());
    assert!(f.vault.usable("github", "ci").expect("usable").is_empty());
    // A revoked account can get a fresh credential.
    f.vault
        .put("github", "ci", &secret("v3"), None)
        .expect("put again");
    assert!(
        f.vault
            .check()
            .expect("check")
            .iter()
            .all(|c| c.error.is_none())
    );
}

#[test]
fn roll_back_restores_the_replaced_credential() {
    let mut f = Fixture::new();
    let old = f
        .vault
        .put("github", "ci", &secret("v1"), None)
        .expect("put");
    let new = f
        .vault
        .rotate(
            Target::Id(&old.id),
            &secret("v2"),
            Duration::from_secs(60),
            None,
        )
        .expect("rotate");
    let restored = f.vault.roll_back(&new.id).expect("roll back");
    assert_eq!(restored.id, old.id);
    assert_eq!(restored.status, Status::Active);
    assert!(restored.grace_until.is_none());
    let (active, value) = f
        .vault
        .active("github", "ci")
        .expect("active")
        .expect("some");
    assert_eq!((active.id, value.expose()), (old.id.clone(), &b"v1"[..]));
    assert!(matches!(
        f.vault.get(&new.id),
        Err(VaultError::Revoked { .. })
    ));
    assert!(matches!(
        f.vault.roll_back(&new.id),
        Err(VaultError::NoRollback { .. })
    ));
    assert!(matches!(
        f.vault.roll_back(&old.id),
        Err(VaultError::NoRollback { .. })
    ));
}

#[test]
fn expired_credentials_are_not_usable() {
    let mut f = Fixture::new();
    let in_a_day = SystemTime::now() + Duration::from_secs(86_400);
    let meta = f
        .vault
        .put("github", "ci", &secret("v1"), Some(in_a_day))
        .expect("put");
    assert_eq!(meta.expires, Some(store::stored(in_a_day)));
    assert_eq!(f.vault.usable("github", "ci").expect("usable").len(), 1);
    let later = in_a_day + Duration::from_secs(1);
    assert!(
        f.vault
            .usable_at("github", "ci", later)
            .expect("usable")
            .is_empty()
    );
    assert!(f.vault.active("github", "ci").expect("active").is_some());
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let mut f = Fixture::new();
    let past = SystemTime::now() - Duration::from_secs(1);
    let long = "x".repeat(257);
    let cases: Vec<(&str, &str, Secret, Option<SystemTime>)> = vec![
        ("github", "ci", Secret::new(Vec::new()), None),
        (
            "github",
            "ci",
            Secret::new(vec![b'a'; MAX_SECRET_LEN + 1]),
            None,
        ),
        ("", "ci", secret("v"), None),
        ("github", "", secret("v"), None),
        ("github", "a\0b", secret("v"), None),
        ("github", "a\nb", secret("v"), None),
        ("github", " ci", secret("v"), None),
        ("github", &long, secret("v"), None),
        ("github", "ci", secret("v"), Some(past)),
    ];
    for (integration, account, value, expires) in cases {
        let res = f.vault.put(integration, account, &value, expires);
        assert!(res.is_err(), "accepted {integration:?}/{account:?}");
    }
    assert!(f.vault.list().expect("list").is_empty());
    f.vault
        .put(
            "github",
            "ci",
            &Secret::new(vec![b'a'; MAX_SECRET_LEN]),
            None,
        )
        .expect("the largest secret fits");
}

#[test]
fn newer_schemas_and_foreign_databases_are_refused() {
    let dir = TempDir::new();
    let newer = dir.path().join("newer.db");
    drop(Vault::open(&newer, &key(1)).expect("create"));
    Connection::open(&newer)
        .expect("raw")
        .pragma_update(None, "user_version", 99)
        .expect("bump");
    let err = Vault::open(&newer, &key(1)).err().expect("refused");
    assert!(
        matches!(err, VaultError::SchemaVersion { found: 99, .. }),
        "{err}"
    );

    let foreign = dir.path().join("foreign.db");
    Connection::open(&foreign)
        .expect("raw")
        .execute_batch("CREATE TABLE t (x)")
        .expect("create");
    let err = Vault::open(&foreign, &key(1)).err().expect("refused");
    assert!(matches!(err, VaultError::Corrupt { .. }), "{err}");

    let garbage = dir.path().join("garbage.db");
    fs::write(&garbage, vec![0x42u8; 4096]).expect("write");
    let err = Vault::open(&garbage, &key(1)).err().expect("refused");
    assert!(matches!(err, VaultError::Sqlite { .. }), "{err}");
    assert_eq!(fs::read(&garbage).expect("read"), vec![0x42u8; 4096]);
}
