//! Tenants: a name per organisation and its work dir, `TENANTS_DIR/NAME/work`, which a
//! sandbox of that tenant sees read-write at its work mount (see [`super::mounts`]) and
//! no other sandbox sees at all.
//!
//! The tenants dir is root's and 0700 (no sandbox user can list or reach it on the
//! host); `NAME` is root's; `NAME/work` is owned by the sandbox's user and 0700. Every
//! step of the path is opened relative to the previous one without following symbolic
//! links (`openat` with `O_NOFOLLOW`), so no link — planted by anyone, anywhere on the
//! path — can send a tenant's work dir elsewhere.
//!
//! Must never: follow a symbolic link, accept a name that is not one plain path
//! component, or hand a tenant a directory another user owns.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Component, Path, PathBuf},
};

/// Longest tenant name (one path component, readable in logs).
pub const MAX_NAME_LEN: usize = 64;

/// Why a tenant's work dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error(
        "tenant name {name:?} is invalid: {reason} (a tenant name is 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ -, \
         not starting with a dot)"
    )]
    InvalidName { name: String, reason: &'static str },
    #[error("tenants dir {0:?} must be an absolute path without `..`")]
    NotAbsolute(PathBuf),
    #[error(
        "{0:?} is a symbolic link: no link may appear on a tenant's path (configure tenants_dir with the \
         resolved path)"
    )]
    Symlink(PathBuf),
    #[error("{0:?} exists and is not a directory")]
    NotDirectory(PathBuf),
    #[error("{path:?} is owned by uid {uid} with mode {mode:04o}: {expected}; refusing to use it")]
    Unsafe {
        path: PathBuf,
        uid: u32,
        mode: u32,
        expected: &'static str,
    },
    #[error(
        "{path:?} is owned by uid {owner}, and this sandbox runs as uid {uid}: a tenant's sandboxes run as one user"
    )]
    OtherUser { path: PathBuf, owner: u32, uid: u32 },
    #[error("cannot {action} {path:?}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Checks a tenant name: one plain path component, nothing a shell, a log or a path
/// could read twice.
pub fn validate_name(name: &str) -> Result<(), TenantError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is too long")
    } else if name.contains('\0') {
        Some("it contains a NUL byte")
    } else if name.contains('/') {
        Some("it contains '/'")
    } else if name.contains("..") {
        Some("it contains '..'")
    } else if name.starts_with('.') {
        Some("it starts with '.'")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("it contains a character outside A-Z a-z 0-9 . _ -")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TenantError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Makes (or checks) `tenants_dir` (root's, 0700), `tenants_dir/name` (root's) and
/// `tenants_dir/name/work` (`uid`:`gid`'s, 0700, created so), and returns the work dir's
/// path. Missing parents of `tenants_dir` are created root's and 0700.
pub fn prepare_work_dir(
    tenants_dir: &Path,
    name: &str,
    uid: u32,
    gid: u32,
) -> Result<PathBuf, TenantError> {
    validate_name(name)?;
    if !tenants_dir.is_absolute() || tenants_dir.components().any(|c| c == Component::ParentDir) {
        return Err(TenantError::NotAbsolute(tenants_dir.to_owned()));
    }
    let dir = open_tenants_dir(tenants_dir)?;
    let tenant_path = tenants_dir.join(name);
    let (tenant, _) = step(&dir, &tenant_path, name, 0o700)?;
    let meta = fstat(&tenant, &tenant_path)?;
    if meta.st_uid != 0 || meta.st_mode & 0o022 != 0 {
        return Err(TenantError::Unsafe {
            path: tenant_path,
            uid: meta.st_uid,
            mode: meta.st_mode & 0o7777,
            expected: "a tenant's folder must be root's and writable by root only",
        });
    }
    let work_path = tenant_path.join("work");
    let (work, created) = step(&tenant, &work_path, "work", 0o700)?;
    if created {
        chown_mode(&work, &work_path, Some((uid, gid)), 0o700)?;
    }
    let meta = fstat(&work, &work_path)?;
    if meta.st_uid != uid {
        return Err(TenantError::OtherUser {
            path: work_path,
            owner: meta.st_uid,
            uid,
        });
    }
    Ok(work_path)
}

/// Opens `tenants_dir` from `/` one component at a time, creating what is missing
/// (root's, 0700), and checks it is root's and 0700 (if it existed).
fn open_tenants_dir(tenants_dir: &Path) -> Result<OwnedFd, TenantError> {
    let mut dir = open_root()?;
    let mut path = PathBuf::from("/");
    let mut last_created = false;
    for c in tenants_dir.components() {
        let Component::Normal(name) = c else { continue };
        path.push(name);
        let name = name.to_str().ok_or_else(|| TenantError::Io {
            path: path.clone(),
            action: "use (not UTF-8)",
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        let (next, created) = step(&dir, &path, name, 0o700)?;
        if created {
            chown_mode(&next, &path, None, 0o700)?;
        }
        dir = next;
        last_created = created;
    }
    if !last_created {
        let meta = fstat(&dir, tenants_dir)?;
        if meta.st_uid != 0 || meta.st_mode & 0o077 != 0 {
            return Err(TenantError::Unsafe {
                path: tenants_dir.to_owned(),
                uid: meta.st_uid,
                mode: meta.st_mode & 0o7777,
                expected: "the tenants dir must be root's with mode 0700",
            });
        }
    }
    Ok(dir)
}

fn open_root() -> Result<OwnedFd, TenantError> {
    // SAFETY: open(2) of a constant path; the fd is owned below.
    let fd = unsafe {
        libc::open(
            c"/".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    owned(fd, Path::new("/"), "open")
}

/// Opens directory `name` in `dir` without following a link, creating it with `mode`
/// if it is missing. Returns it and whether it was created here.
fn step(
    dir: &OwnedFd,
    path: &Path,
    name: &str,
    mode: libc::mode_t,
) -> Result<(OwnedFd, bool), TenantError> {
    let c_name = CString::new(name.as_bytes()).map_err(|_| TenantError::InvalidName {
        name: name.to_owned(),
        reason: "it contains a NUL byte",
    })?;
    let mut created = false;
    loop {
        match lstatat(dir, &c_name) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                return Err(TenantError::Symlink(path.to_owned()));
            }
            Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => {
                return Err(TenantError::NotDirectory(path.to_owned()));
            }
            Ok(_) => break,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                // SAFETY: mkdirat(2) on an fd we own and a NUL-terminated name.
                if unsafe { libc::mkdirat(dir.as_raw_fd(), c_name.as_ptr(), mode) } == 0 {
                    created = true;
                    break;
                }
                let e = io::Error::last_os_error();
                // Someone else made it meanwhile: look again.
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(TenantError::Io {
                        path: path.to_owned(),
                        action: "create",
                        source: e,
                    });
                }
            }
            Err(source) => {
                return Err(TenantError::Io {
                    path: path.to_owned(),
                    action: "inspect",
                    source,
                });
            }
        }
    }
    // O_NOFOLLOW | O_DIRECTORY: a link or a file swapped in since the lstat fails here.
    // SAFETY: openat(2) on an fd we own and a NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c_name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ELOOP) {
        return Err(TenantError::Symlink(path.to_owned()));
    }
    Ok((owned(fd, path, "open")?, created))
}

