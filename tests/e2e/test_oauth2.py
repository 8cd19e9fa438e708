"""OAuth 2.0 / OpenID Connect: the ``http_oauth2`` module (docs/oauth2.md).

A real client library, authlib, registers clients dynamically, builds
authorization URLs with PKCE S256, exchanges codes, refreshes, revokes and
introspects tokens, and verifies id_tokens against the server's JWKS. A
``requests`` session with cookies plays the user's browser: it parses the
login, consent, device and grants pages, submits their forms and stops at
the 303 to the client's redirect URI (see :mod:`harness.oauth2`).

Where docs/oauth2.md is silent, the assertions are what the RFCs require:
RFC 6749 (OAuth 2.0), 7009 (revocation), 7591 (registration), 7636
(PKCE), 7662 (introspection), 8252 (native apps), 8414 (metadata), 8628
(device grant), 9207 (``iss``), 6750 (Bearer) and OpenID Connect Core and
Discovery.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest
import requests
from authlib.integrations.base_client import OAuthError

from harness import PASSWORDS, jid_of
from harness.oauth2 import (
    COOKIE_NAME,
    JsonWebKey,
    DEVICE_GRANT,
    NATIVE_CLIENT_URI,
    OOB,
    PRIVATE_SCHEME_REDIRECT,
    REGISTRATION_KEY,
    WEB_CLIENT_URI,
    WEB_REDIRECT,
    Browser,
    Form,
    Page,
    Provider,
    Registered,
    authorize_code,
    callback_params,
    code_flow,
    host_options,
    jwt,
    new_code_verifier,
    random_text,
    s256,
    start_code_flow,
    strip_query,
    sub_of,
)
from harness.server import JackdawServer

ALICE = jid_of("alice")


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture
def make_provider(make_server: Callable[..., JackdawServer]) -> Callable[..., Provider]:
    """``make_provider(option=value, ...)``: a server with the module enabled
    (and registration, unless ``oauth2_registration_key=None``) and its Provider."""

    def make(**options: Any) -> Provider:
        host = host_options(**options)
        host = {key: value for key, value in host.items() if value is not None}
        return Provider(make_server(host_options=host))

    return make


@pytest.fixture
def provider(make_provider: Callable[..., Provider]) -> Provider:
    return make_provider()


@pytest.fixture
def browsers(provider: Provider) -> Iterator[Callable[..., Browser]]:
    made: list[Browser] = []

    def make(target: Provider | None = None, headers: dict[str, str] | None = None) -> Browser:
        browser = (target or provider).browser(headers)
        made.append(browser)
        return browser

    yield make
    for browser in made:
        browser.close()


@pytest.fixture
def browser(browsers: Callable[..., Browser]) -> Browser:
    return browsers()


# --- helpers ----------------------------------------------------------------------------


def error_of(answer: requests.Response) -> str | None:
    """The RFC 6749 §5.2 ``error`` of a JSON error answer."""
    try:
        body = answer.json()
    except ValueError:
        raise AssertionError(f"not JSON: HTTP {answer.status_code} {answer.text[:500]}") from None
    return body.get("error")


def assert_oauth_error(answer: requests.Response, status: int, error: str) -> None:
    assert answer.status_code == status and error_of(answer) == error, (
        f"expected {status} {error}, got {answer.status_code} {answer.text[:500]}"
    )
    assert answer.headers.get("Content-Type", "").startswith("application/json"), answer.headers


def assert_error_page(answer: requests.Response) -> Page:
    """An error the user sees and that must not go back to the client: a 400
    page with id="error" and no redirect."""
    page = Page(answer)
    assert answer.status_code == 400, f"expected a 400 error page\n{page.describe()}"
    assert "Location" not in answer.headers, answer.headers
    assert page.by_id("error") is not None, f"no id=error element\n{page.describe()}"
    return page


def authlib_error(call: Callable[[], Any]) -> str:
    """The OAuth error code authlib raised for ``call``."""
    with pytest.raises(OAuthError) as raised:
        call()
    return raised.value.error


def assert_active(provider: Provider, client: Registered, token: str) -> dict[str, Any]:
    info = provider.introspect(client, token)
    assert info.get("active") is True, f"token should be active: {info}"
    return info


def assert_inactive(provider: Provider, client: Registered, token: str) -> None:
    info = provider.introspect(client, token)
    assert info == {"active": False}, f"token should be inactive (and nothing else said): {info}"


def csp_directives(answer: requests.Response) -> dict[str, str]:
    policy = answer.headers.get("Content-Security-Policy", "")
    directives = {}
    for part in policy.split(";"):
        words = part.split(None, 1)
        if words:
            directives[words[0].lower()] = words[1].strip() if len(words) > 1 else ""
    return directives


def assert_page_headers(answer: requests.Response, what: str) -> None:
    directives = csp_directives(answer)
    assert directives.get("default-src") == "'self'", f"{what}: CSP {answer.headers.get('Content-Security-Policy')}"
    assert directives.get("frame-ancestors") == "'none'", f"{what}: CSP {answer.headers.get('Content-Security-Policy')}"
    assert answer.headers.get("X-Frame-Options", "").upper() == "DENY", f"{what}: {answer.headers}"
    assert "no-store" in answer.headers.get("Cache-Control", ""), f"{what}: {answer.headers}"


def jwt_parts(token: str) -> list[str]:
    parts = token.split(".")
    assert len(parts) == 3, f"client_id is not a JWS compact serialization: {token}"
    return parts


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def per_host_key(key: str = REGISTRATION_KEY, host: str = "localhost") -> bytes:
    return hmac.new(key.encode(), host.encode(), hashlib.sha256).digest()


def documented_secret(client_id: str, key: str = REGISTRATION_KEY) -> str:
    return hmac.new(per_host_key(key), client_id.encode(), hashlib.sha256).hexdigest()


def capture_token_responses(session: Any) -> list[requests.Response]:
    """Keep every raw token endpoint answer authlib gets (headers to check)."""
    seen: list[requests.Response] = []

    def hook(response: requests.Response) -> requests.Response:
        seen.append(response)
        return response

    session.register_compliance_hook("access_token_response", hook)
    session.register_compliance_hook("refresh_token_response", hook)
    return seen


def same_url(left: str, right: str) -> bool:
    a, b = urlsplit(left), urlsplit(right)
    return a.path == b.path and parse_qs(a.query) == parse_qs(b.query)


# --- 1. discovery ---------------------------------------------------------------------------


def test_discovery_documents_describe_the_enabled_features(provider: Provider) -> None:
    """RFC 8414 and OpenID Connect Discovery: the same endpoints and
    capabilities in both documents, all under the issuer (scheme and Host of
    the request); by default no password grant and no implicit flow."""
    oauth = provider.document("/.well-known/oauth-authorization-server")
    oidc = provider.document("/.well-known/openid-configuration")
    issuer = provider.issuer
    expected_endpoints = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/oauth2/authorize",
        "token_endpoint": f"{issuer}/oauth2/token",
        "revocation_endpoint": f"{issuer}/oauth2/revoke",
        "introspection_endpoint": f"{issuer}/oauth2/introspect",
        "registration_endpoint": f"{issuer}/oauth2/register",
        "userinfo_endpoint": f"{issuer}/oauth2/userinfo",
        "device_authorization_endpoint": f"{issuer}/oauth2/device",
        "jwks_uri": f"{issuer}/oauth2/jwks",
    }
    for name, document in (("oauth-authorization-server", oauth), ("openid-configuration", oidc)):
        for key, value in expected_endpoints.items():
            assert document.get(key) == value, f"{name}: {key} = {document.get(key)!r}, expected {value!r}"
        grants = set(document["grant_types_supported"])
        assert {"authorization_code", DEVICE_GRANT, "refresh_token"} <= grants, f"{name}: {grants}"
        assert "password" not in grants, f"{name}: password grant advertised by default: {grants}"
        assert document["response_types_supported"] == ["code"], name
        assert document["code_challenge_methods_supported"] == ["S256"], name
        assert {"xmpp", "openid", "profile"} <= set(document["scopes_supported"]), name
        assert document["authorization_response_iss_parameter_supported"] is True, name
        assert "ES256" in document["id_token_signing_alg_values_supported"], name
        methods = document.get("token_endpoint_auth_methods_supported")
        if methods is not None:
            assert {"client_secret_basic", "client_secret_post"} <= set(methods), f"{name}: {methods}"
    # OpenID Connect Discovery §3: REQUIRED members.
    assert oidc.get("subject_types_supported"), oidc
    # Every key either document has, both have, with the same value.
    for key in set(oauth) | set(oidc):
        assert oauth.get(key) == oidc.get(key), f"{key}: {oauth.get(key)!r} vs {oidc.get(key)!r}"

    jwks = provider.jwks()
    assert jwks["keys"], jwks
    assert {key["alg"] for key in jwks["keys"]} == {"ES256", "RS256"}, jwks
    for key in jwks["keys"]:
        if key["alg"] == "ES256":
            assert key["kty"] == "EC" and key["crv"] == "P-256", key
        else:
            assert key["kty"] == "RSA" and key["n"] and key["e"], key
        # No private parts: EC "d", RSA "d", "p", "q", "dp", "dq", "qi".
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key), f"the JWKS publishes a private key: {key}"


def test_discovery_with_password_grant_and_implicit_flow_enabled(make_provider: Callable[..., Provider]) -> None:
    provider = make_provider(
        allowed_oauth2_grant_types=["authorization_code", "device_code", "password"],
        allowed_oauth2_response_types=["code", "token"],
    )
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        document = provider.document(path)
        assert "password" in document["grant_types_supported"], (path, document["grant_types_supported"])
        assert {"code", "token"} <= set(document["response_types_supported"]), (path, document)
        modes = document.get("response_modes_supported")
        if modes is not None:  # RFC 8414: the token response type answers in the fragment
            assert {"query", "fragment"} <= set(modes), (path, modes)


# --- 2. dynamic registration -------------------------------------------------------------------


def assert_registered(answer: requests.Response, sent: dict[str, Any]) -> dict[str, Any]:
    """RFC 7591 §3.2.1: 201, client_id, client_secret (+ expiry), issued_at, metadata echoed."""
    assert answer.status_code == 201, f"registration refused: {answer.status_code} {answer.text}"
    assert "no-store" in answer.headers.get("Cache-Control", ""), answer.headers
    info = answer.json()
    assert isinstance(info.get("client_id"), str) and info["client_id"], info
    assert isinstance(info.get("client_secret"), str) and len(info["client_secret"]) >= 32, info
    assert "client_secret_expires_at" in info, f"RFC 7591 requires client_secret_expires_at with a secret: {info}"
    issued = info.get("client_id_issued_at")
    assert isinstance(issued, int) and abs(issued - time.time()) < 120, info
    for key, value in sent.items():
        assert info.get(key) == value, f"{key} not echoed: sent {value!r}, got {info.get(key)!r}"
    return info


def test_dynamic_registration_of_web_and_native_clients(provider: Provider) -> None:
    web = Provider.web_metadata(
        "Web App", tos_uri="https://app.example.com/tos", policy_uri="https://app.example.com/p"
    )
    assert_registered(provider.register(web), web)

    native = Provider.native_metadata(
        "Native App", ["http://127.0.0.1:8123/cb", "http://[::1]/cb", PRIVATE_SCHEME_REDIRECT, OOB]
    )
    assert_registered(provider.register(native), native)

    localhost = Provider.native_metadata("Native App 2", ["http://localhost:9999/callback"])
    assert_registered(provider.register(localhost), localhost)


def test_identical_registrations_get_different_client_ids_and_secrets(provider: Provider) -> None:
    metadata = Provider.web_metadata("Twice")
    first = assert_registered(provider.register(metadata), metadata)
    second = assert_registered(provider.register(metadata), metadata)
    assert first["client_id"] != second["client_id"]
    assert first["client_secret"] != second["client_secret"]


def test_client_credentials_are_stateless_as_documented(provider: Provider) -> None:
    """docs/oauth2.md: the client_id is a JWT signed with
    per_host_key = HMAC-SHA256(key, host) and the secret is
    HMAC-SHA256(per_host_key, client_id) in hex; nothing is stored, so a
    restart keeps every client working."""
    client = provider.web_client("Stateless")
    claims = jwt.decode(client.client_id, per_host_key())
    assert claims.header["alg"] == "HS256", claims.header
    assert claims.get("client_name") == "Stateless", dict(claims)
    assert client.client_secret == documented_secret(client.client_id)

    provider.server.restart()
    provider = Provider(provider.server)  # new ephemeral ports
    browser = provider.browser()
    flow = code_flow(provider, browser, client, "xmpp")
    assert flow.token and flow.token.get("access_token")


# --- 3. authorization code + PKCE ----------------------------------------------------------------


def test_authorization_code_flow_with_pkce_openid_userinfo_and_introspection(
    provider: Provider, browser: Browser
) -> None:
    client = provider.web_client("Code Flow App")
    nonce = random_text()
    flow = start_code_flow(provider, client, "openid profile xmpp", nonce=nonce)
    query = parse_qs(urlsplit(flow.url).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"] == [s256(flow.verifier)]

    # Not logged in: the login page, which comes back to this request.
    page = browser.page(flow.url)
    assert page.status == 200 and page.is_login, page.describe()
    assert same_url(page.form("login").fields()["next"], flow.url), page.form("login").fields()

    # Logged in: the consent page names the client and the scopes.
    consent = browser.follow_login(page, "alice")
    assert consent.is_consent, consent.describe()
    text = consent.text()
    assert "Code Flow App" in text and WEB_CLIENT_URI.rstrip("/") in text, consent.describe()
    items = consent.by_id("scopes").find_all("li")
    assert len(items) == 3, items
    scopes_text = consent.by_id("scopes").text().lower()
    for scope in ("openid", "profile", "xmpp"):
        assert scope in scopes_text, f"scope {scope} not shown: {scopes_text}"

    answer = browser.decide(consent, "allow")
    assert answer.status_code == 303, answer.text[:2000]
    location = answer.headers["Location"]
    params = callback_params(location)
    assert strip_query(location) == WEB_REDIRECT, location
    assert params["state"] == flow.state and params["iss"] == provider.issuer and params["code"], params

    seen = capture_token_responses(flow.session)
    token = flow.session.fetch_token(authorization_response=location, code_verifier=flow.verifier)
    assert seen and "no-store" in seen[-1].headers.get("Cache-Control", ""), seen[-1].headers
    assert token["token_type"].lower() == "bearer", token
    assert isinstance(token["expires_in"], int) and 0 < token["expires_in"] <= 3600, token
    assert token["refresh_token"] and token["access_token"] != token["refresh_token"], token
    assert set(token["scope"].split()) == {"openid", "profile", "xmpp"}, token

    claims = provider.verify_id_token(token["id_token"], client.client_id, "alice", nonce)
    assert claims.header["alg"] == "ES256", claims.header
    assert claims.get("preferred_username") == "alice", dict(claims)
    if claims.header.get("kid") is not None:
        assert claims.header["kid"] in {key.get("kid") for key in provider.jwks()["keys"]}

    info = provider.userinfo(token["access_token"])
    assert info.status_code == 200, info.text
    assert info.json()["sub"] == sub_of("alice") and info.json()["preferred_username"] == "alice", info.json()
    posted = provider.post("/oauth2/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert posted.status_code == 200 and posted.json()["sub"] == sub_of("alice"), posted.text

    intro = assert_active(provider, client, token["access_token"])
    assert set(intro["scope"].split()) == {"openid", "profile", "xmpp"}, intro
    assert intro["client_id"] == client.client_id and intro["username"] == "alice", intro
    assert intro["sub"] == sub_of("alice") and intro["token_type"].lower() == "bearer", intro
    assert intro["iat"] <= time.time() + 5 and intro["exp"] > time.time(), intro

    # Introspection answers only the client the token was issued to.
    other = provider.web_client("Other App")
    assert_inactive(provider, other, token["access_token"])
    assert_inactive(provider, client, "garbage-" + random_text())


def test_deny_on_consent_redirects_access_denied(provider: Provider, browser: Browser) -> None:
    client = provider.web_client()
    flow = start_code_flow(provider, client, "xmpp")
    answer = browser.authorize(flow.url, "alice", decision="deny")
    assert answer.status_code == 303, answer.text[:2000]
    params = callback_params(answer.headers["Location"])
    assert strip_query(answer.headers["Location"]) == WEB_REDIRECT
    assert params.get("error") == "access_denied" and "code" not in params, params
    assert params.get("state") == flow.state and params.get("iss") == provider.issuer, params


def test_refresh_token_rotation_and_reuse_detection(provider: Provider, browser: Browser) -> None:
    """Each refresh returns a new refresh token; the old one is then refused,
    and presenting it revokes the whole grant (RFC 9700 §4.14)."""
    client = provider.web_client()
    flow = code_flow(provider, browser, client, "xmpp")
    first = dict(flow.token)
    second = dict(flow.session.refresh_token(provider.token_endpoint, refresh_token=first["refresh_token"]))
    assert second["refresh_token"] != first["refresh_token"], second
    assert second["access_token"] != first["access_token"], second
    assert second["token_type"].lower() == "bearer" and set(second["scope"].split()) == {"xmpp"}, second
    assert_active(provider, client, second["access_token"])

    # The old refresh token again: refused, and the grant is gone.
    error = authlib_error(
        lambda: flow.session.refresh_token(provider.token_endpoint, refresh_token=first["refresh_token"])
    )
    assert error == "invalid_grant"
    error = authlib_error(
        lambda: flow.session.refresh_token(provider.token_endpoint, refresh_token=second["refresh_token"])
    )
    assert error == "invalid_grant", "the rotated refresh token must die with the grant after a reuse"
    assert_inactive(provider, client, second["access_token"])


def test_revocation_of_access_and_refresh_tokens(provider: Provider, browser: Browser) -> None:
    client = provider.web_client()
    other = provider.web_client("Other App")

    flow = code_flow(provider, browser, client, "openid xmpp")
    access = flow.token["access_token"]
    answer = flow.session.revoke_token(provider.revocation_endpoint, token=access, token_type_hint="access_token")
    assert answer.status_code == 200, answer.text
    assert_inactive(provider, client, access)
    assert provider.userinfo(access).status_code == 401

    # Revoking the refresh token revokes the grant: its access token too.
    flow = code_flow(provider, browser, client, "openid xmpp")
    access, refresh = flow.token["access_token"], flow.token["refresh_token"]
    assert_active(provider, client, access)
    # Another client cannot revoke it (RFC 7009 §2.1: 200 but nothing done).
    answer = provider.revoke(other, refresh)
    assert answer.status_code in (200, 400), answer.text
    assert_active(provider, client, access)
    answer = flow.session.revoke_token(provider.revocation_endpoint, token=refresh, token_type_hint="refresh_token")
    assert answer.status_code == 200, answer.text
    assert_inactive(provider, client, access)
    assert provider.userinfo(access).status_code == 401
    assert authlib_error(lambda: flow.session.refresh_token(provider.token_endpoint, refresh_token=refresh)) == (
        "invalid_grant"
    )

    # RFC 7009 §2.2: an invalid or already revoked token is still a 200.
    assert provider.revoke(client, "garbage-" + random_text()).status_code == 200
    assert provider.revoke(client, refresh).status_code == 200
    # Without client authentication: invalid_client.
    assert_oauth_error(provider.post("/oauth2/revoke", data={"token": refresh}), 401, "invalid_client")


def test_client_secret_post_authentication(provider: Provider, browser: Browser) -> None:
    client = provider.web_client("Post App", token_endpoint_auth_method="client_secret_post")
    assert client.info.get("token_endpoint_auth_method") == "client_secret_post", client.info
    flow = code_flow(provider, browser, client, "xmpp")
    assert flow.token["access_token"]
    answer = provider.token_request(
        client, {"grant_type": "refresh_token", "refresh_token": flow.token["refresh_token"]}, auth="post"
    )
    assert answer.status_code == 200 and answer.json()["access_token"], answer.text


def test_public_client_gets_no_secret_and_relies_on_pkce(provider: Provider, browser: Browser) -> None:
    answer = provider.register(Provider.native_metadata("Public App", token_endpoint_auth_method="none"))
    assert answer.status_code == 201, answer.text
    info = answer.json()
    assert not info.get("client_secret"), f"a public client got a secret: {info}"
    client = Registered(info, Provider.native_metadata("Public App", token_endpoint_auth_method="none"))
    flow = code_flow(provider, browser, client, "xmpp")
    assert flow.token["access_token"], flow.token

    # Without the verifier, the code alone is worth nothing.
    flow = authorize_code(provider, browser, client, "xmpp")
    answer = provider.token_request(
        client,
        {"grant_type": "authorization_code", "code": flow.params["code"], "redirect_uri": client.redirect_uri},
        auth="none",
    )
    assert answer.status_code in (400, 401) and error_of(answer) in ("invalid_grant", "invalid_request"), answer.text


# --- 4. native and out-of-band clients ------------------------------------------------------------


def test_native_client_with_loopback_and_private_scheme_redirects(provider: Provider, browser: Browser) -> None:
    loopback = "http://127.0.0.1:8123/cb"
    client = provider.native_client("Native App", [loopback, PRIVATE_SCHEME_REDIRECT])
    flow = code_flow(provider, browser, client, "xmpp")
    assert flow.location.startswith(loopback + "?"), flow.location
    assert_active(provider, client, flow.token["access_token"])

    session = provider.session(client, scope="xmpp", redirect_uri=PRIVATE_SCHEME_REDIRECT)
    verifier = new_code_verifier()
    url, state = session.create_authorization_url(provider.authorization_endpoint, code_verifier=verifier)
    answer = browser.authorize(url)
    assert answer.status_code == 303, answer.text[:2000]
    location = answer.headers["Location"]
    assert location.startswith(PRIVATE_SCHEME_REDIRECT + "?"), location
    params = callback_params(location)
    assert params["state"] == state and params["iss"] == provider.issuer
    token = session.fetch_token(code=params["code"], code_verifier=verifier)
    assert_active(provider, client, token["access_token"])


def test_loopback_redirect_uri_may_use_any_port(provider: Provider, browser: Browser) -> None:
    """RFC 8252 §7.3: for loopback IP redirect URIs the authorization server
    MUST allow any port at the time of the request."""
    client = provider.native_client("Native App", ["http://127.0.0.1:8123/cb"])
    redirect = "http://127.0.0.1:54321/cb"
    session = provider.session(client, scope="xmpp", redirect_uri=redirect)
    verifier = new_code_verifier()
    url, state = session.create_authorization_url(provider.authorization_endpoint, code_verifier=verifier)
    answer = browser.authorize(url)
    assert answer.status_code == 303, Page(answer).describe()
    assert answer.headers["Location"].startswith(redirect + "?"), answer.headers["Location"]
    params = callback_params(answer.headers["Location"])
    token = session.fetch_token(code=params["code"], code_verifier=verifier)
    assert token["access_token"]


def test_out_of_band_client_is_shown_the_code(provider: Provider, browser: Browser) -> None:
    client = provider.native_client("OOB App", [OOB])
    flow = start_code_flow(provider, client, "xmpp")
    answer = browser.authorize(flow.url)
    page = Page(answer)
    assert answer.status_code == 200, page.describe()
    assert_page_headers(answer, "oob page")
    code = page.by_id("code")
    assert code is not None and code.tag == "code" and code.text(), page.describe()
    token = flow.session.fetch_token(code=code.text(), code_verifier=flow.verifier)
    assert token["access_token"] and token["refresh_token"], token
    assert_active(provider, client, token["access_token"])


# --- 5. device grant --------------------------------------------------------------------------------


def poll(provider: Provider, client: Registered, device_code: str) -> requests.Response:
    return provider.token_request(client, {"grant_type": DEVICE_GRANT, "device_code": device_code})


def test_device_authorization_grant(provider: Provider, browser: Browser) -> None:
    """RFC 8628: device code and user code, authorization_pending, slow_down
    for polling faster than the interval, the user approves on the
    verification page, then tokens."""
    client = provider.device_client("Smart Fridge")
    answer = provider.device_authorization(client, "xmpp")
    assert answer.status_code == 200, answer.text
    assert "no-store" in answer.headers.get("Cache-Control", ""), answer.headers
    grant = answer.json()
    assert grant["device_code"] and re.fullmatch(r"\w{4}-\w{4}", grant["user_code"]), grant
    assert grant["verification_uri"] == f"{provider.issuer}/oauth2/device", grant
    complete = grant["verification_uri_complete"]
    assert complete.startswith(grant["verification_uri"]) and "user_code=" in complete, grant
    assert isinstance(grant["expires_in"], int) and grant["expires_in"] > 60, grant
    assert grant["interval"] == 5, grant

    assert_oauth_error(poll(provider, client, grant["device_code"]), 400, "authorization_pending")
    assert_oauth_error(poll(provider, client, grant["device_code"]), 400, "slow_down")
    last_poll = time.monotonic()

    page = browser.open_consent(complete, "alice")
    assert page.is_consent, page.describe()
    assert "Smart Fridge" in page.text(), page.describe()
    done = browser.decide(page, "allow")
    done_page = Page(done)
    assert done.status_code == 200 and done_page.by_id("done") is not None, done_page.describe()

    # RFC 8628 §3.5: after slow_down the interval is 5 s longer.
    time.sleep(max(0.0, last_poll + grant["interval"] + 5 + 0.5 - time.monotonic()))
    session = provider.session(client, scope=None)
    token = session.fetch_token(grant_type=DEVICE_GRANT, device_code=grant["device_code"])
    assert token["access_token"] and token["refresh_token"] and token["token_type"].lower() == "bearer", token
    assert set(token["scope"].split()) == {"xmpp"}, token
    info = assert_active(provider, client, token["access_token"])
    assert info["username"] == "alice", info

    # The device code is spent.
    time.sleep(grant["interval"] + 5.5)
    answer = poll(provider, client, grant["device_code"])
    assert answer.status_code == 400 and error_of(answer) in ("invalid_grant", "expired_token"), answer.text


def test_device_authorization_denied(provider: Provider, browser: Browser) -> None:
    client = provider.device_client()
    grant = provider.device_authorization(client, "xmpp").json()
    page = browser.open_consent(f"/oauth2/device?user_code={grant['user_code']}", "alice")
    assert page.is_consent, page.describe()
    answer = browser.decide(page, "deny")
    assert answer.status_code in (200, 303), answer.text[:2000]
    assert_oauth_error(poll(provider, client, grant["device_code"]), 400, "access_denied")


def test_device_page_refuses_an_unknown_user_code(provider: Provider, browser: Browser) -> None:
    browser.sign_in("alice")
    answer = browser.get("/oauth2/device?user_code=ZZZZ-ZZZZ")
    page = Page(answer)
    assert page.by_id("error") is not None and not page.is_consent, page.describe()
    assert answer.status_code in (200, 400, 404), page.describe()
    # Not logged in, the device page asks for a login first.
    grant = provider.device_authorization(provider.device_client(), "xmpp").json()
    page = provider.browser().page(f"/oauth2/device?user_code={grant['user_code']}")
    assert page.status == 200 and page.is_login, page.describe()


def test_device_grant_needs_client_authentication(provider: Provider) -> None:
    client = provider.device_client()
    answer = provider.token_request(client, {"scope": "xmpp"}, path="/oauth2/device", secret="wrong-" + random_text())
    assert_oauth_error(answer, 401, "invalid_client")
    answer = provider.post("/oauth2/device", data={"scope": "xmpp"})
    assert answer.status_code in (400, 401) and error_of(answer) in ("invalid_client", "invalid_request"), answer.text
    # A client not registered for the device grant may not use it.
    web = provider.web_client()
    assert_oauth_error(provider.device_authorization(web, "xmpp"), 400, "unauthorized_client")


# --- 6. negative cases ---------------------------------------------------------------------------


def test_missing_pkce_is_refused_back_to_the_client(provider: Provider, browser: Browser) -> None:
    client = provider.web_client()
    session = provider.session(client, scope="xmpp")
    url, state = session.create_authorization_url(provider.authorization_endpoint)  # no code_verifier
    assert "code_challenge" not in url
    answer = browser.authorize(url)
    assert answer.status_code == 303, Page(answer).describe()
    params = callback_params(answer.headers["Location"])
    assert strip_query(answer.headers["Location"]) == WEB_REDIRECT
    assert params.get("error") == "invalid_request" and "code" not in params, params
    assert params.get("state") == state and params.get("iss") == provider.issuer, params


def test_plain_pkce_is_refused_unless_allowed(make_provider: Callable[..., Provider]) -> None:
    provider = make_provider()
    client = provider.web_client()
    verifier = new_code_verifier()
    session = provider.session(client, scope="xmpp")
    url, state = session.create_authorization_url(
        provider.authorization_endpoint, code_challenge=verifier, code_challenge_method="plain"
    )
    browser = provider.browser()
    answer = browser.authorize(url)
    assert answer.status_code == 303, Page(answer).describe()
    params = callback_params(answer.headers["Location"])
    assert params.get("error") == "invalid_request" and "code" not in params, params
    assert params.get("state") == state

    lenient = make_provider(allowed_oauth2_code_challenge_methods=["S256", "plain"])
    client = lenient.web_client()
    session = lenient.session(client, scope="xmpp")
    url, _state = session.create_authorization_url(
        lenient.authorization_endpoint, code_challenge=verifier, code_challenge_method="plain"
    )
    answer = lenient.browser().authorize(url)
    assert answer.status_code == 303, Page(answer).describe()
    params = callback_params(answer.headers["Location"])
    token = session.fetch_token(code=params["code"], code_verifier=verifier)
    assert token["access_token"]


def test_wrong_code_verifier_is_invalid_grant(provider: Provider, browser: Browser) -> None:
    client = provider.web_client()
    flow = authorize_code(provider, browser, client, "xmpp")
    error = authlib_error(
        lambda: flow.session.fetch_token(authorization_response=flow.location, code_verifier=new_code_verifier())
    )
    assert error == "invalid_grant"


def test_unregistered_redirect_uri_gets_an_error_page_not_a_redirect(provider: Provider, browser: Browser) -> None:
    client = provider.web_client()
    for redirect in ("https://app.example.com/other", "https://evil.example.net/cb"):
        session = provider.session(client, scope="xmpp", redirect_uri=redirect)
        url, _state = session.create_authorization_url(
            provider.authorization_endpoint, code_verifier=new_code_verifier()
        )
        page = assert_error_page(browser.get(url))
        assert_page_headers(page.response, "error page")
        # Logged in, still no redirect.
        browser.sign_in("alice")
        assert_error_page(browser.get(url))


def test_redirect_uri_mismatch_at_the_token_endpoint(provider: Provider, browser: Browser) -> None:
    client = provider.web_client("Two Redirects", redirect_uris=[WEB_REDIRECT, "https://app.example.com/cb2"])
    flow = authorize_code(provider, browser, client, "xmpp")
    answer = provider.token_request(
        client,
        {
            "grant_type": "authorization_code",
            "code": flow.params["code"],
            "redirect_uri": "https://app.example.com/cb2",
            "code_verifier": flow.verifier,
        },
    )
    assert_oauth_error(answer, 400, "invalid_grant")


def test_reused_code_is_refused_and_revokes_the_first_tokens(provider: Provider, browser: Browser) -> None:
    client = provider.web_client()
    flow = code_flow(provider, browser, client, "xmpp")
    first = flow.token
    assert_active(provider, client, first["access_token"])
    error = authlib_error(
        lambda: flow.session.fetch_token(authorization_response=flow.location, code_verifier=flow.verifier)
    )
    assert error == "invalid_grant"
    assert_inactive(provider, client, first["access_token"])
    assert (
        authlib_error(lambda: flow.session.refresh_token(provider.token_endpoint, refresh_token=first["refresh_token"]))
        == "invalid_grant"
    )


def test_expired_access_token(make_provider: Callable[..., Provider]) -> None:
    provider = make_provider(oauth2_access_token_ttl=2)
    client = provider.web_client()
    flow = code_flow(provider, provider.browser(), client, "openid xmpp")
    token = flow.token
    assert token["expires_in"] <= 2, token
    assert provider.userinfo(token["access_token"]).status_code == 200
    time.sleep(3)
    assert_inactive(provider, client, token["access_token"])
    answer = provider.userinfo(token["access_token"])
    assert answer.status_code == 401, answer.text
    assert answer.headers.get("WWW-Authenticate", "").startswith("Bearer"), answer.headers
    # The refresh token still works and gives a fresh access token.
    fresh = provider.token_request(client, {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]})
    assert fresh.status_code == 200, fresh.text
    assert_active(provider, client, fresh.json()["access_token"])


def test_userinfo_needs_a_valid_token_with_openid(provider: Provider, browser: Browser) -> None:
    client = provider.web_client()
    flow = code_flow(provider, browser, client, "xmpp")
    answer = provider.userinfo(flow.token["access_token"])
    assert answer.status_code in (401, 403), answer.text
    for header in ({"Authorization": "Bearer garbage-" + random_text()}, {}):
        answer = provider.get("/oauth2/userinfo", headers=header)
        assert answer.status_code == 401, answer.text
        assert answer.headers.get("WWW-Authenticate", "").startswith("Bearer"), answer.headers


REGISTRATION_VIOLATIONS: dict[str, tuple[dict[str, Any], str]] = {
    "missing client_name": (
        {"client_uri": WEB_CLIENT_URI, "redirect_uris": [WEB_REDIRECT]},
        "invalid_client_metadata",
    ),
    "missing client_uri": ({"client_name": "X", "redirect_uris": [WEB_REDIRECT]}, "invalid_client_metadata"),
    "http client_uri": (
        Provider.web_metadata(client_uri="http://app.example.com/", redirect_uris=[WEB_REDIRECT]),
        "invalid_client_metadata",
    ),
    "web redirect not https": (
        Provider.web_metadata(redirect_uris=["http://app.example.com/cb"]),
        "invalid_redirect_uri",
    ),
    "web redirect on another host": (
        Provider.web_metadata(redirect_uris=["https://evil.example.net/cb"]),
        "invalid_redirect_uri",
    ),
    "web redirect to loopback": (
        Provider.web_metadata(redirect_uris=["http://127.0.0.1:8123/cb"]),
        "invalid_redirect_uri",
    ),
    "native redirect http not loopback": (
        Provider.native_metadata(redirect_uris=["http://native.example.com/cb"]),
        "invalid_redirect_uri",
    ),
    "tos_uri on another host": (
        Provider.web_metadata(tos_uri="https://evil.example.net/tos"),
        "invalid_client_metadata",
    ),
    "policy_uri with another scheme": (
        Provider.web_metadata(policy_uri="http://app.example.com/policy"),
        "invalid_client_metadata",
    ),
    "logo_uri on another host": (
        Provider.web_metadata(logo_uri="https://evil.example.net/logo.png"),
        "invalid_client_metadata",
    ),
    "password grant not allowed": (
        Provider.web_metadata(grant_types=["authorization_code", "password"]),
        "invalid_client_metadata",
    ),
    "token response type not allowed": (
        Provider.web_metadata(response_types=["code", "token"], grant_types=["authorization_code", "implicit"]),
        "invalid_client_metadata",
    ),
    "unknown token_endpoint_auth_method": (
        Provider.web_metadata(token_endpoint_auth_method="magic_beans"),
        "invalid_client_metadata",
    ),
}


@pytest.mark.parametrize("rule", list(REGISTRATION_VIOLATIONS))
def test_registration_rules(provider: Provider, rule: str) -> None:
    metadata, error = REGISTRATION_VIOLATIONS[rule]
    answer = provider.register(metadata)
    assert_oauth_error(answer, 400, error)


def test_registration_that_is_not_json(provider: Provider) -> None:
    for data, content_type in (
        ("client_name=X&client_uri=https%3A%2F%2Fapp.example.com%2F", "application/x-www-form-urlencoded"),
        ("{not json", "application/json"),
        ('["a", "list"]', "application/json"),
    ):
        answer = provider.register(data=data, headers={"Content-Type": content_type})
        assert_oauth_error(answer, 400, "invalid_client_metadata")


def test_registration_disabled_without_a_registration_key(make_provider: Callable[..., Provider]) -> None:
    provider = make_provider(oauth2_registration_key=None)
    answer = provider.register(Provider.web_metadata())
    assert 400 <= answer.status_code < 500, answer.text
    try:
        body = answer.json()
    except ValueError:
        body = {}
    assert "client_id" not in body and "client_secret" not in body, answer.text
    metadata = provider.document("/.well-known/oauth-authorization-server")
    assert "registration_endpoint" not in metadata, f"a disabled registration endpoint is advertised: {metadata}"


def test_forged_client_secret_is_invalid_client(provider: Provider, browser: Browser) -> None:
    client = provider.web_client()
    flow = authorize_code(provider, browser, client, "xmpp")
    data = {
        "grant_type": "authorization_code",
        "code": flow.params["code"],
        "redirect_uri": client.redirect_uri,
        "code_verifier": flow.verifier,
    }
    forged = "0" * len(client.client_secret)
    answer = provider.token_request(client, data, secret=forged)
    assert_oauth_error(answer, 401, "invalid_client")
    # RFC 6749 §5.2: a failed HTTP Basic authentication gets WWW-Authenticate.
    assert answer.headers.get("WWW-Authenticate", "").lower().startswith("basic"), answer.headers
    assert_oauth_error(provider.token_request(client, data, secret=forged, auth="post"), 401, "invalid_client")
    # The secret of another client does not fit either.
    other = provider.web_client("Other")
    assert_oauth_error(provider.token_request(client, data, secret=other.client_secret), 401, "invalid_client")
    # The code was not spent by the failed attempts.
    answer = provider.token_request(client, data)
    assert answer.status_code == 200, answer.text


def tampered_client_ids(client_id: str) -> dict[str, str]:
    header, payload, signature = jwt_parts(client_id)
    index = len(payload) // 2
    flipped = payload[:index] + ("A" if payload[index] != "A" else "B") + payload[index + 1 :]
    claims = json.loads(b64url_decode(payload))
    claims["client_name"] = "Evil Twin"
    other_key = per_host_key("another-registration-key-0123456789")
    resigned = jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, other_key).decode()
    return {"payload changed": f"{header}.{flipped}.{signature}", "signed with another key": resigned}


def test_tampered_client_id_is_refused(provider: Provider, browser: Browser) -> None:
    client = provider.web_client()
    flow = authorize_code(provider, browser, client, "xmpp")
    for what, forged_id in tampered_client_ids(client.client_id).items():
        # The secret fits the forged id the way the server derives secrets, but
        # with a key the attacker chose.
        secret = hmac.new(
            per_host_key("another-registration-key-0123456789"), forged_id.encode(), hashlib.sha256
        ).hexdigest()
        for candidate_secret in (client.client_secret, secret):
            answer = provider.post(
                "/oauth2/token",
                data={
                    "grant_type": "authorization_code",
                    "code": flow.params["code"],
                    "redirect_uri": client.redirect_uri,
                    "code_verifier": flow.verifier,
                },
                auth=(forged_id, candidate_secret),
            )
            assert answer.status_code == 401 and error_of(answer) == "invalid_client", f"{what}: {answer.text}"
        # At the authorization endpoint: an error page, no redirect.
        url = (
            provider.authorization_endpoint
            + "?"
            + urlencode(
                {
                    "response_type": "code",
                    "client_id": forged_id,
                    "redirect_uri": WEB_REDIRECT,
                    "scope": "xmpp",
                    "state": "s",
                    "code_challenge": s256(new_code_verifier()),
                    "code_challenge_method": "S256",
                }
            )
        )
        assert_error_page(browser.get(url))


def test_consent_and_login_forms_need_the_csrf_token(provider: Provider, browser: Browser) -> None:
    client = provider.web_client()
    flow = start_code_flow(provider, client, "xmpp")

    login_page = browser.page(flow.url)
    fields = login_page.form("login").fields()
    fields.update(username="alice", password=PASSWORDS["alice"])
    for csrf in (None, "wrong-" + random_text()):
        data = {key: value for key, value in fields.items() if key != "csrf"}
        if csrf is not None:
            data["csrf"] = csrf
        answer = browser.post("/oauth2/login", data)
        assert answer.status_code == 403, f"login with csrf={csrf!r}: {answer.status_code}"
        assert not browser.signed_in(), "logged in without a valid csrf token"

    consent = browser.open_consent(flow.url, "alice")
    fields = consent.form("consent").fields()
    fields["decision"] = "allow"
    for csrf in (None, "wrong-" + random_text()):
        data = {key: value for key, value in fields.items() if key != "csrf"}
        if csrf is not None:
            data["csrf"] = csrf
        answer = browser.post("/oauth2/consent", data)
        assert answer.status_code == 403, f"consent with csrf={csrf!r}: {answer.status_code} {answer.headers}"
        assert "code=" not in answer.headers.get("Location", "")
    assert grant_items(browser.grants_page()) == [], "a grant was made without a valid csrf token"
    # A csrf token from another browser's session does not fit either.
    other = provider.browser()
    other_consent = other.open_consent(start_code_flow(provider, client, "xmpp").url, "alice")
    data = dict(fields, csrf=other_consent.form("consent").hidden()["csrf"])
    assert browser.post("/oauth2/consent", data).status_code == 403


def test_wrong_password_on_the_login_page(provider: Provider, browser: Browser) -> None:
    client = provider.web_client()
    flow = start_code_flow(provider, client, "xmpp")
    page = browser.page(flow.url)
    answer = browser.login(page, "alice", "not-the-password")
    retry = Page(answer)
    assert answer.status_code == 401, retry.describe()
    assert retry.is_login and retry.by_id("error") is not None, retry.describe()
    assert_page_headers(answer, "login error page")
    assert not browser.signed_in()
    for user in ("nobody", ""):
        answer = browser.login(retry, user, "whatever")
        assert answer.status_code == 401 and Page(answer).by_id("error") is not None, answer.text[:2000]
    # The right password on the page shown again works.
    consent = browser.follow_login(retry, "alice")
    assert consent.is_consent, consent.describe()


def test_implicit_flow_is_refused_by_default(provider: Provider, browser: Browser) -> None:
    client = provider.web_client()
    session = provider.session(client, scope="xmpp")
    url, state = session.create_authorization_url(provider.authorization_endpoint, response_type="token")
    answer = browser.authorize(url)
    assert answer.status_code == 303, Page(answer).describe()
    params = callback_params(answer.headers["Location"])
    assert strip_query(answer.headers["Location"]) == WEB_REDIRECT
    assert params.get("error") == "unsupported_response_type" and "access_token" not in params, params
    assert params.get("state") == state, params


def test_implicit_flow_when_enabled(make_provider: Callable[..., Provider]) -> None:
    provider = make_provider(allowed_oauth2_response_types=["code", "token"])
    client = provider.web_client(
        "Implicit App", response_types=["code", "token"], grant_types=["authorization_code", "implicit"]
    )
    session = provider.session(client, scope="xmpp")
    url, state = session.create_authorization_url(provider.authorization_endpoint, response_type="token")
    answer = provider.browser().authorize(url)
    assert answer.status_code == 303, Page(answer).describe()
    location = answer.headers["Location"]
    fragment = parse_qs(urlsplit(location).fragment)
    assert "access_token" in fragment and "access_token" not in parse_qs(urlsplit(location).query), location
    token = session.token_from_fragment(location, state)
    assert token["token_type"].lower() == "bearer" and "refresh_token" not in token, token
    assert_active(provider, client, token["access_token"])


def test_password_grant_is_refused_by_default(provider: Provider) -> None:
    client = provider.web_client()
    answer = provider.token_request(
        client, {"grant_type": "password", "username": "alice", "password": PASSWORDS["alice"], "scope": "xmpp"}
    )
    assert_oauth_error(answer, 400, "unsupported_grant_type")


@pytest.mark.parametrize("expect_jid", [False, True])
def test_password_grant_when_enabled(make_provider: Callable[..., Provider], expect_jid: bool) -> None:
    provider = make_provider(
        allowed_oauth2_grant_types=["authorization_code", "device_code", "password"],
        oauth2_expect_username_jid=expect_jid,
    )
    client = provider.web_client("Password App", grant_types=["authorization_code", "password", "refresh_token"])
    session = provider.session(client, scope="xmpp")
    username = ALICE if expect_jid else "alice"
    token = session.fetch_token(grant_type="password", username=username, password=PASSWORDS["alice"])
    assert token["access_token"] and token["token_type"].lower() == "bearer", token
    info = assert_active(provider, client, token["access_token"])
    assert info["username"] == "alice" and info["sub"] == sub_of("alice"), info

    error = authlib_error(lambda: session.fetch_token(grant_type="password", username=username, password="wrong"))
    assert error == "invalid_grant"


def test_token_endpoint_errors_are_rfc6749_json(provider: Provider) -> None:
    client = provider.web_client()
    cases = [
        ({"grant_type": "authorization_code", "code": "nope", "redirect_uri": WEB_REDIRECT}, 400, "invalid_grant"),
        ({"grant_type": "refresh_token", "refresh_token": "nope"}, 400, "invalid_grant"),
        ({"grant_type": "client_credentials"}, 400, "unsupported_grant_type"),
        ({"grant_type": "urn:example:nothing"}, 400, "unsupported_grant_type"),
        ({}, 400, "invalid_request"),
    ]
    for data, status, error in cases:
        answer = provider.token_request(client, data)
        assert_oauth_error(answer, status, error)
        assert "no-store" in answer.headers.get("Cache-Control", ""), answer.headers
    answer = provider.post("/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": "nope"})
    assert_oauth_error(answer, 401, "invalid_client")


# --- 7. grant management --------------------------------------------------------------------------


def grant_items(page: Page) -> list[Any]:
    """The grants listed on the grants page (none: the list may be left out)."""
    assert page.status == 200 and not page.is_login, f"expected the grants page\n{page.describe()}"
    grants = page.by_id("grants")
    return [] if grants is None else grants.find_all("li", cls="grant")


def test_grants_page_lists_clients_and_revokes_one(provider: Provider, browser: Browser) -> None:
    first = provider.web_client("First App")
    second = provider.web_client("Second App")
    first_token = code_flow(provider, browser, first, "xmpp").token
    second_token = code_flow(provider, browser, second, "xmpp").token

    page = browser.grants_page()
    assert page.status == 200, page.describe()
    assert_page_headers(page.response, "grants page")
    items = grant_items(page)
    assert len(items) == 2, [item.text() for item in items]
    by_name = {}
    for item in items:
        names = [name for name in ("First App", "Second App") if name in item.text()]
        assert len(names) == 1, item.text()
        by_name[names[0]] = item
    assert set(by_name) == {"First App", "Second App"}

    # bob sees none of alice's grants.
    bob = provider.browser()
    bob.sign_in("bob")
    assert grant_items(bob.grants_page()) == []

    form_node = by_name["First App"].find("form")
    assert form_node is not None and urlsplit(form_node.get("action")).path == "/oauth2/grants/revoke"
    form = Form(form_node, page)
    assert {"csrf", "grant"} <= set(form.hidden()), form.hidden()
    # bob cannot revoke alice's grant, with his own session and csrf token.
    bob_csrf = next((f.hidden()["csrf"] for f in bob.grants_page().forms() if "csrf" in f.hidden()), None)
    if bob_csrf is not None:
        stolen = bob.post("/oauth2/grants/revoke", {"csrf": bob_csrf, "grant": form.hidden()["grant"]})
        assert stolen.status_code in (303, 400, 403, 404), stolen.status_code
        assert_active(provider, first, first_token["access_token"])

    answer = browser.submit(form)
    assert answer.status_code == 303 and urlsplit(answer.headers["Location"]).path == "/oauth2/grants", answer.headers
    assert_inactive(provider, first, first_token["access_token"])
    answer = provider.token_request(
        first, {"grant_type": "refresh_token", "refresh_token": first_token["refresh_token"]}
    )
    assert_oauth_error(answer, 400, "invalid_grant")
    assert_active(provider, second, second_token["access_token"])
    items = grant_items(browser.grants_page())
    assert len(items) == 1 and "Second App" in items[0].text(), [item.text() for item in items]


def test_grants_page_needs_a_login_and_logout_ends_it(provider: Provider, browser: Browser) -> None:
    page = browser.grants_page()
    assert page.status == 200 and page.is_login, page.describe()
    assert urlsplit(page.form("login").fields()["next"]).path == "/oauth2/grants"
    page = browser.follow_login(page, "alice")
    assert page.by_id("grants") is not None, page.describe()

    logout = page.form(action="/oauth2/logout")
    assert logout is not None, f"no logout form on the grants page\n{page.describe()}"
    assert "csrf" in logout.hidden()
    # Without the csrf token, nothing happens.
    assert browser.post("/oauth2/logout", {}).status_code == 403
    assert browser.grants_page().by_id("grants") is not None
    answer = browser.submit(logout)
    assert answer.status_code in (200, 303), answer.status_code
    page = browser.grants_page()
    assert page.is_login, page.describe()


# --- 8. security ----------------------------------------------------------------------------------


def test_pages_send_security_headers(provider: Provider, browser: Browser) -> None:
    client = provider.web_client()
    flow = start_code_flow(provider, client, "xmpp")
    login = browser.get(flow.url)
    assert_page_headers(login, "login page")
    consent = browser.open_consent(flow.url, "alice")
    assert consent.is_consent
    assert_page_headers(consent.response, "consent page")
    assert_page_headers(browser.get("/oauth2/grants"), "grants page")
    assert_page_headers(browser.get("/oauth2/device"), "device page")
    assert_page_headers(browser.get("/oauth2/authorize?client_id=nonsense"), "error page")
    assert_page_headers(provider.browser().get("/oauth2/grants"), "login page for grants")


def test_security_policy_option_sets_the_csp(make_provider: Callable[..., Provider]) -> None:
    provider = make_provider(oauth2_security_policy="default-src 'none'; style-src 'self'; img-src 'self' data:")
    answer = provider.browser().get("/oauth2/grants")
    directives = csp_directives(answer)
    assert directives.get("default-src") == "'none'", answer.headers
    assert directives.get("style-src") == "'self'" and directives.get("img-src") == "'self' data:", answer.headers
    assert directives.get("frame-ancestors") == "'none'", answer.headers

    framed = make_provider(oauth2_security_policy="default-src 'self'; frame-ancestors 'self'")
    directives = csp_directives(framed.browser().get("/oauth2/grants"))
    assert directives.get("frame-ancestors") == "'self'", directives


def test_token_endpoint_rate_limit(provider: Provider) -> None:
    client = provider.web_client()
    data = {"grant_type": "refresh_token", "refresh_token": "nope"}
    limited = None
    for count in range(1, 301):
        answer = provider.token_request(client, data)
        if answer.status_code == 429:
            limited = (count, answer)
            break
        assert answer.status_code == 400, answer.text
    assert limited is not None, "300 token requests in a row were never rate limited"
    count, answer = limited
    assert count > 30, f"rate limited after {count - 1} requests, before the burst of 30"
    retry_after = answer.headers.get("Retry-After", "")
    assert retry_after, answer.headers
    if retry_after.isdigit():
        assert 0 <= int(retry_after) <= 60, retry_after
    else:
        parsedate_to_datetime(retry_after)
    # Another client address (behind the trusted loopback proxy) is not limited.
    other = provider.token_request(
        client, data, headers={"X-Forwarded-For": "198.51.100.20", "X-Forwarded-Proto": "https"}
    )
    assert other.status_code == 400, other.status_code
    # The limit recovers at 10 per second.
    time.sleep(1.5)
    assert provider.token_request(client, data).status_code == 400


def test_https_required_for_non_loopback_clients(provider: Provider, browser: Browser) -> None:
    """From the trusted loopback proxy, X-Forwarded-For names a remote
    client: without X-Forwarded-Proto: https the endpoints refuse plain HTTP."""
    remote = {"X-Forwarded-For": "203.0.113.9"}
    secure = dict(remote, **{"X-Forwarded-Proto": "https"})
    client = provider.web_client()

    flow = authorize_code(provider, browser, client, "xmpp")
    data = {
        "grant_type": "authorization_code",
        "code": flow.params["code"],
        "redirect_uri": client.redirect_uri,
        "code_verifier": flow.verifier,
    }
    answer = provider.token_request(client, data, headers=remote)
    assert answer.status_code in (400, 403) and "access_token" not in answer.text, answer.text
    flow = authorize_code(provider, browser, client, "xmpp")
    data.update(code=flow.params["code"], code_verifier=flow.verifier)
    answer = provider.token_request(client, data, headers=secure)
    assert answer.status_code == 200 and answer.json()["access_token"], answer.text

    url = start_code_flow(provider, client, "xmpp").url
    answer = provider.browser(remote).get(url)
    assert answer.status_code in (400, 403), answer.status_code
    assert "Location" not in answer.headers
    page = provider.browser(secure).page(url)
    assert page.status == 200 and page.is_login, page.describe()


def test_no_secrets_in_the_log(provider: Provider, browser: Browser) -> None:
    client = provider.web_client()
    flow = code_flow(provider, browser, client, "openid profile xmpp")
    refreshed = flow.session.refresh_token(provider.token_endpoint, refresh_token=flow.token["refresh_token"])
    provider.userinfo(refreshed["access_token"])
    provider.introspect(client, refreshed["access_token"])
    provider.revoke(client, refreshed["refresh_token"])
    stranger = provider.browser()
    stranger.login(stranger.page(start_code_flow(provider, client).url), "bob", "bob-wrong-Password")
    log = provider.server.log_text()
    secrets = {
        "access token": flow.token["access_token"],
        "refresh token": flow.token["refresh_token"],
        "refreshed access token": refreshed["access_token"],
        "refreshed refresh token": refreshed["refresh_token"],
        "code": flow.params["code"],
        "client secret": client.client_secret,
        "alice's password": PASSWORDS["alice"],
        "a wrong password": "bob-wrong-Password",
        "code verifier": flow.verifier,
    }
    for what, secret in secrets.items():
        assert secret not in log, f"the {what} is in the server log"


# --- 9. templates and site name -------------------------------------------------------------------

CUSTOM_LOGIN = """<!DOCTYPE html>
<html><head><title>{{ site_name }}</title></head>
<body>
<p id="marker">CUSTOM-LOGIN-TEMPLATE-5c1e</p>
<p id="site">{{ site_name }}</p>
{% if error %}<p id="error">{{ error }}</p>{% endif %}
<form id="login" method="post" action="/oauth2/login">
<input name="username" autocomplete="username">
<input name="password" type="password" autocomplete="current-password">
<input type="hidden" name="csrf" value="{{ csrf }}">
<input type="hidden" name="next" value="{{ next }}">
<button type="submit">Sign in</button>
</form>
</body></html>
"""


def test_custom_login_template(make_provider: Callable[..., Provider], tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "login.html").write_text(CUSTOM_LOGIN)
    provider = make_provider(oauth2_template_path=str(templates), site_name="Marker Site 4711")
    browser = provider.browser()
    client = provider.web_client()
    flow = start_code_flow(provider, client, "xmpp")
    page = browser.page(flow.url)
    assert page.status == 200 and page.by_id("marker") is not None, page.describe()
    assert page.by_id("site").text() == "Marker Site 4711", page.describe()
    assert_page_headers(page.response, "custom login page")
    wrong = Page(browser.login(page, "alice", "wrong"))
    assert wrong.status == 401 and wrong.by_id("marker") is not None and wrong.by_id("error") is not None
    # The other pages are still the built-in ones, and the login works.
    consent = browser.follow_login(wrong, "alice")
    assert consent.is_consent, consent.describe()
    answer = browser.decide(consent, "allow")
    assert answer.status_code == 303 and "code=" in answer.headers["Location"]


def test_site_name_is_shown_on_the_pages(make_provider: Callable[..., Provider]) -> None:
    provider = make_provider(site_name="Jackdaw Test Site 42")
    page = provider.browser().page("/oauth2/grants")
    assert page.is_login and "Jackdaw Test Site 42" in page.text(), page.describe()
    default = make_provider()
    page = default.browser().page("/oauth2/grants")
    assert "localhost" in page.text(), page.describe()


def test_terms_and_policy_urls_are_advertised(make_provider: Callable[..., Provider]) -> None:
    provider = make_provider(
        oauth2_terms_url="https://example.org/terms", oauth2_policy_url="https://example.org/policy"
    )
    metadata = provider.metadata()
    assert metadata.get("op_tos_uri") == "https://example.org/terms", metadata
    assert metadata.get("op_policy_uri") == "https://example.org/policy", metadata
    page = provider.browser().page("/oauth2/grants")
    hrefs = {node.get("href") for node in page.root.find_all("a")}
    assert {"https://example.org/terms", "https://example.org/policy"} <= hrefs, page.describe()


def test_native_client_uri_shown_on_consent(provider: Provider, browser: Browser) -> None:
    client = provider.native_client("Native Consent App", [OOB])
    page = browser.open_consent(start_code_flow(provider, client, "openid xmpp").url, "alice")
    assert page.is_consent and "Native Consent App" in page.text(), page.describe()
    assert NATIVE_CLIENT_URI.rstrip("/") in page.text(), page.describe()
    assert len(page.by_id("scopes").find_all("li")) == 2


# --- more: scopes, binding to the client, lifetimes, keys -----------------------------------------


def test_refresh_cannot_widen_the_scope(provider: Provider, browser: Browser) -> None:
    """RFC 6749 §6: a refresh request must not ask for a scope not originally granted."""
    client = provider.web_client()
    flow = code_flow(provider, browser, client, "xmpp")
    answer = provider.token_request(
        client,
        {"grant_type": "refresh_token", "refresh_token": flow.token["refresh_token"], "scope": "xmpp openid"},
    )
    assert_oauth_error(answer, 400, "invalid_scope")


def test_codes_and_refresh_tokens_are_bound_to_their_client(provider: Provider, browser: Browser) -> None:
    """RFC 6749 §4.1.3 and §6: the code and the refresh token only work for
    the client they were issued to."""
    owner = provider.web_client("Owner")
    thief = provider.web_client("Thief")
    flow = authorize_code(provider, browser, owner, "xmpp")
    data = {
        "grant_type": "authorization_code",
        "code": flow.params["code"],
        "redirect_uri": WEB_REDIRECT,
        "code_verifier": flow.verifier,
    }
    assert_oauth_error(provider.token_request(thief, data), 400, "invalid_grant")

    flow = code_flow(provider, browser, owner, "xmpp")
    answer = provider.token_request(
        thief, {"grant_type": "refresh_token", "refresh_token": flow.token["refresh_token"]}
    )
    assert_oauth_error(answer, 400, "invalid_grant")
    assert_inactive(provider, thief, flow.token["access_token"])
    # An access token is no refresh token.
    answer = provider.token_request(owner, {"grant_type": "refresh_token", "refresh_token": flow.token["access_token"]})
    assert_oauth_error(answer, 400, "invalid_grant")


def granted_scope(provider: Provider, client: Registered, scope: str | None, user: str = "alice") -> set[str]:
    flow = code_flow(provider, provider.browser(), client, scope, user)
    scopes = set(flow.token["scope"].split())
    assert set(assert_active(provider, client, flow.token["access_token"])["scope"].split()) == scopes
    return scopes


def test_default_scopes(provider: Provider) -> None:
    """docs/oauth2.md: no scope in the request → the client's registered scope, or xmpp."""
    assert granted_scope(provider, provider.web_client("No Scope"), None) == {"xmpp"}
    registered = provider.web_client("Registered Scope", scope="openid xmpp")
    assert granted_scope(provider, registered, None) == {"openid", "xmpp"}


