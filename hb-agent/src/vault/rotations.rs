//! The rotation journal: a rotation as a row of idempotent steps, each one transaction.
//!
//! Owns: the steps' effects on the credentials and the journal row together —
//! **begin** (the account's ACTIVE credential is the old one; at most one open rotation
//! per account, held by a unique index) → **create** (the new value stored PENDING in the
//! same transaction that records it, so a value is never asked of a provider twice for
//! one rotation) → **test** → **finish** (one transaction: PENDING → ACTIVE, the old one
//! DEPRECATED until now + grace, or at once for a compromised one) → **watch** →
//! **retire** (the old value REVOKED and erased), or **roll back** (the new one revoked,
//! the old one active again), **fail** or **abort** before finishing (the PENDING value
//! revoked, the old one untouched). Each step checks the row's current step, so running
//! it twice — after a crash between the provider's answer and the commit, or from two
//! processes — does nothing the second time.
//! Must never: let an account have two ACTIVE credentials or none at any commit of a
//! rotation, hand out a PENDING value as usable, or store a value in the journal (rows
//! name credentials by id; values live sealed in `credentials` only).

use std::time::{Duration, SystemTime};

use rusqlite::{OptionalExtension as _, Row, Transaction, TransactionBehavior, params};
use serde::Serialize;

use super::{
    CredentialMeta, Status, Vault, VaultError, active_meta, check_expires, check_secret,
    insert_sealed, meta_by_id, open_sealed, revoke_in, rfc3339, rfc3339_opt,
    store::{self, from_unix, sql_err, stored, to_unix},
    test_kill_point,
};
use crate::secret::Secret;

/// Where a rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Begun,
    Created,
    Tested,
    Finished,
    Watched,
    Retired,
    RolledBack,
    Failed,
    Aborted,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Begun => "begun",
            Step::Created => "created",
            Step::Tested => "tested",
            Step::Finished => "finished",
            Step::Watched => "watched",
            Step::Retired => "retired",
            Step::RolledBack => "rolled_back",
            Step::Failed => "failed",
            Step::Aborted => "aborted",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Step::Begun,
            Step::Created,
            Step::Tested,
            Step::Finished,
            Step::Watched,
            Step::Retired,
            Step::RolledBack,
            Step::Failed,
            Step::Aborted,
        ]
        .into_iter()
        .find(|step| step.as_str() == s)
    }

    /// Whether the rotation still has work to do (it blocks another on its account).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            Step::Begun | Step::Created | Step::Tested | Step::Finished | Step::Watched
        )
    }

    /// Whether the new value is not in use yet (the rotation can still be abandoned
    /// without touching the old one).
    pub fn before_finish(self) -> bool {
        matches!(self, Step::Begun | Step::Created | Step::Tested)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One row of the journal (never a value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rotation {
    /// `rot_` + 24 hex digits: the idempotency key of every provider call it makes.
    pub id: String,
    pub integration: String,
    pub account: String,
    /// What started it: `manual`, `expiry`, `auth_failure`, `rate_spike`, …
    pub trigger: String,
    /// The old credential is treated as leaked: no grace period, no rollback to it.
    pub compromised: bool,
    pub step: Step,
    pub old_id: String,
    pub new_id: Option<String>,
    /// Failed attempts of the current step.
    pub attempt: u32,
    /// Times the rotator was asked for a new value. More than one with a single value
    /// stored means the provider may hold keys minted before a crash cut their
    /// recording short (orphans to revoke there).
    pub create_calls: u32,
    #[serde(serialize_with = "rfc3339_opt")]
    pub next_attempt: Option<SystemTime>,
    /// The class of the last failure (never a provider's text: it may quote a secret).
    pub last_error: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub started: SystemTime,
    #[serde(serialize_with = "rfc3339")]
    pub updated: SystemTime,
}

const COLUMNS: &str = "id, integration, account, trigger, compromised, step, old_id, new_id, \
                       attempt, next_attempt, last_error, started, updated, create_calls";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Rotation> {
    let step: String = r.get(5)?;
    let step = Step::parse(&step).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            5,
            rusqlite::types::Type::Text,
            format!("unknown rotation step {step:?}").into(),
        )
    })?;
    Ok(Rotation {
        id: r.get(0)?,
        integration: r.get(1)?,
        account: r.get(2)?,
        trigger: r.get(3)?,
        compromised: r.get::<_, i64>(4)? != 0,
        step,
        old_id: r.get(6)?,
        new_id: r.get(7)?,
        attempt: u32::try_from(r.get::<_, i64>(8)?).unwrap_or(u32::MAX),
        next_attempt: r.get::<_, Option<i64>>(9)?.map(from_unix),
        last_error: r.get(10)?,
        started: from_unix(r.get(11)?),
        updated: from_unix(r.get(12)?),
        create_calls: u32::try_from(r.get::<_, i64>(13)?).unwrap_or(u32::MAX),
    })
}

