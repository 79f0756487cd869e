//! Persistence through sea-orm, on SQLite (default, embedded) or PostgreSQL.
//!
//! * `entity` — the tables; `migrations/` creates them.
//! * `idempotency` — the request_id record every mutation goes through.
//! * `accounts`, `rate_cards` — plain CRUD in one transaction each.
//! * `ledger` — applies a *batch* of ledger operations (grants, debits) in one transaction,
//!   wallets locked in id order; `batcher` feeds it (group commit).
//!
//! Writers on SQLite are serialised in-process (one writer connection, `BEGIN IMMEDIATE`); on
//! PostgreSQL row locks (`FOR UPDATE` on wallets, `FOR SHARE` on the rate-card head) order
//! concurrent writers, across any number of replicas.

pub mod accounts;
pub mod audit;
pub mod batcher;
pub mod budget;
pub mod bulk;
pub mod chain;
pub mod checkpointer;
pub mod columns;
pub mod directory;
pub mod entity;
pub mod entries;
pub mod events;
pub mod export;
pub mod idempotency;
pub mod ledger;
pub mod log_sync;
pub mod overrides;
pub mod pagination;
pub mod pg_socket;
pub mod rate_cards;
pub mod shape;
pub mod simulate;
pub mod statements;
pub mod sweeper;
pub mod transparency;
pub mod usage;
pub mod verify;
pub mod wallet_cache;
pub mod webhooks;

use std::{str::FromStr, sync::Arc, time::Duration};

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
    sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
};

use self::log_sync::{Durable, LogSync};
use crate::{
    clock::Clock,
    error::{Error, Result},
};

/// The database file of a SQLite URL (`None` for PostgreSQL and in-memory databases).
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    if !url.starts_with("sqlite:") || url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let options = SqliteConnectOptions::from_str(url).ok()?;
    Some(options.get_filename().to_path_buf())
}

/// The default database: a SQLite file in the working directory, created on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://allot.db?mode=rwc";

/// Prepared statements kept per connection (a batch's statements come in a few power-of-two
/// shapes each, see `shape`; sqlx keeps 100 by default).
const STATEMENT_CACHE: usize = 1024;

#[derive(Clone)]
pub struct Store {
    pub(crate) db: DatabaseConnection,
    /// SQLite: a pool of one connection that every write transaction uses, so writers
    /// queue for it in-process instead of meeting BUSY errors (see `connect`).
    writer: Option<DatabaseConnection>,
    pub clock: Clock,
    /// Published rate cards as of a head generation (see `rate_cards::CardCache`).
    pub(crate) cards: rate_cards::CardCache,
    /// Account overrides as of a head generation (see `overrides::OverrideCache`).
    pub(crate) overrides: overrides::OverrideCache,
    /// Identity facts that never change (see `directory`).
    pub(crate) directory: Arc<directory::Directory>,
    /// Wallets' grants, holds and schedules as of their last write here.
    pub(crate) wallets: Arc<wallet_cache::WalletCache>,
    /// SQLite file databases: the writer's commits wait for a WAL sync here (`log_sync`).
    log: Option<Arc<LogSync>>,
    /// SQLite file databases: the file.
    file: Option<std::path::PathBuf>,
    /// Whether the database did not answer the health monitor's last ping
    /// (watched by the calls in flight, see `admission`).
    unreachable: Arc<tokio::sync::watch::Sender<bool>>,
    /// Wakes this process's balance watchers when events are durable (`events`).
    pub events: events::Bus,
}

/// One connection pool's use (see [`Store::pools`]).
pub struct PoolUse {
    pub name: &'static str,
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

/// A write transaction (on SQLite: holding the one writer connection while it lives).
pub struct WriteTx {
    pub tx: DatabaseTransaction,
    log: Option<Arc<LogSync>>,
}

impl WriteTx {
    /// Commits; returns once the commit is durable.
    pub async fn commit(self) -> Result<()> {
        self.commit_pending().await?.wait().await
    }

