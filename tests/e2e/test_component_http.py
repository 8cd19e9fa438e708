"""component_http (issue 8, ``../shared/seeds/mod_component_http.md``): a bot
written as an HTTP handler. ``bot.localhost`` is a component whose stanzas
Jackdaw POSTs to the test web app (:mod:`harness.bot_webapp`); users talk to
it with slixmpp.

Jackdaw's side of the contract, as these tests read it:

* Forwarded kinds (``component_post_stanzas``, default ``["message"]``;
  ``post_stanza_types`` too) are POSTed as JSON ``{to, from, kind, stanza,
  body}`` (``body`` only for a message that has one) with
  ``Content-Type: application/json``; one sender's stanzas one at a time, in order.
* 200 + a JSON content type → a reply: ``to``/``from`` default to the
  original's swapped, ``kind`` to message (type chat), ``body`` is the body,
  ``type`` optional; ``stanza`` overrides everything and is routed as given,
  its ``from`` forced into the component's domain. Other 2xx → no reply.
  Non-2xx → an error to the sender: 400 bad-request, 401 not-authorized,
  403 forbidden, 404 item-not-found, 410 gone, 500 internal-server-error,
  501 feature-not-implemented, 502/503/504, refused connection and timeout
  → remote-server-timeout (type wait). No reply ever to an error stanza. A
  forwarded IQ that gets no stanza back → service-unavailable.
* Presence not forwarded → the bot is an always-online contact:
  subscribe → subscribed + available, probe → available, unsubscribe →
  unsubscribed + unavailable.
* ``component_post_secret`` → ``X-Jackdaw-Timestamp: <unix seconds>`` and
  ``X-Jackdaw-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``;
  ``component_post_headers`` are sent as given.
* ``POST /component/{domain}/send`` on the HTTP port with ``Authorization:
  Bearer <component_post_token>`` and a JSON body like a reply → 202 and
  delivery; bad or missing token 401, unknown component 404, bad JSON or no
  ``to`` 400.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from slixmpp.jid import JID
from slixmpp.xmlstream import ET

from harness import jid_of
from harness.bot_webapp import BotWebApp, Post, Reply, check_signature, echo
from harness.client import Client, delay_of, describe
from harness.components import NS_ECHO, add_components
from harness.scenarios import logged_in, online_with_roster, wait_subscription
from harness.server import JackdawServer

BOT = "bot.localhost"
ECHO = f"echo@{BOT}"
ALICE, BOB, CAROL = jid_of("alice"), jid_of("bob"), jid_of("carol")
#: component_post_timeout in these tests (seconds): failure paths stay quick.
POST_TIMEOUT = 2
SIGNING_SECRET = "hmac-key"
TOKEN = "send-token"
#: The HTTP statuses the contract maps, and the stanza error each becomes.
HTTP_ERRORS = {
    400: "bad-request",
    401: "not-authorized",
    403: "forbidden",
    404: "item-not-found",
    410: "gone",
    500: "internal-server-error",
    501: "feature-not-implemented",
    502: "remote-server-timeout",
    503: "remote-server-timeout",
    504: "remote-server-timeout",
}


# --- fixtures ------------------------------------------------------------------


@pytest.fixture
def bot() -> Iterator[BotWebApp]:
    """The bot's web app, an echo bot until a test gives it another handler."""
    app = BotWebApp().start()
    yield app
    app.stop()


@pytest.fixture
def make_bot_server(make_server: Callable[..., JackdawServer], bot: BotWebApp) -> Callable[..., JackdawServer]:
    """``make_bot_server(component_options={...}, components={...})``: a server
    with ``bot.localhost`` posting to ``bot`` (plus any other ``components``)."""

    def make(
        component_options: dict[str, Any] | None = None,
        components: dict[str, dict[str, Any]] | None = None,
        options: dict[str, Any] | None = None,
    ) -> JackdawServer:
        component = {
            "module": "component_http",
            "component_post_url": bot.url,
            "component_post_timeout": POST_TIMEOUT,
        }
        component.update(component_options or {})
        tables = {BOT: component}
        tables.update(components or {})
        settings = {"component_ports": [0]}
        settings.update(options or {})
        server = make_server(options=settings, start=False)
        add_components(server, tables)
        server.start()
        return server

    return make


@pytest.fixture
def server(make_bot_server: Callable[..., JackdawServer]) -> JackdawServer:  # noqa: F811 - shadows conftest's
    return make_bot_server()


# --- helpers -------------------------------------------------------------------


def text(stanza: Any) -> str:
    return describe(stanza)


