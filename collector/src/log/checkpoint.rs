//! C2SP `tlog-checkpoint` bodies (pure): `<origin>\n<tree size>\n<base64 root>\n`,
//! signed as a note ([`super::note`]) by the key named like the origin.

use super::merkle::Hash;
use super::note::{self, NoteError, SignerKey, VerifierKey};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// A tree head: which log, how many leaves, which root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

/// Why a checkpoint is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Note(#[from] NoteError),
    #[error("malformed checkpoint body: {0}")]
    Body(&'static str),
    #[error("the checkpoint is for origin {got:?}, the key is {want:?}")]
    Origin { got: String, want: String },
}

impl Checkpoint {
    /// The note text.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parses a body (extension lines after the root are allowed and ignored).
    pub fn parse_body(text: &str) -> Result<Self, CheckpointError> {
        let mut lines = text.split('\n');
        let origin = lines.next().unwrap_or("");
        if origin.is_empty() {
            return Err(CheckpointError::Body("empty origin line"));
        }
        let size_line = lines.next().ok_or(CheckpointError::Body("no size line"))?;
        if size_line.is_empty()
            || !size_line.bytes().all(|b| b.is_ascii_digit())
            || (size_line.len() > 1 && size_line.starts_with('0'))
        {
            return Err(CheckpointError::Body("the size is not a decimal number"));
        }
        let size: u64 = size_line
            .parse()
            .map_err(|_| CheckpointError::Body("the size is too large"))?;
        let root_line = lines.next().ok_or(CheckpointError::Body("no root line"))?;
        let root: Hash = B64
            .decode(root_line)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(CheckpointError::Body("the root is not 32 bytes of base64"))?;
        if !text.ends_with('\n') {
            return Err(CheckpointError::Body("no final newline"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }

    /// The signed note.
    pub fn sign(&self, key: &SignerKey) -> Result<String, CheckpointError> {
        Ok(note::sign(key, &self.body())?)
    }

    /// Verifies a signed checkpoint with `key` (whose name must be the origin).
    pub fn verify(note: &str, key: &VerifierKey) -> Result<Self, CheckpointError> {
        let text = note::verify(key, note)?;
        let cp = Self::parse_body(text)?;
        if cp.origin != key.name() {
            return Err(CheckpointError::Origin {
                got: cp.origin,
                want: key.name().to_owned(),
            });
        }
        Ok(cp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_refuse_edits() {
        let key = SignerKey::from_seed("meshaudit.local/log", &[1u8; 32]).unwrap();
        let cp = Checkpoint {
            origin: "meshaudit.local/log".into(),
            size: 42,
            root: [9u8; 32],
        };
        let note = cp.sign(&key).unwrap();
        assert!(note.starts_with("meshaudit.local/log\n42\nCQkJ"));
        assert_eq!(Checkpoint::verify(&note, &key.verifier()).unwrap(), cp);
        let edited = note.replacen("\n42\n", "\n43\n", 1);
        assert!(Checkpoint::verify(&edited, &key.verifier()).is_err());
        let other = SignerKey::from_seed("meshaudit.local/log", &[2u8; 32]).unwrap();
        assert!(Checkpoint::verify(&note, &other.verifier()).is_err());
        // The key's name must be the origin.
        let elsewhere = SignerKey::from_seed("other/log", &[1u8; 32]).unwrap();
        let foreign = cp.sign(&elsewhere).unwrap();
        assert!(matches!(
            Checkpoint::verify(&foreign, &elsewhere.verifier()),
            Err(CheckpointError::Origin { .. })
        ));
        for bad in ["o\n01\nAA==\n", "o\n1\n", "\n1\nAA==\n", "o\n-1\nAA==\n"] {
            assert!(Checkpoint::parse_body(bad).is_err(), "{bad:?}");
        }
    }
}
