"""OpenID Connect authorization request parameters (Core §3.1.2.1):
``prompt=none`` never shows a page (interaction_required, since consent is
always asked here, signed in or not), ``prompt=login`` and a passed
``max_age`` ask for the password again, then carry on with the request."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
import time
import urllib.parse as up

import pytest
import requests

from harness import PASSWORDS

REDIRECT = "https://app.example.com/cb"


@pytest.fixture
def provider(make_server):
    server = make_server(
        host_options={"modules_enabled": ["http_oauth2"], "oauth2_registration_key": "oidc-test-key-0123456789"}
    )
    base = f"http://127.0.0.1:{server.http_port}"
    client = requests.post(
        base + "/oauth2/register",
        json={"client_name": "OIDC", "client_uri": "https://app.example.com/", "redirect_uris": [REDIRECT]},
        timeout=10,
    ).json()
    verifier = secrets.token_urlsafe(40)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()

    def authorize_url(**extra: str) -> str:
        params = {
            "response_type": "code",
            "client_id": client["client_id"],
            "redirect_uri": REDIRECT,
            "scope": "openid xmpp",
            "state": "st",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **extra,
        }
        return base + "/oauth2/authorize?" + up.urlencode(params)

    return base, authorize_url


def fields(page: str, *names: str) -> dict[str, str]:
    found = {k: html.unescape(v) for k, v in re.findall(r'name="([a-z_]+)" value="([^"]*)"', page)}
    return {n: found[n] for n in names}


def sign_in(browser: requests.Session, base: str, login_page: str) -> requests.Response:
    form = fields(login_page, "csrf", "next")
    answer = browser.post(
        base + "/oauth2/login",
        data={**form, "username": "alice", "password": PASSWORDS["alice"]},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 303, answer.text
    return browser.get(base + answer.headers["location"], timeout=10)


def redirect_error(answer: requests.Response) -> str:
    assert answer.status_code == 303, answer.text
    query = up.parse_qs(up.urlparse(answer.headers["location"]).query)
    assert query["state"] == ["st"]
    return query["error"][0]


def test_prompt_none_never_shows_a_page(provider):
    base, authorize_url = provider
    browser = requests.Session()
    anonymous = browser.get(authorize_url(prompt="none"), allow_redirects=False, timeout=10)
    assert redirect_error(anonymous) == "interaction_required"
    sign_in(browser, base, browser.get(authorize_url(), timeout=10).text)
    answer = browser.get(authorize_url(prompt="none"), allow_redirects=False, timeout=10)
    assert redirect_error(answer) == "interaction_required", "the same answer: no session oracle"


def test_prompt_login_asks_again_then_continues(provider):
    base, authorize_url = provider
    browser = requests.Session()
    sign_in(browser, base, browser.get(authorize_url(), timeout=10).text)
    again = browser.get(authorize_url(prompt="login"), timeout=10)
    assert 'id="login"' in again.text, "signed in, but prompt=login asks for the password"
    assert "prompt" not in fields(again.text, "next")["next"], "no loop back to prompt=login"
    consent = sign_in(browser, base, again.text)
    assert 'id="consent"' in consent.text


def test_max_age_passed_asks_for_the_password(provider):
    base, authorize_url = provider
    browser = requests.Session()
    sign_in(browser, base, browser.get(authorize_url(), timeout=10).text)
    assert 'id="consent"' in browser.get(authorize_url(max_age="60"), timeout=10).text
    time.sleep(2.1)
    stale = browser.get(authorize_url(max_age="1"), timeout=10)
    assert 'id="login"' in stale.text
    assert 'id="consent"' in sign_in(browser, base, stale.text).text
