"""Message archive (XEP-0313 urn:xmpp:mam:2, with XEP-0059 paging and
XEP-0359 stanza-ids): what a user sends and receives is archived on both
sides and can be queried back, page by page, also after a server restart;
archiving preferences, XEP-0334 hints and the retention option are honoured.

slixmpp's xep_0313, xep_0059, xep_0359 and xep_0334 plugins build the
queries and read the answers, as a real client's would; the query options
slixmpp has no interface for (``<flip-page/>``, an empty ``<before/>``,
unknown fields) are added to its stanzas as XML.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from harness import PASSWORDS
from harness.archive import (
    NS_MAM,
    NS_SID,
    PLUGINS,
    carbon_of,
    carbons_received,
    enable_carbons,
    get_prefs,
    message,
    next_carbon,
    query,
    query_all,
    set_prefs,
    stanza_ids,
)
from harness.client import describe
from harness.muc import MUC_PLUGINS, configure_muc, create_room, join, next_groupchat, next_presence_from, room_jid
from harness.scenarios import assert_pong, logged_in

ALICE = "alice@localhost"
BOB = "bob@localhost"
CAROL = "carol@localhost"
MUC_ARCHIVE_PLUGINS = tuple(dict.fromkeys(PLUGINS + MUC_PLUGINS))
COMPOSING = "<composing xmlns='http://jabber.org/protocol/chatstates'/>"


def users(server, *specs):
    return logged_in(server, *specs, plugins=PLUGINS)


async def converse(sender, to: str, bodies: list[str], receiver=None) -> None:
    """``sender`` sends each body to ``to``; waits until ``receiver`` has them
    all (or, without one, until the server has processed them)."""
    for body in bodies:
        sender.send_message(to, body)
    if receiver is None:
        await assert_pong(sender)
    else:
        for body in bodies:
            await receiver.next_message(sender.jid.bare, body)


def condition(error: IqError) -> str:
    return error.iq["error"]["condition"]


# --- discovery and the query form ----------------------------------------------------------


async def test_account_advertises_mam_and_stanza_ids(server):
    """disco#info on the user's own bare JID lists urn:xmpp:mam:2, its
    #extended filters and urn:xmpp:sid:0 (XEP-0313 'Determining support'): that is where a client
    looks before it relies on the archive."""
    async with users(server, "alice") as (alice,):
        info = await alice.xmpp.plugin["xep_0030"].get_info(jid=ALICE, local=False, cached=False, timeout=10)
        features = set(info["disco_info"]["features"])
        assert {NS_MAM, f"{NS_MAM}#extended", NS_SID} <= features, features


async def test_query_form_lists_the_fields(server):
    """An iq get of ``<query/>`` returns the search form (XEP-0313 'Retrieving form fields') with
    FORM_TYPE and the fields the server accepts, read by slixmpp's get_fields."""
    async with users(server, "alice") as (alice,):
        form = await alice.xmpp.plugin["xep_0313"].get_fields(timeout=10)
        fields = form.get_fields()
        # slixmpp reads a hidden field's value as a list.
        assert fields["FORM_TYPE"]["value"] in (NS_MAM, [NS_MAM])
        assert fields["FORM_TYPE"]["type"] == "hidden"
        assert {"with", "start", "end", "before-id", "after-id", "ids"} <= set(fields)


# --- archiving -------------------------------------------------------------------------------


async def test_message_archived_for_sender_and_recipient_with_matching_stanza_id(server):
    """alice/desk writes to bob: bob gets the message with a stanza-id
    by='bob@localhost'; slixmpp's xep_0313 ``retrieve`` finds it in bob's
    archive under that same id, and in alice's archive as sent (from
    alice/desk to bob, same id attribute)."""
    async with users(server, ("alice", "desk"), ("bob", "laptop")) as (alice, bob):
        await bob.go_online()
        sent = message(alice, BOB, "archive me")
        sent["id"] = "client-id-1"
        sent.send()
        delivered = await bob.next_message(ALICE, "archive me")
        assert delivered["stanza_id"]["by"] == BOB, f"no stanza-id by bob: {delivered}"
        archive_id = delivered["stanza_id"]["id"]
        assert archive_id

        # Addressed to the archive's JID, so slixmpp's collector also checks
        # that results come from it (XEP-0313 'Sender Impersonation').
        result = await bob.xmpp.plugin["xep_0313"].retrieve(jid=BOB, timeout=10)
        results = result["mam"]["results"]
        assert len(results) == 1, results
        item = results[0]
        assert item["mam_result"]["id"] == archive_id, (
            "the stanza-id is the archive id (XEP-0313 'Communicating the archive ID')"
        )
        archived = item["mam_result"]["forwarded"]["stanza"]
        assert archived["body"] == "archive me"
        assert str(archived["from"]) == "alice@localhost/desk"
        assert item["mam_result"]["forwarded"]["delay"]["stamp"] is not None
        assert result["mam_fin"]["complete"] in ("true", True)

        mine = await query_all(alice)
        assert mine.bodies == ["archive me"]
        sent_copy = mine.items[0]
        assert sent_copy.sender == "alice@localhost/desk"
        assert sent_copy.recipient == BOB
        assert sent_copy.message.get("id") == "client-id-1"
        assert mine.ids != [archive_id], "each archive has its own ids"


