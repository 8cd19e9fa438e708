"""Message carbons (XEP-0280): a resource that enables carbons sees what the
account's other resources send and receive, so a conversation reads the
same on the phone and on the desk. The client side is slixmpp's own
xep_0280 plugin (enable/disable, ``<sent/>``/``<received/>`` stanzas).

Absence is checked with a marker: a later, eligible message whose carbon
arrives on the same stream; had the first one been copied, its carbon
would already be in the inbox.
"""

from __future__ import annotations

import pytest

from harness.archive import (
    NS_CARBONS,
    PLUGINS,
    body_of,
    carbon_of,
    carbons_received,
    disable_carbons,
    enable_carbons,
    message,
    next_carbon,
)
from harness.client import describe
from harness.muc import MUC_PLUGINS, configure_muc, create_room, join, next_groupchat, next_presence_from, room_jid
from harness.scenarios import assert_pong, logged_in

ALICE = "alice@localhost"
BOB = "bob@localhost"
PRIVATE = f"<private xmlns='{NS_CARBONS}'/>"
NO_COPY = "<no-copy xmlns='urn:xmpp:hints'/>"


def users(server, *specs):
    return logged_in(server, *specs, plugins=PLUGINS)


async def test_carbons_feature_advertised(server):
    """disco#info on the server lists urn:xmpp:carbons:2 (XEP-0280 'Discovering Support'): that is
    how a client decides to enable carbons at all."""
    async with users(server, "alice") as (alice,):
        info = await alice.xmpp.plugin["xep_0030"].get_info(jid="localhost", local=False, cached=False, timeout=10)
        assert NS_CARBONS in info["disco_info"]["features"]


async def test_sent_carbon_reaches_other_resource(server):
    """alice/phone writes to bob; alice/desk, with carbons enabled, gets a
    ``<sent/>`` carbon from alice's bare JID holding the message as sent
    (from alice/phone, to bob, same id and body). bob gets the message
    itself, not a carbon."""
    async with users(server, ("alice", "phone"), ("alice", "desk"), ("bob", "laptop")) as (phone, desk, bob):
        await bob.go_online()
        await enable_carbons(phone)
        await enable_carbons(desk)
        sent = message(phone, BOB, "from the phone")
        sent["id"] = "msg-phone-1"
        sent.send()

        carbon = await next_carbon(desk, "sent", "from the phone")
        assert str(carbon["from"]) == ALICE, "carbons come from the account's bare JID"
        assert str(carbon["to"]) == "alice@localhost/desk"
        assert carbon["carbon_sent"]["body"] == "from the phone", "slixmpp's xep_0280 reads the carbon"
        inner = carbon_of(carbon, "sent")
        assert inner.get("from") == "alice@localhost/phone"
        assert inner.get("to") == BOB
        assert inner.get("id") == "msg-phone-1"
        assert inner.get("type") == "chat"

        delivered = await bob.next_message(ALICE, "from the phone")
        assert str(delivered["from"]) == "alice@localhost/phone"
        assert carbon_of(delivered, "received") is None and carbon_of(delivered, "sent") is None
        # The sender itself gets no copy of its own message.
        await assert_pong(phone)
        assert carbons_received(phone) == []


