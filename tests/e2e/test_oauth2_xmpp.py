"""Logging into XMPP with an OAuth 2.0 access token: SASL OAUTHBEARER (RFC 7628).

Tokens come from a real authorization code flow (authlib and the login and
consent pages, :mod:`harness.oauth2`); slixmpp logs in with the OAUTHBEARER
mechanism the harness adds to it, restricted to that mechanism and given a
wrong password, so only the token can let it in. Raw sockets check the
failure exchange of RFC 7628 §3.2.2: an error challenge carrying JSON, the
client's lone 0x01, then ``<failure><not-authorized/></failure>``.

Revoking a grant (by the user on /oauth2/grants, or by the client revoking
its refresh token) closes the XMPP sessions opened with its tokens at once;
password sessions of the same user stay.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from harness import jid_of
from harness.client import Client, LoginFailed
from harness.oauth2 import (
    Browser,
    Form,
    Provider,
    Registered,
    code_flow,
    decode_b64_json,
    host_options,
    oauthbearer_client,
    oauthbearer_initial_response,
    random_text,
    tokens_for,
)
from harness.raw import NS_SASL, RawStream, local_name, mechanisms_of
from harness.scenarios import assert_pong
from harness.server import JackdawServer

ALICE, BOB = jid_of("alice"), jid_of("bob")


@pytest.fixture
def oauth_server(make_server: Callable[..., JackdawServer]) -> JackdawServer:
    return make_server(host_options=host_options())


def mech_error(client: Client) -> dict[str, Any] | None:
    """The JSON error challenge slixmpp's OAUTHBEARER received, if any."""
    mech = client.xmpp.plugin["feature_mechanisms"].mech
    return getattr(mech, "error", None)


async def assert_token_refused(server: JackdawServer, token: str, user: str = "alice") -> Client:
    client = oauthbearer_client(server, user, token)
    with pytest.raises(LoginFailed) as refused:
        await client.login()
    assert refused.value.condition == "not-authorized", refused.value
    return client


# --- the mechanism ----------------------------------------------------------------------


def test_oauthbearer_is_offered_only_over_tls(oauth_server: JackdawServer) -> None:
    with RawStream.connect(oauth_server.c2s_port) as stream:
        stream.open()
        plain = stream.read_features()
        assert "OAUTHBEARER" not in mechanisms_of(plain), stream.dump()
        encrypted = stream.starttls()
        assert "OAUTHBEARER" in mechanisms_of(encrypted), stream.dump()
    with RawStream.connect(oauth_server.direct_tls_port, direct_tls=True) as stream:
        features = stream.connect_encrypted(direct_tls=True)
        assert "OAUTHBEARER" in mechanisms_of(features), stream.dump()


async def test_slixmpp_logs_in_with_an_access_token_and_chats(oauth_server: JackdawServer) -> None:
    _provider, _client, token = tokens_for(oauth_server, "alice", "xmpp")
    alice = oauthbearer_client(oauth_server, "alice", token["access_token"], resource="oauth")
    bob = Client(oauth_server, "bob")
    await asyncio.gather(alice.login(), bob.login())
    try:
        await asyncio.gather(alice.go_online(), bob.go_online())
        assert alice.used_mechanism == "OAUTHBEARER"
        assert str(alice.jid) == f"{ALICE}/oauth"
        await assert_pong(alice)
        alice.send_message(BOB, "hello from a token")
        await bob.next_message(ALICE, "hello from a token")
        bob.send_message(str(alice.jid), "hello back")
        await alice.next_message(BOB, "hello back")
    finally:
        await asyncio.gather(alice.close(), bob.close())


async def test_direct_tls_login_with_an_access_token(oauth_server: JackdawServer) -> None:
    _provider, _client, token = tokens_for(oauth_server, "bob", "xmpp")
    bob = oauthbearer_client(oauth_server, "bob", token["access_token"], direct_tls=True)
    await bob.login()
    try:
        assert bob.used_mechanism == "OAUTHBEARER" and bob.jid.bare == BOB
        await assert_pong(bob)
    finally:
        await bob.close()