async def test_offline_recipient_archive_and_stanza_id(server):
    """bob is offline when alice writes: the message is in bob's archive,
    and the offline copy he gets at login carries the same stanza-id."""
    async with users(server, "alice") as (alice,):
        await converse(alice, BOB, ["while you were out"])
    async with users(server, "bob") as (bob,):
        page = await query_all(bob)
        assert page.bodies == ["while you were out"]
        assert page.items[0].sender.startswith(ALICE + "/")
        bob.send_presence()
        offline = await bob.next_message(ALICE, "while you were out")
        assert stanza_ids(offline, BOB) == page.ids


async def test_results_carry_delay_stamps_in_order(server):
    """Each result is ``<result queryid id><forwarded><delay stamp/>message</forwarded></result>``
    for the querying resource, oldest first, stamped when archived."""
    before = time.time()
    async with users(server, ("alice", "desk"), "bob") as (alice, _bob):
        await converse(alice, BOB, ["one", "two", "three"])
        after = time.time()
        page = await query(alice, queryid="my-query")
        assert page.bodies == ["one", "two", "three"]
        stamps = [item.stamp.timestamp() for item in page.items]
        assert stamps == sorted(stamps)
        assert before - 2 <= stamps[0] and stamps[-1] <= after + 2, (before, stamps, after)
        for item in page.items:
            assert item.queryid == "my-query"
            assert str(item.wrapper["to"]) == str(alice.jid)
            assert item.wrapper["from"].bare in ("", ALICE)
        assert (page.first, page.last, page.count, page.first_index) == (page.ids[0], page.ids[-1], 3, 0)
        assert page.complete


async def test_no_store_hints_and_chat_states_not_archived(server):
    """XEP-0334 ``<no-store/>`` and ``<no-permanent-store/>`` keep a message out
    of both archives (it is still delivered); a chat state alone is not
    archived; a body-less message with ``<store/>`` is."""
    async with users(server, ("alice", "desk"), ("bob", "laptop")) as (alice, bob):
        await bob.go_online()
        no_store = message(alice, BOB, "forget me")
        no_store.enable("no-store")  # slixmpp's xep_0334
        no_store.send()
        no_perm = message(alice, BOB, "forget me too")
        no_perm.enable("no-permanent-store")
        no_perm.send()
        message(alice, BOB, None, "chat", COMPOSING).send()
        stored = message(alice, BOB, None, "chat", "<paused xmlns='http://jabber.org/protocol/chatstates'/>")
        stored.enable("store")
        stored.send()
        alice.send_message(BOB, "keep me")
        for body in ("forget me", "forget me too"):
            delivered = await bob.next_message(ALICE, body)
            assert stanza_ids(delivered) == [], "a message that is not archived gets no archive id"
        await bob.next_message(ALICE, "keep me")

        for client in (alice, bob):
            page = await query_all(client)
            assert len(page.items) == 2, f"{client.name}: {[describe(i.wrapper) for i in page.items]}"
            assert page.bodies == [None, "keep me"]
            assert page.items[0].message.find("{http://jabber.org/protocol/chatstates}paused") is not None


async def test_groupchat_headline_and_error_not_archived(server):
    """Messages of type groupchat, headline and error are not conversation
    with a user: neither archive keeps them."""
    async with users(server, ("alice", "desk"), ("bob", "laptop")) as (alice, bob):
        await bob.go_online()
        message(alice, BOB, "a headline", "headline").send()
        message(alice, BOB, "a groupchat", "groupchat").send()
        message(alice, BOB, "an error", "error").send()
        await converse(alice, BOB, ["marker"], bob)
        assert (await query_all(alice)).bodies == ["marker"]
        assert (await query_all(bob)).bodies == ["marker"]


async def test_forged_stanza_id_removed(server):
    """alice puts a stanza-id by='bob@localhost' into her message, a forgery
    by XEP-0359's security rules: bob gets only the server's own stanza-id,
    whose id is the one in his archive; the archived message holds no forged
    id either. A stanza-id by someone else is left alone."""
    async with users(server, ("alice", "desk"), ("bob", "laptop")) as (alice, bob):
        await bob.go_online()
        message(
            alice,
            BOB,
            "trust me",
            "chat",
            f"<stanza-id xmlns='{NS_SID}' by='{BOB}' id='forged-id'/>",
            f"<stanza-id xmlns='{NS_SID}' by='elsewhere.example' id='foreign-id'/>",
        ).send()
        delivered = await bob.next_message(ALICE, "trust me")
        ids = stanza_ids(delivered, BOB)
        assert len(ids) == 1 and ids != ["forged-id"], f"stanza-ids by bob: {ids}"
        assert stanza_ids(delivered, "elsewhere.example") == ["foreign-id"]
        page = await query_all(bob)
        assert page.ids == ids
        assert "forged-id" not in stanza_ids_of(page.items[0].message)


