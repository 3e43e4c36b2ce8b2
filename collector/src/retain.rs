//! Retention (`retain --before DATE --archive DIR`): the only way rows leave
//! the store. Events received before the cutoff are checked against the chain,
//! written to a gzip-compressed NDJSON archive (each line the row with its
//! `seq`, hashes and the event) and fsynced; then an anchor is appended to
//! `retention_log`: the first kept `seq`, the chain hash before it and the
//! archive's SHA-256. The rows below the anchor
//! are then deleted in bounded chunks, each its own short transaction without
//! the append lock, so ingest keeps being served (an interrupted removal is
//! finished by the next run). `verify` proves each anchor from its archive.

use crate::chain::{ChainHead, ChainRow, ChainVerifier};
use crate::store::limits::RETAIN_PATIENCE;
use crate::store::{format_time, EventStore, RetentionAnchor, StoreError, StoredEvent};
use crate::verify::PAGE;
use chrono::{DateTime, NaiveDate, Utc};
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RetainError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("archive {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the chain is broken at seq {seq} ({reason}); run verify, nothing was removed")]
    Broken { seq: i64, reason: String },
    #[error("--before: expected RFC 3339 or YYYY-MM-DD, got {0:?}")]
    BadDate(String),
    #[error("{0}: expected a whole number with s, m, h or d (e.g. 24h), got {1:?}")]
    BadSpan(&'static str, String),
    #[error(
        "--before {cutoff} is later than now minus the minimum age ({latest}): refusing to remove \
         events that young; pass an earlier date, a smaller --min-age, or --force"
    )]
    TooRecent { cutoff: String, latest: String },
}

/// What `retain` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetainOutcome {
    Nothing,
    Removed {
        anchor: RetentionAnchor,
        archive: PathBuf,
    },
}

/// One archive line.
#[derive(Serialize, Deserialize)]
pub struct ArchivedRow {
    pub seq: i64,
    pub id: String,
    pub received_at: String,
    pub verified: Option<bool>,
    pub verify_reason: Option<String>,
    pub event_hash: String,
    pub chain_hash: String,
    pub event: Box<RawValue>,
}

/// `--before`: RFC 3339, or a date meaning midnight UTC.
pub fn parse_cutoff(s: &str) -> Result<DateTime<Utc>, RetainError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| RetainError::BadDate(s.to_owned()))
}

/// `--min-age`: a whole number followed by `s`, `m`, `h` or `d`.
pub fn parse_age(s: &str) -> Result<chrono::Duration, RetainError> {
    parse_span("--min-age", s)
}

/// `--patience`: as `--min-age`, at most a day.
pub fn parse_patience(s: &str) -> Result<Duration, RetainError> {
    parse_span("--patience", s)?
        .to_std()
        .ok()
        .filter(|d| *d <= Duration::from_secs(86_400))
        .ok_or_else(|| RetainError::BadSpan("--patience", s.to_owned()))
}

/// A whole number followed by `s`, `m`, `h` or `d`, for the option `flag`.
fn parse_span(flag: &'static str, s: &str) -> Result<chrono::Duration, RetainError> {
    let t = s.trim();
    let bad = || RetainError::BadSpan(flag, s.to_owned());
    let unit = t.chars().last().ok_or_else(bad)?;
    let n: i64 = t[..t.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    if n < 0 {
        return Err(bad());
    }
    let secs = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3600),
        'd' => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(bad)?;
    chrono::Duration::try_seconds(secs).ok_or_else(bad)
}

