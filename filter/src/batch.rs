//! The per-VM buffer, batcher and retry schedule (SPEC §6, §8). Pure: the
//! clock (`now_ms`), randomness and the line writer are passed in. The glue
//! asks [`Shipper::next_attempt`] for what to dispatch, reports the host's
//! token with [`Shipper::sent`] and feeds answers back through
//! [`Shipper::on_answer`].
//!
//! Each event line is written once, straight into the open batch's body,
//! with its raw hash kept beside it: the batch HMAC of the `digest` scheme
//! (SPEC §10) covers the SHA-256 of those hashes, so event bytes are hashed
//! once. Memory is bounded by `max_buffered_events` / `max_buffered_bytes`
//! over every batch not yet acknowledged; a full buffer refuses an event
//! before it is built. Every drop is counted by reason.

use crate::config::{Config, SignatureScheme, MAX_EVENT_BYTES};
use crate::stats::{Stat, StatDeltas};
use hmac::{Hmac, Mac};
use meshaudit_event::integrity::batch_digest;
use meshaudit_event::line::{lower_hex, push_hex};
use meshaudit_event::schema::new_uuid_v4;
use meshaudit_event::workload_key::{BatchSignature, SignerKey};
use sha2::Sha256;

/// Batches a VM keeps in flight at once (outside shutdown).
pub const MAX_INFLIGHT_BATCHES: usize = 8;

/// Acknowledged batch bodies kept for reuse, so a steady stream of batches
/// does not allocate (and grow) a fresh body each time.
const SPARE_BODIES: usize = 2;

/// How one dispatch of a batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The collector answered with this `:status`, `Retry-After` seconds (if
    /// any) and, for a refusal, the 1-based lines it named (SPEC §6 `line` /
    /// `lines`).
    Status {
        status: u32,
        retry_after_s: Option<u64>,
        bad_lines: Vec<usize>,
    },
    /// No usable answer: timeout, reset, refused dispatch, no `:status`.
    Failed,
}

impl Answer {
    pub fn status(status: u32) -> Answer {
        Answer::Status {
            status,
            retry_after_s: None,
            bad_lines: Vec::new(),
        }
    }
}

/// Whether the glue should read the body of an answer with this status: only
/// refusals that may name lines (the body of a `200` is never read).
pub fn answer_body_wanted(status: u32) -> bool {
    status == 400 || status == 422
}

/// The answer from a dispatch's response header pairs; `body` is asked for
/// only when [`answer_body_wanted`].
pub fn parse_answer(headers: &[(&[u8], &[u8])], body: impl FnOnce() -> Option<Vec<u8>>) -> Answer {
    let mut status = None;
    let mut retry_after_s = None;
    for &(name, value) in headers {
        let value = std::str::from_utf8(value).map(str::trim).unwrap_or("");
        match name {
            b":status" => status = value.parse::<u32>().ok().filter(|s| (100..600).contains(s)),
            b"retry-after" => retry_after_s = value.parse::<u64>().ok(),
            _ => {}
        }
    }
    let Some(status) = status else {
        return Answer::Failed;
    };
    let bad_lines = if answer_body_wanted(status) {
        body().map(|b| named_lines(&b)).unwrap_or_default()
    } else {
        Vec::new()
    };
    Answer::Status {
        status,
        retry_after_s,
        bad_lines,
    }
}

/// The lines an error body names: `"line": n` or `"lines": [n, …]` (1-based).
fn named_lines(body: &[u8]) -> Vec<usize> {
    use meshaudit_event::Value;
    let Ok(v) = meshaudit_event::parse(body) else {
        return Vec::new();
    };
    let as_line = |v: &Value| v.as_i64().and_then(|n| usize::try_from(n).ok());
    let mut lines: Vec<usize> = match (v.get("line"), v.get("lines")) {
        (Some(n), _) => as_line(n).into_iter().collect(),
        (None, Some(Value::Array(ns))) => ns.iter().filter_map(as_line).collect(),
        _ => Vec::new(),
    };
    lines.retain(|&n| n > 0);
    lines.sort_unstable();
    lines.dedup();
    lines
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
    /// End offset (after the newline) of each line.
    ends: Vec<usize>,
    /// Raw event hash of each line, in order (the batch digest).
    hashes: Vec<[u8; 32]>,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the first attempt was made (the retry window starts there).
    first_attempt_ms: Option<u64>,
    state: State,
}

impl Batch {
    pub fn events(&self) -> usize {
        self.ends.len()
    }

    /// `batch_digest` over the events' raw hashes (SPEC §10).
    pub fn digest(&self) -> [u8; 32] {
        batch_digest(self.hashes.iter())
    }