async def test_token_without_the_xmpp_scope_is_refused(oauth_server: JackdawServer) -> None:
    provider, client, token = tokens_for(oauth_server, "alice", "openid")
    assert "xmpp" not in token["scope"].split(), token
    # The token itself is fine for what it was granted for.
    assert provider.userinfo(token["access_token"]).status_code == 200
    refused = await assert_token_refused(oauth_server, token["access_token"])
    error = mech_error(refused)
    assert error is not None and error.get("status") in ("invalid_token", "insufficient_scope"), error


async def test_expired_token_is_refused(make_server: Callable[..., JackdawServer]) -> None:
    server = make_server(host_options=host_options(oauth2_access_token_ttl=2))
    _provider, _client, token = tokens_for(server, "alice", "xmpp")
    # Still valid: it works.
    alice = oauthbearer_client(server, "alice", token["access_token"])
    await alice.login()
    await alice.close()
    await asyncio.sleep(3)
    refused = await assert_token_refused(server, token["access_token"])
    error = mech_error(refused)
    assert error is not None and error.get("status") == "invalid_token", error


async def test_revoked_token_is_refused(oauth_server: JackdawServer) -> None:
    provider, client, token = tokens_for(oauth_server, "alice", "xmpp")
    answer = provider.revoke(client, token["access_token"], "access_token")
    assert answer.status_code == 200, answer.text
    await assert_token_refused(oauth_server, token["access_token"])


async def test_garbage_and_refresh_tokens_are_refused(oauth_server: JackdawServer) -> None:
    _provider, _client, token = tokens_for(oauth_server, "alice", "xmpp")
    refused = await assert_token_refused(oauth_server, "garbage-" + random_text())
    assert (mech_error(refused) or {}).get("status") == "invalid_token", mech_error(refused)
    # A refresh token is not an access token.
    await assert_token_refused(oauth_server, token["refresh_token"])
    # The password still works, of course.
    carol = Client(oauth_server, "carol")
    await carol.login()
    await carol.close()


# --- raw sockets: RFC 7628 on the wire ---------------------------------------------------------


def test_failure_exchange_follows_rfc7628(oauth_server: JackdawServer) -> None:
    """§3.2.2: an error challenge with JSON (status, scope), the client's
    %x01, then failure; a retry with a good token on the same stream works."""
    _provider, _client, token = tokens_for(oauth_server, "alice", "xmpp")
    with RawStream.connect(oauth_server.c2s_port) as stream:
        features = stream.connect_encrypted(direct_tls=False)
        assert "OAUTHBEARER" in mechanisms_of(features), stream.dump()
        reply = stream.sasl_auth("OAUTHBEARER", oauthbearer_initial_response(ALICE, "garbage-" + random_text()))
        assert local_name(reply.tag) == "challenge", f"expected an error challenge\n{stream.dump()}"
        error = decode_b64_json(reply.text)
        assert error.get("status") == "invalid_token", error
        assert "xmpp" in str(error.get("scope", "")).split(), error
        stream.send(f"<response xmlns='{NS_SASL}'>AQ==</response>")
        outcome = stream.sasl_outcome(stream.read_element())
        assert not outcome.success and outcome.condition == "not-authorized", stream.dump()

        reply = stream.sasl_auth("OAUTHBEARER", oauthbearer_initial_response(ALICE, token["access_token"]))
        outcome = stream.sasl_outcome(reply)
        assert outcome.success, stream.dump()
        assert stream.bind("raw") == f"{ALICE}/raw"


def finish_refused(stream: RawStream, reply: Any) -> Any:
    """After an error challenge, send %x01 and return the outcome."""
    if local_name(reply.tag) == "challenge":
        stream.send(f"<response xmlns='{NS_SASL}'>AQ==</response>")
        reply = stream.read_element()
    return stream.sasl_outcome(reply)


