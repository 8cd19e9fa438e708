"""OAuth 2.0 / OpenID Connect against Jackdaw's ``http_oauth2`` module.

* :class:`Provider`: the authorization server of one test server (its
  endpoints over plain HTTP on loopback, which the module allows for
  loopback clients): discovery, dynamic registration, raw token / revoke /
  introspect / userinfo requests, the JWKS, and authlib sessions for a
  registered client.
* :class:`Browser`: a ``requests.Session`` with cookies that drives the
  login, consent, device and grants pages as a person's browser would: it
  parses each page's forms (:class:`Page`, stdlib ``html.parser``), fills
  them in and submits them, and stops at the redirect to the client's
  ``redirect_uri`` (``allow_redirects=False``) so tests read ``code``,
  ``state`` and ``iss`` from its ``Location``.
* :func:`code_flow`: the authorization code grant with PKCE S256 end to end
  with authlib (a real OAuth client library).
* :class:`OAUTHBEARER`: the RFC 7628 SASL mechanism for slixmpp, which has
  none; importing this module registers it. Log in with
  :func:`oauthbearer_client`.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import warnings
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

# The server under test speaks plain HTTP on loopback; authlib refuses
# http:// endpoints unless told otherwise.
os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"

import requests  # noqa: E402
from authlib.common.security import generate_token  # noqa: E402
from authlib.integrations.requests_client import OAuth2Session  # noqa: E402
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # noqa: E402
from slixmpp.util.sasl.client import Mech, sasl_mech  # noqa: E402

with warnings.catch_warnings():
    # "authlib.jose is deprecated, use joserfc": it is still authlib's JOSE.
    warnings.simplefilter("ignore")
    from authlib.jose import JsonWebKey, jwt  # noqa: E402

from . import DOMAIN, PASSWORDS, jid_of  # noqa: E402
from .client import Client  # noqa: E402
from .server import JackdawServer  # noqa: E402

REGISTRATION_KEY = "test-registration-key-0123456789"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
OOB = "urn:ietf:wg:oauth:2.0:oob"
WEB_CLIENT_URI = "https://app.example.com/"
WEB_REDIRECT = "https://app.example.com/cb"
NATIVE_CLIENT_URI = "https://native.example.com/"
PRIVATE_SCHEME_REDIRECT = "com.example.app:/cb"
COOKIE_NAME = "jackdaw_oauth2"
HTTP_TIMEOUT = 15.0


def host_options(**extra: Any) -> dict[str, Any]:
    """``[hosts."localhost"]`` options enabling the module and registration."""
    options: dict[str, Any] = {"modules_enabled": ["http_oauth2"], "oauth2_registration_key": REGISTRATION_KEY}
    options.update(extra)
    return options


def sub_of(user: str) -> str:
    return f"xmpp:{jid_of(user)}"


def new_code_verifier() -> str:
    """An RFC 7636 code_verifier (43 to 128 unreserved characters)."""
    return generate_token(64)


def s256(verifier: str) -> str:
    return create_s256_code_challenge(verifier)


def callback_params(location: str) -> dict[str, str]:
    """The parameters of an authorization response: query and fragment together."""
    parts = urlsplit(location)
    params = {key: values[0] for key, values in parse_qs(parts.query).items()}
    params.update({key: values[0] for key, values in parse_qs(parts.fragment).items()})
    return params


def strip_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}:{'//' + parts.netloc if parts.netloc else ''}{parts.path}"


# --- HTML ------------------------------------------------------------------------

VOID_ELEMENTS = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr",
}  # fmt: skip


SELF_CLOSING_SIBLINGS = {"li", "p", "option", "tr", "td", "th", "dt", "dd"}
SIBLING_CONTAINERS = {"ul", "ol", "table", "tbody", "thead", "select", "dl", "div", "form", "body", "section"}


class Node:
    """An element of a parsed page: tag, attributes, children (nodes and strings)."""

    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None = None) -> None:
        self.tag = tag
        self.attrs = attrs
        self.parent = parent
        self.children: list[Node | str] = []

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.attrs.get(name, default)

    @property
    def classes(self) -> list[str]:
        return (self.attrs.get("class") or "").split()

    def iter(self):
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def text(self) -> str:
        """The text content, whitespace collapsed."""
        parts: list[str] = []

        def walk(node: Node) -> None:
            for child in node.children:
                if isinstance(child, Node):
                    walk(child)
                else:
                    parts.append(child)

        walk(self)
        return " ".join("".join(parts).split())

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Node]:
        found = []
        for node in self.iter():
            if tag is not None and node.tag != tag:
                continue
            if cls is not None and cls not in node.classes:
                continue
            if any(node.attrs.get(name) != value for name, value in attrs.items()):
                continue
            found.append(node)
        return found

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> Node | None:
        found = self.find_all(tag, cls, **attrs)
        return found[0] if found else None

    def __repr__(self) -> str:
        return f"<{self.tag} {self.attrs}>"


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in SELF_CLOSING_SIBLINGS:  # <li>a<li>b: the second <li> ends the first
            for depth in range(len(self.stack) - 1, 0, -1):
                if self.stack[depth].tag == tag:
                    del self.stack[depth:]
                    break
                if self.stack[depth].tag in SIBLING_CONTAINERS:
                    break
        node = Node(tag, {name: value if value is not None else "" for name, value in attrs}, self.stack[-1])
        self.stack[-1].children.append(node)
        if tag not in VOID_ELEMENTS:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {name: value if value is not None else "" for name, value in attrs}, self.stack[-1])
        self.stack[-1].children.append(node)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


class Form:
    """One ``<form>`` of a page."""

    def __init__(self, node: Node, page: Page) -> None:
        self.node = node
        self.page = page

    @property
    def action(self) -> str:
        return urljoin(self.page.url, self.node.get("action") or self.page.url)

    @property
    def method(self) -> str:
        return (self.node.get("method") or "get").lower()

    def fields(self) -> dict[str, str]:
        """What submitting the form sends before the user types: every named
        input (not buttons, not unchecked boxes) with its value."""
        values: dict[str, str] = {}
        for node in self.node.find_all("input"):
            name = node.get("name")
            kind = (node.get("type") or "text").lower()
            if not name or kind in ("submit", "button", "image", "reset"):
                continue
            if kind in ("checkbox", "radio") and "checked" not in node.attrs:
                continue
            values[name] = node.get("value") or ""
        for node in self.node.find_all("textarea"):
            if node.get("name"):
                values[node.get("name") or ""] = node.text()
        return values

    def hidden(self) -> dict[str, str]:
        return {
            node.get("name") or "": node.get("value") or ""
            for node in self.node.find_all("input", type="hidden")
            if node.get("name")
        }

    def input_names(self) -> set[str]:
        return {node.get("name") or "" for node in self.node.find_all("input") if node.get("name")}

    def buttons(self) -> list[Node]:
        return self.node.find_all("button") + [
            node for node in self.node.find_all("input") if (node.get("type") or "").lower() == "submit"
        ]

    def button(self, id: str) -> Node:
        for node in self.buttons():
            if node.get("id") == id:
                return node
        raise AssertionError(f"no button id={id!r} in form {self.node.attrs}: {self.buttons()}")


class Page:
    """A parsed HTML response."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self.url = response.url
        builder = _TreeBuilder()
        builder.feed(response.text)
        builder.close()
        self.root = builder.root

    @property
    def status(self) -> int:
        return self.response.status_code

    def by_id(self, id: str) -> Node | None:
        return self.root.find(id=id)

    def form(self, id: str | None = None, action: str | None = None) -> Form | None:
        for node in self.root.find_all("form"):
            if id is not None and node.get("id") != id:
                continue
            if action is not None and urlsplit(urljoin(self.url, node.get("action") or "")).path != action:
                continue
            return Form(node, self)
        return None

    def forms(self, action: str | None = None) -> list[Form]:
        forms = [Form(node, self) for node in self.root.find_all("form")]
        if action is not None:
            forms = [form for form in forms if urlsplit(form.action).path == action]
        return forms

    @property
    def is_login(self) -> bool:
        return self.form("login") is not None

    @property
    def is_consent(self) -> bool:
        return self.form("consent") is not None

    def text(self) -> str:
        return self.root.text()

    def describe(self) -> str:
        body = self.response.text
        return f"HTTP {self.status} {self.url}\n{body[:3000]}"


