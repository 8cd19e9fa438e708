"""A raw XMPP stream over a blocking socket, for input no real client sends.

Everything the server sends is parsed with a strict XML parser, so a reply
that is not well-formed fails the test too, and kept in :attr:`transcript`
so that a failing assertion can show the exact exchange.
"""

from __future__ import annotations

import base64
import socket
import ssl
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from . import DOMAIN
from .scram import ScramClient

NS_CLIENT = "jabber:client"
NS_STREAM = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SASL_CB = "urn:xmpp:sasl-cb:0"
NS_REGISTER_FEATURE = "http://jabber.org/features/iq-register"

DEFAULT_TIMEOUT = 10.0


def stream_header(
    to: str = DOMAIN,
    content_ns: str = NS_CLIENT,
    stream_ns: str = NS_STREAM,
    version: str = "1.0",
) -> bytes:
    return (
        f"<?xml version='1.0'?><stream:stream xmlns='{content_ns}' xmlns:stream='{stream_ns}' "
        f"to='{to}' version='{version}' xml:lang='en'>"
    ).encode()


def client_tls_context(cafile: Path | None = None) -> ssl.SSLContext:
    """A client TLS context: verify against ``cafile`` for ``localhost``, or not at all."""
    context = ssl.create_default_context()
    if cafile is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cafile=str(cafile))
    return context


class StreamClosed(AssertionError):
    """The server closed the stream or the connection when we expected more."""


@dataclass
class StreamError:
    """A ``<stream:error/>`` as the user sees it."""

    condition: str
    text: str | None
    #: The server ended its stream (or the connection) after the error.
    closed_afterwards: bool


@dataclass
class SaslOutcome:
    """How a SASL exchange ended: ``success`` or the ``<failure/>`` condition."""

    success: bool
    condition: str | None
    element: ET.Element