async def test_received_carbon_reaches_other_resource(server):
    """bob writes to alice@localhost (bare JID): the message goes to her
    highest-priority resource (the desk, priority 5), and her phone (priority
    0, carbons enabled) gets a ``<received/>`` carbon of it; the desk does
    not get a carbon on top of the message."""
    async with users(server, ("alice", "phone"), ("alice", "desk"), ("bob", "laptop")) as (phone, desk, bob):
        await enable_carbons(phone)
        await enable_carbons(desk)
        desk.send_presence(ppriority=5)
        await desk.next_presence(str(desk.jid), "available")
        await phone.go_online()

        bob.send_message(ALICE, "to alice's bare JID")
        delivered = await desk.next_message(BOB, "to alice's bare JID")
        assert str(delivered["from"]) == "bob@localhost/laptop"

        carbon = await next_carbon(phone, "received", "to alice's bare JID")
        assert str(carbon["from"]) == ALICE
        assert carbon["carbon_received"]["body"] == "to alice's bare JID", "slixmpp's xep_0280 reads the carbon"
        inner = carbon_of(carbon, "received")
        assert inner.get("from") == "bob@localhost/laptop"
        assert inner.get("to", "").split("/")[0] == ALICE

        # No duplicate to the desk, and the phone got no plain copy either.
        bob.send_message("alice@localhost/desk", "marker")
        await next_carbon(phone, "received", "marker")
        await desk.next_message(BOB, "marker")
        assert carbons_received(desk) == []
        assert phone.received("message", lambda m: m["body"] == "to alice's bare JID") == []


async def test_received_carbon_for_full_jid_message(server):
    """bob writes to alice/phone (a full JID): alice/desk, with carbons
    enabled, gets a ``<received/>`` carbon addressed as the original was."""
    async with users(server, ("alice", "phone"), ("alice", "desk"), ("bob", "laptop")) as (phone, desk, bob):
        await enable_carbons(desk)
        await phone.go_online()
        bob.send_message("alice@localhost/phone", "for the phone only")
        await phone.next_message(BOB, "for the phone only")
        carbon = await next_carbon(desk, "received", "for the phone only")
        assert carbon_of(carbon, "received").get("to") == "alice@localhost/phone"


async def test_normal_message_with_body_is_carboned(server):
    """A type=normal message with a body is conversation too (XEP-0280 'Messages Eligible for Carbons Delivery')."""
    async with users(server, ("alice", "phone"), ("alice", "desk"), "bob") as (phone, desk, bob):
        await enable_carbons(desk)
        phone.send_message(BOB, "a normal one", mtype="normal")
        carbon = await next_carbon(desk, "sent", "a normal one")
        assert carbon_of(carbon, "sent").get("type") in (None, "normal")


async def test_private_message_not_carboned_on_sending_side(server):
    """alice/phone marks a message ``<private/>`` (XEP-0280 'Avoiding Carbons'): alice/desk gets no
    ``<sent/>`` carbon; bob gets the message without the ``<private/>``
    element, which is for the sender's server only."""
    async with users(server, ("alice", "phone"), ("alice", "desk"), ("bob", "laptop")) as (phone, desk, bob):
        await bob.go_online()
        await enable_carbons(desk)
        message(phone, BOB, "just between us", "chat", PRIVATE).send()
        delivered = await bob.next_message(ALICE, "just between us")
        assert delivered.xml.find(f"{{{NS_CARBONS}}}private") is None, f"<private/> reached bob: {delivered}"

        phone.send_message(BOB, "marker")
        await next_carbon(desk, "sent", "marker")
        assert carbons_received(desk, "just between us") == []


async def test_private_message_not_carboned_on_receiving_side_regression(server):
    """bob sends alice/phone a ``<private/>`` message: alice/desk, with carbons
    enabled, gets no ``<received/>`` carbon of it either (XEP-0280 'Avoiding
    Carbons': "The receiving server MUST NOT deliver forwarded messages to the
    other Carbons-enabled resource of the recipient")."""
    async with users(server, ("alice", "phone"), ("alice", "desk"), ("bob", "laptop")) as (phone, desk, bob):
        await enable_carbons(desk)
        message(bob, "alice@localhost/phone", "private to the phone", "chat", PRIVATE).send()
        await phone.next_message(BOB, "private to the phone")

        bob.send_message("alice@localhost/phone", "marker")
        await phone.next_message(BOB, "marker")
        await next_carbon(desk, "received", "marker")
        copies = carbons_received(desk, "private to the phone")
        assert copies == [], f"alice/desk got a carbon of a <private/> message: {copies[0]}"


