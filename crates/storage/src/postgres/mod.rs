//! The PostgreSQL storage backend (`storage = "sql"` with
//! `sql.driver = "PostgreSQL"`): a connection pool, schema migrations, and
//! the trait implementations in the submodules, one per store, which keep
//! the SQLite backend's semantics exactly (ordering, quotas, versions,
//! paging); `tests/conformance.rs` runs the same scenarios against both.
//!
//! # Connections
//!
//! A deadpool pool of tokio-postgres connections. Each call takes a
//! connection for the duration of its statements or transaction. A
//! connection the server closed (restart, failover) is noticed when it is
//! next taken and replaced, so a database that was down for a while is
//! used again as soon as it is back; meanwhile calls fail fast with
//! `StorageError::Backend` (users get temporary errors), bounded by the
//! pool's wait and connect timeouts. Connections are in clear text unless
//! [`PgTls::Verified`] asks for TLS (rustls; the server's certificate is
//! checked against the system's roots or a given CA file, and its name
//! against the host we connect to).
//!
//! # Concurrency
//!
//! SQLite serialises every write; PostgreSQL runs transactions
//! concurrently under READ COMMITTED. Where the SQLite code reads and then
//! writes (the offline quota, push eviction) we take a transaction-level
//! advisory lock per user, so the same interleavings are impossible here;
//! OAuth refresh rotation locks the token row (`SELECT ... FOR UPDATE`).

mod accounts;
mod archive;
mod blocklist;
mod muc;
mod oauth;
mod offline;
mod push;
mod roster;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use jackdaw_core::storage::{StorageError, StorageResult, Stores};
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The connection options (host, port, user, password, dbname, ...); its
/// Debug never shows the password.
pub use tokio_postgres::Config as PgConfig;

/// Schema migrations, in order; migration `i` (0-based) brings the schema
/// to version `i + 1`, recorded as a row of `jackdaw_schema_version`.
/// Append only: never edit a migration that has shipped.
const MIGRATIONS: &[&str] = &[include_str!("migrations/0001_initial.sql")];

/// Key of the advisory lock held while migrating, so two servers (or a
/// server and `jackdaw user add`) starting at once on a new database do not
/// both apply the same migration. Arbitrary; "jackdaw" in ASCII.
const MIGRATION_LOCK: i64 = 0x006a_6163_6b64_6177;

/// Classes of the two-key advisory locks taken per user (the second key
/// is a hash of the user); the two-key space is distinct from the
/// one-key space of `MIGRATION_LOCK`.
const LOCK_OFFLINE: i32 = 1;
const LOCK_PUSH: i32 = 2;

/// Connections kept open at most, unless the config says otherwise.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// How long a call waits for a free connection, for a new connection to
/// be made, or for a statement, before it fails with `Backend`.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const STATEMENT_TIMEOUT_MS: u32 = 30_000;

/// Whether connections use TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PgTls {
    /// Clear text.
    #[default]
    Off,
    /// TLS required, the certificate verified against the PEM roots in
    /// `ca_file`, or the system's roots without one.
    Verified { ca_file: Option<PathBuf> },
}

/// Failures connecting at start; runtime failures are `StorageError`s.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("cannot set up the connection pool: {0}")]
    Pool(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("database schema migration failed: {0}")]
    Migration(String),
    /// The database was migrated by a newer Jackdaw; refuse rather than guess.
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew { found: i64, supported: usize },
}

/// PostgreSQL implementation of every store. Cheap to clone: clones share
/// one pool.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// For Debug and messages: where we connect, without the password.
    target: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.inner.target)
            .finish_non_exhaustive()
    }
}

/// "user@host:port/dbname", for messages; never the password.
pub fn describe(config: &PgConfig) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{}:{}/{}",
        config.get_user().unwrap_or(""),
        if hosts.is_empty() {
            "localhost".to_string()
        } else {
            hosts.join(",")
        },
        port,
        config.get_dbname().unwrap_or("")
    )
}

impl PostgresStore {
    /// Connects (one connection, to check the database is there) and
    /// brings the schema up to date. `pool_size` connections at most are
    /// opened later, as calls need them.
    pub async fn connect(config: PgConfig, pool_size: usize) -> Result<Self, PostgresError> {
        Self::connect_with(config, pool_size, &PgTls::Off).await
    }

