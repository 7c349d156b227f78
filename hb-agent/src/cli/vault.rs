//! `hb-agent vault …`: the operator's commands for the credential vault.
//!
//! Owns: reading secrets from stdin, turning `--expires`/`--grace` into times, the
//! tables and `--json` of credential metadata. Must never: take a secret from argv,
//! print or log one, or open the vault before the input was checked (bad input changes
//! nothing, not even by creating an empty vault).

use std::{
    io::{IsTerminal as _, Read as _},
    path::PathBuf,
    process::ExitCode,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};
use clap::Subcommand;

use crate::{
    config::Config,
    secret::Secret,
    vault::{self, CredentialMeta, MasterKey, Target, Vault},
};

const EXAMPLES: &str = "\
Examples:
  hb-agent vault init                                   # create agent.master_key_file (0600)
  hb-agent vault put --integration github --account ci < token.txt
  hb-agent vault put --integration github --account ci --expires 30d < token.txt
  hb-agent vault list --json
  hb-agent vault rotate --integration github --account ci --grace 10m < new-token.txt
  hb-agent vault revoke --id cred_0123456789abcdef01234567
  hb-agent vault check                                  # every value still opens?
Secrets are read from stdin only (never from arguments) and are never printed.";

#[derive(Debug, Subcommand)]
#[command(after_help = EXAMPLES)]
pub enum VaultCommand {
    /// Create the master key file (agent.master_key_file): 32 random bytes, mode 0600,
    /// its folder 0700 when missing. Refuses to replace an existing file.
    #[command(
        after_help = "Examples:\n  hb-agent vault init\n  hb-agent --config hb.toml vault init"
    )]
    Init {
        #[arg(long)]
        json: bool,
    },
    /// Store the active credential of INTEGRATION/ACCOUNT; the secret comes from stdin.
    #[command(
        after_help = "Examples:\n  hb-agent vault put --integration github --account ci < token.txt\n  \
                      vault-tool read github/ci | hb-agent vault put -i github -a ci --expires 2026-12-31T00:00:00Z"
    )]
    Put {
        /// An `[[integration]]` of the config.
        #[arg(long, short)]
        integration: String,
        /// Whose credential it is (a bot, a team, a tenant: any name).
        #[arg(long, short)]
        account: String,
        /// When it stops working upstream: a duration from now (`30d`, `12h`) or an
        /// RFC 3339 time (`2026-12-31T00:00:00Z`).
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Every credential's metadata (never a value).
    #[command(
        after_help = "Examples:\n  hb-agent vault list\n  hb-agent vault list --json | jq '.[] | select(.status == \"active\")'"
    )]
    List {
        #[arg(long)]
        json: bool,
    },
    /// Replace an active credential with a new value from stdin, in one transaction: the
    /// new one becomes active, the old one deprecated (still usable for --grace).
    #[command(
        after_help = "Examples:\n  hb-agent vault rotate --integration github --account ci < new-token.txt\n  \
                      hb-agent vault rotate --id cred_0123456789abcdef01234567 --grace 1h < new-token.txt"
    )]
    Rotate {
        /// The active credential to replace.
        #[arg(long, conflicts_with_all = ["integration", "account"], required_unless_present_all = ["integration", "account"])]
        id: Option<String>,
        /// With --account: replace that account's active credential.
        #[arg(long, short, requires = "account")]
        integration: Option<String>,
        /// With --integration: whose credential.
        #[arg(long, short, requires = "integration")]
        account: Option<String>,
        /// How long the old credential stays usable (`0s`, `10m`, `2h`).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        grace: Duration,
        /// The new credential's expiry (as for `put`).
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a credential for good (any status); its stored value is erased. Refused for
    /// a credential an open rotation names (the rotation revokes it at the provider;
    /// erased here first, it would stay live there): use `rotation trigger
    /// --compromised` for a leaked key, or --force.
    #[command(
        after_help = "Examples:\n  hb-agent vault revoke --id cred_0123456789abcdef01234567\n  \
                      hb-agent rotation trigger -i github -a ci --compromised --wait   # a leaked key in a rotation"
    )]
    Revoke {
        #[arg(long)]
        id: String,
        /// Revoke even a credential an open rotation names (the provider keeps it live).
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Undo a rotation: revoke the credential it made active (ID) and make the one it
    /// replaced active again, in one transaction (for a new secret that does not work).
    #[command(
        after_help = "Examples:\n  hb-agent vault rollback --id cred_0123456789abcdef01234567"
    )]
    Rollback {
        /// The credential the rotation created (the active one).
        #[arg(long)]
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Open every stored value (printing none) and report those that fail: tampering
    /// or corruption, named by credential id. Exit 1 when any fails.
    #[command(after_help = "Examples:\n  hb-agent vault check")]
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Compare a value from stdin with a stored one (constant time); prints whether they
    /// match, never the value. Exit 0 on a match, 1 otherwise.
    #[command(
        after_help = "Examples:\n  hb-agent vault verify --id cred_0123456789abcdef01234567 < token.txt"
    )]
    Verify {
        /// A stored credential (not revoked).
        #[arg(long, conflicts_with_all = ["integration", "account"], required_unless_present_all = ["integration", "account"])]
        id: Option<String>,
        /// With --account: that account's active credential.
        #[arg(long, short, requires = "account")]
        integration: Option<String>,
        /// With --integration: whose credential.
        #[arg(long, short, requires = "integration")]
        account: Option<String>,
    },
}