def test_role_scopes_follow_admins(make_provider: Callable[..., Provider]) -> None:
    """jackdaw:admin only for accounts in admins; scopes a user may not have are dropped."""
    provider = make_provider(admins=[ALICE])
    client = provider.web_client()
    wanted = "xmpp jackdaw:user jackdaw:admin"
    assert granted_scope(provider, client, wanted, "alice") == {"xmpp", "jackdaw:user", "jackdaw:admin"}
    assert granted_scope(provider, client, wanted, "bob") == {"xmpp", "jackdaw:user"}


def test_refresh_tokens_expire_and_each_refresh_gives_a_fresh_lifetime(make_provider: Callable[..., Provider]):
    provider = make_provider(oauth2_refresh_token_ttl=3)
    client = provider.web_client()
    flow = code_flow(provider, provider.browser(), client, "xmpp")

    def refresh(token: str) -> requests.Response:
        return provider.token_request(client, {"grant_type": "refresh_token", "refresh_token": token})

    time.sleep(2)
    answer = refresh(flow.token["refresh_token"])
    assert answer.status_code == 200, answer.text
    second = answer.json()["refresh_token"]
    time.sleep(2)  # 4 s after the grant, 2 s after the refresh
    answer = refresh(second)
    assert answer.status_code == 200, f"the refreshed token did not get a fresh lifetime: {answer.text}"
    third = answer.json()["refresh_token"]
    time.sleep(4.5)
    assert_oauth_error(refresh(third), 400, "invalid_grant")


