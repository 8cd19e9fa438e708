"""The rest of issue 3's core, as users and operators meet it: the embedded
default with no config file, the CLI, SIGHUP, failed-login limiting, RFC
6121 §8 delivery rules (priorities, negative priority, headline, groupchat,
unknown users), directed presence, unavailable after an abrupt TCP loss,
roster versioning, pre-approval, pending requests at the next login, the
offline quota, idle pings, connection limits and stream-level details.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from harness import DOMAIN, PASSWORDS
from harness.client import Client, delay_of, roster_items
from harness.raw import (
    NS_BIND,
    NS_REGISTER_FEATURE,
    NS_SASL,
    NS_STANZA_ERRORS,
    NS_STREAM,
    NS_STREAM_ERRORS,
    RawStream,
    StreamClosed,
    local_name,
    namespace,
    stream_header,
)
from harness.scenarios import (
    assert_login_works,
    assert_pong,
    assert_server_still_serves,
    logged_in,
    online_with_roster,
    subscribe_mutually,
    wait_subscription,
)
from harness.server import CLI_TIMEOUT, REPO_ROOT, START_TIMEOUT, JackdawServer, ServerError

ALICE = "alice@localhost"
BOB = "bob@localhost"
CAROL = "carol@localhost"
NS_PING = "urn:xmpp:ping"
NS_VERSION = "jabber:iq:version"
NS_ROSTER = "jabber:iq:roster"
NS_PRE_APPROVAL = "urn:xmpp:features:pre-approval"


# --- helpers ----------------------------------------------------------------------


def wait_for_log(server: JackdawServer, needle: str, after: int = 0, timeout: float = 5.0) -> str:
    """Wait until ``needle`` appears in the server's log past offset ``after``;
    returns the log from that offset."""
    deadline = time.monotonic() + timeout
    while True:
        text = server.log_text()[after:]
        if needle in text:
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} not in the server log within {timeout} s; log since then:\n{text}")
        time.sleep(0.05)


def log_size(server: JackdawServer) -> int:
    return len(server.log_text())


async def online(client: Client, priority: int | None = None, status: str | None = None) -> None:
    """Initial presence (with a priority), waiting for the server's reflection."""
    kwargs: dict[str, object] = {}
    if priority is not None:
        kwargs["ppriority"] = priority
    if status is not None:
        kwargs["pstatus"] = status
    client.send_presence(**kwargs)
    await client.next_presence(str(client.jid), "available", what="(own initial presence reflected)")


async def next_error_message(client: Client, sender: str, timeout: float = 10.0):
    """The next message of type error from ``sender`` (bare or full JID)."""

    def match(message) -> bool:
        return message["type"] == "error" and (message["from"].bare == sender or str(message["from"]) == sender)

    return await client.next("message", match, timeout=timeout, what=f"(error from {sender})")


def errors_in(client: Client) -> list:
    return client.received("message", lambda m: m["type"] == "error")


def reset_connection(stream: RawStream) -> None:
    """Drop the TCP connection with a RST: no </stream:stream>, no TLS close_notify."""
    stream.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.sock.close()
    stream.transcript.append("-- connection reset by client")


def stanza_error_condition(element: ET.Element) -> str | None:
    error = element.find("{jabber:client}error")
    if error is None:
        return None
    for child in error:
        if namespace(child.tag) == NS_STANZA_ERRORS and local_name(child.tag) != "text":
            return local_name(child.tag)
    return None


