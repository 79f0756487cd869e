//! `allot report statement`: a wallet's statement for a time window, as a reconciliation table
//! and the movements (default), the Statement message (`--json`), or CSV (`--csv`).

use std::io;

use super::output::{self, money_line, rfc3339, table};
use crate::proto;

/// `--help` text of `allot report statement`.
pub const HELP: &str = "\
Shows a wallet's statement for the window [--from, --to): the opening balance, the movements
of each kind (count, units, money), the closing balance, then every movement, oldest first.
Opening balance + the units of every kind = closing balance, in units and per currency.

With --csv FILE (or `-` for stdout) the statement is written as CSV instead (RFC 4180
quoting, `\\n` line ends). First a header row and one row per movement, oldest first:

  time,kind,units,delta,balance_after,request_type,request_id,reference,reason,money

  time           when the entry was made (RFC 3339, UTC)
  kind           GRANT, DEBIT, RESERVE, CAPTURE, RELEASE, REFUND, EXPIRE, VOID or ADJUST
  units          units the entry moved (positive)
  delta          signed effect on the posted balance
  balance_after  posted balance after the entry
  reference      the reservation, refunded transaction or grant the entry concerns
  money          signed money moved, `CURRENCY AMOUNT`, several joined by `; `

Then the summary rows, in the same columns:

  OPENING        time = start of the window (1970-01-01T00:00:00Z without --from),
                 balance_after = opening balance, money = opening money
  TOTAL <KIND>   one per kind present: delta = signed units of that kind, reason = number of
                 entries (`3 entries`), money = signed money of that kind
  CLOSING        time = end of the window, balance_after = closing balance, money = closing
                 money

So the movements are the rows whose kind has no space and is neither OPENING nor CLOSING.";

/// The columns of the movements, in the table and the CSV.
const MOVEMENT_COLUMNS: [&str; 10] = [
    "time",
    "kind",
    "units",
    "delta",
    "balance_after",
    "request_type",
    "request_id",
    "reference",
    "reason",
    "money",
];

