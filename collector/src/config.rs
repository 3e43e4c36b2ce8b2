//! Configuration: the command line of `meshaudit-collector`, every option also
//! an environment variable with the names of SPEC §7, and its validation into
//! [`Settings`].
//!
//! Validation collects every problem and reports one clear line for each, so a
//! bad deployment is fixed in one round. `Debug` of anything holding a secret
//! prints how many secrets there are, never their bytes.

use clap::{Args, Parser, Subcommand, ValueEnum};
use meshaudit_event::integrity::EventKeys;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The meshaudit collector: ingest, verify, store, query and check audit events.
#[derive(Parser)]
#[command(
    name = "meshaudit-collector",
    version,
    about,
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the ingest, query, verify, metrics and health endpoints.
    Serve(Box<ServeArgs>),
    /// Apply the database migrations (and create PostgreSQL partitions ahead), then exit.
    Migrate(DbArgs),
    /// Recompute every event hash and the whole chain; exit 0 intact, 1 broken, 2 could not check.
    Verify(VerifyArgs),
    /// Print stored events as a table or NDJSON.
    Query(QueryArgs),
    /// Print a new checkpoint signer key and its verifier key (SPEC §9 note text forms).
    LogKeygen(crate::log::cli::KeygenArgs),
    /// Check an event's inclusion proof, or a consistency proof, against signed checkpoints, with no collector or database.
    VerifyOffline(crate::log::cli::VerifyOfflineArgs),
    /// Archive events received before a date to compressed NDJSON and remove them.
    Retain(RetainArgs),
    /// Manage the exporters: status, replay from a seq, pause, resume (SPEC §11).
    Export(crate::export::cli::ExportArgs),
}

/// Where the events live.
#[derive(Args, Clone)]
pub struct DbArgs {
    /// `sqlite://PATH` (created if missing) or `postgres://…`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://meshaudit.db")]
    pub database_url: String,
    /// Log format: `text` or `json`.
    #[arg(
        long,
        env = "MESHAUDIT_LOG_FORMAT",
        default_value = "text",
        ignore_case = true
    )]
    pub log_format: LogFormat,
}

impl fmt::Debug for DbArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbArgs")
            .field("database_url", &redact_url(&self.database_url))
            .field("log_format", &self.log_format)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `serve`'s options (SPEC §7).
