//! SQLite: durable commits without the writer waiting for the disk. The writer connection
//! commits with `synchronous=NORMAL` — the commit's WAL frames are written, not yet synced —
//! and whoever acknowledges the commit first waits for an `fdatasync` of the WAL file that
//! began after it ([`Durable::wait`]). The writer meanwhile starts the next batch, so one
//! batch's sync overlaps the next one's work, and one sync covers every commit before it
//! (group commit of the log, as PostgreSQL's WAL flush does).
//!
//! This is as durable as `synchronous=FULL` for everything acknowledged: a reply, a replay of
//! a stored response or a plain write's return all come after such a sync. The WAL can only
//! be rewritten from its start after a checkpoint has copied every frame into the database
//! file and synced it, so a sync of the current file never misses a commit that was made
//! before it; if the file is gone (every connection closed, which checkpoints and syncs
//! first) there is nothing left to sync. Reads on other connections may see a commit up to
//! one sync before it is durable; no caller is told it happened before then.
//!
//! **A failed sync is final** ("fsyncgate": after `fdatasync` reports an error, Linux may mark
//! the failed pages clean, so a later sync can succeed without them ever reaching the disk).
//! The first failure poisons the log: that sync's callers and every later one get
//! UNAVAILABLE, no write transaction begins ([`LogSync::check`]), and health turns
//! NOT_SERVING (its probe commits and waits for a sync). Only a restart recovers, from what
//! the disk holds. The same holds when the WAL file is missing while this process still has
//! it open (someone deleted it: what it holds is gone at the next restart).

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::error::{Error, Result};

/// The writer's commits and the WAL syncs that made them durable.
pub struct LogSync {
    database: PathBuf,
    wal: PathBuf,
    /// Commits made so far (each commit's ticket is the count after it).
    committed: AtomicU64,
    /// Every commit up to this ticket is durable.
    synced: AtomicU64,
    /// Syncs run so far.
    syncs: AtomicU64,
    /// One sync at a time; waiting callers usually find theirs done by the one ahead.
    running: tokio::sync::Mutex<()>,
    /// Why durability was lost (the first failed sync); set once, never cleared.
    failed: OnceLock<String>,
}

impl LogSync {
    /// For the database file `database` (its log is `<database>-wal`).
    pub fn new(database: PathBuf) -> Self {
        let mut wal = database.clone().into_os_string();
        wal.push("-wal");
        LogSync {
            database,
            wal: wal.into(),
            committed: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            running: tokio::sync::Mutex::new(()),
            failed: OnceLock::new(),
        }
    }

    /// Refuses (UNAVAILABLE) once a sync has failed: nothing more may be written or
    /// acknowledged by this process.
    pub fn check(&self) -> Result<()> {
        match self.failed.get() {
            Some(why) => Err(Error::unavailable(format!(
                "commits can no longer be made durable ({why}); restart allot to recover \
                 from what the disk holds"
            ))),
            None => Ok(()),
        }
    }

    /// Durability is lost (a sync failed, here or inside SQLite): from now on nothing is
    /// written or acknowledged by this process.
    pub fn fail(&self, why: String) {
        tracing::error!(
            error = %why,
            "syncing the SQLite WAL failed: no more commits are acknowledged; restart allot"
        );
        let _ = self.failed.set(why);
    }

    /// Records a commit that just returned; its ticket for [`LogSync::sync`].
    pub fn committed(&self) -> u64 {
        self.committed.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Returns once commit `ticket` (and every earlier one) is durable.
    pub async fn sync(&self, ticket: u64) -> Result<()> {
        self.check()?;
        if self.synced.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let _running = self.running.lock().await;
        self.check()?;
        if self.synced.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Everything committed before the sync starts is covered by it.
        let upto = self.committed.load(Ordering::SeqCst);
        let (database, wal) = (self.database.clone(), self.wal.clone());
        let synced = tokio::task::spawn_blocking(move || sync_wal(&database, &wal))
            .await
            .map_err(|err| Error::internal(format!("WAL sync task failed: {err}")))?;
        if let Err(why) = synced {
            self.fail(why);
            return self.check();
        }
        self.syncs.fetch_add(1, Ordering::SeqCst);
        self.synced.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }

    /// Returns once every commit so far is durable.
    pub async fn sync_all(&self) -> Result<()> {
        self.sync(self.committed.load(Ordering::SeqCst)).await
    }

    /// (commits, commits known durable, syncs run): for tests and diagnostics.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.committed.load(Ordering::SeqCst),
            self.synced.load(Ordering::SeqCst),
            self.syncs.load(Ordering::SeqCst),
        )
    }
}

