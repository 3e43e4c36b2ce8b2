//! What the filter captures, checked in a real Envoy against the real collector:
//! every SPEC §4 field of a JSON POST, body caps with evidence of the whole body,
//! redaction (mask and hmac), local replies and client resets, skip paths,
//! sampling, `enabled: false` and refused configurations.

mod filter_support;

use filter_support::*;
use meshaudit_e2e::*;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
        && s.bytes()
            .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

fn is_rfc3339_micros_utc(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() == 32
        && ts.ends_with("+00:00")
        && b[10] == b'T'
        && b[19] == b'.'
        && b[20..26].iter().all(u8::is_ascii_digit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_post_has_every_field() -> anyhow::Result<()> {
    let collector = Collector::start(CollectorOptions {
        env: vec![(
            "AUDIT_RECEIVER_EVENT_KEYS".into(),
            format!("filter-1={}", meshaudit_e2e::collector::TEST_SIGNING_SECRET),
        )],
        port: None,
    })
    .await?;
    let upstream = Upstream::start().await?;
    let mut opts = options(
        upstream.port,
        collector.port,
        json!({
            "capture_bodies": true,
            "is_sensitive": true,
            "compliance_category": "pci",
            "include_request_headers": ["content-type", "content-length", "user-agent",
                                        "x-request-id", "authorization", "cookie"],
            "event_key_id": "filter-1"
        }),
    )?;
    opts.node_metadata = json!({
        "NAMESPACE": "istio-namespace", "NAME": "istio-pod", "APP_CONTAINERS": "app,istio-proxy",
        "NODE_NAME": "node-1", "WORKLOAD_NAME": "orders", "SERVICE_ACCOUNT": "orders-sa"
    });
    let mut envoy = start_envoy(&opts, &[]).await?;
    let body = r#"{"item":"book","qty":2,"password":"pw","card":{"cvv":"123","last4":"4242"}}"#;
    let resp = http_client()
        .post(envoy.url("/orders/7?token=abc&x=1"))
        .header("content-type", "application/json")
        .header("user-agent", "meshaudit-e2e/1")
        .header("authorization", "Bearer s3cr3t")
        .header("cookie", "session=s3cr3t")
        .header("tenantId", "acme")
        .header("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124")
        .header("x-b3-spanid", "a2fb4a1d1a96d312")
        .header("X-Transaction-Id", "tx-9")
        .header("X-Parent-Service-Span-Id", "parent-1")
        .header("actionLogUserId", "u-1")
        .header("RequesterType", "human")
        .body(body)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    let resp_body = resp.bytes().await?;

    let items = {
        collector.wait_for_events(1, WAIT).await?;
        collector.items().await?
    };
    assert_eq!(items.len(), 1, "{items:#?}");
    let item = &items[0];
    assert_eq!(item["verified"], true, "{item}");
    let e = &item["event"];
    let seen = upstream.requests();
    let rid = seen[0]
        .headers
        .iter()
        .find(|(k, _)| k == "x-request-id")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    let port = envoy.listener_port;

    assert!(is_uuid_v4(e["id"].as_str().unwrap_or("")), "{e}");
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["schemaid"], "meshaudit.http/v1");
    assert!(
        is_rfc3339_micros_utc(e["timestamp"].as_str().unwrap_or("")),
        "{e}"
    );
    assert_eq!(e["tenantid"], "acme");
    assert_eq!(e["traceid"], "463ac35c9f6413ad48485a3953bb6124");
    assert_eq!(e["spanid"], "a2fb4a1d1a96d312");
    assert_eq!(e["transactionid"], "tx-9");
    assert_eq!(e["parentservicespanid"], "parent-1");
    assert_eq!(e["requestid"], rid.as_str());
    assert_eq!(e["httpmethod"], "POST");
    assert_eq!(
        e["httpurl"],
        format!("http://127.0.0.1:{port}/orders/7?token=[REDACTED]&x=1")
    );
    assert_eq!(e["subject"], json!({"userid": "u-1", "type": "human"}));
    assert_eq!(
        e["kubernetes"],
        json!({"namespacename": NAMESPACE, "podname": POD, "containername": "app",
               "nodename": "node-1", "serviceaccount": "orders-sa", "workload": "orders"}),
        "env first, Istio node metadata as the fallback"
    );
    assert_eq!(e["objectref"], json!({"resource": "orders"}));
    assert_eq!(
        e["action"],
        json!({"name": "/orders/7", "method": "POST", "severity": "INFO", "status": "SUCCESS"})
    );
    assert_eq!(
        e["network"],
        json!({"sourceip": "127.0.0.1", "useragent": "meshaudit-e2e/1"})
    );
    assert_eq!(
        e["eventdata"]["requestpayload"],
        json!({"item": "book", "qty": 2, "password": "[REDACTED]",
               "card": {"cvv": "[REDACTED]", "last4": "4242"}})
    );
    let resp_json: Value = serde_json::from_slice(&resp_body)?;
    assert_eq!(e["eventdata"]["responsepayload"], resp_json);
    let md = &e["eventdata"]["metadata"];
    assert_eq!(md["issensitive"], true);
    assert_eq!(md["compliancecategory"], "pci");
    assert_eq!(md["requesttruncated"], false);
    assert_eq!(md["requestbodybytes"], body.len());
    assert_eq!(md["requestbodysha256"], sha256_hex(body.as_bytes())?);
    assert_eq!(md["responsetruncated"], false);
    assert_eq!(md["responsebodybytes"], resp_body.len());
    assert_eq!(md["responsebodysha256"], sha256_hex(&resp_body)?);
    let h = &e["http"];
    assert_eq!(h["statuscode"], 200);
    assert!(h["durationms"].is_u64(), "{h}");
    assert_eq!(h["requestbytes"], body.len());
    assert_eq!(h["responsebytes"], resp_body.len());
    assert_eq!(h["protocol"], "HTTP/1.1");
    assert_eq!(h["authority"], format!("127.0.0.1:{port}"));
    assert_eq!(
        h["requestheaders"],
        json!({"content-type": "application/json", "content-length": body.len().to_string(),
               "user-agent": "meshaudit-e2e/1", "x-request-id": rid,
               "authorization": "[REDACTED]", "cookie": "[REDACTED]"})
    );
    assert_eq!(h["responseheaders"]["content-type"], "application/json");
    assert_eq!(h["upstreamcluster"], "upstream");
    assert_eq!(h["codedetails"], "via_upstream");
    assert!(h.get("responseflags").is_none(), "{h}");
    assert_eq!(e["security"]["keyid"], "filter-1");
    assert!(
        e["security"]["hash"].as_str().map(str::len) == Some(64),
        "{e}"
    );
    assert_healthy(&mut envoy);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_cap_is_cut_flagged_and_hashed_whole() -> anyhow::Result<()> {
    let mut s = Stack::start(json!({"capture_bodies": true, "max_body_bytes": 1024})).await?;
    let body = format!("{{\"data\":\"{}\"}}", "x".repeat(10_000));
    let resp = http_client()
        .post(s.envoy.url("/echo"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.bytes().await?,
        body.as_bytes(),
        "the proxied body is untouched"
    );
    let events = s.collector.wait_for_events(1, WAIT).await?;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    let md = &e["eventdata"]["metadata"];
    let sha = sha256_hex(body.as_bytes())?;
    for side in ["request", "response"] {
        assert_eq!(md[format!("{side}truncated")], true, "{md}");
        assert_eq!(md[format!("{side}bodybytes")], body.len(), "{md}");
        assert_eq!(md[format!("{side}bodysha256")], sha, "{md}");
        assert_eq!(
            e["eventdata"][format!("{side}payload")],
            json!({"_raw": &body[..1024]}),
            "the first max_body_bytes, unparseable once cut"
        );
    }
    assert_eq!(e["http"]["requestbytes"], body.len());
    s.assert_healthy();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_redaction_of_headers_query_and_nested_json() -> anyhow::Result<()> {
    let collector = Collector::start(CollectorOptions::default()).await?;
    let upstream = Upstream::start().await?;
    let opts = options(
        upstream.port,
        collector.port,
        json!({"capture_bodies": true, "redact_mode": "hmac",
               "include_request_headers": ["authorization", "x-api-key"],
               "redact_keys": ["password", "token", "pin"]}),
    )?;
    let mut envoy =
        start_envoy(&opts, &[("AUDIT_FORWARD_REDACTION_KEY", "redaction-key-1")]).await?;
    let body = r#"{"user":{"name":"ann","Password":"hunter2"},"items":[{"token":"hunter2"},{"pin":1234}],"note":"hunter2"}"#;
    let resp = http_client()
        .post(envoy.url("/login?password=hunter2&next=%2Fhome"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer hunter2")
        .header("x-api-key", "hunter2")
        .body(body)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    let events = collector.wait_for_events(1, WAIT).await?;
    let e = &events[0];
    let tag = |v: &str| -> anyhow::Result<String> {
        let out = run_python(
            "import hmac,hashlib,sys; v=sys.stdin.buffer.read(); \
             print('hmac-sha256:'+hmac.new(b'redaction-key-1',v,hashlib.sha256).hexdigest()[:32])",
            v.as_bytes(),
        )?;
        Ok(out.trim().to_owned())
    };
    let secret = tag("hunter2")?;
    let p = &e["eventdata"]["requestpayload"];
    assert_eq!(p["user"]["Password"], secret.as_str(), "{p}");
    assert_eq!(
        p["items"][0]["token"],
        secret.as_str(),
        "equal secrets stay correlatable"
    );
    assert_eq!(
        p["items"][1]["pin"],
        tag("1234")?.as_str(),
        "non-strings: canonical JSON"
    );
    assert_eq!(p["note"], "hunter2", "only listed keys");
    assert_eq!(p["user"]["name"], "ann");
    assert_eq!(
        e["httpurl"],
        format!(
            "http://127.0.0.1:{}/login?password={secret}&next=%2Fhome",
            envoy.listener_port
        )
    );
    assert_eq!(e["http"]["requestheaders"]["x-api-key"], secret.as_str());
    assert_eq!(
        e["http"]["requestheaders"]["authorization"],
        tag("Bearer hunter2")?.as_str()
    );
    assert!(
        !envoy.log().contains("redaction-key-1"),
        "the key never reaches a log"
    );
    assert_healthy(&mut envoy);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_replies_and_client_resets_still_produce_one_event() -> anyhow::Result<()> {
    let mut s = Stack::start(json!({"capture_bodies": true})).await?;
    let resp = http_client()
        .get(s.envoy.url("/local-reply/x"))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 404);

    // an upload the client abandons half-way
    let port = s.envoy.listener_port;
    raw_exchange(
        port,
        b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{\"partial\":",
        Duration::from_millis(300),
    )
    .await?;
    // a client that gives up before the upstream answers
    raw_exchange(
        port,
        b"GET /slow/3000 HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_millis(300),
    )
    .await?;

    let events = s.collector.wait_for_events(3, WAIT).await?;
    assert_eq!(events.len(), 3, "{events:#?}");
    let local = events_at(&events, "/local-reply/x");
    assert_eq!(local.len(), 1);
    assert_eq!(local[0]["http"]["statuscode"], 404);
    assert_eq!(local[0]["http"]["codedetails"], "direct_response");
    assert_eq!(local[0]["action"]["severity"], "WARNING");
    assert_eq!(local[0]["action"]["status"], "FAILURE");

    for path in ["/upload", "/slow/3000"] {
        let ev = events_at(&events, path);
        assert_eq!(ev.len(), 1, "{path}: {events:#?}");
        let e = ev[0];
        assert_eq!(e["http"]["statuscode"], 0, "{e}");
        assert_eq!(e["action"]["severity"], "ERROR", "{e}");
        assert_eq!(e["action"]["status"], "FAILURE", "{e}");
        let flags = e["http"]["responseflags"].as_str().unwrap_or("");
        assert!(
            flags.split(',').any(|f| f == "DC"),
            "downstream termination: {e}"
        );
    }
    let upload = events_at(&events, "/upload")[0];
    assert_eq!(upload["eventdata"]["metadata"]["requestbodybytes"], 11);
    assert_eq!(upload["eventdata"]["metadata"]["requesttruncated"], false);
    s.assert_healthy();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_paths_and_sampling_produce_no_event() -> anyhow::Result<()> {
    let mut s = Stack::start(json!({"skip_paths": ["/internal", "health"]})).await?;
    for path in ["/internal/a", "/api/healthz", "/metrics", "/orders"] {
        let resp = http_client().get(s.envoy.url(path)).send().await?;
        assert_eq!(
            resp.status().as_u16(),
            200,
            "{path}: traffic is never blocked"
        );
    }
    let events = s.collector.wait_for_events(2, WAIT).await?;
    let mut names: Vec<&str> = events
        .iter()
        .filter_map(|e| e["action"]["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["/metrics", "/orders"],
        "a custom list replaces the default"
    );
    assert_eq!(
        wait_stat(&s.envoy, "meshaudit_events_skipped", 2, WAIT).await?,
        2
    );
    s.assert_healthy();

    let mut unsampled = Stack::start(json!({"sample_rate": 0.0})).await?;
    for _ in 0..5 {
        http_client()
            .get(unsampled.envoy.url("/orders"))
            .send()
            .await?;
    }
    wait_stat(&unsampled.envoy, "meshaudit_events_skipped", 5, WAIT).await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(unsampled.collector.events().await?.is_empty());
    assert_eq!(
        stat(&unsampled.envoy, "meshaudit_events_captured").await?,
        0
    );
    unsampled.assert_healthy();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_filter_is_a_pass_through() -> anyhow::Result<()> {
    let mut s = Stack::start(json!({"enabled": false})).await?;
    for _ in 0..3 {
        let resp = http_client()
            .post(s.envoy.url("/echo"))
            .header("content-type", "text/plain")
            .body("hello")
            .send()
            .await?;
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.text().await?, "hello");
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(s.collector.events().await?.is_empty());
    assert_eq!(stat(&s.envoy, "meshaudit_events_captured").await?, 0);
    s.assert_healthy();
    Ok(())
}

#[test]
fn bad_configuration_is_refused_naming_the_key() -> anyhow::Result<()> {
    for (extra, key) in [
        (json!({"batch_max_event": 5}), "batch_max_event"),
        (json!({"sample_rate": 2}), "sample_rate"),
        (json!({"redact_mode": "hmac"}), "redact_mode"),
        (json!({"api_key": 12345678}), "api_key"),
        // SPEC §10: a signer key that does not parse; its text never reaches the log.
        (
            json!({"batch_signing_key": "PRIVATE+KEY+x+00000000+12345678"}),
            "batch_signing_key",
        ),
    ] {
        let opts = options(free_port()?, free_port()?, extra.clone())?;
        let log = envoy_refusing(&opts)?;
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("meshaudit: invalid configuration key"))
            .collect();
        assert_eq!(lines.len(), 1, "one error line for {extra}:\n{log}");
        assert!(lines[0].contains("[error]"), "{}", lines[0]);
        assert!(lines[0].contains(&format!("`{key}`")), "{}", lines[0]);
        assert!(!log.contains("12345678"), "secrets never logged:\n{log}");
    }
    Ok(())
}

const MAKE_JWT: &str = r#"
import base64, json, hmac, hashlib
def b64(b): return base64.urlsafe_b64encode(b).rstrip(b'=').decode()
key = b'jwt-secret-0123456789abcdef0123456789'
h = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
p = b64(json.dumps({"sub": "alice@example.com", "iss": "meshaudit-test", "exp": 4102444800}).encode())
sig = b64(hmac.new(key, (h + '.' + p).encode(), hashlib.sha256).digest())
print(h + '.' + p + '.' + sig)
print(json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "kid": "k1", "k": b64(key)}]}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_comes_from_the_jwt_authn_claim_when_configured() -> anyhow::Result<()> {
    let out = run_python(MAKE_JWT, b"")?;
    let mut lines = out.lines();
    let (token, jwks) = (
        lines.next().unwrap_or_default().to_owned(),
        lines.next().unwrap_or_default().to_owned(),
    );
    let collector = Collector::start(CollectorOptions::default()).await?;
    let upstream = Upstream::start().await?;
    let opts = options(
        upstream.port,
        collector.port,
        json!({"subject_claim": {"provider": "jwt_payload", "claim": "sub"}}),
    )?;
    let mut bootstrap = meshaudit_e2e::bootstrap::bootstrap(&opts);
    insert_http_filter(
        &mut bootstrap,
        json!({
            "name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {"test": {
                    "issuer": "meshaudit-test",
                    "payload_in_metadata": "jwt_payload",
                    "local_jwks": {"inline_string": jwks}
                }},
                "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "test"}}]
            }
        }),
    )?;
    let mut envoy = CustomEnvoy::start(&opts, &bootstrap, &[]).await?;
    let ok = http_client()
        .get(envoy.url("/orders/1"))
        .header("authorization", format!("Bearer {token}"))
        .header("actionLogUserId", "forged-by-a-header")
        .send()
        .await?;
    assert_eq!(ok.status().as_u16(), 200);
    let denied = http_client().get(envoy.url("/orders/2")).send().await?;
    assert_eq!(denied.status().as_u16(), 401);
    let events = collector.wait_for_events(2, WAIT).await?;
    assert_eq!(
        events.len(),
        2,
        "a request jwt_authn refused is audited too"
    );
    let ok_event = events_at(&events, "/orders/1")[0];
    assert_eq!(
        ok_event["subject"]["userid"], "alice@example.com",
        "{ok_event}"
    );
    let denied_event = events_at(&events, "/orders/2")[0];
    assert!(denied_event.get("subject").is_none(), "{denied_event}");
    assert_eq!(denied_event["http"]["statuscode"], 401);
    assert!(envoy.is_running(), "{}", envoy.log());
    Ok(())
}

const MAKE_CERTS: &str = r#"set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=meshaudit-test-ca"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj "/CN=localhost"
printf "subjectAltName=DNS:localhost,IP:127.0.0.1\n" > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile server.ext
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout client.key -out client.csr -subj "/CN=client"
printf "subjectAltName=URI:spiffe://cluster.local/ns/shop/sa/checkout\n" > client.ext
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2 -extfile client.ext
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principal_is_the_mtls_peers_spiffe_id() -> anyhow::Result<()> {
    let certs = tempfile::tempdir()?;
    let made = std::process::Command::new("bash")
        .arg("-c")
        .arg(MAKE_CERTS)
        .current_dir(certs.path())
        .output()
        .map_err(|e| {
            anyhow::anyhow!("bash and openssl are needed (apt-get install openssl): {e}")
        })?;
    assert!(
        made.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let file = |name: &str| certs.path().join(name).display().to_string();

    let collector = Collector::start(CollectorOptions::default()).await?;
    let upstream = Upstream::start().await?;
    let opts = options(upstream.port, collector.port, json!({}))?;
    let mut bootstrap = meshaudit_e2e::bootstrap::bootstrap(&opts);
    let chain = bootstrap
        .pointer_mut("/static_resources/listeners/0/filter_chains/0")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| anyhow::anyhow!("no filter chain in the bootstrap"))?;
    chain.insert(
        "transport_socket".into(),
        json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": true,
                "common_tls_context": {
                    "tls_certificates": [{
                        "certificate_chain": {"filename": file("server.crt")},
                        "private_key": {"filename": file("server.key")}
                    }],
                    "validation_context": {"trusted_ca": {"filename": file("ca.crt")}}
                }
            }
        }),
    );
    let mut envoy = CustomEnvoy::start(&opts, &bootstrap, &[]).await?;
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(file("ca.crt"))
        .arg("--cert")
        .arg(file("client.crt"))
        .arg("--key")
        .arg(file("client.key"))
        .arg(format!(
            "https://127.0.0.1:{}/orders/9",
            envoy.listener_port
        ))
        .output()
        .map_err(|e| anyhow::anyhow!("curl is needed (apt-get install curl): {e}"))?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{}",
        envoy.log()
    );
    let events = collector.wait_for_events(1, WAIT).await?;
    let e = &events[0];
    assert_eq!(
        e["subject"]["principal"], "spiffe://cluster.local/ns/shop/sa/checkout",
        "{e}"
    );
    assert_eq!(
        e["httpurl"],
        format!("https://127.0.0.1:{}/orders/9", envoy.listener_port)
    );
    assert!(envoy.is_running());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_are_graded_by_their_grpc_status() -> anyhow::Result<()> {
    // A gRPC server answering "trailers-only": HTTP 200 with grpc-status in the headers.
    let grpc = FakeCollector::start(FakeBehaviour::Raw(
        "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ngrpc-status: 5\r\ngrpc-message: not found\r\ncontent-length: 0\r\n\r\n",
    ))
    .await?;
    let collector = Collector::start(CollectorOptions::default()).await?;
    let opts = options(grpc.port, collector.port, json!({}))?;
    let mut envoy = start_envoy(&opts, &[]).await?;
    let resp = http_client()
        .post(envoy.url("/shop.Orders/Get"))
        .header("content-type", "application/grpc")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    grpc.set(FakeBehaviour::Raw(
        "HTTP/1.1 200 OK\r\ncontent-type: application/grpc+proto\r\ngrpc-status: 14\r\ncontent-length: 0\r\n\r\n",
    ));
    http_client()
        .post(envoy.url("/shop.Orders/List"))
        .header("content-type", "application/grpc")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await?;
    grpc.set(FakeBehaviour::Raw(
        "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ngrpc-status: 0\r\ncontent-length: 0\r\n\r\n",
    ));
    http_client()
        .post(envoy.url("/shop.Orders/Ok"))
        .header("content-type", "application/grpc")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await?;
    let events = collector.wait_for_events(3, WAIT).await?;
    let grade = |path: &str| {
        let e = events_at(&events, path)[0];
        (
            e["http"]["statuscode"].as_i64(),
            e["action"]["status"].as_str().map(str::to_owned),
            e["action"]["severity"].as_str().map(str::to_owned),
        )
    };
    let g = |s: &str, v: &str| (Some(200), Some(s.to_owned()), Some(v.to_owned()));
    assert_eq!(
        grade("/shop.Orders/Get"),
        g("FAILURE", "WARNING"),
        "NOT_FOUND → 404"
    );
    assert_eq!(
        grade("/shop.Orders/List"),
        g("FAILURE", "ERROR"),
        "UNAVAILABLE → 503"
    );
    assert_eq!(grade("/shop.Orders/Ok"), g("SUCCESS", "INFO"));
    assert_healthy(&mut envoy);
    Ok(())
}
