//! `jackdaw run`: binds every listener, serves until SIGTERM/SIGINT, then
//! closes each stream with `system-shutdown`, flushes storage and exits 0.
//! SIGHUP reloads the certificates.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use jackdaw_core::auth::rate_limit::AuthRateLimiter;
use jackdaw_core::c2s::bosh::{BoshLimits, BoshSessions};
use jackdaw_core::component::{Component, ComponentRegistry};
use jackdaw_core::config::ComponentConfig;
use jackdaw_core::config::Config;
use jackdaw_core::hooks::Hooks;
use jackdaw_core::roster::{RosterSource, StoredRosters};
use jackdaw_core::server::{Host, Server};
use jackdaw_core::session::SessionRegistry;
use jackdaw_core::storage::Stores;
use jackdaw_core::tls::Tls;
use jackdaw_modules::component_http::ComponentHttp;
use jackdaw_modules::muc::{JoinPolicy, MucService};
use jackdaw_modules::muc_http_auth::MucHttpAuth;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::{certs, http, wiring};

/// Each host with its modules loaded, and the HTTP routes they mount.
type BuiltHosts = (HashMap<String, Host>, HashMap<String, axum::Router<Arc<Server>>>);

/// Loads every host's modules, collecting all problems.
fn build_hosts(config: &Config, backends: &wiring::Backends) -> Result<BuiltHosts> {
    let mut hosts = HashMap::new();
    let mut routes = HashMap::new();
    let mut problems = Vec::new();
    for host in &config.hosts {
        let mut hooks = Hooks::default();
        match jackdaw_modules::load_host(host, &mut hooks, &backends.stores, &backends.metrics) {
            Ok(loaded) => tracing::debug!(host = %host.name, modules = ?loaded, "modules loaded"),
            Err(p) => problems.extend(p),
        }
        if let Some(r) = hooks.take_http_routes() {
            routes.insert(host.name.clone(), r);
        }
        let rosters: Arc<dyn RosterSource> = match hooks.roster_source() {
            Some(source) => source.clone(),
            None => Arc::new(StoredRosters(backends.stores.rosters.clone())),
        };
        let auth = backends.auth[&host.name].clone();
        hosts.insert(
            host.name.clone(),
            Host {
                config: host.clone(),
                auth,
                hooks,
                rosters,
            },
        );
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok((hosts, routes))
}

/// A configured component: its domain, the service (None for an external
/// XEP-0114 component until it connects) and the HTTP routes it mounts.
type BuiltComponents = Vec<(
    String,
    Option<Arc<dyn Component>>,
    Option<axum::Router<Arc<Server>>>,
)>;

/// The MUC join policy a component's `modules_enabled` asks for.
fn muc_join_policy(c: &ComponentConfig) -> Result<Option<Arc<dyn JoinPolicy>>, String> {
    let enabled: Vec<String> = match c.options.get("modules_enabled") {
        None => Vec::new(),
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|_| format!("component {}: modules_enabled must be a list", c.name))?,
    };
    for m in &enabled {
        if m != "muc_http_auth" {
            return Err(format!(
                "component {}: unknown module {m:?} in modules_enabled",
                c.name
            ));
        }
    }
    if enabled.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(MucHttpAuth::new(c)?)))
}

