//! Key material: the keys tokens are verified with, each pinned to one algorithm, and the
//! HS256 signing used to mint tokens.
//!
//! Verification keys come from three sources, all optional (at least one is needed for
//! [`Authenticator::has_keys`](super::Authenticator::has_keys) to be true):
//!
//! * an HS256 shared secret, at least [`MIN_HS256_SECRET_BYTES`] long;
//! * PEM public key files (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`);
//!   the algorithm is pinned by the key type: RSA → RS256, EC P-256 → ES256,
//!   Ed25519 → EdDSA. Private keys and certificates are refused;
//! * a JWKS file. Each JWK is pinned to exactly one algorithm: its `alg`
//!   member when present, otherwise derived from the key type (RSA → RS256,
//!   EC P-256 → ES256, OKP Ed25519 → EdDSA, oct → HS256). JWKs marked
//!   `"use": "enc"` are skipped.
//!
//! Every key is checked when it is loaded, so bad key material fails at startup naming its
//! file, never on a request. Minting ([`mint_hs256`], for `allot token`, `serve --dev` and
//! tests) is here too: it is the signing side of the same HS256 secret, and a file of its
//! own would hold one seven-line function.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header};

use super::Claims;

/// The shortest HS256 secret accepted (RFC 7518 §3.2: a key as long as the hash output).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// Mint an HS256 token (used by `allot token`, `serve --dev`, tests).
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
}

/// Problems loading the authentication configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key file could not be read.
    #[error("cannot read key file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file is not a usable public key.
    #[error("invalid public key file {}: {reason}", path.display())]
    InvalidPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A PEM file holds a private key where a public key was expected.
    #[error(
        "key file {} contains a private key; configure the public key only (e.g. `openssl pkey -in KEY -pubout`)",
        path.display()
    )]
    PrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The JWKS file is not valid or has no usable keys.
    #[error("invalid JWKS file {}: {reason}", path.display())]
    InvalidJwks {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The HS256 secret is unusable.
    #[error("invalid HS256 secret: {0}")]
    InvalidSecret(String),
}

/// One verification key, pinned to exactly one algorithm.
#[derive(Clone, Debug)]
pub(super) struct VerifyKey {
    /// `kid` (JWKS keys only).
    pub(super) kid: Option<String>,
    /// The only algorithm this key verifies.
    pub(super) alg: Algorithm,
    pub(super) key: DecodingKey,
    /// Whether the key came from the JWKS file.
    pub(super) from_jwks: bool,
}

/// Every configured verification key, in this order: the HS256 secret, the PEM files, the
/// JWKS file's keys. Fails with a message naming the file on unreadable or unusable key
/// material.
pub(super) fn load(
    hs256_secret: Option<&str>,
    public_key_files: &[PathBuf],
    jwks_file: Option<&Path>,
) -> Result<Vec<VerifyKey>, ConfigError> {
    let mut keys = Vec::new();

    if let Some(secret) = hs256_secret {
        // RFC 7518 §3.2: an HS256 key must be at least as long as the hash (256 bits).
        if secret.len() < MIN_HS256_SECRET_BYTES {
            return Err(ConfigError::InvalidSecret(format!(
                "the secret is {} bytes; HS256 needs at least {MIN_HS256_SECRET_BYTES} (e.g. `openssl rand -base64 48`)",
                secret.len()
            )));
        }
        keys.push(VerifyKey {
            kid: None,
            alg: Algorithm::HS256,
            key: DecodingKey::from_secret(secret.as_bytes()),
            from_jwks: false,
        });
    }

    for path in public_key_files {
        keys.push(load_pem_key(path)?);
    }

    if let Some(path) = jwks_file {
        keys.extend(load_jwks(path)?);
    }
    Ok(keys)
}

fn read_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The label of the first `-----BEGIN <label>-----` line, if any.
fn pem_label(text: &str) -> Option<&str> {
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let rest = &text[start..];
    let end = rest.find("-----")?;
    Some(rest[..end].trim())
}

