//! The verifiable log (SPEC §9), through the real binary, on SQLite and
//! PostgreSQL: checkpoints signed with a `log-keygen` key, tiles fetched over
//! HTTP that rebuild the checkpoint's root, inclusion and consistency proofs,
//! an independent Python check (Ed25519 with `cryptography`, the RFC 9162
//! algorithms written from the RFC), `verify-offline` refusing forgeries,
//! `retain` keeping the tree, and attacks on the database — rows and tiles
//! cut off, an older copy restored, one event rewritten with the chain
//! recomputed — named by `verify --checkpoint`. Then kill -9 under load: the
//! tree, the chain and the events agree and no checkpoint covers an event
//! that was not committed.

use crate::support::{
    collector_command, http, ndjson_events, pg_base_url, pg_test_db, post_signed, run_cli,
    temp_sqlite, CollectorProcess, PgTestDb, TempSqlite,
};
use meshaudit_collector::log::checkpoint::Checkpoint;
use meshaudit_collector::log::db::LogDb;
use meshaudit_collector::log::merkle::{
    leaf_hash, root, verify_consistency, verify_inclusion, Hash, MemTree,
};
use meshaudit_collector::log::note::VerifierKey;
use sqlx::Connection;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ORIGIN: &str = "audit.example.test/log";

/// (signer, verifier) from `log-keygen`.
fn keygen() -> (String, String) {
    let out = collector_command()
        .args(["log-keygen", "--origin", ORIGIN])
        .output()
        .expect("run log-keygen");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let signer = lines.next().unwrap().to_owned();
    let verifier = lines.next().unwrap().to_owned();
    assert!(signer.starts_with(&format!("PRIVATE+KEY+{ORIGIN}+")));
    assert!(verifier.starts_with(&format!("{ORIGIN}+")));
    (signer, verifier)
}

async fn start(url: &str, signer: &str) -> CollectorProcess {
    CollectorProcess::start(
        url,
        &[
            ("MESHAUDIT_LOG_ORIGIN", ORIGIN),
            ("MESHAUDIT_LOG_SIGNING_KEY", signer),
            ("MESHAUDIT_CHECKPOINT_INTERVAL_MS", "100"),
        ],
    )
    .await
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let r = http(addr, "GET", path, &[], b"").await.expect("GET");
    (r.status, r.body)
}

async fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = get(addr, path).await;
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Posts `n` events in batches of 100 under `prefix`.
async fn ingest(addr: SocketAddr, prefix: &str, n: usize) {
    for b in 0..n / 100 {
        let p = format!("{prefix}-{b}");
        let r = post_signed(addr, &ndjson_events(&p, 100), Some(&p))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
}

/// The latest checkpoint, checked against `key`; `None` before the first.
async fn latest_checkpoint(addr: SocketAddr, key: &VerifierKey) -> Option<(String, Checkpoint)> {
    let (status, body) = get(addr, "/checkpoint").await;
    if status != 200 {
        return None;
    }
    let note = String::from_utf8(body).unwrap();
    let cp = Checkpoint::verify(&note, key).expect("a checkpoint signed by the key");
    Some((note, cp))
}

/// Waits for a checkpoint of exactly `size` (the tree stops at `size`).
async fn checkpoint_of(addr: SocketAddr, key: &VerifierKey, size: u64) -> (String, Checkpoint) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((note, cp)) = latest_checkpoint(addr, key).await {
            assert!(cp.size <= size, "checkpoint beyond the events sent");
            if cp.size == size {
                return (note, cp);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint of size {size} in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hash(s: &serde_json::Value) -> Hash {
    let mut h = [0u8; 32];
    hex::decode_to_slice(s.as_str().unwrap(), &mut h).unwrap();
    h
}

fn proof(v: &serde_json::Value) -> Vec<Hash> {
    v["proof"].as_array().unwrap().iter().map(hash).collect()
}

/// Root of `size` from tiles and entry bundles fetched over HTTP, checked
/// against each other on the way (C2SP tlog-tiles).
async fn root_from_tiles(addr: SocketAddr, size: u64) -> Hash {
    let mut tree = MemTree::new();
    let mut level1: Vec<Hash> = Vec::new();
    let mut n = 0u64;
    while n * 256 < size {
        let width = (size - n * 256).min(256);
        let suffix = if width < 256 {
            format!(".p/{width}")
        } else {
            String::new()
        };
        let idx = meshaudit_collector::log::tiles::index_path(n);
        let (s0, tile) = get(addr, &format!("/tile/0/{idx}{suffix}")).await;
        let (s1, bundle) = get(addr, &format!("/tile/entries/{idx}{suffix}")).await;
        assert_eq!((s0, s1), (200, 200), "tile {n}");
        assert_eq!(tile.len() as u64, width * 32);
        assert_eq!(bundle.len() as u64, width * 34);
        let mut leaves = MemTree::new();
        for (i, entry) in bundle.chunks(34).enumerate() {
            assert_eq!(&entry[..2], &[0, 32], "uint16 length 32");
            let leaf = leaf_hash(&entry[2..]);
            assert_eq!(
                &tile[i * 32..i * 32 + 32],
                leaf.as_slice(),
                "level-0 tile = leaf hashes of the entries"
            );
            tree.push(leaf);
            leaves.push(leaf);
        }
        if width == 256 {
            level1.push(root(&leaves, 256).unwrap());
        }
        n += 1;
    }
    if !level1.is_empty() {
        let w = level1.len();
        let (status, tile1) = get(addr, &format!("/tile/1/000.p/{w}")).await;
        assert_eq!(status, 200);
        assert_eq!(
            tile1,
            level1.concat(),
            "level-1 tile = roots of the full level-0 tiles"
        );
    }
    root(&tree, size).unwrap()
}

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

fn offline(args: &[&str]) -> (i32, String) {
    let out = collector_command()
        .arg("verify-offline")
        .args(args)
        .output()
        .expect("run verify-offline");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let ok = std::process::Command::new(&python)
        .args(["-c", "import cryptography"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "this test needs Python `cryptography` in the project's .venv: run `make setup`"
    );
    python
}

/// An independent check written from C2SP signed-note / tlog-checkpoint and
/// RFC 9162: key id, Ed25519 signature, root from the entry bundles, and an
/// inclusion proof. Prints "ok".
const PY_CHECK: &str = r#"
import base64, hashlib, json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
vkey, note, bundles, proof = sys.argv[1], open(sys.argv[2]).read(), open(sys.argv[3], 'rb').read(), json.load(open(sys.argv[4]))
name, kid, k = vkey.split('+', 2)
raw = base64.b64decode(k)
assert raw[0] == 1 and len(raw) == 33
pub = raw[1:]
assert hashlib.sha256(name.encode() + b'\n\x01' + pub).digest()[:4].hex() == kid
text, sigs = note[:note.rindex('\n\n') + 1], note[note.rindex('\n\n') + 2:].splitlines()
ok = False
for line in sigs:
    dash, nm, b = line.split(' ')
    assert dash == '\u2014'
    blob = base64.b64decode(b)
    if nm == name and blob[:4].hex() == kid:
        Ed25519PublicKey.from_public_bytes(pub).verify(blob[4:], text.encode())
        ok = True
assert ok, 'no signature by the key'
origin, size, root_b64 = text.split('\n')[:3]
assert origin == name
size, root = int(size), base64.b64decode(root_b64)
entries = [bundles[i + 2:i + 34] for i in range(0, len(bundles), 34)]
assert len(entries) == size
leaf = lambda d: hashlib.sha256(b'\x00' + d).digest()
node = lambda l, r: hashlib.sha256(b'\x01' + l + r).digest()
def mth(d):
    if len(d) == 1: return leaf(d[0])
    k = 1
    while k * 2 < len(d): k *= 2
    return node(mth(d[:k]), mth(d[k:]))
assert mth(entries) == root, 'root from the entries'
# RFC 9162 2.1.3.2
fn, sn, r = proof['leaf_index'], proof['tree_size'] - 1, bytes.fromhex(proof['leaf_hash'])
assert leaf(bytes.fromhex(proof['record_hash'])) == r
for p in proof['proof']:
    p = bytes.fromhex(p)
    assert sn != 0
    if fn & 1 or fn == sn:
        r = node(p, r)
        if not fn & 1:
            while not fn & 1 and fn != 0:
                fn >>= 1; sn >>= 1
    else:
        r = node(r, p)
    fn >>= 1; sn >>= 1
assert sn == 0 and r == root, 'inclusion proof'
print('ok')
"#;

/// A database the story can copy and tamper with.
enum Db {
    Sqlite(TempSqlite),
    Pg(PgTestDb),
}

impl Db {
    fn url(&self) -> &str {
        match self {
            Db::Sqlite(t) => &t.url,
            Db::Pg(p) => &p.url,
        }
    }

    /// A copy (the collector must be stopped).
    async fn copy(&self) -> Db {
        match self {
            Db::Sqlite(t) => {
                let copy = temp_sqlite();
                let path = copy.url.trim_start_matches("sqlite://").to_owned();
                let mut conn = sqlx::SqliteConnection::connect(&t.url).await.unwrap();
                sqlx::query(&format!("VACUUM INTO '{path}'"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Db::Sqlite(copy)
            }
            Db::Pg(p) => {
                let copy = pg_test_db().await;
                let admin = pg_base_url().await;
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
                let name = |u: &str| {
                    u.rsplit('/')
                        .next()
                        .unwrap()
                        .split('?')
                        .next()
                        .unwrap()
                        .to_owned()
                };
                sqlx::query(&format!("DROP DATABASE {}", name(&copy.url)))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                sqlx::query(&format!(
                    "CREATE DATABASE {} TEMPLATE {}",
                    name(&copy.url),
                    name(&p.url)
                ))
                .execute(&mut conn)
                .await
                .unwrap();
                Db::Pg(copy)
            }
        }
    }

    /// Runs attacker statements with the append-only triggers out of the way.
    async fn tamper(&self, statements: &[String]) {
        match self {
            Db::Sqlite(t) => {
                let mut conn = sqlx::SqliteConnection::connect(&t.url).await.unwrap();
                for trigger in [
                    "events_no_update",
                    "events_no_delete",
                    "event_ids_no_update",
                    "event_ids_no_delete",
                    "log_entries_no_update",
                    "log_entries_no_delete",
                    "log_nodes_no_update",
                    "log_nodes_no_delete",
                ] {
                    sqlx::query(&format!("DROP TRIGGER IF EXISTS {trigger}"))
                        .execute(&mut conn)
                        .await
                        .unwrap();
                }
                for s in statements {
                    let s = s.replace("$1", "?");
                    sqlx::query(&s)
                        .execute(&mut conn)
                        .await
                        .unwrap_or_else(|e| panic!("{s}: {e}"));
                }
            }
            Db::Pg(p) => {
                let mut conn = sqlx::PgConnection::connect(&p.url).await.unwrap();
                // A superuser can switch user triggers off for the session.
                sqlx::query("SET session_replication_role = replica")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                for s in statements {
                    sqlx::query(s)
                        .execute(&mut conn)
                        .await
                        .unwrap_or_else(|e| panic!("{s}: {e}"));
                }
            }
        }
    }
}

/// Rewrites event `seq` and recomputes the chain from it to the head, as
/// someone with write access to the database would.
async fn rewrite_with_chain(db: &Db, seq: i64) {
    let store = meshaudit_collector::store::open(db.url()).await.unwrap();
    let head = store.head().await.unwrap();
    let rows = store.scan(seq - 1, head.seq).await.unwrap();
    let mut prev = store.scan(seq - 2, 1).await.unwrap()[0].chain_hash.clone();
    let mut statements = Vec::new();
    for row in rows {
        let (canonical, event_hash) = if row.seq == seq {
            // A field without a query column, so the stored columns still match.
            let edited = row
                .canonical
                .replace("\"specversion\":\"1.0\"", "\"specversion\":\"1.1\"");
            assert_ne!(edited, row.canonical);
            let map = match meshaudit_event::parse(edited.as_bytes()).unwrap() {
                meshaudit_event::Value::Object(m) => m,
                _ => unreachable!(),
            };
            (edited, meshaudit_event::integrity::event_hash(&map))
        } else {
            (row.canonical.clone(), row.event_hash.clone())
        };
        let chain = meshaudit_collector::chain::next_chain_hash(&prev, row.seq, &event_hash);
        statements.push(format!(
            "UPDATE events SET canonical = '{}', event_hash = '{event_hash}', chain_hash = '{chain}' WHERE seq = {}",
            canonical.replace('\'', "''"),
            row.seq
        ));
        prev = chain;
    }
    statements.push(format!(
        "UPDATE chain_head SET chain_hash = '{prev}' WHERE singleton = 1"
    ));
    drop(store);
    db.tamper(&statements).await;
}

fn verify_cli(db: &Db, cp: &Path, vkey: &str) -> (i32, String) {
    run_cli(
        db.url(),
        &[
            "verify",
            "--accept-unproven-anchor",
            "--checkpoint",
            cp.to_str().unwrap(),
            "--key",
            vkey,
        ],
    )
}

async fn story(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let (signer, vkey_text) = keygen();
    let vkey = VerifierKey::parse(&vkey_text).unwrap();

    // Phase 1: 200 events, a checkpoint, stop; keep a copy of the database.
    let collector = start(db.url(), &signer).await;
    let addr = collector.addr;
    ingest(addr, "one", 200).await;
    let (note200, cp200) = checkpoint_of(addr, &vkey, 200).await;
    drop(collector);
    let older = db.copy().await;
    let retain_before = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;

    // Phase 2: the tree continues after a restart.
    let collector = start(db.url(), &signer).await;
    let addr = collector.addr;
    ingest(addr, "two", 400).await;
    let (note600, cp600) = checkpoint_of(addr, &vkey, 600).await;
    assert_eq!(
        root_from_tiles(addr, 600).await,
        cp600.root,
        "tiles rebuild the checkpoint's root"
    );
    assert_eq!(root_from_tiles(addr, 200).await, cp200.root);
    let (s, kept) = get(addr, "/v1/log/checkpoint?size=200").await;
    assert_eq!(
        (s, String::from_utf8(kept).unwrap()),
        (200, note200.clone())
    );
    let (s, latest) = get(addr, "/v1/log/checkpoint").await;
    assert_eq!(
        (s, String::from_utf8(latest).unwrap()),
        (200, note600.clone())
    );
    let (s, key_text) = get(addr, "/v1/log/key").await;
    assert_eq!(
        (s, String::from_utf8(key_text).unwrap().trim()),
        (200, vkey_text.as_str())
    );

    // Proofs over HTTP verify against the checkpoints.
    for seq in [1u64, 2, 200, 256, 257, 513, 600] {
        let p = get_json(addr, &format!("/v1/log/inclusion?seq={seq}")).await;
        assert_eq!(
            (
                p["seq"].as_u64(),
                p["leaf_index"].as_u64(),
                p["tree_size"].as_u64()
            ),
            (Some(seq), Some(seq - 1), Some(600))
        );
        assert_eq!(leaf_hash(&hash(&p["record_hash"])), hash(&p["leaf_hash"]));
        verify_inclusion(
            seq - 1,
            600,
            &hash(&p["leaf_hash"]),
            &proof(&p),
            &cp600.root,
        )
        .unwrap();
    }
    let p = get_json(addr, "/v1/log/inclusion?id=one-1-5&size=200").await;
    assert_eq!(p["seq"], 106);
    verify_inclusion(105, 200, &hash(&p["leaf_hash"]), &proof(&p), &cp200.root).unwrap();
    let c = get_json(addr, "/v1/log/consistency?from=200&to=600").await;
    verify_consistency(200, 600, &cp200.root, &cp600.root, &proof(&c)).unwrap();

    // Bad parameters: 400/404 with the §6 body, never 500.
    for (path, status) in [
        ("/v1/log/inclusion?seq=0", 400),
        ("/v1/log/inclusion?seq=601", 400),
        ("/v1/log/inclusion?seq=5&size=4", 400),
        ("/v1/log/inclusion?seq=5&size=601", 400),
        ("/v1/log/inclusion?seq=x", 400),
        ("/v1/log/inclusion", 400),
        ("/v1/log/inclusion?id=nope", 404),
        ("/v1/log/consistency?from=0&to=5", 400),
        ("/v1/log/consistency?from=6&to=5", 400),
        ("/v1/log/consistency?from=1&to=601", 400),
        ("/v1/log/consistency?from=1", 400),
        ("/v1/log/checkpoint?size=7", 404),
        ("/v1/log/checkpoint?size=-1", 400),
        ("/tile/0/003", 404),
        ("/tile/0/002.p/89", 404),
        ("/tile/1/000", 404),
        ("/tile/0/x000/001", 404),
        ("/tile/99/000", 404),
        ("/tile/entries/abc", 404),
    ] {
        let (s, body) = get(addr, path).await;
        assert_eq!(s, status, "{path}: {}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            v["error"].is_string() && v["message"].is_string(),
            "{path}: {v}"
        );
    }

    // Metrics.
    let (_, metrics) = get(addr, "/metrics").await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("audit_log_tree_size 600"), "{metrics}");
    assert!(metrics.contains("audit_log_checkpoint_size 600"));
    assert!(metrics.contains("audit_log_checkpoint_age_seconds "));

    // Offline: one event, its proof, the checkpoint, the public key.
    let item = get_json(addr, "/v1/events/two-2-7").await;
    let seq = item["seq"].as_u64().unwrap();
    let event = write(
        dir.path(),
        "event.json",
        item["event"].to_string().as_bytes(),
    );
    let proof_json = get_json(addr, &format!("/v1/log/inclusion?seq={seq}")).await;
    let proof_file = write(dir.path(), "proof.json", proof_json.to_string().as_bytes());
    let cp600_file = write(dir.path(), "cp600", note600.as_bytes());
    let cp200_file = write(dir.path(), "cp200", note200.as_bytes());
    let s = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let (code, out) = offline(&[
        "--key",
        &vkey_text,
        "--checkpoint",
        &s(&cp600_file),
        "--event",
        &s(&event),
        "--proof",
        &s(&proof_file),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("inclusion of seq {seq}")), "{out}");
    // Forged checkpoints: another key, an edited size, an edited root.
    let (_, other_vkey) = keygen();
    let (code, out) = offline(&[
        "--key",
        &other_vkey,
        "--checkpoint",
        &s(&cp600_file),
        "--event",
        &s(&event),
        "--proof",
        &s(&proof_file),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("INVALID: checkpoint signature"), "{out}");
    let edited_size = write(
        dir.path(),
        "edited_size",
        note600.replacen("\n600\n", "\n601\n", 1).as_bytes(),
    );
    let mut root_bytes = cp600.root;
    root_bytes[0] ^= 1;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let edited_root = write(
        dir.path(),
        "edited_root",
        note600
            .replacen(&b64.encode(cp600.root), &b64.encode(root_bytes), 1)
            .as_bytes(),
    );
    for forged in [&edited_size, &edited_root] {
        let (code, out) = offline(&[
            "--key",
            &vkey_text,
            "--checkpoint",
            &s(forged),
            "--event",
            &s(&event),
            "--proof",
            &s(&proof_file),
        ]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("INVALID: checkpoint signature"), "{out}");
    }
    // An edited event, or a proof for another size.
    let edited_event = write(
        dir.path(),
        "edited_event.json",
        item["event"]
            .to_string()
            .replace("/orders/", "/refunds/")
            .as_bytes(),
    );
    let (code, out) = offline(&[
        "--key",
        &vkey_text,
        "--checkpoint",
        &s(&cp600_file),
        "--event",
        &s(&edited_event),
        "--proof",
        &s(&proof_file),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("INVALID: record hash"), "{out}");
    let (code, out) = offline(&[
        "--key",
        &vkey_text,
        "--checkpoint",
        &s(&cp200_file),
        "--event",
        &s(&event),
        "--proof",
        &s(&proof_file),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("INVALID: tree size"), "{out}");
    let (code, out) = offline(&[
        "--key",
        &vkey_text,
        "--checkpoint",
        "/nonexistent",
        "--event",
        &s(&event),
        "--proof",
        &s(&proof_file),
    ]);
    assert_eq!(code, 2, "{out}");
    // Two checkpoints and a consistency proof.
    let cons = write(dir.path(), "cons.json", c.to_string().as_bytes());
    let (code, out) = offline(&[
        "--key",
        &vkey_text,
        "--checkpoint",
        &s(&cp200_file),
        "--checkpoint",
        &s(&cp600_file),
        "--proof",
        &s(&cons),
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = offline(&[
        "--key",
        &vkey_text,
        "--checkpoint",
        &s(&cp600_file),
        "--checkpoint",
        &s(&cp200_file),
        "--proof",
        &s(&cons),
    ]);
    assert_eq!(code, 1, "{out}");

    // Independent Python check of our checkpoint, entries and proof.
    let mut bundles = Vec::new();
    for (i, w) in [(0u64, 256u64), (1, 256), (2, 88)] {
        let suffix = if w < 256 {
            format!(".p/{w}")
        } else {
            String::new()
        };
        let (st, b) = get(addr, &format!("/tile/entries/{:03}{suffix}", i)).await;
        assert_eq!(st, 200);
        bundles.extend_from_slice(&b);
    }
    let bundles_file = write(dir.path(), "bundles", &bundles);
    let out = std::process::Command::new(python())
        .args([
            "-c",
            PY_CHECK,
            &vkey_text,
            &s(&cp600_file),
            &s(&bundles_file),
            &s(&proof_file),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(collector);

    // The store contains the checkpoint.
    let (code, out) = verify_cli(&db, &cp600_file, &vkey_text);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("the store contains checkpoint"), "{out}");

    // Attacks, each on its own copy of the database.
    let rewritten = db.copy().await;
    rewrite_with_chain(&rewritten, 300).await;
    let (code, out) = run_cli(rewritten.url(), &["verify", "--accept-unproven-anchor"]);
    assert_eq!(
        code, 0,
        "the chain alone cannot see a rewrite with the chain recomputed: {out}"
    );
    let (code, out) = verify_cli(&rewritten, &cp600_file, &vkey_text);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("rewritten history") && out.contains("seq 300"),
        "{out}"
    );

    let cut = db.copy().await;
    let keep = 590;
    let head_hash = meshaudit_collector::store::open(cut.url())
        .await
        .unwrap()
        .scan(keep - 1, 1)
        .await
        .unwrap()[0]
        .chain_hash
        .clone();
    cut.tamper(&[
        format!("DELETE FROM events WHERE seq > {keep}"),
        format!("DELETE FROM event_ids WHERE seq > {keep}"),
        format!("DELETE FROM log_entries WHERE idx >= {keep}"),
        format!(
            "UPDATE chain_head SET seq = {keep}, chain_hash = '{head_hash}' WHERE singleton = 1"
        ),
    ])
    .await;
    let (code, out) = run_cli(cut.url(), &["verify", "--accept-unproven-anchor"]);
    assert_eq!(
        code, 0,
        "the chain alone cannot see the newest rows cut off: {out}"
    );
    let (code, out) = verify_cli(&cut, &cp600_file, &vkey_text);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("truncated"), "{out}");

    let (code, out) = verify_cli(&older, &cp600_file, &vkey_text);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("truncated") && out.contains("older copy"),
        "{out}"
    );
    let (code, out) = verify_cli(&older, &cp200_file, &vkey_text);
    assert_eq!(
        code, 0,
        "the older copy does contain the older checkpoint: {out}"
    );

    // retain removes events, never tree hashes: archived events' proofs
    // still verify against the old and the new checkpoint.
    let archive = dir.path().join("archive");
    let (code, out) = run_cli(
        db.url(),
        &[
            "retain",
            "--before",
            &retain_before.to_rfc3339(),
            "--archive",
            archive.to_str().unwrap(),
            "--force",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let collector = start(db.url(), &signer).await;
    let addr = collector.addr;
    let (s, _) = get(addr, "/v1/events/one-0-3").await;
    assert_eq!(s, 404, "the event was archived");
    for (size, cp_root) in [(200u64, cp200.root), (600, cp600.root)] {
        let p = get_json(addr, &format!("/v1/log/inclusion?id=one-0-3&size={size}")).await;
        verify_inclusion(3, size, &hash(&p["leaf_hash"]), &proof(&p), &cp_root).unwrap();
    }
    assert_eq!(root_from_tiles(addr, 600).await, cp600.root);
    drop(collector);
    let (code, out) = verify_cli(&db, &cp600_file, &vkey_text);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_story_sqlite() {
    story(Db::Sqlite(temp_sqlite())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_story_postgres() {
    story(Db::Pg(pg_test_db().await)).await;
}

/// kill -9 under load, twice: afterwards the tree, the chain and the events
/// agree, and every checkpoint ever signed is a prefix of the committed tree.
async fn kill9_under_load(url: &str) {
    let (signer, vkey_text) = keygen();
    let vkey = VerifierKey::parse(&vkey_text).unwrap();
    for round in 0..2 {
        let mut collector = CollectorProcess::start(
            url,
            &[
                ("MESHAUDIT_LOG_ORIGIN", ORIGIN),
                ("MESHAUDIT_LOG_SIGNING_KEY", &signer),
                ("MESHAUDIT_CHECKPOINT_INTERVAL_MS", "20"),
            ],
        )
        .await;
        let addr = collector.addr;
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let mut clients = Vec::new();
        for client in 0..3 {
            let (stop, acked) = (stop.clone(), acked.clone());
            clients.push(tokio::spawn(async move {
                for batch in 0..2000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let prefix = format!("k{round}-c{client}-b{batch}");
                    match post_signed(addr, &ndjson_events(&prefix, 10), Some(&prefix)).await {
                        Ok(r) if r.status == 200 => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => panic!("status {}", r.status),
                        Err(_) => break,
                    }
                }
            }));
        }
        // Kill in the middle of the load: once batches are being acknowledged.
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked.load(Ordering::Relaxed) < 10 {
            assert!(
                Instant::now() < deadline,
                "round {round}: no batch acknowledged in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // ... and two checkpoints have been signed under it (a fixed wait
        // was too short on a slow machine).
        let mut seen = Vec::new();
        while seen.len() < 2 {
            assert!(
                Instant::now() < deadline,
                "round {round}: two checkpoints under load not seen in 30 s: {seen:?}"
            );
            if let Some((_, cp)) = latest_checkpoint(addr, &vkey).await {
                if cp.size > 0 && !seen.contains(&cp.size) {
                    seen.push(cp.size);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        collector.kill9();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.unwrap();
        }
    }
    tree_chain_events_and_checkpoints_agree(url, &vkey, &vkey_text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_tree_chain_and_checkpoints_agree_sqlite() {
    let db = temp_sqlite();
    kill9_under_load(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_tree_chain_and_checkpoints_agree_postgres() {
    let db = pg_test_db().await;
    kill9_under_load(&db.url).await;
}

/// The tree, the chain and the events agree; every checkpoint signed is a
/// prefix of the committed tree; `verify --checkpoint` accepts the newest.
async fn tree_chain_events_and_checkpoints_agree(url: &str, vkey: &VerifierKey, vkey_text: &str) {
    let store = meshaudit_collector::store::open(url).await.unwrap();
    let db = LogDb::from_raw(store.raw_pool().unwrap());
    let head = store.head().await.unwrap().seq as u64;
    let size = db.tree_size().await.unwrap();
    let events = store.scan(0, i64::MAX).await.unwrap();
    assert_eq!(size, head, "tree size = chain head");
    assert_eq!(events.len() as u64, head, "events = chain head");
    let entries = db.entries(0, size).await.unwrap();
    let mut tree = MemTree::new();
    for ((i, rh), ev) in entries.iter().zip(&events) {
        assert_eq!(*i + 1, ev.seq as u64);
        assert_eq!(
            *rh,
            meshaudit_collector::log::db::record_hash(ev.canonical.as_bytes()),
            "leaf {i} is the record hash of event seq {}",
            ev.seq
        );
        tree.push(leaf_hash(rh));
    }
    let sizes = db.checkpoint_sizes().await.unwrap();
    assert!(
        sizes.len() > 2,
        "checkpoints were made under load: {sizes:?}"
    );
    for s in sizes {
        assert!(
            s <= size,
            "checkpoint {s} covers events beyond the committed {size}"
        );
        let cp = db.checkpoint_of_size(s).await.unwrap().unwrap();
        let parsed = Checkpoint::verify(&cp.note, vkey).unwrap();
        assert_eq!(
            parsed.root,
            root(&tree, s).unwrap(),
            "checkpoint {s} is a prefix of the committed tree"
        );
    }
    drop(store);
    let dir = tempfile::tempdir().unwrap();
    let latest = {
        let store = meshaudit_collector::store::open(url).await.unwrap();
        LogDb::from_raw(store.raw_pool().unwrap())
            .latest_checkpoint()
            .await
            .unwrap()
            .unwrap()
    };
    let cp = write(dir.path(), "cp", latest.note.as_bytes());
    let (code, out) = run_cli(
        url,
        &[
            "verify",
            "--checkpoint",
            cp.to_str().unwrap(),
            "--key",
            vkey_text,
        ],
    );
    assert_eq!(code, 0, "{out}");
}

/// Two replicas on one PostgreSQL database, both under load: one tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_keep_one_tree_postgres() {
    let db = pg_test_db().await;
    let (signer, vkey_text) = keygen();
    let vkey = VerifierKey::parse(&vkey_text).unwrap();
    let env = [
        ("MESHAUDIT_LOG_ORIGIN", ORIGIN),
        ("MESHAUDIT_LOG_SIGNING_KEY", signer.as_str()),
        ("MESHAUDIT_CHECKPOINT_INTERVAL_MS", "20"),
    ];
    let a = CollectorProcess::start(&db.url, &env).await;
    let b = CollectorProcess::start(&db.url, &env).await;
    let mut clients = Vec::new();
    for (r, addr) in [a.addr, b.addr].into_iter().enumerate() {
        for c in 0..2 {
            clients.push(tokio::spawn(async move {
                for batch in 0..30 {
                    let prefix = format!("r{r}-c{c}-b{batch}");
                    let resp = post_signed(addr, &ndjson_events(&prefix, 10), Some(&prefix))
                        .await
                        .unwrap();
                    assert_eq!(resp.status, 200);
                }
            }));
        }
    }
    for c in clients {
        c.await.unwrap();
    }
    // Both replicas sign checkpoints of the same tree.
    for addr in [a.addr, b.addr] {
        checkpoint_of(addr, &vkey, 1200).await;
    }
    drop((a, b));
    tree_chain_events_and_checkpoints_agree(&db.url, &vkey, &vkey_text).await;
}

/// Proofs stay right while the tree grows under one running collector: the
/// tiles it keeps in memory for proofs (the partial ones at the right edge
/// included) are extended as the tree grows, never served stale. Every
/// inclusion proof verifies against the checkpoint of its size, every
/// consistency proof between two kept checkpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_follow_the_growing_tree_sqlite() {
    let db = temp_sqlite();
    let (signer, vkey_text) = keygen();
    let vkey = VerifierKey::parse(&vkey_text).unwrap();
    let collector = start(&db.url, &signer).await;
    let addr = collector.addr;
    let mut kept: Vec<Checkpoint> = Vec::new();
    for round in 0..5u64 {
        // 300 events a round: level-0 tiles fill and start, the level-1 tile grows.
        ingest(addr, &format!("grow-{round}"), 300).await;
        let size = 300 * (round + 1);
        let (_, cp) = checkpoint_of(addr, &vkey, size).await;
        for seq in [1, size / 2, size - 299, size - 1, size] {
            let p = get_json(addr, &format!("/v1/log/inclusion?seq={seq}")).await;
            assert_eq!(p["tree_size"].as_u64(), Some(size));
            verify_inclusion(seq - 1, size, &hash(&p["leaf_hash"]), &proof(&p), &cp.root)
                .unwrap_or_else(|e| panic!("seq {seq} in {size}: {e}"));
            for old in kept.iter().filter(|old| old.size >= seq) {
                let p = get_json(
                    addr,
                    &format!("/v1/log/inclusion?seq={seq}&size={}", old.size),
                )
                .await;
                verify_inclusion(
                    seq - 1,
                    old.size,
                    &hash(&p["leaf_hash"]),
                    &proof(&p),
                    &old.root,
                )
                .unwrap_or_else(|e| panic!("seq {seq} in the older {}: {e}", old.size));
            }
        }
        for old in &kept {
            let c = get_json(
                addr,
                &format!("/v1/log/consistency?from={}&to={size}", old.size),
            )
            .await;
            verify_consistency(old.size, size, &old.root, &cp.root, &proof(&c))
                .unwrap_or_else(|e| panic!("{} → {size}: {e}", old.size));
        }
        kept.push(cp);
    }
}
