// StorageClient in Node against the real server through its gRPC-Web gateway.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  AlreadyExists,
  InvalidArgument,
  NotFound,
  PermissionDenied,
  QuotaExceeded,
  RateLimited,
  StorageError,
  StorageClient,
  Unauthenticated,
  Unavailable,
  VersionConflict,
  type WatchEvent,
} from "../../../clients/web/src/index.js";
import {
  type BadRequest,
  BadRequestSchema,
  type QuotaFailure,
  QuotaFailureSchema,
} from "../../../clients/web/src/gen/google/rpc/error_details_pb.js";
import { WEB_URL, connect, freshApp } from "./env.js";

/** The error a promise rejects with (fails the test when it resolves). */
async function failure(promise: Promise<unknown>): Promise<StorageError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof StorageError, `not a StorageError: ${String(error)}`);
    return error;
  }
  assert.fail("the call succeeded");
}

describe("key-value", () => {
  test("put and get JSON and raw values, with versions and revisions", async () => {
    const kv = connect(freshApp(), "alice");
    const put = await kv.put("profile", { name: "Ann", visits: 1, tags: ["a"], nested: { ok: true, none: null } });
    assert.equal(put.entry.version, 1);
    assert.equal(put.entry.hasValue, false);
    assert.ok(put.revision >= 1);
    assert.equal(put.usage?.usedKeys, 1);
    const entry = await kv.get("profile");
    assert.deepEqual(entry.value, { name: "Ann", visits: 1, tags: ["a"], nested: { ok: true, none: null } });
    assert.equal(entry.contentType, "application/json");
    assert.equal(entry.version, 1);
    assert.match(entry.checksum, /^sha256:[0-9a-f]{64}$/);
    assert.ok(entry.createdAt instanceof Date);

    const bytes = new Uint8Array([0, 1, 2, 255]);
    await kv.put("blob", bytes, { contentType: "application/x-test", metadata: { origin: "node" } });
    const blob = await kv.get("blob", { strong: true });
    assert.deepEqual(blob.value, bytes);
    assert.equal(blob.contentType, "application/x-test");
    assert.deepEqual(blob.metadata, { origin: "node" });
  });

  test("TTL: the entry reports its expiry", async () => {
    const kv = connect(freshApp(), "alice");
    const before = Date.now();
    await kv.put("session", "s", { ttl: 60 });
    const entry = await kv.get("session");
    assert.ok(entry.expiresAt !== undefined);
    assert.ok(entry.expiresAt.getTime() >= before + 55_000 && entry.expiresAt.getTime() <= Date.now() + 65_000);
    const touched = await kv.touch("session", { clearTtl: true });
    assert.equal(touched.expiresAt, undefined);
    assert.equal(touched.version, 1);
  });

  test("errors are typed by ErrorInfo.reason from grpc-status-details-bin", async () => {
    const kv = connect(freshApp(), "alice");
    const missing = await failure(kv.get("absent"));
    assert.ok(missing instanceof NotFound);
    assert.equal(missing.reason, "KEY_NOT_FOUND");
    assert.equal(missing.codeName, "NOT_FOUND");
    assert.equal(missing.domain, "storage.tmcp");

    await kv.put("k", 1);
    const stale = await failure(kv.put("k", 2, { expectedVersion: 7 }));
    assert.ok(stale instanceof VersionConflict);
    assert.equal(stale.reason, "VERSION_MISMATCH");
    assert.equal(stale.currentVersion, 1);

    const exists = await failure(kv.put("k", 3, { expectedVersion: 0 }));
    assert.ok(exists instanceof AlreadyExists);
    assert.equal(exists.reason, "KEY_EXISTS");

    const bad = await failure(kv.put("bad\u0001key", 1));
    assert.ok(bad instanceof InvalidArgument);
    assert.equal(bad.reason, "INVALID_KEY");
    const request = bad.detail<BadRequest>(BadRequestSchema);
    assert.ok(request !== undefined && request.fieldViolations.length > 0, "BadRequest detail decoded");

    const large = await failure(kv.put("big", new Uint8Array(1024 * 1024 + 1)));
    assert.ok(large instanceof InvalidArgument);
    assert.equal(large.reason, "VALUE_TOO_LARGE");
  });

  test("auth errors: another user's space, no token, a bad token", async () => {
    const app = freshApp();
    const alice = connect(app, "alice");
    const forbidden = await failure(alice.get("x", { space: { appId: app, userId: "bob" } }));
    assert.ok(forbidden instanceof PermissionDenied);
    assert.equal(forbidden.reason, "SPACE_FORBIDDEN");

    const anonymous = new StorageClient({ baseUrl: WEB_URL, space: { appId: app, userId: "alice" }, retries: 0 });
    const none = await failure(anonymous.get("x"));
    assert.ok(none instanceof Unauthenticated);

    const forged = new StorageClient({ baseUrl: WEB_URL, token: "not.a.jwt", space: { appId: app, userId: "alice" } });
    const invalid = await failure(forged.get("x"));
    assert.ok(invalid instanceof Unauthenticated);
    assert.equal(invalid.reason, "TOKEN_INVALID");
  });

  test("an unreachable server is Unavailable once the retries are spent", async () => {
    const kv = new StorageClient({
      baseUrl: "http://127.0.0.1:9", // discard port: nothing listens
      token: "t",
      space: { appId: "a", userId: "u" },
      retries: 2,
    });
    const started = Date.now();
    const error = await failure(kv.get("x"));
    assert.ok(error instanceof Unavailable, `${error}`);
    assert.ok(Date.now() - started < 5000);
  });

  test("delete, list pages and quota", async () => {
    const kv = connect(freshApp(), "alice");
    for (const key of ["a/1", "a/2", "a/3", "b/1", "a/4"]) await kv.put(key, { key });
    const listed: string[] = [];
    for await (const entry of kv.list("a/", { pageSize: 2, includeValues: true })) {
      listed.push(entry.key);
      assert.deepEqual(entry.value, { key: entry.key });
    }
    assert.deepEqual(listed, ["a/1", "a/2", "a/3", "a/4"]);

    const gone = await kv.delete("a/1");
    assert.equal(gone.deleted, true);
    assert.equal(gone.usage?.usedKeys, 4);
    assert.equal((await kv.delete("a/1")).deleted, false);

    const quota = await kv.quota();
    assert.equal(quota.usedKeys, 4);
    assert.equal(quota.availableKeys, quota.limitKeys - 4);
    assert.ok(quota.usedBytes > 0);
  });
});

