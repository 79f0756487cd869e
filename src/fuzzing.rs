//! Fuzzing entry points (`fuzz/fuzz_targets/*.rs`, run by `scripts/fuzz.sh`): each takes the
//! fuzzer's bytes, feeds them to one parser or rule of allot, and panics when an invariant
//! breaks — not only when the code under test panics. Compiled only for tests and under
//! `--cfg fuzzing` (which `cargo fuzz` sets), so none of it is part of the normal build.
//!
//! | entry point   | what it drives                                              |
//! |---------------|-------------------------------------------------------------|
//! | [`amount`]    | the decimal grammar (`domain::amount`)                       |
//! | [`rate_card`] | `allot rates publish`'s TOML file, then the server's checks  |
//! | [`token`]     | `Authenticator::verify` with an HS256 secret and a JWKS      |
//! | [`evaluate`]  | the ledger's batch evaluator (`Batch::evaluate_all`)         |
//!
//! Crashes found become tests in this file (`mod tests`), run by `cargo test --lib`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use tonic::Code;

use crate::{
    api::convert,
    auth::{AuthConfig, AuthError, Authenticator, Caller, LEEWAY_SECS, Role, Scope},
    cli::client::rates_file,
    domain::{
        Amount, AmountError, PricingError, Rate,
        amount::{
            MAX_UNIT_PRICE, format_decimal, format_micros, parse_decimal, parse_quantity,
            parse_unit_price,
        },
        pricing::validate_rates,
    },
    store::columns::Rates,
};

/// Reads a fuzzer's bytes as a stream of small decisions; past the end every read is 0, so
/// any input is a complete one.
pub(crate) struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub(crate) fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        for b in &mut out {
            *b = self.u8();
        }
        out
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    pub(crate) fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// One of `items` (which must not be empty).
    pub(crate) fn pick<'b, T>(&mut self, items: &'b [T]) -> &'b T {
        &items[usize::from(self.u8()) % items.len()]
    }

    /// Up to `max` bytes (the length is read first).
    pub(crate) fn bytes(&mut self, max: usize) -> &'a [u8] {
        let len = usize::from(self.u16()) % (max + 1);
        let len = len.min(self.data.len());
        let (head, rest) = self.data.split_at(len);
        self.data = rest;
        head
    }

    /// Up to `max` bytes as text (invalid UTF-8 replaced).
    pub(crate) fn string(&mut self, max: usize) -> String {
        String::from_utf8_lossy(self.bytes(max)).into_owned()
    }
}

// ---- amounts ------------------------------------------------------------------------------

/// What the wire grammar `-?D{1,18}(.D{1,6})?` makes of a text, decided without the parser.
#[derive(Debug, PartialEq)]
enum Shape {
    Malformed,
    TooManyDigits,
    /// Grammatical: its exact value in micro-units.
    Fits(i128),
}

fn shape(text: &str) -> Shape {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = match digits.find('.') {
        Some(dot) => (&digits[..dot], Some(&digits[dot + 1..])),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || frac.is_some_and(|f| !all_digits(f)) {
        return Shape::Malformed;
    }
    let frac = frac.unwrap_or("");
    if int.len() > 18 || frac.len() > 6 {
        return Shape::TooManyDigits;
    }
    let micros = exact_micros(&format!("{int}.{frac:0<6}")).expect("24 digits fit an i128");
    Shape::Fits(if text.starts_with('-') {
        -micros
    } else {
        micros
    })
}

/// The exact value in micro-units of `-?D+(.D{0,6})?`, any number of integer digits; `None`
/// if it is not of that form or does not fit an i128.
fn exact_micros(text: &str) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() || frac.len() > 6 {
        return None;
    }
    let mut value: i128 = 0;
    for b in int.bytes().chain(format!("{frac:0<6}").bytes()) {
        if !b.is_ascii_digit() {
            return None;
        }
        let digit = i128::from(b - b'0');
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(digit)?
        } else {
            value.checked_add(digit)?
        };
    }
    Some(value)
}

/// The value of a decimal in micro-units, if it has at most 6 fractional digits.
fn decimal_micros(value: Decimal) -> Option<i128> {
    let scale = value.scale();
    if scale > 6 {
        return None;
    }
    value.mantissa().checked_mul(10i128.pow(6 - scale))
}

