//! Balance rules, burn order and a wallet's whole lifecycle (spec "Balances").
//!
//! * `posted` = Σ remaining of *active* grants − overdraft debt. A grant becomes active at its
//!   `effective_time` (a GRANT movement) and stops counting when it expires (EXPIRE) or is
//!   voided (VOID). Time-driven changes happen only through [`WalletState::advance`], which
//!   applies every due event in time order, so the ledger explains every change of `posted`.
//! * `reserved` = Σ open holds; `available` = posted − reserved + overdraft_limit. A debit,
//!   hold or negative adjustment succeeds only if its units ≤ available (and within the
//!   wallet's spend caps).
//! * Burn order: priority ascending, then earliest `expire_time` (none last), then oldest.
//! * Units a debit takes beyond the grants become debt (never more than the overdraft limit);
//!   the next grant that becomes active repays the debt first and remembers how much it
//!   repaid, so a later refund of overdrawn units knows where they went.
//! * Every mutation returns [`Movement`]s: one per ledger entry, with its signed effect on
//!   `posted` (`delta`). Σ delta always equals the change of `posted`.
//!
//! Everything here is pure: times are microseconds since the Unix epoch, passed in.

use std::cmp::Ordering;

use chrono::{DateTime, Datelike, Months, TimeDelta, Utc};
use rust_decimal::Decimal;
use sea_orm::{DeriveActiveEnum, EnumIter, prelude::StringLen};

use super::amount::Amount;

pub const DAY_MICROS: i64 = 86_400_000_000;
/// How many days before an active grant expires a new wallet is told (`grant.expiring`).
pub const DEFAULT_EXPIRY_NOTICE_DAYS: i32 = 7;
/// The longest notice a wallet may ask for (ten years).
pub const MAX_EXPIRY_NOTICE_DAYS: i32 = 3650;

/// Where a grant is in its life (stored as `PENDING`, `ACTIVE`, `EXPIRED`, `VOIDED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum LotStatus {
    /// Created with a future `effective_time`; does not count yet.
    #[sea_orm(string_value = "PENDING")]
    Pending,
    /// Counts toward `posted`.
    #[sea_orm(string_value = "ACTIVE")]
    Active,
    #[sea_orm(string_value = "EXPIRED")]
    Expired,
    #[sea_orm(string_value = "VOIDED")]
    Voided,
}

/// What a grant is for (stored as `CONTRACT`, `PURCHASE`, `PROMOTIONAL`, `ADJUSTMENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum GrantKind {
    #[sea_orm(string_value = "CONTRACT")]
    Contract,
    #[sea_orm(string_value = "PURCHASE")]
    Purchase,
    #[sea_orm(string_value = "PROMOTIONAL")]
    Promotional,
    #[sea_orm(string_value = "ADJUSTMENT")]
    Adjustment,
}

/// Where a hold is in its life (stored as `OPEN`, `CAPTURED`, `RELEASED`, `EXPIRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum HoldState {
    #[sea_orm(string_value = "OPEN")]
    Open,
    #[sea_orm(string_value = "CAPTURED")]
    Captured,
    #[sea_orm(string_value = "RELEASED")]
    Released,
    #[sea_orm(string_value = "EXPIRED")]
    Expired,
}

/// A grant as the balance rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot {
    pub grant_id: String,
    pub remaining: Amount,
    pub priority: i32,
    pub effective_time: i64,
    pub expire_time: Option<i64>,
    /// Creation order (oldest first): the last tie-breaker of the burn order.
    pub seq: i64,
    pub unit_price: Decimal,
    pub currency: String,
    pub status: LotStatus,
    /// Overdraft debt this grant paid off when it became active.
    pub repaid: Amount,
    /// The allotment schedule and period that created this grant, if any.
    pub period: Option<(String, i64)>,
    /// Whether the wallet was told that this grant is about to expire ([`Step::ExpiryNotice`]).
    pub expiry_noticed: bool,
}

impl Lot {
    pub fn counts(&self) -> bool {
        self.status == LotStatus::Active
    }
}

/// The order in which grants burn.
pub fn burn_order(a: &Lot, b: &Lot) -> Ordering {
    a.priority
        .cmp(&b.priority)
        .then_with(|| match (a.expire_time, b.expire_time) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
        .then_with(|| a.seq.cmp(&b.seq))
        .then_with(|| a.grant_id.cmp(&b.grant_id))
}

/// Units taken from (or returned to) one grant; `grant_id == None` is the overdraft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Burn {
    pub grant_id: Option<String>,
    pub units: Amount,
    pub unit_price: Decimal,
    pub currency: String,
}

