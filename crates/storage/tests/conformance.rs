//! The same scenarios against both backends: SQLite on a temporary file and
//! PostgreSQL on a fresh database per test. Each scenario is a function of
//! `scenarios`; `conformance!` makes a `sqlite::NAME` and a
//! `postgres::NAME` test of it.
//!
//! PostgreSQL: `JACKDAW_TEST_POSTGRES_URL` (e.g.
//! `postgresql://jackdaw:jackdaw@127.0.0.1:5432/postgres`) names a role
//! allowed to CREATE DATABASE; each test makes `jackdaw_test_<random>` and
//! drops it after, even when it fails, so tests run in parallel. Without
//! the variable the PostgreSQL half is skipped with a note, except when
//! `CI` is set: there a missing database is a failure.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use jackdaw_core::storage::Stores;
use jackdaw_storage::postgres::PgConfig;
use jackdaw_storage::{PostgresStore, SqliteStore};

/// One backend with a fresh database, and its stores.
pub struct Fixture {
    pub s: Stores,
    backend: Backend,
}

// One per test: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        store: PostgresStore,
        // Dropped last: drops the database.
        db: TestDb,
    },
}

impl Fixture {
    fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("jackdaw.sqlite");
        let store = SqliteStore::open(&path).expect("open SQLite");
        Fixture {
            s: store.stores(),
            backend: Backend::Sqlite { _dir: dir, path },
        }
    }

    async fn postgres() -> Option<Fixture> {
        let db = TestDb::create().await?;
        let store = PostgresStore::connect(db.config(), 4)
            .await
            .expect("connect to the test database");
        Some(Fixture {
            s: store.stores(),
            backend: Backend::Postgres { store, db },
        })
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres { .. })
    }

    /// Closes the database and opens it again, as a restarted server
    /// would (the schema is not migrated twice, the data is there).
    pub async fn reopen(&mut self) {
        match &mut self.backend {
            Backend::Sqlite { path, .. } => {
                let store = SqliteStore::open(path).expect("reopen SQLite");
                self.s = store.stores();
            }
            Backend::Postgres { store, db } => {
                store.close();
                *store = PostgresStore::connect(db.config(), 4).await.expect("reconnect");
                self.s = store.stores();
            }
        }
    }

    /// PostgreSQL only: a client on the test database, for what the
    /// traits cannot see (orphans, killing connections).
    pub async fn pg_client(&self) -> Option<tokio_postgres::Client> {
        match &self.backend {
            Backend::Postgres { db, .. } => Some(connect(&db.config()).await),
            Backend::Sqlite { .. } => None,
        }
    }
}

async fn connect(config: &PgConfig) -> tokio_postgres::Client {
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
}

/// A database made for one test, dropped with it.
struct TestDb {
    admin: PgConfig,
    name: String,
}

impl TestDb {
    async fn create() -> Option<TestDb> {
        let url = match std::env::var("JACKDAW_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
                    panic!(
                        "CI is set but JACKDAW_TEST_POSTGRES_URL is not: the PostgreSQL tests must run in CI"
                    );
                }
                eprintln!("note: JACKDAW_TEST_POSTGRES_URL is unset; skipping the PostgreSQL half");
                return None;
            }
        };
        let admin: PgConfig = url
            .parse()
            .expect("JACKDAW_TEST_POSTGRES_URL is not a PostgreSQL URL");
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "jackdaw_test_{}_{}_{}",
            std::process::id(),
            nanos,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        connect(&admin)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE (does the role have CREATEDB?)");
        Some(TestDb { admin, name })
    }

    fn config(&self) -> PgConfig {
        let mut c = self.admin.clone();
        c.dbname(&self.name);
        c
    }

    /// The test database's options with `host` as the only host.
    fn config_on(&self, host: &str) -> PgConfig {
        let mut c = PgConfig::new();
        c.host(host).dbname(&self.name);
        if let Some(port) = self.admin.get_ports().first() {
            c.port(*port);
        }
        if let Some(user) = self.admin.get_user() {
            c.user(user);
        }
        if let Some(password) = self.admin.get_password() {
            c.password(password);
        }
        c
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop may run on a runtime thread, or while unwinding from a
        // failed assertion: do it on a thread with a runtime of its own.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                connect(&admin)
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let mut f = super::Fixture::sqlite();
                    super::scenarios::$name(&mut f).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(mut f) = super::Fixture::postgres().await else {
                        return;
                    };
                    super::scenarios::$name(&mut f).await;
                }
            )*
        }
    };
}

conformance!(
    accounts_create_exists_credentials,
    accounts_duplicate_create_conflicts,
    accounts_set_credentials_replaces_every_hash,
    accounts_list_is_per_host_and_sorted,
    accounts_delete_removes_account_and_credentials,
    accounts_delete_removes_everything_of_the_user,
    roster_new_user_is_empty_at_version_0,
    roster_put_update_remove_with_groups,
    roster_every_subscription_round_trips,
    roster_versions_increase_and_reads_do_not_change_them,
    roster_concurrent_changes_get_distinct_versions,
    roster_users_are_isolated,
    roster_duplicate_groups_are_stored_once,
    roster_pending_in_add_replace_remove_list,
    roster_survives_reopen,
    offline_push_keeps_arrival_order,
    offline_quota_is_enforced_per_user,
    offline_concurrent_pushes_respect_quota,
    offline_remove_up_to_removes_delivered_only,
    offline_survives_reopen,
    muc_rooms_are_saved_replaced_sorted_and_deleted,
    archive_pages_forwards_and_backwards,
    archive_count_only_and_empty_pages,
    archive_filters_by_with_time_and_ids,
    archive_unknown_ids_and_cursors,
    archive_filters_combine_with_paging,
    archive_batches_are_appended_in_order,
    archive_expiry_prefs_and_deletion,
    push_oldest_device_is_evicted_and_errors_counted,
    push_reregistration_and_unregister,
    blocklist_block_unblock_and_unblock_all,
    oauth_refresh_rotation_detects_reuse,
    oauth_concurrent_rotation_rotates_once,
    oauth_tokens_grants_and_touch,
    oauth_purge_and_account_deletion,
    oauth_secrets_are_created_once_and_keys_kept,
    postgres_recovers_when_connections_are_killed,
);

mod scenarios {
    use super::Fixture;
    use jackdaw_core::storage::{
        ArchivePage, ArchiveQuery, ArchivedMessage, OAuthGrant, OAuthToken, OAuthTokenKind, PushRegistration,
        RefreshRotation, RosterItem, ScramCredentials, ScramHash, SigningKey, StorageError, Subscription,
    };

    // ---- accounts -------------------------------------------------------

    fn creds(hash: ScramHash, seed: u8) -> ScramCredentials {
        ScramCredentials {
            hash,
            salt: vec![seed; 16],
            iterations: 4096 + u32::from(seed),
            stored_key: vec![seed.wrapping_add(1); 32],
            server_key: vec![seed.wrapping_add(2); 32],
        }
    }

