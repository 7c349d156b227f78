//! `hb-agent sandbox run --print-confinement`: what a command would get, without running
//! it — user, namespaces, capabilities, filters, mounts, limits — as text or JSON.
//!
//! Owns: describing the plan from the same inputs [`super::run`] uses (config, options),
//! so what is printed is what a run does. Needs neither root nor a running agent.

use serde::Serialize;

use super::{
    RunOptions, User,
    limits::Limits,
    mounts::MountEntry,
    seccomp::{self, Outcome},
};
use crate::config::Config;

#[derive(Debug, Serialize)]
pub struct Confinement {
    pub policy: String,
    pub user: UserView,
    pub namespaces: Vec<&'static str>,
    pub session: &'static str,
    pub capabilities: Capabilities,
    pub securebits: Vec<&'static str>,
    pub no_new_privs: bool,
    pub landlock_scopes: Vec<&'static str>,
    pub seccomp: Vec<SeccompView>,
    pub mounts: Vec<MountView>,
    pub limits: LimitsView,
    pub descriptors: &'static str,
    /// The names (never the values) of the variables the command gets.
    pub environment: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct UserView {
    pub uid: u32,
    pub gid: u32,
    pub supplementary_groups: Vec<u32>,
    pub from: &'static str,
    /// For uid 0: the host uid and gid it is, in a user namespace of its own.
    pub host_ids: Option<(u32, u32)>,
}

#[derive(Debug, Serialize)]
pub struct Capabilities {
    pub bounding: Vec<&'static str>,
    pub permitted: Vec<&'static str>,
    pub effective: Vec<&'static str>,
    pub inheritable: Vec<&'static str>,
    pub ambient: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct SeccompView {
    pub filter: &'static str,
    pub refuses: String,
    pub action: &'static str,
    pub why: &'static str,
}

#[derive(Debug, Serialize)]
pub struct MountView {
    pub path: String,
    pub what: String,
    pub options: String,
}

#[derive(Debug, Serialize)]
pub struct LimitsView {
    pub pids_max: Option<u64>,
    pub memory_max_bytes: Option<u64>,
    /// `QUOTA PERIOD` in microseconds.
    pub cpu_max: Option<String>,
}

/// The confinement a run of `opts` under `config` gives (the user is `user`, resolved
/// by the caller as a run would; `mounts` from the layout's preview).
pub fn describe(
    config: &Config,
    opts: &RunOptions,
    user: User,
    mounts: &[MountEntry],
) -> Confinement {
    let limits: Limits = config.sandbox_defaults.limits();
    Confinement {
        policy: opts.policy.clone(),
        user: UserView {
            uid: user.uid,
            gid: user.gid,
            supplementary_groups: Vec::new(),
            from: if opts.user.is_some() {
                "--user"
            } else {
                "[sandbox_defaults] user"
            },
            host_ids: super::root_in_userns(user),
        },
        namespaces: if super::root_in_userns(user).is_some() {
            vec!["pid", "mount", "ipc", "cgroup", "user"]
        } else {
            vec!["pid", "mount", "ipc", "cgroup"]
        },
        session: if opts.tty {
            "a new session; its controlling terminal is a fresh pseudo-terminal the launcher relays"
        } else {
            "a new session, no controlling terminal"
        },
        capabilities: Capabilities {
            bounding: Vec::new(),
            permitted: Vec::new(),
            effective: Vec::new(),
            inheritable: Vec::new(),
            ambient: Vec::new(),
        },
        securebits: vec![
            "noroot (locked)",
            "no_setuid_fixup (locked)",
            "keep_caps off (locked)",
            "no_cap_ambient_raise (locked)",
        ],
        no_new_privs: true,
        landlock_scopes: vec!["abstract unix sockets", "signals"],
        seccomp: seccomp_view(config, opts),
        mounts: mounts
            .iter()
            .map(|m| MountView {
                path: m.target.display().to_string(),
                what: match &m.source {
                    Some(s) => format!("{} from {}", m.kind, s.display()),
                    None => m.kind.to_owned(),
                },
                options: m.flags.clone(),
            })
            .collect(),
        limits: LimitsView {
            pids_max: limits.pids_max,
            memory_max_bytes: limits.memory_max,
            cpu_max: limits.cpu_max.map(|(q, p)| format!("{q} {p}")),
        },
        descriptors: "stdin, stdout and stderr only",
        environment: super::environment::build(
            std::env::vars_os(),
            &opts.env,
            std::path::Path::new("/"),
        )
        .unwrap_or_default()
        .into_iter()
        .filter_map(|kv| {
            let kv = kv.into_string().ok()?;
            Some(kv.split_once('=').map_or(kv.clone(), |(k, _)| k.to_owned()))
        })
        .collect(),
    }
}

/// Both filters, rule by rule: the native-ABI one, then the rule filter (with the
/// policy's io_uring choice).
fn seccomp_view(config: &Config, opts: &RunOptions) -> Vec<SeccompView> {
    let io_uring = config
        .policies
        .iter()
        .find(|p| *p.name.get_ref() == opts.policy)
        .is_some_and(|p| p.allow_io_uring);
    let mut out = vec![SeccompView {
        filter: "native ABI",
        refuses: "every 32-bit and x32 system call".into(),
        action: "kill the process",
        why: "the kernel runs cgroup sockopt programs only for native calls",
    }];
    for rule in seccomp::rules() {
        let names: Vec<&str> = rule.syscalls.iter().map(|s| s.name).collect();
        let io_uring_rule = names.iter().any(|n| n.starts_with("io_uring"));
        let action = match rule.outcome {
            _ if io_uring_rule && io_uring => "allowed by the policy (allow_io_uring)",
            Outcome::Refused => "EPERM, reported as a seccomp event",
            Outcome::NoSuchCall => "ENOSYS",
            Outcome::Allowed => "allowed",
        };
        out.push(SeccompView {
            filter: "rules",
            refuses: format!("{}: {}", names.join(", "), rule.condition),
            action,
            why: rule.why,
        });
    }
    out
}

/// The human form: one aspect per line, `none` for empty sets.
pub fn print_text(c: &Confinement) {
    let list = |v: &[&str]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(", ")
        }
    };
    println!("policy        {}", c.policy);
    println!(
        "user          uid {} gid {}, no supplementary groups (from {})",
        c.user.uid, c.user.gid, c.user.from
    );
    if let Some((uid, gid)) = c.user.host_ids {
        println!("              in a user namespace of its own: uid {uid} gid {gid} on the host");
    }
    println!("namespaces    {} (own)", c.namespaces.join(", "));
    println!("session       {}", c.session);
    let caps = &c.capabilities;
    println!(
        "capabilities  bounding {}, permitted {}, effective {}, inheritable {}, ambient {}",
        list(&caps.bounding),
        list(&caps.permitted),
        list(&caps.effective),
        list(&caps.inheritable),
        list(&caps.ambient)
    );
    println!("securebits    {}", c.securebits.join(", "));
    println!("no_new_privs  {}", c.no_new_privs);
    println!("landlock      scoped: {}", c.landlock_scopes.join(", "));
    for s in &c.seccomp {
        println!(
            "seccomp       [{}] {} → {}\n                {}",
            s.filter, s.refuses, s.action, s.why
        );
    }
    for m in &c.mounts {
        println!("mount         {} {} ({})", m.path, m.what, m.options);
    }
    let or_none = |v: Option<String>| v.unwrap_or_else(|| "no limit".into());
    println!(
        "limits        pids.max {}, memory {}, cpu.max {}",
        or_none(c.limits.pids_max.map(|n| n.to_string())),
        or_none(c.limits.memory_max_bytes.map(|n| format!("{n} bytes"))),
        or_none(c.limits.cpu_max.clone())
    );
    println!("descriptors   {}", c.descriptors);
    println!(
        "environment   {} (names; values stay out of this output)",
        c.environment.join(", ")
    );
}