#[derive(Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub log: crate::log::config::LogArgs,
    /// Address to serve on.
    #[arg(long, env = "MESHAUDIT_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// Refuse requests without a listed API key (`1`/`0`/`true`/`false`).
    #[arg(long, env = "AUDIT_RECEIVER_REQUIRE_API_KEY", default_value = "1")]
    pub require_api_key: String,
    /// Accepted API keys, comma-separated (a list, for rotation).
    #[arg(long, env = "AUDIT_RECEIVER_API_KEY")]
    pub api_key: Option<String>,
    /// Refuse batches without a valid `X-Signature`.
    #[arg(long, env = "AUDIT_RECEIVER_REQUIRE_SIGNATURE", default_value = "1")]
    pub require_signature: String,
    /// Batch HMAC secrets, comma-separated (a list, for rotation).
    #[arg(long, env = "AUDIT_RECEIVER_SIGNING_SECRET")]
    pub signing_secret: Option<String>,
    /// Enforce the `X-Signature-Ts` window.
    #[arg(long, env = "AUDIT_RECEIVER_ENFORCE_TS", default_value = "1")]
    pub enforce_ts: String,
    /// Allowed clock skew of `X-Signature-Ts`, in seconds, future as past.
    #[arg(long, env = "AUDIT_RECEIVER_TS_SKEW_SEC", default_value = "300")]
    pub ts_skew_sec: String,
    /// How long an `X-Idempotency-Key` is remembered, in seconds.
    #[arg(long, env = "AUDIT_RECEIVER_IDEMP_TTL_SEC", default_value = "60")]
    pub idemp_ttl_sec: String,
    /// Event signature keys, `keyid=secret` comma-separated (split on the first `=`).
    #[arg(long, env = "AUDIT_RECEIVER_EVENT_KEYS")]
    pub event_keys: Option<String>,
    /// Refuse a whole batch with 422 when one of its events fails verification.
    #[arg(long, env = "AUDIT_RECEIVER_REJECT_UNVERIFIED", default_value = "0")]
    pub reject_unverified: String,
    /// Workload verifier keys (SPEC §10), comma-separated, for setups without the key registry API.
    #[arg(long, env = "AUDIT_RECEIVER_BATCH_KEYS")]
    pub batch_keys: Option<String>,
    /// Refuse batches without `X-Meshaudit-Batch-Signature` (SPEC §10).
    #[arg(
        long,
        env = "AUDIT_RECEIVER_REQUIRE_BATCH_SIGNATURE",
        default_value = "0"
    )]
    pub require_batch_signature: String,
    /// Largest body accepted, in bytes, on the wire and after decompression.
    #[arg(long, env = "MESHAUDIT_MAX_BODY_BYTES", default_value = "4194304")]
    pub max_body_bytes: String,
    /// Requests per second allowed per API key (burst: twice the rate); 0 turns it off.
    #[arg(long, env = "MESHAUDIT_RATE_LIMIT_RPS", default_value = "0")]
    pub rate_limit_rps: String,
    /// Most events in one batch (`413` past it), counted before parsing.
    #[arg(long, env = "MESHAUDIT_MAX_BATCH_EVENTS", default_value = "5000")]
    pub max_batch_events: String,
    /// Body bytes all ingest requests together may hold (`503` + `Retry-After` past it).
    #[arg(long, env = "MESHAUDIT_MAX_INFLIGHT_BYTES", default_value = "67108864")]
    pub max_inflight_bytes: String,
    /// Seconds a client has to send its request headers.
    #[arg(long, env = "MESHAUDIT_HEADER_READ_TIMEOUT_SEC", default_value = "10")]
    pub header_read_timeout_sec: String,
    /// Seconds a client has to send an ingest body (`408` past it).
    #[arg(long, env = "MESHAUDIT_BODY_READ_TIMEOUT_SEC", default_value = "30")]
    pub body_read_timeout_sec: String,
    /// Seconds a connection may stay without reading or writing a byte.
    #[arg(long, env = "MESHAUDIT_IDLE_TIMEOUT_SEC", default_value = "60")]
    pub idle_timeout_sec: String,
    /// Client connections open at once; more are closed as they arrive.
    #[arg(long, env = "MESHAUDIT_MAX_CONNECTIONS", default_value = "1024")]
    pub max_connections: String,
    /// Concurrent HTTP/2 streams per connection.
    #[arg(long, env = "MESHAUDIT_HTTP2_MAX_STREAMS", default_value = "32")]
    pub http2_max_streams: String,
    /// Filter sources (`X-Meshaudit-Source`) tracked in metrics at most.
    #[arg(long, env = "MESHAUDIT_MAX_SOURCES", default_value = "10000")]
    pub max_sources: String,
    /// Seconds after which a silent source is forgotten (its series removed).
    #[arg(long, env = "MESHAUDIT_SOURCE_TTL_SEC", default_value = "86400")]
    pub source_ttl_sec: String,
    /// Token for the read and verify endpoints (`Authorization: Bearer …` or `X-Admin-Token`).
    #[arg(long, env = "MESHAUDIT_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Where `retain` writes its archives: `GET /v1/verify` proves retention anchors from them.
    #[arg(long, env = "MESHAUDIT_ARCHIVE_DIR")]
    pub archive_dir: Option<PathBuf>,
    /// `GET /v1/verify` accepts retention anchors it cannot prove (reported as `accepted`).
    #[arg(long, env = "MESHAUDIT_ACCEPT_UNPROVEN_ANCHOR", default_value = "0")]
    pub accept_unproven_anchor: String,
    /// Exporters (SPEC §11): a JSON array, one object per exporter.
    #[arg(long, env = "MESHAUDIT_EXPORTERS")]
    pub exporters: Option<String>,
    /// A file holding the exporters' JSON array (instead of `MESHAUDIT_EXPORTERS`).
    #[arg(long, env = "MESHAUDIT_EXPORTERS_FILE")]
    pub exporters_file: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS.
    #[arg(long, env = "MESHAUDIT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long, env = "MESHAUDIT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: require client certificates signed by it (mTLS).
    #[arg(long, env = "MESHAUDIT_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
}

