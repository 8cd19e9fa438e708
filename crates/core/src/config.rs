//! Configuration: one TOML file shaped like prosody.cfg.lua.
//!
//! Global options sit at the top level; `[hosts."example.com"]` tables hold
//! a virtual host's options and inherit (and may override) the global ones;
//! `[components."rooms.example.com"]` tables declare components. Option
//! names are Prosody's. Every key is checked against the keys core and the
//! modules declare, and each unknown key is reported with its file, line and
//! the nearest valid name, so a typo never silently changes behaviour.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::de::{DeTable, DeValue};

/// Keys that only make sense once, for the whole server.
pub const GLOBAL_KEYS: &[&str] = &[
    "interfaces",
    "c2s_ports",
    "c2s_direct_tls_ports",
    "http_ports",
    "https_ports",
    "component_ports",
    "data_path",
    "c2s_require_encryption",
    "c2s_stanza_size_limit",
    "c2s_preauth_stanza_size_limit",
    "c2s_timeout",
    "c2s_ping_interval",
    "c2s_ping_timeout",
    "c2s_max_connections",
    "certificates",
    "log",
    "limit_auth_period",
    "limit_auth_max",
    "consider_websocket_secure",
    "consider_bosh_secure",
    "cross_domain_websocket",
    "cross_domain_bosh",
    "http_cors_override",
    "http_external_url",
    "trusted_proxies",
    "bosh_max_inactivity",
    "bosh_max_polling",
    "bosh_max_requests",
    "bosh_max_wait",
    "smacks_hibernation_time",
    "smacks_max_unacked_stanzas",
    "smacks_max_ack_delay",
    "smacks_max_queue_size",
    "csi_queue_size",
    "storage",
    "sql",
    "hosts",
    "components",
];

/// Keys valid globally and per host (a host inherits the global value).
pub const HOST_KEYS: &[&str] = &[
    "authentication",
    "allow_registration",
    "modules_enabled",
    "modules_disabled",
    "admins",
    "enabled",
];

