//! Builds hb-ebpf for bpfel-unknown-none with the nightly toolchain (aya-build), so the
//! agent embeds its kernel side. `AYA_BUILD_SKIP=1` skips it (for a quick clippy run);
//! the agent then refuses to load.

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    // Read when the script runs, not when it was compiled: a target folder shared by
    // two checkouts would otherwise build the eBPF of whichever compiled it first.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root = format!("{manifest}/../hb-ebpf");
    // aya-build watches hb-ebpf; the shared types live in hb-common.
    println!("cargo:rerun-if-changed={manifest}/../hb-common/src");
    let skip =
        std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        // include_bytes_aligned! needs a file; an empty one makes the loader refuse.
        let out = std::env::var("OUT_DIR").context("OUT_DIR")?;
        std::fs::write(format!("{out}/hb-ebpf"), b"").context("writing placeholder object")?;
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "hb-ebpf",
            root_dir: &root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the eBPF programs (needs the nightly toolchain with rust-src and bpf-linker on PATH; `cargo xtask setup` installs them)")
}
