//! What a verified token says: its claims, their bounds, and the caller (roles and account
//! scope) derived from them.
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
//! [`LEEWAY_SECS`](super::LEEWAY_SECS) seconds (in `verifier`). Empty `roles`/`accounts` are
//! accepted: such a caller is authenticated but authorised for nothing.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use super::AuthError;

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

    pub(super) fn from_claims(claims: Claims) -> Result<Self, AuthError> {
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
        // Account ids reach the database (the lists' subtree queries): PostgreSQL refuses NUL
        // in text, and no id holds a control character.
        if claims
            .accounts
            .iter()
            .any(|a| a.chars().any(char::is_control))
        {
            return Err(AuthError::Invalid(
                "`accounts` claim contains control characters".into(),
            ));
        }
        let roles = claims
            .roles
            .iter()
            .filter_map(|r| match r.parse::<Role>() {
                Ok(role) => Some(role),
                Err(_) => {
                    tracing::debug!(sub = ?claims.sub, role = ?r, "ignoring unknown role in token");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testing::*;
    use serde_json::json;

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
}
