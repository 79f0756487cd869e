//! Evaluation: a batch's operations applied in arrival order to the state loaded under the
//! batch's locks. A pure function of (state, operations, now, prices) — no I/O — so it is
//! property-tested without a database (`tests.rs`). Money rules come from `domain`; this
//! file turns their movements into ledger entries (hash-chained per wallet) and rows.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;

use super::{
    SYSTEM_ACTOR,
    ops::{Encode, Op, Outcome},
    rows::{domain_schedule, wallet_state},
};
use crate::{
    domain::{
        AccountState, Action, Amount, Burn, GrantKind, HoldState, Lot, LotStatus, Movement,
        MovementKind, Rollover, RolloverPolicy, Step, WalletState, check_caller_cap,
        refund_returns, wallet::DAY_MICROS,
    },
    error::{Error, Reason, Result},
    store::{
        accounts, audit, chain,
        columns::{Burns, Price, StoredBurn, StringMap, Thresholds},
        entity::{
            audit_event, event, event::EventType, grant, idempotency_key, reservation, schedule,
            transaction, wallet,
        },
        events::{self, Balances, Subject},
        new_id, overrides,
        rate_cards::Card,
        wallet_cache::Rows,
    },
};

/// What an entry records besides the movement itself.
#[derive(Debug, Clone, Default)]
pub(super) struct EntryContext {
    actor: String,
    request_id: String,
    request_type: String,
    quantities: StringMap,
    metadata: BTreeMap<String, String>,
    rate_card_version: Option<i64>,
    provider_cost: String,
    ref_id: Option<String>,
    reason: String,
    /// The account override that priced the request, if one did.
    override_id: Option<String>,
}

impl EntryContext {
    fn system() -> Self {
        EntryContext {
            actor: SYSTEM_ACTOR.to_string(),
            ..Default::default()
        }
    }
}

/// Grant fields the domain does not carry, for grants created in this batch.
#[derive(Debug, Clone)]
pub(super) struct GrantTemplate {
    /// Units the grant was created with (an allotment plus what rolled into it).
    amount: i64,
    kind: GrantKind,
    contract_ref: String,
    rolled_over: i64,
}

/// A wallet loaded (and locked) for the batch, with what the batch did to it.
pub(super) struct Loaded {
    pub(super) model: wallet::Model,
    /// The account's state as of the wallet lock (for ACCOUNT_NOT_ACTIVE).
    pub(super) account_state: AccountState,
    pub(super) state: WalletState,
    /// Running posted balance and chain head: each new entry continues from them.
    pub(super) posted: i64,
    pub(super) last_hash: String,
    /// Time of the latest entry: entries are stamped no earlier (clock skew between
    /// replicas, or a schedule created with a start in the past, cannot reorder history).
    pub(super) last_time: i64,
    pub(super) grants: HashMap<String, grant::Model>,
    pub(super) new_grants: HashMap<String, GrantTemplate>,
    pub(super) void_reasons: HashMap<String, String>,
    pub(super) holds: HashMap<String, reservation::Model>,
    pub(super) new_holds: Vec<reservation::Model>,
    /// Holds resolved in this batch: state, captured units, time.
    pub(super) resolved: HashMap<String, (HoldState, Option<i64>, i64)>,
    pub(super) schedules: HashMap<String, schedule::Model>,
    pub(super) new_schedules: Vec<schedule::Model>,
    pub(super) thresholds: Vec<Amount>,
    pub(super) entries: Vec<transaction::Model>,
    /// Audit events of the batch's voids and adjustments.
    pub(super) audits: Vec<audit_event::Model>,
    /// The wallet's events of the batch, numbered on from `event_seq` (the last number).
    pub(super) events: Vec<event::Model>,
    pub(super) event_seq: i64,
    /// `available` when thresholds were last looked at (`notice`).
    noticed: i64,
    /// What counted against the daily and monthly caps then (`None`: not looked at yet).
    noticed_use: Option<[i64; 2]>,
}

impl Loaded {
    /// A wallet as stored (its row and the rows `load.rs` reads with it), nothing done yet.
    pub(super) fn new(model: wallet::Model, own: Rows) -> Self {
        let grant_refs: Vec<&grant::Model> = own.grants.iter().collect();
        let hold_refs: Vec<&reservation::Model> = own.holds.iter().collect();
        let schedule_refs: Vec<&schedule::Model> = own.schedules.iter().collect();
        let mut state = wallet_state(&model, &grant_refs, &hold_refs, &schedule_refs);
        // A closed account is granted no more periods (`domain::account_state`).
        state.schedules_paused = !own.account_state.allows(Action::SchedulePeriod);
        Loaded {
            account_state: own.account_state,
            posted: model.posted,
            last_hash: model.last_hash.clone(),
            last_time: model.last_entry_time,
            grants: own.grants.into_iter().map(|g| (g.id.clone(), g)).collect(),
            new_grants: HashMap::new(),
            void_reasons: HashMap::new(),
            holds: own.holds.into_iter().map(|h| (h.id.clone(), h)).collect(),
            new_holds: Vec::new(),
            resolved: HashMap::new(),
            schedules: own
                .schedules
                .into_iter()
                .map(|s| (s.id.clone(), s))
                .collect(),
            new_schedules: Vec::new(),
            thresholds: model.low_balance_thresholds.0.clone(),
            entries: Vec::new(),
            audits: Vec::new(),
            events: Vec::new(),
            event_seq: model.event_seq,
            noticed: Balances {
                posted: model.posted,
                reserved: state.reserved().micros(),
                overdraft_limit: state.overdraft_limit.micros(),
            }
            .available(),
            noticed_use: None,
            state,
            model,
        }
    }

