//! LedgerService.WatchBalance: a wallet's balance, then its events as they are committed.
//!
//! The events come from the outbox (`store/events.rs`), read by number: a watcher keeps the
//! last number it sent and reads what follows, so it cannot skip or repeat one whichever
//! replica wrote it. It reads when this process commits events of its wallet (`events::Bus`,
//! after the commit is durable) and every [`POLL`] (events committed by other replicas).
//! Its buffer is bounded: a reader [`BUFFER`] events behind is ended with `WATCH_LAGGED`.

use std::{pin::Pin, time::Duration};

use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};

use super::{Ctx, convert, status};
use crate::{
    domain::Amount,
    error::{Error, Reason, Result},
    proto,
    store::{Store, entity::event, events, ledger},
};

/// Events a reader may fall behind by before its watch is ended.
pub const BUFFER: usize = 1024;
/// How often a watcher looks for events other replicas committed.
pub const POLL: Duration = Duration::from_millis(250);
/// Events read from the database at a time.
const PAGE: u64 = 256;
/// The type of the first message of a watch without `after_sequence`.
pub const SNAPSHOT: &str = "balance.snapshot";

pub type WatchStream =
    Pin<Box<dyn Stream<Item = std::result::Result<proto::BalanceEvent, Status>> + Send>>;

impl Ctx {
    pub(super) async fn watch_balance(
        &self,
        request: Request<proto::WatchBalanceRequest>,
    ) -> Result<WatchStream> {
        let caller = super::access::caller(&request)?;
        let r = request.into_inner();
        let wallet = if r.wallet_id.is_empty() {
            self.resolve_wallet(&caller, &r.account_id, &r.external_id, &r.unit)
                .await?
                .1
        } else {
            if !(r.account_id.is_empty() && r.external_id.is_empty() && r.unit.is_empty()) {
                return Err(Error::invalid(
                    Reason::InvalidField,
                    "wallet_id",
                    "name the wallet by wallet_id, or by account_id / external_id and unit; \
                     not both",
                ));
            }
            self.wallet_in_scope(&caller, &r.wallet_id).await?
        };
        // Subscribed before anything is read: a commit after the read is noticed.
        let notices = self.store.events.subscribe();
        let (sender, receiver) = mpsc::channel(BUFFER + 1);
        let after = match r.after_sequence {
            None => {
                let now = self.store.clock.now_micros();
                let (model, balance) = ledger::wallet_balance(&self.store, &wallet.id, now).await?;
                let snapshot = proto::BalanceEvent {
                    id: String::new(),
                    sequence: model.event_seq,
                    r#type: SNAPSHOT.to_string(),
                    wallet_id: model.id.clone(),
                    account_id: model.account_id.clone(),
                    time: Some(convert::timestamp(now)),
                    balance: Some(convert::balance(&model, &balance)),
                    data: Default::default(),
                };
                let _ = sender.try_send(Ok(snapshot));
                model.event_seq
            }
            Some(after) => {
                resume_point(&self.store, &wallet.id, after).await?;
                after
            }
        };
        let watcher = Watcher {
            store: self.store.clone(),
            wallet_id: wallet.id,
            unit: wallet.unit,
            last: after,
            sender,
            draining: self.draining.clone(),
        };
        tokio::spawn(watcher.follow(notices));
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }
}

/// Checks that the events after `after` are all still kept.
async fn resume_point(store: &Store, wallet_id: &str, after: i64) -> Result<()> {
    let latest = events::latest(&store.db, wallet_id).await?.unwrap_or(0);
    let unavailable = |message: String| {
        Error::new(tonic::Code::OutOfRange, Reason::EventsUnavailable, message)
            .with("latest_sequence", latest)
    };
    if after < 0 || after > latest {
        return Err(unavailable(format!(
            "after_sequence {after} is not an event of the wallet (its latest is {latest})"
        )));
    }
    if after < latest {
        let oldest = events::oldest(&store.db, wallet_id)
            .await?
            .unwrap_or(latest);
        if oldest > after + 1 {
            return Err(unavailable(format!(
                "the events after {after} are no longer kept (the oldest kept is {oldest}): \
                 watch without after_sequence for a new snapshot"
            ))
            .with("oldest_sequence", oldest));
        }
    }
    Ok(())
}

