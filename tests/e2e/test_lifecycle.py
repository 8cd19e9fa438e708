"""Starting, stopping and restarting the server, as its users notice it."""

from __future__ import annotations

import json

from harness import PASSWORDS
from harness.raw import RawStream
from harness.scenarios import assert_server_still_serves


def test_listeners_file_names_bound_ports(server):
    """listeners.json names a loopback address for each listener kind."""
    listeners = json.loads(server.listeners_file.read_text())
    for kind in ("c2s", "c2s_direct_tls", "http"):
        assert listeners.get(kind), listeners
        host, port = listeners[kind][0].rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0


def test_sigterm_tells_clients_system_shutdown(server):
    """On SIGTERM every connected user gets <system-shutdown/>, and the server
    exits with code 0."""
    with RawStream.connect(server.direct_tls_port, direct_tls=True) as alice:
        alice.login_plain("alice", PASSWORDS["alice"], direct_tls=True)
        with RawStream.connect(server.c2s_port) as bob:
            bob.login_plain("bob", PASSWORDS["bob"], direct_tls=False)
            server.terminate()
            for stream in (alice, bob):
                error = stream.expect_stream_error(timeout=10)
                assert error.condition == "system-shutdown", stream.dump()
                stream.wait_closed(timeout=5)  # answer the closing tag, as a client does
            assert server.stop() == 0


def test_restart_serves_again_on_new_ports(server):
    """After a restart on the same config, users log in again."""
    server.restart()
    assert_server_still_serves(server)


def test_certificate_kept_across_restart(server):
    """The generated certificate is created once and reused, so clients
    that pinned it keep trusting the server."""
    first = server.cert_path.read_bytes()
    server.restart()
    assert server.cert_path.read_bytes() == first
