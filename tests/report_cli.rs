//! `allot report budget | usage` through the real binary against a running server (issue 12,
//! point 6): tables, CSV, JSON, and the burn-down SVG (it parses as XML and names the
//! run-out date and the term end).

mod common;

use common::*;

const DAY: i64 = 86_400_000_000;

async fn allot(app: &TestApp, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(args)
        .arg("--server")
        .arg(format!("http://{}", app.addr))
        .args(["--token", &app.admin])
        .output()
        .await
        .expect("run allot")
}

fn stdout(output: &std::process::Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn day(micros: i64) -> String {
    rfc3339(micros)[..10].to_string()
}

#[tokio::test]
async fn budgets_and_usage_print_write_csv_and_draw_the_burn_down() {
    let app = spawn_app().await;
    app.publish_card(vec![rate("ten", "10", &[], "")]).await;
    let now = app.clock.now_micros();
    let d0 = (now.div_euclid(DAY) + 1) * DAY;
    app.clock.advance(d0 + DAY / 24 - now);
    let (org, org_wallet) = app.funded("org", "").await;
    let mut request = grant_request(&org_wallet.id, "1000", "0.01");
    request.grant.as_mut().unwrap().expire_time = Some(prost_types::Timestamp {
        seconds: (d0 + 60 * DAY) / 1_000_000,
        nanos: 0,
    });
    app.grants(&app.admin)
        .create_grant(request)
        .await
        .expect("grant");
    let dept = app.create_account("dept", &org.id).await;
    let dept_wallet = app.create_wallet(&dept.id, "credits", "").await;
    app.grant(&dept_wallet.id, "100").await;
    for _ in 0..10 {
        for (account, user) in [(&org.id, "alice"), (&org.id, "bob"), (&dept.id, "carol")] {
            let mut debit = debit_request(account, "ten", &uuid());
            debit.metadata = [("user".to_string(), user.to_string())].into();
            app.ledger(&app.admin).debit(debit).await.expect("debit");
        }
        app.clock.advance(DAY);
    }

    // One wallet: a table, and the chart.
    let dir = tempfile::tempdir().expect("temp dir");
    let svg = dir.path().join("burndown.svg");
    let svg_arg = svg.to_str().unwrap();
    let text = stdout(
        &allot(
            &app,
            &[
                "report",
                "budget",
                "--wallet",
                &org_wallet.id,
                "--svg",
                svg_arg,
            ],
        )
        .await,
    );
    assert!(
        text.contains(&format!("budget of wallet {}", org_wallet.id)),
        "{text}"
    );
    // 20 units a day: the 800 left last 40 days, to just before the term ends on day 60.
    assert!(text.contains("granted  consumed  remaining"), "{text}");
    assert!(text.contains(" 1000 "), "{text}");
    assert!(
        text.contains("at the 7-day rate (20 a day): runs out"),
        "{text}"
    );
    let budget = app
        .reports(&app.admin)
        .get_budget(allot::proto::GetBudgetRequest {
            wallet_id: org_wallet.id.clone(),
            ..Default::default()
        })
        .await
        .expect("budget")
        .into_inner();
    let runout = budget.runout_time_7d.expect("runs out");
    let runout = runout.seconds * 1_000_000;
    let drawing = std::fs::read_to_string(&svg).expect("the chart");
    let document = roxmltree::Document::parse(&drawing).expect("the SVG parses as XML");
    assert_eq!(document.root_element().tag_name().name(), "svg");
    let texts: Vec<String> = document
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(|t| t.trim().to_string()))
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| *t == format!("run-out {}", day(runout))),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| *t == format!("term end {}", day(d0 + 60 * DAY))),
        "{texts:?}"
    );
    if let Ok(keep) = std::env::var("ALLOT_KEEP_SVG") {
        std::fs::copy(&svg, keep).expect("keep the chart");
    }

    // The roll-up as CSV: a line per wallet, then the total.
    let csv = stdout(
        &allot(
            &app,
            &[
                "report",
                "budget",
                "--account",
                &org.id,
                "--sub-accounts",
                "--csv",
                "-",
            ],
        )
        .await,
    );
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 4, "{csv}");
    assert!(
        rows[0].starts_with("account,wallet,granted,consumed,remaining"),
        "{csv}"
    );
    assert!(
        rows[1].starts_with(&format!("{},{},1000,200,800,", org.id, org_wallet.id)),
        "{csv}"
    );
    assert!(
        rows[2].starts_with(&format!("{},{},100,100,0,", dept.id, dept_wallet.id)),
        "{csv}"
    );
    assert!(rows[3].starts_with("TOTAL,,1100,300,800,"), "{csv}");

    // JSON: the Budget message.
    let json = stdout(
        &allot(
            &app,
            &["--json", "report", "budget", "--wallet", &org_wallet.id],
        )
        .await,
    );
    let value: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(value["granted"], "1000");

    // Usage by user as CSV over the ten days.
    let usage = stdout(
        &allot(
            &app,
            &[
                "report",
                "usage",
                "--account",
                &org.id,
                "--by",
                "user",
                "--per",
                "month",
                "--from",
                &rfc3339(d0),
                "--to",
                &rfc3339(d0 + 10 * DAY),
                "--csv",
                "-",
            ],
        )
        .await,
    );
    let mut lines: Vec<&str> = usage.lines().collect();
    assert_eq!(
        lines.remove(0),
        "period_start,account_id,request_type,metadata_value,requests,units,money"
    );
    let users: Vec<(String, i64)> = lines
        .iter()
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            (cells[3].to_string(), cells[4].parse::<i64>().unwrap())
        })
        .fold(Vec::new(), |mut acc: Vec<(String, i64)>, (user, n)| {
            match acc.iter_mut().find(|(u, _)| *u == user) {
                Some(entry) => entry.1 += n,
                None => acc.push((user, n)),
            }
            acc
        });
    assert_eq!(users, [("alice".to_string(), 10), ("bob".to_string(), 10)]);
    // A table with totals, per day, the sub-account on its own rows.
    let table = stdout(
        &allot(
            &app,
            &[
                "report",
                "usage",
                "--account",
                &org.id,
                "--sub-accounts",
                "--from",
                &rfc3339(d0),
                "--to",
                &rfc3339(d0 + 10 * DAY),
            ],
        )
        .await,
    );
    assert!(
        table.contains("total: 30 requests, 300 units, USD 3"),
        "{table}"
    );
    assert_eq!(
        table.lines().filter(|l| l.contains(&dept.id)).count(),
        10,
        "{table}"
    );
    // Transparency: twenty requests of 10 units at 0.01; no quantities.
    let transparency = stdout(
        &allot(
            &app,
            &[
                "report",
                "transparency",
                "--account",
                &org.id,
                "--from",
                &rfc3339(d0),
                "--to",
                &rfc3339(d0 + 10 * DAY),
                "--csv",
                "-",
            ],
        )
        .await,
    );
    let lines: Vec<&str> = transparency.lines().collect();
    assert_eq!(lines.len(), 2, "{transparency}");
    assert!(lines[0].starts_with("request_type,requests,units,currency,mean,p50,p95,dimension"));
    assert_eq!(lines[1], "ten,20,200,USD,0.1,0.1,0.1,,,,,,");
    // Margins over every account (the admin token), per month: revenue 3, cost 30 × 0.001.
    let margin = stdout(
        &allot(
            &app,
            &[
                "report",
                "margin",
                "--per",
                "month",
                "--from",
                &rfc3339(d0),
                "--to",
                &rfc3339(d0 + 10 * DAY),
                "--csv",
                "-",
            ],
        )
        .await,
    );
    let revenue: f64 = margin
        .lines()
        .skip(1)
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            assert_eq!(
                (cells[1], cells[2]),
                ("ten", "provider/model-a"),
                "{margin}"
            );
            cells[5].parse::<f64>().unwrap()
        })
        .sum();
    assert!((revenue - 3.0).abs() < 1e-9, "{margin}");
    let table = stdout(
        &allot(
            &app,
            &[
                "report",
                "margin",
                "--from",
                &rfc3339(d0),
                "--to",
                &rfc3339(d0 + DAY),
            ],
        )
        .await,
    );
    assert!(table.contains("provider/model-a"), "{table}");
    assert!(table.contains("0.003"), "{table}");
    // A window that is not whole days is the server's refusal, named.
    let refused = allot(
        &app,
        &[
            "report",
            "usage",
            "--account",
            &org.id,
            "--from",
            &rfc3339(d0 + DAY / 2),
            "--to",
            &rfc3339(d0 + DAY),
        ],
    )
    .await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("INVALID_FIELD"),
        "{refused:?}"
    );
    app.stop().await;
}
