//! Batch planning, pure: what an exporter sends next, given its durable state
//! and the store's head. A planned batch is a fixed `seq` range written to the
//! store before the first send, so every retry (and every send after a crash)
//! carries exactly the same records under the same idempotency key.

/// The part of the durable state planning needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The last `seq` the sink acknowledged (0: none).
    pub cursor: i64,
    /// The batch planned and perhaps sent, not yet acknowledged.
    pub pending: Option<(i64, i64)>,
}

/// How batches are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Most records per batch.
    pub max_records: i64,
    /// Wait for this many records before sending a partial batch, unless
    /// the oldest waiting record is older than `max_wait_secs` (S3 segments);
    /// 1 sends whatever is there.
    pub min_records: i64,
    pub max_wait_secs: u64,
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing to send yet.
    Wait,
    /// Send the pending batch again: it was planned (and maybe sent) before.
    Resend { first: i64, last: i64 },
    /// Persist this new range as pending, then send it.
    Plan { first: i64, last: i64 },
}

/// `oldest_age_secs`: how long ago the record after the cursor was received
/// (`None` when unknown or there is none).
pub fn next(pos: Position, head: i64, cut: Cut, oldest_age_secs: Option<u64>) -> Next {
    if let Some((first, last)) = pos.pending {
        // A pending batch always starts right after the cursor (replay clears it);
        // one that does not is stale and is planned afresh.
        if first == pos.cursor + 1 && last >= first {
            return Next::Resend { first, last };
        }
    }
    let waiting = head - pos.cursor;
    if waiting <= 0 {
        return Next::Wait;
    }
    let enough = waiting >= cut.min_records.max(1);
    let old_enough = oldest_age_secs.is_some_and(|age| age >= cut.max_wait_secs);
    if !enough && !old_enough {
        return Next::Wait;
    }
    let first = pos.cursor + 1;
    let last = head.min(pos.cursor + cut.max_records.max(1));
    Next::Plan { first, last }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: Cut = Cut {
        max_records: 10,
        min_records: 1,
        max_wait_secs: 0,
    };

    fn pos(cursor: i64, pending: Option<(i64, i64)>) -> Position {
        Position { cursor, pending }
    }

    #[test]
    fn plans_fixed_ranges_after_the_cursor() {
        assert_eq!(next(pos(0, None), 0, STREAM, None), Next::Wait);
        assert_eq!(
            next(pos(0, None), 3, STREAM, None),
            Next::Plan { first: 1, last: 3 }
        );
        assert_eq!(
            next(pos(3, None), 40, STREAM, None),
            Next::Plan { first: 4, last: 13 }
        );
        assert_eq!(next(pos(40, None), 40, STREAM, None), Next::Wait);
    }

    #[test]
    fn a_pending_batch_is_resent_unchanged_even_when_more_arrived() {
        assert_eq!(
            next(pos(3, Some((4, 6))), 100, STREAM, None),
            Next::Resend { first: 4, last: 6 }
        );
        // Stale (the cursor moved by a replay): planned afresh.
        assert_eq!(
            next(pos(0, Some((4, 6))), 100, STREAM, None),
            Next::Plan { first: 1, last: 10 }
        );
    }

    #[test]
    fn segments_wait_for_enough_records_or_enough_time() {
        let seg = Cut {
            max_records: 100,
            min_records: 100,
            max_wait_secs: 30,
        };
        assert_eq!(next(pos(0, None), 50, seg, Some(5)), Next::Wait);
        assert_eq!(
            next(pos(0, None), 50, seg, Some(30)),
            Next::Plan { first: 1, last: 50 }
        );
        assert_eq!(
            next(pos(0, None), 250, seg, Some(0)),
            Next::Plan {
                first: 1,
                last: 100
            }
        );
    }
}