def test_registration_ttl(make_provider: Callable[..., Provider]) -> None:
    provider = make_provider(oauth2_registration_ttl=2)
    browser = provider.browser()
    client = provider.web_client()
    issued, expires = client["client_id_issued_at"], client["client_secret_expires_at"]
    assert 1 <= expires - issued <= 3, client.info
    flow = authorize_code(provider, browser, client, "xmpp")
    time.sleep(3.5)
    data = {
        "grant_type": "authorization_code",
        "code": flow.params["code"],
        "redirect_uri": client.redirect_uri,
        "code_verifier": flow.verifier,
    }
    assert_oauth_error(provider.token_request(client, data), 401, "invalid_client")
    assert_error_page(browser.get(start_code_flow(provider, client, "xmpp").url))


def test_changing_the_registration_key_invalidates_clients(provider: Provider, browser: Browser) -> None:
    client = provider.web_client()
    flow = code_flow(provider, browser, client, "xmpp")
    server = provider.server
    server.stop()
    server.host_options["oauth2_registration_key"] = "a-completely-different-key-9876543210"
    server.write_config()
    server.start()
    provider = Provider(server)
    answer = provider.token_request(
        client, {"grant_type": "refresh_token", "refresh_token": flow.token["refresh_token"]}
    )
    assert_oauth_error(answer, 401, "invalid_client")
    assert_error_page(provider.browser().get(start_code_flow(provider, client, "xmpp").url))
    # New registrations work with the new key.
    fresh = provider.web_client("Fresh")
    assert code_flow(provider, provider.browser(), fresh, "xmpp").token["access_token"]


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_registration_algorithm_option(make_provider: Callable[..., Provider], algorithm: str) -> None:
    provider = make_provider(oauth2_registration_algorithm=algorithm)
    client = provider.web_client()
    claims = jwt.decode(client.client_id, per_host_key())
    assert claims.header["alg"] == algorithm, claims.header
    assert code_flow(provider, provider.browser(), client, "xmpp").token["access_token"]