/// Keys valid in a component table, besides its module's options.
pub const COMPONENT_KEYS: &[&str] = &["module", "component_secret", "name", "modules_enabled"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Every problem found, each already formatted `file:line: message`.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

fn default_interfaces() -> Vec<String> {
    vec!["127.0.0.1".into()]
}
fn default_c2s_ports() -> Vec<u16> {
    vec![5222]
}
fn default_c2s_direct_tls_ports() -> Vec<u16> {
    vec![5223]
}
fn default_http_ports() -> Vec<u16> {
    vec![5280]
}
fn default_https_ports() -> Vec<u16> {
    vec![5281]
}
fn default_trusted_proxies() -> Vec<String> {
    vec!["127.0.0.1".into(), "::1".into()]
}
fn default_bosh_max_inactivity() -> u64 {
    60
}
fn default_bosh_max_polling() -> u64 {
    5
}
fn default_bosh_max_requests() -> u64 {
    2
}
fn default_bosh_max_wait() -> u64 {
    120
}
fn default_smacks_hibernation_time() -> u64 {
    600
}
fn default_smacks_max_ack_delay() -> u64 {
    30
}
fn default_smacks_max_queue_size() -> usize {
    500
}
fn default_csi_queue_size() -> usize {
    256
}
fn default_component_ports() -> Vec<u16> {
    vec![5347]
}
fn default_data_path() -> PathBuf {
    PathBuf::from("./data")
}
fn default_true() -> bool {
    true
}
fn default_stanza_limit() -> usize {
    256 * 1024
}
fn default_preauth_limit() -> usize {
    10 * 1024
}
fn default_c2s_timeout() -> u64 {
    60
}
fn default_ping_interval() -> u64 {
    300
}
fn default_ping_timeout() -> u64 {
    60
}
fn default_max_connections() -> usize {
    10_000
}
fn default_log() -> String {
    "info".into()
}
fn default_limit_auth_period() -> u64 {
    60
}
fn default_limit_auth_max() -> u32 {
    10
}
fn default_storage() -> String {
    "internal".into()
}

/// Server-wide options, Prosody names, defaults beside each field.
#[derive(Debug, Clone, Deserialize)]
pub struct GlobalConfig {
    #[serde(default = "default_interfaces")]
    pub interfaces: Vec<String>,
    #[serde(default = "default_c2s_ports")]
    pub c2s_ports: Vec<u16>,
    /// XEP-0368 direct TLS.
    #[serde(default = "default_c2s_direct_tls_ports")]
    pub c2s_direct_tls_ports: Vec<u16>,
    #[serde(default = "default_http_ports")]
    pub http_ports: Vec<u16>,
    /// The same routes over TLS (wss:// and https:// BOSH).
    #[serde(default = "default_https_ports")]
    pub https_ports: Vec<u16>,
    /// XEP-0114 listener, opened only when an external component exists.
    #[serde(default = "default_component_ports")]
    pub component_ports: Vec<u16>,
    #[serde(default = "default_data_path")]
    pub data_path: PathBuf,
    #[serde(default = "default_true")]
    pub c2s_require_encryption: bool,
    /// Bytes per stanza once authenticated.
    #[serde(default = "default_stanza_limit")]
    pub c2s_stanza_size_limit: usize,
    /// Bytes per stanza before authentication, kept small so an
    /// anonymous peer cannot make the server buffer much.
    #[serde(default = "default_preauth_limit")]
    pub c2s_preauth_stanza_size_limit: usize,
    /// Seconds an unauthenticated connection may take to log in.
    #[serde(default = "default_c2s_timeout")]
    pub c2s_timeout: u64,
    /// Seconds of silence after which the server pings the client.
    #[serde(default = "default_ping_interval")]
    pub c2s_ping_interval: u64,
    /// Seconds to wait for any traffic after that ping before closing
    /// with connection-timeout.
    #[serde(default = "default_ping_timeout")]
    pub c2s_ping_timeout: u64,
    #[serde(default = "default_max_connections")]
    pub c2s_max_connections: usize,
    /// Directory of certificates (`HOST.crt`/`HOST.key`), relative to
    /// data_path unless absolute. Self-signed ones are made when missing.
    #[serde(default)]
    pub certificates: Option<PathBuf>,
    /// Log filter: a level (`debug`, `info`, ...) or a tracing filter.
    #[serde(default = "default_log")]
    pub log: String,
    /// Failed logins allowed per source address per period (mod_limit_auth).
    #[serde(default = "default_limit_auth_period")]
    pub limit_auth_period: u64,
    #[serde(default = "default_limit_auth_max")]
    pub limit_auth_max: u32,
    /// WebSocket clients reach the HTTP port in clear text; set this when a
    /// TLS-terminating proxy sits in front (Prosody's option). Without it,
    /// and with c2s_require_encryption, WebSocket logins are refused.
    #[serde(default)]
    pub consider_websocket_secure: bool,
    /// The same for BOSH on the plain HTTP port.
    #[serde(default)]
    pub consider_bosh_secure: bool,
    /// Web pages of other origins allowed to open WebSocket streams: `true`
    /// for any, or a list of origins (`"https://app.example.com"`). Unset:
    /// only pages served from the server's own origin.
    #[serde(default)]
    pub cross_domain_websocket: Option<CrossDomain>,
    /// The same for BOSH requests (answered with CORS headers).
    #[serde(default)]
    pub cross_domain_bosh: Option<CrossDomain>,
    /// Per-endpoint CORS settings (`bosh`, `websocket`), Prosody 0.12's
    /// http_cors_override; they win over the cross_domain_* options.
    #[serde(default)]
    pub http_cors_override: std::collections::BTreeMap<String, CorsOverride>,
    /// The public base URL (`https://chat.example.com/`) when a proxy sits
    /// in front; host-meta advertises URLs under it. Unset: the URL the
    /// request came in on.
    #[serde(default)]
    pub http_external_url: Option<String>,
    /// Proxies (addresses or CIDR ranges) whose X-Forwarded-For and
    /// X-Forwarded-Proto headers are believed.
    #[serde(default = "default_trusted_proxies")]
    pub trusted_proxies: Vec<String>,
    /// Seconds a BOSH session may go without any request before it ends.
    #[serde(default = "default_bosh_max_inactivity")]
    pub bosh_max_inactivity: u64,
    /// Shortest interval (seconds) advertised to polling BOSH clients.
    #[serde(default = "default_bosh_max_polling")]
    pub bosh_max_polling: u64,
    /// Requests a BOSH client may have open at once (so `hold` is at most
    /// one less).
    #[serde(default = "default_bosh_max_requests")]
    pub bosh_max_requests: u64,
    /// Longest time (seconds) a BOSH request is held waiting for data.
    #[serde(default = "default_bosh_max_wait")]
    pub bosh_max_wait: u64,
    /// Seconds a XEP-0198 session whose connection was lost stays bound,
    /// waiting to be resumed, before its messages go to offline storage.
    #[serde(default = "default_smacks_hibernation_time")]
    pub smacks_hibernation_time: u64,
    /// Unacknowledged stanzas allowed before the server asks for an ack.
    #[serde(default)]
    pub smacks_max_unacked_stanzas: usize,
    /// Seconds an ack may be outstanding before the client counts as
    /// unreachable (push notifications are sent for what waits).
    #[serde(default = "default_smacks_max_ack_delay")]
    pub smacks_max_ack_delay: u64,
    /// Stanzas a hibernating session may hold before it is ended (its
    /// messages then go to offline storage).
    #[serde(default = "default_smacks_max_queue_size")]
    pub smacks_max_queue_size: usize,
    /// Stanzas held back from an inactive client (XEP-0352) before they
    /// are sent anyway.
    #[serde(default = "default_csi_queue_size")]
    pub csi_queue_size: usize,
    /// Where data is kept (Prosody's option): "internal", the embedded
    /// SQLite file in data_path (also accepted as "sqlite"), or "sql",
    /// the database the `sql` option names.
    #[serde(default = "default_storage")]
    pub storage: String,
    /// Prosody's `sql = { driver = "PostgreSQL", database = ..., ... }`.
    #[serde(default)]
    pub sql: Option<SqlConfig>,
}

/// The `sql` option, with Prosody's field names. Debug hides the password.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// "PostgreSQL", or "SQLite3" (the embedded SQLite, with `database`
    /// as its file name, relative to data_path).
    pub driver: String,
    pub database: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Host name, address, or the directory of a Unix socket.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// Connections kept open at most (PostgreSQL); default 16.
    pub pool_size: Option<usize>,
    /// Require TLS to PostgreSQL, verifying the server's certificate and
    /// name (against `host`). Off by default.
    #[serde(default)]
    pub ssl: bool,
    /// PEM file of the CA(s) to trust for `ssl` instead of the system's
    /// roots (libpq's name), e.g. the server's own self-signed certificate.
    pub sslrootcert: Option<PathBuf>,
}

