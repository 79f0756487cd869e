//! `allot bench`: a load generator built into the binary.
//!
//! It starts the server in-process (or targets one with `--server`), seeds accounts, wallets,
//! grants and a rate card over gRPC, then drives `Debit` with `--concurrency` callers for
//! `--duration` — closed loop (each caller sends its next debit when the last returns), or open
//! loop at `--rate` debits/s (latency measured from each call's scheduled time). It reports
//! debits/s, latency percentiles and errors by gRPC code, then checks that every wallet's
//! posted balance equals its grant minus the debits it acknowledged.
//!
//! In the same run it measures the **baseline**: one hand-written SQL transaction per debit on
//! two tables of its own in the same database, with the same concurrency, wallet choices,
//! duration and durability, and prints the ratio.
//!
//! * `load` — closed/open loop, Zipf sampling, the tally (shared by both runs).
//! * `allot` — in-process server, seeding, the debit [`allot::Driver`], verification.
//! * `baseline` — the plain-SQL run.
//! * `database` — the fresh database (temp SQLite file, or `allot_bench_<uuid>` on PostgreSQL).

mod allot;
mod baseline;
mod database;
mod history;
mod load;
mod reports;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;

pub use self::database::replace_database;
use self::{
    allot::{AllotTarget, Clients, Driver, InProcess},
    baseline::Baseline,
    database::{BenchDatabase, Kind},
    load::{Latency, Load, Measured, Sampler},
};
use super::duration::parse_duration;

/// Seed of the wallet choices: the allot run and the baseline pick the same wallets.
const SEED: u64 = 0x5eed_a110;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Database of the server and the baseline. Default: a fresh SQLite file in a temp dir. A
    /// `postgres://…` URL: a fresh database `allot_bench_<uuid>` is created on that server and
    /// dropped at the end. A `sqlite://FILE?mode=rwc` URL is used as is.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Target this running server instead of starting one in-process (needs --token; the
    /// baseline then needs --database-url, a database of the same kind, or is skipped).
    #[arg(long)]
    pub server: Option<String>,
    /// Token for --server: it must be allowed to create accounts, wallets, grants and rate
    /// cards and to debit (e.g. `allot token --role admin --account '*'`).
    #[arg(long, env = "ALLOT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// TLS options for an https:// --server.
    #[command(flatten)]
    pub tls: crate::tls::ClientTlsArgs,
    /// Wallets to seed and debit (one account each).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub wallets: u64,
    /// Concurrent callers (closed loop), and the baseline's workers.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,
    /// How long each run (allot, then baseline) lasts, e.g. `10s`, `1m`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Wallet popularity skew: Zipf exponent (0 = uniform; 1 ≈ the top 1% of 1,000 wallets
    /// take 40% of the debits).
    #[arg(long, default_value_t = 0.0)]
    pub zipf: f64,
    /// Open loop: issue this many debits per second on a fixed schedule, whatever the
    /// latency. Without it: closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// HTTP/2 connections to the server (callers are spread over them).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub connections: u64,
    /// Connections in the baseline's pool. Default: --concurrency on PostgreSQL; on SQLite
    /// (one writer at a time) at most 8, like the server's pool — measured the fastest: 1
    /// connection serialises the worker-thread round trips, 64 wait in SQLite's busy handler.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub baseline_connections: Option<u64>,
    /// Send debits with BatchDebit, N per call (1–1000), instead of unary Debit. The baseline
    /// stays one transaction per debit.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch: Option<u64>,
    /// Skip the baseline run.
    #[arg(long)]
    pub no_baseline: bool,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Read reports beside the load: this many GetBudget + GetUsageReport (the last two days)
    /// pairs a second, for the seeded accounts in turn, and report their latencies.
    #[arg(long, default_value_t = 0.0)]
    pub reports: f64,
    /// Report scale instead of the debit run: build a history of this many debits (through
    /// the API, the in-process server's clock walking forward a day at a time) for --wallets
    /// accounts, then time every report. A history already in the database is measured
    /// again, not rebuilt: with a SQLite URL, or on PostgreSQL (database `allot_history`,
    /// kept).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub history: Option<u64>,
    /// Days the --history spans (ending today).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub history_days: u32,
    /// With --history: calls of each report measured.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub report_calls: u64,
    /// Register a webhook endpoint for every account at this URL before the run (the
    /// in-process server then sends to private addresses too), so the run pays for the
    /// deliveries: e.g. a slow receiver (`scripts/webhook-sink.py`).
    #[arg(long, value_name = "URL")]
    pub webhook_url: Option<String>,
    /// With --webhook-url: only these event types (repeat); default: all.
    #[arg(
        long = "webhook-event-type",
        value_name = "TYPE",
        requires = "webhook_url"
    )]
    pub webhook_event_types: Vec<String>,
}

