//! The ingest body, as pure functions over bytes (SPEC §6): media type,
//! bounded gzip decompression, and splitting NDJSON or a JSON object/array into
//! event objects with the line (or array index) each came from.

use meshaudit_event::value::{parse, Map, Value};
use std::io::Read;

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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("the decompressed body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the gzip body is corrupt")]
    Corrupt,
}

/// Decompresses gzip (also several concatenated members) reading at most
/// `limit + 1` bytes, so a gzip bomb costs at most `limit` bytes of memory.
pub fn gunzip_bounded(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let decoder = flate2::read::MultiGzDecoder::new(body);
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| DecodeError::Corrupt)?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge(limit));
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

/// Why a body was malformed (`400`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Malformed {
    pub message: String,
    /// The NDJSON line (1-based) or array index at fault, when there is one.
    pub line: Option<usize>,
}

impl Malformed {
    fn new(message: impl Into<String>, line: Option<usize>) -> Self {
        Self {
            message: message.into(),
            line,
        }
    }
}

/// Splits a (decompressed) body into event objects.
pub fn split_events(body: &[u8], framing: Framing) -> Result<Vec<RawEvent>, Malformed> {
    match framing {
        Framing::Ndjson => split_ndjson(body),
        Framing::Json => split_json(body),
    }
}

fn split_ndjson(body: &[u8]) -> Result<Vec<RawEvent>, Malformed> {
    let mut events = Vec::new();
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse(line) {
            Ok(Value::Object(event)) => events.push(RawEvent {
                line: line_no,
                event,
            }),
            Ok(_) => {
                return Err(Malformed::new(
                    format!("line {line_no} is not a JSON object"),
                    Some(line_no),
                ))
            }
            Err(e) => {
                return Err(Malformed::new(
                    format!("line {line_no} is not valid JSON: {e}"),
                    Some(line_no),
                ))
            }
        }
    }
    if events.is_empty() {
        return Err(Malformed::new("the body holds no event", None));
    }
    Ok(events)
}

fn split_json(body: &[u8]) -> Result<Vec<RawEvent>, Malformed> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Malformed::new("the body is empty", None));
    }
    match parse(body) {
        Ok(Value::Object(event)) => Ok(vec![RawEvent { line: 0, event }]),
        Ok(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(index, item)| match item {
                Value::Object(event) => Ok(RawEvent { line: index, event }),
                _ => Err(Malformed::new(
                    format!("array element {index} is not a JSON object"),
                    Some(index),
                )),
            })
            .collect(),
        Ok(_) => Err(Malformed::new(
            "the body is neither a JSON object nor an array of objects",
            None,
        )),
        Err(e) => Err(Malformed::new(
            format!("the body is not valid JSON: {e}"),
            None,
        )),
    }
}

#[cfg(test)]
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
        let ev = split_events(b"{\"a\":1}\r\n\n{\"b\":2}\n", Framing::Ndjson).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1].line, 3);
        let err = split_events(b"{\"a\":1}\n[1]\n", Framing::Ndjson).unwrap_err();
        assert_eq!(err.line, Some(2));
        let err = split_events(b"{\"a\":1}\n{oops\n", Framing::Ndjson).unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(split_events(b"\n\n", Framing::Ndjson).is_err());
    }

    #[test]
    fn json_object_array_and_refusals() {
        assert_eq!(split_events(b"{\"a\":1}", Framing::Json).unwrap().len(), 1);
        assert_eq!(split_events(b"[]", Framing::Json).unwrap().len(), 0);
        let err = split_events(b"[{}, 3]", Framing::Json).unwrap_err();
        assert_eq!(err.line, Some(1));
        assert!(split_events(b"", Framing::Json).is_err());
        assert!(split_events(b"null", Framing::Json).is_err());
        assert!(split_events(b"[[{}]]", Framing::Json).is_err());
    }

    #[test]
    fn gzip_bomb_is_bounded() {
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b' '; 10 << 20]).unwrap();
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 64 << 10);
        assert_eq!(
            gunzip_bounded(&bomb, 1 << 20),
            Err(DecodeError::TooLarge(1 << 20))
        );
        assert_eq!(gunzip_bounded(b"not gzip", 100), Err(DecodeError::Corrupt));
    }
}