def send(client: Client, to: str, body: str | None, mtype: str = "chat", stanza_id: str | None = None) -> None:
    message = client.xmpp.make_message(mto=to, mbody=body, mtype=mtype)
    if stanza_id is not None:
        message["id"] = stanza_id
    message.send()


def from_bot_domain(stanza: Any) -> bool:
    return stanza["from"].domain == BOT


async def error_from(client: Client, sender: str, kind: str = "message", **kwargs: Any) -> Any:
    """The next ``kind`` stanza of type error from ``sender`` (bare or full JID)."""

    def match(stanza: Any) -> bool:
        return stanza["type"] == "error" and (stanza["from"].bare == sender or str(stanza["from"]) == sender)

    kwargs.setdefault("what", f"(error from {sender})")
    return await client.next(kind, match, **kwargs)


async def marker(client: Client, label: str) -> None:
    """The echo bot round trip as a marker: whatever the bot would have sent
    ``client`` for an earlier stanza has arrived once this returns (one
    sender's stanzas are posted, and answered, in order)."""
    send(client, ECHO, f"marker {label}")
    await client.next_message(ECHO, f"echo: marker {label}", what=f"(echo of marker {label})")


def with_markers(handler: Callable[[Post], Reply]) -> Callable[[Post], Reply]:
    """``handler``, except that markers are echoed."""

    def handle(post: Post) -> Reply:
        if post.kind == "message" and (post.body or "").startswith("marker "):
            return echo(post)
        return handler(post)

    return handle


def messages_from_bot(client: Client, exclude_markers: bool = True) -> list[Any]:
    def match(message: Any) -> bool:
        if not from_bot_domain(message):
            return False
        return not (exclude_markers and (message["body"] or "").startswith("echo: marker "))

    return client.received("message", match)


def local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def child(element: ET.Element, name: str) -> ET.Element | None:
    for item in element:
        if local_name(item.tag) == name:
            return item
    return None


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 10
) -> tuple[int, bytes]:
    """One HTTP request; returns the status and body, 4xx/5xx included."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def send_api(
    server: JackdawServer,
    payload: Any,
    token: str | None = TOKEN,
    domain: str = BOT,
    raw: bytes | None = None,
) -> tuple[int, bytes]:
    """``POST /component/{domain}/send`` with the bearer ``token`` (none if None)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = raw if raw is not None else json.dumps(payload).encode()
    return http("POST", f"http://127.0.0.1:{server.http_port}/component/{domain}/send", body, headers)


def echo_iq(client: Client, to: str, query_text: str) -> Any:
    iq = client.xmpp.Iq()
    iq["type"] = "get"
    iq["to"] = to
    ET.SubElement(iq.xml, f"{{{NS_ECHO}}}query", {"text": query_text})
    return iq


# --- requests and replies ------------------------------------------------------


async def test_echo_bot_answers_with_body(server, bot):
    """alice's phone says hello to echo@bot.localhost: the web app gets the
    documented JSON, and its ``{"body": ...}`` comes back to the phone (not
    her desk) from echo@bot.localhost as a chat message."""
    async with logged_in(server, ("alice", "phone"), ("alice", "desk")) as (phone, desk):
        send(phone, ECHO, "hello bot", stanza_id="echo-1")

        post = await bot.wait_post()
        content_type = post.headers.get("content-type", "")
        assert content_type.split(";")[0].strip().lower() == "application/json", post.headers
        assert post.verb == "POST" and post.data is not None, post.describe()
        assert post.to == ECHO and post.sender == str(phone.jid), post.data
        assert post.kind == "message" and post.body == "hello bot", post.data
        stanza = post.element()
        assert local_name(stanza.tag) == "message", post.stanza
        assert (stanza.get("to"), stanza.get("from"), stanza.get("id")) == (ECHO, str(phone.jid), "echo-1"), post.stanza
        body = child(stanza, "body")
        assert body is not None and body.text == "hello bot", post.stanza

        reply = await phone.next_message(ECHO, "echo: hello bot")
        assert str(reply["from"]) == ECHO and str(reply["to"]) == str(phone.jid), text(reply)
        assert reply["type"] == "chat", text(reply)

        await marker(desk, "desk")
        assert desk.received("message", lambda m: m["body"] == "echo: hello bot") == []


async def test_any_address_at_the_bot_domain(server, bot):
    """The bare domain and full JIDs at it are posted as addressed, and the
    reply comes from that address."""
    async with logged_in(server, "alice") as (alice,):
        for to in (BOT, f"support@{BOT}/desk-1"):
            send(alice, to, f"to {to}")
            post = await bot.wait_post(lambda p, to=to: p.to == to)
            assert post.body == f"to {to}"
            reply = await alice.next_message(to, f"echo: to {to}")
            assert str(reply["from"]) == to, text(reply)


