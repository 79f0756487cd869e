//! Accounts and wallets: creation, lookup, listing, updates.

use std::collections::BTreeMap;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
    sea_query::{Expr, ExprTrait, LikeExpr},
};

use super::{
    entity::{account, event, event::EventType, wallet},
    events, is_postgres, new_id,
    pagination::{self, Page},
};
use crate::{
    domain::{AccountState, Action, Amount},
    error::{Error, Reason, Result},
};

/// Deepest allowed parent chain (spec: any depth ≤ 8).
pub const MAX_DEPTH: i32 = 8;

/// A validated request to create an account.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub external_id: String,
    pub display_name: String,
    pub parent: Option<account::Model>,
    pub state: AccountState,
    pub labels: BTreeMap<String, String>,
}

/// Which account fields an update sets.
#[derive(Debug, Clone, Default)]
pub struct AccountChanges {
    pub display_name: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub state: Option<AccountState>,
}

/// Ids from the root down to the account itself.
pub fn ancestry(model: &account::Model) -> Vec<&str> {
    model
        .ancestry
        .split('/')
        .filter(|part| !part.is_empty())
        .collect()
}

/// The account row, locked on PostgreSQL (`exclusive`: FOR UPDATE, else FOR SHARE) so a
/// decision taken on its state holds until the transaction ends, on every replica. SQLite
/// writers hold the database's write lock already.
pub async fn lock_account(
    conn: &impl ConnectionTrait,
    id: &str,
    exclusive: bool,
) -> Result<Option<account::Model>> {
    let mut query = account::Entity::find_by_id(id.to_string());
    if is_postgres(conn) {
        query = if exclusive {
            query.lock_exclusive()
        } else {
            query.lock_shared()
        };
    }
    Ok(query.one(conn).await?)
}

/// ACCOUNT_NOT_ACTIVE unless the account's `state` allows `action` (`domain::account_state`).
/// (A stored state that is not one of the states fails when the row is read.)
pub fn require_state(account_id: &str, state: AccountState, action: Action) -> Result<()> {
    if state.allows(action) {
        return Ok(());
    }
    let state = state.as_str();
    Err(Error::precondition(
        Reason::AccountNotActive,
        format!("account `{account_id}` is {state}: {action:?} is not allowed"),
    )
    .with("account_id", account_id)
    .with("state", state))
}

pub async fn create_account(
    conn: &impl ConnectionTrait,
    new: NewAccount,
    now: i64,
) -> Result<account::Model> {
    if let Some(parent) = &new.parent {
        // The parent's current state, held until this commits (a concurrent close waits).
        let parent = lock_account(conn, &parent.id, false)
            .await?
            .ok_or_else(|| Error::not_found("account", &parent.id))?;
        require_state(&parent.id, parent.state, Action::CreateSubAccount)?;
    }
    if find_by_external_id(conn, &new.external_id).await?.is_some() {
        return Err(external_id_taken(&new.external_id));
    }
    let id = new_id("acct");
    let (ancestry, depth) = match &new.parent {
        Some(parent) => {
            if parent.depth + 1 > MAX_DEPTH {
                return Err(Error::precondition(
                    Reason::AccountTooDeep,
                    format!("accounts nest at most {MAX_DEPTH} deep"),
                )
                .with("parent_id", &parent.id));
            }
            (format!("{}{id}/", parent.ancestry), parent.depth + 1)
        }
        None => (format!("/{id}/"), 1),
    };
    let model = account::ActiveModel {
        id: Set(id),
        external_id: Set(new.external_id.clone()),
        display_name: Set(new.display_name),
        parent_id: Set(new.parent.map(|p| p.id)),
        ancestry: Set(ancestry),
        depth: Set(depth),
        state: Set(new.state),
        labels: Set(account::StringMap(new.labels)),
        create_time: Set(now),
        update_time: Set(now),
    };
    match model.insert(conn).await {
        Ok(model) => Ok(model),
        // A concurrent create took the external id between the check and the insert.
        Err(err) if is_unique_violation(&err) => Err(external_id_taken(&new.external_id)),
        Err(err) => Err(err.into()),
    }
}

fn external_id_taken(external_id: &str) -> Error {
    Error::new(
        tonic::Code::AlreadyExists,
        Reason::ExternalIdTaken,
        format!("an account with external_id `{external_id}` already exists"),
    )
    .with("external_id", external_id)
}

