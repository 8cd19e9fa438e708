"""The operator's web app for ``http_roster_admin`` (roster_http): it owns
every user's contact list, as in Prosody's mod_http_roster_admin
(``../shared/seeds/mod_http_roster_admin.md``).

Two halves, as a real web app has:

* :class:`RosterWebApp`, a real HTTP server (stdlib ``ThreadingHTTPServer``,
  HTTP/1.1 keep-alive) answering Jackdaw's fetches. Jackdaw is given
  :attr:`RosterWebApp.url` (``http://127.0.0.1:PORT/contacts/%s``) as
  ``http_roster_url`` and GETs ``/contacts/USERNAME``; the answer is the
  user's roster as the seed documents it, a JSON object keyed by contact
  JID, each value with ``name`` and ``groups`` when set (a user the web app
  knows nothing about has the empty roster ``{}``). Tests edit rosters with
  :meth:`~RosterWebApp.set_roster`, :meth:`~RosterWebApp.add_contact`,
  :meth:`~RosterWebApp.befriend`, ... and steer failures with ``mode`` (every
  user) or :meth:`~RosterWebApp.override` (one user): ``"normal"``,
  ``"status:NNN"`` (that status, empty body), ``"garbage"`` (200 with an
  HTML page), ``"not-object"`` (200 with a JSON array), ``"hang"`` (nothing
  until the mode changes, the web app stops or ``hang_seconds`` pass);
  ``delay`` holds every answer back that long (to make requests overlap).
  :meth:`~RosterWebApp.stop` closes the port *and* every keep-alive
  connection, so Jackdaw's next fetch is refused; :meth:`~RosterWebApp.start`
  listens again on the same port. Every request is logged
  (:meth:`~RosterWebApp.fetches`), and ``peak_inflight`` is the most
  answered at once.
* :func:`post_refresh` / :func:`get_refresh`: the web app telling Jackdaw
  that rosters changed (``POST /roster_admin/refresh`` on Jackdaw's HTTP
  port with a JSON array of usernames, or the push form
  ``{"user": {roster}}``; ``GET /roster_admin/refresh/USERNAME``). They
  block; async tests call them through ``asyncio.to_thread`` so that the
  slixmpp clients keep reading while Jackdaw works.
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from . import DOMAIN
from .http_server import TrackingHandler, TrackingServer

log = logging.getLogger("e2e.roster_webapp")

#: The longest a "hang" lasts if nobody releases it.
DEFAULT_HANG_SECONDS = 30.0
#: What the "garbage" mode answers with status 200: not JSON at all.
GARBAGE = "<html><body>Oops, our roster service is on fire</body></html>"
#: What the "not-object" mode answers: JSON, but not the object the seed asks for.
NOT_OBJECT = '["bob@localhost", "carol@localhost"]'
MODES = ("normal", "garbage", "not-object", "hang")

#: One roster as the web app holds it: contact JID -> {"name": ..., "groups": [...]}.
Roster = dict[str, dict[str, Any]]


def jid_of(user: str) -> str:
    return f"{user}@{DOMAIN}"


def contact(name: str | None = None, groups: Iterable[str] = ()) -> dict[str, Any]:
    """One roster entry as the seed shows it (keys only when set)."""
    entry: dict[str, Any] = {}
    if name is not None:
        entry["name"] = name
    groups = list(groups)
    if groups:
        entry["groups"] = groups
    return entry


@dataclass
class Fetch:
    """One request as the web app received it."""

    verb: str
    #: The request target's path, still percent-encoded, e.g. ``/contacts/alice``.
    path: str
    #: The username the path names, percent-decoded (None: not under the prefix).
    user: str | None
    #: Header names lower-cased.
    headers: dict[str, str]
    #: The status answered (None while not answered, or never: hang then stop).
    status: int | None = None
    #: The body answered.
    answer: str = ""
    received_at: float = field(default_factory=time.monotonic)

    def describe(self) -> str:
        shown = self.answer if len(self.answer) <= 200 else self.answer[:200] + "..."
        return f"{self.verb} {self.path} -> {self.status} {shown}"

    def __str__(self) -> str:
        return self.describe()


class _Server(TrackingServer):
    label = "roster web app"
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: RosterWebApp) -> None:
        super().__init__(address, app, _Handler)
        self.app: RosterWebApp = app


class _Handler(TrackingHandler):
    server_version = "JackdawTestRosterApp/1"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.app.handle(self)

    def do_POST(self) -> None:  # noqa: N802
        self.server.app.handle(self)

    def answer(self, status: int, body: str, content_type: str) -> None:
        payload = body.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # Jackdaw gave up (its timeout)


def _check_mode(mode: str) -> None:
    if mode in MODES:
        return
    if mode.startswith("status:") and mode.split(":", 1)[1].isdigit():
        return
    raise ValueError(f"unknown roster web app mode {mode!r}: one of {MODES} or status:NNN")


class RosterWebApp:
    """The test web app: ``RosterWebApp({"alice": {"bob@localhost": {"name": "Bob"}}}).start()``,
    then give Jackdaw :attr:`url` as ``http_roster_url``."""

    def __init__(
        self,
        rosters: dict[str, Roster] | None = None,
        *,
        prefix: str = "/contacts",
        host: str = "127.0.0.1",
        port: int = 0,
        delay: float = 0.0,
        hang_seconds: float = DEFAULT_HANG_SECONDS,
    ) -> None:
        self.lock = threading.Lock()
        self.rosters: dict[str, Roster] = {user: dict(roster) for user, roster in (rosters or {}).items()}
        self.prefix = "/" + prefix.strip("/")
        self.host = host
        self.port = port
        #: Seconds every answer is held back (after the request is logged).
        self.delay = delay
        self.hang_seconds = hang_seconds
        #: Per-user behaviour, e.g. ``{"alice": "status:500"}``; wins over :attr:`mode`.
        self.overrides: dict[str, str] = {}
        self.log: list[Fetch] = []
        self._mode = "normal"
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.inflight = 0
        self.peak_inflight = 0

    # --- rosters -----------------------------------------------------------

    def roster_of(self, user: str) -> Roster:
        with self.lock:
            return json.loads(json.dumps(self.rosters.get(user, {})))

    def set_roster(self, user: str, roster: Roster) -> None:
        with self.lock:
            self.rosters[user] = json.loads(json.dumps(roster))

    def add_contact(self, user: str, jid: str, name: str | None = None, groups: Iterable[str] = ()) -> None:
        with self.lock:
            self.rosters.setdefault(user, {})[jid] = contact(name, groups)

    def remove_contact(self, user: str, jid: str) -> None:
        with self.lock:
            self.rosters.get(user, {}).pop(jid, None)

    def befriend(
        self,
        a: str,
        b: str,
        *,
        a_calls_b: str | None = None,
        b_calls_a: str | None = None,
        groups: Iterable[str] = (),
    ) -> None:
        """Users ``a`` and ``b`` become contacts of each other (both rosters change)."""
        groups = list(groups)
        self.add_contact(a, jid_of(b), a_calls_b, groups)
        self.add_contact(b, jid_of(a), b_calls_a, groups)

    def unfriend(self, a: str, b: str) -> None:
        self.remove_contact(a, jid_of(b))
        self.remove_contact(b, jid_of(a))

    # --- behaviour ---------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        _check_mode(value)
        self._mode = value  # a "hang" in progress sees the change and is released

    def override(self, user: str, mode: str | None) -> None:
        """Make fetches of one user's roster behave as ``mode`` (None: as :attr:`mode` again)."""
        if mode is None:
            self.overrides.pop(user, None)
            return
        _check_mode(mode)
        self.overrides[user] = mode

    def mode_for(self, user: str | None) -> str:
        return self.overrides.get(user or "", self._mode)

    # --- lifecycle ---------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def base(self) -> str:
        assert self.port, "the web app was never started"
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The ``http_roster_url`` for Jackdaw: ``http://127.0.0.1:PORT/contacts/%s``."""
        return f"{self.base}{self.prefix}/%s"

    def start(self) -> RosterWebApp:
        """Listen (again, on the same port once one was chosen) and serve in a thread."""
        assert self._server is None, "the web app is already running"
        self._stopping = False
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"roster-webapp:{self.port}",
            daemon=True,
        )
        self._thread.start()
        log.debug("roster web app listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Close the listening socket and every open connection: Jackdaw's next fetch is refused."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        log.debug("roster web app on port %s stopped", self.port)

    def __enter__(self) -> RosterWebApp:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- the request log ---------------------------------------------------

    def fetches(self, user: str | None = None, since: float | None = None) -> list[Fetch]:
        """Requests for ``user``'s roster (every request if None), oldest first,
        received at or after ``since`` (a ``time.monotonic()``) if given."""
        with self.lock:
            found = list(self.log)
        return [f for f in found if (user is None or f.user == user) and (since is None or f.received_at >= since)]

    def describe_log(self) -> str:
        return "\n  ".join(f.describe() for f in self.fetches()) or "(no requests)"

    async def wait_fetch(
        self, user: str, since: float | None = None, timeout: float = 10.0, answered: bool = True
    ) -> Fetch:
        """The first request for ``user``'s roster (after ``since``), waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            for fetch in self.fetches(user, since):
                if not answered or fetch.status is not None:
                    return fetch
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"the roster web app got no request for {user}'s roster in {timeout} s; it got:\n  "
                    + self.describe_log()
                )
            await asyncio.sleep(0.02)

    # --- serving -----------------------------------------------------------

    def handle(self, handler: _Handler) -> None:
        target = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        if length:
            handler.rfile.read(length)
        user = None
        if target.path.startswith(self.prefix + "/"):
            rest = target.path[len(self.prefix) + 1 :]
            if rest and "/" not in rest:
                user = unquote(rest, errors="strict")
        fetch = Fetch(
            verb=handler.command,
            path=target.path,
            user=user,
            headers={name.lower(): value for name, value in handler.headers.items()},
        )
        with self.lock:
            self.log.append(fetch)
            self.inflight += 1
            self.peak_inflight = max(self.peak_inflight, self.inflight)
        try:
            if self.delay:
                time.sleep(self.delay)
            status, body, content_type = self._respond(fetch, handler)
        finally:
            with self.lock:
                self.inflight -= 1
        if status is None:
            handler.close_connection = True
            return
        fetch.status, fetch.answer = status, body
        handler.answer(status, body, content_type)
        log.debug("roster web app: %s", fetch.describe())

    def _respond(self, fetch: Fetch, handler: _Handler) -> tuple[int | None, str, str]:
        if fetch.user is None:
            return 404, "not under " + self.prefix + "/USERNAME\n", "text/plain"
        if fetch.verb != "GET":
            return 405, "GET only\n", "text/plain"
        mode = self.mode_for(fetch.user)
        if mode == "hang":
            deadline = time.monotonic() + self.hang_seconds
            while time.monotonic() < deadline and self.mode_for(fetch.user) == "hang" and not self._stopping:
                if _hung_up(handler.request, 0.02):
                    return None, "", ""
            if self._stopping:
                return None, "", ""
            mode = self.mode_for(fetch.user)
        if mode == "garbage":
            return 200, GARBAGE, "text/html"
        if mode == "not-object":
            return 200, NOT_OBJECT, "application/json"
        if mode.startswith("status:"):
            return int(mode.split(":", 1)[1]), "", "text/plain"
        return 200, json.dumps(self.roster_of(fetch.user)), "application/json"


def _hung_up(connection: socket.socket, wait: float) -> bool:
    """True if the client closed its end (waits up to ``wait`` s to see)."""
    try:
        readable, _, _ = select.select([connection], [], [], wait)
        if not readable:
            return False
        return connection.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


# --- the web app calling Jackdaw ---------------------------------------------------


@dataclass
class Answer:
    """Jackdaw's answer to a refresh request."""

    status: int
    text: str
    content_type: str

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.text)
        except ValueError:
            raise AssertionError(f"Jackdaw answered HTTP {self.status} with a body that is not JSON: {self.text!r}")

    def __str__(self) -> str:
        return f"HTTP {self.status} ({self.content_type}) {self.text}"


