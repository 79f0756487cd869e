//! Webhook deliveries (issue 15): a dispatcher on every replica turns balance events into
//! signed HTTP POSTs to the endpoints that want them (`store/webhooks.rs` keeps the
//! tables and their rules).
//!
//! Each round: the wallets this process's ledger just wrote events of (told by the event
//! bus once their batch is durable) are fanned out into deliveries; every
//! [`RECONCILE`] a scan finds wallets no replica fanned out yet (a replica died first, or
//! the change came from outside ledger batches); then due deliveries are claimed and sent,
//! at most [`IN_FLIGHT`] at once and [`PER_ENDPOINT`] per endpoint, so a slow endpoint
//! holds only its own slots. Nothing here runs inside a ledger transaction.
//!
//! An attempt succeeds on a 2xx answer within the timeout. Otherwise the delivery is due
//! again after the next delay of the retry schedule, lengthened by up to a fifth at random
//! (jitter); after the last delay it is dead (kept, listed, and replayable).

pub mod sign;
pub mod target;

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use rand::Rng;
use tokio::{sync::broadcast, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    domain::Amount,
    health::Health,
    store::{
        Store,
        entity::{event, webhook_attempt, webhook_delivery, webhook_endpoint},
        webhooks::{self, Outcome},
    },
};

/// The health task name (and its lag metric's label).
pub const TASK: &str = "webhooks";

/// How often the dispatcher fans out what this process wrote and looks for due deliveries
/// (an attempt's end wakes it too).
const TICK: Duration = Duration::from_millis(100);
/// How often it scans for wallets nobody fanned out.
pub const RECONCILE: Duration = Duration::from_secs(5);
/// How often it reads the endpoints again (changes made through another replica).
const ENDPOINTS_REFRESH: Duration = Duration::from_secs(1);
/// Attempts in flight in this process, and per endpoint.
pub const IN_FLIGHT: usize = 64;
pub const PER_ENDPOINT: usize = 8;
/// Wallets fanned out per write transaction.
const FAN_OUT_WALLETS: usize = 200;

/// The default retry schedule: the delays after the 1st, 2nd … failed attempt (Standard
/// Webhooks' own), 27.6 hours in all before the jitter; a delivery is dead after the last.
pub const DEFAULT_RETRIES: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// How deliveries are made (`serve --webhook-*`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Send to loopback, private and link-local addresses too.
    pub allow_private: bool,
    /// The longest an attempt may take, connecting included.
    pub timeout: Duration,
    /// The delays between attempts.
    pub retries: Vec<Duration>,
    /// How long the previous secret keeps signing after a rotation.
    pub rotation_overlap: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            allow_private: false,
            timeout: Duration::from_secs(10),
            retries: DEFAULT_RETRIES.to_vec(),
            rotation_overlap: Duration::from_secs(24 * 3600),
        }
    }
}

impl Settings {
    /// A claimed delivery is left alone by other replicas this long: an attempt's timeout
    /// and a margin to record it. Should recording take longer, another replica may send it
    /// again (at least once), and the later claim's outcome stands (`webhooks::finish`).
    fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(5)
    }

    /// When to try again after failed attempt number `attempt` (1, 2, …); `None`: never.
    fn retry_at(&self, attempt: i32, now: i64) -> Option<i64> {
        let delay = self.retries.get(usize::try_from(attempt - 1).ok()?)?;
        let jittered = delay.mul_f64(1.0 + rand::rng().random_range(0.0..0.2));
        Some(now.saturating_add(i64::try_from(jittered.as_micros()).unwrap_or(i64::MAX)))
    }
}

/// The body of a delivery: Standard Webhooks' `{type, timestamp, data}`, `data` the event
/// as `WatchBalance` sends it (amounts as decimal strings, times in RFC 3339).
pub fn payload(event: &event::Model, unit: &str) -> Vec<u8> {
    let amount = |micros: i64| Amount::from_micros(micros).to_string();
    let time = crate::store::events::rfc3339(event.time);
    let type_name: String = sea_orm::ActiveEnum::to_value(&event.event_type);
    let body = serde_json::json!({
        "type": type_name,
        "timestamp": time,
        "data": {
            "id": event.id,
            "sequence": event.sequence,
            "type": type_name,
            "wallet_id": event.wallet_id,
            "account_id": event.account_id,
            "unit": unit,
            "time": time,
            "balance": {
                "posted": amount(event.posted),
                "reserved": amount(event.reserved),
                "available": amount(event.available),
                "overdraft_limit": amount(event.overdraft_limit),
            },
            "data": event.data.0,
        },
    });
    serde_json::to_vec(&body).expect("JSON of strings and numbers")
}

