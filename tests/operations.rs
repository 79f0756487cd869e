//! Running allot in production, through the real binary: Prometheus metrics after real
//! traffic, the access log, OTLP spans arriving at a receiver with the caller's trace, TLS
//! (with a certificate rotated under a running server, and client certificates), the plaintext
//! health port with its liveness service, and `--migrate check`.

mod common;

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use allot::proto;
use common::{
    SECRET, TestDatabase, bearer, card_request, debit_request, grant_request, new_account,
    process::{ServerProcess, binary, free_port},
    publish_request, quantities, rate, token, uuid, wallet_request,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{
    Request,
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

// ---- provisioning through a server process -------------------------------------------------

/// Publishes a card with `chat` (1 unit + 0.2 per 1,000 output tokens).
async fn publish_chat_card(server: &ServerProcess) {
    let mut rates = server.rates();
    let draft = rates
        .create_rate_card(card_request(
            vec![rate("chat", "1", &[("output_tokens", "1000", "0.2")], "")],
            "operations test",
        ))
        .await
        .expect("create card")
        .into_inner();
    rates
        .publish_rate_card(publish_request(&draft))
        .await
        .expect("publish card");
}

/// An account with a `credits` wallet holding `amount`.
async fn funded(server: &ServerProcess, external_id: &str, amount: &str) -> proto::Account {
    let account = server
        .accounts()
        .create_account(new_account(external_id, ""))
        .await
        .expect("create account")
        .into_inner();
    let wallet = server
        .accounts()
        .create_wallet(wallet_request(&account.id))
        .await
        .expect("create wallet")
        .into_inner();
    server
        .grants()
        .create_grant(grant_request(&wallet.id, amount, "0.01"))
        .await
        .expect("grant");
    account
}

// ---- metrics ---------------------------------------------------------------------------------

/// `GET /metrics` over plain HTTP/1.0; the body.
async fn scrape(addr: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics port");
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read metrics");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_string()
}

/// Every sample of a scrape: `name{labels}` → value (labels as printed).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of the samples of `name` whose labels include every `label="value"` given.
fn sum(samples: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            series_name == name && labels.iter().all(|label| series_labels.contains(label))
        })
        .map(|(_, value)| value)
        .sum()
}

