//! `s3`: any S3-compatible object store, through the `rust-s3` client (SigV4,
//! path-style or virtual-host addressing). One batch is one segment: the
//! records as gzip NDJSON under
//! `<prefix>/<yyyy>/<mm>/<dd>/<first seq>-<last seq>.ndjson.gz` (the date of
//! the segment's first record, so a resend writes the same key and the same
//! bytes), then a manifest `….manifest.json` with the segment's SHA-256, its
//! seq range, chain hashes and the latest checkpoint of the verifiable log.
//! With `object_lock_days` both objects carry Object Lock retention headers
//! (COMPLIANCE mode), so they cannot be removed before that date.

use super::{Batch, Sink, SinkError};
use crate::export::config::{Format, S3Config};
use crate::export::format::ndjson;
use crate::export::state::ExportDb;
use async_trait::async_trait;
use flate2::write::GzEncoder;
use meshaudit_event::integrity::sha256_hex;
use meshaudit_event::{canonical, Map, Number, Value};
use s3::creds::Credentials;
use s3::error::S3Error;
use s3::{Bucket, Region};
use std::io::Write;

/// The client for the configured bucket: SigV4 with static credentials,
/// path-style or virtual-host addressing.
pub fn bucket(cfg: &S3Config) -> Result<Box<Bucket>, String> {
    let region = match &cfg.endpoint {
        Some(endpoint) => Region::Custom {
            region: cfg.region.clone(),
            endpoint: endpoint.trim_end_matches('/').to_owned(),
        },
        None => cfg
            .region
            .parse()
            .map_err(|e| format!("region {:?}: {e}", cfg.region))?,
    };
    let creds = Credentials::new(
        Some(&cfg.access_key_id),
        Some(&cfg.secret_access_key.0),
        None,
        None,
        None,
    )
    .map_err(|e| format!("credentials: {e}"))?;
    let bucket = Bucket::new(&cfg.bucket, region, creds)
        .map_err(|e| format!("bucket {:?}: {e}", cfg.bucket))?;
    let bucket = bucket
        .with_request_timeout(super::http::REQUEST_TIMEOUT)
        .map_err(|e| format!("bucket {:?}: {e}", cfg.bucket))?;
    Ok(if cfg.path_style {
        bucket.with_path_style()
    } else {
        bucket
    })
}

pub struct S3 {
    bucket: Box<Bucket>,
    prefix: String,
    format: Format,
    lock_days: Option<u32>,
    /// Where the latest checkpoint is read for the manifests.
    db: ExportDb,
}

impl S3 {
    pub fn new(cfg: &S3Config, format: Format, db: ExportDb) -> Result<Self, String> {
        let bucket = bucket(cfg)?;
        Ok(Self {
            bucket,
            prefix: cfg.prefix.clone().unwrap_or_default(),
            format,
            lock_days: cfg.object_lock_days,
            db,
        })
    }

    async fn put(&self, key: &str, body: &[u8], content_type: &str) -> Result<(), SinkError> {
        let mut req = self
            .bucket
            .put_object_builder(key, body)
            .with_content_type(content_type);
        if let Some(days) = self.lock_days {
            let until = chrono::Utc::now() + chrono::Duration::days(i64::from(days));
            req = req
                .with_header("x-amz-object-lock-mode", "COMPLIANCE")
                .and_then(|r| {
                    r.with_header(
                        "x-amz-object-lock-retain-until-date",
                        until.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                    )
                })
                .map_err(|e| SinkError::Transient(format!("object lock headers: {e}")))?;
        }
        match req.execute().await {
            Ok(_) => Ok(()),
            Err(e) => Err(classify(key, e)),
        }
    }
}

/// S3 answers: 4xx other than 408/429 refuse for good (bad credentials, no
/// bucket, Object Lock not enabled…), the rest is retried.
fn classify(key: &str, e: S3Error) -> SinkError {
    match e {
        S3Error::HttpFailWithBody(status, body) => {
            let shown: String = body.chars().take(300).collect();
            match super::http::verdict(status) {
                super::http::Verdict::Refused => SinkError::Refused {
                    seq: -1,
                    reason: format!("PUT {key}: HTTP {status}: {shown}"),
                },
                _ => SinkError::Transient(format!("PUT {key}: HTTP {status}: {shown}")),
            }
        }
        other => SinkError::Transient(format!("PUT {key}: {other}")),
    }
}

/// The segment's key, from its first record's `received_at` date.
pub fn segment_key(prefix: &str, batch: &Batch) -> String {
    let date = batch
        .records
        .first()
        .and_then(|r| r.received_at.get(..10))
        .unwrap_or("0000-00-00");
    let (y, m, d) = (&date[..4], &date[5..7], &date[8..10]);
    let prefix = prefix.trim_matches('/');
    let base = format!("{y}/{m}/{d}/{}-{}.ndjson.gz", batch.first, batch.last);
    if prefix.is_empty() {
        base
    } else {
        format!("{prefix}/{base}")
    }
}

