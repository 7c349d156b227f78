//! The vault's SQLite file: connection settings, schema and its version, row mapping.
//!
//! Owns: how `vault.db` is opened (pragmas, file mode), created and migrated, and the SQL
//! that reads and writes rows. Must never: store a value that is not sealed, or open a
//! file whose schema is newer than it knows.
//!
//! Journal: SQLite's rollback journal (`journal_mode=DELETE`) with `synchronous=FULL`,
//! deliberately not WAL. The vault is written rarely (put, rotate, revoke) and read
//! briefly, so WAL's concurrent readers buy nothing, while the rollback journal keeps the
//! vault a single file between transactions (no `-wal`/`-shm` beside it, no shared-memory
//! mapping, works on any filesystem a state_dir may live on, a copy of the one file is a
//! backup) and a transaction cut short by a crash is undone by the next opener from the
//! hot journal. Only sealed values ever reach SQLite, so no journal, page or temp file
//! can hold a plain value; `secure_delete` also zeroes freed cells (an erased revoked
//! value leaves no ciphertext behind in the file) and `temp_store=MEMORY` keeps
//! SQLite's temporary tables and indices off the disk.

use std::{
    fs::{DirBuilder, OpenOptions},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, Row, params};

use super::{CredentialMeta, Status, VaultError, seal::Sealer};

/// `PRAGMA user_version` of the schema below. Version 1 had no PENDING credentials and
/// no rotation journal; [`migrate`] brings it forward.
pub const SCHEMA_VERSION: i64 = 2;

/// The credentials table (its name a parameter, for the rebuild that migrates version
/// 1). Times are whole seconds since the Unix epoch. Exactly one ACTIVE row per
/// integration and account (the partial unique index), and at most one PENDING; a
/// DEPRECATED row has a grace end; a REVOKED row has its value erased (nonce and
/// ciphertext NULL).
fn credentials_table(name: &str) -> String {
    format!(
        "CREATE TABLE {name} (
    id           TEXT PRIMARY KEY NOT NULL CHECK (id GLOB 'cred_*'),
    integration  TEXT NOT NULL CHECK (length(integration) > 0),
    account      TEXT NOT NULL CHECK (length(account) > 0),
    status       TEXT NOT NULL CHECK (status IN ('active', 'deprecated', 'revoked', 'pending')),
    created      INTEGER NOT NULL,
    expires      INTEGER,
    rotated_from TEXT REFERENCES credentials (id),
    grace_until  INTEGER,
    revoked      INTEGER,
    nonce        BLOB CHECK (nonce IS NULL OR length(nonce) = 12),
    ciphertext   BLOB CHECK (ciphertext IS NULL OR length(ciphertext) >= 16),
    CHECK ((status = 'deprecated') = (grace_until IS NOT NULL)),
    CHECK ((status = 'revoked') = (revoked IS NOT NULL)),
    CHECK ((status = 'revoked') = (nonce IS NULL)),
    CHECK ((nonce IS NULL) = (ciphertext IS NULL))
) STRICT;"
    )
}

/// Indexes of the credentials table.
const CREDENTIAL_INDEXES: &str = "
CREATE UNIQUE INDEX one_active_per_account
    ON credentials (integration, account) WHERE status = 'active';
CREATE UNIQUE INDEX one_pending_per_account
    ON credentials (integration, account) WHERE status = 'pending';
";

const KEY_CHECK: &str = "
CREATE TABLE key_check (
    only       INTEGER PRIMARY KEY CHECK (only = 1),
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL
) STRICT;
";

/// The rotation journal: one row per rotation, its id the idempotency key. A rotation is
/// open until it is retired, rolled back, failed or aborted; at most one is open per
/// account (the partial unique index). A rotation past `begun` names its new
/// credential, and both credentials belong to the rotation's account (the triggers):
/// no code path can point a rotation at another account's row.
const ROTATIONS: &str = "
CREATE TABLE rotations (
    id           TEXT PRIMARY KEY NOT NULL CHECK (id GLOB 'rot_*'),
    integration  TEXT NOT NULL CHECK (length(integration) > 0),
    account      TEXT NOT NULL CHECK (length(account) > 0),
    trigger      TEXT NOT NULL CHECK (length(trigger) > 0),
    compromised  INTEGER NOT NULL CHECK (compromised IN (0, 1)),
    step         TEXT NOT NULL CHECK (step IN ('begun', 'created', 'tested', 'finished',
                     'watched', 'retired', 'rolled_back', 'failed', 'aborted')),
    old_id       TEXT NOT NULL REFERENCES credentials (id),
    new_id       TEXT REFERENCES credentials (id),
    attempt      INTEGER NOT NULL CHECK (attempt >= 0),
    create_calls INTEGER NOT NULL DEFAULT 0 CHECK (create_calls >= 0),
    next_attempt INTEGER,
    last_error   TEXT,
    started      INTEGER NOT NULL,
    updated      INTEGER NOT NULL,
    CHECK (step IN ('begun', 'failed', 'aborted') OR new_id IS NOT NULL),
    CHECK (step != 'begun' OR new_id IS NULL)
) STRICT;
CREATE UNIQUE INDEX one_open_rotation_per_account
    ON rotations (integration, account)
    WHERE step IN ('begun', 'created', 'tested', 'finished', 'watched');
