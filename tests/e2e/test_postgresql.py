"""PostgreSQL storage (``storage = "sql"``, ``sql = { driver = "PostgreSQL", ... }``):
the built server keeps accounts, rosters, offline messages, archives and
persistent rooms in PostgreSQL, as it does in its embedded SQLite; ``jackdaw
user del`` removes a user's data there; an unreachable database stops the
start with exit code 2 and a message naming the option.

``JACKDAW_TEST_POSTGRES_URL`` (e.g.
``postgresql://jackdaw:jackdaw@127.0.0.1:5432/postgres``) names a role that
may CREATE DATABASE; each test makes its own database with ``psql`` and
drops it after. Without the variable these tests are skipped, except when
``CI`` is set: there that is a failure (.ci/run sets it up).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from harness import DOMAIN
from harness.archive import PLUGINS as MAM_PLUGINS
from harness.archive import query
from harness.client import Client, LoginFailed, roster_items
from harness.muc import MUC_PLUGINS, configure_muc, create_room, join, muc_users, room_jid
from harness.scenarios import assert_login_works, assert_pong, logged_in, online_with_roster, subscribe_mutually
from harness.server import JackdawServer

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
PLUGINS = tuple(dict.fromkeys(MAM_PLUGINS + MUC_PLUGINS))


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("JACKDAW_TEST_POSTGRES_URL", "")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI is set but JACKDAW_TEST_POSTGRES_URL is not: the PostgreSQL tests must run in CI")
        pytest.skip("JACKDAW_TEST_POSTGRES_URL is unset (see .ci/run)")
    if shutil.which("psql") is None:
        pytest.fail("psql is needed to create the test databases")
    return url


def psql(url: str, sql: str) -> str:
    """Runs one statement with psql; returns its unaligned output."""
    result = subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, f"psql failed: {result.stderr}"
    return result.stdout.strip()


class Database:
    """A fresh database on the test server, with the ``sql`` options naming it."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"jackdaw_e2e_{uuid.uuid4().hex[:12]}"
        parts = urlsplit(admin_url)
        self.url = urlunsplit(parts._replace(path=f"/{self.name}"))
        self.parts = parts

    def options(self, **overrides: Any) -> dict[str, Any]:
        """Global options for JackdawServer: dotted keys make the ``sql`` table."""
        options = {
            "storage": "sql",
            "sql.driver": "PostgreSQL",
            "sql.database": self.name,
            "sql.username": self.parts.username or "jackdaw",
            "sql.password": self.parts.password or "",
            "sql.host": self.parts.hostname or "127.0.0.1",
            "sql.port": self.parts.port or 5432,
        }
        options.update({f"sql.{key}": value for key, value in overrides.items()})
        return options

    def count(self, sql: str) -> int:
        return int(psql(self.url, sql))


@pytest.fixture
def database(postgres_url: str) -> Iterator[Database]:
    db = Database(postgres_url)
    psql(postgres_url, f"CREATE DATABASE {db.name}")
    try:
        yield db
    finally:
        psql(postgres_url, f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)")


@pytest.fixture
def pg_server(database: Database, make_server: Callable[..., JackdawServer]) -> JackdawServer:
    """A running server on the test database with alice, bob and carol (added
    with the CLI) and the MUC component rooms.localhost. (``database`` comes
    first so that the server stops before its database is dropped.)"""
    server = make_server(options=database.options(), start=False)
    configure_muc(server)
    server.start()
    return server


