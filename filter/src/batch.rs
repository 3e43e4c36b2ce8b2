//! The per-VM buffer, batcher and retry schedule (SPEC §6, §8). Pure: the
//! clock (`now_ms`), randomness and the event serialiser are passed in; the
//! glue turns [`Shipper::next_dispatch`] into `dispatch_http_call` and feeds
//! answers back through [`Shipper::on_answer`].
//!
//! Memory is bounded by `max_buffered_events` / `max_buffered_bytes` over
//! everything held (records not yet serialised and batches not yet
//! acknowledged); every drop is counted by reason.

use crate::capture::RequestRecord;
use crate::config::{Config, MAX_EVENT_BYTES};
use meshaudit_event::integrity::batch_signature;
use std::collections::VecDeque;

/// Batches a VM keeps in flight at once (outside shutdown).
pub const MAX_INFLIGHT_BATCHES: usize = 8;

/// Records turned into event lines per tick (outside shutdown): the tick runs
/// on the worker thread, so a burst is spread over several ticks instead of
/// stalling the requests behind it.
pub const MAX_RECORDS_PER_FLUSH: usize = 500;

/// Stat deltas accumulated between ticks (the glue applies them with
/// `increment_metric`, so the request path makes no stat hostcall).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatDeltas {
    pub captured: u64,
    pub skipped: u64,
    pub dropped_buffer_full: u64,
    pub dropped_retries_exhausted: u64,
    pub dropped_rejected: u64,
    pub dropped_too_large: u64,
    pub batches_ok: u64,
    pub batches_failed: u64,
    pub batch_retries: u64,
    pub bytes_shipped: u64,
    pub buffered_events: i64,
}

/// How one dispatch of a batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The collector answered with this `:status` (and `Retry-After` seconds, if any).
    Status {
        status: u32,
        retry_after_s: Option<u64>,
    },
    /// No usable answer: timeout, reset, refused dispatch, no `:status`.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Waiting { ready_at_ms: u64 },
    InFlight { token: u32 },
}

/// One batch: the exact bytes sent on every attempt, and its idempotency key.
#[derive(Debug, Clone)]
pub struct Batch {
    pub seq: u64,
    pub idempotency_key: String,
    pub body: Vec<u8>,
    pub events: usize,
    /// Attempts made so far.
    pub attempts: u32,
    state: State,
}

/// The per-VM shipping state.
#[derive(Debug)]
pub struct Shipper {
    batch_max_events: usize,
    batch_max_bytes: usize,
    flush_interval_ms: u64,
    max_buffered_events: usize,
    max_buffered_bytes: usize,
    retries: u32,
    backoff_ms: u64,
    max_backoff_ms: u64,
    pending: VecDeque<(RequestRecord, usize)>,
    pending_bytes: usize,
    batches: Vec<Batch>,
    batch_bytes: usize,
    batch_events: usize,
    next_seq: u64,
    last_flush_ms: u64,
    dropped_total: u64,
    shutting_down: bool,
    pub stats: StatDeltas,
}

/// Full-jitter exponential backoff before attempt `attempt + 1` (attempt ≥ 1
/// failed so far): uniform in [0, min(max, base · 2^(attempt-1))], at least
/// `Retry-After` (capped at `max`).
pub fn backoff_delay_ms(
    base_ms: u64,
    max_ms: u64,
    attempt: u32,
    retry_after_s: Option<u64>,
    random: u64,
) -> u64 {
    let exp = attempt.saturating_sub(1).min(40);
    let ceiling = base_ms.saturating_mul(1u64 << exp).min(max_ms);
    let jittered = random % ceiling.saturating_add(1);
    let floor = retry_after_s.map_or(0, |s| s.saturating_mul(1000).min(max_ms));
    jittered.max(floor)
}

