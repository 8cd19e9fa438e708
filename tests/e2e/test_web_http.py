"""What web clients meet on the HTTP side: Origin policy, discovery, TLS, proxies.

* Origin policy (``cross_domain_websocket``, ``cross_domain_bosh``,
  ``http_cors_override``): by default only pages from the server's own
  origin (and clients that send no ``Origin``, i.e. not browsers) may use
  the WebSocket and BOSH endpoints; CORS preflights and answers for allowed
  origins.
* XEP-0156 discovery: ``/.well-known/host-meta`` (XRD) and
  ``host-meta.json`` on the HTTP and HTTPS ports, following the request or
  ``http_external_url``; the links it gives work.
* WebSocket over TLS (``wss://``) on the HTTPS port, and the exact status
  for a non-XMPP subprotocol.
* ``trusted_proxies``: from a trusted peer, ``X-Forwarded-For`` names the
  client in logs and in the failed-login limit, and ``X-Forwarded-Proto:
  https`` counts as encrypted; from any other peer both are ignored.

HTTP with the standard library (``harness/bosh.py``), WebSockets with the
``websockets`` package (``harness/websocket.py``).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from harness import DOMAIN, PASSWORDS
from harness.bosh import BOSH_PATH, BoshSession, HttpReply, ahttp_request, https_context, logged_in_bosh
from harness.scenarios import assert_login_works, logged_in
from harness.websocket import WS_PATH, WsStream

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"

APP = "https://app.example"
EVIL = "https://evil.example"
REL_BOSH = "urn:xmpp:alt-connections:xbosh"
REL_WEBSOCKET = "urn:xmpp:alt-connections:websocket"
NS_XRD = "http://docs.oasis-open.org/ns/xri/xrd-1.0"

#: Both web endpoints open on the plain HTTP port (a TLS proxy in front).
WEB_OPTIONS = {"consider_bosh_secure": True, "consider_websocket_secure": True}

CORS_HEADERS = (
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-max-age",
)


async def ws_connect(
    server,
    *,
    https: bool = False,
    cafile=None,
    origin: str | None = None,
    headers: dict[str, str] | None = None,
    subprotocols: tuple[str, ...] = ("xmpp",),
    url: str | None = None,
) -> WsStream:
    """A WebSocket to the server's HTTP (or, with ``https``, HTTPS) port,
    with an ``Origin`` and extra headers if given."""
    if url is None:
        scheme, port = ("wss", server.https_port) if https else ("ws", server.http_port)
        url = f"{scheme}://127.0.0.1:{port}{WS_PATH}"
    tls = {}
    if url.startswith("wss://"):
        tls = {"ssl": https_context(cafile), "server_hostname": DOMAIN}
    ws = await connect(
        url,
        subprotocols=list(subprotocols),
        origin=origin,
        additional_headers=headers or {},
        open_timeout=10,
        ping_interval=None,
        compression=None,
        proxy=None,
        max_size=None,
        **tls,
    )
    return WsStream(ws)


async def ws_refused_status(server, **kwargs) -> int:
    """The HTTP status of a refused WebSocket upgrade (fails if it is accepted)."""
    try:
        stream = await ws_connect(server, **kwargs)
    except InvalidStatus as refused:
        return refused.response.status_code
    await stream.aclose()
    raise AssertionError(f"WebSocket upgrade with {kwargs} accepted")


def session_request(rid: int = 1000, to: str = DOMAIN) -> str:
    return (
        f"<body xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh' rid='{rid}' to='{to}' "
        f"wait='2' hold='1' ver='1.6' xmpp:version='1.0' xml:lang='en'/>"
    )


async def bosh_post(server, headers: dict[str, str], https: bool = False) -> HttpReply:
    """A BOSH session request with these headers (the session, if any, is left to time out)."""
    headers = {"Content-Type": "text/xml; charset=utf-8", **headers}
    return await ahttp_request(server, "POST", BOSH_PATH, session_request(), headers, https=https)


async def preflight(server, origin: str) -> HttpReply:
    """A browser's CORS preflight for a cross-origin BOSH POST."""
    return await ahttp_request(
        server,
        "OPTIONS",
        BOSH_PATH,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )


def no_cors_headers(reply: HttpReply) -> list[str]:
    return [name for name in CORS_HEADERS if reply.header(name) is not None]


