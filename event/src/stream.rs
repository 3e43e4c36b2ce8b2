//! A captured JSON body as its canonical, redacted, pruned payload, written
//! in one pass without building a tree.
//!
//! The bytes are exactly those of the tree path — parse (with a depth limit),
//! wrap a non-object as `{"_value": v}` (mobius `_as_object`), redact keys,
//! prune ([`crate::prune`]), canonical JSON ([`crate::canonical`]) — which
//! stays as the oracle of the differential tests. A string or number whose
//! text is already canonical (printable ASCII without escapes; a number as
//! Python prints it) is copied as read; other scalars are parsed and written
//! with the same code as the tree path. An object's members are noted as
//! they are read and copied out in key order (the last of duplicate keys
//! wins, as a map does), skipping those pruning would drop: a member written
//! canonically already (`"name":value`, no whitespace, a scalar copied as
//! read) straight from the input, any other from a scratch buffer it is
//! written into as it is read. A body is read once and nothing but decoded
//! names and scratch buffers is allocated.

use crate::append::append;
use crate::canonical::{write_canonical, write_string};
use crate::value::{ParseError, ParseErrorKind, Parser, Value};

/// The original of a redacted value, for its replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redacted<'a> {
    /// A string, decoded.
    Str(&'a str),
    /// Any other value, as its canonical JSON (not pruned, not redacted).
    Json(&'a [u8]),
}

/// Which keys are redacted, and what replaces their values (a string).
pub trait Redaction {
    /// `key`: the member name's UTF-8 bytes, decoded.
    fn is_redacted(&self, key: &[u8]) -> bool;
    fn replacement(&self, original: Redacted<'_>) -> String;
}

/// What a written value is, for pruning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Null,
    EmptyString,
    EmptyArray,
    EmptyObject,
    Other,
}

impl Shape {
    /// Whether a member with this value is dropped by pruning.
    fn pruned(self, key: &[u8]) -> bool {
        match self {
            Shape::Null | Shape::EmptyArray | Shape::EmptyObject => true,
            Shape::EmptyString => key != b"schemaid",
            Shape::Other => false,
        }
    }
}

/// How a value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Redacted and pruned (the payload).
    Payload,
    /// As it is (the original of a redacted value).
    Raw,
}

/// Where a member's name or canonical text lies: in the input, or in a
/// buffer of the object being written (`decoded`/`scratch`).
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    in_input: bool,
}

impl Span {
    fn of<'x>(&self, input: &'x [u8], other: &'x [u8]) -> &'x [u8] {
        let from = if self.in_input { input } else { other };
        &from[self.start..self.end]
    }
}

/// A member read, waiting for its object to be written in key order.
#[derive(Debug, Clone, Copy)]
struct Member {
    /// The name: in the input when its literal is canonical already (the
    /// common case: printable ASCII, no escapes), else decoded in
    /// `Canon::names`.
    name: Span,
    /// `"name":value`, canonical: in the input when it was written so
    /// (an as-is name, no whitespace, a value copied as read), else in the
    /// object's scratch buffer.
    text: Span,
    shape: Shape,
    redacted: bool,
}

/// The member names of the last payload object read at one depth, and what
/// was decided about them: in an array of like objects (one sequence of
/// names, the common case) the others skip the redaction test and the sort.
#[derive(Debug, Default)]
struct Layout {
    /// Kept only when every name was as read (in the input).
    valid: bool,
    /// The names in reading order (spans of the input), each with whether
    /// it is redacted.
    names: Vec<(Span, bool)>,
    /// The members to write, by reading index, in key order: of equal names
    /// the last read (as a map keeps it).
    order: Vec<u32>,
}

struct Canon<'a, 'r> {
    p: Parser<'a>,
    redaction: &'r dyn Redaction,
    /// Scratch buffers, reused across objects; an object takes one only
    /// for a member it cannot copy from the input.
    pool: Vec<Vec<u8>>,
    /// The members of the open objects, innermost last.
    members: Vec<Member>,
    /// The decoded names of the open objects' members (escaped names only).
    names: Vec<u8>,
    /// By depth.
    layouts: Vec<Layout>,
}

/// Appends the payload of the JSON document `input` (mobius `_as_object`,
/// redacted, pruned, canonical) to `out`. `Ok(false)` (nothing appended)
/// when the payload prunes to `{}`; an error (nothing appended) when `input`
/// is not JSON within `max_depth` levels: the caller keeps it as `_raw`.
pub fn write_payload(
    input: &[u8],
    max_depth: usize,
    redaction: &dyn Redaction,
    out: &mut Vec<u8>,
) -> Result<bool, ParseError> {
    PayloadWriter::default().write(input, max_depth, redaction, out)
}

