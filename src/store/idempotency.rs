//! Idempotency by `request_id` (spec "Idempotency"): scoped (per account for account-bound
//! requests), the response stored as encoded protobuf. Same id + same parameters → the stored
//! response again; same id + different parameters → ALREADY_EXISTS `IDEMPOTENCY_KEY_REUSED`.
//! Records are written in the same transaction as the effect, so a rejected request leaves no
//! record and its id can be used again. Records older than the retention (default 30 days,
//! `--idempotency-retention`) are deleted by the sweeper ([`prune`]); after that the same
//! `request_id` is a new request.

use prost::Message;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QuerySelect, Statement,
    sea_query::{Expr, ExprTrait, OnConflict, Order, Query},
};
use sha2::{Digest, Sha256};

use super::entity::idempotency_key::{self, Column, Entity};
use crate::error::{Error, Reason, Result};

/// The longest request_id accepted.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// How long records are kept by default (the spec's minimum).
pub const DEFAULT_RETENTION: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// Records deleted per transaction when pruning (keeps each write transaction short).
const PRUNE_CHUNK: u64 = 1_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub scope: String,
    pub request_id: String,
    pub method: &'static str,
    pub fingerprint: String,
}

impl Key {
    /// `request` must be the request with its `request_id` cleared: its encoding (maps are
    /// BTreeMaps, so encoding is deterministic) is the fingerprint of the parameters.
    pub fn new(
        scope: String,
        request_id: &str,
        method: &'static str,
        request: &impl Message,
    ) -> Self {
        let digest = Sha256::digest(request.encode_to_vec());
        Key {
            scope,
            request_id: request_id.to_string(),
            method,
            fingerprint: hex::encode(digest),
        }
    }

    /// Scope for requests on one account's resources.
    pub fn account_scope(account_id: &str) -> String {
        format!("acct:{account_id}")
    }

    /// Scope for requests not bound to an account (new top-level accounts, rate cards).
    pub fn caller_scope(sub: &str) -> String {
        format!("sub:{sub}")
    }

    /// Whether `record` (stored under this key) answers this very request: same method and
    /// parameters, else `IDEMPOTENCY_KEY_REUSED`.
    pub fn check(&self, record: &idempotency_key::Model) -> Result<()> {
        if record.method != self.method || record.fingerprint != self.fingerprint {
            return Err(Error::idempotency_key_reused(&self.request_id));
        }
        Ok(())
    }

    /// Answers a request whose key already has `record`: the stored response, or
    /// `IDEMPOTENCY_KEY_REUSED` if the parameters differ.
    pub fn replay<T: Message + Default>(&self, record: &idempotency_key::Model) -> Result<T> {
        self.check(record)?;
        decode(&record.response)
    }

    /// The record that answers this request with `response` from now on.
    pub fn record(&self, response: Vec<u8>, now: i64) -> idempotency_key::Model {
        idempotency_key::Model {
            scope: self.scope.clone(),
            request_id: self.request_id.clone(),
            method: self.method.to_string(),
            fingerprint: self.fingerprint.clone(),
            response,
            create_time: now,
        }
    }
}

/// A stored response, decoded as the message its method answers with.
pub fn decode<T: Message + Default>(response: &[u8]) -> Result<T> {
    T::decode(response).map_err(|err| Error::internal(format!("stored response unreadable: {err}")))
}

