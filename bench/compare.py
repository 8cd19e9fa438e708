#!/usr/bin/env python3
"""The measuring half of bench/compare: Jackdaw against Prosody 0.12 (and,
with --with-ejabberd, ejabberd) with the same load generator, the same
accounts, the same scenarios and the same pinning.

bench/compare (bash) installs the servers and builds Jackdaw, then runs this
file. It can also be run alone once both are in place:

    python3 bench/compare.py --quick

What it does, per server:

1. writes a config into a temporary directory (loopback ports only, TLS
   with a P-256 self-signed certificate, STARTTLS required, internal hashed
   passwords, in-band registration open so jackdaw-load can create the
   accounts, a MUC service at rooms.localhost, log level info to a file);
2. starts the server pinned to core 0, registers user1..userN / pass1..passN
   with `jackdaw-load --register` (XEP-0077: the same path on every server,
   and much faster than one `prosodyctl register` process per account), stops
   it and keeps a copy of its data directory;
3. for every measured run, restores that copy and starts the server afresh,
   so no run sees the previous run's leftovers (offline messages queued by an
   overloaded chat run, memory kept by the allocator);
4. runs jackdaw-load pinned to core 1 with --server-pid, so CPU and RSS of
   the server are sampled from /proc.

Then it prints one table with every figure per server and the ratio
Jackdaw/Prosody, and writes the JSON of every run plus summary.json and
table.md into the results directory.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
JACKDAW = TARGET / "jackdaw"
LOAD = TARGET / "jackdaw-load"
DOMAIN = "localhost"
ROOM = f"bench@rooms.{DOMAIN}"

# Server on core 0, everything on the client side (generator, test web app)
# on core 1: the server gets one whole core and never competes with the load.
SERVER_CORE = "0"
CLIENT_CORE = "1"


# ---------------------------------------------------------------------------
# Scale: --quick finishes in about three minutes for two servers, the full
# run in about twenty. Every number can be overridden on the command line.


@dataclass
class Scale:
    users: int  # accounts registered (≥ every N below)
    login_users: int
    login_duration: float
    login_concurrency: int
    chat_users: int
    chat_duration: float
    chat_drain: float
    # Offered chat load (messages/s for all users together) of the first step
    # of the saturation ramp, the factor between steps and the last step.
    chat_start: float
    chat_factor: float
    chat_max: float
    half_duration: float
    idle_sessions: int
    idle_duration: float
    idle_settle: float
    muc_occupants: int
    muc_senders: int
    muc_rate: float
    muc_duration: float


QUICK = Scale(
    users=1000,
    login_users=1000,
    login_duration=5,
    login_concurrency=50,
    chat_users=100,
    chat_duration=3,
    chat_drain=2,
    chat_start=1000,
    chat_factor=4,
    chat_max=64000,
    half_duration=5,
    idle_sessions=1000,
    idle_duration=4,
    idle_settle=2,
    muc_occupants=50,
    muc_senders=5,
    muc_rate=20,
    muc_duration=4,
)

FULL = Scale(
    users=5000,
    login_users=1000,
    login_duration=20,
    login_concurrency=50,
    chat_users=100,
    chat_duration=10,
    chat_drain=5,
    chat_start=1000,
    chat_factor=2,
    chat_max=128000,
    half_duration=15,
    idle_sessions=5000,
    idle_duration=10,
    idle_settle=3,
    muc_occupants=100,
    muc_senders=10,
    muc_rate=20,
    muc_duration=10,
)


# ---------------------------------------------------------------------------
# Processes: everything started here is in its own process group and is
# stopped on every way out (normal end, exception, Ctrl-C, SIGTERM).

_children: list[subprocess.Popen] = []


def _cleanup() -> None:
    for p in reversed(_children):
        stop_process(p)
    _children.clear()


def _on_signal(signum, _frame) -> None:
    print(f"\ncompare: signal {signum}, stopping the servers", file=sys.stderr)
    _cleanup()
    sys.exit(128 + signum)


def spawn(cmd: list[str], log: Path, cwd: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    with open(log, "ab") as out:
        p = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,  # its own process group, killed as one
        )
    _children.append(p)
    return p


def stop_process(p: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the group (every server shuts down cleanly on it), SIGKILL
    whatever is left after `grace` seconds."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(p.pid, signal.SIGKILL)  # stragglers in the group (ejabberd's su/sh/erl chain)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        pass
    # The group leader may exit before its children (ejabberdctl before the
    # Erlang VM): wait until no process of the group is left, so the ports
    # are free for the next start.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(p.pid, 0)
        except ProcessLookupError:
            break
        except PermissionError:
            pass
        time.sleep(0.05)
    if p in _children:
        _children.remove(p)


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def require_free(ports: list[int], who: str) -> None:
    busy = [p for p in ports if not port_free(p)]
    if busy:
        sys.exit(
            f"compare: port(s) {', '.join(map(str, busy))} on 127.0.0.1 needed by {who} are in use "
            f"(see `ss -ltnp`); stop that process or pick other ports with --base-port"
        )


def wait_port(port: int, proc: subprocess.Popen, timeout: float, log: Path, who: str) -> None:
    """Ready = the client port accepts a connection. A server that dies or
    never listens ends the run with the tail of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            die(f"{who} exited with status {proc.returncode} before listening on {port}", log)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    die(f"{who} did not listen on 127.0.0.1:{port} within {timeout:.0f} s", log)


