"""Client state indication (XEP-0352, urn:xmpp:csi:0): a phone in the
pocket says <inactive/> and the server holds back what can wait.

What the user notices: the battery lasts because contacts' presence
changes and chat states are not pushed one by one while the screen is
off; nothing that matters is late (a message with a body, a carbon, any
IQ goes out at once, after everything held so that the order is kept); and
when the screen comes on (<active/>) the client sees each contact's
current presence, not the history of it.

slixmpp's xep_0352 plugin sends the indications. Checking that something
was *not* delivered needs a round trip that does not itself flush the held
stanzas (an IQ would): :func:`barrier` uses XEP-0198's <r/>, answered by
<a/> from the same connection task. The server takes stanzas already
routed to the session before it reads the next client input, so once the
<a/> is in, every stanza routed before the <r/> was sent has either been
written (ahead of the <a/>) or held.
"""

from __future__ import annotations

import asyncio
import itertools
import time

from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from harness.client import Client, describe
from harness.scenarios import assert_pong, logged_in, online_with_roster, subscribe_mutually

NS_SM = "urn:xmpp:sm:3"
NS_CSI = "urn:xmpp:csi:0"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
NS_CARBONS = "urn:xmpp:carbons:2"
ALICE = "alice@localhost"
BOB = "bob@localhost"
CAROL = "carol@localhost"
CSI_PLUGINS = ("xep_0030", "xep_0199", "xep_0203", "xep_0198", "xep_0352")

_ids = itertools.count(1)


def csi_client(server, user: str = "alice", resource: str = "phone") -> Client:
    """slixmpp with CSI and stream management; it asks the server for acks
    only when a test does (:func:`barrier`)."""
    client = Client(server, user, resource=resource, plugins=CSI_PLUGINS)
    sm = client.xmpp.plugin["xep_0198"]
    sm.window = sm.window_counter = 10**9
    return client


def csi(client: Client):
    return client.xmpp.plugin["xep_0352"]


async def login_with_csi(client: Client) -> None:
    """Log in; slixmpp has stream management enabled and has seen <csi/>."""
    loop = asyncio.get_running_loop()
    sm_enabled, csi_enabled = loop.create_future(), loop.create_future()
    client.xmpp.add_event_handler("sm_enabled", lambda _e: sm_enabled.done() or sm_enabled.set_result(True))
    client.xmpp.add_event_handler("csi_enabled", lambda _e: csi_enabled.done() or csi_enabled.set_result(True))
    await client.login()
    await asyncio.wait_for(sm_enabled, 10)
    try:
        await asyncio.wait_for(csi_enabled, 10)
    except asyncio.TimeoutError:
        raise AssertionError("slixmpp saw no <csi xmlns='urn:xmpp:csi:0'/> stream feature") from None


async def barrier(client: Client, timeout: float = 10.0) -> None:
    """<r/> to the server and its <a/> back: a round trip that flushes nothing."""
    answered = asyncio.get_running_loop().create_future()
    name = f"barrier {next(_ids)}"
    client.xmpp.register_handler(
        Callback(name, MatchXPath(f"{{{NS_SM}}}a"), lambda _a: answered.done() or answered.set_result(True))
    )
    try:
        client.xmpp.send_raw(f"<r xmlns='{NS_SM}'/>")
        await asyncio.wait_for(answered, timeout)
    finally:
        client.xmpp.remove_handler(name)


def record_arrivals(client: Client) -> list[str]:
    """What reaches ``client``, in order, as short labels:
    ``presence bob@localhost/desk xa``, ``message composing s3``,
    ``message body hello``, ``iq result``, ``carbon sent hi``."""
    arrivals: list[str] = []

    def label(stanza) -> None:
        xml = stanza.xml
        kind = xml.tag.rsplit("}", 1)[-1]
        if kind == "presence":
            show = xml.findtext("{jabber:client}show") or xml.get("type") or "available"
            arrivals.append(f"presence {xml.get('from')} {show}")
        elif kind == "message":
            carbon = xml.find(f"{{{NS_CARBONS}}}sent")
            body = xml.findtext("{jabber:client}body")
            states = [child.tag.rsplit("}", 1)[-1] for child in xml if child.tag.startswith(f"{{{NS_CHATSTATES}}}")]
            if carbon is not None:
                inner = carbon.findtext("{urn:xmpp:forward:0}forwarded/{jabber:client}message/{jabber:client}body")
                arrivals.append(f"carbon sent {inner}")
            elif body is not None:
                arrivals.append(f"message body {body}")
            elif states:
                arrivals.append(f"message {states[0]} {xml.get('id')}")
            else:
                arrivals.append(f"message other {describe(stanza)}")
        elif kind == "iq":
            arrivals.append(f"iq {xml.get('type')}")

    for kind in ("message", "presence", "iq"):
        client.xmpp.register_handler(
            Callback(f"arrivals {kind} {next(_ids)}", MatchXPath(f"{{jabber:client}}{kind}"), label)
        )
    return arrivals


