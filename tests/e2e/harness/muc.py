"""Multi-user chat (XEP-0045, issue 7): a test server with the MUC component
``rooms.localhost`` (``module = "muc"``) and users driving it with slixmpp's
``xep_0045`` plugin and XEP-0004 forms, as a chat client does.

* :func:`configure_muc` adds ``[components."rooms.localhost"]`` (and, for
  occupants from another virtual host, ``[hosts."..."]`` tables) to a
  :class:`JackdawServer` made with ``start=False``.
* :func:`muc_client` / :func:`muc_users`: :class:`harness.client.Client` with
  the MUC plugins, online (initial presence sent) before joining rooms; a
  user of another virtual host too.
* :func:`join` joins through ``xep_0045.join_muc_wait`` (which completes on
  the self-presence and then the subject, as a real slixmpp client waits) and
  returns everything the room sent during the join, in order; it checks the
  order XEP-0045 §7.2 prescribes: the occupants already there, the
  self-presence (status 110), the history, the subject. A refusal raises
  :class:`JoinRefused` with the error presence.
* Room owner / admin / moderator actions go through the plugin
  (``get_room_config``/``set_room_config``, ``set_role``,
  ``set_affiliation``, ``get_affiliation_list``, ``destroy``, ``invite``).

Stanzas are inspected through their XML (:func:`status_codes`,
:func:`muc_item`, ...) rather than slixmpp's interfaces, which create the
elements they are asked about.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slixmpp import JID
from slixmpp.exceptions import IqError, PresenceError
from slixmpp.plugins.xep_0004 import Form
from slixmpp.xmlstream import ElementBase

from . import DOMAIN, PASSWORDS
from . import client as client_module
from .client import DEFAULT_TIMEOUT, Client, describe
from .components import add_components, toml_inline
from .server import JackdawServer

MUC = "rooms.localhost"
#: The second virtual host of the cross-host tests.
OTHER_HOST = "example.test"

NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_MUC_ADMIN = "http://jabber.org/protocol/muc#admin"
NS_MUC_OWNER = "http://jabber.org/protocol/muc#owner"
NS_ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"
NS_DATA = "jabber:x:data"
NS_DELAY = "urn:xmpp:delay"

#: slixmpp plugins of a MUC-capable client (xep_0045 pulls in xep_0004,
#: xep_0172 and xep_0203; xep_0082 formats ``since``; xep_0249 sends direct
#: invitations).
MUC_PLUGINS = ("xep_0030", "xep_0004", "xep_0045", "xep_0082", "xep_0199", "xep_0203", "xep_0249")

#: Upper bound for one join (self-presence and subject).
JOIN_TIMEOUT = 5.0
#: Upper bound for one request (IQ) to the room.
IQ_TIMEOUT = 5.0

#: The standard configuration fields (XEP-0045 §10.2 / §15.5.3) the issue asks for.
STANDARD_CONFIG_FIELDS = tuple(
    f"muc#roomconfig_{name}"
    for name in (
        "roomname",
        "roomdesc",
        "persistentroom",
        "publicroom",
        "membersonly",
        "moderatedroom",
        "passwordprotectedroom",
        "roomsecret",
        "whois",
        "maxusers",
        "historylength",
        "allowinvites",
        "changesubject",
    )
)


def room_jid(name: str) -> str:
    return f"{name}@{MUC}"


# --- configuration -------------------------------------------------------------


def hosts_toml(hosts: dict[str, dict[str, Any]]) -> str:
    text = ""
    for host, options in hosts.items():
        text += f'\n[hosts."{host}"]\n'
        text += "".join(f"{key} = {toml_inline(value)}\n" for key, value in options.items())
    return text


def configure_muc(
    server: JackdawServer,
    muc_options: dict[str, Any] | None = None,
    hosts: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Add the MUC component ``rooms.localhost`` with ``muc_options`` and any
    further virtual ``hosts`` to a server that has not started yet."""
    add_components(server, {MUC: {"module": "muc", **(muc_options or {})}})
    if hosts:
        base = server.config_text

        def config_text() -> str:
            return base() + hosts_toml(hosts)

        server.config_text = config_text  # type: ignore[method-assign]
        server.write_config()


# --- users ---------------------------------------------------------------------


