//! LedgerService.WatchBalance: a wallet's balance — or each of an account's wallets' — then
//! their events as they are committed.
//!
//! The events come from the outbox (`store/events.rs`), read by number: a watcher keeps, per
//! wallet, the last number it sent and reads what follows, so it cannot skip or repeat one
//! whichever replica wrote it. It reads when this process commits events of a wallet it
//! follows (`events::Bus`, after the commit is durable) and every [`POLL`] (events committed
//! by other replicas; and, watching an account, wallets created since). Its buffer is
//! bounded: a reader [`BUFFER`] events behind that takes none for [`LAG_GRACE`] is ended
//! with `WATCH_LAGGED`.

use std::{
    collections::{BTreeMap, HashMap},
    pin::Pin,
    time::Duration,
};

use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};

use super::{Ctx, convert, status};
use crate::{
    domain::Amount,
    error::{Error, Reason, Result},
    proto,
    store::{
        Store,
        entity::{event, wallet},
        events, ledger,
    },
};

/// Events a reader may fall behind by before its watch is ended …
pub const BUFFER: usize = 1024;
/// … when it then takes none of them for this long (a reader catching up on stored events
/// reads slower than the database gives them, but it reads).
pub const LAG_GRACE: Duration = Duration::from_secs(1);
/// How often a watcher looks for events other replicas committed.
pub const POLL: Duration = Duration::from_millis(250);
/// Events read from the database at a time.
const PAGE: u64 = 256;
/// The most wallets one watch of an account follows.
pub const MAX_WALLETS: usize = 100;
/// The type of the first message of a watch without `after_sequence`.
pub const SNAPSHOT: &str = "balance.snapshot";

pub type WatchStream =
    Pin<Box<dyn Stream<Item = std::result::Result<proto::BalanceEvent, Status>> + Send>>;

type Sender = mpsc::Sender<std::result::Result<proto::BalanceEvent, Status>>;