async def test_users_roster_offline_and_archive_are_kept_in_postgresql(pg_server, database):
    """Users added with the CLI log in; a mutual subscription, messages to an
    offline contact and the archive all live in PostgreSQL, across a restart."""
    assert database.count("SELECT COUNT(*) FROM accounts") == 3
    assert pg_server.list_users(DOMAIN) == ["alice@localhost", "bob@localhost", "carol@localhost"]

    async with logged_in(pg_server, "alice", "bob", plugins=PLUGINS) as (alice, bob):
        await online_with_roster(alice, bob)
        await subscribe_mutually(alice, bob)

    # bob is offline: these wait in PostgreSQL, through a restart.
    async with logged_in(pg_server, "alice", plugins=PLUGINS) as (alice,):
        for body in ("one", "two", "three"):
            alice.send_message(BOB, body)
        await assert_pong(alice)
    assert database.count("SELECT COUNT(*) FROM offline_messages WHERE username = 'bob'") == 3

    pg_server.restart()

    async with logged_in(pg_server, "alice", "bob", plugins=PLUGINS) as (alice, bob):
        assert roster_items(await alice.roster_get())[BOB]["subscription"] == "both"
        bob.send_presence()
        received = [await bob.next_message(ALICE) for _ in range(3)]
        assert [m["body"] for m in received] == ["one", "two", "three"]
        await assert_pong(bob)
        assert database.count("SELECT COUNT(*) FROM offline_messages WHERE username = 'bob'") == 0

        page = await query(alice, with_jid=BOB, max_results=2)
        assert page.bodies == ["one", "two"] and page.count == 3 and not page.complete
        rest = await query(alice, with_jid=BOB, max_results=2, after=page.last)
        assert rest.bodies == ["three"] and rest.complete and rest.first_index == 2
        bob_side = await query(bob, with_jid=ALICE)
        assert bob_side.bodies == ["one", "two", "three"]


async def test_persistent_room_survives_a_restart(pg_server, database):
    """A persistent room is a row of muc_rooms: after a restart it is still
    there with its name and its owner."""
    room = room_jid("pgroom")
    async with muc_users(pg_server, "alice") as (alice,):
        await create_room(alice, room, "Alice", {"roomname": "Kept in PostgreSQL", "persistentroom": True})
    assert database.count("SELECT COUNT(*) FROM muc_rooms WHERE room = 'pgroom'") == 1

    pg_server.restart()

    async with muc_users(pg_server, "alice", "carol") as (alice, carol):
        joined = await join(carol, room, "Carol")
        assert 201 not in joined.codes, joined.presence
        again = await join(alice, room, "Alice")
        assert again.item["affiliation"] == "owner", again.presence


async def test_user_del_removes_the_users_data(pg_server, database):
    """``jackdaw user del`` on a running PostgreSQL server removes the
    account and its roster, offline messages and archive; the others keep theirs."""
    async with logged_in(pg_server, "alice", "bob", plugins=PLUGINS) as (alice, bob):
        await online_with_roster(alice, bob)
        await subscribe_mutually(alice, bob)
        alice.send_message(BOB, "archived")
        await bob.next_message(ALICE, "archived")
    async with logged_in(pg_server, "alice") as (alice,):
        alice.send_message(BOB, "waiting offline")
        await assert_pong(alice)
    for table, where in [
        ("roster_items", "username = 'bob'"),
        ("offline_messages", "username = 'bob'"),
        ("archive", "owner = 'bob@localhost'"),
    ]:
        assert database.count(f"SELECT COUNT(*) FROM {table} WHERE {where}") > 0, table

    pg_server.delete_user(BOB)

    for table, where in [
        ("accounts", "username = 'bob'"),
        ("scram_credentials", "username = 'bob'"),
        ("roster_items", "username = 'bob'"),
        ("offline_messages", "username = 'bob'"),
        ("archive", "owner = 'bob@localhost'"),
    ]:
        assert database.count(f"SELECT COUNT(*) FROM {table} WHERE {where}") == 0, table
    assert database.count("SELECT COUNT(*) FROM archive WHERE owner = 'alice@localhost'") > 0
    with pytest.raises(LoginFailed) as refused:
        await Client(pg_server, "bob").login()
    assert refused.value.condition == "not-authorized"
    assert pg_server.list_users(DOMAIN) == ["alice@localhost", "carol@localhost"]


