//! The one producer of an [`HttpEvent`]'s sealed NDJSON line, written in one
//! pass into the caller's buffer (the filter's batch body).
//!
//! The bytes are exactly `canonical(seal(prune(event.to_value(schema))))`:
//! `to_value` + [`crate::integrity::seal`] stay as the oracle, and the tests
//! hold this writer against them byte for byte for random events. No
//! intermediate map is built: the event's members are known, so they are
//! written in sorted order straight from the struct; the hash runs over the
//! members before `security` as they stand in the buffer and over the few
//! members after it, which are written to a reused scratch buffer first and
//! copied behind `security`. The event is hashed once: the raw hash is
//! returned for the batch digest (SPEC §10). This is the filter's per-event
//! cost on the tick, so it matters.

use crate::append::append;
use crate::canonical::{write_canonical, write_string};
use crate::schema::{HttpEvent, HttpSection};
use crate::{Map, Schema, Value};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Writes `{"k":v,...}` members, tracking commas.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, empty: true }
    }

    /// A member name of the schema: a literal of this file, plain ASCII
    /// (checked in debug builds), so it is copied without escaping.
    fn key(&mut self, k: &'static str) {
        debug_assert!(k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        append(self.out, k.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A member name from the request (a header name): escaped.
    fn dyn_key(&mut self, k: &str) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        write_string(k, self.out);
        self.out.push(b':');
    }

    /// A string member; pruned when absent or empty.
    fn str(&mut self, k: &'static str, v: &Option<String>) {
        if let Some(s) = v.as_deref().filter(|s| !s.is_empty()) {
            self.key(k);
            write_string(s, self.out);
        }
    }

    fn num(&mut self, k: &'static str, v: u64) {
        self.key(k);
        write_u64(v, self.out);
    }

    fn opt_num(&mut self, k: &'static str, v: Option<u64>) {
        if let Some(v) = v {
            self.num(k, v);
        }
    }

    fn bool(&mut self, k: &'static str, v: bool) {
        self.key(k);
        self.out
            .extend_from_slice(if v { b"true" as &[u8] } else { b"false" });
    }

    fn opt_bool(&mut self, k: &'static str, v: Option<bool>) {
        if let Some(v) = v {
            self.bool(k, v);
        }
    }

    /// A nested object written by `f`; dropped again when it stayed empty.
    fn nested(&mut self, k: &'static str, f: impl FnOnce(&mut Obj<'_>)) {
        let mark = self.out.len();
        let was_empty = self.empty;
        self.key(k);
        let inner_start = self.out.len();
        let inner_empty = {
            let mut inner = Obj::open(self.out);
            f(&mut inner);
            inner.empty
        };
        if inner_empty {
            self.out.truncate(mark);
            self.empty = was_empty;
        } else {
            debug_assert!(self.out.len() > inner_start);
            self.out.push(b'}');
        }
    }

    /// A pruned JSON value (payloads are pruned when built): dropped when it
    /// is an empty object.
    fn value(&mut self, k: &'static str, v: &Option<Value>) {
        match v {
            Some(Value::Object(m)) if m.is_empty() => {}
            Some(Value::Object(_)) => {
                self.key(k);
                if let Some(v) = v {
                    write_canonical(v, self.out);
                }
            }
            Some(other) => {
                // mobius `_as_object`: a non-object is wrapped.
                let mut m = Map::new();
                m.insert("_value".into(), other.clone());
                let mut wrapped = Value::Object(m);
                crate::prune::prune(&mut wrapped);
                if wrapped.as_object().is_some_and(|m| !m.is_empty()) {
                    self.key(k);
                    write_canonical(&wrapped, self.out);
                }
            }
            None => {}
        }
    }

    /// A member whose value is already canonical JSON.
    fn raw(&mut self, k: &'static str, canonical: &[u8]) {
        self.key(k);
        append(self.out, canonical);
    }

    /// Header maps: string values, empty ones pruned.
    fn headers(&mut self, k: &'static str, m: &Map) {
        self.nested(k, |o| {
            for (name, v) in m {
                match v {
                    Value::String(s) if s.is_empty() => {}
                    Value::String(s) => {
                        o.dyn_key(name);
                        write_string(s, o.out);
                    }
                    other => {
                        let mut v = other.clone();
                        crate::prune::prune(&mut v);
                        let empty = match &v {
                            Value::Null => true,
                            Value::Array(a) => a.is_empty(),
                            Value::Object(m) => m.is_empty(),
                            _ => false,
                        };
                        if !empty {
                            o.dyn_key(name);
                            write_canonical(&v, o.out);
                        }
                    }
                }
            }
        });
    }
}

