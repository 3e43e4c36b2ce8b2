//! Workload keys (SPEC §10): Ed25519 keys in the Go `note` text formats of
//! SPEC §9, the bytes a batch signature covers, and the
//! `X-Meshaudit-Batch-Signature` header.
//!
//! - signer: `PRIVATE+KEY+<name>+<8 hex key id>+<base64(0x01 ‖ 32-byte seed)>`
//! - verifier: `<name>+<8 hex key id>+<base64(0x01 ‖ 32-byte public key)>`
//! - key id: the first 4 bytes of `SHA-256(<name> ‖ 0x0A ‖ 0x01 ‖ <public key>)`
//! - batch bytes: `meshaudit-batch-v1\n<keyid>\n<source>\n<batch seq>\n<hex batch_digest>\n`
//! - header: `keyid=<keyid>, sig=<base64 Ed25519 signature>`
//!
//! Pure: no clock, no randomness (a signer key is parsed, never generated
//! here), so it builds for `wasm32-wasip1` inside the filter too. A signer
//! key's `Debug` and every error leave the seed out.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;

/// The algorithm byte of an Ed25519 key in the note formats.
pub const ALG_ED25519: u8 = 0x01;

/// The first line of the bytes a batch signature covers.
pub const BATCH_CONTEXT: &str = "meshaudit-batch-v1";

/// Why a key text (or a header) was refused. Never holds key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a key in the note text format ({0})")]
    Format(&'static str),
    #[error("the key name is empty, has spaces or '+', or has ','")]
    Name,
    #[error("the key is not base64")]
    Base64,
    #[error("unknown key algorithm (only Ed25519, 0x01)")]
    Algorithm,
    #[error("the key is not 32 bytes")]
    Length,
    #[error("the key id does not match the name and key")]
    KeyId,
    #[error("not a valid Ed25519 public key")]
    PublicKey,
}

/// A Go `note` key name (non-empty, no white space, no `+`), and no `,` so
/// it can stand in the `X-Meshaudit-Batch-Signature` header.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['+', ',']) && !name.chars().any(char::is_whitespace)
}

/// `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[..4]`.
pub fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// `<name>`, `<8 hex id>`, `<base64(0x01 ‖ 32 bytes)>` → (name, id, bytes).
fn split_key(text: &str) -> Result<(&str, [u8; 4], [u8; 32]), KeyError> {
    // From the left, as Go's `note` does: names have no '+', base64 may.
    let mut parts = text.trim().splitn(3, '+');
    let (Some(name), Some(id_hex), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(KeyError::Format("expected <name>+<key id>+<key>"));
    };
    if !valid_name(name) {
        return Err(KeyError::Name);
    }
    let mut id = [0u8; 4];
    if id_hex.len() != 8 || hex::decode_to_slice(id_hex, &mut id).is_err() {
        return Err(KeyError::Format("the key id is not 8 hex digits"));
    }
    let raw = B64.decode(b64).map_err(|_| KeyError::Base64)?;
    let (&alg, key) = raw.split_first().ok_or(KeyError::Length)?;
    if alg != ALG_ED25519 {
        return Err(KeyError::Algorithm);
    }
    let key: [u8; 32] = key.try_into().map_err(|_| KeyError::Length)?;
    Ok((name, id, key))
}

fn key_text(name: &str, public: &[u8; 32], key: &[u8; 32]) -> String {
    let mut raw = Vec::with_capacity(33);
    raw.push(ALG_ED25519);
    raw.extend_from_slice(key);
    format!(
        "{name}+{}+{}",
        hex::encode(key_id(name, public)),
        B64.encode(raw)
    )
}

