//! How responses are printed: `field: value` lines or aligned tables for people, and the
//! response message as JSON (`--json`) for scripts.
//!
//! Every message converts once into a [`Node`] that keeps its fields in proto order; both
//! printers walk that. The JSON uses the proto field names, enum value names such as
//! `ACCOUNT_STATE_ACTIVE`, RFC 3339 timestamps (`null` when unset) and decimal strings exactly
//! as the server sent them, and keeps empty fields so that scripts can rely on every key.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{self, Write as _},
};

use chrono::{DateTime, SecondsFormat};
use prost_types::Timestamp;
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::proto;

/// A message, or one value inside it, ready to print.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Text(String),
    /// A proto `map<string, string>`.
    Map(BTreeMap<String, String>),
    /// A message: its fields in proto order.
    Message(Vec<(&'static str, Node)>),
    List(Vec<Node>),
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => serializer.serialize_none(),
            Node::Bool(value) => serializer.serialize_bool(*value),
            Node::Int(value) => serializer.serialize_i64(*value),
            Node::Text(value) => serializer.serialize_str(value),
            Node::Map(map) => map.serialize(serializer),
            Node::Message(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (name, value) in fields {
                    map.serialize_entry(name, value)?;
                }
                map.end()
            }
            Node::List(items) => items.serialize(serializer),
        }
    }
}

/// A response message the client prints.
pub trait Show {
    /// The fields shown as columns when many are listed; `a.b` reaches into a nested message.
    const COLUMNS: &'static [&'static str];

    /// Every field, in proto order.
    fn fields(&self) -> Vec<(&'static str, Node)>;

    /// The fields of the `field: value` view; the same unless a wrapper is flattened.
    fn human(&self) -> Vec<(&'static str, Node)> {
        self.fields()
    }

    fn node(&self) -> Node {
        Node::Message(self.fields())
    }

    /// The view for people: `field: value` lines unless the message lays itself out.
    fn text(&self) -> String {
        detail(&self.human())
    }
}

/// A list response: one page of items and the token of the next.
pub trait Page {
    type Item: Show;
    /// The name of the repeated field, e.g. `accounts`.
    const FIELD: &'static str;
    fn into_parts(self) -> (Vec<Self::Item>, String);
}

macro_rules! page {
    ($($response:ident => $item:ident . $field:ident),* $(,)?) => {$(
        impl Page for proto::$response {
            type Item = proto::$item;
            const FIELD: &'static str = stringify!($field);
            fn into_parts(self) -> (Vec<proto::$item>, String) {
                (self.$field, self.next_page_token)
            }
        }
    )*};
}

page! {
    ListAccountsResponse => Account.accounts,
    ListWalletsResponse => Wallet.wallets,
    ListGrantsResponse => Grant.grants,
    ListTransactionsResponse => Transaction.transactions,
    ListRateCardsResponse => RateCard.rate_cards,
    ListAllotmentSchedulesResponse => AllotmentSchedule.allotment_schedules,
}

// ---- conversions -----------------------------------------------------------------------------

pub fn text(value: &str) -> Node {
    Node::Text(value.to_owned())
}

/// RFC 3339 in UTC, with as many fractional digits as needed.
pub fn rfc3339(value: Option<&Timestamp>) -> Option<String> {
    value
        .and_then(|ts| DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?))
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// A timestamp field: RFC 3339, or null when unset.
pub fn time(value: Option<&Timestamp>) -> Node {
    rfc3339(value).map_or(Node::Null, Node::Text)
}

/// An enum field by its proto value name; a number the client does not know stays a number.
pub fn name_of<E: TryFrom<i32>>(value: i32, name: fn(&E) -> &'static str) -> Node {
    E::try_from(value).map_or(Node::Int(value.into()), |e| text(name(&e)))
}

fn texts(values: &[String]) -> Node {
    Node::List(values.iter().map(|value| text(value)).collect())
}

