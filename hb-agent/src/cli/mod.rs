//! The command line: one binary for the agent and every operator command.
//!
//! Owns: argument parsing, help text and output formats (human tables, `--json` for
//! scripts). Must never: print a secret, or change kernel state from a read-only command
//! (`maps`, `events`, `status` only read pins and files).

mod dns;
mod events;
mod maps;
mod outbound_debug;
mod rotation;
mod sanitize;
mod scrub;
mod status;
mod vault;

use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::{self, Config, LogFormat};

const EXAMPLES: &str = "\
Examples:
  hb-agent run                                  # enforce with the embedded default config
  hb-agent run --config /etc/hb/hb.toml
  hb-agent config check /etc/hb/hb.toml         # validate without loading anything
  hb-agent sandbox run --policy default -- curl https://pypi.org/simple/
  hb-agent status
  hb-agent maps dump rules4 --json
  hb-agent events --follow
  hb-agent dns lookup --policy default pypi.org
  hb-agent vault put --integration github --account ci < token.txt
  tool --verbose 2>&1 | hb-agent scrub          # redact tokens before they reach an LLM
  curl -s https://example.com/page | hb-agent sanitize --mode redact";

const SCRUB_EXAMPLES: &str = "\
Examples:
  some-tool 2>&1 | hb-agent scrub                          # stream: tokens become [REDACTED:<family>]
  hb-agent scrub --json < response.json | jq .redactions   # {\"text\", \"redactions\": [{family, offset, len, output_offset}]}
  hb-agent scrub --secret-file /run/secrets/db-password < app.log
  hb-agent scrub --fail-on-match < build.log > /dev/null   # CI gate: exit 1 if anything was redacted
  hb-agent scrub --list-families
  hb-agent scrub --rules .gitleaks.toml < build.log        # also run a gitleaks-format rule file
  hb-agent scrub --check-rules .gitleaks.toml              # which of its rules hb can run, and why not
  hb-agent scrub --rules .gitleaks.toml --list-families --json

Offsets and lengths in --json are input bytes; output_offset is where the marker starts in
\"text\". Streaming holds back at most one rule window (16 KiB after a JWT or PEM keyword,
4 KiB after Bearer or Authorization, under 1 KiB otherwise) until more input or EOF; with
--rules, up to 32 KiB of merged windows around the file's keywords.

