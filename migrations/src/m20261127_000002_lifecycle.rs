//! The full ledger lifecycle: holds (reservations), allotment schedules, spend caps and
//! thresholds on wallets, grant states, signed deltas, references and the hash chain on
//! ledger entries.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Wallets {
    Table,
    Posted,
    DailySpendCap,
    MonthlySpendCap,
    SpentDay,
    SpentDayUnits,
    SpentMonth,
    SpentMonthUnits,
    LowBalanceThresholds,
    NextDueTime,
    LastHash,
}

#[derive(DeriveIden)]
enum Grants {
    Table,
    Status,
    Repaid,
    ScheduleId,
    PeriodIndex,
    RolledOver,
    VoidReason,
}

#[derive(DeriveIden)]
enum Transactions {
    Table,
    Delta,
    RefId,
    Reason,
    Hash,
    PrevHash,
}

#[derive(DeriveIden)]
enum Reservations {
    Table,
    Id,
    WalletId,
    AccountId,
    Units,
    State,
    ExpireTime,
    RequestType,
    Quantities,
    RateCardVersion,
    CapturedUnits,
    RequestId,
    Actor,
    CreateTime,
    ResolveTime,
}

#[derive(DeriveIden)]
enum Schedules {
    Table,
    Id,
    WalletId,
    AccountId,
    Amount,
    Period,
    StartTime,
    EndTime,
    RolloverPolicy,
    RolloverCap,
    NextPeriod,
    Kind,
    Priority,
    UnitPrice,
    Currency,
    ContractRef,
    CreateTime,
}

