//! Whole-store verification, shared by `GET /v1/verify` and the `verify`
//! command.
//!
//! The rows are walked in `seq` order from the oldest one present (genesis,
//! or the retention anchor just below it) up to the recorded head, whose
//! `seq` *and* chain hash must be where the rows end. Each retention anchor
//! the walk crosses must match the rows' own link.
//!
//! A `retention_log` row alone proves nothing: anyone who can write the
//! database can insert one and then delete every event below it. An anchor
//! counts as proven only when its archive is present and its SHA-256 and the
//! chain inside it match ([`crate::retain::check_archive`]). Otherwise it is
//! reported as unproven and the report is not `ok`, unless the caller
//! explicitly accepts unproven anchors.

use crate::chain::{ChainBreak, ChainHead, ChainRow, ChainVerifier};
use crate::retain::{check_archive, ArchiveCheck, RetainError};
use crate::store::{EventStore, RetentionAnchor, StoreError};
use serde::Serialize;
use std::collections::HashSet;
use std::path::PathBuf;

/// Rows read per page.
pub const PAGE: i64 = 1000;

/// How to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Where the archives written by `retain` are: anchors are proven from them.
    pub archive_dir: Option<PathBuf>,
    /// Report unproven anchors as `accepted` instead of failing.
    pub accept_unproven_anchor: bool,
    /// Resume after this already verified link instead of walking from the
    /// oldest row (incremental verification; see [`VerifyCache`]).
    pub resume_from: Option<ChainHead>,
}

/// Where an anchor stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnchorStatus {
    /// Its archive is present, with the recorded SHA-256 and an intact chain up to the anchor.
    Proven,
    /// Its archive was not checked or not found: the row alone proves nothing.
    Unproven,
    /// Unproven, but the caller said to accept it.
    Accepted,
    /// Its archive contradicts it (wrong hash, broken chain, bad name).
    Broken,
}

/// One retention anchor in the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AnchorReport {
    pub first_kept_seq: i64,
    pub prev_chain_hash: String,
    pub archive_name: String,
    pub archive_sha256: String,
    pub status: AnchorStatus,
    /// Why it is not proven (for a person).
    pub detail: Option<String>,
}

/// `GET /v1/verify`'s answer (SPEC §7, plus `anchors` and `from_seq`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VerifyReport {
    pub ok: bool,
    /// Rows checked by this run.
    pub checked: u64,
    pub first_bad_seq: Option<i64>,
    pub reason: Option<String>,
    /// The last link verified.
    pub head: ChainHead,
    /// Every retention anchor, oldest first, with its proof status.
    pub anchors: Vec<AnchorReport>,
    /// The walk started after this `seq` (0: from genesis or the oldest anchor
    /// below the rows; more when resumed from an earlier verification).
    pub from_seq: i64,
    /// No break in the rows themselves (anchors and archives aside): the
    /// head may serve as the next run's resume point.
    #[serde(skip)]
    pub rows_intact: bool,
}

impl VerifyReport {
    /// The anchors that are neither proven nor accepted.
    pub fn unproven(&self) -> impl Iterator<Item = &AnchorReport> {
        self.anchors
            .iter()
            .filter(|a| a.status == AnchorStatus::Unproven)
    }
}

/// Why verification could not run.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Archive(#[from] RetainError),
}

/// What the verify endpoint remembers between calls: the last link verified
/// (so the next call only walks newer rows) and the anchors already proven.
#[derive(Debug, Default)]
pub struct VerifyCache {
    pub watermark: Option<ChainHead>,
    pub proven: HashSet<(i64, String)>,
}

/// Checks the anchors, then walks the rows; `progress(checked)` after each page.
pub async fn verify_store(
    store: &dyn EventStore,
    options: &VerifyOptions,
    progress: impl FnMut(u64),
) -> Result<VerifyReport, VerifyError> {
    verify_store_cached(store, options, &mut VerifyCache::default(), progress).await
}

