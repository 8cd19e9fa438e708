"""Broken and hostile input on raw sockets (RFC 6120 §4.9, §5, §6).

Each test checks what the misbehaving peer sees (the stream error or SASL
failure), and then that the server still serves a normal user: carol logs in
with slixmpp and gets an answer to a ping.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from harness import PASSWORDS
from harness.client import Client
from harness.raw import NS_SASL, NS_TLS, RawStream, mechanisms_of, stream_header
from harness.scenarios import assert_login_works, assert_server_still_serves

NOT_WELL_FORMED = {
    "mismatched-end-tag": b"<message to='bob@localhost'><body>hi</message>",
    "invalid-utf8": b"<message to='bob@localhost'><body>\xff\xfe\xfd</body></message>",
    "lt-in-attribute": b"<message to='bob<@localhost'/>",
    "duplicate-attribute": b"<message to='bob@localhost' to='carol@localhost'/>",
}

ENTITY_DECLARATIONS = {
    # The classic exponential entity expansion: 10^9 "lol"s, 3 GB if expanded.
    "billion-laughs": (
        b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
        + b"".join(
            b' <!ENTITY lol%d "%s">\n' % (level, (b"&lol%d;" % (level - 1) if level > 1 else b"&lol;") * 10)
            for level in range(1, 10)
        )
        + b"]>\n"
        + stream_header()
        + b"<message to='bob@localhost'><body>&lol9;</body></message>"
    ),
    # An external entity would read a local file into a stanza.
    "external-entity": (
        b'<?xml version="1.0"?>\n<!DOCTYPE stream:stream [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        + stream_header()
        + b"<message to='bob@localhost'><body>&xxe;</body></message>"
    ),
}

#: A stream header cut short, as a client on a dying link leaves it.
PARTIAL_HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='localh"
)


def open_plain_stream(server) -> RawStream:
    stream = RawStream.connect(server.c2s_port)
    stream.open()
    stream.read_features()
    return stream


def logged_in_raw(server, user: str = "alice") -> RawStream:
    stream = RawStream.connect(server.direct_tls_port, direct_tls=True)
    stream.login_plain(user, PASSWORDS[user], direct_tls=True)
    return stream


# --- XML ----------------------------------------------------------------------


@pytest.mark.parametrize("payload", NOT_WELL_FORMED.values(), ids=NOT_WELL_FORMED.keys())
@pytest.mark.parametrize("phase", ["before-tls", "authenticated"])
def test_not_well_formed_xml(server, phase, payload):
    """Malformed XML ends the sender's stream with not-well-formed."""
    stream = open_plain_stream(server) if phase == "before-tls" else logged_in_raw(server)
    with stream:
        stream.send(payload)
        error = stream.expect_stream_error()
        assert error.condition == "not-well-formed", stream.dump()
        assert error.closed_afterwards, "the server did not close the stream after the error\n" + stream.dump()
    assert_server_still_serves(server)


@pytest.mark.parametrize("document", ENTITY_DECLARATIONS.values(), ids=ENTITY_DECLARATIONS.keys())
def test_entity_declarations_refused(server, document):
    """A DTD with entity declarations is refused at once (the parser takes no
    DTD): the sender gets not-well-formed (or restricted-xml, RFC 6120 §11.1),
    quickly, and the server's memory does not balloon."""
    memory_before = server.peak_memory_kib()
    started = time.monotonic()
    with RawStream.connect(server.c2s_port) as stream:
        stream.send(document)
        error = stream.expect_stream_error(timeout=10)
        assert error.condition in ("not-well-formed", "restricted-xml"), stream.dump()
        assert "root:" not in "\n".join(stream.transcript), "a file's content came back"
    assert time.monotonic() - started < 5
    grown_mib = (server.peak_memory_kib() - memory_before) / 1024
    assert grown_mib < 64, f"server peak memory grew by {grown_mib:.0f} MiB"
    assert_server_still_serves(server)


# --- size limits ------------------------------------------------------------------

SIZE_LIMIT = 10_000


