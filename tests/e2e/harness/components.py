"""Components (issue 8): ``[components."..."]`` tables in a test server's
config, and slixmpp's ``ComponentXMPP`` as a XEP-0114 external component.

:func:`add_components` adds the tables to a :class:`JackdawServer` made with
``start=False`` (its ``config_text`` keeps them across rewrites);
:class:`ExternalComponent` connects to the server's ``component`` listener
and keeps every message, presence and IQ request it receives in an inbox
awaited like :class:`harness.client.Client`'s.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from slixmpp.componentxmpp import ComponentXMPP
from slixmpp.xmlstream import ElementBase
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from .client import DEFAULT_TIMEOUT, describe
from .server import JackdawServer, toml_value

NS_COMPONENT = "jabber:component:accept"
#: The external component most tests configure, and its secret.
EXT = "ext.localhost"
SECRET = "s3cret"
#: A request only the test components understand (the iq round trip).
NS_ECHO = "urn:jackdaw:e2e:echo"

log = logging.getLogger("e2e.component")

COMPONENT_TAGS = {
    "message": f"{{{NS_COMPONENT}}}message",
    "presence": f"{{{NS_COMPONENT}}}presence",
    "iq": f"{{{NS_COMPONENT}}}iq",
}


def toml_inline(value: Any) -> str:
    """``toml_value`` plus inline tables (``component_post_headers``)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {toml_inline(v)}" for k, v in value.items()) + " }"
    return toml_value(value)


def components_toml(components: dict[str, dict[str, Any]]) -> str:
    text = ""
    for domain, options in components.items():
        text += f"\n[components.{json.dumps(domain)}]\n"
        text += "".join(f"{key} = {toml_inline(value)}\n" for key, value in options.items())
    return text


def add_components(server: JackdawServer, components: dict[str, dict[str, Any]]) -> None:
    """Append ``[components."DOMAIN"]`` tables to the server's config (before it starts)."""
    base = server.config_text

    def config_text() -> str:
        return base() + components_toml(components)

    server.config_text = config_text  # type: ignore[method-assign]
    server.write_config()


def component_port(server: JackdawServer) -> int:
    """The XEP-0114 listener's port, from listeners.json's ``component`` entry."""
    return server._port("component")


class ComponentRefused(AssertionError):
    """The server did not accept the component; ``condition`` is its stream error."""

    def __init__(self, reason: str, condition: str | None = None) -> None:
        super().__init__(f"{reason} (stream error: {condition})" if condition else reason)
        self.condition = condition