async fn build_components(config: &Config, stores: &Stores) -> Result<BuiltComponents> {
    let mut built = Vec::new();
    let mut problems = Vec::new();
    for c in &config.components {
        match c.module.as_deref() {
            None => {
                if c.options
                    .get("component_secret")
                    .and_then(|s| s.as_str())
                    .is_none_or(str::is_empty)
                {
                    problems.push(format!(
                        "component {}: an external component (no module) needs component_secret",
                        c.name
                    ));
                }
                built.push((c.name.clone(), None, None));
            }
            Some("component_http") => match ComponentHttp::new(c) {
                Ok(component) => {
                    let routes = component.routes();
                    built.push((
                        c.name.clone(),
                        Some(component as Arc<dyn Component>),
                        Some(routes),
                    ));
                }
                Err(e) => problems.push(e),
            },
            Some("muc") => {
                let service = match muc_join_policy(c) {
                    Ok(policy) => {
                        MucService::new(c, stores.muc.clone(), stores.archive.clone(), policy).await
                    }
                    Err(e) => Err(e),
                };
                match service {
                    Ok(service) => built.push((c.name.clone(), Some(service as Arc<dyn Component>), None)),
                    Err(e) => problems.push(e),
                }
            }
            Some(other) => problems.push(format!("component {}: module {other:?} is not available", c.name)),
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(built)
}

/// For `check-config`: loads the modules against a throwaway database so
/// their options are validated without touching data_path.
pub async fn check_modules(config: &Config) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("jackdaw-check-{}", std::process::id()));
    let mut scratch = config.clone();
    scratch.global.data_path = dir.clone();
    // Never the configured database: check-config must not connect to
    // (or migrate) the operator's PostgreSQL.
    scratch.global.storage = "internal".into();
    let result = async {
        let backends = wiring::open(&scratch).await?;
        build_hosts(&scratch, &backends)?;
        build_components(&scratch, &backends.stores).await?;
        Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bind_addrs(interfaces: &[String], ports: &[u16]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for i in interfaces {
        let ips: Vec<IpAddr> = if i == "*" {
            vec![
                "0.0.0.0".parse().expect("literal"),
                "::".parse().expect("literal"),
            ]
        } else {
            i.parse().into_iter().collect()
        };
        for ip in ips {
            for p in ports {
                out.push(SocketAddr::new(ip, *p));
            }
        }
    }
    out
}

async fn bind_all(addrs: &[SocketAddr], what: &str) -> Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    for a in addrs {
        let l = TcpListener::bind(a)
            .await
            .with_context(|| format!("binding {what} on {a}"))?;
        listeners.push(l);
    }
    Ok(listeners)
}

fn local_addrs(ls: &[TcpListener]) -> Vec<String> {
    ls.iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect()
}

/// Every bound address, by listener kind.
#[derive(serde::Serialize)]
struct ListenerAddrs {
    c2s: Vec<String>,
    c2s_direct_tls: Vec<String>,
    http: Vec<String>,
    https: Vec<String>,
    component: Vec<String>,
}

/// Tells tests and tools which ports were bound (port 0 = ephemeral).
fn write_listeners_file(config: &Config, addrs: &ListenerAddrs) -> Result<()> {
    let json = serde_json::to_string(addrs)? + "\n";
    let path = config.global.data_path.join("listeners.json");
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

pub async fn run(config: Config) -> Result<()> {
    crate::init_logging(&config.global.log);
    let backends = wiring::open(&config).await?;
    let (hosts, host_routes) = build_hosts(&config, &backends)?;
    let components = build_components(&config, &backends.stores).await?;
    let names: Vec<String> = config.hosts.iter().map(|h| h.name.clone()).collect();
    let cert_dir = config.global.certificates_dir();
    let cert = certs::ensure(&cert_dir, &names[0], &names)?;
    let tls = Tls::from_files(&cert.cert, &cert.key).context("loading the certificate")?;

    let g = &config.global;
    let c2s = bind_all(&bind_addrs(&g.interfaces, &g.c2s_ports), "c2s").await?;
    let direct = bind_all(
        &bind_addrs(&g.interfaces, &g.c2s_direct_tls_ports),
        "c2s direct TLS",
    )
    .await?;
    let http_listeners = bind_all(&bind_addrs(&g.interfaces, &g.http_ports), "http").await?;
    let https_listeners = bind_all(&bind_addrs(&g.interfaces, &g.https_ports), "https").await?;
    // The XEP-0114 port is only opened when an external component exists.
    let external = components.iter().any(|(_, c, _)| c.is_none());
    let component_listeners = if external {
        bind_all(&bind_addrs(&g.interfaces, &g.component_ports), "component").await?
    } else {
        Vec::new()
    };
    let addrs = ListenerAddrs {
        c2s: local_addrs(&c2s),
        c2s_direct_tls: local_addrs(&direct),
        http: local_addrs(&http_listeners),
        https: local_addrs(&https_listeners),
        component: local_addrs(&component_listeners),
    };

    let server = Arc::new_cyclic(|self_ref| Server {
        self_ref: self_ref.clone(),
        resumable: Default::default(),
        pending_iqs: Default::default(),
        auth_limiter: AuthRateLimiter::new(Duration::from_secs(g.limit_auth_period), g.limit_auth_max),
        connection_slots: Arc::new(Semaphore::new(g.c2s_max_connections)),
        sessions: SessionRegistry::default(),
        components: ComponentRegistry::default(),
        metrics: backends.metrics.clone(),
        stores: backends.stores.clone(),
        tls,
        hosts,
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        config: config.clone(),
    });

    let mut global_routes = axum::Router::new();
    for (domain, component, routes) in components {
        server.components.configure(&domain, component);
        if let Some(r) = routes {
            global_routes = global_routes.merge(r);
        }
    }

    for host in server.hosts.values() {
        host.hooks
            .fire(&server, &jackdaw_core::hooks::Event::Started)
            .await;
    }
    let limit = server.connection_slots.clone();
    for l in component_listeners {
        tokio::spawn(accept_loop(server.clone(), l, Listener::Component, limit.clone()));
    }
    for l in c2s {
        tokio::spawn(accept_loop(server.clone(), l, Listener::C2s, limit.clone()));
    }
    for l in direct {
        tokio::spawn(accept_loop(
            server.clone(),
            l,
            Listener::C2sDirectTls,
            limit.clone(),
        ));
    }
    // One BOSH session table for every HTTP(S) listener.
    let bosh = BoshSessions::new(BoshLimits::from_config(g));
    let app = http::router(server.clone(), bosh, &host_routes, global_routes);
    // Awaited at shutdown, so answers already decided (a held BOSH request
    // told of the shutdown) are written before the process exits.
    let mut http_tasks = Vec::new();
    for l in http_listeners {
        let (app, token) = (app.clone(), server.shutdown.clone());
        http_tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app.into_make_service_with_connect_info::<http::Peer>())
                .with_graceful_shutdown(token.cancelled_owned())
                .await
            {
                error!(error = %e, "HTTP listener failed");
            }
        }));
    }
    for l in https_listeners {
        let (app, token) = (app.clone(), server.shutdown.clone());
        let tls = http::tls_listener::TlsListener::new(server.clone(), l)?;
        http_tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(tls, app.into_make_service_with_connect_info::<http::Peer>())
                .with_graceful_shutdown(token.cancelled_owned())
                .await
            {
                error!(error = %e, "HTTPS listener failed");
            }
        }));
    }
    let _admin_socket = crate::admin_socket::start(&server)?;
    write_listeners_file(&config, &addrs)?;
    info!(
        hosts = ?names,
        c2s = ?addrs.c2s,
        c2s_direct_tls = ?addrs.c2s_direct_tls,
        http = ?addrs.http,
        https = ?addrs.https,
        component = ?addrs.component,
        data = %g.data_path.display(),
        "Jackdaw {} started; add a user with: jackdaw{} user add alice@{}",
        env!("CARGO_PKG_VERSION"),
        config.source.as_ref().map(|p| format!(" --config {}", p.display())).unwrap_or_default(),
        names[0],
    );

    wait_for_signals(&server, &cert).await;
    info!(sessions = server.sessions.count(), "shutting down");
    for component in server.components.connected() {
        component.shutdown(&server).await;
    }
    server.shutdown.cancel();
    server.tasks.close();
    if tokio::time::timeout(Duration::from_secs(10), server.tasks.wait())
        .await
        .is_err()
    {
        warn!("some connections did not close in time");
    }
    let http_done = wait_all(http_tasks);
    if tokio::time::timeout(Duration::from_secs(5), http_done)
        .await
        .is_err()
    {
        warn!("some HTTP requests did not finish in time");
    }
    backends.db.checkpoint().await.ok();
    info!("stopped");
    Ok(())
}

