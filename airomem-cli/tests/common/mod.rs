//! What the CLI's test files share.

use std::process::Command;

/// Runs the `airomem` binary with `args` and returns its exit code, standard output and
/// standard error.
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_airomem")).args(args).output().expect("run the airomem binary");
    (
        out.status.code().expect("exited"),
        String::from_utf8(out.stdout).expect("utf-8"),
        String::from_utf8(out.stderr).expect("utf-8"),
    )
}
