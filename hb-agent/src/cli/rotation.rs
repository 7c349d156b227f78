//! `hb-agent rotation …`: start, follow, list and abort credential rotations.
//!
//! `trigger` asks the running agent over the broker socket (it drives the steps: the
//! rotator, the test call through its outbound path, the switch); `status`, `history`
//! and `abort` read and write the vault's journal directly, as `vault list` does (root,
//! or whoever may read the master key). No command prints a value: rows name
//! credentials by id.

use std::{
    io::Read as _,
    process::ExitCode,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use clap::Subcommand;

use crate::{
    broker::{
        revoke_minted_by_operator, rotation_book, rotation_breaker, rotation_limits,
        rotation_minting, rotation_sensor,
    },
    config::Config,
    vault::{self, MasterKey, Rotation, Step, Vault},
};

const EXAMPLES: &str = "\
Examples:
  hb-agent rotation trigger --integration github --account ci --wait
  hb-agent rotation trigger -i github -a ci --compromised --wait --json
  hb-agent rotation status
  hb-agent rotation history --since 7d --json
  hb-agent rotation abort rot_0123456789abcdef01234567
Exit codes: 0 done (for trigger --wait: the new credential is active); 1 the rotation
failed, was rolled back or aborted; 2 bad input or no agent.";

#[derive(Debug, Subcommand)]
#[command(after_help = EXAMPLES)]
pub enum RotationCommand {
    /// Start a rotation of INTEGRATION/ACCOUNT in the running agent (its
    /// `[integration.rotation]` rotator mints the new credential).
    #[command(after_help = EXAMPLES)]
    Trigger {
        #[arg(long, short)]
        integration: String,
        #[arg(long, short)]
        account: String,
        /// The current credential leaked: no grace period, no rollback to it.
        #[arg(long)]
        compromised: bool,
        /// Wait until the new credential is active (or the rotation closes); exit 1 if
        /// it did not become active.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (`30s`, `5m`).
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[arg(long)]
        json: bool,
    },
    /// Rotations with work left (step, attempts, next attempt, last failure class), each
    /// rotator's circuit breaker that is not closed, and per account of a rotating
    /// integration: its limits (rotations in the last 24 h,
    /// what is left of `max_rotations_per_day` and `max_compromise_rotations_per_day`,
    /// the cooldown's end) and each detector's last signal and count today.
    #[command(after_help = EXAMPLES)]
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Every rotation started in the last DURATION (default: all), oldest first.
    #[command(after_help = EXAMPLES)]
    History {
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        #[arg(long)]
        json: bool,
    },
    /// Give up a rotation that has not finished: its pending value is revoked, the
    /// current credential stays. (A running agent's task for it stops at its next step.)
    #[command(after_help = EXAMPLES)]
    Abort {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(config: &Config, cmd: RotationCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RotationCommand::Trigger {
            integration,
            account,
            compromised,
            wait,
            timeout,
            json,
        } => trigger(
            config,
            &integration,
            &account,
            compromised,
            wait.then_some(timeout),
            json,
        ),
        RotationCommand::Status { json } => {
            status(config, json)?;
            Ok(ExitCode::SUCCESS)
        }
        RotationCommand::History { since, json } => {
            let since = since.map(|d| SystemTime::now() - d);
            let all = open_vault(config)?.rotations(since)?;
            print_list(&all, json)?;
            Ok(ExitCode::SUCCESS)
        }
        RotationCommand::Abort { id, json } => {
            let mut vault = open_vault(config)?;
            // The value the rotator already minted, if any: revoked at the provider too,
            // or it stays live there with no one holding it.
            let minted = vault.rotation_value(&id).ok();
            let r = vault.abandon_rotation(&id, Step::Aborted, "operator")?;
            if let Some((_, secret)) = minted
                && let Err(class) = revoke_minted_by_operator(config, &vault, &r, &secret)
            {
                eprintln!(
                    "warning: the provider did not revoke the credential rotation {} minted \
                     ({class}): it may still work there; revoke it by hand",
                    r.id
                );
            }
            print_one(&r, json)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One account's limits and detectors, for `status`.
#[derive(serde::Serialize)]
struct AccountStatus {
    integration: String,
    account: String,
    #[serde(flatten)]
    budget: rotation_limits::Budget,
    rotations_left: u32,
    compromise_rotations_left: u32,
    detectors: std::collections::BTreeMap<String, rotation_book::DetectorState>,
    /// The sensor's baseline and last buckets (null before the account's first call).
    sensor: Option<serde_json::Value>,
}

/// Buckets of each account's sensor that `rotation status --json` shows.
const STATUS_BUCKETS: usize = 6;

/// `rotation status`: the open rotations, then every account of a rotating integration
/// (from the vault and the detectors' book) with its budgets and detectors.
fn status(config: &Config, json: bool) -> anyhow::Result<()> {
    let vault = open_vault(config)?;
    let open = vault.open_rotations()?;
    let now = SystemTime::now();
    let recent = vault.rotations(Some(now - rotation_limits::WINDOW))?;
    let book = rotation_book::read(&config.agent.state_dir).unwrap_or_default();
    let sensed = rotation_sensor::read(&config.agent.state_dir).unwrap_or_default();
    let mut accounts: std::collections::BTreeSet<(String, String)> = vault
        .list()?
        .into_iter()
        .filter(|m| m.status != vault::Status::Revoked)
        .map(|m| (m.integration, m.account))
        .collect();
    accounts.extend(
        book.keys()
            .chain(sensed.keys())
            .filter_map(|k| k.split_once('/').map(|(i, a)| (i.to_owned(), a.to_owned()))),
    );
    let rows: Vec<AccountStatus> = accounts
        .into_iter()
        .filter_map(|(integration, account)| {
            let rotation = config
                .integrations
                .iter()
                .find(|i| i.name.get_ref() == &integration)?
                .rotation
                .as_ref()?;
            let budget = rotation_limits::budget(&recent, &integration, &account, rotation, now);
            let (left, compromise_left) = budget.remaining();
            let key = format!("{integration}/{account}");
            let detectors = book.get(&key).cloned().unwrap_or_default();
            let sensor = sensed
                .get(&key)
                .map(|s| rotation_sensor::view(s, rotation, STATUS_BUCKETS));
            Some(AccountStatus {
                integration,
                account,
                budget,
                rotations_left: left,
                compromise_rotations_left: compromise_left,
                detectors,
                sensor,
            })
        })
        .collect();
    // Each rotator's circuit breaker as the agent last wrote it (none: all closed).
    let breakers = rotation_breaker::read(&config.agent.state_dir).unwrap_or_default();
    // Mints whose key the agent never got: their integration's answers go through the
    // pending-key shape pass.
    let mut unsettled = rotation_minting::read(&config.agent.state_dir).unwrap_or_default();
    unsettled.retain(|u| u.outcome != "in_flight");
    if json {
        println!(
            "{}",
            serde_json::json!({ "open": open, "accounts": rows, "breakers": breakers,
                                "unsettled_mints": unsettled })
        );
        return Ok(());
    }
    print_list(&open, false)?;
    for u in &unsettled {
        println!(
            "{}: a key minted by rotation {} is unknown to the agent ({} since {}): its answers are scrubbed of tokens of the key's shape",
            u.integration, u.rotation, u.outcome, u.since
        );
    }
    for (integration, b) in breakers.iter().filter(|(_, b)| b.state != "closed") {
        println!(
            "rotator of {integration}: breaker {} until {} ({} failures in a row, last {})",
            b.state,
            b.open_until.as_deref().unwrap_or("-"),
            b.consecutive_failures,
            b.last_failure.as_deref().unwrap_or("-")
        );
    }
    println!();
    println!(
        "{:<16} {:<16} {:<10} {:<10} {:<22} {:<14} DETECTORS (today, last signal → outcome)",
        "INTEGRATION", "ACCOUNT", "ROTATIONS", "COMPROMISE", "COOLDOWN UNTIL", "CALLS/MIN BASE"
    );
    for r in &rows {
        let detectors: Vec<String> = r
            .detectors
            .iter()
            .map(|(name, d)| {
                format!(
                    "{name}: {} today, {} {} → {}",
                    d.today,
                    d.last_signal,
                    d.last_action,
                    d.last_outcome.as_deref().unwrap_or("-")
                )
            })
            .collect();
        let baseline = r
            .sensor
            .as_ref()
            .and_then(|s| s["baseline"]["calls_per_minute"].as_f64())
            .map_or_else(|| "-".to_owned(), |b| format!("{b:.1}"));
        println!(
            "{:<16} {:<16} {:<10} {:<10} {:<22} {:<14} {}",
            r.integration,
            r.account,
            format!("{}/{}", r.budget.rotations, r.budget.max_rotations),
            format!("{}/{}", r.budget.compromise, r.budget.max_compromise),
            r.budget.cooldown_until.map_or_else(
                || "-".to_owned(),
                |t| humantime::format_rfc3339_seconds(t).to_string()
            ),
            baseline,
            if detectors.is_empty() {
                "-".to_owned()
            } else {
                detectors.join("; ")
            }
        );
    }
    Ok(())
}

/// `POST /v1/rotations`, then (with a deadline) `GET /v1/rotations/{id}` until the new
/// credential is active or the rotation closes.
fn trigger(
    config: &Config,
    integration: &str,
    account: &str,
    compromised: bool,
    wait: Option<Duration>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let socket = &config.broker.socket;
    let body = serde_json::json!({
        "integration": integration,
        "account": account,
        "compromised": compromised,
    })
    .to_string();
    let (status, text) = call(
        socket,
        &format!(
            "POST /v1/rotations HTTP/1.0\r\nHost: hb\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )?;
    if status != 202 {
        bail!("the agent refused the rotation ({status}): {text}");
    }
    let mut rotation: serde_json::Value = serde_json::from_str(&text)?;
    if let Some(limit) = wait {
        let id = rotation["id"]
            .as_str()
            .context("no rotation id")?
            .to_owned();
        let deadline = Instant::now() + limit;
        while !settled(&rotation) {
            if Instant::now() >= deadline {
                bail!(
                    "rotation {id} still at step {} after {limit:?}",
                    rotation["step"]
                );
            }
            std::thread::sleep(Duration::from_millis(200));
            let (status, text) = call(
                socket,
                &format!("GET /v1/rotations/{id} HTTP/1.0\r\nHost: hb\r\n\r\n"),
            )?;
            if status != 200 {
                bail!("reading rotation {id} ({status}): {text}");
            }
            rotation = serde_json::from_str(&text)?;
        }
    }
    if json {
        println!("{rotation}");
    } else {
        println!(
            "rotation {} of {}/{}: {}",
            rotation["id"].as_str().unwrap_or("?"),
            integration,
            account,
            rotation["step"].as_str().unwrap_or("?")
        );
    }
    let active = matches!(
        rotation["step"].as_str(),
        Some("begun" | "created" | "tested" | "finished" | "watched" | "retired")
    );
    Ok(if active || wait.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The new credential is active, or the rotation is closed.
fn settled(rotation: &serde_json::Value) -> bool {
    !matches!(
        rotation["step"].as_str(),
        Some("begun" | "created" | "tested")
    )
}

/// One HTTP/1.0 exchange on the broker socket: the status and the body.
fn call(socket: &std::path::Path, request: &str) -> anyhow::Result<(u16, String)> {
    let (status, mut reader) = super::events::http(socket, request)
        .with_context(|| format!("is the agent running? (broker socket {})", socket.display()))?;
    let mut body = String::new();
    reader.read_to_string(&mut body)?;
    Ok((status, body))
}

fn open_vault(config: &Config) -> anyhow::Result<Vault> {
    let db = config.agent.state_dir.join(vault::DB_FILE);
    if !db.exists() {
        bail!(
            "no vault at {} yet: `hb-agent vault put` creates it",
            db.display()
        );
    }
    let key = MasterKey::load(&config.agent.master_key_file)?;
    Ok(Vault::open(&db, &key)?)
}

fn print_one(r: &Rotation, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
    } else {
        print_list(std::slice::from_ref(r), false)?;
    }
    Ok(())
}

fn print_list(list: &[Rotation], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("(no rotations)");
        return Ok(());
    }
    println!(
        "{:<28} {:<16} {:<16} {:<12} {:<8} {:<18} {:<20} OLD → NEW",
        "ID", "INTEGRATION", "ACCOUNT", "STEP", "ATTEMPT", "TRIGGER", "LAST ERROR"
    );
    for r in list {
        println!(
            "{:<28} {:<16} {:<16} {:<12} {:<8} {:<18} {:<20} {} → {}",
            r.id,
            r.integration,
            r.account,
            r.step,
            r.attempt,
            r.trigger,
            r.last_error.as_deref().unwrap_or("-"),
            r.old_id,
            r.new_id.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