    /// Turns a movement into a ledger entry, chained after the wallet's previous one.
    fn record(&mut self, movement: Movement, ctx: &EntryContext) -> transaction::Model {
        // The domain keeps Σ remaining + overdraft within an Amount (headroom), so this
        // cannot overflow; if it ever did, the operation fails alone (store/batcher.rs).
        self.posted = self
            .posted
            .checked_add(movement.delta)
            .expect("posted balance within its bound");
        let time = movement.time.max(self.last_time);
        self.last_time = time;
        let mut burns: Vec<StoredBurn> = movement.burns.iter().map(StoredBurn::from).collect();
        if burns.is_empty()
            && let Some(grant_id) = &movement.grant_id
            && let Some(lot) = self.state.lots.iter().find(|l| &l.grant_id == grant_id)
        {
            // Grant-level entries carry the grant's price, so every entry has a money value.
            burns.push(StoredBurn::from(&Burn {
                grant_id: Some(grant_id.clone()),
                units: movement.units,
                unit_price: lot.unit_price,
                currency: lot.currency.clone(),
            }));
        }
        // A release no capture or release asked for: the hold expired.
        let mut expired_hold = false;
        if movement.kind == MovementKind::Release
            && let Some(hold) = &movement.hold_id
            && !self.resolved.contains_key(hold)
        {
            self.resolved
                .insert(hold.clone(), (HoldState::Expired, None, movement.time));
            expired_hold = true;
        }
        if let Some(template) = movement
            .grant_id
            .as_ref()
            .and_then(|id| self.new_grants.get_mut(id))
        {
            template.rolled_over += movement.rolled_over.micros();
        }
        let mut metadata = ctx.metadata.clone();
        if movement.rolled_over.is_positive() {
            metadata.insert("rolled_over".into(), movement.rolled_over.to_string());
        }
        let mut entry = transaction::Model {
            seq: 0,
            id: new_id("txn"),
            kind: movement.kind,
            wallet_id: self.model.id.clone(),
            account_id: self.model.account_id.clone(),
            units: movement.units.micros(),
            balance_after: self.posted,
            request_type: ctx.request_type.clone(),
            quantities: ctx.quantities.clone(),
            rate_card_version: ctx.rate_card_version,
            request_id: ctx.request_id.clone(),
            actor: ctx.actor.clone(),
            metadata: StringMap(metadata),
            burns: Burns(burns),
            provider_cost: ctx.provider_cost.clone(),
            grant_id: movement.grant_id.clone(),
            create_time: time,
            delta: movement.delta,
            ref_id: movement.hold_id.clone().or_else(|| ctx.ref_id.clone()),
            reason: ctx.reason.clone(),
            hash: String::new(),
            prev_hash: self.last_hash.clone(),
            override_id: ctx.override_id.clone(),
        };
        entry.hash = chain::entry_hash(&entry);
        self.last_hash = entry.hash.clone();
        self.entries.push(entry.clone());
        self.entry_events(&entry, &movement, expired_hold);
        entry
    }