    /// The batch without the given 1-based lines (out-of-range ones ignored).
    fn without_lines(&self, bad: &[usize]) -> (Vec<u8>, Vec<usize>, Vec<[u8; 32]>) {
        let mut body = Vec::with_capacity(self.body.len());
        let mut ends = Vec::with_capacity(self.ends.len());
        let mut hashes = Vec::with_capacity(self.hashes.len());
        let mut start = 0;
        for (i, (&end, hash)) in self.ends.iter().zip(&self.hashes).enumerate() {
            if !bad.contains(&(i + 1)) {
                if let Some(line) = self.body.get(start..end) {
                    body.extend_from_slice(line);
                    ends.push(body.len());
                    hashes.push(*hash);
                }
            }
            start = end;
        }
        (body, ends, hashes)
    }
}

/// One attempt to dispatch: everything `dispatch_http_call` needs.
#[derive(Debug)]
pub struct Attempt<'a> {
    pub seq: u64,
    pub headers: Vec<(&'static str, String)>,
    pub body: &'a [u8],
}

/// What every attempt of this VM carries, prepared once (the batch HMAC key
/// is keyed once).
struct Transport {
    path: String,
    authority: String,
    api_key: Option<String>,
    source: String,
    mac: Option<Hmac<Sha256>>,
    scheme: SignatureScheme,
    /// SPEC §10: signs `X-Meshaudit-Batch-Signature`.
    batch_key: Option<SignerKey>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("path", &self.path)
            .field("authority", &self.authority)
            .field("source", &self.source)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl Transport {
    fn new(cfg: &Config, source: &str) -> Self {
        Transport {
            path: cfg.collector_path.clone(),
            authority: cfg.collector_authority.clone(),
            api_key: cfg.api_key.as_ref().map(|k| k.expose().to_owned()),
            source: source.to_owned(),
            mac: cfg
                .signing_secret
                .as_ref()
                .and_then(|s| Hmac::<Sha256>::new_from_slice(s.bytes()).ok()),
            scheme: cfg.signature_scheme,
            batch_key: cfg.batch_signing_key.clone(),
        }
    }

    /// The headers of one attempt (SPEC §6, §10): signed afresh with `ts_secs`.
    fn headers(
        &self,
        batch: &Batch,
        ts_secs: u64,
        dropped_total: u64,
    ) -> Vec<(&'static str, String)> {
        let mut h: Vec<(&'static str, String)> = vec![
            (":method", "POST".to_owned()),
            (":path", self.path.clone()),
            (":authority", self.authority.clone()),
            ("content-type", "application/x-ndjson".to_owned()),
            ("x-idempotency-key", batch.idempotency_key.clone()),
            ("x-meshaudit-source", self.source.clone()),
            ("x-meshaudit-batch-seq", batch.seq.to_string()),
            ("x-meshaudit-dropped", dropped_total.to_string()),
        ];
        if let Some(key) = &self.api_key {
            h.push(("x-api-key", key.clone()));
        }
        if let Some(key) = &self.batch_key {
            // SPEC §10: over this attempt's lines (a re-send without refused
            // lines has another digest), its source and batch seq.
            let seq = batch.seq.to_string();
            let sig = BatchSignature::sign(key, &self.source, &seq, &batch.digest());
            h.push(("x-meshaudit-batch-signature", sig.header_value()));
        }
        if let Some(mac) = &self.mac {
            let ts = ts_secs.to_string();
            let mut mac = mac.clone();
            mac.update(ts.as_bytes());
            mac.update(b".");
            match self.scheme {
                SignatureScheme::Digest => {
                    let mut digest_hex = Vec::with_capacity(64);
                    push_hex(&batch.digest(), &mut digest_hex);
                    mac.update(&digest_hex);
                    h.push(("x-signature-scheme", "digest".to_owned()));
                }
                SignatureScheme::Body => mac.update(&batch.body),
            }
            let sig = format!("sha256={}", lower_hex(&mac.finalize().into_bytes()));
            h.push(("x-signature", sig));
            h.push(("x-signature-ts", ts));
        }
        h
    }
}

/// The batch being filled.
#[derive(Debug, Default)]
struct Open {
    body: Vec<u8>,
    ends: Vec<usize>,
    hashes: Vec<[u8; 32]>,
    since_ms: u64,
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
    max_retry_window_ms: u64,
    transport: Transport,
    open: Open,
    batches: Vec<Batch>,
    spare: Vec<Vec<u8>>,
    batch_bytes: usize,
    batch_events: usize,
    next_seq: u64,
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

/// The longest a line may be: the collector's default limit, less the newline.
pub const MAX_LINE_BYTES: usize = MAX_EVENT_BYTES - 1;

impl Shipper {
    pub fn new(cfg: &Config, source: &str, now_ms: u64) -> Self {
        Shipper {
            batch_max_events: cfg.batch_max_events,
            batch_max_bytes: cfg.batch_max_bytes,
            flush_interval_ms: cfg.flush_interval_ms,
            max_buffered_events: cfg.max_buffered_events,
            max_buffered_bytes: cfg.max_buffered_bytes,
            retries: cfg.retries,
            backoff_ms: cfg.backoff_ms,
            max_backoff_ms: cfg.max_backoff_ms,
            max_retry_window_ms: cfg.max_retry_window_ms,
            transport: Transport::new(cfg, source),
            open: Open {
                since_ms: now_ms,
                ..Open::default()
            },
            batches: Vec::new(),
            spare: Vec::new(),
            batch_bytes: 0,
            batch_events: 0,
            next_seq: 1,
            dropped_total: 0,
            shutting_down: false,
            stats: StatDeltas::default(),
        }
    }

