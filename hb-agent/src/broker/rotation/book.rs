//! The detectors' recent state per account, for `hb-agent rotation status`: each
//! detector's last signal (when, the configured action, what came of it) and how many
//! signals it raised today (UTC). Kept in memory by the agent and written to
//! `state_dir/detectors.json` (a new file renamed over the old one) after each change,
//! so the CLI reads it without the agent and a restart keeps it.
//!
//! Must never: hold a value, a handle or a caller's text (integration and account
//! names, times and fixed words only).

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

/// File name below `state_dir`.
pub const FILE: &str = "detectors.json";

/// One detector's state for one account.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DetectorState {
    /// RFC 3339 (UTC, seconds) of the last signal.
    pub last_signal: String,
    /// The action the integration configures for it.
    pub last_action: String,
    /// What the action came to (`rotation_started`, `joined`, `capped`, …), once known.
    #[serde(default)]
    pub last_outcome: Option<String>,
    /// The UTC day `today` counts (`YYYY-MM-DD`).
    pub day: String,
    /// Signals on `day`.
    pub today: u64,
}

/// Every account's detectors, keyed `integration/account` then detector.
pub type Accounts = BTreeMap<String, BTreeMap<String, DetectorState>>;

pub struct Book {
    path: PathBuf,
    accounts: Mutex<Accounts>,
}

impl Book {
    /// The book of `state_dir` (empty if it has none yet or cannot be read).
    pub fn open(state_dir: &Path) -> Self {
        let path = state_dir.join(FILE);
        Self {
            accounts: Mutex::new(read(state_dir).unwrap_or_default()),
            path,
        }
    }

    /// A signal of `detector` about `integration`/`account` under `action`.
    pub fn signal(&self, integration: &str, account: &str, detector: &str, action: &str) {
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let day = now.get(..10).unwrap_or_default().to_owned();
        self.change(integration, account, detector, |d| {
            if d.day != day {
                d.day = day;
                d.today = 0;
            }
            d.today += 1;
            d.last_signal = now;
            d.last_action = action.to_owned();
            d.last_outcome = None;
        });
    }

    /// What the last signal of `detector` came to.
    pub fn outcome(&self, integration: &str, account: &str, detector: &str, outcome: &str) {
        self.change(integration, account, detector, |d| {
            d.last_outcome = Some(outcome.to_owned());
        });
    }

    fn change(
        &self,
        integration: &str,
        account: &str,
        detector: &str,
        f: impl FnOnce(&mut DetectorState),
    ) {
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        f(accounts
            .entry(format!("{integration}/{account}"))
            .or_default()
            .entry(detector.to_owned())
            .or_default());
        // Written under the lock, so the file never goes back to an older state.
        if let Err(e) = write(&self.path, &accounts) {
            tracing::warn!(error = %e, path = %self.path.display(), "cannot write the detectors' state");
        }
    }
}

fn write(path: &Path, accounts: &Accounts) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("json.tmp");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o640)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(accounts).map_err(io::Error::other)?)?;
    fs::rename(&tmp, path)
}

/// The book as last written (for the CLI); `None` if there is none.
pub fn read(state_dir: &Path) -> Option<Accounts> {
    let text = fs::read(state_dir.join(FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_counted_per_day_and_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("hb-book-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let book = Book::open(&dir);
        book.signal("gh", "ci", "reflection", "rotate_compromised");
        book.outcome("gh", "ci", "reflection", "rotation_started");
        book.signal("gh", "ci", "reflection", "rotate_compromised");
        book.outcome("gh", "ci", "reflection", "capped");
        book.signal("gh", "ci", "canary", "alert");
        let again = read(&dir).expect("written");
        let ci = &again["gh/ci"];
        assert_eq!(ci["reflection"].today, 2);
        assert_eq!(ci["reflection"].last_outcome.as_deref(), Some("capped"));
        assert_eq!(ci["canary"].today, 1);
        assert_eq!(ci["canary"].last_outcome, None);
        // A new book over the same directory goes on from there.
        let reopened = Book::open(&dir);
        reopened.signal("gh", "ci", "canary", "alert");
        assert_eq!(read(&dir).expect("written")["gh/ci"]["canary"].today, 2);
        fs::remove_dir_all(&dir).expect("clean up");
    }
}
