//! The results of a run: one serialisable [`Report`] written as JSON with
//! `--json`, and printed as a table on stdout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::client::{Mech, TlsMode};
use crate::probe::ServerSummary;
use crate::run::RegisterSummary;
use crate::stats::LatencySummary;

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub scenario: &'static str,
    /// Seconds since the Unix epoch at the start of the run.
    pub started_at: u64,
    pub config: RunConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register: Option<RegisterSummary>,
    /// The logins of the run (all of them for `login`, the set-up phase
    /// for the others).
    pub login: LoginReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat: Option<MessagesReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub muc: Option<MessagesReport>,
    /// The server process over the measured phase, with `--server-pid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerSummary>,
    /// CPU used by jackdaw-load itself over the whole run; near 100 × its
    /// cores means the generator, not the server, was the limit.
    pub generator_cpu_percent: f64,
    /// CPU used on the machine by everything else (other processes, the
    /// kernel's share not charged to either) over the run, in % of one
    /// core. Figures measured while this is high are not comparable.
    pub other_cpu_percent: f64,
    /// Set when the scenario could not run to the end.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RunConfig {
    pub server: String,
    pub domain: String,
    pub users: u64,
    pub tls: TlsMode,
    pub mech: Mech,
    pub arrival_rate: Option<f64>,
    pub duration_s: f64,
    pub concurrency: usize,
    /// Messages per second per sender (chat, muc).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct LoginReport {
    pub attempts: u64,
    pub ok: u64,
    pub failed: u64,
    /// Arrivals not started because `--concurrency` logins were in progress.
    pub skipped_at_cap: u64,
    pub elapsed_s: f64,
    pub logins_per_s: f64,
    pub failures: BTreeMap<String, u64>,
    /// Connect to bound resource and initial presence sent.
    pub latency: LatencySummary,
    /// Parts of the latency, for `login`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases: Option<PhaseLatencies>,
}

#[derive(Debug, Serialize)]
pub struct PhaseLatencies {
    pub connect: LatencySummary,
    pub tls: LatencySummary,
    pub auth: LatencySummary,
    pub bind: LatencySummary,
}

/// Chat or MUC traffic.
#[derive(Debug, Default, Serialize)]
pub struct MessagesReport {
    pub sessions: u64,
    pub senders: u64,
    pub elapsed_s: f64,
    pub sent: u64,
    /// Receptions (for MUC each message counts once per occupant).
    pub delivered: u64,
    /// What the server should have delivered: sent, or sent × occupants.
    pub expected: u64,
    /// Error replies (`<message type='error'/>`).
    pub bounced: u64,
    /// expected − delivered − bounced at the end of the drain.
    pub lost: u64,
    pub sent_per_s: f64,
    pub delivered_per_s: f64,
    /// Sessions the server closed during the traffic phase.
    pub dropped_sessions: u64,
    pub latency: LatencySummary,
}

#[derive(Debug, Default, Serialize)]
pub struct IdleReport {
    pub sessions: u64,
    pub held_s: f64,
    /// Sessions the server closed while they were held.
    pub dropped_sessions: u64,
    pub rss_before_kib: Option<u64>,
    pub rss_hold_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    /// (RSS at hold − RSS before) / sessions.
    pub rss_per_session_kib: Option<f64>,
}

