"""XEP-0114 external components (issue 8): slixmpp's ``ComponentXMPP`` (and a
raw socket, for the handshake's details) connecting to Jackdaw's component
listener as ``ext.localhost`` with the secret ``s3cret``.

Jackdaw's side of the contract, as these tests read it:

* ``component_ports`` (here ``[0]``, ephemeral, named ``component`` in
  listeners.json); a ``[components."ext.localhost"]`` table with a
  ``component_secret`` and no module is an external component.
* Stream header ``xmlns='jabber:component:accept' to='ext.localhost'`` →
  the server's header with a stream id; ``<handshake>`` = hex SHA-1(id +
  secret) → ``<handshake/>``. Wrong secret → ``<not-authorized/>``, an
  unconfigured domain → ``<host-unknown/>``, a second connection for a
  connected domain → ``<conflict/>`` while the first keeps working.
* Every stanza for ``ext.localhost`` or ``*@ext.localhost`` reaches the
  component; its stanzas need a ``from`` in its domain (else
  ``<invalid-from/>``) and are routed like any other stanza.
* Component gone → messages and IQ requests to it get ``service-unavailable``.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Callable
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from harness import jid_of
from harness.client import Client, delay_of
from harness.components import (
    EXT,
    NS_COMPONENT,
    NS_ECHO,
    SECRET,
    ComponentRefused,
    ExternalComponent,
    add_components,
    component_port,
)
from harness.raw import NS_STREAM, RawStream, element_text
from harness.scenarios import logged_in, online_with_roster, wait_subscription
from harness.server import JackdawServer

ALICE, BOB = jid_of("alice"), jid_of("bob")
ECHO = f"echo@{EXT}"


# --- fixtures ------------------------------------------------------------------


@pytest.fixture
def make_component_server(make_server: Callable[..., JackdawServer]) -> Callable[..., JackdawServer]:
    """``make_component_server(components={...})``: a server with the component
    listener on an ephemeral port and ``ext.localhost`` (secret ``s3cret``)
    unless ``components`` says otherwise."""

    def make(
        components: dict[str, dict[str, Any]] | None = None,
        options: dict[str, Any] | None = None,
        users: dict[str, str] | None = None,
    ) -> JackdawServer:
        settings = {"component_ports": [0]}
        settings.update(options or {})
        server = make_server(options=settings, users=users, start=False)
        add_components(server, {EXT: {"component_secret": SECRET}} if components is None else components)
        server.start()
        return server

    return make


@pytest.fixture
def server(make_component_server: Callable[..., JackdawServer]) -> JackdawServer:  # noqa: F811 - shadows conftest's
    return make_component_server()


@pytest.fixture
def bot_url_placeholder() -> str:
    """A component_post_url nobody listens on (only the config matters here)."""
    return "http://127.0.0.1:9/bot"


# --- helpers -------------------------------------------------------------------


def component_stream(server: JackdawServer, domain: str = EXT) -> tuple[RawStream, dict[str, str]]:
    """A raw connection to the component port with our header sent (as slixmpp
    sends it: no version); returns the stream and the server's header."""
    stream = RawStream.connect(component_port(server))
    stream.send(f"<stream:stream xmlns='{NS_COMPONENT}' xmlns:stream='{NS_STREAM}' to='{domain}'>")
    return stream, stream.read_stream_header()


def handshake_value(stream_id: str, secret: str) -> str:
    return hashlib.sha1((stream_id + secret).encode()).hexdigest()


def raw_component(server: JackdawServer, domain: str = EXT, secret: str = SECRET) -> RawStream:
    """A raw component connection past a successful handshake."""
    stream, header = component_stream(server, domain)
    stream.send(f"<handshake>{handshake_value(header.get('id', ''), secret)}</handshake>")
    reply = stream.read_element()
    assert reply.tag == f"{{{NS_COMPONENT}}}handshake", f"handshake refused\n{stream.dump()}"
    return stream


def echo_query(client: Client, to: str, text: str) -> Any:
    iq = client.xmpp.Iq()
    iq["type"] = "get"
    iq["to"] = to
    ET.SubElement(iq.xml, f"{{{NS_ECHO}}}query", {"text": text})
    return iq


