//! The credential vault: secrets at rest in `state_dir/vault.db`.
//!
//! Owns: the credential life cycle — ACTIVE (at most one per integration and account) →
//! DEPRECATED (still usable until its grace period ends) → REVOKED (value erased) — with
//! atomic rotation, and sealing of every stored value with AES-256-GCM under the master
//! key file, bound to its row (`seal`), in SQLite (`store`). Must never: write a plain
//! value anywhere (database, journal, temp file, log, error), hand out a value whose seal
//! did not verify, or let two credentials of one account be active.
//!
//! Plain values only ever live in [`Secret`]s. A [`Vault`] is one SQLite connection
//! (`Send`, not `Sync`): the broker keeps it behind a mutex or on a blocking thread.

mod key;
mod rotations;
mod seal;
mod store;

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};
use serde::{Serialize, Serializer};

pub use self::key::MasterKey;
pub use self::rotations::{Rotation, Step};
use self::{
    seal::{Sealer, credential_aad},
    store::{META_COLUMNS, sql_err, stored, to_unix},
};
use crate::secret::Secret;

/// The vault's file name inside `agent.state_dir`.
pub const DB_FILE: &str = "vault.db";
/// The longest secret the vault takes (tokens, keys, small JSON service-account files).
pub const MAX_SECRET_LEN: usize = 64 * 1024;
/// The longest integration or account name.
pub const MAX_NAME_LEN: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("cannot read master key file {path}")]
    KeyRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("master key file {path} is not a regular file")]
    KeyNotFile { path: PathBuf },
    #[error(
        "master key file {path} has mode {mode:04o}: group and others must have no access \
         (chmod 600 {path})"
    )]
    KeyMode { path: PathBuf, mode: u32 },
    #[error(
        "master key file {path} is owned by uid {owner}: only root or the user hb runs as \
         (uid {euid}) may own it, as its owner can read it (chown {euid} {path})"
    )]
    KeyOwner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error(
        "master key file {path} holds {found} bytes: it must hold exactly 32 random bytes \
         (hb-agent vault init creates one)"
    )]
    KeyLength { path: PathBuf, found: u64 },
    #[error(
        "master key file {path} already exists: refusing to replace it (every credential \
         sealed under it would become unreadable)"
    )]
    KeyExists { path: PathBuf },
    #[error("cannot create master key file {path}")]
    KeyWrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the system random number generator failed")]
    Random,
    #[error("cannot create vault {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("vault {path}: {context}")]
    Sqlite {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("vault {path}: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error(
        "wrong master key for vault {path}: the vault was created under another key \
         (check agent.master_key_file)"
    )]
    WrongMasterKey { path: PathBuf },
    #[error(
        "vault {path} has schema version {found}; this hb-agent knows version {supported} \
         and older"
    )]
    SchemaVersion {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "credential {id} failed authentication: its stored value or its id, integration or \
         account was changed (the vault was tampered with or corrupted)"
    )]
    Tampered { id: String },
    #[error(
        "{integration}/{account} already has an active credential ({id}): use `vault rotate` \
         to replace it"
    )]
    AlreadyActive {
        integration: String,
        account: String,
        id: String,
    },
    #[error("{integration}/{account} has no active credential")]
    NoActive {
        integration: String,
        account: String,
    },
    #[error("no credential with id {id:?}")]
    NotFound { id: String },
    #[error(
        "credential {id} is {status}, not active: only the active credential of \
         {integration}/{account} can be rotated"
    )]
    NotActive {
        id: String,
        status: Status,
        integration: String,
        account: String,
    },
    #[error("credential {id} is revoked: its value was erased")]
    Revoked { id: String },
    #[error("credential {id} cannot be rolled back: {reason}")]
    NoRollback { id: String, reason: &'static str },
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("the secret is empty")]
    EmptySecret,
    #[error("the secret is {len} bytes long; the vault takes at most {MAX_SECRET_LEN}")]
    SecretTooLong { len: usize },
    #[error("expiry {when} is not in the future")]
    ExpiryPassed { when: String },
    #[error(
        "{integration}/{account} already has an open rotation ({id}, at step {step}): \
         let it finish, abort it (`rotation abort`, before it finishes), or, if a key \
         leaked, trigger with --compromised (which supersedes one past its finish)"
    )]
    RotationOpen {
        integration: String,
        account: String,
        id: String,
        step: Step,
    },
    #[error("rotation {id} is at step {step}; this step needs {wanted}")]
    RotationStep {
        id: String,
        step: Step,
        wanted: &'static str,
    },
    #[error(
        "rotation {id} failed: the credential it was replacing ({old_id}) is no longer the \
         active one (replaced or revoked meanwhile)"
    )]
    RotationSuperseded { id: String, old_id: String },
    #[error("no rotation with id {id:?}")]
    NoRotation { id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The one credential handed out for new work.
    Active,
    /// Replaced by a rotation; still usable until `grace_until` (in-flight work).
    Deprecated,
    /// Never usable again; its value is erased.
    Revoked,
    /// Made by a rotation that has not finished: stored, tested, never handed out.
    Pending,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Deprecated => "deprecated",
            Status::Revoked => "revoked",
            Status::Pending => "pending",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Status::Active),
            "deprecated" => Some(Status::Deprecated),
            "revoked" => Some(Status::Revoked),
            "pending" => Some(Status::Pending),
            _ => None,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A credential's metadata: everything but its value. Times are whole seconds and
