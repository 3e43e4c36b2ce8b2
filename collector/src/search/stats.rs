//! `GET /v1/stats?since=&until=&by=&bucket=`: event counts per time bucket,
//! optionally split by namespace, pod, user, status or method. Answered with
//! one `GROUP BY` over the indexed `event_time_us` range and the chosen
//! indexed column, never by reading event JSON.

use crate::store::{format_time, EventStore, RawPool, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};

/// Most buckets one answer holds.
pub const MAX_BUCKETS: i64 = 1000;
/// Most (bucket, key) rows read; beyond it the answer says `truncated`.
pub const MAX_ROWS: i64 = 100_000;
/// The bucket widths chosen when `bucket` is not given, in seconds.
const NICE_BUCKETS: [i64; 12] = [
    1, 5, 10, 30, 60, 300, 900, 1800, 3600, 10_800, 21_600, 86_400,
];
/// Buckets aimed at when choosing a width.
const TARGET_BUCKETS: i64 = 60;
const US: i64 = 1_000_000;

/// `a / b` rounded up, for positive `a` and `b`.
fn ceil_div(a: i64, b: i64) -> i64 {
    a / b + i64::from(a % b != 0)
}

/// The column a count is split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatsBy {
    Namespace,
    Pod,
    User,
    Status,
    Method,
}

impl StatsBy {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "namespace" => Self::Namespace,
            "pod" => Self::Pod,
            "user" => Self::User,
            "status" => Self::Status,
            "method" => Self::Method,
            _ => return None,
        })
    }

    /// The indexed column (a fixed name, never user text).
    fn column(self) -> &'static str {
        match self {
            Self::Namespace => "namespace",
            Self::Pod => "pod",
            Self::User => "user_id",
            Self::Status => "status",
            Self::Method => "method",
        }
    }
}

/// A validated stats request; times in microseconds, `since` inclusive,
/// `until` exclusive, on the event `timestamp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsQuery {
    pub since_us: i64,
    pub until_us: i64,
    pub bucket_us: i64,
    pub by: Option<StatsBy>,
}

impl StatsQuery {
    /// Checks the range and picks a bucket width when none is given (pure).
    pub fn new(
        since_us: i64,
        until_us: i64,
        bucket_secs: Option<i64>,
        by: Option<StatsBy>,
    ) -> Result<Self, String> {
        if until_us <= since_us {
            return Err("until must be after since".to_owned());
        }
        let span = until_us - since_us;
        let bucket_us = match bucket_secs {
            Some(b) if b <= 0 => return Err("bucket must be a positive number of seconds".into()),
            Some(b) => b.checked_mul(US).ok_or("bucket is too large")?,
            None => NICE_BUCKETS
                .iter()
                .map(|b| b * US)
                .find(|b| span / b <= TARGET_BUCKETS)
                .unwrap_or_else(|| (span / TARGET_BUCKETS).max(US)),
        };
        if ceil_div(span, bucket_us) > MAX_BUCKETS {
            return Err(format!("more than {MAX_BUCKETS} buckets; widen bucket"));
        }
        Ok(Self {
            since_us,
            until_us,
            bucket_us,
            by,
        })
    }

    fn bucket_count(&self) -> i64 {
        ceil_div(self.until_us - self.since_us, self.bucket_us)
    }
}

/// One bucket of the answer.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Bucket {
    pub start: String,
    pub total: i64,
    /// Per key of `by` (`"(none)"` for events without that column); empty without `by`.
    pub counts: BTreeMap<String, i64>,
}

#[derive(Debug, Serialize)]
pub struct StatsAnswer {
    pub since: String,
    pub until: String,
    pub bucket_seconds: f64,
    pub by: Option<StatsBy>,
    /// Keys of `by`, most events first.
    pub keys: Vec<String>,
    pub total: i64,
    pub buckets: Vec<Bucket>,
    pub truncated: bool,
}

/// The key shown for events without the `by` column.
pub const NO_KEY: &str = "(none)";

fn time(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .map(format_time)
        .unwrap_or_default()
}

/// Dense buckets from `(bucket index, key, count)` rows (pure).
pub fn assemble(q: &StatsQuery, rows: Vec<(i64, Option<String>, i64)>) -> StatsAnswer {
    let truncated = rows.len() as i64 >= MAX_ROWS;
    let n = q.bucket_count();
    let mut buckets: Vec<Bucket> = (0..n)
        .map(|i| Bucket {
            start: time(q.since_us + i * q.bucket_us),
            total: 0,
            counts: BTreeMap::new(),
        })
        .collect();
    let mut per_key: HashMap<String, i64> = HashMap::new();
    let mut total = 0;
    for (b, key, count) in rows {
        let Some(bucket) = usize::try_from(b).ok().and_then(|b| buckets.get_mut(b)) else {
            continue;
        };
        bucket.total += count;
        total += count;
        if q.by.is_some() {
            let key = key.unwrap_or_else(|| NO_KEY.to_owned());
            *bucket.counts.entry(key.clone()).or_default() += count;
            *per_key.entry(key).or_default() += count;
        }
    }
    let mut keys: Vec<(String, i64)> = per_key.into_iter().collect();
    keys.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    StatsAnswer {
        since: time(q.since_us),
        until: time(q.until_us),
        bucket_seconds: q.bucket_us as f64 / US as f64,
        by: q.by,
        keys: keys.into_iter().map(|(k, _)| k).collect(),
        total,
        buckets,
        truncated,
    }
}