def die(message: str, log: Path | None = None) -> None:
    tail = ""
    if log is not None and log.exists():
        lines = log.read_text(errors="replace").splitlines()[-25:]
        tail = f"\n--- last lines of {log} ---\n" + "\n".join(lines)
    sys.exit(f"compare: {message}{tail}")


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (ejabberd's VM is a grandchild)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def make_cert(directory: Path) -> tuple[Path, Path]:
    """One P-256 self-signed certificate for localhost, used by Prosody and
    ejabberd (Jackdaw makes its own P-256 one on first start): the same
    handshake cost on every server."""
    directory.mkdir(parents=True, exist_ok=True)
    crt, key = directory / f"{DOMAIN}.crt", directory / f"{DOMAIN}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "30", "-subj", f"/CN={DOMAIN}", "-addext", f"subjectAltName=DNS:{DOMAIN},DNS:*.{DOMAIN}",
         "-keyout", str(key), "-out", str(crt)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    # Readable by the prosody and ejabberd users: a throwaway loopback key.
    key.chmod(0o644)
    return crt, key


# ---------------------------------------------------------------------------
# The servers. Each knows how to write its config, start, find the PID to
# sample, and where its data lives (to snapshot and restore).


@dataclass
class Server:
    name: str
    port: int
    work: Path
    http_auth_url: str
    proc: subprocess.Popen | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = self.work / "server.log"

    # Subclasses fill these in.
    def data_dir(self) -> Path: ...
    def command(self, auth: str) -> list[str]: ...
    def version(self) -> str: ...
    def ports(self) -> list[int]:
        return [self.port]

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, auth: str = "internal") -> None:
        """auth: "internal" (hashed passwords in the server's own store) or
        "http" (the test web app decides, mod_auth_http protocol)."""
        require_free(self.ports(), self.name)
        with open(self.log, "a") as f:
            f.write(f"\n=== compare: start ({auth}) at {dt.datetime.now().isoformat()} ===\n")
        self.proc = spawn(["taskset", "-c", SERVER_CORE, *self.command(auth)], self.log, cwd=self.work, env=self.env())
        wait_port(self.port, self.proc, 60, self.log, self.name)

    def env(self) -> dict:
        return dict(os.environ)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def snapshot(self) -> None:
        """Keep the data directory as it is after registration (server stopped)."""
        pristine = self.work / "data.pristine"
        shutil.rmtree(pristine, ignore_errors=True)
        shutil.copytree(self.data_dir(), pristine, symlinks=True)

    def restore(self) -> None:
        pristine = self.work / "data.pristine"
        shutil.rmtree(self.data_dir(), ignore_errors=True)
        shutil.copytree(pristine, self.data_dir(), symlinks=True)
        self.fix_owner()

    def fix_owner(self) -> None:
        pass

    def fresh(self, auth: str = "internal") -> None:
        self.stop()
        if auth == "internal":
            self.restore()
        self.start(auth)


class Jackdaw(Server):
    def data_dir(self) -> Path:
        return self.work / "data"

    def config(self, auth: str) -> Path:
        path = self.work / f"jackdaw-{auth}.toml"
        host_auth = (
            'authentication = "http"\n'
            f'http_auth_url = "{self.http_auth_url}"\n'
            if auth == "http" else 'authentication = "internal_hashed"\n'
        )
        path.write_text(
            "# written by bench/compare\n"
            'interfaces = ["127.0.0.1"]\n'
            f"c2s_ports = [{self.port}]\n"
            f"c2s_direct_tls_ports = [{self.port + 1}]\n"
            f"http_ports = [{self.port + 2}]\n"
            "https_ports = []\n"
            f'data_path = "{self.data_dir()}"\n'
            "c2s_require_encryption = true\n"
            # The default of 10,000 would refuse the idle run's margin.
            "c2s_max_connections = 60000\n"
            'log = "info"\n'
            "\n"
            f'[hosts."{DOMAIN}"]\n'
            + host_auth +
            # jackdaw-load --register creates the accounts (XEP-0077).
            "allow_registration = true\n"
            # The same module set as Prosody's config below, which has no
            # archive, carbons, push or blocking: with them on (Jackdaw's
            # default) every chat message is also written to SQLite twice.
            'modules_disabled = ["mam", "carbons", "cloud_notify", "blocklist"]\n'
            "\n"
            f'[components."rooms.{DOMAIN}"]\n'
            'module = "muc"\n'
            # Prosody and ejabberd get the same: a room is usable at once.
            "muc_room_locking = false\n"
        )
        return path

    def ports(self) -> list[int]:
        return [self.port, self.port + 1, self.port + 2]

    def command(self, auth: str) -> list[str]:
        return [str(JACKDAW), "--config", str(self.config(auth)), "run"]

    def version(self) -> str:
        return subprocess.run([str(JACKDAW), "--version"], capture_output=True, text=True).stdout.strip()


