//! What docs/OPERATIONS.md ("The road past one PostgreSQL primary") says of the schema, read
//! back from a freshly migrated database (SQLite by default; PostgreSQL with
//! `DATABASE_URL=postgres://…`), so that a migration that changes it fails here until the
//! document is brought up to date:
//!
//! * the document's table names every table of the schema, and its columns "carried today"
//!   and "fits today" are what the schema shows: whether a distributed table has its
//!   distribution column (NOT NULL, or nullable), and whether that column is in its primary
//!   key, in every unique constraint and in every foreign key to another distributed table
//!   (a reference table fits when it references no distributed table);
//! * the keys the document quotes: every primary key, every other unique constraint and
//!   every foreign key;
//! * every table with per-wallet rows carries a NOT NULL `account_id`, except `grants` and
//!   the webhook dispatcher's two;
//! * `rate_card_head` holds one row, id 1: the row every ledger batch locks.
//!
//! The "no" answers are facts as much as the "yes" ones: nothing here claims more of the
//! schema than it does.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::TestDatabase;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, QueryResult, Statement};

/// The header of the document's distribution table (the test reads the rows under it).
const HEADER: &str =
    "| table | place as | distribution column | carried today | fits today | what would change |";

/// Every table's primary key, its columns in key order.
const PRIMARY_KEYS: [(&str, &str); 17] = [
    ("account_overrides", "id"),
    ("accounts", "id"),
    ("audit_events", "id"),
    ("events", "id"),
    ("grants", "id"),
    ("idempotency_keys", "scope,request_id"),
    ("rate_card_head", "id"),
    ("rate_cards", "version"),
    ("reservations", "id"),
    ("schedules", "id"),
    ("transactions", "seq"),
    (
        "usage_days",
        "wallet_id,day,request_type,rate_card_version,currency,unit_price",
    ),
    ("wallets", "id"),
    ("webhook_attempts", "delivery_id,attempt"),
    ("webhook_deliveries", "id"),
    ("webhook_endpoints", "id"),
    ("webhook_fanout", "wallet_id"),
];

/// Every unique constraint or unique index other than a primary key: (table, columns).
const UNIQUE: [(&str, &str); 6] = [
    ("accounts", "external_id"),
    ("events", "wallet_id,sequence"),
    ("grants", "schedule_id,period_index"),
    ("transactions", "id"),
    ("wallets", "account_id,unit"),
    ("webhook_deliveries", "endpoint_id,event_id"),
];

/// Every foreign key: (table, columns, referenced table, referenced columns).
const FOREIGN_KEYS: [(&str, &str, &str, &str); 2] = [
    ("grants", "wallet_id", "wallets", "id"),
    ("wallets", "account_id", "accounts", "id"),
];

/// One table as the live schema has it.
#[derive(Debug, Default)]
struct Table {
    /// Column → nullable.
    columns: BTreeMap<String, bool>,
    /// The primary key's columns, in key order.
    primary_key: Vec<String>,
    /// Unique constraints and unique indexes other than the primary key, each its columns in
    /// order.
    unique: BTreeSet<Vec<String>>,
    /// Foreign keys: (columns, referenced table, referenced columns).
    foreign_keys: BTreeSet<(Vec<String>, String, Vec<String>)>,
}

/// Table name → table (without sea-orm's own `seaql_migrations`).
type Schema = BTreeMap<String, Table>;

async fn rows(conn: &DatabaseConnection, sql: &str) -> Vec<QueryResult> {
    conn.query_all_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
}

fn get<T: sea_orm::TryGetable>(row: &QueryResult, column: &str) -> T {
    row.try_get("", column)
        .unwrap_or_else(|err| panic!("column {column}: {err}"))
}

/// `a,b,c` → `["a", "b", "c"]`.
fn list(text: &str) -> Vec<String> {
    text.split(',').map(str::to_string).collect()
}