def shown(stanza: Any) -> str:
    return str(stanza).replace("\n", "")


def error_condition(stanza: Any) -> str:
    return stanza["error"]["condition"]


async def message_error(client: Client, sender: str, **kwargs: Any) -> Any:
    """The next message of type error from ``sender`` (bare or full)."""
    return await client.next(
        "message",
        lambda m: m["type"] == "error" and (m["from"].bare == sender or str(m["from"]) == sender),
        what=f"(error from {sender})",
        **kwargs,
    )


# --- the handshake ---------------------------------------------------------------


def test_handshake_with_right_secret(server):
    """The server opens its stream from ext.localhost with an id; the hex
    SHA-1 of id + secret is answered with an empty <handshake/>."""
    stream, header = component_stream(server)
    with stream:
        assert header.get("id"), f"no stream id in the server's header {header}\n{stream.dump()}"
        assert header.get("from") == EXT, f"the server's header should come from {EXT}: {header}\n{stream.dump()}"
        stream.send(f"<handshake>{handshake_value(header['id'], SECRET)}</handshake>")
        reply = stream.read_element()
        assert reply.tag == f"{{{NS_COMPONENT}}}handshake", f"expected <handshake/>, got {element_text(reply)}"
        assert not (reply.text or "").strip() and len(reply) == 0, element_text(reply)


async def test_slixmpp_component_connects(server):
    """slixmpp's ComponentXMPP with the right secret completes its handshake."""
    component = ExternalComponent(server)
    await component.connect()
    try:
        assert component.connected and component.stream_errors == []
    finally:
        await component.close()


async def test_wrong_secret_refused(server):
    """A wrong secret ends in a <not-authorized/> stream error, for slixmpp and for a raw socket."""
    component = ExternalComponent(server, secret="not-the-secret")
    with pytest.raises(ComponentRefused) as refused:
        await component.connect()
    assert refused.value.condition == "not-authorized", str(refused.value)

    def raw() -> None:
        stream, header = component_stream(server)
        with stream:
            stream.send(f"<handshake>{handshake_value(header.get('id', ''), 'wrong')}</handshake>")
            error = stream.expect_stream_error()
            assert error.condition == "not-authorized", stream.dump()
            assert error.closed_afterwards, "the stream stayed open after the refused handshake\n" + stream.dump()

    await asyncio.to_thread(raw)
    # ... and the right secret still works afterwards.
    async with ExternalComponent(server):
        pass


def test_unknown_domain_refused(server):
    """A header for a domain that is no configured component: <host-unknown/>."""
    stream, _header = component_stream(server, "nope.localhost")
    with stream:
        error = stream.expect_stream_error()
        assert error.condition == "host-unknown", stream.dump()


@pytest.mark.parametrize("domain", ["localhost", "bot.localhost"])
def test_no_external_connection_for_other_domains(make_component_server, bot_url_placeholder, domain):
    """Neither the user host nor an internal (component_http) component can be
    taken over over XEP-0114, even with an empty secret: a stream error
    (host-unknown or not-authorized), never <handshake/>."""
    server = make_component_server(
        {
            EXT: {"component_secret": SECRET},
            "bot.localhost": {"module": "component_http", "component_post_url": bot_url_placeholder},
        }
    )
    stream, header = component_stream(server, domain)
    with stream:
        if "id" in header:
            stream.send(f"<handshake>{handshake_value(header['id'], '')}</handshake>")
        while True:
            element = stream.read_element()
            assert element.tag != f"{{{NS_COMPONENT}}}handshake", f"{domain} accepted as a component\n{stream.dump()}"
            if element.tag == f"{{{NS_STREAM}}}error":
                break
        conditions = [child.tag.rsplit("}", 1)[-1] for child in element]
        assert {"host-unknown", "not-authorized"} & set(conditions), stream.dump()


# --- routing -----------------------------------------------------------------------


