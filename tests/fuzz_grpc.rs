//! A gRPC-level fuzzer (issue 14, point 6): random and mutated messages on every method of
//! the API, sent to a real `allot serve` process, plus malformed HTTP/2 on raw connections.
//!
//! Messages are built from the API's own descriptors (prost-reflect): every field of the
//! method's request filled with hostile values — extreme and malformed decimals, unknown enum
//! numbers, integer extremes, huge and empty strings, long repeated fields, the ids of real
//! objects so calls get past their lookups — then, for a third of them, the encoded bytes
//! mutated (bit flips, truncation, splices, invalid UTF-8), and some built at the wire level
//! (wrong wire types, invalid tags, nesting 200 deep, a message just under and one over the
//! size limit, oversized metadata). Each method gets its share of the calls.
//!
//! Checked: no answer is INTERNAL, UNKNOWN or DATA_LOSS (the server's bug, not the caller's);
//! bytes that do not decode as the method's message answer INVALID_ARGUMENT (or
//! RESOURCE_EXHAUSTED / OUT_OF_RANGE when over the size limit); for each method, when every
//! call was refused, the ledger, accounts and rate cards read back unchanged; the process
//! never exits, never logs a panic, answers health SERVING at the end, and its peak RSS stays
//! under [`MAX_RSS_MB`].
//!
//! ```text
//! cargo test --test fuzz_grpc -- --nocapture                       # CI: 1,500 calls
//! ALLOT_FUZZ_CALLS=50000 ALLOT_FUZZ_SEED=7 cargo test --release --test fuzz_grpc -- --nocapture
//! ```
//!
//! A failing input is printed as hex with its method and seed; such inputs become regression
//! tests in `tests/hostile.rs`.

mod common;

use std::time::{Duration, Instant};

use allot::proto;
use common::{process::ServerProcess, *};
use prost::{Message, bytes::Buf};
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    MethodDescriptor, Value,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{
    Code,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
};
use tonic_health::pb::health_check_response::ServingStatus;

/// Calls in the CI configuration (`ALLOT_FUZZ_CALLS` sets another number).
const CALLS: usize = 1500;
/// The server's peak resident memory must stay under this (it holds at most
/// `--max-in-flight` calls of at most 4 MiB each; the fuzzer sends one at a time).
const MAX_RSS_MB: u64 = 400;
/// The server's decoding limit (`server::MAX_MESSAGE_BYTES`).
const LIMIT: usize = allot::server::MAX_MESSAGE_BYTES;

// ---- raw bytes over gRPC ---------------------------------------------------------------------

/// Sends and receives message bodies as they are.
#[derive(Clone, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Sends `body` to `method`; the answer's code (OK for a stream that began).
async fn call(
    server: &ServerProcess,
    admin: &str,
    method: &MethodDescriptor,
    body: Vec<u8>,
    metadata: Option<(&'static str, String)>,
) -> Result<(), tonic::Status> {
    // Oversized metadata goes on a connection of its own: HTTP/2 refuses it on that
    // connection, and the rest of the run should not depend on what that does to it.
    let channel = if metadata.is_some() {
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
            .expect("an endpoint")
            .connect()
            .await
            .map_err(|err| tonic::Status::unavailable(err.to_string()))?
    } else {
        server.channel.clone()
    };
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    grpc.ready()
        .await
        .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
    let path = PathAndQuery::try_from(format!(
        "/{}/{}",
        method.parent_service().full_name(),
        method.name()
    ))
    .expect("a method path");
    let mut request = tonic::Request::new(body);
    request.set_timeout(Duration::from_secs(20));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {admin}").parse().expect("ascii"),
    );
    if let Some((key, value)) = metadata {
        request
            .metadata_mut()
            .insert(key, value.parse().expect("ascii"));
    }
    if method.is_server_streaming() {
        let mut stream = grpc
            .server_streaming(request, path, Raw)
            .await?
            .into_inner();
        while stream.message().await?.is_some() {}
        Ok(())
    } else {
        grpc.unary(request, path, Raw).await.map(|_| ())
    }
}

// ---- hostile messages ------------------------------------------------------------------------

/// Real ids, so that some calls get past their lookups.
struct Known {
    ids: Vec<String>,
}