def host_meta_links(reply: HttpReply, kind: str) -> dict[str, str]:
    """rel → href of a host-meta answer (``kind`` "xrd" or "json"), checking
    status, content type and the CORS header that lets any page read it."""
    assert reply.status == 200, reply
    assert reply.header("access-control-allow-origin") == "*", reply
    content_type = reply.header("content-type") or ""
    if kind == "xrd":
        assert content_type.startswith("application/xrd+xml"), reply
        root = ET.fromstring(reply.text)
        assert root.tag == f"{{{NS_XRD}}}XRD", reply
        return {link.get("rel"): link.get("href") for link in root.findall(f"{{{NS_XRD}}}Link")}
    assert content_type.startswith("application/json"), reply
    return {link["rel"]: link["href"] for link in json.loads(reply.text)["links"]}


HOST_META = {"xrd": "/.well-known/host-meta", "json": "/.well-known/host-meta.json"}


async def fetch_host_meta(server, kind: str, headers: dict[str, str] | None = None, **kwargs) -> dict[str, str]:
    reply = await ahttp_request(server, "GET", HOST_META[kind], headers=headers, **kwargs)
    return host_meta_links(reply, kind)


# --- Origin policy: WebSocket ---------------------------------------------------------


async def test_websocket_origin_default_same_origin_only(make_server):
    """With no cross_domain_websocket, a browser page from another origin
    (or an opaque 'null' origin) gets 403 on the upgrade; a page from the
    server's own origin (Origin matching the Host it connected to) and a
    client sending no Origin log in."""
    server = make_server(options=WEB_OPTIONS)
    assert await ws_refused_status(server, origin=EVIL) == 403
    assert await ws_refused_status(server, origin="null") == 403
    own = f"http://127.0.0.1:{server.http_port}"
    async with await ws_connect(server, origin=own) as stream:
        assert await stream.login("alice", PASSWORDS["alice"]) == f"{ALICE}/web", stream.dump()
    async with await ws_connect(server) as stream:
        assert await stream.login("bob", PASSWORDS["bob"]) == f"{BOB}/web", stream.dump()


@pytest.mark.parametrize("setting", ["listed", "any"])
async def test_websocket_cross_domain(make_server, setting):
    """cross_domain_websocket = ["https://app.example"] lets that origin in
    (and only it); cross_domain_websocket = true lets any origin in."""
    allowed = [APP] if setting == "listed" else True
    server = make_server(options=WEB_OPTIONS | {"cross_domain_websocket": allowed})
    async with await ws_connect(server, origin=APP) as stream:
        assert await stream.login("alice", PASSWORDS["alice"]) == f"{ALICE}/web", stream.dump()
    if setting == "listed":
        assert await ws_refused_status(server, origin=EVIL) == 403
    else:
        async with await ws_connect(server, origin=EVIL) as stream:
            await stream.open()
            await stream.read_features()


# --- Origin policy: BOSH ----------------------------------------------------------------


async def test_bosh_origin_default_same_origin_only(make_server):
    """With no cross_domain_bosh, a POST from another origin gets 403 (no
    session is created) and its preflight 403 without any CORS header, so
    the browser refuses; a page from the server's own origin logs in."""
    server = make_server(options=WEB_OPTIONS)
    refused = await bosh_post(server, {"Origin": EVIL})
    assert refused.status == 403, refused
    assert refused.header("access-control-allow-origin") is None, refused
    check = await preflight(server, EVIL)
    assert check.status == 403 and not no_cors_headers(check), check
    health = await ahttp_request(server, "GET", "/health")
    assert "bosh_sessions=0" in health.text, health
    own = f"http://127.0.0.1:{server.http_port}"
    bosh = await logged_in_bosh(server, "alice", PASSWORDS["alice"], headers={"Origin": own})
    assert bosh.jid == f"{ALICE}/bosh", bosh.dump()


