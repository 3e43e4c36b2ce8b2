//! SPEC §10 workload keys end to end, in a real Envoy running the built
//! filter against the built collector:
//!
//! - a signed batch is accepted, each stored event links to its batch record,
//!   and Python `cryptography` verifies the stored batch signature from the
//!   public key, the §10 bytes and event hashes it recomputes from the stored
//!   events (none of meshaudit's code involved);
//! - an event altered in transit (by a proxy holding the HMAC secret, which it
//!   re-signs), a wrong key, a retired key and a key scoped to another
//!   namespace are refused `401 batch_signature`: nothing stored, the filter
//!   counts the rejection, the collector counts `batch_signature`;
//! - rotation under traffic: key 2 registered, sidecars rolled, key 1 retired
//!   at T: no event lost, batches signed with key 1 after T refused, batches
//!   signed with key 1 before T still verify offline;
//! - the registry refuses bad keys (`400`) and a missing or wrong admin token (`401`).
//!
//! Keys are made by Python `cryptography` from fixed seeds (SPEC §9 text forms).

mod filter_support;

use anyhow::{bail, Context, Result};
use filter_support::*;
use meshaudit_e2e::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const ADMIN: &str = "test-admin-token";

/// A signer and verifier key pair in the §9 text forms, from Python.
struct KeyPair {
    signer: String,
    verifier: String,
    /// base64 of the 32 public bytes.
    public_b64: String,
}

fn keypair(name: &str, seed_byte: u8) -> Result<KeyPair> {
    let script = r#"
import base64, hashlib, sys
from cryptography.hazmat.primitives import serialization as s
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
name, seed = sys.stdin.read().split()
seed = bytes([int(seed)]) * 32
pub = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)
kid = hashlib.sha256(name.encode() + b"\n\x01" + pub).digest()[:4].hex()
print("PRIVATE+KEY+%s+%s+%s" % (name, kid, base64.b64encode(b"\x01" + seed).decode()))
print("%s+%s+%s" % (name, kid, base64.b64encode(b"\x01" + pub).decode()))
print(base64.b64encode(pub).decode())
"#;
    let out = python_crypto(script, format!("{name} {seed_byte}").as_bytes())?;
    let lines: Vec<&str> = out.lines().collect();
    let [signer, verifier, public_b64] = lines[..] else {
        bail!("keygen printed {out:?}");
    };
    Ok(KeyPair {
        signer: signer.into(),
        verifier: verifier.into(),
        public_b64: public_b64.into(),
    })
}

/// [`run_python`] for a script that needs Python `cryptography`.
fn python_crypto(script: &str, stdin: &[u8]) -> Result<String> {
    run_python(script, stdin).context("python `cryptography` comes from `make setup`")
}

/// The collector with the registry open to `ADMIN` and batch signatures required.
async fn collector(extra: &[(&str, &str)]) -> Result<Collector> {
    let mut env: Vec<(String, String)> = vec![
        ("MESHAUDIT_ADMIN_TOKEN".into(), ADMIN.into()),
        ("AUDIT_RECEIVER_REQUIRE_BATCH_SIGNATURE".into(), "1".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| ((*k).into(), (*v).into())));
    Collector::start(CollectorOptions { env, port: None }).await
}

