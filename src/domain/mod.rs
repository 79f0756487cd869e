//! The pure rules of allot: exact amounts, pricing, balances, burn order and a wallet's
//! lifecycle (holds, refunds, expiry, voids, adjustments, schedules, spend caps). No I/O here;
//! the store applies these rules inside a database transaction, and they are property-tested.

pub mod account_state;
pub mod amount;
pub mod pricing;
pub mod wallet;

pub use account_state::{AccountState, Action};
pub use amount::{Amount, AmountError};
pub use pricing::{CardState, Dimension, ListPrice, PricingError, Rate, RateError};
pub use wallet::{
    Balance, Burn, GrantKind, Hold, HoldState, Lot, LotStatus, Movement, MovementKind, Period,
    Refusal, Rollover, RolloverPolicy, Schedule, SpendCaps, Spent, Step, WalletState,
    check_caller_cap, refund_returns,
};
