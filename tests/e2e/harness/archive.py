"""Message carbons (XEP-0280) and archive queries (XEP-0313) for the tests.

The stanzas are built with slixmpp's own plugins (xep_0280, xep_0313,
xep_0059, xep_0359, xep_0334) wherever they have an interface for it; a
query's results are taken from the client's inbox, where they arrive
before the IQ result (XEP-0313 'Query results'), and returned as a :class:`Page`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from slixmpp.plugins import xep_0082
from slixmpp.stanza import Iq
from slixmpp.xmlstream import ET, ElementBase

from .client import DEFAULT_TIMEOUT, Client

NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_SID = "urn:xmpp:sid:0"
NS_HINTS = "urn:xmpp:hints"
NS_DELAY = "urn:xmpp:delay"
NS_CLIENT = "jabber:client"
NS_DATA = "jabber:x:data"

#: The plugins a client needs for carbons and the archive.
PLUGINS = (
    "xep_0030",
    "xep_0199",
    "xep_0203",
    "xep_0297",
    "xep_0280",
    "xep_0059",
    "xep_0313",
    "xep_0359",
    "xep_0334",
)

_query_ids = itertools.count(1)


# --- carbons ------------------------------------------------------------------


async def enable_carbons(client: Client, timeout: float = DEFAULT_TIMEOUT) -> Iq:
    """``<enable xmlns='urn:xmpp:carbons:2'/>`` through slixmpp's xep_0280."""
    return await client.xmpp.plugin["xep_0280"].enable(timeout=timeout)


async def disable_carbons(client: Client, timeout: float = DEFAULT_TIMEOUT) -> Iq:
    return await client.xmpp.plugin["xep_0280"].disable(timeout=timeout)


def carbon_of(stanza: ElementBase, direction: str) -> ET.Element | None:
    """The message forwarded inside a ``<sent/>`` or ``<received/>`` carbon, if
    ``stanza`` is one."""
    return stanza.xml.find(f"{{{NS_CARBONS}}}{direction}/{{{NS_FORWARD}}}forwarded/{{{NS_CLIENT}}}message")


def body_of(message: ET.Element | None) -> str | None:
    if message is None:
        return None
    body = message.find(f"{{{NS_CLIENT}}}body")
    return None if body is None else (body.text or "")


async def next_carbon(client: Client, direction: str, body: str | None = None, **kwargs: Any) -> ElementBase:
    """The next ``direction`` ("sent" or "received") carbon, of a message with ``body``."""

    def match(stanza: ElementBase) -> bool:
        inner = carbon_of(stanza, direction)
        return inner is not None and (body is None or body_of(inner) == body)

    kwargs.setdefault("what", f"({direction} carbon of {body!r})")
    return await client.next("message", match, **kwargs)


def carbons_received(client: Client, body: str | None = None) -> list[ElementBase]:
    """Carbons of either direction already in the inbox (of a message with ``body``)."""
    return client.received(
        "message",
        lambda s: any(
            (inner := carbon_of(s, d)) is not None and (body is None or body_of(inner) == body)
            for d in ("sent", "received")
        ),
    )


def message(client: Client, to: str, body: str | None = None, mtype: str = "chat", *children: str) -> ElementBase:
    """A message from ``client`` with extra child elements given as XML text."""
    msg = client.xmpp.make_message(mto=to, mbody=body, mtype=mtype)
    for child in children:
        msg.xml.append(ET.fromstring(child))
    return msg


# --- the archive --------------------------------------------------------------


@dataclass
class Item:
    """One archived message as a query returned it."""

    id: str
    queryid: str | None
    stamp: datetime
    #: The ``<delay stamp>`` as sent (XEP-0082, with the server's precision).
    stamp_text: str
    message: ET.Element
    wrapper: ElementBase

    @property
    def body(self) -> str | None:
        return body_of(self.message)

    @property
    def sender(self) -> str:
        return self.message.get("from", "")

    @property
    def recipient(self) -> str:
        return self.message.get("to", "")


@dataclass
class Page:
    """The results of one query and its ``<fin/>``."""

    items: list[Item]
    complete: bool
    first: str | None
    first_index: int | None
    last: str | None
    count: int | None
    fin: ET.Element = field(repr=False)

    @property
    def bodies(self) -> list[str | None]:
        return [item.body for item in self.items]

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]


def build_query(
    client: Client,
    *,
    queryid: str | None = None,
    to: str | None = None,
    with_jid: str | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    before_id: str | None = None,
    after_id: str | None = None,
    ids: list[str] | None = None,
    fields: dict[str, str] | None = None,
    max_results: int | None = None,
    after: str | None = None,
    before: str | bool | None = None,
    flip: bool = False,
) -> Iq:
    """An archive query IQ built with slixmpp's xep_0313/xep_0059 stanzas.

    ``before=True`` asks for the last page (an empty ``<before/>``).
    ``fields`` adds more search fields verbatim (e.g. one the server does
    not know).
    """
    iq = client.xmpp.make_iq_set(ito=to)
    mam = iq["mam"]
    mam["queryid"] = queryid if queryid is not None else f"q{next(_query_ids)}"
    if with_jid is not None:
        mam["with"] = with_jid
    if start is not None:
        mam["start"] = start
    if end is not None:
        mam["end"] = end
    if before_id is not None:
        mam["before_id"] = before_id
    if after_id is not None:
        mam["after_id"] = after_id
    if ids is not None:
        mam._setup_form()
        mam["form"].add_field(var="ids", ftype="list-multi", value=ids)
    for var, value in (fields or {}).items():
        mam.set_custom_field(var, value)
    if max_results is not None:
        mam["rsm"]["max"] = str(max_results)
    if after is not None:
        mam["rsm"]["after"] = after
    if before is not None:
        mam["rsm"]["before"] = before
    if flip:
        ET.SubElement(mam.xml, f"{{{NS_MAM}}}flip-page")
    return iq