    /// The events of a new entry: `balance.changed`, and what it means when it is one.
    fn entry_events(&mut self, entry: &transaction::Model, movement: &Movement, expired: bool) {
        let units = Amount::from_micros(entry.units).to_string();
        let mut data = vec![
            ("transaction_id", entry.id.clone()),
            ("kind", sea_orm::ActiveEnum::to_value(&entry.kind)),
            ("units", units.clone()),
            ("delta", Amount::from_micros(entry.delta).to_string()),
        ];
        if let Some(id) = &entry.ref_id {
            data.push(("reference_id", id.clone()));
        }
        if let Some(id) = &entry.grant_id {
            data.push(("grant_id", id.clone()));
        }
        self.emit(EventType::BalanceChanged, entry.create_time, &data);
        let about = |key: &'static str, id: &Option<String>| {
            vec![
                (key, id.clone().unwrap_or_default()),
                ("transaction_id", entry.id.clone()),
                ("units", units.clone()),
            ]
        };
        match movement.kind {
            MovementKind::Grant => {
                let lot = entry
                    .grant_id
                    .as_ref()
                    .and_then(|id| self.state.lots.iter().find(|l| &l.grant_id == id));
                let (expiry, period) =
                    lot.map_or((None, None), |l| (l.expire_time, l.period.clone()));
                let mut data = about("grant_id", &entry.grant_id);
                if let Some(expiry) = expiry {
                    data.push(("expire_time", events::rfc3339(expiry)));
                }
                self.emit(EventType::GrantActivated, entry.create_time, &data);
                if let Some((schedule_id, index)) = period {
                    let mut data = about("grant_id", &entry.grant_id);
                    data.push(("schedule_id", schedule_id));
                    data.push(("period_index", index.to_string()));
                    self.emit(EventType::PeriodGranted, entry.create_time, &data);
                }
            }
            MovementKind::Expire => self.emit(
                EventType::GrantExpired,
                entry.create_time,
                &about("grant_id", &entry.grant_id),
            ),
            MovementKind::Release if expired => self.emit(
                EventType::HoldExpired,
                entry.create_time,
                &about("reservation_id", &movement.hold_id),
            ),
            _ => {}
        }
    }

    /// The balances now, with the running posted balance (the entries written so far).
    fn balances(&self) -> Balances {
        Balances {
            posted: self.posted,
            reserved: self.state.reserved().micros(),
            overdraft_limit: self.state.overdraft_limit.micros(),
        }
    }

    /// Records one event of the wallet, numbered next, with the balances as they are now.
    fn emit(&mut self, event_type: EventType, time: i64, data: &[(&str, String)]) {
        self.event_seq += 1;
        let subject = Subject {
            wallet_id: &self.model.id,
            account_id: &self.model.account_id,
            sequence: self.event_seq,
            balances: self.balances(),
        };
        let event = events::event(subject, event_type, time.max(self.last_time), data);
        self.events.push(event);
    }

    /// Events for the low-balance thresholds `available` crossed since it was last looked
    /// at (down: to or below; up: above again), and for its falling to zero or below.
    pub(super) fn notice(&mut self, now: i64) {
        self.notice_caps(now);
        let (before, after) = (self.noticed, self.balances().available());
        if before == after {
            return;
        }
        self.noticed = after;
        let mut thresholds: Vec<i64> = self.thresholds.iter().map(|t| t.micros()).collect();
        // Crossings in the order the balance passed them: falling, the highest first.
        thresholds.sort_unstable();
        if after < before {
            thresholds.reverse();
        }
        for threshold in thresholds {
            let direction = match (before > threshold, after > threshold) {
                (true, false) => "down",
                (false, true) => "up",
                _ => continue,
            };
            self.emit(
                EventType::ThresholdCrossed,
                now,
                &[
                    ("threshold", Amount::from_micros(threshold).to_string()),
                    ("direction", direction.to_string()),
                    (
                        "previous_available",
                        Amount::from_micros(before).to_string(),
                    ),
                ],
            );
        }
        if before > 0 && after <= 0 {
            self.emit(
                EventType::Depleted,
                now,
                &[(
                    "previous_available",
                    Amount::from_micros(before).to_string(),
                )],
            );
        }
    }

    /// `spend_cap.reached` when what counts against a cap (the period's spend and the holds)
    /// came up to it. First looked at after the due events of the batch's first operation,
    /// which only free what counts (expired holds), so no crossing is missed.
    fn notice_caps(&mut self, now: i64) {
        let uses = self.state.cap_use(now);
        let after = uses.map(|(_, _, used)| used.micros());
        let Some(before) = self.noticed_use.replace(after) else {
            return;
        };
        for (i, (period, cap, used)) in uses.into_iter().enumerate() {
            let Some(cap) = cap else { continue };
            if before[i] < cap.micros() && after[i] >= cap.micros() {
                self.emit(
                    EventType::SpendCapReached,
                    now,
                    &[
                        ("period", period.to_string()),
                        ("cap", cap.to_string()),
                        ("used", used.to_string()),
                    ],
                );
            }
        }
    }

    /// Applies every due event up to `now`, recording each.
    pub(super) fn advance(&mut self, now: i64) {
        let mut created = Vec::new();
        let mut new_grant_id = || {
            let id = new_id("grt");
            created.push(id.clone());
            id
        };
        let steps = self.state.advance_steps(now, &mut new_grant_id);
        for id in created {
            let Some(lot) = self.state.lots.iter().find(|l| l.grant_id == id) else {
                continue;
            };
            let amount = lot.remaining.micros() + lot.repaid.micros();
            let (kind, contract_ref) = lot
                .period
                .as_ref()
                .and_then(|(schedule_id, _)| self.schedule_model(schedule_id))
                .map(|s| (s.kind, s.contract_ref.clone()))
                .unwrap_or_else(|| (GrantKind::Contract, String::new()));
            self.new_grants.insert(
                id,
                GrantTemplate {
                    amount,
                    kind,
                    contract_ref,
                    rolled_over: 0,
                },
            );
        }
        let system = EntryContext::system();
        for step in steps {
            match step {
                Step::Move(movement) => {
                    self.record(movement, &system);
                }
                Step::ExpiryNotice {
                    grant_id,
                    time,
                    expire_time,
                    remaining,
                } => {
                    let days = self.state.expiry_notice / DAY_MICROS;
                    self.emit(
                        EventType::GrantExpiring,
                        time,
                        &[
                            ("grant_id", grant_id),
                            ("expire_time", events::rfc3339(expire_time)),
                            ("units", remaining.to_string()),
                            ("notice_days", days.to_string()),
                        ],
                    );
                }
            }
        }
        self.notice(now);
    }

    fn schedule_model(&self, id: &str) -> Option<&schedule::Model> {
        self.schedules
            .get(id)
            .or_else(|| self.new_schedules.iter().find(|s| s.id == id))
    }
}

