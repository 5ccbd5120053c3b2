//! [`ServiceState`]: what every route shares — stores, secret, config, counters.

use crate::body_budget::BodyBudget;
use crate::config::ServiceConfig;
use crate::metrics::Metrics;
use crate::quota::Quotas;
use crate::sections::Sections;
use crate::store::{BlobStore, StreamStore};
use crate::used_links::UsedLinks;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Shared state of one service instance. Cheap to clone.
#[derive(Clone)]
pub struct ServiceState {
    inner: Arc<Inner>,
}

struct Inner {
    streams: Arc<dyn StreamStore>,
    blobs: BlobStore,
    secret: String,
    config: ServiceConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    used_links: UsedLinks,
    sections: Sections,
    quotas: Quotas,
    body_budget: BodyBudget,
}

impl std::fmt::Debug for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceState")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl ServiceState {
    /// State over the given stores; `secret` signs and verifies every token.
    pub fn new(
        config: ServiceConfig,
        streams: Arc<dyn StreamStore>,
        blobs: BlobStore,
        secret: String,
    ) -> Self {
        let quotas = Quotas::new(config.account_limits);
        let sections = Sections::new(streams.section_indexes());
        let body_budget = BodyBudget::new(config.body_budget_bytes(), config.body_budget_wait);
        ServiceState {
            inner: Arc::new(Inner {
                streams,
                blobs,
                secret,
                config,
                metrics: Arc::new(Metrics::default()),
                shutdown: CancellationToken::new(),
                used_links: UsedLinks::default(),
                sections,
                quotas,
                body_budget,
            }),
        }
    }

    /// The live stream store.
    pub fn streams(&self) -> &Arc<dyn StreamStore> {
        &self.inner.streams
    }

    /// The archive store.
    pub fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    /// The admin secret's bytes (HMAC key).
    pub fn secret(&self) -> &[u8] {
        self.inner.secret.as_bytes()
    }

    /// Bytes of request bodies being read, bounded service-wide.
    pub fn body_budget(&self) -> &BodyBudget {
        &self.inner.body_budget
    }

    /// The configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.inner.config
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The self-signed upload links already used.
    pub fn used_links(&self) -> &UsedLinks {
        &self.inner.used_links
    }

    /// The section index and completeness ledger of every stream.
    pub fn sections(&self) -> &Sections {
        &self.inner.sections
    }

    /// The per-account checks of request rate and open tails.
    pub fn quotas(&self) -> &Quotas {
        &self.inner.quotas
    }

    /// Cancelled when the service shuts down: SSE responses end on it.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
}
