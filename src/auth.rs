//! Bearer-token authentication for the allot gRPC API.
//!
//! Every call carries a JWT in the gRPC `authorization` metadata as
//! `Bearer <jwt>` (the scheme is matched case-insensitively).
//!
//! # Claims
//!
//! | claim      | meaning                                                              |
//! |------------|----------------------------------------------------------------------|
//! | `sub`      | caller identity (required, non-empty)                                |
//! | `roles`    | array of role names (see [`Role`]); unknown names are ignored        |
//! | `accounts` | array of account ids the caller may act on, or `["*"]` for all       |
//! | `iss`      | issuer, required, must equal the configured issuer (default `allot`) |
//! | `aud`      | audience, required, must contain the configured audience (default `allot`); a string or an array |
//! | `exp`      | expiry (seconds since the epoch), required                           |
//!
//! `exp` (and `nbf`, when present) are checked with a leeway of
//! [`LEEWAY_SECS`] seconds. Empty `roles`/`accounts` are accepted: such a
//! caller is authenticated but authorised for nothing.
//!
//! # Keys and algorithms
//!
//! Verification keys come from three sources, all optional (at least one is
//! needed for [`Authenticator::has_keys`] to be true):
//!
//! * an HS256 shared secret;
//! * PEM public key files (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`);
//!   the algorithm is pinned by the key type: RSA → RS256, EC P-256 → ES256,
//!   Ed25519 → EdDSA. Private keys and certificates are refused;
//! * a JWKS file. Each JWK is pinned to exactly one algorithm: its `alg`
//!   member when present, otherwise derived from the key type (RSA → RS256,
//!   EC P-256 → ES256, OKP Ed25519 → EdDSA, oct → HS256). JWKs marked
//!   `"use": "enc"` are skipped.
//!
//! The token's `alg` header is never trusted to choose an algorithm. It only
//! selects among keys whose *pinned* algorithm equals it, and each key is then
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

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};

/// Issuer expected when none is configured.
pub const DEFAULT_ISSUER: &str = "allot";
/// Audience expected when none is configured.
pub const DEFAULT_AUDIENCE: &str = "allot";
/// Clock-skew tolerance applied to `exp`/`nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// Longest token accepted; anything larger is rejected before any parsing.
const MAX_TOKEN_LEN: usize = 16 * 1024;

// ---------------------------------------------------------------------------
// Roles, scope, caller
// ---------------------------------------------------------------------------

/// A role granted by the `roles` claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Machine caller that debits/credits on behalf of a product.
    Service,
    /// Manages accounts within its scope.
    AccountManager,
    /// Purchases/grants credits.
    Procurement,
    /// Operational read/maintenance access.
    Operator,
    /// Full access; passes every role check.
    Admin,
}

impl Role {
    /// Every role, in declaration order.
    pub const ALL: [Role; 5] = [
        Role::Service,
        Role::AccountManager,
        Role::Procurement,
        Role::Operator,
        Role::Admin,
    ];

    /// The wire name used in the `roles` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Service => "service",
            Role::AccountManager => "account_manager",
            Role::Procurement => "procurement",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned when parsing an unknown role name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown role `{0}` (expected one of: service, account_manager, procurement, operator, admin)"
)]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// Which accounts a caller may act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every account (`"accounts": ["*"]`).
    All,
    /// The listed accounts and all of their descendants.
    Accounts(BTreeSet<String>),
}

/// The shortest HS256 secret accepted (RFC 7518 §3.2: a key as long as the hash output).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// The longest `sub` accepted (OpenID Connect: at most 255 ASCII characters).
pub const MAX_SUB_BYTES: usize = 255;
/// The most entries in a token's `roles` claim.
pub const MAX_ROLES: usize = 32;
/// The most account ids in a token's `accounts` claim.
pub const MAX_SCOPE_ACCOUNTS: usize = 1000;
/// The longest account id in a token's `accounts` claim (ids are at most 64 bytes).
pub const MAX_ID_BYTES: usize = 64;

/// An authenticated caller, derived from a verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`.
    pub sub: String,
    /// Recognised roles from the `roles` claim.
    pub roles: BTreeSet<Role>,
    /// Account scope from the `accounts` claim.
    pub scope: Scope,
}

impl Caller {
    /// True if the caller holds any of `roles`. [`Role::Admin`] always passes.
    pub fn has_any_role(&self, roles: &[Role]) -> bool {
        self.roles.contains(&Role::Admin) || roles.iter().any(|r| self.roles.contains(r))
    }

    /// True if the token's scope covers an account whose ancestry (root first,
    /// the account itself last) is given.
    pub fn covers(&self, ancestry: &[&str]) -> bool {
        match &self.scope {
            Scope::All => true,
            Scope::Accounts(ids) => ancestry.iter().any(|id| ids.contains(*id)),
        }
    }

