//! The request body (SPEC §6 checks 1, 2, 7, 8): its media type and
//! encoding, its size before it is read, reading it within a deadline and a
//! byte limit, bounded gzip decompression, and splitting NDJSON or a JSON
//! object/array into event objects with the line (or array index) each came
//! from, refusing a batch of more than `max_events` before parsing any of it.
//! Everything but [`read_bounded`] is a pure function over bytes.

use super::refusal::Refusal;
use axum::body::Body;
use axum::http::HeaderMap;
use http_body_util::BodyExt;
use meshaudit_event::value::{parse, Map, Value};
use std::io::Read;
use std::time::Duration;

/// How the events are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `application/x-ndjson` or `application/ndjson`: one event per line.
    Ndjson,
    /// `application/json`: one object or an array of objects.
    Json,
}

/// The media type of `Content-Type`, compared case-insensitively, parameters ignored.
pub fn framing(content_type: Option<&str>) -> Option<Framing> {
    let essence = content_type?.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/x-ndjson" | "application/ndjson" => Some(Framing::Ndjson),
        "application/json" => Some(Framing::Json),
        _ => None,
    }
}

/// `Content-Encoding` the collector understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

pub fn encoding(content_encoding: Option<&str>) -> Option<Encoding> {
    match content_encoding.map(|s| s.trim().to_ascii_lowercase()) {
        None => Some(Encoding::Identity),
        Some(e) if e.is_empty() || e == "identity" => Some(Encoding::Identity),
        Some(e) if e == "gzip" || e == "x-gzip" => Some(Encoding::Gzip),
        Some(_) => None,
    }
}

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Check 1: framing and encoding from the headers.
pub fn media(headers: &HeaderMap) -> Result<(Framing, Encoding), Refusal> {
    let framing = framing(header(headers, "content-type")).ok_or(Refusal::ContentType(
        "Content-Type must be application/x-ndjson, application/ndjson or application/json",
    ))?;
    let encoding = encoding(header(headers, "content-encoding")).ok_or(Refusal::ContentType(
        "Content-Encoding must be gzip or absent",
    ))?;
    Ok((framing, encoding))
}

fn too_large(limit: usize) -> Refusal {
    Refusal::TooLarge(format!("the body is larger than {limit} bytes"))
}

/// Check 2 before reading anything: a `Content-Length` past the limit is
/// refused; an unreadable one too (hyper refuses most of those itself).
pub fn declared_length(headers: &HeaderMap, limit: usize) -> Result<Option<usize>, Refusal> {
    let Some(value) = headers.get("content-length") else {
        return Ok(None);
    };
    let text = value.to_str().map(str::trim).unwrap_or("");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::malformed("Content-Length is not a number", None));
    }
    // All digits: a value that does not even fit in 64 bits is too large.
    match text
        .parse::<u64>()
        .ok()
        .and_then(|l| usize::try_from(l).ok())
    {
        Some(len) if len <= limit => Ok(Some(len)),
        _ => Err(too_large(limit)),
    }
}

/// Reads the body, at most `limit` bytes, within `deadline`.
pub async fn read_bounded(
    body: Body,
    limit: usize,
    declared: Option<usize>,
    deadline: Duration,
) -> Result<Vec<u8>, Refusal> {
    let read = async move {
        let mut body = body;
        // Content-Length was checked against the limit: reserve it at once.
        let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                Refusal::malformed(format!("the body could not be read: {e}"), None)
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(too_large(limit));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf)
    };
    tokio::time::timeout(deadline, read)
        .await
        .unwrap_or(Err(Refusal::Timeout))
}

/// Decompresses gzip (also several concatenated members) reading at most
/// `limit + 1` bytes, so a gzip bomb costs at most `limit` bytes of memory.
pub fn gunzip_bounded(body: &[u8], limit: usize) -> Result<Vec<u8>, Refusal> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let decoder = flate2::read::MultiGzDecoder::new(body);
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| Refusal::malformed("the gzip body is corrupt", None))?;
    if out.len() > limit {
        return Err(Refusal::TooLarge(format!(
            "the decompressed body is larger than {limit} bytes"
        )));
    }
    Ok(out)
}

/// One event object and where it was in the body.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    /// 1-based NDJSON line, or 0-based array index, or 0 for a lone object.
    pub line: usize,
    pub event: Map,
}

/// Splits a (decompressed) body into event objects, however many.
pub fn split_events(body: &[u8], framing: Framing) -> Result<Vec<RawEvent>, Refusal> {
    split_batch(body, framing, usize::MAX)
}

