"""Registering with a room (XEP-0045 §7.10) on the ``rooms.localhost`` MUC
component, and ``muc_http_auth_authorize_registration`` of muc_http_auth.

Jackdaw's side of the contract, as these tests read it:

* ``<iq type='get'><query xmlns='jabber:iq:register'/></iq>`` to a room
  returns ``<instructions/>`` and a ``jabber:x:data`` form of type ``form``
  (hidden ``FORM_TYPE`` ``http://jabber.org/protocol/muc#register``, a
  required ``muc#register_roomnick``); once the user is registered it
  returns ``<registered/>`` and ``<username>`` with the reserved nick.
* An IQ set with a submitted form carrying ``muc#register_roomnick`` makes
  the user a member (in the owner's member list) with that nick reserved:
  another user joining (or changing nick, §7.6) to it gets ``conflict``,
  another user registering it gets ``conflict``; the registrant joins under
  it, also in a members-only room. No nick → ``bad-request``; an outcast →
  ``forbidden``; no such room → ``item-not-found``. Reserved nicks and
  memberships of a persistent room survive a restart. The room's disco#info
  lists ``jabber:iq:register``.
* With ``modules_enabled = ["muc_http_auth"]`` and
  ``muc_http_auth_authorize_registration = true`` a registration set asks
  the web app (``userJID``, ``mucJID``, ``nickname`` = the requested nick):
  allowed → registered; refused → ``not-authorized`` with the web app's
  error text and no membership. Without the option registration does not
  ask the web app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from slixmpp.xmlstream import ET, ElementBase

from harness import jid_of
from harness.client import Client, describe
from harness.muc import (
    IQ_TIMEOUT,
    NS_DATA,
    affiliation_list,
    configure_muc,
    create_room,
    disco_info,
    error_of,
    features,
    iq_error,
    join,
    join_refused,
    leave,
    muc_item,
    muc_users,
    next_presence_from,
    room_jid,
    set_affiliation,
    status_codes,
)
from harness.muc_auth_webapp import MucAuthWebApp, describe_requests, refuse_when
from harness.server import JackdawServer

NS_REGISTER = "jabber:iq:register"
FORM_TYPE = "http://jabber.org/protocol/muc#register"
ROOMNICK = "muc#register_roomnick"

ALICE, BOB, CAROL = jid_of("alice"), jid_of("bob"), jid_of("carol")


# --- fixtures ------------------------------------------------------------------


@pytest.fixture
def make_muc_server(make_server: Callable[..., JackdawServer]) -> Callable[..., JackdawServer]:
    """``make_muc_server(muc_options={...})``: a running server with alice, bob,
    carol and the MUC component ``rooms.localhost``."""

    def make(muc_options: dict[str, Any] | None = None) -> JackdawServer:
        server = make_server(start=False)
        configure_muc(server, muc_options)
        server.start()
        return server

    return make


@pytest.fixture
def server(make_muc_server: Callable[..., JackdawServer]) -> JackdawServer:  # noqa: F811 - shadows conftest's
    return make_muc_server()


@pytest.fixture
def webapp() -> Iterator[MucAuthWebApp]:
    """The muc_http_auth web app, allowing everyone until a test says otherwise."""
    app = MucAuthWebApp().start()
    yield app
    app.stop()


def http_auth_options(webapp: MucAuthWebApp, authorize_registration: bool | None) -> dict[str, Any]:
    """muc_http_auth asking ``webapp`` (as in test_muc_http_auth.py), with
    ``muc_http_auth_authorize_registration`` set unless None."""
    options: dict[str, Any] = {
        "modules_enabled": ["muc_http_auth"],
        "muc_http_auth_url": webapp.url,
        "muc_http_auth_timeout": 2,
    }
    if authorize_registration is not None:
        options["muc_http_auth_authorize_registration"] = authorize_registration
    return options


# --- registration IQs ------------------------------------------------------------


def register_query(iq: ElementBase) -> Any:
    query = iq.xml.find(f"{{{NS_REGISTER}}}query")
    assert query is not None, f"no <query xmlns='{NS_REGISTER}'/> in {describe(iq)}"
    return query


async def registration_info(client: Client, room: str) -> ElementBase:
    """``<iq type='get'><query xmlns='jabber:iq:register'/></iq>`` to ``room``; the result."""
    iq = client.xmpp.make_iq_get(ito=room)
    ET.SubElement(iq.xml, f"{{{NS_REGISTER}}}query")
    return await iq.send(timeout=IQ_TIMEOUT)


def submit_registration(client: Client, room: str, nick: str | None = None, *, form: bool = True) -> Any:
    """The IQ set of §7.10 (an awaitable of the result): a submitted
    muc#register form with ``muc#register_roomnick`` = ``nick`` (no such
    field when ``nick`` is None, no form at all without ``form``)."""
    iq = client.xmpp.make_iq_set(ito=room)
    query = ET.SubElement(iq.xml, f"{{{NS_REGISTER}}}query")
    if form:
        x = ET.SubElement(query, f"{{{NS_DATA}}}x", {"type": "submit"})
        form_type = ET.SubElement(x, f"{{{NS_DATA}}}field", {"var": "FORM_TYPE"})
        ET.SubElement(form_type, f"{{{NS_DATA}}}value").text = FORM_TYPE
        if nick is not None:
            field = ET.SubElement(x, f"{{{NS_DATA}}}field", {"var": ROOMNICK})
            ET.SubElement(field, f"{{{NS_DATA}}}value").text = nick
    return iq.send(timeout=IQ_TIMEOUT)


async def register(client: Client, room: str, nick: str) -> ElementBase:
    """Register ``nick`` with ``room``; the (empty) result IQ."""
    result = await submit_registration(client, room, nick)
    assert result["type"] == "result", describe(result)
    return result


def error_text(iq: ElementBase) -> str | None:
    text = iq.xml.find("{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}text")
    return None if text is None else (text.text or "")


def assert_unregistered_form(iq: ElementBase) -> None:
    """The answer to a get from a user not registered: instructions and the §7.10 form."""
    query = register_query(iq)
    assert query.find(f"{{{NS_REGISTER}}}registered") is None, describe(iq)
    instructions = query.find(f"{{{NS_REGISTER}}}instructions")
    assert instructions is not None and (instructions.text or "").strip(), f"no instructions: {describe(iq)}"
    x = query.find(f"{{{NS_DATA}}}x")
    assert x is not None and x.get("type") == "form", f"no jabber:x:data form of type form: {describe(iq)}"
    fields = {field.get("var"): field for field in x.findall(f"{{{NS_DATA}}}field")}
    assert "FORM_TYPE" in fields and ROOMNICK in fields, f"fields {sorted(fields, key=str)}: {describe(iq)}"
    assert fields["FORM_TYPE"].get("type") == "hidden", describe(iq)
    assert [v.text for v in fields["FORM_TYPE"].findall(f"{{{NS_DATA}}}value")] == [FORM_TYPE], describe(iq)
    assert fields[ROOMNICK].find(f"{{{NS_DATA}}}required") is not None, f"{ROOMNICK} not required: {describe(iq)}"


def registered_nick(iq: ElementBase) -> str | None:
    """The ``<username/>`` of a ``<registered/>`` answer, None when not registered."""
    query = register_query(iq)
    if query.find(f"{{{NS_REGISTER}}}registered") is None:
        return None
    username = query.find(f"{{{NS_REGISTER}}}username")
    assert username is not None, f"<registered/> without <username/>: {describe(iq)}"
    assert query.find(f"{{{NS_DATA}}}x") is None, f"a form next to <registered/>: {describe(iq)}"
    return username.text or ""


# --- the room advertises registration --------------------------------------------


async def test_room_disco_info_lists_registration(server):
    """The room's disco#info has the jabber:iq:register feature (§7.10: clients look for it)."""
    room = room_jid("lobby")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        await create_room(alice, room, "Alice")
        assert NS_REGISTER in features(await disco_info(bob, room))


