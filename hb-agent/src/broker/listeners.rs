//! The broker's listening sockets: the main one (`broker.socket`: host callers and, for
//! compatibility, sandboxes) and one per policy
//! (`<broker.policy_sockets_dir>/<policy>/broker.sock`), which `sandbox run` binds at
//! `broker.socket` inside its sandboxes.
//!
//! Why a socket per policy: a socket's listen backlog is the kernel's, one queue for
//! everyone who connects. A sandbox that connects in a loop from many processes, each
//! connection refused at accept (past its share), kept the one backlog full (refusing a
//! connection costs the agent more than connecting costs the sandbox), and another
//! policy's sandbox had its non-blocking connect fail with `EAGAIN` (attack review 32).
//! With a socket (a backlog, an accept loop) per policy, one tenant's flood fills only
//! its own queue.
//!
//! A policy's socket is part of its callers' identity check: it serves that policy's
//! sandboxes only ([`Listener::admits`]), so a caller that reaches another policy's
//! socket (a mount it should not have) gains nothing.
//!
//! Must never: remove anything at a socket path that is not a socket, or serve on a
//! socket another live agent owns.

use std::{
    io,
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::{OwnedSemaphorePermit, Semaphore},
};

use super::{BrokerError, identity::Caller, io_err};
use crate::config::Config;

/// The sockets the broker serves, bound, in the order [`paths`] names them.
pub struct Bound(Vec<(Option<String>, std::os::unix::net::UnixListener)>);

/// The socket files the agent made, removed when dropped (at shutdown, or when start-up
/// fails half-way).
pub struct Files(Vec<PathBuf>);

impl Drop for Files {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One socket being served: `policy` is the policy whose sandboxes alone it serves
/// (`None`: the main socket, which serves every caller).
pub struct Listener {
    socket: AsyncFd<std::os::unix::net::UnixListener>,
    pub policy: Option<String>,
}

impl Listener {
    /// The next connection, with a permit of `permits` taken for it: once a connection
    /// waits in this socket's backlog, the permit, then the accept. A permit taken
    /// before a connection waits would sit with an idle socket and keep it from the
    /// busy ones; a connection accepted before a permit is free would be identified
    /// long before it is served. So while no permit is free, connections wait in the
    /// backlog, unaccepted.
    pub async fn accept(
        &self,
        permits: &Arc<Semaphore>,
    ) -> io::Result<(tokio::net::UnixStream, OwnedSemaphorePermit)> {
        loop {
            let mut ready = self.socket.readable().await?;
            let Ok(permit) = permits.clone().acquire_owned().await else {
                // The semaphore is never closed; wait rather than spin if it were.
                std::future::pending::<()>().await;
                continue;
            };
            match ready.try_io(|socket| socket.get_ref().accept()) {
                Ok(accepted) => {
                    let (stream, _) = accepted?;
                    stream.set_nonblocking(true)?;
                    return Ok((tokio::net::UnixStream::from_std(stream)?, permit));
                }
                // No connection after all (readiness was stale): wait again.
                Err(_would_block) => {}
            }
        }
    }

    /// Whether `caller` may be served on this socket: on a policy's socket, only that
    /// policy's sandboxes.
    pub fn admits(&self, caller: &Caller) -> bool {
        serves(self.policy.as_deref(), caller)
    }
}

/// Whether a socket of `policy` (`None`: the main socket, every caller) serves `caller`.
fn serves(policy: Option<&str>, caller: &Caller) -> bool {
    policy.is_none_or(|policy| caller.sandbox.as_ref().is_some_and(|s| s.policy == policy))
}

/// Every socket `config` has the broker serve: the main one (policy `None`), then each
/// policy's.
pub fn paths(config: &Config) -> Vec<(Option<&str>, PathBuf)> {
    let broker = &config.broker;
    let mut all = vec![(None, broker.socket.clone())];
    all.extend(config.policies.iter().map(|p| {
        let name = p.name.get_ref().as_str();
        (Some(name), broker.policy_socket(name))
    }));
    all
}

/// Binds every socket of [`paths`] (mode `broker.socket_mode`; a policy's folder 0755),
/// replacing stale ones left by a dead agent; with the guard that removes their files.
pub fn bind(config: &Config) -> Result<(Bound, Files), BrokerError> {
    let mode = config.broker.mode();
    let mut sockets = Vec::new();
    // On an error the files bound so far are removed as `files` drops.
    let mut files = Files(Vec::new());
    for (policy, path) in paths(config) {
        let dir_mode = policy.map(|_| 0o755);
        let socket = bind_one(&path, mode, dir_mode)?;
        files.0.push(path);
        sockets.push((policy.map(str::to_owned), socket));
    }
    Ok((Bound(sockets), files))
}

impl Bound {
    /// The sockets, on the current tokio runtime.
    pub fn serve(self) -> io::Result<Vec<Listener>> {
        self.0
            .into_iter()
            .map(|(policy, socket)| {
                // SAFETY: the AsyncFd owns the listener, whose fd stays open and the
                // same (`as_raw_fd` of a std listener is its own fd) until it drops.
                let socket =
                    unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }?;
                Ok(Listener { socket, policy })
            })
            .collect()
    }
}

/// Binds one socket at `path`: its folder made (`dir_mode`: set on the socket's own
/// folder, else left as made), a stale socket replaced, the mode set, non-blocking.
fn bind_one(
    path: &Path,
    mode: u32,
    dir_mode: Option<u32>,
) -> Result<std::os::unix::net::UnixListener, BrokerError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err(dir, "creating the directory"))?;
        if let Some(dir_mode) = dir_mode {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode))
                .map_err(io_err(dir, "setting the directory's mode"))?;
        }
    }
    clear_stale(path)?;
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(io_err(path, "binding"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err(path, "setting the mode"))?;
    listener
        .set_nonblocking(true)
        .map_err(io_err(path, "setting non-blocking"))?;
    Ok(listener)
}

/// Removes a stale socket left by a dead agent; refuses a live one or a non-socket.
fn clear_stale(path: &Path) -> Result<(), BrokerError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(BrokerError::NotASocket(path.to_owned()));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(BrokerError::InUse(path.to_owned()));
    }
    std::fs::remove_file(path).map_err(io_err(path, "removing the stale socket"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::identity::Sandbox;

    fn caller(policy: Option<&str>) -> Caller {
        Caller {
            pid: 1,
            uid: 0,
            cgroup: "c".into(),
            sandbox: policy.map(|p| Sandbox {
                cgroup: "c".into(),
                cgroup_id: 1,
                policy: p.into(),
            }),
        }
    }

    #[test]
    fn a_policys_socket_serves_that_policys_sandboxes_only() {
        assert!(serves(Some("web"), &caller(Some("web"))));
        assert!(!serves(Some("web"), &caller(Some("other"))));
        assert!(!serves(Some("web"), &caller(None)), "a host caller");
        assert!(serves(None, &caller(Some("web"))));
        assert!(serves(None, &caller(None)));
    }

    #[test]
    fn every_policy_has_its_socket_beside_the_main_one_by_default() {
        let config: Config = Config::parse(
            "[broker]\nsocket = \"/run/x/broker.sock\"\n[[policy]]\nname = \"web\"\nallow_domains = []\n",
            "test",
        )
        .expect("config");
        let paths = paths(&config);
        assert_eq!(
            paths,
            vec![
                (None, PathBuf::from("/run/x/broker.sock")),
                (
                    Some("web"),
                    PathBuf::from("/run/x/policies/web/broker.sock")
                ),
            ]
        );
    }
}
