//! What ships beside the code passes the linters its users run: Kubernaut's
//! Dockerfile (hadolint) and the example's GitHub Actions workflow (actionlint).
//! `scripts/install-test-deps` installs both; without one, its test says it skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// `program` on PATH, or in the tools cache `scripts/install-test-deps` builds into.
fn tool(program: &str) -> Option<PathBuf> {
    let on_path = Command::new(program).arg("--version").output();
    if on_path.is_ok_and(|o| o.status.success()) {
        return Some(PathBuf::from(program));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let cached = cache.join("kubernaut/tools/bin").join(program);
    cached.is_file().then_some(cached)
}

fn lint(program: &str, file: &str) {
    let Some(binary) = tool(program) else {
        eprintln!("skipped: {program} is not installed (scripts/install-test-deps installs it)");
        return;
    };
    let output = Command::new(&binary)
        .arg(repository_root().join(file))
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        output.status.success(),
        "{program} finds problems in {file}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_dockerfile_passes_hadolint() {
    lint("hadolint", "Dockerfile");
}

#[test]
fn the_example_workflow_passes_actionlint() {
    lint(
        "actionlint",
        "examples/hello-world/.github/workflows/deploy.yml",
    );
}