/// What one body's writing keeps for the next (scratch buffers, the member
/// and name stacks, the layouts), so that it does not allocate and grow them
/// again for every body; past the sizes a common body needs, given back.
#[derive(Debug, Default)]
pub struct PayloadWriter {
    pool: Vec<Vec<u8>>,
    members: Vec<Member>,
    names: Vec<u8>,
    layouts: Vec<Layout>,
}

impl PayloadWriter {
    /// Scratch buffers kept, and the bytes each may keep.
    const KEEP_BUFFERS: usize = 4;
    const KEEP_BYTES: usize = 64 * 1024;
    /// Members, and the depths whose layouts are kept.
    const KEEP_MEMBERS: usize = 1024;
    const KEEP_DEPTHS: usize = 16;

    /// [`write_payload`], with this writer's buffers.
    pub fn write(
        &mut self,
        input: &[u8],
        max_depth: usize,
        redaction: &dyn Redaction,
        out: &mut Vec<u8>,
    ) -> Result<bool, ParseError> {
        // A layout holds spans of the body it was read from.
        for layout in &mut self.layouts {
            layout.valid = false;
        }
        let start = out.len();
        let mut c = Canon {
            p: Parser {
                s: input,
                i: 0,
                max_depth: max_depth.min(crate::value::MAX_DEPTH),
            },
            redaction,
            pool: std::mem::take(&mut self.pool),
            members: std::mem::take(&mut self.members),
            names: std::mem::take(&mut self.names),
            layouts: std::mem::take(&mut self.layouts),
        };
        let result = c.payload(out);
        if !matches!(result, Ok(true)) {
            out.truncate(start);
        }
        self.keep(c);
        result
    }

    /// Takes the buffers back, emptied (an error may leave members and
    /// names), and bounded.
    fn keep(&mut self, mut c: Canon<'_, '_>) {
        c.pool.retain(|b| b.capacity() <= Self::KEEP_BYTES);
        c.pool.truncate(Self::KEEP_BUFFERS);
        c.members.clear();
        c.members.shrink_to(Self::KEEP_MEMBERS);
        c.names.clear();
        c.names.shrink_to(Self::KEEP_BYTES);
        c.layouts.truncate(Self::KEEP_DEPTHS);
        for layout in &mut c.layouts {
            layout.names.shrink_to(Self::KEEP_MEMBERS);
            layout.order.shrink_to(Self::KEEP_MEMBERS);
        }
        self.pool = c.pool;
        self.members = c.members;
        self.names = c.names;
        self.layouts = c.layouts;
    }
}

