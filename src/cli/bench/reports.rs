//! `allot bench --reports N`: report readers beside the debit load, to measure what reading
//! budgets and usage costs the ledger (and how long the reports take meanwhile).

use std::time::Instant;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{allot::Clients, load::Latency};
use crate::proto;

const DAY_SECONDS: i64 = 86_400;

/// Readers running until [`Readers::stop`].
pub struct Readers {
    stop: CancellationToken,
    tasks: JoinSet<anyhow::Result<(Vec<u32>, Vec<u32>)>>,
}

/// Starts `n` readers, each going through `accounts` in turn from its own offset.
pub fn start(clients: &Clients, accounts: &[String], n: usize) -> Readers {
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    for reader in 0..n {
        let (clients, accounts, stop) = (clients.clone(), accounts.to_vec(), stop.clone());
        tasks.spawn(async move {
            let (mut budget, mut usage) = (Vec::new(), Vec::new());
            let mut i = reader * accounts.len().max(1) / n.max(1);
            while !stop.is_cancelled() && !accounts.is_empty() {
                let account = accounts[i % accounts.len()].clone();
                i += 1;
                let mut reports = clients.reports(reader);
                let started = Instant::now();
                reports
                    .get_budget(proto::GetBudgetRequest {
                        account_id: account.clone(),
                        ..Default::default()
                    })
                    .await?;
                budget.push(elapsed_us(started));
                let today = chrono::Utc::now().timestamp().div_euclid(DAY_SECONDS);
                let at = |day: i64| prost_types::Timestamp {
                    seconds: day * DAY_SECONDS,
                    nanos: 0,
                };
                let started = Instant::now();
                reports
                    .get_usage_report(proto::GetUsageReportRequest {
                        account_id: account,
                        start_time: Some(at(today - 1)),
                        end_time: Some(at(today + 1)),
                        ..Default::default()
                    })
                    .await?;
                usage.push(elapsed_us(started));
            }
            Ok((budget, usage))
        });
    }
    Readers { stop, tasks }
}

fn elapsed_us(started: Instant) -> u32 {
    u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX)
}

impl Readers {
    /// Stops the readers: (budget latencies, usage latencies, calls), or `None` if none ran.
    pub async fn stop(self) -> anyhow::Result<Option<(Latency, Latency, usize)>> {
        self.stop.cancel();
        if self.tasks.is_empty() {
            return Ok(None);
        }
        let (mut budget, mut usage) = (Vec::new(), Vec::new());
        for result in self.tasks.join_all().await {
            let (b, u) = result.map_err(|err| anyhow::anyhow!("a report reader failed: {err}"))?;
            budget.extend(b);
            usage.extend(u);
        }
        let calls = budget.len() + usage.len();
        Ok(Some((
            Latency::from_micros(&mut budget),
            Latency::from_micros(&mut usage),
            calls,
        )))
    }
}
