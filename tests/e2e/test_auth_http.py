"""``authentication = "http"`` (issue 5): users whose passwords live in the
operator's web app, asked over the protocol of Prosody's mod_auth_http.

Every test runs the repository's own web app (:mod:`harness.webapp`, a real
HTTP server on loopback holding alice, bob and carol in memory) next to its
own Jackdaw, and checks what the user sees: logins, SASL conditions, IQ
errors, messages. The web app's request log shows what Jackdaw sent; every
request it answered is also logged (logger ``e2e.webapp``), so a failing
test's report shows them.

Jackdaw's side of the contract, as these tests read it:

* SASL PLAIN only, only over TLS. Right password → success, wrong →
  ``not-authorized``; web app unreachable, too slow, 5xx, 401 or an
  unexpected body → ``temporary-auth-failure`` with one warning per outage.
* XEP-0077 and ``jackdaw user add|passwd|del`` → POST register /
  set_password / remove_user; 409 → ``conflict``, 501 → ``feature-not-implemented``.
* user_exists decides whether a stanza to an offline user is stored or
  bounced with ``service-unavailable``.
* Counters at ``/metrics``; an optional positive-result cache; the password
  never in the log, even at ``log = "trace"``.
"""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import ET

from harness import DOMAIN, PASSWORDS, jid_of
from harness.client import Client, LoginFailed
from harness.raw import RawStream, mechanisms_of
from harness.scenarios import assert_pong, logged_in
from harness.server import CLI_TIMEOUT, JackdawServer
from harness.webapp import WebApp

NS_REGISTER = "jabber:iq:register"
#: Small, so failure paths stay quick; each test must finish in about 10 s.
AUTH_TIMEOUT = 2
#: How much longer than http_auth_timeout a refused login may take (TLS, scheduling).
SLACK = 3.0
ALICE, BOB, CAROL = jid_of("alice"), jid_of("bob"), jid_of("carol")


# --- fixtures ------------------------------------------------------------------


@pytest.fixture
def make_webapp() -> Iterator[Callable[..., WebApp]]:
    """A factory of started web apps (same arguments as :class:`WebApp`),
    holding alice, bob and carol with their usual passwords unless ``users`` says otherwise."""
    apps: list[WebApp] = []

    def make(**kwargs: Any) -> WebApp:
        kwargs.setdefault("users", dict(PASSWORDS))
        app = WebApp(**kwargs).start()
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.stop()


@pytest.fixture
def webapp(make_webapp: Callable[..., WebApp]) -> WebApp:
    return make_webapp()


@pytest.fixture
def make_http_server(
    request: pytest.FixtureRequest, make_server: Callable[..., JackdawServer], webapp: WebApp
) -> Callable[..., JackdawServer]:
    """``make_http_server(host_options={...}, options={...})``: a Jackdaw whose
    host ``localhost`` authenticates against ``webapp`` (no local accounts)."""

    def make(
        host_options: dict[str, Any] | None = None, options: dict[str, Any] | None = None, start: bool = True
    ) -> JackdawServer:
        host = {
            "authentication": "http",
            "http_auth_url": webapp.url,
            "http_auth_timeout": AUTH_TIMEOUT,
        }
        host.update(host_options or {})
        # Failed logins in these tests must not run into mod_limit_auth (which
        # also answers temporary-auth-failure), and a login that waits for a
        # slow web app must not be cut by the pre-auth deadline.
        settings = {"limit_auth_max": 1000, "c2s_timeout": 15}
        settings.update(options or {})
        return make_server(options=settings, host_options=host, users={}, start=start)

    return make


@pytest.fixture
def http_server(make_http_server: Callable[..., JackdawServer]) -> JackdawServer:
    return make_http_server()


# --- helpers -------------------------------------------------------------------


async def login_refused(
    server: JackdawServer, user: str, password: str | None = None, **kwargs: Any
) -> tuple[Client, float]:
    """Try to log in and expect a refusal; returns the client and how long the refusal took."""
    client = Client(server, user, password=password, **kwargs)
    started = time.monotonic()
    with pytest.raises(LoginFailed):
        await client.login()
    return client, time.monotonic() - started


async def assert_can_log_in(server: JackdawServer, user: str, password: str | None = None) -> None:
    client = Client(server, user, password=password, mechanism="PLAIN")
    await client.login()
    try:
        assert client.used_mechanism == "PLAIN"
        await assert_pong(client)
    finally:
        await client.close()


async def send_iq(client: Client, iq: Any, timeout: float = 10.0) -> Any:
    """Send an IQ; the reply, result or error, as the client got it (None: no reply in time)."""
    try:
        return await iq.send(timeout=timeout)
    except IqError as error:
        return error.iq
    except IqTimeout:
        return None


def register_query(client: Client, **fields: str | None) -> Any:
    """An IQ set of jabber:iq:register with ``fields`` (None: an empty element, e.g. remove=None)."""
    iq = client.xmpp.Iq()
    iq["type"] = "set"
    query = ET.SubElement(iq.xml, f"{{{NS_REGISTER}}}query")
    for name, value in fields.items():
        element = ET.SubElement(query, f"{{{NS_REGISTER}}}{name}")
        if value is not None:
            element.text = value
    return iq


