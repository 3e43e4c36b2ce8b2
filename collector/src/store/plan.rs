//! What one group-commit transaction writes, decided in memory (pure): given
//! the head, the stored hashes of the ids the group mentions and the live
//! idempotency records of its keys, each batch becomes a replay, a `409`, or
//! new rows with their `seq` and chain hash, in commit order. The backends
//! only fetch those inputs and write the result, in a handful of statements
//! whatever the group's size.

use super::{BatchAnswer, BatchPlan, BatchWrite, IdempotencyRecord, WriteOutcome};
use crate::chain::{next_chain_hash, ChainHead};
use crate::prepare::PreparedEvent;
use std::collections::HashMap;

/// (API key scope, idempotency key).
pub type ScopedKey = (String, String);

/// One new `events` row.
#[derive(Debug, Clone)]
pub struct NewRow<'a> {
    pub seq: i64,
    pub chain_hash: String,
    pub event: &'a PreparedEvent,
}

/// One idempotency record to write (insert, or replace an expired one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyWrite {
    pub scope: String,
    pub key: String,
    pub body_sha256: String,
    pub answer: BatchAnswer,
}

/// Everything one transaction writes, and the answers.
#[derive(Debug)]
pub struct GroupPlan<'a> {
    pub outcomes: Vec<WriteOutcome>,
    pub rows: Vec<NewRow<'a>>,
    pub idempotency: Vec<IdempotencyWrite>,
    pub head: ChainHead,
}

/// Plans a group. `known_ids` maps stored ids to their event hash;
/// `live_keys` holds the unexpired idempotency records of the group's keys.
pub fn plan_group<'a>(
    batches: &'a [BatchWrite],
    head: ChainHead,
    known_ids: &HashMap<String, String>,
    live_keys: &HashMap<ScopedKey, IdempotencyRecord>,
) -> GroupPlan<'a> {
    let mut plan = GroupPlan {
        outcomes: Vec::with_capacity(batches.len()),
        rows: Vec::new(),
        idempotency: Vec::new(),
        head,
    };
    // Ids and keys written earlier in this same group.
    let mut new_ids: HashMap<&str, &str> = HashMap::new();
    let mut new_keys: HashMap<ScopedKey, IdempotencyRecord> = HashMap::new();
    for batch in batches {
        if let Some(idem) = &batch.idempotency {
            let k = (idem.scope.clone(), idem.key.clone());
            if let Some(rec) = new_keys.get(&k).or_else(|| live_keys.get(&k)) {
                plan.outcomes.push(if rec.body_sha256 == idem.body_sha256 {
                    WriteOutcome::Replay(BatchAnswer {
                        deduped: true,
                        ..rec.answer
                    })
                } else {
                    WriteOutcome::IdempotencyConflict
                });
                continue;
            }
        }
        let decided = BatchPlan::decide(&batch.events, |id| {
            new_ids
                .get(id)
                .map(|h| (*h).to_owned())
                .or_else(|| known_ids.get(id).cloned())
        });
        for &i in &decided.new_events {
            let event = &batch.events[i];
            let seq = plan.head.seq + 1;
            let chain_hash = next_chain_hash(&plan.head.chain_hash, seq, &event.event_hash);
            plan.head = ChainHead {
                seq,
                chain_hash: chain_hash.clone(),
            };
            new_ids.insert(&event.id, &event.event_hash);
            plan.rows.push(NewRow {
                seq,
                chain_hash,
                event,
            });
        }
        if let Some(idem) = &batch.idempotency {
            new_keys.insert(
                (idem.scope.clone(), idem.key.clone()),
                IdempotencyRecord {
                    body_sha256: idem.body_sha256.clone(),
                    answer: decided.answer,
                },
            );
            plan.idempotency.push(IdempotencyWrite {
                scope: idem.scope.clone(),
                key: idem.key.clone(),
                body_sha256: idem.body_sha256.clone(),
                answer: decided.answer,
            });
        }
        plan.outcomes.push(WriteOutcome::Stored {
            answer: decided.answer,
            conflict_ids: decided.conflict_ids,
        });
    }
    plan
}

