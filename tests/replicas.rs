//! Three real `allot serve` processes (R0, R1, R2) on one database, driven at the same
//! wallets at the same time: whatever the replicas race on, no money is created and no
//! effect is applied more often than allowed.
//!
//! * refunds: four full refunds of every debit at once → exactly one per debit (four
//!   refunds of half → exactly two);
//! * holds: capture, release and a second capture of every hold at once → exactly one;
//! * voids: every grant voided three times at once → exactly once (also with debits racing
//!   the voids: every grant's units voided or burnt, never both);
//! * negative adjustments and debits competing for 100 units → never more than 100 taken;
//! * schedules: one grant per period although three background sweepers run;
//! * hold expiry: 30 holds with a 2 s TTL taken through all three replicas → each expires
//!   once (one RELEASE entry, by `system`, at its expire_time) although three sweepers run,
//!   and its wallet is back to full;
//! * the same work through three replicas as through one: 12 wallets' scripts of debits
//!   (priced by the card from their quantities, one capped), holds captured below the hold
//!   or released, and full and partial refunds of debits and captures, run once with every
//!   wallet's calls round-robin over R0/R1/R2 and all wallets at once, and once through R0
//!   alone, wallet after wallet → per wallet the same posted / available / reserved, the
//!   same entries (kind, units, delta, money; also in order with their balance_after) and
//!   the same units charged and refunded, which are the figures the script adds up to;
//! * account state: a close racing an activation and a suspension always sticks;
//! * rate cards: one draft published three times at once → once; after that publish and
//!   after one through each replica alone, the next debit through every replica is priced
//!   by the new card, and every replica serves it as the card in force.
//!
//! Afterwards `allot verify` passes and every wallet's posted balance is the last entry's
//! `balance_after` and the sum of its entries' deltas, the same through every replica.
//!
//! Calls that answer ABORTED or UNAVAILABLE (write conflicts, a busy SQLite file) or
//! RESOURCE_EXHAUSTED / OVERLOADED (admission control) are sent again with the same
//! request_id until they give a definite answer; only definite answers are counted.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use allot::proto::{
    self, AccountState, GrantState, RateCardState, ReservationState, RolloverPolicy,
    SchedulePeriod, TransactionKind,
};
use common::{process::ServerProcess, *};
use futures::future::{BoxFuture, FutureExt, join_all};
use rust_decimal::{Decimal, RoundingStrategy};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Longest a single call may take before the test gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an ABORTED / UNAVAILABLE answer is retried (same request_id).
const MAX_ATTEMPTS: u32 = 40;
/// How long to wait for the background sweepers to grant a period that has started.
const SWEEP_WAIT: Duration = Duration::from_secs(30);

/// Retries (ABORTED / UNAVAILABLE answers sent again) over the whole test.
static RETRIES: AtomicUsize = AtomicUsize::new(0);

// ---- harness ---------------------------------------------------------------------------------

/// `definite` for `client.method(request)`, the client made afresh for every attempt.
macro_rules! call {
    ($what:expr, $client:expr, $method:ident, $request:expr) => {{
        let request = &$request;
        definite($what, || {
            let mut client = $client;
            let request = request.clone();
            async move { client.$method(request).await }
        })
        .await
    }};
}

/// Sends a call until it gives a definite answer: ABORTED and UNAVAILABLE are sent again
/// (`call` must repeat the same request, request_id included); a call that does not answer
/// within `CALL_TIMEOUT` fails the test.
async fn definite<T, F, Fut>(what: &str, mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let mut last = None;
    for attempt in 0..MAX_ATTEMPTS {
        match tokio::time::timeout(CALL_TIMEOUT, call()).await {
            Err(_) => panic!("{what}: no answer within {CALL_TIMEOUT:?} (attempt {attempt})"),
            Ok(Ok(response)) => return Ok(response.into_inner()),
            Ok(Err(status)) if retryable(&status) => {
                RETRIES.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "retrying {what} after {:?} {}: {}",
                    status.code(),
                    reason(&status),
                    status.message()
                );
                // An OVERLOADED refusal says when to come back.
                let hint = status
                    .get_error_details()
                    .retry_info()
                    .and_then(|info| info.retry_delay)
                    .unwrap_or_default();
                last = Some(status);
                let backoff = Duration::from_millis(10 * u64::from(attempt + 1));
                tokio::time::sleep(backoff.max(hint)).await;
            }
            Ok(Err(status)) => return Err(status),
        }
    }
    panic!("{what}: still no definite answer after {MAX_ATTEMPTS} attempts: {last:?}");
}

/// The ErrorInfo reason of a status ("" without one).
/// Answers that mean "not applied, send it again": write conflicts, a busy SQLite file, and
/// OVERLOADED refusals (admission control).
fn retryable(status: &Status) -> bool {
    match status.code() {
        Code::Aborted | Code::Unavailable => true,
        Code::ResourceExhausted => reason(status) == "OVERLOADED",
        _ => false,
    }
}

fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

fn outcome_name<T>(result: &Result<T, Status>) -> String {
    match result {
        Ok(_) => "OK".to_string(),
        Err(status) => format!("{:?}/{}", status.code(), reason(status)),
    }
}

