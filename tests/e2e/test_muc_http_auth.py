"""``modules_enabled = ["muc_http_auth"]`` (issue 7, seed
``../shared/seeds/mod_muc_http_auth.md``): the operator's web app decides
who may join which room under which nickname.

Every test runs its own web app (:mod:`harness.muc_auth_webapp`, a real
HTTP server on loopback) next to its own Jackdaw with the MUC component
``rooms.localhost``, and checks what users see in their slixmpp clients and
what the web app was asked. The web app logs every request with its answer
(logger ``e2e.muc_auth_webapp``), so a failing test's report shows them next
to slixmpp's stanzas and the server's log.

Jackdaw's side of the contract, as these tests read it:

* Every join (available presence to room/nick from a session not in the
  room) and every nickname change asks ``GET muc_http_auth_url?userJID=<bare
  JID>&mucJID=<room JID>&nickname=<nick>`` (percent-encoded), with the
  ``Authorization`` header when ``muc_http_auth_authorization_header`` is
  set; a presence update under the same nickname or leaving does not.
* ``{"allowed": true}`` → the join proceeds; ``{"allowed": false, "error":
  "..."}`` → a presence error type auth ``not-authorized`` from room/nick
  carrying ``<x xmlns='http://jabber.org/protocol/muc'/>`` and the web app's
  error as ``<text/>`` (not with ``muc_http_auth_show_error = false``), and
  nothing else from the room: no occupants, subject or history, no room
  created. A refused nickname change leaves the occupant under the old one.
* Web app down or too slow → ``service-unavailable`` (type wait); non-200,
  non-JSON or JSON without ``allowed`` → ``internal-server-error``; both
  within ``muc_http_auth_timeout``, one warning per outage, occupants
  already inside unaffected.
* ``muc_http_auth_enabled_for`` / ``muc_http_auth_disabled_for``: user host
  or ``"all"`` → room node names checked / not checked; both set is a config
  error.
* ``muc_http_auth_cache_ttl`` > 0: the same (user, room, nick) is not asked
  again within the TTL; outages are not cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import ET, ElementBase

from harness import PASSWORDS, jid_of
from harness import client as client_module
from harness.client import Client, describe
from harness.components import add_components, toml_inline
from harness.muc_auth_webapp import (
    PATH,
    Decision,
    MucAuthWebApp,
    describe_requests,
    refuse_everyone,
    refuse_when,
)
from harness.server import CLI_TIMEOUT, JackdawServer

MUC = "rooms.localhost"
OTHER_HOST = "example.test"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_PING = "urn:xmpp:ping"

#: muc_http_auth_timeout in these tests: small, so failure paths stay quick.
AUTH_TIMEOUT = 2
#: How much longer than the timeout a refusal may take (scheduling, TLS, slixmpp).
SLACK = 2.5
#: How long one join or one round trip may take when the web app answers at once.
STEP = 5.0

ALICE, BOB, CAROL = jid_of("alice"), jid_of("bob"), jid_of("carol")
DAVE = f"dave@{OTHER_HOST}"
DAVE_PASSWORD = "dave-Secret-4"
TEAPARTY, ORCHARD = f"teaparty@{MUC}", f"orchard@{MUC}"
BASIC = "Basic dXNlcjpwYXNz"


def room_jid(node: str) -> str:
    return f"{node}@{MUC}"


# --- fixtures ------------------------------------------------------------------


@pytest.fixture
def make_webapp() -> Iterator[Callable[..., MucAuthWebApp]]:
    """A factory of started web apps (same arguments as :class:`MucAuthWebApp`)."""
    apps: list[MucAuthWebApp] = []

    def make(*args: Any, **kwargs: Any) -> MucAuthWebApp:
        app = MucAuthWebApp(*args, **kwargs).start()
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.stop()


@pytest.fixture
def webapp(make_webapp: Callable[..., MucAuthWebApp]) -> MucAuthWebApp:
    """Allows everyone until a test says otherwise (``webapp.decide = ...``)."""
    return make_webapp()


def hosts_toml(hosts: dict[str, dict[str, Any]]) -> str:
    text = ""
    for host, options in hosts.items():
        text += f"\n[hosts.{toml_inline(host)}]\n"
        text += "".join(f"{key} = {toml_inline(value)}\n" for key, value in options.items())
    return text


def muc_component(webapp: MucAuthWebApp, **options: Any) -> dict[str, Any]:
    """The ``[components."rooms.localhost"]`` table: muc with muc_http_auth asking
    ``webapp``; ``options`` override (None removes a key)."""
    table: dict[str, Any] = {
        "module": "muc",
        "muc_room_locking": False,
        "modules_enabled": ["muc_http_auth"],
        "muc_http_auth_url": webapp.url,
        "muc_http_auth_timeout": AUTH_TIMEOUT,
    }
    table.update(options)
    return {key: value for key, value in table.items() if value is not None}


@pytest.fixture
def make_muc_server(
    make_server: Callable[..., JackdawServer], webapp: MucAuthWebApp
) -> Callable[..., JackdawServer]:
    """``make_muc_server(muc_options={...}, hosts={...}, extra_users={jid: password}, start=True)``:
    a server with alice, bob and carol and the MUC component asking ``webapp``."""

    def make(
        muc_options: dict[str, Any] | None = None,
        hosts: dict[str, dict[str, Any]] | None = None,
        extra_users: dict[str, str] | None = None,
        start: bool = True,
    ) -> JackdawServer:
        server = make_server(start=False)
        add_components(server, {MUC: muc_component(webapp, **(muc_options or {}))})
        if hosts:
            base = server.config_text
            server.config_text = lambda: base() + hosts_toml(hosts)  # type: ignore[method-assign]
            server.write_config()
        for jid, password in (extra_users or {}).items():
            server.add_user(jid, password)
        if start:
            server.start()
        return server

    return make


@pytest.fixture
def server(make_muc_server: Callable[..., JackdawServer]) -> JackdawServer:  # noqa: F811 - shadows conftest's
    return make_muc_server()


# --- users -----------------------------------------------------------------------


def user_client(
    server: JackdawServer,
    user: str,
    *,
    host: str = "localhost",
    password: str | None = None,
    resource: str | None = None,
) -> Client:
    """A :class:`Client` for ``user@host`` (another virtual host than localhost too)."""
    password = PASSWORDS[user] if password is None else password
    saved = client_module.DOMAIN
    client_module.DOMAIN = host  # Client builds its JID from harness.client.DOMAIN
    try:
        client = Client(server, user, password, resource=resource)
    finally:
        client_module.DOMAIN = saved
    client.name = f"{user}@{host}" + (f"/{resource}" if resource else "")
    return client


@contextlib.asynccontextmanager
async def online(server: JackdawServer, *users: str | Client) -> AsyncIterator[list[Client]]:
    """Log in users (names, or clients from :func:`user_client`) and send each
    one's initial presence; every client is closed on the way out."""
    clients = [user if isinstance(user, Client) else user_client(server, user) for user in users]
    try:
        await asyncio.gather(*(client.login() for client in clients))
        for client in clients:
            await client.go_online()
        yield clients
    finally:
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


