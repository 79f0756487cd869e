//! The [`Authenticator`]: checks a bearer token against the configured keys and turns it into
//! a [`Caller`].
//!
//! The token's `alg` header is never trusted to choose an algorithm. It only
//! selects among keys whose *pinned* algorithm equals it (see `keys`), and each key is then
//! verified with its pinned algorithm alone. Consequently `alg: none` is
//! always rejected, and the HS/RS confusion attack (an HS256 token whose HMAC
//! secret is an RSA public key's PEM text) fails: RSA keys never verify HMAC.
//!
//! # Key selection
//!
//! * If the header carries a `kid`, the candidates are the JWKS keys with that
//!   `kid` (none → [`AuthError::UnknownKey`]).
//! * Without a `kid`, every configured key is a candidate.
//!
//! Candidates whose pinned algorithm differs from the header's `alg` are
//! dropped ([`AuthError::AlgorithmNotAllowed`] if none remain). The remaining
//! candidates are tried in order; the first one whose signature verifies
//! decides the outcome (so a correctly signed but expired token reports
//! [`AuthError::Expired`], not a signature error). If no signature verifies,
//! the result is [`AuthError::InvalidSignature`]. Header members such as
//! `jwk`, `jku`, `x5u` and `x5c` are never used to find keys.
//!
//! `iss` must equal the configured issuer, `aud` contain the configured audience, and `exp`
//! (and `nbf`, when present) hold with a leeway of [`LEEWAY_SECS`] seconds. Tokens that
//! verified are remembered (see `VERIFIED_TOKENS`); only `exp` is checked again on each use.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{
    Arc, RwLock,
    atomic::{AtomicU64, Ordering},
};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};

use super::keys::{self, ConfigError, VerifyKey};
use super::{Caller, Claims};
use crate::error::Reason;

/// Issuer expected when none is configured.
pub const DEFAULT_ISSUER: &str = "allot";
/// Audience expected when none is configured.
pub const DEFAULT_AUDIENCE: &str = "allot";
/// Clock-skew tolerance applied to `exp`/`nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// Longest token accepted; anything larger is rejected before any parsing.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a request could not be authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` metadata, or it carried no token.
    #[error("missing bearer token in `authorization` metadata")]
    MissingToken,
    /// The header or token is not well-formed.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `exp` is in the past (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// No candidate key verified the signature.
    #[error("token signature is invalid")]
    InvalidSignature,
    /// The header's `kid` matches no configured key.
    #[error("token `kid` does not match any configured key")]
    UnknownKey,
    /// The header's `alg` is `none`, unsupported, or not the pinned algorithm
    /// of any candidate key.
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// `iss` is not the configured issuer.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` does not contain the configured audience.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// Signature is fine but the claims are unacceptable (missing/ill-typed
    /// required claim, not yet valid, empty `sub`, ...).
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl AuthError {
    /// Stable machine-readable reason for error details.
    pub fn reason(&self) -> Reason {
        match self {
            AuthError::MissingToken => Reason::TokenMissing,
            AuthError::Malformed(_) => Reason::TokenMalformed,
            AuthError::Expired => Reason::TokenExpired,
            AuthError::InvalidSignature => Reason::TokenBadSignature,
            AuthError::UnknownKey => Reason::TokenUnknownKey,
            AuthError::AlgorithmNotAllowed => Reason::TokenAlgNotAllowed,
            AuthError::WrongIssuer => Reason::TokenWrongIssuer,
            AuthError::WrongAudience => Reason::TokenWrongAudience,
            AuthError::Invalid(_) => Reason::TokenInvalid,
        }
    }
}

/// Where verification keys come from and which `iss`/`aud` are expected.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// HS256 shared secret.
    pub hs256_secret: Option<String>,
    /// PEM public key files (RSA, EC P-256, Ed25519).
    pub public_key_files: Vec<PathBuf>,
    /// JWKS file (kid rotation).
    pub jwks_file: Option<PathBuf>,
    /// Expected `iss`; empty means [`DEFAULT_ISSUER`].
    pub issuer: String,
    /// Expected `aud`; empty means [`DEFAULT_AUDIENCE`].
    pub audience: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            hs256_secret: None,
            public_key_files: Vec::new(),
            jwks_file: None,
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
        }
    }
}

