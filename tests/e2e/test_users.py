"""The operator's account commands (``jackdaw user ...``) as users feel them."""

from __future__ import annotations

import pytest

from harness import DOMAIN, PASSWORDS
from harness.client import Client, LoginFailed
from harness.scenarios import assert_login_works


def test_user_list_shows_accounts(server):
    """`user list localhost` names every account that was added."""
    listed = server.list_users(DOMAIN)
    for user in PASSWORDS:
        assert any(f"{user}@{DOMAIN}" == line or line == user for line in listed), listed


async def test_user_added_while_running_can_log_in(server):
    """An account added while the server runs can log in at once."""
    server.add_user(f"dave@{DOMAIN}", "dave-Secret-4")
    client = Client(server, "dave", password="dave-Secret-4")
    await client.login()
    await client.close()


async def test_password_change_takes_effect(server):
    """After `user passwd`, the new password works and the old one does not."""
    server.set_password(f"alice@{DOMAIN}", "alice-New-Secret")
    with pytest.raises(LoginFailed):
        await Client(server, "alice").login()
    client = Client(server, "alice", password="alice-New-Secret")
    await client.login()
    await client.close()


async def test_deleted_user_cannot_log_in(server):
    """After `user del`, the account no longer logs in nor is listed."""
    server.delete_user(f"bob@{DOMAIN}")
    with pytest.raises(LoginFailed) as refused:
        await Client(server, "bob").login()
    assert refused.value.condition == "not-authorized"
    assert not any(line.startswith("bob") for line in server.list_users(DOMAIN))
    await assert_login_works(server, "alice")