/// Splits a (decompressed) body into event objects; more than `max_events`
/// is `413` before any of them is parsed.
pub fn split_batch(
    body: &[u8],
    framing: Framing,
    max_events: usize,
) -> Result<Vec<RawEvent>, Refusal> {
    match framing {
        Framing::Ndjson => split_ndjson(body, max_events),
        Framing::Json => split_json(body, max_events),
    }
}

fn too_many(n: usize, max_events: usize) -> Refusal {
    Refusal::TooLarge(format!(
        "the batch holds {n} events, more than the {max_events} allowed (MESHAUDIT_MAX_BATCH_EVENTS)"
    ))
}

fn blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

fn split_ndjson(body: &[u8], max_events: usize) -> Result<Vec<RawEvent>, Refusal> {
    let lines = || {
        body.split(|&b| b == b'\n')
            .enumerate()
            .map(|(i, line)| (i + 1, line.strip_suffix(b"\r").unwrap_or(line)))
            .filter(|(_, line)| !blank(line))
    };
    let n = lines().count();
    if n > max_events {
        return Err(too_many(n, max_events));
    }
    if n == 0 {
        return Err(Refusal::malformed("the body holds no event", None));
    }
    let mut events = Vec::with_capacity(n);
    for (line_no, line) in lines() {
        events.push(RawEvent {
            line: line_no,
            event: object(line, || format!("line {line_no}"), line_no)?,
        });
    }
    Ok(events)
}

/// Parses one event; `what` names it in the message, `line` in the body.
fn object(bytes: &[u8], what: impl Fn() -> String, line: usize) -> Result<Map, Refusal> {
    match parse(bytes) {
        Ok(Value::Object(event)) => Ok(event),
        Ok(_) => Err(Refusal::malformed(
            format!("{} is not a JSON object", what()),
            Some(line),
        )),
        Err(e) => Err(Refusal::malformed(
            format!("{} is not valid JSON: {e}", what()),
            Some(line),
        )),
    }
}