class Prosody(Server):
    cert: tuple[Path, Path] | None = None

    def data_dir(self) -> Path:
        return self.work / "data"

    def plugin_paths(self) -> list[str]:
        # Debian 12's prosody-modules has no mod_auth_http: use bench's
        # stand-in unless a real one is installed.
        if Path("/usr/lib/prosody/modules/mod_auth_http").exists() or Path(
            "/usr/lib/prosody/modules/mod_auth_http.lua"
        ).exists():
            return []
        return [str(BENCH / "prosody-plugins")]

    def config(self, auth: str) -> Path:
        crt, key = self.cert
        path = self.work / f"prosody-{auth}.cfg.lua"
        host_auth = (
            f'authentication = "http"\nhttp_auth_url = "{self.http_auth_url}"\n'
            if auth == "http" else 'authentication = "internal_hashed"\n'
        )
        plugin_paths = ", ".join(f'"{p}"' for p in self.plugin_paths())
        path.write_text(
            f"""-- written by bench/compare
plugin_paths = {{ {plugin_paths} }}
data_path = "{self.data_dir()}"
pidfile = "{self.work}/prosody.pid"
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.port} }}
c2s_direct_tls_ports = {{ {self.port + 1} }}
-- No federation, no HTTP listener, no admin socket: only what Jackdaw has
-- on in the same run.
modules_disabled = {{ "s2s" }}
modules_enabled = {{
    "roster"; "saslauth"; "tls"; "disco"; "ping"; "version"; "register"; "posix";
}}
c2s_require_encryption = true
allow_registration = true
-- jackdaw-load --register creates thousands of accounts from 127.0.0.1.
min_seconds_between_registrations = 0
log = {{ info = "{self.work}/prosody.log"; warn = "*stderr" }}
certificates = "{crt.parent}"
storage = "internal"
ssl = {{ certificate = "{crt}"; key = "{key}"; }}

VirtualHost "{DOMAIN}"
{host_auth}
Component "rooms.{DOMAIN}" "muc"
muc_room_locking = false
restrict_room_creation = false
"""
        )
        return path

    def ports(self) -> list[int]:
        return [self.port, self.port + 1]

    def command(self, auth: str) -> list[str]:
        config = self.config(auth)
        self.fix_owner()
        if os.geteuid() != 0:
            return ["prosody", "-F", "--config", str(config)]
        # Prosody refuses to run as root (mod_posix); `prosodyctl start`
        # would switch to the prosody user and daemonize. setpriv switches
        # and execs, so the PID stays the one jackdaw-load samples.
        return ["setpriv", "--reuid=prosody", "--regid=prosody", "--init-groups",
                "prosody", "-F", "--config", str(config)]

    def fix_owner(self) -> None:
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "prosody:prosody", str(self.work)], check=True)

    def version(self) -> str:
        out = subprocess.run(["prosodyctl", "about"], capture_output=True, text=True).stdout
        first = out.splitlines()[0] if out else "?"
        lua = next((line.split(":", 1)[1].strip() for line in out.splitlines() if "Lua version" in line), "?")
        backend = next((line.split(":", 1)[1].strip() for line in out.splitlines() if "Network backend" in line), "")
        return f"{first} ({lua}{', ' + backend if backend else ''})"


