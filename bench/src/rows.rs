//! The rows the collector stores for an event (SPEC §7 storage: the canonical JSON plus the
//! indexed query columns, the chain link, and the id kept in `event_ids`), made from a pool of
//! pre-sealed events so the raw ceilings measure the database, not event generation.

use crate::events::{EventFactory, SealedEvent};
use meshaudit_event::value::{Map, Value};
use sha2::{Digest, Sha256};

/// One `events` row (and its `event_ids` row: `id`, `event_hash`, `seq`).
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub seq: i64,
    pub id: String,
    pub received_at: String,
    pub received_us: i64,
    pub event_hash: String,
    pub chain_hash: String,
    pub verified: Option<bool>,
    pub verify_reason: Option<String>,
    pub canonical: String,
    pub tenant: Option<String>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub user_id: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub status: Option<i64>,
    pub event_time_us: Option<i64>,
}

fn text(m: &Map, path: &[&str]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let mut v = m.get(*first)?;
    for k in rest {
        v = v.get(k)?;
    }
    v.as_str().map(str::to_owned)
}

/// Pre-sealed events whose rows differ only in id, seq and chain link.
#[derive(Debug)]
pub struct RowSource {
    pool: Vec<(SealedEvent, String)>,
    prev_chain: String,
}

impl RowSource {
    /// `pool_size` events sealed up front (distinct content), stamped `now_us`.
    pub fn new(factory: &EventFactory, pool_size: usize, now_us: i64) -> Self {
        let pool = (0..pool_size.max(1) as u64)
            .map(|i| {
                let e = factory.event(i, now_us);
                let canonical = String::from_utf8_lossy(&e.line).into_owned();
                (e, canonical)
            })
            .collect();
        Self {
            pool,
            prev_chain: "0".repeat(64),
        }
    }

    /// The row with `seq` (1-based, consecutive calls): the pool's event `seq % pool` with the
    /// unique id `id`, linked into the chain like the collector links it.
    pub fn row(&mut self, seq: i64, id: &str, received_us: i64, received_at: &str) -> EventRow {
        let (e, canonical) = &self.pool[(seq as usize) % self.pool.len()];
        let canonical = canonical.replace(&e.id, id);
        let chain_hash = {
            let mut h = Sha256::new();
            h.update(self.prev_chain.as_bytes());
            h.update(b":");
            h.update(seq.to_string().as_bytes());
            h.update(b":");
            h.update(e.event_hash.as_bytes());
            hex::encode(h.finalize())
        };
        self.prev_chain.clone_from(&chain_hash);
        let m = &e.object;
        EventRow {
            seq,
            id: id.to_owned(),
            received_at: received_at.to_owned(),
            received_us,
            event_hash: e.event_hash.clone(),
            chain_hash,
            verified: Some(true),
            verify_reason: None,
            canonical,
            tenant: text(m, &["tenantid"]),
            namespace: text(m, &["kubernetes", "namespacename"]),
            pod: text(m, &["kubernetes", "podname"]),
            user_id: text(m, &["subject", "userid"]),
            method: text(m, &["httpmethod"]),
            path: text(m, &["action", "name"]),
            status: m
                .get("http")
                .and_then(|h| h.get("statuscode"))
                .and_then(Value::as_i64),
            event_time_us: Some(received_us - 1_000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_carry_unique_ids_columns_and_a_chain() {
        let f = EventFactory::new(b"rows", b"k", None);
        let mut src = RowSource::new(&f, 4, 1_750_000_000_000_000);
        let a = src.row(1, &f.id(1000), 5, "t");
        let b = src.row(2, &f.id(1001), 6, "t");
        assert_ne!(a.id, b.id);
        assert!(a.canonical.contains(&a.id));
        assert!(!a.canonical.contains(&f.id(1)));
        assert_eq!(a.namespace.as_deref(), Some("shop"));
        assert!(a.status.is_some() && a.method.is_some() && a.path.is_some());
        let expect_b = meshaudit_event::integrity::sha256_hex(
            format!("{}:2:{}", a.chain_hash, b.event_hash).as_bytes(),
        );
        assert_eq!(b.chain_hash, expect_b);
    }
}