/// Everything a batch's operations are evaluated against, read under the batch's locks
/// (`load.rs`), and — as evaluation goes — what they did to it.
pub(super) struct Batch {
    /// The batch's time: read once every lock was held.
    pub now: i64,
    /// The rate card in force at `now` (loaded only when an operation needs a price).
    pub card: Option<Card>,
    /// Every account override record (loaded with the card), and the ancestry (root first)
    /// of the batch's accounts when there are any.
    pub overrides: std::sync::Arc<overrides::Overrides>,
    pub ancestry: HashMap<String, Vec<String>>,
    /// Account id → state, for every account the batch names.
    pub accounts: HashMap<String, AccountState>,
    /// (account, unit) → wallet id, for debits and holds.
    pub by_account_unit: HashMap<(String, String), String>,
    pub wallets: BTreeMap<String, Loaded>,
    /// Refunded entries and how much of each was refunded so far.
    pub refunded: HashMap<String, (transaction::Model, i64)>,
    /// The stored idempotency records of the batch's keys, by (scope, request_id); records
    /// of operations that succeed in this batch are added as they go.
    pub records: HashMap<(String, String), idempotency_key::Model>,
}

/// A request's price and what set it.
struct Priced<'a> {
    units: Amount,
    card: &'a Card,
    provider_cost: String,
    override_id: Option<String>,
}

/// What evaluation decided: one outcome per operation, and the idempotency records of the
/// ones that succeeded (to be written with the batch's other rows).
pub(super) struct Evaluated {
    pub outcomes: Vec<Result<Outcome>>,
    pub records: Vec<idempotency_key::Model>,
}

/// ACCOUNT_NOT_ACTIVE unless the account's state allows `op` (`domain::account_state`).
fn check_state(op: &Op, account_id: &str, state: AccountState) -> Result<()> {
    match op.action() {
        Some(action) => accounts::require_state(account_id, state, action),
        None => Ok(()),
    }
}

impl Batch {
    /// Evaluates `ops` in arrival order. A request answered before (its key has a record)
    /// replays that answer; every other operation sees the state the previous ones left,
    /// and one that is refused leaves none of its own.
    pub(super) fn evaluate_all(&mut self, ops: &[Op], encode: Encode) -> Evaluated {
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut records = Vec::new();
        for op in ops {
            let key = op.key();
            let record_key = key.map(|k| (k.scope.clone(), k.request_id.clone()));
            if let (Some(key), Some(record)) =
                (key, record_key.as_ref().and_then(|k| self.records.get(k)))
            {
                outcomes.push(
                    key.check(record)
                        .map(|()| Outcome::Replayed(record.response.clone())),
                );
                continue;
            }
            let result = self.evaluate(op);
            if let (Ok(outcome), Some(key), Some(record_key)) = (&result, key, record_key) {
                let record = idempotency_key::Model {
                    scope: key.scope.clone(),
                    request_id: key.request_id.clone(),
                    method: key.method.to_string(),
                    fingerprint: key.fingerprint.clone(),
                    response: encode(outcome),
                    create_time: self.now,
                };
                self.records.insert(record_key, record.clone());
                records.push(record);
            }
            outcomes.push(result);
        }
        for wallet in self.wallets.values_mut() {
            // New schedules may have periods due already.
            wallet.advance(self.now);
        }
        Evaluated { outcomes, records }
    }