# --- reading stanzas -------------------------------------------------------------


def status_codes(stanza: ElementBase) -> set[int]:
    x = stanza.xml.find(f"{{{NS_MUC_USER}}}x")
    if x is None:
        return set()
    return {int(status.get("code", "0")) for status in x.findall(f"{{{NS_MUC_USER}}}status")}


def error_details(stanza: ElementBase) -> tuple[str | None, list[str], str | None]:
    """``(type, [defined conditions], text)`` of an error stanza's ``<error/>``."""
    error = stanza.xml.find("{jabber:client}error")
    assert error is not None, f"no <error/> in {describe(stanza)}"
    conditions = [
        child.tag.split("}", 1)[1]
        for child in error
        if child.tag.startswith(f"{{{NS_STANZAS}}}") and child.tag != f"{{{NS_STANZAS}}}text"
    ]
    text = error.find(f"{{{NS_STANZAS}}}text")
    return error.get("type"), conditions, None if text is None else (text.text or "")


def is_from_room(stanza: ElementBase, room: str) -> bool:
    return stanza["from"].bare == room


def summary(stanzas: list[ElementBase]) -> str:
    return "\n  ".join(describe(stanza) for stanza in stanzas) or "(nothing)"


def from_room(client: Client, room: str) -> list[ElementBase]:
    """Messages and presence from ``room`` or its occupants still in the inbox."""
    return [s for s in client.inbox if s.xml.tag != "{jabber:client}iq" and is_from_room(s, room)]


# --- talking to rooms ------------------------------------------------------------


def send_join(client: Client, room: str, nick: str, *, show: str | None = None) -> None:
    """Available presence to room/nick with the MUC ``<x/>`` (a join, or a nick change from inside)."""
    presence = client.xmpp.make_presence(pto=f"{room}/{nick}", pshow=show)
    ET.SubElement(presence.xml, f"{{{NS_MUC}}}x")
    presence.send()


