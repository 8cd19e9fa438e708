"""Stream management (XEP-0198, urn:xmpp:sm:3): acknowledgements,
resumption after the connection dies, hibernation and what happens to the
messages a session still holds when it ends.

What a mobile user counts on: a message is never lost because the phone
went through a tunnel. So the checks follow a message, not the counters
alone: slixmpp's own xep_0198 plugin (a real client, with its own ack
handling, ``sm_id`` and ``handled`` counter kept across its reconnection)
loses its TCP connection abruptly with messages in flight, reconnects and
resumes, and every message arrives exactly once, in order, both ways; when
it does not come back in time, what was in flight or sent meanwhile comes
from offline storage at the next login, stamped (XEP-0203) with when it
first arrived, and the archive holds each message once.

Raw sockets (harness/raw.py) check what a library hides: the ``h`` values,
the server's own ``<r/>``, the ``<failed/>`` conditions, an ``h`` larger than
what was sent, resumption by another account, ``<enable/>`` before binding.

Abrupt losses are a TCP reset (raw) or ``transport.abort()`` (slixmpp): no
``</stream:stream>``, no TLS close_notify. Hibernation times are a few
seconds so that time-outs are observable quickly.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import time
import xml.etree.ElementTree as StdET
from collections.abc import Callable
from datetime import datetime, timezone

from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from harness import PASSWORDS
from harness.client import Client, delay_of, describe
from harness.raw import NS_BIND, NS_STANZA_ERRORS, RawStream, element_text, local_name, namespace
from harness.scenarios import assert_pong, logged_in, online_with_roster, subscribe_mutually
from harness.smacks import (
    SM_PLUGINS,
    kill_connection,
    login_with_sm,
    reconnect,
    sm_client,
    sm_of,
    wait_for_log,
)

NS_SM = "urn:xmpp:sm:3"
NS_CSI = "urn:xmpp:csi:0"
NS_MAM = "urn:xmpp:mam:2"
NS_DATA = "jabber:x:data"
NS_CLIENT = "jabber:client"
ALICE = "alice@localhost"
BOB = "bob@localhost"
#: Short enough to wait out, long enough to resume well within it.
HIBERNATION = 2

_ids = itertools.count(1)
#: A raw alice's initial presence, then directed presence to bob, who is
#: not her contact: he sees her come online and, when her session ends,
#: go offline (RFC 6121 §4.6.3).
ONLINE_AND_VISIBLE_TO_BOB = "<presence/><presence to='bob@localhost/desk'/>"


# --- slixmpp with xep_0198 ------------------------------------------------------------------


def record_bodies(client: Client) -> list[str]:
    """Every message body ``client`` receives from now on, in order, duplicates included."""
    bodies: list[str] = []

    def collect(message) -> None:
        if message["type"] != "error" and message["body"]:
            bodies.append(message["body"])

    client.xmpp.register_handler(Callback(f"record bodies {next(_ids)}", MatchXPath("{jabber:client}message"), collect))
    return bodies


async def archived(client: Client, with_jid: str) -> list[tuple[str | None, str | None]]:
    """XEP-0313: (body, archive id) of each message in ``client``'s archive
    of the conversation with ``with_jid``."""
    queryid = f"sm{next(_ids)}"
    iq = client.xmpp.make_iq_set()
    query = ET.SubElement(iq.xml, f"{{{NS_MAM}}}query", {"queryid": queryid})
    form = ET.SubElement(query, f"{{{NS_DATA}}}x", {"type": "submit"})
    for var, value in (("FORM_TYPE", NS_MAM), ("with", with_jid)):
        field = ET.SubElement(form, f"{{{NS_DATA}}}field", {"var": var})
        ET.SubElement(field, f"{{{NS_DATA}}}value").text = value
    await client.iq(iq)
    entries = []
    for message in client.received("message"):
        result = message.xml.find(f"{{{NS_MAM}}}result")
        if result is None or result.get("queryid") != queryid:
            continue
        client.inbox.remove(message)
        body = result.find("{urn:xmpp:forward:0}forwarded/{jabber:client}message/{jabber:client}body")
        entries.append((body.text if body is not None else None, result.get("id")))
    return entries


def stamp_of(message) -> datetime:
    delay = delay_of(message)
    assert delay is not None, f"no <delay xmlns='urn:xmpp:delay'/> in {describe(message)}"
    stamp = datetime.fromisoformat(delay.get("stamp", "").replace("Z", "+00:00"))
    assert stamp.tzinfo is not None, f"XEP-0082 stamps are in UTC with a zone: {describe(message)}"
    return stamp


def unavailable_from(client: Client, jid: str) -> list:
    return client.received("presence", lambda p: str(p["from"]) == jid and p.xml.get("type") == "unavailable")


# --- raw sockets ------------------------------------------------------------------------------


def raw_authenticated(server, user: str) -> tuple[RawStream, StdET.Element]:
    """TLS and SASL PLAIN, then the restarted stream's features: where a client
    either binds or resumes."""
    stream = RawStream.connect(server.direct_tls_port, direct_tls=True)
    stream.connect_encrypted(True)
    outcome = stream.auth_plain(user, PASSWORDS[user])
    assert outcome.success, f"PLAIN login refused ({outcome.condition})\n{stream.dump()}"
    stream.open()
    return stream, stream.read_features()


def raw_bind(stream: RawStream, resource: str) -> str:
    stream.send(f"<iq type='set' id='bind'><bind xmlns='{NS_BIND}'><resource>{resource}</resource></bind></iq>")
    reply = stream.read_element()
    jid = reply.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid")
    assert reply.get("type") == "result" and jid is not None, f"bind failed\n{stream.dump()}"
    return jid.text or ""


def raw_session(server, user: str, resource: str, enable: str | None = "<enable xmlns='urn:xmpp:sm:3' resume='true'/>"):
    """A bound raw session, with ``enable`` sent and its answer returned."""
    stream, _ = raw_authenticated(server, user)
    raw_bind(stream, resource)
    answer = None
    if enable is not None:
        stream.send(enable)
        answer = stream.read_element()
        assert is_sm(answer, "enabled"), f"<enable/> refused\n{stream.dump()}"
    return stream, answer


def is_sm(element: StdET.Element, name: str) -> bool:
    return element.tag == f"{{{NS_SM}}}{name}"


def failed_condition(element: StdET.Element, stream: RawStream) -> str:
    assert is_sm(element, "failed"), f"expected <failed/>, got {element_text(element)}\n{stream.dump()}"
    for child in element:
        if namespace(child.tag) == NS_STANZA_ERRORS:
            return local_name(child.tag)
    raise AssertionError(f"<failed/> without a condition\n{stream.dump()}")


def body_of(element: StdET.Element) -> str | None:
    if element.tag != f"{{{NS_CLIENT}}}message":
        return None
    body = element.find(f"{{{NS_CLIENT}}}body")
    return None if body is None else body.text


def read_bodies(stream: RawStream, count: int, timeout: float = 10.0) -> list[str]:
    """The bodies of the next ``count`` messages with a body; ``<r/>``, IQs
    and presence in between are skipped (and never acknowledged)."""
    bodies: list[str] = []
    deadline = time.monotonic() + timeout
    while len(bodies) < count:
        element = stream.read_element(max(0.1, deadline - time.monotonic()))
        body = body_of(element)
        if body is not None:
            bodies.append(body)
    return bodies


def read_until(
    stream: RawStream, wanted: Callable[[StdET.Element], bool], timeout: float = 10.0
) -> tuple[StdET.Element, list[StdET.Element]]:
    """The next element for which ``wanted`` is true, and those before it."""
    skipped: list[StdET.Element] = []
    deadline = time.monotonic() + timeout
    while True:
        element = stream.read_element(max(0.1, deadline - time.monotonic()))
        if wanted(element):
            return element, skipped
        skipped.append(element)


def reset_connection(stream: RawStream) -> None:
    """A TCP reset: no </stream:stream>, no TLS close_notify."""
    stream.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.sock.close()
    stream.transcript.append("-- connection reset by client")


#: A ping to the server: its result means everything sent before was handled.
PING = "<iq type='get' id='ping' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"


def chat(to: str, body: str) -> str:
    return f"<message to='{to}' type='chat'><body>{body}</body></message>"


# --- acknowledgements -------------------------------------------------------------------------


async def test_slixmpp_acks_are_counted_both_ways(server):
    """slixmpp enables resumable stream management after binding (the server
    advertises <sm/> and grants a resumption id). Seven messages alice sends
    are all acknowledged: the server's <a h/> reaches slixmpp's count of
    sent stanzas and its unacked queue empties. The server asks alice for
    acks (its <r/>) as it sends her bob's messages, slixmpp answers, and
    alice's ``handled`` counts what she got."""
    alice = sm_client(server)
    server_requests: list[float] = []
    alice.xmpp.register_handler(
        Callback("server <r/>", MatchXPath(f"{{{NS_SM}}}r"), lambda _r: server_requests.append(time.monotonic()))
    )
    async with logged_in(server, ("bob", "desk")) as (bob,):
        await bob.go_online()
        await login_with_sm(alice)
        try:
            assert any(f.xml.find(f"{{{NS_SM}}}sm") is not None for f in alice.features), "no <sm/> feature"
            for n in range(7):
                alice.send_message(BOB, f"to bob {n}")
            # slixmpp writes its <r/> at once, ahead of stanzas still in its send queue.
            await asyncio.wait_for(alice.xmpp.waiting_queue.join(), 5)
            sm_of(alice).request_ack()
            for n in range(7):
                await bob.next_message(ALICE, f"to bob {n}")
            deadline = time.monotonic() + 5
            while sm_of(alice).last_ack != sm_of(alice).seq or sm_of(alice).unacked_queue:
                assert time.monotonic() < deadline, (
                    f"server acked {sm_of(alice).last_ack} of {sm_of(alice).seq} stanzas; "
                    f"{len(sm_of(alice).unacked_queue)} still unacked"
                )
                await asyncio.sleep(0.05)
            assert sm_of(alice).seq >= 7

            handled_before = sm_of(alice).handled
            for n in range(3):
                bob.send_message(str(alice.jid), f"to alice {n}")
            for n in range(3):
                await alice.next_message(BOB, f"to alice {n}")
            assert sm_of(alice).handled == handled_before + 3
            assert server_requests, "the server never asked for an acknowledgement (smacks_max_unacked_stanzas = 0)"
        finally:
            await alice.close()


