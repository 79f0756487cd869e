//! Tamper evidence: every ledger entry carries `hash` = SHA-256 over its content and the hash
//! of the previous entry of the same wallet (`prev_hash`, empty for the first), so editing,
//! removing or reordering an entry breaks the chain from there on. `allot verify` recomputes
//! it (see `store::verify`).

use sha2::{Digest, Sha256};

use super::{columns::json_text, entity::transaction};

/// The hash an entry must carry, given its `prev_hash`.
pub fn entry_hash(entry: &transaction::Model) -> String {
    // A JSON array of the fields in a fixed order: unambiguous and stable. JSON columns
    // enter as their compact text (see `store::columns`).
    let mut content = serde_json::json!([
        entry.prev_hash,
        entry.id,
        entry.kind.as_str(),
        entry.wallet_id,
        entry.account_id,
        entry.units,
        entry.delta,
        entry.balance_after,
        entry.request_type,
        json_text(&entry.quantities),
        entry.rate_card_version,
        entry.request_id,
        entry.actor,
        json_text(&entry.metadata),
        json_text(&entry.burns),
        entry.provider_cost,
        entry.grant_id,
        entry.ref_id,
        entry.reason,
        entry.create_time,
    ]);
    // Added after the chain began: entries priced by the card (all earlier ones) hash as
    // they always did.
    if let (Some(id), Some(fields)) = (&entry.override_id, content.as_array_mut()) {
        fields.push(serde_json::json!(id));
    }
    let mut hasher = Sha256::new();
    // Writing into a hasher cannot fail.
    serde_json::to_writer(&mut HashWriter(&mut hasher), &content).expect("hashing entry");
    hex::encode(hasher.finalize())
}

/// Feeds serialized bytes straight into the hash (no intermediate string).
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