class Ejabberd(Server):
    cert: tuple[Path, Path] | None = None

    def data_dir(self) -> Path:
        return self.work / "spool"

    def fix_owner(self) -> None:
        # ejabberdctl runs the VM as the `ejabberd` user when started by root.
        subprocess.run(["chown", "-R", "ejabberd:ejabberd", str(self.work)], check=True)

    def config(self, auth: str) -> Path:
        if auth != "internal":
            raise RuntimeError("ejabberd: only internal auth is measured (no mod_auth_http)")
        crt, key = self.cert
        pem = self.work / "cert.pem"
        pem.write_text(crt.read_text() + key.read_text())
        path = self.work / "ejabberd.yml"
        path.write_text(
            f"""# written by bench/compare
hosts: ["{DOMAIN}"]
loglevel: info
log_rotate_count: 0
certfiles: ["{pem}"]
listen:
  - port: {self.port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: true
    max_stanza_size: 262144
    # ejabberd's default accept backlog is small enough that 50 logins in
    # flight overflow it (SYN retransmits: connects of 1, 3, 7 s); Jackdaw's
    # (1024) and Prosody's (128) are not reached.
    backlog: 1024
auth_method: internal
# Hashed like the other two (SCRAM-SHA-1 keys), not plain text.
auth_password_format: scram
auth_scram_hash: sha
# jackdaw-load --register creates thousands of accounts from one address.
registration_timeout: infinity
acl:
  loopback:
    ip: ["127.0.0.0/8"]
access_rules:
  register:
    allow: all
  muc_create:
    allow: all
# No traffic shaping: the other two have none.
shaper_rules: {{}}
modules:
  mod_roster: {{}}
  mod_disco: {{}}
  mod_ping: {{}}
  mod_version: {{}}
  mod_offline: {{}}
  mod_register:
    access: register
    ip_access: all
  mod_muc:
    host: "rooms.{DOMAIN}"
    access_create: muc_create
"""
        )
        ctl = self.work / "ejabberdctl.cfg"
        # ERL_DIST_PORT: a fixed distribution port, so no epmd daemon is
        # started (it would outlive the run).
        ctl.write_text(
            'ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"\n'
            f"ERL_DIST_PORT={self.port + 3}\n"
            f"EJABBERD_PID_PATH={self.work}/ejabberd.pid\n"
            f"EJABBERD_CONFIG_PATH={path}\n"
        )
        self.fix_owner()
        return path

    def ports(self) -> list[int]:
        return [self.port, self.port + 3]

    def command(self, auth: str) -> list[str]:
        config = self.config(auth)
        # As root, ejabberdctl would `su` to the ejabberd user, and su puts
        # the VM in a session of its own that a group kill does not reach.
        # Started as that user already, it runs the VM as its own child.
        user = ["setpriv", "--reuid=ejabberd", "--regid=ejabberd", "--init-groups"] if os.geteuid() == 0 else []
        return [
            *user, "ejabberdctl", "--ctl-config", str(self.work / "ejabberdctl.cfg"), "--config", str(config),
            "--logs", str(self.work / "logs"), "--spool", str(self.data_dir()),
            "--node", "benchejabberd@localhost", "foreground",
        ]

    def start(self, auth: str = "internal") -> None:
        (self.work / "logs").mkdir(exist_ok=True)
        self.data_dir().mkdir(exist_ok=True)
        super().start(auth)

    def env(self) -> dict:
        env = dict(os.environ)
        if os.geteuid() == 0:
            env["HOME"] = "/var/lib/ejabberd"  # the Erlang cookie lives there, as with su
        return env

    def stop(self) -> None:
        # SIGTERM to the VM itself: it shuts down cleanly on it, whatever
        # the shell scripts above it do with signals.
        if self.proc is not None and self.proc.poll() is None:
            for p in descendants(self.proc.pid):
                if comm(p).startswith("beam"):
                    try:
                        os.kill(p, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
        super().stop()

    def pid(self) -> int:
        # The VM (beam.smp) is under setpriv → ejabberdctl → erl; that is the
        # process whose CPU and RSS count.
        assert self.proc is not None
        for _ in range(50):
            beams = [p for p in descendants(self.proc.pid) if comm(p).startswith("beam")]
            if beams:
                return beams[0]
            time.sleep(0.1)
        die("ejabberd: no beam.smp process found under ejabberdctl", self.log)

    def version(self) -> str:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "ejabberd"], capture_output=True, text=True)
        otp = subprocess.run(
            ["erl", "-noshell", "-eval", 'io:format("~s", [erlang:system_info(otp_release)]), halt().'],
            capture_output=True, text=True,
        ).stdout.strip()
        return f"ejabberd {out.stdout.strip()} (Debian), Erlang/OTP {otp}"


# ---------------------------------------------------------------------------
# The generator.


class Generator:
    def __init__(self, results: Path, mech: str) -> None:
        self.results = results
        self.mech = mech  # SCRAM-SHA-1: the strongest SCRAM all three servers offer

    def run(self, server: Server, tag: str, args: list[str], *, mech: str | None = None,
            timeout: float = 600) -> dict:
        """One jackdaw-load run against `server`; returns its JSON report."""
        out = self.results / f"{server.name}-{tag}.json"
        cmd = [
            "taskset", "-c", CLIENT_CORE, str(LOAD),
            "--server", f"127.0.0.1:{server.port}", "--domain", DOMAIN,
            "--mech", mech or self.mech, "--server-pid", str(server.pid()),
            "--json", str(out), "--quiet", *args,
        ]
        log = self.results / f"{server.name}-{tag}.txt"
        print(f"  {server.name:<8} {tag:<24} ", end="", flush=True)
        t0 = time.monotonic()
        with open(log, "w") as f:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            try:
                rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = -1
        report = json.loads(out.read_text()) if out.exists() else {"error": f"no report (exit {rc})"}
        report["_exit"] = rc
        print(f"{time.monotonic() - t0:5.1f} s  {headline(report)}")
        return report