/// [`verify_store`] with a cache of proven anchors, updated in place (the
/// watermark is the caller's to keep: see `http::read`).
pub async fn verify_store_cached(
    store: &dyn EventStore,
    options: &VerifyOptions,
    cache: &mut VerifyCache,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, VerifyError> {
    let recorded_head = store.head().await?;
    let log = store.retention_log().await?;
    let (anchors, archive_break) = prove_anchors(&log, options, cache).await?;

    // Where the walk starts: after the resume point when it is still on the
    // kept rows, else after the newest anchor below the oldest row present.
    let oldest = store.scan(0, 1).await?.first().map(|r| r.seq);
    let newest_anchor = log.last().map(RetentionAnchor::as_head);
    let start = match (&options.resume_from, &newest_anchor) {
        (Some(w), Some(a)) if w.seq >= a.seq => Some(w.clone()),
        (Some(w), None) => Some(w.clone()),
        _ => None,
    }
    .unwrap_or_else(|| start_below(&log, oldest));
    let from_seq = start.seq;

    // The chain hash the rows give at the recorded head's seq.
    let mut at_recorded = (start.seq == recorded_head.seq).then(|| start.chain_hash.clone());
    let mut verifier = ChainVerifier::new(start);
    let mut after = from_seq;
    let row_break = 'pages: loop {
        let rows = store.scan(after, PAGE).await?;
        if rows.is_empty() {
            break None;
        }
        for row in &rows {
            if let Some(a) = log.iter().find(|a| a.first_kept_seq == row.seq) {
                let link = a.as_head();
                if verifier.head().seq == link.seq && verifier.head() != &link {
                    break 'pages Some(ChainBreak {
                        seq: row.seq,
                        reason: "anchor_mismatch".to_owned(),
                    });
                }
                // Rows left by an interrupted retain end below the anchor
                // (removal goes highest first); its archive covers the gap.
                if verifier.head().seq < link.seq {
                    verifier.jump_to(link);
                }
            }
            let r = ChainRow {
                seq: row.seq,
                id: &row.id,
                event_hash: &row.event_hash,
                chain_hash: &row.chain_hash,
                canonical: row.canonical.as_bytes(),
                index: Some(&row.index),
            };
            if let Err(b) = verifier.feed(&r) {
                break 'pages Some(b);
            }
            if row.seq == recorded_head.seq {
                at_recorded = Some(row.chain_hash.clone());
            }
            after = row.seq;
        }
        progress(verifier.checked());
        if rows.len() < PAGE as usize {
            break None;
        }
    };
    // Every row was below the newest anchor (an interrupted retain of
    // everything, or the store emptied by retain): its archive covers the rest.
    if row_break.is_none() {
        if let Some(link) = &newest_anchor {
            if verifier.head().seq < link.seq {
                verifier.jump_to(link.clone());
                if link.seq == recorded_head.seq {
                    at_recorded = Some(link.chain_hash.clone());
                }
            }
        }
    }
    // Appends may have committed while the rows were read: the head read now
    // is at or past every row seen, unless rows were added behind its back.
    let head_after = store.head().await?;
    let row_break = row_break.or_else(|| {
        head_break(
            verifier.head(),
            at_recorded.as_deref(),
            &recorded_head,
            &head_after,
        )
    });
    let rows_intact = row_break.is_none();
    // A break in the rows or an archive that contradicts its anchor: the lowest seq wins.
    let broken = match (row_break, archive_break) {
        (Some(a), Some(b)) => Some(if b.seq < a.seq { b } else { a }),
        (a, b) => a.or(b),
    };
    let unproven = anchors
        .iter()
        .enumerate()
        .find(|(_, a)| a.status == AnchorStatus::Unproven)
        .map(|(i, _)| ChainBreak {
            seq: i
                .checked_sub(1)
                .map(|p| anchors[p].first_kept_seq)
                .unwrap_or(1),
            reason: "unproven_anchor".to_owned(),
        });
    let failure = broken.or(unproven);
    Ok(VerifyReport {
        ok: failure.is_none(),
        checked: verifier.checked(),
        first_bad_seq: failure.as_ref().map(|b| b.seq),
        reason: failure.map(|b| b.reason),
        head: verifier.head().clone(),
        anchors,
        from_seq,
        rows_intact,
    })
}

/// The link before the oldest row present: the newest anchor at or below it,
/// or genesis.
fn start_below(log: &[RetentionAnchor], oldest: Option<i64>) -> ChainHead {
    log.iter()
        .rev()
        .map(RetentionAnchor::as_head)
        .find(|h| oldest.is_none_or(|s| h.seq < s))
        .unwrap_or_else(ChainHead::genesis)
}

/// After the last row. `recorded` was read before the walk: its rows were
/// committed, so the walk must reach it and pass through its chain hash
/// (`at_recorded`). `after` was read after the walk: no row may lie beyond it,
/// and where the walk ends on it, the hashes must agree.
fn head_break(
    last: &ChainHead,
    at_recorded: Option<&str>,
    recorded: &ChainHead,
    after: &ChainHead,
) -> Option<ChainBreak> {
    let fail = |seq: i64, reason: &str| {
        Some(ChainBreak {
            seq,
            reason: reason.to_owned(),
        })
    };
    if recorded.seq > last.seq {
        fail(last.seq + 1, "missing_event")
    } else if at_recorded != Some(recorded.chain_hash.as_str()) {
        // A head whose hash is not the rows' (or an anchor or resume point beyond it).
        fail(
            recorded.seq.max(0) + i64::from(at_recorded.is_none()),
            "head_mismatch",
        )
    } else if last.seq > after.seq {
        fail(after.seq + 1, "rows_beyond_head")
    } else if last.seq == after.seq && last.chain_hash != after.chain_hash {
        fail(after.seq, "head_mismatch")
    } else {
        None
    }
}

