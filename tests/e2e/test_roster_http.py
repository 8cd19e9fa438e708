"""``modules_enabled = ["http_roster_admin"]`` (issue 6): contact lists owned
by the operator's web app, with the protocol of Prosody's
mod_http_roster_admin (``../shared/seeds/mod_http_roster_admin.md``).

Every test runs the repository's roster web app
(:mod:`harness.roster_webapp`, a real HTTP server on loopback) next to its
own Jackdaw, and checks what the users see in slixmpp: rosters at login,
roster pushes, presence, IQ and presence errors, stream errors. The web app
calls Jackdaw's ``/roster_admin/refresh`` as a real one would, and its
request log shows every fetch Jackdaw made.

Jackdaw's side of the contract, as these tests read it:

* Users authenticate with the built-in store; at login their roster is
  GET from ``http_roster_url`` (``%s`` = URL-encoded username, ``Accept:
  application/json``), every item with subscription ``both``, cached while
  they are online; concurrent logins of one user cause one fetch.
* Web app down at login: the login proceeds with an empty roster, fetched
  again with backoff (1 s, 2 s, ...) and pushed when it works; with
  ``http_roster_required = true`` the session ends with the stream error
  ``internal-server-error``.
* ``POST /roster_admin/refresh`` with a JSON array of usernames: online
  users are fetched again, diffed and pushed, with presence both ways for
  added contacts and unavailable both ways for removed ones. The answer is
  exactly ``{"status","message","updated","errors"}``; offline and unknown
  users count as updated; a failed fetch counts in errors and keeps the
  cached roster; all failed → status ``error``. ``[]`` → updated 0;
  malformed body → 400 with a JSON error. The push form
  ``{"user": {roster}}`` skips the fetch; ``GET /roster_admin/refresh/USER``
  refreshes one user; ``http_roster_admin_secret`` requires
  ``Authorization: Bearer``.
* Clients cannot set rosters (``not-allowed``) nor send subscription
  stanzas (``not-allowed``); presence from JIDs outside a user's roster is
  not shown to them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ssl
import time
import unittest.mock
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from harness import PASSWORDS, jid_of
from harness.client import Client, LoginFailed, roster_items
from harness.roster_webapp import (
    Answer,
    RosterWebApp,
    contact,
    expect_summary,
    get_refresh,
    post_refresh,
)
from harness.scenarios import assert_pong, logged_in, online_with_roster
from harness.server import JackdawServer

ALICE, BOB, CAROL = jid_of("alice"), jid_of("bob"), jid_of("carol")
#: Small, so failure paths stay quick; each test must finish in about 10 s.
ROSTER_TIMEOUT = 2
SECRET = "s3cret-Roster-Token"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def default_rosters() -> dict[str, dict[str, Any]]:
    """alice and bob are contacts of each other; carol has nobody."""
    return {
        "alice": {BOB: contact("Bob", ["Friends"])},
        "bob": {ALICE: contact("Alice", ["Friends", "Work"])},
        "carol": {},
    }


# --- fixtures ------------------------------------------------------------------


@pytest.fixture
def make_roster_app() -> Iterator[Callable[..., RosterWebApp]]:
    """A factory of started roster web apps (same arguments as :class:`RosterWebApp`),
    holding :func:`default_rosters` unless ``rosters`` says otherwise."""
    apps: list[RosterWebApp] = []

    def make(**kwargs: Any) -> RosterWebApp:
        kwargs.setdefault("rosters", default_rosters())
        app = RosterWebApp(**kwargs).start()
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.stop()


@pytest.fixture
def roster_app(make_roster_app: Callable[..., RosterWebApp]) -> RosterWebApp:
    return make_roster_app()


@pytest.fixture
def make_roster_server(
    make_server: Callable[..., JackdawServer], roster_app: RosterWebApp
) -> Callable[..., JackdawServer]:
    """``make_roster_server(host_options={...}, users={...}, app=...)``: a Jackdaw
    whose host ``localhost`` takes rosters from ``app`` (default ``roster_app``),
    alice, bob and carol in the built-in store unless ``users`` says otherwise."""

    def make(
        host_options: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        users: dict[str, str] | None = None,
        start: bool = True,
        app: RosterWebApp | None = None,
    ) -> JackdawServer:
        host = {
            "modules_enabled": ["http_roster_admin"],
            "http_roster_url": (app or roster_app).url,
            "http_roster_timeout": ROSTER_TIMEOUT,
        }
        host.update(host_options or {})
        return make_server(options=options, host_options=host, users=users, start=start)

    return make


@pytest.fixture
def roster_server(make_roster_server: Callable[..., JackdawServer]) -> JackdawServer:
    return make_roster_server()


# --- helpers -------------------------------------------------------------------


async def refresh(server: JackdawServer, payload: Any = None, **kwargs: Any) -> Answer:
    """The web app POSTs ``/roster_admin/refresh`` (in a thread: the clients keep reading)."""
    return await asyncio.to_thread(post_refresh, server.http_port, payload, **kwargs)


async def refresh_one(server: JackdawServer, user: str, **kwargs: Any) -> Answer:
    return await asyncio.to_thread(get_refresh, server.http_port, user, **kwargs)


async def settle(*clients: Client) -> None:
    """Everything Jackdaw queued for these clients so far has arrived: it
    answers a ping after what it sent before (one ordered stream each)."""
    for client in clients:
        await assert_pong(client)


def pushes(client: Client) -> list[str]:
    """Roster pushes waiting in the inbox, described."""
    return [str(iq) for iq in client.received("iq", lambda iq: iq["type"] == "set")]


def presences_from(client: Client, jid: str) -> list[str]:
    """Presence stanzas from ``jid`` (bare) waiting in the inbox, described."""
    return [str(p) for p in client.received("presence", lambda p: p["from"].bare == jid)]


async def roster_of(client: Client) -> dict[str, dict[str, Any]]:
    reply = await client.roster_get()
    assert reply["type"] == "result", str(reply)
    return roster_items(reply)


def item(name: str | None, groups: list[str]) -> dict[str, Any]:
    """A roster item as the client shows it when the web app owns the roster."""
    return {"name": name, "subscription": "both", "ask": None, "groups": sorted(groups)}


def stanza_error(stanza: Any) -> tuple[str | None, str | None]:
    """The defined condition and the text of a stanza's ``<error/>``."""
    error = stanza.xml.find("{jabber:client}error")
    assert error is not None, f"no <error/> in {stanza}"
    condition = text = None
    for child in error:
        if child.tag == f"{{{NS_STANZAS}}}text":
            text = child.text
        elif child.tag.startswith(f"{{{NS_STANZAS}}}"):
            condition = child.tag.split("}", 1)[1]
    return condition, text


