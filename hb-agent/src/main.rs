//! hb-agent: the node agent and its CLI (one binary).
//!
//! The kernel's data path, module by module: `config` (what is allowed) → `loader` +
//! `maps` (the kernel's copy of it) → `enroll` / `sandbox` (which processes it applies
//! to) → the programs in hb-ebpf (the verdict, per connect and per packet) → `events`
//! (what was refused). `dns` is the resolver whose validated answers are the only names
//! a sandbox can reach.
//!
//! The broker's data path: `broker` (request in → caller identity → policy → handle and
//! credential from `vault` → `broker::outbound`, the pinned connection → response) →
//! `scrub` (every exit: responses, errors, logs, events, `audit`) → out. `sanitize` is
//! the barrier for untrusted text on its way to a model. `cli` holds the operator
//! commands that read it all back.

mod agent;
mod audit;
mod broker;
mod cgroup;
mod cli;
mod config;
mod dns;
mod egress;
mod enroll;
mod events;
mod flow_key;
mod guard;
mod http_rules;
mod kube;
mod loader;
mod local_addrs;
mod local_routes;
mod maps;
mod ports;
mod room;
mod sandbox;
mod sanitize;
mod scope;
mod scrub;
mod secret;
mod share;
mod telemetry;
mod uninstall;
mod vault;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    scrub::exits::install_panic_hook();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "hb-agent: error: {}",
                scrub::exits::scrubbed(&format!("{e:#}"))
            );
            ExitCode::FAILURE
        }
    }
}

/// An error and its sources on one line, for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
