//! Applies a batch of ledger operations in one database transaction (group commit).
//!
//! Steps, in this order (the order is what makes it safe with several replicas):
//! 1. lock the rate-card head FOR SHARE, read "now", load the card in force;
//! 2. resolve every operation's wallet, then lock all wallets `ORDER BY id FOR UPDATE` and
//!    load their grants, open holds and schedules;
//! 3. bring every wallet up to "now" (`WalletState::advance`: grants becoming active or
//!    expiring, holds expiring, schedule periods starting), recording each as an entry;
//! 4. load the idempotency records of every `request_id` in the batch;
//! 5. evaluate each operation in arrival order against the in-memory state with the pure
//!    rules in `domain` — a rejected operation changes nothing, the others go on;
//! 6. write what changed (grants, holds, schedules, wallets), the ledger entries (hash-chained
//!    per wallet) and the idempotency records; if another replica committed one of the keys
//!    first, roll back and retry the batch.
//!
//! Every operation gets exactly the outcome it would get alone.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use prost::Message;
use rust_decimal::Decimal;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, Iterable,
    PrimaryKeyToColumn, QueryFilter, QueryOrder, QuerySelect, Set, sea_query::OnConflict,
};
use serde::{Deserialize, Serialize};

use super::{
    Store, accounts, bulk, chain,
    entity::{account, grant, idempotency_key, reservation, schedule, transaction, wallet},
    idempotency::{self, Key},
    locks_rows,
    log_sync::Durable,
    new_id,
    pagination::{self, Page},
    rate_cards::{self, Card},
    shape::{ROWS_PER_STATEMENT, padded, padded_chunks},
    wallet_cache::{Rows, WalletCache},
};
use crate::{
    api::convert,
    domain::{
        AccountState, Action, Amount, Burn, Hold, Lot, LotStatus, Movement, MovementKind, Period,
        Refusal, Rollover, Schedule, SpendCaps, Spent, WalletState, amount::format_decimal,
    },
    error::{Error, Result},
    proto,
};

/// The actor recorded on entries the ledger writes by itself (expiry, schedules).
pub const SYSTEM_ACTOR: &str = "system";

// ---- operations ----------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct DebitOp {
    pub key: Key,
    pub account_id: String,
    pub unit: String,
    pub request_type: String,
    pub quantities: BTreeMap<String, Decimal>,
    pub metadata: BTreeMap<String, String>,
    pub max_units: Option<Amount>,
    pub actor: String,
}

#[derive(Debug, Clone)]
pub struct GrantOp {
    pub key: Key,
    pub wallet_id: String,
    pub kind: &'static str,
    pub amount: Amount,
    pub priority: i32,
    pub effective_time: Option<i64>,
    pub expire_time: Option<i64>,
    pub unit_price: Decimal,
    pub currency: String,
    pub contract_ref: String,
    pub actor: String,
}

#[derive(Debug, Clone)]
pub struct ReserveOp {
    pub key: Key,
    pub account_id: String,
    pub unit: String,
    pub request_type: String,
    pub quantities: BTreeMap<String, Decimal>,
    /// Explicit units (otherwise priced from `request_type` + `quantities`).
    pub units: Option<Amount>,
    pub ttl_micros: i64,
    pub actor: String,
}

#[derive(Debug, Clone)]
pub struct CaptureOp {
    pub key: Key,
    pub wallet_id: String,
    pub reservation_id: String,
    pub quantities: BTreeMap<String, Decimal>,
    pub units: Option<Amount>,
    pub actor: String,
}

#[derive(Debug, Clone)]
pub struct ReleaseOp {
    pub key: Key,
    pub wallet_id: String,
    pub reservation_id: String,
    pub actor: String,
}

#[derive(Debug, Clone)]
pub struct RefundOp {
    pub key: Key,
    pub wallet_id: String,
    pub transaction_id: String,
    pub units: Option<Amount>,
    pub reason: String,
    pub actor: String,
}

#[derive(Debug, Clone)]
pub struct VoidOp {
    pub key: Key,
    pub wallet_id: String,
    pub grant_id: String,
    pub reason: String,
    pub actor: String,
}

#[derive(Debug, Clone)]
pub struct AdjustOp {
    pub key: Key,
    pub wallet_id: String,
    /// Signed micro-units.
    pub units: i64,
    pub reason: String,
    pub actor: String,
}

#[derive(Debug, Clone)]
pub struct ScheduleOp {
    pub key: Key,
    pub wallet_id: String,
    pub amount: Amount,
    pub period: Period,
    pub start_time: i64,
    pub end_time: Option<i64>,
    pub rollover: Rollover,
    pub kind: &'static str,
    pub priority: i32,
    pub unit_price: Decimal,
    pub currency: String,
    pub contract_ref: String,
    pub actor: String,
}

/// Changes to a wallet's limits (each `None` leaves the setting as it is).
#[derive(Debug, Clone, Default)]
pub struct WalletChanges {
    pub overdraft_limit: Option<Amount>,
    pub daily_spend_cap: Option<Option<Amount>>,
    pub monthly_spend_cap: Option<Option<Amount>>,
    pub low_balance_thresholds: Option<Vec<Amount>>,
}

#[derive(Debug, Clone)]
pub struct WalletUpdateOp {
    pub key: Key,
    pub wallet_id: String,
    pub changes: WalletChanges,
}

#[derive(Debug, Clone)]
pub enum Op {
    Debit(DebitOp),
    Grant(GrantOp),
    Reserve(ReserveOp),
    Capture(CaptureOp),
    Release(ReleaseOp),
    Refund(RefundOp),
    Void(VoidOp),
    Adjust(AdjustOp),
    Schedule(ScheduleOp),
    UpdateWallet(WalletUpdateOp),
    /// Brings a wallet up to now (expiry, schedules) without any other change.
    Sweep {
        wallet_id: String,
    },
}

impl Op {
    pub(crate) fn key(&self) -> Option<&Key> {
        Some(match self {
            Op::Debit(op) => &op.key,
            Op::Grant(op) => &op.key,
            Op::Reserve(op) => &op.key,
            Op::Capture(op) => &op.key,
            Op::Release(op) => &op.key,
            Op::Refund(op) => &op.key,
            Op::Void(op) => &op.key,
            Op::Adjust(op) => &op.key,
            Op::Schedule(op) => &op.key,
            Op::UpdateWallet(op) => &op.key,
            Op::Sweep { .. } => return None,
        })
    }

    /// The wallet, when the operation names it directly.
    pub(crate) fn wallet_id(&self) -> Option<&str> {
        Some(match self {
            Op::Debit(_) | Op::Reserve(_) => return None,
            Op::Grant(op) => &op.wallet_id,
            Op::Capture(op) => &op.wallet_id,
            Op::Release(op) => &op.wallet_id,
            Op::Refund(op) => &op.wallet_id,
            Op::Void(op) => &op.wallet_id,
            Op::Adjust(op) => &op.wallet_id,
            Op::Schedule(op) => &op.wallet_id,
            Op::UpdateWallet(op) => &op.wallet_id,
            Op::Sweep { wallet_id } => wallet_id,
        })
    }

    /// What the operation does as far as its account's state is concerned (`None`: sweeps,
    /// which only record what fell due).
    fn action(&self) -> Option<Action> {
        Some(match self {
            Op::Debit(_) => Action::Debit,
            Op::Reserve(_) => Action::Reserve,
            Op::Capture(_) => Action::Capture,
            Op::Release(_) => Action::Release,
            Op::Refund(_) => Action::Refund,
            Op::Grant(_) => Action::Grant,
            Op::Adjust(_) => Action::Adjust,
            Op::Void(_) => Action::Void,
            Op::Schedule(_) => Action::CreateSchedule,
            Op::UpdateWallet(_) => Action::UpdateWallet,
            Op::Sweep { .. } => return None,
        })
    }

