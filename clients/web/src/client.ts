/**
 * `StorageClient`: the storage service over gRPC-Web, for browsers, webviews and Node.
 *
 *     const kv = new StorageClient({ baseUrl: "https://storage.example", token, space });
 *     await kv.put("profile", { name: "Ann" });
 *     const entry = await kv.get("profile");
 *
 * Every method returns plain objects (models.ts, sync.ts) and throws `StorageError`
 * subclasses chosen by the `ErrorInfo.reason` the server sent (errors.ts). UNAVAILABLE
 * is retried with backoff, as the Python client does: the server answers it only when
 * the call took no effect, so another attempt is safe even for a write.
 */

import type { CallOptions } from "@connectrpc/connect";
import { decodeBatch, encodeDeleteItem, encodeOperation, encodeSetItem, writeFields } from "./batch.js";
import { decodeEntry, decodeUsage, encodeSpace, encodeTime, encodeTtl, encodeValue, int64, num, revisionOf } from "./codec.js";
import { Cancelled, fromError } from "./errors.js";
import { Resolution } from "./gen/tmcp/storage/v1/sync_pb.js";
import { Consistency } from "./gen/tmcp/storage/v1/types_pb.js";
import type {
  AppUsage,
  BatchResult,
  DeleteItem,
  DeletePrefixResult,
  DeleteResult,
  Entry,
  Operation,
  PutResult,
  QuotaInfo,
  QuotaLimits,
  SetItem,
  Space,
  UsageInfo,
  ValueInput,
  WriteOptions,
} from "./models.js";
import { decodeAppUsage, decodeLimits, decodeQuotaInfo, decodeUsageInfo, encodeLimits } from "./quota.js";
import {
  type Conflict,
  type Mutation,
  type PullResult,
  type PushResult,
  type Strategy,
  type SyncStatus,
  type WatchEvent,
  decodeChange,
  decodeConflict,
  decodePullResult,
  decodePushResult,
  decodeSyncStatus,
  encodeMutation,
  encodeStrategy,
} from "./sync.js";
import { type Services, type TokenSource, connectServices, unary } from "./transport.js";

export type { TokenSource };

/** How to reach the server. */
export interface ClientOptions {
  /** The gRPC-Web endpoint (the gateway, or Envoy), e.g. `http://127.0.0.1:8080`. */
  readonly baseUrl: string;
  readonly token?: TokenSource;
  /** The default space of every call. */
  readonly space?: Space;
  /** Default deadline of a call in seconds, retries included; 0 for none. Default 10. */
  readonly timeout?: number;
  /** Attempts after the first on UNAVAILABLE. Default 3. */
  readonly retries?: number;
  /** The fetch to use (default globalThis.fetch). */
  readonly fetch?: typeof globalThis.fetch;
}

/** Options every call takes. */
export interface CallSettings {
  /** The space of this call, instead of the client's default. */
  readonly space?: Space;
  /** The deadline of this call in seconds, retries included; 0 for none. */
  readonly timeout?: number;
  /** Aborting it cancels the call (Cancelled). */
  readonly signal?: AbortSignal;
}

/** A client of the storage service; see the module documentation. */
export class StorageClient {
  private readonly services: Services;
  private readonly defaultSpace: Space | undefined;
  private readonly timeout: number;
  private readonly retries: number;

  constructor(options: ClientOptions) {
    this.services = connectServices(options.baseUrl, options.token, options.fetch);
    this.defaultSpace = options.space;
    this.timeout = options.timeout ?? 10;
    this.retries = options.retries ?? 3;
  }

  /** Read one entry; NotFound if absent or expired. `strong` bypasses caches. */
  async get(key: string, options: CallSettings & { strong?: boolean } = {}): Promise<Entry> {
    const consistency = options.strong ? Consistency.STRONG : Consistency.UNSPECIFIED;
    const response = await this.call(options, (o) =>
      this.services.kv.get({ space: this.space(options), key, consistency }, o),
    );
    return decodeEntry(required(response.entry, "entry"));
  }

