//! The exec rotator: a provider's own tool, run as an argv, speaking JSON on its pipes.
//!
//! Request on stdin: `{"op": "create"|"revoke", "rotation": ID, "integration", "account",
//! "secret"}` (`secret`: the credential being replaced, for create; the one to revoke,
//! for revoke). Answer on stdout for create: `{"secret": "…", "expires": "RFC 3339"?}`.
//! Exit 0 = done, 75 (`EX_TEMPFAIL`) = retry later, anything else = failed.
//!
//! Owns: running it confined to what it needs — no shell, an empty environment but
//! `PATH`, its own process group killed whole at the timeout, stdout capped at
//! [`MAX_STDOUT`] and stderr kept to 4 KiB for the log (scrubbed like every log line).
//! Must never: put a secret in argv or the environment, keep a copy of a secret it
//! passed or read (the buffers are zeroed), or report the rotator's own words as the
//! failure class (they may quote a secret: classes are fixed words).

use std::{os::unix::process::ExitStatusExt as _, process::Stdio, time::Duration};

use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use zeroize::Zeroize as _;

use super::rotator::{Ask, Minted, RotatorError};
use crate::secret::Secret;

/// The most a rotator may print on stdout (a secret and its expiry).
const MAX_STDOUT: usize = 128 * 1024;
/// What of its stderr is kept for the log.
const MAX_STDERR: usize = 4 * 1024;
/// `EX_TEMPFAIL`: the provider is unavailable for now.
const EXIT_RETRY: i32 = 75;

pub struct ExecRotator {
    pub argv: Vec<String>,
    pub timeout: Duration,
}

impl ExecRotator {
    /// `create`: a new credential replacing `ask.secret`.
    pub async fn create(&self, ask: &Ask<'_>) -> Result<Minted, RotatorError> {
        let (result, mut err) = self.run(ask).await;
        let mut out = result?;
        let minted = parse_minted(&out);
        // An answer refused for another reason (an expiry it cannot read…) still names
        // the key the provider minted, which stays live there.
        let refused = if minted.is_err() {
            answered_secret(&out)
        } else {
            None
        };
        out.zeroize();
        // The new value is not registered with the scrubber yet (nor ever, when its
        // answer is refused): a rotator that echoes it on stderr (whole, a piece of it,
        // or encoded: base64, upper case…) must not put it in the log.
        match minted.as_ref().map(|m| &m.secret).ok().or(refused.as_ref()) {
            Some(secret) => {
                err = cut_minted(err, secret.expose());
                self.log_stderr(ask, &err);
            }
            // Refused, and no key could be read from it (text around the JSON, a cut
            // answer): the provider may still have minted one, which nothing can cut
            // from stderr. Its length only.
            None => self.log_stderr_withheld(ask, err.len()),
        }
        err.zeroize();
        minted
    }

    /// `revoke`: the provider stops accepting `ask.secret`.
    pub async fn revoke(&self, ask: &Ask<'_>) -> Result<(), RotatorError> {
        let (result, mut err) = self.run(ask).await;
        self.log_stderr(ask, &err);
        err.zeroize();
        let mut out = result?;
        out.zeroize();
        Ok(())
    }

    /// What the rotator wrote on stderr, for the operator (the log is scrubbed of every
    /// registered value and known token family).
    /// Logs that the rotator wrote `len` bytes to stderr, withheld: they may hold a key
    /// hb could not read from the answer, so could not cut.
    fn log_stderr_withheld(&self, ask: &Ask<'_>, len: usize) {
        if len > 0 {
            tracing::warn!(
                rotator = %self.argv[0],
                op = ask.op,
                stderr_bytes = len,
                "rotator wrote to stderr beside an answer hb refused and could not read a key from: withheld"
            );
        }
    }

    fn log_stderr(&self, ask: &Ask<'_>, err: &[u8]) {
        if !err.is_empty() {
            tracing::warn!(
                rotator = %self.argv[0],
                op = ask.op,
                stderr = %String::from_utf8_lossy(err),
                "rotator wrote to stderr"
            );
        }
    }

    /// Runs the rotator once: stdout (exit 0 only), and stderr whatever the outcome.
    async fn run(&self, ask: &Ask<'_>) -> (Result<Vec<u8>, RotatorError>, Vec<u8>) {
        let mut stderr_kept = Vec::new();
        let result = self.run_inner(ask, &mut stderr_kept).await;
        (result, stderr_kept)
    }

