//! The baseline: the SQL a team would write by hand, one transaction per debit —
//! `UPDATE … SET balance = balance - $1 WHERE id = $2 AND balance >= $1`, `INSERT` a ledger
//! row, commit — on its own two tables in the same database, with the same durability as the
//! server (SQLite: WAL, `synchronous=FULL`, `BEGIN IMMEDIATE`, a busy timeout; PostgreSQL: the
//! server's `synchronous_commit`).

use std::{
    str::FromStr,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use sea_orm::sqlx::{
    self, PgPool, Row, SqlitePool,
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::{
    database::Kind,
    load::{Outcome, Target},
};
use crate::server::redact_url;

/// Units every baseline wallet starts with (as the allot wallets).
const INITIAL_BALANCE: i64 = super::allot::GRANT_UNITS;
const MICROS: i64 = 1_000_000;

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// `$body` once per database, with `$it` the pool (or transaction) of that database: the
/// statements are the same text, the driver types differ.
macro_rules! on_each {
    ($kind:ident, $value:expr, $it:ident => $body:expr) => {
        match $value {
            $kind::Sqlite($it) => $body,
            $kind::Postgres($it) => $body,
        }
    };
}

/// The baseline tables, seeded, and a pool to debit them.
pub struct Baseline {
    pool: Pool,
    pub connections: usize,
    next: AtomicU64,
}

/// The result of the baseline's own balance check.
#[derive(Debug, Default)]
pub struct Verification {
    pub mismatches: usize,
    pub ledger_rows: i64,
}

const SQLITE_CREATE: [&str; 4] = [
    "DROP TABLE IF EXISTS bench_baseline_ledger",
    "DROP TABLE IF EXISTS bench_baseline_wallets",
    "CREATE TABLE bench_baseline_wallets (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)",
    "CREATE TABLE bench_baseline_ledger (
        id INTEGER PRIMARY KEY,
        wallet_id INTEGER NOT NULL REFERENCES bench_baseline_wallets (id),
        amount INTEGER NOT NULL,
        request_id TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    )",
];

const POSTGRES_CREATE: [&str; 4] = [
    "DROP TABLE IF EXISTS bench_baseline_ledger",
    "DROP TABLE IF EXISTS bench_baseline_wallets",
    "CREATE TABLE bench_baseline_wallets (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)",
    "CREATE TABLE bench_baseline_ledger (
        id BIGSERIAL PRIMARY KEY,
        wallet_id BIGINT NOT NULL REFERENCES bench_baseline_wallets (id),
        amount BIGINT NOT NULL,
        request_id TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL
    )",
];

const DROP: [&str; 2] = [
    "DROP TABLE IF EXISTS bench_baseline_ledger",
    "DROP TABLE IF EXISTS bench_baseline_wallets",
];

