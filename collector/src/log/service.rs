//! The log at run time: the signer key (configured, or generated on first
//! start and kept in the store), the checkpointer task (a signed checkpoint at
//! most every interval, when the tree grew), proofs and tiles read from the
//! store, and the `audit_log_*` metrics.

use super::checkpoint::Checkpoint;
use super::config::LogSettings;
use super::db::{LogDb, StoredCheckpoint};
use super::merkle::{self, Hash, Node};
use super::note::{self, SignerKey, VerifierKey};
use super::tiles::{StoredTile, TileSet, TILE_WIDTH};
use crate::metrics::Metrics;
use crate::store::{format_time, DynStore, StoreError};
use prometheus::{Gauge, IntGauge};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
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
    /// The newest checkpoint as last read or signed here, and when that was.
    latest: Mutex<Option<(Instant, StoredCheckpoint)>>,
    tiles: TileCache,
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
            latest: Mutex::new(None),
            tiles: TileCache::default(),
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

    /// The newest checkpoint, as this replica last read or signed it: the
    /// checkpointer refreshes it every interval (and sets it when it signs),
    /// so with other replicas signing it may be up to two intervals old; read
    /// from the store when it is older than that (no checkpointer running).
    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, LogError> {
        let fresh_for = self.settings.checkpoint_interval * 2;
        if let Ok(l) = self.latest.lock() {
            if let Some((_, cp)) = l.as_ref().filter(|(at, _)| at.elapsed() < fresh_for) {
                return Ok(Some(cp.clone()));
            }
        }
        self.latest_from_store().await
    }

    /// The newest checkpoint read from the store now (and remembered).
    pub async fn latest_from_store(&self) -> Result<Option<StoredCheckpoint>, LogError> {
        let cp = self.db()?.latest_checkpoint().await?;
        if let Some(cp) = &cp {
            self.remember(cp);
        }
        Ok(cp)
    }

    /// Remembers `cp` as the newest checkpoint unless a larger one is known.
    fn remember(&self, cp: &StoredCheckpoint) {
        if let Ok(mut l) = self.latest.lock() {
            if l.as_ref().is_none_or(|(_, known)| known.size <= cp.size) {
                *l = Some((Instant::now(), cp.clone()));
            }
        }
    }

    /// Signs a checkpoint of the current tree if it grew and the interval
    /// since the newest checkpoint (by any replica) has passed; updates the metrics.
    pub async fn checkpoint_now(&self) -> Result<Option<StoredCheckpoint>, LogError> {
        let db = self.db()?;
        let key = self.signer().await?;
        let size = db.tree_size().await?;
        self.tiles.saw_size(size);
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
        if let Some(cp) = made.as_ref().or(latest.as_ref()) {
            self.remember(cp);
        }
        if let Some(m) = &self.metrics {
            m.tree_size.set(size as i64);
            if let Some(cp) = made.as_ref().or(latest.as_ref()) {
                m.checkpoint_size.set(cp.size as i64);
                self.age_metric();
            }
        }
        Ok(made)
    }

    /// Sets `audit_log_checkpoint_age_seconds` from the newest checkpoint
    /// known here; the checkpointer also calls it when it fails, so the age
    /// keeps growing (and its alert fires) while no checkpoint can be made.
    fn age_metric(&self) {
        let newest = self
            .latest
            .lock()
            .ok()
            .and_then(|l| l.as_ref().map(|(_, cp)| cp.created_us));
        if let (Some(m), Some(newest)) = (&self.metrics, newest) {
            m.checkpoint_age_seconds
                .set((now_us() - newest).max(0) as f64 / 1e6);
        }
    }

    /// Loads the tiles the nodes need. With `cached`, tiles read before are
    /// taken from memory and only what they lack is read (stored hashes are
    /// never rewritten); the reads, whatever is left of them, are one statement.
    async fn tiles_for(&self, nodes: &[Node], cached: bool) -> Result<TileSet, LogError> {
        let db = self.db()?;
        let mut set = TileSet::default();
        // (level, tile, what is already known of it), and the ranges to read.
        let mut partial: Vec<(u8, u64, StoredTile)> = Vec::new();
        let mut reads = Vec::new();
        for ((level, tile), width) in TileSet::tiles_needed(nodes) {
            let known = if cached {
                self.tiles.get(level, tile)
            } else {
                None
            };
            let known = known.unwrap_or_default();
            let first = tile * TILE_WIDTH;
            if known.len() as u64 >= width {
                set.insert_tile(level, tile, known);
            } else {
                reads.push((level, first + known.len() as u64, first + TILE_WIDTH));
                partial.push((level, tile, known));
            }
        }
        if reads.is_empty() {
            return Ok(set);
        }
        let mut runs: HashMap<(u8, u64), Vec<Hash>> = db
            .load_ranges(&reads)
            .await?
            .into_iter()
            .map(|(level, first, hashes)| ((level, first), hashes))
            .collect();
        for ((level, tile, known), (_, from, _)) in partial.into_iter().zip(reads) {
            // What was known, and what follows it without a gap.
            let more = runs.remove(&(level, from)).unwrap_or_default();
            let mut hashes = Vec::with_capacity(known.len() + more.len());
            hashes.extend_from_slice(&known);
            hashes.extend(more);
            let hashes = Arc::new(hashes);
            if cached && hashes.len() > known.len() {
                self.tiles.keep(level, tile, hashes.clone());
            }
            set.insert_tile(level, tile, hashes);
        }
        Ok(set)
    }

    /// The root of the stored tree at `size`, from the store itself (never
    /// from memory: this is what checkpoints sign and `verify` compares).
    pub async fn root_at(&self, size: u64) -> Result<Hash, LogError> {
        let nodes = merkle::perfect_nodes(0, size);
        let set = self.tiles_for(&nodes, false).await?;
        merkle::root(&set, size).map_err(|e| LogError::Incomplete(e.to_string()))
    }

    /// The record hash of leaf `index` and its inclusion proof in the tree of `size`.
    pub async fn inclusion(&self, index: u64, size: u64) -> Result<(Hash, Vec<Hash>), LogError> {
        let mut nodes = nodes_of(&merkle::inclusion_ranges(index, size));
        nodes.push(Node { height: 0, index });
        let set = self.tiles_for(&nodes, true).await?;
        let record = set
            .record(index)
            .ok_or_else(|| LogError::Incomplete(format!("entry {index}")))?;
        let proof = merkle::inclusion_proof(&set, index, size)
            .map_err(|e| LogError::Incomplete(e.to_string()))?;
        Ok((record, proof))
    }

    /// The consistency proof between sizes `from` and `to`.
    pub async fn consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>, LogError> {
        let nodes = nodes_of(&merkle::consistency_ranges(from, to));
        let set = self.tiles_for(&nodes, true).await?;
        merkle::consistency_proof(&set, from, to).map_err(|e| LogError::Incomplete(e.to_string()))
    }
}