def test_raw_counters_requests_and_too_high_ack(server):
    """The exact protocol: <sm/> and <csi/> offered after SASL; <enable/>
    before binding is refused (unexpected-request) and binding still works;
    <enable resume max='100000'/> gives an id, resume='true' and max='600'
    (smacks_hibernation_time, the smaller); a second <enable/> is refused. Three pings: the server
    sends one <r/> after its first reply and no second while that is
    unanswered; the client's <r/> gets <a h='3'/>. Once acked, the next
    stanza (bob's message) comes with a new <r/>. An <a h/> counting more
    than was ever sent ends the stream with undefined-condition."""
    stream, features = raw_authenticated(server, "alice")
    with stream:
        assert features.find(f"{{{NS_SM}}}sm") is not None, stream.dump()
        assert features.find(f"{{{NS_CSI}}}csi") is not None, stream.dump()
        stream.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        assert failed_condition(stream.read_element(), stream) == "unexpected-request"
        raw_bind(stream, "phone")
        stream.send("<enable xmlns='urn:xmpp:sm:3' resume='true' max='100000'/>")
        enabled = stream.read_element()
        assert is_sm(enabled, "enabled"), stream.dump()
        assert enabled.get("id") and enabled.get("resume") in ("true", "1"), stream.dump()
        assert enabled.get("max") == "600", f"max not limited to smacks_hibernation_time\n{stream.dump()}"
        stream.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        assert failed_condition(stream.read_element(), stream) == "unexpected-request"

        stream.send(
            "".join(f"<iq type='get' id='p{n}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>" for n in range(3))
        )
        got = [stream.read_element() for _ in range(4)]
        results = [el.get("id") for el in got if el.tag == f"{{{NS_CLIENT}}}iq" and el.get("type") == "result"]
        requests = [el for el in got if is_sm(el, "r")]
        assert sorted(results) == ["p0", "p1", "p2"] and len(requests) == 1, stream.dump()
        assert not is_sm(got[0], "r"), f"<r/> before any stanza\n{stream.dump()}"
        stream.send("<r xmlns='urn:xmpp:sm:3'/>")
        answer = stream.read_element()
        assert is_sm(answer, "a") and answer.get("h") == "3", f"expected <a h='3'/>\n{stream.dump()}"

        stream.send("<a xmlns='urn:xmpp:sm:3' h='3'/><r xmlns='urn:xmpp:sm:3'/>")
        answer = stream.read_element()
        assert is_sm(answer, "a") and answer.get("h") == "3", stream.dump()
        bob, _ = raw_session(server, "bob", "desk", enable=None)
        with bob:
            bob.send(chat("alice@localhost/phone", "counted"))
            message = stream.read_element()
            assert body_of(message) == "counted", stream.dump()
            request = stream.read_element()
            assert is_sm(request, "r"), f"no new <r/> after the ack\n{stream.dump()}"

        stream.send("<a xmlns='urn:xmpp:sm:3' h='9'/>")
        error = stream.expect_stream_error()
        assert error.condition == "undefined-condition", stream.dump()
        assert error.closed_afterwards, stream.dump()