    /// Events held (in the open batch and in batches not yet acknowledged).
    pub fn buffered_events(&self) -> usize {
        self.open.ends.len() + self.batch_events
    }

    /// Bytes held (exact: the NDJSON bodies).
    pub fn buffered_bytes(&self) -> usize {
        self.open.body.len() + self.batch_bytes
    }

    fn has_room(&self) -> bool {
        self.buffered_events() < self.max_buffered_events
            && self.buffered_bytes() < self.max_buffered_bytes
    }

    /// Events this VM has dropped so far, all reasons (`X-Meshaudit-Dropped`).
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Whether nothing is held any more.
    pub fn is_idle(&self) -> bool {
        self.open.ends.is_empty() && self.batches.is_empty()
    }

    pub fn count_skipped(&mut self) {
        self.stats.add(Stat::Skipped, 1);
    }

    fn drop_events(&mut self, stat: Stat, n: usize) {
        self.stats.add(stat, n as i64);
        self.dropped_total += n as u64;
    }

    /// Takes one finished request: `write` appends its sealed line (no
    /// newline, at most [`MAX_LINE_BYTES`]) to the open batch and returns the
    /// raw event hash, or `None` when the event is too large (nothing
    /// appended). A full buffer refuses the event before it is built.
    /// Returns whether the event was captured.
    pub fn capture(
        &mut self,
        now_ms: u64,
        write: impl FnOnce(&mut Vec<u8>) -> Option<[u8; 32]>,
        new_key: impl FnOnce() -> String,
    ) -> bool {
        if !self.has_room() {
            self.drop_events(Stat::DroppedBufferFull, 1);
            return false;
        }
        if self.open.ends.is_empty() {
            self.open.since_ms = now_ms;
            if self.open.body.capacity() == 0 {
                self.open.body = self.spare.pop().unwrap_or_default();
            }
        }
        let start = self.open.body.len();
        let Some(hash) = write(&mut self.open.body) else {
            self.open.body.truncate(start);
            self.drop_events(Stat::DroppedTooLarge, 1);
            return false;
        };
        self.open.body.push(b'\n');
        self.stats.add(Stat::Captured, 1);
        self.stats.add(Stat::BufferedEvents, 1);
        if !self.open.ends.is_empty() && self.open.body.len() > self.batch_max_bytes {
            // This line starts the next batch: an event larger than
            // `batch_max_bytes` goes alone.
            let line = self.open.body.split_off(start);
            self.seal_open(now_ms, new_key);
            self.open.body = line;
            self.open.since_ms = now_ms;
            self.open.ends.push(self.open.body.len());
            self.open.hashes.push(hash);
            return true;
        }
        self.open.ends.push(self.open.body.len());
        self.open.hashes.push(hash);
        if self.open.ends.len() >= self.batch_max_events {
            self.seal_open(now_ms, new_key);
        }
        true
    }

    /// Whether the open batch should be sealed now (its age, or shutdown).
    pub fn should_flush(&self, now_ms: u64) -> bool {
        !self.open.ends.is_empty()
            && (self.shutting_down
                || now_ms.saturating_sub(self.open.since_ms) >= self.flush_interval_ms)
    }

    /// Seals the open batch (if it holds events) with a fresh idempotency key.
    pub fn flush(&mut self, now_ms: u64, new_key: impl FnOnce() -> String) {
        if !self.open.ends.is_empty() {
            self.seal_open(now_ms, new_key);
        }
    }

    fn seal_open(&mut self, now_ms: u64, new_key: impl FnOnce() -> String) {
        let mut open = std::mem::take(&mut self.open);
        self.open.since_ms = now_ms;
        // A batch may wait a while (retries, a full buffer): keep only its
        // bytes, not the slack of a doubling buffer.
        if open.body.capacity() - open.body.len() > open.body.len() / 8 {
            open.body.shrink_to_fit();
        }
        self.push_batch(open.body, open.ends, open.hashes, new_key(), now_ms);
    }

    fn push_batch(
        &mut self,
        body: Vec<u8>,
        ends: Vec<usize>,
        hashes: Vec<[u8; 32]>,
        idempotency_key: String,
        now_ms: u64,
    ) {
        self.batch_bytes += body.len();
        self.batch_events += ends.len();
        self.batches.push(Batch {
            seq: self.next_seq,
            idempotency_key,
            body,
            ends,
            hashes,
            attempts: 0,
            first_attempt_ms: None,
            state: State::Waiting {
                ready_at_ms: now_ms,
            },
        });
        self.next_seq += 1;
    }