pub(crate) fn is_unique_violation(err: &sea_orm::DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

pub async fn find_account(conn: &impl ConnectionTrait, id: &str) -> Result<Option<account::Model>> {
    Ok(account::Entity::find_by_id(id.to_string())
        .one(conn)
        .await?)
}

pub async fn find_by_external_id(
    conn: &impl ConnectionTrait,
    external_id: &str,
) -> Result<Option<account::Model>> {
    Ok(account::Entity::find()
        .filter(account::Column::ExternalId.eq(external_id))
        .one(conn)
        .await?)
}

/// Lists accounts in id (= creation) order. `within`: only accounts at or below these
/// accounts (a scoped token); `parent_id`: only direct children.
pub async fn list_accounts(
    conn: &impl ConnectionTrait,
    within: Option<&[String]>,
    parent_id: Option<&str>,
    page: &Page,
) -> Result<(Vec<account::Model>, String)> {
    let mut query = account::Entity::find();
    if let Some(roots) = within {
        let mut any = Condition::any();
        for root in roots {
            let pattern = format!("%/{}/%", escape_like(root));
            any = any.add(
                Expr::col(account::Column::Ancestry).like(LikeExpr::new(pattern).escape('\\')),
            );
        }
        query = query.filter(any);
    }
    if let Some(parent) = parent_id {
        query = query.filter(account::Column::ParentId.eq(parent));
    }
    pagination::by_id(conn, query, account::Column::Id, "accounts", page, |a| {
        a.id.clone()
    })
    .await
}

/// The ids among `ids` that name an account, compared exactly.
pub async fn existing_ids<'a>(
    conn: &impl ConnectionTrait,
    ids: impl IntoIterator<Item = &'a String>,
) -> Result<Vec<String>> {
    let ids: Vec<String> = ids.into_iter().cloned().collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(account::Entity::find()
        .select_only()
        .column(account::Column::Id)
        .filter(account::Column::Id.is_in(ids))
        .into_tuple()
        .all(conn)
        .await?)
}

pub(super) fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Applies `changes`. A CLOSED account stays closed.
pub async fn update_account(
    conn: &impl ConnectionTrait,
    current: account::Model,
    changes: AccountChanges,
    now: i64,
) -> Result<account::Model> {
    let closed = AccountState::Closed;
    if current.state == closed && changes.state.is_some_and(|s| s != closed) {
        return Err(Error::precondition(
            Reason::AccountClosed,
            "a closed account cannot be reopened",
        )
        .with("account_id", &current.id));
    }
    let state_given = changes.state.is_some();
    let previous_state = current.state;
    let mut model: account::ActiveModel = current.into();
    if let Some(name) = changes.display_name {
        model.display_name = Set(name);
    }
    if let Some(labels) = changes.labels {
        model.labels = Set(account::StringMap(labels));
    }
    if let Some(state) = changes.state {
        model.state = Set(state);
    }
    model.update_time = Set(now);
    let updated = model.update(conn).await?;
    if state_given {
        // Ledger batches keep the account's state with each of its wallets in the wallet
        // cache, checked by the wallet's version: move every version on. The wallets are
        // locked first in id order, the order ledger batches lock them in (no deadlock).
        if is_postgres(conn) {
            wallet::Entity::find()
                .select_only()
                .column(wallet::Column::Id)
                .filter(wallet::Column::AccountId.eq(updated.id.as_str()))
                .order_by_asc(wallet::Column::Id)
                .lock_exclusive()
                .into_tuple::<String>()
                .all(conn)
                .await?;
        }
        // A change of state is an event of each of the account's wallets, numbered on
        // under the same locks.
        let changed = updated.state != previous_state;
        let mut bump = wallet::Entity::update_many().col_expr(
            wallet::Column::Version,
            Expr::col(wallet::Column::Version).add(1),
        );
        if changed {
            bump = bump.col_expr(
                wallet::Column::EventSeq,
                Expr::col(wallet::Column::EventSeq).add(1),
            );
        }
        bump.filter(wallet::Column::AccountId.eq(updated.id.as_str()))
            .exec(conn)
            .await?;
        if changed {
            let wallets = wallet::Entity::find()
                .filter(wallet::Column::AccountId.eq(updated.id.as_str()))
                .all(conn)
                .await?;
            let state = |s: AccountState| sea_orm::ActiveEnum::to_value(&s);
            let data = [
                ("previous_state", state(previous_state)),
                ("state", state(updated.state)),
            ];
            let rows: Vec<event::ActiveModel> = wallets
                .iter()
                .map(|w| events::of_wallet(w, EventType::AccountStateChanged, now, &data).into())
                .collect();
            if !rows.is_empty() {
                event::Entity::insert_many(rows)
                    .exec_without_returning(conn)
                    .await?;
            }
        }
    }
    Ok(updated)
}

