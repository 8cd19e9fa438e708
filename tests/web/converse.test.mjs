// Converse.js (the `converse.js` npm package, a complete web chat) in
// headless Chromium against the built jackdaw binary over XMPP over
// WebSocket (RFC 7395).
//
// The test starts its own server (harness.mjs: temporary data dir,
// ephemeral loopback ports, `consider_websocket_secure = true`, alice and
// bob added with `jackdaw user add`; `cross_domain_websocket = true`, as
// the page comes from another origin) and serves, from a tiny HTTP server
// on 127.0.0.1, a page that loads Converse from node_modules/converse.js/
// dist/ and logs alice in (auto_login) over ws://127.0.0.1:PORT/xmpp-websocket.
// bob is slixmpp_chat_peer.py (slixmpp over TCP with STARTTLS, driven over
// stdin/stdout). Through Converse's UI alice opens a chat with bob ("Start a
// new chat"), types a message and presses Enter; bob must receive it, then
// bob replies and the reply must show in alice's chat box. A full-page
// screenshot of the chat is kept in artifacts/converse-chat.png. alice logs
// out through the UI (profile, "Log out", confirm): the WebSocket must close
// and no session may be left on the server; SIGTERM must then exit 0.
//
// Converse 14.0.0 cannot open a chat with someone outside the roster on a
// server without XEP-0191 (blocking command); Jackdaw has it (module
// blocklist), and the test fails if the server stops advertising it.
//
// The browser is Debian's chromium (CHROMIUM, default /usr/bin/chromium)
// driven by playwright-core, which never downloads a browser. Every request
// the page makes to anything but 127.0.0.1 is refused and reported (the
// test machine has no network, and Converse must not need one).
//
// Environment: JACKDAW_BIN, JACKDAW_PYTHON (see harness.mjs), CHROMIUM.
//
//     cd tests/web && npm ci && node --test converse.test.mjs

import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";