    /// The next attempt due (within the in-flight limit), with its headers
    /// signed at `now_ms`. The caller dispatches it and reports the host's
    /// answer with [`Shipper::sent`].
    pub fn next_attempt(&self, now_ms: u64) -> Option<Attempt<'_>> {
        let in_flight = self
            .batches
            .iter()
            .filter(|b| matches!(b.state, State::InFlight { .. }))
            .count();
        if in_flight >= MAX_INFLIGHT_BATCHES && !self.shutting_down {
            return None;
        }
        let batch = self
            .batches
            .iter()
            .filter_map(|b| match b.state {
                State::Waiting { ready_at_ms } if ready_at_ms <= now_ms || self.shutting_down => {
                    Some((ready_at_ms, b.seq, b))
                }
                _ => None,
            })
            .min_by_key(|(ready, seq, _)| (*ready, *seq))
            .map(|(_, _, b)| b)?;
        Some(Attempt {
            seq: batch.seq,
            headers: self
                .transport
                .headers(batch, now_ms / 1000, self.dropped_total),
            body: &batch.body,
        })
    }

    /// Sealed batches held (waiting or in flight).
    pub fn batch_count(&self) -> usize {
        self.batches.len()
    }

    pub fn batch(&self, seq: u64) -> Option<&Batch> {
        self.batches.iter().find(|b| b.seq == seq)
    }

    /// The dispatch of `seq` was accepted by the host (`token`), or refused
    /// (`None`: counted as a failed attempt).
    pub fn sent(&mut self, seq: u64, token: Option<u32>, now_ms: u64, random: u64) {
        let Some(b) = self.batches.iter_mut().find(|b| b.seq == seq) else {
            return;
        };
        b.attempts += 1;
        b.first_attempt_ms.get_or_insert(now_ms);
        match token {
            Some(token) => b.state = State::InFlight { token },
            None => self.after_attempt(seq, Answer::Failed, now_ms, random, [0; 16]),
        }
    }

    /// The answer to the call `token`; returns whether the token was ours.
    /// `fresh` is randomness for the idempotency key of a batch re-sent
    /// without the lines the collector refused.
    pub fn on_answer(
        &mut self,
        token: u32,
        answer: Answer,
        now_ms: u64,
        random: u64,
        fresh: [u8; 16],
    ) -> bool {
        let Some(seq) = self
            .batches
            .iter()
            .find(|b| b.state == State::InFlight { token })
            .map(|b| b.seq)
        else {
            return false;
        };
        self.after_attempt(seq, answer, now_ms, random, fresh);
        true
    }

    fn after_attempt(
        &mut self,
        seq: u64,
        answer: Answer,
        now_ms: u64,
        random: u64,
        fresh: [u8; 16],
    ) {
        let Some(i) = self.batches.iter().position(|b| b.seq == seq) else {
            return;
        };
        let (retryable, retry_after_s) = match answer {
            Answer::Status { status, .. } if (200..300).contains(&status) => {
                let b = self.batches.swap_remove(i);
                self.stats.add(Stat::BatchesOk, 1);
                self.stats.add(Stat::BytesShipped, b.body.len() as i64);
                self.release(b);
                return;
            }
            Answer::Status {
                status,
                retry_after_s,
                ..
            } if status == 429 || status >= 500 => (true, retry_after_s),
            Answer::Status { bad_lines, .. } => {
                let b = &self.batches[i];
                let named: Vec<usize> =
                    bad_lines.into_iter().filter(|&n| n <= b.events()).collect();
                if !named.is_empty() && named.len() < b.events() {
                    self.resend_without(i, &named, now_ms, fresh);
                    return;
                }
                (false, None)
            }
            Answer::Failed => (true, None),
        };
        let b = &self.batches[i];
        let in_window = b
            .first_attempt_ms
            .is_some_and(|first| now_ms.saturating_sub(first) < self.max_retry_window_ms)
            && self.has_room();
        if retryable && (b.attempts <= self.retries || in_window) {
            let delay = backoff_delay_ms(
                self.backoff_ms,
                self.max_backoff_ms,
                b.attempts,
                retry_after_s,
                random,
            );
            self.stats.add(Stat::BatchRetries, 1);
            self.batches[i].state = State::Waiting {
                ready_at_ms: now_ms.saturating_add(delay),
            };
            return;
        }
        let b = self.batches.swap_remove(i);
        self.stats.add(Stat::BatchesFailed, 1);
        let reason = if retryable {
            Stat::DroppedRetriesExhausted
        } else {
            Stat::DroppedRejected
        };
        self.drop_events(reason, b.events());
        self.release(b);
    }

    /// The collector refused the batch for the lines it named: those events
    /// are dropped (counted as rejected) and the rest goes again as a new
    /// batch — a different body, so a new idempotency key and sequence.
    fn resend_without(&mut self, i: usize, bad: &[usize], now_ms: u64, fresh: [u8; 16]) {
        let old = self.batches.swap_remove(i);
        let (body, ends, hashes) = old.without_lines(bad);
        let removed = old.events() - ends.len();
        self.drop_events(Stat::DroppedRejected, removed);
        self.release(old);
        self.stats.add(Stat::BufferedEvents, ends.len() as i64);
        self.push_batch(body, ends, hashes, new_uuid_v4(fresh), now_ms);
    }

