//! Input validation and the error contract over gRPC: every bad input is INVALID_ARGUMENT with
//! the right reason and writes nothing (the same request_id then works with valid input); every
//! error the account, grant, rate-card and debit paths produce carries its code, reason and
//! metadata; pricing, overdraft, rate-card versions and update masks as clients see them.

mod common;

use std::collections::BTreeMap;

use allot::proto::{self, AccountState, GrantKind, RateCardState, TransactionKind};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::*;
use prost_types::{FieldMask, Timestamp};
use tonic::Code;

// ---- helpers -------------------------------------------------------------------------------

/// Grammatically malformed decimals (spec "Numbers").
const MALFORMED: &[&str] = &[
    "abc", "1e3", "NaN", "inf", "1.2.3", " 1", "1 ", "+1", ".5", "5.", "1,5", "0x10", "--1", "-",
];
/// More than 18 integer or 6 fractional digits.
const TOO_MANY_DIGITS: &[&str] = &["1.0000001", "1234567890123456789"];
/// Grammatical, but beyond what an amount of units can hold (i64 micro-units).
const OUT_OF_RANGE: &[&str] = &["999999999999999999", "9223372036854.775808"];

/// The reason a bad amount from [`bad_amounts`] is refused with: well-formed but beyond the
/// bounds is AMOUNT_OUT_OF_RANGE, anything else INVALID_AMOUNT.
fn amount_reason(bad: &str) -> &'static str {
    if OUT_OF_RANGE.contains(&bad) {
        "AMOUNT_OUT_OF_RANGE"
    } else {
        "INVALID_AMOUNT"
    }
}