    /// Runs one operation on its wallet. Every operation checks before it changes anything
    /// (the domain's refusals leave the state untouched — property-tested), so a rejected
    /// operation leaves no trace in the batch.
    fn evaluate(&mut self, op: &Op) -> Result<Outcome> {
        // The account's state is checked once: for debits and holds (which name an account)
        // before their wallet is resolved, for the rest on the wallet's own account.
        let (wallet_id, state_checked) = match (op.wallet_id(), op.account_unit()) {
            (Some(id), _) => (id.to_string(), false),
            (None, Some((account_id, unit))) => {
                let state = self
                    .accounts
                    .get(account_id)
                    .ok_or_else(|| Error::not_found("account", account_id))?;
                check_state(op, account_id, *state)?;
                let wallet_id = self
                    .by_account_unit
                    .get(&(account_id.to_string(), unit.to_string()))
                    .cloned()
                    .ok_or_else(|| {
                        Error::not_found("wallet", &format!("{account_id}/{unit}"))
                            .with("account_id", account_id)
                            .with("unit", unit)
                    })?;
                (wallet_id, true)
            }
            (None, None) => return Err(Error::internal("operation names no wallet")),
        };
        let Some(mut wallet) = self.wallets.remove(&wallet_id) else {
            return Err(Error::not_found("wallet", &wallet_id));
        };
        let result = if state_checked {
            Ok(())
        } else {
            check_state(op, &wallet.model.account_id, wallet.account_state)
        }
        .and_then(|()| self.run(op, &mut wallet));
        wallet.notice(self.now);
        self.wallets.insert(wallet_id, wallet);
        result
    }

    /// The price of a request of `account_id`: its override in force, else the card's rate
    /// (route and provider cost are always the card's). A request type the card does not
    /// price is unpriced even with an override: the card names what exists.
    fn price(
        &self,
        account_id: &str,
        request_type: &str,
        quantities: &BTreeMap<String, Decimal>,
    ) -> Result<Priced<'_>> {
        let unpriced = || {
            Error::precondition(
                Reason::UnpricedRequestType,
                format!("no rate in force for request type `{request_type}`"),
            )
            .with("request_type", request_type)
        };
        let card = self.card.as_ref().ok_or_else(unpriced)?;
        let rate = card.rate(request_type).ok_or_else(unpriced)?;
        let ancestry: Vec<&str> = self
            .ancestry
            .get(account_id)
            .map(|ids| ids.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let (override_id, units) = match self.overrides.in_force(&ancestry, request_type, self.now)
        {
            Some((record, contract)) => (Some(record.id.clone()), contract.price(quantities)?),
            None => (None, rate.price(quantities)?),
        };
        Ok(Priced {
            units,
            card,
            provider_cost: rate.provider_cost.clone(),
            override_id,
        })
    }