async fn read_postgres(conn: &DatabaseConnection) -> Schema {
    let mut schema = Schema::new();
    for row in rows(
        conn,
        "SELECT tablename::text AS name FROM pg_tables WHERE schemaname = current_schema()",
    )
    .await
    {
        schema.insert(get(&row, "name"), Table::default());
    }
    for row in rows(
        conn,
        "SELECT table_name::text AS table_name, column_name::text AS column_name, \
         (is_nullable = 'YES') AS nullable \
         FROM information_schema.columns WHERE table_schema = current_schema()",
    )
    .await
    {
        let table: String = get(&row, "table_name");
        if let Some(table) = schema.get_mut(&table) {
            table
                .columns
                .insert(get(&row, "column_name"), get(&row, "nullable"));
        }
    }
    // Unique indexes (primary keys and unique constraints have one each), their columns in
    // index order.
    for row in rows(
        conn,
        "SELECT t.relname::text AS table_name, ix.indisprimary AS is_primary, \
         string_agg(a.attname::text, ',' ORDER BY k.ord) AS columns \
         FROM pg_index ix \
         JOIN pg_class t ON t.oid = ix.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         CROSS JOIN LATERAL unnest(ix.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
         WHERE n.nspname = current_schema() AND ix.indisunique \
         GROUP BY ix.indexrelid, t.relname, ix.indisprimary",
    )
    .await
    {
        let table: String = get(&row, "table_name");
        let columns = list(&get::<String>(&row, "columns"));
        if let Some(table) = schema.get_mut(&table) {
            if get::<bool>(&row, "is_primary") {
                table.primary_key = columns;
            } else {
                table.unique.insert(columns);
            }
        }
    }
    for row in rows(
        conn,
        "SELECT t.relname::text AS table_name, r.relname::text AS referenced, \
         (SELECT string_agg(a.attname::text, ',' ORDER BY k.ord) \
            FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord) \
            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum) AS columns, \
         (SELECT string_agg(a.attname::text, ',' ORDER BY k.ord) \
            FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, ord) \
            JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum) \
            AS referenced_columns \
         FROM pg_constraint c \
         JOIN pg_class t ON t.oid = c.conrelid \
         JOIN pg_class r ON r.oid = c.confrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE c.contype = 'f' AND n.nspname = current_schema()",
    )
    .await
    {
        let table: String = get(&row, "table_name");
        let key = (
            list(&get::<String>(&row, "columns")),
            get::<String>(&row, "referenced"),
            list(&get::<String>(&row, "referenced_columns")),
        );
        if let Some(table) = schema.get_mut(&table) {
            table.foreign_keys.insert(key);
        }
    }
    schema
}

