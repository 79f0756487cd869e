//! allot — prepaid credit wallets with versioned rate cards, debited atomically over gRPC.
//!
//! A tour (see docs/ARCHITECTURE.md for more):
//! * `domain` — the pure rules: exact amounts, pricing, balances, burn order.
//! * `store` — sea-orm persistence; `store::ledger` applies batches of ledger operations in one
//!   transaction and `store::batcher` groups concurrent requests into those batches.
//! * `api` — thin tonic handlers: authenticate, check role and scope, validate, call the store.
//! * `auth` — JWT verification (HS256, RS256/ES256/EdDSA PEM keys, JWKS) and roles/scope.
//! * `server` — wiring, health, reflection, graceful shutdown.
//! * `cli` — the `allot` command line (server, migrations, tokens, and a client for every role).

pub mod admission;
pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod domain;
pub mod error;
/// Fuzzing entry points: only in tests and `cargo fuzz` builds (`--cfg fuzzing`).
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod webhooks;

pub mod proto {
    //! Code generated from `proto/allot/v1/*.proto`.
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("allot.v1");
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("allot_descriptor");
}