    pub async fn accounts_create_exists_credentials(f: &mut Fixture) {
        let a = &f.s.accounts;
        assert!(!a.exists("example.org", "alice").await.unwrap());
        let sha1 = creds(ScramHash::Sha1, 1);
        let sha256 = creds(ScramHash::Sha256, 2);
        a.create("example.org", "alice", &[sha1.clone(), sha256.clone()])
            .await
            .unwrap();
        assert!(a.exists("example.org", "alice").await.unwrap());
        assert!(!a.exists("example.net", "alice").await.unwrap());
        assert_eq!(
            a.credentials("example.org", "alice", ScramHash::Sha1)
                .await
                .unwrap(),
            Some(sha1)
        );
        assert_eq!(
            a.credentials("example.org", "alice", ScramHash::Sha256)
                .await
                .unwrap(),
            Some(sha256)
        );
        assert_eq!(
            a.credentials("example.org", "bob", ScramHash::Sha1)
                .await
                .unwrap(),
            None
        );
        // An account without keys for a hash.
        a.create("h", "u", &[creds(ScramHash::Sha256, 3)]).await.unwrap();
        assert_eq!(a.credentials("h", "u", ScramHash::Sha1).await.unwrap(), None);
        // The largest iteration count survives (u32 does not fit INTEGER).
        let big = ScramCredentials {
            iterations: u32::MAX,
            ..creds(ScramHash::Sha1, 4)
        };
        a.create("h", "big", std::slice::from_ref(&big)).await.unwrap();
        assert_eq!(
            a.credentials("h", "big", ScramHash::Sha1).await.unwrap(),
            Some(big)
        );
    }