async def test_bosh_cross_domain_preflight_and_answers(make_server):
    """cross_domain_bosh = ["https://APP.example/"] (case and trailing slash
    do not matter): the preflight from https://app.example is answered 204
    with the origin echoed, Vary: Origin, the allowed method and header and
    a max age, and no credentials; the whole login from that page works
    and every answer carries Access-Control-Allow-Origin. Another origin is
    refused (POST and preflight)."""
    server = make_server(options=WEB_OPTIONS | {"cross_domain_bosh": ["https://APP.example/"]})
    check = await preflight(server, APP)
    assert check.status == 204, check
    assert check.header("access-control-allow-origin") == APP, check
    assert "origin" in (check.header("vary") or "").lower(), check
    assert "POST" in (check.header("access-control-allow-methods") or ""), check
    assert "content-type" in (check.header("access-control-allow-headers") or "").lower(), check
    assert int(check.header("access-control-max-age") or "0") > 0, check
    assert check.header("access-control-allow-credentials") is None, check

    bosh = await logged_in_bosh(server, "alice", PASSWORDS["alice"], headers={"Origin": APP})
    for reply in bosh.replies:
        assert reply.http.header("access-control-allow-origin") == APP, f"{reply.http}\n{bosh.dump()}"
        assert reply.http.header("access-control-allow-credentials") is None, reply.http

    assert (await bosh_post(server, {"Origin": EVIL})).status == 403
    other = await preflight(server, EVIL)
    assert other.status == 403 and not no_cors_headers(other), other


async def test_cors_override_with_credentials(make_server):
    """http_cors_override = { bosh = { origins = [app], credentials = true } }:
    the preflight and the answers for that origin carry the echoed origin
    (never '*') and Access-Control-Allow-Credentials: true; other origins
    are refused."""
    server = make_server(
        options=WEB_OPTIONS
        | {"http_cors_override.bosh.origins": [APP], "http_cors_override.bosh.credentials": True}
    )
    check = await preflight(server, APP)
    assert check.status == 204, check
    assert check.header("access-control-allow-origin") == APP, check
    assert check.header("access-control-allow-credentials") == "true", check
    bosh = BoshSession(server, headers={"Origin": APP})
    created = await bosh.create()
    assert created.status == 200 and not created.terminated, bosh.dump()
    assert created.http.header("access-control-allow-origin") == APP, created.http
    assert created.http.header("access-control-allow-credentials") == "true", created.http
    assert (await bosh.terminate()).terminated, bosh.dump()
    assert (await bosh_post(server, {"Origin": EVIL})).status == 403


async def test_cors_override_disables_cross_domain_for_bosh_only(make_server):
    """cross_domain_bosh = true and cross_domain_websocket = true, but
    http_cors_override.bosh.enabled = false: BOSH refuses other origins
    again (the override wins), the WebSocket still takes them (the override
    is per endpoint), and BOSH from the server's own origin still works."""
    server = make_server(
        options=WEB_OPTIONS
        | {"cross_domain_bosh": True, "cross_domain_websocket": True, "http_cors_override.bosh.enabled": False}
    )
    assert (await bosh_post(server, {"Origin": APP})).status == 403
    assert (await preflight(server, APP)).status == 403
    async with await ws_connect(server, origin=APP) as stream:
        await stream.open()
        await stream.read_features()
    own = f"http://127.0.0.1:{server.http_port}"
    bosh = BoshSession(server, headers={"Origin": own})
    assert (await bosh.create()).status == 200, bosh.dump()
    assert (await bosh.terminate()).terminated, bosh.dump()


# --- XEP-0156 host-meta ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["xrd", "json"])
async def test_host_meta_on_http(server, kind):
    """host-meta on the HTTP port names the BOSH and WebSocket URLs of the
    Host the request was sent to (http:// and ws://), readable from any
    page (Access-Control-Allow-Origin: *); another Host header gives URLs
    under that name."""
    base = f"127.0.0.1:{server.http_port}"
    links = await fetch_host_meta(server, kind)
    assert links.get(REL_BOSH) == f"http://{base}{BOSH_PATH}", links
    assert links.get(REL_WEBSOCKET) == f"ws://{base}{WS_PATH}", links
    links = await fetch_host_meta(server, kind, {"Host": "chat.example.net:8080"})
    assert links.get(REL_BOSH) == f"http://chat.example.net:8080{BOSH_PATH}", links
    assert links.get(REL_WEBSOCKET) == f"ws://chat.example.net:8080{WS_PATH}", links