impl std::fmt::Debug for SqlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlConfig")
            .field("driver", &self.driver)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("pool_size", &self.pool_size)
            .field("ssl", &self.ssl)
            .field("sslrootcert", &self.sslrootcert)
            .finish()
    }
}

/// The storage backend the config chooses.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageChoice<'a> {
    /// The embedded SQLite database at this path.
    Sqlite(PathBuf),
    Postgres(&'a SqlConfig),
}

impl SqlConfig {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self.driver.as_str() {
            "PostgreSQL" => {
                if self.database.as_deref().is_none_or(str::is_empty) {
                    problems.push(
                        "sql.database is missing: the name of the PostgreSQL database (e.g. \"jackdaw\")"
                            .to_string(),
                    );
                }
            }
            "SQLite3" => {
                if self.database.as_deref() == Some("") {
                    problems.push("sql.database must not be empty".to_string());
                }
            }
            other => problems.push(format!(
                "sql.driver = {other:?} is not supported: use \"PostgreSQL\" or \"SQLite3\""
            )),
        }
        if self.sslrootcert.is_some() && !self.ssl {
            problems.push("sql.sslrootcert is only used with sql.ssl = true".to_string());
        }
        if self.pool_size == Some(0) {
            problems.push("sql.pool_size must be at least 1".to_string());
        }
        problems
    }
}