/// serialise as RFC 3339 (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialMeta {
    /// `cred_` + 24 hex digits (96 random bits).
    pub id: String,
    pub integration: String,
    pub account: String,
    pub status: Status,
    #[serde(serialize_with = "rfc3339")]
    pub created: SystemTime,
    /// When the credential itself stops working upstream, if known.
    #[serde(serialize_with = "rfc3339_opt")]
    pub expires: Option<SystemTime>,
    /// The credential this one replaced (set by rotation).
    pub rotated_from: Option<String>,
    /// Deprecated only: usable until then.
    #[serde(serialize_with = "rfc3339_opt")]
    pub grace_until: Option<SystemTime>,
    /// Revoked only: when.
    #[serde(serialize_with = "rfc3339_opt")]
    pub revoked: Option<SystemTime>,
}

impl CredentialMeta {
    /// Whether the broker may use it at `now`: active, or deprecated within its grace
    /// period, and not past its expiry.
    pub fn usable_at(&self, now: SystemTime) -> bool {
        let in_force = match self.status {
            Status::Active => true,
            Status::Deprecated => self.grace_until.is_some_and(|g| g > now),
            Status::Revoked | Status::Pending => false,
        };
        in_force && self.expires.is_none_or(|e| e > now)
    }
}

fn rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_seconds(*t))
}

fn rfc3339_opt<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

/// Which credential a rotation replaces.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// This credential, which must be the active one of its account.
    Id(&'a str),
    /// The active credential of this integration and account.
    Account {
        integration: &'a str,
        account: &'a str,
    },
}

/// The result of opening one stored value (`Vault::check`).
pub struct CheckedRow {
    pub meta: CredentialMeta,
    /// `None`: the value opened (or the row is revoked and holds none).
    pub error: Option<VaultError>,
}

pub struct Vault {
    conn: Connection,
    path: PathBuf,
    sealer: Sealer,
}

impl Vault {
    /// Opens the vault at `path` (created, with its folder, when missing). Fails with
    /// [`VaultError::WrongMasterKey`] when `key` is not the key the vault was created under.
    pub fn open(path: &Path, key: &MasterKey) -> Result<Self, VaultError> {
        let sealer = Sealer::new(key);
        let conn = store::open(path, &sealer)?;
        Ok(Self {
            conn,
            path: path.to_owned(),
            sealer,
        })
    }