impl<'a> Canon<'a, '_> {
    fn payload(&mut self, out: &mut Vec<u8>) -> Result<bool, ParseError> {
        self.p.skip_ws();
        let written = if self.p.peek() == Some(b'{') {
            self.object(1, out, Mode::Payload)? != Shape::EmptyObject
        } else {
            // `{"_value": v}`, with the member rules of any object.
            let mut v = self.take_buf();
            let redacted = self.redaction.is_redacted(b"_value");
            let shape = self.member_value(redacted, 0, &mut v)?;
            let kept = !shape.pruned(b"_value");
            if kept {
                out.extend_from_slice(b"{\"_value\":");
                out.extend_from_slice(&v);
                out.push(b'}');
            }
            self.give_buf(v);
            kept
        };
        self.p.skip_ws();
        if self.p.i != self.p.s.len() {
            return Err(self.p.err(ParseErrorKind::TrailingCharacters));
        }
        Ok(written)
    }

    fn take_buf(&mut self) -> Vec<u8> {
        self.pool.pop().unwrap_or_default()
    }

    fn give_buf(&mut self, mut b: Vec<u8>) {
        b.clear();
        self.pool.push(b);
    }

    /// The value of a payload object's member: its replacement when its name
    /// is redacted, else the value redacted and pruned.
    fn member_value(
        &mut self,
        redacted: bool,
        depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<Shape, ParseError> {
        if !redacted {
            return self.value(depth, out, Mode::Payload);
        }
        let replacement = if self.p.peek() == Some(b'"') {
            let s = self.p.string_cow()?;
            self.redaction.replacement(Redacted::Str(&s))
        } else {
            let mut raw = self.take_buf();
            self.value(depth, &mut raw, Mode::Raw)?;
            let r = self.redaction.replacement(Redacted::Json(&raw));
            self.give_buf(raw);
            r
        };
        write_string(&replacement, out);
        Ok(if replacement.is_empty() {
            Shape::EmptyString
        } else {
            Shape::Other
        })
    }

    /// Reads a scalar whose canonical JSON is its text as read: a plain
    /// string, a canonical number, `true`, `false` or `null`. `None`, having
    /// read nothing, for any other value (or an invalid one).
    fn as_is(&mut self) -> Option<Shape> {
        let p = &mut self.p;
        let rest = &p.s[p.i..];
        let (len, shape) = match *rest.first()? {
            b'"' => {
                let literal = p.plain_string()?;
                return Some(if literal.len() == 2 {
                    Shape::EmptyString
                } else {
                    Shape::Other
                });
            }
            b'-' | b'0'..=b'9' => {
                p.i += canonical_number_len(rest)?;
                return Some(Shape::Other);
            }
            b't' if rest.starts_with(b"true") => (4, Shape::Other),
            b'f' if rest.starts_with(b"false") => (5, Shape::Other),
            b'n' if rest.starts_with(b"null") => (4, Shape::Null),
            _ => return None,
        };
        p.i += len;
        Some(shape)
    }

    fn value(&mut self, depth: usize, out: &mut Vec<u8>, mode: Mode) -> Result<Shape, ParseError> {
        let start = self.p.i;
        if let Some(shape) = self.as_is() {
            append(out, &self.p.s[start..self.p.i]);
            return Ok(shape);
        }
        match self.p.peek() {
            Some(b'{') => self.object(depth + 1, out, mode),
            Some(b'[') => self.array(depth + 1, out, mode),
            Some(b'"') => {
                let s = self.p.string_cow()?;
                write_string(&s, out);
                Ok(if s.is_empty() {
                    Shape::EmptyString
                } else {
                    Shape::Other
                })
            }
            // Not as-is: an error, reported as the tree path reports it.
            Some(b'n') => self
                .p
                .expect_literal(b"null", Value::Null)
                .map(|_| Shape::Null),
            Some(b't') => self
                .p
                .expect_literal(b"true", Value::Null)
                .map(|_| Shape::Other),
            Some(b'f') => self
                .p
                .expect_literal(b"false", Value::Null)
                .map(|_| Shape::Other),
            Some(b'N' | b'I') => Err(self.p.err(ParseErrorKind::NonFiniteNumber)),
            Some(b'-' | b'0'..=b'9') => {
                let n = self.p.number()?;
                write_canonical(&n, out);
                Ok(Shape::Other)
            }
            None => Err(self.p.err(ParseErrorKind::UnexpectedEnd)),
            Some(_) => Err(self.p.err(ParseErrorKind::UnexpectedByte)),
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), ParseError> {
        match self.p.peek() {
            Some(b) if b == byte => {
                self.p.i += 1;
                Ok(())
            }
            None => Err(self.p.err(ParseErrorKind::UnexpectedEnd)),
            Some(_) => Err(self.p.err(ParseErrorKind::UnexpectedByte)),
        }
    }

    fn array(&mut self, depth: usize, out: &mut Vec<u8>, mode: Mode) -> Result<Shape, ParseError> {
        if depth > self.p.max_depth {
            return Err(self.p.err(ParseErrorKind::TooDeep));
        }
        self.p.i += 1;
        out.push(b'[');
        self.p.skip_ws();
        if self.p.peek() == Some(b']') {
            self.p.i += 1;
            out.push(b']');
            return Ok(Shape::EmptyArray);
        }
        let mut first = true;
        loop {
            self.p.skip_ws();
            if !first {
                out.push(b',');
            }
            first = false;
            // Elements are kept whatever they prune to (mobius keeps them).
            self.value(depth, out, mode)?;
            self.p.skip_ws();
            match self.p.peek() {
                Some(b',') => self.p.i += 1,
                Some(b']') => {
                    self.p.i += 1;
                    out.push(b']');
                    return Ok(Shape::Other);
                }
                None => return Err(self.p.err(ParseErrorKind::UnexpectedEnd)),
                Some(_) => return Err(self.p.err(ParseErrorKind::UnexpectedByte)),
            }
        }
    }

    fn object(&mut self, depth: usize, out: &mut Vec<u8>, mode: Mode) -> Result<Shape, ParseError> {
        if depth > self.p.max_depth {
            return Err(self.p.err(ParseErrorKind::TooDeep));
        }
        self.p.i += 1;
        let base = self.members.len();
        let names_base = self.names.len();
        let mut scratch: Option<Vec<u8>> = None;
        // The layout of the last object at this depth, while this one's names
        // are the same so far (`same`).
        let mut layout = match mode {
            Mode::Payload => {
                if self.layouts.len() <= depth {
                    self.layouts.resize_with(depth + 1, Layout::default);
                }
                std::mem::take(&mut self.layouts[depth])
            }
            Mode::Raw => Layout::default(),
        };
        let mut same = layout.valid;
        self.p.skip_ws();
        if self.p.peek() == Some(b'}') {
            self.p.i += 1;
        } else {
            loop {
                self.p.skip_ws();
                if self.p.peek() != Some(b'"') {
                    return Err(match self.p.peek() {
                        None => self.p.err(ParseErrorKind::UnexpectedEnd),
                        Some(_) => self.p.err(ParseErrorKind::UnexpectedByte),
                    });
                }
                let open = self.p.i;
                let i = self.members.len() - base;
                // In an array of like objects: the name the layout has next,
                // compared as it is read. A match is a plain name (as the
                // layout's was), with no scan for escapes and no second
                // comparison; any other name ends the layout's use.
                let known = if same {
                    layout.names.get(i).and_then(|&(seen, _)| {
                        let n = seen.end - seen.start;
                        let at = open + 1;
                        let equal = self.p.s.get(at + n) == Some(&b'"')
                            && key_order(&self.p.s[seen.start..seen.end], &self.p.s[at..at + n])
                                .is_eq();
                        equal.then_some(n)
                    })
                } else {
                    None
                };
                same = known.is_some();
                // An escaped name goes to the scratch buffer at once, as the
                // start of the member's text.
                let (name, written_from) = if let Some(n) = known {
                    self.p.i = open + 2 + n;
                    let name = Span {
                        start: open + 1,
                        end: open + 1 + n,
                        in_input: true,
                    };
                    (name, None)
                } else if self.p.plain_string().is_some() {
                    let name = Span {
                        start: open + 1,
                        end: self.p.i - 1,
                        in_input: true,
                    };
                    (name, None)
                } else {
                    let decoded = self.p.string_cow()?;
                    let b = scratch.get_or_insert_with(|| self.take_buf());
                    let from = b.len();
                    write_string(&decoded, b);
                    let start = self.names.len();
                    self.names.extend_from_slice(decoded.as_bytes());
                    let name = Span {
                        start,
                        end: self.names.len(),
                        in_input: false,
                    };
                    (name, Some(from))
                };
                let name_end = self.p.i;
                self.p.skip_ws();
                self.expect(b':')?;
                self.p.skip_ws();
                let redacted = mode == Mode::Payload
                    && if same {
                        layout.names[i].1
                    } else {
                        self.redaction.is_redacted(name.of(self.p.s, &self.names))
                    };
                let as_read = if !redacted && written_from.is_none() && self.p.i == name_end + 1 {
                    self.as_is()
                } else {
                    None
                };
                let (text, shape) = match as_read {
                    Some(shape) => {
                        let text = Span {
                            start: open,
                            end: self.p.i,
                            in_input: true,
                        };
                        (text, shape)
                    }
                    None => {
                        let b = scratch.get_or_insert_with(|| self.take_buf());
                        let from = written_from.unwrap_or_else(|| {
                            let from = b.len();
                            b.extend_from_slice(&self.p.s[open..name_end]);
                            from
                        });
                        b.push(b':');
                        let shape = match mode {
                            Mode::Payload => self.member_value(redacted, depth, b)?,
                            Mode::Raw => self.value(depth, b, Mode::Raw)?,
                        };
                        let text = Span {
                            start: from,
                            end: b.len(),
                            in_input: false,
                        };
                        (text, shape)
                    }
                };
                self.members.push(Member {
                    name,
                    text,
                    shape,
                    redacted,
                });
                self.p.skip_ws();
                match self.p.peek() {
                    Some(b',') => self.p.i += 1,
                    Some(b'}') => {
                        self.p.i += 1;
                        break;
                    }
                    None => return Err(self.p.err(ParseErrorKind::UnexpectedEnd)),
                    Some(_) => return Err(self.p.err(ParseErrorKind::UnexpectedByte)),
                }
            }
        }
        let input = self.p.s;
        let names = &self.names;
        let scratch_bytes = scratch.as_deref().unwrap_or_default();
        let members = &self.members[base..];
        if !(same && members.len() == layout.names.len()) {
            layout.valid = mode == Mode::Payload && members.iter().all(|m| m.name.in_input);
            layout.names.clear();
            if layout.valid {
                layout
                    .names
                    .extend(members.iter().map(|m| (m.name, m.redacted)));
            }
            // Key order (code points = UTF-8 bytes); of equal keys the last
            // read wins: a stable sort keeps them in reading order.
            let name = |k: u32| members[k as usize].name.of(input, names);
            let order = &mut layout.order;
            order.clear();
            order.extend(0..members.len() as u32);
            order.sort_by(|&a, &b| key_order(name(a), name(b)));
            let mut kept = 0;
            for k in 0..order.len() {
                if order
                    .get(k + 1)
                    .is_some_and(|&next| key_order(name(next), name(order[k])).is_eq())
                {
                    continue;
                }
                order[kept] = order[k];
                kept += 1;
            }
            order.truncate(kept);
        }
        let mut written = 0usize;
        out.push(b'{');
        for &k in &layout.order {
            let m = &members[k as usize];
            if mode == Mode::Payload && m.shape.pruned(m.name.of(input, names)) {
                continue;
            }
            if written > 0 {
                out.push(b',');
            }
            written += 1;
            append(out, m.text.of(input, scratch_bytes));
        }
        out.push(b'}');
        if mode == Mode::Payload {
            self.layouts[depth] = layout;
        }
        self.members.truncate(base);
        self.names.truncate(names_base);
        if let Some(b) = scratch {
            self.give_buf(b);
        }
        Ok(if written == 0 {
            Shape::EmptyObject
        } else {
            Shape::Other
        })
    }
}

/// Byte order of two member names (code points, as UTF-8 bytes compare).
/// Names are short: a loop here beats a call to `memcmp` in wasm.
fn key_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// At the start of a number (`-` or a digit): the length of its text when
/// that is already what the canonical form writes, read in one pass — an
/// integer other than `-0` within Python's digit limit (Python prints ints
/// as read), or a fixed-notation float that Python's `repr` prints as
/// written ([`canonical_fixed`]). `None` for any other number, and for text
/// that is not a JSON number (the general path reports it).
fn canonical_number_len(text: &[u8]) -> Option<usize> {
    let digits = |from: usize| {
        text[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let lead = usize::from(text[0] == b'-');
    let int_len = digits(lead);
    let int_end = lead + int_len;
    let int = &text[lead..int_end];
    // Python reads "01" as 0 followed by trailing garbage; JSON refuses it.
    if int.is_empty() || (int.len() > 1 && int[0] == b'0') {
        return None;
    }
    match text.get(int_end) {
        Some(b'.') => {
            let end = int_end + 1 + digits(int_end + 1);
            let frac = &text[int_end + 1..end];
            let fixed = !matches!(text.get(end), Some(b'e' | b'E'));
            (fixed && canonical_fixed(int, frac)).then_some(end)
        }
        Some(b'e' | b'E') => None,
        _ => ((lead == 0 || int != b"0") && int.len() <= crate::value::MAX_INT_DIGITS)
            .then_some(int_end),
    }
}

/// Whether Python's `repr` prints the float `int.frac` (digits, a valid
/// JSON integer part) as written: at most 15 significant digits (so the
/// shortest round-trip form is these digits), no trailing zero in the
/// fraction but a lone `.0`, not zero, and a decimal exponent in [-4, 16).
fn canonical_fixed(int: &[u8], frac: &[u8]) -> bool {
    if frac.is_empty() || (frac.len() > 1 && frac.ends_with(b"0")) {
        return false;
    }
    let frac_sig = if frac == b"0" { &frac[..0] } else { frac };
    if int == b"0" {
        let zeros = frac_sig.iter().take_while(|&&b| b == b'0').count();
        // zero itself (`-0.0` too) goes through the float writer; past
        // 0.0001 Python switches to exponent notation.
        !frac_sig.is_empty() && zeros <= 3 && frac_sig.len() - zeros <= 15
    } else {
        int.len() <= 16 && int.len() + frac_sig.len() <= 15
    }
}

/// Whether a whole number's text is already what the canonical form writes.
#[cfg(test)]
fn is_canonical_number(text: &[u8]) -> bool {
    canonical_number_len(text) == Some(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::canonical;
    use crate::test_gen::Gen;
    use crate::value::{parse_with_depth, Map};

    /// Masks `password` and `token` (any case); non-strings become their
    /// canonical JSON in brackets, so the tests see what was passed.
    struct TestRedaction;

    impl Redaction for TestRedaction {
        fn is_redacted(&self, key: &[u8]) -> bool {
            ["password", "token"]
                .iter()
                .any(|k| k.as_bytes().eq_ignore_ascii_case(key))
        }
        fn replacement(&self, original: Redacted<'_>) -> String {
            match original {
                Redacted::Str(s) => format!("<{}>", s.len()),
                Redacted::Json(j) => format!("[{}]", String::from_utf8_lossy(j)),
            }
        }
    }

    impl Gen {
        /// A random JSON document (whitespace and member spelling vary).
        fn doc(&mut self, depth: u32, out: &mut String) {
            let pick = if depth > 4 {
                self.next() % 6
            } else {
                self.next() % 9
            };
            match pick {
                0 => out.push_str("null"),
                1 => out.push_str(["true", "false"][(self.next() % 2) as usize]),
                2 => out.push_str(
                    ["0", "-1", "2.5", "1e3", "-0.0", "99999999999999999999"]
                        [(self.next() % 6) as usize],
                ),
                3..=5 => out.push_str(
                    ["\"\"", "\"a\"", "\"\\u00e9\"", "\" \""][(self.next() % 4) as usize],
                ),
                6 => {
                    out.push('[');
                    for i in 0..self.next() % 4 {
                        if i > 0 {
                            out.push(',');
                        }
                        self.doc(depth + 1, out);
                    }
                    out.push(']');
                }
                _ => {
                    out.push('{');
                    // Compact members are copied from the input as
                    // read; spaced ones go through the scratch buffer.
                    let compact = self.next().is_multiple_of(2);
                    for i in 0..self.next() % 5 {
                        if i > 0 {
                            out.push_str(if compact { "," } else { " , " });
                        }
                        let key = [
                            "a", "b", "token", "Password", "schemaid", "_value", "\u{e9}", "a",
                            "\\u0061",
                        ][(self.next() % 9) as usize];
                        out.push_str(&format!("\"{key}\":"));
                        if !compact {
                            out.push(' ');
                        }
                        self.doc(depth + 1, out);
                    }
                    out.push('}');
                }
            }
        }
    }

    /// The oracle: the tree path.
    fn reference(input: &str, max_depth: usize) -> Option<Option<Vec<u8>>> {
        let v = parse_with_depth(input.as_bytes(), max_depth).ok()?;
        let mut v = match v {
            Value::Object(m) => Value::Object(m),
            other => {
                let mut m = Map::new();
                m.insert("_value".into(), other);
                Value::Object(m)
            }
        };
        fn redact(v: &mut Value) {
            match v {
                Value::Object(m) => {
                    for (k, item) in m.iter_mut() {
                        if TestRedaction.is_redacted(k.as_bytes()) {
                            let r = match &*item {
                                Value::String(s) => TestRedaction.replacement(Redacted::Str(s)),
                                other => {
                                    TestRedaction.replacement(Redacted::Json(&canonical(other)))
                                }
                            };
                            *item = Value::String(r);
                        } else {
                            redact(item);
                        }
                    }
                }
                Value::Array(items) => items.iter_mut().for_each(redact),
                _ => {}
            }
        }
        redact(&mut v);
        crate::prune::prune(&mut v);
        Some(match &v {
            Value::Object(m) if m.is_empty() => None,
            _ => Some(canonical(&v)),
        })
    }

    thread_local! {
        /// One writer for every document a test thread checks, as a plugin
        /// keeps one for every body: nothing of a document (a layout, a
        /// buffer, a member left by an error) may show in the next.
        static WRITER: std::cell::RefCell<PayloadWriter> = Default::default();
    }

    fn ours(input: &str, max_depth: usize) -> Option<Option<Vec<u8>>> {
        let mut out = b"x".to_vec();
        let mut fresh = b"x".to_vec();
        let written = WRITER.with(|w| {
            w.borrow_mut()
                .write(input.as_bytes(), max_depth, &TestRedaction, &mut out)
        });
        let alone = write_payload(input.as_bytes(), max_depth, &TestRedaction, &mut fresh);
        assert_eq!(
            (&written, &out),
            (&alone, &fresh),
            "kept writer, fresh writer: {input}"
        );
        match written {
            Ok(true) => Some(Some(out[1..].to_vec())),
            Ok(false) => {
                assert_eq!(out, b"x");
                Some(None)
            }
            Err(_) => {
                assert_eq!(out, b"x", "nothing appended on error");
                None
            }
        }
    }

    fn check(input: &str) {
        for depth in [3, 125] {
            let (a, b) = (ours(input, depth), reference(input, depth));
            assert_eq!(
                a.as_ref()
                    .map(|o| o.as_ref().map(|v| String::from_utf8_lossy(v).into_owned())),
                b.as_ref()
                    .map(|o| o.as_ref().map(|v| String::from_utf8_lossy(v).into_owned())),
                "{input} (depth {depth})"
            );
        }
    }

    #[test]
    fn matches_the_tree_path_on_chosen_documents() {
        for doc in [
            r#"{"b":1,"a":2}"#,
            r#" { "z" : [ 1 , 2.50 , -0 , 1E2 , 1e-7 , 12345678901234567890123 ] , "a" : "x" } "#,
            r#"{"a":null,"b":"","c":[],"d":{},"e":{"x":null},"f":false,"g":0,"schemaid":"","h":{"schemaid":""}}"#,
            r#"{"l":[null,"",{},{"x":null}]}"#,
            r#"{"k":1,"k":2,"j":{"k":3},"k":{"x":null}}"#,
            r#"{"Password":"s3cr3t","nested":{"TOKEN":[1,{"a":null}],"ok":"v"},"list":[{"token":""}]}"#,
            r#"{"token":{}}"#,
            r#"{"caf\u00e9":"\ud83d\ude00 \"q\" \\ \n \u0007 /","\u00e9":1,"e":2,"\u007f":3}"#,
            r#"[1,2]"#,
            r#""str""#,
            r#""""#,
            "null",
            "[]",
            "{}",
            "false",
            "0",
            r#"{"_value":1}"#,
            r#"{"a":{"b":{"c":{"d":1}}}}"#,
            r#"[[[[1]]]]"#,
            // copied as read, or not: escapes, DEL, `/`, the same key
            // spelled with an escape, a redacted key spelled with one
            r#"{"a":"x/y","b":"\/","c":"","d":"tab	here","a":"last","a ":" "}"#,
            r#"{"password":"p","key":"","schemaid":"","x":"é"}"#,
            // a layout is not kept for an object with a decoded name: its
            // span (here 0..1 of the decoded names) is not the input's
            r#"[{"\u007f":1,"~":2},{"[":1,"~":2}]"#,
            // names alike in their first eight bytes (NUL pads them too)
            r#"{"ab\u0000":1,"ab":2,"abcdefghi":3,"abcdefgh":4,"abcdefghZ":5,"abcdefghA":6}"#,
            r#"{"\u0000":7,"":8,"abcdefgh\u0000":9,"abcdefgh":10,"ab":11,"abcdefghA":12}"#,
            "{\"s\":\"\u{7f}\",\"\u{7f}\":1,\"k\":\"caf\u{e9}\"}",
            // numbers copied as read, or through the float writer
            r#"[12345678901234567, 1.0, 1.50, 0.0001, 0.00001, -0, -0.0, 0.0, 123456789012345.6]"#,
            r#"[12345678901234.5, 1234567890123456.0, 99999999999999999.0, 1e5, 1E+2, 2.5e-7]"#,
            // refused alike
            "{\"a\":1,}",
            "[1,]",
            "{\"a\":NaN}",
            "[1e999]",
            "{\"a\":1} x",
            "",
            "  ",
            "{\"a\"}",
            "\"\\x\"",
            "[01]",
        ] {
            check(doc);
        }
        // larger objects, names repeated (also spelled with an escape) and
        // in every order
        let names = ["k", "\\u006b", "b", "a", "token", "aa", "", "z", "b"];
        for n in [15, 16, 17, 24] {
            for rotate in 0..names.len() {
                let members: Vec<String> = (0..n)
                    .map(|i| format!("\"{}\":{}", names[(i * 7 + rotate) % names.len()], i))
                    .collect();
                check(&format!("{{{}}}", members.join(",")));
            }
        }
        // an integer longer than the parser takes, at either side of the bound
        for n in [
            crate::value::MAX_INT_DIGITS,
            crate::value::MAX_INT_DIGITS + 1,
        ] {
            check(&format!("{{\"n\":{}}}", "9".repeat(n)));
        }
    }

    /// Numbers are copied as read after one scan; what is not copied as
    /// read (`-0`, a leading zero, past Python's digit limit, a float Python
    /// prints otherwise, an exponent, not a number) goes the general way, as
    /// the tree path does.
    #[test]
    fn numbers_match_the_tree_path() {
        let long = "9".repeat(crate::value::MAX_INT_DIGITS);
        let texts = [
            "0".to_owned(),
            "-0".to_owned(),
            "00".to_owned(),
            "01".to_owned(),
            "-01".to_owned(),
            "-".to_owned(),
            "-a".to_owned(),
            "-I".to_owned(),
            "7".to_owned(),
            "-12".to_owned(),
            "12x".to_owned(),
            "1.".to_owned(),
            "1.5".to_owned(),
            "10.0".to_owned(),
            "1e5".to_owned(),
            "1E2".to_owned(),
            "-0.0".to_owned(),
            "0.5".to_owned(),
            "-0.5".to_owned(),
            "0.0001".to_owned(),
            "0.00001".to_owned(),
            "1.50".to_owned(),
            "1.0".to_owned(),
            "100.0".to_owned(),
            "1.e5".to_owned(),
            "1.5e3".to_owned(),
            "1.5E-3".to_owned(),
            "01.5".to_owned(),
            "-01.5".to_owned(),
            "0.".to_owned(),
            "-.5".to_owned(),
            ".5".to_owned(),
            "1.5.5".to_owned(),
            "1.5x".to_owned(),
            "123456789012345.6".to_owned(),
            "1234567890123456.7".to_owned(),
            "1234567890123456.0".to_owned(),
            "0.123456789012345".to_owned(),
            "0.1234567890123456".to_owned(),
            "9223372036854775808".to_owned(),
            long.clone(),
            format!("-{long}"),
            format!("{long}9"),
            format!("-{long}9"),
        ];
        for t in &texts {
            check(&format!(r#"{{"a":{t}}}"#));
            check(&format!(r#"{{"a":{t},"b":1}}"#));
            check(&format!("[{t}]"));
            check(t);
        }
    }

    #[test]
    fn numbers_copied_as_written_are_exactly_the_canonical_ones() {
        let mut samples: Vec<String> = [
            "0",
            "-0",
            "7",
            "-12",
            "10.99",
            "1.0",
            "100.0",
            "1.50",
            "0.5",
            "-0.0",
            "0.0",
            "0.0001",
            "0.00001",
            "0.001234",
            "1234567890123456.0",
            "12345678901234567.0",
            "123456789012345.6",
            "1234567890123456.7",
            "0.123456789012345",
            "0.1234567890123456",
            "9007199254740993.0",
            "1e5",
            "2.5E-3",
            "1.10",
            "99999999999999999999",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let mut gen = Gen(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let g = gen.next();
            let int = g % 100_000;
            let frac = (g >> 20) % 10_000;
            let scale = (g >> 40) % 6;
            samples.push(match scale {
                0 => format!("{int}.{frac}"),
                1 => format!("0.{:04}", frac),
                2 => format!("-{int}.{frac:03}"),
                3 => format!("{}{}.{}", int, g % 1_000_000_000, frac),
                4 => format!("0.000{frac}"),
                _ => format!("{int}"),
            });
        }
        for text in samples {
            let Ok(v) = crate::value::parse(text.as_bytes()) else {
                continue;
            };
            if is_canonical_number(text.as_bytes()) {
                assert_eq!(
                    String::from_utf8(canonical(&v)).ok(),
                    Some(text.clone()),
                    "{text}"
                );
            }
        }
        assert!(is_canonical_number(b"10.99"));
        assert!(!is_canonical_number(b"-0"));
        assert!(!is_canonical_number(b"1.50"));
    }

    #[test]
    fn matches_the_tree_path_on_generated_documents() {
        let mut g = Gen(0x2545_f491_4f6c_dd1d);
        for _ in 0..5_000 {
            let mut doc = String::new();
            g.doc(0, &mut doc);
            check(&doc);
        }
    }

    #[test]
    fn matches_the_tree_path_on_arrays_of_like_objects() {
        // Objects after the first of an array reuse its layout (names,
        // redaction, order) while their names are the same: vary a name, the
        // count, duplicates, escapes, pruned values and redacted originals
        // (raw objects at the same depth) to reach every way out of it.
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let mut next = |n: u64| g.next() % n;
        // `skus` and `no` begin or end like other names: a name compared
        // with the layout's as it is read must end where the layout's does.
        let names = [
            "sku", "qty", "token", "note", "a", "\\u0061", "schemaid", "price", "sku", "skus", "no",
        ];
        let some_name = |k: u64| names[(k % names.len() as u64) as usize];
        let values = [
            "1",
            "null",
            "\"\"",
            "{}",
            "[]",
            "\"x\"",
            "2.50",
            "{\"a\":null}",
            "{\"b\":1,\"a\":2}",
            "{\"token\":1,\"a\":2}",
        ];
        for _ in 0..3_000 {
            let template: Vec<&str> = (0..1 + next(5)).map(|_| some_name(next(1 << 20))).collect();
            let mut items = Vec::new();
            for _ in 0..1 + next(4) {
                let mut these = template.clone();
                match next(6) {
                    0 => {
                        let at = next(these.len() as u64) as usize;
                        these[at] = some_name(next(1 << 20));
                    }
                    1 => these.push(some_name(next(1 << 20))),
                    2 if these.len() > 1 => {
                        these.pop();
                    }
                    _ => {}
                }
                let sep = if next(3) == 0 { ": " } else { ":" };
                let members: Vec<String> = these
                    .iter()
                    .map(|n| format!("\"{n}\"{sep}{}", values[next(10) as usize]))
                    .collect();
                items.push(format!("{{{}}}", members.join(",")));
            }
            check(&format!(
                "{{\"items\":[{}],\"token\":{}}}",
                items.join(","),
                items[0]
            ));
        }
    }
}
