//! Exporter configuration (SPEC §11): `MESHAUDIT_EXPORTERS` holds a JSON
//! array, or `MESHAUDIT_EXPORTERS_FILE` names a file holding the same array;
//! one object per exporter with `name`, `type`, `format`, `batch_records` and
//! the keys of its type. Unknown keys, a missing required key or a duplicate
//! `name` are problems naming the exporter and the key. `Debug` hides secrets.

use crate::config::Secret;
use serde::{Deserialize, Deserializer};
use std::fmt;

/// Records per batch when `batch_records` is not given.
pub const DEFAULT_BATCH_RECORDS: i64 = 500;
/// Most records one batch may hold.
pub const MAX_BATCH_RECORDS: i64 = 10_000;

/// The shape exported records take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `{"seq","chain_hash","record_hash","received_at","schemaid","verified","event"}`.
    #[default]
    Meshaudit,
    /// OCSF HTTP Activity (`class_uid` 4002), see [`super::ocsf`].
    Ocsf,
}

/// One configured exporter.
#[derive(Debug, Clone)]
pub struct ExporterConfig {
    pub name: String,
    pub format: Format,
    pub batch_records: i64,
    pub sink: SinkConfig,
}

/// The sink and its settings.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    Webhook(WebhookConfig),
    SplunkHec(SplunkConfig),
    S3(S3Config),
    Nats(NatsConfig),
}

impl SinkConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Webhook(_) => "webhook",
            SinkConfig::SplunkHec(_) => "splunk_hec",
            SinkConfig::S3(_) => "s3",
            SinkConfig::Nats(_) => "nats",
        }
    }
}

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    #[serde(deserialize_with = "secret")]
    pub api_key: Secret,
    #[serde(deserialize_with = "secret")]
    pub signing_secret: Secret,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplunkConfig {
    pub url: String,
    #[serde(deserialize_with = "secret")]
    pub token: Secret,
    pub index: Option<String>,
    pub sourcetype: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub prefix: Option<String>,
    pub access_key_id: String,
    #[serde(deserialize_with = "secret")]
    pub secret_access_key: Secret,
    #[serde(default)]
    pub path_style: bool,
    pub segment_records: Option<i64>,
    pub segment_seconds: Option<u64>,
    pub object_lock_days: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    pub url: String,
    pub subject: String,
    pub stream: String,
}

/// The keys every exporter has; the rest belong to its type.
const COMMON_KEYS: [&str; 4] = ["name", "type", "format", "batch_records"];