def local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def namespace(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def element_text(element: ET.Element) -> str:
    return ET.tostring(element, encoding="unicode")


def sasl_failure_condition(element: ET.Element) -> str | None:
    for child in element:
        if namespace(child.tag) == NS_SASL and local_name(child.tag) != "text":
            return local_name(child.tag)
    return None


class RawStream:
    """One client connection to Jackdaw, driven by hand.

    Typical use::

        stream = RawStream.connect(server.c2s_port)
        stream.open()                  # sends our header, reads theirs
        features = stream.read_features()
        stream.starttls()              # proceed, handshake, new stream
    """

    def __init__(self, sock: socket.socket, tls_context: ssl.SSLContext | None = None) -> None:
        self.sock = sock
        self.tls_context = tls_context or client_tls_context()
        self.transcript: list[str] = []
        self.stream_attributes: dict[str, str] = {}
        self.eof = False  # the server closed the connection
        self._new_parser()

    # --- connecting --------------------------------------------------------

    @classmethod
    def connect(
        cls,
        port: int,
        direct_tls: bool = False,
        tls_context: ssl.SSLContext | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> "RawStream":
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        stream = cls(sock, tls_context)
        if direct_tls:
            stream._wrap_tls()
        return stream

    def _wrap_tls(self) -> None:
        self.sock = self.tls_context.wrap_socket(self.sock, server_hostname=DOMAIN)
        self.transcript.append(f"-- TLS established: {self.sock.version()}")

    @property
    def ssl_object(self) -> ssl.SSLSocket:
        assert isinstance(self.sock, ssl.SSLSocket), "stream is not encrypted"
        return self.sock

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawStream":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- bytes out ---------------------------------------------------------

    def send(self, data: bytes | str) -> None:
        """Send bytes; a server that already closed on us is not an error here."""
        if isinstance(data, str):
            data = data.encode()
        shown = data if len(data) <= 600 else data[:300] + b"..." + data[-100:]
        self.transcript.append(f"C: {shown.decode(errors='replace')}")
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError) as error:
            self.transcript.append(f"-- send failed: {error!r}")

    # --- bytes in ----------------------------------------------------------

    def _new_parser(self) -> None:
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.root: ET.Element | None = None
        self.pending: list[ET.Element] = []
        self.stream_opened = False
        self.stream_ended = False  # the server sent </stream:stream>

    def _feed(self, data: bytes) -> None:
        self.transcript.append(f"S: {data.decode(errors='replace')}")
        if self.stream_ended:
            return  # nothing may follow the closing tag; keep it in the transcript only
        try:
            self.parser.feed(data)
            for event, element in self.parser.read_events():
                if event == "start":
                    self.depth += 1
                    if self.depth == 1:
                        self.root = element
                        self.stream_opened = True
                        self.stream_attributes = dict(element.attrib)
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        self.pending.append(element)
                        assert self.root is not None
                        self.root.remove(element)
                    elif self.depth == 0:
                        self.stream_ended = True
        except ET.ParseError as error:
            raise AssertionError(f"the server sent XML that is not well-formed ({error})\n" + self.dump()) from None

    def _receive(self, deadline: float) -> bool:
        """Read once; False when the server has closed the connection."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("nothing from the server in time\n" + self.dump())
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            raise TimeoutError("nothing from the server in time\n" + self.dump()) from None
        except (ConnectionResetError, ssl.SSLError, OSError) as error:
            self.transcript.append(f"-- connection lost: {error!r}")
            data = b""
        if not data:
            self.transcript.append("-- connection closed by server")
            self.eof = True
            return False
        self._feed(data)
        return True

    def read_element(self, timeout: float = DEFAULT_TIMEOUT) -> ET.Element:
        """The next top-level element of the server's stream (a stanza, features, ...)."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            if self.stream_ended or not self._receive(deadline):
                raise StreamClosed("the server closed the stream\n" + self.dump())
        return self.pending.pop(0)

    def read_stream_header(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while not self.stream_opened:
            if not self._receive(deadline):
                raise StreamClosed("closed before the server opened its stream\n" + self.dump())
        return self.stream_attributes

    def wait_stream_end(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """True if the server ends its stream or the connection within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        try:
            while not (self.stream_ended or self.eof):
                self._receive(deadline)
        except TimeoutError:
            return False
        return True

    def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """True if the server closes the TCP connection within ``timeout`` s.

        When the server ends its stream first, we answer with our closing
        tag, as RFC 6120 §4.4 asks, so a polite server may then close.
        """
        deadline = time.monotonic() + timeout
        answered = False
        try:
            while not self.eof:
                if self.stream_ended and not answered:
                    self.send("</stream:stream>")
                    answered = True
                self._receive(deadline)
        except TimeoutError:
            return False
        return True

    def dump(self) -> str:
        return "exchange so far:\n  " + "\n  ".join(self.transcript[-40:])

    # --- stream level ------------------------------------------------------

    def open(self, **header: str) -> dict[str, str]:
        """Send our stream header and read the server's; returns its attributes."""
        self._new_parser()
        self.send(stream_header(**header))
        return self.read_stream_header()

    def read_features(self, timeout: float = DEFAULT_TIMEOUT) -> ET.Element:
        element = self.read_element(timeout)
        assert element.tag == f"{{{NS_STREAM}}}features", (
            f"expected <stream:features/>, got {element_text(element)}\n" + self.dump()
        )
        return element

    def expect_stream_error(self, timeout: float = DEFAULT_TIMEOUT) -> StreamError:
        """Read until a ``<stream:error/>``; also waits for the server to close."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            element = self.read_element(remaining)
            if element.tag == f"{{{NS_STREAM}}}error":
                break
        condition, text = None, None
        for child in element:
            if namespace(child.tag) == NS_STREAM_ERRORS:
                if local_name(child.tag) == "text":
                    text = child.text
                else:
                    condition = local_name(child.tag)
        assert condition is not None, f"stream error without a condition\n{self.dump()}"
        return StreamError(condition, text, self.wait_stream_end(timeout=5))

    def starttls(self) -> ET.Element:
        """STARTTLS on the current stream, then a new stream; returns the new features."""
        self.send(f"<starttls xmlns='{NS_TLS}'/>")
        reply = self.read_element()
        assert reply.tag == f"{{{NS_TLS}}}proceed", f"STARTTLS refused: {element_text(reply)}\n{self.dump()}"
        self._wrap_tls()
        self.open()
        return self.read_features()

    def connect_encrypted(self, direct_tls: bool) -> ET.Element:
        """Open the stream and get to TLS; returns the features offered over TLS."""
        self.open()
        features = self.read_features()
        if direct_tls:
            return features
        return self.starttls()

    # --- SASL --------------------------------------------------------------

    def sasl_auth(self, mechanism: str, initial: bytes | None) -> ET.Element:
        payload = "=" if initial == b"" else (base64.b64encode(initial).decode() if initial else "")
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{payload}</auth>")
        return self.read_element()

    def sasl_outcome(self, element: ET.Element) -> SaslOutcome:
        name = local_name(element.tag)
        assert namespace(element.tag) == NS_SASL, f"not a SASL reply: {element_text(element)}\n{self.dump()}"
        if name == "success":
            return SaslOutcome(True, None, element)
        assert name == "failure", f"expected <success/> or <failure/>, got {element_text(element)}\n{self.dump()}"
        return SaslOutcome(False, sasl_failure_condition(element), element)

    def auth_plain(self, username: str, password: str) -> SaslOutcome:
        reply = self.sasl_auth("PLAIN", f"\0{username}\0{password}".encode())
        return self.sasl_outcome(reply)

    def auth_scram(self, scram: ScramClient, mechanism: str) -> SaslOutcome:
        """Run a SCRAM exchange; a failure at any step ends it."""
        reply = self.sasl_auth(mechanism, scram.client_first())
        if local_name(reply.tag) != "challenge":
            return self.sasl_outcome(reply)
        final = scram.client_final(base64.b64decode(reply.text or ""))
        self.send(f"<response xmlns='{NS_SASL}'>{base64.b64encode(final).decode()}</response>")
        reply = self.read_element()
        if local_name(reply.tag) == "challenge":  # RFC 6120 lets the server-final come as a challenge
            scram.verify_server_final(base64.b64decode(reply.text or ""))
            self.send(f"<response xmlns='{NS_SASL}'/>")
            reply = self.read_element()
        outcome = self.sasl_outcome(reply)
        if outcome.success and reply.text:
            scram.verify_server_final(base64.b64decode(reply.text))
        return outcome

    def bind(self, resource: str = "raw") -> str:
        """Restart the stream after SASL success, bind ``resource``, return the full JID."""
        self.open()
        features = self.read_features()
        assert features.find(f"{{{NS_BIND}}}bind") is not None, f"no bind feature\n{self.dump()}"
        self.send(f"<iq type='set' id='bind1'><bind xmlns='{NS_BIND}'><resource>{resource}</resource></bind></iq>")
        reply = self.read_element()
        jid = reply.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid")
        assert reply.get("type") == "result" and jid is not None, f"bind failed\n{self.dump()}"
        return jid.text or ""

    def login_plain(self, username: str, password: str, direct_tls: bool, resource: str = "raw") -> str:
        """TLS, SASL PLAIN and resource binding; returns the bound full JID."""
        self.connect_encrypted(direct_tls)
        outcome = self.auth_plain(username, password)
        assert outcome.success, f"PLAIN login refused ({outcome.condition})\n{self.dump()}"
        return self.bind(resource)


def mechanisms_of(features: ET.Element) -> list[str]:
    """The SASL mechanisms a ``<stream:features/>`` offers."""
    return [
        (mechanism.text or "").strip()
        for mechanism in features.findall(f"{{{NS_SASL}}}mechanisms/{{{NS_SASL}}}mechanism")
    ]


def channel_binding_types_of(features: ET.Element) -> list[str]:
    """The channel-binding types a ``<stream:features/>`` advertises (XEP-0440)."""
    return [
        binding.get("type", "")
        for binding in features.findall(f"{{{NS_SASL_CB}}}sasl-channel-binding/{{{NS_SASL_CB}}}channel-binding")
    ]
