//! A JSON value that keeps what Python's `json` keeps: integers of any size
//! exactly, floats as `f64` (printed back as Python `repr`), object keys in a
//! map sorted by code point (duplicate keys: the last wins, as `json.loads`).
//!
//! The parser is strict where the collector must refuse: more than
//! [`MAX_DEPTH`] nested containers, `NaN`/`Infinity`, numbers that overflow a
//! double, integers of more than [`MAX_INT_DIGITS`] digits (CPython refuses
//! them too), lone UTF-16 surrogates, raw control characters in strings,
//! invalid UTF-8 and trailing garbage are all errors.

use std::collections::BTreeMap;
use std::fmt;

/// Objects: keys sorted by UTF-8 bytes, which is code point order.
pub type Map = BTreeMap<String, Value>;

/// Deepest nesting of arrays and objects that [`parse`] accepts.
pub const MAX_DEPTH: usize = 128;

/// Most digits an integer may have: CPython's default `int_max_str_digits`,
/// past which `json.loads` refuses the document (and `json.dumps` could not
/// print the number), so a Python peer could never read or write it.
pub const MAX_INT_DIGITS: usize = 4300;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Value>),
    Object(Map),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Number {
    /// An integer that fits in `i64`.
    Int(i64),
    /// A larger integer, as its normalised decimal text (`-` then digits, no leading zeros).
    BigInt(Box<str>),
    /// A finite float.
    Float(f64),
}

impl Value {
    pub fn as_object(&self) -> Option<&Map> {
        match self {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }
    pub fn as_object_mut(&mut self) -> Option<&mut Map> {
        match self {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number(Number::Int(i)) => Some(*i),
            _ => None,
        }
    }
    /// `self[key]` for objects, `None` otherwise.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object().and_then(|m| m.get(key))
    }
    /// Follows a path of object keys.
    pub fn pointer(&self, path: &[&str]) -> Option<&Value> {
        path.iter().try_fold(self, |v, k| v.get(k))
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Number(Number::Int(i))
    }
}
impl From<u64> for Value {
    fn from(u: u64) -> Self {
        match i64::try_from(u) {
            Ok(i) => Value::Number(Number::Int(i)),
            Err(_) => Value::Number(Number::BigInt(u.to_string().into_boxed_str())),
        }
    }
}
impl From<Map> for Value {
    fn from(m: Map) -> Self {
        Value::Object(m)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {offset}")]
pub struct ParseError {
    pub kind: ParseErrorKind,
    pub offset: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    UnexpectedEnd,
    UnexpectedByte,
    TooDeep,
    InvalidNumber,
    NonFiniteNumber,
    InvalidEscape,
    LoneSurrogate,
    ControlCharacterInString,
    InvalidUtf8,
    TrailingCharacters,
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnexpectedEnd => "unexpected end of input",
            Self::UnexpectedByte => "unexpected character",
            Self::TooDeep => "nested deeper than 128 levels",
            Self::InvalidNumber => "invalid number",
            Self::NonFiniteNumber => "number is NaN, infinite or overflows a double",
            Self::InvalidEscape => "invalid escape in string",
            Self::LoneSurrogate => "lone UTF-16 surrogate in string",
            Self::ControlCharacterInString => "raw control character in string",
            Self::InvalidUtf8 => "invalid UTF-8",
            Self::TrailingCharacters => "trailing characters after the JSON value",
        })
    }
}

/// Parses one JSON document (surrounding whitespace allowed).
pub fn parse(input: &[u8]) -> Result<Value, ParseError> {
    parse_with_depth(input, MAX_DEPTH)
}

/// [`parse`] with a lower nesting limit (at most [`MAX_DEPTH`]): a document
/// that will be nested `k` levels deep inside another must stay within
/// `MAX_DEPTH - k` for the whole to stay parseable.
pub fn parse_with_depth(input: &[u8], max_depth: usize) -> Result<Value, ParseError> {
    let mut p = Parser {
        s: input,
        i: 0,
        max_depth: max_depth.min(MAX_DEPTH),
    };
    p.skip_ws();
    let v = p.value(0)?;
    p.skip_ws();
    if p.i != p.s.len() {
        return Err(p.err(ParseErrorKind::TrailingCharacters));
    }
    Ok(v)
}