# --- the browser --------------------------------------------------------------------


class LoopbackCookiePolicy(DefaultCookiePolicy):
    """As browsers do, treat http://127.0.0.1 as a secure context, so a
    ``Secure`` session cookie set by the loopback server is sent back."""

    def return_ok_secure(self, cookie: Any, request: Any) -> bool:
        if cookie.secure and urlsplit(request.get_full_url()).hostname in ("127.0.0.1", "localhost", "::1"):
            return True
        return super().return_ok_secure(cookie, request)


class Browser:
    """A person's browser: cookies, forms, and no automatic redirects."""

    def __init__(self, provider: Provider, headers: dict[str, str] | None = None) -> None:
        self.provider = provider
        self.http = requests.Session()
        self.http.cookies.set_policy(LoopbackCookiePolicy())
        self.http.headers["User-Agent"] = "jackdaw-e2e-browser"
        if headers:
            self.http.headers.update(headers)

    def close(self) -> None:
        self.http.close()

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("allow_redirects", False)
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        return self.http.get(urljoin(self.provider.base, url), **kwargs)

    def post(self, url: str, data: dict[str, str], **kwargs: Any) -> requests.Response:
        kwargs.setdefault("allow_redirects", False)
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        return self.http.post(urljoin(self.provider.base, url), data=data, **kwargs)

    def page(self, url: str, **kwargs: Any) -> Page:
        return Page(self.get(url, **kwargs))

    def submit(self, form: Form, **values: str) -> requests.Response:
        data = form.fields()
        data.update(values)
        assert form.method == "post", f"form {form.node.attrs} is not method=post"
        return self.post(form.action, data)

    def signed_in(self) -> bool:
        """Whether the pages know this browser's user (the grants page is not the login page)."""
        page = self.page("/oauth2/grants")
        assert page.status == 200, page.describe()
        return not page.is_login

    def login(self, page: Page, user: str = "alice", password: str | None = None) -> requests.Response:
        """Fill in and submit the login form of ``page``; returns the answer (303 when right)."""
        form = page.form("login")
        assert form is not None, f"expected the login page\n{page.describe()}"
        assert urlsplit(form.action).path == "/oauth2/login", form.action
        assert {"username", "password", "csrf", "next"} <= form.input_names(), form.input_names()
        return self.submit(form, username=user, password=PASSWORDS[user] if password is None else password)

    def follow_login(self, page: Page, user: str = "alice", password: str | None = None) -> Page:
        """Log in on ``page`` and follow the 303 to ``next``; returns that page."""
        answer = self.login(page, user, password)
        assert answer.status_code == 303, f"login of {user} answered {answer.status_code}\n{answer.text[:2000]}"
        assert COOKIE_NAME in answer.headers.get("Set-Cookie", ""), f"no {COOKIE_NAME} cookie: {answer.headers}"
        return self.page(answer.headers["Location"])

    def sign_in(self, user: str = "alice", password: str | None = None) -> None:
        """Log in through the grants page (which needs a login)."""
        page = self.page("/oauth2/grants")
        if page.is_login:
            page = self.follow_login(page, user, password)
        assert page.status == 200 and not page.is_login, f"expected the grants page\n{page.describe()}"

    def open_consent(self, url: str, user: str = "alice", password: str | None = None) -> Page:
        """Open an authorization (or device) URL, logging in if asked; returns the page then shown."""
        page = self.page(url)
        if page.status == 200 and page.is_login:
            page = self.follow_login(page, user, password)
        return page

    def decide(self, page: Page, decision: str = "allow") -> requests.Response:
        """Press the allow or deny button of a consent page."""
        form = page.form("consent")
        assert form is not None, f"expected the consent page\n{page.describe()}"
        assert urlsplit(form.action).path == "/oauth2/consent", form.action
        button = form.button(decision)
        assert button.get("name") == "decision" and button.get("value") == decision, button
        assert {"csrf", "request"} <= set(form.hidden()), form.hidden()
        return self.submit(form, decision=decision)

    def authorize(
        self, url: str, user: str = "alice", password: str | None = None, decision: str = "allow"
    ) -> requests.Response:
        """The whole user side of an authorization request: log in if asked,
        answer the consent page if shown; returns the final answer (a 303 to
        the client, or a page)."""
        page = self.open_consent(url, user, password)
        if page.status == 200 and page.is_consent:
            return self.decide(page, decision)
        return page.response

    def grants_page(self) -> Page:
        return self.page("/oauth2/grants")