async fn read_sqlite(conn: &DatabaseConnection) -> Schema {
    let mut schema = Schema::new();
    let names: Vec<String> = rows(
        conn,
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .await
    .iter()
    .map(|row| get(row, "name"))
    .collect();
    for name in names {
        let mut table = Table::default();
        let mut key: Vec<(i64, String)> = Vec::new();
        for row in rows(
            conn,
            &format!(r#"SELECT name, "notnull" AS not_null, pk FROM pragma_table_info('{name}')"#),
        )
        .await
        {
            let column: String = get(&row, "name");
            let not_null: i64 = get(&row, "not_null");
            let position: i64 = get(&row, "pk");
            table.columns.insert(column.clone(), not_null == 0);
            if position > 0 {
                key.push((position, column));
            }
        }
        key.sort();
        table.primary_key = key.into_iter().map(|(_, column)| column).collect();
        // Unique constraints ('u') and unique indexes ('c'); the primary key's own index
        // ('pk') is read above.
        for row in rows(
            conn,
            &format!(
                r#"SELECT name FROM pragma_index_list('{name}') WHERE "unique" = 1 AND origin <> 'pk'"#
            ),
        )
        .await
        {
            let index: String = get(&row, "name");
            let columns: Vec<String> = rows(
                conn,
                &format!("SELECT name FROM pragma_index_info('{index}') ORDER BY seqno"),
            )
            .await
            .iter()
            .map(|row| get(row, "name"))
            .collect();
            table.unique.insert(columns);
        }
        let mut keys: BTreeMap<i64, (Vec<String>, String, Vec<String>)> = BTreeMap::new();
        for row in rows(
            conn,
            &format!(
                r#"SELECT id, "table" AS referenced, "from" AS from_column, "to" AS to_column
                FROM pragma_foreign_key_list('{name}') ORDER BY id, seq"#
            ),
        )
        .await
        {
            let id: i64 = get(&row, "id");
            let entry = keys
                .entry(id)
                .or_insert_with(|| (Vec::new(), get(&row, "referenced"), Vec::new()));
            entry.0.push(get(&row, "from_column"));
            // NULL when the key names the referenced table's primary key implicitly (the
            // migrations always name the columns).
            entry
                .2
                .push(get::<Option<String>>(&row, "to_column").unwrap_or_default());
        }
        table.foreign_keys = keys.into_values().collect();
        schema.insert(name, table);
    }
    schema
}

/// The schema a fresh database has after every migration, and the ids of the rate-card head
/// rows. The test database is dropped before anything is asserted.
async fn live_schema() -> (Schema, Vec<i64>) {
    let db = TestDatabase::create().await;
    let conn = Database::connect(&db.url).await.expect("connect");
    Migrator::up(&conn, None).await.expect("migrate");
    let mut schema = match conn.get_database_backend() {
        DbBackend::Postgres => read_postgres(&conn).await,
        _ => read_sqlite(&conn).await,
    };
    schema.remove("seaql_migrations");
    let head = rows(
        &conn,
        "SELECT CAST(id AS BIGINT) AS id FROM rate_card_head ORDER BY id",
    )
    .await
    .iter()
    .map(|row| get::<i64>(row, "id"))
    .collect();
    conn.close().await.expect("close");
    db.drop_database().await;
    (schema, head)
}

/// One row of the document's distribution table.
#[derive(Debug)]
struct Documented {
    /// `distributed` or `reference`.
    place: String,
    /// The distribution column (distributed tables).
    column: Option<String>,
    /// `yes`, `no` or `nullable` (distributed tables).
    carried: String,
    /// `yes` or `no`.
    fits: String,
}

/// The first word of a cell, lower-cased (`yes`, `no`, `nullable`, …; empty for `—`).
fn first_word(cell: &str) -> String {
    cell.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_lowercase()
}

/// The rows of docs/OPERATIONS.md's distribution table, by table.
fn documented() -> BTreeMap<String, Documented> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/OPERATIONS.md");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let mut lines = text.lines().skip_while(|line| line.trim() != HEADER);
    assert!(
        lines.next().is_some(),
        "docs/OPERATIONS.md has no table headed `{HEADER}`"
    );
    lines.next(); // |---|---|…
    let mut rows = BTreeMap::new();
    for line in lines.take_while(|line| line.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "", table, place, column, carried, fits, change, ""
        assert!(cells.len() >= 7, "a row of the distribution table: {line}");
        let column = cells[3].trim_matches('`');
        let row = Documented {
            place: first_word(cells[2]),
            column: (!first_word(column).is_empty()).then(|| column.to_string()),
            carried: first_word(cells[4]),
            fits: first_word(cells[5]),
        };
        let table = cells[1].trim_matches('`').to_string();
        assert!(
            rows.insert(table.clone(), row).is_none(),
            "`{table}` is in the distribution table twice"
        );
    }
    rows
}

/// Whether `table` has `column`, and NOT NULL: `yes`, `nullable` or `no`.
fn carried(table: &Table, column: &str) -> &'static str {
    match table.columns.get(column) {
        Some(false) => "yes",
        Some(true) => "nullable",
        None => "no",
    }
}

/// Whether a table meets Citus' rules as placed: a distributed table has its column NOT
/// NULL, in its primary key, in every unique constraint, and on both sides of every foreign
/// key to another distributed table; a reference table references no distributed table.
fn fits(table: &Table, column: Option<&str>, distributed: &BTreeMap<&str, &str>) -> bool {
    let Some(column) = column else {
        return table
            .foreign_keys
            .iter()
            .all(|(_, target, _)| !distributed.contains_key(target.as_str()));
    };
    let has = |columns: &Vec<String>| columns.iter().any(|c| c == column);
    table.columns.get(column) == Some(&false)
        && has(&table.primary_key)
        && table.unique.iter().all(has)
        && table.foreign_keys.iter().all(|(columns, target, targets)| {
            match distributed.get(target.as_str()) {
                None => true,
                Some(target_column) => columns
                    .iter()
                    .zip(targets)
                    .any(|(c, t)| c == column && t == target_column),
            }
        })
}

