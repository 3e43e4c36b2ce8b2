//! The storage hash chain of SPEC §5 and its verifier, as pure logic.
//!
//! `chain_hash(seq) = hex(SHA-256(chain_hash(seq-1) + ":" + seq + ":" + event_hash))`,
//! `chain_hash(0)` = 64 zeros. The verifier is fed stored rows in `seq` order
//! and recomputes everything from the stored canonical JSON, so a changed,
//! removed, inserted or reordered row is named by the first bad `seq`.

use crate::prepare::{index_columns, IndexColumns};
use meshaudit_event::canonical::canonical;
use meshaudit_event::integrity::{event_hash, sha256_hex};
use meshaudit_event::value::{parse, Map, Value};
use serde::Serialize;

/// `chain_hash(0)`.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The next link of the chain.
pub fn next_chain_hash(prev: &str, seq: i64, event_hash: &str) -> String {
    let mut buf = Vec::with_capacity(prev.len() + event_hash.len() + 24);
    buf.extend_from_slice(prev.as_bytes());
    buf.push(b':');
    buf.extend_from_slice(seq.to_string().as_bytes());
    buf.push(b':');
    buf.extend_from_slice(event_hash.as_bytes());
    sha256_hex(&buf)
}

/// The newest link: `seq` 0 and [`GENESIS`] for an empty store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    pub seq: i64,
    pub chain_hash: String,
}

impl ChainHead {
    pub fn genesis() -> Self {
        Self {
            seq: 0,
            chain_hash: GENESIS.to_owned(),
        }
    }
}

/// A stored row as the verifier needs it.
#[derive(Debug, Clone)]
pub struct ChainRow<'a> {
    pub seq: i64,
    pub id: &'a str,
    pub event_hash: &'a str,
    pub chain_hash: &'a str,
    pub canonical: &'a [u8],
    /// The stored query columns, when the row has them (archives do not).
    pub index: Option<&'a IndexColumns>,
}

/// The first break found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: String,
}

/// Walks the rows in `seq` order from an anchor.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    prev: ChainHead,
    checked: u64,
}

impl ChainVerifier {
    /// Starts after `anchor` (genesis, or the retention anchor: the first kept
    /// `seq` minus one and the chain hash before it).
    pub fn new(anchor: ChainHead) -> Self {
        Self {
            prev: anchor,
            checked: 0,
        }
    }

    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Continues from `link` (a retention anchor) after a gap its archive
    /// covers: the rows below it are being removed.
    pub fn jump_to(&mut self, link: ChainHead) {
        self.prev = link;
    }

    /// The last good link.
    pub fn head(&self) -> &ChainHead {
        &self.prev
    }

    /// Checks the next row; the first error is the break to report.
    pub fn feed(&mut self, row: &ChainRow<'_>) -> Result<(), ChainBreak> {
        let expected = self.prev.seq + 1;
        let fail = |seq: i64, reason: &str| ChainBreak {
            seq,
            reason: reason.to_owned(),
        };
        if row.seq > expected {
            return Err(fail(expected, "missing_event"));
        }
        if row.seq < expected {
            return Err(fail(row.seq, "sequence_out_of_order"));
        }
        let parsed = match parse(row.canonical) {
            Ok(v @ Value::Object(_)) => v,
            _ => return Err(fail(row.seq, "event_not_json_object")),
        };
        let Some(map) = parsed.as_object() else {
            return Err(fail(row.seq, "event_not_json_object"));
        };
        let recomputed = event_hash(map);
        if canonical(&parsed) != row.canonical {
            return Err(fail(row.seq, "event_not_canonical"));
        }
        if recomputed != row.event_hash {
            return Err(fail(row.seq, "event_hash_mismatch"));
        }
        let chain = next_chain_hash(&self.prev.chain_hash, row.seq, &recomputed);
        if chain != row.chain_hash {
            return Err(fail(row.seq, "chain_hash_mismatch"));
        }
        if id_of(map, &recomputed) != row.id {
            return Err(fail(row.seq, "id_mismatch"));
        }
        if row
            .index
            .is_some_and(|stored| *stored != index_columns(map))
        {
            return Err(fail(row.seq, "index_mismatch"));
        }
        self.checked += 1;
        self.prev = ChainHead {
            seq: row.seq,
            chain_hash: chain,
        };
        Ok(())
    }

    /// After the last row: the stored head must be where the rows ended.
    pub fn finish(&self, recorded_head: &ChainHead) -> Result<(), ChainBreak> {
        if recorded_head.seq > self.prev.seq {
            return Err(ChainBreak {
                seq: self.prev.seq + 1,
                reason: "missing_event".to_owned(),
            });
        }
        Ok(())
    }
}

/// The id column an event gets: the one rule ingest uses too.
fn id_of(event: &Map, hash: &str) -> String {
    crate::prepare::id_column(event, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Owned {
        seq: i64,
        id: String,
        hash: String,
        chain: String,
        canonical: Vec<u8>,
    }

    fn build(n: i64) -> Vec<Owned> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let canonical = format!("{{\"id\":\"e{seq}\",\"n\":{seq}}}").into_bytes();
                let map = match parse(&canonical).unwrap() {
                    Value::Object(m) => m,
                    _ => unreachable!(),
                };
                let hash = event_hash(&map);
                let chain = next_chain_hash(&prev, seq, &hash);
                prev = chain.clone();
                Owned {
                    seq,
                    id: format!("e{seq}"),
                    hash,
                    chain,
                    canonical,
                }
            })
            .collect()
    }

    fn run(rows: &[Owned]) -> Result<u64, ChainBreak> {
        let mut v = ChainVerifier::new(ChainHead::genesis());
        for r in rows {
            v.feed(&ChainRow {
                seq: r.seq,
                id: &r.id,
                event_hash: &r.hash,
                chain_hash: &r.chain,
                canonical: &r.canonical,
                index: None,
            })?;
        }
        Ok(v.checked())
    }

    #[test]
    fn known_answer_first_link() {
        // python3 -c 'import hashlib;print(hashlib.sha256(("0"*64+":1:"+"ab").encode()).hexdigest())'
        assert_eq!(
            next_chain_hash(GENESIS, 1, "ab"),
            sha256_hex(format!("{GENESIS}:1:ab").as_bytes())
        );
    }

    #[test]
    fn intact_chain_passes() {
        assert_eq!(run(&build(5)), Ok(5));
    }

    #[test]
    fn modified_deleted_inserted_reordered_are_named() {
        let mut rows = build(5);
        rows[2].canonical = b"{\"id\":\"e3\",\"n\":33}".to_vec();
        assert_eq!(run(&rows).unwrap_err().seq, 3);

        let mut rows = build(5);
        rows.remove(1);
        assert_eq!(
            run(&rows).unwrap_err(),
            ChainBreak {
                seq: 2,
                reason: "missing_event".into()
            }
        );

        let mut rows = build(5);
        rows.swap(1, 3);
        assert_eq!(run(&rows).unwrap_err().seq, 2);

        let mut rows = build(5);
        // Content swapped but seq kept in order.
        let c = rows[1].canonical.clone();
        rows[1].canonical = rows[3].canonical.clone();
        rows[3].canonical = c;
        assert_eq!(run(&rows).unwrap_err().seq, 2);
    }
}