async def test_enable_without_resume_and_client_max(server):
    """<enable/> without resume gives a plain <enabled/> (no id, no
    resume) whose counters work; <enable resume max='1'/> gets max='1'
    (shorter than the server's 600 s), and the server honours it: the lost
    session's hibernation ends about a second later."""
    plain, enabled = await asyncio.to_thread(raw_session, server, "alice", "plain", "<enable xmlns='urn:xmpp:sm:3'/>")
    with plain:
        assert enabled.get("id") is None and enabled.get("resume") is None, plain.dump()
        plain.send("<r xmlns='urn:xmpp:sm:3'/>")
        answer = await asyncio.to_thread(plain.read_element)
        assert is_sm(answer, "a") and answer.get("h") == "0", plain.dump()
    short, enabled = await asyncio.to_thread(
        raw_session, server, "alice", "short", "<enable xmlns='urn:xmpp:sm:3' resume='true' max='1'/>"
    )
    assert enabled.get("max") == "1", short.dump()
    reset_connection(short)
    await wait_for_log(server, "session hibernating")
    lost = time.monotonic()
    await wait_for_log(server, "hibernation timed out", timeout=5)
    assert time.monotonic() - lost >= 0.5, "hibernation ended before the negotiated second"


# --- resumption with a real client ------------------------------------------------------------