/// A canonical rendering: no `+`, no `-0`, no leading zeros, no trailing fractional zeros.
fn assert_canonical(text: &str) {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    assert!(
        int == "0" || !int.starts_with('0'),
        "`{text}` has a leading zero"
    );
    assert!(!frac.ends_with('0'), "`{text}` has a trailing zero");
    assert!(
        text != "-0" && !(text.starts_with('-') && exact_micros(text) == Some(0)),
        "`{text}` is a negative zero"
    );
}

/// The decimal grammar: every text is either an amount that is exactly the number written,
/// within ±`Amount::MAX`, and that renders in a canonical form parsing back to itself — or
/// the error the grammar and bounds call for. The other parsers (quantities, unit prices,
/// the signed/positive/non-negative variants) agree with it; rounding up to micro-units and
/// rendering sums of micro-units are exact.
pub fn amount(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    let expected = shape(text);
    let max = i128::from(i64::MAX);

    match (Amount::parse(text), &expected) {
        (Ok(amount), Shape::Fits(micros)) => {
            assert_eq!(i128::from(amount.micros()), *micros, "value of `{text}`");
            assert_ne!(amount.micros(), i64::MIN, "`{text}` is below -Amount::MAX");
            let shown = amount.to_string();
            assert_canonical(&shown);
            assert_eq!(
                Amount::parse(&shown),
                Ok(amount),
                "`{text}` → `{shown}` does not parse back"
            );
            assert_eq!(format_micros(i128::from(amount.micros())), shown);
            let json = serde_json::to_string(&amount).expect("an amount serializes");
            assert_eq!(
                serde_json::from_str::<Amount>(&json).ok(),
                Some(amount),
                "`{json}` does not deserialize back"
            );
            assert_eq!(Amount::parse_positive(text).is_ok(), amount.micros() > 0);
            assert_eq!(
                Amount::parse_non_negative(text).is_ok(),
                amount.micros() >= 0
            );
        }
        (Err(AmountError::OutOfRange(_)), Shape::Fits(micros)) => {
            assert!(micros.abs() > max, "`{text}` is within range but refused");
        }
        (Err(AmountError::Malformed(_)), Shape::Malformed)
        | (Err(AmountError::TooManyDigits(_)), Shape::TooManyDigits) => {}
        (got, _) => panic!("`{text}`: parsed as {got:?}, the grammar says {expected:?}"),
    }
    assert_eq!(
        serde_json::from_value::<Amount>(Value::String(text.to_string())).ok(),
        Amount::parse(text).ok(),
        "serde and parse disagree on `{text}`"
    );

    match (parse_decimal(text), &expected) {
        (Ok(value), Shape::Fits(micros)) => {
            assert_eq!(decimal_micros(value), Some(*micros), "value of `{text}`");
            let shown = format_decimal(value);
            assert_canonical(&shown);
            assert_eq!(parse_decimal(&shown), Ok(value), "`{text}` → `{shown}`");
            let non_negative = *micros >= 0;
            assert_eq!(
                parse_quantity(text).is_ok(),
                non_negative,
                "quantity `{text}`"
            );
            assert_eq!(
                parse_unit_price(text).is_ok(),
                non_negative && *micros <= 1_000_000_000_000 * 1_000_000,
                "unit price `{text}`"
            );
        }
        (Err(AmountError::Malformed(_)), Shape::Malformed)
        | (Err(AmountError::TooManyDigits(_)), Shape::TooManyDigits) => {
            assert!(parse_quantity(text).is_err() && parse_unit_price(text).is_err());
        }
        (got, _) => panic!("`{text}`: parse_decimal gave {got:?}, the grammar says {expected:?}"),
    }

    // The same bytes as numbers: a sum of micro-units, and a decimal rounded up to them.
    let mut input = Input::new(data);
    let raw = i128::from_le_bytes(input.array());
    let shown = format_micros(raw);
    assert_canonical(&shown);
    assert_eq!(exact_micros(&shown), Some(raw), "format_micros({raw})");
    if let Ok(micros) = i64::try_from(raw)
        && micros != i64::MIN
    {
        assert_eq!(shown, Amount::from_micros(micros).to_string());
    }
    let [lo, mid, hi] = [input.u32(), input.u32(), input.u32()];
    let flags = input.u8();
    let value = Decimal::from_parts(lo, mid, hi, flags & 0x80 != 0, u32::from(flags % 29));
    let micro = Decimal::new(1, 6);
    match Amount::from_decimal_ceil(value) {
        Some(ceil) => {
            let ceil = ceil.to_decimal();
            assert!(ceil >= value, "ceil({value}) = {ceil} is below it");
            assert!(ceil - value < micro, "ceil({value}) = {ceil} is too far up");
        }
        None => {
            let bound = Amount::MAX.to_decimal();
            assert!(
                value > bound || value <= -bound - micro,
                "ceil({value}) is within ±Amount::MAX but refused"
            );
        }
    }
}

