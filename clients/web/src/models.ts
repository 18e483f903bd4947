/**
 * The values the client hands back: plain objects with no generated message in them,
 * so that code using the client reads as plain TypeScript and survives proto changes.
 *
 * Versions, revisions and sizes are `number`s: they are int64 on the wire, but stay far
 * below 2**53 in practice, and the codec refuses any that does not.
 */

/** A JSON value as `JSON.parse` gives it. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/**
 * What a write takes: a `Uint8Array` is stored raw, anything else as JSON (stored with
 * content type application/json).
 */
export type ValueInput = Uint8Array | JsonValue;

/** One user's store in one mini-app; an empty `userId` names the app's shared space. */
export interface Space {
  readonly appId: string;
  readonly userId: string;
}

/** One stored key as the server returned it. */
export interface Entry {
  readonly key: string;
  /**
   * `Uint8Array` for raw values, the decoded JSON for JSON ones; `undefined` when the
   * response left the value out (put, touch, list without values): see `hasValue`.
   */
  readonly value: Uint8Array | JsonValue | undefined;
  /** False when the response omitted the value. */
  readonly hasValue: boolean;
  readonly contentType: string;
  /** Per-key write counter: 1 on create, +1 on each put and delete; never reused. */
  readonly version: number;
  readonly createRevision: number;
  readonly modRevision: number;
  readonly createdAt: Date | undefined;
  readonly updatedAt: Date | undefined;
  /** When the key expires, or undefined if it does not. */
  readonly expiresAt: Date | undefined;
  /** Value bytes as quota counts them. */
  readonly size: number;
  /** `sha256:<hex>` of the value bytes. */
  readonly checksum: string;
  readonly metadata: Readonly<Record<string, string>>;
}

/** A space's usage and effective limits. */
export interface QuotaUsage {
  readonly usedBytes: number;
  readonly limitBytes: number;
  readonly usedKeys: number;
  readonly limitKeys: number;
  readonly maxValueBytes: number;
}

/** What a put returns: the stored entry without its value, and usage after the write. */
export interface PutResult {
  readonly entry: Entry;
  readonly usage: QuotaUsage | undefined;
  readonly revision: number;
}

/** What a delete returns; deleting an absent key is `deleted: false`, not an error. */
export interface DeleteResult {
  readonly deleted: boolean;
  readonly usage: QuotaUsage | undefined;
  readonly revision: number;
}

/** A space's limits, usage and headroom. */
export interface QuotaInfo extends QuotaUsage {
  readonly availableBytes: number;
  readonly availableKeys: number;
  readonly revision: number;
}

/** What a delete-prefix returns. */
export interface DeletePrefixResult {
  readonly deletedCount: number;
  readonly usage: QuotaUsage | undefined;
  readonly revision: number;
}

/** Detailed usage of a space. */
export interface UsageInfo {
  readonly usage: QuotaUsage | undefined;
  readonly byContentType: readonly { readonly contentType: string; readonly bytes: number; readonly keys: number }[];
  readonly expiringKeys: number;
  readonly expiringBytes: number;
  readonly openConflicts: number;
  /** The largest keys, largest first. */
  readonly largestKeys: readonly { readonly key: string; readonly size: number }[];
  readonly revision: number;
}

/** Limit overrides of an app or a space; undefined means inherited. */
export interface QuotaLimits {
  readonly limitBytes?: number | undefined;
  readonly limitKeys?: number | undefined;
  readonly maxValueBytes?: number | undefined;
}

/** Totals over every space of an app (admin). */
export interface AppUsage {
  readonly appId: string;
  readonly spaces: number;
  readonly usedBytes: number;
  readonly usedKeys: number;
  readonly overrides: QuotaLimits;
  readonly largestSpaces: readonly { readonly space: Space; readonly usage: QuotaUsage | undefined }[];
}

/** Options of a write, as in `put`. */
export interface WriteOptions {
  /** Default application/octet-stream for raw values; JSON values are application/json. */
  readonly contentType?: string;
  /** Unset: unconditional; 0: the key must not exist; N: the current version must be N. */
  readonly expectedVersion?: number;
  /** Seconds until the entry expires. At most one of ttl, expiresAt and keepTtl. */
  readonly ttl?: number;
  readonly expiresAt?: Date;
  /** Keep the current entry's expiry. */
  readonly keepTtl?: boolean;
  /** At most 16 pairs and 4 KiB in all. */
  readonly metadata?: Readonly<Record<string, string>>;
}

/** One write of a batch. */
export interface SetItem extends WriteOptions {
  readonly key: string;
  readonly value: ValueInput;
}

/** One delete of a batch, optionally conditional on the key's version. */
export interface DeleteItem {
  readonly key: string;
  readonly expectedVersion?: number;
}

/** One step of `execute`. */
export type Operation =
  | ({ readonly op: "get" } & { readonly key: string })
  | ({ readonly op: "set" } & SetItem)
  | ({ readonly op: "delete" } & DeleteItem);

/** The outcome of one batch item, in request order. */
export interface ItemResult {
  readonly key: string;
  /** The item's own error (a `StorageError`), or undefined when it succeeded. */
  readonly error: Error | undefined;
  /** get: the entry read; set: the stored entry (without its value). */
  readonly entry: Entry | undefined;
  readonly found: boolean;
  readonly deleted: boolean;
}

/** The outcome of a batch call: one result per item, in request order. */
export interface BatchResult {
  readonly results: readonly ItemResult[];
  readonly revision: number;
  readonly usage: QuotaUsage | undefined;
}
