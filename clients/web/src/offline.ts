/**
 * `OfflineStore`: a local IndexedDB replica of one space that works offline and syncs,
 * following the rules of the Python `OfflineStore` (clients/python/tmcp_storage/offline.py).
 *
 *     const store = await OfflineStore.open({ client, clientId: "tab-1" });
 *     await store.put("note/1", { text: "hi" });   // local at once, queued for the server
 *     await store.sync();                          // push the queue, then pull what changed
 *
 * Writes are queued with increasing mutation ids in the same local transaction as their
 * effect, so the queue survives a reload and a push can be repeated safely (the server
 * answers DUPLICATE for ids it already applied). Each queued write carries the server
 * version the store last saw of the key as its `baseVersion`, so the server detects
 * conflicts; the strategy decides, and conflicts the server keeps open (MANUAL) or writes
 * it rejected reach `onConflict`, the key going back to the server's state. After the
 * push, the pull brings every key changed since the store's cursor, the effects of its own
 * writes included (merged values, for example).
 *
 * A change from the server never overwrites a local write the server has not applied yet;
 * writes it has applied are known from push answers, from the `lastMutationId` of a pull,
 * and from the store's own echoes in a watch (so an echo that overtakes the push's answer
 * still brings the server's version).
 *
 * `run(signal)` is the live mode: gRPC-Web has no bidi streaming, so instead of the
 * Python store's `Stream` it keeps a `Watch` open from the stored cursor (applying live
 * changes, its own echoes included) and pushes each write as it is made with a unary
 * `Push`; a lost connection or a failed push is retried with backoff, and at once when
 * the browser says it is back online.
 */

import type { StorageClient } from "./client.js";
import { InvalidArgument, NotFound, OutOfRange, RateLimited, type StorageError, fromError } from "./errors.js";
import { openDatabase, request, transact } from "./idb.js";
import type { Entry, JsonValue, Space, ValueInput } from "./models.js";
import type { Change, Mutation, MutationOutcome, Strategy } from "./sync.js";

/** Called with the key and the outcome of a mutation the server did not apply as sent. */
export type ConflictHandler = (key: string, outcome: MutationOutcome) => void;

/** How to open a store. */
export interface OfflineStoreOptions {
  readonly client: StorageClient;
  /**
   * This replica's id, one per local database: the first user to push with it in a space
   * owns it there, and a new database under an old id would see its first writes taken
   * for duplicates of the old database's.
   */
  readonly clientId: string;
  /** The space to replicate (default: the client's). */
  readonly space?: Space;
  readonly strategy?: Strategy;
  readonly onConflict?: ConflictHandler;
  /** Called with the keys a pull or a watch changed locally. */
  readonly onChange?: (keys: readonly string[]) => void;
  /** In live mode, called with each error that made it wait and try again. */
  readonly onError?: (error: StorageError) => void;
  /** The IndexedDB database name (default: `tmcp-storage:<clientId>`). */
  readonly name?: string;
  /** Default globalThis.indexedDB (pass fake-indexeddb's in Node). */
  readonly indexedDB?: IDBFactory;
}

interface EntryRow {
  key: string;
  /** False for a remembered deletion (kept so that a re-creation has the right base). */
  live: boolean;
  value: Uint8Array | JsonValue;
  contentType: string;
  serverVersion: number;
  /** Epoch milliseconds, or null when the entry does not expire. */
  expiresAt: number | null;
}

interface QueueRow {
  mutationId: number;
  key: string;
  value: Uint8Array | JsonValue;
  isDelete: boolean;
  baseVersion: number;
  ttl: number | null;
}

const ENTRIES = "entries";
const QUEUE = "queue";
const META = "meta";
const PUSH_CHUNK = 500;

/** A local replica of one space; see the module documentation. */
export class OfflineStore {
  private pushing: Promise<void> = Promise.resolve();
  private live = false;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;

  private constructor(
    private readonly db: IDBDatabase,
    private readonly options: OfflineStoreOptions,
  ) {}

  /** Open (or create) the store's local database. */
  static async open(options: OfflineStoreOptions): Promise<OfflineStore> {
    const factory = options.indexedDB ?? globalThis.indexedDB;
    if (factory === undefined) throw new TypeError("no IndexedDB here: pass options.indexedDB");
    const db = await openDatabase(factory, options.name ?? `tmcp-storage:${options.clientId}`, 1, (created) => {
      created.createObjectStore(ENTRIES, { keyPath: "key" });
      created.createObjectStore(QUEUE, { keyPath: "mutationId" }).createIndex("key", "key");
      created.createObjectStore(META);
    });
    return new OfflineStore(db, options);
  }

