"""Run the built ``jackdaw`` binary as a user-facing server for one test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]

#: How long a start may take before listeners.json must be there.
START_TIMEOUT = 30.0
#: How long SIGTERM may take to close every session and exit.
STOP_TIMEOUT = 20.0
#: How long one CLI command (user add, check-config) may take.
CLI_TIMEOUT = 30.0


def jackdaw_binary() -> Path:
    """The binary under test: ``$JACKDAW_BIN`` or ``<repo>/target/debug/jackdaw``."""
    configured = os.environ.get("JACKDAW_BIN")
    if configured:
        return Path(configured).resolve()
    return REPO_ROOT / "target" / "debug" / "jackdaw"


class ServerError(AssertionError):
    """The server did something a user or operator would call broken."""


def toml_value(value: Any) -> str:
    """Render a Python value as a TOML value (enough for server options)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot render {value!r} as TOML")


class JackdawServer:
    """One ``jackdaw`` process with its own config, data and ephemeral ports.

    ``options`` are global (top-level) config options and ``host_options``
    the options of ``[hosts."localhost"]``; both override the defaults below.
    The process's stdout and stderr go to ``jackdaw.log`` in the work dir,
    which the test report prints when a test fails.
    """

    def __init__(
        self,
        workdir: Path,
        options: dict[str, Any] | None = None,
        host_options: dict[str, Any] | None = None,
        binary: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.binary = binary or jackdaw_binary()
        self.data_path = workdir / "data"
        self.config_path = workdir / "jackdaw.toml"
        self.log_path = workdir / "jackdaw.log"
        self.options: dict[str, Any] = {
            "interfaces": ["127.0.0.1"],
            "c2s_ports": [0],
            "c2s_direct_tls_ports": [0],
            "http_ports": [0],
            "https_ports": [0],
            "data_path": str(self.data_path),
            "c2s_timeout": 3,
            "log": "debug",
        }
        self.options.update(options or {})
        self.host_options: dict[str, Any] = {"allow_registration": True}
        self.host_options.update(host_options or {})
        self.process: subprocess.Popen | None = None
        self.listeners: dict[str, list[str]] = {}
        self.starts = 0
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_path.mkdir(parents=True, exist_ok=True)
        self.write_config()

    # --- configuration -----------------------------------------------------

    def config_text(self) -> str:
        lines = [f"{key} = {toml_value(value)}" for key, value in self.options.items()]
        lines.append("")
        lines.append('[hosts."localhost"]')
        lines += [f"{key} = {toml_value(value)}" for key, value in self.host_options.items()]
        return "\n".join(lines) + "\n"

    def write_config(self) -> None:
        self.config_path.write_text(self.config_text())

    # --- ports and files ---------------------------------------------------

    @property
    def listeners_file(self) -> Path:
        return self.data_path / "listeners.json"

    @property
    def cert_path(self) -> Path:
        return self.data_path / "certs" / "localhost.crt"

    def _port(self, kind: str) -> int:
        addresses = self.listeners.get(kind) or []
        if not addresses:
            raise ServerError(f"listeners.json names no {kind!r} listener: {self.listeners}")
        return int(addresses[0].rsplit(":", 1)[1])

    @property
    def c2s_port(self) -> int:
        """The STARTTLS client port."""
        return self._port("c2s")

    @property
    def direct_tls_port(self) -> int:
        """The XEP-0368 direct TLS client port."""
        return self._port("c2s_direct_tls")

    @property
    def http_port(self) -> int:
        return self._port("http")

    @property
    def https_port(self) -> int:
        return self._port("https")

    @property
    def pid(self) -> int:
        assert self.process is not None, "server is not running"
        return self.process.pid

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log written)"

    # --- lifecycle ---------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server and wait until every listener is bound."""
        assert not self.is_running(), "server already running"
        # A stale file from the previous run would make us believe the new
        # process is ready before it has bound anything.
        self.listeners_file.unlink(missing_ok=True)
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n===== start #{self.starts}: {self.binary} --config {self.config_path} run\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            [str(self.binary), "--config", str(self.config_path), "run"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"jackdaw exited with code {self.process.returncode} before writing {self.listeners_file}"
                )
            if self.listeners_file.exists():
                # Written then renamed by the server, so it is complete.
                self.listeners = json.loads(self.listeners_file.read_text())
                return
            time.sleep(0.05)
        self.kill()
        raise ServerError(f"no {self.listeners_file} within {timeout} s of starting jackdaw")

    def stop(self, timeout: float = STOP_TIMEOUT, expect_code: int | None = 0) -> int:
        """SIGTERM the server, wait for it, and check its exit code."""
        assert self.process is not None, "server was never started"
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise ServerError(f"jackdaw did not exit within {timeout} s of SIGTERM") from None
        code = self.process.returncode
        if expect_code is not None and code != expect_code:
            raise ServerError(f"jackdaw exited with code {code} after SIGTERM, expected {expect_code}")
        return code

    def terminate(self) -> None:
        """Send SIGTERM without waiting; :meth:`stop` then waits and checks the exit code."""
        assert self.process is not None, "server was never started"
        self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """Stop with SIGTERM (expecting exit code 0) and start again on the same data."""
        self.stop()
        self.start()

    # --- the command line --------------------------------------------------

    def cli(self, *args: str, stdin: str | None = None, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
        """Run ``jackdaw --config FILE ARGS...`` and return what it printed."""
        return subprocess.run(
            [str(self.binary), "--config", str(self.config_path), *args],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.workdir,
        )

    def _checked_cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        result = self.cli(*args, stdin=stdin)
        if result.returncode != 0:
            raise ServerError(
                f"`jackdaw {' '.join(args)}` exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def add_user(self, jid: str, password: str) -> None:
        """``jackdaw user add JID``, the password on stdin."""
        self._checked_cli("user", "add", jid, stdin=password + "\n")

    def set_password(self, jid: str, password: str) -> None:
        self._checked_cli("user", "passwd", jid, stdin=password + "\n")

    def delete_user(self, jid: str) -> None:
        self._checked_cli("user", "del", jid)

    def list_users(self, host: str = "localhost") -> list[str]:
        result = self._checked_cli("user", "list", host)
        return [line.strip() for line in result.stdout.splitlines() if line.strip()]

    def peak_memory_kib(self) -> int:
        """The server's resident-set high-water mark (VmHWM) in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise ServerError("no VmHWM in /proc status")