async def test_slixmpp_resumes_after_abrupt_loss_every_message_exactly_once(make_server):
    """With the server asking for acks only rarely (smacks_max_unacked_stanzas
    = 1000), alice's slixmpp reads bob's first three messages but the server
    has no ack for them; the next three are in flight (alice's socket is not
    read any more) when her TCP connection dies; she has just sent three
    messages herself; bob sends one more while her session hibernates. The
    same ClientXMPP reconnects and resumes: the server's <resumed h/> and
    slixmpp's resend cover alice's three, the client's h covers bob's first
    three, so alice gets 4..7 once each, in order, and bob gets alice's
    three once each. bob never saw alice go offline."""
    server = make_server(options={"smacks_max_unacked_stanzas": 1000, "smacks_hibernation_time": 30})
    alice = sm_client(server)
    alice_got = record_bodies(alice)
    async with logged_in(server, ("bob", "desk")) as (bob,):
        bob_got = record_bodies(bob)
        await login_with_sm(alice)
        try:
            await online_with_roster(alice, bob)
            await subscribe_mutually(alice, bob)
            for n in (1, 2, 3):
                bob.send_message(ALICE, f"bob {n}")
            for n in (1, 2, 3):
                await alice.next_message(BOB, f"bob {n}")

            alice.xmpp.transport.pause_reading()
            for n in (4, 5, 6):
                bob.send_message(ALICE, f"bob {n}")
            await assert_pong(bob)
            for n in (1, 2, 3):
                alice.send_message(BOB, f"alice {n}")
            await asyncio.wait_for(alice.xmpp.waiting_queue.join(), 5)
            await kill_connection(alice)
            await wait_for_log(server, "session hibernating")

            bob.send_message(ALICE, "bob 7")
            await assert_pong(bob)
            assert await reconnect(alice) == "resumed"
            for n in (4, 5, 6, 7):
                await alice.next_message(BOB, f"bob {n}")
            for n in (1, 2, 3):
                await bob.next_message(ALICE, f"alice {n}")

            # Markers both ways: whatever was still to come would be here by now.
            bob.send_message(ALICE, "bob 8")
            await alice.next_message(BOB, "bob 8")
            alice.send_message(BOB, "alice 4")
            await bob.next_message(ALICE, "alice 4")
            assert alice_got == [f"bob {n}" for n in range(1, 9)], alice_got
            assert bob_got == [f"alice {n}" for n in range(1, 5)], bob_got
            assert unavailable_from(bob, str(alice.jid)) == [], "bob saw alice go offline"
        finally:
            await alice.close()


async def test_hibernation_times_out_messages_go_offline_with_delay(make_server):
    """alice's slixmpp acknowledges bob's first message, then her connection
    dies with two more in flight and bob sends a third while she hibernates.
    During smacks_hibernation_time (2 s) bob still sees her online; then he
    gets her unavailable presence. Her client's resumption is refused
    (item-not-found) and it binds anew: at initial presence the three
    messages come from offline storage, in order, each with a XEP-0203
    delay stamped when it first reached the server (before the loss, or
    during hibernation), and the acknowledged one is not delivered again."""
    server = make_server(options={"smacks_hibernation_time": HIBERNATION})
    alice = sm_client(server)
    alice_got = record_bodies(alice)
    async with logged_in(server, ("bob", "desk")) as (bob,):
        await login_with_sm(alice)
        try:
            await online_with_roster(alice, bob)
            await subscribe_mutually(alice, bob)
            alice_jid = str(alice.jid)
            bob.send_message(ALICE, "acked")
            await alice.next_message(BOB, "acked")
            sm_of(alice).send_ack()
            await assert_pong(alice)  # the server has handled the <a/> sent before it

            first_sent = datetime.now(timezone.utc)
            alice.xmpp.transport.pause_reading()
            bob.send_message(ALICE, "in flight 1")
            bob.send_message(ALICE, "in flight 2")
            await assert_pong(bob)
            lost_at = datetime.now(timezone.utc)
            await kill_connection(alice)
            killed = time.monotonic()
            await wait_for_log(server, "session hibernating")
            bob.send_message(ALICE, "during hibernation")
            await assert_pong(bob)
            assert unavailable_from(bob, alice_jid) == [], "alice went offline before her hibernation ended"

            await bob.next_presence(alice_jid, "unavailable", timeout=HIBERNATION + 8)
            waited = time.monotonic() - killed
            assert waited >= HIBERNATION - 0.5, f"unavailable {waited:.1f} s after the loss"

            assert await reconnect(alice) == "bound", "resumed a session that had ended"
            await alice.go_online()
            expected = ["in flight 1", "in flight 2", "during hibernation"]
            delivered = [await alice.next_message(BOB, body) for body in expected]
            stamps = [stamp_of(message) for message in delivered]
            for stamp in stamps[:2]:
                assert first_sent.replace(microsecond=0) <= stamp <= lost_at, (
                    f"{stamp} not in [{first_sent}, {lost_at}]"
                )
            assert lost_at.replace(microsecond=0) <= stamps[2] <= datetime.now(timezone.utc), stamps[2]

            bob.send_message(ALICE, "marker")
            await alice.next_message(BOB, "marker")
            assert alice_got == ["acked", *expected, "marker"], alice_got
        finally:
            await alice.close()