impl Burn {
    /// Money value of the units at the grant's unit price; `None` if it does not fit a
    /// decimal (impossible within the bounds the API enforces: units ≤ `Amount::MAX`, unit
    /// prices ≤ `MAX_UNIT_PRICE`).
    pub fn money(&self) -> Option<Decimal> {
        self.units
            .to_decimal()
            .checked_mul(self.unit_price)
            .map(|money| money.normalize())
    }
}

/// An open hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub id: String,
    pub units: Amount,
    pub expire_time: i64,
}

/// Optional per-wallet spend limits (UTC day and month).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpendCaps {
    pub daily: Option<Amount>,
    pub monthly: Option<Amount>,
}

/// Units spent (debits and captures, less refunds) in the current UTC day and month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spent {
    pub day: i64,
    pub day_units: Amount,
    pub month: i64,
    pub month_units: Amount,
}

/// How often an allotment schedule grants (stored as `DAILY`, `WEEKLY`, `MONTHLY`, `YEARLY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum Period {
    #[sea_orm(string_value = "DAILY")]
    Daily,
    #[sea_orm(string_value = "WEEKLY")]
    Weekly,
    #[sea_orm(string_value = "MONTHLY")]
    Monthly,
    #[sea_orm(string_value = "YEARLY")]
    Yearly,
}

/// A schedule's rollover policy as stored (`NONE`, `CAPPED`; the cap is its own column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum RolloverPolicy {
    #[sea_orm(string_value = "NONE")]
    None,
    #[sea_orm(string_value = "CAPPED")]
    Capped,
}

/// What happens to a period's unused units when the next period starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollover {
    /// They expire.
    None,
    /// Up to this many roll into the next period's grant; the rest expire.
    Capped(Amount),
}

/// A recurring allotment: `amount` units at the start of every period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub id: String,
    pub amount: Amount,
    pub period: Period,
    pub start_time: i64,
    pub end_time: Option<i64>,
    pub rollover: Rollover,
    /// The next period to grant (0 = the one starting at `start_time`).
    pub next_period: i64,
    pub priority: i32,
    pub unit_price: Decimal,
    pub currency: String,
}

/// The most periods a schedule may have due when it is created. A start in the past is
/// caught up at once, in the batch that creates it (a grant row and two entries a period):
/// 100 periods keep that batch smaller than an ordinary full one (512 debits), and cover
/// eight years of monthly, two of weekly or three months of daily allotments.
pub const MAX_CATCH_UP_PERIODS: i64 = 100;

impl Schedule {
    /// How many of its periods have started by `now` (saturating at `limit + 1`).
    pub fn periods_started(&self, now: i64, limit: i64) -> i64 {
        (0..=limit)
            .find(|&k| self.period_start(k).is_none_or(|start| start > now))
            .unwrap_or(limit + 1)
    }

    /// Start of period `k` (anchored to `start_time`: the 31st stays the 31st where it can).
    pub fn period_start(&self, k: i64) -> Option<i64> {
        let start = DateTime::<Utc>::from_timestamp_micros(self.start_time)?;
        let k32 = u32::try_from(k).ok()?;
        let at = match self.period {
            Period::Daily => start.checked_add_signed(TimeDelta::days(k))?,
            Period::Weekly => start.checked_add_signed(TimeDelta::weeks(k))?,
            Period::Monthly => start.checked_add_months(Months::new(k32))?,
            Period::Yearly => start.checked_add_months(Months::new(k32.checked_mul(12)?))?,
        };
        Some(at.timestamp_micros())
    }

    /// When the next period starts, if the schedule has not ended.
    pub fn next_start(&self) -> Option<i64> {
        let start = self.period_start(self.next_period)?;
        match self.end_time {
            Some(end) if start >= end => None,
            _ => Some(start),
        }
    }
}

/// The kind of ledger entry a movement becomes (stored as its upper-case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum MovementKind {
    #[sea_orm(string_value = "GRANT")]
    Grant,
    #[sea_orm(string_value = "DEBIT")]
    Debit,
    #[sea_orm(string_value = "RESERVE")]
    Reserve,
    #[sea_orm(string_value = "CAPTURE")]
    Capture,
    #[sea_orm(string_value = "RELEASE")]
    Release,
    #[sea_orm(string_value = "REFUND")]
    Refund,
    #[sea_orm(string_value = "EXPIRE")]
    Expire,
    #[sea_orm(string_value = "VOID")]
    Void,
    #[sea_orm(string_value = "ADJUST")]
    Adjust,
}

