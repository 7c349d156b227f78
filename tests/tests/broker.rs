//! The broker's socket end to end: callers identified by the kernel's peer credentials
//! and their cgroup, JSON errors, and the event stream behind operator-minted session
//! tokens. Clients are real: curl over the Unix socket, as root, as uid 1000, and from
//! inside sandboxes.

use std::{
    fs,
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use hb_tests::{TestEnv, private_netns};
use serde_json::Value;

const CONFIG: &str = r#"
[broker]
socket_mode = "0666"
session_ttl_secs = 4

[dns]
listen = "127.0.0.1:5300"

[[policy]]
name = "web"
allow_domains = []
"#;

/// An answer: HTTP status and the JSON body.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
}

/// `curl` on the broker socket; `uid` runs it as that user (setpriv), `inside` in a
/// sandbox of that policy.
fn call(
    env: &TestEnv,
    method: &str,
    path: &str,
    token: Option<&str>,
    uid: Option<u32>,
    inside: Option<&str>,
) -> Answer {
    let socket = env.broker_socket();
    let mut curl: Vec<String> = vec![
        "curl".into(),
        "-sS".into(),
        "-m".into(),
        "5".into(),
        "--unix-socket".into(),
        socket.display().to_string(),
        "-X".into(),
        method.into(),
        "-w".into(),
        "\n%{http_code}".into(),
    ];
    if let Some(t) = token {
        curl.push("-H".into());
        curl.push(format!("Authorization: Bearer {t}"));
    }
    curl.push(format!("http://hb{path}"));
    if let Some(uid) = uid {
        let mut wrapped: Vec<String> = vec![
            "setpriv".into(),
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".into(),
        ];
        wrapped.extend(curl);
        curl = wrapped;
    }
    let args: Vec<&str> = curl.iter().map(String::as_str).collect();
    let out = match inside {
        Some(policy) => env.sandbox(policy, &args),
        None => Command::new(args[0])
            .args(&args[1..])
            .output()
            .expect("curl"),
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    Answer {
        status: status.trim().parse().unwrap_or_else(|_| {
            panic!(
                "no HTTP status from curl: {text:?} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        }),
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

fn assert_error(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{a:?}");
    assert_eq!(a.body["error"]["code"], code, "{a:?}");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "a message says why: {a:?}"
    );
}

#[test]
fn callers_are_identified_by_their_cgroup_and_errors_are_json() {
    private_netns(&[]);
    let mut env = TestEnv::new("brokerid", CONFIG);
    env.start_agent();
    let socket = env.broker_socket();
    let meta = fs::metadata(&socket).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o666,
        "broker.socket_mode"
    );

    let host = call(&env, "GET", "/v1/whoami", None, None, None);
    assert_eq!(host.status, 200, "{host:?}");
    assert_eq!(host.body["uid"], 0);
    assert!(host.body["sandbox"].is_null(), "a host caller: {host:?}");

    let sandboxed = call(&env, "GET", "/v1/whoami", None, None, Some("web"));
    assert_eq!(sandboxed.status, 200, "{sandboxed:?}");
    assert_eq!(
        sandboxed.body["sandbox"]["policy"], "web",
        "the sandbox's policy, from its cgroup: {sandboxed:?}"
    );
    assert!(
        sandboxed.body["cgroup"]
            .as_str()
            .is_some_and(|c| c.starts_with(&env.cgroup_root)),
        "{sandboxed:?}"
    );

    let as_user = call(&env, "GET", "/v1/whoami", None, Some(1000), Some("web"));
    assert_eq!(as_user.body["uid"], 1000, "{as_user:?}");
    assert_eq!(as_user.body["sandbox"]["policy"], "web");

    assert_error(
        &call(&env, "GET", "/v1/nothing", None, None, None),
        404,
        "not_found",
    );
    assert_error(
        &call(&env, "DELETE", "/v1/whoami", None, None, None),
        405,
        "method_not_allowed",
    );

    // A killed agent leaves its socket behind; the next one replaces it.
    env.kill_agent();
    assert!(socket.exists(), "stale socket left by kill -9");
    env.start_agent();
    let again = call(&env, "GET", "/v1/whoami", None, None, None);
    assert_eq!(again.status, 200, "the restarted agent serves: {again:?}");
}

#[test]
fn the_event_stream_needs_an_operator_minted_session_token() {
    private_netns(&[]);
    let mut env = TestEnv::new("brokerev", CONFIG);
    env.start_agent();

    assert_error(
        &call(&env, "GET", "/v1/events", None, None, None),
        401,
        "unauthorized",
    );
    let bogus = format!("hb_sess_{}", "0".repeat(64));
    assert_error(
        &call(&env, "GET", "/v1/events", Some(&bogus), None, None),
        401,
        "unauthorized",
    );
    assert_error(
        &call(&env, "POST", "/v1/sessions", None, Some(1000), None),
        403,
        "forbidden",
    );
    // Root inside a sandbox is still a sandbox.
    assert_error(
        &call(&env, "POST", "/v1/sessions", None, None, Some("web")),
        403,
        "forbidden",
    );

    let minted = call(&env, "POST", "/v1/sessions", None, None, None);
    assert_eq!(minted.status, 201, "{minted:?}");
    let token = minted.body["token"].as_str().expect("token").to_owned();
    assert!(token.starts_with("hb_sess_"));
    assert_error(
        &call(&env, "GET", "/v1/events", Some(&token), Some(1000), None),
        401,
        "unauthorized",
    );

    // A live stream: a refused connect in a sandbox arrives as an event.
    let out_path = env.state_dir.join("stream.txt");
    let mut stream = Command::new("curl")
        .args(["-sSN", "-m", "10", "--unix-socket"])
        .arg(env.broker_socket())
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg("http://hb/v1/events")
        .stdout(fs::File::create(&out_path).expect("stream file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("curl");
    thread::sleep(Duration::from_millis(300));
    let probe = hb_tests::sandbox_probe(&env, "web", "tcp", "10.0.0.1", 9);
    assert_eq!(probe, "EPERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = fs::read_to_string(&out_path).unwrap_or_default();
        if text.contains("deny_range") || Instant::now() > deadline {
            break text;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let _ = stream.kill();
    let _ = stream.wait();
    let data = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("data: ")
                .filter(|d| d.contains("deny_range"))
        })
        .unwrap_or_else(|| panic!("no deny_range event in the stream: {text:?}"));
    let event: Value = serde_json::from_str(data).expect("event JSON");
    assert_eq!(event["dst"], "10.0.0.1", "{event}");
    assert_eq!(event["policy"], "web", "{event}");

    // Revoked: refused from then on.
    let revoked = call(&env, "DELETE", "/v1/sessions", Some(&token), None, None);
    assert_eq!(revoked.status, 204, "{revoked:?}");
    assert_error(
        &call(&env, "GET", "/v1/events", Some(&token), None, None),
        401,
        "unauthorized",
    );

    // Expired (session_ttl_secs = 4): refused.
    let short = call(&env, "POST", "/v1/sessions", None, None, None);
    let short = short.body["token"].as_str().expect("token").to_owned();
    thread::sleep(Duration::from_millis(4500));
    assert_error(
        &call(&env, "GET", "/v1/events", Some(&short), None, None),
        401,
        "unauthorized",
    );

    // Minted by an earlier run of the agent: refused by the next one.
    let old = call(&env, "POST", "/v1/sessions", None, None, None);
    let old = old.body["token"].as_str().expect("token").to_owned();
    env.kill_agent();
    env.start_agent();
    assert_error(
        &call(&env, "GET", "/v1/events", Some(&old), None, None),
        401,
        "unauthorized",
    );
}