async def test_archive_holds_requeued_messages_once_regression(make_server):
    """The message archive is the user's history, not a delivery log: bob's
    message that alice's lost session never acknowledged is archived once
    when it arrives; when her hibernation (1 s) times out and it goes to
    offline storage instead, it must not be archived again. alice's archive
    of her conversation with bob then holds it once, and the copy delivered
    from offline storage carries the stanza-id of that one archive entry."""
    server = make_server(options={"smacks_hibernation_time": 1})
    stream, _ = raw_session(server, "alice", "phone")
    bob, _ = raw_session(server, "bob", "desk", enable=None)
    with bob:
        bob.send(chat("alice@localhost/phone", "archived once"))
        assert await asyncio.to_thread(read_bodies, stream, 1) == ["archived once"]
        reset_connection(stream)
        await wait_for_log(server, "hibernation timed out")
        bob.send(chat("alice@localhost/phone", "marker") + PING)
        await asyncio.to_thread(read_until, bob, lambda el: el.get("id") == "ping")
    alice = Client(server, "alice", resource="again", plugins=SM_PLUGINS + ("xep_0297", "xep_0313"))
    await alice.login()
    try:
        await alice.go_online()
        offline = await alice.next_message(BOB, "archived once")
        await alice.next_message(BOB, "marker")
        entries = await archived(alice, BOB)
        assert [body for body, _ in entries] == ["archived once", "marker"], f"alice's archive with bob: {entries}"
        ids = [el.get("id") for el in offline.xml.findall("{urn:xmpp:sid:0}stanza-id") if el.get("by") == ALICE]
        assert ids == [entries[0][1]], f"archive id {entries[0][1]}, delivered with {describe(offline)}"
    finally:
        await alice.close()


async def test_clean_close_does_not_hibernate_unacked_go_offline(make_server):
    """A clean </stream:stream> ends the session at once even though it was
    resumable: bob sees alice unavailable long before smacks_hibernation_time
    (30 s), her client's resumption is refused, and the message she read but
    never acknowledged (the server did not ask: smacks_max_unacked_stanzas =
    100) is delivered again from offline storage (at least once), with a
    delay."""
    server = make_server(options={"smacks_hibernation_time": 30, "smacks_max_unacked_stanzas": 100})
    alice = sm_client(server)
    async with logged_in(server, ("bob", "desk")) as (bob,):
        await login_with_sm(alice)
        try:
            await online_with_roster(alice, bob)
            await subscribe_mutually(alice, bob)
            alice_jid = str(alice.jid)
            bob.send_message(ALICE, "read, not acked")
            await alice.next_message(BOB, "read, not acked")
            closed = time.monotonic()
            await alice.close()
            await bob.next_presence(alice_jid, "unavailable", timeout=5)
            assert time.monotonic() - closed < 5
            assert await reconnect(alice) == "bound", "resumed a session closed cleanly"
            await alice.go_online()
            again = await alice.next_message(BOB, "read, not acked")
            stamp_of(again)
        finally:
            await alice.close()


# --- resumption, raw ---------------------------------------------------------------------------