def muc_client(
    server: JackdawServer,
    user: str,
    *,
    host: str = DOMAIN,
    password: str | None = None,
    resource: str | None = None,
) -> Client:
    """A :class:`Client` with the MUC plugins, for ``user@host``."""
    if password is None:
        password = PASSWORDS[user]
    if host == DOMAIN:
        return Client(server, user, password, resource=resource, plugins=MUC_PLUGINS)
    # Client builds its JID from harness.client.DOMAIN; another virtual host
    # only changes that for the construction of this one client.
    saved = client_module.DOMAIN
    client_module.DOMAIN = host
    try:
        client = Client(server, user, password, resource=resource, plugins=MUC_PLUGINS)
    finally:
        client_module.DOMAIN = saved
    client.name = f"{user}@{host}" + (f"/{resource}" if resource else "")
    return client


@contextlib.asynccontextmanager
async def muc_users(server: JackdawServer, *users: str | Client) -> AsyncIterator[list[Client]]:
    """Log in users (names, or clients from :func:`muc_client`) and send each
    one's initial presence, as a client does before joining rooms; every
    client is closed on the way out."""
    clients = [user if isinstance(user, Client) else muc_client(server, user) for user in users]
    try:
        await asyncio.gather(*(client.login() for client in clients))
        for client in clients:
            await client.go_online()
        yield clients
    finally:
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


def muc(client: Client) -> Any:
    """The client's ``xep_0045`` plugin."""
    return client.xmpp.plugin["xep_0045"]


# --- reading stanzas -------------------------------------------------------------


def user_x(stanza: ElementBase) -> Any:
    return stanza.xml.find(f"{{{NS_MUC_USER}}}x")


def status_codes(stanza: ElementBase) -> set[int]:
    """The ``<status code=.../>`` values of the stanza's muc#user ``<x/>``."""
    x = user_x(stanza)
    if x is None:
        return set()
    return {int(status.get("code", "0")) for status in x.findall(f"{{{NS_MUC_USER}}}status")}


def muc_item(stanza: ElementBase) -> dict[str, Any]:
    """The muc#user ``<item/>``: its attributes plus ``reason`` and ``actor`` (the actor's attributes)."""
    x = user_x(stanza)
    item = x.find(f"{{{NS_MUC_USER}}}item") if x is not None else None
    assert item is not None, f"no muc#user <item/> in {describe(stanza)}"
    found: dict[str, Any] = dict(item.attrib)
    reason = item.find(f"{{{NS_MUC_USER}}}reason")
    found["reason"] = reason.text if reason is not None else None
    actor = item.find(f"{{{NS_MUC_USER}}}actor")
    found["actor"] = dict(actor.attrib) if actor is not None else None
    return found


def destroy_of(stanza: ElementBase) -> dict[str, Any] | None:
    """The muc#user ``<destroy/>`` of an unavailable presence: ``jid`` and ``reason``."""
    x = user_x(stanza)
    destroy = x.find(f"{{{NS_MUC_USER}}}destroy") if x is not None else None
    if destroy is None:
        return None
    reason = destroy.find(f"{{{NS_MUC_USER}}}reason")
    return {"jid": destroy.get("jid"), "reason": reason.text if reason is not None else None}


def error_of(stanza: ElementBase) -> tuple[str, str]:
    """``(type, condition)`` of an error stanza."""
    assert stanza.xml.get("type") == "error", f"not an error: {describe(stanza)}"
    return stanza["error"]["type"], stanza["error"]["condition"]


def delay_from(stanza: ElementBase) -> str | None:
    """The ``from`` of the XEP-0203 ``<delay/>``, or None without a delay."""
    delay = stanza.xml.find(f"{{{NS_DELAY}}}delay")
    return None if delay is None else delay.get("from", "")


def subject_of(message: ElementBase) -> str | None:
    """The ``<subject/>`` text ('' for an empty one), None without a subject."""
    subject = message.xml.find("{jabber:client}subject")
    return None if subject is None else (subject.text or "")


def is_subject(stanza: ElementBase) -> bool:
    """XEP-0045 §7.2.15: a groupchat message with a ``<subject/>`` and no body."""
    return (
        stanza.xml.tag == "{jabber:client}message"
        and stanza.xml.get("type") == "groupchat"
        and subject_of(stanza) is not None
        and stanza.xml.find("{jabber:client}body") is None
    )


def kind_of(stanza: ElementBase) -> str:
    return stanza.xml.tag.rsplit("}", 1)[-1]