    /// Debits and holds name (account, unit).
    fn account_unit(&self) -> Option<(&str, &str)> {
        match self {
            Op::Debit(op) => Some((&op.account_id, &op.unit)),
            Op::Reserve(op) => Some((&op.account_id, &op.unit)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Debit(proto::DebitResponse),
    Grant(proto::Grant),
    Reservation(proto::Reservation),
    Transaction(proto::Transaction),
    Schedule(proto::AllotmentSchedule),
    Wallet(proto::Wallet),
    Swept,
}

/// Typed accessors: the API knows which outcome its operation yields.
macro_rules! outcome_accessor {
    ($name:ident, $variant:ident, $ty:ty) => {
        pub fn $name(self) -> Result<$ty> {
            match self {
                Outcome::$variant(value) => Ok(value),
                other => Err(Error::internal(format!(
                    "ledger answered with an unexpected outcome: {other:?}"
                ))),
            }
        }
    };
}

impl Outcome {
    outcome_accessor!(into_debit, Debit, proto::DebitResponse);
    outcome_accessor!(into_grant, Grant, proto::Grant);
    outcome_accessor!(into_reservation, Reservation, proto::Reservation);
    outcome_accessor!(into_transaction, Transaction, proto::Transaction);
    outcome_accessor!(into_schedule, Schedule, proto::AllotmentSchedule);
    outcome_accessor!(into_wallet, Wallet, proto::Wallet);

    fn encode(&self) -> Vec<u8> {
        match self {
            Outcome::Debit(m) => m.encode_to_vec(),
            Outcome::Grant(m) => m.encode_to_vec(),
            Outcome::Reservation(m) => m.encode_to_vec(),
            Outcome::Transaction(m) => m.encode_to_vec(),
            Outcome::Schedule(m) => m.encode_to_vec(),
            Outcome::Wallet(m) => m.encode_to_vec(),
            Outcome::Swept => Vec::new(),
        }
    }

    fn replay(op: &Op, key: &Key, record: &idempotency_key::Model) -> Result<Outcome> {
        Ok(match op {
            Op::Debit(_) | Op::Capture(_) => {
                let mut response: proto::DebitResponse = key.replay(record)?;
                response.replayed = true;
                Outcome::Debit(response)
            }
            Op::Grant(_) | Op::Void(_) => Outcome::Grant(key.replay(record)?),
            Op::Reserve(_) | Op::Release(_) => Outcome::Reservation(key.replay(record)?),
            Op::Refund(_) | Op::Adjust(_) => Outcome::Transaction(key.replay(record)?),
            Op::Schedule(_) => Outcome::Schedule(key.replay(record)?),
            Op::UpdateWallet(_) => Outcome::Wallet(key.replay(record)?),
            Op::Sweep { .. } => Outcome::Swept,
        })
    }
}

/// One burn as stored on a ledger entry (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredBurn {
    /// Empty when the units came from (or went back to) the overdraft.
    pub grant_id: String,
    pub units: Amount,
    pub unit_price: String,
    pub currency: String,
    pub money: String,
}

impl From<&Burn> for StoredBurn {
    fn from(burn: &Burn) -> Self {
        let money = match burn.money() {
            Some(money) => format_decimal(money),
            None => {
                // Only a grant stored before unit prices were bounded can get here.
                tracing::error!(
                    grant_id = burn.grant_id.as_deref().unwrap_or(""),
                    units = %burn.units,
                    unit_price = %burn.unit_price,
                    "money value out of range; recorded without one"
                );
                String::new()
            }
        };
        StoredBurn {
            grant_id: burn.grant_id.clone().unwrap_or_default(),
            units: burn.units,
            unit_price: format_decimal(burn.unit_price),
            currency: burn.currency.clone(),
            money,
        }
    }
}

// ---- stored ↔ domain -----------------------------------------------------------------------

pub const PENDING: &str = "PENDING";
pub const GRANT_ACTIVE: &str = "ACTIVE";
pub const EXPIRED: &str = "EXPIRED";
pub const VOIDED: &str = "VOIDED";

pub const HOLD_OPEN: &str = "OPEN";
pub const HOLD_CAPTURED: &str = "CAPTURED";
pub const HOLD_RELEASED: &str = "RELEASED";
pub const HOLD_EXPIRED: &str = "EXPIRED";

fn status_str(status: LotStatus) -> &'static str {
    match status {
        LotStatus::Pending => PENDING,
        LotStatus::Active => GRANT_ACTIVE,
        LotStatus::Expired => EXPIRED,
        LotStatus::Voided => VOIDED,
    }
}

fn parse_status(status: &str) -> LotStatus {
    match status {
        PENDING => LotStatus::Pending,
        EXPIRED => LotStatus::Expired,
        VOIDED => LotStatus::Voided,
        _ => LotStatus::Active,
    }
}

pub fn lot(model: &grant::Model) -> Lot {
    Lot {
        grant_id: model.id.clone(),
        remaining: Amount::from_micros(model.remaining),
        priority: model.priority,
        effective_time: model.effective_time,
        expire_time: model.expire_time,
        seq: model.create_time,
        unit_price: model.unit_price.parse().unwrap_or_default(),
        currency: model.currency.clone(),
        status: parse_status(&model.status),
        repaid: Amount::from_micros(model.repaid),
        period: model.schedule_id.clone().zip(model.period_index),
    }
}

pub fn period_str(period: Period) -> &'static str {
    match period {
        Period::Daily => "DAILY",
        Period::Weekly => "WEEKLY",
        Period::Monthly => "MONTHLY",
        Period::Yearly => "YEARLY",
    }
}

fn parse_period(period: &str) -> Period {
    match period {
        "DAILY" => Period::Daily,
        "WEEKLY" => Period::Weekly,
        "YEARLY" => Period::Yearly,
        _ => Period::Monthly,
    }
}

pub fn domain_schedule(model: &schedule::Model) -> Schedule {
    Schedule {
        id: model.id.clone(),
        amount: Amount::from_micros(model.amount),
        period: parse_period(&model.period),
        start_time: model.start_time,
        end_time: model.end_time,
        rollover: match model.rollover_cap {
            Some(cap) if model.rollover_policy == "CAPPED" => {
                Rollover::Capped(Amount::from_micros(cap))
            }
            _ => Rollover::None,
        },
        next_period: model.next_period,
        priority: model.priority,
        unit_price: model.unit_price.parse().unwrap_or_default(),
        currency: model.currency.clone(),
    }
}

pub fn thresholds(model: &wallet::Model) -> Vec<Amount> {
    serde_json::from_str(&model.low_balance_thresholds).unwrap_or_default()
}

/// A wallet's state as stored (not yet advanced to any time).
fn wallet_state(
    model: &wallet::Model,
    grants: &[&grant::Model],
    holds: &[&reservation::Model],
    schedules: &[&schedule::Model],
) -> WalletState {
    WalletState {
        overdraft_limit: Amount::from_micros(model.overdraft_limit),
        debt: Amount::from_micros(model.debt),
        lots: grants.iter().map(|g| lot(g)).collect(),
        holds: holds
            .iter()
            .map(|h| Hold {
                id: h.id.clone(),
                units: Amount::from_micros(h.units),
                expire_time: h.expire_time,
            })
            .collect(),
        caps: SpendCaps {
            daily: model.daily_spend_cap.map(Amount::from_micros),
            monthly: model.monthly_spend_cap.map(Amount::from_micros),
        },
        spent: Spent {
            day: model.spent_day,
            day_units: Amount::from_micros(model.spent_day_units),
            month: model.spent_month,
            month_units: Amount::from_micros(model.spent_month_units),
        },
        schedules: schedules.iter().map(|s| domain_schedule(s)).collect(),
        schedules_paused: false,
    }
}

// ---- loading -------------------------------------------------------------------------------

/// What an entry records besides the movement itself.
#[derive(Debug, Clone, Default)]
struct EntryContext {
    actor: String,
    request_id: String,
    request_type: String,
    quantities: BTreeMap<String, String>,
    metadata: BTreeMap<String, String>,
    rate_card_version: Option<i64>,
    provider_cost: String,
    ref_id: Option<String>,
    reason: String,
}

impl EntryContext {
    fn system() -> Self {
        EntryContext {
            actor: SYSTEM_ACTOR.to_string(),
            ..Default::default()
        }
    }
}

/// Grant fields the domain does not carry, for grants created in this batch.
#[derive(Debug, Clone)]
struct GrantTemplate {
    /// Units the grant was created with (an allotment plus what rolled into it).
    amount: i64,
    kind: String,
    contract_ref: String,
    rolled_over: i64,
}