async def test_resume_while_old_connection_still_open(make_server):
    """The server still believes alice's first connection alive (it was not
    closed) when her second one resumes: <resumed h='2' previd/> counts her
    two stanzas (initial presence, directed presence to bob), bob's
    unacknowledged message is sent again on the new connection, the old one
    is closed, bob sees no unavailable presence, and both directions work on
    the resumed session, whose counters go on (<a h='3'/> after one more
    stanza)."""
    server = make_server(options={"smacks_hibernation_time": 30})
    async with logged_in(server, ("bob", "desk")) as (bob,):
        await bob.go_online()
        old, enabled = await asyncio.to_thread(raw_session, server, "alice", "phone")
        new = None
        try:
            previd = enabled.get("id")
            old.send(ONLINE_AND_VISIBLE_TO_BOB)
            await bob.next_presence("alice@localhost/phone", "available")
            bob.send_message("alice@localhost/phone", "first")
            assert await asyncio.to_thread(read_bodies, old, 1) == ["first"]

            new, features = await asyncio.to_thread(raw_authenticated, server, "alice")
            assert features.find(f"{{{NS_SM}}}sm") is not None, new.dump()
            new.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
            resumed = await asyncio.to_thread(new.read_element)
            assert is_sm(resumed, "resumed"), new.dump()
            assert resumed.get("previd") == previd and resumed.get("h") == "2", new.dump()
            assert await asyncio.to_thread(read_bodies, new, 1) == ["first"]
            assert await asyncio.to_thread(old.wait_closed, 5), f"old connection still open\n{old.dump()}"

            bob.send_message("alice@localhost/phone", "second")
            assert await asyncio.to_thread(read_bodies, new, 1) == ["second"]
            new.send(chat(BOB, "from the resumed session") + "<r xmlns='urn:xmpp:sm:3'/>")
            message = await bob.next_message(ALICE, "from the resumed session")
            assert str(message["from"]) == "alice@localhost/phone"
            answer, _ = await asyncio.to_thread(read_until, new, lambda el: is_sm(el, "a"))
            assert answer.get("h") == "3", new.dump()
            assert unavailable_from(bob, "alice@localhost/phone") == []
        finally:
            old.close()
            if new is not None:
                new.close()


def test_resume_refused_for_unknown_id_and_other_account(server):
    """<resume/> with an id nobody has, or with alice's id on bob's account,
    gets <failed><item-not-found/></failed>; either client can then bind a
    resource as usual; alice's session is not disturbed by bob's attempt."""
    alice, enabled = raw_session(server, "alice", "phone")
    with alice:
        previd = enabled.get("id")
        intruder, _ = raw_authenticated(server, "bob")
        with intruder:
            intruder.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
            assert failed_condition(intruder.read_element(), intruder) == "item-not-found"
            assert raw_bind(intruder, "desk") == "bob@localhost/desk"
            intruder.send(chat("alice@localhost/phone", "still yours"))
            assert read_bodies(alice, 1) == ["still yours"]
        stranger, _ = raw_authenticated(server, "alice")
        with stranger:
            stranger.send(f"<resume xmlns='{NS_SM}' previd='0123456789abcdef' h='0'/>")
            assert failed_condition(stranger.read_element(), stranger) == "item-not-found"
            assert raw_bind(stranger, "other") == "alice@localhost/other"


def test_counters_continue_across_two_resumptions(make_server):
    """A phone that drops twice: the session keeps its id and its counters.
    alice's first connection sends initial presence and gets its reflection
    and bob's first message. Resuming with h='2' (both read) gets
    <resumed h='1'/> and nothing again; bob's second message then arrives
    and is lost with the second connection; resuming again with h='2' gets
    just that message, once."""
    server = make_server(options={"smacks_hibernation_time": 30})
    first, enabled = raw_session(server, "alice", "phone")
    previd = enabled.get("id")
    bob, _ = raw_session(server, "bob", "desk", enable=None)
    with bob:
        first.send("<presence/>")
        bob.send(chat("alice@localhost/phone", "one"))
        assert read_bodies(first, 1) == ["one"]
        reset_connection(first)

        second = resume_and_request_ack(server, previd, h=2)
        answer, before = read_until(second, lambda el: is_sm(el, "a"))
        assert answer.get("h") == "1", second.dump()
        assert [el for el in before if not is_sm(el, "r")] == [], f"sent again though acked\n{second.dump()}"
        bob.send(chat("alice@localhost/phone", "two"))
        assert read_bodies(second, 1) == ["two"]
        reset_connection(second)

        third = resume_and_request_ack(server, previd, h=2)
        with third:
            answer, before = read_until(third, lambda el: is_sm(el, "a"))
            assert answer.get("h") == "1", third.dump()
            assert [body_of(el) for el in before if not is_sm(el, "r")] == ["two"], third.dump()


def resume_and_request_ack(server, previd: str, h: int) -> RawStream:
    """A new connection for alice that resumes ``previd`` (expecting
    <resumed h='1'/>) and sends <r/> at once."""
    stream, _ = raw_authenticated(server, "alice")
    stream.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='{h}'/><r xmlns='{NS_SM}'/>")
    resumed = stream.read_element()
    assert is_sm(resumed, "resumed") and resumed.get("h") == "1", stream.dump()
    return stream