/// Amounts of money on one line: `USD 1.25; EUR -0.5` (empty for none).
pub fn money_line(money: &[proto::Money]) -> String {
    let parts: Vec<String> = money
        .iter()
        .map(|m| format!("{} {}", m.currency, m.amount))
        .collect();
    parts.join("; ")
}

fn map(value: &BTreeMap<String, String>) -> Node {
    Node::Map(value.clone())
}

pub fn list<T: Show>(items: &[T]) -> Node {
    Node::List(items.iter().map(Show::node).collect())
}

fn nested<T: Show>(value: Option<&T>) -> Node {
    value.map_or(Node::Null, Show::node)
}

/// Swaps the value of one field (for the `field: value` view).
fn replace(fields: &mut [(&'static str, Node)], name: &str, value: Node) {
    if let Some((_, old)) = fields.iter_mut().find(|(field, _)| *field == name) {
        *old = value;
    }
}

impl Show for proto::Account {
    const COLUMNS: &'static [&'static str] =
        &["id", "external_id", "display_name", "parent_id", "state"];

    fn fields(&self) -> Vec<(&'static str, Node)> {
        vec![
            ("id", text(&self.id)),
            ("external_id", text(&self.external_id)),
            ("display_name", text(&self.display_name)),
            ("parent_id", text(&self.parent_id)),
            (
                "state",
                name_of(self.state, proto::AccountState::as_str_name),
            ),
            ("labels", map(&self.labels)),
            ("create_time", time(self.create_time.as_ref())),
            ("update_time", time(self.update_time.as_ref())),
        ]
    }
}

impl Show for proto::Balance {
    const COLUMNS: &'static [&'static str] = &[
        "unit",
        "posted",
        "reserved",
        "available",
        "overdraft_limit",
        "crossed_thresholds",
    ];

    fn fields(&self) -> Vec<(&'static str, Node)> {
        vec![
            ("wallet_id", text(&self.wallet_id)),
            ("unit", text(&self.unit)),
            ("posted", text(&self.posted)),
            ("reserved", text(&self.reserved)),
            ("available", text(&self.available)),
            ("overdraft_limit", text(&self.overdraft_limit)),
            ("crossed_thresholds", texts(&self.crossed_thresholds)),
        ]
    }
}

impl Show for proto::Wallet {
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "account_id",
        "unit",
        "balance.posted",
        "balance.available",
        "overdraft_limit",
        "daily_spend_cap",
        "monthly_spend_cap",
    ];

    fn fields(&self) -> Vec<(&'static str, Node)> {
        vec![
            ("id", text(&self.id)),
            ("account_id", text(&self.account_id)),
            ("unit", text(&self.unit)),
            ("overdraft_limit", text(&self.overdraft_limit)),
            ("balance", nested(self.balance.as_ref())),
            ("create_time", time(self.create_time.as_ref())),
            ("daily_spend_cap", text(&self.daily_spend_cap)),
            ("monthly_spend_cap", text(&self.monthly_spend_cap)),
            (
                "low_balance_thresholds",
                texts(&self.low_balance_thresholds),
            ),
        ]
    }

    /// The balance's amounts inline instead of a nested `balance`.
    fn human(&self) -> Vec<(&'static str, Node)> {
        let balance = self.balance.clone().unwrap_or_default();
        let mut fields = self.fields();
        fields.retain(|(name, _)| *name != "balance");
        fields.extend([
            ("posted", text(&balance.posted)),
            ("reserved", text(&balance.reserved)),
            ("available", text(&balance.available)),
            ("crossed_thresholds", texts(&balance.crossed_thresholds)),
        ]);
        fields
    }
}

