//! `jackdaw-load`: a load generator for XMPP servers (Jackdaw, Prosody,
//! ejabberd). See `jackdaw-load --help` and BENCHMARKS.md.
//!
//! Exit status: 0 when the scenario ran (individual failures are in the
//! report), 1 when it could not (no login succeeded, no MUC service, a
//! bad option), 2 when the hard deadline (`--timeout`) cut it short.

mod cli;
mod client;
mod probe;
mod report;
mod run;
mod sasl;
mod scenario;
mod stats;
mod tls;
mod xml;

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser as _;

use crate::cli::{Cli, Scenario};
use crate::report::{LoginReport, Report, RunConfig};
use crate::run::Run;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("jackdaw-load: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(real_main(cli));
    // Tasks cut off by the deadline may still hold sockets: do not wait.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

async fn real_main(cli: Cli) -> ExitCode {
    raise_fd_limit(cli.common.users);
    let scenario = match &cli.scenario {
        Scenario::Login(_) => "login",
        Scenario::Chat(_) => "chat",
        Scenario::Idle(_) => "idle",
        Scenario::Muc(_) => "muc",
    };
    let (rate, room) = match &cli.scenario {
        Scenario::Chat(a) => (Some(a.rate), None),
        Scenario::Muc(a) => (Some(a.rate), Some(a.room.clone())),
        _ => (None, None),
    };
    let c = &cli.common;
    let mut report = Report {
        tool: "jackdaw-load",
        version: env!("CARGO_PKG_VERSION"),
        scenario,
        started_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        config: RunConfig {
            server: c.server.clone(),
            domain: c.domain.clone(),
            users: c.users,
            tls: c.tls,
            mech: c.mech,
            arrival_rate: c.arrival_rate,
            duration_s: c.duration,
            concurrency: c.concurrency,
            rate,
            room,
        },
        register: None,
        login: LoginReport::default(),
        chat: None,
        idle: None,
        muc: None,
        server: None,
        generator_cpu_percent: 0.0,
        other_cpu_percent: 0.0,
        error: None,
    };
    let json = c.json.clone();
    let hard = Duration::from_secs_f64(c.hard_timeout().max(1.0));

    let run = match Run::new(cli.common).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("jackdaw-load: {e:#}");
            return ExitCode::from(1);
        }
    };
    let own_start = probe::own_snapshot();
    let machine_start = probe::machine_busy();
    let server_start = run.probe.as_ref().and_then(|p| p.snapshot());
    let outcome = tokio::time::timeout(hard, async {
        if run.common.register {
            report.register = Some(run.register_all().await?);
        }
        match &cli.scenario {
            Scenario::Login(a) => scenario::login::run(&run, a, &mut report).await,
            Scenario::Chat(a) => scenario::chat::run(&run, a, &mut report).await,
            Scenario::Idle(a) => scenario::idle::run(&run, a, &mut report).await,
            Scenario::Muc(a) => scenario::muc::run(&run, a, &mut report).await,
        }
    })
    .await;
    if let (Some(a), Some(b)) = (own_start, probe::own_snapshot()) {
        report.generator_cpu_percent = probe::cpu_percent(&a, &b);
        // Everything the machine did that neither we nor the server did.
        if let (Some(m0), Some(m1)) = (machine_start, probe::machine_busy()) {
            let server = match (server_start, run.probe.as_ref().and_then(|p| p.snapshot())) {
                (Some(s0), Some(s1)) => s1.cpu.saturating_sub(s0.cpu),
                _ => std::time::Duration::ZERO,
            };
            let other = (m1.saturating_sub(m0))
                .saturating_sub(b.cpu.saturating_sub(a.cpu))
                .saturating_sub(server);
            let wall = b.at.duration_since(a.at).as_secs_f64();
            if wall > 0.0 {
                report.other_cpu_percent = other.as_secs_f64() / wall * 100.0;
            }
        }
    }
    let code = match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            report.error = Some(format!("{e:#}"));
            ExitCode::from(1)
        }
        Err(_) => {
            report.error = Some(format!("hard deadline of {hard:?} reached (--timeout)"));
            ExitCode::from(2)
        }
    };
    print!("{}", report.table());
    if let Some(e) = &report.error {
        eprintln!("jackdaw-load: {e}");
    }
    if let Some(path) = json
        && let Err(e) = report.write_json(&path)
    {
        eprintln!("jackdaw-load: {e:#}");
        return ExitCode::from(1);
    }
    code
}

/// Raises the soft limit on open files to the hard limit: every session
/// is a socket, and the default soft limit (often 1024) is far below what
/// an idle test holds. Warns when even the hard limit is too low.
fn raise_fd_limit(users: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    if lim.rlim_cur < users + 64 {
        eprintln!(
            "warning: open-file limit {} is below --users {users}; raise it with `ulimit -n`",
            lim.rlim_cur
        );
    }
}
