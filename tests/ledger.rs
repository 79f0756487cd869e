//! The debit path end to end over gRPC: the README quickstart flow, pricing, burn order,
//! concurrency (no overspend), idempotency (one effect under concurrent duplicates).

mod common;

use std::collections::BTreeSet;

use allot::proto::{self, TransactionKind};
use common::*;
use tonic::Code;

#[tokio::test]
async fn quickstart_flow() {
    let app = spawn_app().await;
    let account = app.create_account("acme", "").await;
    assert_eq!(account.state, proto::AccountState::Active as i32);
    assert!(account.id.starts_with("acct_"));
    let wallet = app.create_wallet(&account.id, "credits", "").await;
    assert!(wallet.id.starts_with("wal_"));
    let grant = app.grant(&wallet.id, "1000").await;
    assert!(grant.id.starts_with("grt_"));
    assert_eq!(grant.remaining, "1000");
    let card = app.publish_standard_card().await;
    assert_eq!(card.state, proto::RateCardState::Published as i32);

    let service = token(&["service"], &[&account.id]);
    let quote = app
        .rates(&service)
        .quote_price(proto::QuotePriceRequest {
            external_id: "acme".into(),
            request_type: "chat".into(),
            quantities: quantities(&[("output_tokens", "1500")]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(quote.units, "1.3");
    assert_eq!(quote.rate_card_version, card.version);

    let response = app
        .ledger(&service)
        .debit(proto::DebitRequest {
            external_id: "acme".into(),
            request_type: "chat".into(),
            quantities: quantities(&[("output_tokens", "1500")]),
            request_id: "req-1".into(),
            metadata: quantities(&[("feature", "assistant")]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!response.replayed);
    let txn = response.transaction.unwrap();
    assert_eq!(txn.kind, TransactionKind::Debit as i32);
    assert_eq!(txn.units, "1.3");
    assert_eq!(txn.balance_after, "998.7");
    assert_eq!(txn.rate_card_version, card.version);
    assert_eq!(txn.request_id, "req-1");
    assert_eq!(txn.actor, "test-caller");
    assert_eq!(txn.burns.len(), 1);
    assert_eq!(txn.burns[0].grant_id, grant.id);
    assert_eq!(txn.burns[0].money, "0.013");
    assert_eq!(txn.burns[0].currency, "USD");
    assert!(
        txn.provider_cost.is_empty(),
        "provider cost is operator-only"
    );

    let balance = app.balance(&account.id).await;
    assert_eq!(balance.posted, "998.7");
    assert_eq!(balance.available, "998.7");
    assert_eq!(balance.reserved, "0");

    let txns = app.all_transactions(&account.id).await;
    let kinds: Vec<i32> = txns.iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds,
        [TransactionKind::Debit as i32, TransactionKind::Grant as i32]
    );
    app.stop().await;
}

#[tokio::test]
async fn burn_order_and_money_across_grants() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("burner", "").await;
    app.publish_standard_card().await;
    let grants = app.grants(&app.admin);
    let make = |amount: &str, priority: i32, expire_in: Option<i64>, price: &str| {
        let request = proto::CreateGrantRequest {
            grant: Some(proto::Grant {
                wallet_id: wallet.id.clone(),
                kind: proto::GrantKind::Purchase as i32,
                amount: amount.into(),
                priority,
                expire_time: expire_in.map(|s| prost_types::Timestamp {
                    seconds: chrono::Utc::now().timestamp() + s,
                    nanos: 0,
                }),
                unit_price: price.into(),
                currency: "USD".into(),
                ..Default::default()
            }),
            request_id: uuid(),
        };
        let mut client = grants.clone();
        async move { client.create_grant(request).await.unwrap().into_inner() }
    };
    let later = make("3", 0, None, "0.5").await;
    let soon = make("3", 0, Some(3600), "0.25").await;
    let low = make("3", 1, Some(60), "1").await;

    let service = token(&["service"], &["*"]);
    let debit = debit_request(&account.id, "image", "burn-1");
    // image = 4 units: 3 from `soon` (earliest expiry), 1 from `later` (no expiry).
    let txn = app
        .ledger(&service)
        .debit(debit)
        .await
        .unwrap()
        .into_inner()
        .transaction
        .unwrap();
    let burnt: Vec<(String, String, String)> = txn
        .burns
        .iter()
        .map(|b| (b.grant_id.clone(), b.units.clone(), b.money.clone()))
        .collect();
    assert_eq!(
        burnt,
        [
            (soon.id.clone(), "3".to_string(), "0.75".to_string()),
            (later.id.clone(), "1".to_string(), "0.5".to_string()),
        ]
    );
    let listed = app
        .grants(&app.admin)
        .list_grants(proto::ListGrantsRequest {
            wallet_id: wallet.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .grants;
    let remaining: Vec<(String, String)> = listed
        .iter()
        .map(|g| (g.id.clone(), g.remaining.clone()))
        .collect();
    assert!(remaining.contains(&(soon.id.clone(), "0".into())));
    assert!(remaining.contains(&(later.id.clone(), "2".into())));
    assert!(remaining.contains(&(low.id.clone(), "3".into())));
    app.stop().await;
}

/// 300 concurrent debits of 1 unit against exactly 137: exactly 137 succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_debits_never_overspend() {
    let app = spawn_app().await;
    let (account, _) = app.funded("hot", "137").await;
    app.publish_standard_card().await;
    let service = token(&["service"], &[&account.id]);
    let mut tasks = Vec::new();
    for i in 0..300 {
        let mut client = app.ledger(&service);
        let request = debit_request(&account.id, "one", &format!("hot-{i}"));
        tasks.push(tokio::spawn(async move { client.debit(request).await }));
    }
    let mut ok = 0;
    let mut insufficient = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_error(&status, Code::FailedPrecondition, "INSUFFICIENT_CREDITS");
                insufficient += 1;
            }
        }
    }
    assert_eq!(ok, 137);
    assert_eq!(insufficient, 163);
    let balance = app.balance(&account.id).await;
    assert_eq!(balance.available, "0");
    assert_eq!(balance.posted, "0");

    // The ledger sums to the balance: grants in, debits out.
    let txns = app.all_transactions(&account.id).await;
    let mut sum = rust_decimal::Decimal::ZERO;
    for t in &txns {
        let units: rust_decimal::Decimal = t.units.parse().unwrap();
        match TransactionKind::try_from(t.kind).unwrap() {
            TransactionKind::Grant => sum += units,
            TransactionKind::Debit => sum -= units,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(sum, rust_decimal::Decimal::ZERO);
    assert_eq!(txns.len(), 138);
    let ids: BTreeSet<_> = txns.iter().map(|t| t.id.clone()).collect();
    assert_eq!(ids.len(), 138);
    app.stop().await;
}

/// 50 concurrent copies of one debit: one effect, 50 identical answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_execute_once() {
    let app = spawn_app().await;
    let (account, _) = app.funded("dupes", "100").await;
    app.publish_standard_card().await;
    let service = token(&["service"], &[&account.id]);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let mut client = app.ledger(&service);
        let mut request = debit_request(&account.id, "chat", "same-request");
        request.quantities = quantities(&[("output_tokens", "2000")]);
        tasks.push(tokio::spawn(async move { client.debit(request).await }));
    }
    let mut transactions = BTreeSet::new();
    let mut fresh = 0;
    for task in tasks {
        let response = task
            .await
            .unwrap()
            .expect("every copy succeeds")
            .into_inner();
        if !response.replayed {
            fresh += 1;
        }
        transactions.insert(format!("{:?}", response.transaction.unwrap()));
    }
    assert_eq!(fresh, 1, "exactly one copy executes");
    assert_eq!(transactions.len(), 1, "all answers are identical");
    assert_eq!(app.balance(&account.id).await.posted, "98.6");
    assert_eq!(app.all_transactions(&account.id).await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn idempotency_replay_and_reuse() {
    let app = spawn_app().await;
    let (account, _) = app.funded("idem", "10").await;
    app.publish_standard_card().await;
    let service = token(&["service"], &[&account.id]);
    let mut ledger = app.ledger(&service);

    let first = ledger
        .debit(debit_request(&account.id, "image", "k1"))
        .await
        .unwrap()
        .into_inner();
    let again = ledger
        .debit(debit_request(&account.id, "image", "k1"))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.replayed);
    assert!(again.replayed);
    assert_eq!(first.transaction, again.transaction);
    assert_eq!(app.balance(&account.id).await.posted, "6");

    // Same id, different parameters.
    let status = ledger
        .debit(debit_request(&account.id, "chat", "k1"))
        .await
        .unwrap_err();
    assert_error(&status, Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED");

    // A rejected request leaves no trace: the id can be used again once it can succeed.
    let status = ledger
        .debit(debit_request(&account.id, "image", "k2"))
        .await
        .unwrap();
    assert!(!status.into_inner().replayed);
    let status = ledger
        .debit(debit_request(&account.id, "image", "k3"))
        .await
        .unwrap_err();
    assert_insufficient(&status, "4", "2");
    app.grant(&app.balance(&account.id).await.wallet_id, "10")
        .await;
    let retried = ledger
        .debit(debit_request(&account.id, "image", "k3"))
        .await
        .unwrap()
        .into_inner();
    assert!(!retried.replayed, "a rejected request_id may be used again");
    app.stop().await;
}

/// BatchDebit: each debit gets its own outcome, exactly as it would alone — successes,
/// rejections (bad input, insufficient credits, out of scope) and duplicates of one
/// request_id inside one batch (one effect, the copies replay it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_debit_gives_each_debit_its_own_outcome() {
    let app = spawn_app().await;
    let (a, _) = app.funded("batch-a", "10").await;
    let (b, _) = app.funded("batch-b", "100").await;
    app.publish_standard_card().await;
    let service = token(&["service"], &[&a.id, &b.id]);
    let mut debits = Vec::new();
    // 12 one-unit debits on A (holding 10): 10 succeed, 2 are refused.
    for i in 0..12 {
        debits.push(debit_request(&a.id, "one", &format!("a-{i}")));
    }
    // Three copies of one image debit on B: one effect.
    for _ in 0..3 {
        debits.push(debit_request(&b.id, "image", "b-dup"));
    }
    // Bad input in the middle.
    debits.push(debit_request(&b.id, "one", ""));
    let mut bad_qty = debit_request(&b.id, "chat", "b-bad");
    bad_qty.quantities = quantities(&[("output_tokens", "1e3")]);
    debits.push(bad_qty);
    // Same id as a copy above, different parameters.
    debits.push(debit_request(&b.id, "one", "b-dup"));
    let response = app
        .ledger(&service)
        .batch_debit(proto::BatchDebitRequest { debits })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.results.len(), 18);
    let outcome = |i: usize| response.results[i].result.clone().unwrap();
    use proto::debit_result::Result as R;
    let mut ok_a = 0;
    for i in 0..12 {
        match outcome(i) {
            R::Response(r) => {
                assert!(!r.replayed);
                ok_a += 1;
            }
            R::Error(e) => {
                assert_eq!(e.code, Code::FailedPrecondition as i32);
                assert_eq!(e.reason, "INSUFFICIENT_CREDITS");
                assert_eq!(e.metadata["available"], "0");
            }
        }
    }
    assert_eq!(ok_a, 10);
    let copies: Vec<_> = (12..15)
        .map(|i| match outcome(i) {
            R::Response(r) => r,
            R::Error(e) => panic!("copy failed: {e:?}"),
        })
        .collect();
    assert_eq!(copies.iter().filter(|r| !r.replayed).count(), 1);
    assert!(
        copies
            .iter()
            .all(|r| r.transaction == copies[0].transaction)
    );
    for (i, reason) in [(15, "MISSING_FIELD"), (16, "INVALID_AMOUNT")] {
        let R::Error(e) = outcome(i) else {
            panic!("slot {i} should have failed")
        };
        assert_eq!(e.code, tonic::Code::InvalidArgument as i32);
        assert_eq!(e.reason, reason);
    }
    let R::Error(e) = outcome(17) else {
        panic!("reused key should fail")
    };
    assert_eq!(e.reason, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.balance(&a.id).await.posted, "0");
    assert_eq!(app.balance(&b.id).await.posted, "96");
    assert_eq!(app.all_transactions(&b.id).await.len(), 2);

    // Limits: empty and over 1,000.
    let status = app
        .ledger(&service)
        .batch_debit(proto::BatchDebitRequest { debits: vec![] })
        .await
        .unwrap_err();
    assert_error(&status, Code::InvalidArgument, "INVALID_FIELD");
    let too_many = (0..1001)
        .map(|i| debit_request(&b.id, "one", &format!("many-{i}")))
        .collect();
    let status = app
        .ledger(&service)
        .batch_debit(proto::BatchDebitRequest { debits: too_many })
        .await
        .unwrap_err();
    assert_error(&status, Code::InvalidArgument, "INVALID_FIELD");
    assert_eq!(app.balance(&b.id).await.posted, "96");
    app.stop().await;
}

/// Many concurrent BatchDebits and unary debits on a few wallets: conservation holds and
/// every acknowledged debit is in the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_conserve_units() {
    let app = spawn_app().await;
    let mut accounts = Vec::new();
    for i in 0..3 {
        accounts.push(app.funded(&format!("cb-{i}"), "500").await.0);
    }
    app.publish_standard_card().await;
    let service = token(&["service"], &["*"]);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let mut client = app.ledger(&service);
        let ids: Vec<String> = accounts.iter().map(|a| a.id.clone()).collect();
        tasks.push(tokio::spawn(async move {
            let debits = (0..100)
                .map(|i| debit_request(&ids[(t + i) % 3], "one", &format!("cb-{t}-{i}")))
                .collect();
            let response = client
                .batch_debit(proto::BatchDebitRequest { debits })
                .await
                .unwrap()
                .into_inner();
            response
                .results
                .iter()
                .filter(|r| matches!(r.result, Some(proto::debit_result::Result::Response(_))))
                .count()
        }));
    }
    let mut acknowledged = 0;
    for task in tasks {
        acknowledged += task.await.unwrap();
    }
    assert_eq!(acknowledged, 800);
    let mut posted = 0i64;
    for account in &accounts {
        let balance = app.balance(&account.id).await;
        posted += balance.posted.parse::<i64>().unwrap();
        let debits = app
            .all_transactions(&account.id)
            .await
            .iter()
            .filter(|t| t.kind == TransactionKind::Debit as i32)
            .count() as i64;
        assert_eq!(balance.posted.parse::<i64>().unwrap(), 500 - debits);
    }
    assert_eq!(posted, 1500 - 800);
    app.stop().await;
}

