//! What a batch writes, and the writers that store it: one per database behind one
//! interface ([`Writer`]). [`effects`] works out the rows from the evaluated batch (pure);
//! a writer stores them — grants, wallets, ledger entries, holds, schedules and the
//! idempotency records — and the batch commits only if every record was new.

use sea_orm::{
    ActiveModelTrait, DatabaseTransaction, EntityName, EntityTrait, IdenStatic, Iterable,
    PrimaryKeyToColumn, Set,
    sea_query::{Expr, OnConflict},
};

use super::{
    eval::{Batch, Loaded, grant_row, next_period, updated_wallet},
    load::is_live,
};
use crate::{
    domain::HoldState,
    error::Result,
    store::{
        bulk,
        entity::{
            audit_event, event, grant, idempotency_key, reservation, schedule, transaction,
            usage_day, wallet,
        },
        idempotency,
        shape::{ROWS_PER_STATEMENT, padded_chunks},
        usage,
        wallet_cache::Rows,
    },
};

/// The rows a batch writes.
#[derive(Debug, Default)]
pub(super) struct Effects {
    /// New and changed grants (one multi-row upsert).
    grants: Vec<grant::Model>,
    /// Changed wallets, their version moved on (one multi-row upsert).
    wallets: Vec<wallet::Model>,
    /// New ledger entries, in order (`seq` is assigned by the database).
    entries: Vec<transaction::Model>,
    new_schedules: Vec<schedule::Model>,
    /// Stored schedules whose next period moved: (row, new next_period).
    schedule_periods: Vec<(schedule::Model, i64)>,
    new_holds: Vec<reservation::Model>,
    /// Stored holds resolved in the batch: (as stored, as after the batch).
    resolved_holds: Vec<(reservation::Model, reservation::Model)>,
    records: Vec<idempotency_key::Model>,
    /// What the batch's entries add to the daily usage rollup (one row per key).
    usage: Vec<usage_day::Model>,
    /// Audit events of its voids and adjustments.
    audits: Vec<audit_event::Model>,
    /// The wallets' new events (the outbox).
    pub events: Vec<event::Model>,
    /// For the wallet cache: each wallet's version after the batch and the rows
    /// `load::load_wallets` would then read.
    pub cache: Vec<(String, i64, Rows)>,
}

/// Works out what the evaluated `batch` writes, with its new idempotency `records`.
pub(super) fn effects(batch: &Batch, records: Vec<idempotency_key::Model>) -> Effects {
    let mut effects = Effects {
        records,
        ..Effects::default()
    };
    for wallet in batch.wallets.values() {
        wallet_effects(wallet, batch.now, &mut effects);
    }
    effects.usage = usage::increments(&effects.entries);
    effects
}