// ---- rate card files ----------------------------------------------------------------------

/// `allot rates publish FILE.toml` and the server behind it: a file either fails (to parse,
/// or the server's checks, with INVALID_ARGUMENT) or yields a card that passes
/// `validate_rates`, whose rates keep their meaning through every form they take — the
/// wire (GetRateCard → publish again), the stored JSON, and a file written back — and whose
/// prices are total: flat with no quantities, flat + units for one `per`, capped at
/// `max_units`, an error rather than a panic when they overflow.
pub fn rate_card(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(card) = rates_file::parse(text) else {
        return;
    };
    let parsed: Result<Vec<Rate>, _> = card
        .rates
        .iter()
        .enumerate()
        .map(|(i, rate)| convert::parse_rate(&format!("rate_card.rates[{i}]"), rate))
        .collect();
    let rates = match parsed {
        Ok(rates) => rates,
        Err(err) => {
            assert_eq!(err.code, Code::InvalidArgument, "{err}");
            return;
        }
    };
    if let Err(err) = convert::optional("rate_card.notes", &card.notes, 4096) {
        assert_eq!(err.code, Code::InvalidArgument, "{err}");
        return;
    }
    if validate_rates(&rates).is_err() {
        return;
    }
    check_valid_rates(&rates);

    // The wire: what GetRateCard answers parses back to the same rates.
    let wire: Vec<Rate> = rates
        .iter()
        .map(|rate| convert::parse_rate("rate", &convert::rate(rate)).expect("wire form parses"))
        .collect();
    assert_eq!(wire, rates, "the wire form changed the rates");
    // The stored JSON.
    let stored = serde_json::to_string(&Rates(rates.clone())).expect("rates serialize");
    let loaded: Rates = serde_json::from_str(&stored).expect("stored rates deserialize");
    assert_eq!(loaded.0, rates, "the stored form changed the rates");
    // The file written back.
    let written = write_rates_file(&card.notes, &rates);
    let again = rates_file::parse(&written)
        .unwrap_or_else(|err| panic!("the file written back does not parse: {err:#}\n{written}"));
    let again: Vec<Rate> = again
        .rates
        .iter()
        .map(|rate| convert::parse_rate("rate", rate).expect("written rate is valid"))
        .collect();
    assert_eq!(
        again, rates,
        "the file written back changed the rates\n{written}"
    );

    for rate in &rates {
        check_prices(rate);
    }
}

/// The rules `validate_rates` stands for, checked again from the outside.
fn check_valid_rates(rates: &[Rate]) {
    assert!(!rates.is_empty());
    let types: BTreeSet<&str> = rates.iter().map(|r| r.request_type.as_str()).collect();
    assert_eq!(types.len(), rates.len(), "request types repeat");
    for rate in rates {
        assert!(!rate.request_type.is_empty());
        assert!(rate.flat_units.micros() >= 0);
        assert!(rate.max_units.is_none_or(|m| m.micros() >= 0));
        let names: BTreeSet<&str> = rate.dimensions.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names.len(), rate.dimensions.len(), "dimensions repeat");
        for dim in &rate.dimensions {
            assert!(!dim.name.is_empty());
            assert!(dim.per > Decimal::ZERO, "per of {}", dim.name);
            assert!(dim.units.micros() >= 0);
        }
        if !rate.provider_cost.is_empty() {
            assert!(parse_unit_price(&rate.provider_cost).is_ok());
        }
        for price in &rate.list_prices {
            assert!(names.contains(price.dimension.as_str()));
            assert!(price.per > Decimal::ZERO && price.per <= MAX_UNIT_PRICE);
            assert!(price.price >= Decimal::ZERO && price.price <= MAX_UNIT_PRICE);
        }
    }
}