async def test_message_without_body_has_no_body_field(server, bot):
    """A message without a body (a chat state) is posted without ``body``;
    the echo bot's 204 sends nothing back."""
    async with logged_in(server, "alice") as (alice,):
        message = alice.xmpp.make_message(mto=ECHO, mtype="chat")
        ET.SubElement(message.xml, "{http://jabber.org/protocol/chatstates}composing")
        message.send()
        post = await bot.wait_post()
        assert post.kind == "message" and "body" not in post.data, post.data
        composing = child(post.element(), "composing")
        assert composing is not None, post.stanza
        await marker(alice, "after chat state")
        assert messages_from_bot(alice) == []


async def test_json_reply_content_types(server, bot):
    """``application/json; charset=utf-8`` is JSON too (non-ASCII survives);
    a 200 that is not JSON, or has no Content-Type, gives no reply."""

    def handler(post: Post) -> Reply:
        if post.body == "charset":
            return Reply(json={"body": "réponse ☃ 雪"}, content_type="application/json; charset=utf-8")
        if post.body == "plain":
            return Reply(body=json.dumps({"body": "should not (text/plain)"}), content_type="text/plain")
        if post.body == "html":
            return Reply(body=json.dumps({"body": "should not (text/html)"}), content_type="text/html")
        return Reply(body=json.dumps({"body": "should not (no content type)"}), content_type=None)

    bot.handler = with_markers(handler)
    async with logged_in(server, "alice") as (alice,):
        send(alice, ECHO, "charset")
        reply = await alice.next_message(ECHO, "réponse ☃ 雪")
        assert reply["type"] == "chat"
        for body in ("plain", "html", "none"):
            send(alice, ECHO, body)
        await marker(alice, "after non-JSON")
        assert messages_from_bot(alice) == [], [text(m) for m in messages_from_bot(alice)]


async def test_reply_with_custom_fields(server, bot):
    """``to``, ``from``, ``type`` and ``kind`` in the JSON reply are used; what
    is missing defaults (from = the original to, kind message)."""
    replies = {
        "to bob": {"body": "for bob", "to": BOB},
        "from helper": {"body": "from the helper", "from": f"helper@{BOT}/desk"},
        "headline": {"body": "breaking news", "type": "headline"},
        "normal": {"body": "a normal message", "kind": "message", "type": "normal"},
        "presence": {"kind": "presence", "from": f"status@{BOT}"},
        "presence gone": {"kind": "presence", "from": f"status@{BOT}", "type": "unavailable"},
    }
    bot.handler = with_markers(lambda post: Reply(json=replies[post.body]))
    async with logged_in(server, "alice", "bob") as (alice, bob):
        await alice.go_online()  # a directed presence goes to available resources only
        await bob.go_online()

        send(alice, ECHO, "to bob")
        for_bob = await bob.next_message(ECHO, "for bob")
        assert str(for_bob["from"]) == ECHO and for_bob["type"] == "chat", text(for_bob)

        send(alice, ECHO, "from helper")
        helper = await alice.next_message(f"helper@{BOT}/desk", "from the helper")
        assert str(helper["from"]) == f"helper@{BOT}/desk" and str(helper["to"]) == str(alice.jid), text(helper)

        send(alice, ECHO, "headline")
        headline = await alice.next("message", lambda m: m["body"] == "breaking news")
        assert headline["type"] == "headline" and str(headline["from"]) == ECHO, text(headline)

        send(alice, ECHO, "normal")
        normal = await alice.next("message", lambda m: m["body"] == "a normal message")
        assert normal.xml.get("type") in (None, "normal") and str(normal["from"]) == ECHO, text(normal)

        send(alice, ECHO, "presence")
        available = await alice.next_presence(f"status@{BOT}", "available")
        assert str(available["to"]) == str(alice.jid), text(available)
        send(alice, ECHO, "presence gone")
        await alice.next_presence(f"status@{BOT}", "unavailable")

        await marker(alice, "custom")
        assert alice.received("message", lambda m: m["body"] == "for bob") == []


async def test_reply_to_offline_user_is_stored(server, bot):
    """A reply is routed like any message: to carol, who is offline, it is
    stored and delivered when she comes online."""
    bot.handler = with_markers(lambda post: Reply(json={"body": "see you later", "to": CAROL}))
    async with logged_in(server, "alice") as (alice,):
        send(alice, ECHO, "tell carol")
        await bot.wait_post(lambda p: p.body == "tell carol")
        await marker(alice, "after carol")
    async with logged_in(server, "carol") as (carol,):
        carol.send_presence()
        stored = await carol.next_message(ECHO, "see you later")
        assert delay_of(stored) is not None, text(stored)