async def wait_sessions_ended(server: JackdawServer, user: str, count: int, timeout: float = 5.0) -> None:
    """Wait until the server has torn down ``count`` sessions of ``user`` in all
    (its log says "session ended" after every module saw the session close;
    the client's disconnect alone may come a little earlier)."""
    jid = jid_of(user)
    deadline = time.monotonic() + timeout
    while True:
        ended = [
            line for line in server.log_text().splitlines() if "session ended" in line and f"{jid}/" in line
        ]
        if len(ended) >= count:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"the server ended {len(ended)} of {count} sessions of {user} within {timeout} s")
        await asyncio.sleep(0.02)


async def assert_barrier_message(sender: Client, receiver: Client, body: str) -> None:
    """``sender`` messages ``receiver`` and it arrives: anything ``sender``
    caused before (presence) would have reached ``receiver`` by now."""
    sender.send_message(receiver.jid.bare, body)
    await receiver.next_message(sender.jid.bare, body)


# --- rosters at login ----------------------------------------------------------


async def test_rosters_from_web_app_at_login(roster_server, roster_app):
    """alice and bob log in: each sees the other in the roster with the name and
    groups the web app gave, subscription both; carol's roster is empty; once
    online, each sees the other's presence. Jackdaw fetched each roster once,
    asking for JSON."""
    async with logged_in(roster_server, "alice", "bob", "carol") as (alice, bob, carol):
        assert await roster_of(alice) == {BOB: item("Bob", ["Friends"])}
        assert await roster_of(bob) == {ALICE: item("Alice", ["Friends", "Work"])}
        assert await roster_of(carol) == {}

        await alice.go_online(status="at my desk")
        await bob.go_online()
        seen = await alice.next_presence(str(bob.jid), "available")
        assert seen["to"].bare == ALICE
        seen = await bob.next_presence(str(alice.jid), "available")
        assert seen["status"] == "at my desk"
        await carol.go_online()
        await settle(alice, bob, carol)
        assert presences_from(carol, ALICE) == [] and presences_from(carol, BOB) == []
        assert presences_from(alice, CAROL) == [] and presences_from(bob, CAROL) == []

        for user in ("alice", "bob", "carol"):
            fetched = roster_app.fetches(user)
            assert len(fetched) == 1, f"{user}'s roster fetched {len(fetched)} times:\n  {roster_app.describe_log()}"
            assert fetched[0].verb == "GET" and fetched[0].path == f"/contacts/{user}"
            assert "application/json" in fetched[0].headers.get("accept", ""), fetched[0].headers


