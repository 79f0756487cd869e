//! `allot verify`: a read-only pass over the whole ledger that recomputes what the stored
//! balances claim (issue 3, "Tamper evidence").
//!
//! For every wallet (in id order), over its entries in time order (`store::entries`):
//! * each entry's `prev_hash` is the stored `hash` of the entry before it (`''` for the first):
//!   a removed, inserted or reordered entry breaks the chain;
//! * each entry's `hash` is [`chain::entry_hash`] of its content: an edited entry no longer
//!   matches;
//! * each entry's `delta` agrees with its kind and `units`, and its `balance_after` is the
//!   running Σ delta;
//! * their time order is the order they were written in, `seq` (every read of a wallet's
//!   ledger relies on it);
//!
//! and then for the wallet: Σ delta = `posted`, `last_hash` = the hash of its latest entry,
//! Σ units of its OPEN reservations = `reserved`, and Σ remaining of its ACTIVE grants − `debt`
//! = `posted`; its daily usage rollup (`usage_days`) is what its entries add up to
//! (`store::usage`); its events (`store::events`) are numbered without a gap from the oldest
//! kept to `event_seq`. Entries of wallets that do not exist are reported too.
//!
//! The hashes are not keyed: someone able to rewrite the database can rewrite a whole chain
//! consistently. What this catches is a hand edit of an entry or a balance, a lost or extra
//! entry, and bugs that let stored balances drift from the ledger.
//!
//! [`verify`] reads through whatever connection it is given; [`verify_snapshot`] runs it in
//! one read transaction so a live server writing meanwhile cannot cause false alarms.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use migration::{Migrator, MigratorTrait};
use rust_decimal::Decimal;
use sea_orm::{
    ActiveEnum, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement,
    sea_query::{Alias, Expr, ExprTrait, Order, Query},
};

use super::{
    chain,
    columns::{Burns, Rates, StringMap, Thresholds},
    entity::{event, grant, reservation, transaction, usage_day, wallet},
    entries::{self, Position},
    usage,
};
use crate::domain::{
    AccountState, CardState, GrantKind, HoldState, LotStatus, MovementKind, Period, RolloverPolicy,
};

/// Wallets read per query.
const WALLET_PAGE: u64 = 500;
/// Entries of one wallet read per query.
const ENTRY_PAGE: u64 = 2_000;

/// One thing the stored data claims that its ledger does not support.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Empty for rows that belong to no wallet (accounts, rate cards).
    pub wallet_id: String,
    /// The entry at fault, when the problem is one entry's.
    pub entry_id: Option<String>,
    /// What is wrong, naming the entry if there is one.
    pub problem: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wallet_id.is_empty() {
            return f.write_str(&self.problem);
        }
        write!(f, "wallet {}: {}", self.wallet_id, self.problem)
    }
}

/// What a verification pass looked at and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub wallets: u64,
    pub entries: u64,
    pub mismatches: Vec<Mismatch>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.mismatches.is_empty()
    }

    /// Mismatches that concern `entry_id`.
    pub fn for_entry<'a>(&'a self, entry_id: &'a str) -> impl Iterator<Item = &'a Mismatch> {
        self.mismatches
            .iter()
            .filter(move |m| m.entry_id.as_deref() == Some(entry_id))
    }

    /// Mismatches that concern `wallet_id` (its entries included).
    pub fn for_wallet<'a>(&'a self, wallet_id: &'a str) -> impl Iterator<Item = &'a Mismatch> {
        self.mismatches
            .iter()
            .filter(move |m| m.wallet_id == wallet_id)
    }
}

