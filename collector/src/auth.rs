//! Request authentication as pure functions: API keys (a list, for rotation),
//! the admin token of the read endpoints, and the idempotency scope. Every
//! comparison with a secret is constant-time and checks every candidate.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::config::Secret;
use meshaudit_event::integrity::sha256_hex;
use subtle::ConstantTimeEq;

/// Constant-time equality of two byte strings (the length is not secret).
fn ct_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// True when `given` is one of `keys`; every key is compared so timing does
/// not tell which one matched.
pub fn api_key_matches(keys: &[Secret], given: Option<&str>) -> bool {
    let Some(given) = given else {
        return false;
    };
    keys.iter().fold(false, |ok, k| {
        ok | ct_bytes(k.0.as_bytes(), given.as_bytes())
    })
}

/// The admin token from `Authorization: Bearer …` or `X-Admin-Token`.
pub fn admin_token_matches(
    token: &Secret,
    authorization: Option<&str>,
    x_admin_token: Option<&str>,
) -> bool {
    let bearer = authorization.and_then(|h| {
        let h = h.trim();
        let (scheme, rest) = h.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    let by_bearer = bearer.is_some_and(|b| ct_bytes(token.0.as_bytes(), b.as_bytes()));
    let by_header =
        x_admin_token.is_some_and(|t| ct_bytes(token.0.as_bytes(), t.trim().as_bytes()));
    by_bearer | by_header
}

/// Idempotency keys are scoped per API key: the scope is the key's SHA-256
/// (so no secret is stored), or "" when the request carried none.
pub fn idempotency_scope(api_key: Option<&str>) -> String {
    api_key
        .map(|k| sha256_hex(k.as_bytes()))
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_rotate() {
        let keys = vec![Secret("old".into()), Secret("new".into())];
        assert!(api_key_matches(&keys, Some("old")));
        assert!(api_key_matches(&keys, Some("new")));
        assert!(!api_key_matches(&keys, Some("ne")));
        assert!(!api_key_matches(&keys, None));
        assert!(!api_key_matches(&[], Some("")));
    }

    #[test]
    fn admin_token_bearer_or_header() {
        let t = Secret("tok".into());
        assert!(admin_token_matches(&t, Some("Bearer tok"), None));
        assert!(admin_token_matches(&t, Some("bearer  tok "), None));
        assert!(admin_token_matches(&t, None, Some("tok")));
        assert!(!admin_token_matches(&t, Some("Basic tok"), None));
        assert!(!admin_token_matches(&t, Some("Bearer nope"), Some("nope")));
        assert!(!admin_token_matches(&t, None, None));
    }

    #[test]
    fn scope_hides_the_key() {
        assert_eq!(idempotency_scope(None), "");
        assert_eq!(idempotency_scope(Some("k")).len(), 64);
    }
}