async def round_trip(client: Client, jid: str) -> ElementBase | None:
    """A XEP-0199 ping to ``jid``; its reply (result or error). The server
    handles a session's stanzas in order, so once the reply is in, whatever
    the room sent because of this client's earlier stanzas has arrived too."""
    iq = client.xmpp.Iq()
    iq["type"] = "get"
    iq["to"] = jid
    ET.SubElement(iq.xml, f"{{{NS_PING}}}ping")
    try:
        return await iq.send(timeout=STEP)
    except IqError as error:
        return error.iq
    except IqTimeout:
        raise AssertionError(f"{client.name}: no answer to a ping to {jid} within {STEP} s") from None


class Refused(AssertionError):
    """A join answered with a presence error: its type, conditions, text and how long it took."""

    def __init__(self, presence: ElementBase, others: list[ElementBase], elapsed: float) -> None:
        self.presence = presence
        self.others = others
        self.elapsed = elapsed
        self.type, self.conditions, self.text = error_details(presence)
        super().__init__(f"refused after {elapsed:.2f} s: {describe(presence)}")


async def join(client: Client, room: str, nick: str, timeout: float = STEP) -> list[ElementBase]:
    """Join ``room`` as ``nick``; returns what the room sent up to and
    including the subject (taken out of the inbox). A presence error from
    room/nick raises :class:`Refused` (with anything else the room sent)."""
    occupant = f"{room}/{nick}"
    started = time.monotonic()
    before = {id(stanza) for stanza in client.inbox}
    send_join(client, room, nick)

    def fresh() -> list[ElementBase]:
        return [s for s in from_room(client, room) if id(s) not in before]

    def answer(stanza: ElementBase) -> bool:
        if id(stanza) in before or str(stanza["from"]) != occupant:
            return False
        return stanza.xml.get("type") == "error" or 110 in status_codes(stanza)

    try:
        presence = await client.next("presence", answer, timeout, what=f"(self-presence or error from {occupant})")
    except AssertionError:
        raise AssertionError(
            f"{client.name} joining {occupant}: no self-presence and no error within {timeout} s; "
            f"the room sent:\n  {summary(fresh())}"
        ) from None
    elapsed = time.monotonic() - started
    if presence.xml.get("type") == "error":
        others = fresh()
        for stanza in others:
            client.inbox.remove(stanza)
        raise Refused(presence, others, elapsed)
    assert presence.xml.get("type") is None, f"{client.name}: unexpected self-presence {describe(presence)}"

    def subject(stanza: ElementBase) -> bool:
        return (
            id(stanza) not in before
            and is_from_room(stanza, room)
            and stanza.xml.get("type") == "groupchat"
            and stanza.xml.find("{jabber:client}subject") is not None
            and stanza.xml.find("{jabber:client}body") is None
        )

    await client.next("message", subject, timeout, what=f"(subject of {room} after joining)")
    stanzas = [presence] + fresh()
    for stanza in stanzas[1:]:
        client.inbox.remove(stanza)
    return stanzas


async def join_refused(client: Client, room: str, nick: str, timeout: float = STEP) -> Refused:
    """Join (or, from inside, change nick), expecting a presence error from
    room/nick; checks that the user got nothing else from the room meanwhile,
    even after a round trip through it."""
    before = {id(stanza) for stanza in client.inbox}
    try:
        stanzas = await join(client, room, nick, timeout)
    except Refused as refused:
        await round_trip(client, room)
        later = [s for s in from_room(client, room) if id(s) not in before]
        leaked = refused.others + later
        assert not leaked, (
            f"{client.name} was refused {room}/{nick} ({describe(refused.presence)}) "
            f"but also got from the room:\n  {summary(leaked)}"
        )
        assert str(refused.presence["from"]) == f"{room}/{nick}", f"error not from the occupant JID: {refused}"
        x = refused.presence.xml.find(f"{{{NS_MUC}}}x")
        assert x is not None, f"the error lacks <x xmlns='{NS_MUC}'/> clients match it by: {describe(refused.presence)}"
        return refused
    raise AssertionError(f"{client.name} joined {room} as {nick}, expected a refusal:\n  {summary(stanzas)}")


def assert_not_authorized(refused: Refused, text: str | None) -> None:
    """A web app refusal: type auth, ``not-authorized`` and ``text`` (None: no text at all)."""
    assert (refused.type, refused.conditions) == ("auth", ["not-authorized"]), describe(refused.presence)
    assert refused.text == text, f"expected the text {text!r}: {describe(refused.presence)}"


async def say(speaker: Client, room: str, nick: str, body: str, *listeners: Client) -> None:
    """``speaker`` (in ``room`` as ``nick``) says ``body``; it reaches the
    speaker and every listener from room/nick."""
    speaker.xmpp.send_message(mto=room, mbody=body, mtype="groupchat")
    for client in (speaker, *listeners):
        await client.next(
            "message",
            lambda m: str(m["from"]) == f"{room}/{nick}" and m["type"] == "groupchat" and m["body"] == body,
            STEP,
            what=f"(groupchat {body!r} from {room}/{nick})",
        )


