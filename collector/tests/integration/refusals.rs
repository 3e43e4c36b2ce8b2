//! Every refusal of SPEC §6, in the order the checks run: each request fails
//! exactly the check under test (and passes every earlier one), gets its
//! status and error body, and leaves nothing stored.

use crate::support::{sign, InProcess, API_KEY, SECRET};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use flate2::write::GzEncoder;
use http_body_util::BodyExt;
use meshaudit_event::integrity::{batch_signature, seal};
use meshaudit_event::value::{parse, Value};
use std::io::Write;
use tower::ServiceExt;

struct Req {
    content_type: Option<&'static str>,
    content_encoding: Option<&'static str>,
    api_key: Option<String>,
    ts: Option<String>,
    signature: Option<String>,
    idempotency_key: Option<String>,
    scheme: Option<&'static str>,
    body: Vec<u8>,
}

impl Req {
    /// A valid signed NDJSON request for `body`.
    fn signed(body: &[u8]) -> Self {
        let (ts, sig) = sign(body);
        Self {
            content_type: Some("application/x-ndjson"),
            content_encoding: None,
            api_key: Some(API_KEY.into()),
            ts: Some(ts),
            signature: Some(sig),
            idempotency_key: None,
            scheme: None,
            body: body.to_vec(),
        }
    }

    fn build(&self) -> Request<Body> {
        let mut r = Request::post("/v1/events");
        if let Some(v) = self.content_type {
            r = r.header("content-type", v);
        }
        if let Some(v) = self.content_encoding {
            r = r.header("content-encoding", v);
        }
        if let Some(v) = self.scheme {
            r = r.header("x-signature-scheme", v);
        }
        for (name, v) in [
            ("x-api-key", &self.api_key),
            ("x-signature-ts", &self.ts),
            ("x-signature", &self.signature),
            ("x-idempotency-key", &self.idempotency_key),
        ] {
            if let Some(v) = v {
                r = r.header(name, v.as_str());
            }
        }
        // As real clients do (the size is checked from it before reading).
        r = r.header("content-length", self.body.len());
        r.body(Body::from(self.body.clone())).unwrap()
    }
}

async fn send(app: &InProcess, req: &Req) -> (StatusCode, serde_json::Value, Option<String>) {
    let resp = app.router().oneshot(req.build()).await.unwrap();
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
    (status, json, retry)
}

async fn refused(app: &InProcess, req: &Req, status: StatusCode, error: &str) -> serde_json::Value {
    let (got, body, _) = send(app, req).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(app.stored().await, 0, "a refusal stores nothing");
    assert!(
        app.state
            .metrics
            .events_rejected
            .with_label_values(&[error])
            .get()
            > 0,
        "audit_events_rejected_total{{reason={error}}} counted"
    );
    body
}

const EVENT: &[u8] = b"{\"id\":\"e1\",\"event\":\"ping\"}\n";