class ExternalComponent:
    """slixmpp's ``ComponentXMPP`` for ``domain``, e.g. ``await ExternalComponent(server).connect()``.

    It answers ``<query xmlns='urn:jackdaw:e2e:echo' text='...'/>`` gets with a
    result echoing ``text`` (see :data:`NS_ECHO`) when ``answer_echo`` is set.
    """

    def __init__(
        self,
        server: JackdawServer,
        domain: str = EXT,
        secret: str = SECRET,
        *,
        answer_echo: bool = True,
        name: str | None = None,
    ) -> None:
        self.server = server
        self.domain = domain
        self.name = name or f"component {domain}"
        self.xmpp = ComponentXMPP(domain, secret, host="127.0.0.1", port=component_port(server))
        self.xmpp.whitespace_keepalive = False
        self.inbox: list[ElementBase] = []
        self.stream_errors: list[str] = []
        self._arrived = asyncio.Event()
        self._session: asyncio.Future | None = None
        for kind, tag in COMPONENT_TAGS.items():
            self.xmpp.register_handler(Callback(f"e2e component inbox {kind}", MatchXPath(tag), self._collect))
        if answer_echo:
            self.xmpp.register_handler(
                Callback("e2e echo iq", MatchXPath(f"{{{NS_COMPONENT}}}iq/{{{NS_ECHO}}}query"), self._answer_echo)
            )
        self.xmpp.add_event_handler("session_start", self._on_session_start)
        self.xmpp.add_event_handler("stream_error", self._on_stream_error)
        self.xmpp.add_event_handler("disconnected", self._on_disconnected)
        self.xmpp.add_event_handler("connection_failed", self._on_connection_failed)

    # --- events ------------------------------------------------------------

    def _collect(self, stanza: ElementBase) -> None:
        self.inbox.append(stanza)
        arrived, self._arrived = self._arrived, asyncio.Event()
        arrived.set()

    def _answer_echo(self, iq: ElementBase) -> None:
        if iq["type"] != "get":
            return
        query = iq.xml.find(f"{{{NS_ECHO}}}query")
        reply = iq.reply(clear=True)
        text = query.get("text", "") if query is not None else ""
        reply.xml.append(reply.xml.makeelement(f"{{{NS_ECHO}}}query", {"text": text}))
        reply.send()

    def _finish(self, error: ComponentRefused | None) -> None:
        if self._session is None or self._session.done():
            return
        if error is None:
            self._session.set_result(None)
        else:
            self._session.set_exception(error)

    def _on_session_start(self, _event: Any) -> None:
        self._finish(None)

    def _on_stream_error(self, error: ElementBase) -> None:
        self.stream_errors.append(error["condition"])
        self._finish(ComponentRefused(f"{self.name}: stream error at the handshake", error["condition"]))

    def _on_disconnected(self, reason: Any) -> None:
        condition = self.stream_errors[-1] if self.stream_errors else None
        self._finish(ComponentRefused(f"{self.name}: disconnected before the handshake: {reason}", condition))

    def _on_connection_failed(self, error: Any) -> None:
        self.xmpp.cancel_connection_attempt()
        self._finish(ComponentRefused(f"{self.name}: could not connect: {error}"))

    # --- connecting --------------------------------------------------------

    async def connect(self, timeout: float = DEFAULT_TIMEOUT) -> ExternalComponent:
        """Connect and handshake; raises :class:`ComponentRefused`."""
        self._session = asyncio.get_running_loop().create_future()
        self.xmpp.connect()
        try:
            await asyncio.wait_for(asyncio.shield(self._session), timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise ComponentRefused(f"{self.name}: no handshake answer within {timeout} s") from None
        except ComponentRefused:
            await self.close()
            raise
        return self

    async def close(self, timeout: float = 5.0) -> None:
        """End the stream politely and wait until the connection is gone."""
        self.xmpp.cancel_connection_attempt()
        if self.xmpp.transport is None:
            return
        disconnected = self.xmpp.disconnected
        self.xmpp.disconnect(wait=2.0)
        try:
            await asyncio.wait_for(asyncio.shield(disconnected), timeout)
        except asyncio.TimeoutError:
            self.xmpp.abort()

    async def abort(self, timeout: float = 5.0) -> None:
        """Drop the TCP connection without closing the stream (a crashed component)."""
        self.xmpp.cancel_connection_attempt()
        if self.xmpp.transport is None:
            return
        disconnected = self.xmpp.disconnected
        self.xmpp.abort()
        await asyncio.wait_for(asyncio.shield(disconnected), timeout)

    async def wait_disconnected(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        if self.xmpp.transport is None:
            return
        await asyncio.wait_for(asyncio.shield(self.xmpp.disconnected), timeout)

    @property
    def connected(self) -> bool:
        return self.xmpp.transport is not None

    # --- the inbox ---------------------------------------------------------

    async def next(
        self,
        kind: str,
        match: Callable[[ElementBase], bool] = lambda _stanza: True,
        timeout: float = DEFAULT_TIMEOUT,
        what: str = "",
    ) -> ElementBase:
        tag = COMPONENT_TAGS[kind]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for index, stanza in enumerate(self.inbox):
                if stanza.xml.tag == tag and match(stanza):
                    del self.inbox[index]
                    return stanza
            remaining = deadline - loop.time()
            if remaining <= 0:
                seen = "\n  ".join(describe(stanza) for stanza in self.inbox) or "(nothing)"
                raise AssertionError(f"{self.name} received no {kind} {what} within {timeout} s; inbox:\n  {seen}")
            arrived = self._arrived
            try:
                await asyncio.wait_for(arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def received(self, kind: str, match: Callable[[ElementBase], bool] = lambda _s: True) -> list[ElementBase]:
        tag = COMPONENT_TAGS[kind]
        return [stanza for stanza in self.inbox if stanza.xml.tag == tag and match(stanza)]

    async def next_message(self, body: str | None = None, **kwargs: Any) -> ElementBase:
        kwargs.setdefault("what", f"with body {body!r}")
        return await self.next("message", lambda m: body is None or m["body"] == body, **kwargs)

    async def __aenter__(self) -> ExternalComponent:
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