  /** Close the local database. */
  close(): void {
    clearTimeout(this.retryTimer);
    this.db.close();
  }

  // -- local reads and writes ---------------------------------------------------------

  /** The local value of `key` (Uint8Array, or the decoded JSON), or undefined when absent. */
  async get(key: string): Promise<Uint8Array | JsonValue | undefined> {
    const row = await transact(this.db, [ENTRIES], "readonly", (tx) => request<EntryRow | undefined>(tx.objectStore(ENTRIES).get(key)));
    return row !== undefined && visible(row) ? row.value : undefined;
  }

  /** When the local entry of `key` expires (undefined: never, or absent). */
  async expiresAt(key: string): Promise<Date | undefined> {
    const row = await transact(this.db, [ENTRIES], "readonly", (tx) => request<EntryRow | undefined>(tx.objectStore(ENTRIES).get(key)));
    return row?.live && row.expiresAt !== null ? new Date(row.expiresAt) : undefined;
  }

  /** Local `[key, value]` pairs under `prefix`, in key order. */
  async items(prefix = ""): Promise<[string, Uint8Array | JsonValue][]> {
    const rows = await transact(this.db, [ENTRIES], "readonly", (tx) => request<EntryRow[]>(tx.objectStore(ENTRIES).getAll()));
    return rows.filter((row) => row.key.startsWith(prefix) && visible(row)).map((row) => [row.key, row.value]);
  }

  /**
   * Write locally and queue the write (Uint8Array raw, anything else JSON). With `ttl`
   * (seconds) the entry expires that long after this call here, and on the server that
   * long after the write reaches it.
   */
  async put(key: string, value: ValueInput, options: { ttl?: number } = {}): Promise<void> {
    if (value === undefined) throw new TypeError("a value is required (use null for JSON null)");
    if (options.ttl !== undefined && !(options.ttl > 0)) throw new RangeError("ttl must be positive");
    await this.write(key, value, false, options.ttl ?? null);
  }

  /** Delete locally and queue the deletion. */
  async delete(key: string): Promise<void> {
    await this.write(key, null, true, null);
  }

  /** Queued writes not yet acknowledged by the server. */
  async pending(): Promise<number> {
    return transact(this.db, [QUEUE], "readonly", (tx) => request(tx.objectStore(QUEUE).count()));
  }

  private async write(key: string, value: Uint8Array | JsonValue, isDelete: boolean, ttl: number | null): Promise<void> {
    await transact(this.db, [ENTRIES, QUEUE, META], "readwrite", async (tx) => {
      const entries = tx.objectStore(ENTRIES);
      const row = await request<EntryRow | undefined>(entries.get(key));
      const base = row?.serverVersion ?? 0;
      const mutationId = (await request<number | undefined>(tx.objectStore(META).get("nextMutationId"))) ?? 1;
      const queued: QueueRow = { mutationId, key, value, isDelete, baseVersion: base, ttl };
      tx.objectStore(QUEUE).add(queued);
      tx.objectStore(META).put(mutationId + 1, "nextMutationId");
      const local: EntryRow = {
        key,
        live: !isDelete,
        value,
        contentType: row?.contentType ?? "",
        serverVersion: base,
        expiresAt: ttl === null ? null : Date.now() + ttl * 1000,
      };
      entries.put(local);
    });
    if (this.live) this.kick();
  }

  // -- sync ---------------------------------------------------------------------------

  /** Push the queue, then pull every change since the store's cursor. */
  async sync(): Promise<void> {
    await this.push();
    await this.pull();
  }

  /** Push queued writes in id order; acknowledged ones leave the queue. One push at a time. */
  push(): Promise<void> {
    const next = this.pushing.then(() => this.pushQueue());
    this.pushing = next.catch(() => undefined);
    return next;
  }