/// Renders rates as a rate card file (the format of `rates_file::FORMAT_HELP`).
fn write_rates_file(notes: &str, rates: &[Rate]) -> String {
    use toml::{Table, Value as Toml};
    let text = |s: &str| Toml::String(s.to_string());
    let mut file = Table::new();
    file.insert("notes".into(), text(notes));
    let rates = rates
        .iter()
        .map(|rate| {
            let mut t = Table::new();
            t.insert("request_type".into(), text(&rate.request_type));
            t.insert("flat_units".into(), text(&rate.flat_units.to_string()));
            if let Some(max) = rate.max_units {
                t.insert("max_units".into(), text(&max.to_string()));
            }
            t.insert("route".into(), text(&rate.route));
            t.insert("provider_cost".into(), text(&rate.provider_cost));
            let dims = rate.dimensions.iter().map(|d| {
                let mut dim = Table::new();
                dim.insert("name".into(), text(&d.name));
                dim.insert("per".into(), text(&format_decimal(d.per)));
                dim.insert("units".into(), text(&d.units.to_string()));
                Toml::Table(dim)
            });
            t.insert("dimension".into(), Toml::Array(dims.collect()));
            let prices = rate.list_prices.iter().map(|p| {
                let mut price = Table::new();
                price.insert("dimension".into(), text(&p.dimension));
                price.insert("per".into(), text(&format_decimal(p.per)));
                price.insert("price".into(), text(&format_decimal(p.price)));
                price.insert("currency".into(), text(&p.currency));
                Toml::Table(price)
            });
            t.insert("list_price".into(), Toml::Array(prices.collect()));
            Toml::Table(t)
        })
        .collect();
    file.insert("rate".into(), Toml::Array(rates));
    toml::to_string(&file).expect("a table serializes")
}

/// A valid rate's prices, against what its numbers say.
fn check_prices(rate: &Rate) {
    let flat = i128::from(rate.flat_units.micros());
    let capped = |micros: i128| match rate.max_units {
        Some(max) => micros.min(i128::from(max.micros())),
        None => micros,
    };
    let expect = |micros: i128, got: Result<Amount, PricingError>, what: &str| {
        let micros = capped(micros);
        if micros > i128::from(i64::MAX) {
            assert_eq!(got, Err(PricingError::Overflow), "{what}");
        } else {
            assert_eq!(got.map(|a| i128::from(a.micros())), Ok(micros), "{what}");
        }
    };
    expect(flat, rate.price(&BTreeMap::new()), "no quantities");
    let huge = Decimal::from_i128_with_scale(10i128.pow(24) - 1, 6);
    for dim in &rate.dimensions {
        // One `per` of the quantity costs exactly `units` on top of the flat price.
        let one = BTreeMap::from([(dim.name.clone(), dim.per)]);
        let units = i128::from(dim.units.micros());
        expect(
            flat + units,
            rate.price(&one),
            &format!("one per of {}", dim.name),
        );
        // The largest quantity on the wire: capped, or an error, never a panic.
        let most = BTreeMap::from([(dim.name.clone(), huge)]);
        match (rate.price(&most), rate.max_units) {
            (Ok(price), Some(max)) => assert!(price <= max),
            (Ok(price), None) => assert!(price >= rate.flat_units),
            (Err(err), max) => {
                assert_eq!(err, PricingError::Overflow);
                assert!(max.is_none(), "a capped rate overflowed");
            }
        }
    }
    let unknown = BTreeMap::from([("\u{0}unknown".to_string(), Decimal::ONE)]);
    assert!(matches!(
        rate.price(&unknown),
        Err(PricingError::UnknownDimension { .. })
    ));
}

// ---- tokens -------------------------------------------------------------------------------

const SECRET: &str = "fuzzing-secret-that-is-long-enough-for-hs256";
const ISSUER: &str = "allot";
const AUDIENCE: &str = "allot";

/// Who signed a token the harness built.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Signer {
    /// The configured HS256 secret (algorithm HS256, no `kid`).
    Secret,
    /// The JWKS key `k1` (RS256).
    K1,
    /// The JWKS key `k2` (RS256, no `alg` member in the JWKS).
    K2,
    /// Anything else: another secret, the HS/RS confusion, the fuzzer's bytes, a valid
    /// signature with a bit flipped, another algorithm. Must never verify.
    Forged,
}

struct Keys {
    auth: Authenticator,
    k1: EncodingKey,
    k2: EncodingKey,
    k1_public_pem: Vec<u8>,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let fixture = |name: &str| format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let read = |name: &str| std::fs::read(fixture(name)).expect("fixture readable");
        let auth = Authenticator::from_config(&AuthConfig {
            hs256_secret: Some(SECRET.into()),
            jwks_file: Some(fixture("jwks.json").into()),
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            ..AuthConfig::default()
        })
        .expect("fuzzing keys load");
        Keys {
            auth,
            k1: EncodingKey::from_rsa_pem(&read("rsa_private.pem")).expect("k1"),
            k2: EncodingKey::from_rsa_pem(&read("rsa2_private.pem")).expect("k2"),
            k1_public_pem: read("rsa_public.pem"),
        }
    })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