def headline(r: dict) -> str:
    """One line for the progress output."""
    if r.get("error"):
        return f"ERROR: {r['error']}"
    s = r.get("scenario")
    other = (f"  (server CPU {cpu(r):.0f}%, generator {r.get('generator_cpu_percent', 0):.0f}%, "
             f"other {r.get('other_cpu_percent', 0):.0f}%)")
    if r.get("register"):
        g = r["register"]
        return f"{g.get('created', 0)} created, {g.get('existing', 0)} existing, failures {g.get('failures') or 0}"
    if s == "login":
        l = r["login"]
        return f"{l['logins_per_s']:.0f} logins/s, p99 {l['latency']['p99_ms']:.1f} ms, {l['failed']} failed" + other
    if s in ("chat", "muc"):
        m = r[s]
        return (f"{m['sent_per_s']:.0f} sent/s, {m['delivered_per_s']:.0f} delivered/s, "
                f"p99 {m['latency']['p99_ms']:.1f} ms, lost {m['lost']}" + other)
    if s == "idle":
        i = r["idle"]
        return f"{i['sessions']} sessions, {i.get('rss_per_session_kib') or 0:.1f} KiB/session" + other
    return ""


def cpu(r: dict) -> float:
    return (r.get("server") or {}).get("cpu_avg_percent", 0.0)


def cpus(r: dict | None) -> str:
    """Where the cores went: the server's, the generator's, everyone else's."""
    r = r or {}
    return (f"CPU server {cpu(r):.0f}% / generator {r.get('generator_cpu_percent', 0):.0f}% / "
            f"other {r.get('other_cpu_percent', 0):.0f}%")


def chat_saturated(r: dict) -> bool:
    """The server no longer keeps up with the offered chat load: it delivers
    less than 90% of what was sent per second, loses messages, drops
    sessions, or queues for a second or more."""
    if r.get("error"):
        return True
    c = r["chat"]
    return (
        c["delivered_per_s"] < 0.9 * c["sent_per_s"]
        or c["lost"] > 0.01 * max(c["expected"], 1)
        or c["dropped_sessions"] > 0
        or c["latency"]["p99_ms"] >= 1000
    )


# ---------------------------------------------------------------------------
# The scenarios.


def register(gen: Generator, s: Server, scale: Scale) -> dict:
    """Create user1..userN with in-band registration (one login attempt each
    afterwards shows they work), then stop the server and snapshot its data."""
    s.start("internal")
    r = gen.run(s, "register", ["--users", str(scale.users), "--register", "--concurrency", "50",
                                "--duration", "1", "login", "--max-logins", "1"], timeout=900)
    reg = r.get("register") or {}
    bad = sum((reg.get("failures") or {}).values())
    if r.get("error") or bad or reg.get("created", 0) + reg.get("existing", 0) < scale.users:
        die(f"{s.name}: registering {scale.users} accounts failed: {reg} {r.get('error')}", s.log)
    s.stop()
    s.snapshot()
    return r


def run_server(gen: Generator, s: Server, scale: Scale, args, half_rate: float | None) -> dict:
    """Every scenario against one server; each on a freshly started copy."""
    out: dict = {"version": s.version()}
    print(f"\n{s.name}: {out['version']}")
    out["register"] = register(gen, s, scale)

    s.fresh()
    out["login"] = gen.run(s, "login", ["--users", str(scale.login_users), "--duration", str(scale.login_duration),
                                        "--concurrency", str(scale.login_concurrency), "login"])
    if not isinstance(s, Ejabberd) and not args.no_http:
        s.fresh("http")
        # PLAIN: mod_auth_http can only check a password it is given.
        out["login_http"] = gen.run(s, "login-http", [
            "--users", str(scale.login_users), "--duration", str(scale.login_duration),
            "--concurrency", str(scale.login_concurrency), "login"], mech="PLAIN")

    # Chat saturation: raise the offered load step by step (a fresh server
    # each time) until the server stops keeping up; its capacity is the most
    # it delivered per second in any step.
    steps = []
    offered = scale.chat_start
    while offered <= scale.chat_max:
        s.fresh()
        rate = offered / scale.chat_users
        r = gen.run(s, f"chat-{int(offered)}", [
            "--users", str(scale.chat_users), "--duration", str(scale.chat_duration),
            "chat", "--rate", f"{rate:g}", "--drain", str(scale.chat_drain)])
        r["_offered"] = offered
        steps.append(r)
        if chat_saturated(r):
            break
        offered *= scale.chat_factor
    out["chat_steps"] = steps

    if half_rate is not None:
        out["chat_half"] = chat_half(gen, s, scale, half_rate)

    s.fresh()
    n = scale.idle_sessions
    out["idle"] = gen.run(s, f"idle-{n}", [
        "--users", str(n), "--concurrency", str(scale.login_concurrency), "--duration", str(scale.idle_duration),
        "idle", "--settle", str(scale.idle_settle)], timeout=1200)

    if not args.no_muc:
        s.fresh()
        out["muc"] = gen.run(s, "muc", [
            "--users", str(scale.muc_occupants), "--duration", str(scale.muc_duration),
            "muc", "--room", ROOM, "--occupants", str(scale.muc_occupants),
            "--senders", str(scale.muc_senders), "--rate", f"{scale.muc_rate:g}"])
    s.stop()
    return out