async def test_no_copy_hint_not_carboned(server):
    """A message with the XEP-0334 ``<no-copy/>`` hint is not carboned, neither
    to the sender's other resource nor to the recipient's."""
    async with users(server, ("alice", "phone"), ("alice", "desk"), ("bob", "laptop"), ("bob", "tablet")) as (
        phone,
        desk,
        laptop,
        tablet,
    ):
        await enable_carbons(desk)
        await enable_carbons(tablet)
        await laptop.go_online()
        nocopy = message(phone, "bob@localhost/laptop", "no copies please")
        nocopy.enable("no-copy")  # slixmpp's xep_0334
        assert nocopy.xml.find("{urn:xmpp:hints}no-copy") is not None
        nocopy.send()
        await laptop.next_message(ALICE, "no copies please")

        phone.send_message("bob@localhost/laptop", "marker")
        await laptop.next_message(ALICE, "marker")
        await next_carbon(desk, "sent", "marker")
        await next_carbon(tablet, "received", "marker")
        assert carbons_received(desk, "no copies please") == []
        assert carbons_received(tablet, "no copies please") == []


async def test_resource_without_carbons_gets_nothing(server):
    """Only resources that enabled carbons get them: alice/desk did not, so it
    sees neither what alice/phone sends nor what it receives."""
    async with users(server, ("alice", "phone"), ("alice", "desk"), ("alice", "tablet"), ("bob", "laptop")) as (
        phone,
        desk,
        tablet,
        bob,
    ):
        await enable_carbons(tablet)  # the control: this one does get them
        phone.send_message(BOB, "sent by the phone")
        bob.send_message("alice@localhost/phone", "received by the phone")
        await phone.next_message(BOB, "received by the phone")
        await next_carbon(tablet, "sent", "sent by the phone")
        await next_carbon(tablet, "received", "received by the phone")
        await assert_pong(desk)
        assert carbons_received(desk) == []
        assert desk.received("message") == []


async def test_disable_stops_carbons(server):
    """After ``<disable/>`` a resource gets no more carbons; enabling again
    brings them back."""
    async with users(server, ("alice", "phone"), ("alice", "desk"), "bob") as (phone, desk, _bob):
        await enable_carbons(desk)
        phone.send_message(BOB, "while enabled")
        await next_carbon(desk, "sent", "while enabled")

        await disable_carbons(desk)
        phone.send_message(BOB, "while disabled")
        await assert_pong(phone)  # processed before the ping answer
        await enable_carbons(desk)
        phone.send_message(BOB, "enabled again")
        await next_carbon(desk, "sent", "enabled again")
        assert carbons_received(desk, "while disabled") == []


async def test_carbons_not_kept_across_sessions(server):
    """Enabling is per session: a new session of the same resource starts
    with carbons off."""
    async with users(server, ("alice", "phone"), "bob") as (phone, _bob):
        async with users(server, ("alice", "desk")) as (desk,):
            await enable_carbons(desk)
        async with users(server, ("alice", "desk"), ("alice", "tablet")) as (desk, tablet):
            await enable_carbons(tablet)
            phone.send_message(BOB, "after reconnect")
            await next_carbon(tablet, "sent", "after reconnect")
            await assert_pong(desk)
            assert carbons_received(desk) == []


async def test_chat_state_only_message_is_carboned(server):
    """A type=chat message without a body (a chat state) is carboned (XEP-0280 eligibility:
    every type=chat message is eligible), so the other resource can update
    its "typing" display or mark the chat as read."""
    async with users(server, ("alice", "phone"), ("alice", "desk"), "bob") as (phone, desk, _bob):
        await enable_carbons(desk)
        message(phone, BOB, None, "chat", "<composing xmlns='http://jabber.org/protocol/chatstates'/>").send()
        carbon = await next_carbon(desk, "sent")
        inner = carbon_of(carbon, "sent")
        assert body_of(inner) is None
        assert inner.find("{http://jabber.org/protocol/chatstates}composing") is not None