def summary(stanzas: list[ElementBase]) -> str:
    return "\n  ".join(describe(stanza) for stanza in stanzas) or "(nothing)"


# --- waiting for the room ----------------------------------------------------------


async def next_presence_from(
    client: Client,
    occupant: str,
    ptype: str = "available",
    codes: set[int] | frozenset[int] = frozenset(),
    timeout: float = DEFAULT_TIMEOUT,
) -> ElementBase:
    """The next presence from the occupant JID ``room/nick`` of ``ptype``
    whose status codes include ``codes``."""

    def match(presence: ElementBase) -> bool:
        kind = presence.xml.get("type") or "available"
        return str(presence["from"]) == occupant and kind == ptype and codes <= status_codes(presence)

    return await client.next("presence", match, timeout, what=f"from {occupant} of type {ptype} with codes {codes}")


async def next_groupchat(
    client: Client, occupant: str, body: str, timeout: float = DEFAULT_TIMEOUT
) -> ElementBase:
    """The next groupchat message with ``body`` from the occupant JID ``room/nick``."""

    def match(message: ElementBase) -> bool:
        return (
            message.xml.get("type") == "groupchat"
            and str(message["from"]) == occupant
            and message["body"] == body
            and delay_from(message) is None
        )

    return await client.next("message", match, timeout, what=f"(groupchat from {occupant}: {body!r})")


async def next_error(
    client: Client, kind: str, sender: str, timeout: float = DEFAULT_TIMEOUT
) -> ElementBase:
    """The next ``kind`` stanza of type error from ``sender`` (a full or bare JID)."""

    def match(stanza: ElementBase) -> bool:
        return stanza.xml.get("type") == "error" and (str(stanza["from"]) == sender or stanza["from"].bare == sender)

    return await client.next(kind, match, timeout, what=f"(error from {sender})")


# --- joining -------------------------------------------------------------------


@dataclass
class Joined:
    """What a user saw while joining: everything from the room in order."""

    room: str
    nick: str
    presence: ElementBase
    occupants: list[ElementBase]
    history: list[ElementBase]
    subject: ElementBase
    stanzas: list[ElementBase]

    @property
    def codes(self) -> set[int]:
        return status_codes(self.presence)

    @property
    def item(self) -> dict[str, Any]:
        return muc_item(self.presence)

    @property
    def occupant_nicks(self) -> list[str]:
        return [presence["from"].resource for presence in self.occupants]

    def occupant(self, nick: str) -> ElementBase:
        for presence in self.occupants:
            if presence["from"].resource == nick:
                return presence
        raise AssertionError(f"no presence of {nick} among the occupants sent at the join:\n  {summary(self.stanzas)}")


class JoinRefused(AssertionError):
    """The room answered the join with a presence error."""

    def __init__(self, presence: ElementBase, others: list[ElementBase]) -> None:
        self.presence = presence
        self.type, self.condition = error_of(presence)
        #: Anything else the room sent the refused user before the error.
        self.others = others
        super().__init__(f"join refused: {self.type}/{self.condition}: {describe(presence)}")


def _take(client: Client, stanzas: list[ElementBase]) -> None:
    taken = {id(stanza) for stanza in stanzas}
    client.inbox[:] = [stanza for stanza in client.inbox if id(stanza) not in taken]


