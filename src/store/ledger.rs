//! Applies a batch of ledger operations in one database transaction (group commit).
//!
//! Steps, in this order (the order is what makes it safe with several replicas):
//! 1. lock the rate-card head FOR SHARE, read "now", load the card in force;
//! 2. resolve every operation's wallet, then lock all wallets `ORDER BY id FOR UPDATE`;
//! 3. load the idempotency records of every `request_id` in the batch;
//! 4. evaluate each operation in arrival order against the in-memory wallet state with the
//!    pure rules in `domain` — a rejected operation changes nothing, the others go on;
//! 5. write the final grant balances, wallets, ledger entries and idempotency records;
//!    if another replica committed one of the keys first, roll back and retry the batch.
//!
//! Every operation gets exactly the outcome it would get alone.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use prost::Message;
use rust_decimal::Decimal;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, sea_query::Expr,
};
use serde::{Deserialize, Serialize};

use super::{
    Store,
    accounts::{self, ACTIVE},
    entity::{account, grant, transaction, wallet},
    idempotency::{self, Key},
    locks_rows, new_id, rate_cards,
};
use crate::{
    api::convert,
    domain::{Amount, Burn, Lot, WalletState, amount::format_decimal},
    error::{Error, Result},
    proto,
};

/// A debit as the ledger needs it (validated by the API layer).
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

/// A new grant on a wallet.
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
pub enum Op {
    Debit(DebitOp),
    Grant(GrantOp),
}

impl Op {
    fn key(&self) -> &Key {
        match self {
            Op::Debit(op) => &op.key,
            Op::Grant(op) => &op.key,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Debit(proto::DebitResponse),
    Grant(proto::Grant),
}

impl Outcome {
    fn encode(&self) -> Vec<u8> {
        match self {
            Outcome::Debit(response) => response.encode_to_vec(),
            Outcome::Grant(grant) => grant.encode_to_vec(),
        }
    }

    fn replay(op: &Op, record: &super::entity::idempotency_key::Model) -> Result<Outcome> {
        Ok(match op {
            Op::Debit(op) => {
                let mut response: proto::DebitResponse = op.key.replay(record)?;
                response.replayed = true;
                Outcome::Debit(response)
            }
            Op::Grant(op) => Outcome::Grant(op.key.replay(record)?),
        })
    }
}

/// One burn as stored on a ledger entry (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredBurn {
    /// Empty when the units came from the overdraft.
    pub grant_id: String,
    pub units: Amount,
    pub unit_price: String,
    pub currency: String,
    pub money: String,
}

impl From<&Burn> for StoredBurn {
    fn from(burn: &Burn) -> Self {
        StoredBurn {
            grant_id: burn.grant_id.clone().unwrap_or_default(),
            units: burn.units,
            unit_price: format_decimal(burn.unit_price),
            currency: burn.currency.clone(),
            money: format_decimal(burn.money()),
        }
    }
}

pub const GRANT: &str = "GRANT";
pub const DEBIT: &str = "DEBIT";

/// A wallet loaded (and locked) for the batch, with what the batch did to it.
struct Loaded {
    model: wallet::Model,
    state: WalletState,
    /// `remaining` of each lot when loaded: only changed lots are written back.
    loaded_remaining: HashMap<String, Amount>,
    new_grants: Vec<grant::Model>,
}

impl Loaded {
    fn posted(&self, now: i64) -> Amount {
        self.state.posted(now)
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
        voided: model.voided,
    }
}

/// Loads wallets with their unburnt grants; with `lock`, locks the wallets in id order.
async fn load_wallets(
    conn: &impl ConnectionTrait,
    ids: &BTreeSet<String>,
    lock: bool,
) -> Result<BTreeMap<String, Loaded>> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut query = wallet::Entity::find()
        .filter(wallet::Column::Id.is_in(ids.iter().cloned()))
        .order_by_asc(wallet::Column::Id);
    if lock && locks_rows(conn) {
        query = query.lock_exclusive();
    }
    let wallets = query.all(conn).await?;
    let grants = grant::Entity::find()
        .filter(grant::Column::WalletId.is_in(ids.iter().cloned()))
        .filter(grant::Column::Remaining.gt(0))
        .filter(grant::Column::Voided.eq(false))
        .all(conn)
        .await?;
    let mut loaded: BTreeMap<String, Loaded> = wallets
        .into_iter()
        .map(|model| {
            let state = WalletState {
                overdraft_limit: Amount::from_micros(model.overdraft_limit),
                debt: Amount::from_micros(model.debt),
                reserved: Amount::from_micros(model.reserved),
                lots: Vec::new(),
            };
            let entry = Loaded {
                model,
                state,
                loaded_remaining: HashMap::new(),
                new_grants: Vec::new(),
            };
            (entry.model.id.clone(), entry)
        })
        .collect();
    for grant in grants {
        if let Some(wallet) = loaded.get_mut(&grant.wallet_id) {
            wallet
                .loaded_remaining
                .insert(grant.id.clone(), Amount::from_micros(grant.remaining));
            wallet.state.lots.push(lot(&grant));
        }
    }
    Ok(loaded)
}