describe("quota", () => {
  test("an admin sets limits; a write over them is QuotaExceeded with its QuotaFailure", async () => {
    const app = freshApp();
    const admin = connect(app, "svc", { scopes: ["storage:admin", "storage:read", "storage:write"] });
    const alice = connect(app, "alice");
    const space = { appId: app, userId: "alice" };
    const overrides = await admin.setQuota({ space }, { limitKeys: 2 });
    assert.deepEqual(overrides, { limitBytes: undefined, limitKeys: 2, maxValueBytes: undefined });
    await alice.put("k1", "a");
    await alice.put("k2", new Uint8Array(10), { ttl: 60 });
    const over = await failure(alice.put("k3", "c"));
    assert.ok(over instanceof QuotaExceeded);
    assert.equal(over.kind, "keys");
    const quotaFailure = over.detail<QuotaFailure>(QuotaFailureSchema);
    assert.ok(quotaFailure !== undefined && quotaFailure.violations.length > 0, "QuotaFailure detail decoded");

    const usage = await alice.usage({ topKeys: 1 });
    assert.equal(usage.usage?.usedKeys, 2);
    assert.equal(usage.expiringKeys, 1);
    assert.deepEqual(usage.largestKeys, [{ key: "k2", size: 10 }]);
    assert.deepEqual(usage.byContentType.map((c) => c.contentType).sort(), ["application/json", "application/octet-stream"]);

    const forbidden = await failure(alice.setQuota({ appId: app }, { limitKeys: 5 }));
    assert.ok(forbidden instanceof PermissionDenied);
    assert.equal(forbidden.reason, "SCOPE_MISSING");
    const totals = await admin.appUsage(app);
    assert.equal(totals.usedKeys, 2);
    assert.deepEqual(totals.largestSpaces[0]?.space, space);

    const cleared = await alice.deletePrefix("");
    assert.equal(cleared.deletedCount, 2);
    assert.equal(cleared.usage?.usedKeys, 0);
    await alice.put("k3", "fits again");
    assert.deepEqual(await admin.setQuota({ space }, {}, { reset: true }), {
      limitBytes: undefined,
      limitKeys: undefined,
      maxValueBytes: undefined,
    });
  });
});

describe("rate limit", () => {
  test("writes over the space's rate are RateLimited with a retryAfter; nothing is written", async () => {
    const kv = connect(freshApp(), "alice"); // the server allows 20 writes at once, then 5/s
    let limited: StorageError | undefined;
    let written = 0;
    for (let i = 0; i < 60 && limited === undefined; i++) {
      try {
        await kv.put(`k${i}`, i);
        written++;
      } catch (error) {
        limited = error as StorageError;
      }
    }
    assert.ok(limited instanceof RateLimited, `not rate limited after ${written} writes: ${limited}`);
    assert.equal(limited.reason, "RATE_LIMITED");
    assert.ok(limited.retryAfter > 0 && limited.retryAfter <= 1, `retryAfter ${limited.retryAfter}`);
    await assert.rejects(kv.get(`k${written}`), NotFound);
  });
});

