//! PostgreSQL: a batch's rows for one table written with one statement, whatever their
//! number. Each column travels as one typed array parameter and `unnest` turns the arrays
//! back into rows, so the statement text is the same for every batch (prepared once per
//! connection and planned cheaply), nothing is padded and nothing is split: a `VALUES` list
//! has a text per row count, and PostgreSQL refuses an upsert that meets one row twice, so
//! there a padded list had to go out in power-of-two chunks (a statement each).
//!
//! Array elements cannot be NULL through the driver, so a nullable column also sends a
//! `bool[]` of which rows are NULL.

use sea_orm::{
    ColumnTrait, ColumnType, ConnectionTrait, DbBackend, DbErr, EntityTrait, IdenStatic, Iterable,
    ModelTrait, Statement, Value, sea_query::ArrayType,
};

/// What happens when a row's key already exists.
pub enum OnConflict<'a, C> {
    /// Skip the row (it is not counted in `rows_affected`).
    Ignore(&'a [C]),
    /// Update these columns from the new row.
    Update { key: &'a [C], columns: &'a [C] },
    /// Add the new row's values of these (integer) columns to the stored ones, saturating
    /// ([`saturating_add`]).
    Add { key: &'a [C], columns: &'a [C] },
}

/// `"table"."column" + EXCLUDED."column"` held within a signed 64-bit integer: a counter
/// that would overflow stays at the bound instead of failing the statement (PostgreSQL) or
/// turning into a float (SQLite). Both databases take this text.
pub fn saturating_add(table: &str, column: &str) -> String {
    let stored = format!("\"{table}\".\"{column}\"");
    let added = format!("EXCLUDED.\"{column}\"");
    format!(
        "CASE WHEN {added} > 0 AND {stored} > 9223372036854775807 - {added} \
         THEN 9223372036854775807 \
         WHEN {added} < 0 AND {stored} < (-9223372036854775807 - 1) - {added} \
         THEN (-9223372036854775807 - 1) \
         ELSE {stored} + {added} END"
    )
}