/// Counts of each outcome (`OK` or `Code/REASON`).
fn outcomes<T>(results: &[Result<T, Status>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for result in results {
        *counts.entry(outcome_name(result)).or_insert(0) += 1;
    }
    counts
}

/// Successes per replica, when call `n` went through replica `replica_of(n)`.
fn wins<T>(results: &[Result<T, Status>], replica_of: impl Fn(usize) -> usize) -> String {
    let mut by = [0usize; 3];
    for (n, result) in results.iter().enumerate() {
        if result.is_ok() {
            by[replica_of(n) % 3] += 1;
        }
    }
    format!("won through R0/R1/R2: {}/{}/{}", by[0], by[1], by[2])
}

/// Failed checks, collected so that every scenario runs and all failures are reported; the
/// test fails at the end if there is any.
#[derive(Default)]
struct Failures(Mutex<Vec<String>>);

impl Failures {
    fn check(&self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            let message = message();
            eprintln!("CHECK FAILED: {message}");
            self.0.lock().unwrap().push(message);
        }
    }

    /// Every failure has `code` and one of `reasons`.
    fn only_failures<T>(
        &self,
        what: &str,
        results: &[Result<T, Status>],
        code: Code,
        reasons: &[&str],
    ) {
        for result in results {
            if let Err(status) = result {
                let r = reason(status);
                self.check(
                    status.code() == code && reasons.contains(&r.as_str()),
                    || {
                        format!(
                            "{what}: unexpected failure {status:?} (expected {code:?} {reasons:?})"
                        )
                    },
                );
            }
        }
    }

    fn finish(&self) {
        let failures = self.0.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{} check(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
}

/// A decimal field, where an empty one is zero.
fn dec_or_zero(text: &str) -> Decimal {
    if text.is_empty() {
        Decimal::ZERO
    } else {
        dec(text)
    }
}

/// Three replicas on one fresh database.
struct Cluster {
    // Dropped first: the processes are killed before their database and logs go away.
    replicas: Vec<ServerProcess>,
    db: TestDatabase,
    _logs: tempfile::TempDir,
    /// Every account the test funded (label, account id), checked for conservation at the end.
    accounts: Mutex<Vec<(String, String)>>,
    failures: Failures,
}

impl Cluster {
    async fn start() -> Cluster {
        let db = TestDatabase::create().await;
        let logs = tempfile::tempdir().expect("log dir");
        // Sweep often, so the three background sweepers are busy while the test runs.
        let flags = ["--sweep-interval", "1s"];
        // R0 creates the schema; R1 and R2 then start together on the migrated database.
        let r0 = ServerProcess::start("R0", &db.url, &flags, logs.path()).await;
        let (r1, r2) = tokio::join!(
            ServerProcess::start("R1", &db.url, &flags, logs.path()),
            ServerProcess::start("R2", &db.url, &flags, logs.path()),
        );
        eprintln!(
            "replicas on {}: R0 {} (pid {}), R1 {} (pid {}), R2 {} (pid {})",
            if db.is_postgres() {
                "PostgreSQL"
            } else {
                "SQLite"
            },
            r0.addr,
            r0.pid(),
            r1.addr,
            r1.pid(),
            r2.addr,
            r2.pid()
        );
        Cluster {
            replicas: vec![r0, r1, r2],
            db,
            _logs: logs,
            accounts: Mutex::default(),
            failures: Failures::default(),
        }
    }

    fn r(&self, i: usize) -> &ServerProcess {
        &self.replicas[i % self.replicas.len()]
    }

    fn check(&self, ok: bool, message: impl FnOnce() -> String) {
        self.failures.check(ok, message);
    }

    // ---- provisioning (through R0 unless said otherwise) -------------------------------------

    async fn create_account(&self, external_id: &str) -> proto::Account {
        let request = proto::CreateAccountRequest {
            account: Some(proto::Account {
                external_id: external_id.into(),
                display_name: format!("{external_id} Inc."),
                ..Default::default()
            }),
            request_id: uuid(),
        };
        let account = call!(
            "CreateAccount",
            self.r(0).accounts(),
            create_account,
            request
        )
        .unwrap_or_else(|s| panic!("create account {external_id}: {s:?}"));
        self.accounts
            .lock()
            .unwrap()
            .push((external_id.to_string(), account.id.clone()));
        account
    }

    async fn create_wallet(&self, account_id: &str) -> proto::Wallet {
        let request = proto::CreateWalletRequest {
            wallet: Some(proto::Wallet {
                account_id: account_id.into(),
                unit: "credits".into(),
                ..Default::default()
            }),
            request_id: uuid(),
        };
        call!("CreateWallet", self.r(0).accounts(), create_wallet, request)
            .unwrap_or_else(|s| panic!("create wallet for {account_id}: {s:?}"))
    }

    async fn grant(&self, wallet_id: &str, amount: &str) -> proto::Grant {
        self.grant_at(wallet_id, amount, "0.01").await
    }

    /// A grant of `amount` at `unit_price` USD.
    async fn grant_at(&self, wallet_id: &str, amount: &str, unit_price: &str) -> proto::Grant {
        let request = grant_request(wallet_id, amount, unit_price);
        call!("CreateGrant", self.r(0).grants(), create_grant, request)
            .unwrap_or_else(|s| panic!("grant {amount} to {wallet_id}: {s:?}"))
    }

    /// Account + `credits` wallet + one grant of `amount` (if non-empty).
    async fn funded(&self, external_id: &str, amount: &str) -> (proto::Account, proto::Wallet) {
        let account = self.create_account(external_id).await;
        let wallet = self.create_wallet(&account.id).await;
        if !amount.is_empty() {
            self.grant(&wallet.id, amount).await;
        }
        (account, wallet)
    }

    /// Creates a draft card with `rates` through R0 (not published).
    async fn draft_card(&self, rates: Vec<proto::Rate>) -> proto::RateCard {
        let request = card_request(rates, "replicas test card");
        call!(
            "CreateRateCard",
            self.r(0).rates(),
            create_rate_card,
            request
        )
        .expect("create rate card")
    }

    async fn publish(&self, i: usize, card: &proto::RateCard) -> Result<proto::RateCard, Status> {
        let request = proto::PublishRateCardRequest {
            version: card.version,
            etag: card.etag.clone(),
            effective_time: None,
            request_id: uuid(),
        };
        call!(
            "PublishRateCard",
            self.r(i).rates(),
            publish_rate_card,
            request
        )
    }

    // ---- operations (through replica `i`) -----------------------------------------------------

    /// A `req` debit (the first card's flat 10 units).
    async fn debit(&self, i: usize, account_id: &str) -> Result<proto::Transaction, Status> {
        self.debit_with(i, debit_request(account_id, "req", &uuid()))
            .await
    }

    async fn debit_with(
        &self,
        i: usize,
        request: proto::DebitRequest,
    ) -> Result<proto::Transaction, Status> {
        call!("Debit", self.r(i).ledger(), debit, request)
            .map(|r| r.transaction.expect("debit transaction"))
    }

    /// A hold of exactly `units` for the server's default TTL.
    async fn reserve(
        &self,
        i: usize,
        account_id: &str,
        units: &str,
    ) -> Result<proto::Reservation, Status> {
        let request = proto::ReserveRequest {
            account_id: account_id.into(),
            units: units.into(),
            request_id: uuid(),
            ..Default::default()
        };
        self.reserve_with(i, request).await
    }

    async fn reserve_with(
        &self,
        i: usize,
        request: proto::ReserveRequest,
    ) -> Result<proto::Reservation, Status> {
        call!("Reserve", self.r(i).ledger(), reserve, request)
    }

    async fn capture(
        &self,
        i: usize,
        reservation_id: &str,
        units: &str,
    ) -> Result<proto::Transaction, Status> {
        let request = proto::CaptureReservationRequest {
            reservation_id: reservation_id.into(),
            units: units.into(),
            request_id: uuid(),
            ..Default::default()
        };
        self.capture_with(i, request).await
    }

    async fn capture_with(
        &self,
        i: usize,
        request: proto::CaptureReservationRequest,
    ) -> Result<proto::Transaction, Status> {
        call!(
            "CaptureReservation",
            self.r(i).ledger(),
            capture_reservation,
            request
        )
        .map(|r| r.transaction.expect("capture transaction"))
    }

    async fn release(&self, i: usize, reservation_id: &str) -> Result<proto::Reservation, Status> {
        let request = proto::ReleaseReservationRequest {
            reservation_id: reservation_id.into(),
            request_id: uuid(),
        };
        call!(
            "ReleaseReservation",
            self.r(i).ledger(),
            release_reservation,
            request
        )
    }

    async fn refund(
        &self,
        i: usize,
        transaction_id: &str,
        units: &str,
    ) -> Result<proto::Transaction, Status> {
        let request = proto::RefundRequest {
            transaction_id: transaction_id.into(),
            units: units.into(),
            reason: "request failed".into(),
            request_id: uuid(),
        };
        call!("Refund", self.r(i).ledger(), refund, request)
    }

    async fn void(&self, i: usize, grant_id: &str) -> Result<proto::Grant, Status> {
        let request = proto::VoidGrantRequest {
            id: grant_id.into(),
            reason: "contract cancelled".into(),
            request_id: uuid(),
        };
        call!("VoidGrant", self.r(i).grants(), void_grant, request)
    }

    async fn adjust(
        &self,
        i: usize,
        wallet_id: &str,
        units: &str,
    ) -> Result<proto::Transaction, Status> {
        let request = proto::AdjustBalanceRequest {
            wallet_id: wallet_id.into(),
            units: units.into(),
            reason: "correction".into(),
            request_id: uuid(),
        };
        call!("AdjustBalance", self.r(i).grants(), adjust_balance, request)
    }

    async fn set_state(
        &self,
        i: usize,
        account_id: &str,
        state: AccountState,
    ) -> Result<proto::Account, Status> {
        let request = state_request(account_id, state);
        call!(
            "UpdateAccount",
            self.r(i).accounts(),
            update_account,
            request
        )
    }

    // ---- reads (through replica `i`) ----------------------------------------------------------

    async fn balance(&self, i: usize, account_id: &str) -> proto::Balance {
        let request = proto::GetBalanceRequest {
            account_id: account_id.into(),
            ..Default::default()
        };
        call!("GetBalance", self.r(i).ledger(), get_balance, request)
            .unwrap_or_else(|s| panic!("balance of {account_id} through R{i}: {s:?}"))
    }

    async fn account(&self, i: usize, account_id: &str) -> proto::Account {
        let request = proto::GetAccountRequest {
            id: account_id.into(),
        };
        call!("GetAccount", self.r(i).accounts(), get_account, request)
            .unwrap_or_else(|s| panic!("account {account_id} through R{i}: {s:?}"))
    }

    /// Every entry of the account's `credits` wallet, newest first.
    async fn transactions(&self, i: usize, account_id: &str) -> Vec<proto::Transaction> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = proto::ListTransactionsRequest {
                account_id: account_id.into(),
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            };
            let page = call!(
                "ListTransactions",
                self.r(i).ledger(),
                list_transactions,
                request
            )
            .unwrap_or_else(|s| panic!("transactions of {account_id} through R{i}: {s:?}"));
            all.extend(page.transactions);
            if page.next_page_token.is_empty() {
                return all;
            }
            page_token = page.next_page_token;
        }
    }

    async fn grants_of(&self, i: usize, wallet_id: &str) -> Vec<proto::Grant> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = proto::ListGrantsRequest {
                wallet_id: wallet_id.into(),
                page_size: 1000,
                page_token: page_token.clone(),
            };
            let page = call!("ListGrants", self.r(i).grants(), list_grants, request)
                .unwrap_or_else(|s| panic!("grants of {wallet_id} through R{i}: {s:?}"));
            all.extend(page.grants);
            if page.next_page_token.is_empty() {
                return all;
            }
            page_token = page.next_page_token;
        }
    }

    /// Posted and reserved as every replica reports them; checks the replicas agree.
    async fn posted_reserved(&self, what: &str, account_id: &str) -> (Decimal, Decimal) {
        let (posted, _, reserved) = self.balances(what, account_id).await;
        (posted, reserved)
    }

    /// Posted, available and reserved as every replica reports them; checks the replicas
    /// agree.
    async fn balances(&self, what: &str, account_id: &str) -> (Decimal, Decimal, Decimal) {
        let mut seen = Vec::new();
        for i in 0..self.replicas.len() {
            let b = self.balance(i, account_id).await;
            seen.push((
                dec_or_zero(&b.posted),
                dec_or_zero(&b.available),
                dec_or_zero(&b.reserved),
            ));
        }
        self.check(seen.iter().all(|s| *s == seen[0]), || {
            format!(
                "{what}: replicas disagree on (posted, available, reserved) of {account_id}: \
                 {seen:?}"
            )
        });
        seen[0]
    }
}

// ---- scenarios -------------------------------------------------------------------------------