fn load_pem_key(path: &Path) -> Result<VerifyKey, ConfigError> {
    let bytes = read_file(path)?;
    let invalid = |reason: String| ConfigError::InvalidPem {
        path: path.to_owned(),
        reason,
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| invalid("file is not PEM text".into()))?;
    let label = pem_label(text).ok_or_else(|| invalid("no PEM block found".into()))?;
    if label.contains("PRIVATE") {
        return Err(ConfigError::PrivateKey {
            path: path.to_owned(),
        });
    }
    let key = match label {
        "RSA PUBLIC KEY" => DecodingKey::from_rsa_pem(&bytes)
            .map_err(|e| invalid(format!("not a valid RSA public key: {e}")))?,
        "PUBLIC KEY" => DecodingKey::from_rsa_pem(&bytes)
            .or_else(|_| DecodingKey::from_ec_pem(&bytes))
            .or_else(|_| DecodingKey::from_ed_pem(&bytes))
            .map_err(|_| {
                invalid("not an RSA, EC P-256 or Ed25519 public key (SubjectPublicKeyInfo)".into())
            })?,
        "CERTIFICATE" => {
            return Err(invalid(
                "certificates are not supported; extract the public key with `openssl x509 -pubkey -noout`".into(),
            ));
        }
        other => return Err(invalid(format!("unsupported PEM block `{other}`"))),
    };
    let alg = match key.family() {
        AlgorithmFamily::Rsa => Algorithm::RS256,
        AlgorithmFamily::Ed => Algorithm::EdDSA,
        AlgorithmFamily::Ec => match key_curve(&key).map_err(&invalid)? {
            Some(EllipticCurve::P256) => Algorithm::ES256,
            other => {
                return Err(invalid(format!(
                    "unsupported EC curve {other:?}: only P-256 (ES256) is accepted"
                )));
            }
        },
        AlgorithmFamily::Hmac => return Err(invalid("not a public key".into())),
    };
    check_key(&key, alg).map_err(invalid)?;
    Ok(VerifyKey {
        kid: None,
        alg,
        key,
        from_jwks: false,
    })
}

/// The curve of an EC key (also validates the encoding).
fn key_curve(key: &DecodingKey) -> Result<Option<EllipticCurve>, String> {
    let jwk = Jwk::from_decoding_key(key, None).map_err(|e| format!("invalid key: {e}"))?;
    Ok(match jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => Some(p.curve),
        _ => None,
    })
}

/// Validates key material up front so bad keys fail at startup rather than
/// on the first request (and never panic in the verifier).
fn check_key(key: &DecodingKey, alg: Algorithm) -> Result<(), String> {
    if key.family() != alg.family() {
        return Err(format!(
            "key type does not match its pinned algorithm {alg:?}"
        ));
    }
    match (key.family(), key.kind()) {
        // Parses the PKCS#1 DER / checks EC point length / Ed25519 length.
        (AlgorithmFamily::Rsa, jsonwebtoken::DecodingKeyKind::SecretOrDer(_))
        | (AlgorithmFamily::Ec | AlgorithmFamily::Ed, _) => {
            Jwk::from_decoding_key(key, Some(alg)).map_err(|e| format!("invalid key: {e}"))?;
        }
        (AlgorithmFamily::Rsa, jsonwebtoken::DecodingKeyKind::RsaModulusExponent { n, e }) => {
            if n.iter().all(|b| *b == 0) || e.iter().all(|b| *b == 0) {
                return Err("RSA modulus/exponent is empty".into());
            }
        }
        (AlgorithmFamily::Hmac, _) => {
            if key.try_get_as_bytes().map(<[u8]>::is_empty).unwrap_or(true) {
                return Err("symmetric key is empty".into());
            }
        }
    }
    // Building the verifier parses EC/Ed points; a dummy signature just fails.
    jsonwebtoken::crypto::verify("", b"", key, alg)
        .map(|_| ())
        .map_err(|e| format!("unusable key for {alg:?}: {e}"))
}

fn load_jwks(path: &Path) -> Result<Vec<VerifyKey>, ConfigError> {
    let bytes = read_file(path)?;
    let invalid = |reason: String| ConfigError::InvalidJwks {
        path: path.to_owned(),
        reason,
    };
    let doc: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let Some(entries) = doc.get("keys").and_then(serde_json::Value::as_array) else {
        return Err(invalid("expected an object with a `keys` array".into()));
    };

    let mut keys = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let jwk: Jwk =
            serde_json::from_value(entry.clone()).map_err(|e| invalid(format!("key #{i}: {e}")))?;
        let label = match &jwk.common.key_id {
            Some(kid) => format!("key #{i} (kid `{kid}`)"),
            None => format!("key #{i}"),
        };
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            tracing::warn!(file = %path.display(), key = %label, "skipping JWK with \"use\": \"enc\"");
            continue;
        }
        let alg = jwk_alg(&jwk).map_err(|e| invalid(format!("{label}: {e}")))?;
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| invalid(format!("{label}: invalid key material: {e}")))?;
        check_key(&key, alg).map_err(|e| invalid(format!("{label}: {e}")))?;
        keys.push(VerifyKey {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
            from_jwks: true,
        });
    }
    if keys.is_empty() {
        return Err(invalid("contains no usable signing keys".into()));
    }
    Ok(keys)
}