/// Verifies every wallet's chain and balances through `conn` (read only). For a consistent
/// view of a database that is being written, use [`verify_snapshot`].
pub async fn verify(conn: &impl ConnectionTrait) -> Result<Report, DbErr> {
    let mut report = Report::default();
    // Rows with a stored value that is none of its column's values cannot be read: they are
    // reported, and their wallets are not checked further.
    let mut unreadable = unreadable_values(conn, &mut report).await?;
    unreadable.extend(unreadable_text(conn, &mut report).await?);
    let mut after: Option<String> = None;
    loop {
        // Ids first: an unreadable wallet row cannot be read whole.
        let mut query = wallet::Entity::find()
            .select_only()
            .column(wallet::Column::Id)
            .order_by_asc(wallet::Column::Id)
            .limit(WALLET_PAGE);
        if let Some(after) = &after {
            query = query.filter(wallet::Column::Id.gt(after.as_str()));
        }
        let page: Vec<String> = query.into_tuple().all(conn).await?;
        for id in &page {
            report.wallets += 1;
            if unreadable.contains(id) {
                continue;
            }
            // Gone since the page was read (verify runs beside a live service).
            if let Some(model) = wallet::Entity::find_by_id(id.as_str()).one(conn).await? {
                verify_wallet(conn, &model, &mut report).await?;
            }
        }
        match page.last() {
            Some(last) if page.len() as u64 == WALLET_PAGE => after = Some(last.clone()),
            _ => break,
        }
    }
    orphan_entries(conn, &mut report).await?;
    Ok(report)
}

/// [`verify`] inside one read transaction: on PostgreSQL `REPEATABLE READ, READ ONLY` (one
/// snapshot of the whole database); on SQLite a deferred transaction, which in WAL mode reads
/// one snapshot from its first query on.
pub async fn verify_snapshot(conn: &DatabaseConnection) -> Result<Report, DbErr> {
    let tx = super::snapshot(conn).await?;
    let report = verify(&tx).await;
    tx.rollback().await?;
    report
}

/// Why `verify` cannot run on this database, if it cannot: no allot schema, or migrations
/// this binary knows that are not applied. Reads only (unlike the migrator, which would
/// create its bookkeeping table).
pub async fn schema_problem(conn: &impl ConnectionTrait) -> Result<Option<String>, DbErr> {
    let backend = conn.get_database_backend();
    let exists = match backend {
        DbBackend::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'seaql_migrations'"
        }
        _ => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = 'seaql_migrations'"
        }
    };
    let found: i64 = match conn
        .query_one_raw(Statement::from_string(backend, exists))
        .await?
    {
        Some(row) => row.try_get_by_index(0)?,
        None => 0,
    };
    if found == 0 {
        return Ok(Some(
            "the database has no allot schema (run `allot migrate`, or check DATABASE_URL)".into(),
        ));
    }
    let rows = conn
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT version FROM seaql_migrations",
        ))
        .await?;
    let mut applied = Vec::with_capacity(rows.len());
    for row in rows {
        applied.push(row.try_get_by_index::<String>(0)?);
    }
    let pending: Vec<String> = Migrator::migrations()
        .iter()
        .map(|m| m.name().to_string())
        .filter(|name| !applied.contains(name))
        .collect();
    if !pending.is_empty() {
        return Ok(Some(format!(
            "the database schema is not up to date ({} not applied: {}); run `allot migrate`",
            if pending.len() == 1 {
                "1 migration"
            } else {
                "migrations"
            },
            pending.join(", ")
        )));
    }
    Ok(None)
}