/// `cross_domain_*`: any origin, or the listed ones.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum CrossDomain {
    Any(bool),
    Origins(Vec<String>),
}

/// One `[http_cors_override.NAME]` table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorsOverride {
    /// `false` turns cross-origin access off for the endpoint.
    pub enabled: Option<bool>,
    /// Allowed origins; unset with `enabled = true` means any.
    pub origins: Option<Vec<String>>,
    /// Send Access-Control-Allow-Credentials (cookies, HTTP auth).
    #[serde(default)]
    pub credentials: bool,
}

impl GlobalConfig {
    pub fn certificates_dir(&self) -> PathBuf {
        match &self.certificates {
            Some(p) if p.is_absolute() => p.clone(),
            Some(p) => self.data_path.join(p),
            None => self.data_path.join("certs"),
        }
    }

    /// The embedded SQLite file: `jackdaw.sqlite` in data_path, or the
    /// `sql.database` of `driver = "SQLite3"` (relative to data_path).
    pub fn database_path(&self) -> PathBuf {
        match (&self.sql, self.storage.as_str()) {
            (Some(sql), "sql") if sql.driver == "SQLite3" => match &sql.database {
                Some(name) => self.data_path.join(name),
                None => self.data_path.join("jackdaw.sqlite"),
            },
            _ => self.data_path.join("jackdaw.sqlite"),
        }
    }

    /// The storage backend to open (the config is validated: `sql` is set
    /// when `storage = "sql"`).
    pub fn storage_choice(&self) -> StorageChoice<'_> {
        match &self.sql {
            Some(sql) if self.storage == "sql" && sql.driver == "PostgreSQL" => StorageChoice::Postgres(sql),
            _ => StorageChoice::Sqlite(self.database_path()),
        }
    }
}

fn default_authentication() -> String {
    "internal_hashed".into()
}

/// Options of one virtual host after inheritance.
#[derive(Debug, Clone, Deserialize)]
pub struct HostConfig {
    #[serde(skip)]
    pub name: String,
    #[serde(default = "default_authentication")]
    pub authentication: String,
    #[serde(default)]
    pub allow_registration: bool,
    #[serde(default)]
    pub modules_enabled: Vec<String>,
    #[serde(default)]
    pub modules_disabled: Vec<String>,
    #[serde(default)]
    pub admins: Vec<String>,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Every option in effect for the host (global then host), from which
    /// each module deserialises its own config struct.
    #[serde(skip)]
    pub options: toml::Table,
}

impl HostConfig {
    /// Deserialises a module's config struct from the host's options.
    pub fn module_config<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        toml::Value::Table(self.options.clone())
            .try_into()
            .map_err(|e: toml::de::Error| format!("host {}: {}", self.name, e.message()))
    }
}

/// A `[components."name"]` table.
#[derive(Debug, Clone)]
pub struct ComponentConfig {
    pub name: String,
    pub module: Option<String>,
    pub options: toml::Table,
}

impl ComponentConfig {
    /// Deserialises a module's config struct from the component's table.
    pub fn module_config<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        toml::Value::Table(self.options.clone())
            .try_into()
            .map_err(|e: toml::de::Error| format!("component {}: {}", self.name, e.message()))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub global: GlobalConfig,
    pub hosts: Vec<HostConfig>,
    pub components: Vec<ComponentConfig>,
    /// Where it was read from, for messages.
    pub source: Option<PathBuf>,
}

/// Option names declared by modules, so the key check knows them.
#[derive(Debug, Default, Clone)]
pub struct KnownOptions {
    pub host: Vec<&'static str>,
    pub component: Vec<&'static str>,
}

