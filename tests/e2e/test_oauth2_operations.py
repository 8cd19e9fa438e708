"""The operator's side of OAuth: signing keys and grants across restarts and
the admin CLI, accounts, and the role scopes.

The id_token signing key is made on first start and kept in the database;
``jackdaw oauth2 rotate-key`` adds a new one, which signs after the next
start while the old one stays published in the JWKS. Grants live in the
database too (a restart keeps them) and go with the account.
"""

from __future__ import annotations

import json

import pytest
import requests

from harness import PASSWORDS

HOST_OPTIONS = {
    "modules_enabled": ["http_oauth2"],
    "oauth2_registration_key": "keys-test-registration-key-0123456789",
    "allowed_oauth2_grant_types": ["authorization_code", "password"],
}


def base_url(server) -> str:
    return f"http://127.0.0.1:{server.http_port}"


def register_password_client(server) -> tuple[str, str]:
    r = requests.post(
        base_url(server) + "/oauth2/register",
        json={
            "client_name": "Key Test",
            "client_uri": "https://app.example.com/",
            "redirect_uris": ["https://app.example.com/cb"],
            "grant_types": ["password"],
        },
        timeout=10,
    )
    assert r.status_code == 201, r.text
    return r.json()["client_id"], r.json()["client_secret"]