/// An Ed25519 verifier (public) key with its name.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    public: VerifyingKey,
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl VerifierKey {
    /// Parses `<name>+<8 hex key id>+<base64(0x01 ‖ public key)>`, checking the id.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let (name, id, public) = split_key(text)?;
        if key_id(name, &public) != id {
            return Err(KeyError::KeyId);
        }
        Self::from_public(name, &public)
    }

    /// A named key from the raw 32 public bytes.
    pub fn from_public(name: &str, public: &[u8; 32]) -> Result<Self, KeyError> {
        if !valid_name(name) {
            return Err(KeyError::Name);
        }
        let public = VerifyingKey::from_bytes(public).map_err(|_| KeyError::PublicKey)?;
        Ok(Self {
            name: name.to_owned(),
            public,
        })
    }

    /// A named key from base64 of the 32 public bytes (the registry's other form).
    pub fn from_base64(name: &str, b64: &str) -> Result<Self, KeyError> {
        let raw = B64.decode(b64.trim()).map_err(|_| KeyError::Base64)?;
        let public: [u8; 32] = raw.as_slice().try_into().map_err(|_| KeyError::Length)?;
        Self::from_public(name, &public)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public_bytes(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    /// The 4-byte key id, as 8 lowercase hex digits.
    pub fn key_id_hex(&self) -> String {
        hex::encode(key_id(&self.name, &self.public_bytes()))
    }

    /// The verifier key text.
    pub fn to_text(&self) -> String {
        let public = self.public_bytes();
        key_text(&self.name, &public, &public)
    }

    /// True when `signature` is this key's Ed25519 signature of `message`
    /// (strict: non-canonical signatures and weak keys are refused).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.public
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }

    /// [`Self::verify`] with the signature in base64 (`false` if it is not 64 bytes).
    pub fn verify_base64(&self, message: &[u8], signature_b64: &str) -> bool {
        decode_signature(signature_b64).is_some_and(|sig| self.verify(message, &sig))
    }
}

/// An Ed25519 signer key with its name; `Debug` shows the name only.
#[derive(Clone)]
pub struct SignerKey {
    name: String,
    signing: SigningKey,
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignerKey({}, [redacted])", self.name)
    }
}

impl SignerKey {
    /// Parses `PRIVATE+KEY+<name>+<8 hex key id>+<base64(0x01 ‖ seed)>`,
    /// checking the id against the public key the seed gives.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let rest = text
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(KeyError::Format("a signer key starts with PRIVATE+KEY+"))?;
        let (name, id, seed) = split_key(rest)?;
        let key = Self::from_seed(name, &seed)?;
        if key_id(name, &key.signing.verifying_key().to_bytes()) != id {
            return Err(KeyError::KeyId);
        }
        Ok(key)
    }

    /// A named key from its 32-byte seed (the caller brings the randomness).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, KeyError> {
        if !valid_name(name) {
            return Err(KeyError::Name);
        }
        Ok(Self {
            name: name.to_owned(),
            signing: SigningKey::from_bytes(seed),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signer key text (holds the seed: for key generation only).
    pub fn to_text(&self) -> String {
        let public = self.signing.verifying_key().to_bytes();
        format!(
            "PRIVATE+KEY+{}",
            key_text(&self.name, &public, &self.signing.to_bytes())
        )
    }

    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            public: self.signing.verifying_key(),
        }
    }

    /// The Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

fn decode_signature(b64: &str) -> Option<[u8; 64]> {
    B64.decode(b64.trim()).ok()?.as_slice().try_into().ok()
}

/// The bytes a batch signature covers:
/// `meshaudit-batch-v1\n<keyid>\n<source>\n<batch seq>\n<hex batch_digest>\n`.
pub fn batch_signed_bytes(
    keyid: &str,
    source: &str,
    batch_seq: &str,
    digest: &[u8; 32],
) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(BATCH_CONTEXT.len() + keyid.len() + source.len() + batch_seq.len() + 69);
    for part in [BATCH_CONTEXT, keyid, source, batch_seq] {
        out.extend_from_slice(part.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(hex::encode(digest).as_bytes());
    out.push(b'\n');
    out
}

/// A parsed `X-Meshaudit-Batch-Signature`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSignature {
    pub keyid: String,
    pub signature: [u8; 64],
}

impl BatchSignature {
    /// Signs a batch: the header value's parts.
    pub fn sign(key: &SignerKey, source: &str, batch_seq: &str, digest: &[u8; 32]) -> Self {
        let bytes = batch_signed_bytes(key.name(), source, batch_seq, digest);
        Self {
            keyid: key.name().to_owned(),
            signature: key.sign(&bytes),
        }
    }