def test_resume_with_impossible_h_fails_then_resumes(make_server):
    """alice's lost session sent her one message; a <resume h='5'/> claims
    five: <failed h='0'><undefined-condition/></failed> (h: what the server
    handled of hers). The session survives that: a resumption with h='0'
    works and delivers the message once."""
    server = make_server(options={"smacks_hibernation_time": 30})
    alice, enabled = raw_session(server, "alice", "phone")
    previd = enabled.get("id")
    bob, _ = raw_session(server, "bob", "desk", enable=None)
    with bob:
        bob.send(chat("alice@localhost/phone", "once"))
        assert read_bodies(alice, 1) == ["once"]
        reset_connection(alice)

        liar, _ = raw_authenticated(server, "alice")
        with liar:
            liar.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='5'/>")
            failed = liar.read_element()
            assert failed_condition(failed, liar) == "undefined-condition"
            assert failed.get("h") == "0", liar.dump()

        honest, _ = raw_authenticated(server, "alice")
        with honest:
            honest.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
            assert is_sm(honest.read_element(), "resumed"), honest.dump()
            honest.send("<r xmlns='urn:xmpp:sm:3'/>")
            _, got = read_until(honest, lambda el: is_sm(el, "a"))
            assert [body_of(el) for el in got if body_of(el) is not None] == ["once"], honest.dump()


async def test_ping_timeout_counts_as_lost_and_session_resumes(make_server):
    """A client that goes silent without closing anything (c2s_ping_interval
    and c2s_ping_timeout of 1 s) gets connection-timeout, but its resumable
    session hibernates rather than ends: a message bob sends meanwhile is
    delivered after resumption on a new connection."""
    server = make_server(options={"c2s_ping_interval": 1, "c2s_ping_timeout": 1, "smacks_hibernation_time": 30})
    async with logged_in(server, ("bob", "desk")) as (bob,):
        silent, enabled = await asyncio.to_thread(raw_session, server, "alice", "phone")
        with silent:
            error = await asyncio.to_thread(silent.expect_stream_error, 8)
            assert error.condition == "connection-timeout", silent.dump()
        await wait_for_log(server, "session hibernating")
        bob.send_message("alice@localhost/phone", "while you were silent")
        await assert_pong(bob)
        back, _ = await asyncio.to_thread(raw_authenticated, server, "alice")
        with back:
            back.send(f"<resume xmlns='{NS_SM}' previd='{enabled.get('id')}' h='0'/>")
            assert is_sm(await asyncio.to_thread(back.read_element), "resumed"), back.dump()
            assert await asyncio.to_thread(read_bodies, back, 1) == ["while you were silent"]


# --- when hibernation ends early, or never starts -----------------------------------------------


async def test_hibernation_queue_overflow_ends_session_messages_offline(make_server):
    """smacks_max_queue_size = 3: five messages to alice's hibernating
    session end it long before smacks_hibernation_time (60 s); bob (who had
    her directed presence) sees her unavailable, her resumption is refused,
    and at her next login all five come from offline storage, once each,
    with a delay."""
    server = make_server(options={"smacks_max_queue_size": 3, "smacks_hibernation_time": 60})
    async with logged_in(server, ("bob", "desk")) as (bob,):
        await bob.go_online()
        stream, enabled = await asyncio.to_thread(raw_session, server, "alice", "phone")
        stream.send(ONLINE_AND_VISIBLE_TO_BOB)
        await bob.next_presence("alice@localhost/phone", "available")
        reset_connection(stream)
        await wait_for_log(server, "session hibernating")
        bodies = [f"queued {n}" for n in range(1, 6)]
        for body in bodies:
            bob.send_message("alice@localhost/phone", body)
        await bob.next_presence("alice@localhost/phone", "unavailable", timeout=5)

        late, _ = await asyncio.to_thread(raw_authenticated, server, "alice")
        with late:
            late.send(f"<resume xmlns='{NS_SM}' previd='{enabled.get('id')}' h='0'/>")
            assert failed_condition(await asyncio.to_thread(late.read_element), late) == "item-not-found"

        alice = Client(server, "alice", resource="again")
        alice_got = record_bodies(alice)
        await alice.login()
        try:
            await alice.go_online()
            for body in bodies:
                stamp_of(await alice.next_message(BOB, body))
            bob.send_message(ALICE, "marker")
            await alice.next_message(BOB, "marker")
            assert sorted(alice_got) == sorted([*bodies, "marker"]), alice_got
        finally:
            await alice.close()


