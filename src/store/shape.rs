//! Stable statement shapes. The drivers keep each connection's prepared statements by SQL
//! text (PostgreSQL plans a prepared statement once; SQLite compiles it once), but a batch's
//! `IN (…)` lists and multi-row `VALUES` vary with the batch size, and a new text means a new
//! parse and plan — on PostgreSQL the largest part of a batch's cost before this. So lists
//! are padded to a power of two (repeating a value changes no `IN` result), and so are SQLite's
//! multi-row inserts (a repeated row is skipped) and upserts (it updates its row again, to the
//! same values): a handful of texts per statement. PostgreSQL refuses an upsert that meets a
//! row twice; its writes use one array per column instead (`bulk`).

/// Most rows per multi-row statement on SQLite (a power of two). Each shape stays compiled
/// on the writer connection; at 256 rows (×22 columns) the compiled statements of a
/// BatchDebit load added some 15 MB to the process, at 64 they do not and throughput is the
/// same (docs/BENCHMARKS.md). PostgreSQL sends a table's rows as one statement (`bulk`).
pub const ROWS_PER_STATEMENT: usize = 64;

/// `values` padded to the next power of two by repeating the last one (empty stays empty).
pub fn padded<T: Clone>(values: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut values: Vec<T> = values.into_iter().collect();
    if let Some(last) = values.last().cloned() {
        values.resize(values.len().next_power_of_two(), last);
    }
    values
}

/// For inserts that skip conflicting rows (`ON CONFLICT DO NOTHING`), where a repeated row
/// is simply skipped: chunks of `max` rows, the last padded to a power of two — one statement
/// for any batch up to `max` rows.
pub fn padded_chunks<T: Clone>(rows: Vec<T>, max: usize) -> Vec<Vec<T>> {
    debug_assert!(max.is_power_of_two());
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        out.push(padded(rows.by_ref().take(max)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_to_a_power_of_two_with_the_last_value() {
        assert!(padded(Vec::<u8>::new()).is_empty());
        assert_eq!(padded([7]), vec![7]);
        assert_eq!(padded([1, 2, 3]), vec![1, 2, 3, 3]);
        assert_eq!(padded(1..=5).len(), 8);
        assert_eq!(padded(1..=8).len(), 8);
    }

    #[test]
    fn padded_chunks_keep_every_row_in_order_and_pad_only_the_last() {
        for n in 0..300 {
            let rows: Vec<usize> = (0..n).collect();
            let chunks = padded_chunks(rows.clone(), 64);
            assert!(
                chunks
                    .iter()
                    .all(|c| c.len().is_power_of_two() && c.len() <= 64)
            );
            let mut kept: Vec<usize> = chunks.concat();
            kept.dedup();
            assert_eq!(kept, rows);
        }
    }
}