  /**
   * Create or replace an entry: a Uint8Array is stored raw, anything else as JSON.
   * `expectedVersion` undefined writes unconditionally, 0 only creates, N needs version N.
   */
  async put(key: string, value: ValueInput, options: CallSettings & WriteOptions = {}): Promise<PutResult> {
    const fields = writeFields({ ...options, key, value });
    const response = await this.call(options, (o) => this.services.kv.put({ ...fields, space: this.space(options) }, o));
    return {
      entry: decodeEntry(required(response.entry, "entry")),
      usage: decodeUsage(response.usage),
      revision: revisionOf(response.header),
    };
  }

  /** Delete one key; an absent key gives `deleted: false`, not an error. */
  async delete(key: string, options: CallSettings & { expectedVersion?: number } = {}): Promise<DeleteResult> {
    const expected = options.expectedVersion;
    const response = await this.call(options, (o) =>
      this.services.kv.delete(
        {
          space: this.space(options),
          key,
          expectedVersion: expected === undefined ? undefined : int64(expected, "expectedVersion"),
        },
        o,
      ),
    );
    return { deleted: response.deleted, usage: decodeUsage(response.usage), revision: revisionOf(response.header) };
  }

  /** The entries under `prefix` in key order, fetched page by page. */
  async *list(
    prefix = "",
    options: CallSettings & { pageSize?: number; includeValues?: boolean; maxBytes?: number } = {},
  ): AsyncGenerator<Entry> {
    let pageToken = "";
    do {
      const response = await this.call(options, (o) =>
        this.services.kv.list(
          {
            space: this.space(options),
            prefix,
            pageSize: options.pageSize ?? 100,
            pageToken,
            includeValues: options.includeValues ?? false,
            maxBytes: BigInt(options.maxBytes ?? 0),
          },
          o,
        ),
      );
      for (const entry of response.entries) yield decodeEntry(entry);
      pageToken = response.nextPageToken;
    } while (pageToken !== "");
  }

  /** Set (`ttl` seconds or `expiresAt`) or clear a key's expiry without a new version. */
  async touch(key: string, options: CallSettings & { ttl?: number; expiresAt?: Date; clearTtl?: boolean }): Promise<Entry> {
    const response = await this.call(options, (o) =>
      this.services.kv.touch(
        {
          space: this.space(options),
          key,
          ttl: options.ttl === undefined ? undefined : encodeTtl(options.ttl),
          expiresAt: options.expiresAt === undefined ? undefined : encodeTime(options.expiresAt),
          clearTtl: options.clearTtl ?? false,
        },
        o,
      ),
    );
    return decodeEntry(required(response.entry, "entry"));
  }

  /** Delete every key under `prefix` (all of the space for "") in one revision. */
  async deletePrefix(prefix: string, options: CallSettings = {}): Promise<DeletePrefixResult> {
    const response = await this.call(options, (o) => this.services.kv.deletePrefix({ space: this.space(options), prefix }, o));
    return {
      deletedCount: num(response.deletedCount),
      usage: decodeUsage(response.usage),
      revision: revisionOf(response.header),
    };
  }

  /** A space's usage by content type, expiring entries, open conflicts and largest keys. */
  async usage(options: CallSettings & { topKeys?: number } = {}): Promise<UsageInfo> {
    const response = await this.call(options, (o) =>
      this.services.quota.getUsage({ space: this.space(options), topKeys: options.topKeys ?? 10 }, o),
    );
    return decodeUsageInfo(response);
  }