/// 30 debits of 10 on 1000, then four refunds of each debit at once (120 calls, every debit's
/// refunds on all three replicas): with full refunds (`units` empty) exactly one per debit,
/// with refunds of 5 exactly two per debit.
async fn refunds(c: &Cluster, units: &str) {
    let (label, per_debit) = if units.is_empty() {
        ("refunds-full", 1)
    } else {
        ("refunds-half", 2)
    };
    let (account, _) = c.funded(label, "1000").await;
    let debits = join_all((0..30).map(|k| c.debit(k, &account.id))).await;
    let debits: Vec<proto::Transaction> = debits
        .into_iter()
        .enumerate()
        .map(|(k, r)| r.unwrap_or_else(|s| panic!("{label}: debit {k} of 30 on 1000: {s:?}")))
        .collect();
    let (posted, _) = c.posted_reserved(label, &account.id).await;
    c.check(posted == dec("700"), || {
        format!("{label}: posted after 30 concurrent debits of 10 on 1000 is {posted}, not 700")
    });

    let mut calls = Vec::new();
    for (k, debit) in debits.iter().enumerate() {
        for copy in 0..4 {
            calls.push(c.refund(k + copy, &debit.id, units));
        }
    }
    let results = join_all(calls).await;
    let counts = outcomes(&results);
    eprintln!(
        "{label}: 120 concurrent refunds ({units:?} units) of 30 debits → {counts:?}, {}",
        wins(&results, |n| n / 4 + n % 4)
    );
    let ok = results.iter().filter(|r| r.is_ok()).count();
    c.check(ok == 30 * per_debit, || {
        format!(
            "{label}: {ok} of 120 refunds succeeded, expected exactly {} ({counts:?})",
            30 * per_debit
        )
    });
    for (k, debit) in debits.iter().enumerate() {
        let n = results[4 * k..4 * k + 4]
            .iter()
            .filter(|r| r.is_ok())
            .count();
        c.check(n == per_debit, || {
            format!(
                "{label}: debit {} was refunded {n} times of 4 concurrent, expected {per_debit}",
                debit.id
            )
        });
    }
    c.failures.only_failures(
        label,
        &results,
        Code::FailedPrecondition,
        &["REFUND_EXCEEDS_CHARGE"],
    );
    let (posted, reserved) = c.posted_reserved(label, &account.id).await;
    c.check(posted == dec("1000") && reserved.is_zero(), || {
        format!(
            "{label}: final posted {posted} reserved {reserved}, expected 1000 / 0 \
             ({ok} refunds succeeded)"
        )
    });
    let txns = c.transactions(0, &account.id).await;
    let refunds = of_kind(&txns, TransactionKind::Refund);
    let mut per_original: BTreeMap<&str, Decimal> = BTreeMap::new();
    for t in &refunds {
        *per_original
            .entry(t.refunded_transaction_id.as_str())
            .or_default() += dec_or_zero(&t.units);
    }
    c.check(
        refunds.len() == 30 * per_debit
            && per_original.len() == 30
            && per_original.values().all(|u| *u == dec("10")),
        || {
            format!(
                "{label}: ledger has {} REFUND entries; units refunded per debit: {per_original:?} \
                 (expected 10 for each of 30 debits)",
                refunds.len()
            )
        },
    );
}

/// 20 holds of 10; each captured, released and captured again at once through the three
/// replicas: exactly one of the three per hold.
async fn holds(c: &Cluster) {
    let (account, _) = c.funded("holds", "1000").await;
    let holds = join_all((0..20).map(|k| c.reserve(k, &account.id, "10"))).await;
    let holds: Vec<proto::Reservation> = holds
        .into_iter()
        .enumerate()
        .map(|(k, r)| r.unwrap_or_else(|s| panic!("holds: reserve {k} of 20: {s:?}")))
        .collect();
    let (posted, reserved) = c.posted_reserved("holds", &account.id).await;
    c.check(posted == dec("1000") && reserved == dec("200"), || {
        format!(
            "holds: after 20 holds of 10: posted {posted} reserved {reserved}, expected 1000 / 200"
        )
    });

    // Per hold: capture via R(k), release via R(k+1), capture via R(k+2).
    #[derive(Debug)]
    enum Done {
        Captured,
        Released,
    }
    let mut calls: Vec<BoxFuture<'_, Result<Done, Status>>> = Vec::new();
    for (k, hold) in holds.iter().enumerate() {
        calls.push(
            c.capture(k, &hold.id, "10")
                .map(|r| r.map(|_| Done::Captured))
                .boxed(),
        );
        calls.push(
            c.release(k + 1, &hold.id)
                .map(|r| r.map(|_| Done::Released))
                .boxed(),
        );
        calls.push(
            c.capture(k + 2, &hold.id, "10")
                .map(|r| r.map(|_| Done::Captured))
                .boxed(),
        );
    }
    let results = join_all(calls).await;
    let counts = outcomes(&results);
    let captures = results
        .iter()
        .filter(|r| matches!(r, Ok(Done::Captured)))
        .count();
    let releases = results
        .iter()
        .filter(|r| matches!(r, Ok(Done::Released)))
        .count();
    eprintln!(
        "holds: 60 concurrent capture/release/capture of 20 holds → {counts:?} \
         ({captures} captures, {releases} releases), {}",
        wins(&results, |n| n / 3 + n % 3)
    );
    for (k, hold) in holds.iter().enumerate() {
        let mine = &results[3 * k..3 * k + 3];
        let n = mine.iter().filter(|r| r.is_ok()).count();
        c.check(n == 1, || {
            format!(
                "holds: {} had {n} successful capture/release calls of 3: {:?}",
                hold.id,
                mine.iter().map(outcome_name).collect::<Vec<_>>()
            )
        });
    }
    c.failures.only_failures(
        "holds",
        &results,
        Code::FailedPrecondition,
        &["RESERVATION_NOT_OPEN"],
    );
    let (posted, reserved) = c.posted_reserved("holds", &account.id).await;
    let expected = dec("1000") - Decimal::from(10 * captures as i64);
    c.check(posted == expected && reserved.is_zero(), || {
        format!(
            "holds: final posted {posted} reserved {reserved}, expected {expected} / 0 \
             ({captures} captures, {releases} releases)"
        )
    });
    let txns = c.transactions(0, &account.id).await;
    let capture_entries = of_kind(&txns, TransactionKind::Capture);
    let release_entries = of_kind(&txns, TransactionKind::Release);
    c.check(
        capture_entries.len() == captures && release_entries.len() == releases,
        || {
            format!(
                "holds: ledger has {} CAPTURE / {} RELEASE entries, calls reported {captures} / {releases}",
                capture_entries.len(),
                release_entries.len()
            )
        },
    );
    let mut settled: BTreeMap<&str, usize> = BTreeMap::new();
    for t in capture_entries.iter().chain(release_entries.iter()) {
        *settled.entry(t.reservation_id.as_str()).or_insert(0) += 1;
    }
    c.check(
        settled.len() == 20 && settled.values().all(|n| *n == 1),
        || {
            format!(
                "holds: CAPTURE/RELEASE entries per hold: {settled:?} (expected 20 holds once each)"
            )
        },
    );
}

/// 10 grants of 50 (and one of 7 left alone), each voided three times at once: exactly one
/// void per grant. With `debits`, 10 debits of 10 race the voids through the three
/// replicas: every grant's units are voided or burnt, never both, and what is left is what
/// neither took.
async fn voids(c: &Cluster, debits: bool) {
    let label = if debits { "voids+debits" } else { "voids" };
    let (account, wallet) = c.funded(label, "7").await;
    let small = c.grants_of(0, &wallet.id).await;
    let mut grants = Vec::new();
    for _ in 0..10 {
        grants.push(c.grant(&wallet.id, "50").await);
    }
    let (posted, _) = c.posted_reserved(label, &account.id).await;
    c.check(posted == dec("507"), || {
        format!("{label}: posted before voiding is {posted}, expected 507")
    });
    let mut calls = Vec::new();
    for (k, grant) in grants.iter().enumerate() {
        for copy in 0..3 {
            calls.push(c.void(k + copy, &grant.id));
        }
    }
    let debit_calls = (0..if debits { 10 } else { 0 }).map(|k| c.debit(k, &account.id));
    let (results, debit_results) = tokio::join!(join_all(calls), join_all(debit_calls));
    let counts = outcomes(&results);
    let debited = debit_results.iter().filter(|r| r.is_ok()).count();
    eprintln!(
        "{label}: 30 concurrent voids of 10 grants → {counts:?}, {}; debits alongside → {:?}",
        wins(&results, |n| n / 3 + n % 3),
        outcomes(&debit_results)
    );
    for (k, grant) in grants.iter().enumerate() {
        let n = results[3 * k..3 * k + 3]
            .iter()
            .filter(|r| r.is_ok())
            .count();
        c.check(n == 1, || {
            format!(
                "{label}: grant {} voided successfully {n} times of 3",
                grant.id
            )
        });
    }
    for grant in results.iter().filter_map(|r| r.as_ref().ok()) {
        c.check(grant.state == GrantState::Voided as i32, || {
            format!("{label}: a successful void answered {grant:?}")
        });
    }
    c.failures.only_failures(
        label,
        &results,
        Code::FailedPrecondition,
        &["GRANT_NOT_ACTIVE"],
    );
    c.failures.only_failures(
        label,
        &debit_results,
        Code::FailedPrecondition,
        &["INSUFFICIENT_CREDITS"],
    );

    let txns = c.transactions(0, &account.id).await;
    let voids = of_kind(&txns, TransactionKind::Void);
    let voided: BTreeSet<&str> = voids.iter().map(|t| t.grant_id.as_str()).collect();
    c.check(voids.len() == 10 && voided.len() == 10, || {
        format!(
            "{label}: ledger has {} VOID entries for {} distinct grants, expected 10 / 10",
            voids.len(),
            voided.len()
        )
    });
    // Per grant: voided + burnt = granted.
    let mut taken: BTreeMap<String, Decimal> = BTreeMap::new();
    for t in &voids {
        *taken.entry(t.grant_id.clone()).or_default() -= dec_or_zero(&t.delta);
    }
    for t in of_kind(&txns, TransactionKind::Debit) {
        for burn in &t.burns {
            *taken.entry(burn.grant_id.clone()).or_default() += dec_or_zero(&burn.units);
        }
    }
    for grant in &grants {
        let took = taken.get(&grant.id).copied().unwrap_or_default();
        c.check(took == dec("50"), || {
            format!(
                "{label}: grant {} of 50 had {took} units voided or burnt in all, expected 50",
                grant.id
            )
        });
    }
    let small_burnt = small
        .first()
        .and_then(|g| taken.get(&g.id))
        .copied()
        .unwrap_or_default();
    let (posted, _) = c.posted_reserved(label, &account.id).await;
    let voided_units: Decimal = voids.iter().map(|t| -dec_or_zero(&t.delta)).sum();
    let expected = dec("507") - voided_units - Decimal::from(10 * debited as i64);
    c.check(
        posted == expected && posted == dec("7") - small_burnt && !posted.is_sign_negative(),
        || {
            format!(
                "{label}: posted {posted}; expected 507 − {voided_units} voided − 10 × {debited} \
                 debits = {expected}, and the 7-unit grant's remaining {}",
                dec("7") - small_burnt
            )
        },
    );
    let listed = c.grants_of(2, &wallet.id).await;
    let voided_listed = listed
        .iter()
        .filter(|g| g.state == GrantState::Voided as i32)
        .count();
    c.check(voided_listed == 10, || {
        format!("{label}: {voided_listed} grants listed VOIDED, expected 10: {listed:?}")
    });
}