    /// Stores a new active credential for `integration`/`account`, which must have none.
    pub fn put(
        &mut self,
        integration: &str,
        account: &str,
        secret: &Secret,
        expires: Option<SystemTime>,
    ) -> Result<CredentialMeta, VaultError> {
        check_name("integration", integration)?;
        check_name("account", account)?;
        check_secret(secret)?;
        let now = stored(SystemTime::now());
        let expires = check_expires(expires, now)?;
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err(path, "starting a transaction"))?;
        if let Some(existing) = active_meta(&tx, path, integration, account)? {
            return Err(VaultError::AlreadyActive {
                integration: integration.to_owned(),
                account: account.to_owned(),
                id: existing.id,
            });
        }
        let meta = CredentialMeta {
            id: new_id(&self.sealer)?,
            integration: integration.to_owned(),
            account: account.to_owned(),
            status: Status::Active,
            created: now,
            expires,
            rotated_from: None,
            grace_until: None,
            revoked: None,
        };
        insert_sealed(&tx, path, &self.sealer, &meta, secret)?;
        tx.commit().map_err(sql_err(path, "committing"))?;
        Ok(meta)
    }

    /// The active credential of `integration`/`account` and its value, whatever its
    /// expiry (see [`Vault::usable`] for what the broker may use now).
    pub fn active(
        &self,
        integration: &str,
        account: &str,
    ) -> Result<Option<(CredentialMeta, Secret)>, VaultError> {
        let rows = store::select_sealed(
            &self.conn,
            &self.path,
            "WHERE integration = ?1 AND account = ?2 AND status = 'active'",
            params![integration, account],
        )?;
        rows.into_iter()
            .next()
            .map(|row| self.open_row(row))
            .transpose()
    }

    /// One credential's metadata and value by id (not for revoked ones: their value is gone).
    pub fn get(&self, id: &str) -> Result<(CredentialMeta, Secret), VaultError> {
        let row = store::select_sealed(&self.conn, &self.path, "WHERE id = ?1", params![id])?
            .into_iter()
            .next()
            .ok_or_else(|| VaultError::NotFound { id: id.to_owned() })?;
        self.open_row(row)
    }

    /// Every credential's metadata (never a value), by integration, account and age.
    pub fn list(&self) -> Result<Vec<CredentialMeta>, VaultError> {
        let sql = format!(
            "SELECT {META_COLUMNS} FROM credentials ORDER BY integration, account, created, rowid"
        );
        let mut stmt = self
            .conn
            .prepare(&sql)
            .map_err(sql_err(&self.path, "preparing a query"))?;
        let rows = stmt
            .query_map([], store::meta_from_row)
            .map_err(sql_err(&self.path, "reading credentials"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql_err(&self.path, "reading credentials"))
    }

    /// Opens every stored value (dropping it at once) and reports per credential.
    pub fn check(&self) -> Result<Vec<CheckedRow>, VaultError> {
        let rows = store::select_sealed(
            &self.conn,
            &self.path,
            "ORDER BY integration, account, created, rowid",
            [],
        )?;
        Ok(rows
            .into_iter()
            .map(|(meta, sealed)| {
                let error = match sealed {
                    Some(_) => self.open_row((meta.clone(), sealed)).err(),
                    None => None,
                };
                CheckedRow { meta, error }
            })
            .collect())
    }

    /// Replaces the active credential `target` with `secret`, in one transaction: the old
    /// one becomes DEPRECATED, usable for `grace` more, the new one ACTIVE with
    /// `rotated_from` naming the old. Any failure leaves the vault as it was; so does a
    /// crash at any point before the commit.
    pub fn rotate(
        &mut self,
        target: Target<'_>,
        secret: &Secret,
        grace: Duration,
        expires: Option<SystemTime>,
    ) -> Result<CredentialMeta, VaultError> {
        check_secret(secret)?;
        let now = stored(SystemTime::now());
        let expires = check_expires(expires, now)?;
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err(path, "starting a transaction"))?;
        test_kill_point("after-begin");
        let old = match target {
            Target::Id(id) => {
                let meta = meta_by_id(&tx, path, id)?
                    .ok_or_else(|| VaultError::NotFound { id: id.to_owned() })?;
                if meta.status != Status::Active {
                    return Err(VaultError::NotActive {
                        id: meta.id,
                        status: meta.status,
                        integration: meta.integration,
                        account: meta.account,
                    });
                }
                meta
            }
            Target::Account {
                integration,
                account,
            } => active_meta(&tx, path, integration, account)?.ok_or_else(|| {
                VaultError::NoActive {
                    integration: integration.to_owned(),
                    account: account.to_owned(),
                }
            })?,
        };
        // Deprecate first: the unique index allows one active row per account at every
        // statement, not only at commit.
        let grace_secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let grace_until = now + Duration::from_secs(grace_secs);
        tx.execute(
            "UPDATE credentials SET status = 'deprecated', grace_until = ?2
             WHERE id = ?1 AND status = 'active'",
            params![old.id, to_unix(grace_until)],
        )
        .map_err(sql_err(path, "deprecating the old credential"))?;
        test_kill_point("after-deprecate");
        let new = CredentialMeta {
            id: new_id(&self.sealer)?,
            integration: old.integration.clone(),
            account: old.account.clone(),
            status: Status::Active,
            created: now,
            expires,
            rotated_from: Some(old.id.clone()),
            grace_until: None,
            revoked: None,
        };
        insert_sealed(&tx, path, &self.sealer, &new, secret)?;
        test_kill_point("after-insert");
        // Read the new row back through the same path the broker will use: what is
        // committed is known to open.
        let row = store::select_sealed(&tx, path, "WHERE id = ?1", params![new.id])?
            .into_iter()
            .next()
            .ok_or_else(|| VaultError::NotFound { id: new.id.clone() })?;
        let (_, check) = open_sealed(&self.sealer, row)?;
        drop(check);
        test_kill_point("before-commit");
        tx.commit()
            .map_err(sql_err(path, "committing the rotation"))?;
        test_kill_point("after-commit");
        Ok(new)
    }

    /// Undoes the rotation that made `new_id` active (for a new secret that failed its
    /// verification): `new_id` is revoked and the credential it replaced is active again,
    /// in one transaction. Returns the restored credential.
    pub fn roll_back(&mut self, new_id: &str) -> Result<CredentialMeta, VaultError> {
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err(path, "starting a transaction"))?;
        let new = meta_by_id(&tx, path, new_id)?.ok_or_else(|| VaultError::NotFound {
            id: new_id.to_owned(),
        })?;
        let no = |reason| VaultError::NoRollback {
            id: new_id.to_owned(),
            reason,
        };
        if new.status != Status::Active {
            return Err(no("it is not the active credential"));
        }
        let old_id = new
            .rotated_from
            .as_deref()
            .ok_or_else(|| no("it did not come from a rotation"))?;
        let old = meta_by_id(&tx, path, old_id)?
            .ok_or_else(|| no("the credential it replaced is gone"))?;
        if old.status != Status::Deprecated {
            return Err(no("the credential it replaced is revoked"));
        }
        // The restored value must open before it becomes the one in use.
        let row = store::select_sealed(&tx, path, "WHERE id = ?1", params![old.id])?
            .into_iter()
            .next()
            .ok_or_else(|| no("the credential it replaced is gone"))?;
        drop(open_sealed(&self.sealer, row)?);
        revoke_in(&tx, path, new_id)?;
        tx.execute(
            "UPDATE credentials SET status = 'active', grace_until = NULL WHERE id = ?1",
            params![old.id],
        )
        .map_err(sql_err(path, "restoring the old credential"))?;
        let restored = meta_by_id(&tx, path, &old.id)?.ok_or_else(|| no("row vanished"))?;
        tx.commit()
            .map_err(sql_err(path, "committing the rollback"))?;
        Ok(restored)
    }

    /// Revokes a credential of any status for good: it is never usable again and its
    /// sealed value is erased.
    pub fn revoke(&mut self, id: &str) -> Result<CredentialMeta, VaultError> {
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err(path, "starting a transaction"))?;
        let meta =
            meta_by_id(&tx, path, id)?.ok_or_else(|| VaultError::NotFound { id: id.to_owned() })?;
        if meta.status == Status::Revoked {
            return Err(VaultError::Revoked { id: meta.id });
        }
        revoke_in(&tx, path, id)?;
        let meta =
            meta_by_id(&tx, path, id)?.ok_or_else(|| VaultError::NotFound { id: id.to_owned() })?;
        tx.commit().map_err(sql_err(path, "committing"))?;
        Ok(meta)
    }

    fn open_row(&self, row: store::SealedRow) -> Result<(CredentialMeta, Secret), VaultError> {
        open_sealed(&self.sealer, row)
    }
}

