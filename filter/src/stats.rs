//! The filter's stats (SPEC §8): one enum names each, with its kind, so the
//! names, the kinds and the deltas cannot drift apart.

/// Whether Envoy keeps a stat as a counter or a gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatKind {
    Counter,
    /// Shared by the worker VMs: moved with `increment_metric(±n)`, never set.
    Gauge,
}

/// One stat of the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    Captured,
    Skipped,
    DroppedBufferFull,
    DroppedRetriesExhausted,
    DroppedRejected,
    DroppedTooLarge,
    BatchesOk,
    BatchesFailed,
    BatchRetries,
    BytesShipped,
    BufferedEvents,
}

impl Stat {
    pub const COUNT: usize = 11;

    pub const ALL: [Stat; Stat::COUNT] = [
        Stat::Captured,
        Stat::Skipped,
        Stat::DroppedBufferFull,
        Stat::DroppedRetriesExhausted,
        Stat::DroppedRejected,
        Stat::DroppedTooLarge,
        Stat::BatchesOk,
        Stat::BatchesFailed,
        Stat::BatchRetries,
        Stat::BytesShipped,
        Stat::BufferedEvents,
    ];

    /// The name Envoy shows (as `wasmcustom.<name>`, at `/stats/prometheus`
    /// without a prefix).
    pub fn name(self) -> &'static str {
        match self {
            Stat::Captured => "meshaudit_events_captured",
            Stat::Skipped => "meshaudit_events_skipped",
            Stat::DroppedBufferFull => "meshaudit_events_dropped_buffer_full",
            Stat::DroppedRetriesExhausted => "meshaudit_events_dropped_retries_exhausted",
            Stat::DroppedRejected => "meshaudit_events_dropped_rejected",
            Stat::DroppedTooLarge => "meshaudit_events_dropped_too_large",
            Stat::BatchesOk => "meshaudit_batches_ok",
            Stat::BatchesFailed => "meshaudit_batches_failed",
            Stat::BatchRetries => "meshaudit_batch_retries",
            Stat::BytesShipped => "meshaudit_bytes_shipped",
            Stat::BufferedEvents => "meshaudit_buffered_events",
        }
    }

    pub fn kind(self) -> StatKind {
        match self {
            Stat::BufferedEvents => StatKind::Gauge,
            _ => StatKind::Counter,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Stat deltas accumulated between ticks (the glue applies them with
/// `increment_metric`, so the request path makes no stat hostcall).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatDeltas([i64; Stat::COUNT]);

impl StatDeltas {
    pub fn add(&mut self, stat: Stat, n: i64) {
        let slot = &mut self.0[stat.index()];
        *slot = slot.saturating_add(n);
    }

    pub fn get(&self, stat: Stat) -> i64 {
        self.0[stat.index()]
    }

    /// The non-zero deltas.
    pub fn nonzero(&self) -> impl Iterator<Item = (Stat, i64)> + '_ {
        Stat::ALL
            .into_iter()
            .map(|s| (s, self.get(s)))
            .filter(|(_, v)| *v != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prefixed_and_only_the_buffer_is_a_gauge() {
        let mut names: Vec<&str> = Stat::ALL.iter().map(|s| s.name()).collect();
        assert!(names.iter().all(|n| n.starts_with("meshaudit_")));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Stat::COUNT);
        let gauges: Vec<Stat> = Stat::ALL
            .into_iter()
            .filter(|s| s.kind() == StatKind::Gauge)
            .collect();
        assert_eq!(gauges, vec![Stat::BufferedEvents]);
        for (i, s) in Stat::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
        }
    }

    #[test]
    fn deltas_add_and_list_what_moved() {
        let mut d = StatDeltas::default();
        d.add(Stat::Captured, 2);
        d.add(Stat::BufferedEvents, -1);
        d.add(Stat::Captured, 1);
        assert_eq!(d.get(Stat::Captured), 3);
        let moved: Vec<(Stat, i64)> = d.nonzero().collect();
        assert_eq!(moved, vec![(Stat::Captured, 3), (Stat::BufferedEvents, -1)]);
    }
}