const ALGS: &[&str] = &[
    "HS256", "RS256", "HS256", "RS256", "ES256", "EdDSA", "HS384", "HS512", "RS384", "PS256",
    "none", "None", "hs256", "", "RS256 ",
];

fn header(input: &mut Input) -> Value {
    let mut header = serde_json::Map::new();
    match input.u8() % 8 {
        0 => {}
        1 => {
            header.insert("alg".into(), json!(input.u8()));
        }
        _ => {
            header.insert("alg".into(), json!(input.pick(ALGS)));
        }
    }
    let kid = match input.u8() % 8 {
        0..=2 => None,
        3 => Some(json!("k1")),
        4 => Some(json!("k2")),
        5 => Some(json!(
            input.pick(&["k9", "", "K1", "k1 ", "../k1", "k1\u{0}"])
        )),
        6 => Some(json!(input.string(40))),
        _ => Some(
            input
                .pick(&[json!(null), json!(1), json!(["k1"]), json!({"kid": "k1"})])
                .clone(),
        ),
    };
    if let Some(kid) = kid {
        header.insert("kid".into(), kid);
    }
    let extras = input.u8();
    if extras & 1 != 0 {
        header.insert("typ".into(), json!("JWT"));
    }
    if extras & 2 != 0 {
        header.insert("crit".into(), json!(["exp"]));
    }
    if extras & 4 != 0 {
        header.insert("jku".into(), json!("https://attacker.example/jwks.json"));
    }
    if extras & 8 != 0 {
        header.insert(
            "jwk".into(),
            json!({"kty": "oct", "k": b64(b"attacker-secret-attacker-secret-00")}),
        );
    }
    Value::Object(header)
}

fn claims(input: &mut Input, now: u64) -> Value {
    let mut claims = serde_json::Map::new();
    let sub = match input.u8() % 8 {
        0 => None,
        1 => Some(json!("")),
        2 => Some(json!("  ")),
        3 => Some(json!(input.string(300))),
        4 => Some(json!("svc\nforged")),
        5 => Some(json!(7)),
        _ => Some(json!("svc-fuzz")),
    };
    if let Some(sub) = sub {
        claims.insert("sub".into(), sub);
    }
    const ROLES: &[&str] = &[
        "service",
        "admin",
        "operator",
        "ADMIN",
        "root",
        "",
        "procurement",
    ];
    match input.u8() % 6 {
        0 => {}
        1 => {
            claims.insert("roles".into(), json!("admin"));
        }
        2 => {
            claims.insert("roles".into(), json!(vec!["service"; 33]));
        }
        _ => {
            let roles: Vec<&str> = (0..input.u8() % 4).map(|_| *input.pick(ROLES)).collect();
            claims.insert("roles".into(), json!(roles));
        }
    }
    match input.u8() % 8 {
        0 => {}
        1 => {
            claims.insert("accounts".into(), json!("*"));
        }
        2 => {
            claims.insert("accounts".into(), json!(["a".repeat(65)]));
        }
        3 => {
            claims.insert("accounts".into(), json!(["acct-a\u{0}"]));
        }
        4 => {
            claims.insert("accounts".into(), json!([1, 2]));
        }
        _ => {
            let accounts: Vec<String> = (0..input.u8() % 4)
                .map(|_| match input.u8() % 4 {
                    0 => "*".to_string(),
                    1 => String::new(),
                    2 => input.string(70),
                    _ => "acct-a".to_string(),
                })
                .collect();
            claims.insert("accounts".into(), json!(accounts));
        }
    }
    match input.u8() % 6 {
        0 => {}
        1 => {
            claims.insert("iss".into(), json!("evil"));
        }
        2 => {
            claims.insert("iss".into(), json!(["allot"]));
        }
        _ => {
            claims.insert("iss".into(), json!(ISSUER));
        }
    }
    let aud = match input.u8() % 8 {
        0 => None,
        1 => Some(json!("ALLOT")),
        2 => Some(json!([])),
        3 => Some(json!(["other", AUDIENCE])),
        4 => Some(json!(["other"])),
        5 => Some(json!(5)),
        _ => Some(json!(AUDIENCE)),
    };
    if let Some(aud) = aud {
        claims.insert("aud".into(), aud);
    }
    let offset = |input: &mut Input| i64::from(input.u16() as i16) * 4;
    let exp = match input.u8() % 8 {
        0 => None,
        1 => Some(json!(now.to_string())),
        2 => Some(json!(now as f64 + 600.5)),
        3 => Some(json!(-1)),
        4 => Some(json!(u64::MAX)),
        _ => Some(json!(now.saturating_add_signed(offset(input)))),
    };
    if let Some(exp) = exp {
        claims.insert("exp".into(), exp);
    }
    match input.u8() % 6 {
        0 => {
            claims.insert(
                "nbf".into(),
                json!(now.saturating_add_signed(offset(input))),
            );
        }
        1 => {
            claims.insert("nbf".into(), json!("soon"));
        }
        _ => {}
    }
    Value::Object(claims)
}