async def test_database_outage_gives_temporary_errors_and_the_server_recovers(pg_server, database):
    """The database stops taking connections and drops the server's: logins
    fail with temporary-auth-failure (not not-authorized, not a crash); once
    it is back, logins work again without restarting Jackdaw."""
    await assert_login_works(pg_server, "alice")
    psql(database.admin_url, f"ALTER DATABASE {database.name} ALLOW_CONNECTIONS false")
    psql(
        database.admin_url,
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database.name}'",
    )
    try:
        for _ in range(2):
            with pytest.raises(LoginFailed) as refused:
                await Client(pg_server, "bob").login()
            assert refused.value.condition == "temporary-auth-failure", refused.value
        assert pg_server.is_running()
    finally:
        psql(database.admin_url, f"ALTER DATABASE {database.name} ALLOW_CONNECTIONS true")
    await assert_login_works(pg_server, "bob")
    await assert_login_works(pg_server, "alice")


async def test_ssl_connection_to_postgresql(make_server, database):
    """``sql.ssl = true`` with ``sql.sslrootcert``: the server talks TLS to
    PostgreSQL (pg_stat_ssl says so) and users log in as usual; the
    certificate is for localhost, so 127.0.0.1 is refused at start."""
    ca = os.environ.get("JACKDAW_TEST_POSTGRES_TLS_CA", "")
    if not ca:
        if os.environ.get("CI"):
            pytest.fail("CI is set but JACKDAW_TEST_POSTGRES_TLS_CA is not (see .ci/postgres.sh)")
        pytest.skip("JACKDAW_TEST_POSTGRES_TLS_CA is unset")
    wrong_name = make_server(
        options=database.options(host="127.0.0.1", ssl=True, sslrootcert=ca), start=False, users={}
    )
    refused = wrong_name.cli("run")
    assert refused.returncode == 2 and "certificate" in refused.stderr, refused.stderr

    server = make_server(options=database.options(host="localhost", ssl=True, sslrootcert=ca))
    await assert_login_works(server, "alice")
    encrypted = psql(
        database.url,
        "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
        "WHERE a.datname = current_database() AND a.application_name = 'jackdaw'",
    )
    assert encrypted == "t", encrypted


def test_unreachable_database_stops_the_start_with_exit_code_2(make_server, database):
    """Nothing listens where ``sql`` points: ``run`` and ``user add`` exit
    with code 2 and say which database, and which option, without a panic
    or the password."""
    server = make_server(options=database.options(port=9, password="pw-not-shown"), start=False, users={})
    for args in (["run"], ["user", "add", f"dave@{DOMAIN}"]):
        result = server.cli(*args, stdin="dave-Secret-4\n")
        assert result.returncode == 2, (args, result.returncode, result.stderr)
        assert "PostgreSQL database" in result.stderr and "(option sql)" in result.stderr, result.stderr
        assert "Connection refused" in result.stderr, result.stderr
        assert "panicked" not in result.stderr and "pw-not-shown" not in result.stderr, result.stderr


def test_check_config_catches_bad_sql_options(make_server, database):
    """``jackdaw check-config`` names a bad driver and a missing database
    without connecting anywhere."""
    server = make_server(options=database.options(driver="MySQL"), start=False, users={})
    result = server.cli("check-config", str(server.config_path))
    assert result.returncode == 2 and 'sql.driver = "MySQL" is not supported' in result.stderr, result.stderr

    options = database.options()
    del options["sql.database"]
    server = make_server(options=options, start=False, users={})
    result = server.cli("check-config", str(server.config_path))
    assert result.returncode == 2 and "sql.database is missing" in result.stderr, result.stderr

    server = make_server(options=database.options(), start=False, users={})
    result = server.cli("check-config", str(server.config_path))
    assert result.returncode == 0, result.stderr
    # check-config never touched the database.
    assert psql(database.url, "SELECT to_regclass('jackdaw_schema_version') IS NULL") == "t"


async def test_debug_log_keeps_query_parameters_out_regression(pg_server):
    """tokio-postgres logs every statement's parameters at debug (SCRAM
    keys, OAuth keys, message bodies): the server's `log = "debug"` must not
    let them through."""
    async with logged_in(pg_server, "alice", "bob") as (alice, _bob):
        alice.send_message("bob@localhost", "secret-body-for-the-log-check")
    pg_server.stop()
    log = pg_server.log_text()
    assert "executing statement" not in log and "with parameters" not in log
    assert "secret-body-for-the-log-check" not in log
