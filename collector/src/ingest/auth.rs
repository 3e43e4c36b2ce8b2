//! Who sent the batch and whether they may (SPEC §6 checks 3–5): the API
//! key, checked before a byte of the body is read; the timestamp window; and
//! which bytes `X-Signature` signs (`X-Signature-Scheme`, SPEC §10): the raw
//! body, checked as soon as it is read, or the batch digest, checked once the
//! events are hashed.

use super::body::header;
use super::refusal::Refusal;
use crate::auth::{api_key_matches, idempotency_scope};
use crate::config::Settings;
use axum::http::HeaderMap;
use meshaudit_event::integrity::{batch_digest_hex, check_timestamp, verify_batch_signature};
use std::net::IpAddr;

/// Whom the rate limit counts a request against: the API key when it was
/// checked, otherwise the peer address (a header anyone can vary is no key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// The SHA-256 (hex) of a listed API key.
    ApiKey(String),
    Peer(IpAddr),
    /// No key required and no peer address known (in-process tests).
    Unknown,
}

impl Identity {
    /// The rate limiter's bucket key.
    pub fn bucket(&self) -> String {
        match self {
            Identity::ApiKey(scope) => format!("key:{scope}"),
            Identity::Peer(ip) => format!("ip:{ip}"),
            Identity::Unknown => "unknown".to_owned(),
        }
    }
}

/// Check 3. A listed key (compared in constant time) is the identity; when
/// keys are not required, the peer address is.
pub fn identify(
    settings: &Settings,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Result<Identity, Refusal> {
    let api_key = header(headers, "x-api-key");
    if api_key_matches(&settings.api_keys, api_key) {
        return Ok(Identity::ApiKey(idempotency_scope(api_key)));
    }
    if settings.require_api_key {
        return Err(Refusal::ApiKey);
    }
    Ok(peer.map_or(Identity::Unknown, Identity::Peer))
}

/// Check 4: `X-Signature-Ts` within the window (when enforced).
pub fn timestamp(settings: &Settings, headers: &HeaderMap, now_secs: i64) -> Result<(), Refusal> {
    if !settings.enforce_ts {
        return Ok(());
    }
    check_timestamp(
        header(headers, "x-signature-ts"),
        now_secs,
        settings.ts_skew_secs,
    )
    .map(|_| ())
    .map_err(|e| Refusal::Timestamp(e.to_string()))
}

/// What `X-Signature` signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// No `X-Signature-Scheme`: `"{ts}." + raw body` (seed 000).
    RawBody,
    /// `digest`: `"{ts}." + hex(batch_digest)` over the recomputed event hashes.
    Digest,
}

/// The batch signature check of one request: built from the headers, applied
/// to the raw body or to the event hashes depending on the scheme.
#[derive(Debug, Clone)]
pub struct SignatureCheck<'a> {
    required: bool,
    pub scheme: Scheme,
    ts: &'a str,
    signature: &'a str,
}

const INVALID: &str = "missing or invalid X-Signature";
const INVALID_DIGEST: &str =
    "missing or invalid X-Signature (scheme digest: HMAC of \"{ts}.\" + hex(batch_digest))";

impl<'a> SignatureCheck<'a> {
    /// An unknown scheme is refused (when signatures are required).
    pub fn new(settings: &Settings, headers: &'a HeaderMap) -> Result<Self, Refusal> {
        let scheme = match header(headers, "x-signature-scheme").map(str::trim) {
            None => Scheme::RawBody,
            Some(v) if v.eq_ignore_ascii_case("digest") => Scheme::Digest,
            Some(_) if settings.require_signature => {
                return Err(Refusal::Signature(
                    "unknown X-Signature-Scheme: the only scheme is `digest` (or no header for the raw body)",
                ))
            }
            Some(_) => Scheme::RawBody,
        };
        Ok(Self {
            required: settings.require_signature,
            scheme,
            ts: header(headers, "x-signature-ts").map_or("", str::trim),
            signature: header(headers, "x-signature").unwrap_or(""),
        })
    }

    /// Check 5 under the raw-body scheme (a no-op under `digest`).
    pub fn check_body(&self, secrets: &[Vec<u8>], raw: &[u8]) -> Result<(), Refusal> {
        if !self.required || self.scheme != Scheme::RawBody {
            return Ok(());
        }
        if verify_batch_signature(secrets, self.ts, raw, self.signature) {
            Ok(())
        } else {
            Err(Refusal::Signature(INVALID))
        }
    }

    /// Check 5 under the digest scheme, over the hashes the collector
    /// recomputed, in line order (a no-op under the raw-body scheme).
    pub fn check_digest<'h>(
        &self,
        secrets: &[Vec<u8>],
        event_hashes: impl IntoIterator<Item = &'h str>,
    ) -> Result<(), Refusal> {
        if !self.required || self.scheme != Scheme::Digest {
            return Ok(());
        }
        let ok = batch_digest_hex(event_hashes).is_some_and(|d| {
            verify_batch_signature(secrets, self.ts, hex::encode(d).as_bytes(), self.signature)
        });
        if ok {
            Ok(())
        } else {
            Err(Refusal::Signature(INVALID_DIGEST))
        }
    }
}