    /// Commits; the commit is durable once the returned [`Durable`] has been waited for
    /// (SQLite: by a sync of the log, see `log_sync`). Nothing may acknowledge it before.
    pub async fn commit_pending(self) -> Result<Durable> {
        if let Err(err) = self.tx.commit().await {
            // SQLite syncs on its own at times (a new WAL's header, checkpoints): its failure
            // is as final as one of ours (see `log_sync`).
            if let Some(log) = &self.log
                && crate::error::is_storage_failure(&err)
            {
                log.fail(format!("the commit failed: {err}"));
            }
            return Err(err.into());
        }
        Ok(match self.log {
            Some(log) => {
                let ticket = log.committed();
                Durable::after(log, ticket)
            }
            None => Durable::now(),
        })
    }
}

impl Store {
    /// Connects; on SQLite turns on WAL and a busy timeout, with commits durable before they
    /// are acknowledged (`synchronous=FULL`, or on the writer `NORMAL` plus a log sync before
    /// any acknowledgement, see `log_sync`).
    pub async fn connect(url: &str, clock: Clock) -> anyhow::Result<Self> {
        let is_sqlite = url.starts_with("sqlite:");
        if is_sqlite {
            // Validate early so a bad path gives a clear error.
            SqliteConnectOptions::from_str(url)?;
        }
        let db = open(Self::options(url, if is_sqlite { 8 } else { 16 }, false)).await?;
        // SQLite has one writer at a time: give it one connection of its own, so its page
        // cache stays warm from one batch to the next (a connection's cache is dropped when
        // another connection has written) and it never waits for a pooled connection.
        let writer = if is_sqlite {
            Some(open(Self::options(url, 1, true)).await?)
        } else {
            None
        };
        let file = sqlite_file(url).map(|path| std::fs::canonicalize(&path).unwrap_or(path));
        let log = file.clone().map(|path| Arc::new(LogSync::new(path)));
        Ok(Store {
            db,
            writer,
            clock,
            cards: rate_cards::CardCache::default(),
            overrides: overrides::OverrideCache::default(),
            directory: Arc::default(),
            wallets: Arc::default(),
            log,
            file,
            unreachable: Arc::new(tokio::sync::watch::Sender::new(false)),
            events: events::Bus::default(),
        })
    }

    /// Pool options; on SQLite WAL, `synchronous=FULL` (a commit is durable when it returns;
    /// the writer of a file database: `NORMAL`, see `connect`), a busy timeout and foreign
    /// keys.
    fn options(url: &str, connections: u32, sqlite_writer: bool) -> ConnectOptions {
        // The writer of a file database syncs its log apart from its commits (`log_sync`).
        let synchronous = if sqlite_writer && sqlite_file(url).is_some() {
            SqliteSynchronous::Normal
        } else {
            SqliteSynchronous::Full
        };
        let mut options = ConnectOptions::new(url.to_string());
        options
            .sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(10))
            .max_connections(connections)
            .min_connections(1)
            // Ping only connections idle for a while, not on every acquire (a round trip —
            // or, on SQLite, a hop to the driver's thread — per batch and per read).
            .test_before_acquire_if_idle_for(Duration::from_secs(30));
        if url.starts_with("sqlite:") {
            options.map_sqlx_sqlite_opts(move |opts| {
                let opts = opts
                    .statement_cache_capacity(STATEMENT_CACHE)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(synchronous)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
                    // Page cache: 16 MiB for the writer (kept warm from batch to batch), 4 MiB
                    // for each of the pooled readers (SQLite's default is 2 MiB; eight of them
                    // at 16 MiB could hold 128 MiB).
                    .pragma("cache_size", if sqlite_writer { "-16384" } else { "-4096" })
                    // Statement journals (multi-row writes) in memory, not temp files.
                    .pragma("temp_store", "memory");
                if sqlite_writer {
                    // Its automatic checkpoints are a backstop only (see `checkpointer`).
                    opts.pragma(
                        "wal_autocheckpoint",
                        checkpointer::WRITER_AUTOCHECKPOINT_PAGES.to_string(),
                    )
                } else {
                    opts
                }
            });
        } else {
            options.map_sqlx_postgres_opts(|opts| opts.statement_cache_capacity(STATEMENT_CACHE));
            // TCP_NODELAY on every connection (see `pg_socket`: sqlx 0.9 leaves Nagle on).
            options.map_sqlx_postgres_pool_opts(|pool| {
                pool.after_connect(|conn, _| {
                    Box::pin(async move { pg_socket::set_nodelay(conn).await.map(drop) })
                })
            });
        }
        options
    }