# --- form, registration and the reserved nick ---------------------------------------


async def test_form_then_registration_makes_a_member_with_a_reserved_nick(server):
    """bob asks for the form (instructions, FORM_TYPE, required roomnick),
    submits "Bobby": an empty result, then a get says <registered/> with
    <username>Bobby</username>; alice's member list has bob; bob joins as
    Bobby with affiliation member."""
    room = room_jid("salon")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        await create_room(alice, room, "Alice")
        assert_unregistered_form(await registration_info(bob, room))
        assert await affiliation_list(alice, room, "member") == []

        await register(bob, room, "Bobby")

        assert registered_nick(await registration_info(bob, room)) == "Bobby"
        assert await affiliation_list(alice, room, "member") == [BOB]

        joined = await join(bob, room, "Bobby")
        assert (joined.item["affiliation"], joined.item["role"]) == ("member", "participant"), joined.presence
        arrival = await next_presence_from(alice, f"{room}/Bobby")
        assert muc_item(arrival)["affiliation"] == "member", arrival


async def test_reserved_nick_refused_to_others(server):
    """After bob registers "Bobby": carol joining as Bobby gets conflict,
    carol registering Bobby gets conflict (and stays a non-member), bob
    joins as Bobby, and carol still cannot take it."""
    room = room_jid("parlour")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await create_room(alice, room, "Alice")
        await register(bob, room, "Bobby")

        refused = await join_refused(carol, room, "Bobby")
        assert (refused.type, refused.condition) == ("cancel", "conflict"), refused.presence

        error = await iq_error(submit_registration(carol, room, "Bobby"))
        assert error_of(error) == ("cancel", "conflict"), describe(error)
        assert registered_nick(await registration_info(carol, room)) is None
        assert registered_nick(await registration_info(bob, room)) == "Bobby"
        assert await affiliation_list(alice, room, "member") == [BOB]

        joined = await join(bob, room, "Bobby")
        assert joined.item["affiliation"] == "member", joined.presence
        refused = await join_refused(carol, room, "Bobby")
        assert refused.condition == "conflict", refused.presence
        # carol may still register and join under a nick of her own.
        await register(carol, room, "Caz")
        assert (await join(carol, room, "Caz")).item["affiliation"] == "member"