def message_of_size(size: int, to: str = "bob@localhost") -> bytes:
    head = f"<message to='{to}' type='chat'><body>".encode()
    tail = b"</body></message>"
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_stanza_over_size_limit_after_auth(make_server):
    """With c2s_stanza_size_limit = 10000, an authenticated user's 9 kB stanza
    goes through, but a 12 kB one ends the stream with policy-violation."""
    server = make_server(options={"c2s_stanza_size_limit": SIZE_LIMIT})
    with logged_in_raw(server) as stream:
        stream.send(message_of_size(9_000))
        stream.send("<iq type='get' id='ping1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        reply = stream.read_element()
        assert reply.get("id") == "ping1" and reply.get("type") == "result", stream.dump()

        stream.send(message_of_size(12_000))
        error = stream.expect_stream_error()
        assert error.condition == "policy-violation", stream.dump()
    assert_server_still_serves(server)


def test_stanza_over_size_limit_before_auth(make_server):
    """Before authentication the limit is no larger than the configured one:
    a 10.1 kB element from an encrypted but unauthenticated peer ends its
    stream with policy-violation when c2s_stanza_size_limit = 10000."""
    server = make_server(options={"c2s_stanza_size_limit": SIZE_LIMIT})
    # Over TLS: before TLS any stanza is refused for want of TLS, whatever its size.
    with RawStream.connect(server.direct_tls_port, direct_tls=True) as stream:
        stream.open()
        stream.read_features()
        stream.send(message_of_size(SIZE_LIMIT + 100))
        error = stream.expect_stream_error()
        assert error.condition == "policy-violation", stream.dump()
    assert_server_still_serves(server)


def test_large_stanza_before_auth_refused_with_default_limits(server):
    """With the default limits an unauthenticated (encrypted) peer cannot
    send a 20 kB element: policy-violation, long before any account is
    involved."""
    with RawStream.connect(server.direct_tls_port, direct_tls=True) as stream:
        stream.open()
        stream.read_features()
        stream.send(message_of_size(20_000))
        error = stream.expect_stream_error()
        assert error.condition == "policy-violation", stream.dump()
    assert_server_still_serves(server)


# --- stream header ------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        {"stream_ns": "http://wrong.example/streams"},
        {"content_ns": "urn:example:not-jabber-client"},
    ],
    ids=["stream-namespace", "content-namespace"],
)
def test_wrong_namespace(server, header):
    """A stream header in the wrong namespace gets invalid-namespace."""
    with RawStream.connect(server.c2s_port) as stream:
        stream.send(stream_header(**header))
        error = stream.expect_stream_error()
        assert error.condition == "invalid-namespace", stream.dump()
    assert_server_still_serves(server)


def test_unknown_host(server):
    """A stream to a domain the server does not host gets host-unknown."""
    with RawStream.connect(server.c2s_port) as stream:
        stream.send(stream_header(to="nosuch.example"))
        error = stream.expect_stream_error()
        assert error.condition == "host-unknown", stream.dump()
    assert_server_still_serves(server)


# --- SASL without TLS, and broken SASL ----------------------------------------------


def test_plain_not_offered_before_tls(server):
    """Before TLS the server requires STARTTLS and does not offer PLAIN."""
    with RawStream.connect(server.c2s_port) as stream:
        stream.open()
        features = stream.read_features()
        starttls = features.find(f"{{{NS_TLS}}}starttls")
        assert starttls is not None, stream.dump()
        assert starttls.find(f"{{{NS_TLS}}}required") is not None, stream.dump()
        assert "PLAIN" not in mechanisms_of(features), stream.dump()


def test_plain_attempted_without_tls_refused(server):
    """A client sending PLAIN with the right password in clear text anyway is
    refused (encryption-required or invalid-mechanism), not logged in."""
    with open_plain_stream(server) as stream:
        outcome = stream.auth_plain("alice", PASSWORDS["alice"])
        assert not outcome.success, stream.dump()
        assert outcome.condition in ("encryption-required", "invalid-mechanism"), stream.dump()
    assert_server_still_serves(server)