/// A wallet loaded (and locked) for the batch, with what the batch did to it.
struct Loaded {
    model: wallet::Model,
    /// The account's state as of the wallet lock (for ACCOUNT_NOT_ACTIVE).
    account_state: String,
    state: WalletState,
    /// Running posted balance and chain head: each new entry continues from them.
    posted: i64,
    last_hash: String,
    /// Time of the latest entry: entries are stamped no earlier (clock skew between
    /// replicas, or a schedule created with a start in the past, cannot reorder history).
    last_time: i64,
    grants: HashMap<String, grant::Model>,
    new_grants: HashMap<String, GrantTemplate>,
    void_reasons: HashMap<String, String>,
    holds: HashMap<String, reservation::Model>,
    new_holds: Vec<reservation::Model>,
    /// Holds resolved in this batch: state, captured units, time.
    resolved: HashMap<String, (&'static str, Option<i64>, i64)>,
    schedules: HashMap<String, schedule::Model>,
    new_schedules: Vec<schedule::Model>,
    thresholds: Vec<Amount>,
    entries: Vec<transaction::Model>,
}

impl Loaded {
    /// Turns a movement into a ledger entry, chained after the wallet's previous one.
    fn record(&mut self, movement: Movement, ctx: &EntryContext) -> transaction::Model {
        // The domain keeps Σ remaining + overdraft within an Amount (headroom), so this
        // cannot overflow; if it ever did, the operation fails alone (store/batcher.rs).
        self.posted = self
            .posted
            .checked_add(movement.delta)
            .expect("posted balance within its bound");
        let time = movement.time.max(self.last_time);
        self.last_time = time;
        let mut burns: Vec<StoredBurn> = movement.burns.iter().map(StoredBurn::from).collect();
        if burns.is_empty()
            && let Some(grant_id) = &movement.grant_id
            && let Some(lot) = self.state.lots.iter().find(|l| &l.grant_id == grant_id)
        {
            // Grant-level entries carry the grant's price, so every entry has a money value.
            burns.push(StoredBurn::from(&Burn {
                grant_id: Some(grant_id.clone()),
                units: movement.units,
                unit_price: lot.unit_price,
                currency: lot.currency.clone(),
            }));
        }
        if movement.kind == MovementKind::Release
            && let Some(hold) = &movement.hold_id
            && !self.resolved.contains_key(hold)
        {
            self.resolved
                .insert(hold.clone(), (HOLD_EXPIRED, None, movement.time));
        }
        if let Some(template) = movement
            .grant_id
            .as_ref()
            .and_then(|id| self.new_grants.get_mut(id))
        {
            template.rolled_over += movement.rolled_over.micros();
        }
        let mut metadata = ctx.metadata.clone();
        if movement.rolled_over.is_positive() {
            metadata.insert("rolled_over".into(), movement.rolled_over.to_string());
        }
        let mut entry = transaction::Model {
            seq: 0,
            id: new_id("txn"),
            kind: movement.kind.as_str().to_string(),
            wallet_id: self.model.id.clone(),
            account_id: self.model.account_id.clone(),
            units: movement.units.micros(),
            balance_after: self.posted,
            request_type: ctx.request_type.clone(),
            quantities: json(&ctx.quantities),
            rate_card_version: ctx.rate_card_version,
            request_id: ctx.request_id.clone(),
            actor: ctx.actor.clone(),
            metadata: json(&metadata),
            burns: json(&burns),
            provider_cost: ctx.provider_cost.clone(),
            grant_id: movement.grant_id.clone(),
            create_time: time,
            delta: movement.delta,
            ref_id: movement.hold_id.clone().or_else(|| ctx.ref_id.clone()),
            reason: ctx.reason.clone(),
            hash: String::new(),
            prev_hash: self.last_hash.clone(),
        };
        entry.hash = chain::entry_hash(&entry);
        self.last_hash = entry.hash.clone();
        self.entries.push(entry.clone());
        entry
    }

    /// Applies every due event up to `now`, recording each.
    fn advance(&mut self, now: i64) {
        let mut created = Vec::new();
        let mut new_grant_id = || {
            let id = new_id("grt");
            created.push(id.clone());
            id
        };
        let movements = self.state.advance(now, &mut new_grant_id);
        for id in created {
            let Some(lot) = self.state.lots.iter().find(|l| l.grant_id == id) else {
                continue;
            };
            let amount = lot.remaining.micros() + lot.repaid.micros();
            let (kind, contract_ref) = lot
                .period
                .as_ref()
                .and_then(|(schedule_id, _)| self.schedule_model(schedule_id))
                .map(|s| (s.kind.clone(), s.contract_ref.clone()))
                .unwrap_or_else(|| ("CONTRACT".into(), String::new()));
            self.new_grants.insert(
                id,
                GrantTemplate {
                    amount,
                    kind,
                    contract_ref,
                    rolled_over: 0,
                },
            );
        }
        let system = EntryContext::system();
        for movement in movements {
            self.record(movement, &system);
        }
    }

    fn schedule_model(&self, id: &str) -> Option<&schedule::Model> {
        self.schedules
            .get(id)
            .or_else(|| self.new_schedules.iter().find(|s| s.id == id))
    }
}

/// Loads wallets with their live grants (plus `extra_grants`, e.g. ones a refund returns
/// to), open holds and schedules; with `lock`, locks the wallets in id order. With `cache`,
/// a wallet whose row version matches the cached one takes its other rows from memory.
async fn load_wallets(
    conn: &impl ConnectionTrait,
    ids: &BTreeSet<String>,
    extra_grants: &BTreeSet<String>,
    lock: bool,
    cache: Option<&WalletCache>,
) -> Result<BTreeMap<String, Loaded>> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut query = wallet::Entity::find()
        .filter(wallet::Column::Id.is_in(padded(ids.iter().cloned())))
        .order_by_asc(wallet::Column::Id);
    if lock && locks_rows(conn) {
        query = query.lock_exclusive();
    }
    let wallets = query.all(conn).await?;
    let mut rows: HashMap<String, Rows> = HashMap::new();
    let mut misses = BTreeMap::new();
    for model in &wallets {
        match cache.and_then(|c| c.get(&model.id, model.version)) {
            Some(cached) => {
                rows.insert(model.id.clone(), (*cached).clone());
            }
            None => {
                misses.insert(model.id.clone(), model.account_id.clone());
            }
        }
    }
    if cache.is_some_and(WalletCache::checked) && !rows.is_empty() {
        // Tests check every cache hit against the database (`Store::checking_cache`).
        let hits: BTreeMap<String, String> = wallets
            .iter()
            .filter(|w| rows.contains_key(&w.id))
            .map(|w| (w.id.clone(), w.account_id.clone()))
            .collect();
        let read = read_rows(conn, &hits).await?;
        for (id, cached) in &rows {
            assert_eq!(
                read.get(id),
                Some(cached),
                "wallet cache disagrees with the database for {id}"
            );
        }
    }
    rows.extend(read_rows(conn, &misses).await?);
    if !extra_grants.is_empty() {
        let extra = grant::Entity::find()
            .filter(grant::Column::Id.is_in(padded(extra_grants.iter().cloned())))
            .all(conn)
            .await?;
        for model in extra {
            if let Some(own) = rows.get_mut(&model.wallet_id)
                && !own.grants.iter().any(|g| g.id == model.id)
            {
                own.grants.push(model);
            }
        }
    }
    let mut loaded = BTreeMap::new();
    for model in wallets {
        let own = rows.remove(&model.id).unwrap_or_default();
        let grant_refs: Vec<&grant::Model> = own.grants.iter().collect();
        let hold_refs: Vec<&reservation::Model> = own.holds.iter().collect();
        let schedule_refs: Vec<&schedule::Model> = own.schedules.iter().collect();
        let mut state = wallet_state(&model, &grant_refs, &hold_refs, &schedule_refs);
        // A closed account is granted no more periods (`domain::account_state`).
        state.schedules_paused = AccountState::parse(&own.account_state)
            .is_some_and(|s| !s.allows(Action::SchedulePeriod));
        let entry = Loaded {
            account_state: own.account_state,
            posted: model.posted,
            last_hash: model.last_hash.clone(),
            last_time: model.last_entry_time,
            grants: own.grants.into_iter().map(|g| (g.id.clone(), g)).collect(),
            new_grants: HashMap::new(),
            void_reasons: HashMap::new(),
            holds: own.holds.into_iter().map(|h| (h.id.clone(), h)).collect(),
            new_holds: Vec::new(),
            resolved: HashMap::new(),
            schedules: own
                .schedules
                .into_iter()
                .map(|s| (s.id.clone(), s))
                .collect(),
            new_schedules: Vec::new(),
            thresholds: thresholds(&model),
            entries: Vec::new(),
            state,
            model,
        };
        loaded.insert(entry.model.id.clone(), entry);
    }
    Ok(loaded)
}

/// Whether a grant row is one `load_wallets` reads (live, or holding repaid debt).
fn is_live(grant: &grant::Model) -> bool {
    grant.status == PENDING || grant.status == GRANT_ACTIVE || grant.repaid > 0
}