/// The rows of rotations with work left (the steps of [`Step::is_open`]; the schema's
/// one-open-rotation index names the same).
const OPEN: &str = "step IN ('begun', 'created', 'tested', 'finished', 'watched')";

/// The longest failure class kept (a short machine-readable word, not a message).
const MAX_ERROR_CLASS: usize = 64;

impl Vault {
    /// **begin**: opens a rotation of the account's ACTIVE credential. Refused while
    /// another rotation of the account is open ([`VaultError::RotationOpen`] names it).
    pub fn begin_rotation(
        &mut self,
        integration: &str,
        account: &str,
        trigger: &str,
        compromised: bool,
    ) -> Result<Rotation, VaultError> {
        let now = stored(SystemTime::now());
        let id = new_rotation_id(self)?;
        let path = self.path.clone();
        let tx = self.write()?;
        let old =
            active_meta(&tx, &path, integration, account)?.ok_or_else(|| VaultError::NoActive {
                integration: integration.to_owned(),
                account: account.to_owned(),
            })?;
        if let Some(open) = open_rotation_of(&tx, &path, integration, account)? {
            return Err(VaultError::RotationOpen {
                integration: integration.to_owned(),
                account: account.to_owned(),
                id: open.id,
                step: open.step,
            });
        }
        tx.execute(
            &format!(
                "INSERT INTO rotations ({COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, 'begun', ?6, NULL, 0, NULL, NULL, ?7, ?7, 0)"
            ),
            params![
                id,
                integration,
                account,
                trigger,
                i64::from(compromised),
                old.id,
                to_unix(now)
            ],
        )
        .map_err(sql_err(&path, "recording the rotation"))?;
        let rotation = rotation_in(&tx, &path, &id)?;
        tx.commit()
            .map_err(sql_err(&path, "committing the rotation"))?;
        test_kill_point("rotation-after-begin");
        Ok(rotation)
    }

    /// Records, before the rotator is asked for a new value, that it is being asked (see
    /// [`Rotation::create_calls`]); only at `begun`.
    pub fn note_create_call(&mut self, rotation_id: &str) -> Result<Rotation, VaultError> {
        let path = self.path.clone();
        let tx = self.write()?;
        let rotation = rotation_in(&tx, &path, rotation_id)?;
        if rotation.step != Step::Begun {
            return Err(VaultError::RotationStep {
                id: rotation.id,
                step: rotation.step,
                wanted: "begun",
            });
        }
        tx.execute(
            "UPDATE rotations SET create_calls = create_calls + 1 WHERE id = ?1",
            params![rotation_id],
        )
        .map_err(sql_err(&path, "recording a create call"))?;
        let rotation = rotation_in(&tx, &path, rotation_id)?;
        tx.commit().map_err(sql_err(&path, "committing"))?;
        test_kill_point("rotation-during-create");
        Ok(rotation)
    }

