"""XMPP over WebSocket (RFC 7395) at ``/xmpp-websocket`` on the HTTP port.

Raw exchanges with the ``websockets`` package (``harness/websocket.py``):
the ``xmpp`` subprotocol, ``<open/>``/``<close/>`` framing, SASL PLAIN and
SCRAM-SHA-256, the restart, binding, messages both ways with bob on TCP
(slixmpp), ping; then what goes wrong: the upgrade without
``consider_websocket_secure``, a non-XMPP subprotocol, malformed XML in a
frame, oversized stanzas and frames, an unknown host, silence, an abrupt
loss and a shutdown. TCP users keep being served throughout.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.exceptions import InvalidStatus

from harness import DOMAIN, PASSWORDS
from harness.client import Client
from harness.raw import NS_BIND, NS_SASL, NS_STREAM, NS_TLS, mechanisms_of
from harness.scenarios import assert_login_works, assert_pong, logged_in, online_with_roster, subscribe_mutually
from harness.websocket import NS_FRAMING, WsStream, logged_in_ws, open_frame

#: consider_websocket_secure: the HTTP port counts as encrypted (a TLS proxy
#: in front), which the WebSocket needs while c2s_require_encryption is on.
WS_OPTIONS = {"consider_websocket_secure": True}
SIZE_LIMIT = 10_000

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


@pytest.fixture
def ws_server(make_server):
    """A running server whose WebSocket is open (alice, bob and carol)."""
    return make_server(options=WS_OPTIONS)


def chat(to: str, body: str, msg_id: str = "m1") -> str:
    return f"<message xmlns='jabber:client' to='{to}' type='chat' id='{msg_id}'><body>{body}</body></message>"


def message_of_size(size: int, to: str = BOB) -> str:
    head = f"<message xmlns='jabber:client' to='{to}' type='chat'><body>"
    tail = "</body></message>"
    return head + "x" * (size - len(head) - len(tail)) + tail


async def assert_tcp_user_served(bob: Client) -> None:
    """bob, logged in over TCP before the trouble, still gets answers, and a new TCP login works."""
    await assert_pong(bob)
    await assert_login_works(bob.server, "carol")


# --- the whole exchange ------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
async def test_login_message_both_ways_ping_and_close(ws_server, mechanism):
    """alice over WebSocket: the xmpp subprotocol, <open/> answered with an
    <open/> from the host with an id, <stream:features> with SASL (no
    STARTTLS, no -PLUS: there is no TLS channel to bind to), login, a restart
    with a new <open/> and a new id, bind, a chat with bob (slixmpp over
    TCP) both ways, ping, and <close/> answered with <close/>."""
    async with logged_in(ws_server, "bob") as (bob,):
        await bob.go_online()
        stream = await WsStream.connect(ws_server)
        async with stream:
            assert stream.subprotocol == "xmpp", "RFC 7395 §3.1: the server did not select 'xmpp'\n" + stream.dump()

            await stream.send(open_frame())
            first_open = await stream.read_element()
            assert first_open.tag == f"{{{NS_FRAMING}}}open", stream.dump()
            assert first_open.get("from") == DOMAIN, stream.dump()
            assert first_open.get("version") == "1.0", stream.dump()
            assert first_open.get("id"), "the server's <open/> has no stream id\n" + stream.dump()

            features_frame = await stream.read_frame()
            assert features_frame.startswith("<stream:features"), (
                "features should be framed as <stream:features> (RFC 7395 §3.3.3 example)\n" + stream.dump()
            )
            features = stream.parse(features_frame)
            assert features.tag == f"{{{NS_STREAM}}}features", stream.dump()
            mechanisms = mechanisms_of(features)
            assert {"PLAIN", "SCRAM-SHA-256"} <= set(mechanisms), f"offered {mechanisms}\n{stream.dump()}"
            assert not [m for m in mechanisms if m.endswith("-PLUS")], (
                f"channel-binding mechanisms offered without a TLS channel: {mechanisms}\n{stream.dump()}"
            )
            assert features.find(f"{{{NS_TLS}}}starttls") is None, "STARTTLS offered over WebSocket\n" + stream.dump()

            await stream.authenticate("alice", PASSWORDS["alice"], mechanism)

            await stream.send(open_frame())
            second_open = await stream.read_element()
            assert second_open.tag == f"{{{NS_FRAMING}}}open" and second_open.get("from") == DOMAIN, stream.dump()
            assert second_open.get("id") and second_open.get("id") != first_open.get("id"), (
                "the restarted stream needs a new id\n" + stream.dump()
            )
            features = await stream.read_features()
            assert features.find(f"{{{NS_BIND}}}bind") is not None, stream.dump()
            assert features.find(f"{{{NS_SASL}}}mechanisms") is None, "SASL offered again after login\n" + stream.dump()
            await stream.send(
                f"<iq xmlns='jabber:client' type='set' id='bind1'>"
                f"<bind xmlns='{NS_BIND}'><resource>web</resource></bind></iq>"
            )
            bound = await stream.read_element()
            jid = bound.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid")
            assert bound.tag == "{jabber:client}iq" and bound.get("type") == "result", stream.dump()
            assert jid is not None and jid.text == f"{ALICE}/web", stream.dump()

            # alice → bob
            await stream.send(chat(BOB, "hello from the browser"))
            received = await bob.next_message(ALICE, "hello from the browser")
            assert str(received["from"]) == f"{ALICE}/web"

            # bob → alice: every frame is one element in jabber:client
            bob.send_message(f"{ALICE}/web", "hello from TCP")
            message = await stream.read_until("{jabber:client}message", what="(bob's chat)")
            assert message.get("from") == str(bob.jid), stream.dump()
            assert message.get("to") == f"{ALICE}/web", stream.dump()
            assert message.findtext("{jabber:client}body") == "hello from TCP", stream.dump()

            pong = await stream.ping("ping1")
            assert pong.get("type") == "result" and pong.get("from") == DOMAIN, stream.dump()

            await stream.close_stream()


async def test_wrong_password_over_websocket(ws_server):
    """A wrong password fails as over TCP (not-authorized) and the stream stays usable for a retry."""
    async with await WsStream.connect(ws_server) as stream:
        await stream.open()
        await stream.read_features()
        outcome = await stream.auth_plain("alice", "not-the-password")
        assert not outcome.success and outcome.condition == "not-authorized", stream.dump()
        await stream.authenticate("alice", PASSWORDS["alice"], "SCRAM-SHA-256")
        assert await stream.bind("retry") == f"{ALICE}/retry"
        await stream.close_stream()


# --- the upgrade -----------------------------------------------------------------


async def test_upgrade_refused_without_consider_websocket_secure(server):
    """With c2s_require_encryption on (the default) and no
    consider_websocket_secure, the plain HTTP port refuses the upgrade
    with 403, and TCP clients are not affected."""
    with pytest.raises(InvalidStatus) as refused:
        await WsStream.connect(server)
    assert refused.value.response.status_code == 403, refused.value.response
    await assert_login_works(server, "carol")


async def test_non_xmpp_subprotocol_refused(ws_server):
    """A WebSocket that asks only for another subprotocol is not an XMPP
    stream: the upgrade is refused (Prosody answers 501), while TCP clients
    go on."""
    try:
        stream = await WsStream.connect(ws_server, subprotocols=("chat",))
    except InvalidStatus as refused:
        assert refused.response.status_code >= 400, refused.response
    else:
        selected = stream.subprotocol
        await stream.aclose()
        raise AssertionError(f"upgrade for subprotocol 'chat' accepted (selected: {selected!r})")
    await assert_login_works(ws_server, "carol")


# --- bad input -------------------------------------------------------------------

MALFORMED_FRAMES = {
    "mismatched-end-tag": f"<message xmlns='jabber:client' to='{BOB}'><body>hi</message>",
    "duplicate-attribute": f"<message xmlns='jabber:client' to='{BOB}' to='carol@localhost'/>",
    # RFC 7395 §3.3.3: a message is a complete element; this one never ends.
    "unclosed-element": f"<message xmlns='jabber:client' to='{BOB}'><body>hi",
}


@pytest.mark.parametrize("frame", MALFORMED_FRAMES.values(), ids=MALFORMED_FRAMES.keys())
@pytest.mark.parametrize("phase", ["before-auth", "authenticated"])
async def test_malformed_xml_in_a_frame(ws_server, phase, frame):
    """Malformed XML in a frame: <stream:error> with not-well-formed, then
    <close/>, then the WebSocket is closed; bob on TCP goes on."""
    async with logged_in(ws_server, "bob") as (bob,):
        if phase == "before-auth":
            stream = await WsStream.connect(ws_server)
            await stream.open()
            await stream.read_features()
        else:
            stream = await logged_in_ws(ws_server, "alice", PASSWORDS["alice"])
        async with stream:
            await stream.send(frame)
            error = await stream.expect_stream_error(timeout=5)
            assert error.condition == "not-well-formed", stream.dump()
            assert error.close_followed, "RFC 7395 §3.6.1: no <close/> after the stream error\n" + stream.dump()
            assert error.socket_closed, "the WebSocket was left open after the error\n" + stream.dump()
        assert bob.received("message") == [], "a malformed stanza was delivered"
        await assert_tcp_user_served(bob)


async def test_stanza_over_size_limit_refused(make_server):
    """c2s_stanza_size_limit = 10000 holds over WebSocket as over TCP: a
    9 kB message reaches bob, a 10.5 kB one (a frame the WebSocket layer
    still takes) ends alice's stream with policy-violation and <close/>;
    bob on TCP is not affected and never sees the big message."""
    server = make_server(options=WS_OPTIONS | {"c2s_stanza_size_limit": SIZE_LIMIT})
    async with logged_in(server, "bob") as (bob,):
        await bob.go_online()
        async with await logged_in_ws(server, "alice", PASSWORDS["alice"]) as stream:
            await stream.send(message_of_size(9_000))
            received = await bob.next_message(ALICE)
            assert len(received["body"]) > 8_000

            await stream.send(message_of_size(10_500))
            error = await stream.expect_stream_error(timeout=5)
            assert error.condition == "policy-violation", stream.dump()
            assert error.close_followed and error.socket_closed, stream.dump()
        await assert_tcp_user_served(bob)
        assert bob.received("message") == [], "the oversized message was delivered"


@pytest.mark.parametrize("phase", ["before-auth", "authenticated"])
async def test_oversized_frame_refused(make_server, phase):
    """A 300 kB frame (more than the stanza limit allows in any phase) is
    refused: policy-violation, or the WebSocket closed; bob on TCP goes on."""
    server = make_server(options=WS_OPTIONS)
    async with logged_in(server, "bob") as (bob,):
        if phase == "before-auth":
            stream = await WsStream.connect(server)
            await stream.open()
            await stream.read_features()
        else:
            stream = await logged_in_ws(server, "alice", PASSWORDS["alice"])
        async with stream:
            await stream.send(message_of_size(300_000))
            closed = await stream.wait_closed(timeout=5)
            assert closed, "the WebSocket stayed open after a 300 kB frame\n" + stream.dump()
            for frame in stream.frames:
                element = stream.parse(frame)
                if element.tag == f"{{{NS_STREAM}}}error":
                    assert element.find("{urn:ietf:params:xml:ns:xmpp-streams}policy-violation") is not None, (
                        stream.dump()
                    )
        await assert_tcp_user_served(bob)
        assert bob.received("message") == [], "the oversized message was delivered"


async def test_unknown_host(ws_server):
    """<open to='nosuch.example'/> gets host-unknown, <close/>, and the WebSocket closed."""
    async with await WsStream.connect(ws_server) as stream:
        await stream.send(open_frame(to="nosuch.example"))
        error = await stream.expect_stream_error(timeout=5)
        assert error.condition == "host-unknown", stream.dump()
        assert error.close_followed and error.socket_closed, stream.dump()
    await assert_login_works(ws_server, "carol")


async def test_silent_websocket_closed_after_c2s_timeout(ws_server):
    """A WebSocket that never sends <open/> is closed once c2s_timeout (3 s
    in tests) has passed, not before; anything said first is connection-timeout."""
    timeout = ws_server.options["c2s_timeout"]
    started = time.monotonic()
    async with await WsStream.connect(ws_server) as stream:
        assert await stream.wait_closed(timeout + 4), f"still open after {timeout + 4} s\n{stream.dump()}"
        elapsed = time.monotonic() - started
        assert elapsed >= timeout - 0.5, f"closed after {elapsed:.1f} s, before c2s_timeout\n{stream.dump()}"
        for frame in stream.frames:
            element = stream.parse(frame)
            if element.tag == f"{{{NS_STREAM}}}error":
                assert element.find("{urn:ietf:params:xml:ns:xmpp-streams}connection-timeout") is not None, (
                    stream.dump()
                )


async def test_unauthenticated_websocket_times_out(ws_server):
    """<open/> but no login: connection-timeout after c2s_timeout, <close/>, closed."""
    timeout = ws_server.options["c2s_timeout"]
    started = time.monotonic()
    async with await WsStream.connect(ws_server) as stream:
        await stream.open()
        await stream.read_features()
        error = await stream.expect_stream_error(timeout=timeout + 4)
        elapsed = time.monotonic() - started
        assert error.condition == "connection-timeout", stream.dump()
        assert elapsed >= timeout - 0.5, f"timed out after {elapsed:.1f} s, before c2s_timeout"
        assert error.close_followed and error.socket_closed, stream.dump()


async def test_abrupt_websocket_loss_sends_unavailable(ws_server):
    """alice (subscribed both ways with bob) is online over WebSocket; the
    TCP connection under it is dropped with no <close/> and no close frame.
    bob gets alice's unavailable presence."""
    async with logged_in(ws_server, "alice", "bob") as (alice_tcp, bob):
        await online_with_roster(alice_tcp, bob)
        await subscribe_mutually(alice_tcp, bob)
        tcp_jid = str(alice_tcp.jid)
        await alice_tcp.close()
        await bob.next_presence(tcp_jid, "unavailable")

        stream = await logged_in_ws(ws_server, "alice", PASSWORDS["alice"], resource="web")
        try:
            await stream.send("<presence xmlns='jabber:client'/>")
            await bob.next_presence(f"{ALICE}/web", "available")
            # alice's own presence comes back, and bob's in answer to the probe.
            await stream.read_until("{jabber:client}presence", what="(presence after going online)")
        finally:
            stream.abort()
        await bob.next_presence(f"{ALICE}/web", "unavailable", timeout=5)
        await assert_pong(bob)


async def test_sigterm_closes_websocket_with_system_shutdown(ws_server):
    """SIGTERM closes a WebSocket stream like a TCP one: system-shutdown,
    <close/>, the WebSocket closed; the server exits 0 (checked at teardown)."""
    async with await logged_in_ws(ws_server, "alice", PASSWORDS["alice"]) as stream:
        ws_server.terminate()
        error = await stream.expect_stream_error(timeout=8)
        assert error.condition == "system-shutdown", stream.dump()
        assert error.close_followed and error.socket_closed, stream.dump()
    await asyncio.to_thread(ws_server.stop)
