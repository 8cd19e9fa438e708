"""Multi-user chat (XEP-0045, issue 7): the ``rooms.localhost`` component
(``module = "muc"``) driven by alice, bob and carol with slixmpp's
``xep_0045`` plugin and XEP-0004 forms, as their chat clients would.

Jackdaw's side of the contract, as these tests read it:

* ``[components."rooms.localhost"]`` with ``module = "muc"``; options
  ``muc_history_length`` (20, the default of muc#roomconfig_historylength),
  ``muc_max_history_length`` (50), ``muc_room_default_persistent`` (false),
  ``muc_room_default_public`` (true), ``muc_room_locking`` (true: a new room
  is locked, ``item-not-found`` for others, until the owner submits the
  configuration form, instant or full, §10.1).
* Joining (§7.2): the occupants already there, then the newcomer's own
  presence (110; 201 when it created the room; 100 when the room shows real
  JIDs to everyone), then the history with a XEP-0203 delay from the room,
  then the subject; real JIDs only to moderators in semi-anonymous rooms.
  Refusals are presence errors from the occupant JID carrying the MUC
  ``<x/>``: locked ``item-not-found``, banned ``forbidden``, members-only
  ``registration-required``, password ``not-authorized``, full
  ``service-unavailable``, nick taken ``conflict``.
* Groupchat fan-out from room/nick, private messages, subject, nick changes
  (303), presence updates and sessions ending, the muc#admin and muc#owner
  IQs (kick 307, ban 301, voice, affiliations and their lists with
  not-allowed / conflict / forbidden where §8-§10 say so, configuration with
  104 / 172 / 173 / 322 notices, destroy), mediated invitations and declines,
  allowinvites, direct invitations (XEP-0249), persistence across restarts,
  332 at shutdown, disco, self-ping (XEP-0410) and occupants from another
  virtual host.

Every join goes through ``harness.muc.join``, which also checks the order of
what the room sends (occupants, self-presence, history, subject).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError

from harness import jid_of
from harness.client import Client
from harness.muc import (
    MUC,
    NS_MUC,
    NS_MUC_USER,
    NS_ROOMCONFIG,
    OTHER_HOST,
    STANDARD_CONFIG_FIELDS,
    Joined,
    affiliation_list,
    configure,
    configure_muc,
    create_room,
    delay_from,
    destroy_of,
    disco_info,
    disco_items,
    error_of,
    features,
    identities,
    identity_names,
    iq_error,
    join,
    join_refused,
    leave,
    muc,
    muc_client,
    muc_item,
    muc_users,
    next_error,
    next_from_room,
    next_groupchat,
    next_presence_from,
    next_subject,
    ping,
    room_config_form,
    room_jid,
    set_affiliation,
    set_role,
    status_codes,
    subject_of,
    submit_instant,
    user_x,
)
from harness.server import JackdawServer

ALICE, BOB, CAROL = jid_of("alice"), jid_of("bob"), jid_of("carol")
DAVE = f"dave@{OTHER_HOST}"
DAVE_PASSWORD = "dave-Secret-4"


# --- fixtures ------------------------------------------------------------------


@pytest.fixture
def make_muc_server(make_server: Callable[..., JackdawServer]) -> Callable[..., JackdawServer]:
    """``make_muc_server(muc_options={...}, hosts={...}, extra_users={jid: password})``:
    a running server with the MUC component ``rooms.localhost``."""

    def make(
        muc_options: dict[str, Any] | None = None,
        hosts: dict[str, dict[str, Any]] | None = None,
        extra_users: dict[str, str] | None = None,
    ) -> JackdawServer:
        server = make_server(start=False)
        configure_muc(server, muc_options, hosts)
        for jid, password in (extra_users or {}).items():
            server.add_user(jid, password)
        server.start()
        return server

    return make


@pytest.fixture
def server(make_muc_server: Callable[..., JackdawServer]) -> JackdawServer:  # noqa: F811 - shadows conftest's
    return make_muc_server()


# --- helpers ---------------------------------------------------------------------


async def populate(
    room: str, owner: tuple[Client, str], *others: tuple[Client, str], config: dict[str, Any] | None = None
) -> list[Joined]:
    """``owner`` creates ``room`` (instant, or configured with ``config``),
    then ``others`` join in order; every occupant's presence of each newcomer
    is taken from their inboxes, so they start clean."""
    joins = [await create_room(owner[0], room, owner[1], config)]
    inside = [owner]
    for client, nick in others:
        joins.append(await join(client, room, nick))
        for occupant, _ in inside:
            await next_presence_from(occupant, f"{room}/{nick}")
        inside.append((client, nick))
    return joins


async def say(sender: Client, room: str, nick: str, body: str, *receivers: Client) -> None:
    """``sender`` (``nick`` in ``room``) posts ``body``; the room reflects it to
    the sender and every one of ``receivers``."""
    sender.send_message(room, body, mtype="groupchat")
    for client in (sender, *receivers):
        await next_groupchat(client, f"{room}/{nick}", body)


def invite_of(message: Any) -> dict[str, Any] | None:
    x = user_x(message)
    invite = x.find(f"{{{NS_MUC_USER}}}invite") if x is not None else None
    if invite is None:
        return None
    reason = invite.find(f"{{{NS_MUC_USER}}}reason")
    return {"from": invite.get("from"), "reason": reason.text if reason is not None else None}


def field_value(form: Any, var: str) -> Any:
    return form.get_fields()[var]["value"]


# --- the service -----------------------------------------------------------------


async def test_service_is_a_text_conference_service(server):
    """disco#info of rooms.localhost: identity conference/text and the MUC feature."""
    async with muc_users(server, "alice") as (alice,):
        info = await disco_info(alice, MUC)
        assert ("conference", "text") in identities(info), info
        assert NS_MUC in features(info), info


# --- creating and configuring rooms ------------------------------------------------------


async def test_new_room_is_locked_until_the_owner_accepts_the_instant_configuration(server):
    """§10.1: alice's first presence creates the room (201 + 110, owner and
    moderator); bob gets item-not-found until alice submits the empty form."""
    room = room_jid("coven")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        created = await join(alice, room, "Alice")
        assert {110, 201} <= created.codes, created.presence
        assert created.item["affiliation"] == "owner" and created.item["role"] == "moderator", created.presence
        assert created.occupants == [] and created.history == []
        assert subject_of(created.subject) == "", created.subject

        refused = await join_refused(bob, room, "Bob")
        assert (refused.type, refused.condition) == ("cancel", "item-not-found"), refused.presence

        await submit_instant(alice, room)
        joined = await join(bob, room, "Bob")
        assert 110 in joined.codes and 201 not in joined.codes, joined.presence
        assert joined.occupant_nicks == ["Alice"]
        arrival = await next_presence_from(alice, f"{room}/Bob")
        assert muc_item(arrival)["role"] == "participant", arrival


