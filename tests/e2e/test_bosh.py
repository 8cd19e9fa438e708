"""XMPP over BOSH (XEP-0124 with XEP-0206) at ``/http-bind``.

Raw HTTP exchanges (``harness/bosh.py``: the standard library's
``http.client``, each request in a thread of its own, so that the server
can hold it while slixmpp users in the same event loop go on): the session
request and its attributes, SASL PLAIN and SCRAM-SHA-256 inside bodies, the
restart, binding, a chat both ways with bob on TCP (slixmpp); then the HTTP
binding itself: requests held until there is data or ``wait`` passes, a new
request releasing the held one, polling sessions (hold=0), request ids out
of order, resent and outside the window, pause, inactivity, terminate; and
what goes wrong: unknown sessions and hosts, bad requests, oversized bodies
and stanzas, a wrong password, SIGTERM. BOSH over the HTTPS port needs no
option; plain HTTP needs ``consider_bosh_secure``.

Small ``wait`` and ``bosh_max_inactivity`` values keep every test within a
few seconds.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from harness import DOMAIN, PASSWORDS
from harness.bosh import (
    BOSH_PATH,
    NS_HTTPBIND,
    NS_XBOSH,
    BoshSession,
    ahttp_request,
    health,
    in_thread,
    logged_in_bosh,
    parse_body,
    ping_iq,
    wait_bosh_sessions,
)
from harness.client import Client
from harness.raw import NS_BIND, NS_SASL, NS_STREAM, NS_STREAM_ERRORS, NS_TLS, mechanisms_of
from harness.scenarios import assert_login_works, assert_pong, logged_in, online_with_roster, subscribe_mutually

#: consider_bosh_secure: the HTTP port counts as encrypted (a TLS proxy in
#: front), which BOSH needs while c2s_require_encryption is on.
BOSH_OPTIONS = {"consider_bosh_secure": True}
SIZE_LIMIT = 10_000

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


@pytest.fixture
def bosh_server(make_server):
    """A running server whose BOSH endpoint is open on plain HTTP (alice, bob and carol)."""
    return make_server(options=BOSH_OPTIONS)


def chat(to: str, body: str, msg_id: str = "m1") -> str:
    return f"<message xmlns='jabber:client' to='{to}' type='chat' id='{msg_id}'><body>{body}</body></message>"


def message_of_size(size: int, to: str = BOB) -> str:
    head = f"<message xmlns='jabber:client' to='{to}' type='chat'><body>"
    tail = "</body></message>"
    return head + "x" * (size - len(head) - len(tail)) + tail


async def assert_session_works(bosh: BoshSession, iq_id: str = "alive") -> None:
    """The BOSH session still answers: a ping gets its result."""
    pong = await bosh.ping(iq_id)
    assert pong.get("type") == "result", "ping over BOSH not answered with a result\n" + bosh.dump()


async def assert_session_gone(bosh: BoshSession) -> None:
    """The session is over: the next request gets a terminate answer, and
    /health counts no BOSH session any more."""
    reply = await bosh.send()
    assert reply.status == 200 and reply.terminated, "the ended session still answers normally\n" + bosh.dump()
    await wait_bosh_sessions(bosh.server, 0)


async def subscribed_contact(server, contact: str = "bob") -> Client:
    """alice and ``contact`` subscribe to each other over TCP (slixmpp); alice's
    TCP session is then closed, and ``contact`` stays logged in (returned,
    the caller closes it) to watch alice's presence."""
    alice = Client(server, "alice", resource="tcp")
    other = Client(server, contact)
    await asyncio.gather(alice.login(), other.login())
    try:
        await online_with_roster(alice, other)
        await subscribe_mutually(alice, other)
        await alice.close()
        await other.next_presence(f"{ALICE}/tcp", "unavailable")
    except BaseException:
        await asyncio.gather(alice.close(), other.close(), return_exceptions=True)
        raise
    return other


async def bosh_online(bosh: BoshSession, watcher: Client) -> None:
    """The BOSH user sends initial presence, which ``watcher`` (a contact) sees."""
    reply = await bosh.send("<presence xmlns='jabber:client'/>")
    assert reply.status == 200 and not reply.terminated, bosh.dump()
    await watcher.next_presence(bosh.jid, "available")