/// The account state, live grants, open holds and schedules of the wallets in `owners`
/// (wallet id → account id; every wallet gets an entry).
async fn read_rows(
    conn: &impl ConnectionTrait,
    owners: &BTreeMap<String, String>,
) -> Result<HashMap<String, Rows>> {
    let mut rows: HashMap<String, Rows> = owners
        .keys()
        .map(|id| (id.clone(), Rows::default()))
        .collect();
    if owners.is_empty() {
        return Ok(rows);
    }
    let ids: BTreeSet<String> = owners.keys().cloned().collect();
    let account_ids: BTreeSet<&String> = owners.values().collect();
    let states: HashMap<String, String> = account::Entity::find()
        .select_only()
        .column(account::Column::Id)
        .column(account::Column::State)
        .filter(account::Column::Id.is_in(padded(account_ids.into_iter().cloned())))
        .into_tuple::<(String, String)>()
        .all(conn)
        .await?
        .into_iter()
        .collect();
    for (wallet_id, account_id) in owners {
        if let (Some(own), Some(state)) = (rows.get_mut(wallet_id), states.get(account_id)) {
            own.account_state = state.clone();
        }
    }
    // Live grants: the rule `is_live` states for the cache.
    let grants = grant::Entity::find()
        .filter(grant::Column::WalletId.is_in(padded(ids.iter().cloned())))
        .filter(
            Condition::any()
                .add(grant::Column::Status.is_in([PENDING, GRANT_ACTIVE]))
                .add(grant::Column::Repaid.gt(0)),
        )
        .all(conn)
        .await?;
    let holds = reservation::Entity::find()
        .filter(reservation::Column::WalletId.is_in(padded(ids.iter().cloned())))
        .filter(reservation::Column::State.eq(HOLD_OPEN))
        .all(conn)
        .await?;
    let schedules = schedule::Entity::find()
        .filter(schedule::Column::WalletId.is_in(padded(ids.iter().cloned())))
        .all(conn)
        .await?;
    for grant in grants {
        if let Some(own) = rows.get_mut(&grant.wallet_id) {
            own.grants.push(grant);
        }
    }
    for hold in holds {
        if let Some(own) = rows.get_mut(&hold.wallet_id) {
            own.holds.push(hold);
        }
    }
    for schedule in schedules {
        if let Some(own) = rows.get_mut(&schedule.wallet_id) {
            own.schedules.push(schedule);
        }
    }
    Ok(rows
        .into_iter()
        .map(|(id, own)| (id, own.sorted()))
        .collect())
}

/// One wallet as `conn` reads it, unlocked and without the cache (for reads).
async fn load_one(conn: &impl ConnectionTrait, wallet_id: &str) -> Result<Loaded> {
    let ids = BTreeSet::from([wallet_id.to_string()]);
    load_wallets(conn, &ids, &BTreeSet::new(), false, None)
        .await?
        .remove(wallet_id)
        .ok_or_else(|| Error::not_found("wallet", wallet_id))
}

/// The wallet and its balance as of `now` (due events applied in memory; nothing written).
async fn read_balance(
    conn: &impl ConnectionTrait,
    wallet_id: &str,
    now: i64,
) -> Result<(wallet::Model, proto::Balance)> {
    let mut loaded = load_one(conn, wallet_id).await?;
    let mut n = 0;
    loaded.state.advance(now, &mut || {
        n += 1;
        format!("preview-{n}")
    });
    let balance = convert::balance(&loaded.model, &loaded.state, &loaded.thresholds);
    Ok((loaded.model, balance))
}

/// [`read_balance`] in one snapshot of the database: never a balance that did not exist.
pub async fn wallet_balance(
    store: &Store,
    wallet_id: &str,
    now: i64,
) -> Result<(wallet::Model, proto::Balance)> {
    let tx = store.read_snapshot().await?;
    let read = read_balance(&tx, wallet_id, now).await;
    tx.rollback().await?;
    read
}

/// The wallet's balance as of `now`, read through `conn` (e.g. the transaction that just
/// created the wallet).
pub async fn balance(
    conn: &impl ConnectionTrait,
    wallet: &wallet::Model,
    now: i64,
) -> Result<proto::Balance> {
    Ok(read_balance(conn, &wallet.id, now).await?.1)
}

/// The entries the ledger will write for what fell due on the wallet up to `now` (expiry,
/// grants becoming active, schedule periods) but the sweeper has not recorded yet, worked
/// out in memory from what `conn` reads: nothing is written. They carry no id and no hash
/// (the sweeper assigns both when it records them, within a sweep interval).
pub async fn pending_entries(
    conn: &impl ConnectionTrait,
    wallet_id: &str,
    now: i64,
) -> Result<Vec<transaction::Model>> {
    let mut loaded = load_one(conn, wallet_id).await?;
    loaded.advance(now);
    Ok(loaded
        .entries
        .into_iter()
        .map(|entry| transaction::Model {
            id: String::new(),
            hash: String::new(),
            prev_hash: String::new(),
            ..entry
        })
        .collect())
}

// ---- applying a batch ----------------------------------------------------------------------

/// Applies `ops` in one transaction, retrying the whole batch on write conflicts. The outer
/// `Err` is for failures that hit the whole batch (database unreachable). The outcomes may be
/// sent once the returned [`Durable`] has been waited for.
pub async fn apply(store: &Store, ops: &[Op]) -> Result<(Vec<Result<Outcome>>, Durable)> {
    const ATTEMPTS: usize = 5;
    let mut last = Error::aborted("ledger batch kept conflicting");
    for attempt in 0..ATTEMPTS {
        match apply_once(store, ops).await {
            Ok(Some(applied)) => return Ok(applied),
            Ok(None) => {
                last = Error::aborted("another writer committed a request_id of this batch");
            }
            Err(err) if err.is_retryable() => last = err,
            Err(err) => return Err(err),
        }
        tokio::time::sleep(std::time::Duration::from_millis(2 << attempt)).await;
    }
    Err(last)
}

/// Reads shared by every operation of one batch attempt.
struct Batch<'a> {
    now: i64,
    card: Option<Card>,
    /// Account id → state.
    accounts: HashMap<String, String>,
    by_account_unit: HashMap<(String, String), String>,
    wallets: BTreeMap<String, Loaded>,
    /// Refunded entries and how much of each was refunded so far.
    refunded: HashMap<String, (transaction::Model, i64)>,
    ops: &'a [Op],
}

