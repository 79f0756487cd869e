//! What the health service reports, and the supervision of background tasks.
//!
//! The service is SERVING only while all of these hold, checked every [`CHECK_INTERVAL`]:
//! * the database answers a ping within [`CHECK_TIMEOUT`];
//! * the ledger can commit: an empty ledger batch (the rate-card head lock, a commit, the
//!   wait until it is durable — on SQLite a sync of the log) completes within
//!   [`CHECK_TIMEOUT`];
//! * every supervised background task is running: a task that panics is restarted after a
//!   back-off, and counts as down until its new run completes a round.
//!
//! A check that is slow is never cancelled mid-statement (that could leave a connection in
//! an unknown state): it runs in a task of its own, the monitor stops waiting for it after
//! [`CHECK_TIMEOUT`] and reports it slow, and the next round waits for the same task.
//!
//! [`monitor`] turns these facts into the `grpc.health.v1` statuses; while the server drains
//! for shutdown the statuses stay NOT_SERVING.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::store::{Store, ledger};

/// The health service name for liveness probes: SERVING from start until shutdown begins,
/// whatever the database does (a database outage must not get every replica restarted;
/// readiness, the overall status `""`, takes them out of rotation instead).
pub const LIVENESS: &str = "liveness";

/// How often the monitor checks the database and the ledger.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// A ping or ledger commit slower than this counts as a failure.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// Back-off before a panicked task is restarted (doubling up to [`MAX_BACKOFF`]).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Facts the rest of the service reports about itself; cheap to clone.
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Background tasks that are not running (panicked, or not yet through a round since).
    down: Mutex<BTreeSet<&'static str>>,
    /// When each background task last completed a round (or was first supervised).
    rounds: Mutex<BTreeMap<&'static str, Instant>>,
}

impl Health {
    /// `task` cannot run (it panicked, or its worker ended).
    pub fn task_down(&self, task: &'static str) {
        self.down().insert(task);
    }

    /// `task` completed a round.
    pub fn task_ok(&self, task: &'static str) {
        let mut down = self.down();
        if !down.is_empty() {
            down.remove(task);
        }
    }

    /// `task` (or a part of one, like pruning) completed a round: its lag restarts from 0.
    pub fn round_done(&self, task: &'static str) {
        self.rounds().insert(task, Instant::now());
    }

    /// `task` began: its lag counts from now until its first successful round.
    pub fn task_started(&self, task: &'static str) {
        self.rounds().entry(task).or_insert_with(Instant::now);
    }

    /// How long ago each task last completed a round (the `allot_background_lag_seconds`
    /// metric).
    pub fn lags(&self) -> Vec<(&'static str, Duration)> {
        self.rounds()
            .iter()
            .map(|(task, at)| (*task, at.elapsed()))
            .collect()
    }

