//! Hostile bytes at the gRPC layer: messages that do not decode as the method's type are the
//! caller's bug — INVALID_ARGUMENT with reason `MALFORMED_MESSAGE`, never INTERNAL — and
//! change nothing.

mod common;

use allot::proto;
use common::*;
use tonic::{Code, codegen::http::uri::PathAndQuery};
use tonic_prost::ProstCodec;

/// What a confused or hostile client sends instead of a `DebitRequest`: field 1
/// (`account_id`, a string) as a varint, or as bytes that are not UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongWireType {
    #[prost(uint64, tag = "1")]
    account_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NotUtf8 {
    #[prost(bytes = "vec", tag = "1")]
    account_id: Vec<u8>,
    #[prost(string, tag = "3")]
    request_type: String,
}

/// Sends `message` to `/allot.v1.LedgerService/Debit` as if it were a `DebitRequest`.
async fn send<M: prost::Message + Send + Sync + 'static>(
    app: &TestApp,
    message: M,
) -> Result<proto::DebitResponse, tonic::Status> {
    let channel = tower::ServiceBuilder::new()
        .layer(tonic::service::interceptor::InterceptorLayer::new(bearer(
            &app.admin,
        )))
        .service(app.channel.clone());
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    grpc.unary(
        tonic::Request::new(message),
        PathAndQuery::from_static("/allot.v1.LedgerService/Debit"),
        ProstCodec::<M, proto::DebitResponse>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn undecodable_requests_are_invalid_argument_and_change_nothing() {
    let app = spawn_app().await;
    let (account, _) = app.funded("hostile", "100").await;
    app.publish_standard_card().await;
    let before = app.all_transactions(&account.id).await.len();

    let wrong = send(&app, WrongWireType { account_id: 7 })
        .await
        .expect_err("a varint where a string belongs");
    assert_error(&wrong, Code::InvalidArgument, "MALFORMED_MESSAGE");
    let invalid = send(
        &app,
        NotUtf8 {
            account_id: vec![0xff, 0xfe, 0x80],
            request_type: "chat".into(),
        },
    )
    .await
    .expect_err("a string that is not UTF-8");
    assert_error(&invalid, Code::InvalidArgument, "MALFORMED_MESSAGE");

    // A well-formed debit still works, and the refused ones wrote nothing.
    app.ledger(&app.admin)
        .debit(debit_request(&account.id, "chat", &uuid()))
        .await
        .expect("a valid debit");
    assert_eq!(app.all_transactions(&account.id).await.len(), before + 1);
    app.stop().await;
}

/// Found by tests/fuzz_grpc.rs: an error that quoted a huge input in full made the trailers
/// larger than the client's HTTP/2 header limit, and the client saw a broken connection
/// (COMPRESSION_ERROR, read as INTERNAL) instead of INVALID_ARGUMENT.
#[tokio::test]
async fn an_error_about_a_huge_input_is_short_and_the_connection_survives() {
    let app = spawn_app().await;
    let (account, _) = app.funded("huge", "100").await;
    app.publish_standard_card().await;
    let mut ledger = app.ledger(&app.admin);
    for huge in ["9".repeat(200_000), "é".repeat(100_000)] {
        let mut request = debit_request(&account.id, "one", &uuid());
        request.max_units = huge;
        let refused = ledger.debit(request).await.expect_err("not an amount");
        assert_error(&refused, Code::InvalidArgument, "INVALID_AMOUNT");
        assert!(
            refused.message().len() < 1200,
            "{}",
            refused.message().len()
        );
    }
    // The same connection still carries calls.
    ledger
        .debit(debit_request(&account.id, "one", &uuid()))
        .await
        .expect("a valid debit after the refusals");
    app.stop().await;
}
