"""XMPP over BOSH (XEP-0124, XEP-0206) and plain HTTP requests, driven by hand.

Jackdaw serves BOSH at ``/http-bind`` on its HTTP port and on its HTTPS port
(TLS with the server's self-signed certificate). This module speaks it with
the standard library only: :func:`http_request` sends one HTTP request on a
fresh connection (``http.client``) and :class:`BoshSession` is one BOSH
session, whose requests each run in a thread of their own (:func:`in_thread`)
so that several can be held by the server at once while slixmpp clients in
the same event loop keep working.

Every answer is parsed with a strict XML parser, so an answer that is not a
well-formed ``<body/>`` fails the test. Every request and answer is kept in
:attr:`BoshSession.transcript` (with its rid, HTTP status and how long the
server took), which failing assertions print.

Typical use::

    bosh = BoshSession(server, wait=2)
    await bosh.login("alice", PASSWORDS["alice"])      # create, SASL, restart, bind
    await bosh.send(f"<message xmlns='jabber:client' to='bob@localhost'>...")
    message = await bosh.expect("{jabber:client}message")   # long-polls until it comes
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import random
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from . import DOMAIN
from .raw import NS_BIND, NS_SASL, NS_STREAM, SaslOutcome, element_text, local_name, namespace, sasl_failure_condition
from .scram import ScramClient
from .server import JackdawServer

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_PING = "urn:xmpp:ping"
#: Prosody's path, which Jackdaw serves on its HTTP and HTTPS ports.
BOSH_PATH = "/http-bind"
#: How much longer than the session's ``wait`` an answer may take.
HTTP_SLACK = 8.0
DEFAULT_TIMEOUT = 10.0

T = TypeVar("T")


def xml_escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&apos;").replace('"', "&quot;")


class _LocalhostHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 that checks the certificate for the name ``localhost`` (SNI too)."""

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=DOMAIN)


def https_context(cafile: Path | None) -> ssl.SSLContext:
    """Trust ``cafile`` and check the name ``localhost``, or check nothing."""
    context = ssl.create_default_context()
    if cafile is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cafile=str(cafile))
    return context


@dataclass
class HttpReply:
    """One HTTP answer: status, headers (looked up without regard to case) and body."""

    status: int
    headers: dict[str, str]
    text: str
    #: Seconds from sending the request to having read the whole answer.
    elapsed: float

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def __str__(self) -> str:
        shown = self.text if len(self.text) <= 800 else self.text[:600] + "..." + self.text[-100:]
        return f"HTTP {self.status} {self.headers} ({self.elapsed:.2f} s): {shown}"


def http_request(
    server: JackdawServer,
    method: str,
    path: str,
    body: str | bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    https: bool = False,
    cafile: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> HttpReply:
    """One request on a new connection to the server's HTTP (or HTTPS) port.

    A ``Host`` in ``headers`` replaces the default ``127.0.0.1:PORT``.
    """
    if https:
        connection: http.client.HTTPConnection = _LocalhostHTTPSConnection(
            "127.0.0.1", server.https_port, timeout=timeout, context=https_context(cafile)
        )
    else:
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=timeout)
    if isinstance(body, str):
        body = body.encode()
    started = time.monotonic()
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        data = response.read()
        reply_headers = {name.lower(): value for name, value in response.getheaders()}
        return HttpReply(response.status, reply_headers, data.decode(errors="replace"), time.monotonic() - started)
    finally:
        connection.close()


def in_thread(function: Callable[..., T], *args, **kwargs) -> asyncio.Future[T]:
    """Run a blocking call in a thread of its own and return a future for its
    result. Not the default executor: it has only a few workers, and requests
    the server holds would queue behind one another there."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result = function(*args, **kwargs)
        except BaseException as error:  # noqa: B036 (handed to the awaiting test)
            if not loop.is_closed():
                loop.call_soon_threadsafe(settle, None, error)
        else:
            if not loop.is_closed():
                loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, daemon=True).start()
    return future


async def ahttp_request(server: JackdawServer, method: str, path: str, *args, **kwargs) -> HttpReply:
    """:func:`http_request` in a thread, for ``async`` tests."""
    return await in_thread(http_request, server, method, path, *args, **kwargs)


def health(server: JackdawServer) -> dict[str, int]:
    """``/health`` as numbers, e.g. ``{"sessions": 1, "bosh_sessions": 1}``."""
    reply = http_request(server, "GET", "/health")
    assert reply.status == 200 and reply.text.startswith("ok"), f"/health: {reply}"
    return {key: int(value) for key, value in (part.split("=", 1) for part in reply.text.split()[1:])}


async def wait_bosh_sessions(server: JackdawServer, count: int, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Wait until ``/health`` reports ``count`` BOSH sessions."""
    deadline = time.monotonic() + timeout
    while True:
        now = await in_thread(health, server)
        if now["bosh_sessions"] == count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"/health still reports {now} after {timeout} s, expected bosh_sessions={count}")
        await asyncio.sleep(0.2)


