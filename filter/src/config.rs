//! Plugin configuration (SPEC §8): the JSON of the filter's `configuration`,
//! overridden by `AUDIT_FORWARD_*` environment variables read through WASI.
//!
//! Unknown keys and bad values are refused with a [`ConfigError`] that names
//! the key; the glue logs it once and returns `false` from `on_configure`.
//! Secrets live in [`Secret`], whose `Debug` never shows them.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// Where environment overrides come from: the process env in the VM, a map in tests.
pub trait EnvSource {
    fn var(&self, name: &str) -> Option<String>;
}

/// The VM's environment (WASI `environ_get`, fed by `host_env_keys`).
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// A configured secret: its UTF-8 bytes are the key (SPEC §5); never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A refused configuration: the key at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "meshaudit: invalid configuration key `{}`: {}",
            self.key, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        message: message.into(),
    }
}

pub use meshaudit_event::Schema;

/// How a redacted value is replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedactMode {
    /// `"[REDACTED]"`.
    Mask,
    /// `"hmac-sha256:" + 32 hex` of HMAC-SHA256(redaction key, value).
    Hmac(Secret),
}

/// `subject_claim`: take `subject.userid` from `jwt_authn` dynamic metadata.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectClaim {
    /// The `payload_in_metadata` name the `jwt_authn` provider writes to.
    pub provider: String,
    /// The claim to read, e.g. `sub`.
    pub claim: String,
}

/// The identity fields a request header fills (SPEC §4, `header_map`): one
/// name per field, spelled once here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityField {
    TenantId,
    TraceId,
    TransactionId,
    RequestId,
    SpanId,
    ParentServiceSpanId,
    UserId,
    UserType,
    Groups,
}

impl IdentityField {
    pub const ALL: [IdentityField; 9] = [
        IdentityField::TenantId,
        IdentityField::TraceId,
        IdentityField::TransactionId,
        IdentityField::RequestId,
        IdentityField::SpanId,
        IdentityField::ParentServiceSpanId,
        IdentityField::UserId,
        IdentityField::UserType,
        IdentityField::Groups,
    ];

    /// The key in `header_map` (the event field's name; `type` for the
    /// subject's type).
    pub fn config_name(self) -> &'static str {
        match self {
            IdentityField::TenantId => "tenantid",
            IdentityField::TraceId => "traceid",
            IdentityField::TransactionId => "transactionid",
            IdentityField::RequestId => "requestid",
            IdentityField::SpanId => "spanid",
            IdentityField::ParentServiceSpanId => "parentservicespanid",
            IdentityField::UserId => "userid",
            IdentityField::UserType => "type",
            IdentityField::Groups => "groups",
        }
    }

    /// The default request header (lowercase), if any.
    pub fn default_header(self) -> Option<&'static str> {
        match self {
            IdentityField::TenantId => Some("tenantid"),
            IdentityField::TraceId => Some("x-b3-traceid"),
            IdentityField::TransactionId => Some("x-transaction-id"),
            IdentityField::RequestId => Some("x-request-id"),
            IdentityField::SpanId => Some("x-b3-spanid"),
            IdentityField::ParentServiceSpanId => Some("x-parent-service-span-id"),
            IdentityField::UserId => Some("actionloguserid"),
            IdentityField::UserType => Some("requestertype"),
            IdentityField::Groups => None,
        }
    }

    pub fn from_config_name(name: &str) -> Option<IdentityField> {
        IdentityField::ALL
            .into_iter()
            .find(|f| f.config_name() == name)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Event field → request header (all names lowercase; `None`: not captured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMapping([Option<String>; 9]);

impl HeaderMapping {
    pub fn get(&self, field: IdentityField) -> Option<&str> {
        self.0[field.index()].as_deref()
    }

    pub fn set(&mut self, field: IdentityField, header: Option<String>) {
        self.0[field.index()] = header;
    }
}

impl Default for HeaderMapping {
    fn default() -> Self {
        HeaderMapping(IdentityField::ALL.map(|f| f.default_header().map(str::to_owned)))
    }
}

/// What the batch HMAC (`X-Signature`) covers (SPEC §5, §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureScheme {
    /// `X-Signature-Scheme: digest`: `"{ts}." + hex(batch_digest)` over the
    /// events' raw hashes, so event bytes are hashed once (the default).
    Digest,
    /// Seed 000's rule: `"{ts}." + the raw body` (for receivers that do not
    /// know the digest scheme).
    Body,
}

/// The validated configuration the filter runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub enabled: bool,
    pub collector_cluster: String,
    pub collector_authority: String,
    pub collector_path: String,
    pub api_key: Option<Secret>,
    pub signing_secret: Option<Secret>,
    pub event_key: Option<Secret>,
    pub event_key_id: Option<String>,
    /// SPEC §10: the workload's Ed25519 signer key (`Debug` shows its name only).
    pub batch_signing_key: Option<meshaudit_event::workload_key::SignerKey>,
    pub schema: Schema,
    pub batch_max_events: usize,
    pub batch_max_bytes: usize,
    pub flush_interval_ms: u64,
    pub max_buffered_events: usize,
    pub max_buffered_bytes: usize,
    pub retries: u32,
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// A batch failing with a retryable answer is retried for at least this
    /// long after its first attempt (beyond `retries`) while the buffer has
    /// room; 0 turns the window off.
    pub max_retry_window_ms: u64,
    pub signature_scheme: SignatureScheme,
    pub timeout_ms: u64,
    pub capture_bodies: bool,
    pub max_body_bytes: usize,
    pub max_inflight_body_bytes: usize,
    pub body_content_types: Vec<String>,
    pub sample_rate: f64,
    pub body_sample_rate: f64,
    pub skip_paths: SkipPaths,
    pub header_map: HeaderMapping,
    pub tenant_id: Option<String>,
    pub subject_claim: Option<SubjectClaim>,
    pub include_request_headers: Vec<String>,
    pub include_response_headers: Vec<String>,
    pub redact_headers: Vec<String>,
    pub redact_keys: Vec<String>,
    pub redact_mode: RedactMode,
    pub is_sensitive: bool,
    pub compliance_category: Option<String>,
}