/// Everything measured, for the text or JSON report.
struct Report {
    driver: Driver,
    wallets: usize,
    concurrency: usize,
    duration: Duration,
    zipf: f64,
    hottest_share: f64,
    rate: Option<f64>,
    connections: usize,
    database: Option<(Kind, String)>,
    server: String,
    in_process: bool,
    seed_time: Duration,
    allot: Measured,
    unresolved: usize,
    verification: allot::Verification,
    rss: Option<Rss>,
    baseline: Option<BaselineReport>,
    /// Latencies of the report readers run beside the load: (budget, usage, calls).
    reports: Option<(Latency, Latency, usize)>,
    notes: Vec<String>,
}

struct BaselineReport {
    measured: Measured,
    connections: usize,
    verification: baseline::Verification,
}

#[derive(Debug, Clone, Copy)]
struct Rss {
    now_mb: f64,
    peak_mb: f64,
}

/// VmRSS and VmHWM of this process.
fn read_rss() -> Option<Rss> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    };
    Some(Rss {
        now_mb: field("VmRSS:")?,
        peak_mb: field("VmHWM:")?,
    })
}

fn progress(message: impl AsRef<str>) {
    eprintln!("bench: {}", message.as_ref());
}

fn init_logging() {
    use tracing_subscriber::{EnvFilter, fmt};
    // Only warnings by default (the report goes to stdout, progress and logs to stderr), less
    // sea-orm's per-transaction "access mode isn't supported" on SQLite.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,sea_orm::driver::sqlx_sqlite=error"));
    let _ = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if !(args.zipf.is_finite() && args.zipf >= 0.0) {
        bail!("--zipf must be 0 or more");
    }
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        bail!("--rate must be above 0");
    }
    if args.duration.is_zero() {
        bail!("--duration must be above 0");
    }
    if !(args.reports.is_finite() && args.reports >= 0.0) {
        bail!("--reports must be 0 or more (report pairs a second)");
    }
    if args.server.is_some() && args.token.is_none() {
        bail!("--server needs a token: --token or ALLOT_TOKEN");
    }
    if let Some(url) = &args.database_url {
        Kind::of(url)?;
    }
    init_logging();
    if let Some(entries) = args.history {
        if args.server.is_some() {
            bail!("--history runs its own server (it moves the server's clock): drop --server");
        }
        let database = BenchDatabase::prepare_kept(args.database_url.as_deref()).await?;
        let result = tokio::select! {
            result = history::run(&args, &database, entries) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        if let Err(err) = database.cleanup().await {
            eprintln!("warning: {err:#}");
        }
        return result;
    }
    let database = match (&args.server, &args.database_url) {
        (Some(_), None) => None,
        (_, url) => Some(BenchDatabase::prepare(url.as_deref()).await?),
    };
    let result = tokio::select! {
        result = measure(&args, database.as_ref()) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Some(database) = database
        && let Err(err) = database.cleanup().await
    {
        eprintln!("warning: {err:#}");
    }
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", report.text());
    }
    if report.verification.mismatches > 0 {
        bail!(
            "{} wallet balance(s) do not match the acknowledged debits",
            report.verification.mismatches
        );
    }
    Ok(())
}

