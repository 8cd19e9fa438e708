//! The `NotifyPing` event (Prosody's `cloud-notify-ping`), which any module
//! may raise, sends a push notification to every registered device of the
//! account. Checked on a real server context with the real SQLite store
//! and the modules loaded as in production; the app server is a component
//! that records what it is sent and answers with a result.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jackdaw_core::auth::internal::InternalAuthenticator;
use jackdaw_core::auth::rate_limit::AuthRateLimiter;
use jackdaw_core::component::{Component, ComponentRegistry};
use jackdaw_core::config::Config;
use jackdaw_core::hooks::{Event, Hooks};
use jackdaw_core::jid::BareJid;
use jackdaw_core::metrics::Metrics;
use jackdaw_core::minidom::Element;
use jackdaw_core::roster::StoredRosters;
use jackdaw_core::server::{Host, Server};
use jackdaw_core::session::SessionRegistry;
use jackdaw_core::storage::PushRegistration;
use jackdaw_core::tls::Tls;
use jackdaw_storage::SqliteStore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// An app server that answers every publish with a result.
#[derive(Default)]
struct AppServer {
    received: Mutex<Vec<Element>>,
}

#[async_trait]
impl Component for AppServer {
    async fn deliver(&self, server: &Server, stanza: Element) {
        self.received.lock().unwrap().push(stanza.clone());
        let reply = jackdaw_core::stanza::iq_result(&stanza, None);
        server.route(reply, None).await;
    }
}

#[tokio::test]
async fn notify_ping_reaches_every_registered_device() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::parse("", None, &jackdaw_modules::known_options()).unwrap();
    config.global.data_path = dir.path().to_path_buf();
    let db = SqliteStore::open(&config.global.database_path()).unwrap();
    let stores = db.stores();
    let metrics = Metrics::default();
    let mut hosts = std::collections::HashMap::new();
    for h in &config.hosts {
        let mut hooks = Hooks::default();
        jackdaw_modules::load_host(h, &mut hooks, &stores, &metrics).unwrap();
        hosts.insert(
            h.name.clone(),
            Host {
                config: h.clone(),
                auth: Arc::new(InternalAuthenticator::new(stores.accounts.clone())),
                hooks,
                rosters: Arc::new(StoredRosters(stores.rosters.clone())),
            },
        );
    }
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let tls = Tls::from_pem(
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
        "test certificate",
    )
    .unwrap();
    let server = Arc::new_cyclic(|self_ref| Server {
        self_ref: self_ref.clone(),
        resumable: Default::default(),
        pending_iqs: Default::default(),
        auth_limiter: AuthRateLimiter::new(Duration::from_secs(60), 10),
        connection_slots: Arc::new(tokio::sync::Semaphore::new(100)),
        sessions: SessionRegistry::default(),
        components: ComponentRegistry::default(),
        metrics: Arc::new(Metrics::default()),
        stores: stores.clone(),
        tls,
        hosts,
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        config,
    });
    let app = Arc::new(AppServer::default());
    server.components.configure("push.localhost", Some(app.clone()));

    let alice = BareJid::new("alice@localhost").unwrap();
    for node in ["phone", "tablet"] {
        let registration = PushRegistration {
            service: "push.localhost".into(),
            node: node.into(),
            options: String::new(),
            errors: 0,
        };
        stores
            .push
            .register(alice.as_str(), &registration, 5)
            .await
            .unwrap();
    }
    let host = server.host("localhost").unwrap();
    host.hooks
        .fire(&server, &Event::NotifyPing { account: &alice })
        .await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while app.received.lock().unwrap().len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = app.received.lock().unwrap().clone();
    let mut nodes: Vec<String> = received
        .iter()
        .map(|iq| {
            assert_eq!(iq.attr("from"), Some("alice@localhost"));
            let publish = iq
                .get_child("pubsub", "http://jabber.org/protocol/pubsub")
                .and_then(|p| p.get_child("publish", "http://jabber.org/protocol/pubsub"))
                .expect("a pubsub publish");
            publish.attr("node").unwrap().to_string()
        })
        .collect();
    nodes.sort();
    assert_eq!(
        nodes,
        ["phone", "tablet"],
        "one notification per device: {received:?}"
    );
}