/// Checks one wallet and its entries, holds and grants.
async fn verify_wallet(
    conn: &impl ConnectionTrait,
    model: &wallet::Model,
    report: &mut Report,
) -> Result<(), DbErr> {
    let wallet_id = &model.id;
    let mut found = Vec::new();
    let mut mismatch = |entry_id: Option<&str>, problem: String| {
        found.push(Mismatch {
            wallet_id: wallet_id.clone(),
            entry_id: entry_id.map(str::to_string),
            problem,
        });
    };

    // The chain, in seq order, a page at a time.
    let mut running: i128 = 0;
    let mut previous: Option<(String, String)> = None; // (id, hash)
    // balance_after − running Σ of the previous entry. A lost or extra entry shifts every later
    // balance_after by the same amount: reported at the first, then counted (entry, count).
    let mut offset: i128 = 0;
    let mut same_offset: Option<(String, u64)> = None;
    let repeated = |(id, count): (String, u64), offset: i128| {
        format!(
            "the {count} entries after entry {id} have their balance_after off by the same {}",
            units(offset)
        )
    };
    let mut after: Option<Position> = None;
    let mut last_seq = i64::MIN;
    let mut rollup = BTreeMap::new();
    loop {
        let mut query = entries::in_ledger_order(
            transaction::Entity::find()
                .filter(transaction::Column::WalletId.eq(wallet_id.as_str())),
            Order::Asc,
        )
        .limit(ENTRY_PAGE);
        if let Some(position) = after {
            query = query.filter(position.after());
        }
        let entries = query.all(conn).await?;
        for row in usage::increments(&with_refunded_versions(conn, &entries).await?) {
            usage::add(&mut rollup, row);
        }
        for entry in &entries {
            report.entries += 1;
            let id = entry.id.as_str();
            match &previous {
                None if !entry.prev_hash.is_empty() => mismatch(
                    Some(id),
                    format!(
                        "entry {id} is the wallet's first but has prev_hash {} (expected empty): \
                         the chain is broken, an earlier entry was removed?",
                        short(&entry.prev_hash)
                    ),
                ),
                Some((prev_id, prev_hash)) if entry.prev_hash != *prev_hash => mismatch(
                    Some(id),
                    format!(
                        "entry {id} prev_hash {} does not match the hash {} of the entry before \
                         it ({prev_id}): the chain is broken (an entry removed, inserted or \
                         reordered)",
                        short(&entry.prev_hash),
                        short(prev_hash)
                    ),
                ),
                _ => {}
            }
            if entry.hash.is_empty() {
                mismatch(
                    Some(id),
                    format!("entry {id} has no hash (written before the hash chain, or cleared)"),
                );
            } else if entry.hash != chain::entry_hash(entry) {
                mismatch(
                    Some(id),
                    format!(
                        "entry {id} hash does not match its content (edited after it was written)"
                    ),
                );
            }
            if let Some(problem) = delta_problem(entry) {
                mismatch(Some(id), problem);
            }
            // Entries are read in time order; statements and every read of a wallet's ledger
            // rely on that being the order they were written in (seq).
            if entry.seq < last_seq
                && let Some((prev_id, _)) = &previous
            {
                mismatch(
                    Some(prev_id),
                    format!("entry {prev_id} is dated before the entry written before it ({id})"),
                );
            }
            last_seq = Ord::max(last_seq, entry.seq);
            running += i128::from(entry.delta);
            let off = i128::from(entry.balance_after) - running;
            if off == offset {
                if let Some((_, count)) = &mut same_offset {
                    *count += 1;
                }
            } else {
                if let Some(run) = same_offset.take().filter(|(_, count)| *count > 0) {
                    mismatch(None, repeated(run, offset));
                }
                if off != 0 {
                    same_offset = Some((entry.id.clone(), 0));
                    mismatch(
                        Some(id),
                        format!(
                            "entry {id} balance_after {} but the entries up to it sum to {}",
                            units(entry.balance_after.into()),
                            units(running)
                        ),
                    );
                }
            }
            offset = off;
            previous = Some((entry.id.clone(), entry.hash.clone()));
        }
        match entries.last() {
            Some(last) if entries.len() as u64 == ENTRY_PAGE => after = Some(Position::of(last)),
            _ => break,
        }
    }
    if let Some(run) = same_offset.take().filter(|(_, count)| *count > 0) {
        mismatch(None, repeated(run, offset));
    }

    // The wallet row against its entries.
    if i128::from(model.posted) != running {
        mismatch(
            None,
            format!(
                "wallet posted {} but its entries sum to {}",
                units(model.posted.into()),
                units(running)
            ),
        );
    }
    match &previous {
        Some((last_id, last_hash)) if model.last_hash != *last_hash => mismatch(
            None,
            format!(
                "wallet last_hash {} is not the hash {} of its latest entry {last_id}",
                short(&model.last_hash),
                short(last_hash)
            ),
        ),
        None if !model.last_hash.is_empty() => mismatch(
            None,
            format!(
                "wallet last_hash is {} but the wallet has no entries",
                short(&model.last_hash)
            ),
        ),
        _ => {}
    }

    // The usage rollup against the entries.
    let stored: Vec<usage_day::Model> = usage_day::Entity::find()
        .filter(usage_day::Column::WalletId.eq(wallet_id.as_str()))
        .all(conn)
        .await?;
    for row in stored {
        let key = usage::key(&row);
        let expected = rollup.remove(&key);
        let counters =
            |r: Option<&usage_day::Model>| r.map_or((0, 0, 0), |r| (r.requests, r.units, r.costed));
        if counters(Some(&row)) != counters(expected.as_ref()) {
            mismatch(
                None,
                rollup_problem(&key, counters(Some(&row)), counters(expected.as_ref())),
            );
        }
    }
    for (key, row) in rollup {
        if (row.requests, row.units, row.costed) != (0, 0, 0) {
            mismatch(
                None,
                rollup_problem(&key, (0, 0, 0), (row.requests, row.units, row.costed)),
            );
        }
    }

    // Open holds against `reserved`.
    let holds: Vec<i64> = reservation::Entity::find()
        .select_only()
        .column(reservation::Column::Units)
        .filter(reservation::Column::WalletId.eq(wallet_id.as_str()))
        .filter(reservation::Column::State.eq(HoldState::Open))
        .into_tuple()
        .all(conn)
        .await?;
    let held: i128 = holds.iter().map(|&u| i128::from(u)).sum();
    if i128::from(model.reserved) != held {
        mismatch(
            None,
            format!(
                "wallet reserved {} but its open holds ({}) sum to {}",
                units(model.reserved.into()),
                holds.len(),
                units(held)
            ),
        );
    }

    // Active grants less debt against `posted`.
    let remaining: Vec<i64> = grant::Entity::find()
        .select_only()
        .column(grant::Column::Remaining)
        .filter(grant::Column::WalletId.eq(wallet_id.as_str()))
        .filter(grant::Column::Status.eq(LotStatus::Active))
        .into_tuple()
        .all(conn)
        .await?;
    let active: i128 = remaining.iter().map(|&u| i128::from(u)).sum();
    if active - i128::from(model.debt) != i128::from(model.posted) {
        mismatch(
            None,
            format!(
                "wallet posted {} but its active grants hold {} and its debt is {} (grants − \
                 debt = {})",
                units(model.posted.into()),
                units(active),
                units(model.debt.into()),
                units(active - i128::from(model.debt))
            ),
        );
    }

    // Its events: numbered on without a gap from the oldest kept (older ones are pruned) to
    // the last number the wallet handed out.
    let mut expected: Option<i64> = None;
    loop {
        let mut query = event::Entity::find()
            .select_only()
            .column(event::Column::Sequence)
            .filter(event::Column::WalletId.eq(wallet_id.as_str()))
            .order_by_asc(event::Column::Sequence)
            .limit(ENTRY_PAGE);
        if let Some(next) = expected {
            query = query.filter(event::Column::Sequence.gte(next));
        }
        let numbers: Vec<i64> = query.into_tuple().all(conn).await?;
        for &number in &numbers {
            if let Some(next) = expected
                && number != next
            {
                mismatch(
                    None,
                    format!("its events skip from {} to {number}", next - 1),
                );
            }
            expected = Some(number + 1);
        }
        if (numbers.len() as u64) < ENTRY_PAGE {
            break;
        }
    }
    if let Some(next) = expected
        && next - 1 != model.event_seq
    {
        mismatch(
            None,
            format!(
                "its latest event is number {} but the wallet says {}",
                next - 1,
                model.event_seq
            ),
        );
    }

    report.mismatches.append(&mut found);
    Ok(())
}