fn write_http(o: &mut Obj<'_>, h: &HttpSection) {
    o.str("authority", &h.authority);
    o.str("codedetails", &h.codedetails);
    o.num("durationms", h.durationms);
    o.str("protocol", &h.protocol);
    o.num("requestbytes", h.requestbytes);
    o.headers("requestheaders", &h.requestheaders);
    o.num("responsebytes", h.responsebytes);
    o.str("responseflags", &h.responseflags);
    o.headers("responseheaders", &h.responseheaders);
    o.num("statuscode", u64::from(h.statuscode));
    o.str("upstreamcluster", &h.upstreamcluster);
}

/// Payloads already written as canonical, pruned, non-empty objects (e.g.
/// by [`crate::stream::write_payload`]); they take the place of the event's
/// `eventdata` payload values.
#[derive(Debug, Clone, Copy, Default)]
pub struct Payloads<'a> {
    pub request: Option<&'a [u8]>,
    pub response: Option<&'a [u8]>,
}

/// Members sorted before `security`.
fn write_head(o: &mut Obj<'_>, e: &HttpEvent, full: bool, payloads: Payloads<'_>) {
    o.nested("action", |a| {
        a.str("method", &e.action.method);
        a.str("name", &e.action.name);
        a.str("severity", &e.action.severity);
        a.str("status", &e.action.status);
    });
    o.nested("eventdata", |d| {
        let md = &e.eventdata.metadata;
        d.nested("metadata", |m| {
            m.str("compliancecategory", &md.compliancecategory);
            m.bool("issensitive", md.issensitive);
            if full {
                m.opt_num("requestbodybytes", md.requestbodybytes);
                m.str("requestbodysha256", &md.requestbodysha256);
                m.opt_bool("requestencoded", md.requestencoded);
                m.opt_bool("requesttruncated", md.requesttruncated);
                m.opt_num("responsebodybytes", md.responsebodybytes);
                m.str("responsebodysha256", &md.responsebodysha256);
                m.opt_bool("responseencoded", md.responseencoded);
                m.opt_bool("responsetruncated", md.responsetruncated);
            }
        });
        match payloads.request {
            Some(bytes) => d.raw("requestpayload", bytes),
            None => d.value("requestpayload", &e.eventdata.requestpayload),
        }
        match payloads.response {
            Some(bytes) => d.raw("responsepayload", bytes),
            None => d.value("responsepayload", &e.eventdata.responsepayload),
        }
    });
    if let (true, Some(h)) = (full, &e.http) {
        o.nested("http", |x| write_http(x, h));
    }
    o.str("httpmethod", &e.httpmethod);
    o.str("httpurl", &e.httpurl);
    o.str("id", &e.id);
    o.nested("kubernetes", |k| {
        let s = &e.kubernetes;
        k.str("containername", &s.containername);
        k.str("namespacename", &s.namespacename);
        k.str("nodename", &s.nodename);
        k.str("podname", &s.podname);
        if full {
            k.str("serviceaccount", &s.serviceaccount);
            k.str("workload", &s.workload);
        }
    });
    o.nested("network", |n| {
        n.str("sourceip", &e.network.sourceip);
        n.str("useragent", &e.network.useragent);
    });
    o.nested("objectref", |r| {
        r.str("apiversion", &e.objectref.apiversion);
        r.str("resource", &e.objectref.resource);
        r.str("resourceid", &e.objectref.resourceid);
    });
    o.str("parentservicespanid", &e.parentservicespanid);
    o.str("requestid", &e.requestid);
    // `schemaid` keeps "" (mobius re-adds it when absent).
    match (&e.schemaid, full) {
        (Some(s), _) => {
            o.key("schemaid");
            write_string(s, o.out);
        }
        (None, false) => {
            o.key("schemaid");
            write_string("", o.out);
        }
        (None, true) => {}
    }
}