    /// `keyid=<keyid>, sig=<base64>`.
    pub fn header_value(&self) -> String {
        format!("keyid={}, sig={}", self.keyid, self.signature_base64())
    }

    pub fn signature_base64(&self) -> String {
        B64.encode(self.signature)
    }

    /// Parses the header: `keyid=…` and `sig=…`, comma-separated, in any
    /// order, names case-insensitive; anything else is refused.
    pub fn parse(value: &str) -> Result<Self, KeyError> {
        let (mut keyid, mut sig) = (None, None);
        for param in value.split(',') {
            let (name, v) = param
                .trim()
                .split_once('=')
                .ok_or(KeyError::Format("expected keyid=<keyid>, sig=<base64>"))?;
            let slot = match name.trim().to_ascii_lowercase().as_str() {
                "keyid" => &mut keyid,
                "sig" => &mut sig,
                _ => return Err(KeyError::Format("unknown parameter")),
            };
            if slot.replace(v.trim()).is_some() {
                return Err(KeyError::Format("repeated parameter"));
            }
        }
        let keyid = keyid.ok_or(KeyError::Format("keyid is missing"))?;
        if !valid_name(keyid) {
            return Err(KeyError::Name);
        }
        let sig = sig.ok_or(KeyError::Format("sig is missing"))?;
        let signature =
            decode_signature(sig).ok_or(KeyError::Format("sig is not base64 of 64 bytes"))?;
        Ok(Self {
            keyid: keyid.to_owned(),
            signature,
        })
    }