async def test_reserved_room_configuration_form_and_persistent_room(server):
    """§10.1.3: alice asks for the configuration form of her new room, gets
    every standard field with the service's defaults, submits a persistent,
    public, named room; bob can then join, disco shows the configuration, and
    the room outlives its occupants."""
    room = room_jid("council")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        created = await join(alice, room, "Alice")
        assert 201 in created.codes

        form = await room_config_form(alice, room)
        assert form["type"] == "form", form
        fields = form.get_fields()
        assert field_value(form, "FORM_TYPE") in ([NS_ROOMCONFIG], NS_ROOMCONFIG), fields.get("FORM_TYPE")
        missing = [var for var in STANDARD_CONFIG_FIELDS if var not in fields]
        assert not missing, f"fields missing from the configuration form: {missing}\n{form}"
        for name in ("persistentroom", "publicroom", "membersonly", "moderatedroom", "passwordprotectedroom"):
            assert fields[f"muc#roomconfig_{name}"]["type"] == "boolean", fields[f"muc#roomconfig_{name}"]
        whois = {option["value"] for option in fields["muc#roomconfig_whois"].get_options()}
        assert {"moderators", "anyone"} <= whois, fields["muc#roomconfig_whois"]
        # The service defaults: temporary, public, 20 messages of history.
        assert field_value(form, "muc#roomconfig_persistentroom") is False, fields["muc#roomconfig_persistentroom"]
        assert field_value(form, "muc#roomconfig_publicroom") is True, fields["muc#roomconfig_publicroom"]
        assert str(field_value(form, "muc#roomconfig_historylength")) == "20", fields["muc#roomconfig_historylength"]

        # Locked until the form is submitted.
        assert (await join_refused(bob, room, "Bob")).condition == "item-not-found"

        await configure(
            alice,
            room,
            {
                "roomname": "Council of Elders",
                "roomdesc": "Where the elders meet",
                "persistentroom": True,
                "publicroom": True,
                "whois": "anyone",
            },
        )
        joined = await join(bob, room, "Bob")
        assert 201 not in joined.codes and 110 in joined.codes, joined.presence

        info = await disco_info(bob, room)
        assert ("conference", "text") in identities(info), info
        assert "Council of Elders" in identity_names(info), info
        assert {NS_MUC, "muc_persistent", "muc_public", "muc_nonanonymous"} <= features(info), info
        assert not {"muc_temporary", "muc_hidden", "muc_semianonymous"} & features(info), info

        again = await room_config_form(alice, room)
        assert field_value(again, "muc#roomconfig_roomname") == "Council of Elders", again
        assert field_value(again, "muc#roomconfig_roomdesc") == "Where the elders meet", again
        assert field_value(again, "muc#roomconfig_persistentroom") is True, again
        assert field_value(again, "muc#roomconfig_whois") == "anyone", again

        await leave(bob, room, "Bob")
        await leave(alice, room, "Alice")
        # Persistent: still there with nobody inside, and listed.
        info = await disco_info(bob, room)
        assert "Council of Elders" in identity_names(info), info
        items = await disco_items(bob, MUC)
        assert room in items, items
        assert items[room] == "Council of Elders", items
        rejoined = await join(alice, room, "Alice")
        assert 201 not in rejoined.codes and rejoined.item["affiliation"] == "owner", rejoined.presence


async def test_service_options_locking_visibility_persistence_and_history(make_muc_server):
    """muc_room_locking = false: a new room is usable at once;
    muc_room_default_public = false and muc_room_default_persistent = true
    are the new room's configuration (hidden from disco#items, kept when
    empty); muc_history_length is the form's default history length."""
    server = make_muc_server(
        muc_options={
            "muc_room_locking": False,
            "muc_room_default_public": False,
            "muc_room_default_persistent": True,
            "muc_history_length": 2,
        }
    )
    room = room_jid("backroom")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        created = await join(alice, room, "Alice")
        assert 201 in created.codes
        joined = await join(bob, room, "Bob")  # no configuration submitted
        assert 110 in joined.codes and joined.occupant_nicks == ["Alice"]

        form = await room_config_form(alice, room)
        assert field_value(form, "muc#roomconfig_publicroom") is False, form
        assert field_value(form, "muc#roomconfig_persistentroom") is True, form
        assert str(field_value(form, "muc#roomconfig_historylength")) == "2", form

        for body in ("one", "two", "three"):
            await say(alice, room, "Alice", body, bob)
        await leave(bob, room, "Bob")
        rejoined = await join(bob, room, "Bob")
        assert [m["body"] for m in rejoined.history] == ["two", "three"], rejoined.stanzas

        await leave(bob, room, "Bob")
        await leave(alice, room, "Alice")
        info = await disco_info(alice, room)
        assert {"muc_persistent", "muc_hidden"} <= features(info), info
        assert room not in await disco_items(alice, MUC)


# --- joining and leaving --------------------------------------------------------------


async def test_join_presence_order_roles_and_real_jids_in_semi_anonymous_room(server):
    """§7.2.3: the newcomer gets the occupants already there, then its own
    presence (110) last; everyone gets the newcomer's presence. In a
    semi-anonymous room only moderators see real JIDs."""
    room = room_jid("hall")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await create_room(alice, room, "Alice", {"whois": "moderators"})

        bob_join = await join(bob, room, "Bob")
        assert bob_join.occupant_nicks == ["Alice"]
        alice_item = muc_item(bob_join.occupant("Alice"))
        assert (alice_item["affiliation"], alice_item["role"]) == ("owner", "moderator"), alice_item
        assert "jid" not in alice_item, f"a participant sees a real JID in a semi-anonymous room: {alice_item}"
        assert status_codes(bob_join.occupant("Alice")) & {110} == set()
        assert 110 in bob_join.codes and not {100, 201} & bob_join.codes, bob_join.presence
        assert (bob_join.item["affiliation"], bob_join.item["role"]) == ("none", "participant"), bob_join.presence

        bob_seen_by_alice = await next_presence_from(alice, f"{room}/Bob")
        assert 110 not in status_codes(bob_seen_by_alice)
        bob_item = muc_item(bob_seen_by_alice)
        assert JID(bob_item.get("jid", "")).bare == BOB, f"the moderator should see bob's real JID: {bob_item}"
        assert str(JID(bob_item["jid"])) == str(bob.jid), bob_item
        assert bob_item["role"] == "participant"

        carol_join = await join(carol, room, "Carol")
        assert sorted(carol_join.occupant_nicks) == ["Alice", "Bob"], carol_join.stanzas
        assert all("jid" not in muc_item(presence) for presence in carol_join.occupants), carol_join.stanzas
        carol_seen_by_alice = await next_presence_from(alice, f"{room}/Carol")
        assert JID(muc_item(carol_seen_by_alice).get("jid", "")).bare == CAROL, carol_seen_by_alice
        carol_seen_by_bob = await next_presence_from(bob, f"{room}/Carol")
        assert "jid" not in muc_item(carol_seen_by_bob), carol_seen_by_bob


