//! `RateCardService.SimulateRateCard` and `allot rates simulate` / the publish review
//! (issue 12, points 4 and 6): an unchanged card shows no change; a remap of route and
//! provider cost only shows no customer change and the margin change; a price change shows
//! the exact difference; an override in force wins over the card; a request type the card
//! drops is counted unpriced; who may simulate; bad requests.

mod common;

use allot::proto;
use common::*;
use tonic::Code;

const DAY: i64 = 86_400_000_000;

fn ts(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: 0,
    }
}

fn chat(tokens_per_1000: &str, route: &str, cost: &str) -> proto::Rate {
    let mut rate = rate(
        "chat",
        "1",
        &[("output_tokens", "1000", tokens_per_1000)],
        "",
    );
    rate.route = route.into();
    rate.provider_cost = cost.into();
    rate
}

fn image() -> proto::Rate {
    rate("image", "4", &[], "")
}

/// Each row as (request type, requests, actual units, simulated units, change %, actual
/// money, simulated money, actual cost, simulated cost, actual margin, simulated margin,
/// unpriced), all as text.
fn rows(response: &proto::SimulateRateCardResponse) -> Vec<Vec<String>> {
    let money = |m: &[proto::Money]| m.first().map(|m| m.amount.clone()).unwrap_or_default();
    response
        .rows
        .iter()
        .map(|r| {
            vec![
                r.request_type.clone(),
                r.requests.to_string(),
                r.actual_units.clone(),
                r.simulated_units.clone(),
                r.change_percent.clone(),
                money(&r.actual_money),
                money(&r.simulated_money),
                r.actual_provider_cost.clone(),
                r.simulated_provider_cost.clone(),
                r.actual_margin.clone(),
                r.simulated_margin.clone(),
                r.unpriced_requests.to_string(),
            ]
        })
        .collect()
}

