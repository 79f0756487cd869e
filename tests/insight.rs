//! `ReportService.GetMarginReport` and `GetPriceTransparency` (issue 12, points 3 and 4):
//! margins by request type and route across a remap, net of refunds; what one request cost
//! and the effective price per 1,000 tokens beside the reference list price; both reconcile
//! with statements and usage; who may read them, and that procurement never receives a route
//! or a provider cost (walked field by field on every report it can read).

mod common;

use allot::proto;
use common::*;
use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage, Value};
use tonic::Code;

const DAY: i64 = 86_400_000_000;

fn ts(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: 0,
    }
}

/// `chat`: 1 unit + 0.2 per 1,000 output tokens, routed to `route` at `cost` a request, with
/// a reference list price of USD 0.002 per 1,000 output tokens.
fn chat(route: &str, cost: &str) -> proto::Rate {
    let mut rate = rate("chat", "1", &[("output_tokens", "1000", "0.2")], "");
    rate.route = route.into();
    rate.provider_cost = cost.into();
    rate.list_prices = vec![proto::ListPrice {
        dimension: "output_tokens".into(),
        per: String::new(),
        price: "0.002".into(),
        currency: "USD".into(),
    }];
    rate
}

async fn chat_debit(app: &TestApp, account_id: &str) -> proto::Transaction {
    let mut request = debit_request(account_id, "chat", &uuid());
    request.quantities = quantities(&[("output_tokens", "5000")]);
    app.ledger(&app.admin)
        .debit(request)
        .await
        .expect("debit")
        .into_inner()
        .transaction
        .expect("entry")
}

/// Every field set anywhere in `message` named `route` or `provider_cost`.
fn operator_fields(message: &DynamicMessage, path: &str, found: &mut Vec<String>) {
    for (field, value) in message.fields() {
        let here = format!("{path}.{}", field.name());
        if matches!(field.name(), "route" | "provider_cost") {
            found.push(here.clone());
        }
        let mut visit = |value: &Value| {
            if let Value::Message(inner) = value {
                operator_fields(inner, &here, found);
            }
        };
        match value {
            Value::List(items) => items.iter().for_each(&mut visit),
            other => visit(other),
        }
    }
}

fn assert_no_operator_fields<M: prost::Message + prost::Name>(message: &M) {
    let pool = DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
    let descriptor = pool.get_message_by_name(&M::full_name()).unwrap();
    let mut dynamic = DynamicMessage::new(descriptor);
    dynamic.transcode_from(message).unwrap();
    let mut found = Vec::new();
    operator_fields(&dynamic, dynamic.descriptor().name(), &mut found);
    assert!(
        found.is_empty(),
        "operator fields reached procurement: {found:?}"
    );
}