CREATE TRIGGER rotation_credentials_of_its_account_insert
BEFORE INSERT ON rotations
WHEN NOT EXISTS (SELECT 1 FROM credentials c WHERE c.id = NEW.old_id
                 AND c.integration = NEW.integration AND c.account = NEW.account)
BEGIN SELECT RAISE(ABORT, 'a rotation names a credential of another account'); END;
CREATE TRIGGER rotation_credentials_of_its_account_update
BEFORE UPDATE OF new_id, old_id, integration, account ON rotations
WHEN NOT EXISTS (SELECT 1 FROM credentials c WHERE c.id = NEW.old_id
                 AND c.integration = NEW.integration AND c.account = NEW.account)
  OR (NEW.new_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM credentials c
      WHERE c.id = NEW.new_id AND c.integration = NEW.integration
      AND c.account = NEW.account))
BEGIN SELECT RAISE(ABORT, 'a rotation names a credential of another account'); END;
";

/// The metadata columns, in the order [`meta_from_row`] reads them.
pub const META_COLUMNS: &str =
    "id, integration, account, status, created, expires, rotated_from, grace_until, revoked";

pub fn sql_err(path: &Path, context: &'static str) -> impl FnOnce(rusqlite::Error) -> VaultError {
    let path = path.to_owned();
    move |source| VaultError::Sqlite {
        path,
        context,
        source,
    }
}

/// Opens (creating when missing) the vault at `path`, migrates it, and checks that
/// `sealer`'s key is the vault's.
pub fn open(path: &Path, sealer: &Sealer) -> Result<Connection, VaultError> {
    let create_err = |source| VaultError::Create {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(create_err)?;
    }
    // Created here with mode 0600 rather than by SQLite (0644); SQLite gives its journal
    // the database file's mode.
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(create_err)?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql_err(path, "opening the database"))?;
    // The broker and a CLI command may meet on the lock; wait rather than fail.
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(sql_err(path, "setting busy_timeout"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .map_err(sql_err(
            path,
            "reading the database (is it an SQLite file?)",
        ))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(VaultError::Corrupt {
            path: path.to_owned(),
            what: format!("journal_mode stays {mode:?}, expected \"delete\""),
        });
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA secure_delete = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA foreign_keys = ON;
         PRAGMA trusted_schema = OFF;",
    )
    .map_err(sql_err(path, "setting pragmas"))?;
    let mut conn = conn;
    migrate(&mut conn, path, sealer)?;
    check_key(&conn, path, sealer)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path, sealer: &Sealer) -> Result<(), VaultError> {
    match version(conn, path)? {
        SCHEMA_VERSION => Ok(()),
        0 => create(conn, path, sealer),
        1 => migrate_from_1(conn, path),
        found => Err(VaultError::SchemaVersion {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        }),
    }
}

fn version(c: &Connection, path: &Path) -> Result<i64, VaultError> {
    c.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_err(path, "reading the schema version"))
}

/// A new file: the schema created under the write lock, re-checking in case another
/// process created it meanwhile.
fn create(conn: &mut Connection, path: &Path, sealer: &Sealer) -> Result<(), VaultError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql_err(path, "starting the schema transaction"))?;
    if version(&tx, path)? == SCHEMA_VERSION {
        return Ok(());
    }
    let tables: i64 = tx
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(sql_err(path, "reading the schema"))?;
    if tables != 0 {
        return Err(VaultError::Corrupt {
            path: path.to_owned(),
            what: format!(
                "an SQLite database with {tables} schema objects but no hb vault version"
            ),
        });
    }
    let schema = format!(
        "{}{CREDENTIAL_INDEXES}{KEY_CHECK}{ROTATIONS}",
        credentials_table("credentials")
    );
    tx.execute_batch(&schema)
        .map_err(sql_err(path, "creating the schema"))?;
    let kcv = sealer.seal_key_check().map_err(|_| VaultError::Random)?;
    tx.execute(
        "INSERT INTO key_check (only, nonce, ciphertext) VALUES (1, ?1, ?2)",
        params![&kcv.nonce[..], kcv.ciphertext],
    )
    .map_err(sql_err(path, "storing the key check value"))?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sql_err(path, "setting the schema version"))?;
    tx.commit().map_err(sql_err(path, "committing the schema"))
}