/// Verifies bearer tokens against the configured keys.
#[derive(Clone)]
pub struct Authenticator {
    keys: Arc<RwLock<KeySet>>,
    /// [`KeySet::generation`], read without the lock on every cached verification.
    generation: Arc<AtomicU64>,
    /// Where the keys came from, to read them again ([`Authenticator::reload`]).
    config: Arc<AuthConfig>,
    issuer: String,
    audience: String,
    /// Tokens that verified (see [`Authenticator::verify`]).
    verified: Arc<quick_cache::sync::Cache<String, Verified>>,
}

/// The keys in use, and the bytes of the files they were read from.
struct KeySet {
    keys: Arc<Vec<VerifyKey>>,
    files: Vec<Vec<u8>>,
    /// Moves when the keys change: tokens verified under other keys are checked again.
    generation: u64,
}

/// Tokens remembered after they verified. A backend sends the same token with every request
/// and checking its signature again was ~3% of the CPU of a debit (docs/BENCHMARKS.md). What
/// the signature, algorithm, issuer and audience checks establish is a fact of the token's
/// bytes and the keys (a remembered token counts only under the keys it verified with: a
/// reload that removes its key makes it fail), and `nbf` once passed stays passed; only `exp`
/// can change its answer, so it is checked on every use.
const VERIFIED_TOKENS: usize = 4096;

#[derive(Clone)]
struct Verified {
    caller: Caller,
    exp: u64,
    generation: u64,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self
            .keys()
            .iter()
            .map(|k| match &k.kid {
                Some(kid) => format!("{:?}(kid={kid})", k.alg),
                None => format!("{:?}", k.alg),
            })
            .collect();
        f.debug_struct("Authenticator")
            .field("keys", &keys)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl Authenticator {
    /// Load every configured key. Fails with a message naming the file on
    /// unreadable or unusable key material.
    pub fn from_config(cfg: &AuthConfig) -> Result<Self, ConfigError> {
        let files = key_files(cfg);
        let keys = keys::load(
            cfg.hs256_secret.as_deref(),
            &cfg.public_key_files,
            cfg.jwks_file.as_deref(),
        )?;

        let or_default = |s: &str, d: &str| {
            if s.trim().is_empty() {
                d.to_owned()
            } else {
                s.to_owned()
            }
        };
        Ok(Authenticator {
            keys: Arc::new(RwLock::new(KeySet {
                keys: Arc::new(keys),
                files,
                generation: 0,
            })),
            generation: Arc::default(),
            config: Arc::new(cfg.clone()),
            issuer: or_default(&cfg.issuer, DEFAULT_ISSUER),
            audience: or_default(&cfg.audience, DEFAULT_AUDIENCE),
            verified: Arc::new(quick_cache::sync::Cache::new(VERIFIED_TOKENS)),
        })
    }

    /// The keys in use.
    pub(super) fn keys(&self) -> Arc<Vec<VerifyKey>> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .clone()
    }

    /// False if no key is configured (the server refuses to start then).
    pub fn has_keys(&self) -> bool {
        !self.keys().is_empty()
    }

    /// Whether keys come from files (which [`Authenticator::reload`] reads again).
    pub fn has_key_files(&self) -> bool {
        !self.config.public_key_files.is_empty() || self.config.jwks_file.is_some()
    }

    /// Reads the key files again; if they changed and load (a JWKS without a usable key does
    /// not), verifies
    /// with those from now on (a token verified under the old keys is checked again on its
    /// next use). `Ok(true)` if the keys changed; on an error the keys in use stay.
    pub fn reload(&self) -> Result<bool, ConfigError> {
        let files = key_files(&self.config);
        if self.keys.read().unwrap_or_else(|e| e.into_inner()).files == files {
            return Ok(false);
        }
        let keys = keys::load(
            self.config.hs256_secret.as_deref(),
            &self.config.public_key_files,
            self.config.jwks_file.as_deref(),
        )?;
        let mut set = self.keys.write().unwrap_or_else(|e| e.into_inner());
        set.keys = Arc::new(keys);
        set.files = files;
        set.generation += 1;
        self.generation.store(set.generation, Ordering::Release);
        Ok(true)
    }