def test_signing_key_rotation(provider: Provider, browser: Browser) -> None:
    """`jackdaw oauth2 rotate-key`: after a restart, new id_tokens are signed
    with the new key and the JWKS publishes both."""
    client = provider.web_client()
    first = code_flow(provider, browser, client, "openid xmpp").token["id_token"]
    old_claims = provider.verify_id_token(first, client.client_id)
    server = provider.server
    server.stop()
    result = server.cli("oauth2", "rotate-key")
    assert result.returncode == 0, result.stdout + result.stderr
    server.start()
    provider = Provider(server)
    keys = provider.jwks()["keys"]
    assert len(keys) == 4, keys  # an ES256 and an RS256 key, each old and new
    kids = [key.get("kid") for key in keys]
    assert all(kids) and len(set(kids)) == 4, f"several keys need distinct kids (RFC 7517 §4.5): {keys}"
    second = code_flow(provider, provider.browser(), client, "openid xmpp").token["id_token"]
    new_claims = provider.verify_id_token(second, client.client_id)
    assert new_claims.header["kid"] != old_claims.header.get("kid"), (old_claims.header, new_claims.header)
    # The old id_token still verifies against the published keys (issuer: the new port).
    old_again = jwt.decode(first, JsonWebKey.import_key_set(provider.jwks()))
    assert old_again["sub"] == sub_of("alice")


