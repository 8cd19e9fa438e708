"""The roster (RFC 6121 §2): what alice sees on her phone when she edits her
contacts on her desk, and roster versioning."""

from __future__ import annotations

from harness.client import roster_items
from harness.scenarios import logged_in

BOB = "bob@localhost"


async def test_new_account_has_empty_roster(server):
    """A fresh account's roster is empty."""
    async with logged_in(server, "alice") as (alice,):
        reply = await alice.roster_get()
        assert reply["type"] == "result"
        assert roster_items(reply) == {}


async def test_added_contact_pushed_to_other_resource(server):
    """alice adds bob on her desk; her phone gets a roster push with bob,
    his name and group, subscription none; a fresh roster fetch shows him."""
    async with logged_in(server, ("alice", "desk"), ("alice", "phone")) as (desk, phone):
        await phone.roster_get()  # the phone is now an interested resource
        await desk.roster_get()
        await desk.roster_set(BOB, name="Bob", groups=("Friends",))

        pushed = await phone.next_roster_push(BOB)
        assert (pushed["name"], pushed["groups"], pushed["subscription"]) == ("Bob", ["Friends"], "none")
        assert pushed["ask"] is None
        own = await desk.next_roster_push(BOB)  # the resource that edited is pushed too
        assert own["name"] == "Bob"

        items = roster_items(await phone.roster_get())
        assert items[BOB]["name"] == "Bob" and items[BOB]["groups"] == ["Friends"]


async def test_renamed_contact_pushed_to_other_resource(server):
    """alice renames bob and moves him to another group on her desk; her
    phone gets the push with the new name and group."""
    async with logged_in(server, ("alice", "desk"), ("alice", "phone")) as (desk, phone):
        await phone.roster_get()
        await desk.roster_set(BOB, name="Bob", groups=("Friends",))
        await phone.next_roster_push(BOB)

        await desk.roster_set(BOB, name="Bobby", groups=("Work",))
        pushed = await phone.next_roster_push(BOB)
        assert (pushed["name"], pushed["groups"]) == ("Bobby", ["Work"])

        items = roster_items(await phone.roster_get())
        assert (items[BOB]["name"], items[BOB]["groups"]) == ("Bobby", ["Work"])


async def test_removed_contact_pushed_to_other_resource(server):
    """alice removes bob on her desk; her phone gets a push with
    subscription="remove", and bob is gone from the roster."""
    async with logged_in(server, ("alice", "desk"), ("alice", "phone")) as (desk, phone):
        await phone.roster_get()
        await desk.roster_set(BOB, name="Bob")
        await phone.next_roster_push(BOB)

        await desk.roster_set(BOB, remove=True)
        pushed = await phone.next_roster_push(BOB)
        assert pushed["subscription"] == "remove"
        assert BOB not in roster_items(await phone.roster_get())


async def test_roster_survives_restart(server):
    """Contacts are stored: after a server restart alice's roster still has bob."""
    async with logged_in(server, "alice") as (alice,):
        await alice.roster_set(BOB, name="Bob", groups=("Friends",))
    server.restart()
    async with logged_in(server, "alice") as (alice,):
        items = roster_items(await alice.roster_get())
        assert items[BOB]["name"] == "Bob" and items[BOB]["groups"] == ["Friends"]


async def test_roster_versioning(server):
    """RFC 6121 §2.6: the server advertises roster versioning; a change gets
    a new version; a client asking with an old version learns of bob either
    from the full roster or from a push, and with the current one it gets
    no change it has not already seen."""
    async with logged_in(server, "alice") as (alice,):
        assert "rosterver" in alice.xmpp.features, "roster versioning not advertised"
        first = await alice.roster_get(ver="")
        first_query = first.xml.find("{jabber:iq:roster}query")
        assert first_query is not None and first_query.get("ver") is not None, str(first)
        old_version = first_query.get("ver")

        await alice.roster_set(BOB, name="Bob")
        pushed = await alice.next_roster_push(BOB)
        new_version = pushed["ver"]
        assert new_version and new_version != old_version

    async with logged_in(server, "alice") as (alice,):
        reply = await alice.roster_get(ver=old_version)
        query = reply.xml.find("{jabber:iq:roster}query")
        if query is not None:  # the whole roster, with the latest version
            assert query.get("ver") == new_version
            assert BOB in roster_items(reply)
        else:  # an empty result, then the missed changes as pushes
            pushed = await alice.next_roster_push(BOB)
            assert pushed["name"] == "Bob" and pushed["ver"] == new_version

    async with logged_in(server, "alice") as (alice,):
        reply = await alice.roster_get(ver=new_version)
        query = reply.xml.find("{jabber:iq:roster}query")
        if query is not None:
            assert query.get("ver") == new_version and BOB in roster_items(reply)