    /// True if the caller's scope is every account.
    pub fn is_global(&self) -> bool {
        matches!(self.scope, Scope::All)
    }

    fn from_claims(claims: Claims) -> Result<Self, AuthError> {
        if claims.sub.trim().is_empty() {
            return Err(AuthError::Invalid("`sub` claim is empty".into()));
        }
        // Bounds (docs/ARCHITECTURE.md, "Limits"): `sub` is stored (entries' actor,
        // idempotency scopes), so it is held to OpenID Connect's 255 bytes; the lists only
        // need to be sane.
        if claims.sub.len() > MAX_SUB_BYTES {
            return Err(AuthError::Invalid(format!(
                "`sub` claim is longer than {MAX_SUB_BYTES} bytes"
            )));
        }
        if claims.sub.chars().any(char::is_control) {
            return Err(AuthError::Invalid(
                "`sub` claim contains control characters".into(),
            ));
        }
        if claims.roles.len() > MAX_ROLES {
            return Err(AuthError::Invalid(format!(
                "`roles` claim lists more than {MAX_ROLES} roles"
            )));
        }
        if claims.accounts.len() > MAX_SCOPE_ACCOUNTS
            || claims.accounts.iter().any(|a| a.len() > MAX_ID_BYTES)
        {
            return Err(AuthError::Invalid(format!(
                "`accounts` claim lists more than {MAX_SCOPE_ACCOUNTS} ids or an id longer than {MAX_ID_BYTES} bytes"
            )));
        }
        let roles = claims
            .roles
            .iter()
            .filter_map(|r| match r.parse::<Role>() {
                Ok(role) => Some(role),
                Err(_) => {
                    tracing::debug!(sub = %claims.sub, role = %r, "ignoring unknown role in token");
                    None
                }
            })
            .collect();
        let scope = if claims.accounts.iter().any(|a| a == "*") {
            Scope::All
        } else {
            Scope::Accounts(
                claims
                    .accounts
                    .into_iter()
                    .filter(|a| !a.is_empty())
                    .collect(),
            )
        };
        Ok(Caller {
            sub: claims.sub,
            roles,
            scope,
        })
    }
}

// ---------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------

/// JWT claims understood by allot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Caller identity.
    pub sub: String,
    /// Role names (see [`Role`]).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Account ids in scope, or `["*"]` for all accounts.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Issuer.
    pub iss: String,
    /// Audience. Incoming tokens may carry a string or an array; an array
    /// deserialises to its first element (the audience itself is validated
    /// against the whole array before this struct is built).
    #[serde(deserialize_with = "string_or_first")]
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    #[serde(deserialize_with = "numeric_date")]
    pub exp: u64,
}

fn string_or_first<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => Ok(s),
        OneOrMany::Many(v) => v
            .into_iter()
            .next()
            .ok_or_else(|| serde::de::Error::custom("`aud` array is empty")),
    }
}

fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        Int(u64),
        Float(f64),
    }
    match Num::deserialize(d)? {
        Num::Int(n) => Ok(n),
        Num::Float(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => {
            // Truncation is intended: NumericDate may carry fractional seconds.
            Ok(f as u64)
        }
        Num::Float(_) => Err(serde::de::Error::custom(
            "NumericDate out of range for a u64",
        )),
    }
}

/// Mint an HS256 token (used by `allot token`, `serve --dev`, tests).
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

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
    /// Stable machine-readable reason code (UPPER_SNAKE) for error details.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "TOKEN_MISSING",
            AuthError::Malformed(_) => "TOKEN_MALFORMED",
            AuthError::Expired => "TOKEN_EXPIRED",
            AuthError::InvalidSignature => "TOKEN_BAD_SIGNATURE",
            AuthError::UnknownKey => "TOKEN_UNKNOWN_KEY",
            AuthError::AlgorithmNotAllowed => "TOKEN_ALG_NOT_ALLOWED",
            AuthError::WrongIssuer => "TOKEN_WRONG_ISSUER",
            AuthError::WrongAudience => "TOKEN_WRONG_AUDIENCE",
            AuthError::Invalid(_) => "TOKEN_INVALID",
        }
    }
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

// ---------------------------------------------------------------------------
// Configuration and authenticator
// ---------------------------------------------------------------------------

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

/// One verification key, pinned to exactly one algorithm.
#[derive(Clone, Debug)]
struct VerifyKey {
    /// `kid` (JWKS keys only).
    kid: Option<String>,
    /// The only algorithm this key verifies.
    alg: Algorithm,
    key: DecodingKey,
    /// Whether the key came from the JWKS file.
    from_jwks: bool,
}

