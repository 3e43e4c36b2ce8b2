//! `serve`'s verifiable-log options (SPEC §9), flattened into the `serve`
//! command line: origin, signer key, checkpoint interval.

use super::note::SignerKey;
use clap::Args;
use std::fmt;
use std::time::Duration;

/// The default origin (and key name).
pub const DEFAULT_ORIGIN: &str = "meshaudit.local/log";

#[derive(Args, Clone)]
pub struct LogArgs {
    /// The log's origin: the first line of every checkpoint and the signing key's name.
    #[arg(long, env = "MESHAUDIT_LOG_ORIGIN", default_value = DEFAULT_ORIGIN)]
    pub log_origin: String,
    /// The checkpoint signer key (`PRIVATE+KEY+…`, or `@PATH` to a file holding it);
    /// without it a key is generated on first start and kept in the store.
    #[arg(long, env = "MESHAUDIT_LOG_SIGNING_KEY")]
    pub log_signing_key: Option<String>,
    /// Shortest time between two checkpoints, in milliseconds.
    #[arg(long, env = "MESHAUDIT_CHECKPOINT_INTERVAL_MS", default_value = "1000")]
    pub checkpoint_interval_ms: String,
}

impl fmt::Debug for LogArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogArgs")
            .field("log_origin", &self.log_origin)
            .field(
                "log_signing_key",
                &self.log_signing_key.as_ref().map(|_| "hidden"),
            )
            .field("checkpoint_interval_ms", &self.checkpoint_interval_ms)
            .finish()
    }
}

/// Validated log settings.
#[derive(Clone, Debug)]
pub struct LogSettings {
    pub origin: String,
    /// The configured key; `None`: the one kept in the store (made on first start).
    pub signer: Option<SignerKey>,
    pub checkpoint_interval: Duration,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            origin: DEFAULT_ORIGIN.to_owned(),
            signer: None,
            checkpoint_interval: Duration::from_millis(1000),
        }
    }
}

impl LogArgs {
    /// Checks the options, pushing one line per problem.
    pub fn validate(&self, problems: &mut Vec<String>) -> LogSettings {
        let origin = self.log_origin.trim().to_owned();
        if !meshaudit_event::workload_key::valid_name(&origin) {
            problems.push(format!(
                "MESHAUDIT_LOG_ORIGIN: must be non-empty without spaces, '+' or ',' (it names the signing key), got {origin:?}"
            ));
        }
        let interval = match self.checkpoint_interval_ms.trim().parse::<u64>() {
            Ok(ms) if ms >= 1 => Duration::from_millis(ms),
            _ => {
                problems.push(format!(
                    "MESHAUDIT_CHECKPOINT_INTERVAL_MS: expected a whole number ≥ 1, got {:?}",
                    self.checkpoint_interval_ms
                ));
                Duration::from_millis(1000)
            }
        };
        let signer = self
            .log_signing_key
            .as_deref()
            .filter(|k| !k.trim().is_empty())
            .and_then(|k| match read_key(k) {
                Ok(key) if key.name() == origin => Some(key),
                Ok(key) => {
                    problems.push(format!(
                        "MESHAUDIT_LOG_SIGNING_KEY: the key is named {:?} but MESHAUDIT_LOG_ORIGIN is {origin:?}; they must be the same",
                        key.name()
                    ));
                    None
                }
                Err(e) => {
                    problems.push(format!("MESHAUDIT_LOG_SIGNING_KEY: {e}"));
                    None
                }
            });
        LogSettings {
            origin,
            signer,
            checkpoint_interval: interval,
        }
    }
}

/// A key text, or `@PATH` to a file holding one. Errors never show the key.
pub fn read_key_text(value: &str) -> Result<String, String> {
    match value.trim().strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("cannot read {path}: {e}")),
        None => Ok(value.trim().to_owned()),
    }
}

fn read_key(value: &str) -> Result<SignerKey, String> {
    let text = read_key_text(value)?;
    SignerKey::parse(&text).map_err(|e| format!("not a signer key ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(origin: &str, key: Option<&str>, interval: &str) -> LogArgs {
        LogArgs {
            log_origin: origin.to_owned(),
            log_signing_key: key.map(str::to_owned),
            checkpoint_interval_ms: interval.to_owned(),
        }
    }

    #[test]
    fn one_problem_per_bad_setting_and_the_key_never_shown() {
        let key = SignerKey::from_seed("a.example/log", &[3u8; 32]).unwrap();
        let text = key.to_text();
        let mut problems = Vec::new();
        let ok = args("a.example/log", Some(&text), "250").validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(ok.signer.unwrap().name(), "a.example/log");
        assert_eq!(ok.checkpoint_interval, Duration::from_millis(250));

        let mut problems = Vec::new();
        args("other/log", Some(&text), "0").validate(&mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("MESHAUDIT_CHECKPOINT_INTERVAL_MS"));
        assert!(problems[1].contains("must be the same"));

        let mut problems = Vec::new();
        let broken = text.replace("PRIVATE+KEY+", "PRIVATE+KEY+x");
        args("a b", Some(&broken), "1000").validate(&mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems.iter().all(|p| !p.contains(&text[30..])),
            "the key is never shown"
        );

        // @PATH reads the key from a file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{text}\n")).unwrap();
        let mut problems = Vec::new();
        let from_file = args(
            "a.example/log",
            Some(&format!("@{}", path.display())),
            "1000",
        )
        .validate(&mut problems);
        assert!(
            problems.is_empty() && from_file.signer.is_some(),
            "{problems:?}"
        );
        let mut problems = Vec::new();
        args("a.example/log", Some("@/nonexistent/key"), "1000").validate(&mut problems);
        assert_eq!(problems.len(), 1);
    }
}