impl MovementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MovementKind::Grant => "GRANT",
            MovementKind::Debit => "DEBIT",
            MovementKind::Reserve => "RESERVE",
            MovementKind::Capture => "CAPTURE",
            MovementKind::Release => "RELEASE",
            MovementKind::Refund => "REFUND",
            MovementKind::Expire => "EXPIRE",
            MovementKind::Void => "VOID",
            MovementKind::Adjust => "ADJUST",
        }
    }
}

/// One change to a wallet, to be recorded as one ledger entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    pub kind: MovementKind,
    /// When it happened (for time-driven events, the moment they fell due).
    pub time: i64,
    /// The units the entry moved (always ≥ 0).
    pub units: Amount,
    /// Signed effect on `posted`.
    pub delta: i64,
    pub grant_id: Option<String>,
    pub hold_id: Option<String>,
    pub burns: Vec<Burn>,
    /// Units rolled over into this grant from the previous period (schedule grants).
    pub rolled_over: Amount,
}

impl Movement {
    fn new(kind: MovementKind, time: i64, units: Amount, delta: i64) -> Self {
        Movement {
            kind,
            time,
            units,
            delta,
            grant_id: None,
            hold_id: None,
            burns: Vec::new(),
            rolled_over: Amount::ZERO,
        }
    }
}

/// Why an operation on a wallet was refused. Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("insufficient credits: required {required}, available {available}")]
    Insufficient { required: Amount, available: Amount },
    #[error("the {period} spend cap of {cap} units would be exceeded ({used} used or held)")]
    SpendCap {
        period: &'static str,
        cap: Amount,
        used: Amount,
        required: Amount,
    },
    #[error("the reservation is not open")]
    HoldNotOpen,
    #[error("the grant is no longer active")]
    GrantNotActive,
    /// The wallet's grants plus its overdraft limit would no longer fit an [`Amount`].
    #[error(
        "the wallet's grants and overdraft limit would exceed {} units",
        Amount::MAX
    )]
    OutOfRange { headroom: Amount },
    #[error("{debt} units of overdraft are in use; the limit cannot go below that")]
    OverdraftInUse { debt: Amount },
    #[error("the request costs {required} units, more than max_units {max_units}")]
    OverCallerCap { required: Amount, max_units: Amount },
    #[error("at most {refundable} units of the transaction can still be refunded")]
    RefundExceedsCharge { refundable: Amount },
}

/// A wallet's balance at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    pub posted: Amount,
    pub reserved: Amount,
    pub available: Amount,
    pub overdraft_limit: Amount,
    pub crossed_thresholds: Vec<Amount>,
}

/// A request's price against the caller's own ceiling (`max_units`): a request dearer than
/// the caller allowed is refused before anything is taken.
pub fn check_caller_cap(units: Amount, max_units: Option<Amount>) -> Result<(), Refusal> {
    match max_units {
        Some(max_units) if units > max_units => Err(Refusal::OverCallerCap {
            required: units,
            max_units,
        }),
        _ => Ok(()),
    }
}

/// Where refunded units go, in order: a grant (`None`: the overdraft) and how many.
pub type Returns = Vec<(Option<String>, Amount)>;

/// What a refund of `asked` units (all that is left when `None`) of a charge returns, and
/// where: the charge's burns (grant or overdraft, units) from the last one backwards, after
/// skipping what earlier refunds (`refunded` units) returned the same way. Never more than
/// the charge minus earlier refunds (`RefundExceedsCharge`), never nothing.
pub fn refund_returns(
    burns: &[(Option<String>, Amount)],
    charged: Amount,
    refunded: Amount,
    asked: Option<Amount>,
) -> Result<(Amount, Returns), Refusal> {
    let refundable = charged.saturating_sub(refunded).max(Amount::ZERO);
    let units = asked.unwrap_or(refundable);
    if units > refundable || refundable.is_zero() {
        return Err(Refusal::RefundExceedsCharge { refundable });
    }
    let mut skip = refunded;
    let mut want = units;
    let mut returns = Vec::new();
    for (grant, burnt) in burns.iter().rev() {
        let skipped = skip.min(*burnt);
        skip = skip.saturating_sub(skipped);
        let take = want.min(burnt.saturating_sub(skipped));
        if take.is_positive() {
            returns.push((grant.clone(), take));
            want = want.saturating_sub(take);
        }
    }
    Ok((units, returns))
}

