//! A thirty-sixth attack review, run as the process inside sandbox A (`sandbox run
//! --user 65534`, arbitrary Python) of policy `web`, against the broker's socket per
//! policy (`broker/listeners.rs`) and the resolver's DNAME following (`dns/chain.rs`):
//! can A reach policy `other`'s socket (whose backlog it could then fill, attack review
//! 32), be served there, or starve `other` of the broker? Each test counts and prints a
//! `figure:` line.
//!
//! Found:
//! - with `broker.policy_sockets_dir` where a sandbox sees the host's files (read-only:
//!   /var/tmp, /srv, anywhere but /run, /tmp and the agent's state_dir), `sandbox run`
//!   covered each other policy's socket file with an unopenable node, by its path. An
//!   agent restart unlinks those files and binds new ones: on the host an unlink of a
//!   file that is a mount point in another mount namespace succeeds and detaches that
//!   mount there (Linux ≥ 3.18), so in a sandbox started before the restart the covers
//!   were gone and `other`'s new socket was reachable at its host path
//!   ([`an_agent_restart_leaves_another_policys_socket_hidden`]). The covers named only
//!   the sockets `/proc/net/unix` listed when the sandbox started (none if the agent was
//!   down or in another network namespace). The whole folder is hidden now (an empty
//!   read-only tmpfs on it, which a restart does not remove).

use std::path::{Path, PathBuf};

use hb_tests::{
    TestEnv, private_netns, python, random_suffix,
    sandboxed::{Running, nobody_command},
};
use serde_json::Value;

/// Two policies, their sockets in `sockets` (a folder a sandbox sees read-only).
fn config(sockets: &Path) -> String {
    format!(
        r#"
[broker]
socket_mode = "0666"
policy_sockets_dir = "{}"

[dns]
listen = "127.0.0.1:5300"

[[policy]]
name = "web"
allow_domains = []

[[policy]]
name = "other"
allow_domains = []
"#,
        sockets.display()
    )
}

/// A folder under /var/tmp (which `sandbox run` shows read-only), removed on drop.
struct SharedDir(PathBuf);

impl Drop for SharedDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// For each line `N` read: `N` non-blocking connects to `argv[1]`, held until the next
/// line; prints `{"connected": n, "errors": {errno name: count}}`.
const PY_CONNECTS: &str = r#"
import errno, json, socket, sys
path = sys.argv[1]
held = []
for line in sys.stdin:
    for s in held: s.close()
    held = []
    errors = {}
    for _ in range(int(line)):
        s = socket.socket(socket.AF_UNIX)
        s.setblocking(False)
        try:
            s.connect(path)
            held.append(s)
        except OSError as e:
            name = errno.errorcode.get(e.errno, str(e.errno))
            errors[name] = errors.get(name, 0) + 1
            s.close()
    print(json.dumps({"connected": len(held), "errors": errors}), flush=True)
"#;

/// A sandbox of `web` started while the agent runs, asked after the agent restarted:
/// it must not reach `other`'s socket at its host path, before or after.
#[test]
fn an_agent_restart_leaves_another_policys_socket_hidden() {
    private_netns(&[]);
    let shared = SharedDir(PathBuf::from(format!(
        "/var/tmp/hb-a36-{}",
        random_suffix()
    )));
    let sockets = shared.0.join("sockets");
    let mut env = TestEnv::new("a36restart", &config(&sockets));
    env.start_agent();
    let other = sockets.join("other").join("broker.sock");
    assert!(other.exists(), "other's socket at {}", other.display());
    let target = other.to_str().expect("utf-8");
    let mut a = Running::spawn(nobody_command(
        &env,
        "web",
        &[],
        &[python(), "-c", PY_CONNECTS, target],
    ));
    let ask = |a: &mut Running| -> Value {
        a.say("20");
        serde_json::from_str(&a.line()).expect("client JSON")
    };
    let before = ask(&mut a);
    env.stop_agent();
    env.start_agent();
    let after = ask(&mut a);
    eprintln!(
        "figure: sandbox of web, connects to other's socket {}: before an agent restart \
         {before}, after {after}",
        other.display()
    );
    assert_eq!(before["connected"], 0, "{before}");
    assert_eq!(
        after["connected"], 0,
        "after a restart, A reached other's socket: {after}"
    );
}
