"""XMPP over WebSocket (RFC 7395) driven by hand, for ``test_websocket.py``.

A :class:`WsStream` is one WebSocket to Jackdaw's ``/xmpp-websocket`` on the
HTTP port, opened with the ``xmpp`` subprotocol by the ``websockets``
package. RFC 7395 §3.3.3 makes every WebSocket message one complete XML
element that parses on its own, so each frame the server sends is parsed
alone with a strict parser: a frame that is not exactly one well-formed
element fails the test. Every frame both ways is kept in
:attr:`WsStream.transcript`, which failing assertions print.

The server's stream header is ``<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>``
and its footer ``<close/>`` in the same namespace; a stream error is
followed by ``<close/>`` and the WebSocket closing handshake (RFC 7395 §3.6).
"""

from __future__ import annotations

import asyncio
import base64
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from . import DOMAIN
from .raw import NS_BIND, NS_SASL, NS_STREAM, NS_STREAM_ERRORS, SaslOutcome, local_name, namespace
from .scram import ScramClient
from .server import JackdawServer

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
NS_PING = "urn:xmpp:ping"
#: Prosody's path, which Jackdaw serves on its HTTP port.
WS_PATH = "/xmpp-websocket"
DEFAULT_TIMEOUT = 10.0

CLOSE = f"<close xmlns='{NS_FRAMING}'/>"


def ws_url(server: JackdawServer) -> str:
    return f"ws://127.0.0.1:{server.http_port}{WS_PATH}"


def open_frame(to: str = DOMAIN, version: str = "1.0") -> str:
    """The client's stream header (RFC 7395 §3.4)."""
    return f"<open xmlns='{NS_FRAMING}' to='{to}' version='{version}'/>"


def element_text(element: ET.Element) -> str:
    return ET.tostring(element, encoding="unicode")


class WsClosed(AssertionError):
    """The server closed the WebSocket when we expected more."""


@dataclass
class WsStreamError:
    """A ``<stream:error/>`` received over the WebSocket."""

    condition: str
    text: str | None
    #: The frame after the error was ``<close/>`` (RFC 7395 §3.6.1).
    close_followed: bool
    #: The server then closed the WebSocket.
    socket_closed: bool