/// One wallet's state: its grants, holds, schedules and counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WalletState {
    pub overdraft_limit: Amount,
    /// Units drawn beyond the grants (≥ 0, ≤ overdraft_limit when drawn).
    pub debt: Amount,
    pub lots: Vec<Lot>,
    pub holds: Vec<Hold>,
    pub caps: SpendCaps,
    pub spent: Spent,
    pub schedules: Vec<Schedule>,
    /// No schedule period starts while set (the account is closed).
    pub schedules_paused: bool,
    /// How long before an active grant expires the wallet is told (0: never).
    pub expiry_notice: i64,
}

/// One thing [`WalletState::advance_steps`] did: a movement (a ledger entry), or a notice that
/// changes no balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Move(Movement),
    /// An active grant with units left expires within the wallet's notice window.
    ExpiryNotice {
        grant_id: String,
        time: i64,
        expire_time: i64,
        remaining: Amount,
    },
}

/// UTC day and month indices of a time.
pub fn day_of(now: i64) -> i64 {
    now.div_euclid(DAY_MICROS)
}

fn month_of(now: i64) -> i64 {
    DateTime::<Utc>::from_timestamp_micros(now)
        .map(|t| i64::from(t.year()) * 12 + i64::from(t.month0()))
        .unwrap_or_default()
}

/// A time-driven event, in the order events at the same moment are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// A schedule's period starts (before the previous period's grant expires, so rollover
    /// can take its units first).
    Period(usize),
    Activate(usize),
    /// An active grant's expiry comes within the notice window.
    NoticeExpiry(usize),
    ExpireLot(usize),
    ExpireHold(usize),
}

impl WalletState {
    pub fn posted(&self) -> Amount {
        self.lots
            .iter()
            .filter(|lot| lot.counts())
            .fold(Amount::ZERO, |sum, lot| sum.saturating_add(lot.remaining))
            .saturating_sub(self.debt)
    }

    pub fn reserved(&self) -> Amount {
        self.holds
            .iter()
            .fold(Amount::ZERO, |sum, hold| sum.saturating_add(hold.units))
    }

    pub fn available(&self) -> Amount {
        self.posted()
            .saturating_sub(self.reserved())
            .saturating_add(self.overdraft_limit)
    }

    /// How many more units the wallet's grants may hold: Σ remaining of every grant plus the
    /// overdraft limit must fit in an [`Amount`], so no balance can ever overflow.
    pub fn headroom(&self) -> Amount {
        let used: i128 = self
            .lots
            .iter()
            .map(|lot| i128::from(lot.remaining.micros()))
            .sum::<i128>()
            + i128::from(self.overdraft_limit.micros());
        let left = i128::from(i64::MAX) - used;
        Amount::from_micros(i64::try_from(left.max(0)).unwrap_or(i64::MAX))
    }

    /// Refuses `units` more on the wallet's grants when they would not fit (headroom).
    pub fn check_headroom(&self, units: Amount) -> Result<(), Refusal> {
        let headroom = self.headroom();
        if units > headroom {
            return Err(Refusal::OutOfRange { headroom });
        }
        Ok(())
    }

    /// Sets the overdraft limit: never below the debt in use, never past the headroom.
    pub fn set_overdraft_limit(&mut self, limit: Amount) -> Result<(), Refusal> {
        if limit < self.debt {
            return Err(Refusal::OverdraftInUse { debt: self.debt });
        }
        self.check_headroom(limit.saturating_sub(self.overdraft_limit))?;
        self.overdraft_limit = limit;
        Ok(())
    }

    /// The balance as a reader sees it, with the low-balance thresholds it has crossed
    /// (available at or below the threshold).
    pub fn balance(&self, thresholds: &[Amount]) -> Balance {
        let available = self.available();
        Balance {
            posted: self.posted(),
            reserved: self.reserved(),
            available,
            overdraft_limit: self.overdraft_limit,
            crossed_thresholds: thresholds
                .iter()
                .copied()
                .filter(|t| available <= *t)
                .collect(),
        }
    }

    /// The earliest moment something falls due (for the background sweeper), if any.
    pub fn next_due(&self) -> Option<i64> {
        self.next_event().map(|(time, _)| time)
    }