impl Ctx {
    pub(super) async fn watch_balance(
        &self,
        request: Request<proto::WatchBalanceRequest>,
    ) -> Result<WatchStream> {
        let caller = super::access::caller(&request)?;
        let r = request.into_inner();
        let (account, wallets, resume) = if r.all_wallets {
            if !(r.wallet_id.is_empty() && r.unit.is_empty() && r.after_sequence.is_none()) {
                return Err(Error::invalid(
                    Reason::InvalidField,
                    "all_wallets",
                    "names an account (account_id or external_id) and every unit; resume \
                     with after_sequences, not after_sequence",
                ));
            }
            let account = self
                .resolve_account(&caller, &r.account_id, &r.external_id)
                .await?;
            let wallets = account_wallets(&self.store, &account.id).await?;
            for id in r.after_sequences.keys() {
                if !wallets.iter().any(|w| &w.id == id) {
                    return Err(Error::invalid(
                        Reason::InvalidField,
                        "after_sequences",
                        format!("`{id}` is not a wallet of account `{}`", account.id),
                    ));
                }
            }
            let resume: HashMap<String, i64> = r.after_sequences.into_iter().collect();
            (Some(account.id), wallets, resume)
        } else {
            if !r.after_sequences.is_empty() {
                return Err(Error::invalid(
                    Reason::InvalidField,
                    "after_sequences",
                    "only with all_wallets: resume one wallet with after_sequence",
                ));
            }
            let wallet = if r.wallet_id.is_empty() {
                self.resolve_wallet(&caller, &r.account_id, &r.external_id, &r.unit)
                    .await?
                    .1
            } else {
                if !(r.account_id.is_empty() && r.external_id.is_empty() && r.unit.is_empty()) {
                    return Err(Error::invalid(
                        Reason::InvalidField,
                        "wallet_id",
                        "name the wallet by wallet_id, or by account_id / external_id and \
                         unit; not both",
                    ));
                }
                self.wallet_in_scope(&caller, &r.wallet_id).await?
            };
            let resume = r
                .after_sequence
                .map(|after| (wallet.id.clone(), after))
                .into_iter()
                .collect();
            (None, vec![wallet], resume)
        };
        // Subscribed before anything is read: a commit after the read is noticed.
        let notices = self.store.events.subscribe();
        let (sender, receiver) = mpsc::channel(BUFFER + 1);
        let mut followed = Vec::new();
        for wallet in wallets {
            let last = match resume.get(&wallet.id) {
                Some(&after) => {
                    resume_point(&self.store, &wallet.id, after).await?;
                    after
                }
                None => {
                    let now = self.store.clock.now_micros();
                    let (model, balance) =
                        ledger::wallet_balance(&self.store, &wallet.id, now).await?;
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
            };
            followed.push(Followed {
                wallet_id: wallet.id,
                unit: wallet.unit,
                last,
            });
        }
        let watcher = Watcher {
            store: self.store.clone(),
            account,
            followed,
            sender,
            draining: self.draining.clone(),
        };
        tokio::spawn(watcher.follow(notices));
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }
}

/// The wallets of an account, at most [`MAX_WALLETS`].
async fn account_wallets(store: &Store, account_id: &str) -> Result<Vec<wallet::Model>> {
    let wallets =
        crate::store::accounts::wallets_of(&store.db, account_id, MAX_WALLETS as u64 + 1).await?;
    if wallets.len() > MAX_WALLETS {
        return Err(Error::precondition(
            Reason::TooManyEntries,
            format!(
                "account `{account_id}` has more than {MAX_WALLETS} wallets: watch them by \
                 wallet_id"
            ),
        ));
    }
    Ok(wallets)
}

/// Checks that the events after `after` are all still kept.
async fn resume_point(store: &Store, wallet_id: &str, after: i64) -> Result<()> {
    let latest = events::latest(&store.db, wallet_id).await?.unwrap_or(0);
    let unavailable = |message: String| {
        Error::new(tonic::Code::OutOfRange, Reason::EventsUnavailable, message)
            .with("wallet_id", wallet_id)
            .with("latest_sequence", latest)
    };
    if after < 0 || after > latest {
        return Err(unavailable(format!(
            "after_sequence {after} is not an event of wallet `{wallet_id}` (its latest is \
             {latest})"
        )));
    }
    if after < latest {
        let oldest = events::oldest(&store.db, wallet_id)
            .await?
            .unwrap_or(latest);
        if oldest > after + 1 {
            return Err(unavailable(format!(
                "the events of wallet `{wallet_id}` after {after} are no longer kept (the \
                 oldest kept is {oldest}): watch without after_sequence for a new snapshot"
            ))
            .with("oldest_sequence", oldest));
        }
    }
    Ok(())
}

/// A wallet a watch follows, and the number of the last event sent of it.
struct Followed {
    wallet_id: String,
    unit: String,
    last: i64,
}

/// One watch: sends each followed wallet's events numbered after its `last`, in order.
struct Watcher {
    store: Store,
    /// Watching an account: its wallets created since are followed from their first event.
    account: Option<String>,
    followed: Vec<Followed>,
    /// Room for [`BUFFER`] events and the status that ends the watch.
    sender: Sender,
    draining: CancellationToken,
}

impl Watcher {
    async fn follow(
        mut self,
        mut notices: tokio::sync::broadcast::Receiver<std::sync::Arc<[String]>>,
    ) {
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        let mut polled = false;
        loop {
            let read = async {
                if polled {
                    self.discover().await?;
                }
                self.send_new().await
            };
            match read.await {
                Ok(true) => {}
                Ok(false) => return,
                Err(err) => {
                    let _ = self.sender.try_send(Err(status(self.resume_at(err))));
                    return;
                }
            }
            polled = false;
            // Wait for a reason to read again.
            loop {
                tokio::select! {
                    _ = self.sender.closed() => return,
                    _ = self.draining.cancelled() => {
                        let err = Error::new(
                            tonic::Code::Unavailable,
                            Reason::Unavailable,
                            format!(
                                "allot is shutting down: watch again with {}",
                                self.resume_text()
                            ),
                        );
                        let _ = self.sender.try_send(Err(status(self.resume_at(err))));
                        return;
                    }
                    notice = notices.recv() => match notice {
                        Ok(wallets) if !wallets.iter().any(|w| self.follows(w)) => continue,
                        Ok(_) | Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => return,
                    },
                    _ = poll.tick() => {
                        polled = true;
                        break;
                    }
                }
            }
        }
    }