/// Validates a request_id: required, at most 128 printable ASCII characters.
pub fn validate_request_id(request_id: &str) -> Result<()> {
    if request_id.is_empty() {
        return Err(Error::missing("request_id"));
    }
    if request_id.len() > MAX_REQUEST_ID_LEN {
        return Err(Error::invalid(
            Reason::FieldTooLong,
            "request_id",
            format!("must be at most {MAX_REQUEST_ID_LEN} characters"),
        ));
    }
    if !request_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            Reason::InvalidField,
            "request_id",
            "must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

pub async fn find(
    conn: &impl ConnectionTrait,
    key: &Key,
) -> Result<Option<idempotency_key::Model>> {
    Ok(Entity::find()
        .filter(Column::Scope.eq(key.scope.as_str()))
        .filter(Column::RequestId.eq(key.request_id.as_str()))
        .one(conn)
        .await?)
}

/// Finds the records of many keys at once (one query per batch).
pub async fn find_many(
    conn: &impl ConnectionTrait,
    keys: &[&Key],
) -> Result<Vec<idempotency_key::Model>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    if super::is_postgres(conn) {
        // An OR of (scope, request_id) pairs is planned as one index scan on the scope prefix
        // with the pairs as a filter when the scopes repeat (one hot account), and a plain join
        // as a scan of the whole key index: either way every record is read per batch. A
        // LATERAL lookup per pair (LIMIT 1 keeps it from being flattened into a join) reads
        // one index entry per key.
        let pairs: Vec<serde_json::Value> = keys
            .iter()
            .map(|k| serde_json::json!({ "s": k.scope, "r": k.request_id }))
            .collect();
        let pairs = serde_json::to_string(&pairs)
            .map_err(|err| Error::internal(format!("encoding keys: {err}")))?;
        return Ok(Entity::find()
            .from_raw_sql(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT k.* FROM jsonb_to_recordset($1::jsonb) AS p(s text, r text) \
                 CROSS JOIN LATERAL (SELECT * FROM idempotency_keys \
                 WHERE scope = p.s AND request_id = p.r LIMIT 1) AS k",
                [pairs.into()],
            ))
            .all(conn)
            .await?);
    }
    let mut condition = sea_orm::Condition::any();
    for key in super::shape::padded(keys.iter().copied()) {
        condition = condition.add(
            sea_orm::Condition::all()
                .add(Column::Scope.eq(key.scope.as_str()))
                .add(Column::RequestId.eq(key.request_id.as_str())),
        );
    }
    Ok(Entity::find().filter(condition).all(conn).await?)
}

/// Records responses; returns how many were new. Fewer than given means another writer
/// (another replica) committed one of the keys first: the caller rolls back and retries.
/// (A ledger batch writes its records with its other rows: `store/ledger/write.rs`.)
pub async fn record_many(
    conn: &impl ConnectionTrait,
    records: &[idempotency_key::Model],
) -> Result<u64> {
    let mut inserted = 0;
    // Padding repeats the last record; the repeat conflicts with it and is not counted.
    for chunk in
        super::shape::padded_chunks(records.iter().collect(), super::shape::ROWS_PER_STATEMENT)
    {
        inserted += record_chunk(conn, &chunk).await?;
    }
    Ok(inserted)
}

/// PostgreSQL: adds the records to a batch's writes as its counted insert (an existing key is
/// skipped, so a shortfall means another writer committed it first).
pub fn add_records(writes: &mut super::bulk::Writes, records: &[idempotency_key::Model]) {
    let ignore = super::bulk::OnConflict::Ignore(&[Column::Scope, Column::RequestId]);
    writes.insert_counted::<Entity>(records, Some(ignore));
}

async fn record_chunk(
    conn: &impl ConnectionTrait,
    records: &[&idempotency_key::Model],
) -> Result<u64> {
    let mut insert = Query::insert();
    insert.into_table(Entity).columns([
        Column::Scope,
        Column::RequestId,
        Column::Method,
        Column::Fingerprint,
        Column::Response,
        Column::CreateTime,
    ]);
    for record in records {
        insert.values_panic([
            record.scope.clone().into(),
            record.request_id.clone().into(),
            record.method.clone().into(),
            record.fingerprint.clone().into(),
            record.response.clone().into(),
            record.create_time.into(),
        ]);
    }
    insert.on_conflict(
        OnConflict::columns([Column::Scope, Column::RequestId])
            .do_nothing()
            .to_owned(),
    );
    let result = conn.execute(&insert).await?;
    Ok(result.rows_affected())
}

/// Deletes the records created before `before` (µs), a chunk per write transaction; returns
/// how many. Replicas may prune at the same time: a record is deleted once, whoever gets it.
pub async fn prune(store: &super::Store, before: i64) -> Result<u64> {
    // A read first, so a replica with nothing to prune never takes the writer.
    let due = Entity::find()
        .select_only()
        .column(Column::CreateTime)
        .filter(Column::CreateTime.lt(before))
        .into_tuple::<i64>()
        .one(store.connection())
        .await?;
    if due.is_none() {
        return Ok(0);
    }
    let oldest = Query::select()
        .columns([Column::Scope, Column::RequestId])
        .from(Entity)
        .and_where(Expr::col(Column::CreateTime).lt(before))
        .order_by(Column::CreateTime, Order::Asc)
        .limit(PRUNE_CHUNK)
        .to_owned();
    let delete = Query::delete()
        .from_table(Entity)
        .and_where(
            Expr::tuple([Expr::col(Column::Scope), Expr::col(Column::RequestId)])
                .in_subquery(oldest),
        )
        .to_owned();
    store.delete_in_chunks(&delete, PRUNE_CHUNK).await
}