async def test_stanza_reply_routed_with_from_in_domain(server, bot):
    """A ``stanza`` reply overrides everything else and is routed as given;
    its ``from`` is kept inside bot.localhost and forced there otherwise,
    so a bot can never speak as bob@localhost."""

    def handler(post: Post) -> Reply:
        me = post.sender
        stanzas = {
            "to bob": f"<message to='{BOB}' from='news@{BOT}' type='chat'><body>stanza for bob</body>"
            "<x xmlns='urn:example:extra' n='1'><y>kept</y></x></message>",
            "foreign": f"<message xmlns='jabber:client' to='{me}' from='mallory@evil.example' type='chat'>"
            "<body>foreign from</body></message>",
            "spoof": f"<message to='{me}' from='{BOB}/phone' type='chat'><body>spoofed bob</body></message>",
            "no from": f"<message to='{me}' type='chat'><body>no from</body></message>",
        }
        if post.body == "override":
            stanza = f"<message to='{me}' from='{ECHO}' type='chat'><body>the stanza wins</body></message>"
            return Reply(json={"stanza": stanza, "body": "not this", "to": CAROL, "type": "headline"})
        return Reply(json={"stanza": stanzas[post.body]})

    bot.handler = with_markers(handler)
    async with logged_in(server, "alice", "bob", "carol") as (alice, bob, carol):
        for client in (bob, carol):
            await client.go_online()

        send(alice, ECHO, "to bob")
        for_bob = await bob.next_message(f"news@{BOT}", "stanza for bob")
        extra = for_bob.xml.find("{urn:example:extra}x")
        assert extra is not None and extra.get("n") == "1", text(for_bob)
        assert extra.find("{urn:example:extra}y") is not None, text(for_bob)

        for body, shown in (("foreign", "foreign from"), ("spoof", "spoofed bob"), ("no from", "no from")):
            send(alice, ECHO, body)
            got = await alice.next("message", lambda m, shown=shown: m["body"] == shown, what=f"({shown})")
            assert from_bot_domain(got), f"the bot's stanza arrived from {got['from']}: {text(got)}"

        send(alice, ECHO, "override")
        won = await alice.next_message(ECHO, "the stanza wins")
        assert won["type"] == "chat", text(won)

        await marker(alice, "stanzas")
        await marker(carol, "carol")
        assert alice.received("message", lambda m: m["body"] == "not this") == []
        assert carol.received("message", lambda m: m["body"] in ("not this", "the stanza wins")) == []
        assert alice.received("message", lambda m: m["from"].bare == BOB) == []


async def test_other_2xx_gives_no_reply(server, bot):
    """201, 202 and 204 (even with a JSON body) send nothing back."""
    statuses = {"s201": 201, "s202": 202, "s204": 204}

    def handler(post: Post) -> Reply:
        status = statuses[post.body]
        return Reply(status, json=None if status == 204 else {"body": f"should not ({status})"})

    bot.handler = with_markers(handler)
    async with logged_in(server, "alice") as (alice,):
        for body in statuses:
            send(alice, ECHO, body)
        await bot.wait_posts(3, lambda p: p.body in statuses)
        await marker(alice, "after 2xx")
        assert messages_from_bot(alice) == [], [text(m) for m in messages_from_bot(alice)]


async def test_http_errors_become_stanza_errors(server, bot):
    """Each mapped HTTP status (answered with a JSON body, which must not
    matter) comes back to alice as the right stanza error from the bot's
    address, with her message's id."""
    bot.handler = with_markers(
        lambda post: Reply(int(JID(post.to).user[1:]), json={"body": "an error page"}, content_type="application/json")
    )
    async with logged_in(server, "alice") as (alice,):
        got: dict[int, tuple[str, str, str]] = {}
        for status in HTTP_ERRORS:
            address = f"s{status}@{BOT}"
            send(alice, address, f"status {status}", stanza_id=f"err-{status}")
            error = await error_from(alice, address, timeout=POST_TIMEOUT + 8)
            got[status] = (error["error"]["condition"], error["error"]["type"], error["id"])
        expected = {status: (condition, got[status][1], f"err-{status}") for status, condition in HTTP_ERRORS.items()}
        assert got == expected
        for status in (502, 503, 504):
            assert got[status][1] == "wait", f"HTTP {status}: error type {got[status][1]!r}, expected wait"
        await marker(alice, "after errors")
        assert messages_from_bot(alice, exclude_markers=True) == [], "a reply besides the errors"