impl Report {
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self).context("serialising the report")?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let c = &self.config;
        let _ = writeln!(
            t,
            "jackdaw-load {} · {} ({}) · {} · {} · {} users · {} s",
            self.scenario,
            c.server,
            c.domain,
            serde_plain(&c.tls),
            serde_plain(&c.mech),
            c.users,
            c.duration_s
        );
        let row = |t: &mut String, k: &str, v: String| {
            let _ = writeln!(t, "  {k:<22} {v}");
        };
        if let Some(r) = &self.register {
            row(
                &mut t,
                "registered",
                format!(
                    "{} new, {} existing, {} failed",
                    r.created,
                    r.existing,
                    r.failures.values().sum::<u64>()
                ),
            );
        }
        let l = &self.login;
        let label = if self.scenario == "login" {
            "logins"
        } else {
            "logins (set-up)"
        };
        row(
            &mut t,
            label,
            format!(
                "{} ok of {} in {:.2} s = {:.1}/s",
                l.ok, l.attempts, l.elapsed_s, l.logins_per_s
            ),
        );
        if l.skipped_at_cap > 0 {
            row(&mut t, "skipped at cap", l.skipped_at_cap.to_string());
        }
        row(&mut t, "login latency", l.latency.line());
        if let Some(p) = &l.phases {
            row(&mut t, "  connect", p.connect.line());
            row(&mut t, "  tls", p.tls.line());
            row(&mut t, "  auth", p.auth.line());
            row(&mut t, "  bind+presence", p.bind.line());
        }
        for (reason, n) in &l.failures {
            row(&mut t, "login failure", format!("{n} × {reason}"));
        }
        for (what, m) in [("chat", &self.chat), ("muc", &self.muc)] {
            let Some(m) = m else { continue };
            row(
                &mut t,
                &format!("{what} sessions"),
                format!("{} ({} sending)", m.sessions, m.senders),
            );
            row(
                &mut t,
                "sent",
                format!("{} in {:.2} s = {:.1}/s", m.sent, m.elapsed_s, m.sent_per_s),
            );
            row(
                &mut t,
                "delivered",
                format!(
                    "{} of {} expected = {:.1}/s",
                    m.delivered, m.expected, m.delivered_per_s
                ),
            );
            row(&mut t, "lost / bounced", format!("{} / {}", m.lost, m.bounced));
            if m.dropped_sessions > 0 {
                row(&mut t, "dropped sessions", m.dropped_sessions.to_string());
            }
            row(&mut t, "end-to-end latency", m.latency.line());
        }
        if let Some(i) = &self.idle {
            row(
                &mut t,
                "idle sessions",
                format!("{} held {:.1} s", i.sessions, i.held_s),
            );
            if i.dropped_sessions > 0 {
                row(&mut t, "dropped sessions", i.dropped_sessions.to_string());
            }
            let kib = |v: Option<u64>| v.map(mib).unwrap_or_else(|| "n/a (no --server-pid)".into());
            row(&mut t, "server RSS before", kib(i.rss_before_kib));
            row(&mut t, "server RSS at hold", kib(i.rss_hold_kib));
            row(&mut t, "server RSS after close", kib(i.rss_after_kib));
            row(
                &mut t,
                "RSS per session",
                i.rss_per_session_kib
                    .map(|v| format!("{v:.1} KiB"))
                    .unwrap_or_else(|| "n/a".into()),
            );
        }
        if let Some(s) = &self.server {
            row(
                &mut t,
                "server",
                format!(
                    "pid {}: cpu {:.1}% avg ({:.2} s), rss peak {}, final {}",
                    s.pid,
                    s.cpu_avg_percent,
                    s.cpu_seconds,
                    mib(s.rss_peak_kib),
                    mib(s.rss_final_kib)
                ),
            );
        }
        row(
            &mut t,
            "generator",
            format!("cpu {:.1}% avg over the run", self.generator_cpu_percent),
        );
        row(
            &mut t,
            "rest of the machine",
            format!(
                "cpu {:.1}%{}",
                self.other_cpu_percent,
                if self.other_cpu_percent > 20.0 {
                    "  (WARNING: other load competed for the cores; figures not comparable)"
                } else {
                    ""
                }
            ),
        );
        if let Some(e) = &self.error {
            row(&mut t, "ERROR", e.clone());
        }
        t
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A unit enum's serde name (`starttls`, `SCRAM-SHA-256`).
fn serde_plain<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `3 × auth: not-authorized, 1 × connect: refused` for messages.
pub fn reasons(failures: &BTreeMap<String, u64>) -> String {
    failures
        .iter()
        .map(|(r, n)| format!("{n} × {r}"))
        .collect::<Vec<_>>()
        .join(", ")
}