@dataclass
class BoshReply:
    """One answer to a BOSH request."""

    rid: int
    http: HttpReply
    #: The parsed ``<body/>``, if the answer is XML at all.
    body: ET.Element | None
    children: list[ET.Element] = field(default_factory=list)

    @property
    def status(self) -> int:
        return self.http.status

    @property
    def type(self) -> str | None:
        return self.body.get("type") if self.body is not None else None

    @property
    def condition(self) -> str | None:
        return self.body.get("condition") if self.body is not None else None

    @property
    def terminated(self) -> bool:
        return self.type == "terminate"

    def get(self, attribute: str) -> str | None:
        """An attribute of the ``<body/>`` (Clark notation for namespaced ones)."""
        return self.body.get(attribute) if self.body is not None else None

    @property
    def empty(self) -> bool:
        """A plain answer with nothing in it (what a held request gets after ``wait``)."""
        return self.status == 200 and self.body is not None and not self.children and not self.terminated


def parse_body(text: str) -> ET.Element:
    try:
        element = ET.fromstring(text)
    except ET.ParseError as error:
        raise AssertionError(f"the BOSH answer is not well-formed XML ({error}): {text!r}") from None
    assert element.tag == f"{{{NS_HTTPBIND}}}body", f"the BOSH answer is not a <body/>: {text!r}"
    return element