# --- the whole exchange ------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
async def test_login_message_both_ways_ping_and_terminate(bosh_server, mechanism):
    """alice over BOSH: the session request is answered with the XEP-0124
    session attributes (sid, the wait asked for, requests=2, hold=1,
    inactivity, polling, maxpause, ver, from, xmpp:version and
    xmpp:restartlogic) and the stream features (SASL, no STARTTLS, no -PLUS:
    there is no TLS channel to bind to); login, xmpp:restart, bind, session;
    a chat with bob (slixmpp over TCP) both ways, bob's message answering a
    request the server was holding; ping; terminate."""
    async with logged_in(bosh_server, "bob") as (bob,):
        await bob.go_online()
        bosh = BoshSession(bosh_server, wait=10)
        created = await bosh.create()
        assert created.status == 200 and not created.terminated, bosh.dump()
        assert (created.http.header("content-type") or "").startswith("text/xml"), created.http
        expected = {
            "wait": "10",
            "requests": "2",
            "hold": "1",
            "inactivity": "60",
            "maxpause": "300",
            "from": DOMAIN,
            f"{{{NS_XBOSH}}}version": "1.0",
            f"{{{NS_XBOSH}}}restartlogic": "true",
        }
        got = {name: created.get(name) for name in expected}
        assert got == expected, f"session attributes {got}, expected {expected}\n{bosh.dump()}"
        for name in ("sid", "polling", "ver"):
            assert created.get(name), f"the session creation answer has no {name!r}\n" + bosh.dump()
        mechanisms = mechanisms_of(bosh.features)
        assert {"PLAIN", "SCRAM-SHA-256"} <= set(mechanisms), f"offered {mechanisms}\n{bosh.dump()}"
        assert not [m for m in mechanisms if m.endswith("-PLUS")], f"-PLUS offered over BOSH: {mechanisms}"
        assert bosh.features.find(f"{{{NS_TLS}}}starttls") is None, "STARTTLS offered over BOSH\n" + bosh.dump()

        await bosh.authenticate("alice", PASSWORDS["alice"], mechanism)
        features = await bosh.restart()
        assert features.find(f"{{{NS_BIND}}}bind") is not None, bosh.dump()
        assert features.find(f"{{{NS_SASL}}}mechanisms") is None, "SASL offered again after login\n" + bosh.dump()
        assert await bosh.bind_resource("web") == f"{ALICE}/web", bosh.dump()

        # alice → bob; the server holds that request (it has nothing to say yet)
        sending = bosh.start(chat(BOB, "hello over BOSH"))
        received = await bob.next_message(ALICE, "hello over BOSH")
        assert str(received["from"]) == f"{ALICE}/web"
        assert not sending.done(), "a request was answered at once with nothing to say\n" + bosh.dump()

        # bob → alice, into a request the server is holding: the new empty
        # request releases the one above (hold=1) and is held in its place
        poll = bosh.start()
        released = await asyncio.wait_for(sending, 5)
        assert released.status == 200 and not released.terminated, bosh.dump()
        await asyncio.sleep(0.5)
        assert not poll.done(), "an empty request was answered at once instead of being held\n" + bosh.dump()
        sent = time.monotonic()
        bob.send_message(f"{ALICE}/web", "hello from TCP")
        answer = await asyncio.wait_for(poll, 15)
        delay = time.monotonic() - sent
        assert delay < 5, f"the held request was answered {delay:.1f} s after bob's message\n" + bosh.dump()
        messages = [child for child in answer.children if child.tag == "{jabber:client}message"]
        assert messages, "the held request was answered without bob's message\n" + bosh.dump()
        assert messages[0].get("from") == str(bob.jid), bosh.dump()
        assert messages[0].get("to") == f"{ALICE}/web", bosh.dump()
        assert messages[0].findtext("{jabber:client}body") == "hello from TCP", bosh.dump()

        await assert_session_works(bosh)

        ended = await bosh.terminate()
        assert ended.status == 200 and ended.terminated, bosh.dump()
        await wait_bosh_sessions(bosh_server, 0)
        await assert_pong(bob)