/// Two replicas on one database: a card published on one prices the very next debit on the
/// other (its rate-card cache follows the publish generation).
#[tokio::test]
async fn replicas_price_with_the_card_in_force() {
    let app = spawn_app().await;
    let replica = app.spawn_replica().await;
    let (account, _) = app.funded("replicas", "100").await;
    app.publish_card(vec![rate("one", "1", &[], "")]).await;
    let service = token(&["service"], &[&account.id]);
    let first = replica
        .ledger(&service)
        .debit(debit_request(&account.id, "one", "r-1"))
        .await
        .unwrap()
        .into_inner()
        .transaction
        .unwrap();
    assert_eq!(first.units, "1");
    let v2 = app.publish_card(vec![rate("one", "2", &[], "")]).await;
    let second = replica
        .ledger(&service)
        .debit(debit_request(&account.id, "one", "r-2"))
        .await
        .unwrap()
        .into_inner()
        .transaction
        .unwrap();
    assert_eq!(second.units, "2");
    assert_eq!(second.rate_card_version, v2.version);
    assert_eq!(app.balance(&account.id).await.posted, "97");
    replica.stop().await;
    app.stop().await;
}

/// Two replicas writing one wallet in turn: each caches the wallet's grants after its own
/// writes, and must notice (by the wallet's version) when the other wrote since — a grant
/// added on one replica is spendable on the other at once, and neither spends a grant the
/// other exhausted. (Debug builds also compare every cache hit with the database.)
#[tokio::test]
async fn replicas_see_each_others_writes_to_a_wallet() {
    let app = spawn_app().await;
    let replica = app.spawn_replica().await;
    let (account, wallet) = app.funded("alternating", "3").await;
    app.publish_card(vec![rate("one", "1", &[], "")]).await;
    let service = token(&["service"], &[&account.id]);
    let debit = |on: &TestApp, id: &str| {
        let mut client = on.ledger(&service);
        let request = debit_request(&account.id, "one", id);
        async move { client.debit(request).await }
    };
    // Both replicas debit; each write moves the version past the other's cache.
    for (i, on) in [&app, &replica, &app].into_iter().enumerate() {
        debit(on, &format!("a-{i}")).await.unwrap();
    }
    // The first grant is spent: the replica must not spend it again from a stale cache.
    let err = debit(&replica, "a-3").await.unwrap_err();
    assert_error(&err, Code::FailedPrecondition, "INSUFFICIENT_CREDITS");
    // A grant made through one replica is spendable through the other at once.
    replica.grant(&wallet.id, "2").await;
    debit(&app, "a-4").await.unwrap();
    debit(&replica, "a-5").await.unwrap();
    let err = debit(&app, "a-6").await.unwrap_err();
    assert_error(&err, Code::FailedPrecondition, "INSUFFICIENT_CREDITS");
    assert_eq!(app.balance(&account.id).await.posted, "0");
    assert_eq!(replica.balance(&account.id).await.posted, "0");
    replica.stop().await;
    app.stop().await;
}