async def test_message_round_trip(server):
    """alice → echo@ext.localhost → the component answers → alice, with the
    addresses a component sees and sets."""
    async with ExternalComponent(server) as component, logged_in(server, "alice") as (alice,):
        message = alice.xmpp.make_message(mto=ECHO, mbody="hello component", mtype="chat")
        message["id"] = "round-1"
        message.send()

        received = await component.next_message("hello component")
        assert str(received["from"]) == str(alice.jid), shown(received)
        assert str(received["to"]) == ECHO
        assert received["id"] == "round-1" and received["type"] == "chat"

        component.xmpp.send_message(mto=received["from"], mfrom=ECHO, mbody="echo: hello component", mtype="chat")
        reply = await alice.next_message(ECHO, "echo: hello component")
        assert str(reply["from"]) == ECHO and str(reply["to"]) == str(alice.jid)


async def test_every_address_of_the_domain_reaches_the_component(server):
    """The bare domain, a user at it and a full JID at it all reach the component, as addressed."""
    async with ExternalComponent(server) as component, logged_in(server, "alice") as (alice,):
        for to in (EXT, f"someone@{EXT}", f"room@{EXT}/nick"):
            alice.send_message(to, f"to {to}")
            received = await component.next_message(f"to {to}")
            assert str(received["to"]) == to, shown(received)
            assert str(received["from"]) == str(alice.jid)


async def test_iq_round_trip(server):
    """alice sends an IQ get to the component, which answers; alice gets the result from it."""
    async with ExternalComponent(server) as component, logged_in(server, "alice") as (alice,):
        for to in (EXT, ECHO):
            result = await alice.iq(echo_query(alice, to, f"ping {to}"))
            assert result["type"] == "result", shown(result)
            assert str(result["from"]) == to
            query = result.xml.find(f"{{{NS_ECHO}}}query")
            assert query is not None and query.get("text") == f"ping {to}", shown(result)
        assert component.connected


async def test_component_queries_a_client(server):
    """The component sends an IQ get to alice's full JID; her client answers through the server."""
    async with ExternalComponent(server) as component, logged_in(server, "alice") as (alice,):
        await alice.go_online()
        iq = component.xmpp.Iq()
        iq["type"] = "get"
        iq["to"] = str(alice.jid)
        iq["from"] = EXT
        ET.SubElement(iq.xml, "{jabber:iq:version}query")
        result = await iq.send(timeout=10)
        assert result["type"] == "result" and str(result["from"]) == str(alice.jid), shown(result)
        name = result.xml.find("{jabber:iq:version}query/{jabber:iq:version}name")
        assert name is not None and name.text == "Slixmpp", shown(result)


async def test_component_message_to_offline_user_is_stored(server):
    """A component's message is routed like any other: to an offline user it is
    stored and delivered (with a delay) when she logs in."""
    async with ExternalComponent(server) as component:
        component.xmpp.send_message(mto=BOB, mfrom=f"news@{EXT}", mbody="while you were out", mtype="chat")
        # The component round trip below is the marker: the message above was routed first.
        async with logged_in(server, "alice") as (alice,):
            await alice.iq(echo_query(alice, EXT, "marker"))
        async with logged_in(server, "bob") as (bob,):
            bob.send_presence()
            stored = await bob.next_message(f"news@{EXT}", "while you were out")
            assert delay_of(stored) is not None, shown(stored)


async def test_presence_subscription_with_a_component(server):
    """Presence is routed like any stanza: alice's subscription request
    reaches the component (from her bare JID, her roster showing it
    pending); its subscribed and available presence reach her and her
    roster says "to"."""
    async with ExternalComponent(server) as component, logged_in(server, "alice") as (alice,):
        await online_with_roster(alice)
        alice.send_presence(pto=ECHO, ptype="subscribe")
        request = await component.next("presence", lambda p: p["type"] == "subscribe")
        assert str(request["from"]) == ALICE and str(request["to"]) == ECHO, shown(request)
        pending = await alice.next_roster_push(ECHO)
        assert (pending["subscription"], pending["ask"]) == ("none", "subscribe"), pending

        component.xmpp.send_presence(pto=ALICE, pfrom=ECHO, ptype="subscribed")
        component.xmpp.send_presence(pto=ALICE, pfrom=f"{ECHO}/bot", pstatus="at your service")
        await alice.next_presence(ECHO, "subscribed")
        await wait_subscription(alice, ECHO, "to")
        online = await alice.next_presence(f"{ECHO}/bot", "available")
        assert online["status"] == "at your service", shown(online)