class WsStream:
    """One XMPP stream over a WebSocket, e.g.::

    stream = await WsStream.connect(server)
    await stream.open()                       # <open/> both ways
    features = await stream.read_features()
    """

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.transcript: list[str] = [f"-- connected, subprotocol {ws.subprotocol!r}"]
        #: Every frame received, as text, in order.
        self.frames: list[str] = []
        #: The server closed the WebSocket (or it was lost).
        self.closed = False
        self.close_code: int | None = None

    # --- connecting --------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        server: JackdawServer,
        subprotocols: tuple[str, ...] | None = ("xmpp",),
        timeout: float = DEFAULT_TIMEOUT,
        **kwargs,
    ) -> WsStream:
        """Open the WebSocket; the ``websockets`` client's own keepalive pings are off."""
        kwargs.setdefault("max_size", None)
        ws = await connect(
            ws_url(server),
            subprotocols=list(subprotocols) if subprotocols is not None else None,
            open_timeout=timeout,
            ping_interval=None,
            compression=None,
            proxy=None,
            **kwargs,
        )
        return cls(ws)

    @property
    def subprotocol(self) -> str | None:
        return self.ws.subprotocol

    async def aclose(self) -> None:
        """Close the WebSocket from our side (no ``<close/>`` first)."""
        try:
            await asyncio.wait_for(self.ws.close(), 5)
        except (TimeoutError, asyncio.TimeoutError, OSError):
            self.abort()

    def abort(self) -> None:
        """Drop the TCP connection under the WebSocket: no ``<close/>``, no close frame."""
        self.transcript.append("-- TCP connection aborted by the client")
        self.ws.transport.abort()

    async def __aenter__(self) -> WsStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- frames ------------------------------------------------------------

    async def send(self, text: str) -> None:
        shown = text if len(text) <= 600 else text[:300] + "..." + text[-100:]
        self.transcript.append(f"C: {shown}")
        try:
            await self.ws.send(text)
        except ConnectionClosed as closed:
            self.transcript.append(f"-- send failed: {closed!r}")

    def _note_closed(self, closed: ConnectionClosed) -> None:
        if not self.closed:
            self.closed = True
            self.close_code = closed.rcvd.code if closed.rcvd is not None else None
            self.transcript.append(f"-- WebSocket closed by the server: {closed!r}")

    async def read_frame(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """The next text frame; :class:`WsClosed` if the WebSocket closes first."""
        if self.closed:
            raise WsClosed("the WebSocket is closed\n" + self.dump())
        try:
            frame = await asyncio.wait_for(self.ws.recv(), timeout)
        except (TimeoutError, asyncio.TimeoutError):
            raise TimeoutError(f"no frame from the server within {timeout} s\n" + self.dump()) from None
        except ConnectionClosed as closed:
            self._note_closed(closed)
            raise WsClosed("the server closed the WebSocket\n" + self.dump()) from None
        if isinstance(frame, bytes):
            self.transcript.append(f"S (binary): {frame[:200]!r}")
            raise AssertionError("RFC 7395 §3.2: the server sent a binary frame\n" + self.dump())
        self.transcript.append(f"S: {frame}")
        self.frames.append(frame)
        return frame

    def parse(self, frame: str) -> ET.Element:
        try:
            return ET.fromstring(frame)
        except ET.ParseError as error:
            raise AssertionError(
                f"RFC 7395 §3.3.3: a frame is not one standalone well-formed element ({error}): {frame!r}\n"
                + self.dump()
            ) from None

    async def read_element(self, timeout: float = DEFAULT_TIMEOUT) -> ET.Element:
        return self.parse(await self.read_frame(timeout))

    async def read_until(self, tag: str, timeout: float = DEFAULT_TIMEOUT, what: str = "") -> ET.Element:
        """Skip frames until an element with ``tag`` (Clark notation) for which
        ``what`` is just the description; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {tag} {what} within {timeout} s\n" + self.dump())
            element = await self.read_element(remaining)
            if element.tag == tag:
                return element

    async def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """True if the server closes the WebSocket within ``timeout`` s (frames
        received meanwhile are kept in :attr:`frames`)."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await self.read_frame(remaining)
            except WsClosed:
                return True
            except TimeoutError:
                return False
        return True

    def dump(self) -> str:
        return "exchange so far:\n  " + "\n  ".join(self.transcript[-40:])

    # --- stream level ------------------------------------------------------

    async def open(self, to: str = DOMAIN, version: str = "1.0") -> ET.Element:
        """Send ``<open/>``, read the server's ``<open/>`` and return it."""
        await self.send(open_frame(to, version))
        element = await self.read_element()
        assert element.tag == f"{{{NS_FRAMING}}}open", (
            f"expected the server's <open/>, got {element_text(element)}\n" + self.dump()
        )
        return element

    async def read_features(self) -> ET.Element:
        frame = await self.read_frame()
        element = self.parse(frame)
        assert element.tag == f"{{{NS_STREAM}}}features", f"expected <stream:features/>, got {frame}\n" + self.dump()
        return element

    async def close_stream(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Send ``<close/>``; the server must answer ``<close/>`` and close the WebSocket."""
        await self.send(CLOSE)
        element = await self.read_element(timeout)
        assert element.tag == f"{{{NS_FRAMING}}}close", (
            f"expected <close/> in answer to ours, got {element_text(element)}\n" + self.dump()
        )
        assert await self.wait_closed(timeout), "the server answered <close/> but left the WebSocket open\n" + (
            self.dump()
        )

    async def expect_stream_error(self, timeout: float = DEFAULT_TIMEOUT) -> WsStreamError:
        """Read until a ``<stream:error/>``, then see whether ``<close/>`` and the
        WebSocket closing follow (within 5 s)."""
        element = await self.read_until(f"{{{NS_STREAM}}}error", timeout, "(stream error)")
        condition, text = None, None
        for child in element:
            if namespace(child.tag) == NS_STREAM_ERRORS:
                if local_name(child.tag) == "text":
                    text = child.text
                else:
                    condition = local_name(child.tag)
        assert condition is not None, "stream error without a condition\n" + self.dump()
        close_followed = False
        try:
            close_followed = (await self.read_element(5)).tag == f"{{{NS_FRAMING}}}close"
        except (WsClosed, TimeoutError):
            pass
        return WsStreamError(condition, text, close_followed, await self.wait_closed(5))

    # --- SASL and binding ---------------------------------------------------

    async def sasl_auth(self, mechanism: str, initial: bytes | None) -> ET.Element:
        payload = "=" if initial == b"" else (base64.b64encode(initial).decode() if initial else "")
        await self.send(f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{payload}</auth>")
        return await self.read_element()

    def sasl_outcome(self, element: ET.Element) -> SaslOutcome:
        assert namespace(element.tag) == NS_SASL, f"not a SASL reply: {element_text(element)}\n{self.dump()}"
        name = local_name(element.tag)
        if name == "success":
            return SaslOutcome(True, None, element)
        assert name == "failure", f"expected <success/> or <failure/>, got {element_text(element)}\n{self.dump()}"
        condition = next(
            (local_name(c.tag) for c in element if namespace(c.tag) == NS_SASL and local_name(c.tag) != "text"), None
        )
        return SaslOutcome(False, condition, element)

    async def auth_plain(self, username: str, password: str) -> SaslOutcome:
        return self.sasl_outcome(await self.sasl_auth("PLAIN", f"\0{username}\0{password}".encode()))

    async def auth_scram(self, scram: ScramClient, mechanism: str) -> SaslOutcome:
        """A whole SCRAM exchange; the server's signature is verified on success."""
        reply = await self.sasl_auth(mechanism, scram.client_first())
        if local_name(reply.tag) != "challenge":
            return self.sasl_outcome(reply)
        final = scram.client_final(base64.b64decode(reply.text or ""))
        await self.send(f"<response xmlns='{NS_SASL}'>{base64.b64encode(final).decode()}</response>")
        reply = await self.read_element()
        if local_name(reply.tag) == "challenge":
            scram.verify_server_final(base64.b64decode(reply.text or ""))
            await self.send(f"<response xmlns='{NS_SASL}'/>")
            reply = await self.read_element()
        outcome = self.sasl_outcome(reply)
        if outcome.success:
            assert reply.text, "SCRAM success without the server-final message\n" + self.dump()
            scram.verify_server_final(base64.b64decode(reply.text))
        return outcome

    async def authenticate(self, username: str, password: str, mechanism: str = "PLAIN") -> None:
        if mechanism == "PLAIN":
            outcome = await self.auth_plain(username, password)
        else:
            outcome = await self.auth_scram(ScramClient(mechanism, username, password), mechanism)
        assert outcome.success, f"{mechanism} login of {username} refused ({outcome.condition})\n{self.dump()}"

    async def bind(self, resource: str = "web") -> str:
        """Restart with a new ``<open/>`` after SASL, bind ``resource``; returns the full JID."""
        await self.open()
        features = await self.read_features()
        assert features.find(f"{{{NS_BIND}}}bind") is not None, "no bind feature after SASL\n" + self.dump()
        await self.send(
            f"<iq xmlns='jabber:client' type='set' id='bind1'>"
            f"<bind xmlns='{NS_BIND}'><resource>{resource}</resource></bind></iq>"
        )
        reply = await self.read_until("{jabber:client}iq", what="(bind result)")
        jid = reply.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid")
        assert reply.get("id") == "bind1" and reply.get("type") == "result" and jid is not None, (
            "bind failed\n" + self.dump()
        )
        return jid.text or ""

    async def login(self, username: str, password: str, mechanism: str = "PLAIN", resource: str = "web") -> str:
        """``<open/>``, SASL, restart and bind; returns the bound full JID."""
        await self.open()
        await self.read_features()
        await self.authenticate(username, password, mechanism)
        return await self.bind(resource)

    async def ping(self, iq_id: str = "ping1", to: str = DOMAIN) -> ET.Element:
        """XEP-0199 ping; returns the reply (not checked)."""
        await self.send(f"<iq xmlns='jabber:client' type='get' id='{iq_id}' to='{to}'><ping xmlns='{NS_PING}'/></iq>")
        while True:
            reply = await self.read_until("{jabber:client}iq", what=f"(answer to {iq_id})")
            if reply.get("id") == iq_id:
                return reply


async def logged_in_ws(
    server: JackdawServer, user: str, password: str, mechanism: str = "PLAIN", resource: str = "web"
) -> WsStream:
    stream = await WsStream.connect(server)
    try:
        await stream.login(user, password, mechanism, resource)
    except BaseException:
        await stream.aclose()
        raise
    return stream