@pytest.mark.parametrize(
    "target", ["https://evil.example.net/steal", "//evil.example.net/steal", "/\\evil.example.net/steal"]
)
def test_login_next_cannot_leave_the_site(provider: Provider, browser: Browser, target: str) -> None:
    page = browser.page("/oauth2/grants")
    assert page.is_login
    fields = page.form("login").fields()
    fields.update(username="alice", password=PASSWORDS["alice"], next=target)
    answer = browser.post("/oauth2/login", fields)
    assert answer.status_code in (303, 400), answer.status_code
    if answer.status_code == 303:
        location = urljoin(provider.base + "/oauth2/login", answer.headers["Location"].replace("\\", "/"))
        parts = urlsplit(location)
        assert f"{parts.scheme}://{parts.netloc}" == provider.base, f"login redirected off-site to {location}"


def test_tampered_consent_request_is_refused(provider: Provider, browser: Browser) -> None:
    client = provider.web_client()
    flow = start_code_flow(provider, client, "xmpp")
    consent = browser.open_consent(flow.url, "alice")
    fields = consent.form("consent").fields()
    header, payload, signature = jwt_parts(fields["request"])
    claims = json.loads(b64url_decode(payload))
    claims["scope"] = "xmpp jackdaw:admin openid"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    for request in (f"{header}.{forged_payload}.{signature}", fields["request"][:-2] + "AA", "garbage"):
        answer = browser.post("/oauth2/consent", dict(fields, request=request, decision="allow"))
        assert 400 <= answer.status_code < 500, answer.status_code
        assert "code=" not in answer.headers.get("Location", ""), answer.headers
    assert grant_items(browser.grants_page()) == []


