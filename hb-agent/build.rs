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
    println!("cargo:rerun-if-env-changed=CC");
    if libc_reads_packed_relocations() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
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

/// Whether the C library the agent links against applies packed relative relocations
/// (`DT_RELR`, glibc 2.36+: it defines the `GLIBC_ABI_DT_RELR` version the linker then
/// requires). Packed, the loader's relocation work at start drops from ~44,000 RELA
/// entries (1 MiB read, ~1.38 M cycles) to a 12 KiB bitmap (~0.30 M cycles), which every
/// `hb-agent sandbox run` pays. Against an older glibc the binary would not start, so the
/// option is left out there.
fn libc_reads_packed_relocations() -> bool {
    if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() != Ok("gnu") {
        return false;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let Ok(out) = std::process::Command::new(cc)
        .arg("-print-file-name=libc.so.6")
        .output()
    else {
        return false;
    };
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    std::fs::read(&path).is_ok_and(|libc| {
        libc.windows(b"GLIBC_ABI_DT_RELR".len())
            .any(|w| w == b"GLIBC_ABI_DT_RELR")
    })
}