    /// With `on`, every ledger batch asserts that the rows it takes from the wallet cache equal
    /// the database's (for tests, in any build profile).
    pub fn checking_cache(mut self, on: bool) -> Self {
        self.wallets = Arc::new(wallet_cache::WalletCache::new(on));
        self
    }

    /// Applies the migrations this binary knows. Replicas starting together take turns: on
    /// PostgreSQL under a session advisory lock, on a SQLite file under an exclusive lock on
    /// `<file>.migrate-lock`; whoever comes second finds the schema up to date.
    ///
    /// A database that has every migration this binary knows is left alone, even if it has
    /// newer ones (an older release after a rollback, or during a rolling upgrade): the
    /// migrator would refuse it for migrations it has no file for.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        if self.is_postgres() {
            // One pooled connection holds the lock; the migrator may use others.
            let mut lock = self.db.get_postgres_connection_pool().acquire().await?;
            sea_orm::sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *lock)
                .await?;
            let migrated = self.migrate_unless_current().await;
            let unlocked = sea_orm::sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *lock)
                .await;
            migrated?;
            unlocked?;
            return Ok(());
        }
        let _lock = match &self.file {
            Some(file) => Some(lock_file(file)?),
            None => None,
        };
        self.migrate_unless_current().await
    }

    async fn migrate_unless_current(&self) -> anyhow::Result<()> {
        if verify::schema_problem(&self.db).await?.is_none() {
            return Ok(());
        }
        Migrator::up(&self.db, None).await?;
        Ok(())
    }

    /// The connection pools and how many connections each has open, idle and at most (the
    /// `allot_db_pool_*` metrics).
    pub fn pools(&self) -> Vec<PoolUse> {
        let sample = |name: &'static str, db: &DatabaseConnection| {
            if self.is_postgres() {
                let pool = db.get_postgres_connection_pool();
                PoolUse {
                    name,
                    size: pool.size(),
                    idle: pool.num_idle() as u32,
                    max: pool.options().get_max_connections(),
                }
            } else {
                let pool = db.get_sqlite_connection_pool();
                PoolUse {
                    name,
                    size: pool.size(),
                    idle: pool.num_idle() as u32,
                    max: pool.options().get_max_connections(),
                }
            }
        };
        let mut pools = vec![sample("main", &self.db)];
        if let Some(writer) = &self.writer {
            pools.push(sample("writer", writer));
        }
        pools
    }

    /// The health monitor's last ping of the database: answered, or not (refused, reset, or
    /// no answer within its timeout).
    pub fn database_pinged(&self, answered: bool) {
        // Watchers wake only when it flips.
        self.unreachable.send_if_modified(|down| {
            let flips = *down == answered;
            *down = !answered;
            flips
        });
    }

    /// True while the monitor's last ping of the database failed: calls are then answered
    /// UNAVAILABLE at once instead of waiting out their deadlines (`admission`).
    pub fn unreachable(&self) -> tokio::sync::watch::Receiver<bool> {
        self.unreachable.subscribe()
    }

    /// The underlying connection (for tools such as `verify`, and tests).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    pub fn is_postgres(&self) -> bool {
        is_postgres(&self.db)
    }

    /// Begins a write transaction; refused (UNAVAILABLE) once a SQLite log sync has failed
    /// (see `log_sync`: nothing more may be written by this process).
    pub async fn begin_write(&self) -> Result<WriteTx> {
        if let Some(log) = &self.log {
            log.check()?;
        }
        // SQLite: BEGIN IMMEDIATE (take the write lock up front); PostgreSQL: the default
        // read-write transaction (row locks order writers).
        let options = if self.is_postgres() {
            TransactionOptions::default()
        } else {
            TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            }
        };
        let tx = self
            .writer
            .as_ref()
            .unwrap_or(&self.db)
            .begin_with_options(options)
            .await?;
        Ok(WriteTx {
            tx,
            log: self.log.clone(),
        })
    }

    /// A read-only transaction that sees one snapshot of the database: on PostgreSQL
    /// `REPEATABLE READ, READ ONLY`; on SQLite a deferred transaction on a pooled reader,
    /// which in WAL mode reads one snapshot from its first query on. Roll it back when done.
    pub async fn read_snapshot(&self) -> Result<DatabaseTransaction> {
        Ok(snapshot(&self.db).await?)
    }

    /// Returns once every commit made so far is durable (SQLite's log synced; PostgreSQL:
    /// at once).
    pub async fn sync_log(&self) -> Result<()> {
        match &self.log {
            Some(log) => log.sync_all().await,
            None => Ok(()),
        }
    }

    /// The SQLite writer's commit and log-sync counts (see `log_sync`); `None` elsewhere.
    pub fn log_counts(&self) -> Option<(u64, u64, u64)> {
        self.log.as_ref().map(|log| log.counts())
    }

    /// What makes an acknowledged commit less durable than allot promises, read from the
    /// database at start (PostgreSQL: `fsync` or `full_page_writes` off, or
    /// `synchronous_commit = off`, under which a commit returns before its WAL is flushed and a
    /// crash of the database server loses acknowledged debits). SQLite: none (allot syncs its
    /// log itself, see `log_sync`).
    pub async fn durability_warnings(&self) -> Result<Vec<String>> {
        if !self.is_postgres() {
            return Ok(Vec::new());
        }
        let mut warnings = Vec::new();
        for (setting, bad, why) in [
            (
                "synchronous_commit",
                "off",
                "PostgreSQL acknowledges commits before their WAL is flushed: a crash of the \
                 database server can lose debits allot has acknowledged; allot needs `on` (or \
                 `local`, `remote_write`, `remote_apply`)",
            ),
            (
                "fsync",
                "off",
                "PostgreSQL never syncs to disk: a power loss can lose or corrupt the ledger",
            ),
            (
                "full_page_writes",
                "off",
                "a power loss can leave torn pages PostgreSQL cannot repair",
            ),
        ] {
            let row = self
                .db
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT current_setting($1) AS value",
                    [setting.into()],
                ))
                .await?;
            let value: String = match row {
                Some(row) => row.try_get("", "value")?,
                None => continue,
            };
            if value.eq_ignore_ascii_case(bad) {
                warnings.push(format!("{setting} = {value}: {why}"));
            }
        }
        Ok(warnings)
    }

    /// Checks the database answers (used by health).
    pub async fn ping(&self) -> Result<()> {
        self.db.ping().await?;
        Ok(())
    }

    pub async fn close(self) {
        if let Some(writer) = self.writer {
            let _ = writer.close().await;
        }
        let _ = self.db.close().await;
    }
}

