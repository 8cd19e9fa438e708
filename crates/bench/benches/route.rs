//! `route`: one chat message from one local session to another through
//! `Server::route`, the router every stanza a client sends goes through.
//!
//! Between the parser and the recipient's writer, this is all the work the
//! server does for a one-to-one message: parse the `to` JID, pick the
//! delivery rule (RFC 6121 §8.5), look the recipient up in the session
//! registry and queue the stanza on its bounded outbox. Its cost is a floor
//! under messages/s per core, the figure Jackdaw's chat target is set on
//! (issue 4: at least 5× Prosody).
//!
//! The `Server` is assembled as `crates/server/src/run.rs` does it, with
//! the embedded default config (host `localhost`), `InternalAuthenticator`
//! over a `SqliteStore` in a temporary directory, a self-signed certificate
//! from rcgen, and no modules: a message between two online sessions needs
//! only the session registry. alice@localhost/phone sends to
//! bob@localhost/laptop, both available at priority 0:
//!
//! - `full_jid`: `to='bob@localhost/laptop'`, delivered to that resource;
//! - `bare_jid`: `to='bob@localhost'`, delivered to the available resources
//!   of highest non-negative priority (one here).
//!
//! The router takes the stanza by value, so each iteration needs its own
//! copy: copies are made in batches outside the timed part, and the
//! recipient's outbox is drained (the stanzas dropped) between batches, also
//! untimed, as the recipient's writer task would do on another core.
//!
//! `route_parts` times two pieces of that work alone, to read the figures
//! by: parsing the `to` JID (`Jid::new`, with its stringprep), and cloning
//! and dropping the message element (what bare-JID delivery does once per
//! recipient).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jackdaw_core::auth::internal::InternalAuthenticator;
use jackdaw_core::auth::rate_limit::AuthRateLimiter;
use jackdaw_core::component::ComponentRegistry;
use jackdaw_core::config::{Config, KnownOptions};
use jackdaw_core::hooks::Hooks;
use jackdaw_core::jid::{FullJid, Jid};
use jackdaw_core::metrics::Metrics;
use jackdaw_core::minidom::Element;
use jackdaw_core::roster::StoredRosters;
use jackdaw_core::server::{Host, Server};
use jackdaw_core::session::{Outbound, Session, SessionRegistry};
use jackdaw_core::stream::{Limits, StreamEvent, StreamParser};
use jackdaw_core::tls::Tls;
use jackdaw_storage::SqliteStore;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Copies made and routed per timed batch; the outbox holds a whole batch.
const BATCH: u64 = 1024;

struct Bench {
    server: Arc<Server>,
    alice: Arc<Session>,
    bob_outbox: mpsc::Receiver<Outbound>,
    // Kept to the end: the database lives in it.
    _dir: tempfile::TempDir,
}

/// The server of `run.rs` with the embedded default config and no modules.
fn build_server(dir: &tempfile::TempDir) -> Arc<Server> {
    let mut config = Config::parse("", None, &KnownOptions::default()).expect("the empty config is valid");
    config.global.data_path = dir.path().to_path_buf();
    let db = SqliteStore::open(&config.global.database_path()).expect("open the database");
    let stores = db.stores();
    let hosts = config
        .hosts
        .iter()
        .map(|h| {
            let host = Host {
                config: h.clone(),
                auth: Arc::new(InternalAuthenticator::new(stores.accounts.clone())),
                hooks: Hooks::default(),
                rosters: Arc::new(StoredRosters(stores.rosters.clone())),
            };
            (h.name.clone(), host)
        })
        .collect();
    let names: Vec<String> = config.hosts.iter().map(|h| h.name.clone()).collect();
    let cert = rcgen::generate_simple_self_signed(names).expect("generate a certificate");
    let tls = Tls::from_pem(
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
        "bench certificate",
    )
    .expect("load the certificate");
    let g = &config.global;
    let auth_limiter = AuthRateLimiter::new(Duration::from_secs(g.limit_auth_period), g.limit_auth_max);
    Arc::new_cyclic(|self_ref| Server {
        self_ref: self_ref.clone(),
        auth_limiter,
        connection_slots: Arc::new(tokio::sync::Semaphore::new(1_000_000)),
        resumable: Default::default(),
        pending_iqs: Default::default(),
        sessions: SessionRegistry::default(),
        components: ComponentRegistry::default(),
        metrics: Arc::new(Metrics::default()),
        stores,
        tls,
        hosts,
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        config,
    })
}

/// An available session at priority 0 and the receiving end of its outbox.
fn session(jid: &str) -> (Arc<Session>, mpsc::Receiver<Outbound>) {
    let (tx, rx) = mpsc::channel(BATCH as usize);
    let jid = FullJid::new(jid).expect("valid JID");
    let s = Arc::new(Session::new(jid, tx, CancellationToken::new()));
    s.with_presence(|p| {
        p.available = true;
        p.priority = 0;
    });
    (s, rx)
}

fn setup() -> Bench {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = build_server(&dir);
    let (alice, _alice_outbox) = session("alice@localhost/phone");
    let (bob, bob_outbox) = session("bob@localhost/laptop");
    server.sessions.insert(alice.clone());
    server.sessions.insert(bob);
    Bench {
        server,
        alice,
        bob_outbox,
        _dir: dir,
    }
}

/// A chat message as the c2s reader hands it to the router: parsed by the
/// stream parser, `from` stamped with the sender's full JID.
fn message(to: &str) -> Element {
    let doc = format!(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>\
         <message type='chat' to='{to}' from='alice@localhost/phone' id='msg-0001' xml:lang='en'>\
         <body>Hello Bob, are we still on for lunch tomorrow at noon?</body>\
         <active xmlns='http://jabber.org/protocol/chatstates'/>\
         <origin-id xmlns='urn:xmpp:sid:0' id='3f1c2b9e-0001'/>\
         <request xmlns='urn:xmpp:receipts'/></message>"
    );
    let mut out = Vec::new();
    StreamParser::new(Limits::default())
        .feed(doc.as_bytes(), &mut out)
        .expect("well-formed");
    out.into_iter()
        .find_map(|ev| match ev {
            StreamEvent::Stanza(el) => Some(el),
            _ => None,
        })
        .expect("one stanza")
}

/// Routes `iters` copies of `msg`, timing only the `route` calls, and
/// checks every copy reached Bob.
async fn route_many(b: &mut Bench, msg: &Element, iters: u64) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(BATCH);
        let copies: Vec<Element> = (0..n).map(|_| msg.clone()).collect();
        let start = Instant::now();
        for el in copies {
            b.server.route(el, Some(&b.alice)).await;
        }
        elapsed += start.elapsed();
        let mut delivered = 0;
        while let Ok(out) = b.bob_outbox.try_recv() {
            assert!(matches!(out, Outbound::Stanza(_)));
            delivered += 1;
        }
        assert_eq!(delivered, n, "every message reaches bob");
        left -= n;
    }
    elapsed
}

fn bench_route(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut bench = setup();
    let cases = [
        ("full_jid", message("bob@localhost/laptop")),
        ("bare_jid", message("bob@localhost")),
    ];
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(1));
    for (name, msg) in &cases {
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| rt.block_on(route_many(&mut bench, msg, iters)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("route_parts");
    group.bench_function("jid_parse", |b| {
        b.iter(|| black_box(Jid::new(black_box("bob@localhost/laptop"))))
    });
    let msg = &cases[0].1;
    group.bench_function("message_clone_drop", |b| {
        b.iter(|| black_box(black_box(msg).clone()))
    });
    group.finish();
}

criterion_group!(benches, bench_route);
criterion_main!(benches);