def chat_half(gen: Generator, s: Server, scale: Scale, total_rate: float) -> dict:
    s.fresh()
    return gen.run(s, "chat-half", [
        "--users", str(scale.chat_users), "--duration", str(scale.half_duration),
        "chat", "--rate", f"{total_rate / scale.chat_users:g}", "--drain", str(scale.chat_drain)])


def chat_capacity(steps: list[dict]) -> tuple[float, dict | None, bool]:
    """(most delivered/s in any step, that step, whether the ramp reached
    saturation at all)."""
    ok = [r for r in steps if not r.get("error")]
    if not ok:
        return 0.0, None, False
    best = max(ok, key=lambda r: r["chat"]["delivered_per_s"])
    return best["chat"]["delivered_per_s"], best, chat_saturated(steps[-1])


# ---------------------------------------------------------------------------
# The table.


def figures(res: dict) -> dict[str, tuple[float | None, str]]:
    """The figures of one server: name → (value, detail)."""
    f: dict[str, tuple[float | None, str]] = {}

    def get(r: dict | None, *path):
        if not r or r.get("error"):
            return None
        for p in path:
            r = (r or {}).get(p)
        return r

    lg = res.get("login")
    f["login_internal"] = (get(lg, "login", "logins_per_s"),
                           f"p99 {get(lg, 'login', 'latency', 'p99_ms') or 0:.1f} ms, {cpus(lg)}")
    lh = res.get("login_http")
    f["login_http"] = (get(lh, "login", "logins_per_s"),
                       f"p99 {get(lh, 'login', 'latency', 'p99_ms') or 0:.1f} ms, {cpus(lh)}") if lh else (None, "not measured")
    cap, best, saturated = chat_capacity(res.get("chat_steps", []))
    f["chat_sat"] = (cap or None, (
        f"at {best['_offered']:.0f}/s offered, p99 {best['chat']['latency']['p99_ms']:.0f} ms, {cpus(best)}"
        + ("" if saturated else "; NOT saturated at the last step")) if best else "failed")
    h = res.get("chat_half")
    f["chat_half_p99"] = (get(h, "chat", "latency", "p99_ms"),
                          f"{get(h, 'chat', 'delivered_per_s') or 0:.0f} delivered/s, p50 "
                          f"{get(h, 'chat', 'latency', 'p50_ms') or 0:.2f} ms, {cpus(h)}") if h else (None, "")
    i = res.get("idle")
    f["idle_kib"] = (get(i, "idle", "rss_per_session_kib"),
                     f"{get(i, 'idle', 'sessions') or 0} sessions, RSS {(get(i, 'idle', 'rss_before_kib') or 0) / 1024:.1f} → "
                     f"{(get(i, 'idle', 'rss_hold_kib') or 0) / 1024:.1f} MiB, {(get(i, 'idle', 'rss_after_kib') or 0) / 1024:.1f} MiB after close, "
                     f"{get(i, 'idle', 'dropped_sessions') or 0} dropped")
    m = res.get("muc")
    f["muc"] = (get(m, "muc", "delivered_per_s"),
                f"p99 {get(m, 'muc', 'latency', 'p99_ms') or 0:.1f} ms, lost {get(m, 'muc', 'lost') or 0}, {cpus(m)}") if m else (None, "not measured")
    return f


ROWS = [
    # key, label, unit, higher is better, the target (text, check(jackdaw, prosody))
    ("login_internal", "logins/s, internal auth (SCRAM-SHA-1, 50 in flight)", "/s", True, None),
    ("login_http", "logins/s, HTTP auth (PLAIN, 50 in flight)", "/s", True,
     ("≥ 10× Prosody", lambda j, p: j >= 10 * p)),
    ("chat_sat", "chat delivered msgs/s at saturation", "/s", True,
     ("≥ 5× Prosody", lambda j, p: j >= 5 * p)),
    ("chat_half_p99", "chat p99 (lower is better) at half Prosody's saturation", "ms", False,
     ("≤ 5 ms", lambda j, p: j <= 5)),
    ("idle_kib", "RSS per idle TLS session (lower is better)", "KiB", False,
     ("≤ 16 KiB", lambda j, p: j <= 16)),
    ("muc", "MUC deliveries/s", "/s", True, None),
]


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "–"
    if unit == "ms":
        return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms"
    if unit == "KiB":
        return f"{v:.1f} KiB"
    return f"{v:,.0f}{unit}"


