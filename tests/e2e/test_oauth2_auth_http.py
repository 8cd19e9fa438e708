"""OAuth sign-in on a host whose passwords live in the operator's web app
(``authentication = "http"``): the login page asks the host's
Authenticator, so it works with auth_http, and fails closed when the web
app cannot answer.
"""

from __future__ import annotations

import html
import re
import urllib.parse as up

import pytest
import requests

from harness import PASSWORDS
from harness.client import LoginFailed
from harness.oauth2 import new_code_verifier, oauthbearer_client, s256
from harness.webapp import WebApp

REDIRECT = "https://app.example.com/cb"


@pytest.fixture
def webapp():
    app = WebApp(users=dict(PASSWORDS)).start()
    yield app
    app.stop()


@pytest.fixture
def server(make_server, webapp):
    return make_server(
        options={"limit_auth_max": 1000},
        host_options={
            "authentication": "http",
            "http_auth_url": webapp.url,
            "http_auth_timeout": 2,
            "modules_enabled": ["http_oauth2"],
            "oauth2_registration_key": "auth-http-oauth-key-0123456789",
        },
        users={},
    )


def hidden(page: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert m, f"no hidden {name} in:\n{page}"
    return html.unescape(m.group(1))


def start(server):
    base = f"http://127.0.0.1:{server.http_port}"
    reg = requests.post(
        base + "/oauth2/register",
        json={"client_name": "Web App Client", "client_uri": "https://app.example.com/", "redirect_uris": [REDIRECT]},
        timeout=10,
    ).json()
    verifier = new_code_verifier()
    query = up.urlencode(
        {
            "response_type": "code",
            "client_id": reg["client_id"],
            "redirect_uri": REDIRECT,
            "scope": "xmpp",
            "state": "s",
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
        }
    )
    browser = requests.Session()
    page = browser.get(base + "/oauth2/authorize?" + query, timeout=10)
    assert page.status_code == 200 and 'id="login"' in page.text
    return base, reg, verifier, browser, page.text


def sign_in(base, browser, page, password):
    return browser.post(
        base + "/oauth2/login",
        data={"csrf": hidden(page, "csrf"), "next": hidden(page, "next"), "username": "alice", "password": password},
        allow_redirects=False,
        timeout=10,
    )


def test_login_page_checks_the_password_with_the_web_app(server, webapp):
    base, reg, verifier, browser, page = start(server)
    wrong = sign_in(base, browser, page, "not-her-password")
    assert wrong.status_code == 401 and 'id="error"' in wrong.text
    ok = sign_in(base, browser, page, PASSWORDS["alice"])
    assert ok.status_code == 303, ok.text
    consent = browser.get(base + ok.headers["location"], timeout=10)
    assert 'id="consent"' in consent.text
    done = browser.post(
        base + "/oauth2/consent",
        data={"csrf": hidden(consent.text, "csrf"), "request": hidden(consent.text, "request"), "decision": "allow"},
        allow_redirects=False,
        timeout=10,
    )
    code = up.parse_qs(up.urlparse(done.headers["location"]).query)["code"][0]
    tokens = requests.post(
        base + "/oauth2/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier},
        auth=(reg["client_id"], reg["client_secret"]),
        timeout=10,
    )
    assert tokens.status_code == 200, tokens.text
    assert webapp.requests(match=lambda r: r.path.endswith("check_password")), "the web app was asked"


def test_web_app_down_fails_closed_with_a_clear_page(server, webapp):
    base, _, _, browser, page = start(server)
    webapp.mode = "status:500"
    refused = sign_in(base, browser, page, PASSWORDS["alice"])
    assert refused.status_code == 503, refused.text
    assert "not possible right now" in refused.text
    assert "jackdaw_oauth2" not in refused.headers.get("set-cookie", ""), "no sign-in cookie"
    # The web app recovers: the same form works.
    webapp.mode = "normal"
    assert sign_in(base, browser, page, PASSWORDS["alice"]).status_code == 303


def code_flow_tokens(server, scope: str = "xmpp") -> tuple[dict, tuple[str, str]]:
    base, reg, verifier, browser, page = start(server)
    ok = sign_in(base, browser, page, PASSWORDS["alice"])
    consent = browser.get(base + ok.headers["location"], timeout=10)
    done = browser.post(
        base + "/oauth2/consent",
        data={"csrf": hidden(consent.text, "csrf"), "request": hidden(consent.text, "request"), "decision": "allow"},
        allow_redirects=False,
        timeout=10,
    )
    code = up.parse_qs(up.urlparse(done.headers["location"]).query)["code"][0]
    client = (reg["client_id"], reg["client_secret"])
    tokens = requests.post(
        base + "/oauth2/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier},
        auth=client,
        timeout=10,
    ).json()
    return tokens, client


async def test_tokens_of_an_account_removed_in_the_web_app_stop_working_regression(server, webapp):
    """The web app removes alice (no `jackdaw user del` runs): her OAuth
    tokens must not keep logging in, nor refresh for ever."""
    tokens, client = code_flow_tokens(server)
    alice = oauthbearer_client(server, "alice", tokens["access_token"])
    await alice.login()
    await alice.close()
    del webapp.users[("localhost", "alice")]
    refused = oauthbearer_client(server, "alice", tokens["access_token"])
    with pytest.raises(LoginFailed):
        await refused.login()
    await refused.close()
    base = f"http://127.0.0.1:{server.http_port}"
    refresh = requests.post(
        base + "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=client,
        timeout=10,
    )
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant", refresh.text
    assert "the account no longer exists" in server.log_text()