def password_tokens(server, client: tuple[str, str], scope: str = "openid xmpp", user: str = "alice") -> dict:
    r = requests.post(
        base_url(server) + "/oauth2/token",
        data={"grant_type": "password", "username": user, "password": PASSWORDS[user], "scope": scope},
        auth=client,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.json()


def jwks_kids(server, alg: str = "ES256") -> list[str]:
    """The published keys of one algorithm, oldest first."""
    r = requests.get(base_url(server) + "/oauth2/jwks", timeout=10)
    assert r.status_code == 200
    return [k["kid"] for k in r.json()["keys"] if k["alg"] == alg]


def header_kid(jwt: str) -> str:
    import base64

    head = jwt.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"]


def introspect(server, client, token: str) -> dict:
    r = requests.post(base_url(server) + "/oauth2/introspect", data={"token": token}, auth=client, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_signing_key_survives_restart_and_rotates_with_the_cli(make_server):
    server = make_server(host_options=HOST_OPTIONS)
    first = jwks_kids(server)
    assert len(first) == 1
    client = register_password_client(server)
    tokens = password_tokens(server, client)
    assert header_kid(tokens["id_token"]) == first[0]

    server.stop()
    server.start()
    assert jwks_kids(server) == first, "the key is kept, not made again"
    # Grants and clients survive the restart too (nothing about them was
    # in memory).
    assert introspect(server, client, tokens["access_token"])["active"] is True

    server.stop()
    rotated = server.cli("oauth2", "rotate-key")
    assert rotated.returncode == 0, rotated.stderr
    assert "added ES256 signing key" in rotated.stdout and "added RS256 signing key" in rotated.stdout
    listed = server.cli("oauth2", "list-keys")
    assert listed.returncode == 0 and len(listed.stdout.strip().splitlines()) == 4, listed.stdout
    server.start()
    kids = jwks_kids(server)
    assert len(kids) == 2 and kids[0] == first[0], kids
    fresh = password_tokens(server, client)
    assert header_kid(fresh["id_token"]) == kids[1], "the newest key signs"


def test_deleting_the_account_deletes_its_grants(make_server):
    server = make_server(host_options=HOST_OPTIONS)
    client = register_password_client(server)
    tokens = password_tokens(server, client)
    assert introspect(server, client, tokens["access_token"])["active"] is True
    server.delete_user("alice@localhost")
    assert introspect(server, client, tokens["access_token"]) == {"active": False}
    assert introspect(server, client, tokens["refresh_token"]) == {"active": False}


def test_admin_role_scope_only_for_admins(make_server):
    server = make_server(host_options={**HOST_OPTIONS, "admins": ["alice@localhost"]})
    client = register_password_client(server)
    asked = "xmpp jackdaw:user jackdaw:admin"
    assert password_tokens(server, client, asked)["scope"] == asked
    bob = password_tokens(server, client, asked, user="bob")
    assert bob["scope"] == "xmpp jackdaw:user", "the admin scope is dropped for a non-admin"
    assert introspect(server, client, bob["access_token"])["scope"] == "xmpp jackdaw:user"


def test_admin_scope_is_dropped_on_refresh_once_no_longer_admin_regression(make_server):
    server = make_server(host_options={**HOST_OPTIONS, "admins": ["alice@localhost"]})
    client = register_password_client(server)
    tokens = password_tokens(server, client, "xmpp jackdaw:admin")
    assert tokens["scope"] == "xmpp jackdaw:admin"
    server.stop()
    server.host_options["admins"] = []
    server.write_config()
    server.start()
    refreshed = requests.post(
        base_url(server) + "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=client,
        timeout=10,
    )
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["scope"] == "xmpp"


def test_public_client_may_send_an_empty_secret_in_basic_auth(make_server):
    """Go's x/oauth2 sends `client_id:` (empty secret) in HTTP Basic first."""
    server = make_server(host_options=HOST_OPTIONS)
    r = requests.post(
        base_url(server) + "/oauth2/register",
        json={
            "client_name": "Public",
            "client_uri": "https://app.example.com/",
            "redirect_uris": ["https://app.example.com/cb"],
            "grant_types": ["password"],
            "token_endpoint_auth_method": "none",
        },
        timeout=10,
    )
    assert r.status_code == 201 and "client_secret" not in r.json(), r.text
    tokens = password_tokens(server, (r.json()["client_id"], ""))
    assert tokens["access_token"]


def test_registrations_are_bounded_in_size(make_server):
    server = make_server(host_options=HOST_OPTIONS)
    base = {
        "client_name": "Big",
        "client_uri": "https://app.example.com/",
        "redirect_uris": ["https://app.example.com/cb"],
    }
    for extra in (
        {"contacts": ["ops@example.com"] * 17},
        {"contacts": ["x" * 600]},
        {"redirect_uris": [f"https://app.example.com/{i}/{'p' * 400}" for i in range(16)]},
        {"client_name": "Evil\u001b[31m"},
    ):
        r = requests.post(base_url(server) + "/oauth2/register", json={**base, **extra}, timeout=10)
        assert r.status_code == 400 and r.json()["error"] == "invalid_client_metadata", (extra, r.text)


def test_rs256_id_tokens_for_clients_that_ask(make_server):
    """OpenID Connect Registration: a client registered with
    id_token_signed_response_alg = RS256 gets RS256 id_tokens, verifiable
    with the RSA key in the JWKS; discovery lists both algorithms."""
    server = make_server(host_options=HOST_OPTIONS)
    meta = requests.get(base_url(server) + "/.well-known/openid-configuration", timeout=10).json()
    assert meta["id_token_signing_alg_values_supported"] == ["ES256", "RS256"]
    r = requests.post(
        base_url(server) + "/oauth2/register",
        json={
            "client_name": "RSA",
            "client_uri": "https://app.example.com/",
            "redirect_uris": ["https://app.example.com/cb"],
            "grant_types": ["password"],
            "id_token_signed_response_alg": "RS256",
        },
        timeout=10,
    )
    assert r.status_code == 201, r.text
    client = (r.json()["client_id"], r.json()["client_secret"])
    id_token = password_tokens(server, client)["id_token"]
    assert header_kid(id_token) == jwks_kids(server, "RS256")[0]
    from authlib.jose import JsonWebKey, jwt

    keys = JsonWebKey.import_key_set(requests.get(base_url(server) + "/oauth2/jwks", timeout=10).json())
    claims = jwt.decode(id_token, keys)
    claims.validate()
    assert claims["sub"] == "xmpp:alice@localhost" and claims["aud"] == client[0]
    bad = requests.post(
        base_url(server) + "/oauth2/register",
        json={
            "client_name": "None",
            "client_uri": "https://app.example.com/",
            "redirect_uris": ["https://app.example.com/cb"],
            "id_token_signed_response_alg": "none",
        },
        timeout=10,
    )
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_client_metadata"


@pytest.mark.parametrize("revoked_token", ["refresh_token", "access_token"])
def test_grant_revoked_between_sasl_and_bind_closes_the_session_regression(make_server, revoked_token):
    """A grant (refresh token revoked) or the access token itself, revoked
    after OAUTHBEARER succeeded but before the resource was bound, found no
    session to close; the bind now checks again."""
    from harness.raw import RawStream, StreamClosed

    server = make_server(host_options=HOST_OPTIONS)
    client = register_password_client(server)
    tokens = password_tokens(server, client, "xmpp")
    stream = RawStream.connect(server.direct_tls_port, direct_tls=True)
    try:
        stream.connect_encrypted(True)
        message = b"n,a=alice@localhost,\x01auth=Bearer " + tokens["access_token"].encode() + b"\x01\x01"
        assert stream.sasl_outcome(stream.sasl_auth("OAUTHBEARER", message)).success, stream.dump()
        revoked = requests.post(
            base_url(server) + "/oauth2/revoke",
            data={"token": tokens[revoked_token]},
            auth=client,
            timeout=10,
        )
        assert revoked.status_code == 200
        stream.bind("late")
        try:
            while True:
                element = stream.read_element(5)
                if element.tag.endswith("error"):
                    assert element.find("{urn:ietf:params:xml:ns:xmpp-streams}not-authorized") is not None, (
                        stream.dump()
                    )
                    break
        except StreamClosed:
            pass
        assert stream.wait_closed(5), stream.dump()
    finally:
        stream.close()


def test_metadata_at_the_rfc8414_path_inserted_address(make_server):
    """RFC 8414 §3: an issuer with a path (behind a proxy at /xmpp) has its
    metadata at /.well-known/oauth-authorization-server/xmpp."""
    server = make_server(host_options=HOST_OPTIONS)
    plain = requests.get(base_url(server) + "/.well-known/oauth-authorization-server", timeout=10)
    inserted = requests.get(base_url(server) + "/.well-known/oauth-authorization-server/xmpp", timeout=10)
    assert inserted.status_code == 200 and inserted.json() == plain.json()
    assert plain.headers["vary"].lower() == "host"