/// What [`Parser::number_text`] read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NumberText {
    /// A fraction or an exponent.
    pub(crate) is_float: bool,
    /// Digits before the point.
    pub(crate) int_digits: usize,
}

pub(crate) struct Parser<'a> {
    pub(crate) s: &'a [u8],
    pub(crate) i: usize,
    pub(crate) max_depth: usize,
}

impl<'a> Parser<'a> {
    pub(crate) fn err(&self, kind: ParseErrorKind) -> ParseError {
        ParseError {
            kind,
            offset: self.i,
        }
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    pub(crate) fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    pub(crate) fn expect_literal(&mut self, lit: &[u8], v: Value) -> Result<Value, ParseError> {
        if self.s[self.i..].starts_with(lit) {
            self.i += lit.len();
            Ok(v)
        } else if self.s.len() - self.i < lit.len() && lit.starts_with(&self.s[self.i..]) {
            Err(self.err(ParseErrorKind::UnexpectedEnd))
        } else {
            Err(self.err(ParseErrorKind::UnexpectedByte))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        match self.peek() {
            None => Err(self.err(ParseErrorKind::UnexpectedEnd)),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.expect_literal(b"true", Value::Bool(true)),
            Some(b'f') => self.expect_literal(b"false", Value::Bool(false)),
            Some(b'n') => self.expect_literal(b"null", Value::Null),
            Some(b'N' | b'I') => Err(self.err(ParseErrorKind::NonFiniteNumber)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err(ParseErrorKind::UnexpectedByte)),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > self.max_depth {
            return Err(self.err(ParseErrorKind::TooDeep));
        }
        self.i += 1;
        let mut map = Map::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Value::Object(map));
        }
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b'"') => {}
                None => return Err(self.err(ParseErrorKind::UnexpectedEnd)),
                Some(_) => return Err(self.err(ParseErrorKind::UnexpectedByte)),
            }
            let key = self.string()?;
            self.skip_ws();
            match self.peek() {
                Some(b':') => self.i += 1,
                None => return Err(self.err(ParseErrorKind::UnexpectedEnd)),
                Some(_) => return Err(self.err(ParseErrorKind::UnexpectedByte)),
            }
            self.skip_ws();
            let v = self.value(depth)?;
            map.insert(key, v);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Value::Object(map));
                }
                None => return Err(self.err(ParseErrorKind::UnexpectedEnd)),
                Some(_) => return Err(self.err(ParseErrorKind::UnexpectedByte)),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > self.max_depth {
            return Err(self.err(ParseErrorKind::TooDeep));
        }
        self.i += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Value::Array(items));
                }
                None => return Err(self.err(ParseErrorKind::UnexpectedEnd)),
                Some(_) => return Err(self.err(ParseErrorKind::UnexpectedByte)),
            }
        }
    }

    pub(crate) fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.i;
        let scan = self.number_text()?;
        // The bytes are ASCII digits and signs only, so this cannot fail.
        let text = std::str::from_utf8(&self.s[start..self.i])
            .map_err(|_| self.err(ParseErrorKind::InvalidNumber))?;
        if scan.is_float {
            let f: f64 = text
                .parse()
                .map_err(|_| self.err(ParseErrorKind::InvalidNumber))?;
            if !f.is_finite() {
                return Err(ParseError {
                    kind: ParseErrorKind::NonFiniteNumber,
                    offset: start,
                });
            }
            return Ok(Value::Number(Number::Float(f)));
        }
        if scan.int_digits > MAX_INT_DIGITS {
            return Err(ParseError {
                kind: ParseErrorKind::InvalidNumber,
                offset: start,
            });
        }
        Ok(Value::Number(match text.parse::<i64>() {
            Ok(i) => Number::Int(i),
            Err(_) => Number::BigInt(text.into()),
        }))
    }

    /// Consumes a number's text by the JSON grammar, without converting it.
    pub(crate) fn number_text(&mut self) -> Result<NumberText, ParseError> {
        let digits = |p: &mut Self| {
            let s = p.i;
            while let Some(b'0'..=b'9') = p.peek() {
                p.i += 1;
            }
            p.i - s
        };
        if self.peek() == Some(b'-') {
            self.i += 1;
            if matches!(self.peek(), Some(b'I')) {
                return Err(self.err(ParseErrorKind::NonFiniteNumber));
            }
        }
        let int_start = self.i;
        let n = digits(self);
        if n == 0 || (n > 1 && self.s[int_start] == b'0') {
            // Python reads "01" as 0 followed by trailing garbage; either way it is refused.
            return Err(self.err(ParseErrorKind::InvalidNumber));
        }
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return Err(self.err(ParseErrorKind::InvalidNumber));
            }
            is_float = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(self.err(ParseErrorKind::InvalidNumber));
            }
            is_float = true;
        }
        Ok(NumberText {
            is_float,
            int_digits: n,
        })
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let Some(chunk) = self.s.get(self.i..self.i + 4) else {
            return Err(self.err(ParseErrorKind::UnexpectedEnd));
        };
        let mut v = 0u32;
        for &b in chunk {
            let d = (b as char)
                .to_digit(16)
                .ok_or_else(|| self.err(ParseErrorKind::InvalidEscape))?;
            v = v * 16 + d;
        }
        self.i += 4;
        Ok(v)
    }

    /// At a `"`: a string literal whose bytes are all printable ASCII
    /// without `\\` — what the canonical form writes as it is read — is
    /// consumed and returned with its quotes; `None` (nothing consumed)
    /// for any other literal.
    pub(crate) fn plain_string(&mut self) -> Option<&'a [u8]> {
        // Byte by byte, not `canonical::plain_prefix`'s eight at a time: body
        // strings are mostly shorter than a word, and that costs 2.5 % of a
        // 4 KiB body's wasm time (measured with scripts/bench/wasm_v8.sh).
        let s: &'a [u8] = self.s;
        let open = self.i;
        let mut j = open + 1;
        while let Some(&b) = s.get(j) {
            if !crate::canonical::PLAIN[b as usize] {
                if b != b'"' {
                    return None;
                }
                self.i = j + 1;
                return s.get(open..=j);
            }
            j += 1;
        }
        None
    }

    /// A string borrowed from the input when it has no escapes (the common
    /// case), else decoded as [`Parser::string`] does.
    pub(crate) fn string_cow(&mut self) -> Result<std::borrow::Cow<'a, str>, ParseError> {
        let open = self.i;
        let start = open + 1;
        let mut j = start;
        let s: &'a [u8] = self.s;
        while let Some(&b) = s.get(j) {
            if b == b'"' {
                return match std::str::from_utf8(&s[start..j]) {
                    Ok(text) => {
                        self.i = j + 1;
                        Ok(std::borrow::Cow::Borrowed(text))
                    }
                    Err(e) => Err(ParseError {
                        kind: ParseErrorKind::InvalidUtf8,
                        offset: start + e.valid_up_to(),
                    }),
                };
            }
            if b == b'\\' || b < 0x20 {
                break;
            }
            j += 1;
        }
        self.string().map(std::borrow::Cow::Owned)
    }

    pub(crate) fn string(&mut self) -> Result<String, ParseError> {
        self.i += 1; // opening quote
        let mut out: Vec<u8> = Vec::new();
        loop {
            let run_start = self.i;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            out.extend_from_slice(&self.s[run_start..self.i]);
            match self.peek() {
                None => return Err(self.err(ParseErrorKind::UnexpectedEnd)),
                Some(b'"') => {
                    self.i += 1;
                    return String::from_utf8(out).map_err(|e| ParseError {
                        kind: ParseErrorKind::InvalidUtf8,
                        offset: run_start + e.utf8_error().valid_up_to(),
                    });
                }
                Some(b'\\') => {
                    self.i += 1;
                    let Some(esc) = self.peek() else {
                        return Err(self.err(ParseErrorKind::UnexpectedEnd));
                    };
                    self.i += 1;
                    let c = match esc {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => {
                            self.i -= 1;
                            return Err(self.err(ParseErrorKind::InvalidEscape));
                        }
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                Some(_) => return Err(self.err(ParseErrorKind::ControlCharacterInString)),
            }
        }
    }

    fn unicode_escape(&mut self) -> Result<char, ParseError> {
        let hi = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if self.s.get(self.i..self.i + 2) != Some(b"\\u") {
                return Err(self.err(ParseErrorKind::LoneSurrogate));
            }
            self.i += 2;
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(self.err(ParseErrorKind::LoneSurrogate));
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else if (0xDC00..0xE000).contains(&hi) {
            return Err(self.err(ParseErrorKind::LoneSurrogate));
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(|| self.err(ParseErrorKind::InvalidEscape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> ParseErrorKind {
        parse(s.as_bytes()).unwrap_err().kind
    }

    #[test]
    fn parses_numbers_exactly() {
        assert_eq!(parse(b"12").unwrap(), Value::from(12i64));
        assert_eq!(parse(b"-0").unwrap(), Value::from(0i64));
        assert_eq!(
            parse(b"123456789012345678901234567890").unwrap(),
            Value::Number(Number::BigInt("123456789012345678901234567890".into()))
        );
        assert_eq!(
            parse(b"1.5e3").unwrap(),
            Value::Number(Number::Float(1500.0))
        );
    }

    #[test]
    fn refuses_what_python_would_not_round_trip() {
        assert_eq!(kind("NaN"), ParseErrorKind::NonFiniteNumber);
        assert_eq!(kind("-Infinity"), ParseErrorKind::NonFiniteNumber);
        assert_eq!(kind("1e400"), ParseErrorKind::NonFiniteNumber);
        assert_eq!(kind("\"\\ud800\""), ParseErrorKind::LoneSurrogate);
        assert_eq!(kind("\"a\nb\""), ParseErrorKind::ControlCharacterInString);
        assert_eq!(kind("{} x"), ParseErrorKind::TrailingCharacters);
        assert_eq!(kind("01"), ParseErrorKind::InvalidNumber);
        assert_eq!(kind("{\"a\":"), ParseErrorKind::UnexpectedEnd);
        assert_eq!(kind("tru"), ParseErrorKind::UnexpectedEnd);
    }

    #[test]
    fn integers_longer_than_python_accepts_are_refused() {
        let ok = "9".repeat(MAX_INT_DIGITS);
        assert!(parse(ok.as_bytes()).is_ok());
        assert!(parse(format!("-{ok}").as_bytes()).is_ok());
        let long = "9".repeat(MAX_INT_DIGITS + 1);
        assert_eq!(kind(&long), ParseErrorKind::InvalidNumber);
        assert_eq!(kind(&format!("[-{long}]")), ParseErrorKind::InvalidNumber);
        // A float may have as many digits as it likes (Python: `float()`).
        assert!(parse(format!("0.{long}").as_bytes()).is_ok());
    }

    #[test]
    fn depth_limit_is_128() {
        let ok = "[".repeat(128) + &"]".repeat(128);
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = "[".repeat(129) + &"]".repeat(129);
        assert_eq!(kind(&deep), ParseErrorKind::TooDeep);
        let nested = "{\"a\":".repeat(10) + "1" + &"}".repeat(10);
        assert!(parse_with_depth(nested.as_bytes(), 10).is_ok());
        assert!(parse_with_depth(nested.as_bytes(), 9).is_err());
        // never more than MAX_DEPTH
        assert!(parse_with_depth(deep.as_bytes(), usize::MAX).is_err());
    }

    #[test]
    fn last_duplicate_key_wins_and_surrogate_pairs_decode() {
        let v = parse(br#"{"a":1,"a":2,"e":"\ud83d\ude00"}"#).unwrap();
        assert_eq!(v.get("a"), Some(&Value::from(2i64)));
        assert_eq!(v.get("e").and_then(Value::as_str), Some("\u{1F600}"));
    }
}