/// Tiles read for proofs, kept in memory: stored tree hashes are never
/// rewritten, and the tiles near the root and at the right edge are in nearly
/// every proof. A tile that grew is read from where it was left.
#[derive(Default)]
struct TileCache {
    tiles: Mutex<HashMap<(u8, u64), StoredTile>>,
    /// The largest tree size the checkpointer saw.
    seen_size: AtomicU64,
}

/// How many tiles the cache keeps (at most 8 KiB each).
const CACHED_TILES: usize = 1024;

impl TileCache {
    fn get(&self, level: u8, tile: u64) -> Option<StoredTile> {
        self.tiles.lock().ok()?.get(&(level, tile)).cloned()
    }

    fn keep(&self, level: u8, tile: u64, hashes: StoredTile) {
        if let Ok(mut map) = self.tiles.lock() {
            if map.len() >= CACHED_TILES && !map.contains_key(&(level, tile)) {
                // Make room: a level-0 tile first (one per leaf region, rarely shared).
                let victim = map
                    .keys()
                    .find(|(l, _)| *l == 0)
                    .or_else(|| map.keys().next())
                    .copied();
                if let Some(v) = victim {
                    map.remove(&v);
                }
            }
            let longer = map
                .get(&(level, tile))
                .is_none_or(|k| k.len() < hashes.len());
            if longer {
                map.insert((level, tile), hashes);
            }
        }
    }

    /// Forgets every tile when the stored tree has shrunk (a store restored
    /// under a running collector): what was read may no longer be stored.
    fn saw_size(&self, size: u64) {
        if self.seen_size.fetch_max(size, Ordering::Relaxed) > size {
            if let Ok(mut map) = self.tiles.lock() {
                map.clear();
            }
            self.seen_size.store(size, Ordering::Relaxed);
        }
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
                service.age_metric();
                // Once per failure streak, not every tick.
                if !failing {
                    tracing::warn!(error = %e, "could not make a checkpoint; retrying every interval");
                }
                failing = true;
            }
        }
    }
}
