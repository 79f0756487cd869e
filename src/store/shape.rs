//! Stable statement shapes. The drivers keep each connection's prepared statements by SQL
//! text (PostgreSQL plans a prepared statement once; SQLite compiles it once), but a batch's
//! `IN (…)` lists and multi-row `VALUES` vary with the batch size, and a new text means a new
//! parse and plan — on PostgreSQL the largest part of a batch's cost before this. So lists
//! are padded to a power of two (repeating a value changes no `IN` result), inserts that skip
//! conflicts are padded the same way (a repeated row is skipped), and upserts go in chunks
//! whose sizes are powers of two: a handful of texts per statement.

/// `values` padded to the next power of two by repeating the last one (empty stays empty).
pub fn padded<T: Clone>(values: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut values: Vec<T> = values.into_iter().collect();
    if let Some(last) = values.last().cloned() {
        values.resize(values.len().next_power_of_two(), last);
    }
    values
}

/// Splits `rows` into chunks of power-of-two sizes, largest first, none above `max` (a power
/// of two): 13 rows → 8 + 4 + 1.
pub fn chunks<T>(rows: Vec<T>, max: usize) -> Vec<Vec<T>> {
    debug_assert!(max.is_power_of_two());
    let mut out = Vec::new();
    let mut rows = rows.into_iter();
    let mut left = rows.len();
    while left > 0 {
        let size = if left >= max {
            max
        } else {
            1 << (usize::BITS - 1 - left.leading_zeros())
        };
        out.push(rows.by_ref().take(size).collect());
        left -= size;
    }
    out
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
    fn chunks_are_powers_of_two_and_keep_every_row_in_order() {
        for n in 0..600 {
            let rows: Vec<usize> = (0..n).collect();
            let chunks = chunks(rows.clone(), 256);
            assert!(
                chunks
                    .iter()
                    .all(|c| c.len().is_power_of_two() && c.len() <= 256)
            );
            assert_eq!(chunks.concat(), rows);
        }
        let sizes: Vec<usize> = chunks((0..13).collect(), 256)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, vec![8, 4, 1]);
    }
}
