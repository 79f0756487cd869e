//! `allot bench --history N`: what the reports cost on a ledger of N entries.
//!
//! Builds a history through the real API of an in-process server whose clock starts
//! `--history-days` back and moves forward a day at a time: `--wallets` accounts (one in ten
//! a parent, the nine after it its departments), a wallet and a contract grant each, a rate
//! card of three request types (one priced by tokens, with reference list prices) remapped to
//! another route halfway, N debits sent with `BatchDebit` spread evenly over the days (random
//! wallets, types, token counts and `user` / `feature` metadata), and a refund for one debit
//! in 500. Then it calls every report `--report-calls` times as a procurement or operator
//! user would (a department's wallet, a parent rolled up over its departments, everything
//! for the operator) and prints each report's latency.

use std::{collections::BTreeMap, time::Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt, stream};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use serde_json::json;
use tonic::Status;

use super::{
    BenchArgs,
    allot::{self, Clients, InProcess, admitted, fund, publish_card, rpc_error},
    database::BenchDatabase,
    load::Latency,
    progress,
};
use crate::{clock::Clock, error::code_name, proto};

const DAY_SECONDS: i64 = 86_400;
const DAY_MICROS: i64 = DAY_SECONDS * 1_000_000;
/// Debits per `BatchDebit` call while building the history.
const PER_CALL: usize = 500;
/// `BatchDebit` calls in flight while building the history.
const IN_FLIGHT: usize = 8;
/// One debit in this many is refunded.
const REFUND_EVERY: u64 = 500;
/// Accounts per parent (the parent and its departments).
const FAMILY: usize = 10;
const USERS: u32 = 40;
const FEATURES: [&str; 4] = ["assistant", "search", "studio", "api"];

fn rpc(what: &'static str) -> impl Fn(Status) -> anyhow::Error {
    move |status| rpc_error(what, status)
}

fn timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

fn rates(chat_route: &str, chat_cost: &str) -> Vec<proto::Rate> {
    let dimension = |name: &str, units: &str| proto::Dimension {
        name: name.into(),
        per: "1000".into(),
        units: units.into(),
    };
    let list = |dimension: &str, price: &str| proto::ListPrice {
        dimension: dimension.into(),
        per: "1000".into(),
        price: price.into(),
        currency: "USD".into(),
    };
    vec![
        proto::Rate {
            request_type: "chat.message".into(),
            flat_units: "1".into(),
            dimensions: vec![
                dimension("input_tokens", "0.05"),
                dimension("output_tokens", "0.2"),
            ],
            max_units: "50".into(),
            route: chat_route.into(),
            provider_cost: chat_cost.into(),
            list_prices: vec![
                list("input_tokens", "0.0025"),
                list("output_tokens", "0.01"),
            ],
        },
        proto::Rate {
            request_type: "search.web".into(),
            flat_units: "2".into(),
            route: "bing/v7".into(),
            provider_cost: "0.005".into(),
            ..Default::default()
        },
        proto::Rate {
            request_type: "image.generate".into(),
            flat_units: "4".into(),
            route: "sdxl/1.0".into(),
            provider_cost: "0.02".into(),
            ..Default::default()
        },
    ]
}

/// The seeded accounts: `ids[i]`; parents are every `FAMILY`-th.
struct Accounts {
    ids: Vec<String>,
}

impl Accounts {
    fn parents(&self) -> Vec<&String> {
        self.ids.iter().step_by(FAMILY).collect()
    }

    fn departments(&self) -> Vec<&String> {
        (0..self.ids.len())
            .filter(|i| i % FAMILY != 0)
            .map(|i| &self.ids[i])
            .collect()
    }
}

