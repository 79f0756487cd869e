//! Fixtures shared by the unit tests of `claims`, `keys` and `verifier`: an HS256 secret, the
//! key files in `tests/fixtures/`, token signing, and authenticators over each key source.

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::{AuthConfig, AuthError, Authenticator, Caller};

pub(super) const SECRET: &str = "test-secret-that-is-long-enough-for-hs256";

macro_rules! fixture {
    ($name:literal) => {
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/", $name)
    };
}
pub(super) use fixture;

pub(super) fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).expect("fixture readable")
}

pub(super) fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

pub(super) fn claims() -> Value {
    json!({
        "sub": "svc-billing",
        "roles": ["service", "account_manager"],
        "accounts": ["acct-root"],
        "iss": "allot",
        "aud": "allot",
        "exp": now() + 600,
    })
}

pub(super) fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("encode")
}

pub(super) fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

pub(super) fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&read(fixture!("rsa_private.pem"))).expect("rsa key")
}

pub(super) fn rsa2_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&read(fixture!("rsa2_private.pem"))).expect("rsa2 key")
}

pub(super) fn hs_auth() -> Authenticator {
    Authenticator::from_config(&AuthConfig {
        hs256_secret: Some(SECRET.into()),
        ..AuthConfig::default()
    })
    .expect("config")
}

pub(super) fn pem_auth(files: &[&str]) -> Authenticator {
    Authenticator::from_config(&AuthConfig {
        public_key_files: files.iter().map(PathBuf::from).collect(),
        ..AuthConfig::default()
    })
    .expect("config")
}

pub(super) fn jwks_auth() -> Authenticator {
    Authenticator::from_config(&AuthConfig {
        jwks_file: Some(fixture!("jwks.json").into()),
        ..AuthConfig::default()
    })
    .expect("config")
}

pub(super) fn bearer(a: &Authenticator, token: &str) -> Result<Caller, AuthError> {
    a.authenticate(Some(&format!("Bearer {token}")))
}

pub(super) fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}
