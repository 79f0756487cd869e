//! Issue 14, point 7: authentication and authorisation under attack, as one suite, through
//! the real gRPC API.
//!
//! | test | what is thrown at the server | what must hold |
//! |------|------------------------------|----------------|
//! | `hostile_tokens_are_refused_and_change_nothing` | every token of [`token_attacks`]: forged and truncated signatures, expired and not-yet-valid, `alg` confusion, `kid` injection, `jku`/`x5u`/`jwk`/`x5c` headers, unknown keys, wrong `iss`/`aud`, missing and ill-typed claims — each on every method of `ROUTES` and as real writes on a victim | UNAUTHENTICATED with the listed `TOKEN_*` reason; no URL in a header is ever fetched; the victims' state is unchanged |
//! | `hmac_made_from_the_public_keys_is_refused_by_an_rs_only_server` | the RS/HS confusion on a server without an HS256 secret | `TOKEN_ALG_NOT_ALLOWED` |
//! | `oversized_tokens_are_refused_and_the_server_keeps_serving` | a 15 KB forged token, one byte over `MAX_TOKEN_LEN`, a 4 MB header | a clean refusal (or the transport's), then the server serves |
//! | `roles_cannot_be_escalated` | every role on every method it may not call; role-name tricks; real writes by the wrong role | PERMISSION_DENIED `ROLE_NOT_ALLOWED` naming the method; nothing changes |
//! | `scope_cannot_be_escaped_through_any_method` | a token for tenant A on tenant B, a department's token on its parent and its sibling, through every method that takes an account, wallet, grant, reservation or transaction (a walk checked against `ROUTES`) | PERMISSION_DENIED `ACCOUNT_OUT_OF_SCOPE`, answered exactly as for an id that does not exist; the same requests by the owner succeed; nothing changes |
//! | `logs_of_an_attack_run_hold_no_token_or_secret` | a representative run (every hostile token, wrong roles, other tenants, oversized tokens, a legitimate caller) against a real `allot serve` at `RUST_LOG=debug` | its whole log holds no token, no piece of one, no secret, no private key material |
//! | `a_case_variant_of_an_account_id_in_a_token_reaches_nothing`, `a_control_character_in_the_accounts_claim_is_an_invalid_token` | regressions of what this suite found (see each) | |
//!
//! Runs on SQLite, and on PostgreSQL with `DATABASE_URL=postgres://…`.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use allot::{
    api::access::{Access, ROUTES},
    auth::{AuthConfig, LEEWAY_SECS, Role},
    proto,
};
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use common::{process::ServerProcess, *};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tonic::{
    Code, Status,
    codegen::http::uri::PathAndQuery,
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};
use tonic_types::StatusExt;

/// The longest token the verifier reads (`MAX_TOKEN_LEN` in src/auth/verifier.rs, private
/// there); `oversized_tokens_…` pins the boundary.
const MAX_TOKEN_LEN: usize = 16 * 1024;
const LEEWAY: i64 = LEEWAY_SECS as i64;

/// Well-formed ids of nothing.
const GHOST_ACCOUNT: &str = "acct_0000000000000000000000000000dead";
const GHOST_WALLET: &str = "wal_0000000000000000000000000000dead";
const GHOST_GRANT: &str = "grt_0000000000000000000000000000dead";
const GHOST_HOLD: &str = "rsv_0000000000000000000000000000dead";
const GHOST_HOLD_2: &str = "rsv_0000000000000000000000000000beef";
const GHOST_TXN: &str = "txn_0000000000000000000000000000dead";
const GHOST_ENDPOINT: &str = "whe_0000000000000000000000000000dead";
const GHOST_EXTERNAL: &str = "ghost-external-id";

/// Every refused mutation in the suite carries this request_id: a refusal leaves no trace,
/// so the owner may use it afterwards as a fresh request.
const ATTACK_REQUEST_ID: &str = "attack-request-id";

// ---- forging tokens ------------------------------------------------------------------------

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("read fixture {name}: {e}"))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_json(value: &Value) -> String {
    b64(&serde_json::to_vec(value).expect("json"))
}

/// A header naming `alg` (its JWA name).
fn header(alg: Algorithm) -> Value {
    json!({"alg": format!("{alg:?}"), "typ": "JWT"})
}

/// A JWS over any header and claims, signed with `key` under `alg`.
fn jws(header: &Value, claims: &Value, alg: Algorithm, key: &EncodingKey) -> String {
    let message = format!("{}.{}", b64_json(header), b64_json(claims));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("sign");
    format!("{message}.{signature}")
}

/// `token` with its header, payload or signature replaced.
fn with_parts(
    token: &str,
    header: Option<&str>,
    payload: Option<&str>,
    sig: Option<&str>,
) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    format!(
        "{}.{}.{}",
        header.unwrap_or(parts[0]),
        payload.unwrap_or(parts[1]),
        sig.unwrap_or(parts[2])
    )
}

fn signature_of(token: &str) -> &str {
    token.rsplit('.').next().expect("three parts")
}

/// Claims as JSON (so that they can be ill-typed): `sub`, `roles`, `accounts`, valid
/// `iss`/`aud`, an hour to live.
fn claims(roles: &[&str], accounts: &[&str]) -> Value {
    json!({
        "sub": "attacker",
        "roles": roles,
        "accounts": accounts,
        "iss": "allot",
        "aud": "allot",
        "exp": now_seconds() + 3600,
    })
}

/// What every forger wants: every role on every account.
fn admin() -> Value {
    claims(&["admin"], &["*"])
}

fn edit(mut claims: Value, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    f(claims.as_object_mut().expect("object"));
    claims
}

/// The keys the test server trusts (their private halves), and an attacker's own.
struct Keys {
    secret: EncodingKey,
    rsa: EncodingKey,
    rsa2: EncodingKey,
    ec: EncodingKey,
    ed: EncodingKey,
    /// An EC P-256 key the server does not know, its public JWK and a self-signed certificate
    /// (standard base64 DER, as `x5c` carries it).
    rogue_ec: EncodingKey,
    rogue_ec_jwk: Value,
    rogue_ec_x5c: String,
    rogue_ed: EncodingKey,
    /// The attacker's HS256 secret.
    rogue_secret: &'static [u8],
    /// Private key material (PEM body lines) and secrets, for the log scan.
    secrets: Vec<String>,
}

impl Keys {
    fn new() -> Self {
        let rogue = rcgen::KeyPair::generate().expect("rogue EC key");
        let raw = rogue.public_key_raw();
        assert_eq!((raw.len(), raw[0]), (65, 4), "uncompressed P-256 point");
        let rogue_ec_jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": b64(&raw[1..33]),
            "y": b64(&raw[33..]),
        });
        let cert = rcgen::CertificateParams::new(vec!["rogue.example".to_string()])
            .expect("cert params")
            .self_signed(&rogue)
            .expect("self-signed cert");
        let rogue_ec_x5c = STANDARD.encode(cert.der());
        let rogue_ec_pem = rogue.serialize_pem();
        let rogue_ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("rogue Ed key");
        let rogue_ed_pem = rogue_ed.serialize_pem();
        let rogue_secret: &'static [u8] = b"attacker-chosen-hmac-secret-of-42-bytes!!!";

        let mut secrets = vec![
            SECRET.to_string(),
            String::from_utf8_lossy(rogue_secret).into(),
        ];
        for text in [
            String::from_utf8_lossy(&pem("rsa_private.pem")).into_owned(),
            String::from_utf8_lossy(&pem("rsa2_private.pem")).into_owned(),
            String::from_utf8_lossy(&pem("ec_private.pem")).into_owned(),
            String::from_utf8_lossy(&pem("ed_private.pem")).into_owned(),
            rogue_ec_pem.clone(),
            rogue_ed_pem.clone(),
        ] {
            secrets.extend(
                text.lines()
                    .filter(|line| !line.starts_with("-----") && line.len() >= 24)
                    .map(str::to_string),
            );
        }
        Keys {
            secret: EncodingKey::from_secret(SECRET.as_bytes()),
            rsa: EncodingKey::from_rsa_pem(&pem("rsa_private.pem")).expect("rsa"),
            rsa2: EncodingKey::from_rsa_pem(&pem("rsa2_private.pem")).expect("rsa2"),
            ec: EncodingKey::from_ec_pem(&pem("ec_private.pem")).expect("ec"),
            ed: EncodingKey::from_ed_pem(&pem("ed_private.pem")).expect("ed"),
            rogue_ec: EncodingKey::from_ec_pem(rogue_ec_pem.as_bytes()).expect("rogue ec"),
            rogue_ec_jwk,
            rogue_ec_x5c,
            rogue_ed: EncodingKey::from_ed_pem(rogue_ed_pem.as_bytes()).expect("rogue ed"),
            rogue_secret,
            secrets,
        }
    }

    fn hs(&self, claims: &Value) -> String {
        jws(
            &header(Algorithm::HS256),
            claims,
            Algorithm::HS256,
            &self.secret,
        )
    }

    fn rs(&self, claims: &Value) -> String {
        jws(
            &header(Algorithm::RS256),
            claims,
            Algorithm::RS256,
            &self.rsa,
        )
    }

    fn rs_kid(&self, kid: Value, claims: &Value) -> String {
        let mut h = header(Algorithm::RS256);
        h["kid"] = kid;
        jws(&h, claims, Algorithm::RS256, &self.rsa)
    }

    fn es(&self, claims: &Value) -> String {
        jws(
            &header(Algorithm::ES256),
            claims,
            Algorithm::ES256,
            &self.ec,
        )
    }

    fn ed(&self, claims: &Value) -> String {
        jws(
            &header(Algorithm::EdDSA),
            claims,
            Algorithm::EdDSA,
            &self.ed,
        )
    }
}

/// One hostile `authorization` header and the reason it must be refused with.
struct Attack {
    family: &'static str,
    name: String,
    token: String,
    reason: &'static str,
}

const BAD_SIGNATURE: &str = "TOKEN_BAD_SIGNATURE";
const MALFORMED: &str = "TOKEN_MALFORMED";
const EXPIRED: &str = "TOKEN_EXPIRED";
const UNKNOWN_KEY: &str = "TOKEN_UNKNOWN_KEY";
const ALG_NOT_ALLOWED: &str = "TOKEN_ALG_NOT_ALLOWED";
const WRONG_ISSUER: &str = "TOKEN_WRONG_ISSUER";
const WRONG_AUDIENCE: &str = "TOKEN_WRONG_AUDIENCE";
const INVALID: &str = "TOKEN_INVALID";