#[tokio::test]
async fn the_distribution_table_in_the_operations_guide_matches_the_schema() {
    let (schema, _) = live_schema().await;
    let documented = documented();
    let names: BTreeSet<&str> = schema.keys().map(String::as_str).collect();
    let listed: BTreeSet<&str> = documented.keys().map(String::as_str).collect();
    assert_eq!(
        listed, names,
        "docs/OPERATIONS.md's distribution table must list exactly the schema's tables"
    );
    let mut distributed = BTreeMap::new();
    for (name, row) in &documented {
        match (row.place.as_str(), &row.column) {
            ("distributed", Some(column)) => {
                distributed.insert(name.as_str(), column.as_str());
            }
            ("reference", None) => {}
            _ => panic!("`{name}`: place it as `distributed` with a column, or `reference`"),
        }
    }
    for (name, row) in &documented {
        let table = &schema[name.as_str()];
        let column = distributed.get(name.as_str()).copied();
        if let Some(column) = column {
            assert_eq!(
                row.carried,
                carried(table, column),
                "`{name}`.`{column}` carried today? (docs/OPERATIONS.md) — the table: {table:#?}"
            );
        }
        let fits_today = if fits(table, column, &distributed) {
            "yes"
        } else {
            "no"
        };
        assert_eq!(
            row.fits, fits_today,
            "`{name}` fits today? (docs/OPERATIONS.md) — the table: {table:#?}"
        );
    }
}

#[tokio::test]
async fn keys_are_those_the_operations_guide_quotes() {
    let (schema, _) = live_schema().await;
    let primary: BTreeMap<&str, String> = schema
        .iter()
        .map(|(name, table)| (name.as_str(), table.primary_key.join(",")))
        .collect();
    let expected: BTreeMap<&str, String> = PRIMARY_KEYS
        .iter()
        .map(|(table, key)| (*table, key.to_string()))
        .collect();
    assert_eq!(primary, expected, "primary keys (docs/OPERATIONS.md)");

    let unique: BTreeSet<(String, String)> = schema
        .iter()
        .flat_map(|(name, table)| {
            table
                .unique
                .iter()
                .map(move |columns| (name.clone(), columns.join(",")))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = UNIQUE
        .iter()
        .map(|(table, columns)| (table.to_string(), columns.to_string()))
        .collect();
    assert_eq!(unique, expected, "unique constraints (docs/OPERATIONS.md)");

    let foreign: BTreeSet<(String, String, String, String)> = schema
        .iter()
        .flat_map(|(name, table)| {
            table
                .foreign_keys
                .iter()
                .map(move |(columns, target, targets)| {
                    (
                        name.clone(),
                        columns.join(","),
                        target.clone(),
                        targets.join(","),
                    )
                })
        })
        .collect();
    let expected: BTreeSet<(String, String, String, String)> = FOREIGN_KEYS
        .iter()
        .map(|(table, columns, target, targets)| {
            (
                table.to_string(),
                columns.to_string(),
                target.to_string(),
                targets.to_string(),
            )
        })
        .collect();
    assert_eq!(foreign, expected, "foreign keys (docs/OPERATIONS.md)");
}

#[tokio::test]
async fn every_per_wallet_table_but_grants_carries_the_account() {
    let (schema, _) = live_schema().await;
    let per_wallet: BTreeSet<&str> = schema
        .iter()
        .filter(|(_, table)| table.columns.contains_key("wallet_id"))
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        per_wallet,
        BTreeSet::from([
            "events",
            "grants",
            "reservations",
            "schedules",
            "transactions",
            "usage_days",
            "webhook_deliveries",
            "webhook_fanout"
        ]),
        "the tables with per-wallet rows"
    );
    let without: BTreeSet<&str> = per_wallet
        .iter()
        .copied()
        .filter(|name| schema[*name].columns.get("account_id") != Some(&false))
        .collect();
    // The webhook dispatcher's tables are placed by endpoint and by wallet, not with the
    // ledger's rows (docs/OPERATIONS.md).
    assert_eq!(
        without,
        BTreeSet::from(["grants", "webhook_deliveries", "webhook_fanout"]),
        "per-wallet tables without a NOT NULL account_id (docs/OPERATIONS.md)"
    );
    assert_eq!(
        schema["wallets"].columns.get("account_id"),
        Some(&false),
        "wallets.account_id is NOT NULL"
    );
}

#[tokio::test]
async fn the_rate_card_head_is_one_row() {
    let (_, head) = live_schema().await;
    assert_eq!(
        head,
        [1],
        "rate_card_head: the one row every ledger batch locks"
    );
}