def _call(url: str, method: str, body: bytes | None, headers: dict[str, str], timeout: float) -> Answer:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer(response.status, response.read().decode(), response.headers.get("Content-Type", ""))
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.read().decode(errors="replace"), error.headers.get("Content-Type", ""))


def _auth_headers(token: str | None, authorization: str | None) -> dict[str, str]:
    if authorization is not None:
        return {"Authorization": authorization}
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


def post_refresh(
    http_port: int,
    payload: Any = None,
    *,
    raw: bytes | None = None,
    token: str | None = None,
    authorization: str | None = None,
    timeout: float = 30.0,
) -> Answer:
    """``POST /roster_admin/refresh`` with ``payload`` as JSON (or ``raw`` bytes as they are).
    ``token`` sends ``Authorization: Bearer TOKEN``; ``authorization`` any header value."""
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"} | _auth_headers(token, authorization)
    url = f"http://127.0.0.1:{http_port}/roster_admin/refresh"
    answer = _call(url, "POST", body, headers, timeout)
    log.debug("POST %s %r -> %s", url, body[:300], answer)
    return answer


def get_refresh(
    http_port: int, user: str, *, token: str | None = None, authorization: str | None = None, timeout: float = 30.0
) -> Answer:
    """``GET /roster_admin/refresh/USERNAME``."""
    url = f"http://127.0.0.1:{http_port}/roster_admin/refresh/{quote(user, safe='')}"
    answer = _call(url, "GET", None, _auth_headers(token, authorization), timeout)
    log.debug("GET %s -> %s", url, answer)
    return answer


