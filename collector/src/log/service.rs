//! The log at run time: the signer key (configured, or generated on first
//! start and kept in the store), the checkpointer task (a signed checkpoint at
//! most every interval, when the tree grew), proofs and tiles read from the
//! store, and the `audit_log_*` metrics.

use super::checkpoint::Checkpoint;
use super::config::LogSettings;
use super::db::{LogDb, StoredCheckpoint};
use super::merkle::{self, Hash, Node};
use super::note::{self, SignerKey, VerifierKey};
use super::tiles::TileSet;
use crate::metrics::Metrics;
use crate::store::{format_time, DynStore, StoreError};
use prometheus::{Gauge, IntGauge};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// Why the log could not answer.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("this store has no verifiable log")]
    NoLog,
    #[error("the signing key: {0}")]
    Key(String),
    #[error("the stored tree is missing a hash ({0})")]
    Incomplete(String),
}

/// The three gauges of SPEC §9.
#[derive(Clone)]
pub struct LogMetrics {
    pub tree_size: IntGauge,
    pub checkpoint_size: IntGauge,
    pub checkpoint_age_seconds: Gauge,
}

impl LogMetrics {
    fn new(metrics: &Metrics) -> Result<Self, prometheus::Error> {
        let m = Self {
            tree_size: IntGauge::new(
                "audit_log_tree_size",
                "Leaves in the verifiable log's Merkle tree (committed events)",
            )?,
            checkpoint_size: IntGauge::new(
                "audit_log_checkpoint_size",
                "Tree size of the newest signed checkpoint",
            )?,
            checkpoint_age_seconds: Gauge::new(
                "audit_log_checkpoint_age_seconds",
                "Seconds since the newest checkpoint was signed",
            )?,
        };
        let registry = metrics.registry();
        registry.register(Box::new(m.tree_size.clone()))?;
        registry.register(Box::new(m.checkpoint_size.clone()))?;
        registry.register(Box::new(m.checkpoint_age_seconds.clone()))?;
        Ok(m)
    }
}