Rule files (gitleaks's format): each rule's regex runs in a window around its keywords
and its secret group is redacted as [REDACTED:<id>] (an id without '-' as rule-<id>).
Rules hb cannot run (no keywords, path-only, a regex it cannot compile) are listed on
stderr when the file is loaded and skipped; --check-rules lists them with the reason.
--check-rules exits 0 when every rule runs, 3 when some cannot, 2 when the file cannot be
read or is not a valid rule file.";

const SANITIZE_EXAMPLES: &str = "\
Examples:
  hb-agent sanitize < ticket.txt > clean.txt          # findings on stderr
  hb-agent sanitize --mode redact --spotlight < page.md
  hb-agent sanitize --json < email.txt | jq .findings
  hb-agent sanitize --mode block < tool-output.txt || echo 'refused: high-severity finding'
  hb-agent sanitize --no-learned < page.md            # the rules alone, no n-gram model

Exit status: 0 when nothing high was found, 3 when a finding is high severity, 1 on an
error (for example input that is not UTF-8; the error names the byte offset).
Modes: flag (cleaned text + findings), redact (medium and high spans replaced by
[REMOVED:<category>]), block (no text, findings only).";

#[derive(Debug, Parser)]
#[command(
    name = "hb-agent",
    version,
    about = "hb node agent: kernel-enforced egress for AI agent sandboxes",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// Config file (TOML). Without it, the embedded default (`hb-agent config default`).
    #[arg(long, short, global = true, env = "HB_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load and attach the programs, enroll sandboxes, and keep the kernel in line with
    /// the config until SIGTERM (programs stay attached after exit).
    Run,
    /// Print, check or explain configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run a command inside a fresh sandbox cgroup.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Inspect the pinned kernel maps of a running (or previously run) agent.
    #[command(subcommand)]
    Maps(MapsCommand),
    /// Show what the kernel refused (state_dir/events.jsonl; --follow streams them live
    /// from the broker, or from the kernel ring buffer when no agent runs).
    #[command(
        after_help = "Examples:\n  hb-agent events\n  hb-agent events --follow --json | jq .dst"
    )]
    Events {
        /// Keep printing new events as they arrive.
        #[arg(long, short)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Only the last N events (before following).
        #[arg(long, value_name = "N")]
        last: Option<usize>,
    },
    /// Programs attached and where, enrolled cgroups, counters; the exit status says
    /// whether the agent runs and the kernel enforces.
    #[command(after_help = status::EXIT_CODES)]
    Status {
        #[arg(long)]
        json: bool,
        /// Wait up to SECONDS for the agent to run, enforce and answer ready on /readyz
        /// (agent.metrics_listen; without it, running and enforcing suffice), printing
        /// progress on stderr; then report as usual.
        #[arg(long, value_name = "SECONDS")]
        wait_ready: Option<u64>,
    },
    /// Take hb off this node: detach every program, remove the pins (programs, links,
    /// maps and with them the enrollments) and the agent's runtime state; says what it
    /// removed. The vault, audit log and events are kept. Refuses while an agent runs.
    #[command(
        after_help = "Examples:\n  hb-agent uninstall --config /etc/hb/hb.toml\n  hb-agent uninstall --force --json\n\nExit status: 0 removed (or nothing to remove: running it twice is safe); 3 refused because an agent runs (stop it, or --force); 1 error.\n--force while an agent runs: the agent is not stopped; it runs on without enforcing (/readyz answers 503, `status` exits 4) until it is stopped."
    )]
    Uninstall {
        /// Go ahead although an agent runs (its programs are detached underneath it).
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Ask the running agent's resolver.
    #[command(subcommand)]
    Dns(DnsCommand),
    /// The credential vault (state_dir/vault.db): secrets from stdin, never printed.
    #[command(subcommand)]
    Vault(vault::VaultCommand),
    /// Rotate credentials through their integration's rotator: trigger one in the
    /// running agent, list open ones and the history, abort one.
    #[command(subcommand)]
    Rotation(rotation::RotationCommand),
    /// Redact secrets from stdin to stdout: known token families (GitHub, AWS, JWT,
    /// PEM keys, … see --list-families) and the exact values of --secret-file, also in
    /// base64, hex, percent and JSON encodings.
    #[command(after_help = SCRUB_EXAMPLES)]
    Scrub {
        /// Read all of stdin, then print one JSON object {"text", "redactions"}.
        #[arg(long)]
        json: bool,
        /// A file holding one secret to redact exactly (trailing newline dropped;
        /// at least 8 bytes). Repeatable. Secrets are never taken from argv.
        #[arg(long, value_name = "FILE")]
        secret_file: Vec<PathBuf>,
        /// Exit 1 if anything was redacted (the output is written all the same).
        #[arg(long)]
        fail_on_match: bool,
        /// Print the built-in token families (and the rules of --rules, apart) and exit.
        #[arg(long)]
        list_families: bool,
        /// A rule file in gitleaks's format whose rules run besides the built-in
        /// families. Repeatable.
        #[arg(long, value_name = "FILE")]
        rules: Vec<PathBuf>,
        /// Report which rules of a gitleaks-format FILE hb can run (and why not) and exit:
        /// 0 all, 3 some cannot run, 2 unreadable or invalid file.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["rules", "list_families", "secret_file"])]
        check_rules: Option<PathBuf>,
    },
    /// (internal) Time the scrubber on FILE; prints JSON. Used by `cargo xtask bench scrub`.
    #[command(name = "__bench-scrub", hide = true)]
    BenchScrub {
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// Synthetic values to register, one per line.
        #[arg(long, value_name = "FILE")]
        secrets_file: Option<PathBuf>,
        #[arg(long, default_value_t = 20)]
        iterations: usize,
        /// Stream chunk size in bytes.
        #[arg(long, default_value_t = 65536)]
        chunk: usize,
        /// Rule files (gitleaks's format) to load, as `scrub --rules`.
        #[arg(long, value_name = "FILE")]
        rules: Vec<PathBuf>,
    },
    /// Clean untrusted text (stdin) for a model: remove invisible and control characters,
    /// decode hidden text, report injection markers (text to stdout, findings to stderr).
    #[command(after_help = SANITIZE_EXAMPLES)]
    Sanitize {
        /// flag: cleaned text and findings; redact: flagged spans replaced; block: no text.
        #[arg(long, value_enum, default_value_t = crate::sanitize::Mode::Flag)]
        mode: crate::sanitize::Mode,
        /// The whole result as one JSON object (text, flagged, severity, findings).
        #[arg(long)]
        json: bool,
        /// Wrap the text in delimiters with a random tag; the matching system-prompt line
        /// goes to stderr (or the JSON `spotlight` field).
        #[arg(long)]
        spotlight: bool,
        /// Skip the learned stage (an n-gram model; `learned_injection` findings at
        /// medium), which runs by default: the rules alone miss more unfamiliar
        /// phrasings.
        #[arg(long)]
        no_learned: bool,
        /// The learned stage runs by default; the flag is accepted for scripts that ask
        /// for it.
        #[arg(long, hide = true, conflicts_with = "no_learned")]
        learned: bool,
    },
    /// (internal) The sanitize benchmark's in-process measurement.
    #[command(name = "__bench-sanitize", hide = true)]
    BenchSanitize {
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        #[arg(long, default_value_t = 20)]
        iterations: u32,
        /// FILE is a JSON corpus: print how many entries are flagged.
        #[arg(long)]
        corpus: bool,
        /// Also time each step of the pipeline (milliseconds per run, averaged).
        #[arg(long)]
        phases: bool,
        /// Skip the learned stage (as `sanitize --no-learned`).
        #[arg(long)]
        no_learned: bool,
        /// The learned stage runs by default (accepted as for `sanitize`).
        #[arg(long, hide = true, conflicts_with = "no_learned")]
        learned: bool,
    },
    /// (internal) Sanitize many texts in one process: JSON Lines `{"id"?, "text"}` on
    /// stdin, one JSON line `{"id", "flagged", "severity", "categories", "rules"}` per
    /// input line on stdout. Used by `cargo xtask sanitize-eval`.
    #[command(name = "__sanitize-batch", hide = true)]
    SanitizeBatch,
    /// Test aid: one request through the broker's outbound path, printed as JSON.
    #[command(name = "__outbound", hide = true)]
    Outbound(outbound_debug::OutboundArgs),
    /// Test aid: latency of the outbound path against a bare hyper connection.
    #[command(name = "__outbound-bench", hide = true)]
    OutboundBench(outbound_debug::BenchArgs),
}