/// A request_id is remembered for the retention (30 days by default): until then a repeat
/// gets the original answer and a different request under it is refused; once the sweeper
/// has pruned the record, the id is a new request.
#[tokio::test]
async fn request_ids_are_remembered_for_the_retention_then_forgotten() {
    let app = spawn_app().await;
    let (account, _) = app.funded("retention", "100").await;
    app.publish_standard_card().await;
    let mut ledger = app.ledger(&app.admin);
    let first = ledger
        .debit(debit_request(&account.id, "one", "kept-30-days"))
        .await
        .expect("first debit")
        .into_inner();
    assert!(!first.replayed);

    app.advance(std::time::Duration::from_secs(29 * 86_400))
        .await;
    let repeat = ledger
        .debit(debit_request(&account.id, "one", "kept-30-days"))
        .await
        .expect("repeat")
        .into_inner();
    assert!(repeat.replayed, "still remembered after 29 days");
    assert_eq!(repeat.transaction, first.transaction);
    let reused = ledger
        .debit(debit_request(&account.id, "image", "kept-30-days"))
        .await
        .expect_err("different parameters under a remembered id");
    assert_error(&reused, Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.balance(&account.id).await.posted, "99");

    app.advance(std::time::Duration::from_secs(2 * 86_400))
        .await;
    let fresh = ledger
        .debit(debit_request(&account.id, "image", "kept-30-days"))
        .await
        .expect("after the retention the id is new")
        .into_inner();
    assert!(!fresh.replayed);
    assert_ne!(fresh.transaction, first.transaction);
    assert_eq!(app.balance(&account.id).await.posted, "95");
    app.stop().await;
}