def der_of_pem_file(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def presented_certificate(port: int, direct_tls: bool) -> bytes:
    """The DER certificate a new TLS connection to ``port`` is shown."""
    with RawStream.connect(port, direct_tls=direct_tls) as stream:
        stream.connect_encrypted(direct_tls)
        return stream.ssl_object.getpeercert(binary_form=True)


def san_names(cert: Path) -> set[str]:
    decoded = ssl._ssl._test_decode_cert(str(cert))  # CPython's own PEM decoder
    return {value for kind, value in decoded.get("subjectAltName", ()) if kind == "DNS"}


def run_jackdaw(binary: Path, *args: str, cwd: Path, stdin: str = "", env: dict | None = None):
    return subprocess.run(
        [str(binary), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        cwd=cwd,
        env=env,
    )


def env_without_config() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("JACKDAW_CONFIG", None)
    env.pop("RUST_LOG", None)
    return env


# --- 1. repository skeleton ---------------------------------------------------------


def test_repository_skeleton():
    """README's first code block gives the two commands (start on the embedded
    default, run the whole suite); the licence is Apache-2.0 OR MIT with both
    texts; .ci/run runs exactly scripts/test, which runs the Rust and the
    end-to-end tests; core and modules are visible as folders."""
    readme = (REPO_ROOT / "README.md").read_text()
    first_block = re.search(r"```[a-z]*\n(.*?)```", readme, re.S)
    assert first_block, "README has no code block"
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert any(c.startswith("cargo run") for c in commands), first_block.group(1)
    assert "scripts/test" in commands, first_block.group(1)

    assert (REPO_ROOT / "LICENSE-APACHE").is_file() and (REPO_ROOT / "LICENSE-MIT").is_file()
    assert 'license = "Apache-2.0 OR MIT"' in (REPO_ROOT / "Cargo.toml").read_text()

    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec bash scripts/test\s*$", ci, re.M), ci
    assert "python3-venv" in ci, "the CI script does not install what the venv needs"
    script = (REPO_ROOT / "scripts" / "test").read_text()
    assert "cargo nextest run --workspace" in script and "pytest" in script and "slixmpp" not in ci

    for folder in ("crates/core/src/c2s", "crates/core/src/stream", "crates/core/src/sasl", "crates/storage"):
        assert (REPO_ROOT / folder).is_dir(), folder
    for module in ("roster", "presence", "disco", "offline", "ping", "version", "register"):
        assert (REPO_ROOT / "crates" / "modules" / "src" / module).is_dir(), module


# --- 2. the embedded default (binds 127.0.0.1:5222/5223/5280/5281; the only such test) -------

DEFAULT_PORTS = (5222, 5223, 5280, 5281)


def ports_free(ports: tuple[int, ...]) -> bool:
    for port in ports:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


class EmbeddedDefaultServer(JackdawServer):
    """``jackdaw`` started with no config file at all, in a fresh directory."""

    def __init__(self, workdir: Path, binary: Path) -> None:  # noqa: D107 - no config written
        self.workdir = workdir
        self.binary = binary
        self.data_path = workdir / "data"
        self.config_path = workdir / "(no config file)"
        self.log_path = workdir / "jackdaw.log"
        self.options = {}
        self.host_options = {}
        self.process = None
        self.listeners = {}
        self.starts = 0

    def write_config(self) -> None:
        raise AssertionError("the embedded default has no config file")

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self.listeners_file.unlink(missing_ok=True)
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {self.binary} (no arguments, cwd {self.workdir})\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [str(self.binary)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=env_without_config(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"jackdaw exited with code {self.process.returncode} before listening")
            if self.listeners_file.exists():
                self.listeners = json.loads(self.listeners_file.read_text())
                return
            time.sleep(0.05)
        self.kill()
        raise ServerError(f"no {self.listeners_file} within {timeout} s")

    def cli(self, *args: str, stdin: str | None = None, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
        return run_jackdaw(self.binary, *args, cwd=self.workdir, stdin=stdin or "", env=env_without_config())


async def test_embedded_default_without_config_file(request, binary, tmp_path):
    """`jackdaw` with no config file and no arguments, in an empty directory:
    ./data is created with the SQLite database in WAL mode, a self-signed
    certificate for localhost is made at ./data/certs/localhost.crt, clients
    connect on 127.0.0.1:5222 (STARTTLS) and 5223 (direct TLS), HTTP answers
    on 127.0.0.1:5280, and the start line says what it listens on, where the
    data is and how to add a user. `jackdaw user add` (no config either) adds
    a user who logs in, trusting that certificate. SIGTERM flushes the WAL
    into the database; the next start reuses the same certificate."""
    if not ports_free(DEFAULT_PORTS):
        pytest.skip("127.0.0.1:5222/5223/5280/5281 are in use on this machine")
    server = EmbeddedDefaultServer(tmp_path, binary)
    request.node.jackdaw_servers = [server]  # the report shows its log on failure
    try:
        assert not server.data_path.exists()
        server.start()
        assert server.listeners["c2s"] == ["127.0.0.1:5222"], server.listeners
        assert server.listeners["c2s_direct_tls"] == ["127.0.0.1:5223"], server.listeners
        assert server.listeners["http"] == ["127.0.0.1:5280"], server.listeners
        assert server.listeners["https"] == ["127.0.0.1:5281"], server.listeners

        started = [line for line in server.log_text().splitlines() if " started" in line]
        assert started, server.log_text()
        line = started[-1]
        for expected in ("127.0.0.1:5222", "127.0.0.1:5223", "127.0.0.1:5280", "./data", "user add alice@localhost"):
            assert expected in line, f"{expected!r} not in the start line: {line}"

        database = server.data_path / "jackdaw.sqlite"
        assert database.is_file(), list(server.data_path.iterdir())
        assert Path(f"{database}-wal").exists(), "no write-ahead log next to the database while running"
        cert = server.data_path / "certs" / "localhost.crt"
        key = server.data_path / "certs" / "localhost.key"
        assert cert.is_file() and key.is_file()
        assert "localhost" in san_names(cert)
        assert key.stat().st_mode & 0o077 == 0, "the private key is readable by others"
        first_cert = cert.read_bytes()

        added = server.cli("user", "add", ALICE, stdin=PASSWORDS["alice"] + "\n")
        assert added.returncode == 0, added.stderr
        for direct_tls in (False, True):
            client = Client(server, "alice", direct_tls=direct_tls, cafile=cert)
            await client.login()
            try:
                await assert_pong(client)
            finally:
                await client.close()
        with urllib.request.urlopen("http://127.0.0.1:5280/health", timeout=5) as response:
            assert response.status == 200 and response.read().startswith(b"ok")

        assert server.stop() == 0
        assert not Path(f"{database}-wal").exists() or Path(f"{database}-wal").stat().st_size == 0, (
            "the write-ahead log was not checkpointed at shutdown"
        )

        server.start()
        assert cert.read_bytes() == first_cert, "a new certificate was generated at the second start"
        client = Client(server, "alice", cafile=cert)
        await client.login()
        await client.close()
        assert server.stop() == 0

        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        server.kill()


# --- 3. config -----------------------------------------------------------------------


OPTION_LIST = re.compile(r"const (OPTIONS|GLOBAL_KEYS|HOST_KEYS|COMPONENT_KEYS): &\[&str\] = &\[(.*?)\];", re.S)


def option_names_in_sources() -> dict[str, str]:
    """Every option name core and the modules accept, with the file declaring it."""
    names: dict[str, str] = {}
    sources = [REPO_ROOT / "crates/core/src/config.rs", *sorted((REPO_ROOT / "crates/modules/src").rglob("*.rs"))]
    for path in sources:
        text = path.read_text()
        for match in OPTION_LIST.finditer(text):
            for name in re.findall(r'"([A-Za-z_]+)"', match.group(2)):
                names[name] = str(path.relative_to(REPO_ROOT))
    names.pop("hosts", None)  # the tables themselves
    names.pop("components", None)
    return names


def test_example_config_documents_every_option():
    """The annotated example config names every option the server accepts
    (set or commented out), so an operator can find each one there."""
    example = (REPO_ROOT / "jackdaw.example.toml").read_text()
    names = option_names_in_sources()
    assert len(names) > 40, f"found only {len(names)} option names in the sources"
    missing = {name: where for name, where in names.items() if not re.search(rf"^#?\s*{name}\s*=", example, re.M)}
    assert not missing, f"options missing from jackdaw.example.toml: {missing}"


@pytest.mark.parametrize(
    ("global_value", "host_value", "os_shown"),
    [(None, None, True), (True, None, False), (True, False, True)],
    ids=["default", "global-inherited", "host-overrides"],
)
async def test_version_hide_os_type_inherited_and_overridden(make_server, global_value, host_value, os_shown):
    """XEP-0092: the server names itself and its version, and its OS unless
    `hide_os_type`; set globally it applies to the host, and the host's own
    value wins."""
    options = {} if global_value is None else {"hide_os_type": global_value}
    host_options = {} if host_value is None else {"hide_os_type": host_value}
    server = make_server(options=options, host_options=host_options)
    async with logged_in(server, "alice") as (alice,):
        reply = await alice.xmpp.plugin["xep_0092"].get_version(DOMAIN, timeout=10)
        query = reply.xml.find(f"{{{NS_VERSION}}}query")
        assert query.findtext(f"{{{NS_VERSION}}}name") == "Jackdaw", str(reply)
        assert query.findtext(f"{{{NS_VERSION}}}version"), str(reply)
        os_element = query.find(f"{{{NS_VERSION}}}os")
        assert (os_element is not None) == os_shown, str(reply)


# --- 4. CLI ------------------------------------------------------------------------------


def test_version_flag(binary, tmp_path):
    """`jackdaw --version` prints the name and version and exits 0."""
    result = run_jackdaw(binary, "--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"jackdaw \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout


def test_cert_generate_covers_every_host(binary, tmp_path):
    """`jackdaw cert generate` writes a new self-signed certificate and key
    into the certificates directory (it says where), valid for every
    configured host, the key readable by the owner only; running it again
    replaces them."""
    data = tmp_path / "data"
    config = tmp_path / "jackdaw.toml"
    config.write_text(f'data_path = "{data}"\n\n[hosts."localhost"]\n\n[hosts."example.org"]\n')
    result = run_jackdaw(binary, "--config", str(config), "cert", "generate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = re.fullmatch(r"wrote (\S+\.crt) and (\S+\.key)\n", result.stdout)
    assert written, result.stdout
    cert, key = Path(written.group(1)), Path(written.group(2))
    assert cert.parent == data / "certs" and key.parent == data / "certs", result.stdout
    assert san_names(cert) == {"localhost", "example.org"}
    assert key.stat().st_mode & 0o077 == 0
    first = cert.read_bytes()
    again = run_jackdaw(binary, "--config", str(config), "cert", "generate", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert cert.read_bytes() != first


def test_passwords_never_taken_from_argv(server):
    """`jackdaw user add JID PASSWORD` is refused (a password on the command
    line would show in `ps`), as is an empty password on stdin; neither
    creates an account. `user list` shows only the real accounts."""
    on_argv = server.cli("user", "add", "dave@localhost", "dave-Secret-4")
    assert on_argv.returncode != 0, on_argv.stdout
    empty = server.cli("user", "add", "erin@localhost", stdin="\n")
    assert empty.returncode != 0, empty.stdout
    assert "password" in empty.stderr.lower(), empty.stderr
    assert server.list_users() == sorted(f"{user}@localhost" for user in PASSWORDS)


def scram_keys(password: str, salt: bytes, iterations: int, digest: str) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", digest).digest()
    stored_key = hashlib.new(digest, client_key).digest()
    server_key = hmac.new(salted, b"Server Key", digest).digest()
    return stored_key, server_key


async def test_only_salted_scram_keys_stored(make_server):
    """The database holds no password, in any form a login or registration
    or password change used: only, per account and hash, a salt, an
    iteration count (>= 4096) and the SCRAM StoredKey/ServerKey derived from
    the password (RFC 5802)."""
    server = make_server()
    server.set_password(ALICE, "alice-Changed-9")
    async with logged_in(server, "bob", mechanism="PLAIN") as (bob,):
        await assert_pong(bob)
    server.stop()
    passwords = {"alice": "alice-Changed-9", "bob": PASSWORDS["bob"], "carol": PASSWORDS["carol"]}
    for path in server.data_path.glob("jackdaw.sqlite*"):
        content = path.read_bytes()
        for password in [*passwords.values(), PASSWORDS["alice"]]:
            assert password.encode() not in content, f"a password in clear in {path.name}"
            assert base64.b64encode(password.encode()) not in content, f"a base64 password in {path.name}"
    database = server.data_path / "jackdaw.sqlite"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT username, hash, salt, iterations, stored_key, server_key FROM scram_credentials"
        ).fetchall()
    by_user: dict[str, set[str]] = {}
    for username, hash_name, salt, iterations, stored_key, server_key in rows:
        by_user.setdefault(username, set()).add(hash_name)
        assert len(salt) >= 16 and iterations >= 4096, (username, hash_name, len(salt), iterations)
        digest = {"SHA-1": "sha1", "SHA-256": "sha256"}[hash_name]
        assert (stored_key, server_key) == scram_keys(passwords[username], salt, iterations, digest), username
    assert by_user == {user: {"SHA-1", "SHA-256"} for user in passwords}, by_user


# --- 5. streams -------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.9", None], ids=["version-0.9", "no-version"])
def test_old_stream_version_refused(server, version):
    """A stream header with version='0.9', or with no version (which RFC 6120
    §4.7.5 reads as 0.9), gets unsupported-version."""
    version_attribute = "" if version is None else f" version='{version}'"
    header = (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        f"xmlns:stream='{NS_STREAM}' to='localhost'{version_attribute} xml:lang='en'>"
    )
    with RawStream.connect(server.c2s_port) as stream:
        stream.send(header)
        error = stream.expect_stream_error()
        assert error.condition == "unsupported-version", stream.dump()
    assert_server_still_serves(server)


RESTRICTED = {
    "processing-instruction": ("<?evil instruction?>", ("restricted-xml",)),
    "comment": ("<!-- a comment -->", ("restricted-xml",)),
    "deep-nesting": ("<message to='bob@localhost'>" + "<x xmlns='urn:example'>" * 40, ("policy-violation",)),
    "many-attributes": (
        "<message to='bob@localhost' " + " ".join(f"a{i}='v'" for i in range(100)) + "/>",
        ("policy-violation",),
    ),
}


@pytest.mark.parametrize("payload, conditions", RESTRICTED.values(), ids=RESTRICTED.keys())
def test_restricted_xml_and_structure_limits(server, payload, conditions):
    """RFC 6120 §11.1: processing instructions and comments end the stream
    with restricted-xml; elements nested 40 deep or with 100 attributes hit
    the parser's limits (policy-violation). Sent by a logged-in user."""
    with RawStream.connect(server.direct_tls_port, direct_tls=True) as stream:
        stream.login_plain("alice", PASSWORDS["alice"], direct_tls=True)
        stream.send(payload)
        error = stream.expect_stream_error()
        assert error.condition in conditions, stream.dump()
    assert_server_still_serves(server)


async def test_idle_client_pinged_then_disconnected(make_server):
    """With c2s_ping_interval = 2 and c2s_ping_timeout = 2, a logged-in
    client that stays silent receives a XEP-0199 ping from the server after
    about 2 s; if it neither answers nor sends anything, about 2 s later its
    stream ends with connection-timeout; other users are served on."""
    server = make_server(options={"c2s_ping_interval": 2, "c2s_ping_timeout": 2})
    async with logged_in(server, "alice") as (alice,):
        await online_with_roster(alice)
        stream = RawStream.connect(server.direct_tls_port, direct_tls=True)
        with stream:
            jid = await asyncio.to_thread(stream.login_plain, "carol", PASSWORDS["carol"], True, "silent")
            bound_at = time.monotonic()
            ping = await asyncio.to_thread(stream.read_element, 8)
            pinged_at = time.monotonic()
            assert ping.tag == "{jabber:client}iq" and ping.get("type") == "get", stream.dump()
            assert ping.find(f"{{{NS_PING}}}ping") is not None, stream.dump()
            assert ping.get("from") == DOMAIN and ping.get("to") == jid, stream.dump()
            assert pinged_at - bound_at >= 1.5, f"pinged after {pinged_at - bound_at:.1f} s\n{stream.dump()}"
            error = await asyncio.to_thread(stream.expect_stream_error, 8)
            assert error.condition == "connection-timeout", stream.dump()
            assert time.monotonic() - pinged_at >= 1.5, stream.dump()
            assert await asyncio.to_thread(stream.wait_closed, 5), stream.dump()
        await assert_pong(alice)


async def test_client_answering_pings_stays_connected(make_server):
    """With the same settings, slixmpp (which answers pings) is pinged at
    least twice in 5.5 s and stays connected and served."""
    server = make_server(options={"c2s_ping_interval": 2, "c2s_ping_timeout": 2})
    client = Client(server, "alice")
    pings: list[float] = []
    matcher = MatchXPath(f"{{jabber:client}}iq/{{{NS_PING}}}ping")
    client.xmpp.register_handler(Callback("count server pings", matcher, lambda _iq: pings.append(time.monotonic())))
    await client.login()
    try:
        with pytest.raises(asyncio.TimeoutError):
            await client.wait_disconnected(timeout=5.5)
        assert len(pings) >= 2, f"{len(pings)} ping(s) from the server in 5.5 s"
        await assert_pong(client)
    finally:
        await client.close()


def test_c2s_max_connections(make_server):
    """With c2s_max_connections = 2, two clients connecting to the STARTTLS
    port are both served; a third is refused at once (closed, with a warning
    in the log: never left waiting unseen); once one of the first two leaves,
    a new connection is served."""
    server = make_server(options={"c2s_max_connections": 2, "c2s_timeout": 20})
    streams = [RawStream.connect(server.c2s_port) for _ in range(2)]
    try:
        for stream in streams:
            stream.send(stream_header())
        for index in (0, 1):
            try:
                streams[index].read_stream_header(timeout=3)
            except TimeoutError:
                served = f"connection {index + 1} of the 2 allowed was not served"
                raise AssertionError(f"{served}\n{streams[index].dump()}") from None
        extra = RawStream.connect(server.c2s_port)
        streams.append(extra)
        with pytest.raises((StreamClosed, ConnectionError, OSError)):
            extra.send(stream_header())
            extra.read_stream_header(timeout=3)
        assert "connection limit reached" in server.log_text()
        streams[0].close()
        deadline = time.monotonic() + 5
        while True:
            again = RawStream.connect(server.c2s_port)
            streams.append(again)
            try:
                again.send(stream_header())
                again.read_stream_header(timeout=2)
                break
            except (StreamClosed, ConnectionError, OSError):
                # The first connection's slot frees once the server sees it close.
                assert time.monotonic() < deadline, "no slot came free after a client left"
                time.sleep(0.2)
        again.read_features()
    finally:
        for stream in streams:
            stream.close()


def test_trickling_peer_cannot_hold_a_slot(server):
    """A peer that opens a stream and then sends a space every half second,
    never authenticating, is still cut off with connection-timeout once
    c2s_timeout (3 s) has passed since it connected."""
    timeout = server.options["c2s_timeout"]
    started = time.monotonic()
    with RawStream.connect(server.c2s_port) as stream:
        stream.open()
        stream.read_features()
        element = None
        while time.monotonic() - started < timeout + 5:
            stream.send(b" ")
            try:
                element = stream.read_element(timeout=0.5)
                break
            except TimeoutError:
                continue
        assert element is not None and element.tag == f"{{{NS_STREAM}}}error", stream.dump()
        assert element.find(f"{{{NS_STREAM_ERRORS}}}connection-timeout") is not None, stream.dump()
        elapsed = time.monotonic() - started
        assert timeout - 0.5 <= elapsed <= timeout + 2, f"cut off after {elapsed:.1f} s"
    assert_server_still_serves(server)


# --- 6. authentication ---------------------------------------------------------------------


def test_failed_logins_limited_per_address(make_server):
    """limit_auth_max = 2, limit_auth_period = 3: after two wrong passwords
    from 127.0.0.1 every login from that address, even with the right
    password and for another account, gets temporary-auth-failure with a
    text; once the period has passed, the right password works again."""
    server = make_server(options={"limit_auth_max": 2, "limit_auth_period": 3})
    first_failure = time.monotonic()
    with RawStream.connect(server.direct_tls_port, direct_tls=True) as stream:
        stream.connect_encrypted(direct_tls=True)
        for _ in range(2):
            outcome = stream.auth_plain("alice", "guessed-password")
            assert not outcome.success and outcome.condition == "not-authorized", stream.dump()
        blocked = stream.auth_plain("alice", PASSWORDS["alice"])
        assert not blocked.success and blocked.condition == "temporary-auth-failure", stream.dump()
        text = blocked.element.findtext(f"{{{NS_SASL}}}text")
        assert text, f"no <text/> saying why\n{stream.dump()}"
    with RawStream.connect(server.c2s_port) as stream:
        stream.connect_encrypted(direct_tls=False)
        blocked = stream.auth_plain("carol", PASSWORDS["carol"])
        assert blocked.condition == "temporary-auth-failure", stream.dump()
    time.sleep(max(0.0, 3.3 - (time.monotonic() - first_failure)))
    with RawStream.connect(server.c2s_port) as stream:
        assert stream.login_plain("alice", PASSWORDS["alice"], direct_tls=False).startswith(ALICE)


def test_sasl_abort_gives_aborted(server):
    """A client that aborts a SCRAM exchange after the challenge gets
    <failure><aborted/></failure> and may then log in on the same stream."""
    with RawStream.connect(server.c2s_port) as stream:
        stream.connect_encrypted(direct_tls=False)
        first = base64.b64encode(b"n,,n=alice,r=abcdefghijklmnop").decode()
        stream.send(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{first}</auth>")
        challenge = stream.read_element()
        assert challenge.tag == f"{{{NS_SASL}}}challenge", stream.dump()
        stream.send(f"<abort xmlns='{NS_SASL}'/>")
        outcome = stream.sasl_outcome(stream.read_element())
        assert not outcome.success and outcome.condition == "aborted", stream.dump()
        assert stream.auth_plain("alice", PASSWORDS["alice"]).success, stream.dump()


def test_unknown_mechanism_gives_invalid_mechanism(server):
    """<auth mechanism='DIGEST-MD5'/> (not offered) gets invalid-mechanism."""
    with RawStream.connect(server.c2s_port) as stream:
        stream.connect_encrypted(direct_tls=False)
        outcome = stream.sasl_outcome(stream.sasl_auth("DIGEST-MD5", None))
        assert not outcome.success and outcome.condition == "invalid-mechanism", stream.dump()


def test_plain_before_tls_gives_encryption_required(server):
    """PLAIN sent before STARTTLS gets exactly encryption-required."""
    with RawStream.connect(server.c2s_port) as stream:
        stream.open()
        stream.read_features()
        outcome = stream.auth_plain("alice", PASSWORDS["alice"])
        assert outcome.condition == "encryption-required", stream.dump()


# --- 7. sessions and routing --------------------------------------------------------------


def bind_without_resource(stream: RawStream) -> str:
    stream.open()
    stream.read_features()
    stream.send(f"<iq type='set' id='bind0'><bind xmlns='{NS_BIND}'/></iq>")
    reply = stream.read_element()
    jid = reply.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid")
    assert reply.get("type") == "result" and jid is not None, stream.dump()
    return jid.text or ""


def test_server_generates_resource_when_none_requested(server):
    """A bind without a resource gets a server-generated one, different for
    each session of the same user."""
    jids = []
    streams = [RawStream.connect(server.direct_tls_port, direct_tls=True) for _ in range(2)]
    try:
        for stream in streams:
            stream.connect_encrypted(direct_tls=True)
            assert stream.auth_plain("alice", PASSWORDS["alice"]).success, stream.dump()
            jids.append(bind_without_resource(stream))
    finally:
        for stream in streams:
            stream.close()
    for jid in jids:
        bare, _, resource = jid.partition("/")
        assert bare == ALICE and resource, jids
    assert jids[0] != jids[1], jids


async def test_bare_jid_chat_goes_to_highest_priority_resource(server):
    """RFC 6121 §8.5.2.1.1: bob is on his desk (priority 5) and phone
    (priority 1); a chat message to bob@localhost reaches the desk only."""
    async with logged_in(server, "alice", ("bob", "desk"), ("bob", "phone")) as (alice, desk, phone):
        await online(desk, priority=5)
        await online(phone, priority=1)
        alice.send_message(BOB, "for the best resource")
        await desk.next_message(ALICE, "for the best resource")
        alice.send_message("bob@localhost/phone", "marker for the phone")
        await phone.next_message(ALICE, "marker for the phone")
        assert phone.received("message", lambda m: m["body"] == "for the best resource") == []


async def test_negative_priority_gets_no_bare_messages_and_they_go_offline(server):
    """RFC 6121 §4.7.2.1, §8.5.2.1.1: bob's only resource has priority -1.
    A chat message to bob@localhost does not reach it and is stored offline
    (alice gets no error); a message to its full JID does reach it. When bob
    comes online on another resource with priority 0, the stored message
    arrives there, delayed."""
    async with logged_in(server, "alice", ("bob", "hidden")) as (alice, hidden):
        await online(hidden, priority=-1)
        alice.send_message(BOB, "to the bare JID")
        alice.send_message("bob@localhost/hidden", "to the full JID")
        await hidden.next_message(ALICE, "to the full JID")
        assert hidden.received("message", lambda m: m["body"] == "to the bare JID") == []
        await assert_pong(alice)
        assert errors_in(alice) == []

        async with logged_in(server, ("bob", "desk")) as (desk,):
            await online(desk, priority=0)
            stored = await desk.next_message(ALICE, "to the bare JID")
            assert delay_of(stored) is not None, str(stored)
        alice.send_message("bob@localhost/hidden", "marker")
        await hidden.next_message(ALICE, "marker")
        assert hidden.received("message", lambda m: m["body"] == "to the bare JID") == []


async def test_headline_to_bare_jid_goes_to_all_non_negative_resources(server):
    """A headline to bob@localhost reaches every resource with non-negative
    priority (5 and 0), not the one at -1."""
    async with logged_in(server, "alice", ("bob", "a"), ("bob", "b"), ("bob", "hidden")) as (alice, a, b, hidden):
        await online(a, priority=5)
        await online(b, priority=0)
        await online(hidden, priority=-1)
        alice.send_message(BOB, "breaking news", mtype="headline")
        for resource in (a, b):
            message = await resource.next_message(ALICE, "breaking news")
            assert message["type"] == "headline"
        alice.send_message("bob@localhost/hidden", "marker")
        await hidden.next_message(ALICE, "marker")
        assert hidden.received("message", lambda m: m["body"] == "breaking news") == []


async def test_groupchat_to_bare_jid_refused(server):
    """A message of type groupchat to a user's bare JID is not delivered;
    the sender gets service-unavailable (RFC 6121 §8.5.2.1.1)."""
    async with logged_in(server, "alice", "bob") as (alice, bob):
        await online(bob)
        alice.send_message(BOB, "not a room", mtype="groupchat")
        error = await next_error_message(alice, BOB)
        assert error["error"]["condition"] == "service-unavailable", str(error)
        alice.send_message(BOB, "marker")
        await bob.next_message(ALICE, "marker")
        assert bob.received("message", lambda m: m["body"] == "not a room") == []


async def test_message_to_unknown_user_refused(server):
    """A chat message to nosuch@localhost (no such account) comes back as
    service-unavailable; nothing is stored for anyone."""
    async with logged_in(server, "alice") as (alice,):
        alice.send_message("nosuch@localhost", "anyone?")
        error = await next_error_message(alice, "nosuch@localhost")
        assert error["error"]["condition"] == "service-unavailable", str(error)
        assert error["body"] == "anyone?"


async def test_message_to_a_resource_that_is_gone(server):
    """RFC 6121 §8.5.3.2: to bob@localhost/gone (not online) a chat message
    goes to bob's online resource as if sent to the bare JID, a groupchat
    message comes back as service-unavailable, and a headline is dropped."""
    async with logged_in(server, "alice", ("bob", "desk")) as (alice, desk):
        await online(desk)
        alice.send_message("bob@localhost/gone", "still for bob")
        await desk.next_message(ALICE, "still for bob")
        alice.send_message("bob@localhost/gone", "room message", mtype="groupchat")
        error = await next_error_message(alice, "bob@localhost/gone")
        assert error["error"]["condition"] == "service-unavailable", str(error)
        alice.send_message("bob@localhost/gone", "old news", mtype="headline")
        alice.send_message(BOB, "marker")
        await desk.next_message(ALICE, "marker")
        assert desk.received("message", lambda m: m["body"] in ("old news", "room message")) == []
        assert [e["body"] for e in errors_in(alice)] == []


async def test_headline_to_offline_user_not_stored(server):
    """A headline for a user with no available resource is dropped, not
    kept for later (RFC 6121 §8.5.2.2.1), while a chat message is kept."""
    async with logged_in(server, "alice") as (alice,):
        alice.send_message(BOB, "stale news", mtype="headline")
        alice.send_message(BOB, "kept")
        await assert_pong(alice)
        assert errors_in(alice) == []
    async with logged_in(server, "bob") as (bob,):
        bob.send_presence()
        await bob.next_message(ALICE, "kept")
        async with logged_in(server, "alice") as (alice,):
            alice.send_message(BOB, "marker")
            await bob.next_message(ALICE, "marker")
        assert bob.received("message", lambda m: m["body"] == "stale news") == []


IQS = {
    # id: (stanza, expected type, expected error condition)
    "ping-host": ("<iq type='get' id='ping-host' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>", "result", None),
    "version-host": (
        "<iq type='get' id='version-host' to='localhost'><query xmlns='jabber:iq:version'/></iq>",
        "result",
        None,
    ),
    "unknown-host": (
        "<iq type='get' id='unknown-host' to='localhost'><query xmlns='urn:example:nothing'/></iq>",
        "error",
        "service-unavailable",
    ),
    "unknown-own": (
        "<iq type='set' id='unknown-own'><query xmlns='urn:example:nothing'/></iq>",
        "error",
        "service-unavailable",
    ),
    "unknown-other": (
        "<iq type='get' id='unknown-other' to='bob@localhost'><query xmlns='urn:example:nothing'/></iq>",
        "error",
        "service-unavailable",
    ),
    "no-such-user": (
        "<iq type='get' id='no-such-user' to='nosuch@localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
        "error",
        "service-unavailable",
    ),
    "offline-resource": (
        "<iq type='get' id='offline-resource' to='bob@localhost/nowhere'><ping xmlns='urn:xmpp:ping'/></iq>",
        "error",
        "service-unavailable",
    ),
    "no-payload": ("<iq type='get' id='no-payload' to='localhost'/>", "error", "bad-request"),
    "roster": ("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>", "result", None),
    "disco-own": (
        "<iq type='get' id='disco-own' to='alice@localhost'>"
        "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        "result",
        None,
    ),
}


def test_every_iq_gets_exactly_one_reply(server):
    """Ten IQ requests of every kind (to the host, to one's own account, to
    another user, to no such user, to an offline resource, unknown
    namespaces, no payload) each get exactly one reply, with the right
    type; unknown namespaces and absent addressees get service-unavailable."""
    with RawStream.connect(server.direct_tls_port, direct_tls=True) as stream:
        stream.login_plain("alice", PASSWORDS["alice"], direct_tls=True)
        stream.send("".join(stanza for stanza, _, _ in IQS.values()))
        stream.send("<iq type='get' id='last' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        replies: dict[str, list[ET.Element]] = {}
        while "last" not in replies:
            element = stream.read_element()
            replies.setdefault(element.get("id", ""), []).append(element)
        # Anything late (a second reply) would come right behind.
        stream.send("<iq type='get' id='after' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        while "after" not in replies:
            element = stream.read_element()
            replies.setdefault(element.get("id", ""), []).append(element)
        for iq_id, (_, expected_type, condition) in IQS.items():
            got = replies.get(iq_id, [])
            assert len(got) == 1, f"{iq_id}: {len(got)} replies\n{stream.dump()}"
            assert got[0].get("type") == expected_type, f"{iq_id}\n{stream.dump()}"
            assert stanza_error_condition(got[0]) == condition, f"{iq_id}\n{stream.dump()}"
        unexpected = set(replies) - set(IQS) - {"last", "after"}
        assert not unexpected, f"replies to no request: {unexpected}\n{stream.dump()}"


# --- 8. roster and presence ---------------------------------------------------------------


async def test_roster_get_with_current_version_is_empty_then_pushes(server):
    """RFC 6121 §2.6.3: a roster get naming the current version is answered
    with an empty result; a later change arrives as a push with a new
    version, and asking with that version is again an empty result."""
    async with logged_in(server, ("alice", "desk"), ("alice", "phone")) as (desk, phone):
        await desk.roster_set(CAROL, name="Carol")
        full = await desk.roster_get(ver="")
        version = full.xml.find(f"{{{NS_ROSTER}}}query").get("ver")
        assert CAROL in roster_items(full) and version, str(full)
        desk.inbox.clear()

        unchanged = await desk.roster_get(ver=version)
        assert unchanged["type"] == "result"
        assert unchanged.xml.find(f"{{{NS_ROSTER}}}query") is None, f"not an empty result: {unchanged}"

        await phone.roster_set(BOB, name="Bob")
        pushed = await desk.next_roster_push(BOB)
        assert pushed["name"] == "Bob" and pushed["ver"] and pushed["ver"] != version
        again = await desk.roster_get(ver=pushed["ver"])
        assert again.xml.find(f"{{{NS_ROSTER}}}query") is None, f"not an empty result: {again}"


async def test_pre_approved_subscription_is_accepted_automatically(server):
    """RFC 6121 §3.4: bob pre-approves alice (subscribed with no request);
    his roster shows alice with approved='true' and alice is told nothing.
    When alice later asks, she is approved at once and sees bob online; bob
    is never asked, and his roster then says "from" without the approval."""
    async with logged_in(server, "alice", "bob") as (alice, bob):
        await online_with_roster(alice, bob)
        bob.send_presence(pto=ALICE, ptype="subscribed")
        item = (await bob.next_roster_push(ALICE))["iq"].xml.find(f"{{{NS_ROSTER}}}query/{{{NS_ROSTER}}}item")
        assert item.get("approved") == "true" and item.get("subscription", "none") == "none", ET.tostring(item)
        bob.send_message(ALICE, "marker after pre-approval")
        await alice.next_message(BOB, "marker after pre-approval")
        assert alice.received("presence", lambda p: p["type"] == "subscribed") == []

        alice.send_presence(pto=BOB, ptype="subscribe")
        await alice.next_presence(BOB, "subscribed")
        await wait_subscription(alice, BOB, "to")
        await alice.next_presence(str(bob.jid), "available")
        approved = await wait_subscription(bob, ALICE, "from")
        assert approved["iq"].xml.find(f"{{{NS_ROSTER}}}query/{{{NS_ROSTER}}}item").get("approved") is None
        alice.send_message(BOB, "marker after request")
        await bob.next_message(ALICE, "marker after request")
        assert bob.received("presence", lambda p: p["type"] == "subscribe") == []


async def test_pre_approval_advertised_as_stream_feature(server):
    """RFC 6121 §3.4: a server that supports pre-approval MUST advertise the
    stream feature <sub xmlns='urn:xmpp:features:pre-approval'/>."""
    async with logged_in(server, "alice") as (alice,):
        advertised = [f for f in alice.features if f.xml.find(f"{{{NS_PRE_APPROVAL}}}sub") is not None]
        assert advertised, "no pre-approval stream feature in: " + " ".join(str(f) for f in alice.features)


async def test_pending_subscription_request_redelivered_at_next_login(server):
    """bob sees alice's request but logs out without answering; after a
    server restart, bob's next login (initial presence) brings the request
    again (RFC 6121 §3.1.3)."""
    async with logged_in(server, "alice") as (alice,):
        await online_with_roster(alice)
        async with logged_in(server, ("bob", "first")) as (bob,):
            await online_with_roster(bob)
            alice.send_presence(pto=BOB, ptype="subscribe")
            await bob.next_presence(ALICE, "subscribe")
    server.restart()
    async with logged_in(server, ("bob", "second")) as (bob,):
        await bob.roster_get()
        bob.send_presence()
        request = await bob.next_presence(ALICE, "subscribe")
        assert str(request["from"]) == ALICE


async def test_directed_presence_and_unavailable_at_logout(server):
    """RFC 6121 §4.6: alice sends directed presence to carol, who is not her
    contact; carol sees it, and when alice logs out carol gets alice's
    unavailable presence. bob, to whom alice sent nothing, sees neither."""
    async with logged_in(server, ("alice", "desk"), ("carol", "phone"), "bob") as (alice, carol, bob):
        await online(carol)
        await online(bob)
        await online(alice)
        alice.send_presence(pto=str(carol.jid), pstatus="hello carol")
        presence = await carol.next_presence(str(alice.jid), "available")
        assert presence["status"] == "hello carol"
        alice_jid = str(alice.jid)
        await alice.close()
        await carol.next_presence(alice_jid, "unavailable")
        carol.send_message(BOB, "marker")
        await bob.next_message(CAROL, "marker")
        assert bob.received("presence", lambda p: p["from"].bare == ALICE) == []


async def test_abrupt_disconnect_sends_unavailable(server):
    """bob (subscribed both ways with alice) is online on a raw connection
    and has sent directed presence to carol; the TCP connection is reset
    without </stream:stream>. alice and carol both get bob's unavailable."""
    async with logged_in(server, "alice", "bob", ("carol", "phone")) as (alice, bob, carol):
        await online_with_roster(alice, bob)
        await subscribe_mutually(alice, bob)
        await bob.close()
        await online(carol)
        stream = RawStream.connect(server.direct_tls_port, direct_tls=True)
        try:
            await asyncio.to_thread(stream.login_plain, "bob", PASSWORDS["bob"], True, "raw")
            stream.send("<presence/>")
            stream.send(f"<presence to='{carol.jid}'><status>directed</status></presence>")
            await alice.next_presence("bob@localhost/raw", "available")
            await carol.next_presence("bob@localhost/raw", "available")
            reset_connection(stream)
        finally:
            stream.close()
        await alice.next_presence("bob@localhost/raw", "unavailable", timeout=5)
        await carol.next_presence("bob@localhost/raw", "unavailable", timeout=5)


# --- 9. offline quota -----------------------------------------------------------------------


async def test_offline_quota_refuses_with_resource_constraint(make_server):
    """offline_max_messages = 2: bob is offline, alice sends three messages;
    the third comes back as a resource-constraint error (type wait) whose
    text says the storage is full; bob later gets the first two."""
    server = make_server(host_options={"offline_max_messages": 2})
    async with logged_in(server, "alice") as (alice,):
        for body in ("one", "two", "three"):
            alice.send_message(BOB, body)
        error = await next_error_message(alice, BOB)
        assert error["body"] == "three", str(error)
        assert error["error"]["condition"] == "resource-constraint", str(error)
        assert error["error"]["type"] == "wait", str(error)
        assert "full" in (error["error"]["text"] or ""), f"no clear text: {error}"
        await assert_pong(alice)
        assert errors_in(alice) == []
    async with logged_in(server, "bob", "alice") as (bob, alice):
        bob.send_presence()
        received = [await bob.next_message(ALICE) for _ in range(2)]
        assert [m["body"] for m in received] == ["one", "two"]
        alice.send_message(BOB, "marker")
        await bob.next_message(ALICE, "marker")
        assert bob.received("message", lambda m: m["body"] == "three") == []


# --- 10. small services ------------------------------------------------------------------------


async def test_offline_messages_wait_for_initial_presence(server):
    """Stored messages are not pushed at login but at the first available
    presence (XEP-0160): bob, logged in and bound, gets nothing until he
    sends presence, then everything."""
    async with logged_in(server, "alice") as (alice,):
        alice.send_message(BOB, "waiting for you")
        await assert_pong(alice)
    async with logged_in(server, "bob") as (bob,):
        await bob.roster_get()
        await assert_pong(bob)
        assert bob.received("message") == [], "offline messages sent before initial presence"
        bob.send_presence()
        await bob.next_message(ALICE, "waiting for you")


def test_registration_off_when_option_absent(make_server):
    """With no allow_registration anywhere in the config, in-band
    registration is neither advertised nor accepted; no account appears."""
    server = make_server(start=False)
    del server.host_options["allow_registration"]
    server.write_config()
    assert "allow_registration" not in server.config_path.read_text()
    server.start()
    with RawStream.connect(server.c2s_port) as stream:
        features = stream.connect_encrypted(direct_tls=False)
        assert features.find(f"{{{NS_REGISTER_FEATURE}}}register") is None, stream.dump()
        stream.send(
            "<iq type='set' id='reg1'><query xmlns='jabber:iq:register'>"
            "<username>erin</username><password>erin-Secret-5</password></query></iq>"
        )
        reply = stream.read_element()
        refused_iq = reply.get("id") == "reg1" and reply.get("type") == "error"
        refused_stream = (
            reply.tag == f"{{{NS_STREAM}}}error" and reply.find(f"{{{NS_STREAM_ERRORS}}}not-authorized") is not None
        )
        assert refused_iq or refused_stream, stream.dump()
    assert not any("erin" in line for line in server.list_users())


async def disco_features(client: Client) -> set[str]:
    reply = await client.xmpp.plugin["xep_0030"].get_info(jid=DOMAIN, local=False, cached=False, timeout=10)
    return set(reply["disco_info"]["features"])


async def test_disco_lists_exactly_the_enabled_features(make_server):
    """With modules_disabled = ["version", "ping", "offline"], disco#info on
    the host no longer lists jabber:iq:version, urn:xmpp:ping or msgoffline,
    and those requests are refused (service-unavailable; a message to an
    offline user bounces instead of being stored). On a default server each
    listed IQ feature is answered."""
    default = make_server()
    async with logged_in(default, "alice") as (alice,):
        features = await disco_features(alice)
        assert {"jabber:iq:version", NS_PING, "msgoffline", "jabber:iq:register"} <= features, features
        await assert_pong(alice)
        await alice.xmpp.plugin["xep_0092"].get_version(DOMAIN, timeout=10)
        await alice.xmpp.plugin["xep_0030"].get_items(jid=DOMAIN, local=False, timeout=10)
        iq = alice.xmpp.Iq()
        iq["type"] = "get"
        ET.SubElement(iq.xml, "{jabber:iq:register}query")
        assert (await iq.send(timeout=10))["type"] == "result"

    reduced = make_server(host_options={"modules_disabled": ["version", "ping", "offline"]})
    async with logged_in(reduced, "alice") as (alice,):
        features = await disco_features(alice)
        assert not {"jabber:iq:version", NS_PING, "msgoffline"} & features, features
        for payload in (f"{{{NS_VERSION}}}query", f"{{{NS_PING}}}ping"):
            iq = alice.xmpp.Iq()
            iq["type"] = "get"
            iq["to"] = DOMAIN
            ET.SubElement(iq.xml, payload)
            with pytest.raises(IqError) as refused:
                await iq.send(timeout=10)
            assert refused.value.iq["error"]["condition"] == "service-unavailable", payload
        alice.send_message(BOB, "nobody keeps this")
        error = await next_error_message(alice, BOB)
        assert error["error"]["condition"] == "service-unavailable", str(error)


# --- 11. lifecycle: SIGTERM flush, SIGHUP ---------------------------------------------------------


async def test_sigterm_flushes_the_database(server):
    """After SIGTERM (exit 0) the write-ahead log has been checkpointed into
    jackdaw.sqlite, which stays in WAL mode."""
    async with logged_in(server, "alice") as (alice,):
        await alice.roster_set(BOB, name="Bob")
        alice.send_message(CAROL, "kept offline")
        await assert_pong(alice)
    database = server.data_path / "jackdaw.sqlite"
    assert Path(f"{database}-wal").exists(), "no WAL file while running"
    assert server.stop() == 0
    wal = Path(f"{database}-wal")
    assert not wal.exists() or wal.stat().st_size == 0, f"WAL of {wal.stat().st_size} bytes left after shutdown"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT COUNT(*) FROM offline_messages").fetchone()[0] == 1


def new_certificate_pair(server: JackdawServer, workdir: Path) -> tuple[Path, Path]:
    """`jackdaw cert generate` against a copy of the server's config whose
    data_path is elsewhere; returns the new certificate and key."""
    other = workdir / "other-data"
    config = workdir / "other.toml"
    config.write_text(server.config_text().replace(json.dumps(str(server.data_path)), json.dumps(str(other))))
    result = run_jackdaw(server.binary, "--config", str(config), "cert", "generate", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return other / "certs" / "localhost.crt", other / "certs" / "localhost.key"


async def test_sighup_reloads_the_certificate(server, tmp_path):
    """The operator replaces data/certs/localhost.crt/.key and sends SIGHUP:
    new connections (direct TLS and STARTTLS) are shown the new certificate,
    a client trusting only the new one logs in, and a session opened before
    the reload goes on."""
    old = der_of_pem_file(server.cert_path)
    assert presented_certificate(server.direct_tls_port, direct_tls=True) == old
    async with logged_in(server, "alice") as (alice,):
        new_cert, new_key = new_certificate_pair(server, tmp_path)
        new = der_of_pem_file(new_cert)
        assert new != old
        shutil.copy(new_key, server.cert_path.with_suffix(".key"))
        shutil.copy(new_cert, server.cert_path)
        offset = log_size(server)
        os.kill(server.pid, signal.SIGHUP)
        wait_for_log(server, "SIGHUP: certificates reloaded", offset)

        assert presented_certificate(server.direct_tls_port, direct_tls=True) == new
        assert presented_certificate(server.c2s_port, direct_tls=False) == new
        trusting_new = Client(server, "bob", cafile=new_cert)
        await trusting_new.login()
        await trusting_new.close()
        await assert_pong(alice)
    assert server.is_running()


async def test_sighup_changes_the_log_filter(make_server):
    """`log = "info"`; the operator edits it to "debug" and sends SIGHUP: the
    log says "SIGHUP: config re-read" and debug lines (each stanza from a
    client) appear from then on, with no restart asked for."""
    server = make_server(options={"log": "info"})
    async with logged_in(server, "alice") as (alice,):
        await assert_pong(alice)
        assert "stanza from client" not in server.log_text()
        server.options["log"] = "debug"
        server.write_config()
        offset = log_size(server)
        os.kill(server.pid, signal.SIGHUP)
        reread = wait_for_log(server, "SIGHUP: config re-read", offset)
        assert "restart" not in reread, reread
        await assert_pong(alice)
        wait_for_log(server, "stanza from client", offset)


async def test_sighup_with_broken_config_or_certificate_keeps_running(server, tmp_path):
    """SIGHUP with a mistyped key in the config and a certificate file that is
    not a certificate: both problems are logged (the key with its line), the
    server keeps its running config and old certificate and serves on. A
    later valid change beyond `log` is reported as needing a restart."""
    old_cert = tmp_path / "old.crt"
    shutil.copy(server.cert_path, old_cert)
    good_config = server.config_path.read_text()
    server.config_path.write_text(good_config.replace("c2s_timeout = 3", "c2s_timeuot = 3"))
    server.cert_path.write_text("not a certificate\n")
    offset = log_size(server)
    os.kill(server.pid, signal.SIGHUP)
    logged = wait_for_log(server, "SIGHUP: config has errors", offset)
    wait_for_log(server, "c2s_timeuot", offset)
    assert "certificate reload failed" in logged, logged
    assert re.search(rf"{re.escape(str(server.config_path))}:\d+", logged), logged
    assert server.is_running()
    assert presented_certificate(server.direct_tls_port, direct_tls=True) == der_of_pem_file(old_cert)
    client = Client(server, "alice", cafile=old_cert)
    await client.login()
    await client.close()

    shutil.copy(old_cert, server.cert_path)
    server.config_path.write_text(good_config.replace("c2s_timeout = 3", "c2s_timeout = 4"))
    offset = log_size(server)
    os.kill(server.pid, signal.SIGHUP)
    logged = wait_for_log(server, "SIGHUP: config re-read", offset)
    assert "restart" in logged, logged
    await assert_login_works(server)