fn wallet_effects(wallet: &Loaded, now: i64, effects: &mut Effects) {
    let mut rows = Rows::new(wallet.account_state);
    let mut dirty = !wallet.entries.is_empty();
    for lot in &wallet.state.lots {
        let Some(row) = grant_row(wallet, lot, now) else {
            continue;
        };
        if wallet.grants.get(&lot.grant_id) != Some(&row) {
            dirty = true;
            effects.grants.push(row.clone());
        }
        if is_live(&row) {
            rows.grants.push(row);
        }
    }
    for schedule in &wallet.new_schedules {
        let model = schedule::Model {
            next_period: next_period(wallet, &schedule.id, schedule.next_period),
            ..schedule.clone()
        };
        effects.new_schedules.push(model.clone());
        rows.schedules.push(model);
        dirty = true;
    }
    for (id, stored) in &wallet.schedules {
        let next = next_period(wallet, id, stored.next_period);
        if next != stored.next_period {
            effects.schedule_periods.push((stored.clone(), next));
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
            model.state = *state;
            model.captured_units = *captured;
            model.resolve_time = Some(*at);
        }
        if model.state == HoldState::Open {
            rows.holds.push(model.clone());
        }
        effects.new_holds.push(model);
        dirty = true;
    }
    for (id, stored) in &wallet.holds {
        match wallet.resolved.get(id) {
            Some((state, captured, at)) => {
                let after = reservation::Model {
                    state: *state,
                    captured_units: *captured,
                    resolve_time: Some(*at),
                    ..stored.clone()
                };
                effects.resolved_holds.push((stored.clone(), after));
                dirty = true;
            }
            None if stored.state == HoldState::Open => rows.holds.push(stored.clone()),
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
        effects.wallets.push(updated.clone());
    }
    effects
        .cache
        .push((wallet.model.id.clone(), updated.version, rows));
    effects.entries.extend(wallet.entries.iter().cloned());
    effects.audits.extend(wallet.audits.iter().cloned());
    effects.events.extend(wallet.events.iter().cloned());
}

/// Stores a batch's effects in its transaction. `Ok(false)`: another writer (a replica)
/// committed one of the idempotency keys first — the caller rolls back and retries.
pub(super) trait Writer {
    async fn write(conn: &DatabaseTransaction, effects: &Effects) -> Result<bool>;
}

/// SQLite: one padded multi-row statement per table (stable statement shapes).
pub(super) struct Sqlite;

/// PostgreSQL: one statement for the whole batch — data-modifying CTEs over `unnest` arrays
/// (`store/bulk.rs`); PostgreSQL refuses an upsert that meets a row twice, so no padding.
pub(super) struct Postgres;

impl Writer for Sqlite {
    async fn write(conn: &DatabaseTransaction, effects: &Effects) -> Result<bool> {
        write_holds_and_schedules(conn, effects).await?;
        upsert::<grant::Entity>(conn, &effects.grants, &GRANT_UPDATES).await?;
        upsert::<wallet::Entity>(conn, &effects.wallets, &WALLET_UPDATES).await?;
        for chunk in padded_chunks(effects.entries.iter().collect(), ROWS_PER_STATEMENT) {
            let rows = chunk.into_iter().map(|model| {
                let mut active: transaction::ActiveModel = model.clone().into();
                active.seq = sea_orm::ActiveValue::NotSet;
                active
            });
            // Entry ids are new: only the padding's repeated row can conflict (skipped).
            transaction::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::column(transaction::Column::Id)
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(conn)
                .await?;
        }
        add_usage(conn, &effects.usage).await?;
        for chunk in padded_chunks(effects.events.iter().collect(), ROWS_PER_STATEMENT) {
            let rows = chunk.into_iter().cloned().map(event::ActiveModel::from);
            // Event ids are new: only the padding's repeated row can conflict (skipped).
            event::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::column(event::Column::Id)
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(conn)
                .await?;
        }
        if !effects.audits.is_empty() {
            let rows = effects
                .audits
                .iter()
                .cloned()
                .map(audit_event::ActiveModel::from);
            audit_event::Entity::insert_many(rows)
                .exec_without_returning(conn)
                .await?;
        }
        let inserted = idempotency::record_many(conn, &effects.records).await?;
        Ok(inserted == effects.records.len() as u64)
    }
}

impl Writer for Postgres {
    async fn write(conn: &DatabaseTransaction, effects: &Effects) -> Result<bool> {
        write_holds_and_schedules(conn, effects).await?;
        let mut writes = bulk::Writes::default();
        let grant_key = primary_key::<grant::Entity>();
        writes.insert::<grant::Entity>(
            &effects.grants,
            &[],
            Some(bulk::OnConflict::Update {
                key: &grant_key,
                columns: &GRANT_UPDATES,
            }),
        );
        let wallet_key = primary_key::<wallet::Entity>();
        writes.insert::<wallet::Entity>(
            &effects.wallets,
            &[],
            Some(bulk::OnConflict::Update {
                key: &wallet_key,
                columns: &WALLET_UPDATES,
            }),
        );
        // Entry ids are new: a clash is an error, not a row to skip.
        writes.insert::<transaction::Entity>(&effects.entries, &[transaction::Column::Seq], None);
        let usage_key = primary_key::<usage_day::Entity>();
        writes.insert::<usage_day::Entity>(
            &effects.usage,
            &[],
            Some(bulk::OnConflict::Add {
                key: &usage_key,
                columns: &USAGE_COUNTERS,
            }),
        );
        writes.insert::<audit_event::Entity>(&effects.audits, &[], None);
        writes.insert::<event::Entity>(&effects.events, &[], None);
        idempotency::add_records(&mut writes, &effects.records);
        let inserted = writes.execute(conn).await?;
        Ok(inserted == effects.records.len() as u64)
    }
}

/// Holds and schedules: a row each (few per batch), on both databases.
async fn write_holds_and_schedules(conn: &DatabaseTransaction, effects: &Effects) -> Result<()> {
    for model in &effects.new_schedules {
        schedule::ActiveModel::from(model.clone())
            .insert(conn)
            .await?;
    }
    for (stored, next) in &effects.schedule_periods {
        let mut active: schedule::ActiveModel = stored.clone().into();
        active.next_period = Set(*next);
        active.update(conn).await?;
    }
    for model in &effects.new_holds {
        reservation::ActiveModel::from(model.clone())
            .insert(conn)
            .await?;
    }
    for (stored, after) in &effects.resolved_holds {
        let mut active: reservation::ActiveModel = stored.clone().into();
        active.state = Set(after.state);
        active.captured_units = Set(after.captured_units);
        active.resolve_time = Set(after.resolve_time);
        active.update(conn).await?;
    }
    Ok(())
}

/// SQLite: adds the usage increments to their rows (padded statements like every other
/// table; a padded repeat is made to add nothing).
async fn add_usage(conn: &DatabaseTransaction, rows: &[usage_day::Model]) -> Result<()> {
    for chunk in padded_chunks(rows.iter().collect(), ROWS_PER_STATEMENT) {
        let mut seen = std::collections::HashSet::new();
        let chunk = chunk.into_iter().map(|row| {
            let mut row = row.clone();
            if !seen.insert(usage::key(&row)) {
                (row.requests, row.units, row.costed) = (0, 0, 0);
            }
            usage_day::ActiveModel::from(row)
        });
        let mut on_conflict = OnConflict::columns(primary_key::<usage_day::Entity>());
        for column in USAGE_COUNTERS {
            on_conflict.value(
                column,
                Expr::cust(bulk::saturating_add(
                    usage_day::Entity.table_name(),
                    column.as_str(),
                )),
            );
        }
        usage_day::Entity::insert_many(chunk)
            .on_conflict(on_conflict.to_owned())
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
}

const USAGE_COUNTERS: [usage_day::Column; 3] = [
    usage_day::Column::Requests,
    usage_day::Column::Units,
    usage_day::Column::Costed,
];

fn primary_key<E: EntityTrait>() -> Vec<E::Column> {
    E::PrimaryKey::iter().map(|k| k.into_column()).collect()
}

/// SQLite: writes new and changed rows of `E`, updating `updates` where the id exists.
async fn upsert<E>(
    conn: &DatabaseTransaction,
    rows: &[E::Model],
    updates: &[E::Column],
) -> Result<()>
where
    E: EntityTrait,
    E::Model: Into<E::ActiveModel> + Clone,
    E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
{
    // A padded repeat just updates its row again, to the same values.
    for chunk in padded_chunks(rows.iter().collect(), ROWS_PER_STATEMENT) {
        let chunk: Vec<E::ActiveModel> = chunk.into_iter().map(|row| row.clone().into()).collect();
        E::insert_many(chunk)
            .on_conflict(
                OnConflict::columns(primary_key::<E>())
                    .update_columns(updates.iter().copied())
                    .to_owned(),
            )
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
}

const GRANT_UPDATES: [grant::Column; 6] = [
    grant::Column::Remaining,
    grant::Column::Status,
    grant::Column::Repaid,
    grant::Column::Voided,
    grant::Column::VoidReason,
    grant::Column::ExpiryNoticed,
];

const WALLET_UPDATES: [wallet::Column; 18] = [
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
    wallet::Column::EventSeq,
    wallet::Column::GrantExpiryNoticeDays,
];
