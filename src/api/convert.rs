//! Conversions between stored models and the wire types, and parsing of wire values
//! (decimal strings, timestamps, enums, bounded strings) into validated domain values.

use std::collections::BTreeMap;

use prost_types::Timestamp;
use rust_decimal::Decimal;

use crate::{
    domain::{
        AccountState, Amount, Balance, Dimension, GrantKind, HoldState, ListPrice, LotStatus,
        MovementKind, Period, Rate, RolloverPolicy,
        amount::{format_decimal, parse_quantity},
        wallet::MAX_EXPIRY_NOTICE_DAYS,
    },
    error::{Error, Reason, Result},
    proto,
    store::{
        columns::StoredBurn,
        entity::{account, account_override, grant, reservation, schedule, transaction, wallet},
        ledger,
        rate_cards::{self, Card},
    },
};

// ---- times ---------------------------------------------------------------------------------

pub fn timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// Reads an optional timestamp as microseconds since the epoch (years 1970–9999).
/// A report's half-open window `[start_time, end_time)`, each bound optional (`end_default`
/// when no end is given); refused when the end lies before the start.
pub fn window(
    start: Option<&Timestamp>,
    end: Option<&Timestamp>,
    end_default: Option<i64>,
) -> Result<(Option<i64>, Option<i64>)> {
    let start = micros("start_time", start)?;
    let end = micros("end_time", end)?.or(end_default);
    if let (Some(start), Some(end)) = (start, end)
        && end < start
    {
        return Err(Error::invalid(
            Reason::InvalidField,
            "end_time",
            "must not lie before start_time",
        ));
    }
    Ok((start, end))
}

pub fn micros(field: &str, value: Option<&Timestamp>) -> Result<Option<i64>> {
    let Some(ts) = value else { return Ok(None) };
    const MAX_SECONDS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    if !(0..=MAX_SECONDS).contains(&ts.seconds) || !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(Error::invalid(
            Reason::InvalidTimestamp,
            field,
            "must lie between 1970 and 9999",
        ));
    }
    Ok(Some(ts.seconds * 1_000_000 + i64::from(ts.nanos) / 1_000))
}

// ---- strings -------------------------------------------------------------------------------

/// The currency of a price (`field` names it in errors): an ISO 4217-style code, three
/// upper-case letters; `required` when the price is above 0.
pub fn currency(field: &str, value: &str, required: bool) -> Result<String> {
    if value.is_empty() {
        if required {
            return Err(Error::invalid(
                Reason::MissingField,
                field,
                "is required when unit_price is above 0",
            ));
        }
        return Ok(String::new());
    }
    if value.len() != 3 || !value.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Error::invalid(
            Reason::InvalidField,
            field,
            "must be a three-letter ISO 4217 code such as USD",
        ));
    }
    Ok(value.to_string())
}

/// A required string of at most `max` bytes.
pub fn required(field: &str, value: &str, max: usize) -> Result<String> {
    if value.is_empty() {
        return Err(Error::missing(field));
    }
    optional(field, value, max)
}