impl Config {
    /// The embedded default: host `localhost` with chat rooms at
    /// `rooms.localhost`, everything on loopback.
    pub fn embedded_default() -> Self {
        let mut config = Self::parse("", None, &KnownOptions::default()).expect("the empty config is valid");
        let mut options = toml::Table::new();
        options.insert("module".into(), toml::Value::String("muc".into()));
        config.components.push(ComponentConfig {
            name: "rooms.localhost".into(),
            module: Some("muc".into()),
            options,
        });
        config
    }

    pub fn load(path: &Path, known: &KnownOptions) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, Some(path), known)
    }

    pub fn parse(text: &str, path: Option<&Path>, known: &KnownOptions) -> Result<Self, ConfigError> {
        let file = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<config>".into());
        let mut problems = check_keys(text, &file, known);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        problems.extend(check_types(text, &file));
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        let mut table: toml::Table = toml::from_str(text)
            .map_err(|e: toml::de::Error| ConfigError::Invalid(vec![format!("{file}: {e}")]))?;
        let hosts_table = take_tables(&mut table, "hosts", &file, &mut problems);
        let components_table = take_tables(&mut table, "components", &file, &mut problems);

        let global: GlobalConfig = match toml::Value::Table(table.clone()).try_into() {
            Ok(g) => g,
            Err(e) => {
                let e: toml::de::Error = e;
                problems.push(format!("{file}: {}", e.message()));
                return Err(ConfigError::Invalid(problems));
            }
        };
        // Global options that a host inherits: everything but the
        // server-wide keys.
        let mut inheritable = table.clone();
        inheritable.retain(|k, _| !GLOBAL_KEYS.contains(&k));

        let mut hosts = Vec::new();
        let host_list = if hosts_table.is_empty() {
            vec![("localhost".to_string(), toml::Table::new())]
        } else {
            hosts_table
        };
        for (name, own) in host_list {
            let mut options = inheritable.clone();
            options.extend(own);
            match toml::Value::Table(options.clone()).try_into::<HostConfig>() {
                Ok(mut host) => {
                    host.name = name.to_ascii_lowercase();
                    host.options = options;
                    if host.enabled {
                        hosts.push(host);
                    }
                }
                Err(e) => problems.push(format!("{file}: host {name}: {}", e.message())),
            }
        }
        let mut components = Vec::new();
        for (name, options) in components_table {
            let module = match options.get("module") {
                None => None,
                Some(toml::Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    problems.push(format!("{file}: component {name}: module must be a string"));
                    None
                }
            };
            components.push(ComponentConfig {
                name: name.to_ascii_lowercase(),
                module,
                options,
            });
        }
        let config = Config {
            global,
            hosts,
            components,
            source: path.map(Path::to_path_buf),
        };
        problems.extend(config.validate().into_iter().map(|p| format!("{file}: {p}")));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Checks bounds and combinations; returns every problem.
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let g = &self.global;
        if g.c2s_stanza_size_limit < 10_000 {
            problems.push("c2s_stanza_size_limit must be at least 10000 (RFC 6120 §13.12)".into());
        }
        if g.c2s_preauth_stanza_size_limit < 1024 {
            problems.push("c2s_preauth_stanza_size_limit must be at least 1024".into());
        }
        if g.c2s_timeout == 0 {
            problems.push("c2s_timeout must be at least 1 second".into());
        }
        if g.c2s_ping_timeout == 0 || g.c2s_ping_interval == 0 {
            problems.push("c2s_ping_interval and c2s_ping_timeout must be at least 1 second".into());
        }
        for p in &g.trusted_proxies {
            if p.parse::<std::net::IpAddr>().is_err() && p.parse::<ipnet::IpNet>().is_err() {
                problems.push(format!(
                    "trusted_proxies: {p:?} is not an IP address or CIDR range"
                ));
            }
        }
        if let Some(url) = &g.http_external_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            problems.push(format!(
                "http_external_url: {url:?} must start with https:// or http://"
            ));
        }
        if g.bosh_max_requests < 1 || g.bosh_max_wait < 1 || g.bosh_max_inactivity < 1 {
            problems
                .push("bosh_max_requests, bosh_max_wait and bosh_max_inactivity must be at least 1".into());
        }
        for name in g.http_cors_override.keys() {
            if !matches!(name.as_str(), "bosh" | "websocket") {
                problems.push(format!(
                    "http_cors_override.{name}: unknown endpoint (\"bosh\" or \"websocket\")"
                ));
            }
        }
        match (g.storage.as_str(), &g.sql) {
            ("internal" | "sqlite", _) => {}
            ("sql", Some(sql)) => problems.extend(sql.validate()),
            ("sql", None) => problems.push(
                "storage = \"sql\" needs the sql option, e.g. sql = { driver = \"PostgreSQL\", database = \"jackdaw\" }"
                    .to_string(),
            ),
            (other, _) => problems.push(format!(
                "storage = {other:?} is not one of \"internal\", \"sql\""
            )),
        }
        if g.interfaces.is_empty() {
            problems.push("interfaces must list at least one address".into());
        }
        for i in &g.interfaces {
            if i != "*" && i.parse::<std::net::IpAddr>().is_err() {
                problems.push(format!("interfaces: {i:?} is not an IP address or \"*\""));
            }
        }
        if self.hosts.is_empty() {
            problems.push("no enabled virtual host".into());
        }
        for h in &self.hosts {
            if jid::BareJid::new(&h.name).is_err() || h.name.contains('@') {
                problems.push(format!("host {:?} is not a valid domain", h.name));
            }
            if !matches!(h.authentication.as_str(), "internal_hashed" | "http") {
                problems.push(format!(
                    "host {}: authentication = {:?} is not one of \"internal_hashed\", \"http\"",
                    h.name, h.authentication
                ));
            }
        }
        problems
    }

    pub fn host(&self, name: &str) -> Option<&HostConfig> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

