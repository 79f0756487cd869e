//! Time in the tests: micro-second constants, `Timestamp` conversions, the server's clock.

use prost_types::Timestamp;

use super::TestApp;

/// Durations in micro-seconds (the unit of the server's clock).
pub const SECOND: i64 = 1_000_000;
pub const MINUTE: i64 = 60 * SECOND;
pub const HOUR: i64 = 60 * MINUTE;
pub const DAY: i64 = 24 * HOUR;
/// A day in whole seconds (for wall-clock `Timestamp`s built with `ts_secs`).
pub const DAY_SECS: i64 = 86_400;

/// The `Timestamp` of `micros` micro-seconds since the epoch.
pub fn ts(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(SECOND),
        nanos: (micros.rem_euclid(SECOND) * 1_000) as i32,
    }
}

/// The `Timestamp` of a whole second since the epoch.
pub fn ts_secs(seconds: i64) -> Timestamp {
    Timestamp { seconds, nanos: 0 }
}

/// Micro-seconds since the epoch of a timestamp that must be set.
#[track_caller]
pub fn micros_of(timestamp: Option<&Timestamp>) -> i64 {
    let t = timestamp.expect("a timestamp");
    t.seconds * SECOND + i64::from(t.nanos) / 1_000
}

/// The wall clock, in whole seconds since the epoch.
pub fn now_seconds() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The server's "now", rounded down to a whole second (micro-seconds).
pub fn now_second(app: &TestApp) -> i64 {
    app.clock.now_micros().div_euclid(SECOND) * SECOND
}