def stanza_ids_of(element) -> list[str]:
    return [sid.get("id", "") for sid in element.findall(f"{{{NS_SID}}}stanza-id")]


async def test_query_results_go_to_the_querying_resource_only(server):
    """Results are for the resource that asked: alice/desk, with carbons
    enabled, gets neither the results nor carbons of them; and a message
    sent while carbons are on is archived once."""
    async with users(server, ("alice", "phone"), ("alice", "desk"), "bob") as (phone, desk, _bob):
        await enable_carbons(desk)
        phone.send_message(BOB, "copied once")
        page = await query_all(phone)
        assert page.bodies == ["copied once"]
        await assert_pong(desk)
        assert len(carbons_received(desk, "copied once")) == 1
        assert desk.received("message", lambda m: m.xml.find(f"{{{NS_MAM}}}result") is not None) == []
        assert len(carbons_received(desk)) == 1


async def test_forked_and_carboned_message_archived_once(server):
    """A message to bob's bare JID reaches both of his available resources
    (same priority) and, as a carbon, his third one: all three copies carry
    the same stanza-id, and bob's archive holds the message once under that
    id (XEP-0313 'User Archives': stored once whatever the copies)."""
    async with users(server, "alice", ("bob", "laptop"), ("bob", "tablet"), ("bob", "phone")) as (
        alice,
        laptop,
        tablet,
        phone,
    ):
        await laptop.go_online()
        await tablet.go_online()
        await enable_carbons(phone)  # no presence: not a delivery target, gets a carbon
        alice.send_message(BOB, "to all of bob")
        ids = set()
        for client in (laptop, tablet):
            ids.update(stanza_ids(await client.next_message(ALICE, "to all of bob"), BOB))
        carbon = await next_carbon(phone, "received", "to all of bob")
        ids.update(stanza_ids_of(carbon_of(carbon, "received")))
        assert len(ids) == 1, ids
        page = await query_all(laptop)
        assert page.bodies == ["to all of bob"]
        assert set(page.ids) == ids


async def test_sent_carbon_carries_the_senders_archive_id_regression(server):
    """XEP-0313 'Communicating the archive ID': the recipient must not see the sender's archive id, but
    the server "SHOULD include the element as a child of the forwarded message
    when using XEP-0280": alice/desk's ``<sent/>`` carbon names the id under
    which alice's archive holds the message."""
    async with users(server, ("alice", "phone"), ("alice", "desk"), ("bob", "laptop")) as (phone, desk, bob):
        await bob.go_online()
        await enable_carbons(desk)
        phone.send_message(BOB, "sent and archived")
        delivered = await bob.next_message(ALICE, "sent and archived")
        assert stanza_ids(delivered, ALICE) == [], "the recipient never sees the sender's archive id"
        carbon = await next_carbon(desk, "sent", "sent and archived")
        page = await query_all(phone)
        inner = carbon_of(carbon, "sent")
        assert [s.get("id") for s in inner.findall(f"{{{NS_SID}}}stanza-id") if s.get("by") == ALICE] == page.ids


async def test_note_to_self_archived_once_regression(server):
    """alice/phone writes to alice@localhost (a note to self): her archive
    holds it once (XEP-0313 'User Archives'), found with ``with`` = her own JID."""
    async with users(server, ("alice", "phone"), ("alice", "desk")) as (phone, desk):
        await desk.go_online()
        phone.send_message(ALICE, "note to self")
        await desk.next_message(ALICE, "note to self")
        assert (await query_all(phone)).bodies == ["note to self"]
        assert (await query_all(phone, with_jid=ALICE)).bodies == ["note to self"]


async def test_archived_message_content_preserved(server):
    """The archive returns the message as it was sent: id, type, thread,
    escaped text and unknown extension elements intact."""
    text = "1 < 2 & 3 > 2 — \"quoted\" 'single' ☃ \U0001f426"
    async with users(server, ("alice", "desk"), "bob") as (alice, _bob):
        sent = message(alice, BOB, text, "chat", "<custom xmlns='urn:example:e2e' a='b'>x</custom>")
        sent["id"] = "keep-this-id"
        sent["thread"] = "th-1"
        sent.send()
        await assert_pong(alice)
        item = (await query_all(alice)).items[0]
        assert item.body == text
        assert item.message.get("id") == "keep-this-id"
        assert item.message.get("type") == "chat"
        thread = item.message.find("{jabber:client}thread")
        assert thread is not None and thread.text == "th-1"
        custom = item.message.find("{urn:example:e2e}custom")
        assert custom is not None and custom.get("a") == "b" and custom.text == "x"