    fn release(&mut self, b: Batch) {
        self.batch_bytes = self.batch_bytes.saturating_sub(b.body.len());
        self.batch_events = self.batch_events.saturating_sub(b.events());
        self.stats.add(Stat::BufferedEvents, -(b.events() as i64));
        if self.spare.len() < SPARE_BODIES && b.body.capacity() <= 2 * self.batch_max_bytes {
            let mut body = b.body;
            body.clear();
            self.spare.push(body);
        }
    }

    /// VM shutdown: the open batch is sealed on the next flush and every
    /// waiting batch becomes due at once.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use meshaudit_event::integrity::{batch_signature, verify_batch_signature};
    use std::collections::BTreeMap;

    fn cfg(json: &str) -> Config {
        match parse(json.as_bytes(), &BTreeMap::<String, String>::new()) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn shipper(json: &str) -> Shipper {
        Shipper::new(&cfg(json), "ns/pod", 0)
    }

    /// A line `{"path":"…"}` whose "hash" is its first byte repeated.
    fn line(path: &str) -> impl FnOnce(&mut Vec<u8>) -> Option<[u8; 32]> + '_ {
        move |out| {
            out.extend_from_slice(format!("{{\"path\":\"{path}\"}}").as_bytes());
            Some([path.len() as u8; 32])
        }
    }

    fn key(n: u32) -> impl FnOnce() -> String {
        move || format!("key-{n}")
    }

    fn ok() -> Answer {
        Answer::status(200)
    }

    /// Dispatches every due attempt with tokens from `next_token`.
    fn dispatch_all(s: &mut Shipper, now: u64, next_token: &mut u32) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Some(seq) = s.next_attempt(now).map(|a| a.seq) {
            *next_token += 1;
            s.sent(seq, Some(*next_token), now, 0);
            seqs.push(seq);
        }
        seqs
    }

