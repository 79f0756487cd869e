//! The audit trail (issue 12, point 4): rate card publishes, override changes, grant voids and
//! adjustments, each with who, when, what and before → after; filters and paging; scope
//! (a scoped reader sees its accounts' events and the rate cards', never another's); routes
//! and provider costs only for operators; a replayed request records nothing twice.

mod common;

use allot::proto;
use common::*;
use tonic::Code;

async fn events(
    app: &TestApp,
    token: &str,
    request: proto::ListAuditEventsRequest,
) -> Vec<proto::AuditEvent> {
    app.reports(token)
        .list_audit_events(request)
        .await
        .expect("audit events")
        .into_inner()
        .audit_events
}

fn change<'a>(event: &'a proto::AuditEvent, path: &str) -> Option<(&'a str, &'a str)> {
    event
        .changes
        .iter()
        .find(|c| c.path == path)
        .map(|c| (c.before.as_str(), c.after.as_str()))
}

#[tokio::test]
async fn publishes_overrides_voids_and_adjustments_are_audited() {
    let app = spawn_app().await;
    app.publish_card(vec![rate("chat", "1", &[], "")]).await;
    let mut dearer = rate("chat", "2", &[], "");
    dearer.route = "provider/model-b".into();
    app.publish_card(vec![dearer]).await;
    let (account, wallet) = app.funded("audited", "").await;
    let grant = app.grant(&wallet.id, "100").await;
    let (other, other_wallet) = app.funded("elsewhere", "50").await;

    let void = proto::VoidGrantRequest {
        id: grant.id.clone(),
        reason: "duplicate contract".into(),
        request_id: uuid(),
    };
    app.grants(&app.admin)
        .void_grant(void.clone())
        .await
        .expect("void");
    // A replay records nothing new.
    app.grants(&app.admin)
        .void_grant(void)
        .await
        .expect("replayed void");
    adjust(&app, &other_wallet.id, "-5", "goodwill correction")
        .await
        .expect("adjust");
    app.rates(&app.admin)
        .set_account_override(proto::SetAccountOverrideRequest {
            account_override: Some(proto::AccountOverride {
                account_id: account.id.clone(),
                request_type: "chat".into(),
                rate: Some(proto::Rate {
                    flat_units: "1.5".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            request_id: uuid(),
        })
        .await
        .expect("override");

    let all = events(&app, &app.admin, proto::ListAuditEventsRequest::default()).await;
    let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "RATE_CARD_PUBLISHED",
            "RATE_CARD_PUBLISHED",
            "GRANT_VOIDED",
            "BALANCE_ADJUSTED",
            "ACCOUNT_OVERRIDE_SET"
        ]
    );
    assert!(
        all.iter()
            .all(|e| e.actor == "test-caller" && e.time.is_some())
    );

    // The first publish replaced nothing; the second names what changed.
    let (first, second) = (&all[0], &all[1]);
    assert_eq!(
        (first.resource.as_str(), first.before.as_str()),
        ("rate_cards/1", "")
    );
    assert_eq!(change(first, "rates.chat.flat_units"), Some(("", "1")));
    assert_eq!(change(second, "rates.chat.flat_units"), Some(("1", "2")));
    assert_eq!(
        change(second, "rates.chat.route"),
        Some(("provider/model-a", "provider/model-b"))
    );
    assert_eq!(change(second, "version"), Some(("1", "2")));

    let voided = &all[2];
    assert_eq!(voided.resource, format!("grants/{}", grant.id));
    assert_eq!(voided.account_id, account.id);
    assert_eq!(change(voided, "remaining"), Some(("100", "0")));
    assert_eq!(change(voided, "status"), Some(("ACTIVE", "VOIDED")));
    assert_eq!(change(voided, "reason"), Some(("", "duplicate contract")));

    let adjusted = &all[3];
    assert_eq!(adjusted.account_id, other.id);
    assert_eq!(change(adjusted, "posted"), Some(("50", "45")));
    assert_eq!(
        change(adjusted, "reason"),
        Some(("", "goodwill correction"))
    );

    let set = &all[4];
    assert_eq!(
        set.resource,
        format!("accounts/{}/overrides/chat", account.id)
    );
    assert_eq!(change(set, "rate.flat_units"), Some(("", "1.5")));

    // Filters: by action, by account, by resource; paging.
    let publishes = events(
        &app,
        &app.admin,
        proto::ListAuditEventsRequest {
            actions: vec!["RATE_CARD_PUBLISHED".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(publishes.len(), 2);
    let of_account = events(
        &app,
        &app.admin,
        proto::ListAuditEventsRequest {
            account_id: account.id.clone(),
            ..Default::default()
        },
    )
    .await;
    let actions: Vec<&str> = of_account.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["GRANT_VOIDED", "ACCOUNT_OVERRIDE_SET"]);
    let by_resource = events(
        &app,
        &app.admin,
        proto::ListAuditEventsRequest {
            resource: "rate_cards/2".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_resource.len(), 1);
    let page = app
        .reports(&app.admin)
        .list_audit_events(proto::ListAuditEventsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("page")
        .into_inner();
    assert_eq!(page.audit_events.len(), 2);
    let rest = events(
        &app,
        &app.admin,
        proto::ListAuditEventsRequest {
            page_size: 10,
            page_token: page.next_page_token.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[0].id, all[2].id);

    // Procurement scoped to the account: its events and the rate cards', no route anywhere.
    let procurement = token(&["procurement"], &[&account.id]);
    let seen = events(&app, &procurement, proto::ListAuditEventsRequest::default()).await;
    let actions: Vec<&str> = seen.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "RATE_CARD_PUBLISHED",
            "RATE_CARD_PUBLISHED",
            "GRANT_VOIDED",
            "ACCOUNT_OVERRIDE_SET"
        ]
    );
    for event in &seen {
        assert!(
            !event.before.contains("route")
                && !event.after.contains("route")
                && !event.after.contains("provider_cost")
                && event.changes.iter().all(|c| !c.path.contains("route")),
            "{event:?}"
        );
    }
    let denied = app
        .reports(&procurement)
        .list_audit_events(proto::ListAuditEventsRequest {
            account_id: other.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let service = app
        .reports(&token(&["service"], &[&account.id]))
        .list_audit_events(proto::ListAuditEventsRequest::default())
        .await
        .unwrap_err();
    assert_error(&service, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    let bad = app
        .reports(&app.admin)
        .list_audit_events(proto::ListAuditEventsRequest {
            actions: vec!["DELETED_EVERYTHING".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&bad, "INVALID_ENUM", "actions[0]");

    // The CLI: a table of the events, filtered by action (any case).
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_allot"))
        .args([
            "audit",
            "--action",
            "grant_voided",
            "--account",
            &account.id,
        ])
        .args([
            "--server",
            &format!("http://{}", app.addr),
            "--token",
            &app.admin,
        ])
        .output()
        .await
        .expect("run allot audit");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("GRANT_VOIDED") && text.contains(&grant.id),
        "{text}"
    );
    assert!(!text.contains("ACCOUNT_OVERRIDE_SET"), "{text}");
    app.stop().await;
}