/// What a handle's call may carry (the broker resolves an account's credentials with
/// these on every change of the vault).
impl Vault {
    /// What the broker may use for `integration`/`account` now: the active credential
    /// first, then deprecated ones still within their grace period, newest first;
    /// expired ones left out.
    pub fn usable(
        &self,
        integration: &str,
        account: &str,
    ) -> Result<Vec<(CredentialMeta, Secret)>, VaultError> {
        self.usable_at(integration, account, SystemTime::now())
    }

    pub fn usable_at(
        &self,
        integration: &str,
        account: &str,
        now: SystemTime,
    ) -> Result<Vec<(CredentialMeta, Secret)>, VaultError> {
        let rows = store::select_sealed(
            &self.conn,
            &self.path,
            "WHERE integration = ?1 AND account = ?2 AND status IN ('active', 'deprecated')
             ORDER BY status = 'active' DESC, created DESC, rowid DESC",
            params![integration, account],
        )?;
        rows.into_iter()
            .filter(|(meta, _)| meta.usable_at(now))
            .map(|row| self.open_row(row))
            .collect()
    }
}

fn open_sealed(
    sealer: &Sealer,
    (meta, sealed): store::SealedRow,
) -> Result<(CredentialMeta, Secret), VaultError> {
    let Some((nonce, ciphertext)) = sealed else {
        return Err(VaultError::Revoked { id: meta.id });
    };
    let aad = credential_aad(&meta.id, &meta.integration, &meta.account);
    match sealer.open(&aad, &nonce, &ciphertext) {
        Ok(secret) => Ok((meta, secret)),
        Err(seal::OpenFailed) => Err(VaultError::Tampered { id: meta.id }),
    }
}