async def join(
    client: Client,
    room: str,
    nick: str,
    *,
    password: str | None = None,
    maxchars: int | None = None,
    maxstanzas: int | None = None,
    seconds: int | None = None,
    since: datetime | None = None,
    timeout: float = JOIN_TIMEOUT,
) -> Joined:
    """Join ``room`` as ``nick`` with ``xep_0045.join_muc_wait``; returns what
    the room sent (taken out of the inbox) or raises :class:`JoinRefused`."""
    before = {id(stanza) for stanza in client.inbox}

    def from_room() -> list[ElementBase]:
        return [s for s in client.inbox if id(s) not in before and s["from"].bare == room]

    try:
        await muc(client).join_muc_wait(
            JID(room),
            nick,
            password=password,
            maxchars=maxchars,
            maxstanzas=maxstanzas,
            seconds=seconds,
            since=since,
            timeout=timeout,
        )
    except PresenceError:
        stanzas = from_room()
        errors = [s for s in stanzas if kind_of(s) == "presence" and s.xml.get("type") == "error"]
        assert errors, f"{client.name}: slixmpp saw a presence error the inbox lacks:\n  {summary(stanzas)}"
        _take(client, stanzas)
        raise JoinRefused(errors[0], [s for s in stanzas if s is not errors[0]]) from None
    except asyncio.TimeoutError:
        stanzas = from_room()
        problem = f"no self-presence (status 110) and no presence error carrying <x xmlns='{NS_MUC}'/>"
        if any(kind_of(s) == "presence" and s.xml.get("type") == "error" for s in stanzas):
            problem = f"a presence error without <x xmlns='{NS_MUC}'/> (slixmpp's join never ends)"
        elif any(kind_of(s) == "presence" and 110 in status_codes(s) for s in stanzas):
            problem = "a self-presence but no subject message after it (XEP-0045 §7.2.15)"
        raise AssertionError(
            f"{client.name} joining {room}/{nick}: {problem} within {timeout} s; the room sent:\n  {summary(stanzas)}"
        ) from None

    stanzas = from_room()
    own = [i for i, s in enumerate(stanzas) if kind_of(s) == "presence" and 110 in status_codes(s)]
    subjects = [i for i, s in enumerate(stanzas) if is_subject(s)]
    assert own and subjects, f"{client.name}: join completed without self-presence or subject:\n  {summary(stanzas)}"
    own_index = own[0]
    subject_index = next((i for i in subjects if i > own_index), None)
    order = f"{client.name} joining {room}/{nick} got, in this order:\n  {summary(stanzas)}"
    assert subject_index is not None, f"no subject after the self-presence: {order}"
    stanzas = stanzas[: subject_index + 1]
    before_self = stanzas[:own_index]
    between = stanzas[own_index + 1 : subject_index]
    # XEP-0045 §7.2.3: the existing occupants' presence first, the self-presence
    # last; then the history (§7.2.14), then the subject (§7.2.15).
    assert all(kind_of(s) == "presence" for s in before_self), f"not only presence before the self-presence: {order}"
    assert all(kind_of(s) == "message" for s in between), f"presence after the self-presence: {order}"
    _take(client, stanzas)
    return Joined(
        room=room,
        nick=stanzas[own_index]["from"].resource,
        presence=stanzas[own_index],
        occupants=before_self,
        history=between,
        subject=stanzas[subject_index],
        stanzas=stanzas,
    )


async def join_refused(client: Client, room: str, nick: str, **kwargs: Any) -> JoinRefused:
    """Join, expecting a refusal; returns it. The refused user must have seen
    nothing else of the room (no occupants, history or subject)."""
    try:
        joined = await join(client, room, nick, **kwargs)
    except JoinRefused as refused:
        assert not refused.others, f"{client.name} was refused but saw room data first:\n  {summary(refused.others)}"
        assert str(refused.presence["from"]) == f"{room}/{nick}", f"error not from the occupant JID: {refused}"
        return refused
    raise AssertionError(f"{client.name} joined {room} as {nick}, expected a refusal: {describe(joined.presence)}")


async def leave(client: Client, room: str, nick: str, timeout: float = DEFAULT_TIMEOUT) -> ElementBase:
    """Leave with ``xep_0045.leave_muc``; returns the self-presence of type unavailable."""
    muc(client).leave_muc(JID(room), nick)
    return await next_presence_from(client, f"{room}/{nick}", "unavailable", timeout=timeout)


# --- owners: creating and configuring ---------------------------------------------


async def room_config_form(client: Client, room: str) -> Form:
    return await muc(client).get_room_config(JID(room), timeout=IQ_TIMEOUT)


def config_var(name: str) -> str:
    return name if name.startswith(("muc#", "FORM_TYPE")) else f"muc#roomconfig_{name}"


async def configure(client: Client, room: str, values: dict[str, Any]) -> Form:
    """Fetch the room's configuration form, fill in ``values`` (short names
    like ``persistentroom`` or full ``muc#roomconfig_...`` vars; bools for
    boolean fields) and submit it. Returns the form as the room sent it."""
    form = await room_config_form(client, room)
    fields = form.get_fields()
    wanted = {config_var(name): value for name, value in values.items()}
    missing = sorted(set(wanted) - set(fields))
    assert not missing, f"the configuration form of {room} has no fields {missing}; it has {sorted(fields)}"
    received = copy.copy(form)
    form["values"] = {var: value if isinstance(value, bool) else str(value) for var, value in wanted.items()}
    await muc(client).set_room_config(JID(room), form, timeout=IQ_TIMEOUT)
    return received