async def test_deleted_account_loses_its_archive(server):
    """``jackdaw user del`` removes the archive: an account made again with
    the same name starts with an empty one (and default preferences)."""
    async with users(server, "alice", "bob") as (alice, _bob):
        await set_prefs(alice, "never", always=(BOB,))
        await converse(alice, BOB, ["before deletion"])
        assert (await query_all(alice)).count == 1
    server.stop()
    server.delete_user(ALICE)
    server.add_user(ALICE, PASSWORDS["alice"])
    server.start()
    async with users(server, "alice") as (alice,):
        assert (await query_all(alice)).items == []
        assert (await get_prefs(alice)) == {"default": "always", "always": [], "never": []}


# --- paging ----------------------------------------------------------------------------------


BODIES = [f"m{n}" for n in range(1, 8)]


async def test_paging_forwards_and_backwards(server):
    """Seven messages, pages of three (XEP-0059): forwards with ``<after/>``
    (first index 0, 3, 6; complete only on the last page; count 7 each time),
    the last page with an empty ``<before/>``, and backwards with
    ``<before>first</before>`` down to the first page. An empty archive and
    a page past the end are complete and name no first/last; ``<max>0</max>``
    gives just the count."""
    async with users(server, "alice", "bob") as (alice, _bob):
        nothing = await query(alice)
        assert nothing.items == [] and nothing.complete and nothing.count == 0
        assert nothing.first is None and nothing.last is None
        await converse(alice, BOB, BODIES)

        pages, after = [], None
        while True:
            page = await query(alice, max_results=3, after=after)
            pages.append(page)
            if page.complete:
                break
            after = page.last
            assert len(pages) < 5, "paging does not end"
        assert [p.bodies for p in pages] == [BODIES[0:3], BODIES[3:6], BODIES[6:7]]
        assert [p.first_index for p in pages] == [0, 3, 6]
        assert [p.count for p in pages] == [7, 7, 7]
        assert [p.complete for p in pages] == [False, False, True]
        assert all(p.first == p.ids[0] and p.last == p.ids[-1] for p in pages)
        all_ids = [i for p in pages for i in p.ids]
        assert len(set(all_ids)) == 7

        last = await query(alice, max_results=3, before=True)
        assert last.bodies == BODIES[4:7]
        assert last.first_index == 4 and last.count == 7
        assert not last.complete, "older messages remain before the last page"

        back = await query(alice, max_results=3, before=last.first)
        assert back.bodies == BODIES[1:4]
        assert back.first_index == 1 and not back.complete
        first = await query(alice, max_results=3, before=back.first)
        assert first.bodies == BODIES[0:1]
        assert first.first_index == 0 and first.complete

        # Paging past the end: an empty page that says it is complete.
        empty = await query(alice, max_results=3, after=all_ids[-1])
        assert empty.items == [] and empty.complete and empty.count == 7
        assert empty.first is None and empty.last is None
        # <max>0</max> (XEP-0059 'Getting the Item Count'): no results, just the count.
        count_only = await query(alice, max_results=0)
        assert count_only.items == [] and count_only.count == 7


async def test_slixmpp_iterates_pages(server):
    """slixmpp's own RSM iteration (xep_0313.iterate over xep_0059 pages of
    two) reads the whole archive, following ``<last/>`` and stopping at the
    end from first index + page size = count. (Its ``reverse=True`` applies
    the same forward end test and so stops after the last page; backwards
    paging is checked by test_paging_forwards_and_backwards.)"""
    async with users(server, "alice", "bob") as (alice, _bob):
        await converse(alice, BOB, BODIES)
        mam = alice.xmpp.plugin["xep_0313"]
        forwards = [m["mam_result"]["forwarded"]["stanza"]["body"] async for m in mam.iterate(rsm={"max": 2})]
        assert forwards == BODIES
        with_bob = [m["mam_result"]["forwarded"]["stanza"]["body"] async for m in mam.iterate(with_jid=BOB, total=3)]
        assert with_bob == BODIES[:3]


async def test_page_size_capped_by_max_archive_query_results(make_server):
    """max_archive_query_results = 3: a client asking for 100 (or nothing)
    gets pages of three, marked incomplete."""
    server = make_server(host_options={"max_archive_query_results": 3})
    async with users(server, "alice", "bob") as (alice, _bob):
        await converse(alice, BOB, BODIES)
        for asked in (100, None):
            page = await query(alice, max_results=asked)
            assert page.bodies == BODIES[:3], asked
            assert not page.complete and page.count == 7


async def test_flip_page(server):
    """``<flip-page/>`` (XEP-0313 'Flipped pages'): the same page, newest first; with
    an empty ``<before/>`` that is the newest messages, newest first."""
    async with users(server, "alice", "bob") as (alice, _bob):
        await converse(alice, BOB, BODIES)
        first = await query(alice, max_results=3, flip=True)
        assert first.bodies == ["m3", "m2", "m1"]
        last = await query(alice, max_results=3, before=True, flip=True)
        assert last.bodies == ["m7", "m6", "m5"]
        assert last.count == 7