/// Syncs `wal`, the WAL file of `database`. A missing file is fine when no connection has it open any more
/// (the last one to close checkpointed it into the database file, synced, and removed it; the
/// database file is synced again here to be sure), and an error when this process still has
/// it open: it was deleted under SQLite, and what it holds will not survive a restart.
fn sync_wal(database: &Path, wal: &Path) -> std::result::Result<(), String> {
    match std::fs::File::open(wal) {
        Ok(file) => file
            .sync_data()
            .map_err(|err| format!("fdatasync of {}: {err}", wal.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if open_but_deleted(wal) {
                return Err(format!(
                    "{} was deleted while the database had it open",
                    wal.display()
                ));
            }
            std::fs::File::open(database)
                .and_then(|file| file.sync_data())
                .map_err(|err| format!("fdatasync of {}: {err}", database.display()))
        }
        Err(err) => Err(format!("opening {}: {err}", wal.display())),
    }
}

/// Whether this process holds a descriptor of `path` after it was unlinked (Linux shows such a
/// descriptor's target as `<path> (deleted)`); false where `/proc` cannot tell.
fn open_but_deleted(path: &Path) -> bool {
    let deleted = format!("{} (deleted)", path.display());
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == deleted.as_str())
    })
}

/// A commit that has returned; durable once [`Durable::wait`] returns.
#[must_use = "a commit is acknowledged only after `wait`"]
pub struct Durable {
    log: Option<(Arc<LogSync>, u64)>,
    /// Watchers to wake once the commit is durable (the wallets it wrote events of).
    events: Option<(super::events::Bus, Arc<[String]>)>,
}

impl Durable {
    /// A commit that was durable when it returned (PostgreSQL, or a SQLite connection with
    /// `synchronous=FULL`).
    pub fn now() -> Self {
        Durable {
            log: None,
            events: None,
        }
    }

    pub(crate) fn after(log: Arc<LogSync>, ticket: u64) -> Self {
        Durable {
            log: Some((log, ticket)),
            events: None,
        }
    }

    /// Tells `bus` about the wallets' new events once the commit is durable (never before:
    /// a watcher must not see an event a power cut could still take back).
    pub(crate) fn announce(mut self, bus: &super::events::Bus, wallets: Vec<String>) -> Self {
        if !wallets.is_empty() {
            self.events = Some((bus.clone(), wallets.into()));
        }
        self
    }

    pub async fn wait(self) -> Result<()> {
        if let Some((log, ticket)) = self.log {
            log.sync(ticket).await?;
        }
        if let Some((bus, wallets)) = self.events {
            bus.publish(wallets);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sync_covers_the_commits_before_it_and_not_those_after() {
        let dir = std::env::temp_dir().join(format!("allot-logsync-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let database = dir.join("db");
        std::fs::write(dir.join("db-wal"), b"frames").unwrap();
        let log = LogSync::new(database.clone());

        let first = log.committed();
        let second = log.committed();
        log.sync(first).await.unwrap();
        // The sync began after both commits: the second needs none of its own.
        log.sync(second).await.unwrap();
        assert_eq!(log.counts(), (2, 2, 1));

        let third = log.committed();
        assert_eq!(log.counts().1, 2, "a later commit is not durable yet");
        log.sync(third).await.unwrap();
        assert_eq!(log.counts(), (3, 3, 2));

        // No log file (every connection closed: checkpointed and synced): the database file
        // is synced instead.
        std::fs::write(&database, b"pages").unwrap();
        std::fs::remove_file(dir.join("db-wal")).unwrap();
        let fourth = log.committed();
        log.sync(fourth).await.unwrap();
        assert_eq!(log.counts(), (4, 4, 3));
        log.check().unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_log_deleted_while_open_fails_every_sync_from_then_on() {
        let dir = std::env::temp_dir().join(format!("allot-logsync-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let database = dir.join("db");
        std::fs::write(&database, b"pages").unwrap();
        std::fs::write(dir.join("db-wal"), b"frames").unwrap();
        let log = LogSync::new(database);
        let first = log.committed();
        log.sync(first).await.unwrap();

        // As SQLite would: the file is open here when someone deletes it.
        let held = std::fs::File::open(dir.join("db-wal")).unwrap();
        std::fs::remove_file(dir.join("db-wal")).unwrap();
        let second = log.committed();
        let err = log.sync(second).await.unwrap_err();
        assert_eq!(err.code, tonic::Code::Unavailable, "{err:?}");
        assert!(err.message.contains("deleted"), "{err:?}");
        assert_eq!(
            log.counts().1,
            1,
            "the second commit is not counted durable"
        );

        // The file is back and syncs again, yet nothing more is acknowledged or written.
        drop(held);
        std::fs::write(dir.join("db-wal"), b"frames").unwrap();
        let third = log.committed();
        assert!(log.sync(third).await.is_err());
        assert!(log.sync(second).await.is_err());
        assert!(log.check().is_err());
        assert_eq!(log.counts(), (3, 1, 1));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