def test_session_cookie_is_http_only(provider: Provider, browser: Browser) -> None:
    page = browser.page("/oauth2/grants")
    answer = browser.login(page, "alice")
    assert answer.status_code == 303
    cookie = next((c for c in answer.raw.headers.getlist("Set-Cookie") if c.startswith(COOKIE_NAME + "=")), None)
    assert cookie is not None, answer.headers
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert "httponly" in attributes, cookie
    assert "samesite" in attributes, cookie


def test_redirect_uri_may_be_left_out_only_with_a_single_registered_one(provider: Provider, browser: Browser) -> None:
    """RFC 6749 §3.1.2.3 and §4.1.3: with one registered redirect URI the
    request may omit it (and then so may the token request); with several it
    must name one, or the user sees an error page."""
    client = provider.web_client()
    session = provider.session(client, scope="xmpp", redirect_uri=None)
    verifier = new_code_verifier()
    url, state = session.create_authorization_url(provider.authorization_endpoint, code_verifier=verifier)
    assert "redirect_uri" not in url
    answer = browser.authorize(url)
    assert answer.status_code == 303, Page(answer).describe()
    assert strip_query(answer.headers["Location"]) == WEB_REDIRECT
    params = callback_params(answer.headers["Location"])
    assert params["state"] == state
    data = {"grant_type": "authorization_code", "code": params["code"], "code_verifier": verifier}
    answer = provider.token_request(client, data)
    assert answer.status_code == 200 and answer.json()["access_token"], answer.text

    two = provider.web_client("Two", redirect_uris=[WEB_REDIRECT, "https://app.example.com/cb2"])
    session = provider.session(two, scope="xmpp", redirect_uri=None)
    url, _state = session.create_authorization_url(provider.authorization_endpoint, code_verifier=verifier)
    assert_error_page(browser.get(url))


