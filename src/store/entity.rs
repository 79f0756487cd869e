//! sea-orm entities, one module per table (schema in `migrations/`). Amounts are `i64`
//! micro-units and times `i64` microseconds since the Unix epoch on both backends.

pub mod account {
    use sea_orm::entity::prelude::*;

    pub use crate::store::columns::StringMap;

    pub use crate::domain::AccountState;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "accounts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub external_id: String,
        pub display_name: String,
        pub parent_id: Option<String>,
        /// Ids from the root down to this account, `/`-separated: scope checks read one row.
        pub ancestry: String,
        pub depth: i32,
        pub state: AccountState,
        /// Labels (a JSON object of strings).
        #[sea_orm(column_type = "JsonBinary")]
        pub labels: StringMap,
        pub create_time: i64,
        pub update_time: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod wallet {
    use sea_orm::entity::prelude::*;

    pub use crate::store::columns::Thresholds;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "wallets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub account_id: String,
        pub unit: String,
        pub overdraft_limit: i64,
        /// Units drawn beyond the grants (overdraft in use); repaid by the next grant.
        pub debt: i64,
        /// Σ open holds.
        pub reserved: i64,
        pub create_time: i64,
        pub update_time: i64,
        /// Σ deltas of the wallet's ledger entries (= Σ active remaining − debt).
        pub posted: i64,
        pub daily_spend_cap: Option<i64>,
        pub monthly_spend_cap: Option<i64>,
        /// UTC day index and units spent on it.
        pub spent_day: i64,
        pub spent_day_units: i64,
        /// UTC month index (year × 12 + month0) and units spent in it.
        pub spent_month: i64,
        pub spent_month_units: i64,
        #[sea_orm(column_type = "JsonBinary")]
        pub low_balance_thresholds: Thresholds,
        /// When something next falls due (grant activation or expiry, hold expiry, schedule
        /// period): the sweeper looks here.
        pub next_due_time: Option<i64>,
        /// Hash of the wallet's latest ledger entry (head of its chain).
        pub last_hash: String,
        /// Time of the wallet's latest ledger entry: new entries are never dated before it.
        pub last_entry_time: i64,
        /// Bumped by every batch that writes anything of the wallet (see `wallet_cache`).
        pub version: i64,
        /// The sequence number of the wallet's latest event (0: none yet).
        pub event_seq: i64,
        /// Days before an active grant expires that `grant.expiring` is sent (0: never).
        pub grant_expiry_notice_days: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod grant {
    use sea_orm::entity::prelude::*;

    pub use crate::store::columns::Price;

    pub use crate::domain::{GrantKind, LotStatus};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "grants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub wallet_id: String,
        pub kind: GrantKind,
        pub amount: i64,
        pub remaining: i64,
        pub priority: i32,
        pub effective_time: i64,
        pub expire_time: Option<i64>,
        /// Money per unit.
        pub unit_price: Price,
        pub currency: String,
        pub contract_ref: String,
        /// Kept equal to `status == VOIDED` (the first schema's flag).
        pub voided: bool,
        pub create_time: i64,
        /// PENDING, ACTIVE, EXPIRED or VOIDED.
        pub status: LotStatus,
        /// Overdraft debt this grant paid off when it became active.
        pub repaid: i64,
        pub schedule_id: Option<String>,
        pub period_index: Option<i64>,
        pub rolled_over: i64,
        pub void_reason: String,
        /// `grant.expiring` was sent for it.
        pub expiry_noticed: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod rate_card {
    use sea_orm::entity::prelude::*;

    pub use crate::store::columns::Rates;

    pub use crate::domain::CardState;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rate_cards")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub version: i64,
        /// DRAFT or PUBLISHED; SUPERSEDED is derived when read.
        pub state: CardState,
        pub etag: String,
        pub effective_time: Option<i64>,
        #[sea_orm(column_type = "JsonBinary")]
        pub rates: Rates,
        pub notes: String,
        pub create_time: i64,
        pub publish_time: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod rate_card_head {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rate_card_head")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        /// Bumped by every publish.
        pub generation: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod transaction {
    use sea_orm::entity::prelude::*;

    pub use crate::store::columns::{Burns, StringMap};

    pub use crate::domain::MovementKind;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "transactions")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub id: String,
        pub kind: MovementKind,
        pub wallet_id: String,
        pub account_id: String,
        pub units: i64,
        pub balance_after: i64,
        pub request_type: String,
        /// Name → decimal string.
        #[sea_orm(column_type = "JsonBinary")]
        pub quantities: StringMap,
        pub rate_card_version: Option<i64>,
        pub request_id: String,
        pub actor: String,
        #[sea_orm(column_type = "JsonBinary")]
        pub metadata: StringMap,
        /// Grant, units, unit price, currency and money of each grant drawn or returned.
        #[sea_orm(column_type = "JsonBinary")]
        pub burns: Burns,
        pub provider_cost: String,
        pub grant_id: Option<String>,
        pub create_time: i64,
        /// Signed effect on the wallet's posted balance.
        pub delta: i64,
        /// The reservation (RESERVE, CAPTURE, RELEASE) or refunded entry (REFUND).
        pub ref_id: Option<String>,
        pub reason: String,
        pub hash: String,
        pub prev_hash: String,
        /// The account override that priced the request (none: the rate card did).
        pub override_id: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod idempotency_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "idempotency_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub scope: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub request_id: String,
        pub method: String,
        /// SHA-256 of the request with its request_id cleared.
        pub fingerprint: String,
        /// The encoded protobuf response, returned again on replay.
        pub response: Vec<u8>,
        pub create_time: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod reservation {
    use sea_orm::entity::prelude::*;

    pub use crate::store::columns::StringMap;

    pub use crate::domain::HoldState;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "reservations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub wallet_id: String,
        pub account_id: String,
        pub units: i64,
        /// OPEN, CAPTURED, RELEASED or EXPIRED.
        pub state: HoldState,
        pub expire_time: i64,
        pub request_type: String,
        #[sea_orm(column_type = "JsonBinary")]
        pub quantities: StringMap,
        pub rate_card_version: Option<i64>,
        pub captured_units: Option<i64>,
        pub request_id: String,
        pub actor: String,
        pub create_time: i64,
        pub resolve_time: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod schedule {
    use sea_orm::entity::prelude::*;

    pub use crate::store::columns::Price;

    pub use crate::domain::{GrantKind, Period, RolloverPolicy};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "schedules")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub wallet_id: String,
        pub account_id: String,
        pub amount: i64,
        /// DAILY, WEEKLY, MONTHLY or YEARLY.
        pub period: Period,
        pub start_time: i64,
        pub end_time: Option<i64>,
        /// NONE or CAPPED.
        pub rollover_policy: RolloverPolicy,
        pub rollover_cap: Option<i64>,
        /// The next period to grant (0 = the one starting at `start_time`).
        pub next_period: i64,
        pub kind: GrantKind,
        pub priority: i32,
        pub unit_price: Price,
        pub currency: String,
        pub contract_ref: String,
        pub create_time: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod usage_day {
    use sea_orm::entity::prelude::*;

    /// What a wallet consumed on one UTC day, per request type, rate card version and grant
    /// price: the rollup reports read (kept by the ledger batch, `store/ledger/write.rs`).
    /// A row holds the units burnt from grants at its price (empty: overdraft units) and the
    /// requests whose first burn was there; a key's rows add up to its totals.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "usage_days")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub wallet_id: String,
        /// Days since the Unix epoch (UTC).
        #[sea_orm(primary_key, auto_increment = false)]
        pub day: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub request_type: String,
        /// The card that priced the requests (0: none, e.g. a capture of explicit units).
        #[sea_orm(primary_key, auto_increment = false)]
        pub rate_card_version: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub currency: String,
        /// A grant's unit price (exact decimal text); empty for overdraft units.
        #[sea_orm(primary_key, auto_increment = false)]
        pub unit_price: String,
        pub account_id: String,
        /// Debits and captures (each counted on the row of its first burn).
        pub requests: i64,
        /// Micro-units consumed at this price, net of refunds (refunds count on the day they
        /// are made).
        pub units: i64,
        /// Of `requests`, those that carried a provider cost.
        pub costed: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod account_override {
    use sea_orm::entity::prelude::*;

    pub use crate::store::columns::OverrideRate;

    /// A contract price of one request type for an account and its sub-accounts, from
    /// `effective_time` (until `expire_time`, or until a later record of the same account and
    /// request type); `cleared` records end the account's override.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "account_overrides")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub account_id: String,
        pub request_type: String,
        #[sea_orm(column_type = "JsonBinary")]
        pub rate: OverrideRate,
        pub cleared: bool,
        pub effective_time: i64,
        pub expire_time: Option<i64>,
        pub note: String,
        pub actor: String,
        pub create_time: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit_event {
    use sea_orm::entity::prelude::*;

    /// A change made by hand to prices or balances: who, when, what, and the state before
    /// and after (JSON objects; `store/audit.rs`).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        /// `aud_…` (time-ordered).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub time: i64,
        pub actor: String,
        /// RATE_CARD_PUBLISHED, ACCOUNT_OVERRIDE_SET, GRANT_VOIDED, BALANCE_ADJUSTED.
        pub action: String,
        /// What changed, e.g. `rate_cards/3`, `grants/grt_…`.
        pub resource: String,
        /// The account concerned (none for rate cards: they price everyone).
        pub account_id: Option<String>,
        #[sea_orm(column_type = "JsonBinary", nullable)]
        pub before: Option<Json>,
        #[sea_orm(column_type = "JsonBinary", nullable)]
        pub after: Option<Json>,
        pub request_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod event {
    use sea_orm::entity::prelude::*;

    pub use crate::store::columns::StringMap;

    /// What an event is about (stored as its dotted snake_case name, the wire name too).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
    #[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
    pub enum EventType {
        /// A ledger entry moved the balance (every entry: debit, grant, hold, refund …).
        #[sea_orm(string_value = "balance.changed")]
        BalanceChanged,
        /// `available` fell to or below a low-balance threshold (`direction` down), or rose
        /// above it again (`direction` up).
        #[sea_orm(string_value = "balance.threshold_crossed")]
        ThresholdCrossed,
        /// `available` fell to zero or below.
        #[sea_orm(string_value = "balance.depleted")]
        Depleted,
        /// What counts against a spend cap (the day's or month's spend, and the holds) came
        /// up to it (`period`, `cap`, `used`): more debits of the period are refused.
        #[sea_orm(string_value = "spend_cap.reached")]
        SpendCapReached,
        /// A grant became effective (created now, or its `effective_time` came).
        #[sea_orm(string_value = "grant.activated")]
        GrantActivated,
        /// An active grant with units left expires within the wallet's notice window.
        #[sea_orm(string_value = "grant.expiring")]
        GrantExpiring,
        #[sea_orm(string_value = "grant.expired")]
        GrantExpired,
        /// An open hold reached its `expire_time` and was released by the sweeper.
        #[sea_orm(string_value = "hold.expired")]
        HoldExpired,
        /// An allotment schedule granted a period (with `grant.activated` for its grant).
        #[sea_orm(string_value = "schedule.period_granted")]
        PeriodGranted,
        /// The wallet's account changed state (`previous_state`, `state`).
        #[sea_orm(string_value = "account.state_changed")]
        AccountStateChanged,
        /// A rate card was published (no wallet: numbered by the card's version).
        #[sea_orm(string_value = "rate_card.published")]
        RateCardPublished,
    }

    /// One event of a wallet: the transactional outbox (`store/events.rs`).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "events")]
    pub struct Model {
        /// `evt_…` (time-ordered).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub wallet_id: String,
        pub account_id: String,
        /// 1, 2, 3 … per wallet, without gaps.
        pub sequence: i64,
        pub event_type: EventType,
        pub time: i64,
        /// The wallet's balances after the change.
        pub posted: i64,
        pub reserved: i64,
        pub available: i64,
        pub overdraft_limit: i64,
        /// What the event is about: `transaction_id`, `kind`, `units`, `grant_id`, …
        #[sea_orm(column_type = "JsonBinary")]
        pub data: StringMap,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Webhooks (`store/webhooks.rs`, migration 12).
pub mod webhook_endpoint {
    use sea_orm::entity::prelude::*;

    /// Where events are sent, and which.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_endpoints")]
    pub struct Model {
        /// `whe_…`
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// The account covered, with its sub-accounts; `''`: every account.
        pub account_id: String,
        pub url: String,
        /// The event types wanted, comma-separated; `''`: every type.
        #[sea_orm(column_type = "Text")]
        pub event_types: String,
        pub enabled: bool,
        /// `whsec_…`
        pub secret: String,
        /// The secret before the last rotation, still signing until its expiry.
        pub previous_secret: Option<String>,
        pub previous_secret_expire_time: Option<i64>,
        pub create_time: i64,
        pub update_time: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod webhook_fanout {
    use sea_orm::entity::prelude::*;

    /// A wallet's last event handed to the endpoints.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_fanout")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub wallet_id: String,
        pub sequence: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod webhook_delivery {
    use sea_orm::entity::prelude::*;

    /// Where a delivery stands.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
    #[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
    pub enum State {
        /// Not delivered yet: due at `next_attempt_time` (or leased until then).
        #[sea_orm(string_value = "pending")]
        Pending,
        /// The endpoint answered 2xx.
        #[sea_orm(string_value = "delivered")]
        Delivered,
        /// Every attempt of the retry schedule failed.
        #[sea_orm(string_value = "dead")]
        Dead,
    }

    /// One event for one endpoint.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_deliveries")]
    pub struct Model {
        /// `whd_…` (time-ordered)
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub endpoint_id: String,
        pub event_id: String,
        pub wallet_id: String,
        pub sequence: i64,
        pub event_type: String,
        pub state: State,
        /// Attempts begun (an attempt whose replica died has no row in `webhook_attempts`).
        pub attempts: i32,
        /// `attempts` when the retry schedule (re)started: 0, or when it was last replayed.
        pub retry_base: i32,
        pub next_attempt_time: i64,
        pub create_time: i64,
        pub done_time: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod webhook_attempt {
    use sea_orm::entity::prelude::*;

    /// One attempt of a delivery and what the endpoint answered.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_attempts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub delivery_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub attempt: i32,
        pub time: i64,
        pub duration_micros: i64,
        /// The HTTP status; 0 when there was no answer.
        pub status_code: i32,
        /// Why it failed (`''` when delivered).
        #[sea_orm(column_type = "Text")]
        pub error: String,
        /// The start of the answer's body.
        #[sea_orm(column_type = "Text")]
        pub response: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