#[tokio::test]
async fn margins_follow_the_route_and_transparency_the_list_price() {
    let app = spawn_app().await;
    app.publish_card(vec![chat("provider/a", "0.001")]).await;
    let now = app.clock.now_micros();
    let d0 = now.div_euclid(DAY) * DAY;
    let (account, wallet) = app.funded("margins", "").await;
    app.grants(&app.admin)
        .create_grant(grant_request(&wallet.id, "1000", "0.01"))
        .await
        .expect("grant");
    // Four requests of 2 units (1 + 5 × 0.2) on provider/a, then a remap of route and cost
    // only, and two more on provider/b.
    let mut first = Vec::new();
    for _ in 0..4 {
        first.push(chat_debit(&app, &account.id).await);
    }
    app.publish_card(vec![chat("provider/b", "0.0005")]).await;
    for _ in 0..2 {
        chat_debit(&app, &account.id).await;
    }
    // One unit of a provider/a request refunded: revenue falls, the provider still charged.
    refund(&app, &first[0].id, "1", &uuid())
        .await
        .expect("refund");
    let operator = token(&["operator"], &["*"]);
    let window = (Some(ts(d0)), Some(ts(d0 + DAY)));

    let margins = app
        .reports(&operator)
        .get_margin_report(proto::GetMarginReportRequest {
            start_time: window.0,
            end_time: window.1,
            ..Default::default()
        })
        .await
        .expect("margin report")
        .into_inner();
    let rows: Vec<_> = margins
        .rows
        .iter()
        .map(|r| {
            (
                r.route.as_str(),
                r.requests,
                r.units.as_str(),
                r.revenue.as_str(),
                r.currency.as_str(),
                r.provider_cost.as_str(),
                r.margin.as_str(),
                r.margin_percent.as_str(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "provider/a",
                4,
                "7",
                "0.07",
                "USD",
                "0.004",
                "0.066",
                "94.29"
            ),
            (
                "provider/b",
                2,
                "4",
                "0.04",
                "USD",
                "0.001",
                "0.039",
                "97.5"
            ),
        ]
    );
    // The account's own margins are the same rows; revenue equals the usage report's money.
    let own = app
        .reports(&operator)
        .get_margin_report(proto::GetMarginReportRequest {
            account_id: account.id.clone(),
            start_time: window.0,
            end_time: window.1,
            ..Default::default()
        })
        .await
        .expect("the account's margins")
        .into_inner();
    assert_eq!(own.rows, margins.rows);
    let usage = app
        .reports(&app.admin)
        .get_usage_report(proto::GetUsageReportRequest {
            account_id: account.id.clone(),
            start_time: window.0,
            end_time: window.1,
            ..Default::default()
        })
        .await
        .expect("usage")
        .into_inner();
    assert_eq!(usage.total_money[0].amount, "0.11");

    // Transparency: six requests, one of them 0.01 after its refund, five at 0.02.
    let procurement = token(&["procurement"], &[&account.id]);
    let report = app
        .reports(&procurement)
        .get_price_transparency(proto::GetPriceTransparencyRequest {
            account_id: account.id.clone(),
            start_time: window.0,
            end_time: window.1,
            ..Default::default()
        })
        .await
        .expect("transparency")
        .into_inner();
    assert_eq!(report.rows.len(), 1);
    let row = &report.rows[0];
    assert_eq!(
        (
            row.request_type.as_str(),
            row.requests,
            row.units.as_str(),
            row.currency.as_str()
        ),
        ("chat", 6, "11", "USD")
    );
    assert_eq!(
        (row.p50_money.as_str(), row.p95_money.as_str()),
        ("0.02", "0.02")
    );
    assert_eq!(row.mean_money, "0.018333333333");
    // Each request's money is half flat, half tokens: 0.055 for 30,000 tokens.
    let tokens = &row.dimensions[0];
    assert_eq!(
        (
            tokens.dimension.as_str(),
            tokens.quantity.as_str(),
            tokens.money.as_str(),
            tokens.effective_price_per_1000.as_str(),
            tokens.list_price_per_1000.as_str(),
            tokens.list_currency.as_str()
        ),
        (
            "output_tokens",
            "30000",
            "0.055",
            "0.001833",
            "0.002",
            "USD"
        )
    );
    assert_no_operator_fields(&report);

    // Statements agree: what the window's debits and refunds moved in money.
    let statement = app
        .reports(&app.admin)
        .get_statement(proto::GetStatementRequest {
            wallet_id: wallet.id.clone(),
            start_time: window.0,
            end_time: window.1,
            ..Default::default()
        })
        .await
        .expect("statement")
        .into_inner();
    let spent: f64 = statement
        .lines
        .iter()
        .filter(|l| {
            matches!(
                l.kind(),
                proto::TransactionKind::Debit | proto::TransactionKind::Refund
            )
        })
        .flat_map(|l| l.money.iter())
        .map(|m| m.amount.parse::<f64>().unwrap())
        .sum();
    assert!((spent.abs() - 0.11).abs() < 1e-9, "{spent}");

    // Every report procurement can read, field by field: no route, no provider cost.
    let budget = app
        .reports(&procurement)
        .get_budget(proto::GetBudgetRequest {
            account_id: account.id.clone(),
            include_sub_accounts: true,
            ..Default::default()
        })
        .await
        .expect("budget")
        .into_inner();
    assert_no_operator_fields(&budget);
    let usage = app
        .reports(&procurement)
        .get_usage_report(proto::GetUsageReportRequest {
            account_id: account.id.clone(),
            start_time: window.0,
            end_time: window.1,
            group_by_metadata_key: "user".into(),
            ..Default::default()
        })
        .await
        .expect("usage")
        .into_inner();
    assert_no_operator_fields(&usage);
    let statement = app
        .reports(&procurement)
        .get_statement(proto::GetStatementRequest {
            wallet_id: wallet.id.clone(),
            ..Default::default()
        })
        .await
        .expect("statement")
        .into_inner();
    assert_no_operator_fields(&statement);
    app.stop().await;
}

#[tokio::test]
async fn margins_are_for_operators_and_reports_check_their_windows() {
    let app = spawn_app().await;
    let (account, _) = app.funded("who", "10").await;
    let d0 = app.clock.now_micros().div_euclid(DAY) * DAY;
    let request = |account_id: &str| proto::GetMarginReportRequest {
        account_id: account_id.into(),
        start_time: Some(ts(d0)),
        end_time: Some(ts(d0 + DAY)),
        ..Default::default()
    };
    for role in ["procurement", "account_manager", "service"] {
        let denied = app
            .reports(&token(&[role], &[&account.id]))
            .get_margin_report(request(&account.id))
            .await
            .unwrap_err();
        assert_error(&denied, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    }
    // A scoped operator names an account in its scope.
    let scoped = token(&["operator"], &[&account.id]);
    let unnamed = app
        .reports(&scoped)
        .get_margin_report(request(""))
        .await
        .unwrap_err();
    assert_invalid(&unnamed, "MISSING_FIELD", "account_id");
    app.reports(&scoped)
        .get_margin_report(request(&account.id))
        .await
        .expect("a scoped operator's own account");
    let partial = app
        .reports(&app.admin)
        .get_margin_report(proto::GetMarginReportRequest {
            start_time: Some(ts(d0 + 1_000_000)),
            ..request("")
        })
        .await
        .unwrap_err();
    assert_invalid(&partial, "INVALID_FIELD", "start_time");

    let transparency = |start: i64, end: i64| proto::GetPriceTransparencyRequest {
        account_id: account.id.clone(),
        start_time: Some(ts(start)),
        end_time: Some(ts(end)),
        ..Default::default()
    };
    let long = app
        .reports(&app.admin)
        .get_price_transparency(transparency(d0, d0 + 94 * DAY))
        .await
        .unwrap_err();
    assert_invalid(&long, "REPORT_TOO_LARGE", "end_time");
    let service = app
        .reports(&token(&["service"], &[&account.id]))
        .get_price_transparency(transparency(d0, d0 + DAY))
        .await
        .unwrap_err();
    assert_error(&service, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    app.stop().await;
}

#[tokio::test]
async fn list_prices_are_validated_and_kept_on_the_card() {
    let app = spawn_app().await;
    let card = app.publish_card(vec![chat("r", "0.001")]).await;
    assert_eq!(card.rates[0].list_prices[0].price, "0.002");
    assert_eq!(card.rates[0].list_prices[0].per, "1000");
    let mut client = app.rates(&app.admin);
    for (price, field) in [
        (
            proto::ListPrice {
                dimension: "images".into(),
                price: "1".into(),
                currency: "USD".into(),
                ..Default::default()
            },
            "rate_card.rates[0].list_prices[0].dimension",
        ),
        (
            proto::ListPrice {
                dimension: "output_tokens".into(),
                price: "1".into(),
                currency: "usd".into(),
                ..Default::default()
            },
            "rate_card.rates[0].list_prices[0].currency",
        ),
        (
            proto::ListPrice {
                dimension: "output_tokens".into(),
                per: "0".into(),
                price: "1".into(),
                currency: "USD".into(),
            },
            "rate_card.rates[0].list_prices[0].per",
        ),
    ] {
        let mut rate = chat("r", "");
        rate.list_prices = vec![price];
        let refused = client
            .create_rate_card(card_request(vec![rate], "bad list price"))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert_invalid(&refused, "INVALID_FIELD", field);
    }
    let mut rate = chat("r", "");
    rate.list_prices[0].price = "1000000000001".into();
    let refused = client
        .create_rate_card(card_request(vec![rate], "huge list price"))
        .await
        .unwrap_err();
    assert_invalid(
        &refused,
        "AMOUNT_OUT_OF_RANGE",
        "rate_card.rates[0].list_prices[0].price",
    );
    app.stop().await;
}