async def test_session_limits_clamped(make_server):
    """With bosh_max_wait = 30 and bosh_max_requests = 3, a session request
    asking for wait=9999 and hold=5 is answered with wait=30, requests=3 and
    hold=2 (hold stays below requests, so a client can always send)."""
    server = make_server(options=BOSH_OPTIONS | {"bosh_max_wait": 30, "bosh_max_requests": 3})
    bosh = BoshSession(server, wait=9999, hold=5)
    created = await bosh.create()
    assert created.status == 200 and not created.terminated, bosh.dump()
    got = {name: created.get(name) for name in ("wait", "requests", "hold")}
    assert got == {"wait": "30", "requests": "3", "hold": "2"}, f"{got}\n{bosh.dump()}"
    assert (await bosh.terminate()).terminated, bosh.dump()


async def test_stanza_without_namespace_is_a_client_stanza(bosh_server):
    """A stanza in the body without its own xmlns (it inherits the httpbind
    namespace) is taken as a jabber:client stanza: bob receives the message."""
    async with logged_in(bosh_server, "bob") as (bob,):
        await bob.go_online()
        bosh = await logged_in_bosh(bosh_server, "alice", PASSWORDS["alice"])
        sending = bosh.start(f"<message to='{BOB}' type='chat'><body>no namespace</body></message>")
        await bob.next_message(ALICE, "no namespace")
        await assert_session_works(bosh)
        assert (await sending).status == 200, bosh.dump()


async def test_wrong_password_then_retry(bosh_server):
    """A wrong password over BOSH is answered with <failure><not-authorized/>
    in the body; the session stays, and a second try (SCRAM) logs in."""
    bosh = BoshSession(bosh_server)
    await bosh.create()
    outcome = await bosh.auth_plain("alice", "not-the-password")
    assert not outcome.success and outcome.condition == "not-authorized", bosh.dump()
    await bosh.authenticate("alice", PASSWORDS["alice"], "SCRAM-SHA-256")
    assert await bosh.bind("retry") == f"{ALICE}/retry", bosh.dump()
    await assert_session_works(bosh)


async def test_get_and_health(bosh_server):
    """GET /http-bind explains the endpoint (200, text); /health counts BOSH
    sessions: 0, then 1 with a session, then 0 after it terminated."""
    info = await ahttp_request(bosh_server, "GET", BOSH_PATH)
    assert info.status == 200 and "BOSH" in info.text, info
    assert (info.header("content-type") or "").startswith("text/plain"), info
    assert (await in_thread(health, bosh_server))["bosh_sessions"] == 0
    bosh = await logged_in_bosh(bosh_server, "alice", PASSWORDS["alice"])
    assert (await in_thread(health, bosh_server))["bosh_sessions"] == 1
    await bosh.terminate()
    await wait_bosh_sessions(bosh_server, 0)


# --- held requests ------------------------------------------------------------------


async def test_empty_request_held_until_wait(bosh_server):
    """With nothing to say, the server holds an empty request for the
    session's wait (2 s) and then answers with an empty <body/>."""
    bosh = await logged_in_bosh(bosh_server, "alice", PASSWORDS["alice"], wait=2)
    reply = await bosh.send()
    assert reply.empty, "expected an empty answer after wait\n" + bosh.dump()
    assert 1.6 <= reply.http.elapsed <= 4.5, f"held {reply.http.elapsed:.2f} s, wait is 2 s\n{bosh.dump()}"
    await assert_session_works(bosh)


async def test_new_request_releases_held_one(bosh_server):
    """hold=1: while one empty request is held, a new one makes the server
    answer the older at once (empty), and the new one is held in its place
    until wait passes."""
    bosh = await logged_in_bosh(bosh_server, "alice", PASSWORDS["alice"], wait=2)
    first = bosh.start()
    await asyncio.sleep(0.7)
    assert not first.done(), "the first request was not held\n" + bosh.dump()
    second = bosh.start()
    sent = time.monotonic()
    released = await asyncio.wait_for(first, 10)
    delay = time.monotonic() - sent
    assert delay < 1.5, f"the held request was released {delay:.2f} s after the new one\n" + bosh.dump()
    assert released.empty, bosh.dump()
    assert not second.done(), "the new request was not held\n" + bosh.dump()
    held = await asyncio.wait_for(second, 10)
    assert held.empty and held.http.elapsed >= 1.6, f"new request held {held.http.elapsed:.2f} s\n{bosh.dump()}"


