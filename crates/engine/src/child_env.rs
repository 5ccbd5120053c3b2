//! The environment of every process the engine starts: built, never inherited.
//!
//! The engine's own environment may hold its token (`RUNLOG_ENGINE_TOKEN`), the log
//! service's admin secret (`RUNLOG_ADMIN_SECRET` under `runlog serve`) and whatever else
//! its operator exported. A step, a function or an installer is somebody else's code,
//! so it gets only [`BASE_NAMES`] (and names starting with [`BASE_PREFIXES`]) of the
//! engine's environment, the names the operator passes on with `--pass-env`, and what
//! the request itself sets (stage and step `envs`).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use tokio::process::Command;

/// Variables of the engine's environment every child inherits: where programs are,
/// who and where the user is, language, terminal, temporary directory, time zone,
/// network proxies and trusted certificates — what ordinary programs need to run,
/// and never a credential of the engine's.
pub const BASE_NAMES: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TERM",
    "TMPDIR",
    "TZ",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Prefixes of inherited names: locale categories and the XDG base directories.
pub const BASE_PREFIXES: &[&str] = &["LC_", "XDG_"];

/// Prefixes an installer inherits besides the base: the operator's pip and uv
/// settings (index URLs, caches) are how installs are configured on a host.
pub const INSTALLER_PREFIXES: &[&str] = &["PIP_", "UV_"];

/// The base environment plus the engine's variables named in `pass` (present ones).
pub fn base(pass: &[String]) -> BTreeMap<String, String> {
    inherited(|name| pass.iter().any(|p| p == name))
}

/// A command for an installer (pip, uv, apt, venv): the base plus pip/uv settings.
pub fn installer_command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear().envs(inherited(|name| {
        INSTALLER_PREFIXES.iter().any(|p| name.starts_with(p))
    }));
    cmd
}

/// A command for untrusted code the engine runs itself (a function worker): the base.
pub fn untrusted_command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear().envs(base(&[]));
    cmd
}

/// The engine's variables that are in the base or that `also` accepts. Names or values
/// that are not UTF-8 are left out (a child could not be given them through `envs`).
fn inherited(also: impl Fn(&str) -> bool) -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| {
            BASE_NAMES.contains(&k.as_str())
                || BASE_PREFIXES.iter().any(|p| k.starts_with(p))
                || also(k)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_keeps_path_and_drops_everything_else() {
        // The test process's own environment: PATH is set wherever tests run, and
        // CARGO_* variables (set by cargo for every test) are not in the base.
        let env = base(&[]);
        assert!(env.contains_key("PATH"));
        assert!(!env.keys().any(|k| k.starts_with("CARGO")), "{env:?}");
        let passed = base(&["CARGO_PKG_NAME".to_owned()]);
        assert_eq!(
            passed.get("CARGO_PKG_NAME").map(String::as_str),
            Some("runlog-engine")
        );
    }
}
