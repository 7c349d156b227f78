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

    /// `value` stored for `integration`/`account`, with no expiry.
    fn put(&mut self, integration: &str, account: &str, value: &str) -> CredentialMeta {
        self.vault
            .put(integration, account, &secret(value), None)
            .expect("put")
    }

    /// `github`/`ci` stored as `v1`, then rotated by id to `v2` with `grace`: the old
    /// credential and the new.
    fn rotated(&mut self, grace: Duration) -> (CredentialMeta, CredentialMeta) {
        let old = self.put("github", "ci", "v1");
        let new = self
            .vault
            .rotate(Target::Id(&old.id), &secret("v2"), grace, None)
            .expect("rotate");
        (old, new)
    }

    /// The active credential of `github`/`ci` and its value; there must be one.
    fn active(&self) -> (CredentialMeta, Secret) {
        self.vault
            .active("github", "ci")
            .expect("active")
            .expect("some")
    }
}

#[test]
fn put_then_active_gives_the_value_and_list_only_metadata() {
    let mut f = Fixture::new();
    let meta = f.put("github", "ci", "ghp_first");
    assert!(
        meta.id.starts_with("cred_") && meta.id.len() == 5 + 24,
        "{}",
        meta.id
    );
    assert_eq!(meta.status, Status::Active);
    let (active, value) = f.active();
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
    let first = f.put("github", "ci", "a");
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
    let old = f.put("github", "ci", "v1");
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

    let (active, value) = f.active();
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
    let (old, new) = f.rotated(Duration::from_secs(60));
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
    let old = f.put("github", "ci", "v1");
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
    let (active, value) = f.active();
    assert_eq!(active.id, old.id);
    assert_eq!(value.expose(), b"v1");
}