async def test_polling_session_with_hold_zero(bosh_server):
    """A session created with hold=0 is a polling session: every request is
    answered at once (never held), and what the server has to say (here the
    SASL failure for a wrong password) comes with a later poll."""
    bosh = BoshSession(bosh_server, wait=5, hold=0)
    created = await bosh.create()
    assert created.get("hold") == "0", bosh.dump()
    for _ in range(3):
        reply = await bosh.send()
        assert reply.empty and reply.http.elapsed < 1.5, f"a poll was held with hold=0\n{bosh.dump()}"
    outcome = await bosh.auth_plain("alice", "not-the-password")
    assert not outcome.success and outcome.condition == "not-authorized", bosh.dump()
    slow = [reply for reply in bosh.replies if reply.http.elapsed >= 1.5]
    assert not slow, "requests were held in a polling session\n" + bosh.dump()
    assert (await bosh.terminate()).terminated, bosh.dump()


@pytest.mark.parametrize("hold", [0, 1])
async def test_empty_request_between_sasl_success_and_restart_regression(bosh_server, hold):
    """XEP-0124 lets a client send an empty request at any time; a polling
    client (hold=0) must poll to even see <success/>. An empty request after
    SASL success and before the xmpp:restart request must not matter: the
    restart gives the new features, bind works, a ping is answered, and no
    request is held in a polling session."""
    bosh = BoshSession(bosh_server, wait=1, hold=hold)
    await bosh.create()
    await bosh.authenticate("alice", PASSWORDS["alice"], "PLAIN")
    reply = await bosh.send()  # an empty poll after <success/>
    assert reply.status == 200 and not reply.terminated, bosh.dump()
    assert await bosh.bind("poller") == f"{ALICE}/poller", bosh.dump()
    await assert_session_works(bosh)
    if hold == 0:
        slow = [reply for reply in bosh.replies if reply.http.elapsed >= 0.9]
        assert not slow, "requests were held in a polling session\n" + bosh.dump()


# --- request ids ------------------------------------------------------------------


async def test_out_of_order_rids_processed_in_order(bosh_server):
    """Request rid+2 arrives before rid+1 (within the window of 2): its
    stanza waits; once rid+1 comes, both are answered (no terminate) and bob
    receives rid+1's message before rid+2's."""
    async with logged_in(bosh_server, "bob") as (bob,):
        await bob.go_online()
        bosh = await logged_in_bosh(bosh_server, "alice", PASSWORDS["alice"])
        first_rid, second_rid = bosh.next_rid(), bosh.next_rid()
        second = bosh.start(chat(BOB, "second", "m2"), rid=second_rid)
        await asyncio.sleep(1.0)
        assert bob.received("message") == [], "a request was processed before the rid ahead of it arrived"
        assert not second.done(), "the early request was answered before the gap was filled\n" + bosh.dump()
        first = bosh.start(chat(BOB, "first", "m1"), rid=first_rid)
        answers = await asyncio.wait_for(asyncio.gather(first, second), 10)
        for answer in answers:
            assert answer.status == 200 and not answer.terminated, bosh.dump()
        got = [(await bob.next_message(ALICE))["body"] for _ in range(2)]
        assert got == ["first", "second"], f"bob received {got}\n{bosh.dump()}"
        await assert_session_works(bosh)


async def test_resent_rid_gets_the_same_answer_and_nothing_is_sent_twice(bosh_server):
    """A request (a message to bob and a ping) is answered with the ping
    result; the same request sent again (same rid, the client lost the
    answer) gets the identical answer at once, and bob gets the message once."""
    async with logged_in(bosh_server, "bob") as (bob,):
        await bob.go_online()
        bosh = await logged_in_bosh(bosh_server, "alice", PASSWORDS["alice"])
        rid = bosh.next_rid()
        text = bosh.body_text(rid, chat(BOB, "only once") + ping_iq("replayed"))
        original = await in_thread(bosh.post_text, text, rid)
        ids = [child.get("id") for child in original.children]
        assert original.status == 200 and "replayed" in ids, "no ping result in the answer\n" + bosh.dump()
        again = await in_thread(bosh.post_text, text, rid)
        assert again.status == 200 and again.http.text == original.http.text, (
            "the resent request got a different answer\n" + bosh.dump()
        )
        assert again.http.elapsed < 1.5, f"the replayed answer took {again.http.elapsed:.2f} s\n" + bosh.dump()
        await bob.next_message(ALICE, "only once")
        await assert_session_works(bosh)
        assert bob.received("message") == [], "the resent request delivered the message again"


