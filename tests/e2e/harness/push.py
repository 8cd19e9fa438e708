"""Push notifications (XEP-0357): an app server for the tests and the
client side of ``<enable/>`` / ``<disable/>``.

:class:`AppServer` is a slixmpp XEP-0114 component (``push.localhost``)
standing in for the app server a phone's XMPP app registers: it records
every publish IQ the user's server sends it as a :class:`Notification` and
answers each one with a result, or with an error when a test says so
(``app.answer = "error"``), as a real app server does when its push
platform rejects a device token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET, ElementBase
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from .client import DEFAULT_TIMEOUT, Client, describe
from .components import NS_COMPONENT, SECRET, ExternalComponent, add_components
from .server import JackdawServer

NS_PUSH = "urn:xmpp:push:0"
NS_SUMMARY = "urn:xmpp:push:summary"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
NS_DATA = "jabber:x:data"
#: The app server most tests register, and a second one.
PUSH = "push.localhost"
PUSH2 = "push2.localhost"


def form_values(x: ET.Element | None) -> dict[str, str]:
    """A data form's fields as ``var -> value`` (first value)."""
    if x is None:
        return {}
    values = {}
    for field in x.findall(f"{{{NS_DATA}}}field"):
        value = field.find(f"{{{NS_DATA}}}value")
        values[field.get("var", "")] = (value.text or "") if value is not None else ""
    return values


def data_form(form_type: str, **fields: str) -> ET.Element:
    """``<x xmlns='jabber:x:data' type='submit'>`` with FORM_TYPE and ``fields``."""
    x = ET.Element(f"{{{NS_DATA}}}x", {"type": "submit"})
    for var, value in (("FORM_TYPE", form_type), *fields.items()):
        field = ET.SubElement(x, f"{{{NS_DATA}}}field", {"var": var})
        ET.SubElement(field, f"{{{NS_DATA}}}value").text = value
    return x


@dataclass
class Notification:
    """One publish IQ as the app server got it."""

    sender: str  # the IQ's from: the user's bare JID
    to: str
    iq_type: str
    node: str | None
    #: The summary form (XEP-0357 §5): FORM_TYPE, message-count, ...
    summary: dict[str, str]
    summary_form_type: str | None
    #: The publish-options form given at <enable/>, or None if absent.
    publish_options: dict[str, str] | None
    text: str

    @property
    def body(self) -> str | None:
        return self.summary.get("last-message-body")

    @property
    def last_sender(self) -> str | None:
        return self.summary.get("last-message-sender")


def parse_notification(iq: ElementBase) -> Notification:
    pubsub = iq.xml.find(f"{{{NS_PUBSUB}}}pubsub")
    publish = pubsub.find(f"{{{NS_PUBSUB}}}publish") if pubsub is not None else None
    notification = (
        publish.find(f"{{{NS_PUBSUB}}}item/{{{NS_PUSH}}}notification") if publish is not None else None
    )
    summary = notification.find(f"{{{NS_DATA}}}x") if notification is not None else None
    options = pubsub.find(f"{{{NS_PUBSUB}}}publish-options") if pubsub is not None else None
    values = form_values(summary)
    return Notification(
        sender=str(iq["from"]),
        to=str(iq["to"]),
        iq_type=iq["type"],
        node=publish.get("node") if publish is not None else None,
        summary=values,
        summary_form_type=values.get("FORM_TYPE"),
        publish_options=form_values(options.find(f"{{{NS_DATA}}}x")) if options is not None else None,
        text=describe(iq),
    )


