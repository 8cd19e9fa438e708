"""slixmpp chat peer driven by the test over stdin/stdout (tests/web).

Logs in to 127.0.0.1:PORT (STARTTLS) as JID, sends initial presence and
prints ``READY`` on stdout once the session has started. Every chat or
normal message with a body is printed as ``RECEIVED {"from": ..., "body":
...}`` (one JSON object). Commands, one JSON object per stdin line:

    {"send": {"to": "alice@localhost/res", "body": "text"}}  -> prints SENT <id>
    {"quit": true}                                            -> closes the stream, exits 0

End of stdin counts as ``quit``. Exits 1 when the whole run takes longer
than ``--timeout`` seconds and 2 when it could not log in or lost the
connection. Every step is logged on stderr for the test's failure report.

    python slixmpp_chat_peer.py --jid bob@localhost --password PW --port 5222 \
        [--cafile certs/localhost.crt] [--timeout 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import ssl
import sys
import threading

import slixmpp

log = logging.getLogger("slixmpp_chat_peer")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jid", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cafile", help="trust this certificate and check the name; default: check nothing")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds the whole run may take")
    return parser.parse_args()


def tls_context(cafile: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if cafile is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cafile=cafile)
    return context


def say(line: str) -> None:
    print(line, flush=True)


class ChatPeer(slixmpp.ClientXMPP):
    def __init__(self, jid: str, password: str, cafile: str | None) -> None:
        super().__init__(jid, password)
        self.ssl_context = tls_context(cafile)
        self.enable_starttls = True
        self.enable_direct_tls = False
        self.enable_plaintext = False
        self.whitespace_keepalive = False
        self.quitting = False
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.add_event_handler("session_start", self.on_session_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("failed_all_auth", lambda _: self.finish(2, "authentication failed"))
        self.add_event_handler("stream_error", lambda error: self.finish(2, f"stream error: {error}"))
        self.add_event_handler("connection_failed", self.on_connection_failed)
        self.add_event_handler("disconnected", self.on_disconnected)

    def finish(self, code: int, why: str) -> None:
        if not self.done.done():
            log.info("finishing with %d: %s", code, why)
            self.done.set_result(code)

    def on_connection_failed(self, error: object) -> None:
        self.cancel_connection_attempt()  # slixmpp would retry forever
        self.finish(2, f"could not connect: {error}")

    def on_disconnected(self, reason: object) -> None:
        if self.quitting:
            self.finish(0, "stream closed after quit")
        else:
            self.finish(2, f"disconnected early: {reason}")

    async def on_session_start(self, _event: object) -> None:
        self.send_presence()
        log.info("session started as %s", self.boundjid)
        say("READY")

    def on_message(self, msg: slixmpp.Message) -> None:
        log.info("received: %s", str(msg).replace("\n", ""))
        if msg["type"] in ("chat", "normal") and msg["body"]:
            say("RECEIVED " + json.dumps({"from": str(msg["from"]), "body": msg["body"]}))

    async def commands(self) -> None:
        """Reads the test's commands from stdin until quit or end of input."""
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str] = asyncio.Queue()

        def read_stdin() -> None:  # a daemon thread: it never holds up the exit
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line)
            loop.call_soon_threadsafe(lines.put_nowait, "")

        threading.Thread(target=read_stdin, daemon=True).start()
        while True:
            line = await lines.get()
            if not line:
                log.info("end of stdin")
                break
            if not line.strip():
                continue
            command = json.loads(line)
            log.info("command: %s", command)
            if "send" in command:
                out = self.make_message(mto=command["send"]["to"], mbody=command["send"]["body"], mtype="chat")
                out["id"] = out["id"] or self.new_id()
                out.send()
                say(f"SENT {out['id']}")
            elif command.get("quit"):
                break
            else:
                log.error("unknown command %r", command)
        self.quitting = True
        await self.disconnect(wait=5.0)
        self.finish(0, "quit")


async def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    peer = ChatPeer(args.jid, args.password, args.cafile)
    peer.connect(host=args.host, port=args.port)
    commands = asyncio.ensure_future(peer.commands())
    try:
        code = await asyncio.wait_for(asyncio.shield(peer.done), args.timeout)
    except asyncio.TimeoutError:
        log.error("timed out after %s s", args.timeout)
        code = 1
    if not commands.done():
        commands.cancel()
        await peer.disconnect(wait=2.0)
    return code


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
