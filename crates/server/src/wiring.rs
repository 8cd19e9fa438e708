//! Picks the concrete backends the config names: the only place that knows
//! about SQLite and PostgreSQL and about each module's existence.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use jackdaw_core::auth::Authenticator;
use jackdaw_core::auth::internal::InternalAuthenticator;
use jackdaw_core::config::{Config, StorageChoice};
use jackdaw_core::metrics::Metrics;
use jackdaw_core::storage::Stores;
use jackdaw_modules::auth_http::HttpAuthenticator;
#[cfg(feature = "postgres")]
use jackdaw_storage::postgres::{DEFAULT_POOL_SIZE, PgConfig, PgTls, describe};
use jackdaw_storage::{Database, SqliteStore};

pub struct Backends {
    pub db: Database,
    pub metrics: Arc<Metrics>,
    pub stores: Stores,
    pub auth: HashMap<String, Arc<dyn Authenticator>>,
}

/// The connection options of `sql` (driver "PostgreSQL").
#[cfg(feature = "postgres")]
fn pg_config(sql: &jackdaw_core::config::SqlConfig) -> PgConfig {
    let mut c = PgConfig::new();
    c.host(sql.host.as_deref().unwrap_or("localhost"));
    c.port(sql.port.unwrap_or(5432));
    if let Some(db) = &sql.database {
        c.dbname(db);
    }
    if let Some(user) = &sql.username {
        c.user(user);
    }
    if let Some(password) = &sql.password {
        c.password(password);
    }
    c
}

pub async fn open(config: &Config) -> Result<Backends> {
    let g = &config.global;
    std::fs::create_dir_all(&g.data_path)
        .with_context(|| format!("creating data_path {}", g.data_path.display()))?;
    let db = match g.storage_choice() {
        StorageChoice::Sqlite(path) => Database::Sqlite(
            SqliteStore::open(&path).with_context(|| format!("opening the database {}", path.display()))?,
        ),
        #[cfg(not(feature = "postgres"))]
        StorageChoice::Postgres(_) => {
            bail!("storage = \"sql\" with PostgreSQL: this jackdaw was built without the postgres feature")
        }
        #[cfg(feature = "postgres")]
        StorageChoice::Postgres(sql) => {
            let pg = pg_config(sql);
            let target = describe(&pg);
            let tls = if sql.ssl {
                PgTls::Verified {
                    ca_file: sql.sslrootcert.clone(),
                }
            } else {
                PgTls::Off
            };
            let store = jackdaw_storage::PostgresStore::connect_with(
                pg,
                sql.pool_size.unwrap_or(DEFAULT_POOL_SIZE),
                &tls,
            )
            .await
            .with_context(|| format!("opening the PostgreSQL database {target} (option sql)"))?;
            tracing::info!(%target, tls = sql.ssl, "storage: PostgreSQL");
            Database::Postgres(store)
        }
    };
    let stores = db.stores();
    let metrics = Arc::new(Metrics::default());
    let mut auth: HashMap<String, Arc<dyn Authenticator>> = HashMap::new();
    for host in &config.hosts {
        let a: Arc<dyn Authenticator> = match host.authentication.as_str() {
            "internal_hashed" => Arc::new(InternalAuthenticator::new(stores.accounts.clone())),
            "http" => Arc::new(HttpAuthenticator::new(host, &metrics).map_err(anyhow::Error::msg)?),
            other => bail!("host {}: authentication = {other:?} is not available", host.name),
        };
        auth.insert(host.name.clone(), a);
    }
    Ok(Backends {
        db,
        metrics,
        stores,
        auth,
    })
}