/// Opens a pool. A SQLite file that another process holds locked while it opens it too
/// (switching a new file to WAL takes an exclusive lock, and SQLite may answer BUSY at once
/// instead of waiting out the busy timeout) is tried again for up to [`OPEN_RETRY`].
async fn open(options: ConnectOptions) -> Result<DatabaseConnection, sea_orm::DbErr> {
    let started = std::time::Instant::now();
    loop {
        match Database::connect(options.clone()).await {
            Err(err)
                if err.to_string().contains("database is locked")
                    && started.elapsed() < OPEN_RETRY =>
            {
                tracing::debug!(error = %err, "the database file is locked; opening it again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            result => return result,
        }
    }
}

/// How long [`open`] tries a locked SQLite file.
const OPEN_RETRY: Duration = Duration::from_secs(10);

/// The PostgreSQL advisory lock key migrations run under ("allot" in ASCII).
const MIGRATION_LOCK: i64 = 0x0061_6c6c_6f74;

/// An exclusive lock on `<database>.migrate-lock`, held while the returned file lives.
fn lock_file(database: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let mut path = database.as_os_str().to_owned();
    path.push(".migrate-lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    file.lock()?;
    Ok(file)
}

/// See [`Store::read_snapshot`].
pub async fn snapshot(
    db: &DatabaseConnection,
) -> std::result::Result<DatabaseTransaction, sea_orm::DbErr> {
    let options = if is_postgres(db) {
        TransactionOptions {
            isolation_level: Some(sea_orm::IsolationLevel::RepeatableRead),
            access_mode: Some(sea_orm::AccessMode::ReadOnly),
            sqlite_transaction_mode: None,
        }
    } else {
        TransactionOptions::default()
    };
    db.begin_with_options(options).await
}

/// A new resource id: `prefix_` + a time-ordered UUIDv7 in hex (ids sort by creation).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Whether a connection is on PostgreSQL (row locks, bulk `unnest` writes) or SQLite (no
/// lock clauses, one writer): the one place the store asks.
pub(crate) fn is_postgres(conn: &impl ConnectionTrait) -> bool {
    conn.get_database_backend() == DbBackend::Postgres
}

impl Store {
    /// Runs `delete` (which deletes at most `chunk` rows) in one write transaction after
    /// another until a run deletes fewer; returns how many rows went. For pruning: short
    /// transactions, so debits never wait long for the writer.
    pub(crate) async fn delete_in_chunks(
        &self,
        delete: &sea_orm::sea_query::DeleteStatement,
        chunk: u64,
    ) -> Result<u64> {
        let mut deleted = 0;
        loop {
            let write = self.begin_write().await?;
            let n = write.tx.execute(delete).await?.rows_affected();
            write.commit().await?;
            deleted += n;
            if n < chunk {
                return Ok(deleted);
            }
        }
    }

    /// Runs `op` in a write transaction under the idempotency key: a stored response is
    /// replayed (`true` in the result) instead of running `op`; a new response is recorded in
    /// the same transaction as the effect. Concurrent duplicates (several replicas) resolve
    /// to one effect: the loser's insert of the key conflicts, it rolls back and replays.
    pub async fn idempotent<T, F>(&self, key: &idempotency::Key, op: F) -> Result<(T, bool)>
    where
        T: prost::Message + Default,
        F: for<'c> Fn(&'c DatabaseTransaction) -> futures::future::BoxFuture<'c, Result<T>>,
    {
        const ATTEMPTS: usize = 4;
        let mut last_error = None;
        for _ in 0..ATTEMPTS {
            let write = self.begin_write().await?;
            if let Some(record) = idempotency::find(&write.tx, key).await? {
                write.tx.rollback().await?;
                // The record may be a commit not yet durable: replay it only once it is.
                self.sync_log().await?;
                return Ok((key.replay(&record)?, true));
            }
            match op(&write.tx).await {
                Ok(response) => {
                    let record = key.record(response.encode_to_vec(), self.clock.now_micros());
                    if idempotency::record_many(&write.tx, &[record]).await? == 1 {
                        write.commit().await?;
                        return Ok((response, false));
                    }
                    // Another writer committed this key meanwhile: replay it.
                    write.tx.rollback().await?;
                }
                Err(err) => {
                    write.tx.rollback().await?;
                    if let Some(record) = idempotency::find(&self.db, key).await? {
                        self.sync_log().await?;
                        return Ok((key.replay(&record)?, true));
                    }
                    if !err.is_retryable() {
                        return Err(err);
                    }
                    last_error = Some(err);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::aborted("idempotency record kept conflicting")))
    }
}