async def test_username_is_url_encoded(make_roster_server, roster_app):
    """A username with characters that mean something in a URL (``+``, non-ASCII)
    is percent-encoded in the fetch, and that user gets their roster."""
    user = "jo+zoë"
    roster_app.set_roster(user, {ALICE: contact("Alice")})
    server = make_roster_server(users={user: "Zoe-Secret-9", "alice": PASSWORDS["alice"]})
    async with logged_in(server, "alice") as (alice,):
        client = Client(server, user, password="Zoe-Secret-9")
        await client.login()
        try:
            assert await roster_of(client) == {ALICE: item("Alice", [])}
        finally:
            await client.close()
    fetched = roster_app.fetches(user)
    assert [f.path for f in fetched] == ["/contacts/jo%2Bzo%C3%AB"], roster_app.describe_log()


async def test_one_fetch_for_concurrent_logins(make_roster_app, make_roster_server):
    """Three resources of alice log in at the same time while the web app is slow
    to answer: Jackdaw asks once, and all three see the roster. A fourth login
    while she is online asks nothing; once every session has ended, the next
    login fetches again."""
    app = make_roster_app(delay=1.0)
    server = make_roster_server(app=app)
    async with logged_in(server, ("alice", "desk"), ("alice", "phone"), ("alice", "tablet")) as clients:
        for client in clients:
            assert await roster_of(client) == {BOB: item("Bob", ["Friends"])}
        fetched = app.fetches("alice")
        assert len(fetched) == 1, f"{len(fetched)} fetches for 3 concurrent logins:\n  {app.describe_log()}"
        async with logged_in(server, ("alice", "laptop")) as (laptop,):
            assert await roster_of(laptop) == {BOB: item("Bob", ["Friends"])}
        assert len(app.fetches("alice")) == 1, app.describe_log()

    await wait_sessions_ended(server, "alice", 4)
    app.delay = 0
    async with logged_in(server, "alice") as (alice,):
        assert await roster_of(alice) == {BOB: item("Bob", ["Friends"])}
    assert len(app.fetches("alice")) == 2, app.describe_log()


# --- refresh: added, removed, changed ---------------------------------------------


async def test_added_contact_pushed_with_presence_both_ways(roster_server, roster_app):
    """alice and carol are online, strangers. The web app makes them contacts
    and POSTs ``["alice", "carol"]``: each gets a roster push for the other
    (name, group, both), sees the other's current presence, and from then on
    sees the other's presence changes."""
    async with logged_in(roster_server, "alice", "carol") as (alice, carol):
        await alice.roster_get()
        await alice.go_online(status="hello")
        await carol.roster_get()
        await carol.go_online(show="away", status="at lunch")
        await settle(alice, carol)
        assert presences_from(alice, CAROL) == [] and presences_from(carol, ALICE) == []

        roster_app.befriend("alice", "carol", a_calls_b="Carol", b_calls_a="Alice", groups=["Book club"])
        answer = await refresh(roster_server, ["alice", "carol"])
        expect_summary(answer, updated=2, errors=0)

        pushed = await alice.next_roster_push(CAROL)
        assert (pushed["name"], pushed["subscription"], pushed["groups"]) == ("Carol", "both", ["Book club"])
        seen = await alice.next_presence(str(carol.jid), "available")
        assert (seen["show"], seen["status"]) == ("away", "at lunch")

        pushed = await carol.next_roster_push(ALICE)
        assert (pushed["name"], pushed["subscription"], pushed["groups"]) == ("Alice", "both", ["Book club"])
        seen = await carol.next_presence(str(alice.jid), "available")
        assert seen["status"] == "hello"

        assert await roster_of(alice) == {BOB: item("Bob", ["Friends"]), CAROL: item("Carol", ["Book club"])}
        assert await roster_of(carol) == {ALICE: item("Alice", ["Book club"])}

        await settle(alice, carol)
        alice.inbox.clear()  # the refresh of each side may show the presence once more
        carol.send_presence(pstatus="back")
        seen = await alice.next_presence(str(carol.jid), "available", what="(carol's status change)")
        assert seen["status"] == "back"


async def test_added_contact_pushed_to_every_interested_resource(roster_server, roster_app):
    """alice on her desk and her phone (both asked for the roster) both get the push."""
    async with logged_in(roster_server, ("alice", "desk"), ("alice", "phone")) as (desk, phone):
        await online_with_roster(desk, phone)
        roster_app.add_contact("alice", CAROL, "Carol")
        expect_summary(await refresh(roster_server, ["alice"]), updated=1, errors=0)
        for client in (desk, phone):
            pushed = await client.next_roster_push(CAROL)
            assert (pushed["name"], pushed["subscription"]) == ("Carol", "both")