/// Token validation: tokens built from the fuzzer's choices of header, claims and signer
/// (valid parts mixed with hostile ones, so most get past base64 and JSON), or its raw text.
/// A token that verifies was signed by a configured key under that key's own algorithm
/// (and `kid`, when it names one), and its caller is exactly what its claims say — issuer,
/// audience, `sub`, roles, scope, within `exp`/`nbf`. A well-formed token signed by a
/// configured key verifies. `authenticate` agrees with `verify`, and asking twice gives the
/// same answer (the second comes from the cache of verified tokens).
pub fn token(data: &[u8]) {
    let keys = keys();
    let mut input = Input::new(data);
    let now = jsonwebtoken::get_current_timestamp();
    let mode = input.u8();
    // `exact`: the header and claims are JSON the harness wrote (raw text may hold duplicate
    // members, which a verifier may refuse: only "never accept wrongly" is checked then).
    let (token, signer, exact) = if mode.is_multiple_of(16) {
        let raw = String::from_utf8_lossy(data).into_owned();
        (raw, Signer::Forged, false)
    } else {
        let mut exact = true;
        let header_text = if input.u8().is_multiple_of(16) {
            exact = false;
            input.string(200)
        } else {
            header(&mut input).to_string()
        };
        let claims_text = if input.u8().is_multiple_of(16) {
            exact = false;
            input.string(400)
        } else {
            claims(&mut input, now).to_string()
        };
        let encode = |input: &mut Input, text: &str| {
            if input.u8().is_multiple_of(16) {
                text.to_string()
            } else {
                b64(text.as_bytes())
            }
        };
        let header_part = encode(&mut input, &header_text);
        let claims_part = encode(&mut input, &claims_text);
        let message = format!("{header_part}.{claims_part}");
        let sign = |key: &EncodingKey, alg| {
            jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("signing works")
        };
        let secret = EncodingKey::from_secret(SECRET.as_bytes());
        let (signature, signer) = match input.u8() % 10 {
            0 | 1 => (sign(&secret, Algorithm::HS256), Signer::Secret),
            2 => (sign(&keys.k1, Algorithm::RS256), Signer::K1),
            3 => (sign(&keys.k2, Algorithm::RS256), Signer::K2),
            4 => {
                let other = EncodingKey::from_secret(b"another-secret-that-is-long-enough!");
                (sign(&other, Algorithm::HS256), Signer::Forged)
            }
            5 => {
                // The HS/RS confusion: HMAC keyed with the RSA public key's text.
                let confused = EncodingKey::from_secret(&keys.k1_public_pem);
                (sign(&confused, Algorithm::HS256), Signer::Forged)
            }
            6 => (sign(&secret, Algorithm::HS384), Signer::Forged),
            7 => {
                let mut valid = URL_SAFE_NO_PAD
                    .decode(sign(&secret, Algorithm::HS256))
                    .expect("base64");
                let bit = usize::from(input.u16()) % (valid.len() * 8);
                valid[bit / 8] ^= 1 << (bit % 8);
                (b64(&valid), Signer::Forged)
            }
            8 => (String::new(), Signer::Forged),
            _ => (input.string(400), Signer::Forged),
        };
        let mut token = format!("{message}.{signature}");
        match input.u8() % 16 {
            0 => token.push_str(".extra"),
            1 => token.insert(0, ' '),
            2 => token = token.replacen('.', "..", 1),
            _ => {}
        }
        (token, signer, exact)
    };

    let result = keys.auth.verify(&token);
    // Every error has a reason for the client.
    if let Err(err) = &result {
        let _ = err.reason();
    }
    let same = |other: &Result<Caller, AuthError>| match (&result, other) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => a.reason() == b.reason(),
        _ => false,
    };
    assert!(
        same(&keys.auth.verify(&token)),
        "a second verify disagrees on {token:?}"
    );
    if !token.is_empty() && !token.contains(char::is_whitespace) {
        let header = format!("Bearer {token}");
        assert!(
            same(&keys.auth.authenticate(Some(&header))),
            "authenticate disagrees with verify on {token:?}"
        );
    }

    let verdict = match judge(&token, signer, now) {
        Verdict::Accept(caller) if !exact => Verdict::Either(caller),
        verdict => verdict,
    };
    match (&result, verdict) {
        (Ok(caller), Verdict::Reject(why)) => {
            panic!("{token:?} verified as {caller:?}, but {why}")
        }
        (Ok(caller), Verdict::Accept(expected) | Verdict::Either(expected)) => {
            assert_eq!(caller, &expected, "caller of {token:?}")
        }
        (Err(err), Verdict::Accept(_)) => {
            panic!("{token:?} is a valid token, but verify said: {err}")
        }
        (Err(_), _) => {}
    }
}