/// 30 debits of 10 and 10 adjustments of −10 compete for 100 units through the three
/// replicas: at most 10 succeed and posted is 100 − 10 × successes, never negative.
async fn adjustments_and_debits(c: &Cluster, adjust_at: usize) {
    let label = format!("adjust+debit-{adjust_at}");
    let label = label.as_str();
    let (account, wallet) = c.funded(label, "100").await;
    #[derive(Debug)]
    enum Took {
        Debit,
        Adjust,
    }
    let mut calls: Vec<BoxFuture<'_, Result<Took, Status>>> = Vec::new();
    for k in 0..40 {
        if k % 4 == adjust_at {
            calls.push(
                c.adjust(k, &wallet.id, "-10")
                    .map(|r| r.map(|_| Took::Adjust))
                    .boxed(),
            );
        } else {
            calls.push(
                c.debit(k, &account.id)
                    .map(|r| r.map(|_| Took::Debit))
                    .boxed(),
            );
        }
    }
    let results = join_all(calls).await;
    let counts = outcomes(&results);
    let debits = results
        .iter()
        .filter(|r| matches!(r, Ok(Took::Debit)))
        .count();
    let adjusts = results
        .iter()
        .filter(|r| matches!(r, Ok(Took::Adjust)))
        .count();
    let successes = debits + adjusts;
    eprintln!(
        "{label}: 30 debits of 10 and 10 adjustments of -10 on 100 → {counts:?} \
         ({debits} debits, {adjusts} adjustments), {}",
        wins(&results, |n| n)
    );
    c.check(successes * 10 <= 100, || {
        format!(
            "{label}: MONEY CREATED: {successes} × 10 units taken from a wallet of 100 \
             ({debits} debits, {adjusts} adjustments)"
        )
    });
    c.failures.only_failures(
        label,
        &results,
        Code::FailedPrecondition,
        &["INSUFFICIENT_CREDITS"],
    );
    let (posted, _) = c.posted_reserved(label, &account.id).await;
    let expected = dec("100") - Decimal::from(10 * successes as i64);
    c.check(posted == expected && !posted.is_sign_negative(), || {
        format!(
            "{label}: posted {posted}, expected 100 − 10 × {successes} = {expected} (never negative)"
        )
    });
    // Every refusal was made while fewer than 10 units were left: all 100 units are taken.
    c.check(successes == 10, || {
        format!(
            "{label}: only {successes} of 40 calls succeeded although 100 units allowed 10 \
             (a refusal on a stale balance?) {counts:?}"
        )
    });
    let txns = c.transactions(1, &account.id).await;
    let entries = of_kind(&txns, TransactionKind::Debit).len()
        + of_kind(&txns, TransactionKind::Adjust).len();
    c.check(entries == successes, || {
        format!("{label}: ledger has {entries} DEBIT/ADJUST entries, calls reported {successes}")
    });
}

/// A daily schedule of 5 units.
fn daily_schedule(wallet_id: &str, start: i64) -> proto::AllotmentSchedule {
    proto::AllotmentSchedule {
        wallet_id: wallet_id.into(),
        amount: "5".into(),
        period: SchedulePeriod::Daily as i32,
        start_time: Some(ts_secs(start)),
        rollover_policy: RolloverPolicy::None as i32,
        unit_price: "0.01".into(),
        currency: "USD".into(),
        ..Default::default()
    }
}

struct Scheduled {
    label: String,
    account_id: String,
    wallet_id: String,
    schedule: proto::AllotmentSchedule,
    start: i64,
    granted_at_creation: usize,
}

/// Creates (through R0) the schedules: one starting 10 days and a minute ago (periods 0..=10
/// caught up on creation), and three whose 11th period starts a few seconds after creation,
/// so the three replicas' background sweepers race to grant it.
async fn create_schedules(c: &Cluster) -> Vec<Scheduled> {
    let now = now_seconds();
    let starts = [
        ("schedule-caught-up", now - 10 * DAY_SECS - 60),
        ("schedule-swept-a", now - 10 * DAY_SECS + 4),
        ("schedule-swept-b", now - 10 * DAY_SECS + 5),
        ("schedule-swept-c", now - 10 * DAY_SECS + 6),
    ];
    let mut out = Vec::new();
    for (label, start) in starts {
        let (account, wallet) = c.funded(label, "").await;
        let request = proto::CreateAllotmentScheduleRequest {
            allotment_schedule: Some(daily_schedule(&wallet.id, start)),
            request_id: uuid(),
        };
        let schedule = call!(
            "CreateAllotmentSchedule",
            c.r(0).grants(),
            create_allotment_schedule,
            request
        )
        .unwrap_or_else(|s| panic!("{label}: create schedule: {s:?}"));
        let granted = c
            .grants_of(0, &wallet.id)
            .await
            .iter()
            .filter(|g| g.schedule_id == schedule.id)
            .count();
        eprintln!(
            "{label}: schedule {} starting {}s before now: {granted} grant(s) right after creation",
            schedule.id,
            now_seconds() - start
        );
        out.push(Scheduled {
            label: label.to_string(),
            account_id: account.id,
            wallet_id: wallet.id,
            schedule,
            start,
            granted_at_creation: granted,
        });
    }
    out
}