    pub async fn accounts_duplicate_create_conflicts(f: &mut Fixture) {
        let a = &f.s.accounts;
        let original = creds(ScramHash::Sha256, 1);
        a.create("h", "alice", std::slice::from_ref(&original))
            .await
            .unwrap();
        let err = a
            .create("h", "alice", &[creds(ScramHash::Sha256, 9)])
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Conflict(_)), "{err:?}");
        assert_eq!(
            a.credentials("h", "alice", ScramHash::Sha256).await.unwrap(),
            Some(original)
        );
    }

    pub async fn accounts_set_credentials_replaces_every_hash(f: &mut Fixture) {
        let a = &f.s.accounts;
        assert!(
            !a.set_credentials("h", "ghost", &[creds(ScramHash::Sha1, 1)])
                .await
                .unwrap()
        );
        assert!(!a.exists("h", "ghost").await.unwrap());
        a.create(
            "h",
            "u",
            &[creds(ScramHash::Sha1, 1), creds(ScramHash::Sha256, 2)],
        )
        .await
        .unwrap();
        let new = creds(ScramHash::Sha256, 7);
        assert!(
            a.set_credentials("h", "u", std::slice::from_ref(&new))
                .await
                .unwrap()
        );
        assert_eq!(
            a.credentials("h", "u", ScramHash::Sha256).await.unwrap(),
            Some(new)
        );
        assert_eq!(a.credentials("h", "u", ScramHash::Sha1).await.unwrap(), None);
    }

    pub async fn accounts_list_is_per_host_and_sorted(f: &mut Fixture) {
        let a = &f.s.accounts;
        // Bytewise order whatever the database's locale: "Zed" < "alice",
        // "bob" < "bob-x" < "bob_x".
        for (host, user) in [
            ("h", "carol"),
            ("h", "alice"),
            ("other", "bob"),
            ("h", "bob"),
            ("h", "Zed"),
            ("h", "bob_x"),
            ("h", "bob-x"),
        ] {
            a.create(host, user, &[]).await.unwrap();
        }
        assert_eq!(
            a.list("h").await.unwrap(),
            ["Zed", "alice", "bob", "bob-x", "bob_x", "carol"]
        );
        assert_eq!(a.list("other").await.unwrap(), ["bob"]);
        assert!(a.list("none").await.unwrap().is_empty());
    }

    pub async fn accounts_delete_removes_account_and_credentials(f: &mut Fixture) {
        let a = &f.s.accounts;
        assert!(!a.delete("h", "u").await.unwrap());
        a.create("h", "u", &[creds(ScramHash::Sha256, 1)]).await.unwrap();
        a.create("h", "v", &[]).await.unwrap();
        assert!(a.delete("h", "u").await.unwrap());
        assert!(!a.exists("h", "u").await.unwrap());
        assert!(!a.delete("h", "u").await.unwrap());
        assert_eq!(a.list("h").await.unwrap(), ["v"]);
        a.create("h", "u", &[]).await.unwrap();
        assert_eq!(a.credentials("h", "u", ScramHash::Sha256).await.unwrap(), None);
    }

    pub async fn accounts_delete_removes_everything_of_the_user(f: &mut Fixture) {
        let s = f.s.clone();
        s.accounts.create("h", "u", &[]).await.unwrap();
        s.accounts.create("h", "keep", &[]).await.unwrap();
        for user in ["u", "keep"] {
            let owner = format!("{user}@h");
            let item = RosterItem {
                jid: "c@h".into(),
                subscription: Subscription::Both,
                groups: vec!["Friends".into()],
                ..Default::default()
            };
            s.rosters.put_item("h", user, &item).await.unwrap();
            s.rosters
                .add_pending_in("h", user, "p@h", "<presence type='subscribe'/>")
                .await
                .unwrap();
            s.offline.push("h", user, "<message/>", 10).await.unwrap();
            s.archive
                .append(&owner, &message(&format!("{user}-1"), 1, "c@h"))
                .await
                .unwrap();
            s.archive.set_prefs(&owner, "<prefs/>").await.unwrap();
            s.push.register(&owner, &reg("push.x", "n"), 5).await.unwrap();
            s.blocklist.block(&owner, &["evil@x".into()]).await.unwrap();
            s.oauth
                .create_grant(
                    &grant(&format!("g-{user}"), user),
                    &[token(
                        &format!("t-{user}"),
                        &format!("g-{user}"),
                        OAuthTokenKind::Access,
                        900,
                    )],
                )
                .await
                .unwrap();
        }
        let (version_before, _) = s.rosters.roster("h", "u").await.unwrap();

        assert!(s.accounts.delete("h", "u").await.unwrap());

        let (version_after, items) = s.rosters.roster("h", "u").await.unwrap();
        assert!(items.is_empty());
        // The version moves on rather than restarting at 0.
        assert!(version_after > version_before);
        assert!(s.rosters.pending_in("h", "u").await.unwrap().is_empty());
        assert_eq!(s.offline.count("h", "u").await.unwrap(), 0);
        assert!(s.offline.list("h", "u").await.unwrap().is_empty());
        assert_eq!(s.archive.query("u@h", &all()).await.unwrap().unwrap().count, 0);
        assert_eq!(s.archive.prefs("u@h").await.unwrap(), None);
        assert!(s.push.registrations("u@h").await.unwrap().is_empty());
        assert!(s.blocklist.blocked("u@h").await.unwrap().is_empty());
        assert!(s.oauth.grants("h", "u").await.unwrap().is_empty());
        assert!(s.oauth.token("t-u", 100).await.unwrap().is_none());
        if let Some(client) = f.pg_client().await {
            let orphans: i64 = client
                .query_one(
                    "SELECT COUNT(*) FROM roster_groups WHERE item_id NOT IN (SELECT id FROM roster_items)",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(orphans, 0);
        }

        // Other users are untouched.
        assert_eq!(s.rosters.roster("h", "keep").await.unwrap().1.len(), 1);
        assert_eq!(s.rosters.pending_in("h", "keep").await.unwrap().len(), 1);
        assert_eq!(s.offline.count("h", "keep").await.unwrap(), 1);
        assert_eq!(s.archive.query("keep@h", &all()).await.unwrap().unwrap().count, 1);
        assert!(s.archive.prefs("keep@h").await.unwrap().is_some());
        assert_eq!(s.push.registrations("keep@h").await.unwrap().len(), 1);
        assert_eq!(s.blocklist.blocked("keep@h").await.unwrap(), ["evil@x"]);
        assert_eq!(s.oauth.grants("h", "keep").await.unwrap().len(), 1);
        // Deleting a user without an account row still cleans up.
        s.offline.push("h", "ghost", "<message/>", 10).await.unwrap();
        assert!(!s.accounts.delete("h", "ghost").await.unwrap());
        assert_eq!(s.offline.count("h", "ghost").await.unwrap(), 0);
    }

    // ---- rosters --------------------------------------------------------

    fn item(jid: &str, groups: &[&str]) -> RosterItem {
        RosterItem {
            jid: jid.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    pub async fn roster_new_user_is_empty_at_version_0(f: &mut Fixture) {
        assert_eq!(f.s.rosters.roster("h", "u").await.unwrap(), (0, vec![]));
        assert_eq!(f.s.rosters.item("h", "u", "c@h").await.unwrap(), None);
    }

    pub async fn roster_put_update_remove_with_groups(f: &mut Fixture) {
        let r = &f.s.rosters;
        let mut juliet = RosterItem {
            jid: "juliet@example.com".into(),
            name: Some("Juliet".into()),
            subscription: Subscription::To,
            ask: true,
            approved: false,
            groups: vec!["Friends".into(), "Capulets".into()],
        };
        assert_eq!(r.put_item("h", "romeo", &juliet).await.unwrap(), 1);
        assert_eq!(
            r.item("h", "romeo", "juliet@example.com").await.unwrap(),
            Some(juliet.clone())
        );
        let nurse = item("nurse@example.com", &[]);
        assert_eq!(r.put_item("h", "romeo", &nurse).await.unwrap(), 2);
        juliet.name = None;
        juliet.subscription = Subscription::Both;
        juliet.ask = false;
        juliet.approved = true;
        juliet.groups = vec!["Lovers".into(), "Friends".into()];
        assert_eq!(r.put_item("h", "romeo", &juliet).await.unwrap(), 3);
        let (version, items) = r.roster("h", "romeo").await.unwrap();
        assert_eq!(version, 3);
        // Items keep their first-insertion order across updates.
        assert_eq!(items, vec![juliet.clone(), nurse.clone()]);
        assert_eq!(
            r.item("h", "romeo", "juliet@example.com").await.unwrap(),
            Some(juliet)
        );
        assert_eq!(
            r.remove_item("h", "romeo", "juliet@example.com").await.unwrap(),
            Some(4)
        );
        assert_eq!(r.item("h", "romeo", "juliet@example.com").await.unwrap(), None);
        assert_eq!(r.roster("h", "romeo").await.unwrap(), (4, vec![nurse]));
    }

    pub async fn roster_every_subscription_round_trips(f: &mut Fixture) {
        for sub in [
            Subscription::None,
            Subscription::To,
            Subscription::From,
            Subscription::Both,
        ] {
            let it = RosterItem {
                jid: format!("{}@h", sub.as_str()),
                subscription: sub,
                ..Default::default()
            };
            f.s.rosters.put_item("h", "u", &it).await.unwrap();
            assert_eq!(f.s.rosters.item("h", "u", &it.jid).await.unwrap(), Some(it));
        }
    }

    pub async fn roster_versions_increase_and_reads_do_not_change_them(f: &mut Fixture) {
        let r = &f.s.rosters;
        let mut last = 0;
        for i in 0..5 {
            let v = r
                .put_item("h", "u", &item(&format!("c{i}@h"), &["g"]))
                .await
                .unwrap();
            assert!(v > last, "{v} after {last}");
            last = v;
            assert_eq!(r.roster("h", "u").await.unwrap().0, last);
            r.item("h", "u", "c0@h").await.unwrap();
            assert_eq!(r.roster("h", "u").await.unwrap().0, last);
        }
        let v = r.put_item("h", "u", &item("c0@h", &["g"])).await.unwrap();
        assert!(v > last);
        last = v;
        assert_eq!(r.remove_item("h", "u", "absent@h").await.unwrap(), None);
        assert_eq!(r.roster("h", "u").await.unwrap().0, last);
        let v = r.remove_item("h", "u", "c1@h").await.unwrap().unwrap();
        assert!(v > last);
        r.add_pending_in("h", "u", "p@h", "<presence/>").await.unwrap();
        r.remove_pending_in("h", "u", "p@h").await.unwrap();
        assert_eq!(r.roster("h", "u").await.unwrap().0, v);
    }

    pub async fn roster_concurrent_changes_get_distinct_versions(f: &mut Fixture) {
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let r = f.s.rosters.clone();
                tokio::spawn(async move { r.put_item("h", "u", &item(&format!("c{i}@h"), &["g"])).await })
            })
            .collect();
        let mut versions = Vec::new();
        for t in tasks {
            versions.push(t.await.unwrap().unwrap());
        }
        versions.sort();
        assert_eq!(versions, (1..=10).collect::<Vec<u64>>());
        let (version, items) = f.s.rosters.roster("h", "u").await.unwrap();
        assert_eq!((version, items.len()), (10, 10));
    }

    pub async fn roster_users_are_isolated(f: &mut Fixture) {
        let r = &f.s.rosters;
        r.put_item("h", "a", &item("c@h", &["A"])).await.unwrap();
        r.put_item("h", "a", &item("d@h", &[])).await.unwrap();
        assert_eq!(r.put_item("h", "b", &item("c@h", &["B"])).await.unwrap(), 1);
        assert_eq!(r.put_item("other", "a", &item("c@h", &[])).await.unwrap(), 1);
        assert_eq!(r.roster("h", "b").await.unwrap(), (1, vec![item("c@h", &["B"])]));
        assert_eq!(r.roster("h", "a").await.unwrap().1.len(), 2);
        assert_eq!(r.remove_item("h", "b", "d@h").await.unwrap(), None);
    }

    pub async fn roster_duplicate_groups_are_stored_once(f: &mut Fixture) {
        f.s.rosters
            .put_item("h", "u", &item("c@h", &["X", "Y", "X"]))
            .await
            .unwrap();
        assert_eq!(
            f.s.rosters.item("h", "u", "c@h").await.unwrap().unwrap().groups,
            ["X", "Y"]
        );
        assert_eq!(
            f.s.rosters.roster("h", "u").await.unwrap().1[0].groups,
            ["X", "Y"]
        );
    }

    pub async fn roster_pending_in_add_replace_remove_list(f: &mut Fixture) {
        let r = &f.s.rosters;
        assert!(r.pending_in("h", "u").await.unwrap().is_empty());
        r.add_pending_in("h", "u", "b@h", "<presence id='1'/>")
            .await
            .unwrap();
        r.add_pending_in("h", "u", "a@h", "<presence id='2'/>")
            .await
            .unwrap();
        r.add_pending_in("h", "other", "a@h", "<presence id='x'/>")
            .await
            .unwrap();
        r.add_pending_in("h", "u", "b@h", "<presence id='3'/>")
            .await
            .unwrap();
        // Within one second, ordered by contact.
        let pending = r.pending_in("h", "u").await.unwrap();
        let mut sorted = pending.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                ("a@h".to_string(), "<presence id='2'/>".to_string()),
                ("b@h".to_string(), "<presence id='3'/>".to_string()),
            ]
        );
        assert!(r.remove_pending_in("h", "u", "a@h").await.unwrap());
        assert!(!r.remove_pending_in("h", "u", "a@h").await.unwrap());
        assert_eq!(
            r.pending_in("h", "u").await.unwrap(),
            [("b@h".to_string(), "<presence id='3'/>".to_string())]
        );
        assert_eq!(r.pending_in("h", "other").await.unwrap().len(), 1);
    }

    pub async fn roster_survives_reopen(f: &mut Fixture) {
        let it = item("c@h", &["G"]);
        f.s.rosters.put_item("h", "u", &it).await.unwrap();
        f.s.rosters
            .add_pending_in("h", "u", "p@h", "<presence/>")
            .await
            .unwrap();
        f.reopen().await;
        assert_eq!(f.s.rosters.roster("h", "u").await.unwrap(), (1, vec![it]));
        assert_eq!(f.s.rosters.pending_in("h", "u").await.unwrap().len(), 1);
    }

    // ---- offline --------------------------------------------------------

    fn stanzas(messages: &[jackdaw_core::storage::OfflineMessage]) -> Vec<&str> {
        messages.iter().map(|m| m.stanza.as_str()).collect()
    }

    pub async fn offline_push_keeps_arrival_order(f: &mut Fixture) {
        let o = &f.s.offline;
        assert!(o.list("h", "u").await.unwrap().is_empty());
        for i in 0..5 {
            o.push("h", "u", &format!("<message id='{i}'/>"), 100)
                .await
                .unwrap();
        }
        o.push("h", "other", "<message/>", 100).await.unwrap();
        let messages = o.list("h", "u").await.unwrap();
        assert_eq!(
            stanzas(&messages),
            (0..5).map(|i| format!("<message id='{i}'/>")).collect::<Vec<_>>()
        );
        assert!(messages.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(o.count("h", "u").await.unwrap(), 5);
        assert_eq!(o.count("h", "other").await.unwrap(), 1);
    }

    pub async fn offline_quota_is_enforced_per_user(f: &mut Fixture) {
        let o = &f.s.offline;
        for _ in 0..3 {
            o.push("h", "u", "<message/>", 3).await.unwrap();
        }
        let err = o.push("h", "u", "<message/>", 3).await.unwrap_err();
        assert!(matches!(err, StorageError::QuotaExceeded), "{err:?}");
        assert_eq!(o.count("h", "u").await.unwrap(), 3);
        assert!(matches!(
            o.push("h", "u", "<message/>", 1).await,
            Err(StorageError::QuotaExceeded)
        ));
        assert!(matches!(
            o.push("h", "v", "<message/>", 0).await,
            Err(StorageError::QuotaExceeded)
        ));
        o.push("h", "w", "<message/>", 3).await.unwrap();
    }

    pub async fn offline_concurrent_pushes_respect_quota(f: &mut Fixture) {
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let o = f.s.offline.clone();
                tokio::spawn(async move { o.push("h", "u", &format!("<message id='{i}'/>"), 7).await })
            })
            .collect();
        let mut stored = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => stored += 1,
                Err(StorageError::QuotaExceeded) => {}
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        assert_eq!(stored, 7);
        assert_eq!(f.s.offline.count("h", "u").await.unwrap(), 7);
    }

    pub async fn offline_remove_up_to_removes_delivered_only(f: &mut Fixture) {
        let o = &f.s.offline;
        for i in 0..4 {
            o.push("h", "u", &format!("<message id='{i}'/>"), 100)
                .await
                .unwrap();
        }
        o.push("h", "other", "<message/>", 100).await.unwrap();
        let messages = o.list("h", "u").await.unwrap();
        o.remove_up_to("h", "u", messages[1].id).await.unwrap();
        assert_eq!(o.list("h", "u").await.unwrap(), messages[2..]);
        assert_eq!(o.count("h", "u").await.unwrap(), 2);
        assert_eq!(o.count("h", "other").await.unwrap(), 1);
        o.remove_up_to("h", "u", messages[3].id).await.unwrap();
        assert_eq!(o.count("h", "u").await.unwrap(), 0);
        // Ids are never reused: a late remove_up_to cannot take a newer one.
        o.push("h", "u", "<message id='new'/>", 100).await.unwrap();
        o.remove_up_to("h", "u", messages[3].id).await.unwrap();
        let left = o.list("h", "u").await.unwrap();
        assert_eq!(stanzas(&left), ["<message id='new'/>"]);
        assert!(left[0].id > messages[3].id);
    }

    pub async fn offline_survives_reopen(f: &mut Fixture) {
        f.s.offline.push("h", "u", "<message id='a'/>", 10).await.unwrap();
        f.s.offline.push("h", "u", "<message id='b'/>", 10).await.unwrap();
        f.reopen().await;
        let messages = f.s.offline.list("h", "u").await.unwrap();
        assert_eq!(stanzas(&messages), ["<message id='a'/>", "<message id='b'/>"]);
        f.s.offline.remove_up_to("h", "u", messages[0].id).await.unwrap();
        f.reopen().await;
        assert_eq!(
            stanzas(&f.s.offline.list("h", "u").await.unwrap()),
            ["<message id='b'/>"]
        );
        // Ids keep growing across the restart.
        f.s.offline.push("h", "u", "<message id='c'/>", 10).await.unwrap();
        let after = f.s.offline.list("h", "u").await.unwrap();
        assert!(after[1].id > messages[1].id);
    }

    // ---- muc ------------------------------------------------------------

    pub async fn muc_rooms_are_saved_replaced_sorted_and_deleted(f: &mut Fixture) {
        let m = &f.s.muc;
        m.save_room("rooms.x", "b", "{}").await.unwrap();
        m.save_room("rooms.x", "a", "{\"v\":1}").await.unwrap();
        m.save_room("rooms.x", "a", "{\"v\":2}").await.unwrap();
        m.save_room("rooms.x", "Z", "{}").await.unwrap();
        m.save_room("other.x", "c", "{}").await.unwrap();
        assert_eq!(
            m.rooms("rooms.x").await.unwrap(),
            vec![
                ("Z".into(), "{}".into()),
                ("a".into(), "{\"v\":2}".into()),
                ("b".into(), "{}".into())
            ]
        );
        m.delete_room("rooms.x", "a").await.unwrap();
        m.delete_room("rooms.x", "absent").await.unwrap();
        assert_eq!(m.rooms("rooms.x").await.unwrap().len(), 2);
        f.reopen().await;
        assert_eq!(f.s.muc.rooms("rooms.x").await.unwrap().len(), 2);
        assert_eq!(f.s.muc.rooms("other.x").await.unwrap().len(), 1);
        assert!(f.s.muc.rooms("none.x").await.unwrap().is_empty());
    }

    // ---- archive --------------------------------------------------------

    fn message(id: &str, ts: i64, with: &str) -> ArchivedMessage {
        ArchivedMessage {
            id: id.into(),
            timestamp: ts,
            with: with.into(),
            stanza: format!("<message id='{id}'/>"),
        }
    }

    fn ids(page: &ArchivePage) -> Vec<&str> {
        page.messages.iter().map(|m| m.id.as_str()).collect()
    }

    fn all() -> ArchiveQuery {
        ArchiveQuery {
            max: 100,
            ..Default::default()
        }
    }

    /// alice@x: m1..m7 at 10..70, even ones with bob@x/phone, odd ones
    /// with carol@x; dave@x: d1.
    async fn fill(f: &Fixture) {
        for i in 1..=7 {
            let with = if i % 2 == 0 { "bob@x/phone" } else { "carol@x" };
            f.s.archive
                .append("alice@x", &message(&format!("m{i}"), i * 10, with))
                .await
                .unwrap();
        }
        f.s.archive
            .append("dave@x", &message("d1", 500, "alice@x"))
            .await
            .unwrap();
    }

    pub async fn archive_pages_forwards_and_backwards(f: &mut Fixture) {
        fill(f).await;
        let a = &f.s.archive;
        let mut q = ArchiveQuery {
            max: 3,
            ..Default::default()
        };
        let first = a.query("alice@x", &q).await.unwrap().unwrap();
        assert_eq!(ids(&first), ["m1", "m2", "m3"]);
        assert!(!first.complete);
        assert_eq!((first.count, first.first_index), (7, 0));
        q.page_after = Some("m3".into());
        let second = a.query("alice@x", &q).await.unwrap().unwrap();
        assert_eq!(ids(&second), ["m4", "m5", "m6"]);
        assert!(!second.complete);
        assert_eq!((second.count, second.first_index), (7, 3));
        q.page_after = Some("m6".into());
        let tail = a.query("alice@x", &q).await.unwrap().unwrap();
        assert_eq!(ids(&tail), ["m7"]);
        assert!(tail.complete);
        assert_eq!(tail.first_index, 6);
        q.page_after = Some("m7".into());
        let past = a.query("alice@x", &q).await.unwrap().unwrap();
        assert!(past.messages.is_empty() && past.complete);
        assert_eq!((past.count, past.first_index), (7, 0));
        // Exactly max left: complete, as the result set has nothing more.
        q.page_after = Some("m4".into());
        let exact = a.query("alice@x", &q).await.unwrap().unwrap();
        assert_eq!(ids(&exact), ["m5", "m6", "m7"]);
        assert!(exact.complete);

        q.page_after = None;
        q.page_before = Some(String::new());
        let last = a.query("alice@x", &q).await.unwrap().unwrap();
        assert_eq!(ids(&last), ["m5", "m6", "m7"]);
        assert!(!last.complete);
        assert_eq!((last.count, last.first_index), (7, 4));
        q.page_before = Some("m5".into());
        let before = a.query("alice@x", &q).await.unwrap().unwrap();
        assert_eq!(ids(&before), ["m2", "m3", "m4"]);
        assert!(!before.complete);
        assert_eq!(before.first_index, 1);
        q.page_before = Some("m2".into());
        let head = a.query("alice@x", &q).await.unwrap().unwrap();
        assert_eq!(ids(&head), ["m1"]);
        assert!(head.complete);
        assert_eq!(head.first_index, 0);
        q.page_before = Some("m4".into());
        let exact = a.query("alice@x", &q).await.unwrap().unwrap();
        assert_eq!(ids(&exact), ["m1", "m2", "m3"]);
        assert!(exact.complete);
    }

    pub async fn archive_count_only_and_empty_pages(f: &mut Fixture) {
        fill(f).await;
        let a = &f.s.archive;
        let count_only = ArchiveQuery::default();
        let page = a.query("alice@x", &count_only).await.unwrap().unwrap();
        assert!(page.messages.is_empty());
        assert!(!page.complete);
        assert_eq!((page.count, page.first_index), (7, 0));
        let page = a.query("nobody@x", &all()).await.unwrap().unwrap();
        assert_eq!(
            page,
            ArchivePage {
                messages: vec![],
                complete: true,
                count: 0,
                first_index: 0,
            }
        );
        let whole = a.query("alice@x", &all()).await.unwrap().unwrap();
        assert_eq!(whole.messages.len(), 7);
        assert!(whole.complete);
        assert_eq!(
            whole.messages[1],
            ArchivedMessage {
                id: "m2".into(),
                timestamp: 20,
                with: "bob@x/phone".into(),
                stanza: "<message id='m2'/>".into(),
            }
        );
    }

    pub async fn archive_filters_by_with_time_and_ids(f: &mut Fixture) {
        fill(f).await;
        let a = &f.s.archive;
        let q = |f: fn(&mut ArchiveQuery)| {
            let mut q = all();
            f(&mut q);
            q
        };
        let bob = a
            .query("alice@x", &q(|q| q.with = Some("bob@x".into())))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ids(&bob), ["m2", "m4", "m6"]);
        assert_eq!(bob.count, 3);
        let phone = a
            .query("alice@x", &q(|q| q.with = Some("bob@x/phone".into())))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ids(&phone), ["m2", "m4", "m6"]);
        let other = a
            .query("alice@x", &q(|q| q.with = Some("bob@x/other".into())))
            .await
            .unwrap()
            .unwrap();
        assert!(other.messages.is_empty());
        let window = a
            .query(
                "alice@x",
                &q(|q| {
                    q.start = Some(20);
                    q.end = Some(40);
                }),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ids(&window), ["m2", "m3", "m4"]);
        let from = a
            .query("alice@x", &q(|q| q.start = Some(61)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ids(&from), ["m7"]);
        let until = a
            .query("alice@x", &q(|q| q.end = Some(10)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ids(&until), ["m1"]);
        let picked = a
            .query(
                "alice@x",
                &q(|q| q.ids = vec!["m7".into(), "m2".into(), "m7".into()]),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ids(&picked), ["m2", "m7"]);
        assert_eq!(picked.count, 2);
        let after = a
            .query("alice@x", &q(|q| q.after_id = Some("m5".into())))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ids(&after), ["m6", "m7"]);
        let before = a
            .query("alice@x", &q(|q| q.before_id = Some("m3".into())))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ids(&before), ["m1", "m2"]);
        let between = a
            .query(
                "alice@x",
                &q(|q| {
                    q.after_id = Some("m1".into());
                    q.before_id = Some("m7".into());
                    q.with = Some("carol@x".into());
                }),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ids(&between), ["m3", "m5"]);
    }

    pub async fn archive_unknown_ids_and_cursors(f: &mut Fixture) {
        fill(f).await;
        let a = &f.s.archive;
        let cases: [fn(&mut ArchiveQuery); 6] = [
            |q| q.ids = vec!["m7".into(), "d1".into()],
            |q| q.after_id = Some("nope".into()),
            |q| q.before_id = Some("d1".into()),
            |q| q.page_after = Some("nope".into()),
            |q| q.page_before = Some("d1".into()),
            |q| q.ids = vec!["gone".into()],
        ];
        for (i, case) in cases.iter().enumerate() {
            let mut q = all();
            case(&mut q);
            assert!(a.query("alice@x", &q).await.unwrap().is_none(), "case {i}: {q:?}");
        }
    }

    pub async fn archive_filters_combine_with_paging(f: &mut Fixture) {
        fill(f).await;
        let a = &f.s.archive;
        let mut q = ArchiveQuery {
            with: Some("carol@x".into()),
            max: 2,
            ..Default::default()
        };
        let first = a.query("alice@x", &q).await.unwrap().unwrap();
        assert_eq!(ids(&first), ["m1", "m3"]);
        assert_eq!((first.count, first.first_index, first.complete), (4, 0, false));
        q.page_after = Some("m3".into());
        let second = a.query("alice@x", &q).await.unwrap().unwrap();
        assert_eq!(ids(&second), ["m5", "m7"]);
        assert_eq!((second.count, second.first_index, second.complete), (4, 2, true));
        q.page_after = None;
        q.page_before = Some("m7".into());
        let back = a.query("alice@x", &q).await.unwrap().unwrap();
        assert_eq!(ids(&back), ["m3", "m5"]);
        assert_eq!((back.first_index, back.complete), (1, false));
        // A cursor outside the filtered set still positions the page.
        q.page_before = None;
        q.page_after = Some("m2".into());
        let from_bob = a.query("alice@x", &q).await.unwrap().unwrap();
        assert_eq!(ids(&from_bob), ["m3", "m5"]);
        assert_eq!(from_bob.first_index, 1);
    }

    pub async fn archive_batches_are_appended_in_order(f: &mut Fixture) {
        let batch: Vec<(String, ArchivedMessage)> = (1..=3)
            .map(|i| ("alice@x".to_string(), message(&format!("b{i}"), 4 - i, "bob@x")))
            .chain(std::iter::once((
                "bob@x".to_string(),
                message("b1", 1, "alice@x"),
            )))
            .collect();
        f.s.archive.append_many(&batch).await.unwrap();
        f.s.archive
            .append("alice@x", &message("b4", 0, "bob@x"))
            .await
            .unwrap();
        // Arrival order, not timestamp order; the same id under another
        // owner is another message.
        assert_eq!(
            ids(&f.s.archive.query("alice@x", &all()).await.unwrap().unwrap()),
            ["b1", "b2", "b3", "b4"]
        );
        assert_eq!(
            f.s.archive.query("bob@x", &all()).await.unwrap().unwrap().count,
            1
        );
        // A duplicate id fails the whole batch.
        let dup = vec![
            ("alice@x".to_string(), message("b5", 9, "bob@x")),
            ("alice@x".to_string(), message("b1", 9, "bob@x")),
        ];
        assert!(matches!(
            f.s.archive.append_many(&dup).await,
            Err(StorageError::Backend(_))
        ));
        assert_eq!(
            f.s.archive.query("alice@x", &all()).await.unwrap().unwrap().count,
            4
        );
    }

    pub async fn archive_expiry_prefs_and_deletion(f: &mut Fixture) {
        fill(f).await;
        let a = &f.s.archive;
        assert_eq!(a.expire(31).await.unwrap(), 3);
        assert_eq!(
            ids(&a.query("alice@x", &all()).await.unwrap().unwrap()),
            ["m4", "m5", "m6", "m7"]
        );
        assert_eq!(a.expire(31).await.unwrap(), 0);
        assert_eq!(a.prefs("alice@x").await.unwrap(), None);
        a.set_prefs("alice@x", "<prefs default='never'/>").await.unwrap();
        a.set_prefs("alice@x", "<prefs default='roster'/>").await.unwrap();
        assert_eq!(
            a.prefs("alice@x").await.unwrap().as_deref(),
            Some("<prefs default='roster'/>")
        );
        a.delete_owner("alice@x").await.unwrap();
        assert_eq!(a.query("alice@x", &all()).await.unwrap().unwrap().count, 0);
        assert!(a.prefs("alice@x").await.unwrap().is_none());
        assert_eq!(a.query("dave@x", &all()).await.unwrap().unwrap().count, 1);
        // Ids of a deleted archive may be used again.
        a.append("alice@x", &message("m1", 1, "bob@x")).await.unwrap();
    }

    // ---- push -----------------------------------------------------------

    fn reg(service: &str, node: &str) -> PushRegistration {
        PushRegistration {
            service: service.into(),
            node: node.into(),
            options: String::new(),
            errors: 0,
        }
    }

    fn nodes(regs: &[PushRegistration]) -> Vec<&str> {
        regs.iter().map(|r| r.node.as_str()).collect()
    }

    pub async fn push_oldest_device_is_evicted_and_errors_counted(f: &mut Fixture) {
        let p = &f.s.push;
        assert!(
            p.register("u@x", &reg("push.x", "a"), 2)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            p.register("u@x", &reg("push.x", "b"), 2)
                .await
                .unwrap()
                .is_empty()
        );
        let evicted = p.register("u@x", &reg("push.x", "c"), 2).await.unwrap();
        assert_eq!(nodes(&evicted), ["a"]);
        assert_eq!(nodes(&p.registrations("u@x").await.unwrap()), ["b", "c"]);
        // A lower limit evicts several; 0 still keeps the newest one.
        let evicted = p.register("u@x", &reg("push.y", "d"), 0).await.unwrap();
        assert_eq!(nodes(&evicted), ["b", "c"]);
        assert_eq!(nodes(&p.registrations("u@x").await.unwrap()), ["d"]);
        assert_eq!(p.record_error("u@x", "push.y", "d").await.unwrap(), 1);
        assert_eq!(p.record_error("u@x", "push.y", "d").await.unwrap(), 2);
        assert_eq!(p.registrations("u@x").await.unwrap()[0].errors, 2);
        assert_eq!(p.record_error("u@x", "push.y", "absent").await.unwrap(), 0);
        p.clear_errors("u@x", "push.y", "d").await.unwrap();
        assert_eq!(p.registrations("u@x").await.unwrap()[0].errors, 0);
        assert_eq!(p.unregister("u@x", "push.y", None).await.unwrap(), 1);
        assert!(p.registrations("u@x").await.unwrap().is_empty());
    }

    pub async fn push_reregistration_and_unregister(f: &mut Fixture) {
        let p = &f.s.push;
        for n in ["a", "b", "c"] {
            p.register("u@x", &reg("push.x", n), 5).await.unwrap();
        }
        p.register("v@x", &reg("push.x", "a"), 5).await.unwrap();
        p.record_error("u@x", "push.x", "a").await.unwrap();
        // Re-registering makes it the newest, with new options and no errors.
        let again = PushRegistration {
            options: "<x xmlns='jabber:x:data'/>".into(),
            ..reg("push.x", "a")
        };
        assert!(p.register("u@x", &again, 3).await.unwrap().is_empty());
        let regs = p.registrations("u@x").await.unwrap();
        assert_eq!(nodes(&regs), ["b", "c", "a"]);
        assert_eq!(regs[2], again);
        let evicted = p.register("u@x", &reg("push.z", "d"), 3).await.unwrap();
        assert_eq!(nodes(&evicted), ["b"]);
        assert_eq!(p.unregister("u@x", "push.x", Some("c")).await.unwrap(), 1);
        assert_eq!(p.unregister("u@x", "push.x", Some("c")).await.unwrap(), 0);
        assert_eq!(p.unregister("u@x", "push.x", None).await.unwrap(), 1);
        assert_eq!(nodes(&p.registrations("u@x").await.unwrap()), ["d"]);
        assert_eq!(nodes(&p.registrations("v@x").await.unwrap()), ["a"]);
    }

    // ---- blocklist ------------------------------------------------------

    pub async fn blocklist_block_unblock_and_unblock_all(f: &mut Fixture) {
        let b = &f.s.blocklist;
        assert!(b.blocked("a@x").await.unwrap().is_empty());
        b.block(
            "a@x",
            &["b@x".into(), "evil.example".into(), "b@x".into(), "Zed@x".into()],
        )
        .await
        .unwrap();
        b.block("a@x", &["b@x".into()]).await.unwrap();
        b.block("a@x", &[]).await.unwrap();
        b.block("other@x", &["b@x".into()]).await.unwrap();
        assert_eq!(b.blocked("a@x").await.unwrap(), ["Zed@x", "b@x", "evil.example"]);
        b.unblock("a@x", Some(&["b@x".into(), "never@x".into()]))
            .await
            .unwrap();
        assert_eq!(b.blocked("a@x").await.unwrap(), ["Zed@x", "evil.example"]);
        b.unblock("a@x", Some(&[])).await.unwrap();
        assert_eq!(b.blocked("a@x").await.unwrap().len(), 2);
        b.unblock("a@x", None).await.unwrap();
        assert!(b.blocked("a@x").await.unwrap().is_empty());
        assert_eq!(b.blocked("other@x").await.unwrap(), ["b@x"]);
    }

    // ---- oauth ----------------------------------------------------------

    fn grant(id: &str, user: &str) -> OAuthGrant {
        OAuthGrant {
            id: id.into(),
            host: "h".into(),
            username: user.into(),
            client_hash: "c".into(),
            client_name: "App".into(),
            client_uri: "https://app.example/".into(),
            scope: "xmpp".into(),
            created_at: 100,
            last_used_at: 100,
        }
    }

    fn token(hash: &str, grant: &str, kind: OAuthTokenKind, expires_at: i64) -> OAuthToken {
        OAuthToken {
            hash: hash.into(),
            grant_id: grant.into(),
            kind,
            scope: "xmpp".into(),
            created_at: 100,
            expires_at,
            used: false,
        }
    }

    pub async fn oauth_refresh_rotation_detects_reuse(f: &mut Fixture) {
        let o = &f.s.oauth;
        o.create_grant(
            &grant("g1", "u"),
            &[
                token("a1", "g1", OAuthTokenKind::Access, 200),
                token("r1", "g1", OAuthTokenKind::Refresh, 1000),
            ],
        )
        .await
        .unwrap();
        let (t, g) = o.token("a1", 150).await.unwrap().unwrap();
        assert_eq!(t, token("a1", "g1", OAuthTokenKind::Access, 200));
        assert_eq!(g, grant("g1", "u"));
        assert!(o.token("a1", 200).await.unwrap().is_none(), "expired");
        let next = [
            token("a2", "g1", OAuthTokenKind::Access, 400),
            token("r2", "g1", OAuthTokenKind::Refresh, 1200),
            // Tokens of another grant are not stored by a rotation.
            token("x9", "other", OAuthTokenKind::Access, 400),
        ];
        assert_eq!(
            o.rotate_refresh("r1", &next, 150).await.unwrap(),
            RefreshRotation::Rotated
        );
        assert!(o.token("r1", 150).await.unwrap().unwrap().0.used);
        assert!(o.token("a2", 150).await.unwrap().is_some());
        assert!(o.token("x9", 150).await.unwrap().is_none());
        assert_eq!(
            o.rotate_refresh("r1", &next, 160).await.unwrap(),
            RefreshRotation::AlreadyUsed
        );
        assert_eq!(
            o.rotate_refresh("a2", &next, 160).await.unwrap(),
            RefreshRotation::Unknown,
            "an access token is not a refresh token"
        );
        assert_eq!(
            o.rotate_refresh("r2", &[], 1200).await.unwrap(),
            RefreshRotation::Unknown,
            "expired"
        );
        assert_eq!(
            o.rotate_refresh("nope", &[], 100).await.unwrap(),
            RefreshRotation::Unknown
        );
        assert_eq!(o.grant("g1").await.unwrap().unwrap().last_used_at, 150);
        assert!(o.delete_grant("g1").await.unwrap());
        assert!(!o.delete_grant("g1").await.unwrap());
        assert!(o.token("r2", 150).await.unwrap().is_none(), "cascade");
        assert!(o.grant("g1").await.unwrap().is_none());
    }

    pub async fn oauth_concurrent_rotation_rotates_once(f: &mut Fixture) {
        f.s.oauth
            .create_grant(
                &grant("g1", "u"),
                &[token("r1", "g1", OAuthTokenKind::Refresh, 1000)],
            )
            .await
            .unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let o = f.s.oauth.clone();
                tokio::spawn(async move {
                    let new = [token(&format!("r2-{i}"), "g1", OAuthTokenKind::Refresh, 1200)];
                    o.rotate_refresh("r1", &new, 150).await
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap().unwrap());
        }
        let rotated = outcomes
            .iter()
            .filter(|o| **o == RefreshRotation::Rotated)
            .count();
        let reused = outcomes
            .iter()
            .filter(|o| **o == RefreshRotation::AlreadyUsed)
            .count();
        assert_eq!((rotated, reused), (1, 7), "{outcomes:?}");
    }

    pub async fn oauth_tokens_grants_and_touch(f: &mut Fixture) {
        let o = &f.s.oauth;
        let mut older = grant("g-old", "u");
        older.created_at = 50;
        let mut b = grant("g-b", "u");
        b.created_at = 100;
        let a = grant("g-a", "u");
        o.create_grant(&older, &[]).await.unwrap();
        o.create_grant(&b, &[token("t1", "g-b", OAuthTokenKind::Access, 500)])
            .await
            .unwrap();
        o.create_grant(&a, &[]).await.unwrap();
        o.create_grant(&grant("g-v", "v"), &[]).await.unwrap();
        // Newest first, ties by id.
        let list: Vec<String> = o
            .grants("h", "u")
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.id)
            .collect();
        assert_eq!(list, ["g-a", "g-b", "g-old"]);
        assert!(o.grants("other", "u").await.unwrap().is_empty());
        // A duplicate grant id is an error and stores nothing.
        assert!(o.create_grant(&grant("g-a", "u"), &[]).await.is_err());
        o.touch_grant("g-b", 300).await.unwrap();
        o.touch_grant("g-b", 200).await.unwrap();
        assert_eq!(
            o.grant("g-b").await.unwrap().unwrap().last_used_at,
            300,
            "never backwards"
        );
        assert!(o.delete_token("t1").await.unwrap());
        assert!(!o.delete_token("t1").await.unwrap());
        assert!(o.grant("g-b").await.unwrap().is_some(), "the grant stays");
    }

    pub async fn oauth_purge_and_account_deletion(f: &mut Fixture) {
        let o = &f.s.oauth;
        o.create_grant(
            &grant("g1", "u"),
            &[token("a1", "g1", OAuthTokenKind::Access, 200)],
        )
        .await
        .unwrap();
        o.create_grant(
            &grant("g2", "u"),
            &[token("r2", "g2", OAuthTokenKind::Refresh, 900)],
        )
        .await
        .unwrap();
        o.create_grant(
            &grant("g3", "u"),
            &[
                token("a3", "g3", OAuthTokenKind::Access, 250),
                token("r3", "g3", OAuthTokenKind::Refresh, 950),
            ],
        )
        .await
        .unwrap();
        assert_eq!(o.grants("h", "u").await.unwrap().len(), 3);
        assert_eq!(o.purge_expired(300).await.unwrap(), 1);
        let mut left: Vec<String> = o
            .grants("h", "u")
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.id)
            .collect();
        left.sort();
        assert_eq!(left, ["g2", "g3"]);
        assert!(
            o.token("a3", 100).await.unwrap().is_none(),
            "expired token purged"
        );
        assert!(o.token("r3", 100).await.unwrap().is_some());
        assert_eq!(o.purge_expired(300).await.unwrap(), 0);
        f.s.accounts.delete("h", "u").await.unwrap();
        assert!(o.grants("h", "u").await.unwrap().is_empty());
        assert!(o.token("r2", 100).await.unwrap().is_none());
    }

    pub async fn oauth_secrets_are_created_once_and_keys_kept(f: &mut Fixture) {
        let o = &f.s.oauth;
        assert_eq!(o.secret("s", b"one").await.unwrap(), b"one");
        assert_eq!(o.secret("s", b"two").await.unwrap(), b"one");
        assert_eq!(o.secret("t", &[0, 255, 1]).await.unwrap(), [0, 255, 1]);
        assert!(o.signing_keys().await.unwrap().is_empty());
        let key = SigningKey {
            kid: "k1".into(),
            algorithm: "ES256".into(),
            private_key: vec![1, 2, 3],
            created_at: 5,
        };
        o.add_signing_key(&key).await.unwrap();
        assert_eq!(o.signing_keys().await.unwrap(), vec![key.clone()]);
        // Rotated in within the same second, it still comes last.
        let newer = SigningKey {
            kid: "a0".into(),
            ..key.clone()
        };
        o.add_signing_key(&newer).await.unwrap();
        let oldest = SigningKey {
            kid: "z9".into(),
            created_at: 1,
            ..key.clone()
        };
        o.add_signing_key(&oldest).await.unwrap();
        assert_eq!(
            o.signing_keys().await.unwrap(),
            vec![oldest.clone(), key.clone(), newer]
        );
        assert!(o.add_signing_key(&key).await.is_err(), "duplicate kid");
        o.delete_signing_key("a0").await.unwrap();
        o.delete_signing_key("z9").await.unwrap();
        assert!(!format!("{key:?}").contains("[1, 2, 3]"));
        assert_eq!(o.signing_keys().await.unwrap(), vec![key]);
        o.delete_signing_key("k1").await.unwrap();
        assert!(o.signing_keys().await.unwrap().is_empty());
    }

    // ---- PostgreSQL connection handling -----------------------------------

    /// The database drops every connection (a restart, a failover): calls
    /// may fail with `Backend` while the pool notices, then work again.
    pub async fn postgres_recovers_when_connections_are_killed(f: &mut Fixture) {
        f.s.offline.push("h", "u", "<message/>", 10).await.unwrap();
        let Some(admin) = f.pg_client().await else {
            return;
        };
        for round in 0..3 {
            admin
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap();
            let mut ok = false;
            for _ in 0..20 {
                match f.s.offline.count("h", "u").await {
                    Ok(n) => {
                        assert_eq!(n, 1);
                        ok = true;
                        break;
                    }
                    Err(StorageError::Backend(_)) => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("round {round}: {e:?}"),
                }
            }
            assert!(ok, "round {round}: the store did not recover");
        }
        assert!(f.is_postgres());
    }
}

