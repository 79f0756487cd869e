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

/// Most report pairs in flight at once (a slow server makes the readers fall behind rather
/// than pile up).
const IN_FLIGHT: usize = 8;

/// Starts readers issuing `per_sec` report pairs (GetBudget, then GetUsageReport for the
/// last two days) a second in all, going through `accounts` in turn (open loop).
pub fn start(clients: &Clients, accounts: &[String], per_sec: f64) -> Readers {
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    if per_sec <= 0.0 || accounts.is_empty() {
        return Readers { stop, tasks };
    }
    let lanes = IN_FLIGHT;
    let every = std::time::Duration::from_secs_f64(lanes as f64 / per_sec);
    for lane in 0..lanes {
        let (clients, accounts, stop) = (clients.clone(), accounts.to_vec(), stop.clone());
        tasks.spawn(async move {
            let (mut budget, mut usage) = (Vec::new(), Vec::new());
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Lanes start spread over one interval.
            tokio::time::sleep(every.mul_f64(lane as f64 / lanes as f64)).await;
            let mut i = lane * accounts.len() / lanes;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let account = accounts[i % accounts.len()].clone();
                i += 1;
                let mut reports = clients.reports(lane);
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