pub struct LogService {
    settings: LogSettings,
    db: Option<LogDb>,
    signer: OnceCell<SignerKey>,
    metrics: Option<LogMetrics>,
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl LogService {
    /// The service over `store`, without the checkpointer (CLI, tests).
    pub fn new(settings: LogSettings, store: &DynStore, metrics: Option<&Metrics>) -> Self {
        let metrics = metrics.and_then(|m| match LogMetrics::new(m) {
            Ok(lm) => Some(lm),
            Err(e) => {
                tracing::warn!(error = %e, "could not register the audit_log_* metrics");
                None
            }
        });
        Self {
            settings,
            db: store.raw_pool().map(LogDb::from_raw),
            signer: OnceCell::new(),
            metrics,
        }
    }

    /// The service with its checkpointer task running (`serve`).
    pub fn start(settings: LogSettings, store: &DynStore, metrics: &Metrics) -> Arc<Self> {
        let service = Arc::new(Self::new(settings, store, Some(metrics)));
        if cfg!(feature = "bench-no-log") {
            tracing::warn!(
                "built with the bench-no-log feature: no Merkle tree, no checkpoints (a benchmark build, never to be deployed)"
            );
        } else {
            tokio::spawn(checkpointer(Arc::downgrade(&service)));
        }
        service
    }

    pub fn db(&self) -> Result<&LogDb, LogError> {
        self.db.as_ref().ok_or(LogError::NoLog)
    }

    pub fn origin(&self) -> &str {
        &self.settings.origin
    }

    /// The signer: configured, or kept in the store (generated there on first use).
    pub async fn signer(&self) -> Result<&SignerKey, LogError> {
        self.signer
            .get_or_try_init(|| async {
                if let Some(key) = &self.settings.signer {
                    return Ok(key.clone());
                }
                let db = self.db()?;
                let origin = &self.settings.origin;
                if db.stored_key(origin).await?.is_none() {
                    let key = note::generate(origin).map_err(|e| LogError::Key(e.to_string()))?;
                    db.keep_key(origin, &key.to_text(), &format_time(chrono::Utc::now()))
                        .await?;
                }
                // Re-read: a replica starting at the same time may have kept its key first.
                let text = db
                    .stored_key(origin)
                    .await?
                    .ok_or_else(|| LogError::Key("the generated key was not kept".to_owned()))?;
                let key = SignerKey::parse(&text).map_err(|e| LogError::Key(e.to_string()))?;
                tracing::warn!(
                    verifier_key = %key.verifier().to_text(),
                    "MESHAUDIT_LOG_SIGNING_KEY is not set: checkpoints are signed with a key kept in the store. \
                     A key kept beside the data it vouches for protects against accidents, not against the \
                     store's administrator: configure a key held elsewhere"
                );
                Ok(key)
            })
            .await
    }

    pub async fn verifier(&self) -> Result<VerifierKey, LogError> {
        Ok(self.signer().await?.verifier())
    }

    /// Signs a checkpoint of the current tree if it grew and the interval
    /// since the newest checkpoint (by any replica) has passed; updates the metrics.
    pub async fn checkpoint_now(&self) -> Result<Option<StoredCheckpoint>, LogError> {
        let db = self.db()?;
        let key = self.signer().await?;
        let size = db.tree_size().await?;
        let latest = db.latest_checkpoint().await?;
        let interval_us = self.settings.checkpoint_interval.as_micros() as i64;
        let due = match &latest {
            None => true,
            Some(cp) => cp.size < size && now_us() - cp.created_us >= interval_us,
        };
        let mut made = None;
        if due {
            let root = self.root_at(size).await?;
            let cp = Checkpoint {
                origin: self.settings.origin.clone(),
                size,
                root,
            };
            let note = cp.sign(key).map_err(|e| LogError::Key(e.to_string()))?;
            let stored = StoredCheckpoint {
                size,
                root,
                note,
                created_us: now_us(),
            };
            db.insert_checkpoint(&stored).await?;
            made = Some(stored);
        }
        if let Some(m) = &self.metrics {
            m.tree_size.set(size as i64);
            if let Some(cp) = made.as_ref().or(latest.as_ref()) {
                m.checkpoint_size.set(cp.size as i64);
                m.checkpoint_age_seconds
                    .set((now_us() - cp.created_us).max(0) as f64 / 1e6);
            }
        }
        Ok(made)
    }

    /// Loads the tile hashes the nodes need.
    async fn tiles_for(&self, nodes: &[Node]) -> Result<TileSet, LogError> {
        let db = self.db()?;
        // Merge the needed ranges per level so each level is one or a few reads.
        let mut per_level: BTreeMap<u8, Vec<(u64, u64)>> = BTreeMap::new();
        for (level, from, to) in TileSet::needs(nodes) {
            per_level.entry(level).or_default().push((from, to));
        }
        let mut set = TileSet::default();
        for (level, mut ranges) in per_level {
            ranges.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::new();
            for (f, t) in ranges {
                match merged.last_mut() {
                    Some(last) if f <= last.1 + 256 => last.1 = last.1.max(t),
                    _ => merged.push((f, t)),
                }
            }
            for (f, t) in merged {
                for (i, h) in db.level_hashes(level, f, t).await? {
                    set.insert(level, i, h);
                }
            }
        }
        Ok(set)
    }

    /// The root of the stored tree at `size`.
    pub async fn root_at(&self, size: u64) -> Result<Hash, LogError> {
        let nodes = merkle::perfect_nodes(0, size);
        let set = self.tiles_for(&nodes).await?;
        merkle::root(&set, size).map_err(|e| LogError::Incomplete(e.to_string()))
    }

    /// The inclusion proof of leaf `index` in the tree of `size`.
    pub async fn inclusion(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        let nodes = nodes_of(&merkle::inclusion_ranges(index, size));
        let set = self.tiles_for(&nodes).await?;
        merkle::inclusion_proof(&set, index, size).map_err(|e| LogError::Incomplete(e.to_string()))
    }

    /// The consistency proof between sizes `from` and `to`.
    pub async fn consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>, LogError> {
        let nodes = nodes_of(&merkle::consistency_ranges(from, to));
        let set = self.tiles_for(&nodes).await?;
        merkle::consistency_proof(&set, from, to).map_err(|e| LogError::Incomplete(e.to_string()))
    }
}

fn nodes_of(ranges: &[(u64, u64)]) -> Vec<Node> {
    ranges
        .iter()
        .flat_map(|(a, b)| merkle::perfect_nodes(*a, *b))
        .collect()
}

/// Signs checkpoints every interval until the service is dropped.
async fn checkpointer(service: std::sync::Weak<LogService>) {
    let interval = match service.upgrade() {
        Some(s) => s.settings.checkpoint_interval,
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let Some(service) = service.upgrade() else {
            return;
        };
        match service.checkpoint_now().await {
            Ok(Some(cp)) => {
                failing = false;
                tracing::debug!(size = cp.size, "signed a checkpoint");
            }
            Ok(None) => failing = false,
            Err(e) => {
                // Once per failure streak, not every tick.
                if !failing {
                    tracing::warn!(error = %e, "could not make a checkpoint; retrying every interval");
                }
                failing = true;
            }
        }
    }
}