    async fn run_inner(
        &self,
        ask: &Ask<'_>,
        stderr_kept: &mut Vec<u8>,
    ) -> Result<Vec<u8>, RotatorError> {
        let mut request = request_json(ask);
        let (program, args) = self
            .argv
            .split_first()
            .ok_or(RotatorError::Failed("no_rotator"))?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|_| RotatorError::RetryLater("rotator_not_started"))?;
        let pgid = child.id();
        let mut stdin = child.stdin.take();
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let talk = async {
            if let Some(mut s) = stdin.take() {
                // A rotator that exits without reading is judged by its exit status.
                let _ = s.write_all(&request).await;
                let _ = s.shutdown().await;
            }
            let mut out = Vec::new();
            let mut err = Vec::new();
            let read_out = async {
                if let Some(s) = stdout.as_mut() {
                    let _ = s.take(MAX_STDOUT as u64 + 1).read_to_end(&mut out).await;
                }
            };
            let read_err = async {
                if let Some(s) = stderr.as_mut() {
                    let _ = s.take(MAX_STDERR as u64).read_to_end(&mut err).await;
                }
            };
            tokio::join!(read_out, read_err);
            let status = child.wait().await;
            (status, out, err)
        };
        let outcome = tokio::time::timeout(self.timeout, talk).await;
        request.zeroize();
        let Ok((status, mut out, err)) = outcome else {
            kill_group(pgid);
            return Err(RotatorError::RetryLater("rotator_timeout"));
        };
        // Whatever it left behind in its group goes with it.
        kill_group(pgid);
        *stderr_kept = err;
        let status = status.map_err(|_| RotatorError::RetryLater("rotator_wait_failed"))?;
        let failure = match status.code() {
            Some(0) if out.len() <= MAX_STDOUT => None,
            Some(0) => Some(RotatorError::Failed("rotator_answer_too_long")),
            Some(EXIT_RETRY) => Some(RotatorError::RetryLater("rotator_exit_75")),
            Some(_) => Some(RotatorError::Failed("rotator_exit")),
            None if status.signal().is_some() => Some(RotatorError::RetryLater("rotator_killed")),
            None => Some(RotatorError::Failed("rotator_exit")),
        };
        match failure {
            None => Ok(out),
            Some(e) => {
                out.zeroize();
                Err(e)
            }
        }
    }
}

/// The rotator's stderr without the value it minted: whole, and every run of it or of
/// one of its encodings (base64, hex, upper case…) the scrubber would find in an answer.
fn cut_minted(err: Vec<u8>, secret: &[u8]) -> Vec<u8> {
    let mut err = without(err, secret);
    if let Some(redacted) = crate::scrub::Fragments::new(secret).and_then(|f| f.redact(&err)) {
        err.zeroize();
        err = redacted;
    }
    err
}