    #[test]
    fn batches_by_count_and_interval() {
        let mut s =
            shipper(r#"{"collector_cluster":"c","batch_max_events":2,"flush_interval_ms":1000}"#);
        assert!(s.capture(0, line("/a"), key(1)));
        assert!(!s.should_flush(10));
        assert!(s.should_flush(1000));
        assert!(s.capture(10, line("/b"), key(1)));
        assert_eq!(s.batches.len(), 1, "sealed at the count");
        assert!(!s.should_flush(10));
        assert!(s.capture(10, line("/c"), key(2)));
        s.flush(1010, key(2));
        assert_eq!(s.batches.len(), 2);
        assert_eq!(s.batches[0].events(), 2);
        assert_eq!(s.batches[0].body, b"{\"path\":\"/a\"}\n{\"path\":\"/b\"}\n");
        assert_eq!(s.batches[0].idempotency_key, "key-1");
        assert_eq!(s.batches[1].seq, 2);
        assert_eq!(s.buffered_events(), 3);
        assert_eq!(s.stats.get(Stat::Captured), 3);
    }

    #[test]
    fn batches_by_bytes_and_a_big_event_goes_alone() {
        let mut s = shipper(r#"{"collector_cluster":"c","batch_max_bytes":40}"#);
        let big = "x".repeat(100);
        s.capture(0, line("/a"), key(1));
        s.capture(0, line(&big), key(2));
        s.capture(0, line("/b"), key(3));
        s.capture(0, line("/c"), key(4));
        s.flush(0, key(5));
        let sizes: Vec<usize> = s.batches.iter().map(Batch::events).collect();
        assert_eq!(sizes, vec![1, 1, 2]);
        let bodies: usize = s.batches.iter().map(|b| b.body.len()).sum();
        assert_eq!(s.buffered_bytes(), bodies);
    }

    #[test]
    fn too_large_events_are_dropped_and_counted() {
        let mut s = shipper(r#"{"collector_cluster":"c"}"#);
        assert!(!s.capture(
            0,
            |out| {
                out.extend_from_slice(b"partial");
                None
            },
            key(1)
        ));
        assert!(s.is_idle());
        assert_eq!(s.buffered_bytes(), 0);
        assert_eq!(s.stats.get(Stat::DroppedTooLarge), 1);
        assert_eq!(s.stats.get(Stat::BufferedEvents), 0);
        assert_eq!(s.dropped_total(), 1);
    }

    #[test]
    fn a_full_buffer_refuses_events_before_building_them() {
        let mut s = shipper(r#"{"collector_cluster":"c","max_buffered_events":2}"#);
        assert!(s.capture(0, line("/a"), key(1)));
        assert!(s.capture(0, line("/b"), key(1)));
        assert!(!s.capture(0, |_| panic!("a full buffer builds nothing"), key(1)));
        assert_eq!(s.stats.get(Stat::DroppedBufferFull), 1);
        s.flush(0, key(1));
        // batches still count against the bound until acknowledged
        assert!(!s.capture(0, line("/d"), key(2)));
        let mut t = 0;
        dispatch_all(&mut s, 0, &mut t);
        assert!(s.on_answer(1, ok(), 1, 0, [0; 16]));
        assert!(s.capture(1, line("/e"), key(2)));
        assert_eq!(s.stats.get(Stat::BufferedEvents), 1);
        let mut s = shipper(r#"{"collector_cluster":"c","max_buffered_bytes":20}"#);
        assert!(s.capture(0, line("/a"), key(1)));
        assert!(
            s.capture(0, line("/b"), key(1)),
            "under the bound before it"
        );
        assert!(!s.capture(0, line("/c"), key(1)));
    }

    #[test]
    fn retries_keep_bytes_and_key_then_give_up() {
        let mut s = shipper(
            r#"{"collector_cluster":"c","retries":2,"backoff_ms":100,"max_retry_window_ms":0}"#,
        );
        s.capture(0, line("/a"), key(1));
        s.flush(0, key(1));
        let body = s.batches[0].body.clone();
        let mut now = 0;
        for attempt in 1..=3u32 {
            let (seq, b) = match s.next_attempt(now) {
                Some(a) => (a.seq, (a.body.to_vec(), a.headers)),
                None => panic!("attempt {attempt} not due at {now}"),
            };
            assert_eq!(b.0, body);
            assert!(b
                .1
                .iter()
                .any(|(k, v)| *k == "x-idempotency-key" && v == "key-1"));
            s.sent(seq, Some(attempt), now, u64::MAX);
            assert!(s.on_answer(attempt, Answer::status(503), now, u64::MAX, [0; 16]));
            now += 100_000;
        }
        assert!(s.is_idle());
        assert_eq!(s.stats.get(Stat::BatchRetries), 2);
        assert_eq!(s.stats.get(Stat::BatchesFailed), 1);
        assert_eq!(s.stats.get(Stat::DroppedRetriesExhausted), 1);
        assert_eq!(s.dropped_total(), 1);
        assert_eq!(s.stats.get(Stat::BufferedEvents), 0);
    }

    #[test]
    fn the_retry_window_rides_out_an_outage_while_the_buffer_has_room() {
        // 3 retries would be spent in well under a second; the window keeps
        // the batch for 60 s of 503s.
        let mut s = shipper(
            r#"{"collector_cluster":"c","retries":3,"backoff_ms":100,"max_backoff_ms":1000}"#,
        );
        s.capture(0, line("/a"), key(1));
        s.flush(0, key(1));
        let (mut now, mut token) = (0u64, 0u32);
        while now < 59_000 {
            for seq in dispatch_all(&mut s, now, &mut token) {
                assert_eq!(seq, 1);
                assert!(s.on_answer(token, Answer::status(503), now, u64::MAX, [0; 16]));
            }
            now += 100;
        }
        assert_eq!(s.dropped_total(), 0, "nothing dropped inside the window");
        assert!(s.stats.get(Stat::BatchRetries) > 50);
        while dispatch_all(&mut s, now, &mut token).is_empty() {
            now += 100;
        }
        assert!(s.on_answer(token, ok(), now, 0, [0; 16]));
        assert!(s.is_idle());
        assert_eq!(s.stats.get(Stat::BatchesOk), 1);

        // Past the window the batch is given up.
        let mut s = shipper(
            r#"{"collector_cluster":"c","retries":1,"backoff_ms":100,"max_backoff_ms":100,"max_retry_window_ms":1000}"#,
        );
        s.capture(0, line("/a"), key(1));
        s.flush(0, key(1));
        let (mut now, mut token) = (0u64, 0u32);
        while !s.is_idle() && now < 10_000 {
            for _ in dispatch_all(&mut s, now, &mut token) {
                s.on_answer(token, Answer::Failed, now, u64::MAX, [0; 16]);
            }
            now += 50;
        }
        assert!(s.is_idle());
        assert!(
            (1_000..1_300).contains(&now),
            "given up after the window: {now}"
        );
        assert_eq!(s.stats.get(Stat::DroppedRetriesExhausted), 1);

        // With the buffer full, the window no longer holds a batch past `retries`.
        let mut s = shipper(
            r#"{"collector_cluster":"c","retries":1,"max_buffered_events":1,"backoff_ms":1,"max_backoff_ms":1}"#,
        );
        s.capture(0, line("/a"), key(1));
        s.flush(0, key(1));
        let mut token = 0;
        dispatch_all(&mut s, 0, &mut token);
        s.on_answer(token, Answer::status(503), 0, 0, [0; 16]);
        dispatch_all(&mut s, 10, &mut token);
        s.on_answer(token, Answer::status(503), 10, 0, [0; 16]);
        assert!(s.is_idle());
        assert_eq!(s.stats.get(Stat::DroppedRetriesExhausted), 1);
    }

    #[test]
    fn client_errors_are_final_and_timeouts_retry() {
        let mut s = shipper(r#"{"collector_cluster":"c"}"#);
        s.capture(0, line("/a"), key(1));
        s.flush(0, key(1));
        s.sent(1, Some(1), 0, 0);
        s.on_answer(1, Answer::status(401), 0, 0, [0; 16]);
        assert!(s.is_idle());
        assert_eq!(s.stats.get(Stat::DroppedRejected), 1);
        assert_eq!(s.stats.get(Stat::BatchRetries), 0);

        s.capture(0, line("/b"), key(2));
        s.flush(0, key(2));
        s.sent(2, None, 0, 0); // refused dispatch
        assert_eq!(s.stats.get(Stat::BatchRetries), 1);
        let seq = s.next_attempt(1_000).map_or(0, |a| a.seq);
        s.sent(seq, Some(9), 1_000, 0);
        s.on_answer(9, Answer::Failed, 1_000, 0, [0; 16]);
        assert_eq!(s.stats.get(Stat::BatchRetries), 2);
        assert!(!s.on_answer(12345, Answer::Failed, 0, 0, [0; 16]));
    }

    #[test]
    fn a_refused_line_costs_that_event_alone() {
        let c = cfg(r#"{"collector_cluster":"c","signing_secret":"ss"}"#);
        let mut s = Shipper::new(&c, "ns/pod", 0);
        for p in ["/a", "/bb", "/ccc"] {
            s.capture(0, line(p), key(1));
        }
        s.flush(0, key(1));
        let mut token = 0;
        dispatch_all(&mut s, 0, &mut token);
        let refusal = Answer::Status {
            status: 400,
            retry_after_s: None,
            bad_lines: vec![2],
        };
        assert!(s.on_answer(token, refusal, 5, 0, [9; 16]));
        assert_eq!(s.stats.get(Stat::DroppedRejected), 1);
        assert_eq!(s.dropped_total(), 1);
        let (seq, body, headers) = match s.next_attempt(5) {
            Some(a) => (a.seq, a.body.to_vec(), a.headers),
            None => panic!("the rest is re-sent at once"),
        };
        assert_eq!(body, b"{\"path\":\"/a\"}\n{\"path\":\"/ccc\"}\n");
        assert_eq!(seq, 2, "a new batch sequence");
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("x-idempotency-key"), Some(new_uuid_v4([9; 16])));
        // the digest covers the two remaining hashes only
        let digest = batch_digest([&[2u8; 32], &[4u8; 32]]);
        assert_eq!(
            get("x-signature"),
            Some(batch_signature(b"ss", "0", hex::encode(digest).as_bytes()))
        );
        assert_eq!(s.buffered_events(), 2);
        assert_eq!(s.stats.get(Stat::BufferedEvents), 2);
        s.sent(seq, Some(77), 5, 0);
        s.on_answer(77, ok(), 6, 0, [0; 16]);
        assert!(s.is_idle());
        assert_eq!(s.stats.get(Stat::BufferedEvents), 0);

        // A refusal naming no line, or every line, costs the batch.
        let mut s = Shipper::new(&c, "ns/pod", 0);
        s.capture(0, line("/a"), key(1));
        s.flush(0, key(1));
        let mut token = 0;
        dispatch_all(&mut s, 0, &mut token);
        let refusal = Answer::Status {
            status: 400,
            retry_after_s: None,
            bad_lines: vec![1],
        };
        s.on_answer(token, refusal, 1, 0, [0; 16]);
        assert!(s.is_idle());
        assert_eq!(s.stats.get(Stat::DroppedRejected), 1);
        assert_eq!(s.stats.get(Stat::BatchesFailed), 1);
    }

    #[test]
    fn answers_parse_status_retry_after_and_named_lines() {
        let pairs = |v: &[(&'static str, &'static str)]| -> Vec<(&'static [u8], &'static [u8])> {
            v.iter()
                .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
                .collect()
        };
        let never = || -> Option<Vec<u8>> { panic!("a 200's body is not read") };
        assert_eq!(parse_answer(&pairs(&[(":status", "200")]), never), ok());
        assert_eq!(
            parse_answer(
                &pairs(&[(":status", "429"), ("retry-after", " 2 ")]),
                || None
            ),
            Answer::Status {
                status: 429,
                retry_after_s: Some(2),
                bad_lines: vec![]
            }
        );
        let body = |b: &'static str| move || Some(b.as_bytes().to_vec());
        let lines = |b: &'static str| match parse_answer(&pairs(&[(":status", "400")]), body(b)) {
            Answer::Status { bad_lines, .. } => bad_lines,
            Answer::Failed => panic!("has a status"),
        };
        assert_eq!(
            lines(r#"{"error":"malformed","message":"x","line":3}"#),
            vec![3]
        );
        assert_eq!(
            lines(r#"{"error":"unverified","lines":[4,2,2,0]}"#),
            vec![2, 4]
        );
        assert_eq!(lines(r#"{"error":"malformed"}"#), Vec::<usize>::new());
        assert_eq!(lines("garbage"), Vec::<usize>::new());
        assert_eq!(lines(r#"{"line":-1}"#), Vec::<usize>::new());
        assert_eq!(parse_answer(&pairs(&[("x", "y")]), || None), Answer::Failed);
        assert_eq!(
            parse_answer(&pairs(&[(":status", "999")]), || None),
            Answer::Failed
        );
    }

    #[test]
    fn retry_after_is_honoured() {
        let mut s = shipper(r#"{"collector_cluster":"c","backoff_ms":100}"#);
        s.capture(0, line("/a"), key(1));
        s.flush(0, key(1));
        s.sent(1, Some(1), 0, 0);
        let answer = Answer::Status {
            status: 429,
            retry_after_s: Some(2),
            bad_lines: vec![],
        };
        s.on_answer(1, answer, 0, 0, [0; 16]);
        assert!(s.next_attempt(1_999).is_none());
        assert_eq!(s.next_attempt(2_000).map(|a| a.seq), Some(1));
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
        let mut s = shipper(r#"{"collector_cluster":"c","batch_max_events":1}"#);
        for i in 0..(MAX_INFLIGHT_BATCHES + 2) {
            let p = format!("/{i}");
            s.capture(0, line(&p), key(i as u32));
        }
        let mut token = 0;
        dispatch_all(&mut s, 0, &mut token);
        assert_eq!(token as usize, MAX_INFLIGHT_BATCHES);
        s.begin_shutdown();
        assert!(s.next_attempt(0).is_some());
    }

    #[test]
    fn attempts_carry_the_workload_batch_signature() {
        use meshaudit_event::workload_key::{BatchSignature, SignerKey};
        let signer = SignerKey::from_seed("ns-k1", &[7u8; 32]).unwrap_or_else(|e| panic!("{e}"));
        let c = cfg(&format!(
            r#"{{"collector_cluster":"c","batch_signing_key":"{}"}}"#,
            signer.to_text()
        ));
        let mut s = Shipper::new(&c, "ns/pod", 0);
        s.capture(0, line("/a"), key(1));
        s.capture(0, line("/bb"), key(1));
        s.flush(0, key(1));
        let header = match s.next_attempt(1_000) {
            Some(a) => a
                .headers
                .iter()
                .find(|(k, _)| *k == "x-meshaudit-batch-signature")
                .map(|(_, v)| v.clone()),
            None => panic!("due"),
        };
        let sig =
            BatchSignature::parse(&header.unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sig.keyid, "ns-k1");
        let digest = batch_digest([&[2u8; 32], &[3u8; 32]]);
        assert!(sig.verify(&signer.verifier(), "ns/pod", "1", &digest));
        assert!(!sig.verify(&signer.verifier(), "ns/pod", "2", &digest));
    }

    #[test]
    fn attempts_are_signed_per_attempt_under_either_scheme() {
        for (scheme, digest) in [("digest", true), ("body", false)] {
            let c = cfg(&format!(
                r#"{{"collector_cluster":"c","api_key":"ak","signing_secret":"ss","signature_scheme":"{scheme}"}}"#
            ));
            let mut s = Shipper::new(&c, "ns/pod", 0);
            s.capture(0, line("/a"), key(1));
            s.capture(0, line("/bb"), key(1));
            s.flush(0, key(1));
            s.dropped_total = 3;
            let headers = |s: &Shipper, now| match s.next_attempt(now) {
                Some(a) => (a.headers, a.body.to_vec()),
                None => panic!("due"),
            };
            let (h, body) = headers(&s, 1_700_000_000_000);
            let get = |name: &str| h.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
            assert_eq!(get("x-api-key").as_deref(), Some("ak"));
            assert_eq!(get("x-meshaudit-source").as_deref(), Some("ns/pod"));
            assert_eq!(get("x-meshaudit-batch-seq").as_deref(), Some("1"));
            assert_eq!(get("x-meshaudit-dropped").as_deref(), Some("3"));
            assert_eq!(get("x-idempotency-key").as_deref(), Some("key-1"));
            assert_eq!(get(":authority").as_deref(), Some("c"));
            assert_eq!(get("x-signature-ts").as_deref(), Some("1700000000"));
            let sig = get("x-signature").unwrap_or_default();
            let signed: Vec<u8> = if digest {
                assert_eq!(get("x-signature-scheme").as_deref(), Some("digest"));
                hex::encode(batch_digest([&[2u8; 32], &[3u8; 32]])).into_bytes()
            } else {
                assert_eq!(get("x-signature-scheme"), None);
                body.clone()
            };
            assert!(verify_batch_signature(
                &[b"ss".to_vec()],
                "1700000000",
                &signed,
                &sig
            ));
            let (later, _) = headers(&s, 1_700_000_007_000);
            assert_ne!(later, h);
        }
    }
}