    /// Verifies a raw `authorization` header value (`"Bearer <jwt>"`, scheme
    /// case-insensitive).
    pub fn authenticate(&self, header: Option<&str>) -> Result<Caller, AuthError> {
        let value = header.map(str::trim).unwrap_or_default();
        if value.is_empty() {
            return Err(AuthError::MissingToken);
        }
        let (scheme, token) = value
            .split_once(|c: char| c.is_ascii_whitespace())
            .unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed(
                "authorization scheme must be `Bearer`".into(),
            ));
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        self.verify(token)
    }

    /// Verifies a bare JWT (no `Bearer` prefix).
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        self.verify_at(token, jsonwebtoken::get_current_timestamp())
    }

    /// [`Authenticator::verify`] with the clock read by the caller (seconds since the epoch);
    /// a token not seen before is checked in full (against the system clock).
    fn verify_at(&self, token: &str, now: u64) -> Result<Caller, AuthError> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(seen) = self.verified.get(token)
            && seen.generation == generation
        {
            // The same rule as the full check: expired once `exp` is over the leeway behind.
            if seen.exp < now.saturating_sub(LEEWAY_SECS) {
                return Err(AuthError::Expired);
            }
            return Ok(seen.caller);
        }
        let (caller, exp, generation) = self.verify_in_full(token)?;
        self.verified.insert(
            token.to_owned(),
            Verified {
                caller: caller.clone(),
                exp,
                generation,
            },
        );
        Ok(caller)
    }

    /// Every check: structure, algorithm, key, signature, issuer, audience, time claims.
    /// Returns the caller, the token's `exp` and the generation of the keys that verified it.
    fn verify_in_full(&self, token: &str) -> Result<(Caller, u64, u64), AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed("token is too long".into()));
        }
        let (alg, kid) = peek_header(token)?;
        let (keys, generation) = {
            let set = self.keys.read().unwrap_or_else(|e| e.into_inner());
            (set.keys.clone(), set.generation)
        };

        let candidates: Vec<&VerifyKey> = match &kid {
            Some(kid) => {
                let with_kid: Vec<&VerifyKey> = keys
                    .iter()
                    .filter(|k| k.from_jwks && k.kid.as_deref() == Some(kid.as_str()))
                    .collect();
                if with_kid.is_empty() {
                    return Err(AuthError::UnknownKey);
                }
                with_kid
            }
            None => keys.iter().collect(),
        };
        let candidates: Vec<&VerifyKey> = candidates.into_iter().filter(|k| k.alg == alg).collect();
        if candidates.is_empty() {
            return Err(AuthError::AlgorithmNotAllowed);
        }

        let validation = self.validation(alg);
        for key in candidates {
            match jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation) {
                Ok(data) => {
                    let claims: Claims = serde_json::from_value(data.claims)
                        .map_err(|e| AuthError::Invalid(format!("claims: {e}")))?;
                    let exp = claims.exp;
                    return Ok((Caller::from_claims(claims)?, exp, generation));
                }
                Err(e) => match e.kind() {
                    // Not this key: try the next candidate.
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidRsaKey(_)
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidEddsaKey
                    | ErrorKind::InvalidKeyFormat => continue,
                    // Anything else is independent of the key (a structural
                    // problem) or happened after the signature verified.
                    _ => return Err(map_decode_error(&e)),
                },
            }
        }
        Err(AuthError::InvalidSignature)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.validate_aud = true;
        v.set_issuer(&[self.issuer.as_str()]);
        v.set_audience(&[self.audience.as_str()]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v
    }
}

/// The bytes of the key files (unreadable ones as empty: the load that follows names them).
fn key_files(cfg: &AuthConfig) -> Vec<Vec<u8>> {
    cfg.public_key_files
        .iter()
        .map(PathBuf::as_path)
        .chain(cfg.jwks_file.as_deref())
        .map(|path| std::fs::read(path).unwrap_or_default())
        .collect()
}

/// Reads the JOSE header without trusting it: returns the requested
/// algorithm (rejecting `none` and anything unsupported) and the `kid`.
fn peek_header(token: &str) -> Result<(Algorithm, Option<String>), AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed(
            "a JWT has three dot-separated parts".into(),
        ));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|e| AuthError::Malformed(format!("header is not base64url: {e}")))?;
    let header: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| AuthError::Malformed(format!("header is not JSON: {e}")))?;
    let Some(obj) = header.as_object() else {
        return Err(AuthError::Malformed("header is not a JSON object".into()));
    };
    let alg = match obj.get("alg") {
        Some(serde_json::Value::String(s)) => s,
        Some(_) => return Err(AuthError::Malformed("header `alg` is not a string".into())),
        None => return Err(AuthError::Malformed("header has no `alg`".into())),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(AuthError::AlgorithmNotAllowed);
    }
    let alg = Algorithm::from_str(alg).map_err(|_| AuthError::AlgorithmNotAllowed)?;
    if obj.contains_key("crit") {
        return Err(AuthError::Malformed(
            "critical header extensions are not supported".into(),
        ));
    }
    let kid = match obj.get("kid") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(AuthError::Malformed("header `kid` is not a string".into())),
    };
    Ok((alg, kid))
}

