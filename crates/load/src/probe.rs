//! Samples the server process from /proc every 500 ms: CPU time from
//! `/proc/PID/stat` (utime + stime, fields 14 and 15, in clock ticks) and
//! resident memory from `VmRSS` in `/proc/PID/status`.
//!
//! Scenarios also take a [`Snapshot`] at their phase boundaries (before
//! the first login, at hold, after close), so figures such as CPU over the
//! send phase or RSS per idle session do not depend on where the 500 ms
//! ticks happen to fall.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

const INTERVAL: Duration = Duration::from_millis(500);

/// One reading of the server process.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub at: Instant,
    /// User + system CPU time.
    pub cpu: Duration,
    pub rss_kib: u64,
}

/// The sampler of one process.
pub struct Probe {
    pid: u32,
    ticks_per_second: u64,
    samples: Arc<Mutex<Vec<Snapshot>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Probe {
    /// Checks that `pid` is readable and starts sampling it.
    pub fn start(pid: u32) -> anyhow::Result<Probe> {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let ticks_per_second = u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100);
        let first = read(pid, ticks_per_second).with_context(|| format!("--server-pid {pid}"))?;
        let samples = Arc::new(Mutex::new(vec![first]));
        let task = tokio::spawn({
            let samples = samples.clone();
            async move {
                let mut tick = tokio::time::interval(INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    // The server may have exited; the samples so far stand.
                    let Ok(s) = read(pid, ticks_per_second) else {
                        return;
                    };
                    samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                }
            }
        });
        Ok(Probe {
            pid,
            ticks_per_second,
            samples,
            task,
        })
    }

    /// A reading now (also kept with the periodic samples).
    pub fn snapshot(&self) -> Option<Snapshot> {
        let s = read(self.pid, self.ticks_per_second).ok()?;
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
        Some(s)
    }

    /// CPU % and RSS over the last second, for the progress line.
    pub fn recent(&self) -> Option<(f64, u64)> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let last = *samples.last()?;
        let earlier = samples
            .iter()
            .rev()
            .find(|s| last.at.duration_since(s.at) >= Duration::from_millis(900))
            .copied()
            .unwrap_or(samples[0]);
        Some((cpu_percent(&earlier, &last), last.rss_kib))
    }

    /// The server figures between two snapshots (the measured phase).
    pub fn summary(&self, from: Option<Snapshot>, to: Option<Snapshot>) -> ServerSummary {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        let last = samples.last().copied();
        ServerSummary {
            pid: self.pid,
            cpu_avg_percent: match (from, to) {
                (Some(a), Some(b)) => cpu_percent(&a, &b),
                _ => 0.0,
            },
            cpu_seconds: match (from, to) {
                (Some(a), Some(b)) => b.cpu.saturating_sub(a.cpu).as_secs_f64(),
                _ => 0.0,
            },
            rss_start_kib: samples.first().map(|s| s.rss_kib).unwrap_or(0),
            rss_peak_kib: peak,
            rss_final_kib: last.map(|s| s.rss_kib).unwrap_or(0),
            samples: samples.len(),
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the report says about the server process.
#[derive(Debug, Clone, Serialize)]
pub struct ServerSummary {
    pub pid: u32,
    /// Average CPU over the measured phase; 100 is one core.
    pub cpu_avg_percent: f64,
    pub cpu_seconds: f64,
    pub rss_start_kib: u64,
    pub rss_peak_kib: u64,
    pub rss_final_kib: u64,
    pub samples: usize,
}

/// CPU time spent by the whole machine (all processes, every namespace)
/// from the first line of /proc/stat: user, nice, system, irq, softirq,
/// steal. Compared with the server's and the generator's own time it shows
/// whether something else competed for the cores during a run.
pub fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy = f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7)?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tps = u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100);
    Some(Duration::from_secs_f64(busy as f64 / tps as f64))
}

/// A reading of this process (the generator), to tell whether the
/// generator itself ran out of CPU.
pub fn own_snapshot() -> Option<Snapshot> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    read(
        std::process::id(),
        u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100),
    )
    .ok()
}

pub fn cpu_percent(a: &Snapshot, b: &Snapshot) -> f64 {
    let wall = b.at.duration_since(a.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    b.cpu.saturating_sub(a.cpu).as_secs_f64() / wall * 100.0
}

fn read(pid: u32, ticks_per_second: u64) -> anyhow::Result<Snapshot> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/PID/stat")?;
    let ticks = parse_cpu_ticks(&stat)?;
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/PID/status")?;
    let rss_kib = parse_rss_kib(&status)?;
    Ok(Snapshot {
        at,
        cpu: Duration::from_secs_f64(ticks as f64 / ticks_per_second as f64),
        rss_kib,
    })
}

/// utime + stime from /proc/PID/stat. The command name (field 2) is in
/// parentheses and may itself hold spaces or ')', so fields are counted
/// from the last ')'.
fn parse_cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    let Some(close) = stat.rfind(')') else {
        bail!("unexpected /proc/PID/stat format")
    };
    // After ") " comes field 3 (state); utime and stime are fields 14, 15.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("/proc/PID/stat field {n}"))
    };
    Ok(field(14)? + field(15)?)
}

fn parse_rss_kib(status: &str) -> anyhow::Result<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/PID/status (a kernel thread or a zombie?)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_tricky_command_name() {
        let stat = "1234 (my ) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 70 0 0 20 0 8 0 1000 \
                    123456 789 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat).expect("parses"), 320);
    }

    #[test]
    fn parses_vmrss() {
        let status = "Name:\tjackdaw\nVmPeak:\t  100 kB\nVmRSS:\t   43210 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kib(status).expect("parses"), 43210);
    }

    #[tokio::test]
    async fn samples_this_process() {
        let probe = Probe::start(std::process::id()).expect("own /proc entry");
        let s = probe.snapshot().expect("snapshot");
        assert!(s.rss_kib > 0);
        assert!(probe.summary(None, Some(s)).rss_peak_kib > 0);
    }
}