pub async fn create_wallet(
    conn: &impl ConnectionTrait,
    account: &account::Model,
    unit: &str,
    overdraft_limit: Amount,
    grant_expiry_notice_days: i32,
    now: i64,
) -> Result<wallet::Model> {
    let exists = || {
        Error::new(
            tonic::Code::AlreadyExists,
            Reason::WalletExists,
            format!("account `{}` already has a `{unit}` wallet", account.id),
        )
        .with("account_id", &account.id)
        .with("unit", unit)
    };
    let account = lock_account(conn, &account.id, false)
        .await?
        .ok_or_else(|| Error::not_found("account", &account.id))?;
    require_state(&account.id, account.state, Action::CreateWallet)?;
    if find_wallet(conn, &account.id, unit).await?.is_some() {
        return Err(exists());
    }
    let model = wallet::ActiveModel {
        id: Set(new_id("wal")),
        account_id: Set(account.id.clone()),
        unit: Set(unit.to_string()),
        overdraft_limit: Set(overdraft_limit.micros()),
        debt: Set(0),
        reserved: Set(0),
        create_time: Set(now),
        update_time: Set(now),
        posted: Set(0),
        daily_spend_cap: Set(None),
        monthly_spend_cap: Set(None),
        spent_day: Set(0),
        spent_day_units: Set(0),
        spent_month: Set(0),
        spent_month_units: Set(0),
        low_balance_thresholds: Set(Default::default()),
        next_due_time: Set(None),
        last_hash: Set(String::new()),
        last_entry_time: Set(0),
        version: Set(0),
        event_seq: Set(0),
        grant_expiry_notice_days: Set(grant_expiry_notice_days),
    };
    match model.insert(conn).await {
        Ok(model) => Ok(model),
        Err(err) if is_unique_violation(&err) => Err(exists()),
        Err(err) => Err(err.into()),
    }
}

pub async fn find_wallet(
    conn: &impl ConnectionTrait,
    account_id: &str,
    unit: &str,
) -> Result<Option<wallet::Model>> {
    Ok(wallet::Entity::find()
        .filter(wallet::Column::AccountId.eq(account_id))
        .filter(wallet::Column::Unit.eq(unit))
        .one(conn)
        .await?)
}

pub async fn find_wallet_by_id(
    conn: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<wallet::Model>> {
    Ok(wallet::Entity::find_by_id(id.to_string()).one(conn).await?)
}

/// The first `limit` wallets of an account, by id.
pub async fn wallets_of(
    conn: &impl ConnectionTrait,
    account_id: &str,
    limit: u64,
) -> Result<Vec<wallet::Model>> {
    Ok(wallet::Entity::find()
        .filter(wallet::Column::AccountId.eq(account_id))
        .order_by_asc(wallet::Column::Id)
        .limit(limit)
        .all(conn)
        .await?)
}

pub async fn list_wallets(
    conn: &impl ConnectionTrait,
    account_id: &str,
    page: &Page,
) -> Result<(Vec<wallet::Model>, String)> {
    let query = wallet::Entity::find().filter(wallet::Column::AccountId.eq(account_id));
    pagination::by_id(conn, query, wallet::Column::Id, "wallets", page, |w| {
        w.id.clone()
    })
    .await
}

/// The wallets in `unit` of `root` and, with `below`, of every account under it: the root's
/// first, then by account id (one indexed query).
pub async fn wallets_in_unit(
    conn: &impl ConnectionTrait,
    root: &account::Model,
    unit: &str,
    below: bool,
) -> Result<Vec<wallet::Model>> {
    let mut query = wallet::Entity::find().filter(wallet::Column::Unit.eq(unit));
    query = if below {
        let pattern = format!("%/{}/%", escape_like(&root.id));
        query.filter(
            wallet::Column::AccountId.in_subquery(
                sea_orm::sea_query::Query::select()
                    .column(account::Column::Id)
                    .from(account::Entity)
                    .and_where(
                        Expr::col(account::Column::Ancestry)
                            .like(LikeExpr::new(pattern).escape('\\')),
                    )
                    .to_owned(),
            ),
        )
    } else {
        query.filter(wallet::Column::AccountId.eq(root.id.as_str()))
    };
    let mut wallets = query
        .order_by_asc(wallet::Column::AccountId)
        .all(conn)
        .await?;
    // The root's own wallet first.
    wallets.sort_by_key(|w| w.account_id != root.id);
    Ok(wallets)
}

/// The ids from the root down to `account_id` (empty if there is no such account).
pub async fn ancestry_ids(conn: &impl ConnectionTrait, account_id: &str) -> Result<Vec<String>> {
    let ancestry: Option<String> = account::Entity::find_by_id(account_id.to_string())
        .select_only()
        .column(account::Column::Ancestry)
        .into_tuple()
        .one(conn)
        .await?;
    Ok(ancestry
        .unwrap_or_default()
        .split('/')
        .filter(|part| !part.is_empty())
        .map(str::to_string)
        .collect())
}

/// The ids of `root` and every account under it.
pub async fn subtree_ids(
    conn: &impl ConnectionTrait,
    root: &account::Model,
) -> Result<Vec<String>> {
    let pattern = format!("%/{}/%", escape_like(&root.id));
    Ok(account::Entity::find()
        .select_only()
        .column(account::Column::Id)
        .filter(Expr::col(account::Column::Ancestry).like(LikeExpr::new(pattern).escape('\\')))
        .into_tuple()
        .all(conn)
        .await?)
}
