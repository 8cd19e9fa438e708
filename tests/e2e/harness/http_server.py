"""The threaded keep-alive HTTP server shared by the test web apps
(webapp.py, roster_webapp.py, bot_webapp.py, muc_auth_webapp.py).

It tracks open connections so ``close_connections()`` can cut Jackdaw's
pooled keep-alive connections when a test stops a web app (Jackdaw must
then see "connection refused", not a half-open socket), skips the reverse
DNS lookup of ``HTTPServer.server_bind``, and logs a client hanging up
mid-request at debug level, since Jackdaw's timeouts make that routine.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("e2e.webapp")


class TrackingServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a hung handler must not hold up stop()
    allow_reuse_address = True  # start() again on the same port right after stop()
    #: Names the web app in log lines.
    label = "web app"

    def __init__(self, address: tuple[str, int], app: Any, handler: type[BaseHTTPRequestHandler]) -> None:
        self.app = app
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look up the FQDN of the address (DNS).
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: object, client_address: object) -> None:
        log.debug("%s: connection from %s ended with %s", self.label, client_address, sys.exc_info()[1])

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class TrackingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Jackdaw's pooled client expects
    # Head and body in one segment, sent at once: no Nagle / delayed-ACK stalls.
    wbufsize = -1
    disable_nagle_algorithm = True
    server: TrackingServer

    def setup(self) -> None:
        with self.server.connections_lock:
            self.server.connections.add(self.request)
        self.before_setup()
        super().setup()

    def before_setup(self) -> None:
        """Runs once the connection is tracked, before the streams exist (a TLS handshake)."""

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.request)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # each web app logs a request once, with its outcome