impl fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServeArgs { .. secrets hidden .. }")
    }
}

#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub log: crate::log::cli::CheckpointArgs,
    /// Where `retain` wrote its archives: each retention anchor is proven by
    /// its archive (SHA-256 and chain); without it anchors are unproven (exit 1).
    #[arg(long, visible_alias = "archive")]
    pub archive_dir: Option<PathBuf>,
    /// Accept retention anchors whose archive cannot be checked (reported, exit 0).
    #[arg(long)]
    pub accept_unproven_anchor: bool,
}

/// Query filters (SPEC §7 `GET /v1/events`).
#[derive(Args, Debug, Clone, Default)]
pub struct QueryFilterArgs {
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub namespace: Option<String>,
    #[arg(long)]
    pub pod: Option<String>,
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub method: Option<String>,
    #[arg(long)]
    pub path_prefix: Option<String>,
    #[arg(long)]
    pub status: Option<i64>,
    /// RFC 3339, on the event `timestamp`.
    #[arg(long)]
    pub since: Option<String>,
    /// RFC 3339, on the event `timestamp`.
    #[arg(long)]
    pub until: Option<String>,
    /// Exclusive `seq` cursor.
    #[arg(long)]
    pub after: Option<i64>,
    /// How many events at most (all of them when not given).
    #[arg(long)]
    pub limit: Option<i64>,
}

#[derive(Args, Debug, Clone)]
pub struct QueryArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub filters: QueryFilterArgs,
    /// `table` or `ndjson`.
    #[arg(long, default_value = "table")]
    pub format: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Ndjson,
}

#[derive(Args, Debug, Clone)]
pub struct RetainArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Remove events received before this date (RFC 3339, or `YYYY-MM-DD` meaning midnight UTC).
    #[arg(long)]
    pub before: String,
    /// Directory the gzip-compressed NDJSON archive is written to.
    #[arg(long)]
    pub archive: PathBuf,
    /// Youngest events `retain` may remove: a `--before` later than now minus
    /// this age is refused (`90s`, `30m`, `24h`, `7d`), so a typo or a future
    /// date cannot empty the store up to the head.
    #[arg(long, env = "MESHAUDIT_RETAIN_MIN_AGE", default_value = "24h")]
    pub min_age: String,
    /// Remove anyway when `--before` is later than now minus `--min-age`.
    #[arg(long)]
    pub force: bool,
    /// How long each write step (the anchor, one chunk of deletes) keeps
    /// trying while the database is busy or locked by ingest (`90s`, `5m`, at
    /// most `1d`; `0s` gives up at the first refusal).
    #[arg(long, env = "MESHAUDIT_RETAIN_PATIENCE", default_value = "5m")]
    pub patience: String,
}

/// A secret string: its bytes are used as they are (SPEC §5), `Debug` hides them.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// TLS files; mTLS when `client_ca` is set.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// Validated `serve` settings.
#[derive(Clone)]
pub struct Settings {
    /// The verifiable log (SPEC §9).
    pub log: crate::log::config::LogSettings,
    pub database_url: String,
    pub listen: SocketAddr,
    pub require_api_key: bool,
    pub api_keys: Vec<Secret>,
    pub require_signature: bool,
    pub signing_secrets: Vec<Vec<u8>>,
    pub enforce_ts: bool,
    pub ts_skew_secs: i64,
    pub idemp_ttl_secs: i64,
    pub event_keys: EventKeys,
    pub reject_unverified: bool,
    /// `AUDIT_RECEIVER_BATCH_KEYS` (public keys: nothing to hide).
    pub batch_keys: Vec<meshaudit_event::workload_key::VerifierKey>,
    pub require_batch_signature: bool,
    pub max_body_bytes: usize,
    pub rate_limit_rps: f64,
    /// Ingest limits (`MESHAUDIT_MAX_BATCH_EVENTS` …, docs/collector.md).
    pub limits: IngestLimits,
    pub admin_token: Option<Secret>,
    pub archive_dir: Option<PathBuf>,
    pub accept_unproven_anchor: bool,
    pub tls: Option<TlsFiles>,
    pub log_format: LogFormat,
    /// Exporters (SPEC §11); `Debug` of each hides its secrets.
    pub exporters: Vec<crate::export::config::ExporterConfig>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("database_url", &redact_url(&self.database_url))
            .field("listen", &self.listen)
            .field("require_api_key", &self.require_api_key)
            .field("api_keys", &format_args!("{} hidden", self.api_keys.len()))
            .field("require_signature", &self.require_signature)
            .field(
                "signing_secrets",
                &format_args!("{} hidden", self.signing_secrets.len()),
            )
            .field("enforce_ts", &self.enforce_ts)
            .field("ts_skew_secs", &self.ts_skew_secs)
            .field("idemp_ttl_secs", &self.idemp_ttl_secs)
            .field("event_keys", &self.event_keys)
            .field("reject_unverified", &self.reject_unverified)
            .field("batch_keys", &self.batch_keys)
            .field("require_batch_signature", &self.require_batch_signature)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("rate_limit_rps", &self.rate_limit_rps)
            .field("limits", &self.limits)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "hidden"))
            .field("archive_dir", &self.archive_dir)
            .field("accept_unproven_anchor", &self.accept_unproven_anchor)
            .field("tls", &self.tls)
            .field("log_format", &self.log_format)
            .field("exporters", &self.exporters)
            .finish()
    }
}

