//! [`Reconnecting`]: the shared connection, with one more attempt when a command
//! found it broken or the cluster in motion.

use super::connection::Conn;
use crate::store::StoreError;
use redis::Value;

pub(super) fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis unavailable: {e}"))
}

/// The shared connection, sending a command a second time when the first attempt
/// found the connection broken (on a cluster too, see the failover note below). After a
/// Redis restart the manager only notices the
/// dead socket on the next command; without this, that command (one per replica)
/// would fail although Redis is back. Every command here is safe to repeat: appends
/// are idempotent per `pos`, and the other scripts check state before changing it.
pub(super) struct Reconnecting(pub(super) Conn);

fn is_broken_connection(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// On a cluster, also the answers of a topology in motion (a failover, a slot moved):
/// the client has looked the topology up again when it gives up, so a second attempt
/// goes where the slot is now.
fn is_cluster_in_motion(e: &redis::RedisError) -> bool {
    is_broken_connection(e)
        || matches!(e.code(), Some("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN"))
}

impl redis::aio::ConnectionLike for Reconnecting {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        Box::pin(async move {
            match &mut self.0 {
                Conn::Single(c) => match c.send_packed_command(cmd).await {
                    Err(e) if is_broken_connection(&e) => c.send_packed_command(cmd).await,
                    other => other,
                },
                // The cluster client retries a node itself, but after a failover it
                // retries the failed primary's address until it gives up, and only
                // then looks up who owns the slot now (a node whose view is older may
                // still answer MOVED meanwhile): the second attempt reaches the
                // promoted replica. Without it, the first command after a failover
                // failed (tested).
                Conn::Cluster(c) => match c.req_packed_command(cmd).await {
                    Err(e) if is_cluster_in_motion(&e) => c.req_packed_command(cmd).await,
                    other => other,
                },
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match &mut self.0 {
                Conn::Single(c) => match c.send_packed_commands(cmd, offset, count).await {
                    Err(e) if is_broken_connection(&e) => {
                        c.send_packed_commands(cmd, offset, count).await
                    }
                    other => other,
                },
                Conn::Cluster(c) => match c.req_packed_commands(cmd, offset, count).await {
                    Err(e) if is_cluster_in_motion(&e) => {
                        c.req_packed_commands(cmd, offset, count).await
                    }
                    other => other,
                },
            }
        })
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