/// Verifies bearer tokens against the configured keys.
#[derive(Clone)]
pub struct Authenticator {
    keys: Vec<VerifyKey>,
    issuer: String,
    audience: String,
    /// Tokens that verified (see [`Authenticator::verify`]).
    verified: std::sync::Arc<quick_cache::sync::Cache<String, Verified>>,
}

/// Tokens remembered after they verified. A backend sends the same token with every request
/// and checking its signature again was ~3% of the CPU of a debit (docs/BENCHMARKS.md). What
/// the signature, algorithm, issuer and audience checks establish is a fact of the token's
/// bytes (the keys are fixed for the life of the process), and `nbf` once passed stays
/// passed; only `exp` can change its answer, so it is checked on every use.
const VERIFIED_TOKENS: usize = 4096;

#[derive(Clone)]
struct Verified {
    caller: Caller,
    exp: u64,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self
            .keys
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
        let mut keys = Vec::new();

        if let Some(secret) = &cfg.hs256_secret {
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

        for path in &cfg.public_key_files {
            keys.push(load_pem_key(path)?);
        }

        if let Some(path) = &cfg.jwks_file {
            keys.extend(load_jwks(path)?);
        }

        let or_default = |s: &str, d: &str| {
            if s.trim().is_empty() {
                d.to_owned()
            } else {
                s.to_owned()
            }
        };
        Ok(Authenticator {
            keys,
            issuer: or_default(&cfg.issuer, DEFAULT_ISSUER),
            audience: or_default(&cfg.audience, DEFAULT_AUDIENCE),
            verified: std::sync::Arc::new(quick_cache::sync::Cache::new(VERIFIED_TOKENS)),
        })
    }

