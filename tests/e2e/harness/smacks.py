"""Stream management (XEP-0198) helpers shared by the smacks and push tests:
slixmpp clients with its xep_0198 plugin, its events awaited, a lost
connection and a reconnection, and the server's log watched for what cannot
be seen from outside (a session starting to hibernate)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from harness.client import Client

SM_PLUGINS = ("xep_0030", "xep_0199", "xep_0203", "xep_0198")


def sm_client(server, user: str = "alice", resource: str = "phone") -> Client:
    """A slixmpp client with stream management (it asks for resumption)."""
    return Client(server, user, resource=resource, plugins=SM_PLUGINS)


def sm_of(client: Client):
    return client.xmpp.plugin["xep_0198"]


def first_event(client: Client, *names: str) -> asyncio.Future:
    """A future for whichever of slixmpp's events ``names`` fires first: (name, data)."""
    future = asyncio.get_running_loop().create_future()
    handlers: list[tuple[str, Callable]] = []

    def make(name: str) -> Callable:
        def handler(data) -> None:
            if not future.done():
                future.set_result((name, data))
            for other, function in handlers:
                client.xmpp.del_event_handler(other, function)

        return handler

    for name in names:
        handlers.append((name, make(name)))
        client.xmpp.add_event_handler(name, handlers[-1][1])
    return future


async def login_with_sm(client: Client) -> Client:
    """Log in and wait until slixmpp has stream management enabled with an id."""
    enabled = first_event(client, "sm_enabled", "sm_failed")
    await client.login()
    name, answer = await asyncio.wait_for(enabled, 10)
    assert name == "sm_enabled", f"{client.name}: <enable/> refused: {answer}"
    assert sm_of(client).sm_id, f"{client.name}: <enabled/> without a resumption id: {answer}"
    return client


async def kill_connection(client: Client) -> None:
    """The phone loses its network: the TCP connection dies, nothing is said."""
    client.xmpp.transport.abort()
    await client.wait_disconnected(timeout=5)


async def reconnect(client: Client, timeout: float = 15.0) -> str:
    """Reconnect the same ClientXMPP (same ``sm_id`` and ``handled``):
    ``"resumed"`` when the server resumed the session, ``"bound"`` when it
    refused and slixmpp bound a new one."""
    outcome = first_event(client, "session_resumed", "session_start")
    client.xmpp.connect(host="127.0.0.1", port=client.port)
    name, _ = await asyncio.wait_for(outcome, timeout)
    return "resumed" if name == "session_resumed" else "bound"


async def wait_for_log(server, text: str, count: int = 1, timeout: float = 10.0) -> None:
    """Until the server's log mentions ``text`` ``count`` times (the only way to
    see from outside that a session started hibernating)."""
    deadline = time.monotonic() + timeout
    while server.log_text().count(text) < count:
        assert time.monotonic() < deadline, f"the server never logged {text!r} ({count}x)"
        await asyncio.sleep(0.05)