/// Runs the dispatcher until `stop` is cancelled.
pub async fn run(store: Store, health: Health, settings: Arc<Settings>, stop: CancellationToken) {
    health.task_started(TASK);
    let mut dispatcher = Dispatcher {
        client: target::client(settings.timeout, settings.allow_private),
        store,
        settings,
        endpoints: Arc::default(),
        endpoints_read: None,
        notices: None,
        noticed: BTreeSet::new(),
        cursors: webhooks::Cursors::default(),
        reconciled: None,
        in_flight: JoinSet::new(),
        busy: HashMap::new(),
        done: Vec::new(),
    };
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
            Some(finished) = dispatcher.in_flight.join_next() => dispatcher.collect(finished),
            notice = recv(&mut dispatcher.notices) => {
                // Fanned out at the next tick: one transaction for many batches' wallets.
                dispatcher.notice(notice);
                continue;
            }
        }
        while let Some(finished) = dispatcher.in_flight.try_join_next() {
            dispatcher.collect(finished);
        }
        match dispatcher.round().await {
            Ok(()) => {
                health.round_done(TASK);
                health.task_ok(TASK);
            }
            Err(err) => {
                tracing::warn!(error = %err, "webhook dispatch failed; will retry");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    // Attempts under way get a moment to finish and be recorded; the rest are retried by
    // whoever claims them when their lease ends.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(finished) = dispatcher.in_flight.join_next().await {
            dispatcher.collect(finished);
        }
    })
    .await;
    if let Err(err) = webhooks::finish(&dispatcher.store, &dispatcher.done).await {
        tracing::warn!(error = %err, "recording the last webhook attempts failed");
    }
    if let Err(err) = webhooks::persist(&dispatcher.store, &mut dispatcher.cursors).await {
        tracing::warn!(error = %err, "storing the webhook fan-out cursors failed");
    }
}