async def presence_from(client: Client, occupant: str, ptype: str = "available", timeout: float = STEP) -> ElementBase:
    def match(stanza: ElementBase) -> bool:
        return str(stanza["from"]) == occupant and (stanza.xml.get("type") or "available") == ptype

    return await client.next("presence", match, timeout, what=f"(presence {ptype} from {occupant})")


async def leave(client: Client, room: str, nick: str) -> None:
    client.xmpp.send_presence(pto=f"{room}/{nick}", ptype="unavailable")
    await presence_from(client, f"{room}/{nick}", "unavailable")


def assert_asked(webapp: MucAuthWebApp, count: int, user: str, room: str, nick: str) -> None:
    found = webapp.asked(user, room, nick)
    assert len(found) == count, (
        f"expected the web app asked {count} time(s) about ({user}, {room}, {nick!r}); it got:\n  "
        + webapp.describe_log()
    )


def new_log(server: JackdawServer, mark: int) -> list[str]:
    """The server's log lines written since ``mark`` (a length of :meth:`log_text`)."""
    return server.log_text()[mark:].splitlines()


def outage_warnings(lines: list[str]) -> list[str]:
    return [line for line in lines if " WARN " in line and "muc_http_auth" in line]


# --- allowed joins ---------------------------------------------------------------


async def test_allowed_join_asks_the_webapp_once_per_join(server, webapp):
    """The web app allows: alice and bob join and see each other; the web app
    got one GET per join with the bare JID, the room and the nickname and no
    Authorization header (none configured). A presence update under the same
    nickname and leaving ask nothing; joining again asks again (no cache).
    The requests share one kept-alive connection (a pooled client)."""
    async with online(server, "alice", "bob") as (alice, bob):
        got = await join(alice, TEAPARTY, "Alice")
        assert 201 in status_codes(got[0]), f"the room was not created by alice's join: {summary(got)}"
        (request,) = webapp.requests()
        assert (request.verb, request.path) == ("GET", PATH), request
        assert request.triple == (ALICE, TEAPARTY, "Alice"), request
        assert request.authorization is None, f"an Authorization header no one configured: {request}"

        got = await join(bob, TEAPARTY, "Bob")
        assert any(str(s["from"]) == f"{TEAPARTY}/Alice" for s in got), f"bob did not see alice: {summary(got)}"
        await presence_from(alice, f"{TEAPARTY}/Bob")
        assert_asked(webapp, 1, BOB, TEAPARTY, "Bob")

        send_join(alice, TEAPARTY, "Alice", show="away")
        update = await presence_from(bob, f"{TEAPARTY}/Alice")
        assert update["show"] == "away", describe(update)
        await say(alice, TEAPARTY, "Alice", "tea, anyone?", bob)
        await leave(bob, TEAPARTY, "Bob")
        await presence_from(alice, f"{TEAPARTY}/Bob", "unavailable")
        asked = webapp.describe_log()
        assert len(webapp.requests()) == 2, "a presence update or a leave asked the web app:\n  " + asked

        await join(bob, TEAPARTY, "Bob")
        assert_asked(webapp, 2, BOB, TEAPARTY, "Bob")
    peers = {request.peer for request in webapp.requests()}
    assert len(peers) == 1, f"not one pooled keep-alive connection: requests came from {peers}"


async def test_authorization_header_reaches_webapp(make_webapp, make_server):
    """``muc_http_auth_authorization_header`` is sent verbatim as the
    Authorization header of every request; the web app requires it (401
    otherwise) and lets alice in."""
    app = make_webapp(authorization=BASIC)
    server = make_server(start=False)
    add_components(server, {MUC: muc_component(app, muc_http_auth_authorization_header=BASIC)})
    server.start()
    async with online(server, "alice", "bob") as (alice, bob):
        await join(alice, TEAPARTY, "Alice")
        await join(bob, ORCHARD, "Bob")
    requests = app.requests()
    assert len(requests) == 2, app.describe_log()
    for request in requests:
        assert request.authorization == BASIC, request
        assert request.status == 200, request


# --- refusals ------------------------------------------------------------------------