async def test_headline_and_error_not_carboned(server):
    """type=headline and type=error messages are not conversation: no carbons."""
    async with users(server, ("alice", "phone"), ("alice", "desk"), ("bob", "laptop")) as (phone, desk, bob):
        await enable_carbons(desk)
        await bob.go_online()
        message(phone, BOB, "a headline", "headline").send()
        message(phone, BOB, "an error", "error").send()
        await bob.next_message(ALICE, "a headline")
        phone.send_message(BOB, "marker")
        await next_carbon(desk, "sent", "marker")
        assert carbons_received(desk) == []


async def test_groupchat_not_carboned(make_server):
    """Room traffic reaches every joined resource by itself (XEP-0280 eligibility):
    alice/phone is in a room, alice/desk (carbons enabled) is not; neither
    bob's groupchat message nor alice's own reflected one is carboned to the
    desk."""
    server = make_server(start=False)
    configure_muc(server)
    server.start()
    room = room_jid("square")
    plugins = tuple(dict.fromkeys(PLUGINS + MUC_PLUGINS))
    async with logged_in(server, ("alice", "phone"), ("alice", "desk"), ("bob", "laptop"), plugins=plugins) as (
        phone,
        desk,
        bob,
    ):
        await enable_carbons(desk)
        await phone.go_online()
        await bob.go_online()
        await create_room(phone, room, "Alice")
        await join(bob, room, "Bob")
        await next_presence_from(phone, f"{room}/Bob")
        bob.send_message(room, "from bob to the room", mtype="groupchat")
        phone.send_message(room, "from alice to the room", mtype="groupchat")
        await next_groupchat(phone, f"{room}/Bob", "from bob to the room")
        await next_groupchat(phone, f"{room}/Alice", "from alice to the room")

        phone.send_message(BOB, "marker")
        await next_carbon(desk, "sent", "marker")
        copies = [describe(c) for c in carbons_received(desk)]
        assert copies == [], f"alice/desk got carbons of room messages: {copies}"
        assert desk.received("message", lambda m: m["type"] == "groupchat") == []


async def test_enable_and_disable_are_idempotent(server):
    """Enabling twice or disabling twice is not an error (XEP-0280 'Handling Multiple Enable/Disable Requests'):
    each request gets an IQ result."""
    async with users(server, ("alice", "phone"), ("alice", "desk"), "bob") as (phone, desk, _bob):
        for request in (enable_carbons, enable_carbons, disable_carbons, disable_carbons, enable_carbons):
            result = await request(desk)
            assert result["type"] == "result"
        phone.send_message(BOB, "after all that")
        await next_carbon(desk, "sent", "after all that")


async def test_normal_messages_without_body(server):
    """type=normal without a body is carboned only when it carries a receipt
    or chat marker (XEP-0184/0333), so the other resources learn what was
    read; other body-less normal messages are not."""
    async with users(server, ("alice", "phone"), ("alice", "desk"), "bob") as (phone, desk, _bob):
        await enable_carbons(desk)
        message(phone, BOB, None, "normal", "<x xmlns='urn:example:e2e'>payload</x>").send()
        message(phone, BOB, None, "normal", "<received xmlns='urn:xmpp:receipts' id='r1'/>").send()
        message(phone, BOB, None, "normal", "<displayed xmlns='urn:xmpp:chat-markers:0' id='r2'/>").send()
        receipt = carbon_of(await next_carbon(desk, "sent"), "sent")
        assert receipt.find("{urn:xmpp:receipts}received") is not None, receipt
        marker = carbon_of(await next_carbon(desk, "sent"), "sent")
        assert marker.find("{urn:xmpp:chat-markers:0}displayed") is not None, marker
        assert carbons_received(desk) == []
