// @xmpp/client (xmpp.js, the library web chats embed) against the built
// jackdaw binary over XMPP over WebSocket (RFC 7395).
//
// The test starts its own server (harness.mjs) the way
// tests/e2e/harness/server.py does: a temporary data dir, a config with
// ephemeral loopback ports and `consider_websocket_secure = true`, users
// added with `jackdaw user add`, then it waits for data/listeners.json.
// alice logs in with @xmpp/client over ws://127.0.0.1:PORT/xmpp-websocket;
// bob is tests/peers/slixmpp_echo.py (slixmpp over TCP with STARTTLS), which
// answers the first chat message with "echo: <body>". alice disconnects with
// <close/>, the server must answer <close/> and end the WebSocket cleanly;
// SIGTERM must then exit 0.
//
// Environment: JACKDAW_BIN (default <repo>/target/debug/jackdaw) and
// JACKDAW_PYTHON (default <repo>/.venv/bin/python, made by scripts/test).
//
//     cd tests/web && npm ci && node --test

import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";

import { client, xml } from "@xmpp/client";

import { DOMAIN, JackdawServer, Peer, REPO_ROOT, STEP_TIMEOUT_MS, within } from "./harness.mjs";

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

const ECHO_PEER = path.join(REPO_ROOT, "tests/peers/slixmpp_echo.py");
const PASSWORDS = { alice: "alice-Secret-1", bob: "bob-Secret-2" };
const FRAMING_CLOSE = /<close\s+xmlns=["']urn:ietf:params:xml:ns:xmpp-framing["']\s*\/>/;

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
    const health = await server.waitForNoSessions();
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
