//! Page tokens: opaque (base64url), bound to the list they came from, carrying the last key
//! returned. Lists are keyset-paginated, so pages stay stable while rows are added.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::error::{Error, Reason, Result};

pub const DEFAULT_PAGE_SIZE: u64 = 50;
pub const MAX_PAGE_SIZE: u64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub size: u64,
    /// The last key of the previous page.
    pub after: Option<String>,
}

impl Page {
    /// The last key of the previous page, for lists keyed by a number (entries by `seq`,
    /// rate cards by version).
    pub fn after_number(&self) -> Result<Option<i64>> {
        self.after
            .as_deref()
            .map(|after| {
                after.parse().map_err(|_| {
                    Error::invalid(
                        Reason::InvalidPageToken,
                        "page_token",
                        "is not a token this list issued",
                    )
                })
            })
            .transpose()
    }
}

/// Reads `page_size` (0 → default, capped at the maximum) and `page_token` for list `list`.
pub fn parse(list: &str, page_size: i32, page_token: &str) -> Result<Page> {
    if page_size < 0 {
        return Err(Error::invalid(
            Reason::InvalidPageSize,
            "page_size",
            "must not be negative",
        ));
    }
    let size = match page_size as u64 {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    };
    if page_token.is_empty() {
        return Ok(Page { size, after: None });
    }
    let bad = || {
        Error::invalid(
            Reason::InvalidPageToken,
            "page_token",
            "is not a token this list issued",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(page_token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (kind, key) = text.split_once('|').ok_or_else(bad)?;
    if kind != list || key.is_empty() {
        return Err(bad());
    }
    Ok(Page {
        size,
        after: Some(key.to_string()),
    })
}

/// The token for the page after the one ending at `last_key`.
pub fn token(list: &str, last_key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{list}|{last_key}"))
}

/// Runs `query` as one page of a list ordered by the string key `id` (ids are time-ordered,
/// so this is creation order).
pub async fn by_id<E, C>(
    conn: &C,
    query: sea_orm::Select<E>,
    id: E::Column,
    list: &str,
    page: &Page,
    key: impl Fn(&E::Model) -> String,
) -> Result<(Vec<E::Model>, String)>
where
    E: sea_orm::EntityTrait,
    C: sea_orm::ConnectionTrait,
{
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect};
    let mut query = query.order_by_asc(id);
    if let Some(after) = &page.after {
        query = query.filter(id.gt(after.as_str()));
    }
    let rows = query.limit(page.size + 1).all(conn).await?;
    Ok(finish(list, rows, page, key))
}

/// Splits one extra fetched row off: returns the page and the next token if more remain.
pub fn finish<T>(
    list: &str,
    mut rows: Vec<T>,
    page: &Page,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, String) {
    if rows.len() as u64 > page.size {
        rows.truncate(page.size as usize);
        let next = rows
            .last()
            .map(|row| token(list, &key(row)))
            .unwrap_or_default();
        (rows, next)
    } else {
        (rows, String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let t = token("accounts", "acct_1");
        let page = parse("accounts", 10, &t).unwrap();
        assert_eq!(page.after.as_deref(), Some("acct_1"));
        assert!(parse("wallets", 10, &t).is_err());
        assert!(parse("accounts", 10, "not-a-token!").is_err());
        assert!(parse("accounts", -1, "").is_err());
        assert_eq!(parse("accounts", 0, "").unwrap().size, DEFAULT_PAGE_SIZE);
        assert_eq!(
            parse("accounts", 1_000_000, "").unwrap().size,
            MAX_PAGE_SIZE
        );
    }
}
