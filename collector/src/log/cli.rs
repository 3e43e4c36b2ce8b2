//! The log's commands (SPEC §9): `log-keygen`, `verify-offline` (no
//! collector, no database: exit 0 valid, 1 invalid naming the failed check,
//! 2 unreadable input) and `verify --checkpoint FILE --key VKEY` against a
//! store (truncated or rewritten history: exit 1).

use super::checkpoint::Checkpoint;
use super::config::{read_key_text, LogSettings};
use super::db::{record_hash, LogDb};
use super::merkle::{leaf_hash, verify_consistency, verify_inclusion, Hash};
use super::note::{self, VerifierKey};
use super::service::LogService;
use super::tiles::Frontier;
use crate::store::DynStore;
use clap::Args;
use meshaudit_event::integrity::{event_hash, verify_event, EventKeys, Verification};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const INVALID: u8 = 1;
const UNREADABLE: u8 = 2;

#[derive(Args, Debug, Clone)]
pub struct KeygenArgs {
    /// The log's origin (the key's name): `MESHAUDIT_LOG_ORIGIN`.
    #[arg(long)]
    pub origin: String,
}

/// `log-keygen --origin O`: the signer key (line 1) and the verifier key (line 2).
pub fn keygen(args: &KeygenArgs) -> ExitCode {
    match note::generate(args.origin.trim()) {
        Ok(key) => {
            println!("{}", key.to_text());
            println!("{}", key.verifier().to_text());
            eprintln!("line 1: the signer key (secret: MESHAUDIT_LOG_SIGNING_KEY); line 2: the verifier key (public: give it to auditors)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meshaudit-collector: log-keygen: {e}");
            ExitCode::from(UNREADABLE)
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct VerifyOfflineArgs {
    /// The log's verifier key (`<name>+<id>+<key>`, or `@PATH`).
    #[arg(long)]
    pub key: String,
    /// A signed checkpoint; twice (old, then new) to check a consistency proof.
    #[arg(long, required = true, num_args = 1)]
    pub checkpoint: Vec<PathBuf>,
    /// The event (JSON object as stored, `security` included): with one checkpoint.
    #[arg(long)]
    pub event: Option<PathBuf>,
    /// The proof: `GET /v1/log/inclusion` or `GET /v1/log/consistency` JSON.
    #[arg(long)]
    pub proof: PathBuf,
    /// `keyid=secret` to check the event's `security.signature` too (SPEC §5).
    #[arg(long)]
    pub event_key: Option<String>,
    /// SPEC §10: a workload's verifier key (or `@PATH`): the event must be in
    /// `--batch` and the batch signed by this key.
    #[arg(long, requires = "batch")]
    pub batch_key: Option<String>,
    /// The event's batch record: a `GET /v1/events/{id}` answer (or its `batch` object).
    #[arg(long, requires = "batch_key")]
    pub batch: Option<PathBuf>,
}

/// A check that failed (exit 1) or input that could not be read (exit 2).
enum Outcome {
    Invalid(String),
    Unreadable(String),
}

fn read(path: &Path) -> Result<String, Outcome> {
    std::fs::read_to_string(path)
        .map_err(|e| Outcome::Unreadable(format!("cannot read {}: {e}", path.display())))
}

fn read_json(path: &Path) -> Result<serde_json::Value, Outcome> {
    serde_json::from_str(&read(path)?)
        .map_err(|e| Outcome::Unreadable(format!("{} is not JSON: {e}", path.display())))
}

fn verifier(key: &str) -> Result<VerifierKey, Outcome> {
    let text = read_key_text(key).map_err(Outcome::Unreadable)?;
    VerifierKey::parse(&text).map_err(|e| Outcome::Unreadable(format!("--key: {e}")))
}

fn checkpoint(path: &Path, key: &VerifierKey) -> Result<Checkpoint, Outcome> {
    let note = read(path)?;
    Checkpoint::verify(&note, key).map_err(|e| {
        Outcome::Invalid(format!(
            "checkpoint signature: {} is not a checkpoint signed by {} ({e})",
            path.display(),
            key.name()
        ))
    })
}

fn u64_field(v: &serde_json::Value, name: &str) -> Result<u64, Outcome> {
    v[name]
        .as_u64()
        .ok_or_else(|| Outcome::Unreadable(format!("the proof has no whole number {name:?}")))
}

fn hash_field(v: &serde_json::Value) -> Result<Hash, Outcome> {
    let mut h = [0u8; 32];
    match v.as_str() {
        Some(s) if hex::decode_to_slice(s, &mut h).is_ok() => Ok(h),
        _ => Err(Outcome::Unreadable(
            "a proof hash is not 64 hex digits".to_owned(),
        )),
    }
}

fn proof_hashes(v: &serde_json::Value) -> Result<Vec<Hash>, Outcome> {
    v["proof"]
        .as_array()
        .ok_or_else(|| Outcome::Unreadable("the proof file has no \"proof\" array".to_owned()))?
        .iter()
        .map(hash_field)
        .collect()
}

/// `verify-offline`.
pub fn verify_offline(args: &VerifyOfflineArgs) -> ExitCode {
    let result = match args.checkpoint.as_slice() {
        [one] => offline_inclusion(args, one),
        [old, new] => offline_consistency(args, old, new),
        _ => Err(Outcome::Unreadable(
            "give --checkpoint once (with --event) or twice (old, new)".to_owned(),
        )),
    };
    match result {
        Ok(lines) => {
            for l in lines {
                println!("OK: {l}");
            }
            ExitCode::SUCCESS
        }
        Err(Outcome::Invalid(why)) => {
            println!("INVALID: {why}");
            ExitCode::from(INVALID)
        }
        Err(Outcome::Unreadable(why)) => {
            eprintln!("meshaudit-collector: verify-offline: {why}");
            ExitCode::from(UNREADABLE)
        }
    }
}

fn offline_inclusion(args: &VerifyOfflineArgs, cp_path: &Path) -> Result<Vec<String>, Outcome> {
    let key = verifier(&args.key)?;
    let event_path = args
        .event
        .as_deref()
        .ok_or_else(|| Outcome::Unreadable("--event is needed with one --checkpoint".to_owned()))?;
    let event_text = read(event_path)?;
    let proof = read_json(&args.proof)?;
    let event = match meshaudit_event::parse(event_text.as_bytes()) {
        Ok(meshaudit_event::Value::Object(map)) => map,
        _ => {
            return Err(Outcome::Unreadable(format!(
                "{} is not a JSON object",
                event_path.display()
            )))
        }
    };
    let cp = checkpoint(cp_path, &key)?;
    let mut ok = vec![format!(
        "checkpoint signature ({} size {})",
        cp.origin, cp.size
    )];
    let canonical = meshaudit_event::canonical(&meshaudit_event::Value::Object(event.clone()));
    let record = record_hash(&canonical);
    let claimed = hash_field(&proof["record_hash"])?;
    if record != claimed {
        return Err(Outcome::Invalid(format!(
            "record hash: the event hashes to {} but the proof is for {}",
            hex::encode(record),
            hex::encode(claimed)
        )));
    }
    ok.push(format!("record hash {}", hex::encode(record)));
    let (index, size) = (
        u64_field(&proof, "leaf_index")?,
        u64_field(&proof, "tree_size")?,
    );
    if size != cp.size {
        return Err(Outcome::Invalid(format!(
            "tree size: the proof is for tree size {size}, the checkpoint for {}",
            cp.size
        )));
    }
    verify_inclusion(
        index,
        size,
        &leaf_hash(&record),
        &proof_hashes(&proof)?,
        &cp.root,
    )
    .map_err(|e| Outcome::Invalid(format!("inclusion proof: {e}")))?;
    ok.push(format!(
        "inclusion of seq {} (leaf {index}) in the checkpoint's tree",
        index + 1
    ));
    if event.contains_key("security") {
        let keys = match &args.event_key {
            Some(kv) => match kv.split_once('=') {
                Some((id, secret)) => EventKeys::new([(id.to_owned(), secret.as_bytes().to_vec())]),
                None => {
                    return Err(Outcome::Unreadable(
                        "--event-key is keyid=secret".to_owned(),
                    ))
                }
            },
            None => EventKeys::default(),
        };
        match verify_event(&event, &event_hash(&event), &keys) {
            Verification::NoHash => ok.push("the event's security carries no hash".to_owned()),
            Verification::Verified if args.event_key.is_some() => {
                ok.push("event hash and signature".to_owned())
            }
            // Without a key only the hash can be checked.
            Verification::Verified | Verification::BadSignature | Verification::UnknownKey
                if args.event_key.is_none() =>
            {
                let claimed = event
                    .get("security")
                    .and_then(|s| s.get("hash"))
                    .and_then(|h| h.as_str());
                if claimed != Some(event_hash(&event).as_str()) {
                    return Err(Outcome::Invalid(
                        "event hash: security.hash does not match the event".to_owned(),
                    ));
                }
                ok.push("event hash (no --event-key: signature not checked)".to_owned());
            }
            Verification::HashMismatch => {
                return Err(Outcome::Invalid(
                    "event hash: security.hash does not match the event".to_owned(),
                ))
            }
            other => {
                return Err(Outcome::Invalid(format!(
                    "event signature: {}",
                    other.reason().unwrap_or("does not verify")
                )))
            }
        }
    }
    if let (Some(key), Some(batch)) = (&args.batch_key, &args.batch) {
        use crate::keys::offline::{check_files, OfflineError};
        ok.push(check_files(&event, key, batch).map_err(|e| match e {
            OfflineError::Invalid(m) => Outcome::Invalid(m),
            OfflineError::Unreadable(m) => Outcome::Unreadable(m),
        })?);
    }
    Ok(ok)
}

fn offline_consistency(
    args: &VerifyOfflineArgs,
    old_path: &Path,
    new_path: &Path,
) -> Result<Vec<String>, Outcome> {
    let key = verifier(&args.key)?;
    let proof = read_json(&args.proof)?;
    let old = checkpoint(old_path, &key)?;
    let new = checkpoint(new_path, &key)?;
    let (from, to) = (u64_field(&proof, "from")?, u64_field(&proof, "to")?);
    if (from, to) != (old.size, new.size) {
        return Err(Outcome::Invalid(format!(
            "tree sizes: the proof is from {from} to {to}, the checkpoints are {} and {}",
            old.size, new.size
        )));
    }
    verify_consistency(
        old.size,
        new.size,
        &old.root,
        &new.root,
        &proof_hashes(&proof)?,
    )
    .map_err(|e| Outcome::Invalid(format!("consistency proof: {e}")))?;
    Ok(vec![
        format!(
            "checkpoint signatures ({} sizes {} and {})",
            old.origin, old.size, new.size
        ),
        format!(
            "the tree of size {} extends the tree of size {} (append-only)",
            new.size, old.size
        ),
    ])
}

/// `verify --checkpoint FILE --key VKEY`.
#[derive(Args, Debug, Clone, Default)]
pub struct CheckpointArgs {
    /// A checkpoint kept outside the cluster: the store's tree must contain it.
    #[arg(long, requires = "key")]
    pub checkpoint: Option<PathBuf>,
    /// The log's verifier key (`<name>+<id>+<key>`, or `@PATH`).
    #[arg(long, requires = "checkpoint")]
    pub key: Option<String>,
}

/// Leaves read per page when recomputing.
const PAGE: u64 = 10_000;

/// Checks that the store contains the checkpoint's tree: `None` when it does
/// (or no checkpoint was given), else the exit code, having said why.
pub async fn verify_checkpoint(args: &CheckpointArgs, store: &DynStore) -> Option<ExitCode> {
    let (Some(path), Some(key)) = (&args.checkpoint, &args.key) else {
        return None;
    };
    match check_store(path, key, store).await {
        Ok(line) => {
            println!("OK: {line}");
            None
        }
        Err(Outcome::Invalid(why)) => {
            println!("BROKEN: {why}");
            Some(ExitCode::from(INVALID))
        }
        Err(Outcome::Unreadable(why)) => {
            eprintln!("meshaudit-collector: verify --checkpoint: {why}");
            Some(ExitCode::from(UNREADABLE))
        }
    }
}

async fn check_store(path: &Path, key: &str, store: &DynStore) -> Result<String, Outcome> {
    let key = verifier(key)?;
    let cp = checkpoint(path, &key)?;
    let n = cp.size;
    let could_not =
        |e: &dyn std::fmt::Display| Outcome::Unreadable(format!("reading the store: {e}"));
    let db = store
        .raw_pool()
        .map(LogDb::from_raw)
        .ok_or_else(|| Outcome::Unreadable("this store has no verifiable log".to_owned()))?;
    let leaves = db.tree_size().await.map_err(|e| could_not(&e))?;
    let head = store.head().await.map_err(|e| could_not(&e))?.seq.max(0) as u64;
    if leaves < n || head < n {
        return Err(Outcome::Invalid(format!(
            "truncated: the checkpoint covers {n} events but the store holds {} (tree {leaves} leaves, chain head seq {head}): \
             rows were cut off, or an older copy of the database was restored",
            leaves.min(head)
        )));
    }
    // The stored tiles at the checkpoint's size.
    let service = LogService::new(LogSettings::default(), store, None);
    let tiles_root = service.root_at(n).await.map_err(|e| could_not(&e))?;
    // The leaves themselves, rehashed from scratch.
    let mut frontier = Frontier::default();
    let mut first_bad_event: Option<u64> = None;
    let mut at = 0u64;
    while at < n {
        let to = (at + PAGE).min(n);
        let entries = db.entries(at, to).await.map_err(|e| could_not(&e))?;
        if entries.len() as u64 != to - at {
            return Err(Outcome::Invalid(format!(
                "truncated: leaves between {} and {to} are missing from the store's tree",
                at + 1
            )));
        }
        // Each stored event (retained ones are gone) against its leaf.
        let events = store
            .scan(at as i64, (to - at) as i64)
            .await
            .map_err(|e| could_not(&e))?;
        for ev in events.iter().filter(|e| (e.seq as u64) <= to) {
            let idx = (ev.seq - 1) as u64;
            let leaf = entries.get((idx - at) as usize).map(|(_, h)| *h);
            if first_bad_event.is_none() && leaf != Some(record_hash(ev.canonical.as_bytes())) {
                first_bad_event = Some(ev.seq as u64);
            }
        }
        for (_, h) in &entries {
            let mut unused = Vec::new();
            frontier.push(h, &mut unused);
        }
        at = to;
    }
    let leaves_root = frontier.root();
    if leaves_root != cp.root {
        return Err(Outcome::Invalid(format!(
            "rewritten history: the store's leaves 1..{n} hash to root {} but the checkpoint says {}",
            hex::encode(leaves_root),
            hex::encode(cp.root)
        )));
    }
    if tiles_root != cp.root {
        return Err(Outcome::Invalid(format!(
            "rewritten history: the store's tree tiles at size {n} give root {} but the checkpoint says {}",
            hex::encode(tiles_root),
            hex::encode(cp.root)
        )));
    }
    if let Some(seq) = first_bad_event {
        return Err(Outcome::Invalid(format!(
            "rewritten history: event seq {seq} is not the event the checkpoint covers (its record hash differs from leaf {})",
            seq - 1
        )));
    }
    Ok(format!(
        "the store contains checkpoint {} size {n} (root {}); its events match the leaves",
        cp.origin,
        hex::encode(cp.root)
    ))
}