    fn run(&mut self, op: &Op, wallet: &mut Loaded) -> Result<Outcome> {
        let now = self.now;
        match op {
            Op::Debit(op) => {
                let Priced {
                    units,
                    card,
                    provider_cost,
                    override_id,
                } = self.price(&wallet.model.account_id, &op.request_type, &op.quantities)?;
                check_caller_cap(units, op.max_units)?;
                let version = card.version;
                let movement = wallet.state.debit(units, now)?;
                let ctx = EntryContext {
                    actor: op.actor.clone(),
                    request_id: op.key.request_id.clone(),
                    request_type: op.request_type.clone(),
                    quantities: StringMap::quantities(&op.quantities),
                    metadata: op.metadata.clone(),
                    rate_card_version: Some(version),
                    provider_cost,
                    override_id,
                    ..Default::default()
                };
                Ok(Outcome::Charged(wallet.record(movement, &ctx)))
            }
            Op::Grant(op) => {
                // The API checked this against its own clock; the batch's `now` is later.
                if op
                    .expire_time
                    .is_some_and(|expiry| expiry <= op.effective_time.unwrap_or(now).max(now))
                {
                    return Err(Error::invalid(
                        Reason::InvalidField,
                        "grant.expire_time",
                        "must lie after now and after effective_time",
                    ));
                }
                wallet.state.check_headroom(op.amount)?;
                let id = new_id("grt");
                let lot = Lot {
                    grant_id: id.clone(),
                    remaining: op.amount,
                    priority: op.priority,
                    effective_time: op.effective_time.unwrap_or(now),
                    expire_time: op.expire_time,
                    seq: now,
                    unit_price: op.unit_price,
                    currency: op.currency.clone(),
                    status: LotStatus::Pending,
                    repaid: Amount::ZERO,
                    period: None,
                    expiry_noticed: false,
                };
                wallet.new_grants.insert(
                    id.clone(),
                    GrantTemplate {
                        amount: op.amount.micros(),
                        kind: op.kind,
                        contract_ref: op.contract_ref.clone(),
                        rolled_over: 0,
                    },
                );
                if let Some(movement) = wallet.state.add_grant(lot, now) {
                    let ctx = EntryContext {
                        actor: op.actor.clone(),
                        request_id: op.key.request_id.clone(),
                        ..Default::default()
                    };
                    wallet.record(movement, &ctx);
                }
                grant_outcome(wallet, &id, now)
            }
            Op::Reserve(op) => {
                let (units, version) = match op.units {
                    Some(units) => (units, None),
                    None => {
                        let priced =
                            self.price(&wallet.model.account_id, &op.request_type, &op.quantities)?;
                        (priced.units, Some(priced.card.version))
                    }
                };
                let id = new_id("rsv");
                let expire_time = now.saturating_add(op.ttl_micros);
                let movement = wallet.state.reserve(id.clone(), units, expire_time, now)?;
                let model = reservation::Model {
                    id: id.clone(),
                    wallet_id: wallet.model.id.clone(),
                    account_id: wallet.model.account_id.clone(),
                    units: units.micros(),
                    state: HoldState::Open,
                    expire_time,
                    request_type: op.request_type.clone(),
                    quantities: StringMap::quantities(&op.quantities),
                    rate_card_version: version,
                    captured_units: None,
                    request_id: op.key.request_id.clone(),
                    actor: op.actor.clone(),
                    create_time: now,
                    resolve_time: None,
                };
                wallet.new_holds.push(model.clone());
                let ctx = EntryContext {
                    actor: op.actor.clone(),
                    request_id: op.key.request_id.clone(),
                    request_type: op.request_type.clone(),
                    quantities: StringMap::quantities(&op.quantities),
                    rate_card_version: version,
                    ..Default::default()
                };
                wallet.record(movement, &ctx);
                Ok(Outcome::Reservation(model))
            }
            Op::Capture(op) => {
                let hold = hold_model(wallet, &op.reservation_id)?;
                let (units, version, provider_cost, override_id) = match op.units {
                    Some(units) => (units, hold.rate_card_version, String::new(), None),
                    None => {
                        let priced = self.price(
                            &wallet.model.account_id,
                            &hold.request_type,
                            &op.quantities,
                        )?;
                        let version = Some(priced.card.version);
                        (
                            priced.units,
                            version,
                            priced.provider_cost,
                            priced.override_id,
                        )
                    }
                };
                let movement = wallet.state.capture(&op.reservation_id, units, now)?;
                wallet.resolved.insert(
                    op.reservation_id.clone(),
                    (HoldState::Captured, Some(units.micros()), now),
                );
                let ctx = EntryContext {
                    actor: op.actor.clone(),
                    request_id: op.key.request_id.clone(),
                    request_type: hold.request_type.clone(),
                    quantities: StringMap::quantities(&op.quantities),
                    rate_card_version: version,
                    provider_cost,
                    override_id,
                    ..Default::default()
                };
                Ok(Outcome::Charged(wallet.record(movement, &ctx)))
            }
            Op::Release(op) => {
                let hold = hold_model(wallet, &op.reservation_id)?;
                let movement = wallet.state.release(&op.reservation_id, now)?;
                wallet
                    .resolved
                    .insert(op.reservation_id.clone(), (HoldState::Released, None, now));
                let ctx = EntryContext {
                    actor: op.actor.clone(),
                    request_id: op.key.request_id.clone(),
                    request_type: hold.request_type.clone(),
                    ..Default::default()
                };
                wallet.record(movement, &ctx);
                // The answer shows the hold released (as it was stored, with its new state).
                Ok(Outcome::Reservation(reservation::Model {
                    state: HoldState::Released,
                    ..hold
                }))
            }
            Op::Refund(op) => {
                let (original, done) = self
                    .refunded
                    .get(&op.transaction_id)
                    .cloned()
                    .ok_or_else(|| Error::not_found("transaction", &op.transaction_id))?;
                let burns: Vec<(Option<String>, Amount)> = original
                    .burns
                    .0
                    .iter()
                    .map(|b| {
                        (
                            (!b.grant_id.is_empty()).then(|| b.grant_id.clone()),
                            b.units,
                        )
                    })
                    .collect();
                let charged = Amount::from_micros(original.units);
                let (units, returns) =
                    refund_returns(&burns, charged, Amount::from_micros(done), op.units)
                        .map_err(|r| Error::from(r).with("transaction_id", &original.id))?;
                // Units a debit burnt freed room that a later grant may have filled: the
                // returned units must still fit the wallet's bound.
                wallet.state.check_headroom(units)?;
                let movements = wallet.state.refund(&returns, original.create_time, now);
                let ctx = EntryContext {
                    actor: op.actor.clone(),
                    request_id: op.key.request_id.clone(),
                    request_type: original.request_type.clone(),
                    // The card that priced what is refunded (reports net it there).
                    rate_card_version: original.rate_card_version,
                    ref_id: Some(original.id.clone()),
                    reason: op.reason.clone(),
                    ..Default::default()
                };
                let mut first = None;
                for movement in movements {
                    let entry = wallet.record(movement, &ctx);
                    first.get_or_insert(entry);
                }
                self.refunded.insert(
                    original.id.clone(),
                    (original, done.saturating_add(units.micros())),
                );
                let entry = first.ok_or_else(|| Error::internal("refund recorded nothing"))?;
                Ok(Outcome::Entry(entry))
            }
            Op::Void(op) => {
                let before = wallet
                    .state
                    .lots
                    .iter()
                    .find(|l| l.grant_id == op.grant_id)
                    .map(|l| {
                        serde_json::json!({
                            "remaining": l.remaining.to_string(),
                            "status": sea_orm::ActiveEnum::to_value(&l.status),
                        })
                    });
                let movement = wallet.state.void(&op.grant_id, now)?;
                let actor = audit::Actor {
                    sub: op.actor.clone(),
                    request_id: op.key.request_id.clone(),
                };
                wallet.audits.push(audit::event(
                    audit::GRANT_VOIDED,
                    format!("grants/{}", op.grant_id),
                    Some(wallet.model.account_id.clone()),
                    &actor,
                    now,
                    before,
                    Some(serde_json::json!({
                        "remaining": "0",
                        "status": "VOIDED",
                        "reason": op.reason,
                        "voided_units": movement.units.to_string(),
                    })),
                ));
                wallet
                    .void_reasons
                    .insert(op.grant_id.clone(), op.reason.clone());
                let ctx = EntryContext {
                    actor: op.actor.clone(),
                    request_id: op.key.request_id.clone(),
                    reason: op.reason.clone(),
                    ..Default::default()
                };
                wallet.record(movement, &ctx);
                grant_outcome(wallet, &op.grant_id, now)
            }
            Op::Adjust(op) => {
                let posted_before = Amount::from_micros(wallet.posted);
                let ctx = EntryContext {
                    actor: op.actor.clone(),
                    request_id: op.key.request_id.clone(),
                    reason: op.reason.clone(),
                    ..Default::default()
                };
                let movement = if op.units > 0 {
                    let units = Amount::from_micros(op.units);
                    wallet.state.check_headroom(units)?;
                    let id = new_id("grt");
                    wallet.new_grants.insert(
                        id.clone(),
                        GrantTemplate {
                            amount: units.micros(),
                            kind: GrantKind::Adjustment,
                            contract_ref: String::new(),
                            rolled_over: 0,
                        },
                    );
                    wallet.state.adjust_up(
                        Lot {
                            grant_id: id,
                            remaining: units,
                            priority: 0,
                            effective_time: now,
                            expire_time: None,
                            seq: now,
                            unit_price: Decimal::ZERO,
                            currency: String::new(),
                            status: LotStatus::Pending,
                            repaid: Amount::ZERO,
                            period: None,
                            expiry_noticed: false,
                        },
                        now,
                    )
                } else {
                    let units = Amount::from_micros(op.units.saturating_neg());
                    wallet.state.adjust_down(units, now)?
                };
                let entry = wallet.record(movement, &ctx);
                let actor = audit::Actor {
                    sub: op.actor.clone(),
                    request_id: op.key.request_id.clone(),
                };
                wallet.audits.push(audit::event(
                    audit::BALANCE_ADJUSTED,
                    format!("wallets/{}", wallet.model.id),
                    Some(wallet.model.account_id.clone()),
                    &actor,
                    now,
                    Some(serde_json::json!({"posted": posted_before.to_string()})),
                    Some(serde_json::json!({
                        "posted": Amount::from_micros(wallet.posted).to_string(),
                        "units": Amount::from_micros(op.units).to_string(),
                        "reason": op.reason,
                        "transaction_id": entry.id,
                    })),
                ));
                Ok(Outcome::Entry(entry))
            }
            Op::Schedule(op) => {
                let model = schedule::Model {
                    id: new_id("sch"),
                    wallet_id: wallet.model.id.clone(),
                    account_id: wallet.model.account_id.clone(),
                    amount: op.amount.micros(),
                    period: op.period,
                    start_time: op.start_time,
                    end_time: op.end_time,
                    rollover_policy: match op.rollover {
                        Rollover::None => RolloverPolicy::None,
                        Rollover::Capped(_) => RolloverPolicy::Capped,
                    },
                    rollover_cap: match op.rollover {
                        Rollover::None => None,
                        Rollover::Capped(cap) => Some(cap.micros()),
                    },
                    next_period: 0,
                    kind: op.kind,
                    priority: op.priority,
                    unit_price: Price(op.unit_price),
                    currency: op.currency.clone(),
                    contract_ref: op.contract_ref.clone(),
                    create_time: now,
                };
                wallet.state.schedules.push(domain_schedule(&model));
                wallet.new_schedules.push(model.clone());
                // Periods already due are granted before the batch commits.
                wallet.advance(now);
                let next = wallet
                    .state
                    .schedules
                    .iter()
                    .find(|s| s.id == model.id)
                    .map(|s| s.next_period)
                    .unwrap_or_default();
                Ok(Outcome::Schedule(schedule::Model {
                    next_period: next,
                    ..model
                }))
            }
            Op::UpdateWallet(op) => {
                let changes = &op.changes;
                if let Some(limit) = changes.overdraft_limit {
                    wallet.state.set_overdraft_limit(limit)?;
                }
                if let Some(daily) = changes.daily_spend_cap {
                    wallet.state.caps.daily = daily;
                }
                if let Some(monthly) = changes.monthly_spend_cap {
                    wallet.state.caps.monthly = monthly;
                }
                if let Some(thresholds) = &changes.low_balance_thresholds {
                    wallet.thresholds = thresholds.clone();
                }
                if let Some(days) = changes.grant_expiry_notice_days {
                    wallet.state.expiry_notice = i64::from(days) * DAY_MICROS;
                }
                Ok(Outcome::Wallet {
                    row: updated_wallet(wallet, now),
                    balance: wallet.state.balance(&wallet.thresholds),
                })
            }
            Op::Sweep { .. } => Ok(Outcome::Swept),
        }
    }
}

