//! Why an ingest request was refused: one [`Refusal`] per answer other than
//! `200`, owning its status, its `error` string (SPEC §6) and the
//! `audit_events_rejected_total{reason}` label it is counted under ([`Reason`]).

use axum::http::StatusCode;

/// The `error` of a refusal body and the `reason` label of
/// `audit_events_rejected_total` (the same string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    ContentType,
    TooLarge,
    ApiKey,
    Timestamp,
    Signature,
    RateLimited,
    Malformed,
    IdempotencyConflict,
    /// Not a refusal: events not stored because their id holds another hash.
    IdConflict,
    Unverified,
    StoreUnavailable,
    /// Too many bytes of other batches are being processed (`503`).
    Overloaded,
    /// The body did not arrive in time (`408`).
    Timeout,
    /// SPEC §10: the workload batch signature is missing, unknown, out of
    /// its window or scope, or does not verify.
    BatchSignature,
}

impl Reason {
    /// Every reason, so each label is exported at 0 from the first scrape.
    pub const ALL: [Reason; 14] = [
        Reason::ContentType,
        Reason::TooLarge,
        Reason::ApiKey,
        Reason::Timestamp,
        Reason::Signature,
        Reason::RateLimited,
        Reason::Malformed,
        Reason::IdempotencyConflict,
        Reason::IdConflict,
        Reason::Unverified,
        Reason::StoreUnavailable,
        Reason::Overloaded,
        Reason::Timeout,
        Reason::BatchSignature,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::ContentType => "content_type",
            Reason::TooLarge => "too_large",
            Reason::ApiKey => "api_key",
            Reason::Timestamp => "timestamp",
            Reason::Signature => "signature",
            Reason::RateLimited => "rate_limited",
            Reason::Malformed => "malformed",
            Reason::IdempotencyConflict => "idempotency_conflict",
            Reason::IdConflict => "id_conflict",
            Reason::Unverified => "unverified",
            Reason::StoreUnavailable => "store_unavailable",
            Reason::Overloaded => "overloaded",
            Reason::Timeout => "timeout",
            Reason::BatchSignature => "batch_signature",
        }
    }
}

/// One refused ingest request. Nothing of it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    ContentType(&'static str),
    /// The body, its `Content-Length`, its decompressed size or its event count.
    TooLarge(String),
    ApiKey,
    Timestamp(String),
    Signature(&'static str),
    RateLimited {
        retry_after_secs: u64,
    },
    Overloaded {
        retry_after_secs: u64,
    },
    Timeout,
    /// `line`: the 1-based NDJSON line or 0-based array index at fault.
    Malformed {
        message: String,
        line: Option<usize>,
    },
    IdempotencyConflict {
        events: u64,
    },
    Unverified {
        lines: Vec<usize>,
        events: u64,
    },
    /// The detail is logged, never answered.
    StoreUnavailable {
        events: u64,
    },
    /// SPEC §10 ([`crate::keys::hook`]); the message names the key, never key material.
    BatchSignature {
        message: String,
        events: u64,
    },
}

impl Refusal {
    pub fn malformed(message: impl Into<String>, line: Option<usize>) -> Self {
        Refusal::Malformed {
            message: message.into(),
            line,
        }
    }

    /// Logs `detail` (it may name hosts or queries) and answers generically.
    pub fn store_unavailable(detail: &dyn std::fmt::Display, events: u64) -> Self {
        tracing::error!(error = %detail, "store unavailable");
        Refusal::StoreUnavailable { events }
    }