/// Every hostile token of the suite, by family. `fetch_url` is an address the test listens
/// on: `jku`/`x5u` point there, and nothing may connect to it.
fn token_attacks(k: &Keys, fetch_url: &str) -> Vec<Attack> {
    let mut out = Vec::new();
    let mut add = |family: &'static str, name: &str, token: String, reason: &'static str| {
        out.push(Attack {
            family,
            name: name.to_string(),
            token,
            reason,
        });
    };
    let admin = admin();
    let now = now_seconds();

    // -- forged signatures: the right header, the payload altered --
    let f = "forged signature";
    let low = claims(&["procurement"], &[GHOST_ACCOUNT]);
    for (signer, token) in [
        ("HS256", k.hs(&low)),
        ("RS256", k.rs(&low)),
        ("RS256 kid k2", {
            let mut h = header(Algorithm::RS256);
            h["kid"] = json!("k2");
            jws(&h, &low, Algorithm::RS256, &k.rsa2)
        }),
        ("ES256", k.es(&low)),
        ("EdDSA", k.ed(&low)),
    ] {
        add(
            f,
            &format!("{signer}: payload swapped for admin claims"),
            with_parts(&token, None, Some(&b64_json(&admin)), None),
            BAD_SIGNATURE,
        );
    }
    // An expired admin token with only `exp` moved on.
    let old = k.hs(&edit(admin.clone(), |c| {
        c.insert("exp".into(), json!(now - 3600));
    }));
    add(
        f,
        "HS256: expired token with exp extended",
        with_parts(&old, None, Some(&b64_json(&admin)), None),
        BAD_SIGNATURE,
    );
    // One byte of the payload's JSON changed (`"attacker"` → `"attackes"`).
    let good = k.hs(&admin);
    let flipped = b64(serde_json::to_string(&admin)
        .expect("json")
        .replace("\"attacker\"", "\"attackes\"")
        .as_bytes());
    add(
        f,
        "HS256: payload bytes altered",
        with_parts(&good, None, Some(&flipped), None),
        BAD_SIGNATURE,
    );
    // A signature transplanted from another token of the same key.
    add(
        f,
        "RS256: signature of another token",
        with_parts(&k.rs(&admin), None, None, Some(signature_of(&k.rs(&low)))),
        BAD_SIGNATURE,
    );

    // -- signatures of keys the server does not trust --
    let f = "unknown key";
    add(
        f,
        "HS256 with the attacker's secret",
        jws(
            &header(Algorithm::HS256),
            &admin,
            Algorithm::HS256,
            &EncodingKey::from_secret(k.rogue_secret),
        ),
        BAD_SIGNATURE,
    );
    add(
        f,
        "HS256 with an empty secret",
        jws(
            &header(Algorithm::HS256),
            &admin,
            Algorithm::HS256,
            &EncodingKey::from_secret(b""),
        ),
        BAD_SIGNATURE,
    );
    add(
        f,
        "ES256 by the attacker's EC key",
        jws(
            &header(Algorithm::ES256),
            &admin,
            Algorithm::ES256,
            &k.rogue_ec,
        ),
        BAD_SIGNATURE,
    );
    add(
        f,
        "EdDSA by the attacker's Ed25519 key",
        jws(
            &header(Algorithm::EdDSA),
            &admin,
            Algorithm::EdDSA,
            &k.rogue_ed,
        ),
        BAD_SIGNATURE,
    );
    add(
        f,
        "RS256 kid k1 signed by rsa2 (k2's key)",
        {
            let mut h = header(Algorithm::RS256);
            h["kid"] = json!("k1");
            jws(&h, &admin, Algorithm::RS256, &k.rsa2)
        },
        BAD_SIGNATURE,
    );
    add(
        f,
        "ES256 kid naming no key, by the attacker's key",
        {
            let mut h = header(Algorithm::ES256);
            h["kid"] = json!("rogue");
            jws(&h, &admin, Algorithm::ES256, &k.rogue_ec)
        },
        UNKNOWN_KEY,
    );

    // -- truncated and mangled signatures --
    let f = "truncated signature";
    for (alg, token) in [
        ("HS256", k.hs(&admin)),
        ("RS256", k.rs(&admin)),
        ("ES256", k.es(&admin)),
        ("EdDSA", k.ed(&admin)),
    ] {
        // The signature's bytes cut or extended (still base64url): verifies nothing.
        let bytes = URL_SAFE_NO_PAD
            .decode(signature_of(&token))
            .expect("base64url signature");
        for (name, sig) in [
            ("last byte cut", bytes[..bytes.len() - 1].to_vec()),
            ("half the signature", bytes[..bytes.len() / 2].to_vec()),
            ("empty signature", Vec::new()),
            ("one byte added", [bytes.as_slice(), &[0]].concat()),
            ("signature doubled", bytes.repeat(2)),
        ] {
            add(
                f,
                &format!("{alg}: {name}"),
                with_parts(&token, None, None, Some(&b64(&sig))),
                BAD_SIGNATURE,
            );
        }
    }
    let sig = signature_of(&good);
    // 43 → 41 characters: not a base64 length.
    add(
        f,
        "HS256: two characters cut (not base64)",
        with_parts(&good, None, None, Some(&sig[..sig.len() - 2])),
        MALFORMED,
    );
    add(
        f,
        "HS256: signature with base64 padding",
        with_parts(&good, None, None, Some(&format!("{sig}="))),
        MALFORMED,
    );
    add(
        f,
        "HS256: signature in standard (not url-safe) base64",
        with_parts(
            &good,
            None,
            None,
            Some(&format!("{}+/", &sig[..sig.len() - 3])),
        ),
        MALFORMED,
    );

    // -- time: expired, not yet valid --
    let f = "expired / not yet valid";
    for (name, exp) in [
        ("exp just beyond the leeway", now - LEEWAY - 5),
        ("exp an hour ago", now - 3600),
        ("exp at the epoch", 0),
    ] {
        let c = edit(admin.clone(), |c| {
            c.insert("exp".into(), json!(exp));
        });
        add(f, &format!("HS256: {name}"), k.hs(&c), EXPIRED);
        add(f, &format!("ES256: {name}"), k.es(&c), EXPIRED);
    }
    let expired = edit(admin.clone(), |c| {
        c.insert("exp".into(), json!(now - 3600));
    });
    add(
        f,
        "RS256 kid k1: expired",
        k.rs_kid(json!("k1"), &expired),
        EXPIRED,
    );
    add(f, "EdDSA: expired", k.ed(&expired), EXPIRED);
    for (name, nbf) in [
        ("nbf just beyond the leeway", now + LEEWAY + 5),
        ("nbf in a year", now + 365 * 86_400),
    ] {
        let c = edit(admin.clone(), |c| {
            c.insert("nbf".into(), json!(nbf));
        });
        add(f, &format!("HS256: {name}"), k.hs(&c), INVALID);
        add(f, &format!("RS256: {name}"), k.rs(&c), INVALID);
    }

    // -- alg confusion --
    let f = "alg confusion";
    let payload = b64_json(&admin);
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = b64_json(&json!({"alg": alg, "typ": "JWT"}));
        add(
            f,
            &format!("alg {alg}, no signature"),
            format!("{h}.{payload}."),
            ALG_NOT_ALLOWED,
        );
    }
    let h = b64_json(&json!({"alg": "none", "typ": "JWT", "kid": "k1"}));
    add(
        f,
        "alg none with kid k1 and a real signature",
        format!("{h}.{payload}.{}", signature_of(&k.rs(&admin))),
        ALG_NOT_ALLOWED,
    );
    // The classic: HMAC keyed with the server's public key material.
    for (name, secret) in [
        ("rsa_public.pem", pem("rsa_public.pem")),
        ("rsa_public_pkcs1.pem", pem("rsa_public_pkcs1.pem")),
        ("ec_public.pem", pem("ec_public.pem")),
        ("ed_public.pem", pem("ed_public.pem")),
        ("jwks.json", pem("jwks.json")),
        ("the DER of rsa_public.pem", public_der("rsa_public.pem")),
    ] {
        let key = EncodingKey::from_secret(&secret);
        add(
            f,
            &format!("HS256 keyed with {name}"),
            jws(&header(Algorithm::HS256), &admin, Algorithm::HS256, &key),
            BAD_SIGNATURE,
        );
    }
    let rsa_pem_key = EncodingKey::from_secret(&pem("rsa_public.pem"));
    for kid in ["k1", "k2"] {
        let mut h = header(Algorithm::HS256);
        h["kid"] = json!(kid);
        add(
            f,
            &format!("HS256 keyed with rsa_public.pem, kid {kid} (an RS256 key)"),
            jws(&h, &admin, Algorithm::HS256, &rsa_pem_key),
            ALG_NOT_ALLOWED,
        );
    }
    // ES256 / EdDSA headers on RSA signatures and the reverse.
    let rs = k.rs(&admin);
    add(
        f,
        "ES256 header on an RS256 signature",
        with_parts(&rs, Some(&b64_json(&header(Algorithm::ES256))), None, None),
        BAD_SIGNATURE,
    );
    add(
        f,
        "EdDSA header on an RS256 signature",
        with_parts(&rs, Some(&b64_json(&header(Algorithm::EdDSA))), None, None),
        BAD_SIGNATURE,
    );
    add(
        f,
        "RS256 header on an ES256 signature",
        with_parts(
            &k.es(&admin),
            Some(&b64_json(&header(Algorithm::RS256))),
            None,
            None,
        ),
        BAD_SIGNATURE,
    );
    add(
        f,
        "HS256 header on an RS256 signature",
        with_parts(&rs, Some(&b64_json(&header(Algorithm::HS256))), None, None),
        BAD_SIGNATURE,
    );
    {
        let mut h = header(Algorithm::ES256);
        h["kid"] = json!("k1");
        add(
            f,
            "ES256 by the EC key under kid k1 (an RSA key)",
            jws(&h, &admin, Algorithm::ES256, &k.ec),
            ALG_NOT_ALLOWED,
        );
    }
    // Algorithms no key is pinned to, signed by the right key material.
    for (alg, key) in [
        (Algorithm::PS256, &k.rsa),
        (Algorithm::RS384, &k.rsa),
        (Algorithm::RS512, &k.rsa),
        (Algorithm::HS384, &k.secret),
        (Algorithm::HS512, &k.secret),
    ] {
        add(
            f,
            &format!("{alg:?} signed by a trusted key"),
            jws(&header(alg), &admin, alg, key),
            ALG_NOT_ALLOWED,
        );
    }
    for (name, alg) in [
        ("lower case hs256", json!("hs256")),
        ("HS256 with a trailing space", json!("HS256 ")),
        ("an unknown name", json!("HS1")),
    ] {
        let h = b64_json(&json!({"alg": alg, "typ": "JWT"}));
        add(
            f,
            &format!("alg {name}"),
            with_parts(&good, Some(&h), None, None),
            ALG_NOT_ALLOWED,
        );
    }
    for (name, h) in [
        ("no alg", json!({"typ": "JWT"})),
        ("alg null", json!({"alg": null})),
        ("alg a number", json!({"alg": 256})),
        ("alg an array", json!({"alg": ["HS256"]})),
        (
            "a crit header",
            json!({"alg": "HS256", "crit": ["exp"], "exp": 1}),
        ),
        ("a header that is an array", json!(["HS256"])),
    ] {
        add(
            f,
            name,
            with_parts(&good, Some(&b64_json(&h)), None, None),
            MALFORMED,
        );
    }

    // -- kid injection: signed by the trusted RSA key, only the kid is hostile --
    let f = "kid injection";
    for kid in [
        "../../etc/passwd",
        "/etc/passwd",
        "file:///etc/passwd",
        "/dev/null",
        "../jwks.json",
        "k1/../k1",
        "k1' OR '1'='1",
        "k1\"; DROP TABLE accounts; --",
        "' UNION SELECT 'k1' --",
        "%",
        "*",
        "k1\u{0}",
        "k1\n",
        "$(touch /tmp/pwned)",
        "${jndi:ldap://127.0.0.1/a}",
        "ключ",
        "🔑",
        "ｋ１",
        "k\u{0131}1",
        "k1\u{200b}",
    ] {
        add(
            f,
            &format!("kid {kid:?}"),
            k.rs_kid(json!(kid), &admin),
            UNKNOWN_KEY,
        );
    }
    add(
        f,
        "kid of 10,000 characters",
        k.rs_kid(json!("k".repeat(10_000)), &admin),
        UNKNOWN_KEY,
    );
    {
        let mut h = header(Algorithm::HS256);
        h["kid"] = json!("../../etc/passwd");
        add(
            f,
            "HS256 by the real secret with kid ../../etc/passwd",
            jws(&h, &admin, Algorithm::HS256, &k.secret),
            UNKNOWN_KEY,
        );
    }
    for (name, kid) in [
        ("kid a number", json!(1)),
        ("kid an array", json!(["k1"])),
        ("kid an object", json!({"kid": "k1"})),
    ] {
        add(f, name, k.rs_kid(kid, &admin), MALFORMED);
    }

    // -- keys offered by the token itself: ignored --
    let f = "jku / x5u / jwk / x5c";
    let rogue = |extra: Value| {
        let mut h = header(Algorithm::ES256);
        for (name, value) in extra.as_object().expect("object") {
            h[name] = value.clone();
        }
        jws(&h, &admin, Algorithm::ES256, &k.rogue_ec)
    };
    add(
        f,
        "embedded jwk (the attacker's key)",
        rogue(json!({"jwk": k.rogue_ec_jwk})),
        BAD_SIGNATURE,
    );
    add(
        f,
        "embedded jwk with its kid",
        rogue(json!({"jwk": {"kid": "rogue", "alg": "ES256", "use": "sig"}, "kid": "rogue"})),
        UNKNOWN_KEY,
    );
    add(
        f,
        "embedded jwk claiming kid k1",
        rogue(json!({"jwk": k.rogue_ec_jwk, "kid": "k1"})),
        ALG_NOT_ALLOWED,
    );
    add(
        f,
        "jku to the attacker's JWKS",
        rogue(json!({"jku": format!("{fetch_url}/jwks.json")})),
        BAD_SIGNATURE,
    );
    add(
        f,
        "jku with the attacker's kid",
        rogue(json!({"jku": format!("{fetch_url}/jwks.json"), "kid": "rogue"})),
        UNKNOWN_KEY,
    );
    add(
        f,
        "x5u to the attacker's certificate",
        rogue(json!({"x5u": format!("{fetch_url}/cert.pem")})),
        BAD_SIGNATURE,
    );
    add(
        f,
        "x5c with the attacker's certificate",
        rogue(json!({"x5c": [k.rogue_ec_x5c]})),
        BAD_SIGNATURE,
    );
    {
        let mut h = header(Algorithm::HS256);
        h["jwk"] = json!({"kty": "oct", "k": b64(k.rogue_secret)});
        add(
            f,
            "HS256 with an embedded oct jwk",
            jws(
                &h,
                &admin,
                Algorithm::HS256,
                &EncodingKey::from_secret(k.rogue_secret),
            ),
            BAD_SIGNATURE,
        );
    }

    // -- issuer and audience --
    let f = "wrong iss / aud";
    for (name, iss) in [
        ("iss of another issuer", json!("https://evil.example")),
        ("iss differently cased", json!("Allot")),
        ("iss with a trailing space", json!("allot ")),
        ("iss empty", json!("")),
    ] {
        let c = edit(admin.clone(), |c| {
            c.insert("iss".into(), iss);
        });
        add(f, name, k.hs(&c), WRONG_ISSUER);
    }
    for (name, aud) in [
        ("aud of another service", json!("billing")),
        ("aud array without allot", json!(["billing", "ALLOT"])),
        ("aud empty array", json!([])),
        ("aud empty", json!("")),
    ] {
        let c = edit(admin.clone(), |c| {
            c.insert("aud".into(), aud);
        });
        add(f, name, k.es(&c), WRONG_AUDIENCE);
    }

    // -- missing and ill-typed claims under a valid signature --
    let f = "missing / ill-typed claims";
    for claim in ["sub", "exp", "iss", "aud"] {
        let c = edit(admin.clone(), |c| {
            c.remove(claim);
        });
        add(f, &format!("no {claim}"), k.hs(&c), INVALID);
    }
    for (name, claim, value) in [
        ("sub null", "sub", json!(null)),
        ("sub a number", "sub", json!(42)),
        ("sub blank", "sub", json!("   ")),
        ("sub with a control character", "sub", json!("admin\u{7}")),
        ("sub of 256 bytes", "sub", json!("s".repeat(256))),
        ("exp a string", "exp", json!((now + 3600).to_string())),
        ("exp null", "exp", json!(null)),
        ("exp negative", "exp", json!(-1)),
        ("exp beyond u64", "exp", json!(1e300)),
        ("exp a boolean", "exp", json!(true)),
        ("iss an array", "iss", json!(["allot"])),
        ("iss a number", "iss", json!(1)),
        ("aud a number", "aud", json!(7)),
        ("aud null", "aud", json!(null)),
        ("roles a string", "roles", json!("admin")),
        ("roles an object", "roles", json!({"admin": true})),
        ("roles nested", "roles", json!([["admin"]])),
        ("roles numbers", "roles", json!([1, 2])),
        ("roles null entries", "roles", json!([null])),
        ("roles 33 entries", "roles", json!(vec!["admin"; 33])),
        ("accounts numbers", "accounts", json!([1, 2])),
        ("accounts a number", "accounts", json!(5)),
        ("accounts a string", "accounts", json!("*")),
        ("accounts an object", "accounts", json!({"*": true})),
        ("accounts null entries", "accounts", json!([null])),
        (
            "accounts 1,001 entries",
            "accounts",
            json!((0..1001).map(|i| format!("a{i}")).collect::<Vec<_>>()),
        ),
        (
            "an account id of 65 bytes",
            "accounts",
            json!(["a".repeat(65)]),
        ),
        ("nbf a string", "nbf", json!("0")),
    ] {
        let c = edit(admin.clone(), |c| {
            c.insert(claim.into(), value);
        });
        add(f, name, k.hs(&c), INVALID);
    }
    let c = edit(admin.clone(), |c| {
        c.insert("exp".into(), json!(now - 3600));
        c.insert("roles".into(), json!("admin"));
    });
    // The time claims are checked before the claims are read: expired wins.
    add(f, "expired and ill-typed", k.hs(&c), EXPIRED);

    // -- not a token at all --
    let f = "malformed";
    add(
        f,
        "claims as plain base64 (no signature part)",
        format!(
            "{}.{}",
            b64_json(&header(Algorithm::HS256)),
            b64_json(&admin)
        ),
        MALFORMED,
    );
    add(
        f,
        "four parts",
        format!("{good}.{}", signature_of(&good)),
        MALFORMED,
    );
    add(
        f,
        "payload not JSON under a valid HS256 signature",
        {
            let message = format!(
                "{}.{}",
                b64_json(&header(Algorithm::HS256)),
                b64(b"{\"sub\":")
            );
            let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &k.secret, Algorithm::HS256)
                .expect("sign");
            format!("{message}.{sig}")
        },
        MALFORMED,
    );
    out
}