/// Entries with each refund's rate card version filled in from the entry it refunds (refunds
/// made before the rollup recorded none; the rollup counts them under that version).
async fn with_refunded_versions(
    conn: &impl ConnectionTrait,
    entries: &[transaction::Model],
) -> Result<Vec<transaction::Model>, DbErr> {
    let refunded: Vec<String> = entries
        .iter()
        .filter(|e| e.kind == MovementKind::Refund && e.rate_card_version.is_none())
        .filter_map(|e| e.ref_id.clone())
        .collect();
    let versions: BTreeMap<String, Option<i64>> = if refunded.is_empty() {
        BTreeMap::new()
    } else {
        transaction::Entity::find()
            .select_only()
            .column(transaction::Column::Id)
            .column(transaction::Column::RateCardVersion)
            .filter(transaction::Column::Id.is_in(refunded))
            .into_tuple::<(String, Option<i64>)>()
            .all(conn)
            .await?
            .into_iter()
            .collect()
    };
    Ok(entries
        .iter()
        .map(|entry| {
            let mut entry = entry.clone();
            if entry.kind == MovementKind::Refund && entry.rate_card_version.is_none() {
                entry.rate_card_version = entry
                    .ref_id
                    .as_ref()
                    .and_then(|id| versions.get(id).copied().flatten());
            }
            entry
        })
        .collect())
}

