//! The Kubernetes manifests' check (`cargo xtask manifests`, a step of `cargo xtask test`):
//! `kubernetes-validate --strict` against a current Kubernetes and `checkov --framework
//! kubernetes` over `deploy/kubernetes`, the sandbox admission policy's CEL rules
//! evaluated against good and broken pods (`xtask/admission_check.py`, cel-python), and
//! hadolint over `deploy/Containerfile`, all from a venv the set-up keeps under the
//! target folder (built once from `xtask/manifest-tools.txt`, rebuilt only when that file
//! changes).
//!
//! Before the real files are judged, each tool is given a known-bad copy of a real file
//! and must refuse it, naming the fault, so a check that silently passes everything (a
//! wrong flag, a tool that finds no files) fails the step instead.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::util;

/// The Kubernetes version the manifests must validate against.
const KUBERNETES_VERSION: &str = "1.37.0";

/// The pinned checker packages, as `pip freeze` wrote them.
const LOCK: &str = "xtask/manifest-tools.txt";

/// The venv's folder, and the copy of the lock file it was built from.
fn venv_dir() -> PathBuf {
    util::target_dir().join("xtask/manifest-tools")
}

fn stamp(venv: &Path) -> PathBuf {
    venv.join("built-from.txt")
}

/// Makes the venv when it is missing or was built from another lock file.
pub fn setup_tools() -> anyhow::Result<()> {
    let venv = venv_dir();
    let lock_path = util::workspace_root().join(LOCK);
    let lock = std::fs::read_to_string(&lock_path)
        .with_context(|| format!("reading {}", lock_path.display()))?;
    let bin = venv.join("bin");
    // The stamp is written last, so with it the install finished; checking that the
    // scripts are there (not running them: checkov takes seconds to start) is enough.
    if std::fs::read_to_string(stamp(&venv)).is_ok_and(|s| s == lock)
        && bin.join("kubernetes-validate").is_file()
        && bin.join("checkov").is_file()
        && bin.join("hadolint").is_file()
    {
        eprintln!("setup: manifest checkers present ({})", venv.display());
        return Ok(());
    }
    let started = Instant::now();
    if venv.exists() {
        std::fs::remove_dir_all(&venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    // Debian's python3 (a package of the set-up), not whatever python3 is first on PATH.
    util::run(
        Command::new("/usr/bin/python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv),
    )?;
    util::run(
        Command::new(bin.join("pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "--requirement",
            ])
            .arg(&lock_path),
    )?;
    std::fs::write(stamp(&venv), &lock).context("writing the venv's stamp")?;
    eprintln!(
        "setup: manifest checkers installed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Self-check, then the real check of `deploy/kubernetes`.
pub fn check() -> anyhow::Result<()> {
    let started = Instant::now();
    let root = util::workspace_root().join("deploy/kubernetes");
    let files = manifest_files(&root)?;
    check_skip_reasons(&files)?;
    self_check()?;
    let rel: Vec<PathBuf> = files
        .iter()
        .map(|f| {
            f.strip_prefix(util::workspace_root())
                .unwrap_or(f)
                .to_owned()
        })
        .collect();
    util::run(
        validate()
            .arg("--quiet")
            .args(&rel)
            .current_dir(util::workspace_root()),
    )
    .context("kubernetes-validate refused a manifest (the lines above name the file and field)")?;
    util::run(checkov().arg("--directory").arg("deploy/kubernetes"))
        .context("checkov found a manifest problem (above); fix it, or skip the check by id with a reason (checkov.io/skipN annotation)")?;
    util::run(tool("python").args([
        "xtask/admission_check.py",
        "deploy/kubernetes/sandbox-admission.yaml",
        "deploy/kubernetes/example/sandbox-pod.yaml",
    ]))
    .context("the sandbox admission policy's rules gave a wrong verdict (above)")?;
    util::run(tool("hadolint").arg(CONTAINERFILE)).context(
        "hadolint found a problem in the Containerfile (above); fix it, or add `# hadolint ignore=DLnnnn` with a reason",
    )?;
    eprintln!(
        "manifests: checked {} manifests and the Containerfile in {:.1} s",
        files.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn tool(name: &str) -> Command {
    let mut c = Command::new(venv_dir().join("bin").join(name));
    c.current_dir(util::workspace_root());
    c
}

fn validate() -> Command {
    let mut c = tool("kubernetes-validate");
    c.args(["--strict", "--kubernetes-version", KUBERNETES_VERSION]);
    c
}

fn checkov() -> Command {
    let mut c = tool("checkov");
    // --skip-download: no call to the vendor's API (only package registries are
    // reachable in CI); the checks themselves ship with the package.
    c.args([
        "--framework",
        "kubernetes",
        "--skip-download",
        "--compact",
        "--quiet",
    ]);
    c
}

/// Every Kubernetes manifest below `root` (kustomization files are kustomize's, not
/// Kubernetes objects).
fn manifest_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml")
                && path.file_name().is_some_and(|n| n != "kustomization.yaml")
            {
                out.push(path);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        bail!("no manifest found below {}", root.display());
    }
    Ok(out)
}

/// Each `checkov.io/skipN` annotation names one check and says why on the same line.
fn check_skip_reasons(files: &[PathBuf]) -> anyhow::Result<()> {
    let form = regex::Regex::new(r#"^\s*checkov\.io/skip\d+:\s*"?CKV2?_K8S_\d+=\s*\S.{9,}"?\s*$"#)
        .expect("a valid regex");
    let mut bad = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for (i, line) in text.lines().enumerate() {
            if line.contains("checkov.io/skip") && !form.is_match(line) {
                bad.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
            }
        }
    }
    if !bad.is_empty() {
        bail!(
            "checkov skips need one check id and a reason (checkov.io/skipN: \"CKV_K8S_NN=why\"):\n{}",
            bad.join("\n")
        );
    }
    Ok(())
}

const CONTAINERFILE: &str = "deploy/Containerfile";
const DAEMONSET: &str = "deploy/kubernetes/daemonset.yaml";

/// Known-bad copies of real files, each of which one tool must refuse, naming the fault
/// in its output: (what, file, text, replacement, tool, what the refusal names).
const BAD: &[(&str, &str, &str, &str, Tool, &str)] = &[
    (
        "a DaemonSet with a misspelt field",
        DAEMONSET,
        "hostNetwork: true",
        "hostNetwrok: true",
        Tool::Validate,
        "'hostNetwrok' was unexpected",
    ),
    (
        "a DaemonSet with a privileged container",
        DAEMONSET,
        "allowPrivilegeEscalation: false\n            readOnlyRootFilesystem: true\n            capabilities:\n              drop: [\"ALL\"]\n              add:\n",
        "privileged: true\n            readOnlyRootFilesystem: true\n            capabilities:\n              drop: [\"ALL\"]\n              add:\n",
        Tool::Checkov,
        "CKV_K8S_16",
    ),
    (
        "a Containerfile on an unpinned base image",
        CONTAINERFILE,
        "FROM docker.io/library/debian:bookworm-slim",
        "FROM docker.io/library/debian:latest",
        Tool::Hadolint,
        "DL3007",
    ),
];

#[derive(Clone, Copy)]
enum Tool {
    Validate,
    Checkov,
    Hadolint,
}

fn self_check() -> anyhow::Result<()> {
    let dir = util::target_dir().join("xtask/manifest-self-check");
    for (i, (what, real, from, to, which, names)) in BAD.iter().enumerate() {
        let original = std::fs::read_to_string(util::workspace_root().join(real))
            .with_context(|| format!("reading {real}"))?;
        if !original.contains(from) {
            bail!(
                "self-check {what}: {real} no longer contains {from:?}; update xtask/src/manifests.rs"
            );
        }
        let case = dir.join(i.to_string());
        std::fs::create_dir_all(&case).with_context(|| format!("creating {}", case.display()))?;
        let file = case.join(Path::new(real).file_name().unwrap_or_default());
        std::fs::write(&file, original.replacen(from, to, 1)).context("writing a bad copy")?;
        let mut cmd = match which {
            Tool::Validate => {
                let mut c = validate();
                c.arg("--quiet").arg(&file);
                c
            }
            Tool::Checkov => {
                let mut c = checkov();
                c.arg("--file").arg(&file);
                c
            }
            Tool::Hadolint => {
                let mut c = tool("hadolint");
                c.arg(&file);
                c
            }
        };
        let out = cmd
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("self-check {what}: starting {:?}", cmd.get_program()))?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() || !said.contains(names) {
            bail!(
                "self-check: the manifest check did not refuse {what} ({}; exit {}, expected a refusal naming {names:?}): a check that cannot fail proves nothing\n{said}",
                file.display(),
                out.status
            );
        }
        eprintln!("manifests: self-check ok, {what} is refused");
    }
    Ok(())
}