fn insert_sealed(
    conn: &Connection,
    path: &Path,
    sealer: &Sealer,
    meta: &CredentialMeta,
    secret: &Secret,
) -> Result<(), VaultError> {
    let aad = credential_aad(&meta.id, &meta.integration, &meta.account);
    let sealed = sealer
        .seal(&aad, secret.expose())
        .map_err(|_| VaultError::Random)?;
    store::insert(conn, path, meta, &sealed.nonce, &sealed.ciphertext)
}

fn revoke_in(conn: &Connection, path: &Path, id: &str) -> Result<(), VaultError> {
    conn.execute(
        "UPDATE credentials SET status = 'revoked', revoked = ?2, grace_until = NULL,
                                nonce = NULL, ciphertext = NULL
         WHERE id = ?1",
        params![id, to_unix(SystemTime::now())],
    )
    .map_err(sql_err(path, "revoking a credential"))?;
    Ok(())
}

fn meta_by_id(
    conn: &Connection,
    path: &Path,
    id: &str,
) -> Result<Option<CredentialMeta>, VaultError> {
    conn.query_row(
        &format!("SELECT {META_COLUMNS} FROM credentials WHERE id = ?1"),
        params![id],
        store::meta_from_row,
    )
    .optional()
    .map_err(sql_err(path, "reading a credential"))
}

fn active_meta(
    conn: &Connection,
    path: &Path,
    integration: &str,
    account: &str,
) -> Result<Option<CredentialMeta>, VaultError> {
    conn.query_row(
        &format!(
            "SELECT {META_COLUMNS} FROM credentials
             WHERE integration = ?1 AND account = ?2 AND status = 'active'"
        ),
        params![integration, account],
        store::meta_from_row,
    )
    .optional()
    .map_err(sql_err(path, "reading the active credential"))
}

fn new_id(sealer: &Sealer) -> Result<String, VaultError> {
    let mut bytes = [0u8; 12];
    sealer.random(&mut bytes).map_err(|_| VaultError::Random)?;
    let mut id = String::from("cred_");
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    Ok(id)
}

fn check_name(what: &'static str, value: &str) -> Result<(), VaultError> {
    let reason = if value.is_empty() {
        "must not be empty"
    } else if value.len() > MAX_NAME_LEN {
        "is longer than 256 bytes"
    } else if value.chars().any(char::is_control) {
        "contains control characters"
    } else if value.trim() != value {
        "has leading or trailing white space"
    } else {
        return Ok(());
    };
    Err(VaultError::InvalidName {
        what,
        value: value.chars().take(MAX_NAME_LEN).collect(),
        reason,
    })
}

fn check_secret(secret: &Secret) -> Result<(), VaultError> {
    if secret.is_empty() {
        return Err(VaultError::EmptySecret);
    }
    if secret.len() > MAX_SECRET_LEN {
        return Err(VaultError::SecretTooLong { len: secret.len() });
    }
    Ok(())
}

fn check_expires(
    expires: Option<SystemTime>,
    now: SystemTime,
) -> Result<Option<SystemTime>, VaultError> {
    match expires.map(stored) {
        Some(e) if e <= now => Err(VaultError::ExpiryPassed {
            when: humantime::format_rfc3339_seconds(e).to_string(),
        }),
        e => Ok(e),
    }
}

/// Test hook, in debug builds only: `HB_VAULT_TEST_KILL_AT=<step>` makes the process
/// SIGKILL itself at that step of a rotation (`after-begin`, `after-deprecate`,
/// `after-insert`, `before-commit`, `after-commit`), so the end-to-end tests can prove a
/// crash anywhere leaves the vault consistent.
fn test_kill_point(step: &str) {
    if cfg!(debug_assertions)
        && std::env::var_os("HB_VAULT_TEST_KILL_AT").is_some_and(|v| v == step)
    {
        // SAFETY: plain syscalls on our own process. SIGKILL cannot be caught or
        // blocked, and a signal a process sends itself is delivered before kill returns.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        std::process::abort();
    }
}

#[cfg(test)]
pub(crate) mod tests;