/// Refuses a cutoff later than `now - min_age` (unless the caller forces it).
pub fn check_cutoff(
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
    min_age: chrono::Duration,
) -> Result<(), RetainError> {
    let latest = now - min_age;
    if cutoff > latest {
        return Err(RetainError::TooRecent {
            cutoff: format_time(cutoff),
            latest: format_time(latest),
        });
    }
    Ok(())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RetainError + '_ {
    move |source| RetainError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Archives and removes every event received before `cutoff`, waiting up
/// to [`RETAIN_PATIENCE`] for a busy database at each step.
pub async fn retain(
    store: &dyn EventStore,
    cutoff: DateTime<Utc>,
    dir: &Path,
    now: DateTime<Utc>,
) -> Result<RetainOutcome, RetainError> {
    retain_with_patience(store, cutoff, dir, now, RETAIN_PATIENCE).await
}

/// [`retain`], trying each write step again for up to `patience` while the
/// database answers busy, locked or not in time (ingest holds the write
/// lock on SQLite); a step refused for any other reason is not repeated.
pub async fn retain_with_patience(
    store: &dyn EventStore,
    cutoff: DateTime<Utc>,
    dir: &Path,
    now: DateTime<Utc>,
    patience: Duration,
) -> Result<RetainOutcome, RetainError> {
    let newest = store.retention_anchor().await?;
    if let Some(a) = &newest {
        // An earlier run recorded its anchor but was stopped while removing
        // the rows below it (they go in chunks): finish that first.
        if store
            .scan(0, 1)
            .await?
            .first()
            .is_some_and(|r| r.seq < a.first_kept_seq)
        {
            store.finish_removal(a.first_kept_seq, patience).await?;
        }
    }
    let first_kept = store.first_seq_received_from(cutoff).await?;
    let anchor = match newest {
        Some(a) => a.as_head(),
        None => ChainHead::genesis(),
    };
    if first_kept <= anchor.seq + 1 {
        return Ok(RetainOutcome::Nothing);
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let name = format!(
        "meshaudit-events-{:012}-{:012}.ndjson.gz",
        anchor.seq + 1,
        first_kept - 1
    );
    let final_path = dir.join(&name);
    let tmp_path = dir.join(format!(".{name}.tmp"));
    let file = std::fs::File::create(&tmp_path).map_err(io_err(&tmp_path))?;
    let mut gz = GzEncoder::new(
        std::io::BufWriter::new(file),
        flate2::Compression::default(),
    );

    let mut after = anchor.seq;
    let mut verifier = ChainVerifier::new(anchor);
    'pages: loop {
        let rows = store.scan(after, PAGE).await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            if row.seq >= first_kept {
                break 'pages;
            }
            feed(&mut verifier, &row)?;
            after = row.seq;
            let line = archived(row).map_err(|e| RetainError::Io {
                path: tmp_path.clone(),
                source: std::io::Error::other(e),
            })?;
            gz.write_all(line.as_bytes()).map_err(io_err(&tmp_path))?;
            gz.write_all(b"\n").map_err(io_err(&tmp_path))?;
        }
    }
    if verifier.head().seq != first_kept - 1 {
        let _ = std::fs::remove_file(&tmp_path);
        return Err(RetainError::Broken {
            seq: verifier.head().seq + 1,
            reason: "missing_event".to_owned(),
        });
    }
    let writer = gz.finish().map_err(io_err(&tmp_path))?;
    let file = writer
        .into_inner()
        .map_err(|e| io_err(&tmp_path)(e.into_error()))?;
    file.sync_all().map_err(io_err(&tmp_path))?;
    drop(file);
    std::fs::rename(&tmp_path, &final_path).map_err(io_err(&final_path))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    let archive_sha256 = sha256_file(&final_path)?;
    let anchor = RetentionAnchor {
        first_kept_seq: first_kept,
        prev_chain_hash: verifier.head().chain_hash.clone(),
        archive_sha256,
        archive_name: name,
        removed: verifier.checked() as i64,
        created_at: format_time(now),
    };
    store.remove_before(&anchor, patience).await?;
    Ok(RetainOutcome::Removed {
        anchor,
        archive: final_path,
    })
}

fn feed(verifier: &mut ChainVerifier, row: &StoredEvent) -> Result<(), RetainError> {
    verifier
        .feed(&ChainRow {
            seq: row.seq,
            id: &row.id,
            event_hash: &row.event_hash,
            chain_hash: &row.chain_hash,
            canonical: row.canonical.as_bytes(),
            index: Some(&row.index),
        })
        .map_err(|b| RetainError::Broken {
            seq: b.seq,
            reason: b.reason,
        })
}

fn archived(row: StoredEvent) -> Result<String, serde_json::Error> {
    serde_json::to_string(&ArchivedRow {
        seq: row.seq,
        id: row.id,
        received_at: row.received_at,
        verified: row.verified,
        verify_reason: row.verify_reason,
        event_hash: row.event_hash,
        chain_hash: row.chain_hash,
        event: RawValue::from_string(row.canonical)?,
    })
}

fn sha256_file(path: &Path) -> Result<String, RetainError> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// What re-reading one anchor's archive showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveCheck {
    /// The file's SHA-256 is the anchor's and the chain inside it runs from
    /// the previous anchor (or genesis) to this anchor's link, hash included.
    Proven,
    /// No file of that name in the directory.
    Missing,
    /// The file does not prove the anchor: the first bad `seq` and why.
    Broken { seq: i64, reason: String },
}

/// An archive name as `retain` writes it: a plain file name, so a forged
/// `retention_log` row cannot point the verifier outside the archive directory.
pub fn archive_name_ok(name: &str) -> bool {
    name.starts_with("meshaudit-events-")
        && name.ends_with(".ndjson.gz")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.contains("..")
}

