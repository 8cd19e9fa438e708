"""What an operator sees from ``jackdaw check-config`` and from starting the
server with a broken config: every unknown key, with its file and line and
the nearest valid name, and no port bound."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from harness.server import CLI_TIMEOUT, REPO_ROOT, JackdawServer

EXAMPLE_CONFIG = REPO_ROOT / "jackdaw.example.toml"


def check_config(binary: Path, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(binary), "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def write_config(directory: Path, text: str) -> Path:
    path = directory / "jackdaw.toml"
    path.write_text(text)
    return path


def line_of(text: str, needle: str) -> int:
    """1-based line number of the first line containing ``needle``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in config")


def valid_config(tmp_path: Path) -> str:
    return JackdawServer(tmp_path / "valid").config_text()


def output_of(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def test_valid_test_config_passes(binary, tmp_path):
    """The config the tests run with is valid: exit 0."""
    config = write_config(tmp_path, valid_config(tmp_path))
    result = check_config(binary, config)
    assert result.returncode == 0, output_of(result)


def test_example_config_passes(binary):
    """The annotated example shipped in the repository is valid."""
    assert EXAMPLE_CONFIG.is_file(), f"no {EXAMPLE_CONFIG}"
    result = check_config(binary, EXAMPLE_CONFIG)
    assert result.returncode == 0, output_of(result)


def test_unknown_global_key_named_with_line_and_suggestion(binary, tmp_path):
    """A misspelt global option fails with FILE:LINE: unknown option
    "c2s_prots" (did you mean "c2s_ports"?)."""
    text = valid_config(tmp_path).replace("c2s_ports = [0]", "c2s_prots = [0]")
    config = write_config(tmp_path, text)
    result = check_config(binary, config)
    assert result.returncode != 0, output_of(result)
    expected = f'{config}:{line_of(text, "c2s_prots")}: unknown option "c2s_prots" (did you mean "c2s_ports"?)'
    assert expected in output_of(result), output_of(result)


def test_unknown_host_key_named_with_line_and_suggestion(binary, tmp_path):
    """A misspelt option inside [hosts."localhost"] is named with its line
    and the nearest host option."""
    text = valid_config(tmp_path).replace("allow_registration = true", "allow_registraton = true")
    config = write_config(tmp_path, text)
    result = check_config(binary, config)
    assert result.returncode != 0, output_of(result)
    line = line_of(text, "allow_registraton")
    pattern = rf'{re.escape(str(config))}:{line}: unknown option "allow_registraton"'
    assert re.search(pattern, output_of(result)), output_of(result)
    assert '"allow_registration"' in output_of(result), output_of(result)


def test_every_unknown_key_reported_in_one_run(binary, tmp_path):
    """Two mistakes are both reported by one check, each with its line."""
    text = (
        valid_config(tmp_path)
        .replace("c2s_ports = [0]", "c2s_prots = [0]")
        .replace("http_ports = [0]", "htp_ports = [0]")
    )
    config = write_config(tmp_path, text)
    result = check_config(binary, config)
    assert result.returncode != 0
    for key in ("c2s_prots", "htp_ports"):
        assert f"{config}:{line_of(text, key)}:" in output_of(result), output_of(result)


def test_server_refuses_to_start_with_unknown_key(binary, tmp_path):
    """`jackdaw run` with a misspelt option exits non-zero, names the key, and
    binds no port (no listeners.json)."""
    server = JackdawServer(tmp_path / "bad", options={"c2s_prots": [0]}, binary=binary)
    result = subprocess.run(
        [str(binary), "--config", str(server.config_path), "run"],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0
    assert "c2s_prots" in output_of(result)
    assert not server.listeners_file.exists()


@pytest.mark.parametrize("text", ["c2s_ports = [0\n", "c2s_timeout = 'three'\n"], ids=["toml-syntax", "wrong-type"])
def test_invalid_value_reported_with_line(binary, tmp_path, text):
    """A TOML syntax error or a value of the wrong type fails the check and
    names line 1 of the file."""
    config = write_config(tmp_path, text)
    result = check_config(binary, config)
    assert result.returncode != 0
    assert re.search(rf"{re.escape(str(config))}:1\b", output_of(result)) or "line 1" in output_of(result), output_of(
        result
    )
