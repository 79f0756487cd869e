//! The one source of "now" for every rule that depends on time (rate cards in force, grant
//! effective and expiry times). Microseconds since the Unix epoch. Tests can pin or move it.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Added to the system time; lets tests move time without sleeping.
    offset_micros: Arc<AtomicI64>,
}

impl Clock {
    pub fn system() -> Self {
        Self::default()
    }

    pub fn now_micros(&self) -> i64 {
        system_micros() + self.offset_micros.load(Ordering::Relaxed)
    }

    /// Moves this clock (and every clone of it) forward by `micros`.
    pub fn advance(&self, micros: i64) {
        self.offset_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

pub fn system_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
