//! The audit trail: every change made by hand to prices or balances — a rate card published,
//! an account override set, a grant voided, a balance adjusted — with who, when, and the
//! state before and after as JSON objects, written in the transaction of the change (a
//! publish and an override in theirs, voids and adjustments by the ledger batch that applies
//! them). Reads list them oldest first, filtered, a page at a time (ids are time-ordered).

use std::collections::BTreeMap;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter,
    prelude::Json,
    sea_query::{Expr, ExprTrait, LikeExpr, Query},
};
use serde_json::json;

use super::{
    accounts::escape_like,
    entity::{account, account_override, audit_event, rate_card},
    new_id,
    pagination::{self, Page},
};
use crate::{
    domain::{Rate, amount::format_decimal},
    error::Result,
};

pub const RATE_CARD_PUBLISHED: &str = "RATE_CARD_PUBLISHED";
pub const ACCOUNT_OVERRIDE_SET: &str = "ACCOUNT_OVERRIDE_SET";
pub const GRANT_VOIDED: &str = "GRANT_VOIDED";
pub const BALANCE_ADJUSTED: &str = "BALANCE_ADJUSTED";
/// Every action, for validating filters.
pub const ACTIONS: [&str; 4] = [
    RATE_CARD_PUBLISHED,
    ACCOUNT_OVERRIDE_SET,
    GRANT_VOIDED,
    BALANCE_ADJUSTED,
];

/// Who made a change and under which request.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub sub: String,
    pub request_id: String,
}

/// An event of `action` on `resource` at `time`.
pub fn event(
    action: &str,
    resource: String,
    account_id: Option<String>,
    actor: &Actor,
    time: i64,
    before: Option<Json>,
    after: Option<Json>,
) -> audit_event::Model {
    audit_event::Model {
        id: new_id("aud"),
        time,
        actor: actor.sub.clone(),
        action: action.to_string(),
        resource,
        account_id,
        before,
        after,
        request_id: actor.request_id.clone(),
    }
}

pub async fn record(conn: &impl ConnectionTrait, event: audit_event::Model) -> Result<()> {
    audit_event::ActiveModel::from(event).insert(conn).await?;
    Ok(())
}

/// A rate as the trail shows it (keyed so that diffs name what changed).
pub fn rate_json(rate: &Rate) -> Json {
    json!({
        "flat_units": rate.flat_units.to_string(),
        "dimensions": rate.dimensions.iter().map(|d| (
            d.name.clone(),
            json!({"units": d.units.to_string(), "per": format_decimal(d.per)}),
        )).collect::<serde_json::Map<_, _>>(),
        "max_units": rate.max_units.map(|m| m.to_string()),
        "route": rate.route,
        "provider_cost": rate.provider_cost,
        "list_prices": rate.list_prices.iter().map(|p| (
            p.dimension.clone(),
            json!({"price": format_decimal(p.price), "per": format_decimal(p.per), "currency": p.currency}),
        )).collect::<serde_json::Map<_, _>>(),
    })
}

/// A card as the trail shows it: its version, effective time and rates by request type.
pub fn card_json(card: &rate_card::Model) -> Json {
    json!({
        "version": card.version,
        "effective_time": card.effective_time,
        "rates": card.rates().iter().map(|r| (r.request_type.clone(), rate_json(r)))
            .collect::<serde_json::Map<_, _>>(),
    })
}

pub fn override_json(record: &account_override::Model) -> Json {
    json!({
        "id": record.id,
        "rate": record.rate.0.as_ref().map(rate_json),
        "effective_time": record.effective_time,
        "expire_time": record.expire_time,
        "note": record.note,
    })
}

/// What differs between `before` and `after`: (path, before, after) for every leaf that
/// changed, added or went away (`a.b.c`; absent sides are empty).
pub fn changes(before: Option<&Json>, after: Option<&Json>) -> Vec<(String, String, String)> {
    let mut a = BTreeMap::new();
    let mut b = BTreeMap::new();
    if let Some(value) = before {
        flatten("", value, &mut a);
    }
    if let Some(value) = after {
        flatten("", value, &mut b);
    }
    let mut paths: Vec<&String> = a.keys().chain(b.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|p| a.get(*p) != b.get(*p))
        .map(|p| {
            (
                p.clone(),
                a.get(p).cloned().unwrap_or_default(),
                b.get(p).cloned().unwrap_or_default(),
            )
        })
        .collect()
}