def load_results(directory: Path) -> tuple[dict, float | None, list[str]]:
    """The per-server results of an earlier run, from its JSON files (for
    --report: print the table again without measuring again)."""
    summary = json.loads((directory / "summary.json").read_text())
    out: dict = {}
    for name, version in summary["versions"].items():
        r: dict = {"version": version}

        def one(tag: str) -> dict | None:
            f = directory / f"{name}-{tag}.json"
            return json.loads(f.read_text()) if f.exists() else None

        for key, tag in (("register", "register"), ("login", "login"), ("login_http", "login-http"),
                         ("chat_half", "chat-half"), ("muc", "muc")):
            if (v := one(tag)) is not None:
                r[key] = v
        idle = sorted(directory.glob(f"{name}-idle-*.json"))
        if idle:
            r["idle"] = json.loads(idle[-1].read_text())
        steps = []
        for f in directory.glob(f"{name}-chat-*.json"):
            if f.stem.rsplit("-", 1)[1].isdigit():
                step = json.loads(f.read_text())
                step["_offered"] = float(f.stem.rsplit("-", 1)[1])
                steps.append(step)
        r["chat_steps"] = sorted(steps, key=lambda x: x["_offered"])
        out[name] = r
    order = [n for n in ("jackdaw", "prosody", "ejabberd") if n in out]
    return out, summary.get("half_rate"), order


