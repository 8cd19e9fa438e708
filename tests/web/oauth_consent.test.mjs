// The OAuth 2.0 / OpenID Connect pages of module http_oauth2 (docs/oauth2.md)
// in headless Chromium against the built jackdaw binary: the authorization
// code flow with PKCE as a native app does it.
//
// The test starts its own server (harness.mjs: temporary data dir,
// ephemeral loopback ports, alice added with `jackdaw user add`) with
// `modules_enabled = ["http_oauth2"]`, a registration key and a site name,
// and a tiny HTTP server on 127.0.0.1 that stands for the app's loopback
// redirect URI (RFC 8252 §7.3): it records each request and answers "ok".
// Plain HTTP is fine: the OAuth endpoints answer loopback clients without TLS.
//
// 1. The app registers (RFC 7591, application_type "native", a loopback
//    redirect URI) and gets a client_id and a client_secret.
// 2. Chromium opens the authorization URL (response_type=code, PKCE S256,
//    scope "xmpp openid", a random state): the login page (form#login);
//    alice signs in; the consent page (form#consent) names the client and
//    lists the scopes (ul#scopes) and the site_name. Both pages carry
//    `Content-Security-Policy: default-src 'self'; frame-ancestors 'none'`
//    and `X-Frame-Options: DENY` and have no inline script (the consent
//    page no inline event handler either); Chromium reports no CSP
//    violation; the stylesheet /oauth2/style.css loads and applies.
//    A full-page screenshot of the consent page goes to
//    artifacts/oauth-consent.png.
// 3. alice clicks "allow": Chromium lands on the redirect URI with `code`,
//    the same `state` and `iss` (RFC 9207) = the server's base URL; the app
//    exchanges the code (client_secret_basic, code_verifier) for an
//    access_token and an id_token (ES256 JWT for xmpp:alice@localhost).
//
// A second test: an authorization request with a client_id that is no
// registered client shows an error page (#error, status 400, same security
// headers) and redirects nowhere (RFC 6749 §4.1.2.1).
//
// On failure the report shows the browser console, the document responses
// with their headers, the redirect server's requests and the server's log,
// also written to artifacts/oauth-failure.log with a screenshot
// (artifacts/oauth-failure.png).
//
// Environment: JACKDAW_BIN (see harness.mjs), CHROMIUM.
//
//     cd tests/web && npm ci && node --test oauth_consent.test.mjs

import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";


import {
  CHROMIUM,
  DOMAIN,
  JackdawServer,
  STEP_TIMEOUT_MS,
  launchChromium,
  within,
} from "./harness.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = path.join(HERE, "artifacts");
const SCREENSHOT = path.join(ARTIFACTS, "oauth-consent.png");
const FAILURE_SCREENSHOT = path.join(ARTIFACTS, "oauth-failure.png");
const FAILURE_LOG = path.join(ARTIFACTS, "oauth-failure.log");
const ALICE_PASSWORD = "alice-OAuth-1";
const CLIENT_NAME = "Browser Test App";
const SITE_NAME = "Jackdaw Test";

/** Browser steps: loading a page, following a form. */
const UI_TIMEOUT_MS = 15_000;

const base64url = (bytes) => Buffer.from(bytes).toString("base64url");

/** application/x-www-form-urlencoded encoding of one value (RFC 6749 §2.3.1, Appendix B). */
const formEncode = (value) => new URLSearchParams([["", value]]).toString().slice(1);

/** The JSON payload of a JWS compact serialization (not verified: only read). */
function jwtPart(token, index) {
  const parts = token.split(".");
  assert.equal(parts.length, 3, `a JWT has three parts: ${token}`);
  return JSON.parse(Buffer.from(parts[index], "base64url").toString("utf8"));
}