async def test_non_anonymous_room_shows_real_jids_to_everyone_with_status_100(server):
    """whois = anyone: every occupant sees real JIDs, and the self-presence
    carries 100 (§7.2.4) besides 110."""
    room = room_jid("openhouse")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await create_room(alice, room, "Alice", {"whois": "anyone"})
        bob_join = await join(bob, room, "Bob")
        assert {100, 110} <= bob_join.codes, bob_join.presence
        assert JID(muc_item(bob_join.occupant("Alice")).get("jid", "")).bare == ALICE, bob_join.occupants
        await next_presence_from(alice, f"{room}/Bob")

        carol_join = await join(carol, room, "Carol")
        assert {100, 110} <= carol_join.codes, carol_join.presence
        jids = {p["from"].resource: JID(muc_item(p).get("jid", "")).bare for p in carol_join.occupants}
        assert jids == {"Alice": ALICE, "Bob": BOB}, carol_join.occupants
        carol_seen_by_bob = await next_presence_from(bob, f"{room}/Carol")
        assert JID(muc_item(carol_seen_by_bob).get("jid", "")).bare == CAROL, carol_seen_by_bob


async def test_leaving_sends_unavailable_to_the_leaver_with_110_and_to_everyone(server):
    """§7.14: bob leaves; he gets his own unavailable presence with 110, alice
    and carol get it without; a message he sends afterwards is refused."""
    room = room_jid("parlour")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await populate(room, (alice, "Alice"), (bob, "Bob"), (carol, "Carol"))

        own = await leave(bob, room, "Bob")
        assert 110 in status_codes(own), own
        assert muc_item(own)["role"] == "none", own
        for other in (alice, carol):
            seen = await next_presence_from(other, f"{room}/Bob", "unavailable")
            assert 110 not in status_codes(seen), seen
            assert muc_item(seen)["role"] == "none", seen

        bob.send_message(room, "am I still here?", mtype="groupchat")
        error = await next_error(bob, "message", room)
        assert error_of(error)[1] == "not-acceptable", error
        await say(alice, room, "Alice", "marker", carol)
        assert not alice.received("message", lambda m: m["body"] == "am I still here?")


async def test_temporary_room_disappears_when_the_last_occupant_leaves(server):
    """A temporary room is destroyed with its last occupant: disco#info gives
    item-not-found and the next join creates it anew (201)."""
    room = room_jid("popup")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        await populate(room, (alice, "Alice"), (bob, "Bob"))
        assert "muc_temporary" in features(await disco_info(bob, room))
        await leave(bob, room, "Bob")
        await leave(alice, room, "Alice")

        error = await iq_error(disco_info(bob, room))
        assert error_of(error)[1] == "item-not-found", error
        again = await join(bob, room, "Bob")
        assert 201 in again.codes and again.item["affiliation"] == "owner", again.presence


# --- messages -------------------------------------------------------------------


async def test_groupchat_message_reaches_every_occupant(server):
    """§7.4: a groupchat message to the room reaches every occupant, the
    sender included, from room/nick; a non-occupant's gets not-acceptable."""
    room = room_jid("square")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await populate(room, (alice, "Alice"), (bob, "Bob"))

        carol.send_message(room, "let me in", mtype="groupchat")
        error = await next_error(carol, "message", room)
        assert error_of(error)[1] == "not-acceptable", error

        await join(carol, room, "Carol")
        await next_presence_from(alice, f"{room}/Carol")
        await next_presence_from(bob, f"{room}/Carol")

        alice.send_message(room, "hello everyone", mtype="groupchat")
        for client in (alice, bob, carol):
            message = await next_groupchat(client, f"{room}/Alice", "hello everyone")
            assert message["type"] == "groupchat"
            assert message["to"].bare == client.jid.bare
        await say(bob, room, "Bob", "hi alice", alice, carol)
        await say(carol, room, "Carol", "hi both", alice, bob)
        for client in (alice, bob):
            assert not client.received("message", lambda m: m["body"] == "let me in")


async def test_private_message_between_occupants(server):
    """§7.5: a chat message to room/nick reaches only that occupant, from the
    sender's occupant JID; to a nick nobody has: item-not-found."""
    room = room_jid("corridor")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await populate(room, (alice, "Alice"), (bob, "Bob"), (carol, "Carol"), config={"whois": "moderators"})

        bob.send_message(f"{room}/Carol", "psst, carol")
        whisper = await carol.next_message(f"{room}/Bob", "psst, carol")
        assert str(whisper["from"]) == f"{room}/Bob", whisper
        assert whisper["type"] == "chat", whisper

        carol.send_message(f"{room}/Bob", "yes, bob?")
        answer = await bob.next_message(f"{room}/Carol", "yes, bob?")
        assert str(answer["from"]) == f"{room}/Carol", answer

        bob.send_message(f"{room}/Nobody", "anyone?")
        error = await next_error(bob, "message", f"{room}/Nobody")
        assert error_of(error)[1] == "item-not-found", error

        await say(bob, room, "Bob", "marker", alice, carol)
        assert not alice.received("message", lambda m: m["body"] in ("psst, carol", "yes, bob?", "anyone?"))