fn rollup_problem(key: &usage::Key, stored: (i64, i64, i64), entries: (i64, i64, i64)) -> String {
    let (_, day, request_type, version, currency, price) = key;
    let at = if price.is_empty() {
        String::new()
    } else {
        format!(" at {price} {currency}")
    };
    format!(
        "usage rollup for day {day}, request type `{request_type}`, card {version}{at}: stored \
         {} requests, {} units, {} costed; the entries add up to {} requests, {} units, {} costed",
        stored.0,
        units_i64(stored.1),
        stored.2,
        entries.0,
        units_i64(entries.1),
        entries.2
    )
}

/// Whether an entry's signed `delta` fits its kind and `units`.
fn delta_problem(entry: &transaction::Model) -> Option<String> {
    let (id, units, delta) = (&entry.id, entry.units, entry.delta);
    if units < 0 {
        return Some(format!(
            "entry {id} has negative units {}",
            units_i64(units)
        ));
    }
    use MovementKind::*;
    let fits = match entry.kind {
        // Adds units: a grant activating, a refund.
        Grant | Refund => delta == units,
        // Takes units.
        Debit | Capture | Expire => delta == -units,
        // Holds do not change `posted`.
        Reserve | Release => delta == 0,
        // Voiding a pending grant changes nothing posted.
        Void => delta == -units || delta == 0,
        Adjust => delta == units || delta == -units,
    };
    (!fits).then(|| {
        format!(
            "entry {id} is a {} of {} units but its delta is {}",
            entry.kind.as_str(),
            units_i64(units),
            units_i64(delta)
        )
    })
}

/// One enum column: its table, the row's id and wallet columns (`None`: the row belongs to no
/// wallet), and the values it may hold.
struct EnumColumn {
    table: &'static str,
    wallet: Option<&'static str>,
    column: &'static str,
    values: Vec<String>,
}

fn enum_column<E: ActiveEnum<Value = String>>(
    table: &'static str,
    wallet: Option<&'static str>,
    column: &'static str,
) -> EnumColumn {
    EnumColumn {
        table,
        wallet,
        column,
        values: E::iter().map(|v| v.to_value()).collect(),
    }
}