def test_introspection_needs_client_authentication(provider: Provider, browser: Browser) -> None:
    """RFC 7662 §2.1: the endpoint requires authorization (here: client authentication)."""
    client = provider.web_client()
    flow = code_flow(provider, browser, client, "xmpp")
    answer = provider.post("/oauth2/introspect", data={"token": flow.token["access_token"]})
    assert answer.status_code == 401 and "username" not in answer.text, answer.text
    answer = provider.token_request(
        client, {"token": flow.token["access_token"]}, path="/oauth2/introspect", secret="wrong-" + random_text()
    )
    assert answer.status_code == 401 and "username" not in answer.text, answer.text


def test_device_code_is_bound_to_its_client(provider: Provider, browser: Browser) -> None:
    device = provider.device_client("Right Device")
    thief = provider.device_client("Thief Device")
    grant = provider.device_authorization(device, "xmpp").json()
    page = browser.open_consent(grant["verification_uri_complete"], "alice")
    answer = browser.decide(page, "allow")
    assert answer.status_code == 200, answer.text[:2000]
    stolen = poll(provider, thief, grant["device_code"])
    assert stolen.status_code == 400 and "access_token" not in stolen.text, stolen.text
    assert error_of(stolen) in ("invalid_grant", "invalid_request"), stolen.text
    time.sleep(grant["interval"] + 0.5)
    answer = poll(provider, device, grant["device_code"])
    assert answer.status_code == 200 and answer.json()["access_token"], answer.text


