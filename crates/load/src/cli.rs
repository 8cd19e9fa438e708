//! Command-line options. Common options may come before or after the
//! scenario name (`global`), so `jackdaw-load --users 50 chat --rate 10`
//! and `jackdaw-load chat --users 50 --rate 10` mean the same.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

use crate::client::{Mech, TlsMode};

#[derive(Debug, Parser)]
#[command(
    name = "jackdaw-load",
    version,
    about = "Load generator for XMPP servers (loopback only)",
    long_about = "Load generator for XMPP servers: Jackdaw, Prosody, ejabberd or any RFC 6120 server.\n\
                  Connects only to loopback addresses. Every run is bounded by --duration and by a hard\n\
                  --timeout; a progress line goes to stderr every second, results to stdout and --json."
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Args)]
pub struct Common {
    /// Server address (host:port); must be a loopback address.
    #[arg(long, global = true, default_value = "127.0.0.1:5222")]
    pub server: String,
    /// The XMPP domain (stream `to`, JIDs, TLS server name).
    #[arg(long, global = true, default_value = "localhost")]
    pub domain: String,
    /// Number of accounts used.
    #[arg(long, global = true, default_value_t = 10)]
    pub users: u64,
    /// Username pattern; `{i}` is the account's index.
    #[arg(long, global = true, default_value = "user{i}")]
    pub user_pattern: String,
    /// Password pattern; `{i}` is the account's index.
    #[arg(long, global = true, default_value = "pass{i}")]
    pub password_pattern: String,
    /// One password for every account (instead of --password-pattern).
    #[arg(long, global = true)]
    pub password: Option<String>,
    /// Index of the first account.
    #[arg(long, global = true, default_value_t = 1)]
    pub first_index: u64,
    /// Transport security.
    #[arg(long, global = true, value_enum, default_value = "starttls")]
    pub tls: TlsMode,
    /// SASL mechanism.
    #[arg(long, global = true, value_enum, default_value = "SCRAM-SHA-256")]
    pub mech: Mech,
    /// Verify the server certificate against this PEM CA file (default:
    /// no verification, for self-signed loopback servers).
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// Let TLS resume sessions (off: every connection pays a full handshake).
    #[arg(long, global = true)]
    pub tls_resumption: bool,
    /// New connections per second (default: as fast as --concurrency allows).
    #[arg(long, global = true)]
    pub arrival_rate: Option<f64>,
    /// Length of the measured phase, in seconds.
    #[arg(long, global = true, default_value_t = 10.0)]
    pub duration: f64,
    /// Most logins in progress at once.
    #[arg(long, global = true, default_value_t = 50)]
    pub concurrency: usize,
    /// Sample this process's CPU and RSS from /proc (the server's PID).
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Write machine-readable results to this file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Create the accounts with XEP-0077 in-band registration first.
    #[arg(long, global = true)]
    pub register: bool,
    /// Hard deadline for the whole run, in seconds (default: duration + 120).
    #[arg(long, global = true)]
    pub timeout: Option<f64>,
    /// Longest wait for any single answer from the server, in seconds.
    #[arg(long, global = true, default_value_t = 30.0)]
    pub step_timeout: f64,
    /// Connect from 127.0.0.1 … 127.0.0.N in turn (more than ~28,000
    /// connections need more than one source address).
    #[arg(long, global = true, default_value_t = 0)]
    pub source_addrs: u8,
    /// Resource prefix for bound sessions.
    #[arg(long, global = true, default_value = "load")]
    pub resource: String,
    /// No progress line.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Connect, authenticate, bind, send initial presence, disconnect; repeat.
    Login(LoginArgs),
    /// Log every user in, then each sends messages to random others.
    Chat(ChatArgs),
    /// Hold every user's session open; measure the server's RSS per session.
    Idle(IdleArgs),
    /// One XEP-0045 room: occupants join, senders post, everyone receives.
    Muc(MucArgs),
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Stop after this many login attempts (default: only --duration).
    #[arg(long)]
    pub max_logins: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Messages per second each user sends.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Seconds to wait for messages in flight after sending stops.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
}

#[derive(Debug, Args)]
pub struct IdleArgs {
    /// Seconds to let the server settle before reading its RSS (after the
    /// logins, and after the sessions close).
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
}

#[derive(Debug, Args)]
pub struct MucArgs {
    /// The room's JID.
    #[arg(long, default_value = "bench@rooms.localhost")]
    pub room: String,
    /// Occupants (default: --users).
    #[arg(long)]
    pub occupants: Option<u64>,
    /// How many occupants send (the first ones).
    #[arg(long, default_value_t = 1)]
    pub senders: u64,
    /// Messages per second each sender posts.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Seconds to wait for messages in flight after sending stops.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
}

impl Common {
    /// Resolves `--server` and refuses anything that is not loopback: a
    /// load generator must never be pointed at someone else's machine.
    pub async fn server_addr(&self) -> anyhow::Result<SocketAddr> {
        let addrs: Vec<SocketAddr> = match self.server.parse::<SocketAddr>() {
            Ok(a) => vec![a],
            Err(_) => tokio::net::lookup_host(&self.server)
                .await
                .with_context(|| format!("--server {}: not an address (host:port)", self.server))?
                .collect(),
        };
        let Some(first) = addrs.first().copied() else {
            bail!("--server {}: resolves to no address", self.server);
        };
        if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            bail!(
                "--server {} ({}) is not a loopback address: jackdaw-load only connects to \
                 127.0.0.0/8 or ::1",
                self.server,
                bad.ip()
            );
        }
        Ok(first)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.users == 0 {
            bail!("--users must be at least 1");
        }
        if self.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        if !(self.duration > 0.0 && self.duration <= 86_400.0) {
            bail!("--duration must be between 0 and 86400 seconds");
        }
        if let Some(r) = self.arrival_rate
            && !(r > 0.0 && r.is_finite())
        {
            bail!("--arrival-rate must be positive");
        }
        if !self.user_pattern.contains("{i}") && self.users > 1 {
            bail!("--user-pattern needs {{i}} when --users > 1");
        }
        if self.step_timeout.is_nan() || self.step_timeout <= 0.0 {
            bail!("--step-timeout must be positive");
        }
        Ok(())
    }

    pub fn hard_timeout(&self) -> f64 {
        self.timeout.unwrap_or(self.duration + 120.0)
    }
}