    /// True when `key` signed this batch (the header's keyid is part of the bytes).
    pub fn verify(
        &self,
        key: &VerifierKey,
        source: &str,
        batch_seq: &str,
        digest: &[u8; 32],
    ) -> bool {
        let bytes = batch_signed_bytes(&self.keyid, source, batch_seq, digest);
        key.verify(&bytes, &self.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fixed seed 0x00..0x1f under the name `ns1-k1` (also the docs' worked example).
    fn seed() -> [u8; 32] {
        std::array::from_fn(|i| i as u8)
    }

    #[test]
    fn signer_and_verifier_texts_round_trip() {
        let k = SignerKey::from_seed("ns1-k1", &seed()).unwrap();
        let text = k.to_text();
        assert!(text.starts_with("PRIVATE+KEY+ns1-k1+"), "{text}");
        let back = SignerKey::parse(&text).unwrap();
        assert_eq!(back.sign(b"x"), k.sign(b"x"));
        let vk = VerifierKey::parse(&k.verifier().to_text()).unwrap();
        assert_eq!(vk, k.verifier());
        assert_eq!(vk.name(), "ns1-k1");
        assert!(!format!("{k:?}").contains(&text[text.len() - 20..]));
    }

    #[test]
    fn key_ids_are_checked() {
        let k = SignerKey::from_seed("a", &seed()).unwrap();
        let text = k.verifier().to_text();
        // Another name with the same id and key.
        let renamed = text.replacen("a+", "b+", 1);
        assert_eq!(VerifierKey::parse(&renamed), Err(KeyError::KeyId));
        let stext = k.to_text();
        let bad_id = format!(
            "PRIVATE+KEY+a+00000000+{}",
            stext.splitn(5, '+').nth(4).unwrap()
        );
        assert_eq!(SignerKey::parse(&bad_id).map(|_| ()), Err(KeyError::KeyId));
    }

    #[test]
    fn bad_keys_are_refused_with_their_reason() {
        let k = SignerKey::from_seed("a", &seed()).unwrap().verifier();
        let id = k.key_id_hex();
        let short = format!("a+{id}+{}", B64.encode([1u8; 31]));
        assert_eq!(VerifierKey::parse(&short), Err(KeyError::Length));
        let rsa = format!("a+{id}+{}", B64.encode([2u8; 33]));
        assert_eq!(VerifierKey::parse(&rsa), Err(KeyError::Algorithm));
        assert_eq!(
            VerifierKey::parse(&format!("a+{id}+!!!")),
            Err(KeyError::Base64)
        );
        assert_eq!(
            VerifierKey::parse(&format!("a b+{id}+AQ==")),
            Err(KeyError::Name)
        );
        assert!(matches!(
            VerifierKey::parse("nothing"),
            Err(KeyError::Format(_))
        ));
        assert!(matches!(
            SignerKey::parse(&k.to_text()),
            Err(KeyError::Format(_))
        ));
        assert_eq!(VerifierKey::from_base64("a", "AAAA"), Err(KeyError::Length));
        assert_eq!(
            VerifierKey::from_base64("a", &B64.encode(k.public_bytes())),
            Ok(k)
        );
    }

    #[test]
    fn batch_bytes_are_exact() {
        let d = [0xabu8; 32];
        let b = batch_signed_bytes("k1", "ns/pod", "7", &d);
        let want = format!("meshaudit-batch-v1\nk1\nns/pod\n7\n{}\n", "ab".repeat(32));
        assert_eq!(b, want.as_bytes());
    }

    #[test]
    fn batch_signature_header_round_trip_and_verification() {
        let k = SignerKey::from_seed("ns1-k1", &seed()).unwrap();
        let d = [7u8; 32];
        let sig = BatchSignature::sign(&k, "ns1/pod-a", "3", &d);
        let header = sig.header_value();
        assert!(header.starts_with("keyid=ns1-k1, sig="));
        let parsed = BatchSignature::parse(&header).unwrap();
        assert_eq!(parsed, sig);
        let vk = k.verifier();
        assert!(parsed.verify(&vk, "ns1/pod-a", "3", &d));
        assert!(!parsed.verify(&vk, "ns1/pod-b", "3", &d));
        assert!(!parsed.verify(&vk, "ns1/pod-a", "4", &d));
        assert!(!parsed.verify(&vk, "ns1/pod-a", "3", &[8u8; 32]));
        let other = SignerKey::from_seed("ns1-k1", &[9u8; 32])
            .unwrap()
            .verifier();
        assert!(!parsed.verify(&other, "ns1/pod-a", "3", &d));
        // Order and case of the parameters do not matter; junk does.
        let swapped = format!("SIG={}, KeyId=ns1-k1", sig.signature_base64());
        assert_eq!(BatchSignature::parse(&swapped).unwrap(), sig);
        for bad in [
            "keyid=ns1-k1",
            "sig=AAAA",
            "keyid=a, sig=AAAA",
            "keyid=a, keyid=b, sig=x",
            "keyid=a, sig=x, extra=1",
            "garbage",
        ] {
            assert!(BatchSignature::parse(bad).is_err(), "{bad}");
        }
    }

    /// Known answers computed independently with Python `cryptography`
    /// (scripts/workload_key_kat.py): key texts, batch digest and signature.
    #[test]
    fn python_cryptography_known_answers() {
        let k = SignerKey::from_seed("ns1-k1", &seed()).unwrap();
        assert_eq!(
            k.to_text(),
            "PRIVATE+KEY+ns1-k1+ac3bc1dd+AQABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f"
        );
        assert_eq!(
            k.verifier().to_text(),
            "ns1-k1+ac3bc1dd+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
        );
        let h1: [u8; 32] = Sha256::digest(b"event-1").into();
        let h2: [u8; 32] = Sha256::digest(b"event-2").into();
        let d = crate::integrity::batch_digest([&h1, &h2]);
        assert_eq!(
            hex::encode(d),
            "16ccd433cf8ffb1b23fd799282d0f6b95608a1e0e2ac06f404dfea451f7eda84"
        );
        let sig = BatchSignature::sign(&k, "ns1/pod-a", "3", &d);
        assert_eq!(
            sig.signature_base64(),
            "+oZZTdp9t4k4EwRog7bL/tzXm55XV5hqqgCW9WPAO+CiOgNoRCMr1yd/1LaSt/fKanFaffC1S9zIbqdsVMYpBQ=="
        );
    }

    #[test]
    fn rfc8032_test_vector_1() {
        // RFC 8032 §7.1 TEST 1: empty message.
        let mut sk = [0u8; 32];
        hex::decode_to_slice(
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            &mut sk,
        )
        .unwrap();
        let k = SignerKey::from_seed("t", &sk).unwrap();
        assert_eq!(
            hex::encode(k.verifier().public_bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            hex::encode(k.sign(b"")),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
    }
}