async def test_history_sent_on_join_with_delay_from_the_room(server):
    """§7.2.14: a newcomer gets the recent messages after its self-presence and
    before the subject, each from room/nick with a delay from the room;
    maxstanzas limits them and maxchars = 0 means none."""
    room = room_jid("chronicle")
    bodies = ["first", "second", "third"]
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await create_room(alice, room, "Alice")
        started = datetime.now(timezone.utc) - timedelta(seconds=2)
        for body in bodies:
            await say(alice, room, "Alice", body)

        bob_join = await join(bob, room, "Bob")
        assert [m["body"] for m in bob_join.history] == bodies, bob_join.stanzas
        stamps = []
        for message in bob_join.history:
            assert message["type"] == "groupchat", message
            assert str(message["from"]) == f"{room}/Alice", message
            assert delay_from(message) == room, f"history needs a delay from the room (XEP-0203): {message}"
            stamps.append(message["delay"]["stamp"])
        assert stamps == sorted(stamps), stamps
        assert all(started <= stamp <= datetime.now(timezone.utc) + timedelta(seconds=2) for stamp in stamps), stamps
        await next_presence_from(alice, f"{room}/Bob")

        carol_join = await join(carol, room, "Carol", maxstanzas=2)
        assert [m["body"] for m in carol_join.history] == bodies[-2:], carol_join.stanzas
        await leave(carol, room, "Carol")

        carol_join = await join(carol, room, "Carol", maxchars=0)
        assert carol_join.history == [], carol_join.stanzas


async def test_history_since_and_seconds(server):
    """§7.2.14: ``since`` and ``seconds`` pick the messages after a moment."""
    room = room_jid("annals")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        await create_room(alice, room, "Alice")
        # Two seconds either side of the boundary: delay stamps have whole seconds.
        await say(alice, room, "Alice", "old news")
        await asyncio.sleep(2.2)
        boundary = datetime.now(timezone.utc)
        await asyncio.sleep(2.2)
        await say(alice, room, "Alice", "news one")
        await say(alice, room, "Alice", "news two")

        joined = await join(bob, room, "Bob", since=boundary)
        assert [m["body"] for m in joined.history] == ["news one", "news two"], joined.stanzas
        await leave(bob, room, "Bob")

        # Whole seconds reaching back past the boundary but not to "old news".
        seconds = math.ceil((datetime.now(timezone.utc) - boundary).total_seconds())
        joined = await join(bob, room, "Bob", seconds=seconds)
        assert [m["body"] for m in joined.history] == ["news one", "news two"], joined.stanzas
        await leave(bob, room, "Bob")

        joined = await join(bob, room, "Bob", maxstanzas=10)
        assert [m["body"] for m in joined.history] == ["old news", "news one", "news two"], joined.stanzas


async def test_history_length_from_service_option_and_room_configuration(make_muc_server):
    """muc_history_length is the default room history; the room's
    muc#roomconfig_historylength overrides it."""
    server = make_muc_server(muc_options={"muc_history_length": 3})
    room = room_jid("ledger")
    bodies = [f"entry {i}" for i in range(1, 6)]
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await create_room(alice, room, "Alice")
        for body in bodies:
            await say(alice, room, "Alice", body)
        joined = await join(bob, room, "Bob")
        assert [m["body"] for m in joined.history] == bodies[-3:], joined.stanzas

        await configure(alice, room, {"historylength": 1})
        joined = await join(carol, room, "Carol")
        assert [m["body"] for m in joined.history] == bodies[-1:], joined.stanzas


async def test_subject_set_by_moderator_shown_to_newcomers_and_refused_to_participants(server):
    """§8.1: the subject is empty at first; alice (moderator) sets it, every
    occupant gets it from room/Alice and newcomers get it after the history;
    bob (participant) gets forbidden unless changesubject allows it."""
    room = room_jid("agenda")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await create_room(alice, room, "Alice", {"changesubject": False})
        bob_join = await join(bob, room, "Bob")
        assert subject_of(bob_join.subject) == "", bob_join.subject
        await next_presence_from(alice, f"{room}/Bob")

        muc(alice).set_subject(room, "Potions and their uses")
        for client in (alice, bob):
            await next_subject(client, f"{room}/Alice", "Potions and their uses")

        await say(alice, room, "Alice", "welcome", bob)
        carol_join = await join(carol, room, "Carol")
        assert subject_of(carol_join.subject) == "Potions and their uses", carol_join.subject
        assert carol_join.subject["from"].bare == room, carol_join.subject
        assert [m["body"] for m in carol_join.history] == ["welcome"], carol_join.stanzas
        for client in (alice, bob):
            await next_presence_from(client, f"{room}/Carol")

        muc(bob).set_subject(room, "Bob's subject")
        error = await next_error(bob, "message", room)
        assert error_of(error)[1] == "forbidden", error
        await say(alice, room, "Alice", "marker", bob, carol)
        for client in (alice, carol):
            assert not client.received("message", lambda m: subject_of(m) == "Bob's subject")

        await configure(alice, room, {"changesubject": True})
        muc(bob).set_subject(room, "Bob's subject")
        for client in (alice, bob, carol):
            await next_subject(client, f"{room}/Bob", "Bob's subject")


# --- nicknames -----------------------------------------------------------------------


async def test_nickname_change(server):
    """§7.6: bob becomes Robert: everyone gets unavailable from room/Bob with
    303 and the new nick, then available from room/Robert; bob's own carry 110."""
    room = room_jid("tavern")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await populate(room, (alice, "Alice"), (bob, "Bob"), (carol, "Carol"))

        new_nick = await muc(bob).set_self_nick(JID(room), "Robert", timeout=5)
        assert new_nick == "Robert"
        for client in (alice, bob, carol):
            gone = await next_from_room(client, room)
            came = await next_from_room(client, room)
            assert str(gone["from"]) == f"{room}/Bob" and gone.xml.get("type") == "unavailable", gone
            assert 303 in status_codes(gone), gone
            assert muc_item(gone).get("nick") == "Robert", gone
            assert str(came["from"]) == f"{room}/Robert" and came.xml.get("type") is None, came
            is_bob = client is bob
            assert (110 in status_codes(gone)) == is_bob and (110 in status_codes(came)) == is_bob, (gone, came)

        await say(bob, room, "Robert", "call me Robert", alice, carol)


async def test_nickname_conflict(server):
    """§7.2.9 / §7.6: a nick already in use gives conflict, on joining and on
    changing; bob keeps his nick after the refused change."""
    room = room_jid("inn")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await populate(room, (alice, "Alice"), (bob, "Bob"))

        refused = await join_refused(carol, room, "Bob")
        assert (refused.type, refused.condition) == ("cancel", "conflict"), refused.presence

        bob.send_presence(pto=f"{room}/Alice")
        error = await next_error(bob, "presence", f"{room}/Alice")
        assert error_of(error) == ("cancel", "conflict"), error

        await say(bob, room, "Bob", "still Bob", alice)
        assert not alice.received("presence", lambda p: p["from"].bare == room), alice.inbox