/// The DER body of a PEM file.
fn public_der(name: &str) -> Vec<u8> {
    let text = String::from_utf8(pem(name)).expect("PEM text");
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).expect("PEM base64")
}

// ---- calling the API -----------------------------------------------------------------------

/// An error answer, as the caller sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Refusal {
    code: Code,
    reason: String,
    message: String,
    metadata: BTreeMap<String, String>,
}

fn refusal(status: &Status) -> Refusal {
    let details = status.get_error_details();
    let info = details.error_info();
    Refusal {
        code: status.code(),
        reason: info.map(|i| i.reason.clone()).unwrap_or_default(),
        message: status.message().to_string(),
        metadata: info
            .map(|i| i.metadata.clone().into_iter().collect())
            .unwrap_or_default(),
    }
}

/// No fields: its encoding (zero bytes) is a valid message of every request type, and every
/// answer decodes as it.
#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

fn method_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Calls the method at `path` with an empty message (a valid message of every request type)
/// and `header` as the raw `authorization` value.
async fn call_route(
    channel: &Channel,
    header: Option<&str>,
    path: &'static str,
) -> Result<(), Status> {
    let service = InterceptedService::new(channel.clone(), raw_bearer(header));
    let mut grpc = tonic::client::Grpc::new(service);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("channel not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<Empty, Empty>::default();
    let path = PathAndQuery::from_static(path);
    let request = tonic::Request::new(Empty {});
    if path.path().ends_with("/ExportTransactions") {
        let mut stream = grpc
            .server_streaming(request, path, codec)
            .await?
            .into_inner();
        while stream.message().await?.is_some() {}
        Ok(())
    } else {
        grpc.unary(request, path, codec).await.map(|_| ())
    }
}

/// A health check on a fresh connection, then a call as the admin: the server serves.
async fn assert_serving(addr: &str, admin: &str) {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("the server accepts connections");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(
        answer.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    proto::account_service_client::AccountServiceClient::with_interceptor(channel, bearer(admin))
        .list_accounts(proto::ListAccountsRequest::default())
        .await
        .expect("the admin is served");
}

// ---- the world -----------------------------------------------------------------------------

/// One account with something of every kind: a wallet with a 100-unit grant and a 1-unit
/// grant (the one voids aim at), a debit, two open holds, a monthly schedule and a price
/// override.
#[derive(Clone, Debug)]
struct Tenant {
    account: proto::Account,
    wallet: proto::Wallet,
    grant: proto::Grant,
    debit: proto::Transaction,
    hold: proto::Reservation,
    hold_2: proto::Reservation,
    endpoint: proto::WebhookEndpoint,
}

async fn tenant(app: &TestApp, external_id: &str, parent_id: &str) -> Tenant {
    let account = app.create_account(external_id, parent_id).await;
    let wallet = app.create_wallet(&account.id, "credits", "").await;
    app.grant(&wallet.id, "100").await;
    let grant = app.grant(&wallet.id, "1").await;
    let debit = app
        .ledger(&app.admin)
        .debit(debit_request(&account.id, "one", &uuid()))
        .await
        .expect("debit")
        .into_inner()
        .transaction
        .expect("entry");
    let hold = reserve_units(app, &account.id, "1", None)
        .await
        .expect("hold");
    let hold_2 = reserve_units(app, &account.id, "1", None)
        .await
        .expect("hold");
    app.grants(&app.admin)
        .create_allotment_schedule(schedule_request(
            &wallet.id,
            "10",
            proto::SchedulePeriod::Monthly,
            None,
        ))
        .await
        .expect("schedule");
    app.rates(&app.admin)
        .set_account_override(override_request(&account.id))
        .await
        .expect("override");
    let endpoint = app
        .webhooks(&app.admin)
        .create_webhook_endpoint(endpoint_request(&account.id))
        .await
        .expect("webhook endpoint")
        .into_inner();
    Tenant {
        account,
        wallet,
        grant,
        debit,
        hold,
        hold_2,
        endpoint,
    }
}

/// A webhook endpoint of the account that is never sent anything (an account's endpoints
/// receive no `rate_card.published`).
fn endpoint_request(account_id: &str) -> proto::CreateWebhookEndpointRequest {
    proto::CreateWebhookEndpointRequest {
        endpoint: Some(proto::WebhookEndpoint {
            url: "http://127.0.0.1:9/never".into(),
            account_id: account_id.into(),
            event_types: vec!["rate_card.published".into()],
            ..Default::default()
        }),
        request_id: uuid(),
    }
}

fn override_request(account_id: &str) -> proto::SetAccountOverrideRequest {
    proto::SetAccountOverrideRequest {
        account_override: Some(proto::AccountOverride {
            account_id: account_id.into(),
            request_type: "chat".into(),
            rate: Some(proto::Rate {
                flat_units: "2".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        request_id: uuid(),
    }
}

/// Tenant A with departments A1 (which has its own A1x) and A2; tenant B with department
/// B1; the standard rate card.
struct World {
    a: Tenant,
    a1: Tenant,
    a1x: Tenant,
    a2: Tenant,
    b: Tenant,
    b1: Tenant,
    card: proto::RateCard,
}

async fn world(app: &TestApp) -> World {
    let card = app.publish_standard_card().await;
    let a = tenant(app, "tenant-a", "").await;
    let a1 = tenant(app, "tenant-a-dept-1", &a.account.id).await;
    let a1x = tenant(app, "tenant-a-dept-1-team", &a1.account.id).await;
    let a2 = tenant(app, "tenant-a-dept-2", &a.account.id).await;
    let b = tenant(app, "tenant-b", "").await;
    let b1 = tenant(app, "tenant-b-dept-1", &b.account.id).await;
    World {
        a,
        a1,
        a1x,
        a2,
        b,
        b1,
        card,
    }
}

/// Everything an account holds, read by the admin: compared before and after the attacks.
#[derive(Debug, PartialEq)]
struct State {
    account: proto::Account,
    /// The ids of its sub-accounts (their own state is theirs).
    children: Vec<String>,
    wallets: Vec<proto::Wallet>,
    balances: Vec<proto::Balance>,
    ledgers: Vec<Vec<proto::Transaction>>,
    grants: Vec<Vec<proto::Grant>>,
    schedules: Vec<Vec<proto::AllotmentSchedule>>,
    overrides: Vec<proto::AccountOverride>,
    audit: Vec<proto::AuditEvent>,
}

async fn state(app: &TestApp, account_id: &str) -> State {
    let admin = &app.admin;
    let account = app
        .accounts(admin)
        .get_account(proto::GetAccountRequest {
            id: account_id.into(),
        })
        .await
        .expect("account")
        .into_inner();
    let children = app
        .accounts(admin)
        .list_accounts(proto::ListAccountsRequest {
            parent_id: account_id.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("children")
        .into_inner()
        .accounts
        .into_iter()
        .map(|a| a.id)
        .collect();
    let wallets = app
        .accounts(admin)
        .list_wallets(proto::ListWalletsRequest {
            account_id: account_id.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("wallets")
        .into_inner()
        .wallets;
    let mut balances = Vec::new();
    let mut ledgers = Vec::new();
    let mut grants = Vec::new();
    let mut schedules = Vec::new();
    for wallet in &wallets {
        balances.push(
            app.ledger(admin)
                .get_balance(proto::GetBalanceRequest {
                    account_id: account_id.into(),
                    unit: wallet.unit.clone(),
                    ..Default::default()
                })
                .await
                .expect("balance")
                .into_inner(),
        );
        let page = app
            .ledger(admin)
            .list_transactions(proto::ListTransactionsRequest {
                account_id: account_id.into(),
                unit: wallet.unit.clone(),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .expect("ledger")
            .into_inner();
        assert!(page.next_page_token.is_empty());
        ledgers.push(page.transactions);
        grants.push(app.all_grants(&wallet.id).await);
        schedules.push(
            app.grants(admin)
                .list_allotment_schedules(proto::ListAllotmentSchedulesRequest {
                    wallet_id: wallet.id.clone(),
                    page_size: 1000,
                    ..Default::default()
                })
                .await
                .expect("schedules")
                .into_inner()
                .allotment_schedules,
        );
    }
    let overrides = app
        .rates(admin)
        .list_account_overrides(proto::ListAccountOverridesRequest {
            account_id: account_id.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("overrides")
        .into_inner()
        .account_overrides;
    let audit = app
        .reports(admin)
        .list_audit_events(proto::ListAuditEventsRequest {
            account_id: account_id.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("audit events")
        .into_inner()
        .audit_events;
    State {
        account,
        children,
        wallets,
        balances,
        ledgers,
        grants,
        schedules,
        overrides,
        audit,
    }
}

async fn states(app: &TestApp, victims: &[&Tenant]) -> Vec<State> {
    let mut out = Vec::new();
    for victim in victims {
        out.push(state(app, &victim.account.id).await);
    }
    out
}

/// Fails naming each victim and part of its state that differs.
#[track_caller]
fn assert_unchanged(before: &[State], after: &[State]) {
    let mut changed = Vec::new();
    for (b, a) in before.iter().zip(after) {
        let name = &b.account.external_id;
        macro_rules! field {
            ($($f:ident),*) => {$(
                if b.$f != a.$f {
                    changed.push(format!(
                        "{name}: {}\n  before: {:?}\n  after:  {:?}",
                        stringify!($f), b.$f, a.$f
                    ));
                }
            )*};
        }
        field!(
            account, children, wallets, balances, ledgers, grants, schedules, overrides, audit
        );
    }
    assert_eq!(before.len(), after.len());
    assert!(
        changed.is_empty(),
        "a refused call changed a victim:\n{}",
        changed.join("\n")
    );
}

/// The owner of `victim` debits it with [`ATTACK_REQUEST_ID`]: a fresh request, since every
/// refused attempt left no trace.
async fn attack_request_id_is_unused(app: &TestApp, victim: &Tenant) {
    let owner = token(&["service"], &[&victim.account.id]);
    let response = app
        .ledger(&owner)
        .debit(debit_request(&victim.account.id, "one", ATTACK_REQUEST_ID))
        .await
        .expect("the owner's debit")
        .into_inner();
    assert!(
        !response.replayed,
        "a refused request left an idempotency record"
    );
}

// ---- 1. hostile tokens ---------------------------------------------------------------------

/// Counts connections to an address the test listens on.
async fn listen_for_fetches() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (url, count)
}

/// The writes an attacker aims at the victim with a hostile token: a debit and a grant.
async fn victim_writes(
    app: &TestApp,
    header: &str,
    victim: &Tenant,
) -> Vec<(&'static str, Status)> {
    let auth = raw_bearer(Some(header));
    let mut out = Vec::new();
    let debit = proto::ledger_service_client::LedgerServiceClient::with_interceptor(
        app.channel.clone(),
        auth.clone(),
    )
    .debit(debit_request(
        &victim.account.id,
        "image",
        ATTACK_REQUEST_ID,
    ))
    .await;
    out.push(("Debit", debit.expect_err("a hostile debit")));
    let mut grant = grant_request(&victim.wallet.id, "1000000", "0");
    grant.request_id = ATTACK_REQUEST_ID.into();
    let grant = proto::grant_service_client::GrantServiceClient::with_interceptor(
        app.channel.clone(),
        auth,
    )
    .create_grant(grant)
    .await;
    out.push(("CreateGrant", grant.expect_err("a hostile grant")));
    out
}

/// Sends every attack to every method of `ROUTES` (empty messages) and as real writes on
/// `victim`; each answer must be UNAUTHENTICATED with the attack's reason. Returns the number
/// of calls.
async fn assert_refused(app: &TestApp, attacks: &[Attack], victim: &Tenant) -> usize {
    let mut wrong: BTreeSet<String> = BTreeSet::new();
    let mut calls = 0;
    for attack in attacks {
        let header = format!("Bearer {}", attack.token);
        let mut check = |what: &str, result: Result<(), Status>| {
            calls += 1;
            match result {
                Ok(()) => {
                    wrong.insert(format!(
                        "{} / {}: {what} ANSWERED",
                        attack.family, attack.name
                    ));
                }
                Err(status) => {
                    let got = refusal(&status);
                    if got.code != Code::Unauthenticated || got.reason != attack.reason {
                        wrong.insert(format!(
                            "{} / {}: expected {}, got {:?} {} ({})",
                            attack.family,
                            attack.name,
                            attack.reason,
                            got.code,
                            got.reason,
                            got.message
                        ));
                    }
                }
            }
        };
        // Every method, so that none is exempt from authentication.
        for (path, _) in ROUTES {
            check(path, call_route(&app.channel, Some(&header), path).await);
        }
        for (method, status) in victim_writes(app, &header, victim).await {
            check(method, Err(status));
        }
    }
    assert!(
        wrong.is_empty(),
        "wrong answers among {calls} calls:\n{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
    calls
}

#[tokio::test]
async fn hostile_tokens_are_refused_and_change_nothing() {
    let started = Instant::now();
    let app = spawn_app().await;
    let w = world(&app).await;
    let victims = [&w.b, &w.b1];
    let before = states(&app, &victims).await;
    let keys = Keys::new();
    let (fetch_url, fetches) = listen_for_fetches().await;
    let attacks = token_attacks(&keys, &fetch_url);

    let calls = assert_refused(&app, &attacks, &w.b).await;
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        0,
        "the server fetched a jku/x5u URL"
    );
    assert_unchanged(&before, &states(&app, &victims).await);
    attack_request_id_is_unused(&app, &w.b).await;
    assert_serving(&app.addr.to_string(), &app.admin).await;
    let mut families: BTreeMap<&str, usize> = BTreeMap::new();
    for attack in &attacks {
        *families.entry(attack.family).or_default() += 1;
    }
    eprintln!(
        "hostile tokens: {} attacks {families:?}, {calls} calls, {:?}",
        attacks.len(),
        started.elapsed()
    );
    app.stop().await;
}

/// The classic RS/HS confusion against a server that trusts public keys only (no HS256
/// secret): an HMAC keyed with its public key material, with or without a kid, meets no key
/// pinned to HS256.
#[tokio::test]
async fn hmac_made_from_the_public_keys_is_refused_by_an_rs_only_server() {
    let mut app = spawn_app_with(AuthConfig {
        hs256_secret: None,
        ..auth_config()
    })
    .await;
    let keys = Keys::new();
    // The harness's admin token is HS256: provision with an RS256 one.
    app.admin = keys.rs(&admin());
    app.publish_standard_card().await;
    let victim = tenant(&app, "victim", "").await;
    let before = state(&app, &victim.account.id).await;

    let mut attacks = Vec::new();
    for (name, secret) in [
        ("rsa_public.pem", pem("rsa_public.pem")),
        ("rsa_public_pkcs1.pem", pem("rsa_public_pkcs1.pem")),
        ("rsa2_public.pem", pem("rsa2_public.pem")),
        ("ec_public.pem", pem("ec_public.pem")),
        ("ed_public.pem", pem("ed_public.pem")),
        ("jwks.json", pem("jwks.json")),
        ("the DER of rsa_public.pem", public_der("rsa_public.pem")),
        ("the test HS256 secret", SECRET.as_bytes().to_vec()),
    ] {
        let key = EncodingKey::from_secret(&secret);
        for kid in [None, Some("k1"), Some("k2")] {
            let mut h = header(Algorithm::HS256);
            if let Some(kid) = kid {
                h["kid"] = json!(kid);
            }
            attacks.push(Attack {
                family: "alg confusion (RS-only server)",
                name: format!("HS256 keyed with {name}, kid {kid:?}"),
                token: jws(&h, &admin(), Algorithm::HS256, &key),
                reason: ALG_NOT_ALLOWED,
            });
        }
    }
    let calls = assert_refused(&app, &attacks, &victim).await;
    assert_unchanged(&[before], &[state(&app, &victim.account.id).await]);
    eprintln!("RS-only server: {} attacks, {calls} calls", attacks.len());
    app.stop().await;
}

/// A valid admin token of `len` or `len + 1` bytes (a `pad` claim fills it), signed by the
/// HS256 secret.
fn padded_token(keys: &Keys, len: usize) -> String {
    let bare = keys.hs(&admin()).len();
    // Each pad character adds 4/3 of a character: start below and step up.
    let mut pad = len.saturating_sub(bare + 32) * 3 / 4;
    loop {
        let token = keys.hs(&edit(admin(), |c| {
            c.insert("pad".into(), json!("p".repeat(pad)));
        }));
        if token.len() >= len {
            assert!(token.len() <= len + 1, "{} for {len}", token.len());
            return token;
        }
        pad += 1;
    }
}

/// HTTP/2 spoken by hand, so that a header of any size reaches the server (a client library
/// refuses to send more than the server's SETTINGS_MAX_HEADER_LIST_SIZE): one request whose
/// `authorization` value is `value`, in HEADERS and CONTINUATION frames. Returns the frame
/// types the server answered with before it closed the connection or went quiet for 5 s.
async fn raw_h2_request(addr: &str, path: &str, value: &[u8]) -> Vec<&'static str> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn int(out: &mut Vec<u8>, mut n: usize) {
        // HPACK integer with a 7-bit prefix (the H bit clear: no Huffman).
        if n < 127 {
            out.push(n as u8);
            return;
        }
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128 + 128) as u8);
            n /= 128;
        }
        out.push(n as u8);
    }
    fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        // Literal header field without indexing, new name.
        out.push(0);
        int(out, name.len());
        out.extend_from_slice(name);
        int(out, value.len());
        out.extend_from_slice(value);
    }
    fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = payload.len() as u32;
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }

    let mut block = Vec::new();
    for (name, value) in [
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (b":path", path.as_bytes()),
        (b":authority", addr.as_bytes()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (b"authorization", value),
    ] {
        literal(&mut block, name, value);
    }
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(&mut bytes, 4, 0, 0, &[]); // SETTINGS
    let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let kind = if i == 0 { 1 } else { 9 }; // HEADERS, CONTINUATION
        let mut flags = if i + 1 == chunks.len() { 0x4 } else { 0 }; // END_HEADERS
        if i == 0 {
            flags |= 0x1; // END_STREAM: no message
        }
        frame(&mut bytes, kind, flags, 1, chunk);
    }
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut read, mut write) = socket.split();
    // The server may close the connection before it has read everything.
    let writing = async {
        let _ = write.write_all(&bytes).await;
        let _ = write.flush().await;
    };
    let reading = async {
        let mut seen = Vec::new();
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 65_536];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), read.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    seen.push("closed");
                    return seen;
                }
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => {
                    seen.push("quiet");
                    return seen;
                }
            }
            while buf.len() >= 9 {
                let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
                if buf.len() < 9 + len {
                    break;
                }
                seen.push(match buf[3] {
                    0 => "DATA",
                    1 => "HEADERS",
                    3 => "RST_STREAM",
                    4 => "SETTINGS",
                    6 => "PING",
                    7 => "GOAWAY",
                    8 => "WINDOW_UPDATE",
                    _ => "other",
                });
                buf.drain(..9 + len);
            }
        }
    };
    let ((), seen) = tokio::join!(writing, reading);
    seen
}

#[tokio::test]
async fn oversized_tokens_are_refused_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let keys = Keys::new();
    app.publish_standard_card().await;
    let victim = tenant(&app, "victim", "").await;
    let before = state(&app, &victim.account.id).await;
    let get_balance = "/allot.v1.LedgerService/GetBalance";
    let call = |token: String| {
        let channel = app.channel.clone();
        async move {
            let header = format!("Bearer {token}");
            call_route(&channel, Some(&header), get_balance).await
        }
    };

    // Large but inside every limit: verified like any other token.
    let large = padded_token(&keys, 15_000);
    let status = call(large.clone()).await.expect_err("empty GetBalance");
    assert_error(&status, Code::InvalidArgument, "MISSING_FIELD");
    let forged = with_parts(&large, None, None, Some(signature_of(&keys.hs(&admin()))));
    let status = call(forged).await.expect_err("forged");
    assert_error(&status, Code::Unauthenticated, BAD_SIGNATURE);

    // One byte over MAX_TOKEN_LEN, validly signed: refused, by the verifier (TOKEN_MALFORMED)
    // or before it by the transport (HTTP/2 header list over 16 KiB: HTTP 431, no ErrorInfo).
    let over = padded_token(&keys, MAX_TOKEN_LEN + 1);
    assert!(over.len() > MAX_TOKEN_LEN);
    let got = refusal(&call(over).await.expect_err("a token over MAX_TOKEN_LEN"));
    let by_verifier = got.code == Code::Unauthenticated && got.reason == MALFORMED;
    let by_transport = got.reason.is_empty() && got.code != Code::Ok;
    assert!(by_verifier || by_transport, "{got:?}");
    eprintln!("token over MAX_TOKEN_LEN: {got:?}");

    // A 4 MB header through the client library (which may refuse to send it) and by hand.
    let huge = format!(
        "Bearer {}.{}.{}",
        "e".repeat(2 << 20),
        "f".repeat(2 << 20),
        "g"
    );
    let got = refusal(
        &call_route(&app.channel, Some(&huge), get_balance)
            .await
            .expect_err("4 MB"),
    );
    assert!(
        got.reason.is_empty() || (got.code == Code::Unauthenticated && got.reason == MALFORMED),
        "{got:?}"
    );
    eprintln!("4 MB header, client library: {got:?}");
    let seen = raw_h2_request(&app.addr.to_string(), get_balance, huge.as_bytes()).await;
    eprintln!("4 MB header, by hand: the server answered {seen:?}");
    assert!(
        seen.iter()
            .any(|f| matches!(*f, "GOAWAY" | "RST_STREAM" | "HEADERS" | "closed")),
        "the server neither answered nor closed: {seen:?}"
    );

    // Still serving: the old channel, a new connection, and state untouched.
    call(app.admin.clone()).await.expect_err("empty GetBalance");
    assert_serving(&app.addr.to_string(), &app.admin).await;
    assert_unchanged(&[before], &[state(&app, &victim.account.id).await]);
    app.stop().await;
}

// ---- 2a. roles -----------------------------------------------------------------------------

/// The roles below admin (which passes every role check).
const ROLES: [Role; 4] = [
    Role::Service,
    Role::AccountManager,
    Role::Procurement,
    Role::Operator,
];

#[track_caller]
fn assert_role_denied(status: &Status, method: &str, what: &str) {
    let got = refusal(status);
    assert!(
        got.code == Code::PermissionDenied && got.reason == "ROLE_NOT_ALLOWED",
        "{what}: {got:?}"
    );
    assert_eq!(
        got.metadata.get("method").map(String::as_str),
        Some(method),
        "{what}"
    );
}

#[tokio::test]
async fn roles_cannot_be_escalated() {
    let started = Instant::now();
    let app = spawn_app().await;
    let keys = Keys::new();
    app.publish_standard_card().await;
    let victim = tenant(&app, "victim", "").await;
    let draft = app
        .rates(&app.admin)
        .create_rate_card(card_request(
            vec![rate("one", "0", &[], "")],
            "a draft that makes everything free",
        ))
        .await
        .expect("draft")
        .into_inner();
    let cards = |app: &TestApp| {
        let mut client = app.rates(&app.admin);
        async move {
            client
                .list_rate_cards(proto::ListRateCardsRequest {
                    page_size: 100,
                    ..Default::default()
                })
                .await
                .expect("rate cards")
                .into_inner()
        }
    };
    let cards_before = cards(&app).await;
    let before = state(&app, &victim.account.id).await;
    let mut calls = 0;

    // Every role on every method of ROUTES: refused with the method named where the role is
    // not listed; past the role check where it is (a token for a nonexistent account, so
    // nothing can change).
    for (path, access) in ROUTES {
        let Access::Roles(allowed) = access else {
            panic!("{path} is public");
        };
        let method = method_name(path);
        for role in ROLES {
            calls += 1;
            if allowed.contains(&role) {
                let t = token(&[role.as_str()], &[GHOST_ACCOUNT]);
                if let Err(status) =
                    call_route(&app.channel, Some(&format!("Bearer {t}")), path).await
                {
                    let got = refusal(&status);
                    assert!(
                        got.reason != "ROLE_NOT_ALLOWED"
                            && !matches!(
                                got.code,
                                Code::Internal | Code::Unknown | Code::Unauthenticated
                            ),
                        "{role} may call {method}: {got:?}"
                    );
                }
            } else {
                let t = token(&[role.as_str()], &["*"]);
                let status = call_route(&app.channel, Some(&format!("Bearer {t}")), path)
                    .await
                    .expect_err("a role that may not call the method");
                assert_role_denied(&status, method, &format!("{role} on {method}"));
            }
        }
        // Every role the method does not list, together.
        let others: Vec<&str> = ROLES
            .iter()
            .filter(|r| !allowed.contains(r))
            .map(|r| r.as_str())
            .collect();
        if !others.is_empty() {
            calls += 1;
            let t = token(&others, &["*"]);
            let status = call_route(&app.channel, Some(&format!("Bearer {t}")), path)
                .await
                .expect_err("roles that may not call the method");
            assert_role_denied(&status, method, &format!("{others:?} on {method}"));
        }
    }

    // Role names that look like admin (or like a list of roles) are not roles.
    let lookalikes: Vec<Value> = vec![
        json!(["superuser"]),
        json!(["root"]),
        json!(["ADMIN"]),
        json!(["Admin"]),
        json!(["admin "]),
        json!([" admin"]),
        json!(["admin\u{0}"]),
        json!(["admin\n"]),
        json!(["ａｄｍｉｎ"]),
        json!(["adm\u{0131}n"]),
        json!(["service,admin"]),
        json!(["service admin"]),
        json!(["role:admin"]),
        json!(["roles/admin"]),
        json!(["*"]),
        json!([""]),
        json!([]),
    ];
    let mut tricks: Vec<(String, String)> = lookalikes
        .into_iter()
        .map(|roles| {
            let name = format!("roles {roles}");
            let c = edit(admin(), |c| {
                c.insert("roles".into(), roles);
            });
            (name, keys.hs(&c))
        })
        .collect();
    tricks.push((
        "no roles claim".into(),
        keys.hs(&edit(admin(), |c| {
            c.remove("roles");
        })),
    ));
    tricks.push((
        "admin in another claim".into(),
        keys.hs(&edit(admin(), |c| {
            c.remove("roles");
            c.insert("role".into(), json!("admin"));
            c.insert("scope".into(), json!("admin"));
            c.insert("groups".into(), json!(["admin"]));
            c.insert("admin".into(), json!(true));
        })),
    ));
    for (name, t) in &tricks {
        for (path, _) in ROUTES {
            calls += 1;
            let status = call_route(&app.channel, Some(&format!("Bearer {t}")), path)
                .await
                .expect_err(name);
            assert_role_denied(&status, method_name(path), &format!("{name} on {path}"));
        }
    }

    // Real writes on the victim by roles that may not make them.
    let v = &victim;
    let procurement = token(&["procurement"], &[&v.account.id]);
    let service = token(&["service"], &[&v.account.id]);
    let service_all = token(&["service"], &["*"]);
    let manager_all = token(&["account_manager"], &["*"]);
    let operator_all = token(&["operator"], &["*"]);
    let readers = token(&["procurement", "account_manager"], &[&v.account.id]);
    let debit = || debit_request(&v.account.id, "image", ATTACK_REQUEST_ID);
    let grant = || proto::CreateGrantRequest {
        request_id: ATTACK_REQUEST_ID.into(),
        ..grant_request(&v.wallet.id, "1000", "0")
    };
    let adjust = || proto::AdjustBalanceRequest {
        wallet_id: v.wallet.id.clone(),
        units: "1000".into(),
        reason: "escalation".into(),
        request_id: ATTACK_REQUEST_ID.into(),
    };
    let void = || proto::VoidGrantRequest {
        id: v.grant.id.clone(),
        reason: "escalation".into(),
        request_id: ATTACK_REQUEST_ID.into(),
    };
    let refund = || proto::RefundRequest {
        transaction_id: v.debit.id.clone(),
        request_id: ATTACK_REQUEST_ID.into(),
        ..Default::default()
    };
    let publish = || proto::PublishRateCardRequest {
        request_id: ATTACK_REQUEST_ID.into(),
        ..publish_request(&draft)
    };
    let window = {
        let d0 = now_seconds().div_euclid(DAY_SECS) * DAY_SECS;
        (Some(ts_secs(d0)), Some(ts_secs(d0 + DAY_SECS)))
    };
    let attempts: Vec<(&str, &str, Result<(), Status>)> = vec![
        (
            "procurement",
            "Debit",
            app.ledger(&procurement).debit(debit()).await.map(drop),
        ),
        (
            "procurement",
            "Reserve",
            app.ledger(&procurement)
                .reserve(proto::ReserveRequest {
                    account_id: v.account.id.clone(),
                    units: "50".into(),
                    request_id: ATTACK_REQUEST_ID.into(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "procurement",
            "Refund",
            app.ledger(&procurement).refund(refund()).await.map(drop),
        ),
        (
            "procurement",
            "CreateGrant",
            app.grants(&procurement)
                .create_grant(grant())
                .await
                .map(drop),
        ),
        (
            "procurement",
            "AdjustBalance",
            app.grants(&procurement)
                .adjust_balance(adjust())
                .await
                .map(drop),
        ),
        (
            "procurement",
            "VoidGrant",
            app.grants(&procurement).void_grant(void()).await.map(drop),
        ),
        (
            "procurement + account_manager",
            "Debit",
            app.ledger(&readers).debit(debit()).await.map(drop),
        ),
        (
            "service",
            "CreateGrant",
            app.grants(&service).create_grant(grant()).await.map(drop),
        ),
        (
            "service",
            "AdjustBalance",
            app.grants(&service)
                .adjust_balance(adjust())
                .await
                .map(drop),
        ),
        (
            "service",
            "VoidGrant",
            app.grants(&service).void_grant(void()).await.map(drop),
        ),
        (
            "service",
            "UpdateAccount",
            app.accounts(&service)
                .update_account(proto::UpdateAccountRequest {
                    request_id: ATTACK_REQUEST_ID.into(),
                    ..state_request(&v.account.id, proto::AccountState::Closed)
                })
                .await
                .map(drop),
        ),
        (
            "service",
            "UpdateWallet",
            app.accounts(&service)
                .update_wallet(proto::UpdateWalletRequest {
                    wallet: Some(proto::Wallet {
                        id: v.wallet.id.clone(),
                        overdraft_limit: "1000000".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["overdraft_limit".into()],
                    }),
                    request_id: ATTACK_REQUEST_ID.into(),
                })
                .await
                .map(drop),
        ),
        (
            "service",
            "SetAccountOverride",
            app.rates(&service)
                .set_account_override(proto::SetAccountOverrideRequest {
                    request_id: ATTACK_REQUEST_ID.into(),
                    ..override_request(&v.account.id)
                })
                .await
                .map(drop),
        ),
        (
            "service",
            "CreateAllotmentSchedule",
            app.grants(&service)
                .create_allotment_schedule(proto::CreateAllotmentScheduleRequest {
                    request_id: ATTACK_REQUEST_ID.into(),
                    ..schedule_request(&v.wallet.id, "1000", proto::SchedulePeriod::Daily, None)
                })
                .await
                .map(drop),
        ),
        (
            "service",
            "ExportTransactions",
            app.reports(&service)
                .export_transactions(proto::ExportTransactionsRequest {
                    account_id: v.account.id.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "service (all accounts)",
            "PublishRateCard",
            app.rates(&service_all)
                .publish_rate_card(publish())
                .await
                .map(drop),
        ),
        (
            "service (all accounts)",
            "CreateRateCard",
            app.rates(&service_all)
                .create_rate_card(card_request(vec![rate("one", "0", &[], "")], "free"))
                .await
                .map(drop),
        ),
        (
            "account_manager (all accounts)",
            "PublishRateCard",
            app.rates(&manager_all)
                .publish_rate_card(publish())
                .await
                .map(drop),
        ),
        (
            "account_manager (all accounts)",
            "GetMarginReport",
            app.reports(&manager_all)
                .get_margin_report(proto::GetMarginReportRequest {
                    start_time: window.0,
                    end_time: window.1,
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "account_manager (all accounts)",
            "SimulateRateCard",
            app.rates(&manager_all)
                .simulate_rate_card(proto::SimulateRateCardRequest {
                    version: draft.version,
                    start_time: window.0,
                    end_time: window.1,
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "account_manager (all accounts)",
            "Debit",
            app.ledger(&manager_all).debit(debit()).await.map(drop),
        ),
        (
            "account_manager (all accounts)",
            "CaptureReservation",
            app.ledger(&manager_all)
                .capture_reservation(proto::CaptureReservationRequest {
                    reservation_id: v.hold.id.clone(),
                    units: "1".into(),
                    request_id: ATTACK_REQUEST_ID.into(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "operator (all accounts)",
            "Debit",
            app.ledger(&operator_all).debit(debit()).await.map(drop),
        ),
        (
            "operator (all accounts)",
            "CreateGrant",
            app.grants(&operator_all)
                .create_grant(grant())
                .await
                .map(drop),
        ),
        (
            "operator (all accounts)",
            "AdjustBalance",
            app.grants(&operator_all)
                .adjust_balance(adjust())
                .await
                .map(drop),
        ),
        (
            "operator (all accounts)",
            "Refund",
            app.ledger(&operator_all).refund(refund()).await.map(drop),
        ),
        (
            "operator (all accounts)",
            "VoidGrant",
            app.grants(&operator_all).void_grant(void()).await.map(drop),
        ),
        (
            "operator (all accounts)",
            "CreateAccount",
            app.accounts(&operator_all)
                .create_account(proto::CreateAccountRequest {
                    request_id: ATTACK_REQUEST_ID.into(),
                    ..new_account("operator-made", &v.account.id)
                })
                .await
                .map(drop),
        ),
    ];
    for (who, method, result) in &attempts {
        calls += 1;
        let status = result.as_ref().expect_err(&format!("{who} {method}"));
        assert_role_denied(status, method, &format!("{who} {method}"));
    }

    assert_unchanged(&[before], &[state(&app, &victim.account.id).await]);
    assert_eq!(
        cards(&app).await,
        cards_before,
        "a refused call changed the rate cards"
    );
    attack_request_id_is_unused(&app, &victim).await;
    eprintln!(
        "roles: {} routes × {} roles, {} role-name tricks, {} real writes; {calls} calls, {:?}",
        ROUTES.len(),
        ROLES.len(),
        tricks.len(),
        attempts.len(),
        started.elapsed()
    );
    app.stop().await;
}

// ---- 2b. scope -----------------------------------------------------------------------------

/// The ids a walk aims at: one of each kind, all of one account (or none: [`Target::ghost`]).
#[derive(Clone, Debug)]
struct Target {
    account: String,
    external: String,
    wallet: String,
    grant: String,
    hold: String,
    hold_2: String,
    txn: String,
    endpoint: String,
}

impl Target {
    fn of(t: &Tenant) -> Self {
        Target {
            account: t.account.id.clone(),
            external: t.account.external_id.clone(),
            wallet: t.wallet.id.clone(),
            grant: t.grant.id.clone(),
            hold: t.hold.id.clone(),
            hold_2: t.hold_2.id.clone(),
            txn: t.debit.id.clone(),
            endpoint: t.endpoint.id.clone(),
        }
    }

    fn ghost() -> Self {
        Target {
            account: GHOST_ACCOUNT.into(),
            external: GHOST_EXTERNAL.into(),
            wallet: GHOST_WALLET.into(),
            grant: GHOST_GRANT.into(),
            hold: GHOST_HOLD.into(),
            hold_2: GHOST_HOLD_2.into(),
            txn: GHOST_TXN.into(),
            endpoint: GHOST_ENDPOINT.into(),
        }
    }

    fn ids(&self) -> [(&str, &str); 8] {
        [
            ("<account>", &self.account),
            ("<external>", &self.external),
            ("<wallet>", &self.wallet),
            ("<grant>", &self.grant),
            ("<hold>", &self.hold),
            ("<hold_2>", &self.hold_2),
            ("<txn>", &self.txn),
            ("<endpoint>", &self.endpoint),
        ]
    }

    /// `text` with this target's ids replaced by their names.
    fn normalize(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (name, id) in self.ids() {
            text = text.replace(id, name);
        }
        text
    }
}

/// What a probe got: the ids of the accounts it was shown, or the refusal.
type Outcome = Result<Vec<String>, Refusal>;

struct Probe {
    method: &'static str,
    how: &'static str,
    outcome: Outcome,
}

fn answered<T>(result: Result<tonic::Response<T>, Status>) -> Outcome {
    result.map(|_| Vec::new()).map_err(|s| refusal(&s))
}

/// A watch's first message (the snapshot): the account it is of.
async fn watched(
    result: Result<tonic::Response<tonic::Streaming<proto::BalanceEvent>>, Status>,
) -> Outcome {
    let mut stream = result.map_err(|s| refusal(&s))?.into_inner();
    let first = stream.message().await.map_err(|s| refusal(&s))?;
    Ok(first.map(|event| event.account_id).into_iter().collect())
}

fn batch_outcome(item: &proto::DebitResult) -> Outcome {
    match &item.result {
        Some(proto::debit_result::Result::Response(_)) => Ok(Vec::new()),
        Some(proto::debit_result::Result::Error(e)) => Err(Refusal {
            code: Code::from_i32(e.code),
            reason: e.reason.clone(),
            message: e.message.clone(),
            metadata: e.metadata.clone().into_iter().collect(),
        }),
        None => panic!("a batch result without an outcome"),
    }
}

async fn export(app: &TestApp, token: &str, request: proto::ExportTransactionsRequest) -> Outcome {
    let mut stream = app
        .reports(token)
        .export_transactions(request)
        .await
        .map_err(|s| refusal(&s))?
        .into_inner();
    let mut accounts = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(|s| refusal(&s))? {
        accounts.extend(chunk.transactions.into_iter().map(|t| t.account_id));
    }
    Ok(accounts)
}

/// Today (UTC midnight) to tomorrow: a window every report accepts.
fn today() -> (
    Option<prost_types::Timestamp>,
    Option<prost_types::Timestamp>,
) {
    let d0 = now_seconds().div_euclid(DAY_SECS) * DAY_SECS;
    (Some(ts_secs(d0)), Some(ts_secs(d0 + DAY_SECS)))
}

/// Every method that takes an account, wallet, grant, reservation or transaction, aimed at
/// `t` with `token`: each request valid, so that only scope can refuse it. Mutations carry
/// `request_id` (fresh ones when `None`).
async fn walk(
    app: &TestApp,
    token: &str,
    t: &Target,
    card: i64,
    request_id: Option<&str>,
) -> Vec<Probe> {
    let rid = || request_id.map_or_else(uuid, str::to_string);
    let (start, end) = today();
    let mut accounts = app.accounts(token);
    let mut grants = app.grants(token);
    let mut rates = app.rates(token);
    let mut ledger = app.ledger(token);
    let mut reports = app.reports(token);
    let mut out = Vec::new();
    let mut add = |method: &'static str, how: &'static str, outcome: Outcome| {
        out.push(Probe {
            method,
            how,
            outcome,
        });
    };

    // AccountService
    add(
        "CreateAccount",
        "parent_id",
        answered(
            accounts
                .create_account(proto::CreateAccountRequest {
                    request_id: rid(),
                    ..new_account(&format!("intruder-{}", uuid()), &t.account)
                })
                .await,
        ),
    );
    add(
        "GetAccount",
        "id",
        answered(
            accounts
                .get_account(proto::GetAccountRequest {
                    id: t.account.clone(),
                })
                .await,
        ),
    );
    add(
        "ListAccounts",
        "parent_id",
        accounts
            .list_accounts(proto::ListAccountsRequest {
                parent_id: t.account.clone(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().accounts.into_iter().map(|a| a.id).collect())
            .map_err(|s| refusal(&s)),
    );
    add(
        "UpdateAccount",
        "id",
        answered(
            accounts
                .update_account(proto::UpdateAccountRequest {
                    account: Some(proto::Account {
                        id: t.account.clone(),
                        display_name: "Hijacked".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["display_name".into()],
                    }),
                    request_id: rid(),
                })
                .await,
        ),
    );
    add(
        "CreateWallet",
        "account_id",
        answered(
            accounts
                .create_wallet(proto::CreateWalletRequest {
                    wallet: Some(proto::Wallet {
                        account_id: t.account.clone(),
                        unit: format!("u{}", &uuid()[..8]),
                        ..Default::default()
                    }),
                    request_id: rid(),
                })
                .await,
        ),
    );
    add(
        "GetWallet",
        "id",
        answered(
            accounts
                .get_wallet(proto::GetWalletRequest {
                    id: t.wallet.clone(),
                })
                .await,
        ),
    );
    add(
        "ListWallets",
        "account_id",
        answered(
            accounts
                .list_wallets(proto::ListWalletsRequest {
                    account_id: t.account.clone(),
                    ..Default::default()
                })
                .await,
        ),
    );
    add(
        "UpdateWallet",
        "id",
        answered(
            accounts
                .update_wallet(proto::UpdateWalletRequest {
                    wallet: Some(proto::Wallet {
                        id: t.wallet.clone(),
                        overdraft_limit: "1000".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["overdraft_limit".into()],
                    }),
                    request_id: rid(),
                })
                .await,
        ),
    );

    // GrantService
    add(
        "CreateGrant",
        "wallet_id",
        answered(
            grants
                .create_grant(proto::CreateGrantRequest {
                    request_id: rid(),
                    ..grant_request(&t.wallet, "1000", "0")
                })
                .await,
        ),
    );
    add(
        "ListGrants",
        "wallet_id",
        answered(
            grants
                .list_grants(proto::ListGrantsRequest {
                    wallet_id: t.wallet.clone(),
                    ..Default::default()
                })
                .await,
        ),
    );
    add(
        "VoidGrant",
        "id",
        answered(
            grants
                .void_grant(proto::VoidGrantRequest {
                    id: t.grant.clone(),
                    reason: "cross-tenant".into(),
                    request_id: rid(),
                })
                .await,
        ),
    );
    add(
        "AdjustBalance",
        "wallet_id",
        answered(
            grants
                .adjust_balance(proto::AdjustBalanceRequest {
                    wallet_id: t.wallet.clone(),
                    units: "1000".into(),
                    reason: "cross-tenant".into(),
                    request_id: rid(),
                })
                .await,
        ),
    );
    add(
        "CreateAllotmentSchedule",
        "wallet_id",
        answered(
            grants
                .create_allotment_schedule(proto::CreateAllotmentScheduleRequest {
                    request_id: rid(),
                    ..schedule_request(&t.wallet, "1000", proto::SchedulePeriod::Daily, None)
                })
                .await,
        ),
    );
    add(
        "ListAllotmentSchedules",
        "wallet_id",
        answered(
            grants
                .list_allotment_schedules(proto::ListAllotmentSchedulesRequest {
                    wallet_id: t.wallet.clone(),
                    ..Default::default()
                })
                .await,
        ),
    );

    // RateCardService: the methods that take an account.
    for (how, account_id, external_id) in [
        ("account_id", t.account.clone(), String::new()),
        ("external_id", String::new(), t.external.clone()),
    ] {
        add(
            "QuotePrice",
            how,
            answered(
                rates
                    .quote_price(proto::QuotePriceRequest {
                        account_id,
                        external_id,
                        request_type: "one".into(),
                        ..Default::default()
                    })
                    .await,
            ),
        );
    }
    add(
        "SetAccountOverride",
        "account_id",
        answered(
            rates
                .set_account_override(proto::SetAccountOverrideRequest {
                    request_id: rid(),
                    ..override_request(&t.account)
                })
                .await,
        ),
    );
    for (how, below) in [("account_id", false), ("account_id + sub-accounts", true)] {
        add(
            "ListAccountOverrides",
            how,
            answered(
                rates
                    .list_account_overrides(proto::ListAccountOverridesRequest {
                        account_id: t.account.clone(),
                        include_sub_accounts: below,
                        ..Default::default()
                    })
                    .await,
            ),
        );
    }
    add(
        "SimulateRateCard",
        "account_id",
        answered(
            rates
                .simulate_rate_card(proto::SimulateRateCardRequest {
                    version: card,
                    start_time: start,
                    end_time: end,
                    account_id: t.account.clone(),
                    include_sub_accounts: true,
                    ..Default::default()
                })
                .await,
        ),
    );

    // LedgerService
    for (how, account_id, external_id) in [
        ("account_id", t.account.clone(), String::new()),
        ("external_id", String::new(), t.external.clone()),
    ] {
        add(
            "Debit",
            how,
            answered(
                ledger
                    .debit(proto::DebitRequest {
                        account_id: account_id.clone(),
                        external_id: external_id.clone(),
                        request_type: "one".into(),
                        request_id: rid(),
                        ..Default::default()
                    })
                    .await,
            ),
        );
        add(
            "Reserve",
            how,
            answered(
                ledger
                    .reserve(proto::ReserveRequest {
                        account_id: account_id.clone(),
                        external_id: external_id.clone(),
                        units: "1".into(),
                        request_id: rid(),
                        ..Default::default()
                    })
                    .await,
            ),
        );
        add(
            "GetBalance",
            how,
            answered(
                ledger
                    .get_balance(proto::GetBalanceRequest {
                        account_id: account_id.clone(),
                        external_id: external_id.clone(),
                        ..Default::default()
                    })
                    .await,
            ),
        );
        add(
            "WatchBalance",
            how,
            watched(
                ledger
                    .watch_balance(proto::WatchBalanceRequest {
                        account_id: account_id.clone(),
                        external_id: external_id.clone(),
                        ..Default::default()
                    })
                    .await,
            )
            .await,
        );
        add(
            "ListTransactions",
            how,
            answered(
                ledger
                    .list_transactions(proto::ListTransactionsRequest {
                        account_id,
                        external_id,
                        ..Default::default()
                    })
                    .await,
            ),
        );
    }
    let batch = ledger
        .batch_debit(proto::BatchDebitRequest {
            debits: vec![
                proto::DebitRequest {
                    account_id: t.account.clone(),
                    request_type: "one".into(),
                    request_id: rid(),
                    ..Default::default()
                },
                proto::DebitRequest {
                    external_id: t.external.clone(),
                    request_type: "one".into(),
                    request_id: uuid(),
                    ..Default::default()
                },
            ],
        })
        .await;
    match batch {
        Ok(response) => {
            let results = response.into_inner().results;
            assert_eq!(results.len(), 2);
            add("BatchDebit", "account_id", batch_outcome(&results[0]));
            add("BatchDebit", "external_id", batch_outcome(&results[1]));
        }
        Err(status) => {
            add("BatchDebit", "account_id", Err(refusal(&status)));
            add("BatchDebit", "external_id", Err(refusal(&status)));
        }
    }
    add(
        "CaptureReservation",
        "reservation_id",
        answered(
            ledger
                .capture_reservation(proto::CaptureReservationRequest {
                    reservation_id: t.hold.clone(),
                    units: "1".into(),
                    request_id: rid(),
                    ..Default::default()
                })
                .await,
        ),
    );
    add(
        "ReleaseReservation",
        "reservation_id",
        answered(
            ledger
                .release_reservation(proto::ReleaseReservationRequest {
                    reservation_id: t.hold_2.clone(),
                    request_id: rid(),
                })
                .await,
        ),
    );
    add(
        "Refund",
        "transaction_id",
        answered(
            ledger
                .refund(proto::RefundRequest {
                    transaction_id: t.txn.clone(),
                    reason: "cross-tenant".into(),
                    request_id: rid(),
                    ..Default::default()
                })
                .await,
        ),
    );

    // ReportService
    for (how, account_id, wallet_id) in [
        ("account_id", t.account.clone(), String::new()),
        ("wallet_id", String::new(), t.wallet.clone()),
    ] {
        add(
            "GetStatement",
            how,
            answered(
                reports
                    .get_statement(proto::GetStatementRequest {
                        account_id: account_id.clone(),
                        wallet_id: wallet_id.clone(),
                        start_time: start,
                        end_time: end,
                        ..Default::default()
                    })
                    .await,
            ),
        );
        add(
            "GetBudget",
            how,
            answered(
                reports
                    .get_budget(proto::GetBudgetRequest {
                        account_id: account_id.clone(),
                        wallet_id: wallet_id.clone(),
                        ..Default::default()
                    })
                    .await,
            ),
        );
        add(
            "ExportTransactions",
            how,
            export(
                app,
                token,
                proto::ExportTransactionsRequest {
                    account_id,
                    wallet_id,
                    ..Default::default()
                },
            )
            .await
            .map(|_| Vec::new()),
        );
    }
    add(
        "GetBudget",
        "account_id + sub-accounts",
        answered(
            reports
                .get_budget(proto::GetBudgetRequest {
                    account_id: t.account.clone(),
                    include_sub_accounts: true,
                    ..Default::default()
                })
                .await,
        ),
    );
    add(
        "ExportTransactions",
        "account_id + sub-accounts",
        export(
            app,
            token,
            proto::ExportTransactionsRequest {
                account_id: t.account.clone(),
                include_sub_accounts: true,
                ..Default::default()
            },
        )
        .await
        .map(|_| Vec::new()),
    );
    for (how, below) in [("account_id", false), ("account_id + sub-accounts", true)] {
        add(
            "GetUsageReport",
            how,
            answered(
                reports
                    .get_usage_report(proto::GetUsageReportRequest {
                        account_id: t.account.clone(),
                        include_sub_accounts: below,
                        start_time: start,
                        end_time: end,
                        ..Default::default()
                    })
                    .await,
            ),
        );
        add(
            "GetMarginReport",
            how,
            answered(
                reports
                    .get_margin_report(proto::GetMarginReportRequest {
                        account_id: t.account.clone(),
                        include_sub_accounts: below,
                        start_time: start,
                        end_time: end,
                        ..Default::default()
                    })
                    .await,
            ),
        );
        add(
            "GetPriceTransparency",
            how,
            answered(
                reports
                    .get_price_transparency(proto::GetPriceTransparencyRequest {
                        account_id: t.account.clone(),
                        include_sub_accounts: below,
                        start_time: start,
                        end_time: end,
                        ..Default::default()
                    })
                    .await,
            ),
        );
        add(
            "ListAuditEvents",
            how,
            answered(
                reports
                    .list_audit_events(proto::ListAuditEventsRequest {
                        account_id: t.account.clone(),
                        include_sub_accounts: below,
                        ..Default::default()
                    })
                    .await,
            ),
        );
    }

    // WebhookService (the endpoint is deleted last: the owner's walk succeeds throughout).
    let mut hooks = app.webhooks(token);
    add(
        "CreateWebhookEndpoint",
        "account_id",
        answered(
            hooks
                .create_webhook_endpoint(proto::CreateWebhookEndpointRequest {
                    request_id: rid(),
                    ..endpoint_request(&t.account)
                })
                .await,
        ),
    );
    add(
        "ListWebhookEndpoints",
        "account_id",
        answered(
            hooks
                .list_webhook_endpoints(proto::ListWebhookEndpointsRequest {
                    account_id: t.account.clone(),
                    ..Default::default()
                })
                .await,
        ),
    );
    add(
        "GetWebhookEndpoint",
        "endpoint_id",
        answered(
            hooks
                .get_webhook_endpoint(proto::GetWebhookEndpointRequest {
                    endpoint_id: t.endpoint.clone(),
                })
                .await,
        ),
    );
    add(
        "UpdateWebhookEndpoint",
        "endpoint.id",
        answered(
            hooks
                .update_webhook_endpoint(proto::UpdateWebhookEndpointRequest {
                    endpoint: Some(proto::WebhookEndpoint {
                        id: t.endpoint.clone(),
                        url: "http://127.0.0.1:9/elsewhere".into(),
                        ..Default::default()
                    }),
                    update_mask: None,
                    request_id: rid(),
                })
                .await,
        ),
    );
    add(
        "RotateWebhookSecret",
        "endpoint_id",
        answered(
            hooks
                .rotate_webhook_secret(proto::RotateWebhookSecretRequest {
                    endpoint_id: t.endpoint.clone(),
                    request_id: rid(),
                })
                .await,
        ),
    );
    add(
        "ListWebhookDeliveries",
        "endpoint_id",
        answered(
            hooks
                .list_webhook_deliveries(proto::ListWebhookDeliveriesRequest {
                    endpoint_id: t.endpoint.clone(),
                    ..Default::default()
                })
                .await,
        ),
    );
    add(
        "ReplayWebhookDeliveries",
        "endpoint_id",
        answered(
            hooks
                .replay_webhook_deliveries(proto::ReplayWebhookDeliveriesRequest {
                    endpoint_id: t.endpoint.clone(),
                    start_time: start,
                    end_time: end,
                    request_id: rid(),
                    ..Default::default()
                })
                .await,
        ),
    );
    add(
        "DeleteWebhookEndpoint",
        "endpoint_id",
        answered(
            hooks
                .delete_webhook_endpoint(proto::DeleteWebhookEndpointRequest {
                    endpoint_id: t.endpoint.clone(),
                    request_id: rid(),
                })
                .await,
        ),
    );
    out
}

/// Methods of `ROUTES` that take no account, wallet, grant, reservation or transaction, so
/// the walk cannot aim them at another tenant.
const NOT_WALKED: &[(&str, &str)] = &[
    // Rate cards belong to no account: changing them needs a token for all accounts; a scoped
    // token is refused GLOBAL_SCOPE_REQUIRED (checked in the scope test).
    ("CreateRateCard", "rate cards belong to no account"),
    ("PublishRateCard", "rate cards belong to no account"),
    // The published price list is the same for every caller (drafts, routes and provider
    // costs only for operators: tests/auth.rs, tests/insight.rs).
    ("GetRateCard", "the price list is global"),
    ("ListRateCards", "the price list is global"),
];

/// The accounts whose audit events `token` lists (without an account filter). Rate-card
/// publishes concern no account and every reader sees them (docs/ARCHITECTURE.md, "the audit
/// trail"): they are left out.
async fn audited_accounts(app: &TestApp, token: &str) -> BTreeSet<String> {
    let events = app
        .reports(token)
        .list_audit_events(proto::ListAuditEventsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("audit events")
        .into_inner()
        .audit_events;
    events
        .into_iter()
        .filter(|e| !(e.account_id.is_empty() && e.resource.starts_with("rate_cards/")))
        .map(|e| e.account_id)
        .collect()
}

/// The ids of `root` and every account below it.
fn subtree(all: &[proto::Account], root: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::from([root.to_string()]);
    loop {
        let before = ids.len();
        for a in all {
            if ids.contains(&a.parent_id) {
                ids.insert(a.id.clone());
            }
        }
        if ids.len() == before {
            return ids;
        }
    }
}

#[tokio::test]
async fn scope_cannot_be_escaped_through_any_method() {
    let started = Instant::now();
    let app = spawn_app().await;
    let w = world(&app).await;
    let victims = [&w.a, &w.a2, &w.b, &w.b1];
    let before = states(&app, &victims).await;
    let card = w.card.version;
    // Admin scoped to an account: every role, so only scope stands in the way.
    let tenant_a = token(&["admin"], &[&w.a.account.id]);
    let dept_a1 = token(&["admin"], &[&w.a1.account.id]);
    let mut wrong: Vec<String> = Vec::new();
    let mut calls = 0;
    let mut walked: BTreeSet<&str> = BTreeSet::new();

    // The owner's walk over its own department succeeds everywhere: the requests are valid,
    // only scope can refuse them. (A parent's token reaches its departments: docs SPEC,
    // "Scope covers an account's sub-accounts too".)
    for (who, t, target) in [
        ("tenant A's token", &tenant_a, &w.a1),
        ("department A1's token", &dept_a1, &w.a1x),
    ] {
        for probe in walk(&app, t, &Target::of(target), card, None).await {
            calls += 1;
            if let Err(got) = &probe.outcome {
                wrong.push(format!(
                    "control: {who} on its own {}: {} by {}: {got:?}",
                    target.account.external_id, probe.method, probe.how
                ));
            }
        }
    }

    // Cross-tenant, up to the parent, across to the sibling: refused, and answered exactly as
    // for ids that do not exist.
    let all = app.all_accounts(&app.admin).await;
    let reach_a = subtree(&all, &w.a.account.id);
    let reach_a1 = subtree(&all, &w.a1.account.id);
    let ghost = Target::ghost();
    let ghost_a = walk(&app, &tenant_a, &ghost, card, Some(ATTACK_REQUEST_ID)).await;
    let ghost_a1 = walk(&app, &dept_a1, &ghost, card, Some(ATTACK_REQUEST_ID)).await;
    calls += ghost_a.len() + ghost_a1.len();
    for (who, t, reach, ghosts, victim) in [
        ("tenant A's token", &tenant_a, &reach_a, &ghost_a, &w.b),
        ("tenant A's token", &tenant_a, &reach_a, &ghost_a, &w.b1),
        (
            "department A1's token",
            &dept_a1,
            &reach_a1,
            &ghost_a1,
            &w.a,
        ),
        (
            "department A1's token",
            &dept_a1,
            &reach_a1,
            &ghost_a1,
            &w.a2,
        ),
    ] {
        let target = Target::of(victim);
        let mut probes = walk(&app, t, &target, card, Some(ATTACK_REQUEST_ID)).await;
        assert_eq!(probes.len(), ghosts.len());
        for probe in probes.iter_mut().filter(|p| p.method == "ListAccounts") {
            // Children of the parent that lie in the caller's own scope are the caller's (a
            // department's token sees itself under its parent): only the rest counts.
            if let Ok(seen) = &mut probe.outcome {
                seen.retain(|id| !reach.contains(id));
            }
        }
        for (probe, ghost_probe) in probes.iter().zip(ghosts.iter()) {
            calls += 1;
            walked.insert(probe.method);
            let what = format!(
                "{who} on {}: {} by {}",
                victim.account.external_id, probe.method, probe.how
            );
            match (&probe.outcome, probe.method) {
                // A list filtered by a parent outside the scope is empty.
                (Ok(seen), "ListAccounts") if seen.is_empty() => {}
                (Err(got), _)
                    if got.code == Code::PermissionDenied
                        && got.reason == "ACCOUNT_OUT_OF_SCOPE" =>
                {
                    // The refusal names the id asked for, nothing else of the victim.
                    let named = got.metadata.get("id").cloned().unwrap_or_default();
                    if !target.ids().iter().any(|(_, id)| *id == named) {
                        wrong.push(format!("{what}: names {named:?}"));
                    }
                }
                (outcome, _) => wrong.push(format!("{what}: {outcome:?}")),
            }
            // Existence is not revealed: the same answer as for ids that do not exist.
            let seen = target.normalize(&format!("{:?}", probe.outcome));
            let unseen = ghost.normalize(&format!("{:?}", ghost_probe.outcome));
            if seen != unseen {
                wrong.push(format!(
                    "{what}: answered {seen} where a nonexistent id gets {unseen}"
                ));
            }
        }
    }

    // Every method of ROUTES is walked or listed as taking no account.
    for (method, why) in NOT_WALKED {
        assert!(
            !walked.contains(method),
            "{method} is walked and listed ({why})"
        );
        assert!(
            ROUTES.iter().any(|(path, _)| method_name(path) == *method),
            "{method} is not in ROUTES"
        );
    }
    for (path, _) in ROUTES {
        let method = method_name(path);
        assert!(
            walked.contains(method) || NOT_WALKED.iter().any(|(m, _)| *m == method),
            "{method} is neither walked across tenants nor listed in NOT_WALKED with a reason"
        );
    }

    // Rate cards need a token for all accounts.
    let cards_before = app
        .rates(&app.admin)
        .list_rate_cards(proto::ListRateCardsRequest::default())
        .await
        .expect("cards")
        .into_inner();
    let created = app
        .rates(&tenant_a)
        .create_rate_card(proto::CreateRateCardRequest {
            request_id: ATTACK_REQUEST_ID.into(),
            ..card_request(vec![rate("one", "0", &[], "")], "free for all")
        })
        .await;
    assert_error(
        &created.expect_err("scoped CreateRateCard"),
        Code::PermissionDenied,
        "GLOBAL_SCOPE_REQUIRED",
    );
    let draft = app
        .rates(&app.admin)
        .create_rate_card(card_request(
            vec![rate("one", "0", &[], "")],
            "free for all",
        ))
        .await
        .expect("draft")
        .into_inner();
    let published = app
        .rates(&dept_a1)
        .publish_rate_card(proto::PublishRateCardRequest {
            request_id: ATTACK_REQUEST_ID.into(),
            ..publish_request(&draft)
        })
        .await;
    assert_error(
        &published.expect_err("scoped PublishRateCard"),
        Code::PermissionDenied,
        "GLOBAL_SCOPE_REQUIRED",
    );
    calls += 2;
    let cards_after = app
        .rates(&app.admin)
        .list_rate_cards(proto::ListRateCardsRequest::default())
        .await
        .expect("cards")
        .into_inner();
    assert_eq!(
        cards_after.rate_cards.len(),
        cards_before.rate_cards.len() + 1,
        "only the admin's draft"
    );
    assert!(
        cards_after
            .rate_cards
            .iter()
            .all(|c| c.version != draft.version || c.state == proto::RateCardState::Draft as i32)
    );

    // Reads without an id see the scope only; reads over everyone need a token for all.
    let mut claims_tricks: Vec<(String, String)> = vec![
        ("tenant A's token".into(), tenant_a.clone()),
        ("department A1's token".into(), dept_a1.clone()),
    ];
    let b = &w.b.account;
    for accounts in [
        vec!["%".to_string()],
        vec!["acct_%".into()],
        vec!["_".into()],
        vec![" *".into()],
        vec!["* ".into()],
        vec!["**".into()],
        vec!["all".into()],
        vec![b.id.to_uppercase()],
        vec![format!("{} ", b.id)],
        vec![b.external_id.clone()],
        vec!["acct_".into()],
        vec![String::new()],
    ] {
        let t = token(
            &["admin"],
            &accounts.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        claims_tricks.push((format!("accounts {accounts:?}"), t));
    }
    let all_b = subtree(&all, &b.id);
    for (who, t) in &claims_tricks {
        let allowed: BTreeSet<String> = if t == &tenant_a {
            subtree(&all, &w.a.account.id)
        } else if t == &dept_a1 {
            subtree(&all, &w.a1.account.id)
        } else {
            BTreeSet::new()
        };
        let listed: BTreeSet<String> = app
            .all_accounts(t)
            .await
            .into_iter()
            .map(|a| a.id)
            .collect();
        let exported: BTreeSet<String> =
            export(&app, t, proto::ExportTransactionsRequest::default())
                .await
                .unwrap_or_else(|got| panic!("{who}: export: {got:?}"))
                .into_iter()
                .collect();
        let audited = audited_accounts(&app, t).await;
        let by_resource = app
            .reports(t)
            .list_audit_events(proto::ListAuditEventsRequest {
                resource: format!("grants/{}", w.b.grant.id),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("{who}: audit by resource: {s:?}"))
            .into_inner()
            .audit_events;
        calls += 4;
        for (list, seen) in [
            ("ListAccounts", &listed),
            ("ExportTransactions", &exported),
            ("ListAuditEvents", &audited),
        ] {
            if !seen.is_subset(&allowed) {
                wrong.push(format!(
                    "{who}: {list} shows {:?}",
                    seen.difference(&allowed).collect::<Vec<_>>()
                ));
            }
        }
        if !by_resource.is_empty() {
            wrong.push(format!(
                "{who}: ListAuditEvents by resource shows B's grant"
            ));
        }
        if allowed.is_empty() {
            let got = app
                .accounts(t)
                .get_account(proto::GetAccountRequest { id: b.id.clone() })
                .await;
            calls += 1;
            match got {
                Err(s) if refusal(&s).reason == "ACCOUNT_OUT_OF_SCOPE" => {}
                other => wrong.push(format!("{who}: GetAccount B: {other:?}")),
            }
        }
        assert!(allowed.is_disjoint(&all_b));
        // Reports over every account need a token for all of them.
        let (start, end) = today();
        let margins = app
            .reports(t)
            .get_margin_report(proto::GetMarginReportRequest {
                start_time: start,
                end_time: end,
                ..Default::default()
            })
            .await;
        let simulated = app
            .rates(t)
            .simulate_rate_card(proto::SimulateRateCardRequest {
                version: card,
                start_time: start,
                end_time: end,
                ..Default::default()
            })
            .await;
        calls += 2;
        for (method, result) in [
            ("GetMarginReport", margins.map(drop)),
            ("SimulateRateCard", simulated.map(drop)),
        ] {
            match result {
                Err(s) if s.code() == Code::InvalidArgument => {}
                other => wrong.push(format!("{who}: {method} over every account: {other:?}")),
            }
        }
    }

    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_unchanged(&before, &states(&app, &victims).await);
    attack_request_id_is_unused(&app, &w.b).await;
    eprintln!(
        "scope: {} methods walked ({} excluded), {} account-claim variants; {calls} calls, {:?}",
        walked.len(),
        NOT_WALKED.len(),
        claims_tricks.len(),
        started.elapsed()
    );
    app.stop().await;
}

// ---- regressions found by this suite -------------------------------------------------------

/// SQLite's `LIKE` ignores ASCII case, and the lists that read a scoped token's subtrees
/// (ListAccounts, ExportTransactions and ListAuditEvents without an id) matched them with it:
/// a token for `ACCT_…` read the accounts under `acct_…`, which every other method (exact ids,
/// `Caller::covers`) refuses it.
#[tokio::test]
async fn a_case_variant_of_an_account_id_in_a_token_reaches_nothing() {
    let app = spawn_app().await;
    app.publish_standard_card().await;
    let victim = tenant(&app, "victim", "").await;
    tenant(&app, "victim-dept", &victim.account.id).await;
    let t = token(&["admin"], &[&victim.account.id.to_uppercase()]);
    let status = app
        .accounts(&t)
        .get_account(proto::GetAccountRequest {
            id: victim.account.id.clone(),
        })
        .await
        .expect_err("out of scope");
    assert_error(&status, Code::PermissionDenied, "ACCOUNT_OUT_OF_SCOPE");
    assert_eq!(app.all_accounts(&t).await, Vec::new(), "ListAccounts");
    let exported = export(&app, &t, proto::ExportTransactionsRequest::default()).await;
    assert_eq!(exported, Ok(Vec::new()), "ExportTransactions");
    assert_eq!(
        audited_accounts(&app, &t).await,
        BTreeSet::new(),
        "ListAuditEvents"
    );
    app.stop().await;
}

/// An account id with a control character in a token's `accounts` claim reached the database
/// (PostgreSQL refuses NUL in text: INTERNAL to every list call). Like `sub`, the claim must
/// not carry control characters: the token is refused as invalid.
#[tokio::test]
async fn a_control_character_in_the_accounts_claim_is_an_invalid_token() {
    let app = spawn_app().await;
    let (account, _) = app.funded("victim", "10").await;
    for bad in [
        format!("{}\u{0}", account.id),
        "\u{0}".into(),
        format!("acct_\u{7}{}", "0".repeat(8)),
    ] {
        let t = token(&["admin"], &[&bad]);
        let listed = app
            .accounts(&t)
            .list_accounts(proto::ListAccountsRequest::default())
            .await;
        assert_error(&rejected(listed), Code::Unauthenticated, INVALID);
        for (path, _) in ROUTES {
            let status = call_route(&app.channel, Some(&format!("Bearer {t}")), path)
                .await
                .expect_err("a token with a control character in `accounts`");
            assert_error(&status, Code::Unauthenticated, INVALID);
        }
    }
    app.stop().await;
}

// ---- 4. logs -------------------------------------------------------------------------------

/// Pieces of a token a log might print: each dot-separated part (its first and last 40
/// characters, which a truncated print would still show), from 16 characters up.
fn token_pieces(token: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    for part in token.split('.') {
        if part.len() >= 16 && part.is_ascii() {
            let n = part.len().min(40);
            pieces.push(part[..n].to_string());
            pieces.push(part[part.len() - n..].to_string());
        }
    }
    pieces
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_an_attack_run_hold_no_token_or_secret() {
    let started = Instant::now();
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().expect("log dir");
    let public_keys = ["rsa_public.pem", "ec_public.pem", "ed_public.pem"]
        .map(|name| fixture(name).display().to_string())
        .join(",");
    let jwks = fixture("jwks.json").display().to_string();
    let server = ServerProcess::try_start_with_env(
        "attacked",
        &db.url,
        &[
            "--jwt-public-keys",
            &public_keys,
            "--jwt-jwks",
            &jwks,
            // Every call gets its access-log line.
            "--access-log-rate",
            "1000000",
        ],
        &[("RUST_LOG", "debug")],
        None,
        dir.path(),
    )
    .await
    .unwrap_or_else(|why| panic!("{why}"));
    let keys = Keys::new();
    let mut sent: Vec<String> = vec![server.admin.clone()];

    // A victim, as the admin.
    server
        .rates()
        .create_rate_card(card_request(vec![rate("one", "1", &[], "")], "log test"))
        .await
        .expect("draft");
    server
        .rates()
        .publish_rate_card(proto::PublishRateCardRequest {
            version: 1,
            etag: server
                .rates()
                .get_rate_card(proto::GetRateCardRequest {
                    version: 1,
                    ..Default::default()
                })
                .await
                .expect("draft")
                .into_inner()
                .etag,
            effective_time: None,
            request_id: uuid(),
        })
        .await
        .expect("publish");
    let victim = server
        .accounts()
        .create_account(new_account("log-victim", ""))
        .await
        .expect("account")
        .into_inner();
    let wallet = server
        .accounts()
        .create_wallet(wallet_request(&victim.id))
        .await
        .expect("wallet")
        .into_inner();
    server
        .grants()
        .create_grant(grant_request(&wallet.id, "100", "0.01"))
        .await
        .expect("grant");

    // Hostile tokens, wrong roles, other tenants, a legitimate caller.
    let mut headers: Vec<String> = token_attacks(&keys, "http://127.0.0.1:9")
        .into_iter()
        .map(|a| a.token)
        .collect();
    headers.push(token(&["procurement"], &[&victim.id]));
    headers.push(token(&["service"], &[GHOST_ACCOUNT]));
    headers.push(keys.hs(&edit(admin(), |c| {
        c.insert("roles".into(), json!(["ADMIN"]));
    })));
    headers.push(keys.rs_kid(json!("k1"), &claims(&["service"], &[&victim.id])));
    headers.push(padded_token(&keys, 15_000));
    headers.push(padded_token(&keys, MAX_TOKEN_LEN + 1));
    let mut refused = 0;
    for t in &headers {
        let auth = raw_bearer(Some(&format!("Bearer {t}")));
        let balance = proto::ledger_service_client::LedgerServiceClient::with_interceptor(
            server.channel.clone(),
            auth.clone(),
        )
        .get_balance(proto::GetBalanceRequest {
            account_id: victim.id.clone(),
            ..Default::default()
        })
        .await;
        let debit = proto::ledger_service_client::LedgerServiceClient::with_interceptor(
            server.channel.clone(),
            auth,
        )
        .debit(debit_request(&victim.id, "one", &uuid()))
        .await;
        refused += usize::from(balance.is_err()) + usize::from(debit.is_err());
    }
    sent.extend(headers);
    let owner = token(&["service"], &[&victim.id]);
    proto::ledger_service_client::LedgerServiceClient::with_interceptor(
        server.channel.clone(),
        bearer(&owner),
    )
    .debit(debit_request(&victim.id, "one", &uuid()))
    .await
    .expect("the owner's debit");
    sent.push(owner);
    let huge = format!(
        "{}.{}.{}",
        "e".repeat(2 << 20),
        "f".repeat(2 << 20),
        "g".repeat(64)
    );
    let _ = call_route(
        &server.channel,
        Some(&format!("Bearer {huge}")),
        "/allot.v1.LedgerService/Debit",
    )
    .await;
    raw_h2_request(
        &server.addr,
        "/allot.v1.LedgerService/Debit",
        format!("Bearer {huge}").as_bytes(),
    )
    .await;
    sent.push(huge);
    assert_serving(&server.addr, &server.admin).await;

    // The whole log: no token, no piece of one, no secret, no private key material.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = server.log_text();
    assert!(log.contains("DEBUG"), "the log is at debug level");
    assert!(
        log.contains("UNAUTHENTICATED") && log.contains("PERMISSION_DENIED"),
        "refused calls are logged"
    );
    let mut found = Vec::new();
    if log.contains("eyJ") {
        found.push(
            "`eyJ` (base64url of `{\"`, the start of every JWT header and payload)".to_string(),
        );
    }
    let mut needles = 0;
    for t in &sent {
        for needle in std::iter::once(t.clone()).chain(token_pieces(t)) {
            needles += 1;
            if log.contains(&needle) {
                found.push(format!(
                    "a piece of a token sent: {}…",
                    &needle[..needle.len().min(24)]
                ));
            }
        }
    }
    for secret in &keys.secrets {
        needles += 1;
        if log.contains(secret.as_str()) {
            found.push(format!(
                "secret or key material: {}…",
                &secret[..secret.len().min(12)]
            ));
        }
    }
    found.dedup();
    assert!(
        found.is_empty(),
        "the server's log holds:\n{}",
        found.join("\n")
    );
    eprintln!(
        "logs: {} tokens sent ({refused} refused calls), {needles} needles over {} KB of log, {:?}",
        sent.len(),
        log.len() / 1024,
        started.elapsed()
    );
    drop(server);
    db.drop_database().await;
}