  private async pushQueue(): Promise<void> {
    for (;;) {
      const rows = await transact(this.db, [QUEUE], "readonly", (tx) =>
        request<QueueRow[]>(tx.objectStore(QUEUE).getAll(null, PUSH_CHUNK)),
      );
      if (rows.length === 0) return;
      let result;
      try {
        result = await this.options.client.push(this.options.clientId, rows.map(toMutation), this.callOptions());
      } catch (error) {
        const failure = fromError(error);
        if (!(failure instanceof OutOfRange) || failure.reason !== "MUTATION_GAP") throw failure;
        // The server already applied ids below the one it expects: drop them.
        const expected = Number(failure.metadata["expected_mutation_id"] ?? "0");
        await this.dropQueuedBelow(expected);
        if (expected <= (rows[0]?.mutationId ?? 0)) throw failure;
        continue;
      }
      await this.setAcked(result.lastMutationId);
      const keys = new Map(rows.map((row) => [row.mutationId, row.key]));
      for (const outcome of result.outcomes) await this.settle(keys.get(outcome.mutationId) ?? "", outcome);
    }
  }

  private async settle(key: string, outcome: MutationOutcome): Promise<void> {
    const original = outcome.result === "duplicate" ? outcome.originalResult : undefined;
    const keptByServer = outcome.result === "conflict" || original === "conflict";
    const rejected = outcome.result === "rejected" || original === "rejected";
    let adopt: Entry | undefined;
    if (rejected) adopt = await this.serverEntry(key);
    else if (keptByServer) adopt = outcome.entry;
    await transact(this.db, [ENTRIES, QUEUE], "readwrite", async (tx) => {
      tx.objectStore(QUEUE).delete(outcome.mutationId);
      if (!keptByServer && !rejected) return;
      // The server did not take the write: the key goes back to the server's state,
      // unless a later local write of the key is still queued.
      const later = await request(tx.objectStore(QUEUE).index("key").getAllKeys(key));
      if (later.some((id) => Number(id) > outcome.mutationId)) return;
      if (adopt === undefined || !adopt.hasValue) tx.objectStore(ENTRIES).delete(key);
      else tx.objectStore(ENTRIES).put(rowOf(adopt));
    });
    if ((keptByServer || rejected) && this.options.onConflict !== undefined) this.options.onConflict(key, outcome);
  }

  private async serverEntry(key: string): Promise<Entry | undefined> {
    try {
      return await this.options.client.get(key, { strong: true, ...this.callOptions() });
    } catch (error) {
      // A key the server refuses to read (invalid) cannot exist there either.
      const failure = fromError(error);
      if (failure instanceof NotFound || failure instanceof InvalidArgument) return undefined;
      throw failure;
    }
  }

  /** Apply every change since the cursor (a reset replaces the local state). */
  async pull(): Promise<void> {
    let cursor = await this.meta<string>("cursor", "");
    for (;;) {
      const page = await this.options.client.pull(cursor, { clientId: this.options.clientId, ...this.callOptions() });
      await this.applyAll(page.changes, page.cursor, { reset: page.reset, acked: page.lastMutationId });
      cursor = page.cursor;
      if (!page.hasMore) return;
    }
  }

  /** Apply changes and store the cursor after them, in one local transaction. */
  private async applyAll(
    changes: readonly Change[],
    cursor: string,
    options: { reset?: boolean; acked?: number } = {},
  ): Promise<void> {
    const applied: string[] = [];
    await transact(this.db, [ENTRIES, QUEUE, META], "readwrite", async (tx) => {
      const meta = tx.objectStore(META);
      let acked = Math.max((await request<number | undefined>(meta.get("ackedMutationId"))) ?? 0, options.acked ?? 0);
      for (const change of changes) {
        if (change.clientId === this.options.clientId) acked = Math.max(acked, change.mutationId);
      }
      const unapplied = new Set(
        (await request<QueueRow[]>(tx.objectStore(QUEUE).getAll()))
          .filter((row) => row.mutationId > acked)
          .map((row) => row.key),
      );
      const entries = tx.objectStore(ENTRIES);
      if (options.reset) {
        const queued = new Set((await request<QueueRow[]>(tx.objectStore(QUEUE).getAll())).map((row) => row.key));
        for (const key of await request(entries.getAllKeys())) {
          if (!queued.has(String(key))) entries.delete(key);
        }
      }
      for (const change of changes) {
        // A local write the server has not applied yet goes to the server on the next push.
        if (unapplied.has(change.key)) continue;
        entries.put(change.entry === undefined ? tombstone(change) : rowOf(change.entry));
        applied.push(change.key);
      }
      meta.put(acked, "ackedMutationId");
      meta.put(cursor, "cursor");
    });
    if (applied.length > 0 && this.options.onChange !== undefined) this.options.onChange(applied);
  }