/// Version 1 → 2 in one transaction: the credentials table rebuilt to take PENDING
/// (SQLite cannot change a CHECK in place), the rotation journal added. Foreign keys
/// are off while the table is swapped and checked before the commit.
fn migrate_from_1(conn: &mut Connection, path: &Path) -> Result<(), VaultError> {
    conn.pragma_update(None, "foreign_keys", "OFF")
        .map_err(sql_err(path, "pausing foreign keys"))?;
    let migrated = (|| {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql_err(path, "starting the migration"))?;
        if version(&tx, path)? != 1 {
            return Ok(());
        }
        let rebuild = format!(
            "{}
             INSERT INTO credentials_v2 SELECT id, integration, account, status, created,
                 expires, rotated_from, grace_until, revoked, nonce, ciphertext
                 FROM credentials;
             DROP TABLE credentials;
             ALTER TABLE credentials_v2 RENAME TO credentials;
             {CREDENTIAL_INDEXES}{ROTATIONS}",
            credentials_table("credentials_v2")
        );
        tx.execute_batch(&rebuild)
            .map_err(sql_err(path, "migrating the schema to version 2"))?;
        let dangling: i64 = tx
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .map_err(sql_err(path, "checking foreign keys"))?;
        if dangling != 0 {
            return Err(VaultError::Corrupt {
                path: path.to_owned(),
                what: format!("{dangling} credentials name a missing credential"),
            });
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sql_err(path, "setting the schema version"))?;
        tx.commit()
            .map_err(sql_err(path, "committing the migration"))
    })();
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sql_err(path, "restoring foreign keys"))?;
    migrated
}

fn check_key(conn: &Connection, path: &Path, sealer: &Sealer) -> Result<(), VaultError> {
    let kcv: Option<(Vec<u8>, Vec<u8>)> = conn
        .query_row(
            "SELECT nonce, ciphertext FROM key_check WHERE only = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sql_err(path, "reading the key check value"))?;
    let Some((nonce, ciphertext)) = kcv else {
        return Err(VaultError::Corrupt {
            path: path.to_owned(),
            what: "the key check value is missing".into(),
        });
    };
    if sealer.key_check_opens(&nonce, &ciphertext) {
        Ok(())
    } else {
        Err(VaultError::WrongMasterKey {
            path: path.to_owned(),
        })
    }
}

pub fn to_unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub fn from_unix(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// `t` as stored (whole seconds), so returned metadata equals what a later read gives.
pub fn stored(t: SystemTime) -> SystemTime {
    from_unix(to_unix(t))
}

/// Reads [`META_COLUMNS`].
pub fn meta_from_row(r: &Row<'_>) -> rusqlite::Result<CredentialMeta> {
    let status: String = r.get(3)?;
    let status = Status::parse(&status).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            3,
            rusqlite::types::Type::Text,
            format!("unknown status {status:?}").into(),
        )
    })?;
    Ok(CredentialMeta {
        id: r.get(0)?,
        integration: r.get(1)?,
        account: r.get(2)?,
        status,
        created: from_unix(r.get(4)?),
        expires: r.get::<_, Option<i64>>(5)?.map(from_unix),
        rotated_from: r.get(6)?,
        grace_until: r.get::<_, Option<i64>>(7)?.map(from_unix),
        revoked: r.get::<_, Option<i64>>(8)?.map(from_unix),
    })
}

/// One row's metadata and sealed value (`None` when revoked).
pub type SealedRow = (CredentialMeta, Option<(Vec<u8>, Vec<u8>)>);

pub fn sealed_from_row(r: &Row<'_>) -> rusqlite::Result<SealedRow> {
    let meta = meta_from_row(r)?;
    let nonce: Option<Vec<u8>> = r.get(9)?;
    let ciphertext: Option<Vec<u8>> = r.get(10)?;
    Ok((meta, nonce.zip(ciphertext)))
}

/// Rows matching `where_sql`, with their sealed values.
pub fn select_sealed(
    conn: &Connection,
    path: &Path,
    where_sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<SealedRow>, VaultError> {
    let sql = format!("SELECT {META_COLUMNS}, nonce, ciphertext FROM credentials {where_sql}");
    let mut stmt = conn
        .prepare(&sql)
        .map_err(sql_err(path, "preparing a query"))?;
    let rows = stmt
        .query_map(args, sealed_from_row)
        .map_err(sql_err(path, "reading credentials"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sql_err(path, "reading credentials"))
}

pub fn insert(
    conn: &Connection,
    path: &Path,
    meta: &CredentialMeta,
    nonce: &[u8],
    ciphertext: &[u8],
) -> Result<(), VaultError> {
    conn.execute(
        "INSERT INTO credentials (id, integration, account, status, created, expires,
                                  rotated_from, grace_until, revoked, nonce, ciphertext)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            meta.id,
            meta.integration,
            meta.account,
            meta.status.as_str(),
            to_unix(meta.created),
            meta.expires.map(to_unix),
            meta.rotated_from,
            meta.grace_until.map(to_unix),
            meta.revoked.map(to_unix),
            nonce,
            ciphertext,
        ],
    )
    .map_err(sql_err(path, "inserting a credential"))?;
    Ok(())
}