fn hostile_string(rng: &mut StdRng, known: &Known) -> String {
    const STRINGS: &[&str] = &[
        "",
        "0",
        "-0",
        "1",
        "-1",
        "1e400",
        "1E-400",
        "NaN",
        "inf",
        "-Infinity",
        "0.0000000000000000000000000001",
        "99999999999999999999999999999999999999",
        "-99999999999999999999999999999.999999",
        "79228162514264337593543950335",
        "9223372036854775807",
        "0x10",
        "1_000",
        " 1 ",
        "1,5",
        "١٢٣",
        "１２３",
        "\u{202e}1",
        "\0",
        "' OR 1=1 --",
        "acc_",
        "USD",
        "chat",
        "output_tokens",
        "*",
        "../../etc/passwd",
        "%s%n",
        "2026-13-45T25:61:61Z",
    ];
    match rng.random_range(0..10) {
        0..5 => STRINGS[rng.random_range(0..STRINGS.len())].to_string(),
        5..7 => known.ids[rng.random_range(0..known.ids.len())].clone(),
        7 => "9".repeat(rng.random_range(30..5000)),
        8 => {
            let len = rng.random_range(0..200);
            (0..len)
                .map(|_| char::from_u32(rng.random_range(0..0x11_0000)).unwrap_or('?'))
                .collect()
        }
        _ => "x".repeat(rng.random_range(1000..200_000)),
    }
}

fn hostile_value(rng: &mut StdRng, kind: &Kind, known: &Known, depth: usize) -> Value {
    match kind {
        Kind::Double => Value::F64(
            [f64::NAN, f64::INFINITY, -0.0, f64::MAX, 1e-300, 1.5][rng.random_range(0..6)],
        ),
        Kind::Float => Value::F32([f32::NAN, f32::NEG_INFINITY, f32::MAX][rng.random_range(0..3)]),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32([0, -1, 1, i32::MIN, i32::MAX, 1000][rng.random_range(0..6)])
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(
            [0, -1, i64::MIN, i64::MAX, 253_402_300_800, -62_135_596_800][rng.random_range(0..6)],
        ),
        Kind::Uint32 | Kind::Fixed32 => Value::U32([0, 1, u32::MAX][rng.random_range(0..3)]),
        Kind::Uint64 | Kind::Fixed64 => Value::U64([0, 1, u64::MAX][rng.random_range(0..3)]),
        Kind::Bool => Value::Bool(rng.random_bool(0.5)),
        Kind::String => Value::String(hostile_string(rng, known)),
        Kind::Bytes => Value::Bytes(
            (0..rng.random_range(0..64))
                .map(|_| rng.random::<u8>())
                .collect::<Vec<u8>>()
                .into(),
        ),
        Kind::Enum(e) => {
            let values: Vec<i32> = e.values().map(|v| v.number()).collect();
            Value::EnumNumber(if rng.random_bool(0.6) {
                values[rng.random_range(0..values.len())]
            } else {
                [-1, 999, i32::MAX, i32::MIN][rng.random_range(0..4)]
            })
        }
        Kind::Message(m) => Value::Message(hostile_message(rng, m, known, depth + 1)),
    }
}

fn map_key(rng: &mut StdRng, field: &FieldDescriptor, known: &Known) -> MapKey {
    match hostile_value(rng, &field.kind(), known, 99) {
        Value::String(s) => MapKey::String(s),
        Value::I32(n) => MapKey::I32(n),
        Value::I64(n) => MapKey::I64(n),
        Value::U32(n) => MapKey::U32(n),
        Value::U64(n) => MapKey::U64(n),
        Value::Bool(b) => MapKey::Bool(b),
        _ => MapKey::String(String::new()),
    }
}

/// A message of type `desc` whose fields hold hostile values (each field set or not).
fn hostile_message(
    rng: &mut StdRng,
    desc: &MessageDescriptor,
    known: &Known,
    depth: usize,
) -> DynamicMessage {
    let mut message = DynamicMessage::new(desc.clone());
    if depth > 4 {
        return message;
    }
    for field in desc.fields() {
        if rng.random_bool(0.3) {
            continue;
        }
        let value = if field.is_map() {
            let entry = match field.kind() {
                Kind::Message(entry) => entry,
                _ => continue,
            };
            let (key, value) = (entry.map_entry_key_field(), entry.map_entry_value_field());
            Value::Map(
                (0..rng.random_range(0..4))
                    .map(|_| {
                        (
                            map_key(rng, &key, known),
                            hostile_value(rng, &value.kind(), known, depth),
                        )
                    })
                    .collect(),
            )
        } else if field.is_list() {
            let n = if rng.random_bool(0.05) {
                rng.random_range(500..3000)
            } else {
                rng.random_range(0..4)
            };
            Value::List(
                (0..n)
                    .map(|_| hostile_value(rng, &field.kind(), known, depth))
                    .collect(),
            )
        } else {
            hostile_value(rng, &field.kind(), known, depth)
        };
        message.set_field(&field, value);
    }
    message
}