async def test_removed_contact_pushed_with_unavailable(roster_server, roster_app):
    """alice and bob are online and see each other. The web app ends their
    contact and POSTs ``["alice", "bob"]``: each gets a push with
    subscription="remove" and the other's unavailable presence; the roster no
    longer lists the other, and later presence changes are not shown."""
    async with logged_in(roster_server, "alice", "bob") as (alice, bob):
        await online_with_roster(alice, bob)
        await alice.next_presence(str(bob.jid), "available")
        await bob.next_presence(str(alice.jid), "available")

        roster_app.unfriend("alice", "bob")
        expect_summary(await refresh(roster_server, ["alice", "bob"]), updated=2, errors=0)

        assert (await alice.next_roster_push(BOB))["subscription"] == "remove"
        await alice.next_presence(str(bob.jid), "unavailable")
        assert (await bob.next_roster_push(ALICE))["subscription"] == "remove"
        await bob.next_presence(str(alice.jid), "unavailable")
        assert await roster_of(alice) == {}
        assert await roster_of(bob) == {}

        await settle(alice, bob)
        alice.inbox.clear()
        bob.send_presence(pstatus="still here")
        await assert_barrier_message(bob, alice, "after the presence change")
        assert presences_from(alice, BOB) == [], "alice sees presence of someone no longer in her roster"


async def test_renamed_and_regrouped_contact_pushed(roster_server, roster_app):
    """The web app renames bob in alice's roster, then moves him to other
    groups: each change reaches alice as a push; bob stays available for her
    (no unavailable, no roster change for bob)."""
    async with logged_in(roster_server, "alice", "bob") as (alice, bob):
        await online_with_roster(alice, bob)
        await alice.next_presence(str(bob.jid), "available")

        roster_app.add_contact("alice", BOB, "Bobby", ["Friends"])
        expect_summary(await refresh(roster_server, ["alice"]), updated=1, errors=0)
        pushed = await alice.next_roster_push(BOB)
        assert (pushed["name"], pushed["groups"], pushed["subscription"]) == ("Bobby", ["Friends"], "both")

        roster_app.add_contact("alice", BOB, "Bobby", ["Work", "Chess"])
        expect_summary(await refresh(roster_server, ["alice"]), updated=1, errors=0)
        pushed = await alice.next_roster_push(BOB)
        assert (pushed["name"], pushed["groups"], pushed["subscription"]) == ("Bobby", ["Chess", "Work"], "both")

        assert await roster_of(alice) == {BOB: item("Bobby", ["Chess", "Work"])}
        await settle(alice, bob)
        assert [p for p in presences_from(alice, BOB) if "unavailable" in p] == []
        assert pushes(bob) == [], "bob's roster did not change"


async def test_unchanged_roster_sends_nothing(roster_server, roster_app):
    """A refresh for a user whose roster did not change: updated, no push, no presence."""
    async with logged_in(roster_server, "alice", "bob") as (alice, bob):
        await online_with_roster(alice, bob)
        await alice.next_presence(str(bob.jid), "available")
        await settle(alice)
        alice.inbox.clear()
        expect_summary(await refresh(roster_server, ["alice"]), updated=1, errors=0)
        await settle(alice)
        assert pushes(alice) == [] and presences_from(alice, BOB) == [], alice.inbox


async def test_single_user_refresh_by_get(roster_server, roster_app):
    """``GET /roster_admin/refresh/alice`` (Prosody's form) refreshes alice alone."""
    async with logged_in(roster_server, "alice") as (alice,):
        await online_with_roster(alice)
        roster_app.add_contact("alice", CAROL, "Carol")
        expect_summary(await refresh_one(roster_server, "alice"), updated=1, errors=0)
        assert (await alice.next_roster_push(CAROL))["name"] == "Carol"


async def test_push_form_applies_roster_without_fetch(roster_server, roster_app):
    """The web app POSTs alice's new roster itself (``{"alice": {...}}``):
    alice gets the pushes (carol added, bob removed) and Jackdaw fetches nothing."""
    async with logged_in(roster_server, "alice") as (alice,):
        await online_with_roster(alice)
        before = time.monotonic()
        answer = await refresh(roster_server, {"alice": {CAROL: {"name": "Carol", "groups": ["X"]}}})
        expect_summary(answer, updated=1, errors=0)
        pushed = await alice.next_roster_push(CAROL)
        assert (pushed["name"], pushed["groups"], pushed["subscription"]) == ("Carol", ["X"], "both")
        assert (await alice.next_roster_push(BOB))["subscription"] == "remove"
        assert await roster_of(alice) == {CAROL: item("Carol", ["X"])}
        assert roster_app.fetches(since=before) == [], roster_app.describe_log()


# --- refresh: the documented answers -----------------------------------------------


async def test_empty_array(roster_server, roster_app):
    """``[]`` → 200, status ok, updated 0, errors 0 (the reference never answers it)."""
    async with logged_in(roster_server, "alice") as (alice,):
        await online_with_roster(alice)
        before = time.monotonic()
        answer = await refresh(roster_server, [], timeout=5)
        expect_summary(answer, updated=0, errors=0)
        assert roster_app.fetches(since=before) == []


