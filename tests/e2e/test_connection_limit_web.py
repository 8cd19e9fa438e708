"""``c2s_max_connections`` counts every client connection, whatever carries
it: with the one slot taken by a TCP client, a WebSocket upgrade gets 503
and a BOSH session request a terminate body, each with a warning in the
log; once the slot frees, web clients get in again."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import InvalidStatus

from harness.bosh import BoshSession
from harness.raw import RawStream
from harness.websocket import WsStream, open_frame

OPTIONS = {
    "c2s_max_connections": 1,
    "c2s_timeout": 20,
    "consider_websocket_secure": True,
    "consider_bosh_secure": True,
}


def stream_header() -> bytes:
    return (
        b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
        b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    )


async def test_web_connections_count_against_c2s_max_connections_regression(make_server):
    server = make_server(options=OPTIONS)
    tcp = RawStream.connect(server.c2s_port)
    try:
        tcp.send(stream_header())
        tcp.read_stream_header(timeout=3)
        with pytest.raises(InvalidStatus) as refused:
            await WsStream.connect(server)
        assert refused.value.response.status_code == 503
        bosh = BoshSession(server)
        reply = await bosh.create()
        assert reply.terminated and reply.condition == "remote-connection-failed", reply
        log = server.log_text()
        assert "WebSocket refused: connection limit reached" in log
        assert "BOSH session refused: connection limit reached" in log
    finally:
        tcp.close()
    # The TCP client's slot frees once the server sees it go.
    for _ in range(50):
        try:
            ws = await WsStream.connect(server)
            break
        except InvalidStatus:
            await asyncio.sleep(0.1)
    else:
        raise AssertionError("no slot came free for a WebSocket after the TCP client left")
    async with ws:
        await ws.send(open_frame())