@pytest.mark.parametrize("show_error", [True, False], ids=["show_error", "hide_error"])
async def test_refused_join_shows_error_and_leaks_nothing(make_muc_server, webapp, show_error):
    """The web app refuses bob: his join ends in a presence error type auth
    ``not-authorized`` from room/Bob with the MUC ``<x/>`` and the web app's
    error as text (none with ``muc_http_auth_show_error = false``); he gets no
    occupant presence, subject or history, alice sees no presence of his, he
    is no occupant (his groupchat message is refused) and gets nothing alice
    says afterwards."""
    error = "Only guests invited by the Hatter may join"
    webapp.decide = refuse_when(lambda r: r.user == BOB, error)
    server = make_muc_server({"muc_http_auth_show_error": show_error})
    async with online(server, "alice", "bob") as (alice, bob):
        await join(alice, TEAPARTY, "Alice")
        alice.xmpp.send_message(mto=TEAPARTY, msubject="Tea at four", mtype="groupchat")
        await alice.next("message", lambda m: m.xml.find("{jabber:client}subject") is not None, STEP, what="(subject)")
        await say(alice, TEAPARTY, "Alice", "the history bob must not see")

        refused = await join_refused(bob, TEAPARTY, "Bob")
        assert_not_authorized(refused, error if show_error else None)
        assert error not in str(refused.presence) or show_error, describe(refused.presence)
        assert_asked(webapp, 1, BOB, TEAPARTY, "Bob")

        await round_trip(alice, TEAPARTY)
        seen = [s for s in from_room(alice, TEAPARTY) if s["from"].resource == "Bob"]
        assert not seen, f"alice saw the refused bob:\n  {summary(seen)}"

        bob.xmpp.send_message(mto=TEAPARTY, mbody="let me in", mtype="groupchat")
        bounce = await bob.next(
            "message", lambda m: m["type"] == "error" and m["from"].bare == TEAPARTY, STEP, what="(error)"
        )
        assert error_details(bounce)[1] == ["not-acceptable"], describe(bounce)
        await say(alice, TEAPARTY, "Alice", "after the refusal")
        await round_trip(bob, TEAPARTY)
        leaked = from_room(bob, TEAPARTY)
        assert not leaked, f"the refused bob got room traffic:\n  {summary(leaked)}"
        heard = [m for m in alice.received("message") if m["body"] == "let me in"]
        assert not heard, f"alice got the refused bob's message:\n  {summary(heard)}"


async def test_refused_join_creates_no_room(server, webapp):
    """A refused join to a room that does not exist leaves no room behind: it
    is not listed, and alice's join afterwards creates it (status 201). A
    refusal with an empty ``error`` carries no text."""
    webapp.decide = refuse_when(lambda r: r.user == BOB, "not you")
    room = room_jid("newroom")
    async with online(server, "alice", "bob", "carol") as (alice, bob, carol):
        refused = await join_refused(bob, room, "Bob")
        assert_not_authorized(refused, "not you")
        items = await alice.xmpp.plugin["xep_0030"].get_items(jid=MUC, timeout=STEP)
        listed = [str(item[0]) for item in items["disco_items"]["items"]]
        assert room not in listed, f"the refused join created {room}: {listed}"
        got = await join(alice, room, "Alice")
        assert 201 in status_codes(got[0]), f"{room} existed before alice's join: {summary(got)}"

        webapp.decide = refuse_everyone("")
        refused = await join_refused(carol, room, "Carol")
        assert_not_authorized(refused, None)  # an empty error: no <text/> at all


async def test_refused_nick_change_keeps_old_nick(server, webapp):
    """A nickname change is a new decision: the web app is asked with the new
    nick; refused, alice gets a ``not-authorized`` presence error from the new
    occupant JID with the web app's text, bob sees no change, alice still
    speaks as Alice. An allowed change then goes through (303)."""
    webapp.decide = refuse_when(lambda r: r.nick == "Queen of Hearts", "That name is reserved")
    async with online(server, "alice", "bob") as (alice, bob):
        await join(alice, TEAPARTY, "Alice")
        await join(bob, TEAPARTY, "Bob")
        await presence_from(alice, f"{TEAPARTY}/Bob")

        refused = await join_refused(alice, TEAPARTY, "Queen of Hearts")
        assert_not_authorized(refused, "That name is reserved")
        assert_asked(webapp, 1, ALICE, TEAPARTY, "Queen of Hearts")
        await round_trip(alice, TEAPARTY)
        await round_trip(bob, TEAPARTY)
        changes = from_room(bob, TEAPARTY)
        assert not changes, f"bob saw something of the refused nick change:\n  {summary(changes)}"

        await say(alice, TEAPARTY, "Alice", "still Alice", bob)
        pong = await round_trip(alice, f"{TEAPARTY}/Alice")  # XEP-0410 self-ping: still an occupant as Alice
        assert pong is not None and pong["type"] == "result", describe(pong)

        send_join(alice, TEAPARTY, "Hatter")
        gone = await presence_from(bob, f"{TEAPARTY}/Alice", "unavailable")
        assert 303 in status_codes(gone), describe(gone)
        await presence_from(bob, f"{TEAPARTY}/Hatter")
        assert_asked(webapp, 1, ALICE, TEAPARTY, "Hatter")
        await say(alice, TEAPARTY, "Hatter", "now the Hatter", bob)