async def test_from_outside_the_domain_is_invalid_from(server):
    """A component sending as bob@localhost gets an <invalid-from/> stream
    error, and alice never sees the forged message."""
    async with logged_in(server, "alice") as (alice,):
        await alice.go_online()
        component = await ExternalComponent(server).connect()
        try:
            component.xmpp.send_message(mto=str(alice.jid), mfrom=BOB, mbody="forged", mtype="chat")
            await component.wait_disconnected()
            assert component.stream_errors == ["invalid-from"], component.stream_errors
        finally:
            await component.close()

        # A message from bob himself, as the marker.
        async with logged_in(server, "bob") as (bob,):
            bob.send_message(str(alice.jid), "the real bob")
            await alice.next_message(BOB, "the real bob")
        assert alice.received("message", lambda m: m["body"] == "forged") == []


async def test_second_connection_refused_while_first_works(server):
    """A second connection for ext.localhost (right secret) gets <conflict/>;
    the first keeps routing both ways."""
    async with ExternalComponent(server, name="first") as first, logged_in(server, "alice") as (alice,):
        second = ExternalComponent(server, name="second")
        with pytest.raises(ComponentRefused) as refused:
            await second.connect()
        assert refused.value.condition == "conflict", str(refused.value)

        assert first.connected, "the first component connection was dropped"
        alice.send_message(ECHO, "still there?")
        received = await first.next_message("still there?")
        first.xmpp.send_message(mto=received["from"], mfrom=ECHO, mbody="yes", mtype="chat")
        await alice.next_message(ECHO, "yes")
        result = await alice.iq(echo_query(alice, EXT, "after conflict"))
        assert result["type"] == "result"
        assert second.received("message") == []


@pytest.mark.parametrize("how", ["stream closed", "connection dropped"])
async def test_disconnected_component_gives_service_unavailable(server, how):
    """After the component leaves (closing its stream, or just its TCP
    connection, as a crashed process does), alice's message and IQ to it
    are answered with service-unavailable; when it connects again, it gets
    stanzas again."""
    async with logged_in(server, "alice") as (alice,):
        if how == "stream closed":
            component = await ExternalComponent(server).connect()
            alice.send_message(ECHO, "before")
            await component.next_message("before")
            await component.close()
        else:
            # A raw connection, so that we can tell when the server has seen
            # the end of it: we send FIN (no </stream:stream>) and wait for
            # the server to close its side.
            stream = await asyncio.to_thread(raw_component, server)
            alice.send_message(ECHO, "before")
            received = await asyncio.to_thread(stream.read_element)
            assert received.tag == f"{{{NS_COMPONENT}}}message", stream.dump()
            stream.sock.shutdown(socket.SHUT_WR)
            closed = await asyncio.to_thread(stream.wait_closed)
            stream.close()
            assert closed, "the server kept the connection of a component that hung up\n" + stream.dump()

        message = alice.xmpp.make_message(mto=ECHO, mbody="anyone?", mtype="chat")
        message["id"] = "gone-1"
        message.send()
        error = await message_error(alice, ECHO)
        assert error_condition(error) == "service-unavailable", shown(error)
        assert error["id"] == "gone-1", shown(error)

        with pytest.raises(IqError) as refused:
            await alice.iq(echo_query(alice, EXT, "anyone?"))
        assert error_condition(refused.value.iq) == "service-unavailable", shown(refused.value.iq)

        async with ExternalComponent(server, name="reconnected") as again:
            alice.send_message(ECHO, "after")
            await again.next_message("after")
            result = await alice.iq(echo_query(alice, EXT, "after"))
            assert result["type"] == "result"

