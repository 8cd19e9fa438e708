//! Counters, latency histograms and failure tallies shared by a run's
//! tasks, and their summaries as they appear in the report.
//!
//! Hot counters are atomics (the progress line reads them every second);
//! latencies go into HDR histograms in microseconds, kept per task where
//! the rate is high (chat receivers) and merged at the end, or behind a
//! mutex where it is low (a few thousand logins per second at most).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram records exactly; longer ones are clamped
/// (the hard deadline bounds a run well below it).
const MAX_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds.
pub fn new_histogram() -> Histogram<u64> {
    // Invariant: 1 µs to 1 h at 3 significant figures is a valid range.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// Records `d`, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    record_micros(h, u64::try_from(d.as_micros()).unwrap_or(MAX_MICROS));
}

pub fn record_micros(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.clamp(1, MAX_MICROS));
}

/// A histogram several tasks record into.
pub struct SharedHistogram(Mutex<Histogram<u64>>);

impl Default for SharedHistogram {
    fn default() -> Self {
        SharedHistogram(Mutex::new(new_histogram()))
    }
}

impl SharedHistogram {
    fn lock(&self) -> std::sync::MutexGuard<'_, Histogram<u64>> {
        // A panic while recording leaves the histogram whole; keep going.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, d: Duration) {
        record(&mut self.lock(), d);
    }

    pub fn merge(&self, other: &Histogram<u64>) {
        // Both have the same bounds, so adding cannot fail; clamp anyway.
        let mut h = self.lock();
        if h.add(other).is_err() {
            for v in other.iter_recorded() {
                h.saturating_record_n(v.value_iterated_to().min(MAX_MICROS), v.count_at_value());
            }
        }
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary::of(&self.lock())
    }
}

/// Percentiles in milliseconds, as reported.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }

    /// `p50 1.23  p90 …` for the table.
    pub fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {}  p90 {}  p99 {}  max {}  (mean {}, n={})",
            fmt_ms(self.p50_ms),
            fmt_ms(self.p90_ms),
            fmt_ms(self.p99_ms),
            fmt_ms(self.max_ms),
            fmt_ms(self.mean_ms),
            self.count
        )
    }
}

fn fmt_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// Failures counted by reason (rare, so a mutex is cheap).
#[derive(Default)]
pub struct Failures(Mutex<BTreeMap<String, u64>>);

impl Failures {
    pub fn add(&self, reason: String) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).values().sum()
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// `n` per second over `d`, or 0 for an empty interval.
pub fn per_second(n: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s <= 0.0 { 0.0 } else { n as f64 / s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_in_milliseconds() {
        let shared = SharedHistogram::default();
        for ms in 1..=100u64 {
            shared.record(Duration::from_millis(ms));
        }
        let s = shared.summary();
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
        let mut other = new_histogram();
        record(&mut other, Duration::from_secs(2));
        shared.merge(&other);
        assert!((shared.summary().max_ms - 2000.0).abs() < 2.0);
    }

    #[test]
    fn failures_are_tallied_by_reason() {
        let f = Failures::default();
        f.add("auth: not-authorized".into());
        f.add("auth: not-authorized".into());
        f.add("connect: connection refused".into());
        assert_eq!(f.total(), 3);
        assert_eq!(f.snapshot()["auth: not-authorized"], 2);
    }
}