/// The limits that keep a hostile or careless client from holding the
/// collector's memory, connections or CPU (issue 17; docs/collector.md
/// "Ingest limits").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestLimits {
    pub max_batch_events: usize,
    pub max_inflight_bytes: usize,
    pub header_read_timeout: std::time::Duration,
    pub body_read_timeout: std::time::Duration,
    pub idle_timeout: std::time::Duration,
    pub max_connections: usize,
    pub http2_max_streams: u32,
    pub max_sources: usize,
    pub source_ttl_secs: i64,
}

impl IngestLimits {
    /// The defaults of the flags, for code that builds settings by hand.
    pub fn defaults() -> Self {
        Self {
            max_batch_events: 5000,
            max_inflight_bytes: 64 << 20,
            header_read_timeout: std::time::Duration::from_secs(10),
            body_read_timeout: std::time::Duration::from_secs(30),
            idle_timeout: std::time::Duration::from_secs(60),
            max_connections: 1024,
            http2_max_streams: 32,
            max_sources: 10_000,
            source_ttl_secs: 86_400,
        }
    }
}

/// Every problem found in the configuration, one line each.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// `1`/`0`/`true`/`false` (case-insensitive, spaces trimmed).
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// A comma-separated list, entries trimmed, empty entries dropped.
pub fn parse_list(s: Option<&str>) -> Vec<String> {
    s.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `keyid=secret` entries, each split on its first `=`.
pub fn parse_event_keys(s: Option<&str>) -> Result<Vec<(String, Vec<u8>)>, String> {
    parse_list(s)
        .into_iter()
        .map(|entry| match entry.split_once('=') {
            Some((id, secret)) if !id.trim().is_empty() && !secret.is_empty() => {
                Ok((id.trim().to_owned(), secret.as_bytes().to_vec()))
            }
            _ => Err(
                "AUDIT_RECEIVER_EVENT_KEYS: every entry must be keyid=secret (an entry is not)"
                    .to_owned(),
            ),
        })
        .collect()
}

/// `IP:PORT`, or `NAME:PORT` resolved once (the first address).
fn resolve_listen(s: &str) -> Option<SocketAddr> {
    if let Ok(addr) = s.parse() {
        return Some(addr);
    }
    std::net::ToSocketAddrs::to_socket_addrs(s).ok()?.next()
}

/// The database URL with any password replaced, for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://{user}@{host}{path}")
            }
        }
        None => url.to_owned(),
    }
}

