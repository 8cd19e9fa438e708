//! What every scenario shares: the target and accounts, the server probe,
//! arrivals at a rate under a concurrency cap, logging users in, and the
//! once-a-second progress line.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::cli::Common;
use crate::client::{Conn, Target, User};
use crate::probe::Probe;
use crate::sasl::ScramCache;
use crate::stats::{Failures, SharedHistogram};
use crate::tls;

/// The state of one run.
pub struct Run {
    pub target: Arc<Target>,
    pub users: Arc<Vec<User>>,
    pub common: Common,
    /// The zero of message timestamps: sender and receiver share a clock
    /// because both are in this process.
    pub epoch: Instant,
    pub probe: Option<Arc<Probe>>,
}

impl Run {
    pub async fn new(common: Common) -> anyhow::Result<Run> {
        common.validate()?;
        let addr = common.server_addr().await?;
        let tls_config = tls::client_config(
            common.ca.as_deref(),
            common.tls == crate::client::TlsMode::Direct,
            common.tls_resumption,
        )?;
        let sources = (1..=common.source_addrs)
            .map(|n| IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
            .collect();
        let target = Target {
            addr,
            domain: common.domain.clone(),
            tls: common.tls,
            mech: common.mech,
            tls_config,
            sources,
            next_source: AtomicUsize::new(0),
            step_timeout: Duration::from_secs_f64(common.step_timeout),
        };
        let users = (0..common.users)
            .map(|k| {
                let i = (common.first_index + k).to_string();
                User {
                    node: common.user_pattern.replace("{i}", &i),
                    password: match &common.password {
                        Some(p) => p.clone(),
                        None => common.password_pattern.replace("{i}", &i),
                    },
                    scram: ScramCache::default(),
                }
            })
            .collect();
        let probe = match common.server_pid {
            Some(pid) => Some(Arc::new(Probe::start(pid)?)),
            None => None,
        };
        Ok(Run {
            target: Arc::new(target),
            users: Arc::new(users),
            common,
            epoch: Instant::now(),
            probe,
        })
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.common.duration)
    }

    /// Creates every account with XEP-0077 (`--register`).
    pub async fn register_all(&self) -> anyhow::Result<RegisterSummary> {
        let created = Arc::new(AtomicU64::new(0));
        let existing = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Failures::default());
        let n = self.users.len() as u64;
        let progress = self.progress("register", {
            let (c, e, f) = (created.clone(), existing.clone(), failures.clone());
            move || {
                format!(
                    "created {} existing {} failed {}",
                    c.load(Ordering::Relaxed),
                    e.load(Ordering::Relaxed),
                    f.total()
                )
            }
        });
        arrivals(
            self.common.arrival_rate,
            self.common.concurrency,
            n,
            None,
            Full::Wait,
            None,
            |k| {
                let (target, users) = (self.target.clone(), self.users.clone());
                let (c, e, f) = (created.clone(), existing.clone(), failures.clone());
                async move {
                    let user = &users[k as usize];
                    match Conn::register(&target, user).await {
                        Ok(true) => c.fetch_add(1, Ordering::Relaxed),
                        Ok(false) => e.fetch_add(1, Ordering::Relaxed),
                        Err(err) => {
                            f.add(err.reason());
                            0
                        }
                    };
                }
            },
        )
        .await;
        drop(progress);
        let summary = RegisterSummary {
            created: created.load(Ordering::Relaxed),
            existing: existing.load(Ordering::Relaxed),
            failures: failures.snapshot(),
        };
        let failed: u64 = summary.failures.values().sum();
        if failed == n {
            anyhow::bail!(
                "registration failed for every account: {}",
                crate::report::reasons(&summary.failures)
            );
        }
        if failed > 0 {
            eprintln!(
                "warning: registration failed for {failed} of {n} accounts: {}",
                crate::report::reasons(&summary.failures)
            );
        }
        Ok(summary)
    }

    /// Logs every user in once (resource `<prefix>-<index>`), at the
    /// arrival rate, at most `--concurrency` at a time. Returns the
    /// connections by user index (None where the login failed).
    pub async fn login_all(&self, count: u64) -> LoginPhase {
        let stats = Arc::new(LoginStats::default());
        let slots: Arc<Vec<std::sync::Mutex<Option<Conn>>>> =
            Arc::new((0..count).map(|_| std::sync::Mutex::new(None)).collect());
        let progress = self.progress("login", {
            let s = stats.clone();
            move || s.line()
        });
        let start = Instant::now();
        arrivals(
            self.common.arrival_rate,
            self.common.concurrency,
            count,
            None,
            Full::Wait,
            None,
            |k| {
                let (target, users, stats, slots) = (
                    self.target.clone(),
                    self.users.clone(),
                    stats.clone(),
                    slots.clone(),
                );
                let resource = format!("{}-{k}", self.common.resource);
                async move {
                    let user = &users[k as usize];
                    stats.attempts.fetch_add(1, Ordering::Relaxed);
                    match Conn::login(&target, user, &resource).await {
                        Ok((conn, t)) => {
                            stats.ok.fetch_add(1, Ordering::Relaxed);
                            stats.latency.record(t.total);
                            *slots[k as usize].lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
                        }
                        Err(e) => stats.failures.add(e.reason()),
                    }
                }
            },
        )
        .await;
        drop(progress);
        let elapsed = start.elapsed();
        // Invariant: every task holding a clone has finished (arrivals
        // waits for them), so this is the last reference.
        let conns = Arc::try_unwrap(slots)
            .map(|v| {
                v.into_iter()
                    .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
                    .collect()
            })
            .unwrap_or_default();
        LoginPhase {
            conns,
            stats,
            elapsed,
        }
    }

    /// Prints `what` and `line()` to stderr every second until dropped,
    /// with the server's CPU and RSS when sampled.
    pub fn progress(&self, what: &'static str, line: impl Fn() -> String + Send + 'static) -> Progress {
        if self.common.quiet {
            return Progress(None);
        }
        let probe = self.probe.clone();
        let start = Instant::now();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let server = probe
                    .as_ref()
                    .and_then(|p| p.recent())
                    .map(|(cpu, rss)| format!(" | server cpu {cpu:.0}% rss {:.1} MiB", rss as f64 / 1024.0))
                    .unwrap_or_default();
                eprintln!(
                    "[{:>5.1}s] {what}: {}{server}",
                    start.elapsed().as_secs_f64(),
                    line()
                );
            }
        });
        Progress(Some(task))
    }
}

