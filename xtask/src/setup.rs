//! `cargo xtask setup`: installs whatever is missing, and nothing that is there already.
//!
//! - Debian packages the tests and benchmarks use (apt-get; `apt-get update` first);
//! - the nightly toolchain's `rust-src` (the eBPF crate builds `core` itself);
//! - bpf-linker, built from crates.io against the nightly toolchain's own LLVM: prebuilt
//!   binaries cannot be downloaded here, and nightly ships exactly the LLVM its rustc
//!   emits bitcode for. The LLVM link folder lives under `~/.cargo/hb-bpf-linker-llvm`;
//! - the Kubernetes manifest checkers (kubernetes-validate, checkov) in a venv under the
//!   target folder, from the pinned `xtask/manifest-tools.txt` (see `manifests`).

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::util;

/// Debian packages, each with the command that proves it is there.
const PACKAGES: &[(&str, &str)] = &[
    ("bpftool", "bpftool"),
    ("curl", "curl"),
    ("iproute2", "ip"),
    ("python3", "/usr/bin/python3"),
    ("python3-requests", ""),
    // The manifest checkers' venv (kubernetes-validate, checkov from PyPI).
    ("python3-venv", ""),
    // The test upstreams answer in brotli and zstd (the broker must decode both).
    ("python3-brotli", ""),
    ("python3-zstandard", ""),
    ("iperf3", "iperf3"),
    ("dnsmasq-base", "dnsmasq"),
    // `pod_seccomp` runs containers under hb's seccomp profile, as a kubelet would.
    ("runc", "runc"),
    // `cargo xtask bench sandbox` measures hb's sandbox beside bubblewrap's.
    ("bubblewrap", "bwrap"),
    // `cargo xtask bench guard` measures the egress guard beside Squid (ssl_bump
    // peek/splice needs the OpenSSL build).
    ("squid-openssl", "/usr/sbin/squid"),
    // Attack review 44's shared front (routing by `Host` and SNI); Debian's default
    // configuration listens on nothing.
    ("haproxy", "haproxy"),
];

/// The bpf-linker release known to build against nightly's LLVM 22 here.
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn setup() -> anyhow::Result<()> {
    debian_packages()?;
    rust_src()?;
    bpf_linker()?;
    crate::manifests::setup_tools()?;
    Ok(())
}

fn dpkg_installed(pkg: &str) -> bool {
    util::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_ok_and(|s| s.contains("install ok installed"))
}

fn debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(pkg, _)| !dpkg_installed(pkg))
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        eprintln!("setup: Debian packages present");
        return Ok(());
    }
    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    util::run(Command::new("apt-get").args(["update", "-q"]))?;
    util::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    for (pkg, probe) in PACKAGES {
        if !probe.is_empty()
            && !util::succeeds(Command::new("sh").args(["-c", &format!("command -v {probe}")]))
        {
            bail!("{pkg} was installed but `{probe}` is still not found");
        }
    }
    Ok(())
}

fn rust_src() -> anyhow::Result<()> {
    let installed = util::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context("the nightly toolchain is needed for the eBPF programs (rustup toolchain list)")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("setup: nightly rust-src present");
        return Ok(());
    }
    util::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

fn bpf_linker() -> anyhow::Result<()> {
    let bin = util::cargo_bin_dir().join("bpf-linker");
    if util::succeeds(Command::new(&bin).arg("--version")) {
        eprintln!("setup: bpf-linker present ({})", bin.display());
        return Ok(());
    }
    let sysroot = PathBuf::from(
        util::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?.trim(),
    );
    let lib = sysroot.join("lib");
    // libLLVM.so.22.1-rust-1.97.0-nightly: the versioned name rustc links against.
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    let major = llvm
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    let prefix = util::cargo_bin_dir()
        .parent()
        .map(|p| p.join("hb-bpf-linker-llvm"))
        .context("locating ~/.cargo")?;
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    for name in ["libLLVM.so".to_owned(), llvm.clone()] {
        let link = prefix_lib.join(&name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib.join(&llvm), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {major} (about a minute)"
    );
    util::run(
        Command::new("cargo")
            .args([
                "+nightly",
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            .env("LLVM_PREFIX", &prefix)
            .env_remove("RUSTC")
            .env_remove("CARGO"),
    )?;
    if !util::succeeds(Command::new(&bin).arg("--version")) {
        bail!("bpf-linker was built but {} does not run", bin.display());
    }
    Ok(())
}