# --- which rooms are checked -----------------------------------------------------------

#: Name → (options, the (user, room) pairs the web app decides; the others join unasked).
SCOPES = {
    "enabled_for-all": (
        {"muc_http_auth_enabled_for": {"all": ["teaparty"]}},
        {(ALICE, TEAPARTY), (DAVE, TEAPARTY)},
    ),
    "enabled_for-hosts": (
        {"muc_http_auth_enabled_for": {OTHER_HOST: ["teaparty"], "localhost": ["orchard"]}},
        {(DAVE, TEAPARTY), (ALICE, ORCHARD)},
    ),
    "enabled_for-all-and-host": (
        {"muc_http_auth_enabled_for": {"all": ["orchard"], OTHER_HOST: ["teaparty"]}},
        {(ALICE, ORCHARD), (DAVE, ORCHARD), (DAVE, TEAPARTY)},
    ),
    "disabled_for-all": (
        {"muc_http_auth_disabled_for": {"all": ["teaparty"]}},
        {(ALICE, ORCHARD), (DAVE, ORCHARD)},
    ),
    "disabled_for-host": (
        {"muc_http_auth_disabled_for": {OTHER_HOST: ["teaparty"]}},
        {(ALICE, TEAPARTY), (ALICE, ORCHARD), (DAVE, ORCHARD)},
    ),
    "neither": (
        {},
        {(ALICE, TEAPARTY), (ALICE, ORCHARD), (DAVE, TEAPARTY), (DAVE, ORCHARD)},
    ),
}


@pytest.mark.parametrize("scope", list(SCOPES))
async def test_enabled_and_disabled_rooms(make_muc_server, webapp, scope):
    """With a web app refusing everyone, alice (localhost) and dave
    (example.test) try teaparty and orchard: the pairs the options select are
    asked and refused, the others join without asking."""
    options, checked = SCOPES[scope]
    webapp.decide = refuse_everyone("checked and refused")
    server = make_muc_server(options, hosts={OTHER_HOST: {}}, extra_users={DAVE: DAVE_PASSWORD})
    dave = user_client(server, "dave", host=OTHER_HOST, password=DAVE_PASSWORD)
    async with online(server, "alice", dave) as (alice, dave):
        assert dave.jid.bare == DAVE
        for client, nick in ((alice, "Alice"), (dave, "Dave")):
            user = client.jid.bare
            for room in (TEAPARTY, ORCHARD):
                if (user, room) in checked:
                    refused = await join_refused(client, room, nick)
                    assert_not_authorized(refused, "checked and refused")
                    assert_asked(webapp, 1, user, room, nick)
                else:
                    await join(client, room, nick)
                    assert_asked(webapp, 0, user, room, nick)
    assert len(webapp.requests()) == len(checked), webapp.describe_log()


