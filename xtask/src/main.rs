//! `cargo xtask`: set-up, build, run, test and bench for hb. Every command it runs is
//! printed first; any failure stops it with a non-zero exit.

mod bench;
mod bench_broker;
mod bench_enroll;
mod bench_guard;
mod bench_guard_peers;
mod bench_rotation;
mod bench_sandbox;
mod bench_sanitize;
mod bench_scrub;
mod manifests;
mod sanitize_eval;
mod sanitize_train;
mod scrub_precision;
mod scrub_recall;
mod setup;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "hb's build and test orchestration")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what is missing: Debian packages, nightly rust-src, bpf-linker, the
    /// manifest checkers' venv.
    Setup,
    /// Build the agent (and its embedded eBPF programs) in release mode.
    Build,
    /// Build, then start `hb-agent run` (root needed). Extra args go to `hb-agent run`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Check deploy/kubernetes: kubernetes-validate --strict and checkov (set-up first).
    Manifests,
    /// Set-up, fmt check, manifest check, clippy -D warnings (user space and eBPF), every test.
    Test {
        /// Extra arguments for `cargo nextest run` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks, hb side by side with its comparison (root needed, except for scrub).
    Bench {
        /// Which benchmark: `connect`, `dns`, `broker`, `sandbox`, `guard`, `enroll`, `rotation`
        /// (root) or `scrub`, `sanitize` (no root); default: all of them.
        which: Option<String>,
        /// An earlier `hb-agent` release binary: `connect` also measures its programs'
        /// cost, and `sandbox` its `sandbox run`, taking turns with this tree's in the
        /// same run.
        #[arg(long, value_name = "BIN")]
        previous: Option<std::path::PathBuf>,
        /// `rotation` only: its small size (one rotation under load and two by the
        /// detector, two callers), as its test runs it.
        #[arg(long)]
        smoke: bool,
    },
    /// How many of gitleaks's rules the scrubber covers: three samples generated from each
    /// rule's regex, planted in lines that name its keyword, through `hb-agent scrub`.
    #[command(name = "scrub-recall", after_help = scrub_recall::RECALL_EXAMPLES)]
    ScrubRecall(scrub_recall::RecallArgs),
    /// How often the scrubber alters real text (Python stdlib, man pages, /usr/share/doc):
    /// altered lines per MB, and with --list every alteration.
    #[command(name = "scrub-precision", after_help = scrub_precision::PRECISION_EXAMPLES)]
    ScrubPrecision(scrub_precision::PrecisionArgs),
    /// The sanitizer's recall per family and language on the attack corpus, and its
    /// false positives on the benign corpus (testdata/corpus), for the development and
    /// the test half. The test half is for measuring only: never tune detection on its
    /// texts (--list-missed / --list-false-positives print them).
    SanitizeEval(sanitize_eval::EvalArgs),
    /// Train the sanitizer's learned stage (logistic regression over hashed character
    /// n-grams) on the development half and the probe set, never the test half; writes
    /// hb-agent/src/sanitize/learned.model (--check: retrain and compare with it).
    SanitizeTrain(sanitize_train::TrainArgs),
    /// (internal) The benchmark's client: N connect+close to ADDR, prints elapsed ns.
    #[command(name = "__connect-loop", hide = true)]
    ConnectLoop { addr: String, n: usize },
    /// (internal) The guard benchmark's server: TLS on ADDR:443, plain HTTP on ADDR:80.
    #[command(name = "__guard-server", hide = true)]
    GuardServer {
        addr: String,
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
    },
    /// (internal) The guard benchmark's client.
    #[command(name = "__guard-client", hide = true)]
    GuardClient(bench_guard_peers::ClientArgs),
    /// (internal) One benchmark in this process.
    #[command(name = "__bench-one", hide = true)]
    BenchOne { name: String },
    /// (internal) Write the sanitize benchmark's input (1 MiB of mixed text) to PATH, to
    /// measure the sanitizer by hand (callgrind instruction counts).
    #[command(name = "__sanitize-input", hide = true)]
    SanitizeInput { path: std::path::PathBuf },
    /// (internal) Write the scrub benchmark's inputs (`clean.txt`, `tokens.txt`,
    /// `live-values.txt`) to DIR, to measure the scrubber by hand (callgrind instruction
    /// counts of `hb-agent scrub`).
    #[command(name = "__scrub-input", hide = true)]
    ScrubInput { dir: std::path::PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::setup(),
        Command::Manifests => setup::setup().and_then(|()| manifests::check()),
        Command::Build => setup::setup().and_then(|()| build(true)),
        Command::Run { args } => run(args),
        Command::Test { args } => test(args),
        Command::Bench {
            which,
            previous,
            smoke,
        } => bench::bench(which.as_deref(), previous.as_deref(), smoke),
        Command::ScrubRecall(args) => scrub_recall::recall(&args),
        Command::ScrubPrecision(args) => scrub_precision::precision(&args),
        Command::SanitizeEval(args) => sanitize_eval::eval(&args),
        Command::SanitizeTrain(args) => sanitize_train::train_command(&args),
        Command::ConnectLoop { addr, n } => bench::connect_loop(&addr, n),
        Command::GuardServer { addr, cert, key } => bench_guard_peers::server(&addr, &cert, &key),
        Command::GuardClient(args) => bench_guard_peers::client(&args),
        Command::BenchOne { name } => bench::bench_one(&name),
        Command::SanitizeInput { path } => bench_sanitize::write_input(&path),
        Command::ScrubInput { dir } => bench_scrub::write_inputs(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn build(release: bool) -> anyhow::Result<()> {
    let mut cmd = util::cargo();
    cmd.args(["build", "--package", "hb-agent"]);
    if release {
        cmd.arg("--release");
    }
    util::run(&mut cmd)
}

fn run(args: Vec<String>) -> anyhow::Result<()> {
    setup::setup()?;
    build(true)?;
    let bin = util::workspace_root().join("target/release/hb-agent");
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("run").args(args);
    util::run(&mut cmd)
}

fn test(args: Vec<String>) -> anyhow::Result<()> {
    setup::setup()?;
    util::run(util::cargo().args(["fmt", "--all", "--", "--check"]))?;
    manifests::check()?;
    util::run(util::cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "hb-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    util::run(
        util::cargo_nightly()
            .args([
                "clippy",
                "--package",
                "hb-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--release",
                "--",
                "-D",
                "warnings",
            ])
            .env(
                "CARGO_TARGET_DIR",
                util::workspace_root().join("target/ebpf-clippy"),
            ),
    )?;
    // The end-to-end tests drive this binary.
    build(false)?;
    let bin = util::workspace_root().join("target/debug/hb-agent");
    util::run(
        util::cargo()
            .args([
                "nextest",
                "run",
                "--workspace",
                "--exclude",
                "hb-ebpf",
                "--no-fail-fast",
            ])
            .args(args)
            .env("HB_AGENT_BIN", bin),
    )
}