    /// When the wallet is told that an active grant is about to expire: the notice window
    /// before its expiry. `None` once told, without expiry or notice, and for a grant whose
    /// whole life is shorter than the window (whoever created it set that expiry).
    fn expiry_notice_time(&self, lot: &Lot) -> Option<i64> {
        if self.expiry_notice <= 0 || lot.expiry_noticed || lot.status != LotStatus::Active {
            return None;
        }
        let at = lot.expire_time?.saturating_sub(self.expiry_notice);
        (at > lot.effective_time).then_some(at)
    }

    fn next_event(&self) -> Option<(i64, Due)> {
        let periods = self
            .schedules
            .iter()
            .enumerate()
            .filter(|_| !self.schedules_paused)
            .filter_map(|(i, s)| s.next_start().map(|t| (t, Due::Period(i))));
        let lots = self
            .lots
            .iter()
            .enumerate()
            .filter_map(|(i, lot)| match lot.status {
                LotStatus::Pending => Some((lot.effective_time, Due::Activate(i))),
                LotStatus::Active => lot.expire_time.map(|t| (t, Due::ExpireLot(i))),
                _ => None,
            });
        let notices = self
            .lots
            .iter()
            .enumerate()
            .filter_map(|(i, lot)| Some((self.expiry_notice_time(lot)?, Due::NoticeExpiry(i))));
        let holds = self
            .holds
            .iter()
            .enumerate()
            .map(|(i, hold)| (hold.expire_time, Due::ExpireHold(i)));
        periods.chain(lots).chain(notices).chain(holds).min()
    }

    /// [`Self::advance_steps`] without the notices.
    pub fn advance(&mut self, now: i64, new_id: &mut dyn FnMut() -> String) -> Vec<Movement> {
        self.advance_steps(now, new_id)
            .into_iter()
            .filter_map(|step| match step {
                Step::Move(movement) => Some(movement),
                Step::ExpiryNotice { .. } => None,
            })
            .collect()
    }

    /// Applies every event due at or before `now`, in time order: grants becoming active,
    /// grants and holds expiring, schedule periods starting, and notices of grants about to
    /// expire. `new_id` names schedule grants.
    pub fn advance_steps(&mut self, now: i64, new_id: &mut dyn FnMut() -> String) -> Vec<Step> {
        let mut movements = Vec::new();
        let mut steps = Vec::new();
        while let Some((time, due)) = self.next_event() {
            if time > now {
                break;
            }
            match due {
                Due::Period(i) => self.start_period(i, time, new_id, &mut movements),
                Due::Activate(i) => movements.push(self.activate(i, time)),
                Due::NoticeExpiry(i) => {
                    let lot = &mut self.lots[i];
                    lot.expiry_noticed = true;
                    let expire_time = lot.expire_time.unwrap_or(time);
                    // A grant that expires by `now` (the sweep came late) expires in this
                    // same advance: its expiry says it all.
                    if lot.remaining.is_positive() && expire_time > now {
                        steps.extend(movements.drain(..).map(Step::Move));
                        steps.push(Step::ExpiryNotice {
                            grant_id: lot.grant_id.clone(),
                            time,
                            expire_time,
                            remaining: lot.remaining,
                        });
                    }
                }
                Due::ExpireLot(i) => {
                    let lot = &mut self.lots[i];
                    let units = lot.remaining;
                    lot.remaining = Amount::ZERO;
                    lot.status = LotStatus::Expired;
                    if units.is_positive() {
                        let mut m =
                            Movement::new(MovementKind::Expire, time, units, -units.micros());
                        m.grant_id = Some(lot.grant_id.clone());
                        movements.push(m);
                    }
                }
                Due::ExpireHold(i) => {
                    let hold = self.holds.remove(i);
                    let mut m = Movement::new(MovementKind::Release, time, hold.units, 0);
                    m.hold_id = Some(hold.id);
                    movements.push(m);
                }
            }
        }
        steps.extend(movements.into_iter().map(Step::Move));
        steps
    }

    /// Makes lot `i` count; it repays overdraft debt first.
    fn activate(&mut self, i: usize, time: i64) -> Movement {
        let debt = self.debt;
        let lot = &mut self.lots[i];
        let units = lot.remaining;
        let repaid = units.min(debt);
        lot.remaining = lot.remaining.saturating_sub(repaid);
        lot.repaid = lot.repaid.saturating_add(repaid);
        lot.status = LotStatus::Active;
        self.debt = debt.saturating_sub(repaid);
        let mut m = Movement::new(MovementKind::Grant, time, units, units.micros());
        m.grant_id = Some(lot.grant_id.clone());
        m
    }