impl Shipper {
    pub fn new(cfg: &Config, now_ms: u64) -> Self {
        Shipper {
            batch_max_events: cfg.batch_max_events,
            batch_max_bytes: cfg.batch_max_bytes,
            flush_interval_ms: cfg.flush_interval_ms,
            max_buffered_events: cfg.max_buffered_events,
            max_buffered_bytes: cfg.max_buffered_bytes,
            retries: cfg.retries,
            backoff_ms: cfg.backoff_ms,
            max_backoff_ms: cfg.max_backoff_ms,
            pending: VecDeque::new(),
            pending_bytes: 0,
            batches: Vec::new(),
            batch_bytes: 0,
            batch_events: 0,
            next_seq: 1,
            last_flush_ms: now_ms,
            dropped_total: 0,
            shutting_down: false,
            stats: StatDeltas::default(),
        }
    }

    /// Events held (pending and in batches).
    pub fn buffered_events(&self) -> usize {
        self.pending.len() + self.batch_events
    }

    /// Bytes held (approximate for records, exact for batch bodies).
    pub fn buffered_bytes(&self) -> usize {
        self.pending_bytes + self.batch_bytes
    }

    /// Events this VM has dropped so far, all reasons (`X-Meshaudit-Dropped`).
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Whether nothing is held any more.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.batches.is_empty()
    }

    pub fn count_skipped(&mut self) {
        self.stats.skipped += 1;
    }

    /// Takes a finished request; `false` (and counted) when the buffer is full.
    pub fn admit(&mut self, record: RequestRecord) -> bool {
        let size = record.approx_bytes();
        if self.buffered_events() >= self.max_buffered_events
            || self.buffered_bytes().saturating_add(size) > self.max_buffered_bytes
        {
            self.stats.dropped_buffer_full += 1;
            self.dropped_total += 1;
            return false;
        }
        self.pending.push_back((record, size));
        self.pending_bytes += size;
        self.stats.captured += 1;
        self.stats.buffered_events += 1;
        true
    }

    /// Whether pending records should become batches now.
    pub fn should_flush(&self, now_ms: u64) -> bool {
        !self.pending.is_empty()
            && (self.shutting_down
                || self.pending.len() >= self.batch_max_events
                || now_ms.saturating_sub(self.last_flush_ms) >= self.flush_interval_ms)
    }

    /// Serialises pending records (`line` makes one sealed event line) —
    /// all of them at shutdown, at most [`MAX_RECORDS_PER_FLUSH`] otherwise —
    /// and packs the lines into batches by count and bytes. `new_key` makes
    /// an idempotency key per batch.
    pub fn flush(
        &mut self,
        now_ms: u64,
        mut line: impl FnMut(RequestRecord) -> Vec<u8>,
        mut new_key: impl FnMut() -> String,
    ) {
        self.last_flush_ms = now_ms;
        let limit = if self.shutting_down {
            usize::MAX
        } else {
            MAX_RECORDS_PER_FLUSH
        };
        let mut body: Vec<u8> = Vec::new();
        let mut events = 0usize;
        let mut taken = 0usize;
        while taken < limit {
            let Some((record, size)) = self.pending.pop_front() else {
                break;
            };
            taken += 1;
            self.pending_bytes = self.pending_bytes.saturating_sub(size);
            let mut l = line(record);
            l.push(b'\n');
            if l.len() > MAX_EVENT_BYTES {
                self.stats.dropped_too_large += 1;
                self.stats.buffered_events -= 1;
                self.dropped_total += 1;
                continue;
            }
            if events > 0
                && (events >= self.batch_max_events || body.len() + l.len() > self.batch_max_bytes)
            {
                self.push_batch(std::mem::take(&mut body), events, now_ms, &mut new_key);
                events = 0;
            }
            body.extend_from_slice(&l);
            events += 1;
        }
        if events > 0 {
            self.push_batch(body, events, now_ms, &mut new_key);
        }
    }

    fn push_batch(
        &mut self,
        body: Vec<u8>,
        events: usize,
        now_ms: u64,
        new_key: &mut impl FnMut() -> String,
    ) {
        self.batch_bytes += body.len();
        self.batch_events += events;
        self.batches.push(Batch {
            seq: self.next_seq,
            idempotency_key: new_key(),
            body,
            events,
            attempts: 0,
            state: State::Waiting {
                ready_at_ms: now_ms,
            },
        });
        self.next_seq += 1;
    }

    /// The next batch due for an attempt, if the in-flight limit allows.
    /// The caller dispatches it and reports [`Shipper::dispatched`].
    pub fn next_dispatch(&self, now_ms: u64) -> Option<u64> {
        let in_flight = self
            .batches
            .iter()
            .filter(|b| matches!(b.state, State::InFlight { .. }))
            .count();
        if in_flight >= MAX_INFLIGHT_BATCHES && !self.shutting_down {
            return None;
        }
        self.batches
            .iter()
            .filter_map(|b| match b.state {
                State::Waiting { ready_at_ms } if ready_at_ms <= now_ms || self.shutting_down => {
                    Some((ready_at_ms, b.seq))
                }
                _ => None,
            })
            .min()
            .map(|(_, seq)| seq)
    }

    pub fn batch(&self, seq: u64) -> Option<&Batch> {
        self.batches.iter().find(|b| b.seq == seq)
    }

    /// The dispatch of `seq` was accepted by the host (`token`), or refused
    /// (`None`: counted as a failed attempt).
    pub fn dispatched(&mut self, seq: u64, token: Option<u32>, now_ms: u64, random: u64) {
        let Some(b) = self.batches.iter_mut().find(|b| b.seq == seq) else {
            return;
        };
        b.attempts += 1;
        match token {
            Some(token) => b.state = State::InFlight { token },
            None => self.after_attempt(seq, Answer::Failed, now_ms, random),
        }
    }

    /// The answer to the call `token`; returns whether the token was ours.
    pub fn on_answer(&mut self, token: u32, answer: Answer, now_ms: u64, random: u64) -> bool {
        let Some(seq) = self
            .batches
            .iter()
            .find(|b| b.state == State::InFlight { token })
            .map(|b| b.seq)
        else {
            return false;
        };
        self.after_attempt(seq, answer, now_ms, random);
        true
    }

    fn after_attempt(&mut self, seq: u64, answer: Answer, now_ms: u64, random: u64) {
        let Some(i) = self.batches.iter().position(|b| b.seq == seq) else {
            return;
        };
        let (retryable, retry_after_s) = match answer {
            Answer::Status { status, .. } if (200..300).contains(&status) => {
                let b = self.batches.swap_remove(i);
                self.stats.batches_ok += 1;
                self.stats.bytes_shipped += b.body.len() as u64;
                self.release(&b);
                return;
            }
            Answer::Status {
                status,
                retry_after_s,
            } if status == 429 || status >= 500 => (true, retry_after_s),
            Answer::Status { .. } => (false, None),
            Answer::Failed => (true, None),
        };
        let attempts = self.batches[i].attempts;
        if retryable && attempts <= self.retries {
            let delay = backoff_delay_ms(
                self.backoff_ms,
                self.max_backoff_ms,
                attempts,
                retry_after_s,
                random,
            );
            self.stats.batch_retries += 1;
            self.batches[i].state = State::Waiting {
                ready_at_ms: now_ms.saturating_add(delay),
            };
            return;
        }
        let b = self.batches.swap_remove(i);
        self.stats.batches_failed += 1;
        if retryable {
            self.stats.dropped_retries_exhausted += b.events as u64;
        } else {
            self.stats.dropped_rejected += b.events as u64;
        }
        self.dropped_total += b.events as u64;
        self.release(&b);
    }

    fn release(&mut self, b: &Batch) {
        self.batch_bytes = self.batch_bytes.saturating_sub(b.body.len());
        self.batch_events = self.batch_events.saturating_sub(b.events);
        self.stats.buffered_events -= b.events as i64;
    }

    /// VM shutdown: everything pending is flushed and every waiting batch
    /// becomes due at once.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Takes the stat deltas accumulated since the last call.
    pub fn take_stats(&mut self) -> StatDeltas {
        std::mem::take(&mut self.stats)
    }
}