# --- the provider -------------------------------------------------------------------


@dataclass
class Registered:
    """A client as registered: the metadata we sent and the server's answer."""

    info: dict[str, Any]
    sent: dict[str, Any]

    @property
    def client_id(self) -> str:
        return self.info["client_id"]

    @property
    def client_secret(self) -> str | None:
        return self.info.get("client_secret")

    @property
    def redirect_uri(self) -> str:
        return self.sent["redirect_uris"][0]

    @property
    def name(self) -> str:
        return self.sent["client_name"]

    def __getitem__(self, key: str) -> Any:
        return self.info[key]


class Provider:
    """The OAuth 2.0 side of one running test server."""

    def __init__(self, server: JackdawServer, host: str = "127.0.0.1") -> None:
        self.server = server
        self.base = f"http://{host}:{server.http_port}"
        self.http = requests.Session()
        self._metadata: dict[str, Any] | None = None

    @property
    def issuer(self) -> str:
        return self.base

    def url(self, path: str) -> str:
        return urljoin(self.base, path)

    @property
    def authorization_endpoint(self) -> str:
        return self.url("/oauth2/authorize")

    @property
    def token_endpoint(self) -> str:
        return self.url("/oauth2/token")

    @property
    def revocation_endpoint(self) -> str:
        return self.url("/oauth2/revoke")

    @property
    def introspection_endpoint(self) -> str:
        return self.url("/oauth2/introspect")

    @property
    def userinfo_endpoint(self) -> str:
        return self.url("/oauth2/userinfo")

    @property
    def device_endpoint(self) -> str:
        return self.url("/oauth2/device")

    def browser(self, headers: dict[str, str] | None = None) -> Browser:
        return Browser(self, headers)

    # --- discovery ----------------------------------------------------------------

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        kwargs.setdefault("allow_redirects", False)
        return self.http.get(self.url(path), **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        kwargs.setdefault("allow_redirects", False)
        return self.http.post(self.url(path), **kwargs)

    def document(self, path: str) -> dict[str, Any]:
        answer = self.get(path)
        assert answer.status_code == 200, f"GET {path}: {answer.status_code} {answer.text[:500]}"
        content_type = answer.headers.get("Content-Type", "").split(";")[0].strip()
        assert content_type == "application/json" or content_type.endswith("+json"), answer.headers
        return answer.json()

    def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            self._metadata = self.document("/.well-known/oauth-authorization-server")
        return self._metadata

    def jwks(self) -> dict[str, Any]:
        return self.document("/oauth2/jwks")

    # --- registration ---------------------------------------------------------------

    def register(self, metadata: dict[str, Any] | None = None, **kwargs: Any) -> requests.Response:
        """POST /oauth2/register with ``metadata`` as JSON (or raw ``data=``/``headers=``)."""
        if metadata is not None:
            kwargs["json"] = metadata
        return self.post("/oauth2/register", **kwargs)

    def register_client(self, metadata: dict[str, Any]) -> Registered:
        answer = self.register(metadata)
        assert answer.status_code == 201, f"registration refused: {answer.status_code} {answer.text}"
        return Registered(answer.json(), metadata)

    @staticmethod
    def web_metadata(name: str = "Test Web App", **overrides: Any) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "client_name": name,
            "client_uri": WEB_CLIENT_URI,
            "redirect_uris": [WEB_REDIRECT],
        }
        metadata.update(overrides)
        return metadata

    @staticmethod
    def native_metadata(name: str = "Test Native App", redirect_uris: list[str] | None = None, **overrides: Any):
        metadata: dict[str, Any] = {
            "client_name": name,
            "client_uri": NATIVE_CLIENT_URI,
            "application_type": "native",
            "redirect_uris": redirect_uris or ["http://127.0.0.1:8123/cb"],
        }
        metadata.update(overrides)
        return metadata

    def web_client(self, name: str = "Test Web App", **overrides: Any) -> Registered:
        return self.register_client(self.web_metadata(name, **overrides))

    def native_client(self, name: str = "Test Native App", redirect_uris: list[str] | None = None, **overrides: Any):
        return self.register_client(self.native_metadata(name, redirect_uris, **overrides))

    def device_client(self, name: str = "Test Device", **overrides: Any) -> Registered:
        metadata = self.native_metadata(
            name,
            [OOB],
            grant_types=["authorization_code", DEVICE_GRANT, "refresh_token"],
            response_types=["code"],
        )
        metadata.update(overrides)
        return self.register_client(metadata)

    # --- authlib ----------------------------------------------------------------------

    def session(self, client: Registered, scope: str | None = "xmpp", **kwargs: Any) -> OAuth2Session:
        """An authlib client session for ``client`` with PKCE S256."""
        kwargs.setdefault("redirect_uri", client.redirect_uri)
        kwargs.setdefault("token_endpoint_auth_method", client.info.get("token_endpoint_auth_method"))
        return OAuth2Session(
            client_id=client.client_id,
            client_secret=client.client_secret,
            scope=scope,
            code_challenge_method="S256",
            token_endpoint=self.token_endpoint,
            default_timeout=HTTP_TIMEOUT,
            **kwargs,
        )

    # --- raw requests -----------------------------------------------------------------

    def token_request(
        self,
        client: Registered | None,
        data: dict[str, str],
        auth: str = "basic",
        headers: dict[str, str] | None = None,
        secret: str | None = None,
        path: str = "/oauth2/token",
    ) -> requests.Response:
        """A client-authenticated POST (token, revoke, introspect, device) by hand."""
        data = dict(data)
        basic = None
        if client is not None:
            password = client.client_secret if secret is None else secret
            if auth == "basic":
                basic = (client.client_id, password or "")
            elif auth == "post":
                data.update(client_id=client.client_id, client_secret=password or "")
            elif auth == "none":
                data.update(client_id=client.client_id)
        return self.post(path, data=data, auth=basic, headers=headers)

    def introspect(self, client: Registered, token: str) -> dict[str, Any]:
        answer = self.token_request(client, {"token": token}, path="/oauth2/introspect")
        assert answer.status_code == 200, f"introspection: {answer.status_code} {answer.text}"
        return answer.json()

    def revoke(self, client: Registered, token: str, hint: str | None = None) -> requests.Response:
        data = {"token": token}
        if hint:
            data["token_type_hint"] = hint
        return self.token_request(client, data, path="/oauth2/revoke")

    def userinfo(self, access_token: str) -> requests.Response:
        return self.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {access_token}"})

    def device_authorization(self, client: Registered, scope: str = "xmpp") -> requests.Response:
        return self.token_request(client, {"scope": scope}, path="/oauth2/device")

    # --- id tokens --------------------------------------------------------------------

    def verify_id_token(self, id_token: str, client_id: str, user: str = "alice", nonce: str | None = None):
        """Check an id_token's signature against /oauth2/jwks and its claims; returns the claims."""
        keys = JsonWebKey.import_key_set(self.jwks())
        options: dict[str, Any] = {
            "iss": {"essential": True, "value": self.issuer},
            "aud": {"essential": True, "value": client_id},
            "sub": {"essential": True, "value": sub_of(user)},
            "exp": {"essential": True},
            "iat": {"essential": True},
        }
        if nonce is not None:
            options["nonce"] = {"essential": True, "value": nonce}
        claims = jwt.decode(id_token, keys, claims_options=options)
        claims.validate(leeway=5)
        return claims