import {
  CHROMIUM,
  DOMAIN,
  JackdawServer,
  Peer,
  STEP_TIMEOUT_MS,
  launchChromium,
  within,
} from "./harness.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CONVERSE_DIST = path.join(HERE, "node_modules/converse.js/dist");
const CHAT_PEER = path.join(HERE, "slixmpp_chat_peer.py");
const ARTIFACTS = path.join(HERE, "artifacts");
const SCREENSHOT = path.join(ARTIFACTS, "converse-chat.png");
const FAILURE_SCREENSHOT = path.join(ARTIFACTS, "converse-failure.png");
const FAILURE_LOG = path.join(ARTIFACTS, "converse-failure.log");
const PASSWORDS = { alice: "alice-Converse-1", bob: "bob-Converse-2" };
const ALICE = `alice@${DOMAIN}`;
const BOB = `bob@${DOMAIN}`;
const FRAMING_CLOSE = /<close\s+xmlns=["']urn:ietf:params:xml:ns:xmpp-framing["']\s*\/>/;

/** Browser steps: loading Converse, logging in, rendering. */
const UI_TIMEOUT_MS = 15_000;

const CONTENT_TYPES = {
  ".css": "text/css; charset=utf-8",
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".mp3": "audio/mpeg",
  ".ogg": "audio/ogg",
  ".png": "image/png",
  ".svg": "image/svg+xml",
  ".ttf": "font/ttf",
  ".wasm": "application/wasm",
  ".woff": "font/woff",
  ".woff2": "font/woff2",
};

/**
 * The page: Converse from dist/, logging alice in over WebSocket, plus a
 * small test plugin that records Converse's connection events in
 * window.jackdawTest (for the failure report and the bound JID) and notes
 * whether the server advertises XEP-0191 (see below).
 */
function indexHtml(settings) {
  return `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Converse.js on Jackdaw</title>
  <link rel="stylesheet" href="/converse.min.css">
</head>
<body class="converse-fullscreen">
<script type="module">
  // dist/converse.min.js is an ES module (it also sets window.converse).
  import converse from "/converse.min.js";

  window.jackdawTest = { events: [], jid: null };
  const record = (name, detail) =>
    window.jackdawTest.events.push({ name, detail: detail === undefined ? null : String(detail), at: Date.now() });
  converse.plugins.add("jackdaw-test", {
    initialize() {
      const { api } = this._converse;
      api.listen.on("connected", () => {
        window.jackdawTest.jid = api.connection.get().jid;
        record("connected", window.jackdawTest.jid);
      });
      api.listen.on("reconnected", () => record("reconnected"));
      api.listen.on("disconnected", () => record("disconnected"));
      api.listen.on("logout", () => record("logout"));
      api.listen.on("chatBoxInitialized", (chat) => record("chatBoxInitialized", chat.get("jid")));

      // Converse 14.0.0 makes its blocklist (XEP-0191) only when the server
      // advertises urn:xmpp:blocking, and opening a chat with anyone not in
      // the roster waits for it: without XEP-0191 the chat never opens.
      api.listen.on("discoInitialized", async () => {
        const domain = this._converse.session.get("domain");
        const blocking = await api.disco.supports("urn:xmpp:blocking", domain);
        window.jackdawTest.blocking = blocking;
        record("XEP-0191 advertised", blocking);
      });
    },
  });
  converse.initialize(${JSON.stringify(settings, null, 2)}).catch((error) => record("initialize failed", error));
</script>
</body>
</html>
`;
}

/** Serves the page and node_modules/converse.js/dist/ at http://127.0.0.1:<ephemeral>/; records every request. */
async function startPageServer(settings) {
  const requests = [];
  const server = createServer((request, response) => {
    const url = new URL(request.url, "http://127.0.0.1");
    let status = 200;
    let body;
    let type;
    if (url.pathname === "/") {
      body = indexHtml(settings);
      type = CONTENT_TYPES[".html"];
    } else {
      // dist/ at the root: its chunks and libomemo's WebAssembly (fetched
      // relative to the page) are found where Converse looks for them.
      const file = path.join(CONVERSE_DIST, decodeURIComponent(url.pathname));
      if (file.startsWith(CONVERSE_DIST + path.sep) && existsSync(file) && statSync(file).isFile()) {
        body = readFileSync(file);
        type = CONTENT_TYPES[path.extname(file)] || "application/octet-stream";
      } else {
        status = 404;
      }
    }
    requests.push(`${status} ${request.method} ${request.url}`);
    if (status !== 200) {
      response.writeHead(status, { "content-type": "text/plain" }).end("not found\n");
      return;
    }
    response.writeHead(200, { "content-type": type, "cache-control": "no-store" }).end(body);
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}/`,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.close(resolve);
        server.closeAllConnections();
      }),
  };
}

const TITLE = "Converse.js in headless Chromium logs in over WebSocket and chats with slixmpp";

test(TITLE, { timeout: 90_000 }, async (t) => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} does not exist: apt-get install chromium (or set CHROMIUM)`);
  assert.ok(existsSync(path.join(CONVERSE_DIST, "converse.min.js")), `no Converse in ${CONVERSE_DIST}: run npm ci`);

  // The page comes from another origin (the page server's port) than the
  // WebSocket endpoint, so Jackdaw must be told to accept it, as Prosody is.
  const server = new JackdawServer({ cross_domain_websocket: true });
  const consoleLog = []; // the page's console, errors and refused requests
  const refused = []; // requests the page made to anything but 127.0.0.1
  const wire = []; // every WebSocket frame, as Chromium saw it
  let peer = null;
  let page = null;
  let pages = null;
  let browser = null;
  mkdirSync(ARTIFACTS, { recursive: true });
  for (const stale of [SCREENSHOT, FAILURE_SCREENSHOT, FAILURE_LOG]) rmSync(stale, { force: true });
  try {
    server.addUser("alice", PASSWORDS.alice);
    server.addUser("bob", PASSWORDS.bob);
    await server.start();
    const websocketUrl = `ws://127.0.0.1:${server.port("http")}/xmpp-websocket`;

    // bob: slixmpp on the STARTTLS port, trusting the server's certificate.
    peer = new Peer(CHAT_PEER, [
      "--jid", BOB,
      "--password", PASSWORDS.bob,
      "--port", String(server.port("c2s")),
      "--cafile", server.certPath,
      "--timeout", "80",
    ]);
    await peer.expectLine((line) => line === "READY", "READY (logged in and online)");

    // alice: Converse, served from here, everything local.
    pages = await startPageServer({
      websocket_url: websocketUrl,
      discover_connection_methods: false,
      authentication: "login",
      auto_login: true,
      jid: ALICE,
      password: PASSWORDS.alice,
      auto_reconnect: false,
      assets_path: "/",
      view_mode: "fullscreen",
      i18n: "en",
      loglevel: "debug",
      whitelisted_plugins: ["jackdaw-test"],
      allow_non_roster_messaging: true, // bob is no contact: "Start a new chat"
      play_sounds: false,
      show_desktop_notifications: false,
      use_system_emojis: true,
      autocomplete_providers_url: "",
      xmpp_providers_url: "",
      persistent_store: "sessionStorage",
    });

    browser = await launchChromium(UI_TIMEOUT_MS);
    const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
    context.setDefaultTimeout(UI_TIMEOUT_MS);
    // Nothing but loopback: a request elsewhere would hang on this machine
    // (and a web chat should not phone home in a test anyway).
    await context.route("**/*", (route) => {
      const url = new URL(route.request().url());
      if (url.hostname === "127.0.0.1" || url.protocol === "data:" || url.protocol === "blob:") return route.continue();
      refused.push({ type: route.request().resourceType(), url: url.href });
      consoleLog.push(`[refused request] ${route.request().resourceType()} ${route.request().method()} ${url.href}`);
      return route.abort("blockedbyclient");
    });
    page = await context.newPage();
    page.on("console", (message) => consoleLog.push(`[${message.type()}] ${message.text()}`));
    page.on("pageerror", (error) => consoleLog.push(`[pageerror] ${error.stack || error}`));
    page.on("requestfailed", (request) =>
      consoleLog.push(`[requestfailed] ${request.url()}: ${request.failure()?.errorText}`),
    );
    const sockets = [];
    page.on("websocket", (socket) => {
      sockets.push(socket);
      wire.push(`-- connecting to ${socket.url()}`);
      socket.on("framesent", (frame) => wire.push(`C: ${frame.payload}`));
      socket.on("framereceived", (frame) => wire.push(`S: ${frame.payload}`));
      socket.on("socketerror", (error) => wire.push(`-- error: ${error}`));
      socket.on("close", () => wire.push("-- closed"));
    });

    await page.goto(pages.url, { waitUntil: "load" });

    // Logged in: the roster shows up in the control box, and the test
    // plugin saw "connected" with a full JID of alice.
    const contacts = page.locator("converse-roster .dropdown--contacts");
    await contacts.waitFor({ state: "visible" });
    const aliceFullJid = await page.waitForFunction(() => window.jackdawTest.jid).then((handle) => handle.jsonValue());
    assert.match(aliceFullJid, new RegExp(`^${ALICE}/.+`), "Converse bound a full JID of alice");
    assert.equal(sockets.length, 1, "Converse opened one WebSocket");
    assert.equal(sockets[0].url(), websocketUrl);
    const blocking = await page
      .waitForFunction(() => window.jackdawTest.blocking !== undefined)
      .then(() => page.evaluate(() => window.jackdawTest.blocking));
    assert.equal(blocking, true, "the server advertises XEP-0191, which Converse needs to chat with non-contacts");

    // "Start a new chat" with bob, through the contacts menu.
    await contacts.locator("button").first().click();
    await page.getByRole("button", { name: "Start a new chat" }).click();
    const modal = page.locator("converse-new-chat-modal");
    await modal.locator('input[name="jid"]').fill(BOB);
    await modal.getByRole("button", { name: "Start Chat" }).click();
    const chat = page.locator(`converse-chat[jid="${BOB}"]`);
    const textarea = chat.locator("textarea.chat-textarea");
    await textarea.waitFor({ state: "visible" });

    // alice → bob: type and press Enter.
    const hello = `Hello bob, this is Converse.js on Jackdaw (${Date.now()})`;
    await textarea.click();
    await textarea.pressSequentially(hello, { delay: 5 });
    await textarea.press("Enter");
    const received = await peer.expectLine((line) => line.startsWith("RECEIVED "), "RECEIVED (bob got alice's message)");
    const message = JSON.parse(received.slice("RECEIVED ".length));
    assert.equal(message.body, hello, "bob got the text alice typed");
    assert.equal(message.from, aliceFullJid, "from alice's WebSocket resource");
    const messages = chat.locator(".chat-msg__text");
    await messages.filter({ hasText: hello }).waitFor({ state: "visible" });

    // bob → alice: the reply shows in the chat box.
    const reply = `Hi alice, bob here, answering from slixmpp over TCP (${Date.now()})`;
    peer.send(JSON.stringify({ send: { to: message.from, body: reply } }));
    await peer.expectLine((line) => line.startsWith("SENT "), "SENT (bob's reply)");
    await messages.filter({ hasText: reply }).waitFor({ state: "visible" });
    assert.deepEqual(
      await messages.allInnerTexts(),
      [hello, reply],
      "the chat box shows alice's message and bob's reply, in order",
    );

    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    t.diagnostic(`screenshot of the chat: ${SCREENSHOT}`);

    // Log out through the UI: profile, "Log out", confirm.
    const closed = new Promise((resolve) => sockets[0].once("close", resolve));
    await page.locator("converse-user-profile a.show-profile").click();
    await page.locator("converse-profile-modal").getByRole("button", { name: "Log out" }).click();
    await page.locator("converse-confirm-modal").getByRole("button", { name: "Confirm" }).click();
    await within(STEP_TIMEOUT_MS, closed, "the WebSocket closing after logging out");
    await page.locator("converse-login-form").waitFor({ state: "visible" });
    // Strophe closes the WebSocket right after its <close/>, without
    // waiting for the server's: whether the server's <close/> still gets
    // out is a race, so it is not asserted here (xmpp_client.test.mjs does).
    assert.ok(
      wire.some((line) => line.startsWith("C: ") && FRAMING_CLOSE.test(line)),
      "Converse sent <close/> when logging out",
    );

    // Converse itself came from here: the only outside requests are the
    // sponsors' logos in the fullscreen footer (images, refused at once).
    assert.deepEqual(
      refused.filter((request) => request.type !== "image"),
      [],
      "the page fetched no script, style, font or data from outside",
    );

    peer.send(JSON.stringify({ quit: true }));
    assert.equal(await peer.wait(), 0, "the slixmpp peer exits 0");
    await browser.close();
    browser = null;

    const health = await server.waitForNoSessions();
    assert.match(health, /sessions=0\b/, "no session left after both clients left");
    const { code, signal } = await server.stop();
    assert.equal(signal, null, `jackdaw was killed by ${signal}`);
    assert.equal(code, 0, "jackdaw exits 0 after SIGTERM");
    const closeErrors = server
      .logTail(Infinity)
      .split("\n")
      .filter((line) => line.includes('kind="websocket"') && line.includes("stream closed with error"));
    if (closeErrors.length) t.diagnostic(`jackdaw logged an error for Converse's logout: ${closeErrors.join(" | ")}`);
  } catch (error) {
    if (page) {
      try {
        await page.screenshot({ path: FAILURE_SCREENSHOT, fullPage: true, timeout: 5_000 });
        consoleLog.push(`(screenshot at the failure: ${FAILURE_SCREENSHOT})`);
        const events = await within(2_000, page.evaluate(() => JSON.stringify(window.jackdawTest?.events)), "events");
        consoleLog.push(`(Converse events: ${events})`);
      } catch (inner) {
        consoleLog.push(`(no failure screenshot: ${inner.message})`);
      }
    }
    error.message +=
      `\n\n===== browser console =====\n${consoleLog.join("\n")}` +
      `\n\n===== page server requests =====\n${pages ? pages.requests.join("\n") : "(not started)"}` +
      `\n\n===== WebSocket frames =====\n${wire.join("\n")}` +
      `\n\n===== slixmpp peer =====\n${peer ? peer.transcript.join("\n") : "(not started)"}` +
      `\n\n===== jackdaw log (${server.logPath}) =====\n${server.logTail()}`;
    writeFileSync(FAILURE_LOG, error.message);
    error.message += `\n\n(all of this is also in ${FAILURE_LOG})`;
    throw error;
  } finally {
    if (browser) await browser.close().catch(() => {});
    if (pages) await pages.close();
    if (peer) peer.kill();
    server.cleanup();
  }
});