async def test_timeout_gives_remote_server_timeout(server, bot):
    """The web app takes longer than component_post_timeout: alice gets
    remote-server-timeout (wait) after about that long, and the late answer
    is never delivered."""
    bot.handler = with_markers(lambda post: Reply(json={"body": "too late"}, delay=POST_TIMEOUT + 6))
    async with logged_in(server, "alice") as (alice,):
        started = time.monotonic()
        send(alice, ECHO, "are you there?", stanza_id="slow-1")
        error = await error_from(alice, ECHO, timeout=POST_TIMEOUT + 8)
        elapsed = time.monotonic() - started
        assert error["error"]["condition"] == "remote-server-timeout", text(error)
        assert error["error"]["type"] == "wait", text(error)
        assert error["id"] == "slow-1"
        assert POST_TIMEOUT - 0.5 <= elapsed <= POST_TIMEOUT + 3, f"error after {elapsed:.1f} s"

        bot.release()  # the delayed answer goes out now, to a connection Jackdaw has given up on
        await marker(alice, "after timeout")
        assert alice.received("message", lambda m: m["body"] == "too late") == []


async def test_web_app_down_gives_remote_server_timeout(server, bot):
    """The web app's port is closed: remote-server-timeout (wait) at once;
    when it is back, the bot answers again."""
    async with logged_in(server, "alice") as (alice,):
        await marker(alice, "warm-up")  # a pooled keep-alive connection exists
        bot.stop()
        started = time.monotonic()
        send(alice, ECHO, "hello?", stanza_id="down-1")
        error = await error_from(alice, ECHO)
        assert error["error"]["condition"] == "remote-server-timeout", text(error)
        assert error["error"]["type"] == "wait", text(error)
        assert time.monotonic() - started < POST_TIMEOUT + 2
        bot.start()
        await marker(alice, "back")


async def test_no_reply_to_error_stanzas(server, bot):
    """A message of type error to the bot never gets anything back, whatever
    the web app answers (a JSON reply, 500, 204): no error loops."""
    answers = iter([Reply(json={"body": "reply to an error"}), Reply(500, body="no", content_type="text/plain"),
                    Reply(204)])

    def handler(post: Post) -> Reply:
        return next(answers, Reply(json={"body": "reply to an error"}))

    bot.handler = with_markers(handler)
    async with logged_in(server, "alice") as (alice,):
        for n in range(3):
            message = alice.xmpp.make_message(mto=ECHO, mtype="error")
            message["id"] = f"error-{n}"
            message["error"]["type"] = "cancel"
            message["error"]["condition"] = "service-unavailable"
            message.send()
        await marker(alice, "after errors")
        assert messages_from_bot(alice) == [], [text(m) for m in messages_from_bot(alice)]


# --- presence ------------------------------------------------------------------


async def test_presence_subscription_auto_accepted(server, bot):
    """alice subscribes to echo@bot.localhost: subscribed and its available
    presence come at once and her roster says "to"; her next resource sees
    it online at login (probe). After she unsubscribes she sees it go
    unavailable (the component's unsubscribed is RFC 6121's to drop, her
    subscription being none by then) and a new resource no longer sees it.
    Nothing is posted to the web app."""
    async with logged_in(server, ("alice", "desk")) as (alice,):
        await online_with_roster(alice)
        alice.send_presence(pto=ECHO, ptype="subscribe")
        await alice.next_presence(ECHO, "subscribed")
        await wait_subscription(alice, ECHO, "to")
        online = await alice.next_presence(ECHO, "available")
        assert online["from"].bare == ECHO, text(online)

        laptop = Client(server, "alice", resource="laptop")
        await laptop.login()
        try:
            await laptop.roster_get()
            laptop.send_presence()
            await laptop.next_presence(ECHO, "available")
        finally:
            await laptop.close()

        alice.send_presence(pto=ECHO, ptype="unsubscribe")
        await alice.next_presence(ECHO, "unavailable")
        await wait_subscription(alice, ECHO, "none")

        tablet = Client(server, "alice", resource="tablet")
        await tablet.login()
        try:
            await tablet.roster_get()
            await tablet.go_online()
            await marker(tablet, "tablet")
            assert tablet.received("presence", lambda p: p["from"].bare == ECHO) == [], "the bot was still probed"
        finally:
            await tablet.close()
        await marker(alice, "after presence")
        assert bot.posts(lambda p: p.kind != "message") == [], bot.describe_log()


