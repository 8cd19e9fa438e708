"""The operator's web app for ``modules_enabled = ["muc_http_auth"]`` (issue 7,
seed ``../shared/seeds/mod_muc_http_auth.md``): a real HTTP server on
loopback deciding who may join which room under which nickname.

Jackdaw asks ``GET {muc_http_auth_url}?userJID=<bare>&mucJID=<room>&nickname=<nick>``
and expects ``200`` with ``{"allowed": true|false, "error": "..."}``. The web
app answers on :data:`PATH` (``/can-join``); anything else is ``404``, a
verb other than GET ``405``, a missing, empty or repeated parameter or a
query that is not UTF-8 ``400``. With ``authorization`` set, a request
without exactly that ``Authorization`` header value is answered ``401``.

Tests drive it from Python (see :class:`MucAuthWebApp`):

* :attr:`MucAuthWebApp.decide` turns a :class:`JoinRequest` into a
  :class:`Decision` (default: everyone allowed); :func:`refuse_when` builds
  one that refuses the requests a predicate picks, with an error text;
* :attr:`MucAuthWebApp.mode` breaks it: ``"normal"``, ``"status:NNN"`` (that
  status, a JSON body that would allow), ``"garbage"`` (200, body ``maybe``),
  ``"no-allowed"`` (200, ``{"error": ""}``: JSON without ``allowed``),
  ``"hang"`` (answer nothing until the mode changes, the web app stops, the
  client hangs up, or ``hang_seconds`` pass);
* :meth:`MucAuthWebApp.stop` closes the port and every keep-alive connection
  (Jackdaw's next request is refused), :meth:`MucAuthWebApp.start` listens
  again on the same port;
* :attr:`MucAuthWebApp.log` keeps every request as received: the raw query
  string, the decoded parameters, the headers, the client's address and port
  (one per kept-alive connection) and the status answered.

Parameters are decoded as every web framework decodes a query string
(``application/x-www-form-urlencoded``: ``+`` is a space, ``%XX`` UTF-8).
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit
from .http_server import TrackingHandler, TrackingServer

log = logging.getLogger("e2e.muc_auth_webapp")

PATH = "/can-join"
PARAMETERS = ("userJID", "mucJID", "nickname")
#: The longest a "hang" lasts if nobody releases it.
DEFAULT_HANG_SECONDS = 30.0
MODES = ("normal", "garbage", "no-allowed", "hang")


@dataclass
class JoinRequest:
    """One HTTP request as the web app received it."""

    verb: str
    #: The request target's path, still percent-encoded.
    path: str
    #: The raw query string (after ``?``), exactly as sent.
    raw_query: str
    #: Header names lower-cased; a repeated header keeps its last value.
    headers: dict[str, str]
    #: Every value of each decoded query parameter, in order.
    query: dict[str, list[str]] = field(default_factory=dict)
    #: The client's (address, port): the same for requests over one kept-alive connection.
    peer: tuple[str, int] | None = None
    #: The status the web app answered (None while it has not, or never did).
    status: int | None = None
    #: The body answered.
    answer: str = ""
    #: Why the web app refused it (400/401/404/405), for failure messages.
    problem: str | None = None
    received_at: float = field(default_factory=time.monotonic)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def user(self) -> str | None:
        return self.param("userJID")

    @property
    def room(self) -> str | None:
        return self.param("mucJID")

    @property
    def nick(self) -> str | None:
        return self.param("nickname")

    @property
    def triple(self) -> tuple[str | None, str | None, str | None]:
        """``(userJID, mucJID, nickname)`` as decoded."""
        return self.user, self.room, self.nick

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")

    def describe(self) -> str:
        target = self.path + (f"?{self.raw_query}" if self.raw_query else "")
        auth = f" Authorization: {self.authorization}" if self.authorization is not None else ""
        outcome = f"{self.status} {self.answer}" if self.status is not None else "(no answer)"
        return f"{self.verb} {target}{auth} -> {outcome}" + (f" ({self.problem})" if self.problem else "")

    def __str__(self) -> str:
        return self.describe()


@dataclass
class Decision:
    """The web app's verdict: ``{"allowed": allowed, "error": error}``."""

    allowed: bool
    error: str = ""

    def body(self) -> str:
        return json.dumps({"allowed": self.allowed, "error": self.error})