MALFORMED_BODIES = [
    b"",
    b"not json",
    b'["alice"',
    b'"alice"',
    b"42",
    b"null",
    b"true",
    b"[1, 2]",
    b'["alice", null]',
    b'["alice", ["bob"]]',
    b'[{"user": "alice"}]',
    b'{"alice": "bob@localhost"}',
    b'{"alice": ["bob@localhost"]}',
    "[\"alice\"]\xff".encode("latin-1"),
]


async def test_malformed_body(roster_server, roster_app):
    """A body that is not JSON, not an array of usernames (strings) nor an
    object of rosters → 400 with a JSON error, and nothing happens to anyone."""
    async with logged_in(roster_server, "alice") as (alice,):
        await online_with_roster(alice)
        before = time.monotonic()
        problems = []
        for body in MALFORMED_BODIES:
            answer = await refresh(roster_server, raw=body)
            reply = answer.json if answer.status == 400 else None
            if not (
                answer.status == 400
                and "json" in answer.content_type
                and isinstance(reply, dict)
                and reply.get("status") == "error"
                and isinstance(reply.get("message"), str)
                and reply["message"]
            ):
                problems.append(f"{body!r} -> {answer}")
        assert problems == [], "malformed bodies not refused with 400 and a JSON error:\n  " + "\n  ".join(problems)
        await settle(alice)
        assert pushes(alice) == []
        assert roster_app.fetches(since=before) == [], roster_app.describe_log()


async def test_unknown_and_offline_users_count_as_updated(roster_server, roster_app):
    """bob was online and left; "nobody" never existed; carol never logged in.
    Refreshing them counts all three as updated without asking the web app,
    and bob's next login shows the web app's new roster."""
    async with logged_in(roster_server, "alice", "bob") as (alice, bob):
        await online_with_roster(alice, bob)
        await alice.next_presence(str(bob.jid), "available")
        await bob.close()
        await alice.next_presence(str(bob.jid), "unavailable", what="(bob logged out)")
        await wait_sessions_ended(roster_server, "bob", 1)

        roster_app.add_contact("bob", CAROL, "Carol")
        before = time.monotonic()
        answer = await refresh(roster_server, ["bob", "nobody", "carol"])
        expect_summary(answer, updated=3, errors=0)
        assert roster_app.fetches(since=before) == [], "offline users are fetched at login, not now"

    async with logged_in(roster_server, "bob") as (bob,):
        assert await roster_of(bob) == {ALICE: item("Alice", ["Friends", "Work"]), CAROL: item("Carol", [])}


async def test_offline_users_roster_is_fresh_at_login(roster_server, roster_app):
    """carol is offline, in bob's roster (and bob in hers). bob comes online,
    so his presence is addressed to carol. The web app then renames bob in
    carol's roster and adds alice, and POSTs ``["carol"]`` (counted as updated:
    she is offline). When carol logs in she must see the web app's roster as
    it is now."""
    roster_app.befriend("bob", "carol", a_calls_b="Carol", b_calls_a="Bob")
    async with logged_in(roster_server, "bob") as (bob,):
        await online_with_roster(bob)
        bob.send_presence(pstatus="anyone there?")
        await settle(bob)

        roster_app.set_roster("carol", {BOB: contact("Robert"), ALICE: contact("Alice")})
        expect_summary(await refresh(roster_server, ["carol"]), updated=1, errors=0)

        async with logged_in(roster_server, "carol") as (carol,):
            assert await roster_of(carol) == {BOB: item("Robert", []), ALICE: item("Alice", [])}, (
                "carol sees a roster the web app no longer has; fetches:\n  " + roster_app.describe_log()
            )


# --- refresh: the web app failing -----------------------------------------------------


async def test_web_app_down_at_refresh_keeps_cached_roster(roster_server, roster_app):
    """alice is online with bob in her roster. The web app adds carol but is
    down when it POSTs the refresh (its fetch fails): status error, updated 0,
    errors 1, no push, and alice's roster still shows bob. With an offline
    user in the same POST: status ok, updated 1, errors 1. Once the web app
    is back, a refresh pushes carol."""
    async with logged_in(roster_server, "alice") as (alice,):
        await online_with_roster(alice)
        roster_app.add_contact("alice", CAROL, "Carol")
        roster_app.stop()

        expect_summary(await refresh(roster_server, ["alice"]), updated=0, errors=1, status="error")
        assert await roster_of(alice) == {BOB: item("Bob", ["Friends"])}
        expect_summary(await refresh(roster_server, ["alice", "carol"]), updated=1, errors=1)
        await settle(alice)
        assert pushes(alice) == []
        assert await roster_of(alice) == {BOB: item("Bob", ["Friends"])}

        roster_app.start()
        expect_summary(await refresh(roster_server, ["alice"]), updated=1, errors=0)
        assert (await alice.next_roster_push(CAROL))["name"] == "Carol"