    fn follows(&self, wallet_id: &str) -> bool {
        self.followed.iter().any(|f| f.wallet_id == wallet_id)
    }

    /// Where to resume, as metadata of the status that ends the watch: `after_sequence` of
    /// a one-wallet watch, `after_sequences` (JSON, by wallet id) of an account's.
    fn resume_at(&self, err: Error) -> Error {
        let (field, value) = self.resume();
        err.with(field, value)
    }

    /// The same for people: `after_sequence 5`, `after_sequences {"wal_…":5,…}`.
    fn resume_text(&self) -> String {
        let (field, value) = self.resume();
        format!("{field} {value}")
    }

    fn resume(&self) -> (&'static str, String) {
        match (&self.account, self.followed.as_slice()) {
            (None, [one]) => ("after_sequence", one.last.to_string()),
            _ => {
                let points: BTreeMap<&str, i64> = self
                    .followed
                    .iter()
                    .map(|f| (f.wallet_id.as_str(), f.last))
                    .collect();
                let json = serde_json::to_string(&points).expect("JSON of numbers");
                ("after_sequences", json)
            }
        }
    }

    /// Follows the account's wallets created since, from their first event.
    async fn discover(&mut self) -> Result<()> {
        let Some(account) = &self.account else {
            return Ok(());
        };
        for wallet in account_wallets(&self.store, account).await? {
            if !self.follows(&wallet.id) {
                self.followed.push(Followed {
                    wallet_id: wallet.id,
                    unit: wallet.unit,
                    last: 0,
                });
            }
        }
        Ok(())
    }

    /// Sends every event after each wallet's `last`. `Ok(false)`: the watch is over (the
    /// reader left, or lagged and was told so).
    async fn send_new(&mut self) -> Result<bool> {
        let index: HashMap<String, usize> = self
            .followed
            .iter()
            .enumerate()
            .map(|(i, f)| (f.wallet_id.clone(), i))
            .collect();
        loop {
            let from: Vec<(&str, i64)> = self
                .followed
                .iter()
                .map(|f| (f.wallet_id.as_str(), f.last))
                .collect();
            let page = events::after_each(&self.store.db, &from, PAGE).await?;
            let full = page.len() as u64 == PAGE;
            for event in page {
                let Some(&i) = index.get(&event.wallet_id) else {
                    continue;
                };
                let last = self.followed[i].last;
                if event.sequence != last + 1 {
                    // Numbers have no gaps when written: the missing ones were pruned.
                    return Err(Error::new(
                        tonic::Code::OutOfRange,
                        Reason::EventsUnavailable,
                        format!(
                            "the events of wallet `{}` after {last} are no longer kept (the \
                             next kept is {}): watch without after_sequence for a new snapshot",
                            event.wallet_id, event.sequence
                        ),
                    )
                    .with("wallet_id", &event.wallet_id)
                    .with("oldest_sequence", event.sequence));
                }
                // Room for this event and the status that may end the watch, waited for up
                // to LAG_GRACE.
                match tokio::time::timeout(LAG_GRACE, self.sender.reserve_many(2)).await {
                    Ok(Ok(mut room)) => {
                        let message = balance_event(&event, &self.followed[i].unit);
                        room.next().expect("two permits").send(Ok(message));
                    }
                    // The reader left.
                    Ok(Err(_)) => return Ok(false),
                    Err(_) => {
                        let lagged = Error::new(
                            tonic::Code::ResourceExhausted,
                            Reason::WatchLagged,
                            format!(
                                "the reader fell more than {BUFFER} events behind: watch \
                                 again with {}",
                                self.resume_text()
                            ),
                        );
                        let _ = self.sender.try_send(Err(status(self.resume_at(lagged))));
                        return Ok(false);
                    }
                }
                self.followed[i].last = event.sequence;
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