# --- moderation ---------------------------------------------------------------------------


async def test_kick(server):
    """§8.2: a participant cannot kick (forbidden); alice kicks bob: bob gets
    unavailable with 307 and the reason, everyone else 307 too; bob may
    come back."""
    room = room_jid("arena")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await populate(room, (alice, "Alice"), (bob, "Bob"), (carol, "Carol"))

        error = await iq_error(set_role(bob, room, "Carol", "none"))
        assert error_of(error)[1] == "forbidden", error

        await set_role(alice, room, "Bob", "none", reason="Too loud")
        kicked = await next_presence_from(bob, f"{room}/Bob", "unavailable", {307})
        item = muc_item(kicked)
        assert item["role"] == "none" and item["reason"] == "Too loud", kicked
        for other in (alice, carol):
            seen = await next_presence_from(other, f"{room}/Bob", "unavailable", {307})
            assert muc_item(seen)["role"] == "none", seen

        bob.send_message(room, "still here?", mtype="groupchat")
        assert error_of(await next_error(bob, "message", room))[1] == "not-acceptable"

        back = await join(bob, room, "Bob")
        assert 110 in back.codes


async def test_ban_outcast_cannot_rejoin(server):
    """§9.1: alice bans bob: 301 to him and to everyone, he is on the outcast
    list and gets forbidden when he tries to come back, under any nick, until
    the ban is lifted; a participant cannot ban."""
    room = room_jid("fortress")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await populate(room, (alice, "Alice"), (bob, "Bob"), (carol, "Carol"))

        error = await iq_error(set_affiliation(carol, room, BOB, "outcast"))
        assert error_of(error)[1] == "forbidden", error

        await set_affiliation(alice, room, BOB, "outcast", reason="Treason")
        banned = await next_presence_from(bob, f"{room}/Bob", "unavailable", {301})
        item = muc_item(banned)
        assert (item["affiliation"], item["role"]) == ("outcast", "none"), banned
        assert item["reason"] == "Treason", banned
        for other in (alice, carol):
            seen = await next_presence_from(other, f"{room}/Bob", "unavailable", {301})
            assert muc_item(seen)["affiliation"] == "outcast", seen

        assert await affiliation_list(alice, room, "outcast") == [BOB]
        for nick in ("Bob", "NotBob"):
            refused = await join_refused(bob, room, nick)
            assert (refused.type, refused.condition) == ("auth", "forbidden"), refused.presence

        await set_affiliation(alice, room, BOB, "none")
        assert await affiliation_list(alice, room, "outcast") == []
        assert 110 in (await join(bob, room, "Bob")).codes


async def test_moderated_room_visitors_need_voice(server):
    """§8.3/§8.4: in a moderated room bob joins as a visitor and his
    groupchat message is refused (forbidden); alice grants voice, bob
    speaks; alice revokes it."""
    room = room_jid("lecture")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        await create_room(alice, room, "Alice", {"moderatedroom": True})
        joined = await join(bob, room, "Bob")
        assert joined.item["role"] == "visitor", joined.presence
        await next_presence_from(alice, f"{room}/Bob")

        bob.send_message(room, "may I speak?", mtype="groupchat")
        error = await next_error(bob, "message", room)
        assert error_of(error)[1] == "forbidden", error

        await set_role(alice, room, "Bob", "participant", reason="Go ahead")
        for client in (alice, bob):
            voiced = await next_presence_from(client, f"{room}/Bob")
            assert muc_item(voiced)["role"] == "participant", voiced
        await say(bob, room, "Bob", "thank you", alice)
        assert not alice.received("message", lambda m: m["body"] == "may I speak?")

        await set_role(alice, room, "Bob", "visitor")
        for client in (alice, bob):
            silenced = await next_presence_from(client, f"{room}/Bob")
            assert muc_item(silenced)["role"] == "visitor", silenced


async def test_affiliations_admin_member_owner_and_their_lists(server):
    """§9/§10: alice makes bob admin (he becomes moderator), bob makes carol
    a member, alice makes her owner; each change is broadcast and shows in
    the lists; a mere participant may not read the ban list."""
    room = room_jid("guild")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await populate(room, (alice, "Alice"), (bob, "Bob"), (carol, "Carol"))

        error = await iq_error(affiliation_list(carol, room, "outcast"))
        assert error_of(error)[1] == "forbidden", error

        await set_affiliation(alice, room, BOB, "admin")
        for client in (alice, bob, carol):
            promoted = await next_presence_from(client, f"{room}/Bob")
            item = muc_item(promoted)
            assert (item["affiliation"], item["role"]) == ("admin", "moderator"), promoted
        assert await affiliation_list(alice, room, "admin") == [BOB]
        assert await affiliation_list(alice, room, "owner") == [ALICE]

        await set_affiliation(bob, room, CAROL, "member")
        for client in (alice, bob, carol):
            member = await next_presence_from(client, f"{room}/Carol")
            assert muc_item(member)["affiliation"] == "member", member
        assert await affiliation_list(bob, room, "member") == [CAROL]

        await set_affiliation(alice, room, CAROL, "owner")
        for client in (alice, bob, carol):
            owner = await next_presence_from(client, f"{room}/Carol")
            assert muc_item(owner)["affiliation"] == "owner", owner
        assert await affiliation_list(alice, room, "owner") == [ALICE, CAROL]
        assert await affiliation_list(alice, room, "member") == []


async def test_admin_cannot_kick_or_ban_an_owner_nor_ban_himself(server):
    """§8.2 / §9.1: bob, admin, gets not-allowed when he kicks or bans alice,
    the owner, and conflict when he bans himself; nothing changes."""
    room = room_jid("chapter")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        await populate(room, (alice, "Alice"), (bob, "Bob"))
        await set_affiliation(alice, room, BOB, "admin")

        error = await iq_error(set_role(bob, room, "Alice", "none"))
        assert error_of(error)[1] == "not-allowed", error
        error = await iq_error(set_affiliation(bob, room, ALICE, "outcast"))
        assert error_of(error)[1] == "not-allowed", error
        error = await iq_error(set_affiliation(bob, room, BOB, "outcast"))
        assert error_of(error)[1] == "conflict", error
        assert await affiliation_list(alice, room, "outcast") == []
        assert await affiliation_list(alice, room, "owner") == [ALICE]


# --- access control -----------------------------------------------------------------------