  /**
   * Admin: override limits of an app (`appId`, the default of its spaces) or of one space
   * (`space`); undefined limits stay as they are, `reset` first drops every override of
   * the target. Returns the target's overrides.
   */
  async setQuota(
    target: { appId: string } | { space: Space },
    limits: QuotaLimits,
    options: Omit<CallSettings, "space"> & { reset?: boolean } = {},
  ): Promise<QuotaLimits> {
    const which =
      "appId" in target
        ? { case: "appId" as const, value: target.appId }
        : { case: "space" as const, value: encodeSpace(target.space) };
    const response = await this.call(options, (o) =>
      this.services.quota.setQuota({ target: which, limits: encodeLimits(limits), reset: options.reset ?? false }, o),
    );
    return decodeLimits(response.overrides);
  }

  /** Admin: totals over every space of an app, and its largest spaces. */
  async appUsage(appId: string, options: Omit<CallSettings, "space"> & { topSpaces?: number } = {}): Promise<AppUsage> {
    const response = await this.call(options, (o) =>
      this.services.quota.getAppUsage({ appId, topSpaces: options.topSpaces ?? 10 }, o),
    );
    return decodeAppUsage(response);
  }

  /** A space's limits, usage and headroom. */
  async quota(options: CallSettings = {}): Promise<QuotaInfo> {
    const response = await this.call(options, (o) => this.services.quota.getQuota({ space: this.space(options) }, o));
    return decodeQuotaInfo(response);
  }

  /** Read up to 1000 keys: one result per key, in request order; missing is `found: false`. */
  async batchGet(keys: readonly string[], options: CallSettings & { strong?: boolean } = {}): Promise<BatchResult> {
    const consistency = options.strong ? Consistency.STRONG : Consistency.UNSPECIFIED;
    const response = await this.call(options, (o) =>
      this.services.batch.batchGet({ space: this.space(options), keys: [...keys], consistency }, o),
    );
    return decodeBatch(response);
  }

  /** Write up to 1000 entries in one revision; atomic: all or nothing. */
  async batchSet(items: readonly SetItem[], options: CallSettings & { atomic?: boolean } = {}): Promise<BatchResult> {
    const encoded = items.map(encodeSetItem);
    const response = await this.call(options, (o) =>
      this.services.batch.batchSet({ space: this.space(options), items: encoded, atomic: options.atomic ?? false }, o),
    );
    return decodeBatch(response);
  }

  /** Delete up to 1000 keys in one revision (strings delete unconditionally). */
  async batchDelete(
    items: readonly (DeleteItem | string)[],
    options: CallSettings & { atomic?: boolean } = {},
  ): Promise<BatchResult> {
    const encoded = items.map(encodeDeleteItem);
    const response = await this.call(options, (o) =>
      this.services.batch.batchDelete({ space: this.space(options), items: encoded, atomic: options.atomic ?? false }, o),
    );
    return decodeBatch(response);
  }

  /** Mixed reads and writes in order; atomic reads see the batch's own earlier writes. */
  async execute(operations: readonly Operation[], options: CallSettings & { atomic?: boolean } = {}): Promise<BatchResult> {
    const encoded = operations.map(encodeOperation);
    const response = await this.call(options, (o) =>
      this.services.batch.execute({ space: this.space(options), operations: encoded, atomic: options.atomic ?? false }, o),
    );
    return decodeBatch(response);
  }

  /**
   * Push queued mutations in order (ids rise by one). Safe to repeat after a lost reply:
   * already applied ids come back `duplicate` with their first outcome.
   */
  async push(
    clientId: string,
    mutations: readonly Mutation[],
    options: CallSettings & { strategy?: Strategy } = {},
  ): Promise<PushResult> {
    const encoded = mutations.map(encodeMutation);
    const strategy = encodeStrategy(options.strategy ?? "default");
    const response = await this.call(options, (o) =>
      this.services.sync.push({ space: this.space(options), clientId, mutations: encoded, strategy }, o),
    );
    return decodePushResult(response);
  }

