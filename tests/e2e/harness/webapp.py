"""The operator's web app for ``authentication = "http"``: a real HTTP server
speaking exactly the protocol of Prosody's mod_auth_http
(``../shared/seeds/mod_auth_http.md``), holding its users in memory.

Jackdaw appends ``/METHOD`` to its ``http_auth_url``; with the default
``prefix`` of ``/auth`` the web app answers::

    GET  /auth/check_password?user=&server=&pass=   200 "true" / "false"
    GET  /auth/user_exists?user=&server=            200 "true" / "false"
    POST /auth/register         (form user, server, pass)   201, 409 if the user exists
    POST /auth/set_password     (form user, server, pass)   204
    POST /auth/remove_user      (form user, server)         204

``POST /auth/check_password`` with the same form is accepted too (Jackdaw's
``http_auth_check_method = "POST"``). Any other method name under the prefix
is answered ``501 Not Implemented``, as the seed asks; a known method with
the wrong HTTP verb ``405``, a missing parameter ``400``, a POST that is not
``application/x-www-form-urlencoded`` ``415``, a set_password or remove_user
for an unknown user ``404``, a path outside ``{prefix}/METHOD`` ``404``.
With ``credentials`` set, a request without exactly those HTTP Basic
credentials is answered ``401``.

Tests drive it from Python, not over HTTP (see :class:`WebApp`):

* ``mode`` for every method, ``overrides[method]`` for one: ``"normal"``,
  ``"status:500"`` (any status, empty body), ``"garbage"`` (200 with the body
  ``maybe``), ``"hang"`` (answer nothing for ``hang_seconds``, released at
  once when the mode changes, the web app stops or the client hangs up);
* :meth:`WebApp.stop` closes the listening socket *and* every open
  (keep-alive) connection, so Jackdaw's next request is refused;
  :meth:`WebApp.start` listens again on the same port;
* :attr:`WebApp.log` records every request as received (verb, path, decoded
  query and form parameters, headers, raw bytes) and the status answered.

Standalone, for benchmarks (no request log kept unless ``--log``)::

    python -m harness.webapp --port 8088 --user alice:pw --users 1000 --password-pattern 'pass{i}'
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import logging
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from . import DOMAIN
from .http_server import TrackingHandler, TrackingServer

log = logging.getLogger("e2e.webapp")

#: The protocol's methods and the HTTP verbs each accepts.
METHODS = {
    "check_password": ("GET", "POST"),
    "user_exists": ("GET",),
    "register": ("POST",),
    "set_password": ("POST",),
    "remove_user": ("POST",),
}
#: The parameters each method needs.
REQUIRED = {
    "check_password": ("user", "server", "pass"),
    "user_exists": ("user", "server"),
    "register": ("user", "server", "pass"),
    "set_password": ("user", "server", "pass"),
    "remove_user": ("user", "server"),
}
FORM_TYPE = "application/x-www-form-urlencoded"
#: The longest a "hang" lasts if nobody releases it.
DEFAULT_HANG_SECONDS = 30.0


@dataclass
class Request:
    """One HTTP request as the web app received it."""

    verb: str
    #: The request target's path, still percent-encoded, e.g. ``/auth/check_password``.
    path: str
    #: The raw query string (after ``?``), still percent-encoded.
    raw_query: str
    #: The raw body.
    body: bytes
    #: Header names lower-cased; a repeated header keeps its last value.
    headers: dict[str, str]
    #: Decoded query parameters (every value of each name, in order).
    query: dict[str, list[str]] = field(default_factory=dict)
    #: Decoded form parameters of a urlencoded POST body.
    form: dict[str, list[str]] = field(default_factory=dict)
    #: The protocol method named by the last path segment (``check_password``, ...).
    method: str = ""
    #: The status the web app answered (None while it has not answered, or never did).
    status: int | None = None
    #: Why the web app refused it (400/404/405/415/401), for failure messages.
    problem: str | None = None
    #: It came over TLS (a web app started with ``tls``).
    tls: bool = False
    received_at: float = field(default_factory=time.monotonic)

    @property
    def params(self) -> dict[str, list[str]]:
        """The parameters the method was called with: the form of a POST, the query of a GET."""
        return self.form if self.verb == "POST" else self.query

    def param(self, name: str) -> str | None:
        """The single value of a parameter (None if absent); several values fail the test."""
        values = self.params.get(name)
        if not values:
            return None
        assert len(values) == 1, f"parameter {name!r} sent {len(values)} times: {self}"
        return values[0]

    @property
    def basic_credentials(self) -> tuple[str, str] | None:
        """The HTTP Basic credentials sent, decoded, or None."""
        header = self.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        return (user, password) if sep else None

    def describe(self) -> str:
        target = self.path + (f"?{self.raw_query}" if self.raw_query else "")
        body = f" body={self.body!r}" if self.body else ""
        return f"{self.verb} {target}{body} -> {self.status}" + (f" ({self.problem})" if self.problem else "")

    def __str__(self) -> str:
        return self.describe()


class _Server(TrackingServer):
    label = "web app"

    def __init__(self, address: tuple[str, int], app: WebApp) -> None:
        super().__init__(address, app, _Handler)
        self.app: WebApp = app

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = self.socket.accept()
        if self.app.tls_context is not None:
            # The handshake happens in the connection's own thread (_Handler.setup).
            connection = self.app.tls_context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return connection, address


class _Handler(TrackingHandler):
    server_version = "JackdawTestWebApp/1"
    server: _Server

    def before_setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()  # a client refusing our certificate ends here
            self.request.settimeout(None)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.app.handle(self)

    def do_POST(self) -> None:  # noqa: N802
        self.server.app.handle(self)

    def do_PUT(self) -> None:  # noqa: N802
        self.server.app.handle(self)

    def do_DELETE(self) -> None:  # noqa: N802
        self.server.app.handle(self)

    def do_HEAD(self) -> None:  # noqa: N802
        self.server.app.handle(self)

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def answer(self, status: int, body: str = "", extra_headers: Iterable[tuple[str, str]] = ()) -> None:
        payload = body.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in extra_headers:
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client gave up (e.g. Jackdaw's timeout)


def _decode(data: str) -> dict[str, list[str]]:
    """``a=1&b=x+y`` as a form decoder reads it: ``+`` is a space, UTF-8 percent-escapes."""
    return parse_qs(data, keep_blank_values=True, encoding="utf-8", errors="strict")


class WebApp:
    """The test web app; ``WebApp(users={"alice": "pw"}).start()``, then give
    Jackdaw :attr:`url` as ``http_auth_url``.

    ``users`` maps user names to passwords on the host ``server`` (default
    ``localhost``); :attr:`users` itself is keyed by ``(server, user)``.
    ``prefix`` is the path Jackdaw must call below (``/auth/localhost`` when
    the URL Jackdaw is given is ``.../auth/$host/``); ``credentials`` the HTTP
    Basic user and password Jackdaw must send; ``tls`` a (certificate, key)
    pair of PEM files to serve HTTPS with.
    """

    def __init__(
        self,
        users: dict[str, str] | None = None,
        *,
        server: str = DOMAIN,
        prefix: str = "/auth",
        credentials: tuple[str, str] | None = None,
        hang_seconds: float = DEFAULT_HANG_SECONDS,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.lock = threading.Lock()
        self.users: dict[tuple[str, str], str] = {}
        for user, password in (users or {}).items():
            self.add_user(user, password, server)
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.credentials = credentials
        self.hang_seconds = hang_seconds
        self.host = host
        self.port = port
        self.record = record
        self.tls_context: ssl.SSLContext | None = None
        if tls is not None:
            self.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls_context.load_cert_chain(certfile=str(tls[0]), keyfile=str(tls[1]))
        #: Per-method behaviour, e.g. ``{"set_password": "status:501"}``; wins over :attr:`mode`.
        self.overrides: dict[str, str] = {}
        self.log: list[Request] = []
        self._mode = "normal"
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        #: Requests answered so far (also counted when the log is off).
        self.answered = 0
        #: Requests being handled right now, and the most ever handled at once.
        self.inflight = 0
        self.peak_inflight = 0

    # --- users -------------------------------------------------------------

    def add_user(self, user: str, password: str, server: str = DOMAIN) -> None:
        with self.lock:
            self.users[(server, user)] = password

    def password_of(self, user: str, server: str = DOMAIN) -> str | None:
        with self.lock:
            return self.users.get((server, user))

    def has_user(self, user: str, server: str = DOMAIN) -> bool:
        return self.password_of(user, server) is not None

    # --- behaviour ---------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        _check_mode(value)
        self._mode = value  # a "hang" in progress sees the change and is released

    def override(self, method: str, mode: str) -> None:
        """Make one method behave as ``mode`` (e.g. ``override("set_password", "status:501")``)."""
        _check_mode(mode)
        self.overrides[method] = mode

    def mode_for(self, method: str) -> str:
        return self.overrides.get(method, self._mode)

    # --- lifecycle ---------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` when serving TLS)."""
        assert self.port, "the web app was never started"
        scheme = "https" if self.tls_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The ``http_auth_url`` for Jackdaw: ``http://127.0.0.1:PORT/auth``."""
        return self.base + self.prefix

    def start(self) -> WebApp:
        """Listen (again, on the same port once one was chosen) and serve in a thread."""
        assert self._server is None, "the web app is already running"
        self._stopping = False
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"webapp:{self.port}", daemon=True
        )
        self._thread.start()
        log.debug("web app listening on %s", self.url)
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
        log.debug("web app on port %s stopped", self.port)

    def __enter__(self) -> WebApp:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- the request log ---------------------------------------------------

    def requests(self, method: str | None = None, match: Callable[[Request], bool] | None = None) -> list[Request]:
        """The requests received so far for ``method`` (any if None), oldest first."""
        with self.lock:
            found = list(self.log)
        return [r for r in found if (method is None or r.method == method) and (match is None or match(r))]

    def clear_log(self) -> None:
        with self.lock:
            self.log.clear()

    def describe_log(self) -> str:
        return "\n  ".join(r.describe() for r in self.requests()) or "(no requests)"

    async def wait_request(
        self,
        method: str,
        match: Callable[[Request], bool] | None = None,
        timeout: float = 10.0,
        answered: bool = True,
    ) -> Request:
        """The first logged ``method`` request for which ``match`` holds, waiting
        up to ``timeout`` s (and, with ``answered``, until it was answered)."""
        deadline = time.monotonic() + timeout
        while True:
            for request in self.requests(method, match):
                if not answered or request.status is not None:
                    return request
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"the web app got no matching {method} request in {timeout} s; it got:\n  " + self.describe_log()
                )
            await asyncio.sleep(0.02)

    # --- serving -----------------------------------------------------------

    def handle(self, handler: _Handler) -> None:
        target = urlsplit(handler.path)
        try:
            body = handler.read_body()
        except (OSError, ValueError):
            handler.close_connection = True
            return
        request = Request(
            verb=handler.command,
            path=target.path,
            raw_query=target.query,
            body=body,
            headers={name.lower(): value for name, value in handler.headers.items()},
            tls=isinstance(handler.request, ssl.SSLSocket),
        )
        with self.lock:
            if self.record:
                self.log.append(request)
            self.inflight += 1
            self.peak_inflight = max(self.peak_inflight, self.inflight)
        try:
            status, text, headers = self._respond(request, handler)
        finally:
            with self.lock:
                self.inflight -= 1
        if status is None:  # stopped, or the client left, while hanging: no answer at all
            handler.close_connection = True
            return
        request.status = status
        handler.answer(status, text, headers)
        self.answered += 1
        log.debug("web app: %s", request.describe())

    def _respond(self, request: Request, handler: _Handler) -> tuple[int | None, str, list[tuple[str, str]]]:
        def refuse(status: int, problem: str) -> tuple[int, str, list[tuple[str, str]]]:
            request.problem = problem
            return status, problem + "\n", []

        prefix, _, method = request.path.rpartition("/")
        request.method = method
        if prefix != self.prefix:
            return refuse(404, f"not under {self.prefix or '/'}/METHOD")
        try:
            request.query = _decode(request.raw_query)
        except UnicodeDecodeError:
            return refuse(400, "query string is not UTF-8")
        if request.verb == "POST":
            content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if content_type != FORM_TYPE:
                return refuse(415, f"POST body must be {FORM_TYPE}, got {content_type or 'no Content-Type'}")
            try:
                request.form = _decode(request.body.decode("ascii"))
            except UnicodeDecodeError:
                return refuse(400, "form is not URL-encoded UTF-8")

        if self.credentials is not None and request.basic_credentials != self.credentials:
            request.problem = f"wrong HTTP Basic credentials: {request.basic_credentials}"
            return 401, "unauthorized\n", [("WWW-Authenticate", 'Basic realm="auth"')]

        mode = self.mode_for(method)
        if mode == "hang":
            deadline = time.monotonic() + self.hang_seconds
            while time.monotonic() < deadline and self.mode_for(method) == "hang" and not self._stopping:
                if _hung_up(handler.request, 0.02):
                    request.problem = "the client hung up while the web app hung"
                    return None, "", []
            if self._stopping:
                return None, "", []
            mode = self.mode_for(method)
        if mode == "garbage":
            return 200, "maybe", []
        if mode.startswith("status:"):
            return int(mode.split(":", 1)[1]), "", []

        if method not in METHODS:
            return refuse(501, f"no method {method!r}")
        if request.verb not in METHODS[method]:
            return refuse(405, f"{method} takes {' or '.join(METHODS[method])}")
        missing = [name for name in REQUIRED[method] if not request.params.get(name)]
        if missing:
            return refuse(400, f"{method} without {', '.join(missing)}")
        for name, values in request.params.items():
            if len(values) > 1:
                return refuse(400, f"parameter {name!r} given {len(values)} times")
        params = {name: values[0] for name, values in request.params.items()}
        key = (params["server"], params["user"])

        with self.lock:
            if method == "check_password":
                ok = self.users.get(key) == params["pass"]
                return 200, "true" if ok else "false", []
            if method == "user_exists":
                return 200, "true" if key in self.users else "false", []
            if method == "register":
                if key in self.users:
                    return 409, "", []
                self.users[key] = params["pass"]
                return 201, "", []
            if key not in self.users:
                return refuse(404, f"no user {params['user']}@{params['server']}")
            if method == "set_password":
                self.users[key] = params["pass"]
            else:
                del self.users[key]
            return 204, "", []