# --- the authorization code flow -------------------------------------------------------


@dataclass
class CodeFlow:
    """One finished (or stopped) authorization code flow."""

    session: OAuth2Session
    verifier: str
    state: str
    url: str
    answer: requests.Response | None = None
    params: dict[str, str] = field(default_factory=dict)
    token: dict[str, Any] | None = None

    @property
    def location(self) -> str:
        assert self.answer is not None
        return self.answer.headers.get("Location", "")


def start_code_flow(provider: Provider, client: Registered, scope: str | None = "xmpp", **params: Any) -> CodeFlow:
    """The client's side: an authorization URL with PKCE S256 (and ``params``, e.g. nonce)."""
    session = provider.session(client, scope=scope)
    verifier = new_code_verifier()
    url, state = session.create_authorization_url(provider.authorization_endpoint, code_verifier=verifier, **params)
    return CodeFlow(session, verifier, state, url)


def authorize_code(
    provider: Provider,
    browser: Browser,
    client: Registered,
    scope: str | None = "xmpp",
    user: str = "alice",
    **params: Any,
) -> CodeFlow:
    """Start a flow, let ``user`` log in and allow it; checks the redirect back
    (303 to the redirect_uri with code, state and iss)."""
    flow = start_code_flow(provider, client, scope, **params)
    flow.answer = browser.authorize(flow.url, user)
    assert flow.answer.status_code == 303, (
        f"expected a 303 to the client, got {flow.answer.status_code}\n{flow.answer.text[:2000]}"
    )
    flow.params = callback_params(flow.location)
    assert strip_query(flow.location) == client.redirect_uri, flow.location
    assert "code" in flow.params, f"no code in {flow.location}"
    assert flow.params.get("state") == flow.state, flow.location
    assert flow.params.get("iss") == provider.issuer, flow.location
    return flow


