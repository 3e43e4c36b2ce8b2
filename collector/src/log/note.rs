//! C2SP `signed-note` with Ed25519 (pure): signing a text and verifying a
//! note. The keys and their Go `note` text forms are the event crate's
//! ([`meshaudit_event::workload_key`], shared with SPEC §10's workload keys):
//!
//! - verifier key: `<name>+<8 hex key id>+<base64(0x01 ‖ public key)>`
//! - signer key: `PRIVATE+KEY+<name>+<8 hex key id>+<base64(0x01 ‖ seed)>`
//! - signature line: `— <name> <base64(key id ‖ signature)>`
//! - key id: the first 4 bytes of `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
pub use meshaudit_event::workload_key::{key_id, KeyError, SignerKey, VerifierKey};

/// Most signature lines a note may carry (the spec asks for at least 16).
const MAX_SIGNATURES: usize = 100;

/// Why a key or a note is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed key: {0}")]
    BadKey(#[from] KeyError),
    #[error("no randomness for a new key")]
    NoRandomness,
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    #[error("the note has no signature by {0}")]
    NotSigned(String),
    #[error("the signature by {0} does not verify")]
    BadSignature(String),
}

/// A new signer key named `name`, from 32 random bytes of the operating system.
pub fn generate(name: &str) -> Result<SignerKey, NoteError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|_| NoteError::NoRandomness)?;
    Ok(SignerKey::from_seed(name, &seed)?)
}

/// Signs `text` (which must end with a newline): the note.
pub fn sign(key: &SignerKey, text: &str) -> Result<String, NoteError> {
    check_text(text)?;
    let verifier = key.verifier();
    let mut blob = key_id(key.name(), &verifier.public_bytes()).to_vec();
    blob.extend_from_slice(&key.sign(text.as_bytes()));
    Ok(format!("{text}\n— {} {}\n", key.name(), B64.encode(blob)))
}

/// Verifies `note` with `key` and returns its text. Signatures by other keys
/// are ignored; one by this key must be there and every one by it must verify.
pub fn verify<'a>(key: &VerifierKey, note: &'a str) -> Result<&'a str, NoteError> {
    let (text, signatures) = split_note(note)?;
    let id = key_id(key.name(), &key.public_bytes());
    let mut found = false;
    for line in signatures {
        let (name, blob) = parse_signature_line(line)?;
        if name != key.name() || blob.len() < 4 || blob[..4] != id {
            continue;
        }
        found = true;
        let sig: [u8; 64] = blob[4..]
            .try_into()
            .map_err(|_| NoteError::BadSignature(name.to_owned()))?;
        if !key.verify(text.as_bytes(), &sig) {
            return Err(NoteError::BadSignature(name.to_owned()));
        }
    }
    if found {
        Ok(text)
    } else {
        Err(NoteError::NotSigned(key.name().to_owned()))
    }
}

/// Text ending in a newline, no control characters other than newline.
fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed("the text must end with a newline"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed("control characters"));
    }
    Ok(())
}

/// Splits a note at its last blank line: (text with its final newline, signature lines).
pub fn split_note(note: &str) -> Result<(&str, Vec<&str>), NoteError> {
    check_text(note)?;
    let cut = note
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
    let text = &note[..cut + 1];
    let sigs: Vec<&str> = note[cut + 2..].lines().collect();
    if sigs.is_empty() {
        return Err(NoteError::Malformed("no signature lines"));
    }
    if sigs.len() > MAX_SIGNATURES {
        return Err(NoteError::Malformed("too many signatures"));
    }
    Ok((text, sigs))
}

/// `— <name> <base64>` → (name, decoded bytes).
fn parse_signature_line(line: &str) -> Result<(&str, Vec<u8>), NoteError> {
    let rest = line.strip_prefix("— ").ok_or(NoteError::Malformed(
        "a signature line starts with an em dash",
    ))?;
    let (name, b64) = rest.split_once(' ').ok_or(NoteError::Malformed(
        "a signature line is: — name signature",
    ))?;
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(NoteError::Malformed("bad key name in a signature line"));
    }
    let blob = B64
        .decode(b64)
        .map_err(|_| NoteError::Malformed("a signature is not base64"))?;
    Ok((name, blob))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of C2SP `signed-note` ("Verifier keys", Example) verifies with ours.
    #[test]
    fn the_spec_example_verifies() {
        let vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
        let note = "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
        let v = VerifierKey::parse(vkey).unwrap();
        assert_eq!(v.to_text(), vkey);
        assert_eq!(verify(&v, note).unwrap(), "This is an example message.\n");
        let edited = note.replace("an example", "my example");
        assert_eq!(
            verify(&v, &edited),
            Err(NoteError::BadSignature("example.com/foo".into()))
        );
        // A key with the same name but another id is not "this key".
        let other = generate("example.com/foo").unwrap().verifier();
        assert!(matches!(verify(&other, note), Err(NoteError::NotSigned(_))));
    }

    #[test]
    fn sign_then_verify_and_text_forms_round_trip() {
        let s = SignerKey::from_seed("meshaudit.local/log", &[7u8; 32]).unwrap();
        let text = s.to_text();
        assert!(text.starts_with("PRIVATE+KEY+meshaudit.local/log+"));
        let again = SignerKey::parse(&text).unwrap();
        assert_eq!(again.to_text(), text);
        let v = VerifierKey::parse(&s.verifier().to_text()).unwrap();
        let note = sign(&s, "hello\nworld\n").unwrap();
        assert_eq!(verify(&v, &note).unwrap(), "hello\nworld\n");
        // Foreign signatures are ignored as long as ours is there.
        let other = generate("someone.else/k").unwrap();
        let theirs = sign(&other, "hello\nworld\n").unwrap();
        let cosigned = format!("{note}{}", theirs.split("\n\n").nth(1).unwrap());
        assert_eq!(verify(&v, &cosigned).unwrap(), "hello\nworld\n");
        assert!(sign(&s, "no newline").is_err());
        // A wrong id in the text form is refused.
        let mut bad = text.clone();
        bad.replace_range(
            "PRIVATE+KEY+meshaudit.local/log+".len().."PRIVATE+KEY+meshaudit.local/log+".len() + 8,
            "00000000",
        );
        assert!(SignerKey::parse(&bad).is_err());
        assert!(VerifierKey::parse("a b+00000000+AQ==").is_err());
    }
}
