// @xmpp/client (xmpp.js, the library web chats embed) against the built
// jackdaw binary over XMPP over WebSocket (RFC 7395).
//
// The test starts its own server the way tests/e2e/harness/server.py does:
// a temporary data dir, a config with ephemeral loopback ports and
// `consider_websocket_secure = true`, users added with `jackdaw user add`,
// then it waits for data/listeners.json. alice logs in with @xmpp/client
// over ws://127.0.0.1:PORT/xmpp-websocket; bob is tests/peers/slixmpp_echo.py
// (slixmpp over TCP with STARTTLS), which answers the first chat message with
// "echo: <body>". alice disconnects with <close/>, the server must answer
// <close/> and end the WebSocket cleanly; SIGTERM must then exit 0.
//
// Environment: JACKDAW_BIN (default <repo>/target/debug/jackdaw) and
// JACKDAW_PYTHON (default <repo>/.venv/bin/python, made by scripts/test).
//
//     cd tests/web && npm ci && node --test

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { client, xml } from "@xmpp/client";

// @xmpp/websocket uses the global WebSocket, which Node has only from 22 on
// (on 20 behind --experimental-websocket); older Nodes get the `ws` package.
// Either way it is wrapped to keep every frame of the exchange, as it went
// over the wire, for the assertions and the failure report.
const BaseWebSocket = globalThis.WebSocket ?? (await import("ws")).WebSocket;
const wire = [];
let lastSocket = null;
globalThis.WebSocket = class RecordingWebSocket extends BaseWebSocket {
  constructor(...args) {
    super(...args);
    lastSocket = this;
    wire.push(`-- connecting to ${args[0]}, subprotocols ${JSON.stringify(args[1])}`);
    this.addEventListener("open", () => wire.push(`-- open, subprotocol ${JSON.stringify(this.protocol)}`));
    this.addEventListener("message", (event) => wire.push(`S: ${event.data}`));
    this.addEventListener("close", (event) =>
      wire.push(`-- closed: code ${event.code}, wasClean ${event.wasClean}`),
    );
  }

  send(data) {
    wire.push(`C: ${data}`);
    super.send(data);
  }
};

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const BINARY = process.env.JACKDAW_BIN || path.join(REPO_ROOT, "target/debug/jackdaw");
const PYTHON = process.env.JACKDAW_PYTHON || path.join(REPO_ROOT, ".venv/bin/python");
const ECHO_PEER = path.join(REPO_ROOT, "tests/peers/slixmpp_echo.py");
const DOMAIN = "localhost";
const PASSWORDS = { alice: "alice-Secret-1", bob: "bob-Secret-2" };
const FRAMING_CLOSE = /<close\s+xmlns=["']urn:ietf:params:xml:ns:xmpp-framing["']\s*\/>/;

const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 20_000;
const STEP_TIMEOUT_MS = 8_000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves with `promise`, or rejects after `ms` naming `what`. */
function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function toml(value) {
  if (typeof value === "boolean" || typeof value === "number") return String(value);
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(toml).join(", ")}]`;
  throw new TypeError(`cannot render ${value} as TOML`);
}

/** One jackdaw process with its own config, data and ephemeral ports (as harness/server.py). */
class JackdawServer {
  constructor(options = {}) {
    this.workdir = mkdtempSync(path.join(tmpdir(), "jackdaw-web-"));
    this.dataPath = path.join(this.workdir, "data");
    this.configPath = path.join(this.workdir, "jackdaw.toml");
    this.logPath = path.join(this.workdir, "jackdaw.log");
    this.options = {
      interfaces: ["127.0.0.1"],
      c2s_ports: [0],
      c2s_direct_tls_ports: [0],
      http_ports: [0],
      data_path: this.dataPath,
      c2s_timeout: 5,
      log: "debug",
      consider_websocket_secure: true,
      ...options,
    };
    const lines = Object.entries(this.options).map(([key, value]) => `${key} = ${toml(value)}`);
    lines.push("", `[hosts."${DOMAIN}"]`, "");
    writeFileSync(this.configPath, lines.join("\n"));
    this.process = null;
    this.exit = null;
    this.listeners = {};
  }

  get listenersFile() {
    return path.join(this.dataPath, "listeners.json");
  }

  get certPath() {
    return path.join(this.dataPath, "certs", `${DOMAIN}.crt`);
  }

  port(kind) {
    const address = (this.listeners[kind] || [])[0];
    assert.ok(address, `listeners.json names no ${kind} listener: ${JSON.stringify(this.listeners)}`);
    return Number(address.slice(address.lastIndexOf(":") + 1));
  }

  /** `jackdaw --config FILE user add JID`, the password on stdin. */
  addUser(user, password) {
    const jid = `${user}@${DOMAIN}`;
    const result = spawnSync(BINARY, ["--config", this.configPath, "user", "add", jid], {
      input: `${password}\n`,
      encoding: "utf8",
      cwd: this.workdir,
      timeout: 30_000,
    });
    assert.equal(
      result.status,
      0,
      `jackdaw user add ${jid} exited ${result.status}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`,
    );
  }

  /** Starts the server and waits until listeners.json says every port is bound. */
  async start() {
    rmSync(this.listenersFile, { force: true });
    const log = openSync(this.logPath, "a");
    this.process = spawn(BINARY, ["--config", this.configPath, "run"], {
      cwd: this.workdir,
      stdio: ["ignore", log, log],
    });
    closeSync(log);
    this.exited = new Promise((resolve) => {
      this.process.on("exit", (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
    });
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (this.exit) {
        throw new Error(`jackdaw exited (${JSON.stringify(this.exit)}) before writing ${this.listenersFile}`);
      }
      if (existsSync(this.listenersFile)) {
        // Written then renamed by the server, so it is complete.
        this.listeners = JSON.parse(readFileSync(this.listenersFile, "utf8"));
        return;
      }
      await sleep(50);
    }
    this.kill();
    throw new Error(`no ${this.listenersFile} within ${START_TIMEOUT_MS} ms of starting jackdaw`);
  }

  /** SIGTERM, then wait for the exit; returns { code, signal }. */
  async stop() {
    if (!this.exit) this.process.kill("SIGTERM");
    return within(STOP_TIMEOUT_MS, this.exited, "jackdaw exiting after SIGTERM");
  }

  kill() {
    if (this.process && !this.exit) this.process.kill("SIGKILL");
  }

  async health() {
    const response = await fetch(`http://127.0.0.1:${this.port("http")}/health`);
    return response.text();
  }

  logTail(lines = 150) {
    try {
      return readFileSync(this.logPath, "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "(no log written)";
    }
  }

  cleanup() {
    this.kill();
    rmSync(this.workdir, { recursive: true, force: true });
  }
}

