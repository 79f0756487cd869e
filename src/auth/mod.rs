//! Bearer-token authentication for the allot gRPC API.
//!
//! Every call carries a JWT in the gRPC `authorization` metadata as
//! `Bearer <jwt>` (the scheme is matched case-insensitively). The
//! [`Authenticator`] verifies it and yields the [`Caller`]; `api::access` checks the
//! caller's roles, the handlers its account scope.
//!
//! | file          | what it holds                                                            |
//! |---------------|--------------------------------------------------------------------------|
//! | `claims.rs`   | the claims, their bounds (`sub`, roles, account ids), [`Role`], [`Scope`], [`Caller`] |
//! | `keys.rs`     | key material: HS256 secrets (≥ 32 bytes), PEM and JWKS keys pinned to one algorithm each; [`mint_hs256`] |
//! | `verifier.rs` | the [`Authenticator`]: key selection by `kid` and `alg`, signature, `iss`/`aud`/`exp`, the cache of verified tokens |

mod claims;
mod keys;
#[cfg(test)]
mod testing;
mod verifier;

pub use claims::{
    Caller, Claims, MAX_ID_BYTES, MAX_ROLES, MAX_SCOPE_ACCOUNTS, MAX_SUB_BYTES, Role, Scope,
    UnknownRole,
};
pub use keys::{ConfigError, MIN_HS256_SECRET_BYTES, mint_hs256};
pub use verifier::{
    AuthConfig, AuthError, Authenticator, DEFAULT_AUDIENCE, DEFAULT_ISSUER, LEEWAY_SECS,
};