fn take_tables(
    table: &mut toml::Table,
    key: &str,
    file: &str,
    problems: &mut Vec<String>,
) -> Vec<(String, toml::Table)> {
    match table.remove(key) {
        None => Vec::new(),
        Some(toml::Value::Table(t)) => t
            .into_iter()
            .filter_map(|(name, v)| match v {
                toml::Value::Table(t) => Some((name, t)),
                _ => {
                    problems.push(format!("{file}: {key}.{name} must be a table"));
                    None
                }
            })
            .collect(),
        Some(_) => {
            problems.push(format!("{file}: {key} must be a table of tables"));
            Vec::new()
        }
    }
}

/// Checks every key against the known ones, reporting `file:line`.
fn check_keys(text: &str, file: &str, known: &KnownOptions) -> Vec<String> {
    let mut problems = Vec::new();
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            return vec![format!("{file}:{line}: {}", e.message())];
        }
    };
    let top: Vec<&str> = GLOBAL_KEYS
        .iter()
        .chain(HOST_KEYS)
        .chain(&known.host)
        .copied()
        .collect();
    let host: Vec<&str> = HOST_KEYS.iter().chain(&known.host).copied().collect();
    let component: Vec<&str> = COMPONENT_KEYS.iter().chain(&known.component).copied().collect();
    let unknown = |key: &toml::Spanned<std::borrow::Cow<'_, str>>, valid: &[&str], ctx: &str| {
        let name: &str = key.get_ref();
        let line = line_of(text, key.span().start);
        let nearest = valid
            .iter()
            .map(|v| (strsim::jaro_winkler(name, v), *v))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, v)| format!(" (did you mean \"{v}\"?)"))
            .unwrap_or_default();
        format!("{file}:{line}: unknown option \"{name}\"{ctx}{nearest}")
    };
    for (key, value) in doc.get_ref().iter() {
        let name: &str = key.get_ref();
        if !top.contains(&name) {
            problems.push(unknown(key, &top, ""));
            continue;
        }
        let (valid, what) = match name {
            "hosts" => (&host, "host"),
            "components" => (&component, "component"),
            _ => continue,
        };
        let DeValue::Table(entries) = value.get_ref() else {
            continue;
        };
        for (entry_name, entry) in entries.iter() {
            let DeValue::Table(options) = entry.get_ref() else {
                continue;
            };
            let ctx = format!(" in {what} \"{}\"", entry_name.get_ref());
            for (opt, _) in options.iter() {
                if !valid.contains(&opt.get_ref().as_ref()) {
                    problems.push(unknown(opt, valid, &ctx));
                }
            }
        }
    }
    problems
}