    /// [`connect`](Self::connect), with TLS as `tls` says.
    pub async fn connect_with(
        config: PgConfig,
        pool_size: usize,
        tls: &PgTls,
    ) -> Result<Self, PostgresError> {
        let mut config = config;
        let target = describe(&config);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_options().is_none() {
            // Every await on the backend is bounded (ARCHITECTURE.md).
            config.options(format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"));
        }
        if config.get_application_name().is_none() {
            config.application_name("jackdaw");
        }
        let manager_config = ManagerConfig {
            // A connection whose socket the server closed reports it
            // (`is_closed`) and is replaced; no query per checkout.
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls {
            PgTls::Off => Manager::from_config(config, NoTls, manager_config),
            PgTls::Verified { ca_file } => {
                // Require: never fall back to clear text.
                config.ssl_mode(SslMode::Require);
                let rustls = rustls_config(ca_file.as_deref())?;
                Manager::from_config(config, MakeRustlsConnect::new(rustls), manager_config)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT + Duration::from_secs(1)))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|e| PostgresError::Pool(e.to_string()))?;
        let mut client = pool
            .get()
            .await
            .map_err(|e| PostgresError::Connect(pool_error_message(&e)))?;
        migrate(&mut client).await?;
        drop(client);
        tracing::debug!(%target, "connected to PostgreSQL storage");
        Ok(PostgresStore {
            inner: Arc::new(Inner { pool, target }),
        })
    }

    /// Every store, backed by this database.
    pub fn stores(&self) -> Stores {
        Stores {
            accounts: Arc::new(self.clone()),
            rosters: Arc::new(self.clone()),
            offline: Arc::new(self.clone()),
            muc: Arc::new(self.clone()),
            archive: Arc::new(self.clone()),
            push: Arc::new(self.clone()),
            blocklist: Arc::new(self.clone()),
            oauth: Arc::new(self.clone()),
        }
    }

    /// Closes the pool: its connections are dropped, and every later call
    /// fails. For clean shutdown and tests.
    pub fn close(&self) {
        self.inner.pool.close();
    }

    /// A connection from the pool; `op` names the operation in errors.
    async fn client(&self, op: &str) -> StorageResult<deadpool_postgres::Client> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| StorageError::Backend(format!("postgres {op}: {}", pool_error_message(&e))))
    }
}

/// A rustls client config trusting `ca_file`'s certificates, or the
/// system's. Its own ring provider, so it needs no process-wide default.
fn rustls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, PostgresError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| PostgresError::Tls(format!("cannot read {}: {e}", path.display())))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| PostgresError::Tls(format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| PostgresError::Tls(format!("{}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(PostgresError::Tls(format!(
                    "no PEM certificate in {}",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(PostgresError::Tls(
                    "no system root certificates found; name a CA file".to_string(),
                ));
            }
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| PostgresError::Tls(e.to_string()))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

fn pool_error_message(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => error_message(e),
        other => other.to_string(),
    }
}

/// The error without DETAIL lines, which may quote row values (a
/// duplicate key's value): the log gets the condition and the SQLSTATE,
/// never message bodies or token hashes.
fn error_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => {
            // "error connecting to server: Connection refused (os error
            // 111)": the source carries the useful part.
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                source = s.source();
            }
            msg
        }
    }
}

/// Applies the migrations the database has not seen yet, all in one
/// transaction holding an advisory lock: a second process waits for the
/// first, then finds nothing left to do.
async fn migrate(client: &mut deadpool_postgres::Client) -> Result<(), PostgresError> {
    let err = |e: tokio_postgres::Error| PostgresError::Migration(error_message(&e));
    let tx = client.transaction().await.map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS jackdaw_schema_version (
             version    INTEGER PRIMARY KEY,
             applied_at BIGINT  NOT NULL DEFAULT (floor(extract(epoch FROM now()))::BIGINT)
         )",
    )
    .await
    .map_err(err)?;
    let current: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM jackdaw_schema_version",
            &[],
        )
        .await
        .map_err(err)?
        .get(0);
    let current = usize::try_from(current)
        .ok()
        .filter(|&v| v <= MIGRATIONS.len())
        .ok_or(PostgresError::SchemaTooNew {
            found: i64::from(current),
            supported: MIGRATIONS.len(),
        })?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let version = (index + 1) as i32;
        tx.batch_execute(sql)
            .await
            .map_err(|e| PostgresError::Migration(format!("to version {version}: {}", error_message(&e))))?;
        tx.execute(
            "INSERT INTO jackdaw_schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(err)?;
        tracing::info!(version, "applied PostgreSQL schema migration");
    }
    tx.commit().await.map_err(err)
}

/// Turns tokio-postgres errors into `StorageError::Backend` naming the
/// operation (see `error_message` for what is left out).
trait Context<T> {
    fn context(self, op: &str) -> StorageResult<T>;
}

impl<T> Context<T> for Result<T, tokio_postgres::Error> {
    fn context(self, op: &str) -> StorageResult<T> {
        self.map_err(|e| StorageError::Backend(format!("postgres {op}: {}", error_message(&e))))
    }
}

/// Reads a non-negative integer column into an unsigned type, treating
/// anything else as corruption instead of wrapping around.
fn to_unsigned<U: TryFrom<i64>>(value: i64, what: &str) -> StorageResult<U> {
    U::try_from(value).map_err(|_| StorageError::Backend(format!("postgres: invalid {what} {value}")))
}

/// Takes the per-user advisory lock `class` until the transaction ends.
async fn lock_user(
    tx: &deadpool_postgres::Transaction<'_>,
    class: i32,
    key: &str,
    op: &str,
) -> StorageResult<()> {
    tx.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", &[&class, &key])
        .await
        .context(op)?;
    Ok(())
}