/// A string of at most `max` bytes, without control characters.
pub fn optional(field: &str, value: &str, max: usize) -> Result<String> {
    if value.len() > max {
        return Err(Error::invalid(
            Reason::FieldTooLong,
            field,
            format!("must be at most {max} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(
            Reason::InvalidField,
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.to_string())
}

/// A token-like name (unit, request type, dimension, label key): 1–`max` characters of
/// `A-Z a-z 0-9 _ - . : /`.
pub fn name(field: &str, value: &str, max: usize) -> Result<String> {
    let value = required(field, value, max)?;
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'))
    {
        return Err(Error::invalid(
            Reason::InvalidField,
            field,
            "may contain only letters, digits and _ - . : /",
        ));
    }
    Ok(value)
}

pub const DEFAULT_UNIT: &str = "credits";

/// The wallet unit of a request: defaults to `credits`.
pub fn unit(value: &str) -> Result<String> {
    if value.is_empty() {
        Ok(DEFAULT_UNIT.to_string())
    } else {
        name("unit", value, 64)
    }
}

/// An id of the given resource kind (`acct`, `wal`, …): required, prefixed, bounded.
pub fn id(field: &str, value: &str, prefix: &str) -> Result<String> {
    let value = required(field, value, 64)?;
    match value
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
    {
        Some(rest) if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            Ok(value)
        }
        _ => Err(Error::invalid(
            Reason::InvalidId,
            field,
            format!("`{value}` is not a `{prefix}_…` id"),
        )),
    }
}

/// The fields an update changes: the mask's paths, or without a mask the fields that are set
/// (`fields`: each updatable field and whether the request sets it).
pub fn update_paths(
    mask: Option<&prost_types::FieldMask>,
    fields: &[(&str, bool)],
) -> Result<Vec<String>> {
    let paths: Vec<String> = match mask {
        Some(mask) if !mask.paths.is_empty() => mask.paths.clone(),
        _ => fields
            .iter()
            .filter(|(_, set)| *set)
            .map(|(path, _)| path.to_string())
            .collect(),
    };
    if paths.is_empty() {
        return Err(Error::invalid(
            Reason::MissingField,
            "update_mask",
            "nothing to update",
        ));
    }
    Ok(paths)
}

/// A mask path that is none of the updatable `fields`.
pub fn not_updatable(path: &str, fields: &[(&str, bool)]) -> Error {
    let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
    Error::invalid(
        Reason::InvalidField,
        "update_mask",
        format!("`{path}` cannot be updated ({} can)", names.join(", ")),
    )
}

/// A string map (labels, metadata) with bounded size.
pub fn string_map(
    field: &str,
    map: &BTreeMap<String, String>,
    max_entries: usize,
    max_value: usize,
) -> Result<BTreeMap<String, String>> {
    if map.len() > max_entries {
        return Err(Error::invalid(
            Reason::TooManyEntries,
            field,
            format!("at most {max_entries} entries"),
        ));
    }
    map.iter()
        .map(|(k, v)| {
            let key = name(&format!("{field}.key"), k, 64)?;
            let value = optional(&format!("{field}[{k}]"), v, max_value)?;
            Ok((key, value))
        })
        .collect()
}

// ---- amounts -------------------------------------------------------------------------------

pub fn positive(field: &str, value: &str) -> Result<Amount> {
    if value.is_empty() {
        return Err(Error::missing(field));
    }
    Amount::parse_positive(value).map_err(|err| Error::amount(field, err))
}

/// A non-negative amount; empty means 0.
pub fn non_negative(field: &str, value: &str) -> Result<Amount> {
    if value.is_empty() {
        return Ok(Amount::ZERO);
    }
    Amount::parse_non_negative(value).map_err(|err| Error::amount(field, err))
}

/// A non-negative exact decimal (unit prices, quantities, provider costs); empty means 0.
pub fn decimal(field: &str, value: &str) -> Result<Decimal> {
    if value.is_empty() {
        return Ok(Decimal::ZERO);
    }
    parse_quantity(value).map_err(|err| Error::amount(field, err))
}

/// A unit price or provider cost: non-negative, at most `MAX_UNIT_PRICE`; empty means 0.
pub fn unit_price(field: &str, value: &str) -> Result<Decimal> {
    if value.is_empty() {
        return Ok(Decimal::ZERO);
    }
    crate::domain::amount::parse_unit_price(value).map_err(|err| Error::amount(field, err))
}

pub fn quantities(map: &BTreeMap<String, String>) -> Result<BTreeMap<String, Decimal>> {
    if map.len() > 32 {
        return Err(Error::invalid(
            Reason::TooManyEntries,
            "quantities",
            "at most 32 entries",
        ));
    }
    map.iter()
        .map(|(k, v)| {
            let key = name("quantities.key", k, 64)?;
            let field = format!("quantities[{k}]");
            if v.is_empty() {
                return Err(Error::missing(&field));
            }
            Ok((key, decimal(&field, v)?))
        })
        .collect()
}

// ---- accounts and wallets ------------------------------------------------------------------

pub fn account_state(state: AccountState) -> i32 {
    match state {
        AccountState::Active => proto::AccountState::Active as i32,
        AccountState::Suspended => proto::AccountState::Suspended as i32,
        AccountState::Closed => proto::AccountState::Closed as i32,
    }
}

/// Reads a wire account state; UNSPECIFIED gives `None`, unknown values are rejected.
pub fn parse_account_state(value: i32) -> Result<Option<AccountState>> {
    match proto::AccountState::try_from(value) {
        Ok(proto::AccountState::Unspecified) => Ok(None),
        Ok(proto::AccountState::Active) => Ok(Some(AccountState::Active)),
        Ok(proto::AccountState::Suspended) => Ok(Some(AccountState::Suspended)),
        Ok(proto::AccountState::Closed) => Ok(Some(AccountState::Closed)),
        Err(_) => Err(Error::invalid(
            Reason::InvalidEnum,
            "state",
            format!("unknown account state {value}"),
        )),
    }
}

pub fn account(model: &account::Model) -> proto::Account {
    proto::Account {
        id: model.id.clone(),
        external_id: model.external_id.clone(),
        display_name: model.display_name.clone(),
        parent_id: model.parent_id.clone().unwrap_or_default(),
        state: account_state(model.state),
        labels: model.labels.0.clone(),
        create_time: Some(timestamp(model.create_time)),
        update_time: Some(timestamp(model.update_time)),
    }
}

/// A wallet's balance from its (already advanced) state; `thresholds` at or above
/// `available` are reported as crossed.
pub fn balance(wallet: &wallet::Model, balance: &Balance) -> proto::Balance {
    proto::Balance {
        wallet_id: wallet.id.clone(),
        unit: wallet.unit.clone(),
        posted: balance.posted.to_string(),
        reserved: balance.reserved.to_string(),
        available: balance.available.to_string(),
        overdraft_limit: balance.overdraft_limit.to_string(),
        crossed_thresholds: balance
            .crossed_thresholds
            .iter()
            .map(Amount::to_string)
            .collect(),
    }
}

fn optional_amount(micros: Option<i64>) -> String {
    micros
        .map(|m| Amount::from_micros(m).to_string())
        .unwrap_or_default()
}

pub fn wallet(model: &wallet::Model, balance: proto::Balance) -> proto::Wallet {
    proto::Wallet {
        id: model.id.clone(),
        account_id: model.account_id.clone(),
        unit: model.unit.clone(),
        overdraft_limit: Amount::from_micros(model.overdraft_limit).to_string(),
        balance: Some(balance),
        create_time: Some(timestamp(model.create_time)),
        daily_spend_cap: optional_amount(model.daily_spend_cap),
        monthly_spend_cap: optional_amount(model.monthly_spend_cap),
        low_balance_thresholds: model
            .low_balance_thresholds
            .0
            .iter()
            .map(Amount::to_string)
            .collect(),
        grant_expiry_notice_days: Some(u32::try_from(model.grant_expiry_notice_days).unwrap_or(0)),
    }
}

/// A wallet's `grant_expiry_notice_days`: 0 (never) to [`MAX_EXPIRY_NOTICE_DAYS`].
pub fn expiry_notice_days(value: u32) -> Result<i32> {
    i32::try_from(value)
        .ok()
        .filter(|days| *days <= MAX_EXPIRY_NOTICE_DAYS)
        .ok_or_else(|| {
            Error::invalid(
                Reason::InvalidField,
                "wallet.grant_expiry_notice_days",
                format!("must be 0 (never) to {MAX_EXPIRY_NOTICE_DAYS} days, not {value}"),
            )
        })
}

// ---- grants --------------------------------------------------------------------------------

pub fn parse_grant_kind(value: i32) -> Result<GrantKind> {
    match proto::GrantKind::try_from(value) {
        Ok(proto::GrantKind::Unspecified) => Err(Error::missing("grant.kind")),
        Ok(proto::GrantKind::Contract) => Ok(GrantKind::Contract),
        Ok(proto::GrantKind::Purchase) => Ok(GrantKind::Purchase),
        Ok(proto::GrantKind::Promotional) => Ok(GrantKind::Promotional),
        Ok(proto::GrantKind::Adjustment) => Ok(GrantKind::Adjustment),
        Err(_) => Err(Error::invalid(
            Reason::InvalidEnum,
            "grant.kind",
            format!("unknown grant kind {value}"),
        )),
    }
}

fn grant_kind(kind: GrantKind) -> proto::GrantKind {
    match kind {
        GrantKind::Contract => proto::GrantKind::Contract,
        GrantKind::Purchase => proto::GrantKind::Purchase,
        GrantKind::Promotional => proto::GrantKind::Promotional,
        GrantKind::Adjustment => proto::GrantKind::Adjustment,
    }
}

pub fn grant(model: &grant::Model, now: i64) -> proto::Grant {
    let kind = grant_kind(model.kind);
    // Past its expiry but not yet swept: it no longer counts, so show nothing remaining.
    let expired_by_time =
        model.status == LotStatus::Active && model.expire_time.is_some_and(|t| t <= now);
    let state = match model.status {
        LotStatus::Voided => proto::GrantState::Voided,
        LotStatus::Expired => proto::GrantState::Expired,
        // Past its expiry, not yet swept: it no longer counts for balances either.
        _ if model.expire_time.is_some_and(|t| t <= now) => proto::GrantState::Expired,
        LotStatus::Pending if model.effective_time > now => proto::GrantState::Pending,
        _ if model.remaining == 0 => proto::GrantState::Depleted,
        _ => proto::GrantState::Active,
    };
    proto::Grant {
        id: model.id.clone(),
        wallet_id: model.wallet_id.clone(),
        kind: kind as i32,
        amount: Amount::from_micros(model.amount).to_string(),
        remaining: Amount::from_micros(if expired_by_time { 0 } else { model.remaining })
            .to_string(),
        priority: model.priority,
        effective_time: Some(timestamp(model.effective_time)),
        expire_time: model.expire_time.map(timestamp),
        unit_price: format_decimal(model.unit_price.0),
        currency: model.currency.clone(),
        contract_ref: model.contract_ref.clone(),
        state: state as i32,
        create_time: Some(timestamp(model.create_time)),
        schedule_id: model.schedule_id.clone().unwrap_or_default(),
        rolled_over: Amount::from_micros(model.rolled_over).to_string(),
        void_reason: model.void_reason.clone(),
    }
}

// ---- ledger --------------------------------------------------------------------------------

/// A transaction kind from the wire (`field` names it in the error).
pub fn movement_kind(field: &str, value: i32) -> Result<MovementKind> {
    use proto::TransactionKind as Wire;
    Ok(match Wire::try_from(value) {
        Ok(Wire::Grant) => MovementKind::Grant,
        Ok(Wire::Debit) => MovementKind::Debit,
        Ok(Wire::Reserve) => MovementKind::Reserve,
        Ok(Wire::Capture) => MovementKind::Capture,
        Ok(Wire::Release) => MovementKind::Release,
        Ok(Wire::Refund) => MovementKind::Refund,
        Ok(Wire::Expire) => MovementKind::Expire,
        Ok(Wire::Void) => MovementKind::Void,
        Ok(Wire::Adjust) => MovementKind::Adjust,
        Ok(Wire::Unspecified) | Err(_) => {
            return Err(Error::invalid(
                Reason::InvalidField,
                field,
                format!("{value} is not a transaction kind"),
            ));
        }
    })
}

pub fn transaction(model: &transaction::Model) -> proto::Transaction {
    let kind = match model.kind {
        MovementKind::Grant => proto::TransactionKind::Grant,
        MovementKind::Debit => proto::TransactionKind::Debit,
        MovementKind::Reserve => proto::TransactionKind::Reserve,
        MovementKind::Capture => proto::TransactionKind::Capture,
        MovementKind::Release => proto::TransactionKind::Release,
        MovementKind::Refund => proto::TransactionKind::Refund,
        MovementKind::Expire => proto::TransactionKind::Expire,
        MovementKind::Void => proto::TransactionKind::Void,
        MovementKind::Adjust => proto::TransactionKind::Adjust,
    };
    let money = money(&model.burns.0, model.delta.signum());
    let reference = model.ref_id.clone().unwrap_or_default();
    let (reservation_id, refunded_transaction_id) = match model.kind {
        MovementKind::Refund => (String::new(), reference),
        MovementKind::Expire | MovementKind::Void if !reference.is_empty() => {
            (String::new(), reference)
        }
        _ => (reference, String::new()),
    };
    proto::Transaction {
        id: model.id.clone(),
        kind: kind as i32,
        wallet_id: model.wallet_id.clone(),
        account_id: model.account_id.clone(),
        units: Amount::from_micros(model.units).to_string(),
        balance_after: Amount::from_micros(model.balance_after).to_string(),
        request_type: model.request_type.clone(),
        quantities: model.quantities.0.clone(),
        rate_card_version: model.rate_card_version.unwrap_or_default(),
        request_id: model.request_id.clone(),
        create_time: Some(timestamp(model.create_time)),
        actor: model.actor.clone(),
        metadata: model.metadata.0.clone(),
        burns: model
            .burns
            .0
            .iter()
            .cloned()
            .map(|b| proto::GrantBurn {
                grant_id: b.grant_id,
                units: b.units.to_string(),
                unit_price: b.unit_price,
                currency: b.currency,
                money: b.money,
            })
            .collect(),
        provider_cost: model.provider_cost.clone(),
        grant_id: model.grant_id.clone().unwrap_or_default(),
        delta: Amount::from_micros(model.delta).to_string(),
        reservation_id,
        refunded_transaction_id,
        reason: model.reason.clone(),
        hash: model.hash.clone(),
        prev_hash: model.prev_hash.clone(),
        override_id: model.override_id.clone().unwrap_or_default(),
        money,
    }
}

/// Σ money of an entry's burns per currency, with the sign of its effect on the balance.
pub fn money(burns: &[StoredBurn], sign: i64) -> Vec<proto::Money> {
    let mut totals: BTreeMap<String, Decimal> = BTreeMap::new();
    for burn in burns {
        if burn.currency.is_empty() {
            continue;
        }
        // An empty money value was out of range when recorded (see `StoredBurn`).
        let Ok(value) = burn.money.parse::<Decimal>() else {
            continue;
        };
        let total = totals.entry(burn.currency.clone()).or_default();
        // Within the API's bounds an entry's total fits; beyond them it saturates rather
        // than failing the request that records it.
        *total = total
            .checked_add(value * Decimal::from(sign.signum()))
            .unwrap_or(if sign < 0 { Decimal::MIN } else { Decimal::MAX });
    }
    totals
        .into_iter()
        .map(|(currency, amount)| proto::Money {
            currency,
            amount: format_decimal(amount),
        })
        .collect()
}

// ---- holds and schedules -------------------------------------------------------------------

pub fn reservation(model: &reservation::Model) -> proto::Reservation {
    let state = match model.state {
        HoldState::Open => proto::ReservationState::Open,
        HoldState::Captured => proto::ReservationState::Captured,
        HoldState::Released => proto::ReservationState::Released,
        HoldState::Expired => proto::ReservationState::Expired,
    };
    proto::Reservation {
        id: model.id.clone(),
        wallet_id: model.wallet_id.clone(),
        units: Amount::from_micros(model.units).to_string(),
        state: state as i32,
        expire_time: Some(timestamp(model.expire_time)),
        account_id: model.account_id.clone(),
        request_type: model.request_type.clone(),
        quantities: model.quantities.0.clone(),
        rate_card_version: model.rate_card_version.unwrap_or_default(),
        captured_units: optional_amount(model.captured_units),
        request_id: model.request_id.clone(),
        create_time: Some(timestamp(model.create_time)),
    }
}

pub fn schedule(model: &schedule::Model) -> proto::AllotmentSchedule {
    let period = match model.period {
        Period::Daily => proto::SchedulePeriod::Daily,
        Period::Weekly => proto::SchedulePeriod::Weekly,
        Period::Monthly => proto::SchedulePeriod::Monthly,
        Period::Yearly => proto::SchedulePeriod::Yearly,
    };
    let rollover_policy = match model.rollover_policy {
        RolloverPolicy::Capped => proto::RolloverPolicy::Capped,
        RolloverPolicy::None => proto::RolloverPolicy::None,
    };
    let kind = grant_kind(model.kind);
    proto::AllotmentSchedule {
        id: model.id.clone(),
        wallet_id: model.wallet_id.clone(),
        amount: Amount::from_micros(model.amount).to_string(),
        period: period as i32,
        start_time: Some(timestamp(model.start_time)),
        end_time: model.end_time.map(timestamp),
        rollover_policy: rollover_policy as i32,
        rollover_cap: optional_amount(model.rollover_cap),
        kind: kind as i32,
        priority: model.priority,
        unit_price: format_decimal(model.unit_price.0),
        currency: model.currency.clone(),
        contract_ref: model.contract_ref.clone(),
        next_grant_time: ledger::domain_schedule(model).next_start().map(timestamp),
        create_time: Some(timestamp(model.create_time)),
    }
}

// ---- rate cards ----------------------------------------------------------------------------

pub fn rate(rate: &Rate) -> proto::Rate {
    proto::Rate {
        request_type: rate.request_type.clone(),
        flat_units: rate.flat_units.to_string(),
        dimensions: rate
            .dimensions
            .iter()
            .map(|d| proto::Dimension {
                name: d.name.clone(),
                per: format_decimal(d.per),
                units: d.units.to_string(),
            })
            .collect(),
        max_units: rate.max_units.map(|m| m.to_string()).unwrap_or_default(),
        route: rate.route.clone(),
        provider_cost: rate.provider_cost.clone(),
        list_prices: rate
            .list_prices
            .iter()
            .map(|p| proto::ListPrice {
                dimension: p.dimension.clone(),
                per: format_decimal(p.per),
                price: format_decimal(p.price),
                currency: p.currency.clone(),
            })
            .collect(),
    }
}

/// A rate from the wire; `at` names it in errors (`rate_card.rates[0]`).
pub fn parse_rate(at: &str, wire: &proto::Rate) -> Result<Rate> {
    let field = |name: &str| format!("{at}.{name}");
    let dimensions = wire
        .dimensions
        .iter()
        .enumerate()
        .map(|(d, dim)| {
            let dim_field = |name: &str| field(&format!("dimensions[{d}].{name}"));
            let per = if dim.per.is_empty() {
                Decimal::ONE
            } else {
                let per = decimal(&dim_field("per"), &dim.per)?;
                if per.is_zero() {
                    return Err(Error::invalid(
                        Reason::InvalidAmount,
                        &dim_field("per"),
                        "must be greater than zero",
                    ));
                }
                per
            };
            Ok(Dimension {
                name: name(&dim_field("name"), &dim.name, 64)?,
                per,
                units: non_negative(&dim_field("units"), &dim.units)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let max_units = if wire.max_units.is_empty() {
        None
    } else {
        Some(non_negative(&field("max_units"), &wire.max_units)?)
    };
    if !wire.provider_cost.is_empty() {
        unit_price(&field("provider_cost"), &wire.provider_cost)?;
    }
    if wire.list_prices.len() > dimensions.len() {
        return Err(Error::invalid(
            Reason::TooManyEntries,
            &field("list_prices"),
            "at most one list price per dimension",
        ));
    }
    let list_prices = wire
        .list_prices
        .iter()
        .enumerate()
        .map(|(i, price)| {
            let at = |name: &str| field(&format!("list_prices[{i}].{name}"));
            if !dimensions.iter().any(|d| d.name == price.dimension) {
                return Err(Error::invalid(
                    Reason::InvalidField,
                    &at("dimension"),
                    "must name one of the rate's dimensions",
                ));
            }
            let per = if price.per.is_empty() {
                Decimal::from(1000)
            } else {
                unit_price(&at("per"), &price.per)?
            };
            if per.is_zero() {
                return Err(Error::invalid(
                    Reason::InvalidField,
                    &at("per"),
                    "must be greater than zero",
                ));
            }
            if price.price.is_empty() {
                return Err(Error::missing(&at("price")));
            }
            Ok(ListPrice {
                dimension: price.dimension.clone(),
                per,
                price: unit_price(&at("price"), &price.price)?,
                currency: currency(&at("currency"), &price.currency, true)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut named: Vec<&str> = list_prices.iter().map(|p| p.dimension.as_str()).collect();
    named.sort_unstable();
    if named.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::invalid(
            Reason::InvalidField,
            &field("list_prices"),
            "at most one list price per dimension",
        ));
    }
    Ok(Rate {
        request_type: name(&field("request_type"), &wire.request_type, 128)?,
        flat_units: non_negative(&field("flat_units"), &wire.flat_units)?,
        dimensions,
        max_units,
        route: optional(&field("route"), &wire.route, 256)?,
        provider_cost: wire.provider_cost.clone(),
        list_prices,
    })
}

/// A card as the caller may see it: `route` and `provider_cost` only for operators.
pub fn rate_card(card: &Card, current: Option<&Card>, operator_view: bool) -> proto::RateCard {
    let model = card;
    let state = if model.state == rate_cards::DRAFT {
        proto::RateCardState::Draft
    } else if rate_cards::is_superseded(model, current) {
        proto::RateCardState::Superseded
    } else {
        proto::RateCardState::Published
    };
    proto::RateCard {
        version: model.version,
        state: state as i32,
        etag: model.etag.clone(),
        effective_time: model.effective_time.map(timestamp),
        rates: card
            .rates()
            .iter()
            .map(|r| {
                let mut wire = rate(r);
                if !operator_view {
                    wire.route.clear();
                    wire.provider_cost.clear();
                }
                wire
            })
            .collect(),
        notes: model.notes.clone(),
        create_time: Some(timestamp(model.create_time)),
        publish_time: model.publish_time.map(timestamp),
    }
}

/// An override record on the wire.
pub fn account_override(model: &account_override::Model) -> proto::AccountOverride {
    proto::AccountOverride {
        id: model.id.clone(),
        account_id: model.account_id.clone(),
        request_type: model.request_type.clone(),
        rate: model.rate.0.as_ref().map(|r| {
            let mut wire = rate(r);
            wire.request_type.clear();
            wire
        }),
        effective_time: Some(timestamp(model.effective_time)),
        expire_time: model.expire_time.map(timestamp),
        note: model.note.clone(),
        actor: model.actor.clone(),
        create_time: Some(timestamp(model.create_time)),
        cleared: model.cleared,
    }
}