def send_chat_state(client: Client, to: str, state: str, stanza_id: str) -> None:
    """A XEP-0085 chat state notification: a message without a body."""
    message = client.xmpp.make_message(mto=to, mtype="chat")
    message["id"] = stanza_id
    message.xml.append(ET.Element(f"{{{NS_CHATSTATES}}}{state}"))
    message.send()


def presences(arrivals: list[str]) -> list[str]:
    return [a for a in arrivals if a.startswith("presence ")]


async def contacts_online(server, alice: Client, *others: Client) -> None:
    """alice logs in (SM + CSI), everybody is online and alice is subscribed
    both ways with each of ``others``; every inbox starts empty."""
    await login_with_csi(alice)
    await online_with_roster(alice, *others)
    for other in others:
        await subscribe_mutually(alice, other)
    await barrier(alice)
    alice.inbox.clear()


async def test_presence_held_while_inactive_latest_flushed_on_active(server):
    """While alice is inactive, bob changes his presence three times and
    carol twice: alice receives none of it. On <active/> she gets exactly
    one presence per contact, the latest (bob dnd, carol chat), and nothing
    more afterwards."""
    alice = csi_client(server)
    async with logged_in(server, ("bob", "desk"), ("carol", "tablet")) as (bob, carol):
        await contacts_online(server, alice, bob, carol)
        try:
            arrivals = record_arrivals(alice)
            csi(alice).send_inactive()
            await barrier(alice)
            for show in ("away", "xa", "dnd"):
                bob.send_presence(pshow=show)
            for show in ("away", "chat"):
                carol.send_presence(pshow=show)
            await assert_pong(bob)
            await assert_pong(carol)
            await barrier(alice)
            assert presences(arrivals) == [], f"delivered to an inactive client: {arrivals}"

            csi(alice).send_active()
            await barrier(alice)
            assert sorted(presences(arrivals)) == [
                "presence bob@localhost/desk dnd",
                "presence carol@localhost/tablet chat",
            ], arrivals

            alice.inbox.clear()
            bob.send_presence(pshow="away")
            await alice.next_presence("bob@localhost/desk", "available")
            assert presences(arrivals)[-1] == "presence bob@localhost/desk away", "active again: delivered at once"
            assert len(presences(arrivals)) == 3, arrivals
        finally:
            await alice.close()


async def test_urgent_stanzas_flush_what_was_held_in_order(server):
    """alice is inactive. bob's "composing" chat state, carol's presence
    change and bob's "paused" are held (no body: they can wait). bob's
    message with a body goes out at once, after the three held stanzas, in
    the order they arrived. Still inactive, carol's next presence is held
    again until alice's own IQ (a ping) is answered: the presence comes
    first, then the result."""
    alice = csi_client(server)
    async with logged_in(server, ("bob", "desk"), ("carol", "tablet")) as (bob, carol):
        await contacts_online(server, alice, bob, carol)
        try:
            arrivals = record_arrivals(alice)
            csi(alice).send_inactive()
            await barrier(alice)
            send_chat_state(bob, str(alice.jid), "composing", "s1")
            await assert_pong(bob)
            carol.send_presence(pshow="away")
            await assert_pong(carol)
            send_chat_state(bob, str(alice.jid), "paused", "s2")
            await assert_pong(bob)
            await barrier(alice)
            assert arrivals == [], f"delivered to an inactive client: {arrivals}"

            bob.send_message(str(alice.jid), "are you there?")
            await alice.next_message(BOB, "are you there?")
            assert arrivals == [
                "message composing s1",
                "presence carol@localhost/tablet away",
                "message paused s2",
                "message body are you there?",
            ], arrivals

            carol.send_presence(pshow="xa")
            await assert_pong(carol)
            await barrier(alice)
            assert arrivals[4:] == [], f"held no more after the flush: {arrivals}"
            await assert_pong(alice)
            assert arrivals[4:] == ["presence carol@localhost/tablet xa", "iq result"], arrivals
        finally:
            await alice.close()