@pytest.mark.parametrize("mode", ["status:500", "status:404", "garbage", "not-object", "hang"])
async def test_web_app_failure_for_one_user(roster_server, roster_app, mode):
    """The web app fails for alice only (HTTP error, not JSON, JSON that is not
    an object, or no answer within http_roster_timeout) while it works for
    bob: updated 1, errors 1, status ok; bob gets his push; alice gets none and
    her roster is still the cached one."""
    async with logged_in(roster_server, "alice", "bob") as (alice, bob):
        await online_with_roster(alice, bob)
        roster_app.set_roster("alice", {CAROL: contact("Carol")})  # what alice must not see
        roster_app.add_contact("bob", CAROL, "Carol")
        roster_app.override("alice", mode)

        started = time.monotonic()
        answer = await refresh(roster_server, ["alice", "bob"])
        expect_summary(answer, updated=1, errors=1)
        if mode == "hang":
            assert time.monotonic() - started < ROSTER_TIMEOUT + 3, "the refresh waited past http_roster_timeout"
        assert (await bob.next_roster_push(CAROL))["name"] == "Carol"

        await settle(alice)
        assert pushes(alice) == [], f"alice got pushes from a failed fetch ({mode})"
        assert await roster_of(alice) == {BOB: item("Bob", ["Friends"])}

        expect_summary(await refresh(roster_server, ["alice"]), updated=0, errors=1, status="error")
        assert await roster_of(alice) == {BOB: item("Bob", ["Friends"])}


async def test_web_app_down_at_login_then_pushed(roster_server, roster_app):
    """bob is online. The web app is down when alice logs in: she gets in,
    with an empty roster. When the web app is back, Jackdaw's retry pushes her
    roster, she sees bob's presence and bob sees hers."""
    async with logged_in(roster_server, "bob") as (bob,):
        await bob.roster_get()
        roster_app.stop()
        # Only now, so that bob's presence addressed to alice cannot have made
        # Jackdaw fetch alice's roster before she logs in (see
        # test_offline_users_roster_is_fresh_at_login).
        await bob.go_online()
        async with logged_in(roster_server, "alice") as (alice,):
            assert await roster_of(alice) == {}, "the roster is empty while the web app is down"
            await alice.go_online(status="finally")
            roster_app.start()

            pushed = await alice.next_roster_push(BOB, timeout=6)
            assert (pushed["name"], pushed["groups"], pushed["subscription"]) == ("Bob", ["Friends"], "both")
            await alice.next_presence(str(bob.jid), "available", timeout=3)
            seen = await bob.next_presence(str(alice.jid), "available", timeout=3)
            assert seen["status"] == "finally"
            assert await roster_of(alice) == {BOB: item("Bob", ["Friends"])}


@pytest.mark.parametrize("failure", ["down", "status:503", "garbage"])
async def test_required_roster_refuses_login(make_roster_server, roster_app, failure):
    """With ``http_roster_required = true`` and the web app failing at login,
    alice's session ends with the stream error internal-server-error; once it
    works again she logs in and has her roster."""
    server = make_roster_server(host_options={"http_roster_required": True})
    if failure == "down":
        roster_app.stop()
    else:
        roster_app.mode = failure
    alice = Client(server, "alice")
    try:
        await alice.login()
    except LoginFailed as refused:
        assert refused.condition == "internal-server-error", f"{refused} (stream errors {alice.stream_errors})"
    else:
        await alice.wait_disconnected(timeout=5)
        assert alice.stream_errors == ["internal-server-error"], alice.stream_errors
    finally:
        await alice.close()

    if failure == "down":
        roster_app.start()
    else:
        roster_app.mode = "normal"
    async with logged_in(server, "alice") as (alice,):
        assert await roster_of(alice) == {BOB: item("Bob", ["Friends"])}


# --- what clients may not do ------------------------------------------------------------


async def test_client_roster_set_refused(roster_server, roster_app):
    """alice's client adds carol, renames bob, removes bob: each is refused with
    not-allowed and a text saying why; nothing changes, nothing is pushed."""
    async with logged_in(roster_server, ("alice", "desk"), ("alice", "phone")) as (desk, phone):
        await phone.roster_get()
        attempts = [
            dict(contact=CAROL, name="Carol"),
            dict(contact=BOB, name="Robert", groups=("Mine",)),
            dict(contact=BOB, remove=True),
        ]
        for attempt in attempts:
            with pytest.raises(IqError) as refused:
                await desk.roster_set(**attempt)
            condition, text = stanza_error(refused.value.iq)
            assert condition == "not-allowed", f"{attempt}: {refused.value.iq}"
            assert text, f"{attempt}: no text saying why: {refused.value.iq}"
        await settle(desk, phone)
        assert pushes(desk) == [] and pushes(phone) == []
        assert await roster_of(desk) == {BOB: item("Bob", ["Friends"])}