  // -- live sync over Watch -----------------------------------------------------------

  /**
   * Keep the replica live until `signal` aborts: push writes as they are made, apply
   * changes as they arrive, reconnect with backoff (seconds) when the connection is lost.
   */
  async run(signal: AbortSignal, options: { retryDelay?: number; maxDelay?: number } = {}): Promise<void> {
    const first = options.retryDelay ?? 0.5;
    const most = options.maxDelay ?? 10;
    let delay = first;
    let wake: (() => void) | undefined;
    const online = (): void => {
      this.kick();
      wake?.();
    };
    globalThis.addEventListener?.("online", online);
    this.live = true;
    try {
      while (!signal.aborted) {
        try {
          await this.push();
          let cursor = await this.meta<string>("cursor", "");
          if (cursor === "") {
            await this.pull(); // a Watch's empty cursor means "from now on": catch up first
            cursor = await this.meta<string>("cursor", "");
          }
          for await (const event of this.options.client.watch(cursor, { signal, ...this.callOptions() })) {
            delay = first;
            await this.applyAll(event.changes, event.cursor);
          }
        } catch (error) {
          // Offline, server restarting, or a push refused: try again after the delay,
          // and no sooner than a rate limit asks.
          const failure = fromError(error);
          if (failure instanceof RateLimited) delay = Math.max(delay, failure.retryAfter);
          if (!signal.aborted) this.options.onError?.(failure);
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
          sleep(delay, signal).then(resolve, resolve);
        });
        wake = undefined;
        delay = Math.min(delay * 2, most);
      }
    } finally {
      this.live = false;
      clearTimeout(this.retryTimer);
      globalThis.removeEventListener?.("online", online);
    }
  }

  /** In live mode: push now, and try again later if that fails. */
  private kick(delay = 0.5): void {
    clearTimeout(this.retryTimer);
    this.push().catch((error: unknown) => {
      const failure = fromError(error);
      const wait = failure instanceof RateLimited ? Math.max(delay, failure.retryAfter) : delay;
      if (this.live) this.retryTimer = setTimeout(() => this.kick(Math.min(wait * 2, 10)), wait * 1000);
    });
  }

  // -- local metadata -----------------------------------------------------------------

  private callOptions(): { space?: Space; strategy?: Strategy } {
    return {
      ...(this.options.space === undefined ? {} : { space: this.options.space }),
      ...(this.options.strategy === undefined ? {} : { strategy: this.options.strategy }),
    };
  }

  private async meta<T>(name: string, fallback: T): Promise<T> {
    const value = await transact(this.db, [META], "readonly", (tx) => request<T | undefined>(tx.objectStore(META).get(name)));
    return value ?? fallback;
  }

  private async setAcked(id: number): Promise<void> {
    await transact(this.db, [META], "readwrite", async (tx) => {
      const meta = tx.objectStore(META);
      const known = (await request<number | undefined>(meta.get("ackedMutationId"))) ?? 0;
      meta.put(Math.max(known, id), "ackedMutationId");
    });
  }

  private async dropQueuedBelow(expected: number): Promise<void> {
    await transact(this.db, [QUEUE], "readwrite", async (tx) => {
      const queue = tx.objectStore(QUEUE);
      for (const id of await request(queue.getAllKeys())) {
        if (Number(id) < expected) queue.delete(id);
      }
    });
    await this.setAcked(expected - 1);
  }
}

function visible(row: EntryRow): boolean {
  return row.live && (row.expiresAt === null || row.expiresAt > Date.now());
}

function rowOf(entry: Entry): EntryRow {
  return {
    key: entry.key,
    live: true,
    value: entry.value ?? null,
    contentType: entry.contentType,
    serverVersion: entry.version,
    expiresAt: entry.expiresAt === undefined ? null : entry.expiresAt.getTime(),
  };
}

function tombstone(change: Change): EntryRow {
  return { key: change.key, live: false, value: null, contentType: "", serverVersion: change.version, expiresAt: null };
}

function toMutation(row: QueueRow): Mutation {
  return {
    mutationId: row.mutationId,
    key: row.key,
    ...(row.isDelete ? { delete: true } : { value: row.value }),
    baseVersion: row.baseVersion,
    ...(row.ttl === null ? {} : { ttl: row.ttl }),
  };
}

function sleep(seconds: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, seconds * 1000);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done);
  });
}