async fn wait_for_signals(server: &Arc<Server>, cert: &certs::CertPaths) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => reload(server, cert),
        }
    }
}

/// SIGHUP: what can change safely in a running server does (certificates,
/// the log filter); the config file is re-checked and anything else that
/// changed is reported as needing a restart.
fn reload(server: &Server, cert: &certs::CertPaths) {
    match server.tls.reload(&cert.cert, &cert.key) {
        Ok(()) => info!("SIGHUP: certificates reloaded"),
        Err(e) => error!(error = %e, "SIGHUP: certificate reload failed; keeping the old one"),
    }
    let Some(path) = &server.config.source else { return };
    match Config::load(path, &jackdaw_modules::known_options()) {
        Ok(new) => {
            crate::reload_logging(&new.global.log);
            let mut old_rest = server.config.clone();
            let mut new_rest = new.clone();
            old_rest.global.log.clear();
            new_rest.global.log.clear();
            if format!("{old_rest:?}") != format!("{new_rest:?}") {
                warn!(config = %path.display(), "SIGHUP: config changed beyond `log`; restart to apply those changes");
            }
            info!(log = %new.global.log, "SIGHUP: config re-read");
        }
        Err(e) => {
            error!(config = %path.display(), "SIGHUP: config has errors, keeping the running one:\n{e}")
        }
    }
}