    /// **create**: stores the provider's new value PENDING and records it, in one
    /// transaction. A rotation past `begun` keeps the value it has: the call changes
    /// nothing and returns the row (so a retried step never stores a second value).
    pub fn store_pending(
        &mut self,
        rotation_id: &str,
        secret: &Secret,
        expires: Option<SystemTime>,
    ) -> Result<Rotation, VaultError> {
        check_secret(secret)?;
        let now = stored(SystemTime::now());
        let expires = check_expires(expires, now)?;
        let new_id = super::new_id(&self.sealer)?;
        let path = self.path.clone();
        let sealer = &self.sealer;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err(&path, "starting a transaction"))?;
        let rotation = rotation_in(&tx, &path, rotation_id)?;
        if rotation.step != Step::Begun {
            return if rotation.step.is_open() {
                Ok(rotation)
            } else {
                Err(closed(&rotation))
            };
        }
        let meta = CredentialMeta {
            id: new_id,
            integration: rotation.integration.clone(),
            account: rotation.account.clone(),
            status: Status::Pending,
            created: now,
            expires,
            rotated_from: Some(rotation.old_id.clone()),
            grace_until: None,
            revoked: None,
        };
        insert_sealed(&tx, &path, sealer, &meta, secret)?;
        test_kill_point("rotation-after-pending");
        set_step(&tx, &path, rotation_id, Step::Created, Some(&meta.id), now)?;
        let rotation = rotation_in(&tx, &path, rotation_id)?;
        tx.commit()
            .map_err(sql_err(&path, "committing the new value"))?;
        test_kill_point("rotation-after-create");
        Ok(rotation)
    }

    /// The PENDING (or, once finished, the new) value of a rotation, for its test step.
    pub fn rotation_value(
        &self,
        rotation_id: &str,
    ) -> Result<(CredentialMeta, Secret), VaultError> {
        let rotation = rotation_in(&self.conn, &self.path, rotation_id)?;
        let new_id = rotation
            .new_id
            .as_deref()
            .ok_or_else(|| VaultError::RotationStep {
                id: rotation.id.clone(),
                step: rotation.step,
                wanted: "created",
            })?;
        self.get(new_id)
    }

    /// **test** passed: `created` → `tested` (already tested or later: unchanged).
    pub fn mark_tested(&mut self, rotation_id: &str) -> Result<Rotation, VaultError> {
        let tested = self.advance(rotation_id, Step::Created, Step::Tested);
        test_kill_point("rotation-after-test");
        tested
    }

    /// A step failed for now: its attempt counted, the failure's class and the time of
    /// the next attempt recorded; the step itself is unchanged.
    pub fn record_attempt_failure(
        &mut self,
        rotation_id: &str,
        error_class: &str,
        next_attempt: SystemTime,
    ) -> Result<Rotation, VaultError> {
        let class: String = error_class.chars().take(MAX_ERROR_CLASS).collect();
        let now = stored(SystemTime::now());
        let path = self.path.clone();
        let tx = self.write()?;
        let rotation = rotation_in(&tx, &path, rotation_id)?;
        if !rotation.step.is_open() {
            return Err(closed(&rotation));
        }
        tx.execute(
            "UPDATE rotations SET attempt = attempt + 1, last_error = ?2, next_attempt = ?3,
                 updated = ?4 WHERE id = ?1",
            params![rotation_id, class, to_unix(next_attempt), to_unix(now)],
        )
        .map_err(sql_err(&path, "recording a failed attempt"))?;
        let rotation = rotation_in(&tx, &path, rotation_id)?;
        tx.commit().map_err(sql_err(&path, "committing"))?;
        Ok(rotation)
    }

    /// **finish**, one transaction: the PENDING value becomes ACTIVE and the old one
    /// DEPRECATED until now + `grace` (at once when the rotation is for a compromised
    /// credential). Refused — and the rotation failed, its value revoked — if the old
    /// one is no longer the account's active credential (replaced meanwhile by hand).
    pub fn finish_rotation(
        &mut self,
        rotation_id: &str,
        grace: Duration,
    ) -> Result<Rotation, VaultError> {
        let now = stored(SystemTime::now());
        let path = self.path.clone();
        let tx = self.write()?;
        let rotation = rotation_in(&tx, &path, rotation_id)?;
        match rotation.step {
            Step::Tested => {}
            Step::Finished | Step::Watched | Step::Retired => return Ok(rotation),
            step => {
                return Err(VaultError::RotationStep {
                    id: rotation.id,
                    step,
                    wanted: "tested",
                });
            }
        }
        let new_id = rotation.new_id.clone().unwrap_or_default();
        let old = meta_by_id(&tx, &path, &rotation.old_id)?;
        if old.is_none_or(|o| o.status != Status::Active) {
            abandon(&tx, &path, &rotation, Step::Failed, "superseded", now)?;
            tx.commit().map_err(sql_err(&path, "committing"))?;
            return Err(VaultError::RotationSuperseded {
                id: rotation.id,
                old_id: rotation.old_id,
            });
        }
        let grace = if rotation.compromised {
            Duration::ZERO
        } else {
            grace
        };
        let grace_secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        tx.execute(
            "UPDATE credentials SET status = 'deprecated', grace_until = ?2
             WHERE id = ?1 AND status = 'active'",
            params![
                rotation.old_id,
                to_unix(now) + i64::try_from(grace_secs).unwrap_or(i64::MAX / 2)
            ],
        )
        .map_err(sql_err(&path, "deprecating the old credential"))?;
        test_kill_point("rotation-inside-finish");
        // `created` becomes the switch's time: the propagation retry counts from when
        // calls began to carry the new value, not from its minting.
        tx.execute(
            "UPDATE credentials SET status = 'active', created = ?2
             WHERE id = ?1 AND status = 'pending'",
            params![new_id, to_unix(now)],
        )
        .map_err(sql_err(&path, "activating the new credential"))?;
        set_step(&tx, &path, rotation_id, Step::Finished, None, now)?;
        let rotation = rotation_in(&tx, &path, rotation_id)?;
        tx.commit()
            .map_err(sql_err(&path, "committing the finish"))?;
        test_kill_point("rotation-after-finish");
        Ok(rotation)
    }

    /// **watch** passed: the new value still works after a while (`finished` →
    /// `watched`).
    pub fn mark_watched(&mut self, rotation_id: &str) -> Result<Rotation, VaultError> {
        self.advance(rotation_id, Step::Finished, Step::Watched)
    }

    /// **retire**: the old value REVOKED and erased (after the provider revoked it).
    pub fn retire_rotation(&mut self, rotation_id: &str) -> Result<Rotation, VaultError> {
        let now = stored(SystemTime::now());
        let path = self.path.clone();
        let tx = self.write()?;
        let rotation = rotation_in(&tx, &path, rotation_id)?;
        match rotation.step {
            Step::Finished | Step::Watched => {}
            Step::Retired => return Ok(rotation),
            step => {
                return Err(VaultError::RotationStep {
                    id: rotation.id,
                    step,
                    wanted: "finished or watched",
                });
            }
        }
        if meta_by_id(&tx, &path, &rotation.old_id)?.is_some_and(|o| o.status != Status::Revoked) {
            revoke_in(&tx, &path, &rotation.old_id)?;
        }
        test_kill_point("rotation-inside-retire");
        set_step(&tx, &path, rotation_id, Step::Retired, None, now)?;
        let rotation = rotation_in(&tx, &path, rotation_id)?;
        tx.commit()
            .map_err(sql_err(&path, "committing the retirement"))?;
        Ok(rotation)
    }

    /// The new value failed after finishing: it is revoked and the old one, still
    /// deprecated and not compromised, is active again — one transaction.
    pub fn roll_back_rotation(&mut self, rotation_id: &str) -> Result<Rotation, VaultError> {
        let now = stored(SystemTime::now());
        let path = self.path.clone();
        let sealer = &self.sealer;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err(&path, "starting a transaction"))?;
        let rotation = rotation_in(&tx, &path, rotation_id)?;
        let refuse = |reason| VaultError::NoRollback {
            id: rotation_id.to_owned(),
            reason,
        };
        if !matches!(rotation.step, Step::Finished | Step::Watched) {
            return Err(refuse("the rotation is not finished, or already closed"));
        }
        if rotation.compromised {
            return Err(refuse("the old credential is compromised"));
        }
        let old = meta_by_id(&tx, &path, &rotation.old_id)?
            .ok_or_else(|| refuse("the credential it replaced is gone"))?;
        if old.status != Status::Deprecated {
            return Err(refuse("the credential it replaced is revoked"));
        }
        let row = store::select_sealed(&tx, &path, "WHERE id = ?1", params![old.id])?
            .into_iter()
            .next()
            .ok_or_else(|| refuse("the credential it replaced is gone"))?;
        drop(open_sealed(sealer, row)?);
        if let Some(new_id) = &rotation.new_id {
            revoke_in(&tx, &path, new_id)?;
        }
        tx.execute(
            "UPDATE credentials SET status = 'active', grace_until = NULL WHERE id = ?1",
            params![old.id],
        )
        .map_err(sql_err(&path, "restoring the old credential"))?;
        set_step(&tx, &path, rotation_id, Step::RolledBack, None, now)?;
        let rotation = rotation_in(&tx, &path, rotation_id)?;
        tx.commit()
            .map_err(sql_err(&path, "committing the rollback"))?;
        Ok(rotation)
    }

    /// Closes a finished rotation an operator rolled back by hand (`vault rollback`: the
    /// old credential ACTIVE again): `rolled_back`, nothing else changed.
    pub fn close_rolled_back_by_hand(&mut self, rotation_id: &str) -> Result<Rotation, VaultError> {
        let now = stored(SystemTime::now());
        let path = self.path.clone();
        let tx = self.write()?;
        let rotation = rotation_in(&tx, &path, rotation_id)?;
        let old_active =
            meta_by_id(&tx, &path, &rotation.old_id)?.is_some_and(|o| o.status == Status::Active);
        if !matches!(rotation.step, Step::Finished | Step::Watched) || !old_active {
            return Err(VaultError::NoRollback {
                id: rotation_id.to_owned(),
                reason: "the rotation is not finished, or its old credential is not active",
            });
        }
        tx.execute(
            "UPDATE rotations SET step = ?2, last_error = 'by_hand', updated = ?3 WHERE id = ?1",
            params![rotation_id, Step::RolledBack.as_str(), to_unix(now)],
        )
        .map_err(sql_err(&path, "closing the rotation"))?;
        let rotation = rotation_in(&tx, &path, rotation_id)?;
        tx.commit().map_err(sql_err(&path, "committing"))?;
        Ok(rotation)
    }

    /// Gives a rotation up before it finished (`failed` for a step that cannot succeed,
    /// `aborted` by an operator): its PENDING value revoked, the old one untouched.
    pub fn abandon_rotation(
        &mut self,
        rotation_id: &str,
        how: Step,
        error_class: &str,
    ) -> Result<Rotation, VaultError> {
        debug_assert!(matches!(how, Step::Failed | Step::Aborted));
        let now = stored(SystemTime::now());
        let path = self.path.clone();
        let tx = self.write()?;
        let rotation = rotation_in(&tx, &path, rotation_id)?;
        if !rotation.step.before_finish() {
            return Err(VaultError::RotationStep {
                id: rotation.id,
                step: rotation.step,
                wanted: "begun, created or tested",
            });
        }
        abandon(&tx, &path, &rotation, how, error_class, now)?;
        let rotation = rotation_in(&tx, &path, rotation_id)?;
        tx.commit().map_err(sql_err(&path, "committing"))?;
        Ok(rotation)
    }

    /// One rotation by id.
    pub fn rotation(&self, rotation_id: &str) -> Result<Rotation, VaultError> {
        rotation_in(&self.conn, &self.path, rotation_id)
    }

    /// Rotations started at or after `since` (every one when `None`), oldest first.
    pub fn rotations(&self, since: Option<SystemTime>) -> Result<Vec<Rotation>, VaultError> {
        let since = since.map_or(i64::MIN, to_unix);
        select(
            &self.conn,
            &self.path,
            "WHERE started >= ?1 ORDER BY started, rowid",
            params![since],
        )
    }

    /// The rotations with work left, to resume at their recorded step on start.
    pub fn open_rotations(&self) -> Result<Vec<Rotation>, VaultError> {
        select(
            &self.conn,
            &self.path,
            &format!("WHERE {OPEN} ORDER BY started, rowid"),
            [],
        )
    }

    /// A compromise signal for an account with an open rotation: the rotation is marked
    /// compromised (no grace, no rollback), and if it has already finished, the old
    /// credential's grace period ends now. `None` when the account has no open rotation.
    pub fn compromise_open_rotation(
        &mut self,
        integration: &str,
        account: &str,
    ) -> Result<Option<Rotation>, VaultError> {
        let now = stored(SystemTime::now());
        let path = self.path.clone();
        let tx = self.write()?;
        let Some(open) = open_rotation_of(&tx, &path, integration, account)? else {
            return Ok(None);
        };
        tx.execute(
            "UPDATE rotations SET compromised = 1 WHERE id = ?1",
            params![open.id],
        )
        .map_err(sql_err(&path, "marking the rotation compromised"))?;
        if !open.step.before_finish() {
            tx.execute(
                "UPDATE credentials SET grace_until = MIN(grace_until, ?2)
                 WHERE id = ?1 AND status = 'deprecated'",
                params![open.old_id, to_unix(now)],
            )
            .map_err(sql_err(&path, "ending the old credential's grace"))?;
        }
        let rotation = rotation_in(&tx, &path, &open.id)?;
        tx.commit().map_err(sql_err(&path, "committing"))?;
        Ok(Some(rotation))
    }

    fn write(&mut self) -> Result<Transaction<'_>, VaultError> {
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err(&self.path, "starting a transaction"))
    }

    /// Moves `from` → `to`; a rotation already past `from` (but open) is returned as is.
    fn advance(&mut self, rotation_id: &str, from: Step, to: Step) -> Result<Rotation, VaultError> {
        let now = stored(SystemTime::now());
        let path = self.path.clone();
        let tx = self.write()?;
        let rotation = rotation_in(&tx, &path, rotation_id)?;
        if rotation.step != from {
            return if rotation.step.is_open() && order(rotation.step) > order(from) {
                Ok(rotation)
            } else {
                Err(VaultError::RotationStep {
                    id: rotation.id,
                    step: rotation.step,
                    wanted: from.as_str(),
                })
            };
        }
        set_step(&tx, &path, rotation_id, to, None, now)?;
        let rotation = rotation_in(&tx, &path, rotation_id)?;
        tx.commit().map_err(sql_err(&path, "committing"))?;
        Ok(rotation)
    }
}

