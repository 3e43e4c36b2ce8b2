//! `splunk_hec`: Splunk HTTP Event Collector. One batch is one POST of
//! back-to-back `{"time","host","source","sourcetype","event"}` objects with
//! `Authorization: Splunk <token>`; Splunk answers `{"text":"Success","code":0}`,
//! `503` when busy (retried), and on bad data `400` with
//! `invalid-event-number`, the 0-based index of the event at fault, which
//! names the seq the exporter stops at.

use super::http::{client, exchange};
use super::{Batch, Sink, SinkError};
use crate::export::config::{Format, SplunkConfig};
use crate::export::format::value;
use crate::export::record::Record;
use async_trait::async_trait;
use meshaudit_event::{canonical, Map, Number, Value};

/// The default `sourcetype` (SPEC §11).
pub const SOURCETYPE: &str = "meshaudit:http";

pub struct SplunkHec {
    client: reqwest::Client,
    url: String,
    token: String,
    index: Option<String>,
    sourcetype: String,
    format: Format,
}

impl SplunkHec {
    pub fn new(cfg: &SplunkConfig, format: Format) -> Result<Self, String> {
        Ok(Self {
            client: client()?,
            url: cfg.url.clone(),
            token: cfg.token.0.clone(),
            index: cfg.index.clone(),
            sourcetype: cfg
                .sourcetype
                .clone()
                .unwrap_or_else(|| SOURCETYPE.to_owned()),
            format,
        })
    }

    /// One HEC event envelope, canonical JSON. `host` is the pod the event
    /// came from, so it is the same on every resend.
    pub fn envelope(&self, r: &Record) -> Vec<u8> {
        let mut m = Map::new();
        if let Some((secs, micros)) = r.received_epoch() {
            let t = secs as f64 + f64::from(micros) / 1e6;
            m.insert("time".into(), Value::Number(Number::Float(t)));
        }
        let host = r
            .event
            .pointer(&["kubernetes", "podname"])
            .and_then(Value::as_str)
            .unwrap_or("meshaudit-collector");
        m.insert("host".into(), Value::String(host.to_owned()));
        m.insert("source".into(), Value::String("meshaudit".into()));
        m.insert("sourcetype".into(), Value::String(self.sourcetype.clone()));
        if let Some(index) = &self.index {
            m.insert("index".into(), Value::String(index.clone()));
        }
        m.insert("event".into(), value(r, self.format));
        canonical(&Value::Object(m))
    }
}

/// The seq of the event Splunk names in a `400` answer.
pub fn seq_of_invalid(body: &str, first: i64) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let n = v.get("invalid-event-number")?.as_i64()?;
    (n >= 0).then(|| first + n)
}

#[async_trait]
impl Sink for SplunkHec {
    async fn send(&self, batch: &Batch) -> Result<(), SinkError> {
        let mut body = Vec::new();
        for r in &batch.records {
            body.extend_from_slice(&self.envelope(r));
            body.push(b'\n');
        }
        let req = self
            .client
            .post(&self.url)
            .header("Authorization", format!("Splunk {}", self.token))
            .header("Content-Type", "application/json")
            .body(body);
        let answer = exchange(req, batch.first, |b| seq_of_invalid(b, batch.first)).await?;
        // A 2xx must still say code 0; anything else is not an acknowledgement.
        let code = serde_json::from_str::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v.get("code").and_then(serde_json::Value::as_i64));
        match code {
            Some(0) => Ok(()),
            _ => Err(SinkError::Transient(format!(
                "HEC answered 2xx without code 0: {}",
                answer.chars().take(200).collect::<String>()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::export::record::tests::stored;

    #[test]
    fn envelope_has_the_hec_fields() {
        let cfg = SplunkConfig {
            url: "http://x/services/collector/event".into(),
            token: Secret("t".into()),
            index: Some("audit".into()),
            sourcetype: None,
        };
        let hec = SplunkHec::new(&cfg, Format::Meshaudit).unwrap();
        let r = Record::from_stored(&stored(5, r#"{"kubernetes":{"podname":"api-1"}}"#)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&hec.envelope(&r)).unwrap();
        assert_eq!(v["sourcetype"], "meshaudit:http");
        assert_eq!(v["host"], "api-1");
        assert_eq!(v["index"], "audit");
        assert_eq!(v["event"]["seq"], 5);
        assert!((v["time"].as_f64().unwrap() - 1_796_025_600.123456).abs() < 1e-3);
        assert_eq!(
            seq_of_invalid(
                r#"{"text":"Invalid data format","code":6,"invalid-event-number":2}"#,
                10
            ),
            Some(12)
        );
    }
}
