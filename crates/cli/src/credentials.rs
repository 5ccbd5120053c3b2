//! The flags that carry a secret, one definition of each, flattened into every
//! command that takes it: so each keeps its value out of `--help`
//! (`hide_env_values`) and takes a value that begins with `-` (a token may), and a
//! variable means the same in every command that reads it.
//!
//! The engine's own `--token` (`runlog engine`) is the same secret as
//! `--engine-token` under the name lite-engine's controllers use; it stays with the
//! engine's flags.

/// `--admin-secret`: the log service's admin secret.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminSecret {
    /// The log service's admin secret, which signs its tokens. `runlog service`
    /// generates one and saves it in its data directory when none is given, and
    /// `runlog token` reads it from there; `runlog run` uses it only to put a read
    /// token into the viewer link it prints (never the write token: links end up in
    /// chats and histories).
    #[arg(
        long,
        allow_hyphen_values = true,
        env = "RUNLOG_ADMIN_SECRET",
        hide_env_values = true
    )]
    pub admin_secret: Option<String>,
}

/// `--engine-token`: the token the engine requires.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineToken {
    /// Token of the engine (`Authorization: Bearer …`), when it requires one; the
    /// engine of `runlog serve` needs one to listen beyond loopback.
    #[arg(
        long,
        allow_hyphen_values = true,
        env = "RUNLOG_ENGINE_TOKEN",
        hide_env_values = true
    )]
    pub engine_token: Option<String>,
}

/// `--token`: an account's token for the log service.
#[derive(Debug, Clone, clap::Args)]
pub struct AccountToken {
    /// Account token, sent as `Authorization: Bearer`: read scope is enough to read
    /// (`tail`, `logs`, `ls`); `runlog run --engine` hands the engine a write token
    /// for its log stream.
    #[arg(
        long,
        allow_hyphen_values = true,
        env = "RUNLOG_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}