/// `INSERT INTO <table> (<columns>) SELECT … FROM unnest(<arrays>) [ON CONFLICT …]` for
/// `rows` (every column of the entity except `skip`). Without `conflict`, an existing key is
/// an error.
pub fn insert<E: EntityTrait>(
    rows: &[E::Model],
    skip: &[E::Column],
    conflict: Option<OnConflict<'_, E::Column>>,
) -> Statement {
    let mut values = Vec::new();
    let sql = insert_sql::<E>(rows, skip, conflict, &mut values);
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// A batch's bulk writes to several tables sent as one statement (data-modifying common table
/// expressions): one round trip instead of one per table. Each part is planned with the same
/// snapshot and none reads another's rows; constraints are checked after all of them.
#[derive(Default)]
pub struct Writes {
    parts: Vec<String>,
    values: Vec<Value>,
    counted: bool,
}

impl Writes {
    /// Adds an insert (see [`insert`]); nothing if `rows` is empty.
    pub fn insert<E: EntityTrait>(
        &mut self,
        rows: &[E::Model],
        skip: &[E::Column],
        conflict: Option<OnConflict<'_, E::Column>>,
    ) {
        if rows.is_empty() {
            return;
        }
        let sql = insert_sql::<E>(rows, skip, conflict, &mut self.values);
        let name = format!("w{}", self.parts.len());
        self.parts.push(format!("{name} AS ({sql})"));
    }

    /// Adds the insert whose new rows [`Writes::execute`] counts (at most one per batch).
    pub fn insert_counted<E: EntityTrait>(
        &mut self,
        rows: &[E::Model],
        conflict: Option<OnConflict<'_, E::Column>>,
    ) {
        debug_assert!(!self.counted, "one counted insert per statement");
        if rows.is_empty() {
            return;
        }
        let sql = insert_sql::<E>(rows, &[], conflict, &mut self.values);
        self.parts.push(format!("counted AS ({sql} RETURNING 1)"));
        self.counted = true;
    }

    /// Runs every part; returns how many rows the counted insert inserted.
    pub async fn execute(self, conn: &impl ConnectionTrait) -> Result<u64, DbErr> {
        if self.parts.is_empty() {
            return Ok(0);
        }
        let count = if self.counted {
            "SELECT count(*) FROM counted"
        } else {
            "SELECT 0::int8"
        };
        let sql = format!("WITH {} {count}", self.parts.join(", "));
        let statement = Statement::from_sql_and_values(DbBackend::Postgres, sql, self.values);
        let row = conn
            .query_one_raw(statement)
            .await?
            .ok_or_else(|| DbErr::Custom("bulk write returned no row".into()))?;
        Ok(row.try_get_by_index::<i64>(0)?.max(0) as u64)
    }
}

/// The `INSERT … SELECT … FROM unnest(…)` text of [`insert`]; its arrays are appended to
/// `values` and numbered after those already there.
fn insert_sql<E: EntityTrait>(
    rows: &[E::Model],
    skip: &[E::Column],
    conflict: Option<OnConflict<'_, E::Column>>,
    values: &mut Vec<Value>,
) -> String {
    let columns: Vec<E::Column> = E::Column::iter()
        .filter(|c| !skip.iter().any(|s| s.as_str() == c.as_str()))
        .collect();
    let mut arrays = Vec::new();
    let mut names = Vec::new();
    let mut aliases = Vec::new();
    let mut selected = Vec::new();
    for column in &columns {
        let def = column.def();
        let nullable = def.is_null();
        let (pg_type, array_type, default) = array_type(def.get_column_type());
        let name = column.as_str();
        let mut cells = Vec::with_capacity(rows.len());
        let mut nulls = Vec::with_capacity(if nullable { rows.len() } else { 0 });
        for row in rows {
            let value = row.get(*column);
            if nullable && value == value.as_null() {
                nulls.push(Value::Bool(Some(true)));
                cells.push(default.clone());
            } else {
                if nullable {
                    nulls.push(Value::Bool(Some(false)));
                }
                cells.push(value);
            }
        }
        values.push(Value::Array(array_type, Some(Box::new(cells))));
        arrays.push(format!("${}::{pg_type}[]", values.len()));
        names.push(format!("\"{name}\""));
        aliases.push(format!("\"{name}\""));
        if nullable {
            values.push(Value::Array(ArrayType::Bool, Some(Box::new(nulls))));
            arrays.push(format!("${}::bool[]", values.len()));
            aliases.push(format!("\"{name}__null\""));
            selected.push(format!(
                "CASE WHEN u.\"{name}__null\" THEN NULL ELSE u.\"{name}\" END"
            ));
        } else {
            selected.push(format!("u.\"{name}\""));
        }
    }
    let quoted = |cols: &[E::Column]| {
        cols.iter()
            .map(|c| format!("\"{}\"", c.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let on_conflict = match conflict {
        None => String::new(),
        Some(OnConflict::Ignore(key)) => format!(" ON CONFLICT ({}) DO NOTHING", quoted(key)),
        Some(OnConflict::Update { key, columns }) => format!(
            " ON CONFLICT ({}) DO UPDATE SET {}",
            quoted(key),
            columns
                .iter()
                .map(|c| format!("\"{0}\" = EXCLUDED.\"{0}\"", c.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(OnConflict::Add { key, columns }) => format!(
            " ON CONFLICT ({}) DO UPDATE SET {}",
            quoted(key),
            columns
                .iter()
                .map(|c| format!(
                    "\"{}\" = {}",
                    c.as_str(),
                    saturating_add(E::default().table_name(), c.as_str())
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "INSERT INTO \"{table}\" ({names}) SELECT {selected} FROM unnest({arrays}) AS u({aliases}){on_conflict}",
        table = E::default().table_name(),
        names = names.join(", "),
        selected = selected.join(", "),
        arrays = arrays.join(", "),
        aliases = aliases.join(", "),
    )
}

/// The PostgreSQL element type, driver array type and NULL stand-in for a column type (the
/// types the entities use).
fn array_type(column: &ColumnType) -> (&'static str, ArrayType, Value) {
    match column {
        ColumnType::String(_) | ColumnType::Text | ColumnType::Char(_) => (
            "text",
            ArrayType::String,
            Value::String(Some(String::new())),
        ),
        ColumnType::BigInteger => ("int8", ArrayType::BigInt, Value::BigInt(Some(0))),
        ColumnType::Integer => ("int4", ArrayType::Int, Value::Int(Some(0))),
        ColumnType::Boolean => ("bool", ArrayType::Bool, Value::Bool(Some(false))),
        ColumnType::JsonBinary => (
            "jsonb",
            ArrayType::Json,
            Value::Json(Some(Box::new(serde_json::Value::Null))),
        ),
        ColumnType::Binary(_) | ColumnType::VarBinary(_) | ColumnType::Blob => {
            ("bytea", ArrayType::Bytes, Value::Bytes(Some(Vec::new())))
        }
        other => unreachable!("no bulk array type for column type {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::entity::{grant, idempotency_key};

    #[test]
    fn one_array_per_column_and_a_null_mask_for_nullable_ones() {
        let grant = grant::Model {
            id: "grt_1".into(),
            wallet_id: "wal_1".into(),
            kind: crate::domain::GrantKind::Purchase,
            amount: 5,
            remaining: 5,
            priority: 0,
            effective_time: 1,
            expire_time: None,
            unit_price: Default::default(),
            currency: "USD".into(),
            contract_ref: String::new(),
            voided: false,
            create_time: 1,
            status: crate::domain::LotStatus::Active,
            repaid: 0,
            schedule_id: None,
            period_index: Some(3),
            rolled_over: 0,
            void_reason: String::new(),
            expiry_noticed: false,
        };
        let rows = [
            grant.clone(),
            grant::Model {
                id: "grt_2".into(),
                expire_time: Some(9),
                ..grant
            },
        ];
        let update = OnConflict::Update {
            key: &[grant::Column::Id],
            columns: &[grant::Column::Remaining],
        };
        let statement = insert::<grant::Entity>(&rows, &[], Some(update));
        let sql = statement.sql;
        assert!(
            sql.starts_with(r#"INSERT INTO "grants" ("id", "wallet_id""#),
            "{sql}"
        );
        assert!(
            sql.contains(r#"CASE WHEN u."expire_time__null" THEN NULL ELSE u."expire_time" END"#)
        );
        assert!(
            sql.ends_with(r#"ON CONFLICT ("id") DO UPDATE SET "remaining" = EXCLUDED."remaining""#)
        );
        let values = statement.values.expect("values").0;
        // 20 columns, 3 of them nullable (expire_time, schedule_id, period_index).
        assert_eq!(values.len(), 23);
        let expire = values.iter().position(|v| {
            *v == Value::Array(
                ArrayType::BigInt,
                Some(Box::new(vec![
                    Value::BigInt(Some(0)),
                    Value::BigInt(Some(9)),
                ])),
            )
        });
        let mask = Value::Array(
            ArrayType::Bool,
            Some(Box::new(vec![
                Value::Bool(Some(true)),
                Value::Bool(Some(false)),
            ])),
        );
        assert_eq!(
            values.get(expire.expect("expire_time array") + 1),
            Some(&mask)
        );
    }

    #[test]
    fn without_conflict_handling_a_clash_is_an_error() {
        let row = idempotency_key::Model {
            scope: "s".into(),
            request_id: "r".into(),
            method: "Debit".into(),
            fingerprint: "f".into(),
            response: vec![1, 2],
            create_time: 7,
        };
        let sql = insert::<idempotency_key::Entity>(&[row], &[], None).sql;
        assert!(sql.ends_with(r#"$6::int8[]) AS u("scope", "request_id", "method", "fingerprint", "response", "create_time")"#), "{sql}");
        assert!(sql.contains("$5::bytea[]"));
    }

    #[test]
    fn writes_number_their_arrays_across_parts_and_count_one() {
        let key = idempotency_key::Model {
            scope: "s".into(),
            request_id: "r".into(),
            method: "Debit".into(),
            fingerprint: "f".into(),
            response: vec![1],
            create_time: 7,
        };
        let mut writes = Writes::default();
        writes.insert::<idempotency_key::Entity>(&[], &[], None);
        writes.insert::<idempotency_key::Entity>(std::slice::from_ref(&key), &[], None);
        let ignore = OnConflict::Ignore(&[
            idempotency_key::Column::Scope,
            idempotency_key::Column::RequestId,
        ]);
        writes.insert_counted::<idempotency_key::Entity>(&[key], Some(ignore));
        assert_eq!(writes.parts.len(), 2, "an empty insert adds nothing");
        assert!(writes.parts[0].starts_with("w0 AS (INSERT INTO \"idempotency_keys\""));
        assert!(writes.parts[0].contains("unnest($1::text[]"));
        assert!(
            writes.parts[1].contains("unnest($7::text[]"),
            "{}",
            writes.parts[1]
        );
        assert!(writes.parts[1].ends_with("DO NOTHING RETURNING 1)"));
        assert_eq!(writes.values.len(), 12);
    }
}
