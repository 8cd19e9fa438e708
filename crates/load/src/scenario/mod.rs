//! The scenarios, one file each; `traffic` drives the message phase that
//! `chat` and `muc` share.

pub mod chat;
pub mod idle;
pub mod login;
pub mod muc;
mod traffic;

use crate::report::LoginReport;
use crate::run::LoginPhase;
use crate::stats::per_second;

/// The report of a set-up login phase.
fn login_report(phase: &LoginPhase) -> LoginReport {
    let s = &phase.stats;
    let ok = s.ok.load(std::sync::atomic::Ordering::Relaxed);
    LoginReport {
        attempts: s.attempts.load(std::sync::atomic::Ordering::Relaxed),
        ok,
        failed: s.failures.total(),
        skipped_at_cap: s.skipped.load(std::sync::atomic::Ordering::Relaxed),
        elapsed_s: phase.elapsed.as_secs_f64(),
        logins_per_s: per_second(ok, phase.elapsed),
        failures: s.failures.snapshot(),
        latency: s.latency.summary(),
        phases: None,
    }
}