def table(results: dict, order: list[str], half_rate: float | None) -> str:
    figs = {name: figures(results[name]) for name in order}
    names = {"jackdaw": "Jackdaw", "prosody": "Prosody", "ejabberd": "ejabberd"}
    head = ["figure", *[names[n] for n in order], "Jackdaw/Prosody", "target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    details = []
    for key, label, unit, _higher, target in ROWS:
        if key == "chat_half_p99" and half_rate is not None:
            label += f" ({half_rate:,.0f}/s)"
        if key == "muc":
            m = next((results[n]["muc"] for n in order if (results[n].get("muc") or {}).get("muc")), None)
            if m:
                posted = m["config"]["rate"] * m["muc"]["senders"]
                label += (f" ({m['muc']['sessions']} occupants, {posted:g} msg/s posted = "
                          f"{posted * m['muc']['sessions']:,.0f}/s expected)")
        vals = [figs[n][key][0] for n in order]
        j, p = figs["jackdaw"][key][0], figs.get("prosody", {}).get(key, (None, ""))[0]
        ratio = "–"
        if j is not None and p:
            ratio = f"{j / p:.2f}×" if j / p >= 0.1 else f"{j / p:.2g}×"
        met = ""
        if target and j is not None and (p is not None or "Prosody" not in target[0]):
            met = "yes" if target[1](j, p or 0) else "no"
        cells = [fmt(v, unit) for v in vals]
        if key == "chat_sat":
            # A server that kept up with the last step of the ramp has a
            # capacity of at least that much, not exactly that much.
            for k, n in enumerate(order):
                if vals[k] is not None and not chat_capacity(results[n].get("chat_steps", []))[2]:
                    cells[k] = "≥ " + cells[k]
        lines.append("| " + " | ".join([label, *cells, ratio,
                                         target[0] if target else "", met]) + " |")
        for n in order:
            details.append(f"- {label}, {names[n]}: {figs[n][key][1]}")
    return "\n".join(lines) + "\n\n" + "\n".join(details) + "\n"


# ---------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench/compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small and short: about 3 minutes for two servers")
    ap.add_argument("--with-ejabberd", action="store_true", help="a third column: ejabberd from Debian")
    ap.add_argument("--results", type=Path, help="results directory (default bench/results/DATE-quick|full)")
    ap.add_argument("--base-port", type=int, default=15200,
                    help="Jackdaw uses BASE..BASE+2, Prosody BASE+100.., ejabberd BASE+200.., the web app BASE+300")
    ap.add_argument("--users", type=int, help="accounts to register (default: the idle run's N)")
    ap.add_argument("--idle-sessions", type=int, help="N of the idle-memory run")
    ap.add_argument("--login-duration", type=float)
    ap.add_argument("--chat-duration", type=float)
    ap.add_argument("--mech", default="SCRAM-SHA-1",
                    help="SASL mechanism of the internal-auth runs (Prosody 0.12 has no SCRAM-SHA-256)")
    ap.add_argument("--no-http", action="store_true", help="skip the HTTP-auth login run")
    ap.add_argument("--no-muc", action="store_true", help="skip the MUC run")
    ap.add_argument("--report", type=Path, metavar="RESULTS_DIR",
                    help="measure nothing: print the table of an earlier run from its JSON files")
    args = ap.parse_args()

    if args.report:
        res, half, order = load_results(args.report)
        print(table(res, order, half), end="")
        return 0

    scale = QUICK if args.quick else FULL
    if args.idle_sessions:
        scale.idle_sessions = args.idle_sessions
    if args.login_duration:
        scale.login_duration = args.login_duration
    if args.chat_duration:
        scale.chat_duration = args.chat_duration
    scale.users = args.users or max(scale.users, scale.idle_sessions, scale.login_users,
                                    scale.chat_users, scale.muc_occupants)

    for binary in (JACKDAW, LOAD):
        if not binary.exists():
            sys.exit(f"compare: {binary} missing: run bench/compare (it builds them) or "
                     "cargo build --release -p jackdaw -p jackdaw-load")
    if os.cpu_count() and os.cpu_count() < 2:
        sys.exit("compare: needs 2 cores (server on core 0, load on core 1)")
    for tool in ("taskset", "openssl", "prosody"):
        if shutil.which(tool) is None:
            sys.exit(f"compare: {tool} not found (bench/compare installs it)")
    if args.with_ejabberd and shutil.which("ejabberdctl") is None:
        sys.exit("compare: ejabberdctl not found (bench/compare --with-ejabberd installs it)")

    # Thousands of sockets per process on both sides.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else max(soft, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard) if hard != resource.RLIM_INFINITY else hard))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile < scale.idle_sessions * 2 + 1000:
        sys.exit(f"compare: open-file limit {nofile} is too low for {scale.idle_sessions} sessions")

    atexit.register(_cleanup)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    results = args.results or BENCH / "results" / f"{stamp}-{'quick' if args.quick else 'full'}"
    results.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="jackdaw-compare-"))
    os.chmod(work, 0o755)  # ejabberd runs as its own user and must reach its dir
    print(f"compare: results in {results}, server dirs in {work}")
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        # Other work on the two cores shows up in every figure; jackdaw-load
        # measures it per run (other_cpu_percent) and the end lists the runs
        # it spoiled.
        print(f"compare: warning: load average {load_before[0]:.2f} before the start; "
              "other processes will compete with the server and the generator")

    web_port = args.base_port + 300
    auth_url = f"http://127.0.0.1:{web_port}/auth"
    crt_key = make_cert(work / "certs")
    servers: list[Server] = [Jackdaw("jackdaw", args.base_port, work / "jackdaw", auth_url)]
    p = Prosody("prosody", args.base_port + 100, work / "prosody", auth_url)
    p.cert = crt_key
    servers.append(p)
    if args.with_ejabberd:
        e = Ejabberd("ejabberd", args.base_port + 200, work / "ejabberd", auth_url)
        e.cert = crt_key
        servers.append(e)
    for s in servers:
        require_free(s.ports(), s.name)

    # The test web app of the e2e suite (mod_auth_http protocol), standalone,
    # with the same numbered accounts; on the client core like the generator.
    webapp = None
    if not args.no_http:
        require_free([web_port], "the test web app")
        webapp = spawn(["taskset", "-c", CLIENT_CORE, sys.executable, "-m", "harness.webapp",
                        "--port", str(web_port), "--users", str(scale.users),
                        "--user-pattern", "user{i}", "--password-pattern", "pass{i}"],
                       results / "webapp.log", cwd=ROOT / "tests" / "e2e")
        wait_port(web_port, webapp, 30, results / "webapp.log", "the test web app")

    gen = Generator(results, args.mech)
    t0 = time.monotonic()
    all_results: dict = {}
    # Prosody first: the "half of Prosody's saturation" rate comes from it.
    order = ["prosody", "jackdaw"] + (["ejabberd"] if args.with_ejabberd else [])
    by_name = {s.name: s for s in servers}
    half_rate = None
    for name in order:
        s = by_name[name]
        all_results[name] = run_server(gen, s, scale, args, half_rate)
        if name == "prosody":
            cap, _, _ = chat_capacity(all_results[name]["chat_steps"])
            if cap:
                half_rate = cap / 2
                # Prosody's own half-rate run, measured now that the rate is known.
                s_ = by_name["prosody"]
                all_results[name]["chat_half"] = chat_half(gen, s_, scale, half_rate)
                s_.stop()
    if webapp is not None:
        stop_process(webapp)

    shown = ["jackdaw", "prosody"] + (["ejabberd"] if args.with_ejabberd else [])
    text = table(all_results, shown, half_rate)
    load_after = os.getloadavg()
    others = {f"{n}/{k}": r.get("other_cpu_percent") for n, res in all_results.items()
              for k, r in res.items() if isinstance(r, dict) and "other_cpu_percent" in r}
    noisy = {k: v for k, v in others.items() if v is not None and v > 15}
    summary = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "profile": "quick" if args.quick else "full",
        "command": " ".join(["bench/compare", *sys.argv[1:]]),
        "scale": scale.__dict__,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "elapsed_s": round(time.monotonic() - t0, 1),
        "versions": {n: r["version"] for n, r in all_results.items()},
        "half_rate": half_rate,
        "figures": {n: figures(r) for n, r in all_results.items()},
        "other_cpu_percent": others,
    }
    (results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (results / "table.md").write_text(text)
    print("\n" + text)
    print(f"versions: {json.dumps(summary['versions'])}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
          f"took {summary['elapsed_s']:.0f} s; results in {results}")
    if noisy:
        print("warning: other processes used more than 15% of a core during: "
              + ", ".join(f"{k} ({v:.0f}%)" for k, v in sorted(noisy.items()))
              + " — those figures are not clean")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
