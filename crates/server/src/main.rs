//! The `jackdaw` binary: reads the TOML config (or uses the embedded
//! default), picks the backends, wires the modules and runs the listeners;
//! also the admin commands (`user`, `sessions`, `oauth2`, `check-config`,
//! `cert`).

mod admin_socket;
mod certs;
mod http;
mod run;
mod users;
mod wiring;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use jackdaw_core::config::Config;

#[derive(Parser)]
#[command(name = "jackdaw", version, about = "Jackdaw XMPP server")]
struct Cli {
    /// Config file (TOML). Without it: the embedded default (host
    /// localhost, data in ./data, loopback only).
    #[arg(long, short, global = true, env = "JACKDAW_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Run,
    /// Manage accounts of the built-in store.
    #[command(subcommand)]
    User(UserCommand),
    /// List the sessions of the running server.
    Sessions,
    /// Validate a config file without starting.
    CheckConfig { file: PathBuf },
    /// Certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// The OAuth authorization server (module http_oauth2).
    #[command(subcommand)]
    Oauth2(Oauth2Command),
}

#[derive(Subcommand)]
enum Oauth2Command {
    /// Add a new id_token signing key (used from the next start) and drop
    /// keys superseded more than a day ago.
    RotateKey,
    /// List the signing keys published in the JWKS.
    ListKeys,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create an account; the password is read from stdin.
    Add { jid: String },
    /// Change a password; the new one is read from stdin.
    Passwd { jid: String },
    /// Delete an account and everything stored for it.
    Del { jid: String },
    /// List the accounts of a host.
    List { host: String },
}

#[derive(Subcommand)]
enum CertCommand {
    /// (Re)generate the self-signed certificate for the configured hosts.
    Generate,
}

fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    let known = jackdaw_modules::known_options();
    match path {
        Some(p) => Ok(Config::load(p, &known)?),
        None => Ok(Config::embedded_default()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One crypto provider for every TLS user in the process (listeners,
    // outbound HTTP); an error only means it was already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jackdaw: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main(cli: Cli) -> Result<()> {
    if let Some(Command::CheckConfig { file }) = &cli.command {
        let config = Config::load(file, &jackdaw_modules::known_options())?;
        // Loading the modules checks their options too.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?
            .block_on(run::check_modules(&config))?;
        println!("{}: OK ({} host(s))", file.display(), config.hosts.len());
        return Ok(());
    }
    let config = load_config(cli.config.as_ref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => runtime.block_on(run::run(config)),
        Command::User(cmd) => {
            init_logging("warn");
            runtime.block_on(async {
                let backends = wiring::open(&config).await?;
                let r = users::run(cmd, &backends, &config.global.data_path).await;
                backends.db.checkpoint().await.ok();
                r
            })
        }
        Command::Sessions => runtime.block_on(async {
            let reply = admin_socket::ask(&config.global.data_path, &admin_socket::Request::Sessions).await?;
            let Some(reply) = reply else {
                anyhow::bail!(
                    "no running server answers on {}",
                    admin_socket::path(&config.global.data_path).display()
                );
            };
            for jid in reply.sessions {
                println!("{jid}");
            }
            Ok(())
        }),
        Command::Cert(CertCommand::Generate) => {
            init_logging("info");
            let names: Vec<String> = config.hosts.iter().map(|h| h.name.clone()).collect();
            let dir = config.global.certificates_dir();
            let p = certs::generate(&dir, &names[0], &names)?;
            println!("wrote {} and {}", p.cert.display(), p.key.display());
            Ok(())
        }
        Command::Oauth2(cmd) => {
            init_logging("warn");
            runtime.block_on(async {
                let backends = wiring::open(&config).await?;
                let r = oauth2_keys(cmd, &backends).await;
                backends.db.checkpoint().await.ok();
                r
            })
        }
        Command::CheckConfig { .. } => unreachable!("handled above"),
    }
}

/// Signing keys older than their successor by this much are dropped at
/// rotation: id_tokens are checked at login, not kept for long.
const SUPERSEDED_KEY_GRACE: i64 = 86_400;

async fn oauth2_keys(cmd: Oauth2Command, backends: &wiring::Backends) -> Result<()> {
    let store = &backends.stores.oauth;
    let now = jackdaw_core::stanza::now_secs() as i64;
    if let Oauth2Command::RotateKey = cmd {
        use jackdaw_modules::http_oauth2::keys;
        for algorithm in keys::ALGORITHMS {
            let key = keys::generate_signing_key(algorithm, now)?;
            store.add_signing_key(&key).await?;
            println!(
                "added {algorithm} signing key {} (signs from the next start)",
                key.kid
            );
            let of_algorithm: Vec<_> = store
                .signing_keys()
                .await?
                .into_iter()
                .filter(|k| k.algorithm == algorithm)
                .collect();
            for pair in of_algorithm.windows(2) {
                if pair[1].created_at + SUPERSEDED_KEY_GRACE <= now {
                    store.delete_signing_key(&pair[0].kid).await?;
                    println!("removed signing key {} (superseded)", pair[0].kid);
                }
            }
        }
    }
    for key in store.signing_keys().await? {
        println!("{}\t{}\tcreated {}", key.kid, key.algorithm, key.created_at);
    }
    Ok(())
}

/// Lets SIGHUP change the log filter of the running server.
static LOG_RELOAD: std::sync::OnceLock<
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
> = std::sync::OnceLock::new();

fn log_filter(filter: &str) -> tracing_subscriber::EnvFilter {
    // TLS library chatter stays at info unless a full filter asks for it.
    let base = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| {
            if filter.contains('=') {
                filter.to_string()
            } else {
                format!("{filter},rustls=info,hyper=info,hyper_util=info,reqwest=info,h2=info")
            }
        });
    // tokio-postgres logs every query's parameters at debug (password
    // hashes, keys, messages): only when a filter names it.
    let directives = if base.contains("tokio_postgres") {
        base
    } else {
        format!("{base},tokio_postgres=info")
    };
    tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// Logs to stderr; `log` is a level or a tracing filter, and RUST_LOG
/// overrides it.
pub fn init_logging(filter: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(log_filter(filter));
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = LOG_RELOAD.set(handle);
    }
}

/// Applies a new `log` option to the running server.
pub fn reload_logging(filter: &str) {
    if let Some(handle) = LOG_RELOAD.get()
        && let Err(e) = handle.reload(log_filter(filter))
    {
        tracing::error!(error = %e, "cannot change the log filter");
    }
}