def test_a_token_only_logs_in_its_own_user(oauth_server: JackdawServer) -> None:
    """alice's token with the authzid bob@localhost must not make a bob session."""
    _provider, _client, token = tokens_for(oauth_server, "alice", "xmpp")
    with RawStream.connect(oauth_server.c2s_port) as stream:
        stream.connect_encrypted(direct_tls=False)
        reply = stream.sasl_auth("OAUTHBEARER", oauthbearer_initial_response(BOB, token["access_token"]))
        outcome = finish_refused(stream, reply)
        assert not outcome.success, f"alice's token logged in as bob\n{stream.dump()}"
        assert outcome.condition in ("not-authorized", "invalid-authzid"), stream.dump()


def test_malformed_oauthbearer_messages_are_refused(oauth_server: JackdawServer) -> None:
    _provider, _client, token = tokens_for(oauth_server, "alice", "xmpp")
    good = token["access_token"]
    malformed = [
        f"n,a={ALICE},auth=Bearer {good}".encode(),  # no %x01 separators
        f"n,a={ALICE},\x01auth=Basic {good}\x01\x01".encode(),  # not Bearer
        f"y,a={ALICE},\x01auth=Bearer {good}\x01\x01".encode()[:-2],  # truncated
        f"p=tls-unique,a={ALICE},\x01auth=Bearer {good}\x01\x01".encode(),  # channel binding is not defined
        b"",
    ]
    for message in malformed:
        with RawStream.connect(oauth_server.c2s_port) as stream:
            stream.connect_encrypted(direct_tls=False)
            reply = stream.sasl_auth("OAUTHBEARER", message)
            if local_name(reply.tag) == "challenge" and message == b"":
                # An empty initial response may be answered with an empty challenge.
                stream.send(f"<response xmlns='{NS_SASL}'/>")
                reply = stream.read_element()
            outcome = finish_refused(stream, reply)
            assert not outcome.success, f"{message!r} was accepted\n{stream.dump()}"


# --- revocation closes live sessions --------------------------------------------------------------


async def oauth_and_password_sessions(
    server: JackdawServer, scope: str = "xmpp"
) -> tuple[Provider, Browser, Registered, dict[str, Any], Client, Client]:
    """alice logged in twice: with a token from a fresh grant, and with her password."""
    provider = Provider(server)
    client = provider.web_client("Chat App")
    browser = provider.browser()
    flow = await asyncio.to_thread(code_flow, provider, browser, client, scope, "alice")
    token = flow.token
    by_token = oauthbearer_client(server, "alice", token["access_token"], resource="token")
    by_password = Client(server, "alice", resource="password")
    await asyncio.gather(by_token.login(), by_password.login())
    return provider, browser, client, token, by_token, by_password


async def assert_closed_but_password_session_stays(by_token: Client, by_password: Client) -> None:
    started = time.monotonic()
    try:
        await by_token.wait_disconnected(timeout=10)
    except asyncio.TimeoutError:
        raise AssertionError("the session logged in with a revoked grant's token is still connected") from None
    assert time.monotonic() - started < 10
    await assert_pong(by_password)
    # The token cannot log in again either.
    again = oauthbearer_client(by_token.server, "alice", by_token.xmpp.credentials["access_token"])
    with pytest.raises(LoginFailed):
        await again.login()


async def test_user_revoking_the_grant_closes_its_sessions(oauth_server: JackdawServer) -> None:
    provider, browser, client, token, by_token, by_password = await oauth_and_password_sessions(oauth_server)
    try:
        await assert_pong(by_token)
        page = await asyncio.to_thread(browser.grants_page)
        items = page.by_id("grants").find_all("li", cls="grant")
        assert len(items) == 1 and "Chat App" in items[0].text(), page.describe()
        form = Form(items[0].find("form"), page)
        answer = await asyncio.to_thread(browser.submit, form)
        assert answer.status_code == 303, answer.status_code
        await assert_closed_but_password_session_stays(by_token, by_password)
    finally:
        await asyncio.gather(by_token.close(), by_password.close())