@pytest.mark.parametrize("step", ["PLAIN-auth", "SCRAM-SHA-256-auth", "SCRAM-SHA-256-response"])
def test_malformed_base64_in_sasl(server, step):
    """SASL data that is not base64 fails with malformed-request (RFC 6120
    §6.5.2 names incorrect-encoding for this, so that is accepted too)."""
    stream = RawStream.connect(server.c2s_port)
    with stream:
        stream.connect_encrypted(direct_tls=False)
        garbage = "!!!not*base64%%%"
        if step == "SCRAM-SHA-256-response":
            stream.send(
                f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>biwsbj1hbGljZSxyPWFiY2RlZmdoaWprbA==</auth>"
            )
            challenge = stream.read_element()
            assert challenge.tag == f"{{{NS_SASL}}}challenge", stream.dump()
            stream.send(f"<response xmlns='{NS_SASL}'>{garbage}</response>")
        else:
            mechanism = step.removesuffix("-auth")
            stream.send(f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{garbage}</auth>")
        outcome = stream.sasl_outcome(stream.read_element())
        assert not outcome.success, stream.dump()
        assert outcome.condition in ("malformed-request", "incorrect-encoding"), stream.dump()
    assert_server_still_serves(server)


def test_stanza_before_auth_not_routed(server):
    """A message sent over TLS before authenticating ends the stream with
    not-authorized and never reaches bob."""

    async def scenario():
        bob = await Client(server, "bob").login()
        try:
            await bob.go_online()
            stream = RawStream.connect(server.c2s_port)
            with stream:
                stream.connect_encrypted(direct_tls=False)
                stream.send("<message to='bob@localhost' type='chat'><body>unauthenticated spam</body></message>")
                error = await asyncio.to_thread(stream.expect_stream_error)
                assert error.condition == "not-authorized", stream.dump()
            marker = Client(server, "carol")
            await marker.login()
            marker.send_message("bob@localhost", "marker")
            await bob.next_message("carol@localhost", "marker")
            await marker.close()
            assert bob.received("message", lambda m: m["body"] == "unauthenticated spam") == []
        finally:
            await bob.close()

    asyncio.run(scenario())


# --- silence and half-open connections ------------------------------------------------


@pytest.mark.parametrize("port", ["c2s", "direct-tls"])
def test_silent_client_disconnected_after_c2s_timeout(server, port):
    """A client that connects and sends nothing is disconnected once
    c2s_timeout (3 s in tests) has passed, not before."""
    timeout = server.options["c2s_timeout"]
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", server.c2s_port if port == "c2s" else server.direct_tls_port))
    stream = RawStream(sock)
    with stream:
        assert stream.wait_closed(timeout=timeout + 10), f"still connected after {timeout + 10} s\n{stream.dump()}"
        elapsed = time.monotonic() - started
        assert elapsed >= timeout - 0.5, f"disconnected after {elapsed:.1f} s, before c2s_timeout"
        errors = [element for element in stream.pending if element.tag.endswith("}error")]
        for error in errors:
            assert error.find("{urn:ietf:params:xml:ns:xmpp-streams}connection-timeout") is not None, stream.dump()
    assert_server_still_serves(server)


def test_unauthenticated_stream_times_out(server):
    """A client that opens a stream but never authenticates gets
    connection-timeout after c2s_timeout, and is disconnected."""
    timeout = server.options["c2s_timeout"]
    started = time.monotonic()
    with open_plain_stream(server) as stream:
        error = stream.expect_stream_error(timeout=timeout + 10)
        elapsed = time.monotonic() - started
        assert error.condition == "connection-timeout", stream.dump()
        assert elapsed >= timeout - 0.5, f"timed out after {elapsed:.1f} s, before c2s_timeout"
        assert stream.wait_closed(timeout=5), "connection left open after the error\n" + stream.dump()
    assert_server_still_serves(server)


HALF_OPEN_CONNECTIONS = 200
LOGIN_DEADLINE = 5.0


def test_half_open_connections_do_not_block_logins(make_server):
    """200 connections that send nothing, half a stream header, or no TLS
    handshake do not stop normal users logging in within a few seconds, over
    STARTTLS and direct TLS."""
    server = make_server(options={"c2s_timeout": 60})  # keep them all open meanwhile
    sockets: list[socket.socket] = []
    try:
        for index in range(HALF_OPEN_CONNECTIONS):
            kind = index % 3
            port = server.direct_tls_port if kind == 2 else server.c2s_port
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if kind == 1:
                sock.sendall(PARTIAL_HEADER)
            sockets.append(sock)

        async def logins():
            started = time.monotonic()
            await asyncio.gather(
                assert_login_works(server, "carol", timeout=LOGIN_DEADLINE),
                direct_tls_login(server, "bob", timeout=LOGIN_DEADLINE),
            )
            return time.monotonic() - started

        elapsed = asyncio.run(logins())
        assert elapsed < LOGIN_DEADLINE
    finally:
        for sock in sockets:
            sock.close()


async def direct_tls_login(server, user: str, timeout: float) -> None:
    client = Client(server, user, direct_tls=True)
    await client.login(timeout)
    await client.close()