/// Runs the count on the store's own database.
pub async fn stats(store: &dyn EventStore, q: &StatsQuery) -> Result<StatsAnswer, StoreError> {
    let key = match (q.by, store.raw_pool()) {
        (None, Some(RawPool::Postgres(_))) => "NULL::text".to_owned(),
        (None, _) => "NULL".to_owned(),
        (Some(by), Some(RawPool::Postgres(_))) => format!("{}::text", by.column()),
        (Some(by), _) => format!("CAST({} AS TEXT)", by.column()),
    };
    let rows = match store.raw_pool() {
        Some(RawPool::Sqlite(pool)) => {
            let sql = format!(
                "SELECT (event_time_us - ?1) / ?2 AS b, {key} AS k, COUNT(*) AS n FROM events \
                 WHERE event_time_us >= ?1 AND event_time_us < ?3 GROUP BY b, k ORDER BY b, k LIMIT ?4"
            );
            sqlx::query(&sql)
                .bind(q.since_us)
                .bind(q.bucket_us)
                .bind(q.until_us)
                .bind(MAX_ROWS)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("b")?, r.try_get("k")?, r.try_get("n")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        }
        Some(RawPool::Postgres(pool)) => {
            let sql = format!(
                "SELECT (event_time_us - $1) / $2 AS b, {key} AS k, COUNT(*) AS n FROM events \
                 WHERE event_time_us >= $1 AND event_time_us < $3 GROUP BY b, k ORDER BY b, k LIMIT $4"
            );
            sqlx::query(&sql)
                .bind(q.since_us)
                .bind(q.bucket_us)
                .bind(q.until_us)
                .bind(MAX_ROWS)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("b")?, r.try_get("k")?, r.try_get("n")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        }
        None => return Err(StoreError::Refused("this store has no stats".into())),
    };
    Ok(assemble(q, rows))
}

/// The oldest and newest event `timestamp` stored (µs), from the index; `None` when empty.
pub async fn event_time_range(store: &dyn EventStore) -> Result<Option<(i64, i64)>, StoreError> {
    let sql = "SELECT MIN(event_time_us), MAX(event_time_us) FROM events";
    let (lo, hi): (Option<i64>, Option<i64>) = match store.raw_pool() {
        Some(RawPool::Sqlite(pool)) => sqlx::query_as(sql).fetch_one(pool).await?,
        Some(RawPool::Postgres(pool)) => sqlx::query_as(sql).fetch_one(pool).await?,
        None => return Err(StoreError::Refused("this store has no stats".into())),
    };
    Ok(lo.zip(hi))
}

/// Events stored with `verified = false` (a partial index holds only them).
pub async fn unverified_count(store: &dyn EventStore) -> Result<i64, StoreError> {
    Ok(match store.raw_pool() {
        Some(RawPool::Sqlite(pool)) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE verified = 0")
                .fetch_one(pool)
                .await?
        }
        Some(RawPool::Postgres(pool)) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE verified = false")
                .fetch_one(pool)
                .await?
        }
        None => return Err(StoreError::Refused("this store cannot count".into())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_width_is_chosen_and_bounded() {
        let day = 86_400 * US;
        let q = StatsQuery::new(0, day, None, None).unwrap();
        assert_eq!(q.bucket_us, 1800 * US);
        assert_eq!(q.bucket_count(), 48);
        assert_eq!(
            StatsQuery::new(0, 60 * US, None, None).unwrap().bucket_us,
            US
        );
        assert!(StatsQuery::new(0, day, Some(1), None).is_err());
        assert!(StatsQuery::new(0, day, Some(0), None).is_err());
        assert!(StatsQuery::new(day, 0, None, None).is_err());
        // A year still fits.
        let q = StatsQuery::new(0, 365 * day, None, None).unwrap();
        assert!(q.bucket_count() <= MAX_BUCKETS);
    }

    #[test]
    fn buckets_are_dense_and_keys_ranked() {
        let q = StatsQuery::new(0, 3 * 60 * US, Some(60), Some(StatsBy::Namespace)).unwrap();
        let a = assemble(
            &q,
            vec![
                (0, Some("a".into()), 2),
                (0, None, 1),
                (2, Some("b".into()), 5),
                (7, Some("x".into()), 9), // outside: ignored
            ],
        );
        assert_eq!(a.buckets.len(), 3);
        assert_eq!(a.buckets[0].total, 3);
        assert_eq!(a.buckets[0].counts.get(NO_KEY), Some(&1));
        assert_eq!(a.buckets[1].total, 0);
        assert_eq!(a.buckets[2].start, "1970-01-01T00:02:00.000000+00:00");
        assert_eq!(a.total, 8);
        assert_eq!(a.keys, vec!["b", "a", NO_KEY]);
        assert!(StatsBy::parse("tenant").is_none());
    }
}