/// Deserialises the core option structs straight from the text, so a
/// value of the wrong type is reported with its line.
fn check_types(text: &str, file: &str) -> Vec<String> {
    #[derive(Deserialize)]
    struct HostTables {
        #[serde(default)]
        #[allow(dead_code)] // only deserialised for its errors
        hosts: std::collections::BTreeMap<String, HostConfig>,
    }
    let errors = [
        toml::from_str::<GlobalConfig>(text).err(),
        toml::from_str::<HostConfig>(text).err(),
        toml::from_str::<HostTables>(text).err(),
    ];
    let mut problems: Vec<String> = Vec::new();
    for e in errors.into_iter().flatten() {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
        let msg = format!("{file}:{line}: {}", e.message().trim());
        if !problems.contains(&msg) {
            problems.push(msg);
        }
    }
    problems
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> KnownOptions {
        KnownOptions {
            host: vec!["http_auth_url"],
            component: vec!["muc_http_auth_url"],
        }
    }

    #[test]
    fn empty_config_is_the_embedded_default() {
        let c = Config::embedded_default();
        assert_eq!(c.hosts.len(), 1);
        assert_eq!(c.hosts[0].name, "localhost");
        assert_eq!(c.global.c2s_ports, vec![5222]);
        assert_eq!(c.global.c2s_direct_tls_ports, vec![5223]);
        assert_eq!(c.global.http_ports, vec![5280]);
        assert_eq!(c.global.data_path, PathBuf::from("./data"));
        assert!(c.global.c2s_require_encryption);
    }

    #[test]
    fn unknown_key_names_line_and_nearest() {
        let text = "c2s_ports = [5222]\n\nc2s_prots = [1]\n";
        let err = Config::parse(text, Some(Path::new("j.toml")), &known()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("j.toml:3:"), "{msg}");
        assert!(msg.contains("\"c2s_prots\""), "{msg}");
        assert!(msg.contains("did you mean \"c2s_ports\""), "{msg}");
    }

    #[test]
    fn unknown_host_key_is_reported_in_its_table() {
        let text = "[hosts.\"example.com\"]\nhttp_auth_ur = \"x\"\n";
        let msg = Config::parse(text, None, &known()).unwrap_err().to_string();
        assert!(msg.contains(":2:") && msg.contains("http_auth_url"), "{msg}");
    }

    #[test]
    fn host_inherits_and_overrides_global_options() {
        let text = "allow_registration = true\nhttp_auth_url = \"g\"\n\
            [hosts.\"a.example\"]\n[hosts.\"b.example\"]\nallow_registration = false\n";
        let c = Config::parse(text, None, &known()).unwrap();
        assert!(c.host("a.example").unwrap().allow_registration);
        assert!(!c.host("b.example").unwrap().allow_registration);
        assert_eq!(
            c.host("b.example").unwrap().options["http_auth_url"].as_str(),
            Some("g")
        );
    }

    #[test]
    fn bad_values_are_all_reported() {
        let text = "c2s_stanza_size_limit = 10\nc2s_timeout = 0\n";
        let msg = Config::parse(text, None, &known()).unwrap_err().to_string();
        assert!(
            msg.contains("c2s_stanza_size_limit") && msg.contains("c2s_timeout"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_type_names_its_line() {
        let text =
            "c2s_ports = [5222]\nc2s_timeout = 'three'\n[hosts.\"a.example\"]\nallow_registration = 1\n";
        let msg = Config::parse(text, Some(Path::new("j.toml")), &known())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("j.toml:2:"), "{msg}");
        assert!(msg.contains("j.toml:4:"), "{msg}");
    }

    #[test]
    fn storage_defaults_to_the_embedded_sqlite() {
        let c = Config::embedded_default();
        assert_eq!(
            c.global.storage_choice(),
            StorageChoice::Sqlite(PathBuf::from("./data/jackdaw.sqlite"))
        );
        let c = Config::parse("storage = \"sqlite\"\n", None, &known()).unwrap();
        assert!(matches!(c.global.storage_choice(), StorageChoice::Sqlite(_)));
    }

    #[test]
    fn sql_postgresql_is_chosen_and_its_password_hidden() {
        let text = "storage = \"sql\"\nsql = { driver = \"PostgreSQL\", database = \"jackdaw\", \
            username = \"jackdaw\", password = \"s3cret\", host = \"db\", port = 5433 }\n";
        let c = Config::parse(text, None, &known()).unwrap();
        let StorageChoice::Postgres(sql) = c.global.storage_choice() else {
            panic!("not PostgreSQL");
        };
        assert_eq!(
            (sql.database.as_deref(), sql.host.as_deref(), sql.port),
            (Some("jackdaw"), Some("db"), Some(5433))
        );
        assert_eq!(sql.password.as_deref(), Some("s3cret"));
        for shown in [format!("{sql:?}"), format!("{c:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }

    #[test]
    fn sql_ssl_options() {
        let text = "storage = \"sql\"\nsql = { driver = \"PostgreSQL\", database = \"j\", ssl = true, \
            sslrootcert = \"/etc/ssl/db-ca.pem\" }\n";
        let c = Config::parse(text, None, &known()).unwrap();
        let StorageChoice::Postgres(sql) = c.global.storage_choice() else {
            panic!("not PostgreSQL");
        };
        assert!(sql.ssl);
        assert_eq!(sql.sslrootcert.as_deref(), Some(Path::new("/etc/ssl/db-ca.pem")));
        let text =
            "storage = \"sql\"\nsql = { driver = \"PostgreSQL\", database = \"j\", sslrootcert = \"x\" }\n";
        let msg = Config::parse(text, None, &known()).unwrap_err().to_string();
        assert!(
            msg.contains("sql.sslrootcert is only used with sql.ssl = true"),
            "{msg}"
        );
    }

    #[test]
    fn sql_sqlite3_is_the_embedded_database() {
        let text = "storage = \"sql\"\nsql = { driver = \"SQLite3\", database = \"prosody.sqlite\" }\n";
        let c = Config::parse(text, None, &known()).unwrap();
        assert_eq!(
            c.global.storage_choice(),
            StorageChoice::Sqlite(PathBuf::from("./data/prosody.sqlite"))
        );
    }

    #[test]
    fn bad_storage_options_are_reported() {
        let cases = [
            ("storage = \"mongodb\"\n", "storage = \"mongodb\" is not one of"),
            ("storage = \"sql\"\n", "needs the sql option"),
            (
                "storage = \"sql\"\nsql = { driver = \"MySQL\", database = \"j\" }\n",
                "sql.driver = \"MySQL\" is not supported",
            ),
            (
                "storage = \"sql\"\nsql = { driver = \"PostgreSQL\" }\n",
                "sql.database is missing",
            ),
            (
                "storage = \"sql\"\nsql = { driver = \"PostgreSQL\", database = \"j\", pool_size = 0 }\n",
                "sql.pool_size",
            ),
            (
                "storage = \"sql\"\nsql = { driver = \"PostgreSQL\", database = \"j\", passwd = \"x\" }\n",
                "passwd",
            ),
        ];
        for (text, expected) in cases {
            let msg = Config::parse(text, Some(Path::new("j.toml")), &known())
                .unwrap_err()
                .to_string();
            assert!(msg.contains(expected) && msg.contains("j.toml"), "{text}: {msg}");
        }
    }

    #[test]
    fn components_are_read() {
        let text = "[components.\"rooms.example.com\"]\nmodule = \"muc\"\nmuc_http_auth_url = \"u\"\n";
        let c = Config::parse(text, None, &known()).unwrap();
        assert_eq!(c.components[0].module.as_deref(), Some("muc"));
    }
}
