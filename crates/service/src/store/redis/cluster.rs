//! Redis Cluster: which node holds a key ([`key_slot`], `CLUSTER SLOTS`), a notifier
//! per node for tails, and commands that must visit every primary.

use super::connection::Conn;
use super::reconnect::{Reconnecting, unavailable};
use crate::store::StoreError;
use crate::store::notify::Notifier;
use redis::{Client, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Where tails wait for their streams' notifications.
pub(super) enum Notify {
    /// One server: one pub/sub connection.
    Single(Notifier),
    /// A cluster: see [`ClusterNotify`].
    Cluster(Box<ClusterNotify>),
}

/// A cluster node's address.
type Node = (String, u16);

/// `(first slot, last slot, primary)` of each slot range.
type SlotTable = Vec<(u16, u16, Node)>;

/// Notifications on a cluster. A `PUBLISH` reaches subscribers on its own node at once,
/// and other nodes through the cluster bus, which delays it by up to ~40 ms under
/// steady traffic (measured outside runlog too: `PUBLISH` every 2 ms on one node,
/// received on another at p50 17 ms). So a tail subscribes on the node that owns its
/// stream's slot — where the append script publishes — with one pub/sub connection per
/// node; when that node is unknown or down, on any node given (`any`).
pub(super) struct ClusterNotify {
    pub(super) any: Notifier,
    /// The first node's connection settings (credentials, TCP), for the other nodes.
    pub(super) template: redis::ConnectionInfo,
    pub(super) certificates: Option<redis::TlsCertificates>,
    /// One notifier per node, created on first use.
    pub(super) nodes: std::sync::Mutex<HashMap<Node, Arc<Notifier>>>,
    /// `(first slot, last slot, node)` from `CLUSTER SLOTS`, fetched when a slot is
    /// missing (a cluster resharded since then still delivers, through `any`'s path).
    pub(super) slots: std::sync::Mutex<SlotTable>,
}

impl ClusterNotify {
    /// The notifier of the node that owns `slot`, if it can be found.
    pub(super) async fn for_slot(
        &self,
        cluster: &redis::cluster_async::ClusterConnection,
        slot: u16,
    ) -> Option<Arc<Notifier>> {
        let find = |slots: &[(u16, u16, Node)]| {
            slots
                .iter()
                .find(|(lo, hi, _)| (*lo..=*hi).contains(&slot))
                .map(|(_, _, node)| node.clone())
        };
        let cached = find(&self.slots.lock().unwrap_or_else(|e| e.into_inner()));
        let node = match cached {
            Some(node) => node,
            None => {
                let table = slot_table(cluster.clone()).await.ok()?;
                let node = find(&table);
                *self.slots.lock().unwrap_or_else(|e| e.into_inner()) = table;
                node?
            }
        };
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(notifier) = nodes.get(&node) {
            return Some(notifier.clone());
        }
        let addr = match self.template.addr() {
            redis::ConnectionAddr::TcpTls { insecure, .. } => redis::ConnectionAddr::TcpTls {
                host: node.0.clone(),
                port: node.1,
                insecure: *insecure,
                tls_params: None,
            },
            _ => redis::ConnectionAddr::Tcp(node.0.clone(), node.1),
        };
        let info = self.template.clone().set_addr(addr);
        let client = match &self.certificates {
            None => Client::open(info),
            Some(certs) => Client::build_with_tls(info, certs.clone()),
        }
        .ok()?;
        let notifier = Arc::new(Notifier::new(vec![client]));
        nodes.insert(node, notifier.clone());
        Some(notifier)
    }
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag — the part between
/// the first `{` and the next `}`, when not empty — or of the whole key, mod 16 384.
pub(super) fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    let mut crc: u16 = 0;
    for &byte in tagged.unwrap_or(key) {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16_384
}

/// `(host, port)` of every primary of a cluster, from `CLUSTER SLOTS`.
pub(super) async fn primaries(
    cluster: redis::cluster_async::ClusterConnection,
) -> Result<Vec<Node>, StoreError> {
    let mut nodes: Vec<Node> = slot_table(cluster)
        .await?
        .into_iter()
        .map(|(_, _, node)| node)
        .collect();
    nodes.sort();
    nodes.dedup();
    Ok(nodes)
}

/// `(first slot, last slot, primary's (host, port))` of every range, from
/// `CLUSTER SLOTS`.
async fn slot_table(
    mut cluster: redis::cluster_async::ClusterConnection,
) -> Result<SlotTable, StoreError> {
    let ranges: Vec<Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut cluster)
        .await
        .map_err(unavailable)?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("CLUSTER SLOTS {what}"));
    let mut table = Vec::new();
    for range in ranges {
        // [start, end, [host, port, id, …], replicas…]: the third entry is the primary.
        let Value::Array(fields) = range else {
            return Err(corrupt("entry"));
        };
        let mut fields = fields.into_iter();
        let (Some(first), Some(last), Some(Value::Array(primary))) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(corrupt("entry"));
        };
        let mut primary = primary.into_iter();
        let (Some(host), Some(port)) = (primary.next(), primary.next()) else {
            return Err(corrupt("address"));
        };
        let first: u16 = redis::from_redis_value(first).map_err(|_| corrupt("slot"))?;
        let last: u16 = redis::from_redis_value(last).map_err(|_| corrupt("slot"))?;
        let host: String = redis::from_redis_value(host).map_err(|_| corrupt("host"))?;
        let port: u16 = redis::from_redis_value(port).map_err(|_| corrupt("port"))?;
        table.push((first, last, (host, port)));
    }
    Ok(table)
}

/// Every key matching `pattern`, sorted, once each. `SCAN`, not `KEYS`: it never
/// blocks Redis for long, however many keys.
pub(super) async fn scan_all(conn: &Conn, pattern: &str) -> Result<Vec<String>, StoreError> {
    let mut keys: Vec<String> = Vec::new();
    // Each node holds the indexes of its own slots: a cluster is scanned node by
    // node (one SCAN cursor belongs to one node).
    let nodes = match conn {
        Conn::Single(_) => vec![None],
        Conn::Cluster(cluster) => primaries(cluster.clone())
            .await?
            .into_iter()
            .map(Some)
            .collect(),
    };
    for node in nodes {
        let mut cursor: u64 = 0;
        loop {
            // SCAN, not KEYS: it never blocks Redis for long, however many accounts.
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, batch): (u64, Vec<String>) = match (conn, &node) {
                (Conn::Cluster(cluster), Some((host, port))) => {
                    let routing = redis::cluster_routing::RoutingInfo::SingleNode(
                        redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        },
                    );
                    let reply = cluster
                        .clone()
                        .route_command(scan, routing)
                        .await
                        .map_err(unavailable)?;
                    redis::from_redis_value(reply)
                        .map_err(|e| StoreError::Corrupt(format!("SCAN reply: {e}")))?
                }
                _ => scan
                    .query_async(&mut Reconnecting(conn.clone()))
                    .await
                    .map_err(unavailable)?,
            };
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::key_slot;

    #[test]
    fn key_slots_are_redis_cluster_slots() {
        // Values from `CLUSTER KEYSLOT` and the cluster specification.
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"somekey"), 11058);
        // The hash tag alone decides: every key of an account shares a slot.
        assert_eq!(
            key_slot(b"runlog:{acc}:s:a/b:ctl"),
            key_slot(b"runlog:{acc}:index")
        );
        assert_eq!(key_slot(b"runlog:{acc}:index"), key_slot(b"acc"));
        // An empty tag hashes the whole key; the first `{` opens the tag.
        assert_eq!(key_slot(b"foo{}{bar}"), 8363);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }
}