def code_flow(
    provider: Provider,
    browser: Browser,
    client: Registered,
    scope: str | None = "xmpp",
    user: str = "alice",
    **params: Any,
) -> CodeFlow:
    """Authorize and exchange the code for tokens with authlib."""
    flow = authorize_code(provider, browser, client, scope, user, **params)
    flow.token = dict(flow.session.fetch_token(authorization_response=flow.location, code_verifier=flow.verifier))
    return flow


def tokens_for(
    server: JackdawServer, user: str = "alice", scope: str = "xmpp", client_name: str = "Test Web App"
) -> tuple[Provider, Registered, dict[str, Any]]:
    """Register a web client and get ``user``'s tokens for ``scope``."""
    provider = Provider(server)
    client = provider.web_client(client_name)
    browser = provider.browser()
    flow = code_flow(provider, browser, client, scope, user)
    assert flow.token is not None
    return provider, client, flow.token


# --- SASL OAUTHBEARER for slixmpp ---------------------------------------------------------


def oauthbearer_initial_response(authzid: str, token: str) -> bytes:
    """RFC 7628 §3.1: GS2 header ``n,a=AUTHZID,`` then ``^Aauth=Bearer TOKEN^A^A``."""
    escaped = authzid.replace("=", "=3D").replace(",", "=2C")
    return f"n,a={escaped},\x01auth=Bearer {token}\x01\x01".encode()


