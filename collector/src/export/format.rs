//! The bytes of exported records: one record in the configured format, and
//! NDJSON batches of them. Always canonical JSON (§5), so the same records
//! are the same bytes on every send.

use super::config::Format;
use super::ocsf;
use super::record::Record;
use meshaudit_event::{canonical, Value};

/// The record as a value in `format`.
pub fn value(r: &Record, format: Format) -> Value {
    match format {
        Format::Meshaudit => r.to_value(),
        Format::Ocsf => ocsf::map(r),
    }
}

/// One record's canonical JSON in `format`.
pub fn encode(r: &Record, format: Format) -> Vec<u8> {
    canonical(&value(r, format))
}

/// The records as NDJSON, each line ended by `\n`.
pub fn ndjson(records: &[Record], format: Format) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.extend_from_slice(&encode(r, format));
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::record::tests::stored;

    #[test]
    fn ndjson_is_one_canonical_line_per_record_and_stable() {
        let rs: Vec<Record> = (1..=3)
            .map(|i| Record::from_stored(&stored(i, &format!(r#"{{"n":{i}}}"#))).unwrap())
            .collect();
        let a = ndjson(&rs, Format::Meshaudit);
        assert_eq!(a, ndjson(&rs, Format::Meshaudit));
        let text = String::from_utf8(a).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.ends_with('\n'));
        let ocsf = String::from_utf8(ndjson(&rs, Format::Ocsf)).unwrap();
        assert!(ocsf.lines().all(|l| l.contains(r#""class_uid":4002"#)));
    }
}