/// Rows whose stored state or kind is none of its type's values (a hand edit, or a bug):
/// reading such a row is an error, never a default, so `verify` names each one. Returns the
/// wallets concerned.
async fn unreadable_values(
    conn: &impl ConnectionTrait,
    report: &mut Report,
) -> Result<BTreeSet<String>, DbErr> {
    let columns = [
        enum_column::<MovementKind>("transactions", Some("wallet_id"), "kind"),
        enum_column::<LotStatus>("grants", Some("wallet_id"), "status"),
        enum_column::<GrantKind>("grants", Some("wallet_id"), "kind"),
        enum_column::<HoldState>("reservations", Some("wallet_id"), "state"),
        enum_column::<Period>("schedules", Some("wallet_id"), "period"),
        enum_column::<RolloverPolicy>("schedules", Some("wallet_id"), "rollover_policy"),
        enum_column::<GrantKind>("schedules", Some("wallet_id"), "kind"),
        enum_column::<AccountState>("accounts", None, "state"),
        enum_column::<CardState>("rate_cards", None, "state"),
    ];
    let mut wallets = BTreeSet::new();
    for EnumColumn {
        table,
        wallet,
        column,
        values,
    } in columns
    {
        let id = if table == "rate_cards" {
            "version"
        } else {
            "id"
        };
        let query = stored_values(table, id, wallet, column)
            .and_where(Expr::col(Alias::new(column)).is_not_in(values.clone()))
            .to_owned();
        for row in conn.query_all(&query).await? {
            let id: String = row.try_get_by_index(0)?;
            let wallet_id: String = row.try_get_by_index(1)?;
            let stored: String = row.try_get_by_index(2)?;
            let problem = format!(
                "{} {id} has {column} `{stored}`, which is none of {}",
                row_name(table),
                values.join(", ")
            );
            unreadable_row(report, &mut wallets, table, id, wallet_id, problem);
        }
    }
    Ok(wallets)
}

/// `SELECT CAST(<id> AS text), <wallet> (or ''), CAST(<column> AS text) FROM <table>` in id
/// order: each row's id, wallet (empty for rows that belong to no wallet) and stored value as
/// text.
fn stored_values(
    table: &str,
    id: &str,
    wallet: Option<&str>,
    column: &str,
) -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .expr(Expr::col(Alias::new(id)).cast_as(Alias::new("text")))
        .expr(match wallet {
            Some(wallet) => Expr::col(Alias::new(wallet)),
            None => Expr::val(""),
        })
        .expr(Expr::col(Alias::new(column)).cast_as(Alias::new("text")))
        .from(Alias::new(table))
        .order_by((Alias::new(table.to_string()), Alias::new(id)), Order::Asc)
        .to_owned()
}

/// Reports a row that cannot be read; its wallet (if it has one) is not checked further.
fn unreadable_row(
    report: &mut Report,
    wallets: &mut BTreeSet<String>,
    table: &str,
    id: String,
    wallet_id: String,
    problem: String,
) {
    report.mismatches.push(Mismatch {
        wallet_id: wallet_id.clone(),
        entry_id: (table == "transactions").then_some(id),
        problem,
    });
    if !wallet_id.is_empty() {
        wallets.insert(wallet_id);
    }
}

/// What a row of `table` is called in a report: "entry", "grant", "rate card"…
fn row_name(table: &str) -> String {
    match table {
        "transactions" => "entry".to_string(),
        table => table.trim_end_matches('s').replace('_', " "),
    }
}

/// Whether a stored text column parses as what it holds (`Err`: why not).
type Parses = fn(&str) -> Result<(), String>;

fn parses_as<T: serde::de::DeserializeOwned>(text: &str) -> Result<(), String> {
    serde_json::from_str::<T>(text)
        .map(|_| ())
        .map_err(|err| err.to_string())
}

fn parses_as_decimal(text: &str) -> Result<(), String> {
    text.parse::<Decimal>()
        .map(|_| ())
        .map_err(|err| err.to_string())
}