async def test_nick_change_to_a_reserved_nick_is_a_conflict(server):
    """§7.6: carol, inside the room as Carol, changing her nick to "Bobby",
    reserved by bob (who is not in the room), gets conflict from room/Bobby
    and stays Carol (no 303 for anyone)."""
    room = room_jid("gallery")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await create_room(alice, room, "Alice")
        await register(bob, room, "Bobby")
        await join(carol, room, "Carol")
        await next_presence_from(alice, f"{room}/Carol")

        carol.send_presence(pto=f"{room}/Bobby")
        answer = await carol.next(
            "presence",
            lambda p: str(p["from"]) in (f"{room}/Bobby", f"{room}/Carol"),
            what=f"(conflict from {room}/Bobby or a nick change)",
        )
        assert answer.xml.get("type") == "error" and str(answer["from"]) == f"{room}/Bobby", describe(answer)
        assert error_of(answer) == ("cancel", "conflict"), describe(answer)
        # carol is still Carol: she leaves under that nick; alice saw no nick change.
        gone = await leave(carol, room, "Carol")
        assert 110 in status_codes(gone), describe(gone)
        left = await next_presence_from(alice, f"{room}/Carol", "unavailable")
        assert 303 not in status_codes(left), describe(left)
        assert not alice.received("presence", lambda p: p["from"].resource == "Bobby"), alice.inbox