enum Verdict {
    /// Must not verify, because…
    Reject(String),
    /// Must verify, as this caller.
    Accept(Caller),
    /// Near a time boundary (the clock moves): if it verifies, as this caller.
    Either(Caller),
}

/// What the rules say of a token the harness built (or was given): decided from its parts
/// with serde_json alone, never with the verifier's code.
fn judge(token: &str, signer: Signer, now: u64) -> Verdict {
    let reject = |why: &str| Verdict::Reject(why.to_string());
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return reject("it is not three parts");
    };
    let json = |part: &str| -> Option<serde_json::Map<String, Value>> {
        let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
        match serde_json::from_slice(&bytes).ok()? {
            Value::Object(map) => Some(map),
            _ => None,
        }
    };
    let (Some(header), Some(claims)) = (json(header), json(claims)) else {
        return reject("a part is not base64url JSON");
    };
    let (alg, kid) = match signer {
        Signer::Forged => return reject("no configured key signed it"),
        Signer::Secret => ("HS256", None),
        Signer::K1 => ("RS256", Some("k1")),
        Signer::K2 => ("RS256", Some("k2")),
    };
    if header.get("alg") != Some(&json!(alg)) {
        return reject("its alg is not the signing key's");
    }
    match header.get("kid") {
        None | Some(Value::Null) => {}
        Some(Value::String(named)) if Some(named.as_str()) == kid => {}
        Some(_) => return reject("its kid names another key"),
    }
    if header.contains_key("crit") {
        return reject("it has critical extensions");
    }

    let Some(Value::String(sub)) = claims.get("sub") else {
        return reject("sub is missing or not a string");
    };
    if sub.trim().is_empty() || sub.len() > 255 || sub.chars().any(char::is_control) {
        return reject("sub is empty, too long or has control characters");
    }
    if claims.get("iss") != Some(&json!(ISSUER)) {
        return reject("iss is not the issuer");
    }
    let audience = json!(AUDIENCE);
    match claims.get("aud") {
        Some(Value::String(aud)) if aud == AUDIENCE => {}
        Some(Value::Array(auds)) if auds.contains(&audience) => {
            if !auds.iter().all(Value::is_string) {
                return reject("aud holds a non-string");
            }
        }
        _ => return reject("aud does not name the audience"),
    }
    let strings = |name: &str, max: usize| -> Result<Vec<String>, String> {
        match claims.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) if items.len() <= max => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("{name} holds a non-string")),
            Some(_) => Err(format!("{name} is not a short array")),
        }
    };
    let roles = match strings("roles", 32) {
        Ok(roles) => roles,
        Err(why) => return reject(&why),
    };
    let accounts = match strings("accounts", 1000) {
        Ok(accounts) => accounts,
        Err(why) => return reject(&why),
    };
    if accounts
        .iter()
        .any(|a| a.len() > 64 || a.chars().any(char::is_control))
    {
        return reject("an account id is too long or has control characters");
    }
    let leeway = LEEWAY_SECS;
    // A NumericDate (RFC 7519 §2): seconds, possibly fractional, never negative.
    let numeric_date = |value: &Value| match value {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64)
        }),
        _ => None,
    };
    let Some(exp) = claims.get("exp").and_then(numeric_date) else {
        return reject("exp is missing or not a NumericDate");
    };
    // Fractional dates may be rounded or truncated: a second's slack either way.
    let mut near_boundary = false;
    if exp.saturating_add(leeway + 1) < now {
        return reject("it expired");
    }
    near_boundary |= exp.saturating_add(leeway) <= now + 2;
    match claims.get("nbf") {
        None => {}
        Some(nbf) => {
            let Some(nbf) = numeric_date(nbf) else {
                return reject("nbf is not a NumericDate");
            };
            if nbf > now + leeway + 2 {
                return reject("it is not valid yet");
            }
            near_boundary |= nbf + 2 >= now + leeway;
        }
    }
    let caller = Caller {
        sub: sub.clone(),
        roles: roles
            .iter()
            .filter_map(|r| r.parse::<Role>().ok())
            .collect(),
        scope: if accounts.iter().any(|a| a == "*") {
            Scope::All
        } else {
            Scope::Accounts(accounts.into_iter().filter(|a| !a.is_empty()).collect())
        },
    };
    if near_boundary {
        Verdict::Either(caller)
    } else {
        Verdict::Accept(caller)
    }
}