/// One attempt. `Ok(None)`: an idempotency key raced with another replica; retry.
async fn apply_once(store: &Store, ops: &[Op]) -> Result<Option<(Vec<Result<Outcome>>, Durable)>> {
    let write = store.begin_write().await?;
    let conn = &write.tx;
    let generation = rate_cards::lock_head_for_batch(conn).await?;

    // Debits and holds name (account, unit); wallets never move, so resolving before
    // locking is safe.
    let account_ids: BTreeSet<String> = ops
        .iter()
        .filter_map(|op| op.account_unit().map(|(a, _)| a.to_string()))
        .collect();
    let mut by_account_unit = HashMap::new();
    let mut unmapped = BTreeSet::new();
    for (account, unit) in ops.iter().filter_map(Op::account_unit) {
        match store.directory.wallet(account, unit) {
            Some(id) => {
                by_account_unit.insert((account.to_string(), unit.to_string()), id);
            }
            None => {
                unmapped.insert(account.to_string());
            }
        }
    }
    if !unmapped.is_empty() {
        let found = wallet::Entity::find()
            .select_only()
            .column(wallet::Column::Id)
            .column(wallet::Column::AccountId)
            .column(wallet::Column::Unit)
            .filter(wallet::Column::AccountId.is_in(padded(unmapped.iter().cloned())))
            .into_tuple::<(String, String, String)>()
            .all(conn)
            .await?;
        for (id, account, unit) in found {
            // Committed rows (a batch never creates wallets): safe to remember.
            store.directory.remember_wallet(&account, &unit, &id);
            by_account_unit.insert((account, unit), id);
        }
    }
    let mut wallet_ids = BTreeSet::new();
    for op in ops {
        if let Some(id) = op.wallet_id() {
            wallet_ids.insert(id.to_string());
        } else if let Some((account, unit)) = op.account_unit()
            && let Some(id) = by_account_unit.get(&(account.to_string(), unit.to_string()))
        {
            wallet_ids.insert(id.clone());
        }
    }

    // Refunds: the refunded entries (immutable rows, so read before the locks) name the
    // grants a refund may return to; what was refunded of them already is read below, under
    // the wallet locks that serialise refunds of one entry on every replica.
    let refund_ids: BTreeSet<String> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Refund(r) => Some(r.transaction_id.clone()),
            _ => None,
        })
        .collect();
    let mut originals = Vec::new();
    let mut extra_grants = BTreeSet::new();
    if !refund_ids.is_empty() {
        originals = transaction::Entity::find()
            .filter(transaction::Column::Id.is_in(padded(refund_ids.iter().cloned())))
            .all(conn)
            .await?;
        for original in &originals {
            extra_grants.extend(
                stored_burns(original)?
                    .into_iter()
                    .map(|b| b.grant_id)
                    .filter(|g| !g.is_empty()),
            );
        }
    }

    let mut wallets =
        load_wallets(conn, &wallet_ids, &extra_grants, true, Some(&store.wallets)).await?;
    let mut refunded = HashMap::new();
    if !originals.is_empty() {
        // After the locks: a refund committed by another replica a moment ago is counted.
        let prior: Vec<(Option<String>, i64)> = transaction::Entity::find()
            .select_only()
            .column(transaction::Column::RefId)
            .column(transaction::Column::Units)
            .filter(transaction::Column::Kind.eq(MovementKind::Refund.as_str()))
            .filter(transaction::Column::RefId.is_in(padded(refund_ids.iter().cloned())))
            .into_tuple()
            .all(conn)
            .await?;
        for original in originals {
            let done = prior
                .iter()
                .filter(|(r, _)| r.as_deref() == Some(original.id.as_str()))
                .try_fold(0i64, |sum, (_, units)| sum.checked_add(*units))
                .ok_or_else(|| Error::internal("refunded units overflow"))?;
            refunded.insert(original.id.clone(), (original, done));
        }
    }
    // Account states: with each loaded wallet (cached by its version); read for the rest
    // (an account without the wallet an operation names, or none at all).
    let mut accounts: HashMap<String, String> = wallets
        .values()
        .map(|w| (w.model.account_id.clone(), w.account_state.clone()))
        .collect();
    let unread: BTreeSet<&String> = account_ids
        .iter()
        .filter(|id| !accounts.contains_key(*id))
        .collect();
    if !unread.is_empty() {
        let read: Vec<(String, String)> = account::Entity::find()
            .select_only()
            .column(account::Column::Id)
            .column(account::Column::State)
            .filter(account::Column::Id.is_in(padded(unread.into_iter().cloned())))
            .into_tuple()
            .all(conn)
            .await?;
        accounts.extend(read);
    }
    // "Now" is read once every lock is held: no batch that locks these wallets later can
    // be dated earlier, and no publish can commit before this batch does.
    let now = store.clock.now_micros();
    let needs_card = ops
        .iter()
        .any(|op| matches!(op, Op::Debit(_) | Op::Reserve(_) | Op::Capture(_)));
    let card = if needs_card {
        let cards = store.cards.published(conn, generation).await?;
        rate_cards::in_force_among(&cards, now).cloned()
    } else {
        None
    };
    for loaded in wallets.values_mut() {
        loaded.advance(now);
    }

    let keys: Vec<&Key> = ops.iter().filter_map(Op::key).collect();
    let mut records: HashMap<(String, String), idempotency_key::Model> =
        idempotency::find_many(conn, &keys)
            .await?
            .into_iter()
            .map(|r| ((r.scope.clone(), r.request_id.clone()), r))
            .collect();

    let mut batch = Batch {
        now,
        card,
        accounts,
        by_account_unit,
        wallets,
        refunded,
        ops,
    };
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut new_records: Vec<(&Key, Vec<u8>)> = Vec::new();
    for op in batch.ops {
        let key = op.key();
        let record_key = key.map(|k| (k.scope.clone(), k.request_id.clone()));
        if let (Some(key), Some(record)) = (key, record_key.as_ref().and_then(|k| records.get(k))) {
            outcomes.push(Outcome::replay(op, key, record));
            continue;
        }
        // Each operation sees the state the previous ones left, or — if it fails — leaves
        // none of its own: evaluate on a copy of its wallet and keep the copy on success.
        let result = batch.evaluate(op);
        match result {
            Ok(outcome) => {
                if let (Some(key), Some(record_key)) = (key, record_key) {
                    let bytes = outcome.encode();
                    records.insert(
                        record_key,
                        idempotency_key::Model {
                            scope: key.scope.clone(),
                            request_id: key.request_id.clone(),
                            method: key.method.to_string(),
                            fingerprint: key.fingerprint.clone(),
                            response: bytes.clone(),
                            create_time: now,
                        },
                    );
                    new_records.push((key, bytes));
                }
                outcomes.push(Ok(outcome));
            }
            Err(err) => outcomes.push(Err(err)),
        }
    }
    for loaded in batch.wallets.values_mut() {
        // New schedules may have periods due already.
        loaded.advance(now);
    }

    let mut writes = bulk::Writes::default();
    let after = write_effects(conn, &mut writes, &batch.wallets, now).await?;
    let inserted = idempotency::record_with(conn, writes, &new_records, now).await?;
    if inserted != new_records.len() as u64 {
        write.tx.rollback().await?;
        return Ok(None);
    }
    // If the commit fails the cache is left as it was: its entries carry the versions from
    // before this batch, which match the database only if the batch did not commit.
    let durable = write.commit_pending().await?;
    for (id, version, rows) in after {
        store.wallets.put(&id, version, rows);
    }
    Ok(Some((outcomes, durable)))
}

/// ACCOUNT_NOT_ACTIVE unless the account's state allows `op` (`domain::account_state`).
fn check_state(op: &Op, account_id: &str, state: &str) -> Result<()> {
    match op.action() {
        Some(action) => accounts::require_state(account_id, state, action),
        None => Ok(()),
    }
}

