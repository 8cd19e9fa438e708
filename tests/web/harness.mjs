// What the web-client tests share: the jackdaw server they start (the way
// tests/e2e/harness/server.py does) and the slixmpp peers they talk to.
//
// Environment: JACKDAW_BIN (default <repo>/target/debug/jackdaw) and
// JACKDAW_PYTHON (default <repo>/.venv/bin/python, made by scripts/test).

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const BINARY = process.env.JACKDAW_BIN || path.join(REPO_ROOT, "target/debug/jackdaw");
export const PYTHON = process.env.JACKDAW_PYTHON || path.join(REPO_ROOT, ".venv/bin/python");
export const DOMAIN = "localhost";

export const START_TIMEOUT_MS = 30_000;
export const STOP_TIMEOUT_MS = 20_000;
export const STEP_TIMEOUT_MS = 8_000;

/** Debian's chromium (never a browser downloaded by a test tool). */
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

/**
 * Headless Chromium as this machine allows it: no sandbox (root), and no
 * background networking, whose connections the closed network refuses.
 */
export async function launchChromium(timeout) {
  const { chromium } = await import("playwright-core");
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout,
  });
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves with `promise`, or rejects after `ms` naming `what`. */
export function within(ms, promise, what) {
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
export class JackdawServer {
  /**
   * `options` are global config options; they override the defaults below.
   * `hostOptions` are the options of `[hosts."localhost"]` (as
   * harness/server.py's host_options), e.g. `modules_enabled`.
   */
  constructor(options = {}, hostOptions = {}) {
    this.workdir = mkdtempSync(path.join(tmpdir(), "jackdaw-web-"));
    this.dataPath = path.join(this.workdir, "data");
    this.configPath = path.join(this.workdir, "jackdaw.toml");
    this.logPath = path.join(this.workdir, "jackdaw.log");
    this.options = {
      interfaces: ["127.0.0.1"],
      c2s_ports: [0],
      c2s_direct_tls_ports: [0],
      http_ports: [0],
      https_ports: [0], // as harness/server.py: never the fixed default 5281
      data_path: this.dataPath,
      c2s_timeout: 5,
      log: "debug",
      consider_websocket_secure: true,
      ...options,
    };
    const lines = Object.entries(this.options).map(([key, value]) => `${key} = ${toml(value)}`);
    this.hostOptions = { ...hostOptions };
    lines.push("", `[hosts."${DOMAIN}"]`);
    lines.push(...Object.entries(this.hostOptions).map(([key, value]) => `${key} = ${toml(value)}`), "");
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

  /** Waits (up to `ms`) until /health reports no session; returns the last answer. */
  async waitForNoSessions(ms = 5_000) {
    const deadline = Date.now() + ms;
    let health = await this.health();
    while (!/sessions=0\b/.test(health) && Date.now() < deadline) {
      await sleep(50);
      health = await this.health();
    }
    return health;
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

/** A slixmpp peer script run with the test Python; stdout lines can be awaited, stdin written. */
export class Peer {
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
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.process.stdin.on("error", () => {}); // the peer may be gone already
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

  /** Sends one line to the peer's stdin. */
  send(line) {
    this.transcript.push(`in | ${line}`);
    this.process.stdin.write(`${line}\n`);
  }

  async wait(ms = STEP_TIMEOUT_MS) {
    return within(ms, this.exited, "slixmpp peer exiting");
  }

  kill() {
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill("SIGKILL");
  }
}