def expect_summary(answer: Answer, updated: int, errors: int, status: str = "ok") -> dict[str, Any]:
    """The seed's summary, exactly: HTTP 200 and ``{"status","message","updated","errors"}``."""
    assert answer.status == 200, f"refresh answered {answer}"
    body = answer.json
    assert isinstance(body, dict) and set(body) == {"status", "message", "updated", "errors"}, (
        f"refresh answer is not the seed's summary: {answer}"
    )
    assert (body["status"], body["updated"], body["errors"]) == (status, updated, errors), (
        f"expected status={status} updated={updated} errors={errors}, got {answer}"
    )
    assert isinstance(body["message"], str) and body["message"], f"no message in {answer}"
    if status == "ok":
        assert body["message"] == "roster update complete", f"the seed's message, got {answer}"
    return body


def main(argv: list[str] | None = None) -> int:
    """Standalone: ``python -m harness.roster_webapp --port 8089 --ring 100`` (user1..user100,
    each the contact of the next), for trying Jackdaw by hand."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.roster_webapp")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--ring", type=int, default=0, help="userN has user(N+1) as contact, for N up to RING")
    parser.add_argument("--user-pattern", default="user{i}")
    args = parser.parse_args(argv)
    app = RosterWebApp(host=args.host, port=args.port)

    def name(i: int) -> str:
        return args.user_pattern.replace("{i}", str(i))

    for i in range(1, args.ring + 1):
        other = 1 if i == args.ring else i + 1
        app.add_contact(name(i), jid_of(name(other)), f"User {other}")
    app.start()
    print(f"http_roster_url = {app.url!r}", flush=True)
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

