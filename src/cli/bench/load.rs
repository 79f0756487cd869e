//! The load generator shared by the allot run and the baseline: wallet popularity (uniform or
//! Zipf), closed and open loop, and the tally (latencies, errors, units charged per wallet).

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use rand::{Rng, SeedableRng, rngs::SmallRng};
use tokio::{sync::Semaphore, task::JoinSet, time::Instant};

/// Most calls in flight at once in open loop. Arrivals beyond it wait for a slot (they are
/// counted as `late`; their latency still starts at the scheduled time).
const MAX_IN_FLIGHT: usize = 20_000;

/// The error class of a call refused by admission control.
const OVERLOADED: &str = "RESOURCE_EXHAUSTED";

/// What became of one debit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: this many micro-units were charged to the wallet.
    Charged(i64),
    /// Refused with this error class (a gRPC code name, or a SQL error class); nothing was
    /// charged.
    Rejected(&'static str),
    /// Failed with this error class, and whether it was charged is unknown (the target resolves
    /// it after the run, e.g. by repeating the request_id).
    Unknown(&'static str),
}

/// Something that debits wallets: the allot server over gRPC, or the plain-SQL baseline.
pub trait Target: Send + Sync + 'static {
    /// Debits per call (1 for unary; more for a batch call).
    fn debits_per_call(&self) -> usize;

    /// Issues one call debiting each wallet in `wallets` (indices into the seeded wallets) once;
    /// returns one outcome per entry of `wallets`, in order. `lane` identifies the caller (e.g.
    /// which connection to use).
    fn call(&self, lane: usize, wallets: &[usize]) -> impl Future<Output = Vec<Outcome>> + Send;
}

/// Picks wallets: uniform, or Zipf with exponent `s` (wallet 0 is the most popular) by binary
/// search in an inverse-CDF table.
pub struct Sampler {
    wallets: usize,
    /// Cumulative probabilities (last = 1), or `None` for uniform.
    cdf: Option<Vec<f64>>,
}

impl Sampler {
    pub fn new(wallets: usize, s: f64) -> Self {
        assert!(wallets > 0);
        if s <= 0.0 || wallets == 1 {
            return Sampler { wallets, cdf: None };
        }
        let mut cdf = Vec::with_capacity(wallets);
        let mut total = 0.0;
        for rank in 1..=wallets {
            total += (rank as f64).powf(-s);
            cdf.push(total);
        }
        for p in &mut cdf {
            *p /= total;
        }
        Sampler {
            wallets,
            cdf: Some(cdf),
        }
    }

    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        match &self.cdf {
            None => rng.random_range(0..self.wallets),
            Some(cdf) => {
                let u: f64 = rng.random();
                cdf.partition_point(|&p| p < u).min(self.wallets - 1)
            }
        }
    }

    /// The share of debits that go to the most popular wallet.
    pub fn hottest_share(&self) -> f64 {
        match &self.cdf {
            None => 1.0 / self.wallets as f64,
            Some(cdf) => cdf[0],
        }
    }
}

/// How to drive a target.
#[derive(Clone)]
pub struct Load {
    pub concurrency: usize,
    pub duration: Duration,
    /// Open loop at this many debits per second; `None`: closed loop.
    pub rate: Option<f64>,
    pub sampler: Arc<Sampler>,
    /// Seed of the wallet choices (the same for both runs).
    pub seed: u64,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// From the first call to the last completion.
    pub elapsed: Duration,
    pub calls: u64,
    /// Debits acknowledged.
    pub ok: u64,
    /// Failed debits by error class.
    pub errors: BTreeMap<&'static str, u64>,
    /// Of the failed debits, those whose outcome was unknown.
    pub unknown: u64,
    /// Open loop: calls issued after their scheduled time because MAX_IN_FLIGHT were busy.
    pub late: u64,
    pub latency: Latency,
    /// Latency of the calls the server admitted (every debit answered, none refused as
    /// RESOURCE_EXHAUSTED), and their count.
    pub admitted: (u64, Latency),
    /// Latency of the calls refused as RESOURCE_EXHAUSTED (overload), and their count.
    pub refused: (u64, Latency),
    /// Open loop: single debits sent one after another for a second once the schedule ended
    /// (how fast the service is back to normal).
    pub recovery: Option<Recovery>,
    /// Micro-units acknowledged per wallet.
    pub charged: Vec<i64>,
}

