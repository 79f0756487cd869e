//! How responses are printed: `field: value` lines or aligned tables for people, and the
//! response message as JSON (`--json`) for scripts.
//!
//! Nothing here knows a message by hand: every response is walked from its descriptor
//! (prost-reflect over the descriptor set that build.rs compiles), so a field added to a
//! proto prints without a change here. A message converts once into a [`Node`] that keeps
//! its fields in proto order; both printers walk that. The JSON uses the proto field names,
//! enum value names such as `ACCOUNT_STATE_ACTIVE` (a number the client does not know stays
//! a number), RFC 3339 timestamps (`null` when unset, like any unset message), integers as
//! numbers and decimal strings exactly as the server sent them, and keeps empty fields so
//! that scripts can rely on every key.
//!
//! For people: a nested message's fields stand in its place (but for names the outer
//! message has already), lists of messages follow as tables, money and rate dimensions read
//! `USD 1.25` and `0.2/1000 output_tokens`, and an empty value is `-`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{self, Write as _},
    sync::LazyLock,
};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use chrono::{DateTime, SecondsFormat};
use prost_reflect::{
    DescriptorPool, DynamicMessage, Kind, MapKey, MessageDescriptor, ReflectMessage as _, Value,
};
use prost_types::Timestamp;
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::proto;

/// The columns of a list of these messages (`a.b` reaches into a nested message); a message
/// not named here shows every field.
const COLUMNS: &[(&str, &[&str])] = &[
    (
        "allot.v1.Account",
        &["id", "external_id", "display_name", "parent_id", "state"],
    ),
    (
        "allot.v1.Balance",
        &[
            "unit",
            "posted",
            "reserved",
            "available",
            "overdraft_limit",
            "crossed_thresholds",
        ],
    ),
    (
        "allot.v1.Wallet",
        &[
            "id",
            "account_id",
            "unit",
            "balance.posted",
            "balance.available",
            "overdraft_limit",
            "daily_spend_cap",
            "monthly_spend_cap",
        ],
    ),
    (
        "allot.v1.Grant",
        &[
            "id",
            "kind",
            "amount",
            "remaining",
            "priority",
            "state",
            "effective_time",
            "expire_time",
            "schedule_id",
        ],
    ),
    (
        "allot.v1.Transaction",
        &[
            "id",
            "create_time",
            "kind",
            "units",
            "delta",
            "balance_after",
            "request_type",
            "request_id",
        ],
    ),
    (
        "allot.v1.AllotmentSchedule",
        &[
            "id",
            "amount",
            "period",
            "start_time",
            "end_time",
            "rollover_policy",
            "rollover_cap",
            "next_grant_time",
        ],
    ),
    (
        "allot.v1.RateCard",
        &[
            "version",
            "state",
            "effective_time",
            "publish_time",
            "notes",
        ],
    ),
];

/// The descriptors of every allot message (and the well-known types they use).
static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET)
        .expect("build.rs writes a valid descriptor set")
});

/// A generated message in its dynamic form, to be walked by its descriptor.
pub fn dynamic<M: prost::Message + prost::Name>(message: &M) -> DynamicMessage {
    let descriptor = POOL
        .get_message_by_name(&M::full_name())
        .expect("every allot message is in the descriptor set");
    let mut dynamic = DynamicMessage::new(descriptor);
    dynamic
        .transcode_from(message)
        .expect("a message decodes as its own type");
    dynamic
}

