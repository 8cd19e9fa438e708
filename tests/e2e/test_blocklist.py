"""XEP-0191 Blocking Command (module ``blocklist``, loaded by default), with
slixmpp's own ``xep_0191`` plugin as the real client.

Checked: the feature is advertised; block/unblock/blocklist round trips
and survive a restart; pushes reach the user's other resource that asked
for the list; nothing passes either way between the user and whom they
block: the blocked contact's messages and requests get
service-unavailable (they must not learn they are blocked), the user's own
get not-acceptable with ``<blocked/>``, presence is dropped both ways, and
the contact sees the user go offline when blocked; a domain item blocks
everyone there. Web clients (Converse.js) wait for this feature before
opening a chat with someone outside the roster.
"""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import IqError

from harness.scenarios import logged_in

PLUGINS = ("xep_0030", "xep_0191", "xep_0199")
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"


def blocking(client):
    return client.xmpp.plugin["xep_0191"]


async def blocked_jids(client) -> set[str]:
    return {str(j) for j in await blocking(client).get_blocked_jids()}


async def test_blocking_is_advertised_and_lists_round_trip_across_restart(server):
    async with logged_in(server, ("alice", "desk"), plugins=PLUGINS) as (alice,):
        info = await alice.xmpp.plugin["xep_0030"].get_info(jid="localhost")
        assert "urn:xmpp:blocking" in info["disco_info"]["features"]
        assert await blocked_jids(alice) == set()
        await blocking(alice).block(["bob@localhost", "spam.example"])
        assert await blocked_jids(alice) == {"bob@localhost", "spam.example"}
        await blocking(alice).unblock(["spam.example"])
        assert await blocked_jids(alice) == {"bob@localhost"}
    server.restart()
    async with logged_in(server, ("alice", "desk"), plugins=PLUGINS) as (alice,):
        assert await blocked_jids(alice) == {"bob@localhost"}
        # An empty <unblock/> unblocks everyone (slixmpp's unblock() needs items).
        iq = alice.xmpp.make_iq_set()
        iq.enable("unblock")
        await alice.iq(iq)
        assert await blocked_jids(alice) == set()


async def test_changes_are_pushed_to_resources_that_asked_for_the_list(server):
    async with logged_in(server, ("alice", "desk"), ("alice", "phone"), plugins=PLUGINS) as (desk, phone):
        await blocked_jids(phone)  # the phone asks for the list: it gets pushes
        pushed = asyncio.Event()
        items = []

        def on_blocked(iq):
            items.extend(item["jid"] for item in iq["block"]["items"])
            pushed.set()

        phone.xmpp.add_event_handler("blocked", on_blocked)
        await blocking(desk).block(["carol@localhost"])
        await asyncio.wait_for(pushed.wait(), 5)
        assert items == ["carol@localhost"]


async def test_nothing_passes_between_user_and_blocked_contact(server):
    async with logged_in(server, "alice", "bob", "carol", plugins=PLUGINS) as (alice, bob, carol):
        for c in (alice, bob, carol):
            await c.go_online()
        await blocking(alice).block(["bob@localhost"])

        # bob -> alice: refused as if alice were not there.
        reply = bob.xmpp.make_message(mto="alice@localhost", mbody="let me in", mtype="chat")
        reply.send()
        error = await bob.next("message", lambda m: m["type"] == "error")
        assert error["error"]["condition"] == "service-unavailable"
        with pytest.raises(IqError) as refused:
            await bob.xmpp.plugin["xep_0199"].send_ping(str(alice.xmpp.boundjid), timeout=5)
        assert refused.value.iq["error"]["condition"] == "service-unavailable"

        # alice -> bob: not-acceptable with <blocked/>.
        alice.xmpp.make_message(mto="bob@localhost", mbody="oops", mtype="chat").send()
        own = await alice.next("message", lambda m: m["type"] == "error")
        assert own["error"]["condition"] == "not-acceptable"
        assert own.xml.find(f".//{{{NS_BLOCKING_ERRORS}}}blocked") is not None

        # carol is not blocked: her message arrives, and after it nothing of bob's did.
        carol.send_message("alice@localhost", "hello alice")
        await alice.next_message("carol@localhost", "hello alice")
        assert not alice.received("message", lambda m: str(m["body"]) == "let me in")

        # Unblocked, messages flow again.
        await blocking(alice).unblock(["bob@localhost"])
        bob.send_message("alice@localhost", "finally")
        await alice.next_message("bob@localhost", "finally")


async def test_blocked_contact_sees_the_user_go_offline_and_domain_items(server):
    async with logged_in(server, "alice", "bob", plugins=PLUGINS) as (alice, bob):
        await alice.go_online()
        await bob.go_online()
        # Directed presence so bob sees alice (no roster needed).
        alice.xmpp.send_presence(pto="bob@localhost")
        await bob.next_presence(str(alice.xmpp.boundjid))
        await blocking(alice).block(["bob@localhost"])
        await bob.next_presence(str(alice.xmpp.boundjid), ptype="unavailable")
        await blocking(alice).unblock(["bob@localhost"])
        # A domain item blocks everyone at that domain (here, our own).
        await blocking(alice).block(["localhost"])
        bob.xmpp.make_message(mto="alice@localhost", mbody="domain blocked", mtype="chat").send()
        error = await bob.next("message", lambda m: m["type"] == "error")
        assert error["error"]["condition"] == "service-unavailable"


async def test_unblocked_subscriber_sees_presence_again(server):
    """XEP-0191 §3.4: bob, subscribed to alice's presence, sees her go
    offline when she blocks him and sees her current presence again when she
    unblocks him (by item, and with an empty unblock-all)."""
    from harness.scenarios import online_with_roster, subscribe_mutually

    async with logged_in(server, "alice", "bob", plugins=PLUGINS) as (alice, bob):
        await online_with_roster(alice, bob)
        await subscribe_mutually(alice, bob)
        alice.xmpp.send_presence(pstatus="here")
        shown = await bob.next_presence(str(alice.xmpp.boundjid), "available")
        assert shown["status"] == "here"
        await blocking(alice).block(["bob@localhost"])
        await bob.next_presence(str(alice.xmpp.boundjid), ptype="unavailable")
        await blocking(alice).unblock(["bob@localhost"])
        back = await bob.next_presence(str(alice.xmpp.boundjid), "available")
        assert back["status"] == "here"
        await blocking(alice).block(["bob@localhost"])
        await bob.next_presence(str(alice.xmpp.boundjid), ptype="unavailable")
        iq = alice.xmpp.make_iq_set()
        iq.enable("unblock")
        await alice.iq(iq)
        again = await bob.next_presence(str(alice.xmpp.boundjid), "available")
        assert again["status"] == "here"