async def test_unknown_paging_id_is_item_not_found(server):
    """An ``<after/>``/``<before/>`` or after-id/before-id naming no message
    of the archive: item-not-found (XEP-0313 'Requesting pages'). An id from bob's
    archive is unknown in alice's."""
    async with users(server, "alice", ("bob", "laptop")) as (alice, bob):
        await bob.go_online()
        await converse(alice, BOB, ["hello"], bob)
        bobs_id = (await query_all(bob)).ids[0]
        for options in (
            {"after": "no-such-id"},
            {"before": "no-such-id"},
            {"after_id": "no-such-id"},
            {"before_id": "no-such-id"},
            {"after": bobs_id},
        ):
            with pytest.raises(IqError) as error:
                await query(alice, **options)
            assert condition(error.value) == "item-not-found", options


async def test_paging_across_a_server_restart(server):
    """Messages archived before a restart are still there afterwards with the
    same ids: paging continues from an id read before the restart, and new
    messages come after the old ones."""
    async with users(server, "alice", ("bob", "laptop")) as (alice, bob):
        await bob.go_online()
        await converse(alice, BOB, BODIES[:5], bob)
        first_page = await query(alice, max_results=2)
        assert first_page.bodies == BODIES[:2]
        bob_before = await query_all(bob)

    server.restart()

    async with users(server, "alice", "bob") as (alice, bob):
        await converse(alice, BOB, BODIES[5:])
        rest = await query(alice, max_results=3, after=first_page.last)
        assert rest.bodies == BODIES[2:5]
        assert rest.first_index == 2 and rest.count == 7 and not rest.complete
        tail = await query(alice, max_results=3, after=rest.last)
        assert tail.bodies == BODIES[5:] and tail.complete
        again = await query(alice, max_results=2)
        assert again.ids == first_page.ids
        bob_after = await query_all(bob)
        assert bob_after.ids[:5] == bob_before.ids
        assert bob_after.bodies == BODIES


# --- filters ---------------------------------------------------------------------------------


async def test_with_filter_bare_and_full_jid(server):
    """``with`` a bare JID matches every resource of it (both directions);
    ``with`` a full JID only that resource (XEP-0313 'Filtering by JID')."""
    async with users(server, ("alice", "desk"), ("alice", "phone"), ("bob", "laptop"), ("carol", "pc")) as (
        desk,
        phone,
        bob,
        carol,
    ):
        await bob.go_online()
        await converse(desk, BOB, ["desk to bob"], bob)
        await converse(phone, CAROL, ["phone to carol"])
        bob.send_message("alice@localhost/phone", "bob to phone")
        await phone.next_message(BOB, "bob to phone")
        await converse(phone, "bob@localhost/laptop", ["phone to bob's laptop"], bob)

        with_bob = await query_all(desk, with_jid=BOB)
        assert with_bob.bodies == ["desk to bob", "bob to phone", "phone to bob's laptop"]
        assert with_bob.count == 3
        with_carol = await query_all(desk, with_jid=CAROL)
        assert with_carol.bodies == ["phone to carol"]
        laptop = await query_all(desk, with_jid="bob@localhost/laptop")
        assert laptop.bodies == ["bob to phone", "phone to bob's laptop"]

        # In bob's archive, alice's resources are told apart the same way.
        assert (await query_all(bob, with_jid=ALICE)).count == 3
        from_desk = await query_all(bob, with_jid="alice@localhost/desk")
        assert from_desk.bodies == ["desk to bob"]
        assert (await query_all(bob, with_jid=CAROL)).items == []


async def test_start_and_end_filters(server):
    """``start`` and ``end`` bound the archive time (inclusive), using the
    stamps the server reported; slixmpp's datetime formatting works too."""
    async with users(server, "alice", "bob") as (alice, _bob):
        for body in BODIES[:4]:
            await converse(alice, BOB, [body])
            await asyncio.sleep(0.01)
        everything = await query_all(alice)
        stamps = [item.stamp_text for item in everything.items]
        assert len(set(stamps)) == 4, stamps

        assert (await query_all(alice, start=stamps[1])).bodies == BODIES[1:4]
        assert (await query_all(alice, end=stamps[2])).bodies == BODIES[0:3]
        assert (await query_all(alice, start=stamps[1], end=stamps[2])).bodies == BODIES[1:3]

        first = everything.items[0].stamp
        assert (await query_all(alice, start=first - timedelta(hours=1))).count == 4
        assert (await query_all(alice, end=first - timedelta(hours=1))).items == []
        assert (await query_all(alice, start=first + timedelta(hours=1))).items == []