/// Sets owner (if given) and then the exact mode (mkdir's is reduced by the umask).
fn chown_mode(
    fd: &OwnedFd,
    path: &Path,
    owner: Option<(u32, u32)>,
    mode: libc::mode_t,
) -> Result<(), TenantError> {
    let io_err = |action| TenantError::Io {
        path: path.to_owned(),
        action,
        source: io::Error::last_os_error(),
    };
    if let Some((uid, gid)) = owner {
        // SAFETY: fchown(2) on an fd we own.
        if unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) } != 0 {
            return Err(io_err("chown"));
        }
    }
    // SAFETY: fchmod(2) on an fd we own.
    if unsafe { libc::fchmod(fd.as_raw_fd(), mode) } != 0 {
        return Err(io_err("chmod"));
    }
    Ok(())
}

fn lstatat(dir: &OwnedFd, name: &CString) -> io::Result<libc::stat> {
    // SAFETY: `st` is plain data the kernel fills; fstatat(2) on an fd we own.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        ) == 0
        {
            Ok(st)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

fn fstat(fd: &OwnedFd, path: &Path) -> Result<libc::stat, TenantError> {
    // SAFETY: `st` is plain data the kernel fills; fstat(2) on an fd we own.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd.as_raw_fd(), &mut st) == 0 {
            Ok(st)
        } else {
            Err(TenantError::Io {
                path: path.to_owned(),
                action: "inspect",
                source: io::Error::last_os_error(),
            })
        }
    }
}

