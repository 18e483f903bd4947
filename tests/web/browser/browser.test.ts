// The web client in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core; no browser is downloaded) against the real server through the gateway,
// from a page served on the one origin the gateway allows (CORS).

import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { type Server, createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { type BrowserContext, type Page, chromium } from "playwright-core";
import { NotFound } from "../../../clients/web/src/index.js";
import { WEB_URL, connect, freshApp, token } from "../node/env.js";

const PAGE_PORT = Number(process.env["TMCP_PAGE_PORT"]);
const CHROMIUM = process.env["TMCP_CHROMIUM"] ?? "/usr/bin/chromium";
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];
const FILES: Record<string, [string, string]> = {
  "/": ["tests/web/browser/page.html", "text/html; charset=utf-8"],
  "/page.js": ["build/web/browser/page.js", "text/javascript; charset=utf-8"],
};

let server: Server;
let profile: string;
let context: BrowserContext;
let page: Page;
const app = freshApp();
const space = { appId: app, userId: "alice" };
const other = connect(app, "alice"); // another client, from Node (no Origin header)

/** Wait until `check` holds (page.waitForFunction does not await a promise it is given). */
async function eventually(what: string, check: () => Promise<boolean>, seconds = 15): Promise<void> {
  const deadline = Date.now() + seconds * 1000;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

before(async () => {
  assert.ok(PAGE_PORT > 0, "TMCP_PAGE_PORT is not set");
  server = createServer((request, response) => {
    const file = FILES[request.url ?? ""];
    if (file === undefined) {
      response.writeHead(request.url === "/favicon.ico" ? 204 : 404).end();
      return;
    }
    response.writeHead(200, { "content-type": file[1] }).end(readFileSync(file[0]));
  });
  await new Promise<void>((resolve) => server.listen(PAGE_PORT, "127.0.0.1", resolve));
  profile = mkdtempSync(join(tmpdir(), "tmcp-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    timeout: 30_000,
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (message) => console.log(`[page] ${message.text()}`));
  page.on("pageerror", (error) => console.log(`[page error] ${error.message}`));
  await page.goto(`http://127.0.0.1:${PAGE_PORT}/`);
  await page.waitForFunction(() => window.tmcpPage !== undefined);
  await page.evaluate(([url, bearer, s]) => window.tmcpPage.init(url, bearer, s), [WEB_URL, token(app, "alice"), space] as const);
});

after(async () => {
  await context?.close();
  await new Promise((resolve) => server?.close(resolve));
  if (profile) rmSync(profile, { recursive: true, force: true });
});

test("put, then get what was put", async () => {
  const got = await page.evaluate(() => window.tmcpPage.putGet("greeting", { hello: "world" }));
  assert.deepEqual(got, { value: { hello: "world" }, version: 1 });
  assert.deepEqual((await other.get("greeting")).value, { hello: "world" });
});

test("errors carry their reason through CORS (grpc-status-details-bin exposed)", async () => {
  const missing = await page.evaluate(() => window.tmcpPage.error("absent"));
  assert.deepEqual(missing, { name: "NotFound", code: "NOT_FOUND", reason: "KEY_NOT_FOUND" });
  const forbidden = await page.evaluate((s) => window.tmcpPage.error("x", s), { appId: app, userId: "bob" });
  assert.deepEqual(forbidden, { name: "PermissionDenied", code: "PERMISSION_DENIED", reason: "SPACE_FORBIDDEN" });
});

test("a live Watch in the page receives a change made by another client", async () => {
  await page.evaluate(() => window.tmcpPage.startWatch("news/"));
  await other.put("news/1", { headline: "hello from Node" });
  await page.waitForFunction(() => window.tmcpPage.watched().some((c) => c.key === "news/1"), undefined, { timeout: 10_000 });
  const seen = await page.evaluate(() => window.tmcpPage.watched());
  assert.deepEqual(seen, [{ key: "news/1", op: "put", value: { headline: "hello from Node" } }]);
});

test("the offline store queues while offline and syncs when back online", async () => {
  await page.evaluate(() => window.tmcpPage.openStore("tab-1"));
  await other.put("shared/1", "from another client");
  await eventually("the change reached the page's store", async () =>
    (await page.evaluate(() => window.tmcpPage.storeGet("shared/1"))) === "from another client",
  );

  await context.setOffline(true);
  assert.equal(await page.evaluate(() => window.tmcpPage.online()), false);
  await page.evaluate(() => window.tmcpPage.storePut("draft/1", { text: "written offline" }));
  assert.deepEqual(await page.evaluate(() => window.tmcpPage.storeGet("draft/1")), { text: "written offline" });
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.equal(await page.evaluate(() => window.tmcpPage.pending()), 1);
  await assert.rejects(other.get("draft/1"), NotFound);

  await context.setOffline(false);
  await eventually("the queue was pushed", async () => (await page.evaluate(() => window.tmcpPage.pending())) === 0);
  assert.deepEqual((await other.get("draft/1", { strong: true })).value, { text: "written offline" });
});
