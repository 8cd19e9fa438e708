"""Fixtures for Jackdaw's end-to-end tests.

Every test gets its own ``jackdaw`` process in its own temporary directory,
on ephemeral loopback ports, so tests run in parallel (``pytest -n 2``).
When a test fails, the report shows the server's log.

Tests may be ``async def``: :func:`pytest_pyfunc_call` runs them in a fresh
event loop, so no asyncio plugin is needed.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import PASSWORDS, jid_of
from harness.server import JackdawServer, jackdaw_binary

LOG_TAIL_LINES = 400


@pytest.fixture(scope="session")
def binary() -> Path:
    """The jackdaw binary under test; a missing binary fails every test loudly."""
    path = jackdaw_binary()
    if not path.is_file():
        pytest.fail(f"no jackdaw binary at {path}: run `cargo build --bin jackdaw` or set JACKDAW_BIN")
    return path


@pytest.fixture
def make_server(request: pytest.FixtureRequest, tmp_path: Path, binary: Path) -> Iterator[Callable[..., JackdawServer]]:
    """A factory: ``make_server(options={...}, host_options={...}, users=..., start=True)``.

    ``users`` maps user names to passwords (default: alice, bob and carol),
    added through ``jackdaw user add`` before the server starts. Each server
    is stopped with SIGTERM at teardown, which must exit with code 0.
    """
    servers: list[JackdawServer] = []
    request.node.jackdaw_servers = servers

    def make(
        options: dict[str, Any] | None = None,
        host_options: dict[str, Any] | None = None,
        users: dict[str, str] | None = None,
        start: bool = True,
    ) -> JackdawServer:
        server = JackdawServer(tmp_path / f"server{len(servers)}", options, host_options, binary)
        servers.append(server)
        for user, password in (PASSWORDS if users is None else users).items():
            server.add_user(jid_of(user), password)
        if start:
            server.start()
        return server

    yield make

    problems = []
    for server in servers:
        if server.process is None:
            continue
        try:
            server.stop()
        except AssertionError as problem:
            problems.append(str(problem))
    if problems:
        pytest.fail("; ".join(problems))


@pytest.fixture
def server(make_server: Callable[..., JackdawServer]) -> JackdawServer:
    """A running server for ``localhost`` with alice, bob and carol (see harness.PASSWORDS)."""
    return make_server()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests to completion in a new event loop."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(pyfuncitem.obj(**arguments))
    return True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Attach each server's log to the report of a failed test."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for index, server in enumerate(getattr(item, "jackdaw_servers", [])):
        lines = server.log_text().splitlines()
        shown = lines[-LOG_TAIL_LINES:]
        header = f"jackdaw log {index} ({server.log_path}"
        header += f", last {LOG_TAIL_LINES} of {len(lines)} lines)" if len(lines) > LOG_TAIL_LINES else ")"
        report.sections.append((header, "\n".join(shown)))