async fn admin_call(
    c: &Collector,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let mut req = http_client().request(method, c.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

async fn register(c: &Collector, body: Value) -> Result<Value> {
    let (status, answer) = admin_call(
        c,
        reqwest::Method::POST,
        "/v1/admin/keys",
        Some(ADMIN),
        Some(body),
    )
    .await?;
    if status != 201 {
        bail!("registration answered {status}: {answer}");
    }
    Ok(answer)
}

/// Every stored item, with the admin token.
async fn items(c: &Collector) -> Result<Vec<Value>> {
    let (status, page) = admin_call(
        c,
        reqwest::Method::GET,
        "/v1/events?limit=1000",
        Some(ADMIN),
        None,
    )
    .await?;
    if status != 200 {
        bail!("GET /v1/events: {status} {page}");
    }
    Ok(page["events"].as_array().cloned().unwrap_or_default())
}

async fn wait_items(c: &Collector, n: usize) -> Result<Vec<Value>> {
    let got = wait_for(&format!("{n} stored events"), WAIT, || async {
        let it = items(c).await.ok()?;
        (it.len() >= n).then_some(it)
    })
    .await;
    match got {
        Ok(_) => {
            tokio::time::sleep(Duration::from_millis(800)).await;
            items(c).await
        }
        Err(e) => bail!("{e}; collector log:\n{}", c.log()),
    }
}

/// `GET /v1/events/{id}`.
async fn one(c: &Collector, id: &str) -> Result<Value> {
    let (status, item) = admin_call(
        c,
        reqwest::Method::GET,
        &format!("/v1/events/{id}"),
        Some(ADMIN),
        None,
    )
    .await?;
    if status != 200 {
        bail!("GET /v1/events/{id}: {status} {item}");
    }
    Ok(item)
}

/// `audit_events_rejected_total{reason="batch_signature"}` of the collector.
async fn rejected_batch_signature(c: &Collector) -> Result<i64> {
    let text = http_client()
        .get(c.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find(|l| l.starts_with("audit_events_rejected_total{reason=\"batch_signature\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as i64)
        .unwrap_or(0))
}

async fn envoy_signing(upstream: &Upstream, collector_port: u16, signer: &str) -> Result<Envoy> {
    let opts = options(
        upstream.port,
        collector_port,
        json!({"batch_signing_key": signer, "batch_max_events": 4, "retries": 1}),
    )?;
    start_envoy(&opts, &[]).await
}

async fn traffic(envoy: &Envoy, prefix: &str, n: usize) -> Result<()> {
    for i in 0..n {
        let resp = http_client()
            .get(envoy.url(&format!("/{prefix}/{i}")))
            .send()
            .await?;
        assert_eq!(resp.status().as_u16(), 200, "traffic is never touched");
    }
    Ok(())
}

/// Independent check (Python `cryptography`, no meshaudit code): the batch
/// record's signature over the §10 bytes, with event hashes recomputed from
/// the stored events of the batch (in `seq` order).
fn python_verifies(public_b64: &str, batch: &Value, stored_events: &[Value]) -> Result<String> {
    let script = r#"
import base64, hashlib, json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
d = json.load(sys.stdin)
b = d["batch"]
canon = lambda v: json.dumps(v, sort_keys=True, separators=(",", ":"))
hashes = [hashlib.sha256(canon({k: v for k, v in e.items() if k != "security"}).encode()).hexdigest()
          for e in d["events"]]
assert hashes == b["event_hashes"], ("recomputed", hashes, "recorded", b["event_hashes"])
digest = hashlib.sha256(b"".join(bytes.fromhex(h) for h in hashes)).hexdigest()
msg = ("meshaudit-batch-v1\n%s\n%s\n%d\n%s\n" % (b["keyid"], b["source"], b["batch_seq"], digest)).encode()
Ed25519PublicKey.from_public_bytes(base64.b64decode(d["public_key"])).verify(base64.b64decode(b["signature"]), msg)
print("verified", len(hashes))
"#;
    let input = json!({"public_key": public_b64, "batch": batch, "events": stored_events});
    run_python(script, input.to_string().as_bytes())
}

/// The stored events that link to the same batch record as `item`, in `seq` order.
async fn batch_and_events(
    c: &Collector,
    all: &[Value],
    item: &Value,
) -> Result<(Value, Vec<Value>)> {
    let first = one(c, item["id"].as_str().unwrap_or_default()).await?;
    let batch = first["batch"].clone();
    if !batch.is_object() {
        bail!("no batch object on {first}");
    }
    let mut members = Vec::new();
    for it in all {
        let full = one(c, it["id"].as_str().unwrap_or_default()).await?;
        if full["batch"]["signature"] == batch["signature"] {
            members.push((full["seq"].as_i64().unwrap_or(0), full["event"].clone()));
        }
    }
    members.sort_by_key(|(seq, _)| *seq);
    Ok((batch, members.into_iter().map(|(_, e)| e).collect()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_batches_are_stored_linked_and_verify_independently() -> Result<()> {
    signed_batches(&[]).await
}

/// The same on PostgreSQL (a fresh database, dropped after), plus the
/// registry's append-only triggers refusing a direct change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_batches_on_postgresql_and_the_registry_is_append_only() -> Result<()> {
    let server = std::env::var("MESHAUDIT_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let base = server
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap_or(server.clone());
    let db = format!("meshaudit_wk_{}_{}", std::process::id(), free_port()?);
    psql(&server, &format!("CREATE DATABASE {db}"))?;
    let url = format!("{base}/{db}");
    let result = async {
        signed_batches(&[("DATABASE_URL", url.as_str())]).await?;
        for sql in [
            "UPDATE workload_keys SET namespaces = '[]'",
            "DELETE FROM workload_keys",
            "DELETE FROM batch_records",
            "UPDATE event_batches SET batch_id = batch_id",
        ] {
            let err = psql(&url, sql)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("append-only"), "{sql}: {err}");
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    let _ = psql(
        &server,
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    );
    result
}

/// Runs one statement with `psql` (Debian's postgresql-client, from `make setup`).
fn psql(url: &str, sql: &str) -> Result<()> {
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .context("running psql (install postgresql-client: make setup)")?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

async fn signed_batches(extra_env: &[(&str, &str)]) -> Result<()> {
    let c = collector(extra_env).await?;
    let k = keypair("shop-k1", 11)?;
    register(&c, json!({"keyid": "shop-k1", "algorithm": "ed25519", "public_key": k.verifier, "namespaces": [NAMESPACE]})).await?;
    let upstream = Upstream::start().await?;
    let mut envoy = envoy_signing(&upstream, c.port, &k.signer).await?;
    traffic(&envoy, "orders", 6).await?;
    let all = wait_items(&c, 6).await?;
    assert_eq!(all.len(), 6, "every event stored once");
    for it in &all {
        let full = one(&c, it["id"].as_str().unwrap_or_default()).await?;
        let batch = &full["batch"];
        assert_eq!(batch["keyid"], "shop-k1", "{full}");
        assert_eq!(batch["source"], format!("{NAMESPACE}/{POD}"));
        let hash = full["event"]["security"]["hash"]
            .as_str()
            .unwrap_or_default();
        let hashes: Vec<&str> = batch["event_hashes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            hashes.contains(&hash),
            "the event's hash is among its batch's: {full}"
        );
    }
    let (batch, events) = batch_and_events(&c, &all, &all[0]).await?;
    let out = python_verifies(&k.public_b64, &batch, &events)?;
    assert!(out.starts_with("verified"), "{out}");
    verify_offline_with_the_batch_key(&c, &all[0], &k).await?;
    // The listing holds the key with its verifier text.
    let (status, list) = admin_call(
        &c,
        reqwest::Method::GET,
        "/v1/admin/keys",
        Some(ADMIN),
        None,
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(list["keys"][0]["verifier_key"], k.verifier.as_str());
    assert_eq!(rejected_batch_signature(&c).await?, 0);
    assert_healthy(&mut envoy);
    assert!(
        !envoy
            .log()
            .contains(k.signer.rsplit('+').next().unwrap_or("!")),
        "the signer key is never logged"
    );
    Ok(())
}

/// A proxy between Envoy and the collector that changes `from` into `to` in
/// the batch body and, holding the HMAC secret as the collector's operator
/// does, re-signs `X-Signature` over the altered body (seed 000's scheme).
/// It keeps the collector's answers.
struct TamperingProxy {
    port: u16,
    answers: Arc<Mutex<Vec<(u16, String)>>>,
}

impl TamperingProxy {
    async fn start(collector_port: u16, from: &'static str, to: &'static str) -> Result<Self> {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, StatusCode};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let answers: Arc<Mutex<Vec<(u16, String)>>> = Arc::default();
        let seen = answers.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            async move {
                let altered = String::from_utf8_lossy(&body).replace(from, to);
                let ts = headers
                    .get("x-signature-ts")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0")
                    .to_owned();
                // The secret on the first line, then what it signs.
                let signed = format!(
                    "{}\n{ts}.{altered}",
                    meshaudit_e2e::collector::TEST_SIGNING_SECRET
                );
                let sig = tokio::task::spawn_blocking(move || {
                    run_python(
                        "import hmac,hashlib,sys; k, _, m = sys.stdin.buffer.read().partition(b'\\n'); print('sha256=' + hmac.new(k, m, hashlib.sha256).hexdigest())",
                        signed.as_bytes(),
                    )
                })
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
                let mut req = http_client()
                    .post(format!("http://127.0.0.1:{collector_port}/v1/events"))
                    .header("x-signature", sig.trim())
                    .body(altered);
                for (k, v) in &headers {
                    if !matches!(
                        k.as_str(),
                        "host" | "content-length" | "x-signature" | "x-signature-scheme"
                    ) {
                        req = req.header(k, v);
                    }
                }
                let (status, body) = match req.send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        (status, r.text().await.unwrap_or_default())
                    }
                    Err(e) => (502, e.to_string()),
                };
                if let Ok(mut s) = seen.lock() {
                    s.push((status, body.clone()));
                }
                (
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                    body,
                )
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { port, answers })
    }

    fn answers(&self) -> Vec<(u16, String)> {
        self.answers.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

/// One refused case: traffic through an Envoy signing with `signer` to
/// `port`; the filter counts the rejection, nothing is stored.
async fn assert_refused(
    c: &Collector,
    upstream: &Upstream,
    port: u16,
    signer: &str,
    what: &str,
) -> Result<()> {
    let before = rejected_batch_signature(c).await?;
    let mut envoy = envoy_signing(upstream, port, signer).await?;
    traffic(&envoy, what, 3).await?;
    let dropped = wait_stat(&envoy, "meshaudit_events_dropped_rejected", 3, WAIT)
        .await
        .with_context(|| {
            format!(
                "{what}: the filter counts the refusal; collector log:\n{}",
                c.log()
            )
        })?;
    assert_eq!(dropped, 3, "{what}");
    assert_eq!(stat(&envoy, "meshaudit_batches_ok").await?, 0, "{what}");
    assert!(items(c).await?.is_empty(), "{what}: nothing stored");
    assert!(
        rejected_batch_signature(c).await? >= before + 3,
        "{what}: counted as batch_signature"
    );
    assert_healthy(&mut envoy);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_wrong_retired_and_out_of_scope_batches_are_refused() -> Result<()> {
    let c = collector(&[]).await?;
    let upstream = Upstream::start().await?;
    let good = keypair("shop-good", 21)?;
    let impostor = keypair("shop-good", 22)?; // same name, another key
    let retired = keypair("shop-retired", 23)?;
    let billing = keypair("billing-k1", 24)?;
    for (k, ns) in [
        (&good, NAMESPACE),
        (&retired, NAMESPACE),
        (&billing, "billing"),
    ] {
        let keyid = k.verifier.split('+').next().unwrap_or_default();
        register(&c, json!({"keyid": keyid, "algorithm": "ed25519", "public_key": k.public_b64, "namespaces": [ns]})).await?;
    }
    let (status, answer) = admin_call(
        &c,
        reqwest::Method::POST,
        "/v1/admin/keys/shop-retired/retire",
        Some(ADMIN),
        Some(json!({})),
    )
    .await?;
    assert_eq!(status, 200, "{answer}");

    // Every event's path is changed in transit, whatever the batching.
    let proxy =
        TamperingProxy::start(c.port, "/altered-in-transit/", "/altered-in-transiT/").await?;
    assert_refused(
        &c,
        &upstream,
        proxy.port,
        &good.signer,
        "altered-in-transit",
    )
    .await?;
    assert_refused(&c, &upstream, c.port, &impostor.signer, "wrong-key").await?;
    assert_refused(&c, &upstream, c.port, &retired.signer, "retired-key").await?;
    assert_refused(&c, &upstream, c.port, &billing.signer, "other-namespace").await?;

    // The collector's answers the proxy relayed: SPEC §10's refusal.
    let answers = proxy.answers();
    assert!(!answers.is_empty());
    for (status, body) in answers {
        assert_eq!(status, 401, "{body}");
        let body: Value = serde_json::from_str(&body)?;
        assert_eq!(body["error"], "batch_signature", "{body}");
    }

    // The good key through the same collector, untouched: stored.
    let mut envoy = envoy_signing(&upstream, c.port, &good.signer).await?;
    traffic(&envoy, "untouched", 2).await?;
    assert_eq!(wait_items(&c, 2).await?.len(), 2);
    assert_healthy(&mut envoy);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_traffic_loses_nothing_and_old_batches_still_verify() -> Result<()> {
    let c = collector(&[]).await?;
    let upstream = Upstream::start().await?;
    let k1 = keypair("shop-2026a", 31)?;
    let k2 = keypair("shop-2026b", 32)?;
    let reg = |k: &KeyPair, id: &str| json!({"keyid": id, "algorithm": "ed25519", "public_key": k.verifier, "namespaces": [NAMESPACE]});
    register(&c, reg(&k1, "shop-2026a")).await?;

    // Traffic on key 1.
    let mut old = envoy_signing(&upstream, c.port, &k1.signer).await?;
    traffic(&old, "before", 5).await?;
    wait_items(&c, 5).await?;

    // 1. register key 2; 2. roll the sidecars while traffic goes on through both.
    register(&c, reg(&k2, "shop-2026b")).await?;
    let mut new = envoy_signing(&upstream, c.port, &k2.signer).await?;
    let (a, b) = tokio::join!(
        traffic(&old, "during-old", 5),
        traffic(&new, "during-new", 5)
    );
    a?;
    b?;
    let stored = wait_items(&c, 15).await?;
    assert_eq!(stored.len(), 15, "no event lost during the roll");
    old.terminate(Duration::from_secs(5));

    // 3. retire key 1 at T: a sidecar still on key 1 is refused after T.
    let (status, answer) = admin_call(
        &c,
        reqwest::Method::POST,
        "/v1/admin/keys/shop-2026a/retire",
        Some(ADMIN),
        Some(json!({})),
    )
    .await?;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["not_after"].is_string(), "{answer}");
    let mut stale = envoy_signing(&upstream, c.port, &k1.signer).await?;
    traffic(&stale, "after-retire", 2).await?;
    wait_stat(&stale, "meshaudit_events_dropped_rejected", 2, WAIT).await?;
    traffic(&new, "after-new", 3).await?;
    let all = wait_items(&c, 18).await?;
    assert_eq!(
        all.len(),
        18,
        "key 2 keeps flowing; key 1 after T stored nothing"
    );
    assert!(all.iter().all(|i| !i["event"]["action"]["name"]
        .as_str()
        .unwrap_or("")
        .starts_with("/after-retire")));

    // Events signed with key 1 before T still verify offline from its public key.
    let before_t = all
        .iter()
        .find(|i| {
            i["event"]["action"]["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("/before")
        })
        .context("an event from before the rotation")?;
    let (batch, events) = batch_and_events(&c, &all, before_t).await?;
    assert_eq!(batch["keyid"], "shop-2026a");
    let out = python_verifies(&k1.public_b64, &batch, &events)?;
    assert!(out.starts_with("verified"), "{out}");
    assert_healthy(&mut new);
    assert_healthy(&mut stale);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_refuses_bad_keys_and_bad_tokens() -> Result<()> {
    let c = collector(&[]).await?;
    let k = keypair("reg-k1", 41)?;
    let body = |public_key: &str, algorithm: &str| json!({"keyid": "reg-k1", "algorithm": algorithm, "public_key": public_key});
    let post = reqwest::Method::POST;
    for token in [None, Some("wrong-token")] {
        let (status, answer) = admin_call(
            &c,
            post.clone(),
            "/v1/admin/keys",
            token,
            Some(body(&k.public_b64, "ed25519")),
        )
        .await?;
        assert_eq!(status, 401, "{token:?}: {answer}");
        let (status, _) =
            admin_call(&c, reqwest::Method::GET, "/v1/admin/keys", token, None).await?;
        assert_eq!(status, 401);
        let (status, _) = admin_call(
            &c,
            post.clone(),
            "/v1/admin/keys/reg-k1/retire",
            token,
            None,
        )
        .await?;
        assert_eq!(status, 401);
    }
    for (public_key, algorithm, why) in [
        ("AAAA", "ed25519", "32 bytes"),
        ("not base64 at all!", "ed25519", "base64"),
        (k.public_b64.as_str(), "rsa-pss", "ed25519"),
    ] {
        let (status, answer) = admin_call(
            &c,
            post.clone(),
            "/v1/admin/keys",
            Some(ADMIN),
            Some(body(public_key, algorithm)),
        )
        .await?;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"], "bad_key");
        assert!(
            answer["message"].as_str().unwrap_or("").contains(why),
            "{answer}"
        );
    }
    assert_eq!(
        register(&c, body(&k.verifier, "ed25519")).await?["keyid"],
        "reg-k1"
    );
    // The same key again is no change (a re-run registration Job)…
    let (status, _) = admin_call(
        &c,
        post.clone(),
        "/v1/admin/keys",
        Some(ADMIN),
        Some(body(&k.public_b64, "ed25519")),
    )
    .await?;
    assert_eq!(status, 200);
    // …another key under the same keyid is refused: keys are never changed.
    let other = keypair("reg-k1", 42)?;
    let (status, answer) = admin_call(
        &c,
        post.clone(),
        "/v1/admin/keys",
        Some(ADMIN),
        Some(body(&other.public_b64, "ed25519")),
    )
    .await?;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or("")
            .contains("already registered"),
        "{answer}"
    );
    let (status, _) = admin_call(
        &c,
        post.clone(),
        "/v1/admin/keys/nobody/retire",
        Some(ADMIN),
        None,
    )
    .await?;
    assert_eq!(status, 404);
    let (status, first) = admin_call(
        &c,
        post.clone(),
        "/v1/admin/keys/reg-k1/retire",
        Some(ADMIN),
        Some(json!({"not_after": "2030-01-01T00:00:00Z"})),
    )
    .await?;
    assert_eq!(status, 200, "{first}");
    let (status, _) = admin_call(
        &c,
        post.clone(),
        "/v1/admin/keys/reg-k1/retire",
        Some(ADMIN),
        Some(json!({"not_after": "2031-01-01T00:00:00Z"})),
    )
    .await?;
    assert_eq!(status, 409, "a retirement is never changed");
    Ok(())
}

/// Seed 001 publishers sign each event: `security.alg = "ed25519"` events are
/// verified with the registry (`unknown_key` for a key it does not hold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_event_ed25519_signatures_are_verified_with_the_registry() -> Result<()> {
    let c = collector(&[("AUDIT_RECEIVER_REQUIRE_BATCH_SIGNATURE", "0")]).await?;
    let k = keypair("billing-publisher", 51)?;
    register(
        &c,
        json!({"keyid": "billing-publisher", "algorithm": "ed25519", "public_key": k.verifier}),
    )
    .await?;
    // Three events sealed by Python: good, signed by a key the registry does not
    // hold, and with a signature over another hash; then the HMAC batch headers.
    let script = r#"
import base64, hashlib, hmac, json, sys, time
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
good = Ed25519PrivateKey.from_private_bytes(bytes([51]) * 32)
other = Ed25519PrivateKey.from_private_bytes(bytes([52]) * 32)
canon = lambda v: json.dumps(v, sort_keys=True, separators=(",", ":"))
lines = []
for eid, keyid, key, tamper in [("e-good", "billing-publisher", good, False),
                                ("e-unknown", "nobody", other, False),
                                ("e-bad", "billing-publisher", good, True)]:
    ev = {"id": eid, "specversion": "1.0", "action": {"name": "/invoices"}}
    h = hashlib.sha256(canon(ev).encode()).hexdigest()
    signed = ("0" * 64) if tamper else h
    sig = base64.b64encode(key.sign(signed.encode())).decode()
    ev["security"] = {"alg": "ed25519", "keyid": keyid, "hash": h, "signature": sig}
    lines.append(canon(ev))
body = "\n".join(lines) + "\n"
ts = str(int(time.time()))
mac = hmac.new(sys.stdin.read().encode(), (ts + "." + body).encode(), hashlib.sha256).hexdigest()
print(json.dumps({"body": body, "ts": ts, "sig": "sha256=" + mac}))
"#;
    let out = python_crypto(
        script,
        meshaudit_e2e::collector::TEST_SIGNING_SECRET.as_bytes(),
    )?;
    let req: Value = serde_json::from_str(out.trim())?;
    let post = |c: &Collector| {
        http_client()
            .post(c.url("/v1/events"))
            .header("content-type", "application/x-ndjson")
            .header("x-api-key", meshaudit_e2e::collector::TEST_API_KEY)
            .header("x-signature-ts", req["ts"].as_str().unwrap_or_default())
            .header("x-signature", req["sig"].as_str().unwrap_or_default())
            .body(req["body"].as_str().unwrap_or_default().to_owned())
            .send()
    };
    let resp = post(&c).await?;
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 3, "{answer}");
    let good = one(&c, "e-good").await?;
    assert_eq!(good["verified"], true, "{good}");
    let unknown = one(&c, "e-unknown").await?;
    assert_eq!(unknown["verified"], false, "{unknown}");
    assert_eq!(unknown["verify_reason"], "unknown_key");
    let bad = one(&c, "e-bad").await?;
    assert_eq!(bad["verified"], false, "{bad}");
    assert_eq!(bad["verify_reason"], "bad_signature");
    assert!(
        good.get("batch").is_none(),
        "no batch signature, no batch record: {good}"
    );
    // Under AUDIT_RECEIVER_REJECT_UNVERIFIED the same batch is refused, naming its lines.
    let strict = collector(&[
        ("AUDIT_RECEIVER_REQUIRE_BATCH_SIGNATURE", "0"),
        ("AUDIT_RECEIVER_REJECT_UNVERIFIED", "1"),
    ])
    .await?;
    register(
        &strict,
        json!({"keyid": "billing-publisher", "algorithm": "ed25519", "public_key": k.verifier}),
    )
    .await?;
    let resp = post(&strict).await?;
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await?;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["lines"], json!([2, 3]), "{answer}");
    assert!(items(&strict).await?.is_empty(), "nothing stored");
    Ok(())
}

/// `verify-offline … --batch-key VKEY --batch ANSWER` (SPEC §9, §10) on one
/// stored event, from files only: valid with the workload's key, invalid
/// (exit 1, naming the check) with another key under the same name.
async fn verify_offline_with_the_batch_key(c: &Collector, item: &Value, k: &KeyPair) -> Result<()> {
    let id = item["id"].as_str().unwrap_or_default();
    let seq = item["seq"].as_i64().unwrap_or(i64::MAX);
    let client = http_client();
    let get = |path: String| {
        let req = client.get(c.url(&path)).bearer_auth(ADMIN);
        async move {
            let r = req.send().await.ok()?;
            if r.status().as_u16() != 200 {
                return None;
            }
            r.text().await.ok()
        }
    };
    // A checkpoint that covers the event, and the inclusion proof at its size.
    let (checkpoint, proof) = wait_for("a checkpoint covering the event", WAIT, || async {
        let cp = get("/v1/log/checkpoint".into()).await?;
        let size: i64 = cp.lines().nth(1)?.parse().ok()?;
        if size < seq {
            return None;
        }
        let proof = get(format!("/v1/log/inclusion?id={id}&size={size}")).await?;
        Some((cp, proof))
    })
    .await?;
    let log_key = get("/v1/log/key".into()).await.context("GET /v1/log/key")?;
    let canonical = get(format!("/v1/events/{id}/canonical"))
        .await
        .context("GET /v1/events/{id}/canonical")?;
    let answer = get(format!("/v1/events/{id}"))
        .await
        .context("GET /v1/events/{id}")?;
    let dir = tempfile::tempdir()?;
    let file = |name: &str, text: &str| -> Result<String> {
        let p = dir.path().join(name);
        std::fs::write(&p, text)?;
        Ok(p.display().to_string())
    };
    let (cp, ev, pr, ans) = (
        file("checkpoint", &checkpoint)?,
        file("event.json", &canonical)?,
        file("proof.json", &proof)?,
        file("answer.json", &answer)?,
    );
    let run = |batch_key: &str| -> Result<std::process::Output> {
        Ok(std::process::Command::new(Collector::binary()?)
            .args([
                "verify-offline",
                "--key",
                log_key.trim(),
                "--checkpoint",
                &cp,
            ])
            .args([
                "--event",
                &ev,
                "--proof",
                &pr,
                "--batch-key",
                batch_key,
                "--batch",
                &ans,
            ])
            .output()?)
    };
    let ok = run(&k.verifier)?;
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains("OK: batch signature by shop-k1"),
        "{stdout}"
    );
    let impostor = keypair("shop-k1", 99)?;
    let bad = run(&impostor.verifier)?;
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("INVALID: batch signature"), "{stdout}");
    Ok(())
}