/// The single algorithm a JWK is pinned to: its `alg` member if present
/// (checked against the key type), else derived from `kty`/`crv`.
fn jwk_alg(jwk: &Jwk) -> Result<Algorithm, String> {
    let derived = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => Some(Algorithm::EdDSA),
            _ => None,
        },
        AlgorithmParameters::OctetKey(_) => Some(Algorithm::HS256),
        _ => return Err("unsupported key type".into()),
    };
    let Some(declared) = jwk.common.key_algorithm else {
        return derived.ok_or_else(|| "unsupported curve".to_owned());
    };
    let alg = Algorithm::try_from(declared)
        .map_err(|_| format!("unsupported signature algorithm `{declared}`"))?;
    let compatible = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), a) => a.family() == AlgorithmFamily::Rsa,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => p.curve == EllipticCurve::P384,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        (AlgorithmParameters::OctetKey(_), a) => a.family() == AlgorithmFamily::Hmac,
        _ => false,
    };
    if compatible {
        Ok(alg)
    } else {
        Err(format!(
            "`alg` {declared} does not match the key type/curve"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testing::*;
    use crate::auth::{AuthConfig, AuthError, Authenticator, Claims, Role};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::{Value, json};

    #[test]
    fn mint_hs256_round_trips() {
        let c = Claims {
            sub: "alice".into(),
            roles: vec!["admin".into()],
            accounts: vec!["*".into()],
            iss: "allot".into(),
            aud: "allot".into(),
            exp: now() + 60,
        };
        let token = mint_hs256(SECRET.as_bytes(), &c).expect("mint");
        let caller = bearer(&hs_auth(), &token).expect("valid");
        assert!(caller.is_global());
        assert!(caller.has_any_role(&[Role::Procurement]));
    }

    #[test]
    fn pem_keys_are_pinned_by_type() {
        let a = pem_auth(&[
            fixture!("rsa_public.pem"),
            fixture!("ec_public.pem"),
            fixture!("ed_public.pem"),
        ]);
        let algs: Vec<Algorithm> = a.keys().iter().map(|k| k.alg).collect();
        assert_eq!(algs, [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]);
        // RS512 with the right RSA key is still refused: RSA keys are pinned to RS256.
        let token = sign(Algorithm::RS512, None, &rsa_key(), &claims());
        assert!(matches!(
            bearer(&a, &token),
            Err(AuthError::AlgorithmNotAllowed)
        ));
    }

    #[test]
    fn encoding_keys_accept_private_fixtures() {
        let _ = rsa_key();
        let _ = rsa2_key();
        EncodingKey::from_ec_pem(&read(fixture!("ec_private.pem"))).expect("ec pkcs8");
        EncodingKey::from_ed_pem(&read(fixture!("ed_private.pem"))).expect("ed");
    }

    #[test]
    fn config_errors_name_the_file() {
        let missing = Authenticator::from_config(&AuthConfig {
            public_key_files: vec!["/nonexistent/key.pem".into()],
            ..AuthConfig::default()
        })
        .expect_err("missing file");
        assert!(matches!(missing, ConfigError::Read { .. }));
        assert!(missing.to_string().contains("/nonexistent/key.pem"));

        let private = Authenticator::from_config(&AuthConfig {
            public_key_files: vec![fixture!("rsa_private.pem").into()],
            ..AuthConfig::default()
        })
        .expect_err("private key");
        assert!(matches!(private, ConfigError::PrivateKey { .. }));
        assert!(private.to_string().contains("rsa_private.pem"));

        let not_pem = Authenticator::from_config(&AuthConfig {
            public_key_files: vec![fixture!("jwks.json").into()],
            ..AuthConfig::default()
        })
        .expect_err("not pem");
        assert!(matches!(not_pem, ConfigError::InvalidPem { .. }));
        assert!(not_pem.to_string().contains("jwks.json"));

        let bad_jwks = Authenticator::from_config(&AuthConfig {
            jwks_file: Some(fixture!("rsa_public.pem").into()),
            ..AuthConfig::default()
        })
        .expect_err("bad jwks");
        assert!(matches!(bad_jwks, ConfigError::InvalidJwks { .. }));
        assert!(bad_jwks.to_string().contains("rsa_public.pem"));

        let empty_secret = Authenticator::from_config(&AuthConfig {
            hs256_secret: Some(String::new()),
            ..AuthConfig::default()
        })
        .expect_err("empty secret");
        assert!(matches!(empty_secret, ConfigError::InvalidSecret(_)));
    }

    #[test]
    fn pkcs1_rsa_public_key_is_accepted() {
        let a = pem_auth(&[fixture!("rsa_public_pkcs1.pem")]);
        let token = sign(Algorithm::RS256, None, &rsa_key(), &claims());
        assert!(bearer(&a, &token).is_ok());
    }

    #[test]
    fn non_p256_ec_pem_is_refused() {
        const P384_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEmkdf3Si5osjuCTANV89otGVgdiDDQCjs
n+xtWjL+ms0A4W1WLZ5I399wZWYLvnBc+QkNV7iILyr3DSaNd8/I0G3kmHcnQzZ8
0aajEOgFJmtN5inB4Q+J5uOp6e9Os3qg
-----END PUBLIC KEY-----
";
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p384.pem");
        std::fs::write(&path, P384_PUBLIC).expect("write");
        let err = Authenticator::from_config(&AuthConfig {
            public_key_files: vec![path],
            ..AuthConfig::default()
        })
        .expect_err("p384");
        assert!(matches!(err, ConfigError::InvalidPem { .. }), "{err}");
        assert!(err.to_string().contains("P-256"), "{err}");
    }

    #[test]
    fn jwk_pinning_rules() {
        let parse = |v: Value| -> Jwk { serde_json::from_value(v).expect("jwk") };
        let ed_x = URL_SAFE_NO_PAD.encode([7u8; 32]);
        assert_eq!(
            jwk_alg(&parse(json!({"kty": "oct", "k": "c2VjcmV0"}))),
            Ok(Algorithm::HS256)
        );
        assert_eq!(
            jwk_alg(&parse(json!({"kty": "OKP", "crv": "Ed25519", "x": ed_x}))),
            Ok(Algorithm::EdDSA)
        );
        assert_eq!(
            jwk_alg(&parse(
                json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "PS256"})
            )),
            Ok(Algorithm::PS256)
        );
        assert!(
            jwk_alg(&parse(
                json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "HS256"})
            ))
            .is_err()
        );
        assert!(
            jwk_alg(&parse(
                json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "RSA-OAEP"})
            ))
            .is_err()
        );
        assert!(
            jwk_alg(&parse(
                json!({"kty": "oct", "k": "c2VjcmV0", "alg": "RS256"})
            ))
            .is_err()
        );
    }

    #[test]
    fn jwks_oct_and_skipped_enc_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwks.json");
        let k = URL_SAFE_NO_PAD.encode(SECRET);
        let doc = json!({"keys": [
            {"kty": "oct", "kid": "hs", "k": k},
            {"kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "kid": "e1", "n": "AQAB", "e": "AQAB"},
        ]});
        std::fs::write(&path, serde_json::to_vec(&doc).expect("json")).expect("write");
        let a = Authenticator::from_config(&AuthConfig {
            jwks_file: Some(path.clone()),
            ..AuthConfig::default()
        })
        .expect("config");
        assert_eq!(a.keys().len(), 1);
        let t = sign(
            Algorithm::HS256,
            Some("hs"),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            &claims(),
        );
        assert!(bearer(&a, &t).is_ok());

        // A short Ed25519 key is refused at load time (and never reaches the verifier).
        let doc = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AQAB"}]});
        std::fs::write(&path, serde_json::to_vec(&doc).expect("json")).expect("write");
        let err = Authenticator::from_config(&AuthConfig {
            jwks_file: Some(path),
            ..AuthConfig::default()
        })
        .expect_err("short ed key");
        assert!(matches!(err, ConfigError::InvalidJwks { .. }), "{err}");
    }
}
