//! `runlog token`: mint an account token locally from the admin secret.

use crate::credentials::AdminSecret;
use anyhow::Context;
use clap::Args;
use runlog_protocol::{AccountId, Scope};
use runlog_service::config::DEFAULT_DATA_DIR;
use std::path::PathBuf;
use std::time::Duration;

/// Flags of `runlog token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// Account the token is bound to (not needed for `--scope admin`).
    #[arg(long, env = "RUNLOG_ACCOUNT")]
    pub account: Option<AccountId>,
    /// What the token allows: read, write or admin.
    #[arg(long, default_value = "write")]
    pub scope: Scope,
    /// Lifetime, e.g. `24h`, `30m`.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// The service's admin secret; read from the data dir when absent.
    #[command(flatten)]
    pub admin: AdminSecret,
    /// The service's data directory (holds the saved admin secret).
    #[arg(long, env = "RUNLOG_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

/// The token these flags ask for.
pub fn mint(args: &TokenArgs) -> anyhow::Result<String> {
    let secret = match &args.admin.admin_secret {
        Some(s) if !s.is_empty() => s.clone(),
        _ => runlog_service::auth::read_saved_secret(&args.data_dir)
            .with_context(|| format!("cannot read the admin secret in {}", args.data_dir.display()))?
            .with_context(|| {
                format!(
                    "no admin secret: pass --admin-secret or RUNLOG_ADMIN_SECRET, or start `runlog service --data-dir {}` once to generate one",
                    args.data_dir.display()
                )
            })?,
    };
    if args.scope != Scope::Admin && args.account.is_none() {
        anyhow::bail!("--account is required for a {} token", args.scope);
    }
    let account = if args.scope == Scope::Admin {
        None
    } else {
        args.account.as_ref()
    };
    Ok(runlog_service::auth::mint_token(
        secret.as_bytes(),
        account,
        args.scope,
        args.ttl,
    )?)
}

/// Prints a new token on stdout.
pub async fn run(args: TokenArgs) -> anyhow::Result<()> {
    println!("{}", mint(&args)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(flags: &[&str]) -> TokenArgs {
        try_parse(flags).unwrap()
    }

    fn try_parse(flags: &[&str]) -> Result<TokenArgs, clap::Error> {
        crate::cmd::parse_flags(flags)
    }

    #[test]
    fn minted_token_verifies_with_the_saved_secret() {
        let dir = tempfile::tempdir().unwrap();
        let secret = runlog_service::auth::load_or_create_secret(None, dir.path()).unwrap();
        let d = dir.path().to_str().unwrap();
        let t = mint(&parse(&[
            "--account",
            "acc",
            "--scope",
            "read",
            "--ttl",
            "1h",
            "--data-dir",
            d,
        ]))
        .unwrap();
        let claims = runlog_service::auth::verify_token(secret.as_bytes(), &t).unwrap();
        assert_eq!(
            (claims.account.unwrap().as_str(), claims.scope),
            ("acc", Scope::Read)
        );
    }

    #[test]
    fn bad_input_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let err = mint(&parse(&["--account", "acc", "--data-dir", d])).unwrap_err();
        assert!(err.to_string().contains("no admin secret"), "{err}");
        assert!(
            mint(&parse(&["--admin-secret", "s"])).is_err(),
            "write token needs an account"
        );
        assert!(try_parse(&["--account", "../evil", "--admin-secret", "s"]).is_err());
        assert!(try_parse(&["--scope", "root"]).is_err());
        assert!(mint(&parse(&["--scope", "admin", "--admin-secret", "s"])).is_ok());
    }
}