#[tokio::test]
async fn metrics_and_the_access_log_follow_real_traffic() {
    let db = TestDatabase::create().await;
    let logs = tempfile::tempdir().unwrap();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let server = ServerProcess::try_start_with_env(
        "metrics",
        &db.url,
        &[
            "--metrics-listen",
            &metrics_addr,
            "--access-log-rate",
            "1000",
        ],
        &[("RUST_LOG", "warn,allot::access=info")],
        None,
        logs.path(),
    )
    .await
    .unwrap_or_else(|why| panic!("{why}"));

    let before = samples(&scrape(&metrics_addr).await);
    assert_eq!(sum(&before, "allot_health_serving", &[]), 1.0);

    publish_chat_card(&server).await;
    let account = funded(&server, "metrics-co", "10").await;
    let service = token(&["service"], &["*"]);
    let mut ledger = proto::ledger_service_client::LedgerServiceClient::with_interceptor(
        server.channel.clone(),
        bearer(&service),
    );
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = uuid();
        ledger
            .debit(debit_request(&account.id, "chat", &id))
            .await
            .expect("debit");
        ids.push(id);
    }
    // 1 + 0.2 × 100 = 21 units: more than the 7 left.
    let mut too_big = debit_request(&account.id, "chat", &uuid());
    too_big.quantities = quantities(&[("output_tokens", "100000")]);
    let refused = ledger.debit(too_big).await.expect_err("insufficient");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    // A request type nobody priced: counted, but not under its own name.
    let unknown = ledger
        .debit(debit_request(&account.id, "made-up-type-xyz", &uuid()))
        .await
        .expect_err("unknown type");
    assert_ne!(unknown.code(), tonic::Code::Ok);
    let hold = ledger
        .reserve(proto::ReserveRequest {
            account_id: account.id.clone(),
            unit: "credits".into(),
            request_type: "chat".into(),
            request_id: uuid(),
            ..Default::default()
        })
        .await
        .expect("reserve")
        .into_inner();
    ledger
        .capture_reservation(proto::CaptureReservationRequest {
            reservation_id: hold.id.clone(),
            units: "1".into(),
            request_id: uuid(),
            ..Default::default()
        })
        .await
        .expect("capture");
    // No token: refused before any handler, and still counted.
    let mut anonymous =
        proto::ledger_service_client::LedgerServiceClient::new(server.channel.clone());
    let unauthenticated = anonymous
        .debit(debit_request(&account.id, "chat", &uuid()))
        .await
        .expect_err("no token");
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);

    // The sampler refreshes gauges every second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = samples(&scrape(&metrics_addr).await);
    let moved =
        |name: &str, labels: &[&str]| sum(&after, name, labels) - sum(&before, name, labels);
    let debit = "method=\"allot.v1.LedgerService/Debit\"";
    assert_eq!(
        moved("allot_rpc_requests_total", &[debit, "code=\"OK\""]),
        3.0
    );
    // The debit over the balance and the one of an unpriced type.
    assert_eq!(
        moved(
            "allot_rpc_requests_total",
            &[debit, "code=\"FAILED_PRECONDITION\""]
        ),
        2.0
    );
    assert_eq!(
        moved(
            "allot_rpc_requests_total",
            &[debit, "code=\"UNAUTHENTICATED\""]
        ),
        1.0
    );
    assert_eq!(moved("allot_rpc_duration_seconds_count", &[debit]), 6.0);
    assert_eq!(
        moved("allot_rpc_duration_seconds_bucket", &[debit, "le=\"+Inf\""]),
        6.0
    );
    assert_eq!(
        moved(
            "allot_debits_total",
            &["request_type=\"chat\"", "outcome=\"ok\""]
        ),
        3.0
    );
    assert_eq!(
        moved(
            "allot_debits_total",
            &["request_type=\"chat\"", "outcome=\"INSUFFICIENT_CREDITS\""]
        ),
        1.0,
        "{after:#?}"
    );
    assert_eq!(
        moved("allot_debits_total", &["request_type=\"other\""]),
        1.0,
        "an unpriced request type is counted as `other`"
    );
    assert!(
        !after
            .keys()
            .any(|series| series.contains("made-up-type-xyz")),
        "a refused request type made a series of its own"
    );
    assert_eq!(
        moved(
            "allot_holds_total",
            &[
                "action=\"reserve\"",
                "request_type=\"chat\"",
                "outcome=\"ok\""
            ]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "allot_holds_total",
            &["action=\"capture\"", "outcome=\"ok\""]
        ),
        1.0
    );
    // Grants, card publishing, debits and holds all went through ledger batches.
    assert!(
        moved("allot_ledger_batch_size_count", &[]) >= 7.0,
        "{after:#?}"
    );
    assert!(moved("allot_ledger_commit_seconds_count", &[]) >= 7.0);
    assert!(moved("allot_ledger_batches_total", &["outcome=\"committed\""]) >= 7.0);
    assert!(sum(&after, "allot_db_pool_max_connections", &["pool=\"main\""]) >= 1.0);
    assert!(
        after
            .keys()
            .any(|s| s.starts_with("allot_db_pool_connections{"))
    );
    let sweeper_lag = sum(
        &after,
        "allot_background_lag_seconds",
        &["task=\"sweeper\""],
    );
    assert!(
        after
            .keys()
            .any(|s| s.contains("allot_background_lag_seconds{task=\"sweeper\"}")),
        "{after:#?}"
    );
    assert!(
        sweeper_lag < 5.0,
        "the sweeper last swept {sweeper_lag}s ago"
    );
    assert!(after.contains_key("allot_ledger_queued_operations"));
    assert_eq!(sum(&after, "allot_health_serving", &[]), 1.0);

    // The access log: one line per call with method, code, request_id and caller; no token.
    let log = server.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("allot::access"))
        .collect();
    assert!(lines.len() >= 10, "{log}");
    for id in &ids {
        let line = lines
            .iter()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("no access-log line for {id}:\n{log}"));
        assert!(line.contains("allot.v1.LedgerService/Debit"), "{line}");
        assert!(
            line.contains("code=\"OK\"") || line.contains("code=OK"),
            "{line}"
        );
        assert!(line.contains("sub="), "{line}");
        assert!(line.contains("latency_ms="), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("UNAUTHENTICATED")), "{log}");
    for secret in [service.as_str(), server.admin.as_str(), SECRET] {
        assert!(!log.contains(secret), "the log holds a token or secret");
    }
    drop(server);
    db.drop_database().await;
}

