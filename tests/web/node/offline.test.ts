// OfflineStore on IndexedDB (fake-indexeddb in Node) against the real server through the
// gRPC-Web gateway: queued writes, push, pull, conflicts, and the live mode.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { IDBFactory } from "fake-indexeddb";
import { NotFound, OfflineStore, type MutationOutcome, type StorageClient, type Strategy } from "../../../clients/web/src/index.js";
import { connect, freshApp } from "./env.js";

/** A fetch that fails like a lost network while `online` is false. */
function switchableFetch(): { fetch: typeof fetch; online: boolean } {
  const state: { fetch: typeof fetch; online: boolean } = {
    online: true,
    fetch: ((input: RequestInfo | URL, init?: RequestInit) =>
      state.online ? fetch(input, init) : Promise.reject(new TypeError("fetch failed: offline"))) as typeof fetch,
  };
  return state;
}

async function openStore(
  client: StorageClient,
  factory: IDBFactory,
  options: { strategy?: Strategy; conflicts?: [string, MutationOutcome][]; changed?: string[] } = {},
): Promise<OfflineStore> {
  return OfflineStore.open({
    client,
    clientId: "device-1",
    indexedDB: factory,
    ...(options.strategy === undefined ? {} : { strategy: options.strategy }),
    onConflict: (key, outcome) => options.conflicts?.push([key, outcome]),
    onChange: (keys) => options.changed?.push(...keys),
  });
}

async function until(what: string, check: () => Promise<boolean>, seconds = 10): Promise<void> {
  const deadline = Date.now() + seconds * 1000;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe("OfflineStore", () => {
  test("writes made offline are queued, survive a reopen, and sync when back online", async () => {
    const app = freshApp();
    const network = switchableFetch();
    const device = connect(app, "alice", { fetch: network.fetch });
    const other = connect(app, "alice");
    const factory = new IDBFactory();

    network.online = false;
    let store = await openStore(device, factory);
    await store.put("note/1", { text: "hi" });
    await store.put("blob", new Uint8Array([1, 2, 3]));
    await store.put("gone", 1);
    await store.delete("gone");
    assert.deepEqual(await store.get("note/1"), { text: "hi" });
    assert.equal(await store.get("gone"), undefined);
    assert.equal(await store.pending(), 4);
    await assert.rejects(store.sync()); // offline: the queue stays
    assert.equal(await store.pending(), 4);
    store.close();

    network.online = true;
    store = await openStore(device, factory); // the same IndexedDB database
    assert.equal(await store.pending(), 4);
    await store.sync();
    assert.equal(await store.pending(), 0);
    assert.deepEqual((await other.get("note/1")).value, { text: "hi" });
    assert.deepEqual((await other.get("blob")).value, new Uint8Array([1, 2, 3]));
    await assert.rejects(other.get("gone"), NotFound);

    await other.put("note/2", "from elsewhere");
    await other.delete("note/1");
    await store.sync();
    assert.deepEqual(await store.items("note/"), [["note/2", "from elsewhere"]]);
    store.close();
  });

  test("a write the server keeps open (MANUAL) or rejects reaches onConflict; the key goes back", async () => {
    const app = freshApp();
    const device = connect(app, "alice");
    const other = connect(app, "alice");
    const conflicts: [string, MutationOutcome][] = [];
    const store = await openStore(device, new IDBFactory(), { strategy: "manual", conflicts });

    await store.put("doc", { v: 1 });
    await store.sync();
    await other.put("doc", { v: "server" }); // version 2; the store last saw version 1
    await store.put("doc", { v: "local" });
    await store.put("bad\u0001key", 1); // the server rejects an invalid key
    await store.sync();

    assert.deepEqual(
      conflicts.map(([key, outcome]) => [key, outcome.result]),
      [
        ["doc", "conflict"],
        ["bad\u0001key", "rejected"],
      ],
    );
    assert.equal(conflicts[1]?.[1].error?.reason, "INVALID_KEY");
    assert.deepEqual(await store.get("doc"), { v: "server" });
    assert.equal(await store.get("bad\u0001key"), undefined);
    assert.equal(await store.pending(), 0);
    assert.deepEqual((await other.get("doc")).value, { v: "server" });

    // With the server's version as its base, the next write applies.
    await store.put("doc", { v: "again" });
    await store.sync();
    assert.equal(conflicts.length, 2);
    assert.deepEqual((await other.get("doc", { strong: true })).value, { v: "again" });
    store.close();
  });

  test("a TTL write expires here and on the server; the sync brings the server's expiry", async () => {
    const app = freshApp();
    const other = connect(app, "alice");
    const store = await openStore(connect(app, "alice"), new IDBFactory());
    const before = Date.now();
    await store.put("brief", "soon gone", { ttl: 0.6 });
    await store.put("session", "later", { ttl: 60 });
    const local = (await store.expiresAt("session"))?.getTime() ?? 0;
    assert.ok(local >= before + 60_000 && local <= Date.now() + 60_000);
    await store.sync();
    const server = await other.get("session");
    assert.ok(server.expiresAt !== undefined);
    assert.equal((await store.expiresAt("session"))?.getTime(), server.expiresAt.getTime());
    await new Promise((resolve) => setTimeout(resolve, 700));
    assert.equal(await store.get("brief"), undefined);
    assert.deepEqual(await store.items(), [["session", "later"]]);
    await assert.rejects(other.get("brief"), NotFound);
    store.close();
  });

  test("MERGE: the pull after the push brings the merged value", async () => {
    const app = freshApp();
    const other = connect(app, "alice");
    const store = await openStore(connect(app, "alice"), new IDBFactory(), { strategy: "merge" });
    await store.put("profile", { name: "Ann", city: "Oslo" });
    await store.sync();
    await other.put("profile", { name: "Ann", city: "Rome" });
    await store.put("profile", { name: "Anna", city: "Oslo" });
    await store.sync();
    assert.deepEqual(await store.get("profile"), { name: "Anna", city: "Rome" });
    store.close();
  });

  test("live: changes arrive by Watch, writes are pushed as made, offline writes after reconnecting", async () => {
    const app = freshApp();
    const network = switchableFetch();
    const device = connect(app, "alice", { fetch: network.fetch });
    const other = connect(app, "alice");
    const changed: string[] = [];
    const store = await openStore(device, new IDBFactory(), { changed });
    const stop = new AbortController();
    const running = store.run(stop.signal, { retryDelay: 0.1, maxDelay: 0.5 });
    try {
      await other.put("live/1", "from the server");
      await until("the change is applied locally", async () => (await store.get("live/1")) === "from the server");
      assert.ok(changed.includes("live/1"));

      await store.put("live/2", { mine: true });
      await until("the write reached the server", async () => {
        try {
          return (await other.get("live/2", { strong: true })).version === 1;
        } catch {
          return false;
        }
      });
      await until("the queue is empty", async () => (await store.pending()) === 0);

      network.online = false;
      await store.put("live/3", "offline");
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(await store.pending(), 1);
      await assert.rejects(other.get("live/3"), NotFound);
      network.online = true;
      await until("the offline write reached the server", async () => (await store.pending()) === 0);
      assert.equal((await other.get("live/3", { strong: true })).value, "offline");

      // The echo of our own write brought the server's version: the next write is no conflict.
      await store.put("live/2", { mine: "again" });
      await until("the second write reached the server", async () => (await other.get("live/2", { strong: true })).version === 2);
      const conflicts = [];
      for await (const c of other.conflicts("", { includeResolved: true })) conflicts.push(c);
      assert.deepEqual(conflicts, []);
    } finally {
      stop.abort();
      await running;
      store.close();
    }
  });
});