/// The largest event or batch the collector accepts by default
/// (`MESHAUDIT_MAX_BODY_BYTES`); larger events are dropped as `too_large`.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// The raw JSON, field for field (SPEC §8 names).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    enabled: Option<bool>,
    collector_cluster: Option<String>,
    collector_authority: Option<String>,
    collector_path: Option<String>,
    api_key: Option<String>,
    signing_secret: Option<String>,
    event_key: Option<String>,
    event_key_id: Option<String>,
    batch_signing_key: Option<String>,
    schema: Option<String>,
    batch_max_events: Option<u64>,
    batch_max_bytes: Option<u64>,
    flush_interval_ms: Option<u64>,
    max_buffered_events: Option<u64>,
    max_buffered_bytes: Option<u64>,
    retries: Option<u32>,
    backoff_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
    max_retry_window_ms: Option<u64>,
    signature_scheme: Option<String>,
    timeout_ms: Option<u64>,
    capture_bodies: Option<bool>,
    max_body_bytes: Option<u64>,
    max_inflight_body_bytes: Option<u64>,
    body_content_types: Option<Vec<String>>,
    sample_rate: Option<f64>,
    body_sample_rate: Option<f64>,
    skip_paths: Option<Vec<String>>,
    header_map: Option<BTreeMap<String, String>>,
    tenant_id: Option<String>,
    subject_claim: Option<SubjectClaim>,
    include_request_headers: Option<Vec<String>>,
    include_response_headers: Option<Vec<String>>,
    redact_headers: Option<Vec<String>>,
    redact_keys: Option<Vec<String>>,
    redact_mode: Option<String>,
    redaction_key: Option<String>,
    is_sensitive: Option<bool>,
    compliance_category: Option<String>,
}