/** A tests/peers/ script run with the test Python; stdout lines can be awaited. */
class Peer {
  constructor(script, args) {
    assert.ok(
      existsSync(PYTHON),
      `${PYTHON} does not exist: set JACKDAW_PYTHON to a Python with slixmpp, or run scripts/test`,
    );
    this.transcript = [];
    this.lines = [];
    this.waiters = [];
    this.process = spawn(PYTHON, [script, ...args], {
      env: { ...process.env, PYTHONUNBUFFERED: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.exited = new Promise((resolve) => this.process.on("exit", (code) => resolve(code)));
    createInterface({ input: this.process.stdout }).on("line", (line) => {
      this.transcript.push(`out| ${line}`);
      this.lines.push(line);
      this.waiters.forEach((wake) => wake());
    });
    createInterface({ input: this.process.stderr }).on("line", (line) => this.transcript.push(`err| ${line}`));
  }

  /** Waits until the peer prints a stdout line for which `match` holds; returns it. */
  async expectLine(match, what, ms = STEP_TIMEOUT_MS) {
    const found = () => this.lines.find(match);
    return within(
      ms,
      new Promise((resolve) => {
        const check = () => {
          const line = found();
          if (line !== undefined) resolve(line);
        };
        this.waiters.push(check);
        check();
      }),
      `slixmpp peer printing ${what}`,
    );
  }

  async wait(ms = STEP_TIMEOUT_MS) {
    return within(ms, this.exited, "slixmpp peer exiting");
  }

  kill() {
    if (this.process.exitCode === null) this.process.kill("SIGKILL");
  }
}

const TITLE = "@xmpp/client logs in over WebSocket, chats with slixmpp over TCP and disconnects cleanly";

test(TITLE, { timeout: 60_000 }, async () => {
  const server = new JackdawServer();
  const transcript = wire; // every frame alice's client sent and received
  let peer = null;
  let xmpp = null;
  try {
    server.addUser("alice", PASSWORDS.alice);
    server.addUser("bob", PASSWORDS.bob);
    await server.start();

    // bob: slixmpp on the STARTTLS port, trusting the server's certificate.
    peer = new Peer(ECHO_PEER, [
      "--jid", `bob@${DOMAIN}`,
      "--password", PASSWORDS.bob,
      "--port", String(server.port("c2s")),
      "--cafile", server.certPath,
      "--timeout", "20",
    ]);
    await peer.expectLine((line) => line === "READY", "READY (logged in and online)");

    // alice: @xmpp/client over ws://.
    const service = `ws://127.0.0.1:${server.port("http")}/xmpp-websocket`;
    xmpp = client({ service, domain: DOMAIN, resource: "node", username: "alice", password: PASSWORDS.alice });
    const errors = [];
    xmpp.on("error", (error) => errors.push(error));
    const messages = [];
    let messageArrived = () => {};
    xmpp.on("stanza", (stanza) => {
      if (stanza.is("message")) {
        messages.push(stanza);
        messageArrived();
      }
    });
    const online = new Promise((resolve) => xmpp.once("online", resolve));
    await within(STEP_TIMEOUT_MS, xmpp.start(), "@xmpp/client login over WebSocket");
    const address = await within(STEP_TIMEOUT_MS, online, "@xmpp/client 'online'");
    assert.equal(address.toString(), `alice@${DOMAIN}/node`, "the bound JID");
    assert.equal(lastSocket.protocol, "xmpp", "RFC 7395: the server selected the xmpp subprotocol");
    assert.ok(
      transcript.some((line) => line.startsWith("S: <open") && line.includes("urn:ietf:params:xml:ns:xmpp-framing")),
      "the server answered with an RFC 7395 <open/>",
    );

    // alice → bob, and bob's echo back to alice's full JID.
    await xmpp.send(xml("presence"));
    const body = `hello from @xmpp/client ${Date.now()}`;
    const gotEcho = new Promise((resolve) => {
      const check = () => {
        const echo = messages.find((m) => m.getChildText("body") === `echo: ${body}`);
        if (echo) resolve(echo);
      };
      messageArrived = check;
      check();
    });
    await xmpp.send(xml("message", { to: `bob@${DOMAIN}`, type: "chat", id: "web1" }, xml("body", {}, body)));
    const echoed = await peer.expectLine((line) => line.startsWith("ECHOED "), "ECHOED (bob got the message)");
    assert.equal(echoed, `ECHOED alice@${DOMAIN}/node`, "bob saw the message from alice's WebSocket resource");
    const echo = await within(STEP_TIMEOUT_MS, gotEcho, "alice receiving bob's echo");
    assert.match(echo.attrs.from, new RegExp(`^bob@${DOMAIN}/`), "the echo comes from bob's full JID");
    assert.equal(echo.attrs.to, `alice@${DOMAIN}/node`);
    assert.equal(echo.attrs.type, "chat");
    assert.equal(await peer.wait(), 0, "the slixmpp peer exits 0 after echoing");

    // A clean disconnect: <close/> answered with <close/>, WebSocket closed cleanly.
    const disconnected = new Promise((resolve) => xmpp.once("disconnect", resolve));
    const offline = new Promise((resolve) => xmpp.once("offline", resolve));
    await within(STEP_TIMEOUT_MS, xmpp.stop(), "@xmpp/client stop()");
    const { clean } = await within(STEP_TIMEOUT_MS, disconnected, "'disconnect' after stop()");
    await within(STEP_TIMEOUT_MS, offline, "'offline' after stop()");
    assert.ok(
      transcript.some((line) => line.startsWith("C: ") && FRAMING_CLOSE.test(line)),
      "alice's client sent <close/>",
    );
    assert.ok(
      transcript.some((line) => line.startsWith("S: ") && FRAMING_CLOSE.test(line)),
      "the server answered <close/>",
    );
    assert.equal(clean, true, "the WebSocket closing handshake completed");
    assert.equal(xmpp.status, "offline");
    assert.deepEqual(errors, [], "@xmpp/client reported no error");
    xmpp = null;

    // Both sessions are gone on the server.
    const deadline = Date.now() + 5_000;
    let health = await server.health();
    while (!health.includes("sessions=0") && Date.now() < deadline) {
      await sleep(50);
      health = await server.health();
    }
    assert.match(health, /sessions=0\b/, "no session left after both clients left");

    const { code, signal } = await server.stop();
    assert.equal(signal, null, `jackdaw was killed by ${signal}`);
    assert.equal(code, 0, "jackdaw exits 0 after SIGTERM");
  } catch (error) {
    error.message +=
      `\n\n===== @xmpp/client transcript =====\n${transcript.join("\n")}` +
      `\n\n===== slixmpp peer =====\n${peer ? peer.transcript.join("\n") : "(not started)"}` +
      `\n\n===== jackdaw log (${server.logPath}) =====\n${server.logTail()}`;
    throw error;
  } finally {
    if (xmpp) await xmpp.stop().catch(() => {});
    if (peer) peer.kill();
    server.cleanup();
  }
});