/// A message, or one value inside it, ready to print.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    /// A proto map, by key.
    Map(BTreeMap<String, Node>),
    /// A message: its full type name and its fields in proto order.
    Message {
        type_name: String,
        fields: Vec<(String, Node)>,
    },
    List(Vec<Node>),
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => serializer.serialize_none(),
            Node::Bool(value) => serializer.serialize_bool(*value),
            Node::Int(value) => serializer.serialize_i64(*value),
            Node::Float(value) => serializer.serialize_f64(*value),
            Node::Text(value) => serializer.serialize_str(value),
            Node::Map(map) => map.serialize(serializer),
            Node::Message { fields, .. } => {
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

// ---- conversion --------------------------------------------------------------------------

/// Every field of a message, in proto order; a timestamp is its RFC 3339 text.
pub fn node(message: &DynamicMessage) -> Node {
    let descriptor = message.descriptor();
    if descriptor.full_name() == "google.protobuf.Timestamp" {
        return time(message.transcode_to::<Timestamp>().ok().as_ref());
    }
    let fields = descriptor
        .fields()
        .map(|field| {
            let unset_message =
                field.kind().as_message().is_some() && !field.is_list() && !field.is_map();
            let value = if unset_message && !message.has_field(&field) {
                Node::Null
            } else {
                value(&field.kind(), &message.get_field(&field))
            };
            (field.name().to_owned(), value)
        })
        .collect();
    Node::Message {
        type_name: descriptor.full_name().to_owned(),
        fields,
    }
}

/// One value of a field of this kind (for a list or map: of its items' kind).
fn value(kind: &Kind, value: &Value) -> Node {
    match value {
        Value::Bool(value) => Node::Bool(*value),
        Value::I32(value) => Node::Int((*value).into()),
        Value::I64(value) => Node::Int(*value),
        Value::U32(value) => Node::Int((*value).into()),
        Value::U64(value) => i64::try_from(*value).map_or(Node::Text(value.to_string()), Node::Int),
        Value::F32(value) => Node::Float((*value).into()),
        Value::F64(value) => Node::Float(*value),
        Value::String(value) => Node::Text(value.clone()),
        Value::Bytes(value) => Node::Text(BASE64.encode(value)),
        Value::EnumNumber(number) => kind
            .as_enum()
            .and_then(|e| e.get_value(*number))
            .map_or(Node::Int((*number).into()), |v| {
                Node::Text(v.name().to_owned())
            }),
        Value::Message(message) => node(message),
        Value::List(items) => {
            Node::List(items.iter().map(|item| self::value(kind, item)).collect())
        }
        Value::Map(map) => {
            let Some(entry) = kind.as_message() else {
                return Node::Null;
            };
            let value_kind = entry.map_entry_value_field().kind();
            let entries = map
                .iter()
                .map(|(key, item)| (map_key(key), self::value(&value_kind, item)))
                .collect();
            Node::Map(entries)
        }
    }
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::Bool(value) => value.to_string(),
        MapKey::I32(value) => value.to_string(),
        MapKey::I64(value) => value.to_string(),
        MapKey::U32(value) => value.to_string(),
        MapKey::U64(value) => value.to_string(),
        MapKey::String(value) => value.clone(),
    }
}

/// RFC 3339 in UTC, with as many fractional digits as needed.
pub fn rfc3339(value: Option<&Timestamp>) -> Option<String> {
    value
        .and_then(|ts| DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?))
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// A timestamp: RFC 3339, or null when unset.
fn time(value: Option<&Timestamp>) -> Node {
    rfc3339(value).map_or(Node::Null, Node::Text)
}

/// Amounts of money on one line: `USD 1.25; EUR -0.5` (empty for none).
pub fn money_line(money: &[proto::Money]) -> String {
    let parts: Vec<String> = money
        .iter()
        .map(|m| money_text(&m.currency, &m.amount))
        .collect();
    parts.join("; ")
}

fn money_text(currency: &str, amount: &str) -> String {
    format!("{currency} {amount}")
}

/// Messages that read as one value: money (`USD 1.25`) and rate dimensions
/// (`0.2/1000 output_tokens`).
fn inline(type_name: &str, fields: &[(String, Node)]) -> Option<String> {
    let field = |name: &str| match find(fields, name) {
        Node::Text(text) => text.as_str(),
        _ => "",
    };
    match type_name {
        "allot.v1.Money" => Some(money_text(field("currency"), field("amount"))),
        "allot.v1.Dimension" => Some(format!(
            "{}/{} {}",
            field("units"),
            field("per"),
            field("name")
        )),
        "allot.v1.ListPrice" => Some(format!(
            "{}/{} {}",
            money_text(field("currency"), field("price")),
            if field("per").is_empty() {
                "1000"
            } else {
                field("per")
            },
            field("dimension")
        )),
        _ => None,
    }
}