async def test_ids_and_after_before_id_filters(server):
    """The #extended filters: ``ids`` returns exactly those messages (in
    archive order); ``after-id``/``before-id`` bound the result set, which
    RSM then pages (count and index count within the filtered set)."""
    async with users(server, "alice", "bob") as (alice, _bob):
        await converse(alice, BOB, BODIES)
        ids = (await query_all(alice)).ids

        picked = await query_all(alice, ids=[ids[5], ids[1]])
        assert picked.bodies == ["m2", "m6"]

        after = await query_all(alice, after_id=ids[2])
        assert after.bodies == BODIES[3:]
        before = await query_all(alice, before_id=ids[2])
        assert before.bodies == BODIES[:2]
        window = await query_all(alice, after_id=ids[0], before_id=ids[6])
        assert window.bodies == BODIES[1:6] and window.count == 5

        paged = await query(alice, after_id=ids[0], max_results=2, after=ids[2])
        assert paged.bodies == ["m4", "m5"]
        assert paged.count == 6 and paged.first_index == 2


async def test_unknown_id_in_ids_filter_is_item_not_found_regression(server):
    """XEP-0313 'Limiting results by id': "If any UID requested by the client in any of the
    'before-id', 'after-id' or 'ids' form fields is not present in the
    archive, the server MUST return an item-not-found error"."""
    async with users(server, "alice", "bob") as (alice, _bob):
        await converse(alice, BOB, ["known"])
        known = (await query_all(alice)).ids[0]
        for ids in (["no-such-id"], [known, "no-such-id"]):
            with pytest.raises(IqError) as error:
                await query(alice, ids=ids)
            assert condition(error.value) == "item-not-found", ids


async def test_archive_metadata_regression(server):
    """An account advertising urn:xmpp:mam:2#extended answers an iq get of
    ``<metadata/>`` with the first and last archived ids and stamps
    (slixmpp's xep_0313.get_archive_metadata)."""
    async with users(server, "alice", "bob") as (alice, _bob):
        await converse(alice, BOB, ["first", "second", "third"])
        page = await query_all(alice)
        reply = await alice.xmpp.plugin["xep_0313"].get_archive_metadata(timeout=10)
        metadata = reply["mam_metadata"]
        assert metadata["start"]["id"] == page.ids[0]
        assert metadata["end"]["id"] == page.ids[-1]
        assert metadata["start"]["timestamp"] is not None and metadata["end"]["timestamp"] is not None


async def test_bad_queries_are_refused(server):
    """An unknown search field: feature-not-implemented (XEP-0313 'Retrieving form fields'); a
    malformed date, a wrong FORM_TYPE or a non-numeric RSM max: bad-request;
    a malformed ``with``: an error."""
    async with users(server, "alice") as (alice,):
        with pytest.raises(IqError) as error:
            await query(alice, fields={"colour": "red"})
        assert condition(error.value) == "feature-not-implemented"
        with pytest.raises(IqError) as error:
            await query(alice, start="yesterday")
        assert condition(error.value) == "bad-request"
        with pytest.raises(IqError) as error:
            await query(alice, fields={"FORM_TYPE": "urn:xmpp:mam:1"})
        assert condition(error.value) == "bad-request"
        with pytest.raises(IqError) as error:
            await query(alice, max_results="lots")
        assert condition(error.value) == "bad-request"
        with pytest.raises(IqError) as error:
            await query(alice, with_jid="@@not a jid")
        assert condition(error.value) in ("jid-malformed", "bad-request")


async def test_other_users_archive_is_forbidden(server):
    """alice queries bob's archive (iq to bob@localhost) or his preferences:
    forbidden, and nothing of his archive reaches her."""
    async with users(server, "alice", ("bob", "laptop"), "carol") as (alice, bob, carol):
        await bob.go_online()
        await converse(carol, BOB, ["for bob's eyes"], bob)
        with pytest.raises(IqError) as error:
            await query(alice, to=BOB)
        assert condition(error.value) == "forbidden"
        prefs = alice.xmpp.make_iq_get(ito=BOB)
        ET.SubElement(prefs.xml, f"{{{NS_MAM}}}prefs")
        with pytest.raises(IqError) as error:
            await alice.iq(prefs)
        assert condition(error.value) == "forbidden"
        assert alice.received("message", lambda m: m.xml.find(f"{{{NS_MAM}}}result") is not None) == []


# --- preferences -----------------------------------------------------------------------------


async def test_prefs_default_get_set_roundtrip_and_restart(server):
    """Preferences (XEP-0313 v0.6 <prefs/>, as Prosody serves them): the server default is "always" with empty lists;
    what a user sets (full JIDs are kept as bare JIDs) is what the answer and
    every later get show, also after a restart."""
    async with users(server, "alice") as (alice,):
        assert await get_prefs(alice) == {"default": "always", "always": [], "never": []}
        answer = await set_prefs(alice, "roster", always=(CAROL,), never=("bob@localhost/laptop",))
        expected = {"default": "roster", "always": [CAROL], "never": [BOB]}
        assert answer == expected
        assert await get_prefs(alice) == expected

    server.restart()

    async with users(server, "alice") as (alice,):
        assert await get_prefs(alice) == expected
        with pytest.raises(IqError) as error:
            await set_prefs(alice, "sometimes")
        assert condition(error.value) == "bad-request"
        assert await get_prefs(alice) == expected


