//! `stowage check-config` with only the given `STOWAGE_*` variables: shared by the config
//! tests (included with `#[path]`; they use none of the server harness).

use std::path::Path;

/// `stowage --config PATH check-config` with `vars` set and no other `STOWAGE_…` variable
/// (the harness's own, or an override in the developer's shell): exit status and output.
pub fn check_config_with_env(path: &Path, vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_stowage"));
    cmd.arg("--config").arg(path).arg("check-config");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy()
            .to_ascii_uppercase()
            .starts_with("STOWAGE_")
        {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1").envs(vars.iter().copied());
    let out = cmd.output().expect("run stowage check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}