    pub fn reason(&self) -> Reason {
        match self {
            Refusal::ContentType(_) => Reason::ContentType,
            Refusal::TooLarge(_) => Reason::TooLarge,
            Refusal::ApiKey => Reason::ApiKey,
            Refusal::Timestamp(_) => Reason::Timestamp,
            Refusal::Signature(_) => Reason::Signature,
            Refusal::RateLimited { .. } => Reason::RateLimited,
            Refusal::Overloaded { .. } => Reason::Overloaded,
            Refusal::Timeout => Reason::Timeout,
            Refusal::Malformed { .. } => Reason::Malformed,
            Refusal::IdempotencyConflict { .. } => Reason::IdempotencyConflict,
            Refusal::Unverified { .. } => Reason::Unverified,
            Refusal::StoreUnavailable { .. } => Reason::StoreUnavailable,
            Refusal::BatchSignature { .. } => Reason::BatchSignature,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::ApiKey
            | Refusal::Timestamp(_)
            | Refusal::Signature(_)
            | Refusal::BatchSignature { .. } => StatusCode::UNAUTHORIZED,
            Refusal::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Overloaded { .. } | Refusal::StoreUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::Timeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::Malformed { .. } => StatusCode::BAD_REQUEST,
            Refusal::IdempotencyConflict { .. } => StatusCode::CONFLICT,
            Refusal::Unverified { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// For a person.
    pub fn message(&self) -> String {
        match self {
            Refusal::ContentType(m) | Refusal::Signature(m) => (*m).to_owned(),
            Refusal::TooLarge(m) | Refusal::Timestamp(m) => m.clone(),
            Refusal::Malformed { message, .. } | Refusal::BatchSignature { message, .. } => {
                message.clone()
            }
            Refusal::ApiKey => "missing or unknown X-API-Key".to_owned(),
            Refusal::RateLimited { .. } => "too many requests for this client".to_owned(),
            Refusal::Overloaded { .. } => {
                "the collector is processing too many bytes of other batches; retry later"
                    .to_owned()
            }
            Refusal::Timeout => "the request body did not arrive in time".to_owned(),
            Refusal::IdempotencyConflict { .. } => {
                "this X-Idempotency-Key was used with a different body".to_owned()
            }
            Refusal::Unverified { lines, .. } => format!(
                "{} event(s) failed hash or signature verification; nothing was stored",
                lines.len()
            ),
            Refusal::StoreUnavailable { .. } => {
                "the event store is unavailable; retry later".to_owned()
            }
        }
    }

    pub fn line(&self) -> Option<usize> {
        match self {
            Refusal::Malformed { line, .. } => *line,
            _ => None,
        }
    }

    pub fn lines(&self) -> Option<&[usize]> {
        match self {
            Refusal::Unverified { lines, .. } => Some(lines),
            _ => None,
        }
    }

    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Refusal::RateLimited { retry_after_secs }
            | Refusal::Overloaded { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// Whether the request body may have been left unread (the refusal came
    /// from the headers or from reading it): the connection is then closed
    /// rather than drained. Refusals after the body was read keep it open.
    pub fn body_may_be_unread(&self) -> bool {
        matches!(
            self,
            Refusal::ContentType(_)
                | Refusal::TooLarge(_)
                | Refusal::ApiKey
                | Refusal::Timestamp(_)
                | Refusal::Signature(_)
                | Refusal::Overloaded { .. }
                | Refusal::Timeout
        )
    }

    /// How many events the refusal counts under its reason: the batch's
    /// events once they are known, else one per request.
    pub fn counted_events(&self) -> u64 {
        match self {
            Refusal::IdempotencyConflict { events }
            | Refusal::StoreUnavailable { events }
            | Refusal::Unverified { events, .. }
            | Refusal::BatchSignature { events, .. } => (*events).max(1),
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_and_cover_every_refusal() {
        let labels: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Reason::ALL.len());
        for r in [
            Refusal::ApiKey,
            Refusal::Timeout,
            Refusal::malformed("x", Some(2)),
            Refusal::Overloaded {
                retry_after_secs: 1,
            },
        ] {
            assert!(Reason::ALL.contains(&r.reason()));
            assert!(!r.message().is_empty());
        }
        assert_eq!(Refusal::malformed("x", Some(2)).line(), Some(2));
    }
}