async def test_unknown_sid_refused_other_session_unaffected(bosh_server):
    """A request naming a session that does not exist gets HTTP 200 with
    type='terminate' condition='item-not-found'; alice's live session goes on."""
    bosh = await logged_in_bosh(bosh_server, "alice", PASSWORDS["alice"])
    stranger = await bosh.send(sid="0123456789abcdef0123456789abcdef", rid=12345)
    assert stranger.status == 200, bosh.dump()
    assert stranger.terminated and stranger.condition == "item-not-found", bosh.dump()
    await assert_session_works(bosh)
    assert (await in_thread(health, bosh_server))["bosh_sessions"] == 1


@pytest.mark.parametrize("case", ["beyond-window", "forgotten"])
async def test_bad_rid_ends_the_session(bosh_server, case):
    """A rid beyond the window (next expected + requests) or an old rid whose
    answer is no longer kept (the session request's, after more than 8
    answers) ends the session: terminate with item-not-found, then the
    session is gone for good."""
    bosh = await logged_in_bosh(bosh_server, "alice", PASSWORDS["alice"])
    if case == "beyond-window":
        rid = bosh.rid + 2  # requests=2: bosh.rid and bosh.rid + 1 are in the window
    else:
        for number in range(5):
            await bosh.ping(f"filler{number}")
        assert len(bosh.replies) > 8, bosh.dump()
        rid = bosh.replies[0].rid
    reply = await bosh.send(rid=rid)
    assert reply.status == 200 and reply.terminated, bosh.dump()
    assert reply.condition == "item-not-found", bosh.dump()
    await assert_session_gone(bosh)


# --- pause, inactivity, terminate -----------------------------------------------------


async def test_pause_answers_held_requests_and_extends_inactivity(make_server):
    """pause='5' (bosh_max_inactivity is 2): the held request and the pause
    request are both answered at once, and 3.5 s of silence later (longer
    than the usual inactivity) the session still works."""
    server = make_server(options=BOSH_OPTIONS | {"bosh_max_inactivity": 2})
    bosh = await logged_in_bosh(server, "alice", PASSWORDS["alice"], wait=10)
    held = bosh.start()
    await asyncio.sleep(0.5)
    assert not held.done(), bosh.dump()
    pause = bosh.start(attrs={"pause": "5"})
    answers = await asyncio.wait_for(asyncio.gather(held, pause), 3)
    for answer in answers:
        assert answer.status == 200 and not answer.terminated, bosh.dump()
        assert answer.http.elapsed < 2, "a request was still held after pause\n" + bosh.dump()
    await asyncio.sleep(3.5)
    await assert_session_works(bosh)


async def test_pause_above_maxpause_ends_the_session(bosh_server):
    """pause='301' (maxpause is 300) ends the session with policy-violation."""
    bosh = await logged_in_bosh(bosh_server, "alice", PASSWORDS["alice"])
    reply = await bosh.send(attrs={"pause": "301"})
    assert reply.status == 200 and reply.terminated, bosh.dump()
    assert reply.condition == "policy-violation", bosh.dump()
    await assert_session_gone(bosh)


async def test_inactivity_ends_the_session(make_server):
    """bosh_max_inactivity = 2: a request held for wait=4 s is activity (the
    session lives on); then alice (bob's contact, online over BOSH) stops
    sending requests, and after 2-4 s (not before 2) the session ends: bob
    gets her unavailable presence, /health counts no BOSH session, and the
    sid is unknown afterwards."""
    server = make_server(options=BOSH_OPTIONS | {"bosh_max_inactivity": 2})
    bob = await subscribed_contact(server)
    try:
        bosh = await logged_in_bosh(server, "alice", PASSWORDS["alice"], wait=4)
        assert bosh.created.get("inactivity") == "2", bosh.dump()
        await bosh_online(bosh, bob)
        # her own presence and bob's (answering the probe) come first
        await bosh.expect("{jabber:client}presence", lambda p: p.get("from") == bosh.jid, what="(own presence)")
        await bosh.expect("{jabber:client}presence", lambda p: p.get("from") == str(bob.jid), what="(bob's)")
        held = await bosh.send()
        assert held.empty and held.http.elapsed >= 3.5, "a held request did not last its wait\n" + bosh.dump()
        await assert_session_works(bosh)
        assert bob.received("presence", lambda p: p.xml.get("type") == "unavailable") == [], (
            "alice went offline while her request was held"
        )
        silent_since = time.monotonic()
        await bob.next_presence(bosh.jid, "unavailable", timeout=8)
        silence = time.monotonic() - silent_since
        assert silence >= 1.8, f"the session ended after {silence:.1f} s of inactivity, limit 2 s"
        await wait_bosh_sessions(server, 0)
        reply = await bosh.send()
        assert reply.terminated and reply.condition == "item-not-found", bosh.dump()
    finally:
        await bob.close()


