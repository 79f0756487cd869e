//! `ReportService.ExportTransactions` and `allot export` (issue 12, point 5): every entry a
//! filter selects, oldest first, in chunks of at most 500, equal to what ListTransactions
//! shows; filters; scope and roles (procurement sees its own accounts and no provider cost,
//! service tokens cannot export); bad requests; the real binary writing CSV.

mod common;

use allot::proto::{self, TransactionKind};
use common::*;
use tonic::Code;

/// A parent account with a sub-account, both funded, with debits, a refund and a hold; the
/// parent has more entries than one chunk. Returns (parent, child, other) accounts and the
/// parent's and child's wallets.
struct Books {
    parent: proto::Account,
    child: proto::Account,
    other: proto::Account,
    parent_wallet: proto::Wallet,
    child_wallet: proto::Wallet,
}

async fn books(app: &TestApp) -> Books {
    app.publish_standard_card().await;
    let (parent, parent_wallet) = app.funded("parent", "10000").await;
    let child = app.create_account("child", &parent.id).await;
    let child_wallet = app.create_wallet(&child.id, "credits", "").await;
    app.grant(&child_wallet.id, "100").await;
    let (other, _) = app.funded("other", "100").await;
    app.ledger(&app.admin)
        .debit(debit_request(&other.id, "one", &uuid()))
        .await
        .expect("other's debit");
    // 600 debits in one call: more than a chunk.
    let debits = (0..600)
        .map(|i| debit_request(&parent.id, "one", &format!("bulk-{i}")))
        .collect();
    app.ledger(&app.admin)
        .batch_debit(proto::BatchDebitRequest { debits })
        .await
        .expect("batch debit");
    let chat = app
        .ledger(&app.admin)
        .debit(debit_request(&child.id, "chat", &uuid()))
        .await
        .expect("child's debit")
        .into_inner()
        .transaction
        .expect("entry");
    refund(app, &chat.id, "0.5", &uuid()).await.expect("refund");
    Books {
        parent,
        child,
        other,
        parent_wallet,
        child_wallet,
    }
}

/// The export's chunks.
async fn export(
    app: &TestApp,
    token: &str,
    request: proto::ExportTransactionsRequest,
) -> Result<Vec<Vec<proto::Transaction>>, tonic::Status> {
    let mut stream = app
        .reports(token)
        .export_transactions(request)
        .await?
        .into_inner();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.message().await? {
        chunks.push(chunk.transactions);
    }
    Ok(chunks)
}

fn flat(chunks: Vec<Vec<proto::Transaction>>) -> Vec<proto::Transaction> {
    chunks.into_iter().flatten().collect()
}