fn map_decode_error(e: &jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidSignature => AuthError::InvalidSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => AuthError::AlgorithmNotAllowed,
        ErrorKind::MissingRequiredClaim(c) => {
            AuthError::Invalid(format!("missing required claim `{c}`"))
        }
        ErrorKind::InvalidClaimFormat(c) => AuthError::Invalid(format!("claim `{c}` is ill-typed")),
        ErrorKind::ImmatureSignature => AuthError::Invalid("token is not valid yet (`nbf`)".into()),
        ErrorKind::InvalidSubject => AuthError::Invalid("subject is not accepted".into()),
        ErrorKind::InvalidToken => AuthError::Malformed("not a JWT".into()),
        ErrorKind::Base64(err) => AuthError::Malformed(format!("bad base64url: {err}")),
        ErrorKind::Json(err) => AuthError::Malformed(format!("bad JSON: {err}")),
        ErrorKind::Utf8(err) => AuthError::Malformed(format!("bad UTF-8: {err}")),
        other => AuthError::Invalid(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testing::*;
    use crate::auth::{Role, Scope};
    use jsonwebtoken::EncodingKey;
    use serde_json::json;
    use std::collections::BTreeSet;

    #[test]
    fn valid_hs256() {
        let caller = bearer(&hs_auth(), &hs(&claims())).expect("valid");
        assert_eq!(caller.sub, "svc-billing");
        assert_eq!(
            caller.roles,
            BTreeSet::from([Role::Service, Role::AccountManager])
        );
        assert_eq!(
            caller.scope,
            Scope::Accounts(BTreeSet::from(["acct-root".to_owned()]))
        );
    }

    #[test]
    fn valid_rs256_pem() {
        let a = pem_auth(&[fixture!("rsa_public.pem")]);
        let token = sign(Algorithm::RS256, None, &rsa_key(), &claims());
        assert_eq!(bearer(&a, &token).expect("valid").sub, "svc-billing");
    }

    #[test]
    fn valid_es256_pem() {
        let a = pem_auth(&[fixture!("ec_public.pem")]);
        let key = EncodingKey::from_ec_pem(&read(fixture!("ec_private.pem"))).expect("ec key");
        let token = sign(Algorithm::ES256, None, &key, &claims());
        assert_eq!(bearer(&a, &token).expect("valid").sub, "svc-billing");
    }

    #[test]
    fn valid_eddsa_pem() {
        let a = pem_auth(&[fixture!("ed_public.pem")]);
        let key = EncodingKey::from_ed_pem(&read(fixture!("ed_private.pem"))).expect("ed key");
        let token = sign(Algorithm::EdDSA, None, &key, &claims());
        assert_eq!(bearer(&a, &token).expect("valid").sub, "svc-billing");
    }

    #[test]
    fn jwks_kid_rotation() {
        let a = jwks_auth();
        let t1 = sign(Algorithm::RS256, Some("k1"), &rsa_key(), &claims());
        let t2 = sign(Algorithm::RS256, Some("k2"), &rsa2_key(), &claims());
        assert!(bearer(&a, &t1).is_ok());
        // k2 has no `alg` member: pinned to RS256 from kty.
        assert!(bearer(&a, &t2).is_ok());
        // Without a kid, JWKS keys are still candidates.
        let t3 = sign(Algorithm::RS256, None, &rsa2_key(), &claims());
        assert!(bearer(&a, &t3).is_ok());
        // Right kid, wrong signer.
        let t4 = sign(Algorithm::RS256, Some("k1"), &rsa2_key(), &claims());
        assert!(matches!(bearer(&a, &t4), Err(AuthError::InvalidSignature)));
    }

    #[test]
    fn jwks_unknown_kid() {
        let a = jwks_auth();
        let t = sign(Algorithm::RS256, Some("k9"), &rsa_key(), &claims());
        let err = bearer(&a, &t).expect_err("unknown kid");
        assert!(matches!(err, AuthError::UnknownKey));
        assert_eq!(err.reason(), Reason::TokenUnknownKey);
    }

    #[test]
    fn kid_only_selects_jwks_keys() {
        // A kid never selects the HS secret or PEM keys.
        let a = Authenticator::from_config(&AuthConfig {
            hs256_secret: Some(SECRET.into()),
            public_key_files: vec![fixture!("rsa_public.pem").into()],
            ..AuthConfig::default()
        })
        .expect("config");
        let t = sign(Algorithm::RS256, Some("k1"), &rsa_key(), &claims());
        assert!(matches!(bearer(&a, &t), Err(AuthError::UnknownKey)));
    }

    #[test]
    fn jwks_kid_with_other_alg_is_not_allowed() {
        let a = jwks_auth();
        let t = sign(
            Algorithm::HS256,
            Some("k1"),
            &EncodingKey::from_secret(b"whatever"),
            &claims(),
        );
        assert!(matches!(
            bearer(&a, &t),
            Err(AuthError::AlgorithmNotAllowed)
        ));
    }

    #[test]
    fn missing_header() {
        let a = hs_auth();
        for h in [
            None,
            Some(""),
            Some("   "),
            Some("Bearer"),
            Some("Bearer   "),
        ] {
            let err = a.authenticate(h).expect_err("missing");
            assert!(matches!(err, AuthError::MissingToken), "{h:?}");
            assert_eq!(err.reason(), Reason::TokenMissing);
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let a = hs_auth();
        let t = hs(&claims());
        assert!(a.authenticate(Some(&format!("bearer {t}"))).is_ok());
        assert!(a.authenticate(Some(&format!("BEARER  {t} "))).is_ok());
    }

    #[test]
    fn non_bearer_scheme() {
        let a = hs_auth();
        let t = hs(&claims());
        for h in [format!("Basic {t}"), format!("Token {t}"), t.clone()] {
            let err = a.authenticate(Some(&h)).expect_err("scheme");
            assert!(matches!(err, AuthError::Malformed(_)), "{h}: {err:?}");
            assert_eq!(err.reason(), Reason::TokenMalformed);
        }
    }

    #[test]
    fn malformed_token() {
        let a = hs_auth();
        let good = hs(&claims());
        let mut parts = good.split('.');
        let (h, p, s) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let cases = [
            "not-a-jwt".to_owned(),
            "a.b".to_owned(),
            format!("{h}.{p}.{s}.extra"),
            format!("!!!.{p}.{s}"),
            format!("{}.{p}.{s}", URL_SAFE_NO_PAD.encode(b"not json")),
            format!("{}.{p}.{s}", b64(&json!({"typ": "JWT"}))),
            format!("{}.{p}.{s}", b64(&json!({"alg": 5}))),
            format!("{}.{p}.{s}", b64(&json!({"alg": "HS256", "kid": 7}))),
            format!("{h}.{p}.***"),
            "x".repeat(MAX_TOKEN_LEN + 1),
        ];
        for t in cases {
            let err = bearer(&a, &t).expect_err("malformed");
            assert!(matches!(err, AuthError::Malformed(_)), "{t}: {err:?}");
        }
        // Garbage payload under a valid HS256 signature is still malformed.
        let header = b64(&json!({"alg": "HS256", "typ": "JWT"}));
        let msg = format!("{header}.{}", URL_SAFE_NO_PAD.encode(b"{not json"));
        let sig = jsonwebtoken::crypto::sign(
            msg.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .expect("sign");
        assert!(matches!(
            bearer(&a, &format!("{msg}.{sig}")),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn expired() {
        let a = hs_auth();
        let mut c = claims();
        c["exp"] = json!(now() - 120);
        let err = bearer(&a, &hs(&c)).expect_err("expired");
        assert!(matches!(err, AuthError::Expired));
        assert_eq!(err.reason(), Reason::TokenExpired);
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let a = hs_auth();
        let mut c = claims();
        let exp = now() + 100;
        c["exp"] = json!(exp);
        let token = hs(&c);
        assert!(a.verify_at(&token, now()).is_ok());
        assert_eq!(a.verified.len(), 1, "remembered after it verified");
        // From memory now: the same leeway rule as the full check.
        assert!(a.verify_at(&token, exp + LEEWAY_SECS).is_ok());
        assert!(matches!(
            a.verify_at(&token, exp + LEEWAY_SECS + 1),
            Err(AuthError::Expired)
        ));
    }

    #[test]
    fn only_tokens_that_verify_are_remembered() {
        let a = hs_auth();
        let token = hs(&claims());
        let (head, _) = token.rsplit_once('.').expect("three parts");
        let forged = format!("{head}.{}", "A".repeat(43));
        for _ in 0..2 {
            assert!(matches!(
                a.verify(&forged),
                Err(AuthError::InvalidSignature)
            ));
        }
        let mut c = claims();
        c["exp"] = json!(now() - 120);
        let expired = hs(&c);
        for _ in 0..2 {
            assert!(matches!(a.verify(&expired), Err(AuthError::Expired)));
        }
        assert_eq!(a.verified.len(), 0);
        assert!(a.verify(&token).is_ok());
        assert_eq!(a.verified.len(), 1);
    }

    #[test]
    fn expiry_within_leeway_is_accepted() {
        let mut c = claims();
        c["exp"] = json!(now() - 10);
        assert!(bearer(&hs_auth(), &hs(&c)).is_ok());
    }

    #[test]
    fn expired_reports_expired_even_after_other_candidates_fail() {
        // rsa is tried first and fails its signature; rsa2 verifies, then exp fails.
        let a = pem_auth(&[fixture!("rsa_public.pem"), fixture!("rsa2_public.pem")]);
        let mut c = claims();
        c["exp"] = json!(now() - 3600);
        let t = sign(Algorithm::RS256, None, &rsa2_key(), &c);
        assert!(matches!(bearer(&a, &t), Err(AuthError::Expired)));
    }

    #[test]
    fn expired_with_wrong_key_is_a_signature_error() {
        let a = pem_auth(&[fixture!("rsa_public.pem")]);
        let mut c = claims();
        c["exp"] = json!(now() - 3600);
        let t = sign(Algorithm::RS256, None, &rsa2_key(), &c);
        assert!(matches!(bearer(&a, &t), Err(AuthError::InvalidSignature)));
    }

    #[test]
    fn wrong_key() {
        let a = pem_auth(&[fixture!("rsa_public.pem")]);
        let t = sign(Algorithm::RS256, None, &rsa2_key(), &claims());
        let err = bearer(&a, &t).expect_err("wrong key");
        assert!(matches!(err, AuthError::InvalidSignature));
        assert_eq!(err.reason(), Reason::TokenBadSignature);

        let t = sign(
            Algorithm::HS256,
            None,
            &EncodingKey::from_secret(b"some-other-secret"),
            &claims(),
        );
        assert!(matches!(
            bearer(&hs_auth(), &t),
            Err(AuthError::InvalidSignature)
        ));
    }

    #[test]
    fn alg_none_is_rejected() {
        let a = Authenticator::from_config(&AuthConfig {
            hs256_secret: Some(SECRET.into()),
            public_key_files: vec![fixture!("rsa_public.pem").into()],
            jwks_file: Some(fixture!("jwks.json").into()),
            ..AuthConfig::default()
        })
        .expect("config");
        for alg in ["none", "None", "NONE"] {
            let header = b64(&json!({"alg": alg, "typ": "JWT"}));
            let t = format!("{header}.{}.", b64(&claims()));
            let err = bearer(&a, &t).expect_err("alg none");
            assert!(matches!(err, AuthError::AlgorithmNotAllowed), "{alg}");
            assert_eq!(err.reason(), Reason::TokenAlgNotAllowed);
        }
        // Unsupported algorithm names are refused the same way.
        let header = b64(&json!({"alg": "HS1", "typ": "JWT"}));
        let t = format!("{header}.{}.c2ln", b64(&claims()));
        assert!(matches!(
            bearer(&a, &t),
            Err(AuthError::AlgorithmNotAllowed)
        ));
    }

    #[test]
    fn hs_rs_confusion_is_rejected() {
        let pem = read(fixture!("rsa_public.pem"));
        let forged = sign(
            Algorithm::HS256,
            None,
            &EncodingKey::from_secret(&pem),
            &claims(),
        );
        // Only the RSA key configured: no key is pinned to HS256.
        let a = pem_auth(&[fixture!("rsa_public.pem")]);
        assert!(matches!(
            bearer(&a, &forged),
            Err(AuthError::AlgorithmNotAllowed)
        ));
        // With an HS secret too, the forged token still only meets the real secret.
        let a = Authenticator::from_config(&AuthConfig {
            hs256_secret: Some(SECRET.into()),
            public_key_files: vec![fixture!("rsa_public.pem").into()],
            ..AuthConfig::default()
        })
        .expect("config");
        assert!(matches!(
            bearer(&a, &forged),
            Err(AuthError::InvalidSignature)
        ));
        // Same via JWKS (kid k1 pinned RS256).
        let forged_kid = sign(
            Algorithm::HS256,
            Some("k1"),
            &EncodingKey::from_secret(&pem),
            &claims(),
        );
        assert!(matches!(
            bearer(&jwks_auth(), &forged_kid),
            Err(AuthError::AlgorithmNotAllowed)
        ));
    }

    #[test]
    fn wrong_issuer() {
        let mut c = claims();
        c["iss"] = json!("someone-else");
        let err = bearer(&hs_auth(), &hs(&c)).expect_err("iss");
        assert!(matches!(err, AuthError::WrongIssuer));
        assert_eq!(err.reason(), Reason::TokenWrongIssuer);
    }

    #[test]
    fn wrong_audience() {
        let mut c = claims();
        c["aud"] = json!("other-service");
        let err = bearer(&hs_auth(), &hs(&c)).expect_err("aud");
        assert!(matches!(err, AuthError::WrongAudience));
        assert_eq!(err.reason(), Reason::TokenWrongAudience);

        c["aud"] = json!(["other-service", "billing"]);
        assert!(matches!(
            bearer(&hs_auth(), &hs(&c)),
            Err(AuthError::WrongAudience)
        ));
    }

    #[test]
    fn audience_array_is_accepted() {
        let mut c = claims();
        c["aud"] = json!(["other-service", "allot"]);
        assert!(bearer(&hs_auth(), &hs(&c)).is_ok());
    }

    #[test]
    fn configurable_issuer_and_audience() {
        let a = Authenticator::from_config(&AuthConfig {
            hs256_secret: Some(SECRET.into()),
            issuer: "https://idp.example".into(),
            audience: "allot-prod".into(),
            ..AuthConfig::default()
        })
        .expect("config");
        let mut c = claims();
        assert!(matches!(bearer(&a, &hs(&c)), Err(AuthError::WrongIssuer)));
        c["iss"] = json!("https://idp.example");
        assert!(matches!(bearer(&a, &hs(&c)), Err(AuthError::WrongAudience)));
        c["aud"] = json!("allot-prod");
        assert!(bearer(&a, &hs(&c)).is_ok());
    }

    #[test]
    fn empty_issuer_and_audience_fall_back_to_defaults() {
        let a = Authenticator::from_config(&AuthConfig {
            hs256_secret: Some(SECRET.into()),
            issuer: String::new(),
            audience: String::new(),
            ..AuthConfig::default()
        })
        .expect("config");
        assert!(bearer(&a, &hs(&claims())).is_ok());
    }

    #[test]
    fn required_claims() {
        for claim in ["exp", "iss", "aud", "sub"] {
            let mut c = claims();
            c.as_object_mut().expect("object").remove(claim);
            let err = bearer(&hs_auth(), &hs(&c)).expect_err(claim);
            assert!(matches!(err, AuthError::Invalid(_)), "{claim}: {err:?}");
            assert_eq!(err.reason(), Reason::TokenInvalid);
        }
        let mut c = claims();
        c["sub"] = json!("");
        assert!(matches!(
            bearer(&hs_auth(), &hs(&c)),
            Err(AuthError::Invalid(_))
        ));
        let mut c = claims();
        c["roles"] = json!("admin");
        assert!(matches!(
            bearer(&hs_auth(), &hs(&c)),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn not_yet_valid() {
        let mut c = claims();
        c["nbf"] = json!(now() + 3600);
        assert!(matches!(
            bearer(&hs_auth(), &hs(&c)),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn has_keys() {
        let a = Authenticator::from_config(&AuthConfig::default()).expect("config");
        assert!(!a.has_keys());
        assert!(hs_auth().has_keys());
        assert!(jwks_auth().has_keys());
    }
}