/// What a listening socket serves.
#[derive(Clone, Copy)]
enum Listener {
    C2s,
    C2sDirectTls,
    /// XEP-0114 external components.
    Component,
}

/// The next connection, or `None` once the server shuts down. Accept
/// errors (out of file descriptors) are logged and retried after a capped
/// backoff, so the loop never spins.
pub async fn accept_next(server: &Server, listener: &TcpListener) -> Option<(TcpStream, SocketAddr)> {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = server.shutdown.cancelled() => return None,
            a = listener.accept() => a,
        };
        match accepted {
            Ok(a) => return Some(a),
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Accepts connections; one over `c2s_max_connections` is closed at once
/// with a warning (at most one a second), never left waiting unseen. A
/// capped backoff on accept errors (out of file descriptors) keeps the loop
/// from spinning.
async fn accept_loop(server: Arc<Server>, listener: TcpListener, kind: Listener, limit: Arc<Semaphore>) {
    let mut last_warning: Option<std::time::Instant> = None;
    let mut refused_since_warning = 0u64;
    loop {
        let Some((tcp, peer)) = accept_next(&server, &listener).await else {
            return;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            refused_since_warning += 1;
            if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                warn!(
                    remote = %peer,
                    refused = refused_since_warning,
                    limit = server.config.global.c2s_max_connections,
                    "connection limit reached (c2s_max_connections): refusing new connections"
                );
                last_warning = Some(std::time::Instant::now());
                refused_since_warning = 0;
            }
            drop(tcp);
            continue;
        };
        let server2 = server.clone();
        server.tasks.spawn(async move {
            match kind {
                Listener::C2s => jackdaw_core::c2s::handle_connection(server2, tcp, peer, false).await,
                Listener::C2sDirectTls => {
                    jackdaw_core::c2s::handle_connection(server2, tcp, peer, true).await
                }
                Listener::Component => {
                    jackdaw_core::component::external::handle_connection(server2, tcp, peer).await
                }
            }
            drop(permit);
        });
    }
}

/// Waits for every task (their panics were already logged by tokio).
async fn wait_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}