async def test_bare_domain_is_an_always_online_contact(server, bot):
    """The bare component domain is a contact like any address at it."""
    async with logged_in(server, "alice") as (alice,):
        await online_with_roster(alice)
        alice.send_presence(pto=BOT, ptype="subscribe")
        await alice.next_presence(BOT, "subscribed")
        await alice.next_presence(BOT, "available")
        item = await wait_subscription(alice, BOT, "to")
        assert item["ask"] is None


# --- forwarding every kind -----------------------------------------------------


def iq_answer(post: Post) -> Reply:
    """For the bot forwarding IQs: echo queries get a result stanza, ``none`` a
    204, ``missing`` a 404; messages are echoed; presences get 204."""
    if post.kind == "message":
        return echo(post)
    if post.kind != "iq":
        return Reply(204)
    stanza = post.element()
    query = stanza.find(f"{{{NS_ECHO}}}query")
    wanted = query.get("text") if query is not None else None
    if wanted == "none":
        return Reply(204)
    if wanted == "missing":
        return Reply(404, body="no such thing", content_type="text/plain")
    if stanza.get("type") == "error":
        return Reply(json={"body": "reply to an iq error"})
    result = (
        f"<iq type='result' id='{stanza.get('id')}' to='{post.sender}' from='{post.to}'>"
        f"<query xmlns='{NS_ECHO}' text='echo {wanted}'/></iq>"
    )
    return Reply(json={"stanza": result})


async def test_forward_messages_presence_and_iq(make_bot_server, bot):
    """With component_post_stanzas = ["message", "presence", "iq"] all three
    kinds are posted (``body`` only for the message) and no presence is
    answered automatically."""
    server = make_bot_server({"component_post_stanzas": ["message", "presence", "iq"]})
    bot.handler = iq_answer
    async with logged_in(server, "alice") as (alice,):
        send(alice, ECHO, "a message")
        await alice.next_message(ECHO, "echo: a message")

        alice.send_presence(pto=ECHO, pstatus="hello bot")
        presence = await bot.wait_post(lambda p: p.kind == "presence")
        assert presence.to == ECHO and presence.sender == str(alice.jid), presence.data
        assert "body" not in presence.data, presence.data
        status = child(presence.element(), "status")
        assert status is not None and status.text == "hello bot", presence.stanza

        alice.send_presence(pto=ECHO, ptype="subscribe")
        subscribe = await bot.wait_post(lambda p: p.kind == "presence" and p.element().get("type") == "subscribe")
        assert JID(subscribe.sender).bare == ALICE, subscribe.data

        result = await alice.iq(echo_iq(alice, ECHO, "ping"))
        assert result["type"] == "result" and str(result["from"]) == ECHO, text(result)
        assert result.xml.find(f"{{{NS_ECHO}}}query").get("text") == "echo ping", text(result)
        iq_post = await bot.wait_post(lambda p: p.kind == "iq")
        assert iq_post.to == ECHO and iq_post.sender == str(alice.jid) and "body" not in iq_post.data, iq_post.data
        assert local_name(iq_post.element().tag) == "iq" and iq_post.element().get("type") == "get"

        await marker(alice, "all kinds")
        assert alice.received("presence", lambda p: p["from"].bare == ECHO) == [], "presence answered automatically"


async def test_forwarded_iq_always_answered(make_bot_server, bot):
    """A forwarded IQ gets the web app's stanza, or an error: 204 →
    service-unavailable, 404 → item-not-found; never silence. An IQ error
    sent to the bot gets nothing back."""
    server = make_bot_server({"component_post_stanzas": ["message", "iq"]})
    bot.handler = iq_answer
    async with logged_in(server, "alice") as (alice,):
        result = await alice.iq(echo_iq(alice, BOT, "domain"))
        assert result.xml.find(f"{{{NS_ECHO}}}query").get("text") == "echo domain", text(result)

        with pytest.raises(IqError) as nothing:
            await alice.iq(echo_iq(alice, ECHO, "none"), timeout=POST_TIMEOUT + 8)
        assert nothing.value.iq["error"]["condition"] == "service-unavailable", text(nothing.value.iq)

        with pytest.raises(IqError) as missing:
            await alice.iq(echo_iq(alice, ECHO, "missing"), timeout=POST_TIMEOUT + 8)
        assert missing.value.iq["error"]["condition"] == "item-not-found", text(missing.value.iq)

        error = alice.xmpp.Iq()
        error["type"] = "error"
        error["to"] = ECHO
        error["id"] = "iq-error-1"
        error["error"]["type"] = "cancel"
        error["error"]["condition"] = "feature-not-implemented"
        error.send()
        await marker(alice, "after iq error")
        assert messages_from_bot(alice) == [], [text(m) for m in messages_from_bot(alice)]