async def test_registering_again_changes_the_reserved_nick(server):
    """A member registering another nick frees the old one: bob registers
    "Bobby", then "Robert"; the get says Robert and carol may join as Bobby."""
    room = room_jid("study")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await create_room(alice, room, "Alice")
        await register(bob, room, "Bobby")
        await register(bob, room, "Robert")
        assert registered_nick(await registration_info(bob, room)) == "Robert"
        assert await affiliation_list(alice, room, "member") == [BOB]
        assert (await join(carol, room, "Bobby")).nick == "Bobby"
        error = await iq_error(submit_registration(carol, room, "Robert"))
        assert error_of(error) == ("cancel", "conflict"), describe(error)


async def test_revoked_membership_frees_the_reserved_nick(server):
    """The reservation goes with the membership: alice sets bob's affiliation
    to none; bob's get shows the form again (not registered) and carol may
    join as "Bobby"."""
    room = room_jid("lodge")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await create_room(alice, room, "Alice")
        await register(bob, room, "Bobby")
        await set_affiliation(alice, room, BOB, "none")
        assert await affiliation_list(alice, room, "member") == []
        assert_unregistered_form(await registration_info(bob, room))

        joined = await join(carol, room, "Bobby")
        assert joined.item["affiliation"] == "none", joined.presence


# --- refusals -------------------------------------------------------------------------


async def test_missing_nick_is_a_bad_request(server):
    """A submitted form without muc#register_roomnick, with an empty one, or
    no form at all: bad-request (modify); bob stays unregistered."""
    room = room_jid("atelier")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        await create_room(alice, room, "Alice")
        for attempt in (submit_registration(bob, room), submit_registration(bob, room, "")):
            error = await iq_error(attempt)
            assert error_of(error) == ("modify", "bad-request"), describe(error)
        error = await iq_error(submit_registration(bob, room, form=False))
        assert error_of(error) == ("modify", "bad-request"), describe(error)
        assert_unregistered_form(await registration_info(bob, room))
        assert await affiliation_list(alice, room, "member") == []


async def test_outcast_may_not_register(server):
    """carol, banned, registering: forbidden (auth); she stays an outcast and
    the nick she asked for is not reserved."""
    room = room_jid("keep")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await create_room(alice, room, "Alice")
        await set_affiliation(alice, room, CAROL, "outcast")

        error = await iq_error(submit_registration(carol, room, "Caz"))
        assert error_of(error) == ("auth", "forbidden"), describe(error)
        assert await affiliation_list(alice, room, "outcast") == [CAROL]
        assert await affiliation_list(alice, room, "member") == []
        assert (await join(bob, room, "Caz")).nick == "Caz"


async def test_registration_with_a_room_that_does_not_exist(server):
    """Get and set to a room nobody created: item-not-found (cancel); no room appears."""
    room = room_jid("nowhere")
    async with muc_users(server, "bob") as (bob,):
        error = await iq_error(registration_info(bob, room))
        assert error_of(error) == ("cancel", "item-not-found"), describe(error)
        error = await iq_error(submit_registration(bob, room, "Bobby"))
        assert error_of(error) == ("cancel", "item-not-found"), describe(error)
        error = await iq_error(disco_info(bob, room))
        assert error_of(error)[1] == "item-not-found", describe(error)


# --- members-only rooms and persistence ------------------------------------------------


async def test_registration_opens_a_members_only_room(server):
    """carol gets registration-required from a members-only room; after
    registering "Caz" she joins as Caz, a member."""
    room = room_jid("clubhouse")
    async with muc_users(server, "alice", "carol") as (alice, carol):
        await create_room(alice, room, "Alice", {"membersonly": True})
        refused = await join_refused(carol, room, "Caz")
        assert (refused.type, refused.condition) == ("auth", "registration-required"), refused.presence

        await register(carol, room, "Caz")
        joined = await join(carol, room, "Caz")
        assert (joined.item["affiliation"], joined.item["role"]) == ("member", "participant"), joined.presence
        assert await affiliation_list(alice, room, "member") == [CAROL]