async fn recv(
    notices: &mut Option<broadcast::Receiver<Arc<[String]>>>,
) -> Result<Arc<[String]>, broadcast::error::RecvError> {
    match notices {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

struct Dispatcher {
    client: reqwest::Client,
    store: Store,
    settings: Arc<Settings>,
    endpoints: Arc<[Arc<webhook_endpoint::Model>]>,
    endpoints_read: Option<tokio::time::Instant>,
    /// This process's durable batches, by wallet (only while there are endpoints: a
    /// subscription makes every batch name its wallets).
    notices: Option<broadcast::Receiver<Arc<[String]>>>,
    noticed: BTreeSet<String>,
    /// How far this process fanned out the wallets it touched lately.
    cursors: webhooks::Cursors,
    reconciled: Option<tokio::time::Instant>,
    in_flight: JoinSet<(String, Outcome)>,
    /// Attempts in flight per endpoint.
    busy: HashMap<String, usize>,
    /// Attempts made, not recorded yet.
    done: Vec<Outcome>,
}

impl Dispatcher {
    fn notice(&mut self, notice: Result<Arc<[String]>, broadcast::error::RecvError>) {
        match notice {
            Ok(wallets) => self.noticed.extend(wallets.iter().cloned()),
            // Missed some: the scan finds them.
            Err(broadcast::error::RecvError::Lagged(_)) => self.reconciled = None,
            Err(broadcast::error::RecvError::Closed) => self.notices = None,
        }
    }

    fn collect(&mut self, finished: Result<(String, Outcome), tokio::task::JoinError>) {
        // A panicked attempt is retried when its lease ends.
        let Ok((endpoint, outcome)) = finished else {
            return;
        };
        if let Some(n) = self.busy.get_mut(&endpoint) {
            *n -= 1;
            if *n == 0 {
                self.busy.remove(&endpoint);
            }
        }
        let label = if outcome.delivered {
            "delivered"
        } else if outcome.retry_at.is_some() {
            "failed"
        } else {
            "dead"
        };
        metrics::counter!(crate::telemetry::metrics::WEBHOOK_ATTEMPTS, "outcome" => label)
            .increment(1);
        self.done.push(outcome);
    }

    async fn round(&mut self) -> crate::error::Result<()> {
        let now = self.store.clock.now_micros();
        if self
            .endpoints_read
            .is_none_or(|at| at.elapsed() >= ENDPOINTS_REFRESH)
        {
            let endpoints = webhooks::all(self.store.connection()).await?;
            self.endpoints = endpoints.into_iter().map(Arc::new).collect();
            self.endpoints_read = Some(tokio::time::Instant::now());
        }
        let reconcile = self.reconciled.is_none_or(|at| at.elapsed() >= RECONCILE);
        if self.endpoints.is_empty() {
            // Nothing to deliver (the first endpoint starts from the latest events).
            self.notices = None;
            self.noticed.clear();
            self.cursors.clear();
        } else {
            if self.notices.is_none() {
                self.notices = Some(self.store.events.subscribe());
            }
            let mut wallets: Vec<String> = std::mem::take(&mut self.noticed).into_iter().collect();
            if reconcile {
                // The cursors read past lazily are stored first, so the scan sees them.
                webhooks::persist(&self.store, &mut self.cursors).await?;
                wallets.extend(webhooks::behind(self.store.connection(), 10_000).await?);
                self.reconciled = Some(tokio::time::Instant::now());
            }
            let endpoints: Vec<webhook_endpoint::Model> =
                self.endpoints.iter().map(|e| (**e).clone()).collect();
            for chunk in wallets.chunks(FAN_OUT_WALLETS) {
                let out = webhooks::fan_out(&self.store, chunk, &endpoints, now, &mut self.cursors)
                    .await?;
                tracing::debug!(
                    wallets = chunk.len(),
                    deliveries = out.deliveries,
                    "fanned out"
                );
                self.noticed.extend(out.again);
            }
        }
        let done = std::mem::take(&mut self.done);
        if let Err(err) = webhooks::finish(&self.store, &done).await {
            self.done = done;
            return Err(err);
        }
        self.send_due(now).await
    }

    /// Claims what is due and starts its attempts.
    async fn send_due(&mut self, now: i64) -> crate::error::Result<()> {
        let room = IN_FLIGHT.saturating_sub(self.in_flight.len());
        if room == 0 {
            return Ok(());
        }
        let busy: Vec<String> = self
            .busy
            .iter()
            .filter(|(_, n)| **n >= PER_ENDPOINT)
            .map(|(id, _)| id.clone())
            .collect();
        // Every endpoint full (a slow one alone, say): nothing to claim, and no query over
        // its backlog.
        if self
            .endpoints
            .iter()
            .all(|e| !e.enabled || busy.contains(&e.id))
        {
            return Ok(());
        }
        let lease_end = now + i64::try_from(self.settings.lease().as_micros()).unwrap_or(i64::MAX);
        let claimed = webhooks::claim(&self.store, now, lease_end, room as u64, &busy).await?;
        if claimed.is_empty() {
            return Ok(());
        }
        tracing::debug!(claimed = claimed.len(), "claimed webhook deliveries");
        let (events, units) = webhooks::events_of(self.store.connection(), &claimed).await?;
        let endpoints: HashMap<&str, &Arc<webhook_endpoint::Model>> =
            self.endpoints.iter().map(|e| (e.id.as_str(), e)).collect();
        let mut claimed = claimed;
        // Per endpoint at most its share, the rest of the claim waits for its lease.
        claimed.sort_by(|a, b| a.id.cmp(&b.id));
        for delivery in claimed {
            let Some(endpoint) = endpoints.get(delivery.endpoint_id.as_str()) else {
                // Created on another replica a moment ago: the next read of the endpoints
                // has it; the lease ends and it is claimed again.
                continue;
            };
            let count = self.busy.entry(endpoint.id.clone()).or_default();
            *count += 1;
            let event = events.get(&delivery.event_id).cloned();
            let unit = event
                .as_ref()
                .and_then(|e| units.get(&e.wallet_id).cloned())
                .unwrap_or_default();
            let attempt = Attempt {
                client: self.client.clone(),
                endpoint: Arc::clone(endpoint),
                settings: self.settings.clone(),
                clock: self.store.clock.clone(),
            };
            let endpoint_id = endpoint.id.clone();
            self.in_flight.spawn(async move {
                let outcome = attempt.make(delivery, event, &unit).await;
                (endpoint_id, outcome)
            });
        }
        Ok(())
    }
}

/// One attempt of one delivery.
struct Attempt {
    client: reqwest::Client,
    endpoint: Arc<webhook_endpoint::Model>,
    settings: Arc<Settings>,
    clock: crate::clock::Clock,
}

impl Attempt {
    async fn make(
        self,
        delivery: webhook_delivery::Model,
        event: Option<event::Model>,
        unit: &str,
    ) -> Outcome {
        let started = self.clock.now_micros();
        let clock = std::time::Instant::now();
        // No retry can bring back an event pruned meanwhile.
        let gone = event.is_none();
        let (status, error, response) = match event {
            None => (
                0,
                "the event is no longer kept (older than --event-retention)".to_string(),
                String::new(),
            ),
            Some(event) => self.post(&event, unit, started).await,
        };
        let delivered = error.is_empty() && (200..300).contains(&status);
        let duration = i64::try_from(clock.elapsed().as_micros()).unwrap_or(i64::MAX);
        let retry_at = if delivered || gone {
            None
        } else {
            self.settings.retry_at(
                delivery.attempts - delivery.retry_base,
                started.saturating_add(duration),
            )
        };
        Outcome {
            attempt: webhook_attempt::Model {
                delivery_id: delivery.id.clone(),
                attempt: delivery.attempts,
                time: started,
                duration_micros: duration,
                status_code: status,
                error,
                response,
            },
            delivery,
            delivered,
            retry_at,
        }
    }

    /// Sends the event; the answer's status (0: none), why it failed (`''`: it did not)
    /// and the start of its body.
    async fn post(&self, event: &event::Model, unit: &str, now: i64) -> (i32, String, String) {
        let endpoint = &self.endpoint;
        let url = match target::check_url(&endpoint.url, self.settings.allow_private) {
            Ok(url) => url,
            Err(why) => return (0, format!("the URL {why}"), String::new()),
        };
        let body = payload(event, unit);
        let timestamp = now.div_euclid(1_000_000);
        let mut secrets = vec![endpoint.secret.as_str()];
        if let (Some(previous), Some(until)) = (
            endpoint.previous_secret.as_deref(),
            endpoint.previous_secret_expire_time,
        ) && until > now
        {
            secrets.push(previous);
        }
        let signature = sign::header(&secrets, &event.id, timestamp, &body);
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", event.id.as_str())
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(err) => return (0, chain(&err), String::new()),
        };
        let status = i32::from(response.status().as_u16());
        let mut kept = Vec::new();
        // The start of the body, read within the attempt's timeout.
        while kept.len() < webhooks::RESPONSE_KEPT {
            match response.chunk().await {
                Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        kept.truncate(webhooks::RESPONSE_KEPT);
        let text = String::from_utf8_lossy(&kept).into_owned();
        let error = if response.status().is_success() {
            String::new()
        } else if response.status().is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("");
            format!("answered {status}: redirects are not followed (Location: {location})")
        } else {
            format!("answered {status}")
        };
        (status, error, text)
    }
}

/// An error with its causes ("error sending request: … : connection refused").
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_retries_for_more_than_a_day() {
        let settings = Settings::default();
        let total: Duration = settings.retries.iter().sum();
        assert!(total >= Duration::from_secs(24 * 3600), "{total:?}");
        let mut at = 0;
        for attempt in 1..=settings.retries.len() as i32 {
            let next = settings.retry_at(attempt, at).expect("retried");
            let delay = settings.retries[attempt as usize - 1].as_micros() as i64;
            assert!(next - at >= delay && next - at <= delay + delay / 5 + 1);
            at = next;
        }
        assert_eq!(
            settings.retry_at(settings.retries.len() as i32 + 1, at),
            None
        );
    }
}