/// A provider cost: a decimal, or empty when the rate named none.
fn parses_as_cost(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Ok(());
    }
    parses_as_decimal(text)
}

/// Stored JSON and decimal values that are not what their column holds (a hand edit, or a
/// bug): reading such a row is an error, never a default (`store::columns`), so `verify`
/// names each one. On PostgreSQL JSON columns are `jsonb`, so only the shape can be wrong; on
/// SQLite the text may not be JSON at all. Returns the wallets concerned.
async fn unreadable_text(
    conn: &impl ConnectionTrait,
    report: &mut Report,
) -> Result<BTreeSet<String>, DbErr> {
    let wallet = Some("wallet_id");
    let columns: [(&str, &str, Option<&str>, &str, Parses); 10] = [
        ("transactions", "id", wallet, "burns", parses_as::<Burns>),
        (
            "transactions",
            "id",
            wallet,
            "quantities",
            parses_as::<StringMap>,
        ),
        (
            "transactions",
            "id",
            wallet,
            "metadata",
            parses_as::<StringMap>,
        ),
        ("grants", "id", wallet, "unit_price", parses_as_decimal),
        ("schedules", "id", wallet, "unit_price", parses_as_decimal),
        (
            "reservations",
            "id",
            wallet,
            "quantities",
            parses_as::<StringMap>,
        ),
        (
            "wallets",
            "id",
            Some("id"),
            "low_balance_thresholds",
            parses_as::<Thresholds>,
        ),
        ("accounts", "id", None, "labels", parses_as::<StringMap>),
        ("rate_cards", "version", None, "rates", parses_as::<Rates>),
        // Not JSON, but hashed with the entry and summed by reports.
        (
            "transactions",
            "id",
            wallet,
            "provider_cost",
            parses_as_cost,
        ),
    ];
    let mut wallets = BTreeSet::new();
    for (table, id, wallet, column, parses) in columns {
        for row in conn
            .query_all(&stored_values(table, id, wallet, column))
            .await?
        {
            let text: String = row.try_get_by_index(2)?;
            if let Err(err) = parses(&text) {
                let id: String = row.try_get_by_index(0)?;
                let problem = format!("{} {id} has unreadable {column}: {err}", row_name(table));
                let wallet_id = row.try_get_by_index(1)?;
                unreadable_row(report, &mut wallets, table, id, wallet_id, problem);
            }
        }
    }
    Ok(wallets)
}

/// Ledger entries whose wallet does not exist (its row deleted?).
async fn orphan_entries(conn: &impl ConnectionTrait, report: &mut Report) -> Result<(), DbErr> {
    let backend = conn.get_database_backend();
    let rows = conn
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT wallet_id, COUNT(*) FROM transactions \
             WHERE wallet_id NOT IN (SELECT id FROM wallets) \
             GROUP BY wallet_id ORDER BY wallet_id",
        ))
        .await?;
    for row in rows {
        let wallet_id: String = row.try_get_by_index(0)?;
        let count: i64 = row.try_get_by_index(1)?;
        report.mismatches.push(Mismatch {
            wallet_id,
            entry_id: None,
            problem: format!(
                "{count} ledger entr{} belong to this wallet, which does not exist",
                if count == 1 { "y" } else { "ies" }
            ),
        });
    }
    Ok(())
}

/// Micro-units as a decimal number of units.
fn units(micros: i128) -> String {
    match Decimal::try_from_i128_with_scale(micros, crate::domain::amount::SCALE) {
        Ok(value) => crate::domain::amount::format_decimal(value),
        Err(_) => format!("{micros} micro-units"),
    }
}

fn units_i64(micros: i64) -> String {
    units(micros.into())
}

/// A hash shortened for messages (the first 12 hex digits), or `''`.
fn short(hash: &str) -> String {
    if hash.is_empty() {
        "''".to_string()
    } else {
        hash.chars().take(12).collect()
    }
}
