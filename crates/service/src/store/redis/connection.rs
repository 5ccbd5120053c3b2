//! Connections: the URL(s) and TLS settings of a [`RedisConfig`] turned into the
//! one shared command connection ([`Conn`]) and the pub/sub side tails wait on.

use super::RedisConfig;
use super::cluster::{ClusterNotify, Notify};
use crate::store::notify::Notifier;
use redis::Client;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::time::Duration;

/// The connection every command goes through.
#[derive(Clone)]
pub(super) enum Conn {
    /// One Redis server.
    Single(ConnectionManager),
    /// A Redis Cluster: the client routes each command to its key's node and
    /// follows `MOVED`/`ASK` when slots move.
    Cluster(redis::cluster_async::ClusterConnection),
}

/// The command connection and the notifier of a store on `config`. Connects
/// nothing yet: both connect on first use, so a service starts while Redis is down.
pub(super) fn connect(config: &RedisConfig) -> redis::RedisResult<(Conn, Notify)> {
    let certificates = match &config.ca_pem {
        Some(_)
            if !config
                .url
                .split(',')
                .all(|u| u.trim().starts_with("rediss://")) =>
        {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a CA certificate for Redis needs a rediss:// (TLS) URL",
            )));
        }
        Some(ca) => Some(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.clone()),
        }),
        None => None,
    };
    let seeds: Vec<&str> = config
        .url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if seeds.len() > 1 && !config.cluster {
        return Err(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "several Redis URLs are the nodes of a cluster: give one URL, or enable cluster mode",
        )));
    }
    // A client per node given: the first is the store's connection without
    // cluster mode; notifications fall back to any of them (a cluster passes every
    // PUBLISH to every node, so one node hears all of them).
    // TCP_NODELAY on every connection: requests from many tails and writers share
    // one connection per node, and a small command must not wait behind an
    // unacknowledged one (Nagle's algorithm).
    let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
    let infos = seeds
        .iter()
        .map(|url| {
            redis::IntoConnectionInfo::into_connection_info(*url)
                .map(|info| info.set_tcp_settings(tcp.clone()))
        })
        .collect::<redis::RedisResult<Vec<_>>>()?;
    let clients = infos
        .iter()
        .map(|info| match &certificates {
            None => Client::open(info.clone()),
            Some(certs) => Client::build_with_tls(info.clone(), certs.clone()),
        })
        .collect::<redis::RedisResult<Vec<Client>>>()?;
    let (Some(client), Some(template)) = (clients.first().cloned(), infos.first().cloned()) else {
        return Err(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "no Redis URL given",
        )));
    };
    let conn = if config.cluster {
        let mut builder = redis::cluster::ClusterClientBuilder::new(seeds)
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(config.response_timeout)
            // Fail soon while nodes are down (the caller answers 503 and the
            // writer retries), but not before a failover has had its chance:
            // after one, a command may spend two tries on the failed primary's
            // address before a node redirects it to the promoted replica, and
            // with two tries that redirect was left unfollowed (tested).
            .retries(4)
            .max_retry_wait(500)
            .tcp_settings(tcp);
        if let Some(certs) = &certificates {
            builder = builder.certs(certs.clone());
        }
        // Connects in the background: like the single-server connection, the
        // service starts while Redis is down and answers 503 meanwhile.
        Conn::Cluster(
            builder.build()?.get_pending_async_connection_with_config(
                redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(Duration::from_secs(2))
                    .set_response_timeout(config.response_timeout),
            ),
        )
    } else {
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.response_timeout))
            .set_connection_timeout(Some(Duration::from_secs(2)))
            // Fail fast while Redis is down (the caller answers 503 and the writer
            // retries); the manager keeps reconnecting on later calls.
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        Conn::Single(ConnectionManager::new_lazy_with_config(
            client.clone(),
            manager_config,
        )?)
    };
    let notifier = if config.cluster {
        Notify::Cluster(Box::new(ClusterNotify {
            any: Notifier::new(clients),
            template,
            certificates,
            nodes: std::sync::Mutex::new(HashMap::new()),
            slots: std::sync::Mutex::new(Vec::new()),
        }))
    } else {
        Notify::Single(Notifier::new(clients))
    };
    Ok((conn, notifier))
}
