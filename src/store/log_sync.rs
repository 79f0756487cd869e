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

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::error::{Error, Result};

/// The writer's commits and the WAL syncs that made them durable.
pub struct LogSync {
    wal: PathBuf,
    /// Commits made so far (each commit's ticket is the count after it).
    committed: AtomicU64,
    /// Every commit up to this ticket is durable.
    synced: AtomicU64,
    /// Syncs run so far.
    syncs: AtomicU64,
    /// One sync at a time; waiting callers usually find theirs done by the one ahead.
    running: tokio::sync::Mutex<()>,
}

impl LogSync {
    /// For the database file `database` (its log is `<database>-wal`).
    pub fn new(database: PathBuf) -> Self {
        let mut wal = database.into_os_string();
        wal.push("-wal");
        LogSync {
            wal: wal.into(),
            committed: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// Records a commit that just returned; its ticket for [`LogSync::sync`].
    pub fn committed(&self) -> u64 {
        self.committed.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Returns once commit `ticket` (and every earlier one) is durable.
    pub async fn sync(&self, ticket: u64) -> Result<()> {
        if self.synced.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let _running = self.running.lock().await;
        if self.synced.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Everything committed before the sync starts is covered by it.
        let upto = self.committed.load(Ordering::SeqCst);
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || match std::fs::File::open(&wal) {
            Ok(file) => file.sync_data(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err),
        })
        .await
        .map_err(|err| Error::internal(format!("WAL sync task failed: {err}")))?
        .map_err(|err| {
            tracing::error!(error = %err, "syncing the SQLite WAL failed");
            Error::unavailable(format!("the commit could not be made durable: {err}"))
        })?;
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

/// A commit that has returned; durable once [`Durable::wait`] returns.
#[must_use = "a commit is acknowledged only after `wait`"]
pub struct Durable {
    log: Option<(Arc<LogSync>, u64)>,
}

impl Durable {
    /// A commit that was durable when it returned (PostgreSQL, or a SQLite connection with
    /// `synchronous=FULL`).
    pub fn now() -> Self {
        Durable { log: None }
    }

    pub(crate) fn after(log: Arc<LogSync>, ticket: u64) -> Self {
        Durable {
            log: Some((log, ticket)),
        }
    }

    pub async fn wait(self) -> Result<()> {
        match self.log {
            Some((log, ticket)) => log.sync(ticket).await,
            None => Ok(()),
        }
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
        let log = LogSync::new(database);

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

        // No log file (every connection closed: checkpointed and synced): nothing to do.
        std::fs::remove_file(dir.join("db-wal")).unwrap();
        let fourth = log.committed();
        log.sync(fourth).await.unwrap();
        assert_eq!(log.counts(), (4, 4, 3));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