/// The open hold's stored row (loaded or created in this batch).
fn hold_model(wallet: &Loaded, id: &str) -> Result<reservation::Model> {
    let open = wallet.state.holds.iter().any(|h| h.id == id);
    let model = wallet
        .holds
        .get(id)
        .cloned()
        .or_else(|| wallet.new_holds.iter().find(|h| h.id == id).cloned());
    match model {
        Some(model) if open => Ok(model),
        _ => Err(Error::precondition(
            Reason::ReservationNotOpen,
            format!("reservation `{id}` is no longer open"),
        )
        .with("reservation_id", id)),
    }
}

/// The wallet row with the batch's changes.
pub(super) fn updated_wallet(wallet: &Loaded, now: i64) -> wallet::Model {
    let state = &wallet.state;
    wallet::Model {
        overdraft_limit: state.overdraft_limit.micros(),
        debt: state.debt.micros(),
        reserved: state.reserved().micros(),
        posted: wallet.posted,
        daily_spend_cap: state.caps.daily.map(Amount::micros),
        monthly_spend_cap: state.caps.monthly.map(Amount::micros),
        spent_day: state.spent.day,
        spent_day_units: state.spent.day_units.micros(),
        spent_month: state.spent.month,
        spent_month_units: state.spent.month_units.micros(),
        low_balance_thresholds: Thresholds(wallet.thresholds.clone()),
        next_due_time: state.next_due(),
        last_hash: wallet.last_hash.clone(),
        last_entry_time: wallet.last_time,
        event_seq: wallet.event_seq,
        grant_expiry_notice_days: i32::try_from(state.expiry_notice / DAY_MICROS)
            .unwrap_or(i32::MAX),
        update_time: now,
        ..wallet.model.clone()
    }
}

