//! The sealed NDJSON line of an [`HttpEvent`], written in one pass.
//!
//! The bytes are exactly `canonical(seal(prune(event.to_value(schema))))`
//! (the tests hold this against the event crate for random events), but no
//! intermediate map is built: the event's members are known, so they are
//! written in sorted order straight from the struct, with the event crate's
//! string and value writers; the hash runs over the same bytes while they are
//! written, and `security` is spliced into its sorted place. This is the
//! filter's per-event cost on the tick, so it matters.

use hmac::{Hmac, Mac};
use meshaudit_event::canonical::{write_canonical, write_string};
use meshaudit_event::schema::{HttpEvent, HttpSection};
use meshaudit_event::{Map, Schema, Value};
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

    fn key(&mut self, k: &str) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        write_string(k, self.out);
        self.out.push(b':');
    }

    /// A string member; pruned when absent or empty.
    fn str(&mut self, k: &str, v: &Option<String>) {
        if let Some(s) = v.as_deref().filter(|s| !s.is_empty()) {
            self.key(k);
            write_string(s, self.out);
        }
    }

    fn num(&mut self, k: &str, v: u64) {
        self.key(k);
        self.out.extend_from_slice(v.to_string().as_bytes());
    }

    fn opt_num(&mut self, k: &str, v: Option<u64>) {
        if let Some(v) = v {
            self.num(k, v);
        }
    }

    fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.out
            .extend_from_slice(if v { b"true" as &[u8] } else { b"false" });
    }

    fn opt_bool(&mut self, k: &str, v: Option<bool>) {
        if let Some(v) = v {
            self.bool(k, v);
        }
    }

    /// A nested object written by `f`; dropped again when it stayed empty.
    fn nested(&mut self, k: &str, f: impl FnOnce(&mut Obj<'_>)) {
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
    fn value(&mut self, k: &str, v: &Option<Value>) {
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
                meshaudit_event::prune::prune(&mut wrapped);
                if wrapped.as_object().is_some_and(|m| !m.is_empty()) {
                    self.key(k);
                    write_canonical(&wrapped, self.out);
                }
            }
            None => {}
        }
    }

    /// Header maps: string values, empty ones pruned.
    fn headers(&mut self, k: &str, m: &Map) {
        self.nested(k, |o| {
            for (name, v) in m {
                match v {
                    Value::String(s) if s.is_empty() => {}
                    Value::String(s) => {
                        o.key(name);
                        write_string(s, o.out);
                    }
                    other => {
                        let mut v = other.clone();
                        meshaudit_event::prune::prune(&mut v);
                        let empty = match &v {
                            Value::Null => true,
                            Value::Array(a) => a.is_empty(),
                            Value::Object(m) => m.is_empty(),
                            _ => false,
                        };
                        if !empty {
                            o.key(name);
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

/// Members sorted before `security`.
fn write_head(o: &mut Obj<'_>, e: &HttpEvent, full: bool) {
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
        d.value("requestpayload", &e.eventdata.requestpayload);
        d.value("responsepayload", &e.eventdata.responsepayload);
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

/// Lowercase hex of a digest (a table lookup per nibble: `hex::encode` walks
/// a char iterator, which showed up in profiles).
fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
    // Only ASCII digits were pushed.
    String::from_utf8(out).unwrap_or_default()
}

/// The event key, keyed once per VM: every signature then starts from the
/// HMAC state after the key blocks (mobius `sign`: HMAC-SHA256 of the hash's
/// hex text), which saves two SHA-256 blocks per event.
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

    fn sign(&self, hash_hex: &str) -> Option<String> {
        let mut mac = self.mac.clone()?;
        mac.update(hash_hex.as_bytes());
        Some(lower_hex(&mac.finalize().into_bytes()))
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

/// The sealed line: canonical JSON of the pruned event in `schema`, with
/// `security` = {hash, signature (when the signer has a key), keyid (with a
/// signature)}.
pub fn sealed_line(e: &HttpEvent, schema: Schema, signer: &Signer) -> Vec<u8> {
    let full = schema == Schema::Meshaudit1;
    let mut head = Vec::with_capacity(1024);
    let head_empty = {
        let mut o = Obj::open(&mut head);
        write_head(&mut o, e, full);
        o.empty
    };
    let mut tail = Vec::with_capacity(256);
    let tail_empty = {
        let mut o = Obj::open(&mut tail);
        write_tail(&mut o, e, full);
        o.empty
    };
    // head = "{" + members, tail = "{" + members: the hash input is
    // "{" head-members ["," tail-members] "}".
    let mut hasher = Sha256::new();
    hasher.update(&head);
    if !tail_empty {
        if !head_empty {
            hasher.update(b",");
        }
        hasher.update(&tail[1..]);
    }
    hasher.update(b"}");
    let hash = lower_hex(&hasher.finalize());

    let mut line = head;
    if !head_empty {
        line.push(b',');
    }
    write_string("security", &mut line);
    line.push(b':');
    let mut sec = Obj::open(&mut line);
    sec.key("hash");
    write_string(&hash, sec.out);
    if let Some(signature) = signer.sign(&hash) {
        if let Some(id) = &signer.key_id {
            sec.key("keyid");
            write_string(id, sec.out);
        }
        sec.key("signature");
        write_string(&signature, sec.out);
    }
    line.push(b'}');
    if !tail_empty {
        line.push(b',');
        line.extend_from_slice(&tail[1..]);
    }
    line.push(b'}');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshaudit_event::integrity::seal;
    use meshaudit_event::{canonical, parse};

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

    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[(self.next() % items.len() as u64) as usize]
        }
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
            meshaudit_event::prune::prune(&mut v);
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