/// The ids and keys a group needs looked up.
pub fn lookups(batches: &[BatchWrite]) -> (Vec<&str>, Vec<(&str, &str)>) {
    let mut ids: Vec<&str> = batches
        .iter()
        .flat_map(|b| b.events.iter().map(|e| e.id.as_str()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut keys: Vec<(&str, &str)> = batches
        .iter()
        .filter_map(|b| b.idempotency.as_ref())
        .map(|i| (i.scope.as_str(), i.key.as_str()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    (ids, keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::GENESIS;
    use crate::ingest::body::RawEvent;
    use crate::prepare::prepare;
    use crate::store::IdempotencyKey;
    use meshaudit_event::integrity::EventKeys;
    use meshaudit_event::value::{parse, Value};

    fn batch(ids: &[&str], key: Option<(&str, &str)>) -> BatchWrite {
        BatchWrite {
            events: ids
                .iter()
                .map(
                    |id| match parse(format!("{{\"id\":\"{id}\"}}").as_bytes()) {
                        Ok(Value::Object(event)) => {
                            prepare(RawEvent { line: 1, event }, &EventKeys::default())
                        }
                        _ => unreachable!(),
                    },
                )
                .collect(),
            idempotency: key.map(|(k, body)| IdempotencyKey {
                scope: "s".into(),
                key: k.into(),
                body_sha256: body.into(),
            }),
        }
    }

    #[test]
    fn a_group_sees_its_own_earlier_batches() {
        let batches = vec![
            batch(&["a", "b"], Some(("k", "body1"))),
            batch(&["b", "c"], None),
            batch(&["x"], Some(("k", "body1"))),
            batch(&["y"], Some(("k", "body2"))),
        ];
        let plan = plan_group(
            &batches,
            ChainHead::genesis(),
            &HashMap::new(),
            &HashMap::new(),
        );
        let ids: Vec<(&str, i64)> = plan
            .rows
            .iter()
            .map(|r| (r.event.id.as_str(), r.seq))
            .collect();
        assert_eq!(ids, [("a", 1), ("b", 2), ("c", 3)]);
        assert_eq!(
            plan.outcomes[2],
            WriteOutcome::Replay(BatchAnswer {
                accepted: 2,
                duplicates: 0,
                conflicts: 0,
                deduped: true
            })
        );
        assert_eq!(plan.outcomes[3], WriteOutcome::IdempotencyConflict);
        assert_eq!(plan.idempotency.len(), 1);
        let first = next_chain_hash(GENESIS, 1, &batches[0].events[0].event_hash);
        assert_eq!(plan.rows[0].chain_hash, first);
        assert_eq!(plan.head.seq, 3);
        assert_eq!(plan.head.chain_hash, plan.rows[2].chain_hash);
    }

    #[test]
    fn stored_ids_and_live_keys_come_from_the_database() {
        let batches = vec![
            batch(&["old", "new"], None),
            batch(&["z"], Some(("live", "b"))),
        ];
        let known = HashMap::from([("old".to_owned(), batches[0].events[0].event_hash.clone())]);
        let live = HashMap::from([(
            ("s".to_owned(), "live".to_owned()),
            IdempotencyRecord {
                body_sha256: "b".into(),
                answer: BatchAnswer::default(),
            },
        )]);
        let head = ChainHead {
            seq: 41,
            chain_hash: "h".into(),
        };
        let plan = plan_group(&batches, head, &known, &live);
        assert_eq!(plan.rows.len(), 1);
        assert_eq!(plan.rows[0].seq, 42);
        assert!(matches!(plan.outcomes[1], WriteOutcome::Replay(_)));
        let (ids, keys) = lookups(&batches);
        assert_eq!(ids, ["new", "old", "z"]);
        assert_eq!(keys, [("s", "live")]);
    }
}