/// The position of an open step in the happy path.
fn order(step: Step) -> u8 {
    match step {
        Step::Begun => 0,
        Step::Created => 1,
        Step::Tested => 2,
        Step::Finished => 3,
        Step::Watched => 4,
        _ => 5,
    }
}

fn closed(rotation: &Rotation) -> VaultError {
    VaultError::RotationStep {
        id: rotation.id.clone(),
        step: rotation.step,
        wanted: "an open step",
    }
}

/// Closes a rotation that did not finish: its PENDING value revoked.
fn abandon(
    tx: &Transaction<'_>,
    path: &std::path::Path,
    rotation: &Rotation,
    how: Step,
    error_class: &str,
    now: SystemTime,
) -> Result<(), VaultError> {
    if let Some(new_id) = &rotation.new_id
        && meta_by_id(tx, path, new_id)?.is_some_and(|m| m.status == Status::Pending)
    {
        revoke_in(tx, path, new_id)?;
    }
    let class: String = error_class.chars().take(MAX_ERROR_CLASS).collect();
    tx.execute(
        "UPDATE rotations SET step = ?2, last_error = ?3, next_attempt = NULL, updated = ?4
         WHERE id = ?1",
        params![rotation.id, how.as_str(), class, to_unix(now)],
    )
    .map_err(sql_err(path, "closing the rotation"))?;
    Ok(())
}