async def test_lost_connection_without_resume_ends_session_messages_offline(server):
    """Stream management without resumption: the session ends as soon as the
    connection is lost (bob gets alice's unavailable at once), and the
    message the server sent but alice never acknowledged is stored offline
    and delivered at her next login."""
    async with logged_in(server, ("bob", "desk")) as (bob,):
        await bob.go_online()
        stream, _ = await asyncio.to_thread(raw_session, server, "alice", "phone", "<enable xmlns='urn:xmpp:sm:3'/>")
        stream.send(ONLINE_AND_VISIBLE_TO_BOB)
        await bob.next_presence("alice@localhost/phone", "available")
        bob.send_message("alice@localhost/phone", "never acked")
        assert await asyncio.to_thread(read_bodies, stream, 1) == ["never acked"]
        reset_connection(stream)
        await bob.next_presence("alice@localhost/phone", "unavailable", timeout=5)
        async with logged_in(server, ("alice", "again")) as (alice,):
            await alice.go_online()
            stamp_of(await alice.next_message(BOB, "never acked"))


async def test_same_resource_login_replaces_hibernating_session(make_server):
    """alice's app restarts without its stream management state and logs in
    again with the same resource while the old session hibernates: the new
    login wins (the hibernating session ends, its id can no longer be
    resumed) and the message the old connection never acknowledged reaches
    the new one, once."""
    server = make_server(options={"smacks_hibernation_time": 30})
    async with logged_in(server, ("bob", "desk")) as (bob,):
        await bob.go_online()
        stream, enabled = await asyncio.to_thread(raw_session, server, "alice", "phone")
        stream.send(ONLINE_AND_VISIBLE_TO_BOB)
        await bob.next_presence("alice@localhost/phone", "available")
        bob.send_message("alice@localhost/phone", "before the restart")
        assert await asyncio.to_thread(read_bodies, stream, 1) == ["before the restart"]
        reset_connection(stream)
        await wait_for_log(server, "session hibernating")

        alice = Client(server, "alice", resource="phone")
        alice_got = record_bodies(alice)
        await alice.login()
        try:
            assert str(alice.jid) == "alice@localhost/phone"
            await alice.go_online()
            await alice.next_message(BOB, "before the restart")
            late, _ = await asyncio.to_thread(raw_authenticated, server, "alice")
            with late:
                late.send(f"<resume xmlns='{NS_SM}' previd='{enabled.get('id')}' h='0'/>")
                assert failed_condition(await asyncio.to_thread(late.read_element), late) == "item-not-found"
            bob.send_message("alice@localhost/phone", "after the restart")
            await alice.next_message(BOB, "after the restart")
            assert alice_got == ["before the restart", "after the restart"], alice_got
        finally:
            await alice.close()


async def test_iq_to_hibernating_session_answered_when_it_ends_regression(make_server):
    """bob pings alice's phone while its session hibernates (1 s); alice never
    comes back. Every IQ request gets exactly one reply (RFC 6120 §8.2.3),
    so when the session ends bob gets an error instead of waiting for
    ever."""
    server = make_server(options={"smacks_hibernation_time": 1})
    async with logged_in(server, ("bob", "desk")) as (bob,):
        stream, _ = await asyncio.to_thread(raw_session, server, "alice", "phone")
        stream.send("<presence/>")
        reset_connection(stream)
        await wait_for_log(server, "session hibernating")
        ping = bob.xmpp.make_iq_get(ito="alice@localhost/phone")
        ET.SubElement(ping.xml, "{urn:xmpp:ping}ping")
        try:
            reply = await ping.send(timeout=5)
        except IqError as error:
            reply = error.iq
        except IqTimeout:
            raise AssertionError("no reply to bob's IQ within 5 s (alice's session ends after 1 s)") from None
        assert reply["type"] == "error", f"a ping to a session that ended was answered {reply}"


async def test_server_restart_during_hibernation_keeps_messages(make_server):
    """The operator restarts the server while alice's session hibernates with
    a message she never acknowledged and one that arrived meanwhile:
    SIGTERM still exits 0, and after the restart both messages are waiting
    for her in offline storage."""
    server = make_server(options={"smacks_hibernation_time": 60})
    stream, _ = await asyncio.to_thread(raw_session, server, "alice", "phone")
    bob, _ = await asyncio.to_thread(raw_session, server, "bob", "desk", None)
    with bob:
        bob.send(chat("alice@localhost/phone", "unacked"))
        assert await asyncio.to_thread(read_bodies, stream, 1) == ["unacked"]
        reset_connection(stream)
        await wait_for_log(server, "session hibernating")
        bob.send(chat("alice@localhost/phone", "while hibernating") + PING)
        await asyncio.to_thread(read_until, bob, lambda el: el.get("id") == "ping")
    await asyncio.to_thread(server.restart)
    async with logged_in(server, ("alice", "phone")) as (alice,):
        alice_got = record_bodies(alice)
        await alice.go_online()
        for body in ("unacked", "while hibernating"):
            stamp_of(await alice.next_message(BOB, body))
        assert alice_got == ["unacked", "while hibernating"], alice_got
