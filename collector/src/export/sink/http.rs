//! What the HTTP sinks share: one client with timeouts, and the reading of
//! an answer: 2xx acknowledged; 408, 429 and 5xx (and no answer) worth a
//! retry; any other 4xx a refusal for good, which stops the exporter.

use super::SinkError;
use std::time::Duration;

/// Longest wait for one request, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// How an HTTP status is to be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Acknowledged,
    Retry,
    Refused,
}

pub fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Acknowledged,
        408 | 429 => Verdict::Retry,
        400..=499 => Verdict::Refused,
        _ => Verdict::Retry,
    }
}

/// A transport failure, without the URL's query (it may hold a token).
pub fn transport(e: reqwest::Error) -> SinkError {
    SinkError::Transient(format!("request failed: {}", e.without_url()))
}

/// Sends a built request and reads the answer; `Ok(body)` on 2xx. On a
/// refusal, `locate` turns the answer body into the seq at fault.
pub async fn exchange(
    req: reqwest::RequestBuilder,
    first_seq: i64,
    locate: impl Fn(&str) -> Option<i64>,
) -> Result<String, SinkError> {
    let resp = req.send().await.map_err(transport)?;
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    // Answers are shown to operators: keep them short.
    let shown: String = body.chars().take(300).collect();
    match verdict(status) {
        Verdict::Acknowledged => Ok(body),
        Verdict::Retry => Err(SinkError::Transient(format!("HTTP {status}: {shown}"))),
        Verdict::Refused => Err(SinkError::Refused {
            seq: locate(&body).unwrap_or(first_seq),
            reason: format!("HTTP {status}: {shown}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_split_into_ack_retry_and_refusal() {
        assert_eq!(verdict(200), Verdict::Acknowledged);
        assert_eq!(verdict(204), Verdict::Acknowledged);
        for s in [408, 429, 500, 502, 503, 504, 301] {
            assert_eq!(verdict(s), Verdict::Retry, "{s}");
        }
        for s in [400, 401, 403, 404, 409, 413, 415, 422] {
            assert_eq!(verdict(s), Verdict::Refused, "{s}");
        }
    }
}
