//! Picks the concrete backends the config names: the only place that knows
//! about SQLite and about each module's existence.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use jackdaw_core::auth::Authenticator;
use jackdaw_core::auth::internal::InternalAuthenticator;
use jackdaw_core::config::Config;
use jackdaw_core::metrics::Metrics;
use jackdaw_core::storage::Stores;
use jackdaw_modules::auth_http::HttpAuthenticator;
use jackdaw_storage::SqliteStore;

pub struct Backends {
    pub db: SqliteStore,
    pub metrics: Arc<Metrics>,
    pub stores: Stores,
    pub auth: HashMap<String, Arc<dyn Authenticator>>,
}

pub fn open(config: &Config) -> Result<Backends> {
    let g = &config.global;
    std::fs::create_dir_all(&g.data_path)
        .with_context(|| format!("creating data_path {}", g.data_path.display()))?;
    let db = SqliteStore::open(&g.database_path())
        .with_context(|| format!("opening the database {}", g.database_path().display()))?;
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