/// The probe calls after an open-loop run's last scheduled call.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Probes sent (one at a time, for a second).
    pub probes: u64,
    /// Milliseconds after the schedule ended at which the first probe was acknowledged.
    pub first_ok_ms: Option<f64>,
    /// Latency of the probes acknowledged.
    pub latency: Latency,
}

/// How long the recovery probe runs.
const RECOVERY_PROBE: Duration = Duration::from_secs(1);

impl Measured {
    pub fn debits_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Call latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// From latencies in microseconds (sorted in place).
    pub fn from_micros(samples: &mut [u32]) -> Self {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            f64::from(samples[rank - 1]) / 1000.0
        };
        let sum: u64 = samples.iter().map(|&s| u64::from(s)).sum();
        Latency {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
            mean: sum as f64 / samples.len() as f64 / 1000.0,
        }
    }
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    admitted_us: Vec<u32>,
    refused_us: Vec<u32>,
    calls: u64,
    ok: u64,
    errors: BTreeMap<&'static str, u64>,
    unknown: u64,
}

impl Tally {
    fn record(
        &mut self,
        latency: Duration,
        outcomes: &[Outcome],
        wallets: &[usize],
        charged: &[AtomicI64],
    ) {
        self.calls += 1;
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.latencies_us.push(micros);
        if outcomes.contains(&Outcome::Rejected(OVERLOADED)) {
            self.refused_us.push(micros);
        } else if !outcomes.iter().any(|o| matches!(o, Outcome::Unknown(_))) {
            self.admitted_us.push(micros);
        }
        for (outcome, &wallet) in outcomes.iter().zip(wallets) {
            match outcome {
                Outcome::Charged(micros) => {
                    self.ok += 1;
                    charged[wallet].fetch_add(*micros, Ordering::Relaxed);
                }
                Outcome::Rejected(class) => *self.errors.entry(class).or_default() += 1,
                Outcome::Unknown(class) => {
                    *self.errors.entry(class).or_default() += 1;
                    self.unknown += 1;
                }
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.admitted_us.extend(other.admitted_us);
        self.refused_us.extend(other.refused_us);
        self.calls += other.calls;
        self.ok += other.ok;
        self.unknown += other.unknown;
        for (class, n) in other.errors {
            *self.errors.entry(class).or_default() += n;
        }
    }
}

/// Drives `target` for `load.duration` over `wallets` wallets and measures it.
pub async fn run<T: Target>(
    target: Arc<T>,
    load: &Load,
    wallets: usize,
) -> anyhow::Result<Measured> {
    let charged: Arc<Vec<AtomicI64>> = Arc::new((0..wallets).map(|_| AtomicI64::new(0)).collect());
    let start = Instant::now();
    let (tally, late, recovery) = match load.rate {
        None => (closed_loop(target, load, &charged, start).await?, 0, None),
        Some(rate) => {
            let (tally, late, recovery) = open_loop(target, load, rate, &charged, start).await?;
            (tally, late, Some(recovery))
        }
    };
    let elapsed = start.elapsed();
    let mut latencies = tally.latencies_us;
    let (mut admitted, mut refused) = (tally.admitted_us, tally.refused_us);
    Ok(Measured {
        admitted: (admitted.len() as u64, Latency::from_micros(&mut admitted)),
        refused: (refused.len() as u64, Latency::from_micros(&mut refused)),
        recovery,
        elapsed,
        calls: tally.calls,
        ok: tally.ok,
        errors: tally.errors,
        unknown: tally.unknown,
        late,
        latency: Latency::from_micros(&mut latencies),
        charged: charged.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
    })
}

/// `concurrency` callers, each sending its next call when the previous one returns.
async fn closed_loop<T: Target>(
    target: Arc<T>,
    load: &Load,
    charged: &Arc<Vec<AtomicI64>>,
    start: Instant,
) -> anyhow::Result<Tally> {
    let deadline = start + load.duration;
    let per_call = target.debits_per_call();
    let mut callers = JoinSet::new();
    for lane in 0..load.concurrency {
        let target = target.clone();
        let sampler = load.sampler.clone();
        let charged = charged.clone();
        let mut rng = SmallRng::seed_from_u64(load.seed.wrapping_add(lane as u64));
        callers.spawn(async move {
            let mut tally = Tally::default();
            let mut wallets = Vec::with_capacity(per_call);
            while Instant::now() < deadline {
                wallets.clear();
                wallets.extend((0..per_call).map(|_| sampler.sample(&mut rng)));
                let sent = Instant::now();
                let outcomes = target.call(lane, &wallets).await;
                tally.record(sent.elapsed(), &outcomes, &wallets, &charged);
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(tally) = callers.join_next().await {
        total.merge(tally?);
    }
    Ok(total)
}

/// Calls issued on a fixed schedule (`rate` debits per second), whether or not earlier ones
/// have returned; each call's latency runs from its scheduled time (no coordinated omission).
async fn open_loop<T: Target>(
    target: Arc<T>,
    load: &Load,
    rate: f64,
    charged: &Arc<Vec<AtomicI64>>,
    start: Instant,
) -> anyhow::Result<(Tally, u64, Recovery)> {
    let per_call = target.debits_per_call();
    let interval = Duration::from_secs_f64(per_call as f64 / rate);
    let total_calls = (load.duration.as_secs_f64() * rate / per_call as f64).floor() as u64;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let late = AtomicU64::new(0);
    let mut rng = SmallRng::seed_from_u64(load.seed);
    for call in 0..total_calls {
        let scheduled = start + interval.mul_f64(call as f64);
        if scheduled > Instant::now() {
            tokio::time::sleep_until(scheduled).await;
        }
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                late.fetch_add(1, Ordering::Relaxed);
                slots.clone().acquire_owned().await?
            }
        };
        let wallets: Vec<usize> = (0..per_call)
            .map(|_| load.sampler.sample(&mut rng))
            .collect();
        let lane = (call % load.concurrency.max(1) as u64) as usize;
        let target = target.clone();
        let tally = tally.clone();
        let charged = charged.clone();
        tokio::spawn(async move {
            let outcomes = target.call(lane, &wallets).await;
            let latency = scheduled.elapsed();
            tally
                .lock()
                .expect("tally lock")
                .record(latency, &outcomes, &wallets, &charged);
            drop(slot);
        });
    }
    // The load stops: how soon does a lone caller get normal service again? (Its debits count
    // in the tally like the others.)
    let ended = Instant::now();
    let mut recovery = Recovery::default();
    let mut probe_us = Vec::new();
    while ended.elapsed() < RECOVERY_PROBE {
        let wallets = [load.sampler.sample(&mut rng)];
        let sent = Instant::now();
        let outcomes = target.call(0, &wallets).await;
        let latency = sent.elapsed();
        recovery.probes += 1;
        if matches!(outcomes[0], Outcome::Charged(_)) {
            recovery
                .first_ok_ms
                .get_or_insert(sent.duration_since(ended).as_secs_f64() * 1000.0);
            probe_us.push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
        }
        tally
            .lock()
            .expect("tally lock")
            .record(latency, &outcomes, &wallets, charged);
    }
    recovery.latency = Latency::from_micros(&mut probe_us);
    // Wait for every call still in flight.
    let _all = slots.acquire_many(MAX_IN_FLIGHT as u32).await?;
    let tally = std::mem::take(&mut *tally.lock().expect("tally lock"));
    Ok((tally, late.into_inner(), recovery))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_and_zipf_stay_in_range() {
        let mut rng = SmallRng::seed_from_u64(7);
        for s in [0.0, 0.8, 1.2] {
            let sampler = Sampler::new(50, s);
            let mut counts = [0u32; 50];
            for _ in 0..50_000 {
                counts[sampler.sample(&mut rng)] += 1;
            }
            if s > 0.0 {
                assert!(counts[0] > counts[49] * 5, "{s}: {counts:?}");
            } else {
                assert!(counts.iter().all(|&c| c > 700), "{counts:?}");
            }
        }
        assert_eq!(Sampler::new(1, 1.0).sample(&mut rng), 0);
    }

    #[test]
    fn percentiles() {
        let mut samples: Vec<u32> = (1..=1000).rev().map(|ms| ms * 1000).collect();
        let latency = Latency::from_micros(&mut samples);
        assert_eq!(latency.p50, 500.0);
        assert_eq!(latency.p90, 900.0);
        assert_eq!(latency.p99, 990.0);
        assert_eq!(latency.max, 1000.0);
    }
}