/// Accounts (parents first in each family), a wallet and a grant each, `concurrency` at a
/// time. The grant lasts past the end of the history and holds `grant_units`.
async fn seed(
    clients: &Clients,
    run_id: &str,
    wallets: usize,
    grant_units: i64,
    term_end: i64,
) -> anyhow::Result<Accounts> {
    let mut ids: Vec<String> = Vec::with_capacity(wallets);
    for family in (0..wallets).step_by(FAMILY) {
        let members = (family..(family + FAMILY).min(wallets)).collect::<Vec<_>>();
        // The parent first: its departments name it.
        let parent = create_account(clients, run_id, members[0], "").await?;
        let rest: Vec<String> = stream::iter(members[1..].iter().copied())
            .map(|i| {
                let parent = parent.clone();
                async move { create_account(clients, run_id, i, &parent).await }
            })
            .buffered(FAMILY)
            .try_collect()
            .await?;
        ids.push(parent);
        ids.extend(rest);
    }
    stream::iter(ids.iter().enumerate())
        .map(|(i, account)| {
            let grant = proto::Grant {
                kind: proto::GrantKind::Contract as i32,
                amount: grant_units.to_string(),
                unit_price: "0.01".into(),
                currency: "USD".into(),
                expire_time: Some(timestamp(term_end)),
                contract_ref: format!("history-{i}"),
                ..Default::default()
            };
            fund(clients, i, account, grant)
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(Accounts { ids })
}

async fn create_account(
    clients: &Clients,
    run_id: &str,
    i: usize,
    parent: &str,
) -> anyhow::Result<String> {
    let account = allot::create_account(
        clients,
        i,
        proto::Account {
            external_id: format!("history-{run_id}-{i}"),
            display_name: format!("history {i}"),
            parent_id: parent.into(),
            ..Default::default()
        },
    )
    .await?;
    Ok(account.id)
}

/// One BatchDebit whose items allot refused as OVERLOADED (nothing applied) are sent again,
/// with their request_ids, after the delay the refusal names, until each has its own outcome.
async fn batch_debit(
    clients: &Clients,
    lane: usize,
    debits: Vec<proto::DebitRequest>,
) -> anyhow::Result<Vec<proto::DebitResult>> {
    let mut results: Vec<Option<proto::DebitResult>> = vec![None; debits.len()];
    let mut pending: Vec<usize> = (0..debits.len()).collect();
    for _ in 0..100 {
        let request = proto::BatchDebitRequest {
            debits: pending.iter().map(|&i| debits[i].clone()).collect(),
        };
        let answer = admitted("BatchDebit", || {
            let mut client = clients.ledger(lane);
            let request = request.clone();
            async move { client.batch_debit(request).await }
        })
        .await?;
        if answer.results.len() != pending.len() {
            bail!(
                "BatchDebit answered {} results for {} debits",
                answer.results.len(),
                pending.len()
            );
        }
        let mut refused = Vec::new();
        for (&i, result) in pending.iter().zip(answer.results) {
            match &result.result {
                Some(proto::debit_result::Result::Error(error))
                    if tonic::Code::from(error.code) == tonic::Code::ResourceExhausted =>
                {
                    refused.push(i);
                }
                _ => results[i] = Some(result),
            }
        }
        if refused.is_empty() {
            return Ok(results.into_iter().flatten().collect());
        }
        pending = refused;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    bail!(
        "BatchDebit: {} debits still refused as overloaded after 100 attempts",
        pending.len()
    )
}

/// A random debit: a type, its token counts, and metadata.
fn debit(rng: &mut SmallRng, account: &str, request_id: String) -> proto::DebitRequest {
    let roll = rng.random_range(0..10);
    let (request_type, quantities) = match roll {
        0..=6 => (
            "chat.message",
            [
                ("input_tokens", rng.random_range(100..4000u32)),
                ("output_tokens", rng.random_range(50..1500u32)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ),
        7 | 8 => ("search.web", Default::default()),
        _ => ("image.generate", Default::default()),
    };
    let metadata = [
        (
            "user".to_string(),
            format!("u{}", rng.random_range(0..USERS)),
        ),
        (
            "feature".to_string(),
            FEATURES[rng.random_range(0..FEATURES.len())].to_string(),
        ),
    ]
    .into_iter()
    .collect();
    proto::DebitRequest {
        account_id: account.into(),
        request_type: request_type.into(),
        quantities,
        metadata,
        request_id,
        ..Default::default()
    }
}

/// What building the history did.
struct Built {
    debits: u64,
    refused: BTreeMap<&'static str, u64>,
    refunds: u64,
    seconds: f64,
}

/// Sends `entries` debits spread over `days` days (the clock a day on after each), with
/// refunds of one debit in [`REFUND_EVERY`].
async fn build(
    clients: &Clients,
    clock: &Clock,
    accounts: &Accounts,
    entries: u64,
    days: u32,
    run_id: &str,
    remap_day: u32,
) -> anyhow::Result<Built> {
    let started = Instant::now();
    let mut built = Built {
        debits: 0,
        refused: BTreeMap::new(),
        refunds: 0,
        seconds: 0.0,
    };
    let mut rng = SmallRng::seed_from_u64(0x4157_0a11);
    let mut sent = 0u64;
    for day in 0..days {
        if day == remap_day {
            publish_card(
                clients,
                rates("anthropic/claude-sonnet", "0.0015"),
                "history: chat remapped to another model, same prices",
            )
            .await?;
        }
        let today = entries * u64::from(day + 1) / u64::from(days) - sent;
        sent += today;
        let calls: Vec<Vec<proto::DebitRequest>> = (0..today)
            .map(|n| {
                let account = &accounts.ids[rng.random_range(0..accounts.ids.len())];
                debit(&mut rng, account, format!("h-{run_id}-{day}-{n}"))
            })
            .collect::<Vec<_>>()
            .chunks(PER_CALL)
            .map(<[_]>::to_vec)
            .collect();
        let results: Vec<Vec<proto::DebitResult>> = stream::iter(calls.into_iter().enumerate())
            .map(|(lane, debits)| batch_debit(clients, lane, debits))
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await?;
        let mut to_refund = Vec::new();
        for result in results.into_iter().flatten() {
            match result.result {
                Some(proto::debit_result::Result::Response(response)) => {
                    built.debits += 1;
                    if built.debits.is_multiple_of(REFUND_EVERY)
                        && let Some(transaction) = response.transaction
                    {
                        to_refund.push(transaction.id);
                    }
                }
                Some(proto::debit_result::Result::Error(error)) => {
                    *built
                        .refused
                        .entry(code_name(tonic::Code::from(error.code)))
                        .or_default() += 1;
                }
                None => bail!("a BatchDebit result without an outcome"),
            }
        }
        built.refunds += stream::iter(to_refund.into_iter().enumerate())
            .map(|(lane, id)| async move {
                let request = proto::RefundRequest {
                    transaction_id: id.clone(),
                    reason: "history: refunded".into(),
                    request_id: format!("refund-{id}"),
                    ..Default::default()
                };
                admitted("Refund", || {
                    let mut client = clients.ledger(lane);
                    let request = request.clone();
                    async move { client.refund(request).await }
                })
                .await?;
                anyhow::Ok(1u64)
            })
            .buffer_unordered(IN_FLIGHT)
            .try_fold(0, |n, one| async move { Ok(n + one) })
            .await?;
        clock.advance(DAY_MICROS);
        let seconds = started.elapsed().as_secs_f64();
        progress(format!(
            "day {}/{days}: {} debits so far, {:.0}/s",
            day + 1,
            built.debits,
            built.debits as f64 / seconds
        ));
    }
    built.seconds = started.elapsed().as_secs_f64();
    Ok(built)
}

/// One report as a user asks for it.
#[derive(Debug, Clone, Copy)]
enum Probe {
    /// GetBudget of a department's wallet.
    BudgetWallet,
    /// GetBudget of a parent rolled up over its departments.
    BudgetRollup,
    /// GetUsageReport of a parent and departments, 30 days by day, split by sub-account.
    Usage,
    /// The same split by the `user` metadata key.
    UsageByUser,
    /// GetUsageReport of a parent and departments, the whole history by month.
    UsageMonths,
    /// GetPriceTransparency of a parent and departments, 30 days.
    Transparency,
    /// GetMarginReport of a parent and departments, 30 days by week.
    Margin,
    /// GetMarginReport of every account, 30 days by day (operator).
    MarginAll,
    /// SimulateRateCard (+10% on chat) of a parent and departments, 30 days.
    Simulate,
    /// ListAuditEvents, first page (operator).
    Audit,
    /// GetUsageReport of one department, 30 days by day, split by `user`.
    UsageByUserAccount,
    /// GetPriceTransparency of one department, 30 days.
    TransparencyAccount,
    /// SimulateRateCard of one department, 30 days.
    SimulateAccount,
}

const PROBES: [Probe; 13] = [
    Probe::BudgetWallet,
    Probe::BudgetRollup,
    Probe::Usage,
    Probe::UsageByUser,
    Probe::UsageMonths,
    Probe::Transparency,
    Probe::Margin,
    Probe::MarginAll,
    Probe::Simulate,
    Probe::Audit,
    Probe::UsageByUserAccount,
    Probe::TransparencyAccount,
    Probe::SimulateAccount,
];

impl Probe {
    fn name(self) -> &'static str {
        match self {
            Probe::BudgetWallet => "GetBudget (a wallet)",
            Probe::BudgetRollup => "GetBudget (parent + 9 departments)",
            Probe::Usage => "GetUsageReport (family, 30 d by day)",
            Probe::UsageByUser => "GetUsageReport (family, 30 d, by user)",
            Probe::UsageMonths => "GetUsageReport (family, history by month)",
            Probe::Transparency => "GetPriceTransparency (family, 30 d)",
            Probe::Margin => "GetMarginReport (family, 30 d by week)",
            Probe::MarginAll => "GetMarginReport (all accounts, 30 d by day)",
            Probe::Simulate => "SimulateRateCard (family, 30 d)",
            Probe::Audit => "ListAuditEvents (first page)",
            Probe::UsageByUserAccount => "GetUsageReport (a department, 30 d, by user)",
            Probe::TransparencyAccount => "GetPriceTransparency (a department, 30 d)",
            Probe::SimulateAccount => "SimulateRateCard (a department, 30 d)",
        }
    }

    /// Whether the probe asks for one department (else a parent and its departments).
    fn one_department(self) -> bool {
        matches!(
            self,
            Probe::BudgetWallet
                | Probe::UsageByUserAccount
                | Probe::TransparencyAccount
                | Probe::SimulateAccount
        )
    }

    /// Calls the report once for `account` (a department or a parent, as
    /// [`Probe::one_department`] says); returns the rows it answered.
    async fn call(
        self,
        clients: &Clients,
        account: &str,
        window: (i64, i64),
        history: (i64, i64),
        draft: &[proto::Rate],
    ) -> anyhow::Result<usize> {
        let mut reports = clients.reports(0);
        let (start, end) = (Some(timestamp(window.0)), Some(timestamp(window.1)));
        let family = account.to_string();
        let rollup = !self.one_department();
        Ok(match self {
            Probe::BudgetWallet | Probe::BudgetRollup => {
                reports
                    .get_budget(proto::GetBudgetRequest {
                        account_id: family,
                        include_sub_accounts: rollup,
                        ..Default::default()
                    })
                    .await
                    .map_err(rpc("GetBudget"))?
                    .into_inner()
                    .lines
                    .len()
                    + 1
            }
            Probe::Usage | Probe::UsageByUser | Probe::UsageMonths | Probe::UsageByUserAccount => {
                let months = matches!(self, Probe::UsageMonths);
                reports
                    .get_usage_report(proto::GetUsageReportRequest {
                        account_id: family,
                        start_time: if months {
                            Some(timestamp(history.0))
                        } else {
                            start
                        },
                        end_time: if months {
                            Some(timestamp(history.1))
                        } else {
                            end
                        },
                        granularity: if months {
                            proto::Granularity::Month
                        } else {
                            proto::Granularity::Day
                        } as i32,
                        group_by_metadata_key: if matches!(
                            self,
                            Probe::UsageByUser | Probe::UsageByUserAccount
                        ) {
                            "user".into()
                        } else {
                            String::new()
                        },
                        include_sub_accounts: rollup,
                        ..Default::default()
                    })
                    .await
                    .map_err(rpc("GetUsageReport"))?
                    .into_inner()
                    .rows
                    .len()
            }
            Probe::Transparency | Probe::TransparencyAccount => reports
                .get_price_transparency(proto::GetPriceTransparencyRequest {
                    account_id: family,
                    include_sub_accounts: rollup,
                    start_time: start,
                    end_time: end,
                    ..Default::default()
                })
                .await
                .map_err(rpc("GetPriceTransparency"))?
                .into_inner()
                .rows
                .len(),
            Probe::Margin | Probe::MarginAll => {
                let all = matches!(self, Probe::MarginAll);
                reports
                    .get_margin_report(proto::GetMarginReportRequest {
                        account_id: if all { String::new() } else { family },
                        include_sub_accounts: !all,
                        start_time: start,
                        end_time: end,
                        granularity: if all {
                            proto::Granularity::Day
                        } else {
                            proto::Granularity::Week
                        } as i32,
                        ..Default::default()
                    })
                    .await
                    .map_err(rpc("GetMarginReport"))?
                    .into_inner()
                    .rows
                    .len()
            }
            Probe::Simulate | Probe::SimulateAccount => clients
                .rates()
                .simulate_rate_card(proto::SimulateRateCardRequest {
                    rate_card: Some(proto::RateCard {
                        rates: draft.to_vec(),
                        ..Default::default()
                    }),
                    account_id: family,
                    include_sub_accounts: rollup,
                    start_time: start,
                    end_time: end,
                    ..Default::default()
                })
                .await
                .map_err(rpc("SimulateRateCard"))?
                .into_inner()
                .rows
                .len(),
            Probe::Audit => reports
                .list_audit_events(proto::ListAuditEventsRequest {
                    page_size: 100,
                    ..Default::default()
                })
                .await
                .map_err(rpc("ListAuditEvents"))?
                .into_inner()
                .audit_events
                .len(),
        })
    }
}

struct Measured {
    probe: Probe,
    latency: Latency,
    calls: usize,
    rows: usize,
}

/// The history accounts already in the database (a SQLite file kept from an earlier run),
/// parents each followed by their departments; `None` if there are none.
async fn existing(clients: &Clients) -> anyhow::Result<Option<Accounts>> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = clients
            .accounts(0)
            .list_accounts(proto::ListAccountsRequest {
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .map_err(rpc("ListAccounts"))?
            .into_inner();
        all.extend(
            page.accounts
                .into_iter()
                .filter(|a| a.external_id.starts_with("history-")),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let mut ids = Vec::new();
    for parent in all.iter().filter(|a| a.parent_id.is_empty()) {
        ids.push(parent.id.clone());
        ids.extend(
            all.iter()
                .filter(|a| a.parent_id == parent.id)
                .map(|a| a.id.clone()),
        );
    }
    Ok((!ids.is_empty()).then_some(Accounts { ids }))
}

/// Moves the clock `days` back, seeds the accounts and builds the history; the clock ends
/// where it started.
async fn build_history(
    clients: &Clients,
    clock: &Clock,
    entries: u64,
    days: u32,
    wallets: usize,
) -> anyhow::Result<(Accounts, Built)> {
    clock.advance(-i64::from(days) * DAY_MICROS);
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    publish_card(
        clients,
        rates("openai/gpt-4o", "0.002"),
        "history: the card at the start",
    )
    .await?;
    let term_end = chrono::Utc::now().timestamp() + 30 * DAY_SECONDS;
    // About three times what a wallet's share of the debits takes (1.7 units a debit).
    let grant_units = (entries / wallets as u64 * 5).max(1000) as i64;
    progress(format!(
        "seeding {wallets} accounts ({} parents with departments), wallets and grants",
        wallets.div_ceil(FAMILY)
    ));
    let accounts = seed(clients, &run_id, wallets, grant_units, term_end).await?;
    progress(format!(
        "building {entries} debits over {days} days ({:.0} a day)",
        entries as f64 / f64::from(days)
    ));
    let built = build(clients, clock, &accounts, entries, days, &run_id, days / 2).await?;
    Ok((accounts, built))
}

/// Builds the history (or reuses the one in the database), then calls each report `args.report_calls` times (after one call
/// not counted, which warms the caches) and returns the latencies.
pub async fn run(args: &BenchArgs, database: &BenchDatabase, entries: u64) -> anyhow::Result<()> {
    let days = args.history_days;
    let wallets = args.wallets as usize;
    if wallets < FAMILY {
        bail!("--history needs at least {FAMILY} wallets (a parent and its departments)");
    }
    let clock = Clock::system();
    progress(format!("starting the server on {}", database.description));
    let server = InProcess::start_with_clock(&database.url, clock.clone()).await?;
    let clients = Clients::connect(&server.url, &server.token, 4, &Default::default()).await?;
    let (accounts, built) = match existing(&clients).await? {
        Some(accounts) => {
            progress(format!(
                "the database holds a history already: {} accounts; measuring on it",
                accounts.ids.len()
            ));
            (accounts, None)
        }
        None => {
            let built = build_history(&clients, &clock, entries, days, wallets).await?;
            (built.0, Some(built.1))
        }
    };

    let today = clock.now_micros().div_euclid(DAY_MICROS) * DAY_SECONDS;
    let window = (today - 29 * DAY_SECONDS, today + DAY_SECONDS);
    let history = (today - i64::from(days) * DAY_SECONDS, today + DAY_SECONDS);
    let mut draft = rates("anthropic/claude-sonnet", "0.0015");
    draft[0].flat_units = "1.1".into();
    let (parents, departments) = (accounts.parents(), accounts.departments());
    let mut measured = Vec::new();
    for probe in PROBES {
        let pool = if probe.one_department() {
            &departments
        } else {
            &parents
        };
        let mut samples = Vec::new();
        let mut rows = 0;
        for i in 0..=args.report_calls as usize {
            let account = pool[i % pool.len()];
            let started = Instant::now();
            rows = probe
                .call(&clients, account, window, history, &draft)
                .await
                .with_context(|| probe.name())?;
            if i > 0 {
                samples.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
        }
        let latency = Latency::from_micros(&mut samples);
        progress(format!(
            "{}: p50 {:.1} ms, max {:.1} ms",
            probe.name(),
            latency.p50,
            latency.max
        ));
        measured.push(Measured {
            probe,
            latency,
            calls: samples.len(),
            rows,
        });
    }
    drop(clients);
    server.stop().await?;

    if args.json {
        let reports: Vec<_> = measured
            .iter()
            .map(|m| {
                json!({
                    "report": m.probe.name(),
                    "calls": m.calls,
                    "rows": m.rows,
                    "p50_ms": m.latency.p50,
                    "p90_ms": m.latency.p90,
                    "max_ms": m.latency.max,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "database": database.kind.name(),
                "accounts": accounts.ids.len(),
                "days": days,
                "debits": built.as_ref().map(|b| b.debits),
                "refunds": built.as_ref().map(|b| b.refunds),
                "refused": built.as_ref().map(|b| &b.refused),
                "build_seconds": built.as_ref().map(|b| b.seconds),
                "reports": reports,
            }))?
        );
        return Ok(());
    }
    println!("allot bench --history: reports on a ledger with history");
    println!("  database:  {}", database.description);
    match &built {
        Some(built) => {
            println!(
                "  history:   {wallets} accounts ({} parents with 9 departments each), {days} days",
                wallets.div_ceil(FAMILY)
            );
            println!(
                "  entries:   {} debits + {} refunds, built in {:.0} s ({:.0} debits/s){}",
                built.debits,
                built.refunds,
                built.seconds,
                built.debits as f64 / built.seconds,
                if built.refused.is_empty() {
                    String::new()
                } else {
                    format!(", refused: {:?}", built.refused)
                }
            );
        }
        None => println!(
            "  history:   the one already in the database, {} accounts",
            accounts.ids.len()
        ),
    }
    println!(
        "  each report called {} times (after one warm-up call)\n",
        args.report_calls
    );
    println!(
        "  {:<46} {:>6} {:>9} {:>9} {:>9}",
        "report", "rows", "p50 ms", "p90 ms", "max ms"
    );
    for m in &measured {
        println!(
            "  {:<46} {:>6} {:>9.1} {:>9.1} {:>9.1}",
            m.probe.name(),
            m.rows,
            m.latency.p50,
            m.latency.p90,
            m.latency.max
        );
    }
    Ok(())
}
