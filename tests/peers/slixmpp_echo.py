"""slixmpp echo bot: the Python peer of tests/tests/tokio_xmpp_interop.rs.

Logs in to 127.0.0.1:PORT (STARTTLS) as JID, sends initial presence, prints
``READY`` on stdout once the session has started, answers the first chat
message that has a body with ``echo: <body>`` and exits 0 once the stream is
closed. Exits 1 when nothing arrived within ``--timeout`` seconds and 2 when
it could not log in. Every step is logged on stderr for the test's failure
report.

    python slixmpp_echo.py --jid bob@localhost --password PW --port 5222 \
        [--cafile certs/localhost.crt] [--timeout 30]

Without ``--cafile`` the server certificate is not checked.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import sys

import slixmpp

log = logging.getLogger("slixmpp_echo")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jid", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cafile", help="trust this certificate and check the name; default: check nothing")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for login plus one message")
    return parser.parse_args()


def tls_context(cafile: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if cafile is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cafile=cafile)
    return context


class EchoBot(slixmpp.ClientXMPP):
    def __init__(self, jid: str, password: str, cafile: str | None) -> None:
        super().__init__(jid, password)
        self.ssl_context = tls_context(cafile)
        self.enable_starttls = True
        self.enable_direct_tls = False
        self.enable_plaintext = False
        self.whitespace_keepalive = False
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.add_event_handler("session_start", self.on_session_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("failed_all_auth", lambda _: self.finish(2, "authentication failed"))
        self.add_event_handler("stream_error", lambda error: self.finish(2, f"stream error: {error}"))
        self.add_event_handler("connection_failed", self.on_connection_failed)
        self.add_event_handler("disconnected", lambda reason: self.finish(2, f"disconnected early: {reason}"))

    def finish(self, code: int, why: str) -> None:
        if not self.done.done():
            log.info("finishing with %d: %s", code, why)
            self.done.set_result(code)

    def on_connection_failed(self, error: object) -> None:
        self.cancel_connection_attempt()  # slixmpp would retry forever
        self.finish(2, f"could not connect: {error}")

    async def on_session_start(self, _event: object) -> None:
        self.send_presence()
        log.info("session started as %s", self.boundjid)
        print("READY", flush=True)

    def on_message(self, msg: slixmpp.Message) -> None:
        log.info("received: %s", str(msg).replace("\n", ""))
        if msg["type"] not in ("chat", "normal") or not msg["body"]:
            return
        msg.reply(f"echo: {msg['body']}").send()
        print(f"ECHOED {msg['from']}", flush=True)
        self.finish(0, "echoed one message")


async def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    bot = EchoBot(args.jid, args.password, args.cafile)
    bot.connect(host=args.host, port=args.port)
    try:
        code = await asyncio.wait_for(asyncio.shield(bot.done), args.timeout)
    except asyncio.TimeoutError:
        log.error("timed out after %s s", args.timeout)
        code = 1
    # Flushes the echo still in the send queue, then closes the stream.
    await bot.disconnect(wait=5.0)
    return code


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
