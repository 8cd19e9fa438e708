"""Presence subscriptions and broadcast (RFC 6121 §3, §4) between alice and bob."""

from __future__ import annotations

from harness.client import Client, roster_items
from harness.scenarios import logged_in, online_with_roster, subscribe, subscribe_mutually, wait_subscription

ALICE = "alice@localhost"
BOB = "bob@localhost"


async def test_subscription_request_reaches_contact(server):
    """alice asks to see bob's presence: bob gets the request from alice's
    bare JID, and alice's roster shows bob as pending (ask="subscribe")."""
    async with logged_in(server, "alice", "bob") as (alice, bob):
        await online_with_roster(alice, bob)
        alice.send_presence(pto=BOB, ptype="subscribe")

        request = await bob.next_presence(ALICE, "subscribe")
        assert str(request["from"]) == ALICE  # RFC 6121 §3.1.2: stamped with the bare JID
        pending = await alice.next_roster_push(BOB)
        assert (pending["subscription"], pending["ask"]) == ("none", "subscribe")


async def test_approved_subscription_shows_contact_presence(server):
    """bob approves: alice gets "subscribed", her roster says "to", and bob's
    current presence arrives at once; bob's roster says "from"."""
    async with logged_in(server, "alice", "bob") as (alice, bob):
        await online_with_roster(alice, bob)
        bob.send_presence(pshow="dnd", pstatus="coding")
        alice.send_presence(pto=BOB, ptype="subscribe")
        await bob.next_presence(ALICE, "subscribe")
        bob.send_presence(pto=ALICE, ptype="subscribed")

        approved = await alice.next_presence(BOB, "subscribed")
        assert str(approved["from"]) == BOB
        item = await wait_subscription(alice, BOB, "to")
        assert item["ask"] is None
        presence = await alice.next_presence(str(bob.jid), "available")
        assert (presence["show"], presence["status"]) == ("dnd", "coding")
        await wait_subscription(bob, ALICE, "from")


async def test_mutual_subscription_shares_presence_both_ways(server):
    """After both approve, both rosters say "both", and each one's status
    change reaches the other."""
    async with logged_in(server, "alice", "bob") as (alice, bob):
        await online_with_roster(alice, bob)
        await subscribe_mutually(alice, bob)
        assert roster_items(await alice.roster_get())[BOB]["subscription"] == "both"
        assert roster_items(await bob.roster_get())[ALICE]["subscription"] == "both"

        alice.send_presence(pshow="away", pstatus="lunch")
        seen_by_bob = await bob.next_presence(str(alice.jid), "available")
        assert (seen_by_bob["show"], seen_by_bob["status"]) == ("away", "lunch")

        bob.send_presence(pshow="xa", pstatus="holiday")
        seen_by_alice = await alice.next_presence(str(bob.jid), "available")
        assert (seen_by_alice["show"], seen_by_alice["status"]) == ("xa", "holiday")


async def test_unsubscribe_stops_contact_presence(server):
    """alice unsubscribes from bob: bob is told, alice sees bob go unavailable
    and stops getting his changes, while bob still sees hers (from/to)."""
    async with logged_in(server, "alice", "bob") as (alice, bob):
        await online_with_roster(alice, bob)
        await subscribe_mutually(alice, bob)

        alice.send_presence(pto=BOB, ptype="unsubscribe")
        await bob.next_presence(ALICE, "unsubscribe")
        await alice.next_presence(str(bob.jid), "unavailable")  # RFC 6121 §3.3.3
        await wait_subscription(alice, BOB, "from")
        await wait_subscription(bob, ALICE, "to")

        # bob changes status, then sends a message as a marker: when alice has
        # the marker, she would already have had the presence.
        bob.send_presence(pstatus="you cannot see this")
        bob.send_message(ALICE, "marker after status")
        await alice.next_message(str(bob.jid), "marker after status")
        assert alice.received("presence", lambda p: p["status"] == "you cannot see this") == []

        alice.send_presence(pstatus="bob still sees this")
        seen = await bob.next_presence(str(alice.jid), "available")
        assert seen["status"] == "bob still sees this"