fn find<'a>(fields: &'a [(String, Node)], name: &str) -> &'a Node {
    fields
        .iter()
        .find(|(field, _)| field == name)
        .map_or(&Node::Null, |(_, value)| value)
}

/// The field names of a message's columns when many are listed.
fn columns(descriptor: &MessageDescriptor) -> Vec<String> {
    match COLUMNS
        .iter()
        .find(|(name, _)| *name == descriptor.full_name())
    {
        Some((_, columns)) => columns.iter().map(|c| c.to_string()).collect(),
        None => descriptor.fields().map(|f| f.name().to_owned()).collect(),
    }
}

// ---- pages -------------------------------------------------------------------------------

/// A list response's `next_page_token` (empty: the last page).
pub fn next_page_token(response: &DynamicMessage) -> String {
    response
        .get_field_by_name("next_page_token")
        .and_then(|token| token.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Adds a later page to the pages so far: its items after theirs, its token instead.
pub fn append_page(pages: &mut DynamicMessage, page: DynamicMessage) {
    for field in page.descriptor().fields() {
        let value = page.get_field(&field);
        match (pages.get_field_mut(&field).as_list_mut(), value.as_list()) {
            (Some(items), Some(more)) => items.extend_from_slice(more),
            _ => pages.set_field(&field, value.into_owned()),
        }
    }
}

/// The repeated message field of a list response (`accounts`, …).
fn items_field(response: &MessageDescriptor) -> Option<prost_reflect::FieldDescriptor> {
    response
        .fields()
        .find(|field| field.is_list() && field.kind().as_message().is_some())
}

// ---- printers ----------------------------------------------------------------------------

/// Where results go: stdout, as text or JSON.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// One message: `field: value` lines (lists of messages as tables below them), or JSON.
    pub fn one<M: prost::Message + prost::Name>(&self, message: &M) -> io::Result<()> {
        let node = node(&dynamic(message));
        self.print(&node, || detail(&node))
    }

    /// One message laid out by `human` for people, or JSON.
    pub fn laid_out<M: prost::Message + prost::Name>(
        &self,
        message: &M,
        human: impl FnOnce(&M) -> String,
    ) -> io::Result<()> {
        self.print(&node(&dynamic(message)), || human(message))
    }

    /// One message as a one-row table (balances), or JSON.
    pub fn row<M: prost::Message + prost::Name>(&self, message: &M) -> io::Result<()> {
        let message = dynamic(message);
        let node = node(&message);
        let columns = columns(&message.descriptor());
        self.print(&node, || table_of(&columns, std::slice::from_ref(&node)))
    }

    /// A list response (one or more pages): its items as a table, or JSON; a next page is
    /// named on stderr.
    pub fn many(&self, response: &DynamicMessage) -> io::Result<()> {
        let node = node(response);
        let field = items_field(&response.descriptor());
        let (columns, items) = match (&field, &node) {
            (Some(field), Node::Message { fields, .. }) => {
                let item = field.kind();
                let columns = item.as_message().map(columns).unwrap_or_default();
                match find(fields, field.name()) {
                    Node::List(items) => (columns, items.as_slice()),
                    _ => (columns, &[][..]),
                }
            }
            _ => (Vec::new(), &[][..]),
        };
        self.print(&node, || table_of(&columns, items))?;
        let token = next_page_token(response);
        if !self.json && !token.is_empty() {
            eprintln!("more: --page-token {token} (or --all)");
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

/// The fields of a message for the `field: value` view.
pub fn fields<M: prost::Message + prost::Name>(message: &M) -> Vec<(String, Node)> {
    match node(&dynamic(message)) {
        Node::Message { fields, .. } => fields,
        _ => Vec::new(),
    }
}

/// `field: value` lines, aligned; a nested message's fields in its place; fields holding
/// lists of messages (rates, burns) follow as tables.
pub fn detail(node: &Node) -> String {
    match node {
        Node::Message { fields, .. } => lines(fields),
        other => format!("{}\n", cell(other)),
    }
}

/// [`detail`] of these fields.
pub fn lines(fields: &[(String, Node)]) -> String {
    let mut lines = Vec::new();
    let mut tables = Vec::new();
    flatten(fields, &[], &mut lines, &mut tables);
    let width = lines
        .iter()
        .map(|(name, _)| name.len() + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (name, node) in lines {
        let _ = writeln!(out, "{:<width$} {}", format!("{name}:"), cell(node));
    }
    for (name, items) in tables {
        let columns = match items.first() {
            Some(Node::Message { type_name, fields }) => POOL
                .get_message_by_name(type_name)
                .map(|descriptor| columns(&descriptor))
                .unwrap_or_else(|| fields.iter().map(|(name, _)| name.clone()).collect()),
            _ => Vec::new(),
        };
        let _ = writeln!(out, "{name}:");
        for line in table_of(&columns, items).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

type Line<'a> = (&'a str, &'a Node);

/// Sorts fields into lines and tables; a nested message's own fields are taken in its place
/// (but for names `outer` has already).
fn flatten<'a>(
    fields: &'a [(String, Node)],
    outer: &[(String, Node)],
    lines: &mut Vec<Line<'a>>,
    tables: &mut Vec<(&'a str, &'a [Node])>,
) {
    for (name, node) in fields {
        if outer.iter().any(|(field, _)| field == name) {
            continue;
        }
        match node {
            Node::Message {
                type_name,
                fields: inner,
            } if inline(type_name, inner).is_none() => flatten(inner, fields, lines, tables),
            Node::List(items) if items.first().is_some_and(is_table_row) => {
                tables.push((name, items))
            }
            _ => lines.push((name, node)),
        }
    }
}

fn is_table_row(node: &Node) -> bool {
    matches!(node, Node::Message { type_name, fields } if inline(type_name, fields).is_none())
}

/// A table of messages: one row each, one column per (possibly dotted) field name.
fn table_of(columns: &[String], items: &[Node]) -> String {
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
        Node::Message { fields, .. } => find(fields, name),
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
        Node::Float(value) => value.to_string(),
        Node::Text(value) if value.is_empty() => "-".to_string(),
        Node::Text(value) => value.clone(),
        Node::Map(map) => joined(
            map.iter()
                .map(|(k, v)| format!("{k}={}", cell(v)))
                .collect(),
            ", ",
        ),
        Node::Message { type_name, fields } => match inline(type_name, fields) {
            Some(text) => text,
            None => joined(
                fields
                    .iter()
                    .map(|(name, value)| (name, cell(value)))
                    .filter(|(_, value)| value != "-")
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect(),
                " ",
            ),
        },
        Node::List(items) => joined(items.iter().map(cell).collect(), "; "),
    }
}

/// Left-aligned columns two spaces apart, a header row first, no borders.
pub fn table<S: AsRef<str>>(header: &[&str], rows: &[Vec<S>]) -> String {
    let mut table = comfy_table::Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_header(header.iter().copied())
        .add_rows(
            rows.iter()
                .map(|row| row.iter().map(|cell| cell.as_ref().to_owned())),
        );
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut out = String::new();
    for line in table.lines() {
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

    fn node_of<M: prost::Message + prost::Name>(message: &M) -> Node {
        node(&dynamic(message))
    }

    fn columns_of<M: prost::Message + prost::Name>(message: &M) -> Vec<String> {
        columns(&dynamic(message).descriptor())
    }

    #[test]
    fn json_keeps_proto_order_enum_names_and_rfc3339() {
        let json = serde_json::to_string(&node_of(&account())).unwrap();
        assert_eq!(
            json,
            r#"{"id":"acct_1","external_id":"cust-42","display_name":"","parent_id":"","state":"ACCOUNT_STATE_ACTIVE","labels":{"tier":"gold"},"create_time":"2026-09-21T14:13:20.500Z","update_time":null}"#
        );
    }

    #[test]
    fn unknown_enum_values_stay_numbers() {
        let grant = proto::Grant {
            kind: 42,
            ..Default::default()
        };
        assert_eq!(lookup(&node_of(&grant), "kind"), &Node::Int(42));
    }

    #[test]
    fn tables_align_and_mark_empty_cells() {
        let mut other = account();
        other.id = "acct_22".into();
        other.display_name = "Research".into();
        let text = table_of(&columns_of(&other), &[node_of(&account()), node_of(&other)]);
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
                list_prices: vec![proto::ListPrice {
                    dimension: "output_tokens".into(),
                    per: String::new(),
                    price: "0.002".into(),
                    currency: "USD".into(),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = detail(&node_of(&card));
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
             \x20 request_type  flat_units  dimensions              max_units  route  provider_cost  list_prices\n\
             \x20 chat.message  1           0.2/1000 output_tokens  -          -      -              USD 0.002/1000 output_tokens\n"
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
        assert_eq!(cell(lookup(&node_of(&wallet), "balance.available")), "7.5");
        assert_eq!(cell(lookup(&node_of(&wallet), "balance.nope")), "-");
    }

    fn debit() -> proto::DebitResponse {
        proto::DebitResponse {
            transaction: Some(proto::Transaction {
                id: "txn_1".into(),
                kind: proto::TransactionKind::Debit as i32,
                units: "1.5".into(),
                rate_card_version: 9_000_000_000,
                quantities: [("b".to_string(), "2".to_string()), ("a".into(), "1".into())].into(),
                burns: vec![proto::GrantBurn {
                    grant_id: "grt_1".into(),
                    units: "1.5".into(),
                    ..Default::default()
                }],
                money: vec![proto::Money {
                    currency: "USD".into(),
                    amount: "-0.25".into(),
                }],
                ..Default::default()
            }),
            replayed: true,
        }
    }

    #[test]
    fn json_nests_messages_and_keeps_every_field() {
        let json = serde_json::to_string(&node_of(&debit())).unwrap();
        assert_eq!(
            json,
            r#"{"transaction":{"id":"txn_1","kind":"TRANSACTION_KIND_DEBIT","wallet_id":"","account_id":"","units":"1.5","balance_after":"","request_type":"","quantities":{"a":"1","b":"2"},"rate_card_version":9000000000,"request_id":"","create_time":null,"actor":"","metadata":{},"burns":[{"grant_id":"grt_1","units":"1.5","unit_price":"","currency":"","money":""}],"provider_cost":"","grant_id":"","delta":"","reservation_id":"","refunded_transaction_id":"","reason":"","hash":"","prev_hash":"","money":[{"currency":"USD","amount":"-0.25"}],"override_id":""},"replayed":true}"#
        );
    }

    #[test]
    fn a_nested_message_stands_in_its_place_and_money_reads_as_one_value() {
        assert_eq!(
            detail(&node_of(&debit())),
            "id:                      txn_1\n\
             kind:                    TRANSACTION_KIND_DEBIT\n\
             wallet_id:               -\n\
             account_id:              -\n\
             units:                   1.5\n\
             balance_after:           -\n\
             request_type:            -\n\
             quantities:              a=1, b=2\n\
             rate_card_version:       9000000000\n\
             request_id:              -\n\
             create_time:             -\n\
             actor:                   -\n\
             metadata:                -\n\
             provider_cost:           -\n\
             grant_id:                -\n\
             delta:                   -\n\
             reservation_id:          -\n\
             refunded_transaction_id: -\n\
             reason:                  -\n\
             hash:                    -\n\
             prev_hash:               -\n\
             money:                   USD -0.25\n\
             override_id:             -\n\
             replayed:                true\n\
             burns:\n\
             \x20 grant_id  units  unit_price  currency  money\n\
             \x20 grt_1     1.5    -           -         -\n"
        );
    }

    #[test]
    fn pages_append_their_items_and_keep_the_last_token() {
        let page = |ids: &[&str], token: &str| {
            dynamic(&proto::ListAccountsResponse {
                accounts: ids
                    .iter()
                    .map(|id| proto::Account {
                        id: id.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                next_page_token: token.into(),
            })
        };
        let mut pages = page(&["a", "b"], "t1");
        assert_eq!(next_page_token(&pages), "t1");
        append_page(&mut pages, page(&["c"], ""));
        let merged: proto::ListAccountsResponse = pages.transcode_to().unwrap();
        let ids: Vec<&str> = merged.accounts.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(
            (ids, merged.next_page_token.as_str()),
            (vec!["a", "b", "c"], "")
        );
    }
}