async fn measure(args: &BenchArgs, database: Option<&BenchDatabase>) -> anyhow::Result<Report> {
    let wallets = args.wallets as usize;
    let concurrency = args.concurrency as usize;
    let connections = (args.connections as usize).min(concurrency);
    let driver = match args.batch {
        Some(n) => Driver::Batch(n as usize),
        None => Driver::Unary,
    };
    let mut notes = Vec::new();

    let in_process = match &args.server {
        Some(_) => None,
        None => {
            let database = database.context("no database for the in-process server")?;
            progress(format!("starting the server on {}", database.description));
            let webhooks = crate::webhooks::Settings {
                allow_private: args.webhook_url.is_some(),
                ..Default::default()
            };
            Some(InProcess::start(&database.url, webhooks).await?)
        }
    };
    let (url, token) = match &in_process {
        Some(server) => (server.url.clone(), server.token.clone()),
        None => (
            args.server.clone().unwrap_or_default(),
            args.token.clone().unwrap_or_default(),
        ),
    };
    let clients = Clients::connect(&url, &token, connections, &args.tls).await?;
    if let Some(note) = allot::ensure_rate_card(&clients).await? {
        notes.push(note);
    }
    if let Some(url) = &args.webhook_url {
        notes.push(allot::webhook_endpoint(&clients, url, &args.webhook_event_types).await?);
    }
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    progress(format!("seeding {wallets} accounts, wallets and grants"));
    let seeding = std::time::Instant::now();
    let accounts = allot::seed(&clients, &run_id, wallets, concurrency.min(64)).await?;
    let seed_time = seeding.elapsed();

    let sampler = Arc::new(Sampler::new(wallets, args.zipf));
    let load = Load {
        concurrency,
        duration: args.duration,
        rate: args.rate,
        sampler: sampler.clone(),
        seed: SEED,
    };
    progress(format!(
        "driving {} for {:?}",
        driver.describe(),
        args.duration
    ));
    let target = Arc::new(AllotTarget::new(
        clients.clone(),
        accounts.clone(),
        driver,
        &run_id,
        concurrency,
    ));
    let readers = reports::start(&clients, &accounts, args.reports);
    let mut measured = load::run(target.clone(), &load, wallets).await?;
    let reports = readers.stop().await?;
    let (resolved, unresolved) = target.resolve_unknown().await;
    for (wallet, micros) in resolved {
        measured.charged[wallet] += micros;
    }
    if unresolved > 0 {
        notes.push(format!(
            "{unresolved} debit(s) with an unknown outcome could not be resolved: the balance \
             check cannot be exact"
        ));
    }
    progress("verifying balances");
    let verification = allot::verify(&clients, &accounts, &measured.charged, concurrency).await?;
    let rss = in_process.as_ref().and_then(|_| read_rss());
    drop(target);
    drop(clients);
    if let Some(server) = in_process {
        server.stop().await?;
    }

    let baseline = match database {
        _ if args.no_baseline => None,
        None => {
            notes.push("baseline skipped: --server without --database-url".into());
            None
        }
        Some(database) => {
            let pool = args.baseline_connections.map_or(
                match database.kind {
                    Kind::Sqlite => concurrency.min(8),
                    Kind::Postgres => concurrency,
                },
                |n| n as usize,
            );
            progress(format!(
                "baseline: plain SQL, {pool} connection(s), {concurrency} workers"
            ));
            let baseline =
                Arc::new(Baseline::setup(&database.url, database.kind, wallets, pool).await?);
            let run = load::run(baseline.clone(), &load, wallets).await;
            let checked = match &run {
                Ok(measured) => Some(baseline.verify(&measured.charged).await),
                Err(_) => None,
            };
            baseline.teardown().await?;
            let measured = run?;
            Some(BaselineReport {
                measured,
                connections: baseline.connections,
                verification: checked.context("no baseline check")??,
            })
        }
    };

    Ok(Report {
        driver,
        wallets,
        concurrency,
        duration: args.duration,
        zipf: args.zipf,
        hottest_share: sampler.hottest_share(),
        rate: args.rate,
        connections,
        database: database.map(|d| (d.kind, d.description.clone())),
        server: match &args.server {
            None => "in-process".into(),
            Some(_) => url,
        },
        in_process: args.server.is_none(),
        seed_time,
        allot: measured,
        unresolved,
        verification,
        rss,
        baseline,
        reports,
        notes,
    })
}

