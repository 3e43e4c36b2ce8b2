//! Canonical JSON (SPEC §5): the bytes of Python's
//! `json.dumps(v, sort_keys=True, separators=(",", ":"))` with `ensure_ascii`.
//!
//! Hand-written because the bytes must match Python exactly: keys by code
//! point, every character outside 0x20–0x7E escaped as lowercase `\uXXXX`
//! (surrogate pairs above U+FFFF), integers of any size, floats as `repr`.

use crate::append::append;
use crate::value::{Map, Number, Value};
use std::io::Write as _;

/// The canonical bytes of `v`.
pub fn canonical(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(v, &mut out);
    out
}

/// Appends the canonical bytes of `v` to `out`.
pub fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(map, None, out),
    }
}

/// Canonical bytes of an object without its member `skip` (the event hash is
/// over the event without `security`), without copying the object.
pub fn write_object(map: &Map, skip: Option<&str>, out: &mut Vec<u8>) {
    out.push(b'{');
    let mut first = true;
    for (k, v) in map {
        if Some(k.as_str()) == skip {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_string(k, out);
        out.push(b':');
        write_canonical(v, out);
    }
    out.push(b'}');
}

fn write_number(n: &Number, out: &mut Vec<u8>) {
    match n {
        Number::Int(i) => {
            if *i < 0 {
                out.push(b'-');
            }
            crate::line::write_u64(i.unsigned_abs(), out);
        }
        Number::BigInt(s) => out.extend_from_slice(s.as_bytes()),
        Number::Float(f) => write_float(*f, out),
    }
}

/// Python `repr(float)`: the shortest digits that round-trip, in fixed
/// notation when the decimal exponent is in [-4, 16), else `d.ddde±XX`.
pub fn write_float(f: f64, out: &mut Vec<u8>) {
    if f == 0.0 {
        out.extend_from_slice(if f.is_sign_negative() {
            b"-0.0"
        } else {
            b"0.0"
        });
        return;
    }
    if !f.is_finite() {
        // Unreachable for parsed values; Python would print these names.
        out.extend_from_slice(if f.is_nan() {
            b"NaN".as_slice()
        } else if f > 0.0 {
            b"Infinity".as_slice()
        } else {
            b"-Infinity".as_slice()
        });
        return;
    }
    let sci = shortest_scientific(f);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    if neg {
        out.push(b'-');
    }
    if !(-4..16).contains(&exp) {
        out.extend_from_slice(mantissa.as_bytes());
        let _ = write!(
            out,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
        return;
    }
    let digits: Vec<u8> = mantissa.bytes().filter(|b| *b != b'.').collect();
    let point = exp + 1; // digits before the decimal point
    if point <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', point.unsigned_abs() as usize));
        out.extend_from_slice(&digits);
    } else {
        let point = point as usize;
        if point >= digits.len() {
            out.extend_from_slice(&digits);
            out.extend(std::iter::repeat_n(b'0', point - digits.len()));
            out.extend_from_slice(b".0");
        } else {
            out.extend_from_slice(&digits[..point]);
            out.push(b'.');
            out.extend_from_slice(&digits[point..]);
        }
    }
}

/// The shortest digits that read back as `f`, and among those the nearest to
/// `f`'s exact value, ties to even: what Python's `repr` (David Gay's `dtoa`
/// mode 0) prints, as `d.ddde±x`.
///
/// Rust's `{:e}` finds the shortest length but, when two candidates of that
/// length are equally near, takes the upper one (`-142361721412408.625` prints
/// as `...408.63`, Python prints `...408.62`). The exactly rounded form at the
/// same length (`{:.N$e}`, ties to even) is the one Python picks whenever it
/// reads back as `f`.
fn shortest_scientific(f: f64) -> String {
    let shortest = format!("{f:e}");
    let digits = shortest
        .split('e')
        .next()
        .unwrap_or("")
        .bytes()
        .filter(u8::is_ascii_digit)
        .count();
    let nearest = format!("{:.*e}", digits.saturating_sub(1), f);
    if nearest != shortest && nearest.parse::<f64>() == Ok(f) {
        nearest
    } else {
        shortest
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_u16_escape(out: &mut Vec<u8>, u: u16) {
    out.extend_from_slice(&[
        b'\\',
        b'u',
        HEX[(u >> 12) as usize & 0xf],
        HEX[(u >> 8) as usize & 0xf],
        HEX[(u >> 4) as usize & 0xf],
        HEX[u as usize & 0xf],
    ]);
}

/// Bytes a JSON string literal holds as they are (printable ASCII but `"`
/// and `\\`): one table load per byte on the hot path instead of three
/// comparisons.
pub(crate) const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        t[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    t
};

/// How many leading bytes of `b` are [`PLAIN`]: eight at a time while they
/// are, then one at a time (most strings of an event are plain throughout).
fn plain_prefix(b: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of a byte of the result is set where `x` has a zero byte
    // (exact as a yes/no answer, which is all that is asked).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    let mut i = 0;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let below_space = x.wrapping_sub(ONES * 0x20) & !x;
        let special = zero(x ^ (ONES * u64::from(b'"')))
            | zero(x ^ (ONES * u64::from(b'\\')))
            | zero(x ^ (ONES * 0x7f));
        if (below_space | special | x) & HIGH != 0 {
            break;
        }
        i += 8;
    }
    while b.get(i).is_some_and(|&c| PLAIN[c as usize]) {
        i += 1;
    }
    i
}

/// A JSON string literal, ASCII only, escaped as Python's `ensure_ascii`.
pub fn write_string(s: &str, out: &mut Vec<u8>) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run = 0; // start of the pending run of bytes copied as they are
    let mut i = plain_prefix(bytes);
    while i < bytes.len() {
        let b = bytes[i];
        if PLAIN[b as usize] {
            i += 1;
            continue;
        }
        append(out, &bytes[run..i]);
        if b < 0x80 {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0x08 => out.extend_from_slice(b"\\b"),
                0x0c => out.extend_from_slice(b"\\f"),
                other => push_u16_escape(out, u16::from(other)),
            }
            i += 1;
        } else {
            // `i` is on a char boundary: every byte before it was consumed whole.
            let c = s[i..].chars().next().unwrap_or('\u{fffd}');
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                push_u16_escape(out, *u);
            }
            i += c.len_utf8();
        }
        run = i;
    }
    append(out, &bytes[run..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::parse;

    fn canon(s: &str) -> String {
        String::from_utf8(canonical(&parse(s.as_bytes()).unwrap())).unwrap()
    }

    fn float(f: f64) -> String {
        let mut out = Vec::new();
        write_float(f, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_print_as_python_repr() {
        for (f, want) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (2.5e-7, "2.5e-07"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (-0.0, "-0.0"),
            (123.456, "123.456"),
            (1e300, "1e+300"),
            (5e-324, "5e-324"),
            (-1.7976931348623157e308, "-1.7976931348623157e+308"),
            (9007199254740993.0, "9007199254740992.0"),
            // Two shortest candidates equally near: Python takes the even one.
            // (142361721412408.625 exactly: 5/8 past an integer below 2^53.)
            (-(142361721412408.0 + 0.625), "-142361721412408.62"),
            (142361721412408.0 + 0.625, "142361721412408.62"),
        ] {
            assert_eq!(float(f), want, "{f:e}");
        }
    }

    #[test]
    fn sorts_keys_and_escapes_like_python() {
        assert_eq!(
            canon(r#"{"b":1,"a":[true,false,null],"é":"x/\u007f\u0001"}"#),
            r#"{"a":[true,false,null],"b":1,"\u00e9":"x/\u007f\u0001"}"#
        );
        assert_eq!(
            canon(r#""😀\b\f\n\r\t\"\\""#),
            r#""\ud83d\ude00\b\f\n\r\t\"\\""#
        );
        assert_eq!(canon("-0"), "0");
        assert_eq!(canon("1E2"), "100.0");
    }

    /// Every ASCII byte, alone and inside a run, against Python's
    /// `ensure_ascii` rules written out plainly.
    #[test]
    fn every_ascii_byte_escapes_as_python_does() {
        let python = |c: char| match c {
            '"' => "\\\"".to_owned(),
            '\\' => "\\\\".to_owned(),
            '\n' => "\\n".to_owned(),
            '\r' => "\\r".to_owned(),
            '\t' => "\\t".to_owned(),
            '\u{8}' => "\\b".to_owned(),
            '\u{c}' => "\\f".to_owned(),
            c if (' '..='~').contains(&c) => c.to_string(),
            c => c
                .encode_utf16(&mut [0u16; 2])
                .iter()
                .map(|u| format!("\\u{u:04x}"))
                .collect(),
        };
        for b in 0u8..0x80 {
            let c = char::from(b);
            let text = format!("ab{c}cd");
            let mut out = Vec::new();
            write_string(&text, &mut out);
            let want = format!("\"ab{}cd\"", python(c));
            assert_eq!(String::from_utf8(out).unwrap(), want, "byte {b:#04x}");
        }
        // at every place of the eight-byte words the plain prefix is read
        // in, and beside bytes whose neighbours could borrow into them
        let chars: Vec<char> = (0u8..0x80)
            .map(char::from)
            .chain(['é', '😀', '\u{80}', '\u{ffff}'])
            .collect();
        for &c in &chars {
            for len in [1, 7, 8, 9, 16, 17] {
                for at in 0..len {
                    for filler in ['a', '~', ' ', '\u{1}'] {
                        let text: String =
                            (0..len).map(|i| if i == at { c } else { filler }).collect();
                        let mut out = Vec::new();
                        write_string(&text, &mut out);
                        let want: String = text.chars().map(python).collect();
                        assert_eq!(
                            String::from_utf8(out).unwrap(),
                            format!("\"{want}\""),
                            "{c:?} at {at} of {len} among {filler:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn object_without_a_member() {
        let v = parse(br#"{"a":1,"security":{"hash":"x"},"z":2}"#).unwrap();
        let mut out = Vec::new();
        write_object(v.as_object().unwrap(), Some("security"), &mut out);
        assert_eq!(out, br#"{"a":1,"z":2}"#);
    }
}
