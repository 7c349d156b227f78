//! Who a sandboxed command runs as: `--user`, else `[sandbox_defaults] user`.
//!
//! Owns: reading `UID[:GID]` or a user name (looked up in /etc/passwd by the launcher,
//! before it forks: no name service code runs in the sandbox's init).

use std::path::Path;

/// The numeric user and group a sandboxed command runs as (no supplementary groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// `UID[:GID]` (the gid is the uid when left out) or a name from /etc/passwd (with the
/// user's primary group). Errors say which form was expected.
pub fn parse_user(s: &str) -> Result<User, String> {
    parse_user_in(s, Path::new("/etc/passwd"))
}

fn parse_user_in(s: &str, passwd: &Path) -> Result<User, String> {
    if s.is_empty() {
        return Err("empty user (expected UID[:GID] or a user name, e.g. 1000:1000)".into());
    }
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        return parse_numeric(s);
    }
    let text = std::fs::read_to_string(passwd).map_err(|e| {
        format!(
            "cannot read {} to look up user {s:?}: {e}",
            passwd.display()
        )
    })?;
    lookup(&text, s).ok_or_else(|| {
        format!(
            "no user {s:?} in {} (give UID[:GID] instead, e.g. 1000:1000)",
            passwd.display()
        )
    })
}

fn parse_numeric(s: &str) -> Result<User, String> {
    let number = |part: &str, what: &str| {
        part.parse::<u32>().map_err(|_| {
            format!("{what} {part:?} is not a number (expected UID[:GID], e.g. 65534:65534)")
        })
    };
    let (uid, gid) = match s.split_once(':') {
        Some((u, g)) => (number(u, "uid")?, number(g, "gid")?),
        None => {
            let u = number(s, "uid")?;
            (u, u)
        }
    };
    Ok(User { uid, gid })
}

/// The uid and primary gid of `name` in passwd(5) text.
fn lookup(passwd: &str, name: &str) -> Option<User> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(User { uid, gid })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_are_read() {
        assert_eq!(
            parse_user("1000:1001"),
            Ok(User {
                uid: 1000,
                gid: 1001
            })
        );
        assert_eq!(
            parse_user("65534"),
            Ok(User {
                uid: 65534,
                gid: 65534
            })
        );
        let passwd = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65533::/:/sbin/nologin\n";
        assert_eq!(
            lookup(passwd, "nobody"),
            Some(User {
                uid: 65534,
                gid: 65533
            })
        );
        assert_eq!(lookup(passwd, "nob"), None);
    }

    #[test]
    fn bad_input_names_the_form() {
        for bad in ["", "10x", "1000:", "1000:abc", "-1"] {
            let e = parse_user(bad).expect_err("refused");
            assert!(e.contains("UID[:GID]"), "{bad:?}: {e}");
        }
        let e = parse_user("no-such-user-hb").expect_err("refused");
        assert!(e.contains("no user") && e.contains("/etc/passwd"), "{e}");
    }
}
