//! The Lua scripts (`scripts/*.lua`), each run atomically inside Redis, and how they
//! are sent ([`LuaScript`]).

use super::reconnect::Reconnecting;
use redis::FromRedisValue;

/// One Lua script, run with `EVALSHA` (the body crosses the network once, not on
/// every call) and loaded again when Redis answers `NOSCRIPT` (after a restart).
pub(super) struct LuaScript {
    src: String,
    sha: std::sync::Mutex<Option<String>>,
}

impl LuaScript {
    fn new(src: String) -> Self {
        LuaScript {
            src,
            sha: std::sync::Mutex::new(None),
        }
    }

    /// Runs the script on `keys`; `args` appends the `ARGV` values to the command.
    ///
    /// By hash (`EVALSHA`) once the hash is known. A node that does not have the script
    /// — a replica promoted by a failover, a restarted node — gets it by source
    /// (`EVAL`, routed by the keys like `EVALSHA`, and cached there by Redis): a
    /// `SCRIPT LOAD` reaches only the nodes the client knows at that moment, which right
    /// after a failover may not include the new primary (tested).
    pub(super) async fn run<T: FromRedisValue>(
        &self,
        conn: &mut Reconnecting,
        keys: &[&str],
        args: impl Fn(&mut redis::Cmd),
    ) -> redis::RedisResult<T> {
        let known = self.sha.lock().ok().and_then(|sha| sha.clone());
        match known {
            Some(sha) => match Self::call(conn, "EVALSHA", &sha, keys, &args).await {
                Err(e) if e.code() == Some("NOSCRIPT") => {
                    Self::call(conn, "EVAL", &self.src, keys, &args).await
                }
                other => other,
            },
            None => {
                let sha: String = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(&self.src)
                    .query_async(conn)
                    .await?;
                if let Ok(mut slot) = self.sha.lock() {
                    *slot = Some(sha);
                }
                Self::call(conn, "EVAL", &self.src, keys, &args).await
            }
        }
    }

    /// `EVALSHA sha` or `EVAL source` on `keys` with the `ARGV` values of `args`.
    async fn call<T: FromRedisValue>(
        conn: &mut Reconnecting,
        verb: &str,
        script: &str,
        keys: &[&str],
        args: &impl Fn(&mut redis::Cmd),
    ) -> redis::RedisResult<T> {
        let mut cmd = redis::cmd(verb);
        cmd.arg(script).arg(keys.len()).arg(keys);
        args(&mut cmd);
        cmd.query_async(conn).await
    }
}

/// The Lua scripts; each runs atomically inside Redis.
pub(super) struct Scripts {
    pub(super) open: LuaScript,
    pub(super) append: LuaScript,
    pub(super) read: LuaScript,
    pub(super) close: LuaScript,
    pub(super) remove: LuaScript,
    pub(super) remove_if_unchanged: LuaScript,
    pub(super) trim: LuaScript,
    pub(super) unlock: LuaScript,
    pub(super) index_lock: LuaScript,
    pub(super) index_commit: LuaScript,
    pub(super) index_advance: LuaScript,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            open: LuaScript::new(format!("{TOUCH}{OPEN}")),
            append: LuaScript::new(format!("{TOUCH}{HAS}{APPEND}")),
            read: LuaScript::new(READ.to_owned()),
            close: LuaScript::new(format!("{TOUCH}{CLOSE}")),
            remove: LuaScript::new(format!("{FORGET}{REMOVE}")),
            remove_if_unchanged: LuaScript::new(format!("{FORGET}{REMOVE_IF_UNCHANGED}")),
            trim: LuaScript::new(TRIM.to_owned()),
            unlock: LuaScript::new(UNLOCK.to_owned()),
            index_lock: LuaScript::new(INDEX_LOCK.to_owned()),
            index_commit: LuaScript::new(INDEX_COMMIT.to_owned()),
            index_advance: LuaScript::new(INDEX_ADVANCE.to_owned()),
        }
    }
}

/// Defines `touch()`: refreshes the TTL of every key of a stream and its place in the
/// account index. Prefixed to the scripts that open, append to or close a stream.
const TOUCH: &str = include_str!("scripts/touch.lua");
/// Defines `has(pos)`: whether a `pos` is stored. Prefixed to the append script.
const HAS: &str = include_str!("scripts/has.lua");
const OPEN: &str = include_str!("scripts/open.lua");
const APPEND: &str = include_str!("scripts/append.lua");
const READ: &str = include_str!("scripts/read.lua");
const CLOSE: &str = include_str!("scripts/close.lua");
/// Defines `forget(key)`: removes a stream and gives back what it held. Prefixed to
/// the scripts that remove a stream.
const FORGET: &str = include_str!("scripts/forget.lua");
const REMOVE: &str = include_str!("scripts/remove.lua");
const REMOVE_IF_UNCHANGED: &str = include_str!("scripts/remove_if_unchanged.lua");
const TRIM: &str = include_str!("scripts/trim.lua");
const UNLOCK: &str = include_str!("scripts/unlock.lua");
const INDEX_LOCK: &str = include_str!("scripts/index_lock.lua");
const INDEX_COMMIT: &str = include_str!("scripts/index_commit.lua");
const INDEX_ADVANCE: &str = include_str!("scripts/index_advance.lua");