fn of_account(account_id: &str) -> proto::ExportTransactionsRequest {
    proto::ExportTransactionsRequest {
        account_id: account_id.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_export_is_the_ledger_oldest_first_in_bounded_chunks() {
    let app = spawn_app().await;
    let b = books(&app).await;

    let chunks = export(&app, &app.admin, of_account(&b.parent.id))
        .await
        .expect("export");
    assert!(chunks.len() >= 2, "more than one chunk: {}", chunks.len());
    assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= 500));
    let exported = flat(chunks);
    // Exactly what ListTransactions shows (newest first there), field for field.
    let listed = app.history(&b.parent.id).await;
    assert_eq!(exported.len(), 601, "a grant and 600 debits");
    assert_eq!(exported, listed);

    // With the sub-account: both wallets' entries, merged in ledger order.
    let mut request = of_account(&b.parent.id);
    request.include_sub_accounts = true;
    let both = flat(export(&app, &app.admin, request).await.expect("export"));
    let child = app.history(&b.child.id).await;
    assert_eq!(both.len(), listed.len() + child.len());
    assert!(both.iter().all(|t| t.account_id != b.other.id));
    assert!(child.iter().all(|t| both.contains(t)));
    let in_order = |entries: &[proto::Transaction]| {
        entries.windows(2).all(|w| {
            w[0].create_time.as_ref().map(|t| (t.seconds, t.nanos))
                <= w[1].create_time.as_ref().map(|t| (t.seconds, t.nanos))
        })
    };
    assert!(in_order(&both));

    // One wallet.
    let wallet = flat(
        export(
            &app,
            &app.admin,
            proto::ExportTransactionsRequest {
                wallet_id: b.child_wallet.id.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("export"),
    );
    assert_eq!(wallet, child);

    // Kinds and a time window.
    let mut request = of_account(&b.parent.id);
    request.include_sub_accounts = true;
    request.kinds = vec![
        TransactionKind::Refund as i32,
        TransactionKind::Grant as i32,
    ];
    let some = flat(export(&app, &app.admin, request).await.expect("export"));
    assert_eq!(
        some.iter().map(kind).collect::<Vec<_>>(),
        [
            TransactionKind::Grant,
            TransactionKind::Grant,
            TransactionKind::Refund
        ]
    );
    let refund = some.last().expect("the refund");
    let mut request = of_account(&b.child.id);
    request.start_time = refund.create_time;
    let since = flat(
        export(&app, &app.admin, request.clone())
            .await
            .expect("export"),
    );
    assert_eq!(since, std::slice::from_ref(refund));
    request.end_time = refund.create_time;
    assert!(flat(export(&app, &app.admin, request).await.expect("export")).is_empty());

    // Everything, with an unscoped token: every account's entries.
    let all = flat(
        export(&app, &app.admin, Default::default())
            .await
            .expect("export"),
    );
    assert_eq!(all.len(), both.len() + app.history(&b.other.id).await.len());
    let _ = b.parent_wallet;
    app.stop().await;
}

#[tokio::test]
async fn procurement_exports_its_own_accounts_without_provider_costs() {
    let app = spawn_app().await;
    let b = books(&app).await;
    let procurement = token(&["procurement"], &[&b.parent.id]);

    // No account named: its scope (the parent and the child below it), nothing else.
    let mine = flat(
        export(&app, &procurement, Default::default())
            .await
            .expect("export"),
    );
    let parent = app.history(&b.parent.id).await;
    let child = app.history(&b.child.id).await;
    assert_eq!(mine.len(), parent.len() + child.len());
    assert!(mine.iter().all(|t| t.account_id != b.other.id));
    // Debits carry a provider cost; procurement never sees it, an operator does.
    assert!(mine.iter().all(|t| t.provider_cost.is_empty()));
    let operator = token(&["operator"], &["*"]);
    let seen = flat(
        export(&app, &operator, of_account(&b.child.id))
            .await
            .expect("export"),
    );
    assert!(seen.iter().any(|t| t.provider_cost == "0.001"), "{seen:?}");

    // Another account: refused the same whether it exists or not.
    for account_id in [b.other.id.as_str(), "acct_0123456789abcdef0123456789abcdef"] {
        let status = export(&app, &procurement, of_account(account_id))
            .await
            .expect_err("out of scope");
        assert_error(&status, Code::PermissionDenied, "ACCOUNT_OUT_OF_SCOPE");
    }
    // Service tokens (the request path) cannot export.
    let status = export(&app, &token(&["service"], &["*"]), of_account(&b.parent.id))
        .await
        .expect_err("service cannot export");
    assert_error(&status, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    app.stop().await;
}

#[tokio::test]
async fn bad_export_requests_are_refused() {
    let app = spawn_app().await;
    let b = books(&app).await;
    let cases = [
        (
            proto::ExportTransactionsRequest {
                account_id: b.parent.id.clone(),
                wallet_id: b.parent_wallet.id.clone(),
                ..Default::default()
            },
            "account_id",
        ),
        (
            proto::ExportTransactionsRequest {
                wallet_id: b.parent_wallet.id.clone(),
                include_sub_accounts: true,
                ..Default::default()
            },
            "include_sub_accounts",
        ),
        (
            proto::ExportTransactionsRequest {
                kinds: vec![TransactionKind::Unspecified as i32],
                ..of_account(&b.parent.id)
            },
            "kinds",
        ),
        (
            proto::ExportTransactionsRequest {
                kinds: vec![99],
                ..of_account(&b.parent.id)
            },
            "kinds",
        ),
        (
            proto::ExportTransactionsRequest {
                start_time: Some(prost_types::Timestamp {
                    seconds: 2_000_000_000,
                    nanos: 0,
                }),
                end_time: Some(prost_types::Timestamp {
                    seconds: 1_000_000_000,
                    nanos: 0,
                }),
                ..of_account(&b.parent.id)
            },
            "end_time",
        ),
    ];
    for (request, field) in cases {
        let status = export(&app, &app.admin, request)
            .await
            .expect_err("a bad request");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_invalid(&status, "INVALID_FIELD", field);
    }
    app.stop().await;
}

#[tokio::test]
async fn allot_export_writes_every_entry_as_csv() {
    let app = spawn_app().await;
    let b = books(&app).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ledger.csv");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["export", "--server"])
        .arg(format!("http://{}", app.addr))
        .args([
            "--token",
            &app.admin,
            "--account",
            &b.parent.id,
            "--sub-accounts",
        ])
        .arg("--csv")
        .arg(&path)
        .output()
        .await
        .expect("run allot export");
    assert!(output.status.success(), "{output:?}");
    let listed: Vec<proto::Transaction> = [
        app.history(&b.parent.id).await,
        app.history(&b.child.id).await,
    ]
    .concat();
    let mut reader = csv::Reader::from_path(&path).expect("read the CSV");
    let headers = reader.headers().expect("header").clone();
    assert_eq!(&headers[0], "id");
    assert_eq!(&headers[2], "kind");
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), listed.len());
    for row in &rows {
        let entry = listed
            .iter()
            .find(|t| t.id == row[0])
            .unwrap_or_else(|| panic!("{row:?} is not an entry"));
        assert_eq!(row[5], entry.units);
        assert_eq!(row[7], entry.balance_after);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{} entries written", listed.len())),
        "{stderr}"
    );
    app.stop().await;
}