impl ServeArgs {
    /// The ingest limits: whole numbers ≥ 1 (seconds for timeouts), and
    /// room in flight for at least one body of the largest size.
    fn ingest_limits(&self, max_body_bytes: usize, problems: &mut Vec<String>) -> IngestLimits {
        let d = IngestLimits::defaults();
        let mut positive = |name: &str, v: &str, default: u64| -> u64 {
            match v.trim().parse::<u64>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    problems.push(format!("{name}: expected a whole number ≥ 1, got {v:?}"));
                    default
                }
            }
        };
        let secs = std::time::Duration::from_secs;
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let limits = IngestLimits {
            max_batch_events: size(positive(
                "MESHAUDIT_MAX_BATCH_EVENTS",
                &self.max_batch_events,
                d.max_batch_events as u64,
            )),
            max_inflight_bytes: size(positive(
                "MESHAUDIT_MAX_INFLIGHT_BYTES",
                &self.max_inflight_bytes,
                d.max_inflight_bytes as u64,
            )),
            header_read_timeout: secs(positive(
                "MESHAUDIT_HEADER_READ_TIMEOUT_SEC",
                &self.header_read_timeout_sec,
                10,
            )),
            body_read_timeout: secs(positive(
                "MESHAUDIT_BODY_READ_TIMEOUT_SEC",
                &self.body_read_timeout_sec,
                30,
            )),
            idle_timeout: secs(positive(
                "MESHAUDIT_IDLE_TIMEOUT_SEC",
                &self.idle_timeout_sec,
                60,
            )),
            max_connections: size(positive(
                "MESHAUDIT_MAX_CONNECTIONS",
                &self.max_connections,
                d.max_connections as u64,
            )),
            http2_max_streams: u32::try_from(positive(
                "MESHAUDIT_HTTP2_MAX_STREAMS",
                &self.http2_max_streams,
                u64::from(d.http2_max_streams),
            ))
            .unwrap_or(u32::MAX),
            max_sources: size(positive(
                "MESHAUDIT_MAX_SOURCES",
                &self.max_sources,
                d.max_sources as u64,
            )),
            source_ttl_secs: i64::try_from(positive(
                "MESHAUDIT_SOURCE_TTL_SEC",
                &self.source_ttl_sec,
                86_400,
            ))
            .unwrap_or(i64::MAX),
        };
        if limits.max_inflight_bytes < max_body_bytes {
            problems.push(format!(
                "MESHAUDIT_MAX_INFLIGHT_BYTES: {} is less than MESHAUDIT_MAX_BODY_BYTES ({max_body_bytes}): a body of the largest size could never be admitted",
                limits.max_inflight_bytes
            ));
        }
        limits
    }

    /// Checks every option; all problems at once, one line each.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let mut problems = Vec::new();
        let flag = |name: &str, v: &str, problems: &mut Vec<String>| -> bool {
            parse_bool(v).unwrap_or_else(|| {
                problems.push(format!("{name}: expected 1, 0, true or false, got {v:?}"));
                false
            })
        };
        let require_api_key = flag(
            "AUDIT_RECEIVER_REQUIRE_API_KEY",
            &self.require_api_key,
            &mut problems,
        );
        let require_signature = flag(
            "AUDIT_RECEIVER_REQUIRE_SIGNATURE",
            &self.require_signature,
            &mut problems,
        );
        let enforce_ts = flag("AUDIT_RECEIVER_ENFORCE_TS", &self.enforce_ts, &mut problems);
        let require_batch_signature = flag(
            "AUDIT_RECEIVER_REQUIRE_BATCH_SIGNATURE",
            &self.require_batch_signature,
            &mut problems,
        );
        let batch_keys = crate::keys::registry::parse_static_keys(self.batch_keys.as_deref())
            .unwrap_or_else(|p| {
                problems.push(p);
                Vec::new()
            });
        let reject_unverified = flag(
            "AUDIT_RECEIVER_REJECT_UNVERIFIED",
            &self.reject_unverified,
            &mut problems,
        );
        let accept_unproven_anchor = flag(
            "MESHAUDIT_ACCEPT_UNPROVEN_ANCHOR",
            &self.accept_unproven_anchor,
            &mut problems,
        );

        let listen = resolve_listen(self.listen.trim()).unwrap_or_else(|| {
            problems.push(format!(
                "MESHAUDIT_LISTEN: expected HOST:PORT (an IP address or a resolvable name), got {:?}",
                self.listen
            ));
            SocketAddr::from(([0, 0, 0, 0], 8080))
        });

        let api_keys: Vec<Secret> = parse_list(self.api_key.as_deref())
            .into_iter()
            .map(Secret)
            .collect();
        if require_api_key && api_keys.is_empty() {
            problems.push(
                "AUDIT_RECEIVER_API_KEY: no key configured while AUDIT_RECEIVER_REQUIRE_API_KEY is on (set a key, or set AUDIT_RECEIVER_REQUIRE_API_KEY=0)".to_owned(),
            );
        }
        let signing_secrets: Vec<Vec<u8>> = parse_list(self.signing_secret.as_deref())
            .into_iter()
            .map(String::into_bytes)
            .collect();
        if require_signature && signing_secrets.is_empty() {
            problems.push(
                "AUDIT_RECEIVER_SIGNING_SECRET: no secret configured while AUDIT_RECEIVER_REQUIRE_SIGNATURE is on (set a secret, or set AUDIT_RECEIVER_REQUIRE_SIGNATURE=0)".to_owned(),
            );
        }

        let number = |name: &str, v: &str, min: i64, problems: &mut Vec<String>| -> i64 {
            match v.trim().parse::<i64>() {
                Ok(n) if n >= min => n,
                _ => {
                    problems.push(format!(
                        "{name}: expected a whole number ≥ {min}, got {v:?}"
                    ));
                    min
                }
            }
        };
        let ts_skew_secs = number(
            "AUDIT_RECEIVER_TS_SKEW_SEC",
            &self.ts_skew_sec,
            0,
            &mut problems,
        );
        let idemp_ttl_secs = number(
            "AUDIT_RECEIVER_IDEMP_TTL_SEC",
            &self.idemp_ttl_sec,
            0,
            &mut problems,
        );
        let max_body_bytes = number(
            "MESHAUDIT_MAX_BODY_BYTES",
            &self.max_body_bytes,
            1,
            &mut problems,
        ) as usize;
        let rate_limit_rps = match self
            .rate_limit_rps
            .trim()
            .parse::<f64>()
            .map_err(|_| "expected a number".to_owned())
            .and_then(crate::rate_limit::validate_rate)
        {
            Ok(r) => r,
            Err(why) => {
                problems.push(format!(
                    "MESHAUDIT_RATE_LIMIT_RPS: {why}, got {:?}",
                    self.rate_limit_rps
                ));
                0.0
            }
        };
        let limits = self.ingest_limits(max_body_bytes, &mut problems);

        let event_keys = match parse_event_keys(self.event_keys.as_deref()) {
            Ok(keys) if keys.is_empty() => EventKeys::new(
                signing_secrets
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (format!("signing-secret-{}", i + 1), s.clone())),
            ),
            Ok(keys) => EventKeys::new(keys),
            Err(p) => {
                problems.push(p);
                EventKeys::default()
            }
        };

        let admin_token = self
            .admin_token
            .as_deref()
            .filter(|t| !t.trim().is_empty())
            .map(|t| Secret(t.to_owned()));

        let tls = match (&self.tls_cert, &self.tls_key, &self.tls_client_ca) {
            (None, None, None) => None,
            (Some(cert), Some(key), client_ca) => {
                for (name, p) in [
                    ("MESHAUDIT_TLS_CERT", Some(cert)),
                    ("MESHAUDIT_TLS_KEY", Some(key)),
                    ("MESHAUDIT_TLS_CLIENT_CA", client_ca.as_ref()),
                ] {
                    if let Some(p) = p {
                        if !p.is_file() {
                            problems
                                .push(format!("{name}: {} is not a readable file", p.display()));
                        }
                    }
                }
                Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: client_ca.clone(),
                })
            }
            _ => {
                problems.push(
                    "MESHAUDIT_TLS_CERT and MESHAUDIT_TLS_KEY: both are needed for TLS (and MESHAUDIT_TLS_CLIENT_CA only with them)".to_owned(),
                );
                None
            }
        };

        let log = self.log.validate(&mut problems);
        let url = self.db.database_url.trim();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            problems.push(format!(
                "DATABASE_URL: expected sqlite://PATH or postgres://…, got {:?}",
                redact_url(url)
            ));
        }

        let exporters =
            crate::export::config::load(self.exporters.as_deref(), self.exporters_file.as_deref())
                .unwrap_or_else(|mut found| {
                    problems.append(&mut found);
                    Vec::new()
                });

        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Ok(Settings {
            log,
            database_url: url.to_owned(),
            listen,
            require_api_key,
            api_keys,
            require_signature,
            signing_secrets,
            enforce_ts,
            ts_skew_secs,
            idemp_ttl_secs,
            event_keys,
            reject_unverified,
            batch_keys,
            require_batch_signature,
            max_body_bytes,
            rate_limit_rps,
            limits,
            admin_token,
            archive_dir: self.archive_dir.clone(),
            accept_unproven_anchor,
            tls,
            log_format: self.db.log_format,
            exporters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["meshaudit-collector", "serve"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Serve(a),
            }) => *a,
            Ok(_) => panic!("not serve"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn defaults_require_key_and_secret() {
        let a = ServeArgs {
            api_key: None,
            signing_secret: None,
            ..args(&["--api-key", "k", "--signing-secret", "s"])
        };
        let err = a.validate().unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(err.problems[0].starts_with("AUDIT_RECEIVER_API_KEY"));
        assert!(err.problems[1].starts_with("AUDIT_RECEIVER_SIGNING_SECRET"));
    }

    #[test]
    fn one_line_per_problem() {
        let a = args(&[
            "--api-key",
            "k",
            "--signing-secret",
            "s",
            "--enforce-ts",
            "yes",
            "--ts-skew-sec=-1",
            "--listen",
            "nowhere",
        ]);
        let err = a.validate().unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        assert!(err.to_string().contains("AUDIT_RECEIVER_ENFORCE_TS"));
    }

    #[test]
    fn lists_trim_and_event_keys_split_on_first_equals() {
        let a = args(&[
            "--api-key",
            " a , b ,",
            "--signing-secret",
            "s1,s2",
            "--event-keys",
            "k1=abc=def, default = x",
        ]);
        let s = a.validate().unwrap();
        assert_eq!(s.api_keys, vec![Secret("a".into()), Secret("b".into())]);
        assert_eq!(s.signing_secrets, vec![b"s1".to_vec(), b"s2".to_vec()]);
        let keys = parse_event_keys(Some("k1=abc=def, default = x")).unwrap();
        assert_eq!(keys[0], ("k1".to_owned(), b"abc=def".to_vec()));
        assert_eq!(keys[1], ("default".to_owned(), b" x".to_vec()));
    }

    #[test]
    fn debug_hides_secrets() {
        let a = args(&[
            "--api-key",
            "topsecretkey",
            "--signing-secret",
            "hmacsecret",
            "--admin-token",
            "admintok",
            "--database-url",
            "postgres://u:pw123@h/db",
        ]);
        let s = a.validate().unwrap();
        let dbg = format!("{s:?} {a:?}");
        for secret in ["topsecretkey", "hmacsecret", "admintok", "pw123"] {
            assert!(!dbg.contains(secret), "{secret} leaked in {dbg}");
        }
    }

    #[test]
    fn absurd_rates_and_limits_stop_start_up() {
        for rps in ["1e-30", "NaN", "inf", "-1", "x"] {
            let rate = format!("--rate-limit-rps={rps}");
            let a = args(&["--api-key", "k", "--signing-secret", "s", &rate]);
            let err = a.validate().unwrap_err();
            assert!(
                err.problems[0].starts_with("MESHAUDIT_RATE_LIMIT_RPS"),
                "{rps}: {err}"
            );
        }
        let a = args(&[
            "--api-key",
            "k",
            "--signing-secret",
            "s",
            "--max-batch-events",
            "0",
            "--max-inflight-bytes",
            "1000",
            "--idle-timeout-sec",
            "soon",
        ]);
        let err = a.validate().unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        let s = args(&["--api-key", "k", "--signing-secret", "s"])
            .validate()
            .unwrap();
        assert_eq!(s.limits, IngestLimits::defaults());
    }

    #[test]
    fn booleans() {
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool(" 0 "), Some(false));
        assert_eq!(parse_bool("yes"), None);
    }

    #[test]
    fn listen_takes_ips_and_names() {
        assert_eq!(resolve_listen("[::1]:9"), Some("[::1]:9".parse().unwrap()));
        assert_eq!(
            resolve_listen("localhost:8080").map(|a| a.port()),
            Some(8080)
        );
        assert_eq!(resolve_listen("nowhere"), None);
    }
}