// ---- traces ----------------------------------------------------------------------------------

mod otlp {
    //! An OTLP/gRPC trace receiver that keeps every span it is sent.
    pub use opentelemetry_proto::tonic::{
        collector::trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
        common::v1::any_value,
        trace::v1::Span,
    };
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    pub struct Receiver {
        pub spans: Arc<Mutex<Vec<Span>>>,
    }

    #[tonic::async_trait]
    impl TraceService for Receiver {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let mut spans = self.spans.lock().unwrap();
            for resource in request.into_inner().resource_spans {
                for scope in resource.scope_spans {
                    spans.extend(scope.spans);
                }
            }
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    /// A span's string attribute.
    pub fn attribute(span: &Span, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|value| match &value.value {
                Some(any_value::Value::StringValue(text)) => Some(text.clone()),
                Some(any_value::Value::IntValue(n)) => Some(n.to_string()),
                _ => None,
            })
    }
}

#[tokio::test]
async fn a_debit_span_reaches_the_otlp_receiver_with_its_request_id_and_callers_trace() {
    let receiver = otlp::Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_addr = listener.local_addr().unwrap();
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(otlp::TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let db = TestDatabase::create().await;
    let logs = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{receiver_addr}");
    let server = ServerProcess::try_start_with_env(
        "traced",
        &db.url,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "allot-under-test"),
        ],
        None,
        logs.path(),
    )
    .await
    .unwrap_or_else(|why| panic!("{why}"));
    publish_chat_card(&server).await;
    let account = funded(&server, "traced-co", "10").await;

    // The caller's W3C trace context: the Debit's span must join this trace.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let request_id = uuid();
    let mut request = Request::new(debit_request(&account.id, "chat", &request_id));
    request.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(format!("00-{trace_id}-{parent_id}-01")).unwrap(),
    );
    server.ledger().debit(request).await.expect("debit");
    // A caller that did not sample its trace: allot follows it and makes no span.
    let unsampled_id = uuid();
    let mut unsampled = Request::new(debit_request(&account.id, "chat", &unsampled_id));
    unsampled.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(format!(
            "00-5bf92f3577b34da6a3ce929d0e0e4737-{parent_id}-00"
        ))
        .unwrap(),
    );
    server.ledger().debit(unsampled).await.expect("debit");

    let deadline = Instant::now() + Duration::from_secs(20);
    let (rpc, commit) = loop {
        {
            let spans = receiver.spans.lock().unwrap();
            let rpc = spans
                .iter()
                .find(|s| otlp::attribute(s, "request_id").as_deref() == Some(&request_id))
                .cloned();
            let commit = spans
                .iter()
                .find(|s| {
                    s.name == "ledger.commit"
                        && otlp::attribute(s, "request_ids")
                            .is_some_and(|ids| ids.contains(&request_id))
                })
                .cloned();
            if let (Some(rpc), Some(commit)) = (rpc, commit) {
                break (rpc, commit);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no Debit span with request_id {request_id} and its commit arrived; got {:#?}\n{}",
            receiver.spans.lock().unwrap(),
            server.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Spans are exported every 100 ms here: by now the unsampled call's would have come too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !receiver.spans.lock().unwrap().iter().any(|s| {
            otlp::attribute(s, "request_id").as_deref() == Some(&unsampled_id)
                || otlp::attribute(s, "request_ids").is_some_and(|ids| ids.contains(&unsampled_id))
        }),
        "a call its caller did not sample was traced"
    );
    assert_eq!(rpc.name, "allot.v1.LedgerService/Debit");
    // A protocol allot does not speak is refused at start, not exported into the void.
    let refused = binary()
        .current_dir(logs.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .env("DATABASE_URL", &db.url)
        .env("ALLOT_JWT_HS256_SECRET", SECRET)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .output()
        .expect("run serve");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("OTLP/gRPC only"),
        "{stderr}"
    );
    assert_eq!(hex::encode(&rpc.trace_id), trace_id, "the caller's trace");
    assert_eq!(
        hex::encode(&rpc.parent_span_id),
        parent_id,
        "the caller's span"
    );
    assert_eq!(otlp::attribute(&rpc, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        otlp::attribute(&rpc, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    assert!(
        commit
            .links
            .iter()
            .any(|link| link.trace_id == rpc.trace_id && link.span_id == rpc.span_id),
        "the batch's span links the Debit's: {commit:#?}"
    );
    drop(server);
    serving.abort();
    db.drop_database().await;
}

// ---- TLS -------------------------------------------------------------------------------------

/// A CA and the PEM files of certificates it signs.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM) for `names`, for a server or a client.
    fn issue(&self, names: &[&str], client: bool) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    // Write then rename, as a secret volume's update does: never a half-written file.
    let partial = dir.join(format!(".{name}.partial"));
    std::fs::write(&partial, text).unwrap();
    std::fs::rename(&partial, &path).unwrap();
    path.to_str().unwrap().to_string()
}

/// A TLS channel to `addr` trusting `ca`, with a client certificate if given; the error
/// text if the handshake (or the health check over it) fails.
async fn tls_health(
    addr: &str,
    ca: &str,
    identity: Option<&(String, String)>,
) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let answer = HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .map_err(|s| format!("health: {s:?}"))?;
    assert_eq!(answer.get_ref().status, ServingStatus::Serving as i32);
    Ok(channel)
}

#[tokio::test]
async fn tls_serves_reloads_a_rotated_certificate_and_checks_client_certificates() {
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("allot test CA 1");
    let (cert, key) = ca.issue(&["localhost", "127.0.0.1"], false);
    let cert_file = write(dir.path(), "tls.crt", &cert);
    let key_file = write(dir.path(), "tls.key", &key);
    let client_ca = TestCa::new("allot client CA");
    let client_ca_file = write(dir.path(), "client-ca.crt", &client_ca.pem);
    let ca_file = write(dir.path(), "ca.crt", &ca.pem);
    let health_addr = format!("127.0.0.1:{}", free_port());

    // ---- server TLS, the health port, and a rotation under load
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.pem))
        .domain_name("localhost");
    let server = ServerProcess::try_start_with_env(
        "tls",
        &db.url,
        &[
            "--tls-cert",
            &cert_file,
            "--tls-key",
            &key_file,
            "--health-listen",
            &health_addr,
        ],
        &[],
        Some(tls),
        dir.path(),
    )
    .await
    .unwrap_or_else(|why| panic!("{why}"));
    publish_chat_card(&server).await;
    let account = funded(&server, "tls-co", "100").await;
    server
        .ledger()
        .debit(debit_request(&account.id, "chat", &uuid()))
        .await
        .expect("a debit over TLS");
    // Plaintext on the TLS port does not get an answer.
    let plaintext = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            HealthClient::new(channel).check(HealthCheckRequest::default()),
        )
        .await;
        assert!(
            !matches!(answer, Ok(Ok(_))),
            "plaintext answered on the TLS port"
        );
    }
    // The health port: plaintext, health only, with the liveness service.
    let health = Channel::from_shared(format!("http://{health_addr}"))
        .unwrap()
        .connect()
        .await
        .expect("health port");
    for service in ["", "liveness", "allot.v1.LedgerService"] {
        let answer = HealthClient::new(health.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("health {service:?}: {s:?}"))
            .into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let not_health = proto::ledger_service_client::LedgerServiceClient::with_interceptor(
        health.clone(),
        bearer(&server.admin),
    )
    .debit(debit_request(&account.id, "chat", &uuid()))
    .await
    .expect_err("the health port serves health alone");
    assert_eq!(not_health.code(), tonic::Code::Unimplemented);

    // The CLI and the bench over TLS, with --tls-ca.
    let https_url = format!(
        "https://localhost:{}",
        server.addr.rsplit(':').next().unwrap()
    );
    let output = binary()
        .args([
            "--server",
            &https_url,
            "--token",
            &server.admin,
            "accounts",
            "list",
            "--tls-ca",
            &ca_file,
            "--json",
        ])
        .output()
        .expect("run allot accounts list");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("tls-co"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let without_ca = binary()
        .args([
            "--server",
            &https_url,
            "--token",
            &server.admin,
            "accounts",
            "list",
        ])
        .output()
        .expect("run allot accounts list");
    assert!(
        !without_ca.status.success(),
        "a certificate from an unknown CA was trusted"
    );
    let bench = binary()
        .args([
            "bench",
            "--server",
            &https_url,
            "--token",
            &server.admin,
            "--tls-ca",
            &ca_file,
            "--wallets",
            "10",
            "--duration",
            "1s",
        ])
        .output()
        .expect("run allot bench");
    assert!(
        bench.status.success(),
        "bench over TLS failed:\n{}\n{}",
        String::from_utf8_lossy(&bench.stdout),
        String::from_utf8_lossy(&bench.stderr)
    );

    // Rotation: a new certificate from another CA replaces the files; new connections get it
    // without a restart, and a file that turns unusable keeps the last good certificate.
    let pid = server.pid();
    let ca2 = TestCa::new("allot test CA 2");
    let (cert2, key2) = ca2.issue(&["localhost", "127.0.0.1"], false);
    write(dir.path(), "tls.key", &key2);
    write(dir.path(), "tls.crt", &cert2);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match tls_health(&server.addr, &ca2.pem, None).await {
            Ok(_) => break,
            Err(why) => assert!(
                Instant::now() < deadline,
                "the rotated certificate was not served: {why}\n{}",
                server.log_tail(20)
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(server.pid(), pid);
    assert!(
        tls_health(&server.addr, &ca.pem, None).await.is_err(),
        "the old certificate is still served"
    );
    write(dir.path(), "tls.crt", "not a certificate");
    tokio::time::sleep(Duration::from_secs(3)).await;
    tls_health(&server.addr, &ca2.pem, None)
        .await
        .expect("the last good certificate is kept");
    assert!(server.log_text().contains("keeping the last good"));
    drop(server);

    // ---- mTLS: client certificates from the client CA only
    write(dir.path(), "tls.crt", &cert2);
    let mtls_addr = format!("127.0.0.1:{}", free_port());
    let mut mtls = binary()
        .args([
            "serve",
            "--listen",
            &mtls_addr,
            "--tls-cert",
            &cert_file,
            "--tls-key",
            &key_file,
            "--tls-client-ca",
            &client_ca_file,
        ])
        .env("DATABASE_URL", &db.url)
        .env("ALLOT_JWT_HS256_SECRET", SECRET)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let client = client_ca.issue(&["billing-backend"], true);
    let stranger = TestCa::new("someone else").issue(&["intruder"], true);
    let deadline = Instant::now() + Duration::from_secs(60);
    let result = loop {
        match tls_health(&mtls_addr, &ca2.pem, Some(&client)).await {
            Ok(channel) => break Ok(channel),
            Err(why) if Instant::now() > deadline => break Err(why),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let outcome = async {
        result.map_err(|why| format!("a client certificate from the client CA: {why}"))?;
        if tls_health(&mtls_addr, &ca2.pem, None).await.is_ok() {
            return Err("a client without a certificate was served".to_string());
        }
        if tls_health(&mtls_addr, &ca2.pem, Some(&stranger))
            .await
            .is_ok()
        {
            return Err("a client certificate from another CA was accepted".to_string());
        }
        Ok(())
    }
    .await;
    let _ = mtls.kill();
    let _ = mtls.wait();
    outcome.unwrap();
    db.drop_database().await;
}

// ---- migrations at start ---------------------------------------------------------------------

#[tokio::test]
async fn migrate_check_refuses_a_database_that_lacks_migrations() {
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    // An empty database: `--migrate check` names the fix and exits.
    let output = binary()
        .current_dir(dir.path())
        .args([
            "serve",
            "--migrate",
            "check",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .env("DATABASE_URL", &db.url)
        .env("ALLOT_JWT_HS256_SECRET", SECRET)
        .output()
        .expect("run serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("allot migrate"), "{stderr}");
    // After `allot migrate` it serves.
    let migrated = binary()
        .args(["migrate"])
        .env("DATABASE_URL", &db.url)
        .output()
        .expect("run migrate");
    assert!(migrated.status.success());
    let server =
        ServerProcess::start("checked", &db.url, &["--migrate", "check"], dir.path()).await;
    drop(server);

    // A newer release migrated further (a rollback, or old pods during a rolling upgrade):
    // this binary's `migrate`, `serve` and `serve --migrate check` all accept the schema.
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(
        &conn,
        "INSERT INTO seaql_migrations (version, applied_at) \
         VALUES ('m20991231_000001_from_a_newer_release', 0)",
    )
    .await
    .expect("record a newer migration");
    conn.close().await.unwrap();
    let again = binary()
        .args(["migrate"])
        .env("DATABASE_URL", &db.url)
        .output()
        .expect("run migrate");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    for mode in ["auto", "check"] {
        let server = ServerProcess::start("older", &db.url, &["--migrate", mode], dir.path()).await;
        drop(server);
    }
    db.drop_database().await;
}

// ---- the Helm chart's settings ---------------------------------------------------------------

/// Every `ALLOT_*` variable the chart's templates set is one `allot serve` (or `migrate`)
/// reads: a renamed flag cannot leave the chart setting a variable nobody reads.
#[test]
fn every_setting_the_chart_passes_is_one_the_binary_reads() {
    let help = |command: &str| {
        let output = binary().args([command, "--help"]).output().expect("help");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let read = format!("{}{}", help("serve"), help("migrate"));
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/allot/templates");
    let mut set = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&templates).expect("helm/allot/templates") {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for (at, _) in text.match_indices("name: ALLOT_") {
            let name: String = text[at + "name: ".len()..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            set.insert(name);
        }
    }
    assert!(set.len() >= 10, "found only {set:?} in the templates");
    let unread: Vec<_> = set
        .iter()
        .filter(|name| !read.contains(&format!("env: {name}")))
        .collect();
    assert!(
        unread.is_empty(),
        "the chart sets {unread:?}, which `allot serve` does not read"
    );
}

// ---- token keys ------------------------------------------------------------------------------

/// An admin token signed RS256 by the fixture key `pem`, naming `kid`.
fn rs256(kid: &str, pem: &str) -> String {
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(common::fixture(pem)).unwrap())
            .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &common::claims(&["admin"], &["*"]), &key).unwrap()
}

/// The fixture JWKS with only the key `kid`.
fn jwks_with(kid: &str) -> String {
    let all: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("jwks.json")).unwrap())
            .unwrap();
    let keys: Vec<_> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|key| key["kid"] == kid)
        .cloned()
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

#[tokio::test]
async fn a_rotated_jwks_is_used_without_a_restart() {
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let jwks = write(dir.path(), "jwks.json", &jwks_with("k1"));
    let server = ServerProcess::start("keys", &db.url, &["--jwt-jwks", &jwks], dir.path()).await;
    let answers = |token: String| {
        let channel = server.channel.clone();
        async move {
            proto::account_service_client::AccountServiceClient::with_interceptor(
                channel,
                bearer(&token),
            )
            .list_accounts(proto::ListAccountsRequest::default())
            .await
            .map(|_| ())
            .map_err(|status| status.code())
        }
    };
    let (old, new) = (
        rs256("k1", "rsa_private.pem"),
        rs256("k2", "rsa2_private.pem"),
    );
    assert_eq!(answers(old.clone()).await, Ok(()));
    assert_eq!(
        answers(new.clone()).await,
        Err(tonic::Code::Unauthenticated)
    );

    // The identity provider rotates: k2 in, k1 out.
    write(dir.path(), "jwks.json", &jwks_with("k2"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while answers(new.clone()).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the new key was not picked up:\n{}",
            server.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A token that verified before (and is remembered) is refused once its key is gone.
    assert_eq!(
        answers(old.clone()).await,
        Err(tonic::Code::Unauthenticated)
    );

    // A broken file keeps the keys in use.
    write(dir.path(), "jwks.json", "{ not json");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(answers(new).await, Ok(()));
    assert_eq!(answers(old).await, Err(tonic::Code::Unauthenticated));
    assert!(
        server.log_text().contains("keeping the keys in use"),
        "{}",
        server.log_tail(20)
    );
    drop(server);
    db.drop_database().await;
}