async def submit_instant(client: Client, room: str) -> None:
    """XEP-0045 §10.1.2: accept the default configuration with an empty submitted form."""
    iq = client.xmpp.make_iq_set(ito=room)
    iq["mucowner_query"]["form"]["type"] = "submit"
    await iq.send(timeout=IQ_TIMEOUT)


async def create_room(
    client: Client, room: str, nick: str, config: dict[str, Any] | None = None
) -> Joined:
    """Create ``room`` (status 201) and unlock it: an instant room, or with
    ``config`` the owner's configuration form submitted with those values."""
    joined = await join(client, room, nick)
    assert 201 in joined.codes, f"{client.name}: {room} not newly created (no 201): {describe(joined.presence)}"
    if config is None:
        await submit_instant(client, room)
    else:
        await configure(client, room, config)
    return joined


# --- admins and moderators ------------------------------------------------------------


async def set_role(client: Client, room: str, nick: str, role: str, reason: str = "") -> Any:
    return await muc(client).set_role(JID(room), nick, role, reason=reason, timeout=IQ_TIMEOUT)


async def set_affiliation(client: Client, room: str, jid: str, affiliation: str, reason: str = "") -> Any:
    return await muc(client).set_affiliation(JID(room), affiliation, jid=jid, reason=reason, timeout=IQ_TIMEOUT)


async def affiliation_list(client: Client, room: str, affiliation: str) -> list[str]:
    """The bare JIDs with ``affiliation``, sorted."""
    jids = await muc(client).get_affiliation_list(JID(room), affiliation, timeout=IQ_TIMEOUT)
    return sorted(JID(jid).bare for jid in jids)


async def iq_error(request: Awaitable[Any]) -> ElementBase:
    """Await a request that must fail; returns the error IQ."""
    try:
        result = await request
    except IqError as error:
        return error.iq
    raise AssertionError(f"expected an error, the request succeeded: {result}")


# --- discovery and ping ------------------------------------------------------------------


async def disco_info(client: Client, jid: str) -> ElementBase:
    return await client.xmpp.plugin["xep_0030"].get_info(jid=jid, local=False, cached=False, timeout=IQ_TIMEOUT)


def features(info: ElementBase) -> set[str]:
    return set(info["disco_info"]["features"])


def identities(info: ElementBase) -> set[tuple[str, str]]:
    return {(identity[0], identity[1]) for identity in info["disco_info"]["identities"]}


def identity_names(info: ElementBase) -> set[str | None]:
    # slixmpp's identity tuples are (category, type, xml:lang, name).
    return {identity[3] for identity in info["disco_info"]["identities"]}


async def disco_items(client: Client, jid: str) -> dict[str, str | None]:
    """``{jid: name}`` of the items of ``jid``."""
    iq = await client.xmpp.plugin["xep_0030"].get_items(jid=jid, timeout=IQ_TIMEOUT)
    return {str(item[0]): item[2] for item in iq["disco_items"]["items"]}


async def ping(client: Client, jid: str) -> ElementBase:
    """A XEP-0199 ping to ``jid``; returns the result or the error IQ."""
    try:
        return await client.xmpp.plugin["xep_0199"].send_ping(jid, timeout=IQ_TIMEOUT)
    except IqError as error:
        return error.iq


async def next_subject(client: Client, sender: str, text: str, timeout: float = DEFAULT_TIMEOUT) -> ElementBase:
    """The next subject change (no body) with ``text`` from ``sender`` (an occupant JID)."""

    def match(message: ElementBase) -> bool:
        return is_subject(message) and str(message["from"]) == sender and subject_of(message) == text

    return await client.next("message", match, timeout, what=f"(subject {text!r} from {sender})")


async def next_from_room(
    client: Client, room: str, kind: str = "presence", timeout: float = DEFAULT_TIMEOUT
) -> ElementBase:
    """The first ``kind`` stanza from ``room`` (or one of its occupants) in
    the inbox: successive calls give them in the order they arrived."""
    return await client.next(kind, lambda stanza: stanza["from"].bare == room, timeout, what=f"from {room}")