async def test_cancelled_subscription_stops_presence(server):
    """bob revokes alice's subscription ("unsubscribed"): alice is told, sees
    bob go unavailable, and her roster says "from"."""
    async with logged_in(server, "alice", "bob") as (alice, bob):
        await online_with_roster(alice, bob)
        await subscribe_mutually(alice, bob)

        bob.send_presence(pto=ALICE, ptype="unsubscribed")
        await alice.next_presence(BOB, "unsubscribed")
        await alice.next_presence(str(bob.jid), "unavailable")
        await wait_subscription(alice, BOB, "from")
        await wait_subscription(bob, ALICE, "to")


async def test_subscription_request_to_offline_contact_waits_for_login(server):
    """alice asks while bob is offline; bob gets the request when he next
    comes online (RFC 6121 §3.1.3)."""
    async with logged_in(server, "alice") as (alice,):
        await online_with_roster(alice)
        alice.send_presence(pto=BOB, ptype="subscribe")
        await alice.next_roster_push(BOB)  # the request has been processed

        async with logged_in(server, "bob") as (bob,):
            await bob.roster_get()
            bob.send_presence()
            await bob.next_presence(ALICE, "subscribe")


async def test_contacts_presence_arrives_at_login(server):
    """With a mutual subscription, when alice comes online she receives bob's
    current presence (the server probes for her)."""
    async with logged_in(server, ("alice", "desk"), "bob") as (alice, bob):
        await online_with_roster(alice, bob)
        await subscribe_mutually(alice, bob)
        bob.send_presence(pshow="chat", pstatus="around")
        await alice.next_presence(str(bob.jid), "available")

        late = Client(server, "alice", resource="laptop")
        await late.login()
        try:
            await late.roster_get()
            late.send_presence()
            presence = await late.next_presence(str(bob.jid), "available")
            assert (presence["show"], presence["status"]) == ("chat", "around")
        finally:
            await late.close()


async def test_contact_going_offline_is_seen(server):
    """When bob disconnects, alice receives his unavailable presence."""
    async with logged_in(server, "alice", "bob") as (alice, bob):
        await online_with_roster(alice, bob)
        await subscribe_mutually(alice, bob)
        bob_jid = str(bob.jid)
        await bob.close()
        await alice.next_presence(bob_jid, "unavailable")


async def test_subscription_handshake_from_scratch(server):
    """The whole handshake, as two users do it in their clients: alice adds
    bob and asks; bob approves and asks back; alice approves. Both rosters end
    at "both" and each sees the other online."""
    async with logged_in(server, "alice", "bob") as (alice, bob):
        await online_with_roster(alice, bob)
        await alice.roster_set(BOB, name="Bob")
        await subscribe(alice, bob)
        await subscribe(bob, alice)
        item = await wait_subscription(alice, BOB, "both")
        assert item["name"] == "Bob"  # the handshake keeps alice's own name for bob
        await wait_subscription(bob, ALICE, "both")
        await alice.next_presence(str(bob.jid), "available")
        await bob.next_presence(str(alice.jid), "available")


async def test_no_presence_without_subscription(server):
    """bob has no subscription to alice: her status changes never reach him."""
    async with logged_in(server, "alice", "bob") as (alice, bob):
        await online_with_roster(alice, bob)
        alice.send_presence(pshow="away", pstatus="private status")
        alice.send_message(BOB, "marker after status")
        await bob.next_message(str(alice.jid), "marker after status")
        assert bob.received("presence", lambda p: p["from"].bare == ALICE) == []


async def test_subscription_survives_restart(server):
    """A mutual subscription is stored: after a restart, alice coming online
    gets bob's presence and both rosters still say "both"."""
    async with logged_in(server, "alice", "bob") as (alice, bob):
        await online_with_roster(alice, bob)
        await subscribe_mutually(alice, bob)

    server.restart()

    async with logged_in(server, "alice", "bob") as (alice, bob):
        assert roster_items(await alice.roster_get())[BOB]["subscription"] == "both"
        assert roster_items(await bob.roster_get())[ALICE]["subscription"] == "both"
        await bob.go_online(status="back")
        await alice.go_online()
        presence = await alice.next_presence(str(bob.jid), "available")
        assert presence["status"] == "back"
