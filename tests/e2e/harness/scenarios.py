"""Multi-step things several tests do: log in users, subscribe them, check the server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from slixmpp.exceptions import IqError

from . import DOMAIN
from .client import LOGIN_TIMEOUT, Client
from .server import JackdawServer


@contextlib.asynccontextmanager
async def logged_in(
    server: JackdawServer, *specs: str | tuple[str, str], **options: Any
) -> AsyncIterator[list[Client]]:
    """Log in several users at once, e.g. ``logged_in(server, ("alice", "desk"), "bob")``.

    A spec is a user name or a (user, resource) pair; every client is
    closed on the way out, whatever happened.
    """
    clients = []
    for spec in specs:
        user, resource = (spec, None) if isinstance(spec, str) else spec
        clients.append(Client(server, user, resource=resource, **options))
    try:
        await asyncio.gather(*(client.login() for client in clients))
        yield clients
    finally:
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


async def online_with_roster(*clients: Client) -> None:
    """Each client fetches its roster (so it gets pushes) and sends initial presence."""
    for client in clients:
        await client.roster_get()
        await client.go_online()


async def wait_subscription(client: Client, contact: str, subscription: str, ask: str | None = None) -> dict[str, Any]:
    """Take roster pushes for ``contact`` until one shows ``subscription`` (and ``ask``)."""
    while True:
        item = await client.next_roster_push(contact)
        if item["subscription"] == subscription and item["ask"] == ask:
            return item


async def subscribe(user: Client, contact: Client) -> None:
    """``user`` asks for ``contact``'s presence and ``contact`` approves (both online)."""
    user.send_presence(pto=contact.jid.bare, ptype="subscribe")
    await contact.next_presence(user.jid.bare, "subscribe")
    contact.send_presence(pto=user.jid.bare, ptype="subscribed")
    await user.next_presence(contact.jid.bare, "subscribed")


async def subscribe_mutually(alice: Client, bob: Client) -> None:
    """Both subscribe to each other; returns once both rosters say "both" and
    each has the other's presence, with the inboxes emptied of the handshake."""
    await subscribe(alice, bob)
    await subscribe(bob, alice)
    await wait_subscription(alice, bob.jid.bare, "both")
    await wait_subscription(bob, alice.jid.bare, "both")
    await alice.next_presence(str(bob.jid), "available")
    await bob.next_presence(str(alice.jid), "available")
    alice.inbox.clear()
    bob.inbox.clear()


async def assert_login_works(server: JackdawServer, user: str = "carol", timeout: float = LOGIN_TIMEOUT) -> None:
    """A normal user logs in with slixmpp and the server answers a ping."""
    client = Client(server, user)
    await client.login(timeout)
    try:
        await assert_pong(client)
    finally:
        await client.close()


async def assert_pong(client: Client) -> None:
    """XEP-0199: the server answers a ping to its domain with an empty result."""
    try:
        reply = await client.xmpp.plugin["xep_0199"].send_ping(DOMAIN, timeout=10)
    except IqError as error:
        raise AssertionError(f"the server answered ping with an error: {error.iq}") from None
    assert reply["type"] == "result", f"ping answered with {reply}"


def assert_server_still_serves(server: JackdawServer) -> None:
    """For the synchronous raw-socket tests: carol can still log in."""
    assert server.is_running(), "the server process is gone"
    asyncio.run(assert_login_works(server))
