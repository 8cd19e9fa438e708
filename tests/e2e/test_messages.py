"""Messages (RFC 6121 §5, §8.5): to a bare JID, to one resource, and to a
user who is offline, including across a server restart (XEP-0203 delay)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from harness import PASSWORDS
from harness.client import delay_of
from harness.raw import NS_STREAM, NS_STREAM_ERRORS, RawStream
from harness.scenarios import assert_pong, logged_in

ALICE = "alice@localhost"
BOB = "bob@localhost"


async def test_message_to_bare_jid_delivered(server):
    """alice writes to bob@localhost; bob, online, gets it from alice's full JID."""
    async with logged_in(server, ("alice", "desk"), ("bob", "phone")) as (alice, bob):
        await bob.go_online()
        alice.send_message(BOB, "hello bob")
        message = await bob.next_message(ALICE, "hello bob")
        assert str(message["from"]) == "alice@localhost/desk"
        assert message["type"] == "chat"
        assert message["to"].bare == BOB


async def test_message_to_full_jid_reaches_only_that_resource(server):
    """alice writes to bob@localhost/phone: the phone gets it, bob's desk does not."""
    async with logged_in(server, "alice", ("bob", "phone"), ("bob", "desk")) as (alice, phone, desk):
        await phone.go_online()
        await desk.go_online()
        alice.send_message("bob@localhost/phone", "only for the phone")
        message = await phone.next_message(ALICE, "only for the phone")
        assert str(message["to"]) == "bob@localhost/phone"

        # A later message to the desk is a marker: once the desk has it, it
        # would already have had the first one.
        alice.send_message("bob@localhost/desk", "marker for the desk")
        await desk.next_message(ALICE, "marker for the desk")
        assert desk.received("message", lambda m: m["body"] == "only for the phone") == []


async def test_offline_messages_delivered_in_order_at_next_login(server):
    """bob is offline; alice sends three messages; when bob comes online he
    gets all three, in order, each marked as delayed."""
    bodies = ["first", "second", "third"]
    async with logged_in(server, "alice") as (alice,):
        for body in bodies:
            alice.send_message(BOB, body)
        await assert_pong(alice)  # processed in order: the messages were handled first

    async with logged_in(server, "bob") as (bob,):
        bob.send_presence()  # initial presence triggers offline delivery
        received = [await bob.next_message(ALICE) for _ in bodies]
        assert [message["body"] for message in received] == bodies
        assert all(delay_of(message) is not None for message in received)


async def test_offline_message_survives_restart_with_delay(server):
    """alice writes to bob while he is offline; the server restarts; bob logs
    in and gets the message, from alice's full JID, with a XEP-0203 delay
    stamped at the time it was sent."""
    sent_at = datetime.now(timezone.utc)
    async with logged_in(server, ("alice", "desk")) as (alice,):
        alice.send_message(BOB, "are you there?")
        await assert_pong(alice)

    server.restart()

    async with logged_in(server, "bob") as (bob,):
        bob.send_presence()
        message = await bob.next_message(ALICE, "are you there?")
        assert str(message["from"]) == "alice@localhost/desk"
        delay = delay_of(message)
        assert delay is not None, f"no <delay xmlns='urn:xmpp:delay'/> in {message}"
        stamp = datetime.fromisoformat(delay.get("stamp", ""))
        assert stamp.tzinfo is not None, "XEP-0082 stamps are in UTC with a zone"
        now = datetime.now(timezone.utc)
        assert sent_at - timedelta(seconds=2) <= stamp <= now, f"stamp {stamp} outside [{sent_at}, {now}]"


async def test_offline_message_delivered_once(server):
    """A stored message is delivered once: bob logging in a second time does
    not get it again."""
    async with logged_in(server, "alice") as (alice,):
        alice.send_message(BOB, "just once")
        await assert_pong(alice)

    async with logged_in(server, "bob") as (bob,):
        bob.send_presence()
        await bob.next_message(ALICE, "just once")

    async with logged_in(server, ("bob", "again"), "alice") as (bob, alice):
        await bob.go_online()
        alice.send_message(BOB, "marker")  # bob is online now: delivered live
        await bob.next_message(ALICE, "marker")
        assert bob.received("message", lambda m: m["body"] == "just once") == []


async def test_sender_cannot_forge_from(server):
    """alice's raw client claims to be bob in a message's from: carol sees it
    from alice's real full JID, or alice's stream ends with invalid-from and
    nothing reaches carol (RFC 6120 §8.1.2.1)."""
    async with logged_in(server, "carol", "bob") as (carol, bob):
        await carol.go_online()
        stream = RawStream.connect(server.direct_tls_port, direct_tls=True)
        with stream:
            await asyncio.to_thread(stream.login_plain, "alice", PASSWORDS["alice"], True, "raw")
            stream.send(
                "<message from='bob@localhost/forged' to='carol@localhost' type='chat'><body>forged</body></message>"
                "<iq type='get' id='after' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
            )
            reply = await asyncio.to_thread(stream.read_element)
        if reply.tag == f"{{{NS_STREAM}}}error":
            assert reply.find(f"{{{NS_STREAM_ERRORS}}}invalid-from") is not None, stream.dump()
            bob.send_message("carol@localhost", "marker")
            await carol.next_message(BOB, "marker")
            assert carol.received("message", lambda m: m["body"] == "forged") == []
        else:
            message = await carol.next_message(body="forged")
            assert str(message["from"]) == "alice@localhost/raw"