const DEFAULT_BODY_CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/*+json",
    "application/x-ndjson",
    "application/x-www-form-urlencoded",
    "text/plain",
    "text/xml",
    "application/xml",
];
const DEFAULT_SKIP_PATHS: &[&str] = &[
    "actuator",
    "health",
    "metrics",
    "error",
    "prometheus",
    "swagger",
    "api-docs",
    "favicon",
];
const DEFAULT_REQUEST_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "user-agent",
    "x-forwarded-for",
    "x-request-id",
];
const DEFAULT_RESPONSE_HEADERS: &[&str] = &["content-type", "content-length"];
const DEFAULT_REDACT_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];
const DEFAULT_REDACT_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "access_token",
    "refresh_token",
    "api_key",
    "apikey",
    "authorization",
    "credit_card",
    "card_number",
    "cvv",
    "ssn",
];

fn owned(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn lowercase_all(list: Vec<String>) -> Vec<String> {
    list.into_iter().map(|s| s.to_ascii_lowercase()).collect()
}

/// Parses and validates the plugin configuration; `env` overrides (SPEC §8).
pub fn parse(json: &[u8], env: &dyn EnvSource) -> Result<Config, ConfigError> {
    let raw = parse_raw(json)?;
    build(raw, env)
}

/// Keys whose values must never appear in an error message.
const SECRET_KEYS: &[&str] = &[
    "api_key",
    "signing_secret",
    "event_key",
    "redaction_key",
    "batch_signing_key",
];

fn parse_raw(json: &[u8]) -> Result<RawConfig, ConfigError> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(RawConfig::default());
    }
    let value: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| err("(configuration)", format!("not valid JSON: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(err("(configuration)", "must be a JSON object"));
    };
    match serde_json::from_value::<RawConfig>(serde_json::Value::Object(map.clone())) {
        Ok(raw) => Ok(raw),
        Err(whole) => {
            // serde's message does not say which member had a bad value:
            // try each member alone to name the key.
            for (key, value) in map {
                let mut one = serde_json::Map::new();
                one.insert(key.clone(), value);
                if let Err(e) = serde_json::from_value::<RawConfig>(serde_json::Value::Object(one))
                {
                    let msg = e.to_string();
                    if msg.starts_with("unknown field") {
                        return Err(err(&key, "unknown key"));
                    }
                    if SECRET_KEYS.contains(&key.as_str()) {
                        // serde's message quotes the value: never log a secret.
                        return Err(err(&key, "expected a string"));
                    }
                    return Err(err(&key, msg));
                }
            }
            Err(err("(configuration)", whole.to_string()))
        }
    }
}

fn env_bool(env: &dyn EnvSource, name: &str) -> Result<Option<bool>, ConfigError> {
    match env.var(name) {
        None => Ok(None),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" => Ok(Some(true)),
            "0" | "false" => Ok(Some(false)),
            _ => Err(err(name, "expected 1, 0, true or false")),
        },
    }
}

fn env_u64(env: &dyn EnvSource, name: &str) -> Result<Option<u64>, ConfigError> {
    match env.var(name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| err(name, "expected a non-negative integer")),
    }
}

fn env_secret(env: &dyn EnvSource, name: &str) -> Option<Secret> {
    env.var(name).filter(|s| !s.is_empty()).map(Secret::new)
}

fn positive(key: &str, v: Option<u64>, default: u64) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default),
        Some(0) => Err(err(key, "must be greater than 0")),
        Some(n) => Ok(n),
    }
}

fn usize_of(key: &str, v: u64) -> Result<usize, ConfigError> {
    usize::try_from(v).map_err(|_| err(key, "too large"))
}

fn rate(key: &str, v: Option<f64>) -> Result<f64, ConfigError> {
    match v {
        None => Ok(1.0),
        Some(r) if (0.0..=1.0).contains(&r) => Ok(r),
        Some(_) => Err(err(key, "must be in [0, 1]")),
    }
}

fn header_names(key: &str, list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    for name in &list {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(err(key, format!("invalid header name {name:?}")));
        }
    }
    Ok(lowercase_all(list))
}

fn header_mapping(raw: Option<BTreeMap<String, String>>) -> Result<HeaderMapping, ConfigError> {
    let mut mapping = HeaderMapping::default();
    let Some(raw) = raw else {
        return Ok(mapping);
    };
    for (field, header) in raw {
        let header = header.trim().to_ascii_lowercase();
        let value = if header.is_empty() {
            None
        } else {
            Some(header)
        };
        let Some(field) = IdentityField::from_config_name(&field) else {
            let known: Vec<&str> = IdentityField::ALL.iter().map(|f| f.config_name()).collect();
            return Err(err(
                &format!("header_map.{field}"),
                format!("unknown event field ({})", known.join(", ")),
            ));
        };
        mapping.set(field, value);
    }
    Ok(mapping)
}

fn build(raw: RawConfig, env: &dyn EnvSource) -> Result<Config, ConfigError> {
    let enabled = env_bool(env, "AUDIT_FORWARD_ENABLED")?
        .or(raw.enabled)
        .unwrap_or(true);
    let collector_cluster = raw.collector_cluster.unwrap_or_default();
    if collector_cluster.is_empty() && enabled {
        return Err(err("collector_cluster", "required"));
    }
    let collector_authority = raw
        .collector_authority
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| collector_cluster.clone());
    let collector_path = raw
        .collector_path
        .unwrap_or_else(|| "/v1/events".to_owned());
    if !collector_path.starts_with('/') {
        return Err(err("collector_path", "must start with `/`"));
    }

    let api_key = env_secret(env, "AUDIT_FORWARD_API_KEY")
        .or_else(|| raw.api_key.filter(|s| !s.is_empty()).map(Secret::new));
    let signing_secret = env_secret(env, "AUDIT_FORWARD_SIGNING_SECRET").or_else(|| {
        raw.signing_secret
            .filter(|s| !s.is_empty())
            .map(Secret::new)
    });
    let event_key = env_secret(env, "AUDIT_FORWARD_EVENT_KEY")
        .or_else(|| raw.event_key.filter(|s| !s.is_empty()).map(Secret::new))
        .or_else(|| signing_secret.clone());
    let event_key_id = raw.event_key_id.filter(|s| !s.is_empty());
    let batch_signing_key = batch_signing_key(env, raw.batch_signing_key)?;

    let schema = match raw.schema.as_deref() {
        None => Schema::Meshaudit1,
        Some(name) => Schema::from_name(name).ok_or_else(|| {
            err(
                "schema",
                format!("unknown schema {name:?} (meshaudit-1 or mobius-1)"),
            )
        })?,
    };

    let batch_max_events = usize_of(
        "batch_max_events",
        positive("batch_max_events", raw.batch_max_events, 100)?,
    )?;
    let batch_max_bytes = usize_of(
        "batch_max_bytes",
        positive("batch_max_bytes", raw.batch_max_bytes, 262_144)?,
    )?;
    if batch_max_bytes > MAX_EVENT_BYTES {
        return Err(err(
            "batch_max_bytes",
            format!("at most {MAX_EVENT_BYTES} (the collector's default body limit)"),
        ));
    }
    let flush_interval_ms = positive("flush_interval_ms", raw.flush_interval_ms, 1000)?;
    let max_buffered_events = usize_of(
        "max_buffered_events",
        positive("max_buffered_events", raw.max_buffered_events, 10_000)?,
    )?;
    let max_buffered_bytes = usize_of(
        "max_buffered_bytes",
        positive("max_buffered_bytes", raw.max_buffered_bytes, 16_777_216)?,
    )?;
    let retries = match env_u64(env, "AUDIT_FORWARD_RETRIES")? {
        Some(n) => u32::try_from(n).map_err(|_| err("AUDIT_FORWARD_RETRIES", "too large"))?,
        None => raw.retries.unwrap_or(3),
    };
    if retries > 100 {
        return Err(err("retries", "at most 100"));
    }
    let backoff_ms = match env_u64(env, "AUDIT_FORWARD_BACKOFF_MS")? {
        Some(0) => return Err(err("AUDIT_FORWARD_BACKOFF_MS", "must be greater than 0")),
        Some(n) => n,
        None => positive("backoff_ms", raw.backoff_ms, 100)?,
    };
    let max_backoff_ms = positive("max_backoff_ms", raw.max_backoff_ms, 30_000)?;
    if max_backoff_ms < backoff_ms {
        return Err(err("max_backoff_ms", "must be at least backoff_ms"));
    }
    let max_retry_window_ms = match env_u64(env, "AUDIT_FORWARD_MAX_RETRY_WINDOW_MS")? {
        Some(n) => n,
        None => raw.max_retry_window_ms.unwrap_or(60_000),
    };
    let signature_scheme = match raw.signature_scheme.as_deref() {
        None | Some("digest") => SignatureScheme::Digest,
        Some("body") => SignatureScheme::Body,
        Some(other) => {
            return Err(err(
                "signature_scheme",
                format!("unknown scheme {other:?} (digest or body)"),
            ))
        }
    };
    let timeout_ms = positive("timeout_ms", raw.timeout_ms, 5000)?;
    if timeout_ms > u64::from(u32::MAX) {
        return Err(err("timeout_ms", "too large"));
    }
    let max_body_bytes = usize_of("max_body_bytes", raw.max_body_bytes.unwrap_or(65_536))?;
    if max_body_bytes > MAX_EVENT_BYTES {
        return Err(err("max_body_bytes", format!("at most {MAX_EVENT_BYTES}")));
    }
    let max_inflight_body_bytes = usize_of(
        "max_inflight_body_bytes",
        raw.max_inflight_body_bytes.unwrap_or(8_388_608),
    )?;
    let body_content_types = match raw.body_content_types {
        None => owned(DEFAULT_BODY_CONTENT_TYPES),
        Some(list) => {
            for t in &list {
                if !t.contains('/') {
                    return Err(err(
                        "body_content_types",
                        format!("{t:?} is not a media type"),
                    ));
                }
            }
            lowercase_all(list)
                .into_iter()
                .map(|t| t.trim().to_owned())
                .collect()
        }
    };
    let sample_rate = rate("sample_rate", raw.sample_rate)?;
    let body_sample_rate = rate("body_sample_rate", raw.body_sample_rate)?;
    let skip_paths = match raw.skip_paths {
        None => owned(DEFAULT_SKIP_PATHS),
        Some(list) => {
            if list.iter().any(String::is_empty) {
                return Err(err("skip_paths", "entries must not be empty"));
            }
            list
        }
    };
    let skip_paths = SkipPaths::new(&skip_paths)?;
    let header_map = header_mapping(raw.header_map)?;
    let subject_claim = match raw.subject_claim {
        Some(c) if c.provider.is_empty() || c.claim.is_empty() => {
            return Err(err("subject_claim", "provider and claim must be non-empty"))
        }
        other => other,
    };
    let include_request_headers = header_names(
        "include_request_headers",
        raw.include_request_headers
            .unwrap_or_else(|| owned(DEFAULT_REQUEST_HEADERS)),
    )?;
    let include_response_headers = header_names(
        "include_response_headers",
        raw.include_response_headers
            .unwrap_or_else(|| owned(DEFAULT_RESPONSE_HEADERS)),
    )?;
    let redact_headers = header_names(
        "redact_headers",
        raw.redact_headers
            .unwrap_or_else(|| owned(DEFAULT_REDACT_HEADERS)),
    )?;
    let redact_keys = lowercase_all(
        raw.redact_keys
            .unwrap_or_else(|| owned(DEFAULT_REDACT_KEYS)),
    );
    let redaction_key = env_secret(env, "AUDIT_FORWARD_REDACTION_KEY")
        .or_else(|| raw.redaction_key.filter(|s| !s.is_empty()).map(Secret::new));
    let redact_mode = match raw.redact_mode.as_deref() {
        None | Some("mask") => RedactMode::Mask,
        Some("hmac") => match redaction_key {
            Some(key) => RedactMode::Hmac(key),
            None => {
                return Err(err(
                    "redact_mode",
                    "hmac needs a redaction key (AUDIT_FORWARD_REDACTION_KEY or redaction_key)",
                ))
            }
        },
        Some(other) => {
            return Err(err(
                "redact_mode",
                format!("unknown mode {other:?} (mask or hmac)"),
            ))
        }
    };

    Ok(Config {
        enabled,
        collector_cluster,
        collector_authority,
        collector_path,
        api_key,
        signing_secret,
        event_key,
        event_key_id,
        batch_signing_key,
        schema,
        batch_max_events,
        batch_max_bytes,
        flush_interval_ms,
        max_buffered_events,
        max_buffered_bytes,
        retries,
        backoff_ms,
        max_backoff_ms,
        max_retry_window_ms,
        signature_scheme,
        timeout_ms,
        capture_bodies: raw.capture_bodies.unwrap_or(false),
        max_body_bytes,
        max_inflight_body_bytes,
        body_content_types,
        sample_rate,
        body_sample_rate,
        skip_paths,
        header_map,
        tenant_id: raw.tenant_id.filter(|s| !s.is_empty()),
        subject_claim,
        include_request_headers,
        include_response_headers,
        redact_headers,
        redact_keys,
        redact_mode,
        is_sensitive: raw.is_sensitive.unwrap_or(false),
        compliance_category: raw.compliance_category.filter(|s| !s.is_empty()),
    })
}

/// `AUDIT_FORWARD_BATCH_SIGNING_KEY` (wins) or `batch_signing_key`: a signer
/// key in the SPEC §9 text form. A bad key refuses the configuration naming
/// the setting and the reason, never the key.
fn batch_signing_key(
    env: &dyn EnvSource,
    from_config: Option<String>,
) -> Result<Option<meshaudit_event::workload_key::SignerKey>, ConfigError> {
    let (name, text) = match env
        .var("AUDIT_FORWARD_BATCH_SIGNING_KEY")
        .filter(|s| !s.is_empty())
    {
        Some(t) => ("AUDIT_FORWARD_BATCH_SIGNING_KEY", t),
        None => match from_config.filter(|s| !s.is_empty()) {
            Some(t) => ("batch_signing_key", t),
            None => return Ok(None),
        },
    };
    meshaudit_event::workload_key::SignerKey::parse(&text)
        .map(Some)
        .map_err(|e| {
            err(
                name,
                format!("not a signer key (PRIVATE+KEY+<name>+<id>+<base64>): {e}"),
            )
        })
}

/// `skip_paths`, ready for the per-request check: the words are searched
/// for together, in one linear pass over the path by an automaton built once
/// (a searcher per word cost a pass and a set-up per word on every request).
#[derive(Debug, Clone)]
pub struct SkipPaths {
    prefixes: Vec<String>,
    words: Option<aho_corasick::dfa::DFA>,
}

impl SkipPaths {
    fn new(entries: &[String]) -> Result<Self, ConfigError> {
        let (prefixes, words): (Vec<&String>, Vec<&String>) =
            entries.iter().partition(|e| e.starts_with('/'));
        let words = if words.is_empty() {
            None
        } else {
            // The DFA alone: the crate's other automata would add ~120 KB
            // to the module for nothing a few short words need.
            let built = aho_corasick::dfa::DFA::builder()
                // paths are short: a prefilter's set-up costs more than it skips
                .prefilter(false)
                .build(words)
                .map_err(|e| err("skip_paths", format!("words too many or too long: {e}")))?;
            Some(built)
        };
        Ok(SkipPaths {
            prefixes: prefixes.into_iter().cloned().collect(),
            words,
        })
    }

    fn matches(&self, path: &str) -> bool {
        self.prefixes.iter().any(|p| path.starts_with(p.as_str()))
            || self.words.as_ref().is_some_and(|w| {
                use aho_corasick::automaton::Automaton;
                let input = aho_corasick::Input::new(path).earliest(true);
                // a DFA built for standard matching searches without failing
                w.try_find(&input).is_ok_and(|m| m.is_some())
            })
    }
}

impl Config {
    /// Whether `path` (without query) is on a skip list entry (mobius semantics
    /// for words, prefix match for entries starting with `/`).
    pub fn is_skipped(&self, path: &str) -> bool {
        self.skip_paths.matches(path)
    }

    /// Whether a body of this `content-type` header value is captured.
    pub fn captures_content_type(&self, content_type: &str) -> bool {
        let media = media_type(content_type);
        if media.is_empty() {
            return false;
        }
        self.body_content_types
            .iter()
            .any(|pattern| media_matches(pattern, &media))
    }

    /// The tick period: often enough that a batch leaves close to its
    /// `flush_interval_ms` and a retry close to its backoff; a tick that
    /// finds nothing due costs one VM entry and a clock read.
    pub fn tick_period_ms(&self) -> u64 {
        self.flush_interval_ms.clamp(1, 20)
    }
}

/// The media type of a `content-type` value: lowercase, parameters dropped.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// `application/*+json` matches `application/vnd.x+json`; `*` alone in a
/// part matches anything (`text/*`).
fn media_matches(pattern: &str, media: &str) -> bool {
    if pattern == media {
        return true;
    }
    let (Some((pt, ps)), Some((mt, ms))) = (pattern.split_once('/'), media.split_once('/')) else {
        return false;
    };
    if pt != "*" && pt != mt {
        return false;
    }
    if ps == "*" {
        return true;
    }
    match ps.strip_prefix('*') {
        Some(suffix) => ms.ends_with(suffix) && ms.len() > suffix.len(),
        None => ps == ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parse_ok(json: &str) -> Config {
        match parse(json.as_bytes(), &env(&[])) {
            Ok(c) => c,
            Err(e) => panic!("config refused: {e}"),
        }
    }

    fn parse_err(json: &str) -> ConfigError {
        match parse(json.as_bytes(), &env(&[])) {
            Ok(_) => panic!("config accepted: {json}"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = parse_ok(r#"{"collector_cluster":"collector"}"#);
        assert!(c.enabled);
        assert_eq!(c.collector_authority, "collector");
        assert_eq!(c.collector_path, "/v1/events");
        assert_eq!(c.batch_max_events, 100);
        assert_eq!(c.batch_max_bytes, 262_144);
        assert_eq!(c.flush_interval_ms, 1000);
        assert_eq!(c.max_buffered_events, 10_000);
        assert_eq!(c.max_buffered_bytes, 16_777_216);
        assert_eq!(c.retries, 3);
        assert_eq!(c.backoff_ms, 100);
        assert_eq!(c.max_backoff_ms, 30_000);
        assert_eq!(c.max_retry_window_ms, 60_000);
        assert_eq!(c.signature_scheme, SignatureScheme::Digest);
        assert_eq!(c.timeout_ms, 5000);
        assert!(!c.capture_bodies);
        assert_eq!(c.max_body_bytes, 65_536);
        assert_eq!(c.max_inflight_body_bytes, 8_388_608);
        assert_eq!(c.schema, Schema::Meshaudit1);
        assert_eq!(c.redact_mode, RedactMode::Mask);
        assert!(c.redact_keys.contains(&"password".to_owned()));
        assert_eq!(
            c.header_map.get(IdentityField::TraceId),
            Some("x-b3-traceid")
        );
        assert!(c.event_key.is_none());
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = parse_err(r#"{"collector_cluster":"c","bacth_max_events":5}"#);
        assert_eq!(e.key, "bacth_max_events");
        assert!(e.to_string().contains("bacth_max_events"));
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(
            parse_err(r#"{"collector_cluster":"c","batch_max_events":"x"}"#).key,
            "batch_max_events"
        );
        assert_eq!(
            parse_err(r#"{"collector_cluster":"c","batch_max_events":0}"#).key,
            "batch_max_events"
        );
        assert_eq!(
            parse_err(r#"{"collector_cluster":"c","sample_rate":1.5}"#).key,
            "sample_rate"
        );
        assert_eq!(
            parse_err(r#"{"collector_cluster":"c","schema":"v2"}"#).key,
            "schema"
        );
        assert_eq!(
            parse_err(r#"{"collector_cluster":"c","header_map":{"bogus":"x"}}"#).key,
            "header_map.bogus"
        );
        assert_eq!(
            parse_err(r#"{"collector_cluster":"c","signature_scheme":"raw"}"#).key,
            "signature_scheme"
        );
        assert_eq!(
            parse_err(r#"{"collector_cluster":"c","subject_claim":{"provider":"p"}}"#).key,
            "subject_claim"
        );
        assert_eq!(parse_err(r#"{}"#).key, "collector_cluster");
        assert_eq!(parse_err(r#"[1]"#).key, "(configuration)");
    }

    #[test]
    fn hmac_mode_needs_a_key() {
        assert_eq!(
            parse_err(r#"{"collector_cluster":"c","redact_mode":"hmac"}"#).key,
            "redact_mode"
        );
        let c = parse(
            br#"{"collector_cluster":"c","redact_mode":"hmac"}"#,
            &env(&[("AUDIT_FORWARD_REDACTION_KEY", "k1")]),
        )
        .map_err(|e| e.to_string());
        assert!(matches!(
            c,
            Ok(Config {
                redact_mode: RedactMode::Hmac(_),
                ..
            })
        ));
    }

    #[test]
    fn batch_signing_key_is_parsed_and_a_bad_one_is_named_not_shown() {
        let signer = meshaudit_event::workload_key::SignerKey::from_seed("ns-k1", &[7u8; 32])
            .unwrap_or_else(|e| panic!("{e}"));
        let text = signer.to_text();
        let c = parse(
            format!(r#"{{"collector_cluster":"c","batch_signing_key":"{text}"}}"#).as_bytes(),
            &env(&[]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.batch_signing_key.as_ref().map(|k| k.name()),
            Some("ns-k1")
        );
        assert!(!format!("{c:?}").contains(&text[20..]));
        // One character changed: the key id no longer matches.
        let bad = text.replacen("ns-k1", "ns-k2", 1);
        let e = parse_err(&format!(
            r#"{{"collector_cluster":"c","batch_signing_key":"{bad}"}}"#
        ));
        assert_eq!(e.key, "batch_signing_key");
        assert!(!e.to_string().contains(&bad[20..]), "{e}");
        match parse(
            br#"{"collector_cluster":"c"}"#,
            &env(&[(
                "AUDIT_FORWARD_BATCH_SIGNING_KEY",
                "PRIVATE+KEY+x+00000000+AQ==",
            )]),
        ) {
            Ok(_) => panic!("a bad AUDIT_FORWARD_BATCH_SIGNING_KEY was accepted"),
            Err(e) => assert_eq!(e.key, "AUDIT_FORWARD_BATCH_SIGNING_KEY"),
        }
    }

    #[test]
    fn env_wins_over_plugin_config() {
        let c = parse(
            br#"{"collector_cluster":"c","api_key":"from-config","signing_secret":"s1","retries":1,"enabled":true}"#,
            &env(&[
                ("AUDIT_FORWARD_API_KEY", "from-env"),
                ("AUDIT_FORWARD_RETRIES", "7"),
                ("AUDIT_FORWARD_ENABLED", "0"),
            ]),
        );
        let c = match c {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.api_key.as_ref().map(Secret::expose), Some("from-env"));
        assert_eq!(c.retries, 7);
        assert!(!c.enabled);
        // the event key defaults to the signing secret
        assert_eq!(c.event_key.as_ref().map(Secret::expose), Some("s1"));
        let e = parse(
            br#"{"collector_cluster":"c"}"#,
            &env(&[("AUDIT_FORWARD_ENABLED", "maybe")]),
        );
        assert!(matches!(e, Err(ConfigError { ref key, .. }) if key == "AUDIT_FORWARD_ENABLED"));
    }

    #[test]
    fn secrets_never_show_in_errors() {
        let e = parse_err(r#"{"collector_cluster":"c","api_key":987654321}"#);
        assert_eq!(e.key, "api_key");
        assert!(!e.to_string().contains("987654321"));
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let c =
            parse_ok(r#"{"collector_cluster":"c","api_key":"hunter2","signing_secret":"s3cr3t"}"#);
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains("s3cr3t"));
    }

    #[test]
    fn skip_paths_words_and_prefixes() {
        let c = parse_ok(r#"{"collector_cluster":"c","skip_paths":["/internal","health"]}"#);
        assert!(c.is_skipped("/internal/x"));
        assert!(!c.is_skipped("/api/internal"));
        assert!(c.is_skipped("/api/healthz"));
        assert!(!c.is_skipped("/api/orders"));
        let d = parse_ok(r#"{"collector_cluster":"c"}"#);
        assert!(d.is_skipped("/actuator/info"));
        assert!(d.is_skipped("/favicon.ico"));
    }

    /// The one-pass automaton says what a substring search per word says,
    /// for overlapping words, words inside words, repeats and case.
    #[test]
    fn skip_words_match_as_substring_search_per_word() {
        let alphabet = [b'a', b'b', b'H', b'h', b'/'];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for _ in 0..400 {
            let words: Vec<String> = (0..1 + next(4))
                .map(|_| {
                    let w: Vec<u8> = (0..1 + next(4)).map(|_| alphabet[next(4)]).collect();
                    String::from_utf8(w).unwrap()
                })
                .collect();
            let skip = SkipPaths::new(&words).unwrap();
            for _ in 0..50 {
                let p: Vec<u8> = (0..next(12)).map(|_| alphabet[next(5)]).collect();
                let path = String::from_utf8(p).unwrap();
                // no word starts with '/' (those are prefixes, matched apart)
                let want = words.iter().any(|w| path.contains(w.as_str()));
                assert_eq!(skip.matches(&path), want, "{words:?} {path:?}");
            }
        }
    }

    #[test]
    fn content_types_match_with_wildcards_and_parameters() {
        let c = parse_ok(r#"{"collector_cluster":"c"}"#);
        assert!(c.captures_content_type("application/json; charset=utf-8"));
        assert!(c.captures_content_type("Application/JSON"));
        assert!(c.captures_content_type("application/problem+json"));
        assert!(!c.captures_content_type("application/octet-stream"));
        assert!(!c.captures_content_type("image/png"));
        assert!(!c.captures_content_type(""));
    }

    #[test]
    fn disabled_needs_no_cluster() {
        let c = parse(br#"{"enabled":false}"#, &env(&[])).map(|c| c.enabled);
        assert_eq!(c, Ok(false));
    }
}
