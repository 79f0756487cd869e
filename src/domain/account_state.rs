//! What an account's state allows: the one table every operation consults.
//!
//! | operation                                   | ACTIVE | SUSPENDED | CLOSED |
//! |---------------------------------------------|--------|-----------|--------|
//! | Debit, BatchDebit, Reserve, Capture         | yes    | no        | no     |
//! | Release a hold                              | yes    | yes       | yes    |
//! | Refund                                      | yes    | yes       | no     |
//! | CreateGrant, AdjustBalance (either sign)    | yes    | yes       | no     |
//! | VoidGrant                                   | yes    | yes       | yes    |
//! | CreateAllotmentSchedule                     | yes    | yes       | no     |
//! | a schedule period starting                  | yes    | yes       | no (none is granted) |
//! | UpdateWallet                                | yes    | yes       | no     |
//! | CreateWallet, CreateAccount under it        | yes    | yes       | no     |
//! | grants and holds expiring                   | yes    | yes       | yes    |
//!
//! SUSPENDED stops spending (nothing new is charged) but keeps the contract running: grants,
//! corrections, refunds and allotments continue, so the account can be resumed as it was.
//! CLOSED is final: nothing adds units or spends them; what remains is letting go of
//! reservations and grants (release, void, expiry). A refused operation is
//! FAILED_PRECONDITION `ACCOUNT_NOT_ACTIVE` and changes nothing.

use sea_orm::{DeriveActiveEnum, EnumIter, prelude::StringLen};

/// An account's state, stored as `ACTIVE`, `SUSPENDED` or `CLOSED` (a stored value that is
/// none of these is an error when read, never a default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum AccountState {
    #[sea_orm(string_value = "ACTIVE")]
    Active,
    #[sea_orm(string_value = "SUSPENDED")]
    Suspended,
    #[sea_orm(string_value = "CLOSED")]
    Closed,
}

impl AccountState {
    pub const ALL: [AccountState; 3] = [
        AccountState::Active,
        AccountState::Suspended,
        AccountState::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Active => "ACTIVE",
            AccountState::Suspended => "SUSPENDED",
            AccountState::Closed => "CLOSED",
        }
    }

    /// Parses a stored state; `None` for anything else (a corrupt row, never "active").
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether `action` may happen on an account in this state.
    pub fn allows(self, action: Action) -> bool {
        use Action::*;
        match self {
            AccountState::Active => true,
            AccountState::Suspended => !matches!(action, Debit | Reserve | Capture),
            AccountState::Closed => matches!(action, Release | Void),
        }
    }
}

/// What an operation does to an account, as far as its state is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Debit,
    Reserve,
    Capture,
    Release,
    Refund,
    Grant,
    Adjust,
    Void,
    CreateSchedule,
    SchedulePeriod,
    UpdateWallet,
    CreateWallet,
    CreateSubAccount,
}

impl Action {
    pub const ALL: [Action; 13] = [
        Action::Debit,
        Action::Reserve,
        Action::Capture,
        Action::Release,
        Action::Refund,
        Action::Grant,
        Action::Adjust,
        Action::Void,
        Action::CreateSchedule,
        Action::SchedulePeriod,
        Action::UpdateWallet,
        Action::CreateWallet,
        Action::CreateSubAccount,
    ];
}

#[cfg(test)]
mod tests {
    use super::{AccountState::*, Action::*, *};

    #[test]
    fn the_matrix() {
        let expected = |state, action| match (state, action) {
            (Active, _) => true,
            (Suspended, Debit | Reserve | Capture) => false,
            (Suspended, _) => true,
            (Closed, Release | Void) => true,
            (Closed, _) => false,
        };
        for state in AccountState::ALL {
            for action in Action::ALL {
                assert_eq!(
                    state.allows(action),
                    expected(state, action),
                    "{state:?} × {action:?}"
                );
            }
        }
    }

    #[test]
    fn parses_only_known_states() {
        for state in AccountState::ALL {
            assert_eq!(AccountState::parse(state.as_str()), Some(state));
        }
        assert_eq!(AccountState::parse("active"), None);
        assert_eq!(AccountState::parse(""), None);
    }
}