def test_a_consent_request_is_bound_to_the_user_it_was_shown_to(provider: Provider, browser: Browser) -> None:
    """bob submitting the consent request shown to alice (with his own csrf
    token) gets no access to alice's account."""
    client = provider.web_client()
    flow = start_code_flow(provider, client, "xmpp")
    alices = browser.open_consent(flow.url, "alice").form("consent").fields()
    bob = provider.browser()
    bobs = bob.open_consent(start_code_flow(provider, client, "xmpp").url, "bob").form("consent").fields()
    answer = bob.post("/oauth2/consent", dict(alices, csrf=bobs["csrf"], decision="allow"))
    if answer.status_code == 303 and "code" in callback_params(answer.headers["Location"]):
        code = callback_params(answer.headers["Location"])["code"]
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": client.redirect_uri,
            "code_verifier": flow.verifier,
        }
        token = provider.token_request(client, data)
        if token.status_code == 200:
            info = provider.introspect(client, token.json()["access_token"])
            assert info.get("username") == "bob", f"bob's consent gave access to {info.get('username')}: {info}"
    else:
        assert 400 <= answer.status_code < 500, answer.status_code
    assert grant_items(browser.grants_page()) == [], "alice has a grant she never allowed"


def test_device_endpoint_rate_limit(provider: Provider) -> None:
    client = provider.device_client()
    count, answer = 0, None
    while count < 300:
        count += 1
        answer = provider.device_authorization(client, "xmpp")
        if answer.status_code == 429:
            break
        assert answer.status_code == 200, answer.text
    assert answer is not None and answer.status_code == 429, "300 device requests in a row were never rate limited"
    assert count > 30, f"rate limited after {count - 1} requests, before the burst of 30"
    assert answer.headers.get("Retry-After"), answer.headers


def test_https_required_on_every_endpoint_for_non_loopback_clients(provider: Provider, browser: Browser) -> None:
    client = provider.web_client()
    flow = code_flow(provider, browser, client, "openid xmpp")
    access = flow.token["access_token"]
    remote = {"X-Forwarded-For": "203.0.113.9"}
    basic = (client.client_id, client.client_secret)
    requests_to_make = [
        ("post", "/oauth2/register", {"json": Provider.web_metadata()}),
        ("post", "/oauth2/introspect", {"data": {"token": access}, "auth": basic}),
        ("post", "/oauth2/revoke", {"data": {"token": access}, "auth": basic}),
        ("get", "/oauth2/userinfo", {"headers": {"Authorization": f"Bearer {access}"}}),
        ("post", "/oauth2/device", {"data": {"scope": "xmpp"}, "auth": basic}),
        ("get", "/oauth2/grants", {}),
        ("post", "/oauth2/login", {"data": {"username": "alice", "password": PASSWORDS["alice"]}}),
    ]
    for method, path, kwargs in requests_to_make:
        headers = dict(remote, **kwargs.pop("headers", {}))
        answer = getattr(provider.http, method)(
            provider.url(path), headers=headers, timeout=10, allow_redirects=False, **kwargs
        )
        assert answer.status_code in (400, 403), f"{method.upper()} {path}: {answer.status_code} {answer.text[:300]}"
        assert "Set-Cookie" not in answer.headers or path != "/oauth2/login", answer.headers
    assert_active(provider, client, access)  # the refused revocation did nothing


# --- OpenID Connect prompt and max_age; sign-in limits ---------------------------------------------


def test_prompt_none(provider: Provider, browser: Browser) -> None:
    """OIDC Core §3.1.2.1/§3.1.2.6: prompt=none never shows a page (consent is
    always asked): interaction_required, signed in or not, so that a site
    cannot learn whether its visitor has a session here."""
    client = provider.web_client()
    for expected in ("interaction_required", "interaction_required"):
        flow = start_code_flow(provider, client, "openid xmpp", prompt="none")
        answer = browser.get(flow.url)
        assert answer.status_code == 303, Page(answer).describe()
        params = callback_params(answer.headers["Location"])
        assert strip_query(answer.headers["Location"]) == WEB_REDIRECT
        assert params.get("error") == expected and "code" not in params, params
        assert params.get("state") == flow.state and params.get("iss") == provider.issuer, params
        browser.sign_in("alice")


def test_prompt_login_and_max_age_ask_for_the_password_again(provider: Provider, browser: Browser) -> None:
    client = provider.web_client()
    browser.sign_in("alice")
    signed_in_at = time.time()
    flow = start_code_flow(provider, client, "openid xmpp", prompt="login")
    page = browser.page(flow.url)
    assert page.is_login, f"prompt=login did not ask for the password\n{page.describe()}"

    time.sleep(2.5)
    nonce = random_text()
    flow = start_code_flow(provider, client, "openid xmpp", max_age="1", nonce=nonce)
    page = browser.page(flow.url)
    assert page.is_login, f"max_age exceeded but no login page\n{page.describe()}"
    consent = browser.follow_login(page, "alice")
    answer = browser.decide(consent, "allow")
    flow.token = flow.session.fetch_token(
        authorization_response=answer.headers["Location"], code_verifier=flow.verifier
    )
    claims = provider.verify_id_token(flow.token["id_token"], client.client_id, "alice", nonce)
    # OIDC Core §2: auth_time is required when max_age was asked; it is the new sign-in.
    assert claims["auth_time"] >= int(signed_in_at) + 2, dict(claims)

    # Within max_age: no new login.
    flow = start_code_flow(provider, client, "openid xmpp", max_age="600")
    assert browser.page(flow.url).is_consent


def test_failed_page_sign_ins_count_against_limit_auth_max(make_server: Callable[..., JackdawServer]) -> None:
    server = make_server(options={"limit_auth_max": 2, "limit_auth_period": 60}, host_options=host_options())
    provider = Provider(server)
    browser = provider.browser()
    page = browser.page("/oauth2/grants")
    for _ in range(2):
        answer = browser.login(page, "alice", "wrong-" + random_text())
        assert answer.status_code == 401, answer.status_code
        page = Page(answer)
    answer = browser.login(page, "alice")
    assert answer.status_code != 303 and 400 <= answer.status_code < 500, answer.status_code
    assert not browser.signed_in()