async def test_carbon_is_urgent(server):
    """alice's phone is inactive with carbons enabled (XEP-0280); bob's
    presence change is held; when alice writes to bob from her desk, the
    phone gets the <sent/> carbon at once, after bob's held presence."""
    alice = csi_client(server)
    async with logged_in(server, ("bob", "desk"), ("alice", "desk")) as (bob, desk):
        await contacts_online(server, alice, bob)
        try:
            enable = alice.xmpp.make_iq_set()
            ET.SubElement(enable.xml, f"{{{NS_CARBONS}}}enable")
            await alice.iq(enable)
            await desk.go_online()
            await barrier(alice)
            arrivals = record_arrivals(alice)
            csi(alice).send_inactive()
            await barrier(alice)
            bob.send_presence(pshow="dnd")
            await assert_pong(bob)
            await barrier(alice)
            assert arrivals == [], arrivals

            desk.send_message(BOB, "written at my desk")
            await bob.next_message(ALICE, "written at my desk")
            deadline = time.monotonic() + 10
            while "carbon sent written at my desk" not in arrivals:
                assert time.monotonic() < deadline, f"no carbon reached the inactive phone: {arrivals}"
                await asyncio.sleep(0.05)
            assert arrivals == ["presence bob@localhost/desk dnd", "carbon sent written at my desk"], arrivals
        finally:
            await alice.close()


async def test_csi_queue_size_bounds_what_is_held(make_server):
    """With csi_queue_size = 4, two chat states for an inactive alice are
    held, but of nine the server never keeps more than four back: at least
    five reach her without <active/>, in order; <active/> delivers the rest,
    in order, each once."""
    server = make_server(options={"csi_queue_size": 4})
    alice = csi_client(server)
    async with logged_in(server, ("bob", "desk")) as (bob,):
        await contacts_online(server, alice, bob)
        try:
            arrivals = record_arrivals(alice)
            csi(alice).send_inactive()
            await barrier(alice)
            states = [("composing" if n % 2 else "paused", f"s{n}") for n in range(1, 10)]
            expected = [f"message {state} {stanza_id}" for state, stanza_id in states]
            for state, stanza_id in states[:2]:
                send_chat_state(bob, str(alice.jid), state, stanza_id)
            await assert_pong(bob)
            await barrier(alice)
            assert arrivals == [], f"delivered to an inactive client below csi_queue_size: {arrivals}"
            for state, stanza_id in states[2:]:
                send_chat_state(bob, str(alice.jid), state, stanza_id)
            await assert_pong(bob)
            await barrier(alice)
            assert len(arrivals) >= 9 - 4, f"more than csi_queue_size held: {len(arrivals)} of 9 delivered"
            assert arrivals == expected[: len(arrivals)], arrivals
            csi(alice).send_active()
            await barrier(alice)
            assert arrivals == expected, arrivals
        finally:
            await alice.close()


async def test_held_stanzas_survive_a_lost_connection(make_server):
    """alice's inactive phone loses its connection while bob's presence
    change and chat state are held; she resumes (XEP-0198) on a new, active
    connection and gets both, in order."""
    server = make_server(options={"smacks_hibernation_time": 30})
    alice = csi_client(server)
    async with logged_in(server, ("bob", "desk")) as (bob,):
        await contacts_online(server, alice, bob)
        try:
            arrivals = record_arrivals(alice)
            csi(alice).send_inactive()
            await barrier(alice)
            bob.send_presence(pshow="away")
            await assert_pong(bob)
            send_chat_state(bob, str(alice.jid), "gone", "s1")
            await assert_pong(bob)
            await barrier(alice)
            assert arrivals == [], arrivals

            alice.xmpp.transport.abort()
            await alice.wait_disconnected(timeout=5)
            deadline = time.monotonic() + 10
            while "session hibernating" not in server.log_text():
                assert time.monotonic() < deadline, "the session never hibernated"
                await asyncio.sleep(0.05)
            resumed = asyncio.get_running_loop().create_future()
            alice.xmpp.add_event_handler("session_resumed", lambda _e: resumed.done() or resumed.set_result(True))
            alice.xmpp.connect(host="127.0.0.1", port=alice.port)
            await asyncio.wait_for(resumed, 15)
            await barrier(alice)
            assert arrivals == ["presence bob@localhost/desk away", "message gone s1"], arrivals
        finally:
            await alice.close()
