//! Records the git revision for `lovebeat --version`: from git in a
//! checkout, else from `LOVEBEAT_GIT_REV` (the container build passes it),
//! else "unknown" (a source tarball).

use std::path::Path;
use std::process::Command;

fn main() {
    let from_git = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let given = std::env::var("LOVEBEAT_GIT_REV").ok();
    let rev = from_git
        .into_iter()
        .chain(given)
        .find(|r| !r.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=LOVEBEAT_GIT_REV={rev}");
    // Where git keeps HEAD: `.git/HEAD` in a checkout, elsewhere in a
    // worktree (whose `.git` is a file), so ask git.
    for what in ["HEAD", "refs/heads"] {
        let path = Command::new("git")
            .args(["rev-parse", "--git-path", what])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        if let Some(path) = path.filter(|p| Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LOVEBEAT_GIT_REV");
}