fn refusal(refusal: Refusal) -> Error {
    match refusal {
        Refusal::Insufficient {
            required,
            available,
        } => Error::precondition("INSUFFICIENT_CREDITS", refusal.to_string())
            .with("required", required)
            .with("available", available),
        Refusal::SpendCap {
            period,
            cap,
            used,
            required,
        } => Error::precondition("SPEND_CAP_REACHED", refusal.to_string())
            .with("period", period)
            .with("cap", cap)
            .with("used", used)
            .with("required", required),
        Refusal::HoldNotOpen => Error::precondition("RESERVATION_NOT_OPEN", refusal.to_string()),
        Refusal::GrantNotActive => Error::precondition("GRANT_NOT_ACTIVE", refusal.to_string()),
    }
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

fn quantity_strings(quantities: &BTreeMap<String, Decimal>) -> BTreeMap<String, String> {
    quantities
        .iter()
        .map(|(k, v)| (k.clone(), format_decimal(*v)))
        .collect()
}

impl Batch<'_> {
    /// Runs one operation on its wallet. Every operation checks before it changes anything
    /// (the domain's refusals leave the state untouched — property-tested), so a rejected
    /// operation leaves no trace in the batch.
    fn evaluate(&mut self, op: &Op) -> Result<Outcome> {
        // The account's state is checked once: for debits and holds (which name an account)
        // before their wallet is resolved, for the rest on the wallet's own account.
        let (wallet_id, state_checked) = match (op.wallet_id(), op.account_unit()) {
            (Some(id), _) => (id.to_string(), false),
            (None, Some((account_id, unit))) => {
                let state = self
                    .accounts
                    .get(account_id)
                    .ok_or_else(|| Error::not_found("account", account_id))?;
                check_state(op, account_id, state)?;
                let wallet_id = self
                    .by_account_unit
                    .get(&(account_id.to_string(), unit.to_string()))
                    .cloned()
                    .ok_or_else(|| {
                        Error::not_found("wallet", &format!("{account_id}/{unit}"))
                            .with("account_id", account_id)
                            .with("unit", unit)
                    })?;
                (wallet_id, true)
            }
            (None, None) => return Err(Error::internal("operation names no wallet")),
        };
        let Some(mut wallet) = self.wallets.remove(&wallet_id) else {
            return Err(Error::not_found("wallet", &wallet_id));
        };
        let result = if state_checked {
            Ok(())
        } else {
            check_state(op, &wallet.model.account_id, &wallet.account_state)
        }
        .and_then(|()| self.run(op, &mut wallet));
        self.wallets.insert(wallet_id, wallet);
        result
    }

    fn price(
        &self,
        request_type: &str,
        quantities: &BTreeMap<String, Decimal>,
    ) -> Result<(Amount, &Card, String)> {
        let unpriced = || {
            Error::precondition(
                "UNPRICED_REQUEST_TYPE",
                format!("no rate in force for request type `{request_type}`"),
            )
            .with("request_type", request_type)
        };
        let card = self.card.as_ref().ok_or_else(unpriced)?;
        let rate = card.rate(request_type).ok_or_else(unpriced)?;
        let units = rate.price(quantities)?;
        Ok((units, card, rate.provider_cost.clone()))
    }

    fn run(&mut self, op: &Op, wallet: &mut Loaded) -> Result<Outcome> {
        let now = self.now;
        match op {
            Op::Debit(op) => {
                let (units, card, provider_cost) = self.price(&op.request_type, &op.quantities)?;
                if let Some(cap) = op.max_units
                    && units > cap
                {
                    return Err(Error::precondition(
                        "OVER_CALLER_CAP",
                        format!("the request costs {units} units, more than max_units {cap}"),
                    )
                    .with("required", units)
                    .with("max_units", cap));
                }
                let version = card.model.version;
                let movement = wallet.state.debit(units, now).map_err(refusal)?;
                let ctx = EntryContext {
                    actor: op.actor.clone(),
                    request_id: op.key.request_id.clone(),
                    request_type: op.request_type.clone(),
                    quantities: quantity_strings(&op.quantities),
                    metadata: op.metadata.clone(),
                    rate_card_version: Some(version),
                    provider_cost,
                    ..Default::default()
                };
                Ok(charged(&wallet.record(movement, &ctx)))
            }
            Op::Grant(op) => {
                // The API checked this against its own clock; the batch's `now` is later.
                if op
                    .expire_time
                    .is_some_and(|expiry| expiry <= op.effective_time.unwrap_or(now).max(now))
                {
                    return Err(Error::invalid(
                        "INVALID_FIELD",
                        "grant.expire_time",
                        "must lie after now and after effective_time",
                    ));
                }
                if op.amount > wallet.state.headroom() {
                    return Err(headroom_error(&wallet.state));
                }
                let id = new_id("grt");
                let lot = Lot {
                    grant_id: id.clone(),
                    remaining: op.amount,
                    priority: op.priority,
                    effective_time: op.effective_time.unwrap_or(now),
                    expire_time: op.expire_time,
                    seq: now,
                    unit_price: op.unit_price,
                    currency: op.currency.clone(),
                    status: LotStatus::Pending,
                    repaid: Amount::ZERO,
                    period: None,
                };
                wallet.new_grants.insert(
                    id.clone(),
                    GrantTemplate {
                        amount: op.amount.micros(),
                        kind: op.kind.to_string(),
                        contract_ref: op.contract_ref.clone(),
                        rolled_over: 0,
                    },
                );
                if let Some(movement) = wallet.state.add_grant(lot, now) {
                    let ctx = EntryContext {
                        actor: op.actor.clone(),
                        request_id: op.key.request_id.clone(),
                        ..Default::default()
                    };
                    wallet.record(movement, &ctx);
                }
                Ok(Outcome::Grant(grant_view(wallet, &id, now)))
            }
            Op::Reserve(op) => {
                let (units, version) = match op.units {
                    Some(units) => (units, None),
                    None => {
                        let (units, card, _) = self.price(&op.request_type, &op.quantities)?;
                        (units, Some(card.model.version))
                    }
                };
                let id = new_id("rsv");
                let expire_time = now.saturating_add(op.ttl_micros);
                let movement = wallet
                    .state
                    .reserve(id.clone(), units, expire_time, now)
                    .map_err(refusal)?;
                let model = reservation::Model {
                    id: id.clone(),
                    wallet_id: wallet.model.id.clone(),
                    account_id: wallet.model.account_id.clone(),
                    units: units.micros(),
                    state: HOLD_OPEN.to_string(),
                    expire_time,
                    request_type: op.request_type.clone(),
                    quantities: json(&quantity_strings(&op.quantities)),
                    rate_card_version: version,
                    captured_units: None,
                    request_id: op.key.request_id.clone(),
                    actor: op.actor.clone(),
                    create_time: now,
                    resolve_time: None,
                };
                wallet.new_holds.push(model.clone());
                let ctx = EntryContext {
                    actor: op.actor.clone(),
                    request_id: op.key.request_id.clone(),
                    request_type: op.request_type.clone(),
                    quantities: quantity_strings(&op.quantities),
                    rate_card_version: version,
                    ..Default::default()
                };
                wallet.record(movement, &ctx);
                Ok(Outcome::Reservation(convert::reservation(&model)))
            }
            Op::Capture(op) => {
                let hold = hold_model(wallet, &op.reservation_id)?;
                let (units, version, provider_cost) = match op.units {
                    Some(units) => (units, hold.rate_card_version, String::new()),
                    None => {
                        let (units, card, cost) = self.price(&hold.request_type, &op.quantities)?;
                        (units, Some(card.model.version), cost)
                    }
                };
                let movement = wallet
                    .state
                    .capture(&op.reservation_id, units, now)
                    .map_err(refusal)?;
                wallet.resolved.insert(
                    op.reservation_id.clone(),
                    (HOLD_CAPTURED, Some(units.micros()), now),
                );
                let ctx = EntryContext {
                    actor: op.actor.clone(),
                    request_id: op.key.request_id.clone(),
                    request_type: hold.request_type.clone(),
                    quantities: quantity_strings(&op.quantities),
                    rate_card_version: version,
                    provider_cost,
                    ..Default::default()
                };
                Ok(charged(&wallet.record(movement, &ctx)))
            }
            Op::Release(op) => {
                let hold = hold_model(wallet, &op.reservation_id)?;
                let movement = wallet
                    .state
                    .release(&op.reservation_id, now)
                    .map_err(refusal)?;
                wallet
                    .resolved
                    .insert(op.reservation_id.clone(), (HOLD_RELEASED, None, now));
                let ctx = EntryContext {
                    actor: op.actor.clone(),
                    request_id: op.key.request_id.clone(),
                    request_type: hold.request_type.clone(),
                    ..Default::default()
                };
                wallet.record(movement, &ctx);
                let mut view = convert::reservation(&hold);
                view.state = proto::ReservationState::Released as i32;
                Ok(Outcome::Reservation(view))
            }
            Op::Refund(op) => {
                let (original, done) = self
                    .refunded
                    .get(&op.transaction_id)
                    .cloned()
                    .ok_or_else(|| Error::not_found("transaction", &op.transaction_id))?;
                let refundable = original.units.saturating_sub(done);
                let units = op.units.unwrap_or(Amount::from_micros(refundable));
                if units.micros() > refundable || refundable == 0 {
                    return Err(Error::precondition(
                        "REFUND_EXCEEDS_CHARGE",
                        format!(
                            "at most {} units of `{}` can still be refunded",
                            Amount::from_micros(refundable),
                            original.id
                        ),
                    )
                    .with("refundable", Amount::from_micros(refundable))
                    .with("transaction_id", &original.id));
                }
                let returns = refund_returns(&original, done, units.micros())?;
                // Units a debit burnt freed room that a later grant may have filled: the
                // returned units must still fit the wallet's bound.
                if units > wallet.state.headroom() {
                    return Err(headroom_error(&wallet.state));
                }
                let movements = wallet.state.refund(&returns, original.create_time, now);
                let ctx = EntryContext {
                    actor: op.actor.clone(),
                    request_id: op.key.request_id.clone(),
                    request_type: original.request_type.clone(),
                    ref_id: Some(original.id.clone()),
                    reason: op.reason.clone(),
                    ..Default::default()
                };
                let mut first = None;
                for movement in movements {
                    let entry = wallet.record(movement, &ctx);
                    first.get_or_insert(entry);
                }
                self.refunded.insert(
                    original.id.clone(),
                    (original, done.saturating_add(units.micros())),
                );
                let entry = first.ok_or_else(|| Error::internal("refund recorded nothing"))?;
                Ok(Outcome::Transaction(convert::transaction(&entry)))
            }
            Op::Void(op) => {
                let movement = wallet.state.void(&op.grant_id, now).map_err(refusal)?;
                wallet
                    .void_reasons
                    .insert(op.grant_id.clone(), op.reason.clone());
                let ctx = EntryContext {
                    actor: op.actor.clone(),
                    request_id: op.key.request_id.clone(),
                    reason: op.reason.clone(),
                    ..Default::default()
                };
                wallet.record(movement, &ctx);
                Ok(Outcome::Grant(grant_view(wallet, &op.grant_id, now)))
            }
            Op::Adjust(op) => {
                let ctx = EntryContext {
                    actor: op.actor.clone(),
                    request_id: op.key.request_id.clone(),
                    reason: op.reason.clone(),
                    ..Default::default()
                };
                let movement = if op.units > 0 {
                    let units = Amount::from_micros(op.units);
                    if units > wallet.state.headroom() {
                        return Err(headroom_error(&wallet.state));
                    }
                    let id = new_id("grt");
                    wallet.new_grants.insert(
                        id.clone(),
                        GrantTemplate {
                            amount: units.micros(),
                            kind: "ADJUSTMENT".into(),
                            contract_ref: String::new(),
                            rolled_over: 0,
                        },
                    );
                    wallet.state.adjust_up(
                        Lot {
                            grant_id: id,
                            remaining: units,
                            priority: 0,
                            effective_time: now,
                            expire_time: None,
                            seq: now,
                            unit_price: Decimal::ZERO,
                            currency: String::new(),
                            status: LotStatus::Pending,
                            repaid: Amount::ZERO,
                            period: None,
                        },
                        now,
                    )
                } else {
                    let units = Amount::from_micros(op.units.saturating_neg());
                    wallet.state.adjust_down(units, now).map_err(refusal)?
                };
                let entry = wallet.record(movement, &ctx);
                Ok(Outcome::Transaction(convert::transaction(&entry)))
            }
            Op::Schedule(op) => {
                let model = schedule::Model {
                    id: new_id("sch"),
                    wallet_id: wallet.model.id.clone(),
                    account_id: wallet.model.account_id.clone(),
                    amount: op.amount.micros(),
                    period: period_str(op.period).to_string(),
                    start_time: op.start_time,
                    end_time: op.end_time,
                    rollover_policy: match op.rollover {
                        Rollover::None => "NONE".into(),
                        Rollover::Capped(_) => "CAPPED".into(),
                    },
                    rollover_cap: match op.rollover {
                        Rollover::None => None,
                        Rollover::Capped(cap) => Some(cap.micros()),
                    },
                    next_period: 0,
                    kind: op.kind.to_string(),
                    priority: op.priority,
                    unit_price: format_decimal(op.unit_price),
                    currency: op.currency.clone(),
                    contract_ref: op.contract_ref.clone(),
                    create_time: now,
                };
                wallet.state.schedules.push(domain_schedule(&model));
                wallet.new_schedules.push(model.clone());
                // Periods already due are granted before the batch commits.
                wallet.advance(now);
                let next = wallet
                    .state
                    .schedules
                    .iter()
                    .find(|s| s.id == model.id)
                    .map(|s| s.next_period)
                    .unwrap_or_default();
                Ok(Outcome::Schedule(convert::schedule(&schedule::Model {
                    next_period: next,
                    ..model
                })))
            }
            Op::UpdateWallet(op) => {
                let changes = &op.changes;
                if let Some(limit) = changes.overdraft_limit {
                    if limit < wallet.state.debt {
                        return Err(Error::precondition(
                            "OVERDRAFT_IN_USE",
                            format!(
                                "{} units of overdraft are in use; the limit cannot go below that",
                                wallet.state.debt
                            ),
                        )
                        .with("debt", wallet.state.debt));
                    }
                    let raise = limit.saturating_sub(wallet.state.overdraft_limit);
                    if raise > wallet.state.headroom() {
                        return Err(headroom_error(&wallet.state));
                    }
                    wallet.state.overdraft_limit = limit;
                }
                if let Some(daily) = changes.daily_spend_cap {
                    wallet.state.caps.daily = daily;
                }
                if let Some(monthly) = changes.monthly_spend_cap {
                    wallet.state.caps.monthly = monthly;
                }
                if let Some(thresholds) = &changes.low_balance_thresholds {
                    wallet.thresholds = thresholds.clone();
                }
                let model = updated_wallet(wallet, now);
                let balance = convert::balance(&model, &wallet.state, &wallet.thresholds);
                Ok(Outcome::Wallet(convert::wallet(&model, balance)))
            }
            Op::Sweep { .. } => Ok(Outcome::Swept),
        }
    }
}