    fn rounds(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Instant>> {
        self.inner
            .rounds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The tasks that are down.
    pub fn tasks_down(&self) -> Vec<&'static str> {
        self.down().iter().copied().collect()
    }

    fn down(&self) -> std::sync::MutexGuard<'_, BTreeSet<&'static str>> {
        // The set is valid after any panic (inserts and removes are atomic), so a poisoned
        // lock is taken as it is.
        self.inner
            .down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The text of a caught panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Runs the task `make()` builds until `stop` is cancelled; if it panics, marks it down,
/// waits a back-off and runs a new one. Each run gets a child token of `stop`. The task marks
/// itself up with [`Health::task_ok`].
pub async fn supervise<F, Fut>(name: &'static str, health: Health, stop: CancellationToken, make: F)
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let run = AssertUnwindSafe(make(stop.child_token()))
            .catch_unwind()
            .await;
        match run {
            Ok(()) => return,
            Err(panic) => {
                health.task_down(name);
                tracing::error!(
                    task = name,
                    panic = %panic_message(panic.as_ref()),
                    restart_in = ?backoff,
                    "background task panicked; restarting it"
                );
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One kind of check, run in a task of its own (see the module docs).
#[derive(Default)]
struct Probe {
    running: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

impl Probe {
    /// The outcome of the check `start` begins (or of the one still running from an earlier
    /// round), waiting at most [`CHECK_TIMEOUT`].
    async fn outcome<F>(&mut self, start: impl FnOnce() -> F) -> Result<(), String>
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        let running = self.running.get_or_insert_with(|| tokio::spawn(start()));
        match tokio::time::timeout(CHECK_TIMEOUT, running).await {
            Ok(joined) => {
                self.running = None;
                joined.unwrap_or_else(|err| Err(format!("the check failed: {err}")))
            }
            Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        }
    }
}

/// The monitor's checks of the database and the ledger.
#[derive(Default)]
struct Checks {
    ping: Probe,
    commit: Probe,
}

impl Checks {
    /// Why the service is not serving now, or `None` if it is.
    async fn problem(&mut self, store: &Store, health: &Health) -> Option<String> {
        let ping = {
            let store = store.clone();
            move || async move { store.ping().await.map_err(|err| err.to_string()) }
        };
        let pinged = self.ping.outcome(ping).await;
        store.database_pinged(pinged.is_ok());
        if let Err(err) = pinged {
            return Some(format!("database ping: {err}"));
        }
        let commit = {
            let store = store.clone();
            move || async move {
                // An empty batch: the head lock, a commit, the wait until it is durable.
                let (_, durable) = ledger::apply(&store, &[], |_| Vec::new())
                    .await
                    .map_err(|err| err.to_string())?;
                durable.wait().await.map_err(|err| err.to_string())
            }
        };
        if let Err(err) = self.commit.outcome(commit).await {
            return Some(format!("ledger commit: {err}"));
        }
        let down = health.tasks_down();
        if !down.is_empty() {
            return Some(format!("background tasks not running: {}", down.join(", ")));
        }
        None
    }
}

/// The `grpc.health.v1` statuses of a set of services; once draining, they stay
/// NOT_SERVING (the monitor and shutdown take one lock, so a check that began before shutdown
/// cannot turn them back).
#[derive(Clone)]
pub struct Statuses {
    reporter: HealthReporter,
    services: Arc<[&'static str]>,
    draining: Arc<tokio::sync::Mutex<bool>>,
}

impl Statuses {
    /// Statuses for `services`, all SERVING, and [`LIVENESS`] SERVING until shutdown.
    pub async fn new(reporter: HealthReporter, services: &[&'static str]) -> Self {
        let statuses = Statuses {
            reporter,
            services: services.into(),
            draining: Arc::default(),
        };
        statuses.set(ServingStatus::Serving).await;
        statuses
            .reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
        statuses
    }

    async fn set(&self, status: ServingStatus) {
        for service in self.services.iter() {
            self.reporter.set_service_status(*service, status).await;
        }
        crate::telemetry::metrics::serving(status == ServingStatus::Serving);
    }

    /// Sets every status to `status` unless the server is draining; false if it is.
    async fn set_unless_draining(&self, status: ServingStatus) -> bool {
        let draining = self.draining.lock().await;
        if *draining {
            return false;
        }
        self.set(status).await;
        true
    }

    /// Shutdown began: NOT_SERVING from now on.
    pub async fn drain(&self) {
        let mut draining = self.draining.lock().await;
        *draining = true;
        self.set(ServingStatus::NotServing).await;
        self.reporter
            .set_service_status(LIVENESS, ServingStatus::NotServing)
            .await;
    }
}

/// Keeps `statuses` in line with [`check`] every [`CHECK_INTERVAL`] until `stop` is cancelled.
pub async fn monitor(store: Store, health: Health, statuses: Statuses, stop: CancellationToken) {
    let mut serving = true;
    let mut checks = Checks::default();
    let mut ticker = tokio::time::interval(CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let problem = checks.problem(&store, &health).await;
        match (&problem, serving) {
            (Some(problem), true) => {
                tracing::error!(%problem, "health: NOT_SERVING");
                if !statuses
                    .set_unless_draining(ServingStatus::NotServing)
                    .await
                {
                    return;
                }
                serving = false;
            }
            (None, false) => {
                tracing::info!("health: SERVING again");
                if !statuses.set_unless_draining(ServingStatus::Serving).await {
                    return;
                }
                serving = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A task that panics is marked down and restarted; once a run completes a round it is
    /// up again; stopping ends the supervision.
    #[tokio::test]
    async fn a_panicking_task_is_restarted_and_reported_down_meanwhile() {
        let health = Health::default();
        let stop = CancellationToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let supervisor = {
            let (health, runs) = (health.clone(), runs.clone());
            tokio::spawn(supervise(
                "flaky",
                health.clone(),
                stop.clone(),
                move |stop| {
                    let (health, runs) = (health.clone(), runs.clone());
                    async move {
                        if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                            panic!("flaky task fails its first two runs");
                        }
                        health.task_ok("flaky");
                        stop.cancelled().await;
                    }
                },
            ))
        };
        // Down after the first panic.
        for _ in 0..100 {
            if health.tasks_down() == ["flaky"] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(health.tasks_down(), ["flaky"]);
        // Up once the third run completed a round (after 100 + 200 ms of back-off).
        for _ in 0..200 {
            if health.tasks_down().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(health.tasks_down().is_empty());
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), supervisor)
            .await
            .expect("supervision ends when stopped")
            .unwrap();
    }
}
