//! The verifiable log (SPEC §9): an RFC 9162 Merkle tree over the stored
//! events in `seq` order, signed C2SP checkpoints, C2SP tiles and proofs.
//!
//! - [`merkle`]: hashing, proofs and their verification (pure).
//! - [`tiles`]: tile paths, tile arithmetic and how the tree grows (pure).
//! - [`note`]: C2SP signed notes with Ed25519 and the Go `note` key texts (pure).
//! - [`checkpoint`]: C2SP checkpoint bodies, signed and verified (pure).
//! - [`db`]: the tree's tables: the read side and the checkpoint writer.
//! - [`grow`]: the tree grown inside the writer's transaction (both backends).
//! - [`config`]: `MESHAUDIT_LOG_ORIGIN`, `MESHAUDIT_LOG_SIGNING_KEY`, `MESHAUDIT_CHECKPOINT_INTERVAL_MS`.
//! - [`cli`]: `log-keygen`, `verify-offline`, `verify --checkpoint`.
//! - [`service`]: the signer key, the checkpointer, proofs from the stored tiles, metrics.

pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod db;
pub mod grow;
pub mod merkle;
pub mod note;
pub mod service;
pub mod tiles;