/// The answer to a debit or capture: the entry it wrote.
fn charged(entry: &transaction::Model) -> Outcome {
    Outcome::Debit(proto::DebitResponse {
        transaction: Some(convert::transaction(entry)),
        replayed: false,
    })
}

fn headroom_error(state: &WalletState) -> Error {
    Error::invalid(
        "BALANCE_OUT_OF_RANGE",
        "units",
        format!(
            "the wallet's grants and overdraft limit would exceed {} units",
            Amount::MAX
        ),
    )
    .with("headroom", state.headroom())
}

/// The open hold's stored row (loaded or created in this batch).
fn hold_model(wallet: &Loaded, id: &str) -> Result<reservation::Model> {
    let open = wallet.state.holds.iter().any(|h| h.id == id);
    let model = wallet
        .holds
        .get(id)
        .cloned()
        .or_else(|| wallet.new_holds.iter().find(|h| h.id == id).cloned());
    match model {
        Some(model) if open => Ok(model),
        _ => Err(Error::precondition(
            "RESERVATION_NOT_OPEN",
            format!("reservation `{id}` is no longer open"),
        )
        .with("reservation_id", id)),
    }
}

/// Which grants a refund of `units` returns to: the original's burns from the last one
/// backwards, after skipping what earlier refunds (`done`) returned the same way.
fn refund_returns(
    original: &transaction::Model,
    done: i64,
    units: i64,
) -> Result<Vec<(Option<String>, Amount)>> {
    let burns = stored_burns(original)?;
    let mut skip = done;
    let mut want = units;
    let mut returns = Vec::new();
    for burn in burns.iter().rev() {
        let mut available = burn.units.micros();
        let skipped = skip.min(available);
        skip -= skipped;
        available -= skipped;
        let take = want.min(available);
        if take > 0 {
            let grant = (!burn.grant_id.is_empty()).then(|| burn.grant_id.clone());
            returns.push((grant, Amount::from_micros(take)));
            want -= take;
        }
    }
    Ok(returns)
}

/// The burns stored on an entry; a row that does not parse is reported, never read as none.
pub fn stored_burns(entry: &transaction::Model) -> Result<Vec<StoredBurn>> {
    serde_json::from_str(&entry.burns).map_err(|err| {
        tracing::error!(transaction_id = %entry.id, error = %err, "stored burns unreadable");
        Error::internal(format!("the burns of entry `{}` are unreadable", entry.id))
    })
}

/// The wallet row with the batch's changes.
fn updated_wallet(wallet: &Loaded, now: i64) -> wallet::Model {
    let state = &wallet.state;
    wallet::Model {
        overdraft_limit: state.overdraft_limit.micros(),
        debt: state.debt.micros(),
        reserved: state.reserved().micros(),
        posted: wallet.posted,
        daily_spend_cap: state.caps.daily.map(Amount::micros),
        monthly_spend_cap: state.caps.monthly.map(Amount::micros),
        spent_day: state.spent.day,
        spent_day_units: state.spent.day_units.micros(),
        spent_month: state.spent.month,
        spent_month_units: state.spent.month_units.micros(),
        low_balance_thresholds: json(&wallet.thresholds),
        next_due_time: state.next_due(),
        last_hash: wallet.last_hash.clone(),
        last_entry_time: wallet.last_time,
        update_time: now,
        ..wallet.model.clone()
    }
}

/// The grant row as it will be after the batch.
fn grant_row(wallet: &Loaded, lot: &Lot, now: i64) -> Option<grant::Model> {
    let status = status_str(lot.status).to_string();
    let void_reason = wallet.void_reasons.get(&lot.grant_id).cloned();
    if let Some(stored) = wallet.grants.get(&lot.grant_id) {
        return Some(grant::Model {
            remaining: lot.remaining.micros(),
            voided: lot.status == LotStatus::Voided,
            status,
            repaid: lot.repaid.micros(),
            void_reason: void_reason.unwrap_or_else(|| stored.void_reason.clone()),
            ..stored.clone()
        });
    }
    let template = wallet.new_grants.get(&lot.grant_id)?;
    Some(grant::Model {
        id: lot.grant_id.clone(),
        wallet_id: wallet.model.id.clone(),
        kind: template.kind.clone(),
        amount: template.amount,
        remaining: lot.remaining.micros(),
        priority: lot.priority,
        effective_time: lot.effective_time,
        expire_time: lot.expire_time,
        unit_price: format_decimal(lot.unit_price),
        currency: lot.currency.clone(),
        contract_ref: template.contract_ref.clone(),
        voided: lot.status == LotStatus::Voided,
        create_time: lot.seq.min(now),
        status,
        repaid: lot.repaid.micros(),
        schedule_id: lot.period.as_ref().map(|(s, _)| s.clone()),
        period_index: lot.period.as_ref().map(|(_, k)| *k),
        rolled_over: template.rolled_over,
        void_reason: void_reason.unwrap_or_default(),
    })
}

fn grant_view(wallet: &Loaded, id: &str, now: i64) -> proto::Grant {
    wallet
        .state
        .lots
        .iter()
        .find(|l| l.grant_id == id)
        .and_then(|lot| grant_row(wallet, lot, now))
        .map(|row| convert::grant(&row, now))
        .unwrap_or_default()
}

