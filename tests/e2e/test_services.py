"""What the server itself answers: ping (XEP-0199), disco#info (XEP-0030),
software version (XEP-0092), and requests it does not understand."""

from __future__ import annotations

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from harness import DOMAIN
from harness.scenarios import assert_pong, logged_in

REQUIRED_FEATURES = {
    "http://jabber.org/protocol/disco#info",
    "urn:xmpp:ping",
    "jabber:iq:version",
    "jabber:iq:register",
    "msgoffline",
}


async def test_ping_server(server):
    """alice pings localhost and gets an empty result (XEP-0199)."""
    async with logged_in(server, "alice") as (alice,):
        await assert_pong(alice)


async def test_disco_info_lists_server_features(server):
    """disco#info on localhost shows an im server with ping, version,
    registration and offline storage among its features."""
    async with logged_in(server, "alice") as (alice,):
        reply = await alice.xmpp.plugin["xep_0030"].get_info(jid=DOMAIN, local=False, cached=False, timeout=10)
        info = reply["disco_info"]
        features = set(info["features"])
        assert REQUIRED_FEATURES <= features, f"missing {REQUIRED_FEATURES - features}"
        identities = {(category, kind) for category, kind, _lang, _name in info["identities"]}
        assert ("server", "im") in identities


async def test_software_version(server):
    """jabber:iq:version on localhost names the software and its version."""
    async with logged_in(server, "alice") as (alice,):
        reply = await alice.xmpp.plugin["xep_0092"].get_version(DOMAIN, timeout=10)
        version = reply["software_version"]
        assert version["name"], str(reply)
        assert version["version"], str(reply)


async def test_unknown_request_answered_with_error(server):
    """A request the server does not implement gets an error reply
    (service-unavailable or feature-not-implemented), never silence."""
    async with logged_in(server, "alice") as (alice,):
        iq = alice.xmpp.Iq()
        iq["type"] = "get"
        iq["to"] = DOMAIN
        iq.xml.append(ET.Element("{urn:example:no-such-protocol}query"))
        with pytest.raises(IqError) as refused:
            await iq.send(timeout=10)
        assert refused.value.iq["error"]["condition"] in ("service-unavailable", "feature-not-implemented")
        await assert_pong(alice)  # and the session goes on


async def test_iq_routed_to_full_jid(server):
    """alice asks bob's client (his full JID) for its software version; bob's
    slixmpp answers through the server and alice gets the reply from him."""
    async with logged_in(server, "alice", ("bob", "phone")) as (alice, bob):
        await bob.go_online()
        reply = await alice.xmpp.plugin["xep_0092"].get_version(str(bob.jid), timeout=10)
        assert str(reply["from"]) == "bob@localhost/phone"
        assert reply["software_version"]["name"] == "Slixmpp"