impl Baseline {
    /// Connects a pool of `connections`, (re)creates the two tables and seeds `wallets` rows.
    pub async fn setup(
        url: &str,
        kind: Kind,
        wallets: usize,
        connections: usize,
    ) -> anyhow::Result<Baseline> {
        let connections = connections.max(1);
        let shown = redact_url(url);
        let wallets = i64::try_from(wallets)?;
        let pool = match kind {
            Kind::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)
                    .with_context(|| format!("invalid database URL {shown}"))?
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(connections as u32)
                    .min_connections(connections as u32)
                    .connect_with(options)
                    .await
                    .with_context(|| format!("cannot open {shown}"))?;
                for sql in SQLITE_CREATE {
                    sqlx::query(sql).execute(&pool).await?;
                }
                sqlx::query(
                    "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < ?1)
                     INSERT INTO bench_baseline_wallets (id, balance) SELECT i, ?2 FROM seq",
                )
                .bind(wallets)
                .bind(INITIAL_BALANCE)
                .execute(&pool)
                .await?;
                Pool::Sqlite(pool)
            }
            Kind::Postgres => {
                let pool = PgPoolOptions::new()
                    .max_connections(connections as u32)
                    .min_connections(connections as u32)
                    // As a hand-written ledger on libpq would have it (see store/pg_socket.rs).
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            crate::store::pg_socket::set_nodelay(conn).await.map(drop)
                        })
                    })
                    .connect(url)
                    .await
                    .with_context(|| format!("cannot connect to {shown}"))?;
                for sql in POSTGRES_CREATE {
                    sqlx::query(sql).execute(&pool).await?;
                }
                sqlx::query(
                    "INSERT INTO bench_baseline_wallets (id, balance)
                     SELECT g, $2 FROM generate_series(0, $1 - 1) AS g",
                )
                .bind(wallets)
                .bind(INITIAL_BALANCE)
                .execute(&pool)
                .await?;
                Pool::Postgres(pool)
            }
        };
        Ok(Baseline {
            pool,
            connections,
            next: AtomicU64::new(0),
        })
    }

    /// Checks every baseline wallet's balance against what the run acknowledged, and counts
    /// the ledger rows.
    pub async fn verify(&self, charged: &[i64]) -> anyhow::Result<Verification> {
        let (rows, ledger_rows): (Vec<(i64, i64)>, i64) = on_each!(Pool, &self.pool, pool => (
            rows(
                sqlx::query("SELECT id, balance FROM bench_baseline_wallets")
                    .fetch_all(pool)
                    .await?,
            )?,
            sqlx::query("SELECT COUNT(*) FROM bench_baseline_ledger")
                .fetch_one(pool)
                .await?
                .try_get(0)?,
        ));
        let mut mismatches = 0;
        for (id, balance) in &rows {
            let charged = usize::try_from(*id)
                .ok()
                .and_then(|i| charged.get(i))
                .copied()
                .unwrap_or(0);
            if balance * MICROS != INITIAL_BALANCE * MICROS - charged {
                mismatches += 1;
            }
        }
        mismatches += charged.len().saturating_sub(rows.len());
        Ok(Verification {
            mismatches,
            ledger_rows,
        })
    }

    /// Drops the baseline tables and closes the pool.
    pub async fn teardown(&self) -> anyhow::Result<()> {
        on_each!(Pool, &self.pool, pool => {
            for sql in DROP {
                sqlx::query(sql).execute(pool).await?;
            }
            pool.close().await;
        });
        Ok(())
    }

    /// One debit of 1 unit, in its own transaction.
    async fn debit(&self, wallet: i64) -> Result<bool, sqlx::Error> {
        let request_id = format!("baseline-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        // SQLite takes `$n` as numbered parameters too, so one text serves both.
        let mut tx = match &self.pool {
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        };
        let charged = on_each!(Tx, &mut tx, tx => {
            let updated = sqlx::query(
                "UPDATE bench_baseline_wallets SET balance = balance - $1
                 WHERE id = $2 AND balance >= $1",
            )
            .bind(1i64)
            .bind(wallet)
            .execute(&mut **tx)
            .await?;
            updated.rows_affected() > 0
        });
        if charged {
            on_each!(Tx, &mut tx, tx => {
                sqlx::query(
                    "INSERT INTO bench_baseline_ledger (wallet_id, amount, request_id, created_at)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(wallet)
                .bind(1i64)
                .bind(request_id)
                .bind(now)
                .execute(&mut **tx)
                .await?;
            });
        }
        match (tx, charged) {
            (Tx::Sqlite(tx), true) => tx.commit().await?,
            (Tx::Sqlite(tx), false) => tx.rollback().await?,
            (Tx::Postgres(tx), true) => tx.commit().await?,
            (Tx::Postgres(tx), false) => tx.rollback().await?,
        }
        Ok(charged)
    }
}

fn rows<R: Row>(rows: Vec<R>) -> anyhow::Result<Vec<(i64, i64)>>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    rows.iter()
        .map(|row| Ok((row.try_get(0usize)?, row.try_get(1usize)?)))
        .collect()
}

impl Target for Baseline {
    fn debits_per_call(&self) -> usize {
        1
    }

    async fn call(&self, _lane: usize, wallets: &[usize]) -> Vec<Outcome> {
        let outcome = match self.debit(wallets[0] as i64).await {
            Ok(true) => Outcome::Charged(MICROS),
            Ok(false) => Outcome::Rejected("INSUFFICIENT_BALANCE"),
            Err(err) => Outcome::Rejected(error_class(&err)),
        };
        vec![outcome]
    }
}

/// A short class for a SQL error (a failed transaction rolls back: nothing was charged).
fn error_class(err: &sqlx::Error) -> &'static str {
    match err {
        sqlx::Error::Database(db) => {
            let code = db.code();
            match code.as_deref() {
                Some("5") | Some("517") => "SQLITE_BUSY",
                Some("6") => "SQLITE_LOCKED",
                Some("40001") => "SERIALIZATION_FAILURE",
                Some("40P01") => "DEADLOCK",
                Some("53300") => "TOO_MANY_CONNECTIONS",
                _ => "DATABASE_ERROR",
            }
        }
        sqlx::Error::PoolTimedOut => "POOL_TIMED_OUT",
        sqlx::Error::Io(_) => "IO_ERROR",
        _ => "OTHER_ERROR",
    }
}