/// Balance of one wallet at `now` (no locks).
pub async fn balance(
    conn: &impl ConnectionTrait,
    wallet: &wallet::Model,
    now: i64,
) -> Result<proto::Balance> {
    let ids = BTreeSet::from([wallet.id.clone()]);
    let loaded = load_wallets(conn, &ids, false).await?;
    let state = loaded
        .get(&wallet.id)
        .map(|l| l.state.clone())
        .unwrap_or_default();
    Ok(convert::balance(wallet, &state, now))
}

/// Applies `ops` in one transaction, retrying the whole batch on write conflicts. The outer
/// `Err` is for failures that hit the whole batch (database unreachable).
pub async fn apply(store: &Store, ops: &[Op]) -> Result<Vec<Result<Outcome>>> {
    const ATTEMPTS: usize = 5;
    let mut last = Error::aborted("ledger batch kept conflicting");
    for attempt in 0..ATTEMPTS {
        match apply_once(store, ops).await {
            Ok(Some(outcomes)) => return Ok(outcomes),
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

/// One attempt. `Ok(None)`: an idempotency key raced with another replica; retry.
async fn apply_once(store: &Store, ops: &[Op]) -> Result<Option<Vec<Result<Outcome>>>> {
    let write = store.begin_write().await?;
    let conn = &write.tx;

    rate_cards::lock_head(conn, false).await?;
    let now = store.clock.now_micros();
    let needs_card = ops.iter().any(|op| matches!(op, Op::Debit(_)));
    let card = if needs_card {
        rate_cards::in_force(conn, now).await?
    } else {
        None
    };

    // Resolve wallets: debits name (account, unit), grants a wallet id. Wallets never move, so
    // resolving before locking is safe.
    let account_ids: BTreeSet<String> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Debit(d) => Some(d.account_id.clone()),
            Op::Grant(_) => None,
        })
        .collect();
    let accounts: HashMap<String, account::Model> = if account_ids.is_empty() {
        HashMap::new()
    } else {
        account::Entity::find()
            .filter(account::Column::Id.is_in(account_ids.iter().cloned()))
            .all(conn)
            .await?
            .into_iter()
            .map(|a| (a.id.clone(), a))
            .collect()
    };
    let by_account_unit: HashMap<(String, String), String> = if account_ids.is_empty() {
        HashMap::new()
    } else {
        wallet::Entity::find()
            .filter(wallet::Column::AccountId.is_in(account_ids.iter().cloned()))
            .all(conn)
            .await?
            .into_iter()
            .map(|w| ((w.account_id, w.unit), w.id))
            .collect()
    };
    let mut wallet_ids = BTreeSet::new();
    for op in ops {
        match op {
            Op::Debit(d) => {
                if let Some(id) = by_account_unit.get(&(d.account_id.clone(), d.unit.clone())) {
                    wallet_ids.insert(id.clone());
                }
            }
            Op::Grant(g) => {
                wallet_ids.insert(g.wallet_id.clone());
            }
        }
    }
    let mut wallets = load_wallets(conn, &wallet_ids, true).await?;

    let keys: Vec<&Key> = ops.iter().map(Op::key).collect();
    let mut records: HashMap<(String, String), super::entity::idempotency_key::Model> =
        idempotency::find_many(conn, &keys)
            .await?
            .into_iter()
            .map(|r| ((r.scope.clone(), r.request_id.clone()), r))
            .collect();

    let mut outcomes = Vec::with_capacity(ops.len());
    let mut entries: Vec<transaction::ActiveModel> = Vec::new();
    let mut new_records: Vec<(&Key, Vec<u8>)> = Vec::new();
    for op in ops {
        let key = op.key();
        let record_key = (key.scope.clone(), key.request_id.clone());
        if let Some(record) = records.get(&record_key) {
            outcomes.push(Outcome::replay(op, record));
            continue;
        }
        let result = match op {
            Op::Debit(d) => {
                let wallet_id = by_account_unit.get(&(d.account_id.clone(), d.unit.clone()));
                debit(
                    d,
                    accounts.get(&d.account_id),
                    wallet_id,
                    &mut wallets,
                    card.as_ref(),
                    now,
                )
            }
            Op::Grant(g) => grant(g, &mut wallets, now),
        };
        match result {
            Ok((outcome, entry)) => {
                let bytes = outcome.encode();
                // Later duplicates of this key in the same batch replay it.
                records.insert(
                    record_key,
                    super::entity::idempotency_key::Model {
                        scope: key.scope.clone(),
                        request_id: key.request_id.clone(),
                        method: key.method.to_string(),
                        fingerprint: key.fingerprint.clone(),
                        response: bytes.clone(),
                        create_time: now,
                    },
                );
                new_records.push((key, bytes));
                entries.push(entry);
                outcomes.push(Ok(outcome));
            }
            Err(err) => outcomes.push(Err(err)),
        }
    }

    write_effects(conn, &wallets, entries, now).await?;
    let inserted = idempotency::record_many(conn, &new_records, now).await?;
    if inserted != new_records.len() as u64 {
        write.tx.rollback().await?;
        return Ok(None);
    }
    write.commit().await?;
    Ok(Some(outcomes))
}

fn debit(
    op: &DebitOp,
    account: Option<&account::Model>,
    wallet_id: Option<&String>,
    wallets: &mut BTreeMap<String, Loaded>,
    card: Option<&rate_cards::Card>,
    now: i64,
) -> Result<(Outcome, transaction::ActiveModel)> {
    let account = account.ok_or_else(|| Error::not_found("account", &op.account_id))?;
    if account.state != ACTIVE {
        return Err(Error::precondition(
            "ACCOUNT_NOT_ACTIVE",
            format!("account `{}` is {}", account.id, account.state),
        )
        .with("account_id", &account.id)
        .with("state", &account.state));
    }
    let wallet = wallet_id
        .and_then(|id| wallets.get_mut(id))
        .ok_or_else(|| {
            Error::not_found("wallet", &format!("{}/{}", op.account_id, op.unit))
                .with("account_id", &op.account_id)
                .with("unit", &op.unit)
        })?;
    let unpriced = || {
        Error::precondition(
            "UNPRICED_REQUEST_TYPE",
            format!("no rate in force for request type `{}`", op.request_type),
        )
        .with("request_type", &op.request_type)
    };
    let card = card.ok_or_else(unpriced)?;
    let rate = card.rate(&op.request_type).ok_or_else(unpriced)?;
    let units = rate
        .price(&op.quantities)
        .map_err(|err| Error::invalid("PRICE_OUT_OF_RANGE", "quantities", err.to_string()))?;
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
    let burns = wallet.state.debit(units, now).map_err(|short| {
        Error::precondition("INSUFFICIENT_CREDITS", short.to_string())
            .with("required", short.required)
            .with("available", short.available)
    })?;
    let balance_after = wallet.posted(now);
    let stored_burns: Vec<StoredBurn> = burns.iter().map(StoredBurn::from).collect();
    let quantities: BTreeMap<String, String> = op
        .quantities
        .iter()
        .map(|(k, v)| (k.clone(), format_decimal(*v)))
        .collect();
    let model = transaction::Model {
        seq: 0,
        id: new_id("txn"),
        kind: DEBIT.to_string(),
        wallet_id: wallet.model.id.clone(),
        account_id: account.id.clone(),
        units: units.micros(),
        balance_after: balance_after.micros(),
        request_type: op.request_type.clone(),
        quantities: json(&quantities),
        rate_card_version: Some(card.model.version),
        request_id: op.key.request_id.clone(),
        actor: op.actor.clone(),
        metadata: json(&op.metadata),
        burns: json(&stored_burns),
        provider_cost: rate.provider_cost.clone(),
        grant_id: None,
        create_time: now,
    };
    let response = proto::DebitResponse {
        transaction: Some(convert::transaction(&model)),
        replayed: false,
    };
    Ok((Outcome::Debit(response), new_entry(model)))
}

fn grant(
    op: &GrantOp,
    wallets: &mut BTreeMap<String, Loaded>,
    now: i64,
) -> Result<(Outcome, transaction::ActiveModel)> {
    let wallet = wallets
        .get_mut(&op.wallet_id)
        .ok_or_else(|| Error::not_found("wallet", &op.wallet_id))?;
    if op.amount > wallet.state.headroom() {
        return Err(Error::invalid(
            "BALANCE_OUT_OF_RANGE",
            "grant.amount",
            format!(
                "the wallet's grants and overdraft limit would exceed {} units",
                Amount::MAX
            ),
        )
        .with("headroom", wallet.state.headroom()));
    }
    let effective_time = op.effective_time.unwrap_or(now);
    let model = grant::Model {
        id: new_id("grt"),
        wallet_id: op.wallet_id.clone(),
        kind: op.kind.to_string(),
        amount: op.amount.micros(),
        remaining: op.amount.micros(),
        priority: op.priority,
        effective_time,
        expire_time: op.expire_time,
        unit_price: format_decimal(op.unit_price),
        currency: op.currency.clone(),
        contract_ref: op.contract_ref.clone(),
        voided: false,
        create_time: now,
    };
    let repaid = wallet.state.add_grant(lot(&model), now);
    let model = grant::Model {
        remaining: model.remaining - repaid.micros(),
        ..model
    };
    let balance_after = wallet.posted(now);
    let entry = transaction::Model {
        seq: 0,
        id: new_id("txn"),
        kind: GRANT.to_string(),
        wallet_id: op.wallet_id.clone(),
        account_id: wallet.model.account_id.clone(),
        units: op.amount.micros(),
        balance_after: balance_after.micros(),
        request_type: String::new(),
        quantities: "{}".to_string(),
        rate_card_version: None,
        request_id: op.key.request_id.clone(),
        actor: op.actor.clone(),
        metadata: "{}".to_string(),
        burns: "[]".to_string(),
        provider_cost: String::new(),
        grant_id: Some(model.id.clone()),
        create_time: now,
    };
    let outcome = Outcome::Grant(convert::grant(&model, now));
    wallet.new_grants.push(model);
    Ok((outcome, new_entry(entry)))
}

fn new_entry(model: transaction::Model) -> transaction::ActiveModel {
    let mut active: transaction::ActiveModel = model.into();
    active.seq = sea_orm::ActiveValue::NotSet;
    active
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

/// Writes what the batch changed: each grant's final `remaining` once, new grants, wallets
/// whose debt moved, and the ledger entries.
async fn write_effects(
    conn: &impl ConnectionTrait,
    wallets: &BTreeMap<String, Loaded>,
    entries: Vec<transaction::ActiveModel>,
    now: i64,
) -> Result<()> {
    for loaded in wallets.values() {
        let new_ids: BTreeSet<&str> = loaded.new_grants.iter().map(|g| g.id.as_str()).collect();
        for lot in &loaded.state.lots {
            if new_ids.contains(lot.grant_id.as_str()) {
                continue;
            }
            if loaded.loaded_remaining.get(&lot.grant_id) != Some(&lot.remaining) {
                grant::Entity::update_many()
                    .col_expr(
                        grant::Column::Remaining,
                        Expr::value(lot.remaining.micros()),
                    )
                    .filter(grant::Column::Id.eq(lot.grant_id.as_str()))
                    .exec(conn)
                    .await?;
            }
        }
        for new_grant in &loaded.new_grants {
            let remaining = loaded
                .state
                .lots
                .iter()
                .find(|l| l.grant_id == new_grant.id)
                .map_or(new_grant.remaining, |l| l.remaining.micros());
            let mut model: grant::ActiveModel = new_grant.clone().into();
            model.remaining = Set(remaining);
            model.insert(conn).await?;
        }
        if loaded.state.debt.micros() != loaded.model.debt {
            let mut model: wallet::ActiveModel = loaded.model.clone().into();
            model.debt = Set(loaded.state.debt.micros());
            model.update_time = Set(now);
            model.update(conn).await?;
        }
    }
    if !entries.is_empty() {
        transaction::Entity::insert_many(entries)
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
}

/// Ledger entries of one wallet, newest first.
pub async fn list_transactions(
    conn: &impl ConnectionTrait,
    wallet_id: &str,
    page: &super::pagination::Page,
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
    Ok(super::pagination::finish("transactions", rows, page, |t| {
        t.seq.to_string()
    }))
}

/// Grants of one wallet, oldest first.
pub async fn list_grants(
    conn: &impl ConnectionTrait,
    wallet_id: &str,
    page: &super::pagination::Page,
) -> Result<(Vec<grant::Model>, String)> {
    let mut query = grant::Entity::find()
        .filter(grant::Column::WalletId.eq(wallet_id))
        .order_by_asc(grant::Column::Id);
    if let Some(after) = &page.after {
        query = query.filter(grant::Column::Id.gt(after.as_str()));
    }
    let rows = query.limit(page.size + 1).all(conn).await?;
    Ok(super::pagination::finish("grants", rows, page, |g| {
        g.id.clone()
    }))
}

pub use accounts::find_wallet_by_id;
