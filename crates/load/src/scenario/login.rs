//! `login`: connect, secure, authenticate, bind, send initial presence and
//! close, over and over, cycling through the accounts. With
//! `--arrival-rate` it is open-loop (arrivals do not wait for the server;
//! those beyond `--concurrency` in progress are counted as skipped), without
//! it closed-loop (`--concurrency` logins always in progress: saturation).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::cli::LoginArgs;
use crate::client::Conn;
use crate::report::{PhaseLatencies, Report};
use crate::run::{Full, LoginStats, Run, arrivals};
use crate::stats::{SharedHistogram, per_second};

#[derive(Default)]
struct Phases {
    connect: SharedHistogram,
    tls: SharedHistogram,
    auth: SharedHistogram,
    bind: SharedHistogram,
}

pub async fn run(run: &Run, args: &LoginArgs, report: &mut Report) -> anyhow::Result<()> {
    let stats = Arc::new(LoginStats::default());
    let phases = Arc::new(Phases::default());
    let progress = run.progress("login", {
        let s = stats.clone();
        move || s.line()
    });
    let before = run.probe.as_ref().and_then(|p| p.snapshot());
    let start = Instant::now();
    let until = start + run.duration();
    let n = run.users.len() as u64;
    let full = if run.common.arrival_rate.is_some() {
        Full::Skip
    } else {
        Full::Wait
    };
    arrivals(
        run.common.arrival_rate,
        run.common.concurrency,
        args.max_logins.unwrap_or(u64::MAX),
        Some(until),
        full,
        Some(&stats.skipped),
        |k| {
            let (target, users, stats, phases) = (
                run.target.clone(),
                run.users.clone(),
                stats.clone(),
                phases.clone(),
            );
            // A resource per connection: logins of one account overlap.
            let resource = format!("{}-{k}", run.common.resource);
            async move {
                let user = &users[(k % n) as usize];
                stats.attempts.fetch_add(1, Ordering::Relaxed);
                match Conn::login(&target, user, &resource).await {
                    Ok((conn, t)) => {
                        stats.ok.fetch_add(1, Ordering::Relaxed);
                        stats.latency.record(t.total);
                        phases.connect.record(t.connect);
                        phases.tls.record(t.tls);
                        phases.auth.record(t.auth);
                        phases.bind.record(t.bind);
                        conn.close(Duration::from_secs(5)).await;
                    }
                    Err(e) => stats.failures.add(e.reason()),
                }
            }
        },
    )
    .await;
    let elapsed = start.elapsed();
    let after = run.probe.as_ref().and_then(|p| p.snapshot());
    drop(progress);

    let ok = stats.ok.load(Ordering::Relaxed);
    report.login = crate::report::LoginReport {
        attempts: stats.attempts.load(Ordering::Relaxed),
        ok,
        failed: stats.failures.total(),
        skipped_at_cap: stats.skipped.load(Ordering::Relaxed),
        elapsed_s: elapsed.as_secs_f64(),
        logins_per_s: per_second(ok, elapsed),
        failures: stats.failures.snapshot(),
        latency: stats.latency.summary(),
        phases: Some(PhaseLatencies {
            connect: phases.connect.summary(),
            tls: phases.tls.summary(),
            auth: phases.auth.summary(),
            bind: phases.bind.summary(),
        }),
    };
    report.server = run.probe.as_ref().map(|p| p.summary(before, after));
    if ok == 0 && report.login.attempts > 0 {
        anyhow::bail!(
            "no login succeeded: {}",
            crate::report::reasons(&report.login.failures)
        );
    }
    Ok(())
}
