"""The operator's web app for ``component_http``: a bot written as an HTTP
handler, the way ``../shared/seeds/mod_component_http.md`` describes it.

Jackdaw POSTs every forwarded stanza to :attr:`BotWebApp.url` as JSON
``{to, from, kind, stanza, body}``; the web app answers with what the test's
handler returns (a :class:`Reply`: status, JSON or raw body, content type,
optional delay). The default handler is an echo bot: a message with a body
is answered ``200 {"body": "echo: <body>"}``, anything else ``204``.

Tests steer it from Python, not over HTTP:

* :attr:`BotWebApp.handler` (settable at any time) decides each answer;
  :func:`reply_with` makes a handler that always gives the same reply;
* ``secret``: the web app checks the ``X-Jackdaw-Timestamp`` /
  ``X-Jackdaw-Signature`` headers as a real receiver would
  (:func:`check_signature`) and answers ``401`` to a request that fails;
* :meth:`BotWebApp.stop` closes the port and every keep-alive connection
  (Jackdaw's next POST is refused), :meth:`BotWebApp.start` reopens it;
  a :class:`Reply` with a ``delay`` is released early by :meth:`release`
  or :meth:`stop`;
* :attr:`BotWebApp.log` holds every request as received (:class:`Post`:
  headers, raw body, decoded JSON, the status answered, timings), and
  :attr:`peak_inflight_by_sender` how many POSTs for one sender were ever
  being handled at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from .http_server import TrackingHandler, TrackingServer

log = logging.getLogger("e2e.bot_webapp")

TIMESTAMP_HEADER = "X-Jackdaw-Timestamp"
SIGNATURE_HEADER = "X-Jackdaw-Signature"
#: How old a signed request's timestamp may be (as webhook receivers usually allow).
SIGNATURE_MAX_AGE = 300


# --- signatures ----------------------------------------------------------------


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The documented header value: ``sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def check_signature(
    secret: str, headers: dict[str, str], body: bytes, now: float | None = None, max_age: float = SIGNATURE_MAX_AGE
) -> str | None:
    """What is wrong with a request's signature, or None when it verifies.

    ``headers`` has lower-cased names (as :attr:`Post.headers`).
    """
    timestamp = headers.get(TIMESTAMP_HEADER.lower())
    given = headers.get(SIGNATURE_HEADER.lower())
    if timestamp is None or given is None:
        return f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}"
    if not timestamp.isdigit():
        return f"{TIMESTAMP_HEADER} {timestamp!r} is not unix seconds"
    age = (time.time() if now is None else now) - int(timestamp)
    if abs(age) > max_age:
        return f"{TIMESTAMP_HEADER} is {age:.0f} s off"
    if not hmac.compare_digest(given.encode(), signature(secret, timestamp, body).encode()):
        return f"{SIGNATURE_HEADER} {given!r} does not match"
    return None


# --- requests and replies ------------------------------------------------------


@dataclass
class Reply:
    """What the web app answers: ``json`` (serialised) or a raw ``body``, with a
    ``content_type`` (None: no Content-Type header), after ``delay`` seconds."""

    status: int = 200
    json: Any = None
    body: bytes | str | None = None
    content_type: str | None = "application/json"
    delay: float = 0.0
    headers: list[tuple[str, str]] = field(default_factory=list)

    def payload(self) -> bytes:
        if self.body is not None:
            return self.body.encode() if isinstance(self.body, str) else self.body
        if self.json is not None:
            return json.dumps(self.json).encode()
        return b""


@dataclass
class Post:
    """One request as the web app received it."""

    verb: str
    path: str
    #: Header names lower-cased.
    headers: dict[str, str]
    raw: bytes
    #: The decoded JSON body (None if it was not JSON).
    data: Any = None
    #: Why the web app refused it (bad JSON, bad signature), if it did.
    problem: str | None = None
    status: int | None = None
    received_at: float = field(default_factory=time.monotonic)
    answered_at: float | None = None

    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default) if isinstance(self.data, dict) else default

    @property
    def to(self) -> str | None:
        return self.get("to")

    @property
    def sender(self) -> str | None:
        """The ``from`` of the JSON."""
        return self.get("from")

    @property
    def kind(self) -> str | None:
        return self.get("kind")

    @property
    def body(self) -> str | None:
        return self.get("body")

    @property
    def stanza(self) -> str | None:
        return self.get("stanza")

    def element(self) -> ET.Element:
        """The ``stanza`` field parsed as XML (fails the test if it is not well-formed)."""
        try:
            return ET.fromstring(self.stanza or "")
        except ET.ParseError as error:
            raise AssertionError(f"the posted stanza is not well-formed XML ({error}): {self.stanza!r}") from None

    def describe(self) -> str:
        return f"{self.verb} {self.path} {self.raw.decode(errors='replace')} -> {self.status}" + (
            f" ({self.problem})" if self.problem else ""
        )

    def __str__(self) -> str:
        return self.describe()


Handler = Callable[[Post], Reply]


def echo(post: Post) -> Reply:
    """The echo bot: a message with a body gets ``{"body": "echo: <body>"}``, anything else 204."""
    if post.kind == "message" and post.body is not None:
        return Reply(json={"body": f"echo: {post.body}"})
    return Reply(204)


def reply_with(status: int = 200, **kwargs: Any) -> Handler:
    """A handler answering every request the same way (see :class:`Reply`)."""
    return lambda _post: Reply(status, **kwargs)


# --- the HTTP server -----------------------------------------------------------


class _Server(TrackingServer):
    label = "bot web app"

    def __init__(self, address: tuple[str, int], app: BotWebApp) -> None:
        super().__init__(address, app, _Handler)
        self.app: BotWebApp = app


class _Handler(TrackingHandler):
    server_version = "JackdawTestBot/1"
    server: _Server

    def do_POST(self) -> None:  # noqa: N802
        self.server.app.handle(self)

    def do_GET(self) -> None:  # noqa: N802
        self.server.app.handle(self)

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def answer(self, reply: Reply) -> bool:
        payload = reply.payload()
        try:
            self.send_response(reply.status)
            if reply.content_type is not None:
                self.send_header("Content-Type", reply.content_type)
            if reply.status not in (204, 304) and not 100 <= reply.status < 200:
                self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            if reply.status not in (204, 304):
                self.wfile.write(payload)
            self.wfile.flush()
            return True
        except OSError:
            self.close_connection = True  # Jackdaw gave up (its timeout) and hung up
            return False


class BotWebApp:
    """``BotWebApp().start()``, then give Jackdaw :attr:`url` as ``component_post_url``."""

    def __init__(
        self,
        handler: Handler = echo,
        *,
        path: str = "/bot",
        secret: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.handler = handler
        self.path = path
        self.secret = secret
        self.host = host
        self.port = port
        self.lock = threading.Lock()
        self.log: list[Post] = []
        self.inflight = 0
        self.peak_inflight = 0
        self._inflight_by_sender: dict[str, int] = {}
        #: For each JSON ``from``, the most POSTs being handled at once.
        self.peak_inflight_by_sender: dict[str, int] = {}
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------

    @property
    def base(self) -> str:
        assert self.port, "the bot web app was never started"
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The ``component_post_url``: ``http://127.0.0.1:PORT/bot``."""
        return self.base + self.path

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> BotWebApp:
        assert self._server is None, "the bot web app is already running"
        self._release.clear()
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"bot:{self.port}", daemon=True
        )
        self._thread.start()
        log.debug("bot web app listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Close the port and every open connection; delayed answers are dropped."""
        server, self._server = self._server, None
        if server is None:
            return
        self._release.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        log.debug("bot web app on port %s stopped", self.port)

    def release(self) -> None:
        """Let every delayed answer go now (and any later one too, until :meth:`start`)."""
        self._release.set()

    def __enter__(self) -> BotWebApp:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- the request log ---------------------------------------------------

    def posts(self, match: Callable[[Post], bool] | None = None) -> list[Post]:
        with self.lock:
            found = list(self.log)
        return [post for post in found if match is None or match(post)]

    def clear_log(self) -> None:
        with self.lock:
            self.log.clear()

    def describe_log(self) -> str:
        return "\n  ".join(post.describe() for post in self.posts()) or "(no requests)"

    async def wait_posts(
        self,
        count: int,
        match: Callable[[Post], bool] | None = None,
        timeout: float = 10.0,
        answered: bool = True,
        what: str = "",
    ) -> list[Post]:
        """The first ``count`` logged requests for which ``match`` holds, waiting up to
        ``timeout`` s (and, with ``answered``, until each was answered)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.posts(match)
            if len(found) >= count and (not answered or all(post.status is not None for post in found[:count])):
                return found[:count]
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"the bot web app got {len(found)} of {count} expected requests {what} in {timeout} s; "
                    "it got:\n  " + self.describe_log()
                )
            await asyncio.sleep(0.02)

    async def wait_post(self, match: Callable[[Post], bool] | None = None, **kwargs: Any) -> Post:
        return (await self.wait_posts(1, match, **kwargs))[0]

    # --- serving -----------------------------------------------------------

    def handle(self, handler: _Handler) -> None:
        try:
            raw = handler.read_body()
        except (OSError, ValueError):
            handler.close_connection = True
            return
        post = Post(
            verb=handler.command,
            path=handler.path,
            headers={name.lower(): value for name, value in handler.headers.items()},
            raw=raw,
        )
        try:
            post.data = json.loads(raw)
        except ValueError as error:
            post.problem = f"body is not JSON: {error}"
        sender = str(post.sender)
        with self.lock:
            self.log.append(post)
            self.inflight += 1
            self.peak_inflight = max(self.peak_inflight, self.inflight)
            self._inflight_by_sender[sender] = self._inflight_by_sender.get(sender, 0) + 1
            self.peak_inflight_by_sender[sender] = max(
                self.peak_inflight_by_sender.get(sender, 0), self._inflight_by_sender[sender]
            )
        try:
            reply = self._respond(post)
            if reply.delay:
                self._release.wait(reply.delay)
        except Exception as error:  # noqa: BLE001 - a broken test handler answers 599, loudly
            log.exception("bot web app handler failed")
            post.problem = f"the test's handler raised {error!r}"
            reply = Reply(599, body=str(error), content_type="text/plain")
        finally:
            with self.lock:
                self.inflight -= 1
                self._inflight_by_sender[sender] -= 1
        if not self.running and reply.delay:
            handler.close_connection = True
            return  # stopped while delaying: no answer at all
        post.status = reply.status
        post.answered_at = time.monotonic()
        if not handler.answer(reply):
            post.problem = (post.problem or "") + " (Jackdaw hung up before the answer)"
        log.debug("bot web app: %s", post.describe())

    def _respond(self, post: Post) -> Reply:
        if post.verb != "POST":
            post.problem = "not a POST"
            return Reply(405, body="POST only", content_type="text/plain")
        if post.path != self.path:
            post.problem = f"not {self.path}"
            return Reply(404, body="no such bot", content_type="text/plain")
        if self.secret is not None:
            problem = check_signature(self.secret, post.headers, post.raw)
            if problem is not None:
                post.problem = problem
                return Reply(401, body=problem, content_type="text/plain")
        if post.problem is not None:
            return Reply(400, body=post.problem, content_type="text/plain")
        return self.handler(post)