/// Stops the progress line when dropped.
pub struct Progress(Option<tokio::task::JoinHandle<()>>);

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct RegisterSummary {
    pub created: u64,
    pub existing: u64,
    pub failures: std::collections::BTreeMap<String, u64>,
}

/// Login counters, live for the progress line.
#[derive(Default)]
pub struct LoginStats {
    pub attempts: AtomicU64,
    pub ok: AtomicU64,
    /// Arrivals not started because --concurrency logins were in progress.
    pub skipped: AtomicU64,
    pub failures: Failures,
    pub latency: SharedHistogram,
}

impl LoginStats {
    pub fn line(&self) -> String {
        let skipped = self.skipped.load(Ordering::Relaxed);
        format!(
            "attempts {} ok {} failed {}{}",
            self.attempts.load(Ordering::Relaxed),
            self.ok.load(Ordering::Relaxed),
            self.failures.total(),
            if skipped > 0 {
                format!(" skipped(cap) {skipped}")
            } else {
                String::new()
            }
        )
    }
}

/// The result of [`Run::login_all`].
pub struct LoginPhase {
    pub conns: Vec<Option<Conn>>,
    pub stats: Arc<LoginStats>,
    pub elapsed: Duration,
}

/// What to do with an arrival when `concurrency` tasks are in progress.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Wait for one to finish (setting up sessions: every user must log in).
    Wait,
    /// Count it as skipped (an open-loop login test must not slow down).
    Skip,
}

/// Starts `task(k)` for k = 0, 1, … up to `count`: at `rate` per second
/// (or as soon as a slot is free without a rate), at most `concurrency` at
/// once, until `until` if given. Returns once every started task finished.
pub async fn arrivals<F, Fut>(
    rate: Option<f64>,
    concurrency: usize,
    count: u64,
    until: Option<Instant>,
    full: Full,
    skipped: Option<&AtomicU64>,
    task: F,
) where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(concurrency));
    let start = tokio::time::Instant::now();
    let mut k = 0u64;
    while k < count {
        if let Some(r) = rate {
            let at = start + Duration::from_secs_f64(k as f64 / r);
            if until.is_some_and(|u| at.into_std() >= u) {
                break;
            }
            tokio::time::sleep_until(at).await;
        }
        if until.is_some_and(|u| Instant::now() >= u) {
            break;
        }
        let permit = match full {
            Full::Skip => match slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    if let Some(s) = skipped {
                        s.fetch_add(1, Ordering::Relaxed);
                    }
                    k += 1;
                    continue;
                }
            },
            Full::Wait => {
                let acquire = slots.clone().acquire_owned();
                let permit = match until {
                    Some(u) => match tokio::time::timeout_at(u.into(), acquire).await {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    None => acquire.await,
                };
                // Invariant: the semaphore is never closed.
                permit.expect("semaphore open")
            }
        };
        let fut = task(k);
        tokio::spawn(async move {
            fut.await;
            drop(permit);
        });
        k += 1;
    }
    // Every task holds a permit until it ends: taking them all waits for all.
    let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}