def _hung_up(connection: socket.socket, wait: float) -> bool:
    """True if the client closed its end (waits up to ``wait`` s to see)."""
    try:
        readable, _, _ = select.select([connection], [], [], wait)
        if not readable:
            return False
        if isinstance(connection, ssl.SSLSocket):
            return True  # no peeking under TLS; a client awaiting its answer sends nothing but close_notify
        return connection.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def _check_mode(mode: str) -> None:
    if mode in ("normal", "garbage", "hang"):
        return
    if mode.startswith("status:") and mode.split(":", 1)[1].isdigit():
        HTTPStatus(int(mode.split(":", 1)[1]))
        return
    raise ValueError(f"unknown web app mode {mode!r}: normal, garbage, hang or status:NNN")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.webapp",
        description="The mod_auth_http test web app, standalone (for benchmarks). "
        "Numbered accounts follow jackdaw-load's --users/--user-pattern/--password-pattern.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--prefix", default="/auth", help="path below which METHOD is called (default /auth)")
    parser.add_argument("--server", default=DOMAIN, help="the XMPP host of the accounts (default localhost)")
    parser.add_argument(
        "--user", action="append", default=[], metavar="USER[@SERVER]:PASS", help="an account (repeatable)"
    )
    parser.add_argument("--users", type=int, default=0, help="also create this many numbered accounts")
    parser.add_argument("--user-pattern", default="user{i}")
    parser.add_argument("--password-pattern", default="pass{i}")
    parser.add_argument("--password", help="one password for every numbered account")
    parser.add_argument("--first-index", type=int, default=1)
    parser.add_argument("--credentials", metavar="USER:PASS", help="HTTP Basic credentials to require")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS with these PEM files")
    parser.add_argument("--log", action="store_true", help="print every request (slows the web app down)")
    args = parser.parse_args(argv)

    app = WebApp(
        server=args.server,
        prefix=args.prefix,
        credentials=tuple(args.credentials.split(":", 1)) if args.credentials else None,
        host=args.host,
        port=args.port,
        record=False,
        tls=(Path(args.tls[0]), Path(args.tls[1])) if args.tls else None,
    )
    for spec in args.user:
        account, sep, password = spec.partition(":")
        if not sep:
            parser.error(f"--user {spec!r}: expected USER[@SERVER]:PASS")
        user, _, server = account.partition("@")
        app.add_user(user, password, server or args.server)
    for i in range(args.first_index, args.first_index + args.users):
        password = args.password if args.password is not None else args.password_pattern.replace("{i}", str(i))
        app.add_user(args.user_pattern.replace("{i}", str(i)), password, args.server)
    if args.log:
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(message)s", stream=sys.stderr)
    app.start()
    print(f"http_auth_url = {app.url!r}  ({len(app.users)} accounts)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
