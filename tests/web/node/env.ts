/**
 * What the web tests get from tests/web/test_node.py and test_browser.py: the gateway's
 * URL and the server's JWT secret, to mint tokens as the server's `token` command does.
 */

import { createHmac, randomUUID } from "node:crypto";
import { StorageClient, type Space } from "../../../clients/web/src/index.js";

/** The gRPC-Web gateway of the server under test. */
export const WEB_URL = required("TMCP_WEB_URL");
const SECRET = required("TMCP_JWT_SECRET");

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the web tests through pytest (tests/web)`);
  return value;
}

function base64url(data: string | Buffer): string {
  return Buffer.from(data).toString("base64url");
}

/** An HS256 token for `user` in `app` (read and write unless scopes are given). */
export function token(app: string, user: string, scopes = ["storage:read", "storage:write"], ttl = 3600): string {
  const now = Math.floor(Date.now() / 1000);
  const header = base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const claims = base64url(JSON.stringify({ sub: user, app, scope: scopes.join(" "), iat: now, exp: now + ttl }));
  const signature = createHmac("sha256", SECRET).update(`${header}.${claims}`).digest("base64url");
  return `${header}.${claims}.${signature}`;
}

/** A fresh app id, so that tests never see each other's spaces. */
export function freshApp(): string {
  return `web-${randomUUID().slice(0, 12)}`;
}

/** A client for `user` in `app`, whose default space is the user's own. */
export function connect(app: string, user: string, options: { scopes?: string[]; fetch?: typeof fetch; retries?: number } = {}): StorageClient {
  const space: Space = { appId: app, userId: user };
  return new StorageClient({
    baseUrl: WEB_URL,
    token: token(app, user, options.scopes),
    space,
    retries: options.retries ?? 0,
    timeout: 30, // generous: CI machines are small and busy
    ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
  });
}