impl Show for proto::Grant {
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "kind",
        "amount",
        "remaining",
        "priority",
        "state",
        "effective_time",
        "expire_time",
        "schedule_id",
    ];

    fn fields(&self) -> Vec<(&'static str, Node)> {
        vec![
            ("id", text(&self.id)),
            ("wallet_id", text(&self.wallet_id)),
            ("kind", name_of(self.kind, proto::GrantKind::as_str_name)),
            ("amount", text(&self.amount)),
            ("remaining", text(&self.remaining)),
            ("priority", Node::Int(self.priority.into())),
            ("effective_time", time(self.effective_time.as_ref())),
            ("expire_time", time(self.expire_time.as_ref())),
            ("unit_price", text(&self.unit_price)),
            ("currency", text(&self.currency)),
            ("contract_ref", text(&self.contract_ref)),
            ("state", name_of(self.state, proto::GrantState::as_str_name)),
            ("create_time", time(self.create_time.as_ref())),
            ("schedule_id", text(&self.schedule_id)),
            ("rolled_over", text(&self.rolled_over)),
            ("void_reason", text(&self.void_reason)),
        ]
    }
}

impl Show for proto::GrantBurn {
    const COLUMNS: &'static [&'static str] =
        &["grant_id", "units", "unit_price", "currency", "money"];

    fn fields(&self) -> Vec<(&'static str, Node)> {
        vec![
            ("grant_id", text(&self.grant_id)),
            ("units", text(&self.units)),
            ("unit_price", text(&self.unit_price)),
            ("currency", text(&self.currency)),
            ("money", text(&self.money)),
        ]
    }
}

impl Show for proto::Transaction {
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "create_time",
        "kind",
        "units",
        "delta",
        "balance_after",
        "request_type",
        "request_id",
    ];

    fn fields(&self) -> Vec<(&'static str, Node)> {
        vec![
            ("id", text(&self.id)),
            (
                "kind",
                name_of(self.kind, proto::TransactionKind::as_str_name),
            ),
            ("wallet_id", text(&self.wallet_id)),
            ("account_id", text(&self.account_id)),
            ("units", text(&self.units)),
            ("balance_after", text(&self.balance_after)),
            ("request_type", text(&self.request_type)),
            ("quantities", map(&self.quantities)),
            ("rate_card_version", Node::Int(self.rate_card_version)),
            ("request_id", text(&self.request_id)),
            ("create_time", time(self.create_time.as_ref())),
            ("actor", text(&self.actor)),
            ("metadata", map(&self.metadata)),
            ("burns", list(&self.burns)),
            ("provider_cost", text(&self.provider_cost)),
            ("grant_id", text(&self.grant_id)),
            ("delta", text(&self.delta)),
            ("reservation_id", text(&self.reservation_id)),
            (
                "refunded_transaction_id",
                text(&self.refunded_transaction_id),
            ),
            ("reason", text(&self.reason)),
            ("hash", text(&self.hash)),
            ("prev_hash", text(&self.prev_hash)),
            ("money", list(&self.money)),
        ]
    }

    /// Money on one line (`USD -1.25`) instead of a table.
    fn human(&self) -> Vec<(&'static str, Node)> {
        let mut fields = self.fields();
        replace(&mut fields, "money", text(&money_line(&self.money)));
        fields
    }
}

impl Show for proto::Money {
    const COLUMNS: &'static [&'static str] = &["currency", "amount"];

    fn fields(&self) -> Vec<(&'static str, Node)> {
        vec![
            ("currency", text(&self.currency)),
            ("amount", text(&self.amount)),
        ]
    }
}

impl Show for proto::Reservation {
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "state",
        "units",
        "captured_units",
        "expire_time",
        "request_type",
    ];

    fn fields(&self) -> Vec<(&'static str, Node)> {
        vec![
            ("id", text(&self.id)),
            ("wallet_id", text(&self.wallet_id)),
            ("units", text(&self.units)),
            (
                "state",
                name_of(self.state, proto::ReservationState::as_str_name),
            ),
            ("expire_time", time(self.expire_time.as_ref())),
            ("account_id", text(&self.account_id)),
            ("request_type", text(&self.request_type)),
            ("quantities", map(&self.quantities)),
            ("rate_card_version", Node::Int(self.rate_card_version)),
            ("captured_units", text(&self.captured_units)),
            ("request_id", text(&self.request_id)),
            ("create_time", time(self.create_time.as_ref())),
        ]
    }
}