    /// False if no key is configured (the server refuses to start then).
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
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
        if let Some(seen) = self.verified.get(token) {
            // The same rule as the full check: expired once `exp` is over the leeway behind.
            if seen.exp < now.saturating_sub(LEEWAY_SECS) {
                return Err(AuthError::Expired);
            }
            return Ok(seen.caller);
        }
        let (caller, exp) = self.verify_in_full(token)?;
        self.verified.insert(
            token.to_owned(),
            Verified {
                caller: caller.clone(),
                exp,
            },
        );
        Ok(caller)
    }

    /// Every check: structure, algorithm, key, signature, issuer, audience, time claims.
    /// Returns the caller and the token's `exp`.
    fn verify_in_full(&self, token: &str) -> Result<(Caller, u64), AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed("token is too long".into()));
        }
        let (alg, kid) = peek_header(token)?;

        let candidates: Vec<&VerifyKey> = match &kid {
            Some(kid) => {
                let with_kid: Vec<&VerifyKey> = self
                    .keys
                    .iter()
                    .filter(|k| k.from_jwks && k.kid.as_deref() == Some(kid.as_str()))
                    .collect();
                if with_kid.is_empty() {
                    return Err(AuthError::UnknownKey);
                }
                with_kid
            }
            None => self.keys.iter().collect(),
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
                    return Ok((Caller::from_claims(claims)?, exp));
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

// ---------------------------------------------------------------------------
// Key loading
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const SECRET: &str = "test-secret-that-is-long-enough-for-hs256";

    macro_rules! fixture {
        ($name:literal) => {
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/", $name)
        };
    }

    fn read(path: &str) -> Vec<u8> {
        std::fs::read(path).expect("fixture readable")
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims() -> Value {
        json!({
            "sub": "svc-billing",
            "roles": ["service", "account_manager"],
            "accounts": ["acct-root"],
            "iss": "allot",
            "aud": "allot",
            "exp": now() + 600,
        })
    }

    fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, key).expect("encode")
    }

    fn hs(claims: &Value) -> String {
        sign(
            Algorithm::HS256,
            None,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            claims,
        )
    }

    fn rsa_key() -> EncodingKey {
        EncodingKey::from_rsa_pem(&read(fixture!("rsa_private.pem"))).expect("rsa key")
    }

    fn rsa2_key() -> EncodingKey {
        EncodingKey::from_rsa_pem(&read(fixture!("rsa2_private.pem"))).expect("rsa2 key")
    }

    fn hs_auth() -> Authenticator {
        Authenticator::from_config(&AuthConfig {
            hs256_secret: Some(SECRET.into()),
            ..AuthConfig::default()
        })
        .expect("config")
    }

    fn pem_auth(files: &[&str]) -> Authenticator {
        Authenticator::from_config(&AuthConfig {
            public_key_files: files.iter().map(PathBuf::from).collect(),
            ..AuthConfig::default()
        })
        .expect("config")
    }

    fn jwks_auth() -> Authenticator {
        Authenticator::from_config(&AuthConfig {
            jwks_file: Some(fixture!("jwks.json").into()),
            ..AuthConfig::default()
        })
        .expect("config")
    }

    fn bearer(a: &Authenticator, token: &str) -> Result<Caller, AuthError> {
        a.authenticate(Some(&format!("Bearer {token}")))
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
    }

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
    fn pem_keys_are_pinned_by_type() {
        let a = pem_auth(&[
            fixture!("rsa_public.pem"),
            fixture!("ec_public.pem"),
            fixture!("ed_public.pem"),
        ]);
        let algs: Vec<Algorithm> = a.keys.iter().map(|k| k.alg).collect();
        assert_eq!(algs, [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]);
        // RS512 with the right RSA key is still refused: RSA keys are pinned to RS256.
        let token = sign(Algorithm::RS512, None, &rsa_key(), &claims());
        assert!(matches!(
            bearer(&a, &token),
            Err(AuthError::AlgorithmNotAllowed)
        ));
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
        assert_eq!(err.reason(), "TOKEN_UNKNOWN_KEY");
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
            assert_eq!(err.reason(), "TOKEN_MISSING");
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
            assert_eq!(err.reason(), "TOKEN_MALFORMED");
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
        assert_eq!(err.reason(), "TOKEN_EXPIRED");
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
        assert_eq!(err.reason(), "TOKEN_BAD_SIGNATURE");

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
            assert_eq!(err.reason(), "TOKEN_ALG_NOT_ALLOWED");
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
        assert_eq!(err.reason(), "TOKEN_WRONG_ISSUER");
    }

    #[test]
    fn wrong_audience() {
        let mut c = claims();
        c["aud"] = json!("other-service");
        let err = bearer(&hs_auth(), &hs(&c)).expect_err("aud");
        assert!(matches!(err, AuthError::WrongAudience));
        assert_eq!(err.reason(), "TOKEN_WRONG_AUDIENCE");

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
            assert_eq!(err.reason(), "TOKEN_INVALID");
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
    fn roles_and_scope() {
        let mut c = claims();
        c["roles"] = json!(["operator", "procurement", "superuser", "ADMIN"]);
        c["accounts"] = json!(["acct-a", "acct-b"]);
        let caller = bearer(&hs_auth(), &hs(&c)).expect("valid");
        // Unknown (and differently-cased) role names are ignored.
        assert_eq!(
            caller.roles,
            BTreeSet::from([Role::Operator, Role::Procurement])
        );
        assert!(caller.has_any_role(&[Role::Operator, Role::Service]));
        assert!(!caller.has_any_role(&[Role::Service, Role::Admin]));
        assert!(!caller.has_any_role(&[]));
        assert!(!caller.is_global());

        // Ancestry is root-first, the account itself last.
        assert!(caller.covers(&["acct-a"]));
        assert!(caller.covers(&["acct-a", "acct-a-child", "acct-a-grandchild"]));
        assert!(caller.covers(&["root", "acct-b"]));
        // Sibling of a scoped account, or its parent, is outside.
        assert!(!caller.covers(&["root", "acct-c"]));
        assert!(!caller.covers(&["root"]));
        assert!(!caller.covers(&[]));
    }

    #[test]
    fn wildcard_scope_and_admin() {
        let mut c = claims();
        c["roles"] = json!(["admin"]);
        c["accounts"] = json!(["acct-a", "*"]);
        let caller = bearer(&hs_auth(), &hs(&c)).expect("valid");
        assert!(caller.is_global());
        assert_eq!(caller.scope, Scope::All);
        assert!(caller.covers(&["anything", "at-all"]));
        assert!(caller.has_any_role(&[Role::Service]));
    }

    #[test]
    fn empty_roles_and_accounts_are_allowed() {
        let mut c = claims();
        let obj = c.as_object_mut().expect("object");
        obj.remove("roles");
        obj.remove("accounts");
        let caller = bearer(&hs_auth(), &hs(&c)).expect("valid");
        assert!(caller.roles.is_empty());
        assert_eq!(caller.scope, Scope::Accounts(BTreeSet::new()));
        assert!(!caller.has_any_role(&[Role::Service]));
        assert!(!caller.covers(&["acct-root"]));
    }

    #[test]
    fn role_names_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.to_string().parse::<Role>(), Ok(r));
        }
        assert_eq!("account_manager".parse::<Role>(), Ok(Role::AccountManager));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn encoding_keys_accept_private_fixtures() {
        let _ = rsa_key();
        let _ = rsa2_key();
        EncodingKey::from_ec_pem(&read(fixture!("ec_private.pem"))).expect("ec pkcs8");
        EncodingKey::from_ed_pem(&read(fixture!("ed_private.pem"))).expect("ed");
    }

    #[test]
    fn has_keys() {
        let a = Authenticator::from_config(&AuthConfig::default()).expect("config");
        assert!(!a.has_keys());
        assert!(hs_auth().has_keys());
        assert!(jwks_auth().has_keys());
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
        assert_eq!(a.keys.len(), 1);
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