    fn start_period(
        &mut self,
        index: usize,
        time: i64,
        new_id: &mut dyn FnMut() -> String,
        movements: &mut Vec<Movement>,
    ) {
        let schedule = self.schedules[index].clone();
        let k = schedule.next_period;
        self.schedules[index].next_period += 1;
        // The previous period's grant: roll over what the policy allows, expire the rest.
        let mut rolled = Amount::ZERO;
        let previous = self.lots.iter_mut().find(|lot| {
            lot.counts()
                && lot
                    .period
                    .as_ref()
                    .is_some_and(|(id, index)| *id == schedule.id && *index == k - 1)
        });
        if let Some(previous) = previous {
            let left = previous.remaining;
            rolled = match schedule.rollover {
                Rollover::None => Amount::ZERO,
                Rollover::Capped(cap) => left.min(cap),
            };
            previous.remaining = Amount::ZERO;
            previous.status = LotStatus::Expired;
            let expired = left.saturating_sub(rolled);
            if expired.is_positive() {
                let mut m = Movement::new(MovementKind::Expire, time, expired, -expired.micros());
                m.grant_id = Some(previous.grant_id.clone());
                movements.push(m);
            }
        }
        // The rolled units are back in the new grant: only what is left beyond them is room.
        let amount = schedule.amount.min(self.headroom().saturating_sub(rolled));
        let lot = Lot {
            grant_id: new_id(),
            remaining: amount.saturating_add(rolled),
            priority: schedule.priority,
            effective_time: time,
            expire_time: schedule.period_start(k + 1),
            seq: time,
            unit_price: schedule.unit_price,
            currency: schedule.currency.clone(),
            status: LotStatus::Pending,
            repaid: Amount::ZERO,
            period: Some((schedule.id.clone(), k)),
            expiry_noticed: false,
        };
        self.lots.push(lot);
        let mut m = self.activate(self.lots.len() - 1, time);
        // The rolled units were already counted: only the new allotment adds to `posted`.
        m.units = amount;
        m.delta = amount.micros();
        m.rolled_over = rolled;
        movements.push(m);
    }

    /// Adds a grant: active at once if effective (a GRANT movement), pending otherwise.
    pub fn add_grant(&mut self, mut lot: Lot, now: i64) -> Option<Movement> {
        lot.status = LotStatus::Pending;
        self.lots.push(lot);
        let i = self.lots.len() - 1;
        (self.lots[i].effective_time <= now).then(|| self.activate(i, now))
    }

    fn spent_now(&self, now: i64) -> (Amount, Amount) {
        let day = if self.spent.day == day_of(now) {
            self.spent.day_units
        } else {
            Amount::ZERO
        };
        let month = if self.spent.month == month_of(now) {
            self.spent.month_units
        } else {
            Amount::ZERO
        };
        (day, month)
    }