impl Show for proto::AllotmentSchedule {
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "amount",
        "period",
        "start_time",
        "end_time",
        "rollover_policy",
        "rollover_cap",
        "next_grant_time",
    ];

    fn fields(&self) -> Vec<(&'static str, Node)> {
        vec![
            ("id", text(&self.id)),
            ("wallet_id", text(&self.wallet_id)),
            ("amount", text(&self.amount)),
            (
                "period",
                name_of(self.period, proto::SchedulePeriod::as_str_name),
            ),
            ("start_time", time(self.start_time.as_ref())),
            ("end_time", time(self.end_time.as_ref())),
            (
                "rollover_policy",
                name_of(self.rollover_policy, proto::RolloverPolicy::as_str_name),
            ),
            ("rollover_cap", text(&self.rollover_cap)),
            ("kind", name_of(self.kind, proto::GrantKind::as_str_name)),
            ("priority", Node::Int(self.priority.into())),
            ("unit_price", text(&self.unit_price)),
            ("currency", text(&self.currency)),
            ("contract_ref", text(&self.contract_ref)),
            ("next_grant_time", time(self.next_grant_time.as_ref())),
            ("create_time", time(self.create_time.as_ref())),
        ]
    }
}

impl Show for proto::DebitResponse {
    const COLUMNS: &'static [&'static str] = &["transaction.id", "transaction.units", "replayed"];

    fn fields(&self) -> Vec<(&'static str, Node)> {
        vec![
            ("transaction", nested(self.transaction.as_ref())),
            ("replayed", Node::Bool(self.replayed)),
        ]
    }

    /// The transaction's own fields, then `replayed`.
    fn human(&self) -> Vec<(&'static str, Node)> {
        let mut fields = self
            .transaction
            .as_ref()
            .map(Show::human)
            .unwrap_or_default();
        fields.push(("replayed", Node::Bool(self.replayed)));
        fields
    }
}

impl Show for proto::Dimension {
    const COLUMNS: &'static [&'static str] = &["name", "per", "units"];

    fn fields(&self) -> Vec<(&'static str, Node)> {
        vec![
            ("name", text(&self.name)),
            ("per", text(&self.per)),
            ("units", text(&self.units)),
        ]
    }
}

impl Show for proto::Rate {
    const COLUMNS: &'static [&'static str] = &[
        "request_type",
        "flat_units",
        "dimensions",
        "max_units",
        "route",
        "provider_cost",
    ];

    fn fields(&self) -> Vec<(&'static str, Node)> {
        vec![
            ("request_type", text(&self.request_type)),
            ("flat_units", text(&self.flat_units)),
            ("dimensions", list(&self.dimensions)),
            ("max_units", text(&self.max_units)),
            ("route", text(&self.route)),
            ("provider_cost", text(&self.provider_cost)),
        ]
    }

    /// Dimensions as `0.2/1000 output_tokens, …`.
    fn human(&self) -> Vec<(&'static str, Node)> {
        let dimensions: Vec<String> = self
            .dimensions
            .iter()
            .map(|d| format!("{}/{} {}", d.units, d.per, d.name))
            .collect();
        let mut fields = self.fields();
        replace(&mut fields, "dimensions", Node::Text(dimensions.join(", ")));
        fields
    }
}