async def test_prefs_never_list_honoured(server):
    """alice puts bob on her never list: her conversation with bob stays out
    of her archive (both directions, no stanza-id on what she gets), while
    bob's archive keeps it and carol's conversation is archived."""
    async with users(server, ("alice", "desk"), ("bob", "laptop"), "carol") as (alice, bob, carol):
        await alice.go_online()
        await bob.go_online()
        await set_prefs(alice, "always", never=(BOB,))
        await converse(alice, BOB, ["alice to bob"], bob)
        bob.send_message(ALICE, "bob to alice")
        received = await alice.next_message(BOB, "bob to alice")
        assert stanza_ids(received, ALICE) == []
        await converse(carol, ALICE, ["carol to alice"], alice)

        assert (await query_all(alice)).bodies == ["carol to alice"]
        assert (await query_all(bob)).bodies == ["alice to bob", "bob to alice"]


async def test_prefs_default_never_with_always_list(server):
    """default="never" with carol on the always list: only carol's
    conversation is archived."""
    async with users(server, ("alice", "desk"), "bob", "carol") as (alice, bob, carol):
        await alice.go_online()
        await set_prefs(alice, "never", always=(CAROL,))
        await converse(alice, BOB, ["to bob"])
        await converse(alice, CAROL, ["to carol"])
        await converse(carol, ALICE, ["from carol"], alice)
        await converse(bob, ALICE, ["from bob"], alice)
        assert (await query_all(alice)).bodies == ["to carol", "from carol"]


async def test_prefs_roster_mode(server):
    """default="roster": only conversations with JIDs in the user's roster
    are archived (bob is, carol is not); bob's own archive is unaffected."""
    async with users(server, ("alice", "desk"), ("bob", "laptop"), "carol") as (alice, bob, carol):
        await alice.go_online()
        await bob.go_online()
        await alice.roster_set(BOB, name="Bob")
        await set_prefs(alice, "roster")
        await converse(alice, BOB, ["to a contact"], bob)
        await converse(alice, CAROL, ["to a stranger"])
        await converse(carol, ALICE, ["from a stranger"], alice)
        await converse(bob, ALICE, ["from a contact"], alice)
        assert (await query_all(alice)).bodies == ["to a contact", "from a contact"]
        assert (await query_all(carol)).bodies == ["to a stranger", "from a stranger"]


async def test_default_archive_policy_option(make_server):
    """default_archive_policy = false: nothing is archived for users who set
    no preference, and prefs report default "never"; a user who opts in
    ("always") is archived."""
    server = make_server(host_options={"default_archive_policy": False})
    async with users(server, ("alice", "desk"), ("bob", "laptop")) as (alice, bob):
        await bob.go_online()
        assert (await get_prefs(alice))["default"] == "never"
        await converse(alice, BOB, ["not archived"], bob)
        await set_prefs(alice, "always")
        await converse(alice, BOB, ["archived"], bob)
        assert (await query_all(alice)).bodies == ["archived"]
        assert (await query_all(bob)).items == []


async def test_default_archive_policy_roster_option(make_server):
    """default_archive_policy = "roster": the default preference is "roster"
    and only contacts' conversations are archived."""
    server = make_server(host_options={"default_archive_policy": "roster"})
    async with users(server, ("alice", "desk"), "bob", "carol") as (alice, _bob, _carol):
        assert (await get_prefs(alice))["default"] == "roster"
        await alice.roster_set(CAROL)
        await converse(alice, BOB, ["to bob"])
        await converse(alice, CAROL, ["to carol"])
        assert (await query_all(alice)).bodies == ["to carol"]


# --- retention -------------------------------------------------------------------------------