async def test_client_terminate_ends_the_session(make_server):
    """type='terminate' carrying an unavailable presence: answered with
    type='terminate', bob gets alice's unavailable presence, /health counts
    no BOSH session, and the sid is unknown afterwards."""
    server = make_server(options=BOSH_OPTIONS)
    bob = await subscribed_contact(server)
    try:
        bosh = await logged_in_bosh(server, "alice", PASSWORDS["alice"])
        await bosh_online(bosh, bob)
        reply = await bosh.terminate("<presence xmlns='jabber:client' type='unavailable'/>")
        assert reply.status == 200 and reply.terminated, bosh.dump()
        await bob.next_presence(bosh.jid, "unavailable", timeout=5)
        await wait_bosh_sessions(server, 0)
        after = await bosh.send()
        assert after.terminated and after.condition == "item-not-found", bosh.dump()
    finally:
        await bob.close()


# --- what goes wrong ------------------------------------------------------------------

BAD_REQUESTS = {
    "not-xml": "this is not XML",
    "not-well-formed": f"<body xmlns='{NS_HTTPBIND}' rid='1' to='{DOMAIN}'>",
    "not-a-body": f"<iq xmlns='{NS_HTTPBIND}' rid='1' to='{DOMAIN}'/>",
    "wrong-namespace": f"<body xmlns='jabber:client' rid='1' to='{DOMAIN}'/>",
    "no-rid": f"<body xmlns='{NS_HTTPBIND}' to='{DOMAIN}' wait='2' hold='1'/>",
    "rid-not-a-number": f"<body xmlns='{NS_HTTPBIND}' rid='twelve' to='{DOMAIN}' wait='2' hold='1'/>",
    "no-to": f"<body xmlns='{NS_HTTPBIND}' rid='1' wait='2' hold='1'/>",
}


