//! The broker's socket per policy (`broker.policy_sockets_dir`): the agent serves
//! `<dir>/<policy>/broker.sock` for every policy beside the main socket, each with its
//! own backlog, so one tenant's connect flood cannot fill another's (attack review 32).
//! The socket is part of the caller's identity check: on a policy's socket only that
//! policy's sandboxes are served; a sandbox of another policy (here a pod-shaped cgroup
//! outside `sandbox run`, which reaches the host's paths) and a host caller are closed
//! unanswered and counted as `policy_socket`. `sandbox run` binds the sandbox's policy
//! socket at the main socket's path inside, so clients there use the usual path and
//! cannot reach the main socket.

use std::{
    io::{Read as _, Write as _},
    os::unix::{fs::MetadataExt as _, net::UnixStream},
    path::Path,
    time::Duration,
};

use hb_tests::{TestEnv, pod_glob, private_netns, python, sandboxed::nobody_python_json, worlds};
use serde_json::Value;

fn config() -> String {
    format!("{}{}", worlds::two_bare_policies(""), pod_glob("web"))
}

fn started(name: &str) -> TestEnv {
    private_netns(&[]);
    let mut env = TestEnv::new(name, &config());
    env.start_agent();
    env
}

/// `GET /v1/whoami` on each socket of `argv[1:]`: a JSON list of
/// `{"status": first line or "closed", "body": the JSON answer or null, "ino": the
/// socket's inode as this process sees it}`.
const PY_WHOAMI: &str = r#"
import json, os, socket, sys
out = []
for path in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(path)
    data = b""
    try:
        # A refused connection may be closed before the request is sent (EPIPE).
        s.sendall(b"GET /v1/whoami HTTP/1.1\r\nHost: hb\r\nConnection: close\r\n\r\n")
    except OSError:
        pass
    try:
        while True:
            d = s.recv(65536)
            if not d: break
            data += d
    except OSError:
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    out.append({
        "status": head.split(b"\r\n")[0].decode() or "closed",
        "body": json.loads(body) if body else None,
        "ino": os.stat(path).st_ino,
    })
print(json.dumps(out))
"#;

/// The host's own `GET /v1/whoami` on `path`: the status line, or `closed`.
fn host_whoami(path: &Path) -> String {
    let mut s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // A refused connection may be closed before the request is sent (EPIPE): read then.
    let _ = s.write_all(b"GET /v1/whoami HTTP/1.1\r\nHost: hb\r\nConnection: close\r\n\r\n");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    let first = text.lines().next().unwrap_or_default();
    if first.is_empty() {
        "closed".to_owned()
    } else {
        first.to_owned()
    }
}

/// The agent logged a refusal on a policy's socket, and `status` counted it.
fn assert_refused_on_a_policy_socket(env: &mut TestEnv, who: &str) {
    let log = env.agent().log_text();
    assert!(
        log.contains("broker refused a connection") && log.contains(who),
        "no refusal of {who} logged: {log}"
    );
    let status = env.hb_json(&["status"]);
    assert!(
        status["broker"]["refused"]["policy_socket"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "status counts no policy_socket refusal: {}",
        status["broker"]
    );
}

/// A process of policy `web` (a pod-shaped cgroup outside `sandbox run`, so it reaches
/// every socket on the host's paths) is answered on its own policy's socket and on the
/// main one, and closed unanswered on `other`'s.
#[test]
fn a_sandbox_on_another_policys_socket_is_refused() {
    let mut env = started("polsockother");
    let pod = env.root_pod("web");
    let own = env.policy_socket("web");
    let other = env.policy_socket("other");
    let main = env.broker_socket();
    let out = pod.run(&[
        python(),
        "-c",
        PY_WHOAMI,
        own.to_str().expect("utf-8"),
        main.to_str().expect("utf-8"),
        other.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "pod client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<Value> = serde_json::from_slice(&out.stdout).expect("client JSON");
    eprintln!("figure: a pod of web on web's, the main and other's sockets: {got:?}");
    for (i, which) in ["its policy's", "the main"].iter().enumerate() {
        assert_eq!(
            got[i]["status"], "HTTP/1.1 200 OK",
            "{which} socket: {got:?}"
        );
        assert_eq!(got[i]["body"]["sandbox"]["policy"], "web", "{got:?}");
    }
    assert_eq!(
        got[2]["status"], "closed",
        "other's socket answered: {got:?}"
    );
    assert_refused_on_a_policy_socket(&mut env, "of policy web on policy other's socket");
}

/// A host caller (the test, root) is answered on the main socket and closed unanswered
/// on a policy's; `status` lists every socket.
#[test]
fn a_host_caller_on_a_policy_socket_is_refused() {
    let mut env = started("polsockhost");
    assert_eq!(host_whoami(&env.broker_socket()), "HTTP/1.1 200 OK");
    assert_eq!(host_whoami(&env.policy_socket("web")), "closed");
    assert_refused_on_a_policy_socket(&mut env, "host caller uid 0 on policy web's socket");
    let listed = env.hb_json(&["status"])["broker_sockets"].clone();
    let expected = [
        (Value::Null, env.broker_socket()),
        ("web".into(), env.policy_socket("web")),
        ("other".into(), env.policy_socket("other")),
    ];
    for (policy, path) in expected {
        assert!(
            listed
                .as_array()
                .expect("list")
                .iter()
                .any(|s| s["policy"] == policy
                    && s["path"] == path.display().to_string()
                    && s["present"] == true),
            "{} not listed as present: {listed}",
            path.display()
        );
    }
}

/// `sandbox run --policy web` shows web's socket at the main socket's path: the
/// client there is answered as web's, through the inode of web's socket (not the main
/// one's, which is then not reachable inside).
#[test]
fn sandbox_run_reaches_its_policys_socket_at_the_usual_path() {
    let env = started("polsockrun");
    let main = env.broker_socket();
    let got = nobody_python_json(&env, "web", PY_WHOAMI, &[main.to_str().expect("utf-8")]);
    let ino = |p: &Path| std::fs::metadata(p).expect("stat").ino();
    let (web_ino, main_ino) = (ino(&env.policy_socket("web")), ino(&main));
    eprintln!(
        "figure: inside a sandbox of web, {}: {got}; web's socket inode {web_ino}, the \
         main one's {main_ino}",
        main.display()
    );
    assert_eq!(got[0]["status"], "HTTP/1.1 200 OK", "{got}");
    assert_eq!(got[0]["body"]["sandbox"]["policy"], "web", "{got}");
    assert_eq!(got[0]["ino"], web_ino, "the socket inside is web's: {got}");
}
