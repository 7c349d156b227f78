//! The command's environment: a clean one, never the caller's whole.
//!
//! Owns: which variables cross into a sandbox. An operator's or CI runner's shell holds
//! credentials in its environment (`AWS_SECRET_ACCESS_KEY`, `GITHUB_TOKEN`,
//! `SSH_AUTH_SOCK`…) — exactly what the broker exists to keep out of a sandbox. So the
//! command gets only what a program needs to run ([`KEPT`] and `LC_*` from the caller,
//! `HOME` set to the work mount or `/`), plus what the operator names with
//! `--env KEY` (the caller's value) or `--env KEY=VALUE`.
//! Must never: pass a variable nobody named.

use std::{ffi::CString, os::unix::ffi::OsStrExt as _, path::Path};

/// Variables taken from the caller as they are (besides every `LC_*`).
pub const KEPT: [&str; 4] = ["PATH", "TERM", "LANG", "TZ"];

/// The command's environment as `KEY=VALUE` C strings: the kept variables and `LC_*` of
/// `caller`, `HOME`, then each `--env` (a later one wins). Errors name the bad entry.
pub fn build(
    caller: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    named: &[String],
    home: &Path,
) -> Result<Vec<CString>, String> {
    let caller: Vec<(Vec<u8>, Vec<u8>)> = caller
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = caller
        .iter()
        .filter(|(k, _)| {
            KEPT.iter().any(|kept| kept.as_bytes() == k.as_slice()) || k.starts_with(b"LC_")
        })
        .cloned()
        .collect();
    out.push((b"HOME".to_vec(), home.as_os_str().as_bytes().to_vec()));
    for entry in named {
        let (key, value) = match entry.split_once('=') {
            Some((k, v)) => (k.as_bytes().to_vec(), v.as_bytes().to_vec()),
            None => {
                let k = entry.as_bytes().to_vec();
                check_key(&k).map_err(|why| format!("--env {entry:?}: {why}"))?;
                let Some((_, v)) = caller.iter().find(|(ck, _)| *ck == k) else {
                    // Named but unset: nothing to pass, as `env` would do.
                    continue;
                };
                (k, v.clone())
            }
        };
        check_key(&key).map_err(|why| format!("--env {entry:?}: {why}"))?;
        out.retain(|(k, _)| *k != key);
        out.push((key, value));
    }
    out.into_iter()
        .map(|(mut k, v)| {
            k.push(b'=');
            k.extend_from_slice(&v);
            CString::new(k).map_err(|_| "an environment value holds a NUL byte".to_owned())
        })
        .collect()
}

/// A variable name a shell could set: letters, digits and `_`, not starting with a digit.
fn check_key(key: &[u8]) -> Result<(), &'static str> {
    let ok = !key.is_empty()
        && !key[0].is_ascii_digit()
        && key.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_');
    if ok {
        Ok(())
    } else {
        Err("not a variable name (letters, digits and _, e.g. --env HTTP_TIMEOUT=30)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(
        list: &[(&str, &str)],
    ) -> impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)> {
        list.iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn strings(v: Vec<CString>) -> Vec<String> {
        v.into_iter()
            .map(|c| c.into_string().expect("utf-8"))
            .collect()
    }

    #[test]
    fn only_named_variables_cross() {
        let caller = [
            ("PATH", "/usr/bin"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("LC_ALL", "C"),
            ("HOME", "/root"),
            ("KEEP_ME", "yes"),
        ];
        let got = strings(
            build(
                vars(&caller),
                &["KEEP_ME".into(), "MODE=fast".into(), "UNSET".into()],
                Path::new("/work"),
            )
            .expect("valid"),
        );
        assert_eq!(
            got,
            [
                "PATH=/usr/bin",
                "LC_ALL=C",
                "HOME=/work",
                "KEEP_ME=yes",
                "MODE=fast"
            ]
        );
    }

    #[test]
    fn bad_names_are_refused_by_name() {
        for bad in ["=x", "1A=b", "A-B=c", "A B"] {
            let e = build(vars(&[]), &[bad.into()], Path::new("/")).expect_err("refused");
            assert!(e.contains(bad) && e.contains("variable name"), "{e}");
        }
    }
}