@pytest.mark.parametrize("kind", ["xrd", "json"])
async def test_host_meta_on_https_links_work(server, kind):
    """host-meta on the HTTPS port (certificate checked for 'localhost')
    names https:// and wss:// URLs; the advertised BOSH URL takes a session
    and a login there, with no consider_bosh_secure."""
    base = f"127.0.0.1:{server.https_port}"
    links = await fetch_host_meta(server, kind, https=True, cafile=server.cert_path)
    assert links.get(REL_BOSH) == f"https://{base}{BOSH_PATH}", links
    assert links.get(REL_WEBSOCKET) == f"wss://{base}{WS_PATH}", links
    bosh = await logged_in_bosh(server, "alice", PASSWORDS["alice"], https=True, cafile=server.cert_path)
    assert bosh.jid == f"{ALICE}/bosh", bosh.dump()
    assert (await bosh.terminate()).terminated, bosh.dump()


@pytest.mark.parametrize("https", [False, True], ids=["http", "https"])
async def test_host_meta_with_http_external_url(make_server, https):
    """With http_external_url = "https://chat.example/xmpp/" (a proxy in
    front), both formats on both ports name URLs under it, whatever Host the
    request had; a page from that origin counts as the server's own."""
    server = make_server(options={"http_external_url": "https://chat.example/xmpp/", "consider_bosh_secure": True})
    for kind in HOST_META:
        links = await fetch_host_meta(server, kind, https=https)
        assert links.get(REL_BOSH) == "https://chat.example/xmpp/http-bind", links
        assert links.get(REL_WEBSOCKET) == "wss://chat.example/xmpp/xmpp-websocket", links
    bosh = BoshSession(server, https=https, headers={"Origin": "https://chat.example"})
    assert (await bosh.create()).status == 200, bosh.dump()
    assert (await bosh.terminate()).terminated, bosh.dump()
    assert (await bosh_post(server, {"Origin": EVIL}, https=https)).status == 403


# --- WebSocket ------------------------------------------------------------------------


async def test_websocket_over_tls_on_https_port(server):
    """wss:// on the HTTPS port (certificate checked for 'localhost') needs
    no consider_websocket_secure: SCRAM login, a chat with bob (TCP) both
    ways, ping, <close/>."""
    async with logged_in(server, "bob") as (bob,):
        await bob.go_online()
        async with await ws_connect(server, https=True, cafile=server.cert_path) as stream:
            assert stream.subprotocol == "xmpp", stream.dump()
            jid = await stream.login("alice", PASSWORDS["alice"], "SCRAM-SHA-256", resource="wss")
            assert jid == f"{ALICE}/wss", stream.dump()
            await stream.send(
                f"<message xmlns='jabber:client' to='{BOB}' type='chat'><body>over wss</body></message>"
            )
            await bob.next_message(ALICE, "over wss")
            bob.send_message(jid, "back over wss")
            message = await stream.read_until("{jabber:client}message", what="(bob's answer)")
            assert message.findtext("{jabber:client}body") == "back over wss", stream.dump()
            pong = await stream.ping()
            assert pong.get("type") == "result", stream.dump()
            await stream.close_stream()


async def test_non_xmpp_subprotocol_answered_501(make_server):
    """An upgrade offering only another subprotocol gets exactly 501 (as
    Prosody answers), on plain HTTP and over TLS."""
    server = make_server(options=WEB_OPTIONS)
    assert await ws_refused_status(server, subprotocols=("chat",)) == 501
    assert await ws_refused_status(server, subprotocols=("chat",), https=True) == 501


# --- trusted proxies -------------------------------------------------------------------


