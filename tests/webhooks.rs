//! Webhooks over the real server and a real HTTP receiver: deliveries are signed as the
//! Standard Webhooks specification has it (checked with its reference library, which
//! refuses a tampered body), failed and timed-out attempts are retried, a wallet's events
//! arrive in order, what keeps failing is dead-lettered and can be replayed, rotation
//! signs with both secrets, private addresses are refused, scope is enforced, and two
//! replicas deliver each event once.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use allot::proto;
use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use common::*;
use prost_types::FieldMask;
use tonic::Code;
use tonic_types::StatusExt;

/// One request the receiver got, and what it answered.
#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
    status: u16,
}

impl Received {
    fn id(&self) -> String {
        self.headers["webhook-id"].to_str().unwrap().to_string()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn sequence(&self) -> (String, i64) {
        let json = self.json();
        (
            json["data"]["wallet_id"].as_str().unwrap().to_string(),
            json["data"]["sequence"].as_i64().unwrap(),
        )
    }
}

#[derive(Default)]
struct Script {
    /// Answer 500 to this many requests first.
    failures: AtomicUsize,
    /// Always answer 500.
    down: std::sync::atomic::AtomicBool,
    /// Answer this many requests only after 3 s (past the tests' 2 s timeout).
    slow: AtomicUsize,
    /// Take this long over every answer (ms).
    delay_ms: std::sync::atomic::AtomicU64,
    received: Mutex<Vec<Received>>,
}

struct Receiver {
    addr: SocketAddr,
    script: Arc<Script>,
}

impl Receiver {
    async fn start() -> Receiver {
        let script = Arc::new(Script::default());
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, script }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.script.received.lock().unwrap().clone()
    }

    fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.status == 200)
            .collect()
    }

    /// Waits until `done` holds for what was received (10 s at most).
    async fn until(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        for _ in 0..200 {
            let received = self.received();
            if done(&received) {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what}: not within 10 s; received {:#?}", self.received());
    }
}

async fn receive(State(script): State<Arc<Script>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let delay = script.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let slow = script
        .slow
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if slow {
        // Recorded first: the server drops this handler when the client gives up.
        script.received.lock().unwrap().push(Received {
            headers,
            body,
            status: 0,
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        return StatusCode::OK;
    }
    let failing = script.down.load(Ordering::SeqCst)
        || script
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    let status = if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    script.received.lock().unwrap().push(Received {
        headers,
        body,
        status: status.as_u16(),
    });
    status
}

async fn create_endpoint(
    app: &TestApp,
    url: &str,
    account_id: &str,
    types: &[&str],
) -> proto::WebhookEndpoint {
    app.webhooks(&app.admin)
        .create_webhook_endpoint(proto::CreateWebhookEndpointRequest {
            endpoint: Some(proto::WebhookEndpoint {
                url: url.into(),
                account_id: account_id.into(),
                event_types: types.iter().map(|t| t.to_string()).collect(),
                ..Default::default()
            }),
            request_id: uuid(),
        })
        .await
        .expect("create endpoint")
        .into_inner()
}

async fn debit(app: &TestApp, account_id: &str, request_type: &str) {
    app.ledger(&app.admin)
        .debit(debit_request(account_id, request_type, &uuid()))
        .await
        .expect("debit");
}

async fn deliveries(app: &TestApp, endpoint_id: &str) -> Vec<proto::WebhookDelivery> {
    app.webhooks(&app.admin)
        .list_webhook_deliveries(proto::ListWebhookDeliveriesRequest {
            endpoint_id: endpoint_id.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list deliveries")
        .into_inner()
        .deliveries
}

fn verify(secret: &str, received: &Received) -> Result<(), String> {
    let webhook = standardwebhooks::Webhook::new(secret).map_err(|e| e.to_string())?;
    let mut headers = standardwebhooks_headers();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(
            name,
            received.headers[name].to_str().unwrap().parse().unwrap(),
        );
    }
    webhook
        .verify(&received.body, &headers)
        .map_err(|e| e.to_string())
}

/// The header map type of the reference library (the `http` crate's).
fn standardwebhooks_headers() -> axum::http::HeaderMap {
    axum::http::HeaderMap::new()
}

#[tokio::test]
async fn deliveries_are_signed_ordered_and_carry_the_event() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let receiver = Receiver::start().await;
    let (account, wallet) = app.funded("hooked", "").await;
    let endpoint = create_endpoint(&app, &receiver.url(), &account.id, &[]).await;
    assert!(endpoint.secret.starts_with("whsec_"), "{endpoint:?}");
    app.grant(&wallet.id, "10").await;
    debit(&app, &account.id, "image").await;
    debit(&app, &account.id, "image").await;
    debit(&app, &account.id, "one").await;
    // The grant: balance.changed and grant.activated; each debit: balance.changed.
    let received = receiver
        .until("every event delivered", |r| {
            r.iter().filter(|r| r.status == 200).count() >= 5
        })
        .await;
    let mut sequences = Vec::new();
    for r in &received {
        verify(&endpoint.secret, r).expect("signed with the endpoint's secret");
        let json = r.json();
        assert_eq!(
            json["data"]["id"].as_str().unwrap(),
            r.id(),
            "webhook-id is the event id"
        );
        assert_eq!(json["data"]["wallet_id"], wallet.id.as_str());
        assert_eq!(json["data"]["account_id"], account.id.as_str());
        assert_eq!(json["data"]["unit"], "credits");
        assert_eq!(json["type"], json["data"]["type"]);
        assert_eq!(r.headers["content-type"], "application/json");
        sequences.push(r.sequence().1);
        // A tampered body fails the reference verifier.
        let mut tampered = r.clone();
        let mut body = tampered.body.to_vec();
        let last = body.len() - 2;
        body[last] ^= 1;
        tampered.body = body.into();
        assert!(verify(&endpoint.secret, &tampered).is_err());
        // So does another secret.
        assert!(verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", r).is_err());
    }
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "in order: {sequences:?}"
    );
    let types: Vec<String> = received
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_string())
        .collect();
    assert!(types.contains(&"grant.activated".to_string()), "{types:?}");
    assert_eq!(
        types.iter().filter(|t| *t == "balance.changed").count(),
        4,
        "{types:?}"
    );
    // 10 - 4 - 4 - 1: balances as decimal strings.
    let last = received.last().unwrap().json();
    assert_eq!(last["data"]["balance"]["available"], "1", "{last}");
    // The deliveries are listed, each delivered at its first attempt.
    let listed = deliveries(&app, &endpoint.id).await;
    assert_eq!(listed.len(), received.len());
    for d in &listed {
        assert_eq!(
            d.state,
            proto::WebhookDeliveryState::Delivered as i32,
            "{d:?}"
        );
        assert_eq!(d.attempts.len(), 1);
        assert_eq!(d.attempts[0].status_code, 200);
    }
}

#[tokio::test]
async fn type_filters_and_account_scope_choose_what_is_sent() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let receiver = Receiver::start().await;
    let parent = app.create_account("parent", "").await;
    let child = app.create_account("child", &parent.id).await;
    let other = app.create_account("other", "").await;
    let child_wallet = app.create_wallet(&child.id, "credits", "").await;
    let other_wallet = app.create_wallet(&other.id, "credits", "").await;
    let endpoint = create_endpoint(&app, &receiver.url(), &parent.id, &["grant.activated"]).await;
    app.grant(&other_wallet.id, "5").await;
    app.grant(&child_wallet.id, "5").await;
    let received = receiver.until("the child's grant", |r| !r.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let received_now = receiver.received();
    assert_eq!(received_now.len(), 1, "{received:#?}");
    let json = received_now[0].json();
    assert_eq!(json["type"], "grant.activated");
    assert_eq!(json["data"]["wallet_id"], child_wallet.id.as_str());
    // Unknown types are refused.
    let err = app
        .webhooks(&app.admin)
        .create_webhook_endpoint(proto::CreateWebhookEndpointRequest {
            endpoint: Some(proto::WebhookEndpoint {
                url: receiver.url(),
                account_id: parent.id.clone(),
                event_types: vec!["balance.exploded".into()],
                ..Default::default()
            }),
            request_id: uuid(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // Turned off: nothing more is sent.
    app.webhooks(&app.admin)
        .update_webhook_endpoint(proto::UpdateWebhookEndpointRequest {
            endpoint: Some(proto::WebhookEndpoint {
                id: endpoint.id.clone(),
                disabled: true,
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["disabled".into()],
            }),
            request_id: uuid(),
        })
        .await
        .expect("disable");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    app.grant(&child_wallet.id, "5").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(receiver.received().len(), 1);
}

/// A slow endpoint and a failing one each hold back only their own deliveries: a healthy
/// endpoint gets every event at once.
#[tokio::test]
async fn a_slow_or_failing_endpoint_holds_back_no_other() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let (account, _) = app.funded("neighbours", "1000").await;
    let healthy = Receiver::start().await;
    let slow = Receiver::start().await;
    slow.script.delay_ms.store(1500, Ordering::SeqCst);
    let down = Receiver::start().await;
    down.script
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for receiver in [&slow, &down, &healthy] {
        create_endpoint(&app, &receiver.url(), &account.id, &["balance.changed"]).await;
    }
    for _ in 0..30 {
        debit(&app, &account.id, "image").await;
    }
    let got = healthy
        .until("every debit at the healthy endpoint", |r| r.len() >= 30)
        .await;
    assert_eq!(got.len(), 30);
    assert!(got.iter().all(|r| r.status == 200));
    // One wallet's events go out one at a time per endpoint: the slow one is far behind
    // (1.5 s each), the failing one is still failing — neither held the healthy one back.
    assert!(slow.received().len() < 10, "{}", slow.received().len());
    assert!(!down.received().is_empty());
    assert!(down.delivered().is_empty());
    app.stop().await;
}

/// The wallet's webhook fan-out cursor as stored.
async fn stored_cursor(app: &TestApp, wallet_id: &str) -> Option<i64> {
    use sea_orm::ConnectionTrait;
    let store = &app.handles.store;
    store
        .connection()
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            store.backend(),
            match store.backend() {
                sea_orm::DbBackend::Postgres => {
                    "SELECT sequence FROM webhook_fanout WHERE wallet_id = $1"
                }
                _ => "SELECT sequence FROM webhook_fanout WHERE wallet_id = ?",
            },
            [wallet_id.into()],
        ))
        .await
        .expect("read the cursor")
        .map(|row| row.try_get::<i64>("", "sequence").expect("sequence"))
}

/// Events no endpoint wants are read past without a write each round (the cursor is stored
/// every few seconds, before the scan for wallets behind); the next wanted one is sent, once.
#[tokio::test]
async fn events_nobody_wants_are_read_past_and_the_next_wanted_one_is_sent() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let receiver = Receiver::start().await;
    let (account, wallet) = app.funded("alerts", "12").await;
    let endpoint = create_endpoint(&app, &receiver.url(), "", &["balance.depleted"]).await;
    // The endpoint starts every cursor at the wallet's latest event (its grant's two).
    assert_eq!(stored_cursor(&app, &wallet.id).await, Some(2));
    debit(&app, &account.id, "image").await;
    debit(&app, &account.id, "image").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(receiver.received().is_empty());
    assert_eq!(
        stored_cursor(&app, &wallet.id).await,
        Some(2),
        "rounds that make no delivery write nothing"
    );
    // 4 → 0.
    debit(&app, &account.id, "image").await;
    let received = receiver.until("the depletion", |r| !r.is_empty()).await;
    assert_eq!(received[0].json()["type"], "balance.depleted");
    // The delivery's write stores the cursor at the wallet's latest event: its grant's two,
    // three debits and the depletion.
    let mut stored = None;
    for _ in 0..80 {
        stored = stored_cursor(&app, &wallet.id).await;
        if stored == Some(6) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, Some(6));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(deliveries(&app, &endpoint.id).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn failures_and_timeouts_are_retried_then_dead_lettered_and_replayed() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let receiver = Receiver::start().await;
    let (account, wallet) = app.funded("flaky", "").await;
    let endpoint = create_endpoint(&app, &receiver.url(), &account.id, &["grant.activated"]).await;
    // An answer past the timeout, two 500s, then success.
    receiver.script.failures.store(2, Ordering::SeqCst);
    receiver.script.slow.store(1, Ordering::SeqCst);
    app.grant(&wallet.id, "5").await;
    let received = receiver
        .until("delivered after retries", |r| {
            r.iter().any(|r| r.status == 200) && r.len() >= 4
        })
        .await;
    assert_eq!(received.len(), 4, "{received:#?}");
    assert!(
        received.iter().all(|r| r.id() == received[0].id()),
        "the same event each time"
    );
    // Attempts are recorded with what the endpoint answered.
    let mut listed = Vec::new();
    for _ in 0..40 {
        listed = deliveries(&app, &endpoint.id).await;
        if listed[0].state == proto::WebhookDeliveryState::Delivered as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivery = &listed[0];
    assert_eq!(
        delivery.state,
        proto::WebhookDeliveryState::Delivered as i32
    );
    let statuses: Vec<i32> = delivery.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(statuses, vec![0, 500, 500, 200], "{delivery:#?}");
    assert!(
        delivery.attempts[0].error.contains("timed out")
            || delivery.attempts[0].error.contains("timeout"),
        "{delivery:#?}"
    );
    assert!(delivery.attempts[1].error.contains("500"));

    // Down for good: 1 + 3 attempts, then dead; the wallet's next event waits behind it.
    receiver.script.down.store(true, Ordering::SeqCst);
    app.grant(&wallet.id, "6").await;
    let dead = 'dead: {
        for _ in 0..100 {
            let dead: Vec<_> = deliveries(&app, &endpoint.id)
                .await
                .into_iter()
                .filter(|d| d.state == proto::WebhookDeliveryState::Dead as i32)
                .collect();
            if !dead.is_empty() {
                break 'dead dead;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "not dead-lettered: {:#?}",
            deliveries(&app, &endpoint.id).await
        );
    };
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts.len(), 4, "{dead:#?}");
    assert_eq!(dead[0].attempt_count, 4);
    // Listed by state.
    let only_dead = app
        .webhooks(&app.admin)
        .list_webhook_deliveries(proto::ListWebhookDeliveriesRequest {
            endpoint_id: endpoint.id.clone(),
            state: proto::WebhookDeliveryState::Dead as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    assert_eq!(only_dead.len(), 1);
    assert_eq!(only_dead[0].id, dead[0].id);

    // Back up: replaying the dead one delivers it.
    receiver.script.down.store(false, Ordering::SeqCst);
    let replayed = app
        .webhooks(&app.admin)
        .replay_webhook_deliveries(proto::ReplayWebhookDeliveriesRequest {
            endpoint_id: endpoint.id.clone(),
            delivery_id: dead[0].id.clone(),
            request_id: uuid(),
            ..Default::default()
        })
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replayed.replayed, 1);
    receiver
        .until("the replay delivered", |r| {
            r.iter()
                .filter(|r| r.status == 200 && r.id() == dead[0].event_id)
                .count()
                == 1
        })
        .await;
    // A range replay sends both again.
    let replayed = app
        .webhooks(&app.admin)
        .replay_webhook_deliveries(proto::ReplayWebhookDeliveriesRequest {
            endpoint_id: endpoint.id.clone(),
            start_time: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp() + 60,
                nanos: 0,
            }),
            request_id: uuid(),
            ..Default::default()
        })
        .await
        .expect("replay a range")
        .into_inner();
    assert_eq!(replayed.replayed, 2);
    let before = receiver.delivered().len();
    receiver
        .until("both sent again", |r| {
            r.iter().filter(|r| r.status == 200).count() == before + 2
        })
        .await;
}

#[tokio::test]
async fn a_wallets_events_arrive_in_order_through_failures() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let receiver = Receiver::start().await;
    let (account, wallet) = app.funded("ordered", "").await;
    create_endpoint(&app, &receiver.url(), &account.id, &[]).await;
    app.grant(&wallet.id, "1000").await;
    // Three failures: the first event is delivered at its last attempt, the rest wait.
    receiver.script.failures.store(3, Ordering::SeqCst);
    for _ in 0..30 {
        debit(&app, &account.id, "one").await;
    }
    // Grant: 2 events; 30 debits: 30.
    let received = receiver
        .until("32 events", |r| {
            r.iter().filter(|r| r.status == 200).count() >= 32
        })
        .await;
    let delivered: Vec<i64> = received
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.sequence().1)
        .collect();
    assert_eq!(delivered, (1..=32).collect::<Vec<_>>(), "{wallet:?}");
}