/// Which wallet and window, the reconciliation (opening, each kind, closing), then the
/// movements.
pub fn text(statement: &proto::Statement) -> String {
    let which = ["wallet_id", "account_id", "unit", "start_time", "end_time"];
    let mut fields = output::fields(statement);
    fields.retain(|(name, _)| which.contains(&name.as_str()));
    let mut out = output::lines(&fields);
    let mut totals = vec![[
        "opening balance".to_string(),
        String::new(),
        statement.opening_balance.clone(),
        money_line(&statement.opening_money),
    ]];
    totals.extend(statement.lines.iter().map(|line| {
        [
            kind_name(line.kind),
            line.count.to_string(),
            line.units.clone(),
            money_line(&line.money),
        ]
    }));
    totals.push([
        "closing balance".to_string(),
        String::new(),
        statement.closing_balance.clone(),
        money_line(&statement.closing_money),
    ]);
    out.push('\n');
    out.push_str(&table(&["", "count", "units", "money"], &dashed(totals)));
    out.push_str("\nmovements:\n");
    let movements = dashed(statement.movements.iter().map(movement));
    for line in table(&MOVEMENT_COLUMNS, &movements).lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Writes the statement as CSV: the movements, then the summary rows (see [`HELP`]).
pub fn write_csv(statement: &proto::Statement, out: impl io::Write) -> csv::Result<()> {
    let entries = |count: i64| match count {
        1 => "1 entry".to_string(),
        n => format!("{n} entries"),
    };
    let balance = |time: Option<&prost_types::Timestamp>, label: &str, amount: &str, money| {
        let mut row: [String; 10] = Default::default();
        row[0] = rfc3339(time).unwrap_or_default();
        row[1] = label.to_string();
        row[4] = amount.to_string();
        row[9] = money_line(money);
        row
    };
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record(MOVEMENT_COLUMNS)?;
    for transaction in &statement.movements {
        csv.write_record(movement(transaction))?;
    }
    csv.write_record(balance(
        statement.start_time.as_ref(),
        "OPENING",
        &statement.opening_balance,
        &statement.opening_money,
    ))?;
    for line in &statement.lines {
        let mut row: [String; 10] = Default::default();
        row[1] = format!("TOTAL {}", kind_name(line.kind));
        row[3] = line.units.clone();
        row[8] = entries(line.count);
        row[9] = money_line(&line.money);
        csv.write_record(row)?;
    }
    csv.write_record(balance(
        statement.end_time.as_ref(),
        "CLOSING",
        &statement.closing_balance,
        &statement.closing_money,
    ))?;
    csv.flush()?;
    Ok(())
}

/// `DEBIT` for TRANSACTION_KIND_DEBIT; a kind the client does not know stays a number.
pub(super) fn kind_name(kind: i32) -> String {
    proto::TransactionKind::try_from(kind).map_or_else(
        |_| kind.to_string(),
        |kind| {
            let name = kind.as_str_name();
            name.strip_prefix("TRANSACTION_KIND_")
                .unwrap_or(name)
                .to_string()
        },
    )
}

/// One movement in [`MOVEMENT_COLUMNS`]; `reference` is the reservation, refunded
/// transaction or grant the entry concerns.
fn movement(transaction: &proto::Transaction) -> [String; 10] {
    let t = transaction;
    let reference = [&t.reservation_id, &t.refunded_transaction_id, &t.grant_id]
        .into_iter()
        .find(|id| !id.is_empty())
        .cloned()
        .unwrap_or_default();
    [
        rfc3339(t.create_time.as_ref()).unwrap_or_default(),
        kind_name(t.kind),
        t.units.clone(),
        t.delta.clone(),
        t.balance_after.clone(),
        t.request_type.clone(),
        t.request_id.clone(),
        reference,
        t.reason.clone(),
        money_line(&t.money),
    ]
}

/// Rows for a table, `-` marking empty cells.
fn dashed<const N: usize>(rows: impl IntoIterator<Item = [String; N]>) -> Vec<Vec<String>> {
    rows.into_iter()
        .map(|row| {
            row.into_iter()
                .map(|cell| {
                    if cell.is_empty() {
                        "-".to_string()
                    } else {
                        cell
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;

    use super::*;

    fn at(seconds: i64) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos: 0 })
    }

    fn usd(amount: &str) -> Vec<proto::Money> {
        vec![proto::Money {
            currency: "USD".into(),
            amount: amount.into(),
        }]
    }

    fn statement() -> proto::Statement {
        let grant = proto::Transaction {
            kind: proto::TransactionKind::Grant as i32,
            units: "100".into(),
            delta: "100".into(),
            balance_after: "100".into(),
            request_id: "r1".into(),
            grant_id: "grt_1".into(),
            create_time: at(1_790_000_000),
            money: usd("10"),
            ..Default::default()
        };
        let refund = proto::Transaction {
            kind: proto::TransactionKind::Refund as i32,
            units: "2.5".into(),
            delta: "2.5".into(),
            balance_after: "102.5".into(),
            request_type: "chat.message".into(),
            request_id: "r2".into(),
            refunded_transaction_id: "txn_9".into(),
            reason: "bad answer, \"sorry\"\nline 2".into(),
            create_time: at(1_790_000_060),
            money: vec![
                proto::Money {
                    currency: "EUR".into(),
                    amount: "0.1".into(),
                },
                proto::Money {
                    currency: "USD".into(),
                    amount: "0.25".into(),
                },
            ],
            ..Default::default()
        };
        let line = |kind: proto::TransactionKind, count, units: &str, money| proto::StatementLine {
            kind: kind as i32,
            count,
            units: units.into(),
            money,
        };
        proto::Statement {
            wallet_id: "wal_1".into(),
            account_id: "acct_1".into(),
            unit: "credits".into(),
            start_time: None,
            end_time: at(1_790_000_100),
            opening_balance: "0".into(),
            closing_balance: "102.5".into(),
            lines: vec![
                line(proto::TransactionKind::Grant, 1, "100", usd("10")),
                line(proto::TransactionKind::Refund, 1, "2.5", usd("0.25")),
            ],
            movements: vec![grant, refund],
            opening_money: Vec::new(),
            closing_money: usd("10.25"),
        }
    }

    fn csv(statement: &proto::Statement) -> String {
        let mut out = Vec::new();
        write_csv(statement, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let odd = proto::Transaction {
            units: "cr\r".into(),
            delta: "plain 1.5".into(),
            request_type: "a,b".into(),
            request_id: "say \"hi\"".into(),
            reason: "two\nlines".into(),
            ..Default::default()
        };
        let statement = proto::Statement {
            movements: vec![odd],
            ..Default::default()
        };
        let text = csv(&statement);
        let row = text.split_once('\n').unwrap().1;
        assert!(
            row.starts_with(
                ",UNSPECIFIED,\"cr\r\",plain 1.5,,\"a,b\",\"say \"\"hi\"\"\",,\"two\nlines\",\n"
            ),
            "{row:?}"
        );
    }

    #[test]
    fn csv_has_movements_then_opening_totals_closing() {
        assert_eq!(
            csv(&statement()),
            "time,kind,units,delta,balance_after,request_type,request_id,reference,reason,money\n\
             2026-09-21T14:13:20Z,GRANT,100,100,100,,r1,grt_1,,USD 10\n\
             2026-09-21T14:14:20Z,REFUND,2.5,2.5,102.5,chat.message,r2,txn_9,\
             \"bad answer, \"\"sorry\"\"\nline 2\",EUR 0.1; USD 0.25\n\
             ,OPENING,,,0,,,,,\n\
             ,TOTAL GRANT,,100,,,,,1 entry,USD 10\n\
             ,TOTAL REFUND,,2.5,,,,,1 entry,USD 0.25\n\
             2026-09-21T14:15:00Z,CLOSING,,,102.5,,,,,USD 10.25\n"
        );
    }

    #[test]
    fn the_table_reconciles_then_lists_the_movements() {
        let mut statement = statement();
        statement.movements.truncate(1);
        assert_eq!(
            text(&statement),
            "wallet_id:  wal_1\n\
             account_id: acct_1\n\
             unit:       credits\n\
             start_time: -\n\
             end_time:   2026-09-21T14:15:00Z\n\
             \n\
             \x20                count  units  money\n\
             opening balance  -      0      -\n\
             GRANT            1      100    USD 10\n\
             REFUND           1      2.5    USD 0.25\n\
             closing balance  -      102.5  USD 10.25\n\
             \n\
             movements:\n\
             \x20 time                  kind   units  delta  balance_after  request_type  request_id  reference  reason  money\n\
             \x20 2026-09-21T14:13:20Z  GRANT  100    100    100            -             r1          grt_1      -       USD 10\n"
        );
    }

    #[test]
    fn unknown_kinds_stay_numbers() {
        assert_eq!(kind_name(proto::TransactionKind::Adjust as i32), "ADJUST");
        assert_eq!(kind_name(99), "99");
    }
}