fn owned(fd: libc::c_int, path: &Path, action: &'static str) -> Result<OwnedFd, TenantError> {
    if fd < 0 {
        return Err(TenantError::Io {
            path: path.to_owned(),
            action,
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: a fresh fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink},
    };

    use super::*;

    /// A scratch folder under /tmp, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let mut b = [0u8; 6];
            // SAFETY: getrandom(2) fills the buffer it is given.
            let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
            assert_eq!(n, 6, "getrandom");
            let suffix: String = b.iter().map(|x| format!("{x:02x}")).collect();
            let p = std::env::temp_dir().join(format!("hb-tenant-{tag}-{suffix}"));
            fs::create_dir(&p).expect("scratch dir");
            Self(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn require_root() {
        // SAFETY: no arguments.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "tenant tests chown directories: run them as root"
        );
    }

    #[test]
    fn names_are_one_plain_component() {
        for ok in ["acme", "Acme-Corp_2", "a.b", "a", &"x".repeat(MAX_NAME_LEN)] {
            validate_name(ok).unwrap_or_else(|e| panic!("{ok:?} refused: {e}"));
        }
        for (bad, why) in [
            ("", "empty"),
            ("a/b", "'/'"),
            ("/", "'/'"),
            ("..", "'..'"),
            ("a..b", "'..'"),
            (".", "starts with '.'"),
            (".hidden", "starts with '.'"),
            ("a\0b", "NUL"),
            ("a b", "outside"),
            ("é", "outside"),
            ("a\nb", "outside"),
        ] {
            let e = validate_name(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(validate_name(&long).is_err());
    }

    #[test]
    fn work_dir_is_made_with_owner_and_modes_and_reused() {
        require_root();
        let s = Scratch::new("make");
        let tenants = s.0.join("state/tenants");
        let work = prepare_work_dir(&tenants, "acme", 1000, 1001).expect("prepare");
        assert_eq!(work, tenants.join("acme/work"));
        let m = fs::metadata(&tenants).expect("tenants");
        assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o700));
        let m = fs::metadata(tenants.join("acme")).expect("tenant");
        assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o700));
        let m = fs::metadata(&work).expect("work");
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1001, 0o700));
        fs::write(work.join("kept"), "x").expect("write");
        let again = prepare_work_dir(&tenants, "acme", 1000, 1001).expect("again");
        assert_eq!(again, work);
        assert!(
            work.join("kept").exists(),
            "a second run keeps the tenant's files"
        );
        // Another user for the same tenant: refused, the dir is not handed over.
        let e = prepare_work_dir(&tenants, "acme", 0, 0).expect_err("other uid");
        assert!(
            matches!(
                e,
                TenantError::OtherUser {
                    owner: 1000,
                    uid: 0,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn links_anywhere_on_the_path_are_refused() {
        require_root();
        let s = Scratch::new("links");
        let real = s.0.join("real");
        fs::create_dir(&real).expect("real");
        // The tenants dir itself a link.
        symlink(&real, s.0.join("tenants")).expect("link");
        let e = prepare_work_dir(&s.0.join("tenants"), "a", 1000, 1000).expect_err("link");
        assert!(
            matches!(e, TenantError::Symlink(ref p) if p.ends_with("tenants")),
            "{e}"
        );
        // A link above it.
        let e = prepare_work_dir(&s.0.join("tenants/sub"), "a", 1000, 1000).expect_err("link");
        assert!(matches!(e, TenantError::Symlink(_)), "{e}");
        // The tenant's folder a link to another tenant's.
        let tenants = s.0.join("t2");
        prepare_work_dir(&tenants, "b", 1000, 1000).expect("b");
        symlink(tenants.join("b"), tenants.join("a")).expect("link a -> b");
        let e = prepare_work_dir(&tenants, "a", 1000, 1000).expect_err("a -> b");
        assert!(matches!(e, TenantError::Symlink(_)), "{e}");
        // The work dir a link.
        fs::create_dir(tenants.join("c")).expect("c");
        fs::set_permissions(tenants.join("c"), fs::Permissions::from_mode(0o700)).expect("chmod");
        symlink(tenants.join("b/work"), tenants.join("c/work")).expect("link c/work");
        let e = prepare_work_dir(&tenants, "c", 1000, 1000).expect_err("c/work link");
        assert!(matches!(e, TenantError::Symlink(_)), "{e}");
    }

    #[test]
    fn an_unsafe_tenants_dir_is_refused() {
        require_root();
        let s = Scratch::new("unsafe");
        let tenants = s.0.join("tenants");
        fs::create_dir(&tenants).expect("tenants");
        fs::set_permissions(&tenants, fs::Permissions::from_mode(0o755)).expect("chmod");
        let e = prepare_work_dir(&tenants, "a", 1000, 1000).expect_err("0755");
        assert!(e.to_string().contains("0755"), "{e}");
        fs::set_permissions(&tenants, fs::Permissions::from_mode(0o700)).expect("chmod");
        std::os::unix::fs::chown(&tenants, Some(1000), None).expect("chown");
        let e = prepare_work_dir(&tenants, "a", 1000, 1000).expect_err("owner");
        assert!(e.to_string().contains("uid 1000"), "{e}");
        let e = prepare_work_dir(Path::new("relative"), "a", 1000, 1000).expect_err("relative");
        assert!(matches!(e, TenantError::NotAbsolute(_)), "{e}");
        let e = prepare_work_dir(&tenants, "../x", 1000, 1000).expect_err("name");
        assert!(matches!(e, TenantError::InvalidName { .. }), "{e}");
        fs::write(s.0.join("file"), "").expect("file");
        let e = prepare_work_dir(&s.0.join("file"), "a", 1000, 1000).expect_err("file");
        assert!(matches!(e, TenantError::NotDirectory(_)), "{e}");
    }
}