/** The app's loopback redirect URI: records every request, answers 200 "ok". */
async function startRedirectServer() {
  const requests = [];
  const waiters = [];
  const server = createServer((request, response) => {
    const url = new URL(request.url, "http://127.0.0.1");
    // Chromium asks any new origin for /favicon.ico, sometimes only after
    // the next test has begun: that is not a redirect.
    if (url.pathname === "/favicon.ico") {
      response.writeHead(404).end();
      return;
    }
    requests.push({ method: request.method, url });
    waiters.forEach((wake) => wake());
    response.writeHead(200, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" }).end("ok\n");
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address();
  return {
    redirectUri: `http://127.0.0.1:${port}/cb`,
    requests,
    /** Resolves with the first request (within `ms`). */
    next(ms = STEP_TIMEOUT_MS) {
      return within(
        ms,
        new Promise((resolve) => {
          const check = () => requests.length && resolve(requests[0]);
          waiters.push(check);
          check();
        }),
        "the browser reaching the redirect URI",
      );
    },
    close: () =>
      new Promise((resolve) => {
        server.close(resolve);
        server.closeAllConnections();
      }),
  };
}

/**
 * The headers every page of http_oauth2 must carry (docs/oauth2.md,
 * `oauth2_security_policy`): a CSP with default-src 'self' and
 * frame-ancestors 'none', and X-Frame-Options for older browsers.
 */
function assertSecurityHeaders(headers, what) {
  const csp = headers["content-security-policy"];
  assert.ok(csp, `${what}: a Content-Security-Policy header (headers: ${JSON.stringify(headers)})`);
  assert.ok(csp.includes("default-src 'self'"), `${what}: the CSP has default-src 'self': ${csp}`);
  assert.ok(csp.includes("frame-ancestors 'none'"), `${what}: the CSP has frame-ancestors 'none': ${csp}`);
  assert.match(headers["x-frame-options"] || "(none)", /^deny$/i, `${what}: X-Frame-Options: DENY`);
}

describe("http_oauth2 pages in headless Chromium", () => {
  let server = null;
  let redirects = null;
  let browser = null;
  let base = null;
  let client = null; // the registration response
  const consoleLog = []; // the pages' console, CSP violations, refused requests
  const documents = []; // every document (page) response from the server (playwright Response)
  const cssResponses = []; // every response for /oauth2/style.css

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} does not exist: apt-get install chromium (or set CHROMIUM)`);
    mkdirSync(ARTIFACTS, { recursive: true });
    for (const stale of [SCREENSHOT, FAILURE_SCREENSHOT, FAILURE_LOG]) rmSync(stale, { force: true });
    server = new JackdawServer(
      {},
      {
        modules_enabled: ["http_oauth2"],
        oauth2_registration_key: "web-test-registration-key-0123456789",
        site_name: SITE_NAME,
      },
    );
    server.addUser("alice", ALICE_PASSWORD);
    await server.start();
    base = `http://127.0.0.1:${server.port("http")}`;
    redirects = await startRedirectServer();
    browser = await launchChromium(UI_TIMEOUT_MS);
  });

  after(async () => {
    if (browser) await browser.close().catch(() => {});
    if (redirects) await redirects.close();
    if (server) {
      // SIGTERM must still end the server cleanly with the module loaded.
      const { code, signal } = await server.stop().catch((error) => ({ code: String(error), signal: null }));
      server.cleanup();
      assert.equal(signal, null, `jackdaw was killed by ${signal}`);
      assert.equal(code, 0, "jackdaw exits 0 after SIGTERM");
    }
  });

  /** A fresh browser context (no cookies) that reaches nothing but 127.0.0.1 and records what the tests check. */
  async function newPage() {
    const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
    context.setDefaultTimeout(UI_TIMEOUT_MS);
    await context.route("**/*", (route) => {
      const url = new URL(route.request().url());
      if (url.hostname === "127.0.0.1" || url.protocol === "data:") return route.continue();
      consoleLog.push(`[refused request] ${route.request().resourceType()} ${route.request().method()} ${url.href}`);
      return route.abort("blockedbyclient");
    });
    // Injected by the browser, not by the page: the CSP does not apply to it.
    await context.addInitScript(() => {
      window.cspViolations = [];
      document.addEventListener("securitypolicyviolation", (event) =>
        window.cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || "(inline)"}`),
      );
    });
    const page = await context.newPage();
    page.on("console", (message) => consoleLog.push(`[${message.type()}] ${message.text()}`));
    page.on("pageerror", (error) => consoleLog.push(`[pageerror] ${error.stack || error}`));
    page.on("requestfailed", (request) =>
      consoleLog.push(`[requestfailed] ${request.url()}: ${request.failure()?.errorText}`),
    );
    page.on("response", (response) => {
      const request = response.request();
      const url = new URL(response.url());
      if (url.pathname === "/oauth2/style.css") {
        cssResponses.push({ status: response.status(), type: response.headers()["content-type"] });
      }
      if (request.resourceType() === "document" && url.hostname === "127.0.0.1") documents.push(response);
    });
    return page;
  }

  /** Runs a test body; on failure adds everything seen to the error (and to artifacts/). */
  async function reporting(currentPage, body) {
    try {
      await body();
    } catch (error) {
      const page = currentPage();
      if (page) {
        try {
          await page.screenshot({ path: FAILURE_SCREENSHOT, fullPage: true, timeout: 5_000 });
          consoleLog.push(`(screenshot at the failure: ${FAILURE_SCREENSHOT}, page ${page.url()})`);
        } catch (inner) {
          consoleLog.push(`(no failure screenshot: ${inner.message})`);
        }
      }
      error.message +=
        `\n\n===== browser console =====\n${consoleLog.join("\n")}` +
        `\n\n===== document responses =====\n${documents
          .map((d) => `${d.status()} ${d.request().method()} ${d.url()}\n    ${JSON.stringify(d.headers())}`)
          .join("\n")}` +
        `\n\n===== redirect URI requests =====\n${
          redirects ? redirects.requests.map((r) => `${r.method} ${r.url.href}`).join("\n") : "(not started)"
        }` +
        `\n\n===== jackdaw log (${server?.logPath}) =====\n${server ? server.logTail() : "(not started)"}`;
      writeFileSync(FAILURE_LOG, error.message);
      error.message += `\n\n(all of this is also in ${FAILURE_LOG})`;
      throw error;
    } finally {
      const page = currentPage();
      if (page) await page.context().close().catch(() => {});
    }
  }

  const CODE_FLOW = "a native app gets alice's consent through the login and consent pages, then tokens";
  test(CODE_FLOW, { timeout: 60_000 }, async (t) => {
    let page = null;
    await reporting(
      () => page,
      async () => {
        // 1. Dynamic client registration (RFC 7591).
        const registration = await fetch(`${base}/oauth2/register`, {
          method: "POST",
          headers: { "content-type": "application/json", accept: "application/json" },
          body: JSON.stringify({
            client_name: CLIENT_NAME,
            client_uri: "https://app.example.com/",
            application_type: "native",
            redirect_uris: [redirects.redirectUri],
            scope: "xmpp openid",
          }),
        });
        const registrationText = await registration.text();
        assert.equal(registration.status, 201, `registration answers 201 Created: ${registrationText}`);
        client = JSON.parse(registrationText);
        assert.ok(client.client_id, `a client_id: ${registrationText}`);
        assert.ok(client.client_secret, `a client_secret (client_secret_basic is the default): ${registrationText}`);

        // 2. The authorization request, PKCE S256 (RFC 7636 §4).
        const verifier = base64url(randomBytes(32));
        const challenge = base64url(createHash("sha256").update(verifier).digest());
        const state = base64url(randomBytes(16));
        const authorize = new URL(`${base}/oauth2/authorize`);
        for (const [key, value] of Object.entries({
          response_type: "code",
          client_id: client.client_id,
          redirect_uri: redirects.redirectUri,
          scope: "xmpp openid",
          state,
          code_challenge: challenge,
          code_challenge_method: "S256",
        })) {
          authorize.searchParams.set(key, value);
        }

        page = await newPage();
        const loginResponse = await page.goto(authorize.href, { waitUntil: "load" });
        assert.equal(loginResponse.status(), 200, "the authorization endpoint answers with the login page");
        assertSecurityHeaders(await loginResponse.allHeaders(), "login page");
        const login = page.locator("form#login");
        await login.waitFor({ state: "visible" });
        assert.equal(await page.locator("script:not([src])").count(), 0, "no inline <script> on the login page");

        // 3. alice signs in.
        const documentsBefore = documents.length;
        await login.locator('input[name="username"]').fill("alice");
        await login.locator('input[name="password"]').fill(ALICE_PASSWORD);
        await login.locator('button:not([type]), button[type="submit"], input[type="submit"]').first().click();
        const consent = page.locator("form#consent");
        await consent.waitFor({ state: "visible" });
        await page.waitForLoadState("load");

        // The response that brought the consent page (after the login
        // POST, possibly through a redirect back to /oauth2/authorize).
        const consentDocument = documents.slice(documentsBefore).at(-1);
        assert.ok(consentDocument, "a document response brought the consent page");
        assert.equal(consentDocument.status(), 200, `the consent page answers 200: ${consentDocument.url()}`);
        assertSecurityHeaders(await consentDocument.allHeaders(), "consent page");

        // What alice is asked.
        await assert.doesNotReject(consent.locator("#allow").waitFor({ state: "visible" }), "an allow button");
        await assert.doesNotReject(consent.locator("#deny").waitFor({ state: "visible" }), "a deny button");
        // textContent, not innerText: the stylesheet may change the case (text-transform).
        const pageText = (await page.locator("body").textContent()).replace(/\s+/g, " ");
        assert.ok(pageText.includes(CLIENT_NAME), `the consent page names the client: ${pageText}`);
        assert.ok(pageText.includes(SITE_NAME), `the consent page shows site_name: ${pageText}`);
        const scopes = await page.locator("ul#scopes > li").allInnerTexts();
        assert.equal(scopes.length, 2, `two scopes listed: ${JSON.stringify(scopes)}`);
        assert.ok(scopes.some((s) => /\bxmpp\b/i.test(s)), `xmpp is listed: ${JSON.stringify(scopes)}`);
        assert.ok(scopes.some((s) => /\bopenid\b/i.test(s)), `openid is listed: ${JSON.stringify(scopes)}`);

        // No inline script, nothing the CSP had to block, the stylesheet applied.
        assert.equal(await page.locator("script:not([src])").count(), 0, "no inline <script> on the consent page");
        const handlers = await page.evaluate(
          () =>
            [...document.querySelectorAll("*")].flatMap((element) =>
              [...element.attributes].filter((a) => /^on/i.test(a.name)).map((a) => `${element.tagName} ${a.name}`),
            ),
        );
        assert.deepEqual(handlers, [], "no inline event handler attributes on the consent page");
        const cspMessages = consoleLog.filter((line) => line.includes("Content Security Policy"));
        assert.deepEqual(cspMessages, [], "Chromium logged no CSP violation");
        assert.deepEqual(await page.evaluate(() => window.cspViolations), [], "no securitypolicyviolation event");
        assert.ok(
          cssResponses.some((r) => r.status === 200 && /^text\/css\b/.test(r.type || "")),
          `/oauth2/style.css loaded as text/css: ${JSON.stringify(cssResponses)}`,
        );
        const sheet = await page.evaluate(() => {
          const isOurs = (s) => s.href && new URL(s.href).pathname === "/oauth2/style.css";
          const found = [...document.styleSheets].find(isOurs);
          return found ? { rules: found.cssRules.length } : null;
        });
        assert.ok(sheet && sheet.rules > 0, `the page uses /oauth2/style.css, with rules: ${JSON.stringify(sheet)}`);

        await page.screenshot({ path: SCREENSHOT, fullPage: true });
        t.diagnostic(`screenshot of the consent page: ${SCREENSHOT}`);

        // 4. alice allows: the browser is sent to the redirect URI (RFC 6749 §4.1.2, RFC 9207).
        assert.equal(redirects.requests.length, 0, "nothing reached the redirect URI before alice decided");
        await consent.locator("#allow").click();
        const callback = await redirects.next();
        await page.waitForURL((url) => url.href.startsWith(redirects.redirectUri));
        assert.equal(callback.method, "GET");
        assert.equal(callback.url.pathname, "/cb");
        const query = Object.fromEntries(callback.url.searchParams);
        assert.equal(query.error, undefined, `no error in the authorization response: ${callback.url.search}`);
        assert.ok(query.code, `a code in the authorization response: ${callback.url.search}`);
        assert.equal(query.state, state, "the same state");
        assert.equal(query.iss, base, "iss is the server's base URL (RFC 9207)");

        // 5. The app exchanges the code (RFC 6749 §4.1.3, client_secret_basic).
        const credentials = `${formEncode(client.client_id)}:${formEncode(client.client_secret)}`;
        const basic = Buffer.from(credentials).toString("base64");
        const tokenResponse = await fetch(`${base}/oauth2/token`, {
          method: "POST",
          headers: {
            authorization: `Basic ${basic}`,
            "content-type": "application/x-www-form-urlencoded",
            accept: "application/json",
          },
          body: new URLSearchParams({
            grant_type: "authorization_code",
            code: query.code,
            redirect_uri: redirects.redirectUri,
            code_verifier: verifier,
          }).toString(),
        });
        const tokenText = await tokenResponse.text();
        assert.equal(tokenResponse.status, 200, `the token endpoint answers 200: ${tokenText}`);
        assert.match(
          tokenResponse.headers.get("cache-control") || "",
          /no-store/,
          "token responses are not cached (RFC 6749 §5.1)",
        );
        const tokens = JSON.parse(tokenText);
        assert.ok(tokens.access_token, `an access_token: ${tokenText}`);
        assert.match(tokens.token_type || "", /^bearer$/i, `token_type Bearer: ${tokenText}`);
        assert.ok(tokens.id_token, `an id_token (scope openid): ${tokenText}`);
        const header = jwtPart(tokens.id_token, 0);
        const claims = jwtPart(tokens.id_token, 1);
        assert.equal(header.alg, "ES256", `the id_token is signed with ES256: ${JSON.stringify(header)}`);
        assert.equal(claims.iss, base, `the id_token's iss: ${JSON.stringify(claims)}`);
        assert.equal(claims.sub, `xmpp:alice@${DOMAIN}`, `the id_token's sub: ${JSON.stringify(claims)}`);
        const audience = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
        assert.ok(audience.includes(client.client_id), `the id_token's aud is the client: ${JSON.stringify(claims)}`);
      },
    );
  });

  const UNKNOWN_CLIENT = "an authorization request from an unknown client gets an error page, no redirect";
  test(UNKNOWN_CLIENT, { timeout: 30_000 }, async () => {
    let page = null;
    await reporting(
      () => page,
      async () => {
        const before = redirects.requests.length;
        const authorize = new URL(`${base}/oauth2/authorize`);
        for (const [key, value] of Object.entries({
          response_type: "code",
          client_id: "not-a-registered-client",
          redirect_uri: redirects.redirectUri,
          scope: "xmpp",
          state: "s",
          code_challenge: base64url(createHash("sha256").update("verifier-".repeat(6)).digest()),
          code_challenge_method: "S256",
        })) {
          authorize.searchParams.set(key, value);
        }
        page = await newPage();
        const response = await page.goto(authorize.href, { waitUntil: "load" });
        assert.equal(response.status(), 400, "the authorization endpoint answers 400 for an unknown client");
        assert.equal(new URL(page.url()).origin, base, "the browser stayed on the server (no redirect)");
        assertSecurityHeaders(await response.allHeaders(), "error page");
        await page.locator("#error").waitFor({ state: "visible" });
        assert.equal(await page.locator("script:not([src])").count(), 0, "no inline <script> on the error page");
        assert.equal(redirects.requests.length, before, "nothing reached the redirect URI");
      },
    );
  });
});