/// Members sorted after `security`.
fn write_tail(o: &mut Obj<'_>, e: &HttpEvent, full: bool) {
    o.str("spanid", &e.spanid);
    o.str("specversion", &e.specversion);
    o.nested("subject", |s| {
        let groups: Vec<&String> = e.subject.groups.iter().collect();
        if !groups.is_empty() {
            s.key("groups");
            s.out.push(b'[');
            for (i, g) in groups.iter().enumerate() {
                if i > 0 {
                    s.out.push(b',');
                }
                write_string(g, s.out);
            }
            s.out.push(b']');
        }
        if full {
            s.str("principal", &e.subject.principal);
        }
        s.str("type", &e.subject.type_);
        s.str("userid", &e.subject.userid);
    });
    o.str("tenantid", &e.tenantid);
    o.str("timestamp", &e.timestamp);
    o.str("traceid", &e.traceid);
    o.str("transactionid", &e.transactionid);
}

/// Decimal digits of `v` without the formatting machinery.
pub fn write_u64(mut v: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends the lowercase hex of `bytes` (a table lookup per nibble).
pub fn push_hex(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        out.push(HEX_DIGITS[usize::from(b >> 4)]);
        out.push(HEX_DIGITS[usize::from(b & 0x0f)]);
    }
}

/// Lowercase hex of a digest into a fixed buffer.
fn hex32(bytes: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (i, &b) in bytes.iter().enumerate() {
        out[2 * i] = HEX_DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = HEX_DIGITS[usize::from(b & 0x0f)];
    }
    out
}

/// Lowercase hex of a digest as a `String`.
pub fn lower_hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    push_hex(bytes, &mut out);
    // Only ASCII digits were pushed.
    String::from_utf8(out).unwrap_or_default()
}

/// The event key, keyed once: every signature then starts from the HMAC
/// state after the key blocks (mobius `sign`: HMAC-SHA256 of the hash's hex
/// text, as [`crate::integrity::sign_hash`]), which saves two SHA-256 blocks
/// per event.
#[derive(Clone)]
pub struct Signer {
    mac: Option<Hmac<Sha256>>,
    key_id: Option<String>,
}

impl Signer {
    /// An empty or absent key signs nothing; `key_id` only names a signature.
    pub fn new(key: Option<&[u8]>, key_id: Option<&str>) -> Self {
        let mac = key
            .filter(|k| !k.is_empty())
            .and_then(|k| Hmac::<Sha256>::new_from_slice(k).ok());
        let key_id = match mac {
            Some(_) => key_id.filter(|s| !s.is_empty()).map(str::to_owned),
            None => None,
        };
        Signer { mac, key_id }
    }

    /// The raw HMAC of the hex hash, when there is a key.
    pub fn sign_raw(&self, hash_hex: &[u8]) -> Option<[u8; 32]> {
        let mut mac = self.mac.clone()?;
        mac.update(hash_hex);
        Some(mac.finalize().into_bytes().into())
    }