async def change_password(client: Client, new_password: str) -> Any:
    """XEP-0077 §3.3: the logged-in user changes their password."""
    iq = register_query(client, username=client.user, password=new_password)
    iq["to"] = DOMAIN
    return await send_iq(client, iq)


async def remove_account(client: Client, timeout: float = 10.0) -> Any:
    """XEP-0077 §3.2: the logged-in user deletes their account. Returns the
    reply, or None if the server ended the stream without one (not waiting
    out the IQ timeout then)."""
    reply = asyncio.ensure_future(send_iq(client, register_query(client, remove=None), timeout))
    gone = asyncio.ensure_future(client.wait_disconnected(timeout))
    try:
        await asyncio.wait({reply, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not reply.done():
            await asyncio.wait({reply}, timeout=0.5)  # a reply already read is handled in a moment
        return reply.result() if reply.done() else None
    finally:
        reply.cancel()
        gone.cancel()
        await asyncio.gather(reply, gone, return_exceptions=True)


async def register_in_band(server: JackdawServer, user: str, password: str) -> tuple[Client, Any]:
    """XEP-0077 registration before authentication, as slixmpp does it; the
    client then logs in with the same password. Returns (client, reply)."""
    client = Client(server, user, password=password)
    outcome: dict[str, Any] = {}

    async def fill_in_form(_form: Any) -> None:
        iq = client.xmpp.Iq()
        iq["type"] = "set"
        # Through the plugin: before the session slixmpp sends only IQs it knows as registration.
        iq["register"]["username"] = user
        iq["register"]["password"] = password
        outcome["reply"] = await send_iq(client, iq)

    client.xmpp.add_event_handler("register", fill_in_form)
    try:
        await client.login()
    except LoginFailed:
        pass
    assert "reply" in outcome, "the registration form was never offered"
    assert outcome["reply"] is not None, f"no answer to the registration of {user}"
    return client, outcome["reply"]


def condition_of(stanza: Any) -> str | None:
    return stanza["error"]["condition"] if stanza["type"] == "error" else None


def new_log(server: JackdawServer, mark: int) -> list[str]:
    """The server's log lines written since ``mark`` (a length of :meth:`log_text`)."""
    return server.log_text()[mark:].splitlines()


def warnings_about_webapp(lines: list[str], webapp: WebApp) -> list[str]:
    """WARN lines that are about the web app (name it, its URL or the auth_http options)."""
    needles = ("http_auth", "auth_http", "web app", "webapp", f":{webapp.port}")
    return [line for line in lines if " WARN " in line and any(n in line.lower() for n in needles)]


def metrics(server: JackdawServer) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/metrics", timeout=5) as response:
        assert response.status == 200
        content_type = response.headers.get("Content-Type", "")
        assert content_type.startswith("text/plain") or "openmetrics" in content_type, content_type
        return response.read().decode()


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        match = SAMPLE.match(line.strip())
        if not match or match.group(1) != name:
            continue
        found = dict(LABEL.findall(match.group(2) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match.group(3))
    return total


# --- logging in ----------------------------------------------------------------


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct_tls"])
async def test_login_with_right_password(http_server, webapp, direct_tls):
    """alice logs in with PLAIN; the web app was asked check_password with her
    name, the host and her password, by GET with a query string."""
    client = Client(http_server, "alice", resource="desk", direct_tls=direct_tls)
    await client.login()
    try:
        assert client.used_mechanism == "PLAIN"
        assert str(client.jid) == "alice@localhost/desk"
        await assert_pong(client)
    finally:
        await client.close()
    request = await webapp.wait_request("check_password")
    assert request.verb == "GET", request
    assert request.path == "/auth/check_password", request
    assert request.param("user") == "alice"
    assert request.param("server") == DOMAIN
    assert request.param("pass") == PASSWORDS["alice"]
    assert request.status == 200


def test_only_plain_offered_and_only_over_tls(http_server):
    """The web app holds the passwords, so only PLAIN is offered, and only once
    the stream is encrypted (no SCRAM, which would need stored keys)."""
    with RawStream.connect(http_server.c2s_port) as stream:
        stream.open()
        before_tls = stream.read_features()
        assert "PLAIN" not in mechanisms_of(before_tls), stream.dump()
        after_tls = stream.starttls()
        assert mechanisms_of(after_tls) == ["PLAIN"], stream.dump()
        outcome = stream.auth_plain("alice", PASSWORDS["alice"])
        assert outcome.success, stream.dump()


async def test_wrong_password_refused(http_server, webapp):
    """alice mistypes her password: not-authorized (the web app said false)."""
    client, _ = await login_refused(http_server, "alice", "not-her-password")
    assert client.sasl_failures == ["not-authorized"]
    request = await webapp.wait_request("check_password")
    assert request.param("pass") == "not-her-password" and request.status == 200
    await assert_can_log_in(http_server, "alice")


async def test_unknown_user_refused_like_wrong_password(http_server):
    """Someone logging in as a user the web app does not know: not-authorized."""
    client, _ = await login_refused(http_server, "mallory", "whatever")
    assert client.sasl_failures == ["not-authorized"]


# --- HTTP Basic credentials ----------------------------------------------------


async def test_basic_credentials_sent_on_every_request(make_webapp, make_server):
    """With http_auth_credentials, every request carries them as HTTP Basic
    (split at the first colon: the secret may contain colons)."""
    app = make_webapp(credentials=("jackdaw", "s3cret:with-colon"))
    server = make_server(
        options={"limit_auth_max": 1000},
        host_options={
            "authentication": "http",
            "http_auth_url": app.url,
            "http_auth_timeout": AUTH_TIMEOUT,
            "http_auth_credentials": "jackdaw:s3cret:with-colon",
        },
        users={},
    )
    async with logged_in(server, "alice", "bob") as (alice, bob):
        alice.send_message("nobody@localhost", "hello?")  # user_exists
        await alice.next("message", lambda m: m["type"] == "error", what="(error for nobody)")
        await bob.go_online()
        alice.send_message(BOB, "hi")
        await bob.next_message(ALICE, "hi")
    requests = app.requests()
    assert {r.method for r in requests} >= {"check_password", "user_exists"}, app.describe_log()
    for request in requests:
        assert request.basic_credentials == ("jackdaw", "s3cret:with-colon"), request.headers
        assert request.status == 200, request


async def test_wrong_basic_credentials_temporary_failure_and_warning(make_webapp, make_server):
    """Jackdaw configured with the wrong credentials: the web app answers 401,
    the user gets temporary-auth-failure (not "wrong password"), and the
    operator one warning naming http_auth_credentials (and not the secret)."""
    app = make_webapp(credentials=("jackdaw", "right-secret"))
    server = make_server(
        options={"limit_auth_max": 1000},
        host_options={
            "authentication": "http",
            "http_auth_url": app.url,
            "http_auth_timeout": AUTH_TIMEOUT,
            "http_auth_credentials": "jackdaw:Wrong-Api-Secret-7",
        },
        users={},
    )
    mark = len(server.log_text())
    for _ in range(2):
        client, _ = await login_refused(server, "alice")
        assert client.sasl_failures == ["temporary-auth-failure"]
    statuses = [r.status for r in app.requests("check_password")]
    assert statuses and set(statuses) == {401}, app.describe_log()

    lines = new_log(server, mark)
    warnings = [line for line in lines if " WARN " in line and "http_auth_credentials" in line]
    assert len(warnings) == 1, "expected one warning naming http_auth_credentials, got:\n" + "\n".join(
        line for line in lines if " WARN " in line or " ERROR " in line
    )
    assert "Wrong-Api-Secret-7" not in server.log_text(), "the Basic secret appears in the log"


# --- XEP-0077 ------------------------------------------------------------------


async def test_in_band_registration_reaches_webapp(http_server, webapp):
    """dave registers in-band: the web app gets POST register with his name and
    password as a form, has him afterwards, and he logs in."""
    password = "dave-Secret-4"
    client, reply = await register_in_band(http_server, "dave", password)
    await client.close()
    assert reply["type"] == "result", str(reply)
    request = await webapp.wait_request("register")
    assert request.verb == "POST" and request.status == 201, request
    assert request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
    assert (request.param("user"), request.param("server"), request.param("pass")) == ("dave", DOMAIN, password)
    assert webapp.password_of("dave") == password
    await assert_can_log_in(http_server, "dave", password)


async def test_in_band_registration_of_existing_name_conflict(http_server, webapp):
    """Registering "alice", whom the web app already has (409): conflict, and
    alice's password is untouched."""
    client, reply = await register_in_band(http_server, "alice", "hijacker-password")
    await client.close()
    assert condition_of(reply) == "conflict", str(reply)
    assert [r.status for r in webapp.requests("register")] == [409]
    assert webapp.password_of("alice") == PASSWORDS["alice"]
    await assert_can_log_in(http_server, "alice")


async def test_in_band_password_change(http_server, webapp):
    """alice changes her password in-band: the web app gets set_password, her
    session goes on, the new password logs in and the old one no longer does."""
    new = "alice-New-Secret-9"
    async with logged_in(http_server, "alice") as (alice,):
        reply = await change_password(alice, new)
        assert reply["type"] == "result", str(reply)
        await assert_pong(alice)
    request = await webapp.wait_request("set_password")
    assert request.verb == "POST" and request.status in (200, 201, 204), request
    assert (request.param("user"), request.param("server"), request.param("pass")) == ("alice", DOMAIN, new)
    assert webapp.password_of("alice") == new
    await assert_can_log_in(http_server, "alice", new)
    client, _ = await login_refused(http_server, "alice", PASSWORDS["alice"])
    assert client.sasl_failures == ["not-authorized"]


async def test_in_band_password_change_not_supported(http_server, webapp):
    """The web app does not implement set_password (501): alice's client is
    told feature-not-implemented, and her password stays as it was."""
    webapp.override("set_password", "status:501")
    async with logged_in(http_server, "alice") as (alice,):
        reply = await change_password(alice, "alice-New-Secret-9")
        assert condition_of(reply) == "feature-not-implemented", str(reply)
        await assert_pong(alice)
    assert [r.status for r in webapp.requests("set_password")] == [501]
    await assert_can_log_in(http_server, "alice")


async def test_in_band_account_removal(http_server, webapp):
    """bob deletes his account in-band: his client gets the result, the web app
    gets remove_user, and bob can no longer log in."""
    bob = await Client(http_server, "bob").login()
    try:
        reply = await remove_account(bob)
        assert reply is not None, (
            "no IQ result for the account removal: XEP-0077 §3.2 has the server answer the <remove/>, "
            "then end the sessions with <not-authorized/>; the client cannot tell the user it worked"
        )
        assert reply["type"] == "result", str(reply)
    finally:
        await bob.close()
    request = await webapp.wait_request("remove_user")
    assert request.verb == "POST" and request.status in (200, 201, 204), request
    assert (request.param("user"), request.param("server")) == ("bob", DOMAIN)
    assert request.param("pass") is None, "remove_user carries no password"
    assert not webapp.has_user("bob")
    client, _ = await login_refused(http_server, "bob")
    assert client.sasl_failures == ["not-authorized"]


# --- the command line ----------------------------------------------------------


async def test_cli_add_passwd_del_reach_webapp(http_server, webapp):
    """`jackdaw user add|passwd|del` are register, set_password and
    remove_user calls; each takes effect for logins."""
    http_server.add_user("erin@localhost", "erin-Secret-5")
    request = await webapp.wait_request("register")
    assert (request.verb, request.status) == ("POST", 201)
    assert (request.param("user"), request.param("server"), request.param("pass")) == ("erin", DOMAIN, "erin-Secret-5")
    await assert_can_log_in(http_server, "erin", "erin-Secret-5")

    http_server.set_password("erin@localhost", "erin-Other-6")
    request = await webapp.wait_request("set_password")
    assert (request.param("user"), request.param("pass")) == ("erin", "erin-Other-6"), request
    assert webapp.password_of("erin") == "erin-Other-6"
    await assert_can_log_in(http_server, "erin", "erin-Other-6")

    http_server.delete_user("erin@localhost")
    request = await webapp.wait_request("remove_user")
    assert (request.param("user"), request.param("server")) == ("erin", DOMAIN), request
    assert not webapp.has_user("erin")
    client, _ = await login_refused(http_server, "erin", "erin-Other-6")
    assert client.sasl_failures == ["not-authorized"]


def test_cli_refusals(http_server, webapp):
    """`user add` of a name the web app has fails (409) without changing the
    password; `user list` fails with a message (the protocol cannot list)."""
    result = http_server.cli("user", "add", ALICE, stdin="hijacker-password\n")
    assert result.returncode != 0, f"`user add {ALICE}` succeeded: {result.stdout}{result.stderr}"
    assert [r.status for r in webapp.requests("register")] == [409]
    assert webapp.password_of("alice") == PASSWORDS["alice"]

    result = http_server.cli("user", "list", DOMAIN)
    assert result.returncode != 0, f"`user list` succeeded: {result.stdout!r}"
    assert (result.stdout + result.stderr).strip(), "`user list` failed without saying why"


def test_cli_webapp_unreachable(http_server, webapp):
    """`user add` while the web app is down fails with a message (and exit
    code), rather than pretending the account was made."""
    webapp.stop()
    result = http_server.cli("user", "add", "erin@localhost", stdin="erin-Secret-5\n")
    assert result.returncode != 0, f"`user add` succeeded: {result.stdout}{result.stderr}"
    assert (result.stdout + result.stderr).strip()
    assert "erin-Secret-5" not in result.stdout + result.stderr


def test_cli_password_change_not_supported(http_server, webapp):
    """`user passwd` against a web app without set_password (501) fails and says so."""
    webapp.override("set_password", "status:501")
    result = http_server.cli("user", "passwd", ALICE, stdin="alice-New-Secret-9\n")
    assert result.returncode != 0, f"`user passwd` succeeded: {result.stdout}{result.stderr}"
    assert (result.stdout + result.stderr).strip()
    assert webapp.password_of("alice") == PASSWORDS["alice"]


# --- user_exists ---------------------------------------------------------------


async def test_message_to_unknown_user_service_unavailable(http_server, webapp):
    """alice writes to nobody@localhost, whom the web app does not know: the
    message bounces with service-unavailable (RFC 6121 §8.5.1)."""
    async with logged_in(http_server, "alice") as (alice,):
        alice.send_message("nobody@localhost", "anyone there?")
        bounce = await alice.next("message", lambda m: m["type"] == "error", what="(bounce from nobody)")
        assert bounce["from"].bare == "nobody@localhost"
        assert bounce["error"]["condition"] == "service-unavailable", str(bounce)
    request = await webapp.wait_request("user_exists", lambda r: r.param("user") == "nobody")
    assert (request.verb, request.param("server"), request.status) == ("GET", DOMAIN, 200)
    assert request.param("pass") is None


async def test_iq_to_unknown_user_service_unavailable(http_server, webapp):
    """alice pings nobody@localhost, whom the web app does not know: the
    server must not answer for an account that does not exist, but return
    service-unavailable (RFC 6121 §8.5.1), after asking the web app."""
    async with logged_in(http_server, "alice") as (alice,):
        iq = alice.xmpp.Iq()
        iq["type"] = "get"
        iq["to"] = "nobody@localhost"
        ET.SubElement(iq.xml, "{urn:xmpp:ping}ping")
        reply = await send_iq(alice, iq)
        assert reply is not None, "no answer to an IQ for nobody@localhost"
        assert condition_of(reply) == "service-unavailable", f"{reply}\nweb app log:\n  {webapp.describe_log()}"
    assert webapp.requests("user_exists", lambda r: r.param("user") == "nobody"), webapp.describe_log()


async def test_message_to_known_offline_user_stored(http_server, webapp):
    """bob is known to the web app but offline: alice's message is kept and
    delivered when he logs in."""
    async with logged_in(http_server, "alice") as (alice,):
        alice.send_message(BOB, "for later")
        await assert_pong(alice)
        assert alice.received("message", lambda m: m["type"] == "error") == []
    async with logged_in(http_server, "bob") as (bob,):
        bob.send_presence()
        await bob.next_message(ALICE, "for later")
    assert webapp.requests("user_exists", lambda r: r.param("user") == "bob"), webapp.describe_log()


# --- the web app failing -------------------------------------------------------


async def test_webapp_stopped_fails_closed_while_sessions_go_on(http_server, webapp):
    """The web app goes down: carol's login is refused with
    temporary-auth-failure within the timeout, one warning is logged for the
    outage, alice and bob, already online, keep chatting; once the web app is
    back carol logs in."""
    async with logged_in(http_server, "alice", "bob") as (alice, bob):
        await alice.go_online()
        await bob.go_online()
        webapp.stop()
        mark = len(http_server.log_text())
        for _ in range(2):
            client, took = await login_refused(http_server, "carol")
            assert client.sasl_failures == ["temporary-auth-failure"], client.sasl_failures
            assert took < AUTH_TIMEOUT + SLACK, f"refusal took {took:.1f} s"

        alice.send_message(BOB, "still here?")
        await bob.next_message(ALICE, "still here?")
        bob.send_message(ALICE, "yes")
        await alice.next_message(BOB, "yes")
        await assert_pong(alice)

        warnings = warnings_about_webapp(new_log(http_server, mark), webapp)
        assert len(warnings) == 1, "expected one warning for the outage, got:\n" + "\n".join(warnings)

        webapp.start()
        await assert_can_log_in(http_server, "carol")


async def test_outage_message_to_offline_user_not_called_unknown(http_server, webapp):
    """The web app is down and bob is offline: alice's messages to him cannot
    be checked, so they bounce with a temporary error, never with
    service-unavailable (which would tell alice bob does not exist); and the
    operator still gets one warning for the outage, not one per stanza or login."""
    async with logged_in(http_server, "alice") as (alice,):
        await alice.go_online()
        webapp.stop()
        mark = len(http_server.log_text())
        for body in ("one", "two", "three"):
            alice.send_message(BOB, body)
            bounce = await alice.next("message", lambda m: m["type"] == "error", what=f"(bounce of {body!r})")
            assert bounce["body"] == body
            assert bounce["error"]["type"] == "wait", str(bounce)
            assert bounce["error"]["condition"] not in ("service-unavailable", "item-not-found"), str(bounce)
        client, _ = await login_refused(http_server, "carol")
        assert client.sasl_failures == ["temporary-auth-failure"]
        lines = new_log(http_server, mark)
        warnings = [line for line in lines if " WARN " in line or " ERROR " in line]
        assert len(warnings) == 1, "expected one warning for the outage, got:\n" + "\n".join(warnings)


@pytest.mark.parametrize("mode", ["status:500", "status:503", "garbage", "hang"])
async def test_webapp_failing_refuses_with_temporary_auth_failure(http_server, webapp, mode):
    """The web app answers 5xx, answers "maybe", or does not answer at all:
    temporary-auth-failure (never not-authorized) within the timeout; once it
    behaves again, a login succeeds."""
    webapp.mode = mode
    mark = len(http_server.log_text())
    for user in ("alice", "bob"):
        client, took = await login_refused(http_server, user)
        assert client.sasl_failures == ["temporary-auth-failure"], client.sasl_failures
        assert took < AUTH_TIMEOUT + SLACK, f"refusal took {took:.1f} s"
        if mode == "hang":
            assert took >= AUTH_TIMEOUT - 0.5, f"refused after {took:.1f} s: before asking the web app?"
    assert len(webapp.requests("check_password")) == 2, webapp.describe_log()
    warnings = warnings_about_webapp(new_log(http_server, mark), webapp)
    assert len(warnings) == 1, "expected one warning for the outage, got:\n" + "\n".join(warnings)
    webapp.mode = "normal"
    await assert_can_log_in(http_server, "alice")


async def test_concurrency_limit_protects_webapp(webapp, make_http_server):
    """http_auth_max_inflight = 2 and a web app that hangs: six logins at once
    never put more than two requests on the web app, and every one is refused
    with temporary-auth-failure."""
    server = make_http_server(host_options={"http_auth_max_inflight": 2})
    webapp.mode = "hang"
    clients = [Client(server, "alice", resource=f"r{i}") for i in range(6)]
    results = await asyncio.gather(*(client.login(timeout=20) for client in clients), return_exceptions=True)
    assert all(isinstance(result, LoginFailed) for result in results), results
    assert [client.sasl_failures for client in clients] == [["temporary-auth-failure"]] * 6
    assert 1 <= webapp.peak_inflight <= 2, f"{webapp.peak_inflight} requests at once on the web app"
    webapp.mode = "normal"
    await assert_can_log_in(server, "alice")


# --- encoding ------------------------------------------------------------------

#: A valid localpart (RFC 7622) with characters that mean something in a URL.
NASTY_USER = "zoë+x=1%41#?"
#: & = + % space, escapes that must not be decoded twice, non-ASCII and more.
NASTY_PASSWORD = "p&ss=w+rd 100% %20%2B ünï€ø✓ ;/?#[]@!$'()*,~"


@pytest.mark.parametrize("check_method", ["GET", "POST"])
async def test_special_characters_round_trip(make_http_server, webapp, check_method):
    """A user and a password full of URL metacharacters and non-ASCII: the web
    app decodes exactly what the client typed, for register, check_password
    (GET or POST), user_exists and set_password."""
    server = make_http_server(host_options={"http_auth_check_method": check_method})
    client, reply = await register_in_band(server, NASTY_USER, NASTY_PASSWORD)
    try:
        assert reply["type"] == "result", str(reply)
        assert client.jid.bare == f"{NASTY_USER}@{DOMAIN}", "registered and logged in"
    finally:
        await client.close()
    assert webapp.password_of(NASTY_USER) == NASTY_PASSWORD, f"the web app holds {sorted(webapp.users)}"

    check = await webapp.wait_request("check_password", lambda r: r.status == 200)
    assert check.verb == check_method
    assert set(check.params) == {"user", "server", "pass"}, check
    assert (check.param("user"), check.param("pass")) == (NASTY_USER, NASTY_PASSWORD), check

    async with logged_in(server, "alice") as (alice,):
        alice.send_message(f"{NASTY_USER}@{DOMAIN}", "stored for zoë")
        await assert_pong(alice)
        assert alice.received("message", lambda m: m["type"] == "error") == []
    exists = await webapp.wait_request("user_exists", lambda r: r.param("user") == NASTY_USER)
    assert (exists.param("server"), exists.status) == (DOMAIN, 200), exists

    other = NASTY_PASSWORD[::-1] + " 2"
    async with logged_in(server, NASTY_USER, password=NASTY_PASSWORD) as (zoe,):
        reply = await change_password(zoe, other)
        assert reply["type"] == "result", str(reply)
    assert webapp.password_of(NASTY_USER) == other


# --- secrets in the log --------------------------------------------------------


def secret_forms(user: str, password: str) -> dict[str, str]:
    """The ways a password could leak: as is, URL-encoded, in a PLAIN payload."""
    return {
        "plain": password,
        "url-encoded": quote(password, safe=""),
        "form-encoded": quote_plus(password),
        "SASL PLAIN base64": base64.b64encode(f"\0{user}\0{password}".encode()).decode(),
    }


async def test_password_never_in_trace_log(make_http_server, webapp):
    """At log = "trace", through a good login, a wrong password, an in-band
    password change and registration, a 500, a timeout and an unreachable web
    app, and the CLI, no password appears in Jackdaw's output in any form."""
    marker = f"Marker-{uuid.uuid4().hex[:12]}"
    passwords = {
        name: f"{marker}-{name}" for name in ("good", "wrong", "changed", "registered", "e500", "hang", "down", "cli")
    }
    good, wrong, changed, registered, during_500, during_hang, unreachable, cli = passwords.values()
    webapp.add_user("alice", good)
    server = make_http_server(options={"log": "trace"})
    secrets = {
        name: secret_forms("dave" if name == "registered" else "alice", password)
        for name, password in passwords.items()
    }

    async with logged_in(server, "alice", password=good) as (alice,):
        assert (await change_password(alice, changed))["type"] == "result"
    await login_refused(server, "alice", wrong)
    client, reply = await register_in_band(server, "dave", registered)
    await client.close()
    assert reply["type"] == "result", str(reply)
    webapp.mode = "status:500"
    await login_refused(server, "alice", during_500)
    webapp.mode = "hang"
    await login_refused(server, "alice", during_hang)
    webapp.mode = "normal"
    webapp.stop()
    await login_refused(server, "alice", unreachable)
    webapp.start()
    cli_result = server.cli("user", "passwd", ALICE, stdin=cli + "\n")
    server.stop()

    assert len(webapp.requests("check_password")) >= 5, webapp.describe_log()
    output = server.log_text() + cli_result.stdout + cli_result.stderr
    assert " TRACE " in output, "the server did not log at trace level"
    leaks = [
        f"{name} password ({form}) on: {next(line for line in output.splitlines() if text in line)}"
        for name, forms in secrets.items()
        for form, text in forms.items()
        if text in output
    ]
    assert not leaks, "passwords in Jackdaw's output:\n" + "\n".join(leaks)
    assert marker not in output, [line for line in output.splitlines() if marker in line]


# --- options -------------------------------------------------------------------


async def test_post_mode_keeps_password_out_of_url(make_http_server, webapp):
    """http_auth_check_method = "POST": check_password comes as a urlencoded
    form, and neither the path nor the query string carries the password."""
    server = make_http_server(host_options={"http_auth_check_method": "POST"})
    await assert_can_log_in(server, "alice")
    client, _ = await login_refused(server, "alice", "Wrong&Pass=Word")
    assert client.sasl_failures == ["not-authorized"]
    checks = webapp.requests("check_password")
    assert len(checks) == 2, webapp.describe_log()
    for request in checks:
        assert request.verb == "POST", request
        assert request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"), request
        assert request.raw_query == "" and "pass" not in request.query, request
        assert request.param("user") == "alice" and request.param("server") == DOMAIN
    assert [r.param("pass") for r in checks] == [PASSWORDS["alice"], "Wrong&Pass=Word"]


@pytest.mark.parametrize("url_tail", ["/auth/$host/", "/auth/$host"])
async def test_host_substitution_and_trailing_slash(make_webapp, make_server, url_tail):
    """http_auth_url = ".../auth/$host/": Jackdaw calls /auth/localhost/METHOD
    (the host substituted, no double slash)."""
    app = make_webapp(prefix=f"/auth/{DOMAIN}")
    server = make_server(
        options={"limit_auth_max": 1000},
        host_options={
            "authentication": "http",
            "http_auth_url": app.base + url_tail,
            "http_auth_timeout": AUTH_TIMEOUT,
        },
        users={},
    )
    async with logged_in(server, "alice") as (alice,):
        alice.send_message("nobody@localhost", "hello?")
        await alice.next("message", lambda m: m["type"] == "error", what="(bounce)")
    paths = {r.path for r in app.requests()}
    assert {"/auth/localhost/check_password", "/auth/localhost/user_exists"} <= paths, app.describe_log()
    assert all(r.status == 200 for r in app.requests()), app.describe_log()


@pytest.mark.parametrize("insecure", [False, True], ids=["verified", "insecure"])
async def test_https_webapp_certificate_verified(make_webapp, make_server, insecure):
    """An HTTPS web app with a self-signed certificate: TLS verification is
    on, so logins are refused with temporary-auth-failure and nothing reaches
    the web app, unless the operator sets http_auth_insecure = true."""
    app = make_webapp()
    server = make_server(
        options={"limit_auth_max": 1000},
        host_options={
            "authentication": "http",
            "http_auth_url": f"https://localhost:{app.port}/auth",
            "http_auth_timeout": AUTH_TIMEOUT,
            "http_auth_insecure": insecure,
        },
        users={},
    )
    # The same port, now serving HTTPS with the self-signed certificate Jackdaw made for itself.
    app.stop()
    key = server.cert_path.with_suffix(".key")
    assert key.is_file(), f"no key beside {server.cert_path}"
    tls_app = make_webapp(port=app.port, tls=(server.cert_path, key))
    if insecure:
        await assert_can_log_in(server, "alice")
        request = await tls_app.wait_request("check_password")
        assert request.tls and request.status == 200, request
    else:
        client, took = await login_refused(server, "alice")
        assert client.sasl_failures == ["temporary-auth-failure"]
        assert took < AUTH_TIMEOUT + SLACK
        assert tls_app.requests() == [], "a request got through an unverified TLS connection"


def test_check_config_accepts_http_options(make_http_server, webapp, binary):
    """Every auth_http option of the contract passes check-config."""
    server = make_http_server(
        host_options={
            "http_auth_credentials": "jackdaw:secret",
            "http_auth_timeout": 2,
            "http_auth_cache_ttl": 0,
            "http_auth_max_inflight": 64,
            "http_auth_check_method": "GET",
            "http_auth_insecure": False,
        },
        start=False,
    )
    result = subprocess.run(
        [str(binary), "check-config", str(server.config_path)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- metrics -------------------------------------------------------------------


async def test_metrics_count_requests_by_method_and_outcome(http_server, webapp):
    """/metrics counts web app requests by method and outcome, and their latency."""

    def counter(text: str, method: str, outcome: str) -> float:
        return metric_value(text, "jackdaw_auth_http_requests_total", method=method, outcome=outcome)

    before = metrics(http_server)
    await assert_can_log_in(http_server, "alice")  # ok
    await login_refused(http_server, "alice", "wrong")  # rejected
    webapp.mode = "status:500"
    await login_refused(http_server, "alice")  # error
    webapp.mode = "hang"
    await login_refused(http_server, "alice")  # timeout
    webapp.mode = "normal"
    webapp.override("set_password", "status:501")
    async with logged_in(http_server, "bob") as (bob,):
        await change_password(bob, "bob-New-Secret")  # not_supported
    webapp.stop()
    await login_refused(http_server, "alice")  # unreachable
    after = metrics(http_server)

    expected = [
        ("check_password", "ok"),
        ("check_password", "rejected"),
        ("check_password", "error"),
        ("check_password", "timeout"),
        ("check_password", "unreachable"),
        ("set_password", "not_supported"),
    ]
    unchanged = [
        f"{method}/{outcome}: {counter(before, method, outcome)} -> {counter(after, method, outcome)}"
        for method, outcome in expected
        if counter(after, method, outcome) < counter(before, method, outcome) + 1
    ]
    relevant = "\n".join(line for line in after.splitlines() if "auth_http" in line)
    assert not unchanged, "counters that did not grow: " + "; ".join(unchanged) + "\n" + relevant
    observed = metric_value(after, "jackdaw_auth_http_request_duration_seconds_count") - metric_value(
        before, "jackdaw_auth_http_request_duration_seconds_count"
    )
    assert observed >= 5, f"latency histogram observed {observed} requests\n{relevant}"


# --- the cache -----------------------------------------------------------------


@pytest.fixture
def cached_server(make_http_server: Callable[..., JackdawServer]) -> JackdawServer:
    return make_http_server(host_options={"http_auth_cache_ttl": 60})


def checks_of(webapp: WebApp, password: str) -> list[Any]:
    return webapp.requests("check_password", lambda r: r.param("pass") == password)


async def test_cache_spares_webapp_on_second_login(cached_server, webapp):
    """With http_auth_cache_ttl = 60, alice's second login within the TTL does
    not ask the web app again."""
    await assert_can_log_in(cached_server, "alice")
    await assert_can_log_in(cached_server, "alice")
    assert len(checks_of(webapp, PASSWORDS["alice"])) == 1, webapp.describe_log()


async def test_cache_never_answers_for_a_wrong_password(cached_server, webapp):
    """A cached login does not make other passwords pass, nor are refusals
    cached: each wrong password asks the web app, and a password the web app
    starts accepting works at once."""
    await assert_can_log_in(cached_server, "alice")
    for _ in range(2):
        client, _ = await login_refused(cached_server, "alice", "alice-Next-Secret")
        assert client.sasl_failures == ["not-authorized"]
    assert len(checks_of(webapp, "alice-Next-Secret")) == 2, webapp.describe_log()
    webapp.add_user("alice", "alice-Next-Secret")  # changed in the web app itself
    await assert_can_log_in(cached_server, "alice", "alice-Next-Secret")


async def test_cache_invalidated_by_in_band_password_change(cached_server, webapp):
    """alice's login is cached; she changes her password in-band; her old
    password must not keep working from the cache."""
    new = "alice-New-Secret-9"
    async with logged_in(cached_server, "alice") as (alice,):
        assert (await change_password(alice, new))["type"] == "result"
    client, _ = await login_refused(cached_server, "alice", PASSWORDS["alice"])
    assert client.sasl_failures == ["not-authorized"]
    assert len(checks_of(webapp, PASSWORDS["alice"])) == 2, webapp.describe_log()
    await assert_can_log_in(cached_server, "alice", new)


async def test_cache_invalidated_by_in_band_removal(cached_server, webapp):
    """bob's login is cached; he deletes his account in-band; his password no
    longer logs in."""
    bob = await Client(cached_server, "bob").login()
    try:
        await remove_account(bob)  # with or without an answer: the web app log tells
    finally:
        await bob.close()
    await webapp.wait_request("remove_user")
    client, _ = await login_refused(cached_server, "bob")
    assert client.sasl_failures == ["not-authorized"]


async def test_cache_invalidated_by_cli_password_change_regression(cached_server, webapp):
    """alice's login is cached by the running server; the operator resets her
    password with `jackdaw user passwd` (e.g. because it leaked): the old
    password must not keep working from the running server's cache."""
    await assert_can_log_in(cached_server, "alice")
    cached_server.set_password(ALICE, "alice-Reset-Secret")
    client, _ = await login_refused(cached_server, "alice", PASSWORDS["alice"])
    assert client.sasl_failures == ["not-authorized"]
    await assert_can_log_in(cached_server, "alice", "alice-Reset-Secret")