async def test_post_stanza_types_is_accepted(make_bot_server, bot):
    """The reference module's option name ``post_stanza_types`` works too."""
    server = make_bot_server({"post_stanza_types": ["iq"]})
    bot.handler = iq_answer
    async with logged_in(server, "alice") as (alice,):
        result = await alice.iq(echo_iq(alice, ECHO, "old name"))
        assert result.xml.find(f"{{{NS_ECHO}}}query").get("text") == "echo old name", text(result)
        send(alice, ECHO, "not forwarded")
        result = await alice.iq(echo_iq(alice, ECHO, "marker"))  # the iq round trip is the marker here
        assert bot.posts(lambda p: p.kind == "message") == [], bot.describe_log()


# --- signed webhooks -----------------------------------------------------------


async def test_signed_posts_verify_and_tampering_does_not(make_bot_server, bot):
    """With component_post_secret every POST carries a fresh timestamp and
    ``sha256=HMAC(secret, timestamp + "." + body)``; the web app verifies it
    (and answers), the static header arrives, and a changed body, timestamp
    or secret fails verification. A web app with another secret refuses
    Jackdaw's POST, which alice sees as not-authorized."""
    server = make_bot_server(
        {"component_post_secret": SIGNING_SECRET, "component_post_headers": {"Authorization": "Bearer abc"}}
    )
    bot.secret = SIGNING_SECRET
    async with logged_in(server, "alice") as (alice,):
        send(alice, ECHO, "signed hello")
        await alice.next_message(ECHO, "echo: signed hello")

        post = await bot.wait_post(lambda p: p.body == "signed hello")
        assert post.problem is None and post.status == 200, post.describe()
        assert post.headers.get("authorization") == "Bearer abc", post.headers
        timestamp = post.headers.get("x-jackdaw-timestamp", "")
        given = post.headers.get("x-jackdaw-signature", "")
        assert timestamp.isdigit() and abs(int(timestamp) - time.time()) < 60, post.headers
        # Computed here, independently of the web app's helper.
        mac = hmac.new(SIGNING_SECRET.encode(), timestamp.encode() + b"." + post.raw, hashlib.sha256).hexdigest()
        assert given == f"sha256={mac}", f"signature {given!r}, expected sha256={mac}"

        tampered_body = post.raw.replace(b"signed hello", b"signed hellO")
        assert tampered_body != post.raw
        assert check_signature(SIGNING_SECRET, post.headers, tampered_body) is not None
        later = dict(post.headers, **{"x-jackdaw-timestamp": str(int(timestamp) + 1)})
        assert check_signature(SIGNING_SECRET, later, post.raw) is not None
        assert check_signature("another-key", post.headers, post.raw) is not None

        # Replayed to the web app: untouched it verifies, tampered it is refused.
        forwarded = {
            "Content-Type": "application/json",
            "X-Jackdaw-Timestamp": timestamp,
            "X-Jackdaw-Signature": given,
        }
        status, _ = http("POST", bot.url, post.raw, forwarded)
        assert status == 200
        status, _ = http("POST", bot.url, tampered_body, forwarded)
        assert status == 401, bot.describe_log()

        bot.secret = "another-key"
        send(alice, ECHO, "wrong key", stanza_id="signed-2")
        error = await error_from(alice, ECHO)
        assert error["error"]["condition"] == "not-authorized" and error["id"] == "signed-2", text(error)


# --- the send API --------------------------------------------------------------