/// One watch: sends the wallet's events numbered after `last`, in order.
struct Watcher {
    store: Store,
    wallet_id: String,
    unit: String,
    /// The number of the last event sent.
    last: i64,
    /// Room for [`BUFFER`] events and the status that ends the watch.
    sender: mpsc::Sender<std::result::Result<proto::BalanceEvent, Status>>,
    draining: CancellationToken,
}

impl Watcher {
    async fn follow(
        mut self,
        mut notices: tokio::sync::broadcast::Receiver<std::sync::Arc<[String]>>,
    ) {
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            match self.send_new().await {
                Ok(true) => {}
                Ok(false) => return,
                Err(err) => {
                    let status = status(err.with("after_sequence", self.last));
                    let _ = self.sender.try_send(Err(status));
                    return;
                }
            }
            // Wait for a reason to read again.
            loop {
                tokio::select! {
                    _ = self.sender.closed() => return,
                    _ = self.draining.cancelled() => {
                        let err = Error::new(
                            tonic::Code::Unavailable,
                            Reason::Unavailable,
                            format!(
                                "allot is shutting down: watch again with after_sequence {}",
                                self.last
                            ),
                        )
                        .with("after_sequence", self.last);
                        let _ = self.sender.try_send(Err(status(err)));
                        return;
                    }
                    notice = notices.recv() => match notice {
                        Ok(wallets) if !wallets.contains(&self.wallet_id) => continue,
                        Ok(_) | Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => return,
                    },
                    _ = poll.tick() => break,
                }
            }
        }
    }

    /// Sends every event after `last`. `Ok(false)`: the watch is over (the reader left, or
    /// lagged and was told so).
    async fn send_new(&mut self) -> Result<bool> {
        loop {
            let page = events::after(&self.store.db, &self.wallet_id, self.last, PAGE).await?;
            let full = page.len() as u64 == PAGE;
            for event in page {
                if event.sequence != self.last + 1 {
                    // Numbers have no gaps when written: the missing ones were pruned.
                    return Err(Error::new(
                        tonic::Code::OutOfRange,
                        Reason::EventsUnavailable,
                        format!(
                            "the events after {} are no longer kept (the next kept is {}): \
                             watch without after_sequence for a new snapshot",
                            self.last, event.sequence
                        ),
                    )
                    .with("oldest_sequence", event.sequence));
                }
                if self.sender.capacity() <= 1 {
                    let last = self.last;
                    let lagged = Error::new(
                        tonic::Code::ResourceExhausted,
                        Reason::WatchLagged,
                        format!(
                            "the reader fell more than {BUFFER} events behind: watch again \
                             with after_sequence {last}"
                        ),
                    )
                    .with("after_sequence", last);
                    let _ = self.sender.try_send(Err(status(lagged)));
                    return Ok(false);
                }
                let message = balance_event(&event, &self.unit);
                if self.sender.try_send(Ok(message)).is_err() {
                    return Ok(false);
                }
                self.last = event.sequence;
            }
            if !full {
                return Ok(true);
            }
        }
    }
}

/// An event as the wire carries it.
pub fn balance_event(event: &event::Model, unit: &str) -> proto::BalanceEvent {
    let amount = |micros: i64| Amount::from_micros(micros).to_string();
    proto::BalanceEvent {
        id: event.id.clone(),
        sequence: event.sequence,
        r#type: sea_orm::ActiveEnum::to_value(&event.event_type),
        wallet_id: event.wallet_id.clone(),
        account_id: event.account_id.clone(),
        time: Some(convert::timestamp(event.time)),
        balance: Some(proto::Balance {
            wallet_id: event.wallet_id.clone(),
            unit: unit.to_string(),
            posted: amount(event.posted),
            reserved: amount(event.reserved),
            available: amount(event.available),
            overdraft_limit: amount(event.overdraft_limit),
            crossed_thresholds: Vec::new(),
        }),
        data: event.data.0.clone(),
    }
}