async def test_forwarded_for_names_client_in_log_and_rate_limit(make_server):
    """Behind a trusted proxy (127.0.0.1, the default trusted_proxies) with
    limit_auth_max = 2: two wrong passwords over BOSH from X-Forwarded-For
    203.0.113.7 use up that address's limit, so its third try (the right
    password) and a WebSocket login from the same forwarded address get
    temporary-auth-failure, while 203.0.113.8 (the last untrusted hop of a
    forwarded chain) and a direct TCP login from 127.0.0.1 log in. The log
    names the forwarded addresses as the connections' remote addresses."""
    server = make_server(options=WEB_OPTIONS | {"limit_auth_max": 2})
    guesser = BoshSession(server, headers={"X-Forwarded-For": "203.0.113.7"})
    await guesser.create()
    for _ in range(2):
        outcome = await guesser.auth_plain("alice", "wrong-password")
        assert outcome.condition == "not-authorized", guesser.dump()
    outcome = await guesser.auth_plain("alice", PASSWORDS["alice"])
    assert not outcome.success and outcome.condition == "temporary-auth-failure", guesser.dump()
    assert (await guesser.terminate()).terminated, guesser.dump()

    async with await ws_connect(server, headers={"X-Forwarded-For": "203.0.113.7"}) as stream:
        await stream.open()
        await stream.read_features()
        outcome = await stream.auth_plain("alice", PASSWORDS["alice"])
        assert outcome.condition == "temporary-auth-failure", stream.dump()

    other = await logged_in_bosh(
        server, "alice", PASSWORDS["alice"], headers={"X-Forwarded-For": "198.51.100.66, 203.0.113.8"}
    )
    assert other.jid == f"{ALICE}/bosh", other.dump()
    await assert_login_works(server, "carol")

    log = server.log_text()
    assert re.search(r'kind="bosh" remote=203\.0\.113\.7:\d+\}: authentication failed', log), log[-3000:]
    assert re.search(r'kind="bosh" remote=203\.0\.113\.8:\d+\}: authenticated user=alice', log), log[-3000:]
    assert re.search(r'kind="websocket" remote=203\.0\.113\.7:\d+', log), log[-3000:]
    assert not re.search(r"remote=198\.51\.100\.66", log), "a client-supplied hop was taken as the client"


async def test_forwarded_proto_https_counts_as_encrypted(server):
    """No consider_*_secure: from the trusted proxy, X-Forwarded-Proto: https
    makes BOSH and the WebSocket on the plain HTTP port count as encrypted
    (login works) and host-meta name https/wss URLs; the same requests
    without the header are refused with 403."""
    https = {"X-Forwarded-Proto": "https"}
    assert (await bosh_post(server, {})).status == 403
    bosh = await logged_in_bosh(server, "alice", PASSWORDS["alice"], headers=https)
    assert bosh.jid == f"{ALICE}/bosh", bosh.dump()
    assert (await bosh.terminate()).terminated, bosh.dump()

    assert await ws_refused_status(server) == 403
    async with await ws_connect(server, headers=https) as stream:
        assert await stream.login("bob", PASSWORDS["bob"]) == f"{BOB}/web", stream.dump()
        await stream.close_stream()

    links = await fetch_host_meta(server, "json", https)
    assert links[REL_BOSH].startswith("https://") and links[REL_WEBSOCKET].startswith("wss://"), links


async def test_untrusted_peer_forwarded_headers_ignored(make_server):
    """trusted_proxies = []: X-Forwarded-Proto does not make the WebSocket
    count as encrypted (403) nor host-meta name https URLs, and
    X-Forwarded-For does not change the client's address: failed logins
    "from" 203.0.113.7 use up the limit of 127.0.0.1, so a login "from"
    203.0.113.8 is refused too, and the log names only 127.0.0.1."""
    server = make_server(options={"trusted_proxies": [], "consider_bosh_secure": True, "limit_auth_max": 2})
    assert await ws_refused_status(server, headers={"X-Forwarded-Proto": "https"}) == 403
    links = await fetch_host_meta(server, "json", {"X-Forwarded-Proto": "https"})
    assert links[REL_BOSH].startswith("http://") and links[REL_WEBSOCKET].startswith("ws://"), links

    guesser = BoshSession(server, headers={"X-Forwarded-For": "203.0.113.7"})
    await guesser.create()
    for _ in range(2):
        outcome = await guesser.auth_plain("alice", "wrong-password")
        assert outcome.condition == "not-authorized", guesser.dump()
    other = BoshSession(server, headers={"X-Forwarded-For": "203.0.113.8"})
    await other.create()
    outcome = await other.auth_plain("alice", PASSWORDS["alice"])
    assert outcome.condition == "temporary-auth-failure", other.dump()
    for bosh in (guesser, other):
        assert (await bosh.terminate()).terminated, bosh.dump()

    log = server.log_text()
    assert "203.0.113." not in log, "a forwarded address from an untrusted peer reached the log"
    assert re.search(r'kind="bosh" remote=127\.0\.0\.1:\d+\}: authentication failed', log), log[-3000:]