async def test_members_only_room(server):
    """§7.2.6: a non-member gets registration-required; once alice adds carol
    to the member list, carol joins as a member; when alice revokes the
    membership carol is removed with status 321 and refused again."""
    room = room_jid("clubhouse")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await create_room(alice, room, "Alice", {"membersonly": True})
        assert "muc_membersonly" in features(await disco_info(carol, room))

        refused = await join_refused(carol, room, "Carol")
        assert (refused.type, refused.condition) == ("auth", "registration-required"), refused.presence

        await set_affiliation(alice, room, CAROL, "member")
        assert await affiliation_list(alice, room, "member") == [CAROL]
        joined = await join(carol, room, "Carol")
        assert (joined.item["affiliation"], joined.item["role"]) == ("member", "participant"), joined.presence

        refused = await join_refused(bob, room, "Bob")
        assert refused.condition == "registration-required", refused.presence

        # §9.4: revoking carol's membership removes her from the room with 321.
        await next_presence_from(alice, f"{room}/Carol")
        await set_affiliation(alice, room, CAROL, "none")
        for client in (alice, carol):
            removed = await next_presence_from(client, f"{room}/Carol", "unavailable", {321})
            assert (muc_item(removed)["affiliation"], muc_item(removed)["role"]) == ("none", "none"), removed
        assert await affiliation_list(alice, room, "member") == []
        assert (await join_refused(carol, room, "Carol")).condition == "registration-required"


async def test_password_protected_room(server):
    """§7.2.5: without or with a wrong password: not-authorized; with the
    right one bob joins."""
    room = room_jid("vault")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        await create_room(alice, room, "Alice", {"passwordprotectedroom": True, "roomsecret": "cauldronburn"})
        assert "muc_passwordprotected" in features(await disco_info(bob, room))

        refused = await join_refused(bob, room, "Bob")
        assert (refused.type, refused.condition) == ("auth", "not-authorized"), refused.presence
        refused = await join_refused(bob, room, "Bob", password="wrong")
        assert (refused.type, refused.condition) == ("auth", "not-authorized"), refused.presence

        joined = await join(bob, room, "Bob", password="cauldronburn")
        assert 110 in joined.codes


async def test_max_users_reached(server):
    """§7.2.10: with maxusers = 2 and two occupants, carol gets
    service-unavailable; once bob leaves, she gets in."""
    room = room_jid("booth")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await populate(room, (alice, "Alice"), (bob, "Bob"), config={"maxusers": 2})

        refused = await join_refused(carol, room, "Carol")
        assert (refused.type, refused.condition) == ("wait", "service-unavailable"), refused.presence

        await leave(bob, room, "Bob")
        assert 110 in (await join(carol, room, "Carol")).codes


async def test_mediated_invitation_to_members_only_room(server):
    """§7.8.2: alice invites carol through the room; carol gets a message from
    the room with the invite from alice and the reason, and (members-only)
    is now a member who can join."""
    room = room_jid("salon")
    async with muc_users(server, "alice", "carol") as (alice, carol):
        await create_room(alice, room, "Alice", {"membersonly": True})
        assert (await join_refused(carol, room, "Carol")).condition == "registration-required"

        muc(alice).invite(room, CAROL, reason="Join our salon")

        def is_invite(message: Any) -> bool:
            return message["from"].bare == room and invite_of(message) is not None

        invitation = await carol.next("message", is_invite, what="(invitation from the room)")
        assert str(invitation["from"]) == room, invitation
        invite = invite_of(invitation)
        assert JID(invite["from"] or "").bare == ALICE, invitation
        assert invite["reason"] == "Join our salon", invitation

        assert await affiliation_list(alice, room, "member") == [CAROL]
        joined = await join(carol, room, "Carol")
        assert joined.item["affiliation"] == "member", joined.presence


# --- persistence and destruction ---------------------------------------------------------


async def test_persistent_room_survives_restart_with_configuration_affiliations_and_subject(server):
    """A persistent members-only room keeps its name, configuration, member
    and ban lists and subject across a server restart."""
    room = room_jid("archive")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await create_room(
            alice,
            room,
            "Alice",
            {"roomname": "The Archive", "persistentroom": True, "membersonly": True, "whois": "anyone"},
        )
        await set_affiliation(alice, room, CAROL, "member")
        await set_affiliation(alice, room, BOB, "outcast", reason="Lost a book")
        muc(alice).set_subject(room, "Minutes of the last meeting")
        await next_subject(alice, f"{room}/Alice", "Minutes of the last meeting")

    server.restart()

    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        info = await disco_info(carol, room)
        assert "The Archive" in identity_names(info), info
        assert {"muc_persistent", "muc_membersonly", "muc_nonanonymous"} <= features(info), info

        refused = await join_refused(bob, room, "Bob")
        assert (refused.type, refused.condition) == ("auth", "forbidden"), refused.presence

        carol_join = await join(carol, room, "Carol")
        assert 201 not in carol_join.codes and carol_join.item["affiliation"] == "member", carol_join.presence
        assert subject_of(carol_join.subject) == "Minutes of the last meeting", carol_join.subject

        alice_join = await join(alice, room, "Alice")
        assert 201 not in alice_join.codes and alice_join.item["affiliation"] == "owner", alice_join.presence
        assert await affiliation_list(alice, room, "outcast") == [BOB]
        assert await affiliation_list(alice, room, "member") == [CAROL]
        assert await affiliation_list(alice, room, "owner") == [ALICE]
        form = await room_config_form(alice, room)
        assert field_value(form, "muc#roomconfig_roomname") == "The Archive", form
        assert field_value(form, "muc#roomconfig_membersonly") is True, form
        assert field_value(form, "muc#roomconfig_persistentroom") is True, form


async def test_destroy_room_with_alternate_venue(server):
    """§10.9: only the owner may destroy; every occupant gets an unavailable
    presence with <destroy jid=alternate> and the reason; the room is gone."""
    room = room_jid("oldhall")
    venue = room_jid("newhall")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await populate(room, (alice, "Alice"), (bob, "Bob"), (carol, "Carol"))

        error = await iq_error(muc(bob).destroy(JID(room), "mine now", timeout=5))
        assert error_of(error)[1] == "forbidden", error

        await muc(alice).destroy(JID(room), "We are moving", venue, timeout=5)
        for client, nick in ((alice, "Alice"), (bob, "Bob"), (carol, "Carol")):
            gone = await next_presence_from(client, f"{room}/{nick}", "unavailable")
            assert destroy_of(gone) == {"jid": venue, "reason": "We are moving"}, gone
            assert muc_item(gone)["role"] == "none", gone

        error = await iq_error(disco_info(bob, room))
        assert error_of(error)[1] == "item-not-found", error