@sasl_mech(40)
class OAUTHBEARER(Mech):
    """RFC 7628 OAUTHBEARER: the access token in the initial response; an
    error challenge (JSON) is answered with a lone 0x01 (§3.2.3), after which
    the server sends ``<failure/>``. Credentials: ``access_token`` in
    ``xmpp.credentials``; the authzid is the account's bare JID."""

    name = "OAUTHBEARER"
    required_credentials = {"access_token", "username", "host"}
    security = {"encrypted"}

    def setup(self, name: str) -> None:
        self.step = 0
        self.error: dict[str, Any] | None = None

    def process(self, challenge: bytes = b"") -> bytes:
        if self.step == 0:
            self.step = 1
            authzid = f"{self.credentials['username'].decode()}@{self.credentials['host'].decode()}"
            return oauthbearer_initial_response(authzid, self.credentials["access_token"].decode())
        if challenge:
            try:
                self.error = json.loads(challenge)
            except ValueError:
                self.error = {"unparsable": challenge.decode(errors="replace")}
            return b"\x01"
        return b""


def oauthbearer_client(server: JackdawServer, user: str, access_token: str, **kwargs: Any) -> Client:
    """A slixmpp client that may only use OAUTHBEARER, with a wrong password
    so that nothing but the token can log it in."""
    client = Client(server, user, password="not-the-password", mechanism="OAUTHBEARER", **kwargs)
    client.xmpp.credentials["access_token"] = access_token
    return client


def decode_b64_json(text: str | None) -> dict[str, Any]:
    return json.loads(base64.b64decode(text or ""))


def random_text(length: int = 8) -> str:
    return secrets.token_hex(length)


__all__ = [
    "DOMAIN",
    "Browser",
    "CodeFlow",
    "Page",
    "Provider",
    "Registered",
    "OAUTHBEARER",
]