// ---- the batch evaluator ------------------------------------------------------------------

/// The ledger's batch evaluator: see `store/ledger/eval/fuzz.rs` for what is checked.
pub fn evaluate(data: &[u8]) {
    crate::store::ledger::fuzz_evaluate(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed seed of every target runs clean (`fuzz/corpus/<target>/`).
    #[test]
    fn the_seed_corpora_pass() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 4] = [
            ("amount", amount),
            ("rate_card", rate_card),
            ("token", token),
            ("evaluate", evaluate),
        ];
        for (name, target) in targets {
            let dir = corpus.join(name);
            let mut seeds = 0;
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
                let path = entry.expect("corpus entry").path();
                target(&std::fs::read(&path).expect("seed readable"));
                seeds += 1;
            }
            assert!(seeds > 0, "no seeds for {name}");
        }
    }

    /// Found by the `evaluate` target (the harness was wrong, not the ledger): an overdrawn
    /// wallet given a schedule that starts periods in the past gains more than the schedule's
    /// amount, because its first period's grant repays the debt before it expires.
    #[test]
    fn a_catch_up_schedule_repays_debt() {
        evaluate(&[
            1, 0, 1, 4, 0, 1, 1, 0, 0, 2, 0, 10, 0, 1, 1, 52, 0, 0, 0, 2, 1, 2, 0, 0, 0, 48, 232,
            53, 99, 57, 100, 51, 51, 232, 232, 232,
        ]);
    }

    /// Found by the `token` target (the harness was wrong, not the verifier): `exp` may be
    /// fractional (an RFC 7519 NumericDate), and such a token verifies.
    #[test]
    fn a_fractional_exp_verifies() {
        token(&[
            1, 1, 2, 0, 0, 0, 1, 6, 3, 1, 0, 5, 1, 185, 3, 6, 34, 0, 0, 0, 1, 1, 0, 3,
        ]);
        let now = jsonwebtoken::get_current_timestamp();
        let claims = json!({"sub": "s", "iss": ISSUER, "aud": AUDIENCE, "exp": now as f64 + 600.5});
        let message = format!(
            "{}.{}",
            b64(json!({"alg": "HS256"}).to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .unwrap();
        let caller = keys()
            .auth
            .verify(&format!("{message}.{signature}"))
            .unwrap();
        assert_eq!(caller.sub, "s");
    }

    #[test]
    fn the_oracles_agree_with_examples() {
        assert_eq!(shape("-12.5"), Shape::Fits(-12_500_000));
        assert_eq!(shape("1.2.3"), Shape::Malformed);
        assert_eq!(shape("1234567890123456789"), Shape::TooManyDigits);
        assert_eq!(exact_micros("-0.000001"), Some(-1));
        assert_eq!(
            exact_micros(&format_micros(i128::MIN)),
            Some(i128::MIN),
            "{}",
            format_micros(i128::MIN)
        );
        // The harness itself accepts valid tokens and refuses forged ones.
        let now = jsonwebtoken::get_current_timestamp();
        let valid = json!({"sub": "s", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600});
        let message = format!(
            "{}.{}",
            b64(json!({"alg": "HS256"}).to_string().as_bytes()),
            b64(valid.to_string().as_bytes())
        );
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .unwrap();
        let token = format!("{message}.{signature}");
        assert!(keys().auth.verify(&token).is_ok());
        assert!(matches!(
            judge(&token, Signer::Secret, now),
            Verdict::Accept(_)
        ));
        assert!(matches!(
            judge(&token, Signer::Forged, now),
            Verdict::Reject(_)
        ));
    }
}