# --- discovery, self-ping, other hosts -------------------------------------------------------


async def test_disco_items_list_public_rooms_and_room_info_reflects_configuration(server):
    """§6: disco#items of the service lists public rooms only; a room's
    disco#info lists the muc_* features of its configuration."""
    plaza, hideout = room_jid("plaza"), room_jid("hideout")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        await create_room(alice, plaza, "Alice", {"roomname": "The Plaza", "whois": "moderators"})
        await create_room(
            alice,
            hideout,
            "Alice",
            {
                "roomname": "Hideout",
                "publicroom": False,
                "membersonly": True,
                "moderatedroom": True,
                "passwordprotectedroom": True,
                "roomsecret": "sesame",
                "whois": "anyone",
            },
        )
        items = await disco_items(bob, MUC)
        assert plaza in items and items[plaza] == "The Plaza", items
        assert hideout not in items, items

        open_features = features(await disco_info(bob, plaza))
        assert {
            NS_MUC,
            "muc_public",
            "muc_open",
            "muc_unmoderated",
            "muc_unsecured",
            "muc_semianonymous",
            "muc_temporary",
        } <= open_features, open_features
        hidden_features = features(await disco_info(bob, hideout))
        assert {
            NS_MUC,
            "muc_hidden",
            "muc_membersonly",
            "muc_moderated",
            "muc_passwordprotected",
            "muc_nonanonymous",
            "muc_temporary",
        } <= hidden_features, hidden_features
        assert not {"muc_public", "muc_open", "muc_unmoderated", "muc_unsecured"} & hidden_features


async def test_self_ping(server):
    """XEP-0410: a ping to one's own occupant JID is answered while joined and
    refused with not-acceptable when not."""
    room = room_jid("echo")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        await create_room(alice, room, "Alice")
        answer = await ping(alice, f"{room}/Alice")
        assert answer["type"] == "result", answer

        answer = await ping(bob, f"{room}/Bob")
        assert error_of(answer)[1] == "not-acceptable", answer

        await join(bob, room, "Bob")
        answer = await ping(bob, f"{room}/Bob")
        assert answer["type"] == "result", answer
        await leave(bob, room, "Bob")
        answer = await ping(bob, f"{room}/Bob")
        assert error_of(answer)[1] == "not-acceptable", answer


async def test_occupant_from_another_virtual_host(make_muc_server):
    """dave@example.test joins a room of rooms.localhost with alice and bob:
    presence, groupchat both ways and private messages work across hosts."""
    server = make_muc_server(hosts={OTHER_HOST: {}}, extra_users={DAVE: DAVE_PASSWORD})
    room = room_jid("crossroads")
    dave = muc_client(server, "dave", host=OTHER_HOST, password=DAVE_PASSWORD)
    async with muc_users(server, "alice", "bob", dave) as (alice, bob, dave):
        assert dave.jid.bare == DAVE
        await populate(room, (alice, "Alice"), (bob, "Bob"), config={"whois": "moderators"})

        joined = await join(dave, room, "Dave")
        assert sorted(joined.occupant_nicks) == ["Alice", "Bob"], joined.stanzas
        seen = await next_presence_from(alice, f"{room}/Dave")
        assert JID(muc_item(seen).get("jid", "")).bare == DAVE, seen
        await next_presence_from(bob, f"{room}/Dave")

        await say(dave, room, "Dave", "greetings from example.test", alice, bob)
        await say(alice, room, "Alice", "welcome, dave", bob, dave)
        bob.send_message(f"{room}/Dave", "a word in private")
        whisper = await dave.next_message(f"{room}/Bob", "a word in private")
        assert str(whisper["from"]) == f"{room}/Bob", whisper

        own = await leave(dave, room, "Dave")
        assert 110 in status_codes(own)
        for client in (alice, bob):
            await next_presence_from(client, f"{room}/Dave", "unavailable")


async def test_occupant_status_change_is_broadcast(server):
    """§7.7: bob's new show and status in the room reach every occupant from room/Bob."""
    room = room_jid("lounge")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await populate(room, (alice, "Alice"), (bob, "Bob"), (carol, "Carol"))
        bob.send_presence(pto=f"{room}/Bob", pshow="away", pstatus="brb")
        for client in (alice, bob, carol):
            update = await next_presence_from(client, f"{room}/Bob")
            assert (update["show"], update["status"]) == ("away", "brb"), update
            assert muc_item(update)["role"] == "participant", update


async def test_occupant_who_goes_offline_leaves_the_room(server):
    """RFC 6121 §4.6 + XEP-0045 §7.14: when bob's session ends (a clean close,
    or a dropped connection for carol) the room removes him and everyone gets
    his unavailable presence."""
    room = room_jid("hearth")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await populate(room, (alice, "Alice"), (bob, "Bob"), (carol, "Carol"))

        await bob.close()
        gone = await next_presence_from(alice, f"{room}/Bob", "unavailable")
        assert muc_item(gone)["role"] == "none", gone
        await next_presence_from(carol, f"{room}/Bob", "unavailable")

        carol.xmpp.abort()  # no closing stream tag, just the TCP connection gone
        gone = await next_presence_from(alice, f"{room}/Carol", "unavailable")
        assert muc_item(gone)["role"] == "none", gone

        await say(alice, room, "Alice", "alone again")
        async with muc_users(server, "bob") as (bob_again,):
            joined = await join(bob_again, room, "Bob")
            assert joined.occupant_nicks == ["Alice"], joined.stanzas


async def test_declined_invitation_reaches_the_inviter(server):
    """§7.8.2: bob declines alice's mediated invitation by a message to the
    room; alice gets the decline from the room with bob's JID and reason."""
    room = room_jid("studio")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        await create_room(alice, room, "Alice")

        muc(alice).invite(room, BOB, reason="Come and see")
        await bob.next("message", lambda m: m["from"].bare == room and invite_of(m) is not None)
        muc(bob).decline(room, ALICE, reason="Busy tonight")

        def is_decline(message: Any) -> bool:
            x = user_x(message)
            return message["from"].bare == room and x is not None and x.find(f"{{{NS_MUC_USER}}}decline") is not None

        declined = await alice.next("message", is_decline, what="(decline from the room)")
        decline = user_x(declined).find(f"{{{NS_MUC_USER}}}decline")
        assert JID(decline.get("from", "")).bare == BOB, declined
        reason = decline.find(f"{{{NS_MUC_USER}}}reason")
        assert reason is not None and reason.text == "Busy tonight", declined
        assert not bob.received("message", lambda m: m.xml.get("type") == "error"), bob.inbox