/// gzip of the NDJSON, deterministic (no name, mtime 0, fixed level).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// The manifest that follows a segment (canonical JSON).
pub fn manifest(
    key: &str,
    batch: &Batch,
    segment: &[u8],
    format: Format,
    checkpoint: Option<(i64, String)>,
) -> Vec<u8> {
    let s = |v: &str| Value::String(v.to_owned());
    let n = |i: i64| Value::Number(Number::Int(i));
    let mut m = Map::new();
    m.insert("exporter".into(), s(&batch.exporter));
    m.insert("segment".into(), s(key));
    m.insert("sha256".into(), s(&sha256_hex(segment)));
    m.insert("bytes".into(), n(segment.len() as i64));
    m.insert("first_seq".into(), n(batch.first));
    m.insert("last_seq".into(), n(batch.last));
    m.insert("records".into(), n(batch.records.len() as i64));
    m.insert(
        "format".into(),
        s(match format {
            Format::Meshaudit => "meshaudit",
            Format::Ocsf => "ocsf",
        }),
    );
    if let Some(first) = batch.records.first() {
        m.insert("first_received_at".into(), s(&first.received_at));
    }
    if let Some(last) = batch.records.last() {
        m.insert("last_chain_hash".into(), s(&last.chain_hash));
    }
    m.insert(
        "checkpoint".into(),
        match checkpoint {
            Some((size, note)) => {
                let mut c = Map::new();
                c.insert("size".into(), n(size));
                c.insert("note".into(), s(&note));
                Value::Object(c)
            }
            None => Value::Null,
        },
    );
    canonical(&Value::Object(m))
}

#[async_trait]
impl Sink for S3 {
    async fn send(&self, batch: &Batch) -> Result<(), SinkError> {
        let key = segment_key(&self.prefix, batch);
        let segment = gzip(&ndjson(&batch.records, self.format));
        let checkpoint = self.db.latest_checkpoint().await.ok().flatten();
        let manifest_key = format!("{}.manifest.json", key.trim_end_matches(".ndjson.gz"));
        let name_seq = |e: SinkError| match e {
            SinkError::Refused { reason, .. } => SinkError::Refused {
                seq: batch.first,
                reason,
            },
            t => t,
        };
        self.put(&key, &segment, "application/gzip")
            .await
            .map_err(name_seq)?;
        let manifest = manifest(&key, batch, &segment, self.format, checkpoint);
        self.put(&manifest_key, &manifest, "application/json")
            .await
            .map_err(name_seq)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::record::tests::stored;
    use crate::export::record::Record;

    fn batch() -> Batch {
        Batch {
            exporter: "lake".into(),
            first: 11,
            last: 12,
            records: (11..=12)
                .map(|i| Record::from_stored(&stored(i, r#"{"n":1}"#)).unwrap())
                .collect(),
        }
    }

    #[test]
    fn path_style_and_virtual_host_addressing() {
        let mut cfg = S3Config {
            endpoint: Some("https://s3.example.net:9000/".into()),
            region: "eu-west-1".into(),
            bucket: "lake".into(),
            prefix: None,
            access_key_id: "AK".into(),
            secret_access_key: crate::config::Secret("SK".into()),
            path_style: false,
            segment_records: None,
            segment_seconds: None,
            object_lock_days: None,
        };
        assert_eq!(
            bucket(&cfg).unwrap().url(),
            "https://lake.s3.example.net:9000"
        );
        cfg.path_style = true;
        assert_eq!(
            bucket(&cfg).unwrap().url(),
            "https://s3.example.net:9000/lake"
        );
        cfg.endpoint = None;
        cfg.path_style = false;
        assert_eq!(
            bucket(&cfg).unwrap().url(),
            "https://lake.s3-eu-west-1.amazonaws.com"
        );
    }

    #[test]
    fn keys_follow_the_first_records_date() {
        assert_eq!(
            segment_key("audit/", &batch()),
            "audit/2026/11/30/11-12.ndjson.gz"
        );
        assert_eq!(segment_key("", &batch()), "2026/11/30/11-12.ndjson.gz");
    }

    #[test]
    fn segments_are_deterministic_and_the_manifest_names_them() {
        let b = batch();
        let a = gzip(&ndjson(&b.records, Format::Meshaudit));
        assert_eq!(a, gzip(&ndjson(&b.records, Format::Meshaudit)));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&a[..]), &mut text)
            .unwrap();
        assert_eq!(text.lines().count(), 2);
        let m: serde_json::Value = serde_json::from_slice(&manifest(
            "k",
            &b,
            &a,
            Format::Meshaudit,
            Some((12, "note".into())),
        ))
        .unwrap();
        assert_eq!(m["sha256"], sha256_hex(&a));
        assert_eq!(
            (m["first_seq"].as_i64(), m["last_seq"].as_i64()),
            (Some(11), Some(12))
        );
        assert_eq!(m["checkpoint"]["size"], 12);
    }
}