async def test_send_api_delivers_and_checks_token(make_bot_server, bot):
    """The web app pushes stanzas as the bot: 202 and delivered to online
    alice (from the component domain by default, or as given); a bad or
    missing token is 401, an unknown component 404, bad JSON or no ``to``
    400, and nothing refused is delivered."""
    server = make_bot_server({"component_post_token": TOKEN})
    async with logged_in(server, "alice") as (alice,):
        await alice.go_online()

        status, body = send_api(server, {"to": ALICE, "body": "pushed"})
        assert status == 202, body
        pushed = await alice.next_message(BOT, "pushed")
        assert str(pushed["from"]) == BOT, text(pushed)

        status, body = send_api(
            server, {"to": str(alice.jid), "from": f"news@{BOT}", "body": "headline news", "type": "headline"}
        )
        assert status == 202, body
        news = await alice.next("message", lambda m: m["body"] == "headline news")
        assert str(news["from"]) == f"news@{BOT}" and news["type"] == "headline", text(news)

        stanza = f"<message to='{ALICE}' from='alerts@{BOT}' type='chat'><body>stanza push</body></message>"
        status, body = send_api(server, {"to": ALICE, "stanza": stanza})
        assert status == 202, body
        await alice.next_message(f"alerts@{BOT}", "stanza push")

        refused = {
            "wrong token": send_api(server, {"to": ALICE, "body": "bad token"}, token="nope"),
            "no token": send_api(server, {"to": ALICE, "body": "no token"}, token=None),
            "unknown component": send_api(server, {"to": ALICE, "body": "unknown"}, domain="nope.localhost"),
            "not JSON": send_api(server, None, raw=b"{not json"),
            "no to": send_api(server, {"body": "no to"}),
        }
        statuses = {case: status for case, (status, _body) in refused.items()}
        assert statuses == {
            "wrong token": 401,
            "no token": 401,
            "unknown component": 404,
            "not JSON": 400,
            "no to": 400,
        }, refused

        status, body = send_api(server, {"to": ALICE, "body": "after the refusals"})
        assert status == 202, body
        await alice.next_message(BOT, "after the refusals")
        shown = [m["body"] for m in alice.received("message")]
        assert not {"bad token", "no token", "unknown", "no to"} & set(shown), shown


async def test_send_api_cannot_speak_for_users(make_bot_server, bot):
    """A ``from`` outside the component's domain is refused (4xx) or forced
    into it: alice never gets a message claiming to be from bob."""
    server = make_bot_server({"component_post_token": TOKEN})
    async with logged_in(server, "alice") as (alice,):
        await alice.go_online()
        status, _ = send_api(server, {"to": ALICE, "from": BOB, "body": "as bob"})
        assert status == 202 or 400 <= status < 500, status
        stanza = f"<message to='{ALICE}' from='{BOB}' type='chat'><body>stanza as bob</body></message>"
        status, _ = send_api(server, {"to": ALICE, "stanza": stanza})
        assert status == 202 or 400 <= status < 500, status
        status, _ = send_api(server, {"to": ALICE, "body": "marker"})
        assert status == 202
        await alice.next_message(BOT, "marker")
        assert alice.received("message", lambda m: m["from"].bare == BOB) == []
        for message in alice.received("message"):
            assert from_bot_domain(message), text(message)


# --- ordering and concurrency --------------------------------------------------


async def test_one_senders_messages_posted_in_order(server, bot):
    """20 quick messages from alice reach the web app one at a time and in
    order (even with uneven answer times), and the replies come back in order."""
    rng = random.Random(8)

    def handler(post: Post) -> Reply:
        return Reply(json={"body": f"echo: {post.body}"}, delay=rng.uniform(0, 0.05))

    bot.handler = handler
    bodies = [f"n {i}" for i in range(20)]
    async with logged_in(server, "alice") as (alice,):
        for body in bodies:
            send(alice, ECHO, body)
        posts = await bot.wait_posts(20, timeout=30)
        assert [post.body for post in posts] == bodies, bot.describe_log()
        assert bot.peak_inflight_by_sender.get(str(alice.jid)) == 1, bot.peak_inflight_by_sender
        replies = [await alice.next_message(ECHO) for _ in bodies]
        assert [reply["body"] for reply in replies] == [f"echo: {body}" for body in bodies]


async def test_slow_web_app_delays_only_its_own_stanzas(make_bot_server, bot):
    """While one POST hangs, another component's bot and another sender to
    the same bot are answered."""
    server = make_bot_server(
        {"component_post_timeout": 20},
        components={
            "slow.localhost": {
                "module": "component_http",
                "component_post_url": bot.url,
                "component_post_timeout": 20,
            }
        },
    )

    def handler(post: Post) -> Reply:
        if JID(post.to).domain == "slow.localhost" or post.body == "hang":
            return Reply(json={"body": "finally"}, delay=30)
        return echo(post)

    bot.handler = handler
    async with logged_in(server, "alice", "bob") as (alice, bob):
        send(alice, "someone@slow.localhost", "slow please")
        await bot.wait_post(lambda p: p.to == "someone@slow.localhost", answered=False)
        send(alice, ECHO, "quick")
        await alice.next_message(ECHO, "echo: quick")
        assert bot.posts(lambda p: p.to == "someone@slow.localhost")[0].status is None

        send(alice, ECHO, "hang")
        await bot.wait_post(lambda p: p.body == "hang", answered=False)
        send(bob, ECHO, "bob is not stuck")
        await bob.next_message(ECHO, "echo: bob is not stuck")
        assert bot.posts(lambda p: p.body == "hang")[0].status is None
        bot.release()
        await alice.next_message(ECHO, "finally")
