//! Authentication, roles and account scope, end to end over gRPC against the real server.
//!
//! Every rejection is checked by code AND ErrorInfo reason: UNAUTHENTICATED with the
//! `TOKEN_*` reasons of `AuthError::reason()`, PERMISSION_DENIED with `ROLE_NOT_ALLOWED` or
//! `ACCOUNT_OUT_OF_SCOPE`, and NOT_FOUND only for global (`"*"`) callers.

mod common;

use allot::{
    auth::{AuthConfig, Claims},
    proto::{self, TransactionKind},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tonic::{Code, Status};

/// An account id that does not exist (well-formed, so it passes validation).
const GHOST_ACCOUNT: &str = "acct_0000000000000000000000000000dead";
/// A wallet id that does not exist.
const GHOST_WALLET: &str = "wal_0000000000000000000000000000dead";

// ---- tokens ---------------------------------------------------------------------------------

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("read fixture {name}: {e}"))
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&pem("rsa_private.pem")).expect("rsa key")
}

fn rsa2_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&pem("rsa2_private.pem")).expect("rsa2 key")
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&pem("ec_private.pem")).expect("ec key")
}

fn ed_key() -> EncodingKey {
    EncodingKey::from_ed_pem(&pem("ed_private.pem")).expect("ed key")
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Claims) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign token")
}

fn hs256(secret: &[u8], claims: &Claims) -> String {
    sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(secret),
        claims,
    )
}

fn b64_json(value: &impl serde::Serialize) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
}

/// Claims for every role on every account: what an attacker would like to forge.
fn admin_claims() -> Claims {
    claims(&["admin"], &["*"])
}

// ---- raw `authorization` header ---------------------------------------------------------------

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

// ---- fixtures -------------------------------------------------------------------------------

/// A (100 credits) with a sub-account A/child (50) and a grandchild A/child/grand (20);
/// a sibling B (100) with its own child B/child (10); the standard rate card.
struct World {
    a: proto::Account,
    a_wallet: proto::Wallet,
    child: proto::Account,
    child_wallet: proto::Wallet,
    grand: proto::Account,
    grand_wallet: proto::Wallet,
    b: proto::Account,
    b_wallet: proto::Wallet,
    b_child: proto::Account,
}

async fn funded_child(
    app: &TestApp,
    external_id: &str,
    parent_id: &str,
    amount: &str,
) -> (proto::Account, proto::Wallet) {
    let account = app.create_account(external_id, parent_id).await;
    assert_eq!(account.parent_id, parent_id);
    let wallet = app.create_wallet(&account.id, "credits", "").await;
    app.grant(&wallet.id, amount).await;
    (account, wallet)
}

async fn world(app: &TestApp) -> World {
    let (a, a_wallet) = app.funded("a", "100").await;
    let (child, child_wallet) = funded_child(app, "a-child", &a.id, "50").await;
    let (grand, grand_wallet) = funded_child(app, "a-grand", &child.id, "20").await;
    let (b, b_wallet) = app.funded("b", "100").await;
    let (b_child, _) = funded_child(app, "b-child", &b.id, "10").await;
    app.publish_standard_card().await;
    World {
        a,
        a_wallet,
        child,
        child_wallet,
        grand,
        grand_wallet,
        b,
        b_wallet,
        b_child,
    }
}

/// Balance and number of ledger entries of an account's credits wallet, read as admin.
async fn snapshot(app: &TestApp, account_id: &str) -> (proto::Balance, usize) {
    (
        app.balance(account_id).await,
        app.all_transactions(account_id).await.len(),
    )
}