/// Each anchor's proof status, and the first archive that contradicts its anchor.
async fn prove_anchors(
    log: &[RetentionAnchor],
    options: &VerifyOptions,
    cache: &mut VerifyCache,
) -> Result<(Vec<AnchorReport>, Option<ChainBreak>), VerifyError> {
    let mut reports = Vec::with_capacity(log.len());
    let mut first_break = None;
    let mut prev = ChainHead::genesis();
    for anchor in log {
        let key = (anchor.first_kept_seq, anchor.archive_sha256.clone());
        let (status, detail) = if cache.proven.contains(&key) {
            (AnchorStatus::Proven, None)
        } else if let Some(dir) = &options.archive_dir {
            let (dir2, prev2, anchor2) = (dir.clone(), prev.clone(), anchor.clone());
            let checked =
                tokio::task::spawn_blocking(move || check_archive(&dir2, &prev2, &anchor2))
                    .await
                    .map_err(|e| RetainError::Io {
                        path: dir.clone(),
                        source: std::io::Error::other(e),
                    })??;
            match checked {
                ArchiveCheck::Proven => {
                    cache.proven.insert(key);
                    (AnchorStatus::Proven, None)
                }
                ArchiveCheck::Missing => (
                    AnchorStatus::Unproven,
                    Some(format!(
                        "archive {} not found in {}",
                        anchor.archive_name,
                        dir.display()
                    )),
                ),
                ArchiveCheck::Broken { seq, reason } => {
                    let detail = format!("archive {}: {reason} at seq {seq}", anchor.archive_name);
                    first_break.get_or_insert(ChainBreak { seq, reason });
                    (AnchorStatus::Broken, Some(detail))
                }
            }
        } else {
            (
                AnchorStatus::Unproven,
                Some("archive not checked (no archive directory given)".to_owned()),
            )
        };
        let status = match status {
            AnchorStatus::Unproven if options.accept_unproven_anchor => AnchorStatus::Accepted,
            s => s,
        };
        reports.push(AnchorReport {
            first_kept_seq: anchor.first_kept_seq,
            prev_chain_hash: anchor.prev_chain_hash.clone(),
            archive_name: anchor.archive_name.clone(),
            archive_sha256: anchor.archive_sha256.clone(),
            status,
            detail,
        });
        prev = anchor.as_head();
    }
    Ok((reports, first_break))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(seq: i64, hash: &str) -> ChainHead {
        ChainHead {
            seq,
            chain_hash: hash.to_owned(),
        }
    }

    fn anchor(first_kept_seq: i64) -> RetentionAnchor {
        RetentionAnchor {
            first_kept_seq,
            prev_chain_hash: format!("h{}", first_kept_seq - 1),
            archive_sha256: String::new(),
            archive_name: String::new(),
            removed: 0,
            created_at: String::new(),
        }
    }

    fn brk(b: Option<ChainBreak>) -> Option<(i64, String)> {
        b.map(|b| (b.seq, b.reason))
    }

    #[test]
    fn the_head_hash_counts_not_only_its_seq() {
        let (a5, b5) = (h(5, "a"), h(5, "b"));
        assert_eq!(head_break(&a5, Some("a"), &a5, &a5), None);
        // Appends committed during the walk are fine.
        assert_eq!(head_break(&h(6, "c"), Some("a"), &a5, &h(6, "c")), None);
        assert_eq!(head_break(&a5, Some("a"), &a5, &h(9, "z")), None);
        assert_eq!(
            brk(head_break(&a5, Some("a"), &b5, &b5)),
            Some((5, "head_mismatch".to_owned()))
        );
        assert_eq!(
            brk(head_break(&a5, Some("a"), &h(7, "b"), &h(7, "b"))),
            Some((6, "missing_event".to_owned()))
        );
        // Rows behind the head's back (the head rolled back, or rows added).
        assert_eq!(
            brk(head_break(&a5, Some("x"), &h(3, "x"), &h(3, "x"))),
            Some((4, "rows_beyond_head".to_owned()))
        );
        // A start (anchor or resume point) beyond the head.
        assert_eq!(
            brk(head_break(&a5, None, &h(3, "x"), &h(3, "x"))),
            Some((4, "head_mismatch".to_owned()))
        );
    }

    #[test]
    fn the_walk_starts_below_the_oldest_row() {
        let log = [anchor(10), anchor(20)];
        assert_eq!(start_below(&log, None).seq, 19);
        assert_eq!(start_below(&log, Some(25)).seq, 19);
        // An interrupted retain left rows below the newest anchor.
        assert_eq!(start_below(&log, Some(15)).seq, 9);
        assert_eq!(start_below(&log, Some(3)).seq, 0);
    }
}