#[test]
fn a_value_moved_to_another_row_or_account_fails_naming_the_row() {
    let mut f = Fixture::new();
    let a = f.put("github", "alice", "token-a");
    let b = f.put("github", "bob", "token-b");
    let c = f.put("github", "carol", "token-c");
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
    let a = f.put("github", "ci", "token-a");
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
    let (old, new) = f.rotated(Duration::from_secs(600));
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
    let (old, new) = f.rotated(Duration::from_secs(60));
    let restored = f.vault.roll_back(&new.id).expect("roll back");
    assert_eq!(restored.id, old.id);
    assert_eq!(restored.status, Status::Active);
    assert!(restored.grace_until.is_none());
    let (active, value) = f.active();
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

mod journal {
    //! The rotation journal's steps and the invariants its schema holds.

    use super::*;
    use crate::vault::rotations::Step;

    /// A rotation of `gh`/`ci` begun (`trigger`, `compromised`) with `value` stored as
    /// its pending credential.
    fn pending(f: &mut Fixture, trigger: &str, compromised: bool, value: &str) -> Rotation {
        let r = f
            .vault
            .begin_rotation("gh", "ci", trigger, compromised)
            .expect("begin");
        f.vault
            .store_pending(&r.id, &secret(value), None)
            .expect("create")
    }

    fn actives(f: &Fixture) -> Vec<String> {
        f.vault
            .list()
            .expect("list")
            .into_iter()
            .filter(|m| m.status == Status::Active)
            .map(|m| m.id)
            .collect()
    }

    fn status(f: &Fixture, id: &str) -> Status {
        f.vault
            .list()
            .expect("list")
            .into_iter()
            .find(|m| m.id == id)
            .expect("row")
            .status
    }

    #[test]
    fn a_rotation_runs_begin_create_test_finish_watch_retire_with_one_active_throughout() {
        let mut f = Fixture::new();
        let old = f.put("gh", "ci", "v-old");
        let r = f
            .vault
            .begin_rotation("gh", "ci", "manual", false)
            .expect("begin");
        assert!(r.id.starts_with("rot_") && r.id.len() == 4 + 24, "{}", r.id);
        assert_eq!((r.step, r.old_id.as_str()), (Step::Begun, old.id.as_str()));
        let r = f
            .vault
            .store_pending(&r.id, &secret("v-new"), None)
            .expect("create");
        let new_id = r.new_id.clone().expect("new id");
        assert_eq!(r.step, Step::Created);
        assert_eq!(status(&f, &new_id), Status::Pending);
        // Pending is never usable: the broker still gets the old value only.
        let usable = f.vault.usable("gh", "ci").expect("usable");
        assert_eq!(usable.len(), 1);
        assert_eq!(usable[0].1.expose(), b"v-old");
        assert_eq!(actives(&f), [old.id.as_str()]);
        // The test step reads the pending value.
        assert_eq!(
            f.vault.rotation_value(&r.id).expect("value").1.expose(),
            b"v-new"
        );
        // Creating again keeps the stored value: a provider is never asked twice.
        let again = f
            .vault
            .store_pending(&r.id, &secret("v-other"), None)
            .expect("create again");
        assert_eq!(again.new_id.as_deref(), Some(new_id.as_str()));
        assert_eq!(f.value(&new_id), b"v-new");
        f.vault.mark_tested(&r.id).expect("tested");
        let done = f
            .vault
            .finish_rotation(&r.id, Duration::from_secs(600))
            .expect("finish");
        assert_eq!(done.step, Step::Finished);
        assert_eq!(actives(&f), [new_id.as_str()]);
        assert_eq!(status(&f, &old.id), Status::Deprecated);
        let usable = f.vault.usable("gh", "ci").expect("usable");
        assert_eq!(
            usable
                .iter()
                .map(|(_, s)| s.expose().to_vec())
                .collect::<Vec<_>>(),
            [b"v-new".to_vec(), b"v-old".to_vec()],
            "the old one stays usable for its grace period"
        );
        // Finishing twice changes nothing.
        assert_eq!(
            f.vault
                .finish_rotation(&r.id, Duration::ZERO)
                .expect("again")
                .step,
            Step::Finished
        );
        assert_eq!(status(&f, &old.id), Status::Deprecated);
        f.vault.mark_watched(&r.id).expect("watched");
        let retired = f.vault.retire_rotation(&r.id).expect("retire");
        assert_eq!(retired.step, Step::Retired);
        assert_eq!(status(&f, &old.id), Status::Revoked);
        assert!(f.vault.open_rotations().expect("open").is_empty());
        assert_eq!(f.vault.rotations(None).expect("history").len(), 1);
        // The journal holds no value.
        let raw = f.raw();
        let dump: String = raw
            .query_row(
                "SELECT group_concat(quote(id) || quote(new_id) || quote(old_id) || \
                 quote(last_error) || quote(trigger)) FROM rotations",
                [],
                |r| r.get(0),
            )
            .expect("dump");
        assert!(!dump.contains("v-new") && !dump.contains("v-old"), "{dump}");
    }

    #[test]
    fn one_open_rotation_per_account_and_no_step_out_of_order() {
        let mut f = Fixture::new();
        f.put("gh", "ci", "v1");
        f.put("gh", "other", "w1");
        let r = f
            .vault
            .begin_rotation("gh", "ci", "manual", false)
            .expect("begin");
        match f.vault.begin_rotation("gh", "ci", "expiry", false) {
            Err(VaultError::RotationOpen { id, step, .. }) => {
                assert_eq!((id, step), (r.id.clone(), Step::Begun));
            }
            other => panic!("a second open rotation: {other:?}"),
        }
        // Another account rotates independently.
        f.vault
            .begin_rotation("gh", "other", "manual", false)
            .expect("other account");
        // The schema itself refuses a second open row, whatever the code does.
        let raw = f.raw();
        let forced = raw.execute(
            "INSERT INTO rotations SELECT 'rot_forced', integration, account, trigger,
                 compromised, step, old_id, new_id, attempt, create_calls, next_attempt,
                 last_error, started, updated FROM rotations WHERE id = ?1",
            [&r.id],
        );
        assert!(forced.is_err(), "unique index: {forced:?}");
        // And a rotation naming another account's credential.
        let other_cred: String = raw
            .query_row(
                "SELECT id FROM credentials WHERE account = 'other'",
                [],
                |x| x.get(0),
            )
            .expect("other");
        let crossed = raw.execute(
            "UPDATE rotations SET old_id = ?1 WHERE id = ?2",
            [&other_cred, &r.id],
        );
        assert!(crossed.is_err(), "trigger: {crossed:?}");
        // Steps out of order are refused and change nothing.
        assert!(matches!(
            f.vault.finish_rotation(&r.id, Duration::ZERO),
            Err(VaultError::RotationStep { .. })
        ));
        assert!(matches!(
            f.vault.mark_tested(&r.id),
            Err(VaultError::RotationStep { .. })
        ));
        assert!(matches!(
            f.vault.retire_rotation(&r.id),
            Err(VaultError::RotationStep { .. })
        ));
        assert_eq!(f.vault.rotation(&r.id).expect("row").step, Step::Begun);
        assert!(matches!(
            f.vault.rotation("rot_nope"),
            Err(VaultError::NoRotation { .. })
        ));
        assert!(matches!(
            f.vault.begin_rotation("gh", "nobody", "manual", false),
            Err(VaultError::NoActive { .. })
        ));
    }

    #[test]
    fn failing_or_aborting_before_finish_revokes_the_pending_value_only() {
        let mut f = Fixture::new();
        let old = f.put("gh", "ci", "v1");
        let r = pending(&mut f, "manual", false, "v2");
        let later = SystemTime::now() + Duration::from_secs(30);
        let r2 = f
            .vault
            .record_attempt_failure(&r.id, "verify_401", later)
            .expect("attempt");
        assert_eq!((r2.step, r2.attempt), (Step::Created, 1));
        assert_eq!(r2.last_error.as_deref(), Some("verify_401"));
        let failed = f
            .vault
            .abandon_rotation(&r.id, Step::Failed, "verify_failed")
            .expect("fail");
        assert_eq!(failed.step, Step::Failed);
        let new_id = failed.new_id.expect("new id");
        assert_eq!(status(&f, &new_id), Status::Revoked);
        assert_eq!(actives(&f), [old.id.as_str()]);
        assert_eq!(f.value(&old.id), b"v1");
        // Closed: the account can rotate again, and the closed one takes no step.
        assert!(matches!(
            f.vault.store_pending(&r.id, &secret("v3"), None),
            Err(VaultError::RotationStep { .. })
        ));
        let again = f
            .vault
            .begin_rotation("gh", "ci", "manual", false)
            .expect("begin again");
        let aborted = f
            .vault
            .abandon_rotation(&again.id, Step::Aborted, "operator")
            .expect("abort");
        assert_eq!((aborted.step, aborted.new_id), (Step::Aborted, None));
        assert_eq!(actives(&f), [old.id]);
    }

    #[test]
    fn a_manual_rotation_meanwhile_supersedes_the_journal_one() {
        let mut f = Fixture::new();
        let old = f.put("gh", "ci", "v1");
        let r = f
            .vault
            .begin_rotation("gh", "ci", "manual", false)
            .expect("begin");
        f.vault
            .store_pending(&r.id, &secret("v2"), None)
            .expect("create");
        f.vault.mark_tested(&r.id).expect("tested");
        let by_hand = f
            .vault
            .rotate(
                super::super::Target::Id(&old.id),
                &secret("v-hand"),
                Duration::from_secs(60),
                None,
            )
            .expect("by hand");
        assert!(matches!(
            f.vault.finish_rotation(&r.id, Duration::ZERO),
            Err(VaultError::RotationSuperseded { .. })
        ));
        let row = f.vault.rotation(&r.id).expect("row");
        assert_eq!(row.step, Step::Failed);
        assert_eq!(row.last_error.as_deref(), Some("superseded"));
        assert_eq!(actives(&f), [by_hand.id]);
        assert_eq!(status(&f, &row.new_id.expect("new")), Status::Revoked);
    }

    #[test]
    fn a_compromised_rotation_gives_no_grace_and_cannot_roll_back() {
        let mut f = Fixture::new();
        let old = f.put("gh", "ci", "v1");
        let r = f
            .vault
            .begin_rotation("gh", "ci", "reflection", true)
            .expect("begin");
        f.vault
            .store_pending(&r.id, &secret("v2"), None)
            .expect("create");
        f.vault.mark_tested(&r.id).expect("tested");
        f.vault
            .finish_rotation(&r.id, Duration::from_secs(3600))
            .expect("finish");
        let usable = f.vault.usable("gh", "ci").expect("usable");
        assert_eq!(
            usable.len(),
            1,
            "the compromised value is not usable at all"
        );
        assert_eq!(usable[0].1.expose(), b"v2");
        assert!(matches!(
            f.vault.roll_back_rotation(&r.id),
            Err(VaultError::NoRollback { .. })
        ));
        assert_eq!(status(&f, &old.id), Status::Deprecated);
    }

    #[test]
    fn a_compromise_signal_marks_the_open_rotation_and_ends_a_finished_ones_grace() {
        let mut f = Fixture::new();
        assert!(
            f.vault
                .compromise_open_rotation("gh", "ci")
                .expect("none open")
                .is_none()
        );
        f.put("gh", "ci", "v1");
        // Before finish: marked, so finishing gives the old value no grace.
        let r = f
            .vault
            .begin_rotation("gh", "ci", "expiry", false)
            .expect("begin");
        let marked = f
            .vault
            .compromise_open_rotation("gh", "ci")
            .expect("mark")
            .expect("open");
        assert!(marked.compromised && marked.id == r.id);
        f.vault
            .store_pending(&r.id, &secret("v2"), None)
            .expect("create");
        f.vault.mark_tested(&r.id).expect("tested");
        f.vault
            .finish_rotation(&r.id, Duration::from_secs(3600))
            .expect("finish");
        assert_eq!(f.vault.usable("gh", "ci").expect("usable").len(), 1);
        f.vault.retire_rotation(&r.id).expect("retire");
        // After finish: the old value's grace ends at once.
        let r = f
            .vault
            .begin_rotation("gh", "ci", "expiry", false)
            .expect("begin");
        f.vault
            .store_pending(&r.id, &secret("v3"), None)
            .expect("create");
        f.vault.mark_tested(&r.id).expect("tested");
        f.vault
            .finish_rotation(&r.id, Duration::from_secs(3600))
            .expect("finish");
        assert_eq!(
            f.vault.usable("gh", "ci").expect("usable").len(),
            2,
            "in grace"
        );
        let marked = f
            .vault
            .compromise_open_rotation("gh", "ci")
            .expect("mark")
            .expect("open");
        assert!(marked.compromised);
        let usable = f.vault.usable("gh", "ci").expect("usable");
        assert_eq!(usable.len(), 1, "grace ended");
        assert_eq!(usable[0].1.expose(), b"v3");
    }

    #[test]
    fn a_failed_new_value_rolls_back_to_the_old_one() {
        let mut f = Fixture::new();
        let old = f.put("gh", "ci", "v1");
        let r = pending(&mut f, "expiry", false, "v2");
        f.vault.mark_tested(&r.id).expect("tested");
        f.vault
            .finish_rotation(&r.id, Duration::from_secs(600))
            .expect("finish");
        let back = f.vault.roll_back_rotation(&r.id).expect("roll back");
        assert_eq!(back.step, Step::RolledBack);
        assert_eq!(actives(&f), [old.id.as_str()]);
        assert_eq!(status(&f, &r.new_id.expect("new")), Status::Revoked);
        assert!(f.vault.open_rotations().expect("open").is_empty());
    }

    #[test]
    fn a_version_1_vault_is_migrated_with_its_credentials() {
        let dir = TempDir::new();
        let db = dir.path().join("vault.db");
        let (old, rotated) = {
            let mut v = Vault::open(&db, &key(3)).expect("open");
            let old = v.put("gh", "ci", &secret("v1"), None).expect("put");
            let rotated = v
                .rotate(
                    super::super::Target::Id(&old.id),
                    &secret("v2"),
                    Duration::from_secs(600),
                    None,
                )
                .expect("rotate");
            (old, rotated)
        };
        // Turn the file back into version 1: its credentials table without 'pending',
        // no journal.
        {
            let raw = Connection::open(&db).expect("raw");
            raw.execute_batch(
                "PRAGMA foreign_keys = OFF;
                 BEGIN;
                 CREATE TABLE c1 AS SELECT * FROM credentials;
                 DROP TABLE rotations;
                 DROP TABLE credentials;
                 CREATE TABLE credentials (
                    id TEXT PRIMARY KEY NOT NULL CHECK (id GLOB 'cred_*'),
                    integration TEXT NOT NULL CHECK (length(integration) > 0),
                    account TEXT NOT NULL CHECK (length(account) > 0),
                    status TEXT NOT NULL CHECK (status IN ('active', 'deprecated', 'revoked')),
                    created INTEGER NOT NULL, expires INTEGER,
                    rotated_from TEXT REFERENCES credentials (id),
                    grace_until INTEGER, revoked INTEGER,
                    nonce BLOB, ciphertext BLOB) STRICT;
                 INSERT INTO credentials SELECT * FROM c1;
                 DROP TABLE c1;
                 CREATE UNIQUE INDEX one_active_per_account
                    ON credentials (integration, account) WHERE status = 'active';
                 PRAGMA user_version = 1;
                 COMMIT;",
            )
            .expect("downgrade");
        }
        let mut v = Vault::open(&db, &key(3)).expect("migrated");
        let raw = Connection::open(&db).expect("raw");
        let version: i64 = raw
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, store::SCHEMA_VERSION);
        let list = v.list().expect("list");
        assert_eq!(list.len(), 2);
        assert_eq!(v.get(&old.id).expect("old").1.expose(), b"v1");
        assert_eq!(v.get(&rotated.id).expect("new").1.expose(), b"v2");
        // The journal works on the migrated file.
        let r = v
            .begin_rotation("gh", "ci", "manual", false)
            .expect("begin");
        v.store_pending(&r.id, &secret("v3"), None)
            .expect("pending");
        let check: i64 = raw
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .expect("fk check");
        assert_eq!(check, 0);
    }
}