/// Each scheduled wallet holds exactly one grant per started period (11: periods 0..=10),
/// the earlier ten expired, as every replica sees it.
async fn check_schedules(c: &Cluster, scheduled: &[Scheduled], when: &str) {
    // Wait until the sweepers have granted period 10 everywhere (polling, bounded).
    let deadline = Instant::now() + SWEEP_WAIT;
    for s in scheduled {
        let period_10 = s.start + 10 * DAY_SECS;
        loop {
            let grants = c.grants_of(0, &s.wallet_id).await;
            let has_10 = grants.iter().any(|g| {
                g.schedule_id == s.schedule.id
                    && g.effective_time.as_ref().map(|t| t.seconds) == Some(period_10)
            });
            if has_10 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for s in scheduled {
        for i in 0..c.replicas.len() {
            let grants = c.grants_of(i, &s.wallet_id).await;
            let mine: Vec<&proto::Grant> = grants
                .iter()
                .filter(|g| g.schedule_id == s.schedule.id)
                .collect();
            let mut per_period: BTreeMap<i64, usize> = BTreeMap::new();
            for g in &mine {
                let at = g.effective_time.as_ref().map_or(-1, |t| t.seconds);
                let k = if (at - s.start) % DAY_SECS == 0 {
                    (at - s.start) / DAY_SECS
                } else {
                    -1
                };
                *per_period.entry(k).or_insert(0) += 1;
            }
            let expected: BTreeMap<i64, usize> = (0..=10).map(|k| (k, 1)).collect();
            c.check(per_period == expected && grants.len() == 11, || {
                format!(
                    "{} ({when}, R{i}): grants per period {per_period:?} ({} grants on the wallet), \
                     expected one for each of periods 0..=10",
                    s.label,
                    grants.len()
                )
            });
            let active = mine
                .iter()
                .filter(|g| g.state == GrantState::Active as i32)
                .count();
            let expired = mine
                .iter()
                .filter(|g| g.state == GrantState::Expired as i32)
                .count();
            c.check(active == 1 && expired == 10, || {
                format!("{} ({when}, R{i}): {active} active / {expired} expired grants, expected 1 / 10", s.label)
            });
        }
        let (posted, _) = c.posted_reserved(&s.label, &s.account_id).await;
        c.check(posted == dec("5"), || {
            format!(
                "{} ({when}): posted {posted}, expected 5 (this period's grant)",
                s.label
            )
        });
        let txns = c.transactions(2, &s.account_id).await;
        let grant_entries = of_kind(&txns, TransactionKind::Grant).len();
        let expire_entries = of_kind(&txns, TransactionKind::Expire).len();
        c.check(grant_entries == 11 && expire_entries == 10, || {
            format!(
                "{} ({when}): {grant_entries} GRANT / {expire_entries} EXPIRE entries, expected 11 / 10",
                s.label
            )
        });
        eprintln!(
            "{} ({when}): {} grant(s) at creation, {grant_entries} GRANT and {expire_entries} EXPIRE entries",
            s.label, s.granted_at_creation
        );
    }
}

/// Rounds of: an ACTIVE account (its wallet used through every replica first) is closed,
/// activated and suspended at once through the three replicas; the close always sticks, and
/// afterwards no replica lets the account spend.
async fn account_states(c: &Cluster) {
    for round in 0..8 {
        let label = format!("state-{round}");
        let (account, _) = c.funded(&label, "100").await;
        // Every replica has the account's wallet (and state) in its caches.
        for i in 0..3 {
            c.debit(i, &account.id)
                .await
                .unwrap_or_else(|s| panic!("{label}: warm-up debit through R{i}: {s:?}"));
        }
        let (close_at, activate_at, suspend_at) = (round + 1, round + 2, round);
        let (closed, activated, suspended) = tokio::join!(
            c.set_state(close_at, &account.id, AccountState::Closed),
            c.set_state(activate_at, &account.id, AccountState::Active),
            c.set_state(suspend_at, &account.id, AccountState::Suspended),
        );
        eprintln!(
            "{label}: CLOSED via R{} {}, ACTIVE via R{} {}, SUSPENDED via R{} {}",
            close_at % 3,
            outcome_name(&closed),
            activate_at % 3,
            outcome_name(&activated),
            suspend_at % 3,
            outcome_name(&suspended)
        );
        c.check(closed.is_ok(), || {
            format!("{label}: closing failed: {closed:?}")
        });
        let others = [activated, suspended];
        c.failures.only_failures(
            &label,
            &others,
            Code::FailedPrecondition,
            &["ACCOUNT_CLOSED"],
        );
        for i in 0..3 {
            let state = c.account(i, &account.id).await.state;
            c.check(
                closed.is_err() || state == AccountState::Closed as i32,
                || {
                    format!(
                        "{label}: CLOSED REOPENED: the close succeeded but R{i} reads state {:?}",
                        AccountState::try_from(state)
                    )
                },
            );
        }
        for i in 0..3 {
            let result = c.debit(i, &account.id).await;
            match &result {
                Err(status) => c.check(
                    status.code() == Code::FailedPrecondition
                        && reason(status) == "ACCOUNT_NOT_ACTIVE",
                    || format!("{label}: debit of the closed account through R{i}: {status:?}"),
                ),
                Ok(t) => c.check(false, || {
                    format!("{label}: debit of the CLOSED account through R{i} succeeded: {t:?}")
                }),
            }
        }
        let (posted, _) = c.posted_reserved(&label, &account.id).await;
        c.check(posted == dec("70"), || {
            format!("{label}: posted {posted}, expected 70 (100 − three warm-up debits)")
        });
    }
}

// ---- the same work through three replicas and through one ------------------------------------

/// Wallets of the mixed workload, in each of its two runs.
const WORKLOAD_WALLETS: usize = 12;

/// The first card's `llm` rate: 0.5 flat + 2 per 1000 input_tokens + 6 per 1000
/// output_tokens + 1 per 3 images, at most 90 units.
fn llm_rate() -> proto::Rate {
    rate(
        "llm",
        "0.5",
        &[
            ("input_tokens", "1000", "2"),
            ("output_tokens", "1000", "6"),
            ("images", "3", "1"),
        ],
        "90",
    )
}

/// What `llm_rate` charges, worked out here by the pricing rule: flat + Σ quantity / per ×
/// units, rounded up to 6 decimal places, capped at max_units.
fn llm_price((input, output, images): (u32, u32, u32)) -> Decimal {
    let exact = dec("0.5")
        + Decimal::from(input) / dec("1000") * dec("2")
        + Decimal::from(output) / dec("1000") * dec("6")
        + Decimal::from(images) / dec("3");
    exact
        .round_dp_with_strategy(6, RoundingStrategy::AwayFromZero)
        .min(dec("90"))
}

/// The quantities of an `llm` request (those that are not 0).
fn llm((input, output, images): (u32, u32, u32)) -> BTreeMap<String, String> {
    [
        ("input_tokens", input),
        ("output_tokens", output),
        ("images", images),
    ]
    .into_iter()
    .filter(|(_, q)| *q > 0)
    .map(|(name, q)| (name.to_string(), q.to_string()))
    .collect()
}

/// One call of a wallet's script; a `usize` names the earlier step whose result it uses.
#[derive(Debug, Clone)]
enum Call {
    /// A debit of the request type with these quantities.
    Debit(&'static str, BTreeMap<String, String>),
    /// An `llm` hold priced by the card from estimated quantities.
    ReserveEstimate(BTreeMap<String, String>),
    /// A hold of exactly these units.
    ReserveUnits(&'static str),
    /// Capture of step n's hold at the actual quantities.
    CaptureQuantities(usize, BTreeMap<String, String>),
    /// Capture of step n's hold at these units.
    CaptureUnits(usize, &'static str),
    /// Release of step n's hold.
    Release(usize),
    /// Refund of step n's debit or capture: these units, or (empty) all not yet refunded.
    Refund(usize, &'static str),
}

impl Call {
    /// The earlier step this call needs.
    fn needs(&self) -> Option<usize> {
        match self {
            Call::CaptureQuantities(n, _)
            | Call::CaptureUnits(n, _)
            | Call::Release(n)
            | Call::Refund(n, _) => Some(*n),
            _ => None,
        }
    }

    /// The kind of ledger entry the call writes.
    fn kind(&self) -> TransactionKind {
        match self {
            Call::Debit(..) => TransactionKind::Debit,
            Call::ReserveEstimate(_) | Call::ReserveUnits(_) => TransactionKind::Reserve,
            Call::CaptureQuantities(..) | Call::CaptureUnits(..) => TransactionKind::Capture,
            Call::Release(_) => TransactionKind::Release,
            Call::Refund(..) => TransactionKind::Refund,
        }
    }
}

/// A call and the units it must move: priced, held, captured, released or refunded.
struct Step {
    call: Call,
    units: Decimal,
}

/// Wallet `w`'s script: debits (`llm` priced by quantities that vary with `w`, one capped
/// at 90, and flat `req`), a priced hold captured below it at actual quantities, a hold
/// released, a hold captured in units, and full and partial refunds of debits and captures.
/// Within a wallet the steps run in order; the funding (100 + 900) refuses none of them.
fn script(w: usize) -> Vec<Step> {
    let w = u32::try_from(w).expect("few wallets");
    let d0 = (1000 + 250 * w, 500, 0);
    let d2 = (300, 1000 + 100 * w, w % 3 + 1);
    let estimate = (4000, 2000, 0);
    let actual = (2000 + 100 * w, 1500, 0);
    let big = (50_000, 0, 0);
    let step = |call, units| Step { call, units };
    vec![
        /* 0 */ step(Call::Debit("llm", llm(d0)), llm_price(d0)),
        /* 1 */ step(Call::Debit("req", BTreeMap::new()), dec("10")),
        /* 2 */ step(Call::ReserveEstimate(llm(estimate)), dec("20.5")),
        /* 3 */ step(Call::Debit("llm", llm(d2)), llm_price(d2)),
        /* 4 */ step(Call::CaptureQuantities(2, llm(actual)), llm_price(actual)),
        /* 5 */ step(Call::Refund(0, ""), llm_price(d0)),
        /* 6 */ step(Call::ReserveUnits("25"), dec("25")),
        /* 7 */ step(Call::Debit("llm", llm(big)), dec("90")),
        /* 8 */ step(Call::Release(6), dec("25")),
        /* 9 */ step(Call::ReserveUnits("40"), dec("40")),
        /* 10 */ step(Call::Refund(3, "1.5"), dec("1.5")),
        /* 11 */ step(Call::CaptureUnits(9, "12.5"), dec("12.5")),
        /* 12 */ step(Call::Refund(7, "30"), dec("30")),
        /* 13 */ step(Call::Debit("req", BTreeMap::new()), dec("10")),
        /* 14 */ step(Call::Refund(7, ""), dec("60")),
        /* 15 */ step(Call::Refund(4, "2.25"), dec("2.25")),
        /* 16 */ step(Call::Refund(11, ""), dec("12.5")),
        /* 17 */ step(Call::Refund(1, ""), dec("10")),
    ]
}

/// Runs a wallet's script in order, step n through replica `via(n)`; checks what each call
/// answers against the step. Returns the id each step made (transaction or hold; empty
/// where the call failed).
async fn run_script(
    c: &Cluster,
    label: &str,
    account_id: &str,
    steps: &[Step],
    card_version: i64,
    via: impl Fn(usize) -> usize,
) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        let i = via(n) % 3;
        let what = format!("{label} step {n} {:?} through R{i}", step.call);
        let needed = step
            .call
            .needs()
            .map(|k| ids[k].clone())
            .unwrap_or_default();
        let debited = |t: proto::Transaction| {
            c.check(t.rate_card_version == card_version, || {
                format!(
                    "{what}: priced by card {}, expected {card_version}",
                    t.rate_card_version
                )
            });
            (t.id, dec_or_zero(&t.units))
        };
        let held = |r: proto::Reservation, state: ReservationState| {
            c.check(r.state == state as i32, || {
                format!(
                    "{what}: hold {} is {:?}, expected {state:?}",
                    r.id,
                    ReservationState::try_from(r.state)
                )
            });
            (r.id, dec_or_zero(&r.units))
        };
        let result = match &step.call {
            Call::Debit(request_type, quantities) => {
                let mut request = debit_request(account_id, request_type, &uuid());
                request.quantities = quantities.clone();
                c.debit_with(i, request).await.map(debited)
            }
            Call::ReserveEstimate(quantities) => {
                let request = proto::ReserveRequest {
                    account_id: account_id.into(),
                    request_type: "llm".into(),
                    quantities: quantities.clone(),
                    request_id: uuid(),
                    ..Default::default()
                };
                c.reserve_with(i, request)
                    .await
                    .map(|r| held(r, ReservationState::Open))
            }
            Call::ReserveUnits(units) => c
                .reserve(i, account_id, units)
                .await
                .map(|r| held(r, ReservationState::Open)),
            Call::CaptureQuantities(_, quantities) => {
                let request = proto::CaptureReservationRequest {
                    reservation_id: needed.clone(),
                    quantities: quantities.clone(),
                    request_id: uuid(),
                    ..Default::default()
                };
                c.capture_with(i, request).await.map(debited)
            }
            Call::CaptureUnits(_, units) => c
                .capture(i, &needed, units)
                .await
                .map(|t| (t.id, dec_or_zero(&t.units))),
            Call::Release(_) => c
                .release(i, &needed)
                .await
                .map(|r| held(r, ReservationState::Released)),
            Call::Refund(_, units) => c.refund(i, &needed, units).await.map(|t| {
                c.check(t.refunded_transaction_id == needed, || {
                    format!(
                        "{what}: the refund names {}, expected {needed}",
                        t.refunded_transaction_id
                    )
                });
                (t.id, dec_or_zero(&t.units))
            }),
        };
        match result {
            Ok((id, units)) => {
                c.check(units == step.units, || {
                    format!("{what}: moved {units} units, expected {}", step.units)
                });
                ids.push(id);
            }
            Err(status) => {
                c.check(false, || format!("{what}: {status:?}"));
                ids.push(String::new());
            }
        }
    }
    ids
}

/// A ledger entry as the comparison sees it: kind, units, signed delta, money per currency.
type Entry = (String, Decimal, Decimal, BTreeMap<String, Decimal>);

/// What a wallet ended with, as the comparison of the two runs sees it.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// Posted, available, reserved (the same through every replica).
    balances: (Decimal, Decimal, Decimal),
    /// Every entry, sorted (the multiset).
    entries: Vec<Entry>,
    /// (kind, units, balance_after) of every entry, oldest first.
    sequence: Vec<(String, Decimal, Decimal)>,
    /// Σ units of DEBIT and CAPTURE entries.
    charged: Decimal,
    /// Σ units of REFUND entries.
    refunded: Decimal,
    /// Entries per kind.
    kinds: BTreeMap<String, usize>,
}

async fn outcome(c: &Cluster, label: &str, account_id: &str) -> Outcome {
    let (posted, available, reserved) = c.balances(label, account_id).await;
    let mut txns = c.transactions(0, account_id).await;
    txns.reverse();
    let name = |t: &proto::Transaction| format!("{:?}", kind(t));
    let mut entries: Vec<Entry> = txns
        .iter()
        .map(|t| {
            (
                name(t),
                dec_or_zero(&t.units).normalize(),
                dec_or_zero(&t.delta).normalize(),
                money_map(&t.money)
                    .into_iter()
                    .map(|(currency, amount)| (currency, amount.normalize()))
                    .collect(),
            )
        })
        .collect();
    entries.sort();
    let sum = |kinds: &[TransactionKind]| -> Decimal {
        txns.iter()
            .filter(|t| kinds.contains(&kind(t)))
            .map(|t| dec_or_zero(&t.units))
            .sum::<Decimal>()
            .normalize()
    };
    let mut kinds = BTreeMap::new();
    for t in &txns {
        *kinds.entry(name(t)).or_insert(0) += 1;
    }
    Outcome {
        balances: (
            posted.normalize(),
            available.normalize(),
            reserved.normalize(),
        ),
        entries,
        sequence: txns
            .iter()
            .map(|t| {
                (
                    name(t),
                    dec_or_zero(&t.units).normalize(),
                    dec_or_zero(&t.balance_after).normalize(),
                )
            })
            .collect(),
        charged: sum(&[TransactionKind::Debit, TransactionKind::Capture]),
        refunded: sum(&[TransactionKind::Refund]),
        kinds,
    }
}

/// The same scripts twice on fresh wallets funded alike (100 at 0.01 USD, then 900 at
/// 0.02): (a) all wallets at once, each wallet's call n through R(w + n) — round-robin, so a
/// capture or refund never goes through the replica that made its hold or debit; (b) through
/// R0 alone, one wallet after another. Per wallet, both runs end with the same balances, the
/// same entries (as a multiset, and in order with their balance_after), the same charges
/// and money; and with the figures the script adds up to.
async fn same_work_through_three_and_one(c: &Cluster, card: &proto::RateCard) {
    let scripts: Vec<Vec<Step>> = (0..WORKLOAD_WALLETS).map(script).collect();
    // The round-robin really sends every dependent call to another replica.
    for (n, step) in scripts[0].iter().enumerate() {
        if let Some(k) = step.call.needs() {
            c.check((n - k) % 3 != 0, || {
                format!("workload: step {n} would go through the same replica as step {k}")
            });
        }
    }
    let provision = |run: &'static str| {
        join_all((0..WORKLOAD_WALLETS).map(move |w| async move {
            let label = format!("workload-{run}-{w}");
            let (account, wallet) = c.funded(&label, "100").await;
            c.grant_at(&wallet.id, "900", "0.02").await;
            (label, account.id)
        }))
    };
    let three = provision("3R").await;
    let one = provision("R0").await;

    let started = Instant::now();
    join_all(
        three
            .iter()
            .zip(&scripts)
            .enumerate()
            .map(|(w, ((label, account_id), steps))| {
                run_script(c, label, account_id, steps, card.version, move |n| w + n)
            }),
    )
    .await;
    let spread = started.elapsed();
    let started = Instant::now();
    for ((label, account_id), steps) in one.iter().zip(&scripts) {
        run_script(c, label, account_id, steps, card.version, |_| 0).await;
    }
    let alone = started.elapsed();
    let calls = scripts.iter().map(Vec::len).sum::<usize>();
    eprintln!(
        "workload: {calls} calls on {WORKLOAD_WALLETS} wallets: {spread:?} round-robin over \
         R0/R1/R2 with all wallets at once, {alone:?} through R0 one wallet after another"
    );

    for (w, steps) in scripts.iter().enumerate() {
        let (label_3, account_3) = &three[w];
        let (label_1, account_1) = &one[w];
        let spread = outcome(c, label_3, account_3).await;
        let alone = outcome(c, label_1, account_1).await;
        c.check(spread.balances == alone.balances, || {
            format!(
                "workload {w}: (posted, available, reserved) {:?} through three replicas, \
                 {:?} through one",
                spread.balances, alone.balances
            )
        });
        c.check(spread.entries == alone.entries, || {
            format!(
                "workload {w}: entries (kind, units, delta, money) differ:\n  three: {:?}\n  \
                 one:   {:?}",
                spread.entries, alone.entries
            )
        });
        c.check(spread.sequence == alone.sequence, || {
            format!(
                "workload {w}: entries in order (kind, units, balance_after) differ:\n  \
                 three: {:?}\n  one:   {:?}",
                spread.sequence, alone.sequence
            )
        });
        c.check(
            spread.charged == alone.charged && spread.refunded == alone.refunded,
            || {
                format!(
                    "workload {w}: charged / refunded {} / {} through three replicas, {} / {} \
                     through one",
                    spread.charged, spread.refunded, alone.charged, alone.refunded
                )
            },
        );
        // The figures the script adds up to, so both runs cannot be equally wrong.
        let of = |kinds: &[TransactionKind]| -> Decimal {
            steps
                .iter()
                .filter(|s| kinds.contains(&s.call.kind()))
                .map(|s| s.units)
                .sum::<Decimal>()
                .normalize()
        };
        let charged = of(&[TransactionKind::Debit, TransactionKind::Capture]);
        let refunded = of(&[TransactionKind::Refund]);
        let posted = (dec("1000") - charged + refunded).normalize();
        let mut kinds: BTreeMap<String, usize> =
            BTreeMap::from([(format!("{:?}", TransactionKind::Grant), 2)]);
        for s in steps {
            *kinds.entry(format!("{:?}", s.call.kind())).or_insert(0) += 1;
        }
        for (run, got) in [("three replicas", &spread), ("one replica", &alone)] {
            c.check(
                got.balances == (posted, posted, Decimal::ZERO)
                    && got.charged == charged
                    && got.refunded == refunded
                    && got.kinds == kinds,
                || {
                    format!(
                        "workload {w} through {run}: (posted, available, reserved) {:?}, \
                         charged {}, refunded {}, entries {:?}; the script makes ({posted}, \
                         {posted}, 0), charged {charged}, refunded {refunded}, entries {kinds:?}",
                        got.balances, got.charged, got.refunded, got.kinds
                    )
                },
            );
        }
        if w == 0 {
            // Worked out by hand: 1000 − 7.433334 (step 3) − 13.5 (step 4) − 6.25 (the rest).
            c.check(posted == dec("972.816666"), || {
                format!("workload 0: the script adds up to {posted}, expected 972.816666")
            });
            eprintln!(
                "workload 0: posted {posted}, charged {charged}, refunded {refunded}, \
                 money {:?}",
                alone
                    .entries
                    .iter()
                    .fold(BTreeMap::<String, Decimal>::new(), |mut sum, e| {
                        for (currency, amount) in &e.3 {
                            *sum.entry(currency.clone()).or_default() += amount;
                        }
                        sum
                    })
            );
        }
    }
}

// ---- hold expiry ----------------------------------------------------------------------------

/// TTL of the expiring holds. The API takes any TTL above 0 up to `--max-hold-ttl` (24 h by
/// default): 2 s leaves time to take every hold before the first one expires.
const SHORT_TTL: Duration = Duration::from_secs(2);
/// Wallets with expiring holds, three holds each (one through each replica).
const EXPIRING_WALLETS: usize = 10;

struct Expiring {
    label: String,
    account_id: String,
    /// The holds and the replica each went through.
    holds: Vec<(usize, proto::Reservation)>,
}

/// Takes (all at once) three holds of 10, 20 and 30 with a 2 s TTL on each of 10 wallets of
/// 100, hold k of wallet w through R(w + k).
async fn create_expiring_holds(c: &Cluster) -> Vec<Expiring> {
    let accounts = join_all((0..EXPIRING_WALLETS).map(|w| async move {
        let label = format!("expiring-{w}");
        let (account, _) = c.funded(&label, "100").await;
        (label, account.id)
    }))
    .await;
    let ttl = prost_types::Duration {
        seconds: i64::try_from(SHORT_TTL.as_secs()).expect("short"),
        nanos: 0,
    };
    let mut calls = Vec::new();
    for (w, (_, account_id)) in accounts.iter().enumerate() {
        for k in 0..3 {
            let request = proto::ReserveRequest {
                account_id: account_id.clone(),
                units: (10 * (k + 1)).to_string(),
                ttl: Some(ttl),
                request_id: uuid(),
                ..Default::default()
            };
            calls.push(async move { (w, (w + k) % 3, c.reserve_with(w + k, request).await) });
        }
    }
    let results = join_all(calls).await;
    let mut out: Vec<Expiring> = accounts
        .into_iter()
        .map(|(label, account_id)| Expiring {
            label,
            account_id,
            holds: Vec::new(),
        })
        .collect();
    for (w, i, result) in results {
        let label = &out[w].label;
        match result {
            Ok(hold) => {
                let ttl =
                    micros_of(hold.expire_time.as_ref()) - micros_of(hold.create_time.as_ref());
                c.check(
                    hold.state == ReservationState::Open as i32
                        && ttl == i64::try_from(SHORT_TTL.as_micros()).expect("short"),
                    || format!("{label}: hold through R{i} answered {hold:?} (TTL {ttl} µs)"),
                );
                out[w].holds.push((i, hold));
            }
            Err(s) => c.check(false, || format!("{label}: hold through R{i}: {s:?}")),
        }
    }
    eprintln!(
        "expiring holds: {} holds with a {SHORT_TTL:?} TTL taken through R0/R1/R2",
        out.iter().map(|e| e.holds.len()).sum::<usize>()
    );
    out
}

/// Once every hold has expired and the three sweepers have each had rounds since: each hold
/// has exactly one expiry entry (a RELEASE by `system` at the hold's expire_time; a hold
/// that expires writes RELEASE, and the hold's state becomes EXPIRED), its wallet is back
/// to 100 available, and a release of the expired hold is refused.
async fn check_expired_holds(c: &Cluster, expiring: &[Expiring]) {
    let last_expiry = expiring
        .iter()
        .flat_map(|e| &e.holds)
        .map(|(_, h)| micros_of(h.expire_time.as_ref()))
        .max()
        .unwrap_or_default();
    // Three sweep intervals past the last expiry: every sweeper has had rounds after it.
    let settled = last_expiry + 3 * SECOND;
    let wait = Duration::from_micros(
        (settled - chrono::Utc::now().timestamp_micros())
            .max(0)
            .unsigned_abs(),
    );
    tokio::time::sleep(wait).await;
    // The expiries are written (polling, bounded): an expired hold's release is refused
    // without writing anything only once the expiry is recorded.
    let deadline = Instant::now() + SWEEP_WAIT;
    for (w, e) in expiring.iter().enumerate() {
        loop {
            let txns = c.transactions(w, &e.account_id).await;
            if of_kind(&txns, TransactionKind::Release).len() >= e.holds.len()
                || Instant::now() > deadline
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut refusals = Vec::new();
    for e in expiring {
        for (i, hold) in &e.holds {
            refusals.push(c.release(i + 1, &hold.id).await);
        }
    }
    c.check(refusals.iter().all(Result::is_err), || {
        format!(
            "expiring holds: releases of expired holds → {:?}, expected all refused",
            outcomes(&refusals)
        )
    });
    c.failures.only_failures(
        "releases of expired holds",
        &refusals,
        Code::FailedPrecondition,
        &["RESERVATION_NOT_OPEN"],
    );
    let mut expiries = 0;
    for (w, e) in expiring.iter().enumerate() {
        let label = &e.label;
        let txns = c.transactions(w + 1, &e.account_id).await;
        let releases = of_kind(&txns, TransactionKind::Release);
        expiries += releases.len();
        for (i, hold) in &e.holds {
            let mine: Vec<&proto::Transaction> = releases
                .iter()
                .filter(|t| t.reservation_id == hold.id)
                .collect();
            let at = micros_of(hold.expire_time.as_ref());
            c.check(
                mine.len() == 1
                    && mine.iter().all(|t| {
                        t.actor == "system"
                            && dec_or_zero(&t.units) == dec_or_zero(&hold.units)
                            && dec_or_zero(&t.delta).is_zero()
                            && micros_of(t.create_time.as_ref()) == at
                    }),
                || {
                    format!(
                        "{label}: hold {} of {} (taken through R{i}, expiring at {at}) has \
                         {} RELEASE entries, expected one by `system` at its expire_time: {mine:?}",
                        hold.id,
                        hold.units,
                        mine.len()
                    )
                },
            );
        }
        let kinds: Vec<TransactionKind> = txns.iter().map(kind).collect();
        let n = |k: TransactionKind| kinds.iter().filter(|x| **x == k).count();
        c.check(
            kinds.len() == 1 + 2 * e.holds.len()
                && n(TransactionKind::Grant) == 1
                && n(TransactionKind::Reserve) == e.holds.len()
                && n(TransactionKind::Release) == e.holds.len(),
            || {
                format!(
                    "{label}: entries {kinds:?}, expected one GRANT and a RESERVE and a RELEASE \
                     per hold ({} holds)",
                    e.holds.len()
                )
            },
        );
        let balances = c.balances(label, &e.account_id).await;
        let hundred = dec("100");
        c.check(balances == (hundred, hundred, Decimal::ZERO), || {
            format!(
                "{label}: (posted, available, reserved) {balances:?} after every hold expired, \
                 expected (100, 100, 0)"
            )
        });
    }
    eprintln!(
        "expiring holds: {expiries} expiry entries for {} holds (waited {wait:?} for the \
         sweepers); releases afterwards → {:?}",
        expiring.iter().map(|e| e.holds.len()).sum::<usize>(),
        outcomes(&refusals)
    );
}

// ---- rate cards ------------------------------------------------------------------------------

/// Rate cards published while every replica has the card in force cached (each has just
/// priced a debit with it): first one draft published at once through the three replicas
/// (exactly one publish wins), then a draft through R0, R1 and R2 alone in turn. Right after
/// each publish answers, the next debit through every replica (all three at once, before
/// any other call) is priced by the new card, and every replica serves it as the card in
/// force.
async fn rate_card_publish(c: &Cluster, first: &proto::RateCard) {
    let (account, _) = c.funded("new-price", "1000").await;
    let mut expected = dec("1000");
    for i in 0..3 {
        match c.debit(i, &account.id).await {
            Ok(t) => c.check(
                dec_or_zero(&t.units) == dec("10") && t.rate_card_version == first.version,
                || {
                    format!(
                        "rate card: before any publish, a debit through R{i} charged {} by \
                         version {}, expected 10 by version {}",
                        t.units, t.rate_card_version, first.version
                    )
                },
            ),
            Err(s) => c.check(false, || format!("rate card: debit through R{i}: {s:?}")),
        }
        expected -= dec("10");
    }
    let rounds: [(&[usize], &str); 4] =
        [(&[0, 1, 2], "20"), (&[0], "21"), (&[1], "22"), (&[2], "23")];
    for (publishers, price) in rounds {
        let label = format!(
            "rate card {price} (published through {})",
            publishers
                .iter()
                .map(|i| format!("R{i}"))
                .collect::<Vec<_>>()
                .join("/")
        );
        let draft = c.draft_card(vec![rate("req", price, &[], "")]).await;
        let results = join_all(publishers.iter().map(|&i| c.publish(i, &draft))).await;
        // The next debit through every replica, at once, as soon as the publish answered.
        let debits = join_all((0..3).map(|i| c.debit(i, &account.id))).await;
        let counts = outcomes(&results);
        eprintln!(
            "{label}: version {} → {counts:?}, {}; next debits through R0/R1/R2 → {:?}",
            draft.version,
            wins(&results, |n| publishers[n]),
            debits
                .iter()
                .map(|d| match d {
                    Ok(t) => t.units.clone(),
                    Err(_) => outcome_name(d),
                })
                .collect::<Vec<_>>()
        );
        let ok = results.iter().filter(|r| r.is_ok()).count();
        c.check(ok == 1, || {
            format!(
                "{label}: {ok} of {} publishes succeeded, expected 1 ({counts:?})",
                results.len()
            )
        });
        c.failures.only_failures(
            &label,
            &results,
            Code::FailedPrecondition,
            &["RATE_CARD_NOT_DRAFT"],
        );
        for (i, debit) in debits.iter().enumerate() {
            match debit {
                Ok(t) => {
                    c.check(
                        dec_or_zero(&t.units) == dec(price) && t.rate_card_version == draft.version,
                        || {
                            format!(
                                "{label}: the next debit through R{i} charged {} by version {}, \
                                 expected {price} by version {}",
                                t.units, t.rate_card_version, draft.version
                            )
                        },
                    );
                    expected -= dec_or_zero(&t.units);
                }
                Err(s) => c.check(false, || format!("{label}: debit through R{i}: {s:?}")),
            }
        }
        for i in 0..3 {
            let request = proto::GetRateCardRequest {
                version: 0,
                time: None,
            };
            let card = call!("GetRateCard", c.r(i).rates(), get_rate_card, request)
                .expect("card in force");
            c.check(
                card.version == draft.version && card.state == RateCardState::Published as i32,
                || {
                    format!(
                        "{label}: R{i} has version {} ({:?}) in force, expected {} published",
                        card.version,
                        RateCardState::try_from(card.state),
                        draft.version
                    )
                },
            );
        }
    }
    let (posted, _) = c.posted_reserved("new-price", &account.id).await;
    c.check(posted == expected && expected == dec("712"), || {
        format!(
            "rate card: posted {posted}, expected 1000 − 3 × (10 + 20 + 21 + 22 + 23) = 712 \
             (the debits answered {expected})"
        )
    });
}

/// Every funded wallet: posted is the newest entry's balance_after and Σ delta, the same
/// through every replica; holds are all settled or open as `reserved` says.
async fn conservation(c: &Cluster) {
    let accounts = c.accounts.lock().unwrap().clone();
    for (label, account_id) in &accounts {
        let (posted, _) = c.posted_reserved(label, account_id).await;
        let txns = c.transactions(0, account_id).await;
        let sum: Decimal = txns.iter().map(|t| dec_or_zero(&t.delta)).sum();
        let last = txns.first().map(|t| dec_or_zero(&t.balance_after));
        c.check(
            sum == posted && last.unwrap_or(Decimal::ZERO) == posted,
            || {
                format!(
                    "conservation of {label} ({account_id}): posted {posted}, Σ delta {sum}, \
                     newest balance_after {last:?} over {} entries",
                    txns.len()
                )
            },
        );
        c.check(!posted.is_sign_negative() || posted.is_zero(), || {
            format!("conservation of {label}: posted {posted} is negative")
        });
    }
    eprintln!("conservation checked on {} wallets", accounts.len());
}

// ---- the test --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_racing_on_one_database_never_create_money() {
    let started = Instant::now();
    let mut c = Cluster::start().await;

    // The card every scenario debits with: `req` costs a flat 10 units; the mixed workload
    // also prices `llm` requests by their quantities.
    let card = c
        .draft_card(vec![rate("req", "10", &[], ""), llm_rate()])
        .await;
    c.publish(0, &card).await.expect("publish the first card");

    // First, so the sweepers race on the period that starts a few seconds from now while the
    // other scenarios run.
    let scheduled = create_schedules(&c).await;
    // Then holds with a short TTL: they expire, and the sweepers race on them, while the
    // next scenarios run.
    let expiring = create_expiring_holds(&c).await;

    refunds(&c, "").await;
    refunds(&c, "5").await;
    holds(&c).await;
    voids(&c, false).await;
    voids(&c, true).await;
    // The adjustments first, then last, in each group of four calls.
    adjustments_and_debits(&c, 0).await;
    adjustments_and_debits(&c, 3).await;
    check_schedules(&c, &scheduled, "after the sweep").await;
    same_work_through_three_and_one(&c, &card).await;
    check_expired_holds(&c, &expiring).await;
    account_states(&c).await;
    rate_card_publish(&c, &card).await;
    // Whatever the sweepers did meanwhile: still one grant per period.
    check_schedules(&c, &scheduled, "at the end").await;
    conservation(&c).await;

    // Every replica is still running.
    for r in c.replicas.iter_mut() {
        let status = r.exit_status();
        let name = r.name.clone();
        c.failures.check(status.is_none(), || {
            format!("{name} exited during the test: {status:?}")
        });
    }
    let warnings: usize = c
        .replicas
        .iter()
        .map(|r| r.log_text().lines().filter(|l| l.contains("WARN")).count())
        .sum();
    let errors: Vec<String> = c
        .replicas
        .iter()
        .flat_map(|r| {
            r.log_text()
                .lines()
                .filter(|l| l.contains("ERROR"))
                .map(|l| format!("{}: {l}", r.name))
                .collect::<Vec<_>>()
        })
        .collect();
    eprintln!(
        "{} retried call(s); {warnings} warning(s) and {} error(s) in the replicas' logs",
        RETRIES.load(Ordering::Relaxed),
        errors.len()
    );
    for line in errors.iter().take(20) {
        eprintln!("  {line}");
    }
    // Stop the replicas, then verify the whole ledger offline.
    c.replicas.clear();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_allot"))
        .arg("verify")
        .env("DATABASE_URL", &c.db.url)
        .output()
        .await
        .expect("run allot verify");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("allot verify: {}\n{stdout}{stderr}", output.status);
    c.failures.check(output.status.success(), || {
        format!("allot verify exited {}:\n{stdout}\n{stderr}", output.status)
    });

    eprintln!("replicas test took {:?}", started.elapsed());
    c.db.drop_database().await;
    c.failures.finish();
}

/// Three replicas started at the same moment on an empty database (a fresh deployment): each
/// migrates on start, and all three must come up and serve the one schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_started_together_on_an_empty_database_all_serve() {
    let db = TestDatabase::create().await;
    let logs = tempfile::tempdir().expect("log dir");
    let flags = ["--sweep-interval", "1s"];
    let (r0, r1, r2) = tokio::join!(
        ServerProcess::try_start("R0", &db.url, &flags, logs.path()),
        ServerProcess::try_start("R1", &db.url, &flags, logs.path()),
        ServerProcess::try_start("R2", &db.url, &flags, logs.path()),
    );
    let mut started = Vec::new();
    let mut refused = Vec::new();
    for result in [r0, r1, r2] {
        match result {
            Ok(process) => started.push(process),
            Err(why) => refused.push(why),
        }
    }
    eprintln!(
        "cold start of 3 replicas on an empty {} database: {} serving, {} failed",
        if db.is_postgres() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        started.len(),
        refused.len()
    );
    // Whichever came up serves a complete schema.
    for replica in &started {
        let account = replica
            .accounts()
            .create_account(new_account(&format!("cold-{}", replica.name), ""))
            .await
            .unwrap_or_else(|s| panic!("{}: create account: {s:?}", replica.name))
            .into_inner();
        replica
            .accounts()
            .create_wallet(wallet_request(&account.id))
            .await
            .unwrap_or_else(|s| panic!("{}: create wallet: {s:?}", replica.name));
    }
    drop(started);
    db.drop_database().await;
    assert!(
        refused.is_empty(),
        "{} of 3 replicas started together on an empty database did not come up:\n{}",
        refused.len(),
        refused.join("\n")
    );
}