  /** One page of keys changed since `cursor` ("" for everything). */
  async pull(cursor = "", options: CallSettings & { limit?: number; clientId?: string } = {}): Promise<PullResult> {
    const response = await this.call(options, (o) =>
      this.services.sync.pull(
        { space: this.space(options), cursor, limit: options.limit ?? 0, clientId: options.clientId ?? "" },
        o,
      ),
    );
    return decodePullResult(response);
  }

  /** The server's cursor and what it knows of `clientId`. */
  async status(clientId = "", options: CallSettings = {}): Promise<SyncStatus> {
    const response = await this.call(options, (o) => this.services.sync.getStatus({ space: this.space(options), clientId }, o));
    return decodeSyncStatus(response);
  }

  /** Conflict records (open ones unless `includeResolved`), page after page. */
  async *conflicts(
    prefix = "",
    options: CallSettings & { includeResolved?: boolean; pageSize?: number } = {},
  ): AsyncGenerator<Conflict> {
    let pageToken = "";
    do {
      const response = await this.call(options, (o) =>
        this.services.sync.listConflicts(
          {
            space: this.space(options),
            keyPrefix: prefix,
            includeResolved: options.includeResolved ?? false,
            pageSize: options.pageSize ?? 100,
            pageToken,
          },
          o,
        ),
      );
      for (const conflict of response.conflicts) yield decodeConflict(conflict);
      pageToken = response.nextPageToken;
    } while (pageToken !== "");
  }

  /**
   * Settle an open conflict with the client's value, the server's, or `value`; returns
   * the new entry (undefined when the chosen side was a deletion).
   */
  async resolveConflict(
    conflictId: string,
    resolution: "client" | "server" | "value",
    options: CallSettings & { value?: ValueInput; contentType?: string } = {},
  ): Promise<Entry | undefined> {
    const numbers = { client: Resolution.CLIENT, server: Resolution.SERVER, value: Resolution.VALUE };
    const value = resolution === "value" ? encodeValue(required(options.value, "value")) : undefined;
    const response = await this.call(options, (o) =>
      this.services.sync.resolveConflict(
        {
          space: this.space(options),
          conflictId,
          resolution: numbers[resolution],
          value,
          contentType: options.contentType ?? "",
        },
        o,
      ),
    );
    return response.entry === undefined ? undefined : decodeEntry(response.entry);
  }

  /**
   * Changes since `cursor` ("" = from now on), then live ones, with heartbeats; every
   * event's `cursor` resumes after it. Runs until `signal` aborts (then it just ends) or
   * the server ends it with an error (SLOW_CONSUMER, UNAVAILABLE at shutdown): resume with
   * the last event's cursor. No deadline applies unless `timeout` is given.
   */
  async *watch(cursor = "", options: CallSettings & { prefix?: string } = {}): AsyncGenerator<WatchEvent> {
    const request = { space: this.space(options), cursor, keyPrefix: options.prefix ?? "" };
    const stream = this.services.sync.watch(request, {
      timeoutMs: options.timeout === undefined || options.timeout === 0 ? undefined : options.timeout * 1000,
      signal: options.signal,
    });
    try {
      for await (const response of stream) {
        yield { changes: response.changes.map(decodeChange), cursor: response.cursor, heartbeat: response.heartbeat };
      }
    } catch (error) {
      const failure = fromError(error);
      if (failure instanceof Cancelled && options.signal?.aborted) return;
      throw failure;
    }
  }

  private space(options: CallSettings): Space & { $typeName: "tmcp.storage.v1.Space" } {
    const space = options.space ?? this.defaultSpace;
    if (space === undefined) throw new TypeError("no space: pass one to the call or to the client");
    return encodeSpace(space);
  }

  private call<T>(settings: CallSettings, attempt: (options: CallOptions) => Promise<T>): Promise<T> {
    return unary({ timeout: settings.timeout ?? this.timeout, signal: settings.signal }, this.retries, attempt);
  }
}

function required<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new TypeError(`missing ${what}`);
  return value;
}