    /// Each cap with what counts against it now (spent in its period, and held): the daily
    /// one, then the monthly one.
    pub fn cap_use(&self, now: i64) -> [(&'static str, Option<Amount>, Amount); 2] {
        let (day, month) = self.spent_now(now);
        let held = self.reserved();
        [
            ("daily", self.caps.daily, day.saturating_add(held)),
            ("monthly", self.caps.monthly, month.saturating_add(held)),
        ]
    }

    /// Checks `units` more (beyond what is spent and held) against the caps.
    fn check_caps(&self, units: Amount, now: i64) -> Result<(), Refusal> {
        for (period, cap, used) in self.cap_use(now) {
            let Some(cap) = cap else { continue };
            if used.saturating_add(units) > cap {
                return Err(Refusal::SpendCap {
                    period,
                    cap,
                    used,
                    required: units,
                });
            }
        }
        Ok(())
    }

    /// Adds `units` (negative for refunds) to the current day and month counters.
    fn record_spend(&mut self, units: i64, now: i64) {
        let (day, month) = self.spent_now(now);
        let add = |total: Amount| Amount::from_micros(total.micros().saturating_add(units).max(0));
        self.spent = Spent {
            day: day_of(now),
            day_units: add(day),
            month: month_of(now),
            month_units: add(month),
        };
    }

    /// A refund gives spend back only to the day and month in which it was charged (if those
    /// are still the current ones): refunding yesterday's debit frees nothing today.
    fn unrecord_spend(&mut self, units: Amount, charged_at: i64, now: i64) {
        let (day, month) = self.spent_now(now);
        let less = |total: Amount, same: bool| {
            if same {
                total.saturating_sub(units).max(Amount::ZERO)
            } else {
                total
            }
        };
        self.spent = Spent {
            day: day_of(now),
            day_units: less(day, day_of(charged_at) == day_of(now)),
            month: month_of(now),
            month_units: less(month, month_of(charged_at) == month_of(now)),
        };
    }

    fn check_available(&self, units: Amount) -> Result<(), Refusal> {
        let available = self.available();
        if units > available {
            return Err(Refusal::Insufficient {
                required: units,
                available,
            });
        }
        Ok(())
    }

    /// Takes `units` in burn order; the part beyond the grants becomes debt.
    fn burn(&mut self, units: Amount) -> Vec<Burn> {
        let mut order: Vec<usize> = (0..self.lots.len())
            .filter(|&i| self.lots[i].counts() && self.lots[i].remaining.is_positive())
            .collect();
        order.sort_by(|&a, &b| burn_order(&self.lots[a], &self.lots[b]));
        let mut left = units;
        let mut burns = Vec::new();
        for index in order {
            if left.is_zero() {
                break;
            }
            let lot = &mut self.lots[index];
            let take = left.min(lot.remaining);
            lot.remaining = lot.remaining.saturating_sub(take);
            left = left.saturating_sub(take);
            burns.push(Burn {
                grant_id: Some(lot.grant_id.clone()),
                units: take,
                unit_price: lot.unit_price,
                currency: lot.currency.clone(),
            });
        }
        if left.is_positive() {
            self.debt = self.debt.saturating_add(left);
            burns.push(Burn {
                grant_id: None,
                units: left,
                unit_price: Decimal::ZERO,
                currency: String::new(),
            });
        }
        burns
    }

    /// A debit: `units` ≤ available and within the caps, or nothing changes.
    pub fn debit(&mut self, units: Amount, now: i64) -> Result<Movement, Refusal> {
        self.check_available(units)?;
        self.check_caps(units, now)?;
        self.record_spend(units.micros(), now);
        let mut m = Movement::new(MovementKind::Debit, now, units, -units.micros());
        m.burns = self.burn(units);
        Ok(m)
    }

    /// Sets `units` aside until `expire_time`.
    pub fn reserve(
        &mut self,
        hold_id: String,
        units: Amount,
        expire_time: i64,
        now: i64,
    ) -> Result<Movement, Refusal> {
        self.check_available(units)?;
        self.check_caps(units, now)?;
        self.holds.push(Hold {
            id: hold_id.clone(),
            units,
            expire_time,
        });
        let mut m = Movement::new(MovementKind::Reserve, now, units, 0);
        m.hold_id = Some(hold_id);
        Ok(m)
    }

    /// Captures an open hold at its actual cost. Below the hold, the rest is freed; above
    /// it, the difference must be available, or nothing changes and the hold stays open.
    pub fn capture(
        &mut self,
        hold_id: &str,
        actual: Amount,
        now: i64,
    ) -> Result<Movement, Refusal> {
        let index = self
            .holds
            .iter()
            .position(|h| h.id == hold_id)
            .ok_or(Refusal::HoldNotOpen)?;
        let hold = self.holds.remove(index);
        let checked = self
            .check_available(actual)
            .and_then(|()| self.check_caps(actual, now));
        if let Err(refusal) = checked {
            self.holds.insert(index, hold);
            return Err(refusal);
        }
        self.record_spend(actual.micros(), now);
        let mut m = Movement::new(MovementKind::Capture, now, actual, -actual.micros());
        m.hold_id = Some(hold.id);
        m.burns = self.burn(actual);
        Ok(m)
    }

    /// Releases an open hold.
    pub fn release(&mut self, hold_id: &str, now: i64) -> Result<Movement, Refusal> {
        let index = self
            .holds
            .iter()
            .position(|h| h.id == hold_id)
            .ok_or(Refusal::HoldNotOpen)?;
        let hold = self.holds.remove(index);
        let mut m = Movement::new(MovementKind::Release, now, hold.units, 0);
        m.hold_id = Some(hold.id);
        Ok(m)
    }

    /// Returns units to the grants they were burnt from (`returns`: grant or overdraft, and
    /// how many). Units whose grant no longer counts are returned and expire (or are voided)
    /// again at once, in their own movement. Overdrawn units first reduce the debt; what the
    /// debt no longer holds goes back to the grants that repaid it, newest first.
    pub fn refund(
        &mut self,
        returns: &[(Option<String>, Amount)],
        charged_at: i64,
        now: i64,
    ) -> Vec<Movement> {
        let mut refund = Movement::new(MovementKind::Refund, now, Amount::ZERO, 0);
        let mut after = Vec::new();
        let mut total = Amount::ZERO;
        for (grant_id, units) in returns {
            let targets = match grant_id {
                Some(id) => vec![(Some(id.clone()), *units)],
                None => self.return_overdraft(*units),
            };
            for (target, units) in targets {
                total = total.saturating_add(units);
                let Some(id) = target else {
                    refund.burns.push(Burn {
                        grant_id: None,
                        units,
                        unit_price: Decimal::ZERO,
                        currency: String::new(),
                    });
                    continue;
                };
                let Some(lot) = self.lots.iter_mut().find(|lot| lot.grant_id == id) else {
                    continue;
                };
                refund.burns.push(Burn {
                    grant_id: Some(id.clone()),
                    units,
                    unit_price: lot.unit_price,
                    currency: lot.currency.clone(),
                });
                match lot.status {
                    LotStatus::Active | LotStatus::Pending => {
                        lot.remaining = lot.remaining.saturating_add(units)
                    }
                    LotStatus::Expired | LotStatus::Voided => {
                        let kind = if lot.status == LotStatus::Expired {
                            MovementKind::Expire
                        } else {
                            MovementKind::Void
                        };
                        let mut m = Movement::new(kind, now, units, -units.micros());
                        m.grant_id = Some(id);
                        after.push(m);
                    }
                }
            }
        }
        refund.units = total;
        refund.delta = total.micros();
        self.unrecord_spend(total, charged_at, now);
        let mut movements = vec![refund];
        movements.extend(after);
        movements
    }

    /// Splits a refund of overdrawn units: debt first, then the grants that repaid it.
    fn return_overdraft(&mut self, units: Amount) -> Vec<(Option<String>, Amount)> {
        let mut parts = Vec::new();
        let from_debt = units.min(self.debt);
        if from_debt.is_positive() {
            self.debt = self.debt.saturating_sub(from_debt);
            parts.push((None, from_debt));
        }
        let mut left = units.saturating_sub(from_debt);
        let mut repaying: Vec<usize> = (0..self.lots.len())
            .filter(|&i| self.lots[i].repaid.is_positive())
            .collect();
        repaying.sort_by(|&a, &b| burn_order(&self.lots[b], &self.lots[a]));
        for i in repaying {
            if left.is_zero() {
                break;
            }
            let lot = &mut self.lots[i];
            let take = left.min(lot.repaid);
            lot.repaid = lot.repaid.saturating_sub(take);
            left = left.saturating_sub(take);
            parts.push((Some(lot.grant_id.clone()), take));
        }
        parts
    }

    /// Voids a grant: its remaining units stop counting (if it was active).
    pub fn void(&mut self, grant_id: &str, now: i64) -> Result<Movement, Refusal> {
        let lot = self
            .lots
            .iter_mut()
            .find(|lot| lot.grant_id == grant_id)
            .ok_or(Refusal::GrantNotActive)?;
        let delta = match lot.status {
            LotStatus::Active => -lot.remaining.micros(),
            LotStatus::Pending => 0,
            LotStatus::Expired | LotStatus::Voided => return Err(Refusal::GrantNotActive),
        };
        let units = lot.remaining;
        lot.remaining = Amount::ZERO;
        lot.status = LotStatus::Voided;
        let mut m = Movement::new(MovementKind::Void, now, units, delta);
        m.grant_id = Some(grant_id.to_string());
        Ok(m)
    }

    /// A negative adjustment: takes `units` in burn order, within `available` (caps do not
    /// apply: it is a correction, not spend).
    pub fn adjust_down(&mut self, units: Amount, now: i64) -> Result<Movement, Refusal> {
        self.check_available(units)?;
        let mut m = Movement::new(MovementKind::Adjust, now, units, -units.micros());
        m.burns = self.burn(units);
        Ok(m)
    }

    /// A positive adjustment: a new grant of kind ADJUSTMENT, active at once.
    pub fn adjust_up(&mut self, mut lot: Lot, now: i64) -> Movement {
        lot.effective_time = lot.effective_time.min(now);
        lot.status = LotStatus::Pending;
        self.lots.push(lot);
        let mut m = self.activate(self.lots.len() - 1, now);
        m.kind = MovementKind::Adjust;
        m
    }
}

pub mod forecast;

#[cfg(test)]
mod tests;
