"""Logging in with slixmpp: both TLS transports, every SASL mechanism,
in-band registration, and the refusals a user sees."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import IqError

from harness import DOMAIN
from harness.client import Client, LoginFailed
from harness.raw import NS_REGISTER_FEATURE, NS_STREAM, NS_STREAM_ERRORS, RawStream
from harness.scenarios import assert_login_works, assert_pong

TRANSPORTS = {"starttls": False, "direct_tls": True}
MECHANISMS = ["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"]


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_login_with_each_mechanism(server, transport, mechanism):
    """alice logs in with the mechanism over the transport, is bound as
    alice@localhost/desk, and the session works (the server answers a ping)."""
    client = Client(server, "alice", resource="desk", direct_tls=TRANSPORTS[transport], mechanism=mechanism)
    try:
        await client.login()
    except LoginFailed:
        if client.channel_binding_problem:
            pytest.skip(f"this client cannot compute tls-exporter: {client.channel_binding_problem}")
        raise
    try:
        assert client.used_mechanism == mechanism
        if mechanism.endswith("-PLUS"):
            # The binding really was used, not silently downgraded.
            assert client.gs2_header is not None and client.gs2_header.startswith(b"p=tls-exporter,")
        assert client.jid.bare == f"alice@{DOMAIN}"
        assert client.jid.resource == "desk"
        await assert_pong(client)
    finally:
        await client.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_certificate_verifies_for_localhost(server, transport):
    """A client that trusts the server's generated certificate (and checks the
    name "localhost") connects and logs in: the certificate is valid for the host."""
    assert server.cert_path.is_file(), f"no certificate at {server.cert_path}"
    client = Client(server, "alice", direct_tls=TRANSPORTS[transport], cafile=server.cert_path)
    await client.login()
    await client.close()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
async def test_wrong_password_refused(server, mechanism):
    """alice typing the wrong password is refused with not-authorized."""
    client = Client(server, "alice", password="not-her-password", mechanism=mechanism)
    with pytest.raises(LoginFailed) as refused:
        await client.login()
    assert client.sasl_failures == ["not-authorized"], refused.value


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
async def test_unknown_user_refused_like_wrong_password(server, mechanism):
    """Someone logging in as a user that does not exist sees the same
    not-authorized as for a wrong password (no account probing)."""
    client = Client(server, "mallory", password="whatever", mechanism=mechanism)
    with pytest.raises(LoginFailed):
        await client.login()
    assert client.sasl_failures == ["not-authorized"]


async def test_two_resources_of_one_user_both_log_in(server):
    """alice on her phone and on her desk at once: two sessions, two full JIDs."""
    phone = await Client(server, "alice", resource="phone").login()
    desk = await Client(server, "alice", resource="desk").login()
    try:
        assert {str(phone.jid), str(desk.jid)} == {"alice@localhost/phone", "alice@localhost/desk"}
        await assert_pong(phone)
        await assert_pong(desk)
    finally:
        await asyncio.gather(phone.close(), desk.close())


async def test_in_band_registration_then_login(server):
    """dave registers himself (XEP-0077) over TLS, is logged in by his client
    right after, and can log in again later with the same password."""
    password = "dave-Secret-4"
    client = Client(server, "dave", password=password)
    outcome: dict[str, object] = {}

    async def fill_in_form(form):
        query = form["register"]
        outcome["fields"] = {child.tag.rsplit("}", 1)[-1] for child in query.xml}
        iq = client.xmpp.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = "dave"
        iq["register"]["password"] = password
        try:
            outcome["reply"] = await iq.send(timeout=10)
        except IqError as error:
            outcome["reply"] = error.iq

    client.xmpp.add_event_handler("register", fill_in_form)
    try:
        await client.login()
    except LoginFailed:
        advertised = [
            f for f in client.features if f.xml.find("{http://jabber.org/features/iq-register}register") is not None
        ]
        assert advertised, "the server did not advertise in-band registration in its stream features"
        raise
    try:
        assert {"username", "password"} <= outcome["fields"], f"registration form lacks fields: {outcome}"
        assert outcome["reply"]["type"] == "result", f"registration refused: {outcome['reply']}"
        assert client.jid.bare == f"dave@{DOMAIN}"
    finally:
        await client.close()

    again = await Client(server, "dave", password=password).login()
    await again.close()


async def test_registration_cannot_take_an_existing_name(server):
    """Registering the name "alice" is refused with conflict, and alice's own
    password keeps working (registration never overwrites an account)."""
    client = Client(server, "alice", password="hijacker-password")
    outcome: dict[str, object] = {}

    async def try_to_register(_form):
        iq = client.xmpp.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = "alice"
        iq["register"]["password"] = "hijacker-password"
        try:
            outcome["reply"] = await iq.send(timeout=10)
        except IqError as error:
            outcome["reply"] = error.iq

    client.xmpp.add_event_handler("register", try_to_register)
    with pytest.raises(LoginFailed):
        await client.login()  # with the hijacker's password, which must not have been set
    reply = outcome.get("reply")
    assert reply is not None, "the registration form was never offered"
    assert reply["type"] == "error" and reply["error"]["condition"] == "conflict", str(reply)
    await assert_login_works(server, "alice")


def test_registration_refused_when_disabled(make_server):
    """With allow_registration = false the server neither advertises in-band
    registration nor accepts a registration sent anyway; no account appears."""
    server = make_server(host_options={"allow_registration": False})
    with RawStream.connect(server.c2s_port) as stream:
        features = stream.connect_encrypted(direct_tls=False)
        assert features.find(f"{{{NS_REGISTER_FEATURE}}}register") is None, stream.dump()
        stream.send(
            "<iq type='set' id='reg1'><query xmlns='jabber:iq:register'>"
            "<username>erin</username><password>erin-Secret-5</password></query></iq>"
        )
        reply = stream.read_element()
        # Either refusal is right: an IQ error (XEP-0077), or, for a server that
        # takes no stanza before authentication, not-authorized (RFC 6120 §4.9.3.12).
        refused_iq = reply.get("id") == "reg1" and reply.get("type") == "error"
        refused_stream = (
            reply.tag == f"{{{NS_STREAM}}}error" and reply.find(f"{{{NS_STREAM_ERRORS}}}not-authorized") is not None
        )
        assert refused_iq or refused_stream, stream.dump()
    assert not any("erin" in line for line in server.list_users())


async def test_login_after_restart(server):
    """Accounts persist: after a restart alice logs in with the same password."""
    server.restart()
    await assert_login_works(server, "alice")


async def test_same_resource_twice_never_shares_a_full_jid(server):
    """alice logs in twice asking for the resource "same": either the old
    session is closed with <conflict/> or the new one gets another resource
    (RFC 6120 §7.7.2.2); two live sessions never share one full JID."""
    first = await Client(server, "alice", resource="same").login()
    second = await Client(server, "alice", resource="same").login()
    try:
        if second.jid.resource == "same":
            await first.wait_disconnected(timeout=10)
            assert first.stream_errors == ["conflict"]
        else:
            await assert_pong(first)
        await assert_pong(second)
    finally:
        await asyncio.gather(first.close(), second.close())


async def test_authenticated_session_not_cut_by_c2s_timeout(server):
    """c2s_timeout limits only unauthenticated streams: alice, logged in and
    idle for longer than it, stays connected and served."""
    client = await Client(server, "alice").login()
    try:
        idle = server.options["c2s_timeout"] + 2
        with pytest.raises(asyncio.TimeoutError):
            await client.wait_disconnected(timeout=idle)
        await assert_pong(client)
    finally:
        await client.close()
