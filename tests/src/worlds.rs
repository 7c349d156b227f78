//! Worlds several attack reviews set up alike, each in the test's own network namespace:
//! - [`TrustedNames`]: names served over TLS on one address with a certificate of a CA
//!   made for the test, dnsmasq answering them, and [`TrustedNames::agent`], a broker
//!   agent trusting that CA;
//! - [`ReflectingUpstream`]: those names served by a Python upstream that reflects what
//!   it got.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde_json::Value;

use crate::{
    PythonServer, TestEnv, private_netns, tls_broker_config,
    upstream::{Dnsmasq, Leaf, PY_SERVE_HTTPS, TestCa},
};

/// The address a [`ReflectingUpstream`] serves on (port 443).
pub const REFLECTOR_ADDR: &str = "203.0.113.10";

/// Every line of the file `log`, each a JSON value.
pub fn json_lines(log: &Path) -> Vec<Value> {
    fs::read_to_string(log)
        .expect("log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Names a test upstream serves over TLS: the test's namespace with [`REFLECTOR_ADDR`] on
/// `lo`; a CA made for the test and a certificate it issued for the names (`leaf`); dnsmasq
/// answering the names with that address. Its folder is removed on drop.
pub struct TrustedNames {
    pub dir: PathBuf,
    pub ca: TestCa,
    pub leaf: Leaf,
    dns_port: u16,
    _dns: Dnsmasq,
}

impl TrustedNames {
    /// The world in folder `hb-{dir_name}-{pid}` of the temp dir, dnsmasq on
    /// 127.0.0.1:`dns_port` answering `names`; the certificate's files are labelled
    /// `label`.
    pub fn start(dir_name: &str, dns_port: u16, label: &str, names: &[&str]) -> Self {
        crate::require_root();
        private_netns(&[REFLECTOR_ADDR]);
        let dir = std::env::temp_dir().join(format!("hb-{dir_name}-{}", std::process::id()));
        let ca = TestCa::new(&dir, "trusted");
        let leaf = ca.issue(label, names);
        let answers: Vec<(&str, &[&str])> =
            names.iter().map(|n| (*n, &[REFLECTOR_ADDR][..])).collect();
        let dns = Dnsmasq::start("127.0.0.1", dns_port, &answers, &[], 60);
        Self {
            dir,
            ca,
            leaf,
            dns_port,
            _dns: dns,
        }
    }

    /// A broker agent of this world, started: [`tls_broker_config`] (the test CA trusted,
    /// lookups sent to the world's dnsmasq, `broker_extra` lines in `[broker]`) and then
    /// `body` (the integrations and policies); the vault holds `credentials`
    /// (integration, account, secret).
    pub fn agent(
        &self,
        name: &str,
        broker_extra: &str,
        body: &str,
        credentials: &[(&str, &str, &str)],
    ) -> TestEnv {
        let config = format!(
            "\n{}{body}",
            tls_broker_config(&self.ca.cert, self.dns_port, broker_extra)
        );
        let mut env = TestEnv::new(name, &config);
        env.init_vault(credentials);
        env.start_agent();
        env
    }
}

impl Drop for TrustedNames {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A reflecting upstream world: [`TrustedNames`] and the Python `reflector` (an
/// `http.server` handler class `H`, served over TLS by [`PY_SERVE_HTTPS`]) on
/// [`REFLECTOR_ADDR`]:443 with the names' certificate. The reflector is given `addr, log,
/// cert, key` and then the extra arguments in `sys.argv`; `log` is an empty file it may
/// write JSON lines to.
pub struct ReflectingUpstream {
    _server: PythonServer,
    pub log: PathBuf,
    pub names: TrustedNames,
}

impl ReflectingUpstream {
    /// The world in folder `hb-{dir_name}-{pid}` of the temp dir, dnsmasq on
    /// 127.0.0.1:`dns_port` answering `names`; `args`: the reflector's extra arguments.
    pub fn start(
        dir_name: &str,
        dns_port: u16,
        names: &[&str],
        reflector: &str,
        args: &[&str],
    ) -> Self {
        let names = TrustedNames::start(dir_name, dns_port, "echo", names);
        let log = names.dir.join("reflect.jsonl");
        fs::write(&log, "").expect("log");
        // PythonServer takes one script: the arguments travel in it.
        let argv: Vec<String> = [
            REFLECTOR_ADDR.to_owned(),
            log.display().to_string(),
            names.leaf.cert.display().to_string(),
            names.leaf.key.display().to_string(),
        ]
        .into_iter()
        .chain(args.iter().map(|a| (*a).to_owned()))
        .map(|a| format!("{a:?}"))
        .collect();
        let server = PythonServer::start(&format!(
            "import sys\nsys.argv = ['x', {}]\n{reflector}{PY_SERVE_HTTPS}",
            argv.join(", ")
        ));
        Self {
            _server: server,
            log,
            names,
        }
    }

    /// [`TrustedNames::agent`] of this world.
    pub fn agent(
        &self,
        name: &str,
        broker_extra: &str,
        body: &str,
        credentials: &[(&str, &str, &str)],
    ) -> TestEnv {
        self.names.agent(name, broker_extra, body, credentials)
    }

    /// Every request the reflector logged, one JSON value each.
    pub fn records(&self) -> Vec<Value> {
        json_lines(&self.log)
    }
}