#[tokio::test]
async fn refusals_in_order_store_nothing() {
    let app = InProcess::new(&["--max-body-bytes", "2000", "--rate-limit-rps", "1"]).await;

    // 1. Content type (checked before everything else: no key, no signature).
    let mut r = Req::signed(EVENT);
    r.content_type = Some("text/plain");
    r.api_key = None;
    r.signature = None;
    refused(&app, &r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "content_type").await;
    r.content_type = None;
    refused(&app, &r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "content_type").await;
    let mut r = Req::signed(EVENT);
    r.content_encoding = Some("br");
    refused(&app, &r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "content_type").await;

    // 2. Size, before authentication.
    let mut r = Req::signed(&vec![b' '; 2001]);
    r.api_key = None;
    refused(&app, &r, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;

    // 3. API key: missing, then wrong.
    let mut r = Req::signed(EVENT);
    r.api_key = None;
    r.ts = None;
    refused(&app, &r, StatusCode::UNAUTHORIZED, "api_key").await;
    r.api_key = Some("wrong".into());
    refused(&app, &r, StatusCode::UNAUTHORIZED, "api_key").await;

    // 4. Timestamp: missing, past, future (signature valid for the given ts).
    let mut r = Req::signed(EVENT);
    r.ts = None;
    refused(&app, &r, StatusCode::UNAUTHORIZED, "timestamp").await;
    for skew in [-301i64, 301] {
        let ts = (crate::support::now_secs() + skew).to_string();
        let mut r = Req::signed(EVENT);
        r.signature = Some(batch_signature(SECRET.as_bytes(), &ts, EVENT));
        r.ts = Some(ts);
        refused(&app, &r, StatusCode::UNAUTHORIZED, "timestamp").await;
    }

    // 5. Signature: missing, wrong secret, other bytes.
    let mut r = Req::signed(EVENT);
    r.signature = None;
    refused(&app, &r, StatusCode::UNAUTHORIZED, "signature").await;
    let mut r = Req::signed(EVENT);
    r.signature = Some(batch_signature(b"other", r.ts.as_deref().unwrap(), EVENT));
    refused(&app, &r, StatusCode::UNAUTHORIZED, "signature").await;
    let mut r = Req::signed(EVENT);
    r.body = b"{\"id\":\"e1\",\"event\":\"pong\"}\n".to_vec();
    refused(&app, &r, StatusCode::UNAUTHORIZED, "signature").await;

    // 6. Parsing (before the rate limit runs out): the bad line is named.
    let body = b"{\"id\":\"ok\"}\n[1,2]\n";
    let err = refused(
        &app,
        &Req::signed(body),
        StatusCode::BAD_REQUEST,
        "malformed",
    )
    .await;
    assert_eq!(err["line"], 2);

    // 7. Rate: burst 2 at 1 rps; one token was spent just above, one is
    // left; then even a malformed body gets 429 (rate is checked before parsing).
    let body = b"{\"id\":\"x\"\n";
    refused(
        &app,
        &Req::signed(body),
        StatusCode::BAD_REQUEST,
        "malformed",
    )
    .await;
    let (status, body, retry) = send(&app, &Req::signed(b"[1]\n")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"], "rate_limited");
    assert!(
        retry.is_some_and(|r| r.parse::<u64>().unwrap() >= 1),
        "Retry-After"
    );
    assert_eq!(app.stored().await, 0);
}

#[tokio::test]
async fn malformed_bodies() {
    let app = InProcess::new(&[]).await;
    for (ct, body, line) in [
        ("application/json", &b""[..], None),
        ("application/json", b"42", None),
        ("application/json", b"null", None),
        ("application/json", b"[[{}]]", Some(0)),
        ("application/json", b"[{}, \"x\"]", Some(1)),
        ("application/json", b"{\"a\":NaN}", None),
        ("application/x-ndjson", b"\n\n", None),
        ("application/x-ndjson", b"{}\n{}\n{\"deep\":", Some(3)),
    ] {
        let mut r = Req::signed(body);
        r.content_type = Some(ct);
        let err = refused(&app, &r, StatusCode::BAD_REQUEST, "malformed").await;
        match line {
            Some(l) => assert_eq!(err["line"], l, "{err}"),
            None => assert!(err.get("line").is_none(), "{err}"),
        }
    }
    // Depth past 128 is malformed, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let mut r = Req::signed(format!("{{\"a\":{deep}}}").as_bytes());
    r.content_type = Some("application/json");
    refused(&app, &r, StatusCode::BAD_REQUEST, "malformed").await;
    // An empty array is fine and accepts nothing.
    let mut r = Req::signed(b"[]");
    r.content_type = Some("Application/JSON; charset=utf-8");
    let (status, body, _) = send(&app, &r).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["accepted"], 0);
}

#[tokio::test]
async fn gzip_is_signed_as_sent_and_bounded() {
    let app = InProcess::new(&["--max-body-bytes", "4096"]).await;
    let gz = |data: &[u8]| {
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    };
    // The bomb: small on the wire, past the limit once inflated.
    let mut bomb_src = b"{\"id\":\"b\",\"pad\":\"".to_vec();
    bomb_src.extend(std::iter::repeat_n(b'a', 1 << 20));
    bomb_src.extend_from_slice(b"\"}\n");
    let bomb = gz(&bomb_src);
    assert!(bomb.len() < 4096);
    let mut r = Req::signed(&bomb);
    r.content_encoding = Some("gzip");
    refused(&app, &r, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
    // Corrupt gzip.
    let mut r = Req::signed(b"definitely not gzip");
    r.content_encoding = Some("gzip");
    refused(&app, &r, StatusCode::BAD_REQUEST, "malformed").await;
    // Signed over the compressed bytes: accepted.
    let mut r = Req::signed(&gz(EVENT));
    r.content_encoding = Some("gzip");
    let (status, body, _) = send(&app, &r).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 1);
}

fn sealed(id: &str, key: &[u8], keyid: Option<&str>) -> Vec<u8> {
    let Value::Object(mut m) =
        parse(format!("{{\"id\":\"{id}\",\"specversion\":\"1.0\"}}").as_bytes()).unwrap()
    else {
        unreachable!()
    };
    seal(&mut m, Some(key), keyid);
    meshaudit_event::canonical(&Value::Object(m))
}

#[tokio::test]
async fn idempotency_then_unverified_422() {
    let app = InProcess::new(&[
        "--reject-unverified",
        "1",
        "--event-keys",
        "k1=event-secret,default=default-secret",
    ])
    .await;
    let good_kid = sealed("g1", b"event-secret", Some("k1"));
    let good_default = sealed("g2", b"default-secret", None);
    let bad = sealed("b1", b"wrong", Some("k1"));
    let unknown = sealed("b2", b"event-secret", Some("nope"));

    let mut ok = [good_kid.clone(), good_default.clone()].join(&b'\n');
    ok.push(b'\n');
    let mut r = Req::signed(&ok);
    r.idempotency_key = Some("batch-1".into());
    let (status, body, _) = send(&app, &r).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["deduped"], false);

    // Same key, same bytes (re-signed with a fresh ts): the first answer, deduped.
    let mut r = Req::signed(&ok);
    r.idempotency_key = Some("batch-1".into());
    let (status, body, _) = send(&app, &r).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        serde_json::json!({"accepted": 2, "duplicates": 0, "conflicts": 0, "deduped": true})
    );

    // Same key, another body: 409 before event verification, nothing stored.
    let mut other = bad.clone();
    other.push(b'\n');
    let mut r = Req::signed(&other);
    r.idempotency_key = Some("batch-1".into());
    let (status, body, _) = send(&app, &r).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "idempotency_conflict");
    assert_eq!(app.stored().await, 2);

    // Unverified under REJECT_UNVERIFIED: 422 naming the lines, nothing of it stored.
    let mut mixed = [sealed("g3", b"event-secret", Some("k1")), bad, unknown].join(&b'\n');
    mixed.push(b'\n');
    let (status, body, _) = send(&app, &Req::signed(&mixed)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "unverified");
    assert_eq!(body["lines"], serde_json::json!([2, 3]));
    assert_eq!(app.stored().await, 2);
}