async def test_registration_of_a_persistent_room_survives_restart(server):
    """A persistent members-only room: bob registers "Bobby"; after a
    restart the get still says Bobby, alice's member list has bob, carol
    gets conflict for Bobby (after registering herself), bob joins as Bobby."""
    room = room_jid("archive")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        await create_room(alice, room, "Alice", {"persistentroom": True, "membersonly": True})
        await register(bob, room, "Bobby")

    server.restart()

    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        assert registered_nick(await registration_info(bob, room)) == "Bobby"
        assert_unregistered_form(await registration_info(carol, room))
        await join(alice, room, "Alice")
        assert await affiliation_list(alice, room, "member") == [BOB]

        await register(carol, room, "Caz")
        refused = await join_refused(carol, room, "Bobby")
        assert refused.condition == "conflict", refused.presence
        joined = await join(bob, room, "Bobby")
        assert joined.item["affiliation"] == "member", joined.presence


# --- muc_http_auth_authorize_registration ----------------------------------------------


async def test_web_app_allows_registration(make_muc_server, webapp):
    """With muc_http_auth_authorize_registration the web app is asked about
    (bob, room, "Bobby") when bob registers; it allows: bob is registered."""
    server = make_muc_server(http_auth_options(webapp, True))
    room = room_jid("council")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        await create_room(alice, room, "Alice")
        webapp.clear_log()

        await register(bob, room, "Bobby")
        asked = webapp.requests()
        assert [r.triple for r in asked] == [(BOB, room, "Bobby")], describe_requests(asked)
        assert registered_nick(await registration_info(bob, room)) == "Bobby"
        assert await affiliation_list(alice, room, "member") == [BOB]


async def test_web_app_refuses_registration(make_muc_server, webapp):
    """The web app refuses the nick "Bobby": bob's registration gets
    not-authorized (auth) with the web app's text; bob is no member, the
    nick is not reserved (carol joins as Bobby)."""
    server = make_muc_server(http_auth_options(webapp, True))
    webapp.decide = refuse_when(lambda r: r.user == BOB and r.nick == "Bobby", "Bobby is reserved for staff")
    room = room_jid("senate")
    async with muc_users(server, "alice", "bob", "carol") as (alice, bob, carol):
        await create_room(alice, room, "Alice")
        webapp.clear_log()

        error = await iq_error(submit_registration(bob, room, "Bobby"))
        assert error_of(error) == ("auth", "not-authorized"), describe(error)
        assert error_text(error) == "Bobby is reserved for staff", describe(error)
        asked = webapp.requests()
        assert [r.triple for r in asked] == [(BOB, room, "Bobby")], describe_requests(asked)

        assert_unregistered_form(await registration_info(bob, room))
        assert await affiliation_list(alice, room, "member") == []
        assert (await join(carol, room, "Bobby")).item["affiliation"] == "none"


@pytest.mark.parametrize("option", [None, False], ids=["unset", "false"])
async def test_registration_not_asked_of_the_web_app_without_the_option(make_muc_server, webapp, option):
    """Without muc_http_auth_authorize_registration (unset or false) a
    registration does not ask the web app, even one that would refuse it:
    bob is registered as Bobby."""
    server = make_muc_server(http_auth_options(webapp, option))
    webapp.decide = refuse_when(lambda r: r.nick == "Bobby", "Bobby is reserved for staff")
    room = room_jid("assembly")
    async with muc_users(server, "alice", "bob") as (alice, bob):
        await create_room(alice, room, "Alice")
        webapp.clear_log()

        await register(bob, room, "Bobby")
        assert registered_nick(await registration_info(bob, room)) == "Bobby"
        assert await affiliation_list(alice, room, "member") == [BOB]
        assert webapp.requests() == [], describe_requests(webapp.requests())