/// Every malformed, over-long and out-of-range decimal, then `extra`.
fn bad_amounts(extra: &[&'static str]) -> Vec<&'static str> {
    MALFORMED
        .iter()
        .chain(TOO_MANY_DIGITS)
        .chain(OUT_OF_RANGE)
        .chain(extra)
        .copied()
        .collect()
}

fn service() -> String {
    token(&["service"], &["*"])
}

fn long(n: usize) -> String {
    "a".repeat(n)
}

fn from_now(seconds: i64) -> Timestamp {
    ts_secs(now_seconds() + seconds)
}

async fn wallets(app: &TestApp, account_id: &str) -> Vec<proto::Wallet> {
    app.accounts(&app.admin)
        .list_wallets(proto::ListWalletsRequest {
            account_id: account_id.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list wallets")
        .into_inner()
        .wallets
}

async fn rate_cards(app: &TestApp) -> Vec<proto::RateCard> {
    app.rates(&app.admin)
        .list_rate_cards(proto::ListRateCardsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list rate cards")
        .into_inner()
        .rate_cards
}

async fn get_account(app: &TestApp, id: &str) -> proto::Account {
    app.accounts(&app.admin)
        .get_account(proto::GetAccountRequest { id: id.into() })
        .await
        .expect("get account")
        .into_inner()
}

async fn get_card(app: &TestApp, token: &str, version: i64) -> proto::RateCard {
    app.rates(token)
        .get_rate_card(proto::GetRateCardRequest {
            version,
            time: None,
        })
        .await
        .expect("get rate card")
        .into_inner()
}

/// Everything a rejected request on one wallet must leave exactly as it was.
#[derive(Debug, PartialEq)]
struct WalletState {
    balance: proto::Balance,
    transactions: Vec<proto::Transaction>,
    grants: Vec<proto::Grant>,
}

async fn wallet_state(app: &TestApp, account_id: &str, wallet_id: &str) -> WalletState {
    WalletState {
        balance: app.balance(account_id).await,
        transactions: app.all_transactions(account_id).await,
        grants: app.all_grants(wallet_id).await,
    }
}

fn grant_request(wallet_id: &str, amount: &str, request_id: &str) -> proto::CreateGrantRequest {
    proto::CreateGrantRequest {
        grant: Some(proto::Grant {
            wallet_id: wallet_id.into(),
            kind: GrantKind::Purchase as i32,
            amount: amount.into(),
            ..Default::default()
        }),
        request_id: request_id.into(),
    }
}

fn account_request(external_id: &str, request_id: &str) -> proto::CreateAccountRequest {
    proto::CreateAccountRequest {
        account: Some(proto::Account {
            external_id: external_id.into(),
            display_name: "Name".into(),
            ..Default::default()
        }),
        request_id: request_id.into(),
    }
}

fn draft_request(rates: Vec<proto::Rate>, request_id: &str) -> proto::CreateRateCardRequest {
    proto::CreateRateCardRequest {
        rate_card: Some(proto::RateCard {
            rates,
            ..Default::default()
        }),
        request_id: request_id.into(),
    }
}

fn update_request(
    account: proto::Account,
    paths: &[&str],
    request_id: &str,
) -> proto::UpdateAccountRequest {
    proto::UpdateAccountRequest {
        account: Some(account),
        update_mask: Some(FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
        request_id: request_id.into(),
    }
}

fn set_state(
    account_id: &str,
    state: AccountState,
    request_id: &str,
) -> proto::UpdateAccountRequest {
    update_request(
        proto::Account {
            id: account_id.into(),
            state: state as i32,
            ..Default::default()
        },
        &["state"],
        request_id,
    )
}

/// A rate whose price is exactly the quantity `n` (1 unit per 1 n), no cap.
fn per_n() -> proto::Rate {
    rate("n", "0", &[("n", "1", "1")], "")
}

fn debit_n(account_id: &str, n: &str, request_id: &str) -> proto::DebitRequest {
    proto::DebitRequest {
        quantities: quantities(&[("n", n)]),
        ..debit_request(account_id, "n", request_id)
    }
}

// ---- 1. bad input: INVALID_ARGUMENT, nothing written ---------------------------------------

#[tokio::test]
async fn bad_grant_amounts_are_rejected_and_leave_no_trace() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("grant-amounts", "10").await;
    let before = wallet_state(&app, &account.id, &wallet.id).await;
    let mut grants = app.grants(&app.admin);

    for bad in bad_amounts(&["0", "0.0", "-0", "-1", "-0.000001"]) {
        let status = rejected(
            grants
                .create_grant(grant_request(&wallet.id, bad, "grant-retry"))
                .await,
        );
        assert_invalid(&status, amount_reason(bad), "grant.amount");
    }
    let status = rejected(
        grants
            .create_grant(grant_request(&wallet.id, "", "grant-retry"))
            .await,
    );
    assert_invalid(&status, "MISSING_FIELD", "grant.amount");
    assert_eq!(wallet_state(&app, &account.id, &wallet.id).await, before);

    // The rejected request_id is free: the same id with a valid amount is a fresh grant.
    let grant = grants
        .create_grant(grant_request(&wallet.id, "5.000001", "grant-retry"))
        .await
        .expect("valid grant")
        .into_inner();
    assert_eq!(grant.amount, "5.000001");
    assert_eq!(grant.remaining, "5.000001");
    assert_eq!(app.balance(&account.id).await.posted, "15.000001");
    assert_eq!(app.all_grants(&wallet.id).await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn bad_grant_fields_are_rejected() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("grant-fields", "10").await;
    let before = wallet_state(&app, &account.id, &wallet.id).await;
    let mut grants = app.grants(&app.admin);
    let with = |edit: &dyn Fn(&mut proto::Grant)| {
        let mut request = grant_request(&wallet.id, "1", "grant-fields");
        edit(request.grant.as_mut().unwrap());
        request
    };

    let cases: Vec<(proto::CreateGrantRequest, &str, &str)> = vec![
        (
            with(&|g| g.unit_price = "1e3".into()),
            "INVALID_AMOUNT",
            "grant.unit_price",
        ),
        (
            with(&|g| g.unit_price = "-0.5".into()),
            "INVALID_AMOUNT",
            "grant.unit_price",
        ),
        (
            with(&|g| g.unit_price = "0.5".into()),
            "MISSING_FIELD",
            "grant.currency",
        ),
        (
            with(&|g| {
                g.unit_price = "0.5".into();
                g.currency = "usd".into();
            }),
            "INVALID_FIELD",
            "grant.currency",
        ),
        (
            with(&|g| g.contract_ref = long(257)),
            "FIELD_TOO_LONG",
            "grant.contract_ref",
        ),
        (
            with(&|g| g.wallet_id = String::new()),
            "MISSING_FIELD",
            "wallet_id",
        ),
        (
            with(&|g| g.wallet_id = account.id.clone()),
            "INVALID_ID",
            "wallet_id",
        ),
        (
            with(&|g| g.wallet_id = format!("wal_{}", long(61))),
            "FIELD_TOO_LONG",
            "wallet_id",
        ),
    ];
    for (request, reason, field) in cases {
        let status = rejected(grants.create_grant(request).await);
        assert_invalid(&status, reason, field);
    }
    assert_eq!(wallet_state(&app, &account.id, &wallet.id).await, before);
    app.stop().await;
}

#[tokio::test]
async fn bad_overdraft_limits_are_rejected_and_leave_no_trace() {
    let app = spawn_app().await;
    let account = app.create_account("overdrafts", "").await;
    let mut accounts = app.accounts(&app.admin);
    let request = |limit: &str| proto::CreateWalletRequest {
        wallet: Some(proto::Wallet {
            account_id: account.id.clone(),
            unit: "credits".into(),
            overdraft_limit: limit.into(),
            ..Default::default()
        }),
        request_id: "wallet-retry".into(),
    };
    for bad in bad_amounts(&["-1", "-0.000001"]) {
        let status = rejected(accounts.create_wallet(request(bad)).await);
        assert_invalid(&status, amount_reason(bad), "wallet.overdraft_limit");
    }
    for (unit, reason) in [
        ("has space", "INVALID_FIELD"),
        (long(65).as_str(), "FIELD_TOO_LONG"),
    ] {
        let mut bad_unit = request("5");
        bad_unit.wallet.as_mut().unwrap().unit = unit.into();
        let status = rejected(accounts.create_wallet(bad_unit).await);
        assert_invalid(&status, reason, "unit");
    }
    assert!(wallets(&app, &account.id).await.is_empty());

    let wallet = accounts
        .create_wallet(request("5"))
        .await
        .expect("valid wallet")
        .into_inner();
    assert_eq!(wallet.overdraft_limit, "5");
    assert_eq!(wallet.balance.unwrap().available, "5");
    assert_eq!(wallets(&app, &account.id).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn bad_quantities_and_max_units_are_rejected_and_leave_no_trace() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("quantities", "100").await;
    app.publish_card(vec![
        rate("chat", "1", &[("output_tokens", "1000", "0.2")], "50"),
        per_n(),
    ])
    .await;
    let before = wallet_state(&app, &account.id, &wallet.id).await;
    let mut ledger = app.ledger(&service());
    let mut rates = app.rates(&service());
    let chat = |tokens: &str| proto::DebitRequest {
        quantities: quantities(&[("output_tokens", tokens)]),
        ..debit_request(&account.id, "chat", "debit-retry")
    };

    let bad_quantities: Vec<&str> = MALFORMED
        .iter()
        .chain(TOO_MANY_DIGITS)
        .chain(&["-1", "-0.5"])
        .copied()
        .collect();
    for bad in bad_quantities {
        let status = rejected(ledger.debit(chat(bad)).await);
        assert_invalid(&status, "INVALID_AMOUNT", "quantities[output_tokens]");
        let status = rejected(
            rates
                .quote_price(proto::QuotePriceRequest {
                    account_id: account.id.clone(),
                    request_type: "chat".into(),
                    quantities: quantities(&[("output_tokens", bad)]),
                    ..Default::default()
                })
                .await,
        );
        assert_invalid(&status, "INVALID_AMOUNT", "quantities[output_tokens]");
    }
    let status = rejected(ledger.debit(chat("")).await);
    assert_invalid(&status, "MISSING_FIELD", "quantities[output_tokens]");
    let mut bad_key = chat("1");
    bad_key.quantities = quantities(&[("output tokens", "1")]);
    let status = rejected(ledger.debit(bad_key).await);
    assert_invalid(&status, "INVALID_FIELD", "quantities.key");

    for bad in bad_amounts(&["-1", "-0.000001"]) {
        let mut request = chat("1500");
        request.max_units = bad.into();
        let status = rejected(ledger.debit(request).await);
        assert_invalid(&status, amount_reason(bad), "max_units");
    }

    // A quantity whose price does not fit an amount of units.
    let status = rejected(
        ledger
            .debit(debit_n(&account.id, "999999999999999999", "debit-retry"))
            .await,
    );
    assert_error(&status, Code::InvalidArgument, "PRICE_OUT_OF_RANGE");

    for (request_type, reason) in [
        ("", "MISSING_FIELD"),
        ("has space", "INVALID_FIELD"),
        (long(129).as_str(), "FIELD_TOO_LONG"),
    ] {
        let status = rejected(
            ledger
                .debit(debit_request(&account.id, request_type, "debit-retry"))
                .await,
        );
        assert_invalid(&status, reason, "request_type");
    }
    let mut bad_unit = chat("1");
    bad_unit.unit = "no/spaces allowed".into();
    let status = rejected(ledger.debit(bad_unit).await);
    assert_invalid(&status, "INVALID_FIELD", "unit");
    assert_eq!(wallet_state(&app, &account.id, &wallet.id).await, before);

    // The same request_id with valid input is a fresh debit.
    let mut valid = chat("1500");
    valid.max_units = "1.3".into();
    let response = ledger.debit(valid).await.expect("valid debit").into_inner();
    assert!(!response.replayed);
    assert_eq!(response.transaction.unwrap().units, "1.3");
    assert_eq!(app.balance(&account.id).await.posted, "98.7");
    app.stop().await;
}

#[tokio::test]
async fn bad_rate_prices_are_rejected_and_leave_no_trace() {
    let app = spawn_app().await;
    let mut rates = app.rates(&app.admin);
    let field = |name: &str| format!("rate_card.rates[0].{name}");

    for bad in bad_amounts(&["-1"]) {
        let status = rejected(
            rates
                .create_rate_card(draft_request(vec![rate("x", bad, &[], "")], "card-retry"))
                .await,
        );
        assert_invalid(&status, amount_reason(bad), &field("flat_units"));
        let status = rejected(
            rates
                .create_rate_card(draft_request(vec![rate("x", "1", &[], bad)], "card-retry"))
                .await,
        );
        assert_invalid(&status, amount_reason(bad), &field("max_units"));
        let status = rejected(
            rates
                .create_rate_card(draft_request(
                    vec![rate("x", "1", &[("tokens", "1000", bad)], "")],
                    "card-retry",
                ))
                .await,
        );
        assert_invalid(&status, amount_reason(bad), &field("dimensions[0].units"));
    }
    for bad in MALFORMED.iter().chain(TOO_MANY_DIGITS).chain(&["-1000"]) {
        let status = rejected(
            rates
                .create_rate_card(draft_request(
                    vec![rate("x", "1", &[("tokens", bad, "1")], "")],
                    "card-retry",
                ))
                .await,
        );
        assert_invalid(&status, "INVALID_AMOUNT", &field("dimensions[0].per"));
    }
    let mut bad_cost = rate("x", "1", &[], "");
    bad_cost.provider_cost = "1e-3".into();
    let status = rejected(
        rates
            .create_rate_card(draft_request(vec![bad_cost], "card-retry"))
            .await,
    );
    assert_invalid(&status, "INVALID_AMOUNT", &field("provider_cost"));
    // A provider cost beyond the unit-price bound (10¹² per request).
    let mut huge_cost = rate("x", "1", &[], "");
    huge_cost.provider_cost = "1000000000000.000001".into();
    let status = rejected(
        rates
            .create_rate_card(draft_request(vec![huge_cost], "card-retry"))
            .await,
    );
    assert_invalid(&status, "AMOUNT_OUT_OF_RANGE", &field("provider_cost"));
    let mut bad_route = rate("x", "1", &[], "");
    bad_route.route = long(257);
    let status = rejected(
        rates
            .create_rate_card(draft_request(vec![bad_route], "card-retry"))
            .await,
    );
    assert_invalid(&status, "FIELD_TOO_LONG", &field("route"));
    assert!(rate_cards(&app).await.is_empty());

    // The same request_id with valid input creates the first version; an empty flat price
    // means 0.
    let draft = rates
        .create_rate_card(draft_request(
            vec![rate("x", "", &[("tokens", "", "0.5")], "")],
            "card-retry",
        ))
        .await
        .expect("valid draft")
        .into_inner();
    assert_eq!(draft.version, 1);
    assert_eq!(draft.state, RateCardState::Draft as i32);
    assert_eq!(draft.rates[0].flat_units, "0");
    assert_eq!(draft.rates[0].dimensions[0].per, "1");
    assert_eq!(rate_cards(&app).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn ids_and_strings_are_bounded() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("bounded", "10").await;
    app.publish_standard_card().await;
    let before_accounts = app.all_accounts(&app.admin).await;
    let before = wallet_state(&app, &account.id, &wallet.id).await;
    let mut accounts = app.accounts(&app.admin);
    let mut ledger = app.ledger(&service());

    for (id, reason) in [
        ("", "MISSING_FIELD"),
        (format!("acct_{}", long(60)).as_str(), "FIELD_TOO_LONG"),
        (wallet.id.as_str(), "INVALID_ID"),
        ("wal_x", "INVALID_ID"),
        ("acct_", "INVALID_ID"),
        ("acct", "INVALID_ID"),
        ("acct_a-b", "INVALID_ID"),
        ("acctx_1", "INVALID_ID"),
    ] {
        let status = rejected(
            accounts
                .get_account(proto::GetAccountRequest { id: id.into() })
                .await,
        );
        assert_invalid(&status, reason, "id");
        if !id.is_empty() {
            let status = rejected(ledger.debit(debit_request(id, "one", "ids")).await);
            assert_invalid(&status, reason, "account_id");
        }
    }
    // 64 characters is the longest id: well-formed, just not there.
    let status = rejected(
        accounts
            .get_account(proto::GetAccountRequest {
                id: format!("acct_{}", long(59)),
            })
            .await,
    );
    assert_error(&status, Code::NotFound, "NOT_FOUND");

    let status = rejected(
        accounts
            .get_wallet(proto::GetWalletRequest {
                id: account.id.clone(),
            })
            .await,
    );
    assert_invalid(&status, "INVALID_ID", "wallet_id");
    let status = rejected(
        accounts
            .create_wallet(proto::CreateWalletRequest {
                wallet: Some(proto::Wallet {
                    account_id: "wal_x".into(),
                    ..Default::default()
                }),
                request_id: "ids".into(),
            })
            .await,
    );
    assert_invalid(&status, "INVALID_ID", "wallet.account_id");

    // external_id: required on create, at most 128 bytes everywhere.
    let status = rejected(accounts.create_account(account_request("", "ids")).await);
    assert_invalid(&status, "MISSING_FIELD", "account.external_id");
    let status = rejected(
        accounts
            .create_account(account_request(&long(129), "ids"))
            .await,
    );
    assert_invalid(&status, "FIELD_TOO_LONG", "account.external_id");
    let status = rejected(
        ledger
            .debit(proto::DebitRequest {
                external_id: long(129),
                ..debit_request("", "one", "ids")
            })
            .await,
    );
    assert_invalid(&status, "FIELD_TOO_LONG", "external_id");
    let mut named = account_request("named", "ids");
    named.account.as_mut().unwrap().display_name = long(257);
    let status = rejected(accounts.create_account(named.clone()).await);
    assert_invalid(&status, "FIELD_TOO_LONG", "account.display_name");
    named.account.as_mut().unwrap().display_name = "bell\u{7}".into();
    let status = rejected(accounts.create_account(named).await);
    assert_invalid(&status, "INVALID_FIELD", "account.display_name");
    let mut orphan = account_request("orphan", "ids");
    orphan.account.as_mut().unwrap().parent_id = "wal_x".into();
    let status = rejected(accounts.create_account(orphan).await);
    assert_invalid(&status, "INVALID_ID", "account.parent_id");

    assert_eq!(app.all_accounts(&app.admin).await, before_accounts);
    assert_eq!(wallet_state(&app, &account.id, &wallet.id).await, before);

    // The longest external_id is accepted, under the request_id the rejections used.
    let created = accounts
        .create_account(account_request(&long(128), "ids"))
        .await
        .expect("128-byte external_id")
        .into_inner();
    assert_eq!(created.external_id, long(128));
    assert_eq!(
        app.all_accounts(&app.admin).await.len(),
        before_accounts.len() + 1
    );
    app.stop().await;
}

#[tokio::test]
async fn request_ids_are_required_bounded_and_printable() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("request-ids", "10").await;
    app.publish_standard_card().await;
    let before_accounts = app.all_accounts(&app.admin).await;
    let before = wallet_state(&app, &account.id, &wallet.id).await;
    let mut accounts = app.accounts(&app.admin);
    let mut grants = app.grants(&app.admin);
    let mut ledger = app.ledger(&service());

    for (request_id, reason) in [
        ("", "MISSING_FIELD"),
        (long(129).as_str(), "FIELD_TOO_LONG"),
        ("has space", "INVALID_FIELD"),
        ("tab\there", "INVALID_FIELD"),
        ("naïve", "INVALID_FIELD"),
    ] {
        let status = rejected(
            accounts
                .create_account(account_request("new-account", request_id))
                .await,
        );
        assert_invalid(&status, reason, "request_id");
        let status = rejected(
            grants
                .create_grant(grant_request(&wallet.id, "1", request_id))
                .await,
        );
        assert_invalid(&status, reason, "request_id");
        let status = rejected(
            ledger
                .debit(debit_request(&account.id, "one", request_id))
                .await,
        );
        assert_invalid(&status, reason, "request_id");
        let status = rejected(
            accounts
                .create_wallet(proto::CreateWalletRequest {
                    wallet: Some(proto::Wallet {
                        account_id: account.id.clone(),
                        unit: "message_units".into(),
                        ..Default::default()
                    }),
                    request_id: request_id.into(),
                })
                .await,
        );
        assert_invalid(&status, reason, "request_id");
        let status = rejected(
            accounts
                .update_account(set_state(&account.id, AccountState::Suspended, request_id))
                .await,
        );
        assert_invalid(&status, reason, "request_id");
        let status = rejected(
            app.rates(&app.admin)
                .create_rate_card(draft_request(vec![rate("x", "1", &[], "")], request_id))
                .await,
        );
        assert_invalid(&status, reason, "request_id");
    }
    assert_eq!(app.all_accounts(&app.admin).await, before_accounts);
    assert_eq!(wallet_state(&app, &account.id, &wallet.id).await, before);
    assert_eq!(wallets(&app, &account.id).await.len(), 1);
    assert_eq!(rate_cards(&app).await.len(), 1);

    // 128 printable characters is the longest request_id.
    let longest = format!("{}~!", long(126));
    accounts
        .create_account(account_request("new-account", &longest))
        .await
        .expect("128-character request_id");
    let debit = ledger
        .debit(debit_request(&account.id, "one", &longest))
        .await
        .expect("128-character request_id")
        .into_inner();
    assert_eq!(debit.transaction.unwrap().request_id, longest);
    app.stop().await;
}

#[tokio::test]
async fn unknown_enum_values_are_rejected() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("enums", "10").await;
    let before_accounts = app.all_accounts(&app.admin).await;
    let before = wallet_state(&app, &account.id, &wallet.id).await;
    let mut grants = app.grants(&app.admin);
    let mut accounts = app.accounts(&app.admin);

    let mut request = grant_request(&wallet.id, "1", "enum-retry");
    request.grant.as_mut().unwrap().kind = 99;
    let status = rejected(grants.create_grant(request.clone()).await);
    assert_invalid(&status, "INVALID_ENUM", "grant.kind");
    request.grant.as_mut().unwrap().kind = -1;
    let status = rejected(grants.create_grant(request.clone()).await);
    assert_invalid(&status, "INVALID_ENUM", "grant.kind");
    request.grant.as_mut().unwrap().kind = GrantKind::Unspecified as i32;
    let status = rejected(grants.create_grant(request.clone()).await);
    assert_invalid(&status, "MISSING_FIELD", "grant.kind");
    assert_eq!(wallet_state(&app, &account.id, &wallet.id).await, before);
    request.grant.as_mut().unwrap().kind = GrantKind::Promotional as i32;
    let grant = grants
        .create_grant(request)
        .await
        .expect("valid kind")
        .into_inner();
    assert_eq!(grant.kind, GrantKind::Promotional as i32);

    let mut create = account_request("enum-account", "enum-account");
    create.account.as_mut().unwrap().state = 42;
    let status = rejected(accounts.create_account(create.clone()).await);
    assert_error(&status, Code::InvalidArgument, "INVALID_ENUM");
    assert_eq!(app.all_accounts(&app.admin).await, before_accounts);
    create.account.as_mut().unwrap().state = AccountState::Suspended as i32;
    let created = accounts
        .create_account(create)
        .await
        .expect("valid state")
        .into_inner();
    assert_eq!(created.state, AccountState::Suspended as i32);

    let mut update = set_state(&account.id, AccountState::Active, "enum-update");
    update.account.as_mut().unwrap().state = 42;
    let status = rejected(accounts.update_account(update.clone()).await);
    assert_error(&status, Code::InvalidArgument, "INVALID_ENUM");
    update.account.as_mut().unwrap().state = AccountState::Unspecified as i32;
    let status = rejected(accounts.update_account(update.clone()).await);
    assert_invalid(&status, "MISSING_FIELD", "account.state");
    assert_eq!(get_account(&app, &account.id).await, account);
    update.account.as_mut().unwrap().state = AccountState::Suspended as i32;
    let updated = accounts
        .update_account(update)
        .await
        .expect("valid state")
        .into_inner();
    assert_eq!(updated.state, AccountState::Suspended as i32);
    app.stop().await;
}

#[tokio::test]
async fn missing_resource_messages_are_rejected() {
    let app = spawn_app().await;
    let account = app.create_account("messages", "").await;
    let before_accounts = app.all_accounts(&app.admin).await;

    let status = rejected(
        app.accounts(&app.admin)
            .create_account(proto::CreateAccountRequest {
                account: None,
                request_id: "m1".into(),
            })
            .await,
    );
    assert_invalid(&status, "MISSING_FIELD", "account");
    let status = rejected(
        app.accounts(&app.admin)
            .update_account(proto::UpdateAccountRequest {
                account: None,
                update_mask: None,
                request_id: "m2".into(),
            })
            .await,
    );
    assert_invalid(&status, "MISSING_FIELD", "account");
    let status = rejected(
        app.accounts(&app.admin)
            .create_wallet(proto::CreateWalletRequest {
                wallet: None,
                request_id: "m3".into(),
            })
            .await,
    );
    assert_invalid(&status, "MISSING_FIELD", "wallet");
    let status = rejected(
        app.grants(&app.admin)
            .create_grant(proto::CreateGrantRequest {
                grant: None,
                request_id: "m4".into(),
            })
            .await,
    );
    assert_invalid(&status, "MISSING_FIELD", "grant");
    let status = rejected(
        app.rates(&app.admin)
            .create_rate_card(proto::CreateRateCardRequest {
                rate_card: None,
                request_id: "m5".into(),
            })
            .await,
    );
    assert_invalid(&status, "MISSING_FIELD", "rate_card");
    // An update with nothing to update.
    let status = rejected(
        app.accounts(&app.admin)
            .update_account(proto::UpdateAccountRequest {
                account: Some(proto::Account {
                    id: account.id.clone(),
                    ..Default::default()
                }),
                update_mask: None,
                request_id: "m6".into(),
            })
            .await,
    );
    assert_invalid(&status, "MISSING_FIELD", "update_mask");
    // A path that is not an updatable field, of an account and of a wallet.
    let status = rejected(
        app.accounts(&app.admin)
            .update_account(proto::UpdateAccountRequest {
                account: Some(proto::Account {
                    id: account.id.clone(),
                    external_id: "renamed".into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["external_id".into()],
                }),
                request_id: "m7".into(),
            })
            .await,
    );
    assert_invalid(&status, "INVALID_FIELD", "update_mask");
    assert!(
        status
            .message()
            .contains("`external_id` cannot be updated (display_name, labels, state can)"),
        "{status:?}"
    );
    let status = rejected(
        app.accounts(&app.admin)
            .update_wallet(proto::UpdateWalletRequest {
                wallet: Some(proto::Wallet {
                    id: "wal_0123456789abcdef0123456789abcdef".into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["unit".into()],
                }),
                request_id: "m8".into(),
            })
            .await,
    );
    assert_invalid(&status, "INVALID_FIELD", "update_mask");
    assert!(
        status.message().contains(
            "(overdraft_limit, daily_spend_cap, monthly_spend_cap, low_balance_thresholds, \
             grant_expiry_notice_days can)"
        ),
        "{status:?}"
    );

    assert_eq!(app.all_accounts(&app.admin).await, before_accounts);
    assert!(wallets(&app, &account.id).await.is_empty());
    assert!(rate_cards(&app).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn account_id_and_external_id_are_exclusive() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("exclusive", "10").await;
    app.publish_standard_card().await;
    let before = wallet_state(&app, &account.id, &wallet.id).await;
    let mut ledger = app.ledger(&service());
    let mut rates = app.rates(&service());

    let both = proto::DebitRequest {
        external_id: "exclusive".into(),
        ..debit_request(&account.id, "one", "exclusive-retry")
    };
    let status = rejected(ledger.debit(both.clone()).await);
    assert_invalid(&status, "INVALID_FIELD", "account_id");
    let neither = debit_request("", "one", "exclusive-retry");
    let status = rejected(ledger.debit(neither).await);
    assert_invalid(&status, "MISSING_FIELD", "account_id");

    let status = rejected(
        ledger
            .get_balance(proto::GetBalanceRequest {
                account_id: account.id.clone(),
                external_id: "exclusive".into(),
                unit: String::new(),
            })
            .await,
    );
    assert_invalid(&status, "INVALID_FIELD", "account_id");
    let status = rejected(
        ledger
            .list_transactions(proto::ListTransactionsRequest {
                account_id: account.id.clone(),
                external_id: "exclusive".into(),
                ..Default::default()
            })
            .await,
    );
    assert_invalid(&status, "INVALID_FIELD", "account_id");
    let status = rejected(
        rates
            .quote_price(proto::QuotePriceRequest {
                account_id: account.id.clone(),
                external_id: "exclusive".into(),
                request_type: "one".into(),
                ..Default::default()
            })
            .await,
    );
    assert_invalid(&status, "INVALID_FIELD", "account_id");
    assert_eq!(wallet_state(&app, &account.id, &wallet.id).await, before);

    // Either one alone names the same wallet; the rejected request_id is free.
    let by_external = proto::DebitRequest {
        account_id: String::new(),
        ..both
    };
    let response = ledger
        .debit(by_external)
        .await
        .expect("debit by external_id")
        .into_inner();
    assert!(!response.replayed);
    assert_eq!(response.transaction.unwrap().wallet_id, wallet.id);
    app.stop().await;
}

#[tokio::test]
async fn bad_page_tokens_and_sizes_are_rejected() {
    let app = spawn_app().await;
    let (first, wallet) = app.funded("pages-1", "10").await;
    app.funded("pages-2", "10").await;
    app.publish_standard_card().await;
    let mut accounts = app.accounts(&app.admin);

    let page = accounts
        .list_accounts(proto::ListAccountsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("first page")
        .into_inner();
    assert_eq!(page.accounts.len(), 1);
    let accounts_token = page.next_page_token;
    assert!(!accounts_token.is_empty());
    let rest = accounts
        .list_accounts(proto::ListAccountsRequest {
            page_size: 1,
            page_token: accounts_token.clone(),
            ..Default::default()
        })
        .await
        .expect("second page")
        .into_inner();
    assert_eq!(rest.accounts.len(), 1);
    assert_ne!(rest.accounts[0].id, page.accounts[0].id);

    let forged = |text: &str| URL_SAFE_NO_PAD.encode(text);
    for token in [
        "garbage".to_string(),
        "!!!".to_string(),
        forged("wallets|wal_1"),
        forged("accounts|"),
        forged("no separator"),
    ] {
        let status = rejected(
            accounts
                .list_accounts(proto::ListAccountsRequest {
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await,
        );
        assert_invalid(&status, "INVALID_PAGE_TOKEN", "page_token");
    }
    // A token from one list is not valid for another.
    let status = rejected(
        accounts
            .list_wallets(proto::ListWalletsRequest {
                account_id: first.id.clone(),
                page_token: accounts_token.clone(),
                ..Default::default()
            })
            .await,
    );
    assert_invalid(&status, "INVALID_PAGE_TOKEN", "page_token");
    let status = rejected(
        app.grants(&app.admin)
            .list_grants(proto::ListGrantsRequest {
                wallet_id: wallet.id.clone(),
                page_token: accounts_token.clone(),
                ..Default::default()
            })
            .await,
    );
    assert_invalid(&status, "INVALID_PAGE_TOKEN", "page_token");
    for token in [accounts_token.clone(), forged("transactions|not-a-number")] {
        let status = rejected(
            app.ledger(&app.admin)
                .list_transactions(proto::ListTransactionsRequest {
                    account_id: first.id.clone(),
                    page_token: token,
                    ..Default::default()
                })
                .await,
        );
        assert_invalid(&status, "INVALID_PAGE_TOKEN", "page_token");
    }
    for token in ["garbage".to_string(), forged("rate_cards|x")] {
        let status = rejected(
            app.rates(&app.admin)
                .list_rate_cards(proto::ListRateCardsRequest {
                    page_token: token,
                    ..Default::default()
                })
                .await,
        );
        assert_invalid(&status, "INVALID_PAGE_TOKEN", "page_token");
    }

    // Negative page sizes, on every list.
    let status = rejected(
        accounts
            .list_accounts(proto::ListAccountsRequest {
                page_size: -1,
                ..Default::default()
            })
            .await,
    );
    assert_invalid(&status, "INVALID_PAGE_SIZE", "page_size");
    let status = rejected(
        accounts
            .list_wallets(proto::ListWalletsRequest {
                account_id: first.id.clone(),
                page_size: -5,
                ..Default::default()
            })
            .await,
    );
    assert_invalid(&status, "INVALID_PAGE_SIZE", "page_size");
    let status = rejected(
        app.grants(&app.admin)
            .list_grants(proto::ListGrantsRequest {
                wallet_id: wallet.id.clone(),
                page_size: i32::MIN,
                ..Default::default()
            })
            .await,
    );
    assert_invalid(&status, "INVALID_PAGE_SIZE", "page_size");
    let status = rejected(
        app.ledger(&app.admin)
            .list_transactions(proto::ListTransactionsRequest {
                account_id: first.id.clone(),
                page_size: -1,
                ..Default::default()
            })
            .await,
    );
    assert_invalid(&status, "INVALID_PAGE_SIZE", "page_size");
    let status = rejected(
        app.rates(&app.admin)
            .list_rate_cards(proto::ListRateCardsRequest {
                page_size: -1,
                ..Default::default()
            })
            .await,
    );
    assert_invalid(&status, "INVALID_PAGE_SIZE", "page_size");
    app.stop().await;
}

#[tokio::test]
async fn timestamps_out_of_range_are_rejected() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("timestamps", "10").await;
    let before = wallet_state(&app, &account.id, &wallet.id).await;
    let mut grants = app.grants(&app.admin);
    let timed = |effective: Option<Timestamp>, expire: Option<Timestamp>| {
        let mut request = grant_request(&wallet.id, "1", "time-retry");
        let grant = request.grant.as_mut().unwrap();
        grant.effective_time = effective;
        grant.expire_time = expire;
        request
    };
    let out_of_range = [
        ts_secs(-1),
        ts_secs(253_402_300_800), // 10000-01-01
        ts_secs(i64::MAX),
        Timestamp {
            seconds: now_seconds(),
            nanos: 1_000_000_000,
        },
        Timestamp {
            seconds: now_seconds(),
            nanos: -1,
        },
    ];
    for ts in &out_of_range {
        let status = rejected(grants.create_grant(timed(Some(*ts), None)).await);
        assert_invalid(&status, "INVALID_TIMESTAMP", "grant.effective_time");
        let status = rejected(grants.create_grant(timed(None, Some(*ts))).await);
        assert_invalid(&status, "INVALID_TIMESTAMP", "grant.expire_time");
    }
    // An expiry not after the start.
    let status = rejected(
        grants
            .create_grant(timed(Some(from_now(7200)), Some(from_now(3600))))
            .await,
    );
    assert_invalid(&status, "INVALID_FIELD", "grant.expire_time");
    let status = rejected(grants.create_grant(timed(None, Some(from_now(-60)))).await);
    assert_invalid(&status, "INVALID_FIELD", "grant.expire_time");
    assert_eq!(wallet_state(&app, &account.id, &wallet.id).await, before);
    let grant = grants
        .create_grant(timed(None, Some(from_now(3600))))
        .await
        .expect("valid expiry")
        .into_inner();
    assert_eq!(grant.state, proto::GrantState::Active as i32);

    // Rate cards: publish and read take timestamps too.
    let mut rates = app.rates(&app.admin);
    let draft = rates
        .create_rate_card(draft_request(vec![rate("one", "1", &[], "")], "t-card"))
        .await
        .expect("draft")
        .into_inner();
    for ts in &out_of_range {
        let status = rejected(
            rates
                .publish_rate_card(proto::PublishRateCardRequest {
                    version: draft.version,
                    etag: draft.etag.clone(),
                    effective_time: Some(*ts),
                    request_id: "t-publish".into(),
                })
                .await,
        );
        assert_invalid(&status, "INVALID_TIMESTAMP", "effective_time");
        let status = rejected(
            rates
                .get_rate_card(proto::GetRateCardRequest {
                    version: 0,
                    time: Some(*ts),
                })
                .await,
        );
        assert_invalid(&status, "INVALID_TIMESTAMP", "time");
    }
    assert_eq!(
        get_card(&app, &app.admin, draft.version).await.state,
        RateCardState::Draft as i32
    );
    app.stop().await;
}

#[tokio::test]
async fn maps_with_too_many_entries_are_rejected() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("maps", "10").await;
    app.publish_standard_card().await;
    let before_accounts = app.all_accounts(&app.admin).await;
    let before = wallet_state(&app, &account.id, &wallet.id).await;
    let entries = |n: usize| -> BTreeMap<String, String> {
        (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect()
    };
    let mut accounts = app.accounts(&app.admin);
    let mut ledger = app.ledger(&service());

    let mut create = account_request("labelled", "labels-retry");
    create.account.as_mut().unwrap().labels = entries(65);
    let status = rejected(accounts.create_account(create.clone()).await);
    assert_invalid(&status, "TOO_MANY_ENTRIES", "labels");
    create.account.as_mut().unwrap().labels = quantities(&[("bad key", "v")]);
    let status = rejected(accounts.create_account(create.clone()).await);
    assert_invalid(&status, "INVALID_FIELD", "labels.key");
    create.account.as_mut().unwrap().labels = quantities(&[("team", &long(257))]);
    let status = rejected(accounts.create_account(create.clone()).await);
    assert_invalid(&status, "FIELD_TOO_LONG", "labels[team]");

    let mut update = update_request(
        proto::Account {
            id: account.id.clone(),
            labels: entries(65),
            ..Default::default()
        },
        &["labels"],
        "labels-update",
    );
    let status = rejected(accounts.update_account(update.clone()).await);
    assert_invalid(&status, "TOO_MANY_ENTRIES", "labels");

    let mut debit = debit_request(&account.id, "one", "maps-retry");
    debit.metadata = entries(33);
    let status = rejected(ledger.debit(debit.clone()).await);
    assert_invalid(&status, "TOO_MANY_ENTRIES", "metadata");
    debit.metadata = BTreeMap::new();
    debit.quantities = entries(33)
        .into_keys()
        .map(|k| (k, "1".to_string()))
        .collect();
    let status = rejected(ledger.debit(debit.clone()).await);
    assert_invalid(&status, "TOO_MANY_ENTRIES", "quantities");

    assert_eq!(app.all_accounts(&app.admin).await, before_accounts);
    assert_eq!(wallet_state(&app, &account.id, &wallet.id).await, before);

    // At the limits, under the same request_ids.
    create.account.as_mut().unwrap().labels = entries(64);
    let created = accounts
        .create_account(create)
        .await
        .expect("64 labels")
        .into_inner();
    assert_eq!(created.labels.len(), 64);
    update.account.as_mut().unwrap().labels = entries(64);
    let updated = accounts
        .update_account(update)
        .await
        .expect("64 labels")
        .into_inner();
    assert_eq!(updated.labels.len(), 64);
    debit.metadata = entries(32);
    debit.quantities = BTreeMap::new();
    let response = ledger.debit(debit).await.expect("32 entries").into_inner();
    assert_eq!(response.transaction.unwrap().metadata.len(), 32);
    app.stop().await;
}

// ---- 2. the error table ----------------------------------------------------------------------

#[tokio::test]
async fn not_found_errors_name_what_is_missing() {
    let app = spawn_app().await;
    let (account, _) = app.funded("found", "10").await;
    app.publish_standard_card().await;
    let missing = "acct_0123456789abcdef0123456789abcdef";

    let status = rejected(
        app.accounts(&app.admin)
            .get_account(proto::GetAccountRequest { id: missing.into() })
            .await,
    );
    let metadata = assert_error(&status, Code::NotFound, "NOT_FOUND");
    assert_eq!(metadata["kind"], "account");
    assert_eq!(metadata["id"], missing);

    let status = rejected(
        app.ledger(&service())
            .debit(debit_request(missing, "one", "nf-1"))
            .await,
    );
    let metadata = assert_error(&status, Code::NotFound, "NOT_FOUND");
    assert_eq!(metadata["id"], missing);

    // The account exists, but has no wallet in that unit.
    let mut debit = debit_request(&account.id, "one", "nf-2");
    debit.unit = "message_units".into();
    let status = rejected(app.ledger(&service()).debit(debit).await);
    let metadata = assert_error(&status, Code::NotFound, "NOT_FOUND");
    assert_eq!(metadata["kind"], "wallet");
    assert_eq!(metadata["account_id"], account.id);
    assert_eq!(metadata["unit"], "message_units");
    let status = rejected(
        app.ledger(&service())
            .get_balance(proto::GetBalanceRequest {
                account_id: account.id.clone(),
                unit: "message_units".into(),
                ..Default::default()
            })
            .await,
    );
    let metadata = assert_error(&status, Code::NotFound, "NOT_FOUND");
    assert_eq!(metadata["unit"], "message_units");

    let status = rejected(
        app.accounts(&app.admin)
            .get_wallet(proto::GetWalletRequest {
                id: "wal_0123456789abcdef".into(),
            })
            .await,
    );
    let metadata = assert_error(&status, Code::NotFound, "NOT_FOUND");
    assert_eq!(metadata["kind"], "wallet");

    let status = rejected(
        app.rates(&service())
            .get_rate_card(proto::GetRateCardRequest {
                version: 99,
                time: None,
            })
            .await,
    );
    let metadata = assert_error(&status, Code::NotFound, "NOT_FOUND");
    assert_eq!(metadata["id"], "99");
    let status = rejected(
        app.rates(&app.admin)
            .publish_rate_card(proto::PublishRateCardRequest {
                version: 99,
                etag: "whatever".into(),
                effective_time: None,
                request_id: String::new(),
            })
            .await,
    );
    assert_error(&status, Code::NotFound, "NOT_FOUND");
    // Writes that name a missing parent.
    let status = rejected(
        app.accounts(&app.admin)
            .update_account(set_state(missing, AccountState::Suspended, "nf-3"))
            .await,
    );
    let metadata = assert_error(&status, Code::NotFound, "NOT_FOUND");
    assert_eq!(metadata["id"], missing);
    let status = rejected(
        app.accounts(&app.admin)
            .create_wallet(proto::CreateWalletRequest {
                wallet: Some(proto::Wallet {
                    account_id: missing.into(),
                    ..Default::default()
                }),
                request_id: "nf-4".into(),
            })
            .await,
    );
    assert_error(&status, Code::NotFound, "NOT_FOUND");
    let mut child = account_request("orphan", "nf-5");
    child.account.as_mut().unwrap().parent_id = missing.into();
    let status = rejected(app.accounts(&app.admin).create_account(child).await);
    assert_error(&status, Code::NotFound, "NOT_FOUND");
    let status = rejected(
        app.grants(&app.admin)
            .create_grant(grant_request("wal_0123456789abcdef", "1", "nf-6"))
            .await,
    );
    let metadata = assert_error(&status, Code::NotFound, "NOT_FOUND");
    assert_eq!(metadata["id"], "wal_0123456789abcdef");
    assert_eq!(app.all_accounts(&app.admin).await.len(), 1);
    // No card was in force an hour ago.
    let status = rejected(
        app.rates(&service())
            .get_rate_card(proto::GetRateCardRequest {
                version: 0,
                time: Some(from_now(-3600)),
            })
            .await,
    );
    assert_error(&status, Code::NotFound, "NO_RATE_CARD_IN_FORCE");
    app.stop().await;
}

#[tokio::test]
async fn already_exists_errors() {
    let app = spawn_app().await;
    let mut accounts = app.accounts(&app.admin);
    let first = accounts
        .create_account(account_request("taken", "create-1"))
        .await
        .expect("first account")
        .into_inner();

    // Duplicate external_id; the rejected request_id stays free.
    let status = rejected(
        accounts
            .create_account(account_request("taken", "create-2"))
            .await,
    );
    let metadata = assert_error(&status, Code::AlreadyExists, "EXTERNAL_ID_TAKEN");
    assert_eq!(metadata["external_id"], "taken");
    assert_eq!(app.all_accounts(&app.admin).await.len(), 1);
    let second = accounts
        .create_account(account_request("other", "create-2"))
        .await
        .expect("create-2 is unused")
        .into_inner();
    assert_ne!(second.id, first.id);

    // Same request_id, different parameters.
    let status = rejected(
        accounts
            .create_account(account_request("third", "create-1"))
            .await,
    );
    let metadata = assert_error(&status, Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(metadata["request_id"], "create-1");
    // Same request_id, same parameters: the original account.
    let again = accounts
        .create_account(account_request("taken", "create-1"))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(again, first);
    assert_eq!(app.all_accounts(&app.admin).await.len(), 2);

    // A second wallet in the same unit.
    let wallet = app.create_wallet(&first.id, "credits", "").await;
    let status = rejected(
        accounts
            .create_wallet(proto::CreateWalletRequest {
                wallet: Some(proto::Wallet {
                    account_id: first.id.clone(),
                    unit: String::new(), // defaults to credits
                    ..Default::default()
                }),
                request_id: "wallet-2".into(),
            })
            .await,
    );
    let metadata = assert_error(&status, Code::AlreadyExists, "WALLET_EXISTS");
    assert_eq!(metadata["account_id"], first.id);
    assert_eq!(metadata["unit"], "credits");
    let listed = wallets(&app, &first.id).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, wallet.id);
    let other_unit = accounts
        .create_wallet(proto::CreateWalletRequest {
            wallet: Some(proto::Wallet {
                account_id: first.id.clone(),
                unit: "message_units".into(),
                ..Default::default()
            }),
            request_id: "wallet-2".into(),
        })
        .await
        .expect("wallet-2 is unused")
        .into_inner();
    assert_eq!(other_unit.unit, "message_units");
    app.stop().await;
}

#[tokio::test]
async fn insufficient_credits_reports_required_and_available() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("short", "3.5").await;
    app.publish_standard_card().await;
    let before = wallet_state(&app, &account.id, &wallet.id).await;
    let mut ledger = app.ledger(&service());
    let chat = proto::DebitRequest {
        quantities: quantities(&[("output_tokens", "15000")]),
        ..debit_request(&account.id, "chat", "short-1")
    };
    // 1 + 15000/1000 × 0.2 = 4 > 3.5
    let status = rejected(ledger.debit(chat.clone()).await);
    assert_insufficient(&status, "4", "3.5");
    assert_eq!(wallet_state(&app, &account.id, &wallet.id).await, before);

    app.grant(&wallet.id, "0.5").await;
    let response = ledger
        .debit(chat)
        .await
        .expect("now affordable")
        .into_inner();
    assert!(!response.replayed);
    let txn = response.transaction.unwrap();
    assert_eq!(txn.units, "4");
    assert_eq!(txn.balance_after, "0");
    let status = rejected(
        ledger
            .debit(debit_n(&account.id, "0.000001", "short-2"))
            .await,
    );
    // `n` is not on the standard card.
    assert_error(&status, Code::FailedPrecondition, "UNPRICED_REQUEST_TYPE");
    let status = rejected(
        ledger
            .debit(debit_request(&account.id, "one", "short-2"))
            .await,
    );
    assert_insufficient(&status, "1", "0");
    app.stop().await;
}

#[tokio::test]
async fn only_active_accounts_are_debited_and_closed_is_final() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("states", "10").await;
    app.publish_standard_card().await;
    let mut accounts = app.accounts(&app.admin);
    let mut ledger = app.ledger(&service());

    let suspended = accounts
        .update_account(set_state(&account.id, AccountState::Suspended, "suspend"))
        .await
        .expect("suspend")
        .into_inner();
    assert_eq!(suspended.state, AccountState::Suspended as i32);
    let before = wallet_state(&app, &account.id, &wallet.id).await;
    let status = rejected(
        ledger
            .debit(debit_request(&account.id, "one", "while-suspended"))
            .await,
    );
    let metadata = assert_error(&status, Code::FailedPrecondition, "ACCOUNT_NOT_ACTIVE");
    assert_eq!(metadata["account_id"], account.id);
    assert_eq!(metadata["state"], "SUSPENDED");
    assert_eq!(wallet_state(&app, &account.id, &wallet.id).await, before);

    let active = accounts
        .update_account(set_state(&account.id, AccountState::Active, "reactivate"))
        .await
        .expect("reactivate")
        .into_inner();
    assert_eq!(active.state, AccountState::Active as i32);
    let response = ledger
        .debit(debit_request(&account.id, "one", "while-suspended"))
        .await
        .expect("debit after reactivation")
        .into_inner();
    assert!(!response.replayed);
    assert_eq!(app.balance(&account.id).await.posted, "9");

    accounts
        .update_account(set_state(&account.id, AccountState::Closed, "close"))
        .await
        .expect("close");
    let status = rejected(
        ledger
            .debit(debit_request(&account.id, "one", "while-closed"))
            .await,
    );
    let metadata = assert_error(&status, Code::FailedPrecondition, "ACCOUNT_NOT_ACTIVE");
    assert_eq!(metadata["state"], "CLOSED");
    for state in [AccountState::Active, AccountState::Suspended] {
        let status = rejected(
            accounts
                .update_account(set_state(&account.id, state, "reopen"))
                .await,
        );
        let metadata = assert_error(&status, Code::FailedPrecondition, "ACCOUNT_CLOSED");
        assert_eq!(metadata["account_id"], account.id);
    }
    assert_eq!(
        get_account(&app, &account.id).await.state,
        AccountState::Closed as i32
    );
    assert_eq!(app.balance(&account.id).await.posted, "9");
    app.stop().await;
}

#[tokio::test]
async fn unpriced_request_types() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("unpriced", "10").await;
    let before = wallet_state(&app, &account.id, &wallet.id).await;
    let mut ledger = app.ledger(&service());
    let mut rates = app.rates(&service());
    let quote = |request_type: &str| proto::QuotePriceRequest {
        account_id: account.id.clone(),
        request_type: request_type.into(),
        ..Default::default()
    };

    // No card published at all; a draft does not price anything either.
    app.rates(&app.admin)
        .create_rate_card(draft_request(vec![rate("one", "1", &[], "")], "draft"))
        .await
        .expect("draft");
    let status = rejected(
        ledger
            .debit(debit_request(&account.id, "one", "unpriced-1"))
            .await,
    );
    let metadata = assert_error(&status, Code::FailedPrecondition, "UNPRICED_REQUEST_TYPE");
    assert_eq!(metadata["request_type"], "one");
    let status = rejected(rates.quote_price(quote("one")).await);
    assert_error(&status, Code::FailedPrecondition, "UNPRICED_REQUEST_TYPE");
    assert_eq!(wallet_state(&app, &account.id, &wallet.id).await, before);

    app.publish_standard_card().await;
    let status = rejected(
        ledger
            .debit(debit_request(&account.id, "video", "unpriced-1"))
            .await,
    );
    let metadata = assert_error(&status, Code::FailedPrecondition, "UNPRICED_REQUEST_TYPE");
    assert_eq!(metadata["request_type"], "video");
    let status = rejected(rates.quote_price(quote("video")).await);
    let metadata = assert_error(&status, Code::FailedPrecondition, "UNPRICED_REQUEST_TYPE");
    assert_eq!(metadata["request_type"], "video");
    assert_eq!(wallet_state(&app, &account.id, &wallet.id).await, before);

    let response = ledger
        .debit(debit_request(&account.id, "one", "unpriced-1"))
        .await
        .expect("priced now")
        .into_inner();
    assert!(!response.replayed);
    app.stop().await;
}

#[tokio::test]
async fn over_caller_cap() {
    let app = spawn_app().await;
    let (account, wallet) = app.funded("capped", "10").await;
    app.publish_standard_card().await;
    let before = wallet_state(&app, &account.id, &wallet.id).await;
    let mut ledger = app.ledger(&service());
    let image = |max: &str| proto::DebitRequest {
        max_units: max.into(),
        ..debit_request(&account.id, "image", "cap-1")
    };
    for max in ["3.999999", "0"] {
        let status = rejected(ledger.debit(image(max)).await);
        let metadata = assert_error(&status, Code::FailedPrecondition, "OVER_CALLER_CAP");
        assert_eq!(metadata["required"], "4");
        assert_eq!(metadata["max_units"], max);
    }
    assert_eq!(wallet_state(&app, &account.id, &wallet.id).await, before);
    // A cap equal to the price is fine.
    let txn = ledger
        .debit(image("4"))
        .await
        .expect("at the cap")
        .into_inner()
        .transaction
        .unwrap();
    assert_eq!(txn.units, "4");
    app.stop().await;
}

#[tokio::test]
async fn publishing_errors() {
    let app = spawn_app().await;
    let mut rates = app.rates(&app.admin);
    let draft = rates
        .create_rate_card(draft_request(vec![rate("one", "1", &[], "")], "p-draft"))
        .await
        .expect("draft")
        .into_inner();
    let publish = |etag: &str, effective_time: Option<Timestamp>| proto::PublishRateCardRequest {
        version: draft.version,
        etag: etag.into(),
        effective_time,
        request_id: "p-publish".into(),
    };

    let status = rejected(rates.publish_rate_card(publish("stale", None)).await);
    let metadata = assert_error(&status, Code::FailedPrecondition, "STALE_ETAG");
    assert_eq!(metadata["version"], draft.version.to_string());
    assert_eq!(metadata["etag"], draft.etag);
    let status = rejected(rates.publish_rate_card(publish("", None)).await);
    assert_invalid(&status, "MISSING_FIELD", "etag");
    let status = rejected(
        rates
            .publish_rate_card(proto::PublishRateCardRequest {
                version: 0,
                ..publish(&draft.etag, None)
            })
            .await,
    );
    assert_invalid(&status, "INVALID_FIELD", "version");
    let status = rejected(
        rates
            .publish_rate_card(publish(&draft.etag, Some(from_now(-3600))))
            .await,
    );
    assert_invalid(&status, "EFFECTIVE_TIME_IN_PAST", "effective_time");
    let unchanged = get_card(&app, &app.admin, draft.version).await;
    assert_eq!(unchanged.state, RateCardState::Draft as i32);
    assert_eq!(unchanged.etag, draft.etag);
    assert_eq!(unchanged.effective_time, None);

    // Every rejection above left the request_id free.
    let published = rates
        .publish_rate_card(publish(&draft.etag, None))
        .await
        .expect("publish")
        .into_inner();
    assert_eq!(published.state, RateCardState::Published as i32);
    assert_ne!(published.etag, draft.etag, "the etag changes on publish");

    // Publishing twice.
    for etag in [draft.etag.as_str(), published.etag.as_str()] {
        let status = rejected(
            rates
                .publish_rate_card(proto::PublishRateCardRequest {
                    request_id: String::new(),
                    ..publish(etag, None)
                })
                .await,
        );
        let metadata = assert_error(&status, Code::FailedPrecondition, "RATE_CARD_NOT_DRAFT");
        assert_eq!(metadata["version"], draft.version.to_string());
    }
    // The same request_id and parameters replay the publish.
    let replayed = rates
        .publish_rate_card(publish(&draft.etag, None))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replayed, published);
    app.stop().await;
}

#[tokio::test]
async fn invalid_rate_cards_are_rejected() {
    let app = spawn_app().await;
    let mut rates = app.rates(&app.admin);
    let create = |rates: Vec<proto::Rate>| draft_request(rates, "bad-card");

    let status = rejected(
        rates
            .create_rate_card(create(vec![
                rate("chat", "1", &[], ""),
                rate("chat", "2", &[], ""),
            ]))
            .await,
    );
    assert_invalid(&status, "INVALID_RATE_CARD", "rate_card.rates");
    let status = rejected(rates.create_rate_card(create(vec![])).await);
    assert_invalid(&status, "INVALID_RATE_CARD", "rate_card.rates");
    let status = rejected(
        rates
            .create_rate_card(create(vec![rate(
                "chat",
                "1",
                &[("tokens", "1000", "1"), ("tokens", "1", "1")],
                "",
            )]))
            .await,
    );
    assert_invalid(&status, "INVALID_RATE_CARD", "rate_card.rates");
    // A zero `per` would divide by zero: rejected as an invalid amount at its field.
    for per in ["0", "0.000000", "-0"] {
        let status = rejected(
            rates
                .create_rate_card(create(vec![rate("chat", "1", &[("tokens", per, "1")], "")]))
                .await,
        );
        assert_invalid(
            &status,
            "INVALID_AMOUNT",
            "rate_card.rates[0].dimensions[0].per",
        );
    }
    let status = rejected(
        rates
            .create_rate_card(create(vec![rate("", "1", &[], "")]))
            .await,
    );
    assert_invalid(&status, "MISSING_FIELD", "rate_card.rates[0].request_type");
    let status = rejected(
        rates
            .create_rate_card(create(vec![rate("chat", "1", &[("", "1", "1")], "")]))
            .await,
    );
    assert_invalid(
        &status,
        "MISSING_FIELD",
        "rate_card.rates[0].dimensions[0].name",
    );
    assert!(rate_cards(&app).await.is_empty());
    let draft = rates
        .create_rate_card(create(vec![rate("chat", "1", &[], "")]))
        .await
        .expect("valid card")
        .into_inner();
    assert_eq!(draft.version, 1);
    app.stop().await;
}

// ---- 3. pricing through the API ------------------------------------------------------------

/// A request type, its quantities, and the units it must cost.
type PriceCase = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[tokio::test]
async fn quote_and_debit_agree_and_round_up() {
    let app = spawn_app().await;
    let (account, _) = app.funded("pricing", "1000").await;
    let card = app
        .publish_card(vec![
            rate("chat", "1", &[("output_tokens", "1000", "0.2")], "50"),
            rate("tiny", "0", &[("output_tokens", "3000", "0.2")], ""),
            rate(
                "mixed",
                "0.5",
                &[("input_tokens", "1000", "0.01"), ("images", "", "4")],
                "",
            ),
        ])
        .await;
    let mut ledger = app.ledger(&service());
    let mut rates = app.rates(&service());
    let cases: [PriceCase; 8] = [
        ("chat", &[("output_tokens", "1500")], "1.3"),
        ("chat", &[], "1"),
        // A dimension with a zero quantity costs nothing.
        ("chat", &[("output_tokens", "0")], "1"),
        // 1 + 1,000,000/1000 × 0.2 = 201, capped at 50.
        ("chat", &[("output_tokens", "1000000")], "50"),
        // 1/3000 × 0.2 = 0.0000666… → 0.000067.
        ("tiny", &[("output_tokens", "1")], "0.000067"),
        ("tiny", &[("output_tokens", "3000")], "0.2"),
        ("tiny", &[("output_tokens", "0.5")], "0.000034"),
        // 0.5 + 1234/1000 × 0.01 + 2 × 4 = 8.51234.
        (
            "mixed",
            &[("input_tokens", "1234"), ("images", "2")],
            "8.51234",
        ),
    ];
    let mut expected_balance = rust_decimal::Decimal::from(1000);
    for (i, (request_type, pairs, units)) in cases.into_iter().enumerate() {
        let quote = rates
            .quote_price(proto::QuotePriceRequest {
                account_id: account.id.clone(),
                request_type: request_type.into(),
                quantities: quantities(pairs),
                ..Default::default()
            })
            .await
            .expect("quote")
            .into_inner();
        assert_eq!(quote.units, units, "quote of {request_type} {pairs:?}");
        assert_eq!(quote.rate_card_version, card.version);
        let txn = ledger
            .debit(proto::DebitRequest {
                quantities: quantities(pairs),
                ..debit_request(&account.id, request_type, &format!("price-{i}"))
            })
            .await
            .expect("debit")
            .into_inner()
            .transaction
            .unwrap();
        assert_eq!(txn.units, quote.units, "debit of {request_type} {pairs:?}");
        assert_eq!(txn.rate_card_version, quote.rate_card_version);
        expected_balance -= units.parse::<rust_decimal::Decimal>().unwrap();
        assert_eq!(
            txn.balance_after.parse::<rust_decimal::Decimal>().unwrap(),
            expected_balance
        );
    }
    assert_eq!(
        app.balance(&account.id)
            .await
            .posted
            .parse::<rust_decimal::Decimal>()
            .unwrap(),
        expected_balance
    );
    app.stop().await;
}

/// Spec "Pricing a request": rounded up, *then* capped at `max_units`. However large the
/// (grammatical) quantity, a capped rate costs at most its cap.
#[tokio::test]
async fn a_capped_rate_costs_at_most_its_cap_for_any_quantity() {
    let app = spawn_app().await;
    let (account, _) = app.funded("huge", "100").await;
    app.publish_standard_card().await;
    let huge = quantities(&[("output_tokens", "999999999999999999.999999")]);
    let quote = app
        .rates(&service())
        .quote_price(proto::QuotePriceRequest {
            account_id: account.id.clone(),
            request_type: "chat".into(),
            quantities: huge.clone(),
            ..Default::default()
        })
        .await
        .expect("quote of a capped rate")
        .into_inner();
    assert_eq!(quote.units, "50");
    let txn = app
        .ledger(&service())
        .debit(proto::DebitRequest {
            quantities: huge,
            ..debit_request(&account.id, "chat", "huge")
        })
        .await
        .expect("debit of a capped rate")
        .into_inner()
        .transaction
        .unwrap();
    assert_eq!(txn.units, "50");
    app.stop().await;
}

#[tokio::test]
async fn overdraft_is_drawn_to_the_limit_and_repaid_first() {
    let app = spawn_app().await;
    let account = app.create_account("overdraft", "").await;
    let wallet = app.create_wallet(&account.id, "credits", "5").await;
    let grant = app.grant(&wallet.id, "3").await;
    app.publish_card(vec![per_n()]).await;
    let mut ledger = app.ledger(&service());
    let balance = app.balance(&account.id).await;
    assert_eq!(
        (balance.posted.as_str(), balance.available.as_str()),
        ("3", "8")
    );
    assert_eq!(balance.overdraft_limit, "5");

    let before = wallet_state(&app, &account.id, &wallet.id).await;
    let status = rejected(ledger.debit(debit_n(&account.id, "9", "od-1")).await);
    assert_insufficient(&status, "9", "8");
    assert_eq!(wallet_state(&app, &account.id, &wallet.id).await, before);

    let txn = ledger
        .debit(debit_n(&account.id, "8", "od-1"))
        .await
        .expect("8 fits grant + overdraft")
        .into_inner()
        .transaction
        .unwrap();
    assert_eq!(txn.units, "8");
    assert_eq!(txn.balance_after, "-5");
    let burns: Vec<(&str, &str)> = txn
        .burns
        .iter()
        .map(|b| (b.grant_id.as_str(), b.units.as_str()))
        .collect();
    assert_eq!(burns, [(grant.id.as_str(), "3"), ("", "5")]);
    let balance = app.balance(&account.id).await;
    assert_eq!(balance.posted, "-5");
    assert_eq!(balance.available, "0");
    assert_eq!(balance.reserved, "0");
    let status = rejected(ledger.debit(debit_n(&account.id, "0.000001", "od-2")).await);
    assert_insufficient(&status, "0.000001", "0");

    // The next grant repays the debt before anything else.
    let repaying = app.grant(&wallet.id, "12").await;
    assert_eq!(repaying.amount, "12");
    assert_eq!(repaying.remaining, "7");
    let balance = app.balance(&account.id).await;
    assert_eq!(balance.posted, "7");
    assert_eq!(balance.available, "12");
    let entry = &app.all_transactions(&account.id).await[0];
    assert_eq!(entry.kind, TransactionKind::Grant as i32);
    assert_eq!(entry.units, "12");
    assert_eq!(entry.balance_after, "7");
    let remaining: Vec<(String, String)> = app
        .all_grants(&wallet.id)
        .await
        .into_iter()
        .map(|g| (g.id, g.remaining))
        .collect();
    assert_eq!(
        remaining,
        [(grant.id.clone(), "0".into()), (repaying.id, "7".into())]
    );
    let txn = ledger
        .debit(debit_n(&account.id, "12", "od-2"))
        .await
        .expect("7 granted + 5 overdraft")
        .into_inner()
        .transaction
        .unwrap();
    assert_eq!(txn.balance_after, "-5");
    app.stop().await;
}

/// Amounts are exact (spec "Numbers"): a balance is never silently clamped. A grant that would
/// take the wallet beyond what an amount can hold is rejected and writes nothing; if the server
/// accepts it instead, the balance must still be the exact sum.
#[tokio::test]
async fn balances_never_saturate() {
    let app = spawn_app().await;
    let largest = "9223372036854"; // whole units that fit i64 micro-units
    let (account, wallet) = app.funded("saturate", largest).await;
    let before = wallet_state(&app, &account.id, &wallet.id).await;
    let result = app
        .grants(&app.admin)
        .create_grant(grant_request(&wallet.id, largest, "saturate-2"))
        .await;
    match result {
        Ok(_) => {
            let balance = app.balance(&account.id).await;
            assert_eq!(balance.posted, "18446744073708", "posted must be exact");
            assert_eq!(
                balance.available, "18446744073708",
                "available must be exact"
            );
            let entry = &app.all_transactions(&account.id).await[0];
            assert_eq!(entry.balance_after, "18446744073708");
        }
        Err(status) => {
            assert!(
                matches!(
                    status.code(),
                    Code::InvalidArgument | Code::FailedPrecondition
                ),
                "{status:?}"
            );
            assert_eq!(wallet_state(&app, &account.id, &wallet.id).await, before);
        }
    }

    // The same with the overdraft limit on top of the grants.
    let wallet = app.create_wallet(&account.id, "tokens", largest).await;
    let result = app
        .grants(&app.admin)
        .create_grant(grant_request(&wallet.id, largest, "saturate-3"))
        .await;
    let balance = app
        .ledger(&app.admin)
        .get_balance(proto::GetBalanceRequest {
            account_id: account.id.clone(),
            unit: "tokens".into(),
            ..Default::default()
        })
        .await
        .expect("balance")
        .into_inner();
    match result {
        Ok(_) => assert_eq!(
            balance.available, "18446744073708",
            "available must be exact"
        ),
        Err(status) => {
            assert!(
                matches!(
                    status.code(),
                    Code::InvalidArgument | Code::FailedPrecondition
                ),
                "{status:?}"
            );
            assert_eq!(balance.posted, "0");
            assert_eq!(balance.available, largest);
        }
    }
    app.stop().await;
}

// ---- 4. rate card versions -----------------------------------------------------------------

#[tokio::test]
async fn a_new_version_reprices_and_supersedes_the_old_one() {
    let app = spawn_app().await;
    let (account, _) = app.funded("versions", "100").await;
    let v1 = app.publish_card(vec![rate("image", "4", &[], "")]).await;
    let mut ledger = app.ledger(&service());
    let txn = ledger
        .debit(debit_request(&account.id, "image", "v-1"))
        .await
        .expect("debit at v1")
        .into_inner()
        .transaction
        .unwrap();
    assert_eq!(
        (txn.units.as_str(), txn.rate_card_version),
        ("4", v1.version)
    );

    let v2 = app.publish_card(vec![rate("image", "6", &[], "")]).await;
    assert!(v2.version > v1.version);
    let txn = ledger
        .debit(debit_request(&account.id, "image", "v-2"))
        .await
        .expect("debit at v2")
        .into_inner()
        .transaction
        .unwrap();
    assert_eq!(
        (txn.units.as_str(), txn.rate_card_version),
        ("6", v2.version)
    );
    let quote = app
        .rates(&service())
        .quote_price(proto::QuotePriceRequest {
            account_id: account.id.clone(),
            request_type: "image".into(),
            ..Default::default()
        })
        .await
        .expect("quote")
        .into_inner();
    assert_eq!(
        (quote.units.as_str(), quote.rate_card_version),
        ("6", v2.version)
    );

    let current = get_card(&app, &service(), 0).await;
    assert_eq!(current.version, v2.version);
    assert_eq!(current.state, RateCardState::Published as i32);
    assert_eq!(
        get_card(&app, &service(), v1.version).await.state,
        RateCardState::Superseded as i32
    );
    // The old entry keeps the version that priced it.
    let versions: Vec<i64> = app
        .all_transactions(&account.id)
        .await
        .iter()
        .filter(|t| t.kind == TransactionKind::Debit as i32)
        .map(|t| t.rate_card_version)
        .collect();
    assert_eq!(versions, [v2.version, v1.version]);
    // A replay answers with the original price and version.
    let replay = ledger
        .debit(debit_request(&account.id, "image", "v-1"))
        .await
        .expect("replay")
        .into_inner();
    assert!(replay.replayed);
    let txn = replay.transaction.unwrap();
    assert_eq!(
        (txn.units.as_str(), txn.rate_card_version),
        ("4", v1.version)
    );
    assert_eq!(app.balance(&account.id).await.posted, "90");
    app.stop().await;
}

#[tokio::test]
async fn a_card_effective_in_the_future_does_not_price_yet() {
    let app = spawn_app().await;
    let (account, _) = app.funded("future", "100").await;
    let current = app.publish_card(vec![rate("image", "4", &[], "")]).await;
    let mut rates = app.rates(&app.admin);
    let draft = rates
        .create_rate_card(draft_request(vec![rate("image", "8", &[], "")], "future"))
        .await
        .expect("draft")
        .into_inner();
    let in_an_hour = from_now(3600);
    let scheduled = rates
        .publish_rate_card(proto::PublishRateCardRequest {
            version: draft.version,
            etag: draft.etag,
            effective_time: Some(in_an_hour),
            request_id: "future-publish".into(),
        })
        .await
        .expect("publish for later")
        .into_inner();
    assert_eq!(scheduled.state, RateCardState::Published as i32);
    assert_eq!(scheduled.effective_time, Some(in_an_hour));

    let txn = app
        .ledger(&service())
        .debit(debit_request(&account.id, "image", "before-it"))
        .await
        .expect("debit")
        .into_inner()
        .transaction
        .unwrap();
    assert_eq!(
        (txn.units.as_str(), txn.rate_card_version),
        ("4", current.version)
    );
    let quote = app
        .rates(&service())
        .quote_price(proto::QuotePriceRequest {
            account_id: account.id.clone(),
            request_type: "image".into(),
            ..Default::default()
        })
        .await
        .expect("quote")
        .into_inner();
    assert_eq!(
        (quote.units.as_str(), quote.rate_card_version),
        ("4", current.version)
    );
    assert_eq!(get_card(&app, &service(), 0).await.version, current.version);
    assert_eq!(
        get_card(&app, &service(), current.version).await.state,
        RateCardState::Published as i32,
        "not superseded before the new card is in force"
    );
    let later = app
        .rates(&service())
        .get_rate_card(proto::GetRateCardRequest {
            version: 0,
            time: Some(from_now(7200)),
        })
        .await
        .expect("card in force later")
        .into_inner();
    assert_eq!(later.version, scheduled.version);
    app.stop().await;
}

#[tokio::test]
async fn routes_and_provider_costs_are_for_operators_only() {
    let app = spawn_app().await;
    let (account, _) = app.funded("routes", "100").await;
    let card = app.publish_standard_card().await;
    let operator = token(&["operator"], &["*"]);
    let scoped_service = token(&["service"], &[&account.id]);
    let procurement = token(&["procurement"], &[&account.id]);

    for version in [0, card.version] {
        let seen = get_card(&app, &operator, version).await;
        assert!(!seen.rates.is_empty());
        for r in &seen.rates {
            assert_eq!(r.route, "provider/model-a");
            assert_eq!(r.provider_cost, "0.001");
        }
        for caller in [&scoped_service, &procurement] {
            let seen = get_card(&app, caller, version).await;
            assert_eq!(seen.rates.len(), card.rates.len());
            for r in &seen.rates {
                assert_eq!(r.route, "", "route hidden from non-operators");
                assert_eq!(
                    r.provider_cost, "",
                    "provider_cost hidden from non-operators"
                );
                assert!(!r.flat_units.is_empty(), "prices stay visible");
            }
        }
    }
    let listed = app
        .rates(&scoped_service)
        .list_rate_cards(proto::ListRateCardsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .rate_cards;
    assert!(
        listed
            .iter()
            .flat_map(|c| &c.rates)
            .all(|r| r.route.is_empty() && r.provider_cost.is_empty())
    );
    let listed = app
        .rates(&operator)
        .list_rate_cards(proto::ListRateCardsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .rate_cards;
    assert!(
        listed
            .iter()
            .flat_map(|c| &c.rates)
            .all(|r| r.route == "provider/model-a" && r.provider_cost == "0.001")
    );

    // Ledger entries: the provider cost is recorded, and shown only to operators.
    let txn = app
        .ledger(&scoped_service)
        .debit(debit_request(&account.id, "image", "routes"))
        .await
        .expect("debit")
        .into_inner()
        .transaction
        .unwrap();
    assert_eq!(txn.provider_cost, "");
    let seen = app
        .ledger(&procurement)
        .list_transactions(proto::ListTransactionsRequest {
            account_id: account.id.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .transactions;
    assert_eq!(seen[0].provider_cost, "");
    let by_admin = app.all_transactions(&account.id).await;
    assert_eq!(by_admin[0].provider_cost, "0.001");
    app.stop().await;
}

// ---- 5. update masks -----------------------------------------------------------------------

#[tokio::test]
async fn update_mask_limits_what_changes() {
    let app = spawn_app().await;
    let mut accounts = app.accounts(&app.admin);
    let mut create = account_request("masked", "masked");
    create.account.as_mut().unwrap().labels = quantities(&[("team", "search")]);
    let original = accounts
        .create_account(create)
        .await
        .expect("create")
        .into_inner();
    let everything = proto::Account {
        id: original.id.clone(),
        external_id: "renamed-external".into(),
        display_name: "New Name".into(),
        parent_id: "acct_elsewhere".into(),
        state: AccountState::Suspended as i32,
        labels: quantities(&[("team", "ads")]),
        ..Default::default()
    };

    let updated = accounts
        .update_account(update_request(
            everything.clone(),
            &["display_name"],
            "mask-1",
        ))
        .await
        .expect("update display_name")
        .into_inner();
    assert_eq!(updated.display_name, "New Name");
    assert_eq!(updated.external_id, original.external_id);
    assert_eq!(updated.parent_id, original.parent_id);
    assert_eq!(updated.state, AccountState::Active as i32);
    assert_eq!(updated.labels, original.labels);
    assert_eq!(updated.create_time, original.create_time);
    let read = get_account(&app, &original.id).await;
    assert_eq!(read, updated);

    // Paths outside display_name / labels / state, one at a time and mixed with valid ones.
    for paths in [
        &["external_id"][..],
        &["parent_id"],
        &["id"],
        &["bogus"],
        &["display_name", "bogus"],
        &["bogus", "display_name"],
    ] {
        let mut request = update_request(everything.clone(), paths, "mask-2");
        request.account.as_mut().unwrap().display_name = "Other Name".into();
        let status = rejected(accounts.update_account(request).await);
        assert_invalid(&status, "INVALID_FIELD", "update_mask");
    }
    let mut control = update_request(proto::Account::default(), &["display_name"], "mask-2");
    control.account = Some(proto::Account {
        id: original.id.clone(),
        display_name: "line\nbreak".into(),
        ..Default::default()
    });
    let status = rejected(accounts.update_account(control).await);
    assert_invalid(&status, "INVALID_FIELD", "account.display_name");
    assert_eq!(get_account(&app, &original.id).await, read);

    // The rejected request_id is free; labels replace the whole map.
    let labelled = accounts
        .update_account(update_request(everything, &["labels"], "mask-2"))
        .await
        .expect("update labels")
        .into_inner();
    assert_eq!(labelled.labels, quantities(&[("team", "ads")]));
    assert_eq!(labelled.display_name, "New Name");
    assert_eq!(labelled.state, AccountState::Active as i32);
    app.stop().await;
}