class BoshSession:
    """One BOSH session, e.g.::

    bosh = BoshSession(server, wait=2)
    created = await bosh.create()        # the session attributes and stream features
    await bosh.authenticate("alice", password, "SCRAM-SHA-256")
    jid = await bosh.bind("web")

    ``headers`` go with every request (e.g. ``Origin``, ``X-Forwarded-For``);
    ``https`` sends them to the HTTPS port, verifying the certificate
    against ``cafile`` when given.
    """

    def __init__(
        self,
        server: JackdawServer,
        *,
        wait: int = 2,
        hold: int = 1,
        to: str = DOMAIN,
        https: bool = False,
        cafile: Path | None = None,
        headers: dict[str, str] | None = None,
        rid: int | None = None,
    ) -> None:
        self.server = server
        self.wait = wait
        self.hold = hold
        self.to = to
        self.https = https
        self.cafile = cafile
        self.headers = {"Content-Type": "text/xml; charset=utf-8", **(headers or {})}
        #: The rid the next request gets.
        self.rid = rid if rid is not None else random.randint(10_000, 10_000_000)
        self.sid: str | None = None
        self.created: BoshReply | None = None
        #: The last ``<stream:features/>`` received (taken out of :attr:`inbox`).
        self.features: ET.Element | None = None
        #: The bound full JID, once bound.
        self.jid: str | None = None
        #: Elements received in answers and not yet taken by :meth:`expect`, in order.
        self.inbox: list[ET.Element] = []
        #: Every answer, in the order they arrived.
        self.replies: list[BoshReply] = []
        self.transcript: list[str] = []
        self._lock = threading.Lock()

    # --- requests ------------------------------------------------------------

    def next_rid(self) -> int:
        rid = self.rid
        self.rid += 1
        return rid

    def body_text(
        self, rid: int, payload: str = "", attrs: dict[str, str] | None = None, sid: str | None = None
    ) -> str:
        """A request ``<body/>`` for this session (``sid`` overrides ours)."""
        attributes = {"rid": str(rid)}
        session_id = sid if sid is not None else self.sid
        if session_id is not None:
            attributes["sid"] = session_id
        attributes.update(attrs or {})
        rendered = " ".join(f"{name}='{xml_escape(value)}'" for name, value in attributes.items())
        return f"<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' {rendered}>{payload}</body>"

    def _note(self, line: str) -> None:
        with self._lock:
            self.transcript.append(line)

    def post_text(self, text: str, rid: int = 0, headers: dict[str, str] | None = None) -> BoshReply:
        """POST ``text`` as it is (blocking); the answer's elements go to :attr:`inbox`."""
        shown = text if len(text) <= 600 else text[:300] + "..." + text[-100:]
        self._note(f"C[{rid}]: {shown}")
        reply = http_request(
            self.server,
            "POST",
            BOSH_PATH,
            text.encode(),
            {**self.headers, **(headers or {})},
            https=self.https,
            cafile=self.cafile,
            timeout=self.wait + HTTP_SLACK,
        )
        self._note(f"S[{rid}]: HTTP {reply.status} ({reply.elapsed:.2f} s) {reply.text}")
        body = None
        children: list[ET.Element] = []
        if reply.text.lstrip().startswith("<"):
            try:
                body = parse_body(reply.text)
            except AssertionError as problem:
                raise AssertionError(f"{problem}\n{self.dump()}") from None
            children = list(body)
        result = BoshReply(rid, reply, body, children)
        with self._lock:
            self.replies.append(result)
            self.inbox.extend(children)
        return result

    def start(
        self,
        payload: str = "",
        *,
        rid: int | None = None,
        attrs: dict[str, str] | None = None,
        sid: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> asyncio.Task[BoshReply]:
        """Send a request now (the rid is taken at once) and return the task
        waiting for its answer, which the server may hold up to ``wait`` s."""
        if rid is None:
            rid = self.next_rid()
        text = self.body_text(rid, payload, attrs, sid)
        return asyncio.ensure_future(in_thread(self.post_text, text, rid, headers))

    async def send(self, payload: str = "", **kwargs) -> BoshReply:
        """Send a request and wait for its answer."""
        return await self.start(payload, **kwargs)

    # --- the session ---------------------------------------------------------

    async def create(self, **attrs: str) -> BoshReply:
        """XEP-0124 §7.1 / XEP-0206 §3: the session request; keeps the sid."""
        attributes = {
            "to": self.to,
            "wait": str(self.wait),
            "hold": str(self.hold),
            "ver": "1.6",
            "xmpp:version": "1.0",
            "xml:lang": "en",
        }
        attributes.update(attrs)
        reply = await self.send(attrs=attributes)
        self.created = reply
        if reply.status == 200 and not reply.terminated:
            self.sid = reply.get("sid")
            assert self.sid, "the session creation answer has no sid\n" + self.dump()
            if (reply.get("wait") or "").isdigit():
                self.wait = int(reply.get("wait"))  # what the server granted bounds our HTTP timeout
            self.features = await self.expect(f"{{{NS_STREAM}}}features", what="(stream features of the new session)")
        return reply

    async def expect(
        self,
        tag: str | None,
        match: Callable[[ET.Element], bool] = lambda _element: True,
        timeout: float = DEFAULT_TIMEOUT,
        what: str = "",
    ) -> ET.Element:
        """The first received element ``tag`` (Clark notation; None: any) for
        which ``match`` is true; while there is none, long-poll with empty
        requests (each held by the server up to ``wait`` s)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for index, element in enumerate(self.inbox):
                    if (tag is None or element.tag == tag) and match(element):
                        del self.inbox[index]
                        return element
            if time.monotonic() > deadline:
                raise AssertionError(f"no {tag or 'element'} {what} within {timeout} s\n" + self.dump())
            reply = await self.send()
            if reply.status != 200 or reply.terminated:
                raise AssertionError(f"the session ended while waiting for {tag} {what}\n" + self.dump())

    def dump(self) -> str:
        with self._lock:
            lines = list(self.transcript[-40:])
        return f"BOSH exchange (sid {self.sid}):\n  " + "\n  ".join(lines)

    # --- SASL, restart, binding ----------------------------------------------

    async def sasl_reply(self, what: str = "(SASL answer)") -> ET.Element:
        return await self.expect(None, lambda element: namespace(element.tag) == NS_SASL, what=what)

    def sasl_outcome(self, element: ET.Element) -> SaslOutcome:
        name = local_name(element.tag)
        if name == "success":
            return SaslOutcome(True, None, element)
        assert name == "failure", f"expected <success/> or <failure/>, got {element_text(element)}\n{self.dump()}"
        return SaslOutcome(False, sasl_failure_condition(element), element)

    async def auth_plain(self, username: str, password: str) -> SaslOutcome:
        initial = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        await self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{initial}</auth>")
        return self.sasl_outcome(await self.sasl_reply("(answer to PLAIN)"))

    async def auth_scram(self, scram: ScramClient, mechanism: str) -> SaslOutcome:
        """A whole SCRAM exchange; the server's signature is verified on success."""
        first = base64.b64encode(scram.client_first()).decode()
        await self.send(f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{first}</auth>")
        reply = await self.sasl_reply("(SCRAM server-first)")
        if local_name(reply.tag) != "challenge":
            return self.sasl_outcome(reply)
        final = scram.client_final(base64.b64decode(reply.text or ""))
        await self.send(f"<response xmlns='{NS_SASL}'>{base64.b64encode(final).decode()}</response>")
        reply = await self.sasl_reply("(SCRAM outcome)")
        if local_name(reply.tag) == "challenge":
            scram.verify_server_final(base64.b64decode(reply.text or ""))
            await self.send(f"<response xmlns='{NS_SASL}'/>")
            reply = await self.sasl_reply("(SCRAM outcome)")
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

    async def restart(self) -> ET.Element:
        """XEP-0206 §5: restart the stream after SASL; returns the new features."""
        with self._lock:
            self.inbox = [element for element in self.inbox if element.tag != f"{{{NS_STREAM}}}features"]
        await self.send(attrs={"xmpp:restart": "true", "to": self.to, "xml:lang": "en"})
        self.features = await self.expect(f"{{{NS_STREAM}}}features", what="(after the restart)")
        return self.features

    async def bind(self, resource: str = "bosh") -> str:
        """Restart, bind ``resource`` and establish the (legacy) session; returns the full JID."""
        await self.restart()
        return await self.bind_resource(resource)

    async def bind_resource(self, resource: str = "bosh") -> str:
        """Bind ``resource`` on the restarted stream (and establish the legacy
        session if offered); returns the full JID, also kept in :attr:`jid`."""
        features = self.features
        assert features is not None and features.find(f"{{{NS_BIND}}}bind") is not None, (
            "no bind feature after SASL\n" + self.dump()
        )
        await self.send(
            f"<iq xmlns='jabber:client' type='set' id='bind1'>"
            f"<bind xmlns='{NS_BIND}'><resource>{xml_escape(resource)}</resource></bind></iq>"
        )
        reply = await self.expect("{jabber:client}iq", lambda iq: iq.get("id") == "bind1", what="(bind result)")
        jid = reply.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid")
        assert reply.get("type") == "result" and jid is not None, "bind failed\n" + self.dump()
        if features.find(f"{{{NS_SESSION}}}session") is not None:
            await self.send(f"<iq xmlns='jabber:client' type='set' id='sess1'><session xmlns='{NS_SESSION}'/></iq>")
            session = await self.expect("{jabber:client}iq", lambda iq: iq.get("id") == "sess1", what="(session)")
            assert session.get("type") == "result", "session establishment failed\n" + self.dump()
        self.jid = jid.text or ""
        return self.jid

    async def login(self, username: str, password: str, mechanism: str = "PLAIN", resource: str = "bosh") -> str:
        """Create the session (unless done), authenticate, restart and bind; returns the full JID."""
        if self.sid is None:
            created = await self.create()
            assert created.status == 200 and not created.terminated, "session creation refused\n" + self.dump()
        await self.authenticate(username, password, mechanism)
        return await self.bind(resource)

    async def ping(self, iq_id: str = "ping1") -> ET.Element:
        """XEP-0199 ping to the server; returns the reply (not checked)."""
        await self.send(ping_iq(iq_id))
        return await self.expect("{jabber:client}iq", lambda iq: iq.get("id") == iq_id, what=f"(answer to {iq_id})")


    async def terminate(self, payload: str = "") -> BoshReply:
        """XEP-0124 §12: end the session (``payload``, e.g. unavailable presence, goes out first)."""
        return await self.send(payload, attrs={"type": "terminate"})


def ping_iq(iq_id: str, to: str = DOMAIN) -> str:
    return f"<iq xmlns='jabber:client' type='get' id='{iq_id}' to='{to}'><ping xmlns='{NS_PING}'/></iq>"


async def logged_in_bosh(
    server: JackdawServer, user: str, password: str, mechanism: str = "PLAIN", resource: str = "bosh", **options
) -> BoshSession:
    """A new BOSH session logged in as ``user`` (``options`` as for :class:`BoshSession`)."""
    session = BoshSession(server, **options)
    await session.login(user, password, mechanism, resource)
    return session