/// Protobuf wire bytes that follow no schema: random tags and wire types (invalid ones
/// included), lengths that lie, nesting.
fn random_wire(rng: &mut StdRng, out: &mut Vec<u8>, depth: usize) {
    for _ in 0..rng.random_range(1..8) {
        let field: u64 = [1, 2, 3, 5, 7, 15, 16, 1000, 536_870_911][rng.random_range(0..9)];
        let wire: u64 = rng.random_range(0..8);
        prost::encoding::encode_varint((field << 3) | wire, out);
        match wire {
            0 => prost::encoding::encode_varint(rng.random(), out),
            1 => out.extend_from_slice(&rng.random::<u64>().to_le_bytes()),
            2 => {
                let mut inner = Vec::new();
                if depth < 5 && rng.random_bool(0.5) {
                    random_wire(rng, &mut inner, depth + 1);
                } else {
                    inner.extend((0..rng.random_range(0..40)).map(|_| rng.random::<u8>()));
                }
                let claimed = if rng.random_bool(0.1) {
                    inner.len() as u64 + rng.random_range(1..1000)
                } else {
                    inner.len() as u64
                };
                prost::encoding::encode_varint(claimed, out);
                out.extend_from_slice(&inner);
            }
            5 => out.extend_from_slice(&rng.random::<u32>().to_le_bytes()),
            _ => {}
        }
    }
}

/// Length-delimited field 1 nested `depth` times.
fn nested(depth: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    for _ in 0..depth {
        let mut outer = vec![0x0a];
        prost::encoding::encode_varint(bytes.len() as u64, &mut outer);
        outer.extend_from_slice(&bytes);
        bytes = outer;
    }
    bytes
}

fn mutate(rng: &mut StdRng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(1..6) {
        if bytes.is_empty() {
            bytes.push(rng.random());
            continue;
        }
        let at = rng.random_range(0..bytes.len());
        match rng.random_range(0..5) {
            0 => bytes[at] ^= 1 << rng.random_range(0..8),
            1 => bytes.truncate(at),
            2 => bytes.insert(at, [0xff, 0xc0, 0x80, 0xfe][rng.random_range(0..4)]),
            3 => {
                let end = rng.random_range(at..bytes.len());
                let copy = bytes[at..=end].to_vec();
                bytes.extend_from_slice(&copy);
            }
            _ => bytes[at] = rng.random(),
        }
    }
    bytes
}

/// What kind of input a call carried (for the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Input {
    Shaped,
    Mutated,
    Wire,
    Nested,
    NearLimit,
    OverLimit,
    BigMetadata,
}