describe("batch", () => {
  test("batchSet, batchGet in request order, batchDelete, execute", async () => {
    const kv = connect(freshApp(), "alice");
    const set = await kv.batchSet([
      { key: "x", value: 1 },
      { key: "y", value: "two" },
      { key: "bad\u0000", value: 3 },
    ]);
    assert.deepEqual(
      set.results.map((r) => [r.key, r.error === undefined]),
      [
        ["x", true],
        ["y", true],
        ["bad\u0000", false],
      ],
    );
    assert.ok(set.results[2]?.error instanceof InvalidArgument);
    assert.equal((set.results[2]?.error as StorageError).reason, "INVALID_KEY");

    const atomic = await failure(kv.batchSet([{ key: "z", value: 1 }, { key: "x", value: 2, expectedVersion: 9 }], { atomic: true }));
    assert.ok(atomic instanceof VersionConflict);
    await assert.rejects(kv.get("z"), NotFound);

    const got = await kv.batchGet(["y", "missing", "x"]);
    assert.deepEqual(
      got.results.map((r) => [r.key, r.found, r.entry?.value]),
      [
        ["y", true, "two"],
        ["missing", false, undefined],
        ["x", true, 1],
      ],
    );

    const executed = await kv.execute(
      [
        { op: "set", key: "w", value: { n: 1 } },
        { op: "get", key: "w" },
        { op: "delete", key: "x" },
      ],
      { atomic: true },
    );
    assert.equal(executed.results[1]?.found, true);
    assert.deepEqual(executed.results[1]?.entry?.value, { n: 1 });
    assert.equal(executed.results[2]?.deleted, true);

    const deleted = await kv.batchDelete(["y", { key: "w", expectedVersion: 1 }, "never"]);
    assert.deepEqual(
      deleted.results.map((r) => r.deleted),
      [true, true, false],
    );
    assert.equal(deleted.usage?.usedKeys, 0);
  });
});

describe("sync", () => {
  test("watch streams a change made by another client; every event carries a cursor", async () => {
    const app = freshApp();
    const watcher = connect(app, "alice");
    const writer = connect(app, "alice");
    const start = await watcher.status();
    const stop = new AbortController();
    const events: WatchEvent[] = [];
    const watching = (async () => {
      for await (const event of watcher.watch(start.cursor, { prefix: "doc/", signal: stop.signal })) {
        events.push(event);
        if (event.changes.some((c) => c.key === "doc/1" && c.op === "delete")) stop.abort();
      }
    })();
    await writer.put("doc/1", { v: 1 });
    await writer.put("other", 0); // outside the prefix
    await writer.put("doc/2", { v: 2 });
    await writer.delete("doc/1");
    const deadline = setTimeout(() => stop.abort(), 10_000);
    await watching; // ends quietly when aborted
    clearTimeout(deadline);
    // Catch-up may fold a key's changes into its latest state; live ones come one by one.
    const latest = new Map(events.flatMap((e) => e.changes).map((c) => [c.key, c]));
    assert.deepEqual([...latest.keys()].sort(), ["doc/1", "doc/2"]);
    assert.equal(latest.get("doc/1")?.op, "delete");
    assert.equal(latest.get("doc/1")?.version, 2);
    assert.equal(latest.get("doc/2")?.op, "put");
    assert.deepEqual(latest.get("doc/2")?.entry?.value, { v: 2 });
    assert.ok((events.at(-1)?.cursor ?? "") !== "");
  });

  test("push is idempotent, pull pages, conflicts are records", async () => {
    const app = freshApp();
    const kv = connect(app, "alice");
    const first = await kv.push("c1", [
      { mutationId: 1, key: "n", value: { a: 1 } },
      { mutationId: 2, key: "m", value: "x" },
    ]);
    assert.deepEqual(first.outcomes.map((o) => o.result), ["applied", "applied"]);
    assert.equal(first.lastMutationId, 2);
    const again = await kv.push("c1", [{ mutationId: 2, key: "m", value: "x" }]);
    assert.equal(again.outcomes[0]?.result, "duplicate");
    assert.equal(again.outcomes[0]?.originalResult, "applied");

    await kv.put("n", { a: 2 }); // the server moves on: version 2
    const manual = await kv.push("c1", [{ mutationId: 3, key: "n", value: { a: 3 }, baseVersion: 1 }], { strategy: "manual" });
    assert.equal(manual.outcomes[0]?.result, "conflict");
    const conflicts = [];
    for await (const c of kv.conflicts()) conflicts.push(c);
    assert.equal(conflicts.length, 1);
    assert.deepEqual(conflicts[0]?.clientValue, { a: 3 });
    assert.deepEqual(conflicts[0]?.serverValue, { a: 2 });
    const resolved = await kv.resolveConflict(conflicts[0]?.conflictId ?? "", "client");
    assert.equal(resolved?.version, 3);
    assert.deepEqual((await kv.get("n", { strong: true })).value, { a: 3 });

    const gap = await failure(kv.push("c1", [{ mutationId: 9, key: "n", value: 0 }]));
    assert.equal(gap.reason, "MUTATION_GAP");
    assert.equal(gap.metadata["expected_mutation_id"], "4");

    const page = await kv.pull("", { limit: 1, clientId: "c1" });
    assert.equal(page.changes.length, 1);
    assert.equal(page.hasMore, true);
    assert.equal(page.lastMutationId, 3);
    const rest = await kv.pull(page.cursor, { clientId: "c1" });
    assert.equal(rest.hasMore, false);
    const status = await kv.status("c1");
    assert.equal(status.lastMutationId, 3);
    assert.equal(status.cursor, rest.cursor);
  });
});