def test_both_lists_are_a_config_error(make_server, webapp, binary):
    """``muc_http_auth_enabled_for`` and ``muc_http_auth_disabled_for`` together:
    check-config exits non-zero naming both, and the server refuses to start
    (non-zero exit, no port bound)."""
    server = make_server(start=False)
    both = {"muc_http_auth_enabled_for": {"all": ["teaparty"]}, "muc_http_auth_disabled_for": {"all": ["orchard"]}}
    add_components(server, {MUC: muc_component(webapp, **both)})
    check = subprocess.run(
        [str(binary), "check-config", str(server.config_path)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    output = check.stdout + check.stderr
    assert check.returncode != 0, f"check-config accepted both lists:\n{output}\n{server.config_text()}"
    for option in both:
        assert option in output, output
    run = subprocess.run(
        [str(binary), "--config", str(server.config_path), "run"],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode != 0, f"the server ran with both lists:\n{run.stdout}{run.stderr}"
    assert "muc_http_auth_disabled_for" in run.stdout + run.stderr, run.stdout + run.stderr
    assert not server.listeners_file.exists()
    assert webapp.requests() == []


# --- the web app failing -------------------------------------------------------------

#: Web app mode → the (type, condition) a joining user gets.
FAILURES = {
    "down": ("wait", "service-unavailable"),
    "hang": ("wait", "service-unavailable"),
    "status:500": (None, "internal-server-error"),
    "status:403": (None, "internal-server-error"),
    "garbage": (None, "internal-server-error"),
    "no-allowed": (None, "internal-server-error"),
}


@pytest.mark.parametrize("mode", list(FAILURES))
async def test_webapp_failing_refuses_new_joins_only(server, webapp, mode):
    """Alice and bob are in the room; the web app goes down, hangs or answers
    nonsense. Carol's joins are refused (fail closed) with the fitting
    condition within the timeout, and see nothing of the room; while her join
    waits, alice and bob keep chatting and updating their presence; bob's
    nick change is refused alike but he stays in as Bob; the log has one
    warning for the outage. Once the web app is back, carol joins."""
    expected_type, expected_condition = FAILURES[mode]
    async with online(server, "alice", "bob", "carol") as (alice, bob, carol):
        await join(alice, TEAPARTY, "Alice")
        await join(bob, TEAPARTY, "Bob")
        await presence_from(alice, f"{TEAPARTY}/Bob")
        mark = len(server.log_text())

        if mode == "down":
            webapp.stop()
        else:
            webapp.mode = mode
        attempt = asyncio.ensure_future(join_refused(carol, TEAPARTY, "Carol", timeout=AUTH_TIMEOUT + SLACK))
        try:
            await say(alice, TEAPARTY, "Alice", "is the web app down?", bob)
            await say(bob, TEAPARTY, "Bob", "we can still talk", alice)
            send_join(bob, TEAPARTY, "Bob", show="dnd")
            update = await presence_from(alice, f"{TEAPARTY}/Bob")
            assert update["show"] == "dnd", describe(update)
            if mode == "hang":
                assert not attempt.done(), "carol's join ended before the web app's answer was due"
            refused = await attempt
        finally:
            attempt.cancel()
        assert refused.elapsed < AUTH_TIMEOUT + SLACK, f"refused only after {refused.elapsed:.2f} s"
        assert expected_condition in refused.conditions and len(refused.conditions) == 1, describe(refused.presence)
        if expected_type is not None:
            assert refused.type == expected_type, describe(refused.presence)

        # Carol again, and bob asking for a new nick: both refused, bob stays Bob.
        second, renamed = await asyncio.gather(
            join_refused(carol, TEAPARTY, "Carol in a hurry", timeout=AUTH_TIMEOUT + SLACK),
            join_refused(bob, TEAPARTY, "Robert", timeout=AUTH_TIMEOUT + SLACK),
        )
        assert second.conditions == [expected_condition], describe(second.presence)
        assert renamed.conditions == [expected_condition], describe(renamed.presence)
        await round_trip(alice, TEAPARTY)
        seen = [s for s in from_room(alice, TEAPARTY) if s["from"].resource in ("Carol", "Carol in a hurry", "Robert")]
        assert not seen, f"alice saw the refused carol or bob's refused nick:\n  {summary(seen)}"
        gone = [s for s in from_room(alice, TEAPARTY) if s.xml.get("type") == "unavailable"]
        assert not gone, f"someone left the room during the outage:\n  {summary(gone)}"
        await say(alice, TEAPARTY, "Alice", "still here", bob)
        await say(bob, TEAPARTY, "Bob", "me too", alice)

        warnings = outage_warnings(new_log(server, mark))
        assert len(warnings) == 1, "expected one warning for the outage, got:\n" + "\n".join(warnings)

        if mode == "down":
            webapp.start()
        else:
            webapp.mode = "normal"
        await join(carol, TEAPARTY, "Carol")
        await presence_from(alice, f"{TEAPARTY}/Carol")
    if mode != "down":
        asked = webapp.asked(CAROL, TEAPARTY)
        assert len(asked) == 3, describe_requests(asked)


async def test_each_outage_warned_once(server, webapp):
    """Two outages (500s, then the web app stopped) with an answer between
    them: two warnings in all, whatever the number of refused joins."""
    async with online(server, "alice", "carol") as (alice, carol):
        mark = len(server.log_text())
        webapp.mode = "status:500"
        for nick in ("Carol", "Carol2", "Carol3"):
            await join_refused(carol, TEAPARTY, nick)
        assert len(outage_warnings(new_log(server, mark))) == 1, "\n".join(new_log(server, mark))
        webapp.mode = "normal"
        await join(alice, TEAPARTY, "Alice")
        webapp.stop()
        for nick in ("Carol", "Carol2", "Carol3"):
            refused = await join_refused(carol, TEAPARTY, nick)
            assert refused.conditions == ["service-unavailable"], describe(refused.presence)
        warnings = outage_warnings(new_log(server, mark))
        assert len(warnings) == 2, "expected one warning per outage, got:\n" + "\n".join(warnings)
        await say(alice, TEAPARTY, "Alice", "alone but fine")


# --- special characters ---------------------------------------------------------------

#: A localpart with characters a query string must encode, its password, and a resource.
SPECIAL_USER = "zoë+1%=x#?;,~"
SPECIAL_PASSWORD = "zoë-Secret-5"
SPECIAL_RESOURCE = "phone & tablet/ü"
#: A room node and a nickname likewise (a nickname may hold spaces, '&', '/', emoji).
SPECIAL_NODE = "thé+party%20#1?x=y;z"
SPECIAL_NICK = "Zoë & Ünal / 100% +1 #?=;a=b&c ♥"
#: Characters a form-encoded query string may carry unencoded.
QUERY_CHARACTERS = re.compile(r"^[A-Za-z0-9*\-._~%+&=]*$")


async def test_special_characters_encoded(make_muc_server, webapp):
    """A user, room and nickname full of characters that mean something in a
    URL (and non-ASCII ones) reach the web app exactly, each parameter once,
    the query string properly encoded; userJID is the bare JID. A refusal's
    text with XML specials and non-ASCII arrives intact."""
    user = f"{SPECIAL_USER}@localhost"
    room = room_jid(SPECIAL_NODE)
    error = 'Désolé <b>&amp; "no" ✓</b>'
    webapp.decide = lambda r: Decision(False, error) if r.user == BOB else Decision(True)
    server = make_muc_server(extra_users={user: SPECIAL_PASSWORD})
    zoe = user_client(server, SPECIAL_USER, password=SPECIAL_PASSWORD, resource=SPECIAL_RESOURCE)
    async with online(server, zoe, "bob") as (zoe, bob):
        assert zoe.jid.bare == user, zoe.jid
        got = await join(zoe, room, SPECIAL_NICK)
        assert got[0]["from"].resource == SPECIAL_NICK, describe(got[0])
        refused = await join_refused(bob, room, SPECIAL_NICK + " 2")
        assert_not_authorized(refused, error)

    requests = webapp.requests()
    assert len(requests) == 2, webapp.describe_log()
    for request, expected in zip(requests, [(user, room, SPECIAL_NICK), (BOB, room, SPECIAL_NICK + " 2")]):
        assert request.status == 200, request
        assert request.triple == expected, f"decoded {request.triple}, expected {expected}: {request}"
        assert QUERY_CHARACTERS.match(request.raw_query), f"unencoded characters in the query: {request.raw_query!r}"
        fields = request.raw_query.split("&")
        assert len(fields) == 3 and all(f.count("=") == 1 for f in fields), request.raw_query
        assert sorted(f.split("=", 1)[0] for f in fields) == ["mucJID", "nickname", "userJID"], request.raw_query


# --- the cache --------------------------------------------------------------------------


async def test_cache_spares_the_webapp_but_not_outages(make_muc_server, webapp):
    """With ``muc_http_auth_cache_ttl = 2``: alice rejoining under the same nick
    within the TTL is not asked again (a refusal is cached too); a new nick
    is; a failure is not cached (carol is asked again once the web app is
    back); after the TTL alice is asked again."""
    ttl = 2
    webapp.decide = refuse_when(lambda r: r.user == BOB, "no bobs")
    server = make_muc_server({"muc_http_auth_cache_ttl": ttl})
    async with online(server, "alice", "bob", "carol") as (alice, bob, carol):
        await join(alice, TEAPARTY, "Alice")
        first_asked = time.monotonic()
        await leave(alice, TEAPARTY, "Alice")
        await join(alice, TEAPARTY, "Alice")
        assert_asked(webapp, 1, ALICE, TEAPARTY, "Alice")

        for _ in range(2):
            refused = await join_refused(bob, TEAPARTY, "Bob")
            assert_not_authorized(refused, "no bobs")
        assert_asked(webapp, 1, BOB, TEAPARTY, "Bob")

        await leave(alice, TEAPARTY, "Alice")
        await join(alice, TEAPARTY, "Alice in Wonderland")
        assert_asked(webapp, 1, ALICE, TEAPARTY, "Alice in Wonderland")

        webapp.mode = "status:500"
        refused = await join_refused(carol, TEAPARTY, "Carol")
        assert refused.conditions == ["internal-server-error"], describe(refused.presence)
        webapp.mode = "normal"
        await join(carol, TEAPARTY, "Carol")
        assert_asked(webapp, 2, CAROL, TEAPARTY, "Carol")

        await leave(alice, TEAPARTY, "Alice in Wonderland")
        await asyncio.sleep(max(0.0, first_asked + ttl + 0.5 - time.monotonic()))
        await join(alice, TEAPARTY, "Alice")
        assert_asked(webapp, 2, ALICE, TEAPARTY, "Alice")