#[tokio::test]
async fn unverified_events_are_stored_with_their_reason_by_default() {
    let app = InProcess::new(&["--event-keys", "k1=event-secret"]).await;
    let tampered = {
        let mut v =
            serde_json::from_slice::<serde_json::Value>(&sealed("t1", b"event-secret", Some("k1")))
                .unwrap();
        v["specversion"] = "2.0".into();
        serde_json::to_vec(&v).unwrap()
    };
    let mut body = [
        sealed("v1", b"event-secret", Some("k1")),
        sealed("s1", b"nope", Some("k1")),
        tampered,
        sealed("u1", b"event-secret", Some("zz")),
        b"{\"id\":\"n1\"}".to_vec(),
    ]
    .join(&b'\n');
    body.push(b'\n');
    let (status, answer, _) = send(&app, &Req::signed(&body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let router = app.router();
    let resp = router
        .oneshot(Request::get("/v1/events").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let page: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let got: Vec<(String, serde_json::Value, serde_json::Value)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["verified"].clone(),
                e["verify_reason"].clone(),
            )
        })
        .collect();
    use serde_json::Value as J;
    assert_eq!(
        got,
        vec![
            ("v1".into(), J::Bool(true), J::Null),
            ("s1".into(), J::Bool(false), J::from("bad_signature")),
            ("t1".into(), J::Bool(false), J::from("hash_mismatch")),
            ("u1".into(), J::Bool(false), J::from("unknown_key")),
            ("n1".into(), J::Null, J::Null),
        ]
    );
    assert_eq!(
        app.state
            .metrics
            .events_unverified
            .with_label_values(&["bad_signature"])
            .get(),
        1
    );
}