fn row(values: [&str; 12]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

#[tokio::test]
async fn simulations_show_remaps_price_changes_and_overrides() {
    let app = spawn_app().await;
    app.publish_card(vec![chat("0.2", "provider/a", "0.001"), image()])
        .await;
    let (account, _) = app.funded("simulated", "1000").await;
    // Three chats of 2 units (1 + 5 × 0.2) and one image of 4, at 0.01 a unit.
    for _ in 0..3 {
        let mut debit = debit_request(&account.id, "chat", &uuid());
        debit.quantities = quantities(&[("output_tokens", "5000")]);
        app.ledger(&app.admin).debit(debit).await.expect("chat");
    }
    app.ledger(&app.admin)
        .debit(debit_request(&account.id, "image", &uuid()))
        .await
        .expect("image");
    let now = app.clock.now_micros();
    let simulate = |version: i64, rates: Option<Vec<proto::Rate>>| proto::SimulateRateCardRequest {
        version,
        rate_card: rates.map(|rates| proto::RateCard {
            rates,
            ..Default::default()
        }),
        start_time: Some(ts(now - DAY)),
        end_time: Some(ts(now + 1_000_000)),
        ..Default::default()
    };
    let operator = token(&["operator"], &["*"]);
    let mut client = app.rates(&operator);

    // The card in force, unchanged: no change anywhere.
    let same = client
        .simulate_rate_card(simulate(1, None))
        .await
        .expect("unchanged")
        .into_inner();
    assert_eq!(
        rows(&same),
        [
            row([
                "chat", "3", "6", "6", "0", "0.06", "0.06", "0.003", "0.003", "0.057", "0.057", "0"
            ]),
            row([
                "image", "1", "4", "4", "0", "0.04", "0.04", "0.001", "0.001", "0.039", "0.039",
                "0"
            ]),
        ]
    );
    assert!(same.rows.iter().all(|r| r.account_id == account.id));

    // A remap of route and provider cost only: the customer pays the same, the margin moves.
    let remap = client
        .simulate_rate_card(simulate(
            0,
            Some(vec![chat("0.2", "provider/b", "0.0005"), image()]),
        ))
        .await
        .expect("remap")
        .into_inner();
    assert_eq!(
        rows(&remap)[0],
        row([
            "chat", "3", "6", "6", "0", "0.06", "0.06", "0.003", "0.0015", "0.057", "0.0585", "0"
        ])
    );

    // A price change: 0.3 per 1,000 tokens makes each chat 2.5 units, +25%; the image type
    // dropped from the card is unpriced (kept at its units).
    let dearer = client
        .simulate_rate_card(simulate(0, Some(vec![chat("0.3", "provider/a", "0.001")])))
        .await
        .expect("price change")
        .into_inner();
    assert_eq!(
        rows(&dearer),
        [
            row([
                "chat", "3", "6", "7.5", "25", "0.06", "0.075", "0.003", "0.003", "0.057", "0.072",
                "0"
            ]),
            row([
                "image", "1", "4", "4", "0", "0.04", "0.04", "0.001", "0", "0.039", "0.04", "1"
            ]),
        ]
    );

    // An override in force wins over the draft: 0.5 + 5 × 0.1 = 1 unit a chat, −50%.
    app.rates(&app.admin)
        .set_account_override(proto::SetAccountOverrideRequest {
            account_override: Some(proto::AccountOverride {
                account_id: account.id.clone(),
                request_type: "chat".into(),
                rate: Some(proto::Rate {
                    flat_units: "0.5".into(),
                    dimensions: vec![proto::Dimension {
                        name: "output_tokens".into(),
                        per: "1000".into(),
                        units: "0.1".into(),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            request_id: uuid(),
        })
        .await
        .expect("override");
    let contract = client
        .simulate_rate_card(simulate(
            0,
            Some(vec![chat("0.3", "provider/a", "0.001"), image()]),
        ))
        .await
        .expect("with the override")
        .into_inner();
    assert_eq!(
        (
            contract.rows[0].simulated_units.as_str(),
            contract.rows[0].change_percent.as_str()
        ),
        ("3", "-50")
    );
    app.stop().await;
}

#[tokio::test]
async fn simulations_are_for_operators_and_checked() {
    let app = spawn_app().await;
    app.publish_card(vec![image()]).await;
    let (account, _) = app.funded("simulate-checks", "10").await;
    let now = app.clock.now_micros();
    let request = proto::SimulateRateCardRequest {
        version: 1,
        start_time: Some(ts(now - DAY)),
        end_time: Some(ts(now)),
        ..Default::default()
    };
    for role in ["procurement", "account_manager", "service"] {
        let denied = app
            .rates(&token(&[role], &[&account.id]))
            .simulate_rate_card(request.clone())
            .await
            .unwrap_err();
        assert_error(&denied, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    }
    let mut client = app.rates(&app.admin);
    let both = client
        .simulate_rate_card(proto::SimulateRateCardRequest {
            rate_card: Some(proto::RateCard::default()),
            ..request.clone()
        })
        .await
        .unwrap_err();
    assert_invalid(&both, "INVALID_FIELD", "version");
    let long = client
        .simulate_rate_card(proto::SimulateRateCardRequest {
            start_time: Some(ts(now - 94 * DAY)),
            ..request.clone()
        })
        .await
        .unwrap_err();
    assert_invalid(&long, "REPORT_TOO_LARGE", "end_time");
    let unknown = client
        .simulate_rate_card(proto::SimulateRateCardRequest {
            version: 99,
            ..request.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let scoped = app
        .rates(&token(&["operator"], &[&account.id]))
        .simulate_rate_card(request.clone())
        .await
        .unwrap_err();
    assert_invalid(&scoped, "MISSING_FIELD", "account_id");
    app.rates(&token(&["operator"], &[&account.id]))
        .simulate_rate_card(proto::SimulateRateCardRequest {
            account_id: account.id.clone(),
            ..request
        })
        .await
        .expect("a scoped operator simulates its account");
    app.stop().await;
}

#[tokio::test]
async fn the_cli_simulates_and_the_publish_review_shows_the_impact() {
    let app = spawn_app().await;
    app.publish_card(vec![image()]).await;
    let (account, _) = app.funded("cli-simulate", "100").await;
    for _ in 0..2 {
        app.ledger(&app.admin)
            .debit(debit_request(&account.id, "image", &uuid()))
            .await
            .expect("image");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("dearer.toml");
    std::fs::write(
        &file,
        "[[rate]]\nrequest_type = \"image\"\nflat_units = \"5\"\n",
    )
    .expect("write the card");
    let run = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_allot"));
        command.args(args).args([
            "--server",
            &format!("http://{}", app.addr),
            "--token",
            &app.admin,
        ]);
        command.output()
    };
    let simulated = run(&[
        "rates",
        "simulate",
        file.to_str().unwrap(),
        "--window",
        "1d",
    ])
    .await
    .expect("run");
    assert!(simulated.status.success(), "{simulated:?}");
    let text = String::from_utf8_lossy(&simulated.stdout);
    assert!(text.contains(&account.id), "{text}");
    assert!(text.contains("image") && text.contains("+25%"), "{text}");
    let review = run(&["rates", "publish", file.to_str().unwrap(), "--dry-run"])
        .await
        .expect("run");
    assert!(review.status.success(), "{review:?}");
    let text = String::from_utf8_lossy(&review.stdout);
    assert!(
        text.contains("simulated customer impact over the last 30 days"),
        "{text}"
    );
    assert!(
        text.contains("8") && text.contains("10") && text.contains("+25%"),
        "{text}"
    );
    app.stop().await;
}