async def test_client_revoking_its_refresh_token_closes_its_sessions(oauth_server: JackdawServer) -> None:
    provider, _browser, client, token, by_token, by_password = await oauth_and_password_sessions(oauth_server)
    try:
        await assert_pong(by_token)
        answer = await asyncio.to_thread(provider.revoke, client, token["refresh_token"], "refresh_token")
        assert answer.status_code == 200, answer.text
        await assert_closed_but_password_session_stays(by_token, by_password)
    finally:
        await asyncio.gather(by_token.close(), by_password.close())


async def test_sessions_of_other_grants_stay(oauth_server: JackdawServer) -> None:
    """Revoking one grant closes only the sessions of that grant."""
    provider, _browser, client, token, by_token, by_password = await oauth_and_password_sessions(oauth_server)
    other_provider, _other_client, other_token = await asyncio.to_thread(
        tokens_for, oauth_server, "alice", "xmpp", "Other Chat App"
    )
    other = oauthbearer_client(oauth_server, "alice", other_token["access_token"], resource="other")
    await other.login()
    try:
        answer = await asyncio.to_thread(provider.revoke, client, token["refresh_token"], "refresh_token")
        assert answer.status_code == 200, answer.text
        await assert_closed_but_password_session_stays(by_token, by_password)
        await assert_pong(other)
    finally:
        await asyncio.gather(by_token.close(), by_password.close(), other.close())


async def test_refresh_token_reuse_closes_the_grants_sessions(oauth_server: JackdawServer) -> None:
    """A reused refresh token revokes the whole grant (docs/oauth2.md), and
    revoking a grant closes the XMPP sessions opened with its tokens."""
    provider, _browser, client, token, by_token, by_password = await oauth_and_password_sessions(oauth_server)
    try:
        refresh = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
        answer = await asyncio.to_thread(provider.token_request, client, refresh)
        assert answer.status_code == 200, answer.text
        await assert_pong(by_token)  # rotation alone closes nothing
        answer = await asyncio.to_thread(provider.token_request, client, refresh)
        assert answer.status_code == 400 and answer.json().get("error") == "invalid_grant", answer.text
        await assert_closed_but_password_session_stays(by_token, by_password)
    finally:
        await asyncio.gather(by_token.close(), by_password.close())


async def test_code_reuse_closes_the_sessions_of_its_tokens(oauth_server: JackdawServer) -> None:
    """A code presented twice revokes the tokens issued from it, and their sessions."""
    provider = Provider(oauth_server)
    client = provider.web_client("Chat App")
    flow = await asyncio.to_thread(code_flow, provider, provider.browser(), client, "xmpp", "alice")
    by_token = oauthbearer_client(oauth_server, "alice", flow.token["access_token"], resource="token")
    by_password = Client(oauth_server, "alice", resource="password")
    await asyncio.gather(by_token.login(), by_password.login())
    try:
        data = {
            "grant_type": "authorization_code",
            "code": flow.params["code"],
            "redirect_uri": client.redirect_uri,
            "code_verifier": flow.verifier,
        }
        answer = await asyncio.to_thread(provider.token_request, client, data)
        assert answer.status_code == 400, answer.text
        await assert_closed_but_password_session_stays(by_token, by_password)
    finally:
        await asyncio.gather(by_token.close(), by_password.close())


def test_host_and_port_keys_are_accepted(oauth_server: JackdawServer) -> None:
    """RFC 7628 §3.1: the client may send host and port key/values before auth."""
    _provider, _client, token = tokens_for(oauth_server, "alice", "xmpp")
    message = (
        f"n,a={ALICE},\x01host=localhost\x01port={oauth_server.c2s_port}\x01auth=Bearer {token['access_token']}\x01\x01"
    )
    with RawStream.connect(oauth_server.c2s_port) as stream:
        stream.connect_encrypted(direct_tls=False)
        outcome = stream.sasl_outcome(stream.sasl_auth("OAUTHBEARER", message.encode()))
        assert outcome.success, stream.dump()
        assert stream.bind("keys") == f"{ALICE}/keys"