def page_of(client: Client, iq: Iq, result: Iq) -> Page:
    """Takes the query's ``<result/>`` messages out of the inbox; reads ``<fin/>``."""
    queryid = iq["mam"]["queryid"]
    items = []
    for stanza in client.received("message", lambda s: _result(s) is not None):
        result_el = _result(stanza)
        if result_el.get("queryid") != queryid:
            continue
        client.inbox.remove(stanza)
        forwarded = result_el.find(f"{{{NS_FORWARD}}}forwarded")
        assert forwarded is not None, f"<result/> without <forwarded/>: {stanza}"
        delay = forwarded.find(f"{{{NS_DELAY}}}delay")
        assert delay is not None, f"<forwarded/> without <delay/>: {stanza}"
        original = forwarded.find(f"{{{NS_CLIENT}}}message")
        assert original is not None, f"<forwarded/> without a message: {stanza}"
        items.append(
            Item(
                id=result_el.get("id", ""),
                queryid=result_el.get("queryid"),
                stamp=xep_0082.parse(delay.get("stamp", "")),
                stamp_text=delay.get("stamp", ""),
                message=original,
                wrapper=stanza,
            )
        )
    fin = result.xml.find(f"{{{NS_MAM}}}fin")
    assert fin is not None, f"IQ result without <fin/>: {result}"
    rsm = fin.find(f"{{{NS_RSM}}}set")
    first = last = count = first_index = None
    if rsm is not None:
        first_el = rsm.find(f"{{{NS_RSM}}}first")
        if first_el is not None:
            first = first_el.text
            if first_el.get("index") is not None:
                first_index = int(first_el.get("index"))
        last_el = rsm.find(f"{{{NS_RSM}}}last")
        last = None if last_el is None else last_el.text
        count_el = rsm.find(f"{{{NS_RSM}}}count")
        count = None if count_el is None else int(count_el.text)
    return Page(
        items=items,
        complete=fin.get("complete") in ("true", "1"),
        first=first,
        first_index=first_index,
        last=last,
        count=count,
        fin=fin,
    )


def _result(stanza: ElementBase) -> ET.Element | None:
    return stanza.xml.find(f"{{{NS_MAM}}}result")


async def query(client: Client, timeout: float = DEFAULT_TIMEOUT, **options: Any) -> Page:
    """Runs one archive query (see :func:`build_query`) and returns its page.

    Raises slixmpp's IqError when the server answers with an error.
    """
    iq = build_query(client, **options)
    result = await client.iq(iq, timeout)
    return page_of(client, iq, result)


async def query_all(client: Client, page_size: int = 50, **options: Any) -> Page:
    """Every matching message, in one page of ``page_size`` (asserted complete)."""
    page = await query(client, max_results=page_size, **options)
    assert page.complete, f"expected one complete page, got {page}"
    return page


async def get_prefs(client: Client, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """``<prefs/>`` as ``{"default": ..., "always": [...], "never": [...]}``."""
    iq = client.xmpp.make_iq_get()
    ET.SubElement(iq.xml, f"{{{NS_MAM}}}prefs")
    return prefs_of(await client.iq(iq, timeout))


async def set_prefs(
    client: Client,
    default: str,
    always: tuple[str, ...] = (),
    never: tuple[str, ...] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """Sets the preferences (XEP-0313 v0.6 <prefs/>); returns what the server answered."""
    iq = client.xmpp.make_iq_set()
    prefs = ET.SubElement(iq.xml, f"{{{NS_MAM}}}prefs", {"default": default})
    for name, jids in (("always", always), ("never", never)):
        group = ET.SubElement(prefs, f"{{{NS_MAM}}}{name}")
        for jid in jids:
            ET.SubElement(group, f"{{{NS_MAM}}}jid").text = jid
    return prefs_of(await client.iq(iq, timeout))


def prefs_of(iq: ElementBase) -> dict[str, Any]:
    prefs = iq.xml.find(f"{{{NS_MAM}}}prefs")
    assert prefs is not None, f"no <prefs/> in {iq}"
    lists = {}
    for name in ("always", "never"):
        group = prefs.find(f"{{{NS_MAM}}}{name}")
        jids = [] if group is None else [(j.text or "").strip() for j in group.findall(f"{{{NS_MAM}}}jid")]
        lists[name] = sorted(jids)
    return {"default": prefs.get("default"), **lists}


def stanza_ids(stanza: ElementBase, by: str | None = None) -> list[str]:
    """The XEP-0359 stanza-ids of a message (set by ``by``)."""
    return [
        sid.get("id", "") for sid in stanza.xml.findall(f"{{{NS_SID}}}stanza-id") if by is None or sid.get("by") == by
    ]