pub fn run(config: &Config, cmd: VaultCommand) -> anyhow::Result<ExitCode> {
    let key_path = &config.agent.master_key_file;
    let db = config.agent.state_dir.join(vault::DB_FILE);
    match cmd {
        VaultCommand::Init { json } => {
            MasterKey::generate_file(key_path)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"master_key_file": key_path, "mode": "0600"})
                );
            } else {
                println!(
                    "created master key file {} (mode 0600); keep a copy somewhere safe: \
                     without it the vault cannot be opened",
                    key_path.display()
                );
            }
        }
        VaultCommand::Put {
            integration,
            account,
            expires,
            json,
        } => {
            let key = MasterKey::load(key_path)?;
            check_integration(config, &integration)?;
            let expires = expires.as_deref().map(parse_expires).transpose()?;
            let secret = read_secret()?;
            let meta = Vault::open(&db, &key)?.put(&integration, &account, &secret, expires)?;
            audit(config, "put", &meta);
            print_one(&meta, "stored", json)?;
        }
        VaultCommand::List { json } => {
            let key = MasterKey::load(key_path)?;
            let list = if db.exists() {
                Vault::open(&db, &key)?.list()?
            } else {
                Vec::new()
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no credentials in {}", db.display());
            } else {
                print_table(&list);
            }
        }
        VaultCommand::Rotate {
            id,
            integration,
            account,
            grace,
            expires,
            json,
        } => {
            let key = MasterKey::load(key_path)?;
            let target = match (&id, &integration, &account) {
                (Some(id), _, _) => Target::Id(id),
                (None, Some(integration), Some(account)) => Target::Account {
                    integration,
                    account,
                },
                _ => bail!("give --id, or --integration and --account"),
            };
            let expires = expires.as_deref().map(parse_expires).transpose()?;
            let vault_db = existing(&db)?;
            let secret = read_secret()?;
            let meta = Vault::open(&vault_db, &key)?.rotate(target, &secret, grace, expires)?;
            audit(config, "rotate", &meta);
            print_one(&meta, "rotated: now active", json)?;
        }
        VaultCommand::Revoke { id, force, json } => {
            let key = MasterKey::load(key_path)?;
            let mut vault = Vault::open(&existing(&db)?, &key)?;
            if !force
                && let Some(r) = vault
                    .open_rotations()?
                    .into_iter()
                    .find(|r| r.old_id == id || r.new_id.as_deref() == Some(id.as_str()))
            {
                bail!(
                    "{id} is named by open rotation {} (step {}): erased here, the provider would \
                     never revoke it. For a leaked key: `hb-agent rotation trigger -i {} -a {} \
                     --compromised` (revokes it at the provider now); to revoke it here anyway: --force",
                    r.id,
                    r.step,
                    r.integration,
                    r.account
                );
            }
            let meta = vault.revoke(&id)?;
            audit(config, "revoke", &meta);
            print_one(&meta, "revoked", json)?;
        }
        VaultCommand::Check { json } => {
            let key = MasterKey::load(key_path)?;
            let rows = Vault::open(&existing(&db)?, &key)?.check()?;
            let failed = rows.iter().filter(|r| r.error.is_some()).count();
            if json {
                let out: Vec<_> = rows
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "id": r.meta.id,
                            "status": r.meta.status,
                            "ok": r.error.is_none(),
                            "error": r.error.as_ref().map(|e| crate::error_chain(e)),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                for r in &rows {
                    if let Some(e) = &r.error {
                        eprintln!("hb-agent: {}", crate::error_chain(e));
                    }
                }
                println!("{} credentials checked, {} failed", rows.len(), failed);
            }
            if failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        VaultCommand::Rollback { id, json } => {
            let key = MasterKey::load(key_path)?;
            let meta = Vault::open(&existing(&db)?, &key)?.roll_back(&id)?;
            audit(config, "roll_back", &meta);
            print_one(&meta, &format!("rolled back {id}: active again"), json)?;
        }
        VaultCommand::Verify {
            id,
            integration,
            account,
        } => {
            let key = MasterKey::load(key_path)?;
            let vault = Vault::open(&existing(&db)?, &key)?;
            let candidate = read_secret()?;
            let (meta, stored) = match (id, integration, account) {
                (Some(id), _, _) => vault.get(&id)?,
                (None, Some(integration), Some(account)) => {
                    vault.active(&integration, &account)?.with_context(|| {
                        format!("{integration}/{account} has no active credential")
                    })?
                }
                _ => bail!("give --id, or --integration and --account"),
            };
            if constant_time_eq(stored.expose(), candidate.expose()) {
                println!("{}: matches", meta.id);
            } else {
                println!("{}: does not match", meta.id);
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The vault file, which must exist for commands that change or read credentials.
fn existing(db: &std::path::Path) -> anyhow::Result<PathBuf> {
    if !db.exists() {
        bail!(
            "no vault at {} yet: `hb-agent vault put` creates it",
            db.display()
        );
    }
    Ok(db.to_owned())
}

fn check_integration(config: &Config, name: &str) -> anyhow::Result<()> {
    let names: Vec<&str> = config
        .integrations
        .iter()
        .map(|i| i.name.get_ref().as_str())
        .collect();
    if names.contains(&name) {
        return Ok(());
    }
    if names.is_empty() {
        bail!("integration {name:?} is not in the config: it configures no [[integration]]");
    }
    bail!(
        "integration {name:?} is not in the config (configured: {})",
        names.join(", ")
    )
}

/// The secret, from stdin only: refused when stdin is a terminal (it would echo) or
/// brings nothing.
fn read_secret() -> anyhow::Result<Secret> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!(
            "stdin is a terminal: pipe the secret in or redirect a file \
             (`hb-agent vault put … < token.txt`); secrets are never taken from arguments"
        );
    }
    let secret = Secret::read_from(stdin.lock().take(vault::MAX_SECRET_LEN as u64 + 1))
        .context("reading the secret from stdin")?;
    if secret.is_empty() {
        bail!(
            "no secret on stdin (it was empty): pipe the secret in or redirect a file \
             (`hb-agent vault put … < token.txt`)"
        );
    }
    if secret.len() > vault::MAX_SECRET_LEN {
        bail!(
            "the secret on stdin is longer than {} bytes",
            vault::MAX_SECRET_LEN
        );
    }
    Ok(secret)
}

fn parse_expires(s: &str) -> anyhow::Result<SystemTime> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(SystemTime::now() + d);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    bail!(
        "--expires {s:?}: expected a duration from now (`30d`, `12h`) or an RFC 3339 time \
         (`2026-12-31T00:00:00Z`)"
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Only the length may leak; the contents are compared without an early exit.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn time(t: Option<SystemTime>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| humantime::format_rfc3339_seconds(t).to_string(),
    )
}

/// A vault change, appended to the agent's audit log (metadata only; a failure to audit
/// is reported but does not undo the change).
fn audit(config: &Config, operation: &str, meta: &CredentialMeta) {
    let agent = &config.agent;
    match crate::audit::AuditLog::open(
        &agent.state_dir,
        agent.audit_max_bytes,
        agent.audit_max_files,
        agent.audit_fsync,
        crate::scrub::global().clone(),
    ) {
        Ok(log) => log.record(
            "vault",
            serde_json::json!({
                "operation": operation,
                "credential": meta,
                "uid": caller_uid(),
            }),
        ),
        Err(e) => eprintln!("hb-agent: warning: cannot write the audit log: {e}"),
    }
}

fn caller_uid() -> u32 {
    // SAFETY: no arguments.
    unsafe { libc::getuid() }
}

fn print_one(meta: &CredentialMeta, verb: &str, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(meta)?);
    } else {
        println!(
            "{verb} {} for {}/{} ({})",
            meta.id, meta.integration, meta.account, meta.status
        );
    }
    Ok(())
}

fn print_table(list: &[CredentialMeta]) {
    println!(
        "{:<29} {:<10} {:<16} {:<16} {:<20} {:<20} {:<20} ROTATED_FROM",
        "ID", "STATUS", "INTEGRATION", "ACCOUNT", "CREATED", "EXPIRES", "GRACE_UNTIL"
    );
    for m in list {
        println!(
            "{:<29} {:<10} {:<16} {:<16} {:<20} {:<20} {:<20} {}",
            m.id,
            m.status,
            m.integration,
            m.account,
            time(Some(m.created)),
            time(m.expires),
            time(m.grace_until),
            m.rotated_from.as_deref().unwrap_or("-")
        );
    }
}