async def test_subscription_stanzas_refused(roster_server, roster_app):
    """alice's client sends subscribe to carol (a stranger) and
    unsubscribe / subscribed / unsubscribed to bob: each comes back as a
    presence error not-allowed, carol and bob receive none of them, and
    alice's roster is unchanged."""
    async with logged_in(roster_server, "alice", "bob", "carol") as (alice, bob, carol):
        await online_with_roster(alice, bob, carol)
        await settle(alice, bob, carol)
        for client in (alice, bob, carol):
            client.inbox.clear()
        for ptype, to in (("subscribe", CAROL), ("unsubscribe", BOB), ("subscribed", BOB), ("unsubscribed", BOB)):
            alice.send_presence(pto=to, ptype=ptype)
            error = await alice.next_presence(to, "error", what=f"(error for {ptype})")
            condition, _text = stanza_error(error)
            assert condition == "not-allowed", f"{ptype}: {error}"
        await assert_barrier_message(alice, carol, "barrier")
        await assert_barrier_message(alice, bob, "barrier")
        assert presences_from(carol, ALICE) == [] and presences_from(bob, ALICE) == []
        assert await roster_of(alice) == {BOB: item("Bob", ["Friends"])}
        assert pushes(alice) == []


async def test_no_presence_outside_the_roster(roster_server, roster_app):
    """The web app lists alice in carol's roster but not carol in alice's.
    alice must not see carol's presence, and carol must not see alice's:
    alice's roster does not share her presence with carol."""
    roster_app.set_roster("carol", {ALICE: contact("Alice")})
    async with logged_in(roster_server, "alice", "carol") as (alice, carol):
        await online_with_roster(alice)
        await online_with_roster(carol)
        carol.send_presence(pstatus="look at me")
        alice.send_presence(pstatus="private")
        await assert_barrier_message(carol, alice, "barrier")
        await assert_barrier_message(alice, carol, "barrier")
        await settle(alice, carol)
        assert presences_from(alice, CAROL) == [], "alice sees presence of carol, who is not in her roster"
        assert presences_from(carol, ALICE) == [], "carol sees alice's presence though alice's roster lacks carol"


# --- access to the refresh endpoint -------------------------------------------------------


async def test_bearer_secret_required(make_roster_server, roster_app):
    """With ``http_roster_admin_secret``, a refresh without the Bearer token, with
    a wrong one or with other credentials → 401 (JSON) and nothing refreshed;
    with the token it works, for POST and for the single-user GET."""
    server = make_roster_server(host_options={"http_roster_admin_secret": SECRET})
    async with logged_in(server, "alice") as (alice,):
        await online_with_roster(alice)
        roster_app.add_contact("alice", CAROL, "Carol")
        before = time.monotonic()
        refused = {
            "no header": await refresh(server, ["alice"]),
            "wrong token": await refresh(server, ["alice"], token=SECRET + "x"),
            "prefix of the token": await refresh(server, ["alice"], token=SECRET[:-1]),
            "empty token": await refresh(server, ["alice"], authorization="Bearer "),
            "Basic": await refresh(server, ["alice"], authorization="Basic " + SECRET),
            "bare token": await refresh(server, ["alice"], authorization=SECRET),
            "GET, no header": await refresh_one(server, "alice"),
            "GET, wrong token": await refresh_one(server, "alice", token="nope"),
        }
        wrong = {what: str(a) for what, a in refused.items() if a.status != 401 or a.json.get("status") != "error"}
        assert wrong == {}, f"not refused with 401: {wrong}"
        await settle(alice)
        assert pushes(alice) == []
        assert roster_app.fetches("alice", since=before) == []

        expect_summary(await refresh(server, ["alice"], token=SECRET), updated=1, errors=0)
        assert (await alice.next_roster_push(CAROL))["name"] == "Carol"
        roster_app.remove_contact("alice", CAROL)
        expect_summary(await refresh_one(server, "alice", token=SECRET), updated=1, errors=0)
        assert (await alice.next_roster_push(CAROL))["subscription"] == "remove"


async def test_bearer_scheme_is_case_insensitive(make_roster_server, roster_app):
    """RFC 7235 §2.1: the auth scheme is case-insensitive, so a web app sending
    ``authorization: bearer TOKEN`` is let in."""
    server = make_roster_server(host_options={"http_roster_admin_secret": SECRET})
    answer = await refresh(server, [], authorization=f"bearer {SECRET}")
    expect_summary(answer, updated=0, errors=0)