@pytest.mark.parametrize("text", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
async def test_bad_request(bosh_server, text):
    """A POST that is not a usable BOSH <body/> gets HTTP 400 with
    type='terminate' condition='bad-request'; no session is created and the
    endpoint goes on serving."""
    reply = await ahttp_request(bosh_server, "POST", BOSH_PATH, text, {"Content-Type": "text/xml"})
    assert reply.status == 400, reply
    answer = parse_body(reply.text)
    assert answer.get("type") == "terminate" and answer.get("condition") == "bad-request", reply
    assert (await in_thread(health, bosh_server))["bosh_sessions"] == 0
    await logged_in_bosh(bosh_server, "carol", PASSWORDS["carol"])


async def test_body_over_size_limit_refused_with_413(make_server):
    """c2s_stanza_size_limit = 10000 allows bodies up to 10000 + 4096 bytes:
    a 20 kB body gets HTTP 413 and never reaches the session (bob gets
    nothing); the session goes on (the refused request used no rid)."""
    server = make_server(options=BOSH_OPTIONS | {"c2s_stanza_size_limit": SIZE_LIMIT})
    async with logged_in(server, "bob") as (bob,):
        await bob.go_online()
        bosh = await logged_in_bosh(server, "alice", PASSWORDS["alice"])
        text = bosh.body_text(bosh.rid, message_of_size(20_000))
        reply = await in_thread(bosh.post_text, text, bosh.rid)
        assert reply.status == 413, bosh.dump()
        await assert_session_works(bosh)
        assert bob.received("message") == [], "the oversized body was delivered"


async def test_stanza_over_size_limit_ends_the_session(make_server):
    """c2s_stanza_size_limit = 10000 holds over BOSH as over TCP: a 9 kB
    message reaches bob; a 12 kB one (the body itself is within the HTTP
    limit) ends the session: a <stream:error> with policy-violation and a
    terminate answer (remote-stream-error); bob never sees it."""
    server = make_server(options=BOSH_OPTIONS | {"c2s_stanza_size_limit": SIZE_LIMIT})
    async with logged_in(server, "bob") as (bob,):
        await bob.go_online()
        bosh = await logged_in_bosh(server, "alice", PASSWORDS["alice"])
        await bosh.send(message_of_size(9_000))
        received = await bob.next_message(ALICE)
        assert len(received["body"]) > 8_000

        reply = await bosh.send(message_of_size(12_000))
        for _ in range(5):
            if reply.terminated or reply.status != 200:
                break
            reply = await bosh.send()
        assert reply.status == 200 and reply.terminated, "the session outlived an oversized stanza\n" + bosh.dump()
        assert reply.condition == "remote-stream-error", bosh.dump()
        errors = [element for element in bosh.inbox if element.tag == f"{{{NS_STREAM}}}error"]
        assert errors, "no <stream:error> in the answers\n" + bosh.dump()
        assert errors[0].find(f"{{{NS_STREAM_ERRORS}}}policy-violation") is not None, bosh.dump()
        await wait_bosh_sessions(server, 0)
        await assert_pong(bob)
        assert bob.received("message") == [], "the oversized message was delivered"


async def test_unknown_host(bosh_server):
    """A session request for a host the server does not serve: HTTP 200,
    type='terminate' condition='host-unknown', and no session."""
    bosh = BoshSession(bosh_server, to="nosuch.example")
    reply = await bosh.create()
    assert reply.status == 200 and reply.terminated, bosh.dump()
    assert reply.condition == "host-unknown", bosh.dump()
    assert reply.get("sid") is None, bosh.dump()
    assert (await in_thread(health, bosh_server))["bosh_sessions"] == 0


async def test_plain_http_refused_without_consider_bosh_secure(server):
    """With c2s_require_encryption on (the default) and no
    consider_bosh_secure, BOSH on the plain HTTP port is refused with 403;
    TCP clients are not affected."""
    bosh = BoshSession(server)
    reply = await bosh.create()
    assert reply.status == 403, bosh.dump()
    assert (await in_thread(health, server))["bosh_sessions"] == 0
    await assert_login_works(server, "carol")


@pytest.mark.parametrize("verify", ["certificate", "unverified"])
async def test_bosh_over_https(server, verify):
    """On the HTTPS port (TLS with the server's self-signed certificate,
    checked for 'localhost' or not checked) BOSH needs no option: login
    with SCRAM-SHA-256, a chat with bob both ways, ping."""
    cafile = server.cert_path if verify == "certificate" else None
    async with logged_in(server, "bob") as (bob,):
        await bob.go_online()
        bosh = await logged_in_bosh(
            server, "alice", PASSWORDS["alice"], "SCRAM-SHA-256", resource="tls", https=True, cafile=cafile
        )
        assert bosh.jid == f"{ALICE}/tls", bosh.dump()
        await bosh.send(chat(BOB, "over https"))
        await bob.next_message(ALICE, "over https")
        bob.send_message(bosh.jid, "back over https")
        message = await bosh.expect("{jabber:client}message", what="(bob's answer)")
        assert message.findtext("{jabber:client}body") == "back over https", bosh.dump()
        await assert_session_works(bosh)
        assert (await bosh.terminate()).terminated, bosh.dump()


async def test_sigterm_answers_held_request_regression(bosh_server):
    """SIGTERM while alice's request is held: as over TCP and WebSocket, she
    is told: the held request gets an HTTP answer carrying the
    system-shutdown stream error (in a plain or a terminate body), and the
    server exits 0 (checked at teardown)."""
    bosh = await logged_in_bosh(bosh_server, "alice", PASSWORDS["alice"], wait=10)
    held = bosh.start()
    await asyncio.sleep(0.5)
    assert not held.done(), "the request was not held\n" + bosh.dump()
    bosh_server.terminate()
    reply = await asyncio.wait_for(held, 15)
    assert reply.status == 200, bosh.dump()
    errors = [element for element in reply.children if element.tag == f"{{{NS_STREAM}}}error"]
    assert errors, "the held request was not told about the shutdown\n" + bosh.dump()
    assert errors[0].find(f"{{{NS_STREAM_ERRORS}}}system-shutdown") is not None, bosh.dump()