fn split_json(body: &[u8], max_events: usize) -> Result<Vec<RawEvent>, Refusal> {
    if blank(body) {
        return Err(Refusal::malformed("the body is empty", None));
    }
    match array_elements(body) {
        Some(Ok(elements)) => {
            if elements.len() > max_events {
                return Err(too_many(elements.len(), max_events));
            }
            elements
                .into_iter()
                .enumerate()
                .map(|(index, bytes)| {
                    Ok(RawEvent {
                        line: index,
                        event: object(bytes, || format!("array element {index}"), index)?,
                    })
                })
                .collect()
        }
        Some(Err(index)) => Err(Refusal::malformed(
            format!("the JSON array is malformed at element {index}"),
            Some(index),
        )),
        None => match parse(body) {
            Ok(Value::Object(event)) => Ok(vec![RawEvent { line: 0, event }]),
            Ok(_) => Err(Refusal::malformed(
                "the body is neither a JSON object nor an array of objects",
                None,
            )),
            Err(e) => Err(Refusal::malformed(
                format!("the body is not valid JSON: {e}"),
                None,
            )),
        },
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The top-level elements of a JSON array, as byte slices, without parsing
/// them: `None` when the body is not an array (it does not start with `[`),
/// `Err(index)` when the array's own punctuation is broken at that element
/// (an empty element, a stray closing bracket, bytes after the closing `]`).
///
/// Why: counting events before parsing bounds the memory a batch of tiny
/// events can cost, and parsing each element alone lets a bad one be named.
/// Soundness: when every returned slice parses as JSON, the whole body is
/// the JSON array of exactly those values (each valid slice is balanced, so
/// the split points are the array's own commas).
pub fn array_elements(body: &[u8]) -> Option<Result<Vec<&[u8]>, usize>> {
    let open = body.iter().position(|&b| !is_ws(b))?;
    if body[open] != b'[' {
        return None;
    }
    let mut elements = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut start = open + 1;
    let mut i = start;
    while i < body.len() {
        let b = body[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => depth += 1,
                b']' | b'}' if depth > 0 => depth -= 1,
                b',' if depth == 0 => {
                    let element = &body[start..i];
                    if blank(element) {
                        return Some(Err(elements.len()));
                    }
                    elements.push(element);
                    start = i + 1;
                }
                b']' => {
                    let element = &body[start..i];
                    if blank(element) {
                        // `[]` is fine; `[1,]` is not.
                        if !elements.is_empty() {
                            return Some(Err(elements.len()));
                        }
                    } else {
                        elements.push(element);
                    }
                    if !blank(&body[i + 1..]) {
                        return Some(Err(elements.len()));
                    }
                    return Some(Ok(elements));
                }
                b'}' => return Some(Err(elements.len())),
                _ => {}
            }
        }
        i += 1;
    }
    // Never closed.
    Some(Err(elements.len()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    #[test]
    fn media_types_ignore_case_and_parameters() {
        assert_eq!(
            framing(Some("Application/JSON; charset=utf-8")),
            Some(Framing::Json)
        );
        assert_eq!(framing(Some("application/x-ndjson")), Some(Framing::Ndjson));
        assert_eq!(
            framing(Some("application/ndjson;q=1")),
            Some(Framing::Ndjson)
        );
        assert_eq!(framing(Some("text/plain")), None);
        assert_eq!(framing(None), None);
    }

    #[test]
    fn ndjson_skips_blank_lines_accepts_crlf_and_names_the_bad_line() {
        let ev = split_batch(b"{\"a\":1}\r\n\n{\"b\":2}\n", Framing::Ndjson, 10).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1].line, 3);
        let err = split_batch(b"{\"a\":1}\n[1]\n", Framing::Ndjson, 10).unwrap_err();
        assert_eq!(err.line(), Some(2));
        let err = split_batch(b"{\"a\":1}\n{oops\n", Framing::Ndjson, 10).unwrap_err();
        assert_eq!(err.line(), Some(2));
        assert!(split_batch(b"\n\n", Framing::Ndjson, 10).is_err());
    }

    #[test]
    fn json_object_array_and_refusals() {
        let one = |b: &[u8]| split_batch(b, Framing::Json, 10);
        assert_eq!(one(b"{\"a\":1}").unwrap().len(), 1);
        assert_eq!(one(b" [ ] ").unwrap().len(), 0);
        assert_eq!(one(b"[{}, 3]").unwrap_err().line(), Some(1));
        assert!(one(b"").is_err());
        assert!(one(b"null").is_err());
        assert_eq!(one(b"[[{}]]").unwrap_err().line(), Some(0));
        assert_eq!(one(b"[{},]").unwrap_err().line(), Some(1));
        assert_eq!(one(b"[{},,{}]").unwrap_err().line(), Some(1));
        assert_eq!(one(b"[{}] x").unwrap_err().line(), Some(1));
        assert_eq!(
            one(b"[{\"a\":\"],[\"}, {\"b\":\"\\\"]\"}]").unwrap().len(),
            2
        );
    }

    #[test]
    fn too_deep_elements_and_lines_are_named() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        let body = format!("[{{}},{deep},{{}}]");
        let err = split_batch(body.as_bytes(), Framing::Json, 10).unwrap_err();
        assert_eq!(err.line(), Some(1), "{err:?}");
        let body = format!("{{}}\n{deep}\n{{}}\n");
        let err = split_batch(body.as_bytes(), Framing::Ndjson, 10).unwrap_err();
        assert_eq!(err.line(), Some(2), "{err:?}");
    }

    #[test]
    fn event_count_is_capped_before_parsing() {
        let body = "{}\n".repeat(11);
        let err = split_batch(body.as_bytes(), Framing::Ndjson, 10).unwrap_err();
        assert!(matches!(err, Refusal::TooLarge(_)), "{err:?}");
        let body = format!("[{}{{}}]", "{},".repeat(10));
        let err = split_batch(body.as_bytes(), Framing::Json, 10).unwrap_err();
        assert!(matches!(err, Refusal::TooLarge(_)), "{err:?}");
        assert_eq!(
            split_batch("{}\n".repeat(10).as_bytes(), Framing::Ndjson, 10)
                .unwrap()
                .len(),
            10
        );
    }

    #[test]
    fn gzip_bomb_is_bounded() {
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b' '; 10 << 20]).unwrap();
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 64 << 10);
        assert!(matches!(
            gunzip_bounded(&bomb, 1 << 20),
            Err(Refusal::TooLarge(_))
        ));
        assert!(matches!(
            gunzip_bounded(b"not gzip", 100),
            Err(Refusal::Malformed { .. })
        ));
    }

    #[test]
    fn content_length_is_checked_before_reading() {
        let mut h = HeaderMap::new();
        assert_eq!(declared_length(&h, 10), Ok(None));
        h.insert("content-length", "10".parse().unwrap());
        assert_eq!(declared_length(&h, 10), Ok(Some(10)));
        h.insert("content-length", "11".parse().unwrap());
        assert!(matches!(declared_length(&h, 10), Err(Refusal::TooLarge(_))));
        h.insert("content-length", "99999999999999999999999".parse().unwrap());
        assert!(matches!(declared_length(&h, 10), Err(Refusal::TooLarge(_))));
    }
}