/// Parses the JSON array; every problem, one line each, naming the exporter.
pub fn parse_exporters(json: &str, origin: &str) -> Result<Vec<ExporterConfig>, Vec<String>> {
    let items: Vec<serde_json::Value> = match serde_json::from_str(json) {
        Ok(serde_json::Value::Array(items)) => items,
        Ok(_) => {
            return Err(vec![format!(
                "{origin}: expected a JSON array of exporters"
            )])
        }
        Err(e) => return Err(vec![format!("{origin}: not valid JSON ({e})")]),
    };
    let mut problems = Vec::new();
    let mut out: Vec<ExporterConfig> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match parse_one(item) {
            Ok(cfg) => {
                if out.iter().any(|o| o.name == cfg.name) {
                    problems.push(format!(
                        "{origin}[{i}]: duplicate exporter name {:?}",
                        cfg.name
                    ));
                } else {
                    out.push(cfg);
                }
            }
            Err((name, why)) => match name {
                Some(n) => problems.push(format!("{origin}[{i}] (exporter {n:?}): {why}")),
                None => problems.push(format!("{origin}[{i}]: {why}")),
            },
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn parse_one(item: serde_json::Value) -> Result<ExporterConfig, (Option<String>, String)> {
    let serde_json::Value::Object(mut obj) = item else {
        return Err((None, "expected an object".to_owned()));
    };
    let name = match obj.get("name") {
        Some(serde_json::Value::String(s)) if valid_name(s) => s.clone(),
        Some(serde_json::Value::String(s)) => {
            return Err((
                Some(s.clone()),
                "name: use 1 to 64 of A-Z a-z 0-9 . _ -".to_owned(),
            ))
        }
        Some(_) => return Err((None, "name: expected a string".to_owned())),
        None => return Err((None, "missing required key \"name\"".to_owned())),
    };
    let fail = |why: String| (Some(name.clone()), why);
    let kind = match obj.get("type") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(_) => return Err(fail("type: expected a string".to_owned())),
        None => return Err(fail("missing required key \"type\"".to_owned())),
    };
    let format = match obj.get("format") {
        None => Format::default(),
        Some(v) => Format::deserialize(v).map_err(|_| {
            fail(format!(
                "format: expected \"meshaudit\" or \"ocsf\", got {v}"
            ))
        })?,
    };
    let batch_records = match obj.get("batch_records") {
        None => DEFAULT_BATCH_RECORDS,
        Some(v) => match v.as_i64() {
            Some(n) if (1..=MAX_BATCH_RECORDS).contains(&n) => n,
            _ => {
                return Err(fail(format!(
                    "batch_records: expected a whole number from 1 to {MAX_BATCH_RECORDS}"
                )))
            }
        },
    };
    for key in COMMON_KEYS {
        obj.remove(key);
    }
    let rest = serde_json::Value::Object(obj);
    let typed = |e: serde_json::Error| fail(e.to_string());
    let sink = match kind.as_str() {
        "webhook" => SinkConfig::Webhook(WebhookConfig::deserialize(rest).map_err(typed)?),
        "splunk_hec" => SinkConfig::SplunkHec(SplunkConfig::deserialize(rest).map_err(typed)?),
        "s3" => SinkConfig::S3(S3Config::deserialize(rest).map_err(typed)?),
        "nats" => SinkConfig::Nats(NatsConfig::deserialize(rest).map_err(typed)?),
        other => {
            return Err(fail(format!(
                "type: expected webhook, splunk_hec, s3 or nats, got {other:?}"
            )))
        }
    };
    Ok(ExporterConfig {
        name,
        format,
        batch_records,
        sink,
    })
}

/// Names go into idempotency keys, message ids, metric labels and S3 keys.
fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Reads `MESHAUDIT_EXPORTERS` / `MESHAUDIT_EXPORTERS_FILE` (both set is a problem).
pub fn load(
    inline: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Vec<ExporterConfig>, Vec<String>> {
    match (inline.filter(|s| !s.trim().is_empty()), file) {
        (Some(_), Some(_)) => Err(vec![
            "MESHAUDIT_EXPORTERS and MESHAUDIT_EXPORTERS_FILE: set one of them, not both"
                .to_owned(),
        ]),
        (Some(json), None) => parse_exporters(json, "MESHAUDIT_EXPORTERS"),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(json) => parse_exporters(&json, "MESHAUDIT_EXPORTERS_FILE"),
            Err(e) => Err(vec![format!(
                "MESHAUDIT_EXPORTERS_FILE: cannot read {}: {e}",
                path.display()
            )]),
        },
        (None, None) => Ok(Vec::new()),
    }
}

/// For `export status` and logs: the exporter without any secret.
pub struct Describe<'a>(pub &'a ExporterConfig);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, {:?})",
            self.0.name,
            self.0.sink.kind(),
            self.0.format
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_type_and_hides_secrets() {
        let json = r#"[
          {"name":"central","type":"webhook","url":"http://h/v1/events","api_key":"K-SECRET","signing_secret":"S-SECRET","batch_records":50},
          {"name":"siem","type":"splunk_hec","format":"ocsf","url":"http://h/services/collector/event","token":"T-SECRET","index":"audit"},
          {"name":"lake","type":"s3","region":"us-east-1","bucket":"b","access_key_id":"AK","secret_access_key":"SK-SECRET","path_style":true},
          {"name":"bus","type":"nats","url":"nats://127.0.0.1:4222","subject":"audit.events","stream":"AUDIT"}
        ]"#;
        let cfg = parse_exporters(json, "MESHAUDIT_EXPORTERS").unwrap();
        assert_eq!(cfg.len(), 4);
        assert_eq!(cfg[0].batch_records, 50);
        assert_eq!(cfg[1].format, Format::Ocsf);
        assert_eq!(cfg[2].batch_records, DEFAULT_BATCH_RECORDS);
        assert_eq!(
            cfg.iter().map(|c| c.sink.kind()).collect::<Vec<_>>(),
            ["webhook", "splunk_hec", "s3", "nats"]
        );
        let debug = format!("{cfg:?}");
        for secret in ["K-SECRET", "S-SECRET", "T-SECRET", "SK-SECRET"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
    }

    #[test]
    fn unknown_missing_and_duplicate_keys_are_named() {
        let json = r#"[
          {"name":"a","type":"nats","url":"u","subject":"s","stream":"S","colour":"red"},
          {"name":"b","type":"webhook","url":"u","api_key":"k"},
          {"name":"c","type":"nats","url":"u","subject":"s","stream":"S"},
          {"name":"c","type":"nats","url":"u","subject":"s","stream":"S"},
          {"type":"nats"},
          {"name":"d","type":"ftp"}
        ]"#;
        let problems = parse_exporters(json, "MESHAUDIT_EXPORTERS").unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].contains("\"a\"") && problems[0].contains("colour"));
        assert!(problems[1].contains("\"b\"") && problems[1].contains("signing_secret"));
        assert!(problems[2].contains("duplicate") && problems[2].contains("\"c\""));
        assert!(problems[3].contains("name"));
        assert!(problems[4].contains("ftp"));
    }

    #[test]
    fn not_an_array_and_both_sources_are_refused() {
        assert!(parse_exporters("{}", "X").is_err());
        assert!(parse_exporters("[", "X").is_err());
        assert!(load(Some("[]"), Some(std::path::Path::new("/x"))).is_err());
        assert!(load(None, None).unwrap().is_empty());
    }
}