#[tokio::test]
async fn a_rotation_signs_with_both_secrets_for_a_while() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let receiver = Receiver::start().await;
    let (account, wallet) = app.funded("rotating", "").await;
    let endpoint = create_endpoint(&app, &receiver.url(), &account.id, &["grant.activated"]).await;
    let rotated = app
        .webhooks(&app.admin)
        .rotate_webhook_secret(proto::RotateWebhookSecretRequest {
            endpoint_id: endpoint.id.clone(),
            request_id: uuid(),
        })
        .await
        .expect("rotate")
        .into_inner();
    assert!(rotated.secret.starts_with("whsec_"));
    assert_ne!(rotated.secret, endpoint.secret);
    assert!(rotated.previous_secret_expire_time.is_some());
    // Reads never show the secret.
    let read = app
        .webhooks(&app.admin)
        .get_webhook_endpoint(proto::GetWebhookEndpointRequest {
            endpoint_id: endpoint.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(read.secret.is_empty());
    // The dispatcher reads endpoints again every second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    app.grant(&wallet.id, "5").await;
    let received = receiver.until("delivered", |r| !r.is_empty()).await;
    let r = &received[0];
    verify(&rotated.secret, r).expect("the new secret verifies");
    verify(&endpoint.secret, r).expect("the old secret still verifies");
    let signatures = r.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let app = spawn_app_with_webhooks(allot::webhooks::Settings {
        retries: vec![Duration::from_millis(100)],
        ..webhook_settings_strict()
    })
    .await;
    app.publish_standard_card().await;
    let (account, wallet) = app.funded("ssrf", "").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://localhost/",
        "http://10.0.0.1/",
        "ftp://example.com/",
    ] {
        let err = app
            .webhooks(&app.admin)
            .create_webhook_endpoint(proto::CreateWebhookEndpointRequest {
                endpoint: Some(proto::WebhookEndpoint {
                    url: url.into(),
                    account_id: account.id.clone(),
                    ..Default::default()
                }),
                request_id: uuid(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{url}: {err:?}");
        assert_eq!(
            err.get_error_details().error_info().unwrap().metadata["field"],
            "endpoint.url"
        );
    }
    // A name that resolves to loopback (`vm` is 127.0.0.1 in this machine's /etc/hosts, as
    // `localhost` is everywhere) is refused when the attempt connects.
    let receiver = Receiver::start().await;
    let host = if std::net::ToSocketAddrs::to_socket_addrs(&("vm", 80)).is_ok() {
        "vm"
    } else {
        "localhost.localdomain"
    };
    let url = format!("http://{host}:{}/hook", receiver.addr.port());
    let endpoint = create_endpoint(&app, &url, &account.id, &["grant.activated"]).await;
    app.grant(&wallet.id, "5").await;
    let dead = 'dead: {
        for _ in 0..100 {
            let listed = deliveries(&app, &endpoint.id).await;
            if listed
                .first()
                .is_some_and(|d| d.state == proto::WebhookDeliveryState::Dead as i32)
            {
                break 'dead listed;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("not dead: {:#?}", deliveries(&app, &endpoint.id).await);
    };
    assert!(
        receiver.received().is_empty(),
        "nothing reached the receiver"
    );
    let error = &dead[0].attempts[0].error;
    assert!(error.contains("not a public address"), "{error}");
}

/// The settings of production: private addresses refused.
fn webhook_settings_strict() -> allot::webhooks::Settings {
    allot::webhooks::Settings {
        allow_private: false,
        ..webhook_settings()
    }
}

#[tokio::test]
async fn endpoints_are_managed_within_scope() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let mine = app.create_account("mine", "").await;
    let theirs = app.create_account("theirs", "").await;
    let manager = token(&["account_manager"], &[&mine.id]);
    let mut client = app.webhooks(&manager);
    let request = |account_id: &str| proto::CreateWebhookEndpointRequest {
        endpoint: Some(proto::WebhookEndpoint {
            url: receiver.url(),
            account_id: account_id.into(),
            ..Default::default()
        }),
        request_id: uuid(),
    };
    let own = client
        .create_webhook_endpoint(request(&mine.id))
        .await
        .expect("own account")
        .into_inner();
    let err = client
        .create_webhook_endpoint(request(&theirs.id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = client
        .create_webhook_endpoint(request(""))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "every account: admins only"
    );
    // An admin whose token covers some accounts is not an admin of every account.
    let scoped_admin = token(&["admin"], &[&mine.id]);
    let err = app
        .webhooks(&scoped_admin)
        .create_webhook_endpoint(request(""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = app
        .webhooks(&scoped_admin)
        .list_webhook_endpoints(proto::ListWebhookEndpointsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "lists only what it names"
    );
    let global = create_endpoint(&app, &receiver.url(), "", &[]).await;
    let foreign = create_endpoint(&app, &receiver.url(), &theirs.id, &[]).await;
    for id in [&global.id, &foreign.id] {
        let err = client
            .get_webhook_endpoint(proto::GetWebhookEndpointRequest {
                endpoint_id: id.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{id}");
        let err = client
            .list_webhook_deliveries(proto::ListWebhookDeliveriesRequest {
                endpoint_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{id}");
        let err = client
            .delete_webhook_endpoint(proto::DeleteWebhookEndpointRequest {
                endpoint_id: id.clone(),
                request_id: uuid(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{id}");
    }
    let listed = client
        .list_webhook_endpoints(proto::ListWebhookEndpointsRequest {
            account_id: mine.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .endpoints;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, own.id);
    assert!(listed[0].secret.is_empty());
    let err = client
        .list_webhook_endpoints(proto::ListWebhookEndpointsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // A service token may not manage endpoints at all.
    let err = app
        .webhooks(&token(&["service"], &["*"]))
        .list_webhook_endpoints(proto::ListWebhookEndpointsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // The same request_id answers the same endpoint, secret included.
    let again = proto::CreateWebhookEndpointRequest {
        request_id: "same".into(),
        ..request(&mine.id)
    };
    let first = client
        .create_webhook_endpoint(again.clone())
        .await
        .unwrap()
        .into_inner();
    let second = client
        .create_webhook_endpoint(again)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, second);
    // Deleted: gone, with its deliveries.
    client
        .delete_webhook_endpoint(proto::DeleteWebhookEndpointRequest {
            endpoint_id: own.id.clone(),
            request_id: uuid(),
        })
        .await
        .expect("delete");
    let err = client
        .get_webhook_endpoint(proto::GetWebhookEndpointRequest {
            endpoint_id: own.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "gone: not found, told only to global callers"
    );
    let err = app
        .webhooks(&app.admin)
        .get_webhook_endpoint(proto::GetWebhookEndpointRequest {
            endpoint_id: own.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn two_replicas_deliver_each_event_once() {
    let app = spawn_app().await;
    let replica = app.spawn_replica().await;
    app.publish_standard_card().await;
    let receiver = Receiver::start().await;
    let global = create_endpoint(&app, &receiver.url(), "", &["balance.changed"]).await;
    let mut wallets = Vec::new();
    for i in 0..4 {
        let (account, _) = app.funded(&format!("r{i}"), "1000").await;
        wallets.push(account);
    }
    let mut calls = Vec::new();
    for (i, account) in wallets.iter().enumerate() {
        for j in 0..20 {
            let server = if (i + j) % 2 == 0 { &app } else { &replica };
            let mut ledger = server.ledger(&server.admin);
            let request = debit_request(&account.id, "one", &uuid());
            calls.push(async move { ledger.debit(request).await.expect("debit") });
        }
    }
    futures::future::join_all(calls).await;
    // 4 grants + 80 debits.
    receiver
        .until("84 events", |r| {
            r.iter().filter(|r| r.status == 200).count() >= 84
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = receiver.received();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut per_wallet: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in &received {
        *seen.entry(r.id()).or_default() += 1;
        let (wallet, sequence) = r.sequence();
        per_wallet.entry(wallet).or_default().push(sequence);
    }
    assert_eq!(seen.len(), 84, "{received:#?}");
    assert!(seen.values().all(|n| *n == 1), "each event once: {seen:?}");
    // Each wallet: the grant's balance.changed (its grant.activated is filtered out), then
    // 20 debits, in order.
    for (wallet, sequences) in per_wallet {
        assert_eq!(sequences.len(), 21, "{wallet}: {sequences:?}");
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "{wallet}: {sequences:?}"
        );
    }
    assert_eq!(deliveries(&app, &global.id).await.len(), 84);
}

/// `allot serve` (the real binary) killed with SIGKILL while deliveries are in flight, then
/// started again on the same database: every event is delivered, those in flight at the
/// kill at most once more, and each wallet's events still in order.
#[tokio::test]
async fn a_killed_server_loses_no_delivery() {
    let db = TestDatabase::create().await;
    let logs = tempfile::tempdir().expect("log dir");
    let flags = [
        "--webhook-allow-private",
        "--webhook-timeout",
        "2s",
        "--webhook-retry-schedule",
        "200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms",
        // Forty debits at once on a busy test machine: queue rather than refuse.
        "--max-queue-wait",
        "10s",
    ];
    let first = start(&db, &flags, logs.path(), "first").await;
    let receiver = Receiver::start().await;
    // Slow answers: a kill finds attempts under way.
    receiver.script.delay_ms.store(150, Ordering::SeqCst);
    let admin = bearer(&first.admin);
    let mut rates = proto::rate_card_service_client::RateCardServiceClient::with_interceptor(
        first.channel.clone(),
        admin.clone(),
    );
    let draft = rates
        .create_rate_card(card_request(vec![rate("one", "1", &[], "")], "card"))
        .await
        .unwrap()
        .into_inner();
    rates
        .publish_rate_card(publish_request(&draft))
        .await
        .unwrap();
    let mut hooks = proto::webhook_service_client::WebhookServiceClient::with_interceptor(
        first.channel.clone(),
        admin.clone(),
    );
    hooks
        .create_webhook_endpoint(proto::CreateWebhookEndpointRequest {
            endpoint: Some(proto::WebhookEndpoint {
                url: receiver.url(),
                ..Default::default()
            }),
            request_id: uuid(),
        })
        .await
        .expect("endpoint");
    let mut accounts = Vec::new();
    for i in 0..4 {
        let account = first
            .accounts()
            .create_account(proto::CreateAccountRequest {
                account: Some(proto::Account {
                    external_id: format!("killed-{i}"),
                    ..Default::default()
                }),
                request_id: uuid(),
            })
            .await
            .unwrap()
            .into_inner();
        let wallet = first
            .accounts()
            .create_wallet(wallet_request(&account.id))
            .await
            .unwrap()
            .into_inner();
        first
            .grants()
            .create_grant(grant_request(&wallet.id, "100", "0.01"))
            .await
            .unwrap();
        accounts.push(account);
    }
    let mut calls = Vec::new();
    for account in &accounts {
        for _ in 0..10 {
            let mut ledger = first.ledger();
            let request = debit_request(&account.id, "one", &uuid());
            calls.push(async move { ledger.debit(request).await.expect("debit") });
        }
    }
    futures::future::join_all(calls).await;
    // Each wallet: the grant's two events and ten debits.
    let expected = 4 * 12;
    receiver.until("some deliveries", |r| r.len() >= 6).await;
    drop(first); // SIGKILL
    let killed_at = receiver.received().len();
    assert!(
        killed_at < expected,
        "the kill came after everything was sent"
    );
    let _second = start(&db, &flags, logs.path(), "second").await;
    let mut received = Vec::new();
    for _ in 0..300 {
        received = receiver.received();
        let distinct: std::collections::HashSet<String> =
            received.iter().map(Received::id).collect();
        if distinct.len() >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut per_wallet: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in &received {
        *seen.entry(r.id()).or_default() += 1;
        let (wallet, sequence) = r.sequence();
        per_wallet.entry(wallet).or_default().push(sequence);
    }
    assert_eq!(seen.len(), expected, "every event delivered: {seen:?}");
    let again: usize = seen.values().map(|n| n - 1).sum();
    assert!(
        again <= allot::webhooks::PER_ENDPOINT,
        "{again} sent twice: only those under way at the kill may be"
    );
    for (wallet, sequences) in per_wallet {
        assert!(
            sequences.windows(2).all(|w| w[0] <= w[1]),
            "{wallet} out of order: {sequences:?}"
        );
        assert_eq!(sequences.last(), Some(&12), "{wallet}");
    }
}

async fn start(
    db: &TestDatabase,
    flags: &[&str],
    logs: &Path,
    name: &str,
) -> process::ServerProcess {
    process::ServerProcess::try_start_with_env(
        name,
        &db.url,
        flags,
        &[("RUST_LOG", "warn,allot::webhooks=debug")],
        None,
        logs,
    )
    .await
    .unwrap_or_else(|why| panic!("{why}"))
}