async def test_direct_invitation(server):
    """XEP-0249: alice's direct invitation reaches carol with the room's
    address and the reason; carol joins with it."""
    room = room_jid("atelier")
    async with muc_users(server, "alice", "carol") as (alice, carol):
        await create_room(alice, room, "Alice")
        alice.xmpp.plugin["xep_0249"].send_invitation(CAROL, room, reason="Direct from alice")
        direct = await carol.next(
            "message",
            lambda m: m.xml.find("{jabber:x:conference}x") is not None,
            what="(direct invitation)",
        )
        assert direct["from"].bare == ALICE, direct
        x = direct.xml.find("{jabber:x:conference}x")
        assert (x.get("jid"), x.get("reason")) == (room, "Direct from alice"), direct
        assert 110 in (await join(carol, room, "Carol")).codes


async def test_history_never_longer_than_the_service_maximum(make_muc_server):
    """muc_max_history_length caps the history whatever the room's
    configuration and the joiner's maxstanzas ask for."""
    server = make_muc_server(muc_options={"muc_history_length": 2, "muc_max_history_length": 3})
    room = room_jid("digest")
    bodies = [f"item {i}" for i in range(1, 7)]
    async with muc_users(server, "alice", "bob") as (alice, bob):
        await create_room(alice, room, "Alice")
        try:
            await configure(alice, room, {"historylength": 10})
        except IqError as error:  # refusing a length above the maximum is fine too
            assert error.iq["error"]["type"] == "modify", error.iq
        for body in bodies:
            await say(alice, room, "Alice", body)
        joined = await join(bob, room, "Bob", maxstanzas=10)
        history = [m["body"] for m in joined.history]
        assert 1 <= len(history) <= 3 and history == bodies[-len(history) :], joined.stanzas


async def test_occupants_told_with_332_when_the_service_shuts_down(server):
    """Status 332 (§15.6.2): on shutdown the room tells its occupants they are
    removed because the service is going down, before the streams close."""
    room = room_jid("lastcall")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        await populate(room, (alice, "Alice"), (bob, "Bob"))
        server.terminate()
        for client, nick in ((alice, "Alice"), (bob, "Bob")):
            gone = await next_presence_from(client, f"{room}/{nick}", "unavailable", {332})
            assert muc_item(gone)["role"] == "none", gone
        server.stop()


async def test_configuration_changes_notify_occupants(server):
    """§10.2: only the owner gets the configuration form and the owner list
    (forbidden for bob); a change of anonymity is announced to every occupant
    with 172 (now non-anonymous) and 173 (semi-anonymous again), any other
    change with 104."""
    room = room_jid("workshop")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        await populate(room, (alice, "Alice"), (bob, "Bob"), config={"whois": "moderators"})

        error = await iq_error(room_config_form(bob, room))
        assert error_of(error)[1] == "forbidden", error
        error = await iq_error(affiliation_list(bob, room, "owner"))
        assert error_of(error)[1] == "forbidden", error

        def status_message(code: int) -> Callable[[Any], bool]:
            return lambda m: str(m["from"]) == room and code in status_codes(m)

        await configure(alice, room, {"roomname": "The Workshop"})
        for client in (alice, bob):
            await client.next("message", status_message(104), what="(status 104 from the room)")
        await configure(alice, room, {"whois": "anyone"})
        for client in (alice, bob):
            notice = await client.next("message", status_message(172), what="(status 172 from the room)")
            assert notice["type"] == "groupchat", notice
        await configure(alice, room, {"whois": "moderators"})
        for client in (alice, bob):
            await client.next("message", status_message(173), what="(status 173 from the room)")


async def test_room_turned_members_only_removes_non_members_with_322(server):
    """§10.2: when alice makes the room members-only, bob (no affiliation) is
    removed with status 322, seen by him and by alice, and refused afterwards."""
    room = room_jid("workroom")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        await populate(room, (alice, "Alice"), (bob, "Bob"))
        await configure(alice, room, {"membersonly": True})
        for client in (alice, bob):
            removed = await next_presence_from(client, f"{room}/Bob", "unavailable", {322})
            assert muc_item(removed)["role"] == "none", removed
        assert (await join_refused(bob, room, "Bob")).condition == "registration-required"


async def test_invitations_by_participants_follow_allowinvites(server):
    """muc#roomconfig_allowinvites: with 0 a participant's invitation is refused
    (forbidden) and never reaches carol; with 1 it does."""
    room = room_jid("gallery")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await populate(room, (alice, "Alice"), (bob, "Bob"), config={"allowinvites": False})

        def invite_from(user: str) -> Callable[[Any], bool]:
            def match(message: Any) -> bool:
                invite = invite_of(message) if message["from"].bare == room else None
                return invite is not None and JID(invite["from"] or "").bare == user

            return match

        muc(bob).invite(room, CAROL, reason="from bob")
        error = await next_error(bob, "message", room)
        assert error_of(error)[1] == "forbidden", error
        muc(alice).invite(room, CAROL, reason="from alice")
        await carol.next("message", invite_from(ALICE), what="(alice's invitation)")
        assert not carol.received("message", invite_from(BOB)), carol.inbox

        await configure(alice, room, {"allowinvites": True})
        muc(bob).invite(room, CAROL, reason="from bob")
        invitation = await carol.next("message", invite_from(BOB), what="(bob's invitation)")
        assert invite_of(invitation)["reason"] == "from bob", invitation


async def test_destroyed_persistent_room_stays_gone_after_restart(server):
    """Destroying a persistent room deletes it from storage: after a restart
    it does not come back, and the next join creates a new room."""
    room = room_jid("ruins")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        await create_room(alice, room, "Alice", {"persistentroom": True, "roomname": "Ruins"})
        await set_affiliation(alice, room, BOB, "outcast")
        await muc(alice).destroy(JID(room), "Gone for good", timeout=5)
        gone = await next_presence_from(alice, f"{room}/Alice", "unavailable")
        assert destroy_of(gone) is not None, gone

    server.restart()

    async with muc_users(server, "bob") as (bob,):
        error = await iq_error(disco_info(bob, room))
        assert error_of(error)[1] == "item-not-found", error
        created = await join(bob, room, "Bob")  # the old ban went with the room
        assert 201 in created.codes and created.item["affiliation"] == "owner", created.presence