/// The grant row as it will be after the batch.
pub(super) fn grant_row(wallet: &Loaded, lot: &Lot, now: i64) -> Option<grant::Model> {
    let status = lot.status;
    let void_reason = wallet.void_reasons.get(&lot.grant_id).cloned();
    if let Some(stored) = wallet.grants.get(&lot.grant_id) {
        return Some(grant::Model {
            remaining: lot.remaining.micros(),
            voided: lot.status == LotStatus::Voided,
            status,
            repaid: lot.repaid.micros(),
            void_reason: void_reason.unwrap_or_else(|| stored.void_reason.clone()),
            expiry_noticed: lot.expiry_noticed,
            ..stored.clone()
        });
    }
    let template = wallet.new_grants.get(&lot.grant_id)?;
    Some(grant::Model {
        id: lot.grant_id.clone(),
        wallet_id: wallet.model.id.clone(),
        kind: template.kind,
        amount: template.amount,
        remaining: lot.remaining.micros(),
        priority: lot.priority,
        effective_time: lot.effective_time,
        expire_time: lot.expire_time,
        unit_price: Price(lot.unit_price),
        currency: lot.currency.clone(),
        contract_ref: template.contract_ref.clone(),
        voided: lot.status == LotStatus::Voided,
        create_time: lot.seq.min(now),
        status,
        repaid: lot.repaid.micros(),
        schedule_id: lot.period.as_ref().map(|(s, _)| s.clone()),
        period_index: lot.period.as_ref().map(|(_, k)| *k),
        rolled_over: template.rolled_over,
        void_reason: void_reason.unwrap_or_default(),
        expiry_noticed: lot.expiry_noticed,
    })
}

/// The answer to a grant or void: the grant's row as it will be after the batch.
fn grant_outcome(wallet: &Loaded, id: &str, now: i64) -> Result<Outcome> {
    wallet
        .state
        .lots
        .iter()
        .find(|l| l.grant_id == id)
        .and_then(|lot| grant_row(wallet, lot, now))
        .map(|row| Outcome::Grant { row, now })
        .ok_or_else(|| Error::internal(format!("grant `{id}` left no row")))
}

pub(super) fn next_period(wallet: &Loaded, schedule_id: &str, stored: i64) -> i64 {
    wallet
        .state
        .schedules
        .iter()
        .find(|s| s.id == schedule_id)
        .map_or(stored, |s| s.next_period)
}

#[cfg(any(test, fuzzing))]
mod fixture;
#[cfg(any(test, fuzzing))]
pub(super) mod fuzz;
#[cfg(test)]
mod tests;