impl Show for proto::RateCard {
    const COLUMNS: &'static [&'static str] = &[
        "version",
        "state",
        "effective_time",
        "publish_time",
        "notes",
    ];

    fn fields(&self) -> Vec<(&'static str, Node)> {
        vec![
            ("version", Node::Int(self.version)),
            (
                "state",
                name_of(self.state, proto::RateCardState::as_str_name),
            ),
            ("etag", text(&self.etag)),
            ("effective_time", time(self.effective_time.as_ref())),
            ("rates", list(&self.rates)),
            ("notes", text(&self.notes)),
            ("create_time", time(self.create_time.as_ref())),
            ("publish_time", time(self.publish_time.as_ref())),
        ]
    }

    fn human(&self) -> Vec<(&'static str, Node)> {
        let rates = self.rates.iter().map(|r| Node::Message(r.human()));
        let mut fields = self.fields();
        replace(&mut fields, "rates", Node::List(rates.collect()));
        fields
    }
}

impl Show for proto::Quote {
    const COLUMNS: &'static [&'static str] = &["units", "rate_card_version", "request_type"];

    fn fields(&self) -> Vec<(&'static str, Node)> {
        vec![
            ("units", text(&self.units)),
            ("rate_card_version", Node::Int(self.rate_card_version)),
            ("request_type", text(&self.request_type)),
        ]
    }
}

// ---- printers --------------------------------------------------------------------------------

/// Where results go: stdout, as text or JSON.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// One message: `field: value` lines (lists of messages as tables below them), or JSON.
    pub fn one<T: Show>(&self, item: &T) -> io::Result<()> {
        self.print(&item.node(), || item.text())
    }

    /// One message as a one-row table (balances).
    pub fn row<T: Show>(&self, item: &T) -> io::Result<()> {
        self.print(&item.node(), || table_of(T::COLUMNS, &[item.node()]))
    }

    /// The items of one or more pages, with the token of the page after them (empty: none).
    pub fn many<P: Page>(&self, items: &[P::Item], next_page_token: &str) -> io::Result<()> {
        let response = Node::Message(vec![
            (P::FIELD, list(items)),
            ("next_page_token", text(next_page_token)),
        ]);
        let nodes: Vec<Node> = items.iter().map(Show::node).collect();
        self.print(&response, || table_of(<P::Item as Show>::COLUMNS, &nodes))?;
        if !self.json && !next_page_token.is_empty() {
            eprintln!("more: --page-token {next_page_token} (or --all)");
        }
        Ok(())
    }

    fn print(&self, json: &Node, human: impl FnOnce() -> String) -> io::Result<()> {
        let text = if self.json {
            let mut text = serde_json::to_string_pretty(json).map_err(io::Error::other)?;
            text.push('\n');
            text
        } else {
            human()
        };
        let mut stdout = io::stdout().lock();
        stdout.write_all(text.as_bytes())?;
        stdout.flush()
    }
}