    /// `hex(HMAC-SHA256(key, hash_hex))`, when there is a key.
    pub fn sign(&self, hash_hex: &str) -> Option<String> {
        self.sign_raw(hash_hex.as_bytes()).map(|s| lower_hex(&s))
    }

    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key", &self.mac.as_ref().map(|_| "[redacted]"))
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// The sealed-line writer: a [`Signer`] and the scratch buffer it reuses.
#[derive(Debug, Clone)]
pub struct LineEncoder {
    signer: Signer,
    tail: Vec<u8>,
}

impl LineEncoder {
    pub fn new(signer: Signer) -> Self {
        LineEncoder {
            signer,
            tail: Vec::with_capacity(512),
        }
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Appends the sealed line of `e` (canonical JSON of the pruned event in
    /// `schema` with `security` = {hash, signature (with a key), keyid (with
    /// a signature)}; no newline) to `out` and returns the raw event hash.
    pub fn write_line(&mut self, e: &HttpEvent, schema: Schema, out: &mut Vec<u8>) -> [u8; 32] {
        self.write_line_with(e, schema, Payloads::default(), out)
    }

    /// [`LineEncoder::write_line`] with pre-written payloads.
    pub fn write_line_with(
        &mut self,
        e: &HttpEvent,
        schema: Schema,
        payloads: Payloads<'_>,
        out: &mut Vec<u8>,
    ) -> [u8; 32] {
        let full = schema == Schema::Meshaudit1;
        let start = out.len();
        let head_empty = {
            let mut o = Obj::open(out);
            write_head(&mut o, e, full, payloads);
            o.empty
        };
        self.tail.clear();
        let tail_empty = {
            let mut o = Obj::open(&mut self.tail);
            write_tail(&mut o, e, full);
            o.empty
        };
        // head = "{" + members (in `out`), tail = "{" + members: the hash
        // input is "{" head-members ["," tail-members] "}".
        let mut hasher = Sha256::new();
        hasher.update(&out[start..]);
        if !tail_empty {
            if !head_empty {
                hasher.update(b",");
            }
            hasher.update(&self.tail[1..]);
        }
        hasher.update(b"}");
        let hash: [u8; 32] = hasher.finalize().into();
        let hash_hex = hex32(&hash);

        if !head_empty {
            out.push(b',');
        }
        out.extend_from_slice(b"\"security\":{\"hash\":\"");
        out.extend_from_slice(&hash_hex);
        out.push(b'"');
        if let Some(signature) = self.signer.sign_raw(&hash_hex) {
            if let Some(id) = &self.signer.key_id {
                out.extend_from_slice(b",\"keyid\":");
                write_string(id, out);
            }
            out.extend_from_slice(b",\"signature\":\"");
            out.extend_from_slice(&hex32(&signature));
            out.push(b'"');
        }
        out.push(b'}');
        if !tail_empty {
            out.push(b',');
            out.extend_from_slice(&self.tail[1..]);
        }
        out.push(b'}');
        hash
    }
}

/// The sealed line of `e` as its own buffer (tests, tools).
pub fn sealed_line(e: &HttpEvent, schema: Schema, signer: &Signer) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    LineEncoder::new(signer.clone()).write_line(e, schema, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::{seal, sign_hash};
    use crate::test_gen::Gen;
    use crate::{canonical, parse};

    /// The reference: the event crate's own path.
    fn reference(
        e: &HttpEvent,
        schema: Schema,
        key: Option<&[u8]>,
        key_id: Option<&str>,
    ) -> Vec<u8> {
        let mut v = e.to_value(schema);
        if let Value::Object(m) = &mut v {
            seal(m, key, key_id);
        }
        canonical(&v)
    }

    impl Gen {
        fn s(&mut self) -> Option<String> {
            let pool: &[Option<&str>] = &[
                None,
                Some(""),
                Some("a"),
                Some("caf\u{e9} \"q\" \\ \n\u{1F600}"),
                Some("/orders/7?x=1"),
                Some("x\u{7f}y"),
            ];
            self.pick(pool).map(str::to_owned)
        }
        fn b(&mut self) -> Option<bool> {
            *self.pick(&[None, Some(true), Some(false)])
        }
        fn n(&mut self) -> Option<u64> {
            *self.pick(&[None, Some(0), Some(7), Some(u64::MAX)])
        }
        fn payload(&mut self) -> Option<Value> {
            let pool = [
                "",
                "{}",
                r#"{"a":null,"b":[],"c":{"d":""},"schemaid":""}"#,
                r#"{"x":[null,"",{},{"y":null}],"n":1.5,"big":123456789012345678901234567890}"#,
                "[1,2]",
                "\"str\"",
                "null",
                "false",
                r#"{"_raw":"text \u00e9"}"#,
            ];
            let text = *self.pick(&pool);
            if text.is_empty() {
                return None;
            }
            let mut v = parse(text.as_bytes()).ok()?;
            crate::prune::prune(&mut v);
            Some(v)
        }
        fn headers(&mut self) -> Map {
            let mut m = Map::new();
            for name in ["content-type", "x-empty", "user-agent"] {
                if self.next().is_multiple_of(2) {
                    let v = self.s().unwrap_or_default();
                    m.insert(name.into(), Value::String(v));
                }
            }
            m
        }
        // Every field is drawn in turn: assignments read better than one literal.
        #[allow(clippy::field_reassign_with_default)]
        fn event(&mut self) -> HttpEvent {
            let mut e = HttpEvent::default();
            e.id = self.s();
            e.specversion = self.s();
            e.schemaid = self.s();
            e.timestamp = self.s();
            e.tenantid = self.s();
            e.traceid = self.s();
            e.transactionid = self.s();
            e.requestid = self.s();
            e.spanid = self.s();
            e.parentservicespanid = self.s();
            e.httpmethod = self.s();
            e.httpurl = self.s();
            e.subject.userid = self.s();
            e.subject.type_ = self.s();
            e.subject.principal = self.s();
            for _ in 0..(self.next() % 3) {
                e.subject.groups.push(self.s().unwrap_or_default());
            }
            e.kubernetes.namespacename = self.s();
            e.kubernetes.podname = self.s();
            e.kubernetes.containername = self.s();
            e.kubernetes.nodename = self.s();
            e.kubernetes.serviceaccount = self.s();
            e.kubernetes.workload = self.s();
            e.objectref.resource = self.s();
            e.objectref.resourceid = self.s();
            e.objectref.apiversion = self.s();
            e.action.name = self.s();
            e.action.method = self.s();
            e.action.severity = self.s();
            e.action.status = self.s();
            e.network.sourceip = self.s();
            e.network.useragent = self.s();
            e.eventdata.requestpayload = self.payload();
            e.eventdata.responsepayload = self.payload();
            let md = &mut e.eventdata.metadata;
            md.issensitive = self.next().is_multiple_of(2);
            md.compliancecategory = self.s();
            md.requesttruncated = self.b();
            md.responsetruncated = self.b();
            md.requestbodybytes = self.n();
            md.responsebodybytes = self.n();
            md.requestbodysha256 = self.s();
            md.responsebodysha256 = self.s();
            md.requestencoded = self.b();
            md.responseencoded = self.b();
            if !self.next().is_multiple_of(4) {
                e.http = Some(HttpSection {
                    statuscode: (self.next() % 600) as u32,
                    durationms: self.n().unwrap_or(0),
                    requestbytes: self.n().unwrap_or(0),
                    responsebytes: self.n().unwrap_or(0),
                    protocol: self.s(),
                    authority: self.s(),
                    requestheaders: self.headers(),
                    responseheaders: self.headers(),
                    upstreamcluster: self.s(),
                    responseflags: self.s(),
                    codedetails: self.s(),
                });
            }
            e
        }
    }

    #[test]
    fn matches_the_event_crate_byte_for_byte() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        for i in 0..3_000 {
            let e = g.event();
            for schema in [Schema::Meshaudit1, Schema::Mobius1] {
                let key_choice = i % 4;
                let (key, id): (Option<&[u8]>, Option<&str>) = match key_choice {
                    0 => (None, None),
                    1 => (Some(b"k"), None),
                    2 => (Some(b"k"), Some("kid")),
                    _ => (Some(b""), Some("kid")),
                };
                let id = if schema == Schema::Mobius1 { None } else { id };
                let ours = sealed_line(&e, schema, &Signer::new(key, id));
                let theirs = reference(&e, schema, key, id);
                assert_eq!(
                    String::from_utf8_lossy(&ours),
                    String::from_utf8_lossy(&theirs),
                    "event {i} ({schema:?}): {e:?}"
                );
            }
        }
    }

    #[test]
    fn lower_hex_matches_hex_encode() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(lower_hex(&bytes), hex::encode(&bytes));
        let d = [0xa5u8; 32];
        assert_eq!(hex32(&d).to_vec(), hex::encode(d).into_bytes());
    }

