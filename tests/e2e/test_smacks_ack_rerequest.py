"""XEP-0198: when the client's <a/> answers our <r/> but stanzas sent after
that request are still unacknowledged, the server asks again at once,
rather than waiting for the next stanza (an asleep phone would otherwise
go unnoticed, and push notifications for overdue acks would never fire).
Found as a flake of test_push.py::test_overdue_ack_notifies_once."""

from __future__ import annotations

import asyncio

from harness import PASSWORDS, jid_of
from harness.raw import RawStream
from harness.scenarios import logged_in

NS_SM = "urn:xmpp:sm:3"
NS_CLIENT = "jabber:client"


def phone(server) -> RawStream:
    stream = RawStream.connect(server.direct_tls_port, direct_tls=True)
    stream.connect_encrypted(True)
    assert stream.auth_plain("alice", PASSWORDS["alice"]).success, stream.dump()
    stream.bind("phone")
    stream.send(f"<enable xmlns='{NS_SM}'/>")
    assert stream.read_element().tag == f"{{{NS_SM}}}enabled", stream.dump()
    return stream


def read_body(stream: RawStream, body: str) -> None:
    while True:
        element = stream.read_element(5)
        if element.findtext(f"{{{NS_CLIENT}}}body") == body:
            return


async def test_ack_leaving_stanzas_unacked_is_requested_again_regression(server):
    async with logged_in(server, ("bob", "desk")) as (bob,):
        alice = await asyncio.to_thread(phone, server)
        try:
            bob.send_message(jid_of("alice") + "/phone", "first")
            await asyncio.to_thread(read_body, alice, "first")
            request = await asyncio.to_thread(alice.read_element, 5)
            assert request.tag == f"{{{NS_SM}}}r", alice.dump()
            # A second message while our request is outstanding: no new <r/>.
            bob.send_message(jid_of("alice") + "/phone", "second")
            await asyncio.to_thread(read_body, alice, "second")
            # Acknowledge only the first: the second is still unacked, so
            # the server must ask again.
            alice.send(f"<a xmlns='{NS_SM}' h='1'/>")
            again = await asyncio.to_thread(alice.read_element, 5)
            assert again.tag == f"{{{NS_SM}}}r", alice.dump()
            alice.send(f"<a xmlns='{NS_SM}' h='2'/>")
        finally:
            alice.close()