/// The headers of one attempt (SPEC §6): signed afresh with `ts_secs`.
pub fn attempt_headers(
    cfg: &Config,
    batch: &Batch,
    ts_secs: u64,
    source: &str,
    dropped_total: u64,
) -> Vec<(&'static str, String)> {
    let mut h: Vec<(&'static str, String)> = vec![
        (":method", "POST".to_owned()),
        (":path", cfg.collector_path.clone()),
        (":authority", cfg.collector_authority.clone()),
        ("content-type", "application/x-ndjson".to_owned()),
        ("x-idempotency-key", batch.idempotency_key.clone()),
        ("x-meshaudit-source", source.to_owned()),
        ("x-meshaudit-batch-seq", batch.seq.to_string()),
        ("x-meshaudit-dropped", dropped_total.to_string()),
    ];
    if let Some(key) = &cfg.api_key {
        h.push(("x-api-key", key.expose().to_owned()));
    }
    if let Some(secret) = &cfg.signing_secret {
        let ts = ts_secs.to_string();
        h.push((
            "x-signature",
            batch_signature(secret.bytes(), &ts, &batch.body),
        ));
        h.push(("x-signature-ts", ts));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use meshaudit_event::integrity::verify_batch_signature;
    use std::collections::BTreeMap;

    fn cfg(json: &str) -> Config {
        match parse(json.as_bytes(), &BTreeMap::<String, String>::new()) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn line(r: RequestRecord) -> Vec<u8> {
        format!("{{\"path\":\"{}\"}}", r.request.path).into_bytes()
    }

    fn rec(path: &str) -> RequestRecord {
        let mut r = RequestRecord::default();
        r.request.path = path.to_owned();
        r
    }

    fn keys() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("key-{n}")
        }
    }

    #[test]
    fn batches_by_count_and_interval() {
        let c = cfg(r#"{"collector_cluster":"c","batch_max_events":2,"flush_interval_ms":1000}"#);
        let mut s = Shipper::new(&c, 0);
        assert!(s.admit(rec("/a")));
        assert!(!s.should_flush(10));
        assert!(s.should_flush(1000));
        assert!(s.admit(rec("/b")));
        assert!(s.should_flush(10));
        assert!(s.admit(rec("/c")));
        s.flush(10, line, keys());
        assert_eq!(s.batches.len(), 2);
        assert_eq!(s.batches[0].events, 2);
        assert_eq!(s.batches[0].body, b"{\"path\":\"/a\"}\n{\"path\":\"/b\"}\n");
        assert_eq!(s.batches[1].seq, 2);
        assert_eq!(s.buffered_events(), 3);
        assert_eq!(s.stats.captured, 3);
    }

    #[test]
    fn a_burst_is_spread_over_ticks_but_shutdown_takes_everything() {
        let c = cfg(r#"{"collector_cluster":"c","max_buffered_events":100000}"#);
        let mut s = Shipper::new(&c, 0);
        for i in 0..(MAX_RECORDS_PER_FLUSH + 250) {
            s.admit(rec(&format!("/{i}")));
        }
        assert!(s.should_flush(1));
        s.flush(1, line, keys());
        assert_eq!(s.pending.len(), 250);
        assert_eq!(s.batch_events, MAX_RECORDS_PER_FLUSH);
        assert!(s.should_flush(2), "the rest is still over a batch");
        s.begin_shutdown();
        s.flush(2, line, keys());
        assert!(s.pending.is_empty());
        assert_eq!(s.buffered_events(), MAX_RECORDS_PER_FLUSH + 250);
    }

    #[test]
    fn batches_by_bytes_and_a_big_event_goes_alone() {
        let c = cfg(r#"{"collector_cluster":"c","batch_max_bytes":40}"#);
        let mut s = Shipper::new(&c, 0);
        s.admit(rec("/a"));
        s.admit(rec(&"x".repeat(100)));
        s.admit(rec("/b"));
        s.admit(rec("/c"));
        s.flush(0, line, keys());
        let sizes: Vec<usize> = s.batches.iter().map(|b| b.events).collect();
        assert_eq!(sizes, vec![1, 1, 2]);
    }

    #[test]
    fn too_large_events_are_dropped_and_counted() {
        let c = cfg(r#"{"collector_cluster":"c"}"#);
        let mut s = Shipper::new(&c, 0);
        s.admit(rec("/a"));
        s.flush(0, |_| vec![b'x'; MAX_EVENT_BYTES + 1], keys());
        assert!(s.batches.is_empty());
        assert_eq!(s.stats.dropped_too_large, 1);
        assert_eq!(s.stats.buffered_events, 0);
        assert_eq!(s.dropped_total(), 1);
    }

    #[test]
    fn full_buffer_drops_new_events() {
        let c = cfg(r#"{"collector_cluster":"c","max_buffered_events":2}"#);
        let mut s = Shipper::new(&c, 0);
        assert!(s.admit(rec("/a")));
        assert!(s.admit(rec("/b")));
        assert!(!s.admit(rec("/c")));
        assert_eq!(s.stats.dropped_buffer_full, 1);
        s.flush(0, line, keys());
        // batches still count against the bound until acknowledged
        assert!(!s.admit(rec("/d")));
        let seq = s.next_dispatch(0).unwrap_or(0);
        s.dispatched(seq, Some(7), 0, 0);
        assert!(s.on_answer(
            7,
            Answer::Status {
                status: 200,
                retry_after_s: None
            },
            1,
            0
        ));
        assert!(s.admit(rec("/e")));
        assert_eq!(s.stats.buffered_events, 1);
        let c = cfg(r#"{"collector_cluster":"c","max_buffered_bytes":600}"#);
        let mut s = Shipper::new(&c, 0);
        assert!(s.admit(rec("/a")));
        assert!(!s.admit(rec("/b")));
    }

    #[test]
    fn retries_keep_bytes_and_key_then_give_up() {
        let c = cfg(r#"{"collector_cluster":"c","retries":2,"backoff_ms":100}"#);
        let mut s = Shipper::new(&c, 0);
        s.admit(rec("/a"));
        s.flush(0, line, keys());
        let body = s.batches[0].body.clone();
        let mut now = 0;
        for attempt in 1..=3u32 {
            let seq = match s.next_dispatch(now) {
                Some(seq) => seq,
                None => panic!("attempt {attempt} not due at {now}"),
            };
            let b = s
                .batch(seq)
                .map(|b| (b.body.clone(), b.idempotency_key.clone()));
            assert_eq!(b, Some((body.clone(), "key-1".to_owned())));
            s.dispatched(seq, Some(attempt), now, u64::MAX);
            assert!(s.on_answer(
                attempt,
                Answer::Status {
                    status: 503,
                    retry_after_s: None
                },
                now,
                u64::MAX
            ));
            now += 100_000;
        }
        assert!(s.is_idle());
        assert_eq!(s.stats.batch_retries, 2);
        assert_eq!(s.stats.batches_failed, 1);
        assert_eq!(s.stats.dropped_retries_exhausted, 1);
        assert_eq!(s.dropped_total(), 1);
        assert_eq!(s.stats.buffered_events, 0);
    }

    #[test]
    fn client_errors_are_final_and_timeouts_retry() {
        let c = cfg(r#"{"collector_cluster":"c"}"#);
        let mut s = Shipper::new(&c, 0);
        s.admit(rec("/a"));
        s.flush(0, line, keys());
        s.dispatched(1, Some(1), 0, 0);
        s.on_answer(
            1,
            Answer::Status {
                status: 401,
                retry_after_s: None,
            },
            0,
            0,
        );
        assert!(s.is_idle());
        assert_eq!(s.stats.dropped_rejected, 1);
        assert_eq!(s.stats.batch_retries, 0);

        s.admit(rec("/b"));
        s.flush(0, line, keys());
        s.dispatched(2, None, 0, 0); // refused dispatch
        assert_eq!(s.stats.batch_retries, 1);
        let seq = s.next_dispatch(1_000).unwrap_or(0);
        s.dispatched(seq, Some(9), 1_000, 0);
        s.on_answer(9, Answer::Failed, 1_000, 0);
        assert_eq!(s.stats.batch_retries, 2);
        assert!(!s.on_answer(12345, Answer::Failed, 0, 0));
    }

    #[test]
    fn retry_after_is_honoured() {
        let c = cfg(r#"{"collector_cluster":"c","backoff_ms":100}"#);
        let mut s = Shipper::new(&c, 0);
        s.admit(rec("/a"));
        s.flush(0, line, keys());
        s.dispatched(1, Some(1), 0, 0);
        s.on_answer(
            1,
            Answer::Status {
                status: 429,
                retry_after_s: Some(2),
            },
            0,
            0,
        );
        assert_eq!(s.next_dispatch(1_999), None);
        assert_eq!(s.next_dispatch(2_000), Some(1));
    }

    #[test]
    fn backoff_is_exponential_with_full_jitter() {
        assert_eq!(
            backoff_delay_ms(100, 30_000, 1, None, u64::MAX),
            u64::MAX % 101
        );
        for attempt in 1..10 {
            let ceiling = (100u64 << (attempt - 1)).min(1_000);
            for r in [0u64, 1, 99, 12345, u64::MAX] {
                let d = backoff_delay_ms(100, 1_000, attempt, None, r);
                assert!(d <= ceiling, "attempt {attempt}: {d} > {ceiling}");
            }
            assert_eq!(
                backoff_delay_ms(100, 1_000, attempt, None, ceiling),
                ceiling
            );
        }
        assert_eq!(backoff_delay_ms(100, 30_000, 1, Some(5), 0), 5_000);
        assert_eq!(backoff_delay_ms(100, 30_000, 1, Some(3_600), 0), 30_000);
        assert_eq!(backoff_delay_ms(100, 30_000, 200, None, 0), 0);
    }

    #[test]
    fn in_flight_limit_and_shutdown() {
        let c = cfg(r#"{"collector_cluster":"c","batch_max_events":1}"#);
        let mut s = Shipper::new(&c, 0);
        for i in 0..(MAX_INFLIGHT_BATCHES + 2) {
            s.admit(rec(&format!("/{i}")));
        }
        s.flush(0, line, keys());
        let mut token = 0;
        while let Some(seq) = s.next_dispatch(0) {
            token += 1;
            s.dispatched(seq, Some(token), 0, 0);
        }
        assert_eq!(token as usize, MAX_INFLIGHT_BATCHES);
        s.begin_shutdown();
        assert!(s.next_dispatch(0).is_some());
    }

    #[test]
    fn headers_are_signed_per_attempt() {
        let c = cfg(r#"{"collector_cluster":"c","api_key":"ak","signing_secret":"ss"}"#);
        let mut s = Shipper::new(&c, 0);
        s.admit(rec("/a"));
        s.flush(0, line, keys());
        let b = &s.batches[0];
        let h = attempt_headers(&c, b, 1_700_000_000, "ns/pod", 3);
        let get = |name: &str| h.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
        assert_eq!(get("x-api-key").as_deref(), Some("ak"));
        assert_eq!(get("x-meshaudit-source").as_deref(), Some("ns/pod"));
        assert_eq!(get("x-meshaudit-batch-seq").as_deref(), Some("1"));
        assert_eq!(get("x-meshaudit-dropped").as_deref(), Some("3"));
        assert_eq!(get("x-idempotency-key").as_deref(), Some("key-1"));
        assert_eq!(get(":authority").as_deref(), Some("c"));
        let sig = get("x-signature").unwrap_or_default();
        assert!(verify_batch_signature(
            &[b"ss".to_vec()],
            "1700000000",
            &b.body,
            &sig
        ));
        let later = attempt_headers(&c, b, 1_700_000_007, "ns/pod", 3);
        assert_ne!(later, h);
    }
}