/// Re-checks the archive of `anchor` in `dir`: its SHA-256, then the chain of
/// the rows inside it from `prev` (the previous anchor's link, or genesis) to
/// the anchor's link.
pub fn check_archive(
    dir: &Path,
    prev: &ChainHead,
    anchor: &RetentionAnchor,
) -> Result<ArchiveCheck, RetainError> {
    let broken = |seq: i64, reason: &str| {
        Ok(ArchiveCheck::Broken {
            seq,
            reason: reason.to_owned(),
        })
    };
    if !archive_name_ok(&anchor.archive_name) {
        return broken(prev.seq + 1, "archive_name_invalid");
    }
    let path = dir.join(&anchor.archive_name);
    if !path.is_file() {
        return Ok(ArchiveCheck::Missing);
    }
    if sha256_file(&path)? != anchor.archive_sha256 {
        return broken(prev.seq + 1, "archive_sha256_mismatch");
    }
    let file = std::fs::File::open(&path).map_err(io_err(&path))?;
    let reader = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file));
    let mut verifier = ChainVerifier::new(prev.clone());
    for line in reader.lines() {
        let Ok(line) = line else {
            return broken(verifier.head().seq + 1, "archive_malformed");
        };
        if line.trim().is_empty() {
            continue;
        }
        let Ok(row) = serde_json::from_str::<ArchivedRow>(&line) else {
            return broken(verifier.head().seq + 1, "archive_malformed");
        };
        let canonical = row.event.get().to_owned();
        if let Err(b) = verifier.feed(&ChainRow {
            seq: row.seq,
            id: &row.id,
            event_hash: &row.event_hash,
            chain_hash: &row.chain_hash,
            canonical: canonical.as_bytes(),
            index: None,
        }) {
            return Ok(ArchiveCheck::Broken {
                seq: b.seq,
                reason: b.reason,
            });
        }
    }
    if verifier.head() != &anchor.as_head() {
        return broken(verifier.head().seq + 1, "archive_does_not_reach_anchor");
    }
    Ok(ArchiveCheck::Proven)
}

/// Re-checks the archives of every retention anchor (found in `dir`), each
/// from the previous anchor to its own. `Ok(None)` when all are intact, else
/// the first break (a missing file is `archive_missing`).
pub async fn verify_archives(
    store: &dyn EventStore,
    dir: &Path,
) -> Result<Option<(i64, String)>, RetainError> {
    let mut prev = ChainHead::genesis();
    for anchor in store.retention_log().await? {
        match check_archive(dir, &prev, &anchor)? {
            ArchiveCheck::Proven => {}
            ArchiveCheck::Missing => return Ok(Some((prev.seq + 1, "archive_missing".to_owned()))),
            ArchiveCheck::Broken { seq, reason } => return Ok(Some((seq, reason))),
        }
        prev = anchor.as_head();
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoff_dates() {
        assert_eq!(
            parse_cutoff("2026-02-03").unwrap().to_rfc3339(),
            "2026-02-03T00:00:00+00:00"
        );
        assert!(parse_cutoff("2026-02-03T04:05:06+02:00").is_ok());
        assert!(parse_cutoff("last week").is_err());
    }

    #[test]
    fn min_age_refuses_young_and_future_cutoffs() {
        assert_eq!(parse_age("24h").unwrap(), chrono::Duration::hours(24));
        assert_eq!(parse_age(" 7d ").unwrap(), chrono::Duration::days(7));
        assert_eq!(parse_age("0s").unwrap(), chrono::Duration::zero());
        for bad in ["", "h", "24", "-1h", "1w", "99999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
        let now = parse_cutoff("2026-06-10T12:00:00Z").unwrap();
        let day = chrono::Duration::hours(24);
        assert!(check_cutoff(parse_cutoff("2026-06-09").unwrap(), now, day).is_ok());
        assert!(check_cutoff(parse_cutoff("2026-06-10").unwrap(), now, day).is_err());
        assert!(check_cutoff(parse_cutoff("2999-01-01").unwrap(), now, day).is_err());
    }

    #[test]
    fn patience_values() {
        assert_eq!(parse_patience("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_patience("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_patience("1d").unwrap(), Duration::from_secs(86_400));
        for bad in ["", "5", "-1s", "2d", "5 minutes"] {
            let e = parse_patience(bad).unwrap_err().to_string();
            assert!(e.starts_with("--patience: "), "{bad}: {e}");
        }
        assert!(parse_age("x")
            .unwrap_err()
            .to_string()
            .starts_with("--min-age: "));
    }
}
