"""slixmpp, a real third-party XMPP client, logged in to the test server.

A :class:`Client` wraps one ``slixmpp.ClientXMPP``. It connects to
127.0.0.1 on the server's STARTTLS or direct TLS port for the domain
``localhost``, can be told which SASL mechanism to use, and keeps every
message, presence and request IQ it receives in an inbox that tests await
with :meth:`Client.next` (bounded by a timeout, never a sleep).

Notes on the installed slixmpp (see tests/e2e/requirements.txt):

* Direct TLS: with a custom address, ``connect()`` tries the "xmpps-client"
  service (TLS from the first byte, SNI ``localhost``) when
  ``enable_direct_tls`` is set, and "xmpp-client" (STARTTLS) when
  ``enable_starttls`` is; we enable exactly one.
* SCRAM-*-PLUS: slixmpp names ``tls-unique`` below TLS 1.3 and
  ``tls-exporter`` on TLS 1.3, but takes the binding data from Python's
  ``ssl``, which has no exporter; on TLS 1.3 it therefore gives up on -PLUS.
  When a test asks for a -PLUS mechanism we hand slixmpp the RFC 9266 data
  through its ``sasl_callback`` hook (:mod:`harness.channel_binding`);
  slixmpp still builds the GS2 header and the whole SCRAM exchange itself.
* ``xep_0199.ping()`` reports success when the own server answers with an
  *error*, so tests use ``send_ping`` and look at the reply themselves.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import slixmpp
from slixmpp.stanza import Iq
from slixmpp.xmlstream import ET, ElementBase
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from . import DOMAIN, PASSWORDS, channel_binding
from .server import JackdawServer

DEFAULT_TIMEOUT = 10.0
LOGIN_TIMEOUT = 15.0
NS_ROSTER = "jabber:iq:roster"
NS_DELAY = "urn:xmpp:delay"

log = logging.getLogger("e2e.client")

STANZA_TAGS = {
    "message": "{jabber:client}message",
    "presence": "{jabber:client}presence",
    "iq": "{jabber:client}iq",
}

# What the inbox keeps. Of IQs only roster ones (pushes), so that slixmpp still
# answers any other request from the server itself (feature-not-implemented).
INBOX_MATCHERS = {
    "message": "{jabber:client}message",
    "presence": "{jabber:client}presence",
    "iq": "{jabber:client}iq/{jabber:iq:roster}query",
}


class LoginFailed(AssertionError):
    """The user could not log in; ``condition`` is the SASL or stream error if any."""

    def __init__(self, reason: str, condition: str | None = None) -> None:
        super().__init__(f"{reason} (condition: {condition})" if condition else reason)
        self.reason = reason
        self.condition = condition


def tls_context(cafile: Path | None) -> ssl.SSLContext:
    """Trust ``cafile`` and check the name ``localhost``, or check nothing."""
    context = ssl.create_default_context()
    if cafile is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cafile=str(cafile))
    return context


def describe(stanza: ElementBase) -> str:
    return str(stanza).replace("\n", "")


class Client:
    """One logged-in (or logging-in) user, e.g. ``Client(server, "alice", resource="phone")``."""

    def __init__(
        self,
        server: JackdawServer,
        user: str,
        password: str | None = None,
        *,
        resource: str | None = None,
        direct_tls: bool = False,
        mechanism: str | None = None,
        cafile: Path | None = None,
        plugins: tuple[str, ...] = ("xep_0030", "xep_0092", "xep_0199", "xep_0203", "xep_0077"),
    ) -> None:
        self.server = server
        self.user = user
        self.name = f"{user}/{resource}" if resource else user
        jid = f"{user}@{DOMAIN}" + (f"/{resource}" if resource else "")
        if password is None:
            password = PASSWORDS[user]
        self.direct_tls = direct_tls
        self.mechanism = mechanism
        self.xmpp = slixmpp.ClientXMPP(jid, password, sasl_mech=mechanism)
        for plugin in plugins:
            self.xmpp.register_plugin(plugin)
        self.xmpp.ssl_context = tls_context(cafile)
        self.xmpp.enable_direct_tls = direct_tls
        self.xmpp.enable_starttls = not direct_tls
        self.xmpp.enable_plaintext = False
        self.xmpp.whitespace_keepalive = False
        # Subscription requests are the tests' business, not slixmpp's.
        self.xmpp.auto_authorize = None
        self.xmpp.auto_subscribe = False
        if mechanism and mechanism.endswith("-PLUS"):
            self._provide_tls_exporter()

        self.inbox: list[ElementBase] = []
        self.features: list[ElementBase] = []
        self.stream_errors: list[str] = []
        self.sasl_failures: list[str] = []
        self.channel_binding_problem: str | None = None
        self._arrived = asyncio.Event()
        self._session: asyncio.Future | None = None

        for kind, xpath in INBOX_MATCHERS.items():
            self.xmpp.register_handler(Callback(f"e2e inbox {kind}", MatchXPath(xpath), self._collect))
        self.xmpp.register_handler(
            Callback(
                "e2e features",
                MatchXPath("{http://etherx.jabber.org/streams}features"),
                self.features.append,
            )
        )
        self.xmpp.add_event_handler("session_start", self._on_session_start)
        self.xmpp.add_event_handler("failed_auth", self._on_failed_auth)
        self.xmpp.add_event_handler("failed_all_auth", self._on_failed_all_auth)
        self.xmpp.add_event_handler("stream_error", self._on_stream_error)
        self.xmpp.add_event_handler("disconnected", self._on_disconnected)
        self.xmpp.add_event_handler("connection_failed", self._on_connection_failed)

    # --- channel binding ---------------------------------------------------

    def _provide_tls_exporter(self) -> None:
        mechanisms = self.xmpp.plugin["feature_mechanisms"]
        default_credentials = mechanisms._default_credentials

        def credentials(required: set[str], optional: set[str]) -> dict[str, Any]:
            result = default_credentials(required, optional)
            sock = self.xmpp.socket
            wanted = "channel_binding" in required or "channel_binding" in optional
            if wanted and isinstance(sock, (ssl.SSLObject, ssl.SSLSocket)) and sock.version() == "TLSv1.3":
                try:
                    result["channel_binding"] = channel_binding.tls_exporter(sock)
                except channel_binding.ChannelBindingUnavailable as problem:
                    self.channel_binding_problem = str(problem)
            return result

        mechanisms.sasl_callback = credentials

    @property
    def used_mechanism(self) -> str | None:
        mech = self.xmpp.plugin["feature_mechanisms"].mech
        return mech.name if mech else None

    @property
    def gs2_header(self) -> bytes | None:
        """The GS2 header slixmpp sent in its SCRAM client-first message."""
        return getattr(self.xmpp.plugin["feature_mechanisms"].mech, "gs2_header", None)

    # --- events ------------------------------------------------------------

    def _collect(self, stanza: ElementBase) -> None:
        self.inbox.append(stanza)
        arrived, self._arrived = self._arrived, asyncio.Event()
        arrived.set()

    def _finish_login(self, error: LoginFailed | None) -> None:
        if self._session is None or self._session.done():
            return
        if error is None:
            self._session.set_result(None)
        else:
            self._session.set_exception(error)

    def _on_session_start(self, _event: Any) -> None:
        self._finish_login(None)

    def _on_failed_auth(self, failure: ElementBase) -> None:
        self.sasl_failures.append(failure["condition"])

    def offered_mechanisms(self) -> list[str]:
        """The SASL mechanisms in the last stream features that had any."""
        for features in reversed(self.features):
            mechanisms = features.xml.findall(
                "{urn:ietf:params:xml:ns:xmpp-sasl}mechanisms/{urn:ietf:params:xml:ns:xmpp-sasl}mechanism"
            )
            if mechanisms:
                return [(mechanism.text or "").strip() for mechanism in mechanisms]
        return []

    def _on_failed_all_auth(self, _event: Any) -> None:
        condition = self.sasl_failures[-1] if self.sasl_failures else None
        if self.sasl_failures:
            reason = "the server refused the login"
        else:
            wanted = self.mechanism or "any mechanism slixmpp supports"
            reason = f"the client found no usable mechanism ({wanted}) among those offered: {self.offered_mechanisms()}"
        if self.channel_binding_problem:
            reason += f"; the client could not compute channel binding: {self.channel_binding_problem}"
        self._finish_login(LoginFailed(reason, condition))

    def _on_stream_error(self, error: ElementBase) -> None:
        self.stream_errors.append(error["condition"])
        self._finish_login(LoginFailed("stream error during login", error["condition"]))

    def _on_disconnected(self, reason: Any) -> None:
        condition = self.sasl_failures[-1] if self.sasl_failures else None
        self._finish_login(LoginFailed(f"disconnected during login: {reason}", condition))

    def _on_connection_failed(self, error: Any) -> None:
        self.xmpp.cancel_connection_attempt()  # slixmpp would retry forever
        self._finish_login(LoginFailed(f"could not connect: {error}"))

    # --- connecting --------------------------------------------------------

    @property
    def port(self) -> int:
        return self.server.direct_tls_port if self.direct_tls else self.server.c2s_port

    @property
    def jid(self) -> slixmpp.JID:
        """The full JID the server bound for this session."""
        return self.xmpp.boundjid

    async def login(self, timeout: float = LOGIN_TIMEOUT) -> "Client":
        """Connect, encrypt, authenticate and bind; raises :class:`LoginFailed`."""
        self._session = asyncio.get_running_loop().create_future()
        self.xmpp.connect(host="127.0.0.1", port=self.port)
        try:
            await asyncio.wait_for(asyncio.shield(self._session), timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise LoginFailed(f"{self.name}: no session within {timeout} s") from None
        except LoginFailed:
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

    async def wait_disconnected(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until the server ends this client's connection."""
        if self.xmpp.transport is None:
            return
        await asyncio.wait_for(asyncio.shield(self.xmpp.disconnected), timeout)

    # --- the inbox ---------------------------------------------------------

    async def next(
        self,
        kind: str,
        match: Callable[[ElementBase], bool] = lambda _stanza: True,
        timeout: float = DEFAULT_TIMEOUT,
        what: str = "",
    ) -> ElementBase:
        """Take the first received ``kind`` stanza ("message", "presence",
        "iq") for which ``match`` is true, waiting up to ``timeout`` s."""
        tag = STANZA_TAGS[kind]
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
        """Stanzas of ``kind`` already in the inbox for which ``match`` is true."""
        tag = STANZA_TAGS[kind]
        return [stanza for stanza in self.inbox if stanza.xml.tag == tag and match(stanza)]

    async def next_message(self, sender: str | None = None, body: str | None = None, **kwargs: Any) -> ElementBase:
        def match(message: ElementBase) -> bool:
            if message["type"] == "error":
                return False
            if sender is not None and message["from"].bare != sender and str(message["from"]) != sender:
                return False
            return body is None or message["body"] == body

        kwargs.setdefault("what", f"from {sender} with body {body!r}")
        return await self.next("message", match, **kwargs)

    async def next_presence(self, sender: str | None = None, ptype: str | None = None, **kwargs: Any) -> ElementBase:
        """The next presence from ``sender`` (bare or full JID) of ``ptype``
        (``available`` for one without a type attribute)."""

        def match(presence: ElementBase) -> bool:
            if sender is not None and presence["from"].bare != sender and str(presence["from"]) != sender:
                return False
            kind = presence.xml.get("type") or "available"
            return ptype is None or kind == ptype

        kwargs.setdefault("what", f"from {sender} of type {ptype}")
        return await self.next("presence", match, **kwargs)

    async def next_roster_push(self, contact: str, **kwargs: Any) -> dict[str, Any]:
        """The next roster push naming ``contact``; returns that item's attributes."""

        def match(iq: ElementBase) -> bool:
            query = iq.xml.find(f"{{{NS_ROSTER}}}query")
            if iq["type"] != "set" or query is None:
                return False
            return any(item.get("jid") == contact for item in query)

        kwargs.setdefault("what", f"(roster push for {contact})")
        iq = await self.next("iq", match, **kwargs)
        return roster_item(iq, contact) | {"ver": iq.xml.find(f"{{{NS_ROSTER}}}query").get("ver"), "iq": iq}

    # --- doing things ------------------------------------------------------

    def send_message(self, to: str, body: str, mtype: str = "chat") -> None:
        self.xmpp.send_message(mto=to, mbody=body, mtype=mtype)

    def send_presence(self, **kwargs: Any) -> None:
        """Presence to the server (broadcast), or with ``pto``/``ptype`` a directed or
        subscription presence; same keywords as slixmpp's ``send_presence``."""
        self.xmpp.send_presence(**kwargs)

    async def go_online(self, show: str | None = None, status: str | None = None) -> None:
        """Send initial presence and wait for the server to reflect it back to us.

        RFC 6121 §4.2.2: the server sends the user's presence to all of the
        user's available resources, including the one that sent it.
        """
        kwargs: dict[str, Any] = {}
        if show:
            kwargs["pshow"] = show
        if status:
            kwargs["pstatus"] = status
        self.send_presence(**kwargs)
        await self.next_presence(str(self.jid), "available", what="(own initial presence reflected)")

    async def iq(self, iq: Iq, timeout: float = DEFAULT_TIMEOUT) -> Iq:
        """Send an IQ and return the result; raises slixmpp's IqError/IqTimeout."""
        return await iq.send(timeout=timeout)

    async def roster_get(self, ver: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Iq:
        """Request the roster (which also marks this resource as interested in pushes)."""
        iq = self.xmpp.Iq()
        iq["type"] = "get"
        query = ET.SubElement(iq.xml, f"{{{NS_ROSTER}}}query")
        if ver is not None:
            query.set("ver", ver)
        return await self.iq(iq, timeout)

    async def roster_set(
        self,
        contact: str,
        name: str | None = None,
        groups: tuple[str, ...] = (),
        remove: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Iq:
        """Add or edit (or with ``remove``, delete) one roster item, as a client UI does."""
        iq = self.xmpp.Iq()
        iq["type"] = "set"
        query = ET.SubElement(iq.xml, f"{{{NS_ROSTER}}}query")
        item = ET.SubElement(query, f"{{{NS_ROSTER}}}item", {"jid": contact})
        if name is not None:
            item.set("name", name)
        if remove:
            item.set("subscription", "remove")
        for group in groups:
            ET.SubElement(item, f"{{{NS_ROSTER}}}group").text = group
        return await self.iq(iq, timeout)

    async def __aenter__(self) -> "Client":
        return await self.login()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def roster_items(iq: ElementBase) -> dict[str, dict[str, Any]]:
    """The items of a roster result or push, keyed by JID, as the user's client shows them."""
    query = iq.xml.find(f"{{{NS_ROSTER}}}query")
    items: dict[str, dict[str, Any]] = {}
    if query is None:
        return items
    for item in query.findall(f"{{{NS_ROSTER}}}item"):
        items[item.get("jid", "")] = {
            "name": item.get("name"),
            # RFC 6121 §2.1.2.5: no subscription attribute means "none".
            "subscription": item.get("subscription") or "none",
            "ask": item.get("ask"),
            "groups": sorted(group.text or "" for group in item.findall(f"{{{NS_ROSTER}}}group")),
        }
    return items


def roster_item(iq: ElementBase, contact: str) -> dict[str, Any]:
    items = roster_items(iq)
    assert contact in items, f"no roster item for {contact} in {describe(iq)}"
    return items[contact]


def delay_of(stanza: ElementBase) -> ET.Element | None:
    """The XEP-0203 ``<delay/>`` element of a stanza, if any."""
    return stanza.xml.find(f"{{{NS_DELAY}}}delay")
