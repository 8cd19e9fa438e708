"""Push notifications (XEP-0357, module ``cloud_notify`` with the options of
Prosody's mod_cloud_notify).

What a phone user counts on: once the app has registered its app server
(``<enable jid='push.localhost' node='...'/>``), a message that cannot
reach the phone right now (the account is offline, the phone's XEP-0198
session hibernates, or the phone stopped acknowledging) makes the server
publish a summary to the app server, which wakes the phone; a message the
phone gets and acknowledges does not. The app server is a slixmpp XEP-0114
component (harness/push.py) that records every publish IQ and answers it
with a result, or with an error when a test wants the app server to fail.

The contract as these tests read it:

* the notification is ``<iq type='set' from='alice@localhost'
  to='push.localhost'><pubsub><publish node='NODE'><item><notification
  xmlns='urn:xmpp:push:0'><x type='submit'>`` with FORM_TYPE
  ``urn:xmpp:push:summary`` and message-count 1, followed by the
  publish-options form given at ``<enable/>``;
* private by default: ``last-message-body`` is
  push_notification_important_body ("New Message!"), no
  ``last-message-sender``; the real body and sender only with
  push_notification_with_body / push_notification_with_sender;
* registrations persist across restarts, push_max_devices evicts the
  oldest, push_max_errors errors from the app server (or from routing to
  it) remove a registration, a result clears the count, ``<disable/>``
  removes one node or every node of an app server;
* a hibernating session notifies only the registration it enabled: once
  for what was unacknowledged when it lost its connection, once per
  message that arrives while it hibernates, never after it resumed;
* an overdue ack (smacks_max_ack_delay) notifies once for the
  unacknowledged messages, and a later hibernation does not repeat that;
* push_max_hibernation_timeout: a push-enabled session hibernates that
  long while nothing arrives, then smacks_hibernation_time applies.

Absence ("no notification") is checked with a sentinel: carol is offline
with a registration of her own, bob writes to her after whatever must not
notify, and by the time her notification arrives nothing else may have.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import xml.etree.ElementTree as StdET
from collections.abc import Callable

import pytest
from slixmpp.xmlstream import ET

from harness import PASSWORDS, jid_of
from harness.client import Client, describe
from harness.push import (
    NS_PUBLISH_OPTIONS,
    NS_PUSH,
    NS_SUMMARY,
    PUSH,
    PUSH2,
    AppServer,
    data_form,
    disable_push,
    enable_element,
    enable_push,
    enable_xml,
    error_condition,
    push_iq,
    push_server,
)
from harness.raw import RawStream
from harness.scenarios import logged_in
from harness.smacks import kill_connection, login_with_sm, reconnect, sm_client, wait_for_log

ALICE, BOB, CAROL = jid_of("alice"), jid_of("bob"), jid_of("carol")
PHONE = f"{ALICE}/phone"
NS_SM = "urn:xmpp:sm:3"
NS_CLIENT = "jabber:client"
WITH_BODY = {"push_notification_with_body": True}


# --- helpers ----------------------------------------------------------------------------------


def log_lines(server, *words: str) -> list[str]:
    return [line for line in server.log_text().splitlines() if all(word in line for word in words)]


async def register(server, user: str, node: str, jid: str = PUSH, **enable) -> None:
    """``user`` logs in, registers (jid, node) and logs out again."""
    async with logged_in(server, (user, "setup")) as (client,):
        await enable_push(client, jid, node, **enable)


async def quiet(app: AppServer, since: int, bob: Client, what: str, allowed: str | None = None) -> None:
    """Nothing but the sentinel reaches ``app`` after its ``since``-th
    notification: bob writes to carol (offline, registered at node
    'sentinel' of ``app``) and her notification must be the only new one
    (with ``allowed``, the caller checks that sender's notifications)."""
    before = len(app.seen(lambda n: n.sender == CAROL))
    bob.send_message(CAROL, "sentinel")
    await app.wait_count(before + 1, lambda n: n.sender == CAROL, what="(carol's sentinel)")
    unexpected = [n.text for n in app.notifications[since:] if n.sender not in (CAROL, allowed)]
    assert unexpected == [], f"{what}: notified anyway:\n  " + "\n  ".join(unexpected)


# slixmpp with stream management (its xep_0198 plugin) --------------------------------------


# a raw phone, whose acks the test controls ----------------------------------------------------


class RawPhone:
    """alice's phone on a raw socket: resource bound, resumable stream
    management enabled, push enabled for ``node``; it counts the stanzas it
    gets and acknowledges only when told to."""

    def __init__(self, server, node: str, resource: str = "phone") -> None:
        self.stream = RawStream.connect(server.direct_tls_port, direct_tls=True)
        self.stream.connect_encrypted(True)
        outcome = self.stream.auth_plain("alice", PASSWORDS["alice"])
        assert outcome.success, self.stream.dump()
        self.jid = self.stream.bind(resource)
        self.stream.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
        enabled = self.stream.read_element()
        assert enabled.tag == f"{{{NS_SM}}}enabled", self.stream.dump()
        self.handled = 0
        self.stream.send(enable_xml(PUSH, node))
        result, _ = self.read_until(lambda el: el.get("id") == "push-enable")
        assert result.get("type") == "result", self.stream.dump()

    def read_until(self, wanted: Callable[[StdET.Element], bool], timeout: float = 10.0):
        """The next element for which ``wanted`` is true and those before it;
        every stanza read counts as handled, ``<r/>`` is not answered."""
        skipped = []
        deadline = time.monotonic() + timeout
        while True:
            element = self.stream.read_element(max(0.1, deadline - time.monotonic()))
            if element.tag.startswith(f"{{{NS_CLIENT}}}"):
                self.handled += 1
            if wanted(element):
                return element, skipped
            skipped.append(element)

    def read_message(self, body: str) -> None:
        """Read up to bob's message with ``body``."""
        self.read_until(lambda el: el.findtext(f"{{{NS_CLIENT}}}body") == body)

    def ack(self) -> None:
        self.stream.send(f"<a xmlns='{NS_SM}' h='{self.handled}'/>")

    def reset(self) -> None:
        """A TCP reset: no </stream:stream>, no TLS close_notify."""
        self.stream.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.stream.sock.close()

    def read_request_and_ack(self) -> None:
        self.read_until(lambda el: el.tag == f"{{{NS_SM}}}r")
        self.ack()


# --- enabling and disabling -------------------------------------------------------------------


async def test_enable_and_disable_requests(make_server):
    """The account advertises urn:xmpp:push:0 (disco#info to the bare JID).
    <enable/> without jid, without node, or with a form that is not a
    pubsub#publish-options form gets bad-request and registers nothing;
    <disable/> without jid gets bad-request; <enable/> with no 'to' or
    to the own bare JID and <disable/> (of one node, or of a node never
    enabled) get an empty result. Then, with alice offline, bob's message
    is announced to the one registration left, and only to it."""
    server = push_server(make_server)
    async with AppServer(server) as app, logged_in(server, ("bob", "desk")) as (bob,):
        await register(server, "carol", "sentinel")
        alice = Client(server, "alice", resource="phone")
        await alice.login()
        try:
            info = await alice.xmpp.plugin["xep_0030"].get_info(jid=ALICE)
            assert NS_PUSH in info["disco_info"]["features"], describe(info)

            refused = {
                "no jid": enable_element(None, "no-jid"),
                "no node": enable_element(PUSH, None),
                "empty node": enable_element(PUSH, ""),
                "other form": enable_element(PUSH, "bad-form", data_form("urn:example:not-publish-options", a="b")),
            }
            for what, request in refused.items():
                reply = await push_iq(alice, request)
                assert error_condition(reply) == "bad-request", f"<enable/> with {what}: {describe(reply)}"
            reply = await push_iq(alice, ET.Element(f"{{{NS_PUSH}}}disable"))
            assert error_condition(reply) == "bad-request", f"<disable/> without jid: {describe(reply)}"

            await enable_push(alice, PUSH, "kept")
            await enable_push(alice, PUSH, "removed", to=ALICE)
            await disable_push(alice, PUSH, "removed")
            await disable_push(alice, PUSH, "never-enabled")
        finally:
            await alice.close()
        bob.send_message(ALICE, "hello")
        [notification] = await app.wait_count(1, lambda n: n.sender == ALICE)
        assert notification.node == "kept", notification.text
        await quiet(app, len(app.notifications), bob, "refused or disabled registrations")


# --- what a notification says -----------------------------------------------------------------


async def test_offline_message_notification_is_private_by_default(make_server):
    """alice registers with a publish-options form (a secret for the app
    server). A message she receives while online notifies nobody; once she
    is offline, bob's message produces one publish IQ from her bare JID to
    push.localhost, for her node, with the summary form (message-count 1,
    body "New Message!", no sender, nothing of the real text) and her
    publish-options form; the message itself still waits for her in
    offline storage."""
    server = push_server(make_server)
    async with AppServer(server) as app, logged_in(server, ("bob", "desk")) as (bob,):
        alice = Client(server, "alice", resource="phone")
        await alice.login()
        try:
            await enable_push(alice, PUSH, "alice-phone", data_form(NS_PUBLISH_OPTIONS, secret="app-secret-42"))
            await alice.go_online()
            bob.send_message(ALICE, "while you are here")
            await alice.next_message(BOB, "while you are here")
        finally:
            await alice.close()
        bob.send_message(ALICE, "the secret plans")
        [notification] = await app.wait_count(1)
        assert app.notifications == [notification], "the message alice got online was notified:\n" + app.dump()

        assert notification.sender == ALICE and notification.to == PUSH, notification.text
        assert notification.iq_type == "set" and notification.node == "alice-phone", notification.text
        assert notification.summary_form_type == NS_SUMMARY, notification.text
        assert notification.summary.get("message-count") == "1", notification.text
        assert notification.body == "New Message!", notification.text
        assert notification.last_sender is None, notification.text
        assert "secret plans" not in notification.text and "bob" not in notification.text, notification.text
        assert notification.publish_options == {"FORM_TYPE": NS_PUBLISH_OPTIONS, "secret": "app-secret-42"}, (
            notification.text
        )

        async with logged_in(server, ("alice", "again")) as (again,):
            again.send_presence()
            await again.next_message(BOB, "the secret plans")


@pytest.mark.parametrize(
    ("host_options", "body", "sender"),
    [
        pytest.param(
            {"push_notification_with_body": True, "push_notification_with_sender": True},
            "the secret plans",
            "bob@localhost/desk",
            id="with-body-and-sender",
        ),
        pytest.param({"push_notification_important_body": "Wake up!"}, "Wake up!", None, id="own-important-body"),
        pytest.param({"push_notification_important_body": ""}, None, None, id="no-body-at-all"),
    ],
)
async def test_body_and_sender_options(make_server, host_options, body, sender):
    """push_notification_with_body / _with_sender put bob's real text and
    full JID into the summary; push_notification_important_body replaces
    "New Message!" ("" leaves the body out). Without a form at <enable/>
    there is no publish-options element."""
    server = push_server(make_server, host_options=host_options)
    async with AppServer(server) as app, logged_in(server, ("bob", "desk")) as (bob,):
        await register(server, "alice", "phone")
        bob.send_message(ALICE, "the secret plans")
        [notification] = await app.wait_count(1)
        assert notification.summary.get("last-message-body") == body, notification.text
        assert notification.last_sender == sender, notification.text
        assert notification.summary_form_type == NS_SUMMARY, notification.text
        assert notification.publish_options is None, notification.text


# --- registrations: devices, errors, disable, restart ---------------------------------------------


async def test_max_devices_evicts_the_oldest_registration(make_server):
    """push_max_devices = 2: alice registers nodes one, two, one again (which
    makes it the newest) and three: 'two' is evicted, and her offline
    message notifies 'one' and 'three' only."""
    server = push_server(make_server, host_options={"push_max_devices": 2})
    async with AppServer(server) as app, logged_in(server, ("bob", "desk")) as (bob,):
        await register(server, "carol", "sentinel")
        async with logged_in(server, ("alice", "setup")) as (alice,):
            for node in ("one", "two", "one", "three"):
                await enable_push(alice, PUSH, node)
        bob.send_message(ALICE, "hello")
        got = await app.wait_count(2, lambda n: n.sender == ALICE)
        assert sorted(n.node for n in got) == ["one", "three"], app.dump()
        await quiet(app, len(app.notifications), bob, "the evicted registration 'two'")
        assert sorted(n.node for n in app.seen(lambda n: n.sender == ALICE)) == ["one", "three"], app.dump()


async def test_max_errors_removes_the_registration(make_server):
    """push_max_errors = 2, alice offline. The app server answers: an error
    of type wait (not counted), an error (1), a result (count cleared), an
    error (1 again: so still registered), an error (2: registration
    removed). The next message notifies nothing, and alice still gets all
    six messages from offline storage."""
    server = push_server(make_server, host_options={"push_max_errors": 2})
    async with AppServer(server) as app, logged_in(server, ("bob", "desk")) as (bob,):
        await register(server, "carol", "sentinel")
        await register(server, "alice", "flaky")
        answers = ["wait", "error", "result", "error", "error"]
        for n, answer in enumerate(answers, start=1):
            app.answer = answer
            bob.send_message(ALICE, f"message {n}")
            await app.wait_count(n, lambda x: x.sender == ALICE, what=f"(message {n}, after {answers[: n - 1]})")
            if answer == "wait":
                await wait_for_log(server, "push service busy (wait)")
            elif answer == "error" and n < len(answers):
                await wait_for_log(server, "push service returned an error", answers[:n].count("error"))
            elif answer == "result":
                # Nothing tells when the server has applied the result (it
                # clears the count in the background); an app server calling
                # its push platform takes longer than this anyway.
                await asyncio.sleep(0.5)
        await wait_for_log(server, "push registration disabled after push_max_errors")
        assert len(log_lines(server, "push service returned an error", "errors=1")) == 2, (
            "the result did not clear the error count:\n" + "\n".join(log_lines(server, "push service"))
        )
        app.answer = "result"
        bob.send_message(ALICE, "message 6")
        await quiet(app, len(app.notifications), bob, "a registration past push_max_errors")

        async with logged_in(server, ("alice", "again")) as (alice,):
            alice.send_presence()
            for n in range(1, 7):
                await alice.next_message(BOB, f"message {n}")


async def test_unreachable_app_servers_count_as_errors(make_server):
    """push_max_errors = 2. alice registered three app servers: one that is
    no component of this server (nowhere.localhost: the publish IQ cannot
    be routed), one configured but not connected (push2.localhost:
    service-unavailable) and push.localhost. Two offline messages remove
    the first two registrations: once push2.localhost connects, a third
    message reaches push.localhost only."""
    server = push_server(make_server, host_options={"push_max_errors": 2})
    async with AppServer(server) as app, logged_in(server, ("bob", "desk")) as (bob,):
        await register(server, "carol", "sentinel")
        async with logged_in(server, ("alice", "setup")) as (alice,):
            for jid in ("nowhere.localhost", PUSH2, PUSH):
                await enable_push(alice, jid, "node")
        for n in (1, 2):
            bob.send_message(ALICE, f"message {n}")
            await app.wait_count(n, lambda x: x.sender == ALICE)
        await wait_for_log(server, "push registration disabled after push_max_errors", 2)
        disabled = log_lines(server, "push registration disabled after push_max_errors")
        assert any("nowhere.localhost" in line for line in disabled), disabled
        assert any(PUSH2 in line for line in disabled), disabled
        async with AppServer(server, PUSH2) as app2:
            bob.send_message(ALICE, "message 3")
            await app.wait_count(3, lambda x: x.sender == ALICE)
            await quiet(app, len(app.notifications), bob, "after message 3")
            assert app2.notifications == [], app2.dump()
        sent_nowhere = log_lines(server, "sending push notification", "nowhere.localhost")
        assert len(sent_nowhere) == 2, "\n".join(sent_nowhere)


async def test_disable_one_node_then_a_whole_app_server(make_server):
    """alice registered push.localhost nodes a and b, and push2.localhost
    node c. <disable node='a'/> leaves b and c; <disable jid='push.localhost'/>
    without node leaves c; disabling c leaves nothing."""
    server = push_server(make_server)
    async with AppServer(server) as app, AppServer(server, PUSH2) as app2, logged_in(server, ("bob", "desk")) as (bob,):
        await register(server, "carol", "sentinel")
        async with logged_in(server, ("alice", "setup")) as (alice,):
            for jid, node in ((PUSH, "a"), (PUSH, "b"), (PUSH2, "c")):
                await enable_push(alice, jid, node)
        steps = [((PUSH, "a"), ["b", "c"]), ((PUSH, None), ["c"]), ((PUSH2, "c"), [])]
        for (jid, node), expected in steps:
            async with logged_in(server, ("alice", "setup")) as (alice,):
                await disable_push(alice, jid, node)
            app.notifications.clear()
            app2.notifications.clear()
            bob.send_message(ALICE, f"after disabling {jid} {node}")
            await app.wait_count(expected.count("b"), lambda n: n.sender == ALICE)
            await app2.wait_count(expected.count("c"), lambda n: n.sender == ALICE)
            await quiet(app, 0, bob, f"after <disable jid={jid!r} node={node!r}/>", allowed=ALICE)
            got = sorted(n.node for n in app.notifications + app2.notifications if n.sender == ALICE)
            assert got == expected, f"after <disable jid={jid!r} node={node!r}/>:\n{app.dump()}\n{app2.dump()}"


async def test_registrations_survive_a_restart(make_server):
    """alice registers node 'kept' with a publish-options secret and node
    'dropped', which she then disables. After a restart, her offline
    message notifies 'kept' with the same publish options, and not
    'dropped'."""
    server = push_server(make_server)
    await register(server, "carol", "sentinel")
    async with logged_in(server, ("alice", "setup")) as (alice,):
        await enable_push(alice, PUSH, "kept", data_form(NS_PUBLISH_OPTIONS, secret="still-here"))
        await enable_push(alice, PUSH, "dropped")
        await disable_push(alice, PUSH, "dropped")
    await asyncio.to_thread(server.restart)
    async with AppServer(server) as app, logged_in(server, ("bob", "desk")) as (bob,):
        bob.send_message(ALICE, "after the restart")
        [notification] = await app.wait_count(1, lambda n: n.sender == ALICE)
        assert notification.node == "kept", notification.text
        assert notification.publish_options == {"FORM_TYPE": NS_PUBLISH_OPTIONS, "secret": "still-here"}, (
            notification.text
        )
        await quiet(app, len(app.notifications), bob, "the disabled registration, after a restart")


# --- hibernation and acknowledgements ---------------------------------------------------------


async def test_hibernating_session_notifies_its_device_until_it_resumes(make_server):
    """alice's phone (slixmpp with stream management) registered node
    'phone', her tablet (online, no stream management) node 'tablet'. The
    phone's connection dies; each of bob's two messages to the phone while
    it hibernates gives one notification for 'phone' (with body, as
    configured) and none for 'tablet'. The phone resumes and gets both;
    bob's next message reaches it and notifies nobody."""
    server = push_server(make_server, options={"smacks_hibernation_time": 30}, host_options=WITH_BODY)
    async with AppServer(server) as app, logged_in(server, ("bob", "desk"), ("alice", "tablet")) as (bob, tablet):
        await register(server, "carol", "sentinel")
        await enable_push(tablet, PUSH, "tablet")
        phone = sm_client(server)
        await login_with_sm(phone)
        try:
            await enable_push(phone, PUSH, "phone")
            await kill_connection(phone)
            await wait_for_log(server, "session hibernating")
            for n in (1, 2):
                bob.send_message(PHONE, f"in the tunnel {n}")
                await app.wait_count(n, lambda x: x.sender == ALICE, what=f"(message {n} while hibernating)")
            assert [(n.node, n.body) for n in app.notifications] == [
                ("phone", "in the tunnel 1"),
                ("phone", "in the tunnel 2"),
            ], app.dump()

            assert await reconnect(phone) == "resumed"
            for n in (1, 2):
                await phone.next_message(BOB, f"in the tunnel {n}")
            bob.send_message(PHONE, "after the tunnel")
            await phone.next_message(BOB, "after the tunnel")
            await quiet(app, 2, bob, "a resumed session")
        finally:
            await phone.close()


async def test_connection_lost_with_unacked_messages_notifies_once(make_server):
    """alice's phone (raw socket, stream management, push node 'phone')
    reads bob's two messages but never acknowledges them, then loses its
    connection: the session hibernates and its device gets exactly one
    notification for them."""
    server = push_server(make_server, options={"smacks_hibernation_time": 30}, host_options=WITH_BODY)
    async with AppServer(server) as app, logged_in(server, ("bob", "desk")) as (bob,):
        await register(server, "carol", "sentinel")
        phone = await asyncio.to_thread(RawPhone, server, "phone")
        try:
            await asyncio.to_thread(phone.read_request_and_ack)  # for the <enable/> result: nothing unacked
            for n in (1, 2):
                bob.send_message(PHONE, f"unread {n}")
            await asyncio.to_thread(phone.read_message, "unread 2")
            assert app.notifications == [], app.dump()
            phone.reset()
            await wait_for_log(server, "session hibernating")
            [notification] = await app.wait_count(1)
            assert notification.node == "phone" and notification.sender == ALICE, notification.text
            assert notification.body in ("unread 1", "unread 2"), notification.text
            await quiet(app, 1, bob, "the same unacknowledged messages again")
        finally:
            phone.stream.close()


async def test_overdue_ack_notifies_once(make_server):
    """smacks_max_ack_delay = 1. alice's phone (raw socket, push node
    'phone') acknowledges bob's first message: no notification even after
    the delay. It ignores the <r/> after his second: about a second later
    one notification for it, not repeated; when the connection then dies,
    the hibernation does not notify that message again, but a message
    arriving during it does."""
    server = push_server(
        make_server, options={"smacks_max_ack_delay": 1, "smacks_hibernation_time": 30}, host_options=WITH_BODY
    )
    async with AppServer(server) as app, logged_in(server, ("bob", "desk")) as (bob,):
        await register(server, "carol", "sentinel")
        phone = await asyncio.to_thread(RawPhone, server, "phone")
        try:
            await asyncio.to_thread(phone.read_request_and_ack)
            bob.send_message(PHONE, "acked")
            await asyncio.to_thread(phone.read_message, "acked")
            await asyncio.to_thread(phone.read_request_and_ack)
            await asyncio.sleep(2)
            assert app.notifications == [], "an acknowledged message was notified:\n" + app.dump()

            bob.send_message(PHONE, "ignored")
            await asyncio.to_thread(phone.read_message, "ignored")
            asked = time.monotonic()
            [notification] = await app.wait_count(1)
            waited = time.monotonic() - asked
            assert notification.node == "phone" and notification.body == "ignored", notification.text
            assert waited >= 0.5, f"notified {waited:.2f} s after <r/>, before smacks_max_ack_delay"
            await asyncio.sleep(2.5)
            assert len(app.notifications) == 1, "the overdue ack was notified again:\n" + app.dump()

            phone.reset()
            await wait_for_log(server, "session hibernating")
            await quiet(app, 1, bob, "a hibernation after the overdue-ack notification")
            bob.send_message(PHONE, "while hibernating")
            await app.wait_count(2, lambda n: n.sender == ALICE)
            assert app.seen(lambda n: n.sender == ALICE)[1].body == "while hibernating", app.dump()
        finally:
            phone.stream.close()


async def test_push_keeps_a_session_hibernating_until_a_message_arrives(make_server):
    """smacks_hibernation_time = 1, push_max_hibernation_timeout = 60.
    alice's laptop and phone (slixmpp, stream management) lose their
    connections; only the phone enabled push. The laptop's session ends
    after its second, the phone's is still there well after that. Bob's
    message to the phone is notified, and from then on the usual second
    applies: the phone's session ends, and the message waits in offline
    storage."""
    server = push_server(
        make_server, options={"smacks_hibernation_time": 1}, host_options={"push_max_hibernation_timeout": 60}
    )
    async with AppServer(server) as app, logged_in(server, ("bob", "desk")) as (bob,):
        phone, laptop = sm_client(server, resource="phone"), sm_client(server, resource="laptop")
        await asyncio.gather(login_with_sm(phone), login_with_sm(laptop))
        try:
            await enable_push(phone, PUSH, "phone")
            await asyncio.gather(kill_connection(phone), kill_connection(laptop))
            await wait_for_log(server, "session hibernating", 2)
            await wait_for_log(server, "hibernation timed out", 1)
            await asyncio.sleep(2)
            ended = log_lines(server, "hibernation timed out")
            assert len(ended) == 1 and "laptop" in ended[0], ended

            bob.send_message(PHONE, "wake up")
            notification = (await app.wait_count(1))[0]
            assert notification.node == "phone", notification.text
            await wait_for_log(server, "hibernation timed out", 2, timeout=6)
            assert "phone" in log_lines(server, "hibernation timed out")[1]
        finally:
            await asyncio.gather(phone.close(), laptop.close())
        async with logged_in(server, ("alice", "again")) as (alice,):
            alice.send_presence()
            await alice.next_message(BOB, "wake up")


# --- known bugs -------------------------------------------------------------------------------


async def test_another_accounts_disable_leaves_my_device_alone_regression(make_server):
    """alice's phone (slixmpp, stream management) registered node
    'alice-phone' at push.localhost; bob registers 'bob-phone' there and
    then disables all his registrations at push.localhost. alice's phone
    loses its connection, and bob's message to it is still notified to
    her node."""
    server = push_server(make_server, options={"smacks_hibernation_time": 30})
    async with AppServer(server) as app, logged_in(server, ("bob", "desk")) as (bob,):
        phone = sm_client(server)
        await login_with_sm(phone)
        try:
            await enable_push(phone, PUSH, "alice-phone")
            await enable_push(bob, PUSH, "bob-phone")
            await disable_push(bob, PUSH)
            await kill_connection(phone)
            await wait_for_log(server, "session hibernating")
            bob.send_message(PHONE, "still for alice")
            [notification] = await app.wait_count(1, timeout=3, what="(for alice's hibernating phone)")
            assert notification.sender == ALICE and notification.node == "alice-phone", notification.text
        finally:
            await phone.close()


async def test_carbon_of_a_message_to_another_device_notifies_hibernating_phone_regression(make_server):
    """alice's phone (stream management, push node 'alice-phone', carbons
    enabled, available) hibernates while her desktop is online. bob writes
    to alice/desktop; the phone's session queues the <received/> carbon of
    that message, which wakes the phone like any message would."""
    server = push_server(make_server, options={"smacks_hibernation_time": 30})
    async with (
        AppServer(server) as app,
        logged_in(server, ("bob", "desk"), ("alice", "desktop")) as (bob, desktop),
    ):
        phone = sm_client(server)
        await login_with_sm(phone)
        try:
            await enable_push(phone, PUSH, "alice-phone")
            reply = await push_iq(phone, ET.Element("{urn:xmpp:carbons:2}enable"))
            assert reply["type"] == "result", describe(reply)
            await phone.go_online()
            await desktop.go_online()
            await kill_connection(phone)
            await wait_for_log(server, "session hibernating")
            bob.send_message(f"{ALICE}/desktop", "for the desktop")
            await desktop.next_message(BOB, "for the desktop")
            [notification] = await app.wait_count(1, timeout=3, what="(for the carbon)")
            assert notification.node == "alice-phone", notification.text
        finally:
            await phone.close()


async def test_message_notified_during_hibernation_is_not_notified_again_regression(make_server):
    """smacks_hibernation_time = 1. bob's message to alice's hibernating
    phone is notified once; when the hibernation ends and the message goes
    to offline storage (alice gets it at her next login), her device is not
    woken a second time for it."""
    server = push_server(make_server, options={"smacks_hibernation_time": 1})
    async with AppServer(server) as app, logged_in(server, ("bob", "desk")) as (bob,):
        await register(server, "carol", "sentinel")
        phone = sm_client(server)
        await login_with_sm(phone)
        try:
            await enable_push(phone, PUSH, "alice-phone")
            await kill_connection(phone)
            await wait_for_log(server, "session hibernating")
            bob.send_message(PHONE, "once")
            await app.wait_count(1)
            await wait_for_log(server, "hibernation timed out")
        finally:
            await phone.close()
        async with logged_in(server, ("alice", "again")) as (alice,):
            alice.send_presence()
            await alice.next_message(BOB, "once")
        await quiet(app, 1, bob, "the same message, once it went to offline storage")