/// What only PostgreSQL has: the migration lock and table.
mod postgres_migrations {
    use super::{Fixture, TestDb};
    use jackdaw_storage::PostgresStore;
    use jackdaw_storage::postgres::PostgresError;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_starts_migrate_once() {
        let Some(db) = TestDb::create().await else {
            return;
        };
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let config = db.config();
                tokio::spawn(async move { PostgresStore::connect(config, 2).await })
            })
            .collect();
        for s in starts {
            s.await.unwrap().expect("every start succeeds");
        }
        let client = super::connect(&db.config()).await;
        let versions: Vec<i32> = client
            .query("SELECT version FROM jackdaw_schema_version ORDER BY version", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(versions, [1]);
    }

    #[tokio::test]
    async fn refuses_a_newer_schema() {
        let Some(f) = Fixture::postgres().await else {
            return;
        };
        let client = f.pg_client().await.unwrap();
        client
            .execute("INSERT INTO jackdaw_schema_version (version) VALUES (999)", &[])
            .await
            .unwrap();
        let super::Backend::Postgres { db, .. } = &f.backend else {
            unreachable!()
        };
        match PostgresStore::connect(db.config(), 1).await {
            Err(PostgresError::SchemaTooNew { found: 999, .. }) => {}
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn unreachable_database_is_a_connect_error() {
        let mut config = jackdaw_storage::postgres::PgConfig::new();
        // A port nothing listens on (the discard port, refused on loopback).
        config
            .host("127.0.0.1")
            .port(9)
            .user("nobody")
            .password("s3cret")
            .dbname("x");
        let err = PostgresStore::connect(config, 1).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PostgresError::Connect(_)), "{msg}");
        assert!(!msg.contains("s3cret"), "{msg}");
    }
}