#[derive(Debug, Subcommand)]
enum DnsCommand {
    /// What a sandbox under POLICY would get for HOST (A and AAAA). A real query: an
    /// allowed answer is learned into the policy's allow map, as for a sandbox.
    #[command(
        after_help = "Examples:\n  hb-agent dns lookup --policy default pypi.org\n  hb-agent dns lookup --policy ci example.com --json"
    )]
    Lookup {
        #[arg(long, short)]
        policy: String,
        host: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the embedded default configuration.
    Default,
    /// Validate a config file; exit 1 with the key and line of the first problem.
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the default deny ranges and where each comes from.
    DefaultDeny {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum SandboxCommand {
    /// Run CMD in a fresh sandbox enrolled under POLICY and pass on its exit status.
    ///
    /// The sandbox: its own cgroup below cgroup_root (enforced from the first
    /// instruction, removed afterwards, with pids/memory/cpu limits from
    /// [sandbox_defaults]); its own pid, mount, IPC and cgroup namespaces; a read-only
    /// root with its own /proc, /tmp, /dev and /run, hb's state, the master key, other
    /// tenants and host-private paths hidden, the broker socket bound in; a new session
    /// with no controlling terminal; the user from --user or [sandbox_defaults] user
    /// (1000:1000 by default; root only with an explicit --user 0, and then without a
    /// single capability, in a user namespace of its own whose root is the host's 65534);
    /// no_new_privs; Landlock scopes (no abstract Unix socket or
    /// signal reaches outside the sandbox; ABI 6, Linux 6.12); seccomp filters (native
    /// ABI only; no raw or packet sockets, namespaces, mounts, bpf, ptrace, pidfd_getfd,
    /// io_uring, TIOCSTI…: EPERM and a `seccomp` event); a clean environment; only
    /// stdin, stdout and stderr passed in; and it dies with this launcher.
    /// --print-confinement shows all of it without running anything.
    ///
    /// Network: only addresses the policy validated; under `guard = true` (the default)
    /// TCP to ports 80 and 443 goes through the egress guard, which passes a TLS
    /// connection only when its SNI is a name the address was validated for, and plain
    /// HTTP only with GET/HEAD/OPTIONS unless the host is in `write_domains`. Over TLS
    /// the method is not seen (hb does not decrypt): calls that change state with a
    /// credential belong on the broker. QUIC (UDP 443) is refused.
    #[command(
        after_help = "Examples:\n  hb-agent sandbox run --policy default -- python3 tool.py\n  hb-agent sandbox run --policy ci --user 65534 -- sh -c 'curl -sS http://10.0.0.1/ || echo refused'\n  hb-agent sandbox run --policy default --user 0 -- id     # uid 0, no capabilities\n  hb-agent sandbox run --policy default --print-confinement --json -- true\n\nExit status: CMD's own; 128+N when signal N ended it; 1 when the sandbox could not be made (the error names the step), and CMD did not run."
    )]
    Run {
        /// Policy name (a [[policy]] of the running agent's config).
        #[arg(long, short)]
        policy: String,
        /// Run the command as UID[:GID] (the uid's number as gid if left out) or as a
        /// user name from /etc/passwd, with no supplementary groups. Default:
        /// [sandbox_defaults] user. `--user 0` runs it as root with no capabilities, in a user
        /// namespace whose root is the host's uid 65534 (root's host files are not its own).
        #[arg(long, visible_alias = "uid", value_name = "UID[:GID]|NAME", value_parser = crate::sandbox::parse_user)]
        user: Option<crate::sandbox::User>,
        /// Mount the tenant's work folder (tenants_dir/NAME/work, made on first use,
        /// owned by the sandbox's user) read-write at [sandbox_defaults] work_mount; no
        /// other tenant's folder exists in the sandbox. Default: the policy's `tenant`.
        #[arg(long, value_name = "NAME")]
        tenant: Option<String>,
        /// Make the host's SRC visible read-only at DEST in the sandbox (DEST must exist
        /// in the read-only root). Repeatable.
        #[arg(long, num_args = 2, value_names = ["SRC", "DEST"])]
        ro_bind: Vec<PathBuf>,
        /// Give CMD a fresh pseudo-terminal of its own (its controlling terminal and
        /// stdio), relayed to and from this one: for interactive commands. Without it
        /// CMD has no controlling terminal at all; it never gets the caller's.
        #[arg(long)]
        tty: bool,
        /// Pass an environment variable: KEY takes the caller's value, KEY=VALUE sets
        /// one. Repeatable. CMD otherwise gets only PATH, TERM, LANG, TZ, LC_* and HOME
        /// (the work mount, or /): never the caller's tokens.
        #[arg(long, value_name = "KEY[=VALUE]")]
        env: Vec<String>,
        /// Print what CMD would get (user, namespaces, capabilities, seccomp filters,
        /// mounts, limits) and run nothing; needs neither root nor a running agent.
        #[arg(long)]
        print_confinement: bool,
        /// With --print-confinement: JSON instead of text.
        #[arg(long, requires = "print_confinement")]
        json: bool,
        /// Run CMD even when the kernel lacks Landlock scopes (ABI 6, Linux 6.12). It can
        /// then reach host daemons and other sandboxes over abstract Unix sockets, and
        /// signal processes of its uid outside the sandbox. Without this flag such a kernel
        /// is an error and nothing runs.
        #[arg(long)]
        allow_unscoped: bool,
        /// The command and its arguments (after `--`).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            required_unless_present = "print_confinement",
            value_name = "CMD"
        )]
        command: Vec<OsString>,
    },
    /// Print the sandbox's seccomp rules as an OCI seccomp profile (JSON) for pods.
    ///
    /// A pod's sockets meet hb's kernel programs through its cgroup, but no launcher
    /// filters its system calls: 32-bit calls (which skip the cgroup sockopt programs),
    /// packet and vsock sockets and io_uring go around the hooks there. Run enforced pods
    /// under this profile (a kubelet `Localhost` profile): the same rules `sandbox run`
    /// applies, EPERM for each refused call, and the native architecture only (the
    /// runtime kills a call of another ABI).
    #[command(
        after_help = "Examples:\n  hb-agent sandbox seccomp-profile > /var/lib/kubelet/seccomp/hb.json\n  hb-agent sandbox seccomp-profile --policy ci > /var/lib/kubelet/seccomp/hb-ci.json\n\nIn the pod: securityContext: {seccompProfile: {type: Localhost, localhostProfile: hb.json}}\n\nExit status: 0 printed; 1 the policy is not in the config, or the rules cannot be written as a profile."
    )]
    SeccompProfile {
        /// Follow this policy's `allow_io_uring` (without it, io_uring is refused).
        #[arg(long, short)]
        policy: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum MapsCommand {
    /// List the pinned maps with their type, sizes and entry counts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Dump one map in human form (IPs, CIDRs, policy names, remaining seconds).
    #[command(
        after_help = "Maps: allow (allow4 and allow6 with the names each address was learned from), enrolled, policies, allow4, allow6, rules4, rules6 (each policy's deny ranges, exceptions and static CIDRs, compiled), counters, cg_stats, sock_peer (each socket's admitted peer: socket storage, which cannot be listed; the command says so), nat64 (the NAT64 prefixes judged as IPv4), guard (connections in flight through the egress guard: client end, original destination, pid, command), guard_ports (the ports each policy guards) (or their pinned names, e.g. HB_RULES4)"
    )]
    Dump {
        /// Map name.
        name: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if matches!(
        cli.command,
        Command::Config(_)
            | Command::Maps(_)
            | Command::Status { .. }
            | Command::Uninstall { .. }
            | Command::Scrub { .. }
            | Command::Sanitize { .. }
            | Command::Vault(_)
    ) {
        // Commands that only read local state and print end quietly when their reader
        // goes (`status | head`), like any Unix tool. Everything that talks over a
        // socket keeps Rust's default of ignoring SIGPIPE: a write to a connection the
        // peer has just closed (TLS writes are vectored, without MSG_NOSIGNAL) must be
        // an error to handle, not a silent death (`__outbound` died so, now and then,
        // on a pooled connection the server dropped).
        // SAFETY: plain disposition change before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    if matches!(
        cli.command,
        Command::Run
            | Command::Vault(_)
            | Command::Rotation(_)
            | Command::Scrub { .. }
            | Command::Outbound(_)
            | Command::OutboundBench(_)
    ) {
        // These hold the master key, a credential or a secret file's content in memory:
        // a crash must not write them to disk (see `forbid_core_dumps`). Not the
        // sandbox launcher: it holds none, and its /proc files must stay its user's.
        crate::secret::forbid_core_dumps().context("keeping secrets out of core dumps")?;
    }
    match cli.command {
        Command::Config(ConfigCommand::Default) => {
            print!("{}", config::DEFAULT_TOML);
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let c = Config::load(Some(&file))?;
            println!(
                "{}: ok ({} policies, {} sandbox rules, {} integrations)",
                file.display(),
                c.policies.len(),
                c.sandboxes.len(),
                c.integrations.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::DefaultDeny { json }) => {
            if json {
                let list: Vec<_> = crate::egress::DEFAULT_DENY
                    .iter()
                    .map(|(c, why)| serde_json::json!({"cidr": c, "source": why}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for (c, why) in crate::egress::DEFAULT_DENY {
                    println!("{c:<18} {why}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            let config = Config::load(cli.config.as_deref())?;
            init_tracing(config.agent.log_format);
            // One thread: the agent's work is short and latency-bound (DNS answers, event
            // drains); cross-thread wake-ups would cost more than they bring.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            rt.block_on(crate::agent::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sandbox(SandboxCommand::Run {
            policy,
            user,
            tenant,
            ro_bind,
            tty,
            env,
            print_confinement,
            json,
            allow_unscoped,
            command,
        }) => {
            let config = Config::load(cli.config.as_deref())?;
            let opts = crate::sandbox::RunOptions {
                policy,
                user,
                tenant,
                ro_binds: ro_bind
                    .chunks(2)
                    .map(|pair| (pair[0].clone(), pair[1].clone()))
                    .collect(),
                tty,
                env,
                allow_unscoped,
                command,
            };
            if print_confinement {
                crate::sandbox::print_confinement(&config, &opts, json)?;
                return Ok(ExitCode::SUCCESS);
            }
            let code = crate::sandbox::run(&config, &opts)?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)))
        }
        Command::Sandbox(SandboxCommand::SeccompProfile { policy }) => {
            let allow_io_uring = match policy {
                None => false,
                Some(name) => {
                    let config = Config::load(cli.config.as_deref())?;
                    config
                        .policies
                        .iter()
                        .find(|p| p.name.as_ref() == name.as_str())
                        .with_context(|| format!("no [[policy]] named {name:?} in the config"))?
                        .allow_io_uring
                }
            };
            let profile = crate::sandbox::oci::profile(allow_io_uring)?;
            println!("{}", serde_json::to_string_pretty(&profile)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Maps(MapsCommand::List { json }) => {
            let config = Config::load(cli.config.as_deref())?;
            maps::list(&config, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Maps(MapsCommand::Dump { name, json }) => {
            let config = Config::load(cli.config.as_deref())?;
            maps::dump(&config, &name, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Events { follow, json, last } => {
            let config = Config::load(cli.config.as_deref())?;
            events::show(&config, follow, json, last)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dns(DnsCommand::Lookup { policy, host, json }) => {
            let config = Config::load(cli.config.as_deref())?;
            dns::lookup(&config, &policy, &host, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Vault(cmd) => {
            let config = Config::load(cli.config.as_deref())?;
            vault::run(&config, cmd)
        }
        Command::Rotation(cmd) => {
            let config = Config::load(cli.config.as_deref())?;
            rotation::run(&config, cmd)
        }
        Command::Scrub {
            json,
            secret_file,
            fail_on_match,
            list_families,
            rules,
            check_rules,
        } => match check_rules {
            Some(file) => Ok(scrub::check_rules(&file, json)),
            None => scrub::run(json, &secret_file, fail_on_match, list_families, &rules),
        },
        Command::BenchScrub {
            input,
            secrets_file,
            iterations,
            chunk,
            rules,
        } => {
            scrub::bench(&input, secrets_file.as_deref(), iterations, chunk, &rules)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sanitize {
            mode,
            json,
            spotlight,
            no_learned,
            learned: _,
        } => sanitize::run(mode, json, spotlight, !no_learned),
        Command::BenchSanitize {
            input,
            iterations,
            corpus,
            phases,
            no_learned,
            learned: _,
        } => sanitize::bench(&input, iterations, corpus, phases, !no_learned),
        Command::SanitizeBatch => sanitize::batch(),
        Command::Outbound(args) => {
            let config = Config::load(cli.config.as_deref())?;
            outbound_debug::run(config, args)
        }
        Command::OutboundBench(args) => {
            let config = Config::load(cli.config.as_deref())?;
            outbound_debug::bench(config, args)
        }
        Command::Status { json, wait_ready } => {
            let config = Config::load(cli.config.as_deref())?;
            status::show(&config, json, wait_ready)
        }
        Command::Uninstall { force, json } => {
            let config = Config::load(cli.config.as_deref())?;
            match crate::uninstall::run(&config, force) {
                Ok(report) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report)?);
                    } else {
                        crate::uninstall::print(&report);
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ crate::uninstall::UninstallError::AgentRunning { .. }) => {
                    eprintln!("hb-agent: {e}");
                    Ok(ExitCode::from(3))
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HB_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::scrub::exits::ScrubbedStderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
