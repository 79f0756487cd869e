//! `allot rates diff A B` through the real binary against a running server (issue 12, point
//! 6): a published version, `current` and a rate card file compared request type by request
//! type, as a table and as JSON.

mod common;

use common::*;

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

#[tokio::test]
async fn rates_diff_compares_versions_current_and_files() {
    let app = spawn_app().await;
    // Version 1: chat (1 + 0.2/1000 output tokens, max 50), image (4), one (1); all routed
    // to provider/model-a at 0.001.
    app.publish_standard_card().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("next.toml");
    std::fs::write(
        &file,
        r#"
[[rate]]
request_type = "chat"
flat_units = "1.0"
max_units = "50"
route = "provider/model-b"
provider_cost = "0.0008"

[[rate.dimension]]
name = "output_tokens"
per = "1000"
units = "0.25"

[[rate]]
request_type = "one"
flat_units = "1"
route = "provider/model-a"
provider_cost = "0.001"

[[rate]]
request_type = "search"
flat_units = "0.5"
"#,
    )
    .expect("write the card");
    let file = file.to_str().expect("utf-8 path");

    let same = allot(&app, &["rates", "diff", "1", "current"]).await;
    assert!(same.status.success(), "{same:?}");
    assert_eq!(String::from_utf8_lossy(&same.stdout), "no differences\n");

    let output = allot(&app, &["--json", "rates", "diff", "current", file]).await;
    assert!(output.status.success(), "{output:?}");
    let changes: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let rows: Vec<(String, String, String, String, String)> = changes
        .as_array()
        .expect("a list")
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (
                s("request_type"),
                s("change"),
                s("field"),
                s("before"),
                s("after"),
            )
        })
        .collect();
    let row = |a: &str, b: &str, c: &str, d: &str, e: &str| {
        (
            a.to_string(),
            b.to_string(),
            c.to_string(),
            d.to_string(),
            e.to_string(),
        )
    };
    assert_eq!(
        rows,
        [
            row("chat", "changed", "provider_cost", "0.001", "0.0008"),
            row(
                "chat",
                "changed",
                "route",
                "provider/model-a",
                "provider/model-b"
            ),
            row(
                "chat",
                "changed",
                "dimension output_tokens",
                "0.2 per 1000",
                "0.25 per 1000"
            ),
            row("image", "removed", "", "4", ""),
            row("search", "added", "", "", "0.5"),
        ]
    );

    let table = allot(&app, &["rates", "diff", "1", file]).await;
    assert!(table.status.success(), "{table:?}");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("request_type") && text.contains("removed"),
        "{text}"
    );

    let missing = allot(&app, &["rates", "diff", "7", "current"]).await;
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("NOT_FOUND"),
        "{missing:?}"
    );
    app.stop().await;
}

/// The version of the card in force.
async fn in_force(app: &TestApp) -> i64 {
    app.rates(&app.admin)
        .get_rate_card(allot::proto::GetRateCardRequest::default())
        .await
        .expect("a card in force")
        .into_inner()
        .version
}

#[tokio::test]
async fn rates_publish_shows_the_changes_and_asks_unless_told() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let first = dir.path().join("first.toml");
    std::fs::write(
        &first,
        "[[rate]]\nrequest_type = \"chat\"\nflat_units = \"1\"\n\n\
         [[rate]]\nrequest_type = \"image\"\nflat_units = \"4\"\n",
    )
    .expect("write");
    let next = dir.path().join("next.toml");
    std::fs::write(
        &next,
        "[[rate]]\nrequest_type = \"chat\"\nflat_units = \"2\"\n",
    )
    .expect("write");
    let (first, next) = (first.to_str().unwrap(), next.to_str().unwrap());

    // Nothing in force: published without asking (the README's quickstart).
    let published = allot(&app, &["rates", "publish", first]).await;
    assert!(published.status.success(), "{published:?}");
    assert_eq!(in_force(&app).await, 1);

    // A change without a terminal and without --yes: refused, nothing created.
    let refused = allot(&app, &["rates", "publish", next]).await;
    assert!(!refused.status.success(), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--yes"), "{stderr}");
    assert!(stderr.contains("leaves image unpriced"), "{stderr}");
    assert!(stderr.contains("flat_units"), "{stderr}");
    assert_eq!(in_force(&app).await, 1);

    // --dry-run: the changes on stdout, nothing created.
    let dry = allot(&app, &["rates", "publish", next, "--dry-run"]).await;
    assert!(dry.status.success(), "{dry:?}");
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert!(
        stdout.contains("version 1") && stdout.contains("removed"),
        "{stdout}"
    );
    assert_eq!(in_force(&app).await, 1);

    // --yes: published; had a draft been left behind before, this would be version 3.
    let yes = allot(&app, &["rates", "publish", next, "--yes"]).await;
    assert!(yes.status.success(), "{yes:?}");
    assert_eq!(in_force(&app).await, 2);

    // The same card again: no differences, published without asking.
    let again = allot(&app, &["rates", "publish", next]).await;
    assert!(again.status.success(), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("no differences"));
    assert_eq!(in_force(&app).await, 3);
    app.stop().await;
}