/// TLS to PostgreSQL (`sql.ssl`): `JACKDAW_TEST_POSTGRES_TLS_CA` is a PEM
/// file the test server's certificate (for `localhost`) verifies against
/// (.ci/postgres.sh exports it); skipped without it unless `CI` is set.
mod postgres_tls {
    use super::TestDb;
    use jackdaw_core::storage::AccountStore;
    use jackdaw_storage::PostgresStore;
    use jackdaw_storage::postgres::{PgTls, PostgresError};

    fn ca_file() -> Option<std::path::PathBuf> {
        match std::env::var("JACKDAW_TEST_POSTGRES_TLS_CA") {
            Ok(path) if !path.is_empty() => Some(path.into()),
            _ => {
                if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
                    panic!("CI is set but JACKDAW_TEST_POSTGRES_TLS_CA is not (see .ci/postgres.sh)");
                }
                eprintln!("note: JACKDAW_TEST_POSTGRES_TLS_CA is unset; skipping the TLS test");
                None
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ssl_connections_are_encrypted_and_verified() {
        let Some(db) = TestDb::create().await else {
            return;
        };
        let Some(ca) = ca_file() else {
            return;
        };
        let tls = PgTls::Verified {
            ca_file: Some(ca.clone()),
        };
        let store = PostgresStore::connect_with(db.config_on("localhost"), 2, &tls)
            .await
            .expect("TLS connection verified against the CA file");
        store.create("h", "u", &[]).await.unwrap();
        assert!(store.exists("h", "u").await.unwrap());
        let admin = super::connect(&db.config()).await;
        let encrypted: Vec<bool> = admin
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                 WHERE a.datname = current_database() AND a.application_name = 'jackdaw'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(
            !encrypted.is_empty() && encrypted.iter().all(|&e| e),
            "{encrypted:?}"
        );

        // The name is checked: the certificate is for localhost, not 127.0.0.1.
        let err = PostgresStore::connect_with(db.config_on("127.0.0.1"), 1, &tls)
            .await
            .unwrap_err();
        assert!(matches!(err, PostgresError::Connect(_)), "{err}");
        assert!(err.to_string().contains("certificate"), "{err}");
        // So is the issuer: public roots do not vouch for it.
        let public = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
        if public.exists() {
            let other = PgTls::Verified {
                ca_file: Some(public.into()),
            };
            let err = PostgresStore::connect_with(db.config_on("localhost"), 1, &other)
                .await
                .unwrap_err();
            assert!(err.to_string().contains("certificate"), "{err}");
        }
        // A CA file that is not PEM is a setup error, before connecting.
        let not_pem = PgTls::Verified {
            ca_file: Some("/dev/null".into()),
        };
        let err = PostgresStore::connect_with(db.config_on("localhost"), 1, &not_pem)
            .await
            .unwrap_err();
        assert!(matches!(err, PostgresError::Tls(_)), "{err}");
    }
}