async def test_archive_expiry(make_server):
    """archive_expires_after = 1 (second): messages older than that are
    removed by the sweep that the first archived message after a start
    triggers; the new message stays."""
    server = make_server(host_options={"archive_expires_after": 1})
    async with users(server, "alice", "bob") as (alice, _bob):
        await converse(alice, BOB, ["old one", "old two"])
        assert (await query_all(alice)).count == 2
    await asyncio.sleep(1.5)  # older than archive_expires_after now
    server.restart()
    async with users(server, "alice", "bob") as (alice, bob):
        await converse(alice, BOB, ["new one"])
        deadline = time.monotonic() + 10
        while True:
            page = await query_all(alice)
            if page.bodies == ["new one"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert page.bodies == ["new one"]
        assert (await query_all(bob)).bodies == ["new one"]
    assert "expired archived messages" in server.log_text()


# --- chat rooms ------------------------------------------------------------------------------


def room_users(server, *specs):
    """Clients with the archive and the MUC plugins, online."""
    return logged_in(server, *specs, plugins=MUC_ARCHIVE_PLUGINS)


@pytest.fixture
def muc_server(make_server):
    server = make_server(start=False)
    configure_muc(server)
    server.start()
    return server


async def test_room_messages_not_in_user_archive(muc_server):
    """Groupchat messages (sent to a room and reflected back) are not put in
    the user archives (XEP-0313 'User Archives' leaves it to the server; Jackdaw keeps
    rooms out), and the user's archive stays usable around them."""
    room = room_jid("lounge")
    async with room_users(muc_server, ("alice", "desk"), ("bob", "laptop")) as (alice, bob):
        await alice.go_online()
        await bob.go_online()
        await create_room(alice, room, "Alice")
        await join(bob, room, "Bob")
        await next_presence_from(alice, f"{room}/Bob")
        alice.send_message(room, "hello room", mtype="groupchat")
        for client in (alice, bob):
            await next_groupchat(client, f"{room}/Alice", "hello room")
        await converse(alice, BOB, ["direct"], bob)
        assert (await query_all(alice)).bodies == ["direct"]
        assert (await query_all(bob)).bodies == ["direct"]


async def test_room_private_messages_archived_both_ways_regression(muc_server):
    """A private conversation through a room (type chat to room/nick, XEP-0045
    'Sending a Private Message') is chat with a body: the user's archive keeps both what they sent
    and what they received (XEP-0313 'User Archives'), under ``with`` = room/nick."""
    room = room_jid("corridor")
    async with room_users(muc_server, ("alice", "desk"), ("bob", "laptop")) as (alice, bob):
        await alice.go_online()
        await bob.go_online()
        await create_room(alice, room, "Alice")
        await join(bob, room, "Bob")
        await next_presence_from(alice, f"{room}/Bob")
        bob.send_message(f"{room}/Alice", "psst alice")
        await alice.next_message(f"{room}/Bob", "psst alice")
        alice.send_message(f"{room}/Bob", "yes bob?")
        await bob.next_message(f"{room}/Alice", "yes bob?")
        mine = await query_all(alice, with_jid=f"{room}/Bob")
        assert mine.bodies == ["psst alice", "yes bob?"]
        theirs = await query_all(bob, with_jid=f"{room}/Alice")
        assert theirs.bodies == ["psst alice", "yes bob?"]


# --- room archives (XEP-0313 on the room JID) -------------------------------------------------


async def test_room_archive_query_with_paging_and_stanza_ids(muc_server):
    """Groupchat messages with a body go into the room's own archive: every
    occupant's copy carries a stanza-id by the room JID, and a query to the
    room JID returns them in order, with the occupant JID as sender, paged
    with RSM, ids matching the stanza-ids; the room advertises urn:xmpp:mam:2."""
    room = room_jid("archived")
    async with room_users(muc_server, ("alice", "desk"), ("bob", "laptop")) as (alice, bob):
        await alice.go_online()
        await bob.go_online()
        await create_room(alice, room, "Alice")
        await join(bob, room, "Bob")
        await next_presence_from(alice, f"{room}/Bob")
        stamped = []
        for n in range(5):
            sender, nick = (alice, "Alice") if n % 2 == 0 else (bob, "Bob")
            sender.send_message(room, f"room line {n}", mtype="groupchat")
            copy = await next_groupchat(bob, f"{room}/{nick}", f"room line {n}")
            ids = stanza_ids(copy, by=room)
            assert len(ids) == 1, f"expected one stanza-id by the room: {describe(copy)}"
            stamped.append(ids[0])
        info = await bob.xmpp.plugin["xep_0030"].get_info(jid=room)
        assert "urn:xmpp:mam:2" in info["disco_info"]["features"]

        first = await query(bob, to=room, max_results=3)
        assert first.bodies == ["room line 0", "room line 1", "room line 2"]
        assert first.ids == stamped[:3]
        assert not first.complete and first.count == 5
        assert [item.message.get("from") for item in first.items][:2] == [f"{room}/Alice", f"{room}/Bob"]
        rest = await query(bob, to=room, max_results=3, after=first.last)
        assert rest.bodies == ["room line 3", "room line 4"] and rest.complete
        last = await query(bob, to=room, max_results=2, before=True)
        assert last.ids == stamped[3:]
        # A user archive stays out of it.
        assert (await query_all(alice)).bodies == []


async def test_room_archive_survives_restart_and_members_only_is_guarded(make_server):
    """A persistent members-only room's archive answers its members after a
    server restart and refuses a non-member (forbidden)."""
    server = make_server(start=False)
    configure_muc(server)
    server.start()
    room = room_jid("private-club")
    async with room_users(server, ("alice", "desk")) as (alice,):
        await alice.go_online()
        await create_room(
            alice,
            room,
            "Alice",
            config={"muc#roomconfig_persistentroom": True, "muc#roomconfig_membersonly": True},
        )
        alice.send_message(room, "members only history", mtype="groupchat")
        await next_groupchat(alice, f"{room}/Alice", "members only history")
    server.restart()
    async with room_users(server, ("alice", "desk"), ("carol", "pc")) as (alice, carol):
        page = await query_all(alice, to=room)
        assert page.bodies == ["members only history"]
        with pytest.raises(IqError) as refused:
            await query(carol, to=room)
        assert refused.value.iq["error"]["condition"] == "forbidden"