fn input(
    rng: &mut StdRng,
    method: &MethodDescriptor,
    known: &Known,
) -> (Input, Vec<u8>, Option<(&'static str, String)>) {
    // A shaped message no larger than the limit (beyond it: `OverLimit`).
    let shaped = |rng: &mut StdRng| loop {
        let bytes = hostile_message(rng, &method.input(), known, 0).encode_to_vec();
        if bytes.len() <= LIMIT {
            return bytes;
        }
    };
    match rng.random_range(0..100) {
        0..55 => (Input::Shaped, shaped(rng), None),
        55..85 => {
            let bytes = shaped(rng);
            (Input::Mutated, mutate(rng, bytes), None)
        }
        85..95 => {
            let mut bytes = Vec::new();
            random_wire(rng, &mut bytes, 0);
            (Input::Wire, bytes, None)
        }
        95 => (Input::Nested, nested(rng.random_range(90..300)), None),
        96 => {
            // Field 1 (a string in most requests) just under the limit.
            let mut bytes = vec![0x0a];
            let len = LIMIT - 16;
            prost::encoding::encode_varint(len as u64, &mut bytes);
            bytes.extend(std::iter::repeat_n(b'7', len));
            (Input::NearLimit, bytes, None)
        }
        97 => (Input::OverLimit, vec![0u8; LIMIT + 1024], None),
        _ => (
            Input::BigMetadata,
            shaped(rng),
            Some(("x-hostile", "a".repeat(rng.random_range(8_000..100_000)))),
        ),
    }
}

// ---- what must not change --------------------------------------------------------------------

/// The ledger, the accounts and the rate cards as the API reads them.
async fn state(server: &ServerProcess, admin: &str) -> String {
    let entries: Vec<String> = reads::export_all(&server.channel, admin)
        .await
        .into_iter()
        .map(|t| t.id)
        .collect();
    let accounts = server
        .accounts()
        .list_accounts(proto::ListAccountsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list accounts")
        .into_inner();
    let cards = server
        .rates()
        .list_rate_cards(proto::ListRateCardsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list rate cards")
        .into_inner();
    format!("{entries:?}\n{accounts:?}\n{cards:?}")
}

fn peak_rss_mb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

// ---- malformed HTTP/2 ------------------------------------------------------------------------

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A HEADERS block (HPACK, literal fields) opening a gRPC call to GetBalance.
fn call_headers() -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    let literal = |block: &mut Vec<u8>, index: u8, value: &str| {
        block.push(0x40 | index);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    };
    literal(&mut block, 4, "/allot.v1.LedgerService/GetBalance");
    literal(&mut block, 1, "localhost");
    literal(&mut block, 31, "application/grpc");
    block
}

/// Byte streams no HTTP/2 server should accept; each on its own connection.
fn malformed_sessions(rng: &mut StdRng) -> Vec<(&'static str, Vec<u8>)> {
    let settings = frame(4, 0, 0, &[]);
    let with_preface = |frames: Vec<Vec<u8>>| {
        let mut bytes = PREFACE.to_vec();
        bytes.extend_from_slice(&settings);
        for f in frames {
            bytes.extend_from_slice(&f);
        }
        bytes
    };
    let mut rapid_reset = Vec::new();
    for i in 0..2000u32 {
        let stream = 2 * i + 1;
        rapid_reset.push(frame(1, 0x4, stream, &call_headers()));
        rapid_reset.push(frame(3, 0, stream, &8u32.to_be_bytes()));
    }
    vec![
        (
            "HTTP/1.1 request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "random bytes",
            (0..4096).map(|_| rng.random::<u8>()).collect(),
        ),
        (
            "garbage HPACK",
            with_preface(vec![frame(
                1,
                0x4,
                1,
                &(0..64).map(|_| rng.random::<u8>()).collect::<Vec<_>>(),
            )]),
        ),
        ("DATA on stream 0", with_preface(vec![frame(0, 0, 0, b"x")])),
        (
            "frame longer than the maximum",
            with_preface(vec![{
                let mut f = frame(0, 0, 1, &[]);
                f[0] = 0xff;
                f[1] = 0xff;
                f[2] = 0xff;
                f
            }]),
        ),
        (
            "zero WINDOW_UPDATE",
            with_preface(vec![frame(8, 0, 0, &0u32.to_be_bytes())]),
        ),
        (
            "SETTINGS flood",
            with_preface(
                (0..5000)
                    .map(|_| frame(4, 0, 0, &[0, 3, 0, 0, 0, 1]))
                    .collect(),
            ),
        ),
        (
            "PING flood",
            with_preface((0..5000).map(|_| frame(6, 0, 0, &[0; 8])).collect()),
        ),
        ("rapid reset", with_preface(rapid_reset)),
        (
            "endless CONTINUATION",
            with_preface({
                let mut frames = vec![frame(1, 0, 1, &call_headers())];
                frames.extend((0..3000).map(|_| frame(9, 0, 1, &[0x40, 1, b'a', 1, b'b'])));
                frames
            }),
        ),
        (
            "message larger than declared",
            with_preface(vec![
                frame(1, 0x4, 1, &call_headers()),
                frame(0, 0x1, 1, &[0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]),
            ]),
        ),
    ]
}

/// Writes `bytes` on a fresh connection and reads until the server closes it (or 3 s).
async fn raw_session(addr: &str, bytes: &[u8]) {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.write_all(bytes)).await;
    let mut sink = vec![0u8; 64 * 1024];
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

// ---- the run ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_and_http2_never_get_internal_or_a_crash() {
    let calls: usize = std::env::var("ALLOT_FUZZ_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CALLS);
    let seed: u64 = std::env::var("ALLOT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("fuzz_grpc: seed {seed}, {calls} calls (ALLOT_FUZZ_SEED={seed} to rerun)");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();

    let app = spawn_app().await;
    let (account, wallet) = app.funded("fuzzed", "1000").await;
    let card = app.publish_standard_card().await;
    let debit = app
        .ledger(&app.admin)
        .debit(debit_request(&account.id, "one", &uuid()))
        .await
        .expect("a debit to refund")
        .into_inner()
        .transaction
        .expect("its entry");
    let hold = app
        .ledger(&app.admin)
        .reserve(proto::ReserveRequest {
            account_id: account.id.clone(),
            units: "5".into(),
            request_id: uuid(),
            ..Default::default()
        })
        .await
        .expect("a hold")
        .into_inner();
    let known = Known {
        ids: vec![
            account.id.clone(),
            account.external_id.clone(),
            wallet.id.clone(),
            debit.id.clone(),
            hold.id.clone(),
            card.version.to_string(),
            uuid(),
        ],
    };
    let admin = token(&["admin"], &["*"]);
    let logs = tempfile::tempdir().expect("log dir");
    let mut server = ServerProcess::start("fuzzed", &app.db.url, &[], logs.path()).await;

    let pool = DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).expect("the API descriptors");
    let methods: Vec<MethodDescriptor> = pool
        .services()
        .filter(|s| s.full_name().starts_with("allot.v1."))
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .collect();
    let per_method = calls.div_ceil(methods.len()).max(1);

    let mut failures: Vec<String> = Vec::new();
    let mut codes: std::collections::BTreeMap<(Input, String), usize> = Default::default();
    for method in &methods {
        let name = format!("{}/{}", method.parent_service().name(), method.name());
        let before = state(&server, &admin).await;
        let mut accepted = 0;
        for _ in 0..per_method {
            let (kind, body, metadata) = input(&mut rng, method, &known);
            let decodes = DynamicMessage::decode(method.input(), body.as_slice()).is_ok();
            let hex: String = body.iter().take(96).map(|b| format!("{b:02x}")).collect();
            let answer = call(&server, &admin, method, body.clone(), metadata.clone()).await;
            let code = answer.as_ref().err().map_or(Code::Ok, |s| s.code());
            *codes.entry((kind, format!("{code:?}"))).or_default() += 1;
            let what = || {
                format!(
                    "{name} with {kind:?} input ({} bytes{}, starts {hex}) answered",
                    body.len(),
                    metadata
                        .as_ref()
                        .map(|(_, v)| format!(", a {}-byte header", v.len()))
                        .unwrap_or_default()
                )
            };
            match &answer {
                Ok(()) => accepted += 1,
                // Headers over the server's HTTP/2 limit are refused before gRPC sees the
                // call, with HTTP 431 (which gRPC clients read as UNKNOWN); a client still
                // sending a large body then finds the stream closed under it.
                Err(status)
                    if metadata.is_some()
                        && status.code() == Code::Unknown
                        && (status.message().contains("431")
                            || status.message() == "transport error") => {}
                Err(status)
                    if matches!(
                        status.code(),
                        Code::Internal | Code::Unknown | Code::DataLoss
                    ) =>
                {
                    failures.push(format!("{} {status:?}", what()));
                }
                Err(status)
                    if !decodes
                        && metadata.is_none()
                        && !matches!(
                            status.code(),
                            Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange
                        ) =>
                {
                    failures.push(format!(
                        "{} {status:?} to bytes that do not decode (INVALID_ARGUMENT expected)",
                        what()
                    ));
                }
                Err(_) => {}
            }
        }
        if accepted == 0 && state(&server, &admin).await != before {
            failures.push(format!(
                "{name}: all {per_method} calls were refused, yet the ledger, accounts or rate \
                 cards changed"
            ));
        }
    }
    let fuzzed = started.elapsed();

    // Malformed HTTP/2, each session on a connection of its own.
    let sessions = malformed_sessions(&mut rng);
    for (label, bytes) in &sessions {
        raw_session(&server.addr, bytes).await;
        if let Some(status) = server.exit_status() {
            failures.push(format!("the server exited after \"{label}\": {status}"));
            break;
        }
    }

    // Still alive, healthy and within its memory bound; no panic in its log.
    let peak = peak_rss_mb(server.pid());
    if let Some(status) = server.exit_status() {
        failures.push(format!("the server exited: {status}"));
    } else if !process::health_becomes(
        &server.channel,
        ServingStatus::Serving,
        Duration::from_secs(10),
    )
    .await
    {
        failures.push("health is not SERVING after the run".into());
    }
    if peak > MAX_RSS_MB {
        failures.push(format!("peak RSS {peak} MB, over {MAX_RSS_MB} MB"));
    }
    let log = server.log_text();
    if log.contains("panicked") {
        failures.push(format!(
            "a panic in the server log:\n{}",
            server.log_tail(30)
        ));
    }
    for ((kind, code), count) in &codes {
        eprintln!("  {kind:?} → {code} × {count}");
    }
    eprintln!(
        "fuzz_grpc: {} calls on {} methods in {fuzzed:.1?}, {} malformed HTTP/2 sessions, peak \
         RSS {peak} MB (seed {seed})",
        per_method * methods.len(),
        methods.len(),
        sessions.len()
    );
    drop(server);
    app.stop().await;
    assert!(
        failures.is_empty(),
        "fuzz_grpc (seed {seed}): {} failure(s):\n  {}",
        failures.len(),
        failures
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}
