//! Account overrides (issue 12, point 4): contract prices per account and its sub-accounts,
//! effective-dated, used ahead of the rate card by debits, holds and quotes; the nearest
//! account's record wins, a cleared record hands back to the parent's or the card; the entry
//! names the override that priced it (and `allot verify` still passes); an override set on
//! one replica prices debits on another at once; bad input, roles, idempotency; the CLI.

mod common;

use std::time::Duration;

use allot::proto;
use common::*;
use tonic::Code;

fn ts(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

fn set_request(
    account_id: &str,
    flat: Option<&str>,
    effective: Option<i64>,
) -> proto::SetAccountOverrideRequest {
    proto::SetAccountOverrideRequest {
        account_override: Some(proto::AccountOverride {
            account_id: account_id.into(),
            request_type: "chat".into(),
            rate: flat.map(|flat| proto::Rate {
                flat_units: flat.into(),
                ..Default::default()
            }),
            effective_time: effective.map(ts),
            note: "contract 2026-117".into(),
            ..Default::default()
        }),
        request_id: uuid(),
    }
}

async fn set(app: &TestApp, request: proto::SetAccountOverrideRequest) -> proto::AccountOverride {
    app.rates(&app.admin)
        .set_account_override(request)
        .await
        .expect("set override")
        .into_inner()
}

async fn charge(app: &TestApp, account_id: &str) -> proto::Transaction {
    app.ledger(&app.admin)
        .debit(debit_request(account_id, "chat", &uuid()))
        .await
        .expect("debit")
        .into_inner()
        .transaction
        .expect("entry")
}

#[tokio::test]
async fn the_nearest_override_in_force_prices_debits_holds_and_quotes() {
    let app = spawn_app().await;
    app.publish_card(vec![rate("chat", "10", &[], "")]).await;
    let (parent, _) = app.funded("contract-parent", "1000").await;
    let child = app.create_account("contract-child", &parent.id).await;
    let child_wallet = app.create_wallet(&child.id, "credits", "").await;
    app.grant(&child_wallet.id, "1000").await;
    let (other, _) = app.funded("list-price", "1000").await;

    let on_parent = set(&app, set_request(&parent.id, Some("6"), None)).await;
    assert!(on_parent.id.starts_with("ovr_") && !on_parent.cleared);
    assert_eq!(on_parent.rate.as_ref().unwrap().flat_units, "6");
    // The child is priced by its parent's contract; the entry says so.
    let entry = charge(&app, &child.id).await;
    assert_eq!(
        (entry.units.as_str(), entry.override_id.as_str()),
        ("6", on_parent.id.as_str())
    );
    assert_eq!(entry.rate_card_version, 1);
    // Others pay the card.
    let list = charge(&app, &other.id).await;
    assert_eq!((list.units.as_str(), list.override_id.as_str()), ("10", ""));

    // The child's own price from an hour on: until then the parent's.
    let later = app.clock.now_micros() + 3_600_000_000;
    let on_child = set(&app, set_request(&child.id, Some("4"), Some(later))).await;
    assert_eq!(charge(&app, &child.id).await.units, "6");
    app.clock.advance(3_600_000_000 + 1);
    let entry = charge(&app, &child.id).await;
    assert_eq!(
        (entry.units.as_str(), entry.override_id.as_str()),
        ("4", on_child.id.as_str())
    );
    let quote = app
        .rates(&app.admin)
        .quote_price(proto::QuotePriceRequest {
            account_id: child.id.clone(),
            request_type: "chat".into(),
            ..Default::default()
        })
        .await
        .expect("quote")
        .into_inner();
    assert_eq!(
        (quote.units.as_str(), quote.override_id.as_str()),
        ("4", on_child.id.as_str())
    );
    // A hold is priced the same way.
    let hold = app
        .ledger(&app.admin)
        .reserve(proto::ReserveRequest {
            account_id: child.id.clone(),
            request_type: "chat".into(),
            ttl: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            request_id: uuid(),
            ..Default::default()
        })
        .await
        .expect("hold")
        .into_inner();
    assert_eq!(hold.units, "4");

    // Ending the child's override hands back to the parent's.
    let cleared = set(&app, set_request(&child.id, None, None)).await;
    assert!(cleared.cleared && cleared.rate.is_none());
    assert_eq!(charge(&app, &child.id).await.override_id, on_parent.id);

    let records = app
        .rates(&app.admin)
        .list_account_overrides(proto::ListAccountOverridesRequest {
            account_id: parent.id.clone(),
            include_sub_accounts: true,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .account_overrides;
    let mut ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    let mut expected = vec![
        on_parent.id.as_str(),
        on_child.id.as_str(),
        cleared.id.as_str(),
    ];
    expected.sort_unstable();
    assert_eq!(ids, expected);

    // The chain covers which price applied: still verifies.
    let report = allot::store::verify::verify_snapshot(app.handles.store.connection())
        .await
        .expect("verify");
    assert!(report.is_ok(), "{report:#?}");
    app.stop().await;
}

#[tokio::test]
async fn an_override_set_on_one_replica_prices_debits_on_another() {
    let app = spawn_app().await;
    app.publish_card(vec![rate("chat", "10", &[], "")]).await;
    let replica = app.spawn_replica().await;
    let (account, _) = app.funded("replicated", "1000").await;
    // The replica has priced a debit already (its cache holds the card and no overrides).
    assert_eq!(charge(&replica, &account.id).await.units, "10");
    let record = set(&app, set_request(&account.id, Some("3"), None)).await;
    let entry = charge(&replica, &account.id).await;
    assert_eq!(
        (entry.units.as_str(), entry.override_id.as_str()),
        ("3", record.id.as_str())
    );
    replica.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn overrides_are_checked_scoped_and_idempotent() {
    let app = spawn_app().await;
    app.publish_card(vec![rate("chat", "10", &[], "")]).await;
    let (account, _) = app.funded("checked-override", "100").await;
    let (other, _) = app.funded("not-mine", "100").await;
    let mut client = app.rates(&app.admin);

    let mut routed = set_request(&account.id, Some("1"), None);
    routed
        .account_override
        .as_mut()
        .unwrap()
        .rate
        .as_mut()
        .unwrap()
        .route = "x".into();
    let refused = client.set_account_override(routed).await.unwrap_err();
    assert_invalid(&refused, "INVALID_FIELD", "account_override.rate.route");
    let negative = client
        .set_account_override(set_request(&account.id, Some("-1"), None))
        .await
        .unwrap_err();
    assert_eq!(negative.code(), Code::InvalidArgument);
    let past = client
        .set_account_override(set_request(
            &account.id,
            Some("1"),
            Some(app.clock.now_micros() - 3_600_000_000),
        ))
        .await
        .unwrap_err();
    assert_invalid(
        &past,
        "EFFECTIVE_TIME_IN_PAST",
        "account_override.effective_time",
    );
    let mut backwards = set_request(&account.id, Some("1"), None);
    backwards.account_override.as_mut().unwrap().expire_time = Some(ts(app.clock.now_micros() - 1));
    let refused = client.set_account_override(backwards).await.unwrap_err();
    assert_invalid(&refused, "INVALID_FIELD", "account_override.expire_time");
    let missing = client
        .set_account_override(proto::SetAccountOverrideRequest {
            request_id: uuid(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&missing, "MISSING_FIELD", "account_override");

    for role in ["procurement", "service"] {
        let denied = app
            .rates(&token(&[role], &[&account.id]))
            .set_account_override(set_request(&account.id, Some("1"), None))
            .await
            .unwrap_err();
        assert_error(&denied, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    }
    let manager = token(&["account_manager"], &[&account.id]);
    let out_of_scope = app
        .rates(&manager)
        .set_account_override(set_request(&other.id, Some("1"), None))
        .await
        .unwrap_err();
    assert_eq!(out_of_scope.code(), Code::PermissionDenied);

    // The same request_id replays; the same id with other content is refused.
    let request = set_request(&account.id, Some("2"), None);
    let first = app
        .rates(&manager)
        .set_account_override(request.clone())
        .await
        .expect("set by the account manager")
        .into_inner();
    let again = app
        .rates(&manager)
        .set_account_override(request.clone())
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(first, again);
    let mut changed = request;
    changed
        .account_override
        .as_mut()
        .unwrap()
        .rate
        .as_mut()
        .unwrap()
        .flat_units = "3".into();
    let reused = app
        .rates(&manager)
        .set_account_override(changed)
        .await
        .unwrap_err();
    assert_error(&reused, Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED");
    app.stop().await;
}

#[tokio::test]
async fn the_cli_sets_and_lists_overrides() {
    let app = spawn_app().await;
    app.publish_card(vec![rate(
        "chat",
        "1",
        &[("output_tokens", "1000", "0.2")],
        "",
    )])
    .await;
    let (account, _) = app.funded("cli-contract", "100").await;
    let run = |args: Vec<String>| {
        let server = format!("http://{}", app.addr);
        let token = app.admin.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_allot"))
                .args(&args)
                .args(["--server", &server, "--token", &token])
                .output()
                .await
                .expect("run allot")
        }
    };
    let set = run([
        "overrides",
        "set",
        "--account",
        &account.id,
        "--type",
        "chat",
        "--flat",
        "0.5",
        "--dim",
        "output_tokens=0.1/1000",
        "--note",
        "MSA-7",
        "--json",
    ]
    .map(String::from)
    .to_vec())
    .await;
    assert!(set.status.success(), "{set:?}");
    let record: serde_json::Value = serde_json::from_slice(&set.stdout).expect("JSON");
    assert_eq!(
        record["rate"]["flatUnits"]
            .as_str()
            .or(record["rate"]["flat_units"].as_str()),
        Some("0.5")
    );
    let mut debit = debit_request(&account.id, "chat", &uuid());
    debit.quantities = quantities(&[("output_tokens", "5000")]);
    let entry = app
        .ledger(&app.admin)
        .debit(debit)
        .await
        .expect("debit")
        .into_inner()
        .transaction
        .unwrap();
    assert_eq!(entry.units, "1");
    let list = run(["overrides", "list", "--account", &account.id]
        .map(String::from)
        .to_vec())
    .await;
    assert!(list.status.success(), "{list:?}");
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("MSA-7") && text.contains(&account.id),
        "{text}"
    );
    let bad = run([
        "overrides",
        "set",
        "--account",
        &account.id,
        "--type",
        "chat",
    ]
    .map(String::from)
    .to_vec())
    .await;
    assert!(!bad.status.success(), "--flat or --clear is required");
    let _ = Duration::ZERO;
    app.stop().await;
}