async fn get_balance(
    app: &TestApp,
    token: &str,
    account_id: &str,
) -> Result<proto::Balance, Status> {
    app.ledger(token)
        .get_balance(proto::GetBalanceRequest {
            account_id: account_id.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn get_account(
    app: &TestApp,
    token: &str,
    account_id: &str,
) -> Result<proto::Account, Status> {
    app.accounts(token)
        .get_account(proto::GetAccountRequest {
            id: account_id.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn debit(
    app: &TestApp,
    token: &str,
    account_id: &str,
    request_type: &str,
) -> Result<proto::Transaction, Status> {
    app.ledger(token)
        .debit(debit_request(account_id, request_type, &uuid()))
        .await
        .map(|r| r.into_inner().transaction.expect("transaction"))
}

#[track_caller]
fn denied<T: std::fmt::Debug>(result: Result<T, Status>, reason: &str) {
    let status = result.expect_err("expected PERMISSION_DENIED");
    assert_error(&status, Code::PermissionDenied, reason);
}

#[track_caller]
fn not_found<T: std::fmt::Debug>(result: Result<T, Status>) {
    let status = result.expect_err("expected NOT_FOUND");
    assert_error(&status, Code::NotFound, "NOT_FOUND");
}

/// Calls one method of every service with `header` as the raw `authorization` value and
/// asserts each call is UNAUTHENTICATED with `reason`; then that nothing was written.
async fn assert_unauthenticated(app: &TestApp, header: Option<&str>, reason: &str) {
    let (account, wallet) = app.funded(&format!("target-{}", uuid()), "10").await;
    let before = snapshot(app, &account.id).await;
    let before_accounts = app.all_accounts(&app.admin).await.len();

    let auth = raw_bearer(header);
    let channel = app.channel.clone();
    let mut accounts = proto::account_service_client::AccountServiceClient::with_interceptor(
        channel.clone(),
        auth.clone(),
    );
    let mut grants = proto::grant_service_client::GrantServiceClient::with_interceptor(
        channel.clone(),
        auth.clone(),
    );
    let mut ledger = proto::ledger_service_client::LedgerServiceClient::with_interceptor(
        channel.clone(),
        auth.clone(),
    );
    let mut rates =
        proto::rate_card_service_client::RateCardServiceClient::with_interceptor(channel, auth);

    let results: Vec<(&str, Result<(), Status>)> = vec![
        (
            "GetAccount",
            accounts
                .get_account(proto::GetAccountRequest {
                    id: account.id.clone(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "ListAccounts",
            accounts
                .list_accounts(proto::ListAccountsRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "CreateAccount",
            accounts
                .create_account(proto::CreateAccountRequest {
                    account: Some(proto::Account {
                        external_id: format!("intruder-{}", uuid()),
                        ..Default::default()
                    }),
                    request_id: uuid(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "ListGrants",
            grants
                .list_grants(proto::ListGrantsRequest {
                    wallet_id: wallet.id.clone(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        (
            "GetBalance",
            ledger
                .get_balance(proto::GetBalanceRequest {
                    account_id: account.id.clone(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        (
            "Debit",
            ledger
                .debit(debit_request(&account.id, "image", &uuid()))
                .await
                .map(|_| ()),
        ),
        (
            "ListRateCards",
            rates
                .list_rate_cards(proto::ListRateCardsRequest::default())
                .await
                .map(|_| ()),
        ),
    ];
    for (method, result) in results {
        let status = result.expect_err(&format!("{method} with {header:?} must be rejected"));
        assert_error(&status, Code::Unauthenticated, reason);
    }

    assert_eq!(snapshot(app, &account.id).await, before, "nothing written");
    assert_eq!(
        app.all_accounts(&app.admin).await.len(),
        before_accounts,
        "no account created"
    );
}

fn ids(accounts: &[proto::Account]) -> std::collections::BTreeSet<String> {
    accounts.iter().map(|a| a.id.clone()).collect()
}

// ---- UNAUTHENTICATED ----------------------------------------------------------------------

#[tokio::test]
async fn missing_token_is_unauthenticated() {
    let app = spawn_app().await;
    assert_unauthenticated(&app, None, "TOKEN_MISSING").await;
    assert_unauthenticated(&app, Some(""), "TOKEN_MISSING").await;
    assert_unauthenticated(&app, Some("Bearer"), "TOKEN_MISSING").await;
    assert_unauthenticated(&app, Some("Bearer    "), "TOKEN_MISSING").await;

    // The harness's clients send no header for an empty token.
    let (account, _) = app.funded("nobody", "1").await;
    let status = get_balance(&app, "", &account.id).await.unwrap_err();
    assert_error(&status, Code::Unauthenticated, "TOKEN_MISSING");
    app.stop().await;
}

#[tokio::test]
async fn malformed_tokens_are_unauthenticated() {
    let app = spawn_app().await;
    for header in [
        "Bearer not.a.jwt",
        "Bearer random-text-that-is-no-token",
        "Bearer random text with spaces",
        "Bearer a.b",
        "Bearer a.b.c.d",
        "Bearer ...",
        // Header is base64url but not JSON.
        "Bearer aGVsbG8.e30.c2ln",
    ] {
        assert_unauthenticated(&app, Some(header), "TOKEN_MALFORMED").await;
    }
    // Wrong scheme: even a valid token is refused when not sent as Bearer.
    assert_unauthenticated(&app, Some("Basic xyz"), "TOKEN_MALFORMED").await;
    let valid = token(&["admin"], &["*"]);
    assert_unauthenticated(&app, Some(&format!("Basic {valid}")), "TOKEN_MALFORMED").await;
    // A bare token without a scheme.
    assert_unauthenticated(&app, Some(&valid), "TOKEN_MALFORMED").await;
    app.stop().await;
}

#[tokio::test]
async fn expired_token_is_unauthenticated() {
    let app = spawn_app().await;
    let mut expired = admin_claims();
    expired.exp = (now_seconds() - 3600) as u64;
    assert_unauthenticated(
        &app,
        Some(&bearer(&hs256(SECRET.as_bytes(), &expired))),
        "TOKEN_EXPIRED",
    )
    .await;
    assert_unauthenticated(
        &app,
        Some(&bearer(&sign(Algorithm::RS256, None, &rsa_key(), &expired))),
        "TOKEN_EXPIRED",
    )
    .await;
    assert_unauthenticated(
        &app,
        Some(&bearer(&sign(
            Algorithm::RS256,
            Some("k2"),
            &rsa2_key(),
            &expired,
        ))),
        "TOKEN_EXPIRED",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn wrongly_signed_tokens_are_unauthenticated() {
    let app = spawn_app().await;
    let claims = admin_claims();
    // HS256 with another secret.
    assert_unauthenticated(
        &app,
        Some(&bearer(&hs256(b"some-other-secret", &claims))),
        "TOKEN_BAD_SIGNATURE",
    )
    .await;
    // RS256 signed with rsa2 but claiming kid k1 (the rsa key), and the reverse.
    assert_unauthenticated(
        &app,
        Some(&bearer(&sign(
            Algorithm::RS256,
            Some("k1"),
            &rsa2_key(),
            &claims,
        ))),
        "TOKEN_BAD_SIGNATURE",
    )
    .await;
    assert_unauthenticated(
        &app,
        Some(&bearer(&sign(
            Algorithm::RS256,
            Some("k2"),
            &rsa_key(),
            &claims,
        ))),
        "TOKEN_BAD_SIGNATURE",
    )
    .await;
    // An RS256 signature presented under an ES256 header (checked with the EC key).
    let rs = sign(Algorithm::RS256, None, &rsa_key(), &claims);
    let (_, rest) = rs.split_once('.').expect("jwt");
    let es_header = b64_json(&serde_json::json!({"alg": "ES256", "typ": "JWT"}));
    assert_unauthenticated(
        &app,
        Some(&bearer(&format!("{es_header}.{rest}"))),
        "TOKEN_BAD_SIGNATURE",
    )
    .await;
    // A correctly signed low-privilege token whose payload was swapped for admin claims.
    let low = token(&["procurement"], &["acct_nothing"]);
    let mut parts = low.split('.');
    let (header, _, signature) = (
        parts.next().expect("header"),
        parts.next().expect("payload"),
        parts.next().expect("signature"),
    );
    let forged = format!("{header}.{}.{signature}", b64_json(&claims));
    assert_unauthenticated(&app, Some(&bearer(&forged)), "TOKEN_BAD_SIGNATURE").await;
    app.stop().await;
}

/// The server of this test trusts only the HS256 secret and rsa_public.pem (no JWKS), so a
/// token signed by rsa2 carries a signature no configured key verifies.
#[tokio::test]
async fn rs256_signed_by_an_unconfigured_key_is_unauthenticated() {
    let app = spawn_app_with(AuthConfig {
        hs256_secret: Some(SECRET.to_string()),
        public_key_files: vec![fixture("rsa_public.pem")],
        ..AuthConfig::default()
    })
    .await;
    let claims = admin_claims();
    assert_unauthenticated(
        &app,
        Some(&bearer(&sign(Algorithm::RS256, None, &rsa2_key(), &claims))),
        "TOKEN_BAD_SIGNATURE",
    )
    .await;
    // Without a JWKS, any kid is unknown.
    assert_unauthenticated(
        &app,
        Some(&bearer(&sign(
            Algorithm::RS256,
            Some("k1"),
            &rsa_key(),
            &claims,
        ))),
        "TOKEN_UNKNOWN_KEY",
    )
    .await;
    // Keys whose algorithm this server has no key for.
    assert_unauthenticated(
        &app,
        Some(&bearer(&sign(Algorithm::ES256, None, &ec_key(), &claims))),
        "TOKEN_ALG_NOT_ALLOWED",
    )
    .await;
    // The configured RSA key itself still works here.
    let (account, _) = app.funded("only-rsa", "5").await;
    let rs = sign(Algorithm::RS256, None, &rsa_key(), &claims);
    assert_eq!(
        get_balance(&app, &rs, &account.id).await.unwrap().posted,
        "5"
    );
    app.stop().await;
}

#[tokio::test]
async fn alg_none_is_unauthenticated() {
    let app = spawn_app().await;
    let payload = b64_json(&admin_claims());
    for alg in ["none", "None", "NONE"] {
        let header = b64_json(&serde_json::json!({"alg": alg, "typ": "JWT"}));
        assert_unauthenticated(
            &app,
            Some(&bearer(&format!("{header}.{payload}."))),
            "TOKEN_ALG_NOT_ALLOWED",
        )
        .await;
    }
    // Also with a kid naming a configured key, and with a leftover signature.
    let header = b64_json(&serde_json::json!({"alg": "none", "typ": "JWT", "kid": "k1"}));
    assert_unauthenticated(
        &app,
        Some(&bearer(&format!("{header}.{payload}."))),
        "TOKEN_ALG_NOT_ALLOWED",
    )
    .await;
    let real = token(&["admin"], &["*"]);
    let signature = real.rsplit('.').next().expect("signature");
    let header = b64_json(&serde_json::json!({"alg": "none", "typ": "JWT"}));
    assert_unauthenticated(
        &app,
        Some(&bearer(&format!("{header}.{payload}.{signature}"))),
        "TOKEN_ALG_NOT_ALLOWED",
    )
    .await;
    // Algorithms no key is pinned to.
    for alg in ["HS512", "RS512", "PS256", "ES384", "HS1"] {
        let header = b64_json(&serde_json::json!({"alg": alg, "typ": "JWT"}));
        assert_unauthenticated(
            &app,
            Some(&bearer(&format!("{header}.{payload}.c2ln"))),
            "TOKEN_ALG_NOT_ALLOWED",
        )
        .await;
    }
    app.stop().await;
}

/// HS256 token whose HMAC secret is the RSA public key's PEM text: RSA keys never verify
/// HMAC, so it is refused however it names a key.
#[tokio::test]
async fn hs_rs_key_confusion_is_unauthenticated() {
    let app = spawn_app().await;
    let public_pem = pem("rsa_public.pem");
    let claims = admin_claims();
    // No kid: the only HS256 key is the real secret, which does not verify it.
    assert_unauthenticated(
        &app,
        Some(&bearer(&hs256(&public_pem, &claims))),
        "TOKEN_BAD_SIGNATURE",
    )
    .await;
    // kid k1 (JWKS RSA key pinned to RS256): the algorithm is not allowed for that key.
    assert_unauthenticated(
        &app,
        Some(&bearer(&sign(
            Algorithm::HS256,
            Some("k1"),
            &EncodingKey::from_secret(&public_pem),
            &claims,
        ))),
        "TOKEN_ALG_NOT_ALLOWED",
    )
    .await;
    // Same with the PKCS#1 form of the key.
    assert_unauthenticated(
        &app,
        Some(&bearer(&hs256(&pem("rsa_public_pkcs1.pem"), &claims))),
        "TOKEN_BAD_SIGNATURE",
    )
    .await;
    app.stop().await;

    // A server with no HS256 secret at all: no key is pinned to HS256. (Its fixtures are
    // provisioned with an RS256 admin token, since the harness's admin token is HS256.)
    let mut app = spawn_app_with(AuthConfig {
        hs256_secret: None,
        ..auth_config()
    })
    .await;
    app.admin = sign(Algorithm::RS256, None, &rsa_key(), &admin_claims());
    assert_unauthenticated(
        &app,
        Some(&bearer(&hs256(&public_pem, &claims))),
        "TOKEN_ALG_NOT_ALLOWED",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn wrong_issuer_is_unauthenticated() {
    let app = spawn_app().await;
    let mut claims = admin_claims();
    claims.iss = "https://evil.example".into();
    assert_unauthenticated(
        &app,
        Some(&bearer(&hs256(SECRET.as_bytes(), &claims))),
        "TOKEN_WRONG_ISSUER",
    )
    .await;
    assert_unauthenticated(
        &app,
        Some(&bearer(&sign(Algorithm::EdDSA, None, &ed_key(), &claims))),
        "TOKEN_WRONG_ISSUER",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn wrong_audience_is_unauthenticated() {
    let app = spawn_app().await;
    let mut claims = admin_claims();
    claims.aud = "billing".into();
    assert_unauthenticated(
        &app,
        Some(&bearer(&hs256(SECRET.as_bytes(), &claims))),
        "TOKEN_WRONG_AUDIENCE",
    )
    .await;
    assert_unauthenticated(
        &app,
        Some(&bearer(&sign(Algorithm::ES256, None, &ec_key(), &claims))),
        "TOKEN_WRONG_AUDIENCE",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn unknown_kid_is_unauthenticated() {
    let app = spawn_app().await;
    let claims = admin_claims();
    for kid in ["k3", "K1", "", "k1 "] {
        assert_unauthenticated(
            &app,
            Some(&bearer(&sign(
                Algorithm::RS256,
                Some(kid),
                &rsa_key(),
                &claims,
            ))),
            "TOKEN_UNKNOWN_KEY",
        )
        .await;
    }
    // A kid is looked up in the JWKS only: the HS256 secret has no kid.
    assert_unauthenticated(
        &app,
        Some(&bearer(&sign(
            Algorithm::HS256,
            Some("hs"),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            &claims,
        ))),
        "TOKEN_UNKNOWN_KEY",
    )
    .await;
    app.stop().await;
}

/// Signature fine, claims unacceptable: TOKEN_INVALID.
#[tokio::test]
async fn tokens_with_unacceptable_claims_are_unauthenticated() {
    let app = spawn_app().await;
    let base = serde_json::to_value(admin_claims()).expect("claims");
    let sign_json = |value: &serde_json::Value| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            value,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("sign")
    };
    let mut cases: Vec<(String, serde_json::Value)> = Vec::new();
    for claim in ["exp", "sub", "iss", "aud"] {
        let mut c = base.clone();
        c.as_object_mut().expect("object").remove(claim);
        cases.push((format!("without {claim}"), c));
    }
    let mut c = base.clone();
    c["sub"] = serde_json::json!("");
    cases.push(("empty sub".into(), c));
    let mut c = base.clone();
    c["nbf"] = serde_json::json!(now_seconds() + 3600);
    cases.push(("nbf in the future".into(), c));
    let mut c = base.clone();
    c["roles"] = serde_json::json!("admin");
    cases.push(("roles not an array".into(), c));
    let mut c = base.clone();
    c["accounts"] = serde_json::json!("*");
    cases.push(("accounts not an array".into(), c));
    for (case, claims) in cases {
        let header = bearer(&sign_json(&claims));
        let mut client = proto::ledger_service_client::LedgerServiceClient::with_interceptor(
            app.channel.clone(),
            raw_bearer(Some(&header)),
        );
        let status = client
            .get_balance(proto::GetBalanceRequest {
                account_id: GHOST_ACCOUNT.into(),
                ..Default::default()
            })
            .await
            .expect_err(&case);
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        assert_error(&status, Code::Unauthenticated, "TOKEN_INVALID");
    }
    // The unmodified claims are fine (the global admin sees NOT_FOUND for the ghost).
    let status = get_balance(&app, &sign_json(&base), GHOST_ACCOUNT)
        .await
        .unwrap_err();
    assert_error(&status, Code::NotFound, "NOT_FOUND");
    app.stop().await;
}

// ---- accepted tokens ------------------------------------------------------------------------

/// A service token for account A, signed some way, reads and debits A; the debit records
/// the token's `sub` as actor.
async fn assert_token_works(app: &TestApp, token: &str, sub: &str, account: &proto::Account) {
    let got = get_account(app, token, &account.id)
        .await
        .unwrap_or_else(|s| panic!("{sub}: GetAccount: {s:?}"));
    assert_eq!(got.id, account.id);
    let before = get_balance(app, token, &account.id)
        .await
        .unwrap_or_else(|s| panic!("{sub}: GetBalance: {s:?}"));
    let txn = debit(app, token, &account.id, "one")
        .await
        .unwrap_or_else(|s| panic!("{sub}: Debit: {s:?}"));
    assert_eq!(txn.kind, TransactionKind::Debit as i32);
    assert_eq!(txn.actor, sub);
    let after = get_balance(app, token, &account.id).await.unwrap();
    let (b, a): (rust_decimal::Decimal, rust_decimal::Decimal) = (
        before.posted.parse().unwrap(),
        after.posted.parse().unwrap(),
    );
    assert_eq!(b - a, rust_decimal::Decimal::ONE, "{sub}");
}

fn service_claims(sub: &str, account_id: &str) -> Claims {
    let mut c = claims(&["service"], &[account_id]);
    c.sub = sub.into();
    c
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_are_accepted() {
    let app = spawn_app().await;
    let (account, _) = app.funded("keys", "100").await;
    app.publish_standard_card().await;

    let rs = sign(
        Algorithm::RS256,
        None,
        &rsa_key(),
        &service_claims("rsa-caller", &account.id),
    );
    assert_token_works(&app, &rs, "rsa-caller", &account).await;
    let es = sign(
        Algorithm::ES256,
        None,
        &ec_key(),
        &service_claims("ec-caller", &account.id),
    );
    assert_token_works(&app, &es, "ec-caller", &account).await;
    let ed = sign(
        Algorithm::EdDSA,
        None,
        &ed_key(),
        &service_claims("ed-caller", &account.id),
    );
    assert_token_works(&app, &ed, "ed-caller", &account).await;
    let hs = hs256(SECRET.as_bytes(), &service_claims("hs-caller", &account.id));
    assert_token_works(&app, &hs, "hs-caller", &account).await;
    assert_eq!(app.balance(&account.id).await.posted, "96");
    app.stop().await;
}

/// Key rotation: kid k1 (rsa) and kid k2 (rsa2) are both valid at the same time.
#[tokio::test]
async fn jwks_kids_are_valid_side_by_side() {
    let app = spawn_app().await;
    let (account, _) = app.funded("rotation", "100").await;
    app.publish_standard_card().await;
    let old = sign(
        Algorithm::RS256,
        Some("k1"),
        &rsa_key(),
        &service_claims("old-key", &account.id),
    );
    let new = sign(
        Algorithm::RS256,
        Some("k2"),
        &rsa2_key(),
        &service_claims("new-key", &account.id),
    );
    assert_token_works(&app, &old, "old-key", &account).await;
    assert_token_works(&app, &new, "new-key", &account).await;
    assert_token_works(&app, &old, "old-key", &account).await;
    assert_eq!(app.balance(&account.id).await.posted, "97");
    app.stop().await;
}

/// Without a `kid`, every configured key is a candidate (src/auth.rs "Key selection"), so a
/// token signed by the JWKS key k2 is accepted even without naming it. Pinned here so that
/// a change of that rule is deliberate.
#[tokio::test]
async fn token_without_kid_may_be_verified_by_a_jwks_key() {
    let app = spawn_app().await;
    let (account, _) = app.funded("no-kid", "10").await;
    app.publish_standard_card().await;
    let t = sign(
        Algorithm::RS256,
        None,
        &rsa2_key(),
        &service_claims("rsa2-no-kid", &account.id),
    );
    assert_token_works(&app, &t, "rsa2-no-kid", &account).await;
    app.stop().await;
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    let (account, _) = app.funded("scheme", "10").await;
    let t = token(&["procurement"], &[&account.id]);
    for header in [
        format!("bearer {t}"),
        format!("BEARER {t}"),
        format!("Bearer   {t}"),
    ] {
        let mut client = proto::ledger_service_client::LedgerServiceClient::with_interceptor(
            app.channel.clone(),
            raw_bearer(Some(&header)),
        );
        let balance = client
            .get_balance(proto::GetBalanceRequest {
                account_id: account.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("{header}: {s:?}"))
            .into_inner();
        assert_eq!(balance.posted, "10");
    }
    app.stop().await;
}

// ---- roles ----------------------------------------------------------------------------------

#[tokio::test]
async fn procurement_reads_but_cannot_debit() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let t = token(&["procurement"], &[&w.a.id]);
    let before = snapshot(&app, &w.a.id).await;

    let status = debit(&app, &t, &w.a.id, "one").await.unwrap_err();
    let meta = assert_error(&status, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    assert_eq!(meta.get("method").map(String::as_str), Some("Debit"));
    assert_eq!(snapshot(&app, &w.a.id).await, before);

    assert_eq!(get_balance(&app, &t, &w.a.id).await.unwrap().posted, "100");
    assert_eq!(get_account(&app, &t, &w.a.id).await.unwrap().id, w.a.id);
    let txns = app
        .ledger(&t)
        .list_transactions(proto::ListTransactionsRequest {
            account_id: w.a.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .transactions;
    assert_eq!(txns.len(), 1);
    let quote = app
        .rates(&t)
        .quote_price(proto::QuotePriceRequest {
            account_id: w.a.id.clone(),
            request_type: "image".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(quote.units, "4");

    // Read-only: no provisioning either.
    denied(
        app.grants(&t)
            .create_grant(proto::CreateGrantRequest {
                grant: Some(grant_for(&w.a_wallet.id, "1000")),
                request_id: uuid(),
            })
            .await,
        "ROLE_NOT_ALLOWED",
    );
    assert_eq!(snapshot(&app, &w.a.id).await, before);
    app.stop().await;
}

fn grant_for(wallet_id: &str, amount: &str) -> proto::Grant {
    proto::Grant {
        wallet_id: wallet_id.into(),
        kind: proto::GrantKind::Contract as i32,
        amount: amount.into(),
        unit_price: "0.01".into(),
        currency: "USD".into(),
        ..Default::default()
    }
}

fn draft_card() -> proto::CreateRateCardRequest {
    card_request(vec![rate("one", "2", &[], "")], "draft")
}

#[tokio::test]
async fn service_cannot_provision_or_write_rate_cards() {
    let app = spawn_app().await;
    let w = world(&app).await;
    // Global scope, so the role is the only reason to refuse.
    let t = token(&["service"], &["*"]);
    let accounts_before = app.all_accounts(&app.admin).await.len();
    let before = snapshot(&app, &w.a.id).await;

    denied(
        app.accounts(&t)
            .create_account(new_account("svc-new", ""))
            .await,
        "ROLE_NOT_ALLOWED",
    );
    denied(
        app.accounts(&t)
            .create_account(new_account("svc-new-child", &w.a.id))
            .await,
        "ROLE_NOT_ALLOWED",
    );
    denied(
        app.accounts(&t)
            .create_wallet(proto::CreateWalletRequest {
                wallet: Some(proto::Wallet {
                    account_id: w.a.id.clone(),
                    unit: "message_units".into(),
                    ..Default::default()
                }),
                request_id: uuid(),
            })
            .await,
        "ROLE_NOT_ALLOWED",
    );
    denied(
        app.grants(&t)
            .create_grant(proto::CreateGrantRequest {
                grant: Some(grant_for(&w.a_wallet.id, "1000")),
                request_id: uuid(),
            })
            .await,
        "ROLE_NOT_ALLOWED",
    );
    let status = app
        .rates(&t)
        .create_rate_card(draft_card())
        .await
        .unwrap_err();
    let meta = assert_error(&status, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    assert_eq!(
        meta.get("method").map(String::as_str),
        Some("CreateRateCard")
    );

    assert_eq!(app.all_accounts(&app.admin).await.len(), accounts_before);
    assert_eq!(snapshot(&app, &w.a.id).await, before);
    let cards = app
        .rates(&app.admin)
        .list_rate_cards(proto::ListRateCardsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .rate_cards;
    assert_eq!(cards.len(), 1, "no draft was created");

    // What service may do.
    debit(&app, &t, &w.a.id, "one").await.unwrap();
    assert_eq!(get_balance(&app, &t, &w.a.id).await.unwrap().posted, "99");
    app.stop().await;
}

#[tokio::test]
async fn account_manager_cannot_debit_or_publish() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let t = token(&["account_manager"], &["*"]);
    let before = snapshot(&app, &w.a.id).await;

    let status = debit(&app, &t, &w.a.id, "one").await.unwrap_err();
    assert_error(&status, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    assert_eq!(snapshot(&app, &w.a.id).await, before);

    let draft = app
        .rates(&app.admin)
        .create_rate_card(draft_card())
        .await
        .unwrap()
        .into_inner();
    let status = app
        .rates(&t)
        .publish_rate_card(publish_request(&draft))
        .await
        .unwrap_err();
    let meta = assert_error(&status, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    assert_eq!(
        meta.get("method").map(String::as_str),
        Some("PublishRateCard")
    );
    denied(
        app.rates(&t).create_rate_card(draft_card()).await,
        "ROLE_NOT_ALLOWED",
    );
    // The draft is still a draft: the card in force is the standard one.
    let card = app
        .rates(&app.admin)
        .get_rate_card(proto::GetRateCardRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_ne!(card.version, draft.version);

    // What account managers may do.
    let created = app
        .accounts(&t)
        .create_account(new_account("am-new", ""))
        .await
        .unwrap()
        .into_inner();
    let wallet = app
        .accounts(&t)
        .create_wallet(wallet_request(&created.id))
        .await
        .unwrap()
        .into_inner();
    app.grants(&t)
        .create_grant(proto::CreateGrantRequest {
            grant: Some(grant_for(&wallet.id, "25")),
            request_id: uuid(),
        })
        .await
        .unwrap();
    assert_eq!(
        get_balance(&app, &t, &created.id).await.unwrap().posted,
        "25"
    );
    app.stop().await;
}

#[tokio::test]
async fn operator_manages_rate_cards_but_not_wallets() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let t = token(&["operator"], &["*"]);
    let mut rates = app.rates(&t);
    let draft = rates
        .create_rate_card(draft_card())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(draft.state, proto::RateCardState::Draft as i32);
    let published = rates
        .publish_rate_card(publish_request(&draft))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(published.state, proto::RateCardState::Published as i32);
    // Operators see the routes behind prices.
    let card = rates
        .get_rate_card(proto::GetRateCardRequest {
            version: published.version,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(card.rates[0].route, "provider/model-a");

    let before = snapshot(&app, &w.a.id).await;
    let status = debit(&app, &t, &w.a.id, "one").await.unwrap_err();
    assert_error(&status, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    denied(
        app.accounts(&t)
            .create_account(new_account("op-new", ""))
            .await,
        "ROLE_NOT_ALLOWED",
    );
    denied(
        app.grants(&t)
            .create_grant(proto::CreateGrantRequest {
                grant: Some(grant_for(&w.a_wallet.id, "1000")),
                request_id: uuid(),
            })
            .await,
        "ROLE_NOT_ALLOWED",
    );
    assert_eq!(snapshot(&app, &w.a.id).await, before);
    app.stop().await;
}

/// One call of every RPC with `token`, each otherwise valid for an admin. Returns the
/// method name and the outcome.
async fn call_every_method(
    app: &TestApp,
    token: &str,
    w: &World,
) -> Vec<(&'static str, Result<(), Status>)> {
    let mut accounts = app.accounts(token);
    let mut grants = app.grants(token);
    let mut ledger = app.ledger(token);
    let mut rates = app.rates(token);
    let mut out: Vec<(&'static str, Result<(), Status>)> = Vec::new();

    out.push((
        "CreateAccount",
        accounts
            .create_account(new_account(&format!("every-{}", uuid()), &w.a.id))
            .await
            .map(|_| ()),
    ));
    out.push((
        "GetAccount",
        accounts
            .get_account(proto::GetAccountRequest { id: w.a.id.clone() })
            .await
            .map(|_| ()),
    ));
    out.push((
        "ListAccounts",
        accounts
            .list_accounts(proto::ListAccountsRequest::default())
            .await
            .map(|_| ()),
    ));
    out.push((
        "UpdateAccount",
        accounts
            .update_account(proto::UpdateAccountRequest {
                account: Some(proto::Account {
                    id: w.a.id.clone(),
                    display_name: "Renamed".into(),
                    ..Default::default()
                }),
                update_mask: None,
                request_id: uuid(),
            })
            .await
            .map(|_| ()),
    ));
    out.push((
        "CreateWallet",
        accounts
            .create_wallet(proto::CreateWalletRequest {
                wallet: Some(proto::Wallet {
                    account_id: w.a.id.clone(),
                    unit: format!("units-{}", uuid()),
                    ..Default::default()
                }),
                request_id: uuid(),
            })
            .await
            .map(|_| ()),
    ));
    out.push((
        "GetWallet",
        accounts
            .get_wallet(proto::GetWalletRequest {
                id: w.a_wallet.id.clone(),
            })
            .await
            .map(|_| ()),
    ));
    out.push((
        "ListWallets",
        accounts
            .list_wallets(proto::ListWalletsRequest {
                account_id: w.a.id.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    ));
    out.push((
        "CreateGrant",
        grants
            .create_grant(proto::CreateGrantRequest {
                grant: Some(grant_for(&w.a_wallet.id, "5")),
                request_id: uuid(),
            })
            .await
            .map(|_| ()),
    ));
    out.push((
        "ListGrants",
        grants
            .list_grants(proto::ListGrantsRequest {
                wallet_id: w.a_wallet.id.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    ));
    out.push((
        "Debit",
        ledger
            .debit(debit_request(&w.a.id, "one", &uuid()))
            .await
            .map(|_| ()),
    ));
    out.push((
        "GetBalance",
        ledger
            .get_balance(proto::GetBalanceRequest {
                account_id: w.a.id.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    ));
    out.push((
        "ListTransactions",
        ledger
            .list_transactions(proto::ListTransactionsRequest {
                account_id: w.a.id.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    ));
    let created = rates.create_rate_card(draft_card()).await;
    let (version, etag) = match &created {
        Ok(card) => (card.get_ref().version, card.get_ref().etag.clone()),
        Err(_) => (1, "etag".to_string()),
    };
    out.push(("CreateRateCard", created.map(|_| ())));
    out.push((
        "PublishRateCard",
        rates
            .publish_rate_card(proto::PublishRateCardRequest {
                version,
                etag,
                effective_time: None,
                request_id: uuid(),
            })
            .await
            .map(|_| ()),
    ));
    out.push((
        "GetRateCard",
        rates
            .get_rate_card(proto::GetRateCardRequest::default())
            .await
            .map(|_| ()),
    ));
    out.push((
        "ListRateCards",
        rates
            .list_rate_cards(proto::ListRateCardsRequest::default())
            .await
            .map(|_| ()),
    ));
    out.push((
        "QuotePrice",
        rates
            .quote_price(proto::QuotePriceRequest {
                account_id: w.a.id.clone(),
                request_type: "one".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    ));
    out
}

const EVERY_METHOD: usize = 17;

#[tokio::test]
async fn admin_can_call_every_method() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let results = call_every_method(&app, &app.admin, &w).await;
    assert_eq!(results.len(), EVERY_METHOD);
    for (method, result) in results {
        if let Err(status) = result {
            panic!("admin {method}: {status:?}");
        }
    }
    // A scoped admin is still bound by scope, but has every role inside it — except for
    // rate cards, which price every tenant and need a token for all accounts.
    let scoped_admin = token(&["admin"], &[&w.a.id]);
    for (method, result) in call_every_method(&app, &scoped_admin, &w).await {
        match (method, result) {
            ("CreateRateCard" | "PublishRateCard", Err(status)) => {
                assert_error(&status, Code::PermissionDenied, "GLOBAL_SCOPE_REQUIRED");
            }
            ("CreateRateCard" | "PublishRateCard", Ok(())) => {
                panic!("scoped admin {method}: a scoped token changed prices for everyone")
            }
            (_, Err(status)) => panic!("scoped admin {method}: {status:?}"),
            (_, Ok(())) => {}
        }
    }
    denied(
        debit(&app, &scoped_admin, &w.b.id, "one").await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    app.stop().await;
}

#[tokio::test]
async fn token_without_roles_can_do_nothing() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let before = snapshot(&app, &w.a.id).await;
    let accounts_before = app.all_accounts(&app.admin).await;
    let no_roles = token(&[], &["*"]);
    // Unknown and differently-cased role names are ignored, not mapped.
    let unknown_roles = token(&["superuser", "ADMIN", "Service", "root", "*"], &["*"]);
    for t in [&no_roles, &unknown_roles] {
        let results = call_every_method(&app, t, &w).await;
        assert_eq!(results.len(), EVERY_METHOD);
        for (method, result) in results {
            let status = result.expect_err(method);
            let meta = assert_error(&status, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
            assert_eq!(meta.get("method").map(String::as_str), Some(method));
        }
    }
    assert_eq!(snapshot(&app, &w.a.id).await, before);
    assert_eq!(app.all_accounts(&app.admin).await, accounts_before);
    app.stop().await;
}

// ---- scope ----------------------------------------------------------------------------------

#[tokio::test]
async fn service_scope_covers_the_account_and_its_descendants_only() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let t = token(&["service"], &[&w.a.id]);

    // A and every descendant.
    let txn = debit(&app, &t, &w.a.id, "one").await.unwrap();
    assert_eq!(txn.wallet_id, w.a_wallet.id);
    let txn = debit(&app, &t, &w.child.id, "one").await.unwrap();
    assert_eq!(txn.wallet_id, w.child_wallet.id);
    let txn = debit(&app, &t, &w.grand.id, "one").await.unwrap();
    assert_eq!(txn.wallet_id, w.grand_wallet.id);
    assert_eq!(app.balance(&w.a.id).await.posted, "99");
    assert_eq!(app.balance(&w.child.id).await.posted, "49");
    assert_eq!(app.balance(&w.grand.id).await.posted, "19");

    // Sibling B and B's child: refused, untouched.
    for target in [&w.b, &w.b_child] {
        let before = snapshot(&app, &target.id).await;
        let status = debit(&app, &t, &target.id, "one").await.unwrap_err();
        let meta = assert_error(&status, Code::PermissionDenied, "ACCOUNT_OUT_OF_SCOPE");
        assert_eq!(meta.get("id"), Some(&target.id));
        denied(
            get_balance(&app, &t, &target.id).await,
            "ACCOUNT_OUT_OF_SCOPE",
        );
        denied(
            get_account(&app, &t, &target.id).await,
            "ACCOUNT_OUT_OF_SCOPE",
        );
        assert_eq!(snapshot(&app, &target.id).await, before);
    }
    assert_eq!(app.balance(&w.b.id).await.posted, "100");

    // Scope goes down, never up: a token for the child cannot touch A.
    let child_token = token(&["service"], &[&w.child.id]);
    debit(&app, &child_token, &w.grand.id, "one").await.unwrap();
    let before = snapshot(&app, &w.a.id).await;
    denied(
        debit(&app, &child_token, &w.a.id, "one").await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    denied(
        get_balance(&app, &child_token, &w.a.id).await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    assert_eq!(snapshot(&app, &w.a.id).await, before);

    // A token listing several accounts covers each of them.
    let both = token(&["service"], &[&w.grand.id, &w.b.id]);
    debit(&app, &both, &w.grand.id, "one").await.unwrap();
    debit(&app, &both, &w.b_child.id, "one").await.unwrap();
    denied(
        debit(&app, &both, &w.child.id, "one").await,
        "ACCOUNT_OUT_OF_SCOPE",
    );

    // A token with no accounts covers none.
    let nothing = token(&["service"], &[]);
    denied(
        debit(&app, &nothing, &w.a.id, "one").await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    app.stop().await;
}

#[tokio::test]
async fn scope_is_checked_before_existence() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let scoped = token(&["service"], &[&w.a.id]);
    let global = token(&["service"], &["*"]);

    denied(
        debit(&app, &scoped, GHOST_ACCOUNT, "one").await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    denied(
        get_balance(&app, &scoped, GHOST_ACCOUNT).await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    denied(
        get_account(&app, &scoped, GHOST_ACCOUNT).await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    denied(
        app.accounts(&scoped)
            .list_wallets(proto::ListWalletsRequest {
                account_id: GHOST_ACCOUNT.into(),
                ..Default::default()
            })
            .await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    denied(
        app.accounts(&scoped)
            .get_wallet(proto::GetWalletRequest {
                id: GHOST_WALLET.into(),
            })
            .await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    denied(
        app.grants(&scoped)
            .list_grants(proto::ListGrantsRequest {
                wallet_id: GHOST_WALLET.into(),
                ..Default::default()
            })
            .await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    // A token that lists the id itself is inside scope: it learns nothing new from NOT_FOUND.
    let ghost_scoped = token(&["service"], &[GHOST_ACCOUNT]);
    not_found(get_balance(&app, &ghost_scoped, GHOST_ACCOUNT).await);

    not_found(debit(&app, &global, GHOST_ACCOUNT, "one").await);
    not_found(get_balance(&app, &global, GHOST_ACCOUNT).await);
    not_found(get_account(&app, &global, GHOST_ACCOUNT).await);
    not_found(
        app.accounts(&global)
            .list_wallets(proto::ListWalletsRequest {
                account_id: GHOST_ACCOUNT.into(),
                ..Default::default()
            })
            .await,
    );
    not_found(
        app.accounts(&global)
            .get_wallet(proto::GetWalletRequest {
                id: GHOST_WALLET.into(),
            })
            .await,
    );
    not_found(
        app.grants(&global)
            .list_grants(proto::ListGrantsRequest {
                wallet_id: GHOST_WALLET.into(),
                ..Default::default()
            })
            .await,
    );
    app.stop().await;
}

#[tokio::test]
async fn external_id_follows_the_same_scope_rules() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let scoped = token(&["service"], &[&w.a.id]);
    let global = token(&["service"], &["*"]);
    let by_external = |external_id: &str| proto::DebitRequest {
        external_id: external_id.into(),
        request_type: "one".into(),
        request_id: uuid(),
        ..Default::default()
    };
    let balance_by_external = |external_id: &str| proto::GetBalanceRequest {
        external_id: external_id.into(),
        ..Default::default()
    };

    // In scope: A and its descendants by external_id.
    let txn = app
        .ledger(&scoped)
        .debit(by_external("a"))
        .await
        .unwrap()
        .into_inner()
        .transaction
        .unwrap();
    assert_eq!(txn.wallet_id, w.a_wallet.id);
    let txn = app
        .ledger(&scoped)
        .debit(by_external("a-grand"))
        .await
        .unwrap()
        .into_inner()
        .transaction
        .unwrap();
    assert_eq!(txn.wallet_id, w.grand_wallet.id);
    let balance = app
        .ledger(&scoped)
        .get_balance(balance_by_external("a-child"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(balance.wallet_id, w.child_wallet.id);

    // Sibling by external_id: refused, untouched.
    let before = snapshot(&app, &w.b.id).await;
    denied(
        app.ledger(&scoped).debit(by_external("b")).await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    denied(
        app.ledger(&scoped)
            .get_balance(balance_by_external("b"))
            .await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    denied(
        app.rates(&scoped)
            .quote_price(proto::QuotePriceRequest {
                external_id: "b-child".into(),
                request_type: "one".into(),
                ..Default::default()
            })
            .await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    assert_eq!(snapshot(&app, &w.b.id).await, before);

    // Nonexistent external_id: scoped → PERMISSION_DENIED, global → NOT_FOUND.
    denied(
        app.ledger(&scoped).debit(by_external("nobody")).await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    denied(
        app.ledger(&scoped)
            .get_balance(balance_by_external("nobody"))
            .await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    not_found(app.ledger(&global).debit(by_external("nobody")).await);
    not_found(
        app.ledger(&global)
            .get_balance(balance_by_external("nobody"))
            .await,
    );
    // Scope lists account ids, not external ids: a token for "a" covers nothing.
    let by_name = token(&["service"], &["a"]);
    denied(
        app.ledger(&by_name).debit(by_external("a")).await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    // The global token reaches B by external_id.
    app.ledger(&global).debit(by_external("b")).await.unwrap();
    assert_eq!(app.balance(&w.b.id).await.posted, "99");
    app.stop().await;
}

#[tokio::test]
async fn list_accounts_returns_only_the_scope() {
    let app = spawn_app().await;
    let w = world(&app).await;

    let a_scope = app.all_accounts(&token(&["procurement"], &[&w.a.id])).await;
    assert_eq!(
        ids(&a_scope),
        ids(&[w.a.clone(), w.child.clone(), w.grand.clone()])
    );
    let child_scope = app.all_accounts(&token(&["service"], &[&w.child.id])).await;
    assert_eq!(ids(&child_scope), ids(&[w.child.clone(), w.grand.clone()]));
    let two = app
        .all_accounts(&token(&["service"], &[&w.grand.id, &w.b.id]))
        .await;
    assert_eq!(
        ids(&two),
        ids(&[w.grand.clone(), w.b.clone(), w.b_child.clone()])
    );
    let everything = app.all_accounts(&token(&["service"], &["*"])).await;
    assert_eq!(everything.len(), 5);

    // Filtering by a parent outside the scope reveals nothing.
    let b_children = app
        .accounts(&token(&["service"], &[&w.a.id]))
        .list_accounts(proto::ListAccountsRequest {
            parent_id: w.b.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .accounts;
    assert!(b_children.is_empty(), "{b_children:?}");

    // Small pages still stay inside the scope.
    let mut client = app.accounts(&token(&["service"], &[&w.a.id]));
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_accounts(proto::ListAccountsRequest {
                page_size: 1,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.accounts.len() <= 1);
        seen.extend(page.accounts);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(ids(&seen), ids(&a_scope));

    // No accounts, or LIKE wildcards posing as ids: nothing.
    let none = app.all_accounts(&token(&["service"], &[])).await;
    assert!(none.is_empty(), "{none:?}");
    let wildcards = app
        .all_accounts(&token(&["service"], &["%", "_", "acct_%", "acct\\_%"]))
        .await;
    assert!(wildcards.is_empty(), "{wildcards:?}");
    app.stop().await;
}

#[tokio::test]
async fn wallets_and_grants_outside_the_scope_are_denied() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let t = token(&["service"], &[&w.a.id]);
    let mut accounts = app.accounts(&t);

    // Own and descendant wallets are readable.
    let own = accounts
        .get_wallet(proto::GetWalletRequest {
            id: w.a_wallet.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.account_id, w.a.id);
    accounts
        .get_wallet(proto::GetWalletRequest {
            id: w.grand_wallet.id.clone(),
        })
        .await
        .unwrap();

    denied(
        accounts
            .get_wallet(proto::GetWalletRequest {
                id: w.b_wallet.id.clone(),
            })
            .await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    denied(
        accounts
            .list_wallets(proto::ListWalletsRequest {
                account_id: w.b.id.clone(),
                ..Default::default()
            })
            .await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    denied(
        app.grants(&t)
            .list_grants(proto::ListGrantsRequest {
                wallet_id: w.b_wallet.id.clone(),
                ..Default::default()
            })
            .await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    denied(
        app.ledger(&t)
            .list_transactions(proto::ListTransactionsRequest {
                account_id: w.b.id.clone(),
                ..Default::default()
            })
            .await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    app.stop().await;
}

#[tokio::test]
async fn account_manager_provisions_only_inside_its_scope() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let t = token(&["account_manager"], &[&w.a.id]);
    let mut accounts = app.accounts(&t);
    let accounts_before = app.all_accounts(&app.admin).await.len();
    let b_before = snapshot(&app, &w.b.id).await;

    // Inside: a new sub-account under A's child, with a wallet and a grant.
    let created = accounts
        .create_account(new_account("a-new", &w.child.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.parent_id, w.child.id);
    let wallet = accounts
        .create_wallet(wallet_request(&created.id))
        .await
        .unwrap()
        .into_inner();
    app.grants(&t)
        .create_grant(proto::CreateGrantRequest {
            grant: Some(grant_for(&wallet.id, "7")),
            request_id: uuid(),
        })
        .await
        .unwrap();
    assert_eq!(app.balance(&created.id).await.posted, "7");

    // Outside: top-level accounts, children of B, B's wallets and grants, B itself.
    denied(
        accounts.create_account(new_account("rogue-top", "")).await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    denied(
        accounts
            .create_account(new_account("rogue-b", &w.b.id))
            .await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    denied(
        accounts
            .create_account(new_account("rogue-ghost", GHOST_ACCOUNT))
            .await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    denied(
        accounts
            .create_wallet(proto::CreateWalletRequest {
                wallet: Some(proto::Wallet {
                    account_id: w.b.id.clone(),
                    unit: "message_units".into(),
                    ..Default::default()
                }),
                request_id: uuid(),
            })
            .await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    denied(
        app.grants(&t)
            .create_grant(proto::CreateGrantRequest {
                grant: Some(grant_for(&w.b_wallet.id, "1000")),
                request_id: uuid(),
            })
            .await,
        "ACCOUNT_OUT_OF_SCOPE",
    );
    denied(
        accounts
            .update_account(proto::UpdateAccountRequest {
                account: Some(proto::Account {
                    id: w.b.id.clone(),
                    display_name: "Hijacked".into(),
                    ..Default::default()
                }),
                update_mask: None,
                request_id: uuid(),
            })
            .await,
        "ACCOUNT_OUT_OF_SCOPE",
    );

    assert_eq!(
        app.all_accounts(&app.admin).await.len(),
        accounts_before + 1
    );
    assert_eq!(snapshot(&app, &w.b.id).await, b_before);
    let b = get_account(&app, &app.admin, &w.b.id).await.unwrap();
    assert_eq!(b.display_name, w.b.display_name);
    app.stop().await;
}

// ---- rejected calls write nothing -----------------------------------------------------------

#[tokio::test]
async fn rejected_debits_write_nothing() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let before = snapshot(&app, &w.b.id).await;
    let mut expired = service_claims("late", &w.b.id);
    expired.exp = (now_seconds() - 3600) as u64;

    let attempts: Vec<(String, Code, &str)> = vec![
        (String::new(), Code::Unauthenticated, "TOKEN_MISSING"),
        (
            hs256(SECRET.as_bytes(), &expired),
            Code::Unauthenticated,
            "TOKEN_EXPIRED",
        ),
        (
            hs256(b"wrong-secret", &service_claims("forger", &w.b.id)),
            Code::Unauthenticated,
            "TOKEN_BAD_SIGNATURE",
        ),
        (
            token(&["procurement"], &[&w.b.id]),
            Code::PermissionDenied,
            "ROLE_NOT_ALLOWED",
        ),
        (
            token(&["account_manager", "operator"], &["*"]),
            Code::PermissionDenied,
            "ROLE_NOT_ALLOWED",
        ),
        (
            token(&["service"], &[&w.a.id]),
            Code::PermissionDenied,
            "ACCOUNT_OUT_OF_SCOPE",
        ),
    ];
    for (t, code, reason) in &attempts {
        // The same request_id every time: a rejected request leaves no trace.
        let status = app
            .ledger(t)
            .debit(debit_request(&w.b.id, "image", "shared-request-id"))
            .await
            .unwrap_err();
        assert_error(&status, *code, reason);
        assert_eq!(snapshot(&app, &w.b.id).await, before, "after {reason}");
    }
    // By external_id too.
    let status = app
        .ledger(&token(&["service"], &[&w.a.id]))
        .debit(proto::DebitRequest {
            external_id: "b".into(),
            request_type: "image".into(),
            request_id: "shared-request-id".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::PermissionDenied, "ACCOUNT_OUT_OF_SCOPE");
    assert_eq!(snapshot(&app, &w.b.id).await, before);
    let (balance, count) = &before;
    assert_eq!(balance.posted, "100");
    assert_eq!(*count, 1);

    // The legitimate caller may then use the request_id as a fresh request.
    let response = app
        .ledger(&token(&["service"], &[&w.b.id]))
        .debit(debit_request(&w.b.id, "image", "shared-request-id"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !response.replayed,
        "a rejected request_id may be used again"
    );
    assert_eq!(app.balance(&w.b.id).await.posted, "96");
    assert_eq!(app.all_transactions(&w.b.id).await.len(), 2);
    app.stop().await;
}