    #[test]
    fn numbers_and_the_keyed_once_signer_match_the_reference() {
        for v in [0u64, 7, 10, 99, 100, 12345, u64::MAX] {
            let mut out = Vec::new();
            write_u64(v, &mut out);
            assert_eq!(out, v.to_string().into_bytes());
        }
        let s = Signer::new(Some(b"key"), None);
        assert_eq!(s.sign("abc"), Some(sign_hash(b"key", "abc")));
        assert_eq!(Signer::new(Some(b""), Some("k")).sign("abc"), None);
    }

    #[test]
    fn lines_append_to_a_reused_buffer_and_return_the_hash() {
        let mut g = Gen(7);
        let mut enc = LineEncoder::new(Signer::new(Some(b"k"), Some("kid")));
        let mut out = b"prefix\n".to_vec();
        for _ in 0..50 {
            let e = g.event();
            let before = out.len();
            let hash = enc.write_line(&e, Schema::Meshaudit1, &mut out);
            let line = &out[before..];
            let want = reference(&e, Schema::Meshaudit1, Some(b"k"), Some("kid"));
            assert_eq!(line, &want[..]);
            let parsed = parse(line).unwrap_or(Value::Null);
            let claimed = parsed
                .pointer(&["security", "hash"])
                .and_then(Value::as_str);
            assert_eq!(claimed, Some(hex::encode(hash).as_str()));
            out.push(b'\n');
        }
        assert!(out.starts_with(b"prefix\n"));
    }

    #[test]
    fn an_empty_event_still_seals() {
        let e = HttpEvent::default();
        for schema in [Schema::Meshaudit1, Schema::Mobius1] {
            assert_eq!(
                sealed_line(&e, schema, &Signer::new(Some(b"k"), None)),
                reference(&e, schema, Some(b"k"), None)
            );
        }
    }
}
