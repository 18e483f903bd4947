/**
 * Conversions between plain values and the generated messages, with no I/O.
 *
 * Values: a `Uint8Array` is written raw; anything else must be JSON and is written as a
 * `google.protobuf.Value` (numbers are doubles on the wire, as in JSON itself). Times
 * are `Date`s; a TTL is seconds. int64 fields become `number`s, refused beyond 2**53.
 */

import { create, fromJson, type JsonValue as ProtoJson, toJson } from "@bufbuild/protobuf";
import {
  type Duration,
  DurationSchema,
  type Timestamp,
  ValueSchema,
  timestampDate,
  timestampFromDate,
} from "@bufbuild/protobuf/wkt";
import {
  type Entry as EntryMessage,
  type QuotaUsage as UsageMessage,
  type Space as SpaceMessage,
  SpaceSchema,
  type Value,
  ValueSchema as StorageValueSchema,
} from "./gen/tmcp/storage/v1/types_pb.js";
import type { Entry, JsonValue, QuotaUsage, Space, ValueInput } from "./models.js";

/** An int64 from the wire as a number (versions, revisions and sizes stay below 2**53). */
export function num(value: bigint): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
    throw new RangeError(`int64 ${value} does not fit a JavaScript number`);
  }
  return Number(value);
}

/** A number for an int64 field; it must be a safe integer. */
export function int64(value: number, field: string): bigint {
  if (!Number.isSafeInteger(value)) throw new RangeError(`${field} must be an integer, got ${value}`);
  return BigInt(value);
}

/** The wire form of a space. */
export function encodeSpace(space: Space): SpaceMessage {
  return create(SpaceSchema, { appId: space.appId, userId: space.userId });
}

/** Wrap a value for a write: raw bytes, or JSON for anything else. */
export function encodeValue(value: ValueInput): Value {
  if (value instanceof Uint8Array) {
    return create(StorageValueSchema, { kind: { case: "raw", value } });
  }
  if (value === undefined) throw new TypeError("a value is required (use null for JSON null)");
  return create(StorageValueSchema, { kind: { case: "json", value: fromJson(ValueSchema, value as ProtoJson) } });
}

/** Unwrap a stored value: a Uint8Array if raw, the decoded JSON if JSON. */
export function decodeValue(value: Value | undefined): Uint8Array | JsonValue | undefined {
  switch (value?.kind.case) {
    case "raw":
      return value.kind.value;
    case "json":
      return toJson(ValueSchema, value.kind.value) as JsonValue;
    default:
      return undefined;
  }
}

/** A TTL in seconds as a Duration; it must be positive. */
export function encodeTtl(seconds: number): Duration {
  if (!(seconds > 0) || !Number.isFinite(seconds)) throw new RangeError(`ttl must be a positive number of seconds, got ${seconds}`);
  const whole = Math.floor(seconds);
  return create(DurationSchema, { seconds: BigInt(whole), nanos: Math.round((seconds - whole) * 1e9) });
}

/** A Date as a Timestamp. */
export function encodeTime(date: Date): Timestamp {
  return timestampFromDate(date);
}

function decodeTime(stamp: Timestamp | undefined): Date | undefined {
  return stamp === undefined ? undefined : timestampDate(stamp);
}

/** An entry from the wire. */
export function decodeEntry(message: EntryMessage): Entry {
  return {
    key: message.key,
    value: decodeValue(message.value),
    hasValue: message.value !== undefined && message.value.kind.case !== undefined,
    contentType: message.contentType,
    version: num(message.version),
    createRevision: num(message.createRevision),
    modRevision: num(message.modRevision),
    createdAt: decodeTime(message.createdAt),
    updatedAt: decodeTime(message.updatedAt),
    expiresAt: decodeTime(message.expiresAt),
    size: num(message.size),
    checksum: message.checksum,
    metadata: { ...message.metadata },
  };
}

/** Usage from the wire (undefined when the response carries none). */
export function decodeUsage(message: UsageMessage | undefined): QuotaUsage | undefined {
  if (message === undefined) return undefined;
  return {
    usedBytes: num(message.usedBytes),
    limitBytes: num(message.limitBytes),
    usedKeys: num(message.usedKeys),
    limitKeys: num(message.limitKeys),
    maxValueBytes: num(message.maxValueBytes),
  };
}

/** The revision of a response header (0 when absent). */
export function revisionOf(header: { revision: bigint } | undefined): number {
  return header === undefined ? 0 : num(header.revision);
}