#[tokio::test]
async fn admin_token_guards_reads_not_ingest_or_metrics() {
    let app = InProcess::new(&["--admin-token", "adm1n"]).await;
    let (status, _, _) = send(&app, &Req::signed(EVENT)).await;
    assert_eq!(status, StatusCode::OK);
    for path in ["/v1/events", "/v1/events/e1", "/v1/verify"] {
        let get = |auth: Option<(&str, &str)>| {
            let mut r = Request::get(path);
            if let Some((k, v)) = auth {
                r = r.header(k, v);
            }
            r.body(Body::empty()).unwrap()
        };
        let resp = app.router().oneshot(get(None)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        let resp = app
            .router()
            .oneshot(get(Some(("authorization", "Bearer wrong"))))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        let resp = app
            .router()
            .oneshot(get(Some(("authorization", "Bearer adm1n"))))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let resp = app
            .router()
            .oneshot(get(Some(("x-admin-token", "adm1n"))))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
    let resp = app
        .router()
        .oneshot(
            Request::get("/v1/events/unknown")
                .header("x-admin-token", "adm1n")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = app
        .router()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    for name in [
        "audit_events_received_total{source=\"forwarder\"} 1",
        "audit_events_rejected_total{reason=\"store_unavailable\"} 0",
        "audit_events_deduped_total",
        "audit_events_unverified_total",
        "audit_receiver_requests_total{result=\"ok\"} 1",
        "audit_chain_head_seq",
        "signature_verification_seconds_bucket",
        "db_write_seconds_bucket",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    assert!(!text.contains("adm1n") && !text.contains(SECRET) && !text.contains(API_KEY));
}

#[tokio::test]
async fn concurrent_same_idempotency_key_stores_once() {
    let app = InProcess::new(&[]).await;
    let body = crate::support::ndjson_events("conc", 20);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let router = app.router();
        let mut r = Req::signed(&body);
        r.idempotency_key = Some("same".into());
        tasks.push(tokio::spawn(async move {
            router.oneshot(r.build()).await.unwrap()
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        let resp = t.await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["accepted"], 20);
        if v["deduped"] == false {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "one first answer, the rest replays");
    assert_eq!(app.stored().await, 20);
}

#[tokio::test]
async fn store_unavailable_is_503_and_not_ready() {
    let app = InProcess::new(&[]).await;
    app.store.pool().close().await;
    let (status, body, _) = send(&app, &Req::signed(EVENT)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "store_unavailable");
    let mut r = Req::signed(EVENT);
    r.idempotency_key = Some("k".into());
    let (status, _, _) = send(&app, &r).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let get = |p: &str| Request::get(p).body(Body::empty()).unwrap();
    let resp = app.router().oneshot(get("/readyz")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let resp = app.router().oneshot(get("/healthz")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        app.state
            .metrics
            .events_rejected
            .with_label_values(&["store_unavailable"])
            .get(),
        2
    );
    assert_eq!(
        app.state
            .metrics
            .requests
            .with_label_values(&["error"])
            .get(),
        2
    );
}

/// `X-Signature` under `X-Signature-Scheme: digest` (SPEC §10): the HMAC of
/// `"{ts}." + hex(SHA-256(h1 ‖ … ‖ hn))` over the hashes the collector recomputes.
fn digest_signed(body: &[u8], hashed: &[u8]) -> Req {
    use meshaudit_event::integrity::{batch_digest_hex, event_hash};
    let hashes: Vec<String> = hashed
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(|l| match parse(l).unwrap() {
            Value::Object(m) => event_hash(&m),
            _ => unreachable!("test lines are objects"),
        })
        .collect();
    let digest = batch_digest_hex(hashes.iter().map(String::as_str)).unwrap();
    let mut r = Req::signed(body);
    let ts = r.ts.clone().unwrap();
    r.signature = Some(batch_signature(
        SECRET.as_bytes(),
        &ts,
        hex::encode(digest).as_bytes(),
    ));
    r
}

#[tokio::test]
async fn digest_scheme_signs_the_recomputed_hashes() {
    let app = InProcess::new(&[]).await;
    let body = b"{\"id\":\"d1\",\"n\":1}\n\n{\"id\":\"d2\",\"n\":2.50}\r\n";

    // Without the scheme header a digest signature is a raw-body signature: wrong.
    let r = digest_signed(body, body);
    refused(&app, &r, StatusCode::UNAUTHORIZED, "signature").await;
    // A raw-body signature under the digest scheme is wrong too.
    let mut r = Req::signed(body);
    r.scheme = Some("digest");
    refused(&app, &r, StatusCode::UNAUTHORIZED, "signature").await;
    // Signed over other events (a changed line): refused, nothing stored.
    let mut r = digest_signed(body, b"{\"id\":\"d1\",\"n\":1}\n{\"id\":\"d2\",\"n\":3}\n");
    r.scheme = Some("digest");
    refused(&app, &r, StatusCode::UNAUTHORIZED, "signature").await;
    // Signed over the same events in another order: refused.
    let mut r = digest_signed(
        body,
        b"{\"id\":\"d2\",\"n\":2.50}\n{\"id\":\"d1\",\"n\":1}\n",
    );
    r.scheme = Some("digest");
    refused(&app, &r, StatusCode::UNAUTHORIZED, "signature").await;
    // An unknown scheme: 401 signature, saying so.
    let mut r = digest_signed(body, body);
    r.scheme = Some("sha512-body");
    let err = refused(&app, &r, StatusCode::UNAUTHORIZED, "signature").await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("X-Signature-Scheme"),
        "{err}"
    );

    // The hashes are recomputed over the canonical form, so the digest does
    // not depend on the bytes' spelling (`2.50`, key order, whitespace).
    let mut r = digest_signed(
        body,
        b"{\"n\":1, \"id\":\"d1\"}\n{\"id\":\"d2\",\"n\":2.5}\n",
    );
    r.scheme = Some("Digest");
    let (status, answer, _) = send(&app, &r).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 2);

    // JSON arrays: element order.
    let arr = b"[{\"id\":\"d3\"},{\"id\":\"d4\"}]";
    let mut r = digest_signed(arr, b"{\"id\":\"d3\"}\n{\"id\":\"d4\"}\n");
    r.content_type = Some("application/json");
    r.scheme = Some("digest");
    let (status, answer, _) = send(&app, &r).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 2);
    assert_eq!(app.stored().await, 4);
}

// ------------------------------------------------- issue 17: ingest limits

/// A body that yields `first` and then never ends: a stalled client.
struct Stalled(Option<&'static [u8]>);

impl http_body::Body for Stalled {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match self.0.take() {
            Some(b) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(
                axum::body::Bytes::from_static(b),
            )))),
            None => std::task::Poll::Pending,
        }
    }
}

/// `req` with a body that never finishes (and `Content-Length` as given).
fn stalled(req: &Req, content_length: Option<usize>) -> Request<Body> {
    let mut r = req.build();
    match content_length {
        Some(n) => {
            r.headers_mut().insert("content-length", n.into());
        }
        None => {
            r.headers_mut().remove("content-length");
        }
    }
    let (parts, _) = r.into_parts();
    Request::from_parts(parts, Body::new(Stalled(Some(b"{\"id\":"))))
}

/// A hang guard, not a timing assertion: the answer must come without the body.
async fn answer_without_body(
    app: &InProcess,
    req: Request<Body>,
) -> (StatusCode, serde_json::Value) {
    let resp = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        app.router().oneshot(req),
    )
    .await
    .expect("answered without waiting for the body")
    .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn credentials_and_size_are_checked_before_the_body_is_read() {
    let app = InProcess::new(&["--max-body-bytes", "2000"]).await;
    // No key, a body that never ends: 401 at once, nothing read or held.
    let mut r = Req::signed(EVENT);
    r.api_key = None;
    let (status, body) = answer_without_body(&app, stalled(&r, None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "api_key");
    // A Content-Length past the limit: 413 before anything is read.
    let r = Req::signed(EVENT);
    let (status, body) = answer_without_body(&app, stalled(&r, Some(2001))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    // Bad timestamp: also before the body.
    let mut r = Req::signed(EVENT);
    r.ts = Some("12".into());
    let (status, body) = answer_without_body(&app, stalled(&r, None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "timestamp");
    assert_eq!(app.state.metrics.ingest_inflight_bytes.get(), 0);
    assert_eq!(app.stored().await, 0);
}

#[tokio::test]
async fn a_stalled_body_times_out_with_408_and_frees_its_bytes() {
    let app = InProcess::new(&["--body-read-timeout-sec", "1"]).await;
    let (status, body) = answer_without_body(&app, stalled(&Req::signed(EVENT), Some(500))).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
    assert_eq!(body["error"], "timeout");
    assert_eq!(app.state.metrics.ingest_inflight_bytes.get(), 0);
}

#[tokio::test]
async fn bytes_in_flight_are_bounded_503_with_retry_after() {
    let app = InProcess::new(&["--max-body-bytes", "2000", "--max-inflight-bytes", "3000"]).await;
    // One keyed sender holds 2000 bytes of permits with a body it does not finish.
    let holder = {
        let router = app.router();
        let req = stalled(&Req::signed(EVENT), Some(2000));
        tokio::spawn(async move { router.oneshot(req).await })
    };
    while app.state.metrics.ingest_inflight_bytes.get() < 2000 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Another batch without Content-Length would need the whole limit: 503.
    let req = stalled(&Req::signed(EVENT), None);
    let resp = app.router().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        resp.headers().get("retry-after").unwrap().to_str().unwrap(),
        "1"
    );
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["error"], "overloaded");
    // A small one still fits; once the holder goes, everything is free again.
    let (status, body, _) = send(&app, &Req::signed(EVENT)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    holder.abort();
    let _ = holder.await;
    while app.state.metrics.ingest_inflight_bytes.get() != 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(app.state.admission.available(), 3000);
}

#[tokio::test]
async fn events_per_batch_are_capped_with_413() {
    let app = InProcess::new(&["--max-batch-events", "10"]).await;
    let r = Req::signed(&"{}\n".repeat(11).into_bytes());
    let err = refused(&app, &r, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("MESHAUDIT_MAX_BATCH_EVENTS"));
    let mut r = Req::signed(format!("[{}{{}}]", "{},".repeat(10)).as_bytes());
    r.content_type = Some("application/json");
    refused(&app, &r, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
    let body = crate::support::ndjson_events("cap", 10);
    let (status, answer, _) = send(&app, &Req::signed(&body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 10);
}

/// Issue 17 item 1: a body the filter nested 127 levels deep inside an event
/// (2–3 levels further in) is one bad line, and the answer names it so the
/// filter can re-send the batch without it.
#[tokio::test]
async fn a_too_deep_event_is_named_by_its_line() {
    let app = InProcess::new(&[]).await;
    let deep = format!("{}1{}", "[".repeat(127), "]".repeat(127));
    let bad =
        format!("{{\"id\":\"deep\",\"eventdata\":{{\"requestpayload\":{{\"_value\":{deep}}}}}}}");
    let body = format!("{{\"id\":\"a\"}}\n{bad}\n{{\"id\":\"b\"}}\n");
    let err = refused(
        &app,
        &Req::signed(body.as_bytes()),
        StatusCode::BAD_REQUEST,
        "malformed",
    )
    .await;
    assert_eq!(err["line"], 2, "{err}");
    // The same batch as a JSON array: the element index.
    let arr = format!("[{{\"id\":\"a\"}},{bad},{{\"id\":\"b\"}}]");
    let mut r = Req::signed(arr.as_bytes());
    r.content_type = Some("application/json");
    let err = refused(&app, &r, StatusCode::BAD_REQUEST, "malformed").await;
    assert_eq!(err["line"], 1, "{err}");
    // Re-sent without it: the others are stored.
    let (status, answer, _) = send(&app, &Req::signed(b"{\"id\":\"a\"}\n{\"id\":\"b\"}\n")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 2);
}

/// Issue 17 item 7: `sha256:` ids are the event's own hash or nothing, and
/// ids are stored exactly (NUL refused rather than mapped).
#[tokio::test]
async fn derived_ids_cannot_be_squatted_and_ids_are_exact() {
    use meshaudit_event::integrity::event_hash;
    let app = InProcess::new(&[]).await;
    let victim = b"{\"event\":\"ping\",\"request_id\":\"demo-1\"}";
    let Value::Object(m) = parse(victim).unwrap() else {
        unreachable!()
    };
    let victim_id = format!("sha256:{}", event_hash(&m));
    let squat = format!("{{\"id\":\"{victim_id}\",\"event\":\"squat\"}}\n");
    let err = refused(
        &app,
        &Req::signed(squat.as_bytes()),
        StatusCode::BAD_REQUEST,
        "malformed",
    )
    .await;
    assert_eq!(err["line"], 1);
    assert!(
        err["message"].as_str().unwrap().contains("sha256:"),
        "{err}"
    );
    // The id-less event still gets its derived id.
    let mut body = victim.to_vec();
    body.push(b'\n');
    let (status, answer, _) = send(&app, &Req::signed(&body)).await;
    assert_eq!(
        (status, answer["accepted"].clone()),
        (StatusCode::OK, 1.into())
    );
    let stored: String = sqlx::query_scalar("SELECT id FROM events")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(stored, victim_id);
    // NUL would collide with U+FFFD in a TEXT column: refused, naming the line.
    let (status, err, _) = send(
        &app,
        &Req::signed(b"{\"id\":\"ok\"}\n{\"id\":\"a\\u0000b\"}\n"),
    )
    .await;
    assert_eq!(
        (status, err["line"].clone()),
        (StatusCode::BAD_REQUEST, 2.into()),
        "{err}"
    );
    assert_eq!(app.stored().await, 1, "nothing of the refused batch");
    let (status, answer, _) = send(&app, &Req::signed(b"{\"id\":\"a\\ufffdb\"}\n")).await;
    assert_eq!(
        (status, answer["accepted"].clone()),
        (StatusCode::OK, 1.into())
    );
}

/// Issue 17 item 6: without required keys the bucket is the peer, not the
/// header a client can rotate.
#[tokio::test]
async fn rate_limit_keys_on_identity_not_on_the_header() {
    let app = InProcess::new(&["--require-api-key", "0", "--rate-limit-rps", "1"]).await;
    let from = |peer: &str, key: &str| {
        let mut r = Req::signed(EVENT);
        r.api_key = Some(key.to_owned());
        let mut req = r.build();
        let addr: std::net::SocketAddr = peer.parse().unwrap();
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
        req
    };
    let mut statuses = Vec::new();
    for i in 0..4 {
        let resp = app
            .router()
            .oneshot(from("10.0.0.1:1000", &format!("rotating-{i}")))
            .await
            .unwrap();
        statuses.push(resp.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ],
        "burst 2, then limited whatever X-API-Key says"
    );
    let resp = app
        .router()
        .oneshot(from("10.0.0.2:1000", "x"))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "another peer has its own bucket"
    );
}

/// Issue 17 item 4: sources are validated and bounded.
#[tokio::test]
async fn sources_are_validated_and_bounded() {
    let app = InProcess::new(&["--max-sources", "2"]).await;
    for source in [
        "shop/api-1",
        "shop/api-2",
        "shop/api-3",
        "Not A Source",
        "x/../../y",
    ] {
        let mut req = Req::signed(EVENT).build();
        req.headers_mut()
            .insert("x-meshaudit-source", source.parse().unwrap());
        req.headers_mut()
            .insert("x-meshaudit-dropped", "3".parse().unwrap());
        let resp = app.router().oneshot(req).await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "a bad source header never costs the batch"
        );
    }
    let text = app.state.metrics.render();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("audit_source_last_seen_timestamp_seconds{"))
        .collect();
    assert_eq!(series.len(), 2, "{text}");
    assert!(text.contains("source=\"shop/api-3\""), "{text}");
    assert!(
        !text.contains("shop/api-1"),
        "the least recent is forgotten: {text}"
    );
    assert_eq!(app.state.metrics.sources_invalid.get(), 2);
}