fn set_step(
    tx: &Transaction<'_>,
    path: &std::path::Path,
    rotation_id: &str,
    step: Step,
    new_id: Option<&str>,
    now: SystemTime,
) -> Result<(), VaultError> {
    tx.execute(
        "UPDATE rotations SET step = ?2, new_id = coalesce(?3, new_id), attempt = 0,
             next_attempt = NULL, last_error = NULL, updated = ?4
         WHERE id = ?1",
        params![rotation_id, step.as_str(), new_id, to_unix(now)],
    )
    .map_err(sql_err(path, "recording the step"))?;
    Ok(())
}

fn select(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
    where_sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<Rotation>, VaultError> {
    let sql = format!("SELECT {COLUMNS} FROM rotations {where_sql}");
    let mut stmt = conn
        .prepare(&sql)
        .map_err(sql_err(path, "preparing a query"))?;
    let rows = stmt
        .query_map(args, from_row)
        .map_err(sql_err(path, "reading rotations"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sql_err(path, "reading rotations"))
}

fn rotation_in(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
    id: &str,
) -> Result<Rotation, VaultError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM rotations WHERE id = ?1"),
        params![id],
        from_row,
    )
    .optional()
    .map_err(sql_err(path, "reading a rotation"))?
    .ok_or_else(|| VaultError::NoRotation { id: id.to_owned() })
}

fn open_rotation_of(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
    integration: &str,
    account: &str,
) -> Result<Option<Rotation>, VaultError> {
    Ok(select(
        conn,
        path,
        &format!("WHERE integration = ?1 AND account = ?2 AND {OPEN}"),
        params![integration, account],
    )?
    .into_iter()
    .next())
}

fn new_rotation_id(vault: &Vault) -> Result<String, VaultError> {
    let mut bytes = [0u8; 12];
    vault
        .sealer
        .random(&mut bytes)
        .map_err(|_| VaultError::Random)?;
    Ok(std::iter::once("rot_".to_owned())
        .chain(bytes.iter().map(|b| format!("{b:02x}")))
        .collect())
}