/// Writes what the batch changed (on PostgreSQL the multi-row writes are added to `writes`,
/// sent with the idempotency records in one statement). Returns, for the wallet cache, each
/// wallet's version after the batch and the rows `load_wallets` would then read.
async fn write_effects(
    conn: &impl ConnectionTrait,
    writes: &mut bulk::Writes,
    wallets: &BTreeMap<String, Loaded>,
    now: i64,
) -> Result<Vec<(String, i64, Rows)>> {
    let mut entries = Vec::new();
    // Changed and new grants, changed wallets: one multi-row upsert per table per batch
    // (a statement per row was most of a spread batch's time).
    let mut grant_rows: Vec<grant::Model> = Vec::new();
    let mut wallet_rows: Vec<wallet::Model> = Vec::new();
    let mut after = Vec::with_capacity(wallets.len());
    for wallet in wallets.values() {
        let mut rows = Rows {
            account_state: wallet.account_state.clone(),
            ..Rows::default()
        };
        let mut dirty = !wallet.entries.is_empty();
        for lot in &wallet.state.lots {
            let Some(row) = grant_row(wallet, lot, now) else {
                continue;
            };
            if wallet.grants.get(&lot.grant_id) != Some(&row) {
                dirty = true;
                grant_rows.push(row.clone());
            }
            if is_live(&row) {
                rows.grants.push(row);
            }
        }
        for schedule in &wallet.new_schedules {
            let next = next_period(wallet, &schedule.id, schedule.next_period);
            let model = schedule::Model {
                next_period: next,
                ..schedule.clone()
            };
            let active: schedule::ActiveModel = model.clone().into();
            active.insert(conn).await?;
            rows.schedules.push(model);
            dirty = true;
        }
        for (id, stored) in &wallet.schedules {
            let next = next_period(wallet, id, stored.next_period);
            if next != stored.next_period {
                let mut active: schedule::ActiveModel = stored.clone().into();
                active.next_period = Set(next);
                active.update(conn).await?;
                dirty = true;
            }
            rows.schedules.push(schedule::Model {
                next_period: next,
                ..stored.clone()
            });
        }
        for hold in &wallet.new_holds {
            let mut model = hold.clone();
            if let Some((state, captured, at)) = wallet.resolved.get(&hold.id) {
                model.state = state.to_string();
                model.captured_units = *captured;
                model.resolve_time = Some(*at);
            }
            if model.state == HOLD_OPEN {
                rows.holds.push(model.clone());
            }
            let active: reservation::ActiveModel = model.into();
            active.insert(conn).await?;
            dirty = true;
        }
        for (id, stored) in &wallet.holds {
            match wallet.resolved.get(id) {
                Some((state, captured, at)) => {
                    let mut active: reservation::ActiveModel = stored.clone().into();
                    active.state = Set(state.to_string());
                    active.captured_units = Set(*captured);
                    active.resolve_time = Set(Some(*at));
                    active.update(conn).await?;
                    dirty = true;
                }
                None if stored.state == HOLD_OPEN => rows.holds.push(stored.clone()),
                None => {}
            }
        }
        let mut updated = updated_wallet(wallet, now);
        let unchanged = wallet::Model {
            update_time: wallet.model.update_time,
            ..updated.clone()
        } == wallet.model;
        if dirty || !unchanged {
            updated.version = wallet.model.version + 1;
            wallet_rows.push(updated.clone());
        }
        after.push((wallet.model.id.clone(), updated.version, rows));
        entries.extend(wallet.entries.iter().cloned());
    }
    upsert::<grant::Entity>(conn, writes, grant_rows, &GRANT_UPDATES).await?;
    upsert::<wallet::Entity>(conn, writes, wallet_rows, &WALLET_UPDATES).await?;
    insert_entries(conn, writes, entries).await?;
    Ok(after)
}

const GRANT_UPDATES: [grant::Column; 5] = [
    grant::Column::Remaining,
    grant::Column::Status,
    grant::Column::Repaid,
    grant::Column::Voided,
    grant::Column::VoidReason,
];

const WALLET_UPDATES: [wallet::Column; 16] = [
    wallet::Column::OverdraftLimit,
    wallet::Column::Debt,
    wallet::Column::Reserved,
    wallet::Column::UpdateTime,
    wallet::Column::Posted,
    wallet::Column::DailySpendCap,
    wallet::Column::MonthlySpendCap,
    wallet::Column::SpentDay,
    wallet::Column::SpentDayUnits,
    wallet::Column::SpentMonth,
    wallet::Column::SpentMonthUnits,
    wallet::Column::LowBalanceThresholds,
    wallet::Column::NextDueTime,
    wallet::Column::LastHash,
    wallet::Column::LastEntryTime,
    wallet::Column::Version,
];

/// Writes new and changed rows of `E`, updating `updates` where the id exists already (on
/// PostgreSQL: added to `writes`).
async fn upsert<E>(
    conn: &impl ConnectionTrait,
    writes: &mut bulk::Writes,
    rows: Vec<E::Model>,
    updates: &[E::Column],
) -> Result<()>
where
    E: EntityTrait,
    E::Model: Into<E::ActiveModel>,
    E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
{
    if rows.is_empty() {
        return Ok(());
    }
    let key = E::PrimaryKey::iter()
        .map(|k| k.into_column())
        .collect::<Vec<_>>();
    if locks_rows(conn) {
        let update = bulk::OnConflict::Update {
            key: &key,
            columns: updates,
        };
        writes.insert::<E>(&rows, &[], Some(update));
        return Ok(());
    }
    // A padded repeat just updates its row again, to the same values.
    for chunk in padded_chunks(rows, ROWS_PER_STATEMENT) {
        let chunk: Vec<E::ActiveModel> = chunk.into_iter().map(Into::into).collect();
        E::insert_many(chunk)
            .on_conflict(
                OnConflict::columns(key.iter().copied())
                    .update_columns(updates.iter().copied())
                    .to_owned(),
            )
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
}

/// Inserts the batch's ledger entries (`seq` is assigned by the database, in this order).
async fn insert_entries(
    conn: &impl ConnectionTrait,
    writes: &mut bulk::Writes,
    rows: Vec<transaction::Model>,
) -> Result<()> {
    use transaction::Column as C;
    if rows.is_empty() {
        return Ok(());
    }
    if locks_rows(conn) {
        // Entry ids are new: a clash is an error, not a row to skip.
        writes.insert::<transaction::Entity>(&rows, &[C::Seq], None);
        return Ok(());
    }
    let rows: Vec<transaction::ActiveModel> = rows
        .into_iter()
        .map(|model| {
            let mut active: transaction::ActiveModel = model.into();
            active.seq = sea_orm::ActiveValue::NotSet;
            active
        })
        .collect();
    // Entry ids are new, so only the padding's repeated row can conflict (and is skipped).
    for chunk in padded_chunks(rows, ROWS_PER_STATEMENT) {
        transaction::Entity::insert_many(chunk)
            .on_conflict(OnConflict::column(C::Id).do_nothing().to_owned())
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
}

fn next_period(wallet: &Loaded, schedule_id: &str, stored: i64) -> i64 {
    wallet
        .state
        .schedules
        .iter()
        .find(|s| s.id == schedule_id)
        .map_or(stored, |s| s.next_period)
}

// ---- reads ---------------------------------------------------------------------------------

/// Ledger entries of one wallet, newest first.
pub async fn list_transactions(
    conn: &impl ConnectionTrait,
    wallet_id: &str,
    page: &Page,
) -> Result<(Vec<transaction::Model>, String)> {
    let mut query = transaction::Entity::find()
        .filter(transaction::Column::WalletId.eq(wallet_id))
        .order_by_desc(transaction::Column::Seq);
    if let Some(after) = &page.after {
        let after: i64 = after.parse().map_err(|_| {
            Error::invalid(
                "INVALID_PAGE_TOKEN",
                "page_token",
                "is not a token this list issued",
            )
        })?;
        query = query.filter(transaction::Column::Seq.lt(after));
    }
    let rows = query.limit(page.size + 1).all(conn).await?;
    Ok(pagination::finish("transactions", rows, page, |t| {
        t.seq.to_string()
    }))
}

/// Grants of one wallet, oldest first.
pub async fn list_grants(
    conn: &impl ConnectionTrait,
    wallet_id: &str,
    page: &Page,
) -> Result<(Vec<grant::Model>, String)> {
    let query = grant::Entity::find().filter(grant::Column::WalletId.eq(wallet_id));
    pagination::by_id(conn, query, grant::Column::Id, "grants", page, |g| {
        g.id.clone()
    })
    .await
}

/// Allotment schedules of one wallet, oldest first.
pub async fn list_schedules(
    conn: &impl ConnectionTrait,
    wallet_id: &str,
    page: &Page,
) -> Result<(Vec<schedule::Model>, String)> {
    let query = schedule::Entity::find().filter(schedule::Column::WalletId.eq(wallet_id));
    pagination::by_id(
        conn,
        query,
        schedule::Column::Id,
        "allotment_schedules",
        page,
        |s| s.id.clone(),
    )
    .await
}

pub async fn find_reservation(
    conn: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<reservation::Model>> {
    Ok(reservation::Entity::find_by_id(id.to_string())
        .one(conn)
        .await?)
}

pub async fn find_transaction(
    conn: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<transaction::Model>> {
    Ok(transaction::Entity::find()
        .filter(transaction::Column::Id.eq(id))
        .one(conn)
        .await?)
}

pub async fn find_grant(conn: &impl ConnectionTrait, id: &str) -> Result<Option<grant::Model>> {
    Ok(grant::Entity::find_by_id(id.to_string()).one(conn).await?)
}

/// Wallets with something due at or before `now` (for the sweeper).
pub async fn due_wallets(conn: &impl ConnectionTrait, now: i64, limit: u64) -> Result<Vec<String>> {
    Ok(wallet::Entity::find()
        .select_only()
        .column(wallet::Column::Id)
        .filter(wallet::Column::NextDueTime.lte(now))
        .order_by_asc(wallet::Column::NextDueTime)
        .limit(limit)
        .into_tuple()
        .all(conn)
        .await?)
}