/// ListTransactions pages newest first through a wallet's ledger in the order it was written,
/// entries of one instant included (pages end between entries of the same time), and a page
/// token naming another wallet's entry still pages this wallet correctly.
#[tokio::test]
async fn pages_follow_the_ledger_order() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let (account, _) = app.funded("paged", "1000").await;
    let (other, _) = app.funded("other", "1000").await;
    let mut ledger = app.ledger(&app.admin);
    for round in 0..3 {
        for n in 0..4 {
            ledger
                .debit(debit_request(&account.id, "one", &format!("p-{round}-{n}")))
                .await
                .expect("debit");
        }
        ledger
            .debit(debit_request(&other.id, "one", &format!("o-{round}")))
            .await
            .expect("debit");
        app.advance(std::time::Duration::from_secs(1)).await;
    }
    let all = app.all_transactions(&account.id).await;
    assert_eq!(all.len(), 13, "a grant and 12 debits: {all:#?}");
    let ids = |page: &[proto::Transaction]| page.iter().map(|t| t.id.clone()).collect::<Vec<_>>();

    let mut paged = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = ledger
            .list_transactions(proto::ListTransactionsRequest {
                account_id: account.id.clone(),
                page_size: 3,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.transactions.len() <= 3);
        paged.extend(page.transactions);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(ids(&paged), ids(&all));
    // Newest first: the last debit written is the first listed, the grant the last.
    assert_eq!(all[0].request_id, "p-2-3");
    assert_eq!(all[12].kind, TransactionKind::Grant as i32);

    // A token naming an entry of the other wallet: this wallet's entries written before it.
    use base64::Engine;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let theirs = app.all_transactions(&other.id).await;
    let middle = theirs
        .iter()
        .find(|t| t.request_id == "o-1")
        .expect("the other wallet's second debit");
    let seq: i64 = allot::store::entity::transaction::Entity::find()
        .filter(allot::store::entity::transaction::Column::Id.eq(middle.id.as_str()))
        .one(app.handles.store.connection())
        .await
        .expect("read")
        .expect("entry")
        .seq;
    let token =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("transactions|{seq}"));
    let page = ledger
        .list_transactions(proto::ListTransactionsRequest {
            account_id: account.id.clone(),
            page_size: 100,
            page_token: token,
            ..Default::default()
        })
        .await
        .expect("page")
        .into_inner();
    let written_before: Vec<String> = all
        .iter()
        .filter(|t| {
            t.request_id.starts_with("p-0-")
                || t.request_id.starts_with("p-1-")
                || t.kind == TransactionKind::Grant as i32
        })
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(ids(&page.transactions), written_before);
}