# --- load -------------------------------------------------------------------------------------

CROWD = 200
CROWD_PASSWORD = "crowd-Secret-0"
CROWD_CONCURRENCY = 8


@contextlib.contextmanager
def without_system_ca_store() -> Iterator[None]:
    """Every slixmpp client builds two or three ``ssl`` contexts, each loading the
    system CA store (about 45 ms each): 30 s for 200 clients. These clients do
    not verify the server's certificate (``cafile=None``), so skip the loading."""
    with unittest.mock.patch.object(ssl.SSLContext, "set_default_verify_paths", lambda _self: None):
        yield


def crowd_user(i: int) -> str:
    return f"user{i % CROWD}"


async def test_200_online_users_refreshed_in_one_post(make_roster_app, make_roster_server):
    """200 users are online with empty rosters. The web app makes each the
    contact of the next (a ring) and POSTs all 200 names at once: the answer
    says updated 200, errors 0; every user gets the push for their new contact
    and sees that contact's presence; Jackdaw fetched each roster once, never
    more than http_roster_max_concurrent_refreshes at a time."""
    app = make_roster_app(rosters={}, delay=0.02)
    server = make_roster_server(
        host_options={"http_roster_max_concurrent_refreshes": CROWD_CONCURRENCY},
        options={"limit_auth_max": 10_000, "c2s_timeout": 30},
        users={},
        start=False,
        app=app,
    )
    users = [crowd_user(i) for i in range(CROWD)]
    # The first one alone: it creates the database (concurrent first opens race on the schema).
    server.add_user(jid_of(users[0]), CROWD_PASSWORD)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda u: server.add_user(jid_of(u), CROWD_PASSWORD), users[1:]))
    server.start()

    with without_system_ca_store():
        clients = [Client(server, u, password=CROWD_PASSWORD, plugins=("xep_0199",)) for u in users]
    try:
        started = time.monotonic()
        for batch in range(0, CROWD, 25):
            await asyncio.gather(*(c.login(timeout=30) for c in clients[batch : batch + 25]))
        await asyncio.gather(*(c.roster_get() for c in clients))
        await asyncio.gather(*(c.go_online() for c in clients))
        logged_in_after = time.monotonic() - started

        for i in range(CROWD):
            app.add_contact(crowd_user(i), jid_of(crowd_user(i + 1)), f"Next {i + 1}")
        app.peak_inflight = 0
        before = time.monotonic()
        answer = await refresh(server, users)
        refreshed_after = time.monotonic() - before
        expect_summary(answer, updated=CROWD, errors=0)

        async def check(i: int) -> None:
            client, contact_jid = clients[i], jid_of(crowd_user(i + 1))
            pushed = await client.next_roster_push(contact_jid, timeout=15)
            assert (pushed["name"], pushed["subscription"]) == (f"Next {i + 1}", "both")
            await client.next_presence(contact_jid, "available", timeout=15)
            await client.next_presence(jid_of(crowd_user(i - 1)), "available", timeout=15)

        await asyncio.gather(*(check(i) for i in range(CROWD)))
        delivered_after = time.monotonic() - before
        fetched = app.fetches(since=before)
        assert sorted(f.user for f in fetched) == sorted(users), "each online user's roster fetched once"
        assert 1 < app.peak_inflight <= CROWD_CONCURRENCY, (
            f"{app.peak_inflight} fetches at once with http_roster_max_concurrent_refreshes = {CROWD_CONCURRENCY}"
        )
        print(
            f"{CROWD} users: logged in and online in {logged_in_after:.1f} s, refresh answered in "
            f"{refreshed_after:.1f} s, every push and presence delivered in {delivered_after:.1f} s"
        )
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def test_loopback_only_admin_api_refuses_clients_relayed_by_a_local_proxy(make_roster_server):
    """Without ``http_roster_admin_secret`` the refresh API is for loopback
    callers only. A request relayed by a proxy on loopback (trusted by
    default) for a remote client (X-Forwarded-For) is that remote client's,
    so it is refused; the same proxy relaying a loopback client is allowed.
    Regression: modules used to see the proxy's address."""
    import http.client
    import json as json_module

    server = make_roster_server()

    def post(forwarded_for: str) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
        try:
            connection.request(
                "POST",
                "/roster_admin/refresh",
                body=json_module.dumps(["alice"]).encode(),
                headers={"Content-Type": "application/json", "X-Forwarded-For": forwarded_for},
            )
            return connection.getresponse().status
        finally:
            connection.close()

    assert post("203.0.113.5") == 403
    assert post("127.0.0.1") == 200