async fn add_column<T: IntoIden + 'static>(
    manager: &SchemaManager<'_>,
    table: T,
    mut column: ColumnDef,
) -> Result<(), DbErr> {
    manager
        .alter_table(
            Table::alter()
                .table(table)
                .add_column(&mut column)
                .to_owned(),
        )
        .await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Wallets: stored posted balance, caps, spend counters, thresholds, sweep time, chain.
        add_column(
            manager,
            Wallets::Table,
            big_integer(Wallets::Posted).default(0).to_owned(),
        )
        .await?;
        add_column(
            manager,
            Wallets::Table,
            big_integer_null(Wallets::DailySpendCap),
        )
        .await?;
        add_column(
            manager,
            Wallets::Table,
            big_integer_null(Wallets::MonthlySpendCap),
        )
        .await?;
        add_column(
            manager,
            Wallets::Table,
            big_integer(Wallets::SpentDay).default(0).to_owned(),
        )
        .await?;
        add_column(
            manager,
            Wallets::Table,
            big_integer(Wallets::SpentDayUnits).default(0).to_owned(),
        )
        .await?;
        add_column(
            manager,
            Wallets::Table,
            big_integer(Wallets::SpentMonth).default(0).to_owned(),
        )
        .await?;
        add_column(
            manager,
            Wallets::Table,
            big_integer(Wallets::SpentMonthUnits).default(0).to_owned(),
        )
        .await?;
        add_column(
            manager,
            Wallets::Table,
            text(Wallets::LowBalanceThresholds).default("[]").to_owned(),
        )
        .await?;
        add_column(
            manager,
            Wallets::Table,
            big_integer_null(Wallets::NextDueTime),
        )
        .await?;
        add_column(
            manager,
            Wallets::Table,
            text(Wallets::LastHash).default("").to_owned(),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("wallets_next_due")
                    .table(Wallets::Table)
                    .col(Wallets::NextDueTime)
                    .to_owned(),
            )
            .await?;

        // Grants: lifecycle state, debt repaid, schedule period.
        add_column(
            manager,
            Grants::Table,
            string_len(Grants::Status, 16).default("ACTIVE").to_owned(),
        )
        .await?;
        add_column(
            manager,
            Grants::Table,
            big_integer(Grants::Repaid).default(0).to_owned(),
        )
        .await?;
        add_column(
            manager,
            Grants::Table,
            string_len_null(Grants::ScheduleId, 64),
        )
        .await?;
        add_column(
            manager,
            Grants::Table,
            big_integer_null(Grants::PeriodIndex),
        )
        .await?;
        add_column(
            manager,
            Grants::Table,
            big_integer(Grants::RolledOver).default(0).to_owned(),
        )
        .await?;
        add_column(
            manager,
            Grants::Table,
            text(Grants::VoidReason).default("").to_owned(),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("grants_schedule_period")
                    .table(Grants::Table)
                    .col(Grants::ScheduleId)
                    .col(Grants::PeriodIndex)
                    .unique()
                    .to_owned(),
            )
            .await?;

        // Ledger entries: signed effect, reference, reason, hash chain.
        add_column(
            manager,
            Transactions::Table,
            big_integer(Transactions::Delta).default(0).to_owned(),
        )
        .await?;
        add_column(
            manager,
            Transactions::Table,
            string_len_null(Transactions::RefId, 64),
        )
        .await?;
        add_column(
            manager,
            Transactions::Table,
            text(Transactions::Reason).default("").to_owned(),
        )
        .await?;
        add_column(
            manager,
            Transactions::Table,
            string_len(Transactions::Hash, 64).default("").to_owned(),
        )
        .await?;
        add_column(
            manager,
            Transactions::Table,
            string_len(Transactions::PrevHash, 64)
                .default("")
                .to_owned(),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("transactions_ref")
                    .table(Transactions::Table)
                    .col(Transactions::RefId)
                    .to_owned(),
            )
            .await?;
        // Entries written before this migration: GRANT added, DEBIT took.
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE transactions SET delta = CASE kind WHEN 'DEBIT' THEN -units ELSE units END",
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE wallets SET posted = COALESCE((SELECT SUM(delta) FROM transactions t \
                 WHERE t.wallet_id = wallets.id), 0)",
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Reservations::Table)
                    .col(string_len(Reservations::Id, 64).primary_key())
                    .col(string_len(Reservations::WalletId, 64))
                    .col(string_len(Reservations::AccountId, 64))
                    .col(big_integer(Reservations::Units))
                    .col(string_len(Reservations::State, 16))
                    .col(big_integer(Reservations::ExpireTime))
                    .col(text(Reservations::RequestType))
                    .col(text(Reservations::Quantities))
                    .col(big_integer_null(Reservations::RateCardVersion))
                    .col(big_integer_null(Reservations::CapturedUnits))
                    .col(text(Reservations::RequestId))
                    .col(text(Reservations::Actor))
                    .col(big_integer(Reservations::CreateTime))
                    .col(big_integer_null(Reservations::ResolveTime))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("reservations_wallet_state")
                    .table(Reservations::Table)
                    .col(Reservations::WalletId)
                    .col(Reservations::State)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Schedules::Table)
                    .col(string_len(Schedules::Id, 64).primary_key())
                    .col(string_len(Schedules::WalletId, 64))
                    .col(string_len(Schedules::AccountId, 64))
                    .col(big_integer(Schedules::Amount))
                    .col(string_len(Schedules::Period, 16))
                    .col(big_integer(Schedules::StartTime))
                    .col(big_integer_null(Schedules::EndTime))
                    .col(string_len(Schedules::RolloverPolicy, 16))
                    .col(big_integer_null(Schedules::RolloverCap))
                    .col(big_integer(Schedules::NextPeriod))
                    .col(string_len(Schedules::Kind, 16))
                    .col(integer(Schedules::Priority))
                    .col(string_len(Schedules::UnitPrice, 40))
                    .col(string_len(Schedules::Currency, 8))
                    .col(text(Schedules::ContractRef))
                    .col(big_integer(Schedules::CreateTime))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("schedules_wallet")
                    .table(Schedules::Table)
                    .col(Schedules::WalletId)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Schedules::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Reservations::Table).to_owned())
            .await?;
        Ok(())
    }
}