fn errors_json(errors: &BTreeMap<&'static str, u64>) -> serde_json::Value {
    errors
        .iter()
        .map(|(class, n)| ((*class).to_string(), json!(n)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn errors_text(errors: &BTreeMap<&'static str, u64>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    errors
        .iter()
        .map(|(class, n)| format!("{class} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

impl Report {
    fn ratio(&self) -> Option<f64> {
        let baseline = self.baseline.as_ref()?.measured.debits_per_sec();
        (baseline > 0.0).then(|| self.allot.debits_per_sec() / baseline)
    }

    fn mode(&self) -> String {
        match self.rate {
            None => format!("closed loop, {} callers", self.concurrency),
            Some(rate) => format!("open loop at {rate} debits/s"),
        }
    }

    fn distribution(&self) -> String {
        if self.wallets == 1 {
            "1 wallet".into()
        } else if self.zipf > 0.0 {
            format!(
                "{} wallets, Zipf s={} (hottest takes {:.1}%)",
                self.wallets,
                self.zipf,
                self.hottest_share * 100.0
            )
        } else {
            format!("{} wallets, uniform", self.wallets)
        }
    }

    fn json(&self) -> serde_json::Value {
        let m = &self.allot;
        let baseline = self.baseline.as_ref().map(|b| {
            json!({
                "debits_per_sec": round(b.measured.debits_per_sec(), 1),
                "debits": b.measured.ok,
                "p50_ms": round(b.measured.latency.p50, 3),
                "p90_ms": round(b.measured.latency.p90, 3),
                "p99_ms": round(b.measured.latency.p99, 3),
                "max_ms": round(b.measured.latency.max, 3),
                "errors": b.measured.error_count(),
                "errors_by_class": errors_json(&b.measured.errors),
                "mismatches": b.verification.mismatches,
                "ledger_rows": b.verification.ledger_rows,
                "connections": b.connections,
                "late": b.measured.late,
            })
        });
        let reports = self.reports.map(|(budget, usage, calls)| {
            json!({
                "calls": calls,
                "budget_p50_ms": round(budget.p50, 3),
                "budget_p99_ms": round(budget.p99, 3),
                "usage_p50_ms": round(usage.p50, 3),
                "usage_p99_ms": round(usage.p99, 3),
            })
        });
        let admission = json!({
            "admitted_calls": m.admitted.0,
            "admitted_p50_ms": round(m.admitted.1.p50, 3),
            "admitted_p99_ms": round(m.admitted.1.p99, 3),
            "refused_calls": m.refused.0,
            "refused_p50_ms": round(m.refused.1.p50, 3),
            "refused_p99_ms": round(m.refused.1.p99, 3),
        });
        let recovery = m.recovery.as_ref().map(|r| {
            json!({
                "probes": r.probes,
                "first_ok_ms": r.first_ok_ms.map(|ms| round(ms, 3)),
                "p50_ms": round(r.latency.p50, 3),
                "p99_ms": round(r.latency.p99, 3),
                "max_ms": round(r.latency.max, 3),
            })
        });
        json!({
            "debits_per_sec": round(m.debits_per_sec(), 1),
            "baseline_debits_per_sec": self.baseline.as_ref().map(|b| round(b.measured.debits_per_sec(), 1)),
            "ratio": self.ratio().map(|r| round(r, 2)),
            "p50_ms": round(m.latency.p50, 3),
            "p90_ms": round(m.latency.p90, 3),
            "p99_ms": round(m.latency.p99, 3),
            "max_ms": round(m.latency.max, 3),
            "mean_ms": round(m.latency.mean, 3),
            "errors": m.error_count(),
            "errors_by_code": errors_json(&m.errors),
            "unknown_outcomes": m.unknown,
            "unresolved": self.unresolved,
            "mismatches": self.verification.mismatches,
            "debits": m.ok,
            "calls": m.calls,
            "late": m.late,
            "admission": admission,
            "recovery": recovery,
            "elapsed_s": round(m.elapsed.as_secs_f64(), 3),
            "driver": match self.driver {
                Driver::Unary => "unary",
                Driver::Batch(_) => "batch",
            },
            "debits_per_call": self.driver.debits_per_call(),
            "mode": if self.rate.is_some() { "open" } else { "closed" },
            "rate": self.rate,
            "wallets": self.wallets,
            "zipf": self.zipf,
            "concurrency": self.concurrency,
            "connections": self.connections,
            "duration_s": self.duration.as_secs_f64(),
            "database": self.database.as_ref().map(|(kind, _)| kind.name()),
            "server": self.server,
            "seed_s": round(self.seed_time.as_secs_f64(), 3),
            "rss_mb": self.rss.map(|r| round(r.now_mb, 1)),
            "peak_rss_mb": self.rss.map(|r| round(r.peak_mb, 1)),
            "rss_note": self.rss.map(|_| "VmRSS/VmHWM of the bench process: the in-process server shares it with the load generator"),
            "baseline": baseline,
            "reports": reports,
            "notes": self.notes,
        })
    }

    fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let m = &self.allot;
        let _ = writeln!(
            out,
            "allot bench: {}, {}, {:?}, {}",
            self.driver.describe(),
            self.mode(),
            self.duration,
            self.distribution()
        );
        if let Some((_, description)) = &self.database {
            let role = if self.in_process {
                ""
            } else {
                " (baseline only)"
            };
            let _ = writeln!(out, "database:     {description}{role}");
        }
        let _ = writeln!(
            out,
            "server:       {} ({} HTTP/2 connection{}); seeded in {:.1}s",
            self.server,
            self.connections,
            if self.connections == 1 { "" } else { "s" },
            self.seed_time.as_secs_f64()
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "", "debits/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"
        );
        let row = |out: &mut String, name: &str, m: &Measured| {
            let _ = writeln!(
                out,
                "{:<10} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9}",
                name,
                m.debits_per_sec(),
                m.latency.p50,
                m.latency.p90,
                m.latency.p99,
                m.latency.max,
                m.error_count()
            );
        };
        row(&mut out, "allot", m);
        if let Some(b) = &self.baseline {
            row(&mut out, "baseline", &b.measured);
        }
        if let Some(ratio) = self.ratio() {
            let _ = writeln!(out, "{:<10} {:>9.2}x", "ratio", ratio);
        }
        if let Some((budget, usage, calls)) = &self.reports {
            let _ = writeln!(
                out,
                "reports:      {calls} calls beside the load; GetBudget p50 {:.2} ms, p99 {:.2} \
                 ms; GetUsageReport p50 {:.2} ms, p99 {:.2} ms",
                budget.p50, budget.p99, usage.p50, usage.p99
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "allot:        {} debits acknowledged in {:.2}s; errors: {}",
            m.ok,
            m.elapsed.as_secs_f64(),
            errors_text(&m.errors)
        );
        if m.late > 0 {
            let _ = writeln!(
                out,
                "              {} calls issued late (the client's in-flight limit was reached)",
                m.late
            );
        }
        if m.refused.0 > 0 {
            let _ = writeln!(
                out,
                "admission:    {} calls admitted (p50 {:.2} ms, p99 {:.2} ms), {} refused as \
                 RESOURCE_EXHAUSTED (p50 {:.2} ms, p99 {:.2} ms)",
                m.admitted.0,
                m.admitted.1.p50,
                m.admitted.1.p99,
                m.refused.0,
                m.refused.1.p50,
                m.refused.1.p99
            );
        }
        if let Some(recovery) = &m.recovery {
            let _ = writeln!(
                out,
                "after load:   {} single debits in the next second; first acknowledged at +{}; \
                 p50 {:.2} ms, p99 {:.2} ms",
                recovery.probes,
                recovery
                    .first_ok_ms
                    .map_or("never".to_string(), |ms| format!("{ms:.0} ms")),
                recovery.latency.p50,
                recovery.latency.p99
            );
        }
        let _ = writeln!(
            out,
            "verification: {} wallets, {} mismatch{}{}",
            self.verification.wallets,
            self.verification.mismatches,
            if self.verification.mismatches == 1 {
                ""
            } else {
                "es"
            },
            if m.unknown > 0 {
                format!(
                    " ({} unknown outcome(s) resolved by repeating their request_id)",
                    m.unknown as usize - self.unresolved
                )
            } else {
                String::new()
            }
        );
        for example in &self.verification.examples {
            let _ = writeln!(out, "              {example}");
        }
        if let Some(b) = &self.baseline {
            let _ = writeln!(
                out,
                "baseline:     one SQL transaction per debit, pool of {} connection{}, {}; \
                 {} debits, errors: {}; {} mismatch{}, {} ledger rows",
                b.connections,
                if b.connections == 1 { "" } else { "s" },
                match self.rate {
                    None => format!("{} workers", self.concurrency),
                    Some(_) => "same schedule".into(),
                },
                b.measured.ok,
                errors_text(&b.measured.errors),
                b.verification.mismatches,
                if b.verification.mismatches == 1 {
                    ""
                } else {
                    "es"
                },
                b.verification.ledger_rows
            );
        }
        if let Some(rss) = self.rss {
            let _ = writeln!(
                out,
                "server RSS:   {:.1} MB at the end, {:.1} MB peak (VmRSS/VmHWM of this process: \
                 the in-process server shares it with the load generator)",
                rss.now_mb, rss.peak_mb
            );
        } else if !self.in_process {
            let _ = writeln!(out, "server RSS:   not measured (--server)");
        }
        for note in &self.notes {
            let _ = writeln!(out, "note:         {note}");
        }
        out
    }
}