/// `text` with every occurrence of `secret` replaced by a marker.
fn without(text: Vec<u8>, secret: &[u8]) -> Vec<u8> {
    if secret.is_empty() || text.len() < secret.len() {
        return text;
    }
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(secret) {
            out.extend_from_slice(b"[REDACTED:new_secret]");
            i += secret.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    let mut text = text;
    text.zeroize();
    out
}

/// The request as JSON bytes (the caller zeroes them after use).
fn request_json(ask: &Ask<'_>) -> Vec<u8> {
    let mut secret = String::from_utf8_lossy(ask.secret.expose()).into_owned();
    let value = serde_json::json!({
        "op": ask.op,
        "rotation": ask.rotation,
        "integration": ask.integration,
        "account": ask.account,
        "secret": secret,
    });
    secret.zeroize();
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    // The Value's own copy of the secret.
    if let serde_json::Value::Object(mut map) = value
        && let Some(serde_json::Value::String(mut s)) = map.remove("secret")
    {
        s.zeroize();
    }
    bytes
}

#[derive(Deserialize)]
struct Answer {
    secret: String,
    #[serde(default)]
    expires: Option<String>,
}

/// The rotator's answer to `create`.
fn parse_minted(out: &[u8]) -> Result<Minted, RotatorError> {
    let mut answer: Answer =
        serde_json::from_slice(out).map_err(|_| RotatorError::Failed("rotator_answer_not_json"))?;
    let secret = Secret::new(answer.secret.as_bytes().to_vec());
    answer.secret.zeroize();
    if secret.expose().is_empty() {
        return Err(RotatorError::Failed("rotator_answer_empty"));
    }
    let expires = match answer.expires.as_deref() {
        None => None,
        Some(t) => Some(
            humantime::parse_rfc3339_weak(t)
                .map_err(|_| RotatorError::Failed("rotator_answer_bad_expiry"))?,
        ),
    };
    Ok(Minted { secret, expires })
}

/// The `secret` an answer names, whatever else is wrong with it (`None`: not a JSON
/// object with a non-empty string `secret`).
fn answered_secret(out: &[u8]) -> Option<Secret> {
    // A key named twice: the map keeps one of them, and the other could not be cut.
    if out.windows(8).filter(|w| w == b"\"secret\"").count() > 1 {
        return None;
    }
    let Ok(serde_json::Value::Object(mut map)) = serde_json::from_slice(out) else {
        return None;
    };
    let Some(serde_json::Value::String(mut s)) = map.remove("secret") else {
        return None;
    };
    let secret = Secret::new(s.as_bytes().to_vec());
    s.zeroize();
    (!secret.is_empty()).then_some(secret)
}

/// SIGKILL to the rotator's process group (its pid is the group's id).
fn kill_group(pgid: Option<u32>) {
    if let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is
        // touched. The group was created for this rotator alone (process_group(0)).
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotator(script: &str, timeout_ms: u64) -> ExecRotator {
        ExecRotator {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    fn ask(secret: &Secret) -> Ask<'_> {
        Ask {
            op: "create",
            rotation: "rot_1",
            integration: "gh",
            account: "ci",
            key: super::super::rotator::Key::Old,
            secret,
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_refused_answer_still_names_its_key_for_the_stderr_cut() {
        let out = br#"{"secret":"prov_0123456789abcdef","expires":"next tuesday"}"#;
        assert_eq!(
            parse_minted(out).err(),
            Some(RotatorError::Failed("rotator_answer_bad_expiry"))
        );
        let s = answered_secret(out).expect("named");
        assert_eq!(s.expose(), b"prov_0123456789abcdef");
        let err = cut_minted(b"created prov_0123456789abcdef\n".to_vec(), s.expose());
        assert!(!contains(&err, b"prov_0123456789abcdef"));
        for none in [
            &br#"{"secret":""}"#[..],
            b"[1]",
            b"nope",
            br#"{"secret":1}"#,
            br#"{"secret":"first_0123456789","secret":"second_0123456789"}"#,
            b"created\n{\"secret\":\"prov_0123456789abcdef\"}",
        ] {
            assert!(answered_secret(none).is_none());
        }
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn the_rotator_gets_json_on_stdin_and_an_empty_environment() {
        let old = Secret::new(b"old-value-123".to_vec());
        // Echo back a secret built from what came in, and the environment's size.
        let r = rotator(
            r#"read req; n=$(env | grep -vc '^PATH=\|^PWD=\|^SHLVL=\|^_='); case "$req" in *'"op":"create"'*'"secret":"old-value-123"'*) printf '{"secret":"new-%s","expires":"2030-01-01T00:00:00Z"}' "$n";; *) exit 9;; esac"#,
            5000,
        );
        let minted = runtime()
            .block_on(r.create(&ask(&old)))
            .map_err(|e| e.class())
            .expect("create");
        assert_eq!(minted.secret.expose(), b"new-0", "no environment but PATH");
        assert!(minted.expires.is_some());
    }

    #[test]
    fn a_new_value_on_stderr_in_another_encoding_or_in_pieces_is_cut_out_too() {
        use base64::Engine as _;
        let secret = b"nk-0f1e2d3c4b5a69788796a5b4c3d2e1f0";
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        let upper = String::from_utf8_lossy(secret).to_uppercase();
        let text = format!("minted {b64}; as {upper}; head {}", &upper[..12]);
        let got = String::from_utf8(cut_minted(text.into_bytes(), secret)).expect("utf-8");
        for piece in [b64.as_str(), upper.as_str(), &upper[3..12]] {
            assert!(!got.contains(piece), "{piece} left in {got}");
        }
        assert!(got.starts_with("minted "), "{got}");
    }

    #[test]
    fn a_new_value_echoed_on_stderr_is_cut_out_before_the_log() {
        let got = without(b"minted nk-123 ok; nk-123".to_vec(), b"nk-123");
        assert_eq!(
            got,
            b"minted [REDACTED:new_secret] ok; [REDACTED:new_secret]"
        );
        assert_eq!(without(b"short".to_vec(), b"longer-secret"), b"short");
    }

    #[test]
    fn exits_timeouts_and_bad_answers_are_classified() {
        let old = Secret::new(b"old".to_vec());
        let rt = runtime();
        let class = |script: &str, ms| {
            rt.block_on(rotator(script, ms).create(&ask(&old)))
                .err()
                .map(|e| (matches!(e, RotatorError::RetryLater(_)), e.class()))
        };
        assert_eq!(class("exit 75", 5000), Some((true, "rotator_exit_75")));
        assert_eq!(class("exit 3", 5000), Some((false, "rotator_exit")));
        assert_eq!(
            class("echo not json", 5000),
            Some((false, "rotator_answer_not_json"))
        );
        assert_eq!(
            class(r#"echo '{"secret":""}'"#, 5000),
            Some((false, "rotator_answer_empty"))
        );
        // A hung rotator and the child it forked are killed at the timeout.
        assert_eq!(
            class("sleep 30 & sleep 30", 300),
            Some((true, "rotator_timeout"))
        );
        assert_eq!(
            rt.block_on(
                ExecRotator {
                    argv: vec!["/nonexistent/rotator".into()],
                    timeout: Duration::from_secs(1),
                }
                .create(&ask(&old))
            )
            .err(),
            Some(RotatorError::RetryLater("rotator_not_started"))
        );
    }
}