fn flatten(path: &str, value: &Json, out: &mut BTreeMap<String, String>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Json::Object(map) => {
            for (key, inner) in map {
                flatten(&join(key), inner, out);
            }
        }
        Json::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                flatten(&join(&i.to_string()), inner, out);
            }
        }
        Json::Null => {}
        Json::String(text) if text.is_empty() => {}
        Json::String(text) => {
            out.insert(path.to_string(), text.clone());
        }
        other => {
            out.insert(path.to_string(), other.to_string());
        }
    }
}

/// `value` without routes and provider costs (for callers who may not see them).
pub fn redact(value: &mut Json) {
    match value {
        Json::Object(map) => {
            map.remove("route");
            map.remove("provider_cost");
            map.values_mut().for_each(redact);
        }
        Json::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Which events a list returns.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Accounts the caller may see, with every account under them (`None`: all); events of
    /// no account (rate cards) are always included.
    pub scope: Option<Vec<String>>,
    /// Only this account's events (and its sub-accounts' with `below`).
    pub account: Option<(String, bool)>,
    pub actions: Vec<String>,
    pub actor: Option<String>,
    pub resource: Option<String>,
    pub start: Option<i64>,
    pub end: Option<i64>,
}

fn under(roots: &[String]) -> Condition {
    let mut below = Condition::any();
    for root in roots {
        let pattern = format!("%/{}/%", escape_like(root));
        below = below
            .add(Expr::col(account::Column::Ancestry).like(LikeExpr::new(pattern).escape('\\')));
    }
    Condition::all().add(
        audit_event::Column::AccountId.in_subquery(
            Query::select()
                .column(account::Column::Id)
                .from(account::Entity)
                .cond_where(below)
                .to_owned(),
        ),
    )
}

pub async fn list(
    conn: &impl ConnectionTrait,
    filter: &Filter,
    page: &Page,
) -> Result<(Vec<audit_event::Model>, String)> {
    let mut condition = Condition::all();
    if let Some(roots) = &filter.scope {
        condition = condition.add(
            Condition::any()
                .add(audit_event::Column::AccountId.is_null())
                .add(under(roots)),
        );
    }
    if let Some((account_id, below)) = &filter.account {
        condition = condition.add(if *below {
            under(std::slice::from_ref(account_id))
        } else {
            Condition::all().add(audit_event::Column::AccountId.eq(account_id.as_str()))
        });
    }
    if !filter.actions.is_empty() {
        condition = condition.add(audit_event::Column::Action.is_in(filter.actions.clone()));
    }
    if let Some(actor) = &filter.actor {
        condition = condition.add(audit_event::Column::Actor.eq(actor.as_str()));
    }
    if let Some(resource) = &filter.resource {
        condition = condition.add(audit_event::Column::Resource.eq(resource.as_str()));
    }
    if let Some(start) = filter.start {
        condition = condition.add(audit_event::Column::Time.gte(start));
    }
    if let Some(end) = filter.end {
        condition = condition.add(audit_event::Column::Time.lt(end));
    }
    let query = audit_event::Entity::find().filter(condition);
    pagination::by_id(
        conn,
        query,
        audit_event::Column::Id,
        "audit_events",
        page,
        |e| e.id.clone(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_each_leaf_that_moved() {
        let before = json!({"rates": {"chat": {"flat_units": "1", "route": "a"}}, "version": 1});
        let after = json!({"rates": {"chat": {"flat_units": "2", "route": "a"}, "image": {"flat_units": "4"}}, "version": 2});
        assert_eq!(
            changes(Some(&before), Some(&after)),
            [
                (
                    "rates.chat.flat_units".to_string(),
                    "1".to_string(),
                    "2".to_string()
                ),
                (
                    "rates.image.flat_units".to_string(),
                    String::new(),
                    "4".to_string()
                ),
                ("version".to_string(), "1".to_string(), "2".to_string()),
            ]
        );
        assert_eq!(
            changes(None, Some(&json!({"a": "x"}))),
            [("a".to_string(), String::new(), "x".to_string())]
        );
        let mut secret = after.clone();
        redact(&mut secret);
        assert!(!secret.to_string().contains("route"));
    }
}