Decide = Callable[[JoinRequest], Decision]


def allow_everyone(_request: JoinRequest) -> Decision:
    return Decision(True)


def refuse_everyone(error: str = "You may not join this room") -> Decide:
    return lambda _request: Decision(False, error)


def refuse_when(predicate: Callable[[JoinRequest], bool], error: str) -> Decide:
    """Refuse (with ``error``) the requests for which ``predicate`` holds, allow the rest."""
    return lambda request: Decision(False, error) if predicate(request) else Decision(True)


class _Server(TrackingServer):
    label = "muc auth web app"

    def __init__(self, address: tuple[str, int], app: MucAuthWebApp) -> None:
        super().__init__(address, app, _Handler)
        self.app: MucAuthWebApp = app


class _Handler(TrackingHandler):
    server_version = "JackdawTestMucAuth/1"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.app.handle(self)

    def do_POST(self) -> None:  # noqa: N802
        self.server.app.handle(self)

    def do_HEAD(self) -> None:  # noqa: N802
        self.server.app.handle(self)

    def answer(self, status: int, body: str, content_type: str, extra: list[tuple[str, str]]) -> None:
        payload = body.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in extra:
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # Jackdaw gave up (its timeout) and hung up


class MucAuthWebApp:
    """``MucAuthWebApp().start()``, then give Jackdaw :attr:`url` as ``muc_http_auth_url``."""

    def __init__(
        self,
        decide: Decide = allow_everyone,
        *,
        authorization: str | None = None,
        hang_seconds: float = DEFAULT_HANG_SECONDS,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.decide = decide
        self.authorization = authorization
        self.hang_seconds = hang_seconds
        self.host = host
        self.port = port
        self.lock = threading.Lock()
        self.log: list[JoinRequest] = []
        self._mode = "normal"
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    # --- behaviour ---------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES and not (value.startswith("status:") and value[7:].isdigit()):
            raise ValueError(f"unknown mode {value!r}: {', '.join(MODES)} or status:NNN")
        if value.startswith("status:"):
            HTTPStatus(int(value[7:]))
        self._mode = value  # a "hang" in progress sees the change and is released

    # --- lifecycle ---------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        """The ``muc_http_auth_url``: ``http://127.0.0.1:PORT/can-join``."""
        assert self.port, "the web app was never started"
        return f"http://{self.host}:{self.port}{PATH}"

    def start(self) -> MucAuthWebApp:
        """Listen (again, on the same port once one was chosen) and serve in a thread."""
        assert self._server is None, "the web app is already running"
        self._stopping = False
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"mucauth:{self.port}", daemon=True
        )
        self._thread.start()
        log.debug("muc auth web app listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Close the listening socket and every open connection: Jackdaw's next
        request finds the port closed (connection refused)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        log.debug("muc auth web app on port %s stopped", self.port)

    def __enter__(self) -> MucAuthWebApp:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- the request log ---------------------------------------------------

    def requests(self, match: Callable[[JoinRequest], bool] | None = None) -> list[JoinRequest]:
        """The requests received so far for which ``match`` holds, oldest first."""
        with self.lock:
            found = list(self.log)
        return [r for r in found if match is None or match(r)]

    def asked(self, user: str | None = None, room: str | None = None, nick: str | None = None) -> list[JoinRequest]:
        """The requests about ``user`` / ``room`` / ``nick`` (None: any)."""
        return self.requests(
            lambda r: (user is None or r.user == user)
            and (room is None or r.room == room)
            and (nick is None or r.nick == nick)
        )

    def clear_log(self) -> None:
        with self.lock:
            self.log.clear()

    def describe_log(self) -> str:
        return "\n  ".join(r.describe() for r in self.requests()) or "(no requests)"

    async def wait_request(
        self,
        match: Callable[[JoinRequest], bool] | None = None,
        timeout: float = 10.0,
        answered: bool = True,
    ) -> JoinRequest:
        """The first logged request for which ``match`` holds, waiting up to
        ``timeout`` s (and, with ``answered``, until it was answered)."""
        deadline = time.monotonic() + timeout
        while True:
            for request in self.requests(match):
                if not answered or request.status is not None:
                    return request
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"the muc auth web app got no matching request in {timeout} s; it got:\n  " + self.describe_log()
                )
            await asyncio.sleep(0.02)

    # --- serving -----------------------------------------------------------

    def handle(self, handler: _Handler) -> None:
        target = urlsplit(handler.path)
        request = JoinRequest(
            verb=handler.command,
            path=target.path,
            raw_query=target.query,
            headers={name.lower(): value for name, value in handler.headers.items()},
            peer=tuple(handler.client_address[:2]),
        )
        length = int(handler.headers.get("Content-Length") or 0)
        if length:
            try:
                handler.rfile.read(length)
            except OSError:
                handler.close_connection = True
                return
        with self.lock:
            self.log.append(request)
        try:
            answer = self._respond(request, handler)
        except Exception as error:  # noqa: BLE001 - a broken test decision answers 599, loudly
            log.exception("muc auth web app: the test's decision failed")
            request.problem = f"the test's decision raised {error!r}"
            answer = (599, str(error), "text/plain", [])
        if answer is None:  # stopped, or the client left, while hanging: no answer at all
            handler.close_connection = True
            log.debug("muc auth web app: %s", request.describe())
            return
        status, body, content_type, extra = answer
        request.status, request.answer = status, body
        handler.answer(status, body, content_type, extra)
        log.debug("muc auth web app: %s", request.describe())

    def _respond(self, request: JoinRequest, handler: _Handler) -> tuple[int, str, str, list[tuple[str, str]]] | None:
        def refuse(status: int, problem: str) -> tuple[int, str, str, list[tuple[str, str]]]:
            request.problem = problem
            return status, problem, "text/plain; charset=utf-8", []

        if request.path != PATH:
            return refuse(404, f"not {PATH}")
        if request.verb != "GET":
            return refuse(405, "GET only")
        try:
            request.query = parse_qs(request.raw_query, keep_blank_values=True, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            return refuse(400, "query string is not UTF-8")
        if self.authorization is not None and request.authorization != self.authorization:
            request.problem = f"wrong Authorization header: {request.authorization!r}"
            return 401, "unauthorized", "text/plain", [("WWW-Authenticate", 'Basic realm="rooms"')]
        missing = [name for name in PARAMETERS if not request.query.get(name) or not request.query[name][0]]
        if missing:
            return refuse(400, f"missing or empty {', '.join(missing)}")
        repeated = [name for name, values in request.query.items() if len(values) > 1]
        if repeated:
            return refuse(400, f"repeated {', '.join(repeated)}")

        mode = self._mode
        if mode == "hang":
            deadline = time.monotonic() + self.hang_seconds
            while time.monotonic() < deadline and self._mode == "hang" and not self._stopping:
                if _hung_up(handler.request, 0.02):
                    request.problem = "Jackdaw hung up while the web app hung"
                    return None
            if self._stopping:
                return None
            mode = self._mode
        if mode == "garbage":
            return 200, "maybe", "text/plain", []
        if mode == "no-allowed":
            return 200, json.dumps({"error": ""}), "application/json", []
        decision = self.decide(request)
        if mode.startswith("status:"):
            return int(mode[7:]), Decision(True).body(), "application/json", []
        return 200, decision.body(), "application/json", []


def _hung_up(connection: socket.socket, wait: float) -> bool:
    """True if the client closed its end (waits up to ``wait`` s to see)."""
    try:
        readable, _, _ = select.select([connection], [], [], wait)
        if not readable:
            return False
        return connection.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def describe_requests(requests: list[JoinRequest]) -> str:
    return "\n  ".join(r.describe() for r in requests) or "(none)"