/// `field: value` lines, aligned; fields holding messages (rates, burns) follow as tables.
pub fn detail(fields: &[(&'static str, Node)]) -> String {
    let is_table = |node: &Node| match node {
        Node::List(items) => matches!(items.first(), Some(Node::Message(_))),
        _ => false,
    };
    let (tables, lines): (Vec<_>, Vec<_>) = fields.iter().partition(|(_, node)| is_table(node));
    let width = lines
        .iter()
        .map(|(name, _)| name.len() + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (name, node) in lines {
        let _ = writeln!(out, "{:<width$} {}", format!("{name}:"), cell(node));
    }
    for (name, node) in tables {
        let Node::List(items) = node else { continue };
        let columns: Vec<&str> = match items.first() {
            Some(Node::Message(fields)) => fields.iter().map(|(name, _)| *name).collect(),
            _ => Vec::new(),
        };
        let _ = writeln!(out, "{name}:");
        for line in table_of(&columns, items).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

/// A table of messages: one row each, one column per (possibly dotted) field name.
fn table_of(columns: &[&str], items: &[Node]) -> String {
    let header: Vec<&str> = columns
        .iter()
        .map(|c| c.rsplit('.').next().unwrap_or(c))
        .collect();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| columns.iter().map(|c| cell(lookup(item, c))).collect())
        .collect();
    table(&header, &rows)
}

fn lookup<'a>(node: &'a Node, path: &str) -> &'a Node {
    path.split('.').fold(node, |node, name| match node {
        Node::Message(fields) => fields
            .iter()
            .find(|(field, _)| *field == name)
            .map_or(&Node::Null, |(_, value)| value),
        _ => &Node::Null,
    })
}

/// A value on one line; `-` for empty.
fn cell(node: &Node) -> String {
    let joined = |parts: Vec<String>, separator: &str| {
        if parts.is_empty() {
            "-".to_string()
        } else {
            parts.join(separator)
        }
    };
    match node {
        Node::Null => "-".to_string(),
        Node::Bool(value) => value.to_string(),
        Node::Int(value) => value.to_string(),
        Node::Text(value) if value.is_empty() => "-".to_string(),
        Node::Text(value) => value.clone(),
        Node::Map(map) => joined(map.iter().map(|(k, v)| format!("{k}={v}")).collect(), ", "),
        Node::Message(fields) => joined(
            fields
                .iter()
                .map(|(name, value)| (name, cell(value)))
                .filter(|(_, value)| value != "-")
                .map(|(name, value)| format!("{name}={value}"))
                .collect(),
            " ",
        ),
        Node::List(items) => joined(items.iter().map(cell).collect(), "; "),
    }
}

/// Left-aligned columns two spaces apart, a header row first.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> proto::Account {
        proto::Account {
            id: "acct_1".into(),
            external_id: "cust-42".into(),
            state: proto::AccountState::Active as i32,
            labels: [("tier".to_string(), "gold".to_string())].into(),
            create_time: Some(Timestamp {
                seconds: 1_790_000_000,
                nanos: 500_000_000,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn json_keeps_proto_order_enum_names_and_rfc3339() {
        let json = serde_json::to_string(&account().node()).unwrap();
        assert_eq!(
            json,
            r#"{"id":"acct_1","external_id":"cust-42","display_name":"","parent_id":"","state":"ACCOUNT_STATE_ACTIVE","labels":{"tier":"gold"},"create_time":"2026-09-21T14:13:20.500Z","update_time":null}"#
        );
    }

    #[test]
    fn unknown_enum_values_stay_numbers() {
        assert_eq!(name_of(42, proto::GrantKind::as_str_name), Node::Int(42));
    }

    #[test]
    fn tables_align_and_mark_empty_cells() {
        let mut other = account();
        other.id = "acct_22".into();
        other.display_name = "Research".into();
        let text = table_of(proto::Account::COLUMNS, &[account().node(), other.node()]);
        assert_eq!(
            text,
            "id       external_id  display_name  parent_id  state\n\
             acct_1   cust-42      -             -          ACCOUNT_STATE_ACTIVE\n\
             acct_22  cust-42      Research      -          ACCOUNT_STATE_ACTIVE\n"
        );
    }

    #[test]
    fn detail_lines_then_nested_tables() {
        let card = proto::RateCard {
            version: 3,
            rates: vec![proto::Rate {
                request_type: "chat.message".into(),
                flat_units: "1".into(),
                dimensions: vec![proto::Dimension {
                    name: "output_tokens".into(),
                    per: "1000".into(),
                    units: "0.2".into(),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = detail(&card.human());
        assert_eq!(
            text,
            "version:        3\n\
             state:          RATE_CARD_STATE_UNSPECIFIED\n\
             etag:           -\n\
             effective_time: -\n\
             notes:          -\n\
             create_time:    -\n\
             publish_time:   -\n\
             rates:\n\
             \x20 request_type  flat_units  dimensions              max_units  route  provider_cost\n\
             \x20 chat.message  1           0.2/1000 output_tokens  -          -      -\n"
        );
    }

    #[test]
    fn dotted_columns_reach_into_nested_messages() {
        let wallet = proto::Wallet {
            balance: Some(proto::Balance {
                available: "7.5".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(cell(lookup(&wallet.node(), "balance.available")), "7.5");
        assert_eq!(cell(lookup(&wallet.node(), "balance.nope")), "-");
    }
}