class AppServer(ExternalComponent):
    """A XEP-0357 app server as an external component of the test server.

    ``answer`` says how it answers publish IQs: ``"result"``, ``"error"``
    (``<item-not-found/>`` of type cancel), ``"wait"`` (an error of type
    wait) or ``None`` (no answer at all).
    """

    def __init__(self, server: JackdawServer, domain: str = PUSH, secret: str = SECRET, **kwargs: Any) -> None:
        super().__init__(server, domain, secret, name=f"app server {domain}", **kwargs)
        self.answer: str | None = "result"
        self.notifications: list[Notification] = []
        self._new = asyncio.Event()
        self.xmpp.register_handler(
            Callback(
                "e2e push publish",
                MatchXPath(f"{{{NS_COMPONENT}}}iq/{{{NS_PUBSUB}}}pubsub"),
                self._on_publish,
            )
        )

    def _on_publish(self, iq: ElementBase) -> None:
        if iq["type"] not in ("set", "get"):
            return
        self.notifications.append(parse_notification(iq))
        new, self._new = self._new, asyncio.Event()
        new.set()
        if self.answer == "result":
            iq.reply(clear=True).send()
        elif self.answer in ("error", "wait"):
            reply = iq.reply(clear=True)
            reply["type"] = "error"
            reply["error"]["type"] = "cancel" if self.answer == "error" else "wait"
            reply["error"]["condition"] = "item-not-found" if self.answer == "error" else "resource-constraint"
            reply.send()

    def seen(self, match: Callable[[Notification], bool] = lambda _n: True) -> list[Notification]:
        return [n for n in self.notifications if match(n)]

    async def wait_count(
        self, count: int, match: Callable[[Notification], bool] = lambda _n: True, timeout: float = DEFAULT_TIMEOUT,
        what: str = "",
    ) -> list[Notification]:
        """Until ``count`` recorded notifications match; returns them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.seen(match)) < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                got = "\n  ".join(n.text for n in self.notifications) or "(nothing)"
                raise AssertionError(
                    f"{self.name} got {len(self.seen(match))} of {count} notifications {what} "
                    f"within {timeout} s; all it got:\n  {got}"
                )
            new = self._new
            try:
                await asyncio.wait_for(new.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        return self.seen(match)

    def nodes(self) -> list[str | None]:
        return [n.node for n in self.notifications]

    def dump(self) -> str:
        return f"{self.name} got:\n  " + ("\n  ".join(n.text for n in self.notifications) or "(nothing)")


def push_server(
    make_server: Callable[..., JackdawServer],
    options: dict[str, Any] | None = None,
    host_options: dict[str, Any] | None = None,
    app_servers: tuple[str, ...] = (PUSH, PUSH2),
) -> JackdawServer:
    """A server with a component listener and ``app_servers`` configured as
    external components (secret :data:`SECRET`)."""
    settings: dict[str, Any] = {"component_ports": [0]}
    settings.update(options or {})
    server = make_server(options=settings, host_options=host_options, start=False)
    add_components(server, {domain: {"component_secret": SECRET} for domain in app_servers})
    server.start()
    return server


# --- the client side ----------------------------------------------------------------------------


def enable_element(jid: str | None, node: str | None, form: ET.Element | None = None) -> ET.Element:
    enable = ET.Element(f"{{{NS_PUSH}}}enable")
    if jid is not None:
        enable.set("jid", jid)
    if node is not None:
        enable.set("node", node)
    if form is not None:
        enable.append(form)
    return enable


def enable_xml(jid: str, node: str, iq_id: str = "push-enable", secret: str | None = None) -> str:
    """The ``<enable/>`` IQ as raw XML (for the raw socket clients)."""
    form = ""
    if secret is not None:
        form = (
            f"<x xmlns='{NS_DATA}' type='submit'>"
            f"<field var='FORM_TYPE'><value>{NS_PUBLISH_OPTIONS}</value></field>"
            f"<field var='secret'><value>{secret}</value></field></x>"
        )
    return f"<iq type='set' id='{iq_id}'><enable xmlns='{NS_PUSH}' jid='{jid}' node='{node}'>{form}</enable></iq>"


async def push_iq(client: Client, payload: ET.Element, to: str | None = None) -> ElementBase:
    """Send an IQ set with ``payload``; the reply (result or error), never raises."""
    iq = client.xmpp.make_iq_set()
    if to is not None:
        iq["to"] = to
    iq.xml.append(payload)
    try:
        return await iq.send(timeout=DEFAULT_TIMEOUT)
    except IqError as error:
        return error.iq


async def enable_push(
    client: Client, jid: str = PUSH, node: str = "node", form: ET.Element | None = None, to: str | None = None
) -> None:
    reply = await push_iq(client, enable_element(jid, node, form), to)
    assert reply["type"] == "result", f"{client.name}: <enable jid={jid!r} node={node!r}/> refused: {describe(reply)}"


async def disable_push(client: Client, jid: str = PUSH, node: str | None = None) -> None:
    disable = ET.Element(f"{{{NS_PUSH}}}disable", {"jid": jid})
    if node is not None:
        disable.set("node", node)
    reply = await push_iq(client, disable)
    assert reply["type"] == "result", f"{client.name}: <disable jid={jid!r} node={node!r}/> refused: {describe(reply)}"


def error_condition(reply: ElementBase) -> str | None:
    return reply["error"]["condition"] if reply["type"] == "error" else None
