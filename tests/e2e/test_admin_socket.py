"""The running server's admin socket (``{data_path}/admin.sock``): the CLI
reaches a server running in another process, so ``jackdaw user del`` ends
the deleted account's sessions at once and ``jackdaw sessions`` lists who is
online. Only the server's user may connect (mode 0600)."""

from __future__ import annotations

import socket
import stat
import subprocess

from harness import jid_of
from harness.client import Client
from harness.scenarios import assert_pong, logged_in
from harness.server import JackdawServer


def socket_path(server: JackdawServer):
    return server.data_path / "admin.sock"


async def test_user_del_ends_the_deleted_accounts_sessions(server):
    async with logged_in(server, "alice", "bob") as (alice, bob):
        result = server.cli("user", "del", jid_of("bob"))
        assert result.returncode == 0, result.stderr
        assert "closed 1 session" in result.stdout, result.stdout
        await bob.wait_disconnected(timeout=5)
        await assert_pong(alice)
    refused = Client(server, "bob")
    try:
        await refused.login()
    except Exception:
        pass
    else:
        raise AssertionError("the deleted account could log in again")
    finally:
        await refused.close()


async def test_sessions_lists_who_is_online(server):
    async with logged_in(server, ("alice", "desk"), ("bob", "phone")):
        result = server.cli("sessions")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["alice@localhost/desk", "bob@localhost/phone"]


def test_socket_is_private_and_goes_with_the_server(make_server):
    server = make_server()
    mode = socket_path(server).stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    server.stop()
    assert not socket_path(server).exists()
    result = server.cli("sessions")
    assert result.returncode == 2 and "no running server" in result.stderr
    # Without a running server the CLI still works, and says nothing of it.
    passwd = server.cli("user", "passwd", jid_of("alice"), stdin="alice-New-1\n")
    assert passwd.returncode == 0 and "running server" not in passwd.stdout


def test_stale_socket_is_replaced_and_a_second_server_refused(make_server):
    server = make_server(start=False)
    # A server that died left its socket file behind.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(socket_path(server)))
    stale.close()
    server.start()
    assert server.cli("sessions").returncode == 0
    # A second server on the same data_path refuses to start.
    second = subprocess.run(
        [str(server.binary), "--config", str(server.config_path), "run"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode != 0
    assert "another Jackdaw running" in second.stderr or "in use" in second.stderr, second.stderr
